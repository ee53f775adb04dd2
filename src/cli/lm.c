/* difflow lm train|generate|eval: the byte-level Transformer language model (include/difflow/lm.h,
 * docs/LM.md). */
#include "cli.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "difflow/io.h"
#include "difflow/lm.h"
#include "difflow/optim.h"
#include "difflow/progress.h"

static int lm_fail(int rc, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;

static int lm_fail(int rc, const char *fmt, ...)
{
    char msg[4096];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    fprintf(stderr, "difflow: error: %s\n", msg);
    return rc;
}

/* ---------------------------------------------------------------- shared flags */

/* The RoPE flags of every lm subcommand. */
typedef struct {
    const char *layout, *scaling;
    int rotary_dim, orig_ctx;
    double theta, factor, yarn_alpha, yarn_beta;
} rope_flags;

/* Applies the RoPE flags that were given to cfg (train: all; eval/generate: scaling and YaRN only).
 * Returns 0, or 2 after printing the error line. */
static int apply_rope_flags(arg_spec *specs, const rope_flags *rf, dfl_lm_cfg *c)
{
    static const char *all[] = {"--rope-layout", "--rotary-dim", "--rope-theta", "--rope-scaling", "--rope-factor",
                                "--yarn-alpha", "--yarn-beta", "--rope-orig-ctx"};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) {
        arg_spec *s = args_find(specs, all[i]);
        if (s && s->seen && !dfl_posenc_uses_rope(c->posenc))
            return lm_fail(2, "%s applies to --posenc rope, rope-linear and xpos, not %s (%s)", all[i], dfl_posenc_name(c->posenc),
                           all[i]);
    }
    arg_spec *s;
    if ((s = args_find(specs, "--rope-layout")) && s->seen && dfl_lm_rope_layout_parse(rf->layout, &c->rope.layout))
        return lm_fail(2, "%s (--rope-layout)", dfl_last_error());
    if ((s = args_find(specs, "--rotary-dim")) && s->seen) {
        if (rf->rotary_dim < 1 || rf->rotary_dim % 2)
            return lm_fail(2, "rotary dimension %d must be even and >= 2: RoPE rotates pairs of lanes (--rotary-dim)", rf->rotary_dim);
        c->rope.rot_dim = rf->rotary_dim;
    }
    if ((s = args_find(specs, "--rope-theta")) && s->seen) {
        if (!(rf->theta > 0)) return lm_fail(2, "RoPE base %g must be > 0 (--rope-theta)", rf->theta);
        c->rope.theta = rf->theta;
    }
    arg_spec *sf = args_find(specs, "--rope-factor");
    if ((s = args_find(specs, "--rope-scaling")) && s->seen) {
        if (dfl_lm_rope_scaling_parse(rf->scaling, &c->rope.scaling)) return lm_fail(2, "%s (--rope-scaling)", dfl_last_error());
        if (c->rope.scaling != DFL_ROPE_SCALE_NONE && !(sf && sf->seen))
            return lm_fail(2, "--rope-scaling %s needs --rope-factor S (target length / training context)", rf->scaling);
        if (c->rope.scaling == DFL_ROPE_SCALE_NONE) c->rope.factor = 1.0;
    }
    if (sf && sf->seen) {
        if (!(s && s->seen) || c->rope.scaling == DFL_ROPE_SCALE_NONE)
            return lm_fail(2, "--rope-factor needs --rope-scaling pi, ntk or yarn (--rope-factor)");
        if (!(rf->factor >= 1.0)) return lm_fail(2, "RoPE scaling factor %g must be >= 1 (--rope-factor)", rf->factor);
        c->rope.factor = rf->factor;
    }
    /* YaRN's ramp (Peng et al. 2023 sec. 3.2: gamma(r) = 0 below r = alpha, 1 above r = beta, with
     * r = L / lambda_i) and its original context L: meaningful with yarn scaling only. */
    static const char *yarn[] = {"--yarn-alpha", "--yarn-beta", "--rope-orig-ctx"};
    for (size_t i = 0; i < 3; i++)
        if ((s = args_find(specs, yarn[i])) && s->seen && c->rope.scaling != DFL_ROPE_SCALE_YARN)
            return lm_fail(2, "%s applies to --rope-scaling yarn, not %s (%s)", yarn[i], dfl_lm_rope_scaling_name(c->rope.scaling),
                           yarn[i]);
    if ((s = args_find(specs, "--yarn-alpha")) && s->seen) {
        if (!(rf->yarn_alpha >= 0)) return lm_fail(2, "YaRN alpha %g must be >= 0 (--yarn-alpha)", rf->yarn_alpha);
        c->rope.yarn_alpha = rf->yarn_alpha;
    }
    if ((s = args_find(specs, "--yarn-beta")) && s->seen) c->rope.yarn_beta = rf->yarn_beta;
    if (c->rope.scaling == DFL_ROPE_SCALE_YARN && !(c->rope.yarn_beta > c->rope.yarn_alpha))
        return lm_fail(2, "YaRN needs beta %g > alpha %g (--yarn-beta)", c->rope.yarn_beta, c->rope.yarn_alpha);
    if ((s = args_find(specs, "--rope-orig-ctx")) && s->seen) {
        if (rf->orig_ctx < 1 || rf->orig_ctx > 1 << 24)
            return lm_fail(2, "YaRN original context %d must be in 1..16777216 (--rope-orig-ctx)", rf->orig_ctx);
        c->rope.orig_ctx = rf->orig_ctx;
    }
    return 0;
}

/* The flag to name for a config that dfl_lm_cfg_check refused: the setting of the first of its
 * checks that c fails, in that function's order. The settings checked before it here (context,
 * layers, dim, heads, ffn, the YaRN and RoPE flags' ranges) never reach it. Overwrites the last
 * error (dfl_rope_rot_dim): copy the message first. */
