/* PF-ODE likelihood against closed-form oracles (reference/diffusion.md 3.1, 3.2, 3.3, 3.5;
 * reference/flows.md 1.2, 3.1): no trained networks, the exact velocity fields of Gaussian and
 * Gaussian-mixture data are plugged into the integrator; then the dfl_model path of a randomly
 * initialised toy-mlp against finite differences and its own Hutchinson mean. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "dfl_test.h"

#include "difflow/likelihood.h"

#define LOG_2PI 1.8378770664093454836


/* ---------------------------------------------------------------- Gaussian-mixture oracle */

/* Data sum_k w_k N(mu_k, s_k^2 I) under process p (reference/diffusion.md 3.3): with
 * V_k = alpha^2 s_k^2 + sigma^2 and responsibilities r_k(x) proportional to w_k N(x; alpha mu_k, V_k I),
 *   x0_hat = sum_k r_k [mu_k + alpha s_k^2/V_k (x - alpha mu_k)],  eps_hat = sum_k r_k sigma/V_k (x - alpha mu_k),
 * so v = sum_k r_k g_k, g_k = c_k (x - alpha mu_k) + alpha' mu_k, c_k = (alpha' alpha s_k^2 + sigma' sigma)/V_k, and
 *   u^T J = (sum_k r_k c_k) u + sum_k (u . g_k) r_k (h_k - sum_j r_j h_j),  h_k = -(x - alpha mu_k)/V_k. */
#define GMM_MAXK 4
#define GMM_MAXD 8
typedef struct {
    const dfl_process *p;
    int K;
    double w[GMM_MAXK], mu[GMM_MAXK][GMM_MAXD], s[GMM_MAXK];
    int calls;
} gmm;

static dfl_status gmm_vjp(void *user, const double *x, int n, int dim, double t, int k, const double *u, double *v,
                          double *uj)
{
    gmm *g = user;
    g->calls++;
    double al = dfl_alpha(g->p, t), sg = dfl_sigma(g->p, t), da = dfl_dalpha(g->p, t), ds = dfl_dsigma(g->p, t);
    size_t nd = (size_t)n * dim;
    for (int i = 0; i < n; i++) {
        const double *xi = x + (size_t)i * dim;
        double lw[GMM_MAXK], r[GMM_MAXK], c[GMM_MAXK], gk[GMM_MAXK][GMM_MAXD], h[GMM_MAXK][GMM_MAXD], mx = -INFINITY;
        for (int q = 0; q < g->K; q++) {
            double V = al * al * g->s[q] * g->s[q] + sg * sg, d2 = 0;
            c[q] = (da * al * g->s[q] * g->s[q] + ds * sg) / V;
            for (int j = 0; j < dim; j++) {
                double e = xi[j] - al * g->mu[q][j];
                d2 += e * e;
                gk[q][j] = c[q] * e + da * g->mu[q][j];
                h[q][j] = -e / V;
            }
            lw[q] = log(g->w[q]) - 0.5 * dim * log(V) - 0.5 * d2 / V;
            if (lw[q] > mx) mx = lw[q];
        }
        double z = 0;
        for (int q = 0; q < g->K; q++) z += (r[q] = exp(lw[q] - mx));
        double sc = 0, hb[GMM_MAXD] = {0};
        for (int q = 0; q < g->K; q++) {
            r[q] /= z;
            sc += r[q] * c[q];
            for (int j = 0; j < dim; j++) hb[j] += r[q] * h[q][j];
        }
        for (int j = 0; j < dim; j++) {
            double a = 0;
            for (int q = 0; q < g->K; q++) a += r[q] * gk[q][j];
            v[(size_t)i * dim + j] = a;
        }
        for (int m = 0; m < k; m++) {
            const double *ui = u + (size_t)m * nd + (size_t)i * dim;
            double *oi = uj + (size_t)m * nd + (size_t)i * dim;
            for (int j = 0; j < dim; j++) oi[j] = sc * ui[j];
            for (int q = 0; q < g->K; q++) {
                double ug = 0;
                for (int j = 0; j < dim; j++) ug += ui[j] * gk[q][j];
                for (int j = 0; j < dim; j++) oi[j] += ug * r[q] * (h[q][j] - hb[j]);
            }
        }
    }
    return DFL_OK;
}

