/* Backbones: toy-mlp and fmnist-unet-s (the DiT lives in dit.c), exactly the reference configurations of DESIGN
 * section 13 (parameter names are the module paths of bench/peers/torch_models.py). */
#include "difflow/nn.h"
#include "difflow/ops.h"
#include "nn/dit.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MLP_MAX_LAYERS 16
#define UNET_MAX_LEVELS 4
#define UNET_MAX_RES 4

typedef struct {
    dfl_gn_layer gn1, gn2;
    dfl_conv_layer conv1, conv2, skip;
    dfl_linear_layer temb_proj;
    int has_skip;
} resblock;

struct dfl_net {
    dfl_arch_cfg cfg;
    dfl_params params;
    /* MLP */
    dfl_linear_layer mlp[MLP_MAX_LAYERS];
    int nmlp;
    /* U-Net */
    dfl_linear_layer temb1, temb2;
    dfl_conv_layer conv_in, out_conv;
    dfl_gn_layer out_norm;
    resblock down[UNET_MAX_LEVELS][UNET_MAX_RES];
    resblock mid[2];
    resblock up[UNET_MAX_LEVELS][UNET_MAX_RES];
    dfl_dit *dit; /* DiT (src/nn/dit.c) */
};

dfl_status dfl_arch_preset(const char *name, dfl_arch_cfg *c)
{
    memset(c, 0, sizeof *c);
    if (strcmp(name, "toy-mlp") == 0) {
        c->arch = DFL_ARCH_MLP;
        c->dim = 2;
        c->hidden = 256;
        c->depth = 3;
        return DFL_OK;
    }
    if (strcmp(name, "fmnist-unet-s") == 0) {
        c->arch = DFL_ARCH_UNET;
        c->channels = 1;
        c->height = c->width = 28;
        c->base = 32;
        c->mult[0] = 1;
        c->mult[1] = 2;
        c->mult[2] = 2;
        c->nlevels = 3;
        c->nres = 2;
        c->groups = 8;
        c->temb_dim = 64;
        c->t_scale = 1000.f;
        return DFL_OK;
    }
    if (strcmp(name, "fmnist-dit-s") == 0 || strcmp(name, "dit") == 0) {
        dfl_dit_preset(c);
        return DFL_OK;
    }
    return dfl_fail(DFL_ERR_ARG, "unknown architecture preset '%s' (known: toy-mlp, fmnist-unet-s, fmnist-dit-s)", name);
}

static dfl_status res_init(resblock *b, dfl_params *ps, dfl_rng *rng, int cin, int cout, int tdim,
                           int groups, const char *prefix)
{
    char p[200];
    dfl_status st;
    snprintf(p, sizeof p, "%s.gn1", prefix);
    if ((st = dfl_gn_init(&b->gn1, ps, cin, groups, p))) return st;
    snprintf(p, sizeof p, "%s.conv1", prefix);
    if ((st = dfl_conv_init(&b->conv1, ps, rng, cin, cout, 3, p))) return st;
    snprintf(p, sizeof p, "%s.temb_proj", prefix);
    if ((st = dfl_linear_init(&b->temb_proj, ps, rng, tdim, cout, p))) return st;
    snprintf(p, sizeof p, "%s.gn2", prefix);
    if ((st = dfl_gn_init(&b->gn2, ps, cout, groups, p))) return st;
    snprintf(p, sizeof p, "%s.conv2", prefix);
    if ((st = dfl_conv_init(&b->conv2, ps, rng, cout, cout, 3, p))) return st;
    b->has_skip = cin != cout;
    if (b->has_skip) {
        snprintf(p, sizeof p, "%s.skip", prefix);
        if ((st = dfl_conv_init(&b->skip, ps, rng, cin, cout, 1, p))) return st;
    }
    return DFL_OK;
}

