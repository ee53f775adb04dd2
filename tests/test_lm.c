/* Tests of the byte-level Transformer LM (lm.h).
 *
 * - Loss at initialisation is ln 256 nats (to 0.1) for every positional encoding.
 * - Every positional encoding's wiring (none, learned, sinusoidal, shaw, t5, alibi, rope in both
 *   layouts and a partial rotary dim, rope-linear, xpos): the logits of a 1-layer, 2-head model
 *   with O(1) weights against a double-precision forward written here from the definitions
 *   (ALiBi -m_h (i - j) with slopes 2^(-8(h+1)/H), T5 causal buckets, xPos zeta^(+-pos/gamma) on
 *   q/k at centred positions, sinusoidal from position 0), to 2e-5 (1 + max |logit|).
 * - Causality: changing byte j leaves the logits at positions < j bit-identical (and changes
 *   those at j), for every positional encoding.
 * - Whole-model gradient: the tape gradient of the mean loss along a random unit direction of
 *   every parameter tensor, and for single scalars, against central differences (rope, shaw,
 *   t5, rope-linear; weights re-drawn larger so every path carries gradient).
 * - RoPE layouts: interleaved and half-split models agree after permuting W_q/W_k rows per head.
 * - eval_bpb scores every byte once: equals the windows summed by hand.
 * - Checkpoint round trip gives bit-identical logits; config JSON round trip; the YaRN settings
 *   (factor, alpha, beta, original context) round-trip and can be replaced on a built model.
 * - Sampling: the same seed gives the same bytes; top-k 1 is the argmax.
 * - A tiny overfit: a 64-byte string repeated is learned to < 0.5 bits/byte.
 * - Bad settings: odd rotary dim, odd head dim with RoPE, learned context beyond its table,
 *   unknown posenc, learned lengths beyond the table at run time.
 */
#include "dfl_test.h"

#include <stdint.h>
#include <unistd.h>

#include "difflow/core.h"
#include "difflow/lm.h"
#include "difflow/optim.h"

static dfl_lm_cfg small_cfg(dfl_posenc p)
{
    dfl_lm_cfg c = dfl_lm_cfg_default();
    c.posenc = p;
    c.context = 32;
    c.layers = 2;
    c.dim = 32;
    c.heads = 4;
    return c;
}

static void test_init_loss(void **state)
{
    (void)state;
    dfl_rng r;
    dfl_rng_init(&r, 1);
    uint8_t win[4 * 33];
    for (size_t i = 0; i < sizeof win; i++) win[i] = (uint8_t)dfl_rng_below(&r, 256);
    for (int p = 0; p < DFL_POSENC_COUNT; p++) {
        dfl_lm_cfg c = small_cfg((dfl_posenc)p);
        dfl_lm *m = dfl_lm_new(&c, &r);
        assert_non_null(m);
        dfl_ctx *ctx = dfl_ctx_new();
        dfl_tensor *loss = dfl_lm_loss(ctx, m, win, 4, 32);
        if (!loss) fail_msg("%s: %s", dfl_posenc_name((dfl_posenc)p), dfl_last_error());
        if (!(fabs(loss->data[0] - log(256.0)) < 0.1))
            fail_msg("%s: init loss %g, expected ln 256 = %g", dfl_posenc_name((dfl_posenc)p), loss->data[0], log(256.0));
        dfl_ctx_free(ctx);
        dfl_lm_free(m);
    }
}

static void test_causal(void **state)
{
    (void)state;
    dfl_rng r;
    dfl_rng_init(&r, 2);
    enum { T = 40, J = 23 };
    int ids[T];
    for (int t = 0; t < T; t++) ids[t] = (int)dfl_rng_below(&r, 256);
    for (int p = 0; p < DFL_POSENC_COUNT; p++) {
        dfl_lm_cfg c = small_cfg((dfl_posenc)p);
        c.context = T;
        dfl_lm *m = dfl_lm_new(&c, &r);
        assert_non_null(m);
        /* larger weights than at init so that every position mixes strongly */
        dfl_params *ps = dfl_lm_params(m);
        for (int i = 0; i < ps->n; i++)
            for (size_t k = 0; k < ps->p[i].t->n; k++) ps->p[i].t->data[k] += 0.2f * dfl_rng_normal(&r);
        dfl_ctx *ctx = dfl_ctx_new();
        dfl_tensor *a = dfl_lm_logits(ctx, m, ids, 1, T);
        assert_non_null(a);
        float *la = malloc(a->n * sizeof *la);
        memcpy(la, a->data, a->n * sizeof *la);
        int ids2[T];
        memcpy(ids2, ids, sizeof ids);
        ids2[J] = (ids[J] + 77) % 256;
        dfl_ctx_reset(ctx);
        dfl_tensor *b = dfl_lm_logits(ctx, m, ids2, 1, T);
        assert_non_null(b);
        if (memcmp(la, b->data, (size_t)J * 256 * sizeof(float)))
            fail_msg("%s: logits before position %d changed when byte %d changed", dfl_posenc_name((dfl_posenc)p), J, J);
        int differs = 0;
        for (int k = J * 256; k < (J + 1) * 256; k++) differs |= la[k] != b->data[k];
        if (!differs) fail_msg("%s: logits at position %d ignore byte %d", dfl_posenc_name((dfl_posenc)p), J, J);
        free(la);
        dfl_ctx_free(ctx);
        dfl_lm_free(m);
    }
}

/* Mean next-byte cross-entropy of B windows of T + 1 bytes, from the model's float logits but
 * reduced in double (finite differences then see the model's rounding only). */
