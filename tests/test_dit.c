/* DiT backbone (src/nn/dit.c): preset size and names (against PyTorch's state_dict), outputs
 * against the PyTorch module (bench/peers/torch_models.py), patchify/unpatchify as exact inverses,
 * adaLN-Zero start (output exactly 0), backprop against finite differences at perturbed
 * parameters (both positional encodings), positions reaching the model, the sin-cos table against
 * reference numbers, rope2d / sincos / none giving different outputs, a short FM training run. */
#include "dfl_test.h"
#include "dfl_keys.h"

#include "difflow/gen.h"
#include "difflow/nn.h"
#include "difflow/ops.h"
#include "difflow/optim.h"
#include "nn/dit.h"

/* A small DiT: 2x8x8 images, patch 2 (16 tokens), D 16, 2 blocks, 2 heads of 8. */
static dfl_arch_cfg small_cfg(dfl_dit_posenc pe)
{
    dfl_arch_cfg c;
    assert_int_equal(dfl_arch_preset("fmnist-dit-s", &c), DFL_OK);
    c.channels = 2;
    c.height = c.width = 8;
    c.patch = 2;
    c.hidden = 16;
    c.depth = 2;
    c.heads = 2;
    c.mlp_ratio = 2;
    c.temb_dim = 16;
    c.posenc = pe;
    c.rope_theta = 10.0;
    return c;
}

static void perturb_params(dfl_net *net, dfl_rng *r, float s)
{
    dfl_params *ps = dfl_net_params(net);
    for (int i = 0; i < ps->n; i++)
        for (size_t j = 0; j < ps->p[i].t->n; j++) ps->p[i].t->data[j] += s * dfl_rng_normal(r);
}

static dfl_tensor *run(dfl_ctx *ctx, dfl_net *net, float *x, const int *shape, float *tv)
{
    dfl_tensor *xt = dfl_tensor_wrap(ctx, x, 4, shape);
    int ts[1] = {shape[0]};
    dfl_tensor *tt = dfl_tensor_wrap(ctx, tv, 1, ts);
    return dfl_net_forward(ctx, net, xt, tt);
}

static void test_preset(void **state)
{
    (void)state;
    dfl_arch_cfg c, alias;
    assert_int_equal(dfl_arch_preset("fmnist-dit-s", &c), DFL_OK);
    assert_int_equal(dfl_arch_preset("dit", &alias), DFL_OK);
    assert_memory_equal(&c, &alias, sizeof c);
    assert_int_equal(c.arch, DFL_ARCH_DIT);
    dfl_rng r;
    dfl_rng_init(&r, 1);
    dfl_net *net = dfl_net_new(&c, &r);
    assert_non_null(net);
    dfl_params *ps = dfl_net_params(net);
    /* D = 192, F = 1*4*4 = 16, temb 256, MLP 768, 6 blocks of qkv, proj, fc1, fc2, adaLN (6D). */
    size_t D = 192, F = 16, blk = (D * 3 * D + 3 * D) + (D * D + D) + (D * 4 * D + 4 * D) + (4 * D * D + D) + (D * 6 * D + 6 * D);
    size_t want = (D * F + D) + (256 * D + D) + (D * D + D) + 6 * blk + (D * F + F) + (D * 2 * D + 2 * D);
    assert_int_equal(dfl_params_count(ps), want);
    assert_int_equal(want, 4165456);
    dfl_tensor *w = dfl_params_find(ps, "x_embedder.proj.weight");
    assert_non_null(w);
    assert_int_equal(w->ndim, 4);
    assert_int_equal(w->shape[0], 192);
    assert_int_equal(w->shape[2], 4);
    assert_non_null(dfl_params_find(ps, "blocks.5.adaLN_modulation.1.weight"));
    assert_null(dfl_params_find(ps, "blocks.6.adaLN_modulation.1.weight"));
    assert_non_null(dfl_params_find(ps, "final_layer.adaLN_modulation.1.bias"));
    assert_non_null(dfl_params_find(ps, "t_embedder.mlp.2.weight"));
    assert_string_equal(ps->p[0].name, "x_embedder.proj.weight");
    dfl_net_free(net);
    /* Bad configurations are refused with the field named. */
    dfl_arch_cfg b = c;
    b.patch = 3;
    assert_null(dfl_net_new(&b, &r));
    assert_non_null(strstr(dfl_last_error(), "patch 3"));
    b = c;
    b.posenc = (dfl_dit_posenc)7;
    assert_null(dfl_net_new(&b, &r));
    assert_non_null(strstr(dfl_last_error(), "positional encoding 7"));
    b = c;
    b.heads = 12; /* head dim 16: fine */
    dfl_net *ok = dfl_net_new(&b, &r);
    assert_non_null(ok);
    dfl_net_free(ok);
    b.hidden = 120;
    b.heads = 4; /* head dim 30 is not a multiple of 4 */
    assert_null(dfl_net_new(&b, &r));
    assert_non_null(strstr(dfl_last_error(), "head dimension 30"));
}

