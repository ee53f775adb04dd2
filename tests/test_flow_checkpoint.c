/* Flow checkpoints (src/flow/checkpoint.c): save -> load gives the same log-likelihood bit for bit
 * with the ActNorm "initialised" flag and the LU buffers restored, never re-initialised
 * (reference/flows.md pitfall 3); the config round-trips; another model's tensors are refused
 * naming the tensor; dfl_flow_is_checkpoint tells flows from diffusion checkpoints. */
#include "dfl_test.h"

#include <unistd.h>

#include "difflow/flow.h"
#include "difflow/gen.h"
#include "difflow/io.h"
#include "difflow/nn.h"

static char path_a[256], path_b[256];

static void make_paths(void)
{
    snprintf(path_a, sizeof path_a, "/tmp/dfl_flowck_%d_a.safetensors", (int)getpid());
    snprintf(path_b, sizeof path_b, "/tmp/dfl_flowck_%d_b.safetensors", (int)getpid());
}

/* log p of x (n rows of the flow's shape) under f, into lp. */
static void logp(dfl_flow *f, float *x, int n, float *lp)
{
    const dfl_flow_cfg *c = dfl_flow_get_cfg(f);
    dfl_ctx *ctx = dfl_ctx_new();
    dfl_ctx_set_grad(ctx, 0);
    int shape[4] = {n, c->channels, c->height, c->width};
    dfl_tensor *xt = dfl_tensor_wrap(ctx, x, c->height > 0 ? 4 : 2, shape);
    dfl_tensor *l = dfl_flow_log_prob(ctx, f, xt);
    assert_non_null(l);
    memcpy(lp, l->data, (size_t)n * sizeof *lp);
    dfl_ctx_free(ctx);
}

/* Glow on 2-channel 4x4 images: ActNorm (data init), LU 1x1 convs (perm/sign buffers), squeeze,
 * split. Parameters perturbed away from their initial values so a re-init would show. */
static void test_roundtrip_glow(void **state)
{
    (void)state;
    make_paths();
    dfl_flow_cfg cfg;
    assert_int_equal(dfl_flow_preset(DFL_FLOW_GLOW, 2, 4, 4, &cfg), DFL_OK);
    cfg.levels = 2;
    cfg.steps = 2;
    cfg.net_width = 8;
    assert_true(cfg.split_clamp == DFL_SPLIT_LOGSD_BOUND);
    cfg.split_clamp = 2.5f; /* not the preset's: the loaded value must come from the file */
    dfl_rng rng;
    dfl_rng_init(&rng, 11);
    dfl_flow *f = dfl_flow_new(&cfg, &rng);
    assert_non_null(f);
    enum { N = 6 };
    int D = dfl_flow_dim(f);
    assert_int_equal(D, 32);
    float x[N * 32];
    for (int i = 0; i < N * D; i++) x[i] = 256.0f * dfl_rng_uniform(&rng); /* x = v + u in [0, 256) */
    dfl_ctx *ctx = dfl_ctx_new();
    int shape[4] = {N, 2, 4, 4};
    assert_int_equal(dfl_flow_data_init(ctx, f, dfl_tensor_wrap(ctx, x, 4, shape)), DFL_OK);
    dfl_ctx_free(ctx);
    assert_true(dfl_flow_initialized(f));
    dfl_params *ps = dfl_flow_params(f);
    for (int i = 0; i < ps->n; i++)
        for (size_t k = 0; k < ps->p[i].t->n; k++) ps->p[i].t->data[k] += 0.01f * dfl_rng_normal(&rng);
    float lp0[N], lp1[N];
    logp(f, x, N, lp0);

    dfl_model_info info = {.step = 123, .seed = 77};
    snprintf(info.arch, sizeof info.arch, "glow");
    snprintf(info.data, sizeof info.data, "toy-images");
    assert_int_equal(dfl_flow_save(path_a, f, &info), DFL_OK);
    assert_true(dfl_flow_is_checkpoint(path_a));

    dfl_flow *g = NULL;
    dfl_model_info gi;
    assert_int_equal(dfl_flow_load(path_a, &g, &gi), DFL_OK);
    assert_true(dfl_flow_initialized(g));
    assert_int_equal(gi.step, 123);
    assert_true(gi.seed == 77);
    assert_string_equal(gi.data, "toy-images");
    const dfl_flow_cfg *gc = dfl_flow_get_cfg(g);
    assert_int_equal(gc->kind, DFL_FLOW_GLOW);
    assert_int_equal(gc->levels, 2);
    assert_int_equal(gc->steps, 2);
    assert_int_equal(gc->net_width, 8);
    assert_int_equal(gc->lu, cfg.lu);
    assert_true(gc->logit_alpha == cfg.logit_alpha);
    assert_true(gc->split_clamp == 2.5f);
    /* data init on the loaded flow is a no-op: the flag came with the checkpoint */
    ctx = dfl_ctx_new();
    assert_int_equal(dfl_flow_data_init(ctx, g, dfl_tensor_wrap(ctx, x, 4, shape)), DFL_OK);
    dfl_ctx_free(ctx);
    logp(g, x, N, lp1);
    assert_memory_equal(lp0, lp1, sizeof lp0); /* to the last bit */
    /* the buffers (LU permutation and signs, the flag) are all there, equal */
    dfl_params *fb = dfl_flow_buffers(f), *gb = dfl_flow_buffers(g);
    assert_int_equal(fb->n, gb->n);
    assert_true(fb->n >= 3);
    for (int i = 0; i < fb->n; i++) {
        assert_string_equal(fb->p[i].name, gb->p[i].name);
        assert_memory_equal(fb->p[i].t->data, gb->p[i].t->data, fb->p[i].t->n * sizeof(float));
    }
    dfl_flow_free(g);
    dfl_flow_free(f);
    remove(path_a);
}

