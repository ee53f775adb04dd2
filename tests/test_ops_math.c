/* Tests of the flow ops (ops.h, "flow ops", src/core/ops_math.c).
 *
 * (a) Forward values against closed forms (exp, softplus, squeeze index map, LU composition,
 *     inverse and ln|det| against hand-computed matrices).
 * (b) Every op's backward (dfl_backward_vjp with a random cotangent r) against central finite
 *     differences of L = sum(r * f(x)) evaluated in double from the float forward, for every input.
 */
#include "dfl_test.h"

#include "difflow/core.h"
#include "difflow/ops.h"

static dfl_rng g_rng;

/* An op under test: builds the output from the input tensors. */
typedef dfl_tensor *(*op_fn)(dfl_ctx *ctx, dfl_tensor **in, void *user);

/* L(in) = sum r * f(in) in double. */
static double loss_of(op_fn f, void *user, int nin, const int ndim[], const int (*shape)[4], float **vals,
                      const float *r)
{
    dfl_ctx *ctx = dfl_ctx_new();
    dfl_ctx_set_grad(ctx, 0);
    dfl_tensor *in[4];
    for (int i = 0; i < nin; i++) in[i] = dfl_tensor_wrap(ctx, vals[i], ndim[i], shape[i]);
    dfl_tensor *y = f(ctx, in, user);
    assert_non_null(y);
    double L = 0.0;
    for (size_t k = 0; k < y->n; k++) L += (double)r[k] * y->data[k];
    dfl_ctx_free(ctx);
    return L;
}

/* Checks the tape gradients of every input against central differences (step h, relative
 * tolerance tol on max|diff| / (max|ref| + 1e-3)). */
static void grad_check(const char *what, op_fn f, void *user, int nin, const int ndim[], const int (*shape)[4],
                       float **vals, double h, double tol)
{
    dfl_ctx *ctx = dfl_ctx_new();
    dfl_tensor *in[4];
    for (int i = 0; i < nin; i++) {
        in[i] = dfl_tensor_wrap(ctx, vals[i], ndim[i], shape[i]);
        in[i]->requires_grad = 1;
    }
    dfl_tensor *y = f(ctx, in, user);
    assert_non_null(y);
    float *r = malloc(y->n * sizeof *r);
    for (size_t k = 0; k < y->n; k++) r[k] = dfl_rng_normal(&g_rng);
    assert_int_equal(dfl_backward_vjp(ctx, y, r), DFL_OK);
    for (int i = 0; i < nin; i++) {
        double maxd = 0, maxr = 0;
        for (size_t k = 0; k < in[i]->n; k++) {
            float keep = vals[i][k];
            vals[i][k] = keep + (float)h;
            double lp = loss_of(f, user, nin, ndim, shape, vals, r);
            vals[i][k] = keep - (float)h;
            double lm = loss_of(f, user, nin, ndim, shape, vals, r);
            vals[i][k] = keep;
            double num = (lp - lm) / (2 * h);
            double got = in[i]->grad ? in[i]->grad[k] : 0.0;
            maxd = fmax(maxd, fabs(num - got));
            maxr = fmax(maxr, fabs(num));
        }
        double rel = maxd / (maxr + 1e-3);
        if (!(rel <= tol)) {
            print_error("%s input %d: grad rel err %.3g > %.3g (max|ref| %.3g)\n", what, i, rel, tol, maxr);
            fail();
        }
    }
    free(r);
    dfl_ctx_free(ctx);
}

static float *rand_vals(size_t n, float scale, float shift)
{
    float *p = malloc(n * sizeof *p);
    for (size_t i = 0; i < n; i++) p[i] = shift + scale * dfl_rng_normal(&g_rng);
    return p;
}

/* ------------------------------------------------------------------ elementwise */

typedef dfl_tensor *(*unary_op)(dfl_ctx *, dfl_tensor *);
static dfl_tensor *call_unary(dfl_ctx *ctx, dfl_tensor **in, void *u) { return ((unary_op *)u)[0](ctx, in[0]); }

