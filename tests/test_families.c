/* Families (VP, sub-VP, VE, DDPM beside FM and EDM), parameterizations, losses and minibatch OT
 * (shared/reference/diffusion.md 1.2-1.5, 3.1, 3.4). */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "dfl_test.h"

#include "difflow/gen.h"
#include "difflow/io.h"


/* A representative set of times inside each family's range (DDPM: off the knots). */
static int family_times(dfl_family f, double *t)
{
    if (f == DFL_FAMILY_EDM) {
        const double v[] = {0.003, 0.05, 0.7, 3.0, 40.0, 79.0};
        memcpy(t, v, sizeof v);
        return 6;
    }
    if (f == DFL_FAMILY_DDPM) {
        const double v[] = {0.37, 1.37, 12.37, 250.37, 700.37, 998.37};
        for (int i = 0; i < 6; i++) t[i] = (v[i] + 1.0) / DFL_DDPM_T;
        return 6;
    }
    const double v[] = {1e-3, 0.01, 0.1, 0.35, 0.62, 0.97};
    memcpy(t, v, sizeof v);
    return 6;
}

/* diffusion.md 3.4: VP ratio and DDPM linear table, to 1e-4 relative. */
static void test_reference_values(void **state)
{
    (void)state;
    dfl_process p;
    dfl_process_default(&p, DFL_FAMILY_VP);
    CHECK_REL(dfl_ratio(&p, 1.0), 152.167, 1e-4);
    CHECK_REL(dfl_ratio(&p, 1e-3), 0.010486, 1e-4);
    CHECK_REL(dfl_ratio(&p, 1e-5), 1.0005e-3, 1e-4);
    /* VP SDE marginal (beta 0.1..20): mean factor at t = 1 is 6.57e-3, std at 1e-3 is 1.0485e-2. */
    CHECK_REL(dfl_alpha(&p, 1.0), 6.57e-3, 1e-3);
    CHECK_REL(dfl_sigma(&p, 1e-3), 1.0485e-2, 1e-4);
    CHECK_REL(p.sigma_max, 152.167, 1e-4);
    CHECK_REL(p.sigma_min, 0.010486, 1e-4);
    dfl_process_default(&p, DFL_FAMILY_DDPM);
    CHECK_REL(dfl_ddpm_alphabar(&p, 0), 0.9999, 1e-4);
    CHECK_REL(dfl_ddpm_alphabar(&p, 999), 4.036e-5, 1e-4);
    CHECK_REL(p.sigma_min, 0.010001, 1e-4);
    CHECK_REL(p.sigma_max, 157.4073, 1e-4);
    assert_true(dfl_ddpm_alphabar(&p, -1) == 1.0);
    assert_true(isnan(dfl_ddpm_alphabar(&p, 1000)));
    /* The embedding hits every alphabar_j at t_j = (j + 1)/T, and t = 0 is the data. */
    for (int j = 0; j < DFL_DDPM_T; j++) {
        double t = (j + 1.0) / DFL_DDPM_T, a = dfl_alpha(&p, t);
        CHECK_REL(a * a, dfl_ddpm_alphabar(&p, j), 1e-12);
        CHECK_REL(dfl_ratio(&p, t), sqrt((1 - a * a) / (a * a)), 1e-9);
    }
    CHECK_CLOSE(dfl_alpha(&p, 0.0), 1.0, 1e-15);
    CHECK_CLOSE(dfl_sigma(&p, 0.0), 0.0, 1e-15);
    /* Cosine table recomputed here from its definition (Nichol and Dhariwal 2021 Eq. 17). */
    dfl_process_set_ddpm(&p, DFL_DDPM_COSINE);
    double ab = 1;
    for (int j = 0; j < DFL_DDPM_T; j++) {
        double f0 = cos(((double)j / 1000 + 0.008) / 1.008 * 1.5707963267948966);
        double f1 = cos(((double)(j + 1) / 1000 + 0.008) / 1.008 * 1.5707963267948966);
        double beta = fmin(1 - f1 * f1 / (f0 * f0), 0.999);
        ab *= 1 - beta;
        CHECK_REL(dfl_ddpm_alphabar(&p, j), ab, 1e-9);
    }
    CHECK_REL(p.sigma_min, sqrt((1 - dfl_ddpm_alphabar(&p, 0)) / dfl_ddpm_alphabar(&p, 0)), 1e-9);
    /* Sub-VP and VE (score_sde constants). */
    dfl_process_default(&p, DFL_FAMILY_SUBVP);
    double B = 0.1 * 0.3 + 19.9 * 0.09 / 2;
    CHECK_REL(dfl_sigma(&p, 0.3), 1 - exp(-B), 1e-12);
    CHECK_REL(dfl_alpha(&p, 0.3), exp(-B / 2), 1e-12);
    dfl_process_default(&p, DFL_FAMILY_VE);
    CHECK_REL(dfl_sigma(&p, 0.0), 0.01, 1e-12);
    CHECK_REL(dfl_sigma(&p, 1.0), 50.0, 1e-12);
    CHECK_REL(dfl_sigma(&p, 0.5), 0.01 * sqrt(5000.0), 1e-12);
    CHECK_REL(p.sigma_min, 0.01 * pow(5000.0, 1e-3), 1e-12); /* sampling stops at t = 1e-3 */
    CHECK_REL(p.sigma_max, 50.0, 1e-12);
    /* FM and EDM keep their constants. */
    dfl_process_default(&p, DFL_FAMILY_EDM);
    assert_true(p.sigma_min == 0.002 && p.sigma_max == 80.0 && p.pred == DFL_PRED_EDM);
    dfl_process_default(&p, DFL_FAMILY_FM);
    assert_true(p.sigma_min == 0.002 && p.sigma_max == 80.0 && p.pred == DFL_PRED_VELOCITY);
    assert_true(dfl_t_min(&p) == 0.0);
    dfl_process_default(&p, DFL_FAMILY_VP);
    assert_true(dfl_t_min(&p) == 1e-5 && p.pred == DFL_PRED_EPS);
}

