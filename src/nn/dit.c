/* DiT backbone (Peebles & Xie 2023, "Scalable Diffusion Models with Transformers", sec. 3.2 and
 * Fig. 3): patchify, time embedding, N blocks with adaLN-Zero conditioning, final adaLN layer,
 * unpatchify. Positions: 2-D axial RoPE on q and k (default), DiT's fixed 2-D sin-cos table, or
 * none (ablation).
 * No class label: the conditioning vector c is the time embedding alone.
 *
 * Block (DiT Fig. 3, "adaLN-Zero"), with (shift1, scale1, gate1, shift2, scale2, gate2) =
 * Linear(SiLU(c)) split in six:
 *   h = h + gate1 * Attn(LN(h) * (1 + scale1) + shift1)
 *   h = h + gate2 * MLP(LN(h) * (1 + scale2) + shift2)
 * LN without affine (eps 1e-6), MLP = Linear GELU(tanh) Linear. The modulation linears start at
 * zero, so every block starts as the identity; the final linear starts at zero, so F = 0.
 * Parameter names are DiT's PyTorch module paths (models.py), without the label embedder. */
#include "nn/dit.h"

#include "difflow/ops.h"
#include "difflow/posenc.h"
#include "difflow/tf.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DIT_MAX_DEPTH 64
#define PAR_MIN (1L << 15) /* elements below which the adaLN loops stay single-threaded */

typedef struct {
    dfl_linear_layer ada, qkv, proj, fc1, fc2;
} dit_block;

struct dfl_dit {
    dfl_arch_cfg cfg;
    dfl_conv_layer x_embed; /* Conv2d(C, D, p, stride p), applied as a linear on patches */
    dfl_linear_layer t1, t2;
    dit_block blocks[DIT_MAX_DEPTH];
    dfl_linear_layer final_ada, final_lin;
    int T, gh, gw;
    int *row, *col;     /* grid position of each token */
    float *pos_table;   /* (T, D) sin-cos table, DFL_DIT_POS_SINCOS only */
    dfl_rope_cfg rope;
};

void dfl_dit_preset(dfl_arch_cfg *c)
{
    c->arch = DFL_ARCH_DIT;
    c->channels = 1;
    c->height = c->width = 28;
    c->patch = 4;
    c->hidden = 192;
    c->depth = 6;
    c->heads = 4;
    c->mlp_ratio = 4;
    c->temb_dim = 256;
    c->t_scale = 1000.f;
    c->posenc = DFL_DIT_POS_ROPE2D;
    c->rope_theta = 100.0;
}

static const char *const POSENC_NAMES[3] = {"rope2d", "sincos", "none"};

const char *dfl_dit_posenc_name(dfl_dit_posenc p)
{
    return (unsigned)p < 3 ? POSENC_NAMES[p] : "?";
}

dfl_status dfl_dit_posenc_parse(const char *s, dfl_dit_posenc *out)
{
    for (int i = 0; s && i < 3; i++)
        if (!strcmp(s, POSENC_NAMES[i])) {
            *out = (dfl_dit_posenc)i;
            return DFL_OK;
        }
    return dfl_fail(DFL_ERR_ARG, "unknown DiT positional encoding '%s' (known: rope2d, sincos, none)", s ? s : "(null)");
}

