/* Transformer building blocks other than attention: LayerNorm, RMSNorm, GELU (erf and tanh),
 * SwiGLU, embedding lookup, softmax cross-entropy (DESIGN section 6; sources in tf.h).
 *
 * Row-wise ops (norms, cross-entropy) treat x (..., D) as M rows of D and run OpenMP over rows
 * for large inputs (norm statistics: two passes, accumulated in double); the parameter gradients (gamma, beta, the embedding table) are reduced over
 * rows by one thread, vectorised over D, so results do not depend on the thread count.
 * Elementwise ops use the vectorisable tf_exp / tf_tanh / tf_sigmoid / tf_erfc of tf_math.h
 * (GELU erf: Phi(x) = erfc(-x / sqrt 2) / 2 with the Numerical Recipes Chebyshev erfc, absolute
 * error of gelu ~1e-7). */
#include "difflow/tf.h"

#include "tf/tf_math.h"

#include <math.h>
#include <string.h>

#define PAR_MIN (1L << 15) /* elements below which loops stay single-threaded */

static int last_dim(const dfl_tensor *x) { return x->shape[x->ndim - 1]; }

/* gamma/beta-style vector: NULL or (D). */
static int is_vec(const dfl_tensor *t, int D) { return !t || (t->ndim == 1 && t->shape[0] == D); }

/* ------------------------------------------------------------------ LayerNorm / RMSNorm */

/* Row statistics and output. rms = 0: LayerNorm (mean, biased variance); rms = 1: RMSNorm
 * (mean stays 0, the "variance" is mean(x^2)). */
static void norm_fwd(const float *x, const float *gamma, const float *beta, float *y, float *mean,
                     float *rstd, long M, int D, float eps, int rms)
{
#pragma omp parallel for schedule(static) if (M * D > PAR_MIN)
    for (long m = 0; m < M; m++) {
        const float *xr = x + (size_t)m * D;
        float *yr = y + (size_t)m * D;
        double s = 0.0, ss = 0.0; /* double: row means of offset data stay exact */
        if (!rms) {
#pragma omp simd reduction(+ : s)
            for (int i = 0; i < D; i++) s += xr[i];
        }
        float mu = (float)(s / D);
#pragma omp simd reduction(+ : ss)
        for (int i = 0; i < D; i++) {
            double c = (double)xr[i] - mu;
            ss += c * c;
        }
        float r = (float)(1.0 / sqrt(ss / D + (double)eps));
        mean[m] = mu;
        rstd[m] = r;
        for (int i = 0; i < D; i++) {
            float v = (xr[i] - mu) * r;
            if (gamma) v *= gamma[i];
            if (beta) v += beta[i];
            yr[i] = v;
        }
    }
}

/* dx = r (g - mean(g) - xhat mean(g xhat)) with g = dy gamma, xhat = (x - mu) r (LayerNorm);
 * RMSNorm drops the mean(g) term. dgamma += sum dy xhat, dbeta += sum dy over rows. */
static void norm_bwd(const float *x, const float *gamma, const float *mean, const float *rstd,
                     const float *dy, float *dx, float *dgamma, float *dbeta, long M, int D,
                     int rms)
{
    if (dx) {
#pragma omp parallel for schedule(static) if (M * D > PAR_MIN)
        for (long m = 0; m < M; m++) {
            const float *xr = x + (size_t)m * D, *gr = dy + (size_t)m * D;
            float *dr = dx + (size_t)m * D;
            float mu = mean[m], r = rstd[m], sg = 0.0f, sgx = 0.0f;
#pragma omp simd reduction(+ : sg, sgx)
            for (int i = 0; i < D; i++) {
                float g = gamma ? gr[i] * gamma[i] : gr[i];
                sg += g;
                sgx += g * (xr[i] - mu) * r;
            }
            float mg = rms ? 0.0f : sg / (float)D, mgx = sgx / (float)D;
            for (int i = 0; i < D; i++) {
                float g = gamma ? gr[i] * gamma[i] : gr[i];
                dr[i] += r * (g - mg - (xr[i] - mu) * r * mgx);
            }
        }
    }
    for (long m = 0; m < M && (dgamma || dbeta); m++) {
        const float *xr = x + (size_t)m * D, *gr = dy + (size_t)m * D;
        float mu = mean[m], r = rstd[m];
        if (dgamma)
            for (int i = 0; i < D; i++) dgamma[i] += gr[i] * (xr[i] - mu) * r;
        if (dbeta)
            for (int i = 0; i < D; i++) dbeta[i] += gr[i];
    }
}

