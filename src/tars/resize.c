#include "resize.h"

#include <math.h>
#include <stdio.h>

int tars_smart_resize(long height, long width, long min_pixels, long max_pixels,
                      long *out_h, long *out_w, char *err, int errlen) {
  if (height <= 0 || width <= 0) {
    if (err) snprintf(err, errlen, "image size %ldx%ld must be positive", width, height);
    return -1;
  }
  if (min_pixels <= 0 || max_pixels <= 0 || min_pixels > max_pixels) {
    if (err) snprintf(err, errlen, "pixel bounds min %ld max %ld invalid (need 0 < min <= max)", min_pixels, max_pixels);
    return -1;
  }
  double H = (double)height, W = (double)width, f = TARS_FACTOR;
  double big = H > W ? H : W, small = H > W ? W : H;
  if (big / small > TARS_MAX_RATIO) {
    if (err) snprintf(err, errlen, "absolute aspect ratio must be smaller than 200, got %g", big / small);
    return -1;
  }
  /* nearbyint rounds half to even in the default rounding mode, like Python's round. */
  double h = f * nearbyint(H / f), w = f * nearbyint(W / f);
  if (h < f) h = f;
  if (w < f) w = f;
  if (h * w > (double)max_pixels) {
    double beta = sqrt(H * W / (double)max_pixels);
    h = f * floor(H / beta / f);
    w = f * floor(W / beta / f);
  } else if (h * w < (double)min_pixels) {
    double beta = sqrt((double)min_pixels / (H * W));
    h = f * ceil(H * beta / f);
    w = f * ceil(W * beta / f);
  }
  *out_h = (long)h;
  *out_w = (long)w;
  return 0;
}

int tars_linear_resize(long width, long height, long min_pixels, long max_pixels, long *out_w, long *out_h) {
  if (width <= 0 || height <= 0 || min_pixels <= 0 || max_pixels <= 0) return -1;
  double w = (double)width, h = (double)height;
  if (w * h > (double)max_pixels) {
    double s = sqrt((double)max_pixels / (w * h));
    w = floor(w * s);
    h = floor(h * s);
  }
  if (w * h < (double)min_pixels) {
    double s = sqrt((double)min_pixels / (w * h));
    w = ceil(w * s);
    h = ceil(h * s);
  }
  *out_w = (long)w;
  *out_h = (long)h;
  return 0;
}
