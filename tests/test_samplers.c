/* Samplers and discretizations against closed-form oracles, no trained networks
 * (shared/reference/diffusion.md 3.1, 3.3, 3.4, 5):
 *   - 1-D Gaussian data N(0, sd^2) with the exact denoiser, 2-D Gaussian mixture with the exact
 *     noisy posterior (responsibilities by log-sum-exp);
 *   - ODE samplers converge at their order; the DPM-Solver++(2M) vector of reference 3.1;
 *     RK45 meets its tolerance;
 *   - stochastic samplers reproduce the data's mean and covariance for every family that
 *     dfl_family_parse accepts;
 *   - schedule vectors and DDPM spacings exactly as reference 3.4; refusals. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "dfl_test.h"

#include "difflow/gen.h"


/* Every family name the project may know; the tests use those dfl_family_parse accepts. */
static const char *const FAMILY_NAMES[] = {"fm", "edm", "vp", "subvp", "ve", "ddpm"};
#define N_FAMILY_NAMES ((int)(sizeof FAMILY_NAMES / sizeof FAMILY_NAMES[0]))

static int family_of(int i, dfl_process *p)
{
    dfl_family f;
    if (dfl_family_parse(FAMILY_NAMES[i], &f) != DFL_OK) return 0;
    dfl_process_default(p, f);
    return 1;
}

/* ---------------------------------------------------------------- oracles */

/* Gaussian data N(0, sd^2 I): x0_hat = alpha sd^2/v x, eps_hat = sigma/v x, v = alpha^2 sd^2 + sigma^2
 * (reference 3.1). Evaluated in float32 like a network. */
typedef struct {
    const dfl_process *p;
    double sd;
    size_t n;
    int calls;
    double scale; /* multiplies eps_hat (1 = exact; huge = a diverging model) */
} gauss_oracle;

static dfl_status gauss_den(void *user, const float *x, double t, float *x0, float *eps)
{
    gauss_oracle *g = user;
    double a = dfl_alpha(g->p, t), s = dfl_sigma(g->p, t), v = a * a * g->sd * g->sd + s * s;
    double sc = g->scale != 0 ? g->scale : 1.0;
    for (size_t i = 0; i < g->n; i++) {
        x0[i] = (float)(a * g->sd * g->sd / v * x[i]);
        eps[i] = (float)(sc * s / v * x[i]);
    }
    g->calls++;
    return DFL_OK;
}

/* 2-D Gaussian mixture sum_k w_k N(mu_k, s_k^2 I) (reference 3.3). */
#define K_MIX 3
static const double MIX_W[K_MIX] = {0.3, 0.5, 0.2};
static const double MIX_MU[K_MIX][2] = {{-1.0, 0.0}, {1.0, 0.5}, {0.0, -1.0}};
static const double MIX_S[K_MIX] = {0.3, 0.4, 0.25};

typedef struct {
    const dfl_process *p;
    size_t npts;
    int calls;
} mix_oracle;

static dfl_status mix_den(void *user, const float *x, double t, float *x0, float *eps)
{
    mix_oracle *o = user;
    double a = dfl_alpha(o->p, t), s = dfl_sigma(o->p, t);
    double vk[K_MIX], lc[K_MIX], gk[K_MIX];
    for (int k = 0; k < K_MIX; k++) {
        vk[k] = a * a * MIX_S[k] * MIX_S[k] + s * s;
        lc[k] = log(MIX_W[k]) - log(vk[k]); /* log of w_k N(.; a mu_k, v_k I) in 2-D, up to a constant */
        gk[k] = a * MIX_S[k] * MIX_S[k] / vk[k];
    }
    for (size_t i = 0; i < o->npts; i++) {
        double xi[2] = {x[2 * i], x[2 * i + 1]}, lw[K_MIX], mx = -INFINITY;
        for (int k = 0; k < K_MIX; k++) {
            double d0 = xi[0] - a * MIX_MU[k][0], d1 = xi[1] - a * MIX_MU[k][1];
            lw[k] = lc[k] - 0.5 * (d0 * d0 + d1 * d1) / vk[k];
            if (lw[k] > mx) mx = lw[k];
        }
        double z = 0;
        for (int k = 0; k < K_MIX; k++) z += (lw[k] = exp(lw[k] - mx)); /* log-sum-exp */
        double m[2] = {0, 0};
        for (int k = 0; k < K_MIX; k++)
            for (int j = 0; j < 2; j++) m[j] += lw[k] / z * (MIX_MU[k][j] + gk[k] * (xi[j] - a * MIX_MU[k][j]));
        for (int j = 0; j < 2; j++) {
            x0[2 * i + j] = (float)m[j];
            eps[2 * i + j] = (float)((xi[j] - a * m[j]) / s);
        }
    }
    o->calls++;
    return DFL_OK;
}

