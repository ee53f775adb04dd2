/* Ops of the normalizing flows (ops.h, "flow ops"): elementwise maps, per-sample sums, slicing,
 * the 2x2 squeeze and small dense-matrix ops (LU-composed weight, inverse, ln|det|) computed in
 * double (reference/flows.md 2.3 and pitfall 8). The matrices here are C x C with C the channel
 * count of a flow level (<= a few hundred), so plain O(C^3) loops are enough. */
#include "difflow/ops.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define PAR_MIN (1L << 15)

/* ------------------------------------------------------------------ elementwise */

enum { U_EXP, U_LOG, U_TANH, U_SIGMOID, U_RELU, U_SOFTPLUS, U_LOGIT };
static const char *const unary_name[] = {"exp", "log", "tanh", "sigmoid", "relu", "softplus", "logit"};

static inline float softplus_f(float v) { return fmaxf(v, 0.0f) + log1pf(expf(-fabsf(v))); }
static inline float sigmoid_f(float v)
{
    if (v >= 0) return 1.0f / (1.0f + expf(-v));
    float e = expf(v);
    return e / (1.0f + e);
}

/* One loop per map (the switch outside the loop), in a non-inlined function with restrict
 * pointers called on chunks from the OpenMP loop (GCC drops restrict in outlined OpenMP bodies),
 * so the simple maps (ReLU, exp' = y, tanh', sigmoid') vectorise. */
#define CHUNK 8192L
#if defined(__GNUC__)
#define NOINLINE __attribute__((noinline))
#else
#define NOINLINE
#endif

#define UNARY_LOOP(EXPR)                  \
    for (long i = 0; i < n; i++) {        \
        float v = x[i];                   \
        y[i] = (EXPR);                    \
    }

NOINLINE static void unary_fwd_run(int op, const float *restrict x, float *restrict y, long n)
{
    switch (op) {
    case U_EXP: UNARY_LOOP(expf(v)) break;
    case U_LOG: UNARY_LOOP(logf(v)) break;
    case U_TANH: UNARY_LOOP(tanhf(v)) break;
    case U_SIGMOID: UNARY_LOOP(sigmoid_f(v)) break;
    case U_RELU: UNARY_LOOP(v > 0.0f ? v : 0.0f) break;
    case U_SOFTPLUS: UNARY_LOOP(softplus_f(v)) break;
    default: UNARY_LOOP(logf(v) - log1pf(-v)) break;
    }
}

/* dx[i] += dy[i] * f'(x[i]), with f' written from x, or y = f(x) */
#define UNARY_BWD_LOOP(DERIV) \
    for (long i = 0; i < n; i++) dx[i] += dy[i] * (DERIV);

NOINLINE static void unary_bwd_run(int op, const float *restrict x, const float *restrict y,
                                   const float *restrict dy, float *restrict dx, long n)
{
    switch (op) {
    case U_EXP: UNARY_BWD_LOOP(y[i]) break;
    case U_LOG: UNARY_BWD_LOOP(1.0f / x[i]) break;
    case U_TANH: UNARY_BWD_LOOP(1.0f - y[i] * y[i]) break;
    case U_SIGMOID: UNARY_BWD_LOOP(y[i] * (1.0f - y[i])) break;
    case U_RELU: /* a select, not a multiply by a 0/1 branch: vectorises */
        for (long i = 0; i < n; i++) dx[i] += x[i] > 0.0f ? dy[i] : 0.0f;
        break;
    case U_SOFTPLUS: UNARY_BWD_LOOP(sigmoid_f(x[i])) break;
    default: UNARY_BWD_LOOP(1.0f / (x[i] * (1.0f - x[i]))) break;
    }
}

static void unary_fwd(int op, const float *x, float *y, long n)
{
#pragma omp parallel for schedule(static) if (n > PAR_MIN)
    for (long c = 0; c < n; c += CHUNK) unary_fwd_run(op, x + c, y + c, c + CHUNK < n ? CHUNK : n - c);
}

