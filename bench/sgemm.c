/* bench/sgemm: the machine's single-precision matrix-multiply peak with the GEMMs difflow links
 * (dfl_k_sgemm: OpenBLAS, OpenMP build, and oneDNN's dnnl_sgemm when built with it), for the
 * "fraction of peak" figures of `difflow bench` and bench/compare.
 *
 *   build-dir/bench/sgemm [--max N] [--threads T] [--seconds S] [--json]
 *
 * Times C = A B (row-major, no transpose, beta 0) for square N = 256, 512, 1024, 1536, 2048 (up
 * to --max) on 1 thread and on T threads (default: all cores), for each backend, each for about
 * S seconds (default 0.3) after one untimed call, best of 3 such runs, and prints GFLOP/s =
 * 2 N^3 / time. The last line is the peak (the best figure of any backend at T threads; the
 * 1-thread one if that is higher, which only a busy machine gives, with a warning on stderr) as
 * "peak_gflops X" (or one JSON object with --json), which bench/compare passes to
 * `difflow bench --peak-gflops`. */
#include "difflow/kernels.h"
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

/* Best GFLOP/s of 3 runs of about `secs` seconds each. */
static double time_sgemm(int n, const float *a, const float *b, float *c, double secs)
{
    dfl_k_sgemm(0, 0, n, n, n, 1.f, a, n, b, n, 0.f, c, n);
    double best = 0;
    for (int r = 0; r < 3; r++) {
        int reps = 0;
        double t0 = now(), el;
        do {
            dfl_k_sgemm(0, 0, n, n, n, 1.f, a, n, b, n, 0.f, c, n);
            reps++;
        } while ((el = now() - t0) < secs);
        double g = 2.0 * n * n * n * reps / el * 1e-9;
        if (g > best) best = g;
    }
    return best;
}

static int usage(const char *why)
{
    fprintf(stderr, "sgemm: error: %s\nusage: sgemm [--max N] [--threads T] [--seconds S] [--json]\n", why);
    return 2;
}

int main(int argc, char **argv)
{
    int maxn = 2048, threads = omp_get_num_procs(), json = 0;
    double secs = 0.3;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--json")) json = 1;
        else if (i + 1 < argc && !strcmp(argv[i], "--max")) maxn = atoi(argv[++i]);
        else if (i + 1 < argc && !strcmp(argv[i], "--threads")) threads = atoi(argv[++i]);
        else if (i + 1 < argc && !strcmp(argv[i], "--seconds")) secs = atof(argv[++i]);
        else return usage(argv[i]);
    }
    if (maxn < 256) return usage("--max must be >= 256");
    if (threads < 1) return usage("--threads must be >= 1");
    if (!(secs > 0)) return usage("--seconds must be > 0");
    static const int sizes[] = {256, 512, 1024, 1536, 2048, 3072, 4096};
    size_t cap = (size_t)maxn * maxn;
    float *a = malloc(cap * sizeof *a), *b = malloc(cap * sizeof *b), *c = malloc(cap * sizeof *c);
    if (!a || !b || !c) return usage("out of memory");
    unsigned s = 12345;
    for (size_t i = 0; i < cap; i++) {
        s = s * 1664525u + 1013904223u;
        a[i] = (float)(s >> 8) / 16777216.f - 0.5f;
        b[i] = (float)((s * 69069u) >> 8) / 16777216.f - 0.5f;
    }
    int tl[2] = {1, threads}, nt = threads > 1 ? 2 : 1;
    int nb = dfl_k_sgemm_backend(-1) ? 2 : 1; /* oneDNN compiled in: time both */
    static const char *bname[2] = {"OpenBLAS", "oneDNN"};
    double peak[2] = {0, 0};
    int peak_n[2] = {0, 0}, peak_b[2] = {0, 0};
    if (!json) {
        printf("%6s", "N");
        for (int be = 0; be < nb; be++)
            for (int j = 0; j < nt; j++) printf(" %9s %dt", bname[be], tl[j]);
        printf("   (GFLOP/s)\n");
    }
    for (size_t k = 0; k < sizeof sizes / sizeof *sizes && sizes[k] <= maxn; k++) {
        int n = sizes[k];
        if (!json) printf("%6d", n);
        for (int be = 0; be < nb; be++) {
            dfl_k_sgemm_backend(be);
            for (int j = 0; j < nt; j++) {
                omp_set_num_threads(tl[j]);
                double g = time_sgemm(n, a, b, c, secs);
                if (g > peak[j]) peak[j] = g, peak_n[j] = n, peak_b[j] = be;
                if (!json) printf(" %12.1f", g);
            }
        }
        if (!json) printf("\n");
    }
    int j = nt - 1;
    if (peak[0] > peak[j]) j = 0; /* only on a busy machine */
    if (nt > 1 && peak[1] < 1.5 * peak[0])
        fprintf(stderr, "sgemm: warning: %d threads reach only %.2fx of 1 thread (is the machine busy?)\n", threads,
                peak[1] / peak[0]);
    if (json)
        printf("{\"bench\":\"sgemm\",\"threads\":%d,\"peak_gflops\":%.2f,\"peak_n\":%d,\"peak_backend\":\"%s\","
               "\"peak_gflops_1t\":%.2f,\"peak_n_1t\":%d}\n",
               tl[j], peak[j], peak_n[j], bname[peak_b[j]], peak[0], peak_n[0]);
    else
        printf("peak at %d thread%s: %.1f GFLOP/s (%s, N = %d); 1 thread: %.1f (N = %d)\npeak_gflops %.2f\n", tl[j],
               tl[j] > 1 ? "s" : "", peak[j], bname[peak_b[j]], peak_n[j], peak[0], peak_n[0], peak[j]);
    free(a);
    free(b);
    free(c);
    return 0;
}