static void mix_moments(double mean[2], double cov[2][2])
{
    mean[0] = mean[1] = 0;
    for (int k = 0; k < K_MIX; k++)
        for (int j = 0; j < 2; j++) mean[j] += MIX_W[k] * MIX_MU[k][j];
    for (int i = 0; i < 2; i++)
        for (int j = 0; j < 2; j++) {
            double e = 0;
            for (int k = 0; k < K_MIX; k++)
                e += MIX_W[k] * (MIX_MU[k][i] * MIX_MU[k][j] + (i == j ? MIX_S[k] * MIX_S[k] : 0.0));
            cov[i][j] = e - mean[i] * mean[j];
        }
}

/* ---------------------------------------------------------------- (c) schedules */

static void test_spacing_indices(void **state)
{
    (void)state;
    int j[1000];
    /* Reference 3.4: T = 1000, N = 10. */
    assert_int_equal(dfl_timestep_indices(DFL_SCHED_LINSPACE, 1000, 10, 0, j), DFL_OK);
    for (int i = 0; i < 10; i++) assert_int_equal(j[i], 999 - 111 * i);
    assert_int_equal(dfl_timestep_indices(DFL_SCHED_LEADING, 1000, 10, 0, j), DFL_OK);
    for (int i = 0; i < 10; i++) assert_int_equal(j[i], 900 - 100 * i);
    assert_int_equal(dfl_timestep_indices(DFL_SCHED_TRAILING, 1000, 10, 0, j), DFL_OK);
    for (int i = 0; i < 10; i++) assert_int_equal(j[i], 999 - 100 * i);
    /* numpy's half-to-even rounding: linspace(0, 99, 5) = 0, 24.75, 49.5, 74.25, 99 (pitfall 1's
     * T = 100, N = 5 case); arange(1000, 0, -1000/3) = 1000, 666.67, 333.33. */
    assert_int_equal(dfl_timestep_indices(DFL_SCHED_LINSPACE, 100, 5, 0, j), DFL_OK);
    const int l5[5] = {99, 74, 50, 25, 0};
    for (int i = 0; i < 5; i++) assert_int_equal(j[i], l5[i]);
    assert_int_equal(dfl_timestep_indices(DFL_SCHED_TRAILING, 1000, 3, 0, j), DFL_OK);
    assert_int_equal(j[0], 999);
    assert_int_equal(j[1], 666);
    assert_int_equal(j[2], 332);
    /* Pitfall 2: N = T visits 999..0, never 1000. */
    assert_int_equal(dfl_timestep_indices(DFL_SCHED_LEADING, 1000, 1000, 0, j), DFL_OK);
    for (int i = 0; i < 1000; i++) assert_int_equal(j[i], 999 - i);
    assert_int_equal(dfl_timestep_indices(DFL_SCHED_LEADING, 1000, 1001, 0, j), DFL_ERR_ARG);
    assert_int_equal(dfl_timestep_indices(DFL_SCHED_TRAILING, 1000, 0, 0, j), DFL_ERR_ARG);
    assert_int_equal(dfl_timestep_indices(DFL_SCHED_RHO, 1000, 10, 0, j), DFL_ERR_ARG);
    /* diffusers steps_offset = 1 (Stable Diffusion): leading 901, 801, ..., 1; only for leading,
     * and never past index T - 1 (pitfall 2: N = T with offset 1 would start at 1000). */
    assert_int_equal(dfl_timestep_indices(DFL_SCHED_LEADING, 1000, 10, 1, j), DFL_OK);
    for (int i = 0; i < 10; i++) assert_int_equal(j[i], 901 - 100 * i);
    assert_int_equal(dfl_timestep_indices(DFL_SCHED_LEADING, 1000, 1000, 1, j), DFL_ERR_ARG);
    assert_int_equal(dfl_timestep_indices(DFL_SCHED_LEADING, 1000, 10, 99, j), DFL_OK);
    assert_int_equal(j[0], 999);
    assert_int_equal(dfl_timestep_indices(DFL_SCHED_LEADING, 1000, 10, 100, j), DFL_ERR_ARG);
    assert_int_equal(dfl_timestep_indices(DFL_SCHED_TRAILING, 1000, 10, 1, j), DFL_ERR_ARG);
    assert_int_equal(dfl_timestep_indices(DFL_SCHED_LEADING, 1000, 10, -1, j), DFL_ERR_ARG);
    dfl_process p;
    dfl_process_default(&p, DFL_FAMILY_DDPM);
    double t[11];
    assert_int_equal(dfl_schedule(&p, DFL_SCHED_LEADING, 10, 7.0, 1, t), DFL_OK);
    CHECK_CLOSE(t[0], 902.0 / 1000, 1e-12);
    CHECK_CLOSE(t[9], 2.0 / 1000, 1e-12);
    assert_int_equal(dfl_schedule(&p, DFL_SCHED_RHO, 10, 7.0, 1, t), DFL_ERR_ARG);
}

