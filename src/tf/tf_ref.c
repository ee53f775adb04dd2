/* Naive reference of the attention kernels (plain loops in double, no BLAS, no threads, no
 * blocking): the ground truth tests/test_tf_ops.c compares dfl_k_attention_* against. Follows
 * the definition in tf.h index by index. */
#include "difflow/tf.h"

#include <math.h>
#include <stdlib.h>

/* Probabilities of row i of pair (b, h) into pr (Tk doubles); returns 0 if no key is visible
 * (pr all 0). */
static int ref_row(const float *q, const float *k, const float *bias, int bias_per_batch,
                   const float *kmask, int b, int h, int i, int H, int Tq, int Tk, int Dh,
                   float scale, int causal, double *pr)
{
    size_t pair = (size_t)b * H + h;
    const float *qi = q + (pair * Tq + i) * Dh;
    double m = -INFINITY;
    for (int j = 0; j < Tk; j++) {
        int vis = !causal || j <= i + (Tk - Tq);
        if (kmask && kmask[(size_t)b * Tk + j] == 0.0f) vis = 0;
        double s = -INFINITY;
        if (vis) {
            const float *kj = k + (pair * Tk + j) * Dh;
            s = 0.0;
            for (int c = 0; c < Dh; c++) s += (double)qi[c] * kj[c];
            s *= scale;
            if (bias) s += bias[(((bias_per_batch ? pair : (size_t)h) * Tq) + i) * Tk + j];
        }
        pr[j] = s;
        if (s > m) m = s;
    }
    if (m == -INFINITY) {
        for (int j = 0; j < Tk; j++) pr[j] = 0.0;
        return 0;
    }
    double z = 0.0;
    for (int j = 0; j < Tk; j++) {
        pr[j] = pr[j] == -INFINITY ? 0.0 : exp(pr[j] - m);
        z += pr[j];
    }
    for (int j = 0; j < Tk; j++) pr[j] /= z;
    return 1;
}

void dfl_k_attention_fwd_ref(const float *q, const float *k, const float *v, const float *bias,
                             int bias_per_batch, const float *kmask, float *o, float *p, int B,
                             int H, int Tq, int Tk, int Dh, int Dv, float scale, int causal)
{
    double *pr = malloc((size_t)(Tk > 0 ? Tk : 1) * sizeof(double));
    if (!pr) return;
    for (int b = 0; b < B; b++)
        for (int h = 0; h < H; h++)
            for (int i = 0; i < Tq; i++) {
                size_t pair = (size_t)b * H + h;
                ref_row(q, k, bias, bias_per_batch, kmask, b, h, i, H, Tq, Tk, Dh, scale, causal, pr);
                if (p)
                    for (int j = 0; j < Tk; j++) p[(pair * Tq + i) * Tk + j] = (float)pr[j];
                for (int c = 0; c < Dv; c++) {
                    double s = 0.0;
                    for (int j = 0; j < Tk; j++) s += pr[j] * v[(pair * Tk + j) * Dv + c];
                    o[(pair * Tq + i) * Dv + c] = (float)s;
                }
            }
    free(pr);
}

void dfl_k_attention_bwd_ref(const float *q, const float *k, const float *v, const float *bias,
                             int bias_per_batch, const float *kmask, const float *do_, float *dq,
                             float *dk, float *dv, float *dbias, int B, int H, int Tq, int Tk,
                             int Dh, int Dv, float scale, int causal)
{
    double *pr = malloc((size_t)(Tk > 0 ? Tk : 1) * 2 * sizeof(double));
    if (!pr) return;
    double *ds = pr + (Tk > 0 ? Tk : 1);
    for (int b = 0; b < B; b++)
        for (int h = 0; h < H; h++)
            for (int i = 0; i < Tq; i++) {
                size_t pair = (size_t)b * H + h;
                ref_row(q, k, bias, bias_per_batch, kmask, b, h, i, H, Tq, Tk, Dh, scale, causal, pr);
                const float *g = do_ + (pair * Tq + i) * Dv;
                /* dP_ij = dO_i . v_j; dS = P (dP - sum_j P dP) */
                double dot = 0.0;
                for (int j = 0; j < Tk; j++) {
                    double dp = 0.0;
                    for (int c = 0; c < Dv; c++) dp += (double)g[c] * v[(pair * Tk + j) * Dv + c];
                    ds[j] = dp;
                    dot += pr[j] * dp;
                }
                for (int j = 0; j < Tk; j++) {
                    ds[j] = pr[j] * (ds[j] - dot);
                    if (dv)
                        for (int c = 0; c < Dv; c++)
                            dv[(pair * Tk + j) * Dv + c] += (float)(pr[j] * g[c]);
                    if (dbias)
                        dbias[(((bias_per_batch ? pair : (size_t)h) * Tq) + i) * Tk + j] += (float)ds[j];
                    for (int c = 0; c < Dh; c++) {
                        if (dq) dq[(pair * Tq + i) * Dh + c] += (float)(scale * ds[j] * k[(pair * Tk + j) * Dh + c]);
                        if (dk) dk[(pair * Tk + j) * Dh + c] += (float)(scale * ds[j] * q[(pair * Tq + i) * Dh + c]);
                    }
                }
            }
    free(pr);
}
