/*
 * exec.h -- execute decoded client requests against the engine (DESIGN §2).
 *
 * Pure request logic, apart from the transport (srv.c) so it can be
 * unit-tested and fuzzed: given a decoded Shoal__Request and the caller's
 * key, check permissions and limits, run the operation on the store and fill
 * a Shoal__Response. Nothing here touches sockets or frames.
 *
 * Writes run with store_wopts.no_wait: exec_request returns once they are
 * applied, and the caller answers them after store_commit_notify on a commit
 * point taken after the whole frame (one wait for a frame of writes). A
 * commit failure turns the frame's write responses into SHOAL_EIO through
 * exec_commit_failed.
 *
 * Cluster (x->map set): a key op whose shard this node is not the primary
 * of -- or, for reads with read_mode READ_ANY, not a replica of -- is
 * SHOAL_EWRONGSHARD with the node's map in Response.new_map; so is a scan
 * or count listing such a shard. Scans and counts without shards cover the
 * shards this node serves. A write first checks its quorum
 * (Request.write_quorum, 0: the map's W; more than R is SHOAL_EINVAL) and
 * is refused with SHOAL_EUNAVAILABLE, before anything is applied, when
 * fewer than W copies are reachable (repl_admit); exec_result tells the
 * caller which shards to wait on (repl_wait) after the local commit.
 *
 * Permissions (wire.h roles): read for get/ttl/exists/scan/count/map,
 * write for put/del/incr/batch, admin for stats. A key with a prefix may
 * touch only keys inside it: scans and counts must be confined to it (their
 * prefix, or their [start, end) range, must lie inside; a scan's token
 * takes start's place when it lies at or after start), else SHOAL_EPERM.
 * caller == NULL means an --insecure node: everything is allowed.
 *
 * Scans and counts without shards cover every shard of the node, merged in
 * key order; the continuation token is the last key returned. An empty
 * prefix, start, end or token is the same as an absent one. A scan page
 * ends after `limit` items or once its keys and values reach
 * EXEC_SCAN_MAX_BYTES (it always holds at least one item when more exist).
 *
 * A put without a value stores an empty one; an incr without a delta adds
 * 0. A delete's WriteResp carries no version (the engine reports none).
 *
 * Batches: every op is checked (kind, key, value, ttl, prefix, duplicate
 * keys, total size) before any is applied. All keys in one shard: one
 * atomic store_batch, one version (BatchResp.version). Otherwise one atomic
 * store_batch per shard. BatchResp.statuses gives each op its own failure
 * code, or, when its condition held but another op of its shard's part
 * failed (so nothing of that part was applied), that part's code; so an
 * op's status is SHOAL_OK exactly when it was applied. Response.status is
 * the first non-OK status in op order, and the batch result is kept.
 */
#ifndef SHOAL_NODE_EXEC_H
#define SHOAL_NODE_EXEC_H

#include "cluster/cmap.h"
#include "cluster/repl.h"
#include "proto/err.h"
#include "proto/keyhash.h"
#include "proto/pbuf.h"
#include "proto/shoal.pb-c.h"
#include "proto/wire.h"
#include "storage/store.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define EXEC_SCAN_DEFAULT_LIMIT 100
#define EXEC_SCAN_MAX_LIMIT     10000
#define EXEC_SCAN_MAX_BYTES     (4u << 20) /* a scan page's keys + values */
#define EXEC_MAX_TTL_MS         (100ull * 366 * 24 * 3600 * 1000) /* 100 y */

/* Per node; read-only once requests flow. */
typedef struct exec_ctx {
    store *st;
    uint32_t n_shards;
    uint8_t hash_key[KEYHASH_KEY_BYTES];
    const char *node_id;
    const char *advertise_url; /* the client URL put in the map */
    uint64_t map_epoch;        /* single node: 1; else map->epoch */
    const cmap *map;           /* NULL: a single node, primary of every shard */
    int self;                  /* this node's index in map */
    repl *rp;                  /* NULL: no peers (single node, or R = 1) */
    size_t max_key_bytes;      /* as the store's */
    size_t max_value_bytes;
    size_t max_batch_ops;
    uint64_t start_ms;                /* clock_mono_ns()/1e6 at start */
    _Atomic uint64_t *requests_total; /* may be NULL; exec_request adds 1
                                         per request, stats reports it */
} exec_ctx;

/* What exec_request did. */
typedef struct exec_result {
    shoal_err status; /* as put in resp->status */
    bool wrote;       /* applied a write that still needs its commit */
    bool durable;     /* ... and it asked for fsync whatever the policy
                         (no request field asks for it yet: always false) */
    uint32_t w;       /* copies the write needs, this node's included;
                         <= 1: its local commit is enough */
    uint32_t *shards; /* shards it wrote (arena); n_shards of them */
    size_t n_shards;
} exec_result;

/* Execute req for caller (NULL: insecure, all allowed). resp must be
 * initialised (shoal__response__init); its id and map_epoch are set here,
 * and everything it points to is allocated from arena (valid until the
 * arena is reset). Never fails as a call: every error is a status in resp.
 * Unknown or empty ops are SHOAL_EINVAL; a ttl_ms over EXEC_MAX_TTL_MS is
 * SHOAL_EINVAL. */
void exec_request(const exec_ctx *x, const wire_key *caller,
                  const Shoal__Request *req, Shoal__Response *resp,
                  pbuf_arena *arena, exec_result *out);

/* The frame's writes were not committed (rc: SHOAL_EIO or SHOAL_ECLOSED):
 * turn resp's success into that error. Call for each response whose
 * exec_result.wrote was set. */
void exec_commit_failed(Shoal__Response *resp, shoal_err rc);

/* The node's cluster map into m (single node: one node, primary of every
 * shard),
 * allocated from arena. SHOAL_ENOMEM. */
shoal_err exec_map(const exec_ctx *x, Shoal__ClusterMap *m, pbuf_arena *arena);

/* The role op needs (wire.h), for permission checks and metrics. */
wire_role exec_required_role(Shoal__Request__OpCase op);

/* "get", "put", ... for metrics labels; "unknown" for others. */
const char *exec_op_name(Shoal__Request__OpCase op);

#endif
