/* difflow eval: test log-likelihood of a trained model through its probability-flow ODE
 * (DESIGN section 4 "Likelihood", section 10; reference/diffusion.md 2.6, 1.7; flows.md 1.2). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "difflow/data.h"
#include "difflow/likelihood.h"
#include "difflow/progress.h"
#include "flows.h"

static const char *EVAL_USAGE =
    "usage: difflow eval --ckpt FILE [--metric nll] [--split test|train] [-n COUNT] [--probes K]\n"
    "                    [--rtol X] [--atol X] [--seed S] [--exact|--hutchinson] [--batch B]\n"
    "                    [--t-min T] [--t-max T]\n"
    "\n"
    "Log-likelihood of held-out data under the model's probability-flow ODE (Song et al. ICLR 2021,\n"
    "App. D.2): the state [x, delta] is integrated with dx/dt = v(x, t), d delta/dt = div v from\n"
    "t_min (FM 0, EDM sigma_min) to t_max with adaptive Dormand-Prince RK45, and\n"
    "log p(x) = log p_T(x(T)) + delta. The divergence is exact for dimension <= 16, otherwise\n"
    "Hutchinson's estimate with one Rademacher probe per sample held fixed for the whole solve\n"
    "(--probes K averages K solves). The prior at T is the process marginal there: N(0, I) for\n"
    "flow matching, N(alpha_T mu, alpha_T^2 var + sigma_T^2) per dimension otherwise (mu, var of the\n"
    "training data; a Gaussian approximation whose error is O((var/sigma_T^2)^2) nats/dim).\n"
    "Images (8-bit) are dequantized y = -1 + 2 (v + u)/256, u ~ U[0,1) from --seed, and reported in\n"
    "nats per image and bits/dim (-log p/(D ln 2) + 7); 2-D toy data are continuous (nats, with the\n"
    "true-density bound of the generator, docs/FLOWS.md). The table gives the mean and its standard error.\n"
    "Normalizing-flow checkpoints (nice, realnvp, glow) give their exact log-likelihood by the change of\n"
    "variables on the same points (default -n 1000, images too), images as x = v + u in [0, 256) with the\n"
    "same u: the flow's first layer maps x to [-1, 1) and counts its log-det, so log p is a density on\n"
    "[0, 256)^D and bits/dim = -log p/(D ln 2) with no constant. The ODE options are refused for them.";

/* Seeds of the 2-D "splits": independent draws from the generator. */
#define TOY_TEST_SEED 0x7E57DA7A5EEDull
#define TOY_TRAIN_SEED 0x77A1DA7A5EEDull
#define TOY_STATS_SEED 0x57A75DA7A5EEull
#define TOY_STATS_N 200000

static void mean_se(const double *v, int n, double *mean, double *se)
{
    double m = 0, s = 0;
    for (int i = 0; i < n; i++) m += v[i];
    m /= n;
    for (int i = 0; i < n; i++) s += (v[i] - m) * (v[i] - m);
    *mean = m;
    *se = n > 1 ? sqrt(s / (n - 1) / n) : NAN;
}

/* Per-dimension mean and variance (population) of count rows of dim floats. */
static void column_stats(const float *x, long count, int dim, double *mu, double *var)
{
    for (int d = 0; d < dim; d++) mu[d] = var[d] = 0;
    for (long i = 0; i < count; i++)
        for (int d = 0; d < dim; d++) mu[d] += x[(size_t)i * dim + d];
    for (int d = 0; d < dim; d++) mu[d] /= (double)count;
    for (long i = 0; i < count; i++)
        for (int d = 0; d < dim; d++) {
            double e = x[(size_t)i * dim + d] - mu[d];
            var[d] += e * e;
        }
    for (int d = 0; d < dim; d++) var[d] /= (double)count;
}

/* The points evaluated, shared by every model kind: images: the first n of the split (file
 * order) dequantized y = -1 + 2 (v + u)/256 with u from rng_data (flows.md 1.2), or x = v + u in
 * [0, 256) with the same u when raw (a flow with a dequantization layer); 2-D: n independent
 * draws of the generator `data` seeded from `seed` (test and train use different streams). x is
 * (n, dim); *n shrinks to the split's size. ds keeps the loaded split. 0, or 1 after printing. */
