/*
 * repl.c -- WAL shipping, acks and quorums (see repl.h, DESIGN §4).
 *
 * State, all under r->mu unless noted:
 *   backlog   per shard a deque of records with contiguous LSNs (record x
 *             at index x - first_lsn), plus one FIFO through every record
 *             in append order, which is the eviction order. seq numbers
 *             the records in append order.
 *   commit    records are shipped only once this node committed them
 *             (committed_seq): a follower never holds a record its primary
 *             could lose in a crash, so a restarted primary never reuses an
 *             LSN a follower already applied. The service thread pumps
 *             store_commit_notify for the newest seq.
 *   peers     per remote node: as primary, next LSN to send and acked LSN
 *             per shard; as follower, our durable LSN and status per shard
 *             to report. One link thread per peer sends both.
 *   waiters   client writes waiting for their quorum.
 *
 * Lock order: the store's locks, then r->mu (on_record is called under a
 * shard lock and takes r->mu; nothing calls into the store with r->mu held
 * except store_set_retain_lsn/get_shard_stats, which take no shard write
 * lock... they take the shard's lock: so those are called without r->mu).
 */
#include "cluster/repl.h"

#include "proto/clock.h"
#include "proto/mem.h"
#include "proto/peer.pb-c.h"
#include "proto/slog.h"
#include "proto/thread.h"

#include <inttypes.h>
#include <nng/nng.h>
#include <nng/protocol/pipeline0/pull.h>
#include <nng/protocol/pipeline0/push.h>
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>
#include <time.h>

#define REPL_MAX_FRAME   ((size_t) 80 << 20) /* a 64 MiB record fits */
#define REPL_WINDOW_RECS 65536 /* unacked records per shard and peer */
#define REPL_REWIND_MS   2000  /* no ack progress this long: resend */
#define REPL_SNAP_MAX    ((uint64_t) 1 << 40)

typedef struct bl_rec {
    struct bl_rec *next; /* FIFO in append order */
    uint64_t seq;
    uint64_t lsn;
    uint32_t shard;
    uint32_t epoch;
    bool live; /* still in its shard's deque */
    uint32_t len;
    uint8_t payload[];
} bl_rec;

typedef struct bl_shard {
    bl_rec **v; /* ring of cap slots */
    size_t cap, head, n;
    uint64_t first_lsn; /* lsn of v[head] when n > 0 */
} bl_shard;

enum { LINK_STREAM = 0, LINK_CATCHUP = 1, LINK_SNAPSHOT = 2 };

typedef struct peer {
    repl *r;
    int idx; /* node index in the map */
    nng_socket push;
    bool push_open;
    pthread_t thr;
    bool thr_started;
    wire_sender sender;
    uint32_t *lead; /* shards we lead that it follows */
    size_t n_lead;
    size_t lead_pos;  /* where the next ship round starts (fairness) */
    uint32_t *follow; /* shards it leads that we follow */
    size_t n_follow;
    /* as primary, per shard (used where we are primary and it follows) */
    uint64_t *next;      /* next LSN to send; 0: unknown until its first ack */
    uint64_t *acked;     /* highest LSN it reported durable */
    uint64_t *prog_ms;   /* when acked last rose or we last sent */
    uint64_t *rewind_ms; /* when we last rewound on a reported gap */
    uint8_t *state;
    uint64_t last_ack_ms; /* any message from it */
    bool heard;           /* it acked since we started */
    uint64_t *repair_ms;  /* per shard it leads: when it last asked us to
                             repair it (we then ship to it from next[]) */
    /* as follower, per shard (where it is primary and we follow) */
    uint64_t *durable;
    uint32_t *status;
    bool ack_dirty;
    uint64_t last_hb_ms;
    store_import **imp; /* snapshot being received, per shard */
    uint64_t *imp_off;
} peer;

typedef struct waiter {
    struct waiter *prev, *next;
    repl_need *needs;
    size_t n;
    uint64_t deadline_ms;
    repl_done_cb cb;
    void *arg;
} waiter;

struct repl {
    repl_opts o;
    const cmap *map;
    int self;
    uint32_t n_shards;
    store *st;
    char *listen_url;

    pthread_mutex_t mu;
    pthread_cond_t cv;     /* link threads: work may be waiting */
    pthread_cond_t svc_cv; /* service thread: new records to pump */
    bool stopping;

    /* backlog */
    bl_shard *bl;
    uint64_t *last_lsn; /* per shard: highest LSN seen (hook or store) */
    bool *behind;     /* per shard led here: a follower holds more than we do */
    int *behind_from; /* ... the follower holding the most */
    uint64_t *behind_lsn; /* ... and how much it holds */
    bool *serving;        /* led shard's expiry is on (store follower flag
                             off); the service thread flips it */
    bool serve_dirty;     /* serving may need flips (ready, behind) */
    bool was_ready;
    uint64_t start_ms; /* repl_start: the confirmation grace starts */
    bool all_heard;    /* every follower of every led shard acked once */

    bl_rec *fifo_head, *fifo_tail;
    uint64_t bl_bytes;
    uint64_t seq; /* last seq handed out */
    uint64_t committed_seq;
    uint64_t pumped_seq; /* a commit notify covers records up to here */
    unsigned pumps_out;  /* commit notifies outstanding */
    unsigned acks_out;   /* applied_committed notifies outstanding */

    peer *peers; /* map->n_nodes entries; peers[self] unused */
    waiter *waiters;

    nng_socket pull;
    bool pull_open;
    pthread_t recv_thr, svc_thr;
    bool recv_started, svc_started;
    wire_replay *replay;
    pbuf_arena arena; /* the receive thread's decoded messages */

    _Atomic uint64_t records_shipped, bytes_shipped, records_applied;
    _Atomic uint64_t snapshots_sent, snapshots_installed, frames_refused;
};

void
repl_opts_default(repl_opts *o)
{
    memset(o, 0, sizeof(*o));
    o->backlog_bytes = (uint64_t) 64 << 20;
    o->ship_max_bytes = 256u << 10;
    o->window_bytes = (uint64_t) 16 << 20;
    o->heartbeat_ms = 100;
    o->dead_ms = 1500;
    o->replay_window_ms = 300000;
}

static bool
is_primary(const repl *r, uint32_t s)
{
    return r->map->shards[s].primary == (uint32_t) r->self;
}

/* Whether node p follows shard s (a replica that is not the primary). */
static bool
follows(const repl *r, uint32_t s, int p)
{
    return r->map->shards[s].primary != (uint32_t) p &&
           cmap_is_replica(r->map, s, (uint32_t) p);
}

/* Wait on cv (mu held) for at most ms milliseconds. */
static void
cond_wait_ms(pthread_cond_t *cv, pthread_mutex_t *mu, uint32_t ms)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += ms / 1000;
    ts.tv_nsec += (long) (ms % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    pthread_cond_timedwait(cv, mu, &ts);
}

/* ---- backlog ------------------------------------------------------------- */

static void
bl_drop_shard_locked(repl *r, uint32_t s)
{
    bl_shard *b = &r->bl[s];
    for (size_t i = 0; i < b->n; i++)
        b->v[(b->head + i) % b->cap]->live = false;
    b->n = 0;
    b->head = 0;
}

static bool
bl_push_locked(bl_shard *b, bl_rec *rec)
{
    if (b->n == b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 64;
        bl_rec **v = mem_alloc(cap * sizeof(*v));
        if (v == NULL)
            return false;
        for (size_t i = 0; i < b->n; i++)
            v[i] = b->v[(b->head + i) % b->cap];
        mem_free(b->v);
        b->v = v;
        b->cap = cap;
        b->head = 0;
    }
    if (b->n == 0)
        b->first_lsn = rec->lsn;
    b->v[(b->head + b->n) % b->cap] = rec;
    b->n++;
    return true;
}

