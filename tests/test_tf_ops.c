/* Tests of the transformer ops (tf.h).
 *
 * (a) Attention kernels (blocked sgemm path, with and without saved probabilities, 1 and 2
 *     threads) against the naive reference of src/tf/tf_ref.c, on shapes that cross the
 *     DFL_ATTN_BLOCK row blocking, with causal masks (Tq == Tk, Tq < Tk, Tq > Tk), shared and
 *     per-batch biases and key padding.
 * (b) Every op's backward through the tape (dfl_backward_vjp with a random cotangent r) against
 *     central finite differences of sum(r * f) computed with double-precision forwards written
 *     here from the definitions; the same double forwards check the float forwards (for attention
 *     that is the naive direct evaluation softmax(q k^T / sqrt(Dh) + bias) v).
 * (c) Properties: the causal mask leaks nothing (a later token changes no earlier output, bit for
 *     bit, and gets no gradient from earlier outputs), padded keys do not matter, a fully masked
 *     row gives 0, cross-entropy equals ln V on uniform logits and a hand-computed value,
 *     LayerNorm rows have mean 0 and variance 1, GELU at known points, embedding gradients add up
 *     over repeated ids, split/merge heads are inverse permutations, errors name the shapes.
 */
#include "dfl_test.h"
#include "dfl_fd.h"

#include <omp.h>
#include <stdint.h>

#include "difflow/core.h"
#include "difflow/tf.h"
#include "tf/tf_math.h"

static dfl_rng g_rng;

static float *rand_buf(size_t n, float scale) { return dfl_randn_buf(&g_rng, n, scale); }

static int setup(void **state)
{
    (void)state;
    dfl_rng_init(&g_rng, 20261129);
    return 0;
}

static int close_ff(const char *what, const float *got, const float *ref, size_t n, double tol)
{
    double *r = malloc((n ? n : 1) * sizeof(double));
    assert_non_null(r);
    for (size_t i = 0; i < n; i++) r[i] = ref[i];
    int ok = dfl_close_rel(what, got, r, n, tol, 1e-6);
    free(r);
    return ok;
}

/* ================================================================== (a) kernels vs reference */

typedef struct {
    int B, H, Tq, Tk, Dh, Dv, causal, bias; /* bias: 0 none, 1 shared (H,Tq,Tk), 2 per batch */
    int pad;                                /* 1: random key padding, one sequence fully padded */
} attn_cfg;

static void attn_kernels_vs_ref(const attn_cfg *c, int threads)
{
    size_t nq = (size_t)c->B * c->H * c->Tq * c->Dh, nk = (size_t)c->B * c->H * c->Tk * c->Dh;
    size_t nv = (size_t)c->B * c->H * c->Tk * c->Dv, no = (size_t)c->B * c->H * c->Tq * c->Dv;
    size_t np = (size_t)c->B * c->H * c->Tq * c->Tk;
    size_t nb = c->bias == 2 ? np : (size_t)c->H * c->Tq * c->Tk;
    float *q = rand_buf(nq, 1), *k = rand_buf(nk, 1), *v = rand_buf(nv, 1);
    float *bias = c->bias ? rand_buf(nb, 1) : NULL, *km = NULL;
    if (c->pad) {
        km = malloc((size_t)c->B * c->Tk * sizeof(float));
        for (int i = 0; i < c->B * c->Tk; i++) km[i] = dfl_rng_uniform(&g_rng) < 0.3f ? 0.0f : 1.0f;
        for (int j = 0; j < c->Tk; j++) km[j] = 0.0f; /* sequence 0 fully padded */
    }
    float scale = 1.0f / sqrtf((float)c->Dh);
    int per_batch = c->bias == 2;
    float *o = rand_buf(no, 1), *o2 = rand_buf(no, 1), *oref = rand_buf(no, 1);
    float *p = rand_buf(np, 1), *pref = rand_buf(np, 1);
    omp_set_num_threads(threads);
    float *work = malloc(dfl_k_attention_work_floats(c->Tk) * sizeof(float));
    dfl_k_attention_fwd(q, k, v, bias, per_batch, km, o, p, c->B, c->H, c->Tq, c->Tk, c->Dh, c->Dv,
                        scale, c->causal, NULL);
    dfl_k_attention_fwd(q, k, v, bias, per_batch, km, o2, NULL, c->B, c->H, c->Tq, c->Tk, c->Dh,
                        c->Dv, scale, c->causal, work);
    dfl_k_attention_fwd_ref(q, k, v, bias, per_batch, km, oref, pref, c->B, c->H, c->Tq, c->Tk,
                            c->Dh, c->Dv, scale, c->causal);
    char what[160];
    snprintf(what, sizeof what, "attn B%d H%d Tq%d Tk%d Dh%d Dv%d causal%d bias%d pad%d thr%d", c->B,
             c->H, c->Tq, c->Tk, c->Dh, c->Dv, c->causal, c->bias, c->pad, threads);
    assert_true(close_ff(what, o, oref, no, 2e-6));
    assert_true(close_ff(what, p, pref, np, 2e-6));
    assert_memory_equal(o, o2, no * sizeof(float)); /* same arithmetic with or without saving P */
    /* backward: gradients start from small random values (the kernels accumulate) */
    float *dO = rand_buf(no, 1);
    float *g[4], *gr[4];
    size_t gn[4] = {nq, nk, nv, nb};
    for (int i = 0; i < 4; i++) {
        g[i] = rand_buf(gn[i], 0.05f);
        gr[i] = malloc(gn[i] * sizeof(float));
        memcpy(gr[i], g[i], gn[i] * sizeof(float));
    }
    dfl_k_attention_bwd(q, k, v, p, dO, g[0], g[1], g[2], c->bias ? g[3] : NULL, per_batch, c->B,
                        c->H, c->Tq, c->Tk, c->Dh, c->Dv, scale, c->causal, work);
    dfl_k_attention_bwd_ref(q, k, v, bias, per_batch, km, dO, gr[0], gr[1], gr[2],
                            c->bias ? gr[3] : NULL, c->B, c->H, c->Tq, c->Tk, c->Dh, c->Dv, scale,
                            c->causal);
    const char *gname[4] = {"dq", "dk", "dv", "dbias"};
    for (int i = 0; i < (c->bias ? 4 : 3); i++) {
        char w2[200];
        snprintf(w2, sizeof w2, "%s %s", what, gname[i]);
        assert_true(close_ff(w2, g[i], gr[i], gn[i], 1e-5));
    }
    for (int i = 0; i < 4; i++) free(g[i]), free(gr[i]);
    free(q); free(k); free(v); free(bias); free(km); free(o); free(o2); free(oref);
    free(p); free(pref); free(work); free(dO);
}

