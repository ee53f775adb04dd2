#include "image.h"

#include <openssl/evp.h>
#include <png.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

int tars_image_alloc(tars_image *im, int w, int h) {
  im->w = im->h = 0;
  im->rgb = NULL;
  if (w <= 0 || h <= 0 || (size_t)w > (size_t)1 << 16 || (size_t)h > (size_t)1 << 16) return -1;
  im->rgb = calloc((size_t)w * (size_t)h, 3);
  if (!im->rgb) return -1;
  im->w = w;
  im->h = h;
  return 0;
}

void tars_image_free(tars_image *im) {
  free(im->rgb);
  im->rgb = NULL;
  im->w = im->h = 0;
}

/* libpng reports through these: quietly, the caller words the error */
static void png_quiet_error(png_structp png, png_const_charp msg) {
  (void)msg;
  png_longjmp(png, 1);
}
static void png_quiet_warning(png_structp png, png_const_charp msg) { (void)png, (void)msg; }

static void png_write_buf(png_structp png, png_bytep data, png_size_t n) {
  tars_buf *b = png_get_io_ptr(png);
  if (tars_buf_add(b, (const char *)data, n)) png_error(png, "out of memory");
}

static void png_flush_none(png_structp png) { (void)png; }

int tars_png_encode(const tars_image *im, unsigned char **out, size_t *len) {
  png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, NULL, png_quiet_error, png_quiet_warning);
  if (!png) return -1;
  png_infop info = png_create_info_struct(png);
  tars_buf b = {0};
  if (!info || setjmp(png_jmpbuf(png))) {
    png_destroy_write_struct(&png, info ? &info : NULL);
    tars_buf_free(&b);
    return -1;
  }
  png_set_write_fn(png, &b, png_write_buf, png_flush_none);
  png_set_compression_level(png, 1); /* screenshots: speed over size */
  png_set_IHDR(png, info, (png_uint_32)im->w, (png_uint_32)im->h, 8, PNG_COLOR_TYPE_RGB, PNG_INTERLACE_NONE,
               PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
  png_write_info(png, info);
  for (int y = 0; y < im->h; y++) png_write_row(png, im->rgb + (size_t)y * (size_t)im->w * 3);
  png_write_end(png, NULL);
  png_destroy_write_struct(&png, &info);
  *out = (unsigned char *)b.data;
  *len = b.len;
  return 0;
}

typedef struct {
  const unsigned char *data;
  size_t len, pos;
} png_src;

static void png_read_buf(png_structp png, png_bytep out, png_size_t n) {
  png_src *s = png_get_io_ptr(png);
  if (n > s->len - s->pos) png_error(png, "truncated PNG");
  memcpy(out, s->data + s->pos, n);
  s->pos += n;
}

int tars_png_decode(const unsigned char *data, size_t len, tars_image *im, char *err, int errlen) {
  im->rgb = NULL;
  im->w = im->h = 0;
  if (len < 8 || png_sig_cmp(data, 0, 8)) {
    snprintf(err, errlen, "not a PNG");
    return -1;
  }
  png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, NULL, png_quiet_error, png_quiet_warning);
  if (!png) return -1;
  png_infop info = png_create_info_struct(png);
  void *volatile row = NULL; /* the row pointers, freed on a libpng error */
  if (!info || setjmp(png_jmpbuf(png))) {
    png_destroy_read_struct(&png, info ? &info : NULL, NULL);
    free(row);
    tars_image_free(im);
    snprintf(err, errlen, "corrupt PNG");
    return -1;
  }
  png_src src = {data, len, 0};
  png_set_read_fn(png, &src, png_read_buf);
  png_read_info(png, info);
  png_set_expand(png);
  png_set_strip_16(png);
  png_set_strip_alpha(png);
  png_set_gray_to_rgb(png);
  png_set_interlace_handling(png);
  png_read_update_info(png, info);
  int w = (int)png_get_image_width(png, info), h = (int)png_get_image_height(png, info);
  if (png_get_rowbytes(png, info) != (size_t)w * 3 || tars_image_alloc(im, w, h)) png_error(png, "unsupported");
  png_bytep *rows = malloc(sizeof *rows * (size_t)h);
  if (!rows) png_error(png, "out of memory");
  for (int y = 0; y < h; y++) rows[y] = im->rgb + (size_t)y * (size_t)w * 3;
  row = rows;
  png_read_image(png, rows);
  png_read_end(png, NULL);
  row = NULL;
  free(rows);
  png_destroy_read_struct(&png, &info, NULL);
  return 0;
}