static double loss_at(dfl_lm *m, dfl_ctx *ctx, const uint8_t *win, int B, int T)
{
    dfl_ctx_reset(ctx);
    int was = dfl_ctx_set_grad(ctx, 0);
    int *ids = malloc((size_t)B * T * sizeof *ids);
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++) ids[b * T + t] = win[b * (T + 1) + t];
    dfl_tensor *lg = dfl_lm_logits(ctx, m, ids, B, T);
    dfl_ctx_set_grad(ctx, was);
    assert_non_null(lg);
    double tot = 0;
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++) {
            const float *row = lg->data + ((size_t)b * T + t) * 256;
            double mx = row[0], z = 0;
            for (int i = 1; i < 256; i++) mx = row[i] > mx ? row[i] : mx;
            for (int i = 0; i < 256; i++) z += exp(row[i] - mx);
            tot += mx + log(z) - row[win[b * (T + 1) + t + 1]];
        }
    free(ids);
    return tot / (B * T);
}

static void gradcheck_posenc(dfl_posenc p)
{
    dfl_rng r;
    dfl_rng_init(&r, 3 + (uint64_t)p);
    dfl_lm_cfg c = dfl_lm_cfg_default();
    c.posenc = p;
    c.context = 7;
    c.layers = 2;
    c.dim = 8;
    c.heads = 2;
    c.ffn = 16;
    c.shaw_k = 2;
    c.t5_buckets = 8;
    c.t5_max_distance = 16;
    dfl_lm *m = dfl_lm_new(&c, &r);
    assert_non_null(m);
    dfl_params *ps = dfl_lm_params(m);
    for (int i = 0; i < ps->n; i++) /* O(1) weights: every path carries gradient */
        for (size_t k = 0; k < ps->p[i].t->n; k++) ps->p[i].t->data[k] = 0.4f * dfl_rng_normal(&r);
    enum { B = 2, T = 7 };
    uint8_t win[B * (T + 1)];
    for (size_t i = 0; i < sizeof win; i++) win[i] = (uint8_t)dfl_rng_below(&r, 6);
    dfl_ctx *ctx = dfl_ctx_new();
    dfl_params_zero_grad(ps);
    dfl_tensor *loss = dfl_lm_loss(ctx, m, win, B, T);
    assert_non_null(loss);
    assert_int_equal(dfl_backward(ctx, loss), DFL_OK);
    const double h = 1e-2;
    int checked = 0;
    for (int i = 0; i < ps->n; i++) {
        dfl_tensor *t = ps->p[i].t;
        /* a random unit direction over the whole tensor */
        float *dir = malloc(t->n * sizeof *dir), *keep = malloc(t->n * sizeof *keep);
        double nrm = 0, ana = 0;
        for (size_t k = 0; k < t->n; k++) {
            dir[k] = dfl_rng_normal(&r);
            nrm += (double)dir[k] * dir[k];
        }
        nrm = sqrt(nrm);
        memcpy(keep, t->data, t->n * sizeof *keep);
        for (size_t k = 0; k < t->n; k++) {
            dir[k] = (float)(dir[k] / nrm);
            ana += (double)t->grad[k] * dir[k];
        }
        double side[2];
        for (int s = 0; s < 2; s++) {
            for (size_t k = 0; k < t->n; k++) t->data[k] = keep[k] + (s ? -1.f : 1.f) * (float)h * dir[k];
            side[s] = loss_at(m, ctx, win, B, T);
        }
        memcpy(t->data, keep, t->n * sizeof *keep);
        double num = (side[0] - side[1]) / (2 * h);
        if (getenv("DFL_LM_VERBOSE")) fprintf(stderr, "%s %s: tape %.6g fd %.6g\n", dfl_posenc_name(p), ps->p[i].name, ana, num);
        if (!(fabs(num - ana) <= 0.02 * fabs(num) + 1e-5))
            fail_msg("%s: d loss / d %s along a random direction: tape %.6g, finite differences %.6g", dfl_posenc_name(p),
                     ps->p[i].name, ana, num);
        /* and one scalar of the tensor */
        size_t k = dfl_rng_below(&r, (uint32_t)t->n);
        float k0 = t->data[k];
        t->data[k] = k0 + (float)h;
        double lp = loss_at(m, ctx, win, B, T);
        t->data[k] = k0 - (float)h;
        double lm = loss_at(m, ctx, win, B, T);
        t->data[k] = k0;
        double n1 = (lp - lm) / (2 * h);
        if (!(fabs(n1 - t->grad[k]) <= 0.02 * fabs(n1) + 1e-5))
            fail_msg("%s: d loss / d %s[%zu]: tape %.6g, finite differences %.6g", dfl_posenc_name(p), ps->p[i].name, k,
                     (double)t->grad[k], n1);
        checked++;
        free(dir);
        free(keep);
    }
    assert_true(checked >= 20);
    dfl_ctx_free(ctx);
    dfl_lm_free(m);
}

static void test_gradcheck(void **state)
{
    (void)state;
    gradcheck_posenc(DFL_POSENC_ROPE);
    gradcheck_posenc(DFL_POSENC_SHAW);
    gradcheck_posenc(DFL_POSENC_T5);
    gradcheck_posenc(DFL_POSENC_ROPE_LINEAR);
    gradcheck_posenc(DFL_POSENC_LEARNED);
}

/* Reference 1.2: the interleaved and half-split layouts differ by a fixed permutation of each
 * head's q/k lanes, so an interleaved model whose W_q, W_k rows (and biases) are permuted per head,
 * row_half[h Dh + r Dh/2 + i] = row_inter[h Dh + 2i + r], gives the same logits with the half
 * layout (W_v, W_o untouched). Partial rotary dims permute only the first rd lanes. */
