/*
 * client_int.h -- libshoal internals, shared by client*.c only (and by the
 * response fuzzer, tests/fuzz/fuzz_response.c).
 *
 * Pieces:
 *   client.c        the public API: open/close, argument checks, blocking
 *                   calls and shoal_submit, all built on cl_dispatch.
 *   client_conn.c   one cl_conn per node URL: an nng req0 socket with
 *                   max_inflight contexts, the queue of ops bound for that
 *                   node, frames out and back, retries with backoff, the
 *                   deadline sweeper thread, and the op pool.
 *   client_frame.c  pure encode/decode: RequestFrame packing, the
 *                   ResponseFrame decoder (cl_frame_decode) that gives every
 *                   op of a frame its verdict, and result extraction.
 *   client_route.c  pure cluster logic: map validation and copy, key ->
 *                   shard -> node, splitting work by node, merging scan
 *                   pages, batch statuses and counts (unit-tested).
 *   client_sched.c  routing at dispatch time, the node table (one conn per
 *                   node address, opened lazily), retries, the timer, the
 *                   map (adopt, refresh) and the op pool.
 *   client_multi.c  calls that span nodes (batch, scan, count): split by
 *                   node, one part per node, re-split what a node answers
 *                   EWRONGSHARD, merge.
 *
 * An op (cl_op) goes: submitted -> queued on its node's conn -> packed into
 * a frame with the other queued ops -> answered. Its verdict is a status and
 * a retry flag; a retry puts it on the handle's delayed list until its
 * backoff is over, then it is routed and queued again. Otherwise it is
 * finished: op->done runs exactly once, never under a libshoal lock.
 */
#ifndef SHOAL_CLIENT_CLIENT_INT_H
#define SHOAL_CLIENT_CLIENT_INT_H

#include "shoal.h"

#include "proto/keyhash.h"
#include "proto/pbuf.h"
#include "proto/shoal.pb-c.h"
#include "proto/wire.h"

#include <nng/nng.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* DESIGN §2 defaults; the node may enforce lower ones. */
#define CL_KEY_MAX        1024u
#define CL_VALUE_MAX      (16u << 20)
#define CL_SCAN_DEFAULT   100u
#define CL_SCAN_MAX       10000u
#define CL_TOKEN_MAX      4096u /* continuation tokens we accept */
#define CL_OP_OVERHEAD    48u   /* packed bytes of one request beside data */
#define CL_BACKOFF_MIN_MS 5u
#define CL_BACKOFF_MAX_MS 200u
#define CL_SWEEP_MS       50u
#define CL_NODE_ID_MAX    255u /* map strings we accept */
#define CL_NODE_ADDR_MAX  1024u
#define CL_MAP_NODES_MAX  4096u
#define CL_MAP_SHARDS_MAX 65536u /* DESIGN §3: a power of two up to this */
#define CL_MAP_R_MAX      16u    /* replicas per shard we accept */
#define CL_REDIRECT_MAX   8u     /* EWRONGSHARD retries of one call */

typedef enum cl_kind {
    CL_GET = SHOAL_OP_GET,
    CL_PUT = SHOAL_OP_PUT,
    CL_DEL = SHOAL_OP_DEL,
    CL_INCR = SHOAL_OP_INCR,
    CL_TTL = SHOAL_OP_TTL,
    CL_EXISTS = SHOAL_OP_EXISTS,
    CL_BATCH = 7, /* internal kinds: blocking calls only */
    CL_SCAN = 8,
    CL_COUNT = 9,
    CL_STATS = 10,
    CL_MAP = 11,
    CL_CSTATUS = 12, /* ClusterStatusReq, pinned to one node */
    CL_KIND_END
} cl_kind;

typedef struct cl_op cl_op;
typedef struct cl_conn cl_conn;

/* The cluster map as the client keeps it: one allocation (mem_free), the
 * strings, shards and replica lists inside it. Immutable once built, except
 * each node's conn, which the handle fills lazily (cl_node_conn). Only
 * shoal__map_from_pb builds one, so every map the handle holds is valid:
 * shard_count a power of two with one entry per shard, every primary and
 * replica a node index, the primary one of the replicas. */
typedef struct cl_map_node {
    const char *id;        /* unique, 1..CL_NODE_ID_MAX bytes */
    const char *addr;      /* client URL (tcp:// or ipc://), unique */
    const char *peer_addr; /* replication URL, may be "" */
    uint32_t weight;
    uint32_t state;
    cl_conn *_Atomic conn; /* NULL until first used (db's conns_mtx) */
} cl_map_node;

