/* Shared test helper: a network's parameters against a PyTorch state_dict listing
 * (bench/peers/NAME_keys.txt, one "name AxBxC" per line, written by bench/peers/torch_models.py).
 * Include after cmocka. */
#ifndef DFL_KEYS_H
#define DFL_KEYS_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "difflow/nn.h"

/* Fails the current test unless ps holds exactly the tensors listed in bench/peers/<file> (under
 * $DFL_SRC_DIR, else the source tree the test was built from), with the same names and shapes, in
 * the same order. */
static inline void dfl_check_keys(const dfl_params *ps, const char *file)
{
    char path[4096];
    const char *src = getenv("DFL_SRC_DIR");
#ifndef DFL_SOURCE_DIR
#define DFL_SOURCE_DIR ".."
#endif
    snprintf(path, sizeof path, "%s/bench/peers/%s", src ? src : DFL_SOURCE_DIR, file);
    FILE *f = fopen(path, "r");
    if (!f) fail_msg("cannot open %s", path);
    char line[512];
    int i = 0;
    while (fgets(line, sizeof line, f)) {
        char name[256], shp[64], mine[64];
        if (sscanf(line, "%255s %63s", name, shp) != 2) continue;
        if (i >= ps->n) fail_msg("%s lists more tensors than the %d of the network", file, ps->n);
        if (strcmp(name, ps->p[i].name) != 0) fail_msg("tensor %d: torch '%s', difflow '%s'", i, name, ps->p[i].name);
        const dfl_tensor *t = ps->p[i].t;
        int k = 0;
        for (int d = 0; d < t->ndim; d++) k += snprintf(mine + k, sizeof mine - (size_t)k, d ? "x%d" : "%d", t->shape[d]);
        if (strcmp(shp, mine) != 0) fail_msg("tensor %s: torch %s, difflow %s", name, shp, mine);
        i++;
    }
    fclose(f);
    if (i != ps->n) fail_msg("%s lists %d tensors, the network has %d", file, i, ps->n);
}

#endif