static void test_layout_equivalence(void **state)
{
    (void)state;
    for (int rd = 8; rd >= 4; rd -= 4) {
        dfl_rng r;
        dfl_rng_init(&r, 8);
        dfl_lm_cfg c = small_cfg(DFL_POSENC_ROPE); /* Dh = 8 */
        c.rope.rot_dim = rd;
        dfl_lm *mi = dfl_lm_new(&c, &r);
        c.rope.layout = DFL_ROPE_HALF;
        dfl_lm *mh = dfl_lm_new(&c, &r);
        assert_non_null(mi);
        assert_non_null(mh);
        dfl_params *pi = dfl_lm_params(mi), *ph = dfl_lm_params(mh);
        assert_int_equal(pi->n, ph->n);
        int D = c.dim, Dh = D / c.heads;
        for (int j = 0; j < pi->n; j++) {
            dfl_tensor *a = pi->p[j].t, *b = ph->p[j].t;
            for (size_t k = 0; k < a->n; k++) a->data[k] += 0.2f * dfl_rng_normal(&r); /* not the init */
            const char *nm = pi->p[j].name;
            int is_qk = strstr(nm, "attn.q.") || strstr(nm, "attn.k.");
            int cols = a->ndim == 2 ? a->shape[1] : 1;
            for (int row = 0; row < a->shape[0]; row++) {
                int src = row;
                if (is_qk) {
                    int h = row / Dh, lane = row % Dh;
                    if (lane < rd) src = h * Dh + 2 * (lane % (rd / 2)) + lane / (rd / 2);
                }
                memcpy(b->data + (size_t)row * cols, a->data + (size_t)src * cols, (size_t)cols * sizeof(float));
            }
        }
        int ids[48];
        for (int t = 0; t < 48; t++) ids[t] = (int)dfl_rng_below(&r, 256);
        dfl_ctx *ctx = dfl_ctx_new();
        dfl_tensor *la = dfl_lm_logits(ctx, mi, ids, 1, 48);
        dfl_ctx *ctx2 = dfl_ctx_new();
        dfl_tensor *lb = dfl_lm_logits(ctx2, mh, ids, 1, 48);
        assert_non_null(la);
        assert_non_null(lb);
        double md = 0, mx = 0;
        for (size_t k = 0; k < la->n; k++) {
            md = fmax(md, fabs((double)la->data[k] - lb->data[k]));
            mx = fmax(mx, fabs((double)la->data[k]));
        }
        if (!(md <= 1e-4 * mx)) fail_msg("rd %d: layouts differ by %g (max |logit| %g)", rd, md, mx);
        /* without the permutation the half-layout model computes something else */
        for (int j = 0; j < pi->n; j++)
            memcpy(ph->p[j].t->data, pi->p[j].t->data, pi->p[j].t->n * sizeof(float));
        dfl_ctx_reset(ctx2);
        lb = dfl_lm_logits(ctx2, mh, ids, 1, 48);
        md = 0;
        for (size_t k = 0; k < la->n; k++) md = fmax(md, fabs((double)la->data[k] - lb->data[k]));
        if (!(md > 1e-2 * mx)) fail_msg("rd %d: unpermuted layouts agree (%g): the check cannot fail", rd, md);
        dfl_ctx_free(ctx);
        dfl_ctx_free(ctx2);
        dfl_lm_free(mi);
        dfl_lm_free(mh);
    }
}

static void test_eval_protocol(void **state)
{
    (void)state;
    dfl_rng r;
    dfl_rng_init(&r, 4);
    dfl_lm_cfg c = small_cfg(DFL_POSENC_ALIBI);
    dfl_lm *m = dfl_lm_new(&c, &r);
    enum { N = 50, L = 16 };
    uint8_t text[N];
    for (int i = 0; i < N; i++) text[i] = (uint8_t)("the quick brown fox "[i % 20]);
    dfl_ctx *ctx = dfl_ctx_new();
    double bpb = 0;
    size_t scored = 0;
    assert_int_equal(dfl_lm_eval_bpb(ctx, m, text, N, L, 40, &bpb, &scored), DFL_OK);
    assert_int_equal(scored, N - 1);
    /* by hand: windows at 0, 16, 32 of 16 predictions, then 48 with 1 */
    double nats = 0;
    for (int s = 0; s < N - 1; s += L) {
        int len = N - 1 - s < L ? N - 1 - s : L;
        nats += loss_at(m, ctx, text + s, 1, len) * len;
    }
    CHECK_CLOSE(bpb, nats / (N - 1) / log(2.0), 1e-5);
    /* L longer than the text: one window */
    assert_int_equal(dfl_lm_eval_bpb(ctx, m, text, N, 4 * N, 4096, &bpb, NULL), DFL_OK);
    CHECK_CLOSE(bpb, loss_at(m, ctx, text, 1, N - 1) / log(2.0), 1e-5);
    dfl_ctx_free(ctx);
    dfl_lm_free(m);
}

