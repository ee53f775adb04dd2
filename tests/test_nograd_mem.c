/* Early release in the arena (dfl_arena_release, dfl_tensor_release): the allocator reuses what
 * was released, and a no-grad U-Net pass, a Heun sample and a training step give bit-identical
 * results with and without reuse while the no-grad pass needs far less arena memory. */
#include "dfl_test.h"
#include "difflow/gen.h"
#include "difflow/nn.h"

static void test_allocator(void **state)
{
    (void)state;
    dfl_ctx *ctx = dfl_ctx_new();
    size_t big = 1 << 20;
    char *a = dfl_arena_alloc(ctx, big), *b = dfl_arena_alloc(ctx, big), *c = dfl_arena_alloc(ctx, big);
    assert_true(a && b && c && b == a + big && c == b + big);
    assert_int_equal(dfl_ctx_arena_peak(ctx), 3 * big);
    dfl_arena_release(ctx, b, big);
    dfl_arena_release(ctx, b, big); /* a second release is ignored */
    char *d = dfl_arena_alloc(ctx, big / 2), *e = dfl_arena_alloc(ctx, big / 2);
    assert_ptr_equal(d, b); /* best fit inside the released range */
    assert_ptr_equal(e, b + big / 2);
    char *small = dfl_arena_alloc(ctx, 64); /* small allocations bump */
    assert_ptr_equal(small, c + big);
    /* Releasing the top lowers the bump pointer, together with free ranges then on top. */
    char *f = dfl_arena_alloc(ctx, big);
    dfl_arena_release(ctx, d, big / 2);
    dfl_arena_release(ctx, e, big / 2); /* coalesces with d's range */
    char *g = dfl_arena_alloc(ctx, big);
    assert_ptr_equal(g, b);
    dfl_arena_release(ctx, f, big);
    assert_ptr_equal(dfl_arena_alloc(ctx, big), f);
    assert_int_equal(dfl_ctx_arena_peak(ctx), 4 * big + 64);
    /* Memory that is not the arena's is ignored. */
    float outside[16];
    dfl_arena_release(ctx, outside, sizeof outside);
    /* With reuse off, release does nothing. */
    dfl_ctx_reset(ctx);
    assert_int_equal(dfl_ctx_set_reuse(ctx, 0), 1);
    a = dfl_arena_alloc(ctx, big);
    dfl_arena_release(ctx, a, big);
    b = dfl_arena_alloc(ctx, big);
    assert_ptr_equal(b, a + big);
    /* dfl_tensor_release only acts in no-grad mode. */
    dfl_ctx_set_reuse(ctx, 1);
    int sh[1] = {4096};
    dfl_tensor *t = dfl_tensor_tmp(ctx, 1, sh);
    assert_non_null(dfl_tensor_tmp(ctx, 1, sh)); /* keeps t's range off the top */
    dfl_tensor_release(ctx, t);
    assert_non_null(t->data);
    dfl_ctx_set_grad(ctx, 0);
    float *td = t->data;
    dfl_tensor_release(ctx, t);
    assert_null(t->data);
    dfl_tensor *u = dfl_tensor_tmp(ctx, 1, sh);
    assert_ptr_equal(u->data, td);
    dfl_ctx_free(ctx);
}

static dfl_model unet(void)
{
    dfl_arch_cfg ac;
    assert_int_equal(dfl_arch_preset("fmnist-unet-s", &ac), DFL_OK);
    dfl_rng rng;
    dfl_rng_init(&rng, 3);
    dfl_model m;
    dfl_process_default(&m.proc, DFL_FAMILY_FM);
    m.net = dfl_net_new(&ac, &rng);
    assert_non_null(m.net);
    return m;
}

/* One no-grad forward at batch N with reuse on/off: output into y, arena peak returned. */
static size_t forward(dfl_model *m, int reuse, int N, const float *x, float *y)
{
    dfl_ctx *ctx = dfl_ctx_new();
    dfl_ctx_set_reuse(ctx, reuse);
    dfl_ctx_set_grad(ctx, 0);
    int sh[4] = {N, 1, 28, 28}, st[1] = {N};
    dfl_tensor *xt = dfl_tensor_wrap(ctx, (float *)x, 4, sh);
    dfl_tensor *tt = dfl_tensor_tmp(ctx, 1, st);
    for (int i = 0; i < N; i++) tt->data[i] = 0.1f + 0.8f * i / N;
    dfl_tensor *out = dfl_net_forward(ctx, m->net, xt, tt);
    assert_non_null(out);
    memcpy(y, out->data, out->n * sizeof(float));
    size_t peak = dfl_ctx_arena_peak(ctx);
    dfl_ctx_free(ctx);
    return peak;
}