/* Exact log-density of the mixture at t = 0 (alpha = 1, sigma = 0). */
static double gmm_logp0(const gmm *g, const double *x, int dim)
{
    double lw[GMM_MAXK], mx = -INFINITY;
    for (int q = 0; q < g->K; q++) {
        double V = g->s[q] * g->s[q], d2 = 0;
        for (int j = 0; j < dim; j++) d2 += (x[j] - g->mu[q][j]) * (x[j] - g->mu[q][j]);
        lw[q] = log(g->w[q]) - 0.5 * dim * (LOG_2PI + log(V)) - 0.5 * d2 / V;
        if (lw[q] > mx) mx = lw[q];
    }
    double z = 0;
    for (int q = 0; q < g->K; q++) z += exp(lw[q] - mx);
    return mx + log(z);
}

static double gauss_logp(const double *x, int dim, double var)
{
    double s = 0;
    for (int j = 0; j < dim; j++) s += -0.5 * (LOG_2PI + log(var) + x[j] * x[j] / var);
    return s;
}

/* ---------------------------------------------------------------- straight path, Gaussian data (3.2) */

typedef struct {
    double s;
} fm_gauss;

/* dx/dt = x (t - (1 - t) s^2)/v(t), v(t) = (1 - t)^2 s^2 + t^2: linear, so u^T J = u g(t). */
static dfl_status fm_gauss_vjp(void *user, const double *x, int n, int dim, double t, int k, const double *u,
                               double *v, double *uj)
{
    double s2 = ((fm_gauss *)user)->s * ((fm_gauss *)user)->s;
    double vt = (1 - t) * (1 - t) * s2 + t * t, g = (t - (1 - t) * s2) / vt;
    size_t nd = (size_t)n * dim;
    for (size_t q = 0; q < nd; q++) v[q] = g * x[q];
    for (size_t q = 0; q < (size_t)k * nd; q++) uj[q] = g * u[q];
    return DFL_OK;
}

static void test_fm_gaussian_exact(void **state)
{
    (void)state;
    dfl_process p;
    dfl_process_default(&p, DFL_FAMILY_FM);
    fm_gauss g = {0.7};
    enum { N = 6, D = 3 };
    double x[N * D], x0[N * D], lp[N], xT[N * D];
    dfl_rng r;
    dfl_rng_init(&r, 11);
    for (int i = 0; i < N * D; i++) x[i] = x0[i] = g.s * dfl_rng_normal(&r) * 1.5;
    dfl_loglik_opts o;
    dfl_loglik_opts_default(&o);
    dfl_ode_stats st = {0};
    assert_int_equal(dfl_pfode_loglik(&p, fm_gauss_vjp, &g, N, D, x, &o, NULL, lp, xT, &st), DFL_OK);
    for (int i = 0; i < N; i++) {
        CHECK_CLOSE(lp[i], gauss_logp(x0 + i * D, D, g.s * g.s), 1e-3 * D);
        /* the exact flow: x(1) = x(0) sqrt(v(1)/v(0)) = x(0)/s */
        for (int j = 0; j < D; j++) CHECK_CLOSE(xT[i * D + j], x0[i * D + j] / g.s, 1e-4);
    }
    assert_true(st.nfe > 6 && st.nfe < 2000);
    /* the input is not modified */
    for (int i = 0; i < N * D; i++) assert_true(x[i] == x0[i]);
    /* the divergence integral alone is D/2 ln(v(1)/v(0)) */
    double delta[N];
    o.t_min = 0;
    o.t_max = 1;
    assert_int_equal(dfl_pfode_solve(fm_gauss_vjp, &g, N, D, &o, DFL_DIV_EXACT, NULL, x, delta, NULL), DFL_OK);
    for (int i = 0; i < N; i++) CHECK_CLOSE(delta[i], 0.5 * D * log(1.0 / (g.s * g.s)), 1e-4);
}

