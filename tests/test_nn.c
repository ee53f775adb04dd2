/* Backbones: exact reference configurations, PyTorch module names, gradients end to end,
 * checkpoint round trip and refusal of another model's checkpoint. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "difflow/gen.h"
#include "difflow/io.h"
#include "difflow/nn.h"
#include "difflow/ops.h"
#include "dfl_keys.h"

static void test_unet_param_count_and_names(void **state)
{
    (void)state;
    dfl_arch_cfg c;
    assert_int_equal(dfl_arch_preset("fmnist-unet-s", &c), DFL_OK);
    dfl_rng r;
    dfl_rng_init(&r, 1);
    dfl_net *net = dfl_net_new(&c, &r);
    assert_non_null(net);
    dfl_params *ps = dfl_net_params(net);
    assert_int_equal(dfl_params_count(ps), 1035969); /* DESIGN section 13 */
    /* Names and shapes equal the PyTorch module's state_dict (bench/peers/unet_keys.txt, written
     * by bench/peers/torch_models.py), in the same order. */
    dfl_check_keys(ps, "unet_keys.txt");
    dfl_net_free(net);
}

static void test_mlp_config(void **state)
{
    (void)state;
    dfl_arch_cfg c;
    assert_int_equal(dfl_arch_preset("toy-mlp", &c), DFL_OK);
    dfl_rng r;
    dfl_rng_init(&r, 1);
    dfl_net *net = dfl_net_new(&c, &r);
    /* Linear(3,256) + 2 x Linear(256,256) + Linear(256,2). */
    assert_int_equal(dfl_params_count(dfl_net_params(net)), 3 * 256 + 256 + 2 * (256 * 256 + 256) + 256 * 2 + 2);
    assert_non_null(dfl_params_find(dfl_net_params(net), "net.6.weight"));
    assert_int_equal(dfl_arch_preset("resnet-9000", &c), DFL_ERR_ARG);
    dfl_net_free(net);
}

/* d/dx of sum(r * F(x, t)) by input VJP against central differences of the float network. */
static void check_input_vjp(const char *preset, int N, double tol)
{
    dfl_arch_cfg c;
    assert_int_equal(dfl_arch_preset(preset, &c), DFL_OK);
    dfl_rng r;
    dfl_rng_init(&r, 3);
    dfl_net *net = dfl_net_new(&c, &r);
    int shape[4] = {N, c.arch == DFL_ARCH_MLP ? c.dim : c.channels, c.height, c.width};
    int ndim = c.arch == DFL_ARCH_MLP ? 2 : 4;
    size_t n = dfl_shape_numel(ndim, shape);
    float *x = malloc(n * sizeof *x), *rr = malloc(n * sizeof *rr);
    dfl_rng_fill_normal(&r, x, n);
    dfl_rng_fill_normal(&r, rr, n);
    float tv[8];
    for (int i = 0; i < N; i++) tv[i] = 0.1f + 0.2f * (float)i;
    dfl_ctx *ctx = dfl_ctx_new();
    dfl_tensor *xt = dfl_tensor_wrap(ctx, x, ndim, shape);
    xt->requires_grad = 1;
    int ts[1] = {N};
    dfl_tensor *tt = dfl_tensor_wrap(ctx, tv, 1, ts);
    dfl_tensor *y = dfl_net_forward(ctx, net, xt, tt);
    assert_non_null(y);
    assert_int_equal(dfl_backward_vjp(ctx, y, rr), DFL_OK);
    float *g = malloc(n * sizeof *g);
    memcpy(g, xt->grad, n * sizeof *g);
    dfl_ctx_set_grad(ctx, 0);
    double maxerr = 0, maxg = 0;
    for (int k = 0; k < 12; k++) {
        size_t i = (size_t)dfl_rng_below(&r, (uint32_t)n);
        const float h = 1e-2f;
        float x0 = x[i];
        double f[2];
        for (int s = 0; s < 2; s++) {
            dfl_ctx_reset(ctx);
            x[i] = x0 + (s ? -h : h);
            dfl_tensor *xx = dfl_tensor_wrap(ctx, x, ndim, shape), *t2 = dfl_tensor_wrap(ctx, tv, 1, ts);
            dfl_tensor *yy = dfl_net_forward(ctx, net, xx, t2);
            double acc = 0;
            for (size_t j = 0; j < n; j++) acc += (double)rr[j] * yy->data[j];
            f[s] = acc;
        }
        x[i] = x0;
        double fd = (f[0] - f[1]) / (2 * h);
        maxerr = fmax(maxerr, fabs(fd - g[i]));
        maxg = fmax(maxg, fabs(g[i]));
    }
    if (!(maxerr <= tol * (maxg + 1e-3))) {
        print_error("%s: input VJP vs finite differences: max err %g, max |g| %g\n", preset, maxerr, maxg);
        fail();
    }
    free(x);
    free(rr);
    free(g);
    dfl_ctx_free(ctx);
    dfl_net_free(net);
}