/* alpha', sigma' against central differences, for every family. */
static void test_derivatives(void **state)
{
    (void)state;
    for (int f = 0; f < DFL_FAMILY_COUNT; f++) {
        dfl_process p;
        dfl_process_default(&p, (dfl_family)f);
        double ts[8];
        int n = family_times((dfl_family)f, ts);
        for (int i = 0; i < n; i++) {
            double t = ts[i], h = 1e-6 * (f == DFL_FAMILY_EDM ? t : fmin(t, 1e-3));
            double fa = (dfl_alpha(&p, t + h) - dfl_alpha(&p, t - h)) / (2 * h);
            double fs = (dfl_sigma(&p, t + h) - dfl_sigma(&p, t - h)) / (2 * h);
            double da = dfl_dalpha(&p, t), ds = dfl_dsigma(&p, t);
            CHECK_CLOSE(da, fa, 1e-5 * (1 + fabs(fa)));
            CHECK_CLOSE(ds, fs, 1e-5 * (1 + fabs(fs)));
            /* The ratio agrees with sigma/alpha. */
            CHECK_REL(dfl_ratio(&p, t), dfl_sigma(&p, t) / dfl_alpha(&p, t), 1e-10);
        }
    }
}

/* t(s(t)) = t for every family, and schedules stay inside each family's range. */
static void test_ratio_inverse_and_clamp(void **state)
{
    (void)state;
    for (int f = 0; f < DFL_FAMILY_COUNT; f++) {
        dfl_process p;
        dfl_process_default(&p, (dfl_family)f);
        double ts[8];
        int n = family_times((dfl_family)f, ts);
        for (int i = 0; i < n; i++) CHECK_CLOSE(dfl_t_of_ratio(&p, dfl_ratio(&p, ts[i])), ts[i], 1e-9 * (1 + ts[i]));
        if (f == DFL_FAMILY_DDPM) /* exactly on the knots too */
            for (int j = 0; j < DFL_DDPM_T; j += 37) {
                double t = (j + 1.0) / DFL_DDPM_T;
                CHECK_CLOSE(dfl_t_of_ratio(&p, dfl_ratio(&p, t)), t, 1e-9);
            }
        /* Default rho schedule: starts at the family's t_max (ratio sigma_max) and decreases. */
        double t[19];
        assert_int_equal(dfl_schedule(&p, DFL_SCHED_RHO, 18, 7.0, 0, t), DFL_OK);
        if (f != DFL_FAMILY_FM) CHECK_CLOSE(t[0], dfl_t_max(&p), 1e-9 * dfl_t_max(&p));
        for (int i = 0; i < 18; i++) assert_true(t[i] > t[i + 1] && t[i] <= dfl_t_max(&p));
        if (f >= DFL_FAMILY_VP) {
            /* A ratio beyond the family's range is clamped into [0, t_max]. */
            assert_true(dfl_t_of_ratio(&p, 1e4) == 1.0);
            assert_true(dfl_t_of_ratio(&p, 1e-6) >= 0.0 && dfl_t_of_ratio(&p, 1e-6) < 1e-3);
            assert_true(dfl_t_of_ratio(&p, 0.0) == 0.0);
        }
    }
}

