/*
 * store.h -- the storage engine of one node: S shards of ordered key/values
 * in memory, made durable by one WAL (wal.h) plus per-shard snapshots
 * (snap.h). DESIGN §2, §7.
 *
 * Every operation names its shard explicitly (the node maps key -> shard
 * with proto/keyhash.h); the engine never hashes keys. Each stored entry has
 * a version (the shard LSN of its last write, strictly increasing per shard)
 * and an expire_at (unix ms, 0 = never); expired entries are invisible to
 * every read and are deleted through the WAL by active expiry.
 *
 * Concurrency: all calls are thread-safe. Writes of one shard are serialised
 * by the shard's lock (LSN order == WAL order); reads share it. Writes return
 * once committed under the fsync policy (wal.h); a read that observes a
 * write not yet committed waits for it, so nothing returned by a read can be
 * lost by a crash the policy covers.
 *
 * Errors common to all calls: SHOAL_EINVAL (shard out of range, empty key,
 * NULL where a buffer is needed), SHOAL_ETOOLARGE (key or value over the
 * limits), SHOAL_ECLOSED (store closing). Writes add SHOAL_ENOMEM,
 * SHOAL_ENOSPC (no WAL room; nothing changed), SHOAL_EREADONLY (the engine
 * is read-only after an I/O failure; reopen to recover), SHOAL_EIO (the
 * write was logged but its commit failed: state unknown, as after a crash).
 * A write that fails with any other code changed nothing.
 */
#ifndef SHOAL_STORAGE_STORE_H
#define SHOAL_STORAGE_STORE_H

#include "proto/err.h"
#include "storage/fs.h"
#include "storage/wal.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct store store;

typedef struct store_opts {
    const char *data_dir;          /* NULL or "": memory-only, no files */
    fs *fs;                        /* default fs_posix() */
    uint32_t n_shards;             /* shard ids 0..n_shards-1; default 256 */
    size_t max_key_bytes;          /* default 1024 (at most 65535) */
    size_t max_value_bytes;        /* default 16 MiB */
    size_t max_batch_ops;          /* default 10000 */
    wal_fsync fsync;               /* default WAL_FSYNC_ALWAYS */
    uint32_t fsync_interval_ms;    /* for interval; default 100 */
    uint64_t segment_bytes;        /* WAL segment size; default 64 MiB */
    uint64_t snapshot_wal_bytes;   /* snapshot dirty shards after this many WAL
                                      bytes since the last round; 0 = off;
                                      default 256 MiB */
    uint32_t snapshot_interval_ms; /* and at least this often; 0 = off */
    unsigned snapshots_kept;       /* K newest kept per shard; default 2 */
    uint32_t expiry_interval_ms;   /* active expiry tick; default 100 */
    uint32_t expiry_batch;     /* entries examined per shard per tick; 200 */
    bool background;           /* run the snapshot/expiry thread; default on */
    uint64_t wal_retain_bytes; /* WAL kept for store_set_retain_lsn at most
                                  this much (0: no retention); default 1 GiB */
    /* Replication hook (cluster/repl.c), may be NULL: called for every
     * WAL_REC_OPS record the engine writes -- client writes, batches,
     * active expiry, store_apply -- right after its WAL append, with the
     * shard's write lock held (so per shard in LSN order, never two at once
     * for one shard), and during store_open for every record recovery
     * reads from the WAL (including records a snapshot already covers), in
     * log order. It must be quick and must not call into the store. */
    void (*on_record)(void *arg, uint32_t shard, uint32_t shard_epoch,
                      uint64_t lsn, const uint8_t *payload, size_t len);
    void *on_record_arg;
} store_opts;

void store_opts_default(store_opts *o);

/* Open the engine: recover every shard from its newest valid snapshot plus
 * the WAL, then start the WAL writer and the background thread.
 * SHOAL_EINVAL (bad options), SHOAL_ECORRUPT (mid-log corruption or a gap in
 * a shard's LSNs; logged with file, offset, shard), SHOAL_EIO, SHOAL_ENOSPC,
 * SHOAL_ENOMEM. On failure *out is NULL and nothing runs. */
shoal_err store_open(const store_opts *o, store **out);

/* Stop background work, commit and sync what was written, free (NULL ok). */
void store_close(store *s);

/* --- reads -----------------------------------------------------------------
 */

