/*
 * client_conn.c -- one connection per node URL, and the coalescing rule of
 * DESIGN §8: many callers, one frame per round trip.
 *
 * A conn is an nng req0 socket dialled in the background (reconnects are
 * nng's), with n_ctx contexts, each with one aio. Ops bound for the node wait
 * in the conn's FIFO queue. Whenever a context is free and the queue is not
 * empty, the queue is flushed into one frame (up to max_frame_ops ops and
 * about max_frame_bytes). When the answer comes back (the aio callback, on
 * an nng thread) every op of the frame is settled, then the context takes
 * the next frame from the queue. So with 4 contexts and 800 callers there
 * are 4 frames of ~200 ops in flight, not 800 messages.
 *
 * Context states (c->mtx guards state and ops[]):
 *
 *   FREE --take--> BUILD --nng_ctx_send--> SEND --sent--> RECV --answer-->
 *   SETTLE --queue empty--> FREE     (SETTLE --queue not empty--> BUILD)
 *   SEND --send failed--> SETTLE     (ops not sent: retried)
 *
 * In BUILD the taking thread packs ops[] with no lock: nobody else touches
 * them. In RECV the sweeper may expire ops (their slot becomes NULL); in
 * SEND it cancels the send instead. The aio callback takes what is left
 * when it moves to SETTLE.
 *
 * Lost connections: req0 resends a request whose pipe closed on the next
 * pipe, which could run a write twice (the node that restarts forgets the
 * nonce). So when a pipe goes (NNG_PIPE_EV_REM_POST, which nng runs before
 * it starts to reconnect) every frame waiting for its answer is cancelled:
 * reads are retried by us (fresh frame, fresh nonce), writes end with
 * SHOAL_ETIMEOUT (outcome unknown). NNG_OPT_REQ_RESENDTIME is infinite for
 * the same reason.
 *
 * Close: closed is set under the lock, so no thread starts a new send; close
 * waits until the threads between taking a context and nng_ctx_send have
 * left (senders == 0), then stops every aio (a pending one completes with
 * NNG_ECANCELED and its callback fails the ops with SHOAL_ECLOSED); a send
 * or receive started on an already stopped aio never calls back, so the ops
 * still attached afterwards are failed by close itself.
 *
 * Lock order: c->mtx, then nng's own locks (nng_aio_cancel is called under
 * c->mtx; nng never calls back into libshoal holding a lock of its own, and
 * cancellation completes callbacks asynchronously).
 */
#include "client_int.h"

#include "proto/clock.h"
#include "proto/mem.h"

#include <nng/protocol/reqrep0/req.h>
#include <string.h>

#define RECV_SLACK_BYTES (64u << 10)
#define SCRATCH_KEEP     (4u << 20) /* larger scratch buffers are freed */

static void ctx_cb(void *arg);
static void frame_start(cl_ctx *x);

/* ---- opening and closing
 * -----------------------------------------------------
 */

static void
pipe_cb(nng_pipe p, nng_pipe_ev ev, void *arg)
{
    cl_conn *c = arg;
    (void) p;
    pthread_mutex_lock(&c->mtx);
    if (ev == NNG_PIPE_EV_ADD_POST) {
        c->pipes++;
    } else if (ev == NNG_PIPE_EV_REM_POST) {
        c->pipes -= c->pipes > 0;
        for (unsigned i = 0; i < c->n_ctx && !c->closed; i++)
            if (c->ctxs[i].state == CX_RECV)
                nng_aio_cancel(c->ctxs[i].aio);
    }
    pthread_mutex_unlock(&c->mtx);
}

bool
cl_conn_up(cl_conn *c)
{
    pthread_mutex_lock(&c->mtx);
    bool up = c->pipes > 0 && !c->closed;
    pthread_mutex_unlock(&c->mtx);
    return up;
}

static shoal_err
nng_rc(int rv)
{
    switch (rv) {
    case 0:
        return SHOAL_OK;
    case NNG_ENOMEM:
        return SHOAL_ENOMEM;
    case NNG_EADDRINVAL:
    case NNG_EINVAL:
    case NNG_ENOTSUP:
        return SHOAL_EINVAL;
    default:
        return SHOAL_EUNAVAILABLE;
    }
}