static void test_unary_values(void **state)
{
    (void)state;
    dfl_ctx *ctx = dfl_ctx_new();
    float xv[5] = {-30.0f, -1.0f, 0.0f, 0.5f, 30.0f};
    int sh[1] = {5};
    dfl_tensor *x = dfl_tensor_wrap(ctx, xv, 1, sh);
    dfl_tensor *e = dfl_exp(ctx, x), *sp = dfl_softplus(ctx, x), *sg = dfl_sigmoid(ctx, x), *th = dfl_tanh(ctx, x),
               *rl = dfl_relu(ctx, x);
    for (int i = 0; i < 5; i++) {
        double v = xv[i];
        CHECK_REL(e->data[i], exp(v), 1e-6);
        CHECK_CLOSE(sp->data[i], log1p(exp(v)), 1e-6 * fmax(1.0, fabs(v)));
        CHECK_CLOSE(sg->data[i], 1.0 / (1.0 + exp(-v)), 1e-7);
        CHECK_CLOSE(th->data[i], tanh(v), 1e-7);
        CHECK_CLOSE(rl->data[i], v > 0 ? v : 0.0, 0);
    }
    float pv[3] = {0.1f, 0.5f, 0.9f};
    int s3 = 3;
    dfl_tensor *p = dfl_tensor_wrap(ctx, pv, 1, &s3);
    dfl_tensor *lg = dfl_logit(ctx, p), *lo = dfl_log(ctx, p);
    for (int i = 0; i < 3; i++) {
        CHECK_CLOSE(lg->data[i], log(pv[i] / (1.0 - pv[i])), 1e-6);
        CHECK_CLOSE(lo->data[i], log(pv[i]), 1e-7);
    }
    dfl_ctx_free(ctx);
}

static void test_unary_grads(void **state)
{
    (void)state;
    unary_op ops[] = {dfl_exp, dfl_tanh, dfl_sigmoid, dfl_relu, dfl_softplus};
    const char *names[] = {"exp", "tanh", "sigmoid", "relu", "softplus"};
    int nd[1] = {3};
    int sh[1][4] = {{2, 3, 4, 0}};
    for (int k = 0; k < 5; k++) {
        float *v = rand_vals(24, 1.0f, 0.0f);
        /* keep ReLU's inputs away from its kink */
        for (int i = 0; i < 24; i++)
            if (fabsf(v[i]) < 0.05f) v[i] = 0.3f;
        float *vals[1] = {v};
        grad_check(names[k], call_unary, &ops[k], 1, nd, (const int(*)[4])sh, vals, 1e-3, 2e-3);
        free(v);
    }
    /* log and logit on (0, 1) */
    unary_op pos[] = {dfl_log, dfl_logit};
    for (int k = 0; k < 2; k++) {
        float *v = malloc(24 * sizeof *v);
        for (int i = 0; i < 24; i++) v[i] = 0.1f + 0.8f * dfl_rng_uniform(&g_rng);
        float *vals[1] = {v};
        grad_check(k ? "logit" : "log", call_unary, &pos[k], 1, nd, (const int(*)[4])sh, vals, 1e-4, 3e-3);
        free(v);
    }
}

/* ------------------------------------------------------------------ shape ops */

static dfl_tensor *call_affine(dfl_ctx *ctx, dfl_tensor **in, void *u) { (void)u; return dfl_affine_scalar(ctx, in[0], -1.5f, 0.25f); }
static dfl_tensor *call_sum_ps(dfl_ctx *ctx, dfl_tensor **in, void *u) { (void)u; return dfl_sum_per_sample(ctx, in[0]); }
static dfl_tensor *call_reshape(dfl_ctx *ctx, dfl_tensor **in, void *u)
{
    (void)u;
    int sh[2] = {2, 12};
    return dfl_reshape(ctx, in[0], 2, sh);
}
static dfl_tensor *call_slice(dfl_ctx *ctx, dfl_tensor **in, void *u) { (void)u; return dfl_slice_channels(ctx, in[0], 1, 3); }
static dfl_tensor *call_take(dfl_ctx *ctx, dfl_tensor **in, void *u) { return dfl_take_alternate(ctx, in[0], *(int *)u); }
static dfl_tensor *call_merge(dfl_ctx *ctx, dfl_tensor **in, void *u) { (void)u; return dfl_merge_alternate(ctx, in[0], in[1]); }
static dfl_tensor *call_squeeze(dfl_ctx *ctx, dfl_tensor **in, void *u) { (void)u; return dfl_squeeze2x2(ctx, in[0]); }
static dfl_tensor *call_unsqueeze(dfl_ctx *ctx, dfl_tensor **in, void *u) { (void)u; return dfl_unsqueeze2x2(ctx, in[0]); }

