/* difflow raw kernels: forward/backward pairs over plain float buffers, grouped by family.
 *
 * These are what the ops in ops.h call; they know nothing of tensors, the tape or the arena.
 * Conventions
 *   - Buffers are float32, contiguous, row-major; shapes are listed in the order of the arguments
 *     and in PyTorch order ((N,C,H,W) images, Linear weight [out,in], Conv2d weight [O,C,k,k]).
 *   - Backward kernels ACCUMULATE (+=) into the gradient buffers they are given, so a tensor used
 *     twice gets the sum of both contributions. A gradient pointer may be NULL: that gradient is
 *     then not computed at all (the input does not require grad).
 *   - Kernels that need scratch take a `work` pointer sized by the matching *_work_floats().
 *   - Fast kernels use OpenMP and BLAS (cblas_sgemm, OpenBLAS); the *_ref functions are naive
 *     loops (no BLAS, no threads) used by the tests as ground truth. They are defined in
 *     src/core/ops_ref.c.
 */
#ifndef DIFFLOW_KERNELS_H
#define DIFFLOW_KERNELS_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ================================================================ GEMM (gemm.c) */

/* C = alpha op(A) op(B) + beta C, row-major (cblas_sgemm's CblasRowMajor semantics):
 * op(A) (M, K) is A (M, K) with leading dimension lda, or A^T for A (K, M) when transa;
 * op(B) (K, N) is B (K, N) with ldb, or B^T for B (N, K) when transb; C (M, N) with ldc.
 * beta == 0 ignores C's old contents. oneDNN's dnnl_sgemm when built with it (DFL_HAVE_DNNL),
 * else cblas_sgemm; products under 4 MFLOP run on one thread. Safe inside OpenMP regions
 * (single-threaded there). */
void dfl_k_sgemm(int transa, int transb, int M, int N, int K, float alpha, const float *A, int lda,
                 const float *B, int ldb, float beta, float *C, int ldc);
/* Naive reference of dfl_k_sgemm (double accumulation, no threads), same arguments. */
void dfl_k_sgemm_ref(int transa, int transb, int M, int N, int K, float alpha, const float *A, int lda,
                     const float *B, int ldb, float beta, float *C, int ldc);
/* Backend of dfl_k_sgemm: 1 oneDNN, 0 BLAS; which < 0 only queries. Without oneDNN compiled in it
 * stays 0. Returns the previous value. For tests and benchmarks; not thread-safe against
 * concurrent GEMMs. */
int dfl_k_sgemm_backend(int which);

/* ================================================================ linear (ops_linear.c) */

/* y = x W^T + b (PyTorch nn.Linear).
 * x (M, K), w (N, K), b (N) or NULL, y (M, N). One cblas_sgemm for the whole batch. */
void dfl_k_linear_fwd(const float *x, const float *w, const float *b, float *y, int M, int K, int N);
/* Backward of dfl_k_linear_fwd: dx += dy W, dw += dy^T x, db += column sums of dy.
 * x (M, K), w (N, K), dy (M, N), dx (M, K) or NULL, dw (N, K) or NULL, db (N) or NULL. */
void dfl_k_linear_bwd(const float *x, const float *w, const float *dy, float *dx, float *dw,
                      float *db, int M, int K, int N);
/* Naive references of the two above (same shapes, same accumulate semantics). */
void dfl_k_linear_fwd_ref(const float *x, const float *w, const float *b, float *y, int M, int K,
                          int N);
/* Reference of dfl_k_linear_bwd: x (M, K), w (N, K), dy (M, N); accumulates into dx, dw, db. */
void dfl_k_linear_bwd_ref(const float *x, const float *w, const float *dy, float *dx, float *dw,
                          float *db, int M, int K, int N);

/* ================================================================ conv2d (ops_conv.c) */

/* Output size of a stride-1 convolution: H + 2 pad - k + 1 (may be <= 0 for invalid input). */
int dfl_k_conv2d_out_size(int H, int k, int pad);

/* Scratch floats needed by dfl_k_conv2d_fwd and dfl_k_conv2d_bwd for these sizes (the larger of
 * the two). It depends on the current OpenMP thread count (omp_get_max_threads()), so size the
 * buffer right before the call, with the same thread setting. Shapes as in dfl_k_conv2d_fwd. */
size_t dfl_k_conv2d_work_floats(int N, int C, int H, int W, int O, int k, int pad);

