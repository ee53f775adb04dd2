/* Naive reference kernels (plain loops, no BLAS, no threads), the ground truth the tests compare
 * the fast kernels in ops_*.c against. Written for clarity, not speed: each follows the
 * mathematical definition in kernels.h index by index. */
#include "difflow/kernels.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------ linear */

void dfl_k_linear_fwd_ref(const float *x, const float *w, const float *b, float *y, int M, int K,
                          int N)
{
    for (int m = 0; m < M; m++)
        for (int j = 0; j < N; j++) {
            double s = b ? b[j] : 0.0;
            for (int i = 0; i < K; i++) s += (double)x[(size_t)m * K + i] * w[(size_t)j * K + i];
            y[(size_t)m * N + j] = (float)s;
        }
}

void dfl_k_linear_bwd_ref(const float *x, const float *w, const float *dy, float *dx, float *dw,
                          float *db, int M, int K, int N)
{
    for (int m = 0; m < M; m++)
        for (int j = 0; j < N; j++) {
            float g = dy[(size_t)m * N + j];
            if (db) db[j] += g;
            for (int i = 0; i < K; i++) {
                if (dx) dx[(size_t)m * K + i] += g * w[(size_t)j * K + i];
                if (dw) dw[(size_t)j * K + i] += g * x[(size_t)m * K + i];
            }
        }
}

/* ------------------------------------------------------------------ conv2d */

void dfl_k_conv2d_fwd_ref(const float *x, const float *w, const float *b, float *y, int N, int C,
                          int H, int W, int O, int k, int pad)
{
    int Ho = H + 2 * pad - k + 1, Wo = W + 2 * pad - k + 1;
    for (int n = 0; n < N; n++)
        for (int o = 0; o < O; o++)
            for (int ho = 0; ho < Ho; ho++)
                for (int wo = 0; wo < Wo; wo++) {
                    double s = b ? b[o] : 0.0;
                    for (int c = 0; c < C; c++)
                        for (int i = 0; i < k; i++)
                            for (int j = 0; j < k; j++) {
                                int hi = ho + i - pad, wi = wo + j - pad;
                                if (hi < 0 || hi >= H || wi < 0 || wi >= W) continue;
                                s += (double)x[(((size_t)n * C + c) * H + hi) * W + wi] *
                                     w[(((size_t)o * C + c) * k + i) * k + j];
                            }
                    y[(((size_t)n * O + o) * Ho + ho) * Wo + wo] = (float)s;
                }
}

void dfl_k_conv2d_bwd_ref(const float *x, const float *w, const float *dy, float *dx, float *dw,
                          float *db, int N, int C, int H, int W, int O, int k, int pad)
{
    int Ho = H + 2 * pad - k + 1, Wo = W + 2 * pad - k + 1;
    for (int n = 0; n < N; n++)
        for (int o = 0; o < O; o++)
            for (int ho = 0; ho < Ho; ho++)
                for (int wo = 0; wo < Wo; wo++) {
                    float g = dy[(((size_t)n * O + o) * Ho + ho) * Wo + wo];
                    if (db) db[o] += g;
                    for (int c = 0; c < C; c++)
                        for (int i = 0; i < k; i++)
                            for (int j = 0; j < k; j++) {
                                int hi = ho + i - pad, wi = wo + j - pad;
                                if (hi < 0 || hi >= H || wi < 0 || wi >= W) continue;
                                size_t xi = (((size_t)n * C + c) * H + hi) * W + wi;
                                size_t wi_ = (((size_t)o * C + c) * k + i) * k + j;
                                if (dx) dx[xi] += g * w[wi_];
                                if (dw) dw[wi_] += g * x[xi];
                            }
                }
}

/* ------------------------------------------------------------------ group norm */

void dfl_k_group_norm_fwd_ref(const float *x, const float *gamma, const float *beta, float *y,
                              float *mean, float *rstd, int N, int C, int S, int G, float eps)
{
    int Cg = C / G;
    size_t M = (size_t)Cg * S;
    for (int n = 0; n < N; n++)
        for (int g = 0; g < G; g++) {
            const float *xq = x + ((size_t)n * C + (size_t)g * Cg) * S;
            double mu = 0.0, var = 0.0;
            for (size_t i = 0; i < M; i++) mu += xq[i];
            mu /= (double)M;
            for (size_t i = 0; i < M; i++) var += (xq[i] - mu) * (xq[i] - mu);
            var /= (double)M;
            double r = 1.0 / sqrt(var + eps);
            mean[n * G + g] = (float)mu;
            rstd[n * G + g] = (float)r;
            for (int cc = 0; cc < Cg; cc++) {
                int c = g * Cg + cc;
                for (int s = 0; s < S; s++) {
                    size_t idx = ((size_t)n * C + c) * S + s;
                    y[idx] = (float)((x[idx] - mu) * r * gamma[c] + beta[c]);
                }
            }
        }
}

