/* smart_resize and linear_resize of the UI-TARS model family (Qwen2-VL / Qwen2.5-VL image processor). */
#ifndef TARS_RESIZE_H
#define TARS_RESIZE_H

#define TARS_FACTOR 28               /* ViT patch 14 x spatial merge 2 */
#define TARS_MIN_PIXELS 78400L       /* 100 * 28^2 */
#define TARS_MAX_PIXELS 12845056L    /* 16384 * 28^2 (UI-TARS 1.5) */
#define TARS_MAX_PIXELS_V10 2116800L /* 2700 * 28^2 (UI-TARS-desktop for 1.0) */
#define TARS_MAX_RATIO 200.0

/* smart_resize: the size (in pixels) the model's image processor resizes an H x W image to.
 * Inputs: height, width of the original image in pixels (> 0); min_pixels, max_pixels bounds on the
 * resized area (> 0, min <= max). Outputs: *out_h, *out_w, multiples of 28.
 * Returns 0, or -1 when max(H, W) / min(H, W) > 200 (strictly) or an input is out of range; the
 * error text goes to err (may be NULL, errlen bytes).
 * Source: qwen_vl_utils smart_resize as used by bytedance/UI-TARS codes/ (round half to even, factor 28,
 * floor on the max branch, ceil on the min branch); reference/uitars.md 2.1. */
int tars_smart_resize(long height, long width, long min_pixels, long max_pixels,
                      long *out_h, long *out_w, char *err, int errlen);

/* linear_resize: aspect-preserving client-side downscale used for UI-TARS 1.0 screenshots.
 * If W*H > max_pixels both sides are scaled by sqrt(max_pixels/(W*H)) and truncated; then if
 * W*H < min_pixels they are scaled by sqrt(min_pixels/(W*H)) and rounded up. Pixels in, pixels out.
 * Returns 0, -1 on a non-positive input. Source: OSWorld UI-TARS 1.0 agent; reference/uitars.md 2.2. */
int tars_linear_resize(long width, long height, long min_pixels, long max_pixels, long *out_w, long *out_h);

#endif
