/* difflow lm: a byte-level decoder-only Transformer language model with a choice of positional
 * encoding (DESIGN section 6, issue 5; reference: ../shared/reference/positional.md).
 *
 * Model (RoFormer-style decoder, pre-norm as GPT-2, Radford et al. 2019, sec. 2.3):
 *   x_0 = E[byte] (+ positions for learned / sinusoidal)             E (256, D)
 *   x_{l+1/2} = x_l + W_o Attn(LN1(x_l)),  Attn causal, H heads of Dh = D/H
 *   x_{l+1}   = x_{l+1/2} + W_2 GELU(W_1 LN2(x_{l+1/2}))              W_1 (F, D), W_2 (D, F)
 *   logits    = W_head LN_f(x_L) + b_head                            (B, T, 256)
 * Positional encodings (dfl_posenc): where each enters is in the enum's comments.
 * Init (GPT-2): every Linear weight N(0, 0.02^2), residual output projections (W_o, W_2)
 * N(0, (0.02/sqrt(2 L))^2), biases 0, LayerNorm 1/0, byte embeddings and learned positions
 * N(0, 1) (PyTorch nn.Embedding), Shaw tables N(0, 0.02^2), T5 table 0. Hence the loss at init is
 * ln 256 = 5.545 nats up to ~0.03.
 * Parameter names are PyTorch module paths: tok_emb.weight, pos_emb.weight, t5_bias.weight,
 * blocks.{l}.ln1.{weight,bias}, blocks.{l}.attn.{q,k,v,o}.{weight,bias},
 * blocks.{l}.attn.rel_k / rel_v (Shaw), blocks.{l}.ln2.*, blocks.{l}.mlp.{fc,proj}.*,
 * ln_f.*, head.*.
 */
#ifndef DIFFLOW_LM_H
#define DIFFLOW_LM_H

#include <stddef.h>
#include <stdint.h>

#include "difflow/core.h"
#include "difflow/nn.h"
#include "difflow/posenc.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Positional encodings of the LM (--posenc names in quotes). */
typedef enum {
    DFL_POSENC_NONE = 0,    /* "none": NoPE, the causal mask alone (Haviv et al. 2022) */
    DFL_POSENC_LEARNED,     /* "learned": x_0 += P[t], P (max_positions, D) (GPT); T <= table */
    DFL_POSENC_SINUSOIDAL,  /* "sinusoidal": x_0 += PE(t), Vaswani et al. 2017 sec. 3.5 */
    DFL_POSENC_SHAW,        /* "shaw": e_ij = q_i (k_j + a^K_{clip(j-i)})/sqrt(Dh), z_i += sum_j
                               P_ij a^V_{clip(j-i)}, per layer, shared by heads (Shaw et al. 2018) */
    DFL_POSENC_T5,          /* "t5": scores += b[h, bucket(j - i)], 32 causal buckets, max
                               distance 128, one table shared by all layers (Raffel et al. 2020) */
    DFL_POSENC_ALIBI,       /* "alibi": scores -= m_h (i - j) (Press et al. 2022) */
    DFL_POSENC_ROPE,        /* "rope": q, k rotated by RoPE (Su et al., RoFormer Eq. 34) */
    DFL_POSENC_ROPE_LINEAR, /* "rope-linear": linear attention (elu+1) with RoPE on the numerator,
                               the normaliser unrotated (RoFormer sec. 3.3, Eq. 19) */
    DFL_POSENC_XPOS         /* "xpos": RoPE with the xPos scale zeta^(+-pos/512) on q / k (Sun et
                               al. 2022), positions centred at T/2 as lucidrains' code */
} dfl_posenc;

/* Number of dfl_posenc values (they run 0 .. DFL_POSENC_COUNT - 1). */
#define DFL_POSENC_COUNT 9

/* Name of an encoding ("rope", ...); "?" for an unknown value. */
const char *dfl_posenc_name(dfl_posenc p);
/* Parses a --posenc name. DFL_ERR_ARG naming the value and listing the known names otherwise. */
dfl_status dfl_posenc_parse(const char *s, dfl_posenc *out);
/* 1 when the encoding rotates q/k (rope, rope-linear, xpos), i.e. takes the RoPE settings. */
int dfl_posenc_uses_rope(dfl_posenc p);

/* Names of the RoPE layouts ("interleaved", "half") and scalings ("none", "pi", "ntk", "yarn")
 * as the command line spells them; "?" for an unknown value. The parsers return DFL_ERR_ARG
 * naming the value and listing the known names. */
const char *dfl_lm_rope_layout_name(dfl_rope_layout l);
/* "none", "pi", "ntk" or "yarn" for a scaling; "?" for an unknown value. */
const char *dfl_lm_rope_scaling_name(dfl_rope_scaling s);
/* "interleaved" or "half" -> layout; DFL_ERR_ARG naming the value and the known names otherwise. */
dfl_status dfl_lm_rope_layout_parse(const char *s, dfl_rope_layout *out);
/* "none", "pi", "ntk" or "yarn" -> scaling; DFL_ERR_ARG naming the value and the known names otherwise. */
dfl_status dfl_lm_rope_scaling_parse(const char *s, dfl_rope_scaling *out);

