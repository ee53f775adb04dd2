/* Samplers and schedules against closed-form oracles (shared/reference/diffusion.md 3.1, 3.4). */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include "dfl_test.h"

#include "difflow/gen.h"


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
    assert_int_equal(dfl_schedule(&p, DFL_SCHED_RHO, 18, 7.0, 0, t), DFL_OK);
    for (int i = 0; i < 19; i++) CHECK_CLOSE(t[i], ref[i], 1e-4 * ref[i] + 1e-12);
    /* Flow matching: the same ratios through t = s/(1+s) (diffusion.md 2.7). */
    dfl_process_default(&p, DFL_FAMILY_FM);
    assert_int_equal(dfl_schedule(&p, DFL_SCHED_RHO, 18, 7.0, 0, t), DFL_OK);
    CHECK_CLOSE(t[0], 80.0 / 81.0, 1e-12);
    for (int i = 0; i < 18; i++) CHECK_CLOSE(t[i] / (1 - t[i]), ref[i], 1e-4 * ref[i]);
    assert_true(t[18] == 0.0);
    /* Uniform grid and refusals. */
    assert_int_equal(dfl_schedule(&p, DFL_SCHED_UNIFORM, 4, 7.0, 0, t), DFL_OK);
    CHECK_CLOSE(t[0], 1.0, 0);
    CHECK_CLOSE(t[1], 0.75, 1e-15);
    CHECK_CLOSE(t[4], 0.0, 0);
    assert_int_equal(dfl_schedule(&p, DFL_SCHED_UNIFORM, 0, 7.0, 0, t), DFL_ERR_ARG);
    assert_int_equal(dfl_schedule(&p, DFL_SCHED_RHO, 4, 0.0, 0, t), DFL_ERR_ARG);
}

static double edm_signed_error(dfl_sampler_kind k, int N, int *nfe)
{
    dfl_process p;
    dfl_process_default(&p, DFL_FAMILY_EDM);
    gauss_oracle g = {&p, 0.5, 1, 0};
    dfl_sample_cfg c = {.sampler = k, .schedule = DFL_SCHED_RHO, .steps = N, .rho = 7.0};
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
    dfl_sample_cfg c = {.sampler = k, .schedule = DFL_SCHED_UNIFORM, .steps = N, .rho = 7.0};
    double x = 1.3;
    int nfe;
    assert_int_equal(dfl_sample_ode(&p, &c, gauss_den, &g, &x, 1, &nfe), DFL_OK);
    return fabs(x - 1.3 * 0.5);
}

