/* Time discretizations (shared/reference/diffusion.md 2.1). */
#include "difflow/gen.h"

#include <math.h>
#include <string.h>

dfl_status dfl_schedule_parse(const char *name, dfl_schedule_kind *k)
{
    if (strcmp(name, "rho") == 0) *k = DFL_SCHED_RHO;
    else if (strcmp(name, "uniform") == 0) *k = DFL_SCHED_UNIFORM;
    else return dfl_fail(DFL_ERR_ARG, "unknown schedule '%s' (known: rho, uniform)", name);
    return DFL_OK;
}

const char *dfl_schedule_name(dfl_schedule_kind k) { return k == DFL_SCHED_RHO ? "rho" : "uniform"; }

dfl_status dfl_schedule(const dfl_process *p, dfl_schedule_kind k, int steps, double rho, double *t)
{
    if (steps < 1) return dfl_fail(DFL_ERR_ARG, "schedule: steps must be >= 1 (got %d)", steps);
    if (k == DFL_SCHED_RHO) {
        if (!(rho > 0)) return dfl_fail(DFL_ERR_ARG, "schedule: rho must be > 0 (got %g)", rho);
        double a = pow(p->sigma_max, 1.0 / rho), b = pow(p->sigma_min, 1.0 / rho);
        for (int i = 0; i < steps; i++) {
            double f = steps > 1 ? (double)i / (steps - 1) : 0.0;
            t[i] = dfl_t_of_ratio(p, pow(a + f * (b - a), rho));
        }
    } else {
        double tm = dfl_t_max(p);
        for (int i = 0; i < steps; i++) t[i] = tm * (1.0 - (double)i / steps);
    }
    t[steps] = 0.0;
    return DFL_OK;
}
