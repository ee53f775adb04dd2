/* Tests of the normalizing flows (flow.h; reference/flows.md section 3.2 and pitfalls).
 *
 * Every bijection and every model preset, at random non-zero parameters (every parameter
 * perturbed after construction, ActNorm data-initialised first):
 *   - inverse(forward(x)) == x and forward(inverse(z)) == z (both directions), to 1e-4 relative to
 *     the data scale: |f^-1(f(x)) - x|_inf <= 1e-4 max(1, |x|_inf) (absolute 1e-4 for data within
 *     [-1, 1] and 2-D points; 0.0256 for pixels x = v + u in [0, 256), 1e-4 of a bin);
 *   - log-det == ln|det J| of the Jacobian built row by row from input VJPs (unit cotangents);
 *   - inverse log-det == -forward log-det at the inverse point.
 * Plus closed forms: base densities at 0, bits/dim = 8 for a uniform flow on 8-bit data, ActNorm
 * statistics after data init, LU 1x1 conv W W^-1 = I and its log-det against an independent LU,
 * error messages naming the layer, temperature-0 and same-seed sampling, and a short RealNVP
 * training run whose log-likelihood must rise.
 */
#include "dfl_test.h"

#include "difflow/core.h"
#include "difflow/data.h"
#include "difflow/flow.h"
#include "difflow/likelihood.h"
#include "difflow/nn.h"
#include "difflow/ops.h"
#include "difflow/optim.h"

static dfl_rng g_rng;
static double PERTURB = 0.5;

/* ------------------------------------------------------------------ helpers */

/* p += s N(0, 1) for every parameter; s = 0.5/sqrt(fan_in) for matrices and kernels, 0.1 else. */
static void perturb(dfl_params *ps, dfl_rng *rng)
{
    for (int i = 0; i < ps->n; i++) {
        dfl_tensor *t = ps->p[i].t;
        double s = 0.1;
        if (t->ndim >= 2 && t->shape[0] > 1) s = PERTURB / sqrt((double)(t->n / (size_t)t->shape[0]));
        for (size_t k = 0; k < t->n; k++) t->data[k] += (float)(s * dfl_rng_normal(rng));
    }
}

static float *rand_data(size_t n, int in_unit)
{
    float *p = malloc(n * sizeof *p);
    for (size_t i = 0; i < n; i++)
        p[i] = in_unit ? -0.98f + 1.96f * dfl_rng_uniform(&g_rng) : dfl_rng_normal(&g_rng);
    return p;
}

/* n dequantized 8-bit pixels x = v + u in [0, 256) (an image flow's data space), kept away from
 * the edges as rand_data's [-0.98, 0.98]: 128 (y + 1). */
static float *rand_pixels(size_t n)
{
    float *p = rand_data(n, 1);
    for (size_t i = 0; i < n; i++) p[i] = 128.0f * (p[i] + 1.0f);
    return p;
}

static double max_abs_diff(const float *a, const float *b, size_t n)
{
    double m = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - b[i]);
        if (!(d <= m)) m = d;
    }
    return m;
}

static double max_abs(const float *a, size_t n)
{
    double m = 0;
    for (size_t i = 0; i < n; i++) m = fmax(m, fabs(a[i]));
    return m;
}

/* Independent ln|det| by Gaussian elimination with partial pivoting (double). */
static double ref_logabsdet(double *A, int n)
{
    double ld = 0;
    for (int k = 0; k < n; k++) {
        int p = k;
        for (int i = k + 1; i < n; i++)
            if (fabs(A[i * n + k]) > fabs(A[p * n + k])) p = i;
        for (int j = 0; j < n; j++) {
            double t = A[k * n + j];
            A[k * n + j] = A[p * n + j];
            A[p * n + j] = t;
        }
        if (A[k * n + k] == 0) return -INFINITY;
        ld += log(fabs(A[k * n + k]));
        for (int i = k + 1; i < n; i++) {
            double f = A[i * n + k] / A[k * n + k];
            for (int j = k; j < n; j++) A[i * n + j] -= f * A[k * n + j];
        }
    }
    return ld;
}

/* A transform under test: forward or inverse of one bijection, or of a whole flow. */
typedef struct {
    dfl_bijection *b;
    dfl_flow *f;
    int inverse;
} xform;

static dfl_tensor *run(dfl_ctx *ctx, const xform *t, dfl_tensor *x, dfl_tensor **ld)
{
    if (t->b) return t->inverse ? dfl_bij_inverse(ctx, t->b, x, ld) : dfl_bij_forward(ctx, t->b, x, ld);
    return t->inverse ? dfl_flow_inverse(ctx, t->f, x, ld) : dfl_flow_forward(ctx, t->f, x, ld);
}

/* ln|det J| of the transform at one sample x (shape sh, N = 1) from D input VJPs, compared with
 * the transform's own log-det. */
static void check_jacobian(const char *what, const xform *t, int ndim, const int *sh, const float *x0, double tol)
{
    size_t D = dfl_shape_numel(ndim, sh);
    double *J = malloc(D * D * sizeof *J);
    float *cot = calloc(D * 4, sizeof *cot); /* output may be larger for nothing here, D is exact */
    float *xv = malloc(D * sizeof *xv);
    double ld_layer = 0;
    for (size_t k = 0; k < D; k++) {
        dfl_ctx *ctx = dfl_ctx_new();
        memcpy(xv, x0, D * sizeof *xv);
        dfl_tensor *x = dfl_tensor_wrap(ctx, xv, ndim, sh);
        x->requires_grad = 1;
        dfl_tensor *ld = NULL;
        dfl_tensor *y = run(ctx, t, x, &ld);
        if (!y) print_error("%s: %s\n", what, dfl_last_error());
        assert_non_null(y);
        assert_int_equal(y->n, D);
        if (k == 0) ld_layer = ld ? ld->data[0] : 0.0;
        memset(cot, 0, D * sizeof *cot);
        cot[k] = 1.0f;
        assert_int_equal(dfl_backward_vjp(ctx, y, cot), DFL_OK);
        for (size_t j = 0; j < D; j++) J[k * D + j] = x->grad ? x->grad[j] : 0.0;
        dfl_ctx_free(ctx);
    }
    double ref = ref_logabsdet(J, (int)D);
    if (!(fabs(ref - ld_layer) <= tol * fmax(1.0, fabs(ref)))) {
        print_error("%s: log-det %.7g, brute-force ln|det J| %.7g (D = %zu)\n", what, ld_layer, ref, D);
        fail();
    }
    free(J);
    free(cot);
    free(xv);
}

/* Round trips in both directions at N samples, to 1e-4 relative to the data scale
 * (max(1, |x|_inf): float32 keeps ~7 digits of any value, so an absolute bound would test the
 * size of the data, not the inverse), inverse log-det = -forward log-det, and the
 * Jacobian check at the first sample (when jac). x0 in the data domain; z0 in the latent domain. */
