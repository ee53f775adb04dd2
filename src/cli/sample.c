/* difflow sample and difflow info. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "flows.h"
#include "difflow/io.h"
#include "difflow/progress.h"

int cli_open_model(const char *ckpt, int threads, dfl_model *m, dfl_model_info *info)
{
    if (threads < 0) {
        fprintf(stderr, "difflow: error: --threads must be >= 0\n");
        return 2;
    }
    dfl_set_threads(threads);
    if (dfl_model_load(ckpt, m, info)) {
        fprintf(stderr, "difflow: error: %s (--ckpt)\n", dfl_last_error());
        return 1;
    }
    return 0;
}

dfl_status cli_sample_chunked(dfl_ctx *ctx, const dfl_model *m, const dfl_sample_cfg *sc, uint64_t seed, int n,
                              int batch, int ndim, const int *shape, float *x, int *nfe)
{
    /* One seeded stream, consumed chunk after chunk: the result depends on the chunk size only
     * through floating-point summation order, never on which noise a sample gets. */
    size_t per = dfl_shape_numel(ndim, shape) / (size_t)shape[0];
    dfl_rng rng;
    dfl_rng_init(&rng, seed);
    if (nfe) *nfe = 0;
    for (int i0 = 0; i0 < n; i0 += batch) {
        int b = n - i0 < batch ? n - i0 : batch, k = 0;
        int cs[4] = {b, shape[1], shape[2], shape[3]};
        dfl_status st = dfl_sample(ctx, m, sc, &rng, ndim, cs, x + (size_t)i0 * per, &k);
        /* NFE per sample: the same for every chunk, except rk45's adaptive count (the largest). */
        if (nfe && k > *nfe) *nfe = k;
        if (st) return st;
    }
    return DFL_OK;
}

static const char *SAMPLE_USAGE =
    "usage: difflow sample --ckpt FILE [--sampler NAME] [--schedule NAME] [--steps N] [-n COUNT] [--seed S]\n"
    "                      [-o FILE] [sampler options]\n"
    "\n"
    "Draws COUNT samples from noise to data and writes a PNG grid (images, pixel range [-1, 1] mapped\n"
    "to 0..255) or a CSV of points (2-D data). Every sampler works with every method (family).\n"
    "\n"
    "Samplers (NFE = network evaluations for N steps):\n"
    "  euler    PF-ODE, Euler (N)                   heun     PF-ODE, EDM Alg. 1 (2N-1)\n"
    "  rk45     PF-ODE, Dormand-Prince, adaptive    dpmpp2m  DPM-Solver++(2M) (N)\n"
    "  edm      EDM Alg. 2, --churn (2N-1)          ddpm     ancestral (N)\n"
    "  ddim     DDIM, --eta (N)                     em       Euler-Maruyama, reverse SDE (N)\n"
    "  pc       predictor-corrector, Langevin corrector, --predictor (N (corrector steps + 1))\n"
    "  ald      annealed Langevin dynamics, NCSN (N corrector steps + 1)\n"
    "Schedules: rho (EDM Eq. 5), uniform (in t), loguniform (in ln sigma/alpha), leading, trailing,\n"
    "linspace (DDPM timestep spacings over T = 1000, step j at t = t_max (j+1)/1000).\n"
    "Options that a sampler or schedule does not use are refused. The same checkpoint, flags and\n"
    "seed give byte-identical output.\n"
    "Normalizing flows (nice, realnvp, glow checkpoints): one inverse pass from the base noise drawn\n"
    "at --temperature T (z ~ T N(0, I), or T times a logistic for nice); only -n, --batch, --seed,\n"
    "--temperature, -o and --threads apply. For diffusion and flow-matching checkpoints (cnf included)\n"
    "--temperature T starts a deterministic sampler at x_T = T sigma(t_max) z (a CNF at temperature T);\n"
    "stochastic samplers refuse it, their added noise would undo it.";

