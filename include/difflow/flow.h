/* difflow flow: normalizing flows (DESIGN section 5; reference/flows.md) — NICE (Dinh, Krueger,
 * Bengio 2014, arXiv 1410.8516), RealNVP (Dinh, Sohl-Dickstein, Bengio 2016, arXiv 1605.08803) and
 * Glow (Kingma & Dhariwal 2018, arXiv 1807.03039).
 *
 * Conventions
 *   - Tensors float32, PyTorch order: vectors (N, D); images (N, C, H, W).
 *   - Direction: forward = data -> latent ("f"); log p(x) = log p_base(f(x)) + sum of the per-layer
 *     log-dets (nats, per sample). The inverse of a bijection returns its own log-det, which is
 *     minus the forward log-det at the inverse point (reference/flows.md 1.1).
 *   - Image data given to a flow are the dequantized pixels x = v + u in [0, 2^k)^D (v the k-bit
 *     value, u ~ U[0,1)^D: dfl_flow_dequantize8), bin width 1. The first bijection of an image
 *     flow (cfg.dequant_bits = k) is the affine dequantization map y = -1 + 2 x / 2^k onto
 *     [-1, 1) with log-det D ln(2 / 2^k) (reference/flows.md 1.2), so log_prob is a density over
 *     [0, 2^k)^D and bits/dim = -log p(x) / (D ln 2) with no outside constant (a flow uniform on
 *     the cube gives exactly k). -E_u log p(v + u) >= -log P(v) (variational dequantization
 *     bound, uniform q(u) of density 1). The logit preprocessing (RealNVP, Glow) follows it and
 *     its log-det is part of log_prob too.
 *   - Layer and parameter names are module paths: "realnvp.0.2.coupling", "glow.1.3.invconv",
 *     "glow.1.3.invconv.log_s" (levels/scales and steps counted from 0).
 *   - Squeeze (RealNVP Sec. 3.6, Glow): (C, H, W) -> (4C, H/2, W/2) with input (c, 2i+dy, 2j+dx)
 *     sent to output channel c*4 + 2*dy + dx at (i, j) (Glow's tfops.squeeze2d mapping).
 *   - Factor-out (RealNVP multi-scale, Glow split2d): the layer keeps the first ceil(C/2) channels
 *     z1 active and standardises the other channels z2 under a learned conditional prior,
 *     z2' = (z2 - mu(z1)) exp(-logsd(z1)) with (mu, logsd) from a zero-initialised 3x3 conv of z1;
 *     its log-det -sum logsd plus the standard-normal log-density of z2' is log p(z2 | z1).
 *     logsd is soft-bounded, c tanh(raw / c) with c = cfg.split_clamp (preset 5), so that an
 *     under-trained flow's inverse cannot overflow there (reference/flows.md pitfall 7).
 */
#ifndef DIFFLOW_FLOW_H
#define DIFFLOW_FLOW_H

#include "difflow/core.h"
#include "difflow/gen.h"
#include "difflow/nn.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Model family. */
typedef enum { DFL_FLOW_NICE = 0, DFL_FLOW_REALNVP = 1, DFL_FLOW_GLOW = 2 } dfl_flow_kind;
/* Base (latent) distribution: standard normal, log p(z) = -(ln 2 pi + z^2)/2 per dimension; or
 * standard logistic (NICE Sec. 3.4), log p(z) = -softplus(z) - softplus(-z) per dimension. */
typedef enum { DFL_BASE_NORMAL = 0, DFL_BASE_LOGISTIC = 1 } dfl_base_kind;

