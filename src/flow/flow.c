/* Flow models: NICE, RealNVP and Glow as sequences of bijections plus a base distribution
 * (flow.h; DESIGN section 5; reference/flows.md section 2). The flow keeps an "active" tensor
 * that each layer transforms; a split layer standardises the factored-out half under its learned
 * prior and removes it from the active tensor (multi-scale architecture, RealNVP Sec. 3.6), so the
 * latent is the factored-out parts followed by the final active tensor. */
#include "flow_internal.h"

#include "difflow/likelihood.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_PIECES 16

struct dfl_flow {
    dfl_flow_cfg cfg;
    dfl_params params, buffers;
    dfl_bijection **bij;
    int nb, cap;
    dfl_tensor *init_flag;
    int vec_layers;     /* the layers act on (N, D) vectors even if the data are images (NICE) */
    int D;
    int zC, zH, zW;     /* shape of the final active tensor */
    int zoff;           /* its offset in the flattened latent */
};

/* ------------------------------------------------------------------ kind, preset */

dfl_status dfl_flow_kind_parse(const char *name, dfl_flow_kind *k)
{
    static const char *const names[] = {"nice", "realnvp", "glow"};
    for (int i = 0; i < 3; i++)
        if (name && strcmp(name, names[i]) == 0) {
            *k = (dfl_flow_kind)i;
            return DFL_OK;
        }
    return dfl_fail(DFL_ERR_ARG, "unknown flow '%s' (expected nice, realnvp or glow)", name ? name : "(null)");
}

const char *dfl_flow_kind_name(dfl_flow_kind k)
{
    switch (k) {
    case DFL_FLOW_NICE: return "nice";
    case DFL_FLOW_REALNVP: return "realnvp";
    case DFL_FLOW_GLOW: return "glow";
    }
    return "?";
}

dfl_status dfl_flow_preset(dfl_flow_kind k, int channels, int height, int width, dfl_flow_cfg *cfg)
{
    if (!cfg) return dfl_fail(DFL_ERR_ARG, "flow preset: NULL cfg");
    int vec = height == 0 && width == 0;
    if (channels < 1 || (!vec && (height < 1 || width < 1)))
        return dfl_fail(DFL_ERR_ARG, "flow preset: bad data shape %dx%dx%d", channels, height, width);
    memset(cfg, 0, sizeof *cfg);
    cfg->kind = k;
    cfg->channels = channels;
    cfg->height = vec ? 0 : height;
    cfg->width = vec ? 0 : width;
    cfg->dequant_bits = vec ? 0 : 8;
    switch (k) {
    case DFL_FLOW_NICE:
        cfg->base = DFL_BASE_LOGISTIC;
        cfg->couplings = vec ? 8 : 4; /* 2-D: 4 couplings reach only -3.6 nats on 8gaussians */
        cfg->hidden = vec ? 128 : 1000;
        cfg->depth = vec ? 3 : 5;
        break;
    case DFL_FLOW_REALNVP:
        cfg->base = DFL_BASE_NORMAL;
        if (vec) {
            cfg->couplings = 8;
            cfg->net_width = 128;
            cfg->depth = 2;
        } else {
            cfg->scales = 2;
            cfg->blocks = 2;
            cfg->net_width = 16; /* 1x28x28: 214,799 parameters, ~1.5 s per batch-64 step on 1 core */
            cfg->logit_alpha = 0.05f;
            cfg->split_clamp = DFL_SPLIT_LOGSD_BOUND;
        }
        break;
    case DFL_FLOW_GLOW:
        cfg->base = DFL_BASE_NORMAL;
        cfg->lu = 1;
        cfg->additive = 0;
        if (vec) {
            cfg->steps = 8;
            cfg->net_width = 64;
            cfg->depth = 2;
        } else {
            cfg->levels = 2;
            cfg->steps = 8;
            cfg->net_width = 128; /* 1x28x28: 434,652 parameters, ~1.6 s per batch-64 step on 1 core */
            cfg->logit_alpha = 0.05f;
            cfg->learn_top = 1;
            cfg->split_clamp = DFL_SPLIT_LOGSD_BOUND;
        }
        break;
    default: return dfl_fail(DFL_ERR_ARG, "flow preset: unknown kind %d", (int)k);
    }
    return DFL_OK;
}