static void
bl_evict_locked(repl *r)
{
    while (r->bl_bytes > r->o.backlog_bytes && r->fifo_head != NULL) {
        bl_rec *rec = r->fifo_head;
        r->fifo_head = rec->next;
        if (r->fifo_head == NULL)
            r->fifo_tail = NULL;
        if (rec->live) {
            bl_shard *b = &r->bl[rec->shard];
            /* FIFO order is append order: a live record is its deque's
             * front. */
            b->head = (b->head + 1) % b->cap;
            b->n--;
            b->first_lsn = rec->lsn + 1;
        }
        r->bl_bytes -= sizeof(*rec) + rec->len;
        mem_free(rec);
    }
}

/* Record with lsn of shard s, or NULL when not held. */
static const bl_rec *
bl_find_locked(const repl *r, uint32_t s, uint64_t lsn)
{
    const bl_shard *b = &r->bl[s];
    if (b->n == 0 || lsn < b->first_lsn || lsn - b->first_lsn >= b->n)
        return NULL;
    return b->v[(b->head + (lsn - b->first_lsn)) % b->cap];
}

static uint64_t
shard_lsn_hint(const repl *r, uint32_t s)
{
    return r->last_lsn[s];
}

static uint64_t
bl_last_lsn_locked(const repl *r, uint32_t s)
{
    const bl_shard *b = &r->bl[s];
    return b->n == 0 ? 0 : b->first_lsn + b->n - 1;
}

void
repl_on_record(void *arg, uint32_t shard, uint32_t shard_epoch, uint64_t lsn,
               const uint8_t *payload, size_t len)
{
    repl *r = arg;
    if (shard >= r->n_shards || r->map->r < 2 || len > UINT32_MAX)
        return;
    bl_rec *rec = mem_alloc(sizeof(*rec) + len);
    pthread_mutex_lock(&r->mu);
    if (lsn > r->last_lsn[shard])
        r->last_lsn[shard] = lsn;
    bl_shard *b = &r->bl[shard];
    if (b->n > 0 && lsn != b->first_lsn + b->n)
        bl_drop_shard_locked(r, shard); /* not contiguous: start again */
    if (rec == NULL) {
        bl_drop_shard_locked(r, shard); /* a hole: catch up by snapshot */
        pthread_mutex_unlock(&r->mu);
        return;
    }
    rec->next = NULL;
    rec->seq = ++r->seq;
    rec->lsn = lsn;
    rec->shard = shard;
    rec->epoch = shard_epoch;
    rec->len = (uint32_t) len;
    rec->live = true;
    memcpy(rec->payload, payload, len);
    if (!bl_push_locked(b, rec)) {
        bl_drop_shard_locked(r, shard);
        rec->live = false;
    }
    if (r->fifo_tail != NULL)
        r->fifo_tail->next = rec;
    else
        r->fifo_head = rec;
    r->fifo_tail = rec;
    r->bl_bytes += sizeof(*rec) + len;
    bl_evict_locked(r);
    /* Running (not recovery): the service thread pumps a commit notify;
     * while one is out, pump_done wakes it for the records after. */
    if (r->st != NULL && r->pumps_out == 0)
        pthread_cond_signal(&r->svc_cv);
    pthread_mutex_unlock(&r->mu);
}

/* ---- sending ------------------------------------------------------------- */

/* Pack m (from and map epoch filled in) into a fresh buffer; NULL on
 * ENOMEM. */
static uint8_t *
pack_msg(repl *r, Shoal__Peer__PeerMsg *m, size_t *len)
{
    m->from = r->map->nodes[r->self].id;
    m->has_map_epoch = true;
    m->map_epoch = r->map->epoch;
    *len = shoal__peer__peer_msg__get_packed_size(m);
    uint8_t *body = mem_alloc(*len ? *len : 1);
    if (body != NULL)
        shoal__peer__peer_msg__pack(m, body);
    return body;
}

/* Seal body and push it to peer p; frees body. Failures only lose the
 * message (the protocol resends after no progress). Never call with r->mu
 * held: a send may wait up to NNG_OPT_SENDTIMEO. */
static void
send_body(repl *r, peer *p, uint8_t *body, size_t blen)
{
    if (body == NULL)
        return;
    size_t flen = wire_frame_len(blen, !r->o.insecure);
    nng_msg *msg = NULL;
    if (nng_msg_alloc(&msg, flen) != 0) {
        mem_free(body);
        return;
    }
    size_t out_len = 0;
    shoal_err rc =
        wire_seal(&p->sender, r->o.insecure ? NULL : r->o.peer_key, WIRE_F_PEER,
                  body, blen, nng_msg_body(msg), flen, &out_len, NULL);
    mem_free(body);
    if (rc != SHOAL_OK) {
        nng_msg_free(msg);
        return;
    }
    nng_msg_realloc(msg, out_len);
    if (nng_sendmsg(p->push, msg, 0) != 0)
        nng_msg_free(msg);
}

static void
peer_send(repl *r, peer *p, Shoal__Peer__PeerMsg *m)
{
    size_t len = 0;
    uint8_t *body = pack_msg(r, m, &len);
    send_body(r, p, body, len);
}

/* As follower: our durable LSN and status of every shard p leads, into
 * fresh arrays (*acks_out, *ap_out; mem_free both). Marks the acks sent.
 * Called with r->mu held. Returns how many (0: none, or no memory). */
static size_t
fill_acks_locked(repl *r, peer *p, Shoal__Peer__ShardAck **acks_out,
                 Shoal__Peer__ShardAck ***ap_out)
{
    size_t n = p->n_follow;
    *acks_out = NULL;
    *ap_out = NULL;
    if (n == 0)
        return 0;
    Shoal__Peer__ShardAck *acks = mem_calloc(n, sizeof(*acks));
    Shoal__Peer__ShardAck **ap = mem_calloc(n, sizeof(*ap));
    if (acks == NULL || ap == NULL) {
        mem_free(acks);
        mem_free(ap);
        return 0;
    }
    for (size_t i = 0; i < n; i++) {
        uint32_t s = p->follow[i];
        shoal__peer__shard_ack__init(&acks[i]);
        acks[i].has_shard = acks[i].has_durable_lsn = acks[i].has_status = true;
        acks[i].shard = s;
        acks[i].durable_lsn = p->durable[s];
        acks[i].status = p->status[s];
        acks[i].has_shard_epoch = true;
        acks[i].shard_epoch = r->map->shards[s].shard_epoch;
        ap[i] = &acks[i];
    }
    p->ack_dirty = false;
    p->last_hb_ms = clock_now_ms();
    *acks_out = acks;
    *ap_out = ap;
    return n;
}

/* As a primary repairing shards from p: one request per such shard (our
 * LSN: ship us what follows). Same conventions as fill_acks_locked. */
static size_t
fill_repair_locked(repl *r, peer *p, Shoal__Peer__ShardAck **out,
                   Shoal__Peer__ShardAck ***ptrs)
{
    size_t n = 0;
    *out = NULL;
    *ptrs = NULL;
    for (size_t i = 0; i < p->n_lead; i++)
        if (r->behind[p->lead[i]] && r->behind_from[p->lead[i]] == p->idx)
            n++;
    if (n == 0)
        return 0;
    Shoal__Peer__ShardAck *v = mem_calloc(n, sizeof(*v));
    Shoal__Peer__ShardAck **vp = mem_calloc(n, sizeof(*vp));
    if (v == NULL || vp == NULL) {
        mem_free(v);
        mem_free(vp);
        return 0;
    }
    size_t k = 0;
    for (size_t i = 0; i < p->n_lead && k < n; i++) {
        uint32_t s = p->lead[i];
        if (!r->behind[s] || r->behind_from[s] != p->idx)
            continue;
        shoal__peer__shard_ack__init(&v[k]);
        v[k].has_shard = v[k].has_durable_lsn = true;
        v[k].shard = s;
        v[k].durable_lsn = r->last_lsn[s];
        vp[k] = &v[k];
        k++;
    }
    *out = v;
    *ptrs = vp;
    return k;
}

