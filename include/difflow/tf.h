/* difflow transformer ops: multi-head scaled dot-product attention, head split/merge, LayerNorm,
 * RMSNorm, GELU, SwiGLU, embedding lookup and softmax cross-entropy (DESIGN section 6, issue 5).
 *
 * Every op follows the conventions of ops.h: shapes are validated (DFL_ERR_SHAPE naming the shapes
 * and NULL on mismatch), a NULL input gives NULL at once, the output lives in the ctx arena and a
 * tape node is pushed when recording and some input requires grad. The raw kernels behind the
 * ops follow kernels.h (float32 row-major buffers, backward kernels ACCUMULATE into gradient
 * buffers, a NULL gradient pointer is not computed); the *_ref kernels are naive double loops
 * (no BLAS, no threads) used by tests/test_tf_ops.c as ground truth (src/tf/tf_ref.c).
 *
 * Layouts
 *   - Sequences (B, T, D): batch, time (token position), features.
 *   - Attention heads (B, H, T, Dh): batch, head, time, head dimension. dfl_split_heads turns
 *     (B, T, H*Dh) into it (feature index h*Dh + d goes to head h, lane d) and dfl_merge_heads
 *     undoes it.
 *   - Attention scores and probabilities (B, H, Tq, Tk): row i = query position, column j = key
 *     position.
 */
#ifndef DIFFLOW_TF_H
#define DIFFLOW_TF_H

#include "difflow/core.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ================================================================ attention (src/tf/attention.c) */

/* Options of dfl_attention. A zero-initialised struct (or a NULL pointer) is plain bidirectional
 * attention with scale 1/sqrt(Dh), no bias and no padding. */
typedef struct dfl_attn_opts {
    /* 1: causal mask. With Tq queries and Tk keys the queries are taken to be the LAST Tq
     * positions (KV-cache convention), so query i sees keys j <= i + (Tk - Tq); for Tq == Tk that
     * is j <= i. Rows that see no key (Tq > Tk) give zero output. */
    int causal;
    /* Multiplier of q.k before the bias is added; 0 selects 1/sqrt(Dh) (Vaswani et al. 2017,
     * Eq. 1). */
    float scale;
    /* Additive bias on the scaled scores, NULL for none: (H, Tq, Tk) or (1, H, Tq, Tk) shared by
     * the batch, or (B, H, Tq, Tk). ALiBi (Press et al. 2022), T5 bucketed biases (Raffel et al.
     * 2020) and Shaw et al. (2018) q.a^K_ij terms plug in here, unscaled. When the bias requires
     * grad it receives d loss / d bias (summed over the batch for a shared bias). Entries of -inf
     * are allowed and exclude that key. */
    dfl_tensor *bias;
    /* Key padding mask (B, Tk), NULL for none: 0 = padded key (excluded from every query of that
     * sequence), nonzero = real key. Never differentiated; must stay valid until backward. */
    dfl_tensor *key_mask;
} dfl_attn_opts;

/* Multi-head scaled dot-product attention (Vaswani et al. 2017, "Attention is all you need",
 * Eq. 1, per head): out = softmax(scale q k^T + bias, masked) v.
 * q (B, H, Tq, Dh), k (B, H, Tk, Dh), v (B, H, Tk, Dv); out (B, H, Tq, Dv). opts may be NULL.
 * The softmax subtracts the row maximum; masked keys (causal, key_mask, -inf bias) get
 * probability exactly 0, and a row with no visible key gives output 0 (not NaN) and gradient 0.
 * A NaN among a row's visible scores makes that row NaN. Values of masked keys enter O = P V
 * with weight exactly 0, so they change nothing as long as they are finite (an Inf or NaN value
 * at a padded or future key, within the same block of 64 query rows, would give NaN).
 * Backward: dq, dk, dv and, when it requires grad, dbias (see dfl_k_attention_bwd).
 * When recording, the probabilities (B, H, Tq, Tk) are kept in the arena for the backward; in
 * no-grad mode only a per-thread block of rows is used.
 * Errors: DFL_ERR_SHAPE when q, k, v are not 4-D or disagree on B, H, Tk or Dh, or bias/key_mask
 * have other shapes than above (the message names all shapes); DFL_ERR_ARG for scale < 0 or NaN. */