/* EDM with Gaussian data N(0, sd^2): D(x; sigma) = sd^2/(sd^2 + sigma^2) x, v = eps_hat = sigma x/(sd^2 + sigma^2). */
static dfl_status edm_gauss_vjp(void *user, const double *x, int n, int dim, double t, int k, const double *u,
                                double *v, double *uj)
{
    double sd = *(double *)user, g = t / (sd * sd + t * t);
    size_t nd = (size_t)n * dim;
    for (size_t q = 0; q < nd; q++) v[q] = g * x[q];
    for (size_t q = 0; q < (size_t)k * nd; q++) uj[q] = g * u[q];
    return DFL_OK;
}

static void test_edm_gaussian_exact(void **state)
{
    (void)state;
    dfl_process p;
    dfl_process_default(&p, DFL_FAMILY_EDM);
    double sd = 0.5, tmin, tmax;
    dfl_loglik_t_range(&p, &tmin, &tmax);
    CHECK_CLOSE(tmin, 0.002, 1e-15);
    CHECK_CLOSE(tmax, 80.0, 1e-12);
    enum { N = 5, D = 4 };
    double x[N * D], lp[N], var[D], mean[D] = {0};
    for (int j = 0; j < D; j++) var[j] = sd * sd;
    dfl_rng r;
    dfl_rng_init(&r, 12);
    for (int i = 0; i < N * D; i++) x[i] = sd * dfl_rng_normal(&r);
    dfl_loglik_opts o;
    dfl_loglik_opts_default(&o);
    o.data_mean = mean;
    o.data_var = var;
    assert_int_equal(dfl_pfode_loglik(&p, edm_gauss_vjp, &sd, N, D, x, &o, NULL, lp, NULL, NULL), DFL_OK);
    /* exact marginal at sigma_min = 0.002: N(0, sd^2 + 0.002^2), within 1e-4 nats/dim of N(0, sd^2) */
    for (int i = 0; i < N; i++) CHECK_CLOSE(lp[i], gauss_logp(x + i * D, D, sd * sd), 1e-3 * D);
    /* k-diffusion's prior N(0, sigma_max^2 I) ignores the data variance: off by the prior mismatch */
    o.data_var = NULL;
    double lp2[N];
    assert_int_equal(dfl_pfode_loglik(&p, edm_gauss_vjp, &sd, N, D, x, &o, NULL, lp2, NULL, NULL), DFL_OK);
    double mism = 0;
    for (int i = 0; i < N; i++) mism += fabs(lp2[i] - lp[i]);
    assert_true(mism / N > 1e-5);
}

/* ---------------------------------------------------------------- Hutchinson */

typedef struct {
    int dim;
    double A[8][8];
} linear_field;

static dfl_status linear_vjp(void *user, const double *x, int n, int dim, double t, int k, const double *u,
                             double *v, double *uj)
{
    (void)t;
    linear_field *L = user;
    size_t nd = (size_t)n * dim;
    for (int i = 0; i < n; i++)
        for (int a = 0; a < dim; a++) {
            double s = 0;
            for (int b = 0; b < dim; b++) s += L->A[a][b] * x[(size_t)i * dim + b];
            v[(size_t)i * dim + a] = s;
        }
    for (int m = 0; m < k; m++)
        for (int i = 0; i < n; i++)
            for (int b = 0; b < dim; b++) {
                double s = 0;
                for (int a = 0; a < dim; a++) s += u[m * nd + (size_t)i * dim + a] * L->A[a][b];
                uj[m * nd + (size_t)i * dim + b] = s;
            }
    return DFL_OK;
}

