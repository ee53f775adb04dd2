/* Forward processes as (alpha(t), sigma(t)) (DESIGN section 4; shared/reference/diffusion.md 1.2). */
#include "difflow/gen.h"

#include <math.h>
#include <string.h>

void dfl_process_default(dfl_process *p, dfl_family f)
{
    memset(p, 0, sizeof *p);
    p->family = f;
    p->sigma_min = 0.002; /* EDM Table 1 / generate.py */
    p->sigma_max = 80.0;
    p->sigma_data = 0.5;
    p->P_mean = -1.2;     /* EDM training/loss.py: ln sigma ~ N(-1.2, 1.2^2) */
    p->P_std = 1.2;
}

dfl_status dfl_family_parse(const char *name, dfl_family *f)
{
    if (strcmp(name, "fm") == 0) *f = DFL_FAMILY_FM;
    else if (strcmp(name, "edm") == 0) *f = DFL_FAMILY_EDM;
    else return dfl_fail(DFL_ERR_ARG, "unknown method '%s' (known: fm, edm)", name);
    return DFL_OK;
}

const char *dfl_family_name(dfl_family f) { return f == DFL_FAMILY_FM ? "fm" : "edm"; }

double dfl_alpha(const dfl_process *p, double t) { return p->family == DFL_FAMILY_FM ? 1.0 - t : 1.0; }
double dfl_sigma(const dfl_process *p, double t) { (void)p; return t; }
double dfl_dalpha(const dfl_process *p, double t) { (void)t; return p->family == DFL_FAMILY_FM ? -1.0 : 0.0; }
double dfl_dsigma(const dfl_process *p, double t) { (void)p; (void)t; return 1.0; }

double dfl_ratio(const dfl_process *p, double t) { return dfl_sigma(p, t) / dfl_alpha(p, t); }

double dfl_t_of_ratio(const dfl_process *p, double s)
{
    /* FM: s = t/(1-t) => t = s/(1+s) (diffusion.md 2.7); EDM: t = s. */
    return p->family == DFL_FAMILY_FM ? s / (1.0 + s) : s;
}

double dfl_t_max(const dfl_process *p) { return p->family == DFL_FAMILY_FM ? 1.0 : p->sigma_max; }
