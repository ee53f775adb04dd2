/* Private helpers of src/tf: a branch-free exp the compiler can vectorise (libm's expf is not
 * vectorised without -ffast-math). */
#ifndef DFL_TF_MATH_H
#define DFL_TF_MATH_H

#include <math.h>
#include <stdint.h>
#include <string.h>

/* e^x for float x, 0 exactly for x < -87.33 (so e^-inf = 0: masked scores vanish), e^88 for
 * x > 88 (softmax arguments are <= 0, so this side is only a guard).
 * Method: x = k ln2 + f with k = nearest integer to x log2(e) and |f| <= ln2/2 (ln2 in two
 * parts so f is exact to ~1 ulp), e^f by Horner on its Taylor series to f^7/7! (remainder below
 * 2e-8 relative), times 2^k assembled in the exponent field. Max relative error ~1.2e-7. */
static inline float tf_exp(float x)
{
    float c = x < -87.33f ? -87.33f : x;
    c = c > 88.0f ? 88.0f : c;
    const float round_magic = 12582912.0f; /* 1.5 * 2^23: adding and subtracting rounds */
    float kf = (c * 1.44269504f + round_magic) - round_magic;
    float f = c - kf * 0.693145752f;     /* ln2 high part (few bits, exact product) */
    f = f - kf * 1.42860677e-6f;         /* ln2 low part */
    float e = 1.0f + f * (1.0f + f * (0.5f + f * (1.0f / 6.0f + f * (1.0f / 24.0f +
              f * (1.0f / 120.0f + f * (1.0f / 720.0f + f * (1.0f / 5040.0f)))))));
    int32_t bits = ((int32_t)kf + 127) << 23;
    float two_k;
    memcpy(&two_k, &bits, sizeof two_k);
    return x < -87.33f ? 0.0f : e * two_k;
}

#endif
