/*
 * srv.c -- the client listener of shoald (see srv.h, DESIGN §8).
 *
 * One job per nng context. A job owns its context, two aios (receive and
 * send, so cancelling a receive at drain can never hit a send), the nng
 * message being served (opened in place, then reused for the answer) and a
 * protobuf arena holding the decoded request and the responses until the
 * answer is packed. A job is owned by exactly one party at a time, handed
 * over through s->mu or the commit_phase atomic:
 *
 *   RECV --recv_cb--> WORK --worker--> (no writes) ------------+
 *     ^                  |                                     |
 *     |                  +--> COMMIT --commit_cb--> FINISH --worker
 *     |                                                        |
 *     +---- send_cb (not draining) <------- SEND <-------------+
 *   RECV/SEND --(error, draining or closed)--> IDLE (never re-armed)
 *
 * nng callbacks (recv_cb, send_cb) and the engine's commit callback run on
 * threads that must not block: they only move the job onto the worker
 * queue or re-arm the receive. Workers open, check, decode, execute, seal
 * and send. No lock is held while a request executes.
 *
 * Refused frames (bad header, unknown key, bad tag, replay, plaintext
 * mismatch) never reach the decoder; they are answered with a plaintext
 * error frame (wire.h) and counted. The answer to a frame is one sealed
 * ResponseFrame (one seal per frame), whose req_nonce is the request
 * frame's nonce.
 *
 * Drain: s->draining stops every re-arm; pending receives are cancelled;
 * the caller waits on idle_cv until every job is IDLE. A job that re-arms
 * its receive checks draining afterwards under s->mu and cancels itself, so
 * a receive armed while the drain starts cannot stay pending.
 *
 * Close: as drain, plus s->closing cancels pending sends (a client that
 * does not read cannot hold the close up); once every job is IDLE and no
 * thread is inside an nng context call (n_calls, see call_enter), the
 * contexts and then the socket are closed, and the workers stopped.
 */
#include "node/srv.h"

#include "proto/clock.h"
#include "proto/mem.h"
#include "proto/slog.h"
#include "proto/thread.h"

#include <errno.h>
#include <nng/nng.h>
#include <nng/protocol/reqrep0/rep.h>
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>
#include <time.h>

#define SRV_ARENA_CHUNK     16384 /* bytes per arena chunk, per context */
#define SRV_MAX_REQS        65536 /* requests in one frame */
#define SRV_OP_CASES        32    /* Shoal__Request__OpCase values mapped */
#define SRV_MAX_CONTEXTS    65536
#define SRV_MAX_WORKERS     1024
#define SRV_ERR_FRAME_LEN   36
#define SRV_DEFAULT_FRAME   ((size_t) 64 * 1024 * 1024 + 64 * 1024)
#define SRV_DEFAULT_WINDOW  300000u
#define SRV_CLOSE_WAIT_MS   5000  /* see socket_close_bounded */
#define SRV_REPL_TIMEOUT_MS 10000 /* quorum wait of a request without one */

typedef enum job_state {
    JOB_IDLE,   /* nothing armed: drained or closed */
    JOB_RECV,   /* waiting in nng_ctx_recv */
    JOB_WORK,   /* frame received: queued for or held by a worker */
    JOB_COMMIT, /* executed; waiting for the engine to commit its writes */
    JOB_FINISH, /* committed: queued for a worker to seal and send */
    JOB_SEND,   /* answer handed to nng_ctx_send */
} job_state;

/* Commit hand-off between the worker calling store_commit_notify and the
 * callback (maybe on the WAL writer thread): whoever comes second goes on. */
enum { COMMIT_WAITING = 0, COMMIT_DONE = 1, COMMIT_DETACHED = 2 };

typedef struct srv_job srv_job;

struct srv_job {
    srv *s;
    nng_ctx ctx;
    bool ctx_open;
    nng_aio *raio;       /* receives only */
    nng_aio *saio;       /* sends only */
    job_state state;     /* guarded by the job's current owner */
    srv_job *next;       /* worker queue link (s->mu) */
    nng_msg *msg;        /* frame being served; reused for the answer */
    uint64_t t0_ns;      /* clock_mono_ns() when the frame arrived */
    wire_hdr hdr;        /* the request frame's header (nonce for req_nonce) */
    const wire_key *key; /* caller's key; NULL on an insecure node */
    pbuf_arena arena;    /* decoded request and responses; reset per frame */
    Shoal__RequestFrame *rf;
    Shoal__Response **resps; /* rf->n_reqs pointers into the arena */
    exec_result *results;    /* rf->n_reqs */
    size_t n_reqs;
    bool durable;               /* some write asked for fsync */
    shoal_err commit_rc;        /* written by commit_cb before the hand-off */
    _Atomic int commit_phase;   /* COMMIT_* */
    bool repl_done;             /* quorum waits finished (or none needed) */
    _Atomic size_t repl_left;   /* quorum waits outstanding, +1 for setup */
    Shoal__Response frame_resp; /* the single answer to an undecodable frame */
    Shoal__Response *frame_resp_p;
    size_t out_len; /* bytes of the answer being sent */
};

struct srv {
    nng_socket sock;
    bool sock_open;
    const exec_ctx *x;
    const wire_keyring *keys;
    bool insecure;
    metrics *m;
    wire_replay *replay; /* NULL when insecure */
    wire_sender sender;  /* nonces of our answers */
    char *url;           /* for log lines */
    metrics_op op_map[SRV_OP_CASES];

