/* Tensors, the step arena and the autograd tape (DESIGN section 3, "Tensor" and "Autograd").
 *
 * The arena is a list of large blocks; allocation bumps a pointer, dfl_ctx_reset rewinds every
 * block without freeing it, so a training loop allocates only during its first step. The tape
 * is an array of nodes appended by ops in execution order; dfl_backward walks it in reverse.
 *
 * Early release (dfl_arena_release, dfl_tensor_release): a released range either lowers its
 * block's bump pointer (when it is the block's top, together with any free ranges then on top)
 * or joins a free list of (block, offset, size) ranges kept sorted and coalesced. Allocations of
 * at least RELEASE_MIN bytes take the best-fitting free range first (smaller ones always bump, so
 * tensor headers never split a large free range). dfl_ctx_reset empties the list. */
#include "difflow/core.h"

#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ARENA_ALIGN 64
#define ARENA_MIN_BLOCK ((size_t)64 << 20)
#define RELEASE_MIN ((size_t)4096)

typedef struct arena_block {
    struct arena_block *next;
    size_t cap, used;
    unsigned char *mem;
} arena_block;

typedef struct {
    arena_block *b;
    size_t off, bytes;
} free_range;

struct dfl_ctx {
    arena_block *head;  /* first block */
    arena_block *cur;   /* block being filled */
    size_t high_water;
    dfl_node *tape;
    size_t tape_len, tape_cap;
    int grad_enabled;
    int no_reuse;       /* 1: dfl_arena_release does nothing (dfl_ctx_set_reuse) */
    free_range *fr;     /* released ranges, sorted by (block, offset), coalesced */
    int nfr, fr_cap;
    size_t live, peak;  /* bytes handed out and not released; its maximum since dfl_ctx_new */
};

/* ------------------------------------------------------------ tensors */

size_t dfl_shape_numel(int ndim, const int *shape)
{
    if (ndim < 1 || ndim > DFL_MAX_DIMS) return 0;
    size_t n = 1;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] <= 0) return 0;
        n *= (size_t)shape[i];
    }
    return n;
}

static void set_shape(dfl_tensor *t, int ndim, const int *shape)
{
    t->ndim = ndim;
    for (int i = 0; i < DFL_MAX_DIMS; i++) t->shape[i] = i < ndim ? shape[i] : 1;
    t->n = dfl_shape_numel(ndim, shape);
}

dfl_tensor *dfl_tensor_new(int ndim, const int *shape, int requires_grad)
{
    size_t n = dfl_shape_numel(ndim, shape);
    if (n == 0) {
        dfl_fail(DFL_ERR_ARG, "tensor: invalid shape (ndim %d)", ndim);
        return NULL;
    }
    dfl_tensor *t = calloc(1, sizeof *t);
    if (!t) goto nomem;
    set_shape(t, ndim, shape);
    t->owned = 1;
    t->requires_grad = requires_grad;
    t->data = aligned_alloc(ARENA_ALIGN, (n * sizeof(float) + ARENA_ALIGN - 1) / ARENA_ALIGN * ARENA_ALIGN);
    if (!t->data) goto nomem;
    memset(t->data, 0, n * sizeof(float));
    if (requires_grad) {
        t->grad = aligned_alloc(ARENA_ALIGN, (n * sizeof(float) + ARENA_ALIGN - 1) / ARENA_ALIGN * ARENA_ALIGN);
        if (!t->grad) goto nomem;
        t->grad_owned = 1;
        memset(t->grad, 0, n * sizeof(float));
    }
    return t;
nomem:
    dfl_tensor_free(t);
    dfl_fail(DFL_ERR_NOMEM, "tensor: out of memory allocating %zu floats", n);
    return NULL;
}

void dfl_tensor_free(dfl_tensor *t)
{
    if (!t) return;
    if (t->owned) free(t->data);
    if (t->grad_owned) free(t->grad);
    free(t);
}

const char *dfl_shape_str(const dfl_tensor *t, char *buf, size_t cap)
{
    size_t k = 0;
    k += (size_t)snprintf(buf + k, cap - k, "[");
    for (int i = 0; i < t->ndim && k < cap; i++)
        k += (size_t)snprintf(buf + k, cap - k, i ? ", %d" : "%d", t->shape[i]);
    if (k < cap) snprintf(buf + k, cap - k, "]");
    return buf;
}

int dfl_same_shape(const dfl_tensor *a, const dfl_tensor *b)
{
    if (a->ndim != b->ndim) return 0;
    for (int i = 0; i < a->ndim; i++)
        if (a->shape[i] != b->shape[i]) return 0;
    return 1;
}

/* ------------------------------------------------------------ context and arena */

