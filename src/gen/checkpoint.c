/* Model checkpoints: safetensors with the config in __metadata__ (DESIGN section 8). */
#include "difflow/flow.h"
#include "difflow/gen.h"
#include "difflow/io.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

char *dfl_model_config_json(const dfl_model *m, const dfl_model_info *info)
{
    cJSON *o = cJSON_CreateObject();
    if (!o) return NULL;
    const dfl_process *p = &m->proc;
    cJSON_AddStringToObject(o, "format", "difflow");
    cJSON_AddNumberToObject(o, "format_version", DFL_FORMAT_VERSION);
    cJSON_AddStringToObject(o, "arch", info->arch);
    cJSON_AddStringToObject(o, "method", dfl_family_name(p->family));
    cJSON_AddNumberToObject(o, "sigma_min", p->sigma_min);
    cJSON_AddNumberToObject(o, "sigma_max", p->sigma_max);
    cJSON_AddNumberToObject(o, "sigma_data", p->sigma_data);
    cJSON_AddNumberToObject(o, "P_mean", p->P_mean);
    cJSON_AddNumberToObject(o, "P_std", p->P_std);
    cJSON_AddStringToObject(o, "pred", dfl_pred_name(p->pred));
    cJSON_AddNumberToObject(o, "beta_min", p->beta_min);
    cJSON_AddNumberToObject(o, "beta_d", p->beta_d);
    cJSON_AddNumberToObject(o, "eps_t", p->eps_t);
    cJSON_AddNumberToObject(o, "ve_sigma_min", p->ve_sigma_min);
    cJSON_AddNumberToObject(o, "ve_sigma_max", p->ve_sigma_max);
    cJSON_AddStringToObject(o, "ddpm_schedule", dfl_ddpm_schedule_name(p->ddpm_schedule));
    cJSON_AddBoolToObject(o, "ot", p->fm_ot != 0);
    const dfl_arch_cfg *ac = dfl_net_cfg(m->net);
    if (ac->arch == DFL_ARCH_DIT) { /* the preset's architecture, plus its positional encoding */
        cJSON_AddStringToObject(o, "posenc", dfl_dit_posenc_name(ac->posenc));
        if (ac->posenc == DFL_DIT_POS_ROPE2D) cJSON_AddNumberToObject(o, "rope_theta", ac->rope_theta);
    }
    cJSON_AddStringToObject(o, "data", info->data);
    cJSON_AddStringToObject(o, "data_transform",
                            dfl_net_cfg(m->net)->arch != DFL_ARCH_MLP ? "x = v/127.5 - 1 (8-bit pixels to [-1, 1])" : "none (2-D points)");
    cJSON_AddNumberToObject(o, "step", (double)info->step);
    char seed[32];
    snprintf(seed, sizeof seed, "%llu", (unsigned long long)info->seed);
    cJSON_AddStringToObject(o, "seed", seed);
    char *s = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    return s;
}

dfl_status dfl_checkpoint_write(const char *path, dfl_params *const *groups, int ngroups, long step, const char *arch,
                                const char *method, const char *config_json)
{
    int n = 0;
    for (int g = 0; g < ngroups; g++) n += groups[g]->n;
    dfl_named_tensor *ts = malloc((size_t)(n > 0 ? n : 1) * sizeof *ts);
    if (!ts) return dfl_fail(DFL_ERR_NOMEM, "%s: out of memory", path);
    n = 0;
    for (int g = 0; g < ngroups; g++)
        for (int i = 0; i < groups[g]->n; i++, n++) {
            ts[n].name = groups[g]->p[i].name;
            ts[n].t = groups[g]->p[i].t;
        }
    char ver[16], st_step[32];
    snprintf(ver, sizeof ver, "%d", DFL_FORMAT_VERSION);
    snprintf(st_step, sizeof st_step, "%ld", step);
    const char *meta[] = {"format", "difflow", "format_version", ver, "step", st_step,
                          "arch", arch, "method", method, "config", config_json};
    dfl_status st = dfl_safetensors_save(path, ts, n, meta, 6);
    free(ts);
    return st;
}

dfl_status dfl_model_save(const char *path, const dfl_model *m, const dfl_model_info *info)
{
    char *cfg = dfl_model_config_json(m, info);
    if (!cfg) return dfl_fail(DFL_ERR_NOMEM, "%s: out of memory", path);
    dfl_params *ps = dfl_net_params(m->net);
    dfl_status st = dfl_checkpoint_write(path, &ps, 1, info->step, info->arch, dfl_family_name(m->proc.family), cfg);
    free(cfg);
    return st;
}