static void check_bijective(const char *what, dfl_bijection *b, dfl_flow *f, int ndim, const int *sh,
                            const int *zsh, int zndim, const float *x0, const float *z0, int jac, double jtol)
{
    size_t n = dfl_shape_numel(ndim, sh);
    dfl_ctx *ctx = dfl_ctx_new();
    dfl_ctx_set_grad(ctx, 0);
    xform fw = {b, f, 0}, iv = {b, f, 1};
    float *xc = malloc(n * sizeof *xc), *zc = malloc(n * sizeof *zc);
    memcpy(xc, x0, n * sizeof *xc);
    memcpy(zc, z0, n * sizeof *zc);
    /* x -> z -> x */
    dfl_tensor *ldf = NULL, *ldi = NULL;
    dfl_tensor *z = run(ctx, &fw, dfl_tensor_wrap(ctx, xc, ndim, sh), &ldf);
    if (!z) print_error("%s forward: %s\n", what, dfl_last_error());
    assert_non_null(z);
    dfl_tensor *xr = run(ctx, &iv, z, &ldi);
    if (!xr) print_error("%s inverse: %s\n", what, dfl_last_error());
    assert_non_null(xr);
    double e1 = max_abs_diff(xr->data, x0, n) / fmax(1.0, max_abs(x0, n));
    if (!(e1 <= 1e-4)) {
        print_error("%s: |f^-1(f(x)) - x| = %.3g\n", what, e1);
        fail();
    }
    /* inverse log-det at z = f(x) is minus the forward log-det at x */
    int N = sh[0];
    for (int i = 0; i < N; i++) {
        double a = ldf ? ldf->data[i] : 0.0, c = ldi ? ldi->data[i] : 0.0;
        if (!(fabs(a + c) <= 1e-4 * fmax(1.0, fabs(a)))) {
            print_error("%s: forward log-det %.7g, inverse log-det at f(x) %.7g\n", what, a, c);
            fail();
        }
    }
    /* z -> x -> z */
    dfl_tensor *xz = run(ctx, &iv, dfl_tensor_wrap(ctx, zc, zndim, zsh), NULL);
    if (!xz) print_error("%s inverse(z): %s\n", what, dfl_last_error());
    assert_non_null(xz);
    dfl_tensor *zr = run(ctx, &fw, xz, NULL);
    assert_non_null(zr);
    double e2 = max_abs_diff(zr->data, z0, n) / fmax(1.0, max_abs(z0, n));
    if (!(e2 <= 1e-4)) {
        print_error("%s: |f(f^-1(z)) - z| = %.3g\n", what, e2);
        fail();
    }
    dfl_ctx_free(ctx);
    free(xc);
    free(zc);
    if (jac) {
        int s1[4];
        memcpy(s1, sh, (size_t)ndim * sizeof(int));
        s1[0] = 1;
        check_jacobian(what, &fw, ndim, s1, x0, jtol);
        int z1[4];
        memcpy(z1, zsh, (size_t)zndim * sizeof(int));
        z1[0] = 1;
        char w2[160];
        snprintf(w2, sizeof w2, "%s (inverse)", what);
        check_jacobian(w2, &iv, zndim, z1, z0, jtol);
    }
}

/* ------------------------------------------------------------------ bijections */

typedef struct {
    const char *name;
    int C, H, W;
} shape3;

static void bij_case(dfl_bijection *b, dfl_params *ps, int C, int H, int W, int in_unit)
{
    assert_non_null(b);
    perturb(ps, &g_rng);
    int N = 3;
    int vec = H == 0;
    int sh[4] = {N, C, H, W}, ndim = vec ? 2 : 4;
    int zC = C, zH = H, zW = W;
    if (strstr(dfl_bij_name(b), "squeeze")) {
        zC = 4 * C;
        zH = H / 2;
        zW = W / 2;
    }
    int zsh[4] = {N, zC, zH, zW};
    size_t n = (size_t)N * C * (vec ? 1 : H * W);
    float *x = rand_data(n, in_unit), *z = rand_data(n, 0);
    if (in_unit) /* logit: latent values of moderate size keep float round trips exact */
        for (size_t i = 0; i < n; i++) z[i] *= 0.7f;
    check_bijective(dfl_bij_name(b), b, NULL, ndim, sh, zsh, ndim, x, z, 1, 2e-4);
    free(x);
    free(z);
    dfl_bij_free(b);
    dfl_params_free(ps);
}

static void test_bijections(void **state)
{
    (void)state;
    dfl_params ps = {0}, bufs = {0};
    /* vectors: NICE additive (both parities, odd D), RealNVP tanh, Glow sigmoid */
    for (int p = 0; p < 2; p++) {
        bij_case(dfl_bij_coupling_new("vec.additive", 5, 0, 0, DFL_MASK_VECTOR, p, DFL_COUPLING_ADDITIVE,
                                      DFL_NET_MLP, 16, 2, &ps, &g_rng), &ps, 5, 0, 0, 0);
        bij_case(dfl_bij_coupling_new("vec.affine", 4, 0, 0, DFL_MASK_VECTOR, p, DFL_COUPLING_TANH, DFL_NET_MLP,
                                      16, 2, &ps, &g_rng), &ps, 4, 0, 0, 0);
        bij_case(dfl_bij_coupling_new("vec.sigmoid", 3, 0, 0, DFL_MASK_VECTOR, p, DFL_COUPLING_SIGMOID,
                                      DFL_NET_MLP, 16, 1, &ps, &g_rng), &ps, 3, 0, 0, 0);
        /* images: checkerboard and channel masks */
        bij_case(dfl_bij_coupling_new("img.checker", 2, 4, 4, DFL_MASK_CHECKERBOARD, p, DFL_COUPLING_TANH,
                                      DFL_NET_RESNET, 8, 1, &ps, &g_rng), &ps, 2, 4, 4, 0);
        bij_case(dfl_bij_coupling_new("img.checker_sig", 1, 4, 4, DFL_MASK_CHECKERBOARD, p, DFL_COUPLING_SIGMOID,
                                      DFL_NET_GLOW, 8, 0, &ps, &g_rng), &ps, 1, 4, 4, 0);
        bij_case(dfl_bij_coupling_new("img.channel", 3, 2, 2, DFL_MASK_CHANNEL, p, DFL_COUPLING_TANH,
                                      DFL_NET_RESNET, 8, 2, &ps, &g_rng), &ps, 3, 2, 2, 0);
        bij_case(dfl_bij_coupling_new("img.channel_glow", 4, 2, 2, DFL_MASK_CHANNEL, p, DFL_COUPLING_SIGMOID,
                                      DFL_NET_GLOW, 8, 0, &ps, &g_rng), &ps, 4, 2, 2, 0);
        bij_case(dfl_bij_coupling_new("img.channel_add", 4, 2, 2, DFL_MASK_CHANNEL, p, DFL_COUPLING_ADDITIVE,
                                      DFL_NET_GLOW, 8, 0, &ps, &g_rng), &ps, 4, 2, 2, 0);
    }
    bij_case(dfl_bij_scaling_new("vec.scaling", 4, 0, 0, &ps), &ps, 4, 0, 0, 0);
    bij_case(dfl_bij_scaling_new("img.scaling", 2, 2, 2, &ps), &ps, 2, 2, 2, 0);
    bij_case(dfl_bij_squeeze_new("img.squeeze", 2, 4, 2), &ps, 2, 4, 2, 0);
    bij_case(dfl_bij_actnorm_new("vec.actnorm", 3, 0, 0, &ps), &ps, 3, 0, 0, 0);
    bij_case(dfl_bij_actnorm_new("img.actnorm", 3, 2, 3, &ps), &ps, 3, 2, 3, 0);
    for (int lu = 0; lu < 2; lu++) {
        bij_case(dfl_bij_invconv_new(lu ? "vec.invconv_lu" : "vec.invconv", 3, 0, 0, lu, &ps, &bufs, &g_rng), &ps, 3, 0, 0, 0);
        dfl_params_free(&bufs);
        bij_case(dfl_bij_invconv_new(lu ? "img.invconv_lu" : "img.invconv", 4, 2, 2, lu, &ps, &bufs, &g_rng), &ps, 4, 2, 2, 0);
        dfl_params_free(&bufs);
    }
    bij_case(dfl_bij_logit_new("img.logit", 2, 2, 2, 0.05f), &ps, 2, 2, 2, 1);
    bij_case(dfl_bij_logit_new("img.logit0", 1, 2, 3, 0.0f), &ps, 1, 2, 3, 1);
    bij_case(dfl_bij_split_new("img.split", 4, 2, 2, DFL_SPLIT_LOGSD_BOUND, &ps), &ps, 4, 2, 2, 0);
    /* a tight bound: the raw log-sd (~0.5) lies where c tanh(raw / c) is far from the identity */
    bij_case(dfl_bij_split_new("img.split_tight", 4, 2, 2, 0.3f, &ps), &ps, 4, 2, 2, 0);
    bij_case(dfl_bij_dequant_new("img.dequant", 2, 2, 3, 8), &ps, 2, 2, 3, 0);
    bij_case(dfl_bij_dequant_new("vec.dequant5", 3, 0, 0, 5), &ps, 3, 0, 0, 0);
    bij_case(dfl_bij_prior_new("img.prior", 2, 3, 2, &ps), &ps, 2, 3, 2, 0);
    bij_case(dfl_bij_prior_new("vec.prior", 3, 0, 0, &ps), &ps, 3, 0, 0, 0);
    bij_case(dfl_bij_split_new("img.split_odd", 3, 2, 2, 0.0f, &ps), &ps, 3, 2, 2, 0); /* unbounded (old checkpoints) */
}

