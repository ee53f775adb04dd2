/* difflow positional encodings (DESIGN section 6; reference: ../shared/reference/positional.md).
 *
 * RoPE (1-D, two explicit layouts, partial rotary dims, base theta, PI / NTK / YaRN scaling),
 * 2-D axial RoPE, xPos, sinusoidal and learned absolute tables, ALiBi, T5 bucketed bias, Shaw
 * relative representations, and linear attention (optionally with RoPE, RoFormer Eq. 19).
 *
 * Conventions
 *   - Tensors are float32. Queries/keys are (B, H, T, Dh) (any leading dims are accepted: the op
 *     works on (..., T, Dh), treating every leading index as one sequence of T tokens).
 *   - Positions are int arrays (one per token, shared by every leading index), absolute: a
 *     query block at positions offset..offset+T-1 during cached decoding is just pos[t] =
 *     offset + t. Negative positions are allowed (xPos centring).
 *   - Rotation angles pos * freq are computed in double, and cos / sin in double, then cast to
 *     float (a float angle would be off by ~3e-4 rad at position 5000 and by whole radians past
 *     2^24; the tests check the relative property at 2^24 + 1).
 *   - Biases (ALiBi, T5, Shaw) are plain tensors added to the attention logits q.k / sqrt(Dh)
 *     by the caller's attention op: shape (H, Tq, Tk) (broadcast over the batch) or
 *     (B, H, Tq, Tk). Query i sits at position q_offset + i, key j at position j.
 *   - Ops return NULL on bad input with dfl_last_error() naming the value (DFL_ERR_ARG for a
 *     bad setting, DFL_ERR_SHAPE for a tensor shape), and NULL at once for a NULL input.
 */
#ifndef DIFFLOW_POSENC_H
#define DIFFLOW_POSENC_H

#include "difflow/core.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ================================================================ RoPE */

/* Which lanes of a head form the rotated pair i (reference 1.2). Always explicit, never inferred.
 *   DFL_ROPE_INTERLEAVED: (x[2i], x[2i+1])       RoFormer, GPT-J, Meta LLaMA, ggml NORMAL.
 *   DFL_ROPE_HALF:        (x[i], x[i + rd/2])    GPT-NeoX, HF LLaMA ("rotate_half"), ggml NEOX.
 * The two differ by a fixed permutation of each head's q/k lanes:
 *   half[j] = inter[perm[j]], perm = (0, 2, 4, ..., rd-2, 1, 3, ..., rd-1) (lanes >= rd fixed). */
typedef enum { DFL_ROPE_INTERLEAVED = 0, DFL_ROPE_HALF = 1 } dfl_rope_layout;

/* Context-extension scaling of the frequencies (YaRN paper sec. 2-3 unified view, reference 2.2),
 * with s = factor = L'/L:
 *   NONE: theta_i = b^(-2i/rd).
 *   PI   (Chen et al. 2023, arXiv 2306.15595): positions m -> m/s, i.e. theta_i / s.
 *   NTK  ("NTK-aware"): base b' = b * s^(rd/(rd-2)) (needs rd > 2).
 *   YARN (Peng et al. 2023, arXiv 2309.00071, "NTK-by-parts" + temperature): with
 *        r_i = L / lambda_i = L theta_i / (2 pi) and ramp gamma(r) = clamp((r - alpha)/(beta - alpha),
 *        0, 1): h(theta_i) = (1 - gamma) theta_i / s + gamma theta_i; cos and sin are multiplied
 *        by sqrt(1/t) = 0.1 ln s + 1 (both q and k, so the logits get 1/t). The ramp is linear
 *        in r (the paper's form); ggml ramps linearly in the pair index between the same two
 *        crossing points (see dfl_rope_yarn_corr_dim), so values between them differ. */
typedef enum {
    DFL_ROPE_SCALE_NONE = 0,
    DFL_ROPE_SCALE_PI = 1,
    DFL_ROPE_SCALE_NTK = 2,
    DFL_ROPE_SCALE_YARN = 3
} dfl_rope_scaling;