static dfl_status validate_cfg(const dfl_arch_cfg *c)
{
    if (c->arch == DFL_ARCH_MLP) {
        if (c->dim < 1 || c->hidden < 1 || c->depth < 1 || c->depth + 1 > MLP_MAX_LAYERS)
            return dfl_fail(DFL_ERR_ARG, "mlp: invalid configuration (dim %d, hidden %d, depth %d)", c->dim, c->hidden, c->depth);
        return DFL_OK;
    }
    if (c->arch == DFL_ARCH_DIT) return dfl_dit_validate(c);
    if (c->arch != DFL_ARCH_UNET) return dfl_fail(DFL_ERR_ARG, "unknown architecture %d", (int)c->arch);
    if (c->nlevels < 1 || c->nlevels > UNET_MAX_LEVELS || c->nres < 1 || c->nres > UNET_MAX_RES)
        return dfl_fail(DFL_ERR_ARG, "unet: invalid levels %d or ResBlocks %d", c->nlevels, c->nres);
    int div = 1 << (c->nlevels - 1);
    if (c->height % div || c->width % div)
        return dfl_fail(DFL_ERR_ARG, "unet: image %dx%d is not divisible by %d for %d levels", c->height, c->width, div, c->nlevels);
    for (int l = 0; l < c->nlevels; l++)
        if (c->mult[l] < 1 || (c->base * c->mult[l]) % c->groups)
            return dfl_fail(DFL_ERR_ARG, "unet: level %d channels %d not divisible by %d groups", l, c->base * c->mult[l], c->groups);
    if (c->temb_dim < 2 || c->temb_dim % 2 || c->channels < 1)
        return dfl_fail(DFL_ERR_ARG, "unet: invalid time embedding dim %d or channels %d", c->temb_dim, c->channels);
    return DFL_OK;
}

dfl_net *dfl_net_new(const dfl_arch_cfg *cfg, dfl_rng *rng)
{
    if (validate_cfg(cfg)) return NULL;
    dfl_net *n = calloc(1, sizeof *n);
    if (!n) {
        dfl_fail(DFL_ERR_NOMEM, "net: out of memory");
        return NULL;
    }
    n->cfg = *cfg;
    dfl_params *ps = &n->params;
    char p[200];
    dfl_status st = DFL_OK;
    if (cfg->arch == DFL_ARCH_MLP) {
        int in = cfg->dim + 1;
        n->nmlp = cfg->depth + 1;
        for (int i = 0; i < n->nmlp && !st; i++) {
            int out = i == n->nmlp - 1 ? cfg->dim : cfg->hidden;
            snprintf(p, sizeof p, "net.%d", 2 * i);
            st = dfl_linear_init(&n->mlp[i], ps, rng, in, out, p);
            in = out;
        }
    } else if (cfg->arch == DFL_ARCH_DIT) {
        n->dit = dfl_dit_new(cfg, ps, rng);
        if (!n->dit) st = DFL_ERR_ARG;
    } else {
        int tdim = 2 * cfg->temb_dim; /* 128 */
        int C[UNET_MAX_LEVELS];
        for (int l = 0; l < cfg->nlevels; l++) C[l] = cfg->base * cfg->mult[l];
        st = dfl_linear_init(&n->temb1, ps, rng, cfg->temb_dim, tdim, "temb.lin1");
        if (!st) st = dfl_linear_init(&n->temb2, ps, rng, tdim, tdim, "temb.lin2");
        if (!st) st = dfl_conv_init(&n->conv_in, ps, rng, cfg->channels, cfg->base, 3, "conv_in");
        int c = cfg->base;
        for (int l = 0; l < cfg->nlevels && !st; l++)
            for (int r = 0; r < cfg->nres && !st; r++) {
                snprintf(p, sizeof p, "down.%d.res.%d", l, r);
                st = res_init(&n->down[l][r], ps, rng, c, C[l], tdim, cfg->groups, p);
                c = C[l];
            }
        for (int r = 0; r < 2 && !st; r++) {
            snprintf(p, sizeof p, "mid.%d", r);
            st = res_init(&n->mid[r], ps, rng, c, c, tdim, cfg->groups, p);
        }
        for (int i = 0; i < cfg->nlevels && !st; i++) {
            int l = cfg->nlevels - 1 - i;
            for (int r = 0; r < cfg->nres && !st; r++) {
                snprintf(p, sizeof p, "up.%d.res.%d", i, r);
                int cin = r == 0 ? c + C[l] : C[l];
                st = res_init(&n->up[i][r], ps, rng, cin, C[l], tdim, cfg->groups, p);
                c = C[l];
            }
        }
        if (!st) st = dfl_gn_init(&n->out_norm, ps, c, cfg->groups, "out_norm");
        if (!st) st = dfl_conv_init(&n->out_conv, ps, rng, c, cfg->channels, 3, "out_conv");
    }
    if (st) {
        dfl_net_free(n);
        return NULL;
    }
    return n;
}

