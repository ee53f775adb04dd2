/* Bijections of the normalizing flows (flow.h; DESIGN section 5; reference/flows.md section 2):
 * NICE additive coupling and scaling, RealNVP affine coupling (checkerboard, channel and vector
 * partitions) with a tanh-bounded scale, Glow's sigmoid-scale coupling, squeeze, ActNorm,
 * invertible 1x1 convolution (plain and LU), logit preprocessing and the factor-out layer with a
 * learned conditional prior. Every map is written with differentiable ops, so forward and
 * inverse both record on the tape; each returns its per-sample log-det (N). */
#include "flow_internal.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------ helpers */

static dfl_bijection *bij_alloc(int kind, const char *name, int C, int H, int W)
{
    dfl_bijection *b = calloc(1, sizeof *b);
    if (!b) {
        dfl_fail(DFL_ERR_NOMEM, "%s: out of memory", name);
        return NULL;
    }
    b->kind = kind;
    snprintf(b->name, sizeof b->name, "%s", name);
    b->C = C;
    b->H = H;
    b->W = W;
    b->vec = H == 0;
    return b;
}

void dfl_bij_free(dfl_bijection *b)
{
    if (!b) return;
    dfl_tensor_free(b->maskb);
    dfl_tensor_free(b->maskc);
    free(b->perm);
    free(b->sign);
    free(b);
}

const char *dfl_bij_name(const dfl_bijection *b) { return b ? b->name : "?"; }

/* pixels per channel (1 for vectors) */
static int spatial(const dfl_bijection *b) { return b->vec ? 1 : b->H * b->W; }

/* A (1) or (N) tensor broadcast to (N). */
static dfl_tensor *to_batch(dfl_ctx *ctx, dfl_tensor *v, int N)
{
    if (!v) return NULL;
    if (v->n == (size_t)N && v->ndim == 1) return v;
    dfl_tensor *z = dfl_tensor_zeros(ctx, 1, &N);
    return dfl_add(ctx, z, v);
}

static int check_input(const dfl_bijection *b, const dfl_tensor *x, int C, int H, int W)
{
    int ok = x && (b->vec ? (x->ndim == 2 && x->shape[1] == C)
                          : (x->ndim == 4 && x->shape[1] == C && x->shape[2] == H && x->shape[3] == W));
    if (!ok && x) {
        char s[64];
        if (b->vec)
            dfl_fail(DFL_ERR_SHAPE, "%s: input %s, expected (N, %d)", b->name, dfl_shape_str(x, s, sizeof s), C);
        else
            dfl_fail(DFL_ERR_SHAPE, "%s: input %s, expected (N, %d, %d, %d)", b->name,
                     dfl_shape_str(x, s, sizeof s), C, H, W);
    }
    return ok;
}

static void zero_tensor(dfl_tensor *t) { memset(t->data, 0, t->n * sizeof(float)); }

/* ------------------------------------------------------------------ conditioner networks */

/* Output layer of a coupling MLP: PyTorch's default init times out_scale, not zero. On data
 * symmetric under x_b -> -x_b given x_a (8 gaussians) a zero output layer is a stationary point
 * of the likelihood: the gradient of the shift, E[d log p/d y_b * h(x_a)], vanishes, and an
 * additive (NICE) coupling never leaves the identity (measured: NICE at -4.36 nats on
 * 8gaussians, the best scaled logistic). Additive couplings take the full default init (NICE's
 * released code initialises every layer at random), affine ones 0.1 of it. Measured on
 * 8gaussians, 8 couplings of 3 x 128, 4000 Adam steps at 1e-3, batch 256: out_scale 1 reaches
 * -3.21..-3.28 nats, out_scale 0.1 stays at -4.36. */

static dfl_status net_init(cnet *n, const char *prefix, dfl_net_kind kind, int vec, int cin, int cout,
                           int hidden, int depth, float out_scale, dfl_params *ps, dfl_rng *rng)
{
    char p[200];
    dfl_status st = DFL_OK;
    n->kind = kind;
    n->depth = depth;
    if (kind == DFL_NET_MLP) {
        if (!vec || depth < 1 || depth + 1 > CNET_MAX) return dfl_fail(DFL_ERR_ARG, "%s: MLP needs vectors and 1..%d hidden layers (got %d)", prefix, CNET_MAX - 1, depth);
        int in = cin;
        for (int i = 0; i <= depth && !st; i++) {
            int out = i == depth ? cout : hidden;
            snprintf(p, sizeof p, "%s.%d", prefix, i);
            st = dfl_linear_init(&n->lin[i], ps, rng, in, out, p);
            in = out;
        }
        if (!st) { /* small but not zero: see above */
            dfl_tensor *w = n->lin[depth].weight, *bb = n->lin[depth].bias;
            for (size_t i = 0; i < w->n; i++) w->data[i] *= out_scale;
            for (size_t i = 0; i < bb->n; i++) bb->data[i] *= out_scale;
        }
        n->nl = depth + 1;
        return st;
    }
    if (vec) return dfl_fail(DFL_ERR_ARG, "%s: a conv network needs images", prefix);
    if (kind == DFL_NET_RESNET) {
        if (depth < 0 || 2 * depth + 2 > CNET_MAX) return dfl_fail(DFL_ERR_ARG, "%s: 0..%d residual blocks (got %d)", prefix, (CNET_MAX - 2) / 2, depth);
        snprintf(p, sizeof p, "%s.conv_in", prefix);
        st = dfl_conv_init(&n->conv[0], ps, rng, cin, hidden, 3, p);
        for (int bl = 0; bl < depth && !st; bl++) {
            snprintf(p, sizeof p, "%s.blocks.%d.conv1", prefix, bl);
            st = dfl_conv_init(&n->conv[1 + 2 * bl], ps, rng, hidden, hidden, 3, p);
            snprintf(p, sizeof p, "%s.blocks.%d.conv2", prefix, bl);
            if (!st) st = dfl_conv_init(&n->conv[2 + 2 * bl], ps, rng, hidden, hidden, 3, p);
        }
        snprintf(p, sizeof p, "%s.conv_out", prefix);
        if (!st) st = dfl_conv_init(&n->conv[1 + 2 * depth], ps, rng, hidden, cout, 3, p);
        n->nl = 2 + 2 * depth;
    } else {
        snprintf(p, sizeof p, "%s.conv1", prefix);
        st = dfl_conv_init(&n->conv[0], ps, rng, cin, hidden, 3, p);
        snprintf(p, sizeof p, "%s.conv2", prefix);
        if (!st) st = dfl_conv_init(&n->conv[1], ps, rng, hidden, hidden, 1, p);
        snprintf(p, sizeof p, "%s.conv3", prefix);
        if (!st) st = dfl_conv_init(&n->conv[2], ps, rng, hidden, cout, 3, p);
        n->nl = 3;
    }
    if (!st) {
        zero_tensor(n->conv[n->nl - 1].weight);
        zero_tensor(n->conv[n->nl - 1].bias);
    }
    return st;
}

