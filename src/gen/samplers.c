/* Samplers written once against the (x0_hat, eps_hat) interface and the process's alpha, sigma
 * and their derivatives (DESIGN section 4; shared/reference/diffusion.md 2.2-2.5). No sampler
 * looks at the family: a family added to process.c works with every sampler here. */
#include "difflow/gen.h"
#include "difflow/ode.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static const char *const SAMPLER_NAMES[] = {"euler", "heun", "rk45", "dpmpp2m", "edm",
                                            "ddpm",  "ddim", "em",   "pc",      "ald"};
#define N_SAMPLERS ((int)(sizeof SAMPLER_NAMES / sizeof SAMPLER_NAMES[0]))

dfl_status dfl_sampler_parse(const char *name, dfl_sampler_kind *k)
{
    for (int i = 0; i < N_SAMPLERS; i++)
        if (strcmp(name, SAMPLER_NAMES[i]) == 0) {
            *k = (dfl_sampler_kind)i;
            return DFL_OK;
        }
    return dfl_fail(DFL_ERR_ARG, "unknown sampler '%s' (known: euler, heun, rk45, dpmpp2m, edm, ddpm, ddim, em, pc, ald)",
                    name);
}

const char *dfl_sampler_name(dfl_sampler_kind k)
{
    return (int)k >= 0 && (int)k < N_SAMPLERS ? SAMPLER_NAMES[k] : "?";
}

static const char *const PREDICTOR_NAMES[] = {"reverse-diffusion", "euler-maruyama", "ancestral", "none"};

dfl_status dfl_predictor_parse(const char *name, dfl_predictor_kind *k)
{
    for (int i = 0; i < 4; i++)
        if (strcmp(name, PREDICTOR_NAMES[i]) == 0) {
            *k = (dfl_predictor_kind)i;
            return DFL_OK;
        }
    return dfl_fail(DFL_ERR_ARG, "unknown predictor '%s' (known: reverse-diffusion, euler-maruyama, ancestral, none)",
                    name);
}

const char *dfl_predictor_name(dfl_predictor_kind k)
{
    return (int)k >= 0 && (int)k < 4 ? PREDICTOR_NAMES[k] : "?";
}

void dfl_sample_cfg_default(dfl_sample_cfg *c)
{
    memset(c, 0, sizeof *c);
    c->sampler = DFL_SAMPLER_HEUN;
    c->schedule = DFL_SCHED_RHO;
    c->steps = 18;
    c->rho = 7.0;
    c->s_tmax = INFINITY;
    c->s_noise = 1.0;
    c->snr = 0.16;
    c->corrector_steps = 0; /* per-sampler default: pc 1, ald 10 */
    c->rtol = c->atol = 1e-5;
    c->max_nfe = 100000;
}