void dfl_net_free(dfl_net *net)
{
    if (!net) return;
    dfl_params_free(&net->params);
    dfl_dit_free(net->dit);
    free(net);
}

dfl_params *dfl_net_params(dfl_net *net) { return &net->params; }
const dfl_arch_cfg *dfl_net_cfg(const dfl_net *net) { return &net->cfg; }

dfl_tensor *dfl_sinusoidal_embedding(dfl_ctx *ctx, dfl_tensor *t, int dim, float t_scale)
{
    if (!t) return NULL;
    if (dim < 2 || dim % 2) {
        dfl_fail(DFL_ERR_ARG, "sinusoidal embedding: dim must be even and >= 2 (got %d)", dim);
        return NULL;
    }
    int N = (int)t->n, half = dim / 2;
    int s[2] = {N, dim};
    dfl_tensor *e = dfl_tensor_tmp(ctx, 2, s);
    if (!e) return NULL;
    for (int n = 0; n < N; n++)
        for (int k = 0; k < half; k++) {
            double f = exp(-log(10000.0) * k / half);
            double a = (double)t_scale * t->data[n] * f;
            e->data[(size_t)n * dim + k] = (float)sin(a);
            e->data[(size_t)n * dim + half + k] = (float)cos(a);
        }
    return e;
}

/* No-grad passes: `dead` will not be read again, so its storage may hold later tensors
 * (dfl_tensor_release; nothing while recording, where the tape keeps it). Returns `keep`. */
static dfl_tensor *drop(dfl_ctx *ctx, dfl_tensor *keep, dfl_tensor *dead)
{
    if (dead != keep) dfl_tensor_release(ctx, dead);
    return keep;
}

/* GN SiLU Conv3x3 (+ temb) GN SiLU Conv3x3 + skip, GN + SiLU fused (dfl_group_norm_silu: the same
 * values as the two ops in turn). Releases its intermediates, not x. */
static dfl_tensor *res_forward(dfl_ctx *ctx, resblock *b, dfl_tensor *x, dfl_tensor *temb)
{
    dfl_tensor *h = dfl_group_norm_silu(ctx, x, b->gn1.weight, b->gn1.bias, b->gn1.groups, 1e-5f);
    dfl_tensor *a = drop(ctx, dfl_conv2d(ctx, h, b->conv1.weight, b->conv1.bias, 1), h);
    dfl_tensor *tp = dfl_linear(ctx, temb, b->temb_proj.weight, b->temb_proj.bias);
    h = drop(ctx, drop(ctx, dfl_add_channel(ctx, a, tp), a), tp);
    h = drop(ctx, dfl_group_norm_silu(ctx, h, b->gn2.weight, b->gn2.bias, b->gn2.groups, 1e-5f), h);
    a = drop(ctx, dfl_conv2d(ctx, h, b->conv2.weight, b->conv2.bias, 1), h);
    dfl_tensor *skip = b->has_skip ? dfl_conv2d(ctx, x, b->skip.weight, b->skip.bias, 0) : x;
    h = drop(ctx, dfl_add(ctx, a, skip), a);
    return b->has_skip ? drop(ctx, h, skip) : h;
}

