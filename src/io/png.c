/* PNG output with libpng: raw gray/RGB images, image grids, and loss-curve plots.
 *
 * Images are encoded into memory (png_set_write_fn) and written with dfl_write_file_atomic, so
 * a reader never sees a half-written PNG. The plot's labels use a small 5x7 bitmap font drawn
 * for this file.
 */
#include "difflow/io.h"

#include <math.h>
#include <png.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PNG_MAX_DIM 1000000 /* libpng's default user width/height limit */

/* ================================================================= encoding */

typedef struct {
    unsigned char *p;
    size_t n, cap;
    char err[200]; /* libpng's error text */
} png_sink;

static void sink_write(png_structp png, png_bytep data, size_t len)
{
    png_sink *s = png_get_io_ptr(png);
    if (s->n + len > s->cap) {
        size_t cap = s->cap ? s->cap : 4096;
        while (cap < s->n + len) cap *= 2;
        unsigned char *q = realloc(s->p, cap);
        if (!q) png_error(png, "out of memory");
        s->p = q;
        s->cap = cap;
    }
    memcpy(s->p + s->n, data, len);
    s->n += len;
}

static void sink_flush(png_structp png) { (void)png; }

static void on_png_error(png_structp png, png_const_charp msg)
{
    png_sink *s = png_get_error_ptr(png);
    snprintf(s->err, sizeof s->err, "%s", msg ? msg : "unknown libpng error");
    png_longjmp(png, 1);
}

static void on_png_warning(png_structp png, png_const_charp msg)
{
    (void)png;
    (void)msg;
}

/* Everything that may longjmp runs here, outside the frame that called setjmp, so no local
 * variable of that frame changes after setjmp. */
static void encode_body(png_structp png, png_infop info, const uint8_t *pix, int w, int h,
                        int channels)
{
    png_set_IHDR(png, info, (png_uint_32)w, (png_uint_32)h, 8,
                 channels == 3 ? PNG_COLOR_TYPE_RGB : PNG_COLOR_TYPE_GRAY, PNG_INTERLACE_NONE,
                 PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    png_write_info(png, info);
    size_t stride = (size_t)w * (size_t)channels;
    for (int y = 0; y < h; y++) png_write_row(png, pix + (size_t)y * stride);
    png_write_end(png, NULL);
}

static int encode_png(png_sink *sink, const uint8_t *pix, int w, int h, int channels)
{
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, sink, on_png_error,
                                              on_png_warning);
    if (!png) {
        snprintf(sink->err, sizeof sink->err, "cannot create a libpng write struct");
        return 0;
    }
    png_infop info = png_create_info_struct(png);
    if (!info) {
        png_destroy_write_struct(&png, NULL);
        snprintf(sink->err, sizeof sink->err, "cannot create a libpng info struct");
        return 0;
    }
    if (setjmp(png_jmpbuf(png))) {
        png_destroy_write_struct(&png, &info);
        return 0;
    }
    png_set_write_fn(png, sink, sink_write, sink_flush);
    encode_body(png, info, pix, w, h, channels);
    png_destroy_write_struct(&png, &info);
    return 1;
}

static dfl_status write_png(const char *path, const uint8_t *pix, int w, int h, int channels)
{
    if (!path || !*path) return dfl_fail(DFL_ERR_ARG, "png: empty or NULL path");
    if (!pix) return dfl_fail(DFL_ERR_ARG, "%s: png: NULL pixels", path);
    if (w < 1 || h < 1 || w > PNG_MAX_DIM || h > PNG_MAX_DIM)
        return dfl_fail(DFL_ERR_ARG, "%s: png: size %dx%d outside 1..%d", path, w, h, PNG_MAX_DIM);
    png_sink sink;
    memset(&sink, 0, sizeof sink);
    if (!encode_png(&sink, pix, w, h, channels)) {
        free(sink.p);
        if (!strcmp(sink.err, "out of memory") || strstr(sink.err, "cannot create"))
            return dfl_fail(DFL_ERR_NOMEM, "%s: png encoding: %s", path, sink.err);
        return dfl_fail(DFL_ERR_FORMAT, "%s: png encoding failed: %s", path, sink.err);
    }
    dfl_status st = dfl_write_file_atomic(path, sink.p, sink.n);
    free(sink.p);
    return st;
}

dfl_status dfl_png_write_gray(const char *path, const uint8_t *pix, int w, int h)
{
    return write_png(path, pix, w, h, 1);
}