    bool sync_init;         /* mu and the conds exist */
    pthread_mutex_t mu;     /* guards the fields below */
    pthread_cond_t q_cv;    /* workers: queue non-empty or stopping */
    pthread_cond_t idle_cv; /* drain/close: a job went idle, or n_calls 0 */
    srv_job *q_head, *q_tail;
    bool draining;     /* no receive is re-armed */
    bool closing;      /* pending sends are cancelled too */
    bool stopping;     /* workers exit */
    unsigned n_active; /* jobs not IDLE */
    unsigned n_calls;  /* threads inside nng_ctx_send/nng_ctx_recv */

    _Atomic unsigned inflight; /* frames received, not yet answered */
    srv_job *jobs;
    unsigned n_jobs;
    pthread_t *workers;
    unsigned n_workers; /* started */
};

static void job_work(srv *s, srv_job *j);
static void job_finish(srv *s, srv_job *j);

void
srv_opts_default(srv_opts *o)
{
    memset(o, 0, sizeof(*o));
    o->listen_url = "tcp://127.0.0.1:7400";
    o->n_contexts = 128;
    o->n_workers = 4;
    o->max_frame_bytes = SRV_DEFAULT_FRAME;
    o->replay_window_ms = SRV_DEFAULT_WINDOW;
    o->replay_senders = 65536;
}

/* ---- worker queue and job life ------------------------------------------ */

static void
queue_push_locked(srv *s, srv_job *j)
{
    j->next = NULL;
    if (s->q_tail != NULL)
        s->q_tail->next = j;
    else
        s->q_head = j;
    s->q_tail = j;
    pthread_cond_signal(&s->q_cv);
}

static void
queue_push(srv *s, srv_job *j)
{
    pthread_mutex_lock(&s->mu);
    queue_push_locked(s, j);
    pthread_mutex_unlock(&s->mu);
}

/* The job does nothing more until srv_close frees it. */
static void
job_go_idle_locked(srv *s, srv_job *j)
{
    j->state = JOB_IDLE;
    s->n_active--;
    if (s->n_active == 0)
        pthread_cond_broadcast(&s->idle_cv);
}

/*
 * Calls of nng_ctx_recv/nng_ctx_send are bracketed by call_enter/call_leave
 * for two reasons:
 *  - nng 1.5.2 destroys a closed context's protocol state in whichever
 *    thread drops its last reference, and that can be a thread still inside
 *    nng_ctx_send while nng_close frees the socket under it (a use after
 *    free: "pthread_mutex_lock: Invalid argument" panics). srv_close closes
 *    the socket only when n_calls is 0 and every job is idle.
 *  - A drain or close that began while the operation was being armed may
 *    have missed it: call_leave tells the caller to cancel it itself
 *    (harmless if the drain or close cancels it too).
 */
static void
call_enter(srv *s)
{
    pthread_mutex_lock(&s->mu);
    s->n_calls++;
    pthread_mutex_unlock(&s->mu);
}

static void
call_leave(srv *s, bool *draining, bool *closing)
{
    pthread_mutex_lock(&s->mu);
    s->n_calls--;
    if (s->n_calls == 0 && s->n_active == 0)
        pthread_cond_broadcast(&s->idle_cv);
    *draining = s->draining;
    *closing = s->closing;
    pthread_mutex_unlock(&s->mu);
}

/* Arm the receive; the caller has counted the call in n_calls. */
static void
job_recv_entered(srv *s, srv_job *j)
{
    bool draining, closing;
    j->state = JOB_RECV;
    nng_ctx_recv(j->ctx, j->raio);
    call_leave(s, &draining, &closing);
    if (draining)
        nng_aio_cancel(j->raio);
}

static void
job_arm_recv(srv *s, srv_job *j)
{
    call_enter(s);
    job_recv_entered(s, j);
}

/* The frame is finished (answered, or dropped): count it out and receive
 * the next one unless draining. */
static void
job_done(srv *s, srv_job *j)
{
    atomic_fetch_sub_explicit(&s->inflight, 1, memory_order_relaxed);
    pthread_mutex_lock(&s->mu);
    if (s->draining) {
        job_go_idle_locked(s, j);
        pthread_mutex_unlock(&s->mu);
        return;
    }
    s->n_calls++; /* call_enter, in the same critical section */
    pthread_mutex_unlock(&s->mu);
    job_recv_entered(s, j);
}

/* nng thread: a frame arrived (or the receive failed). Never blocks. */
static void
recv_cb(void *arg)
{
    srv_job *j = arg;
    srv *s = j->s;
    int rv = nng_aio_result(j->raio);
    if (rv == 0) {
        j->msg = nng_aio_get_msg(j->raio);
        nng_aio_set_msg(j->raio, NULL);
        j->t0_ns = clock_mono_ns();
        j->state = JOB_WORK;
        atomic_fetch_add_explicit(&s->inflight, 1, memory_order_relaxed);
        queue_push(s, j);
        return;
    }
    pthread_mutex_lock(&s->mu);
    if (rv == NNG_ECLOSED || rv == NNG_ECANCELED || s->draining) {
        job_go_idle_locked(s, j);
        pthread_mutex_unlock(&s->mu);
        return;
    }
    pthread_mutex_unlock(&s->mu);
    slog(SLOG_WARN, "srv", "receive on %s: %s", s->url, nng_strerror(rv));
    job_arm_recv(s, j);
}