static void test_attention_kernels(void **state)
{
    (void)state;
    const attn_cfg cfgs[] = {
        {1, 1, 1, 1, 1, 1, 0, 0, 0},     {2, 3, 7, 7, 8, 5, 0, 0, 0},
        {2, 3, 7, 7, 8, 5, 1, 0, 0},     {2, 2, 5, 9, 4, 4, 1, 1, 0},   /* causal, Tq < Tk */
        {2, 2, 9, 5, 4, 4, 1, 2, 0},     /* causal, Tq > Tk: first rows see nothing */
        {3, 2, 6, 8, 4, 3, 0, 1, 1},     {3, 2, 6, 6, 4, 3, 1, 2, 1},
        {2, 2, 150, 150, 16, 16, 1, 1, 0}, /* three row blocks */
        {1, 3, 70, 130, 8, 12, 1, 2, 1}, {2, 1, 130, 70, 8, 8, 0, 0, 1},
        {1, 1, 200, 200, 32, 32, 1, 0, 0}, /* one pair: threaded BLAS */
    };
    int saved = omp_get_max_threads();
    for (size_t i = 0; i < sizeof cfgs / sizeof cfgs[0]; i++) {
        attn_kernels_vs_ref(&cfgs[i], 1);
        attn_kernels_vs_ref(&cfgs[i], 2);
    }
    /* random configurations from a seeded generator (the message names each one) */
    dfl_rng cr;
    dfl_rng_init(&cr, 0xa77e);
    for (int t = 0; t < 12; t++) {
        attn_cfg c = {1 + (int)dfl_rng_below(&cr, 3), 1 + (int)dfl_rng_below(&cr, 3),
                      1 + (int)dfl_rng_below(&cr, 140), 1 + (int)dfl_rng_below(&cr, 140),
                      1 + (int)dfl_rng_below(&cr, 20), 1 + (int)dfl_rng_below(&cr, 20),
                      (int)dfl_rng_below(&cr, 2), (int)dfl_rng_below(&cr, 3), (int)dfl_rng_below(&cr, 2)};
        attn_kernels_vs_ref(&c, 1 + t % 2);
    }
    omp_set_num_threads(saved);
}

/* ================================================================== (b) gradient checks */

typedef struct tcase {
    const char *name;
    int nin;
    int ndim[4];
    int shape[4][4];
    int param[4];      /* 1: heap parameter; 0: arena-wrapped data */
    float scale[4];    /* spread of the random input values (0 = 1) */
    int causal;
    const float *kmask;
    const int *ids;    /* embedding ids / cross-entropy targets */
    int ipar[2];
    float fpar[2];
} tcase;

typedef dfl_tensor *(*t_op)(dfl_ctx *ctx, dfl_tensor **in, const tcase *c);
typedef void (*t_ref)(double *const *in, double *out, const tcase *c);

static size_t numel(int nd, const int *sh) { return dfl_shape_numel(nd, sh); }

/* The shared driver (dfl_fd.h) calls these with the case and its typed op/reference. */
typedef struct {
    const tcase *c;
    t_op op;
    t_ref ref;
} tc_call;

static dfl_tensor *tc_op(dfl_ctx *ctx, dfl_tensor **in, const void *u)
{
    const tc_call *t = u;
    return t->op(ctx, in, t->c);
}

static void tc_ref(double *const *in, double *out, const void *u)
{
    const tc_call *t = u;
    t->ref(in, out, t->c);
}

/* Gradient check of one case (dfl_gradcheck), and the op's output size against nout. */
static void gradcheck(const tcase *c, t_op op, t_ref ref, size_t nout)
{
    dfl_gc_in ins[4];
    dfl_ctx *ctx = dfl_ctx_new();
    dfl_tensor *z[4];
    for (int i = 0; i < c->nin; i++) {
        ins[i].ndim = c->ndim[i];
        memcpy(ins[i].shape, c->shape[i], sizeof ins[i].shape);
        ins[i].param = c->param[i];
        ins[i].scale = c->scale[i];
        z[i] = dfl_tensor_zeros(ctx, c->ndim[i], c->shape[i]);
    }
    dfl_tensor *y = op(ctx, z, c);
    assert_non_null(y);
    assert_int_equal(y->n, nout);
    dfl_ctx_free(ctx);
    tc_call t = {c, op, ref};
    dfl_gradcheck(c->name, c->nin, ins, tc_op, tc_ref, &t, &g_rng);
}

/* ---- attention: the direct evaluation softmax(q k^T / sqrt(Dh) + bias, masked) v in double */

static void ref_attention(double *const *in, double *y, const tcase *c)
{
    const int *qs = c->shape[0], *ks = c->shape[1], *vs = c->shape[2];
    int B = qs[0], H = qs[1], Tq = qs[2], Dh = qs[3], Tk = ks[2], Dv = vs[3];
    const double *bias = c->nin > 3 ? in[3] : NULL;
    int per_batch = bias && c->ndim[3] == 4 && c->shape[3][0] == B && B > 1;
    double scale = 1.0 / sqrt((double)Dh), *s = malloc((size_t)Tk * sizeof(double));
    for (int b = 0; b < B; b++)
        for (int hh = 0; hh < H; hh++)
            for (int i = 0; i < Tq; i++) {
                size_t pr = (size_t)b * H + hh;
                double m = -INFINITY;
                for (int j = 0; j < Tk; j++) {
                    int vis = (!c->causal || j - i <= Tk - Tq) && (!c->kmask || c->kmask[b * Tk + j] != 0.0f);
                    s[j] = -INFINITY;
                    if (!vis) continue;
                    double d = 0.0;
                    for (int e = 0; e < Dh; e++) d += in[0][(pr * Tq + i) * Dh + e] * in[1][(pr * Tk + j) * Dh + e];
                    s[j] = d * scale;
                    if (bias) s[j] += bias[((per_batch ? pr : (size_t)hh) * Tq + i) * Tk + j];
                    if (s[j] > m) m = s[j];
                }
                double z = 0.0;
                for (int j = 0; j < Tk; j++) {
                    s[j] = s[j] == -INFINITY ? 0.0 : exp(s[j] - m);
                    z += s[j];
                }
                for (int e = 0; e < Dv; e++) {
                    double acc = 0.0;
                    for (int j = 0; j < Tk; j++) acc += s[j] * in[2][(pr * Tk + j) * Dv + e];
                    y[(pr * Tq + i) * Dv + e] = z > 0.0 ? acc / z : 0.0;
                }
            }
    free(s);
}

static dfl_tensor *op_attention(dfl_ctx *ctx, dfl_tensor **in, const tcase *c)
{
    dfl_attn_opts o = {0};
    o.causal = c->causal;
    o.bias = c->nin > 3 ? in[3] : NULL;
    if (c->kmask) {
        int ms[2] = {c->shape[0][0], c->shape[1][2]};
        o.key_mask = dfl_tensor_wrap(ctx, (float *)c->kmask, 2, ms);
    }
    return dfl_attention(ctx, in[0], in[1], in[2], &o);
}

static size_t attn_out_n(const tcase *c)
{
    return (size_t)c->shape[0][0] * c->shape[0][1] * c->shape[0][2] * c->shape[2][3];
}

#define SH4(a, b, c_, d) {a, b, c_, d}

