/* Samplers and schedules against closed-form oracles (shared/reference/diffusion.md 3.1, 3.4). */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <cmocka.h>

#include "difflow/gen.h"

#define CHECK_CLOSE(a, b, tol)                                                                        \
    do {                                                                                              \
        double a_ = (a), b_ = (b);                                                                    \
        if (!(fabs(a_ - b_) <= (tol))) {                                                              \
            print_error("%s:%d: %s = %.9g, expected %.9g (tol %g)\n", __FILE__, __LINE__, #a, a_, b_, \
                        (double)(tol));                                                               \
            fail();                                                                                   \
        }                                                                                             \
    } while (0)

/* Gaussian data N(0, sd^2): x0_hat = alpha sd^2 / v x, eps_hat = sigma / v x, v = alpha^2 sd^2 + sigma^2. */
typedef struct {
    const dfl_process *p;
    double sd;
    size_t n;
    int calls;
} gauss_oracle;

static dfl_status gauss_den(void *user, const float *x, double t, float *x0, float *eps)
{
    gauss_oracle *g = user;
    double a = dfl_alpha(g->p, t), s = dfl_sigma(g->p, t), v = a * a * g->sd * g->sd + s * s;
    for (size_t i = 0; i < g->n; i++) {
        x0[i] = (float)(a * g->sd * g->sd / v * x[i]);
        eps[i] = (float)(s / v * x[i]);
    }
    g->calls++;
    return DFL_OK;
}

static void test_edm_rho_schedule(void **state)
{
    (void)state;
    /* diffusion.md 3.4: EDM rho = 7, N = 18, sigma 0.002..80. */
    const double ref[19] = {80, 57.586, 40.7856, 28.3746, 19.3525, 12.9101, 8.40094, 5.31519, 3.25682, 1.92334,
                            1.08817, 0.585348, 0.296442, 0.139516, 0.0599473, 0.0229345, 0.00752802, 0.002, 0};
    dfl_process p;
    dfl_process_default(&p, DFL_FAMILY_EDM);
    double t[19];
    assert_int_equal(dfl_schedule(&p, DFL_SCHED_RHO, 18, 7.0, t), DFL_OK);
    for (int i = 0; i < 19; i++) CHECK_CLOSE(t[i], ref[i], 1e-4 * ref[i] + 1e-12);
    /* Flow matching: the same ratios through t = s/(1+s) (diffusion.md 2.7). */
    dfl_process_default(&p, DFL_FAMILY_FM);
    assert_int_equal(dfl_schedule(&p, DFL_SCHED_RHO, 18, 7.0, t), DFL_OK);
    CHECK_CLOSE(t[0], 80.0 / 81.0, 1e-12);
    for (int i = 0; i < 18; i++) CHECK_CLOSE(t[i] / (1 - t[i]), ref[i], 1e-4 * ref[i]);
    assert_true(t[18] == 0.0);
    /* Uniform grid and refusals. */
    assert_int_equal(dfl_schedule(&p, DFL_SCHED_UNIFORM, 4, 7.0, t), DFL_OK);
    CHECK_CLOSE(t[0], 1.0, 0);
    CHECK_CLOSE(t[1], 0.75, 1e-15);
    CHECK_CLOSE(t[4], 0.0, 0);
    assert_int_equal(dfl_schedule(&p, DFL_SCHED_UNIFORM, 0, 7.0, t), DFL_ERR_ARG);
    assert_int_equal(dfl_schedule(&p, DFL_SCHED_RHO, 4, 0.0, t), DFL_ERR_ARG);
}

static double edm_signed_error(dfl_sampler_kind k, int N, int *nfe)
{
    dfl_process p;
    dfl_process_default(&p, DFL_FAMILY_EDM);
    gauss_oracle g = {&p, 0.5, 1, 0};
    dfl_sample_cfg c = {k, DFL_SCHED_RHO, N, 7.0};
    double x = sqrt(80.0 * 80.0 + 0.25);
    assert_int_equal(dfl_sample_ode(&p, &c, gauss_den, &g, &x, 1, nfe), DFL_OK);
    assert_int_equal(*nfe, g.calls);
    return x - 0.5;
}