static void unary_backward(dfl_ctx *ctx, dfl_node *nd)
{
    float *dx = dfl_grad_of(ctx, nd->in[0]);
    if (!dx) return;
    const float *x = nd->in[0]->data, *y = nd->out->data, *dy = nd->out->grad;
    long n = (long)nd->out->n;
    int op = nd->iarg[0];
#pragma omp parallel for schedule(static) if (n > PAR_MIN)
    for (long c = 0; c < n; c += CHUNK)
        unary_bwd_run(op, x + c, y + c, dy + c, dx + c, c + CHUNK < n ? CHUNK : n - c);
}

static dfl_tensor *unary(dfl_ctx *ctx, dfl_tensor *x, int op)
{
    if (!ctx || !x) return NULL;
    dfl_tensor *in[1] = {x};
    dfl_tensor *out = dfl_op_output(ctx, x->ndim, x->shape, in, 1);
    if (!out) return NULL;
    unary_fwd(op, x->data, out->data, (long)x->n);
    dfl_node *nd = dfl_tape_push(ctx, unary_backward, unary_name[op], out, in, 1);
    if (nd) nd->iarg[0] = op;
    return out;
}

dfl_tensor *dfl_exp(dfl_ctx *ctx, dfl_tensor *x) { return unary(ctx, x, U_EXP); }
dfl_tensor *dfl_log(dfl_ctx *ctx, dfl_tensor *x) { return unary(ctx, x, U_LOG); }
dfl_tensor *dfl_tanh(dfl_ctx *ctx, dfl_tensor *x) { return unary(ctx, x, U_TANH); }
dfl_tensor *dfl_sigmoid(dfl_ctx *ctx, dfl_tensor *x) { return unary(ctx, x, U_SIGMOID); }
dfl_tensor *dfl_relu(dfl_ctx *ctx, dfl_tensor *x) { return unary(ctx, x, U_RELU); }
dfl_tensor *dfl_softplus(dfl_ctx *ctx, dfl_tensor *x) { return unary(ctx, x, U_SOFTPLUS); }
dfl_tensor *dfl_logit(dfl_ctx *ctx, dfl_tensor *x) { return unary(ctx, x, U_LOGIT); }

static void affine_backward(dfl_ctx *ctx, dfl_node *nd)
{
    float *dx = dfl_grad_of(ctx, nd->in[0]);
    if (!dx) return;
    float a = nd->farg[0];
    const float *dy = nd->out->grad;
    for (size_t i = 0; i < nd->out->n; i++) dx[i] += a * dy[i];
}

dfl_tensor *dfl_affine_scalar(dfl_ctx *ctx, dfl_tensor *x, float a, float b)
{
    if (!ctx || !x) return NULL;
    dfl_tensor *in[1] = {x};
    dfl_tensor *out = dfl_op_output(ctx, x->ndim, x->shape, in, 1);
    if (!out) return NULL;
    for (size_t i = 0; i < x->n; i++) out->data[i] = a * x->data[i] + b;
    dfl_node *nd = dfl_tape_push(ctx, affine_backward, "affine_scalar", out, in, 1);
    if (nd) nd->farg[0] = a;
    return out;
}

/* ------------------------------------------------------------------ per-sample sum, reshape */

static void sum_ps_backward(dfl_ctx *ctx, dfl_node *nd)
{
    float *dx = dfl_grad_of(ctx, nd->in[0]);
    if (!dx) return;
    int N = nd->out->shape[0];
    size_t per = nd->in[0]->n / (size_t)N;
    for (int s = 0; s < N; s++) {
        float g = nd->out->grad[s];
        for (size_t i = 0; i < per; i++) dx[(size_t)s * per + i] += g;
    }
}

