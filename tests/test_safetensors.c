/* safetensors writer/reader and atomic writes: round trip, byte-exact header, every validation
 * failure, and the atomic-save guarantee (old file untouched when the write fails). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "difflow/core.h"
#include "difflow/io.h"

static char g_dir[64];

static const char *tpath(const char *name)
{
    static char buf[8][256];
    static int k;
    k = (k + 1) % 8;
    snprintf(buf[k], sizeof buf[k], "%s/%s", g_dir, name);
    return buf[k];
}

static int setup(void **state)
{
    (void)state;
    strcpy(g_dir, "/tmp/dfl_test_st_XXXXXX");
    return mkdtemp(g_dir) ? 0 : -1;
}

static void rm_rf(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d) return;
    struct dirent *e;
    char p[512];
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        struct stat sb;
        if (lstat(p, &sb) == 0 && S_ISDIR(sb.st_mode)) {
            chmod(p, 0755);
            rm_rf(p);
        } else {
            unlink(p);
        }
    }
    closedir(d);
    rmdir(dir);
}

static int teardown(void **state)
{
    (void)state;
    rm_rf(g_dir);
    return 0;
}

static unsigned char *slurp(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *b = malloc((size_t)len + 1);
    *n = fread(b, 1, (size_t)len, f);
    fclose(f);
    return b;
}

static void write_bytes(const char *path, const void *b, size_t n)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(b, 1, n, f), n);
    fclose(f);
}

/* A file with header size = strlen(json) (or `hsize_override` if nonzero) and dlen data bytes. */
static void write_raw(const char *path, const char *json, size_t dlen, uint64_t hsize_override)
{
    size_t jl = strlen(json);
    uint64_t hs = hsize_override ? hsize_override : jl;
    unsigned char *b = calloc(8 + jl + dlen + 1, 1);
    for (int i = 0; i < 8; i++) b[i] = (unsigned char)(hs >> (8 * i));
    memcpy(b + 8, json, jl);
    for (size_t i = 0; i < dlen; i++) b[8 + jl + i] = (unsigned char)i;
    write_bytes(path, b, 8 + jl + dlen);
    free(b);
}

static int count_tmp_files(const char *dir)
{
    DIR *d = opendir(dir);
    int k = 0;
    struct dirent *e;
    while (d && (e = readdir(d)))
        if (strstr(e->d_name, ".tmp.")) k++;
    if (d) closedir(d);
    return k;
}

static dfl_tensor mk(float *data, int ndim, int s0, int s1, int s2, int s3)
{
    dfl_tensor t;
    memset(&t, 0, sizeof t);
    t.data = data;
    t.ndim = ndim;
    int s[4] = {s0, s1, s2, s3};
    t.n = 1;
    for (int d = 0; d < ndim; d++) {
        t.shape[d] = s[d];
        t.n *= (size_t)s[d];
    }
    return t;
}

/* ------------------------------------------------------------------ round trip */