static void test_schedule_vectors(void **state)
{
    (void)state;
    dfl_process p;
    dfl_process_default(&p, DFL_FAMILY_EDM);
    double t[1001];
    /* Reference 3.4: exponential (log-uniform in the ratio), n = 5, 0.002..80. */
    const double ex[6] = {80, 5.6569, 0.4, 0.028284, 0.002, 0};
    assert_int_equal(dfl_schedule(&p, DFL_SCHED_LOGUNIFORM, 5, 7.0, 0, t), DFL_OK);
    for (int i = 0; i < 6; i++) CHECK_CLOSE(t[i], ex[i], 1e-4 * ex[i]);
    assert_true(t[5] == 0.0);
    /* Rho, N = 18. */
    const double rho[19] = {80, 57.586, 40.7856, 28.3746, 19.3525, 12.9101, 8.40094, 5.31519, 3.25682, 1.92334,
                            1.08817, 0.585348, 0.296442, 0.139516, 0.0599473, 0.0229345, 0.00752802, 0.002, 0};
    assert_int_equal(dfl_schedule(&p, DFL_SCHED_RHO, 18, 7.0, 0, t), DFL_OK);
    for (int i = 0; i < 19; i++) CHECK_CLOSE(t[i], rho[i], 1e-4 * rho[i]);
    /* Spacings map index j to t = t_max (j + 1)/T, then 0. */
    for (int f = 0; f < N_FAMILY_NAMES; f++) {
        if (!family_of(f, &p)) continue;
        double tm = dfl_t_max(&p);
        assert_int_equal(dfl_schedule(&p, DFL_SCHED_LINSPACE, 10, 7.0, 0, t), DFL_OK);
        for (int i = 0; i < 10; i++) CHECK_CLOSE(t[i], tm * (999 - 111 * i + 1) / 1000.0, 1e-15 * tm);
        assert_true(t[10] == 0.0);
        assert_int_equal(dfl_schedule(&p, DFL_SCHED_TRAILING, 10, 7.0, 0, t), DFL_OK);
        CHECK_CLOSE(t[0], tm, 1e-15 * tm);
        CHECK_CLOSE(t[9], tm * 0.1, 1e-15 * tm);
        assert_int_equal(dfl_schedule(&p, DFL_SCHED_LEADING, 10, 7.0, 0, t), DFL_OK);
        CHECK_CLOSE(t[0], tm * 0.901, 1e-15 * tm);
        CHECK_CLOSE(t[9], tm * 0.001, 1e-15 * tm);
        /* Ratio schedules hit the family's ratio range exactly. */
        for (int k = 0; k < 2; k++) {
            dfl_schedule_kind sk = k ? DFL_SCHED_LOGUNIFORM : DFL_SCHED_RHO;
            assert_int_equal(dfl_schedule(&p, sk, 12, 7.0, 0, t), DFL_OK);
            CHECK_CLOSE(dfl_ratio(&p, t[0]), p.sigma_max, 1e-6 * p.sigma_max);
            double smin = fmax(p.sigma_min, dfl_t_min(&p) > 0 ? dfl_ratio(&p, dfl_t_min(&p)) : 0.0);
            CHECK_CLOSE(dfl_ratio(&p, t[11]), smin, 1e-6 * smin);
            for (int i = 0; i < 12; i++) assert_true(t[i] > t[i + 1]);
        }
        /* A ratio above what the family reaches at t_max is refused (families with a finite one). */
        double rmax = dfl_ratio(&p, tm);
        if (isfinite(rmax) && p.family != DFL_FAMILY_EDM) {
            dfl_process q = p;
            q.sigma_max = 2 * rmax;
            assert_int_equal(dfl_schedule(&q, DFL_SCHED_RHO, 10, 7.0, 0, t), DFL_ERR_ARG);
            assert_non_null(strstr(dfl_last_error(), "range"));
        }
        assert_int_equal(dfl_schedule(&p, DFL_SCHED_LINSPACE, 1001, 7.0, 0, t), DFL_ERR_ARG);
        assert_int_equal(dfl_schedule(&p, DFL_SCHED_LOGUNIFORM, 0, 7.0, 0, t), DFL_ERR_ARG);
    }
}

/* ---------------------------------------------------------------- (a) ODE orders */

/* Signed error of a deterministic sampler on 1-D Gaussian data from x_T = sqrt(v(t0)) (one
 * standard deviation of the exact marginal). exact_end = 0: against the exact flow
 * x(0) = x_T sqrt(v(0)/v(t0)) (reference 3.1's definition). exact_end = 1: against the
 * sampler's own final step (Euler/Heun: an Euler step to 0; the others: alpha(0) x0_hat) applied
 * to the exact x(t[N-1]), so that the constant error of that last step from the fixed smallest
 * grid time (O(sigma_min^2), visible for VP at N = 256) does not hide the order. */
