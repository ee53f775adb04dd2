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
    DFL_FAMILY_FM = 0,    /* flow matching / rectified flow: alpha = 1 - t, sigma = t, t in [0, 1] */
    DFL_FAMILY_EDM = 1,   /* EDM: alpha = 1, sigma = t, t in [0, sigma_max] */
    DFL_FAMILY_VP = 2,    /* continuous VP (score SDE VP / continuous DDPM), t in [eps_t, 1] */
    DFL_FAMILY_SUBVP = 3, /* sub-VP (score SDE), t in [eps_t, 1] */
    DFL_FAMILY_VE = 4,    /* VE / SMLD / NCSN, score_sde form, t in [0, 1] */
    DFL_FAMILY_DDPM = 5   /* discrete DDPM, T = 1000 steps embedded in t in [0, 1] */
} dfl_family;
#define DFL_FAMILY_COUNT 6

/* What the network predicts (DESIGN section 4; diffusion.md 1.3). */
typedef enum {
    DFL_PRED_VELOCITY = 0, /* u = dx_t/dt = alpha' x0 + sigma' eps (FM's u = eps - x0) */
    DFL_PRED_EDM = 1,      /* EDM's F with preconditioning (c_skip, c_out, c_in, c_noise) */
    DFL_PRED_EPS = 2,      /* the noise eps */
    DFL_PRED_X0 = 3,       /* the clean data x0 */
    DFL_PRED_V = 4         /* v = alpha eps - sigma x0 (Salimans and Ho 2022); needs alpha^2 + sigma^2 = 1 */
} dfl_pred;
#define DFL_PRED_COUNT 5

/* Discrete DDPM beta schedules (diffusers names; diffusion.md 1.2). */
typedef enum {
    DFL_DDPM_LINEAR = 0, /* beta linear from 1e-4 to 0.02 over T (Ho et al. 2020 sec. 4) */
    DFL_DDPM_COSINE = 1  /* "squaredcos_cap_v2" (Nichol and Dhariwal 2021 Eq. 17, betas capped at 0.999) */
} dfl_ddpm_schedule;
#define DFL_DDPM_T 1000

typedef struct {
    dfl_family family;
    double sigma_min, sigma_max; /* range of the noise-to-signal ratio s = sigma/alpha used by
                                    samplers' schedules (per-family defaults: FM and EDM 0.002..80;
                                    VP s(1e-3)..s(1) = 0.010486..152.167; sub-VP s(1e-3)..s(1);
                                    VE s(1e-3)..s(1) = 0.010085..50; DDPM s(t_0)..s(t_999) = 0.010001..157.4073) */
    double sigma_data;           /* EDM preconditioning sigma_data (0.5) */
    double P_mean, P_std;        /* EDM training: ln sigma ~ N(P_mean, P_std^2) (-1.2, 1.2) */
    dfl_pred pred;               /* the network's parameterization; dfl_process_default sets the
                                    family's default (dfl_pred_default) */
    double beta_min, beta_d;     /* VP/sub-VP: B(t) = beta_min t + beta_d t^2/2 (0.1, 19.9) */
    double eps_t;                /* VP/sub-VP/VE: smallest training t (score_sde: 1e-5) */
    double ve_sigma_min, ve_sigma_max; /* VE process constants: sigma(t) = ve_sigma_min
                                    (ve_sigma_max/ve_sigma_min)^t (score_sde CIFAR: 0.01, 50).
                                    Separate from sigma_min/sigma_max, which are the sampler range. */
    dfl_ddpm_schedule ddpm_schedule; /* DDPM beta schedule (table below is built from it) */
    int fm_ot;                   /* FM training: pair noise and data within each batch by exact
                                    minibatch optimal transport (dfl_ot_assign); 0 = independent */
    double ddpm_logab[DFL_DDPM_T]; /* DDPM: ln alphabar_j, j = 0..T-1 (filled by
                                    dfl_process_default / dfl_process_set_ddpm) */
} dfl_process;

/* Defaults for a family: EDM constants from EDM Table 1 / training/loss.py, VP/sub-VP from EDM
 * VPPrecond (beta_min 0.1, beta_d 19.9, eps_t 1e-5), VE from score_sde (0.01, 50), DDPM linear.
 * Also sets pred = dfl_pred_default(f) and fm_ot = 0. */
void dfl_process_default(dfl_process *p, dfl_family f);
/* Switches a DDPM process to beta schedule `s`: rebuilds ddpm_logab and the sampler ratio range
 * sigma_min/sigma_max = s(t_0)..s(t_{T-1}). Works on any family (only DDPM reads the table). */
