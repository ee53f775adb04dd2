/* Resolution and channel ops of the U-Net: 2x2 average pooling, 2x nearest upsampling and
 * channel concatenation (DESIGN section 3, "Kernels"; section 13, fmnist-unet-s). Parallel over
 * planes when the tensor is large. */
#include "difflow/kernels.h"
#include "difflow/ops.h"

#include <string.h>

#define PAR_MIN (1L << 15)

/* ------------------------------------------------------------------ avg_pool2 */

void dfl_k_avg_pool2_fwd(const float *x, float *y, int P, int H, int W)
{
    int Ho = H / 2, Wo = W / 2;
#pragma omp parallel for schedule(static) if ((long)P * H * W > PAR_MIN)
    for (int p = 0; p < P; p++) {
        const float *xp = x + (size_t)p * H * W;
        float *yp = y + (size_t)p * Ho * Wo;
        for (int i = 0; i < Ho; i++) {
            const float *r0 = xp + (size_t)(2 * i) * W, *r1 = r0 + W;
            float *yr = yp + (size_t)i * Wo;
            for (int j = 0; j < Wo; j++)
                yr[j] = 0.25f * ((r0[2 * j] + r0[2 * j + 1]) + (r1[2 * j] + r1[2 * j + 1]));
        }
    }
}

void dfl_k_avg_pool2_bwd(const float *dy, float *dx, int P, int H, int W)
{
    int Ho = H / 2, Wo = W / 2;
#pragma omp parallel for schedule(static) if ((long)P * H * W > PAR_MIN)
    for (int p = 0; p < P; p++) {
        const float *gp = dy + (size_t)p * Ho * Wo;
        float *dp = dx + (size_t)p * H * W;
        for (int i = 0; i < Ho; i++) {
            const float *gr = gp + (size_t)i * Wo;
            float *d0 = dp + (size_t)(2 * i) * W, *d1 = d0 + W;
            for (int j = 0; j < Wo; j++) {
                float g = 0.25f * gr[j];
                d0[2 * j] += g;
                d0[2 * j + 1] += g;
                d1[2 * j] += g;
                d1[2 * j + 1] += g;
            }
        }
    }
}

static void avg_pool2_backward(dfl_ctx *ctx, dfl_node *nd)
{
    dfl_tensor *x = nd->in[0];
    float *dx = dfl_grad_of(ctx, x);
    if (dx)
        dfl_k_avg_pool2_bwd(nd->out->grad, dx, x->shape[0] * x->shape[1], x->shape[2], x->shape[3]);
}

dfl_tensor *dfl_avg_pool2(dfl_ctx *ctx, dfl_tensor *x)
{
    if (!ctx || !x) return NULL;
    if (x->ndim != 4 || x->shape[2] % 2 || x->shape[3] % 2) {
        char s[64];
        dfl_fail(DFL_ERR_SHAPE, "avg_pool2: input %s must be (N,C,H,W) with H and W even",
                 dfl_shape_str(x, s, sizeof s));
        return NULL;
    }
    int shape[4] = {x->shape[0], x->shape[1], x->shape[2] / 2, x->shape[3] / 2};
    dfl_tensor *in[1] = {x};
    dfl_tensor *out = dfl_op_output(ctx, 4, shape, in, 1);
    if (!out) return NULL;
    dfl_k_avg_pool2_fwd(x->data, out->data, x->shape[0] * x->shape[1], x->shape[2], x->shape[3]);
    dfl_tape_push(ctx, avg_pool2_backward, "avg_pool2", out, in, 1);
    return out;
}

/* ------------------------------------------------------------------ upsample2 */

void dfl_k_upsample2_fwd(const float *x, float *y, int P, int H, int W)
{
    int W2 = 2 * W;
#pragma omp parallel for schedule(static) if ((long)P * H * W * 4 > PAR_MIN)
    for (int p = 0; p < P; p++) {
        const float *xp = x + (size_t)p * H * W;
        float *yp = y + (size_t)p * 4 * H * W;
        for (int i = 0; i < H; i++) {
            const float *xr = xp + (size_t)i * W;
            float *y0 = yp + (size_t)(2 * i) * W2, *y1 = y0 + W2;
            for (int j = 0; j < W; j++) {
                float v = xr[j];
                y0[2 * j] = v;
                y0[2 * j + 1] = v;
            }
            memcpy(y1, y0, (size_t)W2 * sizeof(float));
        }
    }
}

