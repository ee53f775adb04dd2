/* Multi-head scaled dot-product attention (Vaswani et al. 2017, Eq. 1) with causal mask, additive
 * bias and key padding, and the head split/merge permutations (DESIGN section 6).
 *
 * Per (batch, head) the queries are processed in blocks of DFL_ATTN_BLOCK rows. For a block the
 * scores S = scale Q K^T are one cblas_sgemm over the keys the block can see (all of them, or
 * up to the block's last row when causal), the row softmax runs in place (bias added, row maximum
 * subtracted, masked keys set to exactly 0), and O = P V is a second sgemm. The backward redoes
 * the same blocking from the saved P: dV += P^T dO, dP = dO V^T, dS = P (dP - rowsum(P dP)),
 * dQ += scale dS K, dK += scale dS^T Q (each one sgemm per block).
 * Threads: OpenMP over the batch*heads pairs, BLAS single-threaded inside a parallel region;
 * with a shared bias that needs a gradient, over heads only so each thread owns dbias[h]. */
#include "difflow/tf.h"

#include "tf/tf_math.h"

#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <string.h>

size_t dfl_k_attention_work_floats(int Tk)
{
    return (size_t)omp_get_max_threads() * DFL_ATTN_BLOCK * (size_t)(Tk > 0 ? Tk : 1);
}

/* Keys visible to query row i: [0, lim). */
static inline int row_limit(int i, int Tq, int Tk, int causal)
{
    if (!causal) return Tk;
    int lim = i + (Tk - Tq) + 1;
    return lim < 0 ? 0 : (lim > Tk ? Tk : lim);
}

/* In-place masked softmax of one row s[0, len): keys j < lim with km[j] != 0 (km NULL: all) are
 * visible; the rest get exactly 0. brow (NULL or len floats) is added first. A row with no
 * visible key (or only -inf scores) becomes all zeros; a NaN among the visible scores makes the
 * row NaN. */
static void softmax_row(float *restrict s, const float *restrict brow, const float *restrict km,
                        int lim, int len)
{
    if (brow)
        for (int j = 0; j < lim; j++) s[j] += brow[j];
    float m = -INFINITY;
    int bad = 0; /* a NaN score makes the whole row NaN (tf_exp would hide it) */
    if (km) {
#pragma omp simd reduction(max : m) reduction(| : bad)
        for (int j = 0; j < lim; j++) {
            float c = km[j] != 0.0f ? s[j] : -INFINITY;
            m = c > m ? c : m;
            bad |= tf_is_nan(c);
        }
    } else {
#pragma omp simd reduction(max : m) reduction(| : bad)
        for (int j = 0; j < lim; j++) {
            m = s[j] > m ? s[j] : m;
            bad |= tf_is_nan(s[j]);
        }
    }
    if (bad) {
        for (int j = 0; j < len; j++) s[j] = NAN;
        return;
    }
    if (m == -INFINITY) {
        memset(s, 0, (size_t)len * sizeof(float));
        return;
    }
    float sum = 0.0f;
    if (km) {
#pragma omp simd reduction(+ : sum)
        for (int j = 0; j < lim; j++) {
            float e = tf_exp(s[j] - m);
            e = km[j] != 0.0f ? e : 0.0f;
            s[j] = e;
            sum += e;
        }
    } else {
#pragma omp simd reduction(+ : sum)
        for (int j = 0; j < lim; j++) {
            float e = tf_exp(s[j] - m);
            s[j] = e;
            sum += e;
        }
    }
    float inv = 1.0f / sum;
    for (int j = 0; j < lim; j++) s[j] *= inv;
    for (int j = lim; j < len; j++) s[j] = 0.0f;
}

typedef struct {
    int B, H, Tq, Tk, Dh, Dv, causal, bias_per_batch;
    float scale;
} attn_dims;

