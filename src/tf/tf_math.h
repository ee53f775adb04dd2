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

/* x's sign bit clear (x >= +0): a, else b; chosen with integer masks, as a float compare would
 * not vectorise (see tf_exp). */
static inline float tf_pick_by_sign(float x, float a, float b)
{
    int32_t xb, ab, bb;
    memcpy(&xb, &x, sizeof xb);
    memcpy(&ab, &a, sizeof ab);
    memcpy(&bb, &b, sizeof bb);
    int32_t m = xb >> 31; /* all ones when the sign bit is set (arithmetic shift) */
    int32_t rb = (ab & ~m) | (bb & m);
    float r;
    memcpy(&r, &rb, sizeof r);
    return r;
}

/* Logistic sigmoid 1 / (1 + e^-a) from t = e^-|a| in (0, 1]: 1/(1+t) for a >= 0, t/(1+t) else
 * (no overflow for any a). */
static inline float tf_sigmoid(float a)
{
    float t = tf_exp(-fabsf(a));
    float r = 1.0f / (1.0f + t);
    return tf_pick_by_sign(a, r, t * r);
}

/* tanh(u) = sign(u) (1 - t) / (1 + t) with t = e^{-2|u|}; absolute error ~2e-7. */
static inline float tf_tanh(float u)
{
    float t = tf_exp(-2.0f * fabsf(u));
    return copysignf((1.0f - t) / (1.0f + t), u);
}

/* Complementary error function erfc(x) = 1 - erf(x): Chebyshev-fitted form of Press et al.,
 * "Numerical Recipes" (2nd ed., Sec. 6.2, erfcc): with z = |x| and t = 1 / (1 + z/2),
 * erfc(z) = t exp(-z^2 - 1.26551223 + t (1.00002368 + ... + t 0.17087277)), fractional error
 * below 1.2e-7 for every z; erfc(-z) = 2 - erfc(z). In float: relative error up to ~1e-6 for
 * x < 3, absolute below 1e-10 beyond. */
static inline float tf_erfc(float x)
{
    float z = fabsf(x);
    float t = 1.0f / (1.0f + 0.5f * z);
    float p = -0.82215223f + t * 0.17087277f;
    p = 1.48851587f + t * p;
    p = -1.13520398f + t * p;
    p = 0.27886807f + t * p;
    p = -0.18628806f + t * p;
    p = 0.09678418f + t * p;
    p = 0.37409196f + t * p;
    p = 1.00002368f + t * p;
    p = -1.26551223f + t * p;
    float r = t * tf_exp(p - z * z);
    return tf_pick_by_sign(x, r, 2.0f - r);
}

#endif
