/* difflow sample and difflow info. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "difflow/io.h"
#include "difflow/progress.h"

dfl_status cli_sample_chunked(dfl_ctx *ctx, const dfl_model *m, const dfl_sample_cfg *sc, uint64_t seed, int n,
                              int batch, int ndim, const int *shape, float *x, int *nfe)
{
    /* One seeded stream, consumed chunk after chunk: the result depends on the chunk size only
     * through floating-point summation order, never on which noise a sample gets. */
    size_t per = dfl_shape_numel(ndim, shape) / (size_t)shape[0];
    dfl_rng rng;
    dfl_rng_init(&rng, seed);
    for (int i0 = 0; i0 < n; i0 += batch) {
        int b = n - i0 < batch ? n - i0 : batch;
        int cs[4] = {b, shape[1], shape[2], shape[3]};
        dfl_status st = dfl_sample(ctx, m, sc, &rng, ndim, cs, x + (size_t)i0 * per, nfe);
        if (st) return st;
    }
    return DFL_OK;
}

static const char *SAMPLE_USAGE =
    "usage: difflow sample --ckpt FILE [--sampler heun|euler] [--schedule rho|uniform] [--steps N] [-n COUNT]\n"
    "                      [--seed S] [-o FILE]\n"
    "\n"
    "Draws COUNT samples by integrating the probability-flow ODE from noise to data and writes a PNG\n"
    "grid (images, pixel range [-1, 1] mapped to 0..255) or a CSV of points (2-D data). Heun with N steps\n"
    "uses 2N-1 network evaluations (NFE), Euler N. The same checkpoint, flags and seed give\n"
    "byte-identical output.";

int cmd_sample(int argc, char **argv)
{
    const char *ckpt = NULL, *sampler = "heun", *schedule = "rho", *out = NULL;
    int steps = 18, n = 64, batch = 256, threads = 0;
    double rho = 7.0;
    uint64_t seed = 0;
    arg_spec specs[] = {
        {"--ckpt", NULL, ARG_STR, &ckpt, "FILE", "checkpoint (runs/NAME/model.safetensors)", 0},
        {"--sampler", NULL, ARG_STR, &sampler, "NAME", "heun (EDM Alg. 1) or euler", 0},
        {"--schedule", NULL, ARG_STR, &schedule, "NAME", "rho (EDM Eq. 5) or uniform in t", 0},
        {"--steps", NULL, ARG_INT, &steps, "N", "solver steps", 0},
        {"--rho", NULL, ARG_FLOAT, &rho, "X", "rho of the EDM schedule", 0},
        {"-n", "--count", ARG_INT, &n, "COUNT", "number of samples", 0},
        {"--batch", NULL, ARG_INT, &batch, "B", "samples per network call", 0},
        {"--seed", NULL, ARG_U64, &seed, "S", "seed of the initial noise", 0},
        {"-o", "--out", ARG_STR, &out, "FILE", "output .png or .csv (default samples.png, or samples.csv for 2-D)", 0},
        {"--threads", NULL, ARG_INT, &threads, "N", "threads (0: all cores)", 0},
        {NULL, NULL, 0, NULL, NULL, NULL, 0}};
    int pr = args_parse("sample", SAMPLE_USAGE, specs, argc, argv);
    if (pr) return pr > 0 ? 0 : 2;
    dfl_sample_cfg sc = {.steps = steps, .rho = rho};
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
    if (steps < 1 || steps > 100000) {
        fprintf(stderr, "difflow: error: --steps must be in 1..100000 (got %d)\n", steps);
        return 2;
    }
    if (!(rho > 0)) {
        fprintf(stderr, "difflow: error: --rho must be > 0 (got %g)\n", rho);
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
    if (threads < 0) {
        fprintf(stderr, "difflow: error: --threads must be >= 0\n");
        return 2;
    }
    dfl_set_threads(threads);
    dfl_model m;
    dfl_model_info info;
    if (dfl_model_load(ckpt, &m, &info)) {
        fprintf(stderr, "difflow: error: %s (--ckpt)\n", dfl_last_error());
        return 1;
    }
    const dfl_arch_cfg *ac = dfl_net_cfg(m.net);
    int ndim, shape[4];
    size_t per;
    if (ac->arch == DFL_ARCH_UNET) {
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
    int rc = 1, nfe_total = 0;
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
    printf("%d samples from %s (%s, %s, step %ld): sampler %s, schedule %s, %d steps, NFE %d, %.2f s -> %s\n", n, ckpt,
           info.arch, dfl_family_name(m.proc.family), info.step, dfl_sampler_name(sc.sampler),
           dfl_schedule_name(sc.schedule), steps, nfe_total, dfl_now() - t0, out);
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
    dfl_model m;
    dfl_model_info info;
    if (dfl_model_load(ckpt, &m, &info)) {
        fprintf(stderr, "difflow: error: %s (--ckpt)\n", dfl_last_error());
        return 1;
    }
    dfl_params *ps = dfl_net_params(m.net);
    printf("checkpoint:  %s\n", ckpt);
    printf("arch:        %s\n", info.arch);
    printf("method:      %s\n", dfl_family_name(m.proc.family));
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