static void test_hutchinson_linear(void **state)
{
    (void)state;
    enum { D = 6, M = 40000 };
    linear_field L = {D, {{0}}};
    dfl_rng r;
    dfl_rng_init(&r, 13);
    double tr = 0, fro = 0, diag2 = 0;
    for (int a = 0; a < D; a++)
        for (int b = 0; b < D; b++) L.A[a][b] = 0.3 * dfl_rng_normal(&r);
    /* z^T A z = z^T S z with S = (A + A^T)/2: the variance formula 2(||S||_F^2 - sum S_ii^2)
     * of reference/flows.md 3.1 holds for the symmetric part (for a non-symmetric A, using A
     * itself overstates it by the antisymmetric part's share) */
    for (int a = 0; a < D; a++)
        for (int b = 0; b < D; b++) {
            double s = 0.5 * (L.A[a][b] + L.A[b][a]);
            fro += s * s;
        }
    for (int a = 0; a < D; a++) {
        tr += L.A[a][a];
        diag2 += L.A[a][a] * L.A[a][a];
    }
    double var_theory = 2 * (fro - diag2);
    double *x = malloc(sizeof(double) * M * D), *z = malloc(sizeof(double) * M * D), *div = malloc(sizeof(double) * M);
    for (int i = 0; i < M * D; i++) x[i] = dfl_rng_normal(&r);
    dfl_rademacher(&r, z, (size_t)M * D);
    for (int i = 0; i < M * D; i++) assert_true(z[i] == 1.0 || z[i] == -1.0);
    /* exact mode is the trace */
    assert_int_equal(dfl_divergence(linear_vjp, &L, x, 3, D, 0.5, DFL_DIV_EXACT, NULL, NULL, div), DFL_OK);
    for (int i = 0; i < 3; i++) CHECK_CLOSE(div[i], tr, 1e-12);
    assert_int_equal(dfl_divergence(linear_vjp, &L, x, M, D, 0.5, DFL_DIV_HUTCHINSON, z, NULL, div), DFL_OK);
    double m = 0, v = 0;
    for (int i = 0; i < M; i++) m += div[i];
    m /= M;
    for (int i = 0; i < M; i++) v += (div[i] - m) * (div[i] - m);
    v /= M - 1;
    double se = sqrt(v / M);
    if (fabs(m - tr) > 4 * se) {
        print_error("Hutchinson mean %g vs trace %g (SE %g)\n", m, tr, se);
        fail();
    }
    /* Rademacher variance 2(||A||_F^2 - sum A_ii^2) (reference/flows.md 3.1) */
    CHECK_CLOSE(v / var_theory, 1.0, 0.05);

    /* one solve with a fixed probe: delta = (t1 - t0) z^T A z exactly; redrawing inside the solve
     * would not give this (reference/diffusion.md pitfall 8) */
    dfl_loglik_opts o;
    dfl_loglik_opts_default(&o);
    o.t_min = 0;
    o.t_max = 0.5;
    double delta[4];
    assert_int_equal(dfl_pfode_solve(linear_vjp, &L, 4, D, &o, DFL_DIV_HUTCHINSON, z, x, delta, NULL), DFL_OK);
    for (int i = 0; i < 4; i++) {
        double q = 0;
        for (int a = 0; a < D; a++)
            for (int b = 0; b < D; b++) q += z[i * D + a] * L.A[a][b] * z[i * D + b];
        CHECK_CLOSE(delta[i], 0.5 * q, 1e-8);
    }
    /* probes = K averages K solves: converges to the exact log-likelihood */
    dfl_process p;
    dfl_process_default(&p, DFL_FAMILY_FM);
    fm_gauss g = {0.6};
    enum { N = 64, DD = 20 };
    double xs[N * DD], lpe[N], lph[N];
    for (int i = 0; i < N * DD; i++) xs[i] = 0.6 * dfl_rng_normal(&r);
    dfl_loglik_opts_default(&o);
    o.div = DFL_DIV_EXACT;
    assert_int_equal(dfl_pfode_loglik(&p, fm_gauss_vjp, &g, N, DD, xs, &o, NULL, lpe, NULL, NULL), DFL_OK);
    for (int i = 0; i < N; i++) CHECK_CLOSE(lpe[i], gauss_logp(xs + i * DD, DD, 0.36), 1e-3 * DD);
    /* an isotropic linear field has zero Hutchinson variance: any K gives the exact value */
    o.div = DFL_DIV_AUTO; /* dim 20 > 16: Hutchinson */
    o.probes = 3;
    dfl_rng pr;
    dfl_rng_init(&pr, 5);
    assert_int_equal(dfl_pfode_loglik(&p, fm_gauss_vjp, &g, N, DD, xs, &o, &pr, lph, NULL, NULL), DFL_OK);
    for (int i = 0; i < N; i++) CHECK_CLOSE(lph[i], lpe[i], 1e-4 * DD);
    free(x);
    free(z);
    free(div);
}