static void test_checkpoint_and_sampling(void **state)
{
    (void)state;
    dfl_rng r;
    dfl_rng_init(&r, 5);
    dfl_lm_cfg c = small_cfg(DFL_POSENC_ROPE);
    c.rope.layout = DFL_ROPE_HALF;
    c.rope.rot_dim = 4;
    c.rope.theta = 500;
    dfl_lm *m = dfl_lm_new(&c, &r);
    assert_non_null(m);
    char path[] = "/tmp/test_lm_XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    close(fd);
    const char *extra[] = {"text", "/some/file.txt"};
    assert_int_equal(dfl_lm_save(path, m, 17, extra, 1), DFL_OK);
    dfl_lm *m2 = NULL;
    long step = 0;
    char *text = NULL;
    assert_int_equal(dfl_lm_load(path, &m2, &step, &text), DFL_OK);
    assert_int_equal(step, 17);
    assert_string_equal(text, "/some/file.txt");
    free(text);
    const dfl_lm_cfg *c2 = dfl_lm_config(m2);
    assert_int_equal(c2->posenc, DFL_POSENC_ROPE);
    assert_int_equal(c2->rope.layout, DFL_ROPE_HALF);
    assert_int_equal(c2->rope.rot_dim, 4);
    CHECK_CLOSE(c2->rope.theta, 500, 0);
    int ids[20];
    for (int t = 0; t < 20; t++) ids[t] = (int)dfl_rng_below(&r, 256);
    dfl_ctx *ctx = dfl_ctx_new();
    dfl_tensor *a = dfl_lm_logits(ctx, m, ids, 1, 20);
    float *la = malloc(a->n * sizeof *la);
    memcpy(la, a->data, a->n * sizeof *la);
    dfl_ctx_reset(ctx);
    dfl_tensor *b = dfl_lm_logits(ctx, m2, ids, 1, 20);
    assert_memory_equal(la, b->data, a->n * sizeof *la);
    /* sampling: same seed, same bytes (beyond the context: 40 > 32 positions); top-k 1 = argmax */
    dfl_lm_sample_cfg sc = {.temperature = 1.0, .top_k = 0, .window = 64};
    uint8_t o1[40], o2[40];
    dfl_rng s1, s2;
    dfl_rng_init(&s1, 9);
    dfl_rng_init(&s2, 9);
    assert_int_equal(dfl_lm_generate(ctx, m, (const uint8_t *)"ab", 2, 40, &sc, &s1, o1, NULL, NULL), DFL_OK);
    assert_int_equal(dfl_lm_generate(ctx, m2, (const uint8_t *)"ab", 2, 40, &sc, &s2, o2, NULL, NULL), DFL_OK);
    assert_memory_equal(o1, o2, 40);
    sc.top_k = 1;
    uint8_t g[1];
    assert_int_equal(dfl_lm_generate(ctx, m, (const uint8_t *)"ab", 2, 1, &sc, &s1, g, NULL, NULL), DFL_OK);
    int pid[2] = {'a', 'b'};
    dfl_ctx_reset(ctx);
    dfl_tensor *lg = dfl_lm_logits(ctx, m, pid, 1, 2);
    int best = 0;
    for (int i = 1; i < 256; i++)
        if (lg->data[256 + i] > lg->data[256 + best]) best = i;
    assert_int_equal(g[0], best);
    free(la);
    dfl_ctx_free(ctx);
    dfl_lm_free(m);
    dfl_lm_free(m2);
    remove(path);
}

/* YaRN settings (factor, ramp alpha/beta, original context) survive a checkpoint round trip with
 * bit-identical logits; orig_ctx 0 resolves to the training context; dfl_lm_set_rope_extension
 * replaces them (the logits change with the ramp) and refuses beta <= alpha leaving the model as
 * it was. */
static void test_yarn_settings(void **state)
{
    (void)state;
    dfl_rng r;
    dfl_rng_init(&r, 6);
    dfl_lm_cfg c = small_cfg(DFL_POSENC_ROPE);
    c.rope.scaling = DFL_ROPE_SCALE_YARN;
    c.rope.factor = 2.0;
    dfl_lm *m0 = dfl_lm_new(&c, &r);
    assert_non_null(m0);
    assert_int_equal(dfl_lm_config(m0)->rope.orig_ctx, 32); /* 0 -> the training context */
    dfl_lm_free(m0);
    c.rope.yarn_alpha = 0.5;
    c.rope.yarn_beta = 8.0;
    c.rope.orig_ctx = 8;
    dfl_lm *m = dfl_lm_new(&c, &r);
    assert_non_null(m);
    dfl_params *ps = dfl_lm_params(m); /* larger weights than at init, so positions matter */
    for (int i = 0; i < ps->n; i++)
        for (size_t k = 0; k < ps->p[i].t->n; k++) ps->p[i].t->data[k] += 0.2f * dfl_rng_normal(&r);
    char path[] = "/tmp/test_lm_yarn_XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    close(fd);
    assert_int_equal(dfl_lm_save(path, m, 3, NULL, 0), DFL_OK);
    dfl_lm *m2 = NULL;
    long step = 0;
    assert_int_equal(dfl_lm_load(path, &m2, &step, NULL), DFL_OK);
    remove(path);
    const dfl_lm_cfg *c2 = dfl_lm_config(m2);
    assert_int_equal(c2->rope.scaling, DFL_ROPE_SCALE_YARN);
    CHECK_CLOSE(c2->rope.factor, 2.0, 0);
    CHECK_CLOSE(c2->rope.yarn_alpha, 0.5, 0);
    CHECK_CLOSE(c2->rope.yarn_beta, 8.0, 0);
    assert_int_equal(c2->rope.orig_ctx, 8);
    int ids[24];
    for (int t = 0; t < 24; t++) ids[t] = (int)dfl_rng_below(&r, 256);
    dfl_ctx *ctx = dfl_ctx_new();
    dfl_tensor *a = dfl_lm_logits(ctx, m, ids, 1, 24);
    size_t n = a->n;
    float *la = malloc(n * sizeof *la);
    memcpy(la, a->data, n * sizeof *la);
    dfl_ctx_reset(ctx);
    assert_memory_equal(la, dfl_lm_logits(ctx, m2, ids, 1, 24)->data, n * sizeof *la);
    /* another ramp: alpha 1, beta 32, L = the context (orig_ctx 0) */
    dfl_rope_cfg e = c2->rope;
    e.yarn_alpha = 1.0;
    e.yarn_beta = 32.0;
    e.orig_ctx = 0;
    assert_int_equal(dfl_lm_set_rope_extension(m2, &e), DFL_OK);
    assert_int_equal(dfl_lm_config(m2)->rope.orig_ctx, 32);
    dfl_ctx_reset(ctx);
    dfl_tensor *b = dfl_lm_logits(ctx, m2, ids, 1, 24);
    double md = 0;
    for (size_t i = 0; i < n; i++) md = fmax(md, fabs((double)b->data[i] - la[i]));
    print_message("yarn ramp (0.5, 8, L 8) -> (1, 32, L 32): max |logit change| %.4f\n", md);
    assert_true(md > 1e-3);
    /* the logits at position 0 do not depend on the frequencies (angle 0) */
    for (int i = 0; i < 256; i++) CHECK_CLOSE(b->data[i], la[i], 1e-5);
    e.yarn_alpha = 4.0;
    e.yarn_beta = 2.0;
    assert_int_equal(dfl_lm_set_rope_extension(m2, &e), DFL_ERR_ARG);
    CHECK_CLOSE(dfl_lm_config(m2)->rope.yarn_alpha, 1.0, 0);
    CHECK_CLOSE(dfl_lm_config(m2)->rope.yarn_beta, 32.0, 0);
    free(la);
    dfl_ctx_free(ctx);
    dfl_lm_free(m);
    dfl_lm_free(m2);
}