typedef struct store_item {
    const uint8_t *key; /* borrowed: valid during the callback only */
    size_t klen;
    const uint8_t *val;
    size_t vlen;
    uint64_t version;
    uint64_t expire_at;
} store_item;

/* Reader callback: runs under the shard's read lock, so it must be quick
 * and must not call back into the store. A non-OK return ends the call with
 * that code. */
typedef shoal_err (*store_item_cb)(void *arg, const store_item *it);

/* Call cb with the live entry of key. SHOAL_ENOTFOUND if absent or expired. */
shoal_err store_get(store *s, uint32_t shard, const uint8_t *key, size_t klen,
                    store_item_cb cb, void *arg);

/* Version and remaining time to live of key: *ttl_ms_out is -1 when it never
 * expires. Either out pointer may be NULL. SHOAL_ENOTFOUND. */
shoal_err store_ttl(store *s, uint32_t shard, const uint8_t *key, size_t klen,
                    int64_t *ttl_ms_out, uint64_t *version_out);

/* A scan's bounds: keys in [start, end) that begin with prefix. NULL start:
 * from the first key (or the prefix); NULL end: no upper bound. With
 * start_exclusive, start itself is skipped (continuation from a last key). */
typedef struct store_range {
    const uint8_t *prefix;
    size_t prefix_len;
    const uint8_t *start;
    size_t start_len;
    bool start_exclusive;
    const uint8_t *end;
    size_t end_len;
} store_range;

/* Call cb for up to limit live entries of shard in r, in key order
 * (limit 0: no limit). *more_out (may be NULL) tells whether entries remain
 * past the last one given: resume with start = last key, start_exclusive. */
shoal_err store_scan(store *s, uint32_t shard, const store_range *r,
                     size_t limit, store_item_cb cb, void *arg, bool *more_out);

/* Number of live keys with the prefix (prefix_len 0: all). */
shoal_err store_count(store *s, uint32_t shard, const uint8_t *prefix,
                      size_t prefix_len, uint64_t *count_out);

/* --- writes ----------------------------------------------------------------
 */

typedef struct store_wopts {
    uint64_t ttl_ms;     /* put: expire this long after the write; 0 never */
    bool if_absent;      /* put: only if no live entry (else SHOAL_EEXISTS) */
    bool has_if_version; /* only if the live version equals if_version (an
                            absent key has version 0), else SHOAL_EVERSION */
    uint64_t if_version;
    bool durable; /* fdatasync before returning, whatever the policy */
    bool no_wait; /* return once logged and applied, before the commit: the
                     caller completes it with store_commit_notify/_wait on a
                     store_commit_point() taken after the write (servers
                     answer many writes with one wait) */
} store_wopts;

/* Put key = val. opts may be NULL. *version_out (may be NULL) gets the new
 * version. SHOAL_EEXISTS, SHOAL_EVERSION when a condition fails. */
shoal_err store_put(store *s, uint32_t shard, const uint8_t *key, size_t klen,
                    const uint8_t *val, size_t vlen, const store_wopts *opts,
                    uint64_t *version_out);

/* Delete key (opts: has_if_version, durable). SHOAL_ENOTFOUND if there is no
 * live entry, SHOAL_EVERSION. */
shoal_err store_del(store *s, uint32_t shard, const uint8_t *key, size_t klen,
                    const store_wopts *opts);

/* Atomically add delta to the value of key read as a decimal int64 (absent:
 * 0) and store the result as decimal text, keeping its expiry.
 * SHOAL_ENOTNUM (value is not a decimal int64), SHOAL_EOVERFLOW. */
shoal_err store_incr(store *s, uint32_t shard, const uint8_t *key, size_t klen,
                     int64_t delta, const store_wopts *opts,
                     int64_t *result_out, uint64_t *version_out);

typedef enum store_op_kind {
    STORE_OP_PUT = 1,
    STORE_OP_DEL = 2,
} store_op_kind;

typedef struct store_op {
    store_op_kind kind;
    const uint8_t *key;
    size_t klen;
    const uint8_t *val; /* put */
    size_t vlen;
    store_wopts opts; /* ttl_ms, if_absent, has_if_version per op */
} store_op;

