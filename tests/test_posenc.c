/* Tests of the positional encodings (posenc.h) against ../shared/reference/positional.md.
 *
 * - RoPE: every rotation test vector of reference 3.1 to 1e-5; the relative property
 *   <R_m q, R_n k> = q^T R_{n-m} k at positions up to 5000, both layouts, full and partial
 *   rotary dims; the two layouts agree after the per-head permutation (reference 3.2); the
 *   frequencies with PI / NTK / YaRN against reference 3.3 (NTK bases, YaRN temperature, ggml
 *   corr_dims) and, pair by pair, against tests/rope_scaling_ref.h (tools/rope_scaling_ref.py:
 *   the papers' formulas in Python decimal); the long-term decay curve of reference 3.3.
 * - xPos scales per pair in the rotation's layout; 2-D RoPE relative in both axes.
 * - Sinusoidal values, ALiBi slopes (8, 12 and the ggml closed form for 1..64 heads), T5 buckets
 *   (the reference table), learned table length check, bad settings.
 * - Linear attention (with and without RoPE, causal and not) equals a direct O(T^2)
 *   double-precision evaluation of the same formula (RoFormer Eq. 19).
 * - Every differentiable op: tape backward against central differences of a double reference.
 */
#include "dfl_test.h"
#include "dfl_fd.h"
#include "rope_scaling_ref.h"

#include <stdint.h>

#include "difflow/core.h"
#include "difflow/ops.h"
#include "difflow/posenc.h"
#include "difflow/tf.h"

static dfl_rng g_rng;

static int setup(void **state)
{
    (void)state;
    dfl_rng_init(&g_rng, 4242);
    return 0;
}

static dfl_rope_cfg cfg_of(dfl_rope_layout layout, int rd)
{
    dfl_rope_cfg c = dfl_rope_default();
    c.layout = layout;
    c.rot_dim = rd;
    return c;
}

/* Lanes (a, b) of pair i. */
static void pair_lanes(dfl_rope_layout layout, int rd, int i, int *a, int *b)
{
    if (layout == DFL_ROPE_HALF) {
        *a = i;
        *b = i + rd / 2;
    } else {
        *a = 2 * i;
        *b = 2 * i + 1;
    }
}

/* Double rotation of one Dh vector: pair i by angle ang[i], scaled by sc[i] (NULL: 1). */
static void rot_d(const double *x, double *y, int Dh, int rd, dfl_rope_layout layout,
                  const double *ang, const double *sc)
{
    for (int j = 0; j < Dh; j++) y[j] = x[j];
    for (int i = 0; i < rd / 2; i++) {
        int a, b;
        pair_lanes(layout, rd, i, &a, &b);
        double c = cos(ang[i]), s = sin(ang[i]), f = sc ? sc[i] : 1.0;
        y[a] = f * (x[a] * c - x[b] * s);
        y[b] = f * (x[a] * s + x[b] * c);
    }
}

/* RoPE of an (S, T, Dh) float buffer at positions pos through the op (no grad). */
static void rope_f(const float *x, float *y, int S, int T, int Dh, const int *pos,
                   const dfl_rope_cfg *c)
{
    dfl_ctx *ctx = dfl_ctx_new();
    int sh[3] = {S, T, Dh};
    dfl_tensor *xt = dfl_tensor_wrap(ctx, (float *)x, 3, sh);
    dfl_tensor *yt = dfl_rope(ctx, xt, pos, c);
    if (!yt) fail_msg("rope failed: %s", dfl_last_error());
    memcpy(y, yt->data, yt->n * sizeof(float));
    dfl_ctx_free(ctx);
}

/* ================================================================== RoPE values */

