/* Positional encodings (DESIGN section 6; facts in ../shared/reference/positional.md):
 * RoPE and its scalings, xPos, 2-D axial RoPE, sinusoidal / learned absolute, ALiBi, T5 buckets,
 * Shaw relative representations. Linear attention lives in linear_attention.c.
 *
 * Every rotary variant is one rotation kernel driven by a per-(token, pair) cos/sin table built
 * in double: RoPE fills it from pos * freq, xPos folds its per-pair scale into it, 2-D RoPE uses
 * row or column positions per pair. The backward is the same kernel with sin negated. */
#include "difflow/posenc.h"
#include "difflow/kernels.h"

#include <math.h>
#include <stdint.h>
#include <string.h>

#define PAR_MIN (1L << 15)
#define TWO_PI 6.283185307179586476925286766559

/* ------------------------------------------------------------------ RoPE settings */

dfl_rope_cfg dfl_rope_default(void)
{
    dfl_rope_cfg c;
    memset(&c, 0, sizeof c);
    c.layout = DFL_ROPE_INTERLEAVED;
    c.rot_dim = 0;
    c.theta = 10000.0;
    c.scaling = DFL_ROPE_SCALE_NONE;
    c.factor = 1.0;
    c.orig_ctx = 0;
    c.yarn_alpha = 1.0;
    c.yarn_beta = 32.0;
    return c;
}

dfl_rope_cfg dfl_rope_dynamic_ntk(const dfl_rope_cfg *base, int seq_len)
{
    dfl_rope_cfg c = base ? *base : dfl_rope_default();
    c.scaling = DFL_ROPE_SCALE_NTK;
    c.factor = c.orig_ctx > 0 && seq_len > c.orig_ctx ? (double)seq_len / c.orig_ctx : 1.0;
    return c;
}

int dfl_rope_rot_dim(const dfl_rope_cfg *c, int Dh)
{
    if (!c) {
        dfl_fail(DFL_ERR_ARG, "rope: settings are NULL");
        return -1;
    }
    if (Dh <= 0) {
        dfl_fail(DFL_ERR_ARG, "rope: head dimension %d must be positive", Dh);
        return -1;
    }
    if (c->layout != DFL_ROPE_INTERLEAVED && c->layout != DFL_ROPE_HALF) {
        dfl_fail(DFL_ERR_ARG, "rope: unknown layout %d (0 interleaved, 1 half)", (int)c->layout);
        return -1;
    }
    int rd = c->rot_dim ? c->rot_dim : Dh;
    if (c->rot_dim == 0 && (Dh & 1)) {
        dfl_fail(DFL_ERR_ARG, "rope: head dimension %d is odd and cannot be split into rotation pairs (set an even rotary dimension)", Dh);
        return -1;
    }
    if (rd < 0 || (rd & 1)) {
        dfl_fail(DFL_ERR_ARG, "rope: rotary dimension %d must be even and positive", rd);
        return -1;
    }
    if (rd > Dh) {
        dfl_fail(DFL_ERR_ARG, "rope: rotary dimension %d exceeds the head dimension %d", rd, Dh);
        return -1;
    }
    if (!(c->theta > 0.0) || !isfinite(c->theta)) {
        dfl_fail(DFL_ERR_ARG, "rope: base theta %g must be positive", c->theta);
        return -1;
    }
    if (c->scaling < DFL_ROPE_SCALE_NONE || c->scaling > DFL_ROPE_SCALE_YARN) {
        dfl_fail(DFL_ERR_ARG, "rope: unknown scaling %d", (int)c->scaling);
        return -1;
    }
    if (c->scaling != DFL_ROPE_SCALE_NONE && (!(c->factor > 0.0) || !isfinite(c->factor))) {
        dfl_fail(DFL_ERR_ARG, "rope: scaling factor %g must be positive", c->factor);
        return -1;
    }
    if (c->scaling == DFL_ROPE_SCALE_NTK && rd <= 2) {
        dfl_fail(DFL_ERR_ARG, "rope: NTK scaling needs a rotary dimension above 2 (got %d)", rd);
        return -1;
    }
    if (c->scaling == DFL_ROPE_SCALE_YARN) {
        if (c->orig_ctx <= 0) {
            dfl_fail(DFL_ERR_ARG, "rope: YaRN needs the original context length (orig_ctx %d)", c->orig_ctx);
            return -1;
        }
        if (!(c->yarn_beta > c->yarn_alpha)) {
            dfl_fail(DFL_ERR_ARG, "rope: YaRN ramp needs beta %g > alpha %g", c->yarn_beta, c->yarn_alpha);
            return -1;
        }
    }
    return rd;
}