static void test_roundtrip(void **state)
{
    (void)state;
    float a[6] = {1.5f, -2.25f, 3e-8f, 1e30f, -0.0f, 7.0f};
    float s[1] = {42.0f};
    float c[4] = {0.1f, 0.2f, 0.3f, 0.4f};
    dfl_tensor ta = mk(a, 2, 2, 3, 0, 0), ts = mk(s, 0, 0, 0, 0, 0);
    dfl_tensor tc = mk(c, 4, 1, 1, 2, 2), te = mk(NULL, 1, 0, 0, 0, 0);
    dfl_named_tensor list[4] = {{"layer.weight", &ta}, {"scalar", &ts}, {"empty", &te},
                                {"conv.w", &tc}};
    const char *meta[4] = {"format", "difflow-1", "config", "{\"a\": [1, 2]}"};
    const char *p = tpath("rt.safetensors");
    assert_int_equal(dfl_safetensors_save(p, list, 4, meta, 2), DFL_OK);
    assert_int_equal(count_tmp_files(g_dir), 0);

    dfl_st_file *f = NULL;
    dfl_status st = dfl_safetensors_open(p, &f);
    if (st != DFL_OK) print_message("open: %s\n", dfl_last_error());
    assert_int_equal(st, DFL_OK);
    assert_int_equal(dfl_st_count(f), 4);
    assert_string_equal(dfl_st_name(f, 0), "layer.weight");
    assert_string_equal(dfl_st_name(f, 1), "scalar");
    assert_string_equal(dfl_st_name(f, 2), "empty");
    assert_string_equal(dfl_st_name(f, 3), "conv.w");
    assert_null(dfl_st_name(f, 4));
    assert_null(dfl_st_name(f, -1));

    int nd = -1, sh[4];
    const float *g = dfl_st_get(f, "layer.weight", &nd, sh);
    assert_non_null(g);
    assert_int_equal(nd, 2);
    assert_int_equal(sh[0], 2);
    assert_int_equal(sh[1], 3);
    assert_int_equal(sh[2], 1);
    assert_memory_equal(g, a, sizeof a);
    assert_int_equal((uintptr_t)g % 64, 0); /* first tensor of the aligned data copy */
    g = dfl_st_get(f, "scalar", &nd, sh);
    assert_non_null(g);
    assert_int_equal(nd, 0);
    assert_true(g[0] == 42.0f);
    g = dfl_st_get(f, "empty", &nd, sh);
    assert_non_null(g);
    assert_int_equal(nd, 1);
    assert_int_equal(sh[0], 0);
    g = dfl_st_get(f, "conv.w", &nd, sh);
    assert_non_null(g);
    assert_int_equal(nd, 4);
    assert_int_equal(sh[0] * sh[1] * sh[2] * sh[3], 4);
    assert_int_equal((uintptr_t)g % 4, 0);
    assert_memory_equal(g, c, sizeof c);
    assert_null(dfl_st_get(f, "missing", NULL, NULL));
    assert_string_equal(dfl_st_meta(f, "format"), "difflow-1");
    assert_string_equal(dfl_st_meta(f, "config"), "{\"a\": [1, 2]}");
    assert_null(dfl_st_meta(f, "absent"));
    dfl_st_close(f);

    /* Overwrite the same path: the new content replaces the old. */
    dfl_named_tensor one[1] = {{"only", &ts}};
    assert_int_equal(dfl_safetensors_save(p, one, 1, NULL, 0), DFL_OK);
    assert_int_equal(dfl_safetensors_open(p, &f), DFL_OK);
    assert_int_equal(dfl_st_count(f), 1);
    assert_null(dfl_st_meta(f, "format"));
    assert_null(dfl_st_get(f, "layer.weight", NULL, NULL));
    dfl_st_close(f);
}

/* Unaligned tensor offsets in the file buffer (header length not a multiple of 4): data must
 * still come back 4-byte aligned and exact. */
static void test_unaligned_header(void **state)
{
    (void)state;
    const char *json = "{\"x\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}";
    assert_true(strlen(json) % 4 != 0);
    size_t jl = strlen(json);
    unsigned char b[256];
    for (int i = 0; i < 8; i++) b[i] = (unsigned char)((uint64_t)jl >> (8 * i));
    memcpy(b + 8, json, jl);
    const unsigned char d[8] = {0x00, 0x00, 0x80, 0x3f, 0x00, 0x00, 0x40, 0xc0}; /* 1, -3 */
    memcpy(b + 8 + jl, d, 8);
    const char *p = tpath("unaligned.safetensors");
    write_bytes(p, b, 8 + jl + 8);
    dfl_st_file *f = NULL;
    assert_int_equal(dfl_safetensors_open(p, &f), DFL_OK);
    const float *x = dfl_st_get(f, "x", NULL, NULL);
    assert_non_null(x);
    assert_int_equal((uintptr_t)x % 4, 0);
    assert_true(x[0] == 1.0f && x[1] == -3.0f);
    dfl_st_close(f);
}

