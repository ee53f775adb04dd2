/* Byte-level decoder-only Transformer LM with a choice of positional encoding (lm.h). */
#include "difflow/lm.h"

#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <cjson/cJSON.h>

#include "difflow/io.h"
#include "difflow/ops.h"
#include "difflow/tf.h"

#define LM_VOCAB 256
#define LN_EPS 1e-5f

static const char *const POSENC_NAMES[DFL_POSENC_COUNT] = {
    "none", "learned", "sinusoidal", "shaw", "t5", "alibi", "rope", "rope-linear", "xpos"};

const char *dfl_posenc_name(dfl_posenc p)
{
    return (unsigned)p < DFL_POSENC_COUNT ? POSENC_NAMES[p] : "?";
}

dfl_status dfl_posenc_parse(const char *s, dfl_posenc *out)
{
    for (int i = 0; s && i < DFL_POSENC_COUNT; i++)
        if (!strcmp(s, POSENC_NAMES[i])) {
            *out = (dfl_posenc)i;
            return DFL_OK;
        }
    return dfl_fail(DFL_ERR_ARG,
                    "unknown positional encoding '%s' (known: none, learned, sinusoidal, shaw, t5, alibi, rope, "
                    "rope-linear, xpos)",
                    s ? s : "(null)");
}

int dfl_posenc_uses_rope(dfl_posenc p)
{
    return p == DFL_POSENC_ROPE || p == DFL_POSENC_ROPE_LINEAR || p == DFL_POSENC_XPOS;
}

static const char *const LAYOUT_NAMES[2] = {"interleaved", "half"};
static const char *const SCALING_NAMES[4] = {"none", "pi", "ntk", "yarn"};

const char *dfl_lm_rope_layout_name(dfl_rope_layout l) { return (unsigned)l < 2 ? LAYOUT_NAMES[l] : "?"; }
const char *dfl_lm_rope_scaling_name(dfl_rope_scaling s) { return (unsigned)s < 4 ? SCALING_NAMES[s] : "?"; }

dfl_status dfl_lm_rope_layout_parse(const char *s, dfl_rope_layout *out)
{
    for (int i = 0; s && i < 2; i++)
        if (!strcmp(s, LAYOUT_NAMES[i])) {
            *out = (dfl_rope_layout)i;
            return DFL_OK;
        }
    return dfl_fail(DFL_ERR_ARG, "unknown RoPE layout '%s' (known: interleaved, half)", s ? s : "(null)");
}

dfl_status dfl_lm_rope_scaling_parse(const char *s, dfl_rope_scaling *out)
{
    for (int i = 0; s && i < 4; i++)
        if (!strcmp(s, SCALING_NAMES[i])) {
            *out = (dfl_rope_scaling)i;
            return DFL_OK;
        }
    return dfl_fail(DFL_ERR_ARG, "unknown RoPE scaling '%s' (known: none, pi, ntk, yarn)", s ? s : "(null)");
}

/* ---------------------------------------------------------------- config */

dfl_lm_cfg dfl_lm_cfg_default(void)
{
    dfl_lm_cfg c;
    memset(&c, 0, sizeof c);
    c.posenc = DFL_POSENC_ROPE;
    c.context = 128;
    c.layers = 4;
    c.dim = 128;
    c.heads = 4;
    c.ffn = 0;
    c.max_positions = 0;
    c.rope = dfl_rope_default();
    c.shaw_k = 16;
    c.t5_buckets = 32;
    c.t5_max_distance = 128;
    c.xpos_scale_base = 512.0;
    return c;
}

dfl_lm_cfg dfl_lm_cfg_resolved(const dfl_lm_cfg *c)
{
    dfl_lm_cfg r = *c;
    if (r.ffn <= 0) r.ffn = 4 * r.dim;
    if (r.max_positions <= 0) r.max_positions = r.context;
    if (r.rope.orig_ctx <= 0) r.rope.orig_ctx = r.context;
    return r;
}