/* 2-D cross-correlation (PyTorch Conv2d), stride 1, zero padding `pad` on all sides.
 * x (N, C, H, W), w (O, C, k, k), b (O) or NULL, y (N, O, Ho, Wo) with Ho = H + 2pad - k + 1,
 * Wo = W + 2pad - k + 1; work: dfl_k_conv2d_work_floats(N, C, H, W, O, k, pad) floats.
 * Method (see ops_conv.c): 3x3 with pad 1, when built for AVX2 + FMA, runs a direct
 * convolution (padded flat layout, register-blocked micro-kernel; no im2col, no BLAS).
 * Otherwise im2col + cblas_sgemm over blocks of output columns (rows of one image, or several
 * small images) sized to stay in L2; k == 1, pad == 0 is a plain GEMM on x. Work is spread over
 * OpenMP threads by image (single-threaded BLAS inside), or, when the batch is smaller than the
 * thread count, images run in turn with threads (or threaded BLAS) inside each. */
void dfl_k_conv2d_fwd(const float *x, const float *w, const float *b, float *y, int N, int C,
                      int H, int W, int O, int k, int pad, float *work);
/* Backward of dfl_k_conv2d_fwd. x (N, C, H, W), w (O, C, k, k), dy (N, O, Ho, Wo);
 * dx (N, C, H, W) or NULL, dw (O, C, k, k) or NULL, db (O) or NULL; work as for the forward.
 * dw: per-thread partial sums (dY col^T, or the direct dW kernel for 3x3 pad 1 on images with
 * at least 16 output vectors), reduced at the end. dx: the transposed convolution, computed as a
 * correlation of dy (padding k-1-pad) with the flipped, transposed kernel
 * w'[c,o,i,j] = w[o,c,k-1-i,k-1-j] by the forward machinery, accumulated into dx (no col2im). */
void dfl_k_conv2d_bwd(const float *x, const float *w, const float *dy, float *dx, float *dw,
                      float *db, int N, int C, int H, int W, int O, int k, int pad, float *work);
/* Tuning: floats of im2col block per thread the planner aims for. 0 restores the default
 * (65536, with GEMMs kept at least 196 columns wide); an explicit size is taken as is (down to
 * one output row per block). For benchmarks and tests; returns the previous setting (0 for the
 * default). Not thread-safe against concurrent conv calls. */
size_t dfl_k_conv2d_set_block(size_t floats);
/* Testing: 0 sends 3x3 pad 1 convolutions through im2col + GEMM too, 1 (default) uses the direct
 * kernels where they are compiled in. Returns the previous value. Not thread-safe. */
int dfl_k_conv2d_set_direct(int on);

/* Naive direct-loop references (no im2col, no BLAS). Same shapes and semantics as above. */
void dfl_k_conv2d_fwd_ref(const float *x, const float *w, const float *b, float *y, int N, int C,
                          int H, int W, int O, int k, int pad);
/* Reference of dfl_k_conv2d_bwd: x (N, C, H, W), w (O, C, k, k), dy (N, O, Ho, Wo); accumulates
 * into dx, dw (same shapes as x, w) and db (O); any of them may be NULL. */
void dfl_k_conv2d_bwd_ref(const float *x, const float *w, const float *dy, float *dx, float *dw,
                          float *db, int N, int C, int H, int W, int O, int k, int pad);

/* ================================================================ group norm (ops_norm.c) */

/* GroupNorm (Wu & He, "Group Normalization", ECCV 2018). x (N, C, S) with S the product of the
 * spatial dims, channels split into G groups of C/G (G must divide C). For each (n, g):
 * mean and biased variance over the C/G * S values (accumulated in double, one pass),
 * rstd = 1/sqrt(var + eps), y = (x - mean) * rstd * gamma[c] + beta[c].
 * gamma (C), beta (C), y (N, C, S), mean (N, G) and rstd (N, G) are outputs kept for backward.
 * Parallel over the N*G groups. */
void dfl_k_group_norm_fwd(const float *x, const float *gamma, const float *beta, float *y,
                          float *mean, float *rstd, int N, int C, int S, int G, float eps);
/* Scratch floats for dfl_k_group_norm_bwd: 2 N C (per-sample partial dgamma, dbeta). */
size_t dfl_k_group_norm_work_floats(int N, int C);
/* Backward, standard closed form: with xhat = (x - mean) rstd and g = dy gamma[c], over a group
 * dx = rstd (g - mean(g) - xhat mean(g xhat)); dgamma[c] += sum dy xhat; dbeta[c] += sum dy.
 * x, dy, dx (N, C, S); gamma (C); mean, rstd (N, G) from the forward; dx, dgamma (C), dbeta (C)
 * may each be NULL; work: dfl_k_group_norm_work_floats(N, C) floats. */
