/* PNG writers: grids read back with libpng (size, values, rounding, clamping, padding),
 * raw gray/RGB images, and the loss plot. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <png.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "difflow/core.h"
#include "difflow/io.h"

static char g_dir[64];

static const char *tpath(const char *name)
{
    static char buf[4][256];
    static int k;
    k = (k + 1) % 4;
    snprintf(buf[k], sizeof buf[k], "%s/%s", g_dir, name);
    return buf[k];
}

static int setup(void **state)
{
    (void)state;
    strcpy(g_dir, "/tmp/dfl_test_png_XXXXXX");
    return mkdtemp(g_dir) ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    const char *names[] = {"grid.png", "rgb.png", "gray.png", "rgbraw.png", "plot.png",
                           "plot_lin.png", "plot_const.png"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) unlink(tpath(names[i]));
    rmdir(g_dir);
    return 0;
}

/* Reads a PNG with libpng's simplified API into 8-bit `format` pixels; checks the stored
 * colour type (gray or RGB) too. */
typedef struct {
    int w, h, ch;
    uint8_t *p;
} img;

static img read_png(const char *path, int want_channels)
{
    img r = {0, 0, 0, NULL};
    png_image im;
    memset(&im, 0, sizeof im);
    im.version = PNG_IMAGE_VERSION;
    if (!png_image_begin_read_from_file(&im, path)) {
        print_message("libpng: %s: %s\n", path, im.message);
        fail();
    }
    int stored = (im.format & PNG_FORMAT_FLAG_COLOR) ? 3 : 1;
    assert_int_equal(stored, want_channels);
    assert_int_equal(im.format & PNG_FORMAT_FLAG_ALPHA, 0);
    im.format = want_channels == 3 ? PNG_FORMAT_RGB : PNG_FORMAT_GRAY;
    r.w = (int)im.width;
    r.h = (int)im.height;
    r.ch = want_channels;
    r.p = malloc(PNG_IMAGE_SIZE(im));
    if (!png_image_finish_read(&im, NULL, r.p, 0, NULL)) {
        print_message("libpng: %s: %s\n", path, im.message);
        fail();
    }
    return r;
}

static int px(const img *m, int x, int y, int c) { return m->p[(y * m->w + x) * m->ch + c]; }

static void expect_px(const img *m, int x, int y, int c, int want)
{
    int got = px(m, x, y, c);
    if (got != want) print_message("pixel (%d,%d,c%d) = %d, want %d\n", x, y, c, got, want);
    assert_int_equal(got, want);
}

static void test_grid_gray(void **state)
{
    (void)state;
    /* 3 images of 2x3 in 2 columns, range [-1, 1]: grid 12 x 10. */
    enum { N = 3, H = 2, W = 3 };
    float imgs[N * H * W];
    const float im0[6] = {-1.0f, 1.0f, 0.0f, -0.5f, 0.5f, 2.0f};
    const float im1[6] = {-3.0f, NAN, 0.002f, -0.002f, 0.999f, -0.999f};
    memcpy(imgs, im0, sizeof im0);
    memcpy(imgs + 6, im1, sizeof im1);
    for (int i = 0; i < 6; i++) imgs[12 + i] = 1.0f;
    const char *p = tpath("grid.png");
    dfl_status st = dfl_png_write_grid(p, imgs, N, 1, H, W, 2, -1.0f, 1.0f);
    if (st) print_message("%s\n", dfl_last_error());
    assert_int_equal(st, DFL_OK);

    img m = read_png(p, 1);
    assert_int_equal(m.w, 2 * (W + 2) + 2);
    assert_int_equal(m.h, 2 * (H + 2) + 2);
    /* image 0 at (2, 2): round((v + 1) / 2 * 255) */
    const int want0[6] = {0, 255, 128 /* 127.5 rounds up */, 64 /* 63.75 */, 191 /* 191.25 */,
                          255 /* clamped */};
    for (int i = 0; i < 6; i++) expect_px(&m, 2 + i % 3, 2 + i / 3, 0, want0[i]);
    /* image 1 at (7, 2): clamp, NaN -> lo, rounding on both sides of .5 */
    const int want1[6] = {0, 0, 128 /* 127.755 */, 127 /* 127.245 */, 255 /* 254.87 */,
                          0 /* 0.1275 */};
    for (int i = 0; i < 6; i++) expect_px(&m, 7 + i % 3, 2 + i / 3, 0, want1[i]);
    /* image 2 at (2, 6), all 1 -> 255 */
    for (int y = 0; y < H; y++)
        for (int x = 0; x < W; x++) expect_px(&m, 2 + x, 6 + y, 0, 255);
    /* padding: outer border, the gaps between tiles, and the unused 4th tile are 0 */
    for (int x = 0; x < m.w; x++) {
        expect_px(&m, x, 0, 0, 0);
        expect_px(&m, x, 1, 0, 0);
        expect_px(&m, x, 4, 0, 0);
        expect_px(&m, x, 5, 0, 0);
        expect_px(&m, x, m.h - 1, 0, 0);
    }
    for (int y = 0; y < m.h; y++) {
        expect_px(&m, 0, y, 0, 0);
        expect_px(&m, 5, y, 0, 0);
        expect_px(&m, 6, y, 0, 0);
        expect_px(&m, m.w - 1, y, 0, 0);
    }
    for (int y = 6; y < 8; y++)
        for (int x = 7; x < 10; x++) expect_px(&m, x, y, 0, 0);
    free(m.p);
}