static void norm_backward(dfl_ctx *ctx, dfl_node *nd)
{
    dfl_tensor *x = nd->in[0];
    dfl_tensor *gamma = nd->iarg[1] ? nd->in[1] : NULL;
    dfl_tensor *beta = nd->iarg[2] ? nd->in[1 + nd->iarg[1]] : NULL;
    int D = last_dim(x);
    norm_bwd(x->data, gamma ? gamma->data : NULL, nd->saved[0], nd->saved[1], nd->out->grad,
             dfl_grad_of(ctx, x), dfl_grad_of(ctx, gamma), dfl_grad_of(ctx, beta),
             (long)(x->n / (size_t)D), D, nd->iarg[0]);
}

static dfl_tensor *norm_op(dfl_ctx *ctx, dfl_tensor *x, dfl_tensor *gamma, dfl_tensor *beta,
                           float eps, int rms)
{
    const char *name = rms ? "rms_norm" : "layer_norm";
    if (!ctx || !x) return NULL;
    char s1[64], s2[64], s3[64];
    int D = last_dim(x);
    if (!is_vec(gamma, D) || !is_vec(beta, D)) {
        dfl_fail(DFL_ERR_SHAPE, "%s: gamma %s and beta %s must be (%d) for input %s", name,
                 gamma ? dfl_shape_str(gamma, s1, sizeof s1) : "none",
                 beta ? dfl_shape_str(beta, s2, sizeof s2) : "none", D,
                 dfl_shape_str(x, s3, sizeof s3));
        return NULL;
    }
    if (!(eps >= 0.0f)) {
        dfl_fail(DFL_ERR_ARG, "%s: eps must be >= 0 (got %g)", name, (double)eps);
        return NULL;
    }
    long M = (long)(x->n / (size_t)D);
    dfl_tensor *in[3];
    int nin = 0;
    in[nin++] = x;
    if (gamma) in[nin++] = gamma;
    if (beta) in[nin++] = beta;
    dfl_tensor *out = dfl_op_output(ctx, x->ndim, x->shape, in, nin);
    float *stats = dfl_arena_alloc(ctx, 2 * (size_t)M * sizeof(float));
    if (!out || !stats) return NULL;
    norm_fwd(x->data, gamma ? gamma->data : NULL, beta ? beta->data : NULL, out->data, stats,
             stats + M, M, D, eps, rms);
    dfl_node *nd = dfl_tape_push(ctx, norm_backward, name, out, in, nin);
    if (nd) {
        nd->saved[0] = stats;
        nd->saved[1] = stats + M;
        nd->iarg[0] = rms;
        nd->iarg[1] = gamma != NULL;
        nd->iarg[2] = beta != NULL;
    }
    return out;
}

dfl_tensor *dfl_layer_norm(dfl_ctx *ctx, dfl_tensor *x, dfl_tensor *gamma, dfl_tensor *beta,
                           float eps)
{
    return norm_op(ctx, x, gamma, beta, eps, 0);
}

dfl_tensor *dfl_rms_norm(dfl_ctx *ctx, dfl_tensor *x, dfl_tensor *gamma, float eps)
{
    return norm_op(ctx, x, gamma, NULL, eps, 1);
}

/* ------------------------------------------------------------------ GELU */

#define GELU_K0 0.7978845608028654f /* sqrt(2/pi) */
#define GELU_K1 0.044715f
#define INV_SQRT2 0.7071067811865476f
#define INV_SQRT_2PI 0.3989422804014327f