static const char *cfg_check_flag(const dfl_lm_cfg *c, int rotary_dim_seen)
{
    int Dh = c->dim / c->heads;
    if (dfl_posenc_uses_rope(c->posenc)) {
        if (dfl_rope_rot_dim(&c->rope, Dh) < 0) return rotary_dim_seen ? "--rotary-dim / --heads" : "--dim / --heads";
        if (c->posenc == DFL_POSENC_XPOS && c->rope.scaling != DFL_ROPE_SCALE_NONE) return "--rope-scaling";
    }
    switch (c->posenc) {
    case DFL_POSENC_LEARNED: return "--context / --max-positions";
    case DFL_POSENC_SINUSOIDAL: return "--dim";
    case DFL_POSENC_SHAW: return "--shaw-k";
    default: return "--posenc";
    }
}

#define ROPE_TRAIN_SPECS(rf)                                                                                            \
    {"--rope-layout", NULL, ARG_STR, &(rf).layout, "L", "rope/rope-linear/xpos: interleaved (RoFormer) or half (NeoX)", 0}, \
        {"--rotary-dim", NULL, ARG_INT, &(rf).rotary_dim, "N", "rotated lanes per head, even (default: the head dimension)", 0}, \
        {"--rope-theta", NULL, ARG_FLOAT, &(rf).theta, "B", "RoPE base theta", 0}

#define ROPE_SCALING_SPECS(rf)                                                                                          \
    {"--rope-scaling", NULL, ARG_STR, &(rf).scaling, "S", "rope/rope-linear: none, pi, ntk or yarn (default none)", 0},  \
        {"--rope-factor", NULL, ARG_FLOAT, &(rf).factor, "S", "scaling factor s = target length / training context (no default: required with pi, ntk, yarn)", 0}, \
        {"--yarn-alpha", "--yarn-beta-slow", ARG_FLOAT, &(rf).yarn_alpha, "A",                                       \
         "yarn: ramp start alpha in r = L/wavelength; pairs with r < alpha are interpolated (default 1)", 0},          \
        {"--yarn-beta", "--yarn-beta-fast", ARG_FLOAT, &(rf).yarn_beta, "B",                                         \
         "yarn: ramp end beta; pairs with r > beta keep their frequency (default 32)", 0},                             \
        {"--rope-orig-ctx", "--yarn-orig-ctx", ARG_INT, &(rf).orig_ctx, "L",                                         \
         "yarn: original context L of r = L/wavelength (default: the training context)", 0}

static const char *text_name(const char *path) { return path && *path ? path : DFL_FORTUNES_DIR " (Debian fortunes)"; }

/* Loads the corpus (path NULL or "" = the fortunes corpus); prints the error itself. */
static int load_text(const char *path, uint8_t **data, size_t *n)
{
    if (dfl_lm_corpus_load(path && *path ? path : NULL, data, n)) return lm_fail(1, "%s (--text)", dfl_last_error());
    return 0;
}

/* ---------------------------------------------------------------- training state */

static const char *STATE_PRE[3] = {"param.", "adam.m.", "adam.v."};

static dfl_status lm_save_state(const char *path, dfl_adam *opt, long step)
{
    dfl_params *ps = opt->params;
    int n = ps->n * 3;
    dfl_named_tensor *ts = calloc((size_t)n, sizeof *ts);
    dfl_tensor *views = calloc((size_t)n, sizeof *views);
    char *names = calloc((size_t)n, 256);
    dfl_status st = DFL_OK;
    if (!ts || !views || !names) st = dfl_fail(DFL_ERR_NOMEM, "%s: out of memory", path);
    for (int i = 0; !st && i < ps->n; i++)
        for (int k = 0; k < 3; k++) {
            int j = i * 3 + k;
            views[j] = *ps->p[i].t;
            views[j].data = k == 0 ? ps->p[i].t->data : k == 1 ? opt->m[i] : opt->v[i];
            snprintf(names + (size_t)j * 256, 256, "%s%s", STATE_PRE[k], ps->p[i].name);
            ts[j] = (dfl_named_tensor){names + (size_t)j * 256, &views[j]};
        }
    if (!st) {
        char s_step[32], s_adam[32];
        snprintf(s_step, sizeof s_step, "%ld", step);
        snprintf(s_adam, sizeof s_adam, "%ld", opt->step);
        const char *meta[] = {"format", "difflow-lm-train-state", "step", s_step, "adam_step", s_adam};
        st = dfl_safetensors_save(path, ts, n, meta, 3);
    }
    free(names);
    free(views);
    free(ts);
    return st;
}

static dfl_status lm_load_state(const char *path, dfl_adam *opt, long *step)
{
    dfl_st_file *f = NULL;
    dfl_status st = dfl_safetensors_open(path, &f);
    if (st) return st;
    const char *fmt = dfl_st_meta(f, "format");
    if (!fmt || strcmp(fmt, "difflow-lm-train-state")) {
        dfl_st_close(f);
        return dfl_fail(DFL_ERR_FORMAT, "%s: not a difflow LM training state", path);
    }
    dfl_params *ps = opt->params;
    for (int i = 0; i < ps->n && !st; i++)
        for (int k = 0; k < 3 && !st; k++) {
            char name[300];
            snprintf(name, sizeof name, "%s%s", STATE_PRE[k], ps->p[i].name);
            int nd, shp[4];
            const float *d = dfl_st_get(f, name, &nd, shp);
            if (!d || dfl_shape_numel(nd, shp) != ps->p[i].t->n) {
                st = dfl_fail(DFL_ERR_MISMATCH, "%s: no tensor '%s' of the right size: the state is from another model", path, name);
                break;
            }
            memcpy(k == 0 ? ps->p[i].t->data : k == 1 ? opt->m[i] : opt->v[i], d, ps->p[i].t->n * sizeof(float));
        }
    if (!st) {
        const char *v = dfl_st_meta(f, "step");
        *step = v ? strtol(v, NULL, 10) : 0;
        v = dfl_st_meta(f, "adam_step");
        opt->step = v ? strtol(v, NULL, 10) : *step;
    }
    dfl_st_close(f);
    return st;
}

static volatile sig_atomic_t g_lm_stop = 0;