/* Forward of one (b, h). p: this pair's (Tq, Tk) probabilities, or NULL (use blk, BLOCK x Tk). */
static void attn_fwd_pair(const attn_dims *d, const float *q, const float *k, const float *v,
                          const float *bias, const float *km, float *o, float *p, float *blk)
{
    int Tq = d->Tq, Tk = d->Tk, Dh = d->Dh, Dv = d->Dv;
    for (int i0 = 0; i0 < Tq; i0 += DFL_ATTN_BLOCK) {
        int nr = Tq - i0 < DFL_ATTN_BLOCK ? Tq - i0 : DFL_ATTN_BLOCK;
        int kmax = row_limit(i0 + nr - 1, Tq, Tk, d->causal); /* keys the block can see */
        float *s = p ? p + (size_t)i0 * Tk : blk;             /* rows of stride Tk */
        float *ob = v ? o + (size_t)i0 * Dv : NULL;
        if (kmax == 0) { /* nothing visible (causal with Tq > Tk) */
            memset(s, 0, (size_t)nr * Tk * sizeof(float));
            if (ob) memset(ob, 0, (size_t)nr * Dv * sizeof(float));
            continue;
        }
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, nr, kmax, Dh, d->scale,
                    q + (size_t)i0 * Dh, Dh, k, Dh, 0.0f, s, Tk);
        for (int r = 0; r < nr; r++) {
            int i = i0 + r;
            softmax_row(s + (size_t)r * Tk, bias ? bias + (size_t)i * Tk : NULL, km,
                        row_limit(i, Tq, Tk, d->causal), Tk);
        }
        if (ob)
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, nr, Dv, kmax, 1.0f, s, Tk, v,
                        Dv, 0.0f, ob, Dv);
    }
}

void dfl_k_attention_fwd(const float *q, const float *k, const float *v, const float *bias,
                         int bias_per_batch, const float *kmask, float *o, float *p, int B, int H,
                         int Tq, int Tk, int Dh, int Dv, float scale, int causal, float *work)
{
    attn_dims d = {B, H, Tq, Tk, Dh, Dv, causal, bias_per_batch, scale};
    long npair = (long)B * H;
#pragma omp parallel for schedule(static) if (npair > 1)
    for (long t = 0; t < npair; t++) {
        int b = (int)(t / H), h = (int)(t % H);
        const float *bp = NULL;
        if (bias) bp = bias + ((size_t)(bias_per_batch ? t : h)) * Tq * Tk;
        float *blk = p ? NULL : work + (size_t)omp_get_thread_num() * DFL_ATTN_BLOCK * Tk;
        attn_fwd_pair(&d, q + (size_t)t * Tq * Dh, k + (size_t)t * Tk * Dh,
                      v ? v + (size_t)t * Tk * Dv : NULL, bp, kmask ? kmask + (size_t)b * Tk : NULL,
                      o ? o + (size_t)t * Tq * Dv : NULL, p ? p + (size_t)t * Tq * Tk : NULL, blk);
    }
}

/* Backward of one (b, h); blk: BLOCK x Tk scratch. dPin: this pair's (Tq, Tk) gradient of the
 * probabilities (probs-only backward; dO, v, dv unused), or NULL (dP = dO V^T). */
