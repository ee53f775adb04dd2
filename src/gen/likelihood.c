/* PF-ODE log-likelihood (DESIGN section 4 "Likelihood"; reference/diffusion.md 2.6 and 1.7,
 * reference/flows.md 1.2 and 2.4). Song et al., ICLR 2021, App. D.2; Grathwohl et al., FFJORD,
 * ICLR 2019; Hutchinson 1989; Dormand and Prince 1980. */
#include "difflow/likelihood.h"
#include "difflow/nn.h"
#include "difflow/ode.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define LOG_2PI 1.8378770664093454836

void dfl_rademacher(dfl_rng *rng, double *z, size_t count)
{
    for (size_t i = 0; i < count; i++) z[i] = (dfl_rng_u32(rng) & 1u) ? 1.0 : -1.0;
}

void dfl_loglik_opts_default(dfl_loglik_opts *o)
{
    memset(o, 0, sizeof *o);
    o->rtol = 1e-5;
    o->atol = 1e-5;
    o->max_nfe = 20000;
    o->div = DFL_DIV_AUTO;
    o->probes = 1;
}

void dfl_loglik_t_range(const dfl_process *p, double *t_min, double *t_max)
{
    if (p->family == DFL_FAMILY_FM) {
        *t_min = 0.0;
        *t_max = 1.0;
        return;
    }
    *t_min = dfl_t_of_ratio(p, p->sigma_min);
    *t_max = dfl_t_max(p);
}

double dfl_prior_logp(const double *x, int dim, double alpha_T, double sigma_T, const double *mu,
                      const double *var)
{
    double s = 0.0;
    for (int d = 0; d < dim; d++) {
        double m = mu ? alpha_T * mu[d] : 0.0;
        double v = alpha_T * alpha_T * (var ? var[d] : 0.0) + sigma_T * sigma_T;
        double r = x[d] - m;
        s += -0.5 * (LOG_2PI + log(v) + r * r / v);
    }
    return s;
}

double dfl_bits_per_dim(double logp, int D, int k_bits, double width)
{
    return -logp / ((double)D * log(2.0)) + (double)k_bits - log2(width);
}

void dfl_dequantize8(const uint8_t *v, size_t count, dfl_rng *rng, double *y)
{
    for (size_t i = 0; i < count; i++) y[i] = -1.0 + 2.0 * ((double)v[i] + dfl_rng_uniform_d(rng)) / 256.0;
}

/* ---------------------------------------------------------------- divergence */

static dfl_div_mode resolve_mode(dfl_div_mode m, int dim)
{
    if (m == DFL_DIV_AUTO) return dim <= DFL_DIV_EXACT_MAX_DIM ? DFL_DIV_EXACT : DFL_DIV_HUTCHINSON;
    return m;
}

/* Velocity and divergence with scratch supplied by the caller: u and uj hold k*n*dim doubles
 * (k = dim for exact, 1 for Hutchinson). */
static dfl_status div_eval(dfl_vjp_fn f, void *user, const double *x, int n, int dim, double t,
                           dfl_div_mode mode, const double *probe, double *u, double *uj, double *v,
                           double *div)
{
    size_t nd = (size_t)n * dim;
    dfl_status st;
    if (mode == DFL_DIV_EXACT) {
        /* cotangent j of sample i is the unit vector e_j; tr J = sum_j (e_j^T J)_j */
        memset(u, 0, (size_t)dim * nd * sizeof *u);
        for (int j = 0; j < dim; j++)
            for (int i = 0; i < n; i++) u[(size_t)j * nd + (size_t)i * dim + j] = 1.0;
        if ((st = f(user, x, n, dim, t, dim, u, v, uj))) return st;
        for (int i = 0; i < n; i++) {
            double s = 0.0;
            for (int j = 0; j < dim; j++) s += uj[(size_t)j * nd + (size_t)i * dim + j];
            div[i] = s;
        }
        return DFL_OK;
    }
    if ((st = f(user, x, n, dim, t, 1, probe, v, uj))) return st;
    for (int i = 0; i < n; i++) {
        double s = 0.0;
        for (int j = 0; j < dim; j++) s += uj[(size_t)i * dim + j] * probe[(size_t)i * dim + j];
        div[i] = s;
    }
    return DFL_OK;
}