static dfl_tensor *conv(dfl_ctx *ctx, const dfl_conv_layer *c, dfl_tensor *x)
{
    return dfl_conv2d(ctx, x, c->weight, c->bias, c->k / 2);
}

static dfl_tensor *net_forward(dfl_ctx *ctx, const cnet *n, dfl_tensor *x)
{
    dfl_tensor *h = x;
    if (n->kind == DFL_NET_MLP) {
        for (int i = 0; i < n->nl; i++) {
            h = dfl_linear(ctx, h, n->lin[i].weight, n->lin[i].bias);
            if (i + 1 < n->nl) h = dfl_relu(ctx, h);
        }
        return h;
    }
    if (n->kind == DFL_NET_RESNET) {
        h = conv(ctx, &n->conv[0], h);
        for (int bl = 0; bl < n->depth; bl++) {
            dfl_tensor *r = conv(ctx, &n->conv[1 + 2 * bl], dfl_relu(ctx, h));
            r = conv(ctx, &n->conv[2 + 2 * bl], dfl_relu(ctx, r));
            h = dfl_add(ctx, h, r);
        }
        return conv(ctx, &n->conv[n->nl - 1], dfl_relu(ctx, h));
    }
    h = dfl_relu(ctx, conv(ctx, &n->conv[0], h));
    h = dfl_relu(ctx, conv(ctx, &n->conv[1], h));
    return conv(ctx, &n->conv[2], h);
}

/* ------------------------------------------------------------------ coupling */

dfl_bijection *dfl_bij_coupling_new(const char *name, int C, int H, int W, dfl_mask_kind mask,
                                    int parity, dfl_coupling_kind kind, dfl_net_kind net,
                                    int hidden, int net_depth, dfl_params *ps, dfl_rng *rng)
{
    int vec = H == 0;
    if ((mask == DFL_MASK_VECTOR) != vec || (parity != 0 && parity != 1) || hidden < 1 ||
        kind < DFL_COUPLING_ADDITIVE || kind > DFL_COUPLING_SIGMOID) {
        dfl_fail(DFL_ERR_ARG, "%s: invalid coupling (mask %d for %s, parity %d, kind %d, hidden %d)", name,
                 (int)mask, vec ? "vectors" : "images", parity, (int)kind, hidden);
        return NULL;
    }
    if ((mask != DFL_MASK_CHECKERBOARD && C < 2) || (!vec && (H < 1 || W < 1)) || C < 1) {
        dfl_fail(DFL_ERR_ARG, "%s: a coupling needs at least 2 %s (got %d)", name,
                 vec ? "dimensions" : "channels", C);
        return NULL;
    }
    dfl_bijection *b = bij_alloc(BK_COUPLING, name, C, H, W);
    if (!b) return NULL;
    b->mask = mask;
    b->parity = parity;
    b->ck = kind;
    int c1 = (C + 1) / 2, c2 = C / 2;
    if (mask == DFL_MASK_CHECKERBOARD) {
        b->ca = C;
        b->cb = C;
    } else if (mask == DFL_MASK_VECTOR) { /* conditioner = indices parity, parity + 2, ... */
        b->ca = parity == 0 ? c1 : c2;
        b->cb = C - b->ca;
    } else {
        b->ca = parity == 0 ? c1 : c2;
        b->cb = C - b->ca;
    }
    int mult = kind == DFL_COUPLING_ADDITIVE ? 1 : 2;
    char p[160];
    snprintf(p, sizeof p, "%s.net", name);
    if (net_init(&b->net, p, net, vec, b->ca, mult * b->cb, hidden, net_depth,
                 kind == DFL_COUPLING_ADDITIVE ? 1.0f : 0.1f, ps, rng)) {
        char msg[512];
        snprintf(msg, sizeof msg, "%s", dfl_last_error());
        dfl_fail(DFL_ERR_ARG, "%s", msg);
        dfl_bij_free(b);
        return NULL;
    }
    if (kind == DFL_COUPLING_TANH) {
        int sh4[4] = {1, b->cb, 1, 1};
        b->scale = vec ? dfl_params_add(ps, 1, &b->cb, "%s.scale", name)
                       : dfl_params_add(ps, 4, sh4, "%s.scale", name);
        if (!b->scale) {
            dfl_bij_free(b);
            return NULL;
        }
        for (size_t i = 0; i < b->scale->n; i++) b->scale->data[i] = 1.0f;
    }
    if (mask == DFL_MASK_CHECKERBOARD) {
        int sh[4] = {1, 1, H, W};
        b->maskb = dfl_tensor_new(4, sh, 0);
        b->maskc = dfl_tensor_new(4, sh, 0);
        if (!b->maskb || !b->maskc) {
            dfl_bij_free(b);
            return NULL;
        }
        for (int i = 0; i < H; i++)
            for (int j = 0; j < W; j++) {
                float v = ((i + j + parity) % 2 == 1) ? 1.0f : 0.0f;
                b->maskb->data[i * W + j] = v;
                b->maskc->data[i * W + j] = 1.0f - v;
            }
    }
    return b;
}

