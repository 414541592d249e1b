/*
 * test_srv.c -- the client listener (node/srv.h), served in-process on a
 * loopback TCP port and driven by raw nng REQ sockets that build, seal and
 * open frames themselves (protobuf-c + wire.h), so every check is on the
 * bytes a real client would see.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "node/exec.h"
#include "node/metrics.h"
#include "node/srv.h"
#include "proto/clock.h"
#include "proto/mem.h"
#include "proto/shoal.pb-c.h"
#include "proto/wire.h"
#include "storage/store.h"
#include "tests/support/fs_mem.h"
#include "tests/support/testutil.h"
#include "tests/support/workload.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <nng/nng.h>
#include <nng/protocol/reqrep0/req.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define N_SHARDS   16
#define RECV_MS    10000 /* a client gives up on an answer after this */
#define WAIT_MS    10000 /* bounded polls */
#define MAX_REQS   65536 /* srv.c's limit of requests per frame */
#define NONCE      WIRE_NONCE_BYTES
#define KEY_READ   1
#define KEY_WRITE  2
#define KEY_ADMIN  3
#define KEY_PREFIX 4 /* write, confined to "app:" */
#define KEY_PEER   5

typedef enum store_kind {
    ST_MEMORY,
    ST_DISK,   /* fsync always, in the test's temporary directory */
    ST_FS_MEM, /* fsync always on fs_mem (fault injection) */
} store_kind;

typedef struct fixture {
    char *dir;
    fs_mem *fsm;
    store *st;
    metrics *m;
    exec_ctx x;
    wire_keyring *kr;
    wire_key keys[6]; /* [id]; [0] is a key the node does not know */
    srv *s;
    char url[64];
} fixture;

/* ---- fixture ------------------------------------------------------------- */

static int
free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct sockaddr_in a;
    memset(&a, 0, sizeof(a));
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = 0;
    assert_int_equal(bind(fd, (struct sockaddr *) &a, sizeof(a)), 0);
    socklen_t len = sizeof(a);
    assert_int_equal(getsockname(fd, (struct sockaddr *) &a, &len), 0);
    close(fd);
    return ntohs(a.sin_port);
}

static void
make_keys(fixture *f)
{
    static const struct {
        uint32_t id;
        wire_role role;
        const char *prefix;
    } spec[] = {
        {99, WIRE_ROLE_ADMIN, ""}, /* [0]: not in the node's ring */
        {KEY_READ, WIRE_ROLE_READ, ""},   {KEY_WRITE, WIRE_ROLE_WRITE, ""},
        {KEY_ADMIN, WIRE_ROLE_ADMIN, ""}, {KEY_PREFIX, WIRE_ROLE_WRITE, "app:"},
        {KEY_PEER, WIRE_ROLE_PEER, ""},
    };
    char text[6 * 600] = "# node key file\n";
    size_t off = strlen(text);
    for (size_t i = 0; i < 6; i++) {
        const char *p = spec[i].prefix;
        assert_int_equal(wire_key_generate(spec[i].id, spec[i].role,
                                           (const uint8_t *) p, strlen(p),
                                           &f->keys[i]),
                         SHOAL_OK);
        if (i == 0)
            continue;
        assert_int_equal(
            wire_key_format(&f->keys[i], text + off, sizeof(text) - off),
            SHOAL_OK);
        off += strlen(text + off);
    }
    char err[128] = "";
    assert_int_equal(wire_keyring_parse(text, off, &f->kr, err, sizeof(err)),
                     SHOAL_OK);
    assert_int_equal(wire_keyring_count(f->kr), 5);
}

static int
fx_up(void **state)
{
    fixture *f = calloc(1, sizeof(*f));
    if (f == NULL || tu_tmpdir_up((void **) &f->dir) != 0)
        return -1;
    make_keys(f);
    *state = f;
    return 0;
}

static int
fx_down(void **state)
{
    fixture *f = *state;
    srv_close(f->s);
    store_close(f->st);
    fs_mem_close(f->fsm);
    metrics_close(f->m);
    wire_keyring_free(f->kr);
    tu_tmpdir_down((void **) &f->dir);
    free(f);
    return 0;
}

static void
open_store(fixture *f, store_kind kind)
{
    store_opts o;
    store_opts_default(&o);
    o.n_shards = N_SHARDS;
    o.background = false;
    if (kind == ST_DISK) {
        o.data_dir = f->dir;
        o.fsync = WAL_FSYNC_ALWAYS;
    } else if (kind == ST_FS_MEM) {
        assert_int_equal(fs_mem_open(&f->fsm), SHOAL_OK);
        wl_store_opts(&o, fs_mem_fs(f->fsm), N_SHARDS, 1u << 20, 1u << 16);
    }
    assert_int_equal(store_open(&o, &f->st), SHOAL_OK);
    f->x.st = f->st;
    f->x.n_shards = N_SHARDS;
    memset(f->x.hash_key, 0x5a, sizeof(f->x.hash_key));
    f->x.node_id = "srv-test";
    f->x.map_epoch = 1;
    f->x.max_key_bytes = o.max_key_bytes;
    f->x.max_value_bytes = o.max_value_bytes;
    f->x.max_batch_ops = o.max_batch_ops;
    f->x.start_ms = clock_mono_ns() / 1000000u;
}

/* Open the store and a listener on a free loopback port. */
static void
fx_start(fixture *f, store_kind kind, bool insecure, size_t max_frame)
{
    open_store(f, kind);
    assert_int_equal(metrics_open(&f->m), SHOAL_OK);
    srv_opts o;
    srv_opts_default(&o);
    o.x = &f->x;
    o.keys = insecure ? NULL : f->kr;
    o.insecure = insecure;
    o.m = f->m;
    o.n_contexts = 16;
    o.n_workers = 3;
    if (max_frame != 0)
        o.max_frame_bytes = max_frame;
    shoal_err rc = SHOAL_EUNAVAILABLE;
    for (int tries = 0; tries < 20 && rc == SHOAL_EUNAVAILABLE; tries++) {
        snprintf(f->url, sizeof(f->url), "tcp://127.0.0.1:%d", free_port());
        f->x.advertise_url = f->url;
        o.listen_url = f->url;
        rc = srv_open(&o, &f->s);
    }
    assert_int_equal(rc, SHOAL_OK);
}

