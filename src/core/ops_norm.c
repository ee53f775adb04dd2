/* Group normalisation (Wu & He, "Group Normalization", ECCV 2018), DESIGN section 3 "Kernels".
 *
 * Forward: one pass per (sample, group) for the mean and the biased variance, accumulated in
 * double (E[x^2] - E[x]^2 is safe there for float data), then y = x a_c + b_c with
 * a_c = rstd gamma_c, b_c = beta_c - mean a_c. Parallel over the N*G groups.
 * Backward: closed form; per channel the sums of dy and dy*x (double) give dbeta, dgamma and
 * the two group means the input gradient needs, so dx = A_c dy + B x + D is one more pass.
 * Fused GroupNorm + SiLU (dfl_group_norm_silu): the forward writes silu(GN(x)) straight from x
 * (the normalised tensor is never stored); the backward recomputes z = GN(x) per group from x and
 * the saved statistics, forms dz = dy silu'(z) group by group (still in cache) and runs the same
 * group backward on it. Same float expressions as GN followed by SiLU, so the same results. */
#include "difflow/kernels.h"
#include "difflow/ops.h"
#include "vmath.h"

#include <math.h>
#include <string.h>

#if defined(__GNUC__)
#define NOINLINE __attribute__((noinline))
#else
#define NOINLINE
#endif

/* Mean and 1/sqrt(biased variance + eps) of M values, one pass in double. */
static void gn_stats(const float *xq, size_t M, float eps, float *mean, float *rstd)
{
    double s = 0.0, ss = 0.0;
#pragma omp simd reduction(+ : s, ss)
    for (size_t i = 0; i < M; i++) {
        double v = xq[i];
        s += v;
        ss += v * v;
    }
    double mu = s / (double)M;
    double var = ss / (double)M - mu * mu;
    if (var < 0.0) var = 0.0;
    *rstd = (float)(1.0 / sqrt(var + (double)eps));
    *mean = (float)mu;
}

void dfl_k_group_norm_fwd(const float *x, const float *gamma, const float *beta, float *y,
                          float *mean, float *rstd, int N, int C, int S, int G, float eps)
{
    int Cg = C / G;
    size_t M = (size_t)Cg * S;
    long NG = (long)N * G;
#pragma omp parallel for schedule(static) if (NG * (long)M > (1L << 15))
    for (long q = 0; q < NG; q++) {
        int g = (int)(q % G);
        const float *xq = x + (size_t)q * M;
        float *yq = y + (size_t)q * M;
        float m, r;
        gn_stats(xq, M, eps, &m, &r);
        mean[q] = m;
        rstd[q] = r;
        for (int cc = 0; cc < Cg; cc++) {
            int c = g * Cg + cc;
            float a = r * gamma[c];
            float b = beta[c] - m * a;
            const float *xc = xq + (size_t)cc * S;
            float *yc = yq + (size_t)cc * S;
            for (int i = 0; i < S; i++) yc[i] = xc[i] * a + b;
        }
    }
}

size_t dfl_k_group_norm_work_floats(int N, int C) { return 2 * (size_t)N * C; }

/* Backward of one (sample n, group g) block q: xq, gq (= dY of the normalised output), dq (dX,
 * accumulated; NULL if not needed) are the block's M = Cg S values; writes the per-channel sums
 * sum dy xhat and sum dy into pg, pb (the sample's rows of the (N, C) partials). */