static int mkdirs(const char *path)
{
    char buf[4096];
    snprintf(buf, sizeof buf, "%s", path);
    for (char *p = buf + 1; *p; p++) {
        if (*p != '/') continue;
        *p = 0;
        if (mkdir(buf, 0777) && errno != EEXIST) return -1;
        *p = '/';
    }
    return mkdir(buf, 0777) && errno != EEXIST ? -1 : 0;
}

/* ---------------------------------------------------------------- lm train */

/* On --resume: the first setting where the run's resolved config a and the requested b differ,
 * written as "--FLAG A, not B (--FLAG)" into msg; 0 when they are the same, else 1. The order is
 * that of dfl_lm_cfg, so the flag named is the first one that differs. */
static int cfg_diff(const dfl_lm_cfg *a, const dfl_lm_cfg *b, char *msg, size_t cap)
{
#define DIFF_INT(F, FLAG)                                                                                    \
    if (a->F != b->F) {                                                                                      \
        snprintf(msg, cap, "%s %d, not %d (%s)", FLAG, a->F, b->F, FLAG);                                    \
        return 1;                                                                                            \
    }
#define DIFF_DBL(F, FLAG)                                                                                    \
    if (a->F != b->F) {                                                                                      \
        snprintf(msg, cap, "%s %g, not %g (%s)", FLAG, a->F, b->F, FLAG);                                    \
        return 1;                                                                                            \
    }
#define DIFF_STR(F, NAME, FLAG)                                                                              \
    if (a->F != b->F) {                                                                                      \
        snprintf(msg, cap, "%s %s, not %s (%s)", FLAG, NAME(a->F), NAME(b->F), FLAG);                        \
        return 1;                                                                                            \
    }
    DIFF_STR(posenc, dfl_posenc_name, "--posenc")
    DIFF_INT(context, "--context")
    DIFF_INT(layers, "--layers")
    DIFF_INT(dim, "--dim")
    DIFF_INT(heads, "--heads")
    DIFF_INT(ffn, "--ffn")
    DIFF_INT(max_positions, "--max-positions")
    DIFF_STR(rope.layout, dfl_lm_rope_layout_name, "--rope-layout")
    DIFF_INT(rope.rot_dim, "--rotary-dim")
    DIFF_DBL(rope.theta, "--rope-theta")
    DIFF_STR(rope.scaling, dfl_lm_rope_scaling_name, "--rope-scaling")
    DIFF_DBL(rope.factor, "--rope-factor")
    DIFF_INT(rope.orig_ctx, "--rope-orig-ctx")
    DIFF_DBL(rope.yarn_alpha, "--yarn-alpha")
    DIFF_DBL(rope.yarn_beta, "--yarn-beta")
    DIFF_INT(shaw_k, "--shaw-k")
#undef DIFF_INT
#undef DIFF_DBL
#undef DIFF_STR
    return 0;
}

static const char *TRAIN_USAGE =
    "usage: difflow lm train [--text FILE] [--posenc NAME] [--context 128] [--layers 4] [--dim 128] [--heads 4]\n"
    "                        [RoPE flags] [--steps N] [--batch B] [--lr X] [--seed S] [--out runs/lm-POSENC] [--resume]\n"
    "\n"
    "Trains a byte-level decoder-only Transformer (pre-norm, causal, GELU MLP) on next-byte prediction over\n"
    "random windows of --context bytes from the first 90% of the text; the last 10% is the validation split\n"
    "(bits per byte logged every --eval-every steps). Default text: the Debian fortunes corpus, every file of\n"
    DFL_FORTUNES_DIR " concatenated. Writes model.safetensors (config in its metadata), train_state.safetensors,\n"
    "config.json and log.csv to --out. Ctrl-C saves and stops; --resume continues. docs/LM.md has the details.\n"
    "Positional encodings: none, learned, sinusoidal, shaw, t5, alibi, rope, rope-linear (linear attention with\n"
    "RoPE, RoFormer sec. 3.3), xpos.";

typedef struct {
    const char *text, *posenc, *out;
    int context, layers, dim, heads, ffn, max_positions, shaw_k, batch, warmup, threads, log_every, eval_every, ckpt_every,
        val_bytes, resume;
    long steps;
    double lr, clip;
    uint64_t seed;
} lm_train_opts;

static void draw_batch(const uint8_t *text, size_t ntrain, int T, int B, uint64_t seed, long step, uint8_t *win)
{
    dfl_rng r;
    dfl_rng_init(&r, seed * 0x9E3779B97F4A7C15ull + 0xBF58476D1CE4E5B9ull * (uint64_t)(step + 1));
    uint32_t span = (uint32_t)(ntrain - (size_t)T); /* starts 0 .. ntrain - T - 1 */
    for (int b = 0; b < B; b++) {
        uint32_t s = dfl_rng_below(&r, span);
        memcpy(win + (size_t)b * (T + 1), text + s, (size_t)T + 1);
    }
}