typedef struct cl_map_shard {
    uint32_t primary;         /* node index */
    uint32_t n_replicas;      /* 1..CL_MAP_R_MAX */
    const uint32_t *replicas; /* node indexes, distinct */
} cl_map_shard;

typedef struct cl_map {
    uint64_t epoch; /* >= 1 */
    uint32_t shard_count;
    uint32_t replicas;     /* R (advice) */
    uint32_t write_quorum; /* W, the cluster default (advice) */
    uint8_t hash_key[KEYHASH_KEY_BYTES];
    size_t n_nodes;
    cl_map_node *nodes;
    cl_map_shard *shards; /* shard_count, indexed by shard number */
} cl_map;

/* Final completion; runs exactly once per op, without libshoal locks. */
typedef void (*cl_done_fn)(cl_op *op);

struct cl_op {
    cl_op *next; /* queue / delayed list / pool link (owner's lock) */
    shoal *db;
    cl_kind kind;
    cl_conn *pin; /* send only to this conn (map, stats, parts of a
                     split call); NULL: routed by key at each attempt */
    shoal_op *u;  /* inputs (key, val, delta, opts, call) and the outputs
                     of kinds 1..6; count uses key as its prefix */
    union {
        struct {
            const shoal_batch_op *ops;
            size_t n;
        } batch;
        const shoal_scan_req *scan;
    } in;
    const uint32_t *shards; /* scan, count: ScanReq/CountReq.shards */
    size_t n_shards;
    uint64_t map_epoch; /* Request.map_epoch of this attempt (0: the
                           handle's at packing) */
    uint32_t w;         /* Request.write_quorum (0: cluster default) */
    bool read_any;      /* Request.read_mode = READ_ANY */
    bool part;          /* a part of a split call: EWRONGSHARD ends it (the
                           caller re-splits) instead of a retry */
    uint8_t redirects;  /* EWRONGSHARD retries so far */
    cl_done_fn done;
    void *arg;               /* done's */
    shoal_done_fn user_done; /* shoal_submit's */
    void *user_arg;
    uint64_t deadline_ns; /* clock_mono_ns() */
    uint64_t due_ns;      /* delayed: retry not before */
    uint32_t backoff_ms;  /* last backoff; 0 before the first retry */
    uint64_t id;          /* Request.id of the current attempt */
    size_t est_bytes;     /* packed size estimate */
    bool sent;            /* current attempt handed to a connection */
    bool ever_sent;       /* some attempt reached a connection */
    bool pooled;          /* from the handle's pool (shoal_submit) */
    bool retry;           /* verdict: try again within the deadline */
    bool answered;        /* decoding: a Response matched it */
    shoal_err st;         /* verdict status */
    union {
        struct {
            shoal_err *res; /* caller's array of in.batch.n, may be NULL */
            uint64_t version;
            bool got; /* per-op statuses came back */
        } batch;
        shoal_scan_page *page; /* scan: owned by the op until handed out */
        uint64_t count;
        shoal_stats *stats; /* caller's struct */
        cl_map *map;        /* map: owned by the op until adopted */
        struct {
            uint8_t *pb; /* cluster status: packed, mem_alloc'd */
            size_t len;
        } blob;
        struct {
            void *copy; /* blocking get: the value copied for the caller */
        } get;
    } out;
};

/* Per-kind behaviour (client_frame.c). */
typedef struct cl_kind_ops {
    const char *name;
    bool is_write; /* never retried once sent */
    /* Fill req's op (the request's common fields are already set);
     * allocations from a. SHOAL_ENOMEM. */
    shoal_err (*fill)(const cl_op *op, Shoal__Request *req, pbuf_arena *a);
    /* Take the results of a response whose status is OK (and, for batch,
     * also of failed ones). SHOAL_EIO when the response lacks what it must
     * carry, SHOAL_ENOMEM. */
    shoal_err (*extract)(cl_op *op, const Shoal__Response *r);
} cl_kind_ops;

extern const cl_kind_ops cl_kinds[CL_KIND_END];

/* Whether kind is a write (never retried after its frame was sent). */
bool cl_is_write(cl_kind kind);

/* Reset op's verdict and outputs before its first attempt. */
void cl_op_reset_outputs(cl_op *op);

/* ---- frames (client_frame.c) --------------------------------------------
 */