dfl_status dfl_lm_cfg_check(const dfl_lm_cfg *c0)
{
    if (!c0) return dfl_fail(DFL_ERR_ARG, "lm: config is NULL");
    dfl_lm_cfg c = dfl_lm_cfg_resolved(c0);
    if ((unsigned)c.posenc >= DFL_POSENC_COUNT) return dfl_fail(DFL_ERR_ARG, "lm: unknown positional encoding %d", (int)c.posenc);
    if (c.context < 1 || c.context > 1 << 20) return dfl_fail(DFL_ERR_ARG, "lm: context %d must be in 1..1048576", c.context);
    if (c.layers < 1 || c.layers > 256) return dfl_fail(DFL_ERR_ARG, "lm: layers %d must be in 1..256", c.layers);
    if (c.dim < 1 || c.dim > 65536) return dfl_fail(DFL_ERR_ARG, "lm: dim %d must be in 1..65536", c.dim);
    if (c.heads < 1 || c.dim % c.heads)
        return dfl_fail(DFL_ERR_ARG, "lm: dim %d is not divisible by %d heads", c.dim, c.heads);
    if (c.ffn > 1 << 20) return dfl_fail(DFL_ERR_ARG, "lm: ffn %d too large", c.ffn);
    int Dh = c.dim / c.heads;
    if (dfl_posenc_uses_rope(c.posenc)) {
        if (dfl_rope_rot_dim(&c.rope, Dh) < 0) {
            char m[512];
            snprintf(m, sizeof m, "%s", dfl_last_error());
            return dfl_fail(DFL_ERR_ARG, "%s (head dimension %d = dim %d / %d heads)", m, Dh, c.dim, c.heads);
        }
        if (c.rope.scaling == DFL_ROPE_SCALE_YARN && !(c.rope.yarn_alpha >= 0))
            return dfl_fail(DFL_ERR_ARG, "lm: YaRN alpha %g must be >= 0", c.rope.yarn_alpha);
        if (c.rope.orig_ctx > 1 << 24) return dfl_fail(DFL_ERR_ARG, "lm: RoPE original context %d too large", c.rope.orig_ctx);
        if (c.posenc == DFL_POSENC_XPOS && c.rope.scaling != DFL_ROPE_SCALE_NONE)
            return dfl_fail(DFL_ERR_ARG, "lm: RoPE scaling applies to rope and rope-linear, not xpos");
        if (c.posenc == DFL_POSENC_XPOS && !(c.xpos_scale_base > 0))
            return dfl_fail(DFL_ERR_ARG, "lm: xpos scale base %g must be > 0", c.xpos_scale_base);
    }
    if (c.posenc == DFL_POSENC_LEARNED && c.context > c.max_positions)
        return dfl_fail(DFL_ERR_ARG, "lm: a sequence of %d bytes exceeds the learned table of %d positions", c.context,
                        c.max_positions);
    if (c.posenc == DFL_POSENC_SINUSOIDAL && c.dim % 2)
        return dfl_fail(DFL_ERR_ARG, "lm: sinusoidal positions need an even dim, not %d", c.dim);
    if (c.posenc == DFL_POSENC_SHAW && (c.shaw_k < 1 || c.shaw_k > 65536))
        return dfl_fail(DFL_ERR_ARG, "lm: Shaw clipping distance %d must be in 1..65536", c.shaw_k);
    if (c.posenc == DFL_POSENC_T5 && dfl_t5_bucket(0, 0, c.t5_buckets, c.t5_max_distance) < 0) return DFL_ERR_ARG;
    return DFL_OK;
}

char *dfl_lm_cfg_json(const dfl_lm_cfg *c0)
{
    dfl_lm_cfg c = dfl_lm_cfg_resolved(c0);
    cJSON *o = cJSON_CreateObject();
    if (!o) return NULL;
    cJSON_AddStringToObject(o, "model", "byte-lm");
    cJSON_AddStringToObject(o, "posenc", dfl_posenc_name(c.posenc));
    cJSON_AddNumberToObject(o, "context", c.context);
    cJSON_AddNumberToObject(o, "layers", c.layers);
    cJSON_AddNumberToObject(o, "dim", c.dim);
    cJSON_AddNumberToObject(o, "heads", c.heads);
    cJSON_AddNumberToObject(o, "ffn", c.ffn);
    cJSON_AddNumberToObject(o, "vocab", LM_VOCAB);
    cJSON_AddNumberToObject(o, "max_positions", c.max_positions);
    cJSON_AddStringToObject(o, "rope_layout", dfl_lm_rope_layout_name(c.rope.layout));
    cJSON_AddNumberToObject(o, "rotary_dim", c.rope.rot_dim);
    cJSON_AddNumberToObject(o, "rope_theta", c.rope.theta);
    cJSON_AddStringToObject(o, "rope_scaling", dfl_lm_rope_scaling_name(c.rope.scaling));
    cJSON_AddNumberToObject(o, "rope_factor", c.rope.factor);
    cJSON_AddNumberToObject(o, "yarn_alpha", c.rope.yarn_alpha);
    cJSON_AddNumberToObject(o, "yarn_beta", c.rope.yarn_beta);
    cJSON_AddNumberToObject(o, "rope_orig_ctx", c.rope.orig_ctx);
    cJSON_AddNumberToObject(o, "shaw_k", c.shaw_k);
    cJSON_AddNumberToObject(o, "t5_buckets", c.t5_buckets);
    cJSON_AddNumberToObject(o, "t5_max_distance", c.t5_max_distance);
    cJSON_AddNumberToObject(o, "xpos_scale_base", c.xpos_scale_base);
    char *s = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    return s;
}

static int json_int(const cJSON *o, const char *k, int *v)
{
    const cJSON *x = cJSON_GetObjectItemCaseSensitive(o, k);
    if (!x) return 0;
    if (!cJSON_IsNumber(x)) return -1;
    *v = (int)x->valuedouble;
    return 0;
}

static int json_num(const cJSON *o, const char *k, double *v)
{
    const cJSON *x = cJSON_GetObjectItemCaseSensitive(o, k);
    if (!x) return 0;
    if (!cJSON_IsNumber(x)) return -1;
    *v = x->valuedouble;
    return 0;
}