static void test_edm_solver_vector(void **state)
{
    (void)state;
    /* diffusion.md 3.1 solver-order vector: signed error x_N - 0.5. The oracle is evaluated in
     * float32 (as the network is), so the tolerance is relative 2e-3 plus 2e-5. */
    const int Ns[5] = {4, 8, 16, 32, 64};
    const double euler[5] = {-0.2365, -0.1672, -0.08628, -0.0438, -0.02206};
    const double heun[5] = {1.682, 0.197, 0.03609, 0.007848, 0.001831};
    for (int i = 0; i < 5; i++) {
        int nfe;
        double e = edm_signed_error(DFL_SAMPLER_EULER, Ns[i], &nfe);
        CHECK_CLOSE(e, euler[i], 2e-3 * fabs(euler[i]) + 2e-5);
        assert_int_equal(nfe, Ns[i]);
        e = edm_signed_error(DFL_SAMPLER_HEUN, Ns[i], &nfe);
        CHECK_CLOSE(e, heun[i], 2e-3 * fabs(heun[i]) + 2e-5);
        assert_int_equal(nfe, 2 * Ns[i] - 1); /* EDM: 18 steps -> 35 NFE */
    }
}

/* Flow matching on Gaussian data: the exact flow maps x(1) to x(1) * sd (diffusion.md 3.2). */
static double fm_error(dfl_sampler_kind k, int N)
{
    dfl_process p;
    dfl_process_default(&p, DFL_FAMILY_FM);
    gauss_oracle g = {&p, 0.5, 1, 0};
    dfl_sample_cfg c = {k, DFL_SCHED_UNIFORM, N, 7.0};
    double x = 1.3;
    int nfe;
    assert_int_equal(dfl_sample_ode(&p, &c, gauss_den, &g, &x, 1, &nfe), DFL_OK);
    return fabs(x - 1.3 * 0.5);
}

static void test_fm_order(void **state)
{
    (void)state;
    /* Global error ratio per doubling of N: about 2 for Euler (order 1). Heun's last step is an
     * Euler step to t = 0 (EDM Alg. 1), so on the straight path it keeps order 2 only in the
     * interior; its error must still fall at least as fast as Euler's and be far smaller. */
    double e1 = fm_error(DFL_SAMPLER_EULER, 32), e2 = fm_error(DFL_SAMPLER_EULER, 64), e3 = fm_error(DFL_SAMPLER_EULER, 128);
    CHECK_CLOSE(e1 / e2, 2.0, 0.15);
    CHECK_CLOSE(e2 / e3, 2.0, 0.1);
    double h1 = fm_error(DFL_SAMPLER_HEUN, 32), h2 = fm_error(DFL_SAMPLER_HEUN, 64);
    assert_true(h1 < e1 && h2 < e2);
    assert_true(h1 / h2 > 1.9);
}

static void test_process_identities(void **state)
{
    (void)state;
    for (int f = 0; f < 2; f++) {
        dfl_process p;
        dfl_process_default(&p, (dfl_family)f);
        for (double t = 0.05; t < 0.96; t += 0.1) {
            double h = 1e-6;
            CHECK_CLOSE(dfl_dalpha(&p, t), (dfl_alpha(&p, t + h) - dfl_alpha(&p, t - h)) / (2 * h), 1e-6);
            CHECK_CLOSE(dfl_dsigma(&p, t), (dfl_sigma(&p, t + h) - dfl_sigma(&p, t - h)) / (2 * h), 1e-6);
            CHECK_CLOSE(dfl_t_of_ratio(&p, dfl_ratio(&p, t)), t, 1e-12);
        }
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_edm_rho_schedule),
        cmocka_unit_test(test_edm_solver_vector),
        cmocka_unit_test(test_fm_order),
        cmocka_unit_test(test_process_identities),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
