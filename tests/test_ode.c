/* The adaptive Dormand-Prince 5(4) integrator (include/difflow/ode.h) on problems with closed
 * forms: dy/dt = -y and a 2-D rotation, both time directions; the order of the method and the
 * error against the tolerance; the grouped error norm; the NFE guard; a non-finite right-hand side
 * named by the time reached; FSAL's last evaluation at t1. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "dfl_test.h"

#include "difflow/ode.h"

typedef struct {
    long calls;
    double last_t, last_y[4];
    double nan_after; /* decay: dydt = NaN for t > nan_after (when > 0) */
    int fail_after;   /* decay: return DFL_ERR_NUMERIC for t > nan_after instead */
    double rate[4];   /* decay rates per component (0: 1) */
} rec;

static dfl_status decay(void *user, double t, const double *y, double *dydt)
{
    rec *r = user;
    r->calls++;
    r->last_t = t;
    memcpy(r->last_y, y, sizeof r->last_y[0]);
    if (r->nan_after > 0 && t > r->nan_after) {
        if (r->fail_after) return dfl_fail(DFL_ERR_NUMERIC, "test: blown up at t = %.17g", t);
        dydt[0] = NAN;
        return DFL_OK;
    }
    dydt[0] = -(r->rate[0] > 0 ? r->rate[0] : 1.0) * y[0];
    return DFL_OK;
}

static dfl_status decay2(void *user, double t, const double *y, double *dydt)
{
    rec *r = user;
    r->calls++;
    r->last_t = t;
    for (int i = 0; i < 2; i++) dydt[i] = -r->rate[i] * y[i];
    return DFL_OK;
}

/* y1' = -y2, y2' = y1: y(t) = R(t - t0) y(t0). */
static dfl_status rotation(void *user, double t, const double *y, double *dydt)
{
    rec *r = user;
    r->calls++;
    r->last_t = t;
    memcpy(r->last_y, y, 2 * sizeof *y);
    dydt[0] = -y[1];
    dydt[1] = y[0];
    return DFL_OK;
}

static dfl_ode_opts opts(double tol)
{
    dfl_ode_opts o = {.rtol = tol, .atol = tol, .h0 = 0, .grow_max = 0, .max_nfe = 100000, .group = 0,
                      .retry_nonfinite = 0, .who = "test ode"};
    return o;
}

static double t_in_message(void)
{
    const char *at = strstr(dfl_last_error(), "t = ");
    if (!at) {
        print_error("no 't = ' in '%s'\n", dfl_last_error());
        fail();
    }
    return atof(at + 4);
}

static void test_decay(void **state)
{
    (void)state;
    /* forward 0 -> 2 (estimated first step and a given one), then back 2 -> 0 */
    for (int given = 0; given < 2; given++) {
        rec r = {0};
        dfl_ode_opts o = opts(1e-12);
        o.h0 = given ? 0.1 : 0.0;
        double y = 1.0;
        dfl_ode_counts c;
        assert_int_equal(dfl_ode_dopri5(decay, &r, 1, 0.0, 2.0, &y, &o, &c), DFL_OK);
        CHECK_REL(y, exp(-2.0), 1e-10);
        assert_int_equal(c.nfe, r.calls);
        assert_int_equal(c.nfe, 1 + (given ? 0 : 1) + 6 * (c.steps + c.rejected));
        /* FSAL: the last evaluation was f(t1, y(t1)) */
        assert_true(r.last_t == 2.0);
        assert_true(r.last_y[0] == y);
    }
    rec r = {0};
    dfl_ode_opts o = opts(1e-12);
    double y = exp(-2.0);
    assert_int_equal(dfl_ode_dopri5(decay, &r, 1, 2.0, 0.0, &y, &o, NULL), DFL_OK);
    CHECK_REL(y, 1.0, 1e-10);
    assert_true(r.last_t == 0.0);
    /* t1 == t0: nothing to do, no evaluation */
    r.calls = 0;
    y = 3.0;
    assert_int_equal(dfl_ode_dopri5(decay, &r, 1, 1.0, 1.0, &y, &o, NULL), DFL_OK);
    assert_true(y == 3.0 && r.calls == 0);
}