dfl_ctx *dfl_ctx_new(void)
{
    dfl_ctx *c = calloc(1, sizeof *c);
    if (!c) {
        dfl_fail(DFL_ERR_NOMEM, "ctx: out of memory");
        return NULL;
    }
    c->grad_enabled = 1;
    return c;
}

void dfl_ctx_free(dfl_ctx *ctx)
{
    if (!ctx) return;
    arena_block *b = ctx->head;
    while (b) {
        arena_block *nx = b->next;
        free(b->mem);
        free(b);
        b = nx;
    }
    free(ctx->tape);
    free(ctx->fr);
    free(ctx);
}

void dfl_ctx_reset(dfl_ctx *ctx)
{
    size_t used = 0;
    for (arena_block *b = ctx->head; b; b = b->next) {
        used += b->used;
        b->used = 0;
    }
    if (used > ctx->high_water) ctx->high_water = used;
    ctx->cur = ctx->head;
    ctx->tape_len = 0;
    ctx->nfr = 0;
    ctx->live = 0;
}

size_t dfl_ctx_arena_peak(const dfl_ctx *ctx) { return ctx->peak; }

static void *count_live(dfl_ctx *ctx, void *p, size_t bytes)
{
    ctx->live += bytes;
    if (ctx->live > ctx->peak) ctx->peak = ctx->live;
    return p;
}

int dfl_ctx_set_grad(dfl_ctx *ctx, int enabled)
{
    int old = ctx->grad_enabled;
    ctx->grad_enabled = enabled;
    return old;
}

int dfl_ctx_grad_enabled(const dfl_ctx *ctx) { return ctx->grad_enabled; }

size_t dfl_ctx_arena_bytes(const dfl_ctx *ctx)
{
    size_t cap = 0;
    for (arena_block *b = ctx->head; b; b = b->next) cap += b->cap;
    return cap;
}

int dfl_ctx_set_reuse(dfl_ctx *ctx, int on)
{
    int old = !ctx->no_reuse;
    ctx->no_reuse = !on;
    return old;
}

static size_t arena_round(size_t bytes)
{
    bytes = (bytes + ARENA_ALIGN - 1) / ARENA_ALIGN * ARENA_ALIGN;
    return bytes ? bytes : ARENA_ALIGN;
}

/* Best-fitting free range of at least `bytes` (>= RELEASE_MIN); NULL if none. */
static void *take_free(dfl_ctx *ctx, size_t bytes)
{
    int best = -1;
    for (int i = 0; i < ctx->nfr; i++)
        if (ctx->fr[i].bytes >= bytes && (best < 0 || ctx->fr[i].bytes < ctx->fr[best].bytes)) best = i;
    if (best < 0) return NULL;
    free_range *r = &ctx->fr[best];
    void *p = r->b->mem + r->off;
    r->off += bytes;
    r->bytes -= bytes;
    if (r->bytes == 0) {
        memmove(r, r + 1, (size_t)(ctx->nfr - best - 1) * sizeof *r);
        ctx->nfr--;
    }
    return p;
}

void dfl_arena_release(dfl_ctx *ctx, void *ptr, size_t bytes)
{
    if (!ctx || !ptr || ctx->no_reuse) return;
    bytes = arena_round(bytes);
    unsigned char *p = ptr;
    arena_block *b = ctx->head;
    while (b && !(p >= b->mem && p + bytes <= b->mem + b->used)) b = b->next;
    if (!b) return; /* not arena memory (wrapped or heap data), or already rewound */
    size_t off = (size_t)(p - b->mem);
    /* Insertion point in (block order, offset) order; blocks are compared by list position. */
    int i = 0;
    for (arena_block *q = ctx->head; q != b; q = q->next)
        while (i < ctx->nfr && ctx->fr[i].b == q) i++;
    while (i < ctx->nfr && ctx->fr[i].b == b && ctx->fr[i].off < off) i++;
    if (i < ctx->nfr && ctx->fr[i].b == b && ctx->fr[i].off < off + bytes) return; /* overlaps: double release */
    if (i > 0 && ctx->fr[i - 1].b == b && ctx->fr[i - 1].off + ctx->fr[i - 1].bytes > off) return;
    if (ctx->nfr == ctx->fr_cap) {
        int cap = ctx->fr_cap ? 2 * ctx->fr_cap : 64;
        free_range *nf = realloc(ctx->fr, (size_t)cap * sizeof *nf);
        if (!nf) return; /* keeping the memory is always correct */
        ctx->fr = nf;
        ctx->fr_cap = cap;
    }
    memmove(&ctx->fr[i + 1], &ctx->fr[i], (size_t)(ctx->nfr - i) * sizeof *ctx->fr);
    ctx->fr[i] = (free_range){b, off, bytes};
    ctx->nfr++;
    ctx->live -= bytes;
    /* Coalesce with the next and the previous range of the same block. */
    if (i + 1 < ctx->nfr && ctx->fr[i + 1].b == b && ctx->fr[i].off + ctx->fr[i].bytes == ctx->fr[i + 1].off) {
        ctx->fr[i].bytes += ctx->fr[i + 1].bytes;
        memmove(&ctx->fr[i + 1], &ctx->fr[i + 2], (size_t)(ctx->nfr - i - 2) * sizeof *ctx->fr);
        ctx->nfr--;
    }
    if (i > 0 && ctx->fr[i - 1].b == b && ctx->fr[i - 1].off + ctx->fr[i - 1].bytes == ctx->fr[i].off) {
        ctx->fr[i - 1].bytes += ctx->fr[i].bytes;
        memmove(&ctx->fr[i], &ctx->fr[i + 1], (size_t)(ctx->nfr - i - 1) * sizeof *ctx->fr);
        ctx->nfr--;
        i--;
    }
    /* A range at the block's top lowers the bump pointer instead. */
    if (ctx->fr[i].off + ctx->fr[i].bytes == b->used) {
        b->used = ctx->fr[i].off;
        memmove(&ctx->fr[i], &ctx->fr[i + 1], (size_t)(ctx->nfr - i - 1) * sizeof *ctx->fr);
        ctx->nfr--;
    }
}

