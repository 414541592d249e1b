/*
 * store_int.h -- private to store.c, store_ops.c and store_repl.c.
 *
 * Locks, in the order they may be taken:
 *   shard.snap_mtx  (one snapshot, export or import of the shard at a time)
 *   shard.lock      (rwlock: index, lsn, counters, retired list)
 *   wal internals   (wal_append is called with shard.lock held for write)
 *   store.bg_mtx    (background thread wake-ups)
 */
#ifndef SHOAL_STORAGE_STORE_INT_H
#define SHOAL_STORAGE_STORE_INT_H

#include "storage/kidx.h"
#include "storage/slab.h"
#include "storage/snap.h"
#include "storage/store.h"

#include <pthread.h>
#include <stdatomic.h>

typedef struct shard {
    pthread_rwlock_t lock; /* guards every field below unless noted */
    kidx *idx;
    uint64_t lsn;                   /* last LSN assigned */
    uint32_t epoch;                 /* shard_epoch */
    uint64_t keys;                  /* entries in idx */
    uint64_t bytes;                 /* key + value bytes in idx */
    uint64_t ttl_keys;              /* entries with an expiry */
    uint64_t last_ticket;           /* WAL ticket of the last write */
    _Atomic uint64_t committed_lsn; /* writes up to here are committed */
    _Atomic uint64_t snap_lsn;      /* newest snapshot on disk */
    unsigned snap_pins;             /* snapshots holding entry pointers */
    entry **retired;                /* displaced while pinned; freed on unpin */
    size_t n_retired, cap_retired;
    uint8_t *exp_cursor; /* active expiry resumes after this key */
    size_t exp_cursor_len;
    bool follower;               /* replica copy: active expiry skips it */
    _Atomic uint64_t retain_lsn; /* WAL kept past this lsn (UINT64_MAX) */
    pthread_mutex_t snap_mtx;    /* held by whoever pins (snapshot, export) and
                                    by import, which so sees no pins */
} shard;

struct store {
    store_opts o;
    char *dir; /* NULL when memory-only */
    fs *fs;
    wal *wal; /* NULL when memory-only */
    slab *slab;
    shard *shards; /* o.n_shards */
    _Atomic int closing;
    _Atomic int read_only; /* sticky after a WAL failure */

    pthread_t bg;
    bool bg_running;
    pthread_mutex_t bg_mtx;
    pthread_cond_t bg_cond;
    bool bg_stop;                /* guarded by bg_mtx */
    uint64_t round_req;          /* bg_mtx: snapshot rounds asked for */
    uint64_t round_done;         /* bg_mtx: rounds finished */
    shoal_err round_rc;          /* bg_mtx: result of the last asked round */
    pthread_cond_t round_cond;   /* signalled when a round finishes */
    uint64_t wal_bytes_at_round; /* WAL bytes when snapshots last ran */
    uint64_t last_round_ns;

    _Atomic uint64_t n_snapshots;
    _Atomic uint64_t snapshot_ms_max;
    _Atomic uint64_t n_expired;
    uint64_t recovered_records;
    uint64_t recovery_ms;
    uint64_t replayed_bytes; /* WAL record bytes read by recovery: they count
                                toward snapshot_wal_bytes like new ones */
};

/* Entry lifetime (store_ops.c). */
entry *store_entry_new(store *s, uint64_t version, const uint8_t *key,
                       size_t klen, const uint8_t *val, size_t vlen,
                       uint64_t expire_at);
void store_entry_free(store *s, entry *e);
/* Give up a displaced entry: freed now, or kept until the shard's snapshot
 * unpins it. The caller holds the shard's write lock and reserved room. */
void shard_retire(store *s, shard *sh, entry *e);
/* Make room for n more retired entries if a snapshot pins the shard. */
shoal_err shard_retire_reserve(shard *sh, size_t n);
/* Counters after an entry joins / leaves the index. */
void shard_account(shard *sh, const entry *e, int sign);

/* Apply a decoded WAL record to a shard during recovery (store_ops.c). */
shoal_err store_apply_rec(store *s, const wal_rec *r);

/* Snapshot capture (store.c): copy the shard's entry pointers in key order
 * and pin the shard; *ticket is the WAL ticket the copied state needs
 * committed. Caller holds snap_mtx and calls shard_snap_unpin after. */
shoal_err shard_snap_capture(shard *sh, entry ***ents_out, snap_meta *m,
                             uint64_t *ticket);
void shard_snap_unpin(store *s, shard *sh);

#endif
