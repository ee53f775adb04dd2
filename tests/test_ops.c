/* Tests of the numerical ops (ops.h) and their raw kernels (kernels.h).
 *
 * (a) Fast kernels against the naive references of ops_ref.c on random shapes, across thread
 *     counts and conv blocking choices.
 * (b) Every op's backward (through the tape, dfl_backward_vjp with a random cotangent r) against
 *     central finite differences of L = sum(r * f(x)) computed with double-precision forward
 *     functions written here, for every input (data and parameters): on hand-picked shapes, then
 *     on shapes drawn from a seeded RNG (test_grad_random_shapes; failures print the shapes and
 *     the seed, DFL_TEST_SEED / DFL_TEST_TRIALS change the base seed and the trial count).
 * (c) Tape behaviour: accumulation when a tensor is used twice, persistent parameter grads,
 *     no-grad mode, errors and NULL propagation.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "difflow/core.h"
#include "difflow/kernels.h"
#include "difflow/ops.h"

/* ------------------------------------------------------------------ helpers */

static dfl_rng g_rng;

static float *rand_buf(size_t n, float scale)
{
    float *p = malloc((n ? n : 1) * sizeof(float));
    assert_non_null(p);
    for (size_t i = 0; i < n; i++) p[i] = scale * dfl_rng_normal(&g_rng);
    return p;
}

static float *copy_buf(const float *src, size_t n)
{
    float *p = malloc((n ? n : 1) * sizeof(float));
    assert_non_null(p);
    memcpy(p, src, n * sizeof(float));
    return p;
}

/* max|got - ref| / (max|ref| + floor); prints the worst element when above tol. */
static int close_d_floor(const char *what, const float *got, const double *ref, size_t n,
                         double tol, double floor)
{
    double maxref = 0.0, maxdiff = 0.0;
    size_t at = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)got[i] - ref[i]);
        if (!(d <= maxdiff)) { maxdiff = d; at = i; } /* also catches NaN */
        if (fabs(ref[i]) > maxref) maxref = fabs(ref[i]);
    }
    double rel = maxdiff / (maxref + floor);
    if (!(rel <= tol)) {
        fprintf(stderr, "  %s: rel err %.3g > tol %.3g (n=%zu, worst [%zu]: got %.9g ref %.9g, max|ref| %.3g)\n",
                what, rel, tol, n, at, (double)got[at], ref[at], maxref);
        return 0;
    }
    return 1;
}

/* max|got - ref| / (max|ref| + 1e-6). */
static int close_d(const char *what, const float *got, const double *ref, size_t n, double tol)
{
    return close_d_floor(what, got, ref, n, tol, 1e-6);
}

static int close_f(const char *what, const float *got, const float *ref, size_t n, double tol)
{
    double *r = malloc((n ? n : 1) * sizeof(double));
    assert_non_null(r);
    for (size_t i = 0; i < n; i++) r[i] = ref[i];
    int ok = close_d(what, got, r, n, tol);
    free(r);
    return ok;
}

#define CHECK_F(what, got, ref, n, tol) assert_true(close_f(what, got, ref, n, tol))
#define CHECK_D(what, got, ref, n, tol) assert_true(close_d(what, got, ref, n, tol))

/* Seeds of the random-shape tests: DFL_TEST_SEED sets the base seed, DFL_TEST_TRIALS the trials
 * per op (defaults below). */
#define RAND_SEED_DEFAULT 0x5eedULL
#define RAND_TRIALS_DEFAULT 3

static uint64_t env_u64(const char *name, uint64_t dflt)
{
    const char *s = getenv(name);
    if (!s || !*s) return dflt;
    char *end;
    unsigned long long v = strtoull(s, &end, 0);
    return *end ? dflt : (uint64_t)v;
}

/* Uniform integer in [lo, hi]. */
static int rnd_int(dfl_rng *r, int lo, int hi) { return lo + (int)dfl_rng_below(r, (uint32_t)(hi - lo + 1)); }

static int setup(void **state)
{
    (void)state;
    dfl_rng_init(&g_rng, 1234);
    return 0;
}

/* ================================================================== (a) kernels vs references */

/* Scale of the random values gradient buffers start from (backward kernels accumulate): small,
 * so the comparison is not dominated by cancellation against the initial value. */
#define GSCALE 0.05f

static void test_linear_kernels(void **state)
{
    (void)state;
    const int cfg[][3] = {{1, 1, 1}, {7, 13, 5}, {64, 128, 96}, {33, 3, 256}};
    for (size_t t = 0; t < sizeof cfg / sizeof cfg[0]; t++) {
        int M = cfg[t][0], K = cfg[t][1], N = cfg[t][2];
        for (int hasb = 0; hasb < 2; hasb++) {
            float *x = rand_buf((size_t)M * K, 1), *w = rand_buf((size_t)N * K, 1), *b = rand_buf(N, 1);
            float *y = rand_buf((size_t)M * N, 1), *yr = rand_buf((size_t)M * N, 1);
            dfl_k_linear_fwd(x, w, hasb ? b : NULL, y, M, K, N);
            dfl_k_linear_fwd_ref(x, w, hasb ? b : NULL, yr, M, K, N);
            CHECK_F("linear fwd", y, yr, (size_t)M * N, 1e-5);
            float *dy = rand_buf((size_t)M * N, 1);
            float *dx = rand_buf((size_t)M * K, GSCALE), *dw = rand_buf((size_t)N * K, GSCALE), *db = rand_buf(N, GSCALE);
            float *dxr = copy_buf(dx, (size_t)M * K), *dwr = copy_buf(dw, (size_t)N * K), *dbr = copy_buf(db, N);
            dfl_k_linear_bwd(x, w, dy, dx, dw, hasb ? db : NULL, M, K, N);
            dfl_k_linear_bwd_ref(x, w, dy, dxr, dwr, hasb ? dbr : NULL, M, K, N);
            CHECK_F("linear dx", dx, dxr, (size_t)M * K, 1e-5);
            CHECK_F("linear dw", dw, dwr, (size_t)N * K, 1e-5);
            CHECK_F("linear db", db, dbr, N, 1e-5);
            free(x); free(w); free(b); free(y); free(yr); free(dy);
            free(dx); free(dw); free(db); free(dxr); free(dwr); free(dbr);
        }
    }
}

typedef struct { int N, C, H, W, O, k, pad; } conv_cfg;

/* Fast conv (forward, full backward, dw-only backward) against the reference, for every
 * combination of thread count, block size and direct 3x3 kernel on/off. */
static void conv_vs_ref(const conv_cfg *c)
{
    int Ho = dfl_k_conv2d_out_size(c->H, c->k, c->pad), Wo = dfl_k_conv2d_out_size(c->W, c->k, c->pad);
    size_t nx = (size_t)c->N * c->C * c->H * c->W, nw = (size_t)c->O * c->C * c->k * c->k;
    size_t ny = (size_t)c->N * c->O * Ho * Wo;
    float *x = rand_buf(nx, 1), *w = rand_buf(nw, 1), *b = rand_buf(c->O, 1), *dy = rand_buf(ny, 1);
    float *dx0 = rand_buf(nx, GSCALE), *dw0 = rand_buf(nw, GSCALE), *db0 = rand_buf(c->O, GSCALE);
    float *yr = malloc(ny * sizeof(float)), *yr0 = malloc(ny * sizeof(float));
    float *dxr = copy_buf(dx0, nx), *dwr = copy_buf(dw0, nw), *dbr = copy_buf(db0, c->O);
    float *dwr0 = copy_buf(dw0, nw);
    dfl_k_conv2d_fwd_ref(x, w, b, yr, c->N, c->C, c->H, c->W, c->O, c->k, c->pad);
    dfl_k_conv2d_fwd_ref(x, w, NULL, yr0, c->N, c->C, c->H, c->W, c->O, c->k, c->pad);
    dfl_k_conv2d_bwd_ref(x, w, dy, dxr, dwr, dbr, c->N, c->C, c->H, c->W, c->O, c->k, c->pad);
    dfl_k_conv2d_bwd_ref(x, w, dy, NULL, dwr0, NULL, c->N, c->C, c->H, c->W, c->O, c->k, c->pad);
    float *y = malloc(ny * sizeof(float)), *dx = malloc(nx * sizeof(float));
    float *dw = malloc(nw * sizeof(float)), *db = malloc(c->O * sizeof(float));
    const size_t blocks[] = {0, 64, 3000}; /* default; one row or one image per unit; mixed */
    const int threads[] = {1, 3};
    int old_threads = omp_get_max_threads();
    for (int direct = 0; direct < 2; direct++)
        for (int t = 0; t < 2; t++)
            for (int bl = 0; bl < 3; bl++) {
                if (direct && bl) continue; /* the direct path has no blocking */
                omp_set_num_threads(threads[t]);
                size_t old_block = dfl_k_conv2d_set_block(blocks[bl]);
                int old_direct = dfl_k_conv2d_set_direct(direct);
                size_t wf = dfl_k_conv2d_work_floats(c->N, c->C, c->H, c->W, c->O, c->k, c->pad);
                float *work = malloc((wf + 1) * sizeof(float));
                assert_non_null(work);
                float *wk = work + (bl & 1); /* also a misaligned work buffer */
                memcpy(dx, dx0, nx * sizeof(float));
                memcpy(dw, dw0, nw * sizeof(float));
                memcpy(db, db0, c->O * sizeof(float));
                int ok = 1;
                dfl_k_conv2d_fwd(x, w, b, y, c->N, c->C, c->H, c->W, c->O, c->k, c->pad, wk);
                ok &= close_f("forward", y, yr, ny, 2e-5);
                dfl_k_conv2d_bwd(x, w, dy, dx, dw, db, c->N, c->C, c->H, c->W, c->O, c->k, c->pad, wk);
                ok &= close_f("dx", dx, dxr, nx, 2e-5);
                ok &= close_f("dw", dw, dwr, nw, 2e-5);
                ok &= close_f("db", db, dbr, c->O, 2e-5);
                /* no bias; only dw requested */
                memcpy(dw, dw0, nw * sizeof(float));
                dfl_k_conv2d_fwd(x, w, NULL, y, c->N, c->C, c->H, c->W, c->O, c->k, c->pad, wk);
                ok &= close_f("forward without bias", y, yr0, ny, 2e-5);
                dfl_k_conv2d_bwd(x, w, dy, NULL, dw, NULL, c->N, c->C, c->H, c->W, c->O, c->k, c->pad, wk);
                ok &= close_f("dw only", dw, dwr0, nw, 2e-5);
                free(work);
                /* restore before a failure can jump out */
                dfl_k_conv2d_set_direct(old_direct);
                dfl_k_conv2d_set_block(old_block);
                omp_set_num_threads(old_threads);
                if (!ok)
                    fail_msg("conv N%d C%d %dx%d O%d k%d pad %d (direct %d, %d threads, block %zu) differs from the reference",
                             c->N, c->C, c->H, c->W, c->O, c->k, c->pad, direct, threads[t], blocks[bl]);
            }
    free(x); free(w); free(b); free(dy); free(dx0); free(dw0); free(db0); free(yr); free(yr0);
    free(dxr); free(dwr); free(dbr); free(dwr0); free(y); free(dx); free(dw); free(db);
}