/* LM hyper-parameters. Start from dfl_lm_cfg_default(). */
typedef struct {
    dfl_posenc posenc;
    int context;          /* training context T (bytes per training window), default 128 */
    int layers;           /* L, default 4 */
    int dim;              /* D, default 128 */
    int heads;            /* H, default 4 (Dh = D/H) */
    int ffn;              /* F, MLP hidden width, default 4 D (0 = 4 D) */
    int max_positions;    /* learned: rows of the position table (0 = context) */
    dfl_rope_cfg rope;    /* rope / rope-linear / xpos: layout, rotary dim, theta, scaling
                             (factor s, YaRN ramp alpha/beta); rope.orig_ctx, YaRN's original
                             context L, is the training context when 0 */
    int shaw_k;           /* shaw: clipping distance k (table of 2k+1 rows), default 16 */
    int t5_buckets;       /* t5: buckets (32) */
    int t5_max_distance;  /* t5: max distance (128) */
    double xpos_scale_base; /* xpos: gamma (512) */
} dfl_lm_cfg;

/* Defaults above: posenc rope, interleaved, full rotary dim, theta 10000, no scaling. */
dfl_lm_cfg dfl_lm_cfg_default(void);

/* c with its derived defaults filled in, as dfl_lm_new builds the model: ffn <= 0 -> 4 dim,
 * max_positions <= 0 -> context, rope.orig_ctx <= 0 -> context. Pure; no error. */
dfl_lm_cfg dfl_lm_cfg_resolved(const dfl_lm_cfg *c);
/* Validates a configuration before any work: sizes >= 1, dim divisible by heads, the RoPE
 * settings for the head dimension (an odd head dimension, an odd or too large rotary dim:
 * dfl_rope_rot_dim's message), xPos without scaling, learned with context > max_positions
 * ("sequence of T bytes exceeds the learned table of L positions"), shaw_k >= 1.
 * Returns DFL_OK or DFL_ERR_ARG with the message naming the setting. */
dfl_status dfl_lm_cfg_check(const dfl_lm_cfg *c);

/* Config as a JSON object string (malloc'd; the caller frees) and back. The parser takes the
 * defaults for absent keys; DFL_ERR_FORMAT for malformed JSON or an unknown posenc. */
char *dfl_lm_cfg_json(const dfl_lm_cfg *c);
/* Parses dfl_lm_cfg_json's output into c (absent keys keep dfl_lm_cfg_default's values).
 * DFL_ERR_FORMAT for malformed JSON, an unknown posenc/layout/scaling or a non-numeric size. */
dfl_status dfl_lm_cfg_from_json(const char *json, dfl_lm_cfg *c);

/* A model: its resolved config (ffn, table size and RoPE orig_ctx filled in) and its parameters. */
typedef struct dfl_lm dfl_lm;

/* New model with parameters initialised as in the header comment from rng. NULL with the
 * message of dfl_lm_cfg_check, or DFL_ERR_NOMEM. */
dfl_lm *dfl_lm_new(const dfl_lm_cfg *c, dfl_rng *rng);
/* Frees the model and its parameters (NULL is a no-op). */
void dfl_lm_free(dfl_lm *m);
/* The parameter registry (names above), for the optimizer and checkpoints; owned by the model. */
dfl_params *dfl_lm_params(dfl_lm *m);
/* The resolved config (ffn = 4 D when 0 was given, max_positions = context when 0, rope.orig_ctx =
 * context when 0). */
const dfl_lm_cfg *dfl_lm_config(const dfl_lm *m);
/* Replaces the RoPE scaling (scaling, factor) of a built model, e.g. NTK or YaRN at evaluation
 * time; orig_ctx and the YaRN ramp stay the model's. DFL_ERR_ARG (model unchanged) when the
 * encoding has no RoPE or the setting is invalid (dfl_lm_cfg_check's message). */
dfl_status dfl_lm_set_rope_scaling(dfl_lm *m, dfl_rope_scaling s, double factor);
/* Replaces the context-extension part of a built model's RoPE settings with r's: scaling, factor,
 * orig_ctx (0 = the training context) and the YaRN ramp ends yarn_alpha, yarn_beta (Peng et al.
 * 2023, arXiv 2309.00071, sec. 3.2 Eq. 18; in r = L/lambda units). r's layout, rotary dim and
 * theta are ignored: they belong to the trained weights. DFL_ERR_ARG (model unchanged) when the
 * encoding has no RoPE or the settings are invalid (beta <= alpha, alpha < 0, ...). */
dfl_status dfl_lm_set_rope_extension(dfl_lm *m, const dfl_rope_cfg *r);

/* Whether the model can process a window of T bytes: DFL_OK, or DFL_ERR_ARG with the reason
 * (learned: "T positions exceed the learned table of L positions"). */