static void test_rotation(void **state)
{
    (void)state;
    for (int dir = 0; dir < 2; dir++) {
        double t0 = dir ? 3.0 : -1.0, t1 = dir ? -1.0 : 3.0, a = t1 - t0;
        double y0[2] = {0.6, -0.8}, y[2] = {0.6, -0.8};
        rec r = {0};
        dfl_ode_opts o = opts(1e-11);
        dfl_ode_counts c;
        assert_int_equal(dfl_ode_dopri5(rotation, &r, 2, t0, t1, y, &o, &c), DFL_OK);
        CHECK_CLOSE(y[0], cos(a) * y0[0] - sin(a) * y0[1], 1e-9);
        CHECK_CLOSE(y[1], sin(a) * y0[0] + cos(a) * y0[1], 1e-9);
        CHECK_CLOSE(hypot(y[0], y[1]), 1.0, 1e-9);
        assert_true(c.steps > 10 && c.nfe < 5000);
        print_message("  rotation %s: %ld steps, %ld rejected, NFE %ld\n", dir ? "backward" : "forward", c.steps,
                      c.rejected, c.nfe);
    }
}

/* Order: one step of size h (tolerance so loose it is accepted) has a local error O(h^6), so
 * halving h divides it by about 64. Tolerance: the global error follows the tolerance (within a
 * modest factor) and the step count grows about as tol^(-1/5). */
static void test_order(void **state)
{
    (void)state;
    double e[2];
    for (int i = 0; i < 2; i++) {
        double h = i ? 0.1 : 0.2, y = 1.0;
        rec r = {0};
        dfl_ode_opts o = opts(1e6);
        o.h0 = h;
        dfl_ode_counts c;
        assert_int_equal(dfl_ode_dopri5(decay, &r, 1, 0.0, h, &y, &o, &c), DFL_OK);
        assert_int_equal(c.steps, 1);
        e[i] = fabs(y - exp(-h));
    }
    print_message("  one step: error %.3g at h 0.2, %.3g at h 0.1, ratio %.1f (h^6: 64)\n", e[0], e[1], e[0] / e[1]);
    assert_true(e[0] / e[1] > 45 && e[0] / e[1] < 80);

    double prev_err = INFINITY;
    long steps[4];
    const double tols[4] = {1e-5, 1e-7, 1e-9, 1e-11};
    for (int i = 0; i < 4; i++) {
        double y[2] = {1.0, 0.0};
        rec r = {0};
        dfl_ode_opts o = opts(tols[i]);
        dfl_ode_counts c;
        assert_int_equal(dfl_ode_dopri5(rotation, &r, 2, 0.0, 10.0, y, &o, &c), DFL_OK);
        double err = hypot(y[0] - cos(10.0), y[1] - sin(10.0));
        print_message("  rotation tol %.0e: error %.3g, %ld steps\n", tols[i], err, c.steps);
        assert_true(err < 50 * tols[i]);
        assert_true(err < prev_err);
        prev_err = err;
        steps[i] = c.steps;
    }
    /* tol down 1e6 -> steps up about 1e6^(1/5) = 15.8 */
    double ratio = (double)steps[3] / (double)steps[0];
    assert_true(ratio > 8 && ratio < 30);
}

/* The grouped norm takes the worst group: per-component groups never take fewer steps than one
 * RMS group, and the fast component is then held to its own tolerance. */
