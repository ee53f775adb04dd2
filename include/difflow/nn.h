/* difflow nn: parameter registry, layers and the backbones toy-mlp, fmnist-unet-s and the DiT
 * fmnist-dit-s (DESIGN sections 6 and 13). Parameter names are PyTorch module paths and layouts are
 * PyTorch's, so a checkpoint maps onto the same torch module (see bench/peers/torch_models.py). */
#ifndef DIFFLOW_NN_H
#define DIFFLOW_NN_H

#include "difflow/core.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---------------------------------------------------------------- parameters */

typedef struct {
    char *name;       /* module path, e.g. "down.0.res.1.conv1.weight" */
    dfl_tensor *t;    /* heap tensor with grad */
} dfl_param;

typedef struct {
    dfl_param *p;
    int n, cap;
} dfl_params;

/* New parameter tensor registered under `name` (printf format). NULL on failure. */
dfl_tensor *dfl_params_add(dfl_params *ps, int ndim, const int *shape, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 4, 5)))
#endif
    ;
void dfl_params_free(dfl_params *ps);
size_t dfl_params_count(const dfl_params *ps);          /* total scalars */
dfl_tensor *dfl_params_find(const dfl_params *ps, const char *name);
void dfl_params_zero_grad(dfl_params *ps);

/* ---------------------------------------------------------------- layers */

typedef struct { dfl_tensor *weight, *bias; int in, out; } dfl_linear_layer;
typedef struct { dfl_tensor *weight, *bias; int cin, cout, k; } dfl_conv_layer;
typedef struct { dfl_tensor *weight, *bias; int channels, groups; } dfl_gn_layer;

/* Register "<prefix>.weight" [out,in] and "<prefix>.bias" [out]. Init: PyTorch's default
 * (kaiming-uniform a=sqrt(5): U(-1/sqrt(in), 1/sqrt(in)) for weight and bias). */
dfl_status dfl_linear_init(dfl_linear_layer *l, dfl_params *ps, dfl_rng *rng, int in, int out, const char *prefix);
/* Conv2d weight [cout,cin,k,k], bias [cout]; PyTorch default init with fan_in = cin*k*k. */
dfl_status dfl_conv_init(dfl_conv_layer *l, dfl_params *ps, dfl_rng *rng, int cin, int cout, int k, const char *prefix);
/* GroupNorm weight (=1) and bias (=0) [channels]. */
dfl_status dfl_gn_init(dfl_gn_layer *l, dfl_params *ps, int channels, int groups, const char *prefix);

/* ---------------------------------------------------------------- backbones */

typedef enum { DFL_ARCH_MLP = 0, DFL_ARCH_UNET = 1, DFL_ARCH_DIT = 2 } dfl_arch;

/* Positional encoding of the DiT's patch tokens. */
typedef enum {
    /* 2-D axial RoPE (dfl_rope_2d, interleaved layout, whole head rotated, base rope_theta) on
     * q and k of every attention layer; nothing added to the tokens. */
    DFL_DIT_POS_ROPE2D = 0,
    /* Fixed 2-D sin-cos table added to the patch embeddings (DiT, Peebles & Xie 2023, as MAE's
     * get_2d_sincos_pos_embed): features [0, D/2) encode the column, [D/2, D) the row, each as
     * D/4 sines then D/4 cosines of pos * 10000^(-k/(D/4)), k < D/4. No RoPE. */
    DFL_DIT_POS_SINCOS = 1,
    /* No positional information (an ablation: the net is then equivariant to permutations of
     * the patches). */
    DFL_DIT_POS_NONE = 2
} dfl_dit_posenc;

/* The DiT encodings as `difflow train --posenc` and checkpoint configs spell them: "rope2d",
 * "sincos", "none"; "?" for a value outside the enum. */
const char *dfl_dit_posenc_name(dfl_dit_posenc p);
/* Parses a DiT --posenc name ("rope2d", "sincos" or "none"; exact, lower case) into *out.
 * DFL_ERR_ARG naming the value and listing the known names otherwise (*out unchanged). */
dfl_status dfl_dit_posenc_parse(const char *s, dfl_dit_posenc *out);

typedef struct dfl_net dfl_net;