static void test_patchify_roundtrip(void **state)
{
    (void)state;
    dfl_rng r;
    dfl_rng_init(&r, 2);
    dfl_ctx *ctx = dfl_ctx_new();
    int shape[4] = {2, 3, 8, 12};
    size_t n = dfl_shape_numel(4, shape);
    float *x = malloc(n * sizeof *x), *cot = malloc(n * sizeof *cot);
    dfl_rng_fill_normal(&r, x, n);
    dfl_rng_fill_normal(&r, cot, n);
    for (int p = 1; p <= 4; p *= 2) {
        dfl_ctx_reset(ctx);
        dfl_tensor *xt = dfl_tensor_wrap(ctx, x, 4, shape);
        xt->requires_grad = 1;
        xt->grad = NULL;
        dfl_tensor *pt = dfl_patchify(ctx, xt, p);
        assert_non_null(pt);
        int T = (8 / p) * (12 / p), F = 3 * p * p;
        assert_int_equal(pt->shape[1], T);
        assert_int_equal(pt->shape[2], F);
        /* Closed form of one token: n 1, grid cell (gi, gj) = (1, 1), channel 2, offset (i, j). */
        int gi = 1, gj = 1, c = 2, i = p - 1, j = 0, t = gi * (12 / p) + gj, f = c * p * p + i * p + j;
        assert_true(pt->data[((size_t)1 * T + t) * F + f] == x[((1 * 3 + c) * 8 + gi * p + i) * 12 + gj * p + j]);
        dfl_tensor *back = dfl_unpatchify(ctx, pt, 3, 8, 12, p);
        assert_non_null(back);
        assert_memory_equal(back->data, x, n * sizeof *x);
        /* Gradient of the round trip is the identity: d/dx sum(cot * x) = cot, exactly. */
        assert_int_equal(dfl_backward_vjp(ctx, back, cot), DFL_OK);
        assert_memory_equal(xt->grad, cot, n * sizeof *cot);
    }
    /* Shapes that do not fit are refused. */
    dfl_tensor *xt = dfl_tensor_wrap(ctx, x, 4, shape);
    assert_null(dfl_patchify(ctx, xt, 5));
    assert_non_null(strstr(dfl_last_error(), "patch 5"));
    int s3[3] = {2, 23, 12};
    assert_null(dfl_unpatchify(ctx, dfl_tensor_wrap(ctx, x, 3, s3), 3, 8, 12, 2));
    free(x);
    free(cot);
    dfl_ctx_free(ctx);
}