dfl_status dfl_png_write_rgb(const char *path, const uint8_t *pix, int w, int h)
{
    return write_png(path, pix, w, h, 3);
}

/* ================================================================= grid */

static uint8_t to_u8(float v, float lo, float hi)
{
    if (!(v >= lo)) v = lo; /* also NaN */
    if (v > hi) v = hi;
    double t = floor((double)(v - lo) / ((double)hi - (double)lo) * 255.0 + 0.5);
    if (t < 0) t = 0;
    if (t > 255) t = 255;
    return (uint8_t)t;
}

dfl_status dfl_png_write_grid(const char *path, const float *imgs, int n, int c, int h, int w,
                              int ncols, float lo, float hi)
{
    const int pad = 2;
    const char *p = path ? path : "(null)";
    if (!imgs) return dfl_fail(DFL_ERR_ARG, "%s: png grid: NULL images", p);
    if (n < 1 || h < 1 || w < 1 || ncols < 1)
        return dfl_fail(DFL_ERR_ARG, "%s: png grid: need n, h, w, ncols >= 1 (got n=%d h=%d "
                        "w=%d ncols=%d)", p, n, h, w, ncols);
    if (c != 1 && c != 3)
        return dfl_fail(DFL_ERR_ARG, "%s: png grid: %d channels; only 1 (gray) or 3 (RGB)", p, c);
    if (!(hi > lo) || !isfinite(lo) || !isfinite(hi))
        return dfl_fail(DFL_ERR_ARG, "%s: png grid: value range [%g, %g] is empty", p, (double)lo,
                        (double)hi);
    int cols = ncols < n ? ncols : n;
    int rows = (n + cols - 1) / cols;
    long long GW = (long long)cols * (w + pad) + pad, GH = (long long)rows * (h + pad) + pad;
    if (GW > PNG_MAX_DIM || GH > PNG_MAX_DIM)
        return dfl_fail(DFL_ERR_ARG, "%s: png grid: image %lldx%lld too large", p, GW, GH);
    uint8_t *out = calloc((size_t)GW * (size_t)GH * (size_t)c, 1);
    if (!out) return dfl_fail(DFL_ERR_NOMEM, "%s: png grid: out of memory", p);
    size_t plane = (size_t)h * (size_t)w;
    for (int k = 0; k < n; k++) {
        const float *img = imgs + (size_t)k * (size_t)c * plane;
        size_t ox = (size_t)(k % cols) * (size_t)(w + pad) + pad;
        size_t oy = (size_t)(k / cols) * (size_t)(h + pad) + pad;
        for (int y = 0; y < h; y++)
            for (int x = 0; x < w; x++)
                for (int ch = 0; ch < c; ch++) {
                    float v = img[(size_t)ch * plane + (size_t)y * (size_t)w + (size_t)x];
                    out[((oy + (size_t)y) * (size_t)GW + ox + (size_t)x) * (size_t)c + (size_t)ch] =
                        to_u8(v, lo, hi);
                }
    }
    dfl_status st = write_png(path, out, (int)GW, (int)GH, c);
    free(out);
    return st;
}

/* ================================================================= 5x7 font */

/* Each glyph: 7 rows, bit 4 = leftmost of 5 columns. */
typedef struct {
    char ch;
    uint8_t rows[7];
} glyph;