dfl_status dfl_lm_check_length(const dfl_lm *m, int T);

/* Forward pass: ids (B, T) byte values 0..255, positions 0..T-1; logits (B, T, 256). Records on
 * the tape when the ctx records. NULL with the message on error (bad length, bad ids). */
dfl_tensor *dfl_lm_logits(dfl_ctx *ctx, dfl_lm *m, const int *ids, int B, int T);

/* Next-byte cross-entropy in nats, mean over the B*T predictions: win holds B windows of T + 1
 * bytes each (row-major); window b predicts win[b][t+1] from win[b][0..t]. Output (1). */
dfl_tensor *dfl_lm_loss(dfl_ctx *ctx, dfl_lm *m, const uint8_t *win, int B, int T);

/* Bits per byte of text[0..n) with windows of L bytes (no grad): the text is cut into
 * consecutive non-overlapping windows starting at 0, L, 2L, ... (the last one shorter); window
 * [s, s+len) predicts bytes s+1 .. s+len from the bytes before them inside the window, so every
 * byte 1..n-1 is scored exactly once, with between 1 and L bytes of context (the non-overlapping
 * protocol of Press et al. 2022). Up to max(1, batch_tokens / L) windows per forward (for shaw
 * also at most 2^22 / (H L^2), its per-layer score tensors being (B, H, L, L)).
 * *bpb = (sum of -ln p) / (n - 1) / ln 2; *scored = n - 1 (may be NULL).
 * Errors: n < 2 or L < 1 (DFL_ERR_ARG), dfl_lm_check_length, out of memory. */
dfl_status dfl_lm_eval_bpb(dfl_ctx *ctx, dfl_lm *m, const uint8_t *text, size_t n, int L,
                           int batch_tokens, double *bpb, size_t *scored);

/* Sampling settings for dfl_lm_generate. */
typedef struct {
    double temperature; /* > 0; logits are divided by it (1 = the model's distribution) */
    int top_k;          /* 0 = all 256 bytes; else only the k most likely (ties by byte value) */
    int window;         /* the model sees the last `window` bytes (>= 1); learned tables cap it */
} dfl_lm_sample_cfg;

/* Called with each new byte; return nonzero to stop early. */
typedef int (*dfl_lm_emit_fn)(uint8_t byte, void *user);

/* Autoregressive sampling of n bytes after prompt[0..np) (np may be 0: the text then starts from
 * a newline byte that is not emitted). Each step runs the model on the last min(window, length)
 * bytes (positions 0 .. len-1 inside that window, no cache) and draws the next byte from
 * softmax(logits / temperature) restricted to the top k, one uniform draw from rng per byte
 * (inverse CDF in double), so a seed gives the same text. out (n bytes) may be NULL; emit may be
 * NULL. Errors: bad settings (DFL_ERR_ARG), dfl_lm_check_length of the window. */
dfl_status dfl_lm_generate(dfl_ctx *ctx, dfl_lm *m, const uint8_t *prompt, int np, int n,
                           const dfl_lm_sample_cfg *sc, dfl_rng *rng, uint8_t *out,
                           dfl_lm_emit_fn emit, void *user);

/* Saves weights and config: model.safetensors layout with __metadata__ {"format": "difflow-lm",
 * "config": JSON of the config, "step": step, plus extra key/value pairs (extra_kv, n_extra
 * pairs, may be 0)}. Atomic (dfl_safetensors_save). */
dfl_status dfl_lm_save(const char *path, const dfl_lm *m, long step, const char *const *extra_kv,
                       int n_extra);
/* Loads a checkpoint written by dfl_lm_save. *step may be NULL. DFL_ERR_FORMAT when the file is
 * not a difflow-lm checkpoint, DFL_ERR_MISMATCH when a tensor is missing or has the wrong shape
 * (named), the errors of dfl_safetensors_open. meta_text, when non-NULL, receives a malloc'd copy
 * of the "text" metadata value (NULL if absent). */
dfl_status dfl_lm_load(const char *path, dfl_lm **out, long *step, char **meta_text);

/* Where Debian's fortunes package keeps its text files (the default corpus). */
#define DFL_FORTUNES_DIR "/usr/share/games/fortunes"

/* Reads a text corpus: the file at path, or with path NULL the default corpus, Debian's
 * `fortunes` package: every regular file in DFL_FORTUNES_DIR except *.dat and *.u8, in name
 * order, concatenated (entries stay separated by their '%' lines). *data is malloc'd.
 * Errors: DFL_ERR_IO naming the path (unreadable, missing package), DFL_ERR_FORMAT for an empty
 * text. */
dfl_status dfl_lm_corpus_load(const char *path, uint8_t **data, size_t *n);

/* The validation split: bytes [floor(0.9 n), n) are validation, [0, floor(0.9 n)) training. */
size_t dfl_lm_split(size_t n);

#ifdef __cplusplus
}
#endif
#endif