void dfl_k_group_norm_bwd_ref(const float *x, const float *gamma, const float *mean,
                              const float *rstd, const float *dy, float *dx, float *dgamma,
                              float *dbeta, int N, int C, int S, int G)
{
    int Cg = C / G;
    double M = (double)Cg * S;
    for (int n = 0; n < N; n++)
        for (int g = 0; g < G; g++) {
            double mu = mean[n * G + g], r = rstd[n * G + g];
            double sg = 0.0, sgx = 0.0;
            for (int cc = 0; cc < Cg; cc++) {
                int c = g * Cg + cc;
                for (int s = 0; s < S; s++) {
                    size_t idx = ((size_t)n * C + c) * S + s;
                    double xh = (x[idx] - mu) * r;
                    sg += dy[idx] * gamma[c];
                    sgx += dy[idx] * gamma[c] * xh;
                    if (dgamma) dgamma[c] += (float)(dy[idx] * xh);
                    if (dbeta) dbeta[c] += dy[idx];
                }
            }
            if (!dx) continue;
            for (int cc = 0; cc < Cg; cc++) {
                int c = g * Cg + cc;
                for (int s = 0; s < S; s++) {
                    size_t idx = ((size_t)n * C + c) * S + s;
                    double xh = (x[idx] - mu) * r;
                    dx[idx] += (float)(r * (dy[idx] * gamma[c] - sg / M - xh * sgx / M));
                }
            }
        }
}

/* ------------------------------------------------------------------ elementwise */

void dfl_k_silu_fwd_ref(const float *x, float *y, size_t n)
{
    for (size_t i = 0; i < n; i++) y[i] = (float)(x[i] / (1.0 + exp(-(double)x[i])));
}

void dfl_k_silu_bwd_ref(const float *x, const float *dy, float *dx, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        double s = 1.0 / (1.0 + exp(-(double)x[i]));
        dx[i] += (float)(dy[i] * s * (1.0 + x[i] * (1.0 - s)));
    }
}

/* Offset into an operand of shape sh4 for the output index (i0..i3), broadcasting size-1 dims. */
static size_t bc_offset(const int sh4[4], const int idx[4])
{
    size_t off = 0;
    for (int d = 0; d < 4; d++) off = off * (size_t)sh4[d] + (size_t)(sh4[d] == 1 ? 0 : idx[d]);
    return off;
}

static void unravel(size_t i, const int ysh4[4], int idx[4])
{
    for (int d = 3; d >= 0; d--) {
        idx[d] = (int)(i % (size_t)ysh4[d]);
        i /= (size_t)ysh4[d];
    }
}

void dfl_k_binary_fwd_ref(dfl_k_binop op, const float *a, const int ash4[4], const float *b,
                          const int bsh4[4], float *y, const int ysh4[4])
{
    size_t n = (size_t)ysh4[0] * ysh4[1] * ysh4[2] * ysh4[3];
    for (size_t i = 0; i < n; i++) {
        int idx[4];
        unravel(i, ysh4, idx);
        float av = a[bc_offset(ash4, idx)], bv = b[bc_offset(bsh4, idx)];
        y[i] = op == DFL_K_ADD ? av + bv : op == DFL_K_SUB ? av - bv : av * bv;
    }
}

void dfl_k_binary_bwd_ref(dfl_k_binop op, const float *a, const int ash4[4], const float *b,
                          const int bsh4[4], const float *dy, const int ysh4[4], float *da,
                          float *db)
{
    size_t n = (size_t)ysh4[0] * ysh4[1] * ysh4[2] * ysh4[3];
    for (size_t i = 0; i < n; i++) {
        int idx[4];
        unravel(i, ysh4, idx);
        size_t ia = bc_offset(ash4, idx), ib = bc_offset(bsh4, idx);
        if (da) da[ia] += op == DFL_K_MUL ? dy[i] * b[ib] : dy[i];
        if (db) db[ib] += op == DFL_K_MUL ? dy[i] * a[ia] : op == DFL_K_SUB ? -dy[i] : dy[i];
    }
}

void dfl_k_add_channel_fwd_ref(const float *x, const float *v, float *y, int P, int S)
{
    for (int p = 0; p < P; p++)
        for (int i = 0; i < S; i++) y[(size_t)p * S + i] = x[(size_t)p * S + i] + v[p];
}

void dfl_k_add_channel_bwd_ref(const float *dy, float *dx, float *dv, int P, int S)
{
    for (int p = 0; p < P; p++)
        for (int i = 0; i < S; i++) {
            if (dx) dx[(size_t)p * S + i] += dy[(size_t)p * S + i];
            if (dv) dv[p] += dy[(size_t)p * S + i];
        }
}

void dfl_k_scale_fwd_ref(const float *x, float s, float *y, size_t n)
{
    for (size_t i = 0; i < n; i++) y[i] = s * x[i];
}

void dfl_k_axpy_ref(float s, const float *dy, float *dx, size_t n)
{
    for (size_t i = 0; i < n; i++) dx[i] += s * dy[i];
}

/* ------------------------------------------------------------------ shape */

void dfl_k_concat_fwd_ref(const float *a, const float *b, float *y, int N, size_t Sa, size_t Sb)
{
    for (int n = 0; n < N; n++)
        for (size_t i = 0; i < Sa + Sb; i++)
            y[(size_t)n * (Sa + Sb) + i] = i < Sa ? a[(size_t)n * Sa + i] : b[(size_t)n * Sb + (i - Sa)];
}