/* For every (family, pred): with Gaussian data N(0, sd^2) and the network output F that
 * reproduces the exact x0_hat, eps_hat is the exact one (diffusion.md 3.1), F equals the natural
 * target of the parameterization, and x = alpha x0_hat + sigma eps_hat for any F. */
static void test_parameterizations_exact(void **state)
{
    (void)state;
    const double sd = 0.7;
    int checked = 0;
    for (int f = 0; f < DFL_FAMILY_COUNT; f++)
        for (int k = 0; k < DFL_PRED_COUNT; k++) {
            dfl_model m;
            memset(&m, 0, sizeof m);
            dfl_process_default(&m.proc, (dfl_family)f);
            m.proc.pred = (dfl_pred)k;
            int ok = dfl_pred_check(&m.proc, (dfl_pred)k) == DFL_OK;
            int want_ok = !(k == DFL_PRED_V && f != DFL_FAMILY_VP && f != DFL_FAMILY_DDPM) &&
                          !(k == DFL_PRED_EDM && f == DFL_FAMILY_FM);
            assert_int_equal(ok, want_ok);
            dfl_pred_coeffs c;
            if (!ok) {
                assert_int_equal(dfl_model_coeffs(&m, 0.5, &c), DFL_ERR_ARG);
                continue;
            }
            double ts[8];
            int n = family_times((dfl_family)f, ts);
            for (int i = 0; i < n; i++) {
                double t = ts[i];
                assert_int_equal(dfl_model_coeffs(&m, t, &c), DFL_OK);
                double al = dfl_alpha(&m.proc, t), sg = dfl_sigma(&m.proc, t);
                double da = dfl_dalpha(&m.proc, t), ds = dfl_dsigma(&m.proc, t);
                double v = al * al * sd * sd + sg * sg;
                /* Consistency for any F: alpha a + sigma c = 1, alpha b + sigma d = 0. */
                CHECK_CLOSE(al * c.a + sg * c.c, 1.0, 1e-9);
                CHECK_CLOSE(al * c.b + sg * c.d, 0.0, 1e-9 * (1 + fabs(c.b) + fabs(c.d)));
                for (int r = -2; r <= 2; r++) {
                    double x = r * sqrt(v) + 0.1;
                    double x0 = al * sd * sd / v * x, eps = sg / v * x;
                    double F = (x0 - c.a * x) / c.b;
                    double eh = c.c * x + c.d * F;
                    CHECK_CLOSE(eh, eps, 1e-8 * (1 + fabs(eps)));
                    double target;
                    switch ((dfl_pred)k) {
                    case DFL_PRED_EPS: target = eps; break;
                    case DFL_PRED_X0: target = x0; break;
                    case DFL_PRED_V: target = al * eps - sg * x0; break;
                    case DFL_PRED_VELOCITY: target = da * x0 + ds * eps; break;
                    default: {
                        double s = sg / al, cs = m.proc.sigma_data * m.proc.sigma_data / (s * s + 0.25);
                        double co = s * m.proc.sigma_data / sqrt(s * s + 0.25);
                        target = (x0 - cs * x / al) / co;
                    }
                    }
                    CHECK_CLOSE(F, target, 1e-8 * (1 + fabs(target)));
                }
                /* c_noise: ln(s)/4 for EDM/edm, t otherwise; bounded. */
                double cn = (f == DFL_FAMILY_EDM || k == DFL_PRED_EDM) ? 0.25 * log(sg / al) : t;
                CHECK_CLOSE(c.c_noise, cn, 1e-6 * (1 + fabs(cn)));
            }
            checked++;
        }
    assert_int_equal(checked, 6 * 5 - 4 - 1);
}