void dfl_process_set_ddpm(dfl_process *p, dfl_ddpm_schedule s);
/* "fm", "edm", "vp", "subvp", "ve", "ddpm" -> family; DFL_ERR_ARG naming the value otherwise. */
dfl_status dfl_family_parse(const char *name, dfl_family *f);
/* Family -> its CLI name ("fm", "edm", ...); "unknown" for a value outside the enum. */
const char *dfl_family_name(dfl_family f);
/* "velocity", "edm", "eps", "x0", "v" -> pred; DFL_ERR_ARG naming the value otherwise. */
dfl_status dfl_pred_parse(const char *name, dfl_pred *k);
/* Parameterization -> its CLI name ("velocity", "eps", ...); "unknown" for a value outside the enum. */
const char *dfl_pred_name(dfl_pred k);
/* Default parameterization of a family: FM velocity, EDM edm, VP/sub-VP/VE/DDPM eps. */
dfl_pred dfl_pred_default(dfl_family f);
/* Whether parameterization k can be used with process p: DFL_ERR_ARG with one line saying why
 * otherwise. Refused: v unless alpha^2 + sigma^2 = 1 (VP, DDPM only); edm with FM (x/alpha
 * is undefined at t = 1 and ln s at t = 0, both ends of FM's training range). */
dfl_status dfl_pred_check(const dfl_process *p, dfl_pred k);
/* "linear" or "cosine" (also "squaredcos_cap_v2"); DFL_ERR_ARG otherwise. */
dfl_status dfl_ddpm_schedule_parse(const char *name, dfl_ddpm_schedule *s);
/* DDPM beta schedule -> "cosine" for DFL_DDPM_COSINE, else "linear". */
const char *dfl_ddpm_schedule_name(dfl_ddpm_schedule s);

/* alphabar_j = prod_{i<=j} (1 - beta_i) of a DDPM process's discrete schedule, j = 0..T-1
 * (T = DFL_DDPM_T = 1000), for ancestral / DDIM sampling on the exact discrete grid (DDPM Eq. 4,
 * DDIM Eq. 12). j = -1 returns 1 (the clean data; DDIM's "set_alpha_to_one"). Out of range or a
 * non-DDPM process: NaN. The continuous embedding below satisfies alpha(t_j)^2 = alphabar_j at
 * t_j = (j + 1)/T exactly (up to exp/log rounding). */
double dfl_ddpm_alphabar(const dfl_process *p, int j);

/* alpha(t), sigma(t) (diffusion.md 1.2; DESIGN section 4), t dimensionless (EDM: t = sigma):
 *   FM      alpha = 1 - t, sigma = t.
 *   EDM     alpha = 1, sigma = t.
 *   VP      alpha = exp(-B/2), sigma = sqrt(1 - exp(-B)), B = beta_min t + beta_d t^2/2
 *           (Song et al. 2021 score SDE Eq. 29 marginal; EDM Table 1 VP column).
 *   sub-VP  alpha as VP, sigma = 1 - exp(-B) (score SDE Eq. 30 marginal std).
 *   VE      alpha = 1, sigma = ve_sigma_min (ve_sigma_max/ve_sigma_min)^t (score SDE Eq. 31; SMLD).
 *   DDPM    ln alphabar(t) is piecewise linear in u = T t - 1 through the knots (j, ln alphabar_j),
 *           j = -1..T-1 with ln alphabar_{-1} = 0; alpha = sqrt(alphabar(t)),
 *           sigma = sqrt(1 - alphabar(t)). So t = 0 is the data, t_j = (j + 1)/T is DDPM step j
 *           exactly, t = 1 is step T-1; beyond [0, 1] the end segments are extended linearly.
 * The derivatives are exact: analytic for the continuous families, and for DDPM the derivative of
 * the interpolation (T (ln ab_{k+1} - ln ab_k) on segment k; at a knot the right segment's).
 * VP and DDPM sigma'(0) is infinite / large: evaluate from t_min on. */
double dfl_alpha(const dfl_process *p, double t);
/* sigma(t) of the same table (noise scale; data in [-1, 1]). */
double dfl_sigma(const dfl_process *p, double t);
/* d alpha / dt, exact (see the table above). */
double dfl_dalpha(const dfl_process *p, double t);
/* d sigma / dt, exact (see the table above). */
double dfl_dsigma(const dfl_process *p, double t);
/* Noise-to-signal ratio s(t) = sigma(t)/alpha(t) (EDM's sigma) and its inverse t(s), s >= 0.
 * Inverses: FM t = s/(1+s); EDM t = s; VP t = (sqrt(beta_min^2 + 2 beta_d ln(1 + s^2)) -
 * beta_min)/beta_d (EDM Eq. 5 VP column / diffusion.md 1.2); sub-VP B = 2 asinh(s/2) then the
 * same quadratic; VE t = ln(s/ve_sigma_min)/ln(ve_sigma_max/ve_sigma_min); DDPM: binary search
 * of ln alphabar = -ln(1 + s^2) in the knots, then the linear segment inverted. For VP, sub-VP,
 * VE and DDPM the result is clamped to [0, t_max] (VE: a ratio below ve_sigma_min maps to 0), so
 * a schedule whose sigma_max exceeds the family's range starts at t_max, not beyond it. */
double dfl_ratio(const dfl_process *p, double t);
/* t(s), the inverse of dfl_ratio, clamped as described above; s >= 0. */
double dfl_t_of_ratio(const dfl_process *p, double s);
/* Largest t a sampler starts from by default (FM: 1, EDM: sigma_max, VP/sub-VP/VE/DDPM: 1). */
double dfl_t_max(const dfl_process *p);
/* Smallest t the family trains on: FM 0, EDM 0 (log-normal sigma, open at 0), VP/sub-VP/VE
 * eps_t (1e-5, score_sde), DDPM 1/T (step j = 0). Samplers stop their grids at the ratio
 * sigma_min instead (VP: t = 1e-3, score_sde's sampling eps) before the final step to t = 0. */
