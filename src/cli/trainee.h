/* The one training loop of `difflow train` (src/cli/train.c) and what it needs from a model, so
 * that diffusion / flow-matching models and normalizing flows share it: batches, loss, optimizer,
 * EMA, checkpoints, resume, SIGINT save, the non-finite stop, log.csv and end-of-run samples. */
#ifndef DIFFLOW_CLI_TRAINEE_H
#define DIFFLOW_CLI_TRAINEE_H

#include "cli.h"

typedef struct cli_trainee cli_trainee;
struct cli_trainee {
    void *self;
    char desc[200];  /* what is trained, for the start line: "toy-mlp with fm (pred velocity)" */
    int dequantize;  /* images: batches are x = v + u in [0, 256), u ~ U[0,1) from the run's rng
                        (flows: their log-likelihood is of dequantized data), else v/127.5 - 1 */
    /* The trainable parameters (what Adam updates, what train_state.safetensors holds). */
    dfl_params *(*params)(cli_trainee *t);
    /* Scalar training loss of batch x (ndim, shape), recorded on ctx's tape; xe: the paired noise
     * of reflow or NULL. NULL with the message set on failure (e.g. a flow layer's non-finite
     * log-det, named). Also called with grad disabled before every checkpoint, on the raw and
     * the EMA weights with an rng of its own, to check that the weights about to be saved still
     * give a finite loss: it must not modify x or keep state between calls. */
    dfl_tensor *(*loss)(cli_trainee *t, dfl_ctx *ctx, float *x, const float *xe, int ndim, const int *shape,
                        dfl_rng *rng);
    /* Data-dependent initialisation on the first batch of a new run (never on --resume), or NULL. */
    dfl_status (*data_init)(cli_trainee *t, dfl_ctx *ctx, float *x, int ndim, const int *shape);
    /* model.safetensors (called with the EMA weights swapped in) and config.json's content. */
    dfl_status (*save)(cli_trainee *t, const char *path, const dfl_model_info *info);
    char *(*config_json)(cli_trainee *t, const dfl_model_info *info);
    /* n end-of-run samples from seed into x (n, shape[1..]); `what` receives "heun, 35 NFE". */
    dfl_status (*sample)(cli_trainee *t, dfl_ctx *ctx, uint64_t seed, int n, int ndim, const int *shape, float *x,
                         char *what, size_t cap);
    void (*free)(cli_trainee *t);
};

#endif
