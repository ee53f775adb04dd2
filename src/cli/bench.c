/* difflow bench: training steps/s and sampling images/s of a reference configuration (DESIGN
 * section 13), on random data of the right shape, for comparison with bench/peers/torch_bench.py. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "cli.h"
#include "difflow/flops.h"
#include "difflow/optim.h"
#include "difflow/progress.h"

static const char *BENCH_USAGE =
    "usage: difflow bench [--preset toy-mlp|fmnist-unet-s|fmnist-dit-s] [--steps K] [--warmup W] [--batch B] [--threads N]\n"
    "                     [--sample] [--peak-gflops X] [--json]\n"
    "\n"
    "Times K training steps (flow-matching loss, Adam) after W warmup steps on random data and prints\n"
    "steps/s, samples/s and peak resident memory. --sample instead times Heun sampling with 35 NFE\n"
    "(18 steps, uniform t) at batch 256 (images/s). Both also print the achieved GFLOP/s from the\n"
    "analytic count of include/difflow/flops.h (matrix products only; training = 3 x forward per\n"
    "sample, sampling = NFE x forward per image) and, given --peak-gflops (bench/sgemm's peak), the\n"
    "fraction of that peak. Compare with bench/compare, which runs the same configuration in PyTorch\n"
    "in the same run.";

static double peak_rss_mib(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_maxrss / 1024.0;
}

/* ", 41.2% of the 120.0 GFLOP/s sgemm peak" and its JSON field, or empty strings without a peak. */
static void peak_fraction(double gflops, double peak, char *txt, size_t ntxt, char *js, size_t njs)
{
    if (peak <= 0) return;
    snprintf(txt, ntxt, ", %.1f%% of the %.1f GFLOP/s sgemm peak", 100.0 * gflops / peak, peak);
    snprintf(js, njs, ",\"peak_gflops\":%.2f,\"fraction_of_peak\":%.4f", peak, gflops / peak);
}