static const glyph FONT[] = {
    {'0', {0x0E, 0x11, 0x13, 0x15, 0x19, 0x11, 0x0E}},
    {'1', {0x04, 0x0C, 0x04, 0x04, 0x04, 0x04, 0x0E}},
    {'2', {0x0E, 0x11, 0x01, 0x02, 0x04, 0x08, 0x1F}},
    {'3', {0x1F, 0x02, 0x04, 0x02, 0x01, 0x11, 0x0E}},
    {'4', {0x02, 0x06, 0x0A, 0x12, 0x1F, 0x02, 0x02}},
    {'5', {0x1F, 0x10, 0x1E, 0x01, 0x01, 0x11, 0x0E}},
    {'6', {0x06, 0x08, 0x10, 0x1E, 0x11, 0x11, 0x0E}},
    {'7', {0x1F, 0x01, 0x02, 0x04, 0x08, 0x08, 0x08}},
    {'8', {0x0E, 0x11, 0x11, 0x0E, 0x11, 0x11, 0x0E}},
    {'9', {0x0E, 0x11, 0x11, 0x0F, 0x01, 0x02, 0x0C}},
    {'.', {0x00, 0x00, 0x00, 0x00, 0x00, 0x0C, 0x0C}},
    {'-', {0x00, 0x00, 0x00, 0x1F, 0x00, 0x00, 0x00}},
    {'+', {0x00, 0x04, 0x04, 0x1F, 0x04, 0x04, 0x00}},
    {'e', {0x00, 0x00, 0x0E, 0x11, 0x1F, 0x10, 0x0E}},
    {':', {0x00, 0x0C, 0x0C, 0x00, 0x0C, 0x0C, 0x00}},
    {'/', {0x01, 0x01, 0x02, 0x04, 0x08, 0x10, 0x10}},
    {'_', {0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x1F}},
    {'(', {0x02, 0x04, 0x08, 0x08, 0x08, 0x04, 0x02}},
    {')', {0x08, 0x04, 0x02, 0x02, 0x02, 0x04, 0x08}},
    {'%', {0x18, 0x19, 0x02, 0x04, 0x08, 0x13, 0x03}},
    {'=', {0x00, 0x00, 0x1F, 0x00, 0x1F, 0x00, 0x00}},
    {',', {0x00, 0x00, 0x00, 0x00, 0x0C, 0x04, 0x08}},
    {'#', {0x0A, 0x0A, 0x1F, 0x0A, 0x1F, 0x0A, 0x0A}},
    {'A', {0x0E, 0x11, 0x11, 0x1F, 0x11, 0x11, 0x11}},
    {'B', {0x1E, 0x11, 0x11, 0x1E, 0x11, 0x11, 0x1E}},
    {'C', {0x0E, 0x11, 0x10, 0x10, 0x10, 0x11, 0x0E}},
    {'D', {0x1E, 0x11, 0x11, 0x11, 0x11, 0x11, 0x1E}},
    {'E', {0x1F, 0x10, 0x10, 0x1E, 0x10, 0x10, 0x1F}},
    {'F', {0x1F, 0x10, 0x10, 0x1E, 0x10, 0x10, 0x10}},
    {'G', {0x0E, 0x11, 0x10, 0x17, 0x11, 0x11, 0x0F}},
    {'H', {0x11, 0x11, 0x11, 0x1F, 0x11, 0x11, 0x11}},
    {'I', {0x0E, 0x04, 0x04, 0x04, 0x04, 0x04, 0x0E}},
    {'J', {0x07, 0x02, 0x02, 0x02, 0x02, 0x12, 0x0C}},
    {'K', {0x11, 0x12, 0x14, 0x18, 0x14, 0x12, 0x11}},
    {'L', {0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x1F}},
    {'M', {0x11, 0x1B, 0x15, 0x15, 0x11, 0x11, 0x11}},
    {'N', {0x11, 0x11, 0x19, 0x15, 0x13, 0x11, 0x11}},
    {'O', {0x0E, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0E}},
    {'P', {0x1E, 0x11, 0x11, 0x1E, 0x10, 0x10, 0x10}},
    {'Q', {0x0E, 0x11, 0x11, 0x11, 0x15, 0x12, 0x0D}},
    {'R', {0x1E, 0x11, 0x11, 0x1E, 0x14, 0x12, 0x11}},
    {'S', {0x0F, 0x10, 0x10, 0x0E, 0x01, 0x01, 0x1E}},
    {'T', {0x1F, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04}},
    {'U', {0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0E}},
    {'V', {0x11, 0x11, 0x11, 0x11, 0x11, 0x0A, 0x04}},
    {'W', {0x11, 0x11, 0x11, 0x15, 0x15, 0x15, 0x0A}},
    {'X', {0x11, 0x11, 0x0A, 0x04, 0x0A, 0x11, 0x11}},
    {'Y', {0x11, 0x11, 0x0A, 0x04, 0x04, 0x04, 0x04}},
    {'Z', {0x1F, 0x01, 0x02, 0x04, 0x08, 0x10, 0x1F}},
};

static const uint8_t *glyph_rows(char ch)
{
    for (size_t i = 0; i < sizeof FONT / sizeof FONT[0]; i++)
        if (FONT[i].ch == ch) return FONT[i].rows;
    return NULL; /* drawn as a blank */
}

/* ================================================================= plot canvas */

typedef struct {
    uint8_t *p;
    int w, h;
} canvas;