/* adaLN-Zero: every gate and the final linear start at zero, so F(x, t) = 0 exactly. */
static void check_zero_init(dfl_arch_cfg c, int N)
{
    dfl_rng r;
    dfl_rng_init(&r, 4);
    dfl_net *net = dfl_net_new(&c, &r);
    assert_non_null(net);
    int shape[4] = {N, c.channels, c.height, c.width};
    size_t n = dfl_shape_numel(4, shape);
    float *x = malloc(n * sizeof *x), tv[4] = {0.f, 0.3f, 0.7f, 1.f};
    dfl_rng_fill_normal(&r, x, n);
    dfl_ctx *ctx = dfl_ctx_new();
    dfl_tensor *y = run(ctx, net, x, shape, tv);
    assert_non_null(y);
    assert_int_equal(y->ndim, 4);
    for (int d = 0; d < 4; d++) assert_int_equal(y->shape[d], shape[d]);
    for (size_t i = 0; i < n; i++)
        if (y->data[i] != 0.f) fail_msg("output %zu is %g, not exactly 0 at initialisation", i, y->data[i]);
    dfl_ctx_free(ctx);
    free(x);
    dfl_net_free(net);
}

static void test_zero_at_init(void **state)
{
    (void)state;
    dfl_arch_cfg c;
    assert_int_equal(dfl_arch_preset("fmnist-dit-s", &c), DFL_OK);
    check_zero_init(c, 2);
    check_zero_init(small_cfg(DFL_DIT_POS_ROPE2D), 3);
    check_zero_init(small_cfg(DFL_DIT_POS_SINCOS), 3);
}

/* Loss L = sum(r * F(x, t)) in double from a no-grad forward. */
static double loss_of(dfl_ctx *ctx, dfl_net *net, float *x, const int *shape, float *tv, const float *rr)
{
    dfl_ctx_reset(ctx);
    int old = dfl_ctx_set_grad(ctx, 0);
    dfl_tensor *y = run(ctx, net, x, shape, tv);
    assert_non_null(y);
    double acc = 0;
    for (size_t j = 0; j < y->n; j++) acc += (double)rr[j] * y->data[j];
    dfl_ctx_set_grad(ctx, old);
    return acc;
}

/* Central difference of L in the float *v (step h), against the backprop value g. */
static void fd_check(const char *what, dfl_ctx *ctx, dfl_net *net, float *x, const int *shape, float *tv,
                     const float *rr, float *v, float g, double *maxerr, double *maxg)
{
    const float h = 4e-3f;
    float keep = *v;
    *v = keep + h;
    double lp = loss_of(ctx, net, x, shape, tv, rr);
    *v = keep - h;
    double lm = loss_of(ctx, net, x, shape, tv, rr);
    *v = keep;
    double fd = (lp - lm) / (2.0 * h), err = fabs(fd - g);
    if (err > 2e-2 * fabs(fd) + 2e-3) print_error("  %s: backprop %.6g, finite difference %.6g\n", what, g, fd);
    if (err > *maxerr) *maxerr = err;
    if (fabs(g) > *maxg) *maxg = fabs(g);
    assert_true(err <= 2e-2 * fabs(fd) + 2e-3);
}

static void check_gradients(dfl_dit_posenc pe)
{
    dfl_arch_cfg c = small_cfg(pe);
    dfl_rng r;
    dfl_rng_init(&r, 5 + (int)pe);
    dfl_net *net = dfl_net_new(&c, &r);
    assert_non_null(net);
    perturb_params(net, &r, 0.3f); /* away from the zero start, so every path carries gradient */
    int N = 2, shape[4] = {N, c.channels, c.height, c.width};
    size_t n = dfl_shape_numel(4, shape);
    float *x = malloc(n * sizeof *x), *rr = malloc(n * sizeof *rr), tv[2] = {0.2f, 0.9f};
    dfl_rng_fill_normal(&r, x, n);
    dfl_rng_fill_normal(&r, rr, n);
    dfl_ctx *ctx = dfl_ctx_new();
    dfl_tensor *xt = dfl_tensor_wrap(ctx, x, 4, shape);
    xt->requires_grad = 1;
    int ts[1] = {N};
    dfl_params *ps = dfl_net_params(net);
    dfl_params_zero_grad(ps);
    dfl_tensor *y = dfl_net_forward(ctx, net, xt, dfl_tensor_wrap(ctx, tv, 1, ts));
    assert_non_null(y);
    assert_int_equal(dfl_backward_vjp(ctx, y, rr), DFL_OK);
    float *gx = malloc(n * sizeof *gx);
    memcpy(gx, xt->grad, n * sizeof *gx);
    double maxerr = 0, maxg = 0;
    /* Every parameter tensor, three random entries each. */
    for (int i = 0; i < ps->n; i++) {
        dfl_tensor *p = ps->p[i].t;
        for (int k = 0; k < 3; k++) {
            size_t j = dfl_rng_below(&r, (uint32_t)p->n);
            char what[160];
            snprintf(what, sizeof what, "%s[%zu]", ps->p[i].name, j);
            fd_check(what, ctx, net, x, shape, tv, rr, &p->data[j], p->grad[j], &maxerr, &maxg);
        }
    }
    for (int k = 0; k < 8; k++) {
        size_t j = dfl_rng_below(&r, (uint32_t)n);
        char what[64];
        snprintf(what, sizeof what, "x[%zu]", j);
        fd_check(what, ctx, net, x, shape, tv, rr, &x[j], gx[j], &maxerr, &maxg);
    }
    assert_true(maxg > 1e-2); /* the checked gradients are not all trivially zero */
    free(x);
    free(rr);
    free(gx);
    dfl_ctx_free(ctx);
    dfl_net_free(net);
}