dfl_status dfl_lm_cfg_from_json(const char *json, dfl_lm_cfg *c)
{
    *c = dfl_lm_cfg_default();
    cJSON *o = json ? cJSON_Parse(json) : NULL;
    if (!o || !cJSON_IsObject(o)) {
        cJSON_Delete(o);
        return dfl_fail(DFL_ERR_FORMAT, "LM config is not a JSON object");
    }
    dfl_status st = DFL_OK;
    const cJSON *pe = cJSON_GetObjectItemCaseSensitive(o, "posenc");
    const cJSON *lay = cJSON_GetObjectItemCaseSensitive(o, "rope_layout");
    const cJSON *sc = cJSON_GetObjectItemCaseSensitive(o, "rope_scaling");
    if (!cJSON_IsString(pe) || dfl_posenc_parse(pe->valuestring, &c->posenc))
        st = dfl_fail(DFL_ERR_FORMAT, "LM config: missing or unknown posenc");
    else if (lay && (!cJSON_IsString(lay) || dfl_lm_rope_layout_parse(lay->valuestring, &c->rope.layout)))
        st = dfl_fail(DFL_ERR_FORMAT, "LM config: bad rope_layout");
    else if (sc && (!cJSON_IsString(sc) || dfl_lm_rope_scaling_parse(sc->valuestring, &c->rope.scaling)))
        st = dfl_fail(DFL_ERR_FORMAT, "LM config: bad rope_scaling");
    else if (json_int(o, "context", &c->context) || json_int(o, "layers", &c->layers) || json_int(o, "dim", &c->dim) ||
             json_int(o, "heads", &c->heads) || json_int(o, "ffn", &c->ffn) ||
             json_int(o, "max_positions", &c->max_positions) || json_int(o, "rotary_dim", &c->rope.rot_dim) ||
             json_num(o, "rope_theta", &c->rope.theta) || json_num(o, "rope_factor", &c->rope.factor) ||
             json_num(o, "yarn_alpha", &c->rope.yarn_alpha) || json_num(o, "yarn_beta", &c->rope.yarn_beta) ||
             json_int(o, "rope_orig_ctx", &c->rope.orig_ctx) ||
             json_int(o, "shaw_k", &c->shaw_k) || json_int(o, "t5_buckets", &c->t5_buckets) ||
             json_int(o, "t5_max_distance", &c->t5_max_distance) || json_num(o, "xpos_scale_base", &c->xpos_scale_base))
        st = dfl_fail(DFL_ERR_FORMAT, "LM config: a numeric field is not a number");
    cJSON_Delete(o);
    if (!st && dfl_lm_cfg_check(c)) {
        char m[512];
        snprintf(m, sizeof m, "%s", dfl_last_error());
        st = dfl_fail(DFL_ERR_FORMAT, "LM config: %s", m);
    }
    return st;
}

/* ---------------------------------------------------------------- model */

typedef struct {
    dfl_tensor *ln1_w, *ln1_b, *ln2_w, *ln2_b;
    dfl_linear_layer q, k, v, o, fc, proj;
    dfl_tensor *rel_k, *rel_v; /* Shaw */
} lm_block;

struct dfl_lm {
    dfl_lm_cfg cfg; /* resolved */
    dfl_params ps;
    dfl_tensor *tok, *pos, *t5;
    lm_block *blk;
    dfl_tensor *lnf_w, *lnf_b;
    dfl_linear_layer head;
};

static void fill_normal(dfl_tensor *t, dfl_rng *rng, float std)
{
    for (size_t i = 0; i < t->n; i++) t->data[i] = std * dfl_rng_normal(rng);
}

static void fill_const(dfl_tensor *t, float v)
{
    for (size_t i = 0; i < t->n; i++) t->data[i] = v;
}

/* A Linear registered as PyTorch's, then re-initialised GPT-2 style: weight N(0, std^2), bias 0. */
static int lm_linear(dfl_linear_layer *l, dfl_params *ps, dfl_rng *rng, int in, int out, float std, const char *name)
{
    if (dfl_linear_init(l, ps, rng, in, out, name)) return -1;
    fill_normal(l->weight, rng, std);
    fill_const(l->bias, 0.f);
    return 0;
}

static dfl_tensor *lm_norm_param(dfl_params *ps, int D, float v, const char *name)
{
    dfl_tensor *t = dfl_params_add(ps, 1, &D, "%s", name);
    if (t) fill_const(t, v);
    return t;
}