void dfl_flow_dequantize8(const uint8_t *v, size_t count, dfl_rng *rng, double *x)
{
    for (size_t i = 0; i < count; i++) x[i] = (double)v[i] + dfl_rng_uniform_d(rng);
}

/* ------------------------------------------------------------------ construction */

static int push(dfl_flow *f, dfl_bijection *b)
{
    if (!b) return -1;
    if (f->nb == f->cap) {
        int cap = f->cap ? 2 * f->cap : 32;
        dfl_bijection **nb = realloc(f->bij, (size_t)cap * sizeof *nb);
        if (!nb) {
            dfl_bij_free(b);
            dfl_fail(DFL_ERR_NOMEM, "flow: out of memory");
            return -1;
        }
        f->bij = nb;
        f->cap = cap;
    }
    f->bij[f->nb++] = b;
    return 0;
}

static dfl_status validate(const dfl_flow_cfg *c)
{
    const char *k = dfl_flow_kind_name(c->kind);
    int vec = c->height == 0 && c->width == 0;
    if (c->kind < DFL_FLOW_NICE || c->kind > DFL_FLOW_GLOW) return dfl_fail(DFL_ERR_ARG, "flow: unknown kind %d", (int)c->kind);
    if (c->channels < 1 || (!vec && (c->height < 1 || c->width < 1)))
        return dfl_fail(DFL_ERR_ARG, "%s: bad data shape %dx%dx%d", k, c->channels, c->height, c->width);
    if (c->base != DFL_BASE_NORMAL && c->base != DFL_BASE_LOGISTIC) return dfl_fail(DFL_ERR_ARG, "%s: unknown base %d", k, (int)c->base);
    if (!(c->logit_alpha >= 0.0f && c->logit_alpha < 0.5f)) return dfl_fail(DFL_ERR_ARG, "%s: logit_alpha %g not in [0, 0.5)", k, (double)c->logit_alpha);
    if (c->dequant_bits < 0 || c->dequant_bits > 16 || (vec && c->dequant_bits))
        return dfl_fail(DFL_ERR_ARG, "%s: dequant_bits %d must be 0 (vectors, or images given in [-1, 1)) or 1..16 (images)", k, c->dequant_bits);
    if (!(c->split_clamp >= 0.0f && c->split_clamp <= 1000.0f))
        return dfl_fail(DFL_ERR_ARG, "%s: split_clamp %g not in [0, 1000]", k, (double)c->split_clamp);
    if (c->learn_top != 0 && (c->learn_top != 1 || c->kind != DFL_FLOW_GLOW))
        return dfl_fail(DFL_ERR_ARG, "%s: learn_top %d must be 0 (or 1 for glow)", k, c->learn_top);
    long D = (long)c->channels * (vec ? 1 : (long)c->height * c->width);
    if (D < 2) return dfl_fail(DFL_ERR_ARG, "%s: data dimension %ld < 2", k, D);
    switch (c->kind) {
    case DFL_FLOW_NICE:
        if (c->couplings < 1 || c->hidden < 1 || c->depth < 1 || c->depth >= CNET_MAX)
            return dfl_fail(DFL_ERR_ARG, "nice: couplings %d, hidden %d, depth %d must be >= 1 (depth < %d)", c->couplings, c->hidden, c->depth, CNET_MAX);
        break;
    case DFL_FLOW_REALNVP:
        if (c->net_width < 1) return dfl_fail(DFL_ERR_ARG, "realnvp: net_width %d must be >= 1", c->net_width);
        if (vec && (c->couplings < 1 || c->depth < 1 || c->depth >= CNET_MAX))
            return dfl_fail(DFL_ERR_ARG, "realnvp: couplings %d and depth %d must be >= 1 (depth < %d)", c->couplings, c->depth, CNET_MAX);
        if (!vec && (c->scales < 1 || c->scales > MAX_PIECES - 1 || c->blocks < 0 || 2 * c->blocks + 2 > CNET_MAX))
            return dfl_fail(DFL_ERR_ARG, "realnvp: scales %d (1..%d) or blocks %d out of range", c->scales, MAX_PIECES - 1, c->blocks);
        break;
    case DFL_FLOW_GLOW:
        if (c->net_width < 1 || c->steps < 1) return dfl_fail(DFL_ERR_ARG, "glow: net_width %d and steps %d must be >= 1", c->net_width, c->steps);
        if (vec && (c->depth < 1 || c->depth >= CNET_MAX)) return dfl_fail(DFL_ERR_ARG, "glow: depth %d must be in 1..%d", c->depth, CNET_MAX - 1);
        if (!vec && (c->levels < 1 || c->levels > MAX_PIECES - 1)) return dfl_fail(DFL_ERR_ARG, "glow: levels %d must be in 1..%d", c->levels, MAX_PIECES - 1);
        break;
    }
    return DFL_OK;
}