static int lm_train(int argc, char **argv)
{
    lm_train_opts o = {.text = NULL, .posenc = "rope", .out = NULL, .context = 128, .layers = 4, .dim = 128, .heads = 4,
                       .ffn = 0, .max_positions = 0, .shaw_k = 16, .batch = 32, .warmup = -1, .threads = 0, .log_every = -1,
                       .eval_every = -1, .ckpt_every = -1, .val_bytes = 32768, .resume = 0, .steps = 600, .lr = 1e-3,
                       .clip = 1.0, .seed = 0};
    rope_flags rf = {.layout = "interleaved", .scaling = "none", .rotary_dim = 0, .theta = 10000, .factor = 1,
                     .yarn_alpha = 1, .yarn_beta = 32, .orig_ctx = 0};
    arg_spec specs[] = {
        {"--text", NULL, ARG_STR, &o.text, "FILE", "training text (default: the Debian fortunes corpus)", 0},
        {"--posenc", NULL, ARG_STR, &o.posenc, "NAME", "none, learned, sinusoidal, shaw, t5, alibi, rope, rope-linear, xpos", 0},
        {"--context", NULL, ARG_INT, &o.context, "T", "training context in bytes", 0},
        {"--layers", NULL, ARG_INT, &o.layers, "N", "Transformer blocks", 0},
        {"--dim", NULL, ARG_INT, &o.dim, "D", "model width", 0},
        {"--heads", NULL, ARG_INT, &o.heads, "H", "attention heads (head dimension D/H)", 0},
        {"--ffn", NULL, ARG_INT, &o.ffn, "F", "MLP hidden width (default 4 D)", 0},
        {"--max-positions", NULL, ARG_INT, &o.max_positions, "L", "learned: rows of the position table (default --context)", 0},
        {"--shaw-k", NULL, ARG_INT, &o.shaw_k, "K", "shaw: clipping distance of the relative positions", 0},
        ROPE_TRAIN_SPECS(rf),
        ROPE_SCALING_SPECS(rf),
        {"--steps", NULL, ARG_LONG, &o.steps, "N", "optimizer steps (default 600: 6.5 CPU-minutes at --threads 1, docs/LM.md)", 0},
        {"--batch", NULL, ARG_INT, &o.batch, "B", "windows per step", 0},
        {"--lr", NULL, ARG_FLOAT, &o.lr, "X", "Adam peak learning rate (linear warmup, cosine decay to 10%)", 0},
        {"--warmup", NULL, ARG_INT, &o.warmup, "N", "warmup steps (default steps/20)", 0},
        {"--clip", NULL, ARG_FLOAT, &o.clip, "X", "gradient-norm clipping (0: off)", 0},
        {"--seed", NULL, ARG_U64, &o.seed, "S", "seed for the initial weights and the windows", 0},
        {"--out", "-o", ARG_STR, &o.out, "DIR", "run directory (default runs/lm-POSENC)", 0},
        {"--resume", NULL, ARG_BOOL, &o.resume, NULL, "continue the run in --out (model flags and --text not given: the run's)", 0},
        {"--threads", NULL, ARG_INT, &o.threads, "N", "threads (0: all cores)", 0},
        {"--log-every", NULL, ARG_INT, &o.log_every, "N", "log.csv interval (default steps/100)", 0},
        {"--eval-every", NULL, ARG_INT, &o.eval_every, "N", "validation interval (default steps/10)", 0},
        {"--val-bytes", NULL, ARG_INT, &o.val_bytes, "N", "validation bytes scored during training (0: the whole split)", 0},
        {"--ckpt-every", NULL, ARG_INT, &o.ckpt_every, "N", "checkpoint interval (default steps/4)", 0},
        {NULL, NULL, 0, NULL, NULL, NULL, 0}};
    int pr = args_parse("lm train", TRAIN_USAGE, specs, argc, argv);
    if (pr) return pr > 0 ? 0 : 2;

    /* Every setting is checked before any work. */
    dfl_lm_cfg c = dfl_lm_cfg_default();
    if (dfl_posenc_parse(o.posenc, &c.posenc)) return lm_fail(2, "%s (--posenc)", dfl_last_error());
    char outdir[2048], p_model[2300], p_state[2300], p_cfg[2300], p_log[2300];
    if (o.out) snprintf(outdir, sizeof outdir, "%s", o.out);
    else snprintf(outdir, sizeof outdir, "runs/lm-%s", dfl_posenc_name(c.posenc));
    snprintf(p_model, sizeof p_model, "%s/model.safetensors", outdir);
    snprintf(p_state, sizeof p_state, "%s/train_state.safetensors", outdir);
    snprintf(p_cfg, sizeof p_cfg, "%s/config.json", outdir);
    snprintf(p_log, sizeof p_log, "%s/log.csv", outdir);
    /* On --resume the run's config is the base: the model flags given are checked against it below,
     * the others (and --text) are taken from it, so "lm train --out DIR --resume" continues a run. */
    dfl_lm_cfg prev_cfg;
    int have_prev = 0;
    char prev_text[4096];
    if (o.resume && access(p_model, F_OK) == 0) {
        dfl_lm *prev = NULL;
        char *pt = NULL;
        if (dfl_lm_load(p_model, &prev, NULL, &pt)) return lm_fail(1, "--resume: %s", dfl_last_error());
        prev_cfg = *dfl_lm_config(prev);
        dfl_lm_free(prev);
        have_prev = 1;
        dfl_posenc pe = c.posenc;
        c = prev_cfg;
        if (args_find(specs, "--posenc")->seen) c.posenc = pe;
        if (!args_find(specs, "--text")->seen && pt && *pt && strlen(pt) < sizeof prev_text) {
            snprintf(prev_text, sizeof prev_text, "%s", pt);
            o.text = prev_text;
        }
        free(pt);
    }
#define TAKE(flag, field, val) \
    if (!have_prev || args_find(specs, flag)->seen) c.field = (val)
    if (args_find(specs, "--max-positions")->seen && c.posenc != DFL_POSENC_LEARNED)
        return lm_fail(2, "--max-positions applies to --posenc learned, not %s (--max-positions)", dfl_posenc_name(c.posenc));
    if (args_find(specs, "--shaw-k")->seen && c.posenc != DFL_POSENC_SHAW)
        return lm_fail(2, "--shaw-k applies to --posenc shaw, not %s (--shaw-k)", dfl_posenc_name(c.posenc));
    if (o.context < 2 || o.context > 65536) return lm_fail(2, "--context must be in 2..65536");
    if (o.layers < 1 || o.layers > 64) return lm_fail(2, "--layers must be in 1..64");
    if (o.dim < 1 || o.dim > 8192) return lm_fail(2, "--dim must be in 1..8192");
    if (args_find(specs, "--ffn")->seen && (o.ffn < 1 || o.ffn > 65536)) return lm_fail(2, "--ffn must be in 1..65536");
    if (args_find(specs, "--max-positions")->seen && o.max_positions < 1) return lm_fail(2, "--max-positions must be >= 1");
    TAKE("--context", context, o.context);
    TAKE("--layers", layers, o.layers);
    TAKE("--dim", dim, o.dim);
    TAKE("--heads", heads, o.heads);
    TAKE("--ffn", ffn, o.ffn);
    TAKE("--max-positions", max_positions, o.max_positions);
    TAKE("--shaw-k", shaw_k, o.shaw_k);
#undef TAKE
    if (c.heads < 1 || c.dim % c.heads) return lm_fail(2, "--dim %d is not divisible by --heads %d (--heads)", c.dim, c.heads);
    int rc = apply_rope_flags(specs, &rf, &c);
    if (rc) return rc;
    if (dfl_lm_cfg_check(&c)) {
        char m[512];
        snprintf(m, sizeof m, "%s", dfl_last_error());
        return lm_fail(2, "%s (%s)", m, cfg_check_flag(&c, args_find(specs, "--rotary-dim")->seen));
    }
    if (have_prev) {
        dfl_lm_cfg r = dfl_lm_cfg_resolved(&c); /* as dfl_lm_new resolves it, to compare */
        char d[512];
        if (cfg_diff(&prev_cfg, &r, d, sizeof d)) {
                return lm_fail(2, "--resume: the run was trained with %s; drop the flag or pass the run's value", d);
        }
    }
    o.context = c.context; /* the run's on --resume without --context */
    if (o.steps < 1) return lm_fail(2, "--steps must be >= 1");
    if (o.batch < 1 || o.batch > 4096) return lm_fail(2, "--batch must be in 1..4096");
    if (!(o.lr > 0)) return lm_fail(2, "--lr must be > 0");
    if (o.clip < 0) return lm_fail(2, "--clip must be >= 0");
    if (args_find(specs, "--warmup")->seen && o.warmup < 0) return lm_fail(2, "--warmup must be >= 0");
    if (args_find(specs, "--log-every")->seen && o.log_every < 1) return lm_fail(2, "--log-every must be >= 1");
    if (args_find(specs, "--eval-every")->seen && o.eval_every < 1) return lm_fail(2, "--eval-every must be >= 1");
    if (args_find(specs, "--ckpt-every")->seen && o.ckpt_every < 1) return lm_fail(2, "--ckpt-every must be >= 1");
    if (o.val_bytes < 0) return lm_fail(2, "--val-bytes must be >= 0");
    if (o.threads < 0) return lm_fail(2, "--threads must be >= 0");
    if (o.warmup < 0) o.warmup = (int)(o.steps / 20);
    if (o.log_every < 0) o.log_every = o.steps >= 100 ? (int)(o.steps / 100) : 1;
    if (o.eval_every < 0) o.eval_every = o.steps >= 10 ? (int)(o.steps / 10) : (int)o.steps;
    if (o.ckpt_every < 0) o.ckpt_every = o.steps >= 4 ? (int)(o.steps / 4) : 1;

    uint8_t *text = NULL;
    size_t n = 0;
    if (load_text(o.text, &text, &n)) return 1;
    size_t ntrain = dfl_lm_split(n), nval = n - ntrain;
    if (ntrain < (size_t)o.context + 2 || nval < 2) {
        free(text);
        return lm_fail(1, "%s has %zu bytes: too few for --context %d (the first 90%% must hold a window of %d bytes, the last 10%% at least 2) (--text)",
                       text_name(o.text), n, o.context, o.context + 1);
    }

    if (mkdirs(outdir) || access(outdir, W_OK)) {
        free(text);
        return lm_fail(1, "cannot write to run directory '%s': %s (--out)", outdir, strerror(errno ? errno : EACCES));
    }
    if (!o.resume && access(p_model, F_OK) == 0) {
        free(text);
        return lm_fail(2, "run directory '%s' already holds a model; pass --resume to continue it or --out for a new run", outdir);
    }
    dfl_set_threads(o.threads);

    rc = 1;
    dfl_rng init_rng;
    dfl_rng_init(&init_rng, o.seed ^ 0x5DEECE66Dull);
    dfl_lm *m = dfl_lm_new(&c, &init_rng);
    dfl_ctx *ctx = dfl_ctx_new();
    dfl_adam opt;
    memset(&opt, 0, sizeof opt);
    uint8_t *win = malloc((size_t)o.batch * (o.context + 1));
    FILE *logf = NULL;
    char *js = NULL;
    if (!m || !ctx || !win) {
        lm_fail(1, "%s", m ? "out of memory" : dfl_last_error());
        goto done;
    }
    dfl_adam_cfg acfg = {.lr = (float)o.lr, .beta1 = 0.9f, .beta2 = 0.95f, .eps = 1e-8f, .weight_decay = 0.f,
                         .warmup = o.warmup, .clip = (float)o.clip, .ema_halflife = 0.f, .batch = o.batch};
    if (dfl_adam_init(&opt, dfl_lm_params(m), &acfg)) {
        lm_fail(1, "%s", dfl_last_error());
        goto done;
    }
    long step = 0;
    int saved = o.resume; /* a checkpoint exists in outdir */
    js = dfl_lm_cfg_json(dfl_lm_config(m));
    if (!js) {
        lm_fail(1, "out of memory");
        goto done;
    }
    if (o.resume) {
        dfl_lm *prev = NULL;
        long pstep = 0;
        if (dfl_lm_load(p_model, &prev, &pstep, NULL)) {
            lm_fail(1, "--resume: %s", dfl_last_error());
            goto done;
        }
        char *pjs = dfl_lm_cfg_json(dfl_lm_config(prev));
        int same = pjs && !strcmp(pjs, js);
        dfl_lm_free(prev);
        if (!same) { /* a setting without a flag (t5 buckets, xPos gamma): cfg_diff compared the flags' */
            lm_fail(1, "--resume: %s has a model config that lm train's flags do not give", p_model);
            free(pjs);
            goto done;
        }
        free(pjs);
        if (lm_load_state(p_state, &opt, &step)) {
            lm_fail(1, "--resume: %s", dfl_last_error());
            goto done;
        }
        if (step != pstep) {
            lm_fail(1, "--resume: %s is at step %ld but %s at step %ld: not from the same save", p_state, step, p_model, pstep);
            goto done;
        }
        if (step >= o.steps) {
            lm_fail(2, "--resume: the run is already at step %ld >= --steps %ld; pass a larger --steps (--steps)", step, o.steps);
            rc = 2;
            goto done;
        }
        fprintf(stderr, "difflow: resuming at step %ld of %ld\n", step, o.steps);
    }
    if (dfl_write_file_atomic(p_cfg, js, strlen(js))) {
        lm_fail(1, "%s", dfl_last_error());
        goto done;
    }
    logf = fopen(p_log, o.resume ? "a" : "w");
    if (!logf) {
        lm_fail(1, "cannot open %s: %s", p_log, strerror(errno));
        goto done;
    }
    if (!o.resume) fprintf(logf, "step,loss,lr,grad_norm,bytes_per_s,val_bpb\n");
    size_t vn = o.val_bytes > 0 && (size_t)o.val_bytes < nval ? (size_t)o.val_bytes : nval;
    fprintf(stderr,
            "difflow: lm %s, %d layers, dim %d, %d heads, context %d: %zu parameters; text %s: %zu bytes, training bytes "
            "[0, %zu), validation bytes [%zu, %zu) (%zu scored in training); %ld steps of %d windows, lr %g, %d thread%s -> %s\n",
            dfl_posenc_name(c.posenc), c.layers, c.dim, c.heads, c.context, dfl_params_count(dfl_lm_params(m)), text_name(o.text),
            n, ntrain, ntrain, n, vn, o.steps, o.batch, o.lr, dfl_get_threads(), dfl_get_threads() == 1 ? "" : "s", outdir);

    cli_signals_catch(&g_lm_stop);
    const char *extra[] = {"text", o.text ? o.text : ""};
    dfl_progress prog;
    dfl_progress_start(&prog, stderr, "lm train", step, o.steps, o.log_every);
    double loss_acc = 0, gn_acc = 0, t_last = dfl_now(), val = NAN;
    int acc_n = 0;
    while (step < o.steps) {
        draw_batch(text, ntrain, o.context, o.batch, o.seed, step, win);
        /* cosine decay from lr to lr/10 over the run, after the linear warmup */
        opt.cfg.lr = (float)(o.lr * (0.1 + 0.45 * (1.0 + cos(3.14159265358979323846 * (double)step / (double)o.steps))));
        dfl_ctx_reset(ctx);
        dfl_params_zero_grad(dfl_lm_params(m));
        dfl_tensor *loss = dfl_lm_loss(ctx, m, win, o.batch, o.context);
        double lv = loss ? loss->data[0] : NAN, gn = 0;
        if (!loss || !isfinite(lv) || dfl_backward(ctx, loss) || dfl_adam_step(&opt, &gn)) {
            dfl_progress_end(&prog);
            if (saved)
                lm_fail(1, "loss or gradient is not finite at step %ld; training stopped, the last checkpoint %s is kept (try a lower --lr)",
                        step + 1, p_model);
            else
                lm_fail(1, "loss or gradient is not finite at step %ld, before any checkpoint was written; training stopped (try a lower --lr)",
                        step + 1);
            goto done;
        }
        step++;
        loss_acc += lv;
        gn_acc += gn;
        acc_n++;
        int do_val = step % o.eval_every == 0 || step == o.steps;
        if (do_val) {
            if (dfl_lm_eval_bpb(ctx, m, text + ntrain, vn, o.context, 4096, &val, NULL)) {
                dfl_progress_end(&prog);
                lm_fail(1, "validation: %s", dfl_last_error());
                goto done;
            }
        }
        if (step % o.log_every == 0 || step == o.steps || do_val) {
            double now = dfl_now();
            fprintf(logf, "%ld,%.6g,%.6g,%.6g,%.1f,", step, loss_acc / acc_n, dfl_adam_lr(&opt, step - 1), gn_acc / acc_n,
                    (double)acc_n * o.batch * o.context / (now - t_last));
            if (do_val) fprintf(logf, "%.6g", val);
            fprintf(logf, "\n");
            fflush(logf);
            if (do_val) {
                dfl_progress_end(&prog);
                fprintf(stderr, "difflow: step %ld: train loss %.4f nats (%.4f bits/byte), validation %.4f bits/byte\n", step,
                        loss_acc / acc_n, loss_acc / acc_n / log(2.0), val);
            }
            loss_acc = gn_acc = 0;
            acc_n = 0;
            t_last = dfl_now();
        }
        dfl_progress_update(&prog, step, lv);
        if (step % o.ckpt_every == 0 || step == o.steps || g_lm_stop) {
            if (lm_save_state(p_state, &opt, step) || dfl_lm_save(p_model, m, step, extra, 1)) {
                dfl_progress_end(&prog);
                lm_fail(1, "saving checkpoint: %s", dfl_last_error());
                goto done;
            }
            saved = 1;
        }
        if (g_lm_stop) {
            dfl_progress_end(&prog);
            lm_fail(128 + (int)g_lm_stop, "interrupted by signal %d at step %ld; checkpoint saved in %s, continue with --resume", (int)g_lm_stop, step,
                    outdir);
            rc = 128 + (int)g_lm_stop; /* 130 for Ctrl-C, 143 for SIGTERM */
            goto done;
        }
    }
    dfl_progress_end(&prog);
    fprintf(stderr, "difflow: done: %s (step %ld, validation %.4f bits/byte at context %d)\n", p_model, step, val, o.context);
    rc = 0;
done:
    cli_signals_catch(NULL);
    if (logf) fclose(logf);
    free(js);
    free(win);
    dfl_adam_free(&opt);
    dfl_ctx_free(ctx);
    dfl_lm_free(m);
    free(text);
    return rc;
}