/* Conditioner input and transformed part of x. */
static void coupling_split(dfl_ctx *ctx, dfl_bijection *b, dfl_tensor *x, dfl_tensor **xa, dfl_tensor **xb)
{
    int C = b->C, c1 = (C + 1) / 2;
    switch (b->mask) {
    case DFL_MASK_VECTOR:
        *xa = dfl_take_alternate(ctx, x, b->parity);
        *xb = dfl_take_alternate(ctx, x, 1 - b->parity);
        break;
    case DFL_MASK_CHANNEL:
        *xa = b->parity == 0 ? dfl_slice_channels(ctx, x, 0, c1) : dfl_slice_channels(ctx, x, c1, C);
        *xb = b->parity == 0 ? dfl_slice_channels(ctx, x, c1, C) : dfl_slice_channels(ctx, x, 0, c1);
        break;
    default:
        *xa = dfl_mul(ctx, x, b->maskb);
        *xb = x;
        break;
    }
}

static dfl_tensor *coupling_merge(dfl_ctx *ctx, dfl_bijection *b, dfl_tensor *xa, dfl_tensor *yb)
{
    switch (b->mask) {
    case DFL_MASK_VECTOR:
        return b->parity == 0 ? dfl_merge_alternate(ctx, xa, yb) : dfl_merge_alternate(ctx, yb, xa);
    case DFL_MASK_CHANNEL:
        return b->parity == 0 ? dfl_concat_channels(ctx, xa, yb) : dfl_concat_channels(ctx, yb, xa);
    default:
        return yb; /* the masked transform left the conditioner entries unchanged */
    }
}

/* Shift t and log-scale ls (NULL for additive) from the network output h; checkerboard: both
 * masked to zero on the conditioner entries. */
static void coupling_params(dfl_ctx *ctx, dfl_bijection *b, dfl_tensor *h, dfl_tensor **t, dfl_tensor **ls)
{
    int cb = b->cb;
    *ls = NULL;
    if (b->ck == DFL_COUPLING_ADDITIVE) {
        *t = h;
    } else if (b->ck == DFL_COUPLING_TANH) { /* RealNVP: s = scale * tanh(h_s), then t */
        *ls = dfl_mul(ctx, dfl_tanh(ctx, dfl_slice_channels(ctx, h, 0, cb)), b->scale);
        *t = dfl_slice_channels(ctx, h, cb, 2 * cb);
    } else { /* Glow: shift first, then scale = sigmoid(a + 2) + 1e-3: the floor bounds 1/scale by
              * 1000 in the inverse (generative) direction (reference/flows.md pitfall 7; nflows'
              * AffineCouplingTransform uses the same 1e-3). */
        *t = dfl_slice_channels(ctx, h, 0, cb);
        dfl_tensor *a = dfl_slice_channels(ctx, h, cb, 2 * cb);
        *ls = dfl_log(ctx, dfl_affine_scalar(ctx, dfl_sigmoid(ctx, dfl_affine_scalar(ctx, a, 1.0f, 2.0f)), 1.0f,
                                             DFL_GLOW_SCALE_FLOOR));
    }
    if (b->mask == DFL_MASK_CHECKERBOARD) {
        *t = dfl_mul(ctx, *t, b->maskc);
        if (*ls) *ls = dfl_mul(ctx, *ls, b->maskc);
    }
}

static dfl_tensor *coupling_apply(dfl_ctx *ctx, dfl_bijection *b, dfl_tensor *x, dfl_tensor **logdet, int inverse)
{
    dfl_tensor *xa = NULL, *xb = NULL, *t, *ls;
    coupling_split(ctx, b, x, &xa, &xb);
    dfl_tensor *h = net_forward(ctx, &b->net, xa);
    if (!h) return NULL;
    coupling_params(ctx, b, h, &t, &ls);
    dfl_tensor *yb;
    if (!inverse) {
        if (b->ck == DFL_COUPLING_ADDITIVE) yb = dfl_add(ctx, xb, t);
        else if (b->ck == DFL_COUPLING_TANH) yb = dfl_add(ctx, dfl_mul(ctx, xb, dfl_exp(ctx, ls)), t);
        else yb = dfl_mul(ctx, dfl_add(ctx, xb, t), dfl_exp(ctx, ls));
    } else {
        dfl_tensor *e = ls ? dfl_exp(ctx, dfl_scale(ctx, ls, -1.0f)) : NULL;
        if (b->ck == DFL_COUPLING_ADDITIVE) yb = dfl_sub(ctx, xb, t);
        else if (b->ck == DFL_COUPLING_TANH) yb = dfl_mul(ctx, dfl_sub(ctx, xb, t), e);
        else yb = dfl_sub(ctx, dfl_mul(ctx, xb, e), t);
    }
    if (logdet) {
        *logdet = NULL;
        if (ls) {
            dfl_tensor *s = dfl_sum_per_sample(ctx, ls);
            *logdet = inverse ? dfl_scale(ctx, s, -1.0f) : s;
            if (!*logdet) return NULL;
        }
    }
    return coupling_merge(ctx, b, xa, yb);
}

/* ------------------------------------------------------------------ scaling (NICE) */

dfl_bijection *dfl_bij_scaling_new(const char *name, int C, int H, int W, dfl_params *ps)
{
    dfl_bijection *b = bij_alloc(BK_SCALING, name, C, H, W);
    if (!b) return NULL;
    int sh[3] = {C, H, W};
    b->log_scale = b->vec ? dfl_params_add(ps, 1, &C, "%s.log_scale", name)
                          : dfl_params_add(ps, 3, sh, "%s.log_scale", name);
    if (!b->log_scale) {
        dfl_bij_free(b);
        return NULL;
    }
    return b;
}

