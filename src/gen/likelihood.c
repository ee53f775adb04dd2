/* PF-ODE log-likelihood (DESIGN section 4 "Likelihood"; reference/diffusion.md 2.6 and 1.7,
 * reference/flows.md 1.2 and 2.4). Song et al., ICLR 2021, App. D.2; Grathwohl et al., FFJORD,
 * ICLR 2019; Hutchinson 1989; Dormand and Prince 1980. */
#include "difflow/likelihood.h"
#include "difflow/nn.h"

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

/* ---------------------------------------------------------------- Dormand-Prince RK5(4) */

/* Butcher tableau of Dormand and Prince (1980), "A family of embedded Runge-Kutta formulae",
 * Table 2 (RK5(4)7M): nodes c, stage weights a, fifth-order weights b (= last row of a, FSAL) and
 * the difference e = b - b_hat to the embedded fourth-order solution. */
static const double DP_C[7] = {0.0, 1.0 / 5, 3.0 / 10, 4.0 / 5, 8.0 / 9, 1.0, 1.0};
static const double DP_A[7][6] = {
    {0},
    {1.0 / 5},
    {3.0 / 40, 9.0 / 40},
    {44.0 / 45, -56.0 / 15, 32.0 / 9},
    {19372.0 / 6561, -25360.0 / 2187, 64448.0 / 6561, -212.0 / 729},
    {9017.0 / 3168, -355.0 / 33, 46732.0 / 5247, 49.0 / 176, -5103.0 / 18656},
    {35.0 / 384, 0.0, 500.0 / 1113, 125.0 / 192, -2187.0 / 6784, 11.0 / 84},
};
static const double DP_E[7] = {71.0 / 57600, 0.0, -71.0 / 16695, 71.0 / 1920, -17253.0 / 339200, 22.0 / 525, -1.0 / 40};

typedef struct {
    dfl_vjp_fn f;
    void *user;
    int n, dim;
    dfl_div_mode mode;
    const double *probe;
    double *xs, *u, *uj, *v, *div; /* scratch */
    long nfe, max_nfe;
} ode_sys;

