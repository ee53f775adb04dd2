/* Forward processes as (alpha(t), sigma(t)) (DESIGN section 4; shared/reference/diffusion.md 1.2).
 * Formulas and sources are documented in include/difflow/gen.h. */
#include "difflow/gen.h"

#include <math.h>
#include <string.h>

#define DFL_HALF_PI 1.57079632679489661923

static const char *const FAMILY_NAMES[DFL_FAMILY_COUNT] = {"fm", "edm", "vp", "subvp", "ve", "ddpm"};
static const char *const PRED_NAMES[DFL_PRED_COUNT] = {"velocity", "edm", "eps", "x0", "v"};

/* ---------------------------------------------------------------- discrete DDPM table */

/* ln alphabar_j for j = 0..T-1 (diffusion.md 1.2 "Discrete beta schedules"). */
static void ddpm_table(dfl_ddpm_schedule s, double *logab)
{
    const int T = DFL_DDPM_T;
    double acc = 0;
    for (int i = 0; i < T; i++) {
        double beta;
        if (s == DFL_DDPM_COSINE) {
            /* alphabar(u) = cos^2((u + 0.008)/1.008 pi/2); beta_i = min(1 - ab((i+1)/T)/ab(i/T), 0.999). */
            double c0 = cos((((double)i / T) + 0.008) / 1.008 * DFL_HALF_PI);
            double c1 = cos((((double)(i + 1) / T) + 0.008) / 1.008 * DFL_HALF_PI);
            beta = 1.0 - (c1 * c1) / (c0 * c0);
            if (beta > 0.999) beta = 0.999;
        } else {
            beta = 1e-4 + (0.02 - 1e-4) * (double)i / (T - 1); /* linspace(1e-4, 0.02, T) */
        }
        acc += log1p(-beta);
        logab[i] = acc;
    }
}

/* ln alphabar at knot k = -1..T-1 (k = -1 is the data, ln 1 = 0). */
static double knot(const dfl_process *p, int k) { return k < 0 ? 0.0 : p->ddpm_logab[k]; }

/* Segment k (knots k, k+1, k in -1..T-2) and the fraction f for time t; outside [0, 1] the end
 * segments are extended linearly. */
static void ddpm_seg(double t, int *k, double *f)
{
    double u = t * DFL_DDPM_T - 1.0;
    double fl = floor(u);
    if (fl < -1) fl = -1;
    if (fl > DFL_DDPM_T - 2) fl = DFL_DDPM_T - 2;
    *k = (int)fl;
    *f = u - fl;
}

static double ddpm_logab_t(const dfl_process *p, double t)
{
    int k;
    double f;
    ddpm_seg(t, &k, &f);
    return (1 - f) * knot(p, k) + f * knot(p, k + 1);
}

static double ddpm_dlogab_t(const dfl_process *p, double t)
{
    int k;
    double f;
    ddpm_seg(t, &k, &f);
    return DFL_DDPM_T * (knot(p, k + 1) - knot(p, k));
}

double dfl_ddpm_alphabar(const dfl_process *p, int j)
{
    if (p->family != DFL_FAMILY_DDPM || j < -1 || j >= DFL_DDPM_T) return NAN;
    return exp(knot(p, j));
}

/* ---------------------------------------------------------------- defaults and names */

void dfl_process_set_ddpm(dfl_process *p, dfl_ddpm_schedule s)
{
    p->ddpm_schedule = s;
    ddpm_table(s, p->ddpm_logab);
    if (p->family == DFL_FAMILY_DDPM) {
        p->sigma_min = sqrt(expm1(-knot(p, 0)));            /* s(t_0): linear 0.010001 */
        p->sigma_max = sqrt(expm1(-knot(p, DFL_DDPM_T - 1))); /* s(t_999): linear 157.4073 */
    }
}

void dfl_process_default(dfl_process *p, dfl_family f)
{
    memset(p, 0, sizeof *p);
    p->family = f;
    p->sigma_min = 0.002; /* EDM Table 1 / generate.py */
    p->sigma_max = 80.0;
    p->sigma_data = 0.5;
    p->P_mean = -1.2;     /* EDM training/loss.py: ln sigma ~ N(-1.2, 1.2^2) */
    p->P_std = 1.2;
    p->pred = dfl_pred_default(f);
    p->beta_min = 0.1;    /* EDM VPPrecond / score_sde beta_0 = 0.1, beta_1 = 20 */
    p->beta_d = 19.9;
    p->eps_t = 1e-5;      /* score_sde training eps; EDM VPPrecond epsilon_t */
    p->ve_sigma_min = 0.01; /* score_sde CIFAR-10 VE */
    p->ve_sigma_max = 50.0;
    p->fm_ot = 0;
    dfl_process_set_ddpm(p, DFL_DDPM_LINEAR);
    if (f == DFL_FAMILY_VP || f == DFL_FAMILY_SUBVP || f == DFL_FAMILY_VE) {
        /* Sampling range: score_sde's sampling eps 1e-3 up to t = 1 (VE: 0.010085..50; its
         * ve_sigma_min itself is t = 0, which would make the last grid step empty). */
        p->sigma_min = dfl_ratio(p, 1e-3);
        p->sigma_max = dfl_ratio(p, 1.0);
    }
}

