/* The continuous normalizing flow (`difflow train --method cnf`: flow matching with velocity
 * prediction, DESIGN section 5 "CNF") as a bijection through its probability-flow ODE
 * (reference/flows.md 2.4; FFJORD Eq. 2-3):
 *   forward  x = x(0) -> z = x(1) with delta_f = int_0^1 div v(x(t), t) dt, the likelihood solve of
 *            `difflow eval` (dfl_pfode_solve on dfl_model_vjp), so log p(x) = log N(z) + delta_f;
 *   inverse  z -> x by the same solver on the time-reversed field w(y, s) = -v(y, 1 - s), whose
 *            divergence integral is delta_i = -delta_f.
 * And the PF-ODE log-det against ln|det dz/dx| of the forward solve by finite differences.
 * Checked at a toy-mlp FM model with perturbed (non-trivial) weights, at tight tolerances
 * (rtol = atol = 1e-10): inverse(forward(x)) == x and forward(inverse(z)) == z to 1e-6, delta_i =
 * -delta_f to 1e-6, with the exact divergence and with a fixed Hutchinson probe; and the map is
 * far from the identity (it moves points by O(1) and changes volume).
 */
#include "dfl_test.h"

#include "difflow/core.h"
#include "difflow/gen.h"
#include "difflow/likelihood.h"
#include "difflow/nn.h"

/* w(y, s) = -v(y, 1 - s): the PF-ODE run backwards in time over [0, 1]. */
typedef struct {
    dfl_model_field *mf;
} reversed;

static dfl_status reversed_vjp(void *user, const double *x, int n, int dim, double t, int k, const double *u,
                               double *v, double *uj)
{
    reversed *r = user;
    dfl_status st = dfl_model_vjp(r->mf, x, n, dim, 1.0 - t, k, u, v, uj);
    if (st) return st;
    for (size_t i = 0; i < (size_t)n * dim; i++) v[i] = -v[i];
    for (size_t i = 0; uj && i < (size_t)k * n * dim; i++) uj[i] = -uj[i];
    return DFL_OK;
}

static double max_abs_diff(const double *a, const double *b, size_t n)
{
    double m = 0;
    for (size_t i = 0; i < n; i++) m = fmax(m, fabs(a[i] - b[i]));
    return m;
}

/* A toy-mlp FM model (what cnf trains) with weights perturbed away from their initial values,
 * drawn from r seeded with `seed` (r keeps the stream for the test's points). */
static void make_model(dfl_model *m, dfl_rng *r, uint64_t seed)
{
    dfl_rng_init(r, seed);
    dfl_arch_cfg ac;
    assert_int_equal(dfl_arch_preset("toy-mlp", &ac), DFL_OK);
    dfl_process_default(&m->proc, DFL_FAMILY_FM);
    assert_int_equal(m->proc.pred, DFL_PRED_VELOCITY); /* what cnf trains */
    m->net = dfl_net_new(&ac, r);
    assert_non_null(m->net);
    dfl_params *ps = dfl_net_params(m->net);
    for (int i = 0; i < ps->n; i++) { /* away from the initial weights (1/sqrt(fan_in) for matrices) */
        dfl_tensor *t = ps->p[i].t;
        double s = t->ndim >= 2 && t->shape[0] > 1 ? 1.0 / sqrt((double)(t->n / (size_t)t->shape[0])) : 0.2;
        for (size_t q = 0; q < t->n; q++) t->data[q] += (float)(s * dfl_rng_normal(r));
    }
}