dfl_lm *dfl_lm_new(const dfl_lm_cfg *c0, dfl_rng *rng)
{
    if (dfl_lm_cfg_check(c0)) return NULL;
    dfl_lm *m = calloc(1, sizeof *m);
    if (!m) {
        dfl_fail(DFL_ERR_NOMEM, "lm: out of memory");
        return NULL;
    }
    m->cfg = dfl_lm_cfg_resolved(c0);
    const dfl_lm_cfg *c = &m->cfg;
    int D = c->dim, L = c->layers, Dh = D / c->heads;
    const float std = 0.02f, std_res = 0.02f / sqrtf(2.f * (float)L);
    m->blk = calloc((size_t)L, sizeof *m->blk);
    dfl_params *ps = &m->ps;
    char nm[128];
    int ok = m->blk != NULL;
    int sh[2] = {LM_VOCAB, D};
    ok = ok && (m->tok = dfl_params_add(ps, 2, sh, "tok_emb.weight"));
    if (ok) fill_normal(m->tok, rng, 1.f);
    if (ok && c->posenc == DFL_POSENC_LEARNED) {
        int sp[2] = {c->max_positions, D};
        ok = (m->pos = dfl_params_add(ps, 2, sp, "pos_emb.weight")) != NULL;
        if (ok) fill_normal(m->pos, rng, 1.f);
    }
    if (ok && c->posenc == DFL_POSENC_T5) {
        int st[2] = {c->t5_buckets, c->heads};
        ok = (m->t5 = dfl_params_add(ps, 2, st, "t5_bias.weight")) != NULL;
    }
    for (int l = 0; ok && l < L; l++) {
        lm_block *b = &m->blk[l];
#define NM(s) (snprintf(nm, sizeof nm, "blocks.%d.%s", l, s), nm)
        ok = (b->ln1_w = lm_norm_param(ps, D, 1.f, NM("ln1.weight"))) && (b->ln1_b = lm_norm_param(ps, D, 0.f, NM("ln1.bias"))) &&
             !lm_linear(&b->q, ps, rng, D, D, std, NM("attn.q")) && !lm_linear(&b->k, ps, rng, D, D, std, NM("attn.k")) &&
             !lm_linear(&b->v, ps, rng, D, D, std, NM("attn.v")) && !lm_linear(&b->o, ps, rng, D, D, std_res, NM("attn.o"));
        if (ok && c->posenc == DFL_POSENC_SHAW) {
            int sr[2] = {2 * c->shaw_k + 1, Dh};
            ok = (b->rel_k = dfl_params_add(ps, 2, sr, "blocks.%d.attn.rel_k", l)) &&
                 (b->rel_v = dfl_params_add(ps, 2, sr, "blocks.%d.attn.rel_v", l));
            if (ok) {
                fill_normal(b->rel_k, rng, std);
                fill_normal(b->rel_v, rng, std);
            }
        }
        ok = ok && (b->ln2_w = lm_norm_param(ps, D, 1.f, NM("ln2.weight"))) &&
             (b->ln2_b = lm_norm_param(ps, D, 0.f, NM("ln2.bias"))) && !lm_linear(&b->fc, ps, rng, D, c->ffn, std, NM("mlp.fc")) &&
             !lm_linear(&b->proj, ps, rng, c->ffn, D, std_res, NM("mlp.proj"));
#undef NM
    }
    ok = ok && (m->lnf_w = lm_norm_param(ps, D, 1.f, "ln_f.weight")) && (m->lnf_b = lm_norm_param(ps, D, 0.f, "ln_f.bias")) &&
         !lm_linear(&m->head, ps, rng, D, LM_VOCAB, std, "head");
    if (!ok) {
        if (!dfl_last_error()[0]) dfl_fail(DFL_ERR_NOMEM, "lm: out of memory");
        dfl_lm_free(m);
        return NULL;
    }
    return m;
}

void dfl_lm_free(dfl_lm *m)
{
    if (!m) return;
    dfl_params_free(&m->ps);
    free(m->blk);
    free(m);
}

dfl_params *dfl_lm_params(dfl_lm *m) { return &m->ps; }
const dfl_lm_cfg *dfl_lm_config(const dfl_lm *m) { return &m->cfg; }

dfl_status dfl_lm_set_rope_extension(dfl_lm *m, const dfl_rope_cfg *r)
{
    if (!dfl_posenc_uses_rope(m->cfg.posenc))
        return dfl_fail(DFL_ERR_ARG, "RoPE scaling applies to posenc rope and rope-linear, not %s", dfl_posenc_name(m->cfg.posenc));
    dfl_lm_cfg c = m->cfg;
    c.rope.scaling = r->scaling;
    c.rope.factor = r->factor;
    c.rope.orig_ctx = r->orig_ctx;
    c.rope.yarn_alpha = r->yarn_alpha;
    c.rope.yarn_beta = r->yarn_beta;
    if (dfl_lm_cfg_check(&c)) return DFL_ERR_ARG;
    m->cfg = dfl_lm_cfg_resolved(&c);
    return DFL_OK;
}

dfl_status dfl_lm_set_rope_scaling(dfl_lm *m, dfl_rope_scaling s, double factor)
{
    dfl_rope_cfg r = m->cfg.rope;
    r.scaling = s;
    r.factor = factor;
    return dfl_lm_set_rope_extension(m, &r);
}

dfl_status dfl_lm_check_length(const dfl_lm *m, int T)
{
    if (T < 1) return dfl_fail(DFL_ERR_ARG, "lm: sequence length %d must be >= 1", T);
    if (m->cfg.posenc == DFL_POSENC_LEARNED && T > m->cfg.max_positions)
        return dfl_fail(DFL_ERR_ARG, "%d positions exceed the learned table of %d positions", T, m->cfg.max_positions);
    return DFL_OK;
}