/* Another model's tensors: a flow of another width refuses the file naming a tensor; a
 * diffusion checkpoint is not a flow checkpoint, and a flow checkpoint does not load as one. */
static void test_mismatch_and_dispatch(void **state)
{
    (void)state;
    make_paths();
    dfl_flow_cfg cfg;
    assert_int_equal(dfl_flow_preset(DFL_FLOW_REALNVP, 2, 0, 0, &cfg), DFL_OK);
    dfl_rng rng;
    dfl_rng_init(&rng, 3);
    dfl_flow *f = dfl_flow_new(&cfg, &rng);
    assert_non_null(f);
    dfl_model_info info = {.step = 1, .seed = 0};
    snprintf(info.arch, sizeof info.arch, "realnvp");
    snprintf(info.data, sizeof info.data, "moons");
    assert_int_equal(dfl_flow_save(path_a, f, &info), DFL_OK);

    /* the same tensors under a config that claims another width */
    dfl_st_file *st = NULL;
    assert_int_equal(dfl_safetensors_open(path_a, &st), DFL_OK);
    dfl_params *ps = dfl_flow_params(f), *bs = dfl_flow_buffers(f);
    int n = ps->n + bs->n;
    dfl_named_tensor *ts = calloc((size_t)n, sizeof *ts);
    for (int i = 0; i < n; i++) ts[i] = (dfl_named_tensor){i < ps->n ? ps->p[i].name : bs->p[i - ps->n].name,
                                                          i < ps->n ? ps->p[i].t : bs->p[i - ps->n].t};
    dfl_flow_cfg other = cfg;
    other.net_width = cfg.net_width * 2;
    dfl_flow *o = dfl_flow_new(&other, &rng);
    assert_non_null(o);
    char *js = dfl_flow_config_json(o, &info);
    assert_non_null(js);
    const char *meta[] = {"format", "difflow", "method", "realnvp", "config", js};
    assert_int_equal(dfl_safetensors_save(path_b, ts, n, meta, 3), DFL_OK);
    free(js);
    free(ts);
    dfl_st_close(st);
    dfl_flow *g = NULL;
    dfl_model_info gi;
    assert_int_equal(dfl_flow_load(path_b, &g, &gi), DFL_ERR_MISMATCH);
    assert_null(g);
    assert_non_null(strstr(dfl_last_error(), "realnvp."));
    assert_non_null(strstr(dfl_last_error(), "another model"));

    /* a diffusion checkpoint */
    dfl_model m;
    m.net = NULL;
    dfl_process_default(&m.proc, DFL_FAMILY_FM);
    dfl_arch_cfg ac;
    assert_int_equal(dfl_arch_preset("toy-mlp", &ac), DFL_OK);
    m.net = dfl_net_new(&ac, &rng);
    snprintf(info.arch, sizeof info.arch, "toy-mlp");
    assert_int_equal(dfl_model_save(path_b, &m, &info), DFL_OK);
    assert_false(dfl_flow_is_checkpoint(path_b));
    assert_true(dfl_flow_is_checkpoint(path_a));
    assert_false(dfl_flow_is_checkpoint("/nonexistent/x.safetensors"));
    assert_int_not_equal(dfl_flow_load(path_b, &g, &gi), DFL_OK);
    assert_null(g);
    dfl_model m2;
    assert_int_not_equal(dfl_model_load(path_a, &m2, &gi), DFL_OK);
    dfl_net_free(m.net);
    dfl_flow_free(o);
    dfl_flow_free(f);
    remove(path_a);
    remove(path_b);
}