static void test_grid_rgb(void **state)
{
    (void)state;
    /* 2 images of 1x2, 3 channels, in 5 columns (clipped to 2), range [0, 1]: grid 10 x 5. */
    float imgs[2 * 3 * 2] = {
        1.0f, 0.0f,  0.0f, 1.0f,  0.5f, 0.25f, /* image 0: R plane, G plane, B plane */
        0.2f, 0.4f,  0.6f, 0.8f,  1.5f, -1.0f, /* image 1 */
    };
    const char *p = tpath("rgb.png");
    assert_int_equal(dfl_png_write_grid(p, imgs, 2, 3, 1, 2, 5, 0.0f, 1.0f), DFL_OK);
    img m = read_png(p, 3);
    assert_int_equal(m.w, 2 * (2 + 2) + 2);
    assert_int_equal(m.h, 1 * (1 + 2) + 2);
    /* image 0 pixel (0,0) = (255, 0, 128); pixel (1,0) = (0, 255, 64) */
    expect_px(&m, 2, 2, 0, 255);
    expect_px(&m, 2, 2, 1, 0);
    expect_px(&m, 2, 2, 2, 128);
    expect_px(&m, 3, 2, 0, 0);
    expect_px(&m, 3, 2, 1, 255);
    expect_px(&m, 3, 2, 2, 64);
    /* image 1 at x = 6: (51, 153, 255), (102, 204, 0) */
    expect_px(&m, 6, 2, 0, 51);
    expect_px(&m, 6, 2, 1, 153);
    expect_px(&m, 6, 2, 2, 255);
    expect_px(&m, 7, 2, 0, 102);
    expect_px(&m, 7, 2, 1, 204);
    expect_px(&m, 7, 2, 2, 0);
    for (int c = 0; c < 3; c++) {
        expect_px(&m, 4, 2, c, 0);
        expect_px(&m, 5, 2, c, 0);
        expect_px(&m, 2, 1, c, 0);
        expect_px(&m, 2, 3, c, 0);
    }
    free(m.p);
}

