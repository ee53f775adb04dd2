/* Samplers written once against the (x0_hat, eps_hat) interface (DESIGN section 4). */
#include "difflow/gen.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

dfl_status dfl_sampler_parse(const char *name, dfl_sampler_kind *k)
{
    if (strcmp(name, "euler") == 0) *k = DFL_SAMPLER_EULER;
    else if (strcmp(name, "heun") == 0) *k = DFL_SAMPLER_HEUN;
    else return dfl_fail(DFL_ERR_ARG, "unknown sampler '%s' (known: euler, heun)", name);
    return DFL_OK;
}

const char *dfl_sampler_name(dfl_sampler_kind k) { return k == DFL_SAMPLER_EULER ? "euler" : "heun"; }

/* PF-ODE velocity d = alpha'(t) x0_hat + sigma'(t) eps_hat, evaluated at (x, t). */
static dfl_status velocity(const dfl_process *p, dfl_denoise_fn den, void *user, const double *x, size_t n,
                           double t, float *xf, float *x0, float *eps, double *d)
{
    for (size_t i = 0; i < n; i++) xf[i] = (float)x[i];
    dfl_status st = den(user, xf, t, x0, eps);
    if (st) return st;
    double da = dfl_dalpha(p, t), ds = dfl_dsigma(p, t);
    for (size_t i = 0; i < n; i++) {
        d[i] = da * x0[i] + ds * eps[i];
        if (!isfinite(d[i])) return dfl_fail(DFL_ERR_NUMERIC, "sampler: non-finite velocity at t = %g", t);
    }
    return DFL_OK;
}

dfl_status dfl_sample_ode(const dfl_process *p, const dfl_sample_cfg *cfg, dfl_denoise_fn den, void *user,
                          double *x, size_t n, int *nfe)
{
    int N = cfg->steps;
    if (N < 1) return dfl_fail(DFL_ERR_ARG, "sampler: --steps must be >= 1 (got %d)", N);
    double *t = malloc((size_t)(N + 1) * sizeof *t);
    double *d = malloc(n * sizeof *d), *d2 = malloc(n * sizeof *d2), *xn = malloc(n * sizeof *xn);
    float *xf = malloc(n * sizeof *xf), *x0 = malloc(n * sizeof *x0), *eps = malloc(n * sizeof *eps);
    dfl_status st = DFL_OK;
    int count = 0;
    if (!t || !d || !d2 || !xn || !xf || !x0 || !eps) {
        st = dfl_fail(DFL_ERR_NOMEM, "sampler: out of memory");
        goto out;
    }
    if ((st = dfl_schedule(p, cfg->schedule, N, cfg->rho, t))) goto out;
    for (int i = 0; i < N; i++) {
        double h = t[i + 1] - t[i];
        if ((st = velocity(p, den, user, x, n, t[i], xf, x0, eps, d))) goto out;
        count++;
        for (size_t j = 0; j < n; j++) xn[j] = x[j] + h * d[j];
        /* Heun (EDM Alg. 1 lines 9-11): correct with the slope at the end point unless it is t = 0. */
        if (cfg->sampler == DFL_SAMPLER_HEUN && t[i + 1] != 0.0) {
            if ((st = velocity(p, den, user, xn, n, t[i + 1], xf, x0, eps, d2))) goto out;
            count++;
            for (size_t j = 0; j < n; j++) xn[j] = x[j] + h * 0.5 * (d[j] + d2[j]);
        }
        memcpy(x, xn, n * sizeof *x);
    }
out:
    if (nfe) *nfe = count;
    free(t);
    free(d);
    free(d2);
    free(xn);
    free(xf);
    free(x0);
    free(eps);
    return st;
}

typedef struct {
    dfl_ctx *ctx;
    const dfl_model *m;
    int ndim;
    const int *shape;
} model_den;

static dfl_status model_denoise(void *user, const float *x, double t, float *x0_hat, float *eps_hat)
{
    model_den *md = user;
    dfl_ctx_reset(md->ctx);
    return dfl_denoise(md->ctx, md->m, x, md->ndim, md->shape, t, x0_hat, eps_hat);
}

dfl_status dfl_sample(dfl_ctx *ctx, const dfl_model *m, const dfl_sample_cfg *cfg, dfl_rng *rng,
                      int ndim, const int *shape, float *x_out, int *nfe)
{
    size_t n = dfl_shape_numel(ndim, shape);
    if (n == 0) return dfl_fail(DFL_ERR_SHAPE, "sample: invalid shape");
    if (cfg->steps < 1) return dfl_fail(DFL_ERR_ARG, "sample: --steps must be >= 1 (got %d)", cfg->steps);
    double *x = malloc(n * sizeof *x);
    double *t = malloc((size_t)(cfg->steps + 1) * sizeof *t);
    if (!x || !t) {
        free(x);
        free(t);
        return dfl_fail(DFL_ERR_NOMEM, "sample: out of memory");
    }
    dfl_status st = dfl_schedule(&m->proc, cfg->schedule, cfg->steps, cfg->rho, t);
    if (!st) {
        double s0 = dfl_sigma(&m->proc, t[0]);
        for (size_t i = 0; i < n; i++) x[i] = s0 * dfl_rng_normal(rng);
        model_den md = {ctx, m, ndim, shape};
        st = dfl_sample_ode(&m->proc, cfg, model_denoise, &md, x, n, nfe);
        for (size_t i = 0; i < n && !st; i++) x_out[i] = (float)x[i];
    }
    free(x);
    free(t);
    return st;
}
