/* Elementwise ops: SiLU, add/sub/mul with NumPy broadcasting, scale, per-channel add
 * (DESIGN section 3, "Kernels").
 *
 * Loops are plain so that -O3 -march=native vectorises them; OpenMP is used only for large
 * tensors (more than 1<<15 elements). Broadcasting collapses the 4-D index space first
 * (dropping size-1 dims and merging dims that are contiguous in both operands), so the inner
 * loop is a contiguous run in which each operand either advances (stride 1) or is a constant
 * (stride 0). */
#include "difflow/kernels.h"
#include "difflow/ops.h"
#include "vmath.h"

#include <math.h>
#include <stdint.h>
#include <string.h>

#define PAR_MIN (1L << 15)
#define CHUNK 8192L

/* Keep the vectorised run loops out of their chunked (OpenMP) callers, and exp_vec in them. */
#if defined(__GNUC__)
#define NOINLINE __attribute__((noinline))
#define ALWAYS_INLINE __attribute__((always_inline))
#else
#define NOINLINE
#define ALWAYS_INLINE
#endif

/* ------------------------------------------------------------------ SiLU */

NOINLINE static void silu_run(const float *restrict x, float *restrict y, long n)
{
    for (long i = 0; i < n; i++) {
        float v = x[i];
        y[i] = v / (1.0f + exp_vec(-v));
    }
}

NOINLINE static void silu_bwd_run(const float *restrict x, const float *restrict dy, float *restrict dx,
                         long n)
{
    for (long i = 0; i < n; i++) {
        float v = x[i];
        float s = 1.0f / (1.0f + exp_vec(-v));
        dx[i] += dy[i] * s * (1.0f + v * (1.0f - s));
    }
}

void dfl_k_silu_fwd(const float *x, float *y, size_t n)
{
    long ln = (long)n;
#pragma omp parallel for schedule(static) if (ln > PAR_MIN)
    for (long c = 0; c < ln; c += CHUNK)
        silu_run(x + c, y + c, c + CHUNK < ln ? CHUNK : ln - c);
}

void dfl_k_silu_bwd(const float *x, const float *dy, float *dx, size_t n)
{
    long ln = (long)n;
#pragma omp parallel for schedule(static) if (ln > PAR_MIN)
    for (long c = 0; c < ln; c += CHUNK)
        silu_bwd_run(x + c, dy + c, dx + c, c + CHUNK < ln ? CHUNK : ln - c);
}

static void silu_backward(dfl_ctx *ctx, dfl_node *nd)
{
    float *dx = dfl_grad_of(ctx, nd->in[0]);
    if (dx) dfl_k_silu_bwd(nd->in[0]->data, nd->out->grad, dx, nd->out->n);
}

dfl_tensor *dfl_silu(dfl_ctx *ctx, dfl_tensor *x)
{
    if (!ctx || !x) return NULL;
    dfl_tensor *in[1] = {x};
    dfl_tensor *out = dfl_op_output(ctx, x->ndim, x->shape, in, 1);
    if (!out) return NULL;
    dfl_k_silu_fwd(x->data, out->data, x->n);
    dfl_tape_push(ctx, silu_backward, "silu", out, in, 1);
    return out;
}

/* ------------------------------------------------------------------ broadcasting */

int dfl_k_broadcast_shape(int andim, const int *ash, int bndim, const int *bsh, int ysh4[4])
{
    int nd = andim > bndim ? andim : bndim;
    if (andim < 0 || bndim < 0 || nd > 4) return -1;
    for (int d = 0; d < 4; d++) ysh4[d] = 1;
    for (int i = 0; i < nd; i++) {
        int da = i < andim ? ash[andim - 1 - i] : 1;
        int db = i < bndim ? bsh[bndim - 1 - i] : 1;
        if (da != db && da != 1 && db != 1) return -1;
        ysh4[3 - i] = da == 1 ? db : da;
    }
    return nd;
}

/* Collapsed iteration space: len[0..3] (len[3] innermost), element strides of a and b. */
typedef struct {
    long len[4], sa[4], sb[4];
} bc_iter;