static void test_rope_reference_vectors(void **state)
{
    (void)state;
    const float x[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    struct {
        dfl_rope_layout layout;
        int rd, pos;
        double want[8];
    } v[] = {
        {DFL_ROPE_INTERLEAVED, 8, 3, {-1.272233, -1.838865, 1.683929, 4.707907, 4.817777, 6.147278, 6.975969, 8.020964}},
        {DFL_ROPE_INTERLEAVED, 8, 1000, {-1.091380, 1.951638, 4.612419, 1.930179, -0.931231, -7.754535, -2.949652, 10.212715}},
        {DFL_ROPE_HALF, 8, 3, {-1.695593, 0.137552, 2.788682, 3.975982, -4.808842, 6.323059, 7.086837, 8.011964}},
        {DFL_ROPE_HALF, 8, 1000, {-3.572019, 4.762832, 1.290933, -4.570559, 3.638775, 4.161182, -7.505564, 7.688302}},
        {DFL_ROPE_INTERLEAVED, 4, 3, {-1.272233, -1.838865, 2.878668, 4.088187, 5, 6, 7, 8}},
        {DFL_ROPE_HALF, 4, 3, {-1.413353, 1.879118, -2.828857, 4.058191, 5, 6, 7, 8}},
    };
    for (size_t t = 0; t < sizeof v / sizeof v[0]; t++) {
        dfl_rope_cfg c = cfg_of(v[t].layout, v[t].rd);
        float y[8];
        rope_f(x, y, 1, 1, 8, &v[t].pos, &c);
        for (int j = 0; j < 8; j++) CHECK_CLOSE(y[j], v[t].want[j], 1e-5);
    }
    /* the frequencies behind them: d = 8 -> 1, 0.1, 0.01, 0.001; rd = 4 -> 1, 0.01 */
    double f[4];
    dfl_rope_cfg c = cfg_of(DFL_ROPE_INTERLEAVED, 0);
    assert_int_equal(dfl_rope_inv_freq(&c, 8, f), DFL_OK);
    for (int i = 0; i < 4; i++) CHECK_REL(f[i], pow(10.0, -i), 1e-14);
    c.rot_dim = 4;
    assert_int_equal(dfl_rope_inv_freq(&c, 8, f), DFL_OK);
    CHECK_REL(f[0], 1.0, 1e-14);
    CHECK_REL(f[1], 0.01, 1e-14);
}

static double dot_f(const float *a, const float *b, int n)
{
    double s = 0.0;
    for (int i = 0; i < n; i++) s += (double)a[i] * b[i];
    return s;
}

/* Reference 3.2: the three position pairs with m - n = 3 and the permuted half-split. */
static void test_rope_relative_reference(void **state)
{
    (void)state;
    float q[8], k[8], qp[8], kp[8];
    const int perm[8] = {0, 2, 4, 6, 1, 3, 5, 7};
    for (int j = 0; j < 8; j++) {
        q[j] = 0.1f * (j + 1);
        k[j] = 1.0f - 0.05f * j;
    }
    for (int j = 0; j < 8; j++) {
        qp[j] = q[perm[j]];
        kp[j] = k[perm[j]];
    }
    const int pm[3] = {5, 4003, 3}, pn[3] = {2, 4000, 0};
    for (int l = 0; l < 2; l++) {
        dfl_rope_cfg c = cfg_of(l ? DFL_ROPE_HALF : DFL_ROPE_INTERLEAVED, 0);
        double want = l ? 1.538826262 : 2.105958668;
        for (int t = 0; t < 3; t++) {
            float rq[8], rk[8];
            rope_f(q, rq, 1, 1, 8, &pm[t], &c);
            rope_f(k, rk, 1, 1, 8, &pn[t], &c);
            CHECK_CLOSE(dot_f(rq, rk, 8), want, 1e-5);
            if (l) { /* half-split on the permuted vectors gives the interleaved value */
                rope_f(qp, rq, 1, 1, 8, &pm[t], &c);
                rope_f(kp, rk, 1, 1, 8, &pn[t], &c);
                CHECK_CLOSE(dot_f(rq, rk, 8), 2.105958668, 1e-5);
            }
        }
    }
}

/* <R_m q, R_n k> = q^T R_{n-m} k (double) for random q, k at positions up to 5000. */
static void test_rope_relative_large_positions(void **state)
{
    (void)state;
    const int Dh = 64, rds[3] = {64, 48, 16};
    /* the last pair, m - n = 3 at 2^24 + 1, is where a float angle would be off by radians */
    const int pm[] = {3, 5000, 4999, 2503, 1234, 7, 4000, 0, 4500, 16777217};
    const int pn[] = {0, 4997, 4996, 2500, 1237, 4010, 4013, 4997, 4500, 16777214};
    enum { NP = sizeof pm / sizeof pm[0] };
    float q[NP * 64], k[NP * 64], rq[NP * 64], rk[NP * 64], q0[64], k0[64];
    for (int j = 0; j < Dh; j++) {
        q0[j] = dfl_rng_normal(&g_rng);
        k0[j] = dfl_rng_normal(&g_rng);
    }
    for (int t = 0; t < NP; t++) {
        memcpy(q + t * Dh, q0, sizeof q0);
        memcpy(k + t * Dh, k0, sizeof k0);
    }
    for (int l = 0; l < 2; l++)
        for (int r = 0; r < 3; r++) {
            dfl_rope_cfg c = cfg_of(l ? DFL_ROPE_HALF : DFL_ROPE_INTERLEAVED, rds[r]);
            int rd = rds[r];
            rope_f(q, rq, 1, NP, Dh, pm, &c);
            rope_f(k, rk, 1, NP, Dh, pn, &c);
            double freq[32], ang[32], qd[64], kd[64], kr[64];
            dfl_rope_inv_freq(&c, Dh, freq);
            for (int j = 0; j < Dh; j++) {
                qd[j] = q0[j];
                kd[j] = k0[j];
            }
            for (int t = 0; t < NP; t++) {
                for (int i = 0; i < rd / 2; i++) ang[i] = (double)(pn[t] - pm[t]) * freq[i];
                rot_d(kd, kr, Dh, rd, c.layout, ang, NULL);
                double want = 0.0;
                for (int j = 0; j < Dh; j++) want += qd[j] * kr[j];
                CHECK_CLOSE(dot_f(rq + t * Dh, rk + t * Dh, Dh), want, 2e-4);
                /* rotation preserves the norm */
                CHECK_REL(dot_f(rq + t * Dh, rq + t * Dh, Dh), dot_f(q0, q0, Dh), 1e-5);
            }
            /* the first four position pairs (m - n = 3) give equal scores: check them directly */
            double s0 = dot_f(rq, rk, Dh);
            for (int t = 1; t < 4; t++) CHECK_CLOSE(dot_f(rq + t * Dh, rk + t * Dh, Dh), s0, 2e-4);
            CHECK_CLOSE(dot_f(rq + (NP - 1) * Dh, rk + (NP - 1) * Dh, Dh), s0, 2e-4);
            /* ... and a different offset gives a different score (the test can fail) */
            assert_true(fabs(dot_f(rq + 5 * Dh, rk + 5 * Dh, Dh) - s0) > 1e-3);
        }
}

/* half(P x) = P(interleaved(x)) elementwise, P the per-head permutation of the rotated lanes. */
static void test_rope_layout_permutation(void **state)
{
    (void)state;
    const int S = 3, T = 5, Dh = 12;
    const int pos[5] = {0, 1, 17, 2048, 4999};
    float x[180], px[180], yi[180], yh[180];
    for (int i = 0; i < S * T * Dh; i++) x[i] = dfl_rng_normal(&g_rng);
    const int rds[2] = {12, 8};
    for (int r = 0; r < 2; r++) {
        int rd = rds[r], perm[12];
        for (int j = 0; j < Dh; j++) perm[j] = j < rd / 2 ? 2 * j : j < rd ? 2 * (j - rd / 2) + 1 : j;
        for (int row = 0; row < S * T; row++)
            for (int j = 0; j < Dh; j++) px[row * Dh + j] = x[row * Dh + perm[j]];
        dfl_rope_cfg ci = cfg_of(DFL_ROPE_INTERLEAVED, rd), ch = cfg_of(DFL_ROPE_HALF, rd);
        rope_f(x, yi, S, T, Dh, pos, &ci);
        rope_f(px, yh, S, T, Dh, pos, &ch);
        for (int row = 0; row < S * T; row++)
            for (int j = 0; j < Dh; j++) CHECK_CLOSE(yh[row * Dh + j], yi[row * Dh + perm[j]], 1e-6);
        /* and the layouts really differ without the permutation */
        rope_f(x, yh, S, T, Dh, pos, &ch);
        double diff = 0.0;
        for (int i = 0; i < S * T * Dh; i++) diff += fabs(yh[i] - yi[i]);
        assert_true(diff > 1e-2);
    }
}

/* Reference 3.3 long-term decay curve (RoFormer sec. 3.4.3): (1/(d/2)) sum_{j=1..d/2} |S_j|,
 * S_j = sum_{i<j} e^{i k theta_i}, with the library's frequencies. */
static void test_rope_decay_curve(void **state)
{
    (void)state;
    const int dist[9] = {0, 1, 10, 25, 50, 100, 150, 200, 250};
    const double w64[9] = {16.5, 15.95, 8.81, 8.27, 5.73, 7.47, 4.22, 3.86, 3.67};
    const double w128[9] = {32.5, 31.54, 17.95, 14.24, 12.63, 10.23, 7.59, 7.24, 6.55};
    for (int r = 0; r < 2; r++) {
        int d = r ? 128 : 64;
        double f[64];
        dfl_rope_cfg c = cfg_of(DFL_ROPE_INTERLEAVED, 0);
        assert_int_equal(dfl_rope_inv_freq(&c, d, f), DFL_OK);
        for (int t = 0; t < 9; t++) {
            double re = 0.0, im = 0.0, tot = 0.0;
            for (int j = 0; j < d / 2; j++) {
                re += cos(dist[t] * f[j]);
                im += sin(dist[t] * f[j]);
                tot += sqrt(re * re + im * im);
            }
            CHECK_CLOSE(tot / (d / 2), r ? w128[t] : w64[t], 0.006);
        }
    }
}

/* ================================================================== scalings */

static void test_rope_scaling_frequencies(void **state)
{
    (void)state;
    const int D = 128;
    double f0[64], f[64];
    dfl_rope_cfg c = cfg_of(DFL_ROPE_HALF, 0);
    /* Every frequency table below against tests/rope_scaling_ref.h, written by
     * tools/rope_scaling_ref.py: the papers' formulas in Python decimal at 50 digits, through
     * wavelengths, sharing no code or rounding with src/tf/posenc.c. */
    assert_int_equal(dfl_rope_inv_freq(&c, D, f0), DFL_OK);
    for (int i = 0; i < 64; i++) CHECK_REL(f0[i], REF_PLAIN_128[i], 1e-13);
    /* PI (s = 4) */
    c.scaling = DFL_ROPE_SCALE_PI;
    c.factor = 4.0;
    assert_int_equal(dfl_rope_inv_freq(&c, D, f), DFL_OK);
    for (int i = 0; i < 64; i++) CHECK_REL(f[i], REF_PI_128_S4[i], 1e-13);
    /* NTK: base b s^(D/(D-2)); reference 3.3: 20 221, 40 890, 82 685 */
    c.scaling = DFL_ROPE_SCALE_NTK;
    const double s_ntk[3] = {2, 4, 8}, base_ntk[3] = {20221, 40890, 82685};
    for (int t = 0; t < 3; t++) {
        c.factor = s_ntk[t];
        assert_int_equal(dfl_rope_inv_freq(&c, D, f), DFL_OK);
        double base = pow(f[1], -D / 2.0); /* f[1] = b'^(-2/D) */
        CHECK_CLOSE(base, base_ntk[t], 0.6);
        CHECK_REL(f[0], 1.0, 1e-15);
        CHECK_CLOSE(dfl_rope_attn_factor(&c), 1.0, 0);
        if (s_ntk[t] == 8)
            for (int i = 0; i < 64; i++) CHECK_REL(f[i], REF_NTK_128_S8[i], 1e-12);
    }
    /* YaRN temperature: 0.1 ln s + 1 */
    c.scaling = DFL_ROPE_SCALE_YARN;
    c.orig_ctx = 4096;
    const double s_y[5] = {2, 4, 8, 16, 32}, t_y[5] = {1.0693, 1.1386, 1.2079, 1.2773, 1.3466};
    for (int t = 0; t < 5; t++) {
        c.factor = s_y[t];
        CHECK_CLOSE(dfl_rope_attn_factor(&c), t_y[t], 5e-5);
    }
    /* ggml corr_dims for n_dims 128, n_ctx_orig 4096, b 1e4, beta_fast 32, beta_slow 1:
     * raw 20.94, 45.03 -> [20, 46] */
    double lo = dfl_rope_yarn_corr_dim(128, 10000.0, 4096, 32.0), hi = dfl_rope_yarn_corr_dim(128, 10000.0, 4096, 1.0);
    CHECK_CLOSE(lo, 20.94, 0.005);
    CHECK_CLOSE(hi, 45.03, 0.005);
    assert_int_equal((int)floor(lo), 20);
    assert_int_equal((int)ceil(hi), 46);
    /* YaRN frequencies (L 4096, alpha 1, beta 32, s 16) against the fixture: pairs up to the ggml
     * corr_dim(32) = 20 keep theta_i, pairs from corr_dim(1) = 46 on get theta_i / s, and the 25
     * between lie strictly inside the ramp (the mid-ramp values are the ones a wrong ramp variable,
     * e.g. ggml's pair-index ramp, would change). */
    c.factor = 16.0;
    assert_int_equal(dfl_rope_inv_freq(&c, D, f), DFL_OK);
    int inside = 0;
    for (int i = 0; i < 64; i++) {
        CHECK_REL(f[i], REF_YARN_128_S16[i], 1e-12);
        if (i <= 20) CHECK_REL(f[i], REF_PLAIN_128[i], 1e-13);
        else if (i >= 46) CHECK_REL(f[i], REF_PI_128_S4[i] / 4.0, 1e-13);
        else inside += f[i] < 0.999 * REF_PLAIN_128[i] && f[i] > 1.001 * REF_PLAIN_128[i] / 16.0;
    }
    assert_int_equal(inside, 25);
    /* YaRN with other settings (the lm flags --rotary-dim 32 --rope-theta 500 --rope-factor 4
     * --yarn-alpha 0.5 --yarn-beta 8 --rope-orig-ctx 64) on a 64-lane head */
    {
        dfl_rope_cfg y = cfg_of(DFL_ROPE_INTERLEAVED, 32);
        y.theta = 500.0;
        y.scaling = DFL_ROPE_SCALE_YARN;
        y.factor = 4.0;
        y.orig_ctx = 64;
        y.yarn_alpha = 0.5;
        y.yarn_beta = 8.0;
        double fy[16];
        assert_int_equal(dfl_rope_inv_freq(&y, 64, fy), DFL_OK);
        for (int i = 0; i < 16; i++) CHECK_REL(fy[i], REF_YARN_32_S4[i], 1e-12);
    }
    /* dynamic NTK: factor max(1, l'/L) */
    {
        dfl_rope_cfg b0 = cfg_of(DFL_ROPE_HALF, 0), d1, d2;
        b0.orig_ctx = 256;
        d1 = dfl_rope_dynamic_ntk(&b0, 200);
        d2 = dfl_rope_dynamic_ntk(&b0, 1024);
        assert_int_equal(d1.scaling, DFL_ROPE_SCALE_NTK);
        CHECK_CLOSE(d1.factor, 1.0, 0);
        CHECK_CLOSE(d2.factor, 4.0, 0);
        assert_int_equal(dfl_rope_inv_freq(&d2, D, f), DFL_OK);
        CHECK_CLOSE(pow(f[1], -D / 2.0), 40890, 0.6);
        assert_int_equal(dfl_rope_inv_freq(&d1, D, f), DFL_OK);
        for (int i = 0; i < 64; i++) CHECK_REL(f[i], f0[i], 1e-13);
    }
    /* the YaRN table scales cos and sin by the temperature factor: |R x| = a |x| */
    float x[128], y[128];
    for (int j = 0; j < 128; j++) x[j] = dfl_rng_normal(&g_rng);
    int pos = 3000;
    rope_f(x, y, 1, 1, 128, &pos, &c);
    CHECK_REL(sqrt(dot_f(y, y, 128)), (0.1 * log(16.0) + 1.0) * sqrt(dot_f(x, x, 128)), 1e-5);
    /* PI at position m equals plain RoPE at m / s (here m = 4 * 750) */
    c = cfg_of(DFL_ROPE_INTERLEAVED, 0);
    float y2[128];
    int p2 = 750;
    rope_f(x, y2, 1, 1, 128, &p2, &c);
    c.scaling = DFL_ROPE_SCALE_PI;
    c.factor = 4.0;
    rope_f(x, y, 1, 1, 128, &pos, &c);
    for (int j = 0; j < 128; j++) CHECK_CLOSE(y[j], y2[j], 2e-6);
}

/* ================================================================== xPos, 2-D */

static void test_xpos(void **state)
{
    (void)state;
    const int Dh = 16;
    for (int l = 0; l < 2; l++)
        for (int r = 0; r < 2; r++) {
            int rd = r ? 8 : 16;
            dfl_rope_cfg c = cfg_of(l ? DFL_ROPE_HALF : DFL_ROPE_INTERLEAVED, rd);
            dfl_ctx *ctx = dfl_ctx_new();
            /* unit vector on each pair (lane a): rotated norm = zeta_i^(m/512) (pitfall 1) */
            int sh[3] = {1, rd / 2, Dh}, pos[8];
            dfl_tensor *e = dfl_tensor_zeros(ctx, 3, sh);
            for (int i = 0; i < rd / 2; i++) {
                int a, b;
                pair_lanes(c.layout, rd, i, &a, &b);
                e->data[i * Dh + a] = 1.0f;
                pos[i] = 700 + 300 * i;
            }
            dfl_tensor *y = dfl_xpos(ctx, e, pos, &c, 0, 0), *yk = dfl_xpos(ctx, e, pos, &c, 512, 1);
            assert_non_null(y);
            assert_non_null(yk);
            for (int i = 0; i < rd / 2; i++) {
                double zeta = (2.0 * i / rd + 0.4) / 1.4;
                CHECK_REL(sqrt(dot_f(y->data + i * Dh, y->data + i * Dh, Dh)), pow(zeta, pos[i] / 512.0), 1e-5);
                CHECK_REL(sqrt(dot_f(yk->data + i * Dh, yk->data + i * Dh, Dh)), pow(zeta, -pos[i] / 512.0), 1e-5);
            }
            /* q.k = sum_i zeta_i^((m-n)/512) (pair i of q^T R_{n-m} k): depends on m - n only */
            float q[16], k[16];
            for (int j = 0; j < Dh; j++) {
                q[j] = dfl_rng_normal(&g_rng);
                k[j] = dfl_rng_normal(&g_rng);
            }
            const int pm[3] = {10, 4010, 2000}, pn[3] = {3, 4003, 1993};
            double freq[8];
            dfl_rope_inv_freq(&c, Dh, freq);
            for (int t = 0; t < 3; t++) {
                int s1[3] = {1, 1, Dh};
                dfl_tensor *qt = dfl_tensor_wrap(ctx, q, 3, s1), *kt = dfl_tensor_wrap(ctx, k, 3, s1);
                dfl_tensor *xq = dfl_xpos(ctx, qt, &pm[t], &c, 512, 0), *xk = dfl_xpos(ctx, kt, &pn[t], &c, 512, 1);
                double want = 0.0;
                for (int i = 0; i < rd / 2; i++) {
                    int a, b;
                    pair_lanes(c.layout, rd, i, &a, &b);
                    double ang = (pn[t] - pm[t]) * freq[i], zeta = (2.0 * i / rd + 0.4) / 1.4;
                    double ka = k[a] * cos(ang) - k[b] * sin(ang), kb = k[a] * sin(ang) + k[b] * cos(ang);
                    want += pow(zeta, (pm[t] - pn[t]) / 512.0) * (q[a] * ka + q[b] * kb);
                }
                for (int j = rd; j < Dh; j++) want += (double)q[j] * k[j];
                CHECK_CLOSE(dot_f(xq->data, xk->data, Dh), want, 1e-4);
            }
            dfl_ctx_free(ctx);
        }
}

static void test_rope_2d(void **state)
{
    (void)state;
    const int Dh = 16, T = 6;
    const int row[6] = {0, 3, 40, 43, 7, 0}, col[6] = {0, 5, 61, 66, 2, 0};
    float x[96], y[96], y1[96];
    for (int i = 0; i < T * Dh; i++) x[i] = dfl_rng_normal(&g_rng);
    for (int l = 0; l < 2; l++) {
        dfl_rope_cfg c = cfg_of(l ? DFL_ROPE_HALF : DFL_ROPE_INTERLEAVED, 0);
        dfl_ctx *ctx = dfl_ctx_new();
        int sh[3] = {1, T, Dh};
        /* even tokens carry the same q vector, odd tokens the same k vector */
        float xs[96];
        for (int t = 0; t < T; t++) memcpy(xs + t * Dh, x + (t & 1) * Dh, Dh * sizeof(float));
        dfl_tensor *yt = dfl_rope_2d(ctx, dfl_tensor_wrap(ctx, xs, 3, sh), row, col, &c);
        assert_non_null(yt);
        /* (0,0)-(3,5) and (40,61)-(43,66): same (drow, dcol) -> same score */
        double s1 = dot_f(yt->data + 0 * Dh, yt->data + 1 * Dh, Dh);
        double s2 = dot_f(yt->data + 2 * Dh, yt->data + 3 * Dh, Dh);
        CHECK_CLOSE(s1, s2, 1e-4);
        assert_true(fabs(dot_f(yt->data + 4 * Dh, yt->data + 1 * Dh, Dh) - s1) > 1e-3);
        dfl_ctx_free(ctx);
    }
    /* interleaved, col = 0: lanes 0..7 are 1-D RoPE (rd 8, theta_j = b^(-2j/8)) at row, lanes
     * 8..15 unchanged; row = 0: the reverse on lanes 8..15 */
    dfl_rope_cfg c = cfg_of(DFL_ROPE_INTERLEAVED, 0), c1 = cfg_of(DFL_ROPE_INTERLEAVED, 8);
    int zero[6] = {0};
    dfl_ctx *ctx = dfl_ctx_new();
    int sh[3] = {1, T, Dh};
    dfl_tensor *yr = dfl_rope_2d(ctx, dfl_tensor_wrap(ctx, x, 3, sh), row, zero, &c);
    dfl_tensor *yc = dfl_rope_2d(ctx, dfl_tensor_wrap(ctx, x, 3, sh), zero, col, &c);
    rope_f(x, y1, 1, T, Dh, row, &c1);
    for (int i = 0; i < T * Dh; i++) CHECK_CLOSE(yr->data[i], y1[i], 1e-6);
    /* column half: move lanes 8..15 to the front, rotate by col, compare */
    float xsw[96];
    for (int t = 0; t < T; t++)
        for (int j = 0; j < Dh; j++) xsw[t * Dh + j] = x[t * Dh + (j + 8) % 16];
    rope_f(xsw, y, 1, T, Dh, col, &c1);
    for (int t = 0; t < T; t++)
        for (int j = 0; j < Dh; j++) CHECK_CLOSE(yc->data[t * Dh + (j + 8) % 16], y[t * Dh + j], 1e-6);
    /* rd not a multiple of 4 */
    c.rot_dim = 6;
    assert_null(dfl_rope_2d(ctx, dfl_tensor_wrap(ctx, x, 3, sh), row, col, &c));
    assert_non_null(strstr(dfl_last_error(), "6"));
    dfl_ctx_free(ctx);
}

/* ================================================================== tables */

static void test_sinusoidal_and_learned(void **state)
{
    (void)state;
    float pe[2 * 8];
    assert_int_equal(dfl_sinusoidal_table(pe, 2, 8, 0), DFL_OK);
    const double want[8] = {0.841471, 0.540302, 0.099833, 0.995004, 0.010000, 0.999950, 0.001000, 1.000000};
    for (int j = 0; j < 8; j++) {
        CHECK_CLOSE(pe[8 + j], want[j], 1e-6);
        CHECK_CLOSE(pe[j], j & 1 ? 1.0 : 0.0, 0);
    }
    /* far positions against the closed form (double) */
    float big[3 * 64];
    assert_int_equal(dfl_sinusoidal_table(big, 3, 64, 4998), DFL_OK);
    for (int t = 0; t < 3; t++)
        for (int i = 0; i < 32; i++) {
            double a = (4998.0 + t) / pow(10000.0, 2.0 * i / 64);
            CHECK_CLOSE(big[t * 64 + 2 * i], sin(a), 1e-7);
            CHECK_CLOSE(big[t * 64 + 2 * i + 1], cos(a), 1e-7);
        }
    assert_int_equal(dfl_sinusoidal_table(pe, 2, 7, 0), DFL_ERR_ARG);
    assert_non_null(strstr(dfl_last_error(), "7"));

    /* learned: y = x + P[offset + t]; a sequence past the table names both lengths */
    dfl_ctx *ctx = dfl_ctx_new();
    int shP[2] = {10, 4}, shx[3] = {2, 3, 4};
    dfl_tensor *P = dfl_tensor_new(2, shP, 1);
    for (int i = 0; i < 40; i++) P->data[i] = (float)i;
    dfl_tensor *x = dfl_tensor_zeros(ctx, 3, shx);
    dfl_tensor *y = dfl_learned_pos_add(ctx, x, P, 7);
    assert_non_null(y);
    CHECK_CLOSE(y->data[12 + 5], (7 + 1) * 4 + 1, 0); /* sample 1, t 1, d 1 */
    assert_null(dfl_learned_pos_add(ctx, x, P, 8));
    assert_non_null(strstr(dfl_last_error(), "exceeds the learned table of 10"));
    assert_non_null(strstr(dfl_last_error(), "of 3 positions"));
    int shx2[3] = {1, 11, 4};
    assert_null(dfl_learned_pos_add(ctx, dfl_tensor_zeros(ctx, 3, shx2), P, 0));
    assert_non_null(strstr(dfl_last_error(), "11"));
    dfl_tensor_free(P);
    dfl_ctx_free(ctx);
}

static void test_alibi(void **state)
{
    (void)state;
    float s[64];
    assert_int_equal(dfl_alibi_slopes(8, s), DFL_OK);
    for (int h = 0; h < 8; h++) CHECK_REL(s[h], pow(0.5, h + 1), 1e-7);
    assert_int_equal(dfl_alibi_slopes(12, s), DFL_OK);
    const double w12[12] = {0.5, 0.25, 0.125, 0.0625, 0.03125, 0.015625, 0.0078125, 0.00390625,
                            0.70711, 0.35355, 0.17678, 0.08839};
    for (int h = 0; h < 12; h++) CHECK_CLOSE(s[h], w12[h], 6e-6);
    /* ggml's closed form for every head count 1..64 */
    for (int H = 1; H <= 64; H++) {
        assert_int_equal(dfl_alibi_slopes(H, s), DFL_OK);
        int nl = 1 << (int)floor(log2((double)H));
        double m0 = pow(2.0, -8.0 / nl), m1 = pow(2.0, -4.0 / nl);
        for (int h = 0; h < H; h++) CHECK_REL(s[h], h < nl ? pow(m0, h + 1) : pow(m1, 2 * (h - nl) + 1), 1e-6);
    }
    assert_int_equal(dfl_alibi_slopes(0, s), DFL_ERR_ARG);
    /* bias (H, Tq, Tk) = -slope |q_offset + i - j| */
    dfl_ctx *ctx = dfl_ctx_new();
    dfl_tensor *b = dfl_alibi_bias(ctx, 12, 3, 7, 4);
    assert_non_null(b);
    assert_int_equal(b->shape[0], 12);
    assert_int_equal(b->shape[1], 3);
    assert_int_equal(b->shape[2], 7);
    dfl_alibi_slopes(12, s);
    for (int h = 0; h < 12; h++)
        for (int i = 0; i < 3; i++)
            for (int j = 0; j < 7; j++) CHECK_REL(b->data[(h * 3 + i) * 7 + j], -s[h] * abs(4 + i - j), 1e-7);
    CHECK_CLOSE(b->data[(2 * 3 + 2) * 7 + 6], 0.0, 0); /* the diagonal */
    dfl_ctx_free(ctx);
}

static void test_t5_buckets(void **state)
{
    (void)state;
    const int rel[19] = {0, -1, -7, -8, -11, -12, -16, -20, -24, -32, -46, -64, -91, -128, -1000, 1, 8, 16, 128};
    const int bi[19] = {0, 1, 7, 8, 8, 9, 10, 10, 11, 12, 13, 14, 15, 15, 15, 17, 24, 26, 31};
    const int ca[19] = {0, 1, 7, 8, 11, 12, 16, 17, 19, 21, 24, 26, 29, 31, 31, 0, 0, 0, 0};
    for (int t = 0; t < 19; t++) {
        if (dfl_t5_bucket(rel[t], 1, 32, 128) != bi[t])
            fail_msg("bidirectional bucket of rel %d: got %d, want %d", rel[t], dfl_t5_bucket(rel[t], 1, 32, 128), bi[t]);
        if (dfl_t5_bucket(rel[t], 0, 32, 128) != ca[t])
            fail_msg("causal bucket of rel %d: got %d, want %d", rel[t], dfl_t5_bucket(rel[t], 0, 32, 128), ca[t]);
    }
    /* monotone in |rel| and in range over a long sweep */
    for (int bid = 0; bid < 2; bid++) {
        int prev = -1;
        for (int d = 0; d < 6000; d++) {
            int bk = dfl_t5_bucket(-d, bid, 32, 128);
            assert_true(bk >= prev && bk < (bid ? 16 : 32));
            prev = bk;
        }
    }
    assert_int_equal(dfl_t5_bucket(0, 1, 31, 128), -1);
    /* bias gathers table[bucket, h] */
    dfl_ctx *ctx = dfl_ctx_new();
    int sh[2] = {32, 3};
    dfl_tensor *tab = dfl_tensor_new(2, sh, 1);
    for (int i = 0; i < 96; i++) tab->data[i] = (float)i;
    dfl_tensor *b = dfl_t5_bias(ctx, tab, 4, 9, 5, 1, 128);
    assert_non_null(b);
    for (int h = 0; h < 3; h++)
        for (int i = 0; i < 4; i++)
            for (int j = 0; j < 9; j++)
                CHECK_CLOSE(b->data[(h * 4 + i) * 9 + j], dfl_t5_bucket(j - 5 - i, 1, 32, 128) * 3 + h, 0);
    dfl_tensor_free(tab);
    dfl_ctx_free(ctx);
}

static void test_bad_input(void **state)
{
    (void)state;
    dfl_ctx *ctx = dfl_ctx_new();
    int sh[4] = {1, 2, 3, 8}, sho[4] = {1, 2, 3, 7};
    dfl_tensor *x = dfl_tensor_zeros(ctx, 4, sh), *xo = dfl_tensor_zeros(ctx, 4, sho);
    int pos[3] = {0, 1, 2};
    dfl_rope_cfg c = dfl_rope_default();
    c.rot_dim = 5;
    assert_null(dfl_rope(ctx, x, pos, &c));
    assert_non_null(strstr(dfl_last_error(), "rotary dimension 5"));
    c.rot_dim = 10;
    assert_null(dfl_rope(ctx, x, pos, &c));
    assert_non_null(strstr(dfl_last_error(), "rotary dimension 10 exceeds the head dimension 8"));
    c.rot_dim = 0;
    assert_null(dfl_rope(ctx, xo, pos, &c));
    assert_non_null(strstr(dfl_last_error(), "head dimension 7"));
    c.rot_dim = 6; /* an odd head with an even partial rotary dim is fine */
    assert_non_null(dfl_rope(ctx, xo, pos, &c));
    c.rot_dim = 0;
    assert_null(dfl_rope(ctx, x, NULL, &c));
    c.scaling = DFL_ROPE_SCALE_YARN;
    c.factor = 4;
    assert_null(dfl_rope(ctx, x, pos, &c));
    assert_non_null(strstr(dfl_last_error(), "orig_ctx"));
    c.orig_ctx = 64;
    assert_non_null(dfl_rope(ctx, x, pos, &c));
    c.factor = -1;
    assert_null(dfl_rope(ctx, x, pos, &c));
    assert_non_null(strstr(dfl_last_error(), "-1"));
    c = dfl_rope_default();
    c.layout = (dfl_rope_layout)7;
    assert_null(dfl_rope(ctx, x, pos, &c));
    c = dfl_rope_default();
    c.theta = 0;
    assert_null(dfl_rope(ctx, x, pos, &c));
    c = dfl_rope_default();
    c.scaling = DFL_ROPE_SCALE_NTK;
    c.rot_dim = 2;
    c.factor = 2;
    assert_null(dfl_rope(ctx, x, pos, &c));
    assert_null(dfl_rope(ctx, NULL, pos, &c)); /* NULL propagates */
    /* linear attention shapes */
    int shv[4] = {1, 2, 4, 8};
    assert_null(dfl_linear_attention(ctx, x, x, dfl_tensor_zeros(ctx, 4, shv), 1, NULL, NULL));
    assert_non_null(strstr(dfl_last_error(), "linear attention"));
    /* Shaw even table */
    int sha[2] = {4, 8};
    assert_null(dfl_shaw_bias(ctx, x, dfl_tensor_zeros(ctx, 2, sha), 3, 0, 1.0f));
    dfl_ctx_free(ctx);
}

/* ================================================================== linear attention */

static double phi_d(double x) { return x > 0 ? x + 1.0 : exp(x); }

typedef struct {
    int S, T, Dk, Dv, causal;
    const dfl_rope_cfg *rope;
    const int *pos;
} la_arg;

/* Direct O(T^2) evaluation of RoFormer Eq. 19 (or Katharopoulos Eq. 6 without rope), double. */
static void la_direct(double *const *in, double *out, const void *arg)
{
    const la_arg *A = arg;
    const double *q = in[0], *k = in[1], *v = in[2];
    int T = A->T, Dk = A->Dk, Dv = A->Dv, rd = A->rope ? dfl_rope_rot_dim(A->rope, Dk) : 0;
    double freq[64] = {0}, ang[64], fq[64], fk[64], rq[64], rk[64];
    if (A->rope) dfl_rope_inv_freq(A->rope, Dk, freq);
    for (int s = 0; s < A->S; s++)
        for (int m = 0; m < T; m++) {
            const double *qm = q + ((size_t)s * T + m) * Dk;
            for (int i = 0; i < Dk; i++) fq[i] = phi_d(qm[i]);
            for (int i = 0; i < rd / 2; i++) ang[i] = A->pos[m] * freq[i];
            rot_d(fq, rq, Dk, rd, A->rope ? A->rope->layout : 0, ang, NULL);
            double den = 0.0, *o = out + ((size_t)s * T + m) * Dv;
            for (int j = 0; j < Dv; j++) o[j] = 0.0;
            int nmax = A->causal ? m + 1 : T;
            for (int n = 0; n < nmax; n++) {
                const double *kn = k + ((size_t)s * T + n) * Dk, *vn = v + ((size_t)s * T + n) * Dv;
                for (int i = 0; i < Dk; i++) fk[i] = phi_d(kn[i]);
                for (int i = 0; i < rd / 2; i++) ang[i] = A->pos[n] * freq[i];
                rot_d(fk, rk, Dk, rd, A->rope ? A->rope->layout : 0, ang, NULL);
                double num = 0.0, d = 0.0;
                for (int i = 0; i < Dk; i++) {
                    num += rq[i] * rk[i];
                    d += fq[i] * fk[i];
                }
                den += d;
                for (int j = 0; j < Dv; j++) o[j] += num * vn[j];
            }
            for (int j = 0; j < Dv; j++) o[j] /= den;
        }
}

/* ================================================================== gradient checks */

typedef dfl_tensor *(*op_fn)(dfl_ctx *ctx, dfl_tensor **in, const void *arg);
typedef void (*ref_fn)(double *const *in, double *out, const void *arg);

typedef struct {
    const char *name;
    int nin;
    int ndim[4];
    int shape[4][4];
    int param[4]; /* heap parameter (tables) instead of arena data */
    float scale[4];
    float offset[4];
} gc_case;

typedef struct {
    ref_fn ref;
    double *const *in;
    double *out;
    const void *arg;
} fd_eval;

static void fd_run(void *u)
{
    const fd_eval *e = u;
    e->ref(e->in, e->out, e->arg);
}

/* Forward against the double reference (rel 2e-5), then backward with a random cotangent against
 * central differences (h 1e-6) of sum(r * ref(x)) for every input (rel 1e-3). */
static void gradcheck(const gc_case *c, op_fn op, ref_fn ref, const void *arg)
{
    dfl_ctx *ctx = dfl_ctx_new();
    dfl_tensor *in[4] = {0};
    double *xd[4] = {0};
    float *raw[4] = {0};
    for (int i = 0; i < c->nin; i++) {
        size_t n = dfl_shape_numel(c->ndim[i], c->shape[i]);
        float sc = c->scale[i] ? c->scale[i] : 1.0f;
        if (c->param[i]) {
            in[i] = dfl_tensor_new(c->ndim[i], c->shape[i], 1);
        } else {
            raw[i] = malloc(n * sizeof(float));
            in[i] = dfl_tensor_wrap(ctx, raw[i], c->ndim[i], c->shape[i]);
            in[i]->requires_grad = 1;
        }
        assert_non_null(in[i]);
        xd[i] = malloc(n * sizeof(double));
        for (size_t j = 0; j < n; j++) {
            in[i]->data[j] = sc * dfl_rng_normal(&g_rng) + c->offset[i];
            xd[i][j] = in[i]->data[j];
        }
    }
    dfl_tensor *out = op(ctx, in, arg);
    if (!out) fail_msg("%s: op failed: %s", c->name, dfl_last_error());
    size_t no = out->n;
    double *yd = malloc(no * sizeof(double));
    ref(xd, yd, arg);
    double maxref = 0.0, maxd = 0.0;
    for (size_t j = 0; j < no; j++) {
        maxref = fmax(maxref, fabs(yd[j]));
        maxd = fmax(maxd, fabs(out->data[j] - yd[j]));
    }
    if (!(maxd <= 2e-5 * (maxref + 1e-2))) fail_msg("%s: forward differs from the reference by %g (max %g)", c->name, maxd, maxref);
    float *r = malloc(no * sizeof(float));
    for (size_t j = 0; j < no; j++) r[j] = dfl_rng_normal(&g_rng);
    assert_int_equal(dfl_backward_vjp(ctx, out, r), DFL_OK);
    const double h = 1e-6;
    for (int i = 0; i < c->nin; i++) {
        size_t n = dfl_shape_numel(c->ndim[i], c->shape[i]);
        assert_non_null(in[i]->grad);
        double maxg = 0.0, maxe = 0.0;
        size_t at = 0;
        double *num = malloc(n * sizeof(double));
        fd_eval ev = {ref, xd, yd, arg};
        dfl_fd_vjp(xd[i], n, h, fd_run, &ev, yd, r, no, num);
        for (size_t j = 0; j < n; j++) {
            maxg = fmax(maxg, fabs(num[j]));
            double e = fabs(in[i]->grad[j] - num[j]);
            if (e > maxe) { maxe = e; at = j; }
        }
        if (!(maxe <= 1e-3 * (maxg + 1e-6)))
            fail_msg("%s: d/d input %d: worst [%zu] tape %.9g vs numeric %.9g (max %g)", c->name, i, at,
                     (double)in[i]->grad[at], num[at], maxg);
        free(num);
    }
    for (int i = 0; i < c->nin; i++) {
        if (c->param[i]) dfl_tensor_free(in[i]);
        free(raw[i]);
        free(xd[i]);
    }
    free(yd);
    free(r);
    dfl_ctx_free(ctx);
}

/* ---- RoPE family: op and reference through per-(token, pair) angle and scale */

typedef struct {
    int kind; /* 0 rope, 1 xpos q, 2 xpos k, 3 rope_2d, 4 rope with caller-built tables */
    dfl_rope_cfg cfg;
    int T, Dh;
    const int *pos, *col;
} rope_arg;

static dfl_tensor *op_rope(dfl_ctx *ctx, dfl_tensor **in, const void *arg)
{
    const rope_arg *A = arg;
    switch (A->kind) {
    case 1: return dfl_xpos(ctx, in[0], A->pos, &A->cfg, 64.0, 0);
    case 2: return dfl_xpos(ctx, in[0], A->pos, &A->cfg, 64.0, 1);
    case 3: return dfl_rope_2d(ctx, in[0], A->pos, A->col, &A->cfg);
    case 4: {
        int rd = dfl_rope_rot_dim(&A->cfg, A->Dh);
        float *ct = dfl_arena_alloc(ctx, (size_t)A->T * rd / 2 * sizeof(float));
        float *st = dfl_arena_alloc(ctx, (size_t)A->T * rd / 2 * sizeof(float));
        if (dfl_rope_tables(&A->cfg, A->Dh, A->pos, A->T, ct, st) != DFL_OK) return NULL;
        return dfl_rope_with_tables(ctx, in[0], ct, st, rd, A->cfg.layout);
    }
    default: return dfl_rope(ctx, in[0], A->pos, &A->cfg);
    }
}

static void ref_rope(double *const *in, double *out, const void *arg)
{
    const rope_arg *A = arg;
    int Dh = A->Dh, T = A->T, rd = dfl_rope_rot_dim(&A->cfg, Dh), half = rd / 2;
    double freq[64], ang[64], sc[64];
    dfl_rope_inv_freq(&A->cfg, Dh, freq);
    double att = dfl_rope_attn_factor(&A->cfg);
    for (int s = 0; s < 2; s++) /* the cases use 2 leading sequences (B H = 2) */
        for (int t = 0; t < T; t++) {
            for (int i = 0; i < half; i++) {
                double zeta = (2.0 * i / rd + 0.4) / 1.4;
                sc[i] = att;
                ang[i] = A->pos[t] * freq[i];
                if (A->kind == 1) sc[i] *= pow(zeta, A->pos[t] / 64.0);
                if (A->kind == 2) sc[i] *= pow(zeta, -A->pos[t] / 64.0);
                if (A->kind == 3) {
                    int q = rd / 4, j = i < q ? i : i - q;
                    ang[i] = (i < q ? A->pos[t] : A->col[t]) * pow(A->cfg.theta, -2.0 * j / half);
                }
            }
            size_t o = ((size_t)s * T + t) * Dh;
            rot_d(in[0] + o, out + o, Dh, rd, A->cfg.layout, ang, sc);
        }
}

static void test_grad_rope_family(void **state)
{
    (void)state;
    const int T = 4, pos[4] = {0, 7, 1999, 4999}, pos2[4] = {-30, -1, 2, 40}, col[4] = {3, 0, 9, 12};
    for (int kind = 0; kind < 5; kind++)
        for (int l = 0; l < 2; l++)
            for (int part = 0; part < 3; part++) {
                rope_arg A;
                A.kind = kind;
                A.cfg = cfg_of(l ? DFL_ROPE_HALF : DFL_ROPE_INTERLEAVED, part == 1 ? (kind == 3 ? 8 : 6) : 0);
                A.T = T;
                A.Dh = 10 + (kind == 3 ? 2 : 0); /* rope_2d needs rd % 4 == 0 */
                A.pos = kind == 1 || kind == 2 ? pos2 : pos;
                A.col = col;
                if (part == 2 && kind != 3) { /* with YaRN scaling (temperature != 1) */
                    A.cfg.scaling = DFL_ROPE_SCALE_YARN;
                    A.cfg.factor = 8.0;
                    A.cfg.orig_ctx = 256;
                }
                char name[96];
                snprintf(name, sizeof name, "%s %s %s", (const char *[]){"rope", "xpos_q", "xpos_k", "rope_2d", "rope_tables"}[kind],
                         l ? "half" : "interleaved", (const char *[]){"full", "partial", "yarn"}[part]);
                gc_case c = {name, 1, {4}, {{1, 2, T, A.Dh}}, {0}, {1}, {0}};
                gradcheck(&c, op_rope, ref_rope, &A);
            }
}

/* ---- T5 bias */

typedef struct { int Tq, Tk, off, bi, M, H, B; } t5_arg;

static dfl_tensor *op_t5(dfl_ctx *ctx, dfl_tensor **in, const void *arg)
{
    const t5_arg *A = arg;
    return dfl_t5_bias(ctx, in[0], A->Tq, A->Tk, A->off, A->bi, A->M);
}

static void ref_t5(double *const *in, double *out, const void *arg)
{
    const t5_arg *A = arg;
    for (int h = 0; h < A->H; h++)
        for (int i = 0; i < A->Tq; i++)
            for (int j = 0; j < A->Tk; j++) {
                /* bucket from the reference rule, written out again here */
                int n = (A->off + i) - j, B = A->bi ? A->B / 2 : A->B, off = 0;
                if (A->bi) {
                    off = n < 0 ? B : 0;
                    n = abs(n);
                } else if (n < 0) {
                    n = 0;
                }
                int e = B / 2, v = n;
                if (n >= e) {
                    v = e + (int)floor(log((double)n / e) / log((double)A->M / e) * (B - e));
                    if (v > B - 1) v = B - 1;
                }
                out[((size_t)h * A->Tq + i) * A->Tk + j] = in[0][(size_t)(off + v) * A->H + h];
            }
}

static void test_grad_t5(void **state)
{
    (void)state;
    for (int bi = 0; bi < 2; bi++) {
        t5_arg A = {5, 40, 30, bi, 20, 3, 8};
        gc_case c = {bi ? "t5 bidirectional" : "t5 causal", 1, {2}, {{8, 3}}, {1}, {1}, {0}};
        gradcheck(&c, op_t5, ref_t5, &A);
    }
}

/* ---- Shaw */

typedef struct { int S, Tq, Tk, Dh, R, off; float scale; } shaw_arg;

static inline int clip_idx(int i, int j, int off, int k)
{
    int d = j - (off + i);
    return (d < -k ? -k : d > k ? k : d) + k;
}

static dfl_tensor *op_shaw_bias(dfl_ctx *ctx, dfl_tensor **in, const void *arg)
{
    const shaw_arg *A = arg;
    return dfl_shaw_bias(ctx, in[0], in[1], A->Tk, A->off, A->scale);
}

static void ref_shaw_bias(double *const *in, double *out, const void *arg)
{
    const shaw_arg *A = arg;
    int k = (A->R - 1) / 2;
    for (int s = 0; s < A->S; s++)
        for (int i = 0; i < A->Tq; i++)
            for (int j = 0; j < A->Tk; j++) {
                const double *q = in[0] + ((size_t)s * A->Tq + i) * A->Dh, *a = in[1] + (size_t)clip_idx(i, j, A->off, k) * A->Dh;
                double d = 0.0;
                for (int c = 0; c < A->Dh; c++) d += q[c] * a[c];
                out[((size_t)s * A->Tq + i) * A->Tk + j] = A->scale * d;
            }
}

static dfl_tensor *op_shaw_values(dfl_ctx *ctx, dfl_tensor **in, const void *arg)
{
    const shaw_arg *A = arg;
    return dfl_shaw_values(ctx, in[0], in[1], A->off);
}

static void ref_shaw_values(double *const *in, double *out, const void *arg)
{
    const shaw_arg *A = arg;
    int k = (A->R - 1) / 2;
    for (int s = 0; s < A->S; s++)
        for (int i = 0; i < A->Tq; i++) {
            double *o = out + ((size_t)s * A->Tq + i) * A->Dh;
            for (int c = 0; c < A->Dh; c++) o[c] = 0.0;
            for (int j = 0; j < A->Tk; j++) {
                double p = in[0][((size_t)s * A->Tq + i) * A->Tk + j];
                const double *a = in[1] + (size_t)clip_idx(i, j, A->off, k) * A->Dh;
                for (int c = 0; c < A->Dh; c++) o[c] += p * a[c];
            }
        }
}

static void test_grad_shaw(void **state)
{
    (void)state;
    shaw_arg A = {4, 5, 9, 6, 7, 3, 0.4f}; /* k = 3: distances -8..5 exercise both clips */
    gc_case cb = {"shaw bias", 2, {4, 2}, {{2, 2, 5, 6}, {7, 6}}, {0, 1}, {1, 1}, {0}};
    gradcheck(&cb, op_shaw_bias, ref_shaw_bias, &A);
    gc_case cv = {"shaw values", 2, {4, 2}, {{2, 2, 5, 9}, {7, 6}}, {0, 1}, {1, 1}, {0}};
    gradcheck(&cv, op_shaw_values, ref_shaw_values, &A);
}

/* ---- biases inside dfl_attention (tf.h): the conventions (query offset Tk - Tq, bias shapes,
 * unscaled bias) agree with the direct formula; gradients reach q, k, v and the tables. */

typedef struct { int B, H, Tq, Tk, D, R, causal, kind; } ab_arg; /* kind 0: Shaw, 1: T5 + ALiBi */

static dfl_tensor *op_attn_bias(dfl_ctx *ctx, dfl_tensor **in, const void *arg)
{
    const ab_arg *A = arg;
    dfl_attn_opts o;
    memset(&o, 0, sizeof o);
    o.causal = A->causal;
    int off = A->Tk - A->Tq;
    if (A->kind == 0)
        o.bias = dfl_shaw_bias(ctx, in[0], in[3], A->Tk, off, 1.0f / sqrtf((float)A->D));
    else
        o.bias = dfl_add(ctx, dfl_t5_bias(ctx, in[3], A->Tq, A->Tk, off, !A->causal, 16),
                         dfl_alibi_bias(ctx, A->H, A->Tq, A->Tk, off));
    if (!o.bias) return NULL;
    return dfl_attention(ctx, in[0], in[1], in[2], &o);
}

static void ref_attn_bias(double *const *in, double *out, const void *arg)
{
    const ab_arg *A = arg;
    int D = A->D, off = A->Tk - A->Tq, k = (A->R - 1) / 2;
    float sl[16];
    dfl_alibi_slopes(A->H, sl);
    double s[64];
    for (int b = 0; b < A->B; b++)
        for (int h = 0; h < A->H; h++)
            for (int i = 0; i < A->Tq; i++) {
                size_t bh = (size_t)b * A->H + h;
                const double *q = in[0] + (bh * A->Tq + i) * D;
                double mx = -INFINITY, z = 0.0;
                int jmax = A->causal ? off + i + 1 : A->Tk;
                for (int j = 0; j < jmax; j++) {
                    const double *kj = in[1] + (bh * A->Tk + j) * D;
                    double e = 0.0;
                    for (int c = 0; c < D; c++) e += q[c] * kj[c];
                    e /= sqrt((double)D);
                    if (A->kind == 0) {
                        const double *a = in[3] + (size_t)clip_idx(i, j, off, k) * D;
                        double qa = 0.0;
                        for (int c = 0; c < D; c++) qa += q[c] * a[c];
                        e += qa / sqrt((double)D); /* Shaw: q (k + a)^T / sqrt(d) */
                    } else {
                        int bk = dfl_t5_bucket(j - (off + i), !A->causal, A->R, 16);
                        e += in[3][(size_t)bk * A->H + h] - (double)sl[h] * abs(off + i - j);
                    }
                    s[j] = e;
                    mx = fmax(mx, e);
                }
                for (int j = 0; j < jmax; j++) z += (s[j] = exp(s[j] - mx));
                double *o = out + (bh * A->Tq + i) * D;
                for (int c = 0; c < D; c++) o[c] = 0.0;
                for (int j = 0; j < jmax; j++)
                    for (int c = 0; c < D; c++) o[c] += s[j] / z * in[2][(bh * A->Tk + j) * D + c];
            }
}

static void test_biases_in_attention(void **state)
{
    (void)state;
    for (int kind = 0; kind < 2; kind++)
        for (int causal = 0; causal < 2; causal++) {
            /* Shaw: R = 5 (k = 2); T5: 8 buckets, max distance 16, table (8, H) */
            ab_arg A = {2, 2, 3, 6, 4, kind ? 8 : 5, causal, kind};
            char name[80];
            snprintf(name, sizeof name, "attention + %s (%s)", kind ? "T5 + ALiBi" : "Shaw", causal ? "causal" : "bidirectional");
            gc_case c = {name, 4, {4, 4, 4, 2}, {{2, 2, 3, 4}, {2, 2, 6, 4}, {2, 2, 6, 4}, {kind ? 8 : 5, kind ? 2 : 4}},
                         {0, 0, 0, 1}, {1, 1, 1, 1}, {0}};
            gradcheck(&c, op_attn_bias, ref_attn_bias, &A);
        }
}

/* ---- learned absolute */

static dfl_tensor *op_learned(dfl_ctx *ctx, dfl_tensor **in, const void *arg)
{
    return dfl_learned_pos_add(ctx, in[0], in[1], *(const int *)arg);
}

static void ref_learned(double *const *in, double *out, const void *arg)
{
    int off = *(const int *)arg; /* x (2, 3, 4), P (9, 4) */
    for (int s = 0; s < 2; s++)
        for (int t = 0; t < 3; t++)
            for (int d = 0; d < 4; d++) out[(s * 3 + t) * 4 + d] = in[0][(s * 3 + t) * 4 + d] + in[1][(off + t) * 4 + d];
}

static void test_grad_learned(void **state)
{
    (void)state;
    int off = 5;
    gc_case c = {"learned positions", 2, {3, 2}, {{2, 3, 4}, {9, 4}}, {0, 1}, {1, 1}, {0}};
    gradcheck(&c, op_learned, ref_learned, &off);
}

/* ---- linear attention */

static dfl_tensor *op_la(dfl_ctx *ctx, dfl_tensor **in, const void *arg)
{
    const la_arg *A = arg;
    return dfl_linear_attention(ctx, in[0], in[1], in[2], A->causal, A->rope, A->pos);
}

static void test_linear_attention(void **state)
{
    (void)state;
    /* forward against the direct O(T^2) formula at large positions, then gradients */
    const int pos[6] = {4990, 4991, 4992, 4993, 4994, 4995};
    for (int causal = 0; causal < 2; causal++)
        for (int r = 0; r < 4; r++) {
            dfl_rope_cfg rc = cfg_of(r == 2 ? DFL_ROPE_HALF : DFL_ROPE_INTERLEAVED, r == 3 ? 4 : 0);
            la_arg A = {4, 6, 8, 5, causal, r ? &rc : NULL, pos};
            char name[80];
            snprintf(name, sizeof name, "linear attention %s %s", causal ? "causal" : "bidirectional",
                     (const char *[]){"no rope", "rope interleaved", "rope half", "rope partial"}[r]);
            gc_case c = {name, 3, {4, 4, 4}, {{2, 2, 6, 8}, {2, 2, 6, 8}, {2, 2, 6, 5}}, {0}, {1, 1, 1}, {0}};
            gradcheck(&c, op_la, la_direct, &A);
        }
    /* YaRN in linear attention: frequencies only, no temperature. At position 0 every rotation is
     * the identity, so the output must equal linear attention without RoPE (with the temperature
     * folded in it was a^2 = 1.45913 times larger at s = 8). */
    {
        enum { T = 5, D = 8 };
        float qf[T * D], kf[T * D], vf[T * D];
        for (int i = 0; i < T * D; i++) {
            qf[i] = dfl_rng_normal(&g_rng);
            kf[i] = dfl_rng_normal(&g_rng);
            vf[i] = dfl_rng_normal(&g_rng);
        }
        const int p0[T] = {0, 0, 0, 0, 0};
        dfl_rope_cfg yc = cfg_of(DFL_ROPE_INTERLEAVED, 0);
        yc.scaling = DFL_ROPE_SCALE_YARN;
        yc.factor = 8;
        yc.orig_ctx = 64;
        assert_true(dfl_rope_attn_factor(&yc) > 1.2);
        dfl_ctx *cx = dfl_ctx_new();
        int sh[3] = {1, T, D};
        dfl_tensor *a = dfl_linear_attention(cx, dfl_tensor_wrap(cx, qf, 3, sh), dfl_tensor_wrap(cx, kf, 3, sh),
                                             dfl_tensor_wrap(cx, vf, 3, sh), 0, &yc, p0);
        dfl_tensor *b = dfl_linear_attention(cx, dfl_tensor_wrap(cx, qf, 3, sh), dfl_tensor_wrap(cx, kf, 3, sh),
                                             dfl_tensor_wrap(cx, vf, 3, sh), 0, NULL, NULL);
        assert_non_null(a);
        assert_non_null(b);
        for (int i = 0; i < T * D; i++) assert_true(fabsf(a->data[i] - b->data[i]) <= 1e-5f * (1 + fabsf(b->data[i])));
        dfl_ctx_free(cx);
    }
    /* a larger case (threads over sequences, longer prefix sums) against the direct formula */
    {
        enum { S = 6, T = 96, D = 32 };
        static float qf[S * T * D], kf[S * T * D], vf[S * T * D];
        static double qd[S * T * D], kd[S * T * D], vd[S * T * D], od[S * T * D];
        int pl[T];
        for (int t = 0; t < T; t++) pl[t] = 3000 + t;
        float *bufs[3] = {qf, kf, vf};
        double *dbs[3] = {qd, kd, vd};
        for (int b = 0; b < 3; b++)
            for (int i = 0; i < S * T * D; i++) dbs[b][i] = bufs[b][i] = dfl_rng_normal(&g_rng);
        dfl_rope_cfg rc = cfg_of(DFL_ROPE_HALF, 16);
        for (int causal = 0; causal < 2; causal++) {
            dfl_ctx *cx = dfl_ctx_new();
            int sh[3] = {S, T, D};
            dfl_tensor *o = dfl_linear_attention(cx, dfl_tensor_wrap(cx, qf, 3, sh), dfl_tensor_wrap(cx, kf, 3, sh),
                                                 dfl_tensor_wrap(cx, vf, 3, sh), causal, &rc, pl);
            assert_non_null(o);
            la_arg A = {S, T, D, D, causal, &rc, pl};
            double *in3[3] = {qd, kd, vd};
            la_direct(in3, od, &A);
            for (int i = 0; i < S * T * D; i++) CHECK_CLOSE(o->data[i], od[i], 2e-5 * (1.0 + fabs(od[i])));
            dfl_ctx_free(cx);
        }
    }
    /* causal: out_m does not depend on tokens after m (bit for bit) */
    dfl_ctx *ctx = dfl_ctx_new();
    int sh[4] = {1, 1, 6, 8};
    dfl_tensor *q = dfl_tensor_tmp(ctx, 4, sh), *k = dfl_tensor_tmp(ctx, 4, sh), *v = dfl_tensor_tmp(ctx, 4, sh);
    dfl_rng_fill_normal(&g_rng, q->data, q->n);
    dfl_rng_fill_normal(&g_rng, k->data, k->n);
    dfl_rng_fill_normal(&g_rng, v->data, v->n);
    dfl_rope_cfg rc = dfl_rope_default();
    dfl_tensor *o1 = dfl_linear_attention(ctx, q, k, v, 1, &rc, pos);
    k->data[5 * 8 + 2] += 1.0f;
    v->data[4 * 8 + 1] -= 2.0f;
    dfl_tensor *o2 = dfl_linear_attention(ctx, q, k, v, 1, &rc, pos);
    assert_memory_equal(o1->data, o2->data, 4 * 8 * sizeof(float));
    assert_memory_not_equal(o1->data + 32, o2->data + 32, 16 * sizeof(float));
    dfl_ctx_free(ctx);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rope_reference_vectors),
        cmocka_unit_test(test_rope_relative_reference),
        cmocka_unit_test(test_rope_relative_large_positions),
        cmocka_unit_test(test_rope_layout_permutation),
        cmocka_unit_test(test_rope_decay_curve),
        cmocka_unit_test(test_rope_scaling_frequencies),
        cmocka_unit_test(test_xpos),
        cmocka_unit_test(test_rope_2d),
        cmocka_unit_test(test_sinusoidal_and_learned),
        cmocka_unit_test(test_alibi),
        cmocka_unit_test(test_t5_buckets),
        cmocka_unit_test(test_bad_input),
        cmocka_unit_test(test_grad_rope_family),
        cmocka_unit_test(test_grad_t5),
        cmocka_unit_test(test_grad_shaw),
        cmocka_unit_test(test_grad_learned),
        cmocka_unit_test(test_biases_in_attention),
        cmocka_unit_test(test_linear_attention),
    };
    return cmocka_run_group_tests(tests, setup, NULL);
}
