/* Shared test helpers for gradient checks of tape ops: central finite differences of a scalar
 * projection of a double-precision reference, and a whole check driver (random inputs, forward
 * against the reference, backward with a random cotangent against the differences).
 * Include after dfl_test.h (cmocka). */
#ifndef DFL_FD_H
#define DFL_FD_H

#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>

#include "difflow/core.h"

/* num[j] = (L(x + h e_j) - L(x - h e_j)) / 2h for j < n, with L = sum_o r[o] y[o] and y (nout
 * doubles) recomputed by eval(u) from the current contents of x. x is restored afterwards. */
static inline void dfl_fd_vjp(double *x, size_t n, double h, void (*eval)(void *u), void *u,
                              const double *y, const float *r, size_t nout, double *num)
{
    for (size_t j = 0; j < n; j++) {
        double keep = x[j], side[2];
        for (int s = 0; s < 2; s++) {
            x[j] = s ? keep - h : keep + h;
            eval(u);
            double acc = 0.0;
            for (size_t o = 0; o < nout; o++) acc += r[o] * y[o];
            side[s] = acc;
        }
        x[j] = keep;
        num[j] = (side[0] - side[1]) / (2.0 * h);
    }
}

/* n floats drawn N(0, scale^2) from r, malloc'd (at least one float); the test frees them. */
static inline float *dfl_randn_buf(dfl_rng *r, size_t n, float scale)
{
    float *p = malloc((n ? n : 1) * sizeof(float));
    assert_non_null(p);
    for (size_t i = 0; i < n; i++) p[i] = scale * dfl_rng_normal(r);
    return p;
}

/* max|got - ref| <= tol (max|ref| + floor); prints the worst element and returns 0 otherwise
 * (a NaN in got always fails). */
static inline int dfl_close_rel(const char *what, const float *got, const double *ref, size_t n,
                                double tol, double floor)
{
    double maxref = 0.0, maxdiff = 0.0;
    size_t at = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)got[i] - ref[i]);
        if (!(d <= maxdiff)) { maxdiff = d; at = i; }
        if (fabs(ref[i]) > maxref) maxref = fabs(ref[i]);
    }
    if (!(maxdiff <= tol * (maxref + floor))) {
        fprintf(stderr, "  %s: max diff %.3g > %.3g x (max|ref| %.3g + %.3g); worst [%zu] got %.9g ref %.9g\n",
                what, maxdiff, tol, maxref, floor, at, n ? (double)got[at] : 0.0, n ? ref[at] : 0.0);
        return 0;
    }
    return 1;
}

/* One input of a gradient check. */
typedef struct {
    int ndim;
    int shape[4];
    int param;   /* 1: heap parameter (dfl_tensor_new, requires grad); 0: arena-wrapped data */
    float scale; /* values drawn N(0, scale^2); 0 means 1 */
} dfl_gc_in;

/* The op under test on the inputs, and its double-precision reference (same inputs as doubles,
 * writes every output); u is passed through. */
typedef dfl_tensor *(*dfl_gc_op)(dfl_ctx *ctx, dfl_tensor **in, const void *u);
typedef void (*dfl_gc_ref)(double *const *in, double *out, const void *u);

typedef struct {
    dfl_gc_ref ref;
    double **xd;
    double *yd;
    const void *u;
} dfl_gc_eval;

static inline void dfl_gc_eval_ref(void *p)
{
    dfl_gc_eval *e = p;
    e->ref(e->xd, e->yd, e->u);
}

/* Draws nin (<= 4) inputs from rng, runs op, checks the float forward against ref (tolerance
 * 2e-5 of max|ref| + 1e-2: float rounding scales with the terms, not the result), then the
 * backward of a random cotangent r (dfl_backward_vjp) against central differences (h = 1e-6) of
 * sum(r * ref) for every input (tolerance 1e-3 of max|numeric| + 1e-6). Fails the current cmocka
 * test with `name` and the input index on any mismatch. */
static inline void dfl_gradcheck(const char *name, int nin, const dfl_gc_in *ins, dfl_gc_op op,
                                 dfl_gc_ref ref, const void *u, dfl_rng *rng)
{
    dfl_ctx *ctx = dfl_ctx_new();
    assert_non_null(ctx);
    dfl_tensor *in[4] = {0};
    float *raw[4] = {0};
    double *xd[4] = {0};
    for (int i = 0; i < nin; i++) {
        size_t n = dfl_shape_numel(ins[i].ndim, ins[i].shape);
        float s = ins[i].scale > 0.0f ? ins[i].scale : 1.0f;
        if (ins[i].param) {
            in[i] = dfl_tensor_new(ins[i].ndim, ins[i].shape, 1);
            assert_non_null(in[i]);
            for (size_t j = 0; j < n; j++) in[i]->data[j] = s * dfl_rng_normal(rng);
        } else {
            raw[i] = dfl_randn_buf(rng, n, s);
            in[i] = dfl_tensor_wrap(ctx, raw[i], ins[i].ndim, ins[i].shape);
            assert_non_null(in[i]);
            in[i]->requires_grad = 1;
        }
        xd[i] = malloc((n ? n : 1) * sizeof(double));
        assert_non_null(xd[i]);
        for (size_t j = 0; j < n; j++) xd[i][j] = in[i]->data[j];
    }
    dfl_tensor *out = op(ctx, in, u);
    if (!out) fail_msg("%s: op returned NULL: %s", name, dfl_last_error());
    size_t nout = out->n;
    double *yd = malloc(nout * sizeof(double));
    float *r = malloc(nout * sizeof(float));
    assert_non_null(yd);
    assert_non_null(r);
    ref(xd, yd, u);
    if (!dfl_close_rel(name, out->data, yd, nout, 2e-5, 1e-2))
        fail_msg("%s: forward differs from the double reference", name);
    for (size_t o = 0; o < nout; o++) r[o] = dfl_rng_normal(rng);
    assert_int_equal(dfl_backward_vjp(ctx, out, r), DFL_OK);
    dfl_gc_eval ev = {ref, xd, yd, u};
    for (int i = 0; i < nin; i++) {
        size_t n = dfl_shape_numel(ins[i].ndim, ins[i].shape);
        assert_non_null(in[i]->grad);
        double *num = malloc((n ? n : 1) * sizeof(double));
        assert_non_null(num);
        dfl_fd_vjp(xd[i], n, 1e-6, dfl_gc_eval_ref, &ev, yd, r, nout, num);
        char what[256];
        snprintf(what, sizeof what, "%s: d/d input %d", name, i);
        if (!dfl_close_rel(what, in[i]->grad, num, n, 1e-3, 1e-6)) fail_msg("%s: gradient mismatch", what);
        free(num);
    }
    dfl_ctx_free(ctx);
    for (int i = 0; i < nin; i++) {
        if (ins[i].param) dfl_tensor_free(in[i]);
        free(raw[i]);
        free(xd[i]);
    }
    free(yd);
    free(r);
}

#endif
