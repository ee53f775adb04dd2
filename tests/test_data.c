/* Data: IDX reader (gzip and plain, every failure), Fashion-MNIST if installed, batches, and the
 * 2-D toy generators against closed-form moments. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

#include "difflow/core.h"
#include "difflow/data.h"

static char g_dir[64];
static char g_files[32][256];
static int g_nfiles;

static const char *tpath(const char *name)
{
    char *b = g_files[g_nfiles++ % 32];
    snprintf(b, 256, "%s/%s", g_dir, name);
    return b;
}

static int setup(void **state)
{
    (void)state;
    strcpy(g_dir, "/tmp/dfl_test_data_XXXXXX");
    return mkdtemp(g_dir) ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    for (int i = 0; i < g_nfiles && i < 32; i++) unlink(g_files[i]);
    rmdir(g_dir);
    return 0;
}

static void put_be32(unsigned char *b, uint32_t v)
{
    b[0] = (unsigned char)(v >> 24);
    b[1] = (unsigned char)(v >> 16);
    b[2] = (unsigned char)(v >> 8);
    b[3] = (unsigned char)v;
}

/* An IDX file: magic, dims, then `npay` payload bytes (i * 7 + 3) mod 256; gzip'd or plain. */
static void write_idx(const char *path, int gz, uint32_t magic, int ndims, const uint32_t *dims,
                      size_t npay)
{
    size_t hl = 4 + 4 * (size_t)ndims;
    unsigned char *b = malloc(hl + npay + 1);
    put_be32(b, magic);
    for (int i = 0; i < ndims; i++) put_be32(b + 4 + 4 * i, dims[i]);
    for (size_t i = 0; i < npay; i++) b[hl + i] = (unsigned char)((i * 7 + 3) % 256);
    if (gz) {
        gzFile f = gzopen(path, "wb");
        assert_non_null(f);
        assert_int_equal(gzwrite(f, b, (unsigned)(hl + npay)), (int)(hl + npay));
        assert_int_equal(gzclose(f), Z_OK);
    } else {
        FILE *f = fopen(path, "wb");
        assert_non_null(f);
        assert_int_equal(fwrite(b, 1, hl + npay, f), hl + npay);
        fclose(f);
    }
    free(b);
}

static void expect_msg(dfl_status st, dfl_status want, const char *sub, const char *path)
{
    if (st != want || !strstr(dfl_last_error(), sub) || !strstr(dfl_last_error(), path))
        print_message("status %d (want %d): \"%s\" (want \"%s\")\n", st, want, dfl_last_error(),
                      sub);
    assert_int_equal(st, want);
    assert_non_null(strstr(dfl_last_error(), sub));
    assert_non_null(strstr(dfl_last_error(), path));
}

/* ------------------------------------------------------------------ IDX */

static void test_idx_good(void **state)
{
    (void)state;
    const uint32_t d3[3] = {3, 2, 4};
    for (int gz = 0; gz < 2; gz++) {
        const char *p = tpath(gz ? "img.gz" : "img.raw");
        write_idx(p, gz, 0x803, 3, d3, 24);
        uint8_t *pix = NULL;
        int n = 0, h = 0, w = 0;
        dfl_status st = dfl_idx_load_images(p, &pix, &n, &h, &w);
        if (st) print_message("%s\n", dfl_last_error());
        assert_int_equal(st, DFL_OK);
        assert_int_equal(n, 3);
        assert_int_equal(h, 2);
        assert_int_equal(w, 4);
        for (int i = 0; i < 24; i++) assert_int_equal(pix[i], (i * 7 + 3) % 256);
        free(pix);
    }
    const uint32_t d1[1] = {5};
    const char *p = tpath("lab.gz");
    write_idx(p, 1, 0x801, 1, d1, 5);
    uint8_t *lab = NULL;
    int n = 0;
    assert_int_equal(dfl_idx_load_labels(p, &lab, &n), DFL_OK);
    assert_int_equal(n, 5);
    assert_int_equal(lab[0], 3);
    assert_int_equal(lab[4], 31);
    free(lab);
}