dfl_status dfl_family_parse(const char *name, dfl_family *f)
{
    for (int i = 0; i < DFL_FAMILY_COUNT; i++)
        if (strcmp(name, FAMILY_NAMES[i]) == 0) {
            *f = (dfl_family)i;
            return DFL_OK;
        }
    return dfl_fail(DFL_ERR_ARG, "unknown method '%s' (known: fm, edm, vp, subvp, ve, ddpm)", name);
}

const char *dfl_family_name(dfl_family f)
{
    return (unsigned)f < DFL_FAMILY_COUNT ? FAMILY_NAMES[f] : "unknown";
}

dfl_status dfl_pred_parse(const char *name, dfl_pred *k)
{
    for (int i = 0; i < DFL_PRED_COUNT; i++)
        if (strcmp(name, PRED_NAMES[i]) == 0) {
            *k = (dfl_pred)i;
            return DFL_OK;
        }
    return dfl_fail(DFL_ERR_ARG, "unknown parameterization '%s' (known: eps, x0, v, velocity, edm)", name);
}

const char *dfl_pred_name(dfl_pred k) { return (unsigned)k < DFL_PRED_COUNT ? PRED_NAMES[k] : "unknown"; }

dfl_pred dfl_pred_default(dfl_family f)
{
    if (f == DFL_FAMILY_FM) return DFL_PRED_VELOCITY;
    if (f == DFL_FAMILY_EDM) return DFL_PRED_EDM;
    return DFL_PRED_EPS;
}

dfl_status dfl_pred_check(const dfl_process *p, dfl_pred k)
{
    if ((unsigned)k >= DFL_PRED_COUNT) return dfl_fail(DFL_ERR_ARG, "invalid parameterization %d", (int)k);
    if (k == DFL_PRED_V && p->family != DFL_FAMILY_VP && p->family != DFL_FAMILY_DDPM)
        return dfl_fail(DFL_ERR_ARG, "--pred v needs alpha^2 + sigma^2 = 1 (methods vp, ddpm), not method %s",
                        dfl_family_name(p->family));
    if (k == DFL_PRED_EDM && p->family == DFL_FAMILY_FM)
        return dfl_fail(DFL_ERR_ARG, "--pred edm is undefined for method fm (x/alpha at t = 1); use --method edm or another method");
    return DFL_OK;
}

dfl_status dfl_ddpm_schedule_parse(const char *name, dfl_ddpm_schedule *s)
{
    if (strcmp(name, "linear") == 0) *s = DFL_DDPM_LINEAR;
    else if (strcmp(name, "cosine") == 0 || strcmp(name, "squaredcos_cap_v2") == 0) *s = DFL_DDPM_COSINE;
    else return dfl_fail(DFL_ERR_ARG, "unknown DDPM schedule '%s' (known: linear, cosine)", name);
    return DFL_OK;
}

const char *dfl_ddpm_schedule_name(dfl_ddpm_schedule s) { return s == DFL_DDPM_COSINE ? "cosine" : "linear"; }

/* ---------------------------------------------------------------- alpha, sigma and derivatives */

static double vp_B(const dfl_process *p, double t) { return p->beta_min * t + 0.5 * p->beta_d * t * t; }
static double vp_dB(const dfl_process *p, double t) { return p->beta_min + p->beta_d * t; }

double dfl_alpha(const dfl_process *p, double t)
{
    switch (p->family) {
    case DFL_FAMILY_FM: return 1.0 - t;
    case DFL_FAMILY_VP:
    case DFL_FAMILY_SUBVP: return exp(-0.5 * vp_B(p, t));
    case DFL_FAMILY_DDPM: return exp(0.5 * ddpm_logab_t(p, t));
    default: return 1.0; /* EDM, VE */
    }
}

double dfl_sigma(const dfl_process *p, double t)
{
    switch (p->family) {
    case DFL_FAMILY_VP: return sqrt(-expm1(-vp_B(p, t)));
    case DFL_FAMILY_SUBVP: return -expm1(-vp_B(p, t));
    case DFL_FAMILY_VE: return p->ve_sigma_min * pow(p->ve_sigma_max / p->ve_sigma_min, t);
    case DFL_FAMILY_DDPM: return sqrt(-expm1(ddpm_logab_t(p, t)));
    default: return t; /* FM, EDM */
    }
}

