/* Private helpers of src/tf: exp, sigmoid and tanh that the compiler can vectorise (libm's expf
 * is not vectorised without -ffast-math). */
#ifndef DFL_TF_MATH_H
#define DFL_TF_MATH_H

#include <math.h>
#include <stdint.h>
#include <string.h>

/* e^x for float x: relative error below ~2e-7 on [-87.3, 88]; 0 exactly for x below about
 * -87.7 (results under FLT_MIN flush to zero, and e^-inf = 0, so masked scores vanish); x above
 * 88 is taken as 88. NaN does NOT propagate (it gives 0 or e^88, by its sign bit): callers
 * check for NaN themselves (tf_is_nan).
 * Method: x = k ln2 + f with k the nearest integer to x log2(e) and |f| <= ln2/2 (ln2 in a
 * 16-bit high part, exact in the product, plus a low part), e^f by Horner on its Taylor series up
 * to f^7/7! (remainder < 2e-8 relative), times 2^k built in the exponent field, the field
 * floored at 0 (giving 0.0). The argument is clamped to [-100, 88] on its bit pattern with
 * integer min operations, and there is no NaN select: GCC jump-threads float compares (and any
 * select whose one side is constant-foldable) into branches that stop vectorisation. */
static inline float tf_exp(float x)
{
    int32_t s;
    memcpy(&s, &x, sizeof s);
    s = s < 0x42B00000 ? s : 0x42B00000; /* positive floats above 88.0f (and +inf, +NaN) */
    uint32_t u = (uint32_t)s;
    u = u < 0xC2C80000u ? u : 0xC2C80000u; /* negative floats below -100.0f (and -inf) */
    float c;
    memcpy(&c, &u, sizeof c);
    const float round_magic = 12582912.0f; /* 1.5 * 2^23: adding and subtracting rounds */
    float kf = (c * 1.44269504f + round_magic) - round_magic;
    float f = c - kf * 0.693145752f; /* ln2 high part */
    f = f - kf * 1.42860677e-6f;     /* ln2 low part */
    float e = 1.0f + f * (1.0f + f * (0.5f + f * (1.0f / 6.0f + f * (1.0f / 24.0f +
              f * (1.0f / 120.0f + f * (1.0f / 720.0f + f * (1.0f / 5040.0f)))))));
    int32_t ki = (int32_t)kf + 127;
    ki = ki > 0 ? ki : 0;
    int32_t bits = ki << 23;
    float two_k;
    memcpy(&two_k, &bits, sizeof two_k);
    return e * two_k;
}

/* 1 if v is NaN, else 0, from its bits (vectorises inside an omp simd | reduction). */
static inline int tf_is_nan(float v)
{
    uint32_t b;
    memcpy(&b, &v, sizeof b);
    return (b & 0x7FFFFFFFu) > 0x7F800000u;
}

/* Logistic sigmoid 1 / (1 + e^-a) from t = e^-|a| in (0, 1]: 1/(1+t) for a >= 0, t/(1+t) else
 * (no overflow for any a). */
static inline float tf_sigmoid(float a)
{
    float t = tf_exp(-fabsf(a));
    float r = 1.0f / (1.0f + t);
    return a >= 0.0f ? r : t * r;
}

/* tanh(u) = sign(u) (1 - t) / (1 + t) with t = e^{-2|u|}; absolute error ~2e-7. */
static inline float tf_tanh(float u)
{
    float t = tf_exp(-2.0f * fabsf(u));
    return copysignf((1.0f - t) / (1.0f + t), u);
}

#endif