dfl_status dfl_sample_cfg_check(const dfl_sample_cfg *c)
{
    if ((int)c->sampler < 0 || (int)c->sampler >= N_SAMPLERS)
        return dfl_fail(DFL_ERR_ARG, "sampler: unknown kind %d", (int)c->sampler);
    if ((int)c->schedule < 0 || (int)c->schedule > DFL_SCHED_LINSPACE)
        return dfl_fail(DFL_ERR_ARG, "sampler: unknown schedule kind %d", (int)c->schedule);
    if (c->steps < 1) return dfl_fail(DFL_ERR_ARG, "sampler: --steps must be >= 1 (got %d)", c->steps);
    if (c->schedule == DFL_SCHED_RHO && !(c->rho > 0))
        return dfl_fail(DFL_ERR_ARG, "sampler: --rho must be > 0 (got %g)", c->rho);
    if (!(c->eta >= 0 && c->eta <= 1)) return dfl_fail(DFL_ERR_ARG, "sampler: --eta must be in [0, 1] (got %g)", c->eta);
    if (!(c->churn >= 0) || isinf(c->churn))
        return dfl_fail(DFL_ERR_ARG, "sampler: --churn must be finite and >= 0 (got %g)", c->churn);
    if (!(c->s_tmin >= 0)) return dfl_fail(DFL_ERR_ARG, "sampler: --s-tmin must be >= 0 (got %g)", c->s_tmin);
    if (c->s_tmax != 0 && !(c->s_tmax > c->s_tmin))
        return dfl_fail(DFL_ERR_ARG, "sampler: --s-tmax must be > --s-tmin (got %g <= %g)", c->s_tmax, c->s_tmin);
    if (!(c->s_noise >= 0) || isinf(c->s_noise))
        return dfl_fail(DFL_ERR_ARG, "sampler: --s-noise must be finite and > 0 (got %g)", c->s_noise);
    if (!(c->snr >= 0) || isinf(c->snr))
        return dfl_fail(DFL_ERR_ARG, "sampler: --snr must be finite and > 0 (got %g)", c->snr);
    if (c->corrector_steps < 0 || c->corrector_steps > 100000)
        return dfl_fail(DFL_ERR_ARG, "sampler: --corrector-steps must be in 1..100000 (got %d)", c->corrector_steps);
    if (!(c->rtol >= 0) || !(c->atol >= 0) || isinf(c->rtol) || isinf(c->atol))
        return dfl_fail(DFL_ERR_ARG, "sampler: --rtol and --atol must be finite and > 0 (got %g, %g)", c->rtol, c->atol);
    if (c->max_nfe < 0) return dfl_fail(DFL_ERR_ARG, "sampler: max_nfe must be >= 0 (got %d)", c->max_nfe);
    if ((int)c->predictor < 0 || (int)c->predictor > DFL_PREDICTOR_NONE)
        return dfl_fail(DFL_ERR_ARG, "sampler: unknown predictor kind %d", (int)c->predictor);
    if (c->steps_offset < 0) return dfl_fail(DFL_ERR_ARG, "sampler: --steps-offset must be >= 0 (got %d)", c->steps_offset);
    if (!(c->temperature >= 0) || isinf(c->temperature))
        return dfl_fail(DFL_ERR_ARG, "sampler: --temperature must be finite and > 0 (got %g)", c->temperature);
    return DFL_OK;
}

int dfl_sampler_is_stochastic(const dfl_sample_cfg *c)
{
    switch (c->sampler) {
    case DFL_SAMPLER_EDM: return c->churn > 0;
    case DFL_SAMPLER_DDIM: return c->eta > 0;
    case DFL_SAMPLER_DDPM:
    case DFL_SAMPLER_EM:
    case DFL_SAMPLER_PC:
    case DFL_SAMPLER_ALD: return 1;
    default: return 0;
    }
}

/* ---------------------------------------------------------------- shared state */

typedef struct {
    const dfl_process *p;
    dfl_denoise_fn den;
    void *user;
    dfl_rng *rng;
    size_t n;
    int nsamp;
    float *xf, *D, *E; /* denoiser input and outputs (float, as the network) */
    double *z;         /* noise */
    int nfe;
} run_state;

/* One network evaluation at (x, t): fills s->D (x0_hat) and s->E (eps_hat). */
static dfl_status eval(run_state *s, const double *x, double t)
{
    for (size_t i = 0; i < s->n; i++) s->xf[i] = (float)x[i];
    s->nfe++;
    dfl_status st = s->den(s->user, s->xf, t, s->D, s->E);
    if (st) return st;
    for (size_t i = 0; i < s->n; i++)
        if (!isfinite(s->D[i]) || !isfinite(s->E[i]))
            return dfl_fail(DFL_ERR_NUMERIC, "sampler: non-finite denoiser output at t = %g", t);
    return DFL_OK;
}

static void draw(run_state *s)
{
    for (size_t i = 0; i < s->n; i++) s->z[i] = dfl_rng_normal(s->rng);
}

static dfl_status check_state(const double *x, size_t n, const char *who, double t)
{
    for (size_t i = 0; i < n; i++)
        if (!isfinite(x[i])) return dfl_fail(DFL_ERR_NUMERIC, "sampler %s: the state diverged (non-finite) at t = %g", who, t);
    return DFL_OK;
}