static void test_grad_attention(void **state)
{
    (void)state;
    /* key mask for B = 2, Tk = 6: sequence 1 has keys 2 and 5 padded */
    static const float km[12] = {1, 1, 1, 1, 1, 1, 1, 1, 0, 1, 1, 0};
    /* sequence 0 fully padded */
    static const float km_full[12] = {0, 0, 0, 0, 0, 0, 1, 0, 1, 1, 1, 1};
    tcase cs[] = {
        {.name = "attention", .nin = 3, .ndim = {4, 4, 4}, .shape = {SH4(2, 2, 5, 4), SH4(2, 2, 5, 4), SH4(2, 2, 5, 3)}},
        {.name = "attention causal", .nin = 3, .ndim = {4, 4, 4}, .shape = {SH4(2, 2, 5, 4), SH4(2, 2, 5, 4), SH4(2, 2, 5, 3)}, .causal = 1},
        {.name = "attention causal Tq<Tk", .nin = 3, .ndim = {4, 4, 4}, .shape = {SH4(1, 2, 3, 4), SH4(1, 2, 6, 4), SH4(1, 2, 6, 2)}, .causal = 1},
        {.name = "attention causal Tq>Tk", .nin = 3, .ndim = {4, 4, 4}, .shape = {SH4(1, 2, 6, 4), SH4(1, 2, 3, 4), SH4(1, 2, 3, 2)}, .causal = 1},
        {.name = "attention shared bias (param)", .nin = 4, .ndim = {4, 4, 4, 3},
         .shape = {SH4(2, 2, 4, 3), SH4(2, 2, 6, 3), SH4(2, 2, 6, 3), SH4(2, 4, 6, 0)}, .param = {0, 0, 0, 1}},
        {.name = "attention per-batch bias causal", .nin = 4, .ndim = {4, 4, 4, 4},
         .shape = {SH4(2, 2, 5, 3), SH4(2, 2, 5, 3), SH4(2, 2, 5, 3), SH4(2, 2, 5, 5)}, .causal = 1},
        {.name = "attention key padding + bias", .nin = 4, .ndim = {4, 4, 4, 4},
         .shape = {SH4(2, 1, 4, 3), SH4(2, 1, 6, 3), SH4(2, 1, 6, 2), SH4(1, 1, 4, 6)}, .kmask = km},
        {.name = "attention fully padded sequence", .nin = 3, .ndim = {4, 4, 4},
         .shape = {SH4(2, 1, 4, 3), SH4(2, 1, 6, 3), SH4(2, 1, 6, 2)}, .kmask = km_full, .causal = 1},
        {.name = "attention 70 tokens causal (two row blocks)", .nin = 3, .ndim = {4, 4, 4},
         .shape = {SH4(1, 1, 70, 3), SH4(1, 1, 70, 3), SH4(1, 1, 70, 2)}, .causal = 1},
    };
    for (size_t i = 0; i < sizeof cs / sizeof cs[0]; i++)
        gradcheck(&cs[i], op_attention, ref_attention, attn_out_n(&cs[i]));
}

/* ---- probabilities and mix (the two halves of attention) */

/* P of ref_attention: the same definition without the V product (rows with no key: 0). */
static void ref_probs(double *const *in, double *y, const tcase *c)
{
    int B = c->shape[0][0], H = c->shape[0][1], Tq = c->shape[0][2], Dh = c->shape[0][3];
    int Tk = c->shape[1][2];
    const double *bias = c->nin > 2 ? in[2] : NULL;
    int per_batch = bias && c->ndim[2] == 4 && c->shape[2][0] == B && B > 1;
    for (int b = 0; b < B; b++)
        for (int hh = 0; hh < H; hh++)
            for (int i = 0; i < Tq; i++) {
                size_t pr = (size_t)b * H + hh;
                double *row = y + (pr * Tq + i) * Tk, m = -INFINITY, z = 0.0;
                for (int j = 0; j < Tk; j++) {
                    int vis = (!c->causal || j - i <= Tk - Tq) && (!c->kmask || c->kmask[b * Tk + j] != 0.0f);
                    row[j] = -INFINITY;
                    if (!vis) continue;
                    double d = 0.0;
                    for (int e = 0; e < Dh; e++) d += in[0][(pr * Tq + i) * Dh + e] * in[1][(pr * Tk + j) * Dh + e];
                    row[j] = d / sqrt((double)Dh) + (bias ? bias[((per_batch ? pr : (size_t)hh) * Tq + i) * Tk + j] : 0.0);
                    m = row[j] > m ? row[j] : m;
                }
                for (int j = 0; j < Tk; j++) z += (row[j] = row[j] == -INFINITY ? 0.0 : exp(row[j] - m));
                for (int j = 0; j < Tk; j++) row[j] = z > 0.0 ? row[j] / z : 0.0;
            }
}

static dfl_tensor *op_probs(dfl_ctx *ctx, dfl_tensor **in, const tcase *c)
{
    dfl_attn_opts o = {.causal = c->causal, .bias = c->nin > 2 ? in[2] : NULL};
    if (c->kmask) {
        int ms[2] = {c->shape[0][0], c->shape[1][2]};
        o.key_mask = dfl_tensor_wrap(ctx, (float *)c->kmask, 2, ms);
    }
    return dfl_attention_probs(ctx, in[0], in[1], &o);
}

static void ref_mix(double *const *in, double *y, const tcase *c)
{
    int BH = c->shape[0][0] * c->shape[0][1], Tq = c->shape[0][2], Tk = c->shape[0][3], Dv = c->shape[1][3];
    for (int t = 0; t < BH; t++)
        for (int i = 0; i < Tq; i++)
            for (int e = 0; e < Dv; e++) {
                double acc = 0.0;
                for (int j = 0; j < Tk; j++) acc += in[0][((size_t)t * Tq + i) * Tk + j] * in[1][((size_t)t * Tk + j) * Dv + e];
                y[((size_t)t * Tq + i) * Dv + e] = acc;
            }
}

static dfl_tensor *op_mix(dfl_ctx *ctx, dfl_tensor **in, const tcase *c) { (void)c; return dfl_attention_mix(ctx, in[0], in[1]); }

static void test_grad_probs_mix(void **state)
{
    (void)state;
    static const float km[12] = {1, 1, 1, 1, 1, 1, 1, 1, 0, 1, 1, 0};
    tcase cs[] = {
        {.name = "attention_probs", .nin = 2, .ndim = {4, 4}, .shape = {SH4(2, 2, 4, 3), SH4(2, 2, 6, 3)}},
        {.name = "attention_probs causal, key padding, shared bias", .nin = 3, .ndim = {4, 4, 3},
         .shape = {SH4(2, 2, 4, 3), SH4(2, 2, 6, 3), SH4(2, 4, 6, 0)}, .param = {0, 0, 1}, .causal = 1, .kmask = km},
        {.name = "attention_probs per-batch bias", .nin = 3, .ndim = {4, 4, 4},
         .shape = {SH4(2, 1, 3, 2), SH4(2, 1, 5, 2), SH4(2, 1, 3, 5)}},
        {.name = "attention_probs 70 tokens causal (two row blocks)", .nin = 2, .ndim = {4, 4},
         .shape = {SH4(1, 1, 70, 2), SH4(1, 1, 70, 2)}, .causal = 1},
    };
    for (size_t i = 0; i < sizeof cs / sizeof cs[0]; i++)
        gradcheck(&cs[i], op_probs, ref_probs,
                  (size_t)cs[i].shape[0][0] * cs[i].shape[0][1] * cs[i].shape[0][2] * cs[i].shape[1][2]);
    tcase mx = {.name = "attention_mix", .nin = 2, .ndim = {4, 4}, .shape = {SH4(2, 3, 4, 5), SH4(2, 3, 5, 6)}};
    gradcheck(&mx, op_mix, ref_mix, 2 * 3 * 4 * 6);
    /* mix(probs(q, k)) == attention(q, k, v) to rounding, with every option on */
    dfl_ctx *ctx = dfl_ctx_new();
    int qs[4] = {2, 2, 70, 8}, ks[4] = {2, 2, 90, 8}, bs[3] = {2, 70, 90}, ms[2] = {2, 90};
    float *q = rand_buf(2 * 2 * 70 * 8, 1), *k = rand_buf(2 * 2 * 90 * 8, 1), *v = rand_buf(2 * 2 * 90 * 8, 1);
    float *bias = rand_buf(2 * 70 * 90, 1), *mask = malloc(180 * sizeof(float));
    for (int j = 0; j < 180; j++) mask[j] = (j % 7 == 3) ? 0.0f : 1.0f;
    dfl_attn_opts o = {.causal = 1, .bias = dfl_tensor_wrap(ctx, bias, 3, bs), .key_mask = dfl_tensor_wrap(ctx, mask, 2, ms)};
    dfl_tensor *qt = dfl_tensor_wrap(ctx, q, 4, qs), *kt = dfl_tensor_wrap(ctx, k, 4, ks), *vt = dfl_tensor_wrap(ctx, v, 4, ks);
    dfl_tensor *y1 = dfl_attention(ctx, qt, kt, vt, &o);
    dfl_tensor *y2 = dfl_attention_mix(ctx, dfl_attention_probs(ctx, qt, kt, &o), vt);
    assert_non_null(y1);
    assert_non_null(y2);
    assert_true(close_ff("mix(probs) vs attention", y2->data, y1->data, y1->n, 1e-6));
    int bad[4] = {2, 2, 80, 8};
    assert_null(dfl_attention_mix(ctx, dfl_tensor_zeros(ctx, 4, bad), vt));
    assert_non_null(strstr(dfl_last_error(), "attention_mix"));
    dfl_ctx_free(ctx);
    free(q); free(k); free(v); free(bias); free(mask);
}

