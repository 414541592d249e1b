/*
 * repl.h -- the replication data plane (DESIGN §4): WAL shipping from each
 * shard's primary to its followers, durable acks, write quorums, catch-up.
 *
 * Transport: one nng PULL socket listening on this node's peer URL; one
 * PUSH socket dialled to every other node of the map. Every message is one
 * PeerMsg (peer.proto) sealed under the cluster key (a key of role peer,
 * frames flagged WIRE_F_PEER); a frame that does not open under a peer key
 * of our keyring, fails the replay window, or names a sender that is not a
 * node of the map is dropped and counted, never decoded further.
 *
 * Primary side: the engine's on_record hook (store.h) copies every record
 * into the backlog, an in-memory copy of the WAL tail bounded by
 * backlog_bytes (filled from the WAL at start-up by recovery, so a
 * restarted primary still serves recent records). One link thread per peer
 * ships, for every shard this node is primary of and the peer follows,
 * the records after the peer's next LSN, batched (up to ship_max_bytes per
 * message) and pipelined (up to window_bytes unacknowledged per peer; no
 * stop-and-wait). A peer's next LSN is learnt from its acks; a gap or an
 * ack that stops progressing rewinds it to the acked LSN + 1. When that
 * record is no longer in the backlog, the shard's snapshot is streamed
 * (store_snapshot_export, zlib) and shipping goes on from its LSN.
 * WAL segments holding records an in-sync follower still needs are kept
 * (store_set_retain_lsn) up to the store's wal_retain_bytes.
 *
 * Follower side: records are applied with store_apply strictly in LSN order
 * (duplicates ignored; a gap, an older shard_epoch or a bad record refused
 * and reported in the ack); after they are committed locally the follower
 * acks its durable LSN per shard, and repeats its acks every heartbeat as
 * a liveness signal. Snapshot chunks are installed with store_import_*.
 *
 * Quorum: repl_wait completes when, for each (shard, lsn, w), at least w
 * copies hold lsn durably -- this node's own copy counts as one (the caller
 * waits for its local commit first) -- or fails at its deadline with
 * SHOAL_ETIMEOUT. repl_admit refuses a write up front with
 * SHOAL_EUNAVAILABLE when fewer than w copies are reachable, and for
 * every w when a follower reported more of the shard than this primary
 * holds (the primary lost data: writing would reuse LSNs the follower
 * already has, so the shard stays read-only until repaired).
 */
#ifndef SHOAL_CLUSTER_REPL_H
#define SHOAL_CLUSTER_REPL_H

#include "cluster/cmap.h"
#include "proto/err.h"
#include "proto/pbuf.h"
#include "proto/shoal.pb-c.h"
#include "proto/wire.h"
#include "storage/store.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct repl repl;

typedef struct repl_opts {
    const cmap *map;           /* borrowed; outlives the repl */
    const char *self_id;       /* a node of map */
    const char *listen_url;    /* peer listener; NULL: map's peer_addr */
    const wire_keyring *keys;  /* peer keys accepted; NULL with insecure */
    const wire_key *peer_key;  /* our sealing key (role peer) */
    bool insecure;             /* plaintext peer frames (tests only) */
    uint64_t backlog_bytes;    /* default 64 MiB */
    uint32_t ship_max_bytes;   /* per message; default 1 MiB */
    uint64_t window_bytes;     /* unacked bytes per peer; default 16 MiB */
    uint32_t heartbeat_ms;     /* follower ack repeat; default 100 */
    uint32_t dead_ms;          /* peer unreachable after no ack; default 1500 */
    uint32_t replay_window_ms; /* default 300000 */
} repl_opts;

void repl_opts_default(repl_opts *o);

/* Create (no threads, no sockets yet): the engine's on_record hook can be
 * pointed at repl_on_record before store_open so recovery fills the
 * backlog. SHOAL_EINVAL (self not in map, no peer key), SHOAL_ENOMEM. */
shoal_err repl_create(const repl_opts *o, repl **out);

/* store_opts.on_record target (arg = the repl). */
void repl_on_record(void *arg, uint32_t shard, uint32_t shard_epoch,
                    uint64_t lsn, const uint8_t *payload, size_t len);

/* Bind the store, set the shard roles (followers, epochs) from the map,
 * listen, dial the peers and start the threads. SHOAL_EUNAVAILABLE (cannot
 * listen), SHOAL_ENOMEM. */
shoal_err repl_start(repl *r, store *st);

/* Stop threads and sockets and fail pending waits with SHOAL_ECLOSED
 * (their callbacks run here), but keep r usable: repl_admit/serve/status
 * still answer and repl_wait calls back at once with SHOAL_ECLOSED. A
 * server shuts replication down before it closes its listener, so no
 * callback reaches a closed server. NULL ok. */
void repl_shutdown(repl *r);

/* repl_shutdown if not done, then free (NULL ok). The store must outlive
 * this call. */
void repl_close(repl *r);

/* Whether a write to shard needing w copies can start: SHOAL_OK, or
 * SHOAL_EUNAVAILABLE when fewer than w - 1 of its followers are reachable
 * (acked within dead_ms) or the shard is behind a follower (see above). */
shoal_err repl_admit(repl *r, uint32_t shard, uint32_t w);

/* Whether this node may serve shard as its primary (reads through the
 * primary and writes): SHOAL_OK for shards it does not lead; otherwise
 * SHOAL_EUNAVAILABLE while it is behind a follower (it lost data; see
 * above) or not confirmed yet: after a start it first hears every
 * follower (or waits dead_ms + heartbeat_ms), so a node restarted without
 * its data never answers ENOTFOUND for a key its followers hold. */
shoal_err repl_serve(repl *r, uint32_t shard);

/* Whether the start-up confirmation is over (/health says "syncing" until
 * then). */
bool repl_ready(repl *r);

typedef struct repl_need {
    uint32_t shard;
    uint64_t lsn;
    uint32_t w; /* copies including this node's */
} repl_need;

typedef void (*repl_done_cb)(void *arg, shoal_err rc);

/* Call cb(arg, rc) exactly once when every need holds (SHOAL_OK), at
 * deadline_ms (clock_now_ms; SHOAL_ETIMEOUT), or at close (SHOAL_ECLOSED).
 * When every need already holds, cb runs before this returns. cb runs on a
 * repl thread otherwise and must be quick. SHOAL_ENOMEM (cb not called). */
shoal_err repl_wait(repl *r, const repl_need *needs, size_t n,
                    uint64_t deadline_ms, repl_done_cb cb, void *arg);

/* The ClusterStatusResp of this node, allocated from arena. */
shoal_err repl_status(repl *r, Shoal__ClusterStatusResp *out,
                      pbuf_arena *arena);

typedef struct repl_stats {
    uint64_t records_shipped;
    uint64_t bytes_shipped;
    uint64_t records_applied;
    uint64_t snapshots_sent;
    uint64_t snapshots_installed;
    uint64_t frames_refused; /* peer frames that did not open / bad sender */
    uint64_t backlog_bytes;
} repl_stats;

void repl_get_stats(repl *r, repl_stats *out);

#endif
