/* Normalizing flows on the command line (issue 4): the flow flags of difflow train, the flow
 * trainee of the shared training loop (src/cli/trainee.h), and difflow sample / info for flow
 * checkpoints. eval's flow path lives in eval.c next to the diffusion one (same data, same table). */
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "flows.h"
#include "difflow/io.h"
#include "difflow/ops.h"
#include "difflow/progress.h"
#include "trainee.h"

/* ---------------------------------------------------------------- flags */

int cli_flow_method(const char *method)
{
    dfl_flow_kind k;
    return method && (!strcmp(method, "nice") || !strcmp(method, "realnvp") || !strcmp(method, "glow")) &&
           dfl_flow_kind_parse(method, &k) == DFL_OK;
}

void cli_flow_flags_default(cli_flow_flags *ff)
{
    ff->couplings = ff->hidden = ff->depth = ff->width = ff->scales = ff->blocks = ff->levels = ff->steps_per_level = -1;
    ff->learn_top = -1;
    ff->coupling = ff->invconv = NULL;
    ff->logit_alpha = -1;
}

/* Which (kind, data) pairs use each flag: bit kind for vectors, bit 4 + kind for images. */
#define V(k) (1u << (k))
#define I(k) (1u << (4 + (k)))
static const struct {
    const char *flag;
    unsigned use;
    const char *who;
} FLOW_FLAGS[] = {
    {"--couplings", V(DFL_FLOW_NICE) | I(DFL_FLOW_NICE) | V(DFL_FLOW_REALNVP), "nice, and realnvp on 2-D data"},
    {"--hidden", V(DFL_FLOW_NICE) | I(DFL_FLOW_NICE), "nice"},
    {"--depth", V(DFL_FLOW_NICE) | I(DFL_FLOW_NICE) | V(DFL_FLOW_REALNVP) | V(DFL_FLOW_GLOW),
     "nice, and realnvp / glow on 2-D data"},
    {"--width", V(DFL_FLOW_REALNVP) | I(DFL_FLOW_REALNVP) | V(DFL_FLOW_GLOW) | I(DFL_FLOW_GLOW), "realnvp and glow"},
    {"--scales", I(DFL_FLOW_REALNVP), "realnvp on images"},
    {"--blocks", I(DFL_FLOW_REALNVP), "realnvp on images"},
    {"--levels", I(DFL_FLOW_GLOW), "glow on images"},
    {"--steps-per-level", V(DFL_FLOW_GLOW) | I(DFL_FLOW_GLOW), "glow"},
    {"--coupling", V(DFL_FLOW_GLOW) | I(DFL_FLOW_GLOW), "glow"},
    {"--invconv", V(DFL_FLOW_GLOW) | I(DFL_FLOW_GLOW), "glow"},
    {"--logit-alpha", I(DFL_FLOW_REALNVP) | I(DFL_FLOW_GLOW), "realnvp and glow on images"}, /* NICE has no logit layer */
    {"--learn-top", V(DFL_FLOW_GLOW) | I(DFL_FLOW_GLOW), "glow"},
};
#undef V
#undef I
#define N_FLOW_FLAGS (sizeof FLOW_FLAGS / sizeof FLOW_FLAGS[0])

static const char *first_seen_flow_flag(arg_spec *specs)
{
    for (size_t i = 0; i < N_FLOW_FLAGS; i++) {
        arg_spec *s = args_find(specs, FLOW_FLAGS[i].flag);
        if (s && s->seen) return FLOW_FLAGS[i].flag;
    }
    return NULL;
}

int cli_flow_flags_seen(arg_spec *specs) { return first_seen_flow_flag(specs) != NULL; }

const char *cli_flow_flags_refusal(arg_spec *specs, const char *method)
{
    static char msg[256];
    const char *f = first_seen_flow_flag(specs);
    snprintf(msg, sizeof msg, "%s applies to the normalizing flows (--method nice, realnvp or glow), not %s (%s)",
             f ? f : "?", method, f ? f : "?");
    return msg;
}

static int in_range(int v, int lo, int hi) { return v >= lo && v <= hi; }