static shoal_err
sock_setup(cl_conn *c, size_t recv_max)
{
    int rv;
    if ((rv = nng_req0_open(&c->sock)) != 0)
        return nng_rc(rv);
    c->sock_open = true;
    if ((rv = nng_socket_set_ms(c->sock, NNG_OPT_REQ_RESENDTIME,
                                NNG_DURATION_INFINITE)) != 0 ||
        (rv = nng_socket_set_size(c->sock, NNG_OPT_RECVMAXSZ, recv_max)) != 0 ||
        (rv = nng_socket_set_ms(c->sock, NNG_OPT_RECONNMINT, 10)) != 0 ||
        (rv = nng_socket_set_ms(c->sock, NNG_OPT_RECONNMAXT, 500)) != 0 ||
        (rv = nng_pipe_notify(c->sock, NNG_PIPE_EV_ADD_POST, pipe_cb, c)) !=
            0 ||
        (rv = nng_pipe_notify(c->sock, NNG_PIPE_EV_REM_POST, pipe_cb, c)) != 0)
        return nng_rc(rv);
    return SHOAL_OK;
}

static shoal_err
ctxs_setup(cl_conn *c, unsigned n, size_t max_ops)
{
    int rv;
    c->ctxs = mem_calloc(n, sizeof(cl_ctx));
    c->free_ctx = mem_calloc(n, sizeof(unsigned));
    cl_op **slots = mem_calloc(n * max_ops, sizeof(cl_op *));
    if (c->ctxs == NULL || c->free_ctx == NULL || slots == NULL) {
        mem_free(slots);
        return SHOAL_ENOMEM;
    }
    c->n_ctx = n;
    for (unsigned i = 0; i < n; i++) {
        cl_ctx *x = &c->ctxs[i];
        x->c = c;
        x->ops = slots + (size_t) i * max_ops;
        pbuf_arena_init(&x->arena, 16u << 10);
        if ((rv = nng_aio_alloc(&x->aio, ctx_cb, x)) != 0)
            return nng_rc(rv);
        if ((rv = nng_ctx_open(&x->ctx, c->sock)) != 0)
            return nng_rc(rv);
        x->ctx_open = true;
        c->free_ctx[c->n_free++] = n - 1 - i;
    }
    return SHOAL_OK;
}

shoal_err
cl_conn_open(shoal *db, const char *url, cl_conn **out)
{
    shoal_err rc = SHOAL_ENOMEM;
    *out = NULL;
    cl_conn *c = mem_calloc(1, sizeof(*c));
    if (c == NULL)
        return SHOAL_ENOMEM;
    c->db = db;
    pthread_mutex_init(&c->mtx, NULL);
    pthread_cond_init(&c->cv, NULL);
    if ((c->url = mem_strdup(url)) == NULL)
        goto fail;
    if ((rc = sock_setup(c, db->o.max_frame_bytes + RECV_SLACK_BYTES)) !=
            SHOAL_OK ||
        (rc = ctxs_setup(c, db->o.max_inflight, db->o.max_frame_ops)) !=
            SHOAL_OK)
        goto fail;
    int rv = nng_dial(c->sock, url, NULL, NNG_FLAG_NONBLOCK);
    if (rv != 0) {
        cl_log(0, "dial %s: %s", url, nng_strerror(rv));
        rc = nng_rc(rv);
        goto fail;
    }
    *out = c;
    return SHOAL_OK;
fail:
    cl_conn_close(c);
    return rc;
}

static void
drop_msg(nng_aio *aio)
{
    nng_msg *m = nng_aio_get_msg(aio);
    nng_aio_set_msg(aio, NULL);
    if (m != NULL)
        nng_msg_free(m);
}

/* Fail every op still attached to a context whose aio is stopped, and the
 * queue, with SHOAL_ECLOSED. */
