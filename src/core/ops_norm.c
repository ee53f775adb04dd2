/* Group normalisation (Wu & He, "Group Normalization", ECCV 2018), DESIGN section 3 "Kernels".
 *
 * Forward: one pass per (sample, group) for the mean and the biased variance, accumulated in
 * double (E[x^2] - E[x]^2 is safe there for float data), then y = x a_c + b_c with
 * a_c = rstd gamma_c, b_c = beta_c - mean a_c. Parallel over the N*G groups.
 * Backward: closed form; per channel the sums of dy and dy*x (double) give dbeta, dgamma and
 * the two group means the input gradient needs, so dx = A_c dy + B x + D is one more pass. */
#include "difflow/kernels.h"
#include "difflow/ops.h"

#include <math.h>
#include <string.h>

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
        float r = (float)(1.0 / sqrt(var + (double)eps));
        float m = (float)mu;
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
        const float *xq = x + (size_t)q * M;
        const float *gq = dy + (size_t)q * M;
        double m = mean[q], r = rstd[q];
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
            pg[(size_t)n * C + c] = (float)sdxh;
            pb[(size_t)n * C + c] = (float)sd;
            sum_g += gamma[c] * sd;
            sum_gx += gamma[c] * sdxh;
        }
        if (!dx) continue;
        double mg = sum_g / (double)M, mgx = sum_gx / (double)M;
        /* dx = r (gamma dy - mg - xhat mgx) = A_c dy + B x + D */
        float B = (float)(-r * r * mgx);
        float D = (float)(-r * mg + r * r * mgx * m);
        float *dq = dx + (size_t)q * M;
        for (int cc = 0; cc < Cg; cc++) {
            int c = g * Cg + cc;
            float A = (float)r * gamma[c];
            const float *xc = xq + (size_t)cc * S, *gc = gq + (size_t)cc * S;
            float *dc = dq + (size_t)cc * S;
            for (int i = 0; i < S; i++) dc[i] += A * gc[i] + B * xc[i] + D;
        }
    }
    if (dgamma || dbeta) {
        for (int n = 0; n < N; n++) {
            const float *a = pg + (size_t)n * C, *b = pb + (size_t)n * C;
            if (dgamma)
                for (int c = 0; c < C; c++) dgamma[c] += a[c];
            if (dbeta)
                for (int c = 0; c < C; c++) dbeta[c] += b[c];
        }
    }
}

static void group_norm_backward(dfl_ctx *ctx, dfl_node *nd)
{
    dfl_tensor *x = nd->in[0], *gamma = nd->in[1], *beta = nd->in[2];
    int N = x->shape[0], C = x->shape[1], G = nd->iarg[0];
    int S = (int)(x->n / ((size_t)N * C));
    float *dx = dfl_grad_of(ctx, x), *dg = dfl_grad_of(ctx, gamma), *db = dfl_grad_of(ctx, beta);
    if (!dx && !dg && !db) return;
    float *work = dfl_arena_alloc(ctx, dfl_k_group_norm_work_floats(N, C) * sizeof(float));
    if (!work) return;
    dfl_k_group_norm_bwd(x->data, gamma->data, nd->saved[0], nd->saved[1], nd->out->grad, dx, dg,
                         db, N, C, S, G, work);
}

dfl_tensor *dfl_group_norm(dfl_ctx *ctx, dfl_tensor *x, dfl_tensor *gamma, dfl_tensor *beta,
                           int groups, float eps)
{
    if (!ctx || !x || !gamma || !beta) return NULL;
    char s1[64], s2[64], s3[64];
    if (x->ndim < 2) {
        dfl_fail(DFL_ERR_SHAPE, "group_norm: input %s needs at least 2 dims (N,C,...)",
                 dfl_shape_str(x, s1, sizeof s1));
        return NULL;
    }
    int N = x->shape[0], C = x->shape[1];
    if (groups < 1 || C % groups != 0) {
        dfl_fail(DFL_ERR_SHAPE, "group_norm: %d groups do not divide the %d channels of input %s",
                 groups, C, dfl_shape_str(x, s1, sizeof s1));
        return NULL;
    }
    if (gamma->ndim != 1 || gamma->shape[0] != C || beta->ndim != 1 || beta->shape[0] != C) {
        dfl_fail(DFL_ERR_SHAPE, "group_norm: gamma %s and beta %s must be (%d) for input %s",
                 dfl_shape_str(gamma, s1, sizeof s1), dfl_shape_str(beta, s2, sizeof s2), C,
                 dfl_shape_str(x, s3, sizeof s3));
        return NULL;
    }
    if (!(eps >= 0.0f)) {
        dfl_fail(DFL_ERR_ARG, "group_norm: eps must be >= 0 (got %g)", (double)eps);
        return NULL;
    }
    int S = (int)(x->n / ((size_t)N * C));
    dfl_tensor *in[3] = {x, gamma, beta};
    dfl_tensor *out = dfl_op_output(ctx, x->ndim, x->shape, in, 3);
    float *stats = dfl_arena_alloc(ctx, 2 * (size_t)N * groups * sizeof(float));
    if (!out || !stats) return NULL;
    float *mean = stats, *rstd = stats + (size_t)N * groups;
    dfl_k_group_norm_fwd(x->data, gamma->data, beta->data, out->data, mean, rstd, N, C, S, groups,
                         eps);
    dfl_node *nd = dfl_tape_push(ctx, group_norm_backward, "group_norm", out, in, 3);
    if (nd) {
        nd->saved[0] = mean;
        nd->saved[1] = rstd;
        nd->iarg[0] = groups;
    }
    return out;
}