dfl_tensor *dfl_attention(dfl_ctx *ctx, dfl_tensor *q, dfl_tensor *k, dfl_tensor *v,
                          const dfl_attn_opts *opts);

/* The attention probabilities alone, P = softmax(scale q k^T + bias, masked): q (B, H, Tq, Dh),
 * k (B, H, Tk, Dh), P (B, H, Tq, Tk), options and masking exactly as dfl_attention (a row with no
 * visible key is 0). With dfl_attention_mix, dfl_attention_mix(dfl_attention_probs(q, k, o), v)
 * equals dfl_attention(q, k, v, o) to rounding; the split is for terms that need P itself, such as
 * Shaw et al. (2018)'s value term sum_j P_ij a^V_ij. Costs the full (B, H, Tq, Tk) tensor.
 * Backward: dS = P (dP - rowsum(P dP)), then dq, dk, dbias as in dfl_k_attention_bwd.
 * Errors: as dfl_attention (DFL_ERR_SHAPE naming the shapes, DFL_ERR_ARG for the scale). */
dfl_tensor *dfl_attention_probs(dfl_ctx *ctx, dfl_tensor *q, dfl_tensor *k,
                                const dfl_attn_opts *opts);
/* O = P V per (batch, head): p (B, H, Tq, Tk), v (B, H, Tk, Dv), O (B, H, Tq, Dv). Backward:
 * dP += dO V^T, dV += P^T dO. Errors: DFL_ERR_SHAPE when p and v disagree (shapes named). */
dfl_tensor *dfl_attention_mix(dfl_ctx *ctx, dfl_tensor *p, dfl_tensor *v);

/* (B, T, H*Dh) -> (B, H, T, Dh): y[b, h, t, d] = x[b, t, h*Dh + d]. Differentiable (the backward
 * is the inverse permutation). Errors: DFL_ERR_SHAPE if x is not 3-D or H does not divide its
 * last dim; DFL_ERR_ARG if H < 1. */
dfl_tensor *dfl_split_heads(dfl_ctx *ctx, dfl_tensor *x, int H);
/* (B, H, T, Dh) -> (B, T, H*Dh), the inverse of dfl_split_heads. Differentiable.
 * Errors: DFL_ERR_SHAPE if x is not 4-D. */
dfl_tensor *dfl_merge_heads(dfl_ctx *ctx, dfl_tensor *x);

/* Rows of queries processed together by the attention kernels (the causal kernels skip keys
 * beyond the last row of each block). */
#define DFL_ATTN_BLOCK 64

/* Scratch floats needed by dfl_k_attention_fwd (when p is NULL) and dfl_k_attention_bwd:
 * omp_get_max_threads() * DFL_ATTN_BLOCK * Tk. Size it right before the call, with the same
 * thread setting. */
size_t dfl_k_attention_work_floats(int Tk);

/* Attention forward. q (B, H, Tq, Dh), k (B, H, Tk, Dh), v (B, H, Tk, Dv), o (B, H, Tq, Dv); v and o
 * may both be NULL (probabilities only, p required).
 * bias: NULL, (H, Tq, Tk) when bias_per_batch == 0, or (B, H, Tq, Tk) when 1. kmask: NULL or
 * (B, Tk), 0 = padded key. p: (B, H, Tq, Tk) probabilities written for the backward, or NULL (then
 * work, dfl_k_attention_work_floats(Tk) floats, holds one block of rows per thread; work may be
 * NULL when p is not). Causal and scale as in dfl_attn_opts.
 * Method: per (batch, head), blocks of DFL_ATTN_BLOCK query rows; S = scale Q K^T by
 * cblas_sgemm (only the keys the block can see when causal), bias added, row softmax with the
 * maximum subtracted and a vectorised exp, O = P V by cblas_sgemm. OpenMP over batch*heads
 * (BLAS single-threaded inside); one (batch, head) pair runs threaded BLAS instead. */
