/* Internal layout of the flow layers (src/flow only). */
#ifndef DFL_FLOW_INTERNAL_H
#define DFL_FLOW_INTERNAL_H

#include "difflow/flow.h"
#include "difflow/nn.h"
#include "difflow/ops.h"

enum { BK_COUPLING, BK_SCALING, BK_SQUEEZE, BK_ACTNORM, BK_INVCONV, BK_LOGIT, BK_SPLIT, BK_DEQUANT, BK_PRIOR };

#define CNET_MAX 24

/* Conditioner network of a coupling (flow.h dfl_net_kind). */
typedef struct {
    dfl_net_kind kind;
    int depth, nl;
    dfl_linear_layer lin[CNET_MAX];
    dfl_conv_layer conv[CNET_MAX];
} cnet;

struct dfl_bijection {
    int kind;
    char name[128];
    int C, H, W; /* input shape of one sample; vectors: (D, 0, 0) */
    int vec;
    /* coupling */
    dfl_mask_kind mask;
    int parity;
    dfl_coupling_kind ck;
    int ca, cb; /* conditioner / transformed sizes (channels, or features for vectors) */
    cnet net;
    dfl_tensor *scale;        /* RealNVP tanh scale */
    dfl_tensor *maskb, *maskc;/* checkerboard: conditioner mask b and 1 - b, (1, 1, H, W) */
    /* scaling */
    dfl_tensor *log_scale;
    /* actnorm */
    dfl_tensor *bias, *logs;
    /* invconv */
    int lu;
    dfl_tensor *weight, *lower, *upper, *log_s, *perm_buf, *sign_buf;
    int *perm;
    float *sign;
    /* logit */
    float alpha;
    /* dequantization: k of the k-bit data */
    int bits;
    /* learned top prior */
    dfl_tensor *pmean, *plogs;
    /* split: conditional prior conv, and the soft bound of its log-sd (0: none) */
    dfl_conv_layer pconv;
    float clamp;
    /* flow bookkeeping: offset of a split's factored-out part in the flattened latent */
    int zoff;
};

/* Output shape of one sample after the layer (squeeze changes it). */
void dfl_bij_out_shape(const dfl_bijection *b, int *C, int *H, int *W);

#endif
