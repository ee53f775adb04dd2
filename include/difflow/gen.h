/* difflow gen: diffusion and flow matching as one framework (DESIGN section 4).
 *
 * Every family is a forward process x_t = alpha(t) x0 + sigma(t) eps, eps ~ N(0, I), with time
 * growing toward noise (t = 0 is data). A network is wrapped by its parameterization so that
 * every model answers the same question, (x_t, t) -> (x0_hat, eps_hat) with
 * x_t = alpha x0_hat + sigma eps_hat, and every sampler is written once against that pair.
 * Sources: EDM = Karras et al. 2022 (arXiv 2206.00364); FM = Lipman et al. ICLR 2023;
 * RF = Liu, Gong, Liu ICLR 2023. Formulas are in shared/reference/diffusion.md.
 */
#ifndef DIFFLOW_GEN_H
#define DIFFLOW_GEN_H

#include "difflow/core.h"
#include "difflow/nn.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---------------------------------------------------------------- processes */

typedef enum {
    DFL_FAMILY_FM = 0,  /* flow matching / rectified flow: alpha = 1 - t, sigma = t, t in [0, 1] */
    DFL_FAMILY_EDM = 1  /* EDM: alpha = 1, sigma = t, t in [0, sigma_max] */
} dfl_family;

typedef struct {
    dfl_family family;
    double sigma_min, sigma_max; /* range of the noise-to-signal ratio s = sigma/alpha used by
                                    samplers (EDM: 0.002, 80) */
    double sigma_data;           /* EDM preconditioning sigma_data (0.5) */
    double P_mean, P_std;        /* EDM training: ln sigma ~ N(P_mean, P_std^2) (-1.2, 1.2) */
} dfl_process;

/* Defaults for a family (EDM constants from EDM Table 1 / training/loss.py). */
void dfl_process_default(dfl_process *p, dfl_family f);
/* "fm" or "edm" -> family; DFL_ERR_ARG naming the value otherwise. */
dfl_status dfl_family_parse(const char *name, dfl_family *f);
const char *dfl_family_name(dfl_family f);

double dfl_alpha(const dfl_process *p, double t);
double dfl_sigma(const dfl_process *p, double t);
double dfl_dalpha(const dfl_process *p, double t);   /* d alpha / dt */
double dfl_dsigma(const dfl_process *p, double t);   /* d sigma / dt */
/* Noise-to-signal ratio s(t) = sigma(t)/alpha(t) (EDM's sigma) and its inverse t(s). */
double dfl_ratio(const dfl_process *p, double t);
double dfl_t_of_ratio(const dfl_process *p, double s);
/* Largest t a sampler starts from by default (FM: 1, EDM: sigma_max). */
double dfl_t_max(const dfl_process *p);

/* ---------------------------------------------------------------- model = process + network */

typedef struct {
    dfl_process proc;
    dfl_net *net;
} dfl_model;

/* The network's time input for time t: FM passes t; EDM passes c_noise = ln(sigma)/4
 * (EDM Table 1, "EDM" column). */
float dfl_model_cnoise(const dfl_model *m, double t);

/* Every parameterization is affine in the input x and the network output F (EDM Eq. 7 and its
 * analogues): the network is called as F(c_in x; c_noise), and
 *     x0_hat = a x + b F,    eps_hat = c x + d F.
 * FM: c_in 1, c_noise t, (a, b, c, d) = (1, -t, 1, 1 - t).
 * EDM: c_in = 1/sqrt(s^2 + sd^2), c_noise = ln(s)/4, a = c_skip, b = c_out, c = (1 - c_skip)/s,
 * d = -c_out/s (s = sigma; Table 1). The PF-ODE velocity is then (alpha' a + sigma' c) x +
 * (alpha' b + sigma' d) F, which is how likelihood code differentiates it with respect to x. */
typedef struct {
    double c_in;
    float c_noise;
    double a, b, c, d;
} dfl_pred_coeffs;

/* Coefficients at time t. DFL_ERR_ARG where the parameterization is undefined (EDM at
 * sigma = 0). */
dfl_status dfl_model_coeffs(const dfl_model *m, double t, dfl_pred_coeffs *k);

/* Denoiser wrapper: x (N, ...) at one time t for every sample -> x0_hat and eps_hat, each
 * (N, ...) (may be NULL when not wanted). Runs the network in no-grad mode.
 *   FM (velocity u = eps - x0):  x0_hat = x - t u,  eps_hat = x + (1 - t) u.
 *   EDM (F-parameterization): x0_hat = c_skip x + c_out F(c_in x; c_noise) (EDM Eq. 7, Table 1),
 *                             eps_hat = (x - x0_hat)/sigma.
 * x holds n_per * N floats with shape `shape` (ndim dims, shape[0] = N).
 * Errors: DFL_ERR_SHAPE (shape does not fit the network), DFL_ERR_ARG (EDM at sigma = 0),
 * DFL_ERR_NOMEM. */
dfl_status dfl_denoise(dfl_ctx *ctx, const dfl_model *m, const float *x, int ndim, const int *shape,
                       double t, float *x0_hat, float *eps_hat);

/* Training loss for a batch x0 (shape `shape`, images in [-1, 1] or 2-D points), recorded on
 * the tape; returns a scalar tensor (mean over all elements) or NULL.
 *   FM (conditional flow matching, straight path, Lipman et al. 2023 Eq. 23 with sigma_min = 0;
 *   RF Eq. 1): t ~ U(0,1), x_t = (1 - t) x0 + t eps, loss = mean |F(x_t, t) - (eps - x0)|^2.
 *   EDM (EDM Eq. 8 with Table 1's lambda = 1/c_out^2): ln sigma ~ N(P_mean, P_std^2),
 *   x = x0 + sigma eps, loss = mean |F(c_in x; c_noise) - (x0 - c_skip x)/c_out|^2, which is
 *   lambda |D(x; sigma) - x0|^2 exactly.
 * Errors (NULL returned, message set): invalid shape, network shape mismatch, out of memory. */