double dfl_t_min(const dfl_process *p);

/* ---------------------------------------------------------------- minibatch optimal transport */

/* Exact linear assignment: given an n x n cost matrix C (row-major, finite doubles), writes the
 * permutation perm (perm[i] = column assigned to row i) minimizing sum_i C[i][perm[i]].
 * Hungarian method with potentials (Kuhn 1955; shortest augmenting paths, Jonker and Volgenant
 * 1987), O(n^3) time, O(n) extra memory; n <= 4096. Used for minibatch OT conditional flow matching
 * (Tong et al. 2024, "Improving and generalizing flow-based generative models with minibatch
 * optimal transport", Alg. 2; Pooladian et al. 2023). Returns the minimal cost in *cost if
 * non-NULL. Errors: DFL_ERR_ARG (n < 1 or > 4096, a non-finite cost), DFL_ERR_NOMEM. */
dfl_status dfl_ot_assign(const double *C, int n, int *perm, double *cost);

/* ---------------------------------------------------------------- model = process + network */

/* A model: a process (which also holds the parameterization proc.pred, so that every
 * `dfl_process_default(&m.proc, f)` gives the family's default pred) and a network. */
typedef struct {
    dfl_process proc;
    dfl_net *net;
} dfl_model;

/* The network's time input for time t (bounded for every family):
 *   EDM family, or pred edm on any family: c_noise = ln(s)/4 with s = sigma/alpha (EDM Table 1);
 *   otherwise t itself: FM t in [0, 1]; VP/sub-VP/DDPM t in [0, 1] (the U-Net embeds
 *   t_scale * t = 1000 t, i.e. DDPM's integer step scale, like EDM VPPrecond's (M - 1) t);
 *   VE t in [0, 1], which is affine in ln sigma (t = ln(sigma/0.01)/ln 5000), so it plays the
 *   role of EDM VEPrecond's ln(sigma/2) in a bounded range. */
float dfl_model_cnoise(const dfl_model *m, double t);

/* Every parameterization is affine in the input x and the network output F (EDM Eq. 7 and its
 * analogues): the network is called as F(c_in x; c_noise), and
 *     x0_hat = a x + b F,    eps_hat = c x + d F.
 * With alpha, sigma, alpha', sigma' at t (diffusion.md 1.3):
 *   velocity, FM: c_in 1, (a, b, c, d) = (1, -t, 1, 1 - t) (u = eps - x0).
 *   velocity, other families: u = alpha' x0 + sigma' eps solved with x = alpha x0 + sigma eps:
 *       det = alpha sigma' - sigma alpha', (a, b, c, d) = (sigma', -sigma, -alpha', alpha)/det.
 *   eps: (a, b, c, d) = (1/alpha, -sigma/alpha, 0, 1) (DDPM Eq. 11 rearranged).
 *   x0:  (0, 1, 1/sigma, -alpha/sigma).
 *   v:   (alpha, -sigma, sigma, alpha) (Salimans and Ho 2022 sec. 4; needs alpha^2 + sigma^2 = 1).
 *   edm: D called on x/alpha at s = sigma/alpha (EDM Eq. 7 and sec. 2): c_in = c_in(s)/alpha,
 *        a = c_skip(s)/alpha, b = c_out(s), c = (1 - c_skip)/sigma, d = -alpha c_out/sigma, with
 *        EDM Table 1: c_skip = sd^2/(s^2 + sd^2), c_out = s sd/sqrt(s^2 + sd^2),
 *        c_in = 1/sqrt(s^2 + sd^2). For the EDM family (alpha = 1, s = sigma = t) this is EDM.
 *   c_in for eps, x0 and non-FM velocity: 1/sqrt(alpha^2 + sigma^2) (x_t's inverse std for
 *   unit-variance data; EDM VPPrecond's 1/sqrt(s^2 + 1) on x/alpha); v: 1.
 * The PF-ODE velocity is then (alpha' a + sigma' c) x + (alpha' b + sigma' d) F, which is how
 * likelihood code differentiates it with respect to x. */
typedef struct {
    double c_in;
    float c_noise;
    double a, b, c, d;
} dfl_pred_coeffs;

/* Coefficients of m->proc.pred at time t. DFL_ERR_ARG where the parameterization is undefined:
 * edm needs sigma > 0 and alpha > 0, eps alpha > 0 (not FM's t = 1), x0 sigma > 0, velocity a
 * non-singular det, and any pair refused by dfl_pred_check. */
dfl_status dfl_model_coeffs(const dfl_model *m, double t, dfl_pred_coeffs *k);