static void put(canvas *cv, int x, int y, const uint8_t rgb[3])
{
    if (x < 0 || y < 0 || x >= cv->w || y >= cv->h) return;
    memcpy(cv->p + ((size_t)y * (size_t)cv->w + (size_t)x) * 3, rgb, 3);
}

/* Bresenham line, both ends included. */
static void line(canvas *cv, int x0, int y0, int x1, int y1, const uint8_t rgb[3])
{
    int dx = abs(x1 - x0), sx = x0 < x1 ? 1 : -1;
    int dy = -abs(y1 - y0), sy = y0 < y1 ? 1 : -1;
    int err = dx + dy;
    for (;;) {
        put(cv, x0, y0, rgb);
        if (x0 == x1 && y0 == y1) break;
        int e2 = 2 * err;
        if (e2 >= dy) {
            err += dy;
            x0 += sx;
        }
        if (e2 <= dx) {
            err += dx;
            y0 += sy;
        }
    }
}

/* Text with its top-left corner at (x, y); each font pixel is a scale x scale block. */
static void text(canvas *cv, int x, int y, const char *s, int scale, const uint8_t rgb[3])
{
    for (; *s; s++, x += 6 * scale) {
        const uint8_t *g = glyph_rows(*s);
        if (!g) continue;
        for (int r = 0; r < 7; r++)
            for (int c = 0; c < 5; c++)
                if (g[r] & (0x10 >> c))
                    for (int a = 0; a < scale; a++)
                        for (int b = 0; b < scale; b++)
                            put(cv, x + c * scale + b, y + r * scale + a, rgb);
    }
}

static int text_width(const char *s, int scale)
{
    int n = (int)strlen(s);
    return n > 0 ? (6 * n - 1) * scale : 0;
}

