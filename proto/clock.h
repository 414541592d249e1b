/*
 * clock.h -- time seam. Code asks clock_now_ms() for wall-clock unix ms (TTL)
 * and clock_mono_ns() for intervals; tests install a fake source.
 */
#ifndef SHOAL_PROTO_CLOCK_H
#define SHOAL_PROTO_CLOCK_H

#include <stdint.h>

/* Unix time in milliseconds (CLOCK_REALTIME unless overridden). */
uint64_t clock_now_ms(void);

/* Monotonic nanoseconds (CLOCK_MONOTONIC); not affected by the override. */
uint64_t clock_mono_ns(void);

/* Override clock_now_ms: fn(arg) is returned instead. fn == NULL restores
 * the real clock. Not for concurrent use with readers mid-change. */
void clock_set_source(uint64_t (*fn)(void *arg), void *arg);

#endif