static void test_input_vjp_mlp(void **state)
{
    (void)state;
    check_input_vjp("toy-mlp", 5, 2e-2);
}

static void test_input_vjp_unet(void **state)
{
    (void)state;
    check_input_vjp("fmnist-unet-s", 2, 5e-2);
}

static void test_checkpoint_roundtrip_and_mismatch(void **state)
{
    (void)state;
    char dir[] = "/tmp/dfl_test_nn_XXXXXX";
    assert_non_null(mkdtemp(dir));
    char p1[256], p2[256];
    snprintf(p1, sizeof p1, "%s/a.safetensors", dir);
    snprintf(p2, sizeof p2, "%s/b.safetensors", dir);
    dfl_arch_cfg c;
    dfl_arch_preset("toy-mlp", &c);
    dfl_rng r;
    dfl_rng_init(&r, 9);
    dfl_model m;
    dfl_process_default(&m.proc, DFL_FAMILY_EDM);
    m.net = dfl_net_new(&c, &r);
    dfl_model_info info = {"toy-mlp", "moons", 123, 5};
    assert_int_equal(dfl_model_save(p1, &m, &info), DFL_OK);
    dfl_model m2;
    dfl_model_info i2;
    assert_int_equal(dfl_model_load(p1, &m2, &i2), DFL_OK);
    assert_int_equal(i2.step, 123);
    assert_string_equal(i2.data, "moons");
    assert_int_equal((int)m2.proc.family, (int)DFL_FAMILY_EDM);
    dfl_params *a = dfl_net_params(m.net), *b = dfl_net_params(m2.net);
    for (int i = 0; i < a->n; i++) assert_memory_equal(a->p[i].t->data, b->p[i].t->data, a->p[i].t->n * sizeof(float));
    /* A file whose config says toy-mlp but whose tensors are another model's is refused. */
    dfl_named_tensor one = {"net.0.weight", a->p[2].t}; /* wrong shape under a right name */
    const char *meta[] = {"config", "{\"format_version\":1,\"arch\":\"toy-mlp\",\"method\":\"fm\"}"};
    assert_int_equal(dfl_safetensors_save(p2, &one, 1, meta, 1), DFL_OK);
    dfl_model m4;
    assert_int_equal(dfl_model_load(p2, &m4, &i2), DFL_ERR_MISMATCH);
    assert_non_null(strstr(dfl_last_error(), "net.0.weight"));
    /* A safetensors file without our config is not a difflow checkpoint. */
    assert_int_equal(dfl_safetensors_save(p2, &one, 1, NULL, 0), DFL_OK);
    dfl_model m3;
    assert_int_equal(dfl_model_load(p2, &m3, &i2), DFL_ERR_FORMAT);
    dfl_net_free(m.net);
    dfl_net_free(m2.net);
    remove(p1);
    remove(p2);
    rmdir(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_unet_param_count_and_names),
        cmocka_unit_test(test_mlp_config),
        cmocka_unit_test(test_input_vjp_mlp),
        cmocka_unit_test(test_input_vjp_unet),
        cmocka_unit_test(test_checkpoint_roundtrip_and_mismatch),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
