/* Analytic FLOP counts (flops.h) against hand counts of tiny configurations, layer by layer, and
 * against the parameter shapes of the built toy-mlp (for an MLP, forward FLOPs per sample are
 * 2 x the number of weights). */
#include "dfl_test.h"
#include "difflow/flops.h"
#include "difflow/nn.h"

static void test_mlp(void **state)
{
    (void)state;
    dfl_arch_cfg c = {.arch = DFL_ARCH_MLP, .dim = 2, .hidden = 4, .depth = 2};
    /* Linear(3,4), Linear(4,4), Linear(4,2): 2 (12 + 16 + 8). */
    CHECK_CLOSE(dfl_arch_flops_fwd(&c), 72, 0);
    CHECK_CLOSE(dfl_arch_flops_train(&c), 216, 0);

    dfl_arch_cfg t;
    assert_int_equal(dfl_arch_preset("toy-mlp", &t), DFL_OK);
    CHECK_CLOSE(dfl_arch_flops_fwd(&t), 2.0 * (3 * 256 + 2 * 256 * 256 + 256 * 2), 0);
    dfl_rng rng;
    dfl_rng_init(&rng, 1);
    dfl_net *net = dfl_net_new(&t, &rng);
    assert_non_null(net);
    dfl_params *ps = dfl_net_params(net);
    double w = 0;
    for (int i = 0; i < ps->n; i++)
        if (ps->p[i].t->ndim == 2) w += (double)ps->p[i].t->n;
    CHECK_CLOSE(dfl_arch_flops_fwd(&t), 2 * w, 0);
    dfl_net_free(net);
}

static void test_unet(void **state)
{
    (void)state;
    dfl_arch_cfg c = {.arch = DFL_ARCH_UNET, .channels = 1, .height = 4, .width = 4, .base = 2,
                      .mult = {1, 2}, .nlevels = 2, .nres = 1, .groups = 1, .temb_dim = 2, .t_scale = 1000};
    double temb = 2 * 2 * 4 + 2 * 4 * 4;                             /* Linear(2,4), Linear(4,4) */
    double conv_in = 2.0 * 16 * 2 * 1 * 9;                            /* 4x4, 1 -> 2, 3x3 */
    double d0 = 2.0 * 16 * 2 * 2 * 9 + 2 * 4 * 2 + 2.0 * 16 * 2 * 2 * 9; /* ResBlock(2,2) at 4x4 */
    double d1 = 2.0 * 4 * 4 * 2 * 9 + 2 * 4 * 4 + 2.0 * 4 * 4 * 4 * 9 + 2.0 * 4 * 4 * 2; /* (2,4) at 2x2 + 1x1 skip */
    double mid = 2 * (2.0 * 4 * 4 * 4 * 9 * 2 + 2 * 4 * 4);          /* two ResBlock(4,4) at 2x2 */
    double u0 = 2.0 * 4 * 4 * 8 * 9 + 2 * 4 * 4 + 2.0 * 4 * 4 * 4 * 9 + 2.0 * 4 * 4 * 8; /* (4+4, 4) at 2x2 */
    double u1 = 2.0 * 16 * 2 * 6 * 9 + 2 * 4 * 2 + 2.0 * 16 * 2 * 2 * 9 + 2.0 * 16 * 2 * 6; /* (4+2, 2) at 4x4 */
    double out = 2.0 * 16 * 1 * 2 * 9;
    double hand = temb + conv_in + d0 + d1 + mid + u0 + u1 + out;
    CHECK_CLOSE(hand, 18768, 0);
    CHECK_CLOSE(dfl_arch_flops_fwd(&c), hand, 0);
    CHECK_CLOSE(dfl_arch_flops_train(&c), 3 * hand, 0);
    /* The network builds with this configuration (the count walks a real one). */
    dfl_rng rng;
    dfl_rng_init(&rng, 1);
    dfl_net *net = dfl_net_new(&c, &rng);
    assert_non_null(net);
    dfl_net_free(net);

    dfl_arch_cfg u;
    assert_int_equal(dfl_arch_preset("fmnist-unet-s", &u), DFL_OK);
    double f = dfl_arch_flops_fwd(&u);
    /* Hand sum of the convolutions per level (MFLOP): conv_in 0.45, down 57.8 + 22.48 + 28.9 +
     * 14.45, mid 14.45, up 11.64 + 7.23 + 46.55 + 28.9 + 62.6 + 28.9, out 0.45 = 324.8; the
     * Linears (time embedding, projections) add about 0.1 %. */
    CHECK_REL(f, 324.8e6, 2e-3);
}

static void test_dit(void **state)
{
    (void)state;
    dfl_arch_cfg c = {.arch = DFL_ARCH_DIT, .channels = 1, .height = 4, .width = 4, .patch = 2, .hidden = 4,
                      .depth = 1, .heads = 1, .mlp_ratio = 2, .temb_dim = 2, .t_scale = 1000};
    /* T = 4 tokens of F = 4 features, D = 4. */
    double embed = 2 * 4 * 4 * 4 + 2 * 2 * 4 + 2 * 4 * 4;            /* patch, t1, t2 */
    double blk = 2 * 4 * 24 + 2 * 4 * 4 * 12 + 2 * (2 * 4 * 4 * 4) + 2 * 4 * 4 * 4 + 2 * 4 * 4 * 8 + 2 * 4 * 8 * 4;
    double fin = 2 * 4 * 8 + 2 * 4 * 4 * 4;
    CHECK_CLOSE(dfl_arch_flops_fwd(&c), embed + blk + fin, 0);
    CHECK_CLOSE(embed + blk + fin, 1840, 0);
}

static void test_invalid(void **state)
{
    (void)state;
    dfl_arch_cfg c = {.arch = DFL_ARCH_MLP, .dim = 0, .hidden = 4, .depth = 1};
    CHECK_CLOSE(dfl_arch_flops_fwd(&c), 0, 0);
    assert_non_null(strstr(dfl_last_error(), "flops"));
    c.arch = (dfl_arch)7;
    CHECK_CLOSE(dfl_arch_flops_train(&c), 0, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_mlp),
        cmocka_unit_test(test_unet),
        cmocka_unit_test(test_dit),
        cmocka_unit_test(test_invalid),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
