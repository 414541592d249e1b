/*
 * mem.h -- every allocation in Shoal goes through here, so tests can fail the
 * Nth allocation (STYLE §5, §9). proto/, storage/, cluster/ and client/
 * return SHOAL_ENOMEM on failure; only node/main.c may treat it as fatal.
 */
#ifndef SHOAL_PROTO_MEM_H
#define SHOAL_PROTO_MEM_H

#include <stddef.h>

/* Like malloc/calloc/realloc/free; NULL on failure (or injected failure).
 * mem_free(NULL) is a no-op. */
void *mem_alloc(size_t len);
void *mem_calloc(size_t n, size_t len);
void *mem_realloc(void *p, size_t len);
void mem_free(void *p);

/* Copy of s (NUL-terminated), freed with mem_free; NULL on failure. */
char *mem_strdup(const char *s);

/* Fault seam: make the nth allocation from now fail (n >= 1); when forever is
 * nonzero every later one fails too. n == 0 disarms. Counts all threads. */
void mem_fail_set(long n, int forever);

/* Number of allocations that failed because of mem_fail_set. */
long mem_fail_count(void);

#endif