/* ------------------------------------------------------------------ byte-exact layout */

static void test_exact_bytes(void **state)
{
    (void)state;
    float w[2] = {1.0f, -2.0f}, b[1] = {0.5f};
    dfl_tensor tw = mk(w, 1, 2, 0, 0, 0), tb = mk(b, 1, 1, 0, 0, 0);
    dfl_named_tensor list[2] = {{"w", &tw}, {"b", &tb}};
    const char *meta[2] = {"step", "42"};
    const char *p = tpath("exact.safetensors");
    assert_int_equal(dfl_safetensors_save(p, list, 2, meta, 1), DFL_OK);

    /* Hand-computed: the JSON below is 137 bytes, padded with 7 spaces to 144. */
    const char *expect_json = "{\"__metadata__\":{\"step\":\"42\"},"
                              "\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                              "\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,12]}}";
    assert_int_equal(strlen(expect_json), 137);
    unsigned char expect[8 + 144 + 12];
    memset(expect, 0, sizeof expect);
    expect[0] = 144; /* u64 little-endian 144 = 0x90 */
    memcpy(expect + 8, expect_json, 137);
    memset(expect + 8 + 137, ' ', 7);
    const unsigned char data[12] = {0x00, 0x00, 0x80, 0x3f,  /* 1.0f */
                                    0x00, 0x00, 0x00, 0xc0,  /* -2.0f */
                                    0x00, 0x00, 0x00, 0x3f}; /* 0.5f */
    memcpy(expect + 152, data, 12);

    size_t n = 0;
    unsigned char *got = slurp(p, &n);
    assert_non_null(got);
    assert_int_equal(n, sizeof expect);
    if (memcmp(got, expect, n) != 0) {
        got[n] = 0;
        print_message("header got: %.*s\n", 144, (char *)got + 8);
    }
    assert_memory_equal(got, expect, sizeof expect);
    free(got);
}

/* ------------------------------------------------------------------ validation */

static void expect_open_fail(const char *file, dfl_status want, const char *substr)
{
    dfl_st_file *f = (dfl_st_file *)(uintptr_t)1;
    dfl_status st = dfl_safetensors_open(file, &f);
    if (st != want || !strstr(dfl_last_error(), substr) || !strstr(dfl_last_error(), file))
        print_message("%s: status %d (want %d), message \"%s\" (want \"%s\")\n", file, st, want,
                      dfl_last_error(), substr);
    assert_int_equal(st, want);
    assert_null(f);
    assert_non_null(strstr(dfl_last_error(), substr));
    assert_non_null(strstr(dfl_last_error(), file)); /* the message names the file */
}

#define ENTRY(name, dtype, shape, b, e)                                                        \
    "\"" name "\":{\"dtype\":\"" dtype "\",\"shape\":" shape ",\"data_offsets\":[" #b "," #e "]}"