static double ode_error_x(const dfl_process *p, dfl_sample_cfg c, double sd, int *nfe, int exact_end)
{
    double tg[4097];
    assert_int_equal(dfl_schedule(p, c.schedule, c.steps, c.rho, 0, tg), DFL_OK);
    double a0 = dfl_alpha(p, tg[0]), s0 = dfl_sigma(p, tg[0]), v0 = a0 * a0 * sd * sd + s0 * s0;
    double xT = sqrt(v0), exact = xT * sd * dfl_alpha(p, 0.0) / sqrt(v0);
    if (exact_end) {
        double te = tg[c.steps - 1], a = dfl_alpha(p, te), s = dfl_sigma(p, te), v = a * a * sd * sd + s * s;
        double xe = xT * sqrt(v / v0), D = a * sd * sd / v * xe, E = s / v * xe;
        if (c.sampler == DFL_SAMPLER_EULER || c.sampler == DFL_SAMPLER_HEUN)
            exact = xe - te * (dfl_dalpha(p, te) * D + dfl_dsigma(p, te) * E);
        else
            exact = dfl_alpha(p, 0.0) * D;
    }
    gauss_oracle g = {p, sd, 1, 0, 1.0};
    double x = xT;
    int k = 0;
    assert_int_equal(dfl_sample_run(p, &c, gauss_den, &g, NULL, &x, 1, 1, &k), DFL_OK);
    assert_int_equal(k, g.calls);
    if (nfe) *nfe = k;
    return x - exact;
}

static double ode_error(const dfl_process *p, dfl_sample_cfg c, double sd, int *nfe)
{
    return ode_error_x(p, c, sd, nfe, 0);
}

static void test_dpmpp2m_vector(void **state)
{
    (void)state;
    /* Reference 3.1: EDM family, sd = 0.5, rho schedule, x_T = sqrt(80^2 + 0.25); float32 oracle. */
    dfl_process p;
    dfl_process_default(&p, DFL_FAMILY_EDM);
    const int Ns[5] = {4, 8, 16, 32, 64};
    const double ref[5] = {-0.008359, 0.07531, 0.04003, 0.008501, 0.001901};
    for (int i = 0; i < 5; i++) {
        dfl_sample_cfg c = {.sampler = DFL_SAMPLER_DPMPP2M, .schedule = DFL_SCHED_RHO, .steps = Ns[i], .rho = 7};
        int nfe;
        double e = ode_error(&p, c, 0.5, &nfe);
        CHECK_CLOSE(e, ref[i], 2e-3 * fabs(ref[i]) + 2e-5);
        assert_int_equal(nfe, Ns[i]);
    }
}

/* Least-squares slope of log|err| against log N. */
static double order_slope(const dfl_process *p, dfl_sampler_kind k, dfl_schedule_kind sk, const int *Ns, int m)
{
    double sx = 0, sy = 0, sxx = 0, sxy = 0;
    for (int i = 0; i < m; i++) {
        dfl_sample_cfg c = {.sampler = k, .schedule = sk, .steps = Ns[i], .rho = 7};
        double e = fabs(ode_error_x(p, c, 0.5, NULL, 1));
        double lx = log((double)Ns[i]), ly = log(e);
        sx += lx;
        sy += ly;
        sxx += lx * lx;
        sxy += lx * ly;
    }
    return -(m * sxy - sx * sy) / (m * sxx - sx * sx);
}

static void test_ode_orders(void **state)
{
    (void)state;
    /* Measured order (minus the slope of log error vs log N) over N = 32..512. Families with
     * smooth alpha, sigma only: the discrete DDPM family's ln alphabar is piecewise linear, so
     * its derivatives jump at the knots. Rho schedule on the ratio for every family (test_gen
     * covers FM on the uniform grid for Euler and Heun). */
    const int Ns[5] = {32, 64, 128, 256, 512}; /* N = 16 is pre-asymptotic for VP's Euler */
    for (int f = 0; f < N_FAMILY_NAMES; f++) {
        dfl_process p;
        if (!family_of(f, &p) || strcmp(FAMILY_NAMES[f], "ddpm") == 0) continue;
        dfl_schedule_kind sk = DFL_SCHED_RHO;
        double se = order_slope(&p, DFL_SAMPLER_EULER, sk, Ns, 5);
        double sh = order_slope(&p, DFL_SAMPLER_HEUN, sk, Ns, 5);
        double sd = order_slope(&p, DFL_SAMPLER_DPMPP2M, sk, Ns, 5);
        print_message("  %-6s order: euler %.3f, heun %.3f, dpmpp2m %.3f\n", FAMILY_NAMES[f], se, sh, sd);
        CHECK_CLOSE(se, 1.0, 0.15);
        CHECK_CLOSE(sh, 2.0, 0.25);
        CHECK_CLOSE(sd, 2.0, 0.25);
    }
}

