/* Parameterizations (network output -> (x0_hat, eps_hat)) and training losses
 * (DESIGN section 4; shared/reference/diffusion.md 1.3-1.5). */
#include "difflow/gen.h"
#include "difflow/ops.h"

#include <math.h>
#include <string.h>

/* EDM preconditioning (EDM Table 1, "EDM" column), for the ratio s (alpha = 1). */
static void edm_precond(double s, double sd, double *c_skip, double *c_out, double *c_in, double *c_noise)
{
    double v = s * s + sd * sd;
    *c_skip = sd * sd / v;
    *c_out = s * sd / sqrt(v);
    *c_in = 1.0 / sqrt(v);
    *c_noise = 0.25 * log(s);
}

float dfl_model_cnoise(const dfl_model *m, double t)
{
    if (m->proc.family == DFL_FAMILY_EDM) return (float)(0.25 * log(dfl_sigma(&m->proc, t)));
    return (float)t;
}

dfl_status dfl_model_coeffs(const dfl_model *m, double t, dfl_pred_coeffs *k)
{
    const dfl_process *p = &m->proc;
    double sig = dfl_sigma(p, t);
    k->c_noise = dfl_model_cnoise(m, t);
    if (p->family == DFL_FAMILY_FM) {
        k->c_in = 1;
        k->a = 1;
        k->b = -t;
        k->c = 1;
        k->d = 1 - t;
        return DFL_OK;
    }
    if (!(sig > 0)) return dfl_fail(DFL_ERR_ARG, "denoise: EDM needs sigma > 0 (got t = %g)", t);
    double c_skip, c_out, c_in, c_noise;
    edm_precond(sig, p->sigma_data, &c_skip, &c_out, &c_in, &c_noise);
    k->c_in = c_in;
    k->a = c_skip;
    k->b = c_out;
    k->c = (1 - c_skip) / sig;
    k->d = -c_out / sig;
    return DFL_OK;
}

dfl_status dfl_denoise(dfl_ctx *ctx, const dfl_model *m, const float *x, int ndim, const int *shape,
                       double t, float *x0_hat, float *eps_hat)
{
    size_t n = dfl_shape_numel(ndim, shape);
    if (n == 0) return dfl_fail(DFL_ERR_SHAPE, "denoise: invalid shape");
    dfl_pred_coeffs k;
    dfl_status st = dfl_model_coeffs(m, t, &k);
    if (st) return st;
    int N = shape[0];
    int old = dfl_ctx_set_grad(ctx, 0);
    dfl_tensor *xin = dfl_tensor_tmp(ctx, ndim, shape);
    int ts[1] = {N};
    dfl_tensor *tt = dfl_tensor_tmp(ctx, 1, ts);
    dfl_tensor *F = NULL;
    if (xin && tt) {
        for (int i = 0; i < N; i++) tt->data[i] = k.c_noise;
        for (size_t i = 0; i < n; i++) xin->data[i] = (float)(k.c_in * x[i]);
        F = dfl_net_forward(ctx, m->net, xin, tt);
    }
    dfl_ctx_set_grad(ctx, old);
    if (!F) return xin && tt ? DFL_ERR_SHAPE : DFL_ERR_NOMEM;
    for (size_t i = 0; i < n; i++) {
        double f = F->data[i];
        if (x0_hat) x0_hat[i] = (float)(k.a * x[i] + k.b * f);
        if (eps_hat) eps_hat[i] = (float)(k.c * x[i] + k.d * f);
    }
    return DFL_OK;
}

dfl_tensor *dfl_model_loss(dfl_ctx *ctx, const dfl_model *m, const float *x0, int ndim, const int *shape,
                           dfl_rng *rng)
{
    size_t n = dfl_shape_numel(ndim, shape);
    if (n == 0) {
        dfl_fail(DFL_ERR_SHAPE, "loss: invalid batch shape");
        return NULL;
    }
    int N = shape[0];
    size_t per = n / (size_t)N;
    const dfl_process *p = &m->proc;
    int ts[1] = {N};
    dfl_tensor *xin = dfl_tensor_tmp(ctx, ndim, shape);
    dfl_tensor *target = dfl_tensor_tmp(ctx, ndim, shape);
    dfl_tensor *tt = dfl_tensor_tmp(ctx, 1, ts);
    if (!xin || !target || !tt) return NULL;
    for (int b = 0; b < N; b++) {
        const float *y = x0 + (size_t)b * per;
        float *xi = xin->data + (size_t)b * per, *tg = target->data + (size_t)b * per;
        if (p->family == DFL_FAMILY_FM) {
            double t = dfl_rng_uniform_d(rng);
            tt->data[b] = (float)t;
            for (size_t i = 0; i < per; i++) {
                float e = dfl_rng_normal(rng);
                xi[i] = (float)((1.0 - t) * y[i] + t * e);
                tg[i] = e - y[i];
            }
        } else {
            double s = exp(p->P_mean + p->P_std * dfl_rng_normal(rng));
            double c_skip, c_out, c_in, c_noise;
            edm_precond(s, p->sigma_data, &c_skip, &c_out, &c_in, &c_noise);
            tt->data[b] = (float)c_noise;
            for (size_t i = 0; i < per; i++) {
                double xn = y[i] + s * dfl_rng_normal(rng);
                xi[i] = (float)(c_in * xn);
                tg[i] = (float)((y[i] - c_skip * xn) / c_out);
            }
        }
    }
    dfl_tensor *F = dfl_net_forward(ctx, m->net, xin, tt);
    return dfl_mse(ctx, F, target, NULL);
}
