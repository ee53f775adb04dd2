/* Adaptive Dormand-Prince 5(4) (include/difflow/ode.h): Dormand and Prince 1980; step control
 * and starting step after Hairer, Norsett and Wanner, "Solving ODEs I", II.4. */
#include "difflow/ode.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Butcher tableau of Dormand and Prince (1980), "A family of embedded Runge-Kutta formulae",
 * J. Comput. Appl. Math. 6, Table 2 (RK5(4)7M): nodes c, stage weights a, fifth-order weights b
 * (= row 7 of a, FSAL) and the difference e = b - b_hat to the embedded fourth-order solution. */
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

/* max over groups of the RMS of e / (atol + rtol max(|y0|, |y1|)); y1 may be NULL (|y0| only).
 * A NaN in any group propagates as the result. */
static double err_norm(const double *e, const double *y0, const double *y1, size_t n, size_t group, double rtol,
                       double atol)
{
    double worst = 0.0;
    for (size_t g0 = 0; g0 < n; g0 += group) {
        double s = 0.0;
        for (size_t q = g0; q < g0 + group; q++) {
            double sc = atol + rtol * fmax(fabs(y0[q]), y1 ? fabs(y1[q]) : 0.0);
            double r = e[q] / sc;
            s += r * r;
        }
        s = sqrt(s / (double)group);
        if (!(s <= worst)) worst = s; /* NaN propagates as worst */
    }
    return worst;
}

static int all_finite(const double *y, size_t n)
{
    for (size_t q = 0; q < n; q++)
        if (!isfinite(y[q])) return 0;
    return 1;
}