static void test_validation(void **state)
{
    (void)state;
    const char *p;

    p = tpath("short.st");
    write_bytes(p, "\x10\x00\x00", 3);
    expect_open_fail(p, DFL_ERR_FORMAT, "truncated");

    p = tpath("huge_header.st");
    write_raw(p, "{}", 0, 200000000ull);
    expect_open_fail(p, DFL_ERR_FORMAT, "100 MB");

    p = tpath("header_past_eof.st");
    write_raw(p, "{}", 0, 1000);
    expect_open_fail(p, DFL_ERR_FORMAT, "truncated");

    p = tpath("bad_json.st");
    write_raw(p, "{\"a\": {\"dtype\": ", 0, 0);
    expect_open_fail(p, DFL_ERR_FORMAT, "not valid JSON");

    p = tpath("trailing_junk.st");
    write_raw(p, "{}  x", 0, 0);
    expect_open_fail(p, DFL_ERR_FORMAT, "not valid JSON");

    p = tpath("not_object.st");
    write_raw(p, "[1, 2]  ", 0, 0);
    expect_open_fail(p, DFL_ERR_FORMAT, "not an object");

    p = tpath("overlap.st");
    write_raw(p, "{" ENTRY("a", "F32", "[2]", 0, 8) "," ENTRY("b", "F32", "[2]", 4, 12) "}", 12, 0);
    expect_open_fail(p, DFL_ERR_FORMAT, "overlapping");

    p = tpath("gap.st");
    write_raw(p, "{" ENTRY("a", "F32", "[1]", 0, 4) "," ENTRY("b", "F32", "[1]", 8, 12) "}", 12, 0);
    expect_open_fail(p, DFL_ERR_FORMAT, "gap");

    p = tpath("gap_end.st");
    write_raw(p, "{" ENTRY("a", "F32", "[1]", 0, 4) "}", 8, 0);
    expect_open_fail(p, DFL_ERR_FORMAT, "gap");

    p = tpath("dtype.st");
    write_raw(p, "{" ENTRY("half", "F16", "[2]", 0, 4) "}", 4, 0);
    expect_open_fail(p, DFL_ERR_FORMAT, "dtype 'F16'");

    p = tpath("mismatch.st");
    write_raw(p, "{" ENTRY("a", "F32", "[3]", 0, 8) "}", 8, 0);
    expect_open_fail(p, DFL_ERR_FORMAT, "shape needs 12");

    p = tpath("outside.st");
    write_raw(p, "{" ENTRY("a", "F32", "[4]", 0, 16) "}", 8, 0);
    expect_open_fail(p, DFL_ERR_FORMAT, "exceed");

    p = tpath("negshape.st");
    write_raw(p, "{" ENTRY("a", "F32", "[-1]", 0, 0) "}", 0, 0);
    expect_open_fail(p, DFL_ERR_FORMAT, "shape entry 0");

    p = tpath("fracshape.st");
    write_raw(p, "{" ENTRY("a", "F32", "[1.5]", 0, 4) "}", 4, 0);
    expect_open_fail(p, DFL_ERR_FORMAT, "shape entry 0");

    p = tpath("dup.st");
    write_raw(p, "{" ENTRY("a", "F32", "[1]", 0, 4) "," ENTRY("a", "F32", "[1]", 4, 8) "}", 8, 0);
    expect_open_fail(p, DFL_ERR_FORMAT, "duplicate key 'a'");

    p = tpath("dupmeta.st");
    write_raw(p, "{\"__metadata__\":{\"k\":\"1\",\"k\":\"2\"}}", 0, 0);
    expect_open_fail(p, DFL_ERR_FORMAT, "duplicate metadata key 'k'");

    p = tpath("metanum.st");
    write_raw(p, "{\"__metadata__\":{\"step\":5}}", 0, 0);
    expect_open_fail(p, DFL_ERR_FORMAT, "not a string");

    p = tpath("offsets3.st");
    write_raw(p, "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4,8]}}", 4, 0);
    expect_open_fail(p, DFL_ERR_FORMAT, "data_offsets");

    p = tpath("nodtype.st");
    write_raw(p, "{\"a\":{\"shape\":[1],\"data_offsets\":[0,4]}}", 4, 0);
    expect_open_fail(p, DFL_ERR_FORMAT, "dtype");

    p = tpath("fivedims.st");
    write_raw(p, "{" ENTRY("a", "F32", "[1,1,1,1,1]", 0, 4) "}", 4, 0);
    expect_open_fail(p, DFL_ERR_FORMAT, "at most 4");

    p = tpath("does_not_exist.st");
    expect_open_fail(p, DFL_ERR_IO, "cannot open");

    /* A valid file with trailing-space padding and no tensors opens. */
    p = tpath("empty_ok.st");
    write_raw(p, "{}      ", 0, 0);
    dfl_st_file *f = NULL;
    assert_int_equal(dfl_safetensors_open(p, &f), DFL_OK);
    assert_int_equal(dfl_st_count(f), 0);
    dfl_st_close(f);
}