/* Denoiser wrapper: x (N, ...) at one time t for every sample -> x0_hat and eps_hat, each
 * (N, ...) (may be NULL when not wanted), from the affine coefficients above, so that
 * x = alpha x0_hat + sigma eps_hat. Runs the network in no-grad mode.
 *   FM (velocity u = eps - x0):  x0_hat = x - t u,  eps_hat = x + (1 - t) u.
 *   EDM (F-parameterization): x0_hat = c_skip x + c_out F(c_in x; c_noise) (EDM Eq. 7, Table 1),
 *                             eps_hat = (x - x0_hat)/sigma.
 * x holds n_per * N floats with shape `shape` (ndim dims, shape[0] = N).
 * Errors: DFL_ERR_SHAPE (shape does not fit the network), DFL_ERR_ARG (see dfl_model_coeffs),
 * DFL_ERR_NOMEM. */
dfl_status dfl_denoise(dfl_ctx *ctx, const dfl_model *m, const float *x, int ndim, const int *shape,
                       double t, float *x0_hat, float *eps_hat);

/* Training loss for a batch x0 (shape `shape`, images in [-1, 1] or 2-D points), recorded on
 * the tape; returns a scalar tensor (mean over all elements) or NULL.
 * Time draw per sample (one per sample, before its noise):
 *   FM t ~ U[0, 1); EDM ln s ~ N(P_mean, P_std^2) (EDM training/loss.py); VP, sub-VP, VE
 *   t ~ U(eps_t, 1) (score_sde, eps_t = 1e-5); DDPM j ~ U{0..T-1}, t = (j + 1)/T (DDPM Alg. 1).
 * Then eps ~ N(0, I), x = alpha x0 + sigma eps, and the network F(c_in x; c_noise) regresses:
 *   (fm, velocity): eps - x0 (conditional flow matching, straight path; Lipman et al. 2023 Eq. 23
 *       with sigma_min = 0; RF Eq. 1) — unchanged.
 *   (edm, edm): (x0 - c_skip x)/c_out, i.e. lambda |D - x0|^2 with lambda = 1/c_out^2 (EDM
 *       Eq. 8, Table 1) — unchanged.
 *   eps (any family): eps. Equals lambda(t) |eps_hat - eps|^2 with lambda = 1: the DDPM "simple"
 *       loss (DDPM Eq. 14) for ddpm, and score-SDE denoising score matching with lambda(t) =
 *       sigma^2 (Song et al. 2021 Eq. 7; |sigma s_theta + z|^2 = |eps_hat - eps|^2) for
 *       vp/subvp/ve; for fm/edm the same eps regression at their time draw.
 *   x0: x0. |x0_hat - x0|^2 = (sigma/alpha)^2 |eps_hat - eps|^2 (eps weighting s^2).
 *   v:  alpha eps - sigma x0. |v_hat - v|^2 = |eps_hat - eps|^2/alpha^2 = (1 + s^2) |...|^2
 *       ("SNR + 1" weighting, Salimans and Ho 2022 sec. 4).
 *   velocity (non-FM): alpha' x0 + sigma' eps (conditional flow matching on the family's path;
 *       Lipman et al. 2023 Eq. 14 with the (alpha, sigma) path); = (det/alpha)^2 |eps_hat - eps|^2.
 *   edm (non-EDM family): the EDM target on x/alpha at s = sigma/alpha, lambda = 1/c_out(s)^2 on
 *       |D - x0|^2, with the family's time draw.
 * With proc.fm_ot (fm, velocity only): minibatch OT-CFM (Tong et al. 2024 Alg. 2): all N noise
 * vectors are drawn first, paired to the data by dfl_ot_assign on squared Euclidean distance,
 * then the N times are drawn.
 * Errors (NULL returned, message set): invalid shape, network shape mismatch, a pair refused by
 * dfl_pred_check, fm_ot with a pair other than (fm, velocity) (DFL_ERR_ARG), out of memory. */
dfl_tensor *dfl_model_loss(dfl_ctx *ctx, const dfl_model *m, const float *x0, int ndim, const int *shape,
                           dfl_rng *rng);

/* Rectified-flow reflow loss (Liu, Gong, Liu ICLR 2023, Eq. 1 with the coupling (Z0, Z1) of
 * Algorithm 1's step 2): the pairs are given, x0[b] the data end and eps[b] the noise end of the
 * previous flow's ODE trajectory, both (N, ...). t ~ U(0, 1), x_t = (1 - t) x0 + t eps,
 * loss = mean |F(x_t, t) - (eps - x0)|^2. Only for FM with velocity prediction (DFL_ERR_ARG
 * otherwise; NULL returned with the message set). */
dfl_tensor *dfl_model_loss_paired(dfl_ctx *ctx, const dfl_model *m, const float *x0, const float *eps, int ndim,
                                  const int *shape, dfl_rng *rng);

/* ---------------------------------------------------------------- schedules and samplers */

