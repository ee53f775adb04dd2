/* Flow checkpoints: safetensors with every parameter and buffer of a flow (LU permutation and
 * signs, the ActNorm "initialised" flag) and the flow config as JSON in __metadata__ (DESIGN
 * section 8; reference/flows.md pitfall 3: a reload must not re-run data-dependent init). */
#include "difflow/flow.h"
#include "difflow/io.h"

#include <cjson/cJSON.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Every integer field of dfl_flow_cfg, under its own name in the config JSON ("steps" is Glow's K,
 * not the training "step"); kind is "method", base and logit_alpha are written apart. */
static const struct {
    const char *key;
    size_t off;
} CFG_INTS[] = {
    {"channels", offsetof(dfl_flow_cfg, channels)},       {"height", offsetof(dfl_flow_cfg, height)},
    {"width", offsetof(dfl_flow_cfg, width)}, {"couplings", offsetof(dfl_flow_cfg, couplings)},
    {"hidden", offsetof(dfl_flow_cfg, hidden)},           {"depth", offsetof(dfl_flow_cfg, depth)},
    {"scales", offsetof(dfl_flow_cfg, scales)},           {"blocks", offsetof(dfl_flow_cfg, blocks)},
    {"levels", offsetof(dfl_flow_cfg, levels)},           {"steps", offsetof(dfl_flow_cfg, steps)},
    {"net_width", offsetof(dfl_flow_cfg, net_width)}, {"additive", offsetof(dfl_flow_cfg, additive)},
    {"lu", offsetof(dfl_flow_cfg, lu)},
    /* added with the in-flow dequantization and Glow's learned top prior; absent from older
     * checkpoints (cfg_from_json gives their meaning) */
    {"dequant_bits", offsetof(dfl_flow_cfg, dequant_bits)}, {"learn_top", offsetof(dfl_flow_cfg, learn_top)},
};
#define N_CFG_INTS_V1 13 /* the fields every flow checkpoint has */
#define N_CFG_INTS (sizeof CFG_INTS / sizeof CFG_INTS[0])

char *dfl_flow_config_json(const dfl_flow *f, const dfl_model_info *info)
{
    const dfl_flow_cfg *c = dfl_flow_get_cfg(f);
    cJSON *o = cJSON_CreateObject();
    if (!o) return NULL;
    cJSON_AddStringToObject(o, "format", "difflow");
    cJSON_AddNumberToObject(o, "format_version", DFL_FORMAT_VERSION);
    cJSON_AddStringToObject(o, "arch", info->arch);
    cJSON_AddStringToObject(o, "method", dfl_flow_kind_name(c->kind));
    cJSON_AddStringToObject(o, "base", c->base == DFL_BASE_LOGISTIC ? "logistic" : "normal");
    for (size_t i = 0; i < N_CFG_INTS; i++)
        cJSON_AddNumberToObject(o, CFG_INTS[i].key, *(const int *)((const char *)c + CFG_INTS[i].off));
    cJSON_AddNumberToObject(o, "logit_alpha", (double)c->logit_alpha); /* round-trips exactly */
    cJSON_AddNumberToObject(o, "split_clamp", (double)c->split_clamp);
    cJSON_AddStringToObject(o, "data", info->data);
    char dt[160];
    if (c->height > 0 && c->dequant_bits > 0)
        snprintf(dt, sizeof dt, "x = v + u in [0, %d), u ~ U[0,1); the flow's first layer maps it to [-1, 1)",
                 1 << c->dequant_bits);
    else
        snprintf(dt, sizeof dt, "%s", c->height > 0 ? "none (images given in [-1, 1))" : "none (2-D points)");
    cJSON_AddStringToObject(o, "data_transform", dt);
    cJSON_AddNumberToObject(o, "step", (double)info->step);
    char seed[32];
    snprintf(seed, sizeof seed, "%llu", (unsigned long long)info->seed);
    cJSON_AddStringToObject(o, "seed", seed);
    char *s = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    return s;
}

dfl_status dfl_flow_save(const char *path, const dfl_flow *f, const dfl_model_info *info)
{
    dfl_flow *fm = (dfl_flow *)f; /* the accessors are not const; nothing is modified */
    dfl_params *groups[2] = {dfl_flow_params(fm), dfl_flow_buffers(fm)};
    char *cfg = dfl_flow_config_json(f, info);
    if (!cfg) return dfl_fail(DFL_ERR_NOMEM, "%s: out of memory", path);
    dfl_status st = dfl_checkpoint_write(path, groups, 2, info->step, info->arch,
                                         dfl_flow_kind_name(dfl_flow_get_cfg(f)->kind), cfg);
    free(cfg);
    return st;
}