/* ---- split / merge heads */

static void ref_split(double *const *in, double *y, const tcase *c)
{
    int B = c->shape[0][0], T = c->shape[0][1], H = c->ipar[0], Dh = c->shape[0][2] / H;
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++)
            for (int h = 0; h < H; h++)
                for (int d = 0; d < Dh; d++)
                    y[(((size_t)b * H + h) * T + t) * Dh + d] = in[0][((size_t)b * T + t) * H * Dh + h * Dh + d];
}

static void ref_merge(double *const *in, double *y, const tcase *c)
{
    int B = c->shape[0][0], H = c->shape[0][1], T = c->shape[0][2], Dh = c->shape[0][3];
    for (int b = 0; b < B; b++)
        for (int h = 0; h < H; h++)
            for (int t = 0; t < T; t++)
                for (int d = 0; d < Dh; d++)
                    y[((size_t)b * T + t) * H * Dh + h * Dh + d] = in[0][(((size_t)b * H + h) * T + t) * Dh + d];
}

static dfl_tensor *op_split(dfl_ctx *ctx, dfl_tensor **in, const tcase *c) { return dfl_split_heads(ctx, in[0], c->ipar[0]); }
static dfl_tensor *op_merge(dfl_ctx *ctx, dfl_tensor **in, const tcase *c) { (void)c; return dfl_merge_heads(ctx, in[0]); }

static void test_grad_heads(void **state)
{
    (void)state;
    tcase s = {.name = "split_heads", .nin = 1, .ndim = {3}, .shape = {{2, 3, 12}}, .ipar = {4}};
    gradcheck(&s, op_split, ref_split, 72);
    tcase m = {.name = "merge_heads", .nin = 1, .ndim = {4}, .shape = {{2, 4, 3, 3}}};
    gradcheck(&m, op_merge, ref_merge, 72);
    /* merge(split(x)) == x exactly, and y[b,h,t,d] = x[b,t,h*Dh+d] at one spot */
    dfl_ctx *ctx = dfl_ctx_new();
    int xs[3] = {2, 5, 12};
    float *x = rand_buf(120, 1);
    dfl_tensor *xt = dfl_tensor_wrap(ctx, x, 3, xs);
    dfl_tensor *y = dfl_split_heads(ctx, xt, 3);
    assert_non_null(y);
    assert_int_equal(y->shape[1], 3);
    assert_int_equal(y->shape[3], 4);
    assert_true(y->data[((1 * 3 + 2) * 5 + 4) * 4 + 1] == x[(1 * 5 + 4) * 12 + 2 * 4 + 1]);
    dfl_tensor *z = dfl_merge_heads(ctx, y);
    assert_non_null(z);
    assert_memory_equal(z->data, x, 120 * sizeof(float));
    dfl_ctx_free(ctx);
    free(x);
}

/* ---- norms */

static void ref_norm(double *const *in, double *y, const tcase *c)
{
    int D = c->shape[0][c->ndim[0] - 1], rms = c->ipar[0], has_g = c->ipar[1];
    size_t M = numel(c->ndim[0], c->shape[0]) / (size_t)D;
    const double *g = has_g ? in[1] : NULL, *bt = c->nin > 1 + has_g ? in[1 + has_g] : NULL;
    for (size_t m = 0; m < M; m++) {
        const double *x = in[0] + m * D;
        double mu = 0.0, var = 0.0;
        if (!rms) {
            for (int i = 0; i < D; i++) mu += x[i];
            mu /= D;
        }
        for (int i = 0; i < D; i++) var += (x[i] - mu) * (x[i] - mu);
        var /= D;
        double r = 1.0 / sqrt(var + c->fpar[0]);
        for (int i = 0; i < D; i++)
            y[m * D + i] = (x[i] - mu) * r * (g ? g[i] : 1.0) + (bt ? bt[i] : 0.0);
    }
}

static dfl_tensor *op_norm(dfl_ctx *ctx, dfl_tensor **in, const tcase *c)
{
    int has_g = c->ipar[1];
    dfl_tensor *g = has_g ? in[1] : NULL, *b = c->nin > 1 + has_g ? in[1 + has_g] : NULL;
    return c->ipar[0] ? dfl_rms_norm(ctx, in[0], g, c->fpar[0])
                      : dfl_layer_norm(ctx, in[0], g, b, c->fpar[0]);
}

static void test_grad_norms(void **state)
{
    (void)state;
    tcase cs[] = {
        {.name = "layer_norm", .nin = 3, .ndim = {3, 1, 1}, .shape = {{2, 3, 7}, {7}, {7}}, .param = {0, 1, 1}, .ipar = {0, 1}, .fpar = {1e-5f}},
        {.name = "layer_norm no affine", .nin = 1, .ndim = {2}, .shape = {{4, 9}}, .ipar = {0, 0}, .fpar = {1e-5f}},
        {.name = "layer_norm bias only", .nin = 2, .ndim = {2, 1}, .shape = {{4, 5}, {5}}, .ipar = {0, 0}, .fpar = {1e-3f}},
        {.name = "rms_norm", .nin = 2, .ndim = {3, 1}, .shape = {{2, 3, 8}, {8}}, .param = {0, 1}, .ipar = {1, 1}, .fpar = {1e-6f}},
        {.name = "rms_norm no weight", .nin = 1, .ndim = {2}, .shape = {{5, 6}}, .ipar = {1, 0}, .fpar = {1e-6f}},
    };
    for (size_t i = 0; i < sizeof cs / sizeof cs[0]; i++)
        gradcheck(&cs[i], op_norm, ref_norm, numel(cs[i].ndim[0], cs[i].shape[0]));
}