static void test_conv_kernels(void **state)
{
    (void)state;
    const conv_cfg cfg[] = {
        {3, 5, 9, 7, 4, 3, 1},    /* odd sizes, C != O */
        {4, 6, 5, 11, 3, 1, 0},   /* 1x1, direct GEMM */
        {1, 3, 6, 6, 2, 3, 1},    /* batch 1: threaded-BLAS path */
        {1, 4, 12, 11, 3, 3, 1},  /* batch 1 */
        {6, 16, 28, 28, 8, 3, 1}, /* 28x28: row-block units */
        {3, 5, 13, 11, 4, 3, 1},  /* odd sizes */
        {2, 3, 12, 10, 4, 5, 2},  /* k = 5, same width */
        {16, 8, 7, 7, 12, 3, 1},  /* small images: multi-image im2col units */
        {5, 7, 12, 10, 9, 1, 0},  /* 1x1, multi-image units */
        {3, 4, 8, 9, 5, 3, 0},    /* valid conv (output smaller) */
        {2, 3, 5, 6, 4, 3, 2},    /* pad > k-1: the dx pass crops */
        {2, 3, 6, 5, 2, 2, 1},    /* even kernel */
        {3, 2, 4, 5, 3, 1, 1},    /* 1x1 with padding */
        {2, 2, 1, 1, 3, 3, 1},    /* 1x1 image */
        {2, 3, 2, 12, 2, 5, 2},   /* image shorter than the kernel */
        {5, 1, 9, 10, 6, 3, 1},   /* one input channel (the U-Net's first conv) */
        {4, 7, 6, 5, 1, 3, 1},    /* one output channel (its last) */
        {3, 9, 5, 8, 5, 3, 1},    /* channel counts not multiples of 4 */
    };
    for (size_t i = 0; i < sizeof cfg / sizeof cfg[0]; i++) conv_vs_ref(&cfg[i]);
}

static void test_group_norm_kernels(void **state)
{
    (void)state;
    const int cfg[][4] = {{3, 12, 10, 4}, {2, 8, 1, 2}, {5, 32, 49, 8}, {4, 64, 196, 8}, {1, 6, 7, 1}};
    for (size_t t = 0; t < sizeof cfg / sizeof cfg[0]; t++) {
        int N = cfg[t][0], C = cfg[t][1], S = cfg[t][2], G = cfg[t][3];
        size_t n = (size_t)N * C * S;
        float *x = rand_buf(n, 2), *gamma = rand_buf(C, 1), *beta = rand_buf(C, 1);
        for (size_t i = 0; i < n; i++) x[i] += 3.0f; /* offset: exercises the one-pass variance */
        float *y = rand_buf(n, 1), *yr = rand_buf(n, 1);
        float *mean = rand_buf((size_t)N * G, 1), *rstd = rand_buf((size_t)N * G, 1);
        float *meanr = rand_buf((size_t)N * G, 1), *rstdr = rand_buf((size_t)N * G, 1);
        dfl_k_group_norm_fwd(x, gamma, beta, y, mean, rstd, N, C, S, G, 1e-5f);
        dfl_k_group_norm_fwd_ref(x, gamma, beta, yr, meanr, rstdr, N, C, S, G, 1e-5f);
        CHECK_F("gn y", y, yr, n, 2e-5);
        CHECK_F("gn mean", mean, meanr, (size_t)N * G, 1e-5);
        CHECK_F("gn rstd", rstd, rstdr, (size_t)N * G, 1e-5);
        float *dy = rand_buf(n, 1), *dx = rand_buf(n, GSCALE), *dg = rand_buf(C, GSCALE), *db = rand_buf(C, GSCALE);
        float *dxr = copy_buf(dx, n), *dgr = copy_buf(dg, C), *dbr = copy_buf(db, C);
        float *work = malloc(dfl_k_group_norm_work_floats(N, C) * sizeof(float));
        dfl_k_group_norm_bwd(x, gamma, mean, rstd, dy, dx, dg, db, N, C, S, G, work);
        dfl_k_group_norm_bwd_ref(x, gamma, meanr, rstdr, dy, dxr, dgr, dbr, N, C, S, G);
        CHECK_F("gn dx", dx, dxr, n, 1e-4);
        CHECK_F("gn dgamma", dg, dgr, C, 1e-4);
        CHECK_F("gn dbeta", db, dbr, C, 1e-5);
        free(x); free(gamma); free(beta); free(y); free(yr); free(mean); free(rstd); free(meanr);
        free(rstdr); free(dy); free(dx); free(dg); free(db); free(dxr); free(dgr); free(dbr); free(work);
    }
}

/* Fused GroupNorm + SiLU: bit-identical to the two fast kernels in turn (forward and backward), and
 * close to the naive references. */
static void test_group_norm_silu_kernels(void **state)
{
    (void)state;
    const int cfg[][4] = {{3, 12, 10, 4}, {2, 8, 1, 2}, {5, 32, 49, 8}, {4, 64, 196, 8}, {1, 6, 7, 1}};
    for (size_t t = 0; t < sizeof cfg / sizeof cfg[0]; t++) {
        int N = cfg[t][0], C = cfg[t][1], S = cfg[t][2], G = cfg[t][3];
        size_t n = (size_t)N * C * S, ng = (size_t)N * G;
        float *x = rand_buf(n, 2), *gamma = rand_buf(C, 1), *beta = rand_buf(C, 1);
        for (size_t i = 0; i < n; i++) x[i] += 1.0f;
        float *y = rand_buf(n, 1), *z = rand_buf(n, 1), *y2 = rand_buf(n, 1), *yr = rand_buf(n, 1);
        float *mean = rand_buf(ng, 1), *rstd = rand_buf(ng, 1), *mean2 = rand_buf(ng, 1), *rstd2 = rand_buf(ng, 1);
        dfl_k_group_norm_silu_fwd(x, gamma, beta, y, mean, rstd, N, C, S, G, 1e-5f);
        dfl_k_group_norm_fwd(x, gamma, beta, z, mean2, rstd2, N, C, S, G, 1e-5f);
        dfl_k_silu_fwd(z, y2, n);
        assert_memory_equal(y, y2, n * sizeof(float));
        assert_memory_equal(mean, mean2, ng * sizeof(float));
        assert_memory_equal(rstd, rstd2, ng * sizeof(float));
        dfl_k_group_norm_silu_fwd_ref(x, gamma, beta, yr, mean2, rstd2, N, C, S, G, 1e-5f);
        CHECK_F("gn+silu y", y, yr, n, 2e-5);
        /* backward: fused against silu_bwd then group_norm_bwd (fast), and against the references */
        float *dy = rand_buf(n, 1), *dx = rand_buf(n, GSCALE), *dg = rand_buf(C, GSCALE), *db = rand_buf(C, GSCALE);
        float *dx2 = copy_buf(dx, n), *dg2 = copy_buf(dg, C), *db2 = copy_buf(db, C);
        float *dxr = copy_buf(dx, n), *dgr = copy_buf(dg, C), *dbr = copy_buf(db, C);
        float *work = malloc(dfl_k_group_norm_silu_work_floats(N, C, S) * sizeof(float));
        dfl_k_group_norm_silu_bwd(x, gamma, beta, mean, rstd, dy, dx, dg, db, N, C, S, G, work);
        float *dz = calloc(n, sizeof(float));
        dfl_k_silu_bwd(z, dy, dz, n);
        dfl_k_group_norm_bwd(x, gamma, mean, rstd, dz, dx2, dg2, db2, N, C, S, G, work);
        assert_memory_equal(dx, dx2, n * sizeof(float));
        assert_memory_equal(dg, dg2, C * sizeof(float));
        assert_memory_equal(db, db2, C * sizeof(float));
        dfl_k_group_norm_silu_bwd_ref(x, gamma, beta, mean, rstd, dy, dxr, dgr, dbr, N, C, S, G);
        CHECK_F("gn+silu dx", dx, dxr, n, 1e-4);
        CHECK_F("gn+silu dgamma", dg, dgr, C, 1e-4);
        CHECK_F("gn+silu dbeta", db, dbr, C, 1e-4);
        /* NULL gradients are skipped */
        dfl_k_group_norm_silu_bwd(x, gamma, beta, mean, rstd, dy, NULL, NULL, db2, N, C, S, G, work);
        free(x); free(gamma); free(beta); free(y); free(z); free(y2); free(yr); free(mean); free(rstd);
        free(mean2); free(rstd2); free(dy); free(dx); free(dg); free(db); free(dx2); free(dg2); free(db2);
        free(dxr); free(dgr); free(dbr); free(work); free(dz);
    }
}

static void test_silu_kernels(void **state)
{
    (void)state;
    const size_t sizes[] = {1, 7, 1000, 100003};
    for (size_t t = 0; t < 4; t++) {
        size_t n = sizes[t];
        float *x = rand_buf(n, 6);
        if (n > 10) { x[0] = 0.0f; x[1] = 100.0f; x[2] = -100.0f; x[3] = 87.5f; x[4] = -87.5f; x[5] = 1e-30f; }
        float *y = rand_buf(n, 1), *yr = rand_buf(n, 1), *dy = rand_buf(n, 1);
        float *dx = rand_buf(n, GSCALE), *dxr = copy_buf(dx, n);
        dfl_k_silu_fwd(x, y, n);
        dfl_k_silu_fwd_ref(x, yr, n);
        /* elementwise relative check: silu is a pointwise function. Below x = -87 the fast
         * kernel's exp is clamped: |y| < 1e-35 there instead of the (sub)normal x e^x. */
        for (size_t i = 0; i < n; i++) {
            double e = fabs((double)y[i] - yr[i]) / (fabs(yr[i]) + 1e-30);
            if (!(e < 1e-6 || fabs((double)y[i] - yr[i]) < 1e-33)) {
                fprintf(stderr, "  silu x=%.9g: got %.9g ref %.9g\n", (double)x[i], (double)y[i], (double)yr[i]);
                fail();
            }
        }
        dfl_k_silu_bwd(x, dy, dx, n);
        dfl_k_silu_bwd_ref(x, dy, dxr, n);
        CHECK_F("silu dx", dx, dxr, n, 1e-6);
        free(x); free(y); free(yr); free(dy); free(dx); free(dxr);
    }
}