/* Apply n ops to one shard atomically: one WAL record, all or nothing, one
 * new version for all of them. Each key at most once (else SHOAL_EINVAL).
 * If any op's condition fails nothing is applied, results[i] (may be NULL)
 * says which ops failed (SHOAL_EEXISTS, SHOAL_EVERSION, SHOAL_ENOTFOUND for
 * a delete of an absent key) and that code is returned. durable is taken
 * from ops[0].opts. */
shoal_err store_batch(store *s, uint32_t shard, const store_op *ops, size_t n,
                      shoal_err *results, uint64_t *version_out);

/* --- deferred commit --------------------------------------------------------
 * A server applies a frame's writes with no_wait, takes the commit point
 * once, and answers every write of the frame when that point commits. Reads
 * of another caller still wait for a write they observe, so nothing
 * uncommitted is ever returned.
 */

/* A position covering every write applied so far (0: memory-only, or
 * nothing written yet). */
uint64_t store_commit_point(store *s);

typedef void (*store_done_cb)(void *arg, shoal_err rc);

/* Call cb(arg, rc) exactly once when every write up to point is committed
 * under the policy (durable: fsynced whatever the policy): rc SHOAL_OK, or
 * SHOAL_EIO if the log failed first (those writes' fate is unknown, as after
 * a crash; the engine turns read-only), SHOAL_ECLOSED if the store closed.
 * When already committed cb runs in the caller before this returns;
 * otherwise on the WAL writer thread, so cb must be quick and must not call
 * into the store. Returns SHOAL_ENOMEM (cb not called) or SHOAL_OK. */
shoal_err store_commit_notify(store *s, uint64_t point, bool durable,
                              store_done_cb cb, void *arg);

/* Block until point is committed. SHOAL_OK, SHOAL_EIO, SHOAL_ECLOSED. */
shoal_err store_commit_wait(store *s, uint64_t point, bool durable);

/* --- replication (DESIGN §4) ------------------------------------------------
 * A follower applies its primary's records with their own LSN and epoch; a
 * far-behind one installs the primary's shard snapshot. Memory-only stores
 * support all of it (snapshots are then built and installed in memory).
 */

/* Apply one shipped WAL_REC_OPS record to a follower shard, with the
 * primary's lsn and shard_epoch: logged to this node's WAL (same lsn and
 * epoch) and applied exactly as recovery applies a record (versions = lsn,
 * expire_at as given), on_record called. The payload is hostile input: it
 * is fully decoded and checked before anything changes.
 *   lsn <= the shard's LSN       SHOAL_OK, nothing done, *applied false
 *   lsn >  the shard's LSN + 1   SHOAL_EVERSION (gap), nothing done
 *   shard_epoch < the shard's    SHOAL_EWRONGSHARD, nothing done
 *   bad payload                  SHOAL_ECORRUPT, nothing done
 * A higher shard_epoch is adopted. With no_wait it returns once applied and
 * the caller completes it with store_commit_point/notify; otherwise it
 * waits for the commit. applied may be NULL. */
shoal_err store_apply(store *s, uint32_t shard, uint32_t shard_epoch,
                      uint64_t lsn, const uint8_t *payload, size_t len,
                      bool no_wait, bool *applied);

/* Raise the shard's epoch to at least shard_epoch (the map's value; records
 * written afterwards carry it). */
shoal_err store_set_shard_epoch(store *s, uint32_t shard, uint32_t shard_epoch);

/* Mark a shard as a follower copy (true) or primary (false, the default).
 * Active expiry skips follower shards: their deletes come from the primary,
 * so replicas stay identical. Reads still hide expired entries. */
shoal_err store_set_follower(store *s, uint32_t shard, bool follower);

/* WAL retention for followers: segments holding records of shard with
 * lsn > lsn are kept even when snapshots cover them (UINT64_MAX, the
 * default, asks for nothing), until the WAL exceeds wal_retain_bytes; past
 * that the oldest segments go anyway (such a follower re-syncs by snapshot).
 * The WAL's size is its segment count times segment_bytes (segments are
 * preallocated); when a collection that honoured retention leaves it over
 * the limit, every segment the snapshots cover is deleted. Not persisted:
 * set again after a restart. */
shoal_err store_set_retain_lsn(store *s, uint32_t shard, uint64_t lsn);