/* ---------------------------------------------------------------- checkpoint + scaling */

/* Loads --ckpt and applies the --rope-scaling/--rope-factor/YaRN overrides. Returns 0 or the exit code. */
static int open_lm(const char *ckpt, arg_spec *specs, const rope_flags *rf, dfl_lm **m, char **meta_text)
{
    if (!ckpt) return lm_fail(2, "needs --ckpt FILE, a model.safetensors written by difflow lm train (--ckpt)");
    long step;
    if (dfl_lm_load(ckpt, m, &step, meta_text)) return lm_fail(1, "%s (--ckpt)", dfl_last_error());
    dfl_lm_cfg c = *dfl_lm_config(*m);
    int rc = apply_rope_flags(specs, rf, &c);
    static const char *ext[] = {"--rope-scaling", "--rope-factor", "--yarn-alpha", "--yarn-beta", "--rope-orig-ctx"};
    int given = 0;
    for (size_t i = 0; i < sizeof ext / sizeof ext[0]; i++) given |= args_find(specs, ext[i])->seen;
    if (!rc && given && dfl_lm_set_rope_extension(*m, &c.rope)) rc = lm_fail(2, "%s (--rope-scaling)", dfl_last_error());
    if (rc) {
        dfl_lm_free(*m);
        *m = NULL;
        if (meta_text) {
            free(*meta_text);
            *meta_text = NULL;
        }
    }
    return rc;
}

