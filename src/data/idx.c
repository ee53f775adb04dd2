/* IDX files (the MNIST / Fashion-MNIST container), gzip'd or plain, read with zlib's gzread,
 * plus the in-memory dataset helpers shared by every dataset.
 *
 * IDX format (yann.lecun.com/exdb/mnist, "FILE FORMATS FOR THE MNIST DATABASE"): a big-endian
 * u32 magic 0x0000TTDD (TT = 0x08 unsigned byte, DD = number of dims), DD big-endian u32 sizes,
 * then the data, row-major.
 */
#include "difflow/data.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

#define IDX_MAGIC_LABELS 0x00000801u
#define IDX_MAGIC_IMAGES 0x00000803u
#define IDX_MAX_SIDE 4096

void dfl_dataset_free(dfl_dataset *d)
{
    if (!d) return;
    free(d->pix);
    free(d->labels);
    free(d->points);
    memset(d, 0, sizeof *d);
}

/* Reads up to len bytes; returns the count (< len only at end of stream) or -1 on error with
 * a message set. */
static long long gz_read_upto(gzFile gz, const char *path, void *buf, size_t len, dfl_status *st)
{
    size_t got = 0;
    while (got < len) {
        size_t want = len - got;
        if (want > (1u << 30)) want = 1u << 30;
        int r = gzread(gz, (char *)buf + got, (unsigned)want);
        if (r < 0) {
            int errnum = 0;
            const char *msg = gzerror(gz, &errnum);
            if (errnum == Z_ERRNO)
                *st = dfl_fail(DFL_ERR_IO, "%s: read error: %s", path, strerror(errno));
            else
                *st = dfl_fail(DFL_ERR_FORMAT, "%s: corrupt or cut-off gzip stream: %s", path,
                               msg ? msg : "unknown zlib error");
            return -1;
        }
        if (r == 0) {
            /* End of stream; a gzip stream cut short also ends here with Z_BUF_ERROR. */
            int errnum = 0;
            const char *msg = gzerror(gz, &errnum);
            if (errnum != Z_OK && errnum != Z_STREAM_END) {
                *st = dfl_fail(DFL_ERR_FORMAT, "%s: corrupt or cut-off gzip stream after %zu "
                               "bytes: %s", path, got, msg ? msg : "unknown zlib error");
                return -1;
            }
            break;
        }
        got += (size_t)r;
    }
    return (long long)got;
}

static uint32_t be32(const unsigned char *b)
{
    return ((uint32_t)b[0] << 24) | ((uint32_t)b[1] << 16) | ((uint32_t)b[2] << 8) | b[3];
}

/* Opens path, checks the magic and reads ndims sizes into dims. */
static dfl_status idx_open(const char *path, uint32_t magic, int ndims, uint32_t *dims,
                           gzFile *out)
{
    errno = 0;
    gzFile gz = gzopen(path, "rb");
    if (!gz)
        return dfl_fail(DFL_ERR_IO, "%s: cannot open: %s", path,
                        errno ? strerror(errno) : "out of memory");
    unsigned char hdr[16];
    size_t hlen = 4 + 4 * (size_t)ndims;
    dfl_status st = DFL_OK;
    long long got = gz_read_upto(gz, path, hdr, hlen, &st);
    if (got < 0) {
        gzclose(gz);
        return st;
    }
    if (got < 4) {
        gzclose(gz);
        return dfl_fail(DFL_ERR_FORMAT, "%s: truncated: %lld bytes, an IDX header needs %zu", path,
                        got, hlen);
    }
    uint32_t m = be32(hdr);
    if (m != magic) {
        gzclose(gz);
        return dfl_fail(DFL_ERR_FORMAT, "%s: bad magic 0x%08x, expected 0x%08x (IDX unsigned "
                        "bytes, %d dims)", path, m, magic, ndims);
    }
    if ((size_t)got < hlen) {
        gzclose(gz);
        return dfl_fail(DFL_ERR_FORMAT, "%s: truncated: %lld bytes, an IDX header needs %zu", path,
                        got, hlen);
    }
    for (int i = 0; i < ndims; i++) dims[i] = be32(hdr + 4 + 4 * i);
    *out = gz;
    return DFL_OK;
}

/* Reads exactly `total` payload bytes (the buffer grows as data arrives, so a corrupt header
 * claiming a huge size on a small file reports truncation, not out-of-memory), then checks that
 * the stream ends. */
static dfl_status idx_payload(gzFile gz, const char *path, size_t total, const char *what,
                              uint8_t **out)
{
    size_t cap = total < ((size_t)1 << 20) ? total : ((size_t)1 << 20), have = 0;
    uint8_t *buf = malloc(cap ? cap : 1);
    if (!buf) return dfl_fail(DFL_ERR_NOMEM, "%s: out of memory", path);
    dfl_status st = DFL_OK;
    for (;;) {
        if (have == cap) {
            if (cap == total) break;
            size_t ncap = cap * 2 < total ? cap * 2 : total;
            uint8_t *nb = realloc(buf, ncap);
            if (!nb) {
                free(buf);
                return dfl_fail(DFL_ERR_NOMEM, "%s: out of memory for %zu bytes", path, total);
            }
            buf = nb;
            cap = ncap;
        }
        long long got = gz_read_upto(gz, path, buf + have, cap - have, &st);
        if (got < 0) {
            free(buf);
            return st;
        }
        have += (size_t)got;
        if (have < cap) break; /* end of stream */
    }
    if (have < total) {
        free(buf);
        return dfl_fail(DFL_ERR_FORMAT, "%s: truncated: expected %zu bytes of %s data, got %zu",
                        path, total, what, have);
    }
    unsigned char extra;
    long long more = gz_read_upto(gz, path, &extra, 1, &st);
    if (more < 0) {
        free(buf);
        return st;
    }
    if (more > 0) {
        free(buf);
        return dfl_fail(DFL_ERR_FORMAT, "%s: trailing bytes after the %zu bytes of %s data", path,
                        total, what);
    }
    *out = buf;
    return DFL_OK;
}