/* Causal self-attention of one block on h (B, T, D) -> (B, T, D), before W_o. */
static dfl_tensor *lm_attention(dfl_ctx *ctx, dfl_lm *m, lm_block *b, dfl_tensor *h, const int *pos, const float *ct,
                                const float *st, int rd, dfl_tensor *bias)
{
    const dfl_lm_cfg *c = &m->cfg;
    int H = c->heads, Dh = c->dim / H, T = h->shape[1];
    dfl_tensor *q = dfl_split_heads(ctx, dfl_linear(ctx, h, b->q.weight, b->q.bias), H);
    dfl_tensor *k = dfl_split_heads(ctx, dfl_linear(ctx, h, b->k.weight, b->k.bias), H);
    dfl_tensor *v = dfl_split_heads(ctx, dfl_linear(ctx, h, b->v.weight, b->v.bias), H);
    dfl_attn_opts o = {.causal = 1, .scale = 0.f, .bias = bias, .key_mask = NULL};
    dfl_tensor *a;
    switch (c->posenc) {
    case DFL_POSENC_ROPE:
        q = dfl_rope_with_tables(ctx, q, ct, st, rd, c->rope.layout);
        k = dfl_rope_with_tables(ctx, k, ct, st, rd, c->rope.layout);
        a = dfl_attention(ctx, q, k, v, &o);
        break;
    case DFL_POSENC_XPOS:
        q = dfl_xpos(ctx, q, pos, &c->rope, c->xpos_scale_base, 0);
        k = dfl_xpos(ctx, k, pos, &c->rope, c->xpos_scale_base, 1);
        a = dfl_attention(ctx, q, k, v, &o);
        break;
    case DFL_POSENC_ROPE_LINEAR: a = dfl_linear_attention(ctx, q, k, v, 1, &c->rope, pos); break;
    case DFL_POSENC_SHAW: {
        o.bias = dfl_shaw_bias(ctx, q, b->rel_k, T, 0, 1.f / sqrtf((float)Dh));
        if (!o.bias) return NULL;
        dfl_tensor *P = dfl_attention_probs(ctx, q, k, &o);
        a = dfl_add(ctx, dfl_attention_mix(ctx, P, v), dfl_shaw_values(ctx, P, b->rel_v, 0));
        break;
    }
    default: a = dfl_attention(ctx, q, k, v, &o); break;
    }
    return dfl_merge_heads(ctx, a);
}

dfl_tensor *dfl_lm_logits(dfl_ctx *ctx, dfl_lm *m, const int *ids, int B, int T)
{
    if (!ctx || !m) return NULL;
    if (B < 1) {
        dfl_fail(DFL_ERR_ARG, "lm: batch %d must be >= 1", B);
        return NULL;
    }
    if (dfl_lm_check_length(m, T)) return NULL;
    const dfl_lm_cfg *c = &m->cfg;
    int D = c->dim, H = c->heads, Dh = D / H;
    dfl_tensor *x = dfl_embedding(ctx, m->tok, ids, B, T);
    if (c->posenc == DFL_POSENC_LEARNED) x = dfl_learned_pos_add(ctx, x, m->pos, 0);
    if (c->posenc == DFL_POSENC_SINUSOIDAL) x = dfl_add(ctx, x, dfl_sinusoidal(ctx, T, D, 0));
    if (!x) return NULL;
    /* Shared by every layer of this forward: positions, RoPE tables, the ALiBi / T5 bias. */
    int *pos = dfl_arena_alloc(ctx, (size_t)T * sizeof *pos);
    if (!pos) return NULL;
    for (int t = 0; t < T; t++) pos[t] = c->posenc == DFL_POSENC_XPOS ? t - T / 2 : t;
    float *ct = NULL, *st = NULL;
    int rd = 0;
    if (c->posenc == DFL_POSENC_ROPE) {
        rd = dfl_rope_rot_dim(&c->rope, Dh);
        if (rd < 0) return NULL;
        size_t nt = (size_t)T * (size_t)(rd / 2);
        ct = dfl_arena_alloc(ctx, (nt ? nt : 1) * sizeof(float));
        st = dfl_arena_alloc(ctx, (nt ? nt : 1) * sizeof(float));
        if (!ct || !st || dfl_rope_tables(&c->rope, Dh, pos, T, ct, st)) return NULL;
    }
    dfl_tensor *bias = NULL;
    if (c->posenc == DFL_POSENC_ALIBI) bias = dfl_alibi_bias(ctx, H, T, T, 0);
    if (c->posenc == DFL_POSENC_T5) bias = dfl_t5_bias(ctx, m->t5, T, T, 0, 0, c->t5_max_distance);
    if ((c->posenc == DFL_POSENC_ALIBI || c->posenc == DFL_POSENC_T5) && !bias) return NULL;
    for (int l = 0; l < c->layers; l++) {
        lm_block *b = &m->blk[l];
        dfl_tensor *h = dfl_layer_norm(ctx, x, b->ln1_w, b->ln1_b, LN_EPS);
        h = lm_attention(ctx, m, b, h, pos, ct, st, rd, bias);
        x = dfl_add(ctx, x, dfl_linear(ctx, h, b->o.weight, b->o.bias));
        h = dfl_layer_norm(ctx, x, b->ln2_w, b->ln2_b, LN_EPS);
        h = dfl_gelu(ctx, dfl_linear(ctx, h, b->fc.weight, b->fc.bias), DFL_GELU_ERF);
        x = dfl_add(ctx, x, dfl_linear(ctx, h, b->proj.weight, b->proj.bias));
        if (!x) return NULL;
    }
    x = dfl_layer_norm(ctx, x, m->lnf_w, m->lnf_b, LN_EPS);
    return dfl_linear(ctx, x, m->head.weight, m->head.bias);
}