/* Replaces the first occurrence of `from` in the malloc'd string s by `to` (s is reallocated). */
static char *str_replace(char *s, const char *from, const char *to)
{
    char *p = strstr(s, from);
    assert_non_null(p);
    size_t a = (size_t)(p - s), lf = strlen(from), lt = strlen(to), n = strlen(s);
    char *o = malloc(n - lf + lt + 1);
    memcpy(o, s, a);
    memcpy(o + a, to, lt);
    memcpy(o + a + lt, p + lf, n - a - lf + 1);
    free(s);
    return o;
}

/* Saves f's tensors under the config JSON js (as dfl_flow_save would, but with the given config). */
static void save_with_config(const char *path, dfl_flow *f, const char *js)
{
    dfl_params *ps = dfl_flow_params(f), *bs = dfl_flow_buffers(f);
    int n = ps->n + bs->n;
    dfl_named_tensor *ts = calloc((size_t)n, sizeof *ts);
    for (int i = 0; i < n; i++) ts[i] = (dfl_named_tensor){i < ps->n ? ps->p[i].name : bs->p[i - ps->n].name,
                                                          i < ps->n ? ps->p[i].t : bs->p[i - ps->n].t};
    const char *meta[] = {"format", "difflow", "method", dfl_flow_kind_name(dfl_flow_get_cfg(f)->kind), "config", js};
    assert_int_equal(dfl_safetensors_save(path, ts, n, meta, 3), DFL_OK);
    free(ts);
}

/* Checkpoints written before the dequantization layer, the learned top prior and the split
 * log-sd bound: their config has no "dequant_bits", "learn_top" or "split_clamp", and image flows
 * modelled y = -1 + 2 (v + u)/256 directly. They load with the dequantization layer in front (the
 * same model on x = v + u), no top prior and unbounded split log-sd: log p of x equals the
 * original flow's to the last bit, also with non-zero split priors; a legacy image config with
 * another data transform is refused; a legacy 2-D flow loads unchanged. */
