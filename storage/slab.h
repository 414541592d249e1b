/*
 * slab.h -- a size-class allocator for entries.
 *
 * glibc's malloc adds an 8-byte header and rounds to 16 bytes, about 15
 * bytes per entry; a slab rounds to SLAB_ALIGN bytes and keeps no header
 * (the caller passes the size back to slab_free, which entry_alloc_size()
 * can compute), about 4 bytes per entry. Objects up to SLAB_MAX_OBJ bytes
 * are carved from pages obtained with mem_alloc; larger ones are plain
 * mem_alloc allocations.
 *
 * Thread-safe: the shards of a store share one slab; each size class has its
 * own lock. Freed objects are reused by later allocations of the same class;
 * their pages go back to the system only at slab_close.
 */
#ifndef SHOAL_STORAGE_SLAB_H
#define SHOAL_STORAGE_SLAB_H

#include "proto/err.h"

#include <stddef.h>

#define SLAB_ALIGN   8u    /* size-class step and alignment of every object */
#define SLAB_MAX_OBJ 2048u /* larger requests go to mem_alloc */

typedef struct slab slab;

/* Make an empty slab; no pages are allocated until the first slab_alloc.
 * SHOAL_ENOMEM. */
shoal_err slab_open(slab **out);

/* Free every page (NULL ok). Objects still allocated from pages become
 * invalid; objects larger than SLAB_MAX_OBJ must have been slab_free'd
 * before, or they leak. No other thread may be using the slab. */
void slab_close(slab *s);

/* An object of at least len bytes (len 0 counts as 1), SLAB_ALIGN-aligned,
 * uninitialised, owned by the caller until slab_free. NULL when mem_alloc
 * fails (nothing changes then). */
void *slab_alloc(slab *s, size_t len);

/* Give back p (NULL ok), which slab_alloc(s, len) returned with the same
 * len. A wrong len corrupts the slab. */
void slab_free(slab *s, void *p, size_t len);

/* Bytes obtained from mem_alloc and not yet returned: pages, plus objects
 * larger than SLAB_MAX_OBJ at their requested size. */
size_t slab_bytes(const slab *s);

#endif