dfl_status dfl_png_plot_lines(const char *path, const float *y, int n, int width, int height,
                              const char *title)
{
    const char *p = path ? path : "(null)";
    if (!y || n < 1) return dfl_fail(DFL_ERR_ARG, "%s: plot: need at least one value", p);
    if (width < 120 || width > 8192 || height < 80 || height > 8192)
        return dfl_fail(DFL_ERR_ARG, "%s: plot: size %dx%d outside 120..8192 x 80..8192", p, width,
                        height);

    /* Range of the finite values; log scale if all of them are > 0. */
    double vmin = INFINITY, vmax = -INFINITY;
    int nfinite = 0;
    for (int i = 0; i < n; i++) {
        if (!isfinite(y[i])) continue;
        nfinite++;
        if (y[i] < vmin) vmin = y[i];
        if (y[i] > vmax) vmax = y[i];
    }
    if (nfinite == 0) return dfl_fail(DFL_ERR_ARG, "%s: plot: no finite value in the series", p);
    int logy = vmin > 0;
    double tmin = logy ? log10(vmin) : vmin, tmax = logy ? log10(vmax) : vmax;
    double lab_lo = vmin, lab_hi = vmax;
    if (!(tmax - tmin > 1e-12 * (fabs(tmin) + fabs(tmax)) && tmax > tmin)) {
        tmin -= 0.5;
        tmax += 0.5;
        lab_lo = logy ? pow(10.0, tmin) : tmin;
        lab_hi = logy ? pow(10.0, tmax) : tmax;
    }

    /* Trailing moving average over the finite values of the last `win` points. */
    int win = n / 50 > 1 ? n / 50 : 1;
    double *ma = malloc((size_t)n * sizeof *ma);
    double *cs = malloc(((size_t)n + 1) * sizeof *cs);
    int *cc = malloc(((size_t)n + 1) * sizeof *cc);
    uint8_t *pix = malloc((size_t)width * (size_t)height * 3);
    if (!ma || !cs || !cc || !pix) {
        free(ma);
        free(cs);
        free(cc);
        free(pix);
        return dfl_fail(DFL_ERR_NOMEM, "%s: plot: out of memory", p);
    }
    cs[0] = 0;
    cc[0] = 0;
    for (int i = 0; i < n; i++) {
        int ok = isfinite(y[i]);
        cs[i + 1] = cs[i] + (ok ? (double)y[i] : 0.0);
        cc[i + 1] = cc[i] + ok;
    }
    for (int i = 0; i < n; i++) {
        int a = i + 1 - win > 0 ? i + 1 - win : 0;
        int cnt = cc[i + 1] - cc[a];
        ma[i] = cnt > 0 ? (cs[i + 1] - cs[a]) / cnt : NAN;
        if (logy && !(ma[i] > 0)) ma[i] = NAN;
    }
    free(cs);
    free(cc);

    /* Layout. */
    canvas cv = {pix, width, height};
    memset(pix, 255, (size_t)width * (size_t)height * 3);
    const int sc = width >= 480 && height >= 320 ? 2 : 1;
    const int ch = 7 * sc;
    char lab_top[32], lab_bot[32], lab_x0[16] = "0", lab_x1[16];
    snprintf(lab_top, sizeof lab_top, "%.4g", lab_hi);
    snprintf(lab_bot, sizeof lab_bot, "%.4g", lab_lo);
    snprintf(lab_x1, sizeof lab_x1, "%d", n - 1);
    int lw = text_width(lab_top, sc) > text_width(lab_bot, sc) ? text_width(lab_top, sc)
                                                                : text_width(lab_bot, sc);
    int x0 = lw + 4 * sc + 4, x1 = width - 1 - (text_width(lab_x1, sc) / 2 + 4);
    int y0 = ch + 6 * sc, y1 = height - 1 - (ch + 6 * sc);
    if (x1 - x0 < 20 || y1 - y0 < 20) {
        free(ma);
        free(pix);
        return dfl_fail(DFL_ERR_ARG, "%s: plot: %dx%d leaves no room for the plot area", p, width,
                        height);
    }
    const uint8_t black[3] = {0, 0, 0}, gridc[3] = {225, 225, 225};
    const uint8_t light[3] = {165, 195, 235}, dark[3] = {20, 60, 150};

    for (int k = 1; k < 5; k++) {
        int gx = x0 + (x1 - x0) * k / 5, gy = y0 + (y1 - y0) * k / 5;
        line(&cv, gx, y0, gx, y1, gridc);
        line(&cv, x0, gy, x1, gy, gridc);
    }

    /* Series: raw (light), then moving average (dark) on top. */
    for (int pass = 0; pass < 2; pass++) {
        int have = 0, px = 0, py = 0;
        for (int i = 0; i < n; i++) {
            double v = pass == 0 ? (double)y[i] : ma[i];
            if (!isfinite(v) || (logy && !(v > 0))) {
                have = 0;
                continue;
            }
            double t = logy ? log10(v) : v;
            double fx = n > 1 ? (double)i / (n - 1) : 0.5;
            double fy = (t - tmin) / (tmax - tmin);
            int cx = x0 + (int)lround(fx * (x1 - x0));
            int cy = y1 - (int)lround(fy * (y1 - y0));
            if (have) line(&cv, px, py, cx, cy, pass == 0 ? light : dark);
            else put(&cv, cx, cy, pass == 0 ? light : dark);
            px = cx;
            py = cy;
            have = 1;
        }
    }
    free(ma);

    /* Axes box, labels, title. */
    line(&cv, x0, y0, x1, y0, black);
    line(&cv, x0, y1, x1, y1, black);
    line(&cv, x0, y0, x0, y1, black);
    line(&cv, x1, y0, x1, y1, black);
    text(&cv, x0 - 3 * sc - text_width(lab_top, sc), y0 - ch / 2, lab_top, sc, black);
    text(&cv, x0 - 3 * sc - text_width(lab_bot, sc), y1 - ch / 2, lab_bot, sc, black);
    text(&cv, x0 - text_width(lab_x0, sc) / 2, y1 + 3 * sc, lab_x0, sc, black);
    text(&cv, x1 - text_width(lab_x1, sc) / 2, y1 + 3 * sc, lab_x1, sc, black);
    if (logy) text(&cv, 2, 2, "LOG", sc, black);
    if (title && *title) {
        char t[128];
        size_t k = 0;
        for (; title[k] && k + 1 < sizeof t; k++) {
            char c = title[k];
            t[k] = (c >= 'a' && c <= 'z') ? (char)(c - 'a' + 'A') : c;
        }
        t[k] = 0;
        int tx = (width - text_width(t, sc)) / 2;
        int lmin = logy ? text_width("LOG", sc) + 8 : 0;
        text(&cv, tx > lmin ? tx : lmin, 2, t, sc, black);
    }

    dfl_status st = dfl_png_write_rgb(path, pix, width, height);
    free(pix);
    return st;
}