static int eval_points(const char *data, int images, int raw, int test, const char *data_dir, uint64_t seed,
                       dfl_rng *rng_data, int dim, int *n, double *x, dfl_dataset *ds)
{
    if (images) {
        if (dfl_fmnist_load(data_dir ? data_dir : DFL_FMNIST_DIR, test ? 0 : 1, ds)) {
            fprintf(stderr, "difflow: error: %s (install Debian's dataset-fashion-mnist or pass --data-dir)\n", dfl_last_error());
            return 1;
        }
        if (ds->c * ds->h * ds->w != dim) {
            fprintf(stderr, "difflow: error: data has %d values per image, the model %d\n", ds->c * ds->h * ds->w, dim);
            return 1;
        }
        if (*n > ds->n) *n = ds->n;
        if (raw) dfl_flow_dequantize8(ds->pix, (size_t)*n * dim, rng_data, x); /* the first n images, in file order */
        else dfl_dequantize8(ds->pix, (size_t)*n * dim, rng_data, x);
        return 0;
    }
    if (!dfl_toy_known(data)) {
        fprintf(stderr, "difflow: error: checkpoint data '%s' is not a known 2-D generator\n", data);
        return 1;
    }
    if (dfl_toy_dataset(data, seed ^ (test ? TOY_TEST_SEED : TOY_TRAIN_SEED), *n, ds)) {
        fprintf(stderr, "difflow: error: %s\n", dfl_last_error());
        return 1;
    }
    for (size_t q = 0; q < (size_t)*n * dim; q++) x[q] = ds->points[q];
    return 0;
}

/* The result table: mean and standard error of log p and NLL (nats), and bits/dim for images
 * (8-bit data of bin width `width`: 2/256 for [-1, 1), +7; 1 for a flow's [0, 256), no constant) or
 * the true-density bound for 2-D data. 0, or 1 after printing. */
static int print_nll_table(const double *lp, int n, int dim, int images, double width, const char *data)
{
    double lm, lse;
    mean_se(lp, n, &lm, &lse);
    printf("%-24s %12s %10s\n", "metric", "mean", "SE");
    printf("%-24s %12.4f %10.4f\n", images ? "log p (nats/image)" : "log p (nats)", lm, lse);
    printf("%-24s %12.4f %10.4f\n", images ? "NLL (nats/image)" : "NLL (nats)", -lm, lse);
    if (images) {
        double *bpd = malloc((size_t)n * sizeof *bpd);
        if (!bpd) {
            fprintf(stderr, "difflow: error: out of memory\n");
            return 1;
        }
        for (int i = 0; i < n; i++) bpd[i] = dfl_bits_per_dim(lp[i], dim, 8, width * 256.0);
        double bm, bse;
        mean_se(bpd, n, &bm, &bse);
        free(bpd);
        printf("%-24s %12.4f %10.4f\n", width == 1.0 ? "bits/dim (-log2 p / D)" : "bits/dim (8-bit, +7)", bm, bse);
    } else {
        double bound = dfl_toy_true_loglik_bound(data);
        if (!isnan(bound))
            printf("true-density bound %.4f nats (FFJORD generator, docs/FLOWS.md): mean - bound = %+.4f (%+.1f SE)\n", bound,
                   lm - bound, (lm - bound) / lse);
    }
    return 0;
}

/* eval of a normalizing flow: the exact log-likelihood by the change of variables, on the same
 * points as the diffusion path. Flags of the PF-ODE solve are refused. */