/* ---------------------------------------------------------------- Gaussian mixture: exact density, grid */

static void test_gmm_exact_and_integrates(void **state)
{
    (void)state;
    dfl_process p;
    dfl_process_default(&p, DFL_FAMILY_FM);
    gmm g = {&p, 2, {0.3, 0.7}, {{-1.0, 0.3}, {1.0, -0.2}}, {0.45, 0.6}, 0};
    /* exact log-density at a few points */
    double pts[4 * 2] = {0, 0, -1, 0.3, 1.5, -1, 3, 2}, lp[4];
    dfl_loglik_opts o;
    dfl_loglik_opts_default(&o);
    assert_int_equal(dfl_pfode_loglik(&p, gmm_vjp, &g, 4, 2, pts, &o, NULL, lp, NULL, NULL), DFL_OK);
    for (int i = 0; i < 4; i++) CHECK_CLOSE(lp[i], gmm_logp0(&g, pts + 2 * i, 2), 2e-3);
    /* exp(log p) integrates to ~1 on a grid (reference/diffusion.md 3.5; flow_matching #55) */
    enum { G = 61 };
    double lo = -4.5, hi = 4.5, hstep = (hi - lo) / (G - 1);
    double *grid = malloc(sizeof(double) * G * G * 2), *lg = malloc(sizeof(double) * G * G);
    for (int a = 0; a < G; a++)
        for (int b = 0; b < G; b++) {
            grid[2 * (a * G + b)] = lo + a * hstep;
            grid[2 * (a * G + b) + 1] = lo + b * hstep;
        }
    o.rtol = o.atol = 1e-6;
    assert_int_equal(dfl_pfode_loglik(&p, gmm_vjp, &g, G * G, 2, grid, &o, NULL, lg, NULL, NULL), DFL_OK);
    double mass = 0;
    for (int a = 0; a < G; a++)
        for (int b = 0; b < G; b++) {
            double wa = (a == 0 || a == G - 1) ? 0.5 : 1, wb = (b == 0 || b == G - 1) ? 0.5 : 1;
            mass += wa * wb * exp(lg[a * G + b]);
        }
    mass *= hstep * hstep;
    CHECK_CLOSE(mass, 1.0, 2e-3);
    free(grid);
    free(lg);
}

/* ---------------------------------------------------------------- bits/dim */