static void gn_bwd_group(const float *xq, const float *gq, float *dq, const float *gamma, int g, int Cg,
                         int S, double m, double r, float *pg, float *pb)
{
    size_t M = (size_t)Cg * S;
    double sum_g = 0.0, sum_gx = 0.0; /* sum gamma dy, sum gamma dy xhat over the group */
    for (int cc = 0; cc < Cg; cc++) {
        int c = g * Cg + cc;
        const float *xc = xq + (size_t)cc * S, *gc = gq + (size_t)cc * S;
        double sd = 0.0, sdx = 0.0;
#pragma omp simd reduction(+ : sd, sdx)
        for (int i = 0; i < S; i++) {
            sd += gc[i];
            sdx += (double)gc[i] * xc[i];
        }
        double sdxh = r * (sdx - m * sd); /* sum dy xhat */
        pg[c] = (float)sdxh;
        pb[c] = (float)sd;
        sum_g += gamma[c] * sd;
        sum_gx += gamma[c] * sdxh;
    }
    if (!dq) return;
    double mg = sum_g / (double)M, mgx = sum_gx / (double)M;
    /* dx = r (gamma dy - mg - xhat mgx) = A_c dy + B x + D */
    float B = (float)(-r * r * mgx);
    float D = (float)(-r * mg + r * r * mgx * m);
    for (int cc = 0; cc < Cg; cc++) {
        int c = g * Cg + cc;
        float A = (float)r * gamma[c];
        const float *xc = xq + (size_t)cc * S, *gc = gq + (size_t)cc * S;
        float *dc = dq + (size_t)cc * S;
        for (int i = 0; i < S; i++) dc[i] += A * gc[i] + B * xc[i] + D;
    }
}

/* dgamma, dbeta += the per-sample partials pg, pb (N, C). */
static void gn_reduce_params(const float *pg, const float *pb, float *dgamma, float *dbeta, int N, int C)
{
    for (int n = 0; n < N; n++) {
        const float *a = pg + (size_t)n * C, *b = pb + (size_t)n * C;
        if (dgamma)
            for (int c = 0; c < C; c++) dgamma[c] += a[c];
        if (dbeta)
            for (int c = 0; c < C; c++) dbeta[c] += b[c];
    }
}

void dfl_k_group_norm_bwd(const float *x, const float *gamma, const float *mean, const float *rstd,
                          const float *dy, float *dx, float *dgamma, float *dbeta, int N, int C,
                          int S, int G, float *work)
{
    int Cg = C / G;
    size_t M = (size_t)Cg * S;
    long NG = (long)N * G;
    float *pg = work;                   /* (N, C): sum_s dy xhat */
    float *pb = work + (size_t)N * C;   /* (N, C): sum_s dy */
#pragma omp parallel for schedule(static) if (NG * (long)M > (1L << 15))
    for (long q = 0; q < NG; q++) {
        int n = (int)(q / G), g = (int)(q % G);
        gn_bwd_group(x + (size_t)q * M, dy + (size_t)q * M, dx ? dx + (size_t)q * M : NULL, gamma, g, Cg, S,
                     mean[q], rstd[q], pg + (size_t)n * C, pb + (size_t)n * C);
    }
    if (dgamma || dbeta) gn_reduce_params(pg, pb, dgamma, dbeta, N, C);
}

/* ------------------------------------------------------------------ fused GroupNorm + SiLU */

/* y = silu(x a + b) over one channel's S values. */
NOINLINE static void gn_silu_run(const float *restrict x, float a, float b, float *restrict y, int S)
{
    for (int i = 0; i < S; i++) {
        float z = x[i] * a + b;
        y[i] = z / (1.0f + exp_vec(-z));
    }
}

/* dz = dy silu'(z), z = x a + b, over one channel's S values. */
NOINLINE static void gn_silu_dz_run(const float *restrict x, float a, float b, const float *restrict dy,
                                    float *restrict dz, int S)
{
    for (int i = 0; i < S; i++) {
        float z = x[i] * a + b;
        float s = 1.0f / (1.0f + exp_vec(-z));
        dz[i] = dy[i] * s * (1.0f + z * (1.0f - s));
    }
}

void dfl_k_group_norm_silu_fwd(const float *x, const float *gamma, const float *beta, float *y, float *mean,
                               float *rstd, int N, int C, int S, int G, float eps)
{
    int Cg = C / G;
    size_t M = (size_t)Cg * S;
    long NG = (long)N * G;
#pragma omp parallel for schedule(static) if (NG * (long)M > (1L << 15))
    for (long q = 0; q < NG; q++) {
        int g = (int)(q % G);
        const float *xq = x + (size_t)q * M;
        float m, r;
        gn_stats(xq, M, eps, &m, &r);
        mean[q] = m;
        rstd[q] = r;
        for (int cc = 0; cc < Cg; cc++) {
            int c = g * Cg + cc;
            float a = r * gamma[c];
            gn_silu_run(xq + (size_t)cc * S, a, beta[c] - m * a, y + (size_t)q * M + (size_t)cc * S, S);
        }
    }
}