static void test_binary_kernels(void **state)
{
    (void)state;
    /* {andim, ashape..., bndim, bshape...} */
    const int cases[][10] = {
        {4, 2, 3, 4, 5, 4, 2, 3, 4, 5}, /* same shape */
        {4, 2, 3, 4, 5, 3, 3, 1, 1, 0}, /* (N,C,H,W) + (C,1,1) */
        {2, 6, 7, 0, 0, 1, 7, 0, 0, 0}, /* (B,D) * (D) */
        {2, 6, 1, 0, 0, 2, 1, 9, 0, 0}, /* outer product (6,1) (1,9) */
        {3, 4, 1, 5, 0, 3, 1, 3, 5, 0}, /* (4,1,5) (1,3,5) */
        {1, 1, 0, 0, 0, 3, 2, 3, 4, 0}, /* scalar tensor + 3-D */
        {4, 8, 32, 16, 16, 4, 8, 32, 1, 1}, /* large (parallel), (N,C,1,1) */
        {4, 8, 32, 16, 16, 4, 8, 32, 16, 16}, /* large, same shape */
        {4, 2, 1, 3, 1, 4, 1, 4, 1, 5}, /* alternating broadcast */
        {4, 16, 32, 8, 9, 3, 32, 1, 1, 0}, /* large, (N,C,H,W) + (C,1,1): summed over N, H, W */
    };
    for (size_t t = 0; t < sizeof cases / sizeof cases[0]; t++) {
        int an = cases[t][0], bn = cases[t][5];
        int ash[4], bsh[4], ash4[4], bsh4[4], ysh4[4];
        for (int i = 0; i < an; i++) ash[i] = cases[t][1 + i];
        for (int i = 0; i < bn; i++) bsh[i] = cases[t][6 + i];
        for (int swap = 0; swap < 2; swap++) {
            const int *s1 = swap ? bsh : ash, *s2 = swap ? ash : bsh;
            int n1 = swap ? bn : an, n2 = swap ? an : bn;
            assert_true(dfl_k_broadcast_shape(n1, s1, n2, s2, ysh4) >= 1);
            for (int d = 0; d < 4; d++) { ash4[d] = 1; bsh4[d] = 1; }
            for (int i = 0; i < n1; i++) ash4[4 - n1 + i] = s1[i];
            for (int i = 0; i < n2; i++) bsh4[4 - n2 + i] = s2[i];
            size_t na = dfl_shape_numel(4, ash4), nb = dfl_shape_numel(4, bsh4), ny = dfl_shape_numel(4, ysh4);
            for (int op = 0; op < 3; op++) {
                float *a = rand_buf(na, 1), *b = rand_buf(nb, 1), *y = rand_buf(ny, 1), *yr = rand_buf(ny, 1);
                float *dy = rand_buf(ny, 1), *da = rand_buf(na, GSCALE), *db = rand_buf(nb, GSCALE);
                float *dar = copy_buf(da, na), *dbr = copy_buf(db, nb);
                dfl_k_binary_fwd((dfl_k_binop)op, a, ash4, b, bsh4, y, ysh4);
                dfl_k_binary_fwd_ref((dfl_k_binop)op, a, ash4, b, bsh4, yr, ysh4);
                char what[64];
                snprintf(what, sizeof what, "binary case %zu op %d swap %d", t, op, swap);
                if (!close_f(what, y, yr, ny, 1e-6)) fail_msg("%s fwd", what);
                dfl_k_binary_bwd((dfl_k_binop)op, a, ash4, b, bsh4, dy, ysh4, da, db);
                dfl_k_binary_bwd_ref((dfl_k_binop)op, a, ash4, b, bsh4, dy, ysh4, dar, dbr);
                if (!close_f(what, da, dar, na, 1e-5)) fail_msg("%s da", what);
                if (!close_f(what, db, dbr, nb, 1e-5)) fail_msg("%s db", what);
                free(a); free(b); free(y); free(yr); free(dy); free(da); free(db); free(dar); free(dbr);
            }
        }
    }
    int y4[4];
    const int s1[2] = {3, 4}, s2[2] = {2, 4}, s3[1] = {5};
    assert_int_equal(dfl_k_broadcast_shape(2, s1, 2, s2, y4), -1);
    assert_int_equal(dfl_k_broadcast_shape(2, s1, 1, s3, y4), -1);
}

static void test_misc_kernels(void **state)
{
    (void)state;
    /* add_channel */
    {
        int P = 24, S = 49;
        float *x = rand_buf((size_t)P * S, 1), *v = rand_buf(P, 1), *y = rand_buf((size_t)P * S, 1);
        float *yr = rand_buf((size_t)P * S, 1), *dy = rand_buf((size_t)P * S, 1);
        float *dx = rand_buf((size_t)P * S, GSCALE), *dv = rand_buf(P, GSCALE);
        float *dxr = copy_buf(dx, (size_t)P * S), *dvr = copy_buf(dv, P);
        dfl_k_add_channel_fwd(x, v, y, P, S);
        dfl_k_add_channel_fwd_ref(x, v, yr, P, S);
        CHECK_F("add_channel y", y, yr, (size_t)P * S, 1e-7);
        dfl_k_add_channel_bwd(dy, dx, dv, P, S);
        dfl_k_add_channel_bwd_ref(dy, dxr, dvr, P, S);
        CHECK_F("add_channel dx", dx, dxr, (size_t)P * S, 1e-7);
        CHECK_F("add_channel dv", dv, dvr, P, 1e-5);
        free(x); free(v); free(y); free(yr); free(dy); free(dx); free(dv); free(dxr); free(dvr);
    }
    /* avg_pool2 / upsample2, small and large (parallel) */
    const int cfg[][3] = {{3, 4, 6}, {64, 28, 28}};
    for (int t = 0; t < 2; t++) {
        int P = cfg[t][0], H = cfg[t][1], W = cfg[t][2];
        size_t n = (size_t)P * H * W, nq = n / 4, n4 = n * 4;
        float *x = rand_buf(n, 1), *y = rand_buf(nq, 1), *yr = rand_buf(nq, 1), *dy = rand_buf(nq, 1);
        float *dx = rand_buf(n, GSCALE), *dxr = copy_buf(dx, n);
        dfl_k_avg_pool2_fwd(x, y, P, H, W);
        dfl_k_avg_pool2_fwd_ref(x, yr, P, H, W);
        CHECK_F("avg_pool2 y", y, yr, nq, 1e-6);
        dfl_k_avg_pool2_bwd(dy, dx, P, H, W);
        dfl_k_avg_pool2_bwd_ref(dy, dxr, P, H, W);
        CHECK_F("avg_pool2 dx", dx, dxr, n, 1e-6);
        float *u = rand_buf(n4, 1), *ur = rand_buf(n4, 1), *du = rand_buf(n4, 1);
        float *dx2 = rand_buf(n, GSCALE), *dx2r = copy_buf(dx2, n);
        dfl_k_upsample2_fwd(x, u, P, H, W);
        dfl_k_upsample2_fwd_ref(x, ur, P, H, W);
        CHECK_F("upsample2 y", u, ur, n4, 0.0);
        dfl_k_upsample2_bwd(du, dx2, P, H, W);
        dfl_k_upsample2_bwd_ref(du, dx2r, P, H, W);
        CHECK_F("upsample2 dx", dx2, dx2r, n, 1e-6);
        free(x); free(y); free(yr); free(dy); free(dx); free(dxr); free(u); free(ur); free(du);
        free(dx2); free(dx2r);
    }
    /* reductions */
    {
        size_t n = 100000;
        int N = 8;
        float *a = rand_buf(n, 1), *b = rand_buf(n, 1), *w = rand_buf(N, 1);
        double s = dfl_k_sum(a, n), sr = dfl_k_sum_ref(a, n);
        assert_true(fabs(s - sr) <= 1e-9 * (fabs(sr) + 1.0));
        double e = dfl_k_sq_err(a, b, w, n, N), er = dfl_k_sq_err_ref(a, b, w, n, N);
        assert_true(fabs(e - er) <= 1e-9 * (fabs(er) + 1.0));
        e = dfl_k_sq_err(a, b, NULL, n, N);
        er = dfl_k_sq_err_ref(a, b, NULL, n, N);
        assert_true(fabs(e - er) <= 1e-9 * (fabs(er) + 1.0));
        free(a); free(b); free(w);
    }
}

/* The kernels with the simplest references (scale, axpy, fill_add, concat, sq_err and its
 * backward, sum, broadcast_shape) on random sizes, small and above the OpenMP threshold
 * (PAR_MIN = 2^15 elements), with gradient pointers NULL at random. Seeds as for the random
 * gradient checks below (DFL_TEST_SEED, DFL_TEST_TRIALS). */