static int eval_flow(const char *ckpt, arg_spec *specs, int n, int batch, uint64_t seed, int test, const char *data_dir,
                     int threads)
{
    static const char *ode_only[] = {"--probes", "--rtol", "--atol", "--t-min", "--t-max", "--max-nfe", "--exact",
                                     "--hutchinson"};
    for (size_t i = 0; i < sizeof ode_only / sizeof ode_only[0]; i++)
        if (args_find(specs, ode_only[i])->seen) {
            fprintf(stderr,
                    "difflow: error: %s applies to the PF-ODE likelihood of diffusion and flow-matching checkpoints; %s is a "
                    "normalizing flow with an exact log-likelihood (%s)\n",
                    ode_only[i], ckpt, ode_only[i]);
            return 2;
        }
    dfl_flow *f = NULL;
    dfl_model_info info;
    int orc = cli_open_flow(ckpt, threads, &f, &info);
    if (orc) return orc;
    const dfl_flow_cfg *c = dfl_flow_get_cfg(f);
    int images = c->height > 0, dim = dfl_flow_dim(f);
    if (!args_find(specs, "-n")->seen) n = 1000;
    if (!args_find(specs, "--batch")->seen) batch = images ? 100 : 1000;
    if (n > 1000000) {
        fprintf(stderr, "difflow: error: -n must be in 1..1000000 (got %d)\n", n);
        dfl_flow_free(f);
        return 2;
    }
    int rc = 1;
    double *x = malloc((size_t)n * dim * sizeof *x), *lp = malloc((size_t)n * sizeof *lp);
    float *xb = malloc((size_t)(batch < n ? batch : n) * dim * sizeof *xb);
    dfl_ctx *ctx = dfl_ctx_new();
    dfl_dataset ds;
    memset(&ds, 0, sizeof ds);
    if (!x || !lp || !xb || !ctx) {
        fprintf(stderr, "difflow: error: out of memory\n");
        goto done;
    }
    dfl_rng rng_data;
    dfl_rng_init(&rng_data, seed);
    /* a flow with a dequantization layer models x = v + u in [0, 2^k) itself */
    int raw = c->dequant_bits == 8;
    if (images && c->dequant_bits != 0 && c->dequant_bits != 8) {
        fprintf(stderr, "difflow: error: %s models %d-bit data; %s is 8-bit\n", ckpt, c->dequant_bits, info.data);
        goto done;
    }
    if (eval_points(info.data, images, raw, test, data_dir, seed, &rng_data, dim, &n, x, &ds)) goto done;
    char desc[256];
    cli_flow_describe(c, desc, sizeof desc);
    printf("eval %s: %s flow, step %ld, data %s (%s split, %d %s)\n", ckpt, dfl_flow_kind_name(c->kind), info.step,
           info.data, test ? "test" : "train", n,
           images ? (raw ? "images, dequantized x = v + u in [0, 256)" : "images, dequantized to [-1, 1)") : "points, continuous");
    printf("exact log-likelihood (change of variables through %d layers): %s\n", dfl_flow_nbij(f), desc);
    fflush(stdout);
    double t0 = dfl_now();
    dfl_ctx_set_grad(ctx, 0);
    for (int i0 = 0; i0 < n; i0 += batch) {
        int b = n - i0 < batch ? n - i0 : batch;
        for (size_t q = 0; q < (size_t)b * dim; q++) xb[q] = (float)x[(size_t)i0 * dim + q];
        int shape[4] = {b, c->channels, c->height, c->width};
        dfl_ctx_reset(ctx);
        dfl_tensor *xt = dfl_tensor_wrap(ctx, xb, images ? 4 : 2, shape);
        dfl_tensor *l = xt ? dfl_flow_log_prob(ctx, f, xt) : NULL;
        if (!l) {
            fprintf(stderr, "difflow: error: likelihood of samples %d..%d: %s\n", i0, i0 + b - 1, dfl_last_error());
            goto done;
        }
        for (int i = 0; i < b; i++) lp[i0 + i] = l->data[i];
        if (images && n > batch) fprintf(stderr, "eval: %d/%d images, %.1f s\n", i0 + b, n, dfl_now() - t0);
    }
    double secs = dfl_now() - t0;
    if (print_nll_table(lp, n, dim, images, raw ? 1.0 : 2.0 / 256.0, info.data)) goto done;
    printf("%d forward passes of batch <= %d, %.2f s\n", (n + batch - 1) / batch, batch, secs);
    rc = 0;
done:
    free(x);
    free(lp);
    free(xb);
    dfl_dataset_free(&ds);
    dfl_ctx_free(ctx);
    dfl_flow_free(f);
    return rc;
}

