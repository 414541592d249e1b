/*
 * mem.c -- allocation seam. The countdown is one atomic, so the disarmed cost
 * is a relaxed load per allocation.
 */
#include "proto/mem.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

static _Atomic long fail_countdown; /* 0: disarmed; k: the kth call fails */
static _Atomic int fail_forever;    /* after the countdown hits, keep failing */
static _Atomic long fail_hits;      /* allocations failed on purpose */

static int
should_fail(void)
{
    if (atomic_load_explicit(&fail_countdown, memory_order_relaxed) == 0)
        return 0;
    long left = atomic_fetch_sub(&fail_countdown, 1) - 1;
    if (left == 0) {
        if (atomic_load(&fail_forever))
            atomic_store(&fail_countdown, -1);
        atomic_fetch_add(&fail_hits, 1);
        return 1;
    }
    if (left < 0) {
        /* Forever mode: keep the counter negative. */
        atomic_store(&fail_countdown, -1);
        atomic_fetch_add(&fail_hits, 1);
        return 1;
    }
    return 0;
}

void *
mem_alloc(size_t len)
{
    if (should_fail())
        return NULL;
    return malloc(len == 0 ? 1 : len);
}

void *
mem_calloc(size_t n, size_t len)
{
    if (should_fail())
        return NULL;
    return calloc(n == 0 ? 1 : n, len == 0 ? 1 : len);
}

void *
mem_realloc(void *p, size_t len)
{
    if (should_fail())
        return NULL;
    return realloc(p, len == 0 ? 1 : len);
}

void
mem_free(void *p)
{
    free(p);
}

char *
mem_strdup(const char *s)
{
    size_t n = strlen(s) + 1;
    char *d = mem_alloc(n);
    if (d != NULL)
        memcpy(d, s, n);
    return d;
}

void
mem_fail_set(long n, int forever)
{
    atomic_store(&fail_forever, forever != 0);
    atomic_store(&fail_countdown, n < 0 ? 0 : n);
}

long
mem_fail_count(void)
{
    return atomic_load(&fail_hits);
}