dfl_status cli_flow_cfg_from_flags(const char *method, const cli_flow_flags *ff, arg_spec *specs, const char *data,
                                   int C, int H, int W, dfl_flow_cfg *cfg)
{
    dfl_flow_kind k;
    char why[512]; /* dfl_last_error() is the buffer dfl_fail writes: copy it first */
    if (dfl_flow_kind_parse(method, &k)) {
        snprintf(why, sizeof why, "%s", dfl_last_error());
        return dfl_fail(DFL_ERR_ARG, "%s (--method)", why);
    }
    int images = H > 0;
    unsigned bit = 1u << ((images ? 4 : 0) + (int)k);
    for (size_t i = 0; i < N_FLOW_FLAGS; i++) {
        arg_spec *s = args_find(specs, FLOW_FLAGS[i].flag);
        if (s && s->seen && !(FLOW_FLAGS[i].use & bit))
            return dfl_fail(DFL_ERR_ARG, "%s applies to %s, not %s on %s (%s)", FLOW_FLAGS[i].flag, FLOW_FLAGS[i].who,
                            method, data, FLOW_FLAGS[i].flag);
    }
    if (dfl_flow_preset(k, C, H, W, cfg)) {
        snprintf(why, sizeof why, "%s", dfl_last_error());
        return dfl_fail(DFL_ERR_ARG, "%s (--method)", why);
    }
    static const struct {
        const char *flag;
        size_t off;
        int lo, hi;
    } ints[] = {{"--couplings", offsetof(cli_flow_flags, couplings), 2, 64},
                {"--hidden", offsetof(cli_flow_flags, hidden), 1, 8192},
                {"--depth", offsetof(cli_flow_flags, depth), 1, 32},
                {"--width", offsetof(cli_flow_flags, width), 1, 4096},
                {"--scales", offsetof(cli_flow_flags, scales), 1, 8},
                {"--blocks", offsetof(cli_flow_flags, blocks), 1, 64},
                {"--levels", offsetof(cli_flow_flags, levels), 1, 8},
                {"--learn-top", offsetof(cli_flow_flags, learn_top), 0, 1},
                {"--steps-per-level", offsetof(cli_flow_flags, steps_per_level), 1, 256}};
    for (size_t i = 0; i < sizeof ints / sizeof ints[0]; i++) {
        arg_spec *s = args_find(specs, ints[i].flag);
        int v = *(const int *)((const char *)ff + ints[i].off);
        if (s && s->seen && !in_range(v, ints[i].lo, ints[i].hi))
            return dfl_fail(DFL_ERR_ARG, "%s must be in %d..%d (got %d)", ints[i].flag, ints[i].lo, ints[i].hi, v);
    }
    if (args_find(specs, "--couplings")->seen) cfg->couplings = ff->couplings;
    if (args_find(specs, "--hidden")->seen) cfg->hidden = ff->hidden;
    if (args_find(specs, "--depth")->seen) cfg->depth = ff->depth;
    if (args_find(specs, "--width")->seen) cfg->net_width = ff->width;
    if (args_find(specs, "--scales")->seen) cfg->scales = ff->scales;
    if (args_find(specs, "--blocks")->seen) cfg->blocks = ff->blocks;
    if (args_find(specs, "--levels")->seen) cfg->levels = ff->levels;
    if (args_find(specs, "--steps-per-level")->seen) cfg->steps = ff->steps_per_level;
    if (args_find(specs, "--learn-top")->seen) cfg->learn_top = ff->learn_top;
    if (ff->coupling) {
        if (strcmp(ff->coupling, "affine") && strcmp(ff->coupling, "additive"))
            return dfl_fail(DFL_ERR_ARG, "unknown --coupling '%s' (known: affine, additive)", ff->coupling);
        cfg->additive = strcmp(ff->coupling, "additive") == 0;
    }
    if (ff->invconv) {
        if (strcmp(ff->invconv, "lu") && strcmp(ff->invconv, "plain"))
            return dfl_fail(DFL_ERR_ARG, "unknown --invconv '%s' (known: lu, plain)", ff->invconv);
        cfg->lu = strcmp(ff->invconv, "lu") == 0;
    }
    if (args_find(specs, "--logit-alpha")->seen) {
        if (!(ff->logit_alpha >= 0 && ff->logit_alpha < 0.5))
            return dfl_fail(DFL_ERR_ARG, "--logit-alpha must be in [0, 0.5) (got %g)", ff->logit_alpha);
        cfg->logit_alpha = (float)ff->logit_alpha;
    }
    /* Build it once, so that a layout the data cannot take (a squeeze of an odd size) is refused
     * before the run directory is touched, with the library's message naming the layer. */
    dfl_rng r;
    dfl_rng_init(&r, 0);
    dfl_flow *f = dfl_flow_new(cfg, &r);
    if (!f) { /* DFL_ERR_ARG: the command line asked for it; out of memory is not a usage error */
        snprintf(why, sizeof why, "%s", dfl_last_error());
        return dfl_fail(strstr(why, "out of memory") ? DFL_ERR_NOMEM : DFL_ERR_ARG, "%s (--method %s on %s)", why,
                        method, data);
    }
    dfl_flow_free(f);
    return DFL_OK;
}