static void test_group_norm(void **state)
{
    (void)state;
    long steps[2];
    for (int g = 0; g < 2; g++) {
        rec r = {.rate = {1.0, 30.0}};
        double y[2] = {1.0, 1.0};
        dfl_ode_opts o = opts(1e-8);
        o.group = g ? 1 : 0;
        dfl_ode_counts c;
        assert_int_equal(dfl_ode_dopri5(decay2, &r, 2, 0.0, 0.5, y, &o, &c), DFL_OK);
        CHECK_REL(y[0], exp(-0.5), 1e-7);
        CHECK_CLOSE(y[1], exp(-15.0), 1e-7);
        steps[g] = c.steps;
    }
    assert_true(steps[1] >= steps[0]);
    rec r = {.rate = {1, 1}};
    double y[3] = {1, 1, 1};
    dfl_ode_opts o = opts(1e-6);
    o.group = 2;
    assert_int_equal(dfl_ode_dopri5(decay2, &r, 3, 0.0, 1.0, y, &o, NULL), DFL_ERR_ARG);
    o = opts(0.0);
    assert_int_equal(dfl_ode_dopri5(decay2, &r, 2, 0.0, 1.0, y, &o, NULL), DFL_ERR_ARG);
}

static void test_nfe_guard(void **state)
{
    (void)state;
    for (int est = 0; est < 2; est++) {
        rec r = {0};
        dfl_ode_opts o = opts(1e-13);
        o.max_nfe = 20;
        o.h0 = est ? 0.0 : 0.5;
        double y[2] = {1.0, 0.0};
        dfl_ode_counts c;
        assert_int_equal(dfl_ode_dopri5(rotation, &r, 2, 0.0, 10.0, y, &o, &c), DFL_ERR_NUMERIC);
        assert_non_null(strstr(dfl_last_error(), "max NFE"));
        double t = t_in_message();
        assert_true(t >= 0.0 && t < 10.0);
        assert_true(c.nfe <= 20);
        assert_int_equal(c.nfe, r.calls);
        /* no step is started that the budget cannot finish */
        assert_true(c.nfe + 6 > 20);
    }
}

static void test_nonfinite(void **state)
{
    (void)state;
    /* NaN slope beyond t = 0.5: fails, naming a time just before it */
    for (int dir = 0; dir < 2; dir++) {
        rec r = {.nan_after = 0.5};
        dfl_ode_opts o = opts(1e-8);
        double y = 1.0;
        dfl_ode_counts c;
        if (!dir) {
            assert_int_equal(dfl_ode_dopri5(decay, &r, 1, 0.0, 2.0, &y, &o, &c), DFL_ERR_NUMERIC);
        } else { /* backward from 2: NaN at once, at the start */
            assert_int_equal(dfl_ode_dopri5(decay, &r, 1, 2.0, 0.0, &y, &o, &c), DFL_ERR_NUMERIC);
        }
        double t = t_in_message();
        print_message("  NaN slope (%s): '%s'\n", dir ? "backward" : "forward", dfl_last_error());
        if (!dir)
            assert_true(t > 0.2 && t <= 0.5);
        else
            assert_true(t == 2.0);
        assert_int_equal(c.nfe, r.calls);
    }
    /* With retries, a failing right-hand side is approached by shrinking steps; its own error
     * (naming its time) comes back once the step would collapse. */
    rec r = {.nan_after = 0.5, .fail_after = 1};
    dfl_ode_opts o = opts(1e-8);
    o.retry_nonfinite = 1;
    double y = 1.0;
    dfl_ode_counts c;
    assert_int_equal(dfl_ode_dopri5(decay, &r, 1, 0.0, 2.0, &y, &o, &c), DFL_ERR_NUMERIC);
    assert_non_null(strstr(dfl_last_error(), "test: blown up"));
    double t = t_in_message();
    print_message("  failing f with retries: '%s' after %ld evaluations\n", dfl_last_error(), c.nfe);
    assert_true(t > 0.5 && t < 0.5 + 1e-6);
    assert_true(c.rejected > 0);
    CHECK_REL(y, exp(-0.5), 1e-5); /* y stays the last accepted state, just before t = 0.5 */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_decay),      cmocka_unit_test(test_rotation),  cmocka_unit_test(test_order),
        cmocka_unit_test(test_group_norm), cmocka_unit_test(test_nfe_guard), cmocka_unit_test(test_nonfinite),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