static void test_rk45(void **state)
{
    (void)state;
    for (int f = 0; f < N_FAMILY_NAMES; f++) {
        dfl_process p;
        if (!family_of(f, &p)) continue;
        dfl_sample_cfg c = {.sampler = DFL_SAMPLER_RK45, .schedule = DFL_SCHED_RHO, .steps = 18, .rho = 7,
                            .rtol = 1e-5, .atol = 1e-5};
        int nfe;
        double e = ode_error_x(&p, c, 0.5, &nfe, 1);
        print_message("  %-6s rk45: error %.3g, NFE %d\n", FAMILY_NAMES[f], e, nfe);
        CHECK_CLOSE(e, 0.0, 1e-4);
        assert_true(nfe > 6 && nfe < 2000);
        /* A tighter tolerance takes at least as many evaluations and lands closer (down to the
         * float32 oracle's rounding). */
        if (strcmp(FAMILY_NAMES[f], "ddpm") == 0) continue; /* kinks in ln alphabar: see test_ode_orders */
        c.rtol = c.atol = 1e-7;
        int nfe2;
        e = ode_error_x(&p, c, 0.5, &nfe2, 1);
        assert_true(nfe2 >= nfe);
        CHECK_CLOSE(e, 0.0, 2e-5);
    }
}

/* ---------------------------------------------------------------- (b) stochastic samplers */

typedef struct {
    const char *what;
    dfl_sample_cfg c;
    double allow; /* discretisation allowance, relative to the data's standard deviation scale */
    int nfe;      /* expected NFE */
} stoch_case;

static int n_stoch_cases(stoch_case *cs)
{
    int k = 0;
    cs[k++] = (stoch_case){"edm churn", {.sampler = DFL_SAMPLER_EDM, .schedule = DFL_SCHED_RHO, .steps = 160, .rho = 7,
                                         .churn = 40, .s_tmin = 0.01, .s_tmax = 50, .s_noise = 1.0},
                           0.03, 319};
    cs[k++] = (stoch_case){"ddpm", {.sampler = DFL_SAMPLER_DDPM, .schedule = DFL_SCHED_RHO, .steps = 500, .rho = 7},
                           0.03, 500};
    cs[k++] = (stoch_case){"ddim eta=1",
                           {.sampler = DFL_SAMPLER_DDIM, .schedule = DFL_SCHED_RHO, .steps = 500, .rho = 7, .eta = 1},
                           0.03, 500};
    cs[k++] = (stoch_case){"em", {.sampler = DFL_SAMPLER_EM, .schedule = DFL_SCHED_RHO, .steps = 500, .rho = 7},
                           0.03, 500};
    cs[k++] = (stoch_case){"pc", {.sampler = DFL_SAMPLER_PC, .schedule = DFL_SCHED_RHO, .steps = 300, .rho = 7,
                                  .snr = 0.16, .corrector_steps = 1},
                           0.03, 600};
    cs[k++] = (stoch_case){"pc ancestral", {.sampler = DFL_SAMPLER_PC, .schedule = DFL_SCHED_RHO, .steps = 300, .rho = 7,
                                            .snr = 0.16, .corrector_steps = 1, .predictor = DFL_PREDICTOR_ANCESTRAL},
                           0.03, 600};
    cs[k++] = (stoch_case){"pc euler-maruyama", {.sampler = DFL_SAMPLER_PC, .schedule = DFL_SCHED_RHO, .steps = 300,
                                                 .rho = 7, .snr = 0.16, .corrector_steps = 1,
                                                 .predictor = DFL_PREDICTOR_EULER_MARUYAMA},
                           0.03, 600};
    cs[k++] = (stoch_case){"pc none", {.sampler = DFL_SAMPLER_PC, .schedule = DFL_SCHED_RHO, .steps = 50, .rho = 7,
                                       .snr = 0.16, .corrector_steps = 20, .predictor = DFL_PREDICTOR_NONE},
                           0.05, 1001};
    cs[k++] = (stoch_case){"ald", {.sampler = DFL_SAMPLER_ALD, .schedule = DFL_SCHED_RHO, .steps = 20, .rho = 7,
                                   .snr = 0.5, .corrector_steps = 50},
                           0.05, 1001};
    return k;
}

/* 20000 points in 1-D, 10000 in 2-D (20000 values either way). */
#define NPTS_1D 20000