static void test_bits_per_dim(void **state)
{
    (void)state;
    /* goldens (reference/flows.md 3.1: NICE's log-likelihoods are +5371.78 and +1980.50 nats) */
    CHECK_CLOSE(dfl_bits_per_dim(5371.78, 3072, 8, 2.0), 4.477, 5e-4);
    CHECK_CLOSE(dfl_bits_per_dim(1980.50, 784, 8, 1.0), 4.356, 5e-4);
    CHECK_CLOSE(dfl_bits_per_dim(0.0, 10, 8, 1.0), 8.0, 1e-12); /* uniform on [0,1]^D */
    /* dequantization covers exactly one level of width 2/256 */
    uint8_t vals[4] = {0, 1, 128, 255};
    double y[4];
    dfl_rng r;
    dfl_rng_init(&r, 3);
    dfl_dequantize8(vals, 4, &r, y);
    for (int i = 0; i < 4; i++) {
        double lo = -1 + 2.0 * vals[i] / 256, hi = -1 + 2.0 * (vals[i] + 1) / 256;
        assert_true(y[i] >= lo && y[i] < hi);
    }
    /* The same dequantized 8-bit data scaled to [0, 1] (+8) and to [-1, 1] (+7) give the same bpd
     * under the matching models (N(0.5, 0.25^2) on [0,1] is N(0, 0.5^2) on [-1,1]). */
    dfl_process p;
    dfl_process_default(&p, DFL_FAMILY_FM);
    enum { N = 8, D = 4 };
    gmm g01 = {&p, 1, {1.0}, {{0.5, 0.5, 0.5, 0.5}}, {0.25}, 0};
    gmm g11 = {&p, 1, {1.0}, {{0, 0, 0, 0}}, {0.5}, 0};
    uint8_t v[N * D];
    for (int i = 0; i < N * D; i++) v[i] = (uint8_t)dfl_rng_below(&r, 256);
    double y11[N * D], y01[N * D], l01[N], l11[N];
    dfl_dequantize8(v, N * D, &r, y11);
    for (int i = 0; i < N * D; i++) y01[i] = (y11[i] + 1) / 2;
    dfl_loglik_opts o;
    dfl_loglik_opts_default(&o);
    assert_int_equal(dfl_pfode_loglik(&p, gmm_vjp, &g01, N, D, y01, &o, NULL, l01, NULL, NULL), DFL_OK);
    assert_int_equal(dfl_pfode_loglik(&p, gmm_vjp, &g11, N, D, y11, &o, NULL, l11, NULL, NULL), DFL_OK);
    for (int i = 0; i < N; i++) {
        CHECK_CLOSE(dfl_bits_per_dim(l01[i], D, 8, 1.0), dfl_bits_per_dim(l11[i], D, 8, 2.0), 1e-3);
        CHECK_CLOSE(l11[i], l01[i] - D * log(2.0), 1e-3 * D); /* the Jacobian of y -> 2y - 1 */
        CHECK_CLOSE(l01[i], gmm_logp0(&g01, y01 + i * D, D), 1e-3 * D);
    }
}

/* ---------------------------------------------------------------- errors */

/* dx/dt = x^2 blows up at t = 1/x(0). */
static dfl_status blowup_vjp(void *user, const double *x, int n, int dim, double t, int k, const double *u,
                             double *v, double *uj)
{
    (void)user;
    (void)t;
    size_t nd = (size_t)n * dim;
    for (size_t q = 0; q < nd; q++) v[q] = x[q] * x[q];
    for (int m = 0; m < k; m++)
        for (size_t q = 0; q < nd; q++) uj[m * nd + q] = 2 * x[q] * u[m * nd + q];
    return DFL_OK;
}