static void test_misc_kernels_random(void **state)
{
    (void)state;
    uint64_t base = env_u64("DFL_TEST_SEED", RAND_SEED_DEFAULT);
    int trials = 2 * (int)env_u64("DFL_TEST_TRIALS", RAND_TRIALS_DEFAULT);
    for (int t = 0; t < trials; t++) {
        uint64_t seed = base * 1000003ULL + 999983ULL + (uint64_t)t;
        dfl_rng_init(&g_rng, seed);
        int big = t & 1;
        char what[160];
#define KCHECK(name, got, ref, n, tol)                                                            \
    do {                                                                                          \
        snprintf(what, sizeof what, "%s {n %zu, seed %llu = trial %d of DFL_TEST_SEED=%llu}",      \
                 name, (size_t)(n), (unsigned long long)seed, t, (unsigned long long)base);       \
        if (!close_f(what, got, ref, n, tol)) fail_msg("%s differs from the reference", what);   \
    } while (0)
        /* scale, axpy, fill_add */
        {
            size_t n = big ? (size_t)(1 << 15) + (size_t)rnd_int(&g_rng, 1, 5000) : (size_t)rnd_int(&g_rng, 1, 300);
            float s = 4.0f * dfl_rng_uniform(&g_rng) - 2.0f;
            float *x = rand_buf(n, 1), *y = rand_buf(n, 1), *yr = rand_buf(n, 1);
            float *dx = rand_buf(n, GSCALE), *dxr = copy_buf(dx, n);
            dfl_k_scale_fwd(x, s, y, n);
            dfl_k_scale_fwd_ref(x, s, yr, n);
            KCHECK("scale y", y, yr, n, 1e-7);
            dfl_k_axpy(s, x, dx, n);
            dfl_k_axpy_ref(s, x, dxr, n);
            KCHECK("axpy", dx, dxr, n, 1e-6);
            dfl_k_fill_add(s, dx, n);
            dfl_k_fill_add_ref(s, dxr, n);
            KCHECK("fill_add", dx, dxr, n, 1e-6);
            double sm = dfl_k_sum(x, n), smr = dfl_k_sum_ref(x, n);
            if (!(fabs(sm - smr) <= 1e-9 * (fabs(smr) + 1.0)))
                fail_msg("sum {n %zu, seed %llu}: %.17g vs ref %.17g", n, (unsigned long long)seed, sm, smr);
            free(x); free(y); free(yr); free(dx); free(dxr);
        }
        /* concat: y = [a; b] per sample, and its backward with da / db NULL at random */
        {
            int N = rnd_int(&g_rng, 1, 5);
            size_t Sa = (size_t)rnd_int(&g_rng, 1, 60), Sb = (size_t)rnd_int(&g_rng, 1, 60);
            if (big) { Sa *= 200; Sb *= 200; }
            size_t na = (size_t)N * Sa, nb = (size_t)N * Sb, ny = na + nb;
            float *a = rand_buf(na, 1), *b = rand_buf(nb, 1), *y = rand_buf(ny, 1), *yr = rand_buf(ny, 1);
            float *dy = rand_buf(ny, 1), *da = rand_buf(na, GSCALE), *db = rand_buf(nb, GSCALE);
            float *dar = copy_buf(da, na), *dbr = copy_buf(db, nb);
            int mask = rnd_int(&g_rng, 0, 3);
            dfl_k_concat_fwd(a, b, y, N, Sa, Sb);
            dfl_k_concat_fwd_ref(a, b, yr, N, Sa, Sb);
            KCHECK("concat y", y, yr, ny, 0.0);
            dfl_k_concat_bwd(dy, mask & 1 ? da : NULL, mask & 2 ? db : NULL, N, Sa, Sb);
            dfl_k_concat_bwd_ref(dy, mask & 1 ? dar : NULL, mask & 2 ? dbr : NULL, N, Sa, Sb);
            KCHECK("concat da", da, dar, na, 1e-7);
            KCHECK("concat db", db, dbr, nb, 1e-7);
            free(a); free(b); free(y); free(yr); free(dy); free(da); free(db); free(dar); free(dbr);
        }
        /* squared error and its backward, with and without per-sample weights */
        {
            int N = rnd_int(&g_rng, 1, 6);
            size_t per = (size_t)rnd_int(&g_rng, 1, 80);
            if (big) per *= 150;
            size_t n = (size_t)N * per;
            int weighted = rnd_int(&g_rng, 0, 1), mask = rnd_int(&g_rng, 0, 3);
            float g = 2.0f * dfl_rng_normal(&g_rng);
            float *a = rand_buf(n, 1), *b = rand_buf(n, 1), *w = rand_buf((size_t)N, 1);
            for (int i = 0; i < N; i++) w[i] = fabsf(w[i]) + 0.1f;
            const float *wp = weighted ? w : NULL;
            float *da = rand_buf(n, GSCALE), *db = rand_buf(n, GSCALE);
            float *dar = copy_buf(da, n), *dbr = copy_buf(db, n);
            double e = dfl_k_sq_err(a, b, wp, n, N), er = dfl_k_sq_err_ref(a, b, wp, n, N);
            if (!(fabs(e - er) <= 1e-9 * (fabs(er) + 1.0)))
                fail_msg("sq_err {N %d, n %zu, w %d, seed %llu}: %.17g vs ref %.17g", N, n, weighted,
                         (unsigned long long)seed, e, er);
            dfl_k_sq_err_bwd(a, b, wp, g, mask & 1 ? da : NULL, mask & 2 ? db : NULL, n, N);
            dfl_k_sq_err_bwd_ref(a, b, wp, g, mask & 1 ? dar : NULL, mask & 2 ? dbr : NULL, n, N);
            KCHECK(weighted ? "sq_err_bwd da (weighted)" : "sq_err_bwd da", da, dar, n, 1e-6);
            KCHECK(weighted ? "sq_err_bwd db (weighted)" : "sq_err_bwd db", db, dbr, n, 1e-6);
            free(a); free(b); free(w); free(da); free(db); free(dar); free(dbr);
        }
#undef KCHECK
        /* broadcast_shape against the NumPy rule, on compatible and incompatible shapes */
        for (int rep = 0; rep < 20; rep++) {
            int an = rnd_int(&g_rng, 1, 4), bn = rnd_int(&g_rng, 1, 4), ash[4], bsh[4], y4[4] = {0}, e4[4];
            for (int d = 0; d < an; d++) ash[d] = rnd_int(&g_rng, 1, 3);
            for (int d = 0; d < bn; d++) bsh[d] = rnd_int(&g_rng, 1, 3);
            int ok = 1, nd = an > bn ? an : bn;
            for (int d = 0; d < 4; d++) {
                int da = d < an ? ash[an - 1 - d] : 1, db = d < bn ? bsh[bn - 1 - d] : 1;
                if (da != db && da != 1 && db != 1) ok = 0;
                e4[3 - d] = da > db ? da : db;
            }
            int got = dfl_k_broadcast_shape(an, ash, bn, bsh, y4);
            if (got != (ok ? nd : -1) || (ok && memcmp(y4, e4, sizeof e4)))
                fail_msg("broadcast_shape rank %d / %d: got %d (%d,%d,%d,%d), want %d (%d,%d,%d,%d) {seed %llu}",
                         an, bn, got, y4[0], y4[1], y4[2], y4[3], ok ? nd : -1, e4[0], e4[1], e4[2],
                         e4[3], (unsigned long long)seed);
        }
    }
}

/* ================================================================== (b) gradient checks */

/* A test case: inputs (shapes, data or parameter), op parameters. */
typedef struct gc_case {
    const char *name;
    int nin;
    int ndim[4];
    int shape[4][4];
    int param[4];   /* 1: heap parameter (persistent grad); 0: arena-wrapped data */
    int nograd[4];  /* 1: input does not require grad (must get no gradient) */
    int ipar[2];
    float fpar[2];
    const float *w; /* mse weights */
    float offset;   /* added to every input value (GroupNorm mean) */
} gc_case;

typedef dfl_tensor *(*gc_op)(dfl_ctx *ctx, dfl_tensor **in, const gc_case *c);
typedef void (*gc_ref)(double *const *in, double *out, const gc_case *c);

static size_t numel(int nd, const int *sh) { return dfl_shape_numel(nd, sh); }

/* Runs the op, backward with a random cotangent, and compares each input's gradient with
 * central differences of the double reference. */
static void gradcheck(const gc_case *c, gc_op op, gc_ref ref)
{
    dfl_ctx *ctx = dfl_ctx_new();
    assert_non_null(ctx);
    dfl_tensor *in[4] = {0};
    float *raw[4] = {0};
    double *xd[4] = {0};
    for (int i = 0; i < c->nin; i++) {
        size_t n = numel(c->ndim[i], c->shape[i]);
        if (c->param[i]) {
            in[i] = dfl_tensor_new(c->ndim[i], c->shape[i], !c->nograd[i]);
            assert_non_null(in[i]);
            for (size_t j = 0; j < n; j++) in[i]->data[j] = dfl_rng_normal(&g_rng) + c->offset;
        } else {
            raw[i] = rand_buf(n, 1);
            for (size_t j = 0; j < n; j++) raw[i][j] += c->offset;
            in[i] = dfl_tensor_wrap(ctx, raw[i], c->ndim[i], c->shape[i]);
            assert_non_null(in[i]);
            in[i]->requires_grad = !c->nograd[i];
        }
        xd[i] = malloc(n * sizeof(double));
        for (size_t j = 0; j < n; j++) xd[i][j] = in[i]->data[j];
    }
    dfl_tensor *out = op(ctx, in, c);
    if (!out) fail_msg("%s: op returned NULL: %s", c->name, dfl_last_error());
    size_t no = out->n;
    double *yd = malloc(no * sizeof(double));
    ref(xd, yd, c);
    /* The float forward's error scales with its terms (inputs ~ N(0,1): outputs of order 1), not
     * with its result: an output that cancels to ~1e-4 (a random 1-output linear) would fail a
     * purely relative test. Hence the 1e-2 floor, i.e. absolute errors up to 2e-7 always pass. */
    if (!close_d_floor(c->name, out->data, yd, no, 2e-5, 1e-2))
        fail_msg("%s: forward differs from the double reference", c->name);
    float *r = rand_buf(no, 1);
    assert_int_equal(dfl_backward_vjp(ctx, out, r), DFL_OK);
    const double h = 1e-6;
    for (int i = 0; i < c->nin; i++) {
        size_t n = numel(c->ndim[i], c->shape[i]);
        if (c->nograd[i]) {
            if (!c->param[i]) assert_null(in[i]->grad);
            continue;
        }
        assert_non_null(in[i]->grad);
        double *num = malloc(n * sizeof(double));
        for (size_t j = 0; j < n; j++) {
            double save = xd[i][j], lp = 0.0, lm = 0.0;
            xd[i][j] = save + h;
            ref(xd, yd, c);
            for (size_t q = 0; q < no; q++) lp += r[q] * yd[q];
            xd[i][j] = save - h;
            ref(xd, yd, c);
            for (size_t q = 0; q < no; q++) lm += r[q] * yd[q];
            xd[i][j] = save;
            num[j] = (lp - lm) / (2.0 * h);
        }
        char what[400];
        snprintf(what, sizeof what, "%s: d/d input %d", c->name, i);
        if (!close_d(what, in[i]->grad, num, n, 1e-3)) fail_msg("%s: gradient mismatch", what);
        free(num);
    }
    dfl_ctx_free(ctx);
    for (int i = 0; i < c->nin; i++) {
        if (c->param[i]) dfl_tensor_free(in[i]);
        free(raw[i]);
        free(xd[i]);
    }
    free(yd);
    free(r);
}

/* ---- double-precision reference forwards */

static void ref_linear(double *const *in, double *y, const gc_case *c)
{
    int nd = c->ndim[0], K = c->shape[0][nd - 1], N = c->shape[1][0];
    size_t M = numel(nd, c->shape[0]) / (size_t)K;
    for (size_t m = 0; m < M; m++)
        for (int j = 0; j < N; j++) {
            double s = c->nin > 2 ? in[2][j] : 0.0;
            for (int i = 0; i < K; i++) s += in[0][m * K + i] * in[1][(size_t)j * K + i];
            y[m * N + j] = s;
        }
}