dfl_tensor *dfl_model_loss(dfl_ctx *ctx, const dfl_model *m, const float *x0, int ndim, const int *shape,
                           dfl_rng *rng);

/* ---------------------------------------------------------------- schedules and samplers */

typedef enum { DFL_SCHED_RHO = 0, DFL_SCHED_UNIFORM = 1 } dfl_schedule_kind;
typedef enum { DFL_SAMPLER_EULER = 0, DFL_SAMPLER_HEUN = 1 } dfl_sampler_kind;

dfl_status dfl_schedule_parse(const char *name, dfl_schedule_kind *k);
dfl_status dfl_sampler_parse(const char *name, dfl_sampler_kind *k);
const char *dfl_schedule_name(dfl_schedule_kind k);
const char *dfl_sampler_name(dfl_sampler_kind k);

/* Time grid t[0] > t[1] > ... > t[steps-1] > t[steps] = 0 (steps + 1 entries, t[steps] is data).
 *   rho: EDM Eq. 5 on the ratio s: s_i = (s_max^(1/rho) + i/(N-1) (s_min^(1/rho) - s_max^(1/rho)))^rho,
 *        t_i = t(s_i); steps >= 1 (for steps = 1 only s_max is used).
 *   uniform: t_i = t_max (1 - i/N).
 * DFL_ERR_ARG for steps < 1 or rho <= 0. */
dfl_status dfl_schedule(const dfl_process *p, dfl_schedule_kind k, int steps, double rho, double *t);

typedef struct {
    dfl_sampler_kind sampler;
    dfl_schedule_kind schedule;
    int steps;   /* N */
    double rho;  /* 7 */
} dfl_sample_cfg;

/* Integrate the probability-flow ODE dx/dt = alpha'(t) x0_hat + sigma'(t) eps_hat (DESIGN
 * section 4; EDM Eq. 4 in (alpha, sigma) form) from t[0] to 0 on the schedule's grid.
 * Starts from x = sigma(t[0]) z, z ~ N(0, I) drawn from rng. Euler: first order. Heun: EDM
 * Algorithm 1 (second-order correction on every step except the last, whose end t = 0), so
 * NFE = 2N - 1 for Heun and N for Euler. x_out (N, ...) float; *nfe receives the count.
 * The ctx is reset before every network evaluation. Errors: DFL_ERR_ARG (steps < 1, rho <= 0),
 * DFL_ERR_SHAPE, DFL_ERR_NUMERIC (a non-finite velocity, naming t), DFL_ERR_NOMEM. */
dfl_status dfl_sample(dfl_ctx *ctx, const dfl_model *m, const dfl_sample_cfg *cfg, dfl_rng *rng,
                      int ndim, const int *shape, float *x_out, int *nfe);

/* Same, starting from a given x_T (double, n floats of `shape`), writing into it; the core
 * that tests drive with closed-form denoisers. `den` is called for each NFE with (x, t) and
 * must fill x0_hat and eps_hat (float, n each). Errors: as dfl_sample, plus any status `den`
 * returns (passed through). */
typedef dfl_status (*dfl_denoise_fn)(void *user, const float *x, double t, float *x0_hat, float *eps_hat);
dfl_status dfl_sample_ode(const dfl_process *p, const dfl_sample_cfg *cfg, dfl_denoise_fn den, void *user,
                          double *x, size_t n, int *nfe);

#ifdef __cplusplus
}
#endif
#endif

/* ---------------------------------------------------------------- checkpoints */
#ifndef DIFFLOW_GEN_CKPT
#define DIFFLOW_GEN_CKPT
#ifdef __cplusplus
extern "C" {
#endif

#define DFL_FORMAT_VERSION 1

/* What a checkpoint records besides the weights (stored as JSON in __metadata__["config"]). */
typedef struct {
    char arch[32];   /* architecture preset: "toy-mlp", "fmnist-unet-s" */
    char data[256];  /* dataset it was trained on: "fashion-mnist", "moons", "8gaussians" */
    long step;       /* optimizer steps completed */
    uint64_t seed;   /* training seed */
} dfl_model_info;

/* Saves the network's parameters (F32, keys = module paths) and the model/method config to a
 * safetensors file, atomically. __metadata__ holds "format" = "difflow", "format_version",
 * "step", "arch", "method" and "config" (the full JSON). Errors: those of dfl_safetensors_save. */
dfl_status dfl_model_save(const char *path, const dfl_model *m, const dfl_model_info *info);

/* Builds m->net from the checkpoint's config and loads its weights. Every parameter of the
 * architecture must be present with its exact shape and no other tensor may be present:
 * otherwise DFL_ERR_MISMATCH naming the tensor. DFL_ERR_FORMAT if the file is not a difflow
 * checkpoint (no config) or its config is invalid; DFL_ERR_IO/DFL_ERR_FORMAT from the reader. */
dfl_status dfl_model_load(const char *path, dfl_model *m, dfl_model_info *info);

/* The config JSON of a model (malloc'd string; NULL on failure). */
char *dfl_model_config_json(const dfl_model *m, const dfl_model_info *info);

#ifdef __cplusplus
}
#endif
#endif