/* Value of one series ("name{labels}") in the metrics text; 0 if absent. */
static uint64_t
metric(fixture *f, const char *series)
{
    char *text = NULL;
    size_t len = 0;
    assert_int_equal(metrics_render(f->m, NULL, &text, &len), SHOAL_OK);
    uint64_t v = 0;
    size_t n = strlen(series);
    for (const char *p = text; p != NULL && *p != '\0';) {
        if (strncmp(p, series, n) == 0 && p[n] == ' ') {
            v = strtoull(p + n + 1, NULL, 10);
            break;
        }
        p = strchr(p, '\n');
        p = p != NULL ? p + 1 : NULL;
    }
    mem_free(text);
    return v;
}

static bool
poll_until(bool (*cond)(void *), void *arg)
{
    uint64_t end = clock_mono_ns() + (uint64_t) WAIT_MS * 1000000u;
    while (!cond(arg)) {
        if (clock_mono_ns() > end)
            return false;
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL); /* polling step, bounded by WAIT_MS */
    }
    return true;
}

typedef struct settle {
    fixture *f;
    uint64_t frames_out;
} settle;

static bool
settled(void *arg)
{
    settle *w = arg;
    return srv_inflight(w->f->s) == 0 &&
           metric(w->f, "shoal_frames_total{dir=\"out\"}") == w->frames_out;
}

/* A client can hold its answer before the node's send callback has run:
 * wait until the node has counted frames_out answers and has none in
 * flight. */
static void
expect_settled(fixture *f, uint64_t frames_out)
{
    settle w = {f, frames_out};
    if (!poll_until(settled, &w))
        fail_msg(
            "node did not settle: %u in flight, %llu answers sent, want "
            "%llu",
            srv_inflight(f->s),
            (unsigned long long) metric(f, "shoal_frames_total{dir=\"out\"}"),
            (unsigned long long) frames_out);
}

static uint64_t
refused(fixture *f, const char *reason)
{
    char series[96];
    snprintf(series, sizeof(series),
             "shoal_frames_refused_total{reason=\"%s\"}", reason);
    return metric(f, series);
}

/* ---- client side ----------------------------------------------------------
 */

typedef struct client {
    nng_socket sock;
    wire_sender snd;
    const wire_key *k; /* NULL: plaintext */
} client;

static void
cl_open(client *c, const char *url, const wire_key *k, int recv_ms)
{
    assert_int_equal(nng_req0_open(&c->sock), 0);
    assert_int_equal(nng_socket_set_ms(c->sock, NNG_OPT_RECVTIMEO, recv_ms), 0);
    assert_int_equal(nng_dial(c->sock, url, NULL, 0), 0);
    wire_sender_init(&c->snd);
    c->k = k;
}

static void
cl_close(client *c)
{
    nng_close(c->sock);
}

/* Seal body (any bytes) as a request frame into a malloc'd buffer. */
static uint8_t *
seal_bytes(client *c, const wire_key *k, uint8_t flags, const uint8_t *body,
           size_t body_len, size_t *len, uint8_t nonce[NONCE])
{
    size_t cap = wire_frame_len(body_len, k != NULL);
    uint8_t *out = malloc(cap);
    assert_non_null(out);
    assert_int_equal(
        wire_seal(&c->snd, k, flags, body, body_len, out, cap, len, nonce),
        SHOAL_OK);
    return out;
}

static uint8_t *
seal_reqs(client *c, const wire_key *k, Shoal__Request **reqs, size_t n,
          size_t *len, uint8_t nonce[NONCE])
{
    Shoal__RequestFrame rf = SHOAL__REQUEST_FRAME__INIT;
    rf.n_reqs = n;
    rf.reqs = reqs;
    size_t blen = shoal__request_frame__get_packed_size(&rf);
    uint8_t *body = malloc(blen + 1);
    assert_non_null(body);
    shoal__request_frame__pack(&rf, body);
    uint8_t *out = seal_bytes(c, k, 0, body, blen, len, nonce);
    free(body);
    return out;
}

typedef struct reply {
    shoal_err err_frame;      /* status of an error frame, else SHOAL_OK */
    Shoal__ResponseFrame *rf; /* the opened answer (free with reply_free) */
} reply;

static void
reply_free(reply *r)
{
    if (r->rf != NULL)
        shoal__response_frame__free_unpacked(r->rf, NULL);
    r->rf = NULL;
}

/* Open an answer the way a client must: error frames are plaintext status
 * only; anything else must open under our key and echo our nonce. NULL, or
 * what is wrong (no cmocka asserts: loader threads use it too). */
static const char *
open_reply(const client *c, uint8_t *buf, size_t len,
           const uint8_t nonce[NONCE], reply *out)
{
    wire_hdr h;
    out->err_frame = SHOAL_OK;
    out->rf = NULL;
    if (wire_parse_hdr(buf, len, &h) != SHOAL_OK)
        return "answer header does not parse";
    if ((h.flags & WIRE_F_RESPONSE) == 0)
        return "answer without the response flag";
    if (h.flags & WIRE_F_ERROR) {
        if (wire_error_status(buf, len, &out->err_frame) != SHOAL_OK ||
            out->err_frame == SHOAL_OK)
            return "bad error frame";
        return NULL;
    }
    const uint8_t *body = NULL;
    size_t blen = 0;
    if (c->k != NULL) {
        if ((h.flags & WIRE_F_PLAIN) != 0 || h.key_id != c->k->id)
            return "answer not sealed under our key";
        if (wire_open(c->k, buf, len, &blen) != SHOAL_OK)
            return "answer does not open";
        body = buf + WIRE_HDR_BYTES;
    } else if (wire_open_plain(buf, len, &body, &blen) != SHOAL_OK) {
        return "plaintext answer does not open";
    }
    out->rf = shoal__response_frame__unpack(NULL, blen, body);
    if (out->rf == NULL)
        return "answer is no ResponseFrame";
    if (!out->rf->has_req_nonce || out->rf->req_nonce.len != NONCE ||
        memcmp(out->rf->req_nonce.data, nonce, NONCE) != 0) {
        reply_free(out);
        return "answer does not echo our nonce";
    }
    return NULL;
}

/* Send a frame, wait for the answer. 0 or the nng error; *why set when
 * the answer is wrong. */