void dfl_k_upsample2_bwd(const float *dy, float *dx, int P, int H, int W)
{
    int W2 = 2 * W;
#pragma omp parallel for schedule(static) if ((long)P * H * W * 4 > PAR_MIN)
    for (int p = 0; p < P; p++) {
        const float *gp = dy + (size_t)p * 4 * H * W;
        float *dp = dx + (size_t)p * H * W;
        for (int i = 0; i < H; i++) {
            const float *g0 = gp + (size_t)(2 * i) * W2, *g1 = g0 + W2;
            float *dr = dp + (size_t)i * W;
            for (int j = 0; j < W; j++)
                dr[j] += (g0[2 * j] + g0[2 * j + 1]) + (g1[2 * j] + g1[2 * j + 1]);
        }
    }
}

static void upsample2_backward(dfl_ctx *ctx, dfl_node *nd)
{
    dfl_tensor *x = nd->in[0];
    float *dx = dfl_grad_of(ctx, x);
    if (dx)
        dfl_k_upsample2_bwd(nd->out->grad, dx, x->shape[0] * x->shape[1], x->shape[2], x->shape[3]);
}

dfl_tensor *dfl_upsample2(dfl_ctx *ctx, dfl_tensor *x)
{
    if (!ctx || !x) return NULL;
    if (x->ndim != 4) {
        char s[64];
        dfl_fail(DFL_ERR_SHAPE, "upsample2: input %s must be (N,C,H,W)", dfl_shape_str(x, s, sizeof s));
        return NULL;
    }
    int shape[4] = {x->shape[0], x->shape[1], 2 * x->shape[2], 2 * x->shape[3]};
    dfl_tensor *in[1] = {x};
    dfl_tensor *out = dfl_op_output(ctx, 4, shape, in, 1);
    if (!out) return NULL;
    dfl_k_upsample2_fwd(x->data, out->data, x->shape[0] * x->shape[1], x->shape[2], x->shape[3]);
    dfl_tape_push(ctx, upsample2_backward, "upsample2", out, in, 1);
    return out;
}

/* ------------------------------------------------------------------ concat_channels */

void dfl_k_concat_fwd(const float *a, const float *b, float *y, int N, size_t Sa, size_t Sb)
{
#pragma omp parallel for schedule(static) if ((long)N * (long)(Sa + Sb) > PAR_MIN)
    for (int n = 0; n < N; n++) {
        float *yn = y + (size_t)n * (Sa + Sb);
        memcpy(yn, a + (size_t)n * Sa, Sa * sizeof(float));
        memcpy(yn + Sa, b + (size_t)n * Sb, Sb * sizeof(float));
    }
}

void dfl_k_concat_bwd(const float *dy, float *da, float *db, int N, size_t Sa, size_t Sb)
{
#pragma omp parallel for schedule(static) if ((long)N * (long)(Sa + Sb) > PAR_MIN)
    for (int n = 0; n < N; n++) {
        const float *g = dy + (size_t)n * (Sa + Sb);
        if (da) {
            float *d = da + (size_t)n * Sa;
            for (size_t i = 0; i < Sa; i++) d[i] += g[i];
        }
        if (db) {
            float *d = db + (size_t)n * Sb;
            for (size_t i = 0; i < Sb; i++) d[i] += g[Sa + i];
        }
    }
}

static void concat_backward(dfl_ctx *ctx, dfl_node *nd)
{
    dfl_tensor *a = nd->in[0], *b = nd->in[1];
    int N = a->shape[0];
    dfl_k_concat_bwd(nd->out->grad, dfl_grad_of(ctx, a), dfl_grad_of(ctx, b), N,
                     a->n / (size_t)N, b->n / (size_t)N);
}

dfl_tensor *dfl_concat_channels(dfl_ctx *ctx, dfl_tensor *a, dfl_tensor *b)
{
    if (!ctx || !a || !b) return NULL;
    int ok = a->ndim >= 2 && a->ndim == b->ndim && a->shape[0] == b->shape[0];
    for (int d = 2; ok && d < a->ndim; d++) ok = a->shape[d] == b->shape[d];
    if (!ok) {
        char s1[64], s2[64];
        dfl_fail(DFL_ERR_SHAPE, "concat_channels: %s and %s differ outside dim 1",
                 dfl_shape_str(a, s1, sizeof s1), dfl_shape_str(b, s2, sizeof s2));
        return NULL;
    }
    int shape[DFL_MAX_DIMS];
    for (int d = 0; d < a->ndim; d++) shape[d] = a->shape[d];
    shape[1] = a->shape[1] + b->shape[1];
    dfl_tensor *in[2] = {a, b};
    dfl_tensor *out = dfl_op_output(ctx, a->ndim, shape, in, 2);
    if (!out) return NULL;
    int N = a->shape[0];
    dfl_k_concat_fwd(a->data, b->data, out->data, N, a->n / (size_t)N, b->n / (size_t)N);
    dfl_tape_push(ctx, concat_backward, "concat_channels", out, in, 2);
    return out;
}
