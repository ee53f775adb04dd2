/* Linear attention (Katharopoulos et al. 2020, arXiv 2006.16236, Eq. 4-6; feature map elu + 1)
 * and RoPE with linear attention (RoFormer, arXiv 2104.09864, sec. 3.3, Eq. 19; reference 2.6).
 *
 * Per sequence, with c_m = phi(q_m), d_n = phi(k_n), a_m = R_m c_m, b_n = R_n d_n (a = c, b = d
 * without RoPE):
 *   num_m = sum_n (a_m . b_n) v_n = a_m^T Sstate,  Sstate = sum_n b_n v_n^T   (Dk x Dv)
 *   den_m = sum_n c_m . d_n       = c_m . z,       z = sum_n d_n               (unrotated)
 *   out_m = num_m / den_m,
 * n over all tokens, or n <= m (causal: the states are prefix sums, updated token by token).
 * Backward, with g_m = dout_m, dnum_m = g_m / den_m, dden_m = -(g_m . out_m) / den_m:
 *   da_m = Sstate_m dnum_m, dc_m = dden_m z_m                (prefix states, forward sweep)
 *   U_n = sum_{m >= n} a_m dnum_m^T, w_n = sum_{m >= n} dden_m c_m   (suffix sums, reverse sweep)
 *   db_n = U_n v_n, dv_n = U_n^T b_n, dd_n = w_n
 * (bidirectional: the full sums everywhere), then dphi(q) = R^T da + dc, dphi(k) = R^T db + dd,
 * dq = dphi(q) phi'(q) with phi'(x) = 1 (x > 0), e^x (x <= 0). */
#include "difflow/posenc.h"

#include <math.h>
#include <string.h>

static inline float phi(float x) { return x > 0.0f ? x + 1.0f : expf(x); }
static inline float dphi(float x) { return x > 0.0f ? 1.0f : expf(x); }

typedef struct {
    long S;
    int T, Dk, Dv, causal, rd, layout;
    const float *ct, *st; /* RoPE tables (T, rd/2) or NULL */
} la_dims;

/* c = phi(x), a = R c (or a = c when no tables). x, c, a (S, T, Dk). */
static void la_features(const la_dims *L, const float *x, float *c, float *a)
{
    size_t n = (size_t)L->S * L->T * L->Dk;
    for (size_t i = 0; i < n; i++) c[i] = phi(x[i]);
    if (L->ct)
        dfl_k_rope_fwd(c, L->ct, L->st, a, L->S, L->T, L->Dk, L->rd, (dfl_rope_layout)L->layout);
    else
        memcpy(a, c, n * sizeof(float));
}

/* Features of q and k into buf = [a | c | b | d], each (S, T, Dk) = nk floats. */
static void la_qk_features(const la_dims *L, const float *q, const float *k, float *buf, size_t nk)
{
    la_features(L, q, buf + nk, buf);
    la_features(L, k, buf + 3 * nk, buf + 2 * nk);
}

/* Sst += b_n v_n^T, z += d_n for token n. */
static inline void la_state_add(float *Sst, float *z, const float *bn, const float *dn,
                                const float *vn, int Dk, int Dv)
{
    for (int i = 0; i < Dk; i++) {
        float bi = bn[i];
        for (int j = 0; j < Dv; j++) Sst[(size_t)i * Dv + j] += bi * vn[j];
        z[i] += dn[i];
    }
}

/* dnum = g / den, returns dden = -(g . out) / den. g, out, dnum (Dv). */
static inline float la_dnum(const float *g, const float *out, float den, float *dnum, int Dv)
{
    float go = 0.0f;
#pragma omp simd reduction(+ : go)
    for (int j = 0; j < Dv; j++) {
        dnum[j] = g[j] / den;
        go += g[j] * out[j];
    }
    return -go / den;
}

/* One sequence forward. a, c (T, Dk) query features (rotated, plain); b, d key features; v (T,
 * Dv); out (T, Dv); den (T); work (Dk Dv + Dk) floats. */