/* PF-ODE velocity v = alpha'(t) x0_hat + sigma'(t) eps_hat at (x, t) into d. */
static dfl_status velocity(run_state *s, const double *x, double t, double *d)
{
    dfl_status st = eval(s, x, t);
    if (st) return st;
    double da = dfl_dalpha(s->p, t), ds = dfl_dsigma(s->p, t);
    for (size_t i = 0; i < s->n; i++) {
        d[i] = da * s->D[i] + ds * s->E[i];
        if (!isfinite(d[i])) return dfl_fail(DFL_ERR_NUMERIC, "sampler: non-finite velocity at t = %g", t);
    }
    return DFL_OK;
}

/* The final step to t = 0 where a method returns the denoised estimate: x = alpha(0) x0_hat. */
static dfl_status final_denoise(run_state *s, double *x, double t)
{
    dfl_status st = eval(s, x, t);
    if (st) return st;
    double a0 = dfl_alpha(s->p, 0.0);
    for (size_t i = 0; i < s->n; i++) x[i] = a0 * s->D[i];
    return DFL_OK;
}

/* ---------------------------------------------------------------- PF-ODE: Euler, Heun */

static dfl_status run_euler_heun(run_state *s, const dfl_sample_cfg *c, const double *tg, double *x, double *w)
{
    size_t n = s->n;
    double *d = w, *d2 = w + n, *xn = w + 2 * n;
    dfl_status st;
    for (int i = 0; i < c->steps; i++) {
        double h = tg[i + 1] - tg[i];
        if ((st = velocity(s, x, tg[i], d))) return st;
        for (size_t j = 0; j < n; j++) xn[j] = x[j] + h * d[j];
        /* Heun (EDM Alg. 1 lines 9-11): correct with the slope at the end point unless it is t = 0. */
        if (c->sampler == DFL_SAMPLER_HEUN && tg[i + 1] != 0.0) {
            if ((st = velocity(s, xn, tg[i + 1], d2))) return st;
            for (size_t j = 0; j < n; j++) xn[j] = x[j] + h * 0.5 * (d[j] + d2[j]);
        }
        memcpy(x, xn, n * sizeof *x);
    }
    return DFL_OK;
}

/* ---------------------------------------------------------------- PF-ODE: Dormand-Prince 5(4) */

static dfl_status rk45_rhs(void *user, double t, const double *x, double *d)
{
    return velocity(user, x, t, d);
}

/* Adaptive RK45 (include/difflow/ode.h) from tg[0] to tg[N-1], first step min(tg[0] - tg[1],
 * tg[0] - tg[N-1]), RMS error norm over all values, growth at most 5 per step; a non-finite
 * stage fails at once. Then the denoised estimate at tg[N-1]. */
static dfl_status run_rk45(run_state *s, const dfl_sample_cfg *c, const double *tg, double *x)
{
    int N = c->steps;
    double t = tg[0], tend = tg[N - 1];
    if (tend < t) {
        dfl_ode_opts o = {.rtol = c->rtol > 0 ? c->rtol : 1e-5,
                          .atol = c->atol > 0 ? c->atol : 1e-5,
                          .h0 = t - tg[1] < t - tend ? t - tg[1] : t - tend,
                          .grow_max = 5.0,
                          .max_nfe = c->max_nfe > 0 ? c->max_nfe : 100000,
                          .group = 0,
                          .retry_nonfinite = 0,
                          .who = "sampler rk45"};
        dfl_status st = dfl_ode_dopri5(rk45_rhs, s, s->n, t, tend, x, &o, NULL);
        if (st) return st;
        /* The last evaluation was the FSAL stage at (x, tend): s->D holds x0_hat there. */
        double a0 = dfl_alpha(s->p, 0.0);
        for (size_t j = 0; j < s->n; j++) x[j] = a0 * s->D[j];
        return DFL_OK;
    }
    return final_denoise(s, x, tend);
}

/* ---------------------------------------------------------------- DPM-Solver++(2M) */