void cli_flow_train_defaults(const char *method, int images, long *steps, int *batch, double *lr, int steps_seen,
                             int batch_seen, int lr_seen)
{
    /* Images: about 10 minutes on 2 cores per model at batch 64 (docs/FLOWS.md: one step took
     * 0.186 s (nice), 0.295 s (realnvp), 0.359 s (glow) with --threads 2 on an idle machine).
     * 2-D: as the diffusion toys. */
    long s = 4000;
    int b = 512;
    double l = 1e-3;
    if (images) {
        b = 64;
        s = !strcmp(method, "nice") ? 3200 : !strcmp(method, "realnvp") ? 2000 : 1600;
    }
    if (!steps_seen) *steps = s;
    if (!batch_seen) *batch = b;
    if (!lr_seen) *lr = l;
}

/* ---------------------------------------------------------------- description */

void cli_flow_describe(const dfl_flow_cfg *c, char *buf, size_t cap)
{
    int images = c->height > 0;
    const char *base = c->base == DFL_BASE_LOGISTIC ? "logistic" : "normal";
    char pre[48] = "";
    if (images && c->logit_alpha > 0) snprintf(pre, sizeof pre, ", logit alpha %g", c->logit_alpha);
    char split[48] = ""; /* image RealNVP / Glow factor out with a learned prior */
    if (images && c->kind != DFL_FLOW_NICE)
        snprintf(split, sizeof split, c->split_clamp > 0 ? ", split log-sd bound %g" : ", unbounded split log-sd",
                 c->split_clamp);
    switch (c->kind) {
    case DFL_FLOW_NICE:
        snprintf(buf, cap, "nice: %d additive couplings, MLP %d x %d ReLU, scaling layer%s, %s base", c->couplings,
                 c->depth, c->hidden, pre, base);
        break;
    case DFL_FLOW_REALNVP:
        if (images)
            snprintf(buf, cap, "realnvp: %d scales, affine couplings with ResNets of %d blocks, width %d%s%s, %s base",
                     c->scales, c->blocks, c->net_width, pre, split, base);
        else
            snprintf(buf, cap, "realnvp: %d affine couplings, MLP %d x %d, %s base", c->couplings, c->depth,
                     c->net_width, base);
        break;
    case DFL_FLOW_GLOW:
        if (images)
            snprintf(buf, cap, "glow: %d levels x %d steps (actnorm, %s 1x1 conv, %s coupling), width %d%s%s, %s%s base",
                     c->levels, c->steps, c->lu ? "LU" : "plain", c->additive ? "additive" : "affine",
                     c->net_width, pre, split, c->learn_top ? "learned-top " : "", base);
        else
            snprintf(buf, cap, "glow: %d steps (actnorm, %s 1x1, %s coupling MLP %d x %d), %s%s base", c->steps,
                     c->lu ? "LU" : "plain", c->additive ? "additive" : "affine", c->depth, c->net_width,
                     c->learn_top ? "learned-top " : "", base);
        break;
    default: snprintf(buf, cap, "unknown flow"); break;
    }
}

/* ---------------------------------------------------------------- the flow trainee */

typedef struct {
    dfl_flow *f;
} flow_trainee;

static dfl_flow *flow_of(cli_trainee *t) { return ((flow_trainee *)t->self)->f; }

static dfl_params *flow_params(cli_trainee *t) { return dfl_flow_params(flow_of(t)); }

/* Loss in nats per dimension: -mean_i log p(x_i) / D. */
static dfl_tensor *flow_loss(cli_trainee *t, dfl_ctx *ctx, float *x, const float *xe, int ndim, const int *shape,
                             dfl_rng *rng)
{
    (void)xe;
    (void)rng;
    dfl_flow *f = flow_of(t);
    dfl_tensor *xt = dfl_tensor_wrap(ctx, x, ndim, shape);
    dfl_tensor *lp = xt ? dfl_flow_log_prob(ctx, f, xt) : NULL;
    if (!lp) return NULL;
    return dfl_scale(ctx, dfl_mean(ctx, lp), -1.0f / (float)dfl_flow_dim(f));
}