/* Time discretizations (shared/reference/diffusion.md 2.1, 1.6). Every grid has steps + 1 entries
 * t[0] > t[1] > ... > t[steps-1] > t[steps] = 0 in the family's own time (t grows toward noise).
 *   RHO         EDM Eq. 5 on the ratio s = sigma/alpha between p->sigma_min and p->sigma_max.
 *   UNIFORM     uniform in t: t_i = t_max (1 - i/N).
 *   LOGUNIFORM  uniform in ln s between sigma_max and sigma_min (k-diffusion "exponential").
 *   LEADING, TRAILING, LINSPACE
 *               DDPM timestep spacings over T = DFL_DDPM_T = 1000 discrete indices (diffusers
 *               `timestep_spacing`, Lin et al. 2023 Table 2; steps_offset 0). Index j in 0..T-1
 *               maps to continuous time t = t_max (j + 1)/T, so j = T-1 is t_max and j = 0 is the
 *               first noise level above data (DDPM's x_1); the data end t = 0 is appended. */
typedef enum {
    DFL_SCHED_RHO = 0,
    DFL_SCHED_UNIFORM = 1,
    DFL_SCHED_LOGUNIFORM = 2,
    DFL_SCHED_LEADING = 3,
    DFL_SCHED_TRAILING = 4,
    DFL_SCHED_LINSPACE = 5
} dfl_schedule_kind;

/* Samplers, all written against (x0_hat, eps_hat) and the process's alpha, sigma (see
 * dfl_sample_run for the algorithm of each and its NFE). */
typedef enum {
    DFL_SAMPLER_EULER = 0,   /* PF-ODE, Euler (order 1) */
    DFL_SAMPLER_HEUN = 1,    /* PF-ODE, Heun, EDM Alg. 1 (order 2) */
    DFL_SAMPLER_RK45 = 2,    /* PF-ODE, Dormand-Prince 5(4), adaptive */
    DFL_SAMPLER_DPMPP2M = 3, /* DPM-Solver++(2M) (Lu et al. 2022), order 2 */
    DFL_SAMPLER_EDM = 4,     /* EDM Alg. 2 stochastic sampler (churn) */
    DFL_SAMPLER_DDPM = 5,    /* DDPM ancestral (Ho et al. 2020 Alg. 2, posterior Eq. 6-7) */
    DFL_SAMPLER_DDIM = 6,    /* DDIM with eta (Song, Meng, Ermon 2021 Eq. 12, 16) */
    DFL_SAMPLER_EM = 7,      /* Euler-Maruyama on the reverse SDE (Song et al. 2021 Eq. 6) */
    DFL_SAMPLER_PC = 8,      /* predictor-corrector, Langevin corrector (Song et al. 2021 Alg. 1-5) */
    DFL_SAMPLER_ALD = 9      /* annealed Langevin dynamics (NCSN, Song and Ermon 2019 Alg. 1) */
} dfl_sampler_kind;

/* Predictors of the pc sampler (Song et al. 2021 sec. 4.2 and App. G; score_sde sampling.py), each
 * one step t -> u of the reverse process written in (alpha, sigma), with D = x0_hat, E = eps_hat,
 * score = -E/sigma_t:
 *   REVERSE_DIFFUSION  x_u = (x + g_tu^2 score)/a_tu + g_tu z, from the exact forward transition
 *                      x_t = a_tu x_u + g_tu noise (score SDE Eq. 47).
 *   EULER_MARUYAMA     the em sampler's step on the reverse SDE (score SDE Eq. 6).
 *   ANCESTRAL          sample q(x_u | x_t, x0 = D), the ddpm sampler's step (DDPM Eq. 6-7; for VE
 *                      this is SMLD's ancestral sampler, score SDE Eq. 46).
 *   NONE               corrector only: x rescaled by a_u/a_t between levels (a no-op when alpha = 1),
 *                      as NCSN annealing; no network evaluation. */
typedef enum {
    DFL_PREDICTOR_REVERSE_DIFFUSION = 0,
    DFL_PREDICTOR_EULER_MARUYAMA = 1,
    DFL_PREDICTOR_ANCESTRAL = 2,
    DFL_PREDICTOR_NONE = 3
} dfl_predictor_kind;

/* Number of discrete DDPM timesteps behind the LEADING/TRAILING/LINSPACE spacings (the same T as
 * the discrete DDPM family's). */
#ifndef DFL_DDPM_T
#define DFL_DDPM_T 1000
#endif

/* Name <-> kind. Parse: DFL_ERR_ARG naming the value and the known names. */
dfl_status dfl_schedule_parse(const char *name, dfl_schedule_kind *k);
/* Sampler name (euler, heun, ddim, ddpm, em, pc, ald, dpmpp2m, rk45, ...) -> kind; DFL_ERR_ARG
 * naming the value and the known names otherwise. */
dfl_status dfl_sampler_parse(const char *name, dfl_sampler_kind *k);
const char *dfl_schedule_name(dfl_schedule_kind k);
const char *dfl_sampler_name(dfl_sampler_kind k);
/* "reverse-diffusion", "euler-maruyama", "ancestral", "none"; DFL_ERR_ARG naming the value. */
dfl_status dfl_predictor_parse(const char *name, dfl_predictor_kind *k);
const char *dfl_predictor_name(dfl_predictor_kind k);