/* y (n, dim + 1) = [x, delta] per sample -> dy. */
static dfl_status ode_rhs(ode_sys *s, double t, const double *y, double *dy)
{
    int n = s->n, dim = s->dim, w = dim + 1;
    if (s->nfe >= s->max_nfe)
        return dfl_fail(DFL_ERR_NUMERIC, "likelihood ODE: more than %ld evaluations (max NFE) at t = %.6g; "
                        "loosen --rtol/--atol or raise the limit", s->max_nfe, t);
    for (int i = 0; i < n; i++) memcpy(s->xs + (size_t)i * dim, y + (size_t)i * w, (size_t)dim * sizeof *y);
    dfl_status st = div_eval(s->f, s->user, s->xs, n, dim, t, s->mode, s->probe, s->u, s->uj, s->v, s->div);
    s->nfe++;
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

/* Error norm: max over samples of the RMS over the sample's components. */
static double err_norm(const double *e, const double *y0, const double *y1, int n, int w, double rtol, double atol)
{
    double worst = 0.0;
    for (int i = 0; i < n; i++) {
        double s = 0.0;
        for (int j = 0; j < w; j++) {
            size_t q = (size_t)i * w + j;
            double sc = atol + rtol * fmax(fabs(y0[q]), y1 ? fabs(y1[q]) : 0.0);
            double r = e[q] / sc;
            s += r * r;
        }
        s = sqrt(s / w);
        if (!(s <= worst)) worst = s; /* NaN propagates as worst */
    }
    return worst;
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
    /* y, y1, k[7], tmp, err + system scratch */
    size_t total = nw * 11 + nd * (1 + 2 * kc + 1) + (size_t)n;
    double *mem = calloc(total, sizeof *mem);
    if (!mem) return dfl_fail(DFL_ERR_NOMEM, "likelihood ODE: out of memory (%zu doubles)", total);
    double *y = mem, *y1 = y + nw, *k[7], *tmp = y1 + 8 * nw, *err = tmp + nw;
    for (int s = 0; s < 7; s++) k[s] = y1 + (size_t)(s + 1) * nw;
    ode_sys sys = {f, user, n, dim, mode, probe, NULL, NULL, NULL, NULL, NULL, 0, o->max_nfe > 0 ? o->max_nfe : 20000};
    sys.xs = err + nw;
    sys.u = sys.xs + nd;
    sys.uj = sys.u + kc * nd;
    sys.v = sys.uj + kc * nd;
    sys.div = sys.v + nd;
    for (int i = 0; i < n; i++) {
        memcpy(y + (size_t)i * w, x + (size_t)i * dim, (size_t)dim * sizeof *y);
        y[(size_t)i * w + dim] = 0.0;
    }
    dfl_status st;
    double t = t0, span = t1 - t0;
    long steps = 0, rejected = 0;
    if ((st = ode_rhs(&sys, t, y, k[0]))) goto out;
    /* Initial step (Hairer, Norsett, Wanner, "Solving ODEs I", II.4): h0 from |y|/|f|, then a
     * finite-difference estimate of the second derivative. */
    double h;
    {
        /* norms scaled by atol + rtol |y| */
        double d0 = err_norm(y, y, NULL, n, w, o->rtol, o->atol);
        double d1 = err_norm(k[0], y, NULL, n, w, o->rtol, o->atol);
        double h0 = (d0 < 1e-5 || d1 < 1e-5) ? 1e-6 * span : 0.01 * d0 / d1;
        if (h0 > span) h0 = span;
        for (size_t q = 0; q < nw; q++) tmp[q] = y[q] + h0 * k[0][q];
        if ((st = ode_rhs(&sys, t + h0, tmp, k[1]))) goto out;
        for (size_t q = 0; q < nw; q++) err[q] = (k[1][q] - k[0][q]) / h0;
        double d2 = err_norm(err, y, NULL, n, w, o->rtol, o->atol);
        double dm = fmax(d1, d2);
        double h1 = dm <= 1e-15 ? fmax(1e-6 * span, h0 * 1e-3) : pow(0.01 / dm, 0.2);
        h = fmin(100.0 * h0, h1);
        if (h > span) h = span;
    }
    while (t < t1) {
        if (t + h > t1 || t1 - (t + h) < 1e-12 * span) h = t1 - t;
        if (h < 1e-14 * fmax(1.0, fabs(t)) * 16) {
            st = dfl_fail(DFL_ERR_NUMERIC, "likelihood ODE: step size underflow (h = %.3g) at t = %.6g of [%g, %g]", h, t, t0, t1);
            goto out;
        }
        for (int s = 1; s < 7; s++) {
            for (size_t q = 0; q < nw; q++) {
                double acc = y[q];
                for (int r = 0; r < s; r++) acc += h * DP_A[s][r] * k[r][q];
                (s == 6 ? y1 : tmp)[q] = acc;
            }
            if ((st = ode_rhs(&sys, t + DP_C[s] * h, s == 6 ? y1 : tmp, k[s]))) {
                /* a non-finite velocity at a trial point may be the step's fault: shrink and retry */
                if (st == DFL_ERR_NUMERIC && sys.nfe < sys.max_nfe && h > 1e-10 * span) {
                    h *= 0.25;
                    rejected++;
                    goto retry;
                }
                goto out;
            }
        }
        for (size_t q = 0; q < nw; q++) {
            double e = 0.0;
            for (int s = 0; s < 7; s++) e += DP_E[s] * k[s][q];
            err[q] = h * e;
        }
        double en = err_norm(err, y, y1, n, w, o->rtol, o->atol);
        if (!isfinite(en)) {
            h *= 0.25;
            rejected++;
            continue;
        }
        if (en <= 1.0) {
            t = (h == t1 - t) ? t1 : t + h;
            memcpy(y, y1, nw * sizeof *y);
            memcpy(k[0], k[6], nw * sizeof *y); /* FSAL: the last stage is f(t + h, y1) */
            steps++;
            double fac = en == 0.0 ? 10.0 : 0.9 * pow(en, -0.2);
            h *= fmin(10.0, fmax(0.2, fac));
        } else {
            rejected++;
            h *= fmax(0.2, 0.9 * pow(en, -0.2));
        }
    retry:;
    }
    for (int i = 0; i < n; i++) {
        memcpy(x + (size_t)i * dim, y + (size_t)i * w, (size_t)dim * sizeof *y);
        delta[i] = y[(size_t)i * w + dim];
    }
    st = DFL_OK;
out:
    if (stats) {
        stats->nfe += sys.nfe;
        stats->steps += steps;
        stats->rejected += rejected;
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