dfl_status dfl_divergence(dfl_vjp_fn f, void *user, const double *x, int n, int dim, double t,
                          dfl_div_mode mode, const double *probe, double *v, double *div)
{
    if (!f || !x || !div || n < 1 || dim < 1) return dfl_fail(DFL_ERR_ARG, "divergence: bad arguments (n %d, dim %d)", n, dim);
    mode = resolve_mode(mode, dim);
    if (mode == DFL_DIV_HUTCHINSON && !probe) return dfl_fail(DFL_ERR_ARG, "divergence: Hutchinson needs a probe");
    size_t nd = (size_t)n * dim, k = mode == DFL_DIV_EXACT ? (size_t)dim : 1;
    double *buf = malloc((2 * k * nd + (v ? 0 : nd)) * sizeof *buf);
    if (!buf) return dfl_fail(DFL_ERR_NOMEM, "divergence: out of memory");
    double *vv = v ? v : buf + 2 * k * nd;
    dfl_status st = div_eval(f, user, x, n, dim, t, mode, probe, buf, buf + k * nd, vv, div);
    free(buf);
    return st;
}

/* ---------------------------------------------------------------- PF-ODE solve */

typedef struct {
    dfl_vjp_fn f;
    void *user;
    int n, dim;
    dfl_div_mode mode;
    const double *probe;
    double *xs, *u, *uj, *v, *div; /* scratch */
} ode_sys;

/* y (n, dim + 1) = [x, delta] per sample -> dy (a dfl_ode_fn). */
static dfl_status ode_rhs(void *user, double t, const double *y, double *dy)
{
    ode_sys *s = user;
    int n = s->n, dim = s->dim, w = dim + 1;
    for (int i = 0; i < n; i++) memcpy(s->xs + (size_t)i * dim, y + (size_t)i * w, (size_t)dim * sizeof *y);
    dfl_status st = div_eval(s->f, s->user, s->xs, n, dim, t, s->mode, s->probe, s->u, s->uj, s->v, s->div);
    if (st) return st;
    for (int i = 0; i < n; i++) {
        for (int j = 0; j < dim; j++) {
            double a = s->v[(size_t)i * dim + j];
            if (!isfinite(a)) return dfl_fail(DFL_ERR_NUMERIC, "likelihood ODE: non-finite velocity at t = %.6g (sample %d)", t, i);
            dy[(size_t)i * w + j] = a;
        }
        if (!isfinite(s->div[i])) return dfl_fail(DFL_ERR_NUMERIC, "likelihood ODE: non-finite divergence at t = %.6g (sample %d)", t, i);
        dy[(size_t)i * w + dim] = s->div[i];
    }
    return DFL_OK;
}

dfl_status dfl_pfode_solve(dfl_vjp_fn f, void *user, int n, int dim, const dfl_loglik_opts *o,
                           dfl_div_mode mode, const double *probe, double *x, double *delta,
                           dfl_ode_stats *stats)
{
    if (!f || !o || !x || !delta || n < 1 || dim < 1)
        return dfl_fail(DFL_ERR_ARG, "likelihood ODE: bad arguments (n %d, dim %d)", n, dim);
    double t0 = o->t_min, t1 = o->t_max;
    if (!(t1 > t0) || !isfinite(t0) || !isfinite(t1))
        return dfl_fail(DFL_ERR_ARG, "likelihood ODE: need t_min < t_max (got %g, %g)", t0, t1);
    if (!(o->rtol > 0) || !(o->atol > 0))
        return dfl_fail(DFL_ERR_ARG, "likelihood ODE: rtol and atol must be > 0 (got %g, %g)", o->rtol, o->atol);
    mode = resolve_mode(mode, dim);
    if (mode == DFL_DIV_HUTCHINSON && !probe) return dfl_fail(DFL_ERR_ARG, "likelihood ODE: Hutchinson needs a probe");
    int w = dim + 1;
    size_t nw = (size_t)n * w, nd = (size_t)n * dim, kc = mode == DFL_DIV_EXACT ? (size_t)dim : 1;
    /* y + system scratch */
    size_t total = nw + nd * (1 + 2 * kc + 1) + (size_t)n;
    double *mem = calloc(total, sizeof *mem);
    if (!mem) return dfl_fail(DFL_ERR_NOMEM, "likelihood ODE: out of memory (%zu doubles)", total);
    double *y = mem;
    ode_sys sys = {f, user, n, dim, mode, probe, NULL, NULL, NULL, NULL, NULL};
    sys.xs = y + nw;
    sys.u = sys.xs + nd;
    sys.uj = sys.u + kc * nd;
    sys.v = sys.uj + kc * nd;
    sys.div = sys.v + nd;
    for (int i = 0; i < n; i++) {
        memcpy(y + (size_t)i * w, x + (size_t)i * dim, (size_t)dim * sizeof *y);
        y[(size_t)i * w + dim] = 0.0;
    }
    /* One step for all samples: accepted when the worst sample's RMS error passes (group = the
     * sample's dim + 1 components); Hairer's starting step; a non-finite stage shrinks the step. */
    dfl_ode_opts oo = {.rtol = o->rtol,
                       .atol = o->atol,
                       .h0 = 0.0,
                       .grow_max = 10.0,
                       .max_nfe = o->max_nfe > 0 ? o->max_nfe : 20000,
                       .group = (size_t)w,
                       .retry_nonfinite = 1,
                       .who = "likelihood ODE"};
    dfl_ode_counts cnt;
    dfl_status st = dfl_ode_dopri5(ode_rhs, &sys, nw, t0, t1, y, &oo, &cnt);
    if (!st)
        for (int i = 0; i < n; i++) {
            memcpy(x + (size_t)i * dim, y + (size_t)i * w, (size_t)dim * sizeof *y);
            delta[i] = y[(size_t)i * w + dim];
        }
    if (stats) {
        stats->nfe += cnt.nfe;
        stats->steps += cnt.steps;
        stats->rejected += cnt.rejected;
    }
    free(mem);
    return st;
}