dfl_tensor *dfl_sum_per_sample(dfl_ctx *ctx, dfl_tensor *x)
{
    if (!ctx || !x) return NULL;
    if (x->ndim < 1 || x->shape[0] < 1) {
        dfl_fail(DFL_ERR_SHAPE, "sum_per_sample: input needs a leading batch dim");
        return NULL;
    }
    int N = x->shape[0];
    dfl_tensor *in[1] = {x};
    dfl_tensor *out = dfl_op_output(ctx, 1, &N, in, 1);
    if (!out) return NULL;
    size_t per = x->n / (size_t)N;
    for (int s = 0; s < N; s++) {
        double acc = 0.0;
        const float *p = x->data + (size_t)s * per;
        for (size_t i = 0; i < per; i++) acc += p[i];
        out->data[s] = (float)acc;
    }
    dfl_tape_push(ctx, sum_ps_backward, "sum_per_sample", out, in, 1);
    return out;
}

static void copy_backward(dfl_ctx *ctx, dfl_node *nd)
{
    float *dx = dfl_grad_of(ctx, nd->in[0]);
    if (!dx) return;
    for (size_t i = 0; i < nd->out->n; i++) dx[i] += nd->out->grad[i];
}

dfl_tensor *dfl_reshape(dfl_ctx *ctx, dfl_tensor *x, int ndim, const int *shape)
{
    if (!ctx || !x) return NULL;
    if (ndim < 1 || ndim > DFL_MAX_DIMS || dfl_shape_numel(ndim, shape) != x->n) {
        char s[64];
        dfl_fail(DFL_ERR_SHAPE, "reshape: %s has %zu elements, the new shape a different count",
                 dfl_shape_str(x, s, sizeof s), x->n);
        return NULL;
    }
    dfl_tensor *in[1] = {x};
    dfl_tensor *out = dfl_op_output(ctx, ndim, shape, in, 1);
    if (!out) return NULL;
    memcpy(out->data, x->data, x->n * sizeof(float));
    dfl_tape_push(ctx, copy_backward, "reshape", out, in, 1);
    return out;
}

/* ------------------------------------------------------------------ slicing */

static void slice_backward(dfl_ctx *ctx, dfl_node *nd)
{
    dfl_tensor *x = nd->in[0];
    float *dx = dfl_grad_of(ctx, x);
    if (!dx) return;
    int N = x->shape[0], C = x->shape[1], c0 = nd->iarg[0], c1 = nd->iarg[1];
    size_t S = x->n / ((size_t)N * C), w = (size_t)(c1 - c0) * S;
    for (int s = 0; s < N; s++) {
        float *d = dx + ((size_t)s * C + c0) * S;
        const float *g = nd->out->grad + (size_t)s * w;
        for (size_t i = 0; i < w; i++) d[i] += g[i];
    }
}

dfl_tensor *dfl_slice_channels(dfl_ctx *ctx, dfl_tensor *x, int c0, int c1)
{
    if (!ctx || !x) return NULL;
    if (x->ndim < 2 || c0 < 0 || c1 <= c0 || c1 > x->shape[1]) {
        char s[64];
        dfl_fail(DFL_ERR_SHAPE, "slice_channels: [%d, %d) out of range for %s", c0, c1,
                 dfl_shape_str(x, s, sizeof s));
        return NULL;
    }
    int shape[DFL_MAX_DIMS];
    memcpy(shape, x->shape, sizeof shape);
    shape[1] = c1 - c0;
    dfl_tensor *in[1] = {x};
    dfl_tensor *out = dfl_op_output(ctx, x->ndim, shape, in, 1);
    if (!out) return NULL;
    int N = x->shape[0], C = x->shape[1];
    size_t S = x->n / ((size_t)N * C), w = (size_t)(c1 - c0) * S;
    for (int s = 0; s < N; s++)
        memcpy(out->data + (size_t)s * w, x->data + ((size_t)s * C + c0) * S, w * sizeof(float));
    dfl_node *nd = dfl_tape_push(ctx, slice_backward, "slice_channels", out, in, 1);
    if (nd) {
        nd->iarg[0] = c0;
        nd->iarg[1] = c1;
    }
    return out;
}