void dfl_tensor_release(dfl_ctx *ctx, dfl_tensor *t)
{
    if (!ctx || !t || ctx->grad_enabled || t->owned || !t->data) return;
    dfl_arena_release(ctx, t->data, t->n * sizeof(float));
    t->data = NULL;
}

void *dfl_arena_alloc(dfl_ctx *ctx, size_t bytes)
{
    bytes = arena_round(bytes);
    if (ctx->nfr && bytes >= RELEASE_MIN) {
        void *p = take_free(ctx, bytes);
        if (p) return count_live(ctx, p, bytes);
    }
    /* Try the current block, then the following (already allocated) ones; with released ranges
     * about, every block (an earlier one's top may have come down). */
    for (arena_block *b = ctx->nfr || ctx->peak > ctx->live ? ctx->head : ctx->cur; b; b = b->next) {
        if (b->cap - b->used >= bytes) {
            void *p = b->mem + b->used;
            b->used += bytes;
            ctx->cur = b;
            return count_live(ctx, p, bytes);
        }
    }
    size_t cap = bytes > ARENA_MIN_BLOCK ? bytes : ARENA_MIN_BLOCK;
    arena_block *nb = calloc(1, sizeof *nb);
    if (nb) nb->mem = aligned_alloc(ARENA_ALIGN, cap);
    if (!nb || !nb->mem) {
        free(nb);
        dfl_fail(DFL_ERR_NOMEM, "arena: out of memory allocating %zu bytes", bytes);
        return NULL;
    }
    nb->cap = cap;
    nb->used = bytes;
    /* Append at the end of the list so block order is stable across resets. */
    if (!ctx->head) {
        ctx->head = nb;
    } else {
        arena_block *last = ctx->head;
        while (last->next) last = last->next;
        last->next = nb;
    }
    ctx->cur = nb;
    return count_live(ctx, nb->mem, bytes);
}

/* memset to 0, by all threads for large buffers (activation gradients: a serial memset of them
 * was a few percent of a 2-thread U-Net step). */
static void zero_floats(float *p, size_t n)
{
    const long chunk = 1L << 16;
    long nc = (long)((n + (size_t)chunk - 1) / (size_t)chunk);
    if (nc < 16 || omp_in_parallel()) { /* under 4 MiB: a fork costs more than it saves */
        memset(p, 0, n * sizeof(float));
        return;
    }
#pragma omp parallel for schedule(static)
    for (long c = 0; c < nc; c++) {
        size_t o = (size_t)c * (size_t)chunk, len = n - o < (size_t)chunk ? n - o : (size_t)chunk;
        memset(p + o, 0, len * sizeof(float));
    }
}

dfl_tensor *dfl_tensor_tmp(dfl_ctx *ctx, int ndim, const int *shape)
{
    size_t n = dfl_shape_numel(ndim, shape);
    if (n == 0) {
        dfl_fail(DFL_ERR_SHAPE, "tensor: invalid shape (ndim %d)", ndim);
        return NULL;
    }
    dfl_tensor *t = dfl_arena_alloc(ctx, sizeof *t);
    float *d = dfl_arena_alloc(ctx, n * sizeof(float));
    if (!t || !d) return NULL;
    memset(t, 0, sizeof *t);
    set_shape(t, ndim, shape);
    t->data = d;
    return t;
}