dfl_status dfl_pfode_loglik(const dfl_process *p, dfl_vjp_fn f, void *user, int n, int dim, const double *x,
                            const dfl_loglik_opts *o, dfl_rng *rng, double *logp, double *xT,
                            dfl_ode_stats *stats)
{
    if (!p || !o || !x || !logp || n < 1 || dim < 1) return dfl_fail(DFL_ERR_ARG, "loglik: bad arguments (n %d, dim %d)", n, dim);
    dfl_loglik_opts oo = *o;
    if (oo.t_min == 0.0 && oo.t_max == 0.0) dfl_loglik_t_range(p, &oo.t_min, &oo.t_max);
    dfl_div_mode mode = resolve_mode(oo.div, dim);
    int K = mode == DFL_DIV_HUTCHINSON ? (oo.probes > 0 ? oo.probes : 1) : 1;
    if (mode == DFL_DIV_HUTCHINSON && !rng) return dfl_fail(DFL_ERR_ARG, "loglik: Hutchinson needs an rng for the probes");
    size_t nd = (size_t)n * dim;
    double *xs = malloc((2 * nd + (size_t)n) * sizeof *xs);
    if (!xs) return dfl_fail(DFL_ERR_NOMEM, "loglik: out of memory");
    double *z = xs + nd, *delta = z + nd;
    double aT = dfl_alpha(p, oo.t_max), sT = dfl_sigma(p, oo.t_max);
    dfl_status st = DFL_OK;
    for (int i = 0; i < n; i++) logp[i] = 0.0;
    for (int kk = 0; kk < K && !st; kk++) {
        memcpy(xs, x, nd * sizeof *xs);
        if (mode == DFL_DIV_HUTCHINSON) dfl_rademacher(rng, z, nd); /* drawn once per solve */
        st = dfl_pfode_solve(f, user, n, dim, &oo, mode, mode == DFL_DIV_HUTCHINSON ? z : NULL, xs, delta, stats);
        if (st) break;
        for (int i = 0; i < n; i++)
            logp[i] += (dfl_prior_logp(xs + (size_t)i * dim, dim, aT, sT, oo.data_mean, oo.data_var) + delta[i]) / K;
    }
    if (!st && xT) memcpy(xT, xs, nd * sizeof *xs);
    free(xs);
    return st;
}

/* ---------------------------------------------------------------- a trained model */

static void params_set_grad(dfl_params *ps, int *saved, int restore)
{
    for (int i = 0; i < ps->n; i++) {
        if (restore) {
            ps->p[i].t->requires_grad = saved[i];
        } else {
            saved[i] = ps->p[i].t->requires_grad;
            ps->p[i].t->requires_grad = 0;
        }
    }
}

