/* Parameter registry and layer initialisers (PyTorch default initialisation). */
#include "difflow/nn.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

dfl_tensor *dfl_params_add(dfl_params *ps, int ndim, const int *shape, const char *fmt, ...)
{
    char name[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(name, sizeof name, fmt, ap);
    va_end(ap);
    if (ps->n == ps->cap) {
        int cap = ps->cap ? ps->cap * 2 : 64;
        dfl_param *np = realloc(ps->p, (size_t)cap * sizeof *np);
        if (!np) {
            dfl_fail(DFL_ERR_NOMEM, "params: out of memory");
            return NULL;
        }
        ps->p = np;
        ps->cap = cap;
    }
    dfl_tensor *t = dfl_tensor_new(ndim, shape, 1);
    if (!t) return NULL;
    char *nm = strdup(name);
    if (!nm) {
        dfl_tensor_free(t);
        dfl_fail(DFL_ERR_NOMEM, "params: out of memory");
        return NULL;
    }
    ps->p[ps->n].name = nm;
    ps->p[ps->n].t = t;
    ps->n++;
    return t;
}

void dfl_params_free(dfl_params *ps)
{
    for (int i = 0; i < ps->n; i++) {
        free(ps->p[i].name);
        dfl_tensor_free(ps->p[i].t);
    }
    free(ps->p);
    ps->p = NULL;
    ps->n = ps->cap = 0;
}

size_t dfl_params_count(const dfl_params *ps)
{
    size_t n = 0;
    for (int i = 0; i < ps->n; i++) n += ps->p[i].t->n;
    return n;
}

dfl_tensor *dfl_params_find(const dfl_params *ps, const char *name)
{
    for (int i = 0; i < ps->n; i++)
        if (strcmp(ps->p[i].name, name) == 0) return ps->p[i].t;
    return NULL;
}

void dfl_params_zero_grad(dfl_params *ps)
{
    for (int i = 0; i < ps->n; i++) memset(ps->p[i].t->grad, 0, ps->p[i].t->n * sizeof(float));
}

static void fill_uniform(dfl_rng *rng, dfl_tensor *t, float bound)
{
    for (size_t i = 0; i < t->n; i++) t->data[i] = (2.f * dfl_rng_uniform(rng) - 1.f) * bound;
}

dfl_status dfl_linear_init(dfl_linear_layer *l, dfl_params *ps, dfl_rng *rng, int in, int out, const char *prefix)
{
    int ws[2] = {out, in}, bs[1] = {out};
    l->in = in;
    l->out = out;
    l->weight = dfl_params_add(ps, 2, ws, "%s.weight", prefix);
    l->bias = l->weight ? dfl_params_add(ps, 1, bs, "%s.bias", prefix) : NULL;
    if (!l->bias) return DFL_ERR_NOMEM;
    float bound = 1.f / sqrtf((float)in);
    fill_uniform(rng, l->weight, bound);
    fill_uniform(rng, l->bias, bound);
    return DFL_OK;
}

dfl_status dfl_conv_init(dfl_conv_layer *l, dfl_params *ps, dfl_rng *rng, int cin, int cout, int k, const char *prefix)
{
    int ws[4] = {cout, cin, k, k}, bs[1] = {cout};
    l->cin = cin;
    l->cout = cout;
    l->k = k;
    l->weight = dfl_params_add(ps, 4, ws, "%s.weight", prefix);
    l->bias = l->weight ? dfl_params_add(ps, 1, bs, "%s.bias", prefix) : NULL;
    if (!l->bias) return DFL_ERR_NOMEM;
    float bound = 1.f / sqrtf((float)(cin * k * k));
    fill_uniform(rng, l->weight, bound);
    fill_uniform(rng, l->bias, bound);
    return DFL_OK;
}

dfl_status dfl_gn_init(dfl_gn_layer *l, dfl_params *ps, int channels, int groups, const char *prefix)
{
    int s[1] = {channels};
    l->channels = channels;
    l->groups = groups;
    l->weight = dfl_params_add(ps, 1, s, "%s.weight", prefix);
    l->bias = l->weight ? dfl_params_add(ps, 1, s, "%s.bias", prefix) : NULL;
    if (!l->bias) return DFL_ERR_NOMEM;
    for (int i = 0; i < channels; i++) l->weight->data[i] = 1.f;
    return DFL_OK;
}
