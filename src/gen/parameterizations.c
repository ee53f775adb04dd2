/* Parameterizations (network output -> (x0_hat, eps_hat)) and training losses
 * (DESIGN section 4; shared/reference/diffusion.md 1.3-1.5). */
#include "difflow/gen.h"
#include "difflow/ops.h"

#include <math.h>
#include <stdlib.h>
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
    const dfl_process *p = &m->proc;
    if (p->family == DFL_FAMILY_EDM || p->pred == DFL_PRED_EDM) return (float)(0.25 * log(dfl_ratio(p, t)));
    return (float)t;
}

/* Network input scale for the non-EDM parameterizations: 1/sqrt(alpha^2 + sigma^2), the inverse
 * std of x_t for unit-variance data (EDM Table 1 VP/iDDPM column c_in = 1/sqrt(s^2 + 1) applied
 * to x/alpha). FM with its velocity keeps c_in = 1 (the original FM network input). */
static double generic_cin(double al, double sg) { return 1.0 / sqrt(al * al + sg * sg); }

dfl_status dfl_model_coeffs(const dfl_model *m, double t, dfl_pred_coeffs *k)
{
    const dfl_process *p = &m->proc;
    dfl_status st = dfl_pred_check(p, p->pred);
    if (st) return st;
    double al = dfl_alpha(p, t), sg = dfl_sigma(p, t);
    k->c_noise = dfl_model_cnoise(m, t);
    switch (p->pred) {
    case DFL_PRED_VELOCITY:
        if (p->family == DFL_FAMILY_FM) {
            k->c_in = 1;
            k->a = 1;
            k->b = -t;
            k->c = 1;
            k->d = 1 - t;
            return DFL_OK;
        } else {
            /* u = alpha' x0 + sigma' eps and x = alpha x0 + sigma eps, solved for (x0, eps). */
            double da = dfl_dalpha(p, t), ds = dfl_dsigma(p, t), det = al * ds - sg * da;
            if (!(fabs(det) > 0) || !isfinite(det))
                return dfl_fail(DFL_ERR_ARG, "denoise: velocity parameterization is singular at t = %g", t);
            k->c_in = generic_cin(al, sg);
            k->a = ds / det;
            k->b = -sg / det;
            k->c = -da / det;
            k->d = al / det;
            return DFL_OK;
        }
    case DFL_PRED_EDM: {
        if (!(sg > 0) || !(al > 0))
            return dfl_fail(DFL_ERR_ARG, "denoise: EDM needs sigma > 0 and alpha > 0 (got t = %g)", t);
        /* D(x/alpha; s) with s = sigma/alpha (diffusion.md 1.3, last row). */
        double c_skip, c_out, c_in, c_noise;
        edm_precond(dfl_ratio(p, t), p->sigma_data, &c_skip, &c_out, &c_in, &c_noise);
        k->c_in = c_in / al;
        k->a = c_skip / al;
        k->b = c_out;
        k->c = (1 - c_skip) / sg;
        k->d = -al * c_out / sg;
        return DFL_OK;
    }
    case DFL_PRED_EPS:
        if (!(al > 0)) return dfl_fail(DFL_ERR_ARG, "denoise: eps parameterization needs alpha > 0 (got t = %g)", t);
        k->c_in = generic_cin(al, sg);
        k->a = 1 / al;
        k->b = -sg / al;
        k->c = 0;
        k->d = 1;
        return DFL_OK;
    case DFL_PRED_X0:
        if (!(sg > 0)) return dfl_fail(DFL_ERR_ARG, "denoise: x0 parameterization needs sigma > 0 (got t = %g)", t);
        k->c_in = generic_cin(al, sg);
        k->a = 0;
        k->b = 1;
        k->c = 1 / sg;
        k->d = -al / sg;
        return DFL_OK;
    case DFL_PRED_V:
        k->c_in = 1; /* alpha^2 + sigma^2 = 1 */
        k->a = al;
        k->b = -sg;
        k->c = sg;
        k->d = al;
        return DFL_OK;
    }
    return dfl_fail(DFL_ERR_ARG, "denoise: invalid parameterization %d", (int)p->pred);
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

/* Training time for one sample (documented with dfl_model_loss). */
static double draw_t(const dfl_process *p, dfl_rng *rng)
{
    switch (p->family) {
    case DFL_FAMILY_EDM: return exp(p->P_mean + p->P_std * dfl_rng_normal(rng));
    case DFL_FAMILY_DDPM: return (double)(dfl_rng_below(rng, DFL_DDPM_T) + 1) / DFL_DDPM_T;
    case DFL_FAMILY_FM: return dfl_rng_uniform_d(rng);
    default: return p->eps_t + (1.0 - p->eps_t) * dfl_rng_uniform_d(rng);
    }
}

/* Flow matching with minibatch OT pairing: all N noise vectors are drawn first (row-major), the
 * exact assignment minimizing sum_b |x0_b - eps_perm(b)|^2 pairs them with the data, then the N
 * times are drawn. */
static int fm_ot_batch(const float *x0, int N, size_t per, dfl_rng *rng, float *xi, float *tg, float *tt)
{
    float *E = malloc((size_t)N * per * sizeof *E);
    double *C = malloc((size_t)N * N * sizeof *C);
    int *perm = malloc((size_t)N * sizeof *perm);
    int ok = E && C && perm;
    if (ok) {
        dfl_rng_fill_normal(rng, E, (size_t)N * per);
        for (int i = 0; i < N; i++)
            for (int j = 0; j < N; j++) {
                double d2 = 0;
                for (size_t k = 0; k < per; k++) {
                    double d = (double)x0[(size_t)i * per + k] - E[(size_t)j * per + k];
                    d2 += d * d;
                }
                C[(size_t)i * N + j] = d2;
            }
        ok = dfl_ot_assign(C, N, perm, NULL) == DFL_OK;
    } else {
        dfl_fail(DFL_ERR_NOMEM, "loss: out of memory");
    }
    if (ok) {
        for (int b = 0; b < N; b++) {
            double t = dfl_rng_uniform_d(rng);
            tt[b] = (float)t;
            const float *y = x0 + (size_t)b * per, *e = E + (size_t)perm[b] * per;
            for (size_t i = 0; i < per; i++) {
                xi[(size_t)b * per + i] = (float)((1.0 - t) * y[i] + t * e[i]);
                tg[(size_t)b * per + i] = e[i] - y[i];
            }
        }
    }
    free(E);
    free(C);
    free(perm);
    return ok;
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
    if (dfl_pred_check(p, p->pred)) return NULL;
    if (p->fm_ot && !(p->family == DFL_FAMILY_FM && p->pred == DFL_PRED_VELOCITY)) {
        dfl_fail(DFL_ERR_ARG, "loss: minibatch OT pairing is for flow matching (fm, velocity) only");
        return NULL;
    }
    int ts[1] = {N};
    dfl_tensor *xin = dfl_tensor_tmp(ctx, ndim, shape);
    dfl_tensor *target = dfl_tensor_tmp(ctx, ndim, shape);
    dfl_tensor *tt = dfl_tensor_tmp(ctx, 1, ts);
    if (!xin || !target || !tt) return NULL;
    if (p->fm_ot) {
        if (!fm_ot_batch(x0, N, per, rng, xin->data, target->data, tt->data)) return NULL;
        dfl_tensor *F = dfl_net_forward(ctx, m->net, xin, tt);
        return dfl_mse(ctx, F, target, NULL);
    }
    for (int b = 0; b < N; b++) {
        const float *y = x0 + (size_t)b * per;
        float *xi = xin->data + (size_t)b * per, *tg = target->data + (size_t)b * per;
        if (p->family == DFL_FAMILY_FM && p->pred == DFL_PRED_VELOCITY) {
            double t = dfl_rng_uniform_d(rng);
            tt->data[b] = (float)t;
            for (size_t i = 0; i < per; i++) {
                float e = dfl_rng_normal(rng);
                xi[i] = (float)((1.0 - t) * y[i] + t * e);
                tg[i] = e - y[i];
            }
        } else if (p->family == DFL_FAMILY_EDM && p->pred == DFL_PRED_EDM) {
            double s = exp(p->P_mean + p->P_std * dfl_rng_normal(rng));
            double c_skip, c_out, c_in, c_noise;
            edm_precond(s, p->sigma_data, &c_skip, &c_out, &c_in, &c_noise);
            tt->data[b] = (float)c_noise;
            for (size_t i = 0; i < per; i++) {
                double xn = y[i] + s * dfl_rng_normal(rng);
                xi[i] = (float)(c_in * xn);
                tg[i] = (float)((y[i] - c_skip * xn) / c_out);
            }
        } else {
            double t = draw_t(p, rng);
            double al = dfl_alpha(p, t), sg = dfl_sigma(p, t), da = 0, ds = 0;
            double c_in, c_skip = 0, c_out = 1;
            if (p->pred == DFL_PRED_EDM) {
                double c_noise;
                edm_precond(dfl_ratio(p, t), p->sigma_data, &c_skip, &c_out, &c_in, &c_noise);
                c_in /= al;
            } else if (p->pred == DFL_PRED_V) {
                c_in = 1;
            } else {
                c_in = generic_cin(al, sg);
            }
            if (p->pred == DFL_PRED_VELOCITY) {
                da = dfl_dalpha(p, t);
                ds = dfl_dsigma(p, t);
            }
            tt->data[b] = dfl_model_cnoise(m, t);
            for (size_t i = 0; i < per; i++) {
                double e = dfl_rng_normal(rng), x = al * y[i] + sg * e, target_i;
                switch (p->pred) {
                case DFL_PRED_EPS: target_i = e; break;
                case DFL_PRED_X0: target_i = y[i]; break;
                case DFL_PRED_V: target_i = al * e - sg * y[i]; break;
                case DFL_PRED_VELOCITY: target_i = da * y[i] + ds * e; break;
                default: target_i = (y[i] - c_skip * x / al) / c_out; break; /* EDM F target */
                }
                xi[i] = (float)(c_in * x);
                tg[i] = (float)target_i;
            }
        }
    }
    dfl_tensor *F = dfl_net_forward(ctx, m->net, xin, tt);
    return dfl_mse(ctx, F, target, NULL);
}

dfl_tensor *dfl_model_loss_paired(dfl_ctx *ctx, const dfl_model *m, const float *x0, const float *eps, int ndim,
                                  const int *shape, dfl_rng *rng)
{
    size_t n = dfl_shape_numel(ndim, shape);
    if (n == 0 || !x0 || !eps) {
        dfl_fail(DFL_ERR_SHAPE, "reflow loss: invalid batch");
        return NULL;
    }
    const dfl_process *p = &m->proc;
    if (!(p->family == DFL_FAMILY_FM && p->pred == DFL_PRED_VELOCITY)) {
        dfl_fail(DFL_ERR_ARG, "reflow loss: needs a flow-matching model with velocity prediction (got %s, pred %s)",
                 dfl_family_name(p->family), dfl_pred_name(p->pred));
        return NULL;
    }
    int N = shape[0], ts[1] = {N};
    size_t per = n / (size_t)N;
    dfl_tensor *xin = dfl_tensor_tmp(ctx, ndim, shape);
    dfl_tensor *target = dfl_tensor_tmp(ctx, ndim, shape);
    dfl_tensor *tt = dfl_tensor_tmp(ctx, 1, ts);
    if (!xin || !target || !tt) return NULL;
    for (int b = 0; b < N; b++) {
        double t = dfl_rng_uniform_d(rng);
        tt->data[b] = (float)t;
        for (size_t i = 0; i < per; i++) {
            size_t k = (size_t)b * per + i;
            xin->data[k] = (float)((1.0 - t) * x0[k] + t * eps[k]);
            target->data[k] = eps[k] - x0[k];
        }
    }
    return dfl_mse(ctx, dfl_net_forward(ctx, m->net, xin, tt), target, NULL);
}
