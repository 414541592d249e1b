/*
 * kidx.h -- the ordered in-memory index of one shard: key -> entry *.
 *
 * Keys are ordered byte-wise (key_cmp in entry.h). The index does not own
 * the entries: put/del hand back the entry they displace, and the caller
 * retires it. Not thread-safe: the shard's lock guards every call; iterators
 * stay valid until the next mutating call.
 *
 * Allocation failure never leaves a half-done change: kidx_reserve() makes
 * sure the next kidx_put cannot fail, so a caller can reserve, then write the
 * WAL record, then put, and never have a logged write it cannot apply.
 */
#ifndef SHOAL_STORAGE_KIDX_H
#define SHOAL_STORAGE_KIDX_H

#include "proto/err.h"
#include "storage/entry.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct kidx kidx;

/* Position in the index; fields are private to kidx.c. */
typedef struct kidx_iter {
    const void *node; /* current leaf, NULL at end */
    unsigned pos;     /* slot in leaf */
} kidx_iter;

/* Make an empty index. SHOAL_ENOMEM. */
shoal_err kidx_open(kidx **out);

/* Free the index (NULL ok). When free_entry is non-NULL it is called once for
 * every entry still in the index. */
void kidx_close(kidx *k, void (*free_entry)(void *arg, entry *e), void *arg);

/* The entry with this key, or NULL. */
entry *kidx_get(const kidx *k, const uint8_t *key, size_t klen);

/* Make sure the next kidx_put cannot fail. SHOAL_ENOMEM. */
shoal_err kidx_reserve(kidx *k);

/* Make sure the next n kidx_put calls cannot fail (a batch reserves for all
 * its puts before logging). SHOAL_ENOMEM, with the index unchanged. */
shoal_err kidx_reserve_n(kidx *k, size_t n);

/* Insert e, or replace the entry with the same key. Returns the displaced
 * entry (the caller retires it) or NULL. Requires a successful kidx_reserve
 * since the last put; never fails. */
entry *kidx_put(kidx *k, entry *e);

/* Remove the key; returns the removed entry or NULL if absent. Never fails. */
entry *kidx_del(kidx *k, const uint8_t *key, size_t klen);

/* Number of entries. */
size_t kidx_count(const kidx *k);

/* Bytes the index itself uses (nodes), not counting entries. */
size_t kidx_mem_bytes(const kidx *k);

/* Position it at the first entry with key >= key (key == NULL: the first
 * entry); with exclusive, at the first entry with key > key. */
void kidx_seek(const kidx *k, kidx_iter *it, const uint8_t *key, size_t klen,
               bool exclusive);

/* The entry at the iterator, advancing it; NULL at the end. */
entry *kidx_next(kidx_iter *it);

/* Check every invariant of the tree (order, leaf prefixes, separators, leaf
 * chain, counts): NULL when they hold, else a description of the first one
 * broken (a string literal). Walks every entry: for tests. */
const char *kidx_check(const kidx *k);

#endif