/* nng thread: the answer left (or could not). Never blocks. */
static void
send_cb(void *arg)
{
    srv_job *j = arg;
    srv *s = j->s;
    int rv = nng_aio_result(j->saio);
    if (rv != 0) {
        nng_msg *msg = nng_aio_get_msg(j->saio);
        nng_aio_set_msg(j->saio, NULL);
        if (msg != NULL)
            nng_msg_free(msg);
        if (rv != NNG_ECLOSED && rv != NNG_ECANCELED)
            slog(SLOG_WARN, "srv", "send on %s: %s", s->url, nng_strerror(rv));
    } else {
        metrics_add(s->m, METRICS_FRAMES_OUT, 1);
        metrics_add(s->m, METRICS_BYTES_OUT, j->out_len);
    }
    job_done(s, j);
}

/* Engine (maybe the WAL writer thread): the frame's writes are committed.
 * Only records rc and hands the job back to the workers. */
static void
commit_cb(void *arg, shoal_err rc)
{
    srv_job *j = arg;
    j->commit_rc = rc;
    if (atomic_exchange(&j->commit_phase, COMMIT_DONE) == COMMIT_DETACHED) {
        j->state = JOB_FINISH;
        queue_push(j->s, j);
    }
}

static void *
worker_main(void *arg)
{
    thread_set_name("shoal-worker");
    srv *s = arg;
    pthread_mutex_lock(&s->mu);
    for (;;) {
        while (s->q_head == NULL && !s->stopping)
            pthread_cond_wait(&s->q_cv, &s->mu);
        if (s->q_head == NULL)
            break; /* stopping, and nothing left */
        srv_job *j = s->q_head;
        s->q_head = j->next;
        if (s->q_head == NULL)
            s->q_tail = NULL;
        pthread_mutex_unlock(&s->mu);
        if (j->state == JOB_FINISH)
            job_finish(s, j);
        else
            job_work(s, j);
        pthread_mutex_lock(&s->mu);
    }
    pthread_mutex_unlock(&s->mu);
    return NULL;
}

/* ---- answers ------------------------------------------------------------- */

/* Hand j->msg (the answer) to nng. The arena is no longer needed. */
static void
job_send(srv *s, srv_job *j)
{
    pbuf_arena_reset(&j->arena);
    j->rf = NULL;
    j->resps = NULL;
    j->results = NULL;
    j->n_reqs = 0;
    j->out_len = nng_msg_len(j->msg);
    j->state = JOB_SEND;
    nng_aio_set_msg(j->saio, j->msg);
    j->msg = NULL;
    bool draining, closing;
    call_enter(s);
    nng_ctx_send(j->ctx, j->saio);
    call_leave(s, &draining, &closing);
    if (closing) /* a slow client must not hold up the close */
        nng_aio_cancel(j->saio);
}

/* Give up on a frame without answering (out of memory): the client's
 * request times out. */
static void
job_drop(srv *s, srv_job *j)
{
    nng_msg_free(j->msg);
    j->msg = NULL;
    pbuf_arena_reset(&j->arena);
    job_done(s, j);
}

/* Answer with a plaintext error frame carrying status. */
static void
job_error(srv *s, srv_job *j, shoal_err status)
{
    size_t len = 0;
    if (nng_msg_realloc(j->msg, SRV_ERR_FRAME_LEN) != 0 ||
        wire_error_frame(status, nng_msg_body(j->msg), SRV_ERR_FRAME_LEN,
                         &len) != SHOAL_OK) {
        job_drop(s, j);
        return;
    }
    job_send(s, j);
}

/* Count every request of the frame, with its latency until now. */
static void
job_observe(srv *s, const srv_job *j)
{
    uint64_t now = clock_mono_ns();
    uint64_t lat_us = now > j->t0_ns ? (now - j->t0_ns) / 1000u : 0;
    for (size_t i = 0; i < j->n_reqs; i++) {
        unsigned op = (unsigned) j->rf->reqs[i]->op_case;
        metrics_op mop = op < SRV_OP_CASES ? s->op_map[op] : METRICS_OP_OTHER;
        metrics_observe(s->m, mop, (shoal_err) j->resps[i]->status, lat_us);
    }
}

/* Pack rf, seal it under the caller's key into j->msg, send. */
static void
job_reply(srv *s, srv_job *j, const Shoal__ResponseFrame *rf)
{
    size_t body_len = shoal__response_frame__get_packed_size(rf);
    size_t frame_len = wire_frame_len(body_len, !s->insecure);
    uint8_t *body = pbuf_arena_alloc(&j->arena, body_len + 1);
    if (body == NULL || nng_msg_realloc(j->msg, frame_len) != 0) {
        job_error(s, j, SHOAL_ENOMEM);
        return;
    }
    size_t packed = shoal__response_frame__pack(rf, body);
    size_t out_len = 0;
    shoal_err rc = wire_seal(&s->sender, j->key, WIRE_F_RESPONSE, body, packed,
                             nng_msg_body(j->msg), frame_len, &out_len, NULL);
    SH_ASSERT(rc == SHOAL_OK && packed == body_len && out_len == frame_len);
    job_observe(s, j);
    job_send(s, j);
}

/* Answer a frame that opened but cannot be served with one Response
 * {id 0, status, message}. */
static void
job_reply_frame_error(srv *s, srv_job *j, shoal_err status, const char *msg)
{
    j->n_reqs = 0; /* nothing to observe */
    shoal__response__init(&j->frame_resp);
    j->frame_resp.has_id = true;
    j->frame_resp.id = 0;
    j->frame_resp.has_status = true;
    j->frame_resp.status = (Shoal__Status) status;
    j->frame_resp.message = (char *) msg;
    j->frame_resp.has_map_epoch = true;
    j->frame_resp.map_epoch = s->x->map_epoch;
    j->frame_resp_p = &j->frame_resp;

    Shoal__ResponseFrame rf = SHOAL__RESPONSE_FRAME__INIT;
    rf.n_resps = 1;
    rf.resps = &j->frame_resp_p;
    rf.has_req_nonce = true;
    rf.req_nonce.data = j->hdr.nonce;
    rf.req_nonce.len = WIRE_NONCE_BYTES;
    job_reply(s, j, &rf);
}