/* Hyper-parameters of a flow (dfl_flow_preset gives the defaults). */
typedef struct {
    dfl_flow_kind kind;
    int channels, height, width; /* images: C, H, W; vector data: channels = D, height = width = 0 */
    dfl_base_kind base;          /* NICE: logistic; RealNVP/Glow: normal */
    /* NICE */
    int couplings;               /* additive couplings (4); also RealNVP's coupling count for vectors (8) */
    int hidden, depth;           /* coupling MLP: depth hidden layers of `hidden` ReLU units
                                    (images 1000 x 5 as in the NICE paper; 2-D small). RealNVP and
                                    Glow on vectors: depth hidden layers of `width` units */
    /* RealNVP / Glow */
    int scales;                  /* RealNVP: number of scales (multi-scale architecture) */
    int blocks;                  /* RealNVP: residual blocks per coupling network */
    int levels, steps;           /* Glow: L levels of K steps */
    int net_width;               /* RealNVP feature maps / Glow hidden width (also MLP width for 2-D);
                                    not called width, which is the image width above */
    int additive;                /* Glow: 1 additive coupling, 0 affine */
    int lu;                      /* Glow: 1 LU-decomposed 1x1 conv, 0 plain */
    float logit_alpha;           /* RealNVP / Glow images: logit preprocessing alpha (preset 0.05);
                                    0 = none. NICE builds no logit layer (its preset stores 0) */
    int dequant_bits;            /* images: k of the k-bit data; the first layer maps x in [0, 2^k)
                                    to [-1, 1) (dfl_bij_dequant_new). Preset 8 for images, 0 (no
                                    layer, data taken as given) for vectors; 0..16 */
    int learn_top;               /* Glow: 1 = the top (final) latent has a learned diagonal Gaussian
                                    prior N(mean, exp(2 logs)) (Glow's learntop; dfl_bij_prior_new).
                                    Preset 1 for images, 0 for vectors; other kinds must be 0 */
    float split_clamp;           /* RealNVP / Glow images: soft bound c of every split prior's log-sd,
                                    logsd = c tanh(raw / c) (dfl_bij_split_new). Preset
                                    DFL_SPLIT_LOGSD_BOUND; 0 = unbounded, the meaning of checkpoints
                                    written before the bound (no "split_clamp" in their config).
                                    In [0, 1000] */
} dfl_flow_cfg;

/* Preset soft bound of a split prior's log-sd: |logsd| < 5, a scale in (e^-5, e^5) = (0.0067, 148). */
#define DFL_SPLIT_LOGSD_BOUND 5.0f

typedef struct dfl_flow dfl_flow;
typedef struct dfl_bijection dfl_bijection;

/* "nice", "realnvp", "glow" -> kind. DFL_ERR_ARG naming the string otherwise. */
dfl_status dfl_flow_kind_parse(const char *name, dfl_flow_kind *k);
/* "nice", "realnvp", "glow" ("?" for an unknown value). */
const char *dfl_flow_kind_name(dfl_flow_kind k);

/* Defaults of a kind for data of shape (channels, height, width) (height = width = 0: vectors).
 * Every image preset starts with the dequantization layer (dequant_bits 8: data x = v + u in
 * [0, 256)); vectors have none (dequant_bits 0). Image RealNVP and Glow bound their split priors'
 * log-sd softly by split_clamp = DFL_SPLIT_LOGSD_BOUND (5); every other preset stores 0.
 *   nice     vectors: 8 additive couplings, MLP 3 x 128 ReLU, scaling layer, logistic base.
 *            images:  4 additive couplings, MLP 5 x 1000 ReLU (NICE paper, MNIST), scaling layer,
 *                     logistic base, no logit preprocessing (the couplings see [-1, 1) directly).
 *   realnvp  vectors: 8 affine couplings, alternating halves, MLP 2 x 128 (net_width x depth), normal base.
 *            images:  logit alpha 0.05, 2 scales, ResNet coupling nets of 2 blocks, net_width 16
 *                     (doubling per scale), normal base (1x28x28: 214,799 parameters; scale 0 =
 *                     3 checkerboard couplings at 28x28x1, squeeze, 3 channel couplings at
 *                     14x14x4, split; scale 1 = 4 checkerboard couplings at 14x14x2).
 *   glow     vectors: 8 steps (ActNorm, LU 1x1 "conv" = DxD linear, affine coupling MLP 2 x 64),
 *                     no learned top prior.
 *            images:  logit alpha 0.05, L = 2 levels of K = 8 steps, net_width 128, LU, affine,
 *                     learned top prior (1x28x28: squeeze to 14x14x4, 8 steps, split, squeeze to
 *                     7x7x8, 8 steps, top prior on 7x7x8; 434,652 parameters).
 *            (NICE 1x28x28: 19,158,352 parameters.)
 * DFL_ERR_ARG for an unknown kind or bad shape. */
