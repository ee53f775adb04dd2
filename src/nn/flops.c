/* Analytic FLOP counts of the backbones (include/difflow/flops.h states the convention). The walk
 * mirrors the constructors in net.c (toy-mlp, U-Net) and dit.c (DiT) layer by layer. */
#include "difflow/flops.h"

/* Linear: rows M, in K, out N. */
static double lin(double M, double K, double N) { return 2.0 * M * K * N; }
/* Stride-1 "same" convolution on an HxW image: cin -> cout, k x k. */
static double conv(double H, double W, double cin, double cout, double k) { return 2.0 * H * W * cout * cin * k * k; }

static double resblock(double H, double W, double cin, double cout, double tdim)
{
    double f = conv(H, W, cin, cout, 3) + lin(1, tdim, cout) + conv(H, W, cout, cout, 3);
    if (cin != cout) f += conv(H, W, cin, cout, 1);
    return f;
}

static double unet_fwd(const dfl_arch_cfg *c)
{
    double tdim = 2.0 * c->temb_dim;
    double f = lin(1, c->temb_dim, tdim) + lin(1, tdim, tdim);
    double H = c->height, W = c->width, ch = c->base;
    f += conv(H, W, c->channels, c->base, 3);
    double skipc[4], skiph[4], skipw[4];
    for (int l = 0; l < c->nlevels; l++) {
        double C = (double)c->base * c->mult[l];
        for (int r = 0; r < c->nres; r++) {
            f += resblock(H, W, ch, C, tdim);
            ch = C;
        }
        skipc[l] = ch, skiph[l] = H, skipw[l] = W;
        if (l < c->nlevels - 1) H /= 2, W /= 2;
    }
    for (int r = 0; r < 2; r++) f += resblock(H, W, ch, ch, tdim);
    for (int i = 0; i < c->nlevels; i++) {
        int l = c->nlevels - 1 - i;
        double C = (double)c->base * c->mult[l];
        for (int r = 0; r < c->nres; r++) {
            f += resblock(skiph[l], skipw[l], r == 0 ? ch + skipc[l] : C, C, tdim);
            ch = C;
        }
        if (l > 0) H *= 2, W *= 2;
    }
    return f + conv(H, W, ch, c->channels, 3);
}

static double dit_fwd(const dfl_arch_cfg *c)
{
    double D = c->hidden, p = c->patch, T = (double)(c->height / c->patch) * (c->width / c->patch);
    double F = c->channels * p * p;
    double f = lin(T, F, D) + lin(1, c->temb_dim, D) + lin(1, D, D);
    double blk = lin(1, D, 6 * D) + lin(T, D, 3 * D) + 2.0 * (2.0 * T * T * D) + lin(T, D, D) +
                 lin(T, D, c->mlp_ratio * D) + lin(T, c->mlp_ratio * D, D);
    f += c->depth * blk;
    return f + lin(1, D, 2 * D) + lin(T, D, F);
}

double dfl_arch_flops_fwd(const dfl_arch_cfg *c)
{
    /* dfl_net_new's validation is private; check what the walks below rely on. */
    switch (c->arch) {
    case DFL_ARCH_MLP: {
        if (c->dim < 1 || c->hidden < 1 || c->depth < 1) break;
        double f = lin(1, c->dim + 1, c->hidden) + lin(1, c->hidden, c->dim);
        return f + (c->depth - 1) * lin(1, c->hidden, c->hidden);
    }
    case DFL_ARCH_UNET:
        if (c->nlevels < 1 || c->nlevels > 4 || c->nres < 1 || c->base < 1 || c->channels < 1 || c->height < 1 ||
            c->width < 1 || c->temb_dim < 1)
            break;
        return unet_fwd(c);
    case DFL_ARCH_DIT:
        if (c->patch < 1 || c->hidden < 1 || c->depth < 0 || c->height < c->patch || c->width < c->patch || c->mlp_ratio < 1)
            break;
        return dit_fwd(c);
    }
    dfl_fail(DFL_ERR_ARG, "flops: invalid or unknown architecture configuration (arch %d)", (int)c->arch);
    return 0;
}

double dfl_arch_flops_train(const dfl_arch_cfg *c) { return 3.0 * dfl_arch_flops_fwd(c); }