static void take_alt_backward(dfl_ctx *ctx, dfl_node *nd)
{
    dfl_tensor *x = nd->in[0];
    float *dx = dfl_grad_of(ctx, x);
    if (!dx) return;
    int N = x->shape[0], D = x->shape[1], start = nd->iarg[0], K = nd->out->shape[1];
    for (int s = 0; s < N; s++)
        for (int k = 0; k < K; k++) dx[(size_t)s * D + start + 2 * k] += nd->out->grad[(size_t)s * K + k];
}

dfl_tensor *dfl_take_alternate(dfl_ctx *ctx, dfl_tensor *x, int start)
{
    if (!ctx || !x) return NULL;
    if (x->ndim != 2 || (start != 0 && start != 1) || x->shape[1] < start + 1) {
        char s[64];
        dfl_fail(DFL_ERR_SHAPE, "take_alternate: input %s must be (N, D) with D > start = %d",
                 dfl_shape_str(x, s, sizeof s), start);
        return NULL;
    }
    int N = x->shape[0], D = x->shape[1], K = (D - start + 1) / 2;
    int shape[2] = {N, K};
    dfl_tensor *in[1] = {x};
    dfl_tensor *out = dfl_op_output(ctx, 2, shape, in, 1);
    if (!out) return NULL;
    for (int s = 0; s < N; s++)
        for (int k = 0; k < K; k++) out->data[(size_t)s * K + k] = x->data[(size_t)s * D + start + 2 * k];
    dfl_node *nd = dfl_tape_push(ctx, take_alt_backward, "take_alternate", out, in, 1);
    if (nd) nd->iarg[0] = start;
    return out;
}

static void merge_alt_backward(dfl_ctx *ctx, dfl_node *nd)
{
    int N = nd->out->shape[0], D = nd->out->shape[1];
    for (int p = 0; p < 2; p++) {
        dfl_tensor *t = nd->in[p];
        float *d = dfl_grad_of(ctx, t);
        if (!d) continue;
        int K = t->shape[1];
        for (int s = 0; s < N; s++)
            for (int k = 0; k < K; k++) d[(size_t)s * K + k] += nd->out->grad[(size_t)s * D + p + 2 * k];
    }
}

dfl_tensor *dfl_merge_alternate(dfl_ctx *ctx, dfl_tensor *even, dfl_tensor *odd)
{
    if (!ctx || !even || !odd) return NULL;
    if (even->ndim != 2 || odd->ndim != 2 || even->shape[0] != odd->shape[0] ||
        (even->shape[1] != odd->shape[1] && even->shape[1] != odd->shape[1] + 1)) {
        char s1[64], s2[64];
        dfl_fail(DFL_ERR_SHAPE, "merge_alternate: %s and %s are not an even/odd partition",
                 dfl_shape_str(even, s1, sizeof s1), dfl_shape_str(odd, s2, sizeof s2));
        return NULL;
    }
    int N = even->shape[0], D = even->shape[1] + odd->shape[1];
    int shape[2] = {N, D};
    dfl_tensor *in[2] = {even, odd};
    dfl_tensor *out = dfl_op_output(ctx, 2, shape, in, 2);
    if (!out) return NULL;
    for (int p = 0; p < 2; p++) {
        int K = in[p]->shape[1];
        for (int s = 0; s < N; s++)
            for (int k = 0; k < K; k++) out->data[(size_t)s * D + p + 2 * k] = in[p]->data[(size_t)s * K + k];
    }
    dfl_tape_push(ctx, merge_alt_backward, "merge_alternate", out, in, 2);
    return out;
}

/* ------------------------------------------------------------------ squeeze */

/* Squeeze index map on one plane set: for dir 0 y = squeeze(x) (acc 0: assign, 1: add),
 * for dir 1 the inverse. Shapes refer to the unsqueezed tensor (N, C, H, W). */