dfl_status dfl_flow_preset(dfl_flow_kind k, int channels, int height, int width, dfl_flow_cfg *cfg);

/* Uniform dequantization for a flow: x[i] = v[i] + u, u ~ U[0,1) from rng (one dfl_rng_uniform_d
 * per value, the same stream as dfl_dequantize8, so y = -1 + 2 x / 256 is its [-1, 1) value),
 * x in [0, 256): the data space of an 8-bit image flow (cfg.dequant_bits = 8). */
void dfl_flow_dequantize8(const uint8_t *v, size_t count, dfl_rng *rng, double *x);

/* Build a flow with fresh parameters drawn from rng. NULL + message on failure, naming the layer
 * (e.g. "glow.2.squeeze: height 7 is odd, cannot squeeze 2x2"). */
dfl_flow *dfl_flow_new(const dfl_flow_cfg *cfg, dfl_rng *rng);
/* Frees the flow, its layers, parameters and buffers (NULL is a no-op). */
void dfl_flow_free(dfl_flow *f);
/* Trainable parameters (what Adam updates); names are module paths. */
dfl_params *dfl_flow_params(dfl_flow *f);
/* Non-trainable state that a checkpoint must keep: LU permutation ("<layer>.perm", float indices)
 * and signs ("<layer>.sign"), and a 1-element tensor "actnorm_initialized" (1.0 after
 * dfl_flow_data_init; read by dfl_flow_initialized; present in every flow). Registered with
 * dfl_params_add (their grad is unused). Names distinct from the parameters'. */
dfl_params *dfl_flow_buffers(dfl_flow *f);
/* The configuration the flow was built from (owned by the flow). */
const dfl_flow_cfg *dfl_flow_get_cfg(const dfl_flow *f);
/* D = C*H*W for images, channels for vectors. */
int dfl_flow_dim(const dfl_flow *f);

/* Data-dependent initialisation (Glow ActNorm, tfops.py actnorm: b = -mean, s = 1/(std + 1e-6)
 * per channel, on the layer's input given the preceding layers), run once on the first training
 * batch x (data space, (N, D) or (N, C, H, W)). No-op (DFL_OK) if already initialised. Sets the
 * "actnorm_initialized" buffer to 1. Errors: shape (DFL_ERR_SHAPE), numeric (DFL_ERR_NUMERIC). */
dfl_status dfl_flow_data_init(dfl_ctx *ctx, dfl_flow *f, dfl_tensor *x);
/* 1 once dfl_flow_data_init ran (or a checkpoint with the flag set was loaded), else 0. */
int dfl_flow_initialized(const dfl_flow *f);

/* log p(x) in nats per sample: x (N, D) or (N, C, H, W) -> (N); for an image flow with
 * dequant_bits k a density over x in [0, 2^k)^D, so bits/dim = -log p / (D ln 2) (flows.md 1.2).
 * Differentiable (records on the tape when grad is enabled). NULL + message on failure: a non-finite log-det or latent fails with
 * DFL_ERR_NUMERIC naming the layer ("glow.1.3.invconv: log-det is nan"), a singular or
 * near-singular 1x1 conv likewise; DFL_ERR_SHAPE for a wrong input shape. */
dfl_tensor *dfl_flow_log_prob(dfl_ctx *ctx, dfl_flow *f, dfl_tensor *x);