/* ---- GELU, SwiGLU */

static void ref_gelu(double *const *in, double *y, const tcase *c)
{
    size_t n = numel(c->ndim[0], c->shape[0]);
    for (size_t i = 0; i < n; i++) {
        double x = in[0][i];
        y[i] = c->ipar[0] == DFL_GELU_TANH
                   ? 0.5 * x * (1.0 + tanh(sqrt(2.0 / 3.14159265358979323846) * (x + 0.044715 * x * x * x)))
                   : 0.5 * x * (1.0 + erf(x / sqrt(2.0)));
    }
}

static dfl_tensor *op_gelu(dfl_ctx *ctx, dfl_tensor **in, const tcase *c) { return dfl_gelu(ctx, in[0], (dfl_gelu_kind)c->ipar[0]); }

static void ref_swiglu(double *const *in, double *y, const tcase *c)
{
    size_t n = numel(c->ndim[0], c->shape[0]);
    for (size_t i = 0; i < n; i++) y[i] = in[0][i] / (1.0 + exp(-in[0][i])) * in[1][i];
}

static dfl_tensor *op_swiglu(dfl_ctx *ctx, dfl_tensor **in, const tcase *c) { (void)c; return dfl_swiglu(ctx, in[0], in[1]); }

static void test_grad_activations(void **state)
{
    (void)state;
    tcase ge = {.name = "gelu erf", .nin = 1, .ndim = {2}, .shape = {{6, 11}}, .scale = {2.5f}, .ipar = {DFL_GELU_ERF}};
    tcase gt = {.name = "gelu tanh", .nin = 1, .ndim = {2}, .shape = {{6, 11}}, .scale = {2.5f}, .ipar = {DFL_GELU_TANH}};
    tcase sw = {.name = "swiglu", .nin = 2, .ndim = {3, 3}, .shape = {{2, 3, 9}, {2, 3, 9}}, .scale = {3.0f, 1.0f}};
    gradcheck(&ge, op_gelu, ref_gelu, 66);
    gradcheck(&gt, op_gelu, ref_gelu, 66);
    gradcheck(&sw, op_swiglu, ref_swiglu, 54);
}

/* ---- embedding, cross-entropy */

static void ref_embedding(double *const *in, double *y, const tcase *c)
{
    int D = c->shape[0][1], n = c->ipar[0] * c->ipar[1];
    for (int r = 0; r < n; r++)
        for (int d = 0; d < D; d++) y[(size_t)r * D + d] = in[0][(size_t)c->ids[r] * D + d];
}

static dfl_tensor *op_embedding(dfl_ctx *ctx, dfl_tensor **in, const tcase *c) { return dfl_embedding(ctx, in[0], c->ids, c->ipar[0], c->ipar[1]); }

static void ref_xent(double *const *in, double *y, const tcase *c)
{
    int V = c->shape[0][c->ndim[0] - 1];
    size_t M = numel(c->ndim[0], c->shape[0]) / (size_t)V;
    double tot = 0.0;
    int cnt = 0;
    for (size_t m = 0; m < M; m++) {
        if (c->ids[m] == c->ipar[0]) continue;
        const double *x = in[0] + m * V;
        double mx = x[0], z = 0.0;
        for (int j = 1; j < V; j++) mx = x[j] > mx ? x[j] : mx;
        for (int j = 0; j < V; j++) z += exp(x[j] - mx);
        tot += mx + log(z) - x[c->ids[m]];
        cnt++;
    }
    y[0] = cnt ? tot / cnt : 0.0;
}

static dfl_tensor *op_xent(dfl_ctx *ctx, dfl_tensor **in, const tcase *c) { return dfl_cross_entropy(ctx, in[0], c->ids, c->ipar[0]); }

static void test_grad_embedding_xent(void **state)
{
    (void)state;
    static const int ids[8] = {3, 0, 3, 4, 1, 3, 0, 2}; /* repeats: 3 three times, 0 twice */
    tcase em = {.name = "embedding", .nin = 1, .ndim = {2}, .shape = {{5, 6}}, .param = {1}, .ids = ids, .ipar = {2, 4}};
    gradcheck(&em, op_embedding, ref_embedding, 48);
    static const int tg[6] = {2, -1, 0, 6, -1, 3}; /* two ignored rows */
    tcase xe = {.name = "cross_entropy", .nin = 1, .ndim = {3}, .shape = {{2, 3, 7}}, .scale = {3.0f}, .ids = tg, .ipar = {-1}};
    gradcheck(&xe, op_xent, ref_xent, 1);
}

/* ================================================================== (c) properties */

/* Output of dfl_attention on copies of q, k, v (B,H,T,D each), causal. */
static void run_attn(const float *q, const float *k, const float *v, const float *km, int B, int H,
                     int T, int D, int causal, float *out)
{
    dfl_ctx *ctx = dfl_ctx_new();
    int sh[4] = {B, H, T, D}, ms[2] = {B, T};
    dfl_attn_opts o = {.causal = causal};
    if (km) o.key_mask = dfl_tensor_wrap(ctx, (float *)km, 2, ms);
    dfl_tensor *y = dfl_attention(ctx, dfl_tensor_wrap(ctx, (float *)q, 4, sh),
                                  dfl_tensor_wrap(ctx, (float *)k, 4, sh),
                                  dfl_tensor_wrap(ctx, (float *)v, 4, sh), &o);
    assert_non_null(y);
    memcpy(out, y->data, y->n * sizeof(float));
    dfl_ctx_free(ctx);
}

static void test_causal_no_leak(void **state)
{
    (void)state;
    const int B = 2, H = 3, T = 150, D = 16, t0 = 70; /* t0 inside the second row block */
    size_t n = (size_t)B * H * T * D;
    float *q = rand_buf(n, 1), *k = rand_buf(n, 1), *v = rand_buf(n, 1);
    float *y1 = malloc(n * sizeof(float)), *y2 = malloc(n * sizeof(float));
    run_attn(q, k, v, NULL, B, H, T, D, 1, y1);
    /* perturb the token at t0 (its query, key and value) in every sequence and head */
    for (int bh = 0; bh < B * H; bh++)
        for (int d = 0; d < D; d++) {
            size_t at = ((size_t)bh * T + t0) * D + d;
            q[at] += 3.0f;
            k[at] -= 2.0f;
            v[at] *= -5.0f;
        }
    run_attn(q, k, v, NULL, B, H, T, D, 1, y2);
    for (int bh = 0; bh < B * H; bh++) {
        /* rows before t0: identical bits; row t0 changes */
        assert_memory_equal(y1 + (size_t)bh * T * D, y2 + (size_t)bh * T * D, (size_t)t0 * D * sizeof(float));
        assert_memory_not_equal(y1 + ((size_t)bh * T + t0) * D, y2 + ((size_t)bh * T + t0) * D, D * sizeof(float));
    }
    /* backward: a loss on rows < t0 gives exactly zero gradient to q, k, v at rows >= t0 */
    dfl_ctx *ctx = dfl_ctx_new();
    int sh[4] = {B, H, T, D};
    dfl_tensor *qt = dfl_tensor_wrap(ctx, q, 4, sh), *kt = dfl_tensor_wrap(ctx, k, 4, sh), *vt = dfl_tensor_wrap(ctx, v, 4, sh);
    qt->requires_grad = kt->requires_grad = vt->requires_grad = 1;
    dfl_attn_opts o = {.causal = 1};
    dfl_tensor *y = dfl_attention(ctx, qt, kt, vt, &o);
    float *r = rand_buf(n, 1);
    for (int bh = 0; bh < B * H; bh++)
        for (size_t i = (size_t)t0 * D; i < (size_t)T * D; i++) r[(size_t)bh * T * D + i] = 0.0f;
    assert_int_equal(dfl_backward_vjp(ctx, y, r), DFL_OK);
    dfl_tensor *ts[3] = {qt, kt, vt};
    for (int a = 0; a < 3; a++) {
        int nonzero_before = 0;
        for (int bh = 0; bh < B * H; bh++)
            for (size_t i = 0; i < (size_t)T * D; i++) {
                float g = ts[a]->grad[(size_t)bh * T * D + i];
                if (i >= (size_t)t0 * D) assert_true(g == 0.0f);
                else nonzero_before |= g != 0.0f;
            }
        assert_true(nonzero_before);
    }
    dfl_ctx_free(ctx);
    free(q); free(k); free(v); free(y1); free(y2); free(r);
}

