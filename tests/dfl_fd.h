/* Shared test helper: central finite differences of a scalar projection of a double-precision
 * reference function, for gradient checks of tape ops (vector-Jacobian products). */
#ifndef DFL_FD_H
#define DFL_FD_H

#include <stddef.h>

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

#endif