void dfl_k_group_norm_bwd(const float *x, const float *gamma, const float *mean, const float *rstd,
                          const float *dy, float *dx, float *dgamma, float *dbeta, int N, int C,
                          int S, int G, float *work);
/* Naive two-pass references (mean, then variance), same shapes. */
void dfl_k_group_norm_fwd_ref(const float *x, const float *gamma, const float *beta, float *y,
                              float *mean, float *rstd, int N, int C, int S, int G, float eps);
/* Reference of dfl_k_group_norm_bwd: x, dy, dx (N, C, S); mean, rstd (N, G) from the forward;
 * dgamma, dbeta (C) accumulated (Wu & He 2018). */
void dfl_k_group_norm_bwd_ref(const float *x, const float *gamma, const float *mean,
                              const float *rstd, const float *dy, float *dx, float *dgamma,
                              float *dbeta, int N, int C, int S, int G);

/* Fused GroupNorm + SiLU: y = silu(GN(x)) = z sigmoid(z), z = (x - mean) rstd gamma[c] + beta[c],
 * with GN as dfl_k_group_norm_fwd and SiLU as dfl_k_silu_fwd (same float expressions, so the same
 * values as the two kernels in turn), without storing z. x, y (N, C, S); gamma, beta (C);
 * mean, rstd (N, G) are outputs kept for the backward. */
void dfl_k_group_norm_silu_fwd(const float *x, const float *gamma, const float *beta, float *y, float *mean,
                               float *rstd, int N, int C, int S, int G, float eps);
/* Scratch floats for dfl_k_group_norm_silu_bwd: 2 N C (partials) + N C S (dz). */
size_t dfl_k_group_norm_silu_work_floats(int N, int C, int S);
/* Backward: per (sample, group) recomputes z from x and the saved statistics, dz = dy s (1 + z (1 - s))
 * with s = sigmoid(z), then the GroupNorm backward of dz (as dfl_k_group_norm_bwd). x, dy, dx (N, C, S);
 * gamma, beta (C); mean, rstd (N, G) from the forward; dx, dgamma, dbeta accumulated, each may be NULL;
 * work: dfl_k_group_norm_silu_work_floats(N, C, S) floats. */
void dfl_k_group_norm_silu_bwd(const float *x, const float *gamma, const float *beta, const float *mean,
                               const float *rstd, const float *dy, float *dx, float *dgamma, float *dbeta, int N,
                               int C, int S, int G, float *work);
/* Naive references: the GroupNorm reference into a temporary z, then the SiLU reference (forward);
 * the SiLU reference backward into dz, then the GroupNorm reference backward (backward). Same shapes. */
void dfl_k_group_norm_silu_fwd_ref(const float *x, const float *gamma, const float *beta, float *y, float *mean,
                                   float *rstd, int N, int C, int S, int G, float eps);
/* Reference backward of the fused op: x, dy, dx (N, C, S); mean, rstd (N, G); accumulates dx, dgamma, dbeta. */
void dfl_k_group_norm_silu_bwd_ref(const float *x, const float *gamma, const float *beta, const float *mean,
                                   const float *rstd, const float *dy, float *dx, float *dgamma, float *dbeta,
                                   int N, int C, int S, int G);

/* ================================================================ elementwise (ops_elementwise.c) */

/* SiLU / swish, y = x sigmoid(x) (Elfwing, Uchibe & Doya 2018, "Sigmoid-weighted linear units";
 * Hendrycks & Gimpel 2016, "GELUs"; Ramachandran et al. 2017). x (n), y (n). The fast kernel uses
 * a vectorisable exp (range reduction + polynomial, ~2 ulp) with its argument clamped to
 * [-87, 87], so for x < -87 it returns about x e^-87 (|y| < 1e-35) instead of x e^x. */
void dfl_k_silu_fwd(const float *x, float *y, size_t n);
/* dx += dy * s (1 + x (1 - s)), s = sigmoid(x). x, dy, dx (n). */
void dfl_k_silu_bwd(const float *x, const float *dy, float *dx, size_t n);
/* Reference SiLU with libm expf: y = x / (1 + e^-x). x, y (n). */
void dfl_k_silu_fwd_ref(const float *x, float *y, size_t n);
/* Reference SiLU backward: dx += dy s (1 + x (1 - s)), s = sigmoid(x). x, dy, dx (n). */
void dfl_k_silu_bwd_ref(const float *x, const float *dy, float *dx, size_t n);