/* DDPM timestep indices for a spacing (diffusers scheduling_ddim.py set_timesteps; reference 1.6,
 * 3.4), descending, N entries into j (no appended end):
 *   LINSPACE  j_i = round(linspace(0, T-1, N))[N-1-i]        (T = 1000, N = 10: 999, 888, ..., 0)
 *   LEADING   j_i = (T div N) (N-1-i)                         (900, 800, ..., 0)
 *   TRAILING  j_i = round(T - i T/N) - 1                      (999, 899, ..., 99)
 * Rounding is half to even, as numpy's. `offset` is diffusers' `steps_offset`, added to LEADING
 * indices only (offset 1: 901, 801, ..., 1); it must be 0 for the other spacings.
 * DFL_ERR_ARG for another kind, T < 1, N < 1 or N > T (more steps than timesteps would repeat
 * indices), a negative offset, or an offset pushing j_0 above T - 1 (reference pitfall 2: leading
 * with N = T and offset 1 would ask for index 1000). */
dfl_status dfl_timestep_indices(dfl_schedule_kind k, int T, int N, int offset, int *j);

/* Time grid for `steps` = N steps into t (N + 1 doubles, t[N] = 0), see dfl_schedule_kind.
 *   rho: s_i = (s_max^(1/rho) + i/(N-1) (s_min^(1/rho) - s_max^(1/rho)))^rho, t_i = t(s_i)
 *        (EDM Eq. 5; for N = 1 only s_max). loguniform: ln s_i linear from ln s_max to ln s_min.
 *   uniform: t_i = t_max (1 - i/N). Spacings: t_i = t_max (j_i + 1)/DFL_DDPM_T.
 * Any schedule works for any family, provided each t_i lies in (0, t_max] and the grid strictly
 * decreases; otherwise DFL_ERR_ARG with a message naming the schedule, family and the range
 * (for example a ratio sigma_max above what the family reaches at t_max). Also DFL_ERR_ARG for
 * steps < 1, rho <= 0 (rho schedule only), steps > DFL_DDPM_T for a spacing, or a steps_offset
 * that dfl_timestep_indices refuses (non-zero offsets are for LEADING only). */
dfl_status dfl_schedule(const dfl_process *p, dfl_schedule_kind k, int steps, double rho, int steps_offset,
                        double *t);

/* Sampler configuration. Fields a sampler does not use are ignored. A zero in a field marked
 * "0: default" selects the default, so a zero-initialised struct with sampler, schedule, steps
 * and rho set is valid; dfl_sample_cfg_default fills every default explicitly. */
typedef struct {
    dfl_sampler_kind sampler;
    dfl_schedule_kind schedule;
    int steps;           /* N >= 1: grid intervals (rk45: the grid only gives start and end) */
    double rho;          /* rho of the EDM schedule (7) */
    double eta;          /* ddim: 0 deterministic .. 1 DDPM-like posterior noise */
    double churn;        /* edm: S_churn >= 0 (0: deterministic EDM Alg. 1) */
    double s_tmin;       /* edm: churn only where S_tmin <= s_i <= S_tmax, in ratio units s = sigma/alpha */
    double s_tmax;       /* edm: 0: default +infinity */
    double s_noise;      /* edm: S_noise > 0; 0: default 1 */
    double snr;          /* pc, ald: Langevin signal-to-noise ratio r; 0: default 0.16 */
    int corrector_steps; /* pc, ald: Langevin steps per grid level; 0: default (pc 1, ald 10) */
    double rtol, atol;   /* rk45 tolerances; 0: default 1e-5 each (score_sde) */
    int max_nfe;         /* rk45: evaluation budget before DFL_ERR_NUMERIC; 0: default 100000 */
    dfl_predictor_kind predictor; /* pc: the predictor (default reverse diffusion) */
    int steps_offset;    /* leading schedule: added to every timestep index (diffusers
                            `steps_offset`; 0 default, Stable Diffusion uses 1) */
    double temperature;  /* dfl_sample: initial noise x_T = T sigma(t[0]) z (a CNF/flow sampled at
                            temperature T, reference/flows.md 1.1); finite >= 0, 0: default 1 */
} dfl_sample_cfg;

/* Every field at its default: heun, rho schedule, 18 steps, rho 7, eta 0, churn 0, S_tmin 0,
 * S_tmax +inf, S_noise 1 (EDM Alg. 2 defaults), snr 0.16 (score_sde VE config), corrector steps 0
 * (the per-sampler default), rtol = atol = 1e-5, max_nfe 100000. */
void dfl_sample_cfg_default(dfl_sample_cfg *c);

/* Checks the values of a configuration (not which options a caller set; the CLI refuses options
 * the chosen sampler does not use): steps >= 1, rho > 0 for the rho schedule, 0 <= eta <= 1,
 * churn finite >= 0, s_tmin >= 0, s_tmax > s_tmin when non-zero, s_noise, snr, rtol, atol finite
 * >= 0 (0: default), 0 <= corrector_steps <= 100000, max_nfe >= 0, sampler and schedule in range.
 * DFL_ERR_ARG with one line naming the option otherwise. */
dfl_status dfl_sample_cfg_check(const dfl_sample_cfg *c);

/* Whether a configuration draws noise, so needs a dfl_rng: edm with churn > 0, ddpm, ddim with
 * eta > 0, em, pc, ald. 1 or 0. */