static void
fail_leftovers(cl_conn *c)
{
    for (unsigned i = 0; i < c->n_ctx; i++) {
        cl_ctx *x = &c->ctxs[i];
        if (x->aio != NULL)
            drop_msg(x->aio);
        if (x->state == CX_SEND || x->state == CX_RECV) {
            for (size_t k = 0; k < x->n_ops; k++)
                if (x->ops[k] != NULL) {
                    x->ops[k]->st = SHOAL_ECLOSED;
                    cl_finish(x->ops[k]);
                }
            x->n_ops = 0;
            x->state = CX_FREE;
        }
    }
    cl_op *q = c->qhead;
    c->qhead = c->qtail = NULL;
    c->qlen = 0;
    while (q != NULL) {
        cl_op *next = q->next;
        q->st = SHOAL_ECLOSED;
        cl_finish(q);
        q = next;
    }
}

void
cl_conn_shutdown(cl_conn *c)
{
    pthread_mutex_lock(&c->mtx);
    c->closed = true;
    while (c->senders > 0)
        pthread_cond_wait(&c->cv, &c->mtx);
    pthread_mutex_unlock(&c->mtx);
    for (unsigned i = 0; i < c->n_ctx; i++)
        if (c->ctxs[i].aio != NULL)
            nng_aio_stop(c->ctxs[i].aio);
    /* No callback runs from here on. */
    fail_leftovers(c);
    if (c->sock_open) {
        nng_pipe_notify(c->sock, NNG_PIPE_EV_ADD_POST, NULL, NULL);
        nng_pipe_notify(c->sock, NNG_PIPE_EV_REM_POST, NULL, NULL);
        nng_close(c->sock);
        c->sock_open = false;
    }
}

void
cl_conn_close(cl_conn *c)
{
    if (c == NULL)
        return;
    cl_conn_shutdown(c);
    for (unsigned i = 0; i < c->n_ctx; i++) {
        if (c->ctxs[i].aio != NULL)
            nng_aio_free(c->ctxs[i].aio);
        pbuf_arena_fini(&c->ctxs[i].arena);
        mem_free(c->ctxs[i].scratch);
    }
    if (c->ctxs != NULL)
        mem_free(c->ctxs[0].ops);
    mem_free(c->ctxs);
    mem_free(c->free_ctx);
    mem_free(c->url);
    pthread_cond_destroy(&c->cv);
    pthread_mutex_destroy(&c->mtx);
    mem_free(c);
}

/* ---- queue and frames
 * ---------------------------------------------------------
 */

/* Move the head of the queue into x (locked; queue not empty). */
static void
take_frame_locked(cl_conn *c, cl_ctx *x)
{
    const shoal_opts *o = &c->db->o;
    size_t n = 0, bytes = 0;
    uint64_t deadline = 0;
    while (c->qhead != NULL && n < o->max_frame_ops) {
        cl_op *op = c->qhead;
        if (n > 0 && bytes + op->est_bytes > o->max_frame_bytes)
            break;
        c->qhead = op->next;
        op->next = NULL;
        bytes += op->est_bytes;
        if (op->deadline_ns > deadline)
            deadline = op->deadline_ns;
        x->ops[n++] = op;
    }
    if (c->qhead == NULL)
        c->qtail = NULL;
    c->qlen -= n;
    x->n_ops = n;
    x->deadline_ns = deadline;
    x->state = CX_BUILD;
    c->senders++;
}

/* A free context with the queue's head in it, or NULL (locked). */
static cl_ctx *
take_ctx_locked(cl_conn *c)
{
    if (c->closed || c->n_free == 0 || c->qhead == NULL)
        return NULL;
    cl_ctx *x = &c->ctxs[c->free_ctx[--c->n_free]];
    take_frame_locked(c, x);
    return x;
}

void
cl_conn_submit(cl_conn *c, cl_op *op)
{
    op->next = NULL;
    op->sent = false;
    pthread_mutex_lock(&c->mtx);
    if (c->closed) {
        pthread_mutex_unlock(&c->mtx);
        op->st = SHOAL_ECLOSED;
        cl_finish(op);
        return;
    }
    if (c->qtail != NULL)
        c->qtail->next = op;
    else
        c->qhead = op;
    c->qtail = op;
    c->qlen++;
    cl_ctx *x = take_ctx_locked(c);
    pthread_mutex_unlock(&c->mtx);
    if (x != NULL)
        frame_start(x);
}

