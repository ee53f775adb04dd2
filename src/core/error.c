/* Status codes and the per-thread last-error message (DESIGN section 3, "Errors"). */
#include "difflow/core.h"

#include <stdarg.h>
#include <stdio.h>

static _Thread_local char g_msg[1024];

const char *dfl_last_error(void) { return g_msg; }

dfl_status dfl_fail(dfl_status st, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(g_msg, sizeof g_msg, fmt, ap);
    va_end(ap);
    return st;
}

const char *dfl_status_name(dfl_status st)
{
    switch (st) {
    case DFL_OK: return "ok";
    case DFL_ERR_IO: return "i/o error";
    case DFL_ERR_FORMAT: return "format error";
    case DFL_ERR_SHAPE: return "shape error";
    case DFL_ERR_ARG: return "bad argument";
    case DFL_ERR_NOMEM: return "out of memory";
    case DFL_ERR_NUMERIC: return "numeric error";
    case DFL_ERR_MISMATCH: return "model mismatch";
    }
    return "unknown error";
}