static void test_idx_bad(void **state)
{
    (void)state;
    uint8_t *pix = (uint8_t *)1;
    int n, h, w;
    const uint32_t d3[3] = {3, 2, 4};

    /* wrong magic: a label file given to the image loader, and vice versa */
    const uint32_t d1[1] = {5};
    const char *lp = tpath("labels_as_images.gz");
    write_idx(lp, 1, 0x801, 1, d1, 5);
    expect_msg(dfl_idx_load_images(lp, &pix, &n, &h, &w), DFL_ERR_FORMAT, "bad magic 0x00000801",
               lp);
    assert_null(pix);
    const char *ip = tpath("images_as_labels.gz");
    write_idx(ip, 1, 0x803, 3, d3, 24);
    uint8_t *lab = NULL;
    expect_msg(dfl_idx_load_labels(ip, &lab, &n), DFL_ERR_FORMAT, "bad magic 0x00000803", ip);

    /* truncated pixel data */
    const char *tp = tpath("trunc.gz");
    write_idx(tp, 1, 0x803, 3, d3, 20);
    expect_msg(dfl_idx_load_images(tp, &pix, &n, &h, &w), DFL_ERR_FORMAT,
               "truncated: expected 24 bytes of pixel data, got 20", tp);

    /* a huge header count on a tiny file: truncation, not an attempt to allocate it all */
    const uint32_t dh[3] = {0x7fffffffu, 4096, 4096};
    const char *hp = tpath("huge.gz");
    write_idx(hp, 1, 0x803, 3, dh, 100);
    expect_msg(dfl_idx_load_images(hp, &pix, &n, &h, &w), DFL_ERR_FORMAT, "truncated", hp);

    /* trailing bytes */
    const char *xp = tpath("extra.gz");
    write_idx(xp, 1, 0x803, 3, d3, 25);
    expect_msg(dfl_idx_load_images(xp, &pix, &n, &h, &w), DFL_ERR_FORMAT, "trailing", xp);

    /* bad dims */
    const uint32_t dz[3] = {3, 0, 4}, db[3] = {1, 5000, 1}, dn[3] = {0, 2, 2};
    const char *zp = tpath("zero.gz");
    write_idx(zp, 1, 0x803, 3, dz, 0);
    expect_msg(dfl_idx_load_images(zp, &pix, &n, &h, &w), DFL_ERR_FORMAT, "bad dims", zp);
    const char *bp = tpath("big.gz");
    write_idx(bp, 1, 0x803, 3, db, 5000);
    expect_msg(dfl_idx_load_images(bp, &pix, &n, &h, &w), DFL_ERR_FORMAT, "bad dims", bp);
    const char *np = tpath("n0.gz");
    write_idx(np, 1, 0x803, 3, dn, 0);
    expect_msg(dfl_idx_load_images(np, &pix, &n, &h, &w), DFL_ERR_FORMAT, "bad dims", np);

    /* header cut short */
    const char *sp = tpath("shorthdr.raw");
    FILE *f = fopen(sp, "wb");
    fwrite("\x00\x00\x08\x03\x00\x00", 1, 6, f);
    fclose(f);
    expect_msg(dfl_idx_load_images(sp, &pix, &n, &h, &w), DFL_ERR_FORMAT, "truncated", sp);

    /* a gzip stream cut in the middle */
    const uint32_t dbig[3] = {200, 28, 28};
    const char *cp = tpath("cut.gz");
    write_idx(cp, 1, 0x803, 3, dbig, 200 * 784);
    f = fopen(cp, "rb");
    unsigned char buf[1 << 16];
    size_t len = fread(buf, 1, sizeof buf, f);
    fclose(f);
    assert_true(len > 100 && len < sizeof buf);
    f = fopen(cp, "wb");
    fwrite(buf, 1, len / 2, f);
    fclose(f);
    dfl_status st = dfl_idx_load_images(cp, &pix, &n, &h, &w);
    print_message("cut gzip: %s\n", dfl_last_error());
    expect_msg(st, DFL_ERR_FORMAT, "", cp);

    /* missing file */
    const char *mp = tpath("missing.gz");
    expect_msg(dfl_idx_load_images(mp, &pix, &n, &h, &w), DFL_ERR_IO, "cannot open", mp);
    expect_msg(dfl_idx_load_labels(mp, &lab, &n), DFL_ERR_IO, "cannot open", mp);
}