/* n samples at temperature T (z ~ base scaled by T; factored-out priors at the same T),
 * written to x (n * D floats, row-major, data space: (n, D) or (n, C, H, W); images in
 * [0, 2^k) when dequant_bits = k, continuous: quantize with floor to get pixel values). Draws only from
 * rng, one base value per latent entry in order (logistic: from uniforms, redrawing an exact 0).
 * ctx is unused (may be NULL): the inverse passes run without gradients in a private context,
 * 256 samples at a time, so the caller's ctx, its tape and its grad mode are left untouched.
 * T = 0 gives f^-1(0).
 * Errors: DFL_ERR_ARG (f, rng or x NULL, n < 0, T negative or not finite); DFL_ERR_NUMERIC with a
 * message naming the layer when the inverse pass fails (a non-finite value, a singular or
 * near-singular 1x1 conv); DFL_ERR_NOMEM when the private context or the latent cannot be
 * allocated. On an error x may hold the samples of the chunks done before. */
dfl_status dfl_flow_sample(dfl_ctx *ctx, dfl_flow *f, int n, double temperature, dfl_rng *rng, float *x);

/* Whole-flow transform to the flattened latent: x (N, D) or (N, C, H, W) -> z (N, D), the
 * factored-out parts z2' in layer order followed by the final active tensor, each flattened in
 * (C, H, W) order; *logdet (N) = sum of every layer's log-det (may be NULL). log p(x) =
 * base log-density of z summed + logdet. Differentiable. NULL + message on failure. */
dfl_tensor *dfl_flow_forward(dfl_ctx *ctx, dfl_flow *f, dfl_tensor *x, dfl_tensor **logdet);
/* Inverse of dfl_flow_forward: z (N, D) -> x in data shape; *logdet (N) = inverse log-det
 * (= -forward log-det at x). Differentiable. */
dfl_tensor *dfl_flow_inverse(dfl_ctx *ctx, dfl_flow *f, dfl_tensor *z, dfl_tensor **logdet);

/* Checkpoints (src/flow/checkpoint.c, on top of dfl_flow_params,
 * dfl_flow_buffers and dfl_flow_get_cfg): safetensors with the parameters AND every non-trainable
 * buffer (LU permutation, signs, the ActNorm "initialised" flag) and __metadata__ "format" =
 * "difflow", "method" = kind name, "config" = JSON with "method" = kind name and every cfg field,
 * plus what dfl_model_info holds (arch, data, step, seed). Atomic write (dfl_safetensors_save).
 * Load rebuilds the flow from the config and checks every tensor (DFL_ERR_MISMATCH naming it). */
dfl_status dfl_flow_save(const char *path, const dfl_flow *f, const dfl_model_info *info);
/* Builds *f (the caller frees it with dfl_flow_free) from the checkpoint's config and loads every
 * parameter and buffer; info (may be NULL) receives the metadata. Errors as described above. */
dfl_status dfl_flow_load(const char *path, dfl_flow **f, dfl_model_info *info);
/* 1 if the checkpoint at path is a flow checkpoint (method nice/realnvp/glow), 0 otherwise
 * (including unreadable: the caller's normal load reports the error). */
int dfl_flow_is_checkpoint(const char *path);
/* The config JSON of a flow checkpoint, as dfl_flow_save stores it in __metadata__["config"]
 * (and difflow train writes to config.json), one line: "format" = "difflow", "format_version",
 * "arch", "method" = kind name, "base" ("normal" / "logistic"), every integer dfl_flow_cfg field
 * under its own name ("steps" is Glow's K), "logit_alpha", "data", "data_transform", "step" (the
 * training step) and "seed" (a decimal string), from f's config and info. f and info must not
 * be NULL. Returns a malloc'd NUL-terminated string the caller frees; NULL (no message) if the
 * JSON cannot be allocated. Source: src/flow/checkpoint.c. */
char *dfl_flow_config_json(const dfl_flow *f, const dfl_model_info *info);

/* ---------------------------------------------------------------- bijections */

/* forward: x -> z, *logdet = (N) tensor (or NULL meaning 0); inverse: z -> x with *logdet the
 * inverse's log-det (= -forward logdet at the inverse point). Both differentiable. x, z have the
 * layer's input shape (N, D) or (N, C, H, W) (a squeeze's inverse takes its output shape).
 * NULL + message naming the layer on failure. */
