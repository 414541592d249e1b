/*
 * err.c -- messages and names for the error list in err.h.
 */
#include "proto/err.h"

#include <stdio.h>
#include <stdlib.h>

const char *
shoal_strerror(shoal_err rc)
{
    switch (rc) {
#define X(name, val, msg) \
    case val:             \
        return msg;
        SHOAL_ERR_MAP(X)
#undef X
    default:
        return "unknown error";
    }
}

const char *
shoal_errname(shoal_err rc)
{
    switch (rc) {
#define X(name, val, msg) \
    case val:             \
        return "SHOAL_" #name;
        SHOAL_ERR_MAP(X)
#undef X
    default:
        return "SHOAL_E?";
    }
}

void
sh_assert_fail(const char *expr, const char *file, int line)
{
    fprintf(stderr, "%s:%d: assertion failed: %s\n", file, line, expr);
    fflush(stderr);
    abort();
}