/* Draws x_T from the exact marginal at t0 of data x0 (npts points of dim values) and runs c. */
static void stoch_check(const dfl_process *p, const stoch_case *sc, int dim, uint64_t seed)
{
    double tg[1024];
    assert_int_equal(dfl_schedule(p, sc->c.schedule, sc->c.steps, sc->c.rho, 0, tg), DFL_OK);
    double a = dfl_alpha(p, tg[0]), s = dfl_sigma(p, tg[0]);
    const size_t NPTS = dim == 1 ? NPTS_1D : NPTS_1D / 2;
    size_t n = NPTS * dim;
    double *x = malloc(n * sizeof *x);
    assert_non_null(x);
    dfl_rng rng;
    dfl_rng_init(&rng, seed);
    double mean[2], cov[2][2];
    gauss_oracle g = {p, 0.5, n, 0, 1.0};
    mix_oracle mo = {p, NPTS, 0};
    if (dim == 1) {
        mean[0] = 0;
        cov[0][0] = 0.25;
        for (size_t i = 0; i < n; i++) x[i] = a * 0.5 * dfl_rng_normal(&rng) + s * dfl_rng_normal(&rng);
    } else {
        mix_moments(mean, cov);
        for (size_t i = 0; i < NPTS; i++) {
            double u = dfl_rng_uniform_d(&rng), acc = 0;
            int k = 0;
            while (k < K_MIX - 1 && u >= acc + MIX_W[k]) acc += MIX_W[k++];
            for (int j = 0; j < 2; j++)
                x[2 * i + j] = a * (MIX_MU[k][j] + MIX_S[k] * dfl_rng_normal(&rng)) + s * dfl_rng_normal(&rng);
        }
    }
    int nfe = -1;
    dfl_status st = dim == 1 ? dfl_sample_run(p, &sc->c, gauss_den, &g, &rng, x, n, (int)NPTS, &nfe)
                             : dfl_sample_run(p, &sc->c, mix_den, &mo, &rng, x, n, (int)NPTS, &nfe);
    if (st) print_error("%s: %s\n", sc->what, dfl_last_error());
    assert_int_equal(st, DFL_OK);
    assert_int_equal(nfe, dim == 1 ? g.calls : mo.calls);
    assert_int_equal(nfe, sc->nfe);
    /* Sample mean and covariance with standard errors from the samples themselves. */
    double m[2] = {0, 0}, C[2][2] = {{0, 0}, {0, 0}}, V[2][2] = {{0, 0}, {0, 0}};
    for (size_t i = 0; i < NPTS; i++)
        for (int j = 0; j < dim; j++) m[j] += x[(size_t)dim * i + j] / NPTS;
    for (size_t i = 0; i < NPTS; i++)
        for (int j = 0; j < dim; j++)
            for (int k = 0; k < dim; k++) C[j][k] += (x[dim * i + j] - m[j]) * (x[dim * i + k] - m[k]) / NPTS;
    for (size_t i = 0; i < NPTS; i++)
        for (int j = 0; j < dim; j++)
            for (int k = 0; k < dim; k++) {
                double d = (x[dim * i + j] - m[j]) * (x[dim * i + k] - m[k]) - C[j][k];
                V[j][k] += d * d / NPTS;
            }
    double scale = 0;
    for (int j = 0; j < dim; j++) scale += cov[j][j] / dim;
    int bad = 0;
    for (int j = 0; j < dim; j++) {
        double se = sqrt(C[j][j] / NPTS);
        if (fabs(m[j] - mean[j]) > 4 * se + sc->allow * sqrt(scale)) bad = 1;
        for (int k = 0; k < dim; k++) {
            double sek = sqrt(V[j][k] / NPTS);
            if (fabs(C[j][k] - cov[j][k]) > 4 * sek + sc->allow * scale) bad = 1;
        }
    }
    if (bad || getenv("DFL_TEST_VERBOSE")) {
        print_message("  %-6s %-10s %dD: mean", dfl_family_name(p->family), sc->what, dim);
        for (int j = 0; j < dim; j++) print_message(" %.4f (%.4f)", m[j], mean[j]);
        print_message(", cov");
        for (int j = 0; j < dim; j++)
            for (int k = 0; k < dim; k++) print_message(" %.4f (%.4f)", C[j][k], cov[j][k]);
        print_message("\n");
    }
    free(x);
    if (!getenv("DFL_TEST_NOFAIL")) assert_false(bad);
}

static void test_stochastic_moments(void **state)
{
    (void)state;
    stoch_case cs[16];
    int nc = n_stoch_cases(cs);
    for (int f = 0; f < N_FAMILY_NAMES; f++) {
        dfl_process p;
        if (!family_of(f, &p)) continue;
        for (int i = 0; i < nc; i++) {
            stoch_check(&p, &cs[i], 1, 100 + 7 * (uint64_t)i + 1000 * (uint64_t)f);
            stoch_check(&p, &cs[i], 2, 200 + 7 * (uint64_t)i + 1000 * (uint64_t)f);
        }
    }
}

/* Deterministic samplers also reproduce the data (the PF-ODE maps marginals to marginals), and
 * ddim with eta = 0 is deterministic. */