static void test_errors(void **state)
{
    (void)state;
    dfl_loglik_opts o;
    dfl_loglik_opts_default(&o);
    o.t_min = 0;
    o.t_max = 2;
    o.max_nfe = 3000;
    double x[1] = {1.0}, d[1];
    dfl_status st = dfl_pfode_solve(blowup_vjp, NULL, 1, 1, &o, DFL_DIV_EXACT, NULL, x, d, NULL);
    assert_int_equal(st, DFL_ERR_NUMERIC);
    const char *msg = dfl_last_error();
    const char *at = strstr(msg, "t = ");
    assert_non_null(at);
    double treached = atof(at + 4);
    if (!(treached > 0.9 && treached <= 1.0)) {
        print_error("blow-up reported at t = %g (%s)\n", treached, msg);
        fail();
    }
    /* max NFE guard */
    fm_gauss g = {0.5};
    double x2[2] = {0.3, 0.1};
    o.t_max = 1;
    o.max_nfe = 10;
    assert_int_equal(dfl_pfode_solve(fm_gauss_vjp, &g, 1, 2, &o, DFL_DIV_EXACT, NULL, x2, d, NULL), DFL_ERR_NUMERIC);
    assert_non_null(strstr(dfl_last_error(), "max NFE"));
    /* bad ranges and tolerances */
    o.max_nfe = 1000;
    o.t_min = 1;
    assert_int_equal(dfl_pfode_solve(fm_gauss_vjp, &g, 1, 2, &o, DFL_DIV_EXACT, NULL, x2, d, NULL), DFL_ERR_ARG);
    o.t_min = 0;
    o.rtol = 0;
    assert_int_equal(dfl_pfode_solve(fm_gauss_vjp, &g, 1, 2, &o, DFL_DIV_EXACT, NULL, x2, d, NULL), DFL_ERR_ARG);
    o.rtol = 1e-5;
    assert_int_equal(dfl_pfode_solve(fm_gauss_vjp, &g, 1, 2, &o, DFL_DIV_HUTCHINSON, NULL, x2, d, NULL), DFL_ERR_ARG);
    /* prior at FM's t = 1 is N(0, I) exactly */
    double z[3] = {0, 0, 0};
    CHECK_CLOSE(dfl_prior_logp(z, 3, 0.0, 1.0, NULL, NULL), -3 * 0.918938533204673, 1e-12);
}

/* ---------------------------------------------------------------- a dfl_model (toy-mlp) */

