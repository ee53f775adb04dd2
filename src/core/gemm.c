/* Single-precision GEMM for the kernels (DESIGN section 3, "Kernels"): oneDNN's dnnl_sgemm when
 * the library was built with it (DFL_HAVE_DNNL: Debian's libdnnl-dev; its JIT picks AVX-512 or
 * AVX2 from the CPU's feature bits), else cblas_sgemm (OpenBLAS). Both are row-major BLAS
 * semantics. On machines where OpenBLAS is pinned to older kernels (OPENBLAS_CORETYPE=Haswell
 * on an AVX-512 CPU) oneDNN measured about 2x OpenBLAS at the toy-mlp and DiT shapes, 1 thread
 * (docs/PERFORMANCE.md). */
#include "difflow/kernels.h"

#include <cblas.h>
#include <omp.h>
#ifdef DFL_HAVE_DNNL
#include <oneapi/dnnl/dnnl.h>
static int g_backend = 1;
#else
static int g_backend = 0;
#endif

/* Below this many FLOPs a product runs on one thread (fork/join costs more than it saves). */
#define GEMM_SERIAL_FLOPS 4e6

int dfl_k_sgemm_backend(int which)
{
    int old = g_backend;
#ifdef DFL_HAVE_DNNL
    if (which >= 0) g_backend = which ? 1 : 0;
#else
    (void)which;
#endif
    return old;
}

void dfl_k_sgemm(int transa, int transb, int M, int N, int K, float alpha, const float *A, int lda,
                 const float *B, int ldb, float beta, float *C, int ldc)
{
    if (M <= 0 || N <= 0) return;
#ifdef DFL_HAVE_DNNL
    if (g_backend) {
        int nth = 0;
        if (2.0 * M * N * K < GEMM_SERIAL_FLOPS && !omp_in_parallel()) {
            nth = omp_get_max_threads();
            omp_set_num_threads(1);
        }
        dnnl_status_t st = dnnl_sgemm(transa ? 'T' : 'N', transb ? 'T' : 'N', M, N, K, alpha, A, lda, B, ldb,
                                      beta, C, ldc);
        if (nth) omp_set_num_threads(nth);
        if (st == dnnl_success) return;
        /* dnnl refuses only arguments cblas refuses too; fall through so the result is defined */
    }
#endif
    cblas_sgemm(CblasRowMajor, transa ? CblasTrans : CblasNoTrans, transb ? CblasTrans : CblasNoTrans, M, N, K,
                alpha, A, lda, B, ldb, beta, C, ldc);
}

void dfl_k_sgemm_ref(int transa, int transb, int M, int N, int K, float alpha, const float *A, int lda,
                     const float *B, int ldb, float beta, float *C, int ldc)
{
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            double s = 0;
            for (int k = 0; k < K; k++) {
                float a = transa ? A[(size_t)k * lda + i] : A[(size_t)i * lda + k];
                float b = transb ? B[(size_t)j * ldb + k] : B[(size_t)k * ldb + j];
                s += (double)a * b;
            }
            float *c = &C[(size_t)i * ldc + j];
            *c = (float)(alpha * s + (beta == 0.0f ? 0.0 : (double)beta * *c));
        }
}