int dfl_sampler_is_stochastic(const dfl_sample_cfg *c);

/* Denoiser callback: x (n floats, the whole batch) at time t -> x0_hat and eps_hat (n floats
 * each) with x = alpha(t) x0_hat + sigma(t) eps_hat. Returns DFL_OK or an error that samplers
 * pass through. */
typedef dfl_status (*dfl_denoise_fn)(void *user, const float *x, double t, float *x0_hat, float *eps_hat);

/* The generic sampler: runs cfg->sampler on the grid of cfg->schedule from x = x_T (n doubles,
 * nsamp samples of n/nsamp values each, sample-major), writing x_0 into x. Notation: a = alpha,
 * g = sigma, s = g/a (ratio), lambda = ln(a/g), D = x0_hat, E = eps_hat, one step t -> u < t.
 *   euler   x += (u - t) v, v = a'(t) D + g'(t) E (PF-ODE, EDM Eq. 4 in (a, g) form). NFE N.
 *   heun    Euler, then x = x_t + (u - t)(v_t + v_u)/2 unless u = 0 (EDM Alg. 1). NFE 2N - 1.
 *   rk45    Dormand-Prince 5(4) (Dormand and Prince 1980, FSAL) on the PF-ODE from t[0] to
 *           t[N-1] (the smallest positive grid time; first trial step t[0] - t[1]) with error
 *           control RMS_i(err_i/(atol + rtol max(|x_i|, |x_new_i|))) <= 1 and step factor
 *           0.9 err^(-1/5) clamped to [0.2, 5] (Hairer, Norsett, Wanner, Solving ODEs I, II.4);
 *           then the final step to 0 returns a(0) D, with D from the FSAL stage at t[N-1]
 *           (score_sde's ODE sampler with its final denoise, reference 2.5). NFE adaptive.
 *           DFL_ERR_NUMERIC naming the time reached when max_nfe would be exceeded, the step
 *           size underflows (stuck), or the state turns non-finite (diverging).
 *   dpmpp2m h = lambda_u - lambda_t, x = (g_u/g_t) x - a_u (e^-h - 1) D', D' = (1 + 1/2r) D_t -
 *           D_prev/(2r), r = h_prev/h (DPM-Solver++(2M), Lu et al. 2022 Alg. 2; reference 2.3
 *           is its a = 1 form); first order (D' = D_t) on the first step and the final step to
 *           u = 0, which returns a(0) D_t. NFE N.
 *   edm     EDM Alg. 2 in the scaled variable y = x/a, which follows the EDM family in the ratio
 *           s: gamma = min(churn/N, sqrt(2) - 1) where S_tmin <= s_i <= S_tmax, s_hat =
 *           s_i(1 + gamma), y_hat = y + sqrt(s_hat^2 - s_i^2) S_noise z, Heun step in s with
 *           slope E(a y, t(s)); x = a y at the end. Needs a(t[0]) > 0. NFE 2N - 1.
 *   ddpm    sample q(x_u | x_t, x0 = D): a_tu = a_t/a_u, g_tu^2 = g_t^2 - a_tu^2 g_u^2,
 *           mean = a_tu g_u^2/g_t^2 x + a_u g_tu^2/g_t^2 D, var = g_tu^2 g_u^2/g_t^2 (DDPM
 *           Eq. 6-7 for general (a, g)); the last step (u = 0) adds no noise and returns a(0) D. NFE N.
 *   ddim    x = a_u D + sqrt(g_u^2 - c^2) E + c z, c = eta sqrt(var) with var as ddpm (DDIM
 *           Eq. 12 and 16 for general (a, g)). NFE N.
 *   em      reverse SDE dx = [f x - G^2 score] dt + G dw, f = a'/a, G^2 = d(g^2)/dt - 2 f g^2,
 *           score = -E/g (Song et al. 2021 Eq. 6; reference 2.5): x_mean = x + (f x - G^2 score)(u - t),
 *           x = x_mean + G sqrt(t - u) z for grid steps 0..N-2; the final step from t[N-1] to 0
 *           returns the denoised a(0) D. Needs a(t[0]) > 0. NFE N.
 *   pc      at each grid time t_i: corrector_steps Langevin steps x += e score + sqrt(2e) z,
 *           e = 2 a_c (snr |z|/|score|)^2 (norms per sample, averaged over the batch; a_c =
 *           (a(t_i)/a(t_{i+1}))^2, score_sde's discrete alpha_i, 1 when a = 1), then the
 *           reverse-diffusion predictor x = (x + g_tu^2 score)/a_tu + g_tu z (Song et al. 2021
 *           Eq. 47 with f_i, G_i from the exact forward transition u -> t); at t[N-1] the
 *           predictor is replaced by the final denoise a(0) D. cfg->predictor selects another
 *           predictor (dfl_predictor_kind). NFE N (corrector_steps + 1); predictor none:
 *           N corrector_steps + 1.
 *   ald     NCSN annealed Langevin (Song and Ermon 2019 Alg. 1) on y = x/a, whose noise level
 *           is the ratio s: corrector_steps steps x += e score + sqrt(2e) z, e = 2 (snr g_i)^2
 *           (score_sde's AnnealedLangevinDynamics step, reference 2.5), at each of the N grid
 *           levels t[0..N-1], x rescaled by a(t_{i+1})/a(t_i) between levels (y kept; a no-op
 *           when a = 1), then the denoise a(0) D at t[N-1] (NCSNv2's final denoising step,
 *           Song and Ermon 2020). Unadjusted Langevin: biased at finite steps (the test allows
 *           5%). NFE N corrector_steps + 1.
 * The grid end t = 0 is data in every family; where sigma(0) > 0 (score_sde's VE) the samplers
 * that return a(0) D there still return the data estimate. Gaussian data and steps large
 * enough: every sampler reproduces the data's mean and covariance (tests/test_samplers.c).
 * rng: required for stochastic settings (dfl_sampler_is_stochastic), may be NULL otherwise.
 * *nfe (may be NULL) receives the exact number of `den` calls, also on error.
 * Errors: DFL_ERR_ARG (configuration, schedule outside the family's range, nsamp not dividing
 * n, rng missing, a stochastic/scaled sampler started where a(t[0]) = 0), DFL_ERR_NUMERIC
 * (non-finite state or velocity, naming t), DFL_ERR_NOMEM, or the status `den` returned. */
