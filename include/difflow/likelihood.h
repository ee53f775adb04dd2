/* difflow likelihood: exact log-likelihood of a diffusion or flow-matching model through its
 * probability-flow ODE (DESIGN section 4, "Likelihood"; reference/diffusion.md 2.6, 1.7;
 * reference/flows.md 1.2, 2.4).
 *
 * The PF-ODE dx/dt = v(x, t) = alpha'(t) x0_hat + sigma'(t) eps_hat transports the data
 * distribution at t_min to the process marginal at t_max, so by the instantaneous change of
 * variables (Chen et al. 2018; Grathwohl et al., FFJORD, ICLR 2019, Eq. 2-3; Song et al., ICLR 2021,
 * App. D.2)
 *     log p_{t_min}(x) = log p_{t_max}(x(t_max)) + int_{t_min}^{t_max} div v(x(t), t) dt.
 * The state [x, delta] is integrated with an adaptive Dormand-Prince RK5(4) (Dormand and Prince
 * 1980, J. Comput. Appl. Math. 6(1)); the divergence is exact (one input VJP per dimension) or
 * Hutchinson's estimator z^T (dv/dx) z (Hutchinson 1989, Commun. Stat. Simul. Comput. 18(3)) with
 * one Rademacher probe z per sample drawn once and held fixed for the whole solve.
 *
 * Units: every log-likelihood here is in nats, summed over the `dim` dimensions of one sample.
 * dfl_bits_per_dim converts to bits/dim with the dequantization offset.
 */
#ifndef DIFFLOW_LIKELIHOOD_H
#define DIFFLOW_LIKELIHOOD_H

#include "difflow/core.h"
#include "difflow/gen.h"

