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
/* F(x, t): x (N, C, H, W) (shape checked by the caller), t (N); output (N, C, H, W). */
dfl_tensor *dfl_dit_forward(dfl_ctx *ctx, dfl_dit *d, dfl_tensor *x, dfl_tensor *t);

#endif