static void test_gradients_rope(void **state)
{
    (void)state;
    check_gradients(DFL_DIT_POS_ROPE2D);
}

static void test_gradients_sincos(void **state)
{
    (void)state;
    check_gradients(DFL_DIT_POS_SINCOS);
}

/* Positions reach the model: shuffling the patches of the input must not just shuffle the
 * output's patches (a position-blind transformer is permutation-equivariant over tokens, which
 * the posenc "none" control confirms). */
static void check_positions(dfl_dit_posenc pe, int expect_equivariant)
{
    dfl_arch_cfg c = small_cfg(pe);
    dfl_rng r;
    dfl_rng_init(&r, 8);
    dfl_net *net = dfl_net_new(&c, &r);
    perturb_params(net, &r, 0.3f);
    int N = 1, shape[4] = {N, c.channels, c.height, c.width};
    size_t n = dfl_shape_numel(4, shape);
    float *x = malloc(n * sizeof *x), tv[1] = {0.5f};
    dfl_rng_fill_normal(&r, x, n);
    dfl_ctx *ctx = dfl_ctx_new();
    int p = c.patch, T = (c.height / p) * (c.width / p), F = c.channels * p * p;
    int perm[64];
    for (int t = 0; t < T; t++) perm[t] = (t + 5) % T; /* a cyclic shift of the tokens */
    dfl_tensor *xp = dfl_patchify(ctx, dfl_tensor_wrap(ctx, x, 4, shape), p);
    dfl_tensor *xs = dfl_tensor_zeros(ctx, 3, xp->shape);
    for (int t = 0; t < T; t++) memcpy(xs->data + (size_t)t * F, xp->data + (size_t)perm[t] * F, F * sizeof(float));
    dfl_tensor *ximg = dfl_unpatchify(ctx, xs, c.channels, c.height, c.width, p);
    float *x2 = malloc(n * sizeof *x2);
    memcpy(x2, ximg->data, n * sizeof *x2);
    dfl_tensor *y1 = run(ctx, net, x, shape, tv);
    dfl_tensor *y2 = run(ctx, net, x2, shape, tv);
    dfl_tensor *y1p = dfl_patchify(ctx, y1, p), *y2p = dfl_patchify(ctx, y2, p);
    double maxdiff = 0, maxy = 0;
    for (int t = 0; t < T; t++)
        for (int f = 0; f < F; f++) {
            double a = y2p->data[(size_t)t * F + f], b = y1p->data[(size_t)perm[t] * F + f];
            maxdiff = fmax(maxdiff, fabs(a - b));
            maxy = fmax(maxy, fabs(b));
        }
    if (expect_equivariant) CHECK_CLOSE(maxdiff, 0.0, 1e-4 * maxy);
    else assert_true(maxdiff > 0.05 * maxy);
    free(x);
    free(x2);
    dfl_ctx_free(ctx);
    dfl_net_free(net);
}