dfl_status dfl_rope_inv_freq(const dfl_rope_cfg *c, int Dh, double *freq)
{
    int rd = dfl_rope_rot_dim(c, Dh);
    if (rd < 0) return DFL_ERR_ARG;
    double b = c->theta, s = c->factor;
    if (c->scaling == DFL_ROPE_SCALE_NTK) b *= pow(s, (double)rd / (rd - 2));
    for (int i = 0; i < rd / 2; i++) {
        double th = pow(b, -2.0 * i / rd);
        switch (c->scaling) {
        case DFL_ROPE_SCALE_PI: th /= s; break;
        case DFL_ROPE_SCALE_YARN: {
            double r = c->orig_ctx * th / TWO_PI; /* L / lambda_i */
            double g = (r - c->yarn_alpha) / (c->yarn_beta - c->yarn_alpha);
            g = g < 0.0 ? 0.0 : g > 1.0 ? 1.0 : g;
            th = (1.0 - g) * th / s + g * th;
            break;
        }
        default: break;
        }
        freq[i] = th;
    }
    return DFL_OK;
}

double dfl_rope_attn_factor(const dfl_rope_cfg *c)
{
    if (c && c->scaling == DFL_ROPE_SCALE_YARN && c->factor > 1.0) return 0.1 * log(c->factor) + 1.0;
    return 1.0;
}

double dfl_rope_yarn_corr_dim(int rd, double theta, int orig_ctx, double n_rot)
{
    return rd * log(orig_ctx / (TWO_PI * n_rot)) / (2.0 * log(theta));
}

/* Table from per-(token, pair) angles computed by the caller's rule: ang(t, i) in double. */
static void fill_tables(const double *freq, const int *pos, int T, int half, double a, float *ct,
                        float *st)
{
    for (int t = 0; t < T; t++)
        for (int i = 0; i < half; i++) {
            double ang = (double)pos[t] * freq[i];
            ct[(size_t)t * half + i] = (float)(a * cos(ang));
            st[(size_t)t * half + i] = (float)(a * sin(ang));
        }
}

dfl_status dfl_rope_tables(const dfl_rope_cfg *c, int Dh, const int *pos, int T, float *ct,
                           float *st)
{
    int rd = dfl_rope_rot_dim(c, Dh);
    if (rd < 0) return DFL_ERR_ARG;
    if (!pos && T > 0) return dfl_fail(DFL_ERR_ARG, "rope: positions are NULL");
    double freq[rd / 2 + 1];
    dfl_rope_inv_freq(c, Dh, freq);
    fill_tables(freq, pos, T, rd / 2, dfl_rope_attn_factor(c), ct, st);
    return DFL_OK;
}

/* ------------------------------------------------------------------ rotation kernel */

/* sgn = +1: forward (y = R x); sgn = -1 with accumulate: dx += R^T dy. */
static void rope_apply(const float *x, const float *ct, const float *st, float *y, long S, int T,
                       int Dh, int rd, dfl_rope_layout layout, float sgn, int acc)
{
    int half = rd / 2;
    int ia = layout == DFL_ROPE_HALF ? 1 : 2; /* lane of member a of pair i: i*ia */
    int ob = layout == DFL_ROPE_HALF ? half : 1; /* member b = a + ob */
    long rows = S * T;
#pragma omp parallel for schedule(static) if (rows * Dh > PAR_MIN)
    for (long r = 0; r < rows; r++) {
        int t = (int)(r % T);
        const float *xr = x + r * Dh;
        float *yr = y + r * Dh;
        const float *c = ct + (size_t)t * half, *s = st + (size_t)t * half;
        for (int i = 0; i < half; i++) {
            int a = i * ia, b = a + ob;
            float xa = xr[a], xb = xr[b], si = sgn * s[i];
            float ya = xa * c[i] - xb * si, yb = xa * si + xb * c[i];
            if (acc) {
                yr[a] += ya;
                yr[b] += yb;
            } else {
                yr[a] = ya;
                yr[b] = yb;
            }
        }
        for (int j = rd; j < Dh; j++) yr[j] = acc ? yr[j] + xr[j] : xr[j];
    }
}

void dfl_k_rope_fwd(const float *x, const float *ct, const float *st, float *y, long S, int T,
                    int Dh, int rd, dfl_rope_layout layout)
{
    rope_apply(x, ct, st, y, S, T, Dh, rd, layout, 1.0f, 0);
}