/* Copies the tensors of `ps` from the file, each present with its exact shape. */
static dfl_status load_group(const char *path, const dfl_st_file *f, dfl_params *ps, const char *what)
{
    for (int i = 0; i < ps->n; i++) {
        int nd, shp[4];
        dfl_tensor *t = ps->p[i].t;
        const float *d = dfl_st_get(f, ps->p[i].name, &nd, shp);
        char b[64];
        if (!d)
            return dfl_fail(DFL_ERR_MISMATCH, "%s: no %s '%s' %s: the checkpoint is from another model", path, what,
                            ps->p[i].name, dfl_shape_str(t, b, sizeof b));
        int same = nd == t->ndim;
        for (int k = 0; same && k < nd; k++) same = shp[k] == t->shape[k];
        if (!same)
            return dfl_fail(DFL_ERR_MISMATCH, "%s: %s '%s' has a different shape than the flow expects %s: the checkpoint is from another model",
                            path, what, ps->p[i].name, dfl_shape_str(t, b, sizeof b));
        memcpy(t->data, d, t->n * sizeof(float));
    }
    return DFL_OK;
}

/* The flow config of a checkpoint's JSON; every field is required. */
static dfl_status cfg_from_json(const char *path, const cJSON *o, dfl_flow_cfg *c)
{
    memset(c, 0, sizeof *c);
    const cJSON *method = cJSON_GetObjectItemCaseSensitive(o, "method");
    const cJSON *base = cJSON_GetObjectItemCaseSensitive(o, "base");
    const cJSON *alpha = cJSON_GetObjectItemCaseSensitive(o, "logit_alpha");
    if (!cJSON_IsString(method) || dfl_flow_kind_parse(method->valuestring, &c->kind))
        return dfl_fail(DFL_ERR_FORMAT, "%s: config names no flow method (nice, realnvp, glow)", path);
    if (!cJSON_IsString(base) || (strcmp(base->valuestring, "normal") && strcmp(base->valuestring, "logistic")))
        return dfl_fail(DFL_ERR_FORMAT, "%s: config lacks a valid \"base\" (normal or logistic)", path);
    c->base = strcmp(base->valuestring, "logistic") == 0 ? DFL_BASE_LOGISTIC : DFL_BASE_NORMAL;
    for (size_t i = 0; i < N_CFG_INTS; i++) {
        const cJSON *it = cJSON_GetObjectItemCaseSensitive(o, CFG_INTS[i].key);
        if (!it && i >= N_CFG_INTS_V1) continue; /* an older checkpoint: see below */
        if (!cJSON_IsNumber(it) || it->valuedouble != (double)(int)it->valuedouble || it->valuedouble < 0 ||
            it->valuedouble > 1e6)
            return dfl_fail(DFL_ERR_FORMAT, "%s: config lacks a valid \"%s\"", path, CFG_INTS[i].key);
        *(int *)((char *)c + CFG_INTS[i].off) = (int)it->valuedouble;
    }
    if (!cJSON_IsNumber(alpha) || !(alpha->valuedouble >= 0 && alpha->valuedouble < 0.5))
        return dfl_fail(DFL_ERR_FORMAT, "%s: config lacks a valid \"logit_alpha\"", path);
    c->logit_alpha = (float)alpha->valuedouble;
    /* The soft bound of the split priors' log-sd; checkpoints written before it have none and
     * keep their meaning: unbounded log-sd (split_clamp 0), the same log p to the last digit. */
    const cJSON *clamp = cJSON_GetObjectItemCaseSensitive(o, "split_clamp");
    if (clamp && (!cJSON_IsNumber(clamp) || !(clamp->valuedouble >= 0 && clamp->valuedouble <= 1000)))
        return dfl_fail(DFL_ERR_FORMAT, "%s: config has an invalid \"split_clamp\" (0..1000)", path);
    c->split_clamp = clamp ? (float)clamp->valuedouble : 0.0f;
    /* Checkpoints written before the dequantization layer: their image flows modelled
     * y = -1 + 2 (v + u)/256 in [-1, 1) directly. The dequantization map in front of the same
     * layers is that model re-expressed on x = v + u (same tensors, same bits/dim), so it is
     * added; any other data transform is refused. They had no learned top prior. */
    if (!cJSON_GetObjectItemCaseSensitive(o, "dequant_bits") && c->height > 0) {
        const cJSON *dt = cJSON_GetObjectItemCaseSensitive(o, "data_transform");
        if (!cJSON_IsString(dt) || strncmp(dt->valuestring, "y = -1 + 2 (v + u)/256", 22) != 0)
            return dfl_fail(DFL_ERR_FORMAT, "%s: image flow checkpoint without \"dequant_bits\" and with an unknown "
                            "data transform: retrain it with this difflow", path);
        c->dequant_bits = 8;
    }
    return DFL_OK;
}