static void test_fmnist_dir_mismatch(void **state)
{
    (void)state;
    /* A fake dataset dir with 3 test images but 4 labels (plain files, no .gz). */
    const uint32_t d3[3] = {3, 2, 2}, d1[1] = {4};
    write_idx(tpath("t10k-images-idx3-ubyte"), 0, 0x803, 3, d3, 12);
    write_idx(tpath("t10k-labels-idx1-ubyte"), 0, 0x801, 1, d1, 4);
    dfl_dataset d;
    expect_msg(dfl_fmnist_load(g_dir, 0, &d), DFL_ERR_FORMAT, "4 labels but", g_dir);
    assert_null(d.pix);
    assert_null(d.labels);
    /* train files absent: the error names the .gz path */
    expect_msg(dfl_fmnist_load(g_dir, 1, &d), DFL_ERR_IO, "train-images-idx3-ubyte.gz", g_dir);
}

static void test_fmnist_package(void **state)
{
    (void)state;
    if (access(DFL_FMNIST_DIR "/train-images-idx3-ubyte.gz", R_OK) != 0) {
        print_message("Fashion-MNIST not installed in " DFL_FMNIST_DIR "; skipped\n");
        skip();
    }
    dfl_dataset tr, te;
    dfl_status st = dfl_fmnist_load(NULL, 1, &tr);
    if (st) print_message("%s\n", dfl_last_error());
    assert_int_equal(st, DFL_OK);
    assert_int_equal(tr.n, 60000);
    assert_int_equal(tr.c, 1);
    assert_int_equal(tr.h, 28);
    assert_int_equal(tr.w, 28);
    /* First labels and the first image's pixel sum, read independently with Python's gzip
     * module: 9 is "Ankle boot". */
    const uint8_t first[10] = {9, 0, 0, 3, 0, 2, 7, 2, 5, 5};
    assert_memory_equal(tr.labels, first, 10);
    long sum = 0;
    for (int i = 0; i < 784; i++) sum += tr.pix[i];
    assert_int_equal(sum, 76247);
    int hist[256] = {0};
    for (int i = 0; i < tr.n; i++) hist[tr.labels[i]]++;
    for (int k = 0; k < 10; k++) assert_int_equal(hist[k], 6000); /* balanced classes */

    assert_int_equal(dfl_fmnist_load(DFL_FMNIST_DIR, 0, &te), DFL_OK);
    assert_int_equal(te.n, 10000);
    assert_int_equal(te.h, 28);
    assert_int_equal(te.w, 28);
    assert_int_equal(te.labels[0], 9);
    assert_int_equal(te.labels[1], 2);

    /* a batch in [-1, 1] */
    uint32_t idx[2] = {0, 59999};
    float *out = malloc(2 * 784 * sizeof *out);
    dfl_dataset_batch(&tr, idx, 2, out);
    for (int i = 0; i < 784; i++) {
        assert_true(out[i] == tr.pix[i] / 127.5f - 1.0f);
        assert_true(out[784 + i] == tr.pix[59999 * 784 + i] / 127.5f - 1.0f);
    }
    free(out);
    dfl_dataset_free(&tr);
    dfl_dataset_free(&te);
    assert_null(tr.pix);
}

static void test_to_float_and_batch(void **state)
{
    (void)state;
    const uint8_t px[4] = {0, 255, 51, 128};
    float f[4];
    dfl_images_to_float(px, 4, f);
    assert_true(f[0] == -1.0f);
    assert_true(f[1] == 1.0f);
    assert_true(fabsf(f[2] - (-0.6f)) < 1e-6f);
    assert_true(fabsf(f[3] - (0.5f / 127.5f)) < 1e-6f);

    float pts[6] = {1, 2, 3, 4, 5, 6};
    dfl_dataset d = {0};
    d.n = 3;
    d.dim = 2;
    d.points = pts;
    uint32_t idx[3] = {2, 0, 2};
    float out[6];
    dfl_dataset_batch(&d, idx, 3, out);
    const float want[6] = {5, 6, 1, 2, 5, 6};
    assert_memory_equal(out, want, sizeof want);
}

/* ------------------------------------------------------------------ toys */

static void moments(const float *x, int n, double m[2], double c[3])
{
    double s0 = 0, s1 = 0;
    for (int i = 0; i < n; i++) {
        s0 += x[2 * i];
        s1 += x[2 * i + 1];
    }
    m[0] = s0 / n;
    m[1] = s1 / n;
    double a = 0, b = 0, ab = 0;
    for (int i = 0; i < n; i++) {
        double u = x[2 * i] - m[0], v = x[2 * i + 1] - m[1];
        a += u * u;
        b += v * v;
        ab += u * v;
    }
    c[0] = a / n;
    c[1] = b / n;
    c[2] = ab / n;
}