/* RoPE settings. Start from dfl_rope_default() and change fields. */
typedef struct {
    dfl_rope_layout layout;
    int rot_dim;              /* rd: rotated lanes, even, <= Dh; 0 = the whole head (Dh). Lanes
                                 rd..Dh-1 pass through unchanged. Frequencies run over rd. */
    double theta;             /* base b (default 10000) */
    dfl_rope_scaling scaling; /* default NONE */
    double factor;            /* s = L'/L > 0 for PI/NTK/YaRN (default 1) */
    int orig_ctx;             /* L, the training context, for YaRN (required > 0 there) */
    double yarn_alpha;        /* ramp ends in r = L/lambda units (defaults 1 and 32, LLaMA) */
    double yarn_beta;
} dfl_rope_cfg;

/* Defaults: interleaved layout, rd = Dh, theta 10000, no scaling, factor 1, YaRN alpha 1,
 * beta 32, orig_ctx 0. */
dfl_rope_cfg dfl_rope_default(void);

/* Dynamic NTK (reference 2.2): the settings of `base` with NTK scaling at factor
 * s = max(1, seq_len / base->orig_ctx), seq_len the current total length (cached keys included).
 * The rotation changes with s, so a KV cache must hold keys BEFORE RoPE (YaRN sec. 3.3).
 * base->orig_ctx must be > 0; otherwise the result has orig_ctx 0 and NTK at factor 1. */
dfl_rope_cfg dfl_rope_dynamic_ntk(const dfl_rope_cfg *base, int seq_len);

/* Resolves and validates the rotary dimension for head dimension Dh: returns rd (cfg->rot_dim,
 * or Dh when 0) or -1 with DFL_ERR_ARG naming the value: Dh odd with rd = Dh ("head dimension 7
 * cannot be split into pairs"), rd odd, rd > Dh, rd < 0, theta <= 0, factor <= 0, NTK with
 * rd <= 2, YaRN without orig_ctx > 0 or with beta <= alpha, an unknown layout or scaling. */
int dfl_rope_rot_dim(const dfl_rope_cfg *cfg, int head_dim);

/* Per-pair angular frequencies (radians per position), freq[i] for i < rd/2, including the
 * scaling (PI: theta_i/s; NTK: with b'; YaRN: h(theta_i)). Angle of pair i at position m is
 * m * freq[i]. freq: rd/2 doubles, rd from dfl_rope_rot_dim. Returns DFL_ERR_ARG as that does. */
dfl_status dfl_rope_inv_freq(const dfl_rope_cfg *cfg, int head_dim, double *freq);

/* Factor multiplying cos and sin: 0.1 ln s + 1 for YaRN with s > 1 (YaRN Eq. for sqrt(1/t);
 * reference table 3.3: s = 2 -> 1.0693), else 1. */
double dfl_rope_attn_factor(const dfl_rope_cfg *cfg);

/* ggml's YaRN correction dimension (reference 2.2 step 2): the (real) pair index at which
 * r_i = L / lambda_i equals n_rot: rd ln(L / (2 pi n_rot)) / (2 ln b). With rd 128, L 4096,
 * b 1e4: n_rot 32 -> 20.94, n_rot 1 -> 45.03. Pairs below corr_dim(beta) keep theta_i, pairs
 * above corr_dim(alpha) get theta_i / s. Pure function, no error status: rot_dim, theta,
 * orig_ctx and n_rot must be > 0 (otherwise the result is NaN or infinite). */
double dfl_rope_yarn_corr_dim(int rot_dim, double theta, int orig_ctx, double n_rot);

/* cos/sin tables of T positions: cos[t * rd/2 + i] = a cos(pos[t] freq[i]), likewise sin, with
 * a = dfl_rope_attn_factor(cfg). cos, sin: T * rd/2 floats each. Errors as dfl_rope_rot_dim,
 * and DFL_ERR_ARG for pos NULL with T > 0 (T = 0 writes nothing). */