dfl_status dfl_flow_load(const char *path, dfl_flow **out, dfl_model_info *info)
{
    *out = NULL;
    memset(info, 0, sizeof *info);
    dfl_st_file *f = NULL;
    dfl_status st = dfl_safetensors_open(path, &f);
    if (st) return st;
    const char *cfgs = dfl_st_meta(f, "config");
    cJSON *o = cfgs ? cJSON_Parse(cfgs) : NULL;
    dfl_flow *fl = NULL;
    if (!o) {
        st = dfl_fail(DFL_ERR_FORMAT, "%s: not a difflow checkpoint (no valid \"config\" in __metadata__)", path);
        goto out;
    }
    const cJSON *ver = cJSON_GetObjectItemCaseSensitive(o, "format_version");
    if (!cJSON_IsNumber(ver) || ver->valuedouble != DFL_FORMAT_VERSION) {
        st = dfl_fail(DFL_ERR_FORMAT, "%s: unsupported checkpoint format version (expected %d)", path, DFL_FORMAT_VERSION);
        goto out;
    }
    dfl_flow_cfg c;
    if ((st = cfg_from_json(path, o, &c))) goto out;
    const cJSON *arch = cJSON_GetObjectItemCaseSensitive(o, "arch");
    const cJSON *data = cJSON_GetObjectItemCaseSensitive(o, "data");
    const cJSON *step = cJSON_GetObjectItemCaseSensitive(o, "step");
    const cJSON *seed = cJSON_GetObjectItemCaseSensitive(o, "seed");
    snprintf(info->arch, sizeof info->arch, "%s", cJSON_IsString(arch) ? arch->valuestring : dfl_flow_kind_name(c.kind));
    if (cJSON_IsString(data)) snprintf(info->data, sizeof info->data, "%s", data->valuestring);
    if (cJSON_IsNumber(step)) info->step = (long)step->valuedouble;
    if (cJSON_IsString(seed)) info->seed = strtoull(seed->valuestring, NULL, 10);
    dfl_rng rng;
    dfl_rng_init(&rng, 0);
    fl = dfl_flow_new(&c, &rng);
    if (!fl) {
        char why[512]; /* dfl_last_error() is the buffer dfl_fail writes: copy it first */
        snprintf(why, sizeof why, "%s", dfl_last_error());
        st = dfl_fail(DFL_ERR_FORMAT, "%s: %s", path, why);
        goto out;
    }
    dfl_params *ps = dfl_flow_params(fl), *bs = dfl_flow_buffers(fl);
    if ((st = load_group(path, f, ps, "parameter")) || (st = load_group(path, f, bs, "buffer"))) goto out;
    if (dfl_st_count(f) != ps->n + bs->n) {
        /* name the first tensor the flow does not have */
        const char *extra = "?";
        for (int i = 0; i < dfl_st_count(f); i++) {
            const char *nm = dfl_st_name(f, i);
            if (!dfl_params_find(ps, nm) && !dfl_params_find(bs, nm)) {
                extra = nm;
                break;
            }
        }
        st = dfl_fail(DFL_ERR_MISMATCH, "%s: holds %d tensors but the %s flow has %d (first unknown: '%s'): the checkpoint is from another model",
                      path, dfl_st_count(f), dfl_flow_kind_name(c.kind), ps->n + bs->n, extra);
        goto out;
    }
out:
    cJSON_Delete(o);
    dfl_st_close(f);
    if (st) {
        dfl_flow_free(fl);
        return st;
    }
    *out = fl;
    return DFL_OK;
}

int dfl_flow_is_checkpoint(const char *path)
{
    /* Reads the header only: 8-byte little-endian size, then the JSON with __metadata__.method. */
    FILE *fp = path ? fopen(path, "rb") : NULL;
    if (!fp) return 0;
    unsigned char b[8];
    int is = 0;
    if (fread(b, 1, 8, fp) == 8) {
        uint64_t n = 0;
        for (int i = 7; i >= 0; i--) n = (n << 8) | b[i];
        char *h = n > 0 && n <= 100000000u ? malloc((size_t)n + 1) : NULL;
        if (h && fread(h, 1, (size_t)n, fp) == (size_t)n) {
            h[n] = 0;
            cJSON *o = cJSON_Parse(h);
            const cJSON *meta = cJSON_GetObjectItemCaseSensitive(o, "__metadata__");
            const cJSON *m = cJSON_GetObjectItemCaseSensitive(meta, "method");
            is = cJSON_IsString(m) &&
                 (!strcmp(m->valuestring, "nice") || !strcmp(m->valuestring, "realnvp") || !strcmp(m->valuestring, "glow"));
            cJSON_Delete(o);
        }
        free(h);
    }
    fclose(fp);
    return is;
}