/* Builder state: the active shape. */
typedef struct {
    dfl_flow *f;
    dfl_rng *rng;
    int C, H, W;
    int zoff;
} builder;

static int add(builder *bd, dfl_bijection *b)
{
    if (!b || push(bd->f, b)) return -1;
    if (b->kind == BK_SPLIT) {
        b->zoff = bd->zoff;
        bd->zoff += b->cb * b->H * b->W;
        bd->C = b->ca;
    } else {
        dfl_bij_out_shape(b, &bd->C, &bd->H, &bd->W);
    }
    return 0;
}

static int build_nice(builder *bd, const dfl_flow_cfg *c)
{
    dfl_flow *f = bd->f;
    char nm[96];
    for (int i = 0; i < c->couplings; i++) {
        snprintf(nm, sizeof nm, "nice.%d.coupling", i);
        if (add(bd, dfl_bij_coupling_new(nm, bd->C, 0, 0, DFL_MASK_VECTOR, i % 2, DFL_COUPLING_ADDITIVE,
                                         DFL_NET_MLP, c->hidden, c->depth, &f->params, bd->rng)))
            return -1;
    }
    return add(bd, dfl_bij_scaling_new("nice.scaling", bd->C, 0, 0, &f->params));
}

static int build_realnvp(builder *bd, const dfl_flow_cfg *c)
{
    dfl_flow *f = bd->f;
    char nm[96];
    if (bd->H == 0) {
        for (int i = 0; i < c->couplings; i++) {
            snprintf(nm, sizeof nm, "realnvp.%d.coupling", i);
            if (add(bd, dfl_bij_coupling_new(nm, bd->C, 0, 0, DFL_MASK_VECTOR, i % 2, DFL_COUPLING_TANH,
                                             DFL_NET_MLP, c->net_width, c->depth, &f->params, bd->rng)))
                return -1;
        }
        return 0;
    }
    if (c->logit_alpha > 0 && add(bd, dfl_bij_logit_new("realnvp.logit", bd->C, bd->H, bd->W, c->logit_alpha)))
        return -1;
    int width = c->net_width;
    for (int s = 0; s < c->scales; s++, width *= 2) {
        int last = s == c->scales - 1;
        int ncheck = last ? 4 : 3;
        for (int j = 0; j < ncheck; j++) {
            snprintf(nm, sizeof nm, "realnvp.%d.%d.coupling", s, j);
            if (add(bd, dfl_bij_coupling_new(nm, bd->C, bd->H, bd->W, DFL_MASK_CHECKERBOARD, j % 2, DFL_COUPLING_TANH,
                                             DFL_NET_RESNET, width, c->blocks, &f->params, bd->rng)))
                return -1;
        }
        if (last) break;
        snprintf(nm, sizeof nm, "realnvp.%d.squeeze", s);
        if (add(bd, dfl_bij_squeeze_new(nm, bd->C, bd->H, bd->W))) return -1;
        for (int j = 3; j < 6; j++) {
            snprintf(nm, sizeof nm, "realnvp.%d.%d.coupling", s, j);
            if (add(bd, dfl_bij_coupling_new(nm, bd->C, bd->H, bd->W, DFL_MASK_CHANNEL, j % 2, DFL_COUPLING_TANH,
                                             DFL_NET_RESNET, width, c->blocks, &f->params, bd->rng)))
                return -1;
        }
        snprintf(nm, sizeof nm, "realnvp.%d.split", s);
        if (add(bd, dfl_bij_split_new(nm, bd->C, bd->H, bd->W, c->split_clamp, &f->params))) return -1;
    }
    return 0;
}