static void bc_setup(const int ash[4], const int bsh[4], const int ysh[4], bc_iter *it)
{
    long sa[4], sb[4], ra = 1, rb = 1;
    for (int d = 3; d >= 0; d--) {
        sa[d] = ash[d] == 1 ? 0 : ra;
        sb[d] = bsh[d] == 1 ? 0 : rb;
        ra *= ash[d];
        rb *= bsh[d];
    }
    long len[4], ca[4], cb[4];
    int nd = 0;
    for (int d = 0; d < 4; d++) {
        if (ysh[d] == 1) continue;
        if (nd > 0 && ca[nd - 1] == sa[d] * ysh[d] && cb[nd - 1] == sb[d] * ysh[d]) {
            len[nd - 1] *= ysh[d];
            ca[nd - 1] = sa[d];
            cb[nd - 1] = sb[d];
        } else {
            len[nd] = ysh[d];
            ca[nd] = sa[d];
            cb[nd] = sb[d];
            nd++;
        }
    }
    for (int d = 0; d < 4; d++) {
        int s = d - (4 - nd); /* right-align the nd collapsed dims */
        it->len[d] = s >= 0 ? len[s] : 1;
        it->sa[d] = s >= 0 ? ca[s] : 0;
        it->sb[d] = s >= 0 ? cb[s] : 0;
    }
}

/* Task t of (outer index, inner chunk): offsets into a, b and y, and the run [j0, j1). */
static void bc_task(const bc_iter *it, long nch, long t, long *oa, long *ob, long *oy, long *j0,
                    long *j1)
{
    long o = t / nch, ch = t % nch;
    long i2 = o % it->len[2], r = o / it->len[2];
    long i1 = r % it->len[1], i0 = r / it->len[1];
    *j0 = ch * CHUNK;
    *j1 = *j0 + CHUNK < it->len[3] ? *j0 + CHUNK : it->len[3];
    *oa = i0 * it->sa[0] + i1 * it->sa[1] + i2 * it->sa[2] + *j0 * it->sa[3];
    *ob = i0 * it->sb[0] + i1 * it->sb[1] + i2 * it->sb[2] + *j0 * it->sb[3];
    *oy = o * it->len[3] + *j0;
}

static void run_fwd(dfl_k_binop op, const float *a, long sa, const float *b, long sb, float *y,
                    long n)
{
#define DFL_RUN(EXPR)                                                                     \
    do {                                                                                  \
        if (sa && sb) {                                                                   \
            for (long j = 0; j < n; j++) { float av = a[j], bv = b[j]; y[j] = (EXPR); }   \
        } else if (sa) {                                                                  \
            float bv = b[0];                                                              \
            for (long j = 0; j < n; j++) { float av = a[j]; y[j] = (EXPR); }              \
        } else if (sb) {                                                                  \
            float av = a[0];                                                              \
            for (long j = 0; j < n; j++) { float bv = b[j]; y[j] = (EXPR); }              \
        } else {                                                                          \
            float av = a[0], bv = b[0];                                                   \
            for (long j = 0; j < n; j++) y[j] = (EXPR);                                   \
        }                                                                                 \
    } while (0)
    switch (op) {
    case DFL_K_ADD: DFL_RUN(av + bv); break;
    case DFL_K_SUB: DFL_RUN(av - bv); break;
    case DFL_K_MUL: DFL_RUN(av * bv); break;
    }
#undef DFL_RUN
}

void dfl_k_binary_fwd(dfl_k_binop op, const float *a, const int ash4[4], const float *b,
                      const int bsh4[4], float *y, const int ysh4[4])
{
    bc_iter it;
    bc_setup(ash4, bsh4, ysh4, &it);
    long nch = (it.len[3] + CHUNK - 1) / CHUNK;
    long outer = it.len[0] * it.len[1] * it.len[2];
    long ntask = outer * nch, n = outer * it.len[3];
#pragma omp parallel for schedule(static) if (n > PAR_MIN)
    for (long t = 0; t < ntask; t++) {
        long oa, ob, oy, j0, j1;
        bc_task(&it, nch, t, &oa, &ob, &oy, &j0, &j1);
        run_fwd(op, a + oa, it.sa[3], b + ob, it.sb[3], y + oy, j1 - j0);
    }
}

/* g[j sg] += sign dy[j] (o ? o[j so] : 1) for j < n. */
static void run_acc(float *g, long sg, const float *dy, const float *o, long so, float sign, long n)
{
    if (sg) {
        if (!o) {
            for (long j = 0; j < n; j++) g[j] += sign * dy[j];
        } else if (so) {
            for (long j = 0; j < n; j++) g[j] += sign * dy[j] * o[j];
        } else {
            float ov = sign * o[0];
            for (long j = 0; j < n; j++) g[j] += ov * dy[j];
        }
        return;
    }
    float s = 0.0f;
    if (o && so) {
#pragma omp simd reduction(+ : s)
        for (long j = 0; j < n; j++) s += dy[j] * o[j];
    } else {
#pragma omp simd reduction(+ : s)
        for (long j = 0; j < n; j++) s += dy[j];
        if (o) s *= o[0];
    }
    g[0] += sign * s;
}