/* ---------------------------------------------------------------- lm generate */

static const char *GEN_USAGE =
    "usage: difflow lm generate --ckpt FILE [--prompt TEXT] [-n BYTES] [--temperature T] [--top-k K] [--seed S] [--window W]\n"
    "\n"
    "Prints the prompt followed by n sampled bytes. Each byte is drawn from softmax(logits / T) over the top K bytes\n"
    "with one draw from the seeded generator, so the same checkpoint, flags and seed print the same text. The model\n"
    "sees the last W bytes (no cache; positions 0..W-1 inside that window). W defaults to 4x the training context,\n"
    "beyond it for every encoding except learned, whose window is its table (the window then slides).";

static int emit_stdout(uint8_t b, void *u)
{
    (void)u;
    fputc(b, stdout);
    fflush(stdout);
    return 0;
}

static int lm_generate(int argc, char **argv)
{
    const char *ckpt = NULL, *prompt = NULL;
    int nbytes = 256, top_k = 0, window = 0, threads = 0;
    double temperature = 0.8;
    uint64_t seed = 0;
    rope_flags rf = {.layout = NULL, .scaling = "none", .rotary_dim = 0, .theta = 0, .factor = 1,
                     .yarn_alpha = 1, .yarn_beta = 32, .orig_ctx = 0};
    arg_spec specs[] = {
        {"--ckpt", NULL, ARG_STR, &ckpt, "FILE", "model.safetensors from difflow lm train", 0},
        {"--prompt", NULL, ARG_STR, &prompt, "TEXT", "text to continue (default: start after a newline)", 0},
        {"--bytes", "-n", ARG_INT, &nbytes, "N", "bytes to generate", 0},
        {"--temperature", NULL, ARG_FLOAT, &temperature, "T", "sampling temperature (> 0)", 0},
        {"--top-k", NULL, ARG_INT, &top_k, "K", "sample among the K most likely bytes (0: all)", 0},
        {"--seed", NULL, ARG_U64, &seed, "S", "seed of the sampling draws", 0},
        {"--window", NULL, ARG_INT, &window, "W", "bytes the model sees (default 4x context; learned: its table)", 0},
        ROPE_SCALING_SPECS(rf),
        {"--threads", NULL, ARG_INT, &threads, "N", "threads (0: all cores)", 0},
        {NULL, NULL, 0, NULL, NULL, NULL, 0}};
    int pr = args_parse("lm generate", GEN_USAGE, specs, argc, argv);
    if (pr) return pr > 0 ? 0 : 2;
    if (nbytes < 0 || nbytes > 10000000) return lm_fail(2, "--bytes must be in 0..10000000 (-n)");
    if (!(temperature > 0)) return lm_fail(2, "--temperature must be > 0");
    if (top_k < 0 || top_k > 256) return lm_fail(2, "--top-k must be in 0..256");
    if (args_find(specs, "--window")->seen && window < 1) return lm_fail(2, "--window must be >= 1");
    if (threads < 0) return lm_fail(2, "--threads must be >= 0");
    dfl_lm *m = NULL;
    int rc = open_lm(ckpt, specs, &rf, &m, NULL);
    if (rc) return rc;
    const dfl_lm_cfg *c = dfl_lm_config(m);
    if (!window) window = c->posenc == DFL_POSENC_LEARNED ? c->max_positions : 4 * c->context;
    if (dfl_lm_check_length(m, window)) {
        rc = lm_fail(2, "--window %d: %s; learned absolute positions cannot go beyond their table (--window)", window, dfl_last_error());
        dfl_lm_free(m);
        return rc;
    }
    dfl_set_threads(threads);
    dfl_ctx *ctx = dfl_ctx_new();
    dfl_rng rng;
    dfl_rng_init(&rng, seed);
    dfl_lm_sample_cfg sc = {.temperature = temperature, .top_k = top_k, .window = window};
    int np = prompt ? (int)strlen(prompt) : 0;
    if (np) fwrite(prompt, 1, (size_t)np, stdout);
    fflush(stdout);
    dfl_status st = ctx ? dfl_lm_generate(ctx, m, (const uint8_t *)prompt, np, nbytes, &sc, &rng, NULL, emit_stdout, NULL)
                        : DFL_ERR_NOMEM;
    fputc('\n', stdout);
    rc = st ? lm_fail(1, "%s", ctx ? dfl_last_error() : "out of memory") : 0;
    dfl_ctx_free(ctx);
    dfl_lm_free(m);
    return rc;
}