static void test_legacy_config(void **state)
{
    (void)state;
    make_paths();
    for (int img = 0; img < 2; img++) {
        dfl_flow_cfg cfg;
        assert_int_equal(dfl_flow_preset(DFL_FLOW_GLOW, 2, img ? 4 : 0, img ? 4 : 0, &cfg), DFL_OK);
        cfg.steps = 2;
        cfg.net_width = 8;
        cfg.learn_top = 0;
        cfg.split_clamp = 0; /* unbounded, as every flow before the bound */
        assert_int_equal(cfg.dequant_bits, img ? 8 : 0);
        dfl_rng rng;
        dfl_rng_init(&rng, 5);
        dfl_flow *f = dfl_flow_new(&cfg, &rng);
        assert_non_null(f);
        enum { N = 4 };
        int D = dfl_flow_dim(f), shape[4] = {N, 2, 4, 4};
        float x[N * 32];
        for (int i = 0; i < N * D; i++) x[i] = img ? 256.0f * dfl_rng_uniform(&rng) : (float)dfl_rng_normal(&rng);
        dfl_ctx *ctx = dfl_ctx_new();
        assert_int_equal(dfl_flow_data_init(ctx, f, dfl_tensor_wrap(ctx, x, img ? 4 : 2, shape)), DFL_OK);
        dfl_ctx_free(ctx);
        /* non-zero split priors, so an unbounded and a bounded log-sd give different log p */
        dfl_params *ps = dfl_flow_params(f);
        for (int i = 0; i < ps->n; i++)
            if (strstr(ps->p[i].name, ".split.conv."))
                for (size_t k = 0; k < ps->p[i].t->n; k++) ps->p[i].t->data[k] = 1.5f + 0.5f * (float)dfl_rng_normal(&rng);
        float lp0[N], lp1[N];
        logp(f, x, N, lp0);
        dfl_model_info info = {.step = 9, .seed = 1};
        snprintf(info.arch, sizeof info.arch, "glow");
        snprintf(info.data, sizeof info.data, img ? "fashion-mnist" : "moons");
        char *js = dfl_flow_config_json(f, &info);
        assert_non_null(js);
        js = str_replace(js, img ? ",\"dequant_bits\":8,\"learn_top\":0" : ",\"dequant_bits\":0,\"learn_top\":0", "");
        js = str_replace(js, ",\"split_clamp\":0", "");
        assert_null(strstr(js, "split_clamp"));
        if (img)
            js = str_replace(js, "x = v + u in [0, 256), u ~ U[0,1); the flow's first layer maps it to [-1, 1)",
                             "y = -1 + 2 (v + u)/256, u ~ U[0,1) (8-bit pixels dequantized to [-1, 1))");
        assert_null(strstr(js, "dequant_bits"));
        save_with_config(path_b, f, js);
        dfl_flow *g = NULL;
        dfl_model_info gi;
        if (dfl_flow_load(path_b, &g, &gi)) print_error("%s\n", dfl_last_error());
        assert_non_null(g);
        assert_int_equal(dfl_flow_get_cfg(g)->dequant_bits, img ? 8 : 0);
        assert_int_equal(dfl_flow_get_cfg(g)->learn_top, 0);
        assert_true(dfl_flow_get_cfg(g)->split_clamp == 0.0f);
        logp(g, x, N, lp1);
        assert_memory_equal(lp0, lp1, sizeof lp0);
        dfl_flow_free(g);
        if (img) { /* the same tensors under today's bound are another model: the default matters */
            dfl_flow_cfg cb = cfg;
            cb.split_clamp = DFL_SPLIT_LOGSD_BOUND;
            dfl_flow *h = dfl_flow_new(&cb, &rng);
            assert_non_null(h);
            dfl_params *groups[2][2] = {{dfl_flow_params(f), dfl_flow_params(h)}, {dfl_flow_buffers(f), dfl_flow_buffers(h)}};
            for (int k = 0; k < 2; k++)
                for (int i = 0; i < groups[k][0]->n; i++)
                    memcpy(groups[k][1]->p[i].t->data, groups[k][0]->p[i].t->data, groups[k][0]->p[i].t->n * sizeof(float));
            float lp2[N];
            logp(h, x, N, lp2);
            for (int i = 0; i < N; i++) assert_true(fabsf(lp2[i] - lp0[i]) > 1e-3f);
            dfl_flow_free(h);
        }
        if (img) { /* a legacy image config with an unknown data transform */
            js = str_replace(js, "y = -1 + 2 (v + u)/256", "y = v/255");
            save_with_config(path_b, f, js);
            assert_int_equal(dfl_flow_load(path_b, &g, &gi), DFL_ERR_FORMAT);
            assert_null(g);
            assert_non_null(strstr(dfl_last_error(), "retrain"));
        }
        free(js);
        dfl_flow_free(f);
    }
    remove(path_b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_roundtrip_glow),
        cmocka_unit_test(test_mismatch_and_dispatch),
        cmocka_unit_test(test_legacy_config),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