static void test_deterministic_moments(void **state)
{
    (void)state;
    stoch_case cs[4] = {
        {"heun", {.sampler = DFL_SAMPLER_HEUN, .schedule = DFL_SCHED_RHO, .steps = 40, .rho = 7}, 0.02, 79},
        {"dpmpp2m", {.sampler = DFL_SAMPLER_DPMPP2M, .schedule = DFL_SCHED_RHO, .steps = 40, .rho = 7}, 0.02, 40},
        {"ddim", {.sampler = DFL_SAMPLER_DDIM, .schedule = DFL_SCHED_RHO, .steps = 400, .rho = 7}, 0.02, 400},
        {"edm", {.sampler = DFL_SAMPLER_EDM, .schedule = DFL_SCHED_RHO, .steps = 40, .rho = 7}, 0.02, 79}};
    dfl_process p;
    dfl_process_default(&p, DFL_FAMILY_FM);
    for (int i = 0; i < 4; i++) stoch_check(&p, &cs[i], 2, 11 + (uint64_t)i);
}

/* ---------------------------------------------------------------- (d) refusals and guards */

static void test_refusals(void **state)
{
    (void)state;
    dfl_process p;
    dfl_process_default(&p, DFL_FAMILY_FM);
    gauss_oracle g = {&p, 0.5, 1, 0, 1.0};
    dfl_rng rng;
    dfl_rng_init(&rng, 1);
    double x = 1.0;
    int nfe = 7;
    dfl_sample_cfg c;
    dfl_sample_cfg_default(&c);
    c.steps = 0;
    assert_int_equal(dfl_sample_run(&p, &c, gauss_den, &g, &rng, &x, 1, 1, &nfe), DFL_ERR_ARG);
    assert_int_equal(nfe, 0);
    assert_non_null(strstr(dfl_last_error(), "steps"));
    dfl_sample_cfg_default(&c);
    c.sampler = DFL_SAMPLER_DDIM;
    c.eta = 1.5;
    assert_int_equal(dfl_sample_run(&p, &c, gauss_den, &g, &rng, &x, 1, 1, &nfe), DFL_ERR_ARG);
    assert_non_null(strstr(dfl_last_error(), "eta"));
    /* Stochastic settings need a random stream. */
    c.eta = 1.0;
    assert_int_equal(dfl_sample_ode(&p, &c, gauss_den, &g, &x, 1, &nfe), DFL_ERR_ARG);
    /* Samplers whose drift has 1/alpha refuse a grid starting where alpha = 0 (FM, t = 1). */
    const dfl_sampler_kind needs_alpha[4] = {DFL_SAMPLER_EDM, DFL_SAMPLER_EM, DFL_SAMPLER_PC, DFL_SAMPLER_ALD};
    for (int i = 0; i < 4; i++) {
        dfl_sample_cfg_default(&c);
        c.sampler = needs_alpha[i];
        c.schedule = DFL_SCHED_UNIFORM;
        assert_int_equal(dfl_sample_run(&p, &c, gauss_den, &g, &rng, &x, 1, 1, &nfe), DFL_ERR_ARG);
        assert_non_null(strstr(dfl_last_error(), "alpha"));
        assert_int_equal(nfe, 0);
    }
    /* ... while the ODE and posterior samplers handle it (e^-h = 0, a_ts = 0). */
    const dfl_sampler_kind ok[5] = {DFL_SAMPLER_EULER, DFL_SAMPLER_HEUN, DFL_SAMPLER_DPMPP2M, DFL_SAMPLER_DDPM,
                                    DFL_SAMPLER_DDIM};
    for (int i = 0; i < 5; i++) {
        dfl_sample_cfg_default(&c);
        c.sampler = ok[i];
        c.schedule = DFL_SCHED_UNIFORM;
        x = 1.0;
        assert_int_equal(dfl_sample_run(&p, &c, gauss_den, &g, &rng, &x, 1, 1, &nfe), DFL_OK);
        assert_true(isfinite(x));
    }
    /* nsamp must divide n; spacings at most T steps; rho > 0. */
    double xs[3] = {0, 0, 0};
    dfl_sample_cfg_default(&c);
    assert_int_equal(dfl_sample_run(&p, &c, gauss_den, &g, &rng, xs, 3, 2, &nfe), DFL_ERR_ARG);
    c.schedule = DFL_SCHED_TRAILING;
    c.steps = 1001;
    assert_int_equal(dfl_sample_run(&p, &c, gauss_den, &g, &rng, &x, 1, 1, &nfe), DFL_ERR_ARG);
    dfl_sample_cfg_default(&c);
    c.rho = 0;
    assert_int_equal(dfl_sample_run(&p, &c, gauss_den, &g, &rng, &x, 1, 1, &nfe), DFL_ERR_ARG);
    /* Parsing. */
    dfl_sampler_kind k;
    dfl_schedule_kind sk;
    const char *names[10] = {"euler", "heun", "rk45", "dpmpp2m", "edm", "ddpm", "ddim", "em", "pc", "ald"};
    for (int i = 0; i < 10; i++) {
        assert_int_equal(dfl_sampler_parse(names[i], &k), DFL_OK);
        assert_string_equal(dfl_sampler_name(k), names[i]);
    }
    const char *snames[6] = {"rho", "uniform", "loguniform", "leading", "trailing", "linspace"};
    for (int i = 0; i < 6; i++) {
        assert_int_equal(dfl_schedule_parse(snames[i], &sk), DFL_OK);
        assert_string_equal(dfl_schedule_name(sk), snames[i]);
    }
    assert_int_equal(dfl_sampler_parse("dpm++", &k), DFL_ERR_ARG);
    assert_int_equal(dfl_schedule_parse("cosine", &sk), DFL_ERR_ARG);
}

