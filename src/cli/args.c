/* Flag parsing for the difflow command line. */
#include "args.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

arg_spec *args_find(arg_spec *specs, const char *name)
{
    for (arg_spec *s = specs; s->name; s++)
        if (strcmp(s->name, name) == 0) return s;
    return NULL;
}

static void print_default(const arg_spec *s)
{
    if (strstr(s->help, "default")) return; /* the help text states a computed default */
    switch (s->type) {
    case ARG_STR: {
        const char *v = *(const char **)s->ptr;
        if (v) printf(" (default: %s)", v);
        break;
    }
    case ARG_INT: printf(" (default: %d)", *(int *)s->ptr); break;
    case ARG_LONG: printf(" (default: %ld)", *(long *)s->ptr); break;
    case ARG_U64: printf(" (default: %" PRIu64 ")", *(uint64_t *)s->ptr); break;
    case ARG_FLOAT: printf(" (default: %g)", *(double *)s->ptr); break;
    case ARG_BOOL: break;
    }
}

static void usage_print(const char *usage, arg_spec *specs)
{
    printf("%s\n\nOptions:\n", usage);
    for (arg_spec *s = specs; s->name; s++) {
        char left[64];
        if (s->alias) snprintf(left, sizeof left, "%s, %s %s", s->alias, s->name, s->meta ? s->meta : "");
        else snprintf(left, sizeof left, "%s %s", s->name, s->meta ? s->meta : "");
        printf("  %-26s %s", left, s->help);
        print_default(s);
        printf("\n");
    }
    printf("  %-26s %s\n", "-h, --help", "show this help and exit");
}

static int bad(const char *cmd, const char *flag, const char *val, const char *what)
{
    fprintf(stderr, "difflow: error: %s %s: '%s' is not %s (see difflow %s --help)\n", cmd, flag, val, what, cmd);
    return -1;
}

int args_parse(const char *cmd, const char *usage, arg_spec *specs, int argc, char **argv)
{
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            usage_print(usage, specs);
            return 1;
        }
        const char *val = NULL;
        char name[64];
        const char *eq = strchr(a, '=');
        if (a[0] == '-' && a[1] == '-' && eq && (size_t)(eq - a) < sizeof name) {
            memcpy(name, a, (size_t)(eq - a));
            name[eq - a] = 0;
            val = eq + 1;
        } else {
            snprintf(name, sizeof name, "%s", a);
        }
        arg_spec *s = NULL;
        for (arg_spec *t = specs; t->name; t++)
            if (strcmp(t->name, name) == 0 || (t->alias && strcmp(t->alias, name) == 0)) s = t;
        if (!s) {
            if (a[0] == '-') fprintf(stderr, "difflow: error: unknown flag '%s' for 'difflow %s' (see difflow %s --help)\n", name, cmd, cmd);
            else fprintf(stderr, "difflow: error: unexpected argument '%s' for 'difflow %s' (see difflow %s --help)\n", a, cmd, cmd);
            return -1;
        }
        s->seen = 1;
        if (s->type == ARG_BOOL) {
            if (val) return bad(cmd, s->name, val, "expected (this flag takes no value)");
            *(int *)s->ptr = 1;
            continue;
        }
        if (!val) {
            if (i + 1 >= argc) {
                fprintf(stderr, "difflow: error: %s %s needs a value (see difflow %s --help)\n", cmd, s->name, cmd);
                return -1;
            }
            val = argv[++i];
        }
        char *end = NULL;
        errno = 0;
        switch (s->type) {
        case ARG_STR:
            if (!*val) return bad(cmd, s->name, val, "a non-empty value");
            *(const char **)s->ptr = val;
            break;
        case ARG_INT: {
            long v = strtol(val, &end, 10);
            if (errno || end == val || *end || v < -2147483647L || v > 2147483647L) return bad(cmd, s->name, val, "an integer");
            *(int *)s->ptr = (int)v;
            break;
        }
        case ARG_LONG: {
            long v = strtol(val, &end, 10);
            if (errno || end == val || *end) return bad(cmd, s->name, val, "an integer");
            *(long *)s->ptr = v;
            break;
        }
        case ARG_U64: {
            if (val[0] == '-') return bad(cmd, s->name, val, "a non-negative integer");
            unsigned long long v = strtoull(val, &end, 10);
            if (errno || end == val || *end) return bad(cmd, s->name, val, "a non-negative integer");
            *(uint64_t *)s->ptr = (uint64_t)v;
            break;
        }
        case ARG_FLOAT: {
            double v = strtod(val, &end);
            if (errno || end == val || *end || !isfinite(v)) return bad(cmd, s->name, val, "a finite number");
            *(double *)s->ptr = v;
            break;
        }
        case ARG_BOOL: break;
        }
    }
    return 0;
}