/* What one request frame needs to be packed. */
typedef struct cl_pack_in {
    cl_op *const *ops; /* in Request.id order once packed */
    size_t n;
    uint64_t first_id; /* ops[i] gets id first_id + i */
    uint64_t map_epoch;
    uint64_t now_ns;
} cl_pack_in;

/* Pack ops into a RequestFrame body in *buf (grown with mem_realloc; *cap
 * its size), *len_out bytes. Request structs come from arena (reset by the
 * caller). Sets each op's id. SHOAL_ENOMEM. */
shoal_err cl_frame_pack(const cl_pack_in *in, pbuf_arena *arena, uint8_t **buf,
                        size_t *cap, size_t *len_out);

/* Decode the answer (frame, len bytes; opened in place) to a request frame
 * of n ops sealed with nonce, and give every op its verdict (op->st,
 * op->retry) and, for answered ops, its outputs. key is the client key
 * (NULL: insecure). Outputs borrowed from the response (get values) live in
 * arena until it is reset. *new_map_out (may be NULL) gets a copy of the
 * newest map the frame carried (with EWRONGSHARD), caller frees;
 * *epoch_hint_out the highest map epoch a response named.
 *
 * Returns SHOAL_OK if the frame was believed. Otherwise nothing in it is
 * used: SHOAL_EAUTH (tag did not verify, or a key we do not use),
 * SHOAL_EINVAL (malformed header, body or flags, nonce mismatch), and the
 * ops get the verdict of a lost answer: reads retry, writes SHOAL_EIO
 * (they may have been applied). An error frame (WIRE_F_ERROR) returns
 * SHOAL_OK and gives its status to every op.
 *
 * Exported (a name in shoal_*) only so the fuzzer can reach it. */
SHOAL_API shoal_err shoal__frame_decode(const wire_key *key, uint8_t *frame,
                                        size_t len,
                                        const uint8_t nonce[WIRE_NONCE_BYTES],
                                        cl_op *const *ops, size_t n,
                                        pbuf_arena *arena, cl_map **new_map_out,
                                        uint64_t *epoch_hint_out);

/* Verdict for an op whose answer is lost (connection dropped, answer not
 * believed): reads retry with SHOAL_EUNAVAILABLE; a write that was sent
 * gets write_st (its outcome is unknown). */
void cl_verdict_lost(cl_op *op, shoal_err write_st);

/* Copy a wire map after shoal__map_from_pb's checks; a rejected map is
 * logged with the reason. SHOAL_EIO (malformed), SHOAL_ENOMEM. */
shoal_err cl_map_copy(const Shoal__ClusterMap *m, cl_map **out);

/* ---- pure cluster logic (client_route.c) ---------------------------------
 * Exported (shoal__*) only for tests/unit/test_client_route.c. */

/* Validate m as hostile input and copy it into one allocation (mem_free).
 * Checks: epoch >= 1; shard_count a power of two in 1..CL_MAP_SHARDS_MAX,
 * equal to the number of shard entries, each shard number once (entries
 * without a number take their position); hash_key exactly 16 bytes; 1..
 * CL_MAP_NODES_MAX nodes, ids 1..CL_NODE_ID_MAX printable bytes and
 * unique, addrs tcp://host:port or ipc://path (printable, at most
 * CL_NODE_ADDR_MAX, unique); per shard 1..CL_MAP_R_MAX distinct replicas,
 * all node indexes, the primary one of them. SHOAL_EIO with a one-line
 * reason in err (err_len > 0), SHOAL_ENOMEM. On failure *out is NULL. */
SHOAL_API shoal_err shoal__map_from_pb(const Shoal__ClusterMap *m, cl_map **out,
                                       char *err, size_t err_len);

/* Shard of key under m. */
uint32_t cl_map_shard_of(const cl_map *m, const void *key, size_t klen);

/* The node serving shard: its primary, or (any) replica (spin mod
 * n_replicas), which spreads reads when spin comes from a counter. */
uint32_t cl_map_node_of(const cl_map *m, uint32_t shard, bool any,
                        uint64_t spin);

/* Key -> shard (*shard_out, may be NULL) -> node index, as above. */
SHOAL_API uint32_t shoal__map_route(const cl_map *m, const void *key,
                                    size_t klen, bool any, uint64_t spin,
                                    uint32_t *shard_out);

/* Items grouped by node: group g holds the items idx[start[g] ..
 * start[g+1]) (ascending item order), all bound for node[g]. Groups come in
 * the order of their first item. One allocation (mem_free). */