/* ---- opening and checking a frame ---------------------------------------- */

/* Count a refused frame; the status its error frame carries. */
static shoal_err
refuse(srv *s, metrics_ev ev, shoal_err status)
{
    metrics_add(s->m, ev, 1);
    return status;
}

static shoal_err
open_sealed(srv *s, srv_job *j, uint8_t *frame, size_t len, size_t *body_len)
{
    const wire_key *k = wire_keyring_find(s->keys, j->hdr.key_id);
    if (k == NULL)
        return refuse(s, METRICS_BAD_KEY, SHOAL_EAUTH);
    shoal_err rc = wire_open(k, frame, len, body_len);
    if (rc == SHOAL_EAUTH)
        return refuse(s, METRICS_BAD_TAG, SHOAL_EAUTH);
    if (rc != SHOAL_OK)
        return refuse(s, METRICS_BAD_HEADER, SHOAL_EINVAL);
    if (k->role == WIRE_ROLE_PEER) /* the cluster key is not a client key */
        return refuse(s, METRICS_BAD_KEY, SHOAL_EAUTH);
    if (wire_replay_check(s->replay, &j->hdr, clock_now_ms()) != SHOAL_OK)
        return refuse(s, METRICS_REPLAYED, SHOAL_EAUTH);
    j->key = k;
    return SHOAL_OK;
}

/* Parse, authenticate and replay-check the frame in j->msg. SHOAL_OK with
 * the plaintext body in *body; otherwise the status to answer with (the
 * refusal is counted). */
static shoal_err
job_open(srv *s, srv_job *j, const uint8_t **body, size_t *body_len)
{
    uint8_t *frame = nng_msg_body(j->msg);
    size_t len = nng_msg_len(j->msg);
    const uint8_t not_request = WIRE_F_RESPONSE | WIRE_F_PEER | WIRE_F_ERROR;
    j->key = NULL;
    if (wire_parse_hdr(frame, len, &j->hdr) != SHOAL_OK ||
        (j->hdr.flags & not_request) != 0)
        return refuse(s, METRICS_BAD_HEADER, SHOAL_EINVAL);
    bool plain = (j->hdr.flags & WIRE_F_PLAIN) != 0;
    if (plain != s->insecure)
        return refuse(s, METRICS_PLAIN_REFUSED, SHOAL_EAUTH);
    if (plain) {
        if (wire_open_plain(frame, len, body, body_len) != SHOAL_OK)
            return refuse(s, METRICS_BAD_HEADER, SHOAL_EINVAL);
        return SHOAL_OK;
    }
    shoal_err rc = open_sealed(s, j, frame, len, body_len);
    if (rc == SHOAL_OK)
        *body = frame + WIRE_HDR_BYTES;
    return rc;
}

/* Read one protobuf varint; false when truncated or over 10 bytes. */
static bool
pb_varint(const uint8_t *p, size_t len, size_t *off, uint64_t *out)
{
    uint64_t v = 0;
    for (unsigned shift = 0; shift < 70 && *off < len; shift += 7) {
        uint8_t b = p[(*off)++];
        v |= (uint64_t) (b & 0x7f) << shift;
        if ((b & 0x80) == 0) {
            *out = v;
            return true;
        }
    }
    return false;
}

/* Count the top-level Request fields of a RequestFrame without decoding,
 * so a frame of millions of tiny requests is refused before protobuf-c
 * allocates for each. false if the framing is broken. */
static bool
count_reqs(const uint8_t *p, size_t len, size_t *n_out)
{
    size_t off = 0, n = 0;
    while (off < len) {
        uint64_t tag = 0, v = 0;
        if (!pb_varint(p, len, &off, &tag))
            return false;
        unsigned wt = (unsigned) (tag & 7u);
        if (wt == 0 && !pb_varint(p, len, &off, &v))
            return false;
        if (wt == 1 || wt == 5) {
            size_t w = wt == 1 ? 8 : 4;
            if (len - off < w)
                return false;
            off += w;
        }
        if (wt == 2) {
            if (!pb_varint(p, len, &off, &v) || v > len - off)
                return false;
            off += (size_t) v;
            n += (tag >> 3) == 1;
        }
        if (wt != 0 && wt != 1 && wt != 2 && wt != 5)
            return false;
    }
    *n_out = n;
    return true;
}

/* ---- serving a frame ----------------------------------------------------- */

/* Run every request of j->rf. false on ENOMEM (nothing executed). */
static bool
job_exec(srv *s, srv_job *j, bool *wrote_out)
{
    size_t n = j->rf->n_reqs;
    bool wrote = false;
    j->durable = false;
    j->n_reqs = 0;
    if (n > 0) {
        Shoal__Response *r = pbuf_arena_alloc(&j->arena, n * sizeof(*r));
        j->resps = pbuf_arena_alloc(&j->arena, n * sizeof(*j->resps));
        j->results = pbuf_arena_alloc(&j->arena, n * sizeof(*j->results));
        if (r == NULL || j->resps == NULL || j->results == NULL)
            return false;
        for (size_t i = 0; i < n; i++) {
            shoal__response__init(&r[i]);
            j->resps[i] = &r[i];
        }
    }
    for (size_t i = 0; i < n; i++) {
        exec_result *res = &j->results[i];
        exec_request(s->x, j->key, j->rf->reqs[i], j->resps[i], &j->arena, res);
        wrote |= res->wrote;
        j->durable |= res->wrote && res->durable;
        if (res->status == SHOAL_EPERM)
            metrics_add(s->m, METRICS_DENIED, 1);
    }
    j->n_reqs = n;
    *wrote_out = wrote;
    return true;
}