dfl_tensor *dfl_lm_loss(dfl_ctx *ctx, dfl_lm *m, const uint8_t *win, int B, int T)
{
    if (!ctx || !m || !win) return NULL;
    if (B < 1 || T < 1) {
        dfl_fail(DFL_ERR_ARG, "lm: loss needs B, T >= 1 (got %d, %d)", B, T);
        return NULL;
    }
    size_t nt = (size_t)B * T;
    int *ids = dfl_arena_alloc(ctx, nt * sizeof *ids), *tg = dfl_arena_alloc(ctx, nt * sizeof *tg);
    if (!ids || !tg) return NULL;
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++) {
            ids[(size_t)b * T + t] = win[(size_t)b * (T + 1) + t];
            tg[(size_t)b * T + t] = win[(size_t)b * (T + 1) + t + 1];
        }
    return dfl_cross_entropy(ctx, dfl_lm_logits(ctx, m, ids, B, T), tg, -1);
}

dfl_status dfl_lm_eval_bpb(dfl_ctx *ctx, dfl_lm *m, const uint8_t *text, size_t n, int L, int batch_tokens, double *bpb,
                           size_t *scored)
{
    if (!ctx || !m || !text || !bpb) return dfl_fail(DFL_ERR_ARG, "lm eval: NULL argument");
    if (n < 2 || L < 1) return dfl_fail(DFL_ERR_ARG, "lm eval: need at least 2 bytes and L >= 1 (got %zu bytes, L %d)", n, L);
    dfl_status st = dfl_lm_check_length(m, L);
    if (st) return st;
    int Bmax = batch_tokens / L > 1 ? batch_tokens / L : 1;
    if (m->cfg.posenc == DFL_POSENC_SHAW) { /* Shaw keeps (B, H, L, L) scores and probabilities per layer */
        long cap = (1L << 22) / ((long)m->cfg.heads * L * L);
        if (Bmax > cap) Bmax = cap > 1 ? (int)cap : 1;
    }
    uint8_t *win = malloc((size_t)Bmax * (L + 1));
    if (!win) return dfl_fail(DFL_ERR_NOMEM, "lm eval: out of memory");
    int was = dfl_ctx_set_grad(ctx, 0);
    double nats = 0.0;
    size_t s = 0, total = n - 1;
    while (s < total) {
        /* full windows of L predictions, as many as fit in a batch; then the shorter tail alone */
        size_t left = total - s;
        int len = left >= (size_t)L ? L : (int)left;
        int B = 0;
        while (B < Bmax && total - s >= (size_t)len && (B == 0 || len == L)) {
            memcpy(win + (size_t)B * (len + 1), text + s, (size_t)len + 1);
            s += (size_t)len;
            B++;
            if (len < L) break;
        }
        dfl_ctx_reset(ctx);
        dfl_tensor *loss = dfl_lm_loss(ctx, m, win, B, len);
        if (!loss) {
            st = DFL_ERR_ARG;
            break;
        }
        nats += (double)loss->data[0] * (double)B * len;
    }
    dfl_ctx_set_grad(ctx, was);
    dfl_ctx_reset(ctx);
    free(win);
    if (st) return dfl_fail(st == DFL_ERR_ARG ? DFL_ERR_ARG : st, "lm eval: %s", dfl_last_error());
    *bpb = nats / (double)total / log(2.0);
    if (scored) *scored = total;
    return DFL_OK;
}

/* ---------------------------------------------------------------- sampling */

typedef struct {
    float v;
    int i;
} lm_cand;

static int cand_cmp(const void *a, const void *b)
{
    const lm_cand *x = a, *y = b;
    if (x->v != y->v) return x->v > y->v ? -1 : 1;
    return x->i - y->i;
}