dfl_status dfl_model_vjp(void *user, const double *x, int n, int dim, double t, int k, const double *u,
                         double *v, double *uj)
{
    dfl_model_field *mf = user;
    const dfl_model *m = mf->m;
    dfl_ctx *ctx = mf->ctx;
    size_t per = dfl_shape_numel(mf->ndim - 1, mf->shape + 1);
    if (mf->ndim < 2 || per != (size_t)dim)
        return dfl_fail(DFL_ERR_ARG, "model field: dim %d does not match the network input (%zu per sample)", dim, per);
    dfl_pred_coeffs c;
    dfl_status st = dfl_model_coeffs(m, t, &c);
    if (st) return st;
    const dfl_process *p = &m->proc;
    double da = dfl_dalpha(p, t), ds = dfl_dsigma(p, t);
    double A = da * c.a + ds * c.c, B = da * c.b + ds * c.d;
    size_t nd = (size_t)n * dim;
    int shape[4];
    memcpy(shape, mf->shape, sizeof shape);
    if (k <= 0) {
        dfl_ctx_reset(ctx);
        int old = dfl_ctx_set_grad(ctx, 0);
        shape[0] = n;
        int ts[1] = {n};
        dfl_tensor *xin = dfl_tensor_tmp(ctx, mf->ndim, shape), *tt = dfl_tensor_tmp(ctx, 1, ts), *F = NULL;
        if (xin && tt) {
            for (int i = 0; i < n; i++) tt->data[i] = c.c_noise;
            for (size_t q = 0; q < nd; q++) xin->data[q] = (float)(c.c_in * x[q]);
            F = dfl_net_forward(ctx, m->net, xin, tt);
        }
        dfl_ctx_set_grad(ctx, old);
        if (!F) return xin && tt ? DFL_ERR_SHAPE : DFL_ERR_NOMEM;
        for (size_t q = 0; q < nd; q++) v[q] = A * x[q] + B * F->data[q];
        return DFL_OK;
    }
    /* k cotangents: groups of g copies of the batch, one forward and one backward each */
    int g = k;
    if (mf->max_rows > 0) {
        g = mf->max_rows / n;
        if (g < 1) g = 1;
        if (g > k) g = k;
    }
    dfl_params *ps = dfl_net_params(m->net);
    int *saved = malloc((size_t)(ps->n > 0 ? ps->n : 1) * sizeof *saved);
    float *cot = malloc((size_t)g * nd * sizeof *cot);
    if (!saved || !cot) {
        free(saved);
        free(cot);
        return dfl_fail(DFL_ERR_NOMEM, "model field: out of memory");
    }
    params_set_grad(ps, saved, 0);
    int old = dfl_ctx_set_grad(ctx, 1);
    st = DFL_OK;
    for (int j0 = 0; j0 < k && !st; j0 += g) {
        int gg = k - j0 < g ? k - j0 : g, rows = gg * n;
        dfl_ctx_reset(ctx);
        shape[0] = rows;
        int ts[1] = {rows};
        dfl_tensor *xin = dfl_tensor_tmp(ctx, mf->ndim, shape), *tt = dfl_tensor_tmp(ctx, 1, ts), *F = NULL;
        if (!xin || !tt) {
            st = DFL_ERR_NOMEM;
            break;
        }
        xin->requires_grad = 1;
        for (int i = 0; i < rows; i++) tt->data[i] = c.c_noise;
        for (int r = 0; r < gg; r++)
            for (size_t q = 0; q < nd; q++) xin->data[(size_t)r * nd + q] = (float)(c.c_in * x[q]);
        F = dfl_net_forward(ctx, m->net, xin, tt);
        if (!F) {
            st = DFL_ERR_SHAPE;
            break;
        }
        if (j0 == 0)
            for (size_t q = 0; q < nd; q++) v[q] = A * x[q] + B * F->data[q];
        const double *uu = u + (size_t)j0 * nd;
        for (size_t q = 0; q < (size_t)gg * nd; q++) cot[q] = (float)uu[q];
        if ((st = dfl_backward_vjp(ctx, F, cot))) break;
        const float *gx = xin->grad;
        double *out = uj + (size_t)j0 * nd;
        for (size_t q = 0; q < (size_t)gg * nd; q++) out[q] = A * uu[q] + B * c.c_in * (gx ? gx[q] : 0.0f);
    }
    dfl_ctx_set_grad(ctx, old);
    params_set_grad(ps, saved, 1);
    dfl_ctx_reset(ctx);
    free(saved);
    free(cot);
    return st;
}