static void attn_bwd_pair(const attn_dims *d, const float *q, const float *k, const float *v,
                          const float *p, const float *dO, const float *dPin, float *dq, float *dk,
                          float *dv, float *dbias, float *blk)
{
    int Tq = d->Tq, Tk = d->Tk, Dh = d->Dh, Dv = d->Dv;
    for (int i0 = 0; i0 < Tq; i0 += DFL_ATTN_BLOCK) {
        int nr = Tq - i0 < DFL_ATTN_BLOCK ? Tq - i0 : DFL_ATTN_BLOCK;
        int kmax = row_limit(i0 + nr - 1, Tq, Tk, d->causal);
        if (kmax == 0) continue;
        const float *pb = p + (size_t)i0 * Tk;
        if (dPin) {
            memcpy(blk, dPin + (size_t)i0 * Tk, (size_t)nr * Tk * sizeof(float));
        } else {
            const float *dob = dO + (size_t)i0 * Dv;
            if (dv) /* dV[0:kmax] += P^T dO */
                cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, kmax, Dv, nr, 1.0f, pb, Tk,
                            dob, Dv, 1.0f, dv, Dv);
            if (!dq && !dk && !dbias) continue;
            /* dP = dO V^T into blk (nr x kmax, stride Tk) */
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, nr, kmax, Dv, 1.0f, dob, Dv, v,
                        Dv, 0.0f, blk, Tk);
        }
        for (int r = 0; r < nr; r++) {
            const float *pr = pb + (size_t)r * Tk;
            float *g = blk + (size_t)r * Tk;
            float dot = 0.0f;
#pragma omp simd reduction(+ : dot)
            for (int j = 0; j < kmax; j++) dot += pr[j] * g[j];
            for (int j = 0; j < kmax; j++) g[j] = pr[j] * (g[j] - dot);
            if (dbias) {
                float *db = dbias + (size_t)(i0 + r) * Tk;
                for (int j = 0; j < kmax; j++) db[j] += g[j];
            }
        }
        if (dq) /* dQ[block] += scale dS K[0:kmax] */
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, nr, Dh, kmax, d->scale, blk, Tk,
                        k, Dh, 1.0f, dq + (size_t)i0 * Dh, Dh);
        if (dk) /* dK[0:kmax] += scale dS^T Q[block] */
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, kmax, Dh, nr, d->scale, blk, Tk,
                        q + (size_t)i0 * Dh, Dh, 1.0f, dk, Dh);
    }
}

/* Shared driver of the two backward kernels (dp NULL: full attention from do_). */
static void attn_bwd_all(const attn_dims *d, const float *q, const float *k, const float *v,
                         const float *p, const float *do_, const float *dp, float *dq, float *dk,
                         float *dv, float *dbias, float *work)
{
    int B = d->B, H = d->H, Tq = d->Tq, Tk = d->Tk, Dh = d->Dh, Dv = d->Dv;
    int shared = dbias && !d->bias_per_batch;
    long ntask = shared ? H : (long)B * H;
#pragma omp parallel for schedule(static) if (ntask > 1)
    for (long t = 0; t < ntask; t++) {
        float *blk = work + (size_t)omp_get_thread_num() * DFL_ATTN_BLOCK * Tk;
        int nb = shared ? B : 1;
        for (int bb = 0; bb < nb; bb++) {
            long pair = shared ? (long)bb * H + t : t; /* index of (b, h) */
            int h = (int)(pair % H);
            size_t oq = (size_t)pair * Tq * Dh, ok = (size_t)pair * Tk * Dh,
                   ov = (size_t)pair * Tk * Dv, op = (size_t)pair * Tq * Tk;
            float *db = NULL;
            if (dbias) db = dbias + (size_t)(d->bias_per_batch ? pair : h) * Tq * Tk;
            attn_bwd_pair(d, q + oq, k + ok, v ? v + ov : NULL, p + op,
                          do_ ? do_ + (size_t)pair * Tq * Dv : NULL, dp ? dp + op : NULL,
                          dq ? dq + oq : NULL, dk ? dk + ok : NULL, dv ? dv + ov : NULL, db, blk);
        }
    }
}

void dfl_k_attention_bwd(const float *q, const float *k, const float *v, const float *p,
                         const float *do_, float *dq, float *dk, float *dv, float *dbias,
                         int bias_per_batch, int B, int H, int Tq, int Tk, int Dh, int Dv,
                         float scale, int causal, float *work)
{
    attn_dims d = {B, H, Tq, Tk, Dh, Dv, causal, bias_per_batch, scale};
    attn_bwd_all(&d, q, k, v, p, do_, NULL, dq, dk, dv, dbias, work);
}

void dfl_k_attention_probs_bwd(const float *q, const float *k, const float *p, const float *dp,
                               float *dq, float *dk, float *dbias, int bias_per_batch, int B,
                               int H, int Tq, int Tk, int Dh, float scale, int causal,
                               float *work)
{
    attn_dims d = {B, H, Tq, Tk, Dh, 0, causal, bias_per_batch, scale};
    attn_bwd_all(&d, q, k, NULL, p, NULL, dp, dq, dk, NULL, dbias, work);
}