dfl_status dfl_dit_validate(const dfl_arch_cfg *c)
{
    if (c->channels < 1 || c->height < 1 || c->width < 1)
        return dfl_fail(DFL_ERR_ARG, "dit: invalid image %dx%dx%d", c->channels, c->height, c->width);
    if (c->patch < 1 || c->height % c->patch || c->width % c->patch)
        return dfl_fail(DFL_ERR_ARG, "dit: patch %d does not divide the image %dx%d", c->patch, c->height, c->width);
    if (c->depth < 1 || c->depth > DIT_MAX_DEPTH)
        return dfl_fail(DFL_ERR_ARG, "dit: depth %d not in 1..%d", c->depth, DIT_MAX_DEPTH);
    if (c->hidden < 4 || c->heads < 1 || c->hidden % c->heads)
        return dfl_fail(DFL_ERR_ARG, "dit: %d heads do not divide the width %d", c->heads, c->hidden);
    if (c->mlp_ratio < 1) return dfl_fail(DFL_ERR_ARG, "dit: mlp ratio %d must be >= 1", c->mlp_ratio);
    if (c->temb_dim < 2 || c->temb_dim % 2)
        return dfl_fail(DFL_ERR_ARG, "dit: time embedding dim %d must be even and >= 2", c->temb_dim);
    if (c->posenc == DFL_DIT_POS_ROPE2D) {
        int dh = c->hidden / c->heads;
        if (dh % 4)
            return dfl_fail(DFL_ERR_ARG, "dit: head dimension %d must be a multiple of 4 for 2-D RoPE (rows and columns each take half the pairs)", dh);
        if (!(c->rope_theta > 0)) return dfl_fail(DFL_ERR_ARG, "dit: rope theta %g must be > 0", c->rope_theta);
    } else if (c->posenc == DFL_DIT_POS_SINCOS) {
        if (c->hidden % 4) return dfl_fail(DFL_ERR_ARG, "dit: width %d must be a multiple of 4 for the 2-D sin-cos table", c->hidden);
    } else if (c->posenc != DFL_DIT_POS_NONE) {
        return dfl_fail(DFL_ERR_ARG, "dit: unknown positional encoding %d", (int)c->posenc);
    }
    return DFL_OK;
}

/* ------------------------------------------------------------------ patchify / unpatchify */

/* Index of x[n, c, gi p + i, gj p + j] and of its patch slot, for element e of the image. */
static void patch_perm(const float *src, float *dst, int N, int C, int H, int W, int p, int to_patches, int acc)
{
    int gw = W / p, T = (H / p) * gw, F = C * p * p;
    for (int n = 0; n < N; n++)
        for (int c = 0; c < C; c++)
            for (int y = 0; y < H; y++)
                for (int x = 0; x < W; x++) {
                    size_t img = (((size_t)n * C + c) * H + y) * W + x;
                    int t = (y / p) * gw + x / p, f = c * p * p + (y % p) * p + x % p;
                    size_t pat = ((size_t)n * T + t) * F + f;
                    size_t s = to_patches ? img : pat, d = to_patches ? pat : img;
                    if (acc) dst[d] += src[s];
                    else dst[d] = src[s];
                }
}

static void patchify_backward(dfl_ctx *ctx, dfl_node *nd)
{
    dfl_tensor *x = nd->in[0];
    float *dx = dfl_grad_of(ctx, x);
    if (dx) patch_perm(nd->out->grad, dx, x->shape[0], x->shape[1], x->shape[2], x->shape[3], nd->iarg[0], 0, 1);
}

dfl_tensor *dfl_patchify(dfl_ctx *ctx, dfl_tensor *x, int p)
{
    if (!ctx || !x) return NULL;
    char s[64];
    if (x->ndim != 4 || p < 1 || x->shape[2] % p || x->shape[3] % p) {
        dfl_fail(DFL_ERR_SHAPE, "patchify: input %s is not (N, C, H, W) with H and W divisible by patch %d",
                 dfl_shape_str(x, s, sizeof s), p);
        return NULL;
    }
    int N = x->shape[0], C = x->shape[1], H = x->shape[2], W = x->shape[3];
    int shape[3] = {N, (H / p) * (W / p), C * p * p};
    dfl_tensor *in[1] = {x};
    dfl_tensor *out = dfl_op_output(ctx, 3, shape, in, 1);
    if (!out) return NULL;
    patch_perm(x->data, out->data, N, C, H, W, p, 1, 0);
    dfl_node *nd = dfl_tape_push(ctx, patchify_backward, "patchify", out, in, 1);
    if (nd) nd->iarg[0] = p;
    return out;
}