/* The split prior's soft log-sd bound (reference/flows.md pitfall 7): an under-trained Glow's
 * inverse handed the split |z1| ~ 1e5 (its raw log-sd, a linear conv of z1, reached 2.3e4 and
 * exp overflowed). With the bound, both directions stay finite and |log-det| <= c * #z2; the same
 * parameters without the bound overflow, so the check can fail. */
static void test_split_bound(void **state)
{
    (void)state;
    const int C = 4, H = 3, W = 3, N = 2;
    dfl_params ps = {0}, ps0 = {0};
    dfl_bijection *b = dfl_bij_split_new("big.split", C, H, W, DFL_SPLIT_LOGSD_BOUND, &ps);
    dfl_bijection *b0 = dfl_bij_split_new("big.split0", C, H, W, 0.0f, &ps0);
    assert_non_null(b);
    assert_non_null(b0);
    perturb(&ps, &g_rng);
    assert_int_equal(ps.n, ps0.n);
    for (int i = 0; i < ps.n; i++) memcpy(ps0.p[i].t->data, ps.p[i].t->data, ps.p[i].t->n * sizeof(float));
    size_t n = (size_t)N * C * H * W, per = (size_t)C * H * W, half = per / 2;
    float *z = rand_data(n, 0);
    for (int s = 0; s < N; s++)
        for (size_t i = 0; i < half; i++) z[s * per + i] *= 1e5f; /* z1: the first C/2 channels */
    int sh[4] = {N, C, H, W};
    double bound = DFL_SPLIT_LOGSD_BOUND * (double)half;
    for (int dir = 0; dir < 2; dir++) {
        dfl_ctx *ctx = dfl_ctx_new();
        dfl_tensor *ld = NULL, *ld0 = NULL;
        dfl_tensor *zt = dfl_tensor_wrap(ctx, z, 4, sh);
        dfl_tensor *y = dir ? dfl_bij_inverse(ctx, b, zt, &ld) : dfl_bij_forward(ctx, b, zt, &ld);
        dfl_tensor *y0 = dir ? dfl_bij_inverse(ctx, b0, zt, &ld0) : dfl_bij_forward(ctx, b0, zt, &ld0);
        assert_non_null(y);
        assert_non_null(ld);
        for (size_t i = 0; i < n; i++) {
            if (!isfinite(y->data[i])) print_error("bounded split %s: y[%zu] = %g\n", dir ? "inverse" : "forward", i, (double)y->data[i]);
            assert_true(isfinite(y->data[i]));
        }
        for (int s = 0; s < N; s++) {
            assert_true(isfinite(ld->data[s]));
            assert_true(fabs(ld->data[s]) <= bound);
        }
        /* the raw log-sd is ~1e4 here: unbounded, exp overflows (inf, or 0 * inf = nan) */
        int bad = 0;
        for (size_t i = 0; y0 && i < n; i++) bad |= !isfinite(y0->data[i]);
        assert_true(bad || !y0);
        dfl_ctx_free(ctx);
    }
    /* round trip at this scale: relative to the data scale (1e5) */
    dfl_ctx *ctx = dfl_ctx_new();
    dfl_tensor *x = dfl_bij_inverse(ctx, b, dfl_tensor_wrap(ctx, z, 4, sh), NULL);
    assert_non_null(x);
    dfl_tensor *zr = dfl_bij_forward(ctx, b, x, NULL);
    assert_non_null(zr);
    double e = max_abs_diff(zr->data, z, n) / max_abs(z, n);
    if (!(e <= 1e-5)) print_error("bounded split round trip at |z1| ~ 1e5: %.3g\n", e);
    assert_true(e <= 1e-5);
    dfl_ctx_free(ctx);
    free(z);
    dfl_bij_free(b);
    dfl_bij_free(b0);
    dfl_params_free(&ps);
    dfl_params_free(&ps0);
}

/* ------------------------------------------------------------------ models */

static dfl_flow *make_flow(dfl_flow_cfg *cfg, int N, float **xdata)
{
    dfl_rng r;
    dfl_rng_init(&r, 99);
    dfl_flow *f = dfl_flow_new(cfg, &r);
    if (!f) print_error("flow_new: %s\n", dfl_last_error());
    assert_non_null(f);
    int D = dfl_flow_dim(f), vec = cfg->height == 0;
    int sh[4] = {N, cfg->channels, cfg->height, cfg->width};
    float *x = vec ? rand_data((size_t)N * D, 0) : rand_pixels((size_t)N * D);
    dfl_ctx *ctx = dfl_ctx_new();
    assert_int_equal(dfl_flow_data_init(ctx, f, dfl_tensor_wrap(ctx, x, vec ? 2 : 4, sh)), DFL_OK);
    assert_true(dfl_flow_initialized(f));
    dfl_ctx_free(ctx);
    /* milder than for single layers: a deep stack of random non-orthogonal maps amplifies float
     * rounding in the round trip (glow 1x28x28 at 0.5: 2e-4, every layer alone at 1e-7 relative) */
    PERTURB = 0.25;
    perturb(dfl_flow_params(f), &g_rng);
    PERTURB = 0.5;
    *xdata = x;
    return f;
}

static void model_case(dfl_flow_kind k, int C, int H, int W, int N, int jac, void (*tweak)(dfl_flow_cfg *))
{
    dfl_flow_cfg cfg;
    assert_int_equal(dfl_flow_preset(k, C, H, W, &cfg), DFL_OK);
    if (tweak) tweak(&cfg);
    float *x;
    dfl_flow *f = make_flow(&cfg, N, &x);
    int D = dfl_flow_dim(f), vec = H == 0;
    int sh[4] = {N, C, H, W}, zsh[2] = {N, D};
    float *z = rand_data((size_t)N * D, 0);
    for (int i = 0; i < N * D; i++) z[i] *= 0.7f;
    if (!vec) {
        /* Image flows start with the logit layer: a latent drawn at random maps to data near the
         * saturated ends of the sigmoid (|y| -> (1 - alpha)/(1/2 - alpha)), where float32 cannot
         * round-trip the logit to 1e-4 (even at zero parameters). Use latents of data instead:
         * z = f(x2) + 0.1 noise for a fresh batch x2. */
        float *x2 = rand_pixels((size_t)N * D);
        dfl_ctx *c2 = dfl_ctx_new();
        dfl_ctx_set_grad(c2, 0);
        dfl_tensor *zz = dfl_flow_forward(c2, f, dfl_tensor_wrap(c2, x2, 4, sh), NULL);
        assert_non_null(zz);
        for (int i = 0; i < N * D; i++) z[i] = zz->data[i] + 0.1f * z[i];
        dfl_ctx_free(c2);
        free(x2);
    }
    char what[96];
    snprintf(what, sizeof what, "%s %dx%dx%d", dfl_flow_kind_name(k), C, H, W);
    check_bijective(what, NULL, f, vec ? 2 : 4, sh, zsh, 2, x, z, jac, 5e-4);
    /* log_prob = base(z) + logdet, finite */
    dfl_ctx *ctx = dfl_ctx_new();
    dfl_tensor *lp = dfl_flow_log_prob(ctx, f, dfl_tensor_wrap(ctx, x, vec ? 2 : 4, sh));
    if (!lp) print_error("%s log_prob: %s\n", what, dfl_last_error());
    assert_non_null(lp);
    dfl_tensor *ld = NULL;
    dfl_tensor *zz = dfl_flow_forward(ctx, f, dfl_tensor_wrap(ctx, x, vec ? 2 : 4, sh), &ld);
    dfl_tensor *bl = dfl_base_log_prob(ctx, cfg.base, zz);
    for (int i = 0; i < N; i++) CHECK_CLOSE(lp->data[i], bl->data[i] + ld->data[i], 1e-3 * fmax(1.0, fabs(lp->data[i])));
    dfl_ctx_free(ctx);
    dfl_flow_free(f);
    free(x);
    free(z);
}