dfl_status dfl_rope_tables(const dfl_rope_cfg *cfg, int head_dim, const int *pos, int T,
                           float *cos_t, float *sin_t);

/* Rotation kernel: for each of S sequences of T tokens of Dh lanes, pair i of token t (lanes by
 * layout) becomes (x_a c - x_b s, x_a s + x_b c) with c = cos_t[t*rd/2 + i], s = sin_t[...]
 * (RoFormer Eq. 34); lanes >= rd are copied. x, y (S, T, Dh) (y may equal x). */
void dfl_k_rope_fwd(const float *x, const float *cos_t, const float *sin_t, float *y, long S,
                    int T, int Dh, int rd, dfl_rope_layout layout);
/* Backward: dx += R^T dy, i.e. the forward with sin negated (the inverse rotation when |a| = 1);
 * pass-through lanes dx += dy. dy, dx (S, T, Dh). */
void dfl_k_rope_bwd(const float *dy, const float *cos_t, const float *sin_t, float *dx, long S,
                    int T, int Dh, int rd, dfl_rope_layout layout);

/* RoPE (Su et al., RoFormer, arXiv 2104.09864, Eq. 34) applied to q or k:
 * x (..., T, Dh), usually (B, H, T, Dh); pos (T) absolute positions; y same shape.
 * Differentiable in x (backward: inverse rotation of the cotangent). Errors: DFL_ERR_ARG from
 * dfl_rope_rot_dim, DFL_ERR_ARG for pos NULL, DFL_ERR_SHAPE for fewer than 2 dims. */
dfl_tensor *dfl_rope(dfl_ctx *ctx, dfl_tensor *x, const int *pos, const dfl_rope_cfg *cfg);

/* RoPE with caller-built tables (from dfl_rope_tables, e.g. built once per forward pass and
 * shared by q and k of every layer): x (..., T, Dh), cos_t and sin_t (T, rd/2) floats that must
 * stay valid until the backward pass has run (arena or persistent memory). rd even, 2 <= rd <= Dh
 * (DFL_ERR_ARG otherwise). Same rotation and backward as dfl_rope. */
dfl_tensor *dfl_rope_with_tables(dfl_ctx *ctx, dfl_tensor *x, const float *cos_t,
                                 const float *sin_t, int rot_dim, dfl_rope_layout layout);

/* xPos (Sun et al. 2022, "A length-extrapolatable Transformer", arXiv 2212.10554): RoPE whose
 * pair i is also scaled by zeta_i^(pos/scale_base) on queries (is_key = 0) and by
 * zeta_i^(-pos/scale_base) on keys (is_key = 1), zeta_i = (2i/rd + 0.4)/1.4, scale_base gamma
 * (0 = 512). The scale sits on both lanes of pair i in the rotation's own layout (reference
 * pitfall 1), so q.k picks up a factor zeta_i^((m-n)/gamma) per pair. Meant for causal
 * attention; lucidrains centres positions (pos - T/2): pass centred positions for that.
 * x (..., T, Dh), pos (T); errors as dfl_rope plus scale_base < 0. */
dfl_tensor *dfl_xpos(dfl_ctx *ctx, dfl_tensor *x, const int *pos, const dfl_rope_cfg *cfg,
                     double scale_base, int is_key);

/* 2-D axial RoPE for image patches (DiT): token t at grid (row[t], col[t]). The rd/2 pairs are
 * split in two: pairs 0 .. rd/4-1 rotate by row[t] * theta_j and pairs rd/4 .. rd/2-1 by
 * col[t] * theta_j, theta_j = b^(-2j/(rd/2)) for j < rd/4 (a per-axis ladder, as FLUX's
 * axes_dim and RoPE-ViT axial). With the interleaved layout the row half is lanes 0..rd/2-1
 * and the column half lanes rd/2..rd-1; with DFL_ROPE_HALF the row pairs are lanes
 * [0, rd/4) + [rd/2, 3rd/4). x (..., T, Dh), row and col (T). rd must be a multiple of 4;
 * cfg->scaling must be NONE (DFL_ERR_ARG otherwise). */
