/* difflow train: train a model and write runs/NAME/ (DESIGN sections 8 and 9). */
#include "cli.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <signal.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "difflow/data.h"
#include "difflow/io.h"
#include "difflow/likelihood.h"
#include "difflow/optim.h"
#include "difflow/progress.h"
#include "flows.h"
#include "trainee.h"

static const char *TRAIN_USAGE =
    "usage: difflow train [--data fashion-mnist|moons|8gaussians|checkerboard] [--method fm|edm|vp|subvp|ve|ddpm|nice|realnvp|glow|cnf]\n"
    "                     [--preset toy-mlp|fmnist-unet-s|fmnist-dit-s [--posenc rope2d|sincos|none]] [--pred eps|x0|v|velocity|edm] [--ot] [--ddpm-schedule linear|cosine]\n"
    "                     [flow flags] [--steps N] [--batch B] [--lr X] [--seed S] [--out runs/NAME] [--resume] ...\n"
    "\n"
    "Trains a generative model and writes runs/NAME/: model.safetensors (EMA weights, config in its\n"
    "metadata), train_state.safetensors (optimizer, EMA, RNG, step), config.json, log.csv, loss.png and\n"
    "samples.png (64 samples, Heun 35 NFE; samples.csv for 2-D data). Fashion-MNIST comes from Debian's\n"
    "dataset-fashion-mnist package. With no flags: flow matching, fmnist-unet-s, about 5 minutes on 2 cores.\n"
    "Methods: fm (flow matching), edm, vp / subvp (score SDE, t ~ U(1e-5, 1)), ve (SMLD, sigma 0.01..50),\n"
    "ddpm (discrete, T = 1000). --pred picks what the network predicts (default: fm velocity, edm edm,\n"
    "others eps); v needs vp or ddpm. --ot pairs noise and data by exact minibatch OT (fm only).\n"
    "Normalizing flows (exact log-likelihood; loss = -mean log p(x)/D in nats/dim; images dequantized\n"
    "x = v + u in [0, 256) with the run's seed, the flow's first layer maps x to [-1, 1); docs/FLOWS.md):\n"
    "nice (additive couplings, scaling layer, logistic base; --couplings --hidden --depth), realnvp (affine\n"
    "couplings, multi-scale on images; --width --scales --blocks, 2-D --couplings --depth), glow (ActNorm\n"
    "with data-dependent init, LU 1x1 conv, couplings, learned top prior; --levels --steps-per-level --width\n"
    "--coupling --invconv --learn-top). Each flag is refused by the\n"
    "methods that do not use it. cnf: a continuous normalizing flow trained by flow matching (method fm,\n"
    "pred velocity, in runs/DATA-cnf), evaluated through the PF-ODE likelihood.";

typedef struct {
    const char *data, *data_dir, *method, *preset, *out, *pred, *ddpm_schedule;
    const char *posenc;      /* --arch dit: rope2d, sincos or none */
    const char *reflow_from; /* reflow mode: the previous flow's checkpoint */
    int pairs, pair_steps;
    int ot;
    long steps;
    int batch, warmup, threads, resume, log_every, ckpt_every, n_samples, sample_steps;
    double lr, clip, ema_halflife;
    uint64_t seed;
} train_opts;

/* Per-epoch permutation of the training set: Fisher-Yates driven by a Philox stream keyed on
 * (seed, epoch), so the data order at any step is reproducible without saving it. */
static void epoch_perm(uint32_t *perm, int n, uint64_t seed, long epoch)
{
    dfl_rng r;
    dfl_rng_init(&r, seed * 0x9E3779B97F4A7C15ull + 0xD1B54A32D192ED03ull * (uint64_t)(epoch + 1));
    for (int i = 0; i < n; i++) perm[i] = (uint32_t)i;
    for (int i = n - 1; i > 0; i--) {
        uint32_t j = dfl_rng_below(&r, (uint32_t)i + 1);
        uint32_t t = perm[i];
        perm[i] = perm[j];
        perm[j] = t;
    }
}

static int ensure_dir(const char *path)
{
    char buf[4096];
    snprintf(buf, sizeof buf, "%s", path);
    for (char *p = buf + 1; *p; p++) {
        if (*p != '/') continue;
        *p = 0;
        if (mkdir(buf, 0777) && errno != EEXIST) return -1;
        *p = '/';
    }
    if (mkdir(buf, 0777) && errno != EEXIST) return -1;
    return 0;
}

static int dir_writable(const char *dir)
{
    char p[4200];
    snprintf(p, sizeof p, "%s/.difflow_write_test.%d", dir, (int)getpid());
    FILE *f = fopen(p, "wb");
    if (!f) return 0;
    int ok = fputs("ok", f) >= 0;
    ok = (fclose(f) == 0) && ok;
    remove(p);
    return ok;
}

/* Training state: raw weights, Adam moments, EMA, RNG and step, in train_state.safetensors. */
/* Shortest "%.Ng" text of v that reads back as the same double. */
static void fmt_double(char *b, size_t n, double v)
{
    for (int p = 6; p <= 17; p++) {
        snprintf(b, n, "%.*g", p, v);
        if (strtod(b, NULL) == v) return;
    }
}

/* Training state: raw weights, Adam moments, EMA, RNG and step, in train_state.safetensors, with
 * the optimizer hyper-parameters (lr, batch, clip, ema_halflife, warmup) that --resume keeps. */
static dfl_status save_state(const char *path, dfl_adam *opt, const dfl_rng *rng, long step, const train_opts *o)
{
    dfl_params *ps = opt->params;
    int per = opt->ema ? 4 : 3, n = ps->n * per;
    dfl_named_tensor *ts = calloc((size_t)n, sizeof *ts);
    dfl_tensor *views = calloc((size_t)n, sizeof *views);
    char **names = calloc((size_t)n, sizeof *names);
    dfl_status st = DFL_OK;
    if (!ts || !views || !names) {
        st = dfl_fail(DFL_ERR_NOMEM, "%s: out of memory", path);
        goto out;
    }
    static const char *pre[] = {"param.", "adam.m.", "adam.v.", "ema."};
    for (int i = 0; i < ps->n; i++)
        for (int k = 0; k < per; k++) {
            int j = i * per + k;
            views[j] = *ps->p[i].t;
            views[j].data = k == 0 ? ps->p[i].t->data : k == 1 ? opt->m[i] : k == 2 ? opt->v[i] : opt->ema[i];
            size_t len = strlen(pre[k]) + strlen(ps->p[i].name) + 1;
            names[j] = malloc(len);
            if (!names[j]) {
                st = dfl_fail(DFL_ERR_NOMEM, "%s: out of memory", path);
                goto out;
            }
            snprintf(names[j], len, "%s%s", pre[k], ps->p[i].name);
            ts[j].name = names[j];
            ts[j].t = &views[j];
        }
    char s_step[32], s_adam[32], s_ctr[32], s_spare[64], s_has[8], s_seed[32];
    snprintf(s_step, sizeof s_step, "%ld", step);
    snprintf(s_adam, sizeof s_adam, "%ld", opt->step);
    snprintf(s_ctr, sizeof s_ctr, "%" PRIu64, rng->counter);
    snprintf(s_seed, sizeof s_seed, "%" PRIu64, rng->seed);
    snprintf(s_spare, sizeof s_spare, "%.9g", rng->spare);
    /* Philox blocks are consumed 4 words at a time; record the position inside the block. */
    snprintf(s_has, sizeof s_has, "%d", rng->has_spare);
    char s_pos[8];
    snprintf(s_pos, sizeof s_pos, "%d", rng->buf_pos);
    char s_lr[40], s_batch[16], s_clip[40], s_ema[40], s_warmup[16];
    fmt_double(s_lr, sizeof s_lr, o->lr);
    fmt_double(s_clip, sizeof s_clip, o->clip);
    fmt_double(s_ema, sizeof s_ema, o->ema_halflife);
    snprintf(s_batch, sizeof s_batch, "%d", o->batch);
    snprintf(s_warmup, sizeof s_warmup, "%d", o->warmup);
    char s_steps[32], s_threads[16], s_pairs[16], s_pair_steps[16];
    snprintf(s_steps, sizeof s_steps, "%ld", o->steps);
    snprintf(s_threads, sizeof s_threads, "%d", o->threads);
    snprintf(s_pairs, sizeof s_pairs, "%d", o->pairs);
    snprintf(s_pair_steps, sizeof s_pair_steps, "%d", o->pair_steps);
    const char *meta[] = {"format", "difflow-train-state", "step", s_step, "adam_step", s_adam,
                          "rng_seed", s_seed, "rng_counter", s_ctr, "rng_buf_pos", s_pos,
                          "rng_has_spare", s_has, "rng_spare", s_spare, "lr", s_lr, "batch", s_batch,
                          "clip", s_clip, "ema_halflife", s_ema, "warmup", s_warmup,
                          "steps", s_steps, "threads", s_threads, "reflow_from", o->reflow_from ? o->reflow_from : "",
                          "pairs", s_pairs, "pair_steps", s_pair_steps};
    st = dfl_safetensors_save(path, ts, n, meta, 18);
out:
    if (names)
        for (int j = 0; j < n; j++) free(names[j]);
    free(names);
    free(views);
    free(ts);
    return st;
}

