/* difflow ode: one adaptive Dormand-Prince 5(4) integrator, shared by the rk45 sampler
 * (src/gen/samplers.c) and the PF-ODE likelihood (src/gen/likelihood.c).
 *
 * Source: J. R. Dormand and P. J. Prince (1980), "A family of embedded Runge-Kutta formulae",
 * J. Comput. Appl. Math. 6(1), 19-26, Table 2 (RK5(4)7M): seven stages, the last evaluated at
 * the fifth-order solution (FSAL: first same as last, so an accepted step costs 6 evaluations),
 * local extrapolation (the fifth-order solution is kept, the embedded fourth-order one only
 * estimates the error). Initial step and step-size control: Hairer, Norsett and Wanner, "Solving
 * Ordinary Differential Equations I", 2nd ed., II.4 (Eq. 4.11-4.13, the starting-step algorithm).
 */
#ifndef DIFFLOW_ODE_H
#define DIFFLOW_ODE_H

#include "difflow/core.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Right-hand side dy/dt = f(t, y): y (n) in, dydt (n) out, n as given to dfl_ode_dopri5.
 * Returns DFL_OK or an error status with its message set (dfl_fail); the integrator passes it
 * through (see retry_nonfinite for DFL_ERR_NUMERIC). */
typedef dfl_status (*dfl_ode_fn)(void *user, double t, const double *y, double *dydt);

/* Options. Every field is read; there are no hidden defaults except where stated. */
typedef struct {
    double rtol, atol; /* relative and absolute tolerance (> 0, finite), units of y */
    double h0;         /* magnitude of the first step attempted, units of t (clamped to |t1 - t0|);
                          <= 0: estimated from f at t0 (HNW II.4, one extra evaluation) */
    double grow_max;   /* largest step-size growth factor after an accepted step (> 1); <= 0: 10 */
    long max_nfe;      /* evaluation budget (> 0): a step (6 evaluations) or the estimate's extra
                          evaluation that would exceed it is not started; DFL_ERR_NUMERIC */
    size_t group;      /* error norm (below): components grouped in runs of `group` (n % group
                          == 0); 0: one group of all n */
    int retry_nonfinite; /* 0: a non-finite stage state, a DFL_ERR_NUMERIC from f at a stage or a
                            non-finite error estimate fails at once. 1: it rejects the step and
                            retries with h / 4 while that step stays above the collapse limit
                            and the budget allows; then the stage's own error is returned. */
    const char *who;   /* message prefix, e.g. "sampler rk45"; NULL: "ode" */
} dfl_ode_opts;

/* Counters of one call (set, not added to; also on failure). */
typedef struct {
    long nfe;      /* calls of f, including a failing one */
    long steps;    /* accepted steps */
    long rejected; /* rejected steps (error > 1, or a non-finite retry) */
} dfl_ode_counts;

/* Integrates dy/dt = f(t, y) from t0 to t1 with an adaptive Dormand-Prince 5(4).
 *   y (n)  in: y(t0); out: y(t1) (on failure: the last accepted state).
 *   Time direction: either; t1 < t0 integrates toward smaller t (steps h < 0), t1 == t0 returns
 *   at once with no evaluation. Units: t and h in the caller's time, y in its state units.
 * Error norm of a step with local error estimate e, start y0 and end y1: for each group g of
 * `group` components, RMS_g = sqrt(mean_{q in g} (e_q / (atol + rtol max(|y0_q|, |y1_q|)))^2),
 * and err = max_g RMS_g (a NaN anywhere makes err NaN). err <= 1 accepts. New step
 * h *= clamp(0.9 err^(-1/5), 0.2, grow_max) after an acceptance (grow_max when err = 0), and
 * h *= max(0.2, 0.9 err^(-1/5)) after a rejection.
 * A step within 1e-12 |t1 - t0| of t1 is stretched to end exactly at t1.
 * On success with t1 != t0 the last call of f was f(t1, y(t1)) (the FSAL stage of the last step),
 * so a caller may reuse what its f computed there.
 * Errors: DFL_ERR_ARG (n = 0, group not dividing n, bad tolerances, max_nfe < 1, non-finite
 * t0/t1); DFL_ERR_NOMEM; DFL_ERR_NUMERIC, its message naming the time t reached, for a
 * non-finite state or error estimate, a step collapsing below 1e-12 max(|t|, |t1 - t0|), or an
 * exhausted budget (message contains "max NFE"); or what f returns. counts may be NULL. */
dfl_status dfl_ode_dopri5(dfl_ode_fn f, void *user, size_t n, double t0, double t1, double *y,
                          const dfl_ode_opts *o, dfl_ode_counts *counts);

#ifdef __cplusplus
}
#endif
#endif