/* Accumulate the gradient of one operand (which = 0: a, 1: b). */
static void bc_grad(dfl_k_binop op, const bc_iter *it, int which, const float *a, const float *b,
                    const float *dy, float *g, int full)
{
    long nch = (it->len[3] + CHUNK - 1) / CHUNK;
    long outer = it->len[0] * it->len[1] * it->len[2];
    long ntask = outer * nch, n = outer * it->len[3];
    float sign = (op == DFL_K_SUB && which == 1) ? -1.0f : 1.0f;
    const float *other = op == DFL_K_MUL ? (which ? a : b) : NULL;
    long sg = which ? it->sb[3] : it->sa[3], so = which ? it->sa[3] : it->sb[3];
    /* A broadcast target is summed into from several tasks: keep that serial. */
#pragma omp parallel for schedule(static) if (full && n > PAR_MIN)
    for (long t = 0; t < ntask; t++) {
        long oa, ob, oy, j0, j1;
        bc_task(it, nch, t, &oa, &ob, &oy, &j0, &j1);
        long og = which ? ob : oa, oo = which ? oa : ob;
        run_acc(g + og, sg, dy + oy, other ? other + oo : NULL, so, sign, j1 - j0);
    }
}

void dfl_k_binary_bwd(dfl_k_binop op, const float *a, const int ash4[4], const float *b,
                      const int bsh4[4], const float *dy, const int ysh4[4], float *da, float *db)
{
    bc_iter it;
    bc_setup(ash4, bsh4, ysh4, &it);
    size_t ny = dfl_shape_numel(4, ysh4);
    if (da) bc_grad(op, &it, 0, a, b, dy, da, dfl_shape_numel(4, ash4) == ny);
    if (db) bc_grad(op, &it, 1, a, b, dy, db, dfl_shape_numel(4, bsh4) == ny);
}

static void pad4(const dfl_tensor *t, int sh4[4])
{
    for (int d = 0; d < 4; d++) sh4[d] = 1;
    for (int i = 0; i < t->ndim; i++) sh4[4 - t->ndim + i] = t->shape[i];
}

static void binary_backward(dfl_ctx *ctx, dfl_node *nd)
{
    dfl_tensor *a = nd->in[0], *b = nd->in[1];
    int ash[4], bsh[4], ysh[4];
    pad4(a, ash);
    pad4(b, bsh);
    pad4(nd->out, ysh);
    float *da = dfl_grad_of(ctx, a), *db = dfl_grad_of(ctx, b);
    dfl_k_binary_bwd((dfl_k_binop)nd->iarg[0], a->data, ash, b->data, bsh, nd->out->grad, ysh, da,
                     db);
}

static const char *const binop_name[] = {"add", "sub", "mul"};

static dfl_tensor *binary_op(dfl_ctx *ctx, dfl_k_binop op, dfl_tensor *a, dfl_tensor *b)
{
    if (!ctx || !a || !b) return NULL;
    int ysh[4], ash[4], bsh[4];
    int nd = dfl_k_broadcast_shape(a->ndim, a->shape, b->ndim, b->shape, ysh);
    if (nd < 0) {
        char s1[64], s2[64];
        dfl_fail(DFL_ERR_SHAPE, "%s: shapes %s and %s do not broadcast", binop_name[op],
                 dfl_shape_str(a, s1, sizeof s1), dfl_shape_str(b, s2, sizeof s2));
        return NULL;
    }
    pad4(a, ash);
    pad4(b, bsh);
    dfl_tensor *in[2] = {a, b};
    dfl_tensor *out = dfl_op_output(ctx, nd, ysh + 4 - nd, in, 2);
    if (!out) return NULL;
    dfl_k_binary_fwd(op, a->data, ash, b->data, bsh, out->data, ysh);
    dfl_node *node = dfl_tape_push(ctx, binary_backward, binop_name[op], out, in, 2);
    if (node) node->iarg[0] = (int)op;
    return out;
}