static void unpatchify_backward(dfl_ctx *ctx, dfl_node *nd)
{
    dfl_tensor *y = nd->out;
    float *dx = dfl_grad_of(ctx, nd->in[0]);
    if (dx) patch_perm(y->grad, dx, y->shape[0], y->shape[1], y->shape[2], y->shape[3], nd->iarg[0], 1, 1);
}

dfl_tensor *dfl_unpatchify(dfl_ctx *ctx, dfl_tensor *x, int C, int H, int W, int p)
{
    if (!ctx || !x) return NULL;
    char s[64];
    if (p < 1 || C < 1 || H % p || W % p || x->ndim != 3 || x->shape[1] != (H / p) * (W / p) || x->shape[2] != C * p * p) {
        dfl_fail(DFL_ERR_SHAPE, "unpatchify: input %s is not (N, %d, %d) for %dx%dx%d images with patch %d",
                 dfl_shape_str(x, s, sizeof s), p > 0 ? (H / p) * (W / p) : 0, C * p * p, C, H, W, p);
        return NULL;
    }
    int shape[4] = {x->shape[0], C, H, W};
    dfl_tensor *in[1] = {x};
    dfl_tensor *out = dfl_op_output(ctx, 4, shape, in, 1);
    if (!out) return NULL;
    patch_perm(x->data, out->data, shape[0], C, H, W, p, 0, 0);
    dfl_node *nd = dfl_tape_push(ctx, unpatchify_backward, "unpatchify", out, in, 1);
    if (nd) nd->iarg[0] = p;
    return out;
}

/* ------------------------------------------------------------------ adaLN ops */

/* y[n, t, :] = x[n, t, :] * (1 + scale[n, :]) + shift[n, :]; x (N, T, D), shift and scale (N, D)
 * (DiT's modulate). */
static void modulate_backward(dfl_ctx *ctx, dfl_node *nd)
{
    dfl_tensor *x = nd->in[0], *sh = nd->in[1], *sc = nd->in[2];
    float *dx = dfl_grad_of(ctx, x), *dsh = dfl_grad_of(ctx, sh), *dsc = dfl_grad_of(ctx, sc);
    const float *dy = nd->out->grad;
    long N = x->shape[0], T = x->shape[1], D = x->shape[2];
#pragma omp parallel for schedule(static) if (N * T * D > PAR_MIN)
    for (long n = 0; n < N; n++) {
        const float *s = sc->data + n * D;
        for (long t = 0; t < T; t++) {
            const float *g = dy + (n * T + t) * D, *xr = x->data + (n * T + t) * D;
            if (dx) {
                float *d = dx + (n * T + t) * D;
                for (long i = 0; i < D; i++) d[i] += g[i] * (1.f + s[i]);
            }
            if (dsh)
                for (long i = 0; i < D; i++) dsh[n * D + i] += g[i];
            if (dsc)
                for (long i = 0; i < D; i++) dsc[n * D + i] += g[i] * xr[i];
        }
    }
}

static dfl_tensor *modulate(dfl_ctx *ctx, dfl_tensor *x, dfl_tensor *shift, dfl_tensor *scale)
{
    if (!x || !shift || !scale) return NULL;
    dfl_tensor *in[3] = {x, shift, scale};
    dfl_tensor *out = dfl_op_output(ctx, 3, x->shape, in, 3);
    if (!out) return NULL;
    long N = x->shape[0], T = x->shape[1], D = x->shape[2];
#pragma omp parallel for schedule(static) if (N * T * D > PAR_MIN)
    for (long n = 0; n < N; n++) {
        const float *s = scale->data + n * D, *b = shift->data + n * D;
        for (long t = 0; t < T; t++) {
            const float *xr = x->data + (n * T + t) * D;
            float *yr = out->data + (n * T + t) * D;
            for (long i = 0; i < D; i++) yr[i] = xr[i] * (1.f + s[i]) + b[i];
        }
    }
    dfl_tape_push(ctx, modulate_backward, "dit_modulate", out, in, 3);
    return out;
}

