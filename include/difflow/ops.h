/* difflow ops: differentiable tensor operations recorded on the ctx's tape.
 *
 * Each op validates shapes (DFL_ERR_SHAPE and NULL on mismatch), returns NULL if any input is
 * NULL, allocates its output in the ctx arena and, when recording and an input requires grad,
 * pushes a tape node. The raw kernels behind them (forward/backward pairs over float buffers)
 * are declared in kernels.h, with naive references used by the tests.
 */
#ifndef DIFFLOW_OPS_H
#define DIFFLOW_OPS_H

#include "difflow/core.h"

#ifdef __cplusplus
extern "C" {
#endif

/* y = x W^T + b. x (..., in) with the leading dims flattened to rows M; W [out, in] (PyTorch
 * Linear layout); b [out] or NULL. y (..., out). */
dfl_tensor *dfl_linear(dfl_ctx *ctx, dfl_tensor *x, dfl_tensor *W, dfl_tensor *b);

/* 2-D convolution, stride 1, zero padding `pad` on every side. x (N,C,H,W), W (O,C,k,k),
 * b (O) or NULL. y (N,O,H+2pad-k+1, W+2pad-k+1). Used with k=3,pad=1 and k=1,pad=0. */
dfl_tensor *dfl_conv2d(dfl_ctx *ctx, dfl_tensor *x, dfl_tensor *W, dfl_tensor *b, int pad);

/* GroupNorm (Wu & He 2018): x (N,C,...) normalised over each of G groups of C/G channels and
 * all spatial positions, biased variance, then y = xhat*gamma[c] + beta[c]. gamma,beta (C). */
dfl_tensor *dfl_group_norm(dfl_ctx *ctx, dfl_tensor *x, dfl_tensor *gamma, dfl_tensor *beta,
                           int groups, float eps);

/* Fused silu(group_norm(x)): the same values as dfl_silu(dfl_group_norm(...)) without storing the
 * normalised tensor (the backward recomputes it from x and the statistics). Arguments and errors
 * as dfl_group_norm. (GN + SiLU is the pre-activation of every U-Net ResBlock convolution.) */
dfl_tensor *dfl_group_norm_silu(dfl_ctx *ctx, dfl_tensor *x, dfl_tensor *gamma, dfl_tensor *beta,
                                int groups, float eps);

/* SiLU (swish): y = x * sigmoid(x), elementwise. */
dfl_tensor *dfl_silu(dfl_ctx *ctx, dfl_tensor *x);

/* Elementwise with broadcasting (NumPy rules, shapes right-aligned): a+b, a-b, a*b. */
dfl_tensor *dfl_add(dfl_ctx *ctx, dfl_tensor *a, dfl_tensor *b);
dfl_tensor *dfl_sub(dfl_ctx *ctx, dfl_tensor *a, dfl_tensor *b);
dfl_tensor *dfl_mul(dfl_ctx *ctx, dfl_tensor *a, dfl_tensor *b);
/* y = s * x (s a constant, no gradient to s). */
dfl_tensor *dfl_scale(dfl_ctx *ctx, dfl_tensor *x, float s);
/* y[n, c, h, w] = x[n, c, h, w] + v[n, c]: x (N,C,H,W), v (N,C). (Time-embedding broadcast.) */
dfl_tensor *dfl_add_channel(dfl_ctx *ctx, dfl_tensor *x, dfl_tensor *v);

/* 2x2 average pooling, stride 2: (N,C,H,W) -> (N,C,H/2,W/2); H and W must be even. */
dfl_tensor *dfl_avg_pool2(dfl_ctx *ctx, dfl_tensor *x);
/* 2x nearest-neighbour upsampling: (N,C,H,W) -> (N,C,2H,2W). */
dfl_tensor *dfl_upsample2(dfl_ctx *ctx, dfl_tensor *x);
/* Concatenate on dim 1 (channels): (N,Ca,...) ++ (N,Cb,...) -> (N,Ca+Cb,...). */
dfl_tensor *dfl_concat_channels(dfl_ctx *ctx, dfl_tensor *a, dfl_tensor *b);

/* Reductions to a scalar tensor of shape (1). */
dfl_tensor *dfl_sum(dfl_ctx *ctx, dfl_tensor *x);
dfl_tensor *dfl_mean(dfl_ctx *ctx, dfl_tensor *x);
/* Weighted mean squared error: (1/n) sum_i w[i / (n/N)] (a_i - b_i)^2, with w (N) per sample
 * (leading dim) or NULL for w = 1. a, b same shape; output shape (1). */
dfl_tensor *dfl_mse(dfl_ctx *ctx, dfl_tensor *a, dfl_tensor *b, const float *w);


/* ================================================================ flow ops (ops_math.c)
 * Elementwise maps, per-sample reductions, channel/column slicing, the 2x2 squeeze and small
 * dense-matrix ops used by the normalizing flows (flow.h; reference/flows.md). Same conventions
 * as above; every op has a backward checked against finite differences in test_ops_math. */

/* Elementwise y = f(x): exp; log (x > 0); tanh; logistic sigmoid 1/(1+e^-x); ReLU max(x, 0)
 * (derivative 0 at 0); softplus ln(1 + e^x) (stable form max(x,0) + ln(1 + e^-|x|));
 * logit ln x - ln(1 - x) (x in (0, 1)). Any shape. */
dfl_tensor *dfl_exp(dfl_ctx *ctx, dfl_tensor *x);
dfl_tensor *dfl_log(dfl_ctx *ctx, dfl_tensor *x);
dfl_tensor *dfl_tanh(dfl_ctx *ctx, dfl_tensor *x);
dfl_tensor *dfl_sigmoid(dfl_ctx *ctx, dfl_tensor *x);
dfl_tensor *dfl_relu(dfl_ctx *ctx, dfl_tensor *x);
dfl_tensor *dfl_softplus(dfl_ctx *ctx, dfl_tensor *x);
dfl_tensor *dfl_logit(dfl_ctx *ctx, dfl_tensor *x);
/* y = a x + b with constants a, b (no gradient to them). Any shape. */
dfl_tensor *dfl_affine_scalar(dfl_ctx *ctx, dfl_tensor *x, float a, float b);
/* Per-sample sum: x (N, ...) -> (N), accumulated in double. */
dfl_tensor *dfl_sum_per_sample(dfl_ctx *ctx, dfl_tensor *x);
/* Copy with a new shape of the same element count (row-major order kept). */
dfl_tensor *dfl_reshape(dfl_ctx *ctx, dfl_tensor *x, int ndim, const int *shape);
/* Channels [c0, c1) of dim 1: (N, C, ...) -> (N, c1 - c0, ...); 0 <= c0 < c1 <= C. */
dfl_tensor *dfl_slice_channels(dfl_ctx *ctx, dfl_tensor *x, int c0, int c1);
/* Columns start, start + 2, ... of x (N, D) -> (N, (D - start + 1)/2); start 0 or 1 (NICE's
 * even/odd partition). */
dfl_tensor *dfl_take_alternate(dfl_ctx *ctx, dfl_tensor *x, int start);
/* Inverse of the partition: even (N, ceil(D/2)) and odd (N, floor(D/2)) -> y (N, D) with
 * y[:, 2i] = even[:, i], y[:, 2i+1] = odd[:, i]. */
dfl_tensor *dfl_merge_alternate(dfl_ctx *ctx, dfl_tensor *even, dfl_tensor *odd);
/* Space-to-depth 2x2 squeeze (RealNVP Sec. 3.6; Glow tfops.squeeze2d mapping):
 * x (N, C, H, W) -> y (N, 4C, H/2, W/2), y[n, 4c + 2dy + dx, i, j] = x[n, c, 2i + dy, 2j + dx].
 * H and W must be even (DFL_ERR_SHAPE). dfl_unsqueeze2x2 is its exact inverse
 * ((N, 4C, H, W) -> (N, C, 2H, 2W)). */
dfl_tensor *dfl_squeeze2x2(dfl_ctx *ctx, dfl_tensor *x);
dfl_tensor *dfl_unsqueeze2x2(dfl_ctx *ctx, dfl_tensor *x);
/* Glow's LU-parameterised 1x1-conv weight (Kingma & Dhariwal 2018, Sec. 3.2, Eq. 10):
 * W = P (I + strict_lower(L)) (strict_upper(U) + diag(sign * exp(log_s))). L, U (C, C): only their
 * strict lower / strict upper parts are used (the rest gets zero gradient); log_s (C); perm (C)
 * the fixed permutation as row gather (P M)[i, :] = M[perm[i], :]; sign (C) fixed +-1.
 * W (C, C), composed in double. Errors (NULL + message): DFL_ERR_SHAPE unless L, U are (C, C)
 * and log_s has C entries; DFL_ERR_ARG for a perm entry outside [0, C); DFL_ERR_NOMEM. A NULL
 * ctx, L, U or log_s gives NULL without a message. */
dfl_tensor *dfl_lu_weight(dfl_ctx *ctx, dfl_tensor *L, dfl_tensor *U, dfl_tensor *log_s,
                          const int *perm, const float *sign);
/* Inverse of a square matrix W (C, C), Gauss-Jordan with partial pivoting in double; backward
 * dW = -Y^T dY Y^T with Y = W^-1. DFL_ERR_NUMERIC if W is singular or not finite. */
dfl_tensor *dfl_mat_inverse(dfl_ctx *ctx, dfl_tensor *W);
/* ln|det W| of a square W (C, C) -> (1), LU with partial pivoting in double; backward
 * dW = g W^-T. DFL_ERR_NUMERIC if W is singular (a zero pivot) or not finite. */
dfl_tensor *dfl_mat_logabsdet(dfl_ctx *ctx, dfl_tensor *W);
/* ln|det| of a row-major C x C matrix in double by LU with partial pivoting; also returns the
 * smallest |pivot| divided by the largest |entry| in *rcond_pivot (a cheap singularity gauge;
 * may be NULL). -INFINITY for a singular matrix. */
double dfl_logabsdet_d(const double *A, int C, double *rcond_pivot);
/* Inverse of a row-major C x C matrix in double (Gauss-Jordan, partial pivoting) into Ainv.
 * Returns 0, or -1 if singular. */
int dfl_inverse_d(const double *A, int C, double *Ainv);

#ifdef __cplusplus
}
#endif
#endif