/* ------------------------------------------------------------------ ops */

/* Checks q, k (and v unless NULL) and the options; sets *per_batch (bias indexed by b) and
 * *scale. `name` prefixes the messages. Returns 0 after dfl_fail on error. */
static int attn_check(const char *name, const dfl_tensor *q, const dfl_tensor *k,
                      const dfl_tensor *v, const dfl_attn_opts *o, int *per_batch, float *scale)
{
    char s1[64], s2[64], s3[64];
    int bad = q->ndim != 4 || k->ndim != 4 || k->shape[0] != q->shape[0] ||
              k->shape[1] != q->shape[1] || k->shape[3] != q->shape[3];
    if (v) bad |= v->ndim != 4 || v->shape[0] != q->shape[0] || v->shape[1] != q->shape[1] ||
                  v->shape[2] != k->shape[2];
    if (bad) {
        dfl_fail(DFL_ERR_SHAPE,
                 "%s: q %s, k %s, v %s disagree (need q (B,H,Tq,Dh), k (B,H,Tk,Dh), v (B,H,Tk,Dv))",
                 name, dfl_shape_str(q, s1, sizeof s1), dfl_shape_str(k, s2, sizeof s2),
                 v ? dfl_shape_str(v, s3, sizeof s3) : "(none)");
        return 0;
    }
    int B = q->shape[0], H = q->shape[1], Tq = q->shape[2], Tk = k->shape[2];
    *per_batch = 0;
    if (o->bias) {
        const dfl_tensor *bt = o->bias;
        int ok = 0;
        if (bt->ndim == 3)
            ok = bt->shape[0] == H && bt->shape[1] == Tq && bt->shape[2] == Tk;
        else if (bt->ndim == 4)
            ok = (bt->shape[0] == B || bt->shape[0] == 1) && bt->shape[1] == H &&
                 bt->shape[2] == Tq && bt->shape[3] == Tk;
        if (!ok) {
            dfl_fail(DFL_ERR_SHAPE,
                     "%s: bias %s must be (H,Tq,Tk) = (%d,%d,%d) or (B,H,Tq,Tk) = (%d,%d,%d,%d) for q %s, k %s",
                     name, dfl_shape_str(bt, s1, sizeof s1), H, Tq, Tk, B, H, Tq, Tk,
                     dfl_shape_str(q, s2, sizeof s2), dfl_shape_str(k, s3, sizeof s3));
            return 0;
        }
        *per_batch = bt->ndim == 4 && bt->shape[0] == B && B > 1;
    }
    if (o->key_mask &&
        (o->key_mask->ndim != 2 || o->key_mask->shape[0] != B || o->key_mask->shape[1] != Tk)) {
        dfl_fail(DFL_ERR_SHAPE, "%s: key_mask %s must be (B,Tk) = (%d,%d) for q %s, k %s", name,
                 dfl_shape_str(o->key_mask, s1, sizeof s1), B, Tk, dfl_shape_str(q, s2, sizeof s2),
                 dfl_shape_str(k, s3, sizeof s3));
        return 0;
    }
    if (!(o->scale >= 0.0f) || isinf(o->scale)) {
        dfl_fail(DFL_ERR_ARG, "%s: scale must be finite and >= 0 (0 = 1/sqrt(Dh)), got %g", name,
                 (double)o->scale);
        return 0;
    }
    *scale = o->scale > 0.0f ? o->scale : 1.0f / sqrtf((float)q->shape[3]);
    return 1;
}