static int build_glow(builder *bd, const dfl_flow_cfg *c)
{
    dfl_flow *f = bd->f;
    char nm[96];
    dfl_coupling_kind ck = c->additive ? DFL_COUPLING_ADDITIVE : DFL_COUPLING_SIGMOID;
    if (bd->H == 0) {
        for (int k = 0; k < c->steps; k++) {
            snprintf(nm, sizeof nm, "glow.%d.actnorm", k);
            if (add(bd, dfl_bij_actnorm_new(nm, bd->C, 0, 0, &f->params))) return -1;
            snprintf(nm, sizeof nm, "glow.%d.invconv", k);
            if (add(bd, dfl_bij_invconv_new(nm, bd->C, 0, 0, c->lu, &f->params, &f->buffers, bd->rng))) return -1;
            snprintf(nm, sizeof nm, "glow.%d.coupling", k);
            if (add(bd, dfl_bij_coupling_new(nm, bd->C, 0, 0, DFL_MASK_VECTOR, 0, ck, DFL_NET_MLP, c->net_width,
                                             c->depth, &f->params, bd->rng)))
                return -1;
        }
        return c->learn_top ? add(bd, dfl_bij_prior_new("glow.top", bd->C, bd->H, bd->W, &f->params)) : 0; /* Glow learntop */
    }
    if (c->logit_alpha > 0 && add(bd, dfl_bij_logit_new("glow.logit", bd->C, bd->H, bd->W, c->logit_alpha)))
        return -1;
    for (int l = 0; l < c->levels; l++) {
        snprintf(nm, sizeof nm, "glow.%d.squeeze", l);
        if (add(bd, dfl_bij_squeeze_new(nm, bd->C, bd->H, bd->W))) return -1;
        for (int k = 0; k < c->steps; k++) {
            snprintf(nm, sizeof nm, "glow.%d.%d.actnorm", l, k);
            if (add(bd, dfl_bij_actnorm_new(nm, bd->C, bd->H, bd->W, &f->params))) return -1;
            snprintf(nm, sizeof nm, "glow.%d.%d.invconv", l, k);
            if (add(bd, dfl_bij_invconv_new(nm, bd->C, bd->H, bd->W, c->lu, &f->params, &f->buffers, bd->rng)))
                return -1;
            snprintf(nm, sizeof nm, "glow.%d.%d.coupling", l, k);
            if (add(bd, dfl_bij_coupling_new(nm, bd->C, bd->H, bd->W, DFL_MASK_CHANNEL, 0, ck, DFL_NET_GLOW,
                                             c->net_width, 0, &f->params, bd->rng)))
                return -1;
        }
        if (l < c->levels - 1) {
            snprintf(nm, sizeof nm, "glow.%d.split", l);
            if (add(bd, dfl_bij_split_new(nm, bd->C, bd->H, bd->W, c->split_clamp, &f->params))) return -1;
        }
    }
    return c->learn_top ? add(bd, dfl_bij_prior_new("glow.top", bd->C, bd->H, bd->W, &f->params)) : 0; /* Glow learntop */
}

dfl_flow *dfl_flow_new(const dfl_flow_cfg *cfg, dfl_rng *rng)
{
    if (!cfg || !rng) {
        dfl_fail(DFL_ERR_ARG, "flow: NULL cfg or rng");
        return NULL;
    }
    if (validate(cfg)) return NULL;
    dfl_flow *f = calloc(1, sizeof *f);
    if (!f) {
        dfl_fail(DFL_ERR_NOMEM, "flow: out of memory");
        return NULL;
    }
    f->cfg = *cfg;
    int vec = cfg->height == 0 && cfg->width == 0;
    f->D = cfg->channels * (vec ? 1 : cfg->height * cfg->width);
    int one = 1;
    f->init_flag = dfl_params_add(&f->buffers, 1, &one, "actnorm_initialized");
    builder bd = {f, rng, cfg->channels, vec ? 0 : cfg->height, vec ? 0 : cfg->width, 0};
    if (cfg->kind == DFL_FLOW_NICE) {
        f->vec_layers = 1;
        bd.C = f->D;
        bd.H = bd.W = 0;
    }
    int rc = !f->init_flag;
    if (!rc && cfg->dequant_bits > 0) { /* data in [0, 2^k) -> [-1, 1) */
        char nm[64];
        snprintf(nm, sizeof nm, "%s.dequant", dfl_flow_kind_name(cfg->kind));
        rc = add(&bd, dfl_bij_dequant_new(nm, bd.C, bd.H, bd.W, cfg->dequant_bits));
    }
    if (!rc) {
        switch (cfg->kind) {
        case DFL_FLOW_NICE: rc = build_nice(&bd, cfg); break;
        case DFL_FLOW_REALNVP: rc = build_realnvp(&bd, cfg); break;
        default: rc = build_glow(&bd, cfg); break;
        }
    }
    if (rc) {
        dfl_flow_free(f);
        return NULL;
    }
    f->zC = bd.C;
    f->zH = bd.H;
    f->zW = bd.W;
    f->zoff = bd.zoff;
    return f;
}