static int
cl_call_soft(client *c, const uint8_t *frame, size_t len,
             const uint8_t nonce[NONCE], reply *out, const char **why)
{
    *why = NULL;
    out->rf = NULL;
    int rv = nng_send(c->sock, (void *) frame, len, 0);
    if (rv != 0)
        return rv;
    uint8_t *buf = NULL;
    size_t blen = 0;
    if ((rv = nng_recv(c->sock, &buf, &blen, NNG_FLAG_ALLOC)) != 0)
        return rv;
    *why = open_reply(c, buf, blen, nonce, out);
    nng_free(buf, blen);
    return 0;
}

/* As cl_call_soft, failing the test on a wrong answer. */
static int
cl_call(client *c, const uint8_t *frame, size_t len, const uint8_t nonce[NONCE],
        reply *out)
{
    const char *why = NULL;
    int rv = cl_call_soft(c, frame, len, nonce, out, &why);
    if (why != NULL)
        fail_msg("%s", why);
    return rv;
}

/* Seal reqs under the client's key, call, expect a sealed answer with one
 * response per request, in order. */
static void
cl_reqs(client *c, Shoal__Request **reqs, size_t n, reply *out)
{
    uint8_t nonce[NONCE];
    size_t len = 0;
    uint8_t *frame = seal_reqs(c, c->k, reqs, n, &len, nonce);
    assert_int_equal(cl_call(c, frame, len, nonce, out), 0);
    free(frame);
    assert_int_equal(out->err_frame, SHOAL_OK);
    assert_int_equal(out->rf->n_resps, n);
    for (size_t i = 0; i < n; i++) {
        assert_true(out->rf->resps[i]->has_id);
        assert_int_equal(out->rf->resps[i]->id, reqs[i]->id);
    }
}

/* Request builders: each fills caller-owned structs. */
typedef struct req_buf {
    Shoal__Request r;
    Shoal__PutReq put;
    Shoal__GetReq get;
    char key[64];
    char val[64];
} req_buf;

static Shoal__Request *
mk_put(req_buf *b, uint64_t id, const char *key, const char *val)
{
    shoal__request__init(&b->r);
    shoal__put_req__init(&b->put);
    snprintf(b->key, sizeof(b->key), "%s", key);
    snprintf(b->val, sizeof(b->val), "%s", val);
    b->put.has_key = b->put.has_value = true;
    b->put.key.data = (uint8_t *) b->key;
    b->put.key.len = strlen(b->key);
    b->put.value.data = (uint8_t *) b->val;
    b->put.value.len = strlen(b->val);
    b->r.has_id = true;
    b->r.id = id;
    b->r.op_case = SHOAL__REQUEST__OP_PUT;
    b->r.put = &b->put;
    return &b->r;
}

static Shoal__Request *
mk_get(req_buf *b, uint64_t id, const char *key)
{
    shoal__request__init(&b->r);
    shoal__get_req__init(&b->get);
    snprintf(b->key, sizeof(b->key), "%s", key);
    b->get.has_key = true;
    b->get.key.data = (uint8_t *) b->key;
    b->get.key.len = strlen(b->key);
    b->r.has_id = true;
    b->r.id = id;
    b->r.op_case = SHOAL__REQUEST__OP_GET;
    b->r.get = &b->get;
    return &b->r;
}

static void
expect_status(const Shoal__Response *r, shoal_err want)
{
    shoal_err got = r->has_status ? (shoal_err) r->status : SHOAL_OK;
    if (got != want)
        fail_msg("response %llu: %s (%s), want %s", (unsigned long long) r->id,
                 shoal_errname(got), r->message != NULL ? r->message : "",
                 shoal_errname(want));
}

static void
expect_got_value(const Shoal__Response *r, const char *val)
{
    expect_status(r, SHOAL_OK);
    assert_int_equal(r->result_case, SHOAL__RESPONSE__RESULT_GET);
    assert_non_null(r->get);
    assert_int_equal(r->get->value.len, strlen(val));
    assert_memory_equal(r->get->value.data, val, strlen(val));
}

/* One put or get through client c; the status. */
static shoal_err
one_put(client *c, const char *key, const char *val)
{
    req_buf b;
    Shoal__Request *r = mk_put(&b, 7, key, val);
    reply rep;
    cl_reqs(c, &r, 1, &rep);
    shoal_err st = rep.rf->resps[0]->has_status
                       ? (shoal_err) rep.rf->resps[0]->status
                       : SHOAL_OK;
    reply_free(&rep);
    return st;
}

static shoal_err
one_get(client *c, const char *key)
{
    req_buf b;
    Shoal__Request *r = mk_get(&b, 8, key);
    reply rep;
    cl_reqs(c, &r, 1, &rep);
    shoal_err st = rep.rf->resps[0]->has_status
                       ? (shoal_err) rep.rf->resps[0]->status
                       : SHOAL_OK;
    reply_free(&rep);
    return st;
}

/* Send raw frame bytes, expect an error frame with want. */
static void
expect_refused(client *c, const uint8_t *frame, size_t len, shoal_err want)
{
    uint8_t nonce[NONCE] = {0};
    reply rep;
    assert_int_equal(cl_call(c, frame, len, nonce, &rep), 0);
    assert_null(rep.rf);
    assert_int_equal(rep.err_frame, want);
}

/* ---- tests ----------------------------------------------------------------
 */

static void
test_srv_put_get_round_trip(void **state)
{
    fixture *f = *state;
    fx_start(f, ST_MEMORY, false, 0);
    client c;
    cl_open(&c, f->url, &f->keys[KEY_WRITE], RECV_MS);

    req_buf b;
    Shoal__Request *r = mk_put(&b, 41, "hello", "world");
    reply rep;
    cl_reqs(&c, &r, 1, &rep);
    expect_status(rep.rf->resps[0], SHOAL_OK);
    assert_int_equal(rep.rf->resps[0]->result_case,
                     SHOAL__RESPONSE__RESULT_WRITE);
    assert_true(rep.rf->resps[0]->write->version > 0);
    reply_free(&rep);

    r = mk_get(&b, 42, "hello");
    cl_reqs(&c, &r, 1, &rep);
    expect_got_value(rep.rf->resps[0], "world");
    reply_free(&rep);

    r = mk_get(&b, 43, "absent");
    cl_reqs(&c, &r, 1, &rep);
    expect_status(rep.rf->resps[0], SHOAL_ENOTFOUND);
    reply_free(&rep);
    cl_close(&c);

    assert_int_equal(metric(f, "shoal_requests_total{op=\"put\"}"), 1);
    assert_int_equal(metric(f, "shoal_requests_total{op=\"get\"}"), 2);
    assert_int_equal(metric(f, "shoal_frames_total{dir=\"in\"}"), 3);
    expect_settled(f, 3);
}