static void test_unet_forward(void **state)
{
    (void)state;
    dfl_model m = unet();
    int N = 8;
    size_t n = (size_t)N * 784;
    float *x = malloc(n * sizeof *x), *y0 = malloc(n * sizeof *y0), *y1 = malloc(n * sizeof *y1);
    dfl_rng rng;
    dfl_rng_init(&rng, 5);
    dfl_rng_fill_normal(&rng, x, n);
    size_t keep = forward(&m, 0, N, x, y0), reuse = forward(&m, 1, N, x, y1);
    assert_memory_equal(y0, y1, n * sizeof(float));
    /* The live set of a pass is a few level-0 activations plus the skips: well under a third. */
    print_message("arena peak: %.1f MiB without reuse, %.1f MiB with\n", keep / 1048576.0, reuse / 1048576.0);
    assert_true(reuse * 3 < keep);
    free(x);
    free(y0);
    free(y1);
    dfl_net_free(m.net);
}

static void test_heun_sample(void **state)
{
    (void)state;
    dfl_model m = unet();
    int sh[4] = {4, 1, 28, 28};
    float *y[2];
    for (int reuse = 0; reuse < 2; reuse++) {
        y[reuse] = malloc(4 * 784 * sizeof(float));
        dfl_ctx *ctx = dfl_ctx_new();
        dfl_ctx_set_reuse(ctx, reuse);
        dfl_rng rng;
        dfl_rng_init(&rng, 9);
        dfl_sample_cfg sc = {.sampler = DFL_SAMPLER_HEUN, .schedule = DFL_SCHED_UNIFORM, .steps = 3, .rho = 7};
        int nfe = 0;
        assert_int_equal(dfl_sample(ctx, &m, &sc, &rng, 4, sh, y[reuse], &nfe), DFL_OK);
        assert_int_equal(nfe, 5);
        dfl_ctx_free(ctx);
    }
    assert_memory_equal(y[0], y[1], 4 * 784 * sizeof(float));
    free(y[0]);
    free(y[1]);
    dfl_net_free(m.net);
}

/* Training releases only scratch (convolution work): loss and gradients are unchanged. */
static void test_train_step(void **state)
{
    (void)state;
    dfl_model m = unet();
    dfl_params *ps = dfl_net_params(m.net);
    int sh[4] = {4, 1, 28, 28};
    float *x = malloc(4 * 784 * sizeof *x);
    dfl_rng rng;
    dfl_rng_init(&rng, 11);
    dfl_rng_fill_uniform(&rng, x, 4 * 784);
    float loss[2];
    float *g0 = NULL;
    size_t total = dfl_params_count(ps), off;
    for (int reuse = 0; reuse < 2; reuse++) {
        dfl_ctx *ctx = dfl_ctx_new();
        dfl_ctx_set_reuse(ctx, reuse);
        dfl_params_zero_grad(ps);
        dfl_rng_init(&rng, 12);
        dfl_tensor *l = dfl_model_loss(ctx, &m, x, 4, sh, &rng);
        assert_non_null(l);
        assert_int_equal(dfl_backward(ctx, l), DFL_OK);
        loss[reuse] = l->data[0];
        float *g = malloc(total * sizeof *g);
        off = 0;
        for (int i = 0; i < ps->n; i++) {
            memcpy(g + off, ps->p[i].t->grad, ps->p[i].t->n * sizeof(float));
            off += ps->p[i].t->n;
        }
        if (reuse) {
            assert_memory_equal(g0, g, total * sizeof(float));
            free(g);
        } else {
            g0 = g;
        }
        dfl_ctx_free(ctx);
    }
    assert_memory_equal(&loss[0], &loss[1], sizeof(float));
    free(g0);
    free(x);
    dfl_net_free(m.net);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_allocator),
        cmocka_unit_test(test_unet_forward),
        cmocka_unit_test(test_heun_sample),
        cmocka_unit_test(test_train_step),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