static void test_overfit(void **state)
{
    (void)state;
    const char *s = "Sixty-four bytes of text: the model has to learn them by heart.\n";
    assert_int_equal(strlen(s), 64);
    enum { N = 64 * 16, T = 32, B = 8 };
    uint8_t text[N];
    for (int i = 0; i < N; i++) text[i] = (uint8_t)s[i % 64];
    dfl_rng r;
    dfl_rng_init(&r, 6);
    dfl_lm_cfg c = small_cfg(DFL_POSENC_ROPE);
    c.context = T;
    dfl_lm *m = dfl_lm_new(&c, &r);
    dfl_adam opt;
    dfl_adam_cfg ac = {.lr = 3e-3f, .beta1 = 0.9f, .beta2 = 0.99f, .eps = 1e-8f, .warmup = 10, .clip = 1.0f, .batch = B};
    assert_int_equal(dfl_adam_init(&opt, dfl_lm_params(m), &ac), DFL_OK);
    dfl_ctx *ctx = dfl_ctx_new();
    uint8_t win[B * (T + 1)];
    for (int step = 0; step < 300; step++) {
        for (int b = 0; b < B; b++) {
            int st = (int)dfl_rng_below(&r, N - T);
            memcpy(win + b * (T + 1), text + st, T + 1);
        }
        dfl_ctx_reset(ctx);
        dfl_params_zero_grad(dfl_lm_params(m));
        dfl_tensor *loss = dfl_lm_loss(ctx, m, win, B, T);
        assert_non_null(loss);
        assert_int_equal(dfl_backward(ctx, loss), DFL_OK);
        assert_int_equal(dfl_adam_step(&opt, NULL), DFL_OK);
    }
    double bpb = 0;
    assert_int_equal(dfl_lm_eval_bpb(ctx, m, text, 64 * 4 + 1, T, 4096, &bpb, NULL), DFL_OK);
    print_message("overfit: %.3f bits/byte after 300 steps\n", bpb);
    if (!(bpb < 0.5)) fail_msg("overfit: %.3f bits/byte, expected < 0.5", bpb);
    dfl_adam_free(&opt);
    dfl_ctx_free(ctx);
    dfl_lm_free(m);
}

static void test_bad_config(void **state)
{
    (void)state;
    dfl_lm_cfg c = small_cfg(DFL_POSENC_ROPE);
    c.rope.rot_dim = 5;
    assert_int_equal(dfl_lm_cfg_check(&c), DFL_ERR_ARG);
    c = small_cfg(DFL_POSENC_ROPE);
    c.dim = 28; /* head dimension 7 */
    assert_int_equal(dfl_lm_cfg_check(&c), DFL_ERR_ARG);
    assert_non_null(strstr(dfl_last_error(), "7"));
    c = small_cfg(DFL_POSENC_ALIBI);
    c.dim = 28; /* fine without RoPE */
    assert_int_equal(dfl_lm_cfg_check(&c), DFL_OK);
    c = small_cfg(DFL_POSENC_LEARNED);
    c.max_positions = 16;
    assert_int_equal(dfl_lm_cfg_check(&c), DFL_ERR_ARG);
    assert_non_null(strstr(dfl_last_error(), "learned table"));
    c = small_cfg(DFL_POSENC_XPOS);
    c.rope.scaling = DFL_ROPE_SCALE_NTK;
    c.rope.factor = 2;
    assert_int_equal(dfl_lm_cfg_check(&c), DFL_ERR_ARG);
    dfl_posenc p;
    assert_int_equal(dfl_posenc_parse("rotary", &p), DFL_ERR_ARG);
    assert_int_equal(dfl_posenc_parse("rope-linear", &p), DFL_OK);
    assert_int_equal(p, DFL_POSENC_ROPE_LINEAR);
    /* run time: a learned model refuses lengths beyond its table, others do not */
    dfl_rng r;
    dfl_rng_init(&r, 7);
    c = small_cfg(DFL_POSENC_LEARNED);
    dfl_lm *m = dfl_lm_new(&c, &r);
    assert_int_equal(dfl_lm_check_length(m, 32), DFL_OK);
    assert_int_equal(dfl_lm_check_length(m, 33), DFL_ERR_ARG);
    dfl_ctx *ctx = dfl_ctx_new();
    int ids[64] = {0};
    assert_null(dfl_lm_logits(ctx, m, ids, 1, 64));
    double bpb;
    uint8_t text[200] = {0};
    assert_int_equal(dfl_lm_eval_bpb(ctx, m, text, 200, 64, 4096, &bpb, NULL), DFL_ERR_ARG);
    assert_int_equal(dfl_lm_set_rope_scaling(m, DFL_ROPE_SCALE_NTK, 2.0), DFL_ERR_ARG);
    dfl_lm_free(m);
    c = small_cfg(DFL_POSENC_ROPE);
    m = dfl_lm_new(&c, &r);
    assert_int_equal(dfl_lm_set_rope_scaling(m, DFL_ROPE_SCALE_YARN, 4.0), DFL_OK);
    assert_int_equal(dfl_lm_config(m)->rope.orig_ctx, 32);
    assert_non_null(dfl_lm_logits(ctx, m, ids, 1, 64));
    dfl_ctx_free(ctx);
    dfl_lm_free(m);
}