static void test_key_padding(void **state)
{
    (void)state;
    const int B = 2, H = 2, T = 9, D = 4;
    size_t n = (size_t)B * H * T * D;
    float km[18];
    for (int j = 0; j < 18; j++) km[j] = 1.0f;
    km[9 + 2] = km[9 + 5] = km[9 + 8] = 0.0f; /* sequence 1: keys 2, 5, 8 padded */
    float *q = rand_buf(n, 1), *k = rand_buf(n, 1), *v = rand_buf(n, 1);
    float *y1 = malloc(n * sizeof(float)), *y2 = malloc(n * sizeof(float));
    for (int causal = 0; causal < 2; causal++) {
        run_attn(q, k, v, km, B, H, T, D, causal, y1);
        /* change the padded keys' values and keys wildly: nothing moves, bit for bit */
        for (int h = 0; h < H; h++)
            for (int j = 2; j < T; j += 3)
                for (int d = 0; d < D; d++) {
                    size_t at = (((size_t)1 * H + h) * T + j) * D + d;
                    v[at] = 1e6f * (float)(d + 1);
                    k[at] = -30.0f * (float)(d + 1);
                }
        run_attn(q, k, v, km, B, H, T, D, causal, y2);
        assert_memory_equal(y1, y2, n * sizeof(float));
    }
    /* equal (to rounding) to attention over the sequence with those keys removed */
    const int Tk = 6;
    int keep[6] = {0, 1, 3, 4, 6, 7};
    double *ref = malloc((size_t)H * T * D * sizeof(double));
    for (int h = 0; h < H; h++)
        for (int i = 0; i < T; i++) {
            const float *qi = q + (((size_t)1 * H + h) * T + i) * D;
            double s[6], m = -INFINITY, z = 0.0;
            for (int j = 0; j < Tk; j++) {
                const float *kj = k + (((size_t)1 * H + h) * T + keep[j]) * D;
                s[j] = 0.0;
                for (int d = 0; d < D; d++) s[j] += (double)qi[d] * kj[d];
                s[j] /= sqrt((double)D);
                m = s[j] > m ? s[j] : m;
            }
            for (int j = 0; j < Tk; j++) z += (s[j] = exp(s[j] - m));
            for (int d = 0; d < D; d++) {
                double acc = 0.0;
                for (int j = 0; j < Tk; j++) acc += s[j] / z * v[(((size_t)1 * H + h) * T + keep[j]) * D + d];
                ref[((size_t)h * T + i) * D + d] = acc;
            }
        }
    run_attn(q, k, v, km, B, H, T, D, 0, y1);
    assert_true(dfl_close_rel("padded vs removed keys", y1 + (size_t)H * T * D, ref, (size_t)H * T * D, 2e-6, 1e-6));
    free(ref); free(q); free(k); free(v); free(y1); free(y2);
}

static void test_fully_masked_rows(void **state)
{
    (void)state;
    const int B = 2, H = 2, T = 5, D = 3;
    size_t n = (size_t)B * H * T * D;
    float km[10] = {0, 0, 0, 0, 0, 1, 1, 1, 1, 1}; /* sequence 0: every key padded */
    float *q = rand_buf(n, 1), *k = rand_buf(n, 1), *v = rand_buf(n, 1), *y = malloc(n * sizeof(float));
    run_attn(q, k, v, km, B, H, T, D, 1, y);
    for (size_t i = 0; i < n / 2; i++) assert_true(y[i] == 0.0f);
    for (size_t i = n / 2; i < n; i++) assert_true(isfinite(y[i]));
    /* an all -inf bias row also gives 0, and causal Tq > Tk leaves the first rows at 0 */
    dfl_ctx *ctx = dfl_ctx_new();
    int qs[4] = {1, 1, 4, 3}, ks[4] = {1, 1, 2, 3}, bs[3] = {1, 4, 2};
    float bias[8] = {0, 0, -INFINITY, -INFINITY, 0, 0, 0, 0};
    dfl_attn_opts o = {.bias = dfl_tensor_wrap(ctx, bias, 3, bs)};
    dfl_tensor *qt = dfl_tensor_wrap(ctx, q, 4, qs), *kt = dfl_tensor_wrap(ctx, k, 4, ks), *vt = dfl_tensor_wrap(ctx, v, 4, ks);
    dfl_tensor *yb = dfl_attention(ctx, qt, kt, vt, &o);
    assert_non_null(yb);
    for (int d = 0; d < 3; d++) assert_true(yb->data[3 + d] == 0.0f);
    for (int d = 0; d < 3; d++) assert_true(yb->data[d] != 0.0f);
    dfl_attn_opts oc = {.causal = 1};
    dfl_tensor *yc = dfl_attention(ctx, qt, kt, vt, &oc);
    assert_non_null(yc);
    for (int i = 0; i < 6; i++) assert_true(yc->data[i] == 0.0f); /* query rows 0, 1 see no key */
    CHECK_CLOSE(yc->data[6], v[0], 1e-6);                         /* row 2 sees key 0 only */
    dfl_ctx_free(ctx);
    free(q); free(k); free(v); free(y);
}

/* A NaN in the scores or logits reaches the output (the vectorised exp alone would hide it). */
static void test_nan_propagates(void **state)
{
    (void)state;
    const int B = 1, H = 1, T = 4, D = 2;
    float q[8] = {0.1f, 0.2f, 0.3f, 0.4f, 0.5f, 0.6f, 0.7f, 0.8f}, k[8], v[8], y[8];
    memcpy(k, q, sizeof k);
    memcpy(v, q, sizeof v);
    k[2 * D] = NAN; /* key 2: rows 2, 3 (causal) see it, rows 0, 1 do not */
    run_attn(q, k, v, NULL, B, H, T, D, 1, y);
    assert_true(isfinite(y[0]) && isfinite(y[2]));
    assert_true(isnan(y[4]) && isnan(y[6]));
    dfl_ctx *ctx = dfl_ctx_new();
    float lg[6] = {1.0f, NAN, 0.0f, 1.0f, 2.0f, 3.0f};
    int sh[2] = {2, 3}, tg[2] = {0, 1};
    dfl_tensor *l = dfl_cross_entropy(ctx, dfl_tensor_wrap(ctx, lg, 2, sh), tg, -1);
    assert_non_null(l);
    assert_true(isnan(l->data[0]));
    dfl_ctx_free(ctx);
}