typedef struct cl_split {
    size_t n_groups;
    uint32_t *node; /* n_groups */
    size_t *start;  /* n_groups + 1 */
    uint32_t *idx;  /* n_items: item indexes */
} cl_split;

/* Group n items by node_of[i] (each < n_nodes). SHOAL_ENOMEM,
 * SHOAL_EINVAL (a node index out of range). */
SHOAL_API shoal_err shoal__split(const uint32_t *node_of, size_t n,
                                 size_t n_nodes, cl_split **out);

/* The batch's overall status: the first non-OK entry in op order. */
SHOAL_API shoal_err shoal__batch_status(const shoal_err *res, size_t n);

/* Merge the pages of n parts (each sorted by key, disjoint key sets) into
 * one page of at most limit items (0: CL_SCAN_DEFAULT), one allocation
 * (shoal_scan_page_free). A part with more set may hold keys past its last
 * item, so no item beyond the smallest last key of such a part is taken.
 * more: some part has more or an item was left out; then token = the last
 * key returned (nodes take it as an exclusive start). Parts stay the
 * caller's. SHOAL_EIO (a part out of order, or more without items),
 * SHOAL_ENOMEM. */
SHOAL_API shoal_err shoal__scan_merge(const shoal_scan_page *const *parts,
                                      size_t n, uint32_t limit, bool keys_only,
                                      shoal_scan_page **out);

/* Sum of n counts; SHOAL_EIO on overflow (a node lied). */
SHOAL_API shoal_err shoal__count_sum(const uint64_t *counts, size_t n,
                                     uint64_t *out);

/* Status from the wire: values outside proto/err.h become SHOAL_EIO. */
shoal_err cl_status(int wire_status);

/* ---- connections (client_conn.c) -----------------------------------------
 */

typedef enum cl_ctx_state {
    CX_FREE = 0, /* on the free stack */
    CX_BUILD,    /* a thread packs ops[]: nobody else touches them */
    CX_SEND,     /* frame handed to nng, waiting for a connection */
    CX_RECV,     /* frame on a connection, waiting for the answer */
    CX_SETTLE,   /* answer being settled; ops[] already taken */
} cl_ctx_state;

typedef struct cl_ctx {
    cl_conn *c;
    nng_ctx ctx;
    nng_aio *aio;
    bool ctx_open;
    cl_ctx_state state; /* c->mtx */
    cl_op **ops;        /* c->mtx; NULL slots: expired by the sweeper */
    size_t n_ops;
    uint64_t deadline_ns; /* latest deadline of ops[] */
    uint8_t nonce[WIRE_NONCE_BYTES];
    pbuf_arena arena; /* request build, then response decode */
    uint8_t *scratch; /* packed RequestFrame body */
    size_t scratch_cap;
} cl_ctx;

struct cl_conn {
    shoal *db;
    char *url;
    nng_socket sock;
    bool sock_open;
    pthread_mutex_t mtx; /* guards everything below and ctxs' state/ops */
    pthread_cond_t cv;   /* close waits for senders */
    cl_op *qhead, *qtail;
    size_t qlen;
    cl_ctx *ctxs;
    unsigned n_ctx;
    unsigned *free_ctx; /* stack of free ctx indexes */
    unsigned n_free;
    unsigned senders; /* threads between taking a ctx and nng_ctx_send */
    unsigned pipes;   /* live connections */
    bool closed;
    cl_conn *list_next; /* db->conn_list link (set once, before publishing) */
};

/* Open a conn dialled (in the background) to url. SHOAL_EINVAL (bad URL),
 * SHOAL_ENOMEM, SHOAL_EUNAVAILABLE (nng refused to set up). */
shoal_err cl_conn_open(shoal *db, const char *url, cl_conn **out);

/* Stop taking ops, finish every op queued or in flight with SHOAL_ECLOSED
 * (or its answer if it is already in) and close the socket. Ops submitted
 * afterwards finish with SHOAL_ECLOSED at once. */
void cl_conn_shutdown(cl_conn *c);

/* Shut down (if not yet) and free. NULL ok. */
void cl_conn_close(cl_conn *c);

/* Queue op on c (flushing a frame when a context is free). If c is closed
 * the op finishes with SHOAL_ECLOSED. */
void cl_conn_submit(cl_conn *c, cl_op *op);

/* Whether c has a live connection to its node right now. */
bool cl_conn_up(cl_conn *c);

/* Ops of c past their deadline (queued or in flight) finish now. */
void cl_conn_sweep(cl_conn *c, uint64_t now_ns);

/* Ops queued or in flight on c. */
size_t cl_conn_pending(cl_conn *c);