/* The frame wrote: answer once everything it wrote is committed. */
static void
job_commit(srv *s, srv_job *j)
{
    store *st = s->x->st;
    uint64_t point = store_commit_point(st);
    j->state = JOB_COMMIT;
    j->commit_rc = SHOAL_OK;
    atomic_store(&j->commit_phase, COMMIT_WAITING);
    if (store_commit_notify(st, point, j->durable, commit_cb, j) != SHOAL_OK) {
        /* No memory to queue a waiter: wait here instead (rare). */
        j->commit_rc = store_commit_wait(st, point, j->durable);
        job_finish(s, j);
        return;
    }
    /* The callback may already have run (committed, or a quick WAL
     * thread): then carry on here instead of a round trip via the queue. */
    if (atomic_exchange(&j->commit_phase, COMMIT_DETACHED) == COMMIT_DONE)
        job_finish(s, j);
}

/* Worker: open, check, decode and execute a received frame. */
static void
job_work(srv *s, srv_job *j)
{
    const uint8_t *body = NULL;
    size_t body_len = 0, n = 0;
    metrics_add(s->m, METRICS_FRAMES_IN, 1);
    metrics_add(s->m, METRICS_BYTES_IN, nng_msg_len(j->msg));
    shoal_err rc = job_open(s, j, &body, &body_len);
    if (rc != SHOAL_OK) {
        job_error(s, j, rc);
        return;
    }
    if (!count_reqs(body, body_len, &n) || n > SRV_MAX_REQS) {
        metrics_add(s->m, METRICS_BAD_DECODE, 1);
        if (n > SRV_MAX_REQS)
            job_reply_frame_error(s, j, SHOAL_ETOOLARGE,
                                  "too many requests in one frame");
        else
            job_reply_frame_error(s, j, SHOAL_EINVAL, "malformed request");
        return;
    }
    j->rf = shoal__request_frame__unpack(&j->arena.alloc, body_len, body);
    if (j->rf == NULL) {
        metrics_add(s->m, METRICS_BAD_DECODE, 1);
        job_reply_frame_error(s, j, SHOAL_EINVAL, "malformed request");
        return;
    }
    bool wrote = false;
    j->repl_done = false;
    if (!job_exec(s, j, &wrote)) {
        job_reply_frame_error(s, j, SHOAL_ENOMEM, "out of memory");
        return;
    }
    if (wrote)
        job_commit(s, j);
    else
        job_finish(s, j);
}

static const char quorum_timeout_msg[] =
    "the write did not reach its quorum before the deadline; it may still "
    "apply";

/* One write's quorum wait (repl.h), allocated from the job's arena. */
typedef struct repl_slot {
    srv_job *j;
    size_t i; /* response index */
} repl_slot;

/* A quorum wait ended; the last one hands the job back to the workers. */
static void
repl_slot_done(void *arg, shoal_err rc)
{
    repl_slot *rs = arg;
    srv_job *j = rs->j;
    if (rc != SHOAL_OK) {
        exec_commit_failed(j->resps[rs->i], rc);
        if (rc == SHOAL_ETIMEOUT)
            j->resps[rs->i]->message = (char *) quorum_timeout_msg;
    }
    if (atomic_fetch_sub(&j->repl_left, 1) == 1) {
        j->state = JOB_FINISH;
        queue_push(j->s, j);
    }
}

/* Deadline (clock_now_ms) of request i: its timeout_ms from the frame's
 * arrival, or SRV_REPL_TIMEOUT_MS without one. */
static uint64_t
repl_deadline(const srv_job *j, size_t i)
{
    const Shoal__Request *q = j->rf->reqs[i];
    uint64_t t = q->has_timeout_ms && q->timeout_ms != 0 ? q->timeout_ms
                                                         : SRV_REPL_TIMEOUT_MS;
    uint64_t spent = (clock_mono_ns() - j->t0_ns) / 1000000u;
    return clock_now_ms() + (t > spent ? t - spent : 1);
}

/* Committed here: start the quorum waits of writes that need copies on
 * followers. true when some are outstanding (the job then comes back
 * through repl_slot_done); false to answer now. */
static bool
job_repl(srv *s, srv_job *j)
{
    repl *rp = s->x->rp;
    j->repl_done = true;
    if (rp == NULL)
        return false;
    atomic_store(&j->repl_left, 1);
    for (size_t i = 0; i < j->n_reqs; i++) {
        const exec_result *res = &j->results[i];
        if (!res->wrote || res->w <= 1 || res->n_shards == 0)
            continue;
        repl_need *needs =
            pbuf_arena_alloc(&j->arena, res->n_shards * sizeof(*needs));
        repl_slot *rs = pbuf_arena_alloc(&j->arena, sizeof(*rs));
        if (needs == NULL || rs == NULL) {
            exec_commit_failed(j->resps[i], SHOAL_ENOMEM);
            continue;
        }
        for (size_t k = 0; k < res->n_shards; k++) {
            store_shard_stats ss = {0};
            (void) store_get_shard_stats(s->x->st, res->shards[k], &ss);
            /* The shard's LSN now covers this write (maybe later ones:
             * waiting for those too is safe, only slower). */
            needs[k] = (repl_need){res->shards[k], ss.lsn, res->w};
        }
        rs->j = j;
        rs->i = i;
        atomic_fetch_add(&j->repl_left, 1);
        if (repl_wait(rp, needs, res->n_shards, repl_deadline(j, i),
                      repl_slot_done, rs) != SHOAL_OK) {
            atomic_fetch_sub(&j->repl_left, 1);
            exec_commit_failed(j->resps[i], SHOAL_ENOMEM);
        }
    }
    j->state = JOB_COMMIT;
    /* Drop the setup count: if every wait already ended, answer here. */
    return atomic_fetch_sub(&j->repl_left, 1) != 1;
}