/* Many requests in one frame: one answer frame, in order, each its own
 * status; a write is visible to a read later in the same frame. */
static void
test_srv_many_requests_one_frame(void **state)
{
    fixture *f = *state;
    fx_start(f, ST_MEMORY, false, 0);
    client c;
    cl_open(&c, f->url, &f->keys[KEY_WRITE], RECV_MS);
    enum { N = 300 };
    req_buf *b = calloc(2 * N, sizeof(*b));
    Shoal__Request **reqs = calloc(2 * N, sizeof(*reqs));
    assert_non_null(b);
    assert_non_null(reqs);
    char key[32], val[32];
    for (size_t i = 0; i < N; i++) {
        snprintf(key, sizeof(key), "k%03zu", i);
        snprintf(val, sizeof(val), "v%zu", i * 7);
        reqs[2 * i] = mk_put(&b[2 * i], 1000 + 2 * i, key, val);
        /* every third get asks for a key not yet written */
        snprintf(key, sizeof(key), "k%03zu", i % 3 == 2 ? i + 1 : i);
        reqs[2 * i + 1] = mk_get(&b[2 * i + 1], 1001 + 2 * i, key);
    }
    reply rep;
    cl_reqs(&c, reqs, 2 * N, &rep);
    for (size_t i = 0; i < N; i++) {
        expect_status(rep.rf->resps[2 * i], SHOAL_OK);
        if (i % 3 == 2 && i + 1 < N) {
            expect_status(rep.rf->resps[2 * i + 1], SHOAL_ENOTFOUND);
            continue;
        }
        if (i % 3 == 2)
            continue;
        snprintf(val, sizeof(val), "v%zu", i * 7);
        expect_got_value(rep.rf->resps[2 * i + 1], val);
    }
    reply_free(&rep);

    /* An empty frame gets an empty answer that still echoes the nonce. */
    cl_reqs(&c, NULL, 0, &rep);
    assert_int_equal(rep.rf->n_resps, 0);
    reply_free(&rep);
    cl_close(&c);
    free(reqs);
    free(b);
    assert_int_equal(metric(f, "shoal_requests_total{op=\"put\"}"), N);
    assert_int_equal(metric(f, "shoal_requests_total{op=\"get\"}"), N);
}

static bool sync_cb_ran;
static pthread_t sync_cb_thread;

static void
note_commit(void *arg, shoal_err rc)
{
    (void) arg;
    assert_int_equal(rc, SHOAL_OK);
    sync_cb_thread = pthread_self();
    sync_cb_ran = true;
}

/* fsync=always on disk: a put's answer arrives only after its commit, so
 * by then the commit point is already durable (notify runs at once, in
 * this thread) and the WAL has been fsynced. */
static void
test_srv_answer_after_commit(void **state)
{
    fixture *f = *state;
    fx_start(f, ST_DISK, false, 0);
    client c;
    cl_open(&c, f->url, &f->keys[KEY_WRITE], RECV_MS);
    store_stats before, after;
    for (int i = 0; i < 5; i++) {
        char key[16];
        snprintf(key, sizeof(key), "durable%d", i);
        store_get_stats(f->st, &before);
        assert_int_equal(one_put(&c, key, "x"), SHOAL_OK);
        store_get_stats(f->st, &after);
        assert_true(after.wal_fsyncs > before.wal_fsyncs);
        sync_cb_ran = false;
        uint64_t p = store_commit_point(f->st);
        assert_true(p > 0);
        assert_int_equal(store_commit_notify(f->st, p, true, note_commit, NULL),
                         SHOAL_OK);
        assert_true(sync_cb_ran);
        assert_true(pthread_equal(sync_cb_thread, pthread_self()));
    }
    assert_int_equal(one_get(&c, "durable4"), SHOAL_OK);
    cl_close(&c);
}

/* A failed commit turns the frame's write answers into the error (and
 * only those), counted once per frame. */
static void
test_srv_commit_failure(void **state)
{
    fixture *f = *state;
    fx_start(f, ST_FS_MEM, false, 0);
    client c;
    cl_open(&c, f->url, &f->keys[KEY_WRITE], RECV_MS);
    assert_int_equal(one_put(&c, "before", "1"), SHOAL_OK);

    fs_mem_fail(f->fsm, FS_OP_FSYNC, 1, SHOAL_EIO, true, false);
    req_buf b[2];
    Shoal__Request *reqs[2] = {mk_put(&b[0], 1, "after", "2"),
                               mk_get(&b[1], 2, "missing")};
    reply rep;
    cl_reqs(&c, reqs, 2, &rep);
    expect_status(rep.rf->resps[0], SHOAL_EIO);
    expect_status(rep.rf->resps[1], SHOAL_ENOTFOUND);
    reply_free(&rep);
    cl_close(&c);
    assert_int_equal(metric(f, "shoal_commit_failures_total"), 1);
}

static void
test_srv_unknown_key_refused(void **state)
{
    fixture *f = *state;
    fx_start(f, ST_MEMORY, false, 0);
    client c;
    cl_open(&c, f->url, &f->keys[KEY_WRITE], RECV_MS);
    req_buf b;
    Shoal__Request *r = mk_put(&b, 1, "stranger", "x");
    uint8_t nonce[NONCE];
    size_t len = 0;
    uint8_t *frame = seal_reqs(&c, &f->keys[0], &r, 1, &len, nonce);
    expect_refused(&c, frame, len, SHOAL_EAUTH);
    free(frame);
    assert_int_equal(refused(f, "bad_key"), 1);
    assert_int_equal(one_get(&c, "stranger"), SHOAL_ENOTFOUND);
    cl_close(&c);
}

/* Every single-byte change of a sealed frame is refused (header bytes are
 * authenticated too); the key never lands. */