static void test_fm_order(void **state)
{
    (void)state;
    /* Global error ratio per doubling of N: 2 for Euler (order 1), 4 for Heun (order 2; its
     * final Euler step to t = 0 has an O(h^2) local error, so the global order stays 2). */
    double e1 = fm_error(DFL_SAMPLER_EULER, 32), e2 = fm_error(DFL_SAMPLER_EULER, 64), e3 = fm_error(DFL_SAMPLER_EULER, 128);
    CHECK_CLOSE(e1 / e2, 2.0, 0.15);
    CHECK_CLOSE(e2 / e3, 2.0, 0.1);
    double h1 = fm_error(DFL_SAMPLER_HEUN, 32), h2 = fm_error(DFL_SAMPLER_HEUN, 64);
    double h3 = fm_error(DFL_SAMPLER_HEUN, 128);
    assert_true(h1 < e1 && h2 < e2);
    CHECK_CLOSE(h1 / h2, 4.0, 0.3);
    CHECK_CLOSE(h2 / h3, 4.0, 0.3);
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

/* The wrapper: x = alpha x0_hat + sigma eps_hat for every family, and EDM's x0_hat equals
 * c_skip x + c_out F(c_in x; ln(sigma)/4) computed here from EDM Table 1 independently. */
static void test_denoiser_wrapper(void **state)
{
    (void)state;
    dfl_arch_cfg ac;
    dfl_arch_preset("toy-mlp", &ac);
    dfl_rng r;
    dfl_rng_init(&r, 11);
    dfl_model m;
    m.net = dfl_net_new(&ac, &r);
    dfl_ctx *ctx = dfl_ctx_new();
    enum { N = 6 };
    float x[2 * N], x0[2 * N], eps[2 * N];
    dfl_rng_fill_normal(&r, x, 2 * N);
    int shape[2] = {N, 2};
    for (int f = 0; f < 2; f++) {
        dfl_process_default(&m.proc, (dfl_family)f);
        const double ts[3] = {0.02, 0.5, f ? 30.0 : 0.97};
        for (int k = 0; k < 3; k++) {
            double t = ts[k], a = dfl_alpha(&m.proc, t), s = dfl_sigma(&m.proc, t);
            assert_int_equal(dfl_denoise(ctx, &m, x, 2, shape, t, x0, eps), DFL_OK);
            for (int i = 0; i < 2 * N; i++) CHECK_CLOSE(a * x0[i] + s * eps[i], x[i], 2e-5 * (1 + fabs(x[i])));
            /* The raw network output at the same input, by hand. */
            double sd = m.proc.sigma_data, cin = f ? 1 / sqrt(s * s + sd * sd) : 1.0;
            float xin[2 * N], tv[N];
            for (int i = 0; i < 2 * N; i++) xin[i] = (float)(cin * x[i]);
            for (int i = 0; i < N; i++) tv[i] = f ? (float)(0.25 * log(s)) : (float)t;
            dfl_ctx_reset(ctx);
            int ts1[1] = {N};
            dfl_tensor *F = dfl_net_forward(ctx, m.net, dfl_tensor_wrap(ctx, xin, 2, shape), dfl_tensor_wrap(ctx, tv, 1, ts1));
            assert_non_null(F);
            for (int i = 0; i < 2 * N; i++) {
                double want = f ? sd * sd / (s * s + sd * sd) * x[i] + s * sd / sqrt(s * s + sd * sd) * F->data[i]
                                : x[i] - t * F->data[i]; /* FM: u = eps - x0 => x0 = x - t u */
                CHECK_CLOSE(x0[i], want, 1e-4 * (1 + fabs(want)));
            }
        }
    }
    dfl_ctx_free(ctx);
    dfl_net_free(m.net);
}

/* The training losses, recomputed by hand from the same random stream: FM's velocity target
 * eps - x0 at x_t = (1 - t) x0 + t eps, and EDM's lambda(sigma) |D(x; sigma) - x0|^2 with
 * lambda = 1/c_out^2 and ln sigma ~ N(-1.2, 1.2^2). */
static void test_losses_by_hand(void **state)
{
    (void)state;
    dfl_arch_cfg ac;
    dfl_arch_preset("toy-mlp", &ac);
    dfl_rng r;
    dfl_rng_init(&r, 12);
    dfl_model m;
    m.net = dfl_net_new(&ac, &r);
    dfl_ctx *ctx = dfl_ctx_new();
    enum { N = 5 };
    float y[2 * N];
    dfl_rng_fill_normal(&r, y, 2 * N);
    int shape[2] = {N, 2};
    for (int f = 0; f < 2; f++) {
        dfl_process_default(&m.proc, (dfl_family)f);
        dfl_rng a, b;
        dfl_rng_init(&a, 99);
        dfl_rng_init(&b, 99);
        dfl_ctx_reset(ctx);
        dfl_tensor *L = dfl_model_loss(ctx, &m, y, 2, shape, &a);
        assert_non_null(L);
        double want = 0;
        for (int n = 0; n < N; n++) {
            if (f == 0) {
                double t = dfl_rng_uniform_d(&b);
                float e[2] = {dfl_rng_normal(&b), dfl_rng_normal(&b)};
                float xt[2];
                for (int i = 0; i < 2; i++) xt[i] = (float)((1 - t) * y[2 * n + i] + t * e[i]);
                float x0h[2];
                int s1[2] = {1, 2};
                assert_int_equal(dfl_denoise(ctx, &m, xt, 2, s1, t, x0h, NULL), DFL_OK);
                for (int i = 0; i < 2; i++) {
                    double u = (xt[i] - x0h[i]) / t; /* network velocity recovered from x0_hat */
                    want += (u - (e[i] - y[2 * n + i])) * (u - (e[i] - y[2 * n + i]));
                }
            } else {
                double sg = exp(-1.2 + 1.2 * dfl_rng_normal(&b)), sd = 0.5;
                float xn[2];
                for (int i = 0; i < 2; i++) xn[i] = (float)(y[2 * n + i] + sg * dfl_rng_normal(&b));
                float D[2];
                int s1[2] = {1, 2};
                assert_int_equal(dfl_denoise(ctx, &m, xn, 2, s1, sg, D, NULL), DFL_OK);
                double lam = (sg * sg + sd * sd) / (sg * sd * sg * sd);
                for (int i = 0; i < 2; i++) want += lam * (D[i] - y[2 * n + i]) * (D[i] - y[2 * n + i]);
            }
        }
        want /= 2 * N;
        CHECK_CLOSE(L->data[0], want, 2e-3 * want);
    }
    dfl_ctx_free(ctx);
    dfl_net_free(m.net);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_edm_rho_schedule),
        cmocka_unit_test(test_edm_solver_vector),
        cmocka_unit_test(test_fm_order),
        cmocka_unit_test(test_process_identities),
        cmocka_unit_test(test_denoiser_wrapper),
        cmocka_unit_test(test_losses_by_hand),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