size_t dfl_k_group_norm_silu_work_floats(int N, int C, int S) { return 2 * (size_t)N * C + (size_t)N * C * S; }

void dfl_k_group_norm_silu_bwd(const float *x, const float *gamma, const float *beta, const float *mean,
                               const float *rstd, const float *dy, float *dx, float *dgamma, float *dbeta, int N,
                               int C, int S, int G, float *work)
{
    int Cg = C / G;
    size_t M = (size_t)Cg * S;
    long NG = (long)N * G;
    float *pg = work, *pb = work + (size_t)N * C, *dz = work + 2 * (size_t)N * C;
#pragma omp parallel for schedule(static) if (NG * (long)M > (1L << 15))
    for (long q = 0; q < NG; q++) {
        int n = (int)(q / G), g = (int)(q % G);
        const float *xq = x + (size_t)q * M;
        float *dzq = dz + (size_t)q * M;
        float m = mean[q], r = rstd[q];
        for (int cc = 0; cc < Cg; cc++) {
            int c = g * Cg + cc;
            float a = r * gamma[c];
            gn_silu_dz_run(xq + (size_t)cc * S, a, beta[c] - m * a, dy + (size_t)q * M + (size_t)cc * S,
                           dzq + (size_t)cc * S, S);
        }
        gn_bwd_group(xq, dzq, dx ? dx + (size_t)q * M : NULL, gamma, g, Cg, S, m, r, pg + (size_t)n * C,
                     pb + (size_t)n * C);
    }
    if (dgamma || dbeta) gn_reduce_params(pg, pb, dgamma, dbeta, N, C);
}

/* Backward of dfl_group_norm (iarg[1] 0) and dfl_group_norm_silu (iarg[1] 1). */
static void group_norm_backward(dfl_ctx *ctx, dfl_node *nd)
{
    dfl_tensor *x = nd->in[0], *gamma = nd->in[1], *beta = nd->in[2];
    int N = x->shape[0], C = x->shape[1], G = nd->iarg[0], fused = nd->iarg[1];
    int S = (int)(x->n / ((size_t)N * C));
    float *dx = dfl_grad_of(ctx, x), *dg = dfl_grad_of(ctx, gamma), *db = dfl_grad_of(ctx, beta);
    if (!dx && !dg && !db) return;
    size_t wf = fused ? dfl_k_group_norm_silu_work_floats(N, C, S) : dfl_k_group_norm_work_floats(N, C);
    float *work = dfl_arena_alloc(ctx, wf * sizeof(float));
    if (!work) return;
    if (fused)
        dfl_k_group_norm_silu_bwd(x->data, gamma->data, beta->data, nd->saved[0], nd->saved[1], nd->out->grad, dx,
                                  dg, db, N, C, S, G, work);
    else
        dfl_k_group_norm_bwd(x->data, gamma->data, nd->saved[0], nd->saved[1], nd->out->grad, dx, dg, db, N, C, S,
                             G, work);
    dfl_arena_release(ctx, work, wf * sizeof(float));
}