static void test_positions_reach_model(void **state)
{
    (void)state;
    check_positions(DFL_DIT_POS_ROPE2D, 0);
    check_positions(DFL_DIT_POS_SINCOS, 0);
    check_positions(DFL_DIT_POS_NONE, 1); /* control */
}

/* DiT's 2-D sin-cos table against numbers not computed by the formula under test: reference
 * positional.md 3.3 gives the Vaswani table for d = 8 at position 1, i.e. sin and cos of
 * w = (1, 0.1, 0.01, 0.001), which is DiT's ladder 10000^(-k/(D/4)) for D = 16. Positions 2 and 3
 * follow from those by the angle-addition identities; position 0 is sin 0 = 0, cos 0 = 1. The
 * grid is 3 rows x 4 columns, so a row/column swap or a transposed token order fails. */
static void test_sincos_table_values(void **state)
{
    (void)state;
    static const double s1[4] = {0.841471, 0.099833, 0.010000, 0.001000};
    static const double c1[4] = {0.540302, 0.995004, 0.999950, 1.000000};
    double sn[4][4], cs[4][4]; /* [position][k] */
    for (int k = 0; k < 4; k++) {
        sn[0][k] = 0, cs[0][k] = 1;
        sn[1][k] = s1[k], cs[1][k] = c1[k];
        for (int p = 2; p < 4; p++) { /* sin((p-1)a + a), cos((p-1)a + a) */
            sn[p][k] = sn[p - 1][k] * c1[k] + cs[p - 1][k] * s1[k];
            cs[p][k] = cs[p - 1][k] * c1[k] - sn[p - 1][k] * s1[k];
        }
    }
    const int gh = 3, gw = 4, D = 16;
    float pe[12 * 16];
    dfl_dit_sincos_table(pe, gh, gw, D);
    for (int t = 0; t < gh * gw; t++) {
        int row = t / gw, col = t % gw;
        for (int k = 0; k < 4; k++) {
            CHECK_CLOSE(pe[t * D + k], sn[col][k], 1e-5);
            CHECK_CLOSE(pe[t * D + 4 + k], cs[col][k], 1e-5);
            CHECK_CLOSE(pe[t * D + 8 + k], sn[row][k], 1e-5);
            CHECK_CLOSE(pe[t * D + 12 + k], cs[row][k], 1e-5);
        }
    }
    /* spot values: token (row 2, col 3) feature 0 is sin 3 = 0.141120, feature 8 is sin 2 = 0.909297 */
    CHECK_CLOSE(pe[11 * D + 0], 0.141120, 1e-5);
    CHECK_CLOSE(pe[11 * D + 8], 0.909297, 1e-5);
}

/* The three encodings of one network (same seed, so the same parameters, perturbed alike) give
 * different outputs for the same input, all finite; names round-trip through the parser and an
 * unknown name is refused. */