int cmd_sample(int argc, char **argv)
{
    const char *ckpt = NULL, *sampler = "heun", *schedule = "rho", *out = NULL;
    int steps = 18, n = 64, batch = 256, threads = 0, corrector_steps = 0, steps_offset = 0, max_nfe = 0;
    const char *predictor = "reverse-diffusion";
    dfl_sample_cfg dc;
    dfl_sample_cfg_default(&dc);
    double rho = 7.0, eta = dc.eta, churn = dc.churn, s_tmin = dc.s_tmin, s_tmax = dc.s_tmax, s_noise = dc.s_noise;
    double snr = dc.snr, rtol = dc.rtol, atol = dc.atol;
    uint64_t seed = 0;
    double temperature = 1.0;
    arg_spec specs[] = {
        {"--ckpt", NULL, ARG_STR, &ckpt, "FILE", "checkpoint (runs/NAME/model.safetensors)", 0},
        {"--sampler", NULL, ARG_STR, &sampler, "NAME",
         "euler, heun, rk45, dpmpp2m, edm, ddpm, ddim, em, pc or ald (default heun)", 0},
        {"--schedule", NULL, ARG_STR, &schedule, "NAME", "rho, uniform, loguniform, leading, trailing or linspace", 0},
        {"--steps", NULL, ARG_INT, &steps, "N", "solver steps (rk45: the grid's start and end only)", 0},
        {"--rho", NULL, ARG_FLOAT, &rho, "X", "rho of the EDM schedule (--schedule rho)", 0},
        {"--eta", NULL, ARG_FLOAT, &eta, "X", "ddim: noise, 0 (deterministic) .. 1 (DDPM-like)", 0},
        {"--churn", NULL, ARG_FLOAT, &churn, "X", "edm: S_churn (0: deterministic)", 0},
        {"--s-tmin", NULL, ARG_FLOAT, &s_tmin, "X", "edm: churn only for sigma/alpha >= X", 0},
        {"--s-tmax", NULL, ARG_FLOAT, &s_tmax, "X", "edm: churn only for sigma/alpha <= X (default inf)", 0},
        {"--s-noise", NULL, ARG_FLOAT, &s_noise, "X", "edm: S_noise (1)", 0},
        {"--snr", NULL, ARG_FLOAT, &snr, "X", "pc, ald: Langevin signal-to-noise ratio (0.16)", 0},
        {"--corrector-steps", NULL, ARG_INT, &corrector_steps, "M", "pc, ald: Langevin steps per level (default: pc 1, ald 10)",
         0},
        {"--predictor", NULL, ARG_STR, &predictor, "NAME",
         "pc: reverse-diffusion, euler-maruyama, ancestral or none (corrector only)", 0},
        {"--steps-offset", NULL, ARG_INT, &steps_offset, "K", "leading: add K to every timestep index (diffusers steps_offset)", 0},
        {"--rtol", NULL, ARG_FLOAT, &rtol, "X", "rk45: relative tolerance (1e-5)", 0},
        {"--max-nfe", NULL, ARG_INT, &max_nfe, "N", "rk45: stop with an error after N evaluations (default 100000)", 0},
        {"--atol", NULL, ARG_FLOAT, &atol, "X", "rk45: absolute tolerance (1e-5)", 0},
        {"-n", "--count", ARG_INT, &n, "COUNT", "number of samples", 0},
        {"--batch", NULL, ARG_INT, &batch, "B", "samples per network call", 0},
        {"--seed", NULL, ARG_U64, &seed, "S", "seed of the initial noise and the sampler's noise", 0},
        {"-o", "--out", ARG_STR, &out, "FILE", "output .png or .csv (default samples.png, or samples.csv for 2-D)", 0},
        {"--temperature", NULL, ARG_FLOAT, &temperature, "T", "initial noise z ~ T N(0, I): flows; deterministic samplers (T > 0; default 1)", 0},
        {"--threads", NULL, ARG_INT, &threads, "N", "threads (0: all cores)", 0},
        {NULL, NULL, 0, NULL, NULL, NULL, 0}};
    int pr = args_parse("sample", SAMPLE_USAGE, specs, argc, argv);
    if (pr) return pr > 0 ? 0 : 2;
    dfl_sample_cfg sc = dc;
    if (!ckpt) {
        fprintf(stderr, "difflow: error: sample needs --ckpt FILE (e.g. runs/fashion-mnist-fm/model.safetensors)\n");
        return 2;
    }
    if (dfl_sampler_parse(sampler, &sc.sampler)) {
        fprintf(stderr, "difflow: error: %s (--sampler)\n", dfl_last_error());
        return 2;
    }
    if (dfl_schedule_parse(schedule, &sc.schedule)) {
        fprintf(stderr, "difflow: error: %s (--schedule)\n", dfl_last_error());
        return 2;
    }
    /* Options the chosen sampler or schedule does not use: refused before any work. */
    static const struct {
        const char *flag;
        unsigned samplers; /* bit per dfl_sampler_kind that uses it */
        const char *who;
    } owners[] = {{"--eta", 1u << DFL_SAMPLER_DDIM, "ddim"},
                  {"--churn", 1u << DFL_SAMPLER_EDM, "edm"},
                  {"--s-tmin", 1u << DFL_SAMPLER_EDM, "edm"},
                  {"--s-tmax", 1u << DFL_SAMPLER_EDM, "edm"},
                  {"--s-noise", 1u << DFL_SAMPLER_EDM, "edm"},
                  {"--snr", 1u << DFL_SAMPLER_PC | 1u << DFL_SAMPLER_ALD, "pc and ald"},
                  {"--corrector-steps", 1u << DFL_SAMPLER_PC | 1u << DFL_SAMPLER_ALD, "pc and ald"},
                  {"--predictor", 1u << DFL_SAMPLER_PC, "pc"},
                  {"--max-nfe", 1u << DFL_SAMPLER_RK45, "rk45"},
                  {"--rtol", 1u << DFL_SAMPLER_RK45, "rk45"},
                  {"--atol", 1u << DFL_SAMPLER_RK45, "rk45"}};
    for (size_t i = 0; i < sizeof owners / sizeof owners[0]; i++)
        if (args_find(specs, owners[i].flag)->seen && !(owners[i].samplers & (1u << sc.sampler))) {
            fprintf(stderr, "difflow: error: %s applies only to --sampler %s, not %s (%s)\n", owners[i].flag,
                    owners[i].who, dfl_sampler_name(sc.sampler), owners[i].flag);
            return 2;
        }
    if (args_find(specs, "--rho")->seen && sc.schedule != DFL_SCHED_RHO) {
        fprintf(stderr, "difflow: error: --rho applies only to --schedule rho, not %s (--rho)\n",
                dfl_schedule_name(sc.schedule));
        return 2;
    }
    if (args_find(specs, "--steps-offset")->seen && sc.schedule != DFL_SCHED_LEADING) {
        fprintf(stderr, "difflow: error: --steps-offset applies only to --schedule leading, not %s (--steps-offset)\n",
                dfl_schedule_name(sc.schedule));
        return 2;
    }
    if (dfl_predictor_parse(predictor, &sc.predictor)) {
        fprintf(stderr, "difflow: error: %s (--predictor)\n", dfl_last_error());
        return 2;
    }
    if (args_find(specs, "--max-nfe")->seen && max_nfe < 1) {
        fprintf(stderr, "difflow: error: --max-nfe must be >= 1 (got %d)\n", max_nfe);
        return 2;
    }
    if (steps_offset < 0) {
        fprintf(stderr, "difflow: error: --steps-offset must be >= 0 (got %d)\n", steps_offset);
        return 2;
    }
    if (steps < 1 || steps > 100000) {
        fprintf(stderr, "difflow: error: --steps must be in 1..100000 (got %d)\n", steps);
        return 2;
    }
    if (!(rho > 0)) {
        fprintf(stderr, "difflow: error: --rho must be > 0 (got %g)\n", rho);
        return 2;
    }
    if (args_find(specs, "--s-noise")->seen && !(s_noise > 0)) {
        fprintf(stderr, "difflow: error: --s-noise must be > 0 (got %g)\n", s_noise);
        return 2;
    }
    if (args_find(specs, "--snr")->seen && !(snr > 0)) {
        fprintf(stderr, "difflow: error: --snr must be > 0 (got %g)\n", snr);
        return 2;
    }
    if (args_find(specs, "--corrector-steps")->seen && corrector_steps < 1) {
        fprintf(stderr, "difflow: error: --corrector-steps must be >= 1 (got %d)\n", corrector_steps);
        return 2;
    }
    if ((args_find(specs, "--rtol")->seen && !(rtol > 0)) || (args_find(specs, "--atol")->seen && !(atol > 0))) {
        fprintf(stderr, "difflow: error: --rtol and --atol must be > 0 (got %g, %g)\n", rtol, atol);
        return 2;
    }
    if ((sc.schedule == DFL_SCHED_LEADING || sc.schedule == DFL_SCHED_TRAILING || sc.schedule == DFL_SCHED_LINSPACE) &&
        steps > DFL_DDPM_T) {
        fprintf(stderr, "difflow: error: --steps must be <= %d with --schedule %s (got %d)\n", DFL_DDPM_T,
                dfl_schedule_name(sc.schedule), steps);
        return 2;
    }
    sc.steps = steps;
    sc.rho = rho;
    sc.eta = eta;
    sc.churn = churn;
    sc.s_tmin = s_tmin;
    sc.s_tmax = s_tmax;
    sc.s_noise = s_noise;
    sc.snr = snr;
    sc.corrector_steps = corrector_steps;
    sc.rtol = rtol;
    sc.atol = atol;
    sc.steps_offset = steps_offset;
    if (max_nfe > 0) sc.max_nfe = max_nfe;
    if (dfl_sample_cfg_check(&sc)) {
        fprintf(stderr, "difflow: error: %s\n", dfl_last_error());
        return 2;
    }
    if (n < 1 || n > 100000) {
        fprintf(stderr, "difflow: error: -n must be in 1..100000 (got %d)\n", n);
        return 2;
    }
    if (batch < 1) {
        fprintf(stderr, "difflow: error: --batch must be >= 1 (got %d)\n", batch);
        return 2;
    }
    /* Normalizing flows: one inverse pass; the sampler options do not apply (refused there). */
    if (dfl_flow_is_checkpoint(ckpt)) return cli_flow_sample_cmd(ckpt, specs, n, batch, seed, temperature, out, threads);
    if (!(temperature > 0)) {
        fprintf(stderr, "difflow: error: --temperature must be a finite number > 0 (got %g)\n", temperature);
        return 2;
    }
    sc.temperature = temperature; /* x_T = T sigma(t_max) z */
    if (temperature != 1.0 && dfl_sampler_is_stochastic(&sc)) {
        fprintf(stderr, "difflow: error: --temperature needs a deterministic sampler (euler, heun, rk45, dpmpp2m, ddim --eta 0, edm --churn 0): the noise --sampler %s adds would undo it (--temperature)\n",
                dfl_sampler_name(sc.sampler));
        return 2;
    }
    dfl_model m;
    dfl_model_info info;
    int orc = cli_open_model(ckpt, threads, &m, &info);
    if (orc) return orc;
    const dfl_arch_cfg *ac = dfl_net_cfg(m.net);
    int ndim, shape[4];
    size_t per;
    if (ac->arch != DFL_ARCH_MLP) {
        ndim = 4;
        shape[1] = ac->channels;
        shape[2] = ac->height;
        shape[3] = ac->width;
        per = (size_t)ac->channels * ac->height * ac->width;
    } else {
        ndim = 2;
        shape[1] = ac->dim;
        shape[2] = shape[3] = 1;
        per = (size_t)ac->dim;
    }
    /* The schedule against this model's family, before any work (e.g. a ratio range the family
     * does not reach, or a sampler that needs alpha > 0 at the grid's start). */
    {
        double *tg = malloc((size_t)(steps + 1) * sizeof *tg);
        dfl_status st = tg ? dfl_schedule(&m.proc, sc.schedule, steps, rho, sc.steps_offset, tg) : DFL_ERR_NOMEM;
        int need_alpha = sc.sampler == DFL_SAMPLER_EDM || sc.sampler == DFL_SAMPLER_EM || sc.sampler == DFL_SAMPLER_PC ||
                         sc.sampler == DFL_SAMPLER_ALD;
        int bad_alpha = !st && need_alpha && !(dfl_alpha(&m.proc, tg[0]) > 0);
        free(tg);
        if (st) {
            const char *e = st == DFL_ERR_NOMEM ? "out of memory" : dfl_last_error();
            fprintf(stderr, "difflow: error: %s (%s)\n", e, strstr(e, "offset") ? "--steps-offset" : "--schedule");
            dfl_net_free(m.net);
            return 2;
        }
        if (bad_alpha) {
            fprintf(stderr,
                    "difflow: error: --sampler %s cannot start at t_max of the %s family, where alpha = 0; use "
                    "--schedule rho or loguniform (--schedule)\n",
                    dfl_sampler_name(sc.sampler), dfl_family_name(m.proc.family));
            dfl_net_free(m.net);
            return 2;
        }
    }
    if (!out) out = ndim == 2 ? "samples.csv" : "samples.png";
    size_t ol = strlen(out);
    int png = ol > 4 && strcmp(out + ol - 4, ".png") == 0, csv = ol > 4 && strcmp(out + ol - 4, ".csv") == 0;
    if (!png && !(csv && ndim == 2)) {
        fprintf(stderr, "difflow: error: output '%s' must end in %s (-o)\n", out, ndim == 2 ? ".csv or .png" : ".png");
        dfl_net_free(m.net);
        return 2;
    }
    float *x = malloc((size_t)n * per * sizeof *x);
    dfl_ctx *ctx = dfl_ctx_new();
    int rc = 1, nfe_total = 0; /* NFE per sample (rk45: the largest over the chunks) */
    shape[0] = n;
    double t0 = dfl_now();
    if (!x || !ctx) {
        fprintf(stderr, "difflow: error: out of memory\n");
        goto done;
    }
    if (cli_sample_chunked(ctx, &m, &sc, seed, n, batch, ndim, shape, x, &nfe_total)) {
        fprintf(stderr, "difflow: error: sampling: %s\n", dfl_last_error());
        goto done;
    }
    if (cli_write_samples(out, x, n, ndim, (int[4]){n, shape[1], shape[2], shape[3]})) {
        fprintf(stderr, "difflow: error: %s (-o)\n", dfl_last_error());
        goto done;
    }
    printf("%d samples from %s (%s, %s, step %ld): sampler %s, schedule %s, %d steps, NFE %d, temperature %g, %.2f s -> %s\n",
           n, ckpt, info.arch, dfl_family_name(m.proc.family), info.step, dfl_sampler_name(sc.sampler),
           dfl_schedule_name(sc.schedule), steps, nfe_total, temperature, dfl_now() - t0, out);
    rc = 0;
done:
    free(x);
    dfl_ctx_free(ctx);
    dfl_net_free(m.net);
    return rc;
}

