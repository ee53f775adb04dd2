/* dfl_k_sgemm against its naive double-accumulating reference, for every transpose combination,
 * beta 0 (old C ignored, even NaN) and beta 1 (accumulate), padded leading dimensions, the small
 * (single-thread) and large (threaded) regimes, on each backend compiled in (oneDNN, OpenBLAS);
 * the linear kernels on each backend against their references (small, and large enough for the
 * threaded GEMM regime); dfl_grad_norm against a naive sum, equal at 1 and 2 threads. */
#include "dfl_test.h"
#include "difflow/core.h"
#include "difflow/kernels.h"
#include "difflow/nn.h"
#include "difflow/optim.h"

static float *rnd(size_t n, uint64_t seed)
{
    dfl_rng r;
    dfl_rng_init(&r, seed);
    float *x = malloc(n * sizeof *x);
    for (size_t i = 0; i < n; i++) x[i] = 2.f * dfl_rng_uniform(&r) - 1.f;
    return x;
}

static void one(int ta, int tb, int M, int N, int K, float beta)
{
    int lda = (ta ? M : K) + 3, ldb = (tb ? K : N) + 1, ldc = N + 2;
    size_t na = (size_t)(ta ? K : M) * lda, nb = (size_t)(tb ? N : K) * ldb, nc = (size_t)M * ldc;
    float *A = rnd(na, 1 + M), *B = rnd(nb, 2 + N), *C = rnd(nc, 3 + K), *Cr = malloc(nc * sizeof *Cr);
    if (beta == 0.0f)
        for (size_t i = 0; i < nc; i++) C[i] = NAN; /* must be ignored */
    memcpy(Cr, C, nc * sizeof *C);
    dfl_k_sgemm(ta, tb, M, N, K, 0.5f, A, lda, B, ldb, beta, C, ldc);
    dfl_k_sgemm_ref(ta, tb, M, N, K, 0.5f, A, lda, B, ldb, beta, Cr, ldc);
    double tol = 1e-5 * K + 1e-6;
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            double c = C[(size_t)i * ldc + j], r = Cr[(size_t)i * ldc + j];
            if (!(fabs(c - r) <= tol)) {
                print_error("sgemm ta %d tb %d M %d N %d K %d beta %g backend %d: C[%d,%d] = %.9g, ref %.9g\n", ta, tb,
                            M, N, K, (double)beta, dfl_k_sgemm_backend(-1), i, j, c, r);
                fail();
            }
        }
    free(A);
    free(B);
    free(C);
    free(Cr);
}

static void sweep(void)
{
    const int sz[][3] = {{1, 1, 1}, {7, 5, 3}, {33, 17, 65}, {512, 2, 256}, {2, 256, 512}, {300, 96, 130}};
    for (int ta = 0; ta < 2; ta++)
        for (int tb = 0; tb < 2; tb++)
            for (size_t s = 0; s < sizeof sz / sizeof *sz; s++)
                for (int acc = 0; acc < 2; acc++) one(ta, tb, sz[s][0], sz[s][1], sz[s][2], acc ? 1.0f : 0.0f);
}

static void test_sgemm(void **state)
{
    (void)state;
    int old = dfl_k_sgemm_backend(-1);
    for (int b = 0; b < 2; b++) {
        dfl_k_sgemm_backend(b);
        sweep();
    }
    dfl_k_sgemm_backend(old);
    print_message("default backend: %s\n", old ? "oneDNN" : "OpenBLAS");
}

static void linear_case(int M, int K, int N)
{
    int old = dfl_k_sgemm_backend(-1);
    float *x = rnd((size_t)M * K, 5), *w = rnd((size_t)N * K, 6), *b = rnd(N, 7), *dy = rnd((size_t)M * N, 8);
    float *y = malloc((size_t)M * N * sizeof *y), *yr = malloc((size_t)M * N * sizeof *yr);
    float *dx = calloc((size_t)M * K, 4), *dw = calloc((size_t)N * K, 4), *db = calloc(N, 4);
    float *dxr = calloc((size_t)M * K, 4), *dwr = calloc((size_t)N * K, 4), *dbr = calloc(N, 4);
    dfl_k_linear_fwd_ref(x, w, b, yr, M, K, N);
    dfl_k_linear_bwd_ref(x, w, dy, dxr, dwr, dbr, M, K, N);
    for (int be = 0; be < 2; be++) {
        dfl_k_sgemm_backend(be);
        memset(dx, 0, (size_t)M * K * 4);
        memset(dw, 0, (size_t)N * K * 4);
        memset(db, 0, (size_t)N * 4);
        dfl_k_linear_fwd(x, w, b, y, M, K, N);
        dfl_k_linear_bwd(x, w, dy, dx, dw, db, M, K, N);
        for (int i = 0; i < M * N; i++) CHECK_CLOSE(y[i], yr[i], 1e-4);
        for (int i = 0; i < M * K; i++) CHECK_CLOSE(dx[i], dxr[i], 1e-4);
        for (int i = 0; i < N * K; i++) CHECK_CLOSE(dw[i], dwr[i], 1e-3);
        for (int i = 0; i < N; i++) CHECK_CLOSE(db[i], dbr[i], 1e-4);
    }
    dfl_k_sgemm_backend(old);
    free(x); free(w); free(b); free(dy); free(y); free(yr);
    free(dx); free(dw); free(db); free(dxr); free(dwr); free(dbr);
}

static void test_linear_backends(void **state)
{
    (void)state;
    linear_case(96, 40, 24);
    linear_case(512, 64, 200); /* the toy-mlp's row count; above the single-thread GEMM threshold */
}

static void test_grad_norm(void **state)
{
    (void)state;
    dfl_params ps = {0};
    int s1[2] = {300, 350}, s2[1] = {7}, s3[1] = {32768 * 3 + 5};
    dfl_tensor *t[3] = {dfl_params_add(&ps, 2, s1, "a"), dfl_params_add(&ps, 1, s2, "b"), dfl_params_add(&ps, 1, s3, "c")};
    double naive = 0;
    for (int i = 0; i < 3; i++) {
        assert_non_null(t[i]);
        float *g = rnd(t[i]->n, 20 + i);
        memcpy(t[i]->grad, g, t[i]->n * sizeof(float));
        for (size_t j = 0; j < t[i]->n; j++) naive += (double)g[j] * g[j];
        free(g);
    }
    int th = dfl_get_threads();
    dfl_set_threads(1);
    double g1 = dfl_grad_norm(&ps);
    dfl_set_threads(2);
    double g2 = dfl_grad_norm(&ps);
    dfl_set_threads(th);
    CHECK_REL(g1, sqrt(naive), 1e-12);
    assert_memory_equal(&g1, &g2, sizeof g1);
    dfl_params_free(&ps);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sgemm),
        cmocka_unit_test(test_linear_backends),
        cmocka_unit_test(test_grad_norm),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