/* Send the acks alone (nothing to ship to p). r->mu held; sends without. */
static void
send_acks_locked(repl *r, peer *p)
{
    Shoal__Peer__ShardAck *acks, *rep;
    Shoal__Peer__ShardAck **ap, **rp;
    size_t k = fill_acks_locked(r, p, &acks, &ap);
    size_t nr = fill_repair_locked(r, p, &rep, &rp);
    if (k == 0 && nr == 0)
        return;
    pthread_mutex_unlock(&r->mu);
    Shoal__Peer__PeerMsg m = SHOAL__PEER__PEER_MSG__INIT;
    m.n_acks = k;
    m.acks = ap;
    m.n_repair = nr;
    m.repair = rp;
    peer_send(r, p, &m);
    mem_free(acks);
    mem_free(ap);
    mem_free(rep);
    mem_free(rp);
    pthread_mutex_lock(&r->mu);
}

typedef struct snap_send {
    repl *r;
    peer *p;
    uint32_t shard;
    uint64_t off;
    uint8_t *held; /* previous chunk, sent when the next arrives */
    size_t held_len;
} snap_send;

static void
snap_send_chunk(snap_send *ss, bool last, uint64_t lsn, uint32_t epoch)
{
    Shoal__Peer__SnapChunk c = SHOAL__PEER__SNAP_CHUNK__INIT;
    c.has_shard = c.has_offset = c.has_data = c.has_last = true;
    c.shard = ss->shard;
    c.offset = ss->off;
    c.data.data = ss->held;
    c.data.len = ss->held_len;
    c.last = last;
    if (last) {
        c.has_lsn = c.has_shard_epoch = true;
        c.lsn = lsn;
        c.shard_epoch = epoch;
    }
    Shoal__Peer__PeerMsg m = SHOAL__PEER__PEER_MSG__INIT;
    m.snap = &c;
    peer_send(ss->r, ss->p, &m);
    ss->off += ss->held_len;
    atomic_fetch_add(&ss->r->bytes_shipped, ss->held_len);
}

static shoal_err
snap_chunk_cb(void *arg, const uint8_t *data, size_t len)
{
    snap_send *ss = arg;
    if (ss->held != NULL)
        snap_send_chunk(ss, false, 0, 0);
    mem_free(ss->held);
    ss->held = mem_alloc(len ? len : 1);
    if (ss->held == NULL)
        return SHOAL_ENOMEM;
    memcpy(ss->held, data, len);
    ss->held_len = len;
    pthread_mutex_lock(&ss->r->mu);
    bool stop = ss->r->stopping;
    pthread_mutex_unlock(&ss->r->mu);
    return stop ? SHOAL_ECLOSED : SHOAL_OK;
}

/* Stream shard s's snapshot to p (r->mu not held). The LSN to go on from,
 * or 0 on failure. */
static uint64_t
send_snapshot(repl *r, peer *p, uint32_t s)
{
    snap_send ss = {.r = r, .p = p, .shard = s};
    uint64_t lsn = 0;
    uint32_t epoch = 0;
    slog(SLOG_NOTICE, "repl", "shard %" PRIu32 ": sending snapshot to %s", s,
         r->map->nodes[p->idx].id);
    shoal_err rc =
        store_snapshot_export(r->st, s, snap_chunk_cb, &ss, &lsn, &epoch);
    if (rc == SHOAL_OK && ss.held != NULL) {
        snap_send_chunk(&ss, true, lsn, epoch);
        atomic_fetch_add(&r->snapshots_sent, 1);
    } else {
        Shoal__Peer__SnapChunk c = SHOAL__PEER__SNAP_CHUNK__INIT;
        c.has_shard = c.has_abort = true;
        c.shard = s;
        c.abort = true;
        Shoal__Peer__PeerMsg m = SHOAL__PEER__PEER_MSG__INIT;
        m.snap = &c;
        peer_send(r, p, &m);
        slog(SLOG_WARN, "repl", "shard %" PRIu32 ": snapshot to %s: %s", s,
             r->map->nodes[p->idx].id, shoal_strerror(rc));
        lsn = 0;
    }
    mem_free(ss.held);
    return rc == SHOAL_OK ? lsn : 0;
}

/* As primary: ship what p is missing, batched; with_acks: our acks to p
 * ride along (one message instead of two). Called with r->mu held;
 * returns with it held. true when it sent records (and the acks). */
static bool
ship_locked(repl *r, peer *p, bool with_acks)
{
    size_t cap = 256, n = 0, bytes = 0;
    Shoal__Peer__Record *recs = NULL;
    Shoal__Peer__Record **rp = NULL;
    uint32_t snap_shard = UINT32_MAX;
    uint64_t now = clock_now_ms();
    /* Nothing for a peer that does not answer: nng would only queue it. */
    if (p->last_ack_ms == 0 || now - p->last_ack_ms >= r->o.dead_ms)
        return false;
    size_t start = p->n_lead ? p->lead_pos % p->n_lead : 0;
    p->lead_pos++;
    /* The shards we lead that p follows, then those p leads and asked us
     * to repair (it lost them): the same shipping serves both. */
    for (size_t i = 0; i < p->n_lead + p->n_follow; i++) {
        uint32_t s;
        if (i < p->n_lead) {
            s = p->lead[(start + i) % p->n_lead];
        } else {
            s = p->follow[i - p->n_lead];
            if (p->repair_ms[s] == 0 || now - p->repair_ms[s] > 1000)
                continue;
        }
        if (p->next[s] == 0)
            continue;
        if (p->next[s] <= p->acked[s]) /* it holds more than we sent */
            p->next[s] = p->acked[s] + 1;
        uint64_t last = bl_last_lsn_locked(r, s);
        if (p->next[s] <= shard_lsn_hint(r, s) &&
            (r->bl[s].n == 0 || p->next[s] < r->bl[s].first_lsn)) {
            /* Its next record is gone from the backlog: snapshot. */
            if (snap_shard == UINT32_MAX &&
                (p->state[s] != LINK_CATCHUP || now - p->prog_ms[s] >= 1000))
                snap_shard = s;
            continue;
        }
        while (p->next[s] <= last && bytes < r->o.ship_max_bytes &&
               p->next[s] - p->acked[s] <= REPL_WINDOW_RECS) {
            const bl_rec *rec = bl_find_locked(r, s, p->next[s]);
            if (rec == NULL)
                break;
            if (rec->seq > r->committed_seq)
                break; /* not committed here yet */
            if (recs == NULL || n == cap) {
                cap = recs == NULL ? cap : cap * 2;
                Shoal__Peer__Record *nr =
                    mem_realloc(recs, cap * sizeof(*recs));
                if (nr == NULL)
                    break;
                recs = nr;
            }
            shoal__peer__record__init(&recs[n]);
            recs[n].has_shard = recs[n].has_shard_epoch = true;
            recs[n].has_lsn = recs[n].has_payload = true;
            recs[n].shard = s;
            recs[n].shard_epoch = rec->epoch;
            recs[n].lsn = rec->lsn;
            recs[n].payload.data = (uint8_t *) rec->payload;
            recs[n].payload.len = rec->len;
            n++;
            bytes += rec->len + 32;
            p->next[s]++;
            p->prog_ms[s] = now;
        }
        if (bytes >= r->o.ship_max_bytes)
            break;
    }
    if (n > 0) {
        rp = mem_alloc(n * sizeof(*rp));
        uint8_t *body = NULL;
        size_t blen = 0;
        if (rp != NULL) {
            for (size_t i = 0; i < n; i++)
                rp[i] = &recs[i];
            Shoal__Peer__PeerMsg m = SHOAL__PEER__PEER_MSG__INIT;
            m.n_records = n;
            m.records = rp;
            Shoal__Peer__ShardAck *acks = NULL;
            Shoal__Peer__ShardAck **ap = NULL;
            Shoal__Peer__ShardAck *rep = NULL;
            Shoal__Peer__ShardAck **repp = NULL;
            if (with_acks) {
                m.n_acks = fill_acks_locked(r, p, &acks, &ap);
                m.n_repair = fill_repair_locked(r, p, &rep, &repp);
            }
            m.acks = ap;
            m.repair = repp;
            /* Packed under r->mu: the payloads live in the backlog. */
            body = pack_msg(r, &m, &blen);
            mem_free(acks);
            mem_free(ap);
            mem_free(rep);
            mem_free(repp);
        }
        mem_free(rp);
        mem_free(recs);
        if (body == NULL)
            return false;
        pthread_mutex_unlock(&r->mu);
        send_body(r, p, body, blen);
        atomic_fetch_add(&r->records_shipped, n);
        atomic_fetch_add(&r->bytes_shipped, bytes);
        pthread_mutex_lock(&r->mu);
        return true;
    }
    mem_free(recs);
    if (snap_shard != UINT32_MAX) {
        if (with_acks) /* a snapshot takes a while: heartbeat first */
            send_acks_locked(r, p);
        p->state[snap_shard] = LINK_SNAPSHOT;
        pthread_mutex_unlock(&r->mu);
        uint64_t lsn = send_snapshot(r, p, snap_shard);
        pthread_mutex_lock(&r->mu);
        p->state[snap_shard] = lsn > 0 ? LINK_STREAM : LINK_CATCHUP;
        if (lsn > 0 && lsn + 1 > p->next[snap_shard])
            p->next[snap_shard] = lsn + 1;
        p->prog_ms[snap_shard] = clock_now_ms();
        return true;
    }
    return false;
}