static const char *INFO_USAGE =
    "usage: difflow info --ckpt FILE\n"
    "\n"
    "Prints a checkpoint's architecture, method, dataset, step, parameter count and tensors.";

int cmd_info(int argc, char **argv)
{
    const char *ckpt = NULL;
    int tensors = 0;
    arg_spec specs[] = {{"--ckpt", NULL, ARG_STR, &ckpt, "FILE", "checkpoint", 0},
                        {"--tensors", NULL, ARG_BOOL, &tensors, NULL, "list every tensor with its shape", 0},
                        {NULL, NULL, 0, NULL, NULL, NULL, 0}};
    int pr = args_parse("info", INFO_USAGE, specs, argc, argv);
    if (pr) return pr > 0 ? 0 : 2;
    if (!ckpt) {
        fprintf(stderr, "difflow: error: info needs --ckpt FILE\n");
        return 2;
    }
    if (dfl_flow_is_checkpoint(ckpt)) return cli_flow_info(ckpt, tensors);
    dfl_model m;
    dfl_model_info info;
    if (dfl_model_load(ckpt, &m, &info)) {
        fprintf(stderr, "difflow: error: %s (--ckpt)\n", dfl_last_error());
        return 1;
    }
    dfl_params *ps = dfl_net_params(m.net);
    printf("checkpoint:  %s\n", ckpt);
    printf("arch:        %s\n", info.arch);
    const dfl_arch_cfg *ac = dfl_net_cfg(m.net);
    if (ac->arch == DFL_ARCH_DIT) {
        if (ac->posenc == DFL_DIT_POS_ROPE2D) printf("posenc:      rope2d (2-D axial RoPE, base %g)\n", ac->rope_theta);
        else printf("posenc:      %s\n", dfl_dit_posenc_name(ac->posenc));
    }
    printf("method:      %s (pred %s%s)\n", dfl_family_name(m.proc.family), dfl_pred_name(m.proc.pred),
           m.proc.fm_ot ? ", minibatch OT" : "");
    printf("data:        %s\n", info.data);
    printf("step:        %ld\n", info.step);
    printf("seed:        %" PRIu64 "\n", info.seed);
    printf("parameters:  %zu in %d tensors\n", dfl_params_count(ps), ps->n);
    if (m.proc.family == DFL_FAMILY_EDM)
        printf("edm:         sigma_data %g, sigma %g..%g, P_mean %g, P_std %g\n", m.proc.sigma_data, m.proc.sigma_min,
               m.proc.sigma_max, m.proc.P_mean, m.proc.P_std);
    if (tensors)
        for (int i = 0; i < ps->n; i++) {
            char b[64];
            printf("  %-40s %s\n", ps->p[i].name, dfl_shape_str(ps->p[i].t, b, sizeof b));
        }
    dfl_net_free(m.net);
    return 0;
}
