/* difflow optim: Adam/AdamW, EMA of weights, gradient clipping, learning-rate warmup
 * (DESIGN section 3, "Optimizers"). State lives in heap tensors so it can be checkpointed. */
#ifndef DIFFLOW_OPTIM_H
#define DIFFLOW_OPTIM_H

#include "difflow/nn.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    float lr, beta1, beta2, eps, weight_decay; /* weight_decay > 0: AdamW (decoupled) */
    int warmup;                                /* linear warmup steps (0: none) */
    float clip;                                /* max global grad L2 norm (0: no clipping) */
    float ema_halflife;                        /* EMA half-life in samples (EDM); 0: no EMA */
    int batch;                                 /* samples per step, for the EMA half-life */
} dfl_adam_cfg;

typedef struct {
    dfl_adam_cfg cfg;
    dfl_params *params;
    float **m, **v;   /* first and second moments, one buffer per parameter */
    float **ema;      /* EMA copy of each parameter (NULL if no EMA) */
    long step;        /* completed steps */
} dfl_adam;

/* Adam (Kingma & Ba 2015, Algorithm 1) with bias correction; AdamW (Loshchilov & Hutter 2019)
 * when weight_decay > 0. Returns DFL_ERR_NOMEM/DFL_ERR_ARG. */
dfl_status dfl_adam_init(dfl_adam *opt, dfl_params *ps, const dfl_adam_cfg *cfg);
/* Frees the moments and EMA buffers (not the parameters); safe on a zeroed or freed optimizer. */
void dfl_adam_free(dfl_adam *opt);
/* Learning rate at step `step` (0-based): lr * min(1, (step+1)/warmup). */
float dfl_adam_lr(const dfl_adam *opt, long step);
/* Global L2 norm of all parameter gradients. */
double dfl_grad_norm(const dfl_params *ps);
/* One update from the parameters' grads: clip (if set), Adam step, EMA update.
 * Returns DFL_ERR_NUMERIC (parameters untouched) when the gradient norm is not finite.
 * *grad_norm receives the pre-clipping norm (may be NULL). */
dfl_status dfl_adam_step(dfl_adam *opt, double *grad_norm);
/* EMA decay per step for a half-life of h samples at batch b: beta = 0.5^(b/h) (EDM
 * training/training_loop.py: ema_beta = 0.5 ** (batch / ema_halflife_nimg)). */
double dfl_ema_beta(double halflife_samples, int batch);
/* Swap parameters with their EMA copies (call twice to swap back). No-op without EMA. */
void dfl_adam_swap_ema(dfl_adam *opt);

#ifdef __cplusplus
}
#endif
#endif