static dfl_status run_dpmpp2m(run_state *s, const dfl_sample_cfg *c, const double *tg, double *x, double *w)
{
    size_t n = s->n;
    double *Dprev = w;
    double hprev = NAN;
    dfl_status st;
    for (int i = 0; i < c->steps; i++) {
        double t = tg[i], u = tg[i + 1];
        if ((st = eval(s, x, t))) return st;
        double at = dfl_alpha(s->p, t), gt = dfl_sigma(s->p, t), au = dfl_alpha(s->p, u), gu = dfl_sigma(s->p, u);
        if (u == 0.0 || gu == 0.0) { /* final step to data: first order, returns alpha(u) x0_hat */
            for (size_t j = 0; j < n; j++) x[j] = au * s->D[j];
            continue;
        }
        /* lambda = ln(alpha/sigma); e^-h = (alpha_t sigma_u)/(sigma_t alpha_u), finite also
         * where alpha_t = 0 (h = +inf, e.g. flow matching at t = 1). */
        double h = log(au / gu) - log(at / gt);
        double emh = (at * gu) / (gt * au);
        double r = hprev / h;
        int second = i > 0 && isfinite(hprev) && isfinite(h) && h > 0 && r > 0;
        double c1 = second ? 1.0 + 0.5 / r : 1.0, c2 = second ? -0.5 / r : 0.0;
        for (size_t j = 0; j < n; j++) {
            double Dp = c1 * s->D[j] + c2 * Dprev[j];
            Dprev[j] = s->D[j];
            x[j] = (gu / gt) * x[j] - au * (emh - 1.0) * Dp;
        }
        hprev = h;
        if ((st = check_state(x, n, "dpmpp2m", u))) return st;
    }
    return DFL_OK;
}

/* ---------------------------------------------------------------- EDM Algorithm 2 */

static dfl_status run_edm(run_state *s, const dfl_sample_cfg *c, const double *tg, double *x, double *w)
{
    size_t n = s->n;
    double *y = x, *yh = w, *d = w + n, *yn = w + 2 * n, *xa = w + 3 * n;
    int N = c->steps;
    double smin = c->s_tmin, smax = c->s_tmax > 0 ? c->s_tmax : INFINITY, snoise = c->s_noise > 0 ? c->s_noise : 1.0;
    double gmax = c->churn / N < sqrt(2.0) - 1 ? c->churn / N : sqrt(2.0) - 1;
    dfl_status st;
    double a0 = dfl_alpha(s->p, tg[0]);
    for (size_t j = 0; j < n; j++) y[j] /= a0; /* y = x/alpha follows the EDM family in s */
    for (int i = 0; i < N; i++) {
        double t = tg[i], u = tg[i + 1];
        double si = dfl_ratio(s->p, t), su = u == 0.0 ? 0.0 : dfl_ratio(s->p, u);
        double gamma = c->churn > 0 && si >= smin && si <= smax ? gmax : 0.0;
        double sh = si * (1.0 + gamma), th = gamma > 0 ? dfl_t_of_ratio(s->p, sh) : t;
        if (!isfinite(th) || !(th > 0))
            return dfl_fail(DFL_ERR_NUMERIC, "sampler edm: churned ratio %g has no time in the %s family (at t = %g)",
                            sh, dfl_family_name(s->p->family), t);
        if (gamma > 0) {
            draw(s);
            double amp = sqrt(sh * sh - si * si) * snoise;
            for (size_t j = 0; j < n; j++) yh[j] = y[j] + amp * s->z[j];
        } else {
            memcpy(yh, y, n * sizeof *y);
        }
        double ah = dfl_alpha(s->p, th);
        for (size_t j = 0; j < n; j++) xa[j] = ah * yh[j];
        if ((st = eval(s, xa, th))) return st;
        /* d = (y - D(y; s))/s = eps_hat (exactly, given x = alpha x0_hat + sigma eps_hat). */
        for (size_t j = 0; j < n; j++) {
            d[j] = s->E[j];
            yn[j] = yh[j] + (su - sh) * d[j];
        }
        if (su != 0.0) {
            double au = dfl_alpha(s->p, u);
            for (size_t j = 0; j < n; j++) xa[j] = au * yn[j];
            if ((st = eval(s, xa, u))) return st;
            for (size_t j = 0; j < n; j++) yn[j] = yh[j] + (su - sh) * 0.5 * (d[j] + s->E[j]);
        }
        memcpy(y, yn, n * sizeof *y);
        if ((st = check_state(y, n, "edm", u))) return st;
    }
    double aN = dfl_alpha(s->p, tg[N]);
    for (size_t j = 0; j < n; j++) x[j] = aN * y[j];
    return DFL_OK;
}

