/*
 * workload.h -- a deterministic write workload over a small key universe and
 * its model, for crash and I/O-error tests (TESTING.md G5, G6).
 *
 * wl_gen makes a sequence of ops from a seed (puts, deletes, batches, incr,
 * snapshots). The model state after j ops is a pure function of the ops, so a
 * test that knows "ops [0, lo) were acknowledged and none after hi was
 * started" checks that the store equals the model after j ops for some j in
 * [lo, hi]: every acknowledged write present, plus possibly a prefix of the
 * unacknowledged ones, never anything else.
 */
#ifndef SHOAL_TESTS_SUPPORT_WORKLOAD_H
#define SHOAL_TESTS_SUPPORT_WORKLOAD_H

#include "storage/store.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum { WL_PUT = 1, WL_DEL, WL_BATCH, WL_INCR, WL_SNAP };

#define WL_MAX_BATCH 4

typedef struct wl_op {
    int kind;
    int n;                       /* keys touched (batch: 2..4) */
    int key[WL_MAX_BATCH];       /* key index; the counter is n_keys */
    bool del[WL_MAX_BATCH];      /* batch: this slot deletes */
    uint32_t vlen[WL_MAX_BATCH]; /* put value length */
    int64_t delta;               /* incr */
} wl_op;

typedef struct wl {
    uint64_t seed;
    wl_op *ops;
    size_t n_ops;
    int n_keys; /* plus one counter key */
    uint32_t n_shards;
} wl;

/* Generate n_ops ops over n_keys keys in n_shards shards; values up to
 * max_vlen bytes; a snapshot round every snap_every ops (0: never). */
int wl_gen(wl *w, uint64_t seed, size_t n_ops, int n_keys, uint32_t n_shards,
           uint32_t max_vlen, size_t snap_every);
void wl_free(wl *w);

/* Run op i against s. Returns the store's code; a delete of an absent key
 * (SHOAL_ENOTFOUND) is reported as SHOAL_OK since the model agrees. */
shoal_err wl_run(store *s, const wl *w, size_t i);

/* Whether s equals the model after j ops for some j in [lo, hi] (hi is
 * clamped to n_ops). *j_out gets the first match. On a mismatch, prints
 * the first difference per candidate when verbose. */
bool wl_check(store *s, const wl *w, size_t lo, size_t hi, size_t *j_out,
              bool verbose);

/* Engine options for fault tests on an fs_mem file system f: data dir
 * "/data", fsync=always, no background thread, the given shard count,
 * WAL segment size and value limit. */
void wl_store_opts(store_opts *o, fs *f, uint32_t n_shards,
                   uint64_t segment_bytes, size_t max_value_bytes);

/* Key and shard of key index k. */
void wl_key(int k, char *buf, size_t cap);
uint32_t wl_shard(const wl *w, int k);

#endif
