/* 2-D toy distributions for density models and samplers: the FFJORD generators
 * (Grathwohl et al., ICLR 2019, lib/toy_data.py) as specified in reference/flows.md 3.3, with
 * every angle drawn at random (not evenly spaced per call) so the data follow the continuous
 * density whose E[log p] is listed in reference/flows.md 3.4. All draws come from a dfl_rng.
 */
#include "difflow/data.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define TOY_PI 3.14159265358979323846

typedef void (*toy_fn)(dfl_rng *r, int n, float *out);

/* sklearn make_moons(noise=0.1) with random angles, then x*2 + (-1, -0.2). */
static void toy_moons(dfl_rng *r, int n, float *out)
{
    for (int i = 0; i < n; i++) {
        double th = TOY_PI * dfl_rng_uniform_d(r);
        int inner = (int)dfl_rng_below(r, 2);
        double x = inner ? 1.0 - cos(th) : cos(th);
        double y = inner ? 0.5 - sin(th) : sin(th);
        x += 0.1 * dfl_rng_normal(r);
        y += 0.1 * dfl_rng_normal(r);
        out[2 * i] = (float)(2.0 * x - 1.0);
        out[2 * i + 1] = (float)(2.0 * y - 0.2);
    }
}

/* Centre uniform from 8 directions times 4, point = (0.5 N(0, I) + c) / 1.414. */
static void toy_8gaussians(dfl_rng *r, int n, float *out)
{
    const double s = 1.0 / sqrt(2.0);
    const double cx[8] = {1, -1, 0, 0, s, s, -s, -s};
    const double cy[8] = {0, 0, 1, -1, s, -s, s, -s};
    for (int i = 0; i < n; i++) {
        int k = (int)dfl_rng_below(r, 8);
        double x = 0.5 * dfl_rng_normal(r) + 4.0 * cx[k];
        double y = 0.5 * dfl_rng_normal(r) + 4.0 * cy[k];
        out[2 * i] = (float)(x / 1.414);
        out[2 * i + 1] = (float)(y / 1.414);
    }
}

/* x1 ~ U(-2, 2); x2 = U(0, 1) - 2B + (floor(x1) mod 2); output 2 (x1, x2). */
static void toy_checkerboard(dfl_rng *r, int n, float *out)
{
    for (int i = 0; i < n; i++) {
        double x1 = 4.0 * dfl_rng_uniform_d(r) - 2.0;
        double u = dfl_rng_uniform_d(r);
        int b = (int)dfl_rng_below(r, 2);
        int m = (((int)floor(x1)) % 2 + 2) % 2; /* Python's non-negative modulo */
        double x2 = u - 2.0 * b + m;
        out[2 * i] = (float)(2.0 * x1);
        out[2 * i + 1] = (float)(2.0 * x2);
    }
}

static const struct {
    const char *name;
    toy_fn fn;
    double bound; /* E_p[log p], reference/flows.md 3.4 */
} TOYS[] = {
    {"moons", toy_moons, -2.3939},
    {"8gaussians", toy_8gaussians, -2.8319},
    {"checkerboard", toy_checkerboard, -3.4657359027997265}, /* -ln 32 */
};

static int toy_index(const char *name)
{
    if (!name) return -1;
    for (size_t i = 0; i < sizeof TOYS / sizeof TOYS[0]; i++)
        if (!strcmp(TOYS[i].name, name)) return (int)i;
    return -1;
}

int dfl_toy_known(const char *name) { return toy_index(name) >= 0; }

double dfl_toy_true_loglik_bound(const char *name)
{
    int k = toy_index(name);
    return k >= 0 ? TOYS[k].bound : NAN;
}

dfl_status dfl_toy_sample(const char *name, dfl_rng *r, int n, float *out)
{
    int k = toy_index(name);
    if (k < 0)
        return dfl_fail(DFL_ERR_ARG, "unknown toy dataset '%s' (known: moons, 8gaussians, "
                        "checkerboard)", name ? name : "(null)");
    if (n < 0 || !r || (n > 0 && !out))
        return dfl_fail(DFL_ERR_ARG, "toy '%s': bad arguments (n=%d)", name, n);
    TOYS[k].fn(r, n, out);
    return DFL_OK;
}

dfl_status dfl_toy_dataset(const char *name, uint64_t seed, int n, dfl_dataset *out)
{
    if (!out) return dfl_fail(DFL_ERR_ARG, "toy dataset: NULL output");
    memset(out, 0, sizeof *out);
    if (!dfl_toy_known(name))
        return dfl_fail(DFL_ERR_ARG, "unknown toy dataset '%s' (known: moons, 8gaussians, "
                        "checkerboard)", name ? name : "(null)");
    if (n < 1) return dfl_fail(DFL_ERR_ARG, "toy dataset '%s': n = %d, need >= 1", name, n);
    out->points = malloc((size_t)n * 2 * sizeof *out->points);
    if (!out->points)
        return dfl_fail(DFL_ERR_NOMEM, "toy dataset '%s': out of memory for %d points", name, n);
    dfl_rng r;
    dfl_rng_init(&r, seed);
    dfl_status st = dfl_toy_sample(name, &r, n, out->points);
    if (st != DFL_OK) {
        dfl_dataset_free(out);
        return st;
    }
    out->n = n;
    out->dim = 2;
    return DFL_OK;
}