static void
test_srv_tampered_frame_refused(void **state)
{
    fixture *f = *state;
    fx_start(f, ST_MEMORY, false, 0);
    client c;
    cl_open(&c, f->url, &f->keys[KEY_WRITE], RECV_MS);
    req_buf b;
    Shoal__Request *r = mk_put(&b, 1, "tamper", "x");
    uint8_t nonce[NONCE];
    size_t len = 0;
    uint8_t *frame = seal_reqs(&c, c.k, &r, 1, &len, nonce);
    uint64_t tags = 0, other = 0;
    for (size_t i = 8; i < len; i++) { /* past magic, version, flags, id */
        frame[i] ^= 0x01;
        expect_refused(&c, frame, len, SHOAL_EAUTH);
        frame[i] ^= 0x01;
    }
    tags = refused(f, "bad_tag");
    other = refused(f, "replayed") + refused(f, "bad_key");
    assert_int_equal(tags, len - 8);
    assert_int_equal(other, 0);
    assert_int_equal(one_get(&c, "tamper"), SHOAL_ENOTFOUND);
    free(frame);
    cl_close(&c);
}

static void
test_srv_replayed_frame_refused(void **state)
{
    fixture *f = *state;
    fx_start(f, ST_MEMORY, false, 0);
    client c;
    cl_open(&c, f->url, &f->keys[KEY_WRITE], RECV_MS);
    req_buf b;
    Shoal__Request *r = mk_put(&b, 5, "once", "1");
    uint8_t nonce[NONCE];
    size_t len = 0;
    uint8_t *frame = seal_reqs(&c, c.k, &r, 1, &len, nonce);
    reply rep;
    assert_int_equal(cl_call(&c, frame, len, nonce, &rep), 0);
    assert_int_equal(rep.err_frame, SHOAL_OK);
    expect_status(rep.rf->resps[0], SHOAL_OK);
    reply_free(&rep);
    /* the same bytes again, on the same and on a new connection */
    expect_refused(&c, frame, len, SHOAL_EAUTH);
    client c2;
    cl_open(&c2, f->url, c.k, RECV_MS);
    expect_refused(&c2, frame, len, SHOAL_EAUTH);
    cl_close(&c2);
    free(frame);
    assert_int_equal(refused(f, "replayed"), 2);
    assert_int_equal(metric(f, "shoal_requests_total{op=\"put\"}"), 1);
    cl_close(&c);
}

static void
test_srv_plaintext_on_sealed_node(void **state)
{
    fixture *f = *state;
    fx_start(f, ST_MEMORY, false, 0);
    client c;
    cl_open(&c, f->url, &f->keys[KEY_WRITE], RECV_MS);
    req_buf b;
    Shoal__Request *r = mk_put(&b, 1, "plain", "x");
    uint8_t nonce[NONCE];
    size_t len = 0;
    uint8_t *frame = seal_reqs(&c, NULL, &r, 1, &len, nonce);
    expect_refused(&c, frame, len, SHOAL_EAUTH);
    free(frame);
    assert_int_equal(refused(f, "plaintext"), 1);
    assert_int_equal(one_get(&c, "plain"), SHOAL_ENOTFOUND);
    cl_close(&c);
}

/* --insecure: plaintext frames are served (answers in plaintext), sealed
 * ones refused. */
static void
test_srv_insecure_node(void **state)
{
    fixture *f = *state;
    fx_start(f, ST_MEMORY, true, 0);
    client plain;
    cl_open(&plain, f->url, NULL, RECV_MS);
    assert_int_equal(one_put(&plain, "open", "door"), SHOAL_OK);
    req_buf b;
    Shoal__Request *r = mk_get(&b, 9, "open");
    reply rep;
    cl_reqs(&plain, &r, 1, &rep);
    expect_got_value(rep.rf->resps[0], "door");
    reply_free(&rep);

    client sealed;
    cl_open(&sealed, f->url, &f->keys[KEY_ADMIN], RECV_MS);
    r = mk_put(&b, 1, "sealed", "x");
    uint8_t nonce[NONCE];
    size_t len = 0;
    uint8_t *frame = seal_reqs(&sealed, sealed.k, &r, 1, &len, nonce);
    expect_refused(&sealed, frame, len, SHOAL_EAUTH);
    free(frame);
    assert_int_equal(refused(f, "plaintext"), 1);
    assert_int_equal(one_get(&plain, "sealed"), SHOAL_ENOTFOUND);
    cl_close(&sealed);
    cl_close(&plain);
}

/* Bytes that are no frame at all, and headers no client may send. */
static void
test_srv_garbage_and_bad_headers(void **state)
{
    fixture *f = *state;
    fx_start(f, ST_MEMORY, false, 0);
    client c;
    cl_open(&c, f->url, &f->keys[KEY_WRITE], RECV_MS);
    static const uint8_t junk[] = "GET / HTTP/1.1\r\n\r\n";
    expect_refused(&c, junk, sizeof(junk) - 1, SHOAL_EINVAL);
    uint8_t one = 'S';
    expect_refused(&c, &one, 1, SHOAL_EINVAL);
    uint8_t zeros[64] = {0};
    expect_refused(&c, zeros, sizeof(zeros), SHOAL_EINVAL);
    uint64_t n = 3;

    /* Frames whose flags say response, peer or error: refused on the
     * header, before any key is looked at. */
    static const uint8_t bad_flags[] = {WIRE_F_RESPONSE, WIRE_F_PEER,
                                        WIRE_F_ERROR};
    for (size_t i = 0; i < sizeof(bad_flags); i++) {
        uint8_t body[4] = {0};
        size_t len = 0;
        uint8_t *frame = seal_bytes(&c, c.k, 0, body, sizeof(body), &len, NULL);
        frame[3] |= bad_flags[i];
        expect_refused(&c, frame, len, SHOAL_EINVAL);
        free(frame);
        n++;
    }
    /* A truncated sealed frame (no room for its tag). */
    req_buf b;
    Shoal__Request *r = mk_get(&b, 1, "x");
    uint8_t nonce[NONCE];
    size_t len = 0;
    uint8_t *frame = seal_reqs(&c, c.k, &r, 1, &len, nonce);
    expect_refused(&c, frame, WIRE_HDR_BYTES + 3, SHOAL_EINVAL);
    free(frame);
    n++;
    assert_int_equal(refused(f, "bad_header"), n);
    assert_int_equal(metrics_requests(f->m), 0);
    cl_close(&c);
}