/* After a frame is settled: take the next one or become free. */
static void
ctx_next(cl_ctx *x)
{
    cl_conn *c = x->c;
    pthread_mutex_lock(&c->mtx);
    x->n_ops = 0;
    if (!c->closed && c->qhead != NULL) {
        take_frame_locked(c, x);
        pthread_mutex_unlock(&c->mtx);
        frame_start(x);
        return;
    }
    x->state = CX_FREE;
    c->free_ctx[c->n_free++] = (unsigned) (x - c->ctxs);
    pthread_mutex_unlock(&c->mtx);
}

static void
sender_done(cl_conn *c)
{
    pthread_mutex_lock(&c->mtx);
    if (--c->senders == 0 && c->closed)
        pthread_cond_broadcast(&c->cv);
    pthread_mutex_unlock(&c->mtx);
}

static shoal_err
frame_build(cl_ctx *x, nng_msg **out)
{
    shoal *db = x->c->db;
    size_t blen = 0, olen = 0;
    nng_msg *m = NULL;
    cl_pack_in in = {
        .ops = x->ops,
        .n = x->n_ops,
        .first_id = atomic_fetch_add(&db->next_id, x->n_ops),
        .map_epoch = atomic_load(&db->map_epoch),
        .now_ns = clock_mono_ns(),
    };
    pbuf_arena_reset(&x->arena);
    shoal_err rc =
        cl_frame_pack(&in, &x->arena, &x->scratch, &x->scratch_cap, &blen);
    pbuf_arena_reset(&x->arena);
    if (rc != SHOAL_OK)
        return rc;
    size_t flen = wire_frame_len(blen, db->key != NULL);
    if (nng_msg_alloc(&m, flen) != 0)
        return SHOAL_ENOMEM;
    rc = wire_seal(&db->snd, db->key, 0, x->scratch, blen, nng_msg_body(m),
                   flen, &olen, x->nonce);
    if (rc != SHOAL_OK) {
        nng_msg_free(m);
        return rc;
    }
    if (x->scratch_cap > SCRATCH_KEEP) {
        mem_free(x->scratch);
        x->scratch = NULL;
        x->scratch_cap = 0;
    }
    *out = m;
    return SHOAL_OK;
}

static nng_duration
timeout_ms(uint64_t deadline_ns)
{
    uint64_t now = clock_mono_ns();
    if (deadline_ns <= now)
        return 1;
    uint64_t ms = (deadline_ns - now + 999999u) / 1000000u;
    return ms > INT32_MAX ? INT32_MAX : (nng_duration) ms;
}

/* Called by the thread that took x (state BUILD, counted in senders). */
static void
frame_start(cl_ctx *x)
{
    cl_conn *c = x->c;
    nng_msg *m = NULL;
    shoal_err rc = frame_build(x, &m);
    if (rc == SHOAL_OK) {
        pthread_mutex_lock(&c->mtx);
        x->state = CX_SEND;
        pthread_mutex_unlock(&c->mtx);
        nng_aio_set_msg(x->aio, m);
        nng_aio_set_timeout(x->aio, timeout_ms(x->deadline_ns));
        nng_ctx_send(x->ctx, x->aio);
        sender_done(c);
        return;
    }
    cl_log(1, "%s: cannot build a frame of %zu ops: %s", c->url, x->n_ops,
           shoal_strerror(rc));
    pthread_mutex_lock(&c->mtx);
    x->state = CX_SETTLE;
    pthread_mutex_unlock(&c->mtx);
    for (size_t i = 0; i < x->n_ops; i++) {
        x->ops[i]->st = rc;
        x->ops[i]->retry = false;
    }
    cl_settle(c->db, x->ops, x->n_ops);
    sender_done(c);
    ctx_next(x);
}

/* ---- answers
 * -------------------------------------------------------------------
 */

/* Move to SETTLE and compact ops[] (the sweeper's NULLs out). Returns
 * whether the conn is closed. */
static bool
claim_locked(cl_ctx *x)
{
    size_t n = 0;
    for (size_t i = 0; i < x->n_ops; i++)
        if (x->ops[i] != NULL)
            x->ops[n++] = x->ops[i];
    x->n_ops = n;
    x->state = CX_SETTLE;
    return x->c->closed;
}