/* The losses recomputed by hand from the same random stream, one family per weighting, as
 * lambda(t) |eps_hat - eps|^2 with eps_hat from the wrapper (dfl_denoise). */
typedef struct {
    dfl_family f;
    dfl_pred k;
} pair_t;

static void test_losses_by_hand(void **state)
{
    (void)state;
    dfl_arch_cfg ac;
    dfl_arch_preset("toy-mlp", &ac);
    dfl_rng r;
    dfl_rng_init(&r, 21);
    dfl_model m;
    memset(&m, 0, sizeof m);
    m.net = dfl_net_new(&ac, &r);
    dfl_ctx *ctx = dfl_ctx_new();
    enum { N = 6 };
    float y[2 * N];
    dfl_rng_fill_normal(&r, y, 2 * N);
    int shape[2] = {N, 2};
    const pair_t pairs[] = {{DFL_FAMILY_VP, DFL_PRED_EPS},    {DFL_FAMILY_DDPM, DFL_PRED_EPS},
                            {DFL_FAMILY_VE, DFL_PRED_X0},     {DFL_FAMILY_DDPM, DFL_PRED_V},
                            {DFL_FAMILY_SUBVP, DFL_PRED_VELOCITY}, {DFL_FAMILY_VP, DFL_PRED_EDM},
                            {DFL_FAMILY_EDM, DFL_PRED_EPS},   {DFL_FAMILY_FM, DFL_PRED_X0}};
    for (size_t q = 0; q < sizeof pairs / sizeof pairs[0]; q++) {
        dfl_process_default(&m.proc, pairs[q].f);
        m.proc.pred = pairs[q].k;
        const dfl_process *p = &m.proc;
        dfl_rng a, b;
        dfl_rng_init(&a, 77 + q);
        dfl_rng_init(&b, 77 + q);
        dfl_ctx_reset(ctx);
        dfl_tensor *L = dfl_model_loss(ctx, &m, y, 2, shape, &a);
        assert_non_null(L);
        double got = L->data[0], want = 0;
        for (int n = 0; n < N; n++) {
            double t;
            if (pairs[q].f == DFL_FAMILY_DDPM) t = (dfl_rng_below(&b, 1000) + 1) / 1000.0; /* j ~ U{0..999} */
            else if (pairs[q].f == DFL_FAMILY_EDM) t = exp(-1.2 + 1.2 * dfl_rng_normal(&b));
            else if (pairs[q].f == DFL_FAMILY_FM) t = dfl_rng_uniform_d(&b);
            else t = 1e-5 + (1 - 1e-5) * dfl_rng_uniform_d(&b); /* t ~ U(eps_t, 1) */
            double al = dfl_alpha(p, t), sg = dfl_sigma(p, t);
            double da = dfl_dalpha(p, t), ds = dfl_dsigma(p, t), s = sg / al;
            double lam; /* weight on |eps_hat - eps|^2 (gen.h, dfl_model_loss) */
            switch (pairs[q].k) {
            case DFL_PRED_EPS: lam = 1; break;
            case DFL_PRED_X0: lam = s * s; break;
            case DFL_PRED_V: lam = 1 / (al * al); break;
            case DFL_PRED_VELOCITY: lam = pow((al * ds - sg * da) / al, 2); break;
            default: lam = s * s * (s * s + 0.25) / (s * s * 0.25); break; /* s^2/c_out^2 */
            }
            double e[2];
            float xt[2];
            for (int i = 0; i < 2; i++) {
                e[i] = dfl_rng_normal(&b);
                xt[i] = (float)(al * y[2 * n + i] + sg * e[i]);
            }
            float eh[2];
            int s1[2] = {1, 2};
            assert_int_equal(dfl_denoise(ctx, &m, xt, 2, s1, t, NULL, eh), DFL_OK);
            for (int i = 0; i < 2; i++) want += lam * (eh[i] - e[i]) * (eh[i] - e[i]);
        }
        want /= 2 * N;
        if (!(fabs(got - want) <= 3e-3 * want))
            print_error("pair %s/%s: loss %g, by hand %g\n", dfl_family_name(pairs[q].f), dfl_pred_name(pairs[q].k), got, want);
        CHECK_CLOSE(got, want, 3e-3 * want);
    }
    /* Refused pairs and OT with a non-FM method fail cleanly. */
    dfl_process_default(&m.proc, DFL_FAMILY_VE);
    m.proc.pred = DFL_PRED_V;
    assert_null(dfl_model_loss(ctx, &m, y, 2, shape, &r));
    dfl_process_default(&m.proc, DFL_FAMILY_VP);
    m.proc.fm_ot = 1;
    assert_null(dfl_model_loss(ctx, &m, y, 2, shape, &r));
    dfl_ctx_free(ctx);
    dfl_net_free(m.net);
}