static void attention_backward(dfl_ctx *ctx, dfl_node *nd)
{
    dfl_tensor *q = nd->in[0], *k = nd->in[1], *v = nd->in[2];
    dfl_tensor *bias = nd->nin > 3 ? nd->in[3] : NULL;
    float *dq = dfl_grad_of(ctx, q), *dk = dfl_grad_of(ctx, k), *dv = dfl_grad_of(ctx, v);
    float *db = bias ? dfl_grad_of(ctx, bias) : NULL;
    if (!dq && !dk && !dv && !db) return;
    int Tk = k->shape[2];
    float *work = dfl_arena_alloc(ctx, dfl_k_attention_work_floats(Tk) * sizeof(float));
    if (!work) return;
    dfl_k_attention_bwd(q->data, k->data, v->data, nd->saved[0], nd->out->grad, dq, dk, dv, db,
                        nd->iarg[1], q->shape[0], q->shape[1], q->shape[2], Tk, q->shape[3],
                        v->shape[3], nd->farg[0], nd->iarg[0], work);
}

dfl_tensor *dfl_attention(dfl_ctx *ctx, dfl_tensor *q, dfl_tensor *k, dfl_tensor *v,
                          const dfl_attn_opts *opts)
{
    if (!ctx || !q || !k || !v) return NULL;
    dfl_attn_opts o0 = {0};
    const dfl_attn_opts *o = opts ? opts : &o0;
    int per_batch;
    float scale;
    if (!attn_check("attention", q, k, v, o, &per_batch, &scale)) return NULL;
    int B = q->shape[0], H = q->shape[1], Tq = q->shape[2], Dh = q->shape[3];
    int Tk = k->shape[2], Dv = v->shape[3];
    dfl_tensor *in[4] = {q, k, v, o->bias};
    int nin = o->bias ? 4 : 3;
    int oshape[4] = {B, H, Tq, Dv};
    dfl_tensor *out = dfl_op_output(ctx, 4, oshape, in, nin);
    if (!out) return NULL;
    float *p = NULL, *work = NULL;
    if (out->requires_grad) {
        p = dfl_arena_alloc(ctx, (size_t)B * H * Tq * Tk * sizeof(float));
        if (!p) return NULL;
    } else {
        work = dfl_arena_alloc(ctx, dfl_k_attention_work_floats(Tk) * sizeof(float));
        if (!work) return NULL;
    }
    dfl_k_attention_fwd(q->data, k->data, v->data, o->bias ? o->bias->data : NULL, per_batch,
                        o->key_mask ? o->key_mask->data : NULL, out->data, p, B, H, Tq, Tk, Dh,
                        Dv, scale, o->causal != 0, work);
    dfl_node *nd = dfl_tape_push(ctx, attention_backward, "attention", out, in, nin);
    if (nd) {
        nd->saved[0] = p;
        nd->iarg[0] = o->causal != 0;
        nd->iarg[1] = per_batch;
        nd->farg[0] = scale;
    }
    return out;
}

static void attention_probs_backward(dfl_ctx *ctx, dfl_node *nd)
{
    dfl_tensor *q = nd->in[0], *k = nd->in[1], *bias = nd->nin > 2 ? nd->in[2] : NULL;
    float *dq = dfl_grad_of(ctx, q), *dk = dfl_grad_of(ctx, k);
    float *db = bias ? dfl_grad_of(ctx, bias) : NULL;
    if (!dq && !dk && !db) return;
    int Tk = k->shape[2];
    float *work = dfl_arena_alloc(ctx, dfl_k_attention_work_floats(Tk) * sizeof(float));
    if (!work) return;
    dfl_k_attention_probs_bwd(q->data, k->data, nd->out->data, nd->out->grad, dq, dk, db,
                              nd->iarg[1], q->shape[0], q->shape[1], q->shape[2], Tk, q->shape[3],
                              nd->farg[0], nd->iarg[0], work);
}