#ifdef __cplusplus
extern "C" {
#endif

/* A velocity field and its vector-Jacobian products, batched over n samples of dimension dim.
 *   x  (n, dim)        points at time t
 *   k  number of cotangents per sample (0: velocity only; then u and uj are NULL)
 *   u  (k, n, dim)     cotangents: u[j][i] is the j-th cotangent of sample i
 *   v  (n, dim)        out: v(x_i, t)
 *   uj (k, n, dim)     out: uj[j][i] = u[j][i]^T (d v(x_i, t) / d x_i)  (sample i only: the field
 *                      must act on each sample independently)
 * Returns DFL_OK or an error status with its message set; the integrator passes it through. */
typedef dfl_status (*dfl_vjp_fn)(void *user, const double *x, int n, int dim, double t, int k,
                                 const double *u, double *v, double *uj);

typedef enum {
    DFL_DIV_AUTO = 0,      /* exact for dim <= DFL_DIV_EXACT_MAX_DIM, Hutchinson otherwise */
    DFL_DIV_EXACT = 1,     /* dim input VJPs with the unit vectors: the trace itself */
    DFL_DIV_HUTCHINSON = 2 /* z^T (dv/dx) z with a Rademacher z fixed per sample and solve */
} dfl_div_mode;

#define DFL_DIV_EXACT_MAX_DIM 16

/* Divergence at one time: div[i] = tr(d v(x_i, t)/d x_i) (exact) or z_i^T (d v/d x_i) z_i
 * (Hutchinson, probe z (n, dim) given, entries +-1; unbiased, with variance
 * 2 (||A||_F^2 - sum_i A_ii^2) for a linear field v = A x). v (n, dim) receives the velocity
 * (may be NULL). mode DFL_DIV_AUTO resolves by dim. Errors: DFL_ERR_ARG (n < 1, dim < 1,
 * Hutchinson without probe), DFL_ERR_NOMEM, or what f returns. */
dfl_status dfl_divergence(dfl_vjp_fn f, void *user, const double *x, int n, int dim, double t,
                          dfl_div_mode mode, const double *probe, double *v, double *div);

/* Fills z (count entries) with independent Rademacher signs +-1 (probability 1/2 each) from rng. */
void dfl_rademacher(dfl_rng *rng, double *z, size_t count);

/* Counters of one or more solves. */
typedef struct {
    long nfe;      /* velocity(+divergence) evaluations, each over the whole batch */
    long steps;    /* accepted RK steps */
    long rejected; /* rejected RK steps */
} dfl_ode_stats;

/* Options of the likelihood solve. Defaults (dfl_loglik_opts_default): t range from the family
 * (dfl_loglik_t_range), rtol = atol = 1e-5 (score_sde), max_nfe 20000, DFL_DIV_AUTO, 1 probe,
 * no data statistics. */
typedef struct {
    double t_min, t_max;    /* integration range; both 0: dfl_loglik_t_range */
    double rtol, atol;      /* RK45 tolerances, relative and absolute (> 0) */
    long max_nfe;           /* guard: a solve needing more evaluations fails (DFL_ERR_NUMERIC) */
    dfl_div_mode div;       /* divergence mode */
    int probes;             /* Hutchinson: K independent solves (probes) averaged per sample */
    const double *data_mean; /* (dim) per-dimension mean of the data, or NULL for 0 */
    const double *data_var;  /* (dim) per-dimension variance of the data, or NULL for 0 */
} dfl_loglik_opts;

void dfl_loglik_opts_default(dfl_loglik_opts *o);

/* The range [t_min, t_max] the likelihood integrates over for a process: flow matching [0, 1]
 * (the straight path is defined at t = 0 and t = 1 is pure noise); every other family from the
 * time of its smallest noise-to-signal ratio, dfl_t_of_ratio(sigma_min), to dfl_t_max (EDM:
 * [sigma_min, sigma_max] = [0.002, 80]). The result is the density of the data smoothed by the
 * process at t_min (for EDM: data convolved with N(0, 0.002^2 I)), as in k-diffusion and
 * score_sde (reference/diffusion.md 1.7). */
void dfl_loglik_t_range(const dfl_process *p, double *t_min, double *t_max);

/* Log-density of the prior at t_max, in nats summed over dim: the process marginal at T,
 * approximated by the Gaussian with the same per-dimension mean and variance,
 *     p_T = N(alpha_T mu_d, alpha_T^2 var_d + sigma_T^2)  for each dimension d.
 * Exact when alpha_T = 0 (flow matching at t = 1: N(0, I)) and for Gaussian data; otherwise the
 * marginal is the data scaled by alpha_T convolved with N(0, sigma_T^2 I) and the Gaussian
 * misses its higher cumulants: the error per dimension is O((alpha_T^2 var_d / sigma_T^2)^2)
 * nats (EDM at sigma_T = 80, var_d <= 4: below 1e-6 nats/dim). mu, var: (dim) or NULL (0).
 * x: (dim) one point. */
double dfl_prior_logp(const double *x, int dim, double alpha_T, double sigma_T, const double *mu,
                      const double *var);

/* Adaptive Dormand-Prince RK5(4) integration of dx/dt = v(x, t), d delta/dt = div v(x, t) from
 * o->t_min to o->t_max (t_min < t_max, both must be set), all n samples in one solve with a
 * shared step. x (n, dim) in: x(t_min), out: x(t_max). delta (n) out: the integral of the
 * divergence (nats). probe (n, dim): the fixed Rademacher probes (Hutchinson) or NULL (exact).
 * Step control: per sample the RMS over its dim + 1 components of err / (atol + rtol max(|y|,
 * |y_new|)), the maximum over samples <= 1 to accept; FSAL, Hairer's initial step.
 * Errors: DFL_ERR_ARG (bad range, tolerances, sizes), DFL_ERR_NUMERIC (non-finite state, step
 * size underflow, or more than max_nfe evaluations; each message names the time reached),
 * DFL_ERR_NOMEM, or what f returns. st (may be NULL) is added to. */
dfl_status dfl_pfode_solve(dfl_vjp_fn f, void *user, int n, int dim, const dfl_loglik_opts *o,
                           dfl_div_mode mode, const double *probe, double *x, double *delta,
                           dfl_ode_stats *st);

/* log p(x_i) in nats (summed over dim) for n samples x (n, dim) under the PF-ODE of process p
 * with velocity field f: log p_T(x_i(T)) + delta_i (Song et al. 2021, App. D.2). With
 * Hutchinson divergence, o->probes independent solves, each with fresh probes drawn from rng,
 * are averaged per sample (rng may be NULL for exact divergence). logp (n) out; xT (n, dim)
 * receives x(T) of the last solve (may be NULL). Errors: those of dfl_pfode_solve. */
dfl_status dfl_pfode_loglik(const dfl_process *p, dfl_vjp_fn f, void *user, int n, int dim, const double *x,
                            const dfl_loglik_opts *o, dfl_rng *rng, double *logp, double *xT,
                            dfl_ode_stats *st);

/* A trained model as a dfl_vjp_fn: the PF-ODE velocity
 *     v = alpha' x0_hat + sigma' eps_hat = (alpha' a + sigma' c) x + (alpha' b + sigma' d) F(c_in x; c_noise)
 * with the affine coefficients of dfl_model_coeffs, and its input VJPs through the tape
 * (x requires grad, dfl_backward_vjp; the k cotangents of a call run as one replicated batch,
 * split so no network call exceeds max(n, max_rows) rows). The network's parameters are taken out
 * of the tape for the call (their requires_grad restored after), so no parameter gradient is
 * touched. ctx is reset at every call. shape: the network's input shape with shape[0] ignored
 * ((N, dim) for the MLP, (N, C, H, W) for the U-Net). */
typedef struct {
    dfl_ctx *ctx;
    const dfl_model *m;
    int ndim;
    int shape[4];
    int max_rows; /* 0: no split */
} dfl_model_field;

/* The dfl_vjp_fn of a dfl_model_field (user = the field). Errors: DFL_ERR_ARG (time where the
 * parameterization is undefined, dim not matching shape), DFL_ERR_SHAPE, DFL_ERR_NOMEM. */
dfl_status dfl_model_vjp(void *user, const double *x, int n, int dim, double t, int k, const double *u,
                         double *v, double *uj);

/* bits/dim of a log-likelihood of k-bit data dequantized as y = a + w (v + u)/2^k, u ~ U[0,1)^D
 * (reference/flows.md 1.2): bpd = -logp/(D ln 2) + k - log2(w). [-1, 1] (w = 2): +7 for 8 bits;
 * [0, 1] (w = 1): +8. logp in nats summed over the D dims. Valid only for data uniformly
 * dequantized before the likelihood (reference/diffusion.md pitfall 7). */
double dfl_bits_per_dim(double logp, int D, int k_bits, double width);

/* Uniform dequantization of 8-bit values to [-1, 1): y = -1 + 2 (v + u)/256, u ~ U[0,1) from
 * rng (53-bit uniforms), count values, y double. */
void dfl_dequantize8(const uint8_t *v, size_t count, dfl_rng *rng, double *y);

#ifdef __cplusplus
}
#endif
#endif