static void squeeze_map(const float *src, float *dst, int N, int C, int H, int W, int to_squeezed, int acc)
{
    int Ho = H / 2, Wo = W / 2;
#pragma omp parallel for collapse(2) schedule(static) if ((long)N * C * H * W > PAR_MIN)
    for (int n = 0; n < N; n++)
        for (int c = 0; c < C; c++)
            for (int dy = 0; dy < 2; dy++)
                for (int dx = 0; dx < 2; dx++) {
                    size_t co = (size_t)n * 4 * C + (size_t)c * 4 + 2 * dy + dx;
                    for (int i = 0; i < Ho; i++)
                        for (int j = 0; j < Wo; j++) {
                            size_t u = (((size_t)n * C + c) * H + 2 * i + dy) * W + 2 * j + dx;
                            size_t s = (co * Ho + i) * Wo + j;
                            size_t from = to_squeezed ? u : s, to = to_squeezed ? s : u;
                            if (acc) dst[to] += src[from];
                            else dst[to] = src[from];
                        }
                }
}

static void squeeze_backward(dfl_ctx *ctx, dfl_node *nd)
{
    float *dx = dfl_grad_of(ctx, nd->in[0]);
    if (!dx) return;
    int sq = nd->iarg[0];
    const int *us = sq ? nd->in[0]->shape : nd->out->shape; /* unsqueezed shape */
    /* gradient flows in the opposite direction of the forward map */
    squeeze_map(nd->out->grad, dx, us[0], us[1], us[2], us[3], !sq, 1);
}

static dfl_tensor *squeeze_op(dfl_ctx *ctx, dfl_tensor *x, int sq)
{
    if (!ctx || !x) return NULL;
    char s[64];
    if (x->ndim != 4 || (sq && (x->shape[2] % 2 || x->shape[3] % 2)) || (!sq && x->shape[1] % 4)) {
        dfl_fail(DFL_ERR_SHAPE, sq ? "squeeze2x2: input %s must be (N,C,H,W) with H and W even"
                                   : "unsqueeze2x2: input %s must be (N,C,H,W) with C divisible by 4",
                 dfl_shape_str(x, s, sizeof s));
        return NULL;
    }
    int shape[4];
    if (sq) {
        shape[0] = x->shape[0]; shape[1] = 4 * x->shape[1]; shape[2] = x->shape[2] / 2; shape[3] = x->shape[3] / 2;
    } else {
        shape[0] = x->shape[0]; shape[1] = x->shape[1] / 4; shape[2] = x->shape[2] * 2; shape[3] = x->shape[3] * 2;
    }
    dfl_tensor *in[1] = {x};
    dfl_tensor *out = dfl_op_output(ctx, 4, shape, in, 1);
    if (!out) return NULL;
    const int *us = sq ? x->shape : shape;
    squeeze_map(x->data, out->data, us[0], us[1], us[2], us[3], sq, 0);
    dfl_node *nd = dfl_tape_push(ctx, squeeze_backward, sq ? "squeeze2x2" : "unsqueeze2x2", out, in, 1);
    if (nd) nd->iarg[0] = sq;
    return out;
}

dfl_tensor *dfl_squeeze2x2(dfl_ctx *ctx, dfl_tensor *x) { return squeeze_op(ctx, x, 1); }
dfl_tensor *dfl_unsqueeze2x2(dfl_ctx *ctx, dfl_tensor *x) { return squeeze_op(ctx, x, 0); }

/* ------------------------------------------------------------------ dense matrices (double) */

