/* Vectorisable elementwise math shared by the kernels (private to src/core). */
#ifndef DFL_CORE_VMATH_H
#define DFL_CORE_VMATH_H

#include <math.h>
#include <stdint.h>
#include <string.h>

#if defined(__GNUC__)
#define DFL_ALWAYS_INLINE __attribute__((always_inline))
#else
#define DFL_ALWAYS_INLINE
#endif

/* exp(x) with x clamped to [-87, 87]: x = n ln2 + r, |r| <= ln2/2, e^r by its degree-7 Taylor
 * polynomial (truncation < 2e-8 relative), times 2^n built in the exponent bits; measured max
 * relative error 1.0e-7 over the range. Plain arithmetic only (n is rounded by adding and
 * subtracting 1.5*2^23 rather than floorf, which blocks vectorisation), so loops calling it
 * vectorise; libm's expf does not without -ffast-math. */
DFL_ALWAYS_INLINE static inline float exp_vec(float x)
{
    float a = fabsf(x); /* one symmetric clamp: two one-sided ones get jump-threaded into */
    a = a > 87.0f ? 87.0f : a; /* branches, which stops vectorisation */
    x = copysignf(a, x);
    const float shift = 12582912.0f; /* 1.5 * 2^23: (t + shift) - shift rounds t to an integer */
    float n = (x * 1.44269504088896341f + shift) - shift;
    float r = x - n * 0.693359375f;  /* ln2 split in a high part exact in float ... */
    r = r + n * 2.12194440e-4f;      /* ... and the low remainder */
    float p = 1.0f / 5040.0f;
    p = p * r + 1.0f / 720.0f;
    p = p * r + 1.0f / 120.0f;
    p = p * r + 1.0f / 24.0f;
    p = p * r + 1.0f / 6.0f;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    int32_t bits = ((int32_t)n + 127) << 23;
    float s;
    memcpy(&s, &bits, sizeof s);
    return p * s;
}

/* SiLU's logistic sigmoid s = 1 / (1 + e^-z) with exp_vec (the SiLU kernels' definition). */
DFL_ALWAYS_INLINE static inline float sigmoid_vec(float z) { return 1.0f / (1.0f + exp_vec(-z)); }

#endif