/* Stream a point-in-time snapshot of shard: cb gets consecutive chunks
 * (each at most 1 MiB) of the snap file format (snap.h: header, zlib body,
 * crc) in order; a non-OK return from cb stops it with that code. Writes
 * continue meanwhile. *lsn_out and *epoch_out get the snapshot's LSN and
 * shard_epoch (may be NULL). Not called under any store lock. */
typedef shoal_err (*store_chunk_cb)(void *arg, const uint8_t *data, size_t len);
shoal_err store_snapshot_export(store *s, uint32_t shard, store_chunk_cb cb,
                                void *arg, uint64_t *lsn_out,
                                uint32_t *epoch_out);

/* Install a snapshot received from the primary, replacing the shard's
 * contents. begin .. write* .. finish; abort (or a failed call) drops it
 * and leaves the shard untouched. finish and abort free im whatever the
 * outcome; after a failed write the bytes are dropped and later calls
 * return its code, so the caller still ends with abort (or finish). The
 * image is held in memory until finish; max_bytes 0 means no limit. The bytes
 * are hostile input: finish verifies the whole stream (format, crc, the shard
 * id) before changing anything, makes it durable (temp file, fsync, rename, dir
 * fsync) as the shard's newest snapshot, then swaps the shard's contents and
 * sets its LSN and epoch to the snapshot's, so a restart recovers it. Refused
 * with SHOAL_EVERSION when the shard's LSN is already past the snapshot's.
 * SHOAL_ECORRUPT (bad stream), SHOAL_ETOOLARGE (over max_bytes given to
 * begin), SHOAL_EIO, SHOAL_ENOSPC, SHOAL_ENOMEM. */
typedef struct store_import store_import;
shoal_err store_import_begin(store *s, uint32_t shard, uint64_t max_bytes,
                             store_import **out);
shoal_err store_import_write(store_import *im, const uint8_t *data, size_t len);
shoal_err store_import_finish(store_import *im, uint64_t *lsn_out);
void store_import_abort(store_import *im); /* NULL ok */

/* --- maintenance ------------------------------------------------------------
 */

/* Snapshot one shard now (memory-only: SHOAL_EINVAL). Writes continue while
 * it runs; at most one snapshot per shard at a time. */
shoal_err store_snapshot(store *s, uint32_t shard);

/* Snapshot every shard changed since its last snapshot, then delete the WAL
 * segments all snapshots cover. */
shoal_err store_snapshot_all(store *s);

/* Run a snapshot round (store_snapshot_all) on the background thread, which
 * runs at lowered CPU priority so request threads keep the CPU, and wait for
 * it. Without a background thread it runs in the caller. */
shoal_err store_snapshot_now(store *s);

/* One active-expiry pass over every shard (the background thread calls it
 * every expiry_interval_ms). *n_expired_out (may be NULL) gets the count. */
shoal_err store_expire(store *s, uint64_t *n_expired_out);

typedef struct store_shard_stats {
    uint64_t keys;     /* entries, including expired not yet removed */
    uint64_t bytes;    /* key + value bytes of those entries */
    uint64_t lsn;      /* last LSN assigned */
    uint64_t snap_lsn; /* LSN of the newest snapshot (0: none) */
    uint32_t epoch;    /* shard_epoch */
} store_shard_stats;

typedef struct store_stats {
    uint64_t keys;
    uint64_t bytes;
    uint64_t index_bytes; /* memory used by the indexes */
    uint64_t wal_records; /* appended since open */
    uint64_t wal_bytes;
    uint64_t wal_fsyncs;
    uint64_t wal_segments;
    uint64_t snapshots;         /* taken since open */
    uint64_t snapshot_ms_max;   /* longest snapshot since open */
    uint64_t expired;           /* entries removed by active expiry */
    uint64_t recovered_records; /* WAL records replayed at open */
    uint64_t recovery_ms;       /* time store_open spent recovering */
    bool read_only;             /* sticky I/O failure */
} store_stats;

void store_get_stats(store *s, store_stats *out);
shoal_err store_get_shard_stats(store *s, uint32_t shard,
                                store_shard_stats *out);

/* Digest of a shard's live state (keys, values, versions, expiry, in key
 * order): BLAKE2b (libsodium generichash) cut to 64 bits. Replicas and a
 * recovered engine compare equal exactly when their live states do. */
shoal_err store_digest(store *s, uint32_t shard, uint64_t *digest_out);

#endif
