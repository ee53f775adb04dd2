/* RGB images for screenshots: PNG encode/decode (libpng), area resampling, base64 data URLs (OpenSSL). */
#ifndef TARS_IMAGE_H
#define TARS_IMAGE_H

#include <stddef.h>

/* An 8-bit RGB image, rows top to bottom, pixel (x, y) at rgb[3 * (y * w + x)]. */
typedef struct {
  int w, h;
  unsigned char *rgb;
} tars_image;

/* Allocates a w x h image (zeroed). Returns 0, or -1 on a bad size or allocation failure. */
int tars_image_alloc(tars_image *im, int w, int h);
/* Frees im->rgb and zeroes im. */
void tars_image_free(tars_image *im);

/* Encodes im as an 8-bit RGB PNG in memory. *out (malloc'ed) and *len get the bytes. Returns 0 or -1. */
int tars_png_encode(const tars_image *im, unsigned char **out, size_t *len);
/* Reads a PNG file (any bit depth / colour type; alpha dropped, gray expanded) into im. Returns 0, or -1
 * with a message naming the file in err. */
int tars_png_read(const char *path, tars_image *im, char *err, int errlen);
/* Decodes PNG bytes into im. Returns 0, or -1 with a message in err. */
int tars_png_decode(const unsigned char *data, size_t len, tars_image *im, char *err, int errlen);

/* Resamples src to w x h pixels with an area (box) filter: each output pixel is the coverage-weighted mean
 * of the source pixels under it (exact averages for integer downscales; a constant image stays constant).
 * Returns 0, or -1 on a bad size or allocation failure. */
int tars_image_resize(const tars_image *src, int w, int h, tars_image *dst);

/* Standard base64 (RFC 4648, with padding) of n bytes, via OpenSSL's EVP_EncodeBlock. Returns a malloc'ed
 * NUL-terminated string or NULL. */
char *tars_base64(const unsigned char *data, size_t n);

/* "data:image/png;base64,..." of len bytes of PNG data. Returns a malloc'ed string or NULL. */
char *tars_png_data_url(const unsigned char *png, size_t len);

/* "data:image/png;base64,..." of im encoded as PNG. Returns a malloc'ed string or NULL. */
char *tars_image_data_url(const tars_image *im);

#endif