static void gelu_fwd(const float *restrict x, float *restrict y, long n, int kind)
{
    if (kind == DFL_GELU_TANH) {
#pragma omp parallel for simd schedule(static) if (n > PAR_MIN)
        for (long i = 0; i < n; i++) {
            float v = x[i];
            float t = tf_tanh(GELU_K0 * (v + GELU_K1 * v * v * v));
            y[i] = 0.5f * v * (1.0f + t);
        }
    } else {
#pragma omp parallel for simd schedule(static) if (n > PAR_MIN)
        for (long i = 0; i < n; i++) y[i] = 0.5f * x[i] * tf_erfc(-x[i] * INV_SQRT2);
    }
}

/* erf: d/dx = Phi(x) + x phi(x); tanh: 0.5 (1 + t) + 0.5 x (1 - t^2) k0 (1 + 3 k1 x^2). */
static void gelu_bwd(const float *restrict x, const float *restrict dy, float *restrict dx, long n,
                     int kind)
{
    if (kind == DFL_GELU_TANH) {
#pragma omp parallel for simd schedule(static) if (n > PAR_MIN)
        for (long i = 0; i < n; i++) {
            float v = x[i];
            float t = tf_tanh(GELU_K0 * (v + GELU_K1 * v * v * v));
            float d = 0.5f * (1.0f + t) +
                      0.5f * v * (1.0f - t * t) * GELU_K0 * (1.0f + 3.0f * GELU_K1 * v * v);
            dx[i] += dy[i] * d;
        }
    } else {
#pragma omp parallel for simd schedule(static) if (n > PAR_MIN)
        for (long i = 0; i < n; i++) {
            float v = x[i];
            float d = 0.5f * tf_erfc(-v * INV_SQRT2) + v * INV_SQRT_2PI * tf_exp(-0.5f * v * v);
            dx[i] += dy[i] * d;
        }
    }
}

static void gelu_backward(dfl_ctx *ctx, dfl_node *nd)
{
    float *dx = dfl_grad_of(ctx, nd->in[0]);
    if (dx) gelu_bwd(nd->in[0]->data, nd->out->grad, dx, (long)nd->out->n, nd->iarg[0]);
}

dfl_tensor *dfl_gelu(dfl_ctx *ctx, dfl_tensor *x, dfl_gelu_kind kind)
{
    if (!ctx || !x) return NULL;
    if (kind != DFL_GELU_ERF && kind != DFL_GELU_TANH) {
        dfl_fail(DFL_ERR_ARG, "gelu: unknown kind %d (0 = erf, 1 = tanh)", (int)kind);
        return NULL;
    }
    dfl_tensor *in[1] = {x};
    dfl_tensor *out = dfl_op_output(ctx, x->ndim, x->shape, in, 1);
    if (!out) return NULL;
    gelu_fwd(x->data, out->data, (long)x->n, kind);
    dfl_node *nd = dfl_tape_push(ctx, gelu_backward, "gelu", out, in, 1);
    if (nd) nd->iarg[0] = kind;
    return out;
}

/* ------------------------------------------------------------------ SwiGLU */

static void swiglu_backward(dfl_ctx *ctx, dfl_node *nd)
{
    dfl_tensor *a = nd->in[0], *b = nd->in[1];
    float *da = dfl_grad_of(ctx, a), *db = dfl_grad_of(ctx, b);
    const float *restrict av = a->data, *restrict bv = b->data, *restrict g = nd->out->grad;
    long n = (long)a->n;
#pragma omp parallel for simd schedule(static) if (n > PAR_MIN)
    for (long i = 0; i < n; i++) {
        float s = tf_sigmoid(av[i]);
        if (da) da[i] += g[i] * bv[i] * s * (1.0f + av[i] * (1.0f - s));
        if (db) db[i] += g[i] * av[i] * s;
    }
}