dfl_tensor *dfl_add(dfl_ctx *ctx, dfl_tensor *a, dfl_tensor *b) { return binary_op(ctx, DFL_K_ADD, a, b); }
dfl_tensor *dfl_sub(dfl_ctx *ctx, dfl_tensor *a, dfl_tensor *b) { return binary_op(ctx, DFL_K_SUB, a, b); }
dfl_tensor *dfl_mul(dfl_ctx *ctx, dfl_tensor *a, dfl_tensor *b) { return binary_op(ctx, DFL_K_MUL, a, b); }

/* ------------------------------------------------------------------ scale */

void dfl_k_scale_fwd(const float *x, float s, float *y, size_t n)
{
    long ln = (long)n;
#pragma omp parallel for schedule(static) if (ln > PAR_MIN)
    for (long i = 0; i < ln; i++) y[i] = s * x[i];
}

void dfl_k_axpy(float s, const float *dy, float *dx, size_t n)
{
    long ln = (long)n;
#pragma omp parallel for schedule(static) if (ln > PAR_MIN)
    for (long i = 0; i < ln; i++) dx[i] += s * dy[i];
}

static void scale_backward(dfl_ctx *ctx, dfl_node *nd)
{
    float *dx = dfl_grad_of(ctx, nd->in[0]);
    if (dx) dfl_k_axpy(nd->farg[0], nd->out->grad, dx, nd->out->n);
}

dfl_tensor *dfl_scale(dfl_ctx *ctx, dfl_tensor *x, float s)
{
    if (!ctx || !x) return NULL;
    dfl_tensor *in[1] = {x};
    dfl_tensor *out = dfl_op_output(ctx, x->ndim, x->shape, in, 1);
    if (!out) return NULL;
    dfl_k_scale_fwd(x->data, s, out->data, x->n);
    dfl_node *nd = dfl_tape_push(ctx, scale_backward, "scale", out, in, 1);
    if (nd) nd->farg[0] = s;
    return out;
}

/* ------------------------------------------------------------------ add_channel */

void dfl_k_add_channel_fwd(const float *x, const float *v, float *y, int P, int S)
{
#pragma omp parallel for schedule(static) if ((long)P * S > PAR_MIN)
    for (int p = 0; p < P; p++) {
        const float *xp = x + (size_t)p * S;
        float *yp = y + (size_t)p * S, vp = v[p];
        for (int i = 0; i < S; i++) yp[i] = xp[i] + vp;
    }
}

void dfl_k_add_channel_bwd(const float *dy, float *dx, float *dv, int P, int S)
{
#pragma omp parallel for schedule(static) if ((long)P * S > PAR_MIN)
    for (int p = 0; p < P; p++) {
        const float *g = dy + (size_t)p * S;
        if (dx) {
            float *d = dx + (size_t)p * S;
            for (int i = 0; i < S; i++) d[i] += g[i];
        }
        if (dv) {
            float s = 0.0f;
#pragma omp simd reduction(+ : s)
            for (int i = 0; i < S; i++) s += g[i];
            dv[p] += s;
        }
    }
}

static void add_channel_backward(dfl_ctx *ctx, dfl_node *nd)
{
    dfl_tensor *x = nd->in[0], *v = nd->in[1];
    float *dx = dfl_grad_of(ctx, x), *dv = dfl_grad_of(ctx, v);
    int P = (int)v->n, S = (int)(x->n / v->n);
    dfl_k_add_channel_bwd(nd->out->grad, dx, dv, P, S);
}

dfl_tensor *dfl_add_channel(dfl_ctx *ctx, dfl_tensor *x, dfl_tensor *v)
{
    if (!ctx || !x || !v) return NULL;
    if (x->ndim < 2 || v->ndim != 2 || v->shape[0] != x->shape[0] || v->shape[1] != x->shape[1]) {
        char s1[64], s2[64];
        dfl_fail(DFL_ERR_SHAPE, "add_channel: input %s and per-channel values %s disagree (need x (N,C,...), v (N,C))",
                 dfl_shape_str(x, s1, sizeof s1), dfl_shape_str(v, s2, sizeof s2));
        return NULL;
    }
    dfl_tensor *in[2] = {x, v};
    dfl_tensor *out = dfl_op_output(ctx, x->ndim, x->shape, in, 2);
    if (!out) return NULL;
    int P = (int)v->n, S = (int)(x->n / v->n);
    dfl_k_add_channel_fwd(x->data, v->data, out->data, P, S);
    dfl_tape_push(ctx, add_channel_backward, "add_channel", out, in, 2);
    return out;
}