int tars_png_read(const char *path, tars_image *im, char *err, int errlen) {
  size_t len;
  unsigned char *data = (unsigned char *)tars_read_all(path, &len);
  if (!data) {
    snprintf(err, errlen, "cannot read %s: %s", path, strerror(errno));
    return -1;
  }
  char e[100];
  int rc = tars_png_decode(data, len, im, e, sizeof e);
  free(data);
  if (rc) snprintf(err, errlen, "%s: %s", path, e);
  return rc;
}

/* Weights of the source cells [i, i+1) under the output cell [o*s, (o+1)*s), s = n_src / n_dst. */
int tars_image_resize(const tars_image *src, int w, int h, tars_image *dst) {
  if (tars_image_alloc(dst, w, h)) return -1;
  double sx = (double)src->w / w, sy = (double)src->h / h;
  double *acc = calloc((size_t)src->w * 3, sizeof *acc);
  if (!acc) {
    tars_image_free(dst);
    return -1;
  }
  for (int oy = 0; oy < h; oy++) {
    double y0 = oy * sy, y1 = (oy + 1) * sy;
    memset(acc, 0, (size_t)src->w * 3 * sizeof *acc);
    for (int iy = (int)y0; iy < src->h && iy < y1; iy++) {
      double wy = (iy + 1 < y1 ? iy + 1 : y1) - (iy > y0 ? iy : y0);
      if (wy <= 0) continue;
      const unsigned char *r = src->rgb + (size_t)iy * (size_t)src->w * 3;
      for (int k = 0; k < src->w * 3; k++) acc[k] += wy * r[k];
    }
    for (int ox = 0; ox < w; ox++) {
      double x0 = ox * sx, x1 = (ox + 1) * sx, c[3] = {0, 0, 0};
      for (int ix = (int)x0; ix < src->w && ix < x1; ix++) {
        double wx = (ix + 1 < x1 ? ix + 1 : x1) - (ix > x0 ? ix : x0);
        if (wx <= 0) continue;
        for (int k = 0; k < 3; k++) c[k] += wx * acc[3 * ix + k];
      }
      unsigned char *o = dst->rgb + 3 * ((size_t)oy * (size_t)w + (size_t)ox);
      for (int k = 0; k < 3; k++) {
        double v = c[k] / (sx * sy) + 0.5;
        o[k] = (unsigned char)(v > 255 ? 255 : v);
      }
    }
  }
  free(acc);
  return 0;
}

char *tars_base64(const unsigned char *data, size_t n) {
  if (n > (size_t)1 << 30) return NULL;
  char *out = malloc(4 * ((n + 2) / 3) + 1);
  if (!out) return NULL;
  EVP_EncodeBlock((unsigned char *)out, data, (int)n);
  return out;
}

char *tars_png_data_url(const unsigned char *png, size_t len) {
  char *b64 = tars_base64(png, len);
  if (!b64) return NULL;
  static const char prefix[] = "data:image/png;base64,";
  size_t bl = strlen(b64);
  char *url = malloc(sizeof prefix + bl);
  if (url) {
    memcpy(url, prefix, sizeof prefix - 1);
    memcpy(url + sizeof prefix - 1, b64, bl + 1);
  }
  free(b64);
  return url;
}

char *tars_image_data_url(const tars_image *im) {
  unsigned char *png;
  size_t len;
  if (tars_png_encode(im, &png, &len)) return NULL;
  char *url = tars_png_data_url(png, len);
  free(png);
  return url;
}