static void ref_conv(double *const *in, double *y, const gc_case *c)
{
    int N = c->shape[0][0], C = c->shape[0][1], H = c->shape[0][2], W = c->shape[0][3];
    int O = c->shape[1][0], k = c->shape[1][2], p = c->ipar[0];
    int Ho = H + 2 * p - k + 1, Wo = W + 2 * p - k + 1;
    for (int n = 0; n < N; n++)
        for (int o = 0; o < O; o++)
            for (int a = 0; a < Ho; a++)
                for (int b = 0; b < Wo; b++) {
                    double s = c->nin > 2 ? in[2][o] : 0.0;
                    for (int ci = 0; ci < C; ci++)
                        for (int i = 0; i < k; i++)
                            for (int j = 0; j < k; j++) {
                                int hi = a + i - p, wi = b + j - p;
                                if (hi < 0 || hi >= H || wi < 0 || wi >= W) continue;
                                s += in[0][(((size_t)n * C + ci) * H + hi) * W + wi] *
                                     in[1][(((size_t)o * C + ci) * k + i) * k + j];
                            }
                    y[(((size_t)n * O + o) * Ho + a) * Wo + b] = s;
                }
}

static void ref_group_norm(double *const *in, double *y, const gc_case *c)
{
    int N = c->shape[0][0], C = c->shape[0][1], G = c->ipar[0];
    size_t S = numel(c->ndim[0], c->shape[0]) / ((size_t)N * C);
    int Cg = C / G;
    size_t M = (size_t)Cg * S;
    for (int n = 0; n < N; n++)
        for (int g = 0; g < G; g++) {
            const double *x = in[0] + ((size_t)n * C + (size_t)g * Cg) * S;
            double mu = 0.0, var = 0.0;
            for (size_t i = 0; i < M; i++) mu += x[i];
            mu /= (double)M;
            for (size_t i = 0; i < M; i++) var += (x[i] - mu) * (x[i] - mu);
            var /= (double)M;
            double r = 1.0 / sqrt(var + c->fpar[0]);
            for (size_t i = 0; i < M; i++) {
                int ch = g * Cg + (int)(i / S);
                y[((size_t)n * C + (size_t)g * Cg) * S + i] = (x[i] - mu) * r * in[1][ch] + in[2][ch];
            }
        }
}

static void ref_silu(double *const *in, double *y, const gc_case *c)
{
    size_t n = numel(c->ndim[0], c->shape[0]);
    for (size_t i = 0; i < n; i++) y[i] = in[0][i] / (1.0 + exp(-in[0][i]));
}

static void ref_group_norm_silu(double *const *in, double *y, const gc_case *c)
{
    ref_group_norm(in, y, c);
    size_t n = numel(c->ndim[0], c->shape[0]);
    for (size_t i = 0; i < n; i++) y[i] = y[i] / (1.0 + exp(-y[i]));
}

static void pad4c(int nd, const int *sh, int out[4])
{
    for (int d = 0; d < 4; d++) out[d] = 1;
    for (int i = 0; i < nd; i++) out[4 - nd + i] = sh[i];
}

static void ref_binary(double *const *in, double *y, const gc_case *c)
{
    int a4[4], b4[4], y4[4];
    pad4c(c->ndim[0], c->shape[0], a4);
    pad4c(c->ndim[1], c->shape[1], b4);
    for (int d = 0; d < 4; d++) y4[d] = a4[d] > b4[d] ? a4[d] : b4[d];
    size_t n = numel(4, y4);
    for (size_t i = 0; i < n; i++) {
        size_t rem = i, ia = 0, ib = 0, mul_a = 1, mul_b = 1;
        for (int d = 3; d >= 0; d--) {
            size_t idx = rem % (size_t)y4[d];
            rem /= (size_t)y4[d];
            if (a4[d] > 1) ia += idx * mul_a;
            if (b4[d] > 1) ib += idx * mul_b;
            mul_a *= (size_t)a4[d];
            mul_b *= (size_t)b4[d];
        }
        double av = in[0][ia], bv = in[1][ib];
        y[i] = c->ipar[0] == DFL_K_ADD ? av + bv : c->ipar[0] == DFL_K_SUB ? av - bv : av * bv;
    }
}

static void ref_scale(double *const *in, double *y, const gc_case *c)
{
    size_t n = numel(c->ndim[0], c->shape[0]);
    for (size_t i = 0; i < n; i++) y[i] = c->fpar[0] * in[0][i];
}

static void ref_add_channel(double *const *in, double *y, const gc_case *c)
{
    size_t P = numel(2, c->shape[1]), S = numel(c->ndim[0], c->shape[0]) / P;
    for (size_t p = 0; p < P; p++)
        for (size_t i = 0; i < S; i++) y[p * S + i] = in[0][p * S + i] + in[1][p];
}

static void ref_avg_pool2(double *const *in, double *y, const gc_case *c)
{
    int P = c->shape[0][0] * c->shape[0][1], H = c->shape[0][2], W = c->shape[0][3];
    for (int p = 0; p < P; p++)
        for (int i = 0; i < H / 2; i++)
            for (int j = 0; j < W / 2; j++) {
                const double *x = in[0] + ((size_t)p * H + 2 * i) * W + 2 * j;
                y[((size_t)p * (H / 2) + i) * (W / 2) + j] = 0.25 * (x[0] + x[1] + x[W] + x[W + 1]);
            }
}

static void ref_upsample2(double *const *in, double *y, const gc_case *c)
{
    int P = c->shape[0][0] * c->shape[0][1], H = c->shape[0][2], W = c->shape[0][3];
    for (int p = 0; p < P; p++)
        for (int i = 0; i < 2 * H; i++)
            for (int j = 0; j < 2 * W; j++)
                y[((size_t)p * 2 * H + i) * 2 * W + j] = in[0][((size_t)p * H + i / 2) * W + j / 2];
}

static void ref_concat(double *const *in, double *y, const gc_case *c)
{
    int N = c->shape[0][0];
    size_t Sa = numel(c->ndim[0], c->shape[0]) / N, Sb = numel(c->ndim[1], c->shape[1]) / N;
    for (int n = 0; n < N; n++) {
        for (size_t i = 0; i < Sa; i++) y[n * (Sa + Sb) + i] = in[0][n * Sa + i];
        for (size_t i = 0; i < Sb; i++) y[n * (Sa + Sb) + Sa + i] = in[1][n * Sb + i];
    }
}

static void ref_sum(double *const *in, double *y, const gc_case *c)
{
    size_t n = numel(c->ndim[0], c->shape[0]);
    double s = 0.0;
    for (size_t i = 0; i < n; i++) s += in[0][i];
    y[0] = c->ipar[0] ? s / (double)n : s;
}

static void ref_mse(double *const *in, double *y, const gc_case *c)
{
    size_t n = numel(c->ndim[0], c->shape[0]);
    size_t per = n / (size_t)c->shape[0][0];
    double s = 0.0;
    for (size_t i = 0; i < n; i++) {
        double d = in[0][i] - in[1][i];
        s += (c->w ? c->w[i / per] : 1.0) * d * d;
    }
    y[0] = s / (double)n;
}

/* ---- op adapters */

static dfl_tensor *op_linear(dfl_ctx *x, dfl_tensor **in, const gc_case *c)
{
    return dfl_linear(x, in[0], in[1], c->nin > 2 ? in[2] : NULL);
}
static dfl_tensor *op_conv(dfl_ctx *x, dfl_tensor **in, const gc_case *c)
{
    return dfl_conv2d(x, in[0], in[1], c->nin > 2 ? in[2] : NULL, c->ipar[0]);
}
static dfl_tensor *op_group_norm(dfl_ctx *x, dfl_tensor **in, const gc_case *c)
{
    return dfl_group_norm(x, in[0], in[1], in[2], c->ipar[0], c->fpar[0]);
}
static dfl_tensor *op_group_norm_silu(dfl_ctx *x, dfl_tensor **in, const gc_case *c)
{
    return dfl_group_norm_silu(x, in[0], in[1], in[2], c->ipar[0], c->fpar[0]);
}
static dfl_tensor *op_silu(dfl_ctx *x, dfl_tensor **in, const gc_case *c) { (void)c; return dfl_silu(x, in[0]); }
static dfl_tensor *op_binary(dfl_ctx *x, dfl_tensor **in, const gc_case *c)
{
    switch (c->ipar[0]) {
    case DFL_K_ADD: return dfl_add(x, in[0], in[1]);
    case DFL_K_SUB: return dfl_sub(x, in[0], in[1]);
    default: return dfl_mul(x, in[0], in[1]);
    }
}
static dfl_tensor *op_scale(dfl_ctx *x, dfl_tensor **in, const gc_case *c) { return dfl_scale(x, in[0], c->fpar[0]); }
static dfl_tensor *op_add_channel(dfl_ctx *x, dfl_tensor **in, const gc_case *c) { (void)c; return dfl_add_channel(x, in[0], in[1]); }
static dfl_tensor *op_avg_pool2(dfl_ctx *x, dfl_tensor **in, const gc_case *c) { (void)c; return dfl_avg_pool2(x, in[0]); }
static dfl_tensor *op_upsample2(dfl_ctx *x, dfl_tensor **in, const gc_case *c) { (void)c; return dfl_upsample2(x, in[0]); }
static dfl_tensor *op_concat(dfl_ctx *x, dfl_tensor **in, const gc_case *c) { (void)c; return dfl_concat_channels(x, in[0], in[1]); }
static dfl_tensor *op_sum(dfl_ctx *x, dfl_tensor **in, const gc_case *c)
{
    return c->ipar[0] ? dfl_mean(x, in[0]) : dfl_sum(x, in[0]);
}
static dfl_tensor *op_mse(dfl_ctx *x, dfl_tensor **in, const gc_case *c) { return dfl_mse(x, in[0], in[1], c->w); }

/* ---- the cases */

static void test_grad_linear(void **state)
{
    (void)state;
    gc_case c1 = {.name = "linear (5,7)x(4,7)^T+b", .nin = 3, .ndim = {2, 2, 1},
                  .shape = {{5, 7}, {4, 7}, {4}}, .param = {0, 1, 1}};
    gradcheck(&c1, op_linear, ref_linear);
    gc_case c2 = {.name = "linear (2,3,6) no bias", .nin = 2, .ndim = {3, 2},
                  .shape = {{2, 3, 6}, {5, 6}}, .param = {0, 1}};
    gradcheck(&c2, op_linear, ref_linear);
    gc_case c3 = {.name = "linear, x without grad", .nin = 3, .ndim = {2, 2, 1},
                  .shape = {{3, 4}, {2, 4}, {2}}, .param = {0, 1, 1}, .nograd = {1, 0, 0}};
    gradcheck(&c3, op_linear, ref_linear);
}