static void test_save_args(void **state)
{
    (void)state;
    float a[2] = {1, 2};
    dfl_tensor t = mk(a, 1, 2, 0, 0, 0);
    const char *p = tpath("args.safetensors");
    dfl_named_tensor dup[3] = {{"x", &t}, {"y", &t}, {"x", &t}};
    assert_int_equal(dfl_safetensors_save(p, dup, 3, NULL, 0), DFL_ERR_ARG);
    assert_non_null(strstr(dfl_last_error(), "duplicate tensor name 'x'"));
    assert_int_equal(access(p, F_OK), -1); /* nothing written */

    dfl_named_tensor meta_name[1] = {{"__metadata__", &t}};
    assert_int_equal(dfl_safetensors_save(p, meta_name, 1, NULL, 0), DFL_ERR_ARG);

    const char *meta[4] = {"k", "1", "k", "2"};
    dfl_named_tensor one[1] = {{"x", &t}};
    assert_int_equal(dfl_safetensors_save(p, one, 1, meta, 2), DFL_ERR_ARG);
    assert_non_null(strstr(dfl_last_error(), "duplicate metadata key 'k'"));

    dfl_tensor bad = t;
    bad.n = 3; /* disagrees with shape [2] */
    dfl_named_tensor b1[1] = {{"x", &bad}};
    assert_int_equal(dfl_safetensors_save(p, b1, 1, NULL, 0), DFL_ERR_ARG);
    assert_int_equal(access(p, F_OK), -1);
}

/* ------------------------------------------------------------------ atomicity */

static void make_old(const char *p, unsigned char **old, size_t *old_n)
{
    float v[3] = {9, 8, 7};
    dfl_tensor t = mk(v, 1, 3, 0, 0, 0);
    dfl_named_tensor l[1] = {{"old", &t}};
    assert_int_equal(dfl_safetensors_save(p, l, 1, NULL, 0), DFL_OK);
    *old = slurp(p, old_n);
    assert_non_null(*old);
}

static void assert_unchanged(const char *p, const unsigned char *old, size_t old_n)
{
    size_t n = 0;
    unsigned char *now = slurp(p, &n);
    assert_non_null(now);
    assert_int_equal(n, old_n);
    assert_memory_equal(now, old, old_n);
    free(now);
    dfl_st_file *f = NULL;
    assert_int_equal(dfl_safetensors_open(p, &f), DFL_OK);
    assert_non_null(dfl_st_get(f, "old", NULL, NULL));
    dfl_st_close(f);
}