void dfl_k_rope_bwd(const float *dy, const float *ct, const float *st, float *dx, long S, int T,
                    int Dh, int rd, dfl_rope_layout layout)
{
    rope_apply(dy, ct, st, dx, S, T, Dh, rd, layout, -1.0f, 1);
}

/* node: saved[0] cos, saved[1] sin; iarg: T, Dh, rd, layout. */
static void rope_backward(dfl_ctx *ctx, dfl_node *nd)
{
    float *dx = dfl_grad_of(ctx, nd->in[0]);
    if (!dx) return;
    int T = nd->iarg[0], Dh = nd->iarg[1];
    long S = (long)(nd->out->n / ((size_t)T * Dh));
    dfl_k_rope_bwd(nd->out->grad, nd->saved[0], nd->saved[1], dx, S, T, Dh, nd->iarg[2],
                   (dfl_rope_layout)nd->iarg[3]);
}

/* Checks x (..., T, Dh) and allocates the two tables; returns rd or -1. */
static int rope_prepare(dfl_ctx *ctx, const char *op, dfl_tensor *x, const dfl_rope_cfg *c,
                        const void *pos, float **ct, float **st)
{
    if (x->ndim < 2) {
        char b[64];
        dfl_fail(DFL_ERR_SHAPE, "%s: input %s must be (..., T, Dh)", op, dfl_shape_str(x, b, sizeof b));
        return -1;
    }
    if (!pos) {
        dfl_fail(DFL_ERR_ARG, "%s: positions are NULL", op);
        return -1;
    }
    int Dh = x->shape[x->ndim - 1], T = x->shape[x->ndim - 2];
    int rd = dfl_rope_rot_dim(c, Dh);
    if (rd < 0) return -1;
    size_t nt = (size_t)T * (rd / 2);
    *ct = dfl_arena_alloc(ctx, (nt ? nt : 1) * sizeof(float));
    *st = dfl_arena_alloc(ctx, (nt ? nt : 1) * sizeof(float));
    if (!*ct || !*st) return -1;
    return rd;
}

static dfl_tensor *rope_run(dfl_ctx *ctx, const char *op, dfl_tensor *x, float *ct, float *st,
                            int rd, dfl_rope_layout layout)
{
    int Dh = x->shape[x->ndim - 1], T = x->shape[x->ndim - 2];
    dfl_tensor *in[1] = {x};
    dfl_tensor *out = dfl_op_output(ctx, x->ndim, x->shape, in, 1);
    if (!out) return NULL;
    long S = T && Dh ? (long)(x->n / ((size_t)T * Dh)) : 0;
    dfl_k_rope_fwd(x->data, ct, st, out->data, S, T, Dh, rd, layout);
    dfl_node *nd = dfl_tape_push(ctx, rope_backward, op, out, in, 1);
    if (nd) {
        nd->saved[0] = ct;
        nd->saved[1] = st;
        nd->iarg[0] = T;
        nd->iarg[1] = Dh;
        nd->iarg[2] = rd;
        nd->iarg[3] = (int)layout;
    }
    return out;
}

dfl_tensor *dfl_rope(dfl_ctx *ctx, dfl_tensor *x, const int *pos, const dfl_rope_cfg *c)
{
    if (!ctx || !x) return NULL;
    float *ct, *st;
    int rd = rope_prepare(ctx, "rope", x, c, pos, &ct, &st);
    if (rd < 0) return NULL;
    int Dh = x->shape[x->ndim - 1], T = x->shape[x->ndim - 2];
    if (dfl_rope_tables(c, Dh, pos, T, ct, st) != DFL_OK) return NULL;
    return rope_run(ctx, "rope", x, ct, st, rd, c->layout);
}

dfl_tensor *dfl_rope_with_tables(dfl_ctx *ctx, dfl_tensor *x, const float *ct, const float *st,
                                 int rd, dfl_rope_layout layout)
{
    if (!ctx || !x) return NULL;
    char b[64];
    if (x->ndim < 2) {
        dfl_fail(DFL_ERR_SHAPE, "rope: input %s must be (..., T, Dh)", dfl_shape_str(x, b, sizeof b));
        return NULL;
    }
    int Dh = x->shape[x->ndim - 1];
    if (!ct || !st || rd < 2 || (rd & 1) || rd > Dh ||
        (layout != DFL_ROPE_INTERLEAVED && layout != DFL_ROPE_HALF)) {
        dfl_fail(DFL_ERR_ARG, "rope: tables missing, or rotary dimension %d not even in [2, %d], or layout %d unknown",
                 rd, Dh, (int)layout);
        return NULL;
    }
    return rope_run(ctx, "rope", x, (float *)ct, (float *)st, rd, layout);
}

