/* 2-D convolution, stride 1, zero padding (DESIGN section 3, "Kernels").
 *
 * Forward: im2col + cblas_sgemm. The output columns (N images x Ho*Wo positions) are cut into
 * "units": a block of output rows of one image (big images; the im2col block then stays in L2),
 * or a group of whole small images (so the GEMM is not too thin). Units are spread over OpenMP
 * threads; OpenBLAS (OpenMP build) runs single-threaded inside the parallel region, so there is
 * one thread pool. When the batch is smaller than the thread count the units run in turn and
 * BLAS threads each GEMM instead. A 1x1 convolution without padding reads x directly as the GEMM
 * operand (no im2col).
 *
 * Backward: dW += dY col^T per unit into per-thread partials, reduced at the end (thread 0
 * accumulates straight into dW). dX is the transposed convolution, which for stride 1 is a
 * correlation of dY, padded by k-1-pad, with the kernel flipped and transposed; it reuses the
 * forward machinery with beta = 1 so the GEMM accumulates into dX directly (no col2im scatter).
 * All scratch comes from one caller-provided buffer (the ctx arena in dfl_conv2d).
 */
#include "difflow/kernels.h"
#include "difflow/ops.h"

#include <cblas.h>
#include <omp.h>
#include <string.h>

#define CONV_BLOCK_DEFAULT ((size_t)1 << 16) /* im2col floats per unit target: 256 KiB */
#define ALIGN16(n) (((size_t)(n) + 15) & ~(size_t)15)

static size_t g_block = CONV_BLOCK_DEFAULT;

size_t dfl_k_conv2d_set_block(size_t floats)
{
    size_t old = g_block;
    g_block = floats ? floats : CONV_BLOCK_DEFAULT;
    return old;
}

int dfl_k_conv2d_out_size(int H, int k, int pad) { return H + 2 * pad - k + 1; }

/* ------------------------------------------------------------------ planning */

typedef struct {
    int N, C, H, W, O, k, pad;
    int Ho, Wo, HWo, K; /* K = C k k, rows of the im2col matrix */
    int nb;             /* images per unit (1: a unit is a row block of one image) */
    int R, rb;          /* output rows per unit and row blocks per image (nb == 1) */
    int units, T;       /* number of units, max columns of one unit */
    int nth;            /* threads over units (1: serial loop, threaded BLAS) */
    int direct;         /* k == 1 and pad == 0: B operand is x itself */
} conv_plan;

static int max_threads(void) { return omp_in_parallel() ? 1 : omp_get_max_threads(); }

static void plan_make(conv_plan *p, int N, int C, int H, int W, int O, int k, int pad)
{
    p->N = N; p->C = C; p->H = H; p->W = W; p->O = O; p->k = k; p->pad = pad;
    p->Ho = H + 2 * pad - k + 1;
    p->Wo = W + 2 * pad - k + 1;
    p->HWo = p->Ho * p->Wo;
    p->K = C * k * k;
    p->direct = (k == 1 && pad == 0);
    int maxth = max_threads();
    size_t cols = g_block / (size_t)p->K;
    if (cols < (size_t)p->Wo) cols = (size_t)p->Wo;
    if (p->direct && cols < (size_t)p->HWo) cols = (size_t)p->HWo; /* no im2col: whole images */
    if (maxth > 1 && N < maxth) {
        /* Small batch: whole images in turn, BLAS threads each GEMM. */
        p->nb = 1; p->R = p->Ho;
    } else if ((size_t)p->HWo <= cols) {
        int nb = (int)(cols / (size_t)p->HWo);
        int per_thread = (N + maxth - 1) / maxth; /* every thread should get a unit */
        if (nb > per_thread) nb = per_thread;
        p->nb = nb < 1 ? 1 : nb;
        p->R = p->Ho;
    } else {
        p->nb = 1;
        int R = (int)(cols / (size_t)p->Wo);
        int rb = (p->Ho + R - 1) / R;
        p->R = (p->Ho + rb - 1) / rb; /* even blocks */
    }
    p->rb = (p->Ho + p->R - 1) / p->R;
    p->units = p->nb == 1 ? N * p->rb : (N + p->nb - 1) / p->nb;
    p->T = p->nb == 1 ? p->R * p->Wo : p->nb * p->HWo;
    p->nth = maxth < p->units ? maxth : p->units;
    if (maxth > 1 && N < maxth) p->nth = 1;
    if (p->nth < 1) p->nth = 1;
}