static dfl_status load_state(const char *path, dfl_adam *opt, dfl_rng *rng, long *step)
{
    dfl_st_file *f = NULL;
    dfl_status st = dfl_safetensors_open(path, &f);
    if (st) return st;
    const char *fmt = dfl_st_meta(f, "format");
    if (!fmt || strcmp(fmt, "difflow-train-state") != 0) {
        dfl_st_close(f);
        return dfl_fail(DFL_ERR_FORMAT, "%s: not a difflow training state", path);
    }
    dfl_params *ps = opt->params;
    static const char *pre[] = {"param.", "adam.m.", "adam.v.", "ema."};
    for (int i = 0; i < ps->n && !st; i++)
        for (int k = 0; k < 4 && !st; k++) {
            float *dst = k == 0 ? ps->p[i].t->data : k == 1 ? opt->m[i] : k == 2 ? opt->v[i] : opt->ema ? opt->ema[i] : NULL;
            if (!dst) continue;
            char name[300];
            snprintf(name, sizeof name, "%s%s", pre[k], ps->p[i].name);
            int nd, shp[4];
            const float *d = dfl_st_get(f, name, &nd, shp);
            if (!d || dfl_shape_numel(nd, shp) != ps->p[i].t->n) {
                st = dfl_fail(DFL_ERR_MISMATCH, "%s: no tensor '%s' of the right size: the state is from another model", path, name);
                break;
            }
            memcpy(dst, d, ps->p[i].t->n * sizeof(float));
        }
    const char *v;
    if (!st) {
        *step = (v = dfl_st_meta(f, "step")) ? strtol(v, NULL, 10) : 0;
        opt->step = (v = dfl_st_meta(f, "adam_step")) ? strtol(v, NULL, 10) : *step;
        rng->seed = (v = dfl_st_meta(f, "rng_seed")) ? strtoull(v, NULL, 10) : rng->seed;
        uint64_t ctr = (v = dfl_st_meta(f, "rng_counter")) ? strtoull(v, NULL, 10) : 0;
        int pos = (v = dfl_st_meta(f, "rng_buf_pos")) ? atoi(v) : 4;
        /* Rebuild the partially consumed block: rewind one block and skip pos words. */
        if (pos < 4 && ctr > 0) {
            rng->counter = ctr - 1;
            rng->buf_pos = 4;
            for (int k = 0; k < pos; k++) dfl_rng_u32(rng);
        } else {
            rng->counter = ctr;
            rng->buf_pos = 4;
        }
        rng->has_spare = (v = dfl_st_meta(f, "rng_has_spare")) ? atoi(v) : 0;
        rng->spare = (v = dfl_st_meta(f, "rng_spare")) ? strtof(v, NULL) : 0.f;
    }
    dfl_st_close(f);
    return st;
}

/* A number saved in a training state's metadata: 1 with *out set when key is present and is a
 * whole number text (strtod to the end), else 0. */
static int state_meta_num(dfl_st_file *f, const char *key, double *out)
{
    const char *v = dfl_st_meta(f, key);
    if (!v) return 0;
    char *end;
    double d = strtod(v, &end);
    if (end == v || *end) return 0;
    *out = d;
    return 1;
}

/* On --resume: the hyper-parameters saved in the run's train_state.safetensors replace the
 * defaults of flags not given; a flag given with another value is refused (0 ok, 1 refused, msg
 * set). A state without them (older runs) or an unreadable one changes nothing here (load_state
 * reports the latter). */
static int resume_hparams(const char *p_state, train_opts *o, arg_spec *specs, char *msg, size_t msz)
{
    dfl_st_file *f = NULL;
    if (dfl_safetensors_open(p_state, &f)) return 0;
    static const char *keys[] = {"lr", "batch", "clip", "ema_halflife", "warmup"};
    static const char *flags[] = {"--lr", "--batch", "--clip", "--ema-halflife", "--warmup"};
    double *dv[] = {&o->lr, NULL, &o->clip, &o->ema_halflife, NULL};
    int *iv[] = {NULL, &o->batch, NULL, NULL, &o->warmup};
    int refused = 0;
    for (int k = 0; k < 5 && !refused; k++) {
        const char *v = dfl_st_meta(f, keys[k]);
        double saved;
        if (!state_meta_num(f, keys[k], &saved)) continue;
        double cur = dv[k] ? *dv[k] : (double)*iv[k];
        if (args_find(specs, flags[k])->seen) {
            if (cur != saved) {
                snprintf(msg, msz, "--resume: the run was trained with %s %s; drop %s or pass the same one", flags[k], v,
                         flags[k]);
                refused = 1;
            }
        } else if (dv[k])
            *dv[k] = saved;
        else
            *iv[k] = (int)saved;
    }
    dfl_st_close(f);
    return refused;
}

/* Samples 2-D points drawn as a density image (white on black), for a quick look. */
static dfl_status scatter_png(const char *path, const float *pts, int n)
{
    enum { S = 256 };
    static float img[S * S];
    memset(img, 0, sizeof img);
    const float lim = 4.5f;
    for (int i = 0; i < n; i++) {
        int x = (int)((pts[2 * i] + lim) / (2 * lim) * S), y = (int)((lim - pts[2 * i + 1]) / (2 * lim) * S);
        if (x >= 0 && x < S && y >= 0 && y < S) img[y * S + x] += 1.f;
    }
    float mx = 0;
    for (int i = 0; i < S * S; i++) mx = img[i] > mx ? img[i] : mx;
    for (int i = 0; i < S * S; i++) img[i] = mx > 0 ? sqrtf(img[i] / mx) : 0;
    return dfl_png_write_grid(path, img, 1, 1, S, S, 1, 0.f, 1.f);
}

dfl_status cli_write_samples(const char *path, const float *x, int n, int ndim, const int *shape)
{
    size_t len = strlen(path);
    int is_csv = len > 4 && strcmp(path + len - 4, ".csv") == 0;
    if (ndim == 2) {
        if (is_csv) {
            size_t cap = (size_t)n * shape[1] * 20 + 16, k = 0;
            char *buf = malloc(cap);
            if (!buf) return dfl_fail(DFL_ERR_NOMEM, "%s: out of memory", path);
            k += (size_t)snprintf(buf + k, cap - k, shape[1] == 2 ? "x,y\n" : "sample\n");
            for (int i = 0; i < n; i++)
                for (int j = 0; j < shape[1]; j++)
                    k += (size_t)snprintf(buf + k, cap - k, j + 1 < shape[1] ? "%.9g," : "%.9g\n", x[(size_t)i * shape[1] + j]);
            dfl_status st = dfl_write_file_atomic(path, buf, k);
            free(buf);
            return st;
        }
        return scatter_png(path, x, n);
    }
    if (is_csv) return dfl_fail(DFL_ERR_ARG, "%s: CSV output is for 2-D data; use a .png name for images", path);
    int cols = 1;
    while (cols * cols < n) cols++;
    return dfl_png_write_grid(path, x, n, shape[1], shape[2], shape[3], cols, -1.f, 1.f);
}

/* Reads column 2 (loss) of log.csv for the loss plot. */
static float *read_losses(const char *path, int *n)
{
    FILE *f = fopen(path, "r");
    *n = 0;
    if (!f) return NULL;
    int cap = 1024;
    float *y = malloc((size_t)cap * sizeof *y);
    char line[512];
    while (y && fgets(line, sizeof line, f)) {
        long step;
        float loss;
        if (sscanf(line, "%ld,%f", &step, &loss) != 2) continue;
        if (*n == cap) {
            cap *= 2;
            float *ny = realloc(y, (size_t)cap * sizeof *ny);
            if (!ny) break;
            y = ny;
        }
        y[(*n)++] = loss;
    }
    fclose(f);
    return y;
}

static const char *fmt_value(double v)
{
    static char b[32];
    if (isnan(v)) return "NaN";
    if (isinf(v)) return v > 0 ? "+Inf" : "-Inf";
    snprintf(b, sizeof b, "%g", v);
    return b;
}

static dfl_status write_config(const char *path, cli_trainee *t, const dfl_model_info *info)
{
    char *js = t->config_json(t, info);
    if (!js) return dfl_fail(DFL_ERR_NOMEM, "%s: out of memory", path);
    dfl_status st = dfl_write_file_atomic(path, js, strlen(js));
    free(js);
    return st;
}

