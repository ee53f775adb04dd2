/* Normalizing flows on the command line (src/cli/flows.c): flags, the flow trainee, sample, info. */
#ifndef DIFFLOW_CLI_FLOWS_H
#define DIFFLOW_CLI_FLOWS_H

#include "cli.h"
#include "difflow/flow.h"

struct cli_trainee;

/* Flow architecture flags of difflow train; -1 / NULL = the kind's preset (dfl_flow_preset). */
typedef struct {
    int couplings, hidden, depth, width, scales, blocks, levels, steps_per_level, learn_top;
    const char *coupling, *invconv;
    double logit_alpha;
} cli_flow_flags;

/* The arg_spec rows of those flags (inside a spec table). */
#define CLI_FLOW_FLAG_SPECS(ff)                                                                                       \
    {"--couplings", NULL, ARG_INT, &(ff).couplings, "N", "nice, realnvp 2-D: coupling layers (default: by method)", 0}, \
    {"--hidden", NULL, ARG_INT, &(ff).hidden, "N", "nice: units per hidden layer (default: 1000 images, 128 2-D)", 0},  \
    {"--depth", NULL, ARG_INT, &(ff).depth, "N", "nice, realnvp/glow 2-D: hidden layers per coupling MLP (default: by method)", 0}, \
    {"--width", NULL, ARG_INT, &(ff).width, "N", "realnvp, glow: feature maps / hidden width (default: by method)", 0}, \
    {"--scales", NULL, ARG_INT, &(ff).scales, "N", "realnvp images: scales of the multi-scale flow (default 2)", 0},    \
    {"--blocks", NULL, ARG_INT, &(ff).blocks, "N", "realnvp images: residual blocks per coupling (default 2)", 0},      \
    {"--levels", NULL, ARG_INT, &(ff).levels, "L", "glow images: levels (default 2)", 0},                              \
    {"--steps-per-level", NULL, ARG_INT, &(ff).steps_per_level, "K", "glow: steps per level (default 8)", 0},           \
    {"--coupling", NULL, ARG_STR, &(ff).coupling, "KIND", "glow: affine or additive (default affine)", 0},             \
    {"--invconv", NULL, ARG_STR, &(ff).invconv, "KIND", "glow: 1x1 convolution lu or plain (default lu)", 0},          \
    {"--logit-alpha", NULL, ARG_FLOAT, &(ff).logit_alpha, "A", "realnvp, glow images: logit preprocessing alpha, 0 none (default 0.05)", 0}, \
    {"--learn-top", NULL, ARG_INT, &(ff).learn_top, "0|1", "glow: learned Gaussian prior of the top latent (default 1 images, 0 2-D)", 0}

void cli_flow_flags_default(cli_flow_flags *ff);
/* 1 if method is a normalizing flow kind (nice, realnvp, glow); cnf is not (it is flow matching). */
int cli_flow_method(const char *method);
/* 1 if any flow flag was given; the one-line refusal for a method that takes none. */
int cli_flow_flags_seen(arg_spec *specs);
const char *cli_flow_flags_refusal(arg_spec *specs, const char *method);
/* The flow of `method` for data (C, H, W) (vectors: (D, 0, 0)) from the preset and the flags given;
 * refuses a flag the (kind, data) does not use, a value out of range, and a layout the data cannot
 * take (the library's message naming the layer), by building it once. DFL_ERR_ARG + message (an
 * invalid command line: exit status 2), or DFL_ERR_NOMEM when building it ran out of memory. */
dfl_status cli_flow_cfg_from_flags(const char *method, const cli_flow_flags *ff, arg_spec *specs, const char *data,
                                   int C, int H, int W, dfl_flow_cfg *cfg);
/* Default --steps, --batch, --lr of a flow (those not given). */
void cli_flow_train_defaults(const char *method, int images, long *steps, int *batch, double *lr, int steps_seen,
                             int batch_seen, int lr_seen);
/* One line: "realnvp: 8 affine couplings, MLP 2 x 128, normal base". */
void cli_flow_describe(const dfl_flow_cfg *c, char *buf, size_t cap);
/* The flow trainee: a new flow from cfg (parameters from seed), or on --resume the checkpoint's,
 * which must have the same kind, data and (when flow flags were given) the same cfg; its info goes
 * to *ci. 0, or 1 after printing the error. */
int cli_flow_trainee_open(struct cli_trainee *t, const dfl_flow_cfg *cfg, int flags_given, const char *data,
                          uint64_t seed, const char *p_model, int resume, dfl_model_info *ci);
/* n samples at temperature T from one stream seeded by seed, consumed sample after sample and
 * `batch` samples per inverse pass (so the result depends on batch only through floating-point
 * summation order); a non-finite sample is an error (DFL_ERR_NUMERIC). Image samples come out in
 * the [-1, 1] pixel range of cli_write_samples: a flow with a dequantization layer (data space
 * [0, 2^k)) is mapped by 2 x / 2^k - 1. */
dfl_status cli_flow_sample_chunked(dfl_ctx *ctx, dfl_flow *f, uint64_t seed, int n, int batch, double temperature,
                                   float *x);
/* cli_open_model for flows: validates --threads, applies it, loads the checkpoint; prints the
 * error line itself. 0, or the exit status (2 bad flag, 1 unreadable checkpoint). */
int cli_open_flow(const char *ckpt, int threads, dfl_flow **f, dfl_model_info *info);
/* difflow sample / info on a flow checkpoint (exit status); sample expects -n and --batch checked. */
int cli_flow_sample_cmd(const char *ckpt, arg_spec *specs, int n, int batch, uint64_t seed, double temperature,
                        const char *out, int threads);
int cli_flow_info(const char *ckpt, int tensors);

#endif