dfl_tensor *dfl_xpos(dfl_ctx *ctx, dfl_tensor *x, const int *pos, const dfl_rope_cfg *c,
                     double scale_base, int is_key)
{
    if (!ctx || !x) return NULL;
    if (!(scale_base >= 0.0)) {
        dfl_fail(DFL_ERR_ARG, "xpos: scale base %g must be positive (0 = 512)", scale_base);
        return NULL;
    }
    if (scale_base == 0.0) scale_base = 512.0;
    float *ct, *st;
    int rd = rope_prepare(ctx, "xpos", x, c, pos, &ct, &st);
    if (rd < 0) return NULL;
    int Dh = x->shape[x->ndim - 1], T = x->shape[x->ndim - 2], half = rd / 2;
    double freq[half + 1];
    dfl_rope_inv_freq(c, Dh, freq);
    double a = dfl_rope_attn_factor(c), sg = is_key ? -1.0 : 1.0;
    for (int t = 0; t < T; t++)
        for (int i = 0; i < half; i++) {
            double zeta = (2.0 * i / rd + 0.4) / 1.4;
            double sc = a * pow(zeta, sg * pos[t] / scale_base), ang = (double)pos[t] * freq[i];
            ct[(size_t)t * half + i] = (float)(sc * cos(ang));
            st[(size_t)t * half + i] = (float)(sc * sin(ang));
        }
    return rope_run(ctx, is_key ? "xpos_k" : "xpos_q", x, ct, st, rd, c->layout);
}

dfl_tensor *dfl_rope_2d(dfl_ctx *ctx, dfl_tensor *x, const int *row, const int *col,
                        const dfl_rope_cfg *c)
{
    if (!ctx || !x) return NULL;
    if (!row || !col) {
        dfl_fail(DFL_ERR_ARG, "rope_2d: row or column positions are NULL");
        return NULL;
    }
    float *ct, *st;
    int rd = rope_prepare(ctx, "rope_2d", x, c, row, &ct, &st);
    if (rd < 0) return NULL;
    if (rd % 4) {
        dfl_fail(DFL_ERR_ARG, "rope_2d: rotary dimension %d must be a multiple of 4 (half the pairs on rows, half on columns)", rd);
        return NULL;
    }
    if (c->scaling != DFL_ROPE_SCALE_NONE) {
        dfl_fail(DFL_ERR_ARG, "rope_2d: scaling %d is not supported for axial RoPE (use none)", (int)c->scaling);
        return NULL;
    }
    int T = x->shape[x->ndim - 2], half = rd / 2, q = rd / 4;
    for (int t = 0; t < T; t++)
        for (int i = 0; i < half; i++) {
            int j = i < q ? i : i - q;
            double th = pow(c->theta, -2.0 * j / half);
            double ang = (double)(i < q ? row[t] : col[t]) * th;
            ct[(size_t)t * half + i] = (float)cos(ang);
            st[(size_t)t * half + i] = (float)sin(ang);
        }
    return rope_run(ctx, "rope_2d", x, ct, st, rd, c->layout);
}

/* ------------------------------------------------------------------ absolute encodings */

dfl_status dfl_sinusoidal_table(float *pe, int N, int D, int pos0)
{
    if (D <= 0 || (D & 1)) return dfl_fail(DFL_ERR_ARG, "sinusoidal: dimension %d must be even and positive", D);
    if (N < 0) return dfl_fail(DFL_ERR_ARG, "sinusoidal: length %d is negative", N);
    if (!pe && N > 0) return dfl_fail(DFL_ERR_ARG, "sinusoidal: output is NULL");
    for (int t = 0; t < N; t++)
        for (int i = 0; i < D / 2; i++) {
            double ang = (double)(pos0 + t) * pow(10000.0, -2.0 * i / D);
            pe[(size_t)t * D + 2 * i] = (float)sin(ang);
            pe[(size_t)t * D + 2 * i + 1] = (float)cos(ang);
        }
    return DFL_OK;
}

dfl_tensor *dfl_sinusoidal(dfl_ctx *ctx, int N, int D, int pos0)
{
    if (!ctx) return NULL;
    if (N <= 0) {
        dfl_fail(DFL_ERR_ARG, "sinusoidal: length %d must be positive", N);
        return NULL;
    }
    if (D <= 0 || (D & 1)) {
        dfl_fail(DFL_ERR_ARG, "sinusoidal: dimension %d must be even and positive", D);
        return NULL;
    }
    int sh[2] = {N, D};
    dfl_tensor *t = dfl_tensor_tmp(ctx, 2, sh);
    if (!t) return NULL;
    dfl_sinusoidal_table(t->data, N, D, pos0);
    return t;
}