static void test_shape_grads(void **state)
{
    (void)state;
    int nd4[1] = {4}, nd2[2] = {2, 2};
    int sh4[1][4] = {{2, 3, 2, 2}};
    float *v = rand_vals(24, 1.0f, 0.0f);
    float *vals[2] = {v, NULL};
    grad_check("affine_scalar", call_affine, NULL, 1, nd4, (const int(*)[4])sh4, vals, 1e-3, 1e-3);
    grad_check("sum_per_sample", call_sum_ps, NULL, 1, nd4, (const int(*)[4])sh4, vals, 1e-3, 1e-3);
    grad_check("reshape", call_reshape, NULL, 1, nd4, (const int(*)[4])sh4, vals, 1e-3, 1e-3);
    grad_check("slice_channels", call_slice, NULL, 1, nd4, (const int(*)[4])sh4, vals, 1e-3, 1e-3);
    int sq[1][4] = {{2, 2, 4, 6}};
    float *w = rand_vals(96, 1.0f, 0.0f);
    vals[0] = w;
    grad_check("squeeze2x2", call_squeeze, NULL, 1, nd4, (const int(*)[4])sq, vals, 1e-3, 1e-3);
    int usq[1][4] = {{2, 8, 2, 3}};
    grad_check("unsqueeze2x2", call_unsqueeze, NULL, 1, nd4, (const int(*)[4])usq, vals, 1e-3, 1e-3);
    int v2[1][4] = {{3, 5}};
    vals[0] = v;
    for (int s = 0; s < 2; s++) grad_check("take_alternate", call_take, &s, 1, nd2, (const int(*)[4])v2, vals, 1e-3, 1e-3);
    int m2[2][4] = {{3, 3}, {3, 2}};
    vals[1] = w;
    grad_check("merge_alternate", call_merge, NULL, 2, nd2, (const int(*)[4])m2, vals, 1e-3, 1e-3);
    free(v);
    free(w);
}

static void test_shape_values(void **state)
{
    (void)state;
    dfl_ctx *ctx = dfl_ctx_new();
    /* squeeze: y[n, 4c + 2dy + dx, i, j] = x[n, c, 2i + dy, 2j + dx] */
    int N = 2, C = 3, H = 4, W = 6;
    int sh[4] = {N, C, H, W};
    dfl_tensor *x = dfl_tensor_tmp(ctx, 4, sh);
    for (size_t i = 0; i < x->n; i++) x->data[i] = (float)i;
    dfl_tensor *y = dfl_squeeze2x2(ctx, x);
    assert_int_equal(y->shape[1], 12);
    assert_int_equal(y->shape[2], 2);
    assert_int_equal(y->shape[3], 3);
    for (int n = 0; n < N; n++)
        for (int c = 0; c < C; c++)
            for (int h = 0; h < H; h++)
                for (int w = 0; w < W; w++) {
                    int co = 4 * c + 2 * (h % 2) + (w % 2);
                    float got = y->data[(((size_t)n * 12 + co) * 2 + h / 2) * 3 + w / 2];
                    assert_true(got == x->data[(((size_t)n * C + c) * H + h) * W + w]);
                }
    dfl_tensor *back = dfl_unsqueeze2x2(ctx, y);
    assert_memory_equal(back->data, x->data, x->n * sizeof(float));
    /* odd size refused */
    int bad[4] = {1, 1, 3, 4};
    assert_null(dfl_squeeze2x2(ctx, dfl_tensor_zeros(ctx, 4, bad)));
    assert_non_null(strstr(dfl_last_error(), "even"));
    /* alternate partition round trip */
    int v[2] = {2, 5};
    dfl_tensor *a = dfl_tensor_tmp(ctx, 2, v);
    for (size_t i = 0; i < a->n; i++) a->data[i] = (float)i;
    dfl_tensor *e = dfl_take_alternate(ctx, a, 0), *o = dfl_take_alternate(ctx, a, 1);
    assert_int_equal(e->shape[1], 3);
    assert_int_equal(o->shape[1], 2);
    assert_true(e->data[1] == 2.0f && o->data[0] == 1.0f && e->data[3] == 5.0f);
    dfl_tensor *m = dfl_merge_alternate(ctx, e, o);
    assert_memory_equal(m->data, a->data, a->n * sizeof(float));
    /* per-sample sum */
    dfl_tensor *s = dfl_sum_per_sample(ctx, a);
    CHECK_CLOSE(s->data[0], 0 + 1 + 2 + 3 + 4, 0);
    CHECK_CLOSE(s->data[1], 5 + 6 + 7 + 8 + 9, 0);
    dfl_ctx_free(ctx);
}

/* ------------------------------------------------------------------ matrices */

typedef struct {
    int perm[4];
    float sign[4];
} lu_user;

static dfl_tensor *call_lu(dfl_ctx *ctx, dfl_tensor **in, void *u)
{
    lu_user *lu = u;
    return dfl_lu_weight(ctx, in[0], in[1], in[2], lu->perm, lu->sign);
}
static dfl_tensor *call_inv(dfl_ctx *ctx, dfl_tensor **in, void *u) { (void)u; return dfl_mat_inverse(ctx, in[0]); }
static dfl_tensor *call_lad(dfl_ctx *ctx, dfl_tensor **in, void *u) { (void)u; return dfl_mat_logabsdet(ctx, in[0]); }