static dfl_tensor *scaling_apply(dfl_ctx *ctx, dfl_bijection *b, dfl_tensor *x, dfl_tensor **logdet, int inverse)
{
    float sg = inverse ? -1.0f : 1.0f;
    dfl_tensor *s = inverse ? dfl_scale(ctx, b->log_scale, -1.0f) : b->log_scale;
    dfl_tensor *y = dfl_mul(ctx, x, dfl_exp(ctx, s));
    if (logdet) *logdet = to_batch(ctx, dfl_scale(ctx, dfl_sum(ctx, b->log_scale), sg), x->shape[0]);
    return y;
}

/* ------------------------------------------------------------------ squeeze */

dfl_bijection *dfl_bij_squeeze_new(const char *name, int C, int H, int W)
{
    if (H < 1 || W < 1 || C < 1) {
        dfl_fail(DFL_ERR_ARG, "%s: squeeze needs an image shape (got %dx%dx%d)", name, C, H, W);
        return NULL;
    }
    if (H % 2 || W % 2) {
        dfl_fail(DFL_ERR_ARG, "%s: %s %d is odd, cannot squeeze 2x2", name, H % 2 ? "height" : "width",
                 H % 2 ? H : W);
        return NULL;
    }
    return bij_alloc(BK_SQUEEZE, name, C, H, W);
}

/* ------------------------------------------------------------------ ActNorm */

dfl_bijection *dfl_bij_actnorm_new(const char *name, int C, int H, int W, dfl_params *ps)
{
    dfl_bijection *b = bij_alloc(BK_ACTNORM, name, C, H, W);
    if (!b) return NULL;
    int sh4[4] = {1, C, 1, 1}, sh2[2] = {1, C};
    b->bias = b->vec ? dfl_params_add(ps, 2, sh2, "%s.bias", name) : dfl_params_add(ps, 4, sh4, "%s.bias", name);
    b->logs = b->bias ? (b->vec ? dfl_params_add(ps, 2, sh2, "%s.logs", name)
                                : dfl_params_add(ps, 4, sh4, "%s.logs", name))
                      : NULL;
    if (!b->logs) {
        dfl_bij_free(b);
        return NULL;
    }
    return b;
}

dfl_status dfl_bij_actnorm_init(dfl_bijection *b, const dfl_tensor *x)
{
    if (!b || b->kind != BK_ACTNORM) return dfl_fail(DFL_ERR_ARG, "%s: not an ActNorm layer", dfl_bij_name(b));
    if (!check_input(b, x, b->C, b->H, b->W)) return DFL_ERR_SHAPE;
    int N = x->shape[0], C = b->C, S = spatial(b);
    for (int c = 0; c < C; c++) {
        double m = 0.0, v = 0.0;
        for (int n = 0; n < N; n++)
            for (int s = 0; s < S; s++) m += x->data[((size_t)n * C + c) * S + s];
        m /= (double)N * S;
        for (int n = 0; n < N; n++)
            for (int s = 0; s < S; s++) {
                double d = x->data[((size_t)n * C + c) * S + s] - m;
                v += d * d;
            }
        v /= (double)N * S;
        if (!isfinite(m) || !isfinite(v))
            return dfl_fail(DFL_ERR_NUMERIC, "%s: data-dependent init saw a non-finite input", b->name);
        b->bias->data[c] = (float)-m;
        b->logs->data[c] = (float)-log(sqrt(v) + 1e-6);
    }
    return DFL_OK;
}

static dfl_tensor *actnorm_apply(dfl_ctx *ctx, dfl_bijection *b, dfl_tensor *x, dfl_tensor **logdet, int inverse)
{
    dfl_tensor *y;
    if (!inverse) y = dfl_mul(ctx, dfl_add(ctx, x, b->bias), dfl_exp(ctx, b->logs));
    else y = dfl_sub(ctx, dfl_mul(ctx, x, dfl_exp(ctx, dfl_scale(ctx, b->logs, -1.0f))), b->bias);
    if (logdet)
        *logdet = to_batch(ctx, dfl_scale(ctx, dfl_sum(ctx, b->logs), (inverse ? -1.0f : 1.0f) * spatial(b)),
                           x->shape[0]);
    return y;
}

/* ------------------------------------------------------------------ invertible 1x1 conv */

/* Random orthogonal C x C matrix: the Q of a QR factorisation of a Gaussian matrix (modified
 * Gram-Schmidt on the columns; R then has a positive diagonal, so Q is Haar-distributed). */
static void random_orthogonal(dfl_rng *rng, int C, double *Q)
{
    for (int i = 0; i < C * C; i++) Q[i] = dfl_rng_normal(rng);
    for (int j = 0; j < C; j++) {
        for (int k = 0; k < j; k++) {
            double d = 0.0;
            for (int i = 0; i < C; i++) d += Q[i * C + j] * Q[i * C + k];
            for (int i = 0; i < C; i++) Q[i * C + j] -= d * Q[i * C + k];
        }
        double nrm = 0.0;
        for (int i = 0; i < C; i++) nrm += Q[i * C + j] * Q[i * C + j];
        nrm = sqrt(nrm);
        for (int i = 0; i < C; i++) Q[i * C + j] /= nrm;
    }
}