/* node: iarg[0] T, iarg[1] D, iarg[2] offset. */
static void learned_pos_backward(dfl_ctx *ctx, dfl_node *nd)
{
    const float *dy = nd->out->grad;
    int T = nd->iarg[0], D = nd->iarg[1], off = nd->iarg[2];
    size_t per = (size_t)T * D, S = nd->out->n / (per ? per : 1);
    float *dx = dfl_grad_of(ctx, nd->in[0]);
    if (dx) dfl_k_axpy(1.0f, dy, dx, nd->out->n);
    float *dp = dfl_grad_of(ctx, nd->in[1]);
    if (dp)
        for (size_t s = 0; s < S; s++) dfl_k_axpy(1.0f, dy + s * per, dp + (size_t)off * D, per);
}

dfl_tensor *dfl_learned_pos_add(dfl_ctx *ctx, dfl_tensor *x, dfl_tensor *P, int offset)
{
    if (!ctx || !x || !P) return NULL;
    char bx[64], bp[64];
    if (x->ndim < 2 || P->ndim != 2 || P->shape[1] != x->shape[x->ndim - 1]) {
        dfl_fail(DFL_ERR_SHAPE, "learned positions: input %s and table %s disagree (need x (..., T, D), table (L, D))",
                 dfl_shape_str(x, bx, sizeof bx), dfl_shape_str(P, bp, sizeof bp));
        return NULL;
    }
    int T = x->shape[x->ndim - 2], D = x->shape[x->ndim - 1], L = P->shape[0];
    if (offset < 0 || (long)offset + T > L) {
        dfl_fail(DFL_ERR_SHAPE, "learned positions: sequence of %d positions (from offset %d) exceeds the learned table of %d positions",
                 T, offset, L);
        return NULL;
    }
    dfl_tensor *in[2] = {x, P};
    dfl_tensor *out = dfl_op_output(ctx, x->ndim, x->shape, in, 2);
    if (!out) return NULL;
    size_t per = (size_t)T * D, S = per ? x->n / per : 0;
    const float *p = P->data + (size_t)offset * D;
    for (size_t s = 0; s < S; s++)
        for (size_t e = 0; e < per; e++) out->data[s * per + e] = x->data[s * per + e] + p[e];
    dfl_node *nd = dfl_tape_push(ctx, learned_pos_backward, "learned_pos_add", out, in, 2);
    if (nd) {
        nd->iarg[0] = T;
        nd->iarg[1] = D;
        nd->iarg[2] = offset;
    }
    return out;
}

/* ------------------------------------------------------------------ ALiBi */

dfl_status dfl_alibi_slopes(int H, float *slopes)
{
    if (H < 1) return dfl_fail(DFL_ERR_ARG, "alibi: head count %d must be at least 1", H);
    if (!slopes) return dfl_fail(DFL_ERR_ARG, "alibi: output is NULL");
    int h2 = 1;
    while (h2 * 2 <= H) h2 *= 2; /* largest power of two <= H */
    for (int h = 0; h < H; h++) {
        double e = h < h2 ? -8.0 * (h + 1) / h2 : -4.0 * (2 * (h - h2) + 1) / h2;
        slopes[h] = (float)pow(2.0, e);
    }
    return DFL_OK;
}

dfl_tensor *dfl_alibi_bias(dfl_ctx *ctx, int H, int Tq, int Tk, int q_offset)
{
    if (!ctx) return NULL;
    if (H < 1 || Tq < 1 || Tk < 1 || q_offset < 0) {
        dfl_fail(DFL_ERR_ARG, "alibi: heads %d, query length %d, key length %d must be positive and query offset %d non-negative",
                 H, Tq, Tk, q_offset);
        return NULL;
    }
    float sl[H];
    dfl_alibi_slopes(H, sl);
    int sh[3] = {H, Tq, Tk};
    dfl_tensor *t = dfl_tensor_tmp(ctx, 3, sh);
    if (!t) return NULL;
    for (int h = 0; h < H; h++)
        for (int i = 0; i < Tq; i++)
            for (int j = 0; j < Tk; j++) {
                long d = (long)q_offset + i - j;
                t->data[((size_t)h * Tq + i) * Tk + j] = -sl[h] * (float)(d < 0 ? -d : d);
            }
    return t;
}