int cmd_bench(int argc, char **argv)
{
    const char *preset = "toy-mlp";
    int steps = -1, warmup = -1, batch = -1, threads = 0, sample = 0, json = 0;
    double peak = 0;
    uint64_t seed = 0;
    arg_spec specs[] = {
        {"--preset", NULL, ARG_STR, &preset, "NAME", "toy-mlp, fmnist-unet-s or fmnist-dit-s", 0},
        {"--steps", NULL, ARG_INT, &steps, "K", "timed steps (default 200 toy-mlp, 10 images; sampling: 1 run)", 0},
        {"--warmup", NULL, ARG_INT, &warmup, "W", "untimed warmup steps (default 20 / 2)", 0},
        {"--batch", NULL, ARG_INT, &batch, "B", "batch (default 512 toy-mlp, 64 images, 256 sampling)", 0},
        {"--threads", NULL, ARG_INT, &threads, "N", "threads (0: all cores)", 0},
        {"--sample", NULL, ARG_BOOL, &sample, NULL, "time sampling instead of training", 0},
        {"--peak-gflops", NULL, ARG_FLOAT, &peak, "X", "sgemm peak GFLOP/s (bench/sgemm) for the fraction-of-peak figure; 0: none (default)", 0},
        {"--json", NULL, ARG_BOOL, &json, NULL, "print one JSON line", 0},
        {"--seed", NULL, ARG_U64, &seed, "S", "seed", 0},
        {NULL, NULL, 0, NULL, NULL, NULL, 0}};
    int pr = args_parse("bench", BENCH_USAGE, specs, argc, argv);
    if (pr) return pr > 0 ? 0 : 2;
    dfl_arch_cfg ac;
    if (dfl_arch_preset(preset, &ac)) {
        fprintf(stderr, "difflow: error: %s (--preset)\n", dfl_last_error());
        return 2;
    }
    int img = ac.arch != DFL_ARCH_MLP;
    if (!args_find(specs, "--steps")->seen) steps = sample ? 1 : img ? 10 : 200;
    if (!args_find(specs, "--warmup")->seen) warmup = sample ? 0 : img ? 2 : 20;
    if (!args_find(specs, "--batch")->seen) batch = sample ? 256 : img ? 64 : 512;
    const char *bad = steps < 1 ? "--steps must be >= 1" : batch < 1 ? "--batch must be >= 1"
                    : warmup < 0 ? "--warmup must be >= 0" : threads < 0 ? "--threads must be >= 0"
                    : !(peak >= 0) ? "--peak-gflops must be >= 0" : NULL;
    if (bad) {
        fprintf(stderr, "difflow: error: %s\n", bad);
        return 2;
    }
    dfl_set_threads(threads);
    dfl_rng rng;
    dfl_rng_init(&rng, seed);
    dfl_model m;
    dfl_process_default(&m.proc, DFL_FAMILY_FM);
    m.net = dfl_net_new(&ac, &rng);
    dfl_ctx *ctx = dfl_ctx_new();
    int ndim = img ? 4 : 2;
    int shape[4] = {batch, img ? ac.channels : ac.dim, img ? ac.height : 1, img ? ac.width : 1};
    size_t n = dfl_shape_numel(ndim, shape);
    float *x = malloc(n * sizeof *x);
    dfl_adam opt;
    memset(&opt, 0, sizeof opt);
    dfl_adam_cfg acfg = {.lr = img ? 2e-4f : 1e-3f, .beta1 = 0.9f, .beta2 = 0.999f, .eps = 1e-8f};
    if (!m.net || !ctx || !x || dfl_adam_init(&opt, dfl_net_params(m.net), &acfg)) {
        fprintf(stderr, "difflow: error: %s\n", dfl_last_error());
        return 1;
    }
    for (size_t i = 0; i < n; i++) x[i] = img ? 2.f * dfl_rng_uniform(&rng) - 1.f : dfl_rng_normal(&rng);
    double fwd_flops = dfl_arch_flops_fwd(&ac), gflops = 0;
    char frac[64] = "", jfrac[64] = "";
    double rate = 0;
    const char *unit;
    int rc = 0;
    if (!sample) {
        double t0 = 0;
        for (int s = 0; s < warmup + steps; s++) {
            if (s == warmup) t0 = dfl_now();
            dfl_ctx_reset(ctx);
            dfl_params_zero_grad(dfl_net_params(m.net));
            dfl_tensor *loss = dfl_model_loss(ctx, &m, x, ndim, shape, &rng);
            if (!loss || dfl_backward(ctx, loss) || dfl_adam_step(&opt, NULL)) {
                fprintf(stderr, "difflow: error: %s\n", dfl_last_error());
                rc = 1;
                goto done;
            }
        }
        rate = steps / (dfl_now() - t0);
        unit = "steps/s";
        gflops = rate * batch * 3.0 * fwd_flops * 1e-9;
        peak_fraction(gflops, peak, frac, sizeof frac, jfrac, sizeof jfrac);
        if (json)
            printf("{\"impl\":\"difflow\",\"preset\":\"%s\",\"mode\":\"train\",\"threads\":%d,\"batch\":%d,\"steps_per_s\":%.4f,"
                   "\"samples_per_s\":%.2f,\"gflops\":%.2f,\"train_flops_per_sample\":%.6g%s,\"peak_rss_mib\":%.1f}\n",
                   preset, dfl_get_threads(), batch, rate, rate * batch, gflops, 3.0 * fwd_flops, jfrac, peak_rss_mib());
        else
            printf("difflow %s train: %.3f %s, %.1f samples/s (batch %d, %d threads), %.2f GFLOP/s%s, peak RSS %.1f MiB\n",
                   preset, rate, unit, rate * batch, batch, dfl_get_threads(), gflops, frac, peak_rss_mib());
    } else {
        dfl_sample_cfg sc = {.sampler = DFL_SAMPLER_HEUN, .schedule = DFL_SCHED_UNIFORM, .steps = 18, .rho = 7};
        int nfe = 0;
        double t0 = dfl_now();
        for (int s = 0; s < steps; s++)
            if (dfl_sample(ctx, &m, &sc, &rng, ndim, shape, x, &nfe)) {
                fprintf(stderr, "difflow: error: %s\n", dfl_last_error());
                rc = 1;
                goto done;
            }
        rate = (double)steps * batch / (dfl_now() - t0);
        gflops = rate * nfe * fwd_flops * 1e-9;
        peak_fraction(gflops, peak, frac, sizeof frac, jfrac, sizeof jfrac);
        if (json)
            printf("{\"impl\":\"difflow\",\"preset\":\"%s\",\"mode\":\"sample\",\"threads\":%d,\"batch\":%d,\"nfe\":%d,"
                   "\"images_per_s\":%.3f,\"gflops\":%.2f,\"fwd_flops_per_sample\":%.6g%s,\"peak_rss_mib\":%.1f}\n",
                   preset, dfl_get_threads(), batch, nfe, rate, gflops, fwd_flops, jfrac, peak_rss_mib());
        else
            printf("difflow %s sample: %.2f samples/s (Heun, %d NFE, batch %d, %d threads), %.2f GFLOP/s%s, peak RSS %.1f MiB\n",
                   preset, rate, nfe, batch, dfl_get_threads(), gflops, frac, peak_rss_mib());
    }
done:
    free(x);
    dfl_adam_free(&opt);
    dfl_net_free(m.net);
    dfl_ctx_free(ctx);
    return rc;
}