/* y[n, t, :] = h[n, t, :] + gate[n, :] * u[n, t, :]; h, u (N, T, D), gate (N, D) (gated residual). */
static void gated_add_backward(dfl_ctx *ctx, dfl_node *nd)
{
    dfl_tensor *h = nd->in[0], *g = nd->in[1], *u = nd->in[2];
    float *dh = dfl_grad_of(ctx, h), *dg = dfl_grad_of(ctx, g), *du = dfl_grad_of(ctx, u);
    const float *dy = nd->out->grad;
    long N = h->shape[0], T = h->shape[1], D = h->shape[2];
#pragma omp parallel for schedule(static) if (N * T * D > PAR_MIN)
    for (long n = 0; n < N; n++) {
        const float *gr = g->data + n * D;
        for (long t = 0; t < T; t++) {
            size_t o = (size_t)(n * T + t) * D;
            if (dh)
                for (long i = 0; i < D; i++) dh[o + i] += dy[o + i];
            if (du)
                for (long i = 0; i < D; i++) du[o + i] += gr[i] * dy[o + i];
            if (dg)
                for (long i = 0; i < D; i++) dg[n * D + i] += dy[o + i] * u->data[o + i];
        }
    }
}

static dfl_tensor *gated_add(dfl_ctx *ctx, dfl_tensor *h, dfl_tensor *gate, dfl_tensor *u)
{
    if (!h || !gate || !u) return NULL;
    dfl_tensor *in[3] = {h, gate, u};
    dfl_tensor *out = dfl_op_output(ctx, 3, h->shape, in, 3);
    if (!out) return NULL;
    long N = h->shape[0], T = h->shape[1], D = h->shape[2];
#pragma omp parallel for schedule(static) if (N * T * D > PAR_MIN)
    for (long n = 0; n < N; n++) {
        const float *gr = gate->data + n * D;
        for (long t = 0; t < T; t++) {
            size_t o = (size_t)(n * T + t) * D;
            for (long i = 0; i < D; i++) out->data[o + i] = h->data[o + i] + gr[i] * u->data[o + i];
        }
    }
    dfl_tape_push(ctx, gated_add_backward, "dit_gated_add", out, in, 3);
    return out;
}

/* ------------------------------------------------------------------ construction */

static void fill_xavier(dfl_rng *rng, dfl_tensor *w, int fan_in, int fan_out)
{
    float bound = sqrtf(6.f / (float)(fan_in + fan_out));
    for (size_t i = 0; i < w->n; i++) w->data[i] = (2.f * dfl_rng_uniform(rng) - 1.f) * bound;
}

static void zero(dfl_tensor *t) { memset(t->data, 0, t->n * sizeof(float)); }

/* Linear registered under prefix, then DiT's init: xavier-uniform weight (mode 1), N(0, 0.02)
 * weight (mode 2) or zero weight (mode 0); zero bias always. */
static dfl_status dit_linear(dfl_linear_layer *l, dfl_params *ps, dfl_rng *rng, int in, int out, int mode,
                             const char *name)
{
    dfl_status st = dfl_linear_init(l, ps, rng, in, out, name);
    if (st) return st;
    zero(l->bias);
    if (mode == 1) fill_xavier(rng, l->weight, in, out);
    else if (mode == 2)
        for (size_t k = 0; k < l->weight->n; k++) l->weight->data[k] = 0.02f * dfl_rng_normal(rng);
    else zero(l->weight);
    return DFL_OK;
}

void dfl_dit_free(dfl_dit *d)
{
    if (!d) return;
    free(d->row);
    free(d->col);
    free(d->pos_table);
    free(d);
}

void dfl_dit_sincos_table(float *pe, int gh, int gw, int D)
{
    int q = D / 4, T = gh * gw;
    for (int t = 0; t < T; t++)
        for (int half = 0; half < 2; half++) {
            double pos = half ? t / gw : t % gw;
            for (int k = 0; k < q; k++) {
                double a = pos * pow(10000.0, -(double)k / q);
                pe[(size_t)t * D + half * 2 * q + k] = (float)sin(a);
                pe[(size_t)t * D + half * 2 * q + q + k] = (float)cos(a);
            }
        }
}