dfl_bijection *dfl_bij_invconv_new(const char *name, int C, int H, int W, int lu, dfl_params *ps,
                                   dfl_params *bufs, dfl_rng *rng)
{
    if (C < 1) {
        dfl_fail(DFL_ERR_ARG, "%s: needs at least 1 channel", name);
        return NULL;
    }
    dfl_bijection *b = bij_alloc(BK_INVCONV, name, C, H, W);
    double *Q = malloc((size_t)C * C * sizeof *Q);
    if (!b || !Q) {
        free(Q);
        dfl_bij_free(b);
        if (b) dfl_fail(DFL_ERR_NOMEM, "%s: out of memory", name);
        return NULL;
    }
    random_orthogonal(rng, C, Q);
    b->lu = lu;
    int sh[2] = {C, C};
    if (!lu) {
        b->weight = dfl_params_add(ps, 2, sh, "%s.weight", name);
        if (b->weight)
            for (int i = 0; i < C * C; i++) b->weight->data[i] = (float)Q[i];
    } else {
        /* Q = P^T L U by Gaussian elimination with partial pivoting (rows of LU are rows
         * piv[k] of Q); W = P L U with (P M)[i] = M[perm[i]] needs perm = piv^-1. */
        int *piv = malloc((size_t)C * sizeof *piv);
        b->perm = malloc((size_t)C * sizeof *b->perm);
        b->sign = malloc((size_t)C * sizeof *b->sign);
        b->lower = dfl_params_add(ps, 2, sh, "%s.lower", name);
        b->upper = b->lower ? dfl_params_add(ps, 2, sh, "%s.upper", name) : NULL;
        b->log_s = b->upper ? dfl_params_add(ps, 1, &C, "%s.log_s", name) : NULL;
        b->perm_buf = b->log_s ? dfl_params_add(bufs, 1, &C, "%s.perm", name) : NULL;
        b->sign_buf = b->perm_buf ? dfl_params_add(bufs, 1, &C, "%s.sign", name) : NULL;
        if (!piv || !b->perm || !b->sign || !b->sign_buf) {
            free(piv);
            free(Q);
            dfl_bij_free(b);
            return NULL;
        }
        for (int i = 0; i < C; i++) piv[i] = i;
        for (int k = 0; k < C; k++) {
            int p = k;
            for (int i = k + 1; i < C; i++)
                if (fabs(Q[i * C + k]) > fabs(Q[p * C + k])) p = i;
            if (p != k) {
                for (int j = 0; j < C; j++) {
                    double t = Q[k * C + j]; Q[k * C + j] = Q[p * C + j]; Q[p * C + j] = t;
                }
                int t = piv[k]; piv[k] = piv[p]; piv[p] = t;
            }
            for (int i = k + 1; i < C; i++) {
                double f = Q[i * C + k] / Q[k * C + k];
                Q[i * C + k] = f; /* L below the diagonal */
                for (int j = k + 1; j < C; j++) Q[i * C + j] -= f * Q[k * C + j];
            }
        }
        for (int k = 0; k < C; k++) b->perm[piv[k]] = k;
        for (int i = 0; i < C; i++)
            for (int j = 0; j < C; j++) {
                b->lower->data[i * C + j] = i > j ? (float)Q[i * C + j] : 0.0f;
                b->upper->data[i * C + j] = i < j ? (float)Q[i * C + j] : 0.0f;
            }
        for (int i = 0; i < C; i++) {
            double d = Q[i * C + i];
            b->sign[i] = d < 0 ? -1.0f : 1.0f;
            b->log_s->data[i] = (float)log(fabs(d));
            b->perm_buf->data[i] = (float)b->perm[i];
            b->sign_buf->data[i] = b->sign[i];
        }
        free(piv);
    }
    free(Q);
    if (!lu && !b->weight) {
        dfl_bij_free(b);
        return NULL;
    }
    return b;
}

/* Refresh perm/sign from the buffers (a checkpoint load writes the buffers). */
static int invconv_sync(const dfl_bijection *b)
{
    if (!b->lu) return 0;
    for (int i = 0; i < b->C; i++) {
        float p = b->perm_buf->data[i], s = b->sign_buf->data[i];
        if (!(p >= 0 && p < b->C && p == floorf(p)) || (s != 1.0f && s != -1.0f)) {
            dfl_fail(DFL_ERR_FORMAT, "%s: permutation/sign buffer is invalid at %d", b->name, i);
            return -1;
        }
        b->perm[i] = (int)p;
        b->sign[i] = s;
    }
    for (int i = 0; i < b->C; i++) /* a permutation: every row exactly once */
        for (int j = i + 1; j < b->C; j++)
            if (b->perm[i] == b->perm[j]) {
                dfl_fail(DFL_ERR_FORMAT, "%s: permutation buffer repeats row %d", b->name, b->perm[i]);
                return -1;
            }
    return 0;
}

/* Entries of the LU factors from the float32 parameters: A = I + strict_lower(L) and
 * B = strict_upper(U) + diag(sign exp(log_s)) (Glow Sec. 3.2, Eq. 10). */
static double lu_a(const dfl_bijection *b, int r, int k)
{
    return k < r ? (double)b->lower->data[r * b->C + k] : (k == r ? 1.0 : 0.0);
}
static double lu_b(const dfl_bijection *b, int k, int j)
{
    return k < j ? (double)b->upper->data[k * b->C + j] : (k == j ? b->sign[k] * exp((double)b->log_s->data[k]) : 0.0);
}

/* W (C*C doubles, row-major) = P A B of an LU conv in float64, or the plain weight; no allocation. */
static int invconv_weight_d(const dfl_bijection *b, double *W)
{
    int C = b->C;
    if (!b->lu) {
        for (int i = 0; i < C * C; i++) W[i] = b->weight->data[i];
        return 0;
    }
    if (invconv_sync(b)) return -1;
    for (int i = 0; i < C; i++) {
        int r = b->perm[i]; /* (P M)[i] = M[perm[i]] */
        for (int j = 0; j < C; j++) {
            double a = 0.0;
            for (int k = 0; k <= r && k <= j; k++) a += lu_a(b, r, k) * lu_b(b, k, j);
            W[i * C + j] = a;
        }
    }
    return 0;
}

dfl_status dfl_bij_invconv_weight(const dfl_bijection *b, double *W)
{
    if (!b || b->kind != BK_INVCONV || !W)
        return dfl_fail(DFL_ERR_ARG, "%s: not an invertible 1x1 conv (or W is NULL)", dfl_bij_name(b));
    return invconv_weight_d(b, W) ? DFL_ERR_FORMAT : DFL_OK; /* validates the buffers before writing */
}

/* The two float32 factors of an LU conv as differentiable ops: P A ((P A)[i, j] = A[perm[i], j],
 * saved[0] = perm as floats) and B. */