static void check_model_field(dfl_family fam, double t)
{
    dfl_arch_cfg cfg;
    assert_int_equal(dfl_arch_preset("toy-mlp", &cfg), DFL_OK);
    dfl_rng r;
    dfl_rng_init(&r, 21);
    dfl_model m;
    dfl_process_default(&m.proc, fam);
    m.net = dfl_net_new(&cfg, &r);
    assert_non_null(m.net);
    dfl_ctx *ctx = dfl_ctx_new();
    dfl_model_field mf = {ctx, &m, 2, {0, 2, 1, 1}, 0};
    enum { N = 5, D = 2 };
    double x[N * D], v[N * D], v0[N * D], div[N];
    for (int i = 0; i < N * D; i++) x[i] = 1.5 * dfl_rng_normal(&r);
    assert_int_equal(dfl_divergence(dfl_model_vjp, &mf, x, N, D, t, DFL_DIV_EXACT, NULL, v, div), DFL_OK);
    /* no parameter gradient was touched */
    dfl_params *ps = dfl_net_params(m.net);
    for (int i = 0; i < ps->n; i++) {
        assert_true(ps->p[i].t->requires_grad);
        if (ps->p[i].t->grad)
            for (size_t q = 0; q < ps->p[i].t->n; q++) assert_true(ps->p[i].t->grad[q] == 0.0f);
    }
    /* velocity-only path agrees, and equals alpha' x0_hat + sigma' eps_hat of the sampler's wrapper */
    assert_int_equal(dfl_model_vjp(&mf, x, N, D, t, 0, NULL, v0, NULL), DFL_OK);
    float xf[N * D], x0h[N * D], eh[N * D];
    for (int i = 0; i < N * D; i++) xf[i] = (float)x[i];
    assert_int_equal(dfl_denoise(ctx, &m, xf, 2, (int[]){N, D}, t, x0h, eh), DFL_OK);
    double da = dfl_dalpha(&m.proc, t), ds = dfl_dsigma(&m.proc, t);
    for (int i = 0; i < N * D; i++) {
        CHECK_CLOSE(v0[i], v[i], 1e-6 * (1 + fabs(v[i])));
        CHECK_CLOSE(v[i], da * x0h[i] + ds * eh[i], 1e-4 * (1 + fabs(v[i])));
    }
    /* exact divergence vs central finite differences of the velocity */
    double h = 1e-2 * (fam == DFL_FAMILY_EDM ? t : 1.0);
    for (int i = 0; i < N; i++) {
        double fd = 0;
        for (int j = 0; j < D; j++) {
            double xp[D], xm[D], vp[D], vm[D];
            memcpy(xp, x + i * D, sizeof xp);
            memcpy(xm, x + i * D, sizeof xm);
            xp[j] += h;
            xm[j] -= h;
            assert_int_equal(dfl_model_vjp(&mf, xp, 1, D, t, 0, NULL, vp, NULL), DFL_OK);
            assert_int_equal(dfl_model_vjp(&mf, xm, 1, D, t, 0, NULL, vm, NULL), DFL_OK);
            fd += (vp[j] - vm[j]) / (2 * h);
        }
        CHECK_CLOSE(div[i], fd, 2e-3 * (1 + fabs(fd)));
    }
    /* split into one copy per network call: the same numbers */
    mf.max_rows = N;
    double div2[N];
    assert_int_equal(dfl_divergence(dfl_model_vjp, &mf, x, N, D, t, DFL_DIV_EXACT, NULL, NULL, div2), DFL_OK);
    for (int i = 0; i < N; i++) CHECK_CLOSE(div2[i], div[i], 1e-5 * (1 + fabs(div[i])));
    mf.max_rows = 0;
    /* Hutchinson mean over many probes at one point -> exact divergence */
    enum { M = 2000 };
    double *xr = malloc(sizeof(double) * M * D), *z = malloc(sizeof(double) * M * D), *dh = malloc(sizeof(double) * M);
    for (int i = 0; i < M; i++) memcpy(xr + i * D, x, sizeof(double) * D);
    dfl_rademacher(&r, z, (size_t)M * D);
    assert_int_equal(dfl_divergence(dfl_model_vjp, &mf, xr, M, D, t, DFL_DIV_HUTCHINSON, z, NULL, dh), DFL_OK);
    double mean = 0, var = 0;
    for (int i = 0; i < M; i++) mean += dh[i];
    mean /= M;
    for (int i = 0; i < M; i++) var += (dh[i] - mean) * (dh[i] - mean);
    double se = sqrt(var / (M - 1) / M);
    if (!(fabs(mean - div[0]) <= 4 * se + 1e-5 * (1 + fabs(div[0])))) {
        print_error("Hutchinson mean %g vs exact %g (SE %g)\n", mean, div[0], se);
        fail();
    }
    /* a full likelihood solve through the model runs and is finite */
    dfl_loglik_opts o;
    dfl_loglik_opts_default(&o);
    o.rtol = o.atol = 1e-4;
    double lp[N];
    dfl_ode_stats st = {0};
    assert_int_equal(dfl_pfode_loglik(&m.proc, dfl_model_vjp, &mf, N, D, x, &o, NULL, lp, NULL, &st), DFL_OK);
    for (int i = 0; i < N; i++) assert_true(isfinite(lp[i]));
    assert_true(st.nfe > 0);
    free(xr);
    free(z);
    free(dh);
    dfl_ctx_free(ctx);
    dfl_net_free(m.net);
}

static void test_model_field_fm(void **state)
{
    (void)state;
    check_model_field(DFL_FAMILY_FM, 0.37);
}

static void test_model_field_edm(void **state)
{
    (void)state;
    check_model_field(DFL_FAMILY_EDM, 1.3);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fm_gaussian_exact),
        cmocka_unit_test(test_edm_gaussian_exact),
        cmocka_unit_test(test_hutchinson_linear),
        cmocka_unit_test(test_gmm_exact_and_integrates),
        cmocka_unit_test(test_bits_per_dim),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_model_field_fm),
        cmocka_unit_test(test_model_field_edm),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