/* ------------------------------------------------------------------ T5 buckets */

int dfl_t5_bucket(int rel, int bidirectional, int B, int M)
{
    int Bp = bidirectional ? B / 2 : B;
    if (B < 2 || (bidirectional && (B & 1)) || Bp < 2 || M <= Bp / 2) {
        dfl_fail(DFL_ERR_ARG, "t5 buckets: %d buckets (%s) with max distance %d: need at least 2 (even when bidirectional) and max distance above %d",
                 B, bidirectional ? "bidirectional" : "causal", M, Bp / 2);
        return -1;
    }
    long n = -(long)rel, off = 0;
    if (bidirectional) {
        if (n < 0) off = Bp;
        n = n < 0 ? -n : n;
    } else if (n < 0) {
        n = 0;
    }
    int e = Bp / 2;
    long v;
    if (n < e) {
        v = n;
    } else {
        v = e + (long)floor(log((double)n / e) / log((double)M / e) * (Bp - e));
        if (v > Bp - 1) v = Bp - 1;
    }
    return (int)(off + v);
}

/* Buckets of every relative position d = j - (off + i) the bias needs, d from -(off + Tq - 1) to
 * Tk - 1: lut[d + off + Tq - 1]. Arena memory; NULL on allocation failure. */
static int *t5_lut(dfl_ctx *ctx, int Tq, int Tk, int off, int bi, int B, int M)
{
    long lo = -((long)off + Tq - 1), n = Tk - lo;
    int *lut = dfl_arena_alloc(ctx, (size_t)n * sizeof(int));
    if (lut)
        for (long d = lo; d < Tk; d++) lut[d - lo] = dfl_t5_bucket((int)d, bi, B, M);
    return lut;
}

/* node: iarg Tq, Tk, q_offset, bidirectional, max_distance. */
static void t5_backward(dfl_ctx *ctx, dfl_node *nd)
{
    float *dt = dfl_grad_of(ctx, nd->in[0]);
    if (!dt) return;
    int Tq = nd->iarg[0], Tk = nd->iarg[1], off = nd->iarg[2], bi = nd->iarg[3], M = nd->iarg[4];
    int B = nd->in[0]->shape[0], H = nd->in[0]->shape[1];
    const int *lut = t5_lut(ctx, Tq, Tk, off, bi, B, M);
    if (!lut) return;
    const float *dy = nd->out->grad;
    for (int h = 0; h < H; h++)
        for (int i = 0; i < Tq; i++) {
            const int *lr = lut + (Tq - 1 - i); /* lr[j]: bucket of j - (off + i) */
            const float *g = dy + ((size_t)h * Tq + i) * Tk;
            for (int j = 0; j < Tk; j++) dt[(size_t)lr[j] * H + h] += g[j];
        }
}

dfl_tensor *dfl_t5_bias(dfl_ctx *ctx, dfl_tensor *table, int Tq, int Tk, int q_offset,
                        int bidirectional, int max_distance)
{
    if (!ctx || !table) return NULL;
    if (table->ndim != 2) {
        char b[64];
        dfl_fail(DFL_ERR_SHAPE, "t5 bias: table %s must be (num_buckets, H)", dfl_shape_str(table, b, sizeof b));
        return NULL;
    }
    if (Tq < 1 || Tk < 1 || q_offset < 0) {
        dfl_fail(DFL_ERR_ARG, "t5 bias: query length %d and key length %d must be positive, offset %d non-negative", Tq, Tk, q_offset);
        return NULL;
    }
    int B = table->shape[0], H = table->shape[1];
    if (dfl_t5_bucket(0, bidirectional, B, max_distance) < 0) return NULL;
    dfl_tensor *in[1] = {table};
    int sh[3] = {H, Tq, Tk};
    dfl_tensor *out = dfl_op_output(ctx, 3, sh, in, 1);
    if (!out) return NULL;
    const int *lut = t5_lut(ctx, Tq, Tk, q_offset, bidirectional, B, max_distance);
    if (!lut) return NULL;
    for (int h = 0; h < H; h++)
        for (int i = 0; i < Tq; i++) {
            const int *lr = lut + (Tq - 1 - i); /* lr[j]: bucket of j - (q_offset + i) */
            float *o = out->data + ((size_t)h * Tq + i) * Tk;
            for (int j = 0; j < Tk; j++) o[j] = table->data[(size_t)lr[j] * H + h];
        }
    dfl_node *nd = dfl_tape_push(ctx, t5_backward, "t5_bias", out, in, 1);
    if (nd) {
        nd->iarg[0] = Tq;
        nd->iarg[1] = Tk;
        nd->iarg[2] = q_offset;
        nd->iarg[3] = bidirectional;
        nd->iarg[4] = max_distance;
    }
    return out;
}