static void lu_pa_backward(dfl_ctx *ctx, dfl_node *nd)
{
    float *dL = dfl_grad_of(ctx, nd->in[0]);
    if (!dL) return;
    int C = nd->out->shape[0];
    const float *G = nd->out->grad, *perm = nd->saved[0];
    for (int i = 0; i < C; i++) {
        int r = (int)perm[i];
        for (int j = 0; j < r; j++) dL[r * C + j] += G[i * C + j];
    }
}

static dfl_tensor *lu_pa(dfl_ctx *ctx, dfl_bijection *b)
{
    int C = b->C, sh[2] = {C, C};
    dfl_tensor *in[1] = {b->lower};
    dfl_tensor *out = dfl_op_output(ctx, 2, sh, in, 1);
    float *pv = dfl_arena_alloc(ctx, (size_t)C * sizeof *pv);
    if (!out || !pv) return NULL;
    for (int i = 0; i < C; i++) {
        pv[i] = (float)b->perm[i];
        for (int j = 0; j < C; j++) out->data[i * C + j] = (float)lu_a(b, b->perm[i], j);
    }
    dfl_node *nd = dfl_tape_push(ctx, lu_pa_backward, "lu_pa", out, in, 1);
    if (nd) nd->saved[0] = pv;
    return out;
}

static void lu_b_backward(dfl_ctx *ctx, dfl_node *nd)
{
    float *dU = dfl_grad_of(ctx, nd->in[0]), *dls = dfl_grad_of(ctx, nd->in[1]);
    int C = nd->out->shape[0];
    const float *G = nd->out->grad, *Bv = nd->out->data;
    for (int i = 0; i < C; i++) {
        if (dls) dls[i] += G[i * C + i] * Bv[i * C + i]; /* d(sign e^{ls})/d ls = the entry itself */
        if (dU)
            for (int j = i + 1; j < C; j++) dU[i * C + j] += G[i * C + j];
    }
}

static dfl_tensor *lu_b_factor(dfl_ctx *ctx, dfl_bijection *b)
{
    int C = b->C, sh[2] = {C, C};
    dfl_tensor *in[2] = {b->upper, b->log_s};
    dfl_tensor *out = dfl_op_output(ctx, 2, sh, in, 2);
    if (!out) return NULL;
    for (int i = 0; i < C; i++)
        for (int j = 0; j < C; j++) out->data[i * C + j] = (float)lu_b(b, i, j);
    dfl_tape_push(ctx, lu_b_backward, "lu_b", out, in, 2);
    return out;
}

/* Largest condition number cond_1(W) = |W|_1 |W^-1|_1 the layer accepts: beyond it float32 cannot
 * apply the map and its inverse consistently (a relative error of cond * 6e-8 ~ 0.6 at the limit),
 * and even a float64 LU of W no longer resolves ln|det W| (measured: log_s = -12 on all 6 channels
 * gives ln|det W| = -56.9 in float64 for the true -72). */
#define INVCONV_MAX_COND 1e7

/* Refuses a singular or near-singular weight, naming the layer (W and W^-1 in float64). */
static int invconv_check(dfl_bijection *b)
{
    int C = b->C;
    double *A = malloc(2 * (size_t)C * C * sizeof *A), *Ai = A ? A + (size_t)C * C : NULL;
    if (!A) {
        dfl_fail(DFL_ERR_NOMEM, "%s: out of memory", b->name);
        return -1;
    }
    if (invconv_weight_d(b, A)) {
        free(A);
        return -1;
    }
    double ld = dfl_logabsdet_d(A, C, NULL), cond = INFINITY;
    if (isfinite(ld) && dfl_inverse_d(A, C, Ai) == 0) {
        double na = 0, ni = 0;
        for (int j = 0; j < C; j++) {
            double sa = 0, si = 0;
            for (int i = 0; i < C; i++) {
                sa += fabs(A[i * C + j]);
                si += fabs(Ai[i * C + j]);
            }
            na = fmax(na, sa);
            ni = fmax(ni, si);
        }
        cond = na * ni;
    }
    free(A);
    if (!isfinite(ld) || !(cond <= INVCONV_MAX_COND)) {
        dfl_fail(DFL_ERR_NUMERIC, "%s: 1x1 conv weight is singular or near-singular (ln|det W| = %g, "
                 "condition number %.3g > %g)", b->name, ld, cond, INVCONV_MAX_COND);
        return -1;
    }
    return 0;
}

/* y = M x at every pixel (vectors: x M^T). */
static dfl_tensor *mix_channels(dfl_ctx *ctx, dfl_bijection *b, dfl_tensor *x, dfl_tensor *m)
{
    if (!x || !m) return NULL;
    if (b->vec) return dfl_linear(ctx, x, m, NULL);
    int sh[4] = {b->C, b->C, 1, 1};
    return dfl_conv2d(ctx, x, dfl_reshape(ctx, m, 4, sh), NULL, 0);
}

static dfl_tensor *invconv_apply(dfl_ctx *ctx, dfl_bijection *b, dfl_tensor *x, dfl_tensor **logdet, int inverse)
{
    if (invconv_check(b)) return NULL;
    dfl_tensor *y;
    if (!b->lu) {
        dfl_tensor *m = inverse ? dfl_mat_inverse(ctx, b->weight) : b->weight;
        if (!m) {
            dfl_fail(DFL_ERR_NUMERIC, "%s: 1x1 conv weight is singular", b->name);
            return NULL;
        }
        y = mix_channels(ctx, b, x, m);
    } else {
        /* W = (P A) B applied factor by factor; inverse B^-1 (P A)^-1, inverted in float64 */
        dfl_tensor *pa = lu_pa(ctx, b), *bf = lu_b_factor(ctx, b);
        if (!pa || !bf) return NULL;
        if (!inverse) {
            y = mix_channels(ctx, b, mix_channels(ctx, b, x, bf), pa);
        } else {
            dfl_tensor *pai = dfl_mat_inverse(ctx, pa), *bi = pai ? dfl_mat_inverse(ctx, bf) : NULL;
            if (!bi) {
                dfl_fail(DFL_ERR_NUMERIC, "%s: 1x1 conv weight is singular", b->name);
                return NULL;
            }
            y = mix_channels(ctx, b, mix_channels(ctx, b, x, pai), bi);
        }
    }
    if (logdet) {
        dfl_tensor *ld = b->lu ? dfl_sum(ctx, b->log_s) : dfl_mat_logabsdet(ctx, b->weight);
        if (!ld) {
            dfl_fail(DFL_ERR_NUMERIC, "%s: ln|det W| failed: %s", b->name, dfl_last_error());
            return NULL;
        }
        *logdet = to_batch(ctx, dfl_scale(ctx, ld, (inverse ? -1.0f : 1.0f) * spatial(b)), x->shape[0]);
    }
    return y;
}