/* Per-thread scratch of one unit: the im2col block and, for multi-image units, a [max(O,K), T]
 * staging matrix (GEMM output, or gathered dY for the weight gradient). */
static size_t plan_unit_floats(const conv_plan *p)
{
    size_t col = (p->direct && p->nb == 1) ? 0 : (size_t)p->K * p->T;
    size_t tmp = p->nb > 1 ? (size_t)p->O * p->T : 0;
    return ALIGN16(col) + ALIGN16(tmp);
}

size_t dfl_k_conv2d_work_floats(int N, int C, int H, int W, int O, int k, int pad)
{
    conv_plan pf, pt;
    plan_make(&pf, N, C, H, W, O, k, pad);
    plan_make(&pt, N, O, pf.Ho, pf.Wo, C, k, k - 1 - pad); /* the dX pass */
    int maxth = max_threads();
    size_t unit = plan_unit_floats(&pf);
    size_t unit_t = plan_unit_floats(&pt);
    if (unit_t > unit) unit = unit_t;
    size_t wflip = ALIGN16((size_t)O * C * k * k);
    size_t part = ALIGN16((size_t)O * pf.K + O);
    return wflip + (size_t)maxth * part + (size_t)maxth * unit + 16;
}

/* ------------------------------------------------------------------ im2col */

/* Rows [r0, r1) of the im2col matrix of one image: col[(c,i,j), (ho-r0)*Wo + wo] =
 * x[c, ho+i-pad, wo+j-pad] (0 outside). x (C,H,W); col has row stride ldcol. Works for any
 * integer pad (negative pad crops). */
static void im2col_rows(const float *x, int C, int H, int W, int k, int pad, int Wo, int r0, int r1,
                        float *col, size_t ldcol)
{
    for (int c = 0; c < C; c++) {
        const float *xc = x + (size_t)c * H * W;
        for (int i = 0; i < k; i++) {
            for (int j = 0; j < k; j++) {
                float *dst = col + (size_t)((c * k + i) * k + j) * ldcol;
                int off = j - pad;
                int wlo = off < 0 ? -off : 0;
                int whi = W - off < Wo ? W - off : Wo;
                if (whi < wlo) whi = wlo;
                for (int ho = r0; ho < r1; ho++) {
                    float *d = dst + (size_t)(ho - r0) * Wo;
                    int hi = ho + i - pad;
                    if (hi < 0 || hi >= H) {
                        memset(d, 0, (size_t)Wo * sizeof(float));
                        continue;
                    }
                    const float *s = xc + (size_t)hi * W;
                    for (int wo = 0; wo < wlo; wo++) d[wo] = 0.0f;
                    for (int wo = wlo; wo < whi; wo++) d[wo] = s[wo + off];
                    for (int wo = whi; wo < Wo; wo++) d[wo] = 0.0f;
                }
            }
        }
    }
}

/* Where unit u lies: images [n0, n1) and, for nb == 1, output rows [r0, r1). */
static void unit_range(const conv_plan *p, int u, int *n0, int *n1, int *r0, int *r1)
{
    if (p->nb == 1) {
        *n0 = u / p->rb;
        *n1 = *n0 + 1;
        *r0 = (u % p->rb) * p->R;
        *r1 = *r0 + p->R < p->Ho ? *r0 + p->R : p->Ho;
    } else {
        *n0 = u * p->nb;
        *n1 = *n0 + p->nb < p->N ? *n0 + p->nb : p->N;
        *r0 = 0;
        *r1 = p->Ho;
    }
}

/* B operand (im2col block, or x itself for direct 1x1) of unit u; returns it and its ld. */
static const float *unit_cols(const conv_plan *p, const float *x, int n0, int n1, int r0, int r1,
                              float *col, int *ldb)
{
    size_t img = (size_t)p->C * p->H * p->W;
    if (p->nb == 1) {
        if (p->direct) {
            *ldb = p->HWo;
            return x + (size_t)n0 * img + (size_t)r0 * p->Wo;
        }
        int cols = (r1 - r0) * p->Wo;
        im2col_rows(x + (size_t)n0 * img, p->C, p->H, p->W, p->k, p->pad, p->Wo, r0, r1, col,
                    (size_t)cols);
        *ldb = cols;
        return col;
    }
    int cols = (n1 - n0) * p->HWo;
    for (int n = n0; n < n1; n++)
        im2col_rows(x + (size_t)n * img, p->C, p->H, p->W, p->k, p->pad, p->Wo, 0, p->Ho,
                    col + (size_t)(n - n0) * p->HWo, (size_t)cols);
    *ldb = cols;
    return col;
}