double dfl_logabsdet_d(const double *A, int C, double *rcond_pivot)
{
    double *M = malloc((size_t)C * C * sizeof *M);
    if (!M) return NAN;
    memcpy(M, A, (size_t)C * C * sizeof *M);
    double maxabs = 0.0, minpiv = INFINITY, ld = 0.0;
    for (int i = 0; i < C * C; i++) maxabs = fmax(maxabs, fabs(M[i]));
    for (int k = 0; k < C; k++) {
        int p = k;
        for (int i = k + 1; i < C; i++)
            if (fabs(M[i * C + k]) > fabs(M[p * C + k])) p = i;
        if (p != k)
            for (int j = 0; j < C; j++) {
                double t = M[k * C + j];
                M[k * C + j] = M[p * C + j];
                M[p * C + j] = t;
            }
        double piv = M[k * C + k];
        minpiv = fmin(minpiv, fabs(piv));
        if (piv == 0.0) {
            ld = -INFINITY;
            break;
        }
        ld += log(fabs(piv));
        for (int i = k + 1; i < C; i++) {
            double f = M[i * C + k] / piv;
            for (int j = k; j < C; j++) M[i * C + j] -= f * M[k * C + j];
        }
    }
    free(M);
    if (rcond_pivot) *rcond_pivot = maxabs > 0 ? minpiv / maxabs : 0.0;
    return ld;
}

int dfl_inverse_d(const double *A, int C, double *Ainv)
{
    double *M = malloc((size_t)C * C * sizeof *M);
    if (!M) return -1;
    memcpy(M, A, (size_t)C * C * sizeof *M);
    for (int i = 0; i < C * C; i++) Ainv[i] = 0.0;
    for (int i = 0; i < C; i++) Ainv[i * C + i] = 1.0;
    int rc = 0;
    for (int k = 0; k < C && rc == 0; k++) {
        int p = k;
        for (int i = k + 1; i < C; i++)
            if (fabs(M[i * C + k]) > fabs(M[p * C + k])) p = i;
        if (!(fabs(M[p * C + k]) > 0.0)) { /* zero or NaN pivot */
            rc = -1;
            break;
        }
        if (p != k)
            for (int j = 0; j < C; j++) {
                double t = M[k * C + j]; M[k * C + j] = M[p * C + j]; M[p * C + j] = t;
                t = Ainv[k * C + j]; Ainv[k * C + j] = Ainv[p * C + j]; Ainv[p * C + j] = t;
            }
        double inv = 1.0 / M[k * C + k];
        for (int j = 0; j < C; j++) {
            M[k * C + j] *= inv;
            Ainv[k * C + j] *= inv;
        }
        for (int i = 0; i < C; i++) {
            if (i == k) continue;
            double f = M[i * C + k];
            if (f == 0.0) continue;
            for (int j = 0; j < C; j++) {
                M[i * C + j] -= f * M[k * C + j];
                Ainv[i * C + j] -= f * Ainv[k * C + j];
            }
        }
    }
    free(M);
    return rc;
}

static int square_check(const char *op, dfl_tensor *W)
{
    if (W->ndim != 2 || W->shape[0] != W->shape[1]) {
        char s[64];
        dfl_fail(DFL_ERR_SHAPE, "%s: %s is not a square matrix", op, dfl_shape_str(W, s, sizeof s));
        return 0;
    }
    return 1;
}

static double *to_double(dfl_tensor *t)
{
    double *d = malloc(t->n * sizeof *d);
    if (d)
        for (size_t i = 0; i < t->n; i++) d[i] = t->data[i];
    return d;
}

/* dW += -Y^T G Y^T (Y = W^-1 in saved[0], G = dY). */
static void inverse_backward(dfl_ctx *ctx, dfl_node *nd)
{
    float *dW = dfl_grad_of(ctx, nd->in[0]);
    if (!dW) return;
    int C = nd->out->shape[0];
    const float *Y = nd->out->data, *G = nd->out->grad;
    double *T = malloc((size_t)C * C * sizeof *T);
    if (!T) return;
    /* T = G Y^T */
    for (int i = 0; i < C; i++)
        for (int j = 0; j < C; j++) {
            double a = 0.0;
            for (int k = 0; k < C; k++) a += (double)G[i * C + k] * Y[j * C + k];
            T[i * C + j] = a;
        }
    for (int i = 0; i < C; i++)
        for (int j = 0; j < C; j++) {
            double a = 0.0;
            for (int k = 0; k < C; k++) a += (double)Y[k * C + i] * T[k * C + j];
            dW[i * C + j] -= (float)a;
        }
    free(T);
}