static void small_nice(dfl_flow_cfg *c) { c->hidden = 24; c->depth = 2; }
static void small_net(dfl_flow_cfg *c) { c->net_width = 8; c->blocks = 1; c->steps = 2; }
static void plain_glow(dfl_flow_cfg *c) { small_net(c); c->lu = 0; }
static void additive_glow(dfl_flow_cfg *c) { small_net(c); c->additive = 1; }

static void test_models_2d(void **state)
{
    (void)state;
    for (int k = 0; k < 3; k++) model_case((dfl_flow_kind)k, 2, 0, 0, 4, 1, NULL);
    model_case(DFL_FLOW_GLOW, 2, 0, 0, 4, 1, plain_glow);
    model_case(DFL_FLOW_REALNVP, 5, 0, 0, 3, 1, NULL); /* odd D */
}

static void test_models_images_small(void **state)
{
    (void)state;
    /* whole-model Jacobians on 1x4x4 (D = 16) */
    model_case(DFL_FLOW_NICE, 1, 4, 4, 2, 1, small_nice);
    model_case(DFL_FLOW_REALNVP, 1, 4, 4, 2, 1, small_net);
    model_case(DFL_FLOW_GLOW, 1, 4, 4, 2, 1, small_net);
    model_case(DFL_FLOW_GLOW, 1, 4, 4, 2, 1, plain_glow);
    model_case(DFL_FLOW_GLOW, 1, 4, 4, 2, 1, additive_glow);
    /* round trips on 2x8x8 with the preset networks */
    model_case(DFL_FLOW_REALNVP, 2, 8, 8, 2, 0, NULL);
    model_case(DFL_FLOW_GLOW, 2, 8, 8, 2, 0, NULL);
}

static void test_models_28(void **state)
{
    (void)state;
    for (int k = 0; k < 3; k++) model_case((dfl_flow_kind)k, 1, 28, 28, 1, 0, NULL);
}


/* Parameter gradients of sum log p(x) through the whole flow against central differences on
 * randomly chosen entries of every parameter tensor (the ops are checked one by one in
 * test_ops_math; this checks their composition and that no parameter is left off the tape). */
static void grad_case(dfl_flow_kind k, int C, int H, int W, void (*tweak)(dfl_flow_cfg *))
{
    dfl_flow_cfg cfg;
    assert_int_equal(dfl_flow_preset(k, C, H, W, &cfg), DFL_OK);
    if (tweak) tweak(&cfg);
    int N = 3;
    float *x;
    dfl_flow *f = make_flow(&cfg, N, &x);
    int vec = H == 0, sh[4] = {N, C, H, W};
    dfl_params *ps = dfl_flow_params(f);
    dfl_ctx *ctx = dfl_ctx_new();
    dfl_params_zero_grad(ps);
    dfl_tensor *lp = dfl_flow_log_prob(ctx, f, dfl_tensor_wrap(ctx, x, vec ? 2 : 4, sh));
    assert_non_null(lp);
    assert_int_equal(dfl_backward(ctx, dfl_sum(ctx, lp)), DFL_OK);
    dfl_ctx_set_grad(ctx, 0);
    int checked = 0;
    for (int i = 0; i < ps->n; i++) {
        dfl_tensor *t = ps->p[i].t;
        for (int rep = 0; rep < 2; rep++) {
            size_t e = dfl_rng_below(&g_rng, (uint32_t)t->n);
            float keep = t->data[e];
            double h = 1e-2 * fmax(0.1, fabs(keep)), L[2];
            for (int sgn = 0; sgn < 2; sgn++) {
                t->data[e] = keep + (float)(sgn ? -h : h);
                dfl_ctx_reset(ctx);
                dfl_tensor *l = dfl_flow_log_prob(ctx, f, dfl_tensor_wrap(ctx, x, vec ? 2 : 4, sh));
                assert_non_null(l);
                L[sgn] = 0;
                for (int s = 0; s < N; s++) L[sgn] += l->data[s];
            }
            t->data[e] = keep;
            double num = (L[0] - L[1]) / (2 * h), got = t->grad[e];
            /* float32 forward: the difference quotient carries ~1e-6 |L| / h of rounding */
            double tol = 2e-2 * fabs(num) + 5e-5 * (fabs(L[0]) + 1) / h;
            if (!(fabs(num - got) <= tol)) {
                print_error("%s %s[%zu]: grad %.6g, finite difference %.6g\n", dfl_flow_kind_name(k), ps->p[i].name, e, got, num);
                fail();
            }
            checked++;
        }
    }
    assert_true(checked >= 2 * ps->n);
    dfl_ctx_free(ctx);
    dfl_flow_free(f);
    free(x);
}

static void test_param_grads(void **state)
{
    (void)state;
    for (int k = 0; k < 3; k++) grad_case((dfl_flow_kind)k, 2, 0, 0, NULL);
    grad_case(DFL_FLOW_REALNVP, 1, 4, 4, small_net);
    grad_case(DFL_FLOW_GLOW, 1, 4, 4, small_net);
    grad_case(DFL_FLOW_GLOW, 1, 4, 4, plain_glow);
}

/* A 2-D model's density integrates to 1 (reference/flows.md 3.2.5): midpoint rule on
 * [-8, 8]^2 with step 1/15, at perturbed parameters. */
static void test_density_integrates(void **state)
{
    (void)state;
    for (int k = 0; k < 3; k++) {
        dfl_flow_cfg cfg;
        assert_int_equal(dfl_flow_preset((dfl_flow_kind)k, 2, 0, 0, &cfg), DFL_OK);
        float *x;
        dfl_flow *f = make_flow(&cfg, 4, &x);
        const int M = 240;
        const double lo = -8.0, step = 16.0 / M;
        float *g = malloc((size_t)M * 2 * sizeof *g);
        int sh[2] = {M, 2};
        dfl_ctx *ctx = dfl_ctx_new();
        dfl_ctx_set_grad(ctx, 0);
        double mass = 0;
        for (int i = 0; i < M; i++) {
            for (int j = 0; j < M; j++) {
                g[2 * j] = (float)(lo + (i + 0.5) * step);
                g[2 * j + 1] = (float)(lo + (j + 0.5) * step);
            }
            dfl_ctx_reset(ctx);
            dfl_tensor *lp = dfl_flow_log_prob(ctx, f, dfl_tensor_wrap(ctx, g, 2, sh));
            assert_non_null(lp);
            for (int j = 0; j < M; j++) mass += exp(lp->data[j]) * step * step;
        }
        print_message("%s 2-D: integral of the density on [-8, 8]^2 = %.5f\n", dfl_flow_kind_name((dfl_flow_kind)k), mass);
        CHECK_CLOSE(mass, 1.0, 1e-2);
        dfl_ctx_free(ctx);
        dfl_flow_free(f);
        free(g);
        free(x);
    }
}

/* ------------------------------------------------------------------ closed forms */

static void test_base_densities(void **state)
{
    (void)state;
    dfl_ctx *ctx = dfl_ctx_new();
    int sh[2] = {2, 5};
    dfl_tensor *z = dfl_tensor_zeros(ctx, 2, sh);
    dfl_tensor *ln = dfl_base_log_prob(ctx, DFL_BASE_NORMAL, z), *ll = dfl_base_log_prob(ctx, DFL_BASE_LOGISTIC, z);
    CHECK_CLOSE(ln->data[1], 5 * -0.5 * log(2 * 3.14159265358979323846), 1e-5);
    CHECK_CLOSE(ll->data[0], 5 * -2 * log(2.0), 1e-5);
    /* away from 0: normal -(ln 2 pi + z^2)/2, logistic ln(e^-z / (1 + e^-z)^2) */
    float v[2] = {1.5f, -3.0f};
    int s1[2] = {1, 2};
    dfl_tensor *t = dfl_tensor_wrap(ctx, v, 2, s1);
    double refn = 0, refl = 0;
    for (int i = 0; i < 2; i++) {
        refn += -0.5 * (log(2 * 3.14159265358979323846) + v[i] * v[i]);
        refl += -v[i] - 2 * log1p(exp(-v[i]));
    }
    CHECK_CLOSE(dfl_base_log_prob(ctx, DFL_BASE_NORMAL, t)->data[0], refn, 1e-5);
    CHECK_CLOSE(dfl_base_log_prob(ctx, DFL_BASE_LOGISTIC, t)->data[0], refl, 1e-5);
    dfl_ctx_free(ctx);
}