static void test_raw_and_errors(void **state)
{
    (void)state;
    uint8_t g[3 * 2] = {0, 1, 2, 253, 254, 255};
    assert_int_equal(dfl_png_write_gray(tpath("gray.png"), g, 3, 2), DFL_OK);
    img m = read_png(tpath("gray.png"), 1);
    assert_int_equal(m.w, 3);
    assert_int_equal(m.h, 2);
    assert_memory_equal(m.p, g, sizeof g);
    free(m.p);
    uint8_t c[2 * 2 * 3] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12};
    assert_int_equal(dfl_png_write_rgb(tpath("rgbraw.png"), c, 2, 2), DFL_OK);
    m = read_png(tpath("rgbraw.png"), 3);
    assert_memory_equal(m.p, c, sizeof c);
    free(m.p);

    float f[4] = {0};
    assert_int_equal(dfl_png_write_grid(tpath("x.png"), f, 1, 2, 2, 1, 1, 0, 1), DFL_ERR_ARG);
    assert_int_equal(dfl_png_write_grid(tpath("x.png"), f, 1, 1, 2, 2, 1, 1, 1), DFL_ERR_ARG);
    assert_int_equal(dfl_png_write_grid(tpath("x.png"), f, 0, 1, 2, 2, 1, 0, 1), DFL_ERR_ARG);
    assert_int_equal(dfl_png_write_gray(tpath("x.png"), g, 0, 2), DFL_ERR_ARG);
    assert_int_equal(access(tpath("x.png"), F_OK), -1);
    dfl_status st = dfl_png_write_gray("/nonexistent_dir_dfl/x.png", g, 3, 2);
    assert_int_equal(st, DFL_ERR_IO);
    assert_non_null(strstr(dfl_last_error(), "/nonexistent_dir_dfl/x.png"));
}

static int count_color(const img *m, int r, int g, int b)
{
    int k = 0;
    for (int i = 0; i < m->w * m->h; i++)
        if (m->p[3 * i] == r && m->p[3 * i + 1] == g && m->p[3 * i + 2] == b) k++;
    return k;
}

static void test_plot(void **state)
{
    (void)state;
    enum { N = 2000 };
    float *y = malloc(N * sizeof *y);
    dfl_rng r;
    dfl_rng_init(&r, 3);
    for (int i = 0; i < N; i++) y[i] = 2.0f * expf(-i / 400.0f) * (1.0f + 0.3f * dfl_rng_uniform(&r)) + 0.01f;
    const char *p = tpath("plot.png");
    assert_int_equal(dfl_png_plot_lines(p, y, N, 640, 400, "fm loss (moons)"), DFL_OK);
    img m = read_png(p, 3);
    assert_int_equal(m.w, 640);
    assert_int_equal(m.h, 400);
    expect_px(&m, 0, m.h - 1, 0, 255); /* white background */
    expect_px(&m, m.w - 1, m.h - 1, 2, 255);
    int black = count_color(&m, 0, 0, 0);
    int dark = count_color(&m, 20, 60, 150), light = count_color(&m, 165, 195, 235);
    int gridpx = count_color(&m, 225, 225, 225);
    print_message("plot pixels: black %d, average %d, raw %d, grid %d\n", black, dark, light,
                  gridpx);
    assert_true(black > 2 * (640 + 400) / 2); /* at least the box plus labels */
    assert_true(dark > 300);                  /* the average spans the plot width */
    assert_true(light > 300);
    assert_true(gridpx > 500);
    free(m.p);

    /* Negative values: linear scale, NaN gaps; a constant series; no finite values. */
    for (int i = 0; i < N; i++) y[i] = sinf(i * 0.01f) - 0.5f;
    y[100] = NAN;
    y[101] = INFINITY;
    assert_int_equal(dfl_png_plot_lines(tpath("plot_lin.png"), y, N, 200, 120, NULL), DFL_OK);
    for (int i = 0; i < 10; i++) y[i] = 1.0f;
    assert_int_equal(dfl_png_plot_lines(tpath("plot_const.png"), y, 1, 120, 80, "x"), DFL_OK);
    y[0] = NAN;
    assert_int_equal(dfl_png_plot_lines(tpath("x.png"), y, 1, 120, 80, "x"), DFL_ERR_ARG);
    assert_int_equal(dfl_png_plot_lines(tpath("x.png"), y, N, 50, 80, "x"), DFL_ERR_ARG);
    free(y);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_grid_gray),
        cmocka_unit_test(test_grid_rgb),
        cmocka_unit_test(test_raw_and_errors),
        cmocka_unit_test(test_plot),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