dfl_status dfl_lm_generate(dfl_ctx *ctx, dfl_lm *m, const uint8_t *prompt, int np, int n, const dfl_lm_sample_cfg *sc,
                           dfl_rng *rng, uint8_t *out, dfl_lm_emit_fn emit, void *user)
{
    if (!ctx || !m || !sc || !rng || (np > 0 && !prompt)) return dfl_fail(DFL_ERR_ARG, "lm generate: NULL argument");
    if (!(sc->temperature > 0) || !isfinite(sc->temperature))
        return dfl_fail(DFL_ERR_ARG, "lm generate: temperature %g must be > 0", sc->temperature);
    if (sc->top_k < 0 || sc->top_k > LM_VOCAB) return dfl_fail(DFL_ERR_ARG, "lm generate: top-k %d must be in 0..256", sc->top_k);
    if (sc->window < 1) return dfl_fail(DFL_ERR_ARG, "lm generate: window %d must be >= 1", sc->window);
    if (n < 0 || np < 0) return dfl_fail(DFL_ERR_ARG, "lm generate: negative length");
    dfl_status st = dfl_lm_check_length(m, sc->window);
    if (st) return st;
    int start = np > 0 ? np : 1;
    int cap = start + n;
    int *hist = malloc((size_t)(cap > 0 ? cap : 1) * sizeof *hist);
    if (!hist) return dfl_fail(DFL_ERR_NOMEM, "lm generate: out of memory");
    for (int i = 0; i < np; i++) hist[i] = prompt[i];
    if (np == 0) hist[0] = '\n';
    int len = start, was = dfl_ctx_set_grad(ctx, 0), k = sc->top_k ? sc->top_k : LM_VOCAB;
    lm_cand cand[LM_VOCAB];
    for (int g = 0; g < n; g++) {
        int W = len < sc->window ? len : sc->window;
        dfl_ctx_reset(ctx);
        dfl_tensor *lg = dfl_lm_logits(ctx, m, hist + (len - W), 1, W);
        if (!lg) {
            st = DFL_ERR_ARG;
            break;
        }
        const float *row = lg->data + (size_t)(W - 1) * LM_VOCAB;
        for (int i = 0; i < LM_VOCAB; i++) cand[i] = (lm_cand){row[i], i};
        qsort(cand, LM_VOCAB, sizeof cand[0], cand_cmp);
        double p[LM_VOCAB], tot = 0.0;
        for (int i = 0; i < k; i++) tot += (p[i] = exp(((double)cand[i].v - cand[0].v) / sc->temperature));
        double u = dfl_rng_uniform_d(rng) * tot, acc = 0.0;
        int pick = k - 1;
        for (int i = 0; i < k; i++) {
            acc += p[i];
            if (u < acc) {
                pick = i;
                break;
            }
        }
        uint8_t byte = (uint8_t)cand[pick].i;
        hist[len++] = byte;
        if (out) out[g] = byte;
        if (emit && emit(byte, user)) break;
    }
    dfl_ctx_set_grad(ctx, was);
    dfl_ctx_reset(ctx);
    free(hist);
    return st ? dfl_fail(DFL_ERR_ARG, "lm generate: %s", dfl_last_error()) : DFL_OK;
}

/* ---------------------------------------------------------------- checkpoints */

dfl_status dfl_lm_save(const char *path, const dfl_lm *m, long step, const char *const *extra_kv, int n_extra)
{
    const dfl_params *ps = &m->ps;
    dfl_named_tensor *ts = calloc((size_t)ps->n, sizeof *ts);
    const char **meta = calloc((size_t)(2 * (3 + n_extra)), sizeof *meta);
    char *js = dfl_lm_cfg_json(&m->cfg);
    dfl_status st;
    if (!ts || !meta || !js) {
        st = dfl_fail(DFL_ERR_NOMEM, "%s: out of memory", path);
    } else {
        for (int i = 0; i < ps->n; i++) ts[i] = (dfl_named_tensor){ps->p[i].name, ps->p[i].t};
        char s_step[32];
        snprintf(s_step, sizeof s_step, "%ld", step);
        meta[0] = "format";
        meta[1] = "difflow-lm";
        meta[2] = "config";
        meta[3] = js;
        meta[4] = "step";
        meta[5] = s_step;
        for (int i = 0; i < 2 * n_extra; i++) meta[6 + i] = extra_kv[i];
        st = dfl_safetensors_save(path, ts, ps->n, meta, 3 + n_extra);
    }
    free(js);
    free(meta);
    free(ts);
    return st;
}

dfl_status dfl_lm_load(const char *path, dfl_lm **out, long *step, char **meta_text)
{
    *out = NULL;
    if (meta_text) *meta_text = NULL;
    dfl_st_file *f = NULL;
    dfl_status st = dfl_safetensors_open(path, &f);
    if (st) return st;
    const char *fmt = dfl_st_meta(f, "format");
    if (!fmt || strcmp(fmt, "difflow-lm") != 0) {
        st = dfl_fail(DFL_ERR_FORMAT, "%s: not a difflow language-model checkpoint (metadata format is '%.64s', not 'difflow-lm')",
                      path, fmt ? fmt : "absent");
        dfl_st_close(f);
        return st;
    }
    dfl_lm_cfg c;
    if (dfl_lm_cfg_from_json(dfl_st_meta(f, "config"), &c)) {
        char m[512];
        snprintf(m, sizeof m, "%s", dfl_last_error());
        dfl_st_close(f);
        return dfl_fail(DFL_ERR_FORMAT, "%s: %s", path, m);
    }
    dfl_rng r;
    dfl_rng_init(&r, 0);
    dfl_lm *m = dfl_lm_new(&c, &r);
    if (!m) {
        dfl_st_close(f);
        return dfl_fail(DFL_ERR_FORMAT, "%s: %s", path, dfl_last_error());
    }
    for (int i = 0; i < m->ps.n && !st; i++) {
        int nd, shp[4];
        const float *d = dfl_st_get(f, m->ps.p[i].name, &nd, shp);
        dfl_tensor *t = m->ps.p[i].t;
        int same = d && nd == t->ndim;
        for (int j = 0; same && j < nd; j++) same = shp[j] == t->shape[j];
        if (!same) {
            st = dfl_fail(DFL_ERR_MISMATCH, "%s: tensor '%s' is %s for the model in its config", path, m->ps.p[i].name,
                          d ? "of another shape" : "missing");
            break;
        }
        memcpy(t->data, d, t->n * sizeof(float));
    }
    if (!st && dfl_st_count(f) != m->ps.n)
        st = dfl_fail(DFL_ERR_MISMATCH, "%s: %d tensors, but the model in its config has %d", path, dfl_st_count(f), m->ps.n);
    if (!st) {
        const char *v = dfl_st_meta(f, "step");
        if (step) *step = v ? strtol(v, NULL, 10) : 0;
        v = dfl_st_meta(f, "text");
        if (meta_text && v) *meta_text = strdup(v);
    }
    dfl_st_close(f);
    if (st) {
        dfl_lm_free(m);
        return st;
    }
    *out = m;
    return DFL_OK;
}