static dfl_status flow_data_init(cli_trainee *t, dfl_ctx *ctx, float *x, int ndim, const int *shape)
{
    dfl_tensor *xt = dfl_tensor_wrap(ctx, x, ndim, shape);
    if (!xt) return dfl_fail(DFL_ERR_NOMEM, "out of memory");
    int g = dfl_ctx_set_grad(ctx, 0);
    dfl_status st = dfl_flow_data_init(ctx, flow_of(t), xt);
    dfl_ctx_set_grad(ctx, g);
    return st;
}

static dfl_status flow_save(cli_trainee *t, const char *path, const dfl_model_info *info)
{
    return dfl_flow_save(path, flow_of(t), info);
}

static char *flow_config_json(cli_trainee *t, const dfl_model_info *info)
{
    return dfl_flow_config_json(flow_of(t), info);
}

dfl_status cli_flow_sample_chunked(dfl_ctx *ctx, dfl_flow *f, uint64_t seed, int n, int batch, double temperature,
                                   float *x)
{
    /* One stream seeded by `seed`, consumed chunk after chunk. */
    dfl_rng rng;
    dfl_rng_init(&rng, seed);
    size_t per = (size_t)dfl_flow_dim(f);
    for (int i0 = 0; i0 < n; i0 += batch) {
        int b = n - i0 < batch ? n - i0 : batch;
        dfl_ctx_reset(ctx);
        dfl_status st = dfl_flow_sample(ctx, f, b, temperature, &rng, x + (size_t)i0 * per);
        if (st) return st;
        const dfl_flow_cfg *c = dfl_flow_get_cfg(f);
        if (c->dequant_bits > 0) { /* [0, 2^k) -> the writers' [-1, 1] */
            float s = (float)(2.0 / ldexp(1.0, c->dequant_bits));
            for (size_t q = 0; q < (size_t)b * per; q++) x[(size_t)i0 * per + q] = x[(size_t)i0 * per + q] * s - 1.0f;
        }
        for (size_t q = 0; q < (size_t)b * per; q++)
            if (!isfinite(x[(size_t)i0 * per + q]))
                return dfl_fail(DFL_ERR_NUMERIC, "sample %zu is not finite (temperature %g)", (size_t)i0 + q / per,
                                temperature);
    }
    dfl_ctx_reset(ctx);
    return DFL_OK;
}

static dfl_status flow_sample(cli_trainee *t, dfl_ctx *ctx, uint64_t seed, int n, int ndim, const int *shape, float *x,
                              char *what, size_t cap)
{
    (void)ndim;
    (void)shape;
    snprintf(what, cap, "temperature 1");
    dfl_status st = cli_flow_sample_chunked(ctx, flow_of(t), seed, n, 256, 1.0, x);
    if (st != DFL_ERR_NUMERIC) return st;
    /* An inverse that overflows at T = 1 (a coupling's scale near 0, reference/flows.md pitfall 7)
     * usually stays finite at Glow's T = 0.7. */
    char why[400];
    snprintf(why, sizeof why, "%s", dfl_last_error());
    snprintf(what, cap, "temperature 0.7; at 1: %s", why);
    return cli_flow_sample_chunked(ctx, flow_of(t), seed, n, 256, 0.7, x);
}

static void flow_free(cli_trainee *t)
{
    flow_trainee *ft = t->self;
    if (ft) dfl_flow_free(ft->f);
    free(ft);
    t->self = NULL;
}

static int cfg_equal(const dfl_flow_cfg *a, const dfl_flow_cfg *b)
{
    return a->kind == b->kind && a->channels == b->channels && a->height == b->height &&
           a->width == b->width && a->base == b->base && a->couplings == b->couplings &&
           a->hidden == b->hidden && a->depth == b->depth && a->scales == b->scales && a->blocks == b->blocks &&
           a->levels == b->levels && a->steps == b->steps && a->net_width == b->net_width &&
           a->additive == b->additive && a->lu == b->lu && a->logit_alpha == b->logit_alpha &&
           a->dequant_bits == b->dequant_bits && a->learn_top == b->learn_top;
    /* split_clamp is not compared: no flag sets it, and a resumed run keeps its checkpoint's
     * (0, unbounded, for checkpoints written before the bound) */
}