void dfl_k_attention_fwd(const float *q, const float *k, const float *v, const float *bias,
                         int bias_per_batch, const float *kmask, float *o, float *p, int B, int H,
                         int Tq, int Tk, int Dh, int Dv, float scale, int causal, float *work);
/* Attention backward from the saved probabilities p (B, H, Tq, Tk), with do_ (B, H, Tq, Dv):
 *   dv += P^T dO,  dP = dO V^T,  dS = P * (dP - rowsum(P * dP)),
 *   dbias += dS (summed over b when bias_per_batch == 0), dq += scale dS K,  dk += scale dS^T Q.
 * Shapes as in dfl_k_attention_fwd; dq, dk, dv, dbias may each be NULL. work:
 * dfl_k_attention_work_floats(Tk) floats. With a shared bias that requires grad the loop is
 * parallel over heads only (each thread owns dbias[h]). */
void dfl_k_attention_bwd(const float *q, const float *k, const float *v, const float *p,
                         const float *do_, float *dq, float *dk, float *dv, float *dbias,
                         int bias_per_batch, int B, int H, int Tq, int Tk, int Dh, int Dv,
                         float scale, int causal, float *work);
/* Backward of the probabilities alone (dfl_attention_probs): from p (B, H, Tq, Tk) and its
 * gradient dp (same shape), dS = P (dP - rowsum(P dP)); dq += scale dS K, dk += scale dS^T Q,
 * dbias += dS (summed over b when bias_per_batch == 0). q (B, H, Tq, Dh), k (B, H, Tk, Dh); dq,
 * dk, dbias may be NULL; work: dfl_k_attention_work_floats(Tk) floats. */
void dfl_k_attention_probs_bwd(const float *q, const float *k, const float *p, const float *dp,
                               float *dq, float *dk, float *dbias, int bias_per_batch, int B,
                               int H, int Tq, int Tk, int Dh, float scale, int causal,
                               float *work);
/* O = P V for BH = B*H pairs: p (BH, Tq, Tk), v (BH, Tk, Dv), o (BH, Tq, Dv); one cblas_sgemm
 * per pair, OpenMP over pairs. */
void dfl_k_attention_mix_fwd(const float *p, const float *v, float *o, int BH, int Tq, int Tk,
                             int Dv);
/* Backward of dfl_k_attention_mix_fwd: dp += do_ V^T, dv += P^T do_ (each may be NULL); shapes
 * as above, do_ (BH, Tq, Dv). */
void dfl_k_attention_mix_bwd(const float *p, const float *v, const float *do_, float *dp,
                             float *dv, int BH, int Tq, int Tk, int Dv);
/* Naive reference of dfl_k_attention_fwd (double accumulation, the definition index by index;
 * p may be NULL). Same shapes and semantics. */
void dfl_k_attention_fwd_ref(const float *q, const float *k, const float *v, const float *bias,
                             int bias_per_batch, const float *kmask, float *o, float *p, int B,
                             int H, int Tq, int Tk, int Dh, int Dv, float scale, int causal);
/* Naive reference of dfl_k_attention_bwd (recomputes P from q, k, bias and kmask in double,
 * then the formulas above). Shapes as in dfl_k_attention_fwd; accumulates into dq, dk, dv, dbias
 * (each may be NULL). */
void dfl_k_attention_bwd_ref(const float *q, const float *k, const float *v, const float *bias,
                             int bias_per_batch, const float *kmask, const float *do_, float *dq,
                             float *dk, float *dv, float *dbias, int B, int H, int Tq, int Tk,
                             int Dh, int Dv, float scale, int causal);