static void test_atomic_write_fails(void **state)
{
    (void)state;
    const char *p = tpath("keep.safetensors");
    unsigned char *old = NULL;
    size_t old_n = 0;
    make_old(p, &old, &old_n);

    enum { BIG = 100000 };
    float *big = calloc(BIG, sizeof *big);
    dfl_tensor tb = mk(big, 1, BIG, 0, 0, 0);
    dfl_named_tensor l[1] = {{"new", &tb}};

    /* 1. The write itself fails part-way: file-size limit (EFBIG) of 4096 bytes. */
    struct rlimit saved, lim;
    assert_int_equal(getrlimit(RLIMIT_FSIZE, &saved), 0);
    void (*oldsig)(int) = signal(SIGXFSZ, SIG_IGN);
    lim = saved;
    lim.rlim_cur = 4096;
    assert_int_equal(setrlimit(RLIMIT_FSIZE, &lim), 0);
    dfl_status st = dfl_safetensors_save(p, l, 1, NULL, 0);
    assert_int_equal(setrlimit(RLIMIT_FSIZE, &saved), 0);
    signal(SIGXFSZ, oldsig);
    assert_int_equal(st, DFL_ERR_IO);
    assert_non_null(strstr(dfl_last_error(), p));
    print_message("write failure message: %s\n", dfl_last_error());
    assert_unchanged(p, old, old_n);
    assert_int_equal(count_tmp_files(g_dir), 0);

    /* 2. The rename fails: the target is a directory. */
    const char *dp = tpath("is_a_dir.safetensors");
    assert_int_equal(mkdir(dp, 0755), 0);
    assert_int_equal(dfl_safetensors_save(dp, l, 1, NULL, 0), DFL_ERR_IO);
    assert_non_null(strstr(dfl_last_error(), "rename"));
    assert_int_equal(count_tmp_files(g_dir), 0);

    /* 3. The directory does not exist. */
    assert_int_equal(dfl_safetensors_save(tpath("no/such/dir/x.safetensors"), l, 1, NULL, 0),
                     DFL_ERR_IO);
    assert_non_null(strstr(dfl_last_error(), "no/such/dir/x.safetensors"));

    /* 4. The directory is not writable (permissions do not bind root, so only as a user). */
    const char *ro = tpath("ro");
    assert_int_equal(mkdir(ro, 0755), 0);
    char rop[300];
    snprintf(rop, sizeof rop, "%s/keep.safetensors", ro);
    unsigned char *old2 = NULL;
    size_t old2_n = 0;
    make_old(rop, &old2, &old2_n);
    assert_int_equal(chmod(ro, 0555), 0);
    if (geteuid() != 0) {
        assert_int_equal(dfl_safetensors_save(rop, l, 1, NULL, 0), DFL_ERR_IO);
        assert_non_null(strstr(dfl_last_error(), "cannot create"));
        assert_unchanged(rop, old2, old2_n);
    } else {
        print_message("running as root: read-only directory case skipped (root bypasses modes)\n");
    }
    chmod(ro, 0755);

    /* The successful save afterwards replaces the file. */
    assert_int_equal(dfl_safetensors_save(p, l, 1, NULL, 0), DFL_OK);
    dfl_st_file *f = NULL;
    assert_int_equal(dfl_safetensors_open(p, &f), DFL_OK);
    assert_non_null(dfl_st_get(f, "new", NULL, NULL));
    assert_null(dfl_st_get(f, "old", NULL, NULL));
    dfl_st_close(f);
    free(big);
    free(old);
    free(old2);
}

static void test_write_file_atomic(void **state)
{
    (void)state;
    const char *p = tpath("plain.txt");
    assert_int_equal(dfl_write_file_atomic(p, "hello\n", 6), DFL_OK);
    assert_int_equal(dfl_write_file_atomic(p, "bye", 3), DFL_OK);
    size_t n = 0;
    unsigned char *b = slurp(p, &n);
    assert_int_equal(n, 3);
    assert_memory_equal(b, "bye", 3);
    free(b);
    assert_int_equal(dfl_write_file_atomic(p, NULL, 0), DFL_OK); /* empty file */
    b = slurp(p, &n);
    assert_int_equal(n, 0);
    free(b);
    assert_int_equal(dfl_write_file_atomic(NULL, "x", 1), DFL_ERR_ARG);
    assert_int_equal(dfl_write_file_atomic(p, NULL, 5), DFL_ERR_ARG);
    const void *parts[3] = {"ab", NULL, "cd"};
    size_t lens[3] = {2, 0, 2};
    assert_int_equal(dfl_write_file_atomic_parts(p, parts, lens, 3), DFL_OK);
    b = slurp(p, &n);
    assert_int_equal(n, 4);
    assert_memory_equal(b, "abcd", 4);
    free(b);
    assert_int_equal(count_tmp_files(g_dir), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_roundtrip),
        cmocka_unit_test(test_unaligned_header),
        cmocka_unit_test(test_exact_bytes),
        cmocka_unit_test(test_validation),
        cmocka_unit_test(test_save_args),
        cmocka_unit_test(test_atomic_write_fails),
        cmocka_unit_test(test_write_file_atomic),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