/* On --resume, drop log rows written after the checkpoint we resume from (a crash between
 * checkpoints would otherwise leave those steps twice). */
static dfl_status truncate_log(const char *path, long step)
{
    FILE *f = fopen(path, "r");
    if (!f) return DFL_OK; /* no log yet: a new one is started */
    size_t cap = 1 << 16, len = 0;
    char *buf = malloc(cap), line[512];
    while (buf && fgets(line, sizeof line, f)) {
        long s;
        if (sscanf(line, "%ld,", &s) == 1 && s > step) continue;
        size_t l = strlen(line);
        if (len + l + 1 > cap) {
            char *nb = realloc(buf, cap *= 2);
            if (!nb) break;
            buf = nb;
        }
        memcpy(buf + len, line, l);
        len += l;
    }
    fclose(f);
    if (!buf) return dfl_fail(DFL_ERR_NOMEM, "%s: out of memory", path);
    dfl_status st = dfl_write_file_atomic(path, buf, len);
    free(buf);
    return st;
}

static volatile sig_atomic_t g_stop_signal = 0;


/* Removes temporary files a killed save left in the run directory (our own naming only:
 * "<name>.safetensors.tmp.<pid>" and "config.json.tmp.<pid>"). */
static void remove_stale_temps(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d) return;
    struct dirent *e;
    char p[4400];
    while ((e = readdir(d))) {
        if (!strstr(e->d_name, ".tmp.")) continue;
        if (strncmp(e->d_name, "model.safetensors.tmp.", 22) && strncmp(e->d_name, "train_state.safetensors.tmp.", 28) &&
            strncmp(e->d_name, "config.json.tmp.", 16))
            continue;
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        remove(p);
    }
    closedir(d);
}

static int fail_cli(const char *what)
{
    fprintf(stderr, "difflow: error: %s\n", what);
    return 1;
}

/* An invalid command line (a flag, a value, a combination): the same one line, exit status 2,
 * as for the other commands; exit status 1 is kept for runs that fail (files, numerics). */
static int fail_usage(const char *what)
{
    fail_cli(what);
    return 2;
}

/* Before a checkpoint is written: one no-grad loss on the current batch with the updated raw
 * weights, and with the EMA weights (what model.safetensors holds) when EMA is on. An update can
 * leave weights whose loss is no longer finite (lr 1e30: the step's own loss was computed before
 * the update); such a checkpoint would be refused by eval and fail on --resume, so it is not
 * written. The draws of a diffusion loss (t, noise) come from a stream of their own, keyed on
 * (seed, step): the training stream is untouched, so runs stay byte-identical with or without
 * the check. Returns 0 when both losses are finite, else 1 with `why` set ("the updated weights
 * give a loss of NaN", or the loss's own error naming the layer). */
static int checkpoint_weights_bad(cli_trainee *t, dfl_ctx *ctx, dfl_adam *opt, float *x, const float *xe, int ndim,
                                  const int *shape, uint64_t seed, long step, char *why, size_t cap)
{
    for (int ema = 0; ema < 1 + (opt->ema != NULL); ema++) {
        dfl_rng r;
        dfl_rng_init(&r, seed * 0xD6E8FEB86659FD93ull ^ (uint64_t)step * 0xC2B2AE3D27D4EB4Full ^ 0x636B7074636865ull);
        if (ema) dfl_adam_swap_ema(opt);
        dfl_ctx_reset(ctx);
        int g = dfl_ctx_set_grad(ctx, 0);
        dfl_tensor *loss = t->loss(t, ctx, x, xe, ndim, shape, &r);
        dfl_ctx_set_grad(ctx, g);
        if (ema) dfl_adam_swap_ema(opt);
        const char *which = ema ? "the updated EMA weights" : "the updated weights";
        if (!loss) {
            char e[512];
            snprintf(e, sizeof e, "%s", dfl_last_error());
            snprintf(why, cap, "%s: %s", which, e);
        } else if (!isfinite(loss->data[0])) {
            snprintf(why, cap, "%s give a loss of %s", which, fmt_value(loss->data[0]));
        }
        dfl_ctx_reset(ctx);
        if (!loss || !isfinite(loss->data[0])) return 1;
    }
    return 0;
}

/* The line of a run stopped by numerics: "<what>; training stopped, the last good checkpoint
 * <path> is kept (try a lower --lr)", or "... before any checkpoint was written ...". */
static void stopped_msg(char *msg, size_t cap, const char *what, int kept, const char *p_model)
{
    if (kept)
        snprintf(msg, cap, "%s; training stopped, the last good checkpoint %s is kept (try a lower --lr)", what, p_model);
    else
        snprintf(msg, cap, "%s; training stopped before any checkpoint was written (try a lower --lr)", what);
}

int cmd_reflow(int argc, char **argv)
{
    int has = 0, help = 0;
    for (int i = 0; i < argc; i++) {
        has |= !strcmp(argv[i], "--ckpt") || !strcmp(argv[i], "--reflow-from") || !strncmp(argv[i], "--ckpt=", 7) ||
               !strncmp(argv[i], "--reflow-from=", 14);
        help |= !strcmp(argv[i], "--help") || !strcmp(argv[i], "-h");
    }
    if (help) {
        printf("usage: difflow reflow --ckpt runs/NAME/model.safetensors [--pairs N] [--pair-steps N] [--steps N] [--out DIR] ...\n\n"
               "Rectified-flow reflow (Liu, Gong, Liu 2023, Algorithm 1): draws noise z, integrates the given flow-matching\n"
               "model's ODE from z to a sample x0 (Heun, --pair-steps uniform steps), and trains the next flow, initialised\n"
               "from the given one, on the straight paths between these (x0, z) pairs. The reflowed model samples well in\n"
               "one to a few Euler steps: difflow sample --ckpt runs/NAME-reflow/model.safetensors --sampler euler --steps 1.\n"
               "Every 'difflow train' flag applies (see difflow train --help); data, method and architecture come from --ckpt.\n");
        return 0;
    }
    if (!has) {
        fprintf(stderr, "difflow: error: reflow needs --ckpt FILE, a flow-matching checkpoint (see difflow reflow --help)\n");
        return 2;
    }
    return cmd_train(argc, argv);
}

/* ---------------------------------------------------------------- diffusion / flow matching */

typedef struct {
    dfl_model m;
    int sample_steps;
} diff_trainee;

static dfl_params *diff_params(cli_trainee *t) { return dfl_net_params(((diff_trainee *)t->self)->m.net); }

static dfl_tensor *diff_loss(cli_trainee *t, dfl_ctx *ctx, float *x, const float *xe, int ndim, const int *shape,
                             dfl_rng *rng)
{
    const dfl_model *m = &((diff_trainee *)t->self)->m;
    return xe ? dfl_model_loss_paired(ctx, m, x, xe, ndim, shape, rng) : dfl_model_loss(ctx, m, x, ndim, shape, rng);
}

static dfl_status diff_save(cli_trainee *t, const char *path, const dfl_model_info *info)
{
    return dfl_model_save(path, &((diff_trainee *)t->self)->m, info);
}

static char *diff_config_json(cli_trainee *t, const dfl_model_info *info)
{
    return dfl_model_config_json(&((diff_trainee *)t->self)->m, info);
}

static dfl_status diff_sample(cli_trainee *t, dfl_ctx *ctx, uint64_t seed, int n, int ndim, const int *shape, float *x,
                              char *what, size_t cap)
{
    diff_trainee *d = t->self;
    dfl_sample_cfg sc;
    dfl_sample_cfg_default(&sc);
    sc.sampler = DFL_SAMPLER_HEUN;
    sc.schedule = DFL_SCHED_RHO;
    sc.steps = d->sample_steps;
    sc.rho = 7.0;
    int nfe = 0;
    dfl_status st = cli_sample_chunked(ctx, &d->m, &sc, seed, n, 256, ndim, shape, x, &nfe);
    snprintf(what, cap, "heun, %d NFE", nfe);
    return st;
}

static void diff_free(cli_trainee *t)
{
    diff_trainee *d = t->self;
    if (d) dfl_net_free(d->m.net);
    free(d);
    t->self = NULL;
}

/* The diffusion / flow-matching model of a run: built from the preset, or on --resume checked
 * against the checkpoint (whose info goes to *ci). Returns 0, or 1 after printing the error. */