/* Worker: every write of the frame is committed (or failed) and, in a
 * cluster, on its quorum of replicas (or timed out): answer. */
static void
job_finish(srv *s, srv_job *j)
{
    if (j->state == JOB_COMMIT || j->state == JOB_FINISH) {
        if (j->commit_rc != SHOAL_OK) {
            for (size_t i = 0; i < j->n_reqs; i++)
                if (j->results[i].wrote)
                    exec_commit_failed(j->resps[i], j->commit_rc);
            metrics_add(s->m, METRICS_COMMIT_FAILED, 1);
        } else if (!j->repl_done && job_repl(s, j)) {
            return; /* repl_slot_done requeues the job */
        }
    }
    Shoal__ResponseFrame rf = SHOAL__RESPONSE_FRAME__INIT;
    rf.n_resps = j->n_reqs;
    rf.resps = j->resps;
    rf.has_req_nonce = true;
    rf.req_nonce.data = j->hdr.nonce;
    rf.req_nonce.len = WIRE_NONCE_BYTES;
    job_reply(s, j, &rf);
}

/* ---- open, drain, close -------------------------------------------------- */

static shoal_err
check_opts(const srv_opts *o)
{
    if (o == NULL || o->listen_url == NULL || o->x == NULL ||
        o->x->st == NULL || o->m == NULL)
        return SHOAL_EINVAL;
    if (!o->insecure &&
        (o->keys == NULL || o->replay_window_ms == 0 || o->replay_senders == 0))
        return SHOAL_EINVAL;
    if (o->n_contexts == 0 || o->n_contexts > SRV_MAX_CONTEXTS ||
        o->n_workers == 0 || o->n_workers > SRV_MAX_WORKERS)
        return SHOAL_EINVAL;
    if (o->max_frame_bytes < WIRE_HDR_BYTES + WIRE_TAG_BYTES)
        return SHOAL_EINVAL;
    return SHOAL_OK;
}

static shoal_err
nng_to_shoal(int rv)
{
    switch (rv) {
    case NNG_ENOMEM:
        return SHOAL_ENOMEM;
    case NNG_EINVAL:
    case NNG_EADDRINVAL:
    case NNG_ENOTSUP:
        return SHOAL_EINVAL;
    default:
        return SHOAL_EUNAVAILABLE;
    }
}

static shoal_err
sync_init(srv *s)
{
    pthread_condattr_t ca;
    if (pthread_condattr_init(&ca) != 0)
        return SHOAL_ENOMEM;
    bool ok = pthread_condattr_setclock(&ca, CLOCK_MONOTONIC) == 0 &&
              pthread_mutex_init(&s->mu, NULL) == 0;
    if (ok && pthread_cond_init(&s->q_cv, NULL) != 0) {
        pthread_mutex_destroy(&s->mu);
        ok = false;
    }
    if (ok && pthread_cond_init(&s->idle_cv, &ca) != 0) {
        pthread_cond_destroy(&s->q_cv);
        pthread_mutex_destroy(&s->mu);
        ok = false;
    }
    pthread_condattr_destroy(&ca);
    s->sync_init = ok;
    return ok ? SHOAL_OK : SHOAL_ENOMEM;
}

static shoal_err
job_init(srv *s, srv_job *j)
{
    j->s = s;
    j->state = JOB_IDLE;
    pbuf_arena_init(&j->arena, SRV_ARENA_CHUNK);
    int rv = nng_ctx_open(&j->ctx, s->sock);
    if (rv != 0)
        return nng_to_shoal(rv);
    j->ctx_open = true;
    if ((rv = nng_aio_alloc(&j->raio, recv_cb, j)) != 0 ||
        (rv = nng_aio_alloc(&j->saio, send_cb, j)) != 0)
        return nng_to_shoal(rv);
    return SHOAL_OK;
}

static shoal_err
socket_open(srv *s, const srv_opts *o)
{
    int rv = nng_rep0_open(&s->sock);
    if (rv != 0) {
        slog(SLOG_ERR, "srv", "rep socket for %s: %s", o->listen_url,
             nng_strerror(rv));
        return nng_to_shoal(rv);
    }
    s->sock_open = true;
    rv = nng_socket_set_size(s->sock, NNG_OPT_RECVMAXSZ, o->max_frame_bytes);
    if (rv != 0) {
        slog(SLOG_ERR, "srv", "receive limit for %s: %s", o->listen_url,
             nng_strerror(rv));
        return nng_to_shoal(rv);
    }
    return SHOAL_OK;
}

static shoal_err
jobs_open(srv *s, unsigned n)
{
    s->jobs = mem_calloc(n, sizeof(*s->jobs));
    if (s->jobs == NULL)
        return SHOAL_ENOMEM;
    for (unsigned i = 0; i < n; i++) {
        s->n_jobs = i + 1; /* close frees this one even if init fails */
        shoal_err rc = job_init(s, &s->jobs[i]);
        if (rc != SHOAL_OK)
            return rc;
    }
    return SHOAL_OK;
}