static void test_rk45_guards(void **state)
{
    (void)state;
    dfl_process p;
    dfl_process_default(&p, DFL_FAMILY_EDM);
    /* An evaluation budget too small stops with DFL_ERR_NUMERIC naming the time reached. */
    gauss_oracle g = {&p, 0.5, 1, 0, 1.0};
    dfl_sample_cfg c = {.sampler = DFL_SAMPLER_RK45, .schedule = DFL_SCHED_RHO, .steps = 18, .rho = 7,
                        .rtol = 1e-12, .atol = 1e-12, .max_nfe = 60};
    double x = 80.0;
    int nfe;
    assert_int_equal(dfl_sample_ode(&p, &c, gauss_den, &g, &x, 1, &nfe), DFL_ERR_NUMERIC);
    assert_non_null(strstr(dfl_last_error(), "t = "));
    assert_true(nfe <= 60);
    assert_int_equal(nfe, g.calls);
    /* A diverging model (eps_hat blown up) stops with DFL_ERR_NUMERIC, not an endless loop. */
    gauss_oracle bad = {&p, 0.5, 1, 0, 1e30};
    c.rtol = c.atol = 1e-5;
    c.max_nfe = 0;
    x = 80.0;
    assert_int_equal(dfl_sample_ode(&p, &c, gauss_den, &bad, &x, 1, &nfe), DFL_ERR_NUMERIC);
    assert_non_null(strstr(dfl_last_error(), "t = "));
}

/* NFE is counted exactly for every sampler, as documented. */
static void test_nfe_counts(void **state)
{
    (void)state;
    dfl_process p;
    dfl_process_default(&p, DFL_FAMILY_EDM);
    gauss_oracle g = {&p, 0.5, 4, 0, 1.0};
    dfl_rng rng;
    dfl_rng_init(&rng, 3);
    struct {
        dfl_sampler_kind k;
        int M, expect;
    } cs[9] = {{DFL_SAMPLER_EULER, 0, 10},   {DFL_SAMPLER_HEUN, 0, 19}, {DFL_SAMPLER_DPMPP2M, 0, 10},
               {DFL_SAMPLER_EDM, 0, 19},     {DFL_SAMPLER_DDPM, 0, 10}, {DFL_SAMPLER_DDIM, 0, 10},
               {DFL_SAMPLER_EM, 0, 10},      {DFL_SAMPLER_PC, 3, 40},   {DFL_SAMPLER_ALD, 3, 31}};
    for (int i = 0; i < 10; i++) {
        if (i == 9) { /* pc with no predictor: corrector steps at every level plus the final denoise */
            dfl_sample_cfg c;
            dfl_sample_cfg_default(&c);
            c.sampler = DFL_SAMPLER_PC;
            c.predictor = DFL_PREDICTOR_NONE;
            c.steps = 10;
            c.corrector_steps = 3;
            double x[4] = {80, -80, 40, 1};
            int nfe;
            g.calls = 0;
            assert_int_equal(dfl_sample_run(&p, &c, gauss_den, &g, &rng, x, 4, 2, &nfe), DFL_OK);
            assert_int_equal(nfe, 31);
            assert_int_equal(g.calls, nfe);
            continue;
        }
        dfl_sample_cfg c;
        dfl_sample_cfg_default(&c);
        c.sampler = cs[i].k;
        c.steps = 10;
        c.corrector_steps = cs[i].M;
        double x[4] = {80, -80, 40, 1};
        g.calls = 0;
        int nfe;
        assert_int_equal(dfl_sample_run(&p, &c, gauss_den, &g, &rng, x, 4, 2, &nfe), DFL_OK);
        assert_int_equal(nfe, cs[i].expect);
        assert_int_equal(g.calls, nfe);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_spacing_indices),  cmocka_unit_test(test_schedule_vectors),
        cmocka_unit_test(test_dpmpp2m_vector),   cmocka_unit_test(test_ode_orders),
        cmocka_unit_test(test_rk45),             cmocka_unit_test(test_rk45_guards),
        cmocka_unit_test(test_nfe_counts),       cmocka_unit_test(test_refusals),
        cmocka_unit_test(test_deterministic_moments), cmocka_unit_test(test_stochastic_moments),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