int cmd_eval(int argc, char **argv)
{
    const char *ckpt = NULL, *metric = "nll", *split = "test", *data_dir = NULL;
    int n = -1, probes = 1, exact = 0, hutch = 0, batch = -1, threads = 0;
    long max_nfe = 20000;
    double rtol = 1e-5, atol = 1e-5, tmin = -1, tmax = -1;
    uint64_t seed = 0;
    arg_spec specs[] = {
        {"--ckpt", NULL, ARG_STR, &ckpt, "FILE", "checkpoint (runs/NAME/model.safetensors)", 0},
        {"--metric", NULL, ARG_STR, &metric, "NAME", "nll (negative log-likelihood: nats and bits/dim)", 0},
        {"--split", NULL, ARG_STR, &split, "NAME", "test (default) or train; 2-D data: independent draws", 0},
        {"-n", "--count", ARG_INT, &n, "COUNT", "samples evaluated (default 1000 for 2-D and flows, 64 images)", 0},
        {"--probes", NULL, ARG_INT, &probes, "K", "Hutchinson: average K solves with independent probes", 0},
        {"--rtol", NULL, ARG_FLOAT, &rtol, "X", "RK45 relative tolerance", 0},
        {"--atol", NULL, ARG_FLOAT, &atol, "X", "RK45 absolute tolerance", 0},
        {"--t-min", NULL, ARG_FLOAT, &tmin, "T", "start time (default: FM 0, else t of sigma_min, e.g. EDM 0.002)", 0},
        {"--t-max", NULL, ARG_FLOAT, &tmax, "T", "end time (default: the family's t_max)", 0},
        {"--max-nfe", NULL, ARG_LONG, &max_nfe, "N", "fail a solve needing more evaluations", 0},
        {"--seed", NULL, ARG_U64, &seed, "S", "seed of the 2-D test draws, dequantization and probes", 0},
        {"--exact", NULL, ARG_BOOL, &exact, NULL, "exact divergence (one VJP per dimension)", 0},
        {"--hutchinson", NULL, ARG_BOOL, &hutch, NULL, "Hutchinson divergence (default above 16 dimensions)", 0},
        {"--batch", NULL, ARG_INT, &batch, "B", "samples per ODE solve / flow pass (default 1000 for 2-D, 16 images, flows 100)", 0},
        {"--data-dir", NULL, ARG_STR, &data_dir, "DIR", "Fashion-MNIST directory", 0},
        {"--threads", NULL, ARG_INT, &threads, "N", "threads (0: all cores)", 0},
        {NULL, NULL, 0, NULL, NULL, NULL, 0}};
    int pr = args_parse("eval", EVAL_USAGE, specs, argc, argv);
    if (pr) return pr > 0 ? 0 : 2;
    if (!ckpt) {
        fprintf(stderr, "difflow: error: eval needs --ckpt FILE (e.g. runs/8gaussians-fm/model.safetensors)\n");
        return 2;
    }
    if (!metric || strcmp(metric, "nll") != 0) {
        fprintf(stderr, "difflow: error: unknown --metric '%s' (known: nll)\n", metric);
        return 2;
    }
    int test = !strcmp(split, "test");
    if (!test && strcmp(split, "train") != 0) {
        fprintf(stderr, "difflow: error: --split must be test or train (got '%s')\n", split);
        return 2;
    }
    if (exact && hutch) {
        fprintf(stderr, "difflow: error: --exact and --hutchinson exclude each other\n");
        return 2;
    }
    if (probes < 1 || probes > 10000) {
        fprintf(stderr, "difflow: error: --probes must be in 1..10000 (got %d)\n", probes);
        return 2;
    }
    if (!(rtol > 0) || !(atol > 0) || rtol >= 1 || atol >= 1) {
        fprintf(stderr, "difflow: error: --rtol and --atol must be in (0, 1) (got %g, %g)\n", rtol, atol);
        return 2;
    }
    if (max_nfe < 10) {
        fprintf(stderr, "difflow: error: --max-nfe must be >= 10 (got %ld)\n", max_nfe);
        return 2;
    }
    dfl_model m;
    dfl_model_info info;
    if ((args_find(specs, "-n")->seen && n < 1) || (args_find(specs, "--batch")->seen && batch < 1)) {
        fprintf(stderr, "difflow: error: %s must be >= 1 (got %d)\n", args_find(specs, "-n")->seen && n < 1 ? "-n" : "--batch",
                args_find(specs, "-n")->seen && n < 1 ? n : batch);
        return 2;
    }
    if (dfl_flow_is_checkpoint(ckpt)) return eval_flow(ckpt, specs, n, batch, seed, test, data_dir, threads);
    int orc = cli_open_model(ckpt, threads, &m, &info);
    if (orc) return orc;
    const dfl_arch_cfg *ac = dfl_net_cfg(m.net);
    int images = ac->arch != DFL_ARCH_MLP;
    dfl_model_field mf = {NULL, &m, 0, {0, 0, 0, 0}, 0};
    int dim;
    if (images) {
        mf.ndim = 4;
        mf.shape[1] = ac->channels;
        mf.shape[2] = ac->height;
        mf.shape[3] = ac->width;
        dim = ac->channels * ac->height * ac->width;
    } else {
        mf.ndim = 2;
        mf.shape[1] = ac->dim;
        dim = ac->dim;
    }
    if (!args_find(specs, "-n")->seen) n = images ? 64 : 1000;
    if (!args_find(specs, "--batch")->seen) batch = images ? 16 : 1000;
    if (n < 1 || n > 1000000 || batch < 1) {
        fprintf(stderr, "difflow: error: -n must be in 1..1000000 and --batch >= 1 (got %d, %d)\n", n, batch);
        dfl_net_free(m.net);
        return 2;
    }
    dfl_loglik_opts o;
    dfl_loglik_opts_default(&o);
    o.rtol = rtol;
    o.atol = atol;
    o.max_nfe = max_nfe;
    o.probes = probes;
    o.div = exact ? DFL_DIV_EXACT : hutch ? DFL_DIV_HUTCHINSON : DFL_DIV_AUTO;
    dfl_div_mode mode = o.div == DFL_DIV_AUTO ? (dim <= DFL_DIV_EXACT_MAX_DIM ? DFL_DIV_EXACT : DFL_DIV_HUTCHINSON) : o.div;
    if (mode == DFL_DIV_EXACT) probes = o.probes = 1;
    dfl_loglik_t_range(&m.proc, &o.t_min, &o.t_max);
    if (args_find(specs, "--t-min")->seen && !(tmin >= 0)) {
        fprintf(stderr, "difflow: error: --t-min must be >= 0 (got %g)\n", tmin);
        dfl_net_free(m.net);
        return 2;
    }
    if (args_find(specs, "--t-max")->seen && !(tmax > 0 && tmax <= dfl_t_max(&m.proc) * (1 + 1e-12))) {
        fprintf(stderr, "difflow: error: --t-max must be in (0, %g], the %s family's time range (got %g)\n",
                dfl_t_max(&m.proc), dfl_family_name(m.proc.family), tmax);
        dfl_net_free(m.net);
        return 2;
    }
    if (tmin >= 0) o.t_min = tmin;
    if (tmax >= 0) o.t_max = tmax;
    if (!(o.t_max > o.t_min)) {
        fprintf(stderr, "difflow: error: need --t-min < --t-max (got %g, %g)\n", o.t_min, o.t_max);
        dfl_net_free(m.net);
        return 2;
    }
    double aT = dfl_alpha(&m.proc, o.t_max), sT = dfl_sigma(&m.proc, o.t_max);

    int rc = 1;
    double *x = malloc((size_t)n * dim * sizeof *x), *lp = malloc((size_t)n * sizeof *lp);
    double *mu = calloc((size_t)dim, sizeof *mu), *var = calloc((size_t)dim, sizeof *var);
    dfl_dataset ds, tr;
    memset(&ds, 0, sizeof ds);
    memset(&tr, 0, sizeof tr);
    mf.ctx = dfl_ctx_new();
    if (!x || !lp || !mu || !var || !mf.ctx) {
        fprintf(stderr, "difflow: error: out of memory\n");
        goto done;
    }
    dfl_rng rng_data, rng_probe;
    dfl_rng_init(&rng_data, seed);
    dfl_rng_init(&rng_probe, seed ^ 0x9B0BE5EEDull);
    char prior_desc[160];
    /* data to evaluate, and the training statistics the prior needs when alpha(T) != 0 */
    if (eval_points(info.data, images, 0, test, data_dir, seed, &rng_data, dim, &n, x, &ds)) goto done;
    if (aT != 0.0) {
        if (images) {
            dfl_dataset *src = &ds;
            if (test) {
                if (dfl_fmnist_load(data_dir ? data_dir : DFL_FMNIST_DIR, 1, &tr)) {
                    fprintf(stderr, "difflow: error: %s (training statistics for the prior)\n", dfl_last_error());
                    goto done;
                }
                src = &tr;
            }
            float *f = malloc((size_t)src->n * dim * sizeof *f);
            if (!f) {
                fprintf(stderr, "difflow: error: out of memory\n");
                goto done;
            }
            dfl_images_to_float(src->pix, (size_t)src->n * dim, f);
            column_stats(f, src->n, dim, mu, var);
            free(f);
        } else {
            if (dfl_toy_dataset(info.data, TOY_STATS_SEED, TOY_STATS_N, &tr)) {
                fprintf(stderr, "difflow: error: %s\n", dfl_last_error());
                goto done;
            }
            column_stats(tr.points, tr.n, dim, mu, var);
        }
    }
    if (aT == 0.0)
        snprintf(prior_desc, sizeof prior_desc, "N(0, %g^2 I), exact (alpha(T) = 0)", sT);
    else {
        o.data_mean = mu;
        o.data_var = var;
        snprintf(prior_desc, sizeof prior_desc,
                 "N(%g mu, %g^2 var + %g^2) per dim, mu/var of the training data (Gaussian approx.)", aT, aT, sT);
    }

    printf("eval %s: %s %s model, step %ld, data %s (%s split, %d %s)\n", ckpt, dfl_family_name(m.proc.family),
           info.arch, info.step, info.data, test ? "test" : "train", n,
           images ? "images, dequantized to [-1, 1)" : "points, continuous");
    printf("divergence %s%s, RK45 rtol %g atol %g, t in [%g, %g], prior %s\n",
           mode == DFL_DIV_EXACT ? "exact" : "Hutchinson (Rademacher, fixed per solve)",
           mode == DFL_DIV_EXACT ? "" : (probes > 1 ? ", probes averaged" : ", 1 probe"), rtol, atol, o.t_min, o.t_max,
           prior_desc);
    fflush(stdout);
    double t0 = dfl_now();
    dfl_ode_stats st = {0};
    long solves = 0;
    if (images) mf.max_rows = batch;
    for (int i0 = 0; i0 < n; i0 += batch) {
        int b = n - i0 < batch ? n - i0 : batch;
        if (dfl_pfode_loglik(&m.proc, dfl_model_vjp, &mf, b, dim, x + (size_t)i0 * dim, &o, &rng_probe, lp + i0,
                             NULL, &st)) {
            fprintf(stderr, "difflow: error: likelihood of samples %d..%d: %s\n", i0, i0 + b - 1, dfl_last_error());
            goto done;
        }
        solves += mode == DFL_DIV_EXACT ? 1 : probes;
        if (images) fprintf(stderr, "eval: %d/%d images, %.1f s\n", i0 + b, n, dfl_now() - t0);
    }
    double secs = dfl_now() - t0;
    if (print_nll_table(lp, n, dim, images, 2.0 / 256.0, info.data)) goto done;
    printf("NFE %ld in %ld solves (%.0f per solve), %ld steps, %ld rejected, %.2f s\n", st.nfe, solves,
           (double)st.nfe / (double)(solves ? solves : 1), st.steps, st.rejected, secs);
    rc = 0;
done:
    free(x);
    free(lp);
    free(mu);
    free(var);
    dfl_dataset_free(&ds);
    dfl_dataset_free(&tr);
    dfl_ctx_free(mf.ctx);
    dfl_net_free(m.net);
    return rc;
}