dfl_tensor *dfl_bij_forward(dfl_ctx *ctx, dfl_bijection *b, dfl_tensor *x, dfl_tensor **logdet);
/* See dfl_bij_forward: z (the layer's output shape) -> x, *logdet the inverse's log-det (N). */
dfl_tensor *dfl_bij_inverse(dfl_ctx *ctx, dfl_bijection *b, dfl_tensor *z, dfl_tensor **logdet);
/* The layer's module path ("glow.0.3.invconv"). */
const char *dfl_bij_name(const dfl_bijection *b);
/* Number of layers of a flow. */
int dfl_flow_nbij(const dfl_flow *f);
/* Layer i (0 <= i < dfl_flow_nbij) in forward order (data -> latent), owned by the flow; NULL
 * out of range. After a split layer the next layers take only its first ceil(C/2) channels. */
dfl_bijection *dfl_flow_bij(dfl_flow *f, int i);

/* Constructors of individual bijections. Each registers its parameters under "<name>.<param>"
 * in ps and its buffers in bufs (both kept by the caller, who frees them after the layer), draws
 * initial values from rng, and returns NULL + message on failure. Shapes: C, H, W of one sample;
 * vectors are given as (D, 0, 0). Free with dfl_bij_free. */

/* Coupling partition (which part conditions the other). */
typedef enum {
    DFL_MASK_VECTOR = 0,      /* vectors: conditioner = even (parity 0) or odd (parity 1) indices
                                 (NICE Sec. 5.1 partition) */
    DFL_MASK_CHECKERBOARD = 1,/* images: b = 1 (conditioner) where (row + col + parity) is odd
                                 (RealNVP Sec. 3.4) */
    DFL_MASK_CHANNEL = 2      /* images: conditioner = first ceil(C/2) channels (parity 0) or the
                                 remaining channels (parity 1) */
} dfl_mask_kind;

/* Lower bound added to Glow's sigmoid coupling scale (1e-3, as nflows). */
#define DFL_GLOW_SCALE_FLOOR 1e-3f

/* Scale map of a coupling. */
typedef enum {
    DFL_COUPLING_ADDITIVE = 0, /* y_b = x_b + t(x_a); log-det 0 (NICE Eq. 5) */
    DFL_COUPLING_TANH = 1,     /* y_b = x_b exp(s) + t, s = scale * tanh(h), scale a learned
                                  per-feature vector (RealNVP Eq. 7-9 and Sec. 4.1); log-det sum s */
    DFL_COUPLING_SIGMOID = 2   /* y_b = (x_b + t) * (sigmoid(h + 2) + DFL_GLOW_SCALE_FLOOR) (Glow
                                  model.py, with nflows' floor against inf samples: reference
                                  flows.md pitfall 7); log-det sum ln(sigmoid(h + 2) + floor) */
} dfl_coupling_kind;

/* Conditioner network of a coupling. The conv nets' last layer is zero-initialised, so every
 * image coupling starts as the identity (Glow Sec. 3.3). The MLP's last layer gets PyTorch's
 * default init (additive couplings) or 0.1 of it (affine) instead: on 2-D data symmetric in x_b
 * given x_a (8 gaussians) the identity is a stationary point of the likelihood that a
 * zero-initialised additive (NICE) coupling never leaves. */
typedef enum {
    DFL_NET_MLP = 0,    /* vectors: depth x (Linear(hidden) + ReLU), Linear out */
    DFL_NET_RESNET = 1, /* images: conv3x3(width), `depth` residual blocks h += conv3(relu(conv3(relu h))),
                           ReLU, conv3x3 out (RealNVP Sec. 4.1, without batch/weight norm) */
    DFL_NET_GLOW = 2    /* images: conv3x3(width) ReLU conv1x1(width) ReLU conv3x3 out (Glow) */
} dfl_net_kind;

/* Coupling layer. net_depth: MLP hidden layers or ResNet blocks (unused by GLOW). */
dfl_bijection *dfl_bij_coupling_new(const char *name, int C, int H, int W, dfl_mask_kind mask,
                                    int parity, dfl_coupling_kind kind, dfl_net_kind net,
                                    int hidden, int net_depth, dfl_params *ps, dfl_rng *rng);