/* Binary ops with broadcasting. */
typedef enum { DFL_K_ADD = 0, DFL_K_SUB = 1, DFL_K_MUL = 2 } dfl_k_binop;

/* Broadcast shape of two shapes (NumPy rules: right-aligned; each pair of dims equal, or one of
 * them 1). Writes the result, right-aligned and left-padded with 1 to 4 dims, into ysh4, and
 * returns its rank (max of the two ranks), or -1 if the shapes do not broadcast. */
int dfl_k_broadcast_shape(int andim, const int *ash, int bndim, const int *bsh, int ysh4[4]);
/* y = a op b with broadcasting. ash4, bsh4, ysh4: the shapes of a, b and y right-aligned and
 * left-padded with 1 to 4 dims (ysh4 from dfl_k_broadcast_shape). a (ash4), b (bsh4), y (ysh4).
 * Dimensions are collapsed first, so the inner loop is a contiguous, vectorised run. */
void dfl_k_binary_fwd(dfl_k_binop op, const float *a, const int ash4[4], const float *b,
                      const int bsh4[4], float *y, const int ysh4[4]);
/* Backward: da += reduce_to_a(dy * d(a op b)/da), db likewise (sum over broadcast dims).
 * a (ash4), b (bsh4), dy (ysh4), da (ash4) or NULL, db (bsh4) or NULL. a and b are only read
 * for DFL_K_MUL (they may be NULL otherwise). */
void dfl_k_binary_bwd(dfl_k_binop op, const float *a, const int ash4[4], const float *b,
                      const int bsh4[4], const float *dy, const int ysh4[4], float *da, float *db);
/* References: index arithmetic per element (div/mod on the 4-D index). */
void dfl_k_binary_fwd_ref(dfl_k_binop op, const float *a, const int ash4[4], const float *b,
                          const int bsh4[4], float *y, const int ysh4[4]);
/* Reference backward of a broadcast binary op: a (ash4), b (bsh4), dy (ysh4), each a 4-D shape
 * right-aligned as NumPy broadcasting; da, db (shapes of a, b) accumulated, either may be NULL. */
void dfl_k_binary_bwd_ref(dfl_k_binop op, const float *a, const int ash4[4], const float *b,
                          const int bsh4[4], const float *dy, const int ysh4[4], float *da,
                          float *db);

/* y = s x. x (n), y (n). */
void dfl_k_scale_fwd(const float *x, float s, float *y, size_t n);
/* dx += s dy. dy (n), dx (n). (Also the backward of add/sub with equal shapes, s = +-1.) */
void dfl_k_axpy(float s, const float *dy, float *dx, size_t n);
/* References of dfl_k_scale_fwd (y = s x) and dfl_k_axpy (dx += s dy); arrays of n floats. */
void dfl_k_scale_fwd_ref(const float *x, float s, float *y, size_t n);
/* Naive dx += s dy over n floats (reference of dfl_k_axpy). */
void dfl_k_axpy_ref(float s, const float *dy, float *dx, size_t n);

/* y[p, i] = x[p, i] + v[p] for p < P = N C, i < S (add a per-(sample, channel) value to every
 * spatial position; the time-embedding broadcast). x (N*C, S), v (N*C), y (N*C, S). */
void dfl_k_add_channel_fwd(const float *x, const float *v, float *y, int P, int S);
/* dx += dy; dv[p] += sum_i dy[p, i]. dy (P, S), dx (P, S) or NULL, dv (P) or NULL. */
void dfl_k_add_channel_bwd(const float *dy, float *dx, float *dv, int P, int S);
/* Naive reference of dfl_k_add_channel_fwd: x (P, S), v (P), y (P, S). */
void dfl_k_add_channel_fwd_ref(const float *x, const float *v, float *y, int P, int S);
/* Naive reference of dfl_k_add_channel_bwd: dy (P, S), dx (P, S) or NULL, dv (P) or NULL. */
void dfl_k_add_channel_bwd_ref(const float *dy, float *dx, float *dv, int P, int S);

/* ================================================================ shape (ops_shape.c) */

/* 2x2 average pooling, stride 2. x (P, H, W) with P = N C planes, H and W even;
 * y (P, H/2, W/2). */