/* ---------------------------------------------------------------- DDPM ancestral and DDIM */

/* One ancestral step t -> u > 0 with s->D = x0_hat at t and s->z drawn: a sample of
 * q(x_u | x_t, x0 = D), a_tu = a_t/a_u, g_tu^2 = g_t^2 - a_tu^2 g_u^2, mean = a_tu g_u^2/g_t^2 x +
 * a_u g_tu^2/g_t^2 D, var = g_tu^2 g_u^2/g_t^2 (DDPM Eq. 6-7 for general (a, g)). */
static void step_ancestral(run_state *s, double *x, double t, double u)
{
    double at = dfl_alpha(s->p, t), gt = dfl_sigma(s->p, t), au = dfl_alpha(s->p, u), gu = dfl_sigma(s->p, u);
    double atu = at / au, g2tu = fmax(gt * gt - atu * atu * gu * gu, 0.0);
    double cx = atu * gu * gu / (gt * gt), cd = au * g2tu / (gt * gt), sd = sqrt(g2tu * gu * gu / (gt * gt));
    for (size_t j = 0; j < s->n; j++) x[j] = cx * x[j] + cd * s->D[j] + sd * s->z[j];
}

static dfl_status run_ddpm_ddim(run_state *s, const dfl_sample_cfg *c, const double *tg, double *x)
{
    size_t n = s->n;
    int ddim = c->sampler == DFL_SAMPLER_DDIM;
    dfl_status st;
    for (int i = 0; i < c->steps; i++) {
        double t = tg[i], u = tg[i + 1];
        if ((st = eval(s, x, t))) return st;
        double at = dfl_alpha(s->p, t), gt = dfl_sigma(s->p, t), au = dfl_alpha(s->p, u), gu = dfl_sigma(s->p, u);
        if (u == 0.0 || gu == 0.0) { /* last step: no noise, the denoised estimate */
            for (size_t j = 0; j < n; j++) x[j] = au * s->D[j];
            continue;
        }
        if (ddim) {
            double atu = at / au, g2tu = fmax(gt * gt - atu * atu * gu * gu, 0.0);
            double cn = c->eta * sqrt(g2tu * gu * gu / (gt * gt)), ce = sqrt(fmax(gu * gu - cn * cn, 0.0));
            if (cn > 0) draw(s);
            for (size_t j = 0; j < n; j++) x[j] = au * s->D[j] + ce * s->E[j] + (cn > 0 ? cn * s->z[j] : 0.0);
        } else {
            draw(s);
            step_ancestral(s, x, t, u);
        }
        if ((st = check_state(x, n, dfl_sampler_name(c->sampler), u))) return st;
    }
    return DFL_OK;
}

/* ---------------------------------------------------------------- reverse SDE: EM, PC, ALD */

/* Langevin step x += e score + sqrt(2 e) z at time t; e = 2 a_c (snr |z|/|score|)^2 for the PC
 * corrector (norms per sample, averaged over samples), e = 2 a_c (snr sigma)^2 for ALD. */
static dfl_status langevin(run_state *s, double *x, double t, double a_c, double snr, int ald)
{
    size_t n = s->n, per = n / (size_t)s->nsamp;
    dfl_status st = eval(s, x, t);
    if (st) return st;
    double g = dfl_sigma(s->p, t);
    draw(s);
    double e;
    if (ald) {
        e = 2.0 * a_c * (snr * g) * (snr * g);
    } else {
        double zn = 0, sn = 0;
        for (int b = 0; b < s->nsamp; b++) {
            double zz = 0, ss = 0;
            for (size_t j = (size_t)b * per; j < (size_t)(b + 1) * per; j++) {
                double sc = -s->E[j] / g;
                zz += s->z[j] * s->z[j];
                ss += sc * sc;
            }
            zn += sqrt(zz);
            sn += sqrt(ss);
        }
        zn /= s->nsamp;
        sn /= s->nsamp;
        e = sn > 0 ? 2.0 * a_c * (snr * zn / sn) * (snr * zn / sn) : 0.0;
    }
    double q = sqrt(2.0 * e);
    for (size_t j = 0; j < n; j++) x[j] += e * (-s->E[j] / g) + q * s->z[j];
    return check_state(x, n, ald ? "ald" : "pc", t);
}