/* A newer map that came with EWRONGSHARD is adopted (it was validated by
 * the decoder); otherwise EWRONGSHARD or a newer epoch named by any answer
 * makes us ask this node for its map. */
static void
after_answer(shoal *db, cl_ctx *x, cl_map *new_map, uint64_t hint)
{
    bool wrong_shard = false;
    for (size_t i = 0; i < x->n_ops; i++)
        wrong_shard |= x->ops[i]->st == SHOAL_EWRONGSHARD;
    if (new_map != NULL) {
        cl_map_adopt(db, new_map);
        return;
    }
    /* Ask once per epoch a node names, not once per frame. */
    uint64_t asked = atomic_load(&db->map_hint);
    bool newer = hint > atomic_load(&db->map_epoch) && hint > asked &&
                 atomic_compare_exchange_strong(&db->map_hint, &asked, hint);
    if (wrong_shard || newer)
        cl_map_refresh(db, x->c);
}

/* Count an answer that was not believed; log at most one a second. */
static void
bad_answer(cl_ctx *x, shoal_err rc)
{
    shoal *db = x->c->db;
    uint64_t n = atomic_fetch_add(&db->bad_frames, 1) + 1;
    uint64_t now = clock_mono_ns(), last = atomic_load(&db->bad_logged_ns);
    if ((last != 0 && now - last < 1000000000ull) ||
        !atomic_compare_exchange_strong(&db->bad_logged_ns, &last, now))
        return;
    cl_log(1,
           "%s: answer not believed (%s), %llu so far; its %zu ops: reads "
           "retried, writes SHOAL_EIO",
           x->c->url, shoal_strerror(rc), (unsigned long long) n, x->n_ops);
}

static void
decode_answer(cl_ctx *x)
{
    shoal *db = x->c->db;
    nng_msg *m = nng_aio_get_msg(x->aio);
    nng_aio_set_msg(x->aio, NULL);
    cl_map *new_map = NULL;
    uint64_t hint = 0;
    shoal_err rc =
        shoal__frame_decode(db->key, nng_msg_body(m), nng_msg_len(m), x->nonce,
                            x->ops, x->n_ops, &x->arena, &new_map, &hint);
    if (rc != SHOAL_OK)
        bad_answer(x, rc);
    after_answer(db, x, new_map, hint);
    cl_settle(db, x->ops, x->n_ops);
    pbuf_arena_reset(&x->arena);
    nng_msg_free(m);
}

static void
on_answer(cl_ctx *x, int rv)
{
    cl_conn *c = x->c;
    pthread_mutex_lock(&c->mtx);
    bool closed = claim_locked(x);
    pthread_mutex_unlock(&c->mtx);
    if (rv == 0) {
        decode_answer(x);
    } else {
        for (size_t i = 0; i < x->n_ops; i++) {
            cl_op *op = x->ops[i];
            if (closed)
                op->st = SHOAL_ECLOSED, op->retry = false;
            else if (rv == NNG_ETIMEDOUT)
                op->st = SHOAL_ETIMEOUT, op->retry = !cl_is_write(op->kind);
            else
                cl_verdict_lost(op, SHOAL_ETIMEOUT);
        }
        cl_settle(c->db, x->ops, x->n_ops);
    }
    ctx_next(x);
}

static void
on_sent(cl_ctx *x, int rv)
{
    cl_conn *c = x->c;
    if (rv == 0) {
        pthread_mutex_lock(&c->mtx);
        for (size_t i = 0; i < x->n_ops; i++)
            if (x->ops[i] != NULL)
                x->ops[i]->sent = x->ops[i]->ever_sent = true;
        x->state = CX_RECV;
        pthread_mutex_unlock(&c->mtx);
        nng_aio_set_timeout(x->aio, timeout_ms(x->deadline_ns));
        nng_ctx_recv(x->ctx, x->aio);
        return;
    }
    drop_msg(x->aio);
    pthread_mutex_lock(&c->mtx);
    bool closed = claim_locked(x);
    pthread_mutex_unlock(&c->mtx);
    /* Not sent (no connection took it before the deadline): anything may be
     * retried while time is left. A write an earlier attempt sent may have
     * run (SHOAL_ETIMEOUT); a read did nothing either way, and the node is
     * unreachable now (SHOAL_EUNAVAILABLE). */
    for (size_t i = 0; i < x->n_ops; i++) {
        cl_op *op = x->ops[i];
        op->retry = !closed;
        if (closed)
            op->st = SHOAL_ECLOSED;
        else if (op->ever_sent && cl_is_write(op->kind))
            op->st = SHOAL_ETIMEOUT;
        else
            op->st = SHOAL_EUNAVAILABLE;
    }
    cl_settle(c->db, x->ops, x->n_ops);
    ctx_next(x);
}