dfl_status dfl_ode_dopri5(dfl_ode_fn f, void *user, size_t n, double t0, double t1, double *y,
                          const dfl_ode_opts *o, dfl_ode_counts *counts)
{
    dfl_ode_counts c = {0, 0, 0};
    if (counts) *counts = c;
    const char *who = o && o->who ? o->who : "ode";
    if (!f || !o || !y || n == 0) return dfl_fail(DFL_ERR_ARG, "%s: bad arguments (n %zu)", who, n);
    size_t group = o->group ? o->group : n;
    if (n % group != 0) return dfl_fail(DFL_ERR_ARG, "%s: error-norm group %zu does not divide %zu", who, group, n);
    if (!(o->rtol > 0) || !(o->atol > 0) || isinf(o->rtol) || isinf(o->atol))
        return dfl_fail(DFL_ERR_ARG, "%s: rtol and atol must be finite and > 0 (got %g, %g)", who, o->rtol, o->atol);
    if (o->max_nfe < 1) return dfl_fail(DFL_ERR_ARG, "%s: max NFE must be >= 1 (got %ld)", who, o->max_nfe);
    if (!isfinite(t0) || !isfinite(t1))
        return dfl_fail(DFL_ERR_ARG, "%s: non-finite time range [%g, %g]", who, t0, t1);
    if (t1 == t0) return DFL_OK;
    double rtol = o->rtol, atol = o->atol, grow = o->grow_max > 0 ? o->grow_max : 10.0;
    double dir = t1 > t0 ? 1.0 : -1.0, span = fabs(t1 - t0);
    long max_nfe = o->max_nfe;

    double *mem = malloc(10 * n * sizeof *mem);
    if (!mem) return dfl_fail(DFL_ERR_NOMEM, "%s: out of memory (%zu doubles)", who, 10 * n);
    double *k[7], *ys = mem + 7 * n, *y1 = mem + 8 * n, *err = mem + 9 * n;
    for (int s = 0; s < 7; s++) k[s] = mem + (size_t)s * n;

    dfl_status st;
    double t = t0, h;
#define EVAL(tt, yy, kk) (c.nfe++, f(user, (tt), (yy), (kk)))
    if ((st = EVAL(t, y, k[0]))) goto out;
    if (o->h0 > 0) {
        h = fmin(o->h0, span);
    } else {
        /* Starting step (HNW II.4): h0 from |y|/|f|, then a finite-difference estimate of the
         * second derivative; norms scaled by atol + rtol |y|. */
        if (c.nfe + 1 > max_nfe) {
            st = dfl_fail(DFL_ERR_NUMERIC, "%s: more than %ld evaluations needed (max NFE) at t = %.6g; loosen "
                          "rtol/atol or raise the limit", who, max_nfe, t);
            goto out;
        }
        double d0 = err_norm(y, y, NULL, n, group, rtol, atol);
        double d1 = err_norm(k[0], y, NULL, n, group, rtol, atol);
        double a0 = (d0 < 1e-5 || d1 < 1e-5) ? 1e-6 * span : 0.01 * d0 / d1;
        if (!(a0 <= span)) a0 = span;
        for (size_t q = 0; q < n; q++) ys[q] = y[q] + dir * a0 * k[0][q];
        if (!all_finite(ys, n)) {
            st = dfl_fail(DFL_ERR_NUMERIC, "%s: the state diverged (non-finite) at t = %.6g", who, t);
            goto out;
        }
        if ((st = EVAL(t + dir * a0, ys, k[1]))) goto out;
        for (size_t q = 0; q < n; q++) err[q] = (k[1][q] - k[0][q]) / a0;
        double d2 = err_norm(err, y, NULL, n, group, rtol, atol);
        double dm = fmax(d1, d2);
        double a1 = dm <= 1e-15 ? fmax(1e-6 * span, a0 * 1e-3) : pow(0.01 / dm, 0.2);
        h = fmin(100.0 * a0, a1);
        if (!(h <= span)) h = span;
    }
    h *= dir;

    for (;;) {
        double hmin = 1e-12 * fmax(fabs(t), span);
        if (!(fabs(h) >= hmin)) {
            st = dfl_fail(DFL_ERR_NUMERIC, "%s: step size collapsed (h = %.3g) at t = %.6g (target %g)", who, h, t, t1);
            goto out;
        }
        double rem = t1 - t;
        int last = fabs(h) >= fabs(rem) - 1e-12 * span;
        if (last) h = rem;
        if (c.nfe + 6 > max_nfe) {
            st = dfl_fail(DFL_ERR_NUMERIC, "%s: more than %ld evaluations needed (max NFE); stopped at t = %.6g "
                          "(target %g, step %.3g); loosen rtol/atol or raise the limit", who, max_nfe, t, t1, h);
            goto out;
        }
        int retry = 0;
        for (int s = 1; s < 7 && !retry; s++) {
            double *dst = s < 6 ? ys : y1;
            for (size_t q = 0; q < n; q++) {
                double acc = 0.0;
                for (int r = 0; r < s; r++) acc += DP_A[s][r] * k[r][q];
                dst[q] = y[q] + h * acc;
            }
            if (!all_finite(dst, n)) {
                st = dfl_fail(DFL_ERR_NUMERIC, "%s: the state diverged (non-finite) at t = %.6g", who, t);
            } else if (!(st = EVAL(t + DP_C[s] * h, dst, k[s]))) {
                continue;
            }
            /* a non-finite stage may be the step's fault: shrink and retry where allowed */
            if (o->retry_nonfinite && st == DFL_ERR_NUMERIC && fabs(h) * 0.25 >= hmin && c.nfe + 6 <= max_nfe)
                retry = 1;
            else
                goto out;
        }
        if (retry) {
            h *= 0.25;
            c.rejected++;
            continue;
        }
        for (size_t q = 0; q < n; q++) {
            double e = 0.0;
            for (int s = 0; s < 7; s++) e += DP_E[s] * k[s][q];
            err[q] = h * e;
        }
        double en = err_norm(err, y, y1, n, group, rtol, atol);
        if (!isfinite(en)) {
            if (o->retry_nonfinite) {
                h *= 0.25;
                c.rejected++;
                continue;
            }
            st = dfl_fail(DFL_ERR_NUMERIC, "%s: non-finite error estimate at t = %.6g", who, t);
            goto out;
        }
        if (en <= 1.0) {
            t = last ? t1 : t + h;
            memcpy(y, y1, n * sizeof *y);
            double *tmp = k[0]; /* FSAL: the last stage is f(t + h, y1) */
            k[0] = k[6];
            k[6] = tmp;
            c.steps++;
            if (last) break;
            double fac = en == 0.0 ? grow : 0.9 * pow(en, -0.2);
            h *= fmin(grow, fmax(0.2, fac));
        } else {
            c.rejected++;
            h *= fmax(0.2, 0.9 * pow(en, -0.2));
        }
    }
#undef EVAL
    st = DFL_OK;
out:
    if (counts) *counts = c;
    free(mem);
    return st;
}