static int get_num(const cJSON *o, const char *k, double *v)
{
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(o, k);
    if (!cJSON_IsNumber(it)) return 0;
    *v = it->valuedouble;
    return 1;
}

dfl_status dfl_model_load(const char *path, dfl_model *m, dfl_model_info *info)
{
    memset(m, 0, sizeof *m);
    memset(info, 0, sizeof *info);
    dfl_st_file *f = NULL;
    dfl_status st = dfl_safetensors_open(path, &f);
    if (st) return st;
    /* Other difflow files get a message naming what they are, not a format-version error. */
    const char *fmt = dfl_st_meta(f, "format");
    if (fmt && strcmp(fmt, "difflow") != 0) {
        if (!strcmp(fmt, "difflow-lm"))
            st = dfl_fail(DFL_ERR_FORMAT, "%s: a difflow language-model checkpoint; use difflow lm generate|eval", path);
        else
            st = dfl_fail(DFL_ERR_FORMAT, "%s: not a difflow checkpoint (format '%.64s')", path, fmt);
        dfl_st_close(f);
        return st;
    }
    if (dfl_flow_is_checkpoint(path)) {
        const char *kind = dfl_st_meta(f, "method");
        st = dfl_fail(DFL_ERR_FORMAT, "%s: a normalizing-flow checkpoint (%.32s), not a diffusion/flow-matching model", path,
                      kind ? kind : "?");
        dfl_st_close(f);
        return st;
    }
    const char *cfg = dfl_st_meta(f, "config");
    cJSON *o = cfg ? cJSON_Parse(cfg) : NULL;
    if (!o) {
        dfl_st_close(f);
        return dfl_fail(DFL_ERR_FORMAT, "%s: not a difflow checkpoint (no valid \"config\" in __metadata__)", path);
    }
    const cJSON *arch = cJSON_GetObjectItemCaseSensitive(o, "arch");
    const cJSON *method = cJSON_GetObjectItemCaseSensitive(o, "method");
    const cJSON *data = cJSON_GetObjectItemCaseSensitive(o, "data");
    double ver = 0, step = 0;
    dfl_arch_cfg ac;
    if (!get_num(o, "format_version", &ver) || ver != DFL_FORMAT_VERSION) {
        st = dfl_fail(DFL_ERR_FORMAT, "%s: unsupported checkpoint format version (expected %d)", path, DFL_FORMAT_VERSION);
        goto out;
    }
    if (!cJSON_IsString(arch) || !cJSON_IsString(method) || strlen(arch->valuestring) >= sizeof info->arch) {
        st = dfl_fail(DFL_ERR_FORMAT, "%s: config lacks \"arch\" or \"method\"", path);
        goto out;
    }
    dfl_family fam;
    if (dfl_family_parse(method->valuestring, &fam) || dfl_arch_preset(arch->valuestring, &ac)) {
        st = dfl_fail(DFL_ERR_FORMAT, "%s: config names unknown arch '%s' or method '%s'", path, arch->valuestring,
                      method->valuestring);
        goto out;
    }
    if (ac.arch == DFL_ARCH_DIT) {
        /* DiT checkpoints written before "posenc" existed used the preset's 2-D RoPE. */
        const cJSON *pe = cJSON_GetObjectItemCaseSensitive(o, "posenc");
        if (pe && (!cJSON_IsString(pe) || dfl_dit_posenc_parse(pe->valuestring, &ac.posenc))) {
            st = dfl_fail(DFL_ERR_FORMAT, "%s: config names an unknown DiT posenc '%s' (known: rope2d, sincos, none)", path,
                          cJSON_IsString(pe) ? pe->valuestring : "?");
            goto out;
        }
        if (get_num(o, "rope_theta", &ac.rope_theta) && !(ac.rope_theta > 0)) {
            st = dfl_fail(DFL_ERR_FORMAT, "%s: config has an invalid rope_theta %g", path, ac.rope_theta);
            goto out;
        }
    }
    dfl_process_default(&m->proc, fam);
    /* Keys added with the VP/sub-VP/VE/DDPM families; older checkpoints lack them and keep the
     * family's defaults (pred included). The DDPM table is rebuilt before sigma_min/sigma_max are
     * read, so stored sampler ranges win over the schedule's. */
    const cJSON *pred = cJSON_GetObjectItemCaseSensitive(o, "pred");
    const cJSON *dsched = cJSON_GetObjectItemCaseSensitive(o, "ddpm_schedule");
    if (cJSON_IsString(dsched)) {
        dfl_ddpm_schedule ds;
        if (dfl_ddpm_schedule_parse(dsched->valuestring, &ds)) {
            st = dfl_fail(DFL_ERR_FORMAT, "%s: config names unknown ddpm_schedule '%s'", path, dsched->valuestring);
            goto out;
        }
        dfl_process_set_ddpm(&m->proc, ds);
    }
    if (cJSON_IsString(pred) && (dfl_pred_parse(pred->valuestring, &m->proc.pred) || dfl_pred_check(&m->proc, m->proc.pred))) {
        st = dfl_fail(DFL_ERR_FORMAT, "%s: config has an invalid pred '%s' for method '%s'", path, pred->valuestring,
                      method->valuestring);
        goto out;
    }
    m->proc.fm_ot = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(o, "ot"));
    get_num(o, "beta_min", &m->proc.beta_min);
    get_num(o, "beta_d", &m->proc.beta_d);
    get_num(o, "eps_t", &m->proc.eps_t);
    get_num(o, "ve_sigma_min", &m->proc.ve_sigma_min);
    get_num(o, "ve_sigma_max", &m->proc.ve_sigma_max);
    if (!(m->proc.beta_min > 0) || !(m->proc.beta_d >= 0) || !(m->proc.eps_t >= 0 && m->proc.eps_t < 1) ||
        !(m->proc.ve_sigma_min > 0) || !(m->proc.ve_sigma_max > m->proc.ve_sigma_min)) {
        st = dfl_fail(DFL_ERR_FORMAT, "%s: config has invalid process constants", path);
        goto out;
    }
    get_num(o, "sigma_min", &m->proc.sigma_min);
    get_num(o, "sigma_max", &m->proc.sigma_max);
    get_num(o, "sigma_data", &m->proc.sigma_data);
    get_num(o, "P_mean", &m->proc.P_mean);
    get_num(o, "P_std", &m->proc.P_std);
    if (!(m->proc.sigma_min > 0) || !(m->proc.sigma_max > m->proc.sigma_min) || !(m->proc.sigma_data > 0)) {
        st = dfl_fail(DFL_ERR_FORMAT, "%s: config has an invalid sigma range", path);
        goto out;
    }
    get_num(o, "step", &step);
    snprintf(info->arch, sizeof info->arch, "%s", arch->valuestring);
    if (cJSON_IsString(data)) snprintf(info->data, sizeof info->data, "%s", data->valuestring);
    info->step = (long)step;
    const cJSON *seed = cJSON_GetObjectItemCaseSensitive(o, "seed");
    if (cJSON_IsString(seed)) info->seed = strtoull(seed->valuestring, NULL, 10);
    dfl_rng rng;
    dfl_rng_init(&rng, 0);
    m->net = dfl_net_new(&ac, &rng);
    if (!m->net) {
        st = DFL_ERR_NOMEM;
        goto out;
    }
    dfl_params *ps = dfl_net_params(m->net);
    for (int i = 0; i < ps->n; i++) {
        int nd, shp[4];
        const float *d = dfl_st_get(f, ps->p[i].name, &nd, shp);
        dfl_tensor *t = ps->p[i].t;
        if (!d) {
            st = dfl_fail(DFL_ERR_MISMATCH, "%s: no tensor '%s' for %s: the checkpoint is from another model", path,
                          ps->p[i].name, info->arch);
            goto out;
        }
        int same = nd == t->ndim;
        for (int k = 0; same && k < nd; k++) same = shp[k] == t->shape[k];
        if (!same) {
            char b[64];
            st = dfl_fail(DFL_ERR_MISMATCH, "%s: tensor '%s' has a different shape than %s expects %s: the checkpoint is from another model",
                          path, ps->p[i].name, info->arch, dfl_shape_str(t, b, sizeof b));
            goto out;
        }
        memcpy(t->data, d, t->n * sizeof(float));
    }
    if (dfl_st_count(f) != ps->n) {
        st = dfl_fail(DFL_ERR_MISMATCH, "%s: holds %d tensors but %s has %d: the checkpoint is from another model", path,
                      dfl_st_count(f), info->arch, ps->n);
        goto out;
    }
out:
    cJSON_Delete(o);
    dfl_st_close(f);
    if (st) {
        dfl_net_free(m->net);
        m->net = NULL;
    }
    return st;
}