void dfl_k_avg_pool2_fwd(const float *x, float *y, int P, int H, int W);
/* dx[2i+a, 2j+b] += dy[i, j] / 4. dy (P, H/2, W/2), dx (P, H, W); H, W the INPUT size. */
void dfl_k_avg_pool2_bwd(const float *dy, float *dx, int P, int H, int W);
/* 2x nearest-neighbour upsampling. x (P, H, W), y (P, 2H, 2W). */
void dfl_k_upsample2_fwd(const float *x, float *y, int P, int H, int W);
/* dx[i, j] += sum of the 2x2 block dy[2i.., 2j..]. dy (P, 2H, 2W), dx (P, H, W). */
void dfl_k_upsample2_bwd(const float *dy, float *dx, int P, int H, int W);
/* Channel concat: y[n] = [a[n]; b[n]]. a (N, Sa), b (N, Sb), y (N, Sa + Sb), where Sa = Ca S,
 * Sb = Cb S are the per-sample sizes. */
void dfl_k_concat_fwd(const float *a, const float *b, float *y, int N, size_t Sa, size_t Sb);
/* da += y-slice, db += y-slice. dy (N, Sa + Sb), da (N, Sa) or NULL, db (N, Sb) or NULL. */
void dfl_k_concat_bwd(const float *dy, float *da, float *db, int N, size_t Sa, size_t Sb);
/* Naive references of the channel concat: a (N, Sa), b (N, Sb), y / dy (N, Sa + Sb). */
void dfl_k_concat_fwd_ref(const float *a, const float *b, float *y, int N, size_t Sa, size_t Sb);
/* Backward reference: da += dy[:, :Sa], db += dy[:, Sa:] (either may be NULL). */
void dfl_k_concat_bwd_ref(const float *dy, float *da, float *db, int N, size_t Sa, size_t Sb);
/* Naive reference of dfl_k_avg_pool2_fwd: x (P, H, W), y (P, H/2, W/2). */
void dfl_k_avg_pool2_fwd_ref(const float *x, float *y, int P, int H, int W);
/* Naive reference of dfl_k_avg_pool2_bwd: dy (P, H/2, W/2), dx (P, H, W). */
void dfl_k_avg_pool2_bwd_ref(const float *dy, float *dx, int P, int H, int W);
/* Naive reference of dfl_k_upsample2_fwd: x (P, H, W), y (P, 2H, 2W). */
void dfl_k_upsample2_fwd_ref(const float *x, float *y, int P, int H, int W);
/* Naive reference of dfl_k_upsample2_bwd: dy (P, 2H, 2W), dx (P, H, W). */
void dfl_k_upsample2_bwd_ref(const float *dy, float *dx, int P, int H, int W);

/* ================================================================ reductions (ops_reduce.c) */

/* Sum of x (n), accumulated in double. */
double dfl_k_sum(const float *x, size_t n);
/* dx += g (the same value everywhere). dx (n). */
void dfl_k_fill_add(float g, float *dx, size_t n);
/* Weighted squared error sum: sum_i w[i / (n/N)] (a_i - b_i)^2 in double (not divided by n).
 * a (n), b (n), w (N) or NULL (w = 1); N divides n (N = leading dim). */
double dfl_k_sq_err(const float *a, const float *b, const float *w, size_t n, int N);
/* Backward of g * sq_err: da += 2 g w (a - b), db -= 2 g w (a - b). a, b (n), w (N) or NULL,
 * da, db (n) or NULL. */
void dfl_k_sq_err_bwd(const float *a, const float *b, const float *w, float g, float *da,
                      float *db, size_t n, int N);
/* Naive sum of n floats in double (reference of dfl_k_sum). */
double dfl_k_sum_ref(const float *x, size_t n);
/* Naive dx[i] += g for i < n (reference of dfl_k_fill_add). */
void dfl_k_fill_add_ref(float g, float *dx, size_t n);
/* Naive reference of dfl_k_sq_err: weighted sum of (a - b)^2 over n values, w (N) per sample or NULL. */
double dfl_k_sq_err_ref(const float *a, const float *b, const float *w, size_t n, int N);
/* Naive reference of dfl_k_sq_err_bwd: da += g w_i 2 (a - b), db -= the same (da/db may be NULL),
 * n values over N samples, w (N) or NULL. */
void dfl_k_sq_err_bwd_ref(const float *a, const float *b, const float *w, float g, float *da,
                          float *db, size_t n, int N);

#ifdef __cplusplus
}
#endif
#endif
