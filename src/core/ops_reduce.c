/* Reductions to a scalar: sum, mean and the (per-sample weighted) mean squared error used as
 * the training loss (DESIGN section 3, "Kernels"). Sums are accumulated in double. */
#include "difflow/kernels.h"
#include "difflow/ops.h"

#include <string.h>

#define PAR_MIN (1L << 15)

double dfl_k_sum(const float *x, size_t n)
{
    long ln = (long)n;
    double s = 0.0;
#pragma omp parallel for simd schedule(static) reduction(+ : s) if (ln > PAR_MIN)
    for (long i = 0; i < ln; i++) s += x[i];
    return s;
}

void dfl_k_fill_add(float g, float *dx, size_t n)
{
    long ln = (long)n;
#pragma omp parallel for schedule(static) if (ln > PAR_MIN)
    for (long i = 0; i < ln; i++) dx[i] += g;
}

double dfl_k_sq_err(const float *a, const float *b, const float *w, size_t n, int N)
{
    long per = (long)(n / (size_t)N);
    double total = 0.0;
#pragma omp parallel for schedule(static) reduction(+ : total) if ((long)n > PAR_MIN)
    for (int s = 0; s < N; s++) {
        const float *as = a + (size_t)s * per, *bs = b + (size_t)s * per;
        double acc = 0.0;
#pragma omp simd reduction(+ : acc)
        for (long i = 0; i < per; i++) {
            double d = (double)as[i] - (double)bs[i];
            acc += d * d;
        }
        total += (w ? (double)w[s] : 1.0) * acc;
    }
    return total;
}

void dfl_k_sq_err_bwd(const float *a, const float *b, const float *w, float g, float *da,
                      float *db, size_t n, int N)
{
    long per = (long)(n / (size_t)N);
#pragma omp parallel for schedule(static) if ((long)n > PAR_MIN)
    for (int s = 0; s < N; s++) {
        float c = 2.0f * g * (w ? w[s] : 1.0f);
        const float *as = a + (size_t)s * per, *bs = b + (size_t)s * per;
        if (da) {
            float *d = da + (size_t)s * per;
            for (long i = 0; i < per; i++) d[i] += c * (as[i] - bs[i]);
        }
        if (db) {
            float *d = db + (size_t)s * per;
            for (long i = 0; i < per; i++) d[i] -= c * (as[i] - bs[i]);
        }
    }
}

static const int scalar_shape[1] = {1};

static void sum_backward(dfl_ctx *ctx, dfl_node *nd)
{
    float *dx = dfl_grad_of(ctx, nd->in[0]);
    if (dx) dfl_k_fill_add(nd->out->grad[0] * nd->farg[0], dx, nd->in[0]->n);
}

/* sum (scale 1) and mean (scale 1/n) */
static dfl_tensor *reduce_op(dfl_ctx *ctx, dfl_tensor *x, int mean)
{
    if (!ctx || !x) return NULL;
    dfl_tensor *in[1] = {x};
    dfl_tensor *out = dfl_op_output(ctx, 1, scalar_shape, in, 1);
    if (!out) return NULL;
    double s = dfl_k_sum(x->data, x->n);
    float scale = mean ? (float)(1.0 / (double)x->n) : 1.0f;
    out->data[0] = (float)(mean ? s / (double)x->n : s);
    dfl_node *nd = dfl_tape_push(ctx, sum_backward, mean ? "mean" : "sum", out, in, 1);
    if (nd) nd->farg[0] = scale;
    return out;
}

dfl_tensor *dfl_sum(dfl_ctx *ctx, dfl_tensor *x) { return reduce_op(ctx, x, 0); }
dfl_tensor *dfl_mean(dfl_ctx *ctx, dfl_tensor *x) { return reduce_op(ctx, x, 1); }

static void mse_backward(dfl_ctx *ctx, dfl_node *nd)
{
    dfl_tensor *a = nd->in[0], *b = nd->in[1];
    float *da = dfl_grad_of(ctx, a), *db = dfl_grad_of(ctx, b);
    if (!da && !db) return;
    float g = (float)((double)nd->out->grad[0] / (double)a->n);
    dfl_k_sq_err_bwd(a->data, b->data, nd->saved[0], g, da, db, a->n, a->shape[0]);
}

dfl_tensor *dfl_mse(dfl_ctx *ctx, dfl_tensor *a, dfl_tensor *b, const float *w)
{
    if (!ctx || !a || !b) return NULL;
    if (!dfl_same_shape(a, b)) {
        char s1[64], s2[64];
        dfl_fail(DFL_ERR_SHAPE, "mse: shapes %s and %s differ", dfl_shape_str(a, s1, sizeof s1),
                 dfl_shape_str(b, s2, sizeof s2));
        return NULL;
    }
    int N = a->shape[0];
    dfl_tensor *in[2] = {a, b};
    dfl_tensor *out = dfl_op_output(ctx, 1, scalar_shape, in, 2);
    if (!out) return NULL;
    out->data[0] = (float)(dfl_k_sq_err(a->data, b->data, w, a->n, N) / (double)a->n);
    dfl_node *nd = dfl_tape_push(ctx, mse_backward, "mse", out, in, 2);
    if (nd && w) {
        /* the caller's weights may change before backward: keep a copy */
        float *wc = dfl_arena_alloc(ctx, (size_t)N * sizeof(float));
        if (!wc) return NULL;
        memcpy(wc, w, (size_t)N * sizeof(float));
        nd->saved[0] = wc;
    }
    return out;
}