/* A frame that opens but is not a RequestFrame gets a sealed answer with
 * one EINVAL response (id 0); the decoder is never trusted further. */
static void
test_srv_undecodable_body(void **state)
{
    fixture *f = *state;
    fx_start(f, ST_MEMORY, false, 0);
    client c;
    cl_open(&c, f->url, &f->keys[KEY_WRITE], RECV_MS);
    static const uint8_t bodies[][8] = {
        {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, /* bad varint */
        {0x0a, 0x7f, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06}, /* length past end */
        {0x0a, 0x02, 0xff, 0xff, 0x00, 0x00, 0x00, 0x00}, /* bad Request */
        {0x0f, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00}, /* wire type 7 */
    };
    for (size_t i = 0; i < 4; i++) {
        uint8_t nonce[NONCE];
        size_t len = 0;
        uint8_t *frame =
            seal_bytes(&c, c.k, 0, bodies[i], sizeof(bodies[i]), &len, nonce);
        reply rep;
        assert_int_equal(cl_call(&c, frame, len, nonce, &rep), 0);
        free(frame);
        assert_int_equal(rep.err_frame, SHOAL_OK);
        assert_int_equal(rep.rf->n_resps, 1);
        assert_int_equal(rep.rf->resps[0]->id, 0);
        expect_status(rep.rf->resps[0], SHOAL_EINVAL);
        assert_non_null(rep.rf->resps[0]->message);
        reply_free(&rep);
    }
    assert_int_equal(refused(f, "bad_decode"), 4);
    assert_int_equal(metrics_requests(f->m), 0);
    cl_close(&c);
}

/* More requests in one frame than the node serves: one ETOOLARGE answer,
 * nothing executed. */
static void
test_srv_too_many_requests(void **state)
{
    fixture *f = *state;
    fx_start(f, ST_MEMORY, false, 0);
    client c;
    cl_open(&c, f->url, &f->keys[KEY_WRITE], RECV_MS);
    size_t n = MAX_REQS + 1;
    /* each entry: field 1, length 2, Request{id = 1} */
    uint8_t *body = malloc(n * 4);
    assert_non_null(body);
    for (size_t i = 0; i < n; i++) {
        body[4 * i] = 0x0a;
        body[4 * i + 1] = 0x02;
        body[4 * i + 2] = 0x08;
        body[4 * i + 3] = 0x01;
    }
    uint8_t nonce[NONCE];
    size_t len = 0;
    uint8_t *frame = seal_bytes(&c, c.k, 0, body, n * 4, &len, nonce);
    reply rep;
    assert_int_equal(cl_call(&c, frame, len, nonce, &rep), 0);
    assert_int_equal(rep.rf->n_resps, 1);
    expect_status(rep.rf->resps[0], SHOAL_ETOOLARGE);
    reply_free(&rep);
    free(frame);
    free(body);
    assert_int_equal(metrics_requests(f->m), 0);
    cl_close(&c);
}

/* Keys are checked for role: the peer key is no client key; a read key
 * cannot write; a prefix key writes only inside its prefix. */
static void
test_srv_roles(void **state)
{
    fixture *f = *state;
    fx_start(f, ST_MEMORY, false, 0);
    client peer, rd, pfx;
    cl_open(&peer, f->url, &f->keys[KEY_PEER], RECV_MS);
    cl_open(&rd, f->url, &f->keys[KEY_READ], RECV_MS);
    cl_open(&pfx, f->url, &f->keys[KEY_PREFIX], RECV_MS);

    req_buf b;
    Shoal__Request *r = mk_put(&b, 1, "app:peer", "x");
    uint8_t nonce[NONCE];
    size_t len = 0;
    uint8_t *frame = seal_reqs(&peer, peer.k, &r, 1, &len, nonce);
    expect_refused(&peer, frame, len, SHOAL_EAUTH);
    free(frame);
    assert_int_equal(refused(f, "bad_key"), 1);

    assert_int_equal(one_put(&rd, "app:r", "x"), SHOAL_EPERM);
    assert_int_equal(one_put(&pfx, "other", "x"), SHOAL_EPERM);
    assert_int_equal(one_put(&pfx, "app:mine", "x"), SHOAL_OK);
    assert_int_equal(one_get(&rd, "app:mine"), SHOAL_OK);
    assert_int_equal(one_get(&rd, "app:peer"), SHOAL_ENOTFOUND);
    assert_int_equal(one_get(&rd, "app:r"), SHOAL_ENOTFOUND);
    assert_int_equal(metric(f, "shoal_requests_denied_total"), 2);
    cl_close(&pfx);
    cl_close(&rd);
    cl_close(&peer);
}

/* A frame over max_frame_bytes is dropped by nng (the connection is cut);
 * the node keeps serving. */
static void
test_srv_oversized_frame(void **state)
{
    fixture *f = *state;
    fx_start(f, ST_MEMORY, false, 4096);
    client c;
    cl_open(&c, f->url, &f->keys[KEY_WRITE], 500);
    uint8_t body[8192];
    memset(body, 0x0a, sizeof(body));
    uint8_t nonce[NONCE];
    size_t len = 0;
    uint8_t *frame = seal_bytes(&c, c.k, 0, body, sizeof(body), &len, nonce);
    reply rep;
    assert_int_equal(cl_call(&c, frame, len, nonce, &rep), NNG_ETIMEDOUT);
    free(frame);
    cl_close(&c);
    assert_int_equal(metric(f, "shoal_frames_total{dir=\"in\"}"), 0);
    client c2;
    cl_open(&c2, f->url, &f->keys[KEY_WRITE], RECV_MS);
    assert_int_equal(one_put(&c2, "small", "ok"), SHOAL_OK);
    cl_close(&c2);
}

static void
test_srv_open_errors(void **state)
{
    fixture *f = *state;
    fx_start(f, ST_MEMORY, false, 0);
    srv_opts o;
    srv_opts_default(&o);
    o.x = &f->x;
    o.keys = f->kr;
    o.m = f->m;
    o.n_contexts = 2;
    o.n_workers = 1;
    srv *s = (srv *) 1;
    o.listen_url = f->url; /* taken by the fixture's listener */
    assert_int_equal(srv_open(&o, &s), SHOAL_EUNAVAILABLE);
    assert_null(s);
    o.listen_url = "bogus://nowhere";
    assert_int_equal(srv_open(&o, &s), SHOAL_EINVAL);
    o.listen_url = "tcp://127.0.0.1:99999";
    assert_int_equal(srv_open(&o, &s), SHOAL_EINVAL);
    o.listen_url = "tcp://127.0.0.1:0";
    o.keys = NULL; /* sealed node without keys */
    assert_int_equal(srv_open(&o, &s), SHOAL_EINVAL);
    o.keys = f->kr;
    o.n_contexts = 0;
    assert_int_equal(srv_open(&o, &s), SHOAL_EINVAL);
    o.n_contexts = 2;
    o.x = NULL;
    assert_int_equal(srv_open(&o, &s), SHOAL_EINVAL);
    o.x = &f->x;
    assert_int_equal(srv_open(&o, &s), SHOAL_OK);
    assert_int_equal(srv_drain(s, WAIT_MS), SHOAL_OK);
    srv_close(s);
    srv_close(NULL);
}

/* Fail srv_open's n-th allocation for n = 1, 2, ... until it succeeds:
 * each failure is SHOAL_ENOMEM and leaks nothing (ASan). */
static void
test_srv_open_enomem_loop(void **state)
{
    fixture *f = *state;
    open_store(f, ST_MEMORY);
    assert_int_equal(metrics_open(&f->m), SHOAL_OK);
    srv_opts o;
    srv_opts_default(&o);
    o.listen_url = "tcp://127.0.0.1:0";
    o.x = &f->x;
    o.keys = f->kr;
    o.m = f->m;
    o.n_contexts = 4;
    o.n_workers = 2;
    shoal_err rc = SHOAL_ENOMEM;
    long n = 1;
    for (; rc != SHOAL_OK && n < 10000; n++) {
        srv *s = NULL;
        mem_fail_set(n, 0);
        rc = srv_open(&o, &s);
        mem_fail_set(0, 0);
        if (rc == SHOAL_OK) {
            srv_close(s);
            break;
        }
        assert_int_equal(rc, SHOAL_ENOMEM);
        assert_null(s);
    }
    assert_int_equal(rc, SHOAL_OK);
    assert_true(n > 1);
    print_message("srv_open: %ld allocation failures handled\n", n - 1);
}

/* ---- concurrency, drain, close --------------------------------------------
 */

typedef struct loader {
    int id;
    client c;
    int frames; /* 0: until the socket fails */
    _Atomic uint64_t answered;
    _Atomic uint64_t bad; /* wrong answers */
    pthread_t th;
} loader;

/* One frame: put two keys of this round, read back the last round's. */
static bool
loader_round(loader *l, int i)
{
    req_buf b[4];
    Shoal__Request *reqs[4];
    char key[4][48], val[4][48];
    for (int k = 0; k < 4; k++) {
        int round = k < 2 ? i : i - 1;
        snprintf(key[k], sizeof(key[k]), "c%d-%d-%d", l->id, round, k % 2);
        snprintf(val[k], sizeof(val[k]), "value %d %d %d", l->id, round, k % 2);
    }
    reqs[0] = mk_put(&b[0], 1, key[0], val[0]);
    reqs[1] = mk_put(&b[1], 2, key[1], val[1]);
    reqs[2] = mk_get(&b[2], 3, key[2]);
    reqs[3] = mk_get(&b[3], 4, key[3]);
    uint8_t nonce[NONCE];
    size_t len = 0;
    uint8_t *frame = seal_reqs(&l->c, l->c.k, reqs, 4, &len, nonce);
    reply rep;
    const char *why = NULL;
    int rv = cl_call_soft(&l->c, frame, len, nonce, &rep, &why);
    free(frame);
    if (rv != 0)
        return false;
    bool ok = why == NULL && rep.err_frame == SHOAL_OK && rep.rf != NULL &&
              rep.rf->n_resps == 4;
    for (size_t k = 0; ok && k < 4; k++) {
        const Shoal__Response *r = rep.rf->resps[k];
        shoal_err st = r->has_status ? (shoal_err) r->status : SHOAL_OK;
        ok = r->id == k + 1 &&
             (st == SHOAL_OK || (k >= 2 && i == 0 && st == SHOAL_ENOTFOUND));
        if (ok && k >= 2 && i > 0)
            ok = r->get != NULL && r->get->value.len == strlen(val[k]) &&
                 memcmp(r->get->value.data, val[k], strlen(val[k])) == 0;
    }
    reply_free(&rep);
    atomic_fetch_add(ok ? &l->answered : &l->bad, 1);
    return true;
}

static void *
loader_main(void *arg)
{
    loader *l = arg;
    for (int i = 0; l->frames == 0 || i < l->frames; i++)
        if (!loader_round(l, i))
            break;
    return NULL;
}

static loader *
loaders_start(const char *url, const wire_key *k, int n, int frames)
{
    loader *ls = calloc((size_t) n, sizeof(*ls));
    assert_non_null(ls);
    for (int i = 0; i < n; i++) {
        ls[i].id = i;
        ls[i].frames = frames;
        cl_open(&ls[i].c, url, k, RECV_MS);
    }
    for (int i = 0; i < n; i++)
        assert_int_equal(pthread_create(&ls[i].th, NULL, loader_main, &ls[i]),
                         0);
    return ls;
}

static uint64_t
loaders_answered(loader *ls, int n)
{
    uint64_t sum = 0;
    for (int i = 0; i < n; i++)
        sum += atomic_load(&ls[i].answered);
    return sum;
}

/* Close the sockets (ends any wait for an answer), join, check. */
static void
loaders_stop(loader *ls, int n)
{
    for (int i = 0; i < n; i++)
        cl_close(&ls[i].c);
    for (int i = 0; i < n; i++) {
        pthread_join(ls[i].th, NULL);
        assert_int_equal(atomic_load(&ls[i].bad), 0);
    }
    free(ls);
}

static bool
served_some(void *arg)
{
    fixture *f = arg;
    return metrics_requests(f->m) >= 64;
}

static void
test_srv_concurrent_clients(void **state)
{
    fixture *f = *state;
    fx_start(f, ST_MEMORY, false, 0);
    enum { THREADS = 8 };
    int frames = tu_long() ? 2000 : 250;
    loader *ls = loaders_start(f->url, &f->keys[KEY_WRITE], THREADS, frames);
    for (int i = 0; i < THREADS; i++)
        pthread_join(ls[i].th, NULL);
    uint64_t answered = loaders_answered(ls, THREADS);
    for (int i = 0; i < THREADS; i++) {
        cl_close(&ls[i].c);
        assert_int_equal(atomic_load(&ls[i].bad), 0);
    }
    free(ls);
    assert_int_equal(answered, (uint64_t) THREADS * (uint64_t) frames);
    assert_int_equal(metrics_requests(f->m), answered * 4);
    expect_settled(f, answered);
}

typedef struct drain_check {
    fixture *f;
    loader *ls;
    int n;
} drain_check;

static bool
all_answers_arrived(void *arg)
{
    drain_check *d = arg;
    return loaders_answered(d->ls, d->n) ==
           metric(d->f, "shoal_frames_total{dir=\"out\"}");
}

/* Drain under load on a fsync=always disk store: every frame the node
 * received is answered (answers sent == frames received == answers the
 * clients got), nothing is left in flight, and no new frame is taken. */
static void
test_srv_drain_in_flight(void **state)
{
    fixture *f = *state;
    fx_start(f, ST_DISK, false, 0);
    enum { THREADS = 8 };
    loader *ls = loaders_start(f->url, &f->keys[KEY_WRITE], THREADS, 0);
    assert_true(poll_until(served_some, f));
    unsigned busy = srv_inflight(f->s);
    assert_int_equal(srv_drain(f->s, WAIT_MS), SHOAL_OK);
    assert_int_equal(srv_inflight(f->s), 0);
    uint64_t in = metric(f, "shoal_frames_total{dir=\"in\"}");
    uint64_t out = metric(f, "shoal_frames_total{dir=\"out\"}");
    assert_int_equal(in, out);
    drain_check d = {f, ls, THREADS};
    assert_true(poll_until(all_answers_arrived, &d));
    print_message("drain: %u frames in flight when it began, %llu served\n",
                  busy, (unsigned long long) out);
    /* Nothing more is received after the drain. */
    client c;
    cl_open(&c, f->url, &f->keys[KEY_WRITE], 300);
    req_buf b;
    Shoal__Request *r = mk_get(&b, 1, "x");
    uint8_t nonce[NONCE];
    size_t len = 0;
    uint8_t *frame = seal_reqs(&c, c.k, &r, 1, &len, nonce);
    reply rep;
    assert_int_equal(cl_call(&c, frame, len, nonce, &rep), NNG_ETIMEDOUT);
    free(frame);
    cl_close(&c);
    loaders_stop(ls, THREADS);
    assert_int_equal(metric(f, "shoal_frames_total{dir=\"in\"}"), in);
}

/* Clients in another process (this binary re-executed with --load): the
 * node's socket is closed while they keep sending. */
static int
load_main(int argc, char **argv)
{
    if (argc != 5)
        return 2;
    wire_keyring *kr = NULL;
    char err[256];
    if (wire_keyring_load(argv[3], &kr, err, sizeof(err)) != SHOAL_OK) {
        fprintf(stderr, "load: %s\n", err);
        return 2;
    }
    int n = (int) strtol(argv[4], NULL, 10);
    loader *ls = loaders_start(argv[2], wire_keyring_at(kr, 0), n, 0);
    for (int i = 0; i < n; i++)
        pthread_join(ls[i].th, NULL);
    return 0; /* normally killed before */
}

static pid_t
spawn_loaders(fixture *f, int n)
{
    char path[512], line[600], count[16];
    snprintf(path, sizeof(path), "%s/client.key", f->dir);
    assert_int_equal(wire_key_format(&f->keys[KEY_WRITE], line, sizeof(line)),
                     SHOAL_OK);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, line, strlen(line)), (ssize_t) strlen(line));
    close(fd);
    snprintf(count, sizeof(count), "%d", n);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        execl("/proc/self/exe", "unit_srv", "--load", f->url, path, count,
              (char *) NULL);
        _exit(127);
    }
    return pid;
}