/* ------------------------------------------------------------------ forward core */

/* y (N,O,Ho,Wo) = wm (O,K) * im2col(x) + b, or y += ... when acc (then b must be NULL). */
static void unit_fwd(const conv_plan *p, int u, const float *x, const float *wm, const float *b,
                     float *y, int acc, float *scratch)
{
    int n0, n1, r0, r1, ldb;
    unit_range(p, u, &n0, &n1, &r0, &r1);
    float *col = scratch;
    size_t colsz = (p->direct && p->nb == 1) ? 0 : ALIGN16((size_t)p->K * p->T);
    float *tmp = scratch + colsz;
    const float *B = unit_cols(p, x, n0, n1, r0, r1, col, &ldb);
    size_t yimg = (size_t)p->O * p->HWo;
    if (p->nb == 1) {
        int cols = (r1 - r0) * p->Wo;
        float *Y = y + (size_t)n0 * yimg + (size_t)r0 * p->Wo;
        float beta = acc ? 1.0f : 0.0f;
        if (b && !acc) {
            for (int o = 0; o < p->O; o++) {
                float *yr = Y + (size_t)o * p->HWo, bo = b[o];
                for (int t = 0; t < cols; t++) yr[t] = bo;
            }
            beta = 1.0f;
        }
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, p->O, cols, p->K, 1.0f, wm, p->K,
                    B, ldb, beta, Y, p->HWo);
        return;
    }
    int cols = (n1 - n0) * p->HWo;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, p->O, cols, p->K, 1.0f, wm, p->K, B,
                ldb, 0.0f, tmp, cols);
    for (int n = n0; n < n1; n++) {
        for (int o = 0; o < p->O; o++) {
            const float *s = tmp + (size_t)o * cols + (size_t)(n - n0) * p->HWo;
            float *d = y + (size_t)n * yimg + (size_t)o * p->HWo;
            if (acc) {
                for (int t = 0; t < p->HWo; t++) d[t] += s[t];
            } else {
                float bo = b ? b[o] : 0.0f;
                for (int t = 0; t < p->HWo; t++) d[t] = s[t] + bo;
            }
        }
    }
}

static void conv_fwd_core(const conv_plan *p, const float *x, const float *wm, const float *b,
                          float *y, int acc, float *scratch, size_t unit_floats)
{
    if (p->nth <= 1) {
        for (int u = 0; u < p->units; u++) unit_fwd(p, u, x, wm, b, y, acc, scratch);
        return;
    }
#pragma omp parallel num_threads(p->nth)
    {
        float *s = scratch + (size_t)omp_get_thread_num() * unit_floats;
#pragma omp for schedule(static)
        for (int u = 0; u < p->units; u++) unit_fwd(p, u, x, wm, b, y, acc, s);
    }
}

/* Scratch layout: [wflip | nth partial dW+db | nth unit buffers]. */
typedef struct {
    float *wflip, *part, *unit;
    size_t part_floats, unit_floats;
} conv_work;

static void work_split(float *work, const conv_plan *pf, const conv_plan *pt, conv_work *cw)
{
    int maxth = max_threads();
    size_t unit = plan_unit_floats(pf), unit_t = plan_unit_floats(pt);
    cw->unit_floats = unit > unit_t ? unit : unit_t;
    cw->part_floats = ALIGN16((size_t)pf->O * pf->K + pf->O);
    /* 64-byte align the start (the arena already is; a caller buffer may not be). */
    float *w = (float *)(((uintptr_t)work + 63) & ~(uintptr_t)63);
    cw->wflip = w;
    cw->part = w + ALIGN16((size_t)pf->O * pf->C * pf->k * pf->k);
    cw->unit = cw->part + (size_t)maxth * cw->part_floats;
}

