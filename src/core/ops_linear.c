/* Linear layer y = x W^T + b (PyTorch nn.Linear layout), DESIGN section 3 "Kernels".
 *
 * Forward and backward are one GEMM each (dfl_k_sgemm: oneDNN or OpenBLAS) over the whole batch
 * (rows of x), called outside any parallel region so the GEMM threads itself. */
#include "difflow/kernels.h"
#include "difflow/ops.h"


void dfl_k_linear_fwd(const float *x, const float *w, const float *b, float *y, int M, int K, int N)
{
    float beta = 0.0f;
    if (b) {
        for (int m = 0; m < M; m++) {
            float *yr = y + (size_t)m * N;
            for (int j = 0; j < N; j++) yr[j] = b[j];
        }
        beta = 1.0f;
    }
    dfl_k_sgemm(0, 1, M, N, K, 1.0f, x, K, w, K, beta, y, N);
}

void dfl_k_linear_bwd(const float *x, const float *w, const float *dy, float *dx, float *dw,
                      float *db, int M, int K, int N)
{
    /* dx (M,K) += dy (M,N) W (N,K) */
    if (dx)
        dfl_k_sgemm(0, 0, M, K, N, 1.0f, dy, N, w, K, 1.0f, dx, K);
    /* dW (N,K) += dy^T (N,M) x (M,K) */
    if (dw)
        dfl_k_sgemm(1, 0, N, K, M, 1.0f, dy, N, x, K, 1.0f, dw, K);
    if (db) {
        for (int m = 0; m < M; m++) {
            const float *g = dy + (size_t)m * N;
            for (int j = 0; j < N; j++) db[j] += g[j];
        }
    }
}

static void linear_backward(dfl_ctx *ctx, dfl_node *nd)
{
    dfl_tensor *x = nd->in[0], *W = nd->in[1], *b = nd->nin > 2 ? nd->in[2] : NULL;
    int N = W->shape[0], K = W->shape[1];
    int M = (int)(x->n / (size_t)K);
    dfl_k_linear_bwd(x->data, W->data, nd->out->grad, dfl_grad_of(ctx, x), dfl_grad_of(ctx, W),
                     b ? dfl_grad_of(ctx, b) : NULL, M, K, N);
}

dfl_tensor *dfl_linear(dfl_ctx *ctx, dfl_tensor *x, dfl_tensor *W, dfl_tensor *b)
{
    if (!ctx || !x || !W) return NULL;
    char s1[64], s2[64];
    if (W->ndim != 2 || x->shape[x->ndim - 1] != W->shape[1]) {
        dfl_fail(DFL_ERR_SHAPE, "linear: input %s and weight %s disagree (need x (..., in), W (out, in))",
                 dfl_shape_str(x, s1, sizeof s1), dfl_shape_str(W, s2, sizeof s2));
        return NULL;
    }
    int N = W->shape[0], K = W->shape[1];
    if (b && (b->ndim != 1 || b->shape[0] != N)) {
        dfl_fail(DFL_ERR_SHAPE, "linear: bias %s must be (%d) for weight %s",
                 dfl_shape_str(b, s1, sizeof s1), N, dfl_shape_str(W, s2, sizeof s2));
        return NULL;
    }
    int M = (int)(x->n / (size_t)K);
    int shape[DFL_MAX_DIMS];
    for (int i = 0; i < x->ndim; i++) shape[i] = x->shape[i];
    shape[x->ndim - 1] = N;
    dfl_tensor *in[3] = {x, W, b};
    int nin = b ? 3 : 2;
    dfl_tensor *out = dfl_op_output(ctx, x->ndim, shape, in, nin);
    if (!out) return NULL;
    dfl_k_linear_fwd(x->data, W->data, b ? b->data : NULL, out->data, M, K, N);
    dfl_tape_push(ctx, linear_backward, "linear", out, in, nin);
    return out;
}