static void check_roundtrip(dfl_div_mode mode)
{
    dfl_rng r;
    dfl_model m;
    make_model(&m, &r, 17);
    dfl_ctx *ctx = dfl_ctx_new();
    dfl_model_field mf = {ctx, &m, 2, {0, 2, 1, 1}, 0};
    reversed rv = {&mf};
    enum { N = 6, D = 2 };
    double x[N * D], z[N * D], xr[N * D], zr[N * D], df[N], di[N], probe[N * D];
    for (int i = 0; i < N * D; i++) x[i] = 1.5 * dfl_rng_normal(&r);
    if (mode == DFL_DIV_HUTCHINSON) dfl_rademacher(&r, probe, N * D);
    dfl_loglik_opts o;
    dfl_loglik_opts_default(&o);
    dfl_loglik_t_range(&m.proc, &o.t_min, &o.t_max);
    CHECK_CLOSE(o.t_min, 0.0, 0.0);
    CHECK_CLOSE(o.t_max, 1.0, 0.0);
    o.rtol = o.atol = 1e-10;
    o.max_nfe = 200000;
    const double *pr = mode == DFL_DIV_HUTCHINSON ? probe : NULL;
    dfl_ode_stats st = {0};
    /* forward: x -> z */
    memcpy(z, x, sizeof z);
    assert_int_equal(dfl_pfode_solve(dfl_model_vjp, &mf, N, D, &o, mode, pr, z, df, &st), DFL_OK);
    /* inverse: z -> x */
    memcpy(xr, z, sizeof xr);
    assert_int_equal(dfl_pfode_solve(reversed_vjp, &rv, N, D, &o, mode, pr, xr, di, &st), DFL_OK);
    double moved = max_abs_diff(x, z, N * D), vol = 0;
    for (int i = 0; i < N; i++) vol = fmax(vol, fabs(df[i]));
    double e_x = max_abs_diff(x, xr, N * D), e_d = 0;
    for (int i = 0; i < N; i++) e_d = fmax(e_d, fabs(df[i] + di[i]));
    print_message("cnf (%s divergence): |x - z| up to %.3f, |delta| up to %.3f nats; |f^-1(f(x)) - x| = %.2g, "
                  "|delta_f + delta_i| = %.2g (%ld NFE)\n",
                  mode == DFL_DIV_EXACT ? "exact" : "Hutchinson", moved, vol, e_x, e_d, st.nfe);
    assert_true(moved > 0.3); /* a non-trivial map: it moves points and changes volume */
    assert_true(vol > 0.05);
    assert_true(e_x <= 1e-6);
    assert_true(e_d <= 1e-6);
    /* the other direction: z -> x -> z from a latent draw */
    for (int i = 0; i < N * D; i++) z[i] = dfl_rng_normal(&r);
    memcpy(xr, z, sizeof xr);
    assert_int_equal(dfl_pfode_solve(reversed_vjp, &rv, N, D, &o, mode, pr, xr, di, NULL), DFL_OK);
    memcpy(zr, xr, sizeof zr);
    assert_int_equal(dfl_pfode_solve(dfl_model_vjp, &mf, N, D, &o, mode, pr, zr, df, NULL), DFL_OK);
    assert_true(max_abs_diff(z, zr, N * D) <= 1e-6);
    for (int i = 0; i < N; i++) CHECK_CLOSE(df[i], -di[i], 1e-6);
    /* log p(x) of the eval path = log N(z) + delta_f at the same tolerances (exact divergence) */
    if (mode == DFL_DIV_EXACT) {
        double lp[N], zT[N * D];
        assert_int_equal(dfl_pfode_loglik(&m.proc, dfl_model_vjp, &mf, N, D, xr, &o, NULL, lp, zT, NULL), DFL_OK);
        for (int i = 0; i < N; i++) {
            double want = -0.5 * (D * log(2 * 3.14159265358979323846) + zr[2 * i] * zr[2 * i] + zr[2 * i + 1] * zr[2 * i + 1]) + df[i];
            CHECK_CLOSE(lp[i], want, 1e-6);
        }
    }
    dfl_ctx_free(ctx);
    dfl_net_free(m.net);
}

static void test_cnf_roundtrip_exact(void **state)
{
    (void)state;
    check_roundtrip(DFL_DIV_EXACT);
}

static void test_cnf_roundtrip_hutchinson(void **state)
{
    (void)state;
    check_roundtrip(DFL_DIV_HUTCHINSON);
}

