/* Philox4x32-10 counter-based RNG (Salmon, Moraes, Dror, Shaw, SC'11 "Parallel random numbers:
 * as easy as 1, 2, 3", section 4). The key is the 64-bit seed, the counter a 64-bit block index,
 * so a stream is reproducible from (seed, counter) alone and the state checkpoints as two ints. */
#include "difflow/core.h"

#include <math.h>

#define PHILOX_M0 0xD2511F53u
#define PHILOX_M1 0xCD9E8D57u
#define PHILOX_W0 0x9E3779B9u
#define PHILOX_W1 0xBB67AE85u

static void philox_block(uint64_t seed, uint64_t ctr, uint32_t out[4])
{
    uint32_t c0 = (uint32_t)ctr, c1 = (uint32_t)(ctr >> 32), c2 = 0, c3 = 0;
    uint32_t k0 = (uint32_t)seed, k1 = (uint32_t)(seed >> 32);
    for (int r = 0; r < 10; r++) {
        uint64_t p0 = (uint64_t)PHILOX_M0 * c0, p1 = (uint64_t)PHILOX_M1 * c2;
        uint32_t hi0 = (uint32_t)(p0 >> 32), lo0 = (uint32_t)p0;
        uint32_t hi1 = (uint32_t)(p1 >> 32), lo1 = (uint32_t)p1;
        uint32_t n0 = hi1 ^ c1 ^ k0, n1 = lo1, n2 = hi0 ^ c3 ^ k1, n3 = lo0;
        c0 = n0; c1 = n1; c2 = n2; c3 = n3;
        k0 += PHILOX_W0; k1 += PHILOX_W1;
    }
    out[0] = c0; out[1] = c1; out[2] = c2; out[3] = c3;
}

void dfl_rng_init(dfl_rng *r, uint64_t seed)
{
    r->seed = seed;
    r->counter = 0;
    r->buf_pos = 4;
    r->has_spare = 0;
    r->spare = 0.f;
}

uint32_t dfl_rng_u32(dfl_rng *r)
{
    if (r->buf_pos >= 4) {
        philox_block(r->seed, r->counter++, r->buf);
        r->buf_pos = 0;
    }
    return r->buf[r->buf_pos++];
}

float dfl_rng_uniform(dfl_rng *r) { return (float)(dfl_rng_u32(r) >> 8) * (1.0f / 16777216.0f); }

double dfl_rng_uniform_d(dfl_rng *r)
{
    uint64_t a = dfl_rng_u32(r) >> 5, b = dfl_rng_u32(r) >> 6;
    return (double)(a * 67108864u + b) * (1.0 / 9007199254740992.0);
}

float dfl_rng_normal(dfl_rng *r)
{
    if (r->has_spare) {
        r->has_spare = 0;
        return r->spare;
    }
    /* Box-Muller on (0,1] x [0,1): u1 is never 0, so log(u1) is finite. */
    double u1 = 1.0 - dfl_rng_uniform_d(r), u2 = dfl_rng_uniform_d(r);
    double rad = sqrt(-2.0 * log(u1)), th = 6.283185307179586 * u2;
    r->spare = (float)(rad * sin(th));
    r->has_spare = 1;
    return (float)(rad * cos(th));
}

void dfl_rng_fill_normal(dfl_rng *r, float *x, size_t n)
{
    for (size_t i = 0; i < n; i++) x[i] = dfl_rng_normal(r);
}

void dfl_rng_fill_uniform(dfl_rng *r, float *x, size_t n)
{
    for (size_t i = 0; i < n; i++) x[i] = dfl_rng_uniform(r);
}

uint32_t dfl_rng_below(dfl_rng *r, uint32_t n)
{
    /* Lemire's multiply-shift with rejection: unbiased. */
    uint64_t m = (uint64_t)dfl_rng_u32(r) * n;
    uint32_t lo = (uint32_t)m;
    if (lo < n) {
        uint32_t thr = (uint32_t)(-n) % n;
        while (lo < thr) {
            m = (uint64_t)dfl_rng_u32(r) * n;
            lo = (uint32_t)m;
        }
    }
    return (uint32_t)(m >> 32);
}
