/*
 * shoal.h -- libshoal, the client library of Shoal.
 *
 * A shoal handle talks to a Shoal cluster over the protobuf RPC API. It is
 * thread-safe: any number of threads may call into one handle at once, and
 * concurrent calls bound for the same node are coalesced into one sealed
 * frame (flushed when an earlier frame to that node is answered, or when it
 * reaches max_frame_ops), so many callers cost about as much as one round
 * trip.
 *
 * Routing. shoal_open fetches the cluster map from a seed (a single shoald
 * serves a map of itself). Every key op goes to the primary of its key's
 * shard (shard = siphash(map hash key, key) mod shard count), over a
 * connection to that node opened on first use; with read_any, reads may go
 * to any replica instead (possibly stale). Scans and counts are split by
 * node (each node is asked for the shards it is primary of) and merged;
 * batches are split by node, each node's part atomic per shard. Every
 * request carries the map's epoch; a node whose map is newer answers
 * SHOAL_EWRONGSHARD (nothing was executed) with its map, which the handle
 * adopts, and the request is sent again where the new map says (at most 8
 * times, within the deadline). A newer epoch named by any answer makes the
 * handle fetch the map in the background. There is no failover yet: when a
 * shard's primary cannot be reached its keys get SHOAL_EUNAVAILABLE at the
 * deadline (writes that were sent: SHOAL_ETIMEOUT, as below).
 *
 * Two ways to call:
 *  - blocking calls (shoal_get, shoal_put, ...): return when the answer is
 *    in, the deadline passes, or the handle closes;
 *  - asynchronous calls (shoal_submit): return at once; a callback receives
 *    the result on a libshoal thread.
 *
 * Deadlines and retries. Every call has a deadline (shoal_call.timeout_ms,
 * else shoal_opts.timeout_ms). Errors that say the request was not executed
 * (SHOAL_EUNAVAILABLE: no connection; SHOAL_EWRONGSHARD: the map moved) are
 * retried with backoff (5 ms doubling to 200 ms; after EWRONGSHARD at once
 * when a newer map is in) until the deadline. A write
 * whose frame was sent but not answered in time, or whose connection was
 * lost before the answer, returns SHOAL_ETIMEOUT: it may or may not have
 * taken effect (as with any database); it is never resent. Reads are
 * retried on SHOAL_ETIMEOUT from the node and on lost connections too. At
 * the deadline a call that never reached a node returns SHOAL_EUNAVAILABLE
 * (it did not run), one that did SHOAL_ETIMEOUT; a read whose node cannot
 * be reached at the deadline returns SHOAL_EUNAVAILABLE even if an earlier
 * attempt was sent before the connection was lost. An answer that does not
 * authenticate is not believed (it is counted and logged): reads are
 * retried, writes return SHOAL_EIO, as they may have been applied.
 *
 * Memory. Values returned by blocking calls are malloc'd by libshoal and
 * freed with shoal_free. Values passed to a callback are borrowed and valid
 * only during the callback.
 *
 * libshoal never prints: log lines go to the hook set with shoal_set_logger.
 *
 * Errors: every function returns a shoal_err (proto/err.h, installed with
 * this header); shoal_strerror gives its message.
 *
 * Example (compiled and run by the tests: client/examples/hello.c):
 *
 *   shoal_opts o;
 *   shoal_opts_default(&o);
 *   const char *seeds[] = {"tcp://127.0.0.1:7400"};
 *   o.seeds = seeds;
 *   o.n_seeds = 1;
 *   o.key_file = "client.key";
 *   shoal *db;
 *   shoal_err rc = shoal_open(&o, &db);
 *   if (rc == SHOAL_OK)
 *       rc = shoal_put(db, "k", 1, "v", 1, NULL, NULL);
 *   shoal_close(db);
 */
#ifndef SHOAL_CLIENT_SHOAL_H
#define SHOAL_CLIENT_SHOAL_H

#include "proto/err.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#if defined(SHOAL_BUILDING_LIB)
#define SHOAL_API __attribute__((visibility("default")))
#else
#define SHOAL_API
#endif