static void test_grad_conv(void **state)
{
    (void)state;
    gc_case c1 = {.name = "conv k3 p1 (2,3,5,7) O4", .nin = 3, .ndim = {4, 4, 1},
                  .shape = {{2, 3, 5, 7}, {4, 3, 3, 3}, {4}}, .param = {0, 1, 1}, .ipar = {1}};
    gradcheck(&c1, op_conv, ref_conv);
    gc_case c2 = {.name = "conv k1 p0 (3,5,3,5) O2", .nin = 3, .ndim = {4, 4, 1},
                  .shape = {{3, 5, 3, 5}, {2, 5, 1, 1}, {2}}, .param = {0, 1, 1}, .ipar = {0}};
    gradcheck(&c2, op_conv, ref_conv);
    gc_case c3 = {.name = "conv k3 p1 batch 1, no bias", .nin = 2, .ndim = {4, 4},
                  .shape = {{1, 2, 7, 5}, {3, 2, 3, 3}}, .param = {0, 1}, .ipar = {1}};
    gradcheck(&c3, op_conv, ref_conv);
    gc_case c4 = {.name = "conv k3 p0, x without grad", .nin = 3, .ndim = {4, 4, 1},
                  .shape = {{2, 2, 6, 5}, {3, 2, 3, 3}, {3}}, .param = {0, 1, 1},
                  .nograd = {1, 0, 0}, .ipar = {0}};
    gradcheck(&c4, op_conv, ref_conv);
    gc_case c5 = {.name = "conv k3 p1 input-only VJP", .nin = 2, .ndim = {4, 4},
                  .shape = {{4, 3, 5, 5}, {2, 3, 3, 3}}, .param = {0, 1}, .nograd = {0, 1},
                  .ipar = {1}};
    gradcheck(&c5, op_conv, ref_conv);
}

static void test_grad_group_norm(void **state)
{
    (void)state;
    gc_case c1 = {.name = "group_norm (2,6,3,4) G3", .nin = 3, .ndim = {4, 1, 1},
                  .shape = {{2, 6, 3, 4}, {6}, {6}}, .param = {0, 1, 1}, .ipar = {3},
                  .fpar = {1e-5f}, .offset = 1.5f};
    gradcheck(&c1, op_group_norm, ref_group_norm);
    gc_case c2 = {.name = "group_norm (3,8,5,5) G2", .nin = 3, .ndim = {4, 1, 1},
                  .shape = {{3, 8, 5, 5}, {8}, {8}}, .param = {0, 1, 1}, .ipar = {2},
                  .fpar = {1e-5f}};
    gradcheck(&c2, op_group_norm, ref_group_norm);
    gc_case c3 = {.name = "group_norm (4,8) G4 (no spatial)", .nin = 3, .ndim = {2, 1, 1},
                  .shape = {{4, 8}, {8}, {8}}, .param = {0, 1, 1}, .ipar = {4}, .fpar = {1e-3f}};
    gradcheck(&c3, op_group_norm, ref_group_norm);
    gc_case c4 = {.name = "group_norm (2,4,7) G1 eps 0.1", .nin = 3, .ndim = {3, 1, 1},
                  .shape = {{2, 4, 7}, {4}, {4}}, .param = {0, 1, 1}, .ipar = {1}, .fpar = {0.1f}};
    gradcheck(&c4, op_group_norm, ref_group_norm);
}

static void test_grad_group_norm_silu(void **state)
{
    (void)state;
    gc_case c1 = {.name = "group_norm_silu (2,6,3,4) G3", .nin = 3, .ndim = {4, 1, 1},
                  .shape = {{2, 6, 3, 4}, {6}, {6}}, .param = {0, 1, 1}, .ipar = {3},
                  .fpar = {1e-5f}, .offset = 1.5f};
    gradcheck(&c1, op_group_norm_silu, ref_group_norm_silu);
    gc_case c2 = {.name = "group_norm_silu (3,8,5,5) G2", .nin = 3, .ndim = {4, 1, 1},
                  .shape = {{3, 8, 5, 5}, {8}, {8}}, .param = {0, 1, 1}, .ipar = {2},
                  .fpar = {1e-5f}};
    gradcheck(&c2, op_group_norm_silu, ref_group_norm_silu);
    gc_case c3 = {.name = "group_norm_silu, x only", .nin = 3, .ndim = {3, 1, 1},
                  .shape = {{2, 4, 7}, {4}, {4}}, .param = {0, 1, 1}, .ipar = {1}, .fpar = {0.1f},
                  .nograd = {0, 1, 1}};
    gradcheck(&c3, op_group_norm_silu, ref_group_norm_silu);
}

static void test_grad_elementwise(void **state)
{
    (void)state;
    gc_case s = {.name = "silu (3,4,5)", .nin = 1, .ndim = {3}, .shape = {{3, 4, 5}}};
    gradcheck(&s, op_silu, ref_silu);
    gc_case sc = {.name = "scale -1.7", .nin = 1, .ndim = {2}, .shape = {{4, 3}}, .fpar = {-1.7f}};
    gradcheck(&sc, op_scale, ref_scale);
    gc_case ac = {.name = "add_channel (2,3,4,5)+(2,3)", .nin = 2, .ndim = {4, 2},
                  .shape = {{2, 3, 4, 5}, {2, 3}}};
    gradcheck(&ac, op_add_channel, ref_add_channel);
    /* broadcasting pairs, every op */
    const struct { int na, nb; int a[4], b[4]; const char *name; } pairs[] = {
        {4, 3, {2, 3, 4, 5}, {3, 1, 1}, "(N,C,H,W) op (C,1,1)"},
        {2, 1, {4, 6}, {6}, "(B,D) op (D)"},
        {3, 3, {2, 3, 4}, {2, 3, 4}, "same shape"},
        {2, 2, {3, 1}, {1, 4}, "(3,1) op (1,4)"},
        {1, 3, {1}, {2, 2, 3}, "(1) op (2,2,3)"},
        {4, 4, {2, 1, 3, 1}, {1, 4, 1, 2}, "(2,1,3,1) op (1,4,1,2)"},
    };
    const char *opn[3] = {"add", "sub", "mul"};
    for (size_t i = 0; i < sizeof pairs / sizeof pairs[0]; i++)
        for (int op = 0; op < 3; op++) {
            char name[96];
            snprintf(name, sizeof name, "%s %s", opn[op], pairs[i].name);
            gc_case c = {.name = name, .nin = 2, .ndim = {pairs[i].na, pairs[i].nb},
                         .param = {0, 1}, .ipar = {op}};
            memcpy(c.shape[0], pairs[i].a, sizeof pairs[i].a);
            memcpy(c.shape[1], pairs[i].b, sizeof pairs[i].b);
            gradcheck(&c, op_binary, ref_binary);
        }
}

static void test_grad_shape_reduce(void **state)
{
    (void)state;
    gc_case p = {.name = "avg_pool2 (2,3,4,6)", .nin = 1, .ndim = {4}, .shape = {{2, 3, 4, 6}}};
    gradcheck(&p, op_avg_pool2, ref_avg_pool2);
    gc_case u = {.name = "upsample2 (2,2,3,5)", .nin = 1, .ndim = {4}, .shape = {{2, 2, 3, 5}}};
    gradcheck(&u, op_upsample2, ref_upsample2);
    gc_case cc = {.name = "concat (2,3,4,5)++(2,2,4,5)", .nin = 2, .ndim = {4, 4},
                  .shape = {{2, 3, 4, 5}, {2, 2, 4, 5}}, .param = {0, 1}};
    gradcheck(&cc, op_concat, ref_concat);
    gc_case s = {.name = "sum (3,7)", .nin = 1, .ndim = {2}, .shape = {{3, 7}}, .ipar = {0}};
    gradcheck(&s, op_sum, ref_sum);
    gc_case m = {.name = "mean (2,3,4)", .nin = 1, .ndim = {3}, .shape = {{2, 3, 4}}, .ipar = {1}};
    gradcheck(&m, op_sum, ref_sum);
    gc_case e = {.name = "mse (4,3,2)", .nin = 2, .ndim = {3, 3}, .shape = {{4, 3, 2}, {4, 3, 2}}};
    gradcheck(&e, op_mse, ref_mse);
    const float w[4] = {0.5f, 2.0f, 1.0f, 0.25f};
    gc_case ew = {.name = "mse weighted", .nin = 2, .ndim = {3, 3},
                  .shape = {{4, 3, 2}, {4, 3, 2}}, .param = {0, 1}, .w = w};
    gradcheck(&ew, op_mse, ref_mse);
}

/* ---- the same checks on random shapes
 *
 * Every op again, on shapes drawn from a seeded dfl_rng within small ranges (the finite
 * differences cost two reference forwards per input element). Each trial reseeds g_rng with its
 * own seed, derived from a base seed and the (op, trial) pair, and draws the shapes, the op
 * parameters, which inputs are parameters or need no gradient, and then the data and the
 * cotangent from it, so a failure (its message names the shapes and the seed) is reproducible.
 * Environment: DFL_TEST_SEED sets the base seed (default below), DFL_TEST_TRIALS the trials per
 * op (default 3): e.g. DFL_TEST_TRIALS=200 for a longer sweep. */

/* Draws the shapes and parameters of one case into c (ndim, shape, nin, ipar, fpar, w, offset)
 * and writes op-specific details (for the failure message) into tag. */
typedef void (*gc_gen)(gc_case *c, dfl_rng *r, float *wbuf, char *tag, size_t cap);

static void gen_linear(gc_case *c, dfl_rng *r, float *wbuf, char *tag, size_t cap)
{
    (void)wbuf;
    int K = rnd_int(r, 1, 8), out = rnd_int(r, 1, 6);
    c->ndim[0] = rnd_int(r, 1, 3);
    for (int d = 0; d < c->ndim[0] - 1; d++) c->shape[0][d] = rnd_int(r, 1, 4);
    c->shape[0][c->ndim[0] - 1] = K;
    c->ndim[1] = 2; c->shape[1][0] = out; c->shape[1][1] = K;
    c->ndim[2] = 1; c->shape[2][0] = out;
    c->nin = rnd_int(r, 2, 3); /* with or without bias */
    snprintf(tag, cap, "%s", c->nin > 2 ? "bias" : "no bias");
}