int cli_flow_trainee_open(cli_trainee *t, const dfl_flow_cfg *cfg, int flags_given, const char *data, uint64_t seed,
                          const char *p_model, int resume, dfl_model_info *ci)
{
    char msg[4096];
    flow_trainee *ft = calloc(1, sizeof *ft);
    if (!ft) {
        fprintf(stderr, "difflow: error: out of memory\n");
        return 1;
    }
    t->self = ft;
    t->params = flow_params;
    t->loss = flow_loss;
    t->data_init = flow_data_init;
    t->save = flow_save;
    t->config_json = flow_config_json;
    t->sample = flow_sample;
    t->free = flow_free;
    t->dequantize = 1;
    if (!resume) {
        cli_flow_describe(cfg, t->desc, sizeof t->desc);
        dfl_rng init_rng;
        dfl_rng_init(&init_rng, seed ^ 0x5DEECE66Dull);
        ft->f = dfl_flow_new(cfg, &init_rng);
        if (!ft->f) {
            snprintf(msg, sizeof msg, "%s", dfl_last_error());
            fprintf(stderr, "difflow: error: %s\n", msg);
            return 1;
        }
        return 0;
    }
    /* --resume: the checkpoint's flow, with its buffers (LU permutation, the ActNorm initialised
     * flag); the raw weights come from train_state.safetensors after this. */
    if (dfl_flow_load(p_model, &ft->f, ci)) {
        fprintf(stderr, "difflow: error: --resume: %s\n", dfl_last_error());
        return 1;
    }
    const dfl_flow_cfg *have = dfl_flow_get_cfg(ft->f);
    /* Without flow flags the run keeps the checkpoint's architecture; with them it must match. */
    int same = have->kind == cfg->kind && have->channels == cfg->channels && have->height == cfg->height &&
               have->width == cfg->width && (!flags_given || cfg_equal(have, cfg));
    if (!same || strcmp(ci->data, data) != 0) {
        char a[256], b[256];
        cli_flow_describe(have, a, sizeof a);
        cli_flow_describe(cfg, b, sizeof b);
        fprintf(stderr, "difflow: error: --resume: %s was trained as %s on %s, not %s on %s\n", p_model, a, ci->data, b, data);
        return 1;
    }
    cli_flow_describe(have, t->desc, sizeof t->desc);
    return 0;
}

/* ---------------------------------------------------------------- sample and info */

int cli_open_flow(const char *ckpt, int threads, dfl_flow **f, dfl_model_info *info)
{
    if (threads < 0) {
        fprintf(stderr, "difflow: error: --threads must be >= 0\n");
        return 2;
    }
    dfl_set_threads(threads);
    if (dfl_flow_load(ckpt, f, info)) {
        fprintf(stderr, "difflow: error: %s (--ckpt)\n", dfl_last_error());
        return 1;
    }
    return 0;
}