dfl_tensor *dfl_attention_probs(dfl_ctx *ctx, dfl_tensor *q, dfl_tensor *k,
                                const dfl_attn_opts *opts)
{
    if (!ctx || !q || !k) return NULL;
    dfl_attn_opts o0 = {0};
    const dfl_attn_opts *o = opts ? opts : &o0;
    int per_batch;
    float scale;
    if (!attn_check("attention_probs", q, k, NULL, o, &per_batch, &scale)) return NULL;
    int B = q->shape[0], H = q->shape[1], Tq = q->shape[2], Dh = q->shape[3], Tk = k->shape[2];
    dfl_tensor *in[3] = {q, k, o->bias};
    int nin = o->bias ? 3 : 2;
    int pshape[4] = {B, H, Tq, Tk};
    dfl_tensor *out = dfl_op_output(ctx, 4, pshape, in, nin);
    if (!out) return NULL;
    dfl_k_attention_fwd(q->data, k->data, NULL, o->bias ? o->bias->data : NULL, per_batch,
                        o->key_mask ? o->key_mask->data : NULL, NULL, out->data, B, H, Tq, Tk, Dh,
                        0, scale, o->causal != 0, NULL);
    dfl_node *nd = dfl_tape_push(ctx, attention_probs_backward, "attention_probs", out, in, nin);
    if (nd) {
        nd->iarg[0] = o->causal != 0;
        nd->iarg[1] = per_batch;
        nd->farg[0] = scale;
    }
    return out;
}

void dfl_k_attention_mix_fwd(const float *p, const float *v, float *o, int BH, int Tq, int Tk,
                             int Dv)
{
#pragma omp parallel for schedule(static) if (BH > 1)
    for (long t = 0; t < BH; t++)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, Tq, Dv, Tk, 1.0f,
                    p + (size_t)t * Tq * Tk, Tk, v + (size_t)t * Tk * Dv, Dv, 0.0f,
                    o + (size_t)t * Tq * Dv, Dv);
}

void dfl_k_attention_mix_bwd(const float *p, const float *v, const float *do_, float *dp,
                             float *dv, int BH, int Tq, int Tk, int Dv)
{
#pragma omp parallel for schedule(static) if (BH > 1)
    for (long t = 0; t < BH; t++) {
        const float *g = do_ + (size_t)t * Tq * Dv;
        if (dp) /* dP += dO V^T */
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, Tq, Tk, Dv, 1.0f, g, Dv,
                        v + (size_t)t * Tk * Dv, Dv, 1.0f, dp + (size_t)t * Tq * Tk, Tk);
        if (dv) /* dV += P^T dO */
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, Tk, Dv, Tq, 1.0f,
                        p + (size_t)t * Tq * Tk, Tk, g, Dv, 1.0f, dv + (size_t)t * Tk * Dv, Dv);
    }
}

static void attention_mix_backward(dfl_ctx *ctx, dfl_node *nd)
{
    dfl_tensor *p = nd->in[0], *v = nd->in[1];
    float *dp = dfl_grad_of(ctx, p), *dv = dfl_grad_of(ctx, v);
    if (!dp && !dv) return;
    dfl_k_attention_mix_bwd(p->data, v->data, nd->out->grad, dp, dv, p->shape[0] * p->shape[1],
                            p->shape[2], p->shape[3], v->shape[3]);
}

dfl_tensor *dfl_attention_mix(dfl_ctx *ctx, dfl_tensor *p, dfl_tensor *v)
{
    if (!ctx || !p || !v) return NULL;
    char s1[64], s2[64];
    if (p->ndim != 4 || v->ndim != 4 || v->shape[0] != p->shape[0] || v->shape[1] != p->shape[1] ||
        v->shape[2] != p->shape[3]) {
        dfl_fail(DFL_ERR_SHAPE, "attention_mix: probabilities %s and v %s disagree (need P (B,H,Tq,Tk), v (B,H,Tk,Dv))",
                 dfl_shape_str(p, s1, sizeof s1), dfl_shape_str(v, s2, sizeof s2));
        return NULL;
    }
    int oshape[4] = {p->shape[0], p->shape[1], p->shape[2], v->shape[3]};
    dfl_tensor *in[2] = {p, v};
    dfl_tensor *out = dfl_op_output(ctx, 4, oshape, in, 2);
    if (!out) return NULL;
    dfl_k_attention_mix_fwd(p->data, v->data, out->data, p->shape[0] * p->shape[1], p->shape[2],
                            p->shape[3], v->shape[3]);
    dfl_tape_push(ctx, attention_mix_backward, "attention_mix", out, in, 2);
    return out;
}