dfl_tensor *dfl_mat_inverse(dfl_ctx *ctx, dfl_tensor *W)
{
    if (!ctx || !W) return NULL;
    if (!square_check("mat_inverse", W)) return NULL;
    int C = W->shape[0];
    double *A = to_double(W), *Ai = malloc((size_t)C * C * sizeof *Ai);
    if (!A || !Ai) {
        free(A); free(Ai);
        dfl_fail(DFL_ERR_NOMEM, "mat_inverse: out of memory");
        return NULL;
    }
    int rc = dfl_inverse_d(A, C, Ai);
    dfl_tensor *out = NULL;
    if (rc) {
        dfl_fail(DFL_ERR_NUMERIC, "mat_inverse: %dx%d matrix is singular or not finite", C, C);
    } else {
        dfl_tensor *in[1] = {W};
        out = dfl_op_output(ctx, 2, W->shape, in, 1);
        if (out) {
            for (int i = 0; i < C * C; i++) out->data[i] = (float)Ai[i];
            dfl_tape_push(ctx, inverse_backward, "mat_inverse", out, in, 1);
        }
    }
    free(A);
    free(Ai);
    return out;
}

static void logabsdet_backward(dfl_ctx *ctx, dfl_node *nd)
{
    float *dW = dfl_grad_of(ctx, nd->in[0]);
    if (!dW) return;
    int C = nd->in[0]->shape[0];
    float g = nd->out->grad[0];
    const float *Wi = nd->saved[0]; /* W^-1 */
    for (int i = 0; i < C; i++)
        for (int j = 0; j < C; j++) dW[i * C + j] += g * Wi[j * C + i];
}

dfl_tensor *dfl_mat_logabsdet(dfl_ctx *ctx, dfl_tensor *W)
{
    if (!ctx || !W) return NULL;
    if (!square_check("mat_logabsdet", W)) return NULL;
    int C = W->shape[0];
    double *A = to_double(W), *Ai = malloc((size_t)C * C * sizeof *Ai);
    if (!A || !Ai) {
        free(A); free(Ai);
        dfl_fail(DFL_ERR_NOMEM, "mat_logabsdet: out of memory");
        return NULL;
    }
    double ld = dfl_logabsdet_d(A, C, NULL);
    dfl_tensor *out = NULL;
    if (!isfinite(ld) || dfl_inverse_d(A, C, Ai)) {
        dfl_fail(DFL_ERR_NUMERIC, "mat_logabsdet: %dx%d matrix is singular or not finite (ln|det| = %g)",
                 C, C, ld);
    } else {
        dfl_tensor *in[1] = {W};
        int one = 1;
        out = dfl_op_output(ctx, 1, &one, in, 1);
        if (out) {
            out->data[0] = (float)ld;
            dfl_node *nd = dfl_tape_push(ctx, logabsdet_backward, "mat_logabsdet", out, in, 1);
            if (nd) {
                float *wi = dfl_arena_alloc(ctx, (size_t)C * C * sizeof(float));
                if (!wi) out = NULL;
                else {
                    for (int i = 0; i < C * C; i++) wi[i] = (float)Ai[i];
                    nd->saved[0] = wi;
                }
            }
        }
    }
    free(A);
    free(Ai);
    return out;
}

/* W = P A B, A = I + strict_lower(L), B = strict_upper(U) + diag(sign exp(log_s)).
 * saved[0] = perm (as floats), saved[1] = sign. */
static void lu_factors(const float *L, const float *U, const float *ls, const float *sign, int C,
                       double *A, double *B)
{
    for (int i = 0; i < C; i++)
        for (int j = 0; j < C; j++) {
            A[i * C + j] = i > j ? L[i * C + j] : (i == j ? 1.0 : 0.0);
            B[i * C + j] = i < j ? U[i * C + j] : (i == j ? sign[i] * exp((double)ls[i]) : 0.0);
        }
}