static void *
link_main(void *arg)
{
    thread_set_name("repl-link");
    peer *p = arg;
    repl *r = p->r;
    pthread_mutex_lock(&r->mu);
    while (!r->stopping) {
        uint64_t now = clock_now_ms();
        bool acks = p->ack_dirty || now - p->last_hb_ms >= r->o.heartbeat_ms;
        if (ship_locked(r, p, acks))
            continue;
        if (acks)
            send_acks_locked(r, p);
        if (r->stopping)
            break;
        cond_wait_ms(&r->cv, &r->mu, r->o.heartbeat_ms / 2);
    }
    pthread_mutex_unlock(&r->mu);
    return NULL;
}

/* ---- quorum waiters ------------------------------------------------------ */

static bool
need_holds_locked(const repl *r, const repl_need *nd)
{
    if (nd->w <= 1)
        return true;
    uint32_t copies = 1;
    const cmap_shard *sh = &r->map->shards[nd->shard];
    for (uint32_t k = 0; k < sh->n_replicas; k++) {
        uint32_t f = sh->replicas[k];
        if ((int) f != r->self && r->peers[f].acked[nd->shard] >= nd->lsn)
            copies++;
    }
    return copies >= nd->w;
}

static bool
waiter_holds_locked(const repl *r, const waiter *w)
{
    for (size_t i = 0; i < w->n; i++)
        if (!need_holds_locked(r, &w->needs[i]))
            return false;
    return true;
}

typedef struct done_list {
    waiter *head;
} done_list;

static void
waiter_unlink_locked(repl *r, waiter *w)
{
    if (w->prev != NULL)
        w->prev->next = w->next;
    else
        r->waiters = w->next;
    if (w->next != NULL)
        w->next->prev = w->prev;
}

/* Move finished waiters to dl (their rc in prev... kept simple: two
 * passes). */
static void
collect_waiters_locked(repl *r, uint64_t now, bool closing, done_list *ok,
                       done_list *late)
{
    waiter *w = r->waiters;
    while (w != NULL) {
        waiter *nx = w->next;
        bool holds = !closing && waiter_holds_locked(r, w);
        if (holds || closing || now >= w->deadline_ms) {
            waiter_unlink_locked(r, w);
            done_list *dl = holds ? ok : late;
            w->next = dl->head;
            dl->head = w;
        }
        w = nx;
    }
}

static void
finish_waiters(done_list *dl, shoal_err rc)
{
    waiter *w = dl->head;
    while (w != NULL) {
        waiter *nx = w->next;
        w->cb(w->arg, rc);
        mem_free(w->needs);
        mem_free(w);
        w = nx;
    }
    dl->head = NULL;
}

shoal_err
repl_wait(repl *r, const repl_need *needs, size_t n, uint64_t deadline_ms,
          repl_done_cb cb, void *arg)
{
    pthread_mutex_lock(&r->mu);
    bool holds = true, closing = r->stopping;
    for (size_t i = 0; i < n && holds; i++)
        holds = needs[i].shard < r->n_shards && need_holds_locked(r, &needs[i]);
    if (holds || closing) {
        pthread_mutex_unlock(&r->mu);
        cb(arg, holds ? SHOAL_OK : SHOAL_ECLOSED);
        return SHOAL_OK;
    }
    waiter *w = mem_calloc(1, sizeof(*w));
    repl_need *cp = mem_alloc(n * sizeof(*cp));
    if (w == NULL || cp == NULL) {
        pthread_mutex_unlock(&r->mu);
        mem_free(w);
        mem_free(cp);
        return SHOAL_ENOMEM;
    }
    memcpy(cp, needs, n * sizeof(*cp));
    w->needs = cp;
    w->n = n;
    w->deadline_ms = deadline_ms;
    w->cb = cb;
    w->arg = arg;
    w->next = r->waiters;
    if (r->waiters != NULL)
        r->waiters->prev = w;
    r->waiters = w;
    pthread_mutex_unlock(&r->mu);
    return SHOAL_OK;
}

bool
repl_ready(repl *r)
{
    pthread_mutex_lock(&r->mu);
    bool ready = r->all_heard || clock_now_ms() - r->start_ms >=
                                     r->o.dead_ms + r->o.heartbeat_ms;
    pthread_mutex_unlock(&r->mu);
    return ready;
}

shoal_err
repl_serve(repl *r, uint32_t shard)
{
    if (shard >= r->n_shards)
        return SHOAL_EINVAL;
    if (!is_primary(r, shard))
        return SHOAL_OK;
    pthread_mutex_lock(&r->mu);
    bool behind = r->behind[shard];
    pthread_mutex_unlock(&r->mu);
    if (behind || !repl_ready(r))
        return SHOAL_EUNAVAILABLE;
    return SHOAL_OK;
}

shoal_err
repl_admit(repl *r, uint32_t shard, uint32_t w)
{
    if (shard >= r->n_shards)
        return SHOAL_EINVAL;
    shoal_err rc = repl_serve(r, shard);
    if (rc != SHOAL_OK || w <= 1)
        return rc;
    uint64_t now = clock_now_ms();
    uint32_t copies = 1;
    pthread_mutex_lock(&r->mu);
    const cmap_shard *sh = &r->map->shards[shard];
    for (uint32_t k = 0; k < sh->n_replicas; k++) {
        uint32_t f = sh->replicas[k];
        if ((int) f != r->self && r->peers[f].last_ack_ms != 0 &&
            now - r->peers[f].last_ack_ms < r->o.dead_ms)
            copies++;
    }
    pthread_mutex_unlock(&r->mu);
    return copies >= w ? SHOAL_OK : SHOAL_EUNAVAILABLE;
}

/* ---- receiving ----------------------------------------------------------- */

typedef struct ack_job {
    repl *r;
    int peer;
    size_t n;
    uint32_t *shards;
    uint64_t *lsns;
} ack_job;

/* Engine (WAL writer thread): the records of a received message are
 * committed here: they may be reported durable. */
static void
applied_committed(void *arg, shoal_err rc)
{
    ack_job *aj = arg;
    repl *r = aj->r;
    pthread_mutex_lock(&r->mu);
    r->acks_out--;
    peer *p = &r->peers[aj->peer];
    if (rc == SHOAL_OK) {
        for (size_t i = 0; i < aj->n; i++)
            if (aj->lsns[i] > p->durable[aj->shards[i]])
                p->durable[aj->shards[i]] = aj->lsns[i];
    } else {
        for (size_t i = 0; i < aj->n; i++)
            p->status[aj->shards[i]] = (uint32_t) rc;
    }
    p->ack_dirty = true;
    pthread_cond_broadcast(&r->cv);
    pthread_mutex_unlock(&r->mu);
    mem_free(aj->shards);
    mem_free(aj->lsns);
    mem_free(aj);
}