static void
ctx_cb(void *arg)
{
    cl_ctx *x = arg;
    int rv = nng_aio_result(x->aio);
    pthread_mutex_lock(&x->c->mtx);
    cl_ctx_state st = x->state;
    pthread_mutex_unlock(&x->c->mtx);
    if (st == CX_SEND)
        on_sent(x, rv);
    else
        on_answer(x, rv);
}

/* ---- deadlines
 * ------------------------------------------------------------------
 */

/* A queued op expires: EUNAVAILABLE when the node is unreachable and the
 * op cannot have run (never sent, or a read). */
static shoal_err
expired_status(const cl_conn *c, const cl_op *op)
{
    bool may_have_run = op->ever_sent && cl_is_write(op->kind);
    return !may_have_run && c->pipes == 0 ? SHOAL_EUNAVAILABLE : SHOAL_ETIMEOUT;
}

static void
expire_queue_locked(cl_conn *c, uint64_t now, cl_op **list)
{
    cl_op **pp = &c->qhead, *prev = NULL;
    while (*pp != NULL) {
        cl_op *op = *pp;
        if (op->deadline_ns > now) {
            prev = op;
            pp = &op->next;
            continue;
        }
        *pp = op->next;
        c->qlen--;
        op->st = expired_status(c, op);
        op->next = *list;
        *list = op;
    }
    c->qtail = prev;
}

/* In RECV an expired op is detached: it was sent, so SHOAL_ETIMEOUT. In
 * SEND the frame is cancelled instead: nng may hand it to a connection any
 * moment, so only the send callback knows whether it went (then the ops are
 * in RECV and expire next sweep) or not (then they are retried or finish as
 * never sent). Detaching it here could report "not executed" for a write
 * that is then sent. Cancelling under c->mtx is safe: see the lock order. */
static void
expire_inflight_locked(cl_conn *c, uint64_t now, cl_op **list)
{
    for (unsigned i = 0; i < c->n_ctx; i++) {
        cl_ctx *x = &c->ctxs[i];
        if (x->state != CX_SEND && x->state != CX_RECV)
            continue;
        for (size_t k = 0; k < x->n_ops; k++) {
            cl_op *op = x->ops[k];
            if (op == NULL || op->deadline_ns > now)
                continue;
            if (x->state == CX_SEND) {
                nng_aio_cancel(x->aio);
                break;
            }
            x->ops[k] = NULL;
            op->st = SHOAL_ETIMEOUT;
            op->next = *list;
            *list = op;
        }
    }
}

void
cl_conn_sweep(cl_conn *c, uint64_t now_ns)
{
    cl_op *list = NULL;
    pthread_mutex_lock(&c->mtx);
    if (!c->closed) {
        expire_queue_locked(c, now_ns, &list);
        expire_inflight_locked(c, now_ns, &list);
    }
    pthread_mutex_unlock(&c->mtx);
    while (list != NULL) {
        cl_op *next = list->next;
        list->retry = false;
        cl_finish(list);
        list = next;
    }
}

size_t
cl_conn_pending(cl_conn *c)
{
    pthread_mutex_lock(&c->mtx);
    size_t n = c->qlen;
    for (unsigned i = 0; i < c->n_ctx; i++) {
        const cl_ctx *x = &c->ctxs[i];
        if (x->state == CX_FREE || x->state == CX_SETTLE)
            continue; /* settled ops are finished or delayed */
        for (size_t k = 0; k < x->n_ops; k++)
            n += x->ops[k] != NULL;
    }
    pthread_mutex_unlock(&c->mtx);
    return n;
}