static void test_posenc_variants_differ(void **state)
{
    (void)state;
    static const dfl_dit_posenc pes[3] = {DFL_DIT_POS_ROPE2D, DFL_DIT_POS_SINCOS, DFL_DIT_POS_NONE};
    int N = 2, shape[4] = {N, 2, 8, 8};
    size_t n = dfl_shape_numel(4, shape);
    float x[256], tv[2] = {0.3f, 0.7f}, y[3][256];
    dfl_rng xr;
    dfl_rng_init(&xr, 5);
    dfl_rng_fill_normal(&xr, x, n);
    for (int v = 0; v < 3; v++) {
        dfl_arch_cfg c = small_cfg(pes[v]);
        dfl_rng r;
        dfl_rng_init(&r, 21);
        dfl_net *net = dfl_net_new(&c, &r);
        assert_non_null(net);
        perturb_params(net, &r, 0.3f);
        dfl_ctx *ctx = dfl_ctx_new();
        dfl_tensor *out = run(ctx, net, x, shape, tv);
        assert_non_null(out);
        for (size_t i = 0; i < n; i++) {
            assert_true(isfinite(out->data[i]));
            y[v][i] = out->data[i];
        }
        dfl_ctx_free(ctx);
        dfl_net_free(net);
        dfl_dit_posenc back;
        assert_int_equal(dfl_dit_posenc_parse(dfl_dit_posenc_name(pes[v]), &back), DFL_OK);
        assert_int_equal(back, pes[v]);
    }
    for (int a = 0; a < 3; a++)
        for (int b = a + 1; b < 3; b++) {
            double md = 0, my = 0;
            for (size_t i = 0; i < n; i++) {
                md = fmax(md, fabs((double)y[a][i] - y[b][i]));
                my = fmax(my, fabs((double)y[a][i]));
            }
            print_message("posenc %s vs %s: max |diff| %.4f (max |y| %.4f)\n", dfl_dit_posenc_name(pes[a]),
                          dfl_dit_posenc_name(pes[b]), md, my);
            assert_true(md > 0.05 * my);
        }
    dfl_dit_posenc pe = DFL_DIT_POS_NONE;
    assert_int_equal(dfl_dit_posenc_parse("rope", &pe), DFL_ERR_ARG);
    assert_int_equal(pe, DFL_DIT_POS_NONE);
    assert_non_null(strstr(dfl_last_error(), "'rope'"));
    assert_string_equal(dfl_dit_posenc_name((dfl_dit_posenc)9), "?");
}

/* 40 Adam steps of the flow-matching loss on four fixed 8x8 images lower the loss measured on a
 * fixed set of (noise, t) draws. */
static void test_training_lowers_fm_loss(void **state)
{
    (void)state;
    dfl_arch_cfg c = small_cfg(DFL_DIT_POS_ROPE2D);
    c.channels = 1;
    c.hidden = 32;
    c.heads = 4;
    dfl_rng r;
    dfl_rng_init(&r, 11);
    dfl_model m;
    dfl_process_default(&m.proc, DFL_FAMILY_FM);
    m.net = dfl_net_new(&c, &r);
    assert_non_null(m.net);
    int B = 4, shape[4] = {B, 1, 8, 8};
    float x[4 * 64];
    for (int b = 0; b < B; b++)
        for (int i = 0; i < 64; i++) x[b * 64 + i] = ((i / 8 + b) % 2 ? 0.8f : -0.8f) * (i % 8 < 4 + b % 3 ? 1.f : -1.f);
    dfl_ctx *ctx = dfl_ctx_new();
    dfl_adam opt;
    memset(&opt, 0, sizeof opt);
    dfl_adam_cfg acfg = {.lr = 3e-3f, .beta1 = 0.9f, .beta2 = 0.999f, .eps = 1e-8f};
    assert_int_equal(dfl_adam_init(&opt, dfl_net_params(m.net), &acfg), DFL_OK);
    double before = 0, after = 0;
    for (int phase = 0; phase < 2; phase++) {
        if (phase == 1)
            for (int s = 0; s < 40; s++) {
                dfl_ctx_reset(ctx);
                dfl_params_zero_grad(dfl_net_params(m.net));
                dfl_tensor *loss = dfl_model_loss(ctx, &m, x, 4, shape, &r);
                assert_non_null(loss);
                assert_int_equal(dfl_backward(ctx, loss), DFL_OK);
                assert_int_equal(dfl_adam_step(&opt, NULL), DFL_OK);
            }
        dfl_rng er;
        dfl_rng_init(&er, 99);
        double acc = 0;
        dfl_ctx_set_grad(ctx, 0);
        for (int k = 0; k < 16; k++) {
            dfl_ctx_reset(ctx);
            dfl_tensor *loss = dfl_model_loss(ctx, &m, x, 4, shape, &er);
            assert_non_null(loss);
            acc += loss->data[0] / 16;
        }
        dfl_ctx_set_grad(ctx, 1);
        *(phase ? &after : &before) = acc;
    }
    print_message("dit FM loss on 4 images: %.4f before, %.4f after 40 Adam steps\n", before, after);
    assert_true(after < 0.8 * before);
    dfl_adam_free(&opt);
    dfl_ctx_free(ctx);
    dfl_net_free(m.net);
}