/* Minibatch OT: the assignment against brute force over all permutations. */
static double brute(const double *C, int n, int *best_perm)
{
    int perm[8], c[8];
    for (int i = 0; i < n; i++) perm[i] = i, c[i] = 0;
    double best = INFINITY;
    /* Heap's algorithm over all n! permutations. */
    for (int i = 0;;) {
        double s = 0;
        for (int k = 0; k < n; k++) s += C[k * n + perm[k]];
        if (s < best) {
            best = s;
            memcpy(best_perm, perm, (size_t)n * sizeof *perm);
        }
        while (i < n && c[i] >= i) c[i++] = 0;
        if (i >= n) break;
        int j = (i % 2) ? c[i] : 0, tmp = perm[j];
        perm[j] = perm[i];
        perm[i] = tmp;
        c[i]++;
        i = 0;
    }
    return best;
}

static void test_ot_assign(void **state)
{
    (void)state;
    dfl_rng r;
    dfl_rng_init(&r, 5);
    for (int n = 1; n <= 7; n++)
        for (int rep = 0; rep < 20; rep++) {
            double C[49];
            for (int i = 0; i < n * n; i++) C[i] = rep % 3 == 0 ? (double)dfl_rng_below(&r, 4) : 10 * dfl_rng_uniform_d(&r) - 3;
            int perm[8], bp[8], seen[8] = {0};
            double cost;
            assert_int_equal(dfl_ot_assign(C, n, perm, &cost), DFL_OK);
            double want = brute(C, n, bp), s = 0;
            for (int i = 0; i < n; i++) {
                assert_true(perm[i] >= 0 && perm[i] < n && !seen[perm[i]]);
                seen[perm[i]] = 1;
                s += C[i * n + perm[i]];
            }
            CHECK_CLOSE(s, want, 1e-9 * (1 + fabs(want)));
            CHECK_CLOSE(cost, want, 1e-9 * (1 + fabs(want)));
        }
    /* A larger problem: the optimum is no worse than the identity or any random permutation. */
    enum { M = 300 };
    double *C = malloc(sizeof(double) * M * M);
    int *perm = malloc(sizeof(int) * M);
    for (int i = 0; i < M * M; i++) C[i] = dfl_rng_uniform_d(&r);
    double cost, id = 0;
    assert_int_equal(dfl_ot_assign(C, M, perm, &cost), DFL_OK);
    for (int i = 0; i < M; i++) id += C[i * M + i];
    assert_true(cost <= id);
    /* Expected optimum for U(0,1) costs tends to zeta(2) = 1.645 (Aldous 2001). */
    assert_true(cost < 2.5);
    C[3] = NAN;
    assert_int_equal(dfl_ot_assign(C, M, perm, NULL), DFL_ERR_ARG);
    assert_int_equal(dfl_ot_assign(C, 0, perm, NULL), DFL_ERR_ARG);
    free(C);
    free(perm);
}