/* NICE diagonal scaling layer (NICE Sec. 3.3): y = exp(s) * x elementwise over the C*H*W
 * features, s (C*H*W) "<name>.log_scale" initialised 0; log-det sum s. */
dfl_bijection *dfl_bij_scaling_new(const char *name, int C, int H, int W, dfl_params *ps);
/* Squeeze (C, H, W) -> (4C, H/2, W/2), mapping in the file comment; log-det 0. Fails naming the
 * layer when H or W is odd. */
dfl_bijection *dfl_bij_squeeze_new(const char *name, int C, int H, int W);
/* ActNorm (Glow Sec. 3.1): y = (x + b) exp(logs) per channel, b "<name>.bias" and logs
 * "<name>.logs" (shape (1, C, 1, 1) for images, (1, D) for vectors; init 0); log-det
 * H W sum logs. Data-dependent init through dfl_flow_data_init / dfl_bij_actnorm_init. */
dfl_bijection *dfl_bij_actnorm_new(const char *name, int C, int H, int W, dfl_params *ps);
/* Sets b = -mean_c, logs = -ln(std_c + 1e-6) from x (the layer's input) per channel (biased
 * variance over batch and pixels; Glow Sec. 3.1). x (N, C, H, W) or (N, D), the layer's input
 * shape. Errors: DFL_ERR_ARG if b is NULL or not an ActNorm; DFL_ERR_SHAPE if x is NULL (no
 * message) or not (N, C, H, W) / (N, D) of the layer (message naming the layer); DFL_ERR_NUMERIC
 * naming the layer if a channel's mean or variance is not finite (the channels before it are
 * already set). */
dfl_status dfl_bij_actnorm_init(dfl_bijection *b, const dfl_tensor *x);
/* Invertible 1x1 convolution (Glow Sec. 3.2) over C channels (vectors: a DxD linear map).
 * lu = 0: W "<name>.weight" (C, C), a random orthogonal matrix (QR of a Gaussian drawn from
 *   rng); log-det H W ln|det W| with the determinant and inverse computed in float64.
 * lu = 1: W = P L (U + diag(sign * exp(log_s))) with P ("<name>.perm" buffer) and sign
 *   ("<name>.sign" buffer) fixed, L "<name>.lower" (unit lower, strict part trained), U
 *   "<name>.upper" (strictly upper) and log_s "<name>.log_s" trained, all from the LU
 *   factorisation of the same random orthogonal matrix; log-det H W sum log_s. The forward map
 *   applies the triangular factor B = U + diag(.) and then P L as two float32 1x1 convs (their
 *   product is never rounded to float32, whose determinant drifts from prod exp(log_s) when W is
 *   near-singular); the inverse applies (P L)^-1 then B^-1, both inverted in float64
 *   (reference/flows.md pitfall 8). */
dfl_bijection *dfl_bij_invconv_new(const char *name, int C, int H, int W, int lu, dfl_params *ps,
                                   dfl_params *bufs, dfl_rng *rng);
/* The current weight of an invertible 1x1 conv into W, which must hold C*C doubles: row-major,
 * W[o * C + i] = weight of input channel i in output channel o. For lu = 1 it is composed in
 * float64 from the float32 factors, W = P L (U + diag(sign exp(log_s))): the map the layer applies
 * (as the two float32 factors, never as one rounded product), so ln|det W| = sum log_s up to
 * float64 rounding at any scale (reference/flows.md pitfall 8). No allocation.
 * Errors: DFL_ERR_ARG (message) if b or W is NULL or b is not an invertible 1x1 conv;
 * DFL_ERR_FORMAT (message naming the layer) if the LU permutation/sign buffers are invalid (a
 * corrupt checkpoint). W is unchanged on an error. */