static void la_seq_fwd(const la_dims *L, const float *a, const float *c, const float *b,
                       const float *d, const float *v, float *out, float *den, float *work)
{
    int T = L->T, Dk = L->Dk, Dv = L->Dv;
    float *Sst = work, *z = work + (size_t)Dk * Dv;
    memset(work, 0, ((size_t)Dk * Dv + Dk) * sizeof(float));
    if (!L->causal)
        for (int n = 0; n < T; n++)
            la_state_add(Sst, z, b + (size_t)n * Dk, d + (size_t)n * Dk, v + (size_t)n * Dv, Dk, Dv);
    for (int m = 0; m < T; m++) {
        if (L->causal)
            la_state_add(Sst, z, b + (size_t)m * Dk, d + (size_t)m * Dk, v + (size_t)m * Dv, Dk, Dv);
        float dn = 0.0f;
#pragma omp simd reduction(+ : dn)
        for (int i = 0; i < Dk; i++) dn += c[(size_t)m * Dk + i] * z[i];
        float *o = out + (size_t)m * Dv;
        for (int j = 0; j < Dv; j++) o[j] = 0.0f;
        for (int i = 0; i < Dk; i++) {
            float ai = a[(size_t)m * Dk + i];
            for (int j = 0; j < Dv; j++) o[j] += ai * Sst[(size_t)i * Dv + j];
        }
        for (int j = 0; j < Dv; j++) o[j] /= dn;
        den[m] = dn;
    }
}

/* One sequence backward: writes da, dc, db, dd (T, Dk) (overwritten) and accumulates dv (or
 * skips it when NULL). g = dout, out, den from the forward. work (2 Dk Dv + 2 Dk + Dv). */
static void la_seq_bwd(const la_dims *L, const float *a, const float *c, const float *b,
                       const float *d, const float *v, const float *out, const float *den,
                       const float *g, float *da, float *dc, float *db, float *dd, float *dv,
                       float *work)
{
    int T = L->T, Dk = L->Dk, Dv = L->Dv;
    float *Sst = work, *U = Sst + (size_t)Dk * Dv, *z = U + (size_t)Dk * Dv, *w = z + Dk;
    float *dnum = w + Dk;
    memset(work, 0, ((size_t)2 * Dk * Dv + 2 * Dk) * sizeof(float));
    /* sweep 1 (prefix states, or the full ones): da, dc */
    int pre = L->causal;
    if (!pre)
        for (int n = 0; n < T; n++)
            la_state_add(Sst, z, b + (size_t)n * Dk, d + (size_t)n * Dk, v + (size_t)n * Dv, Dk, Dv);
    for (int m = 0; m < T; m++) {
        if (pre)
            la_state_add(Sst, z, b + (size_t)m * Dk, d + (size_t)m * Dk, v + (size_t)m * Dv, Dk, Dv);
        float dden = la_dnum(g + (size_t)m * Dv, out + (size_t)m * Dv, den[m], dnum, Dv);
        for (int i = 0; i < Dk; i++) {
            float s = 0.0f;
#pragma omp simd reduction(+ : s)
            for (int j = 0; j < Dv; j++) s += Sst[(size_t)i * Dv + j] * dnum[j];
            da[(size_t)m * Dk + i] = s;
            dc[(size_t)m * Dk + i] = dden * z[i];
        }
    }
    /* sweep 2 (suffix sums, or the full ones): db, dd, dv */
    int suf = L->causal;
    for (int pass = suf ? 1 : 0; pass < 2; pass++) {
        /* bidirectional: pass 0 accumulates U, w over all m; pass 1 uses them */
        for (int n = T - 1; n >= 0; n--) {
            if (pass == 0 || suf) {
                float dden = la_dnum(g + (size_t)n * Dv, out + (size_t)n * Dv, den[n], dnum, Dv);
                for (int i = 0; i < Dk; i++) {
                    float ai = a[(size_t)n * Dk + i];
                    for (int j = 0; j < Dv; j++) U[(size_t)i * Dv + j] += ai * dnum[j];
                    w[i] += dden * c[(size_t)n * Dk + i];
                }
            }
            if (pass == 0) continue;
            const float *vn = v + (size_t)n * Dv, *bn = b + (size_t)n * Dk;
            for (int i = 0; i < Dk; i++) {
                float s = 0.0f;
#pragma omp simd reduction(+ : s)
                for (int j = 0; j < Dv; j++) s += U[(size_t)i * Dv + j] * vn[j];
                db[(size_t)n * Dk + i] = s;
                dd[(size_t)n * Dk + i] = w[i];
            }
            if (dv) {
                float *dvn = dv + (size_t)n * Dv;
                for (int i = 0; i < Dk; i++) {
                    float bi = bn[i];
                    for (int j = 0; j < Dv; j++) dvn[j] += bi * U[(size_t)i * Dv + j];
                }
            }
        }
    }
}