/* ================================================================ norms, activations, embedding,
 * loss (src/tf/ops_tf.c) */

/* LayerNorm (Ba, Kiros & Hinton 2016, "Layer Normalization", Eq. 4 over the feature dim) over the
 * last dim D: per row, mean and biased variance, y = (x - mean) / sqrt(var + eps) * gamma + beta.
 * x (..., D), gamma (D) or NULL (= 1), beta (D) or NULL (= 0); y has x's shape.
 * Errors: DFL_ERR_SHAPE if gamma/beta are not (D); DFL_ERR_ARG for eps < 0. */
dfl_tensor *dfl_layer_norm(dfl_ctx *ctx, dfl_tensor *x, dfl_tensor *gamma, dfl_tensor *beta,
                           float eps);
/* RMSNorm (Zhang & Sennrich 2019, "Root Mean Square Layer Normalization", Eq. 4) over the last
 * dim D: y = x / sqrt(mean(x^2) + eps) * gamma. x (..., D), gamma (D) or NULL (= 1).
 * Errors: DFL_ERR_SHAPE if gamma is not (D); DFL_ERR_ARG for eps < 0. */
dfl_tensor *dfl_rms_norm(dfl_ctx *ctx, dfl_tensor *x, dfl_tensor *gamma, float eps);

/* GELU variants (Hendrycks & Gimpel 2016, "Gaussian Error Linear Units", Sec. 2). */
typedef enum {
    DFL_GELU_ERF = 0, /* exact: x Phi(x) = 0.5 x (1 + erf(x / sqrt 2)); gelu(1) = 0.8413447 */
    DFL_GELU_TANH = 1 /* 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))); gelu(1) = 0.8411920 */
} dfl_gelu_kind;
/* GELU, elementwise; y has x's shape. Errors: DFL_ERR_ARG for an unknown kind. */
dfl_tensor *dfl_gelu(dfl_ctx *ctx, dfl_tensor *x, dfl_gelu_kind kind);

/* SwiGLU gate (Shazeer 2020, "GLU Variants Improve Transformer", Eq. 5 with the projections
 * a = x W, b = x V done by the caller): y = silu(a) * b = a sigmoid(a) b, elementwise.
 * a and b have the same shape, y too. Errors: DFL_ERR_SHAPE if the shapes differ. */
dfl_tensor *dfl_swiglu(dfl_ctx *ctx, dfl_tensor *a, dfl_tensor *b);

/* Embedding lookup: y[b, t, :] = table[ids[b*T + t], :]. table (V, D), ids (B, T) row-major ints
 * (copied, the caller's buffer may be reused at once), y (B, T, D). Backward scatters: dtable[id]
 * += dy[b, t] for every occurrence (repeated ids accumulate).
 * Errors: DFL_ERR_SHAPE if table is not 2-D or B, T < 1; DFL_ERR_ARG for ids NULL or an id
 * outside [0, V) (the message gives the position and the id). */
dfl_tensor *dfl_embedding(dfl_ctx *ctx, dfl_tensor *table, const int *ids, int B, int T);

/* Softmax cross-entropy with integer targets, in nats: logits (..., V) as M rows of V classes,
 * targets (M) ints (copied). loss = (1/M') sum over rows with targets[m] != ignore_index of
 * (logsumexp(logits[m]) - logits[m, targets[m]]), M' the number of such rows; shape (1). The
 * log-sum-exp subtracts the row maximum. If every row is ignored the loss is 0 with zero gradient.
 * Backward: dlogits[m] += g / M' (softmax(logits[m]) - onehot(targets[m])) for counted rows.
 * Errors: DFL_ERR_ARG for targets NULL or a target outside [0, V) that is not ignore_index (the
 * message gives the row and the value). */
dfl_tensor *dfl_cross_entropy(dfl_ctx *ctx, dfl_tensor *logits, const int *targets,
                              int ignore_index);

#ifdef __cplusplus
}
#endif
#endif