void dfl_flow_free(dfl_flow *f)
{
    if (!f) return;
    for (int i = 0; i < f->nb; i++) dfl_bij_free(f->bij[i]);
    free(f->bij);
    dfl_params_free(&f->params);
    dfl_params_free(&f->buffers);
    free(f);
}

dfl_params *dfl_flow_params(dfl_flow *f) { return f ? &f->params : NULL; }
dfl_params *dfl_flow_buffers(dfl_flow *f) { return f ? &f->buffers : NULL; }
const dfl_flow_cfg *dfl_flow_get_cfg(const dfl_flow *f) { return f ? &f->cfg : NULL; }
int dfl_flow_dim(const dfl_flow *f) { return f ? f->D : 0; }
int dfl_flow_nbij(const dfl_flow *f) { return f ? f->nb : 0; }
dfl_bijection *dfl_flow_bij(dfl_flow *f, int i) { return f && i >= 0 && i < f->nb ? f->bij[i] : NULL; }
int dfl_flow_initialized(const dfl_flow *f) { return f && f->init_flag && f->init_flag->data[0] == 1.0f; }

/* ------------------------------------------------------------------ base densities */

dfl_tensor *dfl_base_log_prob(dfl_ctx *ctx, dfl_base_kind base, dfl_tensor *z)
{
    if (!ctx || !z) return NULL;
    size_t D = z->n / (size_t)z->shape[0];
    if (base == DFL_BASE_NORMAL) {
        /* -(z^2 + ln 2 pi)/2 per dimension */
        dfl_tensor *s = dfl_sum_per_sample(ctx, dfl_mul(ctx, z, z));
        return dfl_affine_scalar(ctx, s, -0.5f, (float)(-0.5 * (double)D * log(2.0 * 3.14159265358979323846)));
    }
    /* -softplus(z) - softplus(-z) per dimension */
    dfl_tensor *sp = dfl_add(ctx, dfl_softplus(ctx, z), dfl_softplus(ctx, dfl_scale(ctx, z, -1.0f)));
    return dfl_scale(ctx, dfl_sum_per_sample(ctx, sp), -1.0f);
}

/* ------------------------------------------------------------------ forward / inverse */

static int check_data(const dfl_flow *f, const dfl_tensor *x)
{
    const dfl_flow_cfg *c = &f->cfg;
    int vec = c->height == 0 && c->width == 0;
    int ok = x && x->shape[0] >= 1 &&
             (vec ? (x->ndim == 2 && x->shape[1] == c->channels)
                  : (x->ndim == 4 && x->shape[1] == c->channels && x->shape[2] == c->height && x->shape[3] == c->width));
    if (!ok && x) {
        char s[64];
        if (vec) dfl_fail(DFL_ERR_SHAPE, "%s: input %s, expected (N, %d)", dfl_flow_kind_name(c->kind), dfl_shape_str(x, s, sizeof s), c->channels);
        else dfl_fail(DFL_ERR_SHAPE, "%s: input %s, expected (N, %d, %d, %d)", dfl_flow_kind_name(c->kind),
                      dfl_shape_str(x, s, sizeof s), c->channels, c->height, c->width);
    }
    return ok;
}

static int all_finite(const dfl_tensor *t)
{
    for (size_t i = 0; i < t->n; i++)
        if (!isfinite(t->data[i])) return 0;
    return 1;
}

static int finite_check(const dfl_bijection *b, const dfl_tensor *y, const dfl_tensor *ld)
{
    if (ld && !all_finite(ld)) {
        float v = 0;
        for (size_t i = 0; i < ld->n; i++)
            if (!isfinite(ld->data[i])) { v = ld->data[i]; break; }
        dfl_fail(DFL_ERR_NUMERIC, "%s: log-det is %s", b->name, isnan(v) ? "nan" : "inf");
        return -1;
    }
    if (!all_finite(y)) {
        dfl_fail(DFL_ERR_NUMERIC, "%s: output is not finite (nan or inf)", b->name);
        return -1;
    }
    return 0;
}

