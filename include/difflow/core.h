/* difflow core: status codes, tensors, the step arena, the autograd tape, the RNG.
 *
 * Conventions used throughout the library
 *   - Tensors are float32, contiguous, row-major, at most 4 dims, PyTorch order:
 *     images (N,C,H,W), sequences (B,T,D), Linear weight [out,in], Conv2d weight [out,in,kh,kw].
 *   - Every library function that can fail returns a dfl_status (or NULL for constructors) and
 *     sets a message readable with dfl_last_error(). The library never exits the process.
 *   - Ops take a dfl_ctx. An op given a NULL input returns NULL at once, so a chain of ops
 *     can be checked once at its end (the first failing op set the message).
 */
#ifndef DIFFLOW_CORE_H
#define DIFFLOW_CORE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---------------------------------------------------------------- status */

typedef enum {
    DFL_OK = 0,
    DFL_ERR_IO,      /* a file could not be opened, read or written */
    DFL_ERR_FORMAT,  /* a file's content is malformed or truncated */
    DFL_ERR_SHAPE,   /* tensor shapes do not agree */
    DFL_ERR_ARG,     /* an argument is out of range or unknown */
    DFL_ERR_NOMEM,   /* an allocation failed */
    DFL_ERR_NUMERIC, /* NaN or Inf where a finite value is required */
    DFL_ERR_MISMATCH /* a checkpoint belongs to another model */
} dfl_status;