/* ---------------------------------------------------------------- reference forward
 *
 * An independent double-precision forward of the whole LM, written from the definitions (docs/LM.md
 * table, reference/positional.md), not from the library's posenc functions: each positional
 * encoding's wiring into the model (sign, which side is scaled, causal vs bidirectional buckets, the
 * first position) is then checked through dfl_lm_logits. */

static const float *ref_param(dfl_lm *m, const char *name)
{
    dfl_params *ps = dfl_lm_params(m);
    for (int i = 0; i < ps->n; i++)
        if (!strcmp(ps->p[i].name, name)) return ps->p[i].t->data;
    fail_msg("no parameter %s", name);
    return NULL;
}

/* y (T, out) = x (T, in) W^T + b, W (out, in) as PyTorch's Linear */
static void ref_linear(const double *x, int T, int in, const float *W, const float *b, int out, double *y)
{
    for (int t = 0; t < T; t++)
        for (int o = 0; o < out; o++) {
            double s = b[o];
            for (int i = 0; i < in; i++) s += x[t * in + i] * W[o * in + i];
            y[t * out + o] = s;
        }
}

static void ref_layer_norm(const double *x, int T, int D, const float *w, const float *b, double *y)
{
    for (int t = 0; t < T; t++) {
        double mu = 0, var = 0;
        for (int d = 0; d < D; d++) mu += x[t * D + d] / D;
        for (int d = 0; d < D; d++) var += (x[t * D + d] - mu) * (x[t * D + d] - mu) / D;
        for (int d = 0; d < D; d++) y[t * D + d] = (x[t * D + d] - mu) / sqrt(var + 1e-5) * w[d] + b[d];
    }
}

/* RoFormer Eq. 34 on one head vector v (Dh): pair i (lanes 2i, 2i+1 interleaved; i, i + rd/2 half)
 * turned by angle p theta^(-2i/rd) and multiplied by sc[i] (xPos) or 1. */
static void ref_rotate(double *v, int rd, int half, double p, double theta, const double *sc)
{
    for (int i = 0; i < rd / 2; i++) {
        int a = half ? i : 2 * i, b = half ? i + rd / 2 : 2 * i + 1;
        double ang = p * pow(theta, -2.0 * i / rd), s = sc ? sc[i] : 1.0;
        double x = v[a], y = v[b];
        v[a] = s * (x * cos(ang) - y * sin(ang));
        v[b] = s * (x * sin(ang) + y * cos(ang));
    }
}

/* T5 causal bucket of the distance n = i - j >= 0 (Raffel et al.; reference 2.5, causal branch) */
static int ref_t5_bucket(int n, int B, int M)
{
    int e = B / 2;
    if (n < e) return n;
    int v = e + (int)floor(log((double)n / e) / log((double)M / e) * (B - e));
    return v < B - 1 ? v : B - 1;
}

static double ref_elu1(double x) { return x > 0 ? x + 1 : exp(x); }

