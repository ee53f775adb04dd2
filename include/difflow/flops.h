/* difflow flops: analytic floating-point operation counts of the reference backbones (DESIGN
 * section 13), for the achieved-GFLOP/s figures of `difflow bench` and docs/PERFORMANCE.md.
 *
 * Convention (the usual one of MLPerf / Kaplan et al. 2020, "Scaling laws", sec. 2.1):
 *   - only the matrix products are counted: a Linear (M rows, in K, out N) is 2 M N K, a stride-1
 *     convolution is 2 Ho Wo O C k k per image, attention is 2 T T Dh for q k^T plus 2 T T Dh for
 *     P v per head; a multiply-add is 2 FLOPs;
 *   - biases, normalisations, activations, pooling, softmax and the loss are not counted (they are
 *     O(activations), not O(activations x fan-in));
 *   - backward = 2 x forward (one product for the input gradient, one for the weight gradient, of
 *     the same size as the forward's), so a training step costs 3 x forward per sample, even for the
 *     first layer whose input gradient is not needed;
 *   - sampling costs NFE x forward per image.
 * The counts are per sample and independent of the batch. */
#ifndef DIFFLOW_FLOPS_H
#define DIFFLOW_FLOPS_H

#include "difflow/nn.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Forward FLOPs per sample of the backbone described by cfg (toy-mlp: Linear chain; U-Net:
 * convolutions + Linears of the time embedding and the per-ResBlock projections; DiT: patch
 * embedding, time embedding, adaLN, qkv, attention, projection, MLP and the final layer).
 * Returns 0 (with DFL_ERR_ARG set) for an invalid or unknown configuration. */
double dfl_arch_flops_fwd(const dfl_arch_cfg *cfg);
/* FLOPs of one training sample (forward + backward) under the convention above: 3 x forward. */
double dfl_arch_flops_train(const dfl_arch_cfg *cfg);

#ifdef __cplusplus
}
#endif
#endif