/* ---- the handle ------------------------------------------------------------
 */

typedef struct cl_slab cl_slab;

struct shoal {
    shoal_opts o;        /* with defaults applied; seeds not kept */
    wire_keyring *kr;    /* NULL: insecure */
    const wire_key *key; /* first key of kr, or NULL */
    wire_sender snd;
    _Atomic uint64_t next_id;
    _Atomic uint64_t map_epoch;
    _Atomic bool closing;
    _Atomic unsigned users;         /* threads inside a public call */
    _Atomic uint64_t bad_frames;    /* answers not believed */
    _Atomic uint64_t bad_logged_ns; /* when one was last logged */
    _Atomic uint64_t map_hint;      /* highest epoch a refresh was asked for */
    pthread_mutex_t mtx;            /* guards everything below */
    pthread_cond_t cv;              /* the timer thread's wakeups */
    pthread_t timer;
    bool timer_running;
    bool timer_stop;
    uint64_t timer_wake_ns; /* when the timer thread wakes next */
    cl_op *delayed;         /* ops waiting out their backoff */
    bool map_refreshing;
    cl_conn **conns; /* one per seed, fixed from open to close */
    size_t n_conns;
    cl_conn *_Atomic home;      /* the seed that answered (set once at open) */
    _Atomic uint64_t spin;      /* read_any: spreads reads over replicas */
    pthread_rwlock_t map_lock;  /* guards map (readers route) */
    cl_map *map;                /* NULL until open has one */
    pthread_mutex_t conns_mtx;  /* opening conns; guards conns_closed */
    bool conns_closed;          /* close began: open no more conns */
    cl_conn *_Atomic conn_list; /* every conn (seeds and nodes), pushed at
                                   the head, never removed before close */
    pthread_mutex_t pool_mtx;
    cl_op *pool; /* free ops */
    cl_slab *slabs;
};

/* Route op to its node and queue it there. */
void cl_dispatch(shoal *db, cl_op *op);

/* The conn serving op's key under the current map (its shard's primary,
 * or any replica for read_any reads), setting op->map_epoch; NULL if there
 * is none (no map, closing, cannot open). */
cl_conn *cl_route(shoal *db, cl_op *op);

/* The conn of node index ni of m (the caller holds map_lock for reading
 * or owns m). Opened on first use; a one-node map's node is the seed that
 * answered open, a node whose addr is a seed URL is that seed's conn.
 * NULL when closing or the conn cannot be opened. */
cl_conn *cl_node_conn(shoal *db, cl_map *m, uint32_t ni);

/* Add c to the handle's conn list (the sweeper and close see it). */
void cl_conn_list_push(shoal *db, cl_conn *c);

/* Effective per-op settings: op->w, op->read_any from the call, the
 * put options and the handle's defaults (kind, u and in already set). */
void cl_op_settings(shoal *db, cl_op *op, const shoal_call *call);

/* Give every op its final status or queue it for a retry (backoff within
 * its deadline). ops[] may hold NULLs. */
void cl_settle(shoal *db, cl_op *const *ops, size_t n);

/* Finish op now with its verdict status. */
void cl_finish(cl_op *op);

/* Adopt m if it is newer than the handle's map (takes ownership). */
void cl_map_adopt(shoal *db, cl_map *m);

/* Ask node c (NULL: the home node) for its map, one request at a time. */
void cl_map_refresh(shoal *db, cl_conn *c);

/* ---- calls that span nodes (client_multi.c) ------------------------------
 * Blocking; op is the caller's filled op (kind, u, in, deadline, settings
 * done, inside enter/leave). They return the call's status and set the
 * op's outputs as a single-node call would. */
shoal_err cl_multi_batch(shoal *db, cl_op *op);
shoal_err cl_multi_scan(shoal *db, cl_op *op);
shoal_err cl_multi_count(shoal *db, cl_op *op);

/* Op pool for shoal_submit. */
cl_op *cl_pool_get(shoal *db);
void cl_pool_put(shoal *db, cl_op *op);
void cl_pool_fini(shoal *db); /* frees every op, pooled or not */

/* Start / stop the retry and deadline thread. */
shoal_err cl_timer_start(shoal *db);
void cl_timer_stop(shoal *db);

/* Log through the hook of shoal_set_logger. */
void cl_log(int level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Ops queued or in flight on the handle (for tests: "calls are in
 * flight"). Exported only for the tests. */
SHOAL_API size_t shoal__pending(shoal *db);

#endif