dfl_dit *dfl_dit_new(const dfl_arch_cfg *c, dfl_params *ps, dfl_rng *rng)
{
    if (dfl_dit_validate(c)) return NULL;
    dfl_dit *d = calloc(1, sizeof *d);
    if (!d) {
        dfl_fail(DFL_ERR_NOMEM, "dit: out of memory");
        return NULL;
    }
    d->cfg = *c;
    int D = c->hidden, p = c->patch, F = c->channels * p * p;
    d->gh = c->height / p;
    d->gw = c->width / p;
    d->T = d->gh * d->gw;
    d->row = malloc((size_t)d->T * sizeof(int));
    d->col = malloc((size_t)d->T * sizeof(int));
    if (!d->row || !d->col) goto nomem;
    for (int t = 0; t < d->T; t++) {
        d->row[t] = t / d->gw;
        d->col[t] = t % d->gw;
    }
    if (c->posenc == DFL_DIT_POS_SINCOS) {
        d->pos_table = malloc((size_t)d->T * D * sizeof(float));
        if (!d->pos_table) goto nomem;
        dfl_dit_sincos_table(d->pos_table, d->gh, d->gw, D);
    }
    d->rope = dfl_rope_default();
    d->rope.theta = c->rope_theta;
    dfl_status st = dfl_conv_init(&d->x_embed, ps, rng, c->channels, D, p, "x_embedder.proj");
    if (!st) {
        fill_xavier(rng, d->x_embed.weight, F, D);
        zero(d->x_embed.bias);
        st = dit_linear(&d->t1, ps, rng, c->temb_dim, D, 2, "t_embedder.mlp.0");
    }
    if (!st) st = dit_linear(&d->t2, ps, rng, D, D, 2, "t_embedder.mlp.2");
    char nm[5][96];
    for (int i = 0; i < c->depth && !st; i++) {
        dit_block *b = &d->blocks[i];
        snprintf(nm[0], sizeof nm[0], "blocks.%d.attn.qkv", i);
        snprintf(nm[1], sizeof nm[1], "blocks.%d.attn.proj", i);
        snprintf(nm[2], sizeof nm[2], "blocks.%d.mlp.fc1", i);
        snprintf(nm[3], sizeof nm[3], "blocks.%d.mlp.fc2", i);
        snprintf(nm[4], sizeof nm[4], "blocks.%d.adaLN_modulation.1", i);
        st = dit_linear(&b->qkv, ps, rng, D, 3 * D, 1, nm[0]);
        if (!st) st = dit_linear(&b->proj, ps, rng, D, D, 1, nm[1]);
        if (!st) st = dit_linear(&b->fc1, ps, rng, D, c->mlp_ratio * D, 1, nm[2]);
        if (!st) st = dit_linear(&b->fc2, ps, rng, c->mlp_ratio * D, D, 1, nm[3]);
        if (!st) st = dit_linear(&b->ada, ps, rng, D, 6 * D, 0, nm[4]);
    }
    if (!st) st = dit_linear(&d->final_lin, ps, rng, D, F, 0, "final_layer.linear");
    if (!st) st = dit_linear(&d->final_ada, ps, rng, D, 2 * D, 0, "final_layer.adaLN_modulation.1");
    if (st) {
        dfl_dit_free(d);
        return NULL;
    }
    return d;
nomem:
    dfl_dit_free(d);
    dfl_fail(DFL_ERR_NOMEM, "dit: out of memory");
    return NULL;
}

/* ------------------------------------------------------------------ forward */

/* Chunk k of the (N, m D) modulation vector: (N, D). */
static dfl_tensor *chunk(dfl_ctx *ctx, dfl_tensor *mod, int k, int D)
{
    return dfl_slice_channels(ctx, mod, k * D, (k + 1) * D);
}

static dfl_tensor *ln(dfl_ctx *ctx, dfl_tensor *x) { return dfl_layer_norm(ctx, x, NULL, NULL, 1e-6f); }