static void lu_backward(dfl_ctx *ctx, dfl_node *nd)
{
    dfl_tensor *L = nd->in[0], *U = nd->in[1], *ls = nd->in[2];
    int C = nd->out->shape[0];
    float *dL = dfl_grad_of(ctx, L), *dU = dfl_grad_of(ctx, U), *dls = dfl_grad_of(ctx, ls);
    const float *perm = nd->saved[0], *sign = nd->saved[1], *G = nd->out->grad;
    size_t CC = (size_t)C * C;
    double *A = malloc(CC * sizeof *A), *B = malloc(CC * sizeof *B), *dM = malloc(CC * sizeof *dM);
    if (!A || !B || !dM) goto done;
    lu_factors(L->data, U->data, ls->data, sign, C, A, B);
    /* W = P M, (P M)[i] = M[perm[i]]  =>  dM[perm[i]] = G[i] */
    for (int i = 0; i < C; i++) {
        int r = (int)perm[i];
        for (int j = 0; j < C; j++) dM[r * C + j] = G[i * C + j];
    }
    if (dL) /* dA = dM B^T, strict lower */
        for (int i = 0; i < C; i++)
            for (int j = 0; j < i; j++) {
                double a = 0.0;
                for (int k = 0; k < C; k++) a += dM[i * C + k] * B[j * C + k];
                dL[i * C + j] += (float)a;
            }
    if (dU || dls) /* dB = A^T dM */
        for (int i = 0; i < C; i++)
            for (int j = i; j < C; j++) {
                double a = 0.0;
                for (int k = 0; k < C; k++) a += A[k * C + i] * dM[k * C + j];
                if (i < j && dU) dU[i * C + j] += (float)a;
                if (i == j && dls) dls[i] += (float)(a * B[i * C + i]);
            }
done:
    free(A);
    free(B);
    free(dM);
}

dfl_tensor *dfl_lu_weight(dfl_ctx *ctx, dfl_tensor *L, dfl_tensor *U, dfl_tensor *log_s,
                          const int *perm, const float *sign)
{
    if (!ctx || !L || !U || !log_s) return NULL;
    if (!square_check("lu_weight", L) || !dfl_same_shape(L, U) || log_s->n != (size_t)L->shape[0]) {
        dfl_fail(DFL_ERR_SHAPE, "lu_weight: L, U must be (C, C) and log_s (C)");
        return NULL;
    }
    int C = L->shape[0];
    size_t CC = (size_t)C * C;
    for (int i = 0; i < C; i++)
        if (perm[i] < 0 || perm[i] >= C) {
            dfl_fail(DFL_ERR_ARG, "lu_weight: permutation entry %d out of range", perm[i]);
            return NULL;
        }
    dfl_tensor *in[3] = {L, U, log_s};
    dfl_tensor *out = dfl_op_output(ctx, 2, L->shape, in, 3);
    float *sv = dfl_arena_alloc(ctx, 2 * (size_t)C * sizeof(float));
    double *A = malloc(CC * sizeof *A), *B = malloc(CC * sizeof *B);
    if (!out || !sv || !A || !B) {
        free(A); free(B);
        dfl_fail(DFL_ERR_NOMEM, "lu_weight: out of memory");
        return NULL;
    }
    for (int i = 0; i < C; i++) {
        sv[i] = (float)perm[i];
        sv[C + i] = sign[i];
    }
    lu_factors(L->data, U->data, log_s->data, sign, C, A, B);
    for (int i = 0; i < C; i++) {
        int r = perm[i];
        for (int j = 0; j < C; j++) {
            double a = 0.0;
            for (int k = 0; k <= r && k < C; k++) a += A[r * C + k] * B[k * C + j];
            out->data[i * C + j] = (float)a;
        }
    }
    free(A);
    free(B);
    dfl_node *nd = dfl_tape_push(ctx, lu_backward, "lu_weight", out, in, 3);
    if (nd) {
        nd->saved[0] = sv;
        nd->saved[1] = sv + C;
    }
    return out;
}
