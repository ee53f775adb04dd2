/* Micro-benchmark of the conv2d kernels (forward, backward = dx + dW + db) at the shapes of the
 * fmnist-unet-s U-Net (DESIGN section 13), reporting ms per call and GFLOP/s.
 *
 * Not a test and not built by CMake. Build the library first, then (-ldnnl when CMake found
 * libdnnl-dev and compiled in the oneDNN GEMM, as tools/deps.sh installs it; drop it otherwise):
 *   cmake --build build -j2 &&
 *   gcc -std=c11 -O3 -march=native -fopenmp -Iinclude bench/conv_micro.c build/libdifflow.a \
 *       -ldnnl -lopenblas -lcjson -lpng -lz -lm -o build/conv_micro && ./build/conv_micro
 * Options: conv_micro [iters] [block_floats]   (OMP_NUM_THREADS sets the threads; block_floats
 * overrides the im2col block size the conv planner aims for, 0 = default).
 * FLOPs counted as 2 N O C k^2 Ho Wo for the forward and twice that for the backward.
 *
 * 2026-12-04, 2-core AMD EPYC Zen 5 VM (AVX-512 direct 3x3 kernels), OMP_NUM_THREADS=1: about
 * 200 GFLOP/s fwd + bwd at N64 C32 28x28 O32 k3 and 176-188 at N64 C64 14x14 O64 k3 while the
 * core is not shared; ~110 while another process shares it (docs/PERFORMANCE.md, "Gaps and why").
 *
 * Earlier, on the 2-core AMD EPYC (Zen 3) VM, OMP_NUM_THREADS=2, OpenBLAS 0.3.21 (OpenMP), before
 * the AVX-512 kernels and oneDNN; timings there varied by up to 2x between runs (shared host), so
 * these are ranges over runs:
 *   shape (fwd + bwd)        difflow      PyTorch 2.x (same machine, torch.set_num_threads(2))
 *   N64 C32 28x28 O32 k3     121-138      43-63   GFLOP/s
 *   N64 C64 14x14 O64 k3     120-130      65-125
 *   N64 C64 7x7   O64 k3      83-108      68-112
 *   N64 C96 28x28 O32 k1      57-82       13-40
 * Before the direct 3x3 kernels (im2col + GEMM for everything): 59-77, 78-98, 55-81. */
#define _POSIX_C_SOURCE 200809L
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "difflow/kernels.h"

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

static float *buf(size_t n)
{
    float *p = malloc(n * sizeof(float));
    if (!p) { fprintf(stderr, "out of memory\n"); exit(1); }
    unsigned s = 12345;
    for (size_t i = 0; i < n; i++) {
        s = s * 1103515245u + 12345u;
        p[i] = ((s >> 9) & 0xffff) / 65536.0f - 0.5f;
    }
    return p;
}

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
    int iters = argc > 1 ? atoi(argv[1]) : 20;
    if (argc > 2) dfl_k_conv2d_set_block((size_t)atol(argv[2]));
    const struct { int N, C, H, O, k, pad; } cfg[] = {
        {64, 32, 28, 32, 3, 1}, {64, 64, 14, 64, 3, 1}, {64, 64, 7, 64, 3, 1},
        {64, 32, 28, 64, 3, 1}, {64, 96, 28, 32, 1, 0}, {64, 1, 28, 32, 3, 1}, {64, 32, 28, 1, 3, 1},
    };
    printf("threads %d, iters %d (median)\n", omp_get_max_threads(), iters);
    printf("%-28s %9s %9s %9s %9s %9s\n", "shape", "fwd ms", "fwd GF/s", "bwd ms", "bwd GF/s", "total GF/s");
    double tot_flop = 0, tot_time = 0;
    for (size_t t = 0; t < sizeof cfg / sizeof cfg[0]; t++) {
        int N = cfg[t].N, C = cfg[t].C, H = cfg[t].H, W = H, O = cfg[t].O, k = cfg[t].k, p = cfg[t].pad;
        int Ho = dfl_k_conv2d_out_size(H, k, p), Wo = dfl_k_conv2d_out_size(W, k, p);
        size_t nx = (size_t)N * C * H * W, nw = (size_t)O * C * k * k, ny = (size_t)N * O * Ho * Wo;
        float *x = buf(nx), *w = buf(nw), *b = buf(O), *y = buf(ny), *dy = buf(ny);
        float *dx = buf(nx), *dw = buf(nw), *db = buf(O);
        float *work = buf(dfl_k_conv2d_work_floats(N, C, H, W, O, k, p));
        double flop = 2.0 * N * O * C * k * k * Ho * Wo;
        double *tf = malloc(iters * sizeof(double)), *tb = malloc(iters * sizeof(double));
        for (int i = -2; i < iters; i++) { /* two warm-up calls */
            double t0 = now();
            dfl_k_conv2d_fwd(x, w, b, y, N, C, H, W, O, k, p, work);
            double t1 = now();
            dfl_k_conv2d_bwd(x, w, dy, dx, dw, db, N, C, H, W, O, k, p, work);
            double t2 = now();
            if (i >= 0) { tf[i] = t1 - t0; tb[i] = t2 - t1; }
        }
        qsort(tf, iters, sizeof(double), cmp);
        qsort(tb, iters, sizeof(double), cmp);
        double f = tf[iters / 2], bw = tb[iters / 2];
        char name[64];
        snprintf(name, sizeof name, "N%d C%d %dx%d O%d k%d", N, C, H, W, O, k);
        printf("%-28s %9.2f %9.1f %9.2f %9.1f %9.1f\n", name, 1e3 * f, flop / f * 1e-9, 1e3 * bw,
               2 * flop / bw * 1e-9, 3 * flop / (f + bw) * 1e-9);
        tot_flop += 3 * flop;
        tot_time += f + bw;
        free(x); free(w); free(b); free(y); free(dy); free(dx); free(dw); free(db); free(work);
        free(tf); free(tb);
    }
    printf("all shapes: %.1f GFLOP/s\n", tot_flop / tot_time * 1e-9);
    return 0;
}