/* A flow that is uniform on the cube (reference/flows.md 1.2 and 3.1): the dequantization layer
 * maps x = v + u in [0, 256)^D to [-1, 1)^D (log-det -D ln 128); the logit (alpha a) and the
 * logistic base give the density ((1 - 2a)/2)^D there (the logit's log-det ln((1 - 2a)/2) - ln s(1 - s)
 * plus the logistic ln s(1 - s)); every other layer of a fresh RealNVP is the identity
 * (zero-initialised coupling and prior convs) or a permutation (squeeze). So
 * log p(x) = D ln((1 - 2a)/256) for every x: with a = 1e-6 (cfg.logit_alpha 0 builds no logit
 * layer), bits/dim = -log p / (D ln 2) = 8 - log2(1 - 2a) = 8.000003, with no constant added
 * outside the flow. */
static void test_uniform_bpd(void **state)
{
    (void)state;
    dfl_flow_cfg cfg;
    assert_int_equal(dfl_flow_preset(DFL_FLOW_REALNVP, 1, 28, 28, &cfg), DFL_OK);
    assert_int_equal(cfg.dequant_bits, 8);
    cfg.base = DFL_BASE_LOGISTIC;
    const double alpha = 1e-6;
    cfg.logit_alpha = (float)alpha;
    dfl_rng r;
    dfl_rng_init(&r, 4);
    dfl_flow *f = dfl_flow_new(&cfg, &r);
    assert_non_null(f);
    int N = 4, D = dfl_flow_dim(f), sh[4] = {N, 1, 28, 28};
    assert_string_equal(dfl_bij_name(dfl_flow_bij(f, 0)), "realnvp.dequant");
    uint8_t *v = malloc((size_t)N * D);
    for (int i = 0; i < N * D; i++) v[i] = (uint8_t)dfl_rng_below(&g_rng, 256);
    v[0] = 0;
    v[1] = 255;
    double *xd = malloc((size_t)N * D * sizeof *xd);
    dfl_rng ru, rq;
    dfl_rng_init(&ru, 8);
    dfl_rng_init(&rq, 8);
    dfl_flow_dequantize8(v, (size_t)N * D, &ru, xd);
    /* the same uniforms as dfl_dequantize8: y = -1 + 2 x / 256 */
    double *yd = malloc((size_t)N * D * sizeof *yd);
    dfl_dequantize8(v, (size_t)N * D, &rq, yd);
    float *x = malloc((size_t)N * D * sizeof *x);
    for (int i = 0; i < N * D; i++) {
        assert_true(xd[i] >= v[i] && xd[i] < v[i] + 1.0);
        CHECK_CLOSE(-1.0 + 2.0 * xd[i] / 256.0, yd[i], 1e-12);
        x[i] = (float)xd[i];
    }
    dfl_ctx *ctx = dfl_ctx_new();
    dfl_ctx_set_grad(ctx, 0);
    /* the dequantization layer alone: log-det D ln(2/256) */
    dfl_tensor *ld = NULL;
    assert_non_null(dfl_bij_forward(ctx, dfl_flow_bij(f, 0), dfl_tensor_wrap(ctx, x, 4, sh), &ld));
    for (int i = 0; i < N; i++) CHECK_CLOSE(ld->data[i], D * log(2.0 / 256.0), 1e-3);
    dfl_tensor *lp = dfl_flow_log_prob(ctx, f, dfl_tensor_wrap(ctx, x, 4, sh));
    assert_non_null(lp);
    for (int i = 0; i < N; i++) {
        double bpd = -lp->data[i] / (D * log(2.0));
        double want = D * log((1 - 2 * (double)cfg.logit_alpha) / 256.0);
        print_message("uniform flow, 1x28x28: log p = %.4f (D ln((1 - 2a)/256) = %.4f), %.6f bits/dim\n", lp->data[i],
                      want, bpd);
        CHECK_CLOSE(lp->data[i], want, 2e-2);
        CHECK_CLOSE(bpd, 8.0, 1e-5);
    }
    dfl_ctx_free(ctx);
    dfl_flow_free(f);
    free(v);
    free(xd);
    free(yd);
    free(x);
}

/* Glow's learned top prior: log p with learn_top = 1 minus log p with learn_top = 0 (the same
 * layers: the prior's parameters draw nothing from the rng) equals, for the top latent z of the
 * second flow, sum log N(z; mean, exp(2 logs)) - sum log N(z; 0, 1), computed here by hand in
 * double at random mean and logs. Sampling at temperature 0 lands on f^-1 with the top at mean. */
static void test_learned_top(void **state)
{
    (void)state;
    for (int img = 0; img < 2; img++) {
        dfl_flow_cfg cfg;
        assert_int_equal(dfl_flow_preset(DFL_FLOW_GLOW, img ? 1 : 3, img ? 4 : 0, img ? 4 : 0, &cfg), DFL_OK);
        small_net(&cfg);
        assert_int_equal(cfg.learn_top, img); /* preset: images 1, vectors 0 */
        cfg.learn_top = 1;
        dfl_flow_cfg c0 = cfg;
        c0.learn_top = 0;
        dfl_rng r1, r0;
        dfl_rng_init(&r1, 31);
        dfl_rng_init(&r0, 31);
        dfl_flow *f1 = dfl_flow_new(&cfg, &r1), *f0 = dfl_flow_new(&c0, &r0);
        assert_non_null(f1);
        assert_non_null(f0);
        dfl_params *p1 = dfl_flow_params(f1), *p0 = dfl_flow_params(f0);
        assert_int_equal(p1->n, p0->n + 2);
        dfl_tensor *mean = dfl_params_find(p1, "glow.top.mean"), *logs = dfl_params_find(p1, "glow.top.logs");
        assert_non_null(mean);
        assert_non_null(logs);
        for (int i = 0; i < p0->n; i++) { /* same layers, perturbed alike */
            assert_string_equal(p0->p[i].name, p1->p[i].name);
            for (size_t k = 0; k < p0->p[i].t->n; k++) {
                float d = 0.05f * (float)dfl_rng_normal(&g_rng);
                p0->p[i].t->data[k] += d;
                p1->p[i].t->data[k] += d;
            }
        }
        for (size_t k = 0; k < mean->n; k++) {
            mean->data[k] = (float)(0.5 * dfl_rng_normal(&g_rng));
            logs->data[k] = (float)(0.4 * dfl_rng_normal(&g_rng));
        }
        int N = 3, D = dfl_flow_dim(f0), sh[4] = {N, cfg.channels, cfg.height, cfg.width};
        int T = (int)mean->n; /* the top latent: the last T entries of the flattened latent */
        float *x = img ? rand_pixels((size_t)N * D) : rand_data((size_t)N * D, 0);
        dfl_ctx *ctx = dfl_ctx_new();
        dfl_ctx_set_grad(ctx, 0);
        dfl_tensor *xt = dfl_tensor_wrap(ctx, x, img ? 4 : 2, sh);
        dfl_tensor *l1 = dfl_flow_log_prob(ctx, f1, xt), *l0 = dfl_flow_log_prob(ctx, f0, xt);
        dfl_tensor *z0 = dfl_flow_forward(ctx, f0, xt, NULL);
        assert_non_null(l1);
        assert_non_null(l0);
        assert_non_null(z0);
        for (int n = 0; n < N; n++) {
            double want = 0;
            for (int k = 0; k < T; k++) {
                double z = z0->data[(size_t)n * D + (D - T) + k], m = mean->data[k], ls = logs->data[k];
                want += -0.5 * (log(2 * 3.14159265358979323846) + 2 * ls + (z - m) * (z - m) * exp(-2 * ls)) + 0.5 * (log(2 * 3.14159265358979323846) + z * z);
            }
            CHECK_CLOSE(l1->data[n] - l0->data[n], want, 2e-3 * fmax(1.0, fabs(want)));
        }
        /* temperature 0: the top latent is the mean; f1^-1 of the zero latent = f0^-1 of (0, mean) */
        float *a = malloc((size_t)D * sizeof *a);
        dfl_rng rs;
        dfl_rng_init(&rs, 1);
        assert_int_equal(dfl_flow_sample(ctx, f1, 1, 0.0, &rs, a), DFL_OK);
        int zs[2] = {1, D};
        dfl_tensor *zm = dfl_tensor_zeros(ctx, 2, zs);
        for (int k = 0; k < T; k++) zm->data[D - T + k] = mean->data[k];
        dfl_tensor *xb = dfl_flow_inverse(ctx, f0, zm, NULL);
        assert_non_null(xb);
        assert_true(max_abs_diff(a, xb->data, (size_t)D) <= 1e-4 * fmax(1.0, max_abs(a, (size_t)D)));
        free(a);
        free(x);
        dfl_ctx_free(ctx);
        dfl_flow_free(f1);
        dfl_flow_free(f0);
    }
}