static int diff_trainee_open(cli_trainee *t, const dfl_process *proc, const dfl_arch_cfg *ac, const char *preset,
                             const char *method, const char *data, uint64_t seed, int sample_steps, const char *p_model,
                             int resume, dfl_model_info *ci)
{
    char msg[4096];
    diff_trainee *d = calloc(1, sizeof *d);
    if (!d) return fail_cli("out of memory");
    t->self = d;
    t->params = diff_params;
    t->loss = diff_loss;
    t->data_init = NULL;
    t->save = diff_save;
    t->config_json = diff_config_json;
    t->sample = diff_sample;
    t->free = diff_free;
    t->dequantize = 0;
    d->sample_steps = sample_steps;
    d->m.proc = *proc;
    dfl_rng init_rng;
    dfl_rng_init(&init_rng, seed ^ 0x5DEECE66Dull);
    d->m.net = dfl_net_new(ac, &init_rng);
    if (!d->m.net) {
        snprintf(msg, sizeof msg, "%s", dfl_last_error());
        return fail_cli(msg);
    }
    snprintf(t->desc, sizeof t->desc, "%s%s%s with %s (pred %s%s)", preset, ac->arch == DFL_ARCH_DIT ? " posenc " : "",
             ac->arch == DFL_ARCH_DIT ? dfl_dit_posenc_name(ac->posenc) : "", method, dfl_pred_name(proc->pred),
             proc->fm_ot ? ", minibatch OT" : "");
    if (!resume) return 0;
    dfl_model chk;
    if (dfl_model_load(p_model, &chk, ci)) {
        snprintf(msg, sizeof msg, "--resume: %s", dfl_last_error());
        return fail_cli(msg);
    }
    int same = strcmp(ci->arch, preset) == 0 && chk.proc.family == proc->family && strcmp(ci->data, data) == 0 &&
               chk.proc.pred == proc->pred && chk.proc.ddpm_schedule == proc->ddpm_schedule && chk.proc.fm_ot == proc->fm_ot;
    dfl_dit_posenc chk_pe = dfl_net_cfg(chk.net)->posenc;
    dfl_net_free(chk.net);
    if (same && ac->arch == DFL_ARCH_DIT && chk_pe != ac->posenc) {
        snprintf(msg, sizeof msg, "--resume: %s was trained with --posenc %s, not %s (--posenc)", p_model,
                 dfl_dit_posenc_name(chk_pe), dfl_dit_posenc_name(ac->posenc));
        return fail_usage(msg);
    }
    if (!same) {
        snprintf(msg, sizeof msg, "--resume: %s was trained as %s/%s (pred %s%s) on %s, not %s/%s (pred %s%s) on %s", p_model,
                 ci->arch, dfl_family_name(chk.proc.family), dfl_pred_name(chk.proc.pred), chk.proc.fm_ot ? ", ot" : "",
                 ci->data, preset, method, dfl_pred_name(proc->pred), proc->fm_ot ? ", ot" : "", data);
        return fail_usage(msg);
    }
    return 0;
}

/* On --resume with --out: the run's config.json supplies --data, --method, --preset, --pred,
 * --posenc, --ddpm-schedule and --ot where they were not given, so "train --out DIR --resume"
 * continues any run. A flag given explicitly is kept and checked against the checkpoint later.
 * A missing or unreadable config.json changes nothing (the checkpoint checks then report). */
static void resume_run_defaults(const char *outdir, train_opts *o, arg_spec *specs)
{
    static char data[256], method[32], preset[32], pred[16], posenc[16], ddpm[16];
    char path[4200];
    snprintf(path, sizeof path, "%s/config.json", outdir);
    FILE *f = fopen(path, "rb");
    if (!f) return;
    char buf[16384];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    cJSON *j = cJSON_Parse(buf);
    if (!j) return;
    const char *m = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(j, "method"));
    const char *a = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(j, "arch"));
    if (!a || !m) { /* not a run of difflow train (e.g. an lm run): the checkpoint checks report */
        cJSON_Delete(j);
        return;
    }
    /* The run's length, thread count (training is byte-reproducible per thread count) and, for
     * a reflow, its teacher, from the training state. */
    static char reflow_from[4096];
    snprintf(path, sizeof path, "%s/train_state.safetensors", outdir);
    dfl_st_file *sf = NULL;
    if (!dfl_safetensors_open(path, &sf)) {
        const char *v;
        double d;
        if (!args_find(specs, "--steps")->seen && state_meta_num(sf, "steps", &d)) o->steps = (long)d;
        if (!args_find(specs, "--threads")->seen && state_meta_num(sf, "threads", &d)) o->threads = (int)d;
        if ((v = dfl_st_meta(sf, "reflow_from")) && *v && !o->reflow_from) {
            snprintf(reflow_from, sizeof reflow_from, "%s", v);
            o->reflow_from = reflow_from;
        }
        if (o->reflow_from) {
            if (!args_find(specs, "--pairs")->seen && state_meta_num(sf, "pairs", &d)) o->pairs = (int)d;
            if (!args_find(specs, "--pair-steps")->seen && state_meta_num(sf, "pair_steps", &d)) o->pair_steps = (int)d;
        }
        dfl_st_close(sf);
    }
    if (o->reflow_from) { /* data, method and architecture come from the teacher */
        cJSON_Delete(j);
        return;
    }
    const char *d = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(j, "data"));
    const char *pr = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(j, "pred"));
    const char *pe = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(j, "posenc"));
    const char *ds = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(j, "ddpm_schedule"));
    int ot = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(j, "ot"));
    int method_given = args_find(specs, "--method")->seen;
    if (d && !args_find(specs, "--data")->seen) o->data = strncpy(data, d, sizeof data - 1);
    if (m && !method_given) o->method = strncpy(method, m, sizeof method - 1);
    const char *meth = o->method;
    if (!cli_flow_method(meth) && (!method_given || (m && !strcmp(meth, m)) || (!strcmp(meth, "cnf") && m && !strcmp(m, "fm")))) {
        if (a && !args_find(specs, "--preset")->seen) o->preset = strncpy(preset, a, sizeof preset - 1);
        if (pr && !args_find(specs, "--pred")->seen) o->pred = strncpy(pred, pr, sizeof pred - 1);
        if (pe && !args_find(specs, "--posenc")->seen) o->posenc = strncpy(posenc, pe, sizeof posenc - 1);
        if (ds && m && !strcmp(m, "ddpm") && !args_find(specs, "--ddpm-schedule")->seen)
            o->ddpm_schedule = strncpy(ddpm, ds, sizeof ddpm - 1);
        if (ot && !args_find(specs, "--ot")->seen) o->ot = 1;
    }
    cJSON_Delete(j);
}

/* ---------------------------------------------------------------- difflow train */

