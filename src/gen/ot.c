/* Exact minibatch optimal transport as a linear assignment problem (documented in gen.h).
 *
 * Hungarian method in its shortest-augmenting-path form with row/column potentials u, v
 * (Kuhn 1955; Jonker and Volgenant 1987): rows are added one at a time; for each new row a
 * Dijkstra-like search over columns with reduced costs C[i][j] - u[i] - v[j] >= 0 finds the
 * cheapest augmenting path, the potentials are updated by the path length so reduced costs stay
 * non-negative, and the matching is flipped along the path. Each row costs O(n^2), O(n^3) total. */
#include "difflow/gen.h"

#include <math.h>
#include <stdlib.h>

dfl_status dfl_ot_assign(const double *C, int n, int *perm, double *cost)
{
    if (n < 1 || n > 4096) return dfl_fail(DFL_ERR_ARG, "ot: size must be in 1..4096 (got %d)", n);
    for (size_t i = 0; i < (size_t)n * n; i++)
        if (!isfinite(C[i])) return dfl_fail(DFL_ERR_ARG, "ot: cost matrix has a non-finite entry");
    /* 1-based rows and columns; column 0 is a virtual column holding the row being inserted.
     * slack[j]: smallest reduced cost from the search tree to column j; from[j]: the tree column
     * through which that minimum was reached (for walking the augmenting path back). */
    size_t m = (size_t)n + 1;
    double *u = calloc(m, sizeof *u), *v = calloc(m, sizeof *v), *slack = malloc(m * sizeof *slack);
    int *row_of = calloc(m, sizeof *row_of), *from = calloc(m, sizeof *from);
    char *in_tree = malloc(m);
    if (!u || !v || !slack || !row_of || !from || !in_tree) {
        free(u), free(v), free(slack), free(row_of), free(from), free(in_tree);
        return dfl_fail(DFL_ERR_NOMEM, "ot: out of memory");
    }
    for (int r = 1; r <= n; r++) {
        row_of[0] = r;
        int col = 0;
        for (int j = 0; j <= n; j++) {
            slack[j] = INFINITY;
            in_tree[j] = 0;
        }
        do {
            in_tree[col] = 1;
            int i = row_of[col], next = 0;
            double delta = INFINITY;
            const double *Ci = C + (size_t)(i - 1) * n;
            for (int j = 1; j <= n; j++) {
                if (in_tree[j]) continue;
                double red = Ci[j - 1] - u[i] - v[j];
                if (red < slack[j]) {
                    slack[j] = red;
                    from[j] = col;
                }
                if (slack[j] < delta) {
                    delta = slack[j];
                    next = j;
                }
            }
            /* Raise the tree rows' potentials and lower its columns' by delta: tree edges keep
             * reduced cost 0, and the cheapest edge leaving the tree becomes tight. */
            for (int j = 0; j <= n; j++) {
                if (in_tree[j]) {
                    u[row_of[j]] += delta;
                    v[j] -= delta;
                } else {
                    slack[j] -= delta;
                }
            }
            col = next;
        } while (row_of[col] != 0);
        /* Flip the matching along the path from the free column back to the virtual column. */
        while (col != 0) {
            int back = from[col];
            row_of[col] = row_of[back];
            col = back;
        }
    }
    double total = 0;
    for (int j = 1; j <= n; j++) {
        perm[row_of[j] - 1] = j - 1;
        total += C[(size_t)(row_of[j] - 1) * n + (j - 1)];
    }
    if (cost) *cost = total;
    free(u), free(v), free(slack), free(row_of), free(from), free(in_tree);
    return DFL_OK;
}