dfl_status dfl_idx_load_images(const char *path, uint8_t **pix, int *n, int *h, int *w)
{
    if (!path || !pix || !n || !h || !w)
        return dfl_fail(DFL_ERR_ARG, "idx images: NULL argument");
    *pix = NULL;
    uint32_t dims[3] = {0, 0, 0};
    gzFile gz = NULL;
    dfl_status st = idx_open(path, IDX_MAGIC_IMAGES, 3, dims, &gz);
    if (st != DFL_OK) return st;
    if (dims[0] < 1 || dims[0] > 0x7fffffffu || dims[1] < 1 || dims[1] > IDX_MAX_SIDE ||
        dims[2] < 1 || dims[2] > IDX_MAX_SIDE) {
        gzclose(gz);
        return dfl_fail(DFL_ERR_FORMAT, "%s: bad dims %u x %u x %u (need n >= 1, h and w in "
                        "1..%d)", path, dims[0], dims[1], dims[2], IDX_MAX_SIDE);
    }
    size_t total = (size_t)dims[0] * dims[1] * dims[2];
    uint8_t *buf = NULL;
    st = idx_payload(gz, path, total, "pixel", &buf);
    gzclose(gz);
    if (st != DFL_OK) return st;
    *pix = buf;
    *n = (int)dims[0];
    *h = (int)dims[1];
    *w = (int)dims[2];
    return DFL_OK;
}

dfl_status dfl_idx_load_labels(const char *path, uint8_t **labels, int *n)
{
    if (!path || !labels || !n) return dfl_fail(DFL_ERR_ARG, "idx labels: NULL argument");
    *labels = NULL;
    uint32_t dims[1] = {0};
    gzFile gz = NULL;
    dfl_status st = idx_open(path, IDX_MAGIC_LABELS, 1, dims, &gz);
    if (st != DFL_OK) return st;
    if (dims[0] < 1 || dims[0] > 0x7fffffffu) {
        gzclose(gz);
        return dfl_fail(DFL_ERR_FORMAT, "%s: bad label count %u", path, dims[0]);
    }
    uint8_t *buf = NULL;
    st = idx_payload(gz, path, dims[0], "label", &buf);
    gzclose(gz);
    if (st != DFL_OK) return st;
    *labels = buf;
    *n = (int)dims[0];
    return DFL_OK;
}

/* dir/base.gz if it exists, else dir/base if that exists, else dir/base.gz (for the message). */
static char *pick_file(const char *dir, const char *base)
{
    size_t len = strlen(dir) + strlen(base) + 8;
    char *p = malloc(len);
    if (!p) return NULL;
    snprintf(p, len, "%s/%s.gz", dir, base);
    if (access(p, F_OK) == 0) return p;
    snprintf(p, len, "%s/%s", dir, base);
    if (access(p, F_OK) == 0) return p;
    snprintf(p, len, "%s/%s.gz", dir, base);
    return p;
}

dfl_status dfl_fmnist_load(const char *dir, int train, dfl_dataset *out)
{
    if (!out) return dfl_fail(DFL_ERR_ARG, "fashion-mnist: NULL output");
    memset(out, 0, sizeof *out);
    if (!dir) dir = DFL_FMNIST_DIR;
    char *ip = pick_file(dir, train ? "train-images-idx3-ubyte" : "t10k-images-idx3-ubyte");
    char *lp = pick_file(dir, train ? "train-labels-idx1-ubyte" : "t10k-labels-idx1-ubyte");
    dfl_status st = DFL_OK;
    if (!ip || !lp) {
        st = dfl_fail(DFL_ERR_NOMEM, "fashion-mnist: out of memory");
        goto done;
    }
    int n = 0, h = 0, w = 0, nl = 0;
    st = dfl_idx_load_images(ip, &out->pix, &n, &h, &w);
    if (st != DFL_OK) goto done;
    st = dfl_idx_load_labels(lp, &out->labels, &nl);
    if (st != DFL_OK) goto done;
    if (nl != n) {
        st = dfl_fail(DFL_ERR_FORMAT, "%s: %d labels but %s has %d images", lp, nl, ip, n);
        goto done;
    }
    out->n = n;
    out->c = 1;
    out->h = h;
    out->w = w;
done:
    if (st != DFL_OK) dfl_dataset_free(out);
    free(ip);
    free(lp);
    return st;
}

void dfl_images_to_float(const uint8_t *pix, size_t count, float *out)
{
    for (size_t i = 0; i < count; i++) out[i] = (float)pix[i] / 127.5f - 1.0f;
}

void dfl_dataset_batch(const dfl_dataset *d, const uint32_t *idx, int b, float *out)
{
    if (d->points) {
        size_t dim = (size_t)d->dim;
        for (int i = 0; i < b; i++)
            memcpy(out + (size_t)i * dim, d->points + (size_t)idx[i] * dim, dim * sizeof *out);
        return;
    }
    size_t item = (size_t)d->c * (size_t)d->h * (size_t)d->w;
    for (int i = 0; i < b; i++)
        dfl_images_to_float(d->pix + (size_t)idx[i] * item, item, out + (size_t)i * item);
}