int cli_flow_sample_cmd(const char *ckpt, arg_spec *specs, int n, int batch, uint64_t seed, double temperature,
                        const char *out, int threads)
{
    /* Options of the diffusion samplers mean nothing to a flow: refused, one line. */
    for (arg_spec *s = specs; s->name; s++) {
        static const char *ok[] = {"--ckpt", "-n", "--batch", "--seed", "--temperature", "-o", "--threads"};
        int allowed = 0;
        for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) allowed |= strcmp(s->name, ok[i]) == 0;
        if (s->seen && !allowed) {
            fprintf(stderr, "difflow: error: %s applies to diffusion and flow-matching checkpoints; %s is a normalizing flow (%s)\n",
                    s->name, ckpt, s->name);
            return 2;
        }
    }
    if (!isfinite(temperature) || !(temperature > 0)) {
        fprintf(stderr, "difflow: error: --temperature must be a finite number > 0 (got %g)\n", temperature);
        return 2;
    }
    dfl_flow *f = NULL;
    dfl_model_info info;
    int orc = cli_open_flow(ckpt, threads, &f, &info);
    if (orc) return orc;
    const dfl_flow_cfg *c = dfl_flow_get_cfg(f);
    int images = c->height > 0, ndim = images ? 4 : 2;
    int shape[4] = {n, c->channels, images ? c->height : 1, images ? c->width : 1};
    if (!out) out = images ? "samples.png" : "samples.csv";
    size_t ol = strlen(out);
    int png = ol > 4 && strcmp(out + ol - 4, ".png") == 0, csv = ol > 4 && strcmp(out + ol - 4, ".csv") == 0;
    if (!png && !(csv && !images)) {
        fprintf(stderr, "difflow: error: output '%s' must end in %s (-o)\n", out, images ? ".png" : ".csv or .png");
        dfl_flow_free(f);
        return 2;
    }
    int rc = 1;
    size_t per = (size_t)dfl_flow_dim(f);
    float *x = malloc((size_t)n * per * sizeof *x);
    dfl_ctx *ctx = dfl_ctx_new();
    double t0 = dfl_now();
    if (!x || !ctx) {
        fprintf(stderr, "difflow: error: out of memory\n");
        goto done;
    }
    dfl_status sst = cli_flow_sample_chunked(ctx, f, seed, n, batch, temperature, x);
    if (sst == DFL_ERR_NUMERIC) {
        /* Strict (no silent fallback), but one line that names the flag and what to do: an
         * under-trained flow's inverse can overflow at a high temperature (reference/flows.md
         * pitfall 7); a lower one usually stays finite (Glow samples at T = 0.7). */
        double lower = temperature * 0.7 < 0.7 ? temperature * 0.7 : 0.7;
        fprintf(stderr,
                "difflow: error: sampling at --temperature %g: %s; an under-trained flow's inverse can overflow at "
                "T = %g: try --temperature %.2g or train longer (--temperature)\n",
                temperature, dfl_last_error(), temperature, lower);
        goto done;
    }
    if (sst) {
        fprintf(stderr, "difflow: error: sampling: %s\n", dfl_last_error());
        goto done;
    }
    if (cli_write_samples(out, x, n, ndim, shape)) {
        fprintf(stderr, "difflow: error: %s (-o)\n", dfl_last_error());
        goto done;
    }
    printf("%d samples from %s (%s flow on %s, step %ld): temperature %g, one inverse pass, %.2f s -> %s\n", n, ckpt,
           dfl_flow_kind_name(c->kind), info.data, info.step, temperature, dfl_now() - t0, out);
    rc = 0;
done:
    free(x);
    dfl_ctx_free(ctx);
    dfl_flow_free(f);
    return rc;
}

int cli_flow_info(const char *ckpt, int tensors)
{
    dfl_flow *f = NULL;
    dfl_model_info info;
    int orc = cli_open_flow(ckpt, 1, &f, &info);
    if (orc) return orc;
    const dfl_flow_cfg *c = dfl_flow_get_cfg(f);
    char d[256];
    cli_flow_describe(c, d, sizeof d);
    dfl_params *ps = dfl_flow_params(f), *bs = dfl_flow_buffers(f);
    printf("checkpoint:  %s\n", ckpt);
    printf("arch:        %s\n", info.arch);
    printf("method:      %s (normalizing flow, exact log-likelihood)\n", dfl_flow_kind_name(c->kind));
    printf("flow:        %s\n", d);
    if (c->height > 0 && c->dequant_bits > 0)
        printf("data shape:  %d x %d x %d (%d-bit pixels dequantized to [0, %d), mapped to [-1, 1) by the first layer)\n",
               c->channels, c->height, c->width, c->dequant_bits, 1 << c->dequant_bits);
    else if (c->height > 0)
        printf("data shape:  %d x %d x %d (given in [-1, 1))\n", c->channels, c->height, c->width);
    else
        printf("data shape:  %d (continuous)\n", c->channels);
    printf("data:        %s\n", info.data);
    printf("step:        %ld\n", info.step);
    printf("seed:        %" PRIu64 "\n", info.seed);
    printf("parameters:  %zu in %d tensors\n", dfl_params_count(ps), ps->n);
    printf("buffers:     %zu in %d tensors; actnorm initialised: %s\n", dfl_params_count(bs), bs->n,
           dfl_flow_initialized(f) ? "yes" : "no");
    if (tensors) {
        for (int i = 0; i < ps->n; i++) {
            char b[64];
            printf("  %-40s %s\n", ps->p[i].name, dfl_shape_str(ps->p[i].t, b, sizeof b));
        }
        for (int i = 0; i < bs->n; i++) {
            char b[64];
            printf("  %-40s %s (buffer)\n", bs->p[i].name, dfl_shape_str(bs->p[i].t, b, sizeof b));
        }
    }
    dfl_flow_free(f);
    return 0;
}