dfl_status dfl_sample_run(const dfl_process *p, const dfl_sample_cfg *cfg, dfl_denoise_fn den, void *user,
                          dfl_rng *rng, double *x, size_t n, int nsamp, int *nfe);

/* dfl_sample_run for deterministic settings on one sample of n values (rng NULL, nsamp 1); kept
 * for the PF-ODE tests. Errors: as dfl_sample_run (DFL_ERR_ARG for a stochastic setting). */
dfl_status dfl_sample_ode(const dfl_process *p, const dfl_sample_cfg *cfg, dfl_denoise_fn den, void *user,
                          double *x, size_t n, int *nfe);

/* Samples a model: x_T = T sigma(t[0]) z (T = cfg->temperature, 1 when 0), z ~ N(0, I) from rng (then the sampler's own noise from
 * the same stream), dfl_sample_run with the model's denoiser (dfl_denoise; the ctx is reset
 * before every network evaluation), result as float into x_out (shape `shape`, ndim dims,
 * shape[0] = number of samples). *nfe receives the count.
 * Errors: DFL_ERR_SHAPE, and those of dfl_sample_run and dfl_denoise. */
dfl_status dfl_sample(dfl_ctx *ctx, const dfl_model *m, const dfl_sample_cfg *cfg, dfl_rng *rng,
                      int ndim, const int *shape, float *x_out, int *nfe);

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

/* Writes every tensor of the parameter groups (F32, keys = their registered names, in group order)
 * and the difflow metadata to a safetensors file, atomically: __metadata__ "format" = "difflow",
 * "format_version" = DFL_FORMAT_VERSION, "step", "arch", "method" and "config" (config_json, the
 * model's full JSON). The one writer behind dfl_model_save and dfl_flow_save.
 * Errors: DFL_ERR_NOMEM, and those of dfl_safetensors_save (DFL_ERR_IO naming the path). */
dfl_status dfl_checkpoint_write(const char *path, dfl_params *const *groups, int ngroups, long step, const char *arch,
                                const char *method, const char *config_json);

/* Saves the network's parameters (F32, keys = module paths) and the model/method config to a
 * safetensors file, atomically. __metadata__ holds "format" = "difflow", "format_version",
 * "step", "arch", "method" and "config" (the full JSON). The config holds the whole process:
 * "method" (family name), "pred", sigma_min, sigma_max, sigma_data, P_mean, P_std, beta_min,
 * beta_d, eps_t, ve_sigma_min, ve_sigma_max, "ddpm_schedule" ("linear"/"cosine"), "ot" (bool);
 * for a DiT also "posenc" (dfl_dit_posenc_name) and, with rope2d, "rope_theta".
 * Errors: those of dfl_safetensors_save. */
dfl_status dfl_model_save(const char *path, const dfl_model *m, const dfl_model_info *info);

/* Builds m->net from the checkpoint's config and loads its weights. Every parameter of the
 * architecture must be present with its exact shape and no other tensor may be present:
 * otherwise DFL_ERR_MISMATCH naming the tensor. DFL_ERR_FORMAT if the file is not a difflow
 * checkpoint (no config) or its config is invalid (unknown method/pred/ddpm_schedule, a pred the
 * family refuses, invalid constants); DFL_ERR_IO/DFL_ERR_FORMAT from the reader. Keys a config
 * lacks (checkpoints written before pred/VP/VE/DDPM existed) keep dfl_process_default's values;
 * a DiT config without "posenc" is the preset's rope2d, an unknown posenc is DFL_ERR_FORMAT. */
dfl_status dfl_model_load(const char *path, dfl_model *m, dfl_model_info *info);

/* The config JSON of a model (malloc'd string; NULL on failure). */
char *dfl_model_config_json(const dfl_model *m, const dfl_model_info *info);

#ifdef __cplusplus
}
#endif
#endif