/* ---------------------------------------------------------------- lm eval */

static const char *EVAL_USAGE =
    "usage: difflow lm eval --ckpt FILE [--text FILE] [--bytes N] [--rope-scaling S --rope-factor F]\n"
    "                       [--yarn-alpha A --yarn-beta B --rope-orig-ctx L]\n"
    "\n"
    "Bits per byte on the validation split (the last 10% of the text; default: the text the model was trained on)\n"
    "at 1x, 2x, 4x and 8x the training context, one row per length. Protocol: the split is cut into consecutive\n"
    "non-overlapping windows of L bytes; each window predicts its bytes from the bytes before them inside the\n"
    "window, so every byte is scored exactly once per length (Press et al. 2022's non-overlapping evaluation).\n"
    "A length an encoding cannot run (learned positions beyond the table), or longer than the validation span,\n"
    "prints n/a with the reason.";

static int lm_eval(int argc, char **argv)
{
    const char *ckpt = NULL, *textp = NULL;
    int nbytes = 0, batch_tokens = 4096, threads = 0;
    rope_flags rf = {.layout = NULL, .scaling = "none", .rotary_dim = 0, .theta = 0, .factor = 1,
                     .yarn_alpha = 1, .yarn_beta = 32, .orig_ctx = 0};
    arg_spec specs[] = {
        {"--ckpt", NULL, ARG_STR, &ckpt, "FILE", "model.safetensors from difflow lm train", 0},
        {"--text", NULL, ARG_STR, &textp, "FILE", "text whose last 10% is scored (default: the training text)", 0},
        {"--bytes", NULL, ARG_INT, &nbytes, "N", "score only the first N bytes of the validation split (0: all)", 0},
        ROPE_SCALING_SPECS(rf),
        {"--batch-tokens", NULL, ARG_INT, &batch_tokens, "N", "bytes per forward pass", 0},
        {"--threads", NULL, ARG_INT, &threads, "N", "threads (0: all cores)", 0},
        {NULL, NULL, 0, NULL, NULL, NULL, 0}};
    int pr = args_parse("lm eval", EVAL_USAGE, specs, argc, argv);
    if (pr) return pr > 0 ? 0 : 2;
    if (nbytes < 0) return lm_fail(2, "--bytes must be >= 0");
    if (batch_tokens < 1) return lm_fail(2, "--batch-tokens must be >= 1");
    if (threads < 0) return lm_fail(2, "--threads must be >= 0");
    dfl_lm *m = NULL;
    char *mtext = NULL;
    int rc = open_lm(ckpt, specs, &rf, &m, &mtext);
    if (rc) return rc;
    const char *use = textp ? textp : mtext;
    uint8_t *text = NULL;
    size_t n = 0;
    if (load_text(use, &text, &n)) {
        free(mtext);
        dfl_lm_free(m);
        return 1;
    }
    size_t ntrain = dfl_lm_split(n), nval = n - ntrain;
    if (nbytes > 0 && (size_t)nbytes < nval) nval = (size_t)nbytes;
    if (nval < 2) {
        rc = lm_fail(1, "%s: the validation split has %zu bytes; need at least 2 (--text)", text_name(use), nval);
        goto out;
    }
    dfl_set_threads(threads);
    const dfl_lm_cfg *c = dfl_lm_config(m);
    dfl_ctx *ctx = dfl_ctx_new();
    if (!ctx) {
        rc = lm_fail(1, "out of memory");
        goto out;
    }
    printf("# posenc %s", dfl_posenc_name(c->posenc));
    if (dfl_posenc_uses_rope(c->posenc)) {
        printf(" (%s, rotary dim %d, theta %g, scaling %s x%g", dfl_lm_rope_layout_name(c->rope.layout),
               c->rope.rot_dim ? c->rope.rot_dim : c->dim / c->heads, c->rope.theta, dfl_lm_rope_scaling_name(c->rope.scaling),
               c->rope.factor);
        if (c->rope.scaling == DFL_ROPE_SCALE_YARN)
            printf(", alpha %g, beta %g, original context %d", c->rope.yarn_alpha, c->rope.yarn_beta, c->rope.orig_ctx);
        printf(")");
    }
    printf("; trained context %d; validation bytes [%zu, %zu) of %s; %zu bytes scored per length; non-overlapping windows\n",
           c->context, ntrain, ntrain + nval, text_name(use), nval - 1);
    printf("%-8s %-6s %s\n", "length", "ratio", "bits/byte");
    fflush(stdout);
    static const int mult[4] = {1, 2, 4, 8};
    for (int i = 0; i < 4; i++) {
        int L = c->context * mult[i];
        double bpb = 0;
        double t0 = dfl_now();
        if (dfl_lm_check_length(m, L)) {
            printf("%-8d %-6s n/a (%s)\n", L, (char[8]){'0' + mult[i], 'x', 0}, dfl_last_error());
        } else if ((size_t)L > nval) { /* not one whole window: the figure would repeat a shorter length's */
            printf("%-8d %-6s n/a (the validation span has %zu bytes, fewer than one window of %d; use a longer --text)\n", L,
                   (char[8]){'0' + mult[i], 'x', 0}, nval, L);
        } else if (dfl_lm_eval_bpb(ctx, m, text + ntrain, nval, L, batch_tokens, &bpb, NULL)) {
            rc = lm_fail(1, "evaluating at length %d: %s", L, dfl_last_error());
            break;
        } else {
            printf("%-8d %-6s %.4f\n", L, (char[8]){'0' + mult[i], 'x', 0}, bpb);
            fprintf(stderr, "difflow: length %d: %.1f s\n", L, dfl_now() - t0);
        }
        fflush(stdout);
    }
    dfl_ctx_free(ctx);
out:
    free(text);
    free(mtext);
    dfl_lm_free(m);
    return rc;
}

/* ---------------------------------------------------------------- dispatch */

int cmd_lm(int argc, char **argv)
{
    if (argc < 1 || !strcmp(argv[0], "--help") || !strcmp(argv[0], "-h") || !strcmp(argv[0], "help")) {
        FILE *f = argc < 1 ? stderr : stdout;
        fprintf(f, "usage: difflow lm train|generate|eval [options]\n\n"
                   "  train     train a byte-level Transformer LM with a chosen positional encoding\n"
                   "  generate  sample text from a checkpoint\n"
                   "  eval      bits per byte at 1x, 2x, 4x and 8x the training context\n\n"
                   "Run 'difflow lm <command> --help' for the options of a command.\n");
        return argc < 1 ? 2 : 0;
    }
    if (!strcmp(argv[0], "train")) return lm_train(argc - 1, argv + 1);
    if (!strcmp(argv[0], "generate")) return lm_generate(argc - 1, argv + 1);
    if (!strcmp(argv[0], "eval")) return lm_eval(argc - 1, argv + 1);
    return lm_fail(2, "unknown lm command '%s' (commands: train, generate, eval; see difflow lm --help)", argv[0]);
}
