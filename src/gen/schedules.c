/* Time discretizations (shared/reference/diffusion.md 2.1, 1.6, 3.4). */
#include "difflow/gen.h"

#include <math.h>
#include <string.h>

static const char *const SCHED_NAMES[] = {"rho", "uniform", "loguniform", "leading", "trailing", "linspace"};
#define N_SCHED ((int)(sizeof SCHED_NAMES / sizeof SCHED_NAMES[0]))

dfl_status dfl_schedule_parse(const char *name, dfl_schedule_kind *k)
{
    for (int i = 0; i < N_SCHED; i++)
        if (strcmp(name, SCHED_NAMES[i]) == 0) {
            *k = (dfl_schedule_kind)i;
            return DFL_OK;
        }
    return dfl_fail(DFL_ERR_ARG, "unknown schedule '%s' (known: rho, uniform, loguniform, leading, trailing, linspace)",
                    name);
}

const char *dfl_schedule_name(dfl_schedule_kind k)
{
    return (int)k >= 0 && (int)k < N_SCHED ? SCHED_NAMES[k] : "?";
}

static int is_spacing(dfl_schedule_kind k)
{
    return k == DFL_SCHED_LEADING || k == DFL_SCHED_TRAILING || k == DFL_SCHED_LINSPACE;
}

dfl_status dfl_timestep_indices(dfl_schedule_kind k, int T, int N, int offset, int *j)
{
    if (!is_spacing(k))
        return dfl_fail(DFL_ERR_ARG, "timestep indices: '%s' is not a DDPM spacing (leading, trailing, linspace)",
                        dfl_schedule_name(k));
    if (T < 1 || N < 1 || N > T)
        return dfl_fail(DFL_ERR_ARG, "schedule %s: steps must be in 1..%d (got %d)", dfl_schedule_name(k), T, N);
    if (offset != 0 && k != DFL_SCHED_LEADING)
        return dfl_fail(DFL_ERR_ARG, "steps offset %d: only the leading spacing takes an offset, not %s", offset,
                        dfl_schedule_name(k));
    if (offset < 0 || (k == DFL_SCHED_LEADING && (T / N) * (N - 1) + offset > T - 1))
        return dfl_fail(DFL_ERR_ARG,
                        "steps offset %d: leading spacing with %d steps would start at index %d, outside 0..%d",
                        offset, N, (T / N) * (N - 1) + offset, T - 1);
    if (k == DFL_SCHED_LINSPACE) {
        /* numpy.linspace(0, T-1, N) = k * step with step = (T-1)/(N-1), rounded half to even. */
        double step = N > 1 ? (double)(T - 1) / (N - 1) : 0.0;
        for (int i = 0; i < N; i++) j[i] = (int)nearbyint((N - 1 - i) * step);
        if (N > 1) j[0] = T - 1; /* numpy sets the endpoint exactly */
    } else if (k == DFL_SCHED_LEADING) {
        int r = T / N;
        for (int i = 0; i < N; i++) j[i] = r * (N - 1 - i) + offset;
    } else {
        /* numpy.arange(T, 0, -T/N) = T - i (T/N), rounded half to even, minus 1. */
        double step = (double)T / N;
        for (int i = 0; i < N; i++) j[i] = (int)nearbyint(T - i * step) - 1;
    }
    return DFL_OK;
}