static void test_cross_entropy_values(void **state)
{
    (void)state;
    dfl_ctx *ctx = dfl_ctx_new();
    /* uniform logits: ln V for any constant */
    const int V = 37;
    int sh[2] = {4, V}, tg[4] = {0, 5, 36, 17};
    float *x = malloc(4 * V * sizeof(float));
    for (int i = 0; i < 4 * V; i++) x[i] = 3.75f;
    dfl_tensor *l = dfl_cross_entropy(ctx, dfl_tensor_wrap(ctx, x, 2, sh), tg, -1);
    assert_non_null(l);
    CHECK_CLOSE(l->data[0], log(37.0), 1e-6);
    /* hand-computed: row 0 [0.5, -0.5, 2] target 1: ln(e^0.5 + e^-0.5 + e^2) + 0.5 = 2.7663679;
     * row 1 [1000, 1001, 1002] target 2: ln(1 + e^-1 + e^-2) = 0.4076060 (no overflow);
     * row 2 ignored (target -1, logits 9999); mean over the 2 counted rows = 1.5869869 nats. */
    float h[9] = {0.5f, -0.5f, 2.0f, 1000.0f, 1001.0f, 1002.0f, 0.0f, 0.0f, 9999.0f};
    int hs[2] = {3, 3}, ht[3] = {1, 2, -1};
    dfl_tensor *ht_ = dfl_tensor_wrap(ctx, h, 2, hs);
    ht_->requires_grad = 1;
    dfl_tensor *l2 = dfl_cross_entropy(ctx, ht_, ht, -1);
    assert_non_null(l2);
    CHECK_CLOSE(l2->data[0], 1.586986932125757, 1e-6);
    assert_int_equal(dfl_backward(ctx, l2), DFL_OK);
    /* d/dlogit = (softmax - onehot) / 2; the ignored row gets 0 */
    double z0 = exp(0.5) + exp(-0.5) + exp(2.0);
    CHECK_CLOSE(ht_->grad[1], (exp(-0.5) / z0 - 1.0) / 2.0, 1e-6);
    CHECK_CLOSE(ht_->grad[5], (1.0 / (1.0 + exp(-1.0) + exp(-2.0)) - 1.0) / 2.0, 1e-6);
    for (int j = 6; j < 9; j++) assert_true(ht_->grad[j] == 0.0f);
    /* every row ignored: loss 0 */
    int all_ign[3] = {-1, -1, -1};
    dfl_tensor *l3 = dfl_cross_entropy(ctx, ht_, all_ign, -1);
    assert_non_null(l3);
    assert_true(l3->data[0] == 0.0f);
    /* a target out of range is refused with the row named */
    int bad[3] = {1, 3, 0};
    assert_null(dfl_cross_entropy(ctx, ht_, bad, -1));
    assert_non_null(strstr(dfl_last_error(), "row 1"));
    dfl_ctx_free(ctx);
    free(x);
}

static void test_layer_norm_stats(void **state)
{
    (void)state;
    dfl_ctx *ctx = dfl_ctx_new();
    const int M = 6, D = 48;
    int sh[2] = {M, D};
    float *x = rand_buf((size_t)M * D, 3.0f);
    for (int i = 0; i < M * D; i++) x[i] += 5.0f * (float)(i / D); /* row offsets 0..25 */
    dfl_tensor *y = dfl_layer_norm(ctx, dfl_tensor_wrap(ctx, x, 2, sh), NULL, NULL, 1e-6f);
    assert_non_null(y);
    for (int m = 0; m < M; m++) {
        double mu = 0.0, var = 0.0;
        for (int i = 0; i < D; i++) mu += y->data[m * D + i];
        mu /= D;
        for (int i = 0; i < D; i++) var += (y->data[m * D + i] - mu) * (y->data[m * D + i] - mu);
        var /= D;
        CHECK_CLOSE(mu, 0.0, 1e-6);
        CHECK_CLOSE(var, 1.0, 1e-5); /* var / (var + 1e-6) with var ~ 9 */
    }
    /* RMSNorm rows: mean square 1 */
    dfl_tensor *r = dfl_rms_norm(ctx, dfl_tensor_wrap(ctx, x, 2, sh), NULL, 0.0f);
    assert_non_null(r);
    for (int m = 0; m < M; m++) {
        double ms = 0.0;
        for (int i = 0; i < D; i++) ms += (double)r->data[m * D + i] * r->data[m * D + i];
        CHECK_CLOSE(ms / D, 1.0, 1e-5);
    }
    dfl_ctx_free(ctx);
    free(x);
}

static void test_gelu_values(void **state)
{
    (void)state;
    dfl_ctx *ctx = dfl_ctx_new();
    float x[6] = {1.0f, -1.0f, 0.5f, 3.0f, -3.0f, 0.0f};
    /* 0.5 x (1 + erf(x / sqrt 2)) and its tanh form, evaluated in double */
    const double e[6] = {0.8413447460685429, -0.15865525393145707, 0.34573123063700656,
                         2.99595030590511, -0.00404969409489031, 0.0};
    const double t[6] = {0.8411919906082768, -0.15880800939172324, 0.34571400982514394,
                         2.996362607918227, -0.0036373920817729943, 0.0};
    int sh[1] = {6};
    dfl_tensor *xt = dfl_tensor_wrap(ctx, x, 1, sh);
    dfl_tensor *ye = dfl_gelu(ctx, xt, DFL_GELU_ERF), *yt = dfl_gelu(ctx, xt, DFL_GELU_TANH);
    assert_non_null(ye);
    assert_non_null(yt);
    for (int i = 0; i < 6; i++) {
        CHECK_CLOSE(ye->data[i], e[i], 1e-6);
        CHECK_CLOSE(yt->data[i], t[i], 1e-6);
    }
    CHECK_CLOSE(ye->data[0], 0.841345, 5e-7);
    CHECK_CLOSE(yt->data[0], 0.841192, 5e-7);
    assert_null(dfl_gelu(ctx, xt, (dfl_gelu_kind)7));
    /* SwiGLU at a point: silu(2) * 3 = 2 / (1 + e^-2) * 3 */
    float a = 2.0f, b = 3.0f;
    int one[1] = {1};
    dfl_tensor *s = dfl_swiglu(ctx, dfl_tensor_wrap(ctx, &a, 1, one), dfl_tensor_wrap(ctx, &b, 1, one));
    assert_non_null(s);
    CHECK_CLOSE(s->data[0], 6.0 / (1.0 + exp(-2.0)), 1e-6);
    dfl_ctx_free(ctx);
}