static void check(const char *what, double got, double want, double tol)
{
    if (!(fabs(got - want) < tol))
        print_message("%s: got %.5f, want %.5f (tol %.3f)\n", what, got, want, tol);
    assert_true(fabs(got - want) < tol);
}

enum { NTOY = 200000 };

/* 8gaussians: c uniform on 8 directions * 4, x = (0.5 z + c) / 1.414.
 * E[c] = 0. E[c_x^2] = 16 * (1 + 1 + 0 + 0 + 4 * 1/2) / 8 = 8, likewise E[c_y^2];
 * E[c_x c_y] = 16 * (1/2 - 1/2 - 1/2 + 1/2) / 8 = 0. So mean 0, Var = (8 + 0.25) / 1.414^2
 * = 4.12625 per coordinate, covariance 0. Every point lies near one centre. */
static void test_toy_8gaussians(void **state)
{
    (void)state;
    float *x = malloc(2 * NTOY * sizeof *x);
    dfl_rng r;
    dfl_rng_init(&r, 123);
    assert_int_equal(dfl_toy_sample("8gaussians", &r, NTOY, x), DFL_OK);
    double m[2], c[3];
    moments(x, NTOY, m, c);
    const double var = 8.25 / (1.414 * 1.414);
    check("8g mean x", m[0], 0, 0.02);
    check("8g mean y", m[1], 0, 0.02);
    check("8g var x", c[0], var, 0.04);
    check("8g var y", c[1], var, 0.04);
    check("8g cov", c[2], 0, 0.03);
    /* Radius: |c| = 4/1.414 = 2.8289; E|x|^2 = 2 * var = 8.2525. */
    double r2 = 0;
    int far = 0;
    for (int i = 0; i < NTOY; i++) {
        double rr = x[2 * i] * (double)x[2 * i] + x[2 * i + 1] * (double)x[2 * i + 1];
        r2 += rr;
        if (fabs(sqrt(rr) - 4 / 1.414) > 2.5) far++; /* > 7 sigma of the 0.354 noise */
    }
    check("8g E|x|^2", r2 / NTOY, 2 * var, 0.06);
    assert_int_equal(far, 0);
    free(x);
}

/* moons, before the affine map: theta ~ U[0, pi], outer (cos, sin) or inner (1 - cos, 1/2 - sin)
 * with prob 1/2, noise sd 0.1. E[cos] = 0, E[sin] = 2/pi, E[cos^2] = E[sin^2] = 1/2,
 * E[sin cos] = 0.
 *   E[X] = 1/2, E[Y] = (2/pi + 1/2 - 2/pi)/2 = 1/4
 *   E[X^2] = (1/2 + (1 + 1/2))/2 = 1, Var X = 3/4
 *   E[Y^2] = (1/2 + (1/4 - 2/pi + 1/2))/2 = 5/8 - 1/pi, Var Y = 9/16 - 1/pi
 *   E[XY] = (0 + (1/2 - 2/pi - 0 + 0))/2 = 1/4 - 1/pi, Cov = 1/8 - 1/pi
 * plus 0.01 on each variance; then x*2 + (-1, -0.2): mean (0, 0.3), cov * 4. */
static void test_toy_moons(void **state)
{
    (void)state;
    float *x = malloc(2 * NTOY * sizeof *x);
    dfl_rng r;
    dfl_rng_init(&r, 7);
    assert_int_equal(dfl_toy_sample("moons", &r, NTOY, x), DFL_OK);
    double m[2], c[3];
    moments(x, NTOY, m, c);
    const double pi = 3.14159265358979323846;
    check("moons mean x", m[0], 0.0, 0.015);
    check("moons mean y", m[1], 0.3, 0.015);
    check("moons var x", c[0], 4 * (0.75 + 0.01), 0.03);       /* 3.04 */
    check("moons var y", c[1], 4 * (9.0 / 16 - 1 / pi + 0.01), 0.02); /* 1.01676 */
    check("moons cov", c[2], 4 * (1.0 / 8 - 1 / pi), 0.02);    /* -0.77324 */
    free(x);
}

/* checkerboard: x1 ~ U(-2,2), x2 = U - 2B + m, m = floor(x1) mod 2 in {0,1} equiprobable:
 * E = 0; Var x1 = 4/3, Var x2 = 1/12 + 1 + 1/4 = 4/3; E[x1 m] = (1/4)(-1/2) + (1/4)(3/2) = 1/4.
 * Output 2x: var 16/3, cov 1. */