/* ------------------------------------------------------------------ Shaw relative */

static inline int shaw_idx(int i, int j, int off, int k)
{
    long d = (long)j - ((long)off + i);
    if (d < -k) d = -k;
    if (d > k) d = k;
    return (int)(d + k);
}

/* Forward: Qa = q aK^T (rows, R), gathered. Backward: dQa[r, b] = scale * sum of dy over the
 * keys j with clip index b, then dq += dQa aK, daK += dQa^T q. node: iarg Tq, Tk, off, Dh, R;
 * farg scale. */
static void shaw_bias_backward(dfl_ctx *ctx, dfl_node *nd)
{
    dfl_tensor *q = nd->in[0], *aK = nd->in[1];
    float *dq = dfl_grad_of(ctx, q), *da = dfl_grad_of(ctx, aK);
    int Tq = nd->iarg[0], Tk = nd->iarg[1], off = nd->iarg[2], Dh = nd->iarg[3], R = nd->iarg[4];
    int k = (R - 1) / 2;
    float sc = nd->farg[0];
    long rows = (long)(q->n / (size_t)Dh);
    float *dQa = dfl_arena_alloc(ctx, (size_t)rows * R * sizeof(float));
    if (!dQa) return;
    const float *dy = nd->out->grad;
#pragma omp parallel for schedule(static) if (rows * Tk > PAR_MIN)
    for (long r = 0; r < rows; r++) {
        int i = (int)(r % Tq);
        float *g = dQa + r * R;
        for (int b = 0; b < R; b++) g[b] = 0.0f;
        for (int j = 0; j < Tk; j++) g[shaw_idx(i, j, off, k)] += sc * dy[r * Tk + j];
    }
    dfl_k_linear_bwd(q->data, aK->data, dQa, dq, da, NULL, (int)rows, Dh, R);
}

dfl_tensor *dfl_shaw_bias(dfl_ctx *ctx, dfl_tensor *q, dfl_tensor *aK, int Tk, int q_offset,
                          float scale)
{
    if (!ctx || !q || !aK) return NULL;
    char bq[64], ba[64];
    if (q->ndim < 2 || aK->ndim != 2 || aK->shape[1] != q->shape[q->ndim - 1] || !(aK->shape[0] & 1)) {
        dfl_fail(DFL_ERR_SHAPE, "shaw bias: query %s and relative keys %s disagree (need q (..., Tq, Dh), aK (2k+1, Dh))",
                 dfl_shape_str(q, bq, sizeof bq), dfl_shape_str(aK, ba, sizeof ba));
        return NULL;
    }
    if (Tk < 1 || q_offset < 0) {
        dfl_fail(DFL_ERR_ARG, "shaw bias: key length %d must be positive and offset %d non-negative", Tk, q_offset);
        return NULL;
    }
    int Tq = q->shape[q->ndim - 2], Dh = q->shape[q->ndim - 1], R = aK->shape[0], k = (R - 1) / 2;
    long rows = (long)(q->n / (size_t)Dh);
    float *Qa = dfl_arena_alloc(ctx, ((size_t)rows * R + 1) * sizeof(float));
    if (!Qa) return NULL;
    dfl_k_linear_fwd(q->data, aK->data, NULL, Qa, (int)rows, Dh, R);
    int sh[DFL_MAX_DIMS];
    memcpy(sh, q->shape, sizeof sh);
    sh[q->ndim - 1] = Tk;
    dfl_tensor *in[2] = {q, aK};
    dfl_tensor *out = dfl_op_output(ctx, q->ndim, sh, in, 2);
    if (!out) return NULL;
#pragma omp parallel for schedule(static) if (rows * Tk > PAR_MIN)
    for (long r = 0; r < rows; r++) {
        int i = (int)(r % Tq);
        for (int j = 0; j < Tk; j++) out->data[r * Tk + j] = scale * Qa[r * R + shaw_idx(i, j, q_offset, k)];
    }
    dfl_node *nd = dfl_tape_push(ctx, shaw_bias_backward, "shaw_bias", out, in, 2);
    if (nd) {
        nd->iarg[0] = Tq;
        nd->iarg[1] = Tk;
        nd->iarg[2] = q_offset;
        nd->iarg[3] = Dh;
        nd->iarg[4] = R;
        nd->farg[0] = scale;
    }
    return out;
}