dfl_status dfl_schedule(const dfl_process *p, dfl_schedule_kind k, int steps, double rho, int steps_offset,
                        double *t)
{
    if (steps < 1) return dfl_fail(DFL_ERR_ARG, "schedule: steps must be >= 1 (got %d)", steps);
    double tm = dfl_t_max(p);
    const char *fam = dfl_family_name(p->family);
    switch (k) {
    case DFL_SCHED_RHO:
    case DFL_SCHED_LOGUNIFORM: {
        if (k == DFL_SCHED_RHO && !(rho > 0)) return dfl_fail(DFL_ERR_ARG, "schedule: rho must be > 0 (got %g)", rho);
        if (!(p->sigma_min > 0) || !(p->sigma_max > p->sigma_min))
            return dfl_fail(DFL_ERR_ARG, "schedule %s: needs 0 < sigma_min < sigma_max (got %g, %g)",
                            dfl_schedule_name(k), p->sigma_min, p->sigma_max);
        double smax_f = dfl_ratio(p, tm);
        if (p->sigma_max > smax_f * (1 + 1e-12))
            return dfl_fail(DFL_ERR_ARG,
                            "schedule %s: sigma_max %g is outside the %s family's range (its ratio at t_max = %g "
                            "is %g)",
                            dfl_schedule_name(k), p->sigma_max, fam, tm, smax_f);
        /* Never below the family's smallest trained time (VE: sigma(0) = ve_sigma_min > 0, so
         * the ratio sigma_min may sit exactly at t = 0; the grid then ends at t_min first). */
        double smin = p->sigma_min, tmin = dfl_t_min(p);
        if (tmin > 0 && dfl_ratio(p, tmin) > smin) smin = dfl_ratio(p, tmin);
        if (!(p->sigma_max > smin))
            return dfl_fail(DFL_ERR_ARG, "schedule %s: sigma_max %g is below the %s family's smallest ratio %g",
                            dfl_schedule_name(k), p->sigma_max, fam, smin);
        if (k == DFL_SCHED_RHO) {
            double a = pow(p->sigma_max, 1.0 / rho), b = pow(smin, 1.0 / rho);
            for (int i = 0; i < steps; i++) {
                double f = steps > 1 ? (double)i / (steps - 1) : 0.0;
                t[i] = dfl_t_of_ratio(p, pow(a + f * (b - a), rho));
            }
        } else {
            double a = log(p->sigma_max), b = log(smin);
            for (int i = 0; i < steps; i++) {
                double f = steps > 1 ? (double)i / (steps - 1) : 0.0;
                t[i] = dfl_t_of_ratio(p, exp(a + f * (b - a)));
            }
        }
        break;
    }
    case DFL_SCHED_UNIFORM:
        for (int i = 0; i < steps; i++) t[i] = tm * (1.0 - (double)i / steps);
        break;
    case DFL_SCHED_LEADING:
    case DFL_SCHED_TRAILING:
    case DFL_SCHED_LINSPACE: {
        if (steps > DFL_DDPM_T)
            return dfl_fail(DFL_ERR_ARG, "schedule %s: steps must be in 1..%d (got %d)", dfl_schedule_name(k),
                            DFL_DDPM_T, steps);
        int j[DFL_DDPM_T];
        dfl_status st = dfl_timestep_indices(k, DFL_DDPM_T, steps, steps_offset, j);
        if (st) return st;
        for (int i = 0; i < steps; i++) t[i] = tm * (j[i] + 1) / (double)DFL_DDPM_T;
        break;
    }
    default:
        return dfl_fail(DFL_ERR_ARG, "schedule: unknown kind %d", (int)k);
    }
    if (steps_offset != 0 && !is_spacing(k))
        return dfl_fail(DFL_ERR_ARG, "steps offset %d: only the leading spacing takes an offset, not %s", steps_offset,
                        dfl_schedule_name(k));
    t[steps] = 0.0;
    for (int i = 0; i < steps; i++) {
        if (!isfinite(t[i]) || !(t[i] > 0) || t[i] > tm * (1 + 1e-12))
            return dfl_fail(DFL_ERR_ARG, "schedule %s: time %g (step %d) is outside the %s family's range (0, %g]",
                            dfl_schedule_name(k), t[i], i, fam, tm);
        if (!(t[i] > t[i + 1]))
            return dfl_fail(DFL_ERR_ARG, "schedule %s: times must decrease (t[%d] = %g, t[%d] = %g)",
                            dfl_schedule_name(k), i, t[i], i + 1, t[i + 1]);
    }
    return DFL_OK;
}