double dfl_dalpha(const dfl_process *p, double t)
{
    switch (p->family) {
    case DFL_FAMILY_FM: return -1.0;
    case DFL_FAMILY_VP:
    case DFL_FAMILY_SUBVP: return -0.5 * vp_dB(p, t) * exp(-0.5 * vp_B(p, t));
    case DFL_FAMILY_DDPM: return 0.5 * ddpm_dlogab_t(p, t) * exp(0.5 * ddpm_logab_t(p, t));
    default: return 0.0;
    }
}

double dfl_dsigma(const dfl_process *p, double t)
{
    switch (p->family) {
    case DFL_FAMILY_VP: {
        double B = vp_B(p, t);
        return 0.5 * vp_dB(p, t) * exp(-B) / sqrt(-expm1(-B)); /* d sqrt(1 - e^-B) */
    }
    case DFL_FAMILY_SUBVP: return vp_dB(p, t) * exp(-vp_B(p, t));
    case DFL_FAMILY_VE: return dfl_sigma(p, t) * log(p->ve_sigma_max / p->ve_sigma_min);
    case DFL_FAMILY_DDPM: {
        double L = ddpm_logab_t(p, t);
        return -0.5 * ddpm_dlogab_t(p, t) * exp(L) / sqrt(-expm1(L)); /* d sqrt(1 - e^L) */
    }
    default: return 1.0;
    }
}

double dfl_ratio(const dfl_process *p, double t)
{
    switch (p->family) {
    case DFL_FAMILY_VP: return sqrt(expm1(vp_B(p, t)));       /* sqrt(e^B - 1) */
    case DFL_FAMILY_SUBVP: return 2.0 * sinh(0.5 * vp_B(p, t)); /* (1 - e^-B) e^(B/2) */
    case DFL_FAMILY_DDPM: return sqrt(expm1(-ddpm_logab_t(p, t)));
    default: return dfl_sigma(p, t) / dfl_alpha(p, t);
    }
}

static double clamp(double x, double lo, double hi) { return x < lo ? lo : x > hi ? hi : x; }

/* Inverse of B(t) = beta_min t + beta_d t^2/2 for t >= 0. */
static double vp_t_of_B(const dfl_process *p, double B)
{
    return (sqrt(p->beta_min * p->beta_min + 2.0 * p->beta_d * B) - p->beta_min) / p->beta_d;
}

double dfl_t_of_ratio(const dfl_process *p, double s)
{
    switch (p->family) {
    case DFL_FAMILY_FM: return s / (1.0 + s); /* diffusion.md 2.7 */
    case DFL_FAMILY_EDM: return s;
    case DFL_FAMILY_VP: return clamp(vp_t_of_B(p, log1p(s * s)), 0.0, 1.0);
    case DFL_FAMILY_SUBVP: return clamp(vp_t_of_B(p, 2.0 * asinh(0.5 * s)), 0.0, 1.0);
    case DFL_FAMILY_VE:
        if (!(s > p->ve_sigma_min)) return 0.0;
        return clamp(log(s / p->ve_sigma_min) / log(p->ve_sigma_max / p->ve_sigma_min), 0.0, 1.0);
    case DFL_FAMILY_DDPM: {
        double L = -log1p(s * s); /* target ln alphabar, decreasing in the knot index */
        if (L >= 0) return 0.0;
        if (L <= knot(p, DFL_DDPM_T - 1)) return 1.0;
        int lo = -1, hi = DFL_DDPM_T - 1; /* knot(lo) > L >= knot(hi) */
        while (hi - lo > 1) {
            int mid = (lo + hi) / 2;
            if (knot(p, mid) > L) lo = mid;
            else hi = mid;
        }
        double u = lo + (knot(p, lo) - L) / (knot(p, lo) - knot(p, hi));
        return clamp((u + 1.0) / DFL_DDPM_T, 0.0, 1.0);
    }
    }
    return s;
}

double dfl_t_max(const dfl_process *p) { return p->family == DFL_FAMILY_EDM ? p->sigma_max : 1.0; }

double dfl_t_min(const dfl_process *p)
{
    switch (p->family) {
    case DFL_FAMILY_VP:
    case DFL_FAMILY_SUBVP:
    case DFL_FAMILY_VE: return p->eps_t;
    case DFL_FAMILY_DDPM: return 1.0 / DFL_DDPM_T;
    default: return 0.0;
    }
}
