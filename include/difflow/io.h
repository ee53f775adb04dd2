/* difflow io: atomic file writes, safetensors checkpoints, PNG images and plots.
 *
 * Every function returns a dfl_status and sets dfl_last_error() on failure; none exits.
 */
#ifndef DIFFLOW_IO_H
#define DIFFLOW_IO_H

#include <stddef.h>
#include <stdint.h>

#include "difflow/core.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---------------------------------------------------------------- atomic writes */

/* Writes the `n` bytes at `data` to `path` atomically: the bytes go to "path.tmp.<pid>" in the
 * same directory, which is flushed and fsync'd, then rename(2)d over `path`, then the directory is
 * fsync'd. On any failure the temporary file is removed and an existing `path` is left untouched,
 * so a reader sees either the old content or the complete new content, never a mix.
 * Errors: DFL_ERR_ARG (NULL path, or NULL data with n > 0), DFL_ERR_IO (create/write/fsync/rename
 * failed; the message names the file and the system error). */
dfl_status dfl_write_file_atomic(const char *path, const void *data, size_t n);

/* Same, for content given as `nparts` consecutive pieces (bufs[i], lens[i]) written in order
 * (avoids concatenating large buffers in memory first). A part with lens[i] == 0 may be NULL. */
dfl_status dfl_write_file_atomic_parts(const char *path, const void *const *bufs,
                                       const size_t *lens, int nparts);

/* ---------------------------------------------------------------- safetensors */

/* One tensor to save under a name (a module path such as "unet.down.0.conv1.weight"). */
typedef struct {
    const char *name;
    const dfl_tensor *t;
} dfl_named_tensor;

/* Saves tensors to a safetensors file (format: github.com/huggingface/safetensors, README
 * "Format"): 8-byte little-endian u64 header size N, then N bytes of UTF-8 JSON header, then the
 * raw data buffer. Header entries, in the order given:
 *     "name": {"dtype":"F32","shape":[d0,...],"data_offsets":[begin,end]}
 * with [begin, end) byte offsets relative to the start of the data buffer; tensors are laid out
 * back to back in the given order, float32 little-endian. If n_meta > 0 the header starts with
 * "__metadata__": {key: value, ...} built from meta_kv = {key0, value0, key1, value1, ...}
 * (2*n_meta strings; safetensors metadata is a string->string map). The JSON is padded with
 * spaces to a multiple of 8 bytes. The write is atomic (dfl_write_file_atomic_parts).
 * Errors: DFL_ERR_ARG (NULL/empty name, name "__metadata__", duplicate tensor or metadata key,
 * NULL tensor or string, tensor whose t->n disagrees with its shape, n < 0), DFL_ERR_NOMEM,
 * DFL_ERR_IO. */
dfl_status dfl_safetensors_save(const char *path, const dfl_named_tensor *ts, int n,
                                const char *const *meta_kv, int n_meta);

/* An opened safetensors file: its header and a 64-byte aligned copy of its data. */
typedef struct dfl_st_file dfl_st_file;

/* Reads the whole file at `path` and validates it:
 *   - file >= 8 bytes; header size N <= 100,000,000 and N <= file size - 8;
 *   - header is a JSON object (trailing spaces allowed, no NUL bytes), no duplicate keys;
 *   - "__metadata__", if present, is an object of string values (no duplicate keys);
 *   - every other entry is an object with "dtype" (only "F32" is supported; anything else gives
 *     DFL_ERR_FORMAT naming the dtype), "shape" (array of at most 4 non-negative integers; []
 *     is a scalar) and "data_offsets" ([begin, end] integers with end - begin = numel * 4);
 *   - the ranges lie inside the data buffer, do not overlap and cover it exactly (no gaps).
 * On success *out owns everything; release it with dfl_st_close.
 * Errors: DFL_ERR_ARG (NULL argument), DFL_ERR_IO (cannot open/read), DFL_ERR_FORMAT (any check
 * above; the message names the file and the offending tensor), DFL_ERR_NOMEM. */
dfl_status dfl_safetensors_open(const char *path, dfl_st_file **out);

/* Data of tensor `name` (numel floats, row-major; 4-byte aligned, and 64-byte aligned for the
 * tensor at data offset 0), or NULL if absent. If ndim/shape are non-NULL they receive the
 * number of dims (0..4) and the dims (unused entries set to 1). Valid until dfl_st_close. */
const float *dfl_st_get(const dfl_st_file *f, const char *name, int *ndim, int shape[4]);
/* Number of tensors (metadata excluded). */
int dfl_st_count(const dfl_st_file *f);
/* Name of the i-th tensor in header order (0 <= i < count), else NULL. */
const char *dfl_st_name(const dfl_st_file *f, int i);
/* Metadata value for `key`, or NULL if absent. */
const char *dfl_st_meta(const dfl_st_file *f, const char *key);
/* Frees the file (NULL is a no-op). */
void dfl_st_close(dfl_st_file *f);

/* ---------------------------------------------------------------- PNG (libpng) */

/* 8-bit grayscale PNG from pix (h rows of w bytes, row-major), written atomically.
 * w, h in 1..1000000 (libpng's default user limit). Errors: DFL_ERR_ARG, DFL_ERR_NOMEM,
 * DFL_ERR_IO, DFL_ERR_FORMAT (libpng reported an encoding error). */
dfl_status dfl_png_write_gray(const char *path, const uint8_t *pix, int w, int h);
/* 8-bit RGB PNG from pix (h rows of w*3 bytes, interleaved R,G,B). Errors as above. */
dfl_status dfl_png_write_rgb(const char *path, const uint8_t *pix, int w, int h);

/* Tiles n images into one PNG grid (layout of torchvision's make_grid with padding 2).
 *   imgs: (n, c, h, w) float, c = 1 (grayscale) or 3 (RGB);
 *   values are clamped to [lo, hi] (hi > lo; NaN counts as lo) and mapped to 0..255 by
 *   round((v - lo) / (hi - lo) * 255);
 *   tiles go left to right, top to bottom in min(ncols, n) columns and ceil(n / cols) rows, with
 *   a 2-pixel border of value 0 around and between tiles: image size
 *   (cols * (w + 2) + 2) x (rows * (h + 2) + 2); unused tiles in the last row stay 0.
 * Errors: DFL_ERR_ARG (n, h, w, ncols < 1, c not 1 or 3, hi <= lo, image too large), plus those
 * of dfl_png_write_gray/rgb. */
dfl_status dfl_png_write_grid(const char *path, const float *imgs, int n, int c, int h, int w,
                              int ncols, float lo, float hi);

/* Line plot of a series (e.g. training loss per step) as a width x height RGB PNG:
 * white background, axes box, light grid, the raw series y[0..n) in a light colour and its
 * trailing moving average (window max(1, n/50)) in a darker colour over it. x is the index
 * 0..n-1; y uses a log10 scale when every finite value is > 0, linear otherwise. Non-finite
 * values are skipped. Labels (a built-in 5x7 bitmap font: digits, letters, ". - + e : / _ ( )
 * % = , #"): the y min and max at the bottom and top of the y axis, "0" and n-1 under the x
 * axis, the title (upper-cased; other characters drawn as blanks) above, and "LOG" in the top
 * left corner when the log scale is used.
 * width in 120..8192, height in 80..8192, n >= 1, title may be NULL.
 * Errors: DFL_ERR_ARG (bad sizes, n < 1, no finite value), plus those of dfl_png_write_rgb. */
dfl_status dfl_png_plot_lines(const char *path, const float *y, int n, int width, int height,
                              const char *title);

#ifdef __cplusplus
}
#endif
#endif