/* logits (T, 256) of one sequence */
static void ref_lm_logits(dfl_lm *m, const int *ids, int T, double *logits)
{
    const dfl_lm_cfg *c = dfl_lm_config(m);
    int D = c->dim, H = c->heads, Dh = D / H, F = c->ffn, K = c->shaw_k;
    int rd = c->rope.rot_dim ? c->rope.rot_dim : Dh, half = c->rope.layout == DFL_ROPE_HALF;
    double *x = calloc((size_t)T * D, sizeof *x), *h = calloc((size_t)T * D, sizeof *h);
    double *q = calloc((size_t)T * D, sizeof *q), *k = calloc((size_t)T * D, sizeof *k);
    double *v = calloc((size_t)T * D, sizeof *v), *a = calloc((size_t)T * D, sizeof *a);
    double *f = calloc((size_t)T * F, sizeof *f), *y = calloc((size_t)T * (F > D ? F : D), sizeof *y);
    double *P = calloc((size_t)T, sizeof *P);
    const float *E = ref_param(m, "tok_emb.weight");
    for (int t = 0; t < T; t++)
        for (int d = 0; d < D; d++) {
            x[t * D + d] = E[ids[t] * D + d];
            if (c->posenc == DFL_POSENC_LEARNED) x[t * D + d] += ref_param(m, "pos_emb.weight")[t * D + d];
            if (c->posenc == DFL_POSENC_SINUSOIDAL) { /* Vaswani 3.5, positions from 0 */
                double w = t / pow(10000.0, (double)(d - d % 2) / D);
                x[t * D + d] += d % 2 ? cos(w) : sin(w);
            }
        }
    char nm[64];
#define PRM(s) (snprintf(nm, sizeof nm, "blocks.%d.%s", l, s), ref_param(m, nm))
    for (int l = 0; l < c->layers; l++) {
        ref_layer_norm(x, T, D, PRM("ln1.weight"), PRM("ln1.bias"), h);
        ref_linear(h, T, D, PRM("attn.q.weight"), PRM("attn.q.bias"), D, q);
        ref_linear(h, T, D, PRM("attn.k.weight"), PRM("attn.k.bias"), D, k);
        ref_linear(h, T, D, PRM("attn.v.weight"), PRM("attn.v.bias"), D, v);
        const float *aK = c->posenc == DFL_POSENC_SHAW ? PRM("attn.rel_k") : NULL;
        const float *aV = c->posenc == DFL_POSENC_SHAW ? PRM("attn.rel_v") : NULL;
        for (int hh = 0; hh < H; hh++) {
            /* this head's q, k (rows of Dh) after the per-position transforms */
            double qh[64][16], kh[64][16], pq[64][16], pk[64][16];
            assert_true(T <= 64 && Dh <= 16);
            for (int t = 0; t < T; t++) {
                for (int e = 0; e < Dh; e++) {
                    qh[t][e] = q[t * D + hh * Dh + e];
                    kh[t][e] = k[t * D + hh * Dh + e];
                }
                if (c->posenc == DFL_POSENC_ROPE) {
                    ref_rotate(qh[t], rd, half, t, c->rope.theta, NULL);
                    ref_rotate(kh[t], rd, half, t, c->rope.theta, NULL);
                }
                if (c->posenc == DFL_POSENC_XPOS) { /* Sun et al.: q zeta^(m/g) R_m, k zeta^(-n/g) R_n, centred */
                    double p = t - T / 2, zq[8], zk[8];
                    for (int i = 0; i < rd / 2; i++) {
                        double zeta = (2.0 * i / rd + 0.4) / 1.4;
                        zq[i] = pow(zeta, p / c->xpos_scale_base);
                        zk[i] = pow(zeta, -p / c->xpos_scale_base);
                    }
                    ref_rotate(qh[t], rd, half, p, c->rope.theta, zq);
                    ref_rotate(kh[t], rd, half, p, c->rope.theta, zk);
                }
                if (c->posenc == DFL_POSENC_ROPE_LINEAR) { /* RoFormer Eq. 19 */
                    for (int e = 0; e < Dh; e++) {
                        qh[t][e] = ref_elu1(qh[t][e]);
                        kh[t][e] = ref_elu1(kh[t][e]);
                        pq[t][e] = qh[t][e];
                        pk[t][e] = kh[t][e];
                    }
                    ref_rotate(pq[t], rd, half, t, c->rope.theta, NULL);
                    ref_rotate(pk[t], rd, half, t, c->rope.theta, NULL);
                }
            }
            for (int i = 0; i < T; i++) {
                double *out = a + i * D + hh * Dh;
                for (int e = 0; e < Dh; e++) out[e] = 0;
                if (c->posenc == DFL_POSENC_ROPE_LINEAR) {
                    double den = 0;
                    for (int j = 0; j <= i; j++) {
                        double num = 0, nr = 0;
                        for (int e = 0; e < Dh; e++) {
                            num += pq[i][e] * pk[j][e];
                            nr += qh[i][e] * kh[j][e];
                        }
                        den += nr;
                        for (int e = 0; e < Dh; e++) out[e] += num * v[j * D + hh * Dh + e];
                    }
                    for (int e = 0; e < Dh; e++) out[e] /= den;
                    continue;
                }
                double mx = -1e300, z = 0;
                for (int j = 0; j <= i; j++) {
                    double s = 0;
                    for (int e = 0; e < Dh; e++) s += qh[i][e] * kh[j][e];
                    if (aK) {
                        int r = j - i < -K ? -K : j - i;
                        for (int e = 0; e < Dh; e++) s += qh[i][e] * aK[(r + K) * Dh + e];
                    }
                    s /= sqrt((double)Dh);
                    if (c->posenc == DFL_POSENC_ALIBI) s -= pow(2.0, -8.0 * (hh + 1) / H) * (i - j); /* H a power of 2 */
                    if (c->posenc == DFL_POSENC_T5)
                        s += ref_param(m, "t5_bias.weight")[ref_t5_bucket(i - j, c->t5_buckets, c->t5_max_distance) * H + hh];
                    P[j] = s;
                    mx = s > mx ? s : mx;
                }
                for (int j = 0; j <= i; j++) z += (P[j] = exp(P[j] - mx));
                for (int j = 0; j <= i; j++) {
                    int r = j - i < -K ? -K : j - i;
                    for (int e = 0; e < Dh; e++)
                        out[e] += P[j] / z * (v[j * D + hh * Dh + e] + (aV ? aV[(r + K) * Dh + e] : 0.0));
                }
            }
        }
        ref_linear(a, T, D, PRM("attn.o.weight"), PRM("attn.o.bias"), D, y);
        for (int i = 0; i < T * D; i++) x[i] += y[i];
        ref_layer_norm(x, T, D, PRM("ln2.weight"), PRM("ln2.bias"), h);
        ref_linear(h, T, D, PRM("mlp.fc.weight"), PRM("mlp.fc.bias"), F, f);
        for (int i = 0; i < T * F; i++) f[i] = 0.5 * f[i] * (1 + erf(f[i] / sqrt(2.0)));
        ref_linear(f, T, F, PRM("mlp.proj.weight"), PRM("mlp.proj.bias"), D, y);
        for (int i = 0; i < T * D; i++) x[i] += y[i];
    }
#undef PRM
    ref_layer_norm(x, T, D, ref_param(m, "ln_f.weight"), ref_param(m, "ln_f.bias"), h);
    ref_linear(h, T, D, ref_param(m, "head.weight"), ref_param(m, "head.bias"), 256, logits);
    free(x), free(h), free(q), free(k), free(v), free(a), free(f), free(y), free(P);
}