/* A shard being repaired here holds what its follower held: serve it. */
static void
repaired_locked(repl *r, uint32_t s)
{
    if (!r->behind[s] || r->last_lsn[s] < r->behind_lsn[s])
        return;
    r->behind[s] = false;
    r->serve_dirty = true;
    slog(SLOG_NOTICE, "repl",
         "shard %" PRIu32 ": repaired from %s up to lsn %" PRIu64
         "; serving it again",
         s, r->map->nodes[r->behind_from[s]].id, r->last_lsn[s]);
    pthread_cond_signal(&r->svc_cv); /* expiry back on */
}

/* As follower: p (the primary) lost data of shards it asks us to repair:
 * ship them to it from what it holds (ship_locked's repair rounds). */
static void
on_repair(repl *r, int from, Shoal__Peer__PeerMsg *m)
{
    uint64_t now = clock_now_ms();
    peer *p = &r->peers[from];
    pthread_mutex_lock(&r->mu);
    for (size_t i = 0; i < m->n_repair; i++) {
        const Shoal__Peer__ShardAck *a = m->repair[i];
        if (!a->has_shard || a->shard >= r->n_shards)
            continue;
        uint32_t s = a->shard;
        if (r->map->shards[s].primary != (uint32_t) from ||
            !follows(r, s, r->self))
            continue;
        uint64_t d = a->durable_lsn;
        bool active = p->repair_ms[s] != 0 && now - p->repair_ms[s] <= 1000;
        if (!active)
            slog(SLOG_NOTICE, "repl",
                 "shard %" PRIu32 ": %s (its primary) holds lsn %" PRIu64
                 " and we hold %" PRIu64 ": repairing it",
                 s, r->map->nodes[from].id, d, r->last_lsn[s]);
        p->repair_ms[s] = now;
        p->acked[s] = d;
        if (!active || p->next[s] <= d ||
            (p->next[s] > d + 1 && now - p->prog_ms[s] > 500)) {
            p->next[s] = d + 1; /* start, or resend what went missing */
            p->prog_ms[s] = now;
        }
    }
    pthread_cond_broadcast(&r->cv);
    pthread_mutex_unlock(&r->mu);
}

static void
on_records(repl *r, int from, Shoal__Peer__PeerMsg *m)
{
    peer *p = &r->peers[from];
    ack_job *aj = mem_calloc(1, sizeof(*aj));
    uint32_t *shards = mem_alloc(m->n_records * sizeof(*shards));
    uint64_t *lsns = mem_alloc(m->n_records * sizeof(*lsns));
    if (aj == NULL || shards == NULL || lsns == NULL) {
        mem_free(aj);
        mem_free(shards);
        mem_free(lsns);
        return; /* lost: the primary resends after no progress */
    }
    size_t n = 0;
    uint32_t failed_shard = UINT32_MAX;
    for (size_t i = 0; i < m->n_records; i++) {
        const Shoal__Peer__Record *rec = m->records[i];
        if (!rec->has_shard || !rec->has_lsn || rec->shard >= r->n_shards ||
            rec->shard == failed_shard)
            continue;
        uint32_t s = rec->shard;
        shoal_err rc;
        pthread_mutex_lock(&r->mu);
        bool repairing =
            is_primary(r, s) && r->behind[s] && r->behind_from[s] == from;
        pthread_mutex_unlock(&r->mu);
        if (!repairing && (r->map->shards[s].primary != (uint32_t) from ||
                           !follows(r, s, r->self)))
            rc = SHOAL_EWRONGSHARD;
        else
            rc = store_apply(r->st, s, rec->shard_epoch, rec->lsn,
                             rec->payload.data, rec->payload.len, true, NULL);
        pthread_mutex_lock(&r->mu);
        if (rc == SHOAL_OK)
            repaired_locked(r, s);
        if (rc == SHOAL_OK) {
            p->status[s] = SHOAL_OK;
            atomic_fetch_add(&r->records_applied, 1);
            shards[n] = s;
            lsns[n] = rec->lsn;
            n++;
        } else {
            if (p->status[s] != (uint32_t) rc)
                p->ack_dirty = true;
            p->status[s] = (uint32_t) rc;
            failed_shard = s;
            pthread_cond_broadcast(&r->cv);
        }
        pthread_mutex_unlock(&r->mu);
    }
    pthread_mutex_lock(&r->mu);
    r->acks_out++; /* repl_close waits for it: the callback uses r */
    pthread_mutex_unlock(&r->mu);
    aj->r = r;
    aj->peer = from;
    aj->n = n;
    aj->shards = shards;
    aj->lsns = lsns;
    if (store_commit_notify(r->st, store_commit_point(r->st), false,
                            applied_committed, aj) != SHOAL_OK)
        applied_committed(
            aj, store_commit_wait(r->st, store_commit_point(r->st), false));
}

static void
on_acks(repl *r, int from, Shoal__Peer__PeerMsg *m)
{
    uint64_t now = clock_now_ms();
    peer *p = &r->peers[from];
    pthread_mutex_lock(&r->mu);
    /* Back after a silence (restart, partition): whatever we sent since
     * is suspect; go on from what it reports. */
    bool revived = p->last_ack_ms == 0 || now - p->last_ack_ms >= r->o.dead_ms;
    for (size_t i = 0; i < m->n_acks; i++) {
        const Shoal__Peer__ShardAck *a = m->acks[i];
        if (!a->has_shard || a->shard >= r->n_shards ||
            !is_primary(r, a->shard) || !follows(r, a->shard, from))
            continue;
        uint32_t s = a->shard;
        uint64_t d = a->durable_lsn;
        if (d > r->last_lsn[s] && d > r->behind_lsn[s]) {
            /* This primary lost records its follower holds (a lost or
             * replaced data dir): new writes would reuse their LSNs and
             * the copies would silently differ. Serve nothing of the
             * shard and repair it from the follower holding the most. */
            if (!r->behind[s])
                slog(SLOG_ERR, "repl",
                     "shard %" PRIu32 ": follower %s holds lsn %" PRIu64
                     " but this primary only %" PRIu64
                     ": not serving the shard; repairing it from %s",
                     s, r->map->nodes[from].id, d, r->last_lsn[s],
                     r->map->nodes[from].id);
            r->behind[s] = true;
            r->serve_dirty = true;
            r->behind_lsn[s] = d;
            r->behind_from[s] = from;
        }
        uint32_t st = a->has_status ? a->status : SHOAL_OK;
        if (d < p->acked[s]) {
            /* It holds less than it did (restarted without the records,
             * or a new empty replica): start again after d. Lowering
             * acked only makes quorum waits longer, never wrongly met. */
            p->next[s] = d + 1;
            p->prog_ms[s] = now;
        } else if (d > p->acked[s]) {
            p->prog_ms[s] = now;
        }
        p->acked[s] = d;
        if (p->next[s] == 0 || revived) {
            p->next[s] = d + 1;
            p->prog_ms[s] = now;
        } else if (st == SHOAL_EVERSION && p->next[s] > d + 1 &&
                   now - p->rewind_ms[s] >= 100) {
            /* It saw a gap: resend after d (once per 100 ms: the records
             * in flight behind the gap report it too). */
            p->next[s] = d + 1;
            p->prog_ms[s] = p->rewind_ms[s] = now;
        } else if (st == SHOAL_OK && p->next[s] > d + 1 &&
                   p->state[s] == LINK_STREAM &&
                   now - p->prog_ms[s] > REPL_REWIND_MS) {
            p->next[s] = d + 1; /* lost in transit: resend */
            p->prog_ms[s] = now;
        }
    }
    p->last_ack_ms = now;
    done_list ok = {NULL}, late = {NULL};
    collect_waiters_locked(r, 0, false, &ok, &late);
    pthread_cond_broadcast(&r->cv);
    pthread_mutex_unlock(&r->mu);
    finish_waiters(&ok, SHOAL_OK);
    finish_waiters(&late, SHOAL_ETIMEOUT);
}