/* Shape and argument checks shared by dfl_group_norm and dfl_group_norm_silu; 0 if fine. */
static int gn_check(const char *op, dfl_tensor *x, dfl_tensor *gamma, dfl_tensor *beta, int groups, float eps)
{
    char s1[64], s2[64], s3[64];
    if (x->ndim < 2) {
        dfl_fail(DFL_ERR_SHAPE, "%s: input %s needs at least 2 dims (N,C,...)", op, dfl_shape_str(x, s1, sizeof s1));
        return -1;
    }
    int C = x->shape[1];
    if (groups < 1 || C % groups != 0) {
        dfl_fail(DFL_ERR_SHAPE, "%s: %d groups do not divide the %d channels of input %s", op, groups, C,
                 dfl_shape_str(x, s1, sizeof s1));
        return -1;
    }
    if (gamma->ndim != 1 || gamma->shape[0] != C || beta->ndim != 1 || beta->shape[0] != C) {
        dfl_fail(DFL_ERR_SHAPE, "%s: gamma %s and beta %s must be (%d) for input %s", op,
                 dfl_shape_str(gamma, s1, sizeof s1), dfl_shape_str(beta, s2, sizeof s2), C,
                 dfl_shape_str(x, s3, sizeof s3));
        return -1;
    }
    if (!(eps >= 0.0f)) {
        dfl_fail(DFL_ERR_ARG, "%s: eps must be >= 0 (got %g)", op, (double)eps);
        return -1;
    }
    return 0;
}

/* Output, statistics and (when recording) the tape node of either op; the forward kernel runs
 * between the two calls. */
static dfl_tensor *gn_output(dfl_ctx *ctx, dfl_tensor *x, dfl_tensor *gamma, dfl_tensor *beta, int groups,
                             float **stats)
{
    dfl_tensor *in[3] = {x, gamma, beta};
    dfl_tensor *out = dfl_op_output(ctx, x->ndim, x->shape, in, 3);
    *stats = dfl_arena_alloc(ctx, 2 * (size_t)x->shape[0] * groups * sizeof(float));
    return out && *stats ? out : NULL;
}

static void gn_record(dfl_ctx *ctx, int fused, dfl_tensor *out, dfl_tensor *x, dfl_tensor *gamma,
                      dfl_tensor *beta, int groups, float *stats)
{
    dfl_tensor *in[3] = {x, gamma, beta};
    dfl_node *nd = dfl_tape_push(ctx, group_norm_backward, fused ? "group_norm_silu" : "group_norm", out, in, 3);
    if (nd) {
        nd->saved[0] = stats;
        nd->saved[1] = stats + (size_t)x->shape[0] * groups;
        nd->iarg[0] = groups;
        nd->iarg[1] = fused;
    } else { /* not recorded: the statistics were scratch */
        dfl_arena_release(ctx, stats, 2 * (size_t)x->shape[0] * groups * sizeof(float));
    }
}

dfl_tensor *dfl_group_norm(dfl_ctx *ctx, dfl_tensor *x, dfl_tensor *gamma, dfl_tensor *beta,
                           int groups, float eps)
{
    if (!ctx || !x || !gamma || !beta) return NULL;
    if (gn_check("group_norm", x, gamma, beta, groups, eps)) return NULL;
    int N = x->shape[0], C = x->shape[1], S = (int)(x->n / ((size_t)N * C));
    float *stats;
    dfl_tensor *out = gn_output(ctx, x, gamma, beta, groups, &stats);
    if (!out) return NULL;
    dfl_k_group_norm_fwd(x->data, gamma->data, beta->data, out->data, stats, stats + (size_t)N * groups, N, C, S,
                         groups, eps);
    gn_record(ctx, 0, out, x, gamma, beta, groups, stats);
    return out;
}

dfl_tensor *dfl_group_norm_silu(dfl_ctx *ctx, dfl_tensor *x, dfl_tensor *gamma, dfl_tensor *beta, int groups,
                                float eps)
{
    if (!ctx || !x || !gamma || !beta) return NULL;
    if (gn_check("group_norm_silu", x, gamma, beta, groups, eps)) return NULL;
    int N = x->shape[0], C = x->shape[1], S = (int)(x->n / ((size_t)N * C));
    float *stats;
    dfl_tensor *out = gn_output(ctx, x, gamma, beta, groups, &stats);
    if (!out) return NULL;
    dfl_k_group_norm_silu_fwd(x->data, gamma->data, beta->data, out->data, stats, stats + (size_t)N * groups, N, C,
                              S, groups, eps);
    gn_record(ctx, 1, out, x, gamma, beta, groups, stats);
    return out;
}
