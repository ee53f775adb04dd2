/* Shared test helpers: cmocka (1.1.5 has no float assertions) plus a closeness check that prints
 * both values on failure. */
#ifndef DFL_TEST_H
#define DFL_TEST_H

#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

/* |a - b| <= tol, else print both and fail. */
#define CHECK_CLOSE(a, b, tol)                                                                        \
    do {                                                                                              \
        double a_ = (a), b_ = (b);                                                                    \
        if (!(fabs(a_ - b_) <= (tol))) {                                                              \
            print_error("%s:%d: %s = %.9g, expected %.9g (tol %g)\n", __FILE__, __LINE__, #a, a_, b_, \
                        (double)(tol));                                                               \
            fail();                                                                                   \
        }                                                                                             \
    } while (0)

/* Relative closeness: |a - b| <= rel |b|. */
#define CHECK_REL(a, b, rel) CHECK_CLOSE(a, b, (rel) * fabs((double)(b)))

#endif