static void
on_snap(repl *r, int from, const Shoal__Peer__SnapChunk *c)
{
    if (!c->has_shard || c->shard >= r->n_shards)
        return;
    uint32_t s = c->shard;
    peer *p = &r->peers[from];
    pthread_mutex_lock(&r->mu);
    bool repairing =
        is_primary(r, s) && r->behind[s] && r->behind_from[s] == from;
    pthread_mutex_unlock(&r->mu);
    if (!repairing && (r->map->shards[s].primary != (uint32_t) from ||
                       !follows(r, s, r->self)))
        return;
    shoal_err rc = SHOAL_OK;
    /* Only this thread touches imp/imp_off. */
    if (c->abort) {
        store_import_abort(p->imp[s]);
        p->imp[s] = NULL;
        return;
    }
    if (c->offset == 0) {
        store_import_abort(p->imp[s]);
        p->imp[s] = NULL;
        p->imp_off[s] = 0;
        rc = store_import_begin(r->st, s, REPL_SNAP_MAX, &p->imp[s]);
    } else if (p->imp[s] == NULL || c->offset != p->imp_off[s]) {
        rc = SHOAL_ECORRUPT; /* a chunk went missing */
    }
    if (rc == SHOAL_OK && c->has_data) {
        rc = store_import_write(p->imp[s], c->data.data, c->data.len);
        p->imp_off[s] += c->data.len;
    }
    uint64_t lsn = 0;
    if (rc == SHOAL_OK && c->last) {
        rc = store_import_finish(p->imp[s], &lsn);
        p->imp[s] = NULL;
        if (rc == SHOAL_OK) {
            atomic_fetch_add(&r->snapshots_installed, 1);
            slog(SLOG_NOTICE, "repl",
                 "shard %" PRIu32 ": installed snapshot at lsn %" PRIu64
                 " from %s",
                 s, lsn, r->map->nodes[from].id);
        }
    }
    pthread_mutex_lock(&r->mu);
    if (rc != SHOAL_OK) {
        store_import_abort(p->imp[s]);
        p->imp[s] = NULL;
        p->status[s] = (uint32_t) rc;
        p->ack_dirty = true;
        slog(SLOG_WARN, "repl", "shard %" PRIu32 ": snapshot from %s: %s", s,
             r->map->nodes[from].id, shoal_strerror(rc));
    } else if (c->last) {
        if (lsn > r->last_lsn[s])
            r->last_lsn[s] = lsn;
        repaired_locked(r, s);
        if (lsn > p->durable[s])
            p->durable[s] = lsn;
        p->status[s] = SHOAL_OK;
        p->ack_dirty = true;
    }
    pthread_cond_broadcast(&r->cv);
    pthread_mutex_unlock(&r->mu);
}

/* Open, check and dispatch one peer frame. */
static void
on_frame(repl *r, uint8_t *frame, size_t len)
{
    wire_hdr hdr;
    const uint8_t *body = NULL;
    size_t body_len = 0;
    if (wire_parse_hdr(frame, len, &hdr) != SHOAL_OK ||
        (hdr.flags & WIRE_F_PEER) == 0 ||
        (hdr.flags & (WIRE_F_RESPONSE | WIRE_F_ERROR)) != 0)
        goto refused;
    bool plain = (hdr.flags & WIRE_F_PLAIN) != 0;
    if (plain != r->o.insecure)
        goto refused;
    if (plain) {
        if (wire_open_plain(frame, len, &body, &body_len) != SHOAL_OK)
            goto refused;
    } else {
        const wire_key *k = wire_keyring_find(r->o.keys, hdr.key_id);
        if (k == NULL || k->role != WIRE_ROLE_PEER ||
            wire_open(k, frame, len, &body_len) != SHOAL_OK ||
            wire_replay_check(r->replay, &hdr, clock_now_ms()) != SHOAL_OK)
            goto refused;
        body = frame + WIRE_HDR_BYTES;
    }
    pbuf_arena_reset(&r->arena);
    Shoal__Peer__PeerMsg *m =
        shoal__peer__peer_msg__unpack(&r->arena.alloc, body_len, body);
    if (m == NULL)
        goto refused;
    int from = m->from != NULL ? cmap_node_index(r->map, m->from) : -1;
    if (from < 0 || from == r->self)
        goto refused;
    if (m->n_records > 0)
        on_records(r, from, m);
    if (m->n_acks > 0)
        on_acks(r, from, m);
    if (m->snap != NULL)
        on_snap(r, from, m->snap);
    if (m->n_repair > 0)
        on_repair(r, from, m);
    if (m->n_acks == 0) { /* any message says the peer is alive */
        pthread_mutex_lock(&r->mu);
        r->peers[from].last_ack_ms = clock_now_ms();
        pthread_mutex_unlock(&r->mu);
    }
    return;
refused:
    atomic_fetch_add(&r->frames_refused, 1);
}

static void *
recv_main(void *arg)
{
    thread_set_name("repl-recv");
    repl *r = arg;
    for (;;) {
        pthread_mutex_lock(&r->mu);
        bool stop = r->stopping;
        pthread_mutex_unlock(&r->mu);
        if (stop)
            break;
        nng_msg *msg = NULL;
        int rv = nng_recvmsg(r->pull, &msg, 0);
        if (rv == NNG_ETIMEDOUT)
            continue;
        if (rv != 0)
            break; /* closed */
        on_frame(r, nng_msg_body(msg), nng_msg_len(msg));
        nng_msg_free(msg);
    }
    return NULL;
}

/* ---- service thread: commit pump, deadlines, retention ------------------- */

typedef struct pump {
    repl *r;
    uint64_t seq;
} pump;

static void
pump_done(void *arg, shoal_err rc)
{
    pump *pp = arg;
    repl *r = pp->r;
    pthread_mutex_lock(&r->mu);
    if (rc == SHOAL_OK && pp->seq > r->committed_seq)
        r->committed_seq = pp->seq;
    r->pumps_out--;
    if (r->seq > r->pumped_seq)
        pthread_cond_signal(&r->svc_cv);
    pthread_cond_broadcast(&r->cv);
    pthread_mutex_unlock(&r->mu);
    mem_free(pp);
}

static void
update_retention(repl *r)
{
    for (uint32_t s = 0; s < r->n_shards; s++) {
        if (!is_primary(r, s))
            continue;
        uint64_t keep = UINT64_MAX;
        pthread_mutex_lock(&r->mu);
        const cmap_shard *sh = &r->map->shards[s];
        for (uint32_t k = 0; k < sh->n_replicas; k++) {
            uint32_t f = sh->replicas[k];
            if ((int) f != r->self && r->peers[f].acked[s] < keep)
                keep = r->peers[f].acked[s];
        }
        pthread_mutex_unlock(&r->mu);
        store_set_retain_lsn(r->st, s, keep);
    }
}

static void *
svc_main(void *arg)
{
    thread_set_name("repl-svc");
    repl *r = arg;
    uint64_t last_retain = 0;
    pthread_mutex_lock(&r->mu);
    while (!r->stopping) {
        if (r->seq > r->pumped_seq && r->pumps_out == 0) {
            pump *pp = mem_alloc(sizeof(*pp));
            if (pp != NULL) {
                pp->r = r;
                pp->seq = r->seq;
                r->pumped_seq = r->seq;
                r->pumps_out++;
                pthread_mutex_unlock(&r->mu);
                /* Every record up to pp->seq was appended to the WAL before
                 * it entered the backlog, so this point covers them. */
                uint64_t point = store_commit_point(r->st);
                if (store_commit_notify(r->st, point, false, pump_done, pp) !=
                    SHOAL_OK)
                    pump_done(pp, store_commit_wait(r->st, point, false));
                pthread_mutex_lock(&r->mu);
                continue;
            }
        }
        uint64_t now = clock_now_ms();
        done_list ok = {NULL}, late = {NULL};
        collect_waiters_locked(r, now, false, &ok, &late);
        if (ok.head != NULL || late.head != NULL) {
            pthread_mutex_unlock(&r->mu);
            finish_waiters(&ok, SHOAL_OK);
            finish_waiters(&late, SHOAL_ETIMEOUT);
            pthread_mutex_lock(&r->mu);
        }
        bool ready = r->all_heard ||
                     now - r->start_ms >= r->o.dead_ms + r->o.heartbeat_ms;
        if (ready != r->was_ready) {
            r->was_ready = ready;
            r->serve_dirty = true;
        }
        bool check = r->serve_dirty;
        r->serve_dirty = false;
        for (uint32_t sh = 0; check && sh < r->n_shards; sh++) {
            bool want = ready && is_primary(r, sh) && !r->behind[sh];
            if (want == r->serving[sh])
                continue;
            r->serving[sh] = want;
            pthread_mutex_unlock(&r->mu);
            store_set_follower(r->st, sh, !want);
            pthread_mutex_lock(&r->mu);
        }
        if (now - last_retain >= 1000) {
            last_retain = now;
            pthread_mutex_unlock(&r->mu);
            update_retention(r);
            pthread_mutex_lock(&r->mu);
        }
        cond_wait_ms(&r->svc_cv, &r->mu, 10);
    }
    pthread_mutex_unlock(&r->mu);
    return NULL;
}