/* Against PyTorch: bench/peers/torch_models.py's DiT (channels 2, size 8, patch 2, dim 16, depth 2,
 * heads 2, mlp_ratio 2, freq_dim 16, rope_theta 10) run in float64 with every parameter, in
 * state_dict order, set to 0.3 cos(1.3 k) (k counting scalars), x[i] = sin(0.37 i) (2x2x8x8),
 * t = (0.125, 0.8125). Values at flat indices 0, 1, 17, 64, 100, 127, 128, 200, 255 and the sum of
 * squares of the 256 outputs. */
static void check_reference(dfl_dit_posenc pe, const double *want, double sumsq)
{
    dfl_arch_cfg c = small_cfg(pe);
    dfl_rng r;
    dfl_rng_init(&r, 1);
    dfl_net *net = dfl_net_new(&c, &r);
    dfl_params *ps = dfl_net_params(net);
    assert_int_equal(dfl_params_count(ps), 8952);
    long k = 0;
    for (int i = 0; i < ps->n; i++)
        for (size_t j = 0; j < ps->p[i].t->n; j++, k++) ps->p[i].t->data[j] = (float)(0.3 * cos(1.3 * (double)k));
    int shape[4] = {2, 2, 8, 8};
    float x[256], tv[2] = {0.125f, 0.8125f};
    for (int i = 0; i < 256; i++) x[i] = (float)sin(0.37 * i);
    dfl_ctx *ctx = dfl_ctx_new();
    dfl_tensor *y = run(ctx, net, x, shape, tv);
    assert_non_null(y);
    static const int idx[9] = {0, 1, 17, 64, 100, 127, 128, 200, 255};
    for (int i = 0; i < 9; i++) CHECK_CLOSE(y->data[idx[i]], want[i], 2e-5 * (1 + fabs(want[i])));
    double ss = 0;
    for (int i = 0; i < 256; i++) ss += (double)y->data[i] * y->data[i];
    CHECK_REL(ss, sumsq, 2e-5);
    dfl_ctx_free(ctx);
    dfl_net_free(net);
}

static void test_matches_pytorch(void **state)
{
    (void)state;
    static const double rope[9] = {2.07134165, 0.525108412, 0.44697449, 1.31749649, 1.35047523,
                                   1.30479102, 2.12107168, 0.827917102, 1.32268903};
    static const double sincos[9] = {1.65409735, 0.250161589, -0.0330305114, 0.833846615, 1.08789577,
                                     1.20304658, 1.91823897, 0.999745024, 1.14180885};
    check_reference(DFL_DIT_POS_ROPE2D, rope, 478.143935);
    check_reference(DFL_DIT_POS_SINCOS, sincos, 256.414395);
}

/* Names and shapes equal the PyTorch module's state_dict (bench/peers/dit_keys.txt, written by
 * bench/peers/torch_models.py), in the same order. */
static void test_names_match_pytorch(void **state)
{
    (void)state;
    dfl_arch_cfg c;
    assert_int_equal(dfl_arch_preset("fmnist-dit-s", &c), DFL_OK);
    dfl_rng r;
    dfl_rng_init(&r, 1);
    dfl_net *net = dfl_net_new(&c, &r);
    dfl_check_keys(dfl_net_params(net), "dit_keys.txt");
    dfl_net_free(net);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_preset),
        cmocka_unit_test(test_names_match_pytorch),
        cmocka_unit_test(test_matches_pytorch),
        cmocka_unit_test(test_patchify_roundtrip),
        cmocka_unit_test(test_zero_at_init),
        cmocka_unit_test(test_gradients_rope),
        cmocka_unit_test(test_gradients_sincos),
        cmocka_unit_test(test_positions_reach_model),
        cmocka_unit_test(test_sincos_table_values),
        cmocka_unit_test(test_posenc_variants_differ),
        cmocka_unit_test(test_training_lowers_fm_loss),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