/* FM with OT pairing, recomputed by hand: noise drawn first, paired by brute force. */
static void test_fm_ot_loss(void **state)
{
    (void)state;
    dfl_arch_cfg ac;
    dfl_arch_preset("toy-mlp", &ac);
    dfl_rng r;
    dfl_rng_init(&r, 31);
    dfl_model m;
    memset(&m, 0, sizeof m);
    m.net = dfl_net_new(&ac, &r);
    dfl_process_default(&m.proc, DFL_FAMILY_FM);
    m.proc.fm_ot = 1;
    dfl_ctx *ctx = dfl_ctx_new();
    enum { N = 6 };
    float y[2 * N], E[2 * N];
    dfl_rng_fill_normal(&r, y, 2 * N);
    int shape[2] = {N, 2};
    dfl_rng a, b;
    dfl_rng_init(&a, 8);
    dfl_rng_init(&b, 8);
    dfl_tensor *L = dfl_model_loss(ctx, &m, y, 2, shape, &a);
    assert_non_null(L);
    double got = L->data[0];
    dfl_rng_fill_normal(&b, E, 2 * N);
    double C[N * N];
    for (int i = 0; i < N; i++)
        for (int j = 0; j < N; j++)
            C[i * N + j] = pow((double)y[2 * i] - E[2 * j], 2) + pow((double)y[2 * i + 1] - E[2 * j + 1], 2);
    int bp[8];
    brute(C, N, bp);
    double want = 0;
    for (int n = 0; n < N; n++) {
        double t = dfl_rng_uniform_d(&b);
        float xt[2], x0h[2];
        for (int i = 0; i < 2; i++) xt[i] = (float)((1 - t) * y[2 * n + i] + t * E[2 * bp[n] + i]);
        int s1[2] = {1, 2};
        assert_int_equal(dfl_denoise(ctx, &m, xt, 2, s1, t, x0h, NULL), DFL_OK);
        for (int i = 0; i < 2; i++) {
            double u = (xt[i] - x0h[i]) / t, tg = E[2 * bp[n] + i] - y[2 * n + i];
            want += (u - tg) * (u - tg);
        }
    }
    want /= 2 * N;
    CHECK_CLOSE(got, want, 2e-3 * want);
    dfl_ctx_free(ctx);
    dfl_net_free(m.net);
}

