/* 2-D convolution, stride 1, zero padding (DESIGN section 3, "Kernels").
 *
 * Two implementations:
 *
 * - Direct 3x3 (pad 1, the U-Net's convolutions), when compiled for AVX2 + FMA: see the
 *   "direct 3x3" section below. No im2col and no BLAS; about 1.3-1.6x the im2col path's speed
 *   with 8-float (AVX2) vectors; AVX-512 builds use 16-float vectors (about 1.6-2x faster again
 *   on Zen 5, bench/conv_micro.c, 1 thread).
 *
 * - im2col + GEMM (dfl_k_sgemm: oneDNN or OpenBLAS) for every other shape. The output columns (N images x Ho*Wo
 *   positions) are cut into "units": a block of output rows of one image, or a group of whole
 *   small images, sized so the unit's im2col block (C k k rows) stays around 256 KiB (L2) while
 *   the GEMM stays at least MIN_COLS columns wide; Y_unit (O, cols) = W (O, Ckk) col. For
 *   "same"-width convolutions (k = 2 pad + 1) an im2col row over a block of output rows is one
 *   contiguous shifted copy of the input plus a few zeroed edge columns. A 1x1 convolution
 *   without padding reads x directly as the GEMM operand (no im2col).
 *
 * Work is spread over OpenMP threads by image/unit; OpenBLAS (OpenMP build) runs single-threaded
 * inside the parallel region, so there is one thread pool. When the batch is smaller than the
 * thread count, images run in turn with threads over channel blocks (direct) or threaded BLAS.
 *
 * Backward: dW is summed per thread into partials, reduced at the end (thread 0 accumulates
 * straight into dW). dX is the transposed convolution, which for stride 1 is a correlation of
 * dY, padded by k-1-pad, with the kernel flipped and transposed; it reuses the forward machinery
 * accumulating into dX (no col2im scatter). All scratch comes from one caller-provided buffer
 * (the ctx arena in dfl_conv2d).
 *
 * Measured alternatives (2-core Zen 3, interleaved A/B runs) that did not pay and were dropped:
 * a row-only im2col over a padded flat layout with k GEMMs, one per kernel column (a third of
 * the copying, no faster end to end: the GEMMs pack their operands anyway); 9 shifted GEMMs with
 * no im2col (slower at 14x14 and 7x7).
 */
#include "difflow/kernels.h"
#include "difflow/ops.h"

#include <omp.h>
#include <string.h>

#define CONV_BLOCK_DEFAULT ((size_t)1 << 16) /* im2col floats per unit target: 256 KiB */
#define MIN_COLS 196                         /* narrower GEMMs lose more than L2 misses cost */
#define ALIGN16(n) (((size_t)(n) + 15) & ~(size_t)15)

static size_t g_block = CONV_BLOCK_DEFAULT;
static size_t g_min_cols = MIN_COLS;

size_t dfl_k_conv2d_set_block(size_t floats)
{
    size_t old = g_block == CONV_BLOCK_DEFAULT && g_min_cols == MIN_COLS ? 0 : g_block;
    g_block = floats ? floats : CONV_BLOCK_DEFAULT;
    g_min_cols = floats ? 1 : MIN_COLS; /* an explicit size is taken as is */
    return old;
}

int dfl_k_conv2d_out_size(int H, int k, int pad) { return H + 2 * pad - k + 1; }

static int max_threads(void) { return omp_in_parallel() ? 1 : omp_get_max_threads(); }

/* ------------------------------------------------------------------ planning */

typedef struct {
    int N, C, H, W, O, k, pad;
    int Ho, Wo, HWo, K; /* K = C k k, rows of the im2col matrix */
    int nb;             /* images per unit (1: a unit is a row block of one image) */
    int R, rb;          /* output rows per unit and row blocks per image (nb == 1) */
    int units, T;       /* number of units, max columns of one unit */
    int nth;            /* threads over units (1: serial loop, threaded BLAS) */
    int pointwise;      /* k == 1 and pad == 0: B operand is x itself */
} conv_plan;