/* W[r, b] = sum_{j: idx(i, j) = b} P[r, j]; out = W aV. node: saved[0] W; iarg Tq, Tk, off, R, Dv. */
static void shaw_values_backward(dfl_ctx *ctx, dfl_node *nd)
{
    dfl_tensor *P = nd->in[0], *aV = nd->in[1];
    float *dP = dfl_grad_of(ctx, P), *da = dfl_grad_of(ctx, aV);
    int Tq = nd->iarg[0], Tk = nd->iarg[1], off = nd->iarg[2], R = nd->iarg[3], Dv = nd->iarg[4];
    int k = (R - 1) / 2;
    long rows = (long)(P->n / (size_t)Tk);
    const float *dy = nd->out->grad, *W = nd->saved[0];
    if (da) /* daV[b, :] += sum_r W[r, b] dy[r, :] */
        for (long r = 0; r < rows; r++)
            for (int b = 0; b < R; b++) {
                float w = W[r * R + b];
                if (w != 0.0f)
                    for (int c = 0; c < Dv; c++) da[(size_t)b * Dv + c] += w * dy[r * Dv + c];
            }
    if (dP) {
        float *dW = dfl_arena_alloc(ctx, (size_t)rows * R * sizeof(float));
        if (!dW) return;
        /* dW = dy aV^T: dfl_k_linear_fwd with x = dy (rows, Dv), w = aV (R, Dv) */
        dfl_k_linear_fwd(dy, aV->data, NULL, dW, (int)rows, Dv, R);
#pragma omp parallel for schedule(static) if (rows * Tk > PAR_MIN)
        for (long r = 0; r < rows; r++) {
            int i = (int)(r % Tq);
            for (int j = 0; j < Tk; j++) dP[r * Tk + j] += dW[r * R + shaw_idx(i, j, off, k)];
        }
    }
}

dfl_tensor *dfl_shaw_values(dfl_ctx *ctx, dfl_tensor *P, dfl_tensor *aV, int q_offset)
{
    if (!ctx || !P || !aV) return NULL;
    char bp[64], ba[64];
    if (P->ndim < 2 || aV->ndim != 2 || !(aV->shape[0] & 1)) {
        dfl_fail(DFL_ERR_SHAPE, "shaw values: probabilities %s and relative values %s disagree (need P (..., Tq, Tk), aV (2k+1, Dv))",
                 dfl_shape_str(P, bp, sizeof bp), dfl_shape_str(aV, ba, sizeof ba));
        return NULL;
    }
    if (q_offset < 0) {
        dfl_fail(DFL_ERR_ARG, "shaw values: offset %d must be non-negative", q_offset);
        return NULL;
    }
    int Tq = P->shape[P->ndim - 2], Tk = P->shape[P->ndim - 1], R = aV->shape[0], Dv = aV->shape[1];
    int k = (R - 1) / 2;
    long rows = (long)(P->n / (size_t)Tk);
    float *W = dfl_arena_alloc(ctx, ((size_t)rows * R + 1) * sizeof(float));
    if (!W) return NULL;
    int sh[DFL_MAX_DIMS];
    memcpy(sh, P->shape, sizeof sh);
    sh[P->ndim - 1] = Dv;
    dfl_tensor *in[2] = {P, aV};
    dfl_tensor *out = dfl_op_output(ctx, P->ndim, sh, in, 2);
    if (!out) return NULL;
#pragma omp parallel for schedule(static) if (rows * Tk > PAR_MIN)
    for (long r = 0; r < rows; r++) {
        int i = (int)(r % Tq);
        float *w = W + r * R, *o = out->data + r * Dv;
        for (int b = 0; b < R; b++) w[b] = 0.0f;
        for (int j = 0; j < Tk; j++) w[shaw_idx(i, j, q_offset, k)] += P->data[r * Tk + j];
        for (int c = 0; c < Dv; c++) o[c] = 0.0f;
        for (int b = 0; b < R; b++)
            if (w[b] != 0.0f)
                for (int c = 0; c < Dv; c++) o[c] += w[b] * aV->data[(size_t)b * Dv + c];
    }
    dfl_node *nd = dfl_tape_push(ctx, shaw_values_backward, "shaw_values", out, in, 2);
    if (nd) {
        nd->saved[0] = W;
        nd->iarg[0] = Tq;
        nd->iarg[1] = Tk;
        nd->iarg[2] = q_offset;
        nd->iarg[3] = R;
        nd->iarg[4] = Dv;
    }
    return out;
}