/* ---------------------------------------------------------------- corpus */

size_t dfl_lm_split(size_t n) { return (size_t)((double)n * 0.9); }

/* Appends the bytes of path to buf. 0, -2 out of memory, or the errno of the failed open or read
 * (EIO when the C library left errno at 0). */
static int append_file(const char *path, uint8_t **buf, size_t *n, size_t *cap)
{
    errno = 0;
    FILE *f = fopen(path, "rb");
    if (!f) return errno ? errno : EIO;
    for (;;) {
        if (*cap - *n < 65536) {
            size_t nc = *cap ? *cap * 2 : 1 << 20;
            uint8_t *nb = realloc(*buf, nc);
            if (!nb) {
                fclose(f);
                return -2;
            }
            *buf = nb;
            *cap = nc;
        }
        errno = 0;
        size_t r = fread(*buf + *n, 1, *cap - *n, f);
        *n += r;
        if (r == 0) break;
    }
    int err = ferror(f) ? (errno ? errno : EIO) : 0;
    fclose(f);
    return err;
}

static int name_cmp(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

static int has_suffix(const char *s, const char *suf)
{
    size_t a = strlen(s), b = strlen(suf);
    return a >= b && !strcmp(s + a - b, suf);
}

dfl_status dfl_lm_corpus_load(const char *path, uint8_t **data, size_t *n)
{
    *data = NULL;
    *n = 0;
    uint8_t *buf = NULL;
    size_t len = 0, cap = 0;
    struct stat sb;
    if (path) {
        if (stat(path, &sb) == 0 && S_ISDIR(sb.st_mode))
            return dfl_fail(DFL_ERR_IO, "%s: is a directory, not a text file", path);
        int r = append_file(path, &buf, &len, &cap);
        if (r) {
            free(buf);
            return r == -2 ? dfl_fail(DFL_ERR_NOMEM, "%s: out of memory", path)
                           : dfl_fail(DFL_ERR_IO, "cannot read text file %s: %s", path, strerror(r));
        }
        if (len == 0) {
            free(buf);
            return dfl_fail(DFL_ERR_FORMAT, "text file %s is empty", path);
        }
        *data = buf;
        *n = len;
        return DFL_OK;
    }
    DIR *d = opendir(DFL_FORTUNES_DIR);
    if (!d) return dfl_fail(DFL_ERR_IO, "cannot read %s: install Debian's fortunes package or pass --text FILE", DFL_FORTUNES_DIR);
    char **names = NULL;
    int nn = 0, ncap = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.' || has_suffix(e->d_name, ".dat") || has_suffix(e->d_name, ".u8")) continue;
        if (nn == ncap) {
            ncap = ncap ? 2 * ncap : 64;
            char **nb = realloc(names, (size_t)ncap * sizeof *nb);
            if (!nb) break;
            names = nb;
        }
        names[nn] = strdup(e->d_name);
        if (names[nn]) nn++;
    }
    closedir(d);
    if (nn > 1) qsort(names, (size_t)nn, sizeof *names, name_cmp);
    dfl_status st = DFL_OK;
    for (int i = 0; i < nn && !st; i++) {
        char p[4096];
        snprintf(p, sizeof p, "%s/%s", DFL_FORTUNES_DIR, names[i]);
        if (stat(p, &sb) || !S_ISREG(sb.st_mode)) continue;
        int r = append_file(p, &buf, &len, &cap);
        if (r) st = r == -2 ? dfl_fail(DFL_ERR_NOMEM, "%s: out of memory", p) : dfl_fail(DFL_ERR_IO, "cannot read %s: %s", p, strerror(r));
    }
    for (int i = 0; i < nn; i++) free(names[i]);
    free(names);
    if (!st && len == 0) st = dfl_fail(DFL_ERR_FORMAT, "%s holds no fortune text: install Debian's fortunes package", DFL_FORTUNES_DIR);
    if (st) {
        free(buf);
        return st;
    }
    *data = buf;
    *n = len;
    return DFL_OK;
}