static void test_toy_checkerboard(void **state)
{
    (void)state;
    float *x = malloc(2 * NTOY * sizeof *x);
    dfl_rng r;
    dfl_rng_init(&r, 11);
    assert_int_equal(dfl_toy_sample("checkerboard", &r, NTOY, x), DFL_OK);
    double m[2], c[3];
    moments(x, NTOY, m, c);
    check("cb mean x", m[0], 0, 0.02);
    check("cb mean y", m[1], 0, 0.02);
    check("cb var x", c[0], 16.0 / 3, 0.05);
    check("cb var y", c[1], 16.0 / 3, 0.05);
    check("cb cov", c[2], 1.0, 0.04);
    /* Support: before the x2 scaling, x2 - m lies in [-2,-1) or [0,1), so with
     * i = floor(x1), j = floor(x2): j - (i mod 2) is even. */
    for (int i = 0; i < NTOY; i++) {
        double u = x[2 * i] / 2.0, v = x[2 * i + 1] / 2.0;
        if (fabs(u - round(u)) < 1e-5 || fabs(v - round(v)) < 1e-5) continue; /* float rounding */
        int a = (int)floor(u), b = (int)floor(v);
        assert_true(a >= -2 && a <= 1 && b >= -2 && b <= 1);
        assert_int_equal(((b - (((a % 2) + 2) % 2)) % 2 + 2) % 2, 0);
    }
    free(x);
}

static void test_toy_api(void **state)
{
    (void)state;
    dfl_rng r;
    dfl_rng_init(&r, 1);
    float x[4];
    dfl_status st = dfl_toy_sample("spiralz", &r, 2, x);
    assert_int_equal(st, DFL_ERR_ARG);
    assert_non_null(strstr(dfl_last_error(), "spiralz"));
    assert_int_equal(dfl_toy_known("moons"), 1);
    assert_int_equal(dfl_toy_known("8gaussians"), 1);
    assert_int_equal(dfl_toy_known("spiralz"), 0);
    assert_int_equal(dfl_toy_known(NULL), 0);
    assert_true(fabs(dfl_toy_true_loglik_bound("moons") - (-2.3939)) < 1e-9);
    assert_true(fabs(dfl_toy_true_loglik_bound("8gaussians") - (-2.8319)) < 1e-9);
    assert_true(fabs(dfl_toy_true_loglik_bound("checkerboard") + log(32.0)) < 1e-9);
    assert_true(isnan(dfl_toy_true_loglik_bound("spiralz")));

    /* reproducible from the seed; different seeds differ */
    dfl_dataset a, b, c;
    assert_int_equal(dfl_toy_dataset("moons", 5, 1000, &a), DFL_OK);
    assert_int_equal(dfl_toy_dataset("moons", 5, 1000, &b), DFL_OK);
    assert_int_equal(dfl_toy_dataset("moons", 6, 1000, &c), DFL_OK);
    assert_int_equal(a.n, 1000);
    assert_int_equal(a.dim, 2);
    assert_null(a.pix);
    assert_memory_equal(a.points, b.points, 2000 * sizeof(float));
    assert_memory_not_equal(a.points, c.points, 2000 * sizeof(float));
    uint32_t idx[2] = {999, 3};
    float out[4];
    dfl_dataset_batch(&a, idx, 2, out);
    assert_true(out[0] == a.points[1998] && out[1] == a.points[1999]);
    assert_true(out[2] == a.points[6] && out[3] == a.points[7]);
    dfl_dataset_free(&a);
    dfl_dataset_free(&b);
    dfl_dataset_free(&c);
    assert_int_equal(dfl_toy_dataset("nope", 1, 10, &a), DFL_ERR_ARG);
    assert_non_null(strstr(dfl_last_error(), "nope"));
    assert_int_equal(dfl_toy_dataset("moons", 1, 0, &a), DFL_ERR_ARG);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_idx_good),
        cmocka_unit_test(test_idx_bad),
        cmocka_unit_test(test_fmnist_dir_mismatch),
        cmocka_unit_test(test_fmnist_package),
        cmocka_unit_test(test_to_float_and_batch),
        cmocka_unit_test(test_toy_8gaussians),
        cmocka_unit_test(test_toy_moons),
        cmocka_unit_test(test_toy_checkerboard),
        cmocka_unit_test(test_toy_api),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
