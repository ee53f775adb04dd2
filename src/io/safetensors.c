/* Atomic file writes and safetensors checkpoints.
 *
 * safetensors format (github.com/huggingface/safetensors, README "Format"):
 *   8 bytes   N, unsigned little-endian 64-bit: size of the header
 *   N bytes   UTF-8 JSON object {"__metadata__": {str: str}, "name": {"dtype": "F32",
 *             "shape": [...], "data_offsets": [begin, end]}, ...}, may be padded with spaces
 *   rest      byte buffer; offsets are relative to its start; it must be fully indexed
 *             (no holes, no overlaps).
 * The JSON is produced and parsed with cJSON.
 */
#include "difflow/io.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define ST_MAX_HEADER 100000000ull  /* same limit as the reference implementation */
#define ST_MAX_EXACT_INT 9007199254740992.0 /* 2^53: integers a JSON double holds exactly */

/* ================================================================= atomic writes */

static int host_is_little_endian(void)
{
    const uint16_t one = 1;
    unsigned char b;
    memcpy(&b, &one, 1);
    return b == 1;
}

static int write_all(int fd, const void *buf, size_t n)
{
    const unsigned char *p = buf;
    while (n > 0) {
        size_t chunk = n > ((size_t)1 << 30) ? ((size_t)1 << 30) : n;
        ssize_t w = write(fd, p, chunk);
        if (w < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        if (w == 0) {
            errno = EIO;
            return -1;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* fsync the directory holding `path` so the rename itself is durable. */
static int fsync_parent_dir(const char *path)
{
    const char *slash = strrchr(path, '/');
    char *dir;
    if (!slash) {
        dir = malloc(2);
        if (!dir) return -1;
        strcpy(dir, ".");
    } else {
        size_t len = slash == path ? 1 : (size_t)(slash - path);
        dir = malloc(len + 1);
        if (!dir) return -1;
        memcpy(dir, path, len);
        dir[len] = 0;
    }
    int fd = open(dir, O_RDONLY | O_DIRECTORY);
    free(dir);
    if (fd < 0) return -1;
    int rc = fsync(fd);
    int e = errno;
    close(fd);
    /* Some file systems cannot fsync a directory; that is not a failure of the write. */
    if (rc != 0 && (e == EINVAL || e == ENOTSUP || e == EROFS || e == EBADF)) rc = 0;
    errno = e;
    return rc;
}

dfl_status dfl_write_file_atomic_parts(const char *path, const void *const *bufs,
                                       const size_t *lens, int nparts)
{
    if (!path || !*path) return dfl_fail(DFL_ERR_ARG, "atomic write: empty or NULL path");
    if (nparts < 0 || (nparts > 0 && (!bufs || !lens)))
        return dfl_fail(DFL_ERR_ARG, "%s: atomic write: bad part list", path);
    for (int i = 0; i < nparts; i++)
        if (lens[i] > 0 && !bufs[i])
            return dfl_fail(DFL_ERR_ARG, "%s: atomic write: part %d is NULL", path, i);

    size_t tlen = strlen(path) + 32;
    char *tmp = malloc(tlen);
    if (!tmp) return dfl_fail(DFL_ERR_NOMEM, "%s: atomic write: out of memory", path);
    snprintf(tmp, tlen, "%s.tmp.%ld", path, (long)getpid());

    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        dfl_status st = dfl_fail(DFL_ERR_IO, "%s: cannot create temporary file %s: %s", path, tmp,
                                 strerror(errno));
        free(tmp);
        return st;
    }
    const char *what = NULL;
    for (int i = 0; i < nparts && !what; i++)
        if (lens[i] > 0 && write_all(fd, bufs[i], lens[i]) != 0) what = "write";
    if (!what && fsync(fd) != 0) what = "fsync";
    int e = errno;
    if (close(fd) != 0 && !what) {
        what = "close";
        e = errno;
    }
    if (!what && rename(tmp, path) != 0) {
        what = "rename";
        e = errno;
    }
    if (what) {
        unlink(tmp);
        dfl_status st = dfl_fail(DFL_ERR_IO, "%s: %s of temporary file %s failed: %s (old file "
                                 "left unchanged)", path, what, tmp, strerror(e));
        free(tmp);
        return st;
    }
    free(tmp);
    if (fsync_parent_dir(path) != 0)
        return dfl_fail(DFL_ERR_IO, "%s: written, but fsync of its directory failed: %s", path,
                        strerror(errno));
    return DFL_OK;
}

dfl_status dfl_write_file_atomic(const char *path, const void *data, size_t n)
{
    const void *bufs[1] = {data};
    size_t lens[1] = {n};
    if (n > 0 && !data)
        return dfl_fail(DFL_ERR_ARG, "%s: atomic write: NULL data", path ? path : "(null)");
    return dfl_write_file_atomic_parts(path, bufs, lens, 1);
}

/* ================================================================= save */

static int cmp_str_ptr(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Returns the first string that occurs twice in names[0..n) (sorted copy), or NULL. */
static const char *find_duplicate(const char **names, size_t n)
{
    qsort(names, n, sizeof *names, cmp_str_ptr);
    for (size_t i = 1; i < n; i++)
        if (strcmp(names[i - 1], names[i]) == 0) return names[i];
    return NULL;
}

static void swap32_copy(uint32_t *dst, const float *src, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        uint32_t v;
        memcpy(&v, &src[i], 4);
        dst[i] = (v >> 24) | ((v >> 8) & 0xff00u) | ((v << 8) & 0xff0000u) | (v << 24);
    }
}

dfl_status dfl_safetensors_save(const char *path, const dfl_named_tensor *ts, int n,
                                const char *const *meta_kv, int n_meta)
{
    if (!path || !*path) return dfl_fail(DFL_ERR_ARG, "safetensors save: empty or NULL path");
    if (n < 0 || n_meta < 0 || (n > 0 && !ts) || (n_meta > 0 && !meta_kv))
        return dfl_fail(DFL_ERR_ARG, "%s: safetensors save: bad tensor or metadata list", path);

    /* ---- validate arguments */
    size_t nnames = (size_t)(n > n_meta ? n : n_meta);
    const char **names = malloc((nnames ? nnames : 1) * sizeof *names);
    if (!names) return dfl_fail(DFL_ERR_NOMEM, "%s: safetensors save: out of memory", path);
    for (int i = 0; i < n; i++) {
        const dfl_tensor *t = ts[i].t;
        if (!ts[i].name || !*ts[i].name || !strcmp(ts[i].name, "__metadata__")) {
            free(names);
            return dfl_fail(DFL_ERR_ARG, "%s: safetensors save: tensor %d has an invalid name "
                            "('%s')", path, i, ts[i].name ? ts[i].name : "(null)");
        }
        if (!t || (t->n > 0 && !t->data) || t->ndim < 0 || t->ndim > DFL_MAX_DIMS) {
            free(names);
            return dfl_fail(DFL_ERR_ARG, "%s: safetensors save: tensor '%s' is NULL or has no "
                            "data", path, ts[i].name);
        }
        size_t numel = 1;
        for (int d = 0; d < t->ndim; d++) {
            if (t->shape[d] < 0) numel = (size_t)-1;
            else if (numel != (size_t)-1) numel *= (size_t)t->shape[d];
        }
        if (numel != t->n) {
            free(names);
            return dfl_fail(DFL_ERR_ARG, "%s: safetensors save: tensor '%s' has %zu elements but "
                            "its shape says otherwise", path, ts[i].name, t->n);
        }
        names[i] = ts[i].name;
    }
    const char *dup = find_duplicate(names, (size_t)n);
    if (dup) {
        dfl_status st = dfl_fail(DFL_ERR_ARG, "%s: safetensors save: duplicate tensor name '%s'",
                                 path, dup);
        free(names);
        return st;
    }
    for (int i = 0; i < n_meta; i++) {
        if (!meta_kv[2 * i] || !meta_kv[2 * i + 1]) {
            free(names);
            return dfl_fail(DFL_ERR_ARG, "%s: safetensors save: metadata pair %d has a NULL "
                            "key or value", path, i);
        }
        names[i] = meta_kv[2 * i];
    }
    dup = find_duplicate(names, (size_t)n_meta);
    if (dup) {
        dfl_status st = dfl_fail(DFL_ERR_ARG, "%s: safetensors save: duplicate metadata key "
                                 "'%s'", path, dup);
        free(names);
        return st;
    }
    free(names);

    /* ---- header JSON */
    dfl_status st = DFL_OK;
    char *json = NULL, *header = NULL;
    uint32_t **swapped = NULL;
    const void **bufs = NULL;
    size_t *lens = NULL;
    cJSON *root = cJSON_CreateObject();
    if (!root) goto nomem;
    if (n_meta > 0) {
        cJSON *meta = cJSON_AddObjectToObject(root, "__metadata__");
        if (!meta) goto nomem;
        for (int i = 0; i < n_meta; i++)
            if (!cJSON_AddStringToObject(meta, meta_kv[2 * i], meta_kv[2 * i + 1])) goto nomem;
    }
    double offset = 0;
    for (int i = 0; i < n; i++) {
        const dfl_tensor *t = ts[i].t;
        cJSON *e = cJSON_AddObjectToObject(root, ts[i].name);
        if (!e || !cJSON_AddStringToObject(e, "dtype", "F32")) goto nomem;
        cJSON *shape = cJSON_CreateIntArray(t->shape, t->ndim);
        if (!shape) goto nomem;
        cJSON_AddItemToObject(e, "shape", shape);
        double end = offset + 4.0 * (double)t->n;
        if (end > ST_MAX_EXACT_INT) {
            st = dfl_fail(DFL_ERR_ARG, "%s: safetensors save: data larger than 2^53 bytes", path);
            goto done;
        }
        double offs[2] = {offset, end};
        cJSON *off = cJSON_CreateDoubleArray(offs, 2);
        if (!off) goto nomem;
        cJSON_AddItemToObject(e, "data_offsets", off);
        offset = end;
    }
    json = cJSON_PrintUnformatted(root);
    if (!json) goto nomem;
    size_t jlen = strlen(json);
    size_t hlen = (jlen + 7) & ~(size_t)7;
    header = malloc(8 + hlen);
    if (!header) goto nomem;
    for (int b = 0; b < 8; b++) header[b] = (char)(((uint64_t)hlen >> (8 * b)) & 0xff);
    memcpy(header + 8, json, jlen);
    memset(header + 8 + jlen, ' ', hlen - jlen);

    /* ---- parts: header, then each tensor's bytes (little-endian) */
    bufs = malloc((size_t)(n + 1) * sizeof *bufs);
    lens = malloc((size_t)(n + 1) * sizeof *lens);
    swapped = calloc((size_t)n + 1, sizeof *swapped);
    if (!bufs || !lens || !swapped) goto nomem;
    bufs[0] = header;
    lens[0] = 8 + hlen;
    int le = host_is_little_endian();
    for (int i = 0; i < n; i++) {
        const dfl_tensor *t = ts[i].t;
        bufs[i + 1] = t->data;
        lens[i + 1] = t->n * 4;
        if (!le && t->n > 0) {
            swapped[i] = malloc(t->n * 4);
            if (!swapped[i]) goto nomem;
            swap32_copy(swapped[i], t->data, t->n);
            bufs[i + 1] = swapped[i];
        }
    }
    st = dfl_write_file_atomic_parts(path, bufs, lens, n + 1);
    goto done;

nomem:
    st = dfl_fail(DFL_ERR_NOMEM, "%s: safetensors save: out of memory", path);
done:
    if (swapped)
        for (int i = 0; i < n; i++) free(swapped[i]);
    free(swapped);
    free(bufs);
    free(lens);
    free(header);
    if (json) cJSON_free(json);
    cJSON_Delete(root);
    return st;
}

/* ================================================================= open */

typedef struct {
    const char *name; /* points into the cJSON tree */
    int ndim;
    int shape[4];
    uint64_t begin, end;
} st_entry;

struct dfl_st_file {
    cJSON *root;
    const cJSON *meta;   /* "__metadata__" object or NULL */
    st_entry *e;         /* header order */
    int n;
    int *by_name;        /* indices into e sorted by name */
    float *data;         /* aligned copy of the data buffer */
};

void dfl_st_close(dfl_st_file *f)
{
    if (!f) return;
    cJSON_Delete(f->root);
    free(f->e);
    free(f->by_name);
    free(f->data);
    free(f);
}

/* A JSON number that is an integer in [0, 2^53]. */
static int json_uint(const cJSON *it, uint64_t *v)
{
    if (!cJSON_IsNumber(it)) return 0;
    double d = it->valuedouble;
    if (!(d >= 0) || d > ST_MAX_EXACT_INT || d != (double)(uint64_t)d) return 0;
    *v = (uint64_t)d;
    return 1;
}

/* qsort has no context argument in C11; the comparators read the array from a thread-local. */
static _Thread_local const st_entry *tl_entries;
static int cmp_idx_name(const void *a, const void *b)
{
    return strcmp(tl_entries[*(const int *)a].name, tl_entries[*(const int *)b].name);
}
static int cmp_idx_range(const void *a, const void *b)
{
    const st_entry *x = &tl_entries[*(const int *)a], *y = &tl_entries[*(const int *)b];
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end) return x->end < y->end ? -1 : 1;
    return 0;
}

static int cmp_cjson_name(const void *a, const void *b)
{
    return strcmp((*(const cJSON *const *)a)->string, (*(const cJSON *const *)b)->string);
}

/* Name that appears twice among the children of object `obj`, or NULL (also NULL on OOM with
 * *oom set). */
static const char *json_duplicate_key(const cJSON *obj, int *oom)
{
    int n = cJSON_GetArraySize(obj);
    *oom = 0;
    if (n < 2) return NULL;
    const cJSON **v = malloc((size_t)n * sizeof *v);
    if (!v) {
        *oom = 1;
        return NULL;
    }
    int k = 0;
    for (const cJSON *c = obj->child; c; c = c->next) v[k++] = c;
    qsort(v, (size_t)k, sizeof *v, cmp_cjson_name);
    const char *dup = NULL;
    for (int i = 1; i < k && !dup; i++)
        if (!strcmp(v[i - 1]->string, v[i]->string)) dup = v[i]->string;
    free(v);
    return dup;
}

static dfl_status parse_entry(const char *path, const cJSON *it, uint64_t dsize, st_entry *e)
{
    const char *name = it->string;
    if (!cJSON_IsObject(it))
        return dfl_fail(DFL_ERR_FORMAT, "%s: tensor '%s': header entry is not a JSON object",
                        path, name);
    const cJSON *dtype = cJSON_GetObjectItemCaseSensitive(it, "dtype");
    const cJSON *shape = cJSON_GetObjectItemCaseSensitive(it, "shape");
    const cJSON *offs = cJSON_GetObjectItemCaseSensitive(it, "data_offsets");
    if (!cJSON_IsString(dtype))
        return dfl_fail(DFL_ERR_FORMAT, "%s: tensor '%s': missing or non-string \"dtype\"", path,
                        name);
    if (strcmp(dtype->valuestring, "F32") != 0)
        return dfl_fail(DFL_ERR_FORMAT, "%s: tensor '%s' has dtype '%s'; only F32 is supported",
                        path, name, dtype->valuestring);
    if (!cJSON_IsArray(shape))
        return dfl_fail(DFL_ERR_FORMAT, "%s: tensor '%s': missing or non-array \"shape\"", path,
                        name);
    int nd = cJSON_GetArraySize(shape);
    if (nd > DFL_MAX_DIMS)
        return dfl_fail(DFL_ERR_FORMAT, "%s: tensor '%s' has %d dims; difflow supports at most %d",
                        path, name, nd, DFL_MAX_DIMS);
    e->name = name;
    e->ndim = nd;
    uint64_t numel = 1;
    int d = 0;
    for (const cJSON *c = shape->child; c; c = c->next, d++) {
        uint64_t v;
        if (!json_uint(c, &v) || v > INT_MAX)
            return dfl_fail(DFL_ERR_FORMAT, "%s: tensor '%s': shape entry %d is not a "
                            "non-negative integer", path, name, d);
        e->shape[d] = (int)v;
        if (v != 0 && numel > UINT64_MAX / 4 / v)
            return dfl_fail(DFL_ERR_FORMAT, "%s: tensor '%s': shape is too large", path, name);
        numel *= v;
    }
    for (; d < 4; d++) e->shape[d] = 1;
    if (!cJSON_IsArray(offs) || cJSON_GetArraySize(offs) != 2 ||
        !json_uint(offs->child, &e->begin) || !json_uint(offs->child->next, &e->end))
        return dfl_fail(DFL_ERR_FORMAT, "%s: tensor '%s': \"data_offsets\" must be [begin, end] "
                        "non-negative integers", path, name);
    if (e->end < e->begin)
        return dfl_fail(DFL_ERR_FORMAT, "%s: tensor '%s': data_offsets [%llu, %llu] end before "
                        "begin", path, name, (unsigned long long)e->begin,
                        (unsigned long long)e->end);
    if (e->end - e->begin != numel * 4)
        return dfl_fail(DFL_ERR_FORMAT, "%s: tensor '%s': data_offsets span %llu bytes but the "
                        "shape needs %llu (F32)", path, name,
                        (unsigned long long)(e->end - e->begin), (unsigned long long)(numel * 4));
    if (e->end > dsize)
        return dfl_fail(DFL_ERR_FORMAT, "%s: tensor '%s': data_offsets [%llu, %llu] exceed the "
                        "data buffer (%llu bytes)", path, name, (unsigned long long)e->begin,
                        (unsigned long long)e->end, (unsigned long long)dsize);
    return DFL_OK;
}

/* Validates the parsed header and fills f (entries, metadata, index). */
static dfl_status check_header(const char *path, dfl_st_file *f, uint64_t dsize)
{
    const cJSON *root = f->root;
    int oom;
    const char *dup = json_duplicate_key(root, &oom);
    if (oom) return dfl_fail(DFL_ERR_NOMEM, "%s: out of memory", path);
    if (dup) return dfl_fail(DFL_ERR_FORMAT, "%s: duplicate key '%s' in header", path, dup);

    int total = cJSON_GetArraySize(root);
    f->e = calloc((size_t)(total > 0 ? total : 1), sizeof *f->e);
    f->by_name = malloc((size_t)(total > 0 ? total : 1) * sizeof *f->by_name);
    if (!f->e || !f->by_name) return dfl_fail(DFL_ERR_NOMEM, "%s: out of memory", path);
    for (const cJSON *it = root->child; it; it = it->next) {
        if (!strcmp(it->string, "__metadata__")) {
            if (!cJSON_IsObject(it))
                return dfl_fail(DFL_ERR_FORMAT, "%s: \"__metadata__\" is not a JSON object", path);
            for (const cJSON *m = it->child; m; m = m->next)
                if (!cJSON_IsString(m))
                    return dfl_fail(DFL_ERR_FORMAT, "%s: metadata value of '%s' is not a string",
                                    path, m->string);
            dup = json_duplicate_key(it, &oom);
            if (oom) return dfl_fail(DFL_ERR_NOMEM, "%s: out of memory", path);
            if (dup)
                return dfl_fail(DFL_ERR_FORMAT, "%s: duplicate metadata key '%s'", path, dup);
            f->meta = it;
            continue;
        }
        dfl_status st = parse_entry(path, it, dsize, &f->e[f->n]);
        if (st != DFL_OK) return st;
        f->n++;
    }

    /* The ranges, sorted by begin, must tile [0, dsize) exactly. */
    for (int i = 0; i < f->n; i++) f->by_name[i] = i;
    tl_entries = f->e;
    qsort(f->by_name, (size_t)f->n, sizeof *f->by_name, cmp_idx_range);
    uint64_t pos = 0;
    const char *prev = NULL;
    for (int k = 0; k < f->n; k++) {
        const st_entry *e = &f->e[f->by_name[k]];
        if (e->begin < pos)
            return dfl_fail(DFL_ERR_FORMAT, "%s: tensors '%s' and '%s' have overlapping "
                            "data_offsets (byte %llu)", path, prev, e->name,
                            (unsigned long long)e->begin);
        if (e->begin > pos)
            return dfl_fail(DFL_ERR_FORMAT, "%s: gap in the data buffer: bytes [%llu, %llu) "
                            "belong to no tensor (before '%s')", path, (unsigned long long)pos,
                            (unsigned long long)e->begin, e->name);
        pos = e->end;
        prev = e->name;
    }
    if (pos != dsize)
        return dfl_fail(DFL_ERR_FORMAT, "%s: gap in the data buffer: bytes [%llu, %llu) at the "
                        "end belong to no tensor", path, (unsigned long long)pos,
                        (unsigned long long)dsize);
    qsort(f->by_name, (size_t)f->n, sizeof *f->by_name, cmp_idx_name);
    tl_entries = NULL;
    return DFL_OK;
}

dfl_status dfl_safetensors_open(const char *path, dfl_st_file **out)
{
    if (!out) return dfl_fail(DFL_ERR_ARG, "safetensors open: NULL output pointer");
    *out = NULL;
    if (!path) return dfl_fail(DFL_ERR_ARG, "safetensors open: NULL path");
    FILE *fp = fopen(path, "rb");
    if (!fp) return dfl_fail(DFL_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    dfl_status st = DFL_OK;
    char *hbuf = NULL;
    dfl_st_file *f = calloc(1, sizeof *f);
    if (!f) {
        fclose(fp);
        return dfl_fail(DFL_ERR_NOMEM, "%s: out of memory", path);
    }
    struct stat sb;
    if (fstat(fileno(fp), &sb) != 0) {
        st = dfl_fail(DFL_ERR_IO, "%s: cannot stat: %s", path, strerror(errno));
        goto fail;
    }
    if (!S_ISREG(sb.st_mode)) {
        st = dfl_fail(DFL_ERR_IO, "%s: not a regular file%s", path, S_ISDIR(sb.st_mode) ? " (it is a directory)" : "");
        goto fail;
    }
    uint64_t fsize = (uint64_t)sb.st_size;
    unsigned char h8[8];
    if (fsize < 8 || fread(h8, 1, 8, fp) != 8) {
        st = dfl_fail(DFL_ERR_FORMAT, "%s: truncated: %llu bytes, a safetensors file needs at "
                      "least 8", path, (unsigned long long)fsize);
        goto fail;
    }
    uint64_t hsize = 0;
    for (int b = 7; b >= 0; b--) hsize = (hsize << 8) | h8[b];
    int brace = fgetc(fp); /* a safetensors header is a JSON object: '{' right after the length */
    if ((hsize > ST_MAX_HEADER || hsize > fsize - 8) && brace != '{') {
        st = dfl_fail(DFL_ERR_FORMAT, "%s: not a safetensors file (no 8-byte header length followed by a JSON "
                      "header)", path);
        goto fail;
    }
    if (brace == EOF || fseek(fp, 8, SEEK_SET) != 0) {
        st = dfl_fail(DFL_ERR_FORMAT, "%s: truncated: no header after the 8-byte length", path);
        goto fail;
    }
    if (hsize > ST_MAX_HEADER) {
        st = dfl_fail(DFL_ERR_FORMAT, "%s: header size %llu exceeds the 100 MB limit", path,
                      (unsigned long long)hsize);
        goto fail;
    }
    if (hsize > fsize - 8) {
        st = dfl_fail(DFL_ERR_FORMAT, "%s: truncated: header size %llu but only %llu bytes "
                      "follow", path, (unsigned long long)hsize, (unsigned long long)(fsize - 8));
        goto fail;
    }
    hbuf = malloc((size_t)hsize + 1);
    if (!hbuf) {
        st = dfl_fail(DFL_ERR_NOMEM, "%s: out of memory for a %llu-byte header", path,
                      (unsigned long long)hsize);
        goto fail;
    }
    if (fread(hbuf, 1, (size_t)hsize, fp) != (size_t)hsize) {
        st = dfl_fail(DFL_ERR_IO, "%s: read of the header failed", path);
        goto fail;
    }
    hbuf[hsize] = 0;
    if (memchr(hbuf, 0, (size_t)hsize)) {
        st = dfl_fail(DFL_ERR_FORMAT, "%s: header contains a NUL byte", path);
        goto fail;
    }
    const char *end = NULL;
    f->root = cJSON_ParseWithLengthOpts(hbuf, (size_t)hsize + 1, &end, 1);
    if (!f->root) {
        long at = end ? (long)(end - hbuf) : -1;
        st = dfl_fail(DFL_ERR_FORMAT, "%s: header is not valid JSON (error near byte %ld of %llu)",
                      path, at, (unsigned long long)hsize);
        goto fail;
    }
    if (!cJSON_IsObject(f->root)) {
        st = dfl_fail(DFL_ERR_FORMAT, "%s: header is JSON but not an object", path);
        goto fail;
    }
    uint64_t dsize = fsize - 8 - hsize;
    st = check_header(path, f, dsize);
    if (st != DFL_OK) goto fail;

    size_t alloc = ((size_t)dsize + 63) & ~(size_t)63;
    f->data = aligned_alloc(64, alloc ? alloc : 64);
    if (!f->data) {
        st = dfl_fail(DFL_ERR_NOMEM, "%s: out of memory for %llu bytes of tensor data", path,
                      (unsigned long long)dsize);
        goto fail;
    }
    if (fread(f->data, 1, (size_t)dsize, fp) != (size_t)dsize) {
        st = dfl_fail(DFL_ERR_IO, "%s: read of the data buffer failed", path);
        goto fail;
    }
    if (!host_is_little_endian()) {
        uint32_t *w = (uint32_t *)(void *)f->data;
        swap32_copy(w, f->data, (size_t)dsize / 4);
    }
    free(hbuf);
    fclose(fp);
    *out = f;
    return DFL_OK;

fail:
    free(hbuf);
    fclose(fp);
    dfl_st_close(f);
    return st;
}

/* ================================================================= accessors */

static const st_entry *find_entry(const dfl_st_file *f, const char *name)
{
    int lo = 0, hi = f->n - 1;
    while (lo <= hi) {
        int mid = lo + (hi - lo) / 2;
        const st_entry *e = &f->e[f->by_name[mid]];
        int c = strcmp(name, e->name);
        if (c == 0) return e;
        if (c < 0) hi = mid - 1;
        else lo = mid + 1;
    }
    return NULL;
}

const float *dfl_st_get(const dfl_st_file *f, const char *name, int *ndim, int shape[4])
{
    if (!f || !name) return NULL;
    const st_entry *e = find_entry(f, name);
    if (!e) return NULL;
    if (ndim) *ndim = e->ndim;
    if (shape)
        for (int d = 0; d < 4; d++) shape[d] = e->shape[d];
    return (const float *)(const void *)((const char *)f->data + e->begin);
}

int dfl_st_count(const dfl_st_file *f) { return f ? f->n : 0; }

const char *dfl_st_name(const dfl_st_file *f, int i)
{
    if (!f || i < 0 || i >= f->n) return NULL;
    return f->e[i].name;
}

const char *dfl_st_meta(const dfl_st_file *f, const char *key)
{
    if (!f || !f->meta || !key) return NULL;
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(f->meta, key);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}