/* Message of the most recent failure in this thread ("" if none). */
const char *dfl_last_error(void);
/* Sets the message (printf format) and returns `st`, so callers can `return dfl_fail(...)`. */
dfl_status dfl_fail(dfl_status st, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;
const char *dfl_status_name(dfl_status st);

/* ---------------------------------------------------------------- tensor */

#define DFL_MAX_DIMS 4

typedef struct dfl_tensor {
    float *data;       /* n floats, contiguous row-major */
    float *grad;       /* NULL until a gradient is accumulated (arena) or allocated (params) */
    int ndim;
    int shape[DFL_MAX_DIMS];
    size_t n;          /* number of elements */
    int requires_grad; /* parameters, and any tensor computed from one while recording */
    int owned;         /* 1: data malloc'd by dfl_tensor_new, freed by dfl_tensor_free */
    int grad_owned;    /* 1: grad malloc'd by dfl_tensor_new (else arena or NULL) */
} dfl_tensor;

/* Heap tensor (parameters, persistent buffers), zero-filled; grad allocated when requires_grad.
 * Returns NULL with DFL_ERR_NOMEM/DFL_ERR_ARG. */
dfl_tensor *dfl_tensor_new(int ndim, const int *shape, int requires_grad);
void dfl_tensor_free(dfl_tensor *t);
/* Number of elements of a shape; 0 for a bad shape. */
size_t dfl_shape_numel(int ndim, const int *shape);
/* "[64, 1, 28, 28]" into buf; returns buf. */
const char *dfl_shape_str(const dfl_tensor *t, char *buf, size_t cap);
int dfl_same_shape(const dfl_tensor *a, const dfl_tensor *b);

/* ---------------------------------------------------------------- context: arena + tape */

typedef struct dfl_ctx dfl_ctx;
typedef struct dfl_node dfl_node;

/* Backward of one recorded op: reads node->out->grad, accumulates into the inputs' grads
 * (use dfl_grad_of to get a zeroed gradient buffer for an input that requires grad). */
typedef void (*dfl_backward_fn)(dfl_ctx *ctx, dfl_node *node);

#define DFL_NODE_MAX_IN 4
struct dfl_node {
    dfl_backward_fn backward;
    const char *op;                    /* op name, for diagnostics */
    dfl_tensor *out;
    dfl_tensor *in[DFL_NODE_MAX_IN];
    int nin;
    float *saved[4];                   /* arena buffers the backward needs (stats, masks, ...) */
    int iarg[8];
    float farg[4];
};

dfl_ctx *dfl_ctx_new(void);
void dfl_ctx_free(dfl_ctx *ctx);
/* Forget the tape and recycle the arena (keeps its memory: no malloc in later steps). */
void dfl_ctx_reset(dfl_ctx *ctx);
/* 1: ops record onto the tape (when an input requires grad); 0: no-grad mode. Returns old value. */
int dfl_ctx_set_grad(dfl_ctx *ctx, int enabled);
int dfl_ctx_grad_enabled(const dfl_ctx *ctx);
/* Bytes the arena holds (high-water mark across resets). */
size_t dfl_ctx_arena_bytes(const dfl_ctx *ctx);

/* Uninitialised arena memory, 64-byte aligned; NULL (DFL_ERR_NOMEM) on failure. Valid until reset
 * (or until released with dfl_arena_release). */
void *dfl_arena_alloc(dfl_ctx *ctx, size_t bytes);
/* Early release: `ptr` (from dfl_arena_alloc on this ctx, with the same `bytes`) will not be read
 * or written again before the next reset, so later allocations may reuse it. Used for scratch
 * buffers (in any mode) and, through dfl_tensor_release, for no-grad intermediates; this bounds
 * the arena by the live data instead of everything a pass produced. Memory that is not this
 * arena's, a second release and a NULL ptr are ignored; so is everything after
 * dfl_ctx_set_reuse(ctx, 0). Never changes a result, only where later buffers live. */
void dfl_arena_release(dfl_ctx *ctx, void *ptr, size_t bytes);
/* No-grad mode only (a no-op while recording, since the tape may need t): releases the data of
 * arena tensor t (dfl_arena_release) and sets t->data to NULL. The caller guarantees that nothing
 * reads t afterwards. Heap (owned) and wrapped tensors are left alone. */
void dfl_tensor_release(dfl_ctx *ctx, dfl_tensor *t);
/* 1 (default): dfl_arena_release recycles memory; 0: it does nothing (every buffer lives until
 * reset, as before early release existed; for tests comparing the two). Returns the old value. */
int dfl_ctx_set_reuse(dfl_ctx *ctx, int on);
/* Largest number of arena bytes handed out and not yet released at one time, since dfl_ctx_new
 * (the arena's real need; dfl_ctx_arena_bytes is what it holds, in 64 MiB blocks). */
size_t dfl_ctx_arena_peak(const dfl_ctx *ctx);
/* Arena tensor (uninitialised data, no grad). */
dfl_tensor *dfl_tensor_tmp(dfl_ctx *ctx, int ndim, const int *shape);
/* Arena tensor filled with zeros. */
dfl_tensor *dfl_tensor_zeros(dfl_ctx *ctx, int ndim, const int *shape);
/* Arena tensor wrapping caller-owned data (no copy). Useful for inputs. */
dfl_tensor *dfl_tensor_wrap(dfl_ctx *ctx, float *data, int ndim, const int *shape);

/* Output tensor for an op with inputs in[0..nin): requires_grad set when recording and any
 * input requires grad. Returns NULL on allocation failure. */
dfl_tensor *dfl_op_output(dfl_ctx *ctx, int ndim, const int *shape, dfl_tensor **in, int nin);
/* Append a node for `out` if out->requires_grad; returns the node (or NULL if nothing recorded). */
dfl_node *dfl_tape_push(dfl_ctx *ctx, dfl_backward_fn bw, const char *op, dfl_tensor *out,
                        dfl_tensor **in, int nin);
/* The gradient buffer of t, allocated zeroed in the arena on first use; NULL if !t->requires_grad. */
float *dfl_grad_of(dfl_ctx *ctx, dfl_tensor *t);

/* Reverse-mode sweep: seeds d loss = 1 (loss must have 1 element) and runs every recorded
 * backward in reverse order. Gradients accumulate into ->grad (parameters keep theirs until
 * the optimizer zeroes them). Returns DFL_ERR_ARG if loss is not a scalar. */
dfl_status dfl_backward(dfl_ctx *ctx, dfl_tensor *loss);
/* Same, with a caller-given output cotangent of out->n floats (vector-Jacobian product). */
dfl_status dfl_backward_vjp(dfl_ctx *ctx, dfl_tensor *out, const float *cotangent);

/* ---------------------------------------------------------------- RNG */

/* Philox4x32-10 counter-based generator (Salmon et al. 2011, "Parallel random numbers: as easy
 * as 1, 2, 3"). State = (key from the seed, 64-bit counter); reproducible from the seed. */
typedef struct {
    uint64_t seed;
    uint64_t counter;   /* number of 128-bit blocks consumed */
    uint32_t buf[4];
    int buf_pos;        /* 4 = empty */
    int has_spare;      /* Box-Muller keeps its second normal */
    float spare;
} dfl_rng;

void dfl_rng_init(dfl_rng *r, uint64_t seed);
uint32_t dfl_rng_u32(dfl_rng *r);
/* Uniform in [0, 1) with 24 random bits. */
float dfl_rng_uniform(dfl_rng *r);
/* Uniform in [0, 1) as double, 53 bits. */
double dfl_rng_uniform_d(dfl_rng *r);
/* Standard normal N(0,1) (Box-Muller). */
float dfl_rng_normal(dfl_rng *r);
void dfl_rng_fill_normal(dfl_rng *r, float *x, size_t n);
void dfl_rng_fill_uniform(dfl_rng *r, float *x, size_t n);
/* Integer uniform in [0, n) (n > 0), unbiased. */
uint32_t dfl_rng_below(dfl_rng *r, uint32_t n);

/* ---------------------------------------------------------------- threads */

/* Threads used by our own loops (OpenMP) and BLAS; 0 = all cores. */
void dfl_set_threads(int n);
int dfl_get_threads(void);

#ifdef __cplusplus
}
#endif
#endif