dfl_tensor *dfl_tensor_zeros(dfl_ctx *ctx, int ndim, const int *shape)
{
    dfl_tensor *t = dfl_tensor_tmp(ctx, ndim, shape);
    if (t) zero_floats(t->data, t->n);
    return t;
}

dfl_tensor *dfl_tensor_wrap(dfl_ctx *ctx, float *data, int ndim, const int *shape)
{
    size_t n = dfl_shape_numel(ndim, shape);
    if (n == 0 || !data) {
        dfl_fail(DFL_ERR_SHAPE, "tensor: invalid shape or data for wrap");
        return NULL;
    }
    dfl_tensor *t = dfl_arena_alloc(ctx, sizeof *t);
    if (!t) return NULL;
    memset(t, 0, sizeof *t);
    set_shape(t, ndim, shape);
    t->data = data;
    return t;
}

/* ------------------------------------------------------------ tape */

dfl_tensor *dfl_op_output(dfl_ctx *ctx, int ndim, const int *shape, dfl_tensor **in, int nin)
{
    dfl_tensor *t = dfl_tensor_tmp(ctx, ndim, shape);
    if (!t) return NULL;
    if (ctx->grad_enabled)
        for (int i = 0; i < nin; i++)
            if (in[i] && in[i]->requires_grad) t->requires_grad = 1;
    return t;
}

dfl_node *dfl_tape_push(dfl_ctx *ctx, dfl_backward_fn bw, const char *op, dfl_tensor *out,
                        dfl_tensor **in, int nin)
{
    if (!ctx->grad_enabled || !out->requires_grad) return NULL;
    if (ctx->tape_len == ctx->tape_cap) {
        size_t cap = ctx->tape_cap ? ctx->tape_cap * 2 : 256;
        dfl_node *nt = realloc(ctx->tape, cap * sizeof *nt);
        if (!nt) {
            dfl_fail(DFL_ERR_NOMEM, "tape: out of memory");
            return NULL;
        }
        ctx->tape = nt;
        ctx->tape_cap = cap;
    }
    dfl_node *nd = &ctx->tape[ctx->tape_len++];
    memset(nd, 0, sizeof *nd);
    nd->backward = bw;
    nd->op = op;
    nd->out = out;
    nd->nin = nin;
    for (int i = 0; i < nin && i < DFL_NODE_MAX_IN; i++) nd->in[i] = in[i];
    return nd;
}

float *dfl_grad_of(dfl_ctx *ctx, dfl_tensor *t)
{
    if (!t || !t->requires_grad) return NULL;
    if (!t->grad) {
        t->grad = dfl_arena_alloc(ctx, t->n * sizeof(float));
        if (t->grad) zero_floats(t->grad, t->n);
    }
    return t->grad;
}

static dfl_status run_backward(dfl_ctx *ctx)
{
    int old = ctx->grad_enabled;
    ctx->grad_enabled = 0; /* backward kernels never record */
    for (size_t i = ctx->tape_len; i-- > 0;) {
        dfl_node *nd = &ctx->tape[i];
        if (!nd->out->grad) continue; /* no path from the loss through this node */
        nd->backward(ctx, nd);
    }
    ctx->grad_enabled = old;
    return DFL_OK;
}

dfl_status dfl_backward(dfl_ctx *ctx, dfl_tensor *loss)
{
    if (!loss) return dfl_fail(DFL_ERR_ARG, "backward: loss is NULL");
    if (loss->n != 1) return dfl_fail(DFL_ERR_ARG, "backward: loss must be a scalar (has %zu elements)", loss->n);
    if (!loss->requires_grad) return dfl_fail(DFL_ERR_ARG, "backward: loss does not depend on any parameter");
    float *g = dfl_grad_of(ctx, loss);
    if (!g) return DFL_ERR_NOMEM;
    g[0] += 1.0f;
    return run_backward(ctx);
}

dfl_status dfl_backward_vjp(dfl_ctx *ctx, dfl_tensor *out, const float *cot)
{
    if (!out || !cot) return dfl_fail(DFL_ERR_ARG, "backward_vjp: NULL argument");
    if (!out->requires_grad) return dfl_fail(DFL_ERR_ARG, "backward_vjp: output does not depend on any input that requires grad");
    float *g = dfl_grad_of(ctx, out);
    if (!g) return DFL_ERR_NOMEM;
    for (size_t i = 0; i < out->n; i++) g[i] += cot[i];
    return run_backward(ctx);
}

/* ------------------------------------------------------------ threads */

void dfl_set_threads(int n)
{
    if (n <= 0) n = omp_get_num_procs();
    omp_set_num_threads(n);
}

int dfl_get_threads(void) { return omp_get_max_threads(); }