/* Architecture hyper-parameters (the reference configurations of DESIGN section 13). */
typedef struct {
    dfl_arch arch;
    int dim;            /* MLP: data dimension (2) */
    int hidden;         /* MLP: width (256); DiT: token width D (192) */
    int depth;          /* MLP: hidden layers (3); DiT: transformer blocks (6) */
    int channels;       /* U-Net, DiT: image channels (1) */
    int height, width;  /* U-Net, DiT: image size (28, 28) */
    int base;           /* U-Net: base channels (32) */
    int mult[4], nlevels; /* U-Net: channel multipliers (1,2,2) */
    int nres;           /* U-Net: ResBlocks per level (2) */
    int groups;         /* U-Net: GroupNorm groups (8) */
    int temb_dim;       /* U-Net: sinusoidal dim (64); DiT: (256); MLP unused */
    float t_scale;      /* U-Net, DiT: the embedding is of t_scale * t (1000) */
    int patch;          /* DiT: patch side p (4); p divides height and width */
    int heads;          /* DiT: attention heads H (4); H divides D, D/H a multiple of 4 for RoPE */
    int mlp_ratio;      /* DiT: MLP hidden width = mlp_ratio * D (4) */
    dfl_dit_posenc posenc; /* DiT: DFL_DIT_POS_ROPE2D (default), _SINCOS or _NONE */
    double rope_theta;  /* DiT with RoPE: base b of the per-axis frequencies (100) */
} dfl_arch_cfg;

/* Reference configurations: "toy-mlp", "fmnist-unet-s" and "fmnist-dit-s" (alias "dit"):
 * DiT (Peebles & Xie 2023) on 28x28x1, patch 4 (7x7 = 49 tokens), D 192, 6 blocks, 4 heads of
 * 48, MLP ratio 4, 256-dim sinusoidal time embedding of 1000 t, 2-D RoPE with base 100
 * (4,165,456 parameters; a training step costs about one fmnist-unet-s step).
 * DFL_ERR_ARG for an unknown name. */
dfl_status dfl_arch_preset(const char *name, dfl_arch_cfg *cfg);

/* Build a network with freshly initialised parameters drawn from rng. NULL on failure. */
dfl_net *dfl_net_new(const dfl_arch_cfg *cfg, dfl_rng *rng);
void dfl_net_free(dfl_net *net);
dfl_params *dfl_net_params(dfl_net *net);
const dfl_arch_cfg *dfl_net_cfg(const dfl_net *net);

/* Forward pass F(x, t): x (N, dim) for the MLP or (N, C, H, W) for the U-Net and DiT; t (N) the
 * network's time/noise input (flow matching: t in [0,1]; EDM: c_noise). Output has x's shape.
 * Records on the tape when grad is enabled. NULL on failure (message set). */
dfl_tensor *dfl_net_forward(dfl_ctx *ctx, dfl_net *net, dfl_tensor *x, dfl_tensor *t);

/* Sinusoidal embedding of t_scale*t (Vaswani et al. 2017 sec. 3.5; DDPM): out (N, dim) with
 * out[n, k] = sin(t_scale t_n f_k), out[n, dim/2 + k] = cos(t_scale t_n f_k),
 * f_k = exp(-ln(10000) k / (dim/2)). Constant op (no gradient to t). */
dfl_tensor *dfl_sinusoidal_embedding(dfl_ctx *ctx, dfl_tensor *t, int dim, float t_scale);

/* DiT patchify (Peebles & Xie 2023, sec. 3.2; ViT, Dosovitskiy et al. 2021, Eq. 1): x (N, C, H, W)
 * -> (N, T, C p p) with T = (H/p)(W/p) tokens in row-major grid order, token t = gi (W/p) + gj,
 * feature f = c p p + i p + j holding x[n, c, gi p + i, gj p + j] (the flattening of a Conv2d
 * weight [D, C, p, p], so a linear on the result is the kernel = stride = p convolution).
 * A permutation: its backward is dfl_unpatchify of the cotangent. DFL_ERR_SHAPE if x is not 4-D
 * or p < 1 does not divide H and W. */
dfl_tensor *dfl_patchify(dfl_ctx *ctx, dfl_tensor *x, int p);
/* Inverse of dfl_patchify: x (N, T, C p p) with T = (H/p)(W/p) -> (N, C, H, W), the same token
 * and feature order. DFL_ERR_SHAPE when the shapes disagree (the message names them). */
dfl_tensor *dfl_unpatchify(dfl_ctx *ctx, dfl_tensor *x, int C, int H, int W, int p);

#ifdef __cplusplus
}
#endif
#endif