dfl_status dfl_bij_invconv_weight(const dfl_bijection *b, double *W);
/* Logit preprocessing of data in [-1, 1) (RealNVP Sec. 4.1, symmetric form of FFJORD):
 * s = alpha + (1 - 2 alpha)(y + 1)/2, z = ln s - ln(1 - s); log-det per dimension
 * ln((1 - 2 alpha)/2) - ln s - ln(1 - s). No parameters. Returns NULL + message when alpha is
 * not in [0, 0.5) (DFL_ERR_ARG, naming the layer) or out of memory (DFL_ERR_NOMEM). */
dfl_bijection *dfl_bij_logit_new(const char *name, int C, int H, int W, float alpha);
/* Dequantization map of k-bit data (reference/flows.md 1.2): y = -1 + 2 x / 2^k, x in
 * [0, 2^k) -> y in [-1, 1), elementwise over the C*H*W (or D) features; no parameters; log-det
 * D ln(2 / 2^k) nats per sample (D = C*H*W), e.g. -784 ln 128 = -3803.98 for 1x28x28, k = 8.
 * Inverse x = 2^(k-1) (y + 1). NULL + message (DFL_ERR_ARG naming the layer) unless 1 <= bits <= 16;
 * DFL_ERR_NOMEM when out of memory. */
dfl_bijection *dfl_bij_dequant_new(const char *name, int C, int H, int W, int bits);
/* Learned diagonal Gaussian prior of the top latent (Glow's learntop, openai/glow model.py
 * prior(): N(mean, exp(logs)^2)) written as a standardising bijection in front of the standard
 * normal base: z' = (z - mean) exp(-logs), mean "<name>.mean" and logs "<name>.logs" of shape
 * (1, C, H, W) (vectors (1, D)), zero-initialised (the prior starts as N(0, I)); log-det
 * -sum logs (nats per sample), so base(z') + log-det = log N(z; mean, exp(2 logs)). Sampling at
 * temperature T gives z = mean + exp(logs) T eps, as Glow. NULL + message when the parameters
 * cannot be registered in ps (dfl_params_add's error) or out of memory (DFL_ERR_NOMEM). */
dfl_bijection *dfl_bij_prior_new(const char *name, int C, int H, int W, dfl_params *ps);
/* Factor-out with a learned conditional prior (Glow split2d): output has the input's shape,
 * channels [0, c1) unchanged (c1 = ceil(C/2)), channels [c1, C) replaced by
 * z2' = (z2 - mu) exp(-logsd), (mu, raw) = zero-init conv3x3 of z1 ("<name>.conv.weight",
 * "<name>.conv.bias"; first C - c1 output channels mu, next raw) and logsd = clamp tanh(raw /
 * clamp) for clamp > 0 (a soft bound |logsd| < clamp, FrEIA-style soft clamp; the same map in
 * both directions, so the log-det is exact), logsd = raw for clamp = 0 (Glow's split2d); log-det
 * -sum logsd. The inverse z2 = z2' exp(logsd) + mu then stays finite for any finite z1.
 * Returns NULL + message for vectors or C < 2, or clamp outside [0, 1000] (DFL_ERR_ARG, naming
 * the layer), or when the layer or its parameters cannot be allocated / registered in ps
 * (dfl_params_add's error). */
dfl_bijection *dfl_bij_split_new(const char *name, int C, int H, int W, float clamp, dfl_params *ps);
/* Frees a layer made by a dfl_bij_*_new constructor (not its parameters: they belong to ps). */
void dfl_bij_free(dfl_bijection *b);

/* Base log-density of the latent in nats, summed over the D = C*H*W (or D) dimensions of each
 * sample: z (N, ...) -> (N), one log p_base(z_n) per sample. Normal: -(D ln 2 pi + |z|^2)/2;
 * logistic (NICE Sec. 3.4): -sum (softplus(z) + softplus(-z)). Differentiable. NULL for a NULL ctx
 * or z, or when an op fails (its message). */
dfl_tensor *dfl_base_log_prob(dfl_ctx *ctx, dfl_base_kind base, dfl_tensor *z);

#ifdef __cplusplus
}
#endif
#endif