/* Checkpoints keep family, pred and constants; a config without "pred" keeps the default. */
static void test_checkpoint_process(void **state)
{
    (void)state;
    char dir[] = "/tmp/dfl_fam_XXXXXX";
    assert_non_null(mkdtemp(dir));
    char p1[256], p2[256];
    snprintf(p1, sizeof p1, "%s/a.safetensors", dir);
    snprintf(p2, sizeof p2, "%s/b.safetensors", dir);
    dfl_arch_cfg ac;
    dfl_arch_preset("toy-mlp", &ac);
    dfl_rng r;
    dfl_rng_init(&r, 3);
    dfl_model m, m2;
    memset(&m, 0, sizeof m);
    m.net = dfl_net_new(&ac, &r);
    dfl_process_default(&m.proc, DFL_FAMILY_DDPM);
    dfl_process_set_ddpm(&m.proc, DFL_DDPM_COSINE);
    m.proc.pred = DFL_PRED_V;
    dfl_model_info info = {"toy-mlp", "8gaussians", 10, 1};
    assert_int_equal(dfl_model_save(p1, &m, &info), DFL_OK);
    dfl_model_info i2;
    assert_int_equal(dfl_model_load(p1, &m2, &i2), DFL_OK);
    assert_int_equal((int)m2.proc.family, (int)DFL_FAMILY_DDPM);
    assert_int_equal((int)m2.proc.pred, (int)DFL_PRED_V);
    assert_int_equal((int)m2.proc.ddpm_schedule, (int)DFL_DDPM_COSINE);
    assert_true(dfl_ddpm_alphabar(&m2.proc, 500) == dfl_ddpm_alphabar(&m.proc, 500));
    CHECK_REL(m2.proc.sigma_max, m.proc.sigma_max, 1e-12);
    dfl_net_free(m2.net);
    /* An older config: no pred, no process constants. */
    dfl_params *ps = dfl_net_params(m.net);
    dfl_named_tensor *ts = calloc((size_t)ps->n, sizeof *ts);
    for (int i = 0; i < ps->n; i++) ts[i].name = ps->p[i].name, ts[i].t = ps->p[i].t;
    const char *meta[] = {"config", "{\"format_version\":1,\"arch\":\"toy-mlp\",\"method\":\"vp\"}"};
    assert_int_equal(dfl_safetensors_save(p2, ts, ps->n, meta, 1), DFL_OK);
    assert_int_equal(dfl_model_load(p2, &m2, &i2), DFL_OK);
    assert_int_equal((int)m2.proc.pred, (int)DFL_PRED_EPS);
    assert_true(m2.proc.beta_d == 19.9 && m2.proc.eps_t == 1e-5);
    dfl_net_free(m2.net);
    /* A pred the family refuses is a format error. */
    const char *bad[] = {"config", "{\"format_version\":1,\"arch\":\"toy-mlp\",\"method\":\"ve\",\"pred\":\"v\"}"};
    assert_int_equal(dfl_safetensors_save(p2, ts, ps->n, bad, 1), DFL_OK);
    assert_int_equal(dfl_model_load(p2, &m2, &i2), DFL_ERR_FORMAT);
    free(ts);
    dfl_net_free(m.net);
    remove(p1);
    remove(p2);
    rmdir(dir);
}

static void test_names(void **state)
{
    (void)state;
    for (int f = 0; f < DFL_FAMILY_COUNT; f++) {
        dfl_family g;
        assert_int_equal(dfl_family_parse(dfl_family_name((dfl_family)f), &g), DFL_OK);
        assert_int_equal((int)g, f);
    }
    for (int k = 0; k < DFL_PRED_COUNT; k++) {
        dfl_pred g;
        assert_int_equal(dfl_pred_parse(dfl_pred_name((dfl_pred)k), &g), DFL_OK);
        assert_int_equal((int)g, k);
    }
    dfl_family g;
    assert_int_equal(dfl_family_parse("vpsde", &g), DFL_ERR_ARG);
    dfl_ddpm_schedule s;
    assert_int_equal(dfl_ddpm_schedule_parse("squaredcos_cap_v2", &s), DFL_OK);
    assert_int_equal((int)s, (int)DFL_DDPM_COSINE);
    assert_int_equal((int)DFL_FAMILY_FM, 0);
    assert_int_equal((int)DFL_FAMILY_EDM, 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_reference_values),
        cmocka_unit_test(test_derivatives),
        cmocka_unit_test(test_ratio_inverse_and_clamp),
        cmocka_unit_test(test_parameterizations_exact),
        cmocka_unit_test(test_losses_by_hand),
        cmocka_unit_test(test_ot_assign),
        cmocka_unit_test(test_fm_ot_loss),
        cmocka_unit_test(test_checkpoint_process),
        cmocka_unit_test(test_names),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
