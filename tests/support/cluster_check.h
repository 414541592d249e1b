/*
 * cluster_check.h -- checks for integration tests on a real cluster
 * (proc_cluster_*): raw sealed requests to one node, its map, per-shard
 * digests and replication status, waiting until every replica of every
 * shard holds the same LSN, comparing replicas' digests, and emulating a
 * power loss on a killed node's WAL.
 *
 * Every call opens its own connection (proc_sp_*) and seals with a fresh
 * wire_sender, so it can be used from any thread and after node restarts.
 * Memory returned here is malloc'd; free it with the named function.
 */
#ifndef SHOAL_TESTS_SUPPORT_CLUSTER_CHECK_H
#define SHOAL_TESTS_SUPPORT_CLUSTER_CHECK_H

#include "proto/err.h"
#include "proto/shoal.pb-c.h"
#include "proto/wire.h"
#include "tests/support/proc.h"

#include <nng/nng.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define CC_MAX_NODES PROC_CLUSTER_MAX
#define CC_MAX_R     8

/* Send one request (its id is set here) sealed with k to 127.0.0.1:port and
 * decode the answer. On SHOAL_OK out->frame holds exactly one response
 * (or out->is_error); release with proc_reply_fini. Transport errors as
 * proc_sp_*, SHOAL_EAUTH (answer does not open), SHOAL_EINVAL (malformed,
 * not one response). */
shoal_err cc_call(uint16_t port, const wire_key *k, Shoal__Request *req,
                  uint32_t timeout_ms, proc_reply *out);

/* The map as a node serves it, flattened. */
typedef struct cc_map {
    uint64_t epoch;
    uint32_t n_shards;
    uint32_t r, w;
    uint8_t hash_key[16];
    size_t n_nodes;
    char node_id[CC_MAX_NODES][64];
    char peer_addr[CC_MAX_NODES][256]; /* "" when the node did not say */
    uint32_t *primary;                 /* n_shards node indexes */
    uint32_t *replicas;                /* n_shards * CC_MAX_R */
    uint32_t *n_replicas;
} cc_map;

/* MapReq to the node at port. SHOAL_EINVAL if the map is malformed. */
shoal_err cc_map_get(uint16_t port, const wire_key *k, cc_map **out);
void cc_map_free(cc_map *m); /* NULL ok */

/* Shard of key under m. */
uint32_t cc_map_shard(const cc_map *m, const void *key, size_t klen);

/* Whether node index ni holds a replica of shard. */
bool cc_map_is_replica(const cc_map *m, uint32_t shard, uint32_t ni);

/* Per-shard digests of the node (StatsReq{digests}, needs an admin key):
 * digest[s] and keys[s] (both n_shards entries; keys may be NULL). A shard
 * the node does not list (empty) gets digest 0 and keys 0. The status the
 * node answered is returned when it is not SHOAL_OK. */
shoal_err cc_digests(uint16_t port, const wire_key *k, uint32_t n_shards,
                     uint64_t *digest, uint64_t *keys);

/* One node's replication status, flattened: per shard this node's LSN and
 * whether it is primary; for its primaries, each follower's acked LSN and
 * connection. has[s] false when the node does not hold shard s. */
typedef struct cc_status {
    uint32_t n_shards;
    bool *has;
    bool *primary;
    uint64_t *lsn;
    uint32_t *n_followers;
    uint64_t *f_acked; /* n_shards * CC_MAX_R */
    uint64_t *f_lag;
    bool *f_connected;
    uint64_t backlog_bytes;
} cc_status;

shoal_err cc_status_get(uint16_t port, const wire_key *k, uint32_t n_shards,
                        cc_status **out);
void cc_status_free(cc_status *s); /* NULL ok */

/* Wait up to timeout_ms until, over the running nodes of c, every shard's
 * replicas report the same LSN and its primary reports every follower
 * connected with lag 0. Polls every 100 ms. SHOAL_ETIMEOUT with a line on
 * what is still behind in why (may be NULL). Nodes that are not running
 * are left out (their shards are then compared among the rest). */
shoal_err cc_wait_synced(proc_cluster *c, const cc_map *m, uint32_t timeout_ms,
                         char *why, size_t why_len);

/* cc_wait_synced leaving out the shards whose primary is node index
 * skip_primary (SIZE_MAX: none). */
shoal_err cc_wait_synced_skip(proc_cluster *c, const cc_map *m,
                              size_t skip_primary, uint32_t timeout_ms,
                              char *why, size_t why_len);

/* Compare the digests of every shard on every running node holding it.
 * Returns the number of shards whose replicas differ (0: all equal); the
 * first few differences are printed to stderr. *n_keys_out (may be NULL)
 * gets the keys summed over shards as the first running replica of each
 * counts them. -1 when a node could not be asked. */
long cc_digests_compare(proc_cluster *c, const cc_map *m, uint64_t *n_keys_out);

/* cc_digests_compare leaving out the shards whose primary is node index
 * skip_primary (SIZE_MAX: none). */
long cc_digests_compare_skip(proc_cluster *c, const cc_map *m,
                             size_t skip_primary, uint64_t *n_keys_out);

/* Print to stderr the last max_lines lines of each node's log that contain
 * filter (NULL: every line), for failure reports. */
void cc_dump_logs(proc_cluster *c, const char *filter, size_t max_lines);

/* After cc_wait_synced failed with why: the log lines of the shard it
 * names ("shard N:"), else the last lines of every log. */
void cc_dump_why(proc_cluster *c, const char *why);

/* ---- power loss ------------------------------------------------------------
 *
 * A SIGKILLed process leaves its unsynced writes in the page cache, where a
 * real power cut would drop them. cc_wal_power_cut emulates the drop on a
 * killed node's data dir: in the newest WAL segment holding records
 * (storage/wal.h layout) it zeroes every byte from the durable point S to
 * the end of the file (segments are preallocated: dropped writes read back
 * as the zeros they replaced). Older segments end with a SEG_END that was
 * fsynced before the next segment was written, so they are left alone.
 *
 * S is the segment's durable frontier F (its header slots) or, when
 * synclog names a log of tests/integration/preload_synclog.c, the largest
 * end an fdatasync of that file is known to have covered, if larger. F
 * alone is a lower bound: a claim rides with the next batch, at most once
 * per WAL_CLAIM_NS, so the last synced batches lie beyond it -- cutting at
 * F drops acknowledged writes a power cut keeps.
 */
typedef struct cc_cut {
    char path[512];    /* segment cut ("" when no segment held records) */
    uint64_t seq;      /* its sequence number */
    uint64_t frontier; /* F from its slots (64: no claim) */
    uint64_t synced;   /* from the sync log (0: none known) */
    uint64_t cut_at;   /* where zeroing began: max(F, synced) */
    uint64_t data_end; /* end of the last whole record before cutting */
    uint64_t dropped;  /* record bytes in [cut_at, data_end) */
} cc_cut;

/* SHOAL_EIO (cannot read/write), SHOAL_ECORRUPT (bad segment header).
 * synclog may be NULL. */
/* nng_close(sock), but give up waiting after timeout_ms: nng 1.5.2 can
 * hang closing a socket whose peers are still connected (nanomsg/nng#1543,
 * seen closing the rogue's PULL socket in integration_cluster_rogue). The
 * close goes on in a detached thread; false when it timed out. */
bool cc_close_bounded(nng_socket sock, uint32_t timeout_ms);

shoal_err cc_wal_power_cut(const char *data_dir, const char *synclog,
                           cc_cut *out);

#endif