static size_t la_work_floats(const la_dims *L)
{
    return (size_t)2 * L->Dk * L->Dv + 2 * (size_t)L->Dk + L->Dv;
}

/* node: in q, k, v; saved[0] den (S, T), saved[1] cos, saved[2] sin;
 * iarg T, Dk, Dv, causal, rd, layout, has_rope. */
static void la_backward(dfl_ctx *ctx, dfl_node *nd)
{
    dfl_tensor *q = nd->in[0], *k = nd->in[1], *v = nd->in[2];
    la_dims L;
    L.T = nd->iarg[0];
    L.Dk = nd->iarg[1];
    L.Dv = nd->iarg[2];
    L.causal = nd->iarg[3];
    L.rd = nd->iarg[4];
    L.layout = nd->iarg[5];
    L.ct = nd->iarg[6] ? nd->saved[1] : NULL;
    L.st = nd->iarg[6] ? nd->saved[2] : NULL;
    L.S = (long)(q->n / ((size_t)L.T * L.Dk));
    size_t nk = q->n;
    float *dq = dfl_grad_of(ctx, q), *dk = dfl_grad_of(ctx, k), *dv = dfl_grad_of(ctx, v);
    size_t wf = la_work_floats(&L);
    float *buf = dfl_arena_alloc(ctx, (8 * nk + (size_t)L.S * wf) * sizeof(float));
    if (!buf) return;
    float *a = buf, *c = a + nk, *b = c + nk, *d = b + nk;
    float *da = d + nk, *dc = da + nk, *db = dc + nk, *dd = db + nk, *work = dd + nk;
    la_qk_features(&L, q->data, k->data, buf, nk);
    size_t sk = (size_t)L.T * L.Dk, sv = (size_t)L.T * L.Dv;
#pragma omp parallel for schedule(static) if (L.S > 1 && sk * L.Dv > 4096)
    for (long s = 0; s < L.S; s++)
        la_seq_bwd(&L, a + s * sk, c + s * sk, b + s * sk, d + s * sk, v->data + s * sv,
                   nd->out->data + s * sv, nd->saved[0] + s * L.T, nd->out->grad + s * sv,
                   da + s * sk, dc + s * sk, db + s * sk, dd + s * sk, dv ? dv + s * sv : NULL,
                   work + s * wf);
    /* dphi = R^T da + dc (rope backward accumulates into dc) */
    if (L.ct) {
        dfl_k_rope_bwd(da, L.ct, L.st, dc, L.S, L.T, L.Dk, L.rd, (dfl_rope_layout)L.layout);
        dfl_k_rope_bwd(db, L.ct, L.st, dd, L.S, L.T, L.Dk, L.rd, (dfl_rope_layout)L.layout);
    } else {
        for (size_t i = 0; i < nk; i++) {
            dc[i] += da[i];
            dd[i] += db[i];
        }
    }
    if (dq)
        for (size_t i = 0; i < nk; i++) dq[i] += dc[i] * dphi(q->data[i]);
    if (dk)
        for (size_t i = 0; i < nk; i++) dk[i] += dd[i] * dphi(k->data[i]);
}