static void test_actnorm_init(void **state)
{
    (void)state;
    dfl_flow_cfg cfg;
    assert_int_equal(dfl_flow_preset(DFL_FLOW_GLOW, 1, 8, 8, &cfg), DFL_OK);
    small_net(&cfg);
    dfl_rng r;
    dfl_rng_init(&r, 5);
    dfl_flow *f = dfl_flow_new(&cfg, &r);
    assert_non_null(f);
    assert_false(dfl_flow_initialized(f));
    int N = 16, sh[4] = {N, 1, 8, 8};
    float *x = rand_pixels((size_t)N * 64);
    dfl_ctx *ctx = dfl_ctx_new();
    dfl_tensor *xt = dfl_tensor_wrap(ctx, x, 4, sh);
    assert_int_equal(dfl_flow_data_init(ctx, f, xt), DFL_OK);
    assert_true(dfl_flow_initialized(f));
    assert_true(dfl_params_find(dfl_flow_buffers(f), "actnorm_initialized")->data[0] == 1.0f);
    /* every ActNorm output on the init batch: per-channel mean 0, variance 1 */
    dfl_ctx_set_grad(ctx, 0);
    dfl_tensor *h = xt;
    int checked = 0;
    for (int i = 0; i < dfl_flow_nbij(f); i++) {
        dfl_bijection *b = dfl_flow_bij(f, i);
        dfl_tensor *y = dfl_bij_forward(ctx, b, h, NULL);
        assert_non_null(y);
        if (strstr(dfl_bij_name(b), "actnorm")) {
            int C = y->shape[1], S = y->shape[2] * y->shape[3];
            for (int c = 0; c < C; c++) {
                double m = 0, v = 0;
                for (int n = 0; n < N; n++)
                    for (int s = 0; s < S; s++) m += y->data[((size_t)n * C + c) * S + s];
                m /= N * S;
                for (int n = 0; n < N; n++)
                    for (int s = 0; s < S; s++) {
                        double d = y->data[((size_t)n * C + c) * S + s] - m;
                        v += d * d;
                    }
                v /= N * S;
                CHECK_CLOSE(m, 0.0, 1e-5);
                CHECK_CLOSE(v, 1.0, 1e-4);
            }
            checked++;
        }
        h = strstr(dfl_bij_name(b), "split") ? dfl_slice_channels(ctx, y, 0, (y->shape[1] + 1) / 2) : y;
    }
    assert_int_equal(checked, 2 * cfg.steps);
    /* a second data_init changes nothing */
    dfl_params *ps = dfl_flow_params(f);
    size_t tot = dfl_params_count(ps), o = 0;
    float *snap = malloc(tot * sizeof *snap);
    for (int i = 0; i < ps->n; i++, o += 0) {
        memcpy(snap + o, ps->p[i].t->data, ps->p[i].t->n * sizeof(float));
        o += ps->p[i].t->n;
    }
    for (size_t i = 0; i < (size_t)N * 64; i++) x[i] = 0.5f * x[i] + 10.0f;
    assert_int_equal(dfl_flow_data_init(ctx, f, dfl_tensor_wrap(ctx, x, 4, sh)), DFL_OK);
    o = 0;
    for (int i = 0; i < ps->n; i++) {
        assert_memory_equal(snap + o, ps->p[i].t->data, ps->p[i].t->n * sizeof(float));
        o += ps->p[i].t->n;
    }
    free(snap);
    free(x);
    dfl_ctx_free(ctx);
    dfl_flow_free(f);
}

static void test_invconv_lu(void **state)
{
    (void)state;
    int C = 6, H = 3, W = 2;
    dfl_params ps = {0}, bufs = {0};
    dfl_bijection *b = dfl_bij_invconv_new("conv", C, H, W, 1, &ps, &bufs, &g_rng);
    assert_non_null(b);
    assert_non_null(dfl_params_find(&bufs, "conv.perm"));
    assert_non_null(dfl_params_find(&bufs, "conv.sign"));
    /* at init W is orthogonal: W W^T = I */
    double Wd[36], A[36];
    assert_int_equal(dfl_bij_invconv_weight(b, Wd), DFL_OK);
    for (int i = 0; i < C; i++)
        for (int j = 0; j < C; j++) {
            double s = 0;
            for (int k = 0; k < C; k++) s += Wd[i * C + k] * Wd[j * C + k];
            CHECK_CLOSE(s, i == j, 1e-6);
        }
    perturb(&ps, &g_rng);
    assert_int_equal(dfl_bij_invconv_weight(b, Wd), DFL_OK);
    /* W W^-1 = I with the library's float64 inverse */
    dfl_ctx *ctx = dfl_ctx_new();
    int sh[2] = {C, C};
    dfl_tensor *wt = dfl_tensor_tmp(ctx, 2, sh);
    for (int i = 0; i < C * C; i++) wt->data[i] = (float)Wd[i];
    dfl_tensor *wi = dfl_mat_inverse(ctx, wt);
    assert_non_null(wi);
    for (int i = 0; i < C; i++)
        for (int j = 0; j < C; j++) {
            double s = 0;
            for (int k = 0; k < C; k++) s += (double)wt->data[i * C + k] * wi->data[k * C + j];
            CHECK_CLOSE(s, i == j, 1e-6);
        }
    /* log-det = H W ln|det W| by an independent LU in double */
    memcpy(A, Wd, sizeof A);
    double ref = H * W * ref_logabsdet(A, C);
    int xs[4] = {2, C, H, W};
    dfl_tensor *ld = NULL;
    assert_non_null(dfl_bij_forward(ctx, b, dfl_tensor_zeros(ctx, 4, xs), &ld));
    CHECK_CLOSE(ld->data[0], ref, 1e-5 * fmax(1, fabs(ref)));
    CHECK_CLOSE(ld->data[1], ref, 1e-5 * fmax(1, fabs(ref)));
    /* error codes of dfl_bij_invconv_weight: a corrupt permutation buffer (a checkpoint's) is
     * DFL_ERR_FORMAT naming the layer, W untouched; not a 1x1 conv or no W: DFL_ERR_ARG */
    dfl_tensor *pb = dfl_params_find(&bufs, "conv.perm");
    float keep = pb->data[1];
    double W2[36];
    W2[0] = 123.0;
    pb->data[1] = 2.5f;
    assert_int_equal(dfl_bij_invconv_weight(b, W2), DFL_ERR_FORMAT);
    assert_non_null(strstr(dfl_last_error(), "conv: permutation/sign buffer is invalid at 1"));
    pb->data[1] = pb->data[0]; /* a repeated row */
    assert_int_equal(dfl_bij_invconv_weight(b, W2), DFL_ERR_FORMAT);
    assert_non_null(strstr(dfl_last_error(), "repeats row"));
    assert_true(W2[0] == 123.0);
    pb->data[1] = keep;
    assert_int_equal(dfl_bij_invconv_weight(b, W2), DFL_OK);
    assert_memory_equal(W2, Wd, sizeof W2);
    assert_int_equal(dfl_bij_invconv_weight(b, NULL), DFL_ERR_ARG);
    dfl_params sp = {0};
    dfl_bijection *sq = dfl_bij_scaling_new("scale", 2, 0, 0, &sp);
    assert_int_equal(dfl_bij_invconv_weight(sq, W2), DFL_ERR_ARG);
    dfl_bij_free(sq);
    dfl_params_free(&sp);
    dfl_ctx_free(ctx);
    dfl_bij_free(b);
    dfl_params_free(&ps);
    dfl_params_free(&bufs);
}