static shoal_err
workers_start(srv *s, unsigned n)
{
    s->workers = mem_calloc(n, sizeof(*s->workers));
    if (s->workers == NULL)
        return SHOAL_ENOMEM;
    for (unsigned i = 0; i < n; i++) {
        if (pthread_create(&s->workers[i], NULL, worker_main, s) != 0) {
            slog(SLOG_ERR, "srv", "cannot start worker thread %u", i);
            return SHOAL_ENOMEM;
        }
        s->n_workers = i + 1;
    }
    return SHOAL_OK;
}

static shoal_err
listen_start(srv *s)
{
    int rv = nng_listen(s->sock, s->url, NULL, 0);
    if (rv != 0) {
        slog(SLOG_ERR, "srv", "cannot listen on %s: %s", s->url,
             nng_strerror(rv));
        return nng_to_shoal(rv);
    }
    pthread_mutex_lock(&s->mu);
    s->n_active = s->n_jobs;
    pthread_mutex_unlock(&s->mu);
    for (unsigned i = 0; i < s->n_jobs; i++)
        job_arm_recv(s, &s->jobs[i]);
    if (s->insecure)
        slog(SLOG_WARN, "srv",
             "listening on %s WITHOUT encryption or keys (--insecure)", s->url);
    else
        slog(SLOG_INFO, "srv", "listening on %s", s->url);
    return SHOAL_OK;
}

static void
op_map_init(srv *s)
{
    for (unsigned i = 0; i < SRV_OP_CASES; i++)
        s->op_map[i] =
            metrics_op_from_name(exec_op_name((Shoal__Request__OpCase) i));
}

shoal_err
srv_open(const srv_opts *o, srv **out)
{
    shoal_err rc = check_opts(o);
    *out = NULL;
    if (rc != SHOAL_OK)
        return rc;
    srv *s = mem_calloc(1, sizeof(*s));
    if (s == NULL)
        return SHOAL_ENOMEM;
    s->x = o->x;
    s->keys = o->insecure ? NULL : o->keys;
    s->insecure = o->insecure;
    s->m = o->m;
    wire_sender_init(&s->sender);
    op_map_init(s);
    if ((s->url = mem_strdup(o->listen_url)) == NULL ||
        (rc = sync_init(s)) != SHOAL_OK)
        goto fail;
    if (!s->insecure &&
        (rc = wire_replay_open(o->replay_senders, o->replay_window_ms,
                               &s->replay)) != SHOAL_OK)
        goto fail;
    if ((rc = socket_open(s, o)) != SHOAL_OK ||
        (rc = jobs_open(s, o->n_contexts)) != SHOAL_OK ||
        (rc = workers_start(s, o->n_workers)) != SHOAL_OK ||
        (rc = listen_start(s)) != SHOAL_OK)
        goto fail;
    *out = s;
    return SHOAL_OK;
fail:
    if (rc == SHOAL_OK)
        rc = SHOAL_ENOMEM;
    srv_close(s);
    return rc;
}

/* Wait on idle_cv until every job is idle (with calls: and no thread is
 * inside an nng context call) or deadline_ns (0: forever) passes. Called
 * with s->mu held. */
static bool
wait_idle_locked(srv *s, uint64_t deadline_ns, bool calls)
{
    while (s->n_active > 0 || (calls && s->n_calls > 0)) {
        if (deadline_ns == 0) {
            pthread_cond_wait(&s->idle_cv, &s->mu);
            continue;
        }
        struct timespec ts;
        ts.tv_sec = (time_t) (deadline_ns / 1000000000u);
        ts.tv_nsec = (long) (deadline_ns % 1000000000u);
        if (pthread_cond_timedwait(&s->idle_cv, &s->mu, &ts) != 0 &&
            (s->n_active > 0 || (calls && s->n_calls > 0)))
            return false;
    }
    return true;
}

static uint64_t
mono_deadline_ns(uint32_t timeout_ms)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (uint64_t) now.tv_sec * 1000000000u + (uint64_t) now.tv_nsec +
           (uint64_t) timeout_ms * 1000000u + 1;
}

/* Set draining (and closing), then cancel every pending receive (and
 * send): they end with NNG_ECANCELED and their jobs go idle. A frame
 * already received is still served; when closing, its send is cancelled. */
static void
stop_taking(srv *s, bool closing)
{
    pthread_mutex_lock(&s->mu);
    s->draining = true;
    s->closing |= closing;
    pthread_mutex_unlock(&s->mu);
    for (unsigned i = 0; i < s->n_jobs; i++) {
        if (s->jobs[i].raio != NULL)
            nng_aio_cancel(s->jobs[i].raio);
        if (closing && s->jobs[i].saio != NULL)
            nng_aio_cancel(s->jobs[i].saio);
    }
}

shoal_err
srv_drain(srv *s, uint32_t timeout_ms)
{
    if (s == NULL)
        return SHOAL_OK;
    uint64_t deadline = mono_deadline_ns(timeout_ms);
    stop_taking(s, false);
    pthread_mutex_lock(&s->mu);
    bool done = wait_idle_locked(s, deadline, false);
    pthread_mutex_unlock(&s->mu);
    if (!done)
        slog(SLOG_WARN, "srv", "drain of %s: %u frames still in flight", s->url,
             srv_inflight(s));
    return done ? SHOAL_OK : SHOAL_ETIMEOUT;
}

