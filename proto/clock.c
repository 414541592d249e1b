/*
 * clock.c -- the time seam of clock.h.
 */
#include "proto/clock.h"

#include <stdatomic.h>
#include <stddef.h>
#include <time.h>

typedef uint64_t (*clock_fn)(void *);
static _Atomic(clock_fn) source_fn;
static void *_Atomic source_arg;

uint64_t
clock_now_ms(void)
{
    clock_fn fn = atomic_load_explicit(&source_fn, memory_order_acquire);
    if (fn != NULL)
        return fn(atomic_load(&source_arg));
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t) ts.tv_sec * 1000u + (uint64_t) ts.tv_nsec / 1000000u;
}

uint64_t
clock_mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t) ts.tv_sec * 1000000000u + (uint64_t) ts.tv_nsec;
}

void
clock_set_source(uint64_t (*fn)(void *arg), void *arg)
{
    atomic_store(&source_arg, arg);
    atomic_store_explicit(&source_fn, fn, memory_order_release);
}