/* ------------------------------------------------------------------ split / merge heads */

/* (B, T, H, Dh) <-> (B, H, T, Dh): to_heads = 1 maps x (B,T,H*Dh) to y (B,H,T,Dh), 0 the
 * reverse. acc: 1 accumulate into y (the backward), 0 overwrite. */
static void permute_heads(const float *x, float *y, int B, int T, int H, int Dh, int to_heads,
                          int acc)
{
    long rows = (long)B * T * H;
#pragma omp parallel for schedule(static) if (rows * Dh > (1L << 16))
    for (long r = 0; r < rows; r++) {
        int h = (int)(r % H);
        long bt = r / H;
        int t = (int)(bt % T), b = (int)(bt / T);
        size_t a = (size_t)r * Dh;                                 /* (b, t, h) row */
        size_t c = (((size_t)b * H + h) * T + t) * (size_t)Dh;     /* (b, h, t) row */
        const float *src = x + (to_heads ? a : c);
        float *dst = y + (to_heads ? c : a);
        if (acc)
            for (int i = 0; i < Dh; i++) dst[i] += src[i];
        else
            memcpy(dst, src, (size_t)Dh * sizeof(float));
    }
}

static void split_heads_backward(dfl_ctx *ctx, dfl_node *nd)
{
    float *dx = dfl_grad_of(ctx, nd->in[0]);
    const dfl_tensor *y = nd->out; /* (B, H, T, Dh) */
    if (dx) permute_heads(y->grad, dx, y->shape[0], y->shape[2], y->shape[1], y->shape[3], 0, 1);
}

dfl_tensor *dfl_split_heads(dfl_ctx *ctx, dfl_tensor *x, int H)
{
    if (!ctx || !x) return NULL;
    char s1[64];
    if (H < 1) {
        dfl_fail(DFL_ERR_ARG, "split_heads: head count %d must be >= 1", H);
        return NULL;
    }
    if (x->ndim != 3 || x->shape[2] % H != 0) {
        dfl_fail(DFL_ERR_SHAPE, "split_heads: input %s must be (B,T,H*Dh) with H = %d dividing the last dim",
                 dfl_shape_str(x, s1, sizeof s1), H);
        return NULL;
    }
    int B = x->shape[0], T = x->shape[1], Dh = x->shape[2] / H;
    int shape[4] = {B, H, T, Dh};
    dfl_tensor *in[1] = {x};
    dfl_tensor *out = dfl_op_output(ctx, 4, shape, in, 1);
    if (!out) return NULL;
    permute_heads(x->data, out->data, B, T, H, Dh, 1, 0);
    dfl_tape_push(ctx, split_heads_backward, "split_heads", out, in, 1);
    return out;
}

static void merge_heads_backward(dfl_ctx *ctx, dfl_node *nd)
{
    dfl_tensor *x = nd->in[0]; /* (B, H, T, Dh) */
    float *dx = dfl_grad_of(ctx, x);
    if (dx)
        permute_heads(nd->out->grad, dx, x->shape[0], x->shape[2], x->shape[1], x->shape[3], 1, 1);
}

dfl_tensor *dfl_merge_heads(dfl_ctx *ctx, dfl_tensor *x)
{
    if (!ctx || !x) return NULL;
    char s1[64];
    if (x->ndim != 4) {
        dfl_fail(DFL_ERR_SHAPE, "merge_heads: input %s must be (B,H,T,Dh)",
                 dfl_shape_str(x, s1, sizeof s1));
        return NULL;
    }
    int B = x->shape[0], H = x->shape[1], T = x->shape[2], Dh = x->shape[3];
    int shape[3] = {B, T, H * Dh};
    dfl_tensor *in[1] = {x};
    dfl_tensor *out = dfl_op_output(ctx, 3, shape, in, 1);
    if (!out) return NULL;
    permute_heads(x->data, out->data, B, T, H, Dh, 0, 0);
    dfl_tape_push(ctx, merge_heads_backward, "merge_heads", out, in, 1);
    return out;
}