dfl_tensor *dfl_swiglu(dfl_ctx *ctx, dfl_tensor *a, dfl_tensor *b)
{
    if (!ctx || !a || !b) return NULL;
    char s1[64], s2[64];
    if (!dfl_same_shape(a, b)) {
        dfl_fail(DFL_ERR_SHAPE, "swiglu: gate input %s and value input %s must have the same shape",
                 dfl_shape_str(a, s1, sizeof s1), dfl_shape_str(b, s2, sizeof s2));
        return NULL;
    }
    dfl_tensor *in[2] = {a, b};
    dfl_tensor *out = dfl_op_output(ctx, a->ndim, a->shape, in, 2);
    if (!out) return NULL;
    const float *restrict av = a->data, *restrict bv = b->data;
    float *restrict y = out->data;
    long n = (long)a->n;
#pragma omp parallel for simd schedule(static) if (n > PAR_MIN)
    for (long i = 0; i < n; i++) y[i] = av[i] * tf_sigmoid(av[i]) * bv[i];
    dfl_tape_push(ctx, swiglu_backward, "swiglu", out, in, 2);
    return out;
}

/* ------------------------------------------------------------------ embedding */

static void embedding_backward(dfl_ctx *ctx, dfl_node *nd)
{
    dfl_tensor *W = nd->in[0];
    float *dW = dfl_grad_of(ctx, W);
    if (!dW) return;
    const int *ids = (const int *)(void *)nd->saved[0];
    int D = W->shape[1];
    long n = (long)(nd->out->n / (size_t)D);
    const float *g = nd->out->grad;
    for (long r = 0; r < n; r++) { /* sequential: repeated ids add into the same row */
        float *row = dW + (size_t)ids[r] * D;
        const float *gr = g + (size_t)r * D;
        for (int i = 0; i < D; i++) row[i] += gr[i];
    }
}

dfl_tensor *dfl_embedding(dfl_ctx *ctx, dfl_tensor *table, const int *ids, int B, int T)
{
    if (!ctx || !table) return NULL;
    char s1[64];
    if (table->ndim != 2 || B < 1 || T < 1) {
        dfl_fail(DFL_ERR_SHAPE, "embedding: table %s must be (V,D) and ids (B,T) = (%d,%d) non-empty",
                 dfl_shape_str(table, s1, sizeof s1), B, T);
        return NULL;
    }
    if (!ids) {
        dfl_fail(DFL_ERR_ARG, "embedding: ids is NULL");
        return NULL;
    }
    int V = table->shape[0], D = table->shape[1];
    long n = (long)B * T;
    for (long r = 0; r < n; r++)
        if (ids[r] < 0 || ids[r] >= V) {
            dfl_fail(DFL_ERR_ARG, "embedding: id %d at (b %ld, t %ld) is outside [0, %d) of table %s",
                     ids[r], r / T, r % T, V, dfl_shape_str(table, s1, sizeof s1));
            return NULL;
        }
    int shape[3] = {B, T, D};
    dfl_tensor *in[1] = {table};
    dfl_tensor *out = dfl_op_output(ctx, 3, shape, in, 1);
    if (!out) return NULL;
#pragma omp parallel for schedule(static) if (n * D > PAR_MIN)
    for (long r = 0; r < n; r++)
        memcpy(out->data + (size_t)r * D, table->data + (size_t)ids[r] * D, (size_t)D * sizeof(float));
    if (out->requires_grad) {
        int *copy = dfl_arena_alloc(ctx, (size_t)n * sizeof(int));
        if (!copy) return NULL;
        memcpy(copy, ids, (size_t)n * sizeof(int));
        dfl_node *nd = dfl_tape_push(ctx, embedding_backward, "embedding", out, in, 1);
        if (nd) nd->saved[0] = (float *)(void *)copy;
    }
    return out;
}

/* ------------------------------------------------------------------ softmax cross-entropy */

/* Log-sum-exp of one row split as max + log(sum e^{x_j - max}): *mx gets the maximum, the
 * return value the log of the shifted sum (in [0, ln V]). Keeping the two apart keeps
 * x_j - max and the loss exact to float rounding even for logits of size 1e3 and more. */