/* ---- life cycle ---------------------------------------------------------- */

static void
peer_free(peer *p)
{
    mem_free(p->next);
    mem_free(p->acked);
    mem_free(p->prog_ms);
    mem_free(p->rewind_ms);
    mem_free(p->state);
    mem_free(p->durable);
    mem_free(p->status);
    if (p->imp != NULL)
        for (uint32_t s = 0; p->r != NULL && s < p->r->n_shards; s++)
            store_import_abort(p->imp[s]);
    mem_free(p->imp);
    mem_free(p->imp_off);
    mem_free(p->lead);
    mem_free(p->follow);
    mem_free(p->repair_ms);
}

shoal_err
repl_create(const repl_opts *o, repl **out)
{
    *out = NULL;
    if (o == NULL || o->map == NULL || o->self_id == NULL ||
        (!o->insecure && (o->keys == NULL || o->peer_key == NULL)) ||
        o->backlog_bytes == 0 || o->ship_max_bytes == 0 ||
        o->heartbeat_ms == 0 || o->dead_ms == 0)
        return SHOAL_EINVAL;
    int self = cmap_node_index(o->map, o->self_id);
    if (self < 0)
        return SHOAL_EINVAL;
    repl *r = mem_calloc(1, sizeof(*r));
    if (r == NULL)
        return SHOAL_ENOMEM;
    r->o = *o;
    r->map = o->map;
    r->self = self;
    r->n_shards = o->map->n_shards;
    pthread_mutex_init(&r->mu, NULL);
    pbuf_arena_init(&r->arena, 256u << 10);
    pthread_cond_init(&r->cv, NULL);
    pthread_cond_init(&r->svc_cv, NULL);
    size_t nn = o->map->n_nodes, ns = r->n_shards;
    r->bl = mem_calloc(ns, sizeof(*r->bl));
    r->last_lsn = mem_calloc(ns, sizeof(*r->last_lsn));
    r->behind = mem_calloc(ns, sizeof(*r->behind));
    r->behind_from = mem_calloc(ns, sizeof(*r->behind_from));
    r->behind_lsn = mem_calloc(ns, sizeof(*r->behind_lsn));
    r->serving = mem_calloc(ns, sizeof(*r->serving));
    r->peers = mem_calloc(nn, sizeof(*r->peers));
    const char *url =
        o->listen_url ? o->listen_url : o->map->nodes[self].peer_addr;
    r->listen_url = mem_alloc(strlen(url) + 1);
    bool ok = r->bl != NULL && r->last_lsn != NULL && r->behind != NULL &&
              r->behind_from != NULL && r->behind_lsn != NULL &&
              r->serving != NULL && r->peers != NULL && r->listen_url != NULL;
    if (ok)
        memcpy(r->listen_url, url, strlen(url) + 1);
    for (size_t i = 0; ok && i < nn; i++) {
        peer *p = &r->peers[i];
        p->r = r;
        p->idx = (int) i;
        wire_sender_init(&p->sender);
        p->next = mem_calloc(ns, sizeof(*p->next));
        p->acked = mem_calloc(ns, sizeof(*p->acked));
        p->prog_ms = mem_calloc(ns, sizeof(*p->prog_ms));
        p->rewind_ms = mem_calloc(ns, sizeof(*p->rewind_ms));
        p->state = mem_calloc(ns, sizeof(*p->state));
        p->durable = mem_calloc(ns, sizeof(*p->durable));
        p->status = mem_calloc(ns, sizeof(*p->status));
        p->imp = mem_calloc(ns, sizeof(*p->imp));
        p->imp_off = mem_calloc(ns, sizeof(*p->imp_off));
        p->repair_ms = mem_calloc(ns, sizeof(*p->repair_ms));
        p->lead = mem_calloc(ns, sizeof(*p->lead));
        p->follow = mem_calloc(ns, sizeof(*p->follow));
        for (uint32_t sh = 0; p->lead && p->follow && sh < ns; sh++) {
            const cmap_shard *ms = &o->map->shards[sh];
            bool p_rep = cmap_is_replica(o->map, sh, (uint32_t) i);
            bool me_rep = cmap_is_replica(o->map, sh, (uint32_t) self);
            if ((int) i == self)
                continue;
            if (ms->primary == (uint32_t) self && p_rep)
                p->lead[p->n_lead++] = sh;
            if (ms->primary == (uint32_t) i && me_rep)
                p->follow[p->n_follow++] = sh;
        }
        ok = p->repair_ms && p->lead && p->follow && p->next && p->acked &&
             p->prog_ms && p->rewind_ms && p->state && p->durable &&
             p->status && p->imp && p->imp_off;
    }
    if (ok && !o->insecure &&
        wire_replay_open(4096, o->replay_window_ms, &r->replay) != SHOAL_OK)
        ok = false;
    if (!ok) {
        repl_close(r);
        return SHOAL_ENOMEM;
    }
    *out = r;
    return SHOAL_OK;
}

static shoal_err
open_sockets(repl *r)
{
    int rv;
    if ((rv = nng_pull0_open(&r->pull)) != 0)
        return SHOAL_ENOMEM;
    r->pull_open = true;
    nng_socket_set_size(r->pull, NNG_OPT_RECVMAXSZ, REPL_MAX_FRAME);
    nng_socket_set_ms(r->pull, NNG_OPT_RECVTIMEO, 200);
    if ((rv = nng_listen(r->pull, r->listen_url, NULL, 0)) != 0) {
        slog(SLOG_ERR, "repl", "cannot listen on %s: %s", r->listen_url,
             nng_strerror(rv));
        return SHOAL_EUNAVAILABLE;
    }
    for (size_t i = 0; i < r->map->n_nodes; i++) {
        if ((int) i == r->self)
            continue;
        peer *p = &r->peers[i];
        if (nng_push0_open(&p->push) != 0)
            return SHOAL_ENOMEM;
        p->push_open = true;
        nng_socket_set_int(p->push, NNG_OPT_SENDBUF, 256);
        nng_socket_set_ms(p->push, NNG_OPT_SENDTIMEO, 1000);
        nng_socket_set_ms(p->push, NNG_OPT_RECONNMINT, 50);
        nng_socket_set_ms(p->push, NNG_OPT_RECONNMAXT, 1000);
        rv = nng_dial(p->push, r->map->nodes[i].peer_addr, NULL,
                      NNG_FLAG_NONBLOCK);
        if (rv != 0) {
            slog(SLOG_ERR, "repl", "cannot dial %s: %s",
                 r->map->nodes[i].peer_addr, nng_strerror(rv));
            return SHOAL_EINVAL;
        }
    }
    return SHOAL_OK;
}