static void test_embedding_accumulates(void **state)
{
    (void)state;
    dfl_ctx *ctx = dfl_ctx_new();
    int ts[2] = {4, 3};
    dfl_tensor *W = dfl_tensor_new(2, ts, 1);
    for (int i = 0; i < 12; i++) W->data[i] = (float)i;
    int ids[6] = {2, 2, 0, 2, 3, 0};
    dfl_tensor *y = dfl_embedding(ctx, W, ids, 2, 3);
    assert_non_null(y);
    assert_int_equal(y->shape[2], 3);
    assert_true(y->data[3 * 3 + 1] == 7.0f); /* (b 1, t 0) = row 2, lane 1 */
    float dy[18];
    for (int i = 0; i < 18; i++) dy[i] = (float)(i + 1);
    assert_int_equal(dfl_backward_vjp(ctx, y, dy), DFL_OK);
    /* row 2 appears at positions 0, 1, 3: dy rows (1,2,3) + (4,5,6) + (10,11,12) */
    assert_true(W->grad[6] == 15.0f && W->grad[7] == 18.0f && W->grad[8] == 21.0f);
    /* row 0 at positions 2, 5: (7,8,9) + (16,17,18) */
    assert_true(W->grad[0] == 23.0f && W->grad[1] == 25.0f && W->grad[2] == 27.0f);
    assert_true(W->grad[3] == 0.0f && W->grad[4] == 0.0f && W->grad[5] == 0.0f);
    assert_true(W->grad[9] == 13.0f);
    int bad[6] = {0, 1, 4, 0, 0, 0};
    assert_null(dfl_embedding(ctx, W, bad, 2, 3));
    assert_non_null(strstr(dfl_last_error(), "id 4"));
    dfl_ctx_free(ctx);
    dfl_tensor_free(W);
}

/* The vectorisable helpers of src/tf/tf_math.h against libm in double, on a fine grid. */
static void test_math_helpers(void **state)
{
    (void)state;
    double e_exp = 0.0, e_sig = 0.0, e_tanh = 0.0, e_erfc = 0.0;
    for (float x = -87.0f; x < 88.0f; x += 0.00731f) {
        double r = exp((double)x);
        e_exp = fmax(e_exp, fabs(tf_exp(x) - r) / r);
    }
    for (float x = -40.0f; x < 40.0f; x += 0.00173f) {
        double sg = 1.0 / (1.0 + exp(-(double)x));
        e_sig = fmax(e_sig, fabs(tf_sigmoid(x) - sg) / sg);
        e_tanh = fmax(e_tanh, fabs(tf_tanh(x) - tanh((double)x)));
        /* relative below x = 3 (erfc(3) = 2e-5); further out the float rounding of -x^2 in the
         * exponent dominates (relative 1e-5 at x = 9, absolute < 1e-40) */
        double ec = erfc((double)x);
        e_erfc = fmax(e_erfc, fabs(tf_erfc(x) - ec) / (x < 3.0f ? ec : 1.0));
    }
    CHECK_CLOSE(e_exp, 0.0, 3e-7);
    CHECK_CLOSE(e_sig, 0.0, 3e-7);
    CHECK_CLOSE(e_tanh, 0.0, 3e-7);
    CHECK_CLOSE(e_erfc, 0.0, 2e-6); /* measured 9.4e-7 (near x = 3) */
    assert_true(tf_exp(-INFINITY) == 0.0f && tf_exp(-88.0f) == 0.0f && tf_exp(0.0f) == 1.0f);
    assert_true(isfinite(tf_exp(1000.0f)) && tf_sigmoid(-1000.0f) == 0.0f && tf_sigmoid(1000.0f) == 1.0f);
    assert_true(tf_erfc(-0.0f) == 1.0f && tf_erfc(0.0f) == 1.0f);
    assert_true(tf_is_nan(NAN) && !tf_is_nan(INFINITY) && !tf_is_nan(-1.0f));
}

static void test_errors(void **state)
{
    (void)state;
    dfl_ctx *ctx = dfl_ctx_new();
    int qs[4] = {2, 3, 5, 4}, ks[4] = {2, 3, 6, 5}, vs[4] = {2, 3, 6, 2}, k2[4] = {2, 3, 6, 4};
    dfl_tensor *q = dfl_tensor_zeros(ctx, 4, qs), *k = dfl_tensor_zeros(ctx, 4, ks);
    dfl_tensor *v = dfl_tensor_zeros(ctx, 4, vs), *kk = dfl_tensor_zeros(ctx, 4, k2);
    assert_null(dfl_attention(ctx, q, k, v, NULL)); /* Dh 4 vs 5 */
    assert_non_null(strstr(dfl_last_error(), "[2, 3, 5, 4]"));
    assert_non_null(strstr(dfl_last_error(), "[2, 3, 6, 5]"));
    int bs[3] = {3, 6, 5}, ms[2] = {2, 5};
    dfl_attn_opts o = {.bias = dfl_tensor_zeros(ctx, 3, bs)};
    assert_null(dfl_attention(ctx, q, kk, v, &o)); /* bias (3,6,5) but (H,Tq,Tk) = (3,5,6) */
    assert_non_null(strstr(dfl_last_error(), "bias [3, 6, 5]"));
    dfl_attn_opts o2 = {.key_mask = dfl_tensor_zeros(ctx, 2, ms)};
    assert_null(dfl_attention(ctx, q, kk, v, &o2)); /* key mask (2,5) but Tk = 6 */
    assert_non_null(strstr(dfl_last_error(), "key_mask"));
    dfl_attn_opts o3 = {.scale = -1.0f};
    assert_null(dfl_attention(ctx, q, kk, v, &o3));
    assert_non_null(dfl_attention(ctx, q, kk, v, NULL));
    assert_null(dfl_attention(ctx, NULL, kk, v, NULL));
    int xs[3] = {2, 5, 10};
    dfl_tensor *x = dfl_tensor_zeros(ctx, 3, xs);
    assert_null(dfl_split_heads(ctx, x, 3));
    assert_non_null(strstr(dfl_last_error(), "split_heads"));
    assert_null(dfl_merge_heads(ctx, x));
    int gs[1] = {7};
    dfl_tensor *g = dfl_tensor_zeros(ctx, 1, gs);
    assert_null(dfl_layer_norm(ctx, x, g, NULL, 1e-5f));
    assert_non_null(strstr(dfl_last_error(), "layer_norm"));
    assert_null(dfl_rms_norm(ctx, x, g, 1e-5f));
    assert_null(dfl_layer_norm(ctx, x, NULL, NULL, -1.0f));
    assert_null(dfl_swiglu(ctx, x, q));
    assert_non_null(strstr(dfl_last_error(), "swiglu"));
    assert_null(dfl_embedding(ctx, x, (const int[]){0}, 1, 1)); /* table not 2-D */
    assert_null(dfl_cross_entropy(ctx, x, NULL, -1));
    dfl_ctx_free(ctx);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_attention_kernels),
        cmocka_unit_test(test_grad_attention),
        cmocka_unit_test(test_grad_probs_mix),
        cmocka_unit_test(test_grad_heads),
        cmocka_unit_test(test_grad_norms),
        cmocka_unit_test(test_grad_activations),
        cmocka_unit_test(test_grad_embedding_xent),
        cmocka_unit_test(test_causal_no_leak),
        cmocka_unit_test(test_key_padding),
        cmocka_unit_test(test_fully_masked_rows),
        cmocka_unit_test(test_nan_propagates),
        cmocka_unit_test(test_cross_entropy_values),
        cmocka_unit_test(test_layer_norm_stats),
        cmocka_unit_test(test_gelu_values),
        cmocka_unit_test(test_embedding_accumulates),
        cmocka_unit_test(test_math_helpers),
        cmocka_unit_test(test_errors),
    };
    return cmocka_run_group_tests(tests, setup, NULL);
}