static void gen_conv(gc_case *c, dfl_rng *r, int k, int pad, char *tag, size_t cap)
{
    int N = rnd_int(r, 1, 2), C = rnd_int(r, 1, 4), H = rnd_int(r, 1, 9), W = rnd_int(r, 1, 9);
    int O = rnd_int(r, 1, 4);
    c->ndim[0] = 4; c->shape[0][0] = N; c->shape[0][1] = C; c->shape[0][2] = H; c->shape[0][3] = W;
    c->ndim[1] = 4; c->shape[1][0] = O; c->shape[1][1] = C; c->shape[1][2] = k; c->shape[1][3] = k;
    c->ndim[2] = 1; c->shape[2][0] = O;
    c->nin = rnd_int(r, 2, 3);
    c->ipar[0] = pad;
    snprintf(tag, cap, "k %d pad %d, %s", k, pad, c->nin > 2 ? "bias" : "no bias");
}
static void gen_conv3(gc_case *c, dfl_rng *r, float *wbuf, char *tag, size_t cap) { (void)wbuf; gen_conv(c, r, 3, 1, tag, cap); }
static void gen_conv1(gc_case *c, dfl_rng *r, float *wbuf, char *tag, size_t cap) { (void)wbuf; gen_conv(c, r, 1, 0, tag, cap); }

/* Smallest group (C/G channels times the spatial size) the random group_norm cases draw. Groups of
 * 1 or 2 values normalise to xhat = 0 or about +-1 whatever x is, so the exact dx is 0 or tiny
 * (of order eps/var), while the float backward forms it as a difference of terms of size
 * rstd |dy gamma|: rounding noise against a (near) zero reference, not a bug. */
#define GN_MIN_GROUP 3
static void gen_group_norm(gc_case *c, dfl_rng *r, float *wbuf, char *tag, size_t cap)
{
    (void)wbuf;
    static const float eps[3] = {1e-5f, 1e-3f, 0.1f};
    int C, S;
    do { /* G among the divisors of C; redrawn while a group holds fewer than GN_MIN_GROUP values */
        C = rnd_int(r, 1, 8);
        int divs[8], nd = 0;
        for (int g = 1; g <= C; g++)
            if (C % g == 0) divs[nd++] = g;
        c->ipar[0] = divs[dfl_rng_below(r, (uint32_t)nd)];
        c->ndim[0] = rnd_int(r, 2, 4);
        S = 1;
        for (int d = 2; d < c->ndim[0]; d++) S *= c->shape[0][d] = rnd_int(r, 1, 4);
    } while (C / c->ipar[0] * S < GN_MIN_GROUP);
    c->shape[0][0] = rnd_int(r, 1, 3);
    c->shape[0][1] = C;
    c->ndim[1] = c->ndim[2] = 1;
    c->shape[1][0] = c->shape[2][0] = C;
    c->nin = 3;
    c->fpar[0] = eps[dfl_rng_below(r, 3)];
    c->offset = 3.0f * dfl_rng_uniform(r);
    snprintf(tag, cap, "G %d, eps %g, offset %.3g", c->ipar[0], (double)c->fpar[0], (double)c->offset);
}

/* Any shape of rank 1..4 with dims in [1, maxd]. */
static void gen_any(gc_case *c, dfl_rng *r, int i, int maxd)
{
    c->ndim[i] = rnd_int(r, 1, 4);
    for (int d = 0; d < c->ndim[i]; d++) c->shape[i][d] = rnd_int(r, 1, maxd);
}

static void gen_silu(gc_case *c, dfl_rng *r, float *wbuf, char *tag, size_t cap)
{
    (void)wbuf;
    gen_any(c, r, 0, 5);
    c->nin = 1;
    c->offset = 2.0f * dfl_rng_normal(r);
    snprintf(tag, cap, "offset %.3g", (double)c->offset);
}

/* Output shape of rank 1..4; a and b take its trailing dims (a random rank each), with each dim
 * set to 1 (broadcast) at random. */
static void gen_binary(gc_case *c, dfl_rng *r, dfl_k_binop op, char *tag, size_t cap)
{
    int yr = rnd_int(r, 1, 4), ysh[4];
    for (int d = 0; d < yr; d++) ysh[d] = rnd_int(r, 1, 4);
    for (int i = 0; i < 2; i++) {
        c->ndim[i] = rnd_int(r, 1, yr);
        for (int d = 0; d < c->ndim[i]; d++)
            c->shape[i][d] = dfl_rng_below(r, 3) == 0 ? 1 : ysh[yr - c->ndim[i] + d];
    }
    c->nin = 2;
    c->ipar[0] = (int)op;
    tag[0] = '\0';
    (void)cap;
}
static void gen_add(gc_case *c, dfl_rng *r, float *wbuf, char *tag, size_t cap) { (void)wbuf; gen_binary(c, r, DFL_K_ADD, tag, cap); }
static void gen_sub(gc_case *c, dfl_rng *r, float *wbuf, char *tag, size_t cap) { (void)wbuf; gen_binary(c, r, DFL_K_SUB, tag, cap); }
static void gen_mul(gc_case *c, dfl_rng *r, float *wbuf, char *tag, size_t cap) { (void)wbuf; gen_binary(c, r, DFL_K_MUL, tag, cap); }

static void gen_scale(gc_case *c, dfl_rng *r, float *wbuf, char *tag, size_t cap)
{
    (void)wbuf;
    gen_any(c, r, 0, 5);
    c->nin = 1;
    c->fpar[0] = 5.0f * dfl_rng_uniform(r) - 2.5f;
    snprintf(tag, cap, "s %.6g", (double)c->fpar[0]);
}

static void gen_add_channel(gc_case *c, dfl_rng *r, float *wbuf, char *tag, size_t cap)
{
    (void)wbuf;
    c->ndim[0] = rnd_int(r, 2, 4);
    c->shape[0][0] = rnd_int(r, 1, 3);
    c->shape[0][1] = rnd_int(r, 1, 4);
    for (int d = 2; d < c->ndim[0]; d++) c->shape[0][d] = rnd_int(r, 1, 5);
    c->ndim[1] = 2; c->shape[1][0] = c->shape[0][0]; c->shape[1][1] = c->shape[0][1];
    c->nin = 2;
    tag[0] = '\0';
    (void)cap;
}

static void gen_avg_pool2(gc_case *c, dfl_rng *r, float *wbuf, char *tag, size_t cap)
{
    (void)wbuf;
    c->ndim[0] = 4;
    c->shape[0][0] = rnd_int(r, 1, 2); c->shape[0][1] = rnd_int(r, 1, 3);
    c->shape[0][2] = 2 * rnd_int(r, 1, 4); c->shape[0][3] = 2 * rnd_int(r, 1, 4);
    c->nin = 1;
    tag[0] = '\0';
    (void)cap;
}

static void gen_upsample2(gc_case *c, dfl_rng *r, float *wbuf, char *tag, size_t cap)
{
    (void)wbuf;
    c->ndim[0] = 4;
    c->shape[0][0] = rnd_int(r, 1, 2); c->shape[0][1] = rnd_int(r, 1, 3);
    c->shape[0][2] = rnd_int(r, 1, 4); c->shape[0][3] = rnd_int(r, 1, 4);
    c->nin = 1;
    tag[0] = '\0';
    (void)cap;
}

static void gen_concat(gc_case *c, dfl_rng *r, float *wbuf, char *tag, size_t cap)
{
    (void)wbuf;
    int nd = rnd_int(r, 2, 4);
    c->ndim[0] = c->ndim[1] = nd;
    c->shape[0][0] = c->shape[1][0] = rnd_int(r, 1, 3);
    c->shape[0][1] = rnd_int(r, 1, 4);
    c->shape[1][1] = rnd_int(r, 1, 4);
    for (int d = 2; d < nd; d++) c->shape[0][d] = c->shape[1][d] = rnd_int(r, 1, 4);
    c->nin = 2;
    tag[0] = '\0';
    (void)cap;
}

static void gen_sum(gc_case *c, dfl_rng *r, float *wbuf, char *tag, size_t cap)
{
    (void)wbuf;
    gen_any(c, r, 0, 5);
    c->nin = 1;
    c->ipar[0] = 0;
    tag[0] = '\0';
    (void)cap;
}

static void gen_mean(gc_case *c, dfl_rng *r, float *wbuf, char *tag, size_t cap)
{
    gen_sum(c, r, wbuf, tag, cap);
    c->ipar[0] = 1;
}

static void gen_mse(gc_case *c, dfl_rng *r, float *wbuf, char *tag, size_t cap, int weighted)
{
    gen_any(c, r, 0, 4);
    c->ndim[1] = c->ndim[0];
    memcpy(c->shape[1], c->shape[0], sizeof c->shape[0]);
    c->nin = 2;
    int pos = 0;
    pos += snprintf(tag, cap, "%s", weighted ? "w" : "no weights");
    if (weighted) {
        for (int n = 0; n < c->shape[0][0]; n++) {
            wbuf[n] = 0.1f + 2.0f * dfl_rng_uniform(r);
            if (pos < (int)cap) pos += snprintf(tag + pos, cap - (size_t)pos, "%s%.3g", n ? "," : " (", (double)wbuf[n]);
        }
        if (pos < (int)cap) snprintf(tag + pos, cap - (size_t)pos, ")");
        c->w = wbuf;
    }
}
static void gen_mse0(gc_case *c, dfl_rng *r, float *wbuf, char *tag, size_t cap) { gen_mse(c, r, wbuf, tag, cap, 0); }
static void gen_mse1(gc_case *c, dfl_rng *r, float *wbuf, char *tag, size_t cap) { gen_mse(c, r, wbuf, tag, cap, 1); }

static const struct {
    const char *name;
    gc_gen gen;
    gc_op op;
    gc_ref ref;
} rand_ops[] = {
    {"linear", gen_linear, op_linear, ref_linear},
    {"conv2d", gen_conv3, op_conv, ref_conv},
    {"conv2d", gen_conv1, op_conv, ref_conv},
    {"group_norm", gen_group_norm, op_group_norm, ref_group_norm},
    {"silu", gen_silu, op_silu, ref_silu},
    {"add", gen_add, op_binary, ref_binary},
    {"sub", gen_sub, op_binary, ref_binary},
    {"mul", gen_mul, op_binary, ref_binary},
    {"scale", gen_scale, op_scale, ref_scale},
    {"add_channel", gen_add_channel, op_add_channel, ref_add_channel},
    {"avg_pool2", gen_avg_pool2, op_avg_pool2, ref_avg_pool2},
    {"upsample2", gen_upsample2, op_upsample2, ref_upsample2},
    {"concat_channels", gen_concat, op_concat, ref_concat},
    {"sum", gen_sum, op_sum, ref_sum},
    {"mean", gen_mean, op_sum, ref_sum},
    {"mse", gen_mse0, op_mse, ref_mse},
    {"mse", gen_mse1, op_mse, ref_mse},
};