static dfl_tensor *unet_forward(dfl_ctx *ctx, dfl_net *n, dfl_tensor *x, dfl_tensor *t)
{
    const dfl_arch_cfg *c = &n->cfg;
    dfl_tensor *e = dfl_sinusoidal_embedding(ctx, t, c->temb_dim, c->t_scale);
    e = drop(ctx, dfl_linear(ctx, e, n->temb1.weight, n->temb1.bias), e);
    e = drop(ctx, dfl_silu(ctx, e), e);
    dfl_tensor *temb = drop(ctx, dfl_linear(ctx, e, n->temb2.weight, n->temb2.bias), e);
    dfl_tensor *h = dfl_conv2d(ctx, x, n->conv_in.weight, n->conv_in.bias, 1);
    dfl_tensor *skips[UNET_MAX_LEVELS];
    /* In no-grad mode every activation is released after its last reader; the skips live until
     * their concatenation on the up path. */
    for (int l = 0; l < c->nlevels; l++) {
        for (int r = 0; r < c->nres; r++) h = drop(ctx, res_forward(ctx, &n->down[l][r], h, temb), h);
        skips[l] = h;
        if (l < c->nlevels - 1) h = dfl_avg_pool2(ctx, h);
    }
    for (int r = 0; r < 2; r++) {
        dfl_tensor *nh = res_forward(ctx, &n->mid[r], h, temb);
        h = r == 0 ? nh : drop(ctx, nh, h); /* the first reads the last level's skip */
    }
    for (int i = 0; i < c->nlevels; i++) {
        int l = c->nlevels - 1 - i;
        h = drop(ctx, drop(ctx, dfl_concat_channels(ctx, h, skips[l]), h), skips[l]);
        for (int r = 0; r < c->nres; r++) h = drop(ctx, res_forward(ctx, &n->up[i][r], h, temb), h);
        if (l > 0) h = drop(ctx, dfl_upsample2(ctx, h), h);
    }
    h = drop(ctx, dfl_group_norm_silu(ctx, h, n->out_norm.weight, n->out_norm.bias, n->out_norm.groups, 1e-5f), h);
    return drop(ctx, drop(ctx, dfl_conv2d(ctx, h, n->out_conv.weight, n->out_conv.bias, 1), h), temb);
}

static dfl_tensor *mlp_forward(dfl_ctx *ctx, dfl_net *n, dfl_tensor *x, dfl_tensor *t)
{
    int N = x->shape[0], s1[2] = {N, 1};
    dfl_tensor *tc = dfl_tensor_wrap(ctx, t->data, 2, s1);
    dfl_tensor *h = dfl_concat_channels(ctx, x, tc);
    for (int i = 0; i < n->nmlp; i++) {
        h = dfl_linear(ctx, h, n->mlp[i].weight, n->mlp[i].bias);
        if (i < n->nmlp - 1) h = dfl_silu(ctx, h);
    }
    return h;
}

dfl_tensor *dfl_net_forward(dfl_ctx *ctx, dfl_net *net, dfl_tensor *x, dfl_tensor *t)
{
    if (!x || !t) return NULL;
    const dfl_arch_cfg *c = &net->cfg;
    char b1[64];
    if (c->arch == DFL_ARCH_MLP) {
        if (x->ndim != 2 || x->shape[1] != c->dim || t->n != (size_t)x->shape[0]) {
            dfl_fail(DFL_ERR_SHAPE, "mlp: input %s does not match (N, %d) with N times", dfl_shape_str(x, b1, sizeof b1), c->dim);
            return NULL;
        }
        return mlp_forward(ctx, net, x, t);
    }
    if (x->ndim != 4 || x->shape[1] != c->channels || x->shape[2] != c->height || x->shape[3] != c->width ||
        t->n != (size_t)x->shape[0]) {
        dfl_fail(DFL_ERR_SHAPE, "%s: input %s does not match (N, %d, %d, %d) with N times", c->arch == DFL_ARCH_DIT ? "dit" : "unet",
                 dfl_shape_str(x, b1, sizeof b1), c->channels, c->height, c->width);
        return NULL;
    }
    if (c->arch == DFL_ARCH_DIT) return dfl_dit_forward(ctx, net->dit, x, t);
    return unet_forward(ctx, net, x, t);
}