/* The PF-ODE log-det is the log-det of the map it integrates: delta_f(x) = int_0^1 div v dt must
 * equal ln|det dz/dx| of the forward solve x -> z (Liouville; FFJORD Eq. 2-3), here with dz/dx
 * from central differences of the solve itself, Richardson-extrapolated, J = (4 J(h/2) - J(h)) / 3
 * with h = 2e-2 (truncation O(h^4)), all 8 perturbations x +- h e_j, x +- h/2 e_j of every point
 * in one solve (a shared step sequence, so the discretisation is a smooth function of x) at
 * rtol = atol = 1e-11. The float32 network's rounding in z divided by h bounds what a difference
 * quotient can resolve: plain central differences at rtol 1e-11 reached 4e-6 (h = 1e-3), 1e-6
 * (3e-3), 7e-6 (1e-2) nats; this one 3.3e-7 (at rtol 1e-10: 3.4e-6, the solver's error). The
 * test asks 2e-6 nats of a log-det of up to 0.28 (a 1% error in delta_f would be 3e-3). */
static void test_cnf_logdet_finite_differences(void **state)
{
    (void)state;
    dfl_rng r;
    dfl_model m;
    make_model(&m, &r, 23);
    dfl_ctx *ctx = dfl_ctx_new();
    dfl_model_field mf = {ctx, &m, 2, {0, 2, 1, 1}, 0};
    enum { N = 5, D = 2, K = 1 + 4 * D }; /* per point: x, then x +- s e_j for s = h, h/2, j = 0, 1 */
    const double h = 2e-2;
    double x0[N * D], y[N * K * D], delta[N * K];
    for (int i = 0; i < N * D; i++) x0[i] = 1.5 * dfl_rng_normal(&r);
    for (int i = 0; i < N; i++)
        for (int k = 0; k < K; k++) {
            double *p = y + ((size_t)i * K + k) * D;
            memcpy(p, x0 + i * D, D * sizeof *p);
            if (k > 0) { /* k - 1 = 4 j + 2 half + minus */
                int j = (k - 1) / 4, half = ((k - 1) / 2) % 2, minus = (k - 1) % 2;
                p[j] += (minus ? -1 : 1) * (half ? h / 2 : h);
            }
        }
    dfl_loglik_opts o;
    dfl_loglik_opts_default(&o);
    dfl_loglik_t_range(&m.proc, &o.t_min, &o.t_max);
    o.rtol = o.atol = 1e-11;
    o.max_nfe = 400000;
    dfl_ode_stats st = {0};
    assert_int_equal(dfl_pfode_solve(dfl_model_vjp, &mf, N * K, D, &o, DFL_DIV_EXACT, NULL, y, delta, &st), DFL_OK);
    double worst = 0, vol = 0;
    for (int i = 0; i < N; i++) {
        double J[D][D]; /* J[a][j] = dz_a / dx_j */
        for (int j = 0; j < D; j++) {
            const double *z = y + ((size_t)i * K + 1 + 4 * j) * D; /* +h, -h, +h/2, -h/2 */
            for (int a = 0; a < D; a++) {
                double full = (z[a] - z[D + a]) / (2 * h), half = (z[2 * D + a] - z[3 * D + a]) / h;
                J[a][j] = (4 * half - full) / 3;
            }
        }
        double ld = log(fabs(J[0][0] * J[1][1] - J[0][1] * J[1][0]));
        double df = delta[(size_t)i * K];
        worst = fmax(worst, fabs(ld - df));
        vol = fmax(vol, fabs(df));
    }
    print_message("cnf: |delta_f - ln|det dz/dx|| up to %.2g nats (|delta_f| up to %.3f; %ld NFE)\n", worst, vol, st.nfe);
    assert_true(vol > 0.05); /* the map changes volume: a zero log-det would not be checked */
    assert_true(worst <= 2e-6);
    dfl_ctx_free(ctx);
    dfl_net_free(m.net);
}

int main(void)
{
    dfl_set_threads(1);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cnf_roundtrip_exact),
        cmocka_unit_test(test_cnf_roundtrip_hutchinson),
        cmocka_unit_test(test_cnf_logdet_finite_differences),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