unsigned
srv_inflight(const srv *s)
{
    if (s == NULL)
        return 0;
    return atomic_load_explicit(&s->inflight, memory_order_relaxed);
}

static void
jobs_free(srv *s)
{
    for (unsigned i = 0; i < s->n_jobs; i++) {
        srv_job *j = &s->jobs[i];
        /* nng_aio_free stops the aio and waits for a running callback. */
        if (j->raio != NULL)
            nng_aio_free(j->raio);
        if (j->saio != NULL)
            nng_aio_free(j->saio);
        if (j->msg != NULL)
            nng_msg_free(j->msg);
        pbuf_arena_fini(&j->arena);
    }
    mem_free(s->jobs);
}

static void
workers_stop(srv *s)
{
    pthread_mutex_lock(&s->mu);
    s->stopping = true;
    pthread_cond_broadcast(&s->q_cv);
    pthread_mutex_unlock(&s->mu);
    for (unsigned i = 0; i < s->n_workers; i++)
        pthread_join(s->workers[i], NULL);
    mem_free(s->workers);
}

/* nng_close on a helper thread, waited for at most SRV_CLOSE_WAIT_MS. */
typedef struct sock_closer {
    nng_socket sock;
    pthread_mutex_t mu;
    pthread_cond_t cv; /* CLOCK_MONOTONIC */
    bool done;         /* nng_close returned */
    bool abandoned;    /* the waiter gave up: the thread frees this */
} sock_closer;

static void
closer_free(sock_closer *c)
{
    pthread_cond_destroy(&c->cv);
    pthread_mutex_destroy(&c->mu);
    mem_free(c);
}

static void *
closer_main(void *arg)
{
    sock_closer *c = arg;
    nng_close(c->sock);
    pthread_mutex_lock(&c->mu);
    c->done = true;
    bool abandoned = c->abandoned;
    pthread_cond_signal(&c->cv);
    pthread_mutex_unlock(&c->mu);
    if (abandoned)
        closer_free(c);
    return NULL;
}

static sock_closer *
closer_new(nng_socket sock)
{
    sock_closer *c = mem_calloc(1, sizeof(*c));
    pthread_condattr_t ca;
    if (c == NULL)
        return NULL;
    c->sock = sock;
    bool ok = pthread_condattr_init(&ca) == 0;
    ok = ok && pthread_condattr_setclock(&ca, CLOCK_MONOTONIC) == 0 &&
         pthread_cond_init(&c->cv, &ca) == 0;
    pthread_condattr_destroy(&ca);
    if (!ok || pthread_mutex_init(&c->mu, NULL) != 0) {
        if (ok)
            pthread_cond_destroy(&c->cv);
        mem_free(c);
        return NULL;
    }
    return c;
}

/*
 * nng 1.5.2 can wedge in nng_close: its process-wide reaper sometimes waits
 * forever for a TCP pipe's aio while tearing down connections that were
 * busy (nanomsg/nng#1543, fixed after 1.5.2). Our contexts are closed and
 * no operation of ours is pending by now, so nng holds nothing of ours: if
 * the close has not returned after SRV_CLOSE_WAIT_MS we log it and leave
 * the socket to its thread, so a stopping shoald still exits.
 */
static void
socket_close_bounded(srv *s)
{
    pthread_t th;
    sock_closer *c = closer_new(s->sock);
    if (c == NULL || pthread_create(&th, NULL, closer_main, c) != 0) {
        if (c != NULL)
            closer_free(c);
        nng_close(s->sock);
        return;
    }
    uint64_t deadline = mono_deadline_ns(SRV_CLOSE_WAIT_MS);
    struct timespec ts = {.tv_sec = (time_t) (deadline / 1000000000u),
                          .tv_nsec = (long) (deadline % 1000000000u)};
    pthread_mutex_lock(&c->mu);
    int rv = 0;
    while (!c->done && rv != ETIMEDOUT)
        rv = pthread_cond_timedwait(&c->cv, &c->mu, &ts);
    bool done = c->done;
    c->abandoned = !done;
    pthread_mutex_unlock(&c->mu);
    if (done) {
        pthread_join(th, NULL);
        closer_free(c);
        return;
    }
    pthread_detach(th);
    slog(SLOG_WARN, "srv",
         "closing %s: nng_close still busy after %u ms (nng 1.5.2 pipe "
         "teardown); leaving it to finish in the background",
         s->url, (unsigned) SRV_CLOSE_WAIT_MS);
}

void
srv_close(srv *s)
{
    if (s == NULL)
        return;
    /* Pending receives and sends are cancelled; frames being served finish
     * (their sends are cancelled too). A frame waiting for its commit
     * finishes when the engine answers, which it does: the engine outlives
     * the srv. Only then are the contexts and the socket closed, with no
     * thread inside nng on them (see call_enter). */
    if (s->sync_init) {
        stop_taking(s, true);
        pthread_mutex_lock(&s->mu);
        wait_idle_locked(s, 0, true);
        pthread_mutex_unlock(&s->mu);
        workers_stop(s);
    }
    for (unsigned i = 0; s->jobs != NULL && i < s->n_jobs; i++)
        if (s->jobs[i].ctx_open)
            nng_ctx_close(s->jobs[i].ctx);
    if (s->sock_open)
        socket_close_bounded(s);
    jobs_free(s);
    if (s->replay != NULL)
        wire_replay_close(s->replay);
    if (s->sync_init) {
        pthread_cond_destroy(&s->idle_cv);
        pthread_cond_destroy(&s->q_cv);
        pthread_mutex_destroy(&s->mu);
    }
    mem_free(s->url);
    mem_free(s);
}