static dfl_tensor *acc(dfl_ctx *ctx, dfl_tensor *tot, dfl_tensor *ld)
{
    if (!ld) return tot;
    return tot ? dfl_add(ctx, tot, ld) : ld;
}

/* Runs every layer forward. pieces[0..*np) receive the factored-out parts z2' (N, c2, H, W) and
 * the final active tensor last. *logdet = total log-det (N), or NULL if every layer had 0. */
static int run_forward(dfl_ctx *ctx, dfl_flow *f, dfl_tensor *x, dfl_tensor **logdet, dfl_tensor **pieces, int *np)
{
    *np = 0;
    *logdet = NULL;
    if (!ctx || !f || !x || !check_data(f, x)) return -1;
    int N = x->shape[0];
    dfl_tensor *h = x;
    if (f->vec_layers && x->ndim != 2) {
        int sh[2] = {N, f->D};
        h = dfl_reshape(ctx, x, 2, sh);
    }
    for (int i = 0; i < f->nb; i++) {
        dfl_bijection *b = f->bij[i];
        dfl_tensor *ld = NULL;
        dfl_tensor *y = dfl_bij_forward(ctx, b, h, &ld);
        if (!y || finite_check(b, y, ld)) return -1;
        *logdet = acc(ctx, *logdet, ld);
        if (b->kind == BK_SPLIT) {
            pieces[(*np)++] = dfl_slice_channels(ctx, y, b->ca, b->C);
            h = dfl_slice_channels(ctx, y, 0, b->ca);
        } else {
            h = y;
        }
        if (!h) return -1;
    }
    pieces[(*np)++] = h;
    return 0;
}

dfl_tensor *dfl_flow_forward(dfl_ctx *ctx, dfl_flow *f, dfl_tensor *x, dfl_tensor **logdet)
{
    dfl_tensor *pieces[MAX_PIECES], *ld = NULL;
    int np = 0;
    if (logdet) *logdet = NULL;
    if (run_forward(ctx, f, x, &ld, pieces, &np)) return NULL;
    int N = x->shape[0];
    dfl_tensor *z = NULL;
    for (int i = 0; i < np; i++) {
        int sh[2] = {N, (int)(pieces[i]->n / (size_t)N)};
        dfl_tensor *p = dfl_reshape(ctx, pieces[i], 2, sh);
        z = z ? dfl_concat_channels(ctx, z, p) : p;
    }
    if (logdet) *logdet = ld ? ld : dfl_tensor_zeros(ctx, 1, &N);
    return z;
}

dfl_tensor *dfl_flow_inverse(dfl_ctx *ctx, dfl_flow *f, dfl_tensor *z, dfl_tensor **logdet)
{
    if (logdet) *logdet = NULL;
    if (!ctx || !f || !z) return NULL;
    if (z->ndim != 2 || z->shape[1] != f->D) {
        char s[64];
        dfl_fail(DFL_ERR_SHAPE, "%s inverse: latent %s, expected (N, %d)", dfl_flow_kind_name(f->cfg.kind),
                 dfl_shape_str(z, s, sizeof s), f->D);
        return NULL;
    }
    int N = z->shape[0];
    dfl_tensor *h = dfl_slice_channels(ctx, z, f->zoff, f->D), *tot = NULL;
    if (f->zH > 0) {
        int sh[4] = {N, f->zC, f->zH, f->zW};
        h = dfl_reshape(ctx, h, 4, sh);
    }
    for (int i = f->nb - 1; i >= 0 && h; i--) {
        dfl_bijection *b = f->bij[i];
        if (b->kind == BK_SPLIT) {
            int sh[4] = {N, b->cb, b->H, b->W};
            dfl_tensor *p = dfl_reshape(ctx, dfl_slice_channels(ctx, z, b->zoff, b->zoff + b->cb * b->H * b->W), 4, sh);
            h = dfl_concat_channels(ctx, h, p);
        }
        dfl_tensor *ld = NULL;
        dfl_tensor *y = dfl_bij_inverse(ctx, b, h, &ld);
        if (!y || finite_check(b, y, ld)) return NULL;
        tot = acc(ctx, tot, ld);
        h = y;
    }
    if (h && f->vec_layers && f->cfg.height > 0) {
        int sh[4] = {N, f->cfg.channels, f->cfg.height, f->cfg.width};
        h = dfl_reshape(ctx, h, 4, sh);
    }
    if (logdet && h) *logdet = tot ? tot : dfl_tensor_zeros(ctx, 1, &N);
    return h;
}