void dfl_k_conv2d_fwd(const float *x, const float *w, const float *b, float *y, int N, int C,
                      int H, int W, int O, int k, int pad, float *work)
{
    conv_plan pf, pt;
    conv_work cw;
    plan_make(&pf, N, C, H, W, O, k, pad);
    plan_make(&pt, N, O, pf.Ho, pf.Wo, C, k, k - 1 - pad);
    work_split(work, &pf, &pt, &cw);
    conv_fwd_core(&pf, x, w, b, y, 0, cw.unit, cw.unit_floats);
}

/* ------------------------------------------------------------------ backward */

/* dWp (O,K) += dY_unit (O,cols) * col^T (cols,K); dbp (O) += row sums of dY_unit. */
static void unit_dw(const conv_plan *p, int u, const float *x, const float *dy, float *dwp,
                    float *dbp, float *scratch)
{
    int n0, n1, r0, r1, ldb;
    unit_range(p, u, &n0, &n1, &r0, &r1);
    float *col = scratch;
    size_t colsz = (p->direct && p->nb == 1) ? 0 : ALIGN16((size_t)p->K * p->T);
    float *tmp = scratch + colsz;
    size_t yimg = (size_t)p->O * p->HWo;
    const float *A;
    int lda, cols;
    if (p->nb == 1) {
        cols = (r1 - r0) * p->Wo;
        A = dy + (size_t)n0 * yimg + (size_t)r0 * p->Wo;
        lda = p->HWo;
    } else {
        cols = (n1 - n0) * p->HWo;
        for (int n = n0; n < n1; n++)
            for (int o = 0; o < p->O; o++)
                memcpy(tmp + (size_t)o * cols + (size_t)(n - n0) * p->HWo,
                       dy + (size_t)n * yimg + (size_t)o * p->HWo, (size_t)p->HWo * sizeof(float));
        A = tmp;
        lda = cols;
    }
    if (dbp) {
        for (int o = 0; o < p->O; o++) {
            const float *a = A + (size_t)o * lda;
            float s = 0.0f;
#pragma omp simd reduction(+ : s)
            for (int t = 0; t < cols; t++) s += a[t];
            dbp[o] += s;
        }
    }
    if (!dwp) return;
    const float *B = unit_cols(p, x, n0, n1, r0, r1, col, &ldb);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, p->O, p->K, cols, 1.0f, A, lda, B, ldb,
                1.0f, dwp, p->K);
}

void dfl_k_conv2d_bwd(const float *x, const float *w, const float *dy, float *dx, float *dw,
                      float *db, int N, int C, int H, int W, int O, int k, int pad, float *work)
{
    conv_plan pf, pt;
    conv_work cw;
    plan_make(&pf, N, C, H, W, O, k, pad);
    plan_make(&pt, N, O, pf.Ho, pf.Wo, C, k, k - 1 - pad);
    work_split(work, &pf, &pt, &cw);
    size_t kk = (size_t)k * k;

    if (dw || db) {
        if (pf.nth <= 1) {
            for (int u = 0; u < pf.units; u++) unit_dw(&pf, u, x, dy, dw, db, cw.unit);
        } else {
            size_t OK = (size_t)O * pf.K;
#pragma omp parallel num_threads(pf.nth)
            {
                int t = omp_get_thread_num();
                float *part = cw.part + (size_t)t * cw.part_floats;
                float *dwp = NULL, *dbp = NULL;
                if (t == 0) {
                    dwp = dw; /* thread 0 accumulates straight into the gradient */
                    dbp = db;
                } else {
                    if (dw) { memset(part, 0, OK * sizeof(float)); dwp = part; }
                    if (db) { memset(part + OK, 0, (size_t)O * sizeof(float)); dbp = part + OK; }
                }
                float *s = cw.unit + (size_t)t * cw.unit_floats;
#pragma omp for schedule(static)
                for (int u = 0; u < pf.units; u++) unit_dw(&pf, u, x, dy, dwp, dbp, s);
                /* implicit barrier; then reduce the partials in parallel over dW entries */
                if (dw) {
#pragma omp for schedule(static)
                    for (size_t i = 0; i < OK; i++) {
                        float acc = 0.0f;
                        for (int q = 1; q < pf.nth; q++) acc += cw.part[(size_t)q * cw.part_floats + i];
                        dw[i] += acc;
                    }
                }
                if (db) {
#pragma omp single
                    for (int o = 0; o < O; o++)
                        for (int q = 1; q < pf.nth; q++) db[o] += cw.part[(size_t)q * cw.part_floats + OK + o];
                }
            }
        }
    }

    if (dx) {
        /* w'[c, o, i, j] = w[o, c, k-1-i, k-1-j]: a (C, O k k) matrix. */
        for (int o = 0; o < O; o++)
            for (int c = 0; c < C; c++) {
                const float *src = w + ((size_t)o * C + c) * kk;
                float *dst = cw.wflip + ((size_t)c * O + o) * kk;
                for (size_t q = 0; q < kk; q++) dst[q] = src[kk - 1 - q];
            }
        conv_fwd_core(&pt, dy, cw.wflip, NULL, dx, 1, cw.unit, cw.unit_floats);
    }
}