int cmd_train(int argc, char **argv)
{
    train_opts o = {.data = "fashion-mnist", .data_dir = NULL, .method = "fm", .preset = NULL, .out = NULL, .pred = NULL,
                    .ddpm_schedule = NULL, .ot = 0,
                    .steps = -1, .batch = -1, .lr = -1, .warmup = -1, .clip = 1.0, .ema_halflife = -1,
                    .seed = 0, .threads = 0, .log_every = -1, .ckpt_every = -1, .n_samples = 64, .sample_steps = 18,
                    .reflow_from = NULL, .pairs = -1, .pair_steps = 50};
    cli_flow_flags ff;
    cli_flow_flags_default(&ff);
    arg_spec specs[] = {
        {"--data", NULL, ARG_STR, &o.data, "NAME", "fashion-mnist, moons, 8gaussians or checkerboard", 0},
        {"--data-dir", NULL, ARG_STR, &o.data_dir, "DIR", "Fashion-MNIST IDX directory (default " DFL_FMNIST_DIR ")", 0},
        {"--method", NULL, ARG_STR, &o.method, "NAME",
         "fm (flow matching), edm, vp, subvp, ve, ddpm; flows nice, realnvp, glow, cnf", 0},
        {"--pred", NULL, ARG_STR, &o.pred, "KIND", "network output: eps, x0, v, velocity or edm (default: by method)", 0},
        {"--ot", NULL, ARG_BOOL, &o.ot, NULL, "fm, cnf: pair noise and data by exact minibatch optimal transport", 0},
        {"--ddpm-schedule", NULL, ARG_STR, &o.ddpm_schedule, "NAME", "ddpm: beta schedule linear or cosine (default linear)", 0},
        {"--preset", "--arch", ARG_STR, &o.preset, "NAME", "toy-mlp, fmnist-unet-s or fmnist-dit-s (alias dit) (default: by data)", 0},
        {"--posenc", NULL, ARG_STR, &o.posenc, "NAME", "--arch dit: rope2d (2-D axial RoPE, default), sincos (DiT's fixed table) or none", 0},
        CLI_FLOW_FLAG_SPECS(ff),
        {"--steps", NULL, ARG_LONG, &o.steps, "N", "optimizer steps (default 4000 2-D; images ~10 min on 2 cores: 720, nice 3200, realnvp 2000, glow 1600)", 0},
        {"--batch", NULL, ARG_INT, &o.batch, "B", "batch size (default 64 images, 512 2-D)", 0},
        {"--lr", NULL, ARG_FLOAT, &o.lr, "X", "Adam learning rate (default 1e-3)", 0},
        {"--warmup", NULL, ARG_INT, &o.warmup, "N", "linear warmup steps (default steps/20)", 0},
        {"--clip", NULL, ARG_FLOAT, &o.clip, "X", "gradient-norm clipping (0: off)", 0},
        {"--ema-halflife", NULL, ARG_FLOAT, &o.ema_halflife, "IMGS", "EMA half-life in samples (default 10% of training samples; 0: off)", 0},
        {"--seed", NULL, ARG_U64, &o.seed, "S", "seed for every random draw", 0},
        {"--out", "-o", ARG_STR, &o.out, "DIR", "run directory (default runs/<data>-<method>)", 0},
        {"--resume", NULL, ARG_BOOL, &o.resume, NULL, "continue the run in --out from its train_state.safetensors: --data, --method, --preset, --pred, --posenc come from its config.json; --steps, --threads, a reflow's teacher, --pairs, --pair-steps, and --lr, --batch, --clip, --warmup, --ema-halflife (a different value of these refused) from its state, unless given", 0},
        {"--threads", NULL, ARG_INT, &o.threads, "N", "threads (0: all cores)", 0},
        {"--log-every", NULL, ARG_INT, &o.log_every, "N", "log.csv / plain progress interval (default steps/100)", 0},
        {"--ckpt-every", NULL, ARG_INT, &o.ckpt_every, "N", "checkpoint interval in steps (default steps/4)", 0},
        {"--samples", NULL, ARG_INT, &o.n_samples, "N", "samples drawn at the end (0: none)", 0},
        {"--sample-steps", NULL, ARG_INT, &o.sample_steps, "N", "Heun steps for the end-of-run samples (not flows)", 0},
        {"--reflow-from", "--ckpt", ARG_STR, &o.reflow_from, "FILE", "reflow: train the next rectified flow on (noise, sample) pairs of this FM model", 0},
        {"--pairs", NULL, ARG_INT, &o.pairs, "N", "reflow: number of pairs (default 20000 2-D, 5000 images)", 0},
        {"--pair-steps", NULL, ARG_INT, &o.pair_steps, "N", "reflow: Heun steps (uniform t) generating each pair", 0},
        {NULL, NULL, 0, NULL, NULL, NULL, 0}};
    int pr = args_parse("train", TRAIN_USAGE, specs, argc, argv);
    if (pr) return pr > 0 ? 0 : 2;
    if (o.resume && o.out) resume_run_defaults(o.out, &o, specs);

    char msg[8192];
    dfl_model teacher = {0};
    dfl_model_info tinfo;
    if (o.reflow_from) {
        if (args_find(specs, "--data")->seen || args_find(specs, "--method")->seen || args_find(specs, "--pred")->seen ||
            args_find(specs, "--posenc")->seen)
            return fail_usage("reflow takes the data, method and architecture of --reflow-from; drop --data/--method/--pred/--posenc");
        if (cli_flow_flags_seen(specs)) return fail_usage(cli_flow_flags_refusal(specs, "fm"));
        if (dfl_model_load(o.reflow_from, &teacher, &tinfo)) {
            snprintf(msg, sizeof msg, "%s (--reflow-from)", dfl_last_error());
            return fail_cli(msg);
        }
        if (teacher.proc.family != DFL_FAMILY_FM || teacher.proc.pred != DFL_PRED_VELOCITY) {
            dfl_net_free(teacher.net);
            snprintf(msg, sizeof msg, "%s: reflow needs a flow-matching model (method fm, pred velocity), not %s (--reflow-from)",
                     o.reflow_from, dfl_family_name(teacher.proc.family));
            return fail_usage(msg);
        }
        static char tdata[256], tarch[32];
        snprintf(tdata, sizeof tdata, "%s", tinfo.data);
        snprintf(tarch, sizeof tarch, "%s", tinfo.arch);
        o.data = tdata;
        o.preset = tarch;
        o.method = "fm";
        if (o.pair_steps < 1) {
            dfl_net_free(teacher.net);
            return fail_usage("--pair-steps must be >= 1");
        }
    } else if (args_find(specs, "--pairs")->seen || args_find(specs, "--pair-steps")->seen) {
        return fail_usage("--pairs and --pair-steps are for reflow (difflow reflow --ckpt FILE)");
    }
    /* Normalizing flows (nice, realnvp, glow) take the flow flags and refuse the diffusion ones;
     * cnf is flow matching with velocity prediction (a continuous normalizing flow), recorded as
     * method fm in its checkpoint, in runs/DATA-cnf by default. */
    int is_flow = cli_flow_method(o.method), is_cnf = strcmp(o.method, "cnf") == 0;
    if (is_flow) {
        static const char *diffusion_only[] = {"--pred", "--ot", "--ddpm-schedule", "--preset", "--posenc", "--sample-steps"};
        for (size_t i = 0; i < sizeof diffusion_only / sizeof diffusion_only[0]; i++)
            if (args_find(specs, diffusion_only[i])->seen) {
                snprintf(msg, sizeof msg, "%s applies to diffusion and flow-matching methods, not the normalizing flow %s (%s)",
                         diffusion_only[i], o.method, diffusion_only[i]);
                return fail_usage(msg);
            }
    } else if (cli_flow_flags_seen(specs)) {
        return fail_usage(cli_flow_flags_refusal(specs, o.method));
    }
    dfl_family fam = DFL_FAMILY_FM;
    dfl_process proc;
    memset(&proc, 0, sizeof proc);
    if (!is_flow) {
        if (dfl_family_parse(is_cnf ? "fm" : o.method, &fam)) {
            snprintf(msg, sizeof msg,
                     "unknown method '%s' (known: fm, edm, vp, subvp, ve, ddpm; flows nice, realnvp, glow, cnf) (--method)",
                     o.method);
            return fail_usage(msg);
        }
        /* The process: family defaults, then the explicit parameterization / schedule / OT flags,
         * each checked against the method with one error line. */
        dfl_process_default(&proc, fam);
        if (o.pred) {
            if (dfl_pred_parse(o.pred, &proc.pred)) {
                snprintf(msg, sizeof msg, "%s (--pred)", dfl_last_error());
                return fail_usage(msg);
            }
            if (is_cnf && proc.pred != DFL_PRED_VELOCITY) {
                snprintf(msg, sizeof msg, "--method cnf is flow matching with velocity prediction; for --pred %s use --method fm (--pred)",
                         o.pred);
                return fail_usage(msg);
            }
            if (dfl_pred_check(&proc, proc.pred)) return fail_usage(dfl_last_error());
        }
        if (o.ddpm_schedule) {
            dfl_ddpm_schedule dsch;
            if (fam != DFL_FAMILY_DDPM) {
                snprintf(msg, sizeof msg, "--ddpm-schedule applies to --method ddpm only, not %s", o.method);
                return fail_usage(msg);
            }
            if (dfl_ddpm_schedule_parse(o.ddpm_schedule, &dsch)) {
                snprintf(msg, sizeof msg, "%s (--ddpm-schedule)", dfl_last_error());
                return fail_usage(msg);
            }
            dfl_process_set_ddpm(&proc, dsch);
        }
        if (o.ot) {
            if (fam != DFL_FAMILY_FM || proc.pred != DFL_PRED_VELOCITY) {
                snprintf(msg, sizeof msg, "--ot (minibatch OT flow matching) needs --method fm with --pred velocity, not %s/%s",
                         o.method, dfl_pred_name(proc.pred));
                return fail_usage(msg);
            }
            proc.fm_ot = 1;
        }
    }
    int is_images = strcmp(o.data, "fashion-mnist") == 0;
    if (!is_images && !dfl_toy_known(o.data)) {
        snprintf(msg, sizeof msg, "unknown dataset '%s' (--data; known: fashion-mnist, moons, 8gaussians, checkerboard)", o.data);
        return fail_usage(msg);
    }
    if (!is_images && o.data_dir) {
        snprintf(msg, sizeof msg, "--data-dir applies to --data fashion-mnist, not the generated 2-D data '%s' (--data-dir)", o.data);
        return fail_usage(msg);
    }
    dfl_arch_cfg ac;
    memset(&ac, 0, sizeof ac);
    if (!is_flow) {
        if (!o.preset) o.preset = is_images ? "fmnist-unet-s" : "toy-mlp";
        if (strcmp(o.preset, "mlp") == 0) o.preset = "toy-mlp";
        if (strcmp(o.preset, "unet") == 0) o.preset = "fmnist-unet-s";
        if (strcmp(o.preset, "dit") == 0) o.preset = "fmnist-dit-s";
        if (dfl_arch_preset(o.preset, &ac)) {
            snprintf(msg, sizeof msg, "%s (--preset)", dfl_last_error());
            return fail_usage(msg);
        }
        if ((ac.arch != DFL_ARCH_MLP) != is_images) {
            snprintf(msg, sizeof msg, "preset '%s' does not fit data '%s' (--preset: fmnist-unet-s or fmnist-dit-s for images, toy-mlp for 2-D)",
                     o.preset, o.data);
            return fail_usage(msg);
        }
        if (o.posenc && ac.arch != DFL_ARCH_DIT) {
            snprintf(msg, sizeof msg, "--posenc applies to --arch dit (fmnist-dit-s), not %s (--posenc)", o.preset);
            return fail_usage(msg);
        }
        if (o.posenc && dfl_dit_posenc_parse(o.posenc, &ac.posenc)) {
            snprintf(msg, sizeof msg, "%s (--posenc)", dfl_last_error());
            return fail_usage(msg);
        }
        if (o.reflow_from) { /* the student is the teacher's network */
            ac.posenc = dfl_net_cfg(teacher.net)->posenc;
            ac.rope_theta = dfl_net_cfg(teacher.net)->rope_theta;
        }
    }
    /* Flags given explicitly are validated as given; only absent ones take computed defaults. */
    if (args_find(specs, "--steps")->seen && o.steps < 1) return fail_usage("--steps must be >= 1");
    if (args_find(specs, "--batch")->seen && (o.batch < 1 || o.batch > 65536)) return fail_usage("--batch must be in 1..65536");
    if (args_find(specs, "--lr")->seen && !(o.lr > 0)) return fail_usage("--lr must be > 0");
    if (args_find(specs, "--warmup")->seen && o.warmup < 0) return fail_usage("--warmup must be >= 0");
    if (args_find(specs, "--ema-halflife")->seen && o.ema_halflife < 0) return fail_usage("--ema-halflife must be >= 0");
    if (args_find(specs, "--log-every")->seen && o.log_every < 1) return fail_usage("--log-every must be >= 1");
    if (args_find(specs, "--ckpt-every")->seen && o.ckpt_every < 1) return fail_usage("--ckpt-every must be >= 1");
    if (o.clip < 0) return fail_usage("--clip must be >= 0");
    if (o.n_samples < 0 || o.n_samples > 100000) return fail_usage("--samples must be in 0..100000");
    if (o.sample_steps < 1) return fail_usage("--sample-steps must be >= 1");
    if (o.threads < 0) return fail_usage("--threads must be >= 0");
    if (is_flow)
        cli_flow_train_defaults(o.method, is_images, &o.steps, &o.batch, &o.lr, args_find(specs, "--steps")->seen,
                                args_find(specs, "--batch")->seen, args_find(specs, "--lr")->seen);
    if (!args_find(specs, "--steps")->seen && o.steps < 1) o.steps = is_images ? 720 : 4000;
    if (!args_find(specs, "--batch")->seen && o.batch < 1) o.batch = is_images ? 64 : 512;
    if (!args_find(specs, "--lr")->seen && !(o.lr > 0)) o.lr = 1e-3;
    if (!args_find(specs, "--warmup")->seen) o.warmup = (int)(o.steps / 20);
    if (!args_find(specs, "--ema-halflife")->seen) o.ema_halflife = 0.1 * (double)o.steps * o.batch;
    if (!args_find(specs, "--log-every")->seen) o.log_every = o.steps >= 100 ? (int)(o.steps / 100) : 1;
    if (!args_find(specs, "--ckpt-every")->seen) o.ckpt_every = o.steps >= 4 ? (int)(o.steps / 4) : 1;
    if (o.reflow_from) { /* the pairs are held in memory: refuse what cannot fit before any work */
        if (!args_find(specs, "--pairs")->seen && o.pairs < 1) o.pairs = is_images ? 5000 : 20000;
        if (o.pairs < o.batch) {
            snprintf(msg, sizeof msg, "--pairs must be >= --batch (%d), got %d (--pairs)", o.batch, o.pairs);
            return fail_usage(msg);
        }
        double per_pair = 2.0 * sizeof(float) * (is_images ? (double)ac.channels * ac.height * ac.width : 2.0);
        double ram = (double)sysconf(_SC_PHYS_PAGES) * (double)sysconf(_SC_PAGE_SIZE);
        if (ram > 0 && per_pair * o.pairs > 0.5 * ram) {
            snprintf(msg, sizeof msg, "--pairs %d needs %.1f GiB for the (x0, z) pairs, more than half of this machine's %.1f GiB (--pairs)",
                     o.pairs, per_pair * o.pairs / 1073741824.0, ram / 1073741824.0);
            return fail_usage(msg);
        }
    }
    dfl_set_threads(o.threads);

    /* Data. */
    dfl_dataset ds;
    memset(&ds, 0, sizeof ds);
    if (is_images && !o.reflow_from) {
        if (dfl_fmnist_load(o.data_dir ? o.data_dir : DFL_FMNIST_DIR, 1, &ds)) {
            snprintf(msg, sizeof msg, "%s (install Debian's dataset-fashion-mnist or pass --data-dir)", dfl_last_error());
            return fail_cli(msg);
        }
    }

    if (!is_flow && is_images && !o.reflow_from && (ds.c != ac.channels || ds.h != ac.height || ds.w != ac.width)) {
        snprintf(msg, sizeof msg, "%s: images are %dx%dx%d but %s expects %dx%dx%d (--data-dir)",
                 o.data_dir ? o.data_dir : DFL_FMNIST_DIR, ds.c, ds.h, ds.w, o.preset, ac.channels, ac.height, ac.width);
        dfl_dataset_free(&ds);
        return fail_cli(msg);
    }

    dfl_flow_cfg fcfg;
    memset(&fcfg, 0, sizeof fcfg);
    dfl_status fst = is_flow ? cli_flow_cfg_from_flags(o.method, &ff, specs, o.data, is_images ? ds.c : 2,
                                                       is_images ? ds.h : 0, is_images ? ds.w : 0, &fcfg)
                             : DFL_OK;
    if (fst) { /* a flag value or a layout the data cannot take: an invalid command line (exit 2) */
        dfl_dataset_free(&ds);
        return fst == DFL_ERR_ARG ? fail_usage(dfl_last_error()) : fail_cli(dfl_last_error());
    }

    char outdir[2048];
    if (o.out) snprintf(outdir, sizeof outdir, "%s", o.out);
    else if (o.reflow_from) {
        /* next to the previous flow's run: runs/NAME/model.safetensors -> runs/NAME-reflow */
        char tdir[2000];
        snprintf(tdir, sizeof tdir, "%s", o.reflow_from);
        char *slash = strrchr(tdir, '/');
        if (slash) *slash = 0;
        else snprintf(tdir, sizeof tdir, "runs/%s-fm", o.data);
        snprintf(outdir, sizeof outdir, "%s-reflow", tdir);
    } else snprintf(outdir, sizeof outdir, "runs/%s-%s", o.data, o.method);
    char p_model[2300], p_state[2300], p_cfg[2300], p_log[2300], p_plot[2300], p_samples[2300];
    snprintf(p_model, sizeof p_model, "%s/model.safetensors", outdir);
    snprintf(p_state, sizeof p_state, "%s/train_state.safetensors", outdir);
    snprintf(p_cfg, sizeof p_cfg, "%s/config.json", outdir);
    snprintf(p_log, sizeof p_log, "%s/log.csv", outdir);
    snprintf(p_plot, sizeof p_plot, "%s/loss.png", outdir);
    snprintf(p_samples, sizeof p_samples, "%s/samples.%s", outdir, is_images ? "png" : "csv");

    if (ensure_dir(outdir) || !dir_writable(outdir)) {
        snprintf(msg, sizeof msg, "cannot write to run directory '%s': %s (--out)", outdir, strerror(errno ? errno : EACCES));
        dfl_dataset_free(&ds);
        return fail_cli(msg);
    }
    /* One training per run directory: an fcntl lock on DIR/.lock, held until the process ends
     * (two runs writing one log.csv and checkpoint lose data). */
    {
        char p_lock[2300];
        snprintf(p_lock, sizeof p_lock, "%s/.lock", outdir);
        int lfd = open(p_lock, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
        struct flock fl = {.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 0, .l_len = 0};
        if (lfd >= 0 && fcntl(lfd, F_SETLK, &fl) != 0) {
            fl.l_type = F_WRLCK;
            int other = fcntl(lfd, F_GETLK, &fl) == 0 && fl.l_type != F_UNLCK ? (int)fl.l_pid : 0;
            close(lfd);
            snprintf(msg, sizeof msg, "run directory '%s' is in use by another difflow train (pid %d); wait for it or pass another --out",
                     outdir, other);
            dfl_dataset_free(&ds);
            return fail_usage(msg);
        }
        /* lfd stays open (and locked) for the life of the process */
    }
    if (!o.resume && access(p_model, F_OK) == 0) {
        snprintf(msg, sizeof msg, "run directory '%s' already holds a model; pass --resume to continue it or --out for a new run", outdir);
        dfl_dataset_free(&ds);
        return fail_usage(msg);
    }
    if (o.resume && resume_hparams(p_state, &o, specs, msg, sizeof msg)) {
        dfl_dataset_free(&ds);
        return fail_usage(msg);
    }

    remove_stale_temps(outdir);

    int ndim, shape[4];
    size_t per;
    if (is_images) {
        ndim = 4;
        shape[1] = is_flow ? ds.c : ac.channels;
        shape[2] = is_flow ? ds.h : ac.height;
        shape[3] = is_flow ? ds.w : ac.width;
        per = (size_t)shape[1] * shape[2] * shape[3];
    } else {
        ndim = 2;
        shape[1] = 2;
        shape[2] = shape[3] = 1;
        per = 2;
    }
    shape[0] = o.batch;

    /* Model (new, or the checkpoint's on --resume), optimizer, RNG. */
    int rc = 1;
    dfl_rng rng;
    dfl_rng_init(&rng, o.seed);
    cli_trainee t;
    memset(&t, 0, sizeof t);
    dfl_ctx *ctx = dfl_ctx_new();
    dfl_adam opt;
    memset(&opt, 0, sizeof opt);
    float *xb = NULL, *samples = NULL, *pair_x0 = NULL, *pair_eps = NULL, *xe = NULL;
    double *xq = NULL;
    uint32_t *perm = NULL;
    FILE *logf = NULL;
    dfl_model_info ci;
    memset(&ci, 0, sizeof ci);
    if (!ctx) {
        fail_cli("out of memory");
        goto done;
    }
    int orc = is_flow ? cli_flow_trainee_open(&t, &fcfg, cli_flow_flags_seen(specs), o.data, o.seed, p_model, o.resume, &ci)
                      : diff_trainee_open(&t, &proc, &ac, o.preset, o.method, o.data, o.seed, o.sample_steps, p_model,
                                          o.resume, &ci);
    if (orc) {
        rc = orc; /* 2: the flags do not match the checkpoint being resumed */
        goto done;
    }
    dfl_adam_cfg acfg = {.lr = (float)o.lr, .beta1 = 0.9f, .beta2 = 0.999f, .eps = 1e-8f, .weight_decay = 0.f,
                         .warmup = o.warmup, .clip = (float)o.clip, .ema_halflife = (float)o.ema_halflife, .batch = o.batch};
    if (dfl_adam_init(&opt, t.params(&t), &acfg)) {
        snprintf(msg, sizeof msg, "%s", dfl_last_error());
        fail_cli(msg);
        goto done;
    }
    dfl_model_info info;
    memset(&info, 0, sizeof info);
    snprintf(info.arch, sizeof info.arch, "%s", is_flow ? o.method : o.preset);
    snprintf(info.data, sizeof info.data, "%s", o.data);
    info.seed = o.seed;
    long step = 0;
    if (o.resume) {
        if (args_find(specs, "--seed")->seen && o.seed != ci.seed) {
            snprintf(msg, sizeof msg, "--resume: the run was trained with --seed %" PRIu64 "; drop --seed or pass the same one",
                     ci.seed);
            rc = fail_usage(msg);
            goto done;
        }
        o.seed = info.seed = ci.seed; /* the data order and every draw stay those of the original run */
        if (load_state(p_state, &opt, &rng, &step)) {
            snprintf(msg, sizeof msg, "--resume: %s", dfl_last_error());
            fail_cli(msg);
            goto done;
        }
        if (step != ci.step) {
            snprintf(msg, sizeof msg, "--resume: %s is at step %ld but %s is at step %ld: they are not from the same save",
                     p_state, step, p_model, ci.step);
            fail_cli(msg);
            goto done;
        }
        if (step >= o.steps) {
            snprintf(msg, sizeof msg, "--resume: the run is already at step %ld >= --steps %ld", step, o.steps);
            fail_cli(msg);
            goto done;
        }
    }
    info.step = step;
    if (write_config(p_cfg, &t, &info) || (o.resume && truncate_log(p_log, step))) {
        snprintf(msg, sizeof msg, "%s", dfl_last_error());
        fail_cli(msg);
        goto done;
    }
    logf = fopen(p_log, o.resume ? "a" : "w");
    if (!logf) {
        snprintf(msg, sizeof msg, "cannot open %s: %s", p_log, strerror(errno));
        fail_cli(msg);
        goto done;
    }
    if (!o.resume) fprintf(logf, "step,loss,lr,grad_norm,samples_per_s\n");

    if (is_images && !o.reflow_from) perm = malloc((size_t)ds.n * sizeof *perm);
    if (is_images && t.dequantize) xq = malloc((size_t)o.batch * per * sizeof *xq);
    xb = malloc((size_t)o.batch * per * sizeof *xb);
    if (!xb || (is_images && !o.reflow_from && !perm) || (is_images && t.dequantize && !xq)) {
        fail_cli("out of memory");
        goto done;
    }
    if (o.reflow_from) {
        /* Rectified flow, Algorithm 1 step 2 (Liu et al. 2023): pairs (Z0 = x0 from the previous
         * flow's ODE, Z1 = the noise it started from); the new flow starts from the previous
         * flow's weights. The pairs are a pure function of (teacher, seed), so --resume
         * regenerates the same ones. */
        if (o.pairs < o.batch) { /* --resume may have restored a larger batch */
            snprintf(msg, sizeof msg, "--pairs must be >= --batch (%d)", o.batch);
            fail_cli(msg);
            goto done;
        }
        dfl_params *ps = t.params(&t), *tp = dfl_net_params(teacher.net);
        if (!o.resume)
            for (int i = 0; i < ps->n; i++) memcpy(ps->p[i].t->data, tp->p[i].t->data, ps->p[i].t->n * sizeof(float));
        pair_x0 = malloc((size_t)o.pairs * per * sizeof *pair_x0);
        pair_eps = malloc((size_t)o.pairs * per * sizeof *pair_eps);
        perm = malloc((size_t)o.pairs * sizeof *perm);
        xe = malloc((size_t)o.batch * per * sizeof *xe);
        if (!pair_x0 || !pair_eps || !perm || !xe) {
            fail_cli("out of memory for the reflow pairs (--pairs)");
            goto done;
        }
        dfl_sample_cfg pc;
        dfl_sample_cfg_default(&pc);
        pc.sampler = DFL_SAMPLER_HEUN;
        pc.schedule = DFL_SCHED_UNIFORM; /* starts at t = 1 exactly, where x_T = z */
        pc.steps = o.pair_steps;
        dfl_rng prng;
        dfl_rng_init(&prng, o.seed ^ 0xA5A5A5A5DEADBEEFull);
        dfl_progress pp;
        dfl_progress_start(&pp, stderr, "reflow pairs", 0, o.pairs, 256L * (1 + o.pairs / 25600)); /* ~100 lines */
        int nfe = 0;
        for (int i0 = 0; i0 < o.pairs; i0 += 256) {
            int b = o.pairs - i0 < 256 ? o.pairs - i0 : 256;
            int cs[4] = {b, shape[1], shape[2], shape[3]};
            dfl_rng z = prng; /* dfl_sample draws x_T = sigma(1) z = z from this stream */
            dfl_rng_fill_normal(&z, pair_eps + (size_t)i0 * per, (size_t)b * per);
            if (dfl_sample(ctx, &teacher, &pc, &prng, ndim, cs, pair_x0 + (size_t)i0 * per, &nfe)) {
                dfl_progress_end(&pp);
                snprintf(msg, sizeof msg, "generating reflow pairs: %s", dfl_last_error());
                fail_cli(msg);
                goto done;
            }
            dfl_progress_update(&pp, i0 + b, NAN);
        }
        dfl_progress_end(&pp);
        fprintf(stderr, "difflow: %d reflow pairs from %s (heun, %d NFE each)\n", o.pairs, o.reflow_from, nfe);
    }
    fprintf(stderr, "difflow: training %s on %s: %zu parameters, %ld steps of batch %d, lr %g, %d thread%s -> %s\n", t.desc,
            o.data, dfl_params_count(t.params(&t)), o.steps, o.batch, o.lr, dfl_get_threads(),
            dfl_get_threads() == 1 ? "" : "s", outdir);
    if (o.resume) fprintf(stderr, "difflow: resuming at step %ld of %ld from %s\n", step, o.steps, p_state);

    /* Ctrl-C / SIGTERM: finish the current step, save a checkpoint, stop. */
    cli_signals_catch(&g_stop_signal);
    dfl_progress prog;
    dfl_progress_start(&prog, stderr, "train", step, o.steps, o.log_every);
    long cur_epoch = -1;
    long last_good = -1;
    double loss_acc = 0, gn_acc = 0, t_last = dfl_now();
    int acc_n = 0;
    while (step < o.steps) {
        /* Batch. */
        if (o.reflow_from) {
            for (int b = 0; b < o.batch; b++) {
                long pos = step * o.batch + b;
                long epoch = pos / o.pairs;
                if (epoch != cur_epoch) {
                    epoch_perm(perm, o.pairs, o.seed, epoch);
                    cur_epoch = epoch;
                }
                uint32_t j = perm[pos % o.pairs];
                memcpy(xb + (size_t)b * per, pair_x0 + (size_t)j * per, per * sizeof *xb);
                memcpy(xe + (size_t)b * per, pair_eps + (size_t)j * per, per * sizeof *xe);
            }
        } else if (is_images) {
            uint32_t idx[65536];
            for (int b = 0; b < o.batch; b++) {
                long pos = step * o.batch + b;
                long epoch = pos / ds.n;
                if (epoch != cur_epoch) {
                    epoch_perm(perm, ds.n, o.seed, epoch);
                    cur_epoch = epoch;
                }
                idx[b] = perm[pos % ds.n];
            }
            if (t.dequantize) {
                /* x = v + u in [0, 256) with u from the run's stream: a flow's data space, its first
                 * layer maps it to [-1, 1) (flow.h; flows.md 1.2) */
                for (int b = 0; b < o.batch; b++)
                    dfl_flow_dequantize8(ds.pix + (size_t)idx[b] * per, per, &rng, xq + (size_t)b * per);
                for (size_t q = 0; q < (size_t)o.batch * per; q++) xb[q] = (float)xq[q];
            } else {
                dfl_dataset_batch(&ds, idx, o.batch, xb);
            }
        } else if (dfl_toy_sample(o.data, &rng, o.batch, xb)) {
            fail_cli(dfl_last_error());
            goto done;
        }
        dfl_ctx_reset(ctx);
        if (step == 0 && !o.resume && t.data_init) {
            /* data-dependent init (ActNorm) on this first batch; the EMA starts from its result */
            if (t.data_init(&t, ctx, xb, ndim, shape)) {
                snprintf(msg, sizeof msg, "data-dependent initialisation: %s", dfl_last_error());
                fail_cli(msg);
                goto done;
            }
            dfl_params *ps = t.params(&t);
            if (opt.ema)
                for (int i = 0; i < ps->n; i++) memcpy(opt.ema[i], ps->p[i].t->data, ps->p[i].t->n * sizeof(float));
            dfl_ctx_reset(ctx);
        }
        dfl_params_zero_grad(t.params(&t));
        dfl_tensor *loss = t.loss(&t, ctx, xb, xe, ndim, shape, &rng);
        if (!loss) {
            dfl_progress_end(&prog);
            char what[1024];
            snprintf(what, sizeof what, "%s at step %ld", dfl_last_error(), step + 1);
            stopped_msg(msg, sizeof msg, what, last_good >= 0 || o.resume, p_model);
            fail_cli(msg);
            goto done;
        }
        double lv = loss->data[0];
        double gn = 0;
        if (!isfinite(lv) || dfl_backward(ctx, loss) || dfl_adam_step(&opt, &gn)) {
            dfl_progress_end(&prog);
            if (isfinite(lv) && !isfinite(gn)) lv = gn; /* the loss was finite, its gradient was not */
            if (last_good >= 0 || o.resume)
                snprintf(msg, sizeof msg, "loss or gradient is %s at step %ld; training stopped, the last good checkpoint %s is kept (try a lower --lr)",
                         fmt_value(lv), step + 1, p_model);
            else
                snprintf(msg, sizeof msg, "loss or gradient is %s at step %ld, before any checkpoint was written; training stopped (try a lower --lr)",
                         fmt_value(lv), step + 1);
            fail_cli(msg);
            goto done;
        }
        step++;
        loss_acc += lv;
        gn_acc += gn;
        acc_n++;
        if (step % o.log_every == 0 || step == o.steps) {
            double now = dfl_now();
            fprintf(logf, "%ld,%.6g,%.6g,%.6g,%.1f\n", step, loss_acc / acc_n, dfl_adam_lr(&opt, step - 1), gn_acc / acc_n,
                    (double)acc_n * o.batch / (now - t_last));
            fflush(logf);
            loss_acc = gn_acc = 0;
            acc_n = 0;
            t_last = now;
        }
        dfl_progress_update(&prog, step, lv);
        if (step % o.ckpt_every == 0 || step == o.steps || g_stop_signal) {
            char why[1024], what[1100];
            if (checkpoint_weights_bad(&t, ctx, &opt, xb, xe, ndim, shape, o.seed, step, why, sizeof why)) {
                dfl_progress_end(&prog);
                snprintf(what, sizeof what, "%s after step %ld", why, step);
                stopped_msg(msg, sizeof msg, what, last_good >= 0 || o.resume, p_model);
                fail_cli(msg);
                goto done;
            }
            info.step = step;
            dfl_status st = save_state(p_state, &opt, &rng, step, &o);
            if (!st) {
                dfl_adam_swap_ema(&opt); /* model.safetensors holds the EMA weights */
                st = t.save(&t, p_model, &info);
                dfl_adam_swap_ema(&opt);
            }
            if (!st) st = write_config(p_cfg, &t, &info);
            if (st) {
                dfl_progress_end(&prog);
                snprintf(msg, sizeof msg, "saving checkpoint: %s", dfl_last_error());
                fail_cli(msg);
                goto done;
            }
            last_good = step;
        }
        if (g_stop_signal) {
            dfl_progress_end(&prog);
            snprintf(msg, sizeof msg, "interrupted by signal %d at step %ld; checkpoint saved in %s, continue with --resume",
                     (int)g_stop_signal, step, outdir);
            fail_cli(msg);
            rc = 128 + (int)g_stop_signal; /* 130 for Ctrl-C, 143 for SIGTERM */
            goto done;
        }
    }
    dfl_progress_end(&prog);
    cli_signals_catch(NULL); /* the last checkpoint is written: Ctrl-C during the samples just ends */
    fclose(logf);
    logf = NULL;
    int nl = 0;
    float *losses = read_losses(p_log, &nl);
    char title[96];
    snprintf(title, sizeof title, "training loss, one point per %d steps", o.log_every);
    if (losses && nl > 0 && dfl_png_plot_lines(p_plot, losses, nl, 640, 400, title))
        fprintf(stderr, "difflow: warning: loss plot: %s\n", dfl_last_error());
    free(losses);

    if (o.n_samples > 0) {
        dfl_adam_swap_ema(&opt);
        int sshape[4] = {o.n_samples, shape[1], shape[2], shape[3]};
        samples = malloc((size_t)o.n_samples * per * sizeof *samples);
        char what[256] = "";
        int sampled = 0;
        double t0 = dfl_now();
        if (!samples || t.sample(&t, ctx, o.seed, o.n_samples, ndim, sshape, samples, what, sizeof what) ||
            cli_write_samples(p_samples, samples, o.n_samples, ndim, sshape)) {
            dfl_adam_swap_ema(&opt);
            /* The run itself is complete and saved: a failed end-of-run sample (e.g. an undertrained
             * flow whose inverse overflows) is reported, not turned into a failed run. */
            fprintf(stderr, "difflow: warning: end-of-run samples: %s; the model is saved (%s)\n", dfl_last_error(),
                    p_model);
        } else {
            dfl_adam_swap_ema(&opt);
            fprintf(stderr, "difflow: %d samples (%s, %.1f s) -> %s\n", o.n_samples, what, dfl_now() - t0, p_samples);
            sampled = 1;
        }
        if (!is_images && sampled) {
            char p_png[2300];
            snprintf(p_png, sizeof p_png, "%s/samples.png", outdir);
            cli_write_samples(p_png, samples, o.n_samples, ndim, sshape);
        }
    }
    fprintf(stderr, "difflow: done: %s (step %ld)\n", p_model, step);
    rc = 0;
done:
    cli_signals_catch(NULL);
    if (logf) fclose(logf);
    free(xb);
    free(xq);
    free(perm);
    free(pair_x0);
    free(pair_eps);
    free(xe);
    dfl_net_free(teacher.net);
    free(samples);
    dfl_adam_free(&opt);
    if (t.free) t.free(&t);
    dfl_ctx_free(ctx);
    dfl_dataset_free(&ds);
    return rc;
}