#ifdef __cplusplus
extern "C" {
#endif

typedef struct shoal shoal;

/* ---- logging -----------------------------------------------------------
 * level: 0 error, 1 warning, 2 notice, 3 info, 4 debug. The hook is
 * process-wide; NULL (the default) drops every line. */
typedef void (*shoal_log_fn)(void *arg, int level, const char *msg);
SHOAL_API void shoal_set_logger(shoal_log_fn fn, void *arg, int max_level);

/* ---- opening ------------------------------------------------------------
 */

typedef struct shoal_opts {
    const char *const *seeds; /* node URLs, e.g. "tcp://127.0.0.1:7400" */
    size_t n_seeds;
    const char *key_file; /* client key (wire.h key-file format) */
    bool insecure;        /* plaintext, no key: only for --insecure nodes */
    uint32_t timeout_ms;  /* default per-call deadline; default 5000 */
    uint32_t connect_timeout_ms; /* give up opening after; default 5000 */
    uint32_t max_frame_ops;      /* most calls per frame; default 1024 */
    uint32_t max_inflight;       /* frames in flight per node; default 4 */
    size_t max_frame_bytes;      /* largest frame sent; default 64 MiB */
    bool read_any;               /* reads (get, ttl, exists, scan, count) may go
                                    to any replica of the shard, spread by a
                                    per-handle counter: possibly stale; default
                                    false (the primary, linearizable) */
    uint32_t write_quorum;       /* W for writes: copies durable before a write
                                    is acknowledged; 0 (default): the cluster's.
                                    The node refuses one above the shard's
                                    replicas (SHOAL_EINVAL) */
} shoal_opts;                    /* zero numbers take the defaults */

SHOAL_API void shoal_opts_default(shoal_opts *o);

/* Open a handle: read the key file, connect to the seeds, fetch the cluster
 * map. The map is checked as hostile input (shard count a power of two with
 * an entry per shard, the 16-byte hash key, every primary and replica a
 * node of the map, node ids and addresses well formed and unique); a seed
 * whose map fails is not used (the reason goes to the logger; if no seed
 * gave a good map: SHOAL_EIO). SHOAL_EINVAL (no seeds, bad URL, key file and
 * insecure both or neither), SHOAL_EIO/SHOAL_EPERM/SHOAL_EINVAL for an
 * unreadable, too-open or malformed key file, SHOAL_EAUTH (the node refused the
 * key), SHOAL_EUNAVAILABLE (no seed answered in connect_timeout_ms),
 * SHOAL_ENOMEM, or the error a seed answered the map request with. Options out
 * of range are SHOAL_EINVAL too (more than 64 seeds, max_inflight over 1024,
 * max_frame_ops over 2^20, max_frame_bytes outside 4 KiB..1 GiB). Seeds are
 * asked at once; the first to answer serves the handle. On failure *out is
 * NULL. */
SHOAL_API shoal_err shoal_open(const shoal_opts *o, shoal **out);

/* Close the handle: calls in flight complete with SHOAL_ECLOSED (callbacks
 * run before this returns; blocking calls in other threads return), and
 * calls that start meanwhile get SHOAL_ECLOSED. The caller must make sure
 * no call starts after shoal_close returns, and must not call it from a
 * callback. NULL is a no-op. */
SHOAL_API void shoal_close(shoal *db);

/* Free memory that libshoal returned (NULL ok). */
SHOAL_API void shoal_free(void *p);

/* ---- per-call options ----------------------------------------------------
 */

typedef struct shoal_call {
    uint32_t timeout_ms; /* 0: the handle's default */
    uint32_t w;          /* write quorum of this call's writes (put, del,
                            incr, batch); 0: shoal_opts.write_quorum */
    bool read_any;       /* reads: any replica, possibly stale (false: the
                            handle's shoal_opts.read_any) */
} shoal_call;

typedef struct shoal_put_opts {
    uint64_t ttl_ms;     /* 0: never expires */
    bool if_absent;      /* else SHOAL_EEXISTS */
    bool has_if_version; /* only if the live version is if_version (absent
                            key: 0), else SHOAL_EVERSION */
    uint64_t if_version;
    uint32_t w; /* write quorum of this put; 0: shoal_call.w, else
                   shoal_opts.write_quorum, else the cluster's. In a batch
                   the largest w of its ops applies to the whole batch */
} shoal_put_opts;

/* ---- blocking calls ------------------------------------------------------
 * call may be NULL in each. Keys are 1..1024 bytes and values 0..16 MiB
 * unless the node says otherwise (SHOAL_EINVAL for an empty key,
 * SHOAL_ETOOLARGE over the limits; nothing is sent). Common errors:
 * SHOAL_ETIMEOUT, SHOAL_EUNAVAILABLE, SHOAL_EAUTH, SHOAL_EPERM (the key's
 * role or prefix does not allow it), SHOAL_ECLOSED, SHOAL_ENOMEM, and what
 * the node's engine says (SHOAL_ENOSPC, SHOAL_EREADONLY, SHOAL_EIO).
 */

/* *val_out (shoal_free) gets a copy of the value, *vlen_out its length;
 * version_out may be NULL. SHOAL_ENOTFOUND. */
SHOAL_API shoal_err shoal_get(shoal *db, const void *key, size_t klen,
                              void **val_out, size_t *vlen_out,
                              uint64_t *version_out, const shoal_call *call);

/* opts may be NULL; version_out (may be NULL) gets the new version.
 * SHOAL_EEXISTS, SHOAL_EVERSION. */
SHOAL_API shoal_err shoal_put(shoal *db, const void *key, size_t klen,
                              const void *val, size_t vlen,
                              const shoal_put_opts *opts, uint64_t *version_out,
                              const shoal_call *call);

/* if_version: only delete if the live version matches (NULL: always).
 * SHOAL_ENOTFOUND, SHOAL_EVERSION. */
SHOAL_API shoal_err shoal_del(shoal *db, const void *key, size_t klen,
                              const uint64_t *if_version,
                              const shoal_call *call);

/* Add delta to the decimal int64 value of key (absent: 0). SHOAL_ENOTNUM,
 * SHOAL_EOVERFLOW. */
SHOAL_API shoal_err shoal_incr(shoal *db, const void *key, size_t klen,
                               int64_t delta, int64_t *result_out,
                               uint64_t *version_out, const shoal_call *call);

/* Time to live in ms (-1: never expires). SHOAL_ENOTFOUND. */
SHOAL_API shoal_err shoal_ttl(shoal *db, const void *key, size_t klen,
                              int64_t *ttl_ms_out, uint64_t *version_out,
                              const shoal_call *call);

SHOAL_API shoal_err shoal_exists(shoal *db, const void *key, size_t klen,
                                 bool *exists_out, const shoal_call *call);

/* Live keys beginning with prefix (plen 0: all keys), summed over every
 * node's primary shards. */
SHOAL_API shoal_err shoal_count(shoal *db, const void *prefix, size_t plen,
                                uint64_t *count_out, const shoal_call *call);

/* ---- batches -------------------------------------------------------------
 */

typedef enum shoal_batch_kind {
    SHOAL_BATCH_PUT = 1,
    SHOAL_BATCH_DEL = 2,
} shoal_batch_kind;

typedef struct shoal_batch_op {
    shoal_batch_kind kind;
    const void *key;
    size_t klen;
    const void *val; /* put */
    size_t vlen;
    shoal_put_opts opts; /* put: all; del: has_if_version/if_version, w */
} shoal_batch_op;

/* Apply n ops: atomically when all keys are in one shard (one version for
 * all; version_out, may be NULL, is set only when every op went to one
 * node), otherwise atomically per shard. Ops are split by the primary node
 * of their shard, one request per node. results (n entries, may be NULL)
 * gets each op's status, in the caller's order: SHOAL_OK exactly when it
 * was applied. Returns SHOAL_OK when every op succeeded, else the status of
 * the first op (in op order) that did not; when a node's part fails as a
 * whole (deadline, no connection, permission) each of its ops gets that
 * status. Each key at most once (SHOAL_EINVAL, nothing sent; so are a bad
 * kind, key or value). n == 0 does nothing and returns SHOAL_OK. */
SHOAL_API shoal_err shoal_batch(shoal *db, const shoal_batch_op *ops, size_t n,
                                shoal_err *results, uint64_t *version_out,
                                const shoal_call *call);

/* ---- scans ---------------------------------------------------------------
 */

typedef struct shoal_scan_req {
    const void *prefix; /* keys beginning with prefix (NULL/0: any) */
    size_t plen;
    const void *start; /* from start, inclusive (NULL: from the first) */
    size_t start_len;
    const void *end; /* to end, exclusive (NULL: no bound) */
    size_t end_len;
    uint32_t limit; /* items per page, 0: 100; at most 10000 */
    bool keys_only;
    const void *token; /* continuation from the previous page (NULL: first) */
    size_t token_len;
} shoal_scan_req;

typedef struct shoal_item {
    const uint8_t *key;
    size_t klen;
    const uint8_t *val; /* NULL with keys_only */
    size_t vlen;
    uint64_t version;
    uint64_t expire_at; /* unix ms, 0: never */
} shoal_item;

typedef struct shoal_scan_page {
    shoal_item *items; /* sorted by key */
    size_t n_items;
    bool more;            /* call again with token to continue */
    const uint8_t *token; /* valid while the page lives: the last key of
                             the page (the next page starts after it) */
    size_t token_len;
} shoal_scan_page;

/* One page of a scan, merged across shards and nodes (each node is asked
 * for a page of its primary shards; the merge returns at most limit items
 * in key order and never skips a key a node has not yet returned); free it
 * with shoal_scan_page_free. SHOAL_EINVAL for a limit over 10000,
 * SHOAL_ETOOLARGE for a prefix, start or end over the key limit or a token over
 * 4096 bytes. The node may end a page early (it bounds a page's bytes); more
 * says whether to continue. */
SHOAL_API shoal_err shoal_scan(shoal *db, const shoal_scan_req *req,
                               shoal_scan_page **page_out,
                               const shoal_call *call);
SHOAL_API void shoal_scan_page_free(shoal_scan_page *page);

/* ---- node statistics -----------------------------------------------------
 */

typedef struct shoal_stats {
    char node_id[64];
    uint64_t keys;
    uint64_t bytes;
    uint64_t index_bytes;
    uint64_t wal_records;
    uint64_t wal_bytes;
    uint64_t wal_fsyncs;
    uint64_t wal_segments;
    uint64_t snapshots;
    uint64_t snapshot_ms_max;
    uint64_t expired;
    uint64_t uptime_ms;
    uint64_t requests;
    uint32_t n_shards;
    bool read_only;
} shoal_stats;

/* Statistics of the node that answered shoal_open (needs an admin key,
 * else SHOAL_EPERM). */
SHOAL_API shoal_err shoal_stats_get(shoal *db, shoal_stats *out,
                                    const shoal_call *call);

/* ---- the cluster, for tools ---------------------------------------------
 */

/* Epoch of the cluster map the handle routes by (0: NULL handle). */
SHOAL_API uint64_t shoal_map_epoch(shoal *db);

typedef struct shoal_cluster_node {
    const char *id;
    const char *addr;      /* client URL */
    const char *peer_addr; /* replication URL ("" when the map has none) */
    uint32_t weight;
    uint32_t state; /* 0: up */
} shoal_cluster_node;
typedef shoal_cluster_node shoal_node_info; /* the same, older name */

/* The nodes of the current map, in map order: *out holds *n_out entries
 * (the strings live in it); free it with shoal_cluster_nodes_free(*out,
 * *n_out). SHOAL_EINVAL, SHOAL_ENOMEM. */
SHOAL_API shoal_err shoal_cluster_nodes(shoal *db, shoal_cluster_node **out,
                                        size_t *n_out);
SHOAL_API void shoal_cluster_nodes_free(shoal_cluster_node *nodes,
                                        size_t n); /* NULL ok */

/* Send a ClusterStatusReq to the node with node_id (NULL: the node that
 * answered shoal_open) and return its ClusterStatusResp packed
 * (proto/shoal.proto; decode with protobuf-c): *pb_out (shoal_free),
 * *len_out bytes. Uses the handle's default deadline. SHOAL_ENOTFOUND (no
 * such node in the map), SHOAL_EPERM (the node wants an admin key), and
 * the errors of any call. */
SHOAL_API shoal_err shoal_cluster_status_node(shoal *db, const char *node_id,
                                              void **pb_out, size_t *len_out);

/* ---- asynchronous calls --------------------------------------------------
 */

typedef enum shoal_op_kind {
    SHOAL_OP_GET = 1,
    SHOAL_OP_PUT = 2,
    SHOAL_OP_DEL = 3,
    SHOAL_OP_INCR = 4,
    SHOAL_OP_TTL = 5,
    SHOAL_OP_EXISTS = 6,
} shoal_op_kind;

/* One asynchronous call. The caller owns it and its input buffers until the
 * callback has run; fill the inputs, leave the outputs. */
typedef struct shoal_op {
    /* inputs */
    shoal_op_kind kind;
    const void *key;
    size_t klen;
    const void *val; /* put */
    size_t vlen;
    int64_t delta;       /* incr */
    shoal_put_opts opts; /* put; del uses has_if_version/if_version; w:
                            put only (del and incr take call.w) */
    shoal_call call;     /* zero: defaults */

    /* outputs, valid in the callback */
    shoal_err status;
    const uint8_t *out_val; /* get: borrowed, valid during the callback */
    size_t out_vlen;
    uint64_t version;
    int64_t result; /* incr: new value; ttl: ttl_ms */
    bool exists;    /* exists */

    void *internal_; /* libshoal's; do not touch */
} shoal_op;

/* Runs once per submitted op on a libshoal thread; must be quick and must
 * not block on other calls of the handle. It may submit further ops. When
 * an op fails at once (the handle is closing, or memory ran out while
 * sending it) it may run on the thread that called shoal_submit, before
 * shoal_submit returns. */
typedef void (*shoal_done_fn)(shoal_op *op, void *arg);

/* Start op; done(op, arg) runs exactly once when it completes, unless this
 * returns an error, in which case done is never called (SHOAL_EINVAL,
 * SHOAL_ETOOLARGE for bad input, SHOAL_ECLOSED, SHOAL_ENOMEM). op->status
 * holds the result in the callback; the other outputs are set only on
 * SHOAL_OK. */
SHOAL_API shoal_err shoal_submit(shoal *db, shoal_op *op, shoal_done_fn done,
                                 void *arg);

#ifdef __cplusplus
}
#endif

#endif