static dfl_status run_sde(run_state *s, const dfl_sample_cfg *c, const double *tg, double *x)
{
    size_t n = s->n;
    int N = c->steps;
    dfl_status st;
    double snr = c->snr > 0 ? c->snr : 0.16;
    int M = c->corrector_steps > 0 ? c->corrector_steps : c->sampler == DFL_SAMPLER_ALD ? 10 : 1;
    for (int i = 0; i < N; i++) {
        double t = tg[i], u = tg[i + 1];
        double at = dfl_alpha(s->p, t), gt = dfl_sigma(s->p, t), au = dfl_alpha(s->p, u), gu = dfl_sigma(s->p, u);
        int ald = c->sampler == DFL_SAMPLER_ALD;
        /* score_sde's discrete alpha_i = (a_t/a_u)^2 for the PC corrector; NCSN has none (1). */
        double a_c = ald ? 1.0 : (at / au) * (at / au);
        if (c->sampler != DFL_SAMPLER_EM)
            for (int m = 0; m < M; m++)
                if ((st = langevin(s, x, t, a_c, snr, ald))) return st;
        if (i == N - 1) return final_denoise(s, x, t);
        dfl_predictor_kind pred = c->sampler == DFL_SAMPLER_EM ? DFL_PREDICTOR_EULER_MARUYAMA
                                  : ald                         ? DFL_PREDICTOR_NONE
                                                                : c->predictor;
        if (pred == DFL_PREDICTOR_NONE) {
            /* NCSN anneals the noise level of y = x/alpha (the ratio s); keep y across levels. */
            for (size_t j = 0; j < n; j++) x[j] *= au / at;
            continue;
        }
        if ((st = eval(s, x, t))) return st;
        draw(s);
        if (pred == DFL_PREDICTOR_EULER_MARUYAMA) {
            /* f = alpha'/alpha, G^2 = d(sigma^2)/dt - 2 f sigma^2, score = -eps_hat/sigma. */
            double f = dfl_dalpha(s->p, t) / at, G2 = 2.0 * gt * dfl_dsigma(s->p, t) - 2.0 * f * gt * gt;
            if (G2 < 0) G2 = 0;
            double dt = u - t, q = sqrt(G2 * -dt);
            for (size_t j = 0; j < n; j++) x[j] += (f * x[j] + G2 * s->E[j] / gt) * dt + q * s->z[j];
        } else if (pred == DFL_PREDICTOR_ANCESTRAL) {
            step_ancestral(s, x, t, u);
        } else {
            /* Reverse-diffusion predictor with the exact forward transition u -> t:
             * x_t = a_tu x_u + g_tu z, so x_u = (x_t + g_tu^2 score)/a_tu + g_tu z. */
            double atu = at / au, g2tu = gt * gt - atu * atu * gu * gu;
            if (g2tu < 0) g2tu = 0;
            double q = sqrt(g2tu);
            for (size_t j = 0; j < n; j++) x[j] = (x[j] - g2tu * s->E[j] / gt) / atu + q * s->z[j];
        }
        if ((st = check_state(x, n, dfl_sampler_name(c->sampler), u))) return st;
    }
    return DFL_OK;
}

/* ---------------------------------------------------------------- entry points */