/* ------------------------------------------------------------------ dequantization */

dfl_bijection *dfl_bij_dequant_new(const char *name, int C, int H, int W, int bits)
{
    if (bits < 1 || bits > 16) {
        dfl_fail(DFL_ERR_ARG, "%s: dequantization bits %d must be in 1..16", name, bits);
        return NULL;
    }
    dfl_bijection *b = bij_alloc(BK_DEQUANT, name, C, H, W);
    if (b) b->bits = bits;
    return b;
}

static dfl_tensor *dequant_apply(dfl_ctx *ctx, dfl_bijection *b, dfl_tensor *x, dfl_tensor **logdet, int inverse)
{
    double s = 2.0 / ldexp(1.0, b->bits); /* bin width 1 -> 2 / 2^k: exact in float */
    dfl_tensor *y = inverse ? dfl_affine_scalar(ctx, x, (float)(1.0 / s), (float)(1.0 / s))
                            : dfl_affine_scalar(ctx, x, (float)s, -1.0f);
    if (logdet && y) {
        int N = x->shape[0];
        size_t D = x->n / (size_t)N;
        dfl_tensor *ld = dfl_tensor_tmp(ctx, 1, &N);
        if (!ld) return NULL;
        double v = (inverse ? -1.0 : 1.0) * (double)D * log(s);
        for (int i = 0; i < N; i++) ld->data[i] = (float)v;
        *logdet = ld;
    }
    return y;
}

/* ------------------------------------------------------------------ learned top prior */

dfl_bijection *dfl_bij_prior_new(const char *name, int C, int H, int W, dfl_params *ps)
{
    dfl_bijection *b = bij_alloc(BK_PRIOR, name, C, H, W);
    if (!b) return NULL;
    int sh4[4] = {1, C, H, W}, sh2[2] = {1, C};
    b->pmean = b->vec ? dfl_params_add(ps, 2, sh2, "%s.mean", name) : dfl_params_add(ps, 4, sh4, "%s.mean", name);
    b->plogs = b->pmean ? (b->vec ? dfl_params_add(ps, 2, sh2, "%s.logs", name)
                                  : dfl_params_add(ps, 4, sh4, "%s.logs", name))
                        : NULL;
    if (!b->plogs) {
        dfl_bij_free(b);
        return NULL;
    }
    return b;
}

static dfl_tensor *prior_apply(dfl_ctx *ctx, dfl_bijection *b, dfl_tensor *x, dfl_tensor **logdet, int inverse)
{
    dfl_tensor *y;
    if (!inverse) y = dfl_mul(ctx, dfl_sub(ctx, x, b->pmean), dfl_exp(ctx, dfl_scale(ctx, b->plogs, -1.0f)));
    else y = dfl_add(ctx, dfl_mul(ctx, x, dfl_exp(ctx, b->plogs)), b->pmean);
    if (logdet) *logdet = to_batch(ctx, dfl_scale(ctx, dfl_sum(ctx, b->plogs), inverse ? 1.0f : -1.0f), x->shape[0]);
    return y;
}

/* ------------------------------------------------------------------ logit preprocessing */

dfl_bijection *dfl_bij_logit_new(const char *name, int C, int H, int W, float alpha)
{
    if (!(alpha >= 0.0f && alpha < 0.5f)) {
        dfl_fail(DFL_ERR_ARG, "%s: logit alpha %g must be in [0, 0.5)", name, (double)alpha);
        return NULL;
    }
    dfl_bijection *b = bij_alloc(BK_LOGIT, name, C, H, W);
    if (b) b->alpha = alpha;
    return b;
}

/* Sum over dims of ln s + ln(1 - s) = -(softplus(z) + softplus(-z)) for z = logit(s). */
static dfl_tensor *logit_logdet(dfl_ctx *ctx, dfl_bijection *b, dfl_tensor *z, int inverse)
{
    size_t D = z->n / (size_t)z->shape[0];
    dfl_tensor *sp = dfl_add(ctx, dfl_softplus(ctx, z), dfl_softplus(ctx, dfl_scale(ctx, z, -1.0f)));
    double c = (double)D * log((1.0 - 2.0 * (double)b->alpha) / 2.0);
    dfl_tensor *ld = dfl_affine_scalar(ctx, dfl_sum_per_sample(ctx, sp), 1.0f, (float)c);
    return inverse ? dfl_scale(ctx, ld, -1.0f) : ld;
}

static dfl_tensor *logit_apply(dfl_ctx *ctx, dfl_bijection *b, dfl_tensor *x, dfl_tensor **logdet, int inverse)
{
    float a = b->alpha, h = (1.0f - 2.0f * a) / 2.0f;
    if (!inverse) {
        /* s = alpha + (1 - 2 alpha)(y + 1)/2 = h y + (alpha + h) */
        dfl_tensor *z = dfl_logit(ctx, dfl_affine_scalar(ctx, x, h, a + h));
        if (logdet) *logdet = z ? logit_logdet(ctx, b, z, 0) : NULL;
        return z;
    }
    dfl_tensor *y = dfl_affine_scalar(ctx, dfl_sigmoid(ctx, x), 1.0f / h, -(a + h) / h);
    if (logdet) *logdet = logit_logdet(ctx, b, x, 1);
    return y;
}

/* ------------------------------------------------------------------ split with learned prior */