static void test_matrix_values(void **state)
{
    (void)state;
    dfl_ctx *ctx = dfl_ctx_new();
    /* W = [[2, 1], [1, 3]]: det 5, inverse [[3, -1], [-1, 2]]/5 */
    float wv[4] = {2, 1, 1, 3};
    int sh[2] = {2, 2};
    dfl_tensor *w = dfl_tensor_wrap(ctx, wv, 2, sh);
    dfl_tensor *inv = dfl_mat_inverse(ctx, w), *lad = dfl_mat_logabsdet(ctx, w);
    CHECK_CLOSE(inv->data[0], 0.6, 1e-7);
    CHECK_CLOSE(inv->data[1], -0.2, 1e-7);
    CHECK_CLOSE(inv->data[3], 0.4, 1e-7);
    CHECK_CLOSE(lad->data[0], log(5.0), 1e-7);
    /* negative determinant: ln|det| */
    float nv[4] = {0, 1, 1, 0};
    CHECK_CLOSE(dfl_mat_logabsdet(ctx, dfl_tensor_wrap(ctx, nv, 2, sh))->data[0], 0.0, 1e-7);
    /* singular refused */
    float sv[4] = {1, 2, 2, 4};
    assert_null(dfl_mat_inverse(ctx, dfl_tensor_wrap(ctx, sv, 2, sh)));
    assert_null(dfl_mat_logabsdet(ctx, dfl_tensor_wrap(ctx, sv, 2, sh)));
    assert_non_null(strstr(dfl_last_error(), "singular"));
    /* LU composition: P swaps rows; L = [[1,0],[0.5,1]], U = [[_, 2], [_, _]], s = (2, -3) */
    float L[4] = {9, 9, 0.5f, 9}, U[4] = {9, 2, 9, 9}, ls[2] = {logf(2.0f), logf(3.0f)};
    int perm[2] = {1, 0};
    float sign[2] = {1, -1};
    dfl_tensor *W = dfl_lu_weight(ctx, dfl_tensor_wrap(ctx, L, 2, sh), dfl_tensor_wrap(ctx, U, 2, sh),
                                  dfl_tensor_wrap(ctx, ls, 1, sh), perm, sign);
    /* L U = [[1,0],[0.5,1]] [[2,2],[0,-3]] = [[2,2],[1,-2]]; P: rows (1, 0) */
    CHECK_CLOSE(W->data[0], 1.0, 1e-6);
    CHECK_CLOSE(W->data[1], -2.0, 1e-6);
    CHECK_CLOSE(W->data[2], 2.0, 1e-6);
    CHECK_CLOSE(W->data[3], 2.0, 1e-6);
    /* Gauss-Jordan inverse in double on a random 6x6 */
    double A[36], Ai[36];
    for (int i = 0; i < 36; i++) A[i] = dfl_rng_normal(&g_rng);
    assert_int_equal(dfl_inverse_d(A, 6, Ai), 0);
    for (int i = 0; i < 6; i++)
        for (int j = 0; j < 6; j++) {
            double s = 0;
            for (int k = 0; k < 6; k++) s += A[i * 6 + k] * Ai[k * 6 + j];
            CHECK_CLOSE(s, i == j ? 1.0 : 0.0, 1e-10);
        }
    dfl_ctx_free(ctx);
}

static void test_matrix_grads(void **state)
{
    (void)state;
    int nd[3] = {2, 2, 1};
    int sh[3][4] = {{4, 4}, {4, 4}, {4}};
    float *L = rand_vals(16, 0.5f, 0.0f), *U = rand_vals(16, 0.5f, 0.0f), *ls = rand_vals(4, 0.3f, 0.0f);
    lu_user lu = {{2, 0, 3, 1}, {1, -1, -1, 1}};
    float *vals[3] = {L, U, ls};
    grad_check("lu_weight", call_lu, &lu, 3, nd, (const int(*)[4])sh, vals, 1e-3, 2e-3);
    /* well-conditioned W = I + noise */
    float *W = rand_vals(16, 0.3f, 0.0f);
    for (int i = 0; i < 4; i++) W[i * 5] += 1.5f;
    vals[0] = W;
    grad_check("mat_inverse", call_inv, NULL, 1, nd, (const int(*)[4])sh, vals, 1e-3, 3e-3);
    grad_check("mat_logabsdet", call_lad, NULL, 1, nd, (const int(*)[4])sh, vals, 1e-3, 3e-3);
    free(L);
    free(U);
    free(ls);
    free(W);
}

int main(void)
{
    dfl_rng_init(&g_rng, 1234);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_unary_values),  cmocka_unit_test(test_unary_grads),
        cmocka_unit_test(test_shape_values),  cmocka_unit_test(test_shape_grads),
        cmocka_unit_test(test_matrix_values), cmocka_unit_test(test_matrix_grads),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