/* "(2,3,5,7)" */
static int shape_fmt(char *buf, size_t cap, int nd, const int *sh)
{
    int pos = snprintf(buf, cap, "(");
    for (int d = 0; d < nd && pos < (int)cap; d++) pos += snprintf(buf + pos, cap - (size_t)pos, "%s%d", d ? "," : "", sh[d]);
    if (pos < (int)cap) pos += snprintf(buf + pos, cap - (size_t)pos, ")");
    return pos;
}

static void test_grad_random_shapes(void **state)
{
    (void)state;
    uint64_t base = env_u64("DFL_TEST_SEED", RAND_SEED_DEFAULT);
    int trials = (int)env_u64("DFL_TEST_TRIALS", RAND_TRIALS_DEFAULT);
    for (size_t k = 0; k < sizeof rand_ops / sizeof rand_ops[0]; k++)
        for (int t = 0; t < trials; t++) {
            uint64_t seed = base * 1000003ULL + k * 1009ULL + (uint64_t)t;
            dfl_rng_init(&g_rng, seed);
            gc_case c;
            memset(&c, 0, sizeof c);
            float wbuf[8];
            char tag[96], name[320];
            rand_ops[k].gen(&c, &g_rng, wbuf, tag, sizeof tag);
            /* which inputs are heap parameters, and (sometimes) one that needs no gradient */
            for (int i = 0; i < c.nin; i++) c.param[i] = (int)dfl_rng_below(&g_rng, 2);
            if (c.nin > 1 && dfl_rng_below(&g_rng, 3) == 0) c.nograd[dfl_rng_below(&g_rng, (uint32_t)c.nin)] = 1;
            int pos = snprintf(name, sizeof name, "%s%s%s%s", rand_ops[k].name, *tag ? " [" : "", tag, *tag ? "]" : "");
            for (int i = 0; i < c.nin && pos < (int)sizeof name; i++) {
                pos += snprintf(name + pos, sizeof name - (size_t)pos, " in%d ", i);
                if (pos < (int)sizeof name) pos += shape_fmt(name + pos, sizeof name - (size_t)pos, c.ndim[i], c.shape[i]);
                if (pos < (int)sizeof name && (c.param[i] || c.nograd[i]))
                    pos += snprintf(name + pos, sizeof name - (size_t)pos, "%s%s", c.param[i] ? " param" : "", c.nograd[i] ? " nograd" : "");
            }
            if (pos < (int)sizeof name)
                snprintf(name + pos, sizeof name - (size_t)pos, " {seed %llu = trial %d of DFL_TEST_SEED=%llu}",
                         (unsigned long long)seed, t, (unsigned long long)base);
            c.name = name;
            gradcheck(&c, rand_ops[k].op, rand_ops[k].ref);
        }
}

/* ================================================================== (c) tape behaviour */

static void test_accumulate_twice(void **state)
{
    (void)state;
    dfl_ctx *ctx = dfl_ctx_new();
    int sh[2] = {3, 5};
    float *xb = rand_buf(15, 1), *r = rand_buf(15, 1);
    dfl_tensor *x = dfl_tensor_wrap(ctx, xb, 2, sh);
    x->requires_grad = 1;
    dfl_tensor *y = dfl_add(ctx, dfl_mul(ctx, x, x), x); /* y = x*x + x: x used three times */
    assert_non_null(y);
    assert_int_equal(dfl_backward_vjp(ctx, y, r), DFL_OK);
    double ref[15];
    for (int i = 0; i < 15; i++) ref[i] = r[i] * (2.0 * xb[i] + 1.0);
    CHECK_D("d(x*x+x)/dx", x->grad, ref, 15, 1e-6);

    /* parameters keep their gradient across steps: two steps double it */
    int ws[2] = {4, 5};
    dfl_tensor *W = dfl_tensor_new(2, ws, 1);
    for (int i = 0; i < 20; i++) W->data[i] = dfl_rng_normal(&g_rng);
    float first[20];
    for (int step = 0; step < 2; step++) {
        dfl_ctx_reset(ctx);
        dfl_tensor *xi = dfl_tensor_wrap(ctx, xb, 2, sh);
        dfl_tensor *loss = dfl_sum(ctx, dfl_silu(ctx, dfl_linear(ctx, xi, W, NULL)));
        assert_non_null(loss);
        assert_int_equal(dfl_backward(ctx, loss), DFL_OK);
        assert_null(xi->grad); /* data without requires_grad gets nothing */
        if (step == 0) memcpy(first, W->grad, sizeof first);
    }
    double twice[20];
    for (int i = 0; i < 20; i++) twice[i] = 2.0 * first[i];
    CHECK_D("param grad after two steps", W->grad, twice, 20, 1e-6);
    dfl_tensor_free(W);
    dfl_ctx_free(ctx);
    free(xb);
    free(r);
}

static void test_no_grad(void **state)
{
    (void)state;
    dfl_ctx *ctx = dfl_ctx_new();
    int xs[4] = {2, 4, 6, 6}, ws[4] = {8, 4, 3, 3}, bs[1] = {8}, gs[1] = {8};
    dfl_tensor *W = dfl_tensor_new(4, ws, 1), *b = dfl_tensor_new(1, bs, 1);
    dfl_tensor *g = dfl_tensor_new(1, gs, 1), *be = dfl_tensor_new(1, gs, 1);
    for (int i = 0; i < 8 * 4 * 9; i++) W->data[i] = dfl_rng_normal(&g_rng);
    for (int i = 0; i < 8; i++) g->data[i] = 1.0f;
    float *xb = rand_buf(2 * 4 * 36, 1);
    assert_int_equal(dfl_ctx_set_grad(ctx, 0), 1);
    dfl_tensor *x = dfl_tensor_wrap(ctx, xb, 4, xs);
    dfl_tensor *h = dfl_conv2d(ctx, x, W, b, 1);
    h = dfl_silu(ctx, dfl_group_norm(ctx, h, g, be, 4, 1e-5f));
    h = dfl_upsample2(ctx, dfl_avg_pool2(ctx, h));
    dfl_tensor *loss = dfl_mean(ctx, dfl_mul(ctx, h, h));
    assert_non_null(loss);
    assert_int_equal(loss->requires_grad, 0);
    assert_int_not_equal(dfl_backward(ctx, loss), DFL_OK); /* nothing was recorded */
    for (int i = 0; i < 8 * 4 * 9; i++) assert_true(W->grad[i] == 0.0f);
    /* back on: the same chain records and reaches the parameters */
    dfl_ctx_set_grad(ctx, 1);
    h = dfl_conv2d(ctx, x, W, b, 1);
    loss = dfl_mean(ctx, dfl_mul(ctx, h, h));
    assert_int_equal(loss->requires_grad, 1);
    assert_int_equal(dfl_backward(ctx, loss), DFL_OK);
    double nz = 0.0;
    for (int i = 0; i < 8 * 4 * 9; i++) nz += fabs(W->grad[i]);
    assert_true(nz > 0.0);
    dfl_tensor_free(W); dfl_tensor_free(b); dfl_tensor_free(g); dfl_tensor_free(be);
    dfl_ctx_free(ctx);
    free(xb);
}

static void test_errors(void **state)
{
    (void)state;
    dfl_ctx *ctx = dfl_ctx_new();
    int xs[4] = {2, 3, 5, 5}, ws[4] = {4, 2, 3, 3}, ls[2] = {4, 6}, vs[2] = {2, 4}, gs[1] = {3};
    dfl_tensor *x = dfl_tensor_zeros(ctx, 4, xs), *W = dfl_tensor_zeros(ctx, 4, ws);
    assert_null(dfl_conv2d(ctx, x, W, NULL, 1));
    assert_non_null(strstr(dfl_last_error(), "conv2d"));
    assert_null(dfl_conv2d(ctx, NULL, W, NULL, 1));
    dfl_tensor *L = dfl_tensor_zeros(ctx, 2, ls);
    assert_null(dfl_linear(ctx, x, L, NULL));
    assert_non_null(strstr(dfl_last_error(), "linear"));
    dfl_tensor *v = dfl_tensor_zeros(ctx, 2, vs);
    assert_null(dfl_add_channel(ctx, x, v));
    assert_null(dfl_add(ctx, x, v));
    assert_non_null(strstr(dfl_last_error(), "broadcast"));
    assert_null(dfl_mul(ctx, x, NULL));
    dfl_tensor *g = dfl_tensor_zeros(ctx, 1, gs);
    assert_null(dfl_group_norm(ctx, x, g, g, 2, 1e-5f)); /* 2 groups do not divide 3 */
    assert_non_null(strstr(dfl_last_error(), "group_norm"));
    assert_null(dfl_avg_pool2(ctx, x)); /* 5x5 is odd */
    assert_null(dfl_concat_channels(ctx, x, L));
    assert_null(dfl_mse(ctx, x, L, NULL));
    assert_null(dfl_silu(ctx, NULL));
    assert_null(dfl_sum(ctx, NULL));
    assert_null(dfl_upsample2(ctx, NULL));
    dfl_ctx_free(ctx);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_linear_kernels),
        cmocka_unit_test(test_conv_kernels),
        cmocka_unit_test(test_group_norm_kernels),
        cmocka_unit_test(test_group_norm_silu_kernels),
        cmocka_unit_test(test_silu_kernels),
        cmocka_unit_test(test_binary_kernels),
        cmocka_unit_test(test_misc_kernels),
        cmocka_unit_test(test_misc_kernels_random),
        cmocka_unit_test(test_grad_linear),
        cmocka_unit_test(test_grad_conv),
        cmocka_unit_test(test_grad_group_norm),
        cmocka_unit_test(test_grad_group_norm_silu),
        cmocka_unit_test(test_grad_elementwise),
        cmocka_unit_test(test_grad_shape_reduce),
        cmocka_unit_test(test_grad_random_shapes),
        cmocka_unit_test(test_accumulate_twice),
        cmocka_unit_test(test_no_grad),
        cmocka_unit_test(test_errors),
    };
    return cmocka_run_group_tests(tests, setup, NULL);
}