static dfl_tensor *block_forward(dfl_ctx *ctx, dfl_dit *d, dit_block *b, dfl_tensor *h, dfl_tensor *sc)
{
    const dfl_arch_cfg *c = &d->cfg;
    int D = c->hidden, H = c->heads;
    dfl_tensor *mod = dfl_linear(ctx, sc, b->ada.weight, b->ada.bias);
    dfl_tensor *y = modulate(ctx, ln(ctx, h), chunk(ctx, mod, 0, D), chunk(ctx, mod, 1, D));
    /* qkv features s D + h Dh + j (timm's reshape(B, T, 3, H, Dh)) are heads s H + h of 3H. */
    dfl_tensor *qkv = dfl_split_heads(ctx, dfl_linear(ctx, y, b->qkv.weight, b->qkv.bias), 3 * H);
    dfl_tensor *q = dfl_slice_channels(ctx, qkv, 0, H);
    dfl_tensor *k = dfl_slice_channels(ctx, qkv, H, 2 * H);
    dfl_tensor *v = dfl_slice_channels(ctx, qkv, 2 * H, 3 * H);
    if (c->posenc == DFL_DIT_POS_ROPE2D) {
        q = dfl_rope_2d(ctx, q, d->row, d->col, &d->rope);
        k = dfl_rope_2d(ctx, k, d->row, d->col, &d->rope);
    }
    dfl_tensor *a = dfl_merge_heads(ctx, dfl_attention(ctx, q, k, v, NULL));
    a = dfl_linear(ctx, a, b->proj.weight, b->proj.bias);
    h = gated_add(ctx, h, chunk(ctx, mod, 2, D), a);
    y = modulate(ctx, ln(ctx, h), chunk(ctx, mod, 3, D), chunk(ctx, mod, 4, D));
    y = dfl_gelu(ctx, dfl_linear(ctx, y, b->fc1.weight, b->fc1.bias), DFL_GELU_TANH);
    y = dfl_linear(ctx, y, b->fc2.weight, b->fc2.bias);
    return gated_add(ctx, h, chunk(ctx, mod, 5, D), y);
}

dfl_tensor *dfl_dit_forward(dfl_ctx *ctx, dfl_dit *d, dfl_tensor *x, dfl_tensor *t)
{
    const dfl_arch_cfg *c = &d->cfg;
    int D = c->hidden;
    /* The conv weight [D, C, p, p] seen as the linear [D, C p p] (same data and gradient). */
    dfl_tensor *w = dfl_arena_alloc(ctx, sizeof *w);
    if (!w) return NULL;
    *w = *d->x_embed.weight;
    w->ndim = 2;
    w->shape[1] = c->channels * c->patch * c->patch;
    w->shape[2] = w->shape[3] = 0;
    w->owned = w->grad_owned = 0;
    dfl_tensor *h = dfl_linear(ctx, dfl_patchify(ctx, x, c->patch), w, d->x_embed.bias);
    if (c->posenc == DFL_DIT_POS_SINCOS) {
        int s[2] = {d->T, D};
        h = dfl_add(ctx, h, dfl_tensor_wrap(ctx, d->pos_table, 2, s));
    }
    dfl_tensor *e = dfl_sinusoidal_embedding(ctx, t, c->temb_dim, c->t_scale);
    e = dfl_linear(ctx, dfl_silu(ctx, dfl_linear(ctx, e, d->t1.weight, d->t1.bias)), d->t2.weight, d->t2.bias);
    dfl_tensor *sc = dfl_silu(ctx, e);
    for (int i = 0; i < c->depth; i++) h = block_forward(ctx, d, &d->blocks[i], h, sc);
    dfl_tensor *mod = dfl_linear(ctx, sc, d->final_ada.weight, d->final_ada.bias);
    h = modulate(ctx, ln(ctx, h), chunk(ctx, mod, 0, D), chunk(ctx, mod, 1, D));
    h = dfl_linear(ctx, h, d->final_lin.weight, d->final_lin.bias);
    return dfl_unpatchify(ctx, h, c->channels, c->height, c->width, c->patch);
}