void dfl_k_concat_bwd_ref(const float *dy, float *da, float *db, int N, size_t Sa, size_t Sb)
{
    for (int n = 0; n < N; n++)
        for (size_t i = 0; i < Sa + Sb; i++) {
            float g = dy[(size_t)n * (Sa + Sb) + i];
            if (i < Sa) {
                if (da) da[(size_t)n * Sa + i] += g;
            } else if (db) {
                db[(size_t)n * Sb + (i - Sa)] += g;
            }
        }
}

void dfl_k_avg_pool2_fwd_ref(const float *x, float *y, int P, int H, int W)
{
    for (int p = 0; p < P; p++)
        for (int i = 0; i < H / 2; i++)
            for (int j = 0; j < W / 2; j++) {
                float s = 0.0f;
                for (int a = 0; a < 2; a++)
                    for (int b = 0; b < 2; b++) s += x[((size_t)p * H + 2 * i + a) * W + 2 * j + b];
                y[((size_t)p * (H / 2) + i) * (W / 2) + j] = s / 4.0f;
            }
}

void dfl_k_avg_pool2_bwd_ref(const float *dy, float *dx, int P, int H, int W)
{
    for (int p = 0; p < P; p++)
        for (int h = 0; h < H; h++)
            for (int w = 0; w < W; w++)
                dx[((size_t)p * H + h) * W + w] += dy[((size_t)p * (H / 2) + h / 2) * (W / 2) + w / 2] / 4.0f;
}

void dfl_k_upsample2_fwd_ref(const float *x, float *y, int P, int H, int W)
{
    for (int p = 0; p < P; p++)
        for (int h = 0; h < 2 * H; h++)
            for (int w = 0; w < 2 * W; w++)
                y[((size_t)p * 2 * H + h) * 2 * W + w] = x[((size_t)p * H + h / 2) * W + w / 2];
}

void dfl_k_upsample2_bwd_ref(const float *dy, float *dx, int P, int H, int W)
{
    for (int p = 0; p < P; p++)
        for (int h = 0; h < 2 * H; h++)
            for (int w = 0; w < 2 * W; w++)
                dx[((size_t)p * H + h / 2) * W + w / 2] += dy[((size_t)p * 2 * H + h) * 2 * W + w];
}

/* ------------------------------------------------------------------ reductions */

double dfl_k_sum_ref(const float *x, size_t n)
{
    double s = 0.0;
    for (size_t i = 0; i < n; i++) s += x[i];
    return s;
}

void dfl_k_fill_add_ref(float g, float *dx, size_t n)
{
    for (size_t i = 0; i < n; i++) dx[i] += g;
}

double dfl_k_sq_err_ref(const float *a, const float *b, const float *w, size_t n, int N)
{
    size_t per = n / (size_t)N;
    double s = 0.0;
    for (size_t i = 0; i < n; i++) {
        double d = (double)a[i] - b[i];
        s += (w ? w[i / per] : 1.0) * d * d;
    }
    return s;
}

void dfl_k_sq_err_bwd_ref(const float *a, const float *b, const float *w, float g, float *da,
                          float *db, size_t n, int N)
{
    size_t per = n / (size_t)N;
    for (size_t i = 0; i < n; i++) {
        double d = 2.0 * g * (w ? w[i / per] : 1.0) * ((double)a[i] - b[i]);
        if (da) da[i] += (float)d;
        if (db) db[i] -= (float)d;
    }
}

void dfl_k_group_norm_silu_fwd_ref(const float *x, const float *gamma, const float *beta, float *y, float *mean,
                                   float *rstd, int N, int C, int S, int G, float eps)
{
    size_t n = (size_t)N * C * S;
    float *z = malloc(n * sizeof *z);
    if (!z) return;
    dfl_k_group_norm_fwd_ref(x, gamma, beta, z, mean, rstd, N, C, S, G, eps);
    dfl_k_silu_fwd_ref(z, y, n);
    free(z);
}

void dfl_k_group_norm_silu_bwd_ref(const float *x, const float *gamma, const float *beta, const float *mean,
                                   const float *rstd, const float *dy, float *dx, float *dgamma, float *dbeta,
                                   int N, int C, int S, int G)
{
    size_t n = (size_t)N * C * S;
    int Cg = C / G;
    float *z = malloc(n * sizeof *z), *dz = calloc(n, sizeof *dz);
    if (!z || !dz) {
        free(z);
        free(dz);
        return;
    }
    for (size_t i = 0; i < n; i++) { /* z = GN(x) from the given statistics */
        size_t q = i / ((size_t)Cg * S);
        int c = (int)((i / S) % C);
        z[i] = (x[i] - mean[q]) * rstd[q] * gamma[c] + beta[c];
    }
    dfl_k_silu_bwd_ref(z, dy, dz, n);
    dfl_k_group_norm_bwd_ref(x, gamma, mean, rstd, dz, dx, dgamma, dbeta, N, C, S, G);
    free(z);
    free(dz);
}