static void plan_make(conv_plan *p, int N, int C, int H, int W, int O, int k, int pad)
{
    p->N = N; p->C = C; p->H = H; p->W = W; p->O = O; p->k = k; p->pad = pad;
    p->Ho = H + 2 * pad - k + 1;
    p->Wo = W + 2 * pad - k + 1;
    p->HWo = p->Ho * p->Wo;
    p->K = C * k * k;
    p->pointwise = (k == 1 && pad == 0);
    int maxth = max_threads();
    size_t cols = g_block / (size_t)p->K;
    if (cols < g_min_cols) cols = g_min_cols;
    if (cols < (size_t)p->Wo) cols = (size_t)p->Wo;
    if (p->pointwise && cols < (size_t)p->HWo) cols = (size_t)p->HWo; /* no im2col: whole images */
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

/* Per-thread scratch of one unit: the im2col block and, for multi-image units, an (O, T)
 * staging matrix (GEMM output, or gathered dY for the weight gradient). */
static size_t plan_unit_floats(const conv_plan *p)
{
    size_t col = (p->pointwise && p->nb == 1) ? 0 : (size_t)p->K * p->T;
    size_t tmp = p->nb > 1 ? (size_t)p->O * p->T : 0;
    return ALIGN16(col) + ALIGN16(tmp);
}

/* ------------------------------------------------------------------ im2col */

/* Rows [r0, r1) of the im2col matrix of one image: col[(c,i,j), (ho-r0)*Wo + wo] =
 * x[c, ho+i-pad, wo+j-pad] (0 outside). x (C,H,W); col has row stride ldcol. Works for any
 * integer pad (negative pad crops). */
static void im2col_rows(const float *x, int C, int H, int W, int k, int pad, int Wo, int r0, int r1,
                        float *col, size_t ldcol)
{
    if (Wo == W) {
        /* "Same" width (k = 2 pad + 1): over the valid rows, an im2col row is the input read
         * contiguously at offset j - pad; only the first/last |j - pad| columns of each row
         * must be zeroed instead. One long copy per (c, i, j) instead of one per output row. */
        for (int c = 0; c < C; c++) {
            const float *xc = x + (size_t)c * H * W;
            for (int i = 0; i < k; i++) {
                int lo = pad - i > r0 ? pad - i : r0;         /* rows with 0 <= ho+i-pad < H */
                int hi = H + pad - i < r1 ? H + pad - i : r1;
                if (hi < lo) hi = lo;
                for (int j = 0; j < k; j++) {
                    float *dst = col + (size_t)((c * k + i) * k + j) * ldcol;
                    if (lo > r0) memset(dst, 0, (size_t)(lo - r0) * W * sizeof(float));
                    if (r1 > hi) memset(dst + (size_t)(hi - r0) * W, 0, (size_t)(r1 - hi) * W * sizeof(float));
                    if (hi == lo) continue;
                    int off = j - pad;
                    size_t n = (size_t)(hi - lo) * W;
                    float *d = dst + (size_t)(lo - r0) * W;
                    const float *s = xc + (size_t)(lo + i - pad) * W; /* s[t] = x[row, t] */
                    if (off >= W || -off >= W) {
                        memset(d, 0, n * sizeof(float));
                    } else if (off >= 0) {
                        memcpy(d, s + off, (n - (size_t)off) * sizeof(float));
                        for (int r = 0; r < hi - lo; r++)
                            for (int q = W - off; q < W; q++) d[(size_t)r * W + q] = 0.0f;
                    } else {
                        memcpy(d - off, s, (n - (size_t)(-off)) * sizeof(float));
                        for (int r = 0; r < hi - lo; r++)
                            for (int q = 0; q < -off; q++) d[(size_t)r * W + q] = 0.0f;
                    }
                }
            }
        }
        return;
    }
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

/* B operand (im2col block, or x itself for a 1x1 without padding) of unit u; returns it and its ld. */
static const float *unit_cols(const conv_plan *p, const float *x, int n0, int n1, int r0, int r1,
                              float *col, int *ldb)
{
    size_t img = (size_t)p->C * p->H * p->W;
    if (p->nb == 1) {
        if (p->pointwise) {
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
    size_t colsz = (p->pointwise && p->nb == 1) ? 0 : ALIGN16((size_t)p->K * p->T);
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
        dfl_k_sgemm(0, 0, p->O, cols, p->K, 1.0f, wm, p->K, B, ldb, beta, Y, p->HWo);
        return;
    }
    int cols = (n1 - n0) * p->HWo;
    dfl_k_sgemm(0, 0, p->O, cols, p->K, 1.0f, wm, p->K, B, ldb, 0.0f, tmp, cols);
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

/* dWp (O,K) += dY_unit (O,cols) * col^T (cols,K); dbp (O) += row sums of dY_unit. */
static void unit_dw(const conv_plan *p, int u, const float *x, const float *dy, float *dwp,
                    float *dbp, float *scratch)
{
    int n0, n1, r0, r1, ldb;
    unit_range(p, u, &n0, &n1, &r0, &r1);
    float *col = scratch;
    size_t colsz = (p->pointwise && p->nb == 1) ? 0 : ALIGN16((size_t)p->K * p->T);
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
    dfl_k_sgemm(0, 1, p->O, p->K, cols, 1.0f, A, lda, B, ldb, 1.0f, dwp, p->K);
}


/* ------------------------------------------------------------------ direct 3x3 (AVX2 + FMA) */

/* 3x3, pad 1 convolutions skip im2col: each image is copied once into a padded flat layout
 * (rows W+1 long: one zero column shared by neighbouring rows; a zero row above and below), in
 * which output position q = h (W+1) + w reads tap (i, j) at q + i (W+1) + j. A register-blocked
 * micro-kernel computes 4 output channels x 24 positions (12 accumulators) per call, looping over
 * input channels and the 9 taps: 3 vector loads of x and 4 weight broadcasts per 12 FMAs. The
 * loaded x vectors are pinned to registers with an empty asm so GCC does not fold them into
 * memory-operand FMAs (which re-loads them per channel and made the kernel load-bound:
 * 45 -> 89 GFLOP/s on one Zen 3 core, against OpenBLAS sgemm's 65). Outputs come back in the
 * padded layout (one garbage column per row) and are compacted into y. dX is the same kernel on
 * the padded dY with the flipped, transposed kernel; dW uses a second kernel (4 output channels x
 * 3 column shifts per kernel row, summed over positions), fed by the same padded dY, whose pad
 * columns are zero. */

#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#define D3_AVAILABLE 1
#else
#define D3_AVAILABLE 0
#endif

/* Vector width of the direct kernels: 16 floats (one zmm) on AVX-512 builds, else 8 (one ymm).
 * The forward/dX kernels compute every output as the same sequence of FMAs at either width (each
 * lane is one output position), so their results do not depend on it; dW sums VL-lane partials. */
#if D3_AVAILABLE && defined(__AVX512F__)
#define D3_VL 16
typedef __m512 d3v;
#define d3_load _mm512_loadu_ps
#define d3_store_v _mm512_storeu_ps
#define d3_fma _mm512_fmadd_ps
#define d3_zero _mm512_setzero_ps
#define d3_bcast(p) _mm512_set1_ps(*(p))
#define d3_hsum _mm512_reduce_add_ps
#define D3_PIN(v) __asm__("" : "+v"(v))
#elif D3_AVAILABLE
#define D3_VL 8
typedef __m256 d3v;
#define d3_load _mm256_loadu_ps
#define d3_store_v _mm256_storeu_ps
#define d3_fma _mm256_fmadd_ps
#define d3_zero _mm256_setzero_ps
#define d3_bcast(p) _mm256_broadcast_ss(p)
#define d3_hsum hsum8
#define D3_PIN(v) __asm__("" : "+x"(v))
#else
#define D3_VL 8
#endif

static int g_direct = 1;

int dfl_k_conv2d_set_direct(int on)
{
    int old = g_direct;
    g_direct = on ? 1 : 0;
    return old;
}

static int use_direct(int k, int pad) { return D3_AVAILABLE && g_direct && k == 3 && pad == 1; }

/* Below this many output positions per image, rounded up to vectors (7x7: 56) the dW kernel's
 * horizontal sums dominate and im2col + GEMM computes dW faster (measured with 8-float vectors:
 * 71 vs 58 GFLOP/s at 7x7; 90 vs 99 at 14x14). */
#define D3_DW_MIN_Q 128

typedef struct {
    int N, C, H, W, O;
    int Wq, base, Q, Qv; /* row length W+1; flat index of input (0,0); H Wq positions; vectors */
    size_t PL, ldy;      /* padded plane stride; stride of the padded output rows (D3_VL Qv) */
    int Op, Cp;          /* O and C rounded up to multiples of 4 */
    int nth, per_image;  /* per_image: threads over images; else over channel blocks */
} d3_plan;

static void d3_make(d3_plan *p, int N, int C, int H, int W, int O)
{
    p->N = N; p->C = C; p->H = H; p->W = W; p->O = O;
    p->Wq = W + 1;
    p->base = p->Wq + 1;
    p->Q = H * p->Wq;
    p->Qv = (p->Q + D3_VL - 1) / D3_VL;
    p->PL = ALIGN16((size_t)p->Qv * D3_VL + 2 * (size_t)p->Wq + 2);
    p->ldy = (size_t)p->Qv * D3_VL;
    p->Op = (O + 3) & ~3;
    p->Cp = (C + 3) & ~3;
    int maxth = max_threads();
    p->per_image = N >= maxth;
    p->nth = p->per_image ? (maxth < N ? maxth : N) : maxth;
}

static size_t d3_thread_floats(const d3_plan *p)
{
    size_t oc = (size_t)(p->Op > p->Cp ? p->Op : p->Cp);
    return ALIGN16((size_t)p->C * p->PL) + ALIGN16((size_t)p->Op * p->PL) + ALIGN16(oc * p->ldy);
}

#if D3_AVAILABLE

/* Padded flat copy of an image x (Cin, H, W) into planes [0, Cin) of xp; planes [Cin, planes)
 * are zeroed. */
static void d3_pad(const d3_plan *p, const float *x, int Cin, int planes, float *xp)
{
    size_t HW = (size_t)p->H * p->W;
    for (int c = 0; c < planes; c++) {
        float *d = xp + (size_t)c * p->PL;
        if (c >= Cin) {
            memset(d, 0, p->PL * sizeof(float));
            continue;
        }
        const float *s = x + (size_t)c * HW;
        memset(d, 0, (size_t)p->base * sizeof(float));
        for (int h = 0; h < p->H; h++) {
            float *r = d + p->base + (size_t)h * p->Wq;
            memcpy(r, s + (size_t)h * p->W, (size_t)p->W * sizeof(float));
            r[p->W] = 0.0f;
        }
        size_t used = (size_t)p->base + (size_t)p->H * p->Wq;
        memset(d + used, 0, (p->PL - used) * sizeof(float));
    }
}

/* Weights for the forward: wp[((ob Cin + c) 9 + t) 4 + r] = w[4 ob + r, c, t] (0 past O).
 * flip: the dX kernel, w'[c, o, t] = w[o, c, 8 - t], blocks of 4 input channels of x. */
static void d3_pack(const float *w, int O, int C, int flip, float *wp)
{
    int Oe = flip ? C : O, Ce = flip ? O : C, Oep = (Oe + 3) & ~3;
    for (int oe = 0; oe < Oep; oe++)
        for (int ce = 0; ce < Ce; ce++)
            for (int t = 0; t < 9; t++) {
                float v = 0.0f;
                if (oe < Oe) v = flip ? w[((size_t)ce * C + oe) * 9 + (8 - t)] : w[((size_t)oe * C + ce) * 9 + t];
                wp[(((size_t)(oe / 4) * Ce + ce) * 9 + t) * 4 + (oe % 4)] = v;
            }
}

static inline float hsum8(__m256 v)
{
    __m128 a = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    a = _mm_add_ps(a, _mm_movehl_ps(a, a));
    a = _mm_add_ss(a, _mm_shuffle_ps(a, a, 1));
    return _mm_cvtss_f32(a);
}

/* y[r][VL v'] (r < 4, v' < 3) = sum over c < Cin and taps of w * x: 4 channels x 3 VL positions. */
static void d3_k4x3(const float *x, size_t PL, int Wq, const float *w, int Cin, float *y, size_t ldy)
{
    d3v a00 = d3_zero(), a01 = a00, a02 = a00, a10 = a00, a11 = a00, a12 = a00;
    d3v a20 = a00, a21 = a00, a22 = a00, a30 = a00, a31 = a00, a32 = a00;
    for (int c = 0; c < Cin; c++) {
        const float *xc = x + (size_t)c * PL;
        const float *wc = w + (size_t)c * 36;
        for (int i = 0; i < 3; i++) {
            const float *xr = xc + (size_t)i * Wq;
            const float *wr = wc + i * 12;
            for (int j = 0; j < 3; j++) {
                d3v x0 = d3_load(xr + j), x1 = d3_load(xr + j + D3_VL);
                d3v x2 = d3_load(xr + j + 2 * D3_VL);
                D3_PIN(x0); D3_PIN(x1); D3_PIN(x2);
                const float *wt = wr + 4 * j;
                d3v wb = d3_bcast(wt);
                a00 = d3_fma(wb, x0, a00); a01 = d3_fma(wb, x1, a01); a02 = d3_fma(wb, x2, a02);
                wb = d3_bcast(wt + 1);
                a10 = d3_fma(wb, x0, a10); a11 = d3_fma(wb, x1, a11); a12 = d3_fma(wb, x2, a12);
                wb = d3_bcast(wt + 2);
                a20 = d3_fma(wb, x0, a20); a21 = d3_fma(wb, x1, a21); a22 = d3_fma(wb, x2, a22);
                wb = d3_bcast(wt + 3);
                a30 = d3_fma(wb, x0, a30); a31 = d3_fma(wb, x1, a31); a32 = d3_fma(wb, x2, a32);
            }
        }
    }
    const int V = D3_VL;
    d3_store_v(y, a00); d3_store_v(y + V, a01); d3_store_v(y + 2 * V, a02);
    y += ldy;
    d3_store_v(y, a10); d3_store_v(y + V, a11); d3_store_v(y + 2 * V, a12);
    y += ldy;
    d3_store_v(y, a20); d3_store_v(y + V, a21); d3_store_v(y + 2 * V, a22);
    y += ldy;
    d3_store_v(y, a30); d3_store_v(y + V, a31); d3_store_v(y + 2 * V, a32);
}

/* The same for V = 1 or 2 vectors (the tail of a row of blocks); few enough registers that the
 * array form compiles to registers. */
static inline __attribute__((always_inline)) void d3_k4xv(int V, const float *x, size_t PL, int Wq,
                                                          const float *w, int Cin, float *y,
                                                          size_t ldy)
{
    d3v acc[4][2];
    for (int r = 0; r < 4; r++)
        for (int v = 0; v < V; v++) acc[r][v] = d3_zero();
    for (int c = 0; c < Cin; c++) {
        const float *xc = x + (size_t)c * PL;
        const float *wc = w + (size_t)c * 36;
        for (int t = 0; t < 9; t++) {
            const float *xt = xc + (size_t)(t / 3) * Wq + t % 3;
            d3v xv[2];
            for (int v = 0; v < V; v++) {
                xv[v] = d3_load(xt + D3_VL * v);
                D3_PIN(xv[v]);
            }
            for (int r = 0; r < 4; r++) {
                d3v wb = d3_bcast(wc + t * 4 + r);
                for (int v = 0; v < V; v++) acc[r][v] = d3_fma(wb, xv[v], acc[r][v]);
            }
        }
    }
    for (int r = 0; r < 4; r++)
        for (int v = 0; v < V; v++) d3_store_v(y + r * ldy + D3_VL * v, acc[r][v]);
}

static void d3_k4x2(const float *x, size_t PL, int Wq, const float *w, int Cin, float *y, size_t ldy)
{
    d3_k4xv(2, x, PL, Wq, w, Cin, y, ldy);
}

static void d3_k4x1(const float *x, size_t PL, int Wq, const float *w, int Cin, float *y, size_t ldy)
{
    d3_k4xv(1, x, PL, Wq, w, Cin, y, ldy);
}

/* Output channel blocks [ob0, ob1) of one image: yq (4 ob1, ldy) from the padded input xp
 * (Cin planes) and packed weights wp. */
static void d3_img_fwd(const d3_plan *p, const float *xp, int Cin, const float *wp, int ob0,
                       int ob1, float *yq)
{
    for (int ob = ob0; ob < ob1; ob++) {
        const float *wo = wp + (size_t)ob * Cin * 36;
        float *yo = yq + (size_t)ob * 4 * p->ldy;
        int v = 0;
        for (; v + 3 <= p->Qv; v += 3) d3_k4x3(xp + D3_VL * v, p->PL, p->Wq, wo, Cin, yo + D3_VL * v, p->ldy);
        if (p->Qv - v == 2)
            d3_k4x2(xp + D3_VL * v, p->PL, p->Wq, wo, Cin, yo + D3_VL * v, p->ldy);
        else if (p->Qv - v == 1)
            d3_k4x1(xp + D3_VL * v, p->PL, p->Wq, wo, Cin, yo + D3_VL * v, p->ldy);
    }
}

/* Rows [o0, o1) of the padded output yq into the image y (Oc, H, W): y = yq + b, or y += yq. */
static void d3_store(const d3_plan *p, const float *yq, const float *b, float *y, int acc, int o0,
                     int o1)
{
    for (int o = o0; o < o1; o++) {
        float bo = b ? b[o] : 0.0f;
        for (int h = 0; h < p->H; h++) {
            const float *s = yq + (size_t)o * p->ldy + (size_t)h * p->Wq;
            float *d = y + ((size_t)o * p->H + h) * p->W;
            if (acc)
                for (int w = 0; w < p->W; w++) d[w] += s[w];
            else
                for (int w = 0; w < p->W; w++) d[w] = s[w] + bo;
        }
    }
}

/* dW of 4 output channels and one input channel: dw[r ldw + 3 i + j] += sum over q < VL Qv of
 * dy[r PL + q] x[q + i Wq + j], for r < nr (<= 4; the 4 dy rows always exist, zero past O).
 * dy: padded dY at offset base (zero in pad columns and past the last row); x: a padded plane. */
static void d3_dw4(const float *dy, size_t PL, const float *x, int Wq, int Qv, float *dw,
                   size_t ldw, int nr)
{
    for (int i = 0; i < 3; i++) {
        d3v a00 = d3_zero(), a01 = a00, a02 = a00, a10 = a00, a11 = a00, a12 = a00;
        d3v a20 = a00, a21 = a00, a22 = a00, a30 = a00, a31 = a00, a32 = a00;
        const float *xr = x + (size_t)i * Wq;
        for (int v = 0; v < Qv; v++) {
            const float *xs = xr + D3_VL * v, *ds = dy + D3_VL * v;
            d3v x0 = d3_load(xs), x1 = d3_load(xs + 1), x2 = d3_load(xs + 2);
            D3_PIN(x0); D3_PIN(x1); D3_PIN(x2);
            d3v d = d3_load(ds);
            D3_PIN(d);
            a00 = d3_fma(d, x0, a00); a01 = d3_fma(d, x1, a01); a02 = d3_fma(d, x2, a02);
            d = d3_load(ds + PL);
            D3_PIN(d);
            a10 = d3_fma(d, x0, a10); a11 = d3_fma(d, x1, a11); a12 = d3_fma(d, x2, a12);
            d = d3_load(ds + 2 * PL);
            D3_PIN(d);
            a20 = d3_fma(d, x0, a20); a21 = d3_fma(d, x1, a21); a22 = d3_fma(d, x2, a22);
            d = d3_load(ds + 3 * PL);
            D3_PIN(d);
            a30 = d3_fma(d, x0, a30); a31 = d3_fma(d, x1, a31); a32 = d3_fma(d, x2, a32);
        }
        float *r0 = dw + 3 * i;
        r0[0] += d3_hsum(a00); r0[1] += d3_hsum(a01); r0[2] += d3_hsum(a02);
        if (nr > 1) { float *r = r0 + ldw; r[0] += d3_hsum(a10); r[1] += d3_hsum(a11); r[2] += d3_hsum(a12); }
        if (nr > 2) { float *r = r0 + 2 * ldw; r[0] += d3_hsum(a20); r[1] += d3_hsum(a21); r[2] += d3_hsum(a22); }
        if (nr > 3) { float *r = r0 + 3 * ldw; r[0] += d3_hsum(a30); r[1] += d3_hsum(a31); r[2] += d3_hsum(a32); }
    }
}

/* dW contribution of one image, output channel blocks [ob0, ob1): xp (C planes), dyp (Op
 * planes, padded dY). dw (O, C, 3, 3). */
static void d3_img_dw(const d3_plan *p, const float *xp, const float *dyp, int ob0, int ob1,
                      float *dw)
{
    size_t ldw = (size_t)p->C * 9;
    for (int ob = ob0; ob < ob1; ob++) {
        int nr = p->O - 4 * ob < 4 ? p->O - 4 * ob : 4;
        const float *d = dyp + (size_t)4 * ob * p->PL + p->base;
        for (int c = 0; c < p->C; c++)
            d3_dw4(d, p->PL, xp + (size_t)c * p->PL, p->Wq, p->Qv, dw + (size_t)4 * ob * ldw + (size_t)c * 9,
                   ldw, nr);
    }
}

/* Buffers of thread t in the direct path's scratch. */
static void d3_bufs(const d3_plan *p, float *thr, size_t tf, int t, float **xp, float **dyp, float **yq)
{
    float *b = thr + (size_t)t * tf;
    *xp = b;
    *dyp = b + ALIGN16((size_t)p->C * p->PL);
    *yq = *dyp + ALIGN16((size_t)p->Op * p->PL);
}

static void d3_fwd(const d3_plan *p, const float *x, const float *wp, const float *b, float *y,
                   float *thr, size_t tf)
{
    size_t HW = (size_t)p->H * p->W;
    const float *xi;
    if (p->per_image) {
#pragma omp parallel num_threads(p->nth)
        {
            float *xp, *dyp, *yq;
            d3_bufs(p, thr, tf, omp_get_thread_num(), &xp, &dyp, &yq);
#pragma omp for schedule(static)
            for (int n = 0; n < p->N; n++) {
                d3_pad(p, x + (size_t)n * p->C * HW, p->C, p->C, xp);
                d3_img_fwd(p, xp, p->C, wp, 0, p->Op / 4, yq);
                d3_store(p, yq, b, y + (size_t)n * p->O * HW, 0, 0, p->O);
            }
        }
        return;
    }
    float *xp, *dyp, *yq;
    d3_bufs(p, thr, tf, 0, &xp, &dyp, &yq);
    for (int n = 0; n < p->N; n++) {
        xi = x + (size_t)n * p->C * HW;
        d3_pad(p, xi, p->C, p->C, xp);
#pragma omp parallel for schedule(static) num_threads(p->nth)
        for (int ob = 0; ob < p->Op / 4; ob++) d3_img_fwd(p, xp, p->C, wp, ob, ob + 1, yq);
#pragma omp parallel for schedule(static) num_threads(p->nth)
        for (int o = 0; o < p->O; o++) d3_store(p, yq, b, y + (size_t)n * p->O * HW, 0, o, o + 1);
    }
}

/* Backward: wf = flipped packed weights (NULL if no dx); part: per-thread partials. */
static void d3_bwd(const d3_plan *p, const float *x, const float *wf, const float *dy, float *dx,
                   float *dw, float *db, float *thr, size_t tf, float *part, size_t part_floats)
{
    size_t HW = (size_t)p->H * p->W;
    size_t OK = (size_t)p->O * p->C * 9;
    if (p->per_image) {
#pragma omp parallel num_threads(p->nth)
        {
            int t = omp_get_thread_num();
            float *xp, *dyp, *yq;
            d3_bufs(p, thr, tf, t, &xp, &dyp, &yq);
            float *dwp = dw, *dbp = db, *pt = part + (size_t)t * part_floats;
            if (t > 0) {
                if (dw) { memset(pt, 0, OK * sizeof(float)); dwp = pt; }
                if (db) { memset(pt + OK, 0, (size_t)p->O * sizeof(float)); dbp = pt + OK; }
            }
#pragma omp for schedule(static)
            for (int n = 0; n < p->N; n++) {
                const float *dyn = dy + (size_t)n * p->O * HW;
                if (dbp)
                    for (int o = 0; o < p->O; o++) {
                        const float *g = dyn + (size_t)o * HW;
                        float s = 0.0f;
#pragma omp simd reduction(+ : s)
                        for (size_t i = 0; i < HW; i++) s += g[i];
                        dbp[o] += s;
                    }
                if (!dwp && !dx) continue;
                d3_pad(p, dyn, p->O, p->Op, dyp);
                if (dwp) {
                    d3_pad(p, x + (size_t)n * p->C * HW, p->C, p->C, xp);
                    d3_img_dw(p, xp, dyp, 0, p->Op / 4, dwp);
                }
                if (dx) {
                    d3_img_fwd(p, dyp, p->O, wf, 0, p->Cp / 4, yq);
                    d3_store(p, yq, NULL, dx + (size_t)n * p->C * HW, 1, 0, p->C);
                }
            }
            /* implicit barrier; sum the partials of threads 1.. */
            if (dw) {
#pragma omp for schedule(static)
                for (size_t i = 0; i < OK; i++) {
                    float acc = 0.0f;
                    for (int q = 1; q < p->nth; q++) acc += part[(size_t)q * part_floats + i];
                    dw[i] += acc;
                }
            }
            if (db) {
#pragma omp single
                for (int o = 0; o < p->O; o++)
                    for (int q = 1; q < p->nth; q++) db[o] += part[(size_t)q * part_floats + OK + o];
            }
        }
        return;
    }
    /* Small batch: images in turn, threads over channel blocks (disjoint dW rows, dX rows). */
    float *xp, *dyp, *yq;
    d3_bufs(p, thr, tf, 0, &xp, &dyp, &yq);
    for (int n = 0; n < p->N; n++) {
        const float *dyn = dy + (size_t)n * p->O * HW;
        if (db)
            for (int o = 0; o < p->O; o++)
                for (size_t i = 0; i < HW; i++) db[o] += dyn[(size_t)o * HW + i];
        if (!dw && !dx) continue;
        d3_pad(p, dyn, p->O, p->Op, dyp);
        if (dw) {
            d3_pad(p, x + (size_t)n * p->C * HW, p->C, p->C, xp);
#pragma omp parallel for schedule(static) num_threads(p->nth)
            for (int ob = 0; ob < p->Op / 4; ob++) d3_img_dw(p, xp, dyp, ob, ob + 1, dw);
        }
        if (dx) {
#pragma omp parallel for schedule(static) num_threads(p->nth)
            for (int cb = 0; cb < p->Cp / 4; cb++) d3_img_fwd(p, dyp, p->O, wf, cb, cb + 1, yq);
#pragma omp parallel for schedule(static) num_threads(p->nth)
            for (int c = 0; c < p->C; c++) d3_store(p, yq, NULL, dx + (size_t)n * p->C * HW, 1, c, c + 1);
        }
    }
}

#endif /* D3_AVAILABLE */

/* ------------------------------------------------------------------ work space */

/* Scratch layout: [flipped weights | nth partial dW+db | nth unit buffers]. */
typedef struct {
    float *wflip, *part, *unit;
    size_t part_floats, unit_floats;
} conv_work;

static void work_layout(int N, int C, int H, int W, int O, int k, int pad, conv_plan *pf,
                        conv_plan *pt, size_t *wflip, size_t *part, size_t *unit)
{
    plan_make(pf, N, C, H, W, O, k, pad);
    plan_make(pt, N, O, pf->Ho, pf->Wo, C, k, k - 1 - pad); /* the dX pass */
    size_t uf = plan_unit_floats(pf), ut = plan_unit_floats(pt);
    *unit = uf > ut ? uf : ut;
    *wflip = ALIGN16((size_t)O * C * k * k);
    *part = ALIGN16((size_t)O * pf->K + O);
}

/* Direct path scratch: [packed weights | flipped packed weights | nth partials | nth
 * thread buffers]. */
static size_t d3_layout(const d3_plan *p, size_t *wpk, size_t *wfl, size_t *part, size_t *thr)
{
    *wpk = ALIGN16((size_t)p->Op * p->C * 9);
    *wfl = ALIGN16((size_t)p->Cp * p->O * 9);
    *part = ALIGN16((size_t)p->O * p->C * 9 + p->O);
    *thr = d3_thread_floats(p);
    size_t maxth = (size_t)max_threads();
    return *wpk + *wfl + maxth * *part + maxth * *thr + 16;
}

static size_t im2col_work_floats(int N, int C, int H, int W, int O, int k, int pad)
{
    conv_plan pf, pt;
    size_t wflip, part, unit;
    work_layout(N, C, H, W, O, k, pad, &pf, &pt, &wflip, &part, &unit);
    size_t maxth = (size_t)max_threads();
    return wflip + maxth * part + maxth * unit + 16;
}

size_t dfl_k_conv2d_work_floats(int N, int C, int H, int W, int O, int k, int pad)
{
    if (use_direct(k, pad)) {
        d3_plan p;
        size_t a, b, c, d;
        d3_make(&p, N, C, H, W, O);
        size_t n = d3_layout(&p, &a, &b, &c, &d);
        if (p.Qv * D3_VL < D3_DW_MIN_Q) { /* dW by im2col first, in the same buffer */
            size_t m = im2col_work_floats(N, C, H, W, O, k, pad);
            if (m > n) n = m;
        }
        return n;
    }
    return im2col_work_floats(N, C, H, W, O, k, pad);
}

static float *align64(float *w) { return (float *)(((uintptr_t)w + 63) & ~(uintptr_t)63); }

static void work_split(float *work, int N, int C, int H, int W, int O, int k, int pad,
                       conv_plan *pf, conv_plan *pt, conv_work *cw)
{
    size_t wflip, part, unit;
    work_layout(N, C, H, W, O, k, pad, pf, pt, &wflip, &part, &unit);
    float *w = align64(work); /* the arena is aligned; a caller buffer may not be */
    cw->wflip = w;
    cw->part = w + wflip;
    cw->part_floats = part;
    cw->unit = cw->part + (size_t)max_threads() * part;
    cw->unit_floats = unit;
}

void dfl_k_conv2d_fwd(const float *x, const float *w, const float *b, float *y, int N, int C,
                      int H, int W, int O, int k, int pad, float *work)
{
#if D3_AVAILABLE
    if (use_direct(k, pad)) {
        d3_plan p;
        size_t wpk, wfl, part, thr;
        d3_make(&p, N, C, H, W, O);
        d3_layout(&p, &wpk, &wfl, &part, &thr);
        float *wp = align64(work);
        d3_pack(w, O, C, 0, wp);
        d3_fwd(&p, x, wp, b, y, wp + wpk + wfl + (size_t)max_threads() * part, thr);
        return;
    }
#endif
    conv_plan pf, pt;
    conv_work cw;
    work_split(work, N, C, H, W, O, k, pad, &pf, &pt, &cw);
    conv_fwd_core(&pf, x, w, b, y, 0, cw.unit, cw.unit_floats);
}

/* ------------------------------------------------------------------ backward */

/* dW and db: thread 0 accumulates straight into dw/db, the others into partials reduced at the
 * end. */
static void conv_dw(const conv_plan *p, const float *x, const float *dy, float *dw, float *db,
                    const conv_work *cw)
{
    if (p->nth <= 1) {
        for (int u = 0; u < p->units; u++) unit_dw(p, u, x, dy, dw, db, cw->unit);
        return;
    }
    size_t OK = (size_t)p->O * p->K;
#pragma omp parallel num_threads(p->nth)
    {
        int t = omp_get_thread_num();
        float *part = cw->part + (size_t)t * cw->part_floats;
        float *dwp = NULL, *dbp = NULL;
        if (t == 0) {
            dwp = dw;
            dbp = db;
        } else {
            if (dw) { memset(part, 0, OK * sizeof(float)); dwp = part; }
            if (db) { memset(part + OK, 0, (size_t)p->O * sizeof(float)); dbp = part + OK; }
        }
        float *s = cw->unit + (size_t)t * cw->unit_floats;
#pragma omp for schedule(static)
        for (int u = 0; u < p->units; u++) unit_dw(p, u, x, dy, dwp, dbp, s);
        /* implicit barrier; then sum the partials in parallel over dW entries */
        if (dw) {
#pragma omp for schedule(static)
            for (size_t i = 0; i < OK; i++) {
                float acc = 0.0f;
                for (int q = 1; q < p->nth; q++) acc += cw->part[(size_t)q * cw->part_floats + i];
                dw[i] += acc;
            }
        }
        if (db) {
#pragma omp single
            for (int o = 0; o < p->O; o++)
                for (int q = 1; q < p->nth; q++) db[o] += cw->part[(size_t)q * cw->part_floats + OK + o];
        }
    }
}

void dfl_k_conv2d_bwd(const float *x, const float *w, const float *dy, float *dx, float *dw,
                      float *db, int N, int C, int H, int W, int O, int k, int pad, float *work)
{
#if D3_AVAILABLE
    if (use_direct(k, pad)) {
        d3_plan p;
        size_t wpk, wfl, part, thr;
        d3_make(&p, N, C, H, W, O);
        d3_layout(&p, &wpk, &wfl, &part, &thr);
        if (p.Qv * D3_VL < D3_DW_MIN_Q && (dw || db)) {
            conv_plan pf, pt;
            conv_work cw;
            work_split(work, N, C, H, W, O, k, pad, &pf, &pt, &cw);
            conv_dw(&pf, x, dy, dw, db, &cw);
            dw = db = NULL;
            if (!dx) return;
        }
        float *base = align64(work), *wf = base + wpk, *parts = wf + wfl;
        if (dx) d3_pack(w, O, C, 1, wf);
        d3_bwd(&p, x, dx ? wf : NULL, dy, dx, dw, db, parts + (size_t)max_threads() * part, thr,
               parts, part);
        return;
    }
#endif
    conv_plan pf, pt;
    conv_work cw;
    work_split(work, N, C, H, W, O, k, pad, &pf, &pt, &cw);
    if (dw || db) conv_dw(&pf, x, dy, dw, db, &cw);
    if (dx) {
        /* w'[c, o, i, j] = w[o, c, k-1-i, k-1-j]: a (C, O k k) matrix. */
        size_t kk = (size_t)k * k;
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
    dfl_arena_release(ctx, work, wf * sizeof(float)); /* scratch: reusable by the next op */
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
    size_t wf = dfl_k_conv2d_work_floats(N, C, H, Wd, O, k, pad);
    float *work = dfl_arena_alloc(ctx, wf * sizeof(float));
    if (!work) return NULL;
    dfl_k_conv2d_fwd(x->data, W->data, b ? b->data : NULL, out->data, N, C, H, Wd, O, k, pad, work);
    dfl_arena_release(ctx, work, wf * sizeof(float)); /* scratch: reusable by the next op */
    dfl_node *nd = dfl_tape_push(ctx, conv2d_backward, "conv2d", out, in, nin);
    if (nd) nd->iarg[0] = pad;
    return out;
}