dfl_status dfl_sample_run(const dfl_process *p, const dfl_sample_cfg *cfg, dfl_denoise_fn den, void *user,
                          dfl_rng *rng, double *x, size_t n, int nsamp, int *nfe)
{
    if (nfe) *nfe = 0;
    dfl_status st = dfl_sample_cfg_check(cfg);
    if (st) return st;
    if (n == 0 || nsamp < 1 || n % (size_t)nsamp != 0)
        return dfl_fail(DFL_ERR_ARG, "sampler: %d samples do not divide %zu values", nsamp, n);
    const char *name = dfl_sampler_name(cfg->sampler);
    if (dfl_sampler_is_stochastic(cfg) && !rng)
        return dfl_fail(DFL_ERR_ARG, "sampler %s: this setting is stochastic and needs a random stream", name);
    int N = cfg->steps;
    double *tg = malloc((size_t)(N + 1) * sizeof *tg);
    double *w = malloc(4 * n * sizeof *w); /* scratch: edm needs 4n, the others less */
    run_state s = {p, den, user, rng, n, nsamp, malloc(n * sizeof(float)), malloc(n * sizeof(float)),
                   malloc(n * sizeof(float)), malloc(n * sizeof(double)), 0};
    if (!tg || !w || !s.xf || !s.D || !s.E || !s.z) {
        st = dfl_fail(DFL_ERR_NOMEM, "sampler: out of memory");
        goto out;
    }
    if ((st = dfl_schedule(p, cfg->schedule, N, cfg->rho, cfg->steps_offset, tg))) goto out;
    switch (cfg->sampler) {
    case DFL_SAMPLER_EDM:
    case DFL_SAMPLER_EM:
    case DFL_SAMPLER_PC:
    case DFL_SAMPLER_ALD:
        if (!(dfl_alpha(p, tg[0]) > 0)) {
            st = dfl_fail(DFL_ERR_ARG,
                          "sampler %s: alpha(t) = 0 at the schedule's start t = %g (%s family), where its drift is "
                          "undefined; use a schedule that starts below t_max (e.g. rho or loguniform)",
                          name, tg[0], dfl_family_name(p->family));
            goto out;
        }
        break;
    default: break;
    }
    switch (cfg->sampler) {
    case DFL_SAMPLER_EULER:
    case DFL_SAMPLER_HEUN: st = run_euler_heun(&s, cfg, tg, x, w); break;
    case DFL_SAMPLER_RK45: st = run_rk45(&s, cfg, tg, x); break;
    case DFL_SAMPLER_DPMPP2M: st = run_dpmpp2m(&s, cfg, tg, x, w); break;
    case DFL_SAMPLER_EDM: st = run_edm(&s, cfg, tg, x, w); break;
    case DFL_SAMPLER_DDPM:
    case DFL_SAMPLER_DDIM: st = run_ddpm_ddim(&s, cfg, tg, x); break;
    case DFL_SAMPLER_EM:
    case DFL_SAMPLER_PC:
    case DFL_SAMPLER_ALD: st = run_sde(&s, cfg, tg, x); break;
    }
out:
    if (nfe) *nfe = s.nfe;
    free(tg);
    free(w);
    free(s.xf);
    free(s.D);
    free(s.E);
    free(s.z);
    return st;
}

dfl_status dfl_sample_ode(const dfl_process *p, const dfl_sample_cfg *cfg, dfl_denoise_fn den, void *user,
                          double *x, size_t n, int *nfe)
{
    return dfl_sample_run(p, cfg, den, user, NULL, x, n, 1, nfe);
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
    dfl_status st = dfl_sample_cfg_check(cfg);
    if (st) return st;
    double *x = malloc(n * sizeof *x);
    double *t = malloc((size_t)(cfg->steps + 1) * sizeof *t);
    if (!x || !t) {
        free(x);
        free(t);
        return dfl_fail(DFL_ERR_NOMEM, "sample: out of memory");
    }
    st = dfl_schedule(&m->proc, cfg->schedule, cfg->steps, cfg->rho, cfg->steps_offset, t);
    if (!st) {
        double s0 = (cfg->temperature > 0 ? cfg->temperature : 1.0) * dfl_sigma(&m->proc, t[0]);
        for (size_t i = 0; i < n; i++) x[i] = s0 * dfl_rng_normal(rng);
        model_den md = {ctx, m, ndim, shape};
        st = dfl_sample_run(&m->proc, cfg, model_denoise, &md, rng, x, n, shape[0], nfe);
        for (size_t i = 0; i < n && !st; i++) x_out[i] = (float)x[i];
    }
    free(x);
    free(t);
    return st;
}