dfl_tensor *dfl_rope_2d(dfl_ctx *ctx, dfl_tensor *x, const int *row, const int *col,
                        const dfl_rope_cfg *cfg);

/* ================================================================ absolute encodings */

/* Sinusoidal table (Vaswani et al. 2017, sec. 3.5), interleaved layout:
 * pe[t*D + 2i] = sin(p / 10000^(2i/D)), pe[t*D + 2i + 1] = cos(same), p = pos0 + t.
 * pe (N, D); D even (DFL_ERR_ARG otherwise), N >= 0. Computed in double. */
dfl_status dfl_sinusoidal_table(float *pe, int N, int D, int pos0);
/* The same table as an arena tensor (N, D) without gradient (add it to (B, N, D) activations
 * with dfl_add's broadcasting). NULL with DFL_ERR_ARG for N < 1 or D odd or < 1. */
dfl_tensor *dfl_sinusoidal(dfl_ctx *ctx, int N, int D, int pos0);

/* Learned absolute positions (BERT/GPT): y[b, t, :] = x[b, t, :] + P[offset + t, :].
 * x (..., T, D), table P (L, D) (a parameter), offset >= 0. Differentiable in x and P (rows
 * offset..offset+T-1 of dP get the sum of dy over the leading dims). A sequence past the table
 * (offset + T > L) is DFL_ERR_SHAPE: "sequence of T positions (from offset) exceeds the learned
 * table of L positions". */
dfl_tensor *dfl_learned_pos_add(dfl_ctx *ctx, dfl_tensor *x, dfl_tensor *table, int offset);

/* ================================================================ ALiBi */

/* ALiBi head slopes (Press et al. 2022, arXiv 2108.12409, sec. 3; the paper's get_slopes):
 * for H a power of two, slope_h = 2^(-8(h+1)/H) (H = 8: 1/2 .. 1/256); otherwise the H2 =
 * 2^floor(log2 H) slopes of H2, then the first H - H2 of every other slope of 2*H2
 * (2^(-4(2j+1)/H2)): H = 12 -> 1/2 .. 1/256, 0.70711, 0.35355, 0.17678, 0.08839.
 * slopes (H); H >= 1 (DFL_ERR_ARG otherwise). Computed in double. */
dfl_status dfl_alibi_slopes(int H, float *slopes);

/* ALiBi bias (H, Tq, Tk): bias[h, i, j] = -slope_h |(q_offset + i) - j|, the symmetric form. For
 * causal attention the entries j > q_offset + i are masked by the attention op, so what remains
 * is the paper's m_h [-(i-1), ..., -1, 0]; for bidirectional attention it is the symmetric
 * distance penalty. Not scaled by 1/sqrt(Dh). No gradient. Tq, Tk >= 1, q_offset >= 0 and
 * H >= 1, else NULL with DFL_ERR_ARG; DFL_ERR_NOMEM. */
dfl_tensor *dfl_alibi_bias(dfl_ctx *ctx, int H, int Tq, int Tk, int q_offset);

/* ================================================================ T5 relative buckets */

/* T5 relative-position bucket (Raffel et al. 2020; x-transformers _relative_position_bucket,
 * reference 2.5) of rel = k_pos - q_pos. With n = -rel:
 *   bidirectional: B' = B/2, offset B' if n < 0, n = |n|;  causal: B' = B, offset 0, n = max(n, 0).
 *   e = B'/2; value n if n < e, else min(B'-1, e + floor(ln(n/e)/ln(M/e) (B'-e))).
 * Returns offset + value, in [0, B). num_buckets B >= 2 (even when bidirectional),
 * max_distance M > B'/2; -1 with DFL_ERR_ARG otherwise. */