dfl_tensor *dfl_flow_log_prob(dfl_ctx *ctx, dfl_flow *f, dfl_tensor *x)
{
    dfl_tensor *pieces[MAX_PIECES], *ld = NULL;
    int np = 0;
    if (run_forward(ctx, f, x, &ld, pieces, &np)) return NULL;
    dfl_tensor *lp = ld;
    for (int i = 0; i < np; i++) lp = acc(ctx, lp, dfl_base_log_prob(ctx, f->cfg.base, pieces[i]));
    if (lp && !all_finite(lp)) {
        dfl_fail(DFL_ERR_NUMERIC, "%s: log p(x) is not finite (base density of the latent)", dfl_flow_kind_name(f->cfg.kind));
        return NULL;
    }
    return lp;
}

/* ------------------------------------------------------------------ data init, sampling */

dfl_status dfl_flow_data_init(dfl_ctx *ctx, dfl_flow *f, dfl_tensor *x)
{
    if (!ctx || !f || !x) return dfl_fail(DFL_ERR_ARG, "flow data_init: NULL argument");
    if (dfl_flow_initialized(f)) return DFL_OK;
    if (!check_data(f, x)) return DFL_ERR_SHAPE;
    int old = dfl_ctx_set_grad(ctx, 0);
    dfl_status st = DFL_OK;
    dfl_tensor *h = x;
    if (f->vec_layers && x->ndim != 2) {
        int sh[2] = {x->shape[0], f->D};
        h = dfl_reshape(ctx, x, 2, sh);
    }
    for (int i = 0; i < f->nb && !st; i++) {
        dfl_bijection *b = f->bij[i];
        if (b->kind == BK_ACTNORM) st = dfl_bij_actnorm_init(b, h);
        if (st) break;
        dfl_tensor *ld = NULL;
        dfl_tensor *y = dfl_bij_forward(ctx, b, h, &ld);
        if (!y || finite_check(b, y, ld)) {
            st = DFL_ERR_NUMERIC;
            break;
        }
        h = b->kind == BK_SPLIT ? dfl_slice_channels(ctx, y, 0, b->ca) : y;
    }
    dfl_ctx_set_grad(ctx, old);
    if (!st) f->init_flag->data[0] = 1.0f;
    return st;
}

#define SAMPLE_CHUNK 256

dfl_status dfl_flow_sample(dfl_ctx *ctx, dfl_flow *f, int n, double temperature, dfl_rng *rng, float *x)
{
    (void)ctx; /* a private ctx per chunk bounds the memory and leaves the caller's tape alone */
    if (!f || !rng || !x || n < 0) return dfl_fail(DFL_ERR_ARG, "flow sample: bad argument");
    if (!(temperature >= 0.0) || !isfinite(temperature))
        return dfl_fail(DFL_ERR_ARG, "flow sample: temperature %g must be finite and >= 0", temperature);
    int D = f->D;
    dfl_ctx *c = dfl_ctx_new();
    if (!c) return dfl_fail(DFL_ERR_NOMEM, "flow sample: out of memory");
    dfl_ctx_set_grad(c, 0);
    dfl_status st = DFL_OK;
    for (int s = 0; s < n && !st; s += SAMPLE_CHUNK) {
        int m = n - s < SAMPLE_CHUNK ? n - s : SAMPLE_CHUNK;
        dfl_ctx_reset(c);
        int sh[2] = {m, D};
        dfl_tensor *z = dfl_tensor_tmp(c, 2, sh);
        if (!z) {
            st = DFL_ERR_NOMEM;
            break;
        }
        for (size_t i = 0; i < z->n; i++) {
            double e;
            if (f->cfg.base == DFL_BASE_NORMAL) {
                e = dfl_rng_normal(rng);
            } else {
                double u;
                do u = dfl_rng_uniform_d(rng);
                while (u <= 0.0);
                e = log(u) - log1p(-u);
            }
            z->data[i] = (float)(temperature * e);
        }
        dfl_tensor *y = dfl_flow_inverse(c, f, z, NULL);
        if (!y) {
            st = DFL_ERR_NUMERIC;
            break;
        }
        memcpy(x + (size_t)s * D, y->data, (size_t)m * D * sizeof(float));
    }
    dfl_ctx_free(c);
    return st;
}