static float row_logsumexp(const float *restrict x, int V, float *mx)
{
    float m = -INFINITY;
    int bad = 0;
#pragma omp simd reduction(max : m) reduction(| : bad)
    for (int j = 0; j < V; j++) {
        m = x[j] > m ? x[j] : m;
        bad |= tf_is_nan(x[j]);
    }
    *mx = bad ? NAN : m; /* a NaN logit makes the row's loss NaN */
    if (bad || m == -INFINITY || m == INFINITY) return 0.0f;
    float s = 0.0f;
#pragma omp simd reduction(+ : s)
    for (int j = 0; j < V; j++) s += tf_exp(x[j] - m);
    return logf(s);
}

static void cross_entropy_backward(dfl_ctx *ctx, dfl_node *nd)
{
    dfl_tensor *x = nd->in[0];
    float *dx = dfl_grad_of(ctx, x);
    int count = nd->iarg[1];
    if (!dx || count == 0) return;
    int V = last_dim(x), ignore = nd->iarg[0];
    long M = (long)(x->n / (size_t)V);
    const int *tg = (const int *)(void *)nd->saved[1];
    const float *mx = nd->saved[0], *ls = nd->saved[0] + M;
    float g = nd->out->grad[0] / (float)count;
#pragma omp parallel for schedule(static) if (M * V > PAR_MIN)
    for (long m = 0; m < M; m++) {
        if (tg[m] == ignore) continue;
        const float *xr = x->data + (size_t)m * V;
        float *dr = dx + (size_t)m * V;
        float mm = mx[m], l = ls[m];
        for (int j = 0; j < V; j++) dr[j] += g * tf_exp((xr[j] - mm) - l);
        dr[tg[m]] -= g;
    }
}

dfl_tensor *dfl_cross_entropy(dfl_ctx *ctx, dfl_tensor *logits, const int *targets,
                              int ignore_index)
{
    if (!ctx || !logits) return NULL;
    char s1[64];
    if (!targets) {
        dfl_fail(DFL_ERR_ARG, "cross_entropy: targets is NULL");
        return NULL;
    }
    int V = last_dim(logits);
    long M = (long)(logits->n / (size_t)V);
    int count = 0;
    for (long m = 0; m < M; m++) {
        if (targets[m] == ignore_index) continue;
        if (targets[m] < 0 || targets[m] >= V) {
            dfl_fail(DFL_ERR_ARG,
                     "cross_entropy: target %d of row %ld is outside [0, %d) for logits %s (ignore index %d)",
                     targets[m], m, V, dfl_shape_str(logits, s1, sizeof s1), ignore_index);
            return NULL;
        }
        count++;
    }
    int one = 1;
    dfl_tensor *in[1] = {logits};
    dfl_tensor *out = dfl_op_output(ctx, 1, &one, in, 1);
    float *lse = dfl_arena_alloc(ctx, 2 * (size_t)M * sizeof(float)); /* row max, log-sum */
    if (!out || !lse) return NULL;
    double total = 0.0;
#pragma omp parallel for schedule(static) reduction(+ : total) if (M * V > PAR_MIN)
    for (long m = 0; m < M; m++) {
        if (targets[m] == ignore_index) continue;
        const float *xr = logits->data + (size_t)m * V;
        lse[M + m] = row_logsumexp(xr, V, &lse[m]);
        total += ((double)lse[m] - (double)xr[targets[m]]) + (double)lse[M + m];
    }
    out->data[0] = count ? (float)(total / count) : 0.0f;
    if (out->requires_grad) {
        int *copy = dfl_arena_alloc(ctx, (size_t)M * sizeof(int));
        if (!copy) return NULL;
        memcpy(copy, targets, (size_t)M * sizeof(int));
        dfl_node *nd = dfl_tape_push(ctx, cross_entropy_backward, "cross_entropy", out, in, 1);
        if (nd) {
            nd->saved[0] = lse;
            nd->saved[1] = (float *)(void *)copy;
            nd->iarg[0] = ignore_index;
            nd->iarg[1] = count;
        }
    }
    return out;
}
