/* DiT backbone internals (src/nn/dit.c), called by the dispatch in src/nn/net.c. */
#ifndef DFL_NN_DIT_H
#define DFL_NN_DIT_H

#include "difflow/nn.h"

typedef struct dfl_dit dfl_dit;

/* Fills the fmnist-dit-s configuration into c (zeroed by the caller, arch set here). */
void dfl_dit_preset(dfl_arch_cfg *c);
/* Checks a DiT configuration; DFL_ERR_ARG naming the bad field. */
dfl_status dfl_dit_validate(const dfl_arch_cfg *c);
/* Registers the DiT parameters into ps (DiT's PyTorch module paths) and initialises them as
 * DiT's initialize_weights (xavier-uniform linears with zero bias, N(0, 0.02) time MLP,
 * zero adaLN modulations and zero final linear). NULL on failure. */
dfl_dit *dfl_dit_new(const dfl_arch_cfg *c, dfl_params *ps, dfl_rng *rng);
void dfl_dit_free(dfl_dit *d);
/* DiT's fixed 2-D sin-cos position table (Peebles & Xie 2023 sec. 3.2, "standard ViT frequency-based
 * positional embeddings"; the code is MAE's get_2d_sincos_pos_embed, He et al. 2022): pe (T, D),
 * T = gh gw tokens in row-major grid order (token t at row t / gw, column t % gw). Features
 * [0, D/2) encode the column, [D/2, D) the row, each half as D/4 sines then D/4 cosines:
 * pe[t, k] = sin(col w_k), pe[t, D/4 + k] = cos(col w_k), pe[t, D/2 + k] = sin(row w_k),
 * pe[t, 3D/4 + k] = cos(row w_k), w_k = 10000^(-k/(D/4)), k < D/4. D a multiple of 4 (checked
 * by dfl_dit_validate). Computed in double. */
void dfl_dit_sincos_table(float *pe, int gh, int gw, int D);
/* F(x, t): x (N, C, H, W) (shape checked by the caller), t (N); output (N, C, H, W). */
dfl_tensor *dfl_dit_forward(dfl_ctx *ctx, dfl_dit *d, dfl_tensor *x, dfl_tensor *t);

#endif