/* A 1-layer, D 16, 2-head model (Dh 8) with O(1) weights (so positions change the logits by far
 * more than float rounding), 2 sequences of T = 24 bytes: dfl_lm_logits against ref_lm_logits. */
static void reference_case(dfl_posenc p, const char *what, int rot_dim, dfl_rope_layout layout)
{
    enum { B = 2, T = 24, D = 16 };
    dfl_rng r;
    dfl_rng_init(&r, 40 + (uint64_t)p);
    dfl_lm_cfg c = dfl_lm_cfg_default();
    c.posenc = p;
    c.context = T;
    c.layers = 1;
    c.dim = D;
    c.heads = 2;
    c.ffn = 32;
    c.shaw_k = 3;
    c.t5_buckets = 8; /* causal and bidirectional buckets differ from distance 3 on */
    c.t5_max_distance = 16;
    c.xpos_scale_base = 8; /* a short scale so that the zeta powers are far from 1 */
    c.rope.rot_dim = rot_dim;
    c.rope.layout = layout;
    dfl_lm *m = dfl_lm_new(&c, &r);
    if (!m) fail_msg("%s: %s", what, dfl_last_error());
    dfl_params *ps = dfl_lm_params(m);
    for (int i = 0; i < ps->n; i++)
        for (size_t k = 0; k < ps->p[i].t->n; k++) ps->p[i].t->data[k] = 0.5f * dfl_rng_normal(&r);
    int ids[B * T];
    for (int i = 0; i < B * T; i++) ids[i] = (int)dfl_rng_below(&r, 256);
    dfl_ctx *ctx = dfl_ctx_new();
    dfl_tensor *lg = dfl_lm_logits(ctx, m, ids, B, T);
    if (!lg) fail_msg("%s: %s", what, dfl_last_error());
    double *ref = malloc((size_t)T * 256 * sizeof *ref), md = 0, mx = 0;
    for (int b = 0; b < B; b++) {
        ref_lm_logits(m, ids + b * T, T, ref);
        for (int i = 0; i < T * 256; i++) {
            md = fmax(md, fabs(lg->data[(size_t)b * T * 256 + i] - ref[i]));
            mx = fmax(mx, fabs(ref[i]));
        }
    }
    if (getenv("DFL_LM_VERBOSE")) fprintf(stderr, "%s: max |logit - reference| %.3g, max |logit| %.3g\n", what, md, mx);
    if (!(md <= 2e-5 * (1 + mx))) fail_msg("%s: logits differ from the reference forward by %g (max |logit| %g)", what, md, mx);
    free(ref);
    dfl_ctx_free(ctx);
    dfl_lm_free(m);
}

static void test_reference_forward(void **state)
{
    (void)state;
    reference_case(DFL_POSENC_NONE, "none", 0, DFL_ROPE_INTERLEAVED);
    reference_case(DFL_POSENC_LEARNED, "learned", 0, DFL_ROPE_INTERLEAVED);
    reference_case(DFL_POSENC_SINUSOIDAL, "sinusoidal", 0, DFL_ROPE_INTERLEAVED);
    reference_case(DFL_POSENC_SHAW, "shaw", 0, DFL_ROPE_INTERLEAVED);
    reference_case(DFL_POSENC_T5, "t5", 0, DFL_ROPE_INTERLEAVED);
    reference_case(DFL_POSENC_ALIBI, "alibi", 0, DFL_ROPE_INTERLEAVED);
    reference_case(DFL_POSENC_ROPE, "rope interleaved", 0, DFL_ROPE_INTERLEAVED);
    reference_case(DFL_POSENC_ROPE, "rope half, rotary dim 4", 4, DFL_ROPE_HALF);
    reference_case(DFL_POSENC_ROPE_LINEAR, "rope-linear", 0, DFL_ROPE_INTERLEAVED);
    reference_case(DFL_POSENC_XPOS, "xpos", 0, DFL_ROPE_INTERLEAVED);
    reference_case(DFL_POSENC_XPOS, "xpos half", 0, DFL_ROPE_HALF);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_init_loss),
        cmocka_unit_test(test_causal),
        cmocka_unit_test(test_reference_forward),
        cmocka_unit_test(test_gradcheck),
        cmocka_unit_test(test_layout_equivalence),
        cmocka_unit_test(test_eval_protocol),
        cmocka_unit_test(test_checkpoint_and_sampling),
        cmocka_unit_test(test_yarn_settings),
        cmocka_unit_test(test_overfit),
        cmocka_unit_test(test_bad_config),
    };
    dfl_set_threads(1); /* tiny models: thread start-up would dominate on a loaded machine */
    return cmocka_run_group_tests(tests, NULL, NULL);
}