dfl_tensor *dfl_linear_attention(dfl_ctx *ctx, dfl_tensor *q, dfl_tensor *k, dfl_tensor *v,
                                 int causal, const dfl_rope_cfg *rope, const int *pos)
{
    if (!ctx || !q || !k || !v) return NULL;
    char bq[64], bk[64], bv[64];
    int nd0 = q->ndim, ok = nd0 >= 2 && k->ndim == nd0 && v->ndim == nd0;
    for (int i = 0; ok && i < nd0 - 1; i++)
        if (q->shape[i] != k->shape[i] || q->shape[i] != v->shape[i]) ok = 0;
    if (ok && q->shape[nd0 - 1] != k->shape[nd0 - 1]) ok = 0;
    if (!ok) {
        dfl_fail(DFL_ERR_SHAPE, "linear attention: q %s, k %s, v %s disagree (need q, k (..., T, Dk), v (..., T, Dv))",
                 dfl_shape_str(q, bq, sizeof bq), dfl_shape_str(k, bk, sizeof bk), dfl_shape_str(v, bv, sizeof bv));
        return NULL;
    }
    la_dims L;
    L.T = q->shape[nd0 - 2];
    L.Dk = q->shape[nd0 - 1];
    L.Dv = v->shape[nd0 - 1];
    L.causal = causal ? 1 : 0;
    L.rd = 0;
    L.layout = 0;
    L.ct = L.st = NULL;
    if (L.T < 1 || L.Dk < 1 || L.Dv < 1) {
        dfl_fail(DFL_ERR_SHAPE, "linear attention: empty q %s or v %s", dfl_shape_str(q, bq, sizeof bq),
                 dfl_shape_str(v, bv, sizeof bv));
        return NULL;
    }
    L.S = (long)(q->n / ((size_t)L.T * L.Dk));
    float *ct = NULL, *st = NULL;
    if (rope) {
        if (!pos) {
            dfl_fail(DFL_ERR_ARG, "linear attention: RoPE needs positions (pos is NULL)");
            return NULL;
        }
        L.rd = dfl_rope_rot_dim(rope, L.Dk);
        if (L.rd < 0) return NULL;
        L.layout = (int)rope->layout;
        size_t nt = (size_t)L.T * (L.rd / 2) + 1;
        ct = dfl_arena_alloc(ctx, nt * sizeof(float));
        st = dfl_arena_alloc(ctx, nt * sizeof(float));
        if (!ct || !st) return NULL;
        if (dfl_rope_tables(rope, L.Dk, pos, L.T, ct, st) != DFL_OK) return NULL;
        /* The tables carry YaRN's attention temperature a = 0.1 ln s + 1 (a no-op otherwise). It
         * tempers softmax logits; linear attention has no softmax, and a rotated numerator over an
         * unrotated normaliser would scale every output by a^2. Keep the pure rotation. */
        double a = dfl_rope_attn_factor(rope);
        if (a != 1.0)
            for (size_t i = 0; i < nt; i++) {
                ct[i] = (float)(ct[i] / a);
                st[i] = (float)(st[i] / a);
            }
        L.ct = ct;
        L.st = st;
    }
    dfl_tensor *in[3] = {q, k, v};
    dfl_tensor *out = dfl_op_output(ctx, nd0, v->shape, in, 3);
    if (!out) return NULL;
    size_t nk = q->n, wf = la_work_floats(&L);
    float *den = dfl_arena_alloc(ctx, (size_t)L.S * L.T * sizeof(float));
    float *buf = dfl_arena_alloc(ctx, (4 * nk + (size_t)L.S * wf) * sizeof(float));
    if (!den || !buf) return NULL;
    float *a = buf, *c = a + nk, *b = c + nk, *d = b + nk, *work = d + nk;
    la_qk_features(&L, q->data, k->data, buf, nk);
    size_t sk = (size_t)L.T * L.Dk, sv = (size_t)L.T * L.Dv;
#pragma omp parallel for schedule(static) if (L.S > 1 && sk * L.Dv > 4096)
    for (long s = 0; s < L.S; s++)
        la_seq_fwd(&L, a + s * sk, c + s * sk, b + s * sk, d + s * sk, v->data + s * sv,
                   out->data + s * sv, den + s * L.T, work + s * wf);
    dfl_node *n = dfl_tape_push(ctx, la_backward, rope ? "linear_attention_rope" : "linear_attention", out, in, 3);
    if (n) {
        n->saved[0] = den;
        n->saved[1] = ct;
        n->saved[2] = st;
        n->iarg[0] = L.T;
        n->iarg[1] = L.Dk;
        n->iarg[2] = L.Dv;
        n->iarg[3] = L.causal;
        n->iarg[4] = L.rd;
        n->iarg[5] = L.layout;
        n->iarg[6] = rope ? 1 : 0;
    }
    return out;
}