dfl_bijection *dfl_bij_split_new(const char *name, int C, int H, int W, float clamp, dfl_params *ps)
{
    if (C < 2 || H < 1 || W < 1) {
        dfl_fail(DFL_ERR_ARG, "%s: split needs an image with at least 2 channels (got %dx%dx%d)", name, C, H, W);
        return NULL;
    }
    if (!(clamp >= 0.0f && clamp <= 1000.0f)) {
        dfl_fail(DFL_ERR_ARG, "%s: split log-sd bound %g must be in [0, 1000] (0: none)", name, (double)clamp);
        return NULL;
    }
    dfl_bijection *b = bij_alloc(BK_SPLIT, name, C, H, W);
    if (!b) return NULL;
    b->clamp = clamp;
    b->ca = (C + 1) / 2;
    b->cb = C / 2;
    int shw[4] = {2 * b->cb, b->ca, 3, 3}, shb = 2 * b->cb;
    b->pconv.weight = dfl_params_add(ps, 4, shw, "%s.conv.weight", name);
    b->pconv.bias = b->pconv.weight ? dfl_params_add(ps, 1, &shb, "%s.conv.bias", name) : NULL;
    b->pconv.cin = b->ca;
    b->pconv.cout = 2 * b->cb;
    b->pconv.k = 3;
    if (!b->pconv.bias) {
        dfl_bij_free(b);
        return NULL;
    }
    return b;
}

static dfl_tensor *split_apply(dfl_ctx *ctx, dfl_bijection *b, dfl_tensor *x, dfl_tensor **logdet, int inverse)
{
    int C = b->C, c1 = b->ca, c2 = b->cb;
    dfl_tensor *z1 = dfl_slice_channels(ctx, x, 0, c1), *z2 = dfl_slice_channels(ctx, x, c1, C);
    dfl_tensor *h = conv(ctx, &b->pconv, z1);
    dfl_tensor *mu = dfl_slice_channels(ctx, h, 0, c2), *ls = dfl_slice_channels(ctx, h, c2, 2 * c2);
    /* Soft bound |logsd| < c, logsd = c tanh(raw / c), the same map in both directions so the
     * log-det stays exact: the raw log-sd is a linear conv of z1, unbounded when an under-trained
     * flow's inverse hands it a huge z1 (|z1| ~ 1e5 gives exp(1e4) = inf; flows.md pitfall 7). */
    if (b->clamp > 0) ls = dfl_scale(ctx, dfl_tanh(ctx, dfl_scale(ctx, ls, 1.0f / b->clamp)), b->clamp);
    dfl_tensor *y2;
    if (!inverse) y2 = dfl_mul(ctx, dfl_sub(ctx, z2, mu), dfl_exp(ctx, dfl_scale(ctx, ls, -1.0f)));
    else y2 = dfl_add(ctx, dfl_mul(ctx, z2, dfl_exp(ctx, ls)), mu);
    if (logdet) *logdet = dfl_scale(ctx, dfl_sum_per_sample(ctx, ls), inverse ? 1.0f : -1.0f);
    return dfl_concat_channels(ctx, z1, y2);
}

/* ------------------------------------------------------------------ dispatch */

void dfl_bij_out_shape(const dfl_bijection *b, int *C, int *H, int *W)
{
    *C = b->C;
    *H = b->H;
    *W = b->W;
    if (b->kind == BK_SQUEEZE) {
        *C = 4 * b->C;
        *H = b->H / 2;
        *W = b->W / 2;
    }
}

static dfl_tensor *apply(dfl_ctx *ctx, dfl_bijection *b, dfl_tensor *x, dfl_tensor **logdet, int inverse)
{
    if (logdet) *logdet = NULL;
    if (!ctx || !b || !x) return NULL;
    int C = b->C, H = b->H, W = b->W;
    if (inverse) dfl_bij_out_shape(b, &C, &H, &W);
    if (!check_input(b, x, C, H, W)) return NULL;
    dfl_tensor *y = NULL;
    switch (b->kind) {
    case BK_COUPLING: y = coupling_apply(ctx, b, x, logdet, inverse); break;
    case BK_SCALING: y = scaling_apply(ctx, b, x, logdet, inverse); break;
    case BK_SQUEEZE: y = inverse ? dfl_unsqueeze2x2(ctx, x) : dfl_squeeze2x2(ctx, x); break;
    case BK_ACTNORM: y = actnorm_apply(ctx, b, x, logdet, inverse); break;
    case BK_INVCONV: y = invconv_apply(ctx, b, x, logdet, inverse); break;
    case BK_LOGIT: y = logit_apply(ctx, b, x, logdet, inverse); break;
    case BK_SPLIT: y = split_apply(ctx, b, x, logdet, inverse); break;
    case BK_DEQUANT: y = dequant_apply(ctx, b, x, logdet, inverse); break;
    case BK_PRIOR: y = prior_apply(ctx, b, x, logdet, inverse); break;
    default: dfl_fail(DFL_ERR_ARG, "%s: unknown layer kind", b->name); return NULL;
    }
    if (!y || (logdet && *logdet == NULL && b->kind != BK_SQUEEZE &&
               !(b->kind == BK_COUPLING && b->ck == DFL_COUPLING_ADDITIVE))) {
        const char *e = dfl_last_error();
        if (strncmp(e, b->name, strlen(b->name)) != 0) {
            char msg[512];
            snprintf(msg, sizeof msg, "%s", e);
            dfl_fail(DFL_ERR_NUMERIC, "%s: %s", b->name, msg);
        }
        if (logdet) *logdet = NULL;
        return NULL;
    }
    return y;
}

dfl_tensor *dfl_bij_forward(dfl_ctx *ctx, dfl_bijection *b, dfl_tensor *x, dfl_tensor **logdet)
{
    return apply(ctx, b, x, logdet, 0);
}

dfl_tensor *dfl_bij_inverse(dfl_ctx *ctx, dfl_bijection *b, dfl_tensor *z, dfl_tensor **logdet)
{
    return apply(ctx, b, z, logdet, 1);
}