/* ------------------------------------------------------------------ op */

static void conv2d_backward(dfl_ctx *ctx, dfl_node *nd)
{
    dfl_tensor *x = nd->in[0], *W = nd->in[1], *b = nd->nin > 2 ? nd->in[2] : NULL;
    float *dx = dfl_grad_of(ctx, x);
    float *dw = dfl_grad_of(ctx, W);
    float *db = b ? dfl_grad_of(ctx, b) : NULL;
    if (!dx && !dw && !db) return;
    int N = x->shape[0], C = x->shape[1], H = x->shape[2], Wd = x->shape[3];
    int O = W->shape[0], k = W->shape[2], pad = nd->iarg[0];
    size_t wf = dfl_k_conv2d_work_floats(N, C, H, Wd, O, k, pad);
    float *work = dfl_arena_alloc(ctx, wf * sizeof(float));
    if (!work) return;
    dfl_k_conv2d_bwd(x->data, W->data, nd->out->grad, dx, dw, db, N, C, H, Wd, O, k, pad, work);
}

dfl_tensor *dfl_conv2d(dfl_ctx *ctx, dfl_tensor *x, dfl_tensor *W, dfl_tensor *b, int pad)
{
    if (!ctx || !x || !W) return NULL;
    char s1[64], s2[64];
    if (x->ndim != 4 || W->ndim != 4 || W->shape[1] != x->shape[1] || W->shape[2] != W->shape[3]) {
        dfl_fail(DFL_ERR_SHAPE, "conv2d: input %s and weight %s disagree (need x (N,C,H,W), W (O,C,k,k))",
                 dfl_shape_str(x, s1, sizeof s1), dfl_shape_str(W, s2, sizeof s2));
        return NULL;
    }
    int N = x->shape[0], C = x->shape[1], H = x->shape[2], Wd = x->shape[3];
    int O = W->shape[0], k = W->shape[2];
    if (b && (b->ndim != 1 || b->shape[0] != O)) {
        dfl_fail(DFL_ERR_SHAPE, "conv2d: bias %s must be (%d) for weight %s",
                 dfl_shape_str(b, s1, sizeof s1), O, dfl_shape_str(W, s2, sizeof s2));
        return NULL;
    }
    int Ho = dfl_k_conv2d_out_size(H, k, pad), Wo = dfl_k_conv2d_out_size(Wd, k, pad);
    if (pad < 0 || Ho < 1 || Wo < 1) {
        dfl_fail(DFL_ERR_SHAPE, "conv2d: input %s too small for kernel %d with padding %d",
                 dfl_shape_str(x, s1, sizeof s1), k, pad);
        return NULL;
    }
    dfl_tensor *in[3] = {x, W, b};
    int nin = b ? 3 : 2;
    int shape[4] = {N, O, Ho, Wo};
    dfl_tensor *out = dfl_op_output(ctx, 4, shape, in, nin);
    if (!out) return NULL;
    float *work = dfl_arena_alloc(ctx, dfl_k_conv2d_work_floats(N, C, H, Wd, O, k, pad) * sizeof(float));
    if (!work) return NULL;
    dfl_k_conv2d_fwd(x->data, W->data, b ? b->data : NULL, out->data, N, C, H, Wd, O, k, pad, work);
    dfl_node *nd = dfl_tape_push(ctx, conv2d_backward, "conv2d", out, in, nin);
    if (nd) nd->iarg[0] = pad;
    return out;
}