shoal_err
repl_start(repl *r, store *st)
{
    shoal_err rc;
    for (uint32_t s = 0; s < r->n_shards; s++) {
        const cmap_shard *sh = &r->map->shards[s];
        if (!cmap_is_replica(r->map, s, (uint32_t) r->self))
            continue;
        store_set_shard_epoch(st, s, sh->shard_epoch);
        /* Led shards too, until serving: no active expiry (it writes)
         * before the shard is confirmed (svc_main flips it). */
        store_set_follower(st, s, true);
        store_shard_stats ss;
        if (store_get_shard_stats(st, s, &ss) != SHOAL_OK)
            continue;
        pthread_mutex_lock(&r->mu);
        if (ss.lsn > r->last_lsn[s])
            r->last_lsn[s] = ss.lsn;
        if (!is_primary(r, s))
            r->peers[sh->primary].durable[s] = ss.lsn;
        pthread_mutex_unlock(&r->mu);
    }
    if ((rc = open_sockets(r)) != SHOAL_OK)
        return rc;
    pthread_mutex_lock(&r->mu);
    r->st = st;
    r->start_ms = clock_now_ms();
    r->all_heard = true;
    for (size_t i = 0; i < r->map->n_nodes; i++)
        if ((int) i != r->self && r->peers[i].n_lead > 0)
            r->all_heard = false;
    pthread_mutex_unlock(&r->mu);
    if (pthread_create(&r->recv_thr, NULL, recv_main, r) != 0)
        return SHOAL_ENOMEM;
    r->recv_started = true;
    if (pthread_create(&r->svc_thr, NULL, svc_main, r) != 0)
        return SHOAL_ENOMEM;
    r->svc_started = true;
    for (size_t i = 0; i < r->map->n_nodes; i++) {
        if ((int) i == r->self)
            continue;
        if (pthread_create(&r->peers[i].thr, NULL, link_main, &r->peers[i]) !=
            0)
            return SHOAL_ENOMEM;
        r->peers[i].thr_started = true;
    }
    slog(SLOG_NOTICE, "repl",
         "replication on %s: %zu peers, R=%" PRIu32 " W=%" PRIu32,
         r->listen_url, r->map->n_nodes - 1, r->map->r, r->map->w);
    return SHOAL_OK;
}

void
repl_shutdown(repl *r)
{
    if (r == NULL)
        return;
    pthread_mutex_lock(&r->mu);
    r->stopping = true;
    pthread_cond_broadcast(&r->cv);
    pthread_cond_signal(&r->svc_cv);
    done_list ok = {NULL}, late = {NULL};
    collect_waiters_locked(r, 0, true, &ok, &late);
    pthread_mutex_unlock(&r->mu);
    finish_waiters(&late, SHOAL_ECLOSED);
    if (r->svc_started)
        pthread_join(r->svc_thr, NULL);
    r->svc_started = false;
    for (size_t i = 0; r->peers != NULL && i < r->map->n_nodes; i++) {
        peer *p = &r->peers[i];
        if (p->push_open)
            nng_close(p->push); /* unblocks a send in progress */
        p->push_open = false;
        if (p->thr_started)
            pthread_join(p->thr, NULL);
        p->thr_started = false;
    }
    if (r->pull_open)
        nng_close(r->pull);
    r->pull_open = false;
    if (r->recv_started)
        pthread_join(r->recv_thr, NULL);
    r->recv_started = false;
    /* Commit notifies (pumps, follower acks) may still be outstanding on
     * the store, and their callbacks use r: wait for them here (the
     * caller closes the store only after us). */
    pthread_mutex_lock(&r->mu);
    while (r->pumps_out > 0 || r->acks_out > 0) {
        pthread_mutex_unlock(&r->mu);
        if (r->st != NULL)
            store_commit_wait(r->st, store_commit_point(r->st), false);
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
        pthread_mutex_lock(&r->mu);
    }
    pthread_mutex_unlock(&r->mu);
}

void
repl_close(repl *r)
{
    if (r == NULL)
        return;
    repl_shutdown(r);
    for (size_t i = 0; r->peers != NULL && i < r->map->n_nodes; i++)
        peer_free(&r->peers[i]);
    mem_free(r->peers);
    while (r->fifo_head != NULL) {
        bl_rec *nx = r->fifo_head->next;
        mem_free(r->fifo_head);
        r->fifo_head = nx;
    }
    for (uint32_t s = 0; r->bl != NULL && s < r->n_shards; s++)
        mem_free(r->bl[s].v);
    mem_free(r->bl);
    mem_free(r->last_lsn);
    mem_free(r->behind);
    mem_free(r->behind_from);
    mem_free(r->behind_lsn);
    mem_free(r->serving);
    wire_replay_close(r->replay);
    pbuf_arena_fini(&r->arena);
    mem_free(r->listen_url);
    pthread_cond_destroy(&r->cv);
    pthread_cond_destroy(&r->svc_cv);
    pthread_mutex_destroy(&r->mu);
    mem_free(r);
}

/* ---- status -------------------------------------------------------------- */

shoal_err
repl_status(repl *r, Shoal__ClusterStatusResp *out, pbuf_arena *arena)
{
    uint64_t now = clock_now_ms();
    size_t n = 0;
    for (uint32_t s = 0; s < r->n_shards; s++)
        if (cmap_is_replica(r->map, s, (uint32_t) r->self))
            n++;
    out->node_id = r->map->nodes[r->self].id;
    out->has_map_epoch = true;
    out->map_epoch = r->map->epoch;
    out->shards = pbuf_arena_alloc(arena, (n ? n : 1) * sizeof(*out->shards));
    if (out->shards == NULL)
        return SHOAL_ENOMEM;
    out->n_shards = 0;
    for (uint32_t s = 0; s < r->n_shards; s++) {
        if (!cmap_is_replica(r->map, s, (uint32_t) r->self))
            continue;
        const cmap_shard *sh = &r->map->shards[s];
        Shoal__ShardStatus *ss = pbuf_arena_alloc(arena, sizeof(*ss));
        if (ss == NULL)
            return SHOAL_ENOMEM;
        shoal__shard_status__init(ss);
        store_shard_stats st;
        if (store_get_shard_stats(r->st, s, &st) != SHOAL_OK)
            memset(&st, 0, sizeof(st));
        ss->has_shard = ss->has_primary = ss->has_lsn = true;
        ss->has_shard_epoch = true;
        ss->shard = s;
        ss->primary = is_primary(r, s);
        ss->lsn = st.lsn;
        ss->shard_epoch = st.epoch;
        if (ss->primary) {
            ss->followers = pbuf_arena_alloc(arena, sh->n_replicas *
                                                        sizeof(*ss->followers));
            if (ss->followers == NULL)
                return SHOAL_ENOMEM;
            pthread_mutex_lock(&r->mu);
            for (uint32_t k = 0; k < sh->n_replicas; k++) {
                uint32_t f = sh->replicas[k];
                if ((int) f == r->self)
                    continue;
                Shoal__FollowerStatus *fst =
                    pbuf_arena_alloc(arena, sizeof(*fst));
                if (fst == NULL) {
                    pthread_mutex_unlock(&r->mu);
                    return SHOAL_ENOMEM;
                }
                shoal__follower_status__init(fst);
                const peer *p = &r->peers[f];
                fst->node_id = r->map->nodes[f].id;
                fst->has_acked_lsn = fst->has_lag = true;
                fst->has_connected = fst->has_state = true;
                fst->acked_lsn = p->acked[s];
                fst->lag = st.lsn > p->acked[s] ? st.lsn - p->acked[s] : 0;
                fst->connected =
                    p->last_ack_ms != 0 && now - p->last_ack_ms < r->o.dead_ms;
                fst->state = p->state[s];
                ss->followers[ss->n_followers++] = fst;
            }
            pthread_mutex_unlock(&r->mu);
        }
        out->shards[out->n_shards++] = ss;
    }
    pthread_mutex_lock(&r->mu);
    out->has_backlog_bytes = true;
    out->backlog_bytes = r->bl_bytes;
    pthread_mutex_unlock(&r->mu);
    return SHOAL_OK;
}

void
repl_get_stats(repl *r, repl_stats *out)
{
    memset(out, 0, sizeof(*out));
    out->records_shipped = atomic_load(&r->records_shipped);
    out->bytes_shipped = atomic_load(&r->bytes_shipped);
    out->records_applied = atomic_load(&r->records_applied);
    out->snapshots_sent = atomic_load(&r->snapshots_sent);
    out->snapshots_installed = atomic_load(&r->snapshots_installed);
    out->frames_refused = atomic_load(&r->frames_refused);
    pthread_mutex_lock(&r->mu);
    out->backlog_bytes = r->bl_bytes;
    pthread_mutex_unlock(&r->mu);
}