/* Pitfall 8 (reference/flows.md): at extreme scales of an LU 1x1 conv the layer's log-det, H W
 * sum log_s, must still be ln|det| of the map it applies. W is composed in float64 from the float32
 * factors (dfl_bij_invconv_weight); the test checks that the layer applies W (outputs against
 * W x in double) and compares the log-det with an independent float64 LU of W, on scales up to the
 * refusal (condition number 1e7). The product rounded to float32, which a single composed weight
 * would apply, drifts (printed). Beyond the limit the layer is refused, naming it. */
static void test_invconv_lu_extreme(void **state)
{
    (void)state;
    enum { C = 6 };
    static const float scales[][C] = {{-13, 0, 0.5f, 1, -0.5f, 0},
                                      {-6, 1, -5, 1, 0, 2},
                                      {-2, -2, -2, -2, -2, -2},
                                      {6, 5, -2, 4, 3, 6},
                                      {-3, 3, -3, 3, -3, 3},
                                      {-12, -12, -12, -12, -12, -12}}; /* the last: refused */
    const size_t ns = sizeof scales / sizeof scales[0];
    for (size_t t = 0; t < ns; t++) {
        dfl_params ps = {0}, bufs = {0};
        dfl_bijection *b = dfl_bij_invconv_new("conv", C, 0, 0, 1, &ps, &bufs, &g_rng);
        assert_non_null(b);
        dfl_tensor *L = dfl_params_find(&ps, "conv.lower"), *U = dfl_params_find(&ps, "conv.upper"),
                   *ls = dfl_params_find(&ps, "conv.log_s");
        for (int i = 0; i < C; i++) {
            ls->data[i] = scales[t][i];
            for (int j = 0; j < C; j++) {
                if (j < i) L->data[i * C + j] += (float)(0.2 * dfl_rng_normal(&g_rng));
                if (j > i) U->data[i * C + j] += (float)(0.2 * dfl_rng_normal(&g_rng));
            }
        }
        double Wd[C * C], A[C * C], lsum = 0;
        assert_int_equal(dfl_bij_invconv_weight(b, Wd), DFL_OK);
        for (int i = 0; i < C; i++) lsum += ls->data[i];
        memcpy(A, Wd, sizeof A);
        double ref = ref_logabsdet(A, C);
        for (int i = 0; i < C * C; i++) A[i] = (float)Wd[i];
        double ref32 = ref_logabsdet(A, C);
        dfl_ctx *ctx = dfl_ctx_new();
        dfl_ctx_set_grad(ctx, 0);
        int N = 4, sh[2] = {N, C};
        float *x = rand_data((size_t)N * C, 0);
        dfl_tensor *ld = NULL;
        dfl_tensor *y = dfl_bij_forward(ctx, b, dfl_tensor_wrap(ctx, x, 2, sh), &ld);
        if (t + 1 == ns) { /* beyond the condition-number limit */
            assert_null(y);
            assert_non_null(strstr(dfl_last_error(), "conv: 1x1 conv weight is singular or near-singular"));
            print_message("LU 1x1 conv, log_s = -12 x 6: refused (%s); float64 LU of W gives %.3f, float32 %.3f, "
                          "true %.3f\n", dfl_last_error(), ref, ref32, lsum);
        } else {
            if (!y) print_error("scales %zu: %s\n", t, dfl_last_error());
            assert_non_null(y);
            print_message("LU 1x1 conv, log_s set %zu: layer log-det %.7f, float64 ln|det W| %.7f, float32-rounded W %.7f\n",
                          t, ld->data[0], ref, ref32);
            CHECK_CLOSE(ref, lsum, 1e-8 * fmax(1, fabs(lsum)));
            for (int n = 0; n < N; n++) CHECK_CLOSE(ld->data[n], ref, 1e-6 * fmax(1, fabs(ref)));
            /* the layer applies W: y = W x up to float32 rounding of the two factor products */
            for (int n = 0; n < N; n++)
                for (int i = 0; i < C; i++) {
                    double want = 0, mag = 0;
                    for (int j = 0; j < C; j++) {
                        want += Wd[i * C + j] * x[n * C + j];
                        mag += fabs(Wd[i * C + j] * x[n * C + j]);
                    }
                    CHECK_CLOSE(y->data[n * C + i], want, 1e-5 * fmax(1e-3, mag));
                }
        }
        free(x);
        dfl_ctx_free(ctx);
        dfl_bij_free(b);
        dfl_params_free(&ps);
        dfl_params_free(&bufs);
    }
}

/* A fresh flow of cfg with entries [i0, i1) (i1 < 0: all) of parameter `param` set to v: its
 * log p of x (2, 1, 4, 4) must fail with a message containing msg. Returns the flow. */
static dfl_flow *poisoned(const dfl_flow_cfg *cfg, dfl_rng *r, const char *param, int i0, int i1, float v,
                          dfl_ctx *ctx, float *x, const char *msg)
{
    dfl_flow *f = dfl_flow_new(cfg, r);
    assert_non_null(f);
    dfl_tensor *p = dfl_params_find(dfl_flow_params(f), param);
    assert_non_null(p);
    for (size_t i = (size_t)i0; i < (i1 < 0 ? p->n : (size_t)i1); i++) p->data[i] = v;
    int sh[4] = {2, 1, 4, 4};
    dfl_ctx_reset(ctx);
    assert_null(dfl_flow_log_prob(ctx, f, dfl_tensor_wrap(ctx, x, 4, sh)));
    assert_non_null(strstr(dfl_last_error(), msg));
    return f;
}

static void test_errors(void **state)
{
    (void)state;
    dfl_rng r;
    dfl_rng_init(&r, 3);
    /* an image size a squeeze cannot divide: the layer is named */
    dfl_flow_cfg cfg;
    assert_int_equal(dfl_flow_preset(DFL_FLOW_GLOW, 1, 28, 28, &cfg), DFL_OK);
    cfg.levels = 3;
    assert_null(dfl_flow_new(&cfg, &r));
    assert_non_null(strstr(dfl_last_error(), "glow.2.squeeze: height 7 is odd"));
    assert_int_equal(dfl_flow_preset(DFL_FLOW_REALNVP, 1, 14, 14, &cfg), DFL_OK);
    cfg.scales = 3;
    assert_null(dfl_flow_new(&cfg, &r));
    assert_non_null(strstr(dfl_last_error(), "realnvp.1.squeeze"));
    /* a singular plain 1x1 conv is refused, naming the layer */
    assert_int_equal(dfl_flow_preset(DFL_FLOW_GLOW, 1, 4, 4, &cfg), DFL_OK);
    small_net(&cfg);
    cfg.lu = 0;
    dfl_flow *f = dfl_flow_new(&cfg, &r);
    assert_non_null(f);
    dfl_tensor *w = dfl_params_find(dfl_flow_params(f), "glow.0.1.invconv.weight");
    assert_non_null(w);
    int C = w->shape[0];
    for (int j = 0; j < C; j++) w->data[1 * C + j] = 2.0f * w->data[0 * C + j]; /* row 1 = 2 row 0 */
    int sh[4] = {2, 1, 4, 4};
    float *x = rand_pixels(32);
    dfl_ctx *ctx = dfl_ctx_new();
    assert_null(dfl_flow_log_prob(ctx, f, dfl_tensor_wrap(ctx, x, 4, sh)));
    assert_non_null(strstr(dfl_last_error(), "glow.0.1.invconv"));
    assert_non_null(strstr(dfl_last_error(), "singular"));
    float *out = malloc(32 * sizeof *out);
    assert_int_not_equal(dfl_flow_sample(ctx, f, 2, 1.0, &r, out), DFL_OK);
    assert_non_null(strstr(dfl_last_error(), "glow.0.1.invconv"));
    dfl_flow_free(f);
    /* a NaN log-det names the layer; so does an ActNorm log scale of +inf */
    dfl_flow_free(poisoned(&cfg, &r, "glow.1.0.actnorm.logs", 2, 3, NAN, ctx, x, "glow.1.0.actnorm: log-det is nan"));
    dfl_flow_free(poisoned(&cfg, &r, "glow.1.0.actnorm.logs", 0, 1, INFINITY, ctx, x, "glow.1.0.actnorm: log-det is inf"));
    /* a near-singular LU 1x1 conv (every log_s = -20: |det W| = e^-80) is refused, naming the layer */
    cfg.lu = 1;
    f = poisoned(&cfg, &r, "glow.0.1.invconv.log_s", 0, -1, -20.0f, ctx, x,
                 "glow.0.1.invconv: 1x1 conv weight is singular or near-singular");
    assert_int_equal(dfl_flow_sample(ctx, f, 2, 1.0, &r, out), DFL_ERR_NUMERIC);
    assert_non_null(strstr(dfl_last_error(), "glow.0.1.invconv"));
    /* wrong input shape */
    int bad[4] = {2, 1, 4, 5};
    float *xb = rand_pixels(40);
    assert_null(dfl_flow_log_prob(ctx, f, dfl_tensor_wrap(ctx, xb, 4, bad)));
    assert_non_null(strstr(dfl_last_error(), "expected (N, 1, 4, 4)"));
    dfl_flow_free(f);
    /* unknown kind name */
    dfl_flow_kind k;
    assert_int_equal(dfl_flow_kind_parse("realnvp", &k), DFL_OK);
    assert_int_equal(k, DFL_FLOW_REALNVP);
    assert_int_not_equal(dfl_flow_kind_parse("maf", &k), DFL_OK);
    assert_string_equal(dfl_flow_kind_name(DFL_FLOW_GLOW), "glow");
    dfl_ctx_free(ctx);
    free(x);
    free(xb);
    free(out);
}

