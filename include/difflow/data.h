/* difflow data: IDX image/label files (MNIST, Fashion-MNIST), 2-D toy densities, batches.
 *
 * Every function that can fail returns a dfl_status and sets dfl_last_error(); none exits.
 * All randomness comes from a dfl_rng (reproducible from its seed).
 */
#ifndef DIFFLOW_DATA_H
#define DIFFLOW_DATA_H

#include <stddef.h>
#include <stdint.h>

#include "difflow/core.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Where Debian's dataset-fashion-mnist package installs its files. */
#define DFL_FMNIST_DIR "/usr/share/datasets/fashion-mnist"

/* A dataset held in memory. Images: pix is (n, c, h, w) uint8 in 0..255, labels (n) or NULL,
 * points NULL and dim 0. Points (2-D toys): points is (n, dim) float, pix/labels NULL,
 * c = h = w = 0. Free with dfl_dataset_free. */
typedef struct {
    int n, c, h, w;
    uint8_t *pix;
    uint8_t *labels;
    float *points;
    int dim;
} dfl_dataset;

/* Frees the buffers and zeroes the struct (NULL is a no-op). */
void dfl_dataset_free(dfl_dataset *d);

/* ---------------------------------------------------------------- IDX files */

/* Loads an IDX image file (format: Y. LeCun, "THE MNIST DATABASE", yann.lecun.com/exdb/mnist,
 * section "FILE FORMATS"): big-endian u32 magic 0x00000803 (unsigned byte, 3 dims), u32 n, h, w,
 * then n*h*w pixel bytes, row-major. The file may be gzip-compressed or plain (zlib gzread).
 * On success *pix is a malloc'd (n, h, w) buffer (free() it), *n > 0, *h and *w in 1..4096.
 * Errors: DFL_ERR_ARG (NULL argument), DFL_ERR_IO (missing or unreadable file, named),
 * DFL_ERR_FORMAT (wrong magic, bad dims, "...: truncated: expected N bytes of pixel data, got M",
 * trailing bytes, or a corrupt/cut-off gzip stream), DFL_ERR_NOMEM. */
dfl_status dfl_idx_load_images(const char *path, uint8_t **pix, int *n, int *h, int *w);

/* Loads an IDX label file: magic 0x00000801 (unsigned byte, 1 dim), u32 n, then n label bytes.
 * *labels is malloc'd (n). Errors as dfl_idx_load_images. */
dfl_status dfl_idx_load_labels(const char *path, uint8_t **labels, int *n);

/* Loads Fashion-MNIST (Xiao, Rasul, Vollgraf 2017, arXiv 1708.07747) from `dir` (NULL: use
 * DFL_FMNIST_DIR): train = 1 reads train-images-idx3-ubyte.gz / train-labels-idx1-ubyte.gz
 * (60000 images), train = 0 reads t10k-images-idx3-ubyte.gz / t10k-labels-idx1-ubyte.gz (10000);
 * the same names without ".gz" are tried when the .gz files are absent. Fills *out with
 * c = 1, h = w = 28 (as stored), pix and labels (classes 0..9, 9 = "Ankle boot").
 * Errors: those of the IDX loaders, DFL_ERR_FORMAT if image and label counts differ. */
dfl_status dfl_fmnist_load(const char *dir, int train, dfl_dataset *out);

/* ---------------------------------------------------------------- batches */

/* out[i] = pix[i] / 127.5 - 1 for i < count: 0..255 mapped to [-1, 1]. */
void dfl_images_to_float(const uint8_t *pix, size_t count, float *out);

/* Gathers the b items idx[0..b) (each < d->n) into out: images as (b, c, h, w) floats in
 * [-1, 1] (dfl_images_to_float), or points as (b, dim) floats copied unchanged. */
void dfl_dataset_batch(const dfl_dataset *d, const uint32_t *idx, int b, float *out);

/* ---------------------------------------------------------------- 2-D toy densities */

/* Draws n points (n, 2) from a 2-D toy distribution, recipes of FFJORD lib/toy_data.py
 * (Grathwohl et al., ICLR 2019) as restated in reference/flows.md section 3.3, with every angle
 * drawn at random so the true density is the continuous one:
 *   "moons":       theta ~ U[0, pi]; outer arc (cos, sin) or inner arc (1 - cos, 1/2 - sin)
 *                  with probability 1/2 each; + N(0, 0.1^2) per coordinate; then x*2 + (-1, -0.2).
 *                  Mean (0, 0.3).
 *   "8gaussians":  c uniform on {(+-1,0), (0,+-1), (+-1/sqrt2, +-1/sqrt2)} * 4;
 *                  x = (0.5 N(0, I) + c) / 1.414. Mean 0, per-coordinate variance 8.25/1.414^2.
 *   "checkerboard": x1 ~ U(-2, 2); x2 = U(0, 1) - 2B + (floor(x1) mod 2), B ~ Bernoulli(1/2);
 *                  output 2 (x1, x2): density 1/32 on 8 squares of side 2 in [-4, 4]^2.
 * Errors: DFL_ERR_ARG (unknown name, naming it; n < 0; NULL pointers). */
dfl_status dfl_toy_sample(const char *name, dfl_rng *r, int n, float *out);

/* 1 if `name` is a toy generator dfl_toy_sample knows, else 0. */
int dfl_toy_known(const char *name);

/* E_{x~p}[log p(x)] in nats under the true density (reference/flows.md section 3.4): the upper
 * bound for a model's mean test log-likelihood. moons -2.3939, 8gaussians -2.8319,
 * checkerboard -ln 32 = -3.4657; NAN for an unknown name. */
double dfl_toy_true_loglik_bound(const char *name);

/* A dataset of n points of toy `name` drawn with a dfl_rng seeded by `seed` (dim 2).
 * Errors: DFL_ERR_ARG (unknown name, n < 1), DFL_ERR_NOMEM. */
dfl_status dfl_toy_dataset(const char *name, uint64_t seed, int n, dfl_dataset *out);

#ifdef __cplusplus
}
#endif
#endif