/* srv_close under load without a drain: frames in flight (some waiting
 * for their fsync) are finished or dropped without leaks or crashes.
 *
 * The clients run in another process on purpose: with REQ sockets in this
 * process, nng 1.5.2 sometimes wedges its (process-wide) pipe reaper while
 * tearing down a REQ pipe whose peer vanished mid-request, and then every
 * nng_close in the process, the node's included, waits forever (seen in
 * about 1 run in 20). shoald hosts no REQ sockets, so the test keeps the
 * node's side alone in this process. */
static void
test_srv_close_without_drain(void **state)
{
    fixture *f = *state;
    fx_start(f, ST_DISK, false, 0);
    pid_t pid = spawn_loaders(f, 8);
    bool served = poll_until(served_some, f);
    srv_close(f->s);
    f->s = NULL;
    kill(pid, SIGKILL);
    int st = 0;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    assert_true(served);
}

int
main(int argc, char **argv)
{
    if (argc > 1 && strcmp(argv[1], "--load") == 0)
        return load_main(argc, argv);
    const struct CMUnitTest tests[] = {
#define T(name) cmocka_unit_test_setup_teardown(name, fx_up, fx_down)
        T(test_srv_put_get_round_trip),
        T(test_srv_many_requests_one_frame),
        T(test_srv_answer_after_commit),
        T(test_srv_commit_failure),
        T(test_srv_unknown_key_refused),
        T(test_srv_tampered_frame_refused),
        T(test_srv_replayed_frame_refused),
        T(test_srv_plaintext_on_sealed_node),
        T(test_srv_insecure_node),
        T(test_srv_garbage_and_bad_headers),
        T(test_srv_undecodable_body),
        T(test_srv_too_many_requests),
        T(test_srv_roles),
        T(test_srv_oversized_frame),
        T(test_srv_open_errors),
        T(test_srv_open_enomem_loop),
        T(test_srv_concurrent_clients),
        T(test_srv_drain_in_flight),
        T(test_srv_close_without_drain),
#undef T
    };
    const char *only = getenv("SHOAL_TEST_FILTER"); /* e.g. "*drain*" */
    if (only != NULL && only[0] != '\0')
        cmocka_set_test_filter(only);
    return cmocka_run_group_tests(tests, NULL, NULL);
}