static void test_sampling(void **state)
{
    (void)state;
    for (int k = 0; k < 3; k++) {
        dfl_flow_cfg cfg;
        int img = k != DFL_FLOW_NICE;
        assert_int_equal(dfl_flow_preset((dfl_flow_kind)k, img ? 1 : 2, img ? 8 : 0, img ? 8 : 0, &cfg), DFL_OK);
        small_net(&cfg);
        float *x0;
        dfl_flow *f = make_flow(&cfg, 4, &x0);
        int D = dfl_flow_dim(f), n = 5;
        float *a = malloc((size_t)n * D * sizeof *a), *b = malloc((size_t)n * D * sizeof *b);
        dfl_ctx *ctx = dfl_ctx_new();
        dfl_rng r1, r2;
        /* same seed: byte-identical */
        dfl_rng_init(&r1, 77);
        dfl_rng_init(&r2, 77);
        assert_int_equal(dfl_flow_sample(ctx, f, n, 0.8, &r1, a), DFL_OK);
        assert_int_equal(dfl_flow_sample(ctx, f, n, 0.8, &r2, b), DFL_OK);
        assert_memory_equal(a, b, (size_t)n * D * sizeof *a);
        for (int i = 0; i < n * D; i++) assert_true(isfinite(a[i]));
        /* temperature 0: f^-1(0) for every sample, whatever the rng */
        assert_int_equal(dfl_flow_sample(ctx, f, n, 0.0, &r1, a), DFL_OK);
        int zs[2] = {n, D};
        dfl_ctx_set_grad(ctx, 0);
        dfl_tensor *x = dfl_flow_inverse(ctx, f, dfl_tensor_zeros(ctx, 2, zs), NULL);
        assert_non_null(x);
        assert_memory_equal(a, x->data, (size_t)n * D * sizeof(float));
        /* the same point for every sample (up to the batch-size dependent summation order of BLAS) */
        for (int s = 1; s < n; s++) assert_true(max_abs_diff(a + (size_t)s * D, a, (size_t)D) <= 1e-5 * fmax(1.0, max_abs(a, D)));
        free(a);
        free(b);
        free(x0);
        dfl_ctx_free(ctx);
        dfl_flow_free(f);
    }
}

/* A 2-D RealNVP on two moons: mean log-likelihood rises under 300 Adam steps. */
static void test_train_realnvp_2d(void **state)
{
    (void)state;
    dfl_flow_cfg cfg;
    assert_int_equal(dfl_flow_preset(DFL_FLOW_REALNVP, 2, 0, 0, &cfg), DFL_OK);
    cfg.couplings = 6;
    cfg.net_width = 64;
    dfl_rng r;
    dfl_rng_init(&r, 11);
    dfl_flow *f = dfl_flow_new(&cfg, &r);
    assert_non_null(f);
    dfl_adam opt;
    dfl_adam_cfg ac = {.lr = 2e-3f, .beta1 = 0.9f, .beta2 = 0.999f, .eps = 1e-8f, .batch = 256};
    assert_int_equal(dfl_adam_init(&opt, dfl_flow_params(f), &ac), DFL_OK);
    int N = 256, sh[2] = {N, 2};
    float *x = malloc((size_t)N * 2 * sizeof *x);
    float *test = malloc(1024 * 2 * sizeof *test);
    assert_int_equal(dfl_toy_sample("moons", &r, 1024, test), DFL_OK);
    dfl_ctx *ctx = dfl_ctx_new();
    int ts[2] = {1024, 2};
    double before = 0, after = 0;
    dfl_ctx_set_grad(ctx, 0);
    dfl_tensor *lp = dfl_flow_log_prob(ctx, f, dfl_tensor_wrap(ctx, test, 2, ts));
    for (int i = 0; i < 1024; i++) before += lp->data[i] / 1024;
    dfl_ctx_set_grad(ctx, 1);
    for (int step = 0; step < 300; step++) {
        dfl_ctx_reset(ctx);
        assert_int_equal(dfl_toy_sample("moons", &r, N, x), DFL_OK);
        dfl_tensor *l = dfl_flow_log_prob(ctx, f, dfl_tensor_wrap(ctx, x, 2, sh));
        assert_non_null(l);
        dfl_tensor *loss = dfl_scale(ctx, dfl_mean(ctx, l), -1.0f);
        dfl_params_zero_grad(dfl_flow_params(f));
        assert_int_equal(dfl_backward(ctx, loss), DFL_OK);
        assert_int_equal(dfl_adam_step(&opt, NULL), DFL_OK);
    }
    dfl_ctx_reset(ctx);
    dfl_ctx_set_grad(ctx, 0);
    lp = dfl_flow_log_prob(ctx, f, dfl_tensor_wrap(ctx, test, 2, ts));
    for (int i = 0; i < 1024; i++) after += lp->data[i] / 1024;
    print_message("realnvp 2-D moons: mean test log-lik %.4f -> %.4f after 300 steps (bound %.4f)\n", before, after,
                  dfl_toy_true_loglik_bound("moons"));
    assert_true(after > before + 0.5);
    assert_true(after < dfl_toy_true_loglik_bound("moons") + 0.1);
    dfl_adam_free(&opt);
    dfl_ctx_free(ctx);
    dfl_flow_free(f);
    free(x);
    free(test);
}

int main(void)
{
    /* one thread: these tensors are tiny, and OpenMP/BLAS threads only add overhead on the shared
     * 2-core machine (measured 6 s single-threaded vs 40 s with 2 threads under load) */
    dfl_set_threads(1);
    dfl_rng_init(&g_rng, 2024);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_base_densities),
        cmocka_unit_test(test_uniform_bpd),
        cmocka_unit_test(test_learned_top),
        cmocka_unit_test(test_bijections),
        cmocka_unit_test(test_split_bound),
        cmocka_unit_test(test_models_2d),
        cmocka_unit_test(test_models_images_small),
        cmocka_unit_test(test_models_28),
        cmocka_unit_test(test_param_grads),
        cmocka_unit_test(test_density_integrates),
        cmocka_unit_test(test_actnorm_init),
        cmocka_unit_test(test_invconv_lu),
        cmocka_unit_test(test_invconv_lu_extreme),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_sampling),
        cmocka_unit_test(test_train_realnvp_2d),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