int dfl_t5_bucket(int rel, int bidirectional, int num_buckets, int max_distance);

/* T5 bias (H, Tq, Tk): bias[h, i, j] = table[bucket(j - (q_offset + i)), h] with table
 * (num_buckets, H) learned. Differentiable in table (the gradient is scattered back into the
 * bucket rows). Errors: DFL_ERR_SHAPE for a table that is not 2-D; DFL_ERR_ARG for bad bucket
 * settings, Tq or Tk < 1, or q_offset < 0. */
dfl_tensor *dfl_t5_bias(dfl_ctx *ctx, dfl_tensor *table, int Tq, int Tk, int q_offset,
                        int bidirectional, int max_distance);

/* ================================================================ Shaw relative */

/* Shaw et al. 2018 (arXiv 1803.02155) key term: bias[b, h, i, j] = scale * q[b, h, i, :] .
 * aK[clip(j - (q_offset + i), -k, k) + k, :], k = (R - 1)/2 for aK (R, Dh), R odd. q (B, H, Tq,
 * Dh) (or any (..., Tq, Dh)); output (..., Tq, Tk). With an attention op that divides only
 * q.k by sqrt(Dh), pass scale = 1/sqrt(Dh) to get Shaw's e_ij = q(k + a)^T / sqrt(d).
 * Differentiable in q and aK. Errors: DFL_ERR_SHAPE for R even or Dh mismatch; DFL_ERR_ARG for
 * Tk < 1 or q_offset < 0. */
dfl_tensor *dfl_shaw_bias(dfl_ctx *ctx, dfl_tensor *q, dfl_tensor *aK, int Tk, int q_offset,
                          float scale);

/* Shaw value term: z[..., i, :] = sum_j P[..., i, j] aV[clip(j - (q_offset + i), -k, k) + k, :],
 * P the attention probabilities (..., Tq, Tk), aV (2k+1, Dv); output (..., Tq, Dv), to be added to
 * the attention output P V. Differentiable in P and aV. Errors: DFL_ERR_SHAPE for aV not 2-D with
 * an odd row count, DFL_ERR_ARG for q_offset < 0. */
dfl_tensor *dfl_shaw_values(dfl_ctx *ctx, dfl_tensor *P, dfl_tensor *aV, int q_offset);

/* ================================================================ linear attention */

/* Linear attention (Katharopoulos et al. 2020, arXiv 2006.16236, Eq. 4-6, feature map
 * phi(x) = elu(x) + 1): out_m = sum_n (phi(q_m).phi(k_n)) v_n / sum_n phi(q_m).phi(k_n), n over
 * all tokens (causal = 0) or n <= m (causal = 1, prefix sums of phi(k_n) v_n^T and phi(k_n)).
 * With rope != NULL this is RoFormer sec. 3.3, Eq. 19: the numerator uses
 * (R_m phi(q_m)).(R_n phi(k_n)), the rotation applied AFTER the feature map at positions pos,
 * while the normaliser keeps the unrotated phi(q_m).phi(k_n) (so it stays positive). YaRN
 * scaling contributes its frequencies only: its attention temperature tempers softmax logits and
 * is left out here (it would scale every output by a^2).
 * Self-attention only: q, k (..., T, Dk), v (..., T, Dv), same leading dims and T (no cache);
 * pos (T) (only with rope); out (..., T, Dv).
 * Differentiable in q, k, v. Cost O(T Dk Dv) per sequence. Errors: DFL_ERR_SHAPE, and those of
 * dfl_rope_rot_dim on Dk; DFL_ERR_ARG when rope is given without pos. */
dfl_tensor *dfl_linear_attention(dfl_ctx *ctx, dfl_tensor *q, dfl_tensor *k, dfl_tensor *v,
                                 int causal, const dfl_rope_cfg *rope, const int *pos);

#ifdef __cplusplus
}
#endif
#endif
