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

#ifdef __cplusplus
}
#endif
#endif
