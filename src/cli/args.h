/* Flag parsing for the difflow command line: a table of flags per subcommand, each with a
 * default that works, a help line, and validation that names the flag on error. */
#ifndef DIFFLOW_CLI_ARGS_H
#define DIFFLOW_CLI_ARGS_H

#include <stdint.h>

typedef enum { ARG_STR, ARG_INT, ARG_LONG, ARG_FLOAT, ARG_BOOL, ARG_U64 } arg_type;

typedef struct {
    const char *name;  /* "--steps" */
    const char *alias; /* "-n" or NULL */
    arg_type type;
    void *ptr;         /* const char **, int *, long *, double *, int * (bool), uint64_t * */
    const char *meta;  /* "N" */
    const char *help;
    int seen;          /* set by the parser */
} arg_spec;

/* Parses argv[0..argc) against specs (NULL-terminated by name == NULL). Positional arguments are
 * refused. Returns 0 on success, 1 if --help was given (usage printed to stdout), -1 after
 * printing "difflow: error: ..." to stderr. */
int args_parse(const char *cmd, const char *usage, arg_spec *specs, int argc, char **argv);
/* The spec for `name`, to test ->seen. */
arg_spec *args_find(arg_spec *specs, const char *name);

#endif
