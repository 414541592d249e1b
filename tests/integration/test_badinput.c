/*
 * test_badinput.c -- TESTING.md G8 against a real shoald over a real socket.
 *
 * A catalogue of malformed and oversized inputs, each with the outcome it
 * must get: a plaintext error frame with a status (frames that cannot be
 * opened), a sealed ResponseFrame whose responses carry a status (frames
 * that open but hold bad requests), or a dropped connection (transport
 * messages over the receive limit or not speaking req0). Every input is
 * built by hand: frames with wire_seal or raw bytes, protobuf with protoc-c
 * structs or raw bytes, and sent with the harness's own SP-over-TCP client.
 *
 * After the catalogue: the state digest (a full scan of every key, value,
 * version and expiry) and the WAL record count are unchanged, and the node
 * is healthy. Then a flood of bad requests (1 M after a warm-up of 100 k,
 * many per frame) must not grow shoald's RSS by 10 % or more.
 *
 * The node runs with --max-frame-bytes 17m, so a 16 MiB + 1 value still
 * fits in a frame and the over-the-limit transport case is cheap. For the
 * RSS test only, a Debug (ASan) shoald runs with ASAN_OPTIONS
 * quarantine_size_mb=0: freed memory that ASan holds back to catch
 * use-after-free (256 MiB by default) would otherwise show up as RSS growth
 * that a release build does not have. The catalogue runs with full ASan.
 */
#include "tests/support/proc.h"
#include "tests/support/testutil.h"

#include "proto/bytes.h"
#include "proto/clock.h"
#include "shoal.h"

#include <inttypes.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#define MAX_FRAME    "17m"
#define VALUE_LIMIT  (16u << 20)
#define CALL_MS      30000
#define FILL_KEYS    10050
#define FLOOD_K      1000 /* bad requests in one flood frame */
#define FLOOD_SMALL  24   /* bad frames per flood round */
#define FLOOD_WINDOW 32   /* messages in flight */

typedef struct bctx {
    char *dir;
    proc_keys keys;
    proc_node *node;
    shoal *db; /* admin */
    wire_sender sender;
    uint32_t n_shards;
    char asan_env[1024];
} bctx;

typedef struct msg {
    uint8_t *p;
    size_t len;
    bool raw; /* bytes for the stream itself, not one SP message */
} msg;

/* ---- building frames --------------------------------------------------------
 */

static ProtobufCBinaryData
bin(const void *p, size_t len)
{
    ProtobufCBinaryData b = {len, (uint8_t *) p};
    return b;
}

static ProtobufCBinaryData
str_bin(const char *s)
{
    return bin(s, strlen(s));
}

static void
seal_body(bctx *c, const wire_key *k, uint8_t flags, const void *body,
          size_t len, msg *m)
{
    assert_int_equal(
        proc_frame_seal(&c->sender, k, flags, body, len, &m->p, &m->len),
        SHOAL_OK);
}

static void
seal_reqs(bctx *c, const wire_key *k, Shoal__Request *const *reqs, size_t n,
          msg *m)
{
    uint8_t *body = NULL;
    size_t len = 0;
    assert_int_equal(proc_reqframe_pack(reqs, n, &body, &len), SHOAL_OK);
    seal_body(c, k, 0, body, len, m);
    free(body);
}

static void
seal_one(bctx *c, const wire_key *k, Shoal__Request *r, msg *m)
{
    seal_reqs(c, k, &r, 1, m);
}

/* A valid sealed get of a missing key (admin). */
static void
valid_get(bctx *c, msg *m)
{
    Shoal__Request r = SHOAL__REQUEST__INIT;
    Shoal__GetReq g = SHOAL__GET_REQ__INIT;
    g.has_key = true;
    g.key = str_bin("bad/none");
    r.op_case = SHOAL__REQUEST__OP_GET;
    r.get = &g;
    seal_one(c, &c->keys.admin, &r, m);
}

/* The key a sealed answer is under (the caller's), by the frame's key id. */
static const wire_key *
answer_key(bctx *c, const uint8_t *frame, size_t len)
{
    uint32_t id = len >= 8 ? get_u32(frame + 4) : 0;
    const wire_key *k[] = {&c->keys.admin, &c->keys.write, &c->keys.read,
                           &c->keys.prefixed};
    for (size_t i = 0; i < 4; i++)
        if (k[i]->id == id)
            return k[i];
    return &c->keys.admin;
}

static void
raw_bytes(msg *m, const void *p, size_t len)
{
    m->p = malloc(len > 0 ? len : 1);
    assert_non_null(m->p);
    if (len > 0)
        memcpy(m->p, p, len);
    m->len = len;
}

/* ---- frame-level cases: plaintext error frames ------------------------------
 */

static void
b_empty(bctx *c, proc_sp *sp, msg *m)
{
    (void) c;
    (void) sp;
    raw_bytes(m, "", 0);
}

static void
b_one_byte(bctx *c, proc_sp *sp, msg *m)
{
    (void) c;
    (void) sp;
    raw_bytes(m, "S", 1);
}

static void
b_short_hdr(bctx *c, proc_sp *sp, msg *m)
{
    (void) sp;
    valid_get(c, m);
    m->len = WIRE_HDR_BYTES - 1;
}

/* A valid frame with byte i set to v. */
static void
patched(bctx *c, msg *m, size_t i, uint8_t v)
{
    valid_get(c, m);
    m->p[i] = v;
}

static void
b_bad_magic(bctx *c, proc_sp *sp, msg *m)
{
    (void) sp;
    patched(c, m, 0, 'X');
}

static void
b_version0(bctx *c, proc_sp *sp, msg *m)
{
    (void) sp;
    patched(c, m, 2, 0);
}

static void
b_version2(bctx *c, proc_sp *sp, msg *m)
{
    (void) sp;
    patched(c, m, 2, 2);
}

static void
b_version255(bctx *c, proc_sp *sp, msg *m)
{
    (void) sp;
    patched(c, m, 2, 255);
}

static void
b_flag10(bctx *c, proc_sp *sp, msg *m)
{
    (void) sp;
    patched(c, m, 3, 0x10);
}

static void
b_flag80(bctx *c, proc_sp *sp, msg *m)
{
    (void) sp;
    patched(c, m, 3, 0x80);
}

/* Frames sealed with a flag a request may not carry. */
static void
sealed_with_flag(bctx *c, uint8_t flag, msg *m)
{
    Shoal__Request r = SHOAL__REQUEST__INIT;
    Shoal__StatsReq s = SHOAL__STATS_REQ__INIT;
    r.op_case = SHOAL__REQUEST__OP_STATS;
    r.stats = &s;
    uint8_t *body = NULL;
    size_t len = 0;
    Shoal__Request *rp = &r;
    assert_int_equal(proc_reqframe_pack(&rp, 1, &body, &len), SHOAL_OK);
    seal_body(c, &c->keys.admin, flag, body, len, m);
    free(body);
}

static void
b_resp_flag(bctx *c, proc_sp *sp, msg *m)
{
    (void) sp;
    sealed_with_flag(c, WIRE_F_RESPONSE, m);
}

static void
b_peer_flag(bctx *c, proc_sp *sp, msg *m)
{
    (void) sp;
    sealed_with_flag(c, WIRE_F_PEER, m);
}

static void
b_error_flag(bctx *c, proc_sp *sp, msg *m)
{
    (void) sp;
    patched(c, m, 3, WIRE_F_ERROR);
}

static void
b_no_tag(bctx *c, proc_sp *sp, msg *m)
{
    (void) sp;
    valid_get(c, m);
    m->len = WIRE_HDR_BYTES;
}

static void
b_short_tag(bctx *c, proc_sp *sp, msg *m)
{
    (void) sp;
    valid_get(c, m);
    m->len = WIRE_HDR_BYTES + WIRE_TAG_BYTES - 1;
}

static void
b_key_id0(bctx *c, proc_sp *sp, msg *m)
{
    (void) sp;
    valid_get(c, m);
    put_u32(m->p + 4, 0);
}

static void
b_unknown_key(bctx *c, proc_sp *sp, msg *m)
{
    (void) sp;
    wire_key k;
    assert_int_equal(wire_key_generate(999, WIRE_ROLE_ADMIN, NULL, 0, &k),
                     SHOAL_OK);
    Shoal__Request r = SHOAL__REQUEST__INIT;
    Shoal__GetReq g = SHOAL__GET_REQ__INIT;
    g.has_key = true;
    g.key = str_bin("bad/k");
    r.op_case = SHOAL__REQUEST__OP_GET;
    r.get = &g;
    seal_one(c, &k, &r, m);
}

static void
b_flip_tag(bctx *c, proc_sp *sp, msg *m)
{
    (void) sp;
    valid_get(c, m);
    m->p[m->len - 1] ^= 0x01;
}

static void
b_flip_body(bctx *c, proc_sp *sp, msg *m)
{
    (void) sp;
    valid_get(c, m);
    m->p[WIRE_HDR_BYTES] ^= 0x80;
}

static void
b_flip_nonce(bctx *c, proc_sp *sp, msg *m)
{
    (void) sp;
    valid_get(c, m);
    m->p[8 + 20] ^= 0x04;
}

/* Sealed with the admin secret, labelled with the read key's id. */
static void
b_other_key_id(bctx *c, proc_sp *sp, msg *m)
{
    (void) sp;
    valid_get(c, m);
    put_u32(m->p + 4, PROC_KEY_READ);
}

/* The admin key's id with a wrong secret. */
static void
b_wrong_secret(bctx *c, proc_sp *sp, msg *m)
{
    (void) sp;
    wire_key k = c->keys.admin;
    k.secret[0] ^= 0xff;
    Shoal__Request r = SHOAL__REQUEST__INIT;
    Shoal__GetReq g = SHOAL__GET_REQ__INIT;
    g.has_key = true;
    g.key = str_bin("bad/k");
    r.op_case = SHOAL__REQUEST__OP_GET;
    r.get = &g;
    seal_one(c, &k, &r, m);
}

static void
b_plaintext(bctx *c, proc_sp *sp, msg *m)
{
    (void) sp;
    Shoal__Request r = SHOAL__REQUEST__INIT;
    Shoal__GetReq g = SHOAL__GET_REQ__INIT;
    g.has_key = true;
    g.key = str_bin("bad/k");
    r.op_case = SHOAL__REQUEST__OP_GET;
    r.get = &g;
    seal_one(c, NULL, &r, m);
}

static void
b_plain_with_id(bctx *c, proc_sp *sp, msg *m)
{
    b_plaintext(c, sp, m);
    put_u32(m->p + 4, PROC_KEY_ADMIN);
}

/* A valid frame, sent once (answered), then again: the replay. */
static void
b_replay(bctx *c, proc_sp *sp, msg *m)
{
    valid_get(c, m);
    uint8_t *copy = malloc(m->len);
    assert_non_null(copy);
    memcpy(copy, m->p, m->len);
    uint8_t *resp = NULL;
    size_t rlen = 0;
    assert_int_equal(proc_sp_call(sp, copy, m->len, CALL_MS, &resp, &rlen),
                     SHOAL_OK);
    proc_reply r;
    assert_int_equal(proc_reply_decode(&c->keys.admin, resp, rlen, &r),
                     SHOAL_OK);
    assert_false(r.is_error);
    proc_reply_fini(&r);
    free(resp);
    free(copy);
}

/* Sealed with the clock moved by delta_ms: outside the replay window. */
static void
sealed_at(bctx *c, int64_t delta_ms, msg *m)
{
    uint64_t now = clock_now_ms();
    tu_clock_fake((uint64_t) ((int64_t) now + delta_ms));
    valid_get(c, m);
    tu_clock_real();
}

static void
b_old_time(bctx *c, proc_sp *sp, msg *m)
{
    (void) sp;
    sealed_at(c, -3600 * 1000, m);
}

static void
b_future_time(bctx *c, proc_sp *sp, msg *m)
{
    (void) sp;
    sealed_at(c, 3600 * 1000, m);
}

static void
b_random_mib(bctx *c, proc_sp *sp, msg *m)
{
    (void) c;
    (void) sp;
    size_t len = 1u << 20;
    m->p = malloc(len);
    assert_non_null(m->p);
    uint64_t st = 42;
    for (size_t i = 0; i < len; i++)
        m->p[i] = (uint8_t) tu_rand(&st);
    m->p[0] = 'Z';
    m->len = len;
}

/* ---- decode-level cases: a sealed answer with one frame-level response ----
 */

static void
sealed_raw(bctx *c, const void *body, size_t len, msg *m)
{
    seal_body(c, &c->keys.admin, 0, body, len, m);
}

static void
b_garbage_pb(bctx *c, proc_sp *sp, msg *m)
{
    (void) sp;
    uint8_t body[64];
    uint64_t st = 7;
    for (size_t i = 0; i < sizeof(body); i++)
        body[i] = (uint8_t) tu_rand(&st);
    body[0] = 0xff; /* field 31, wire type 7: no such type */
    sealed_raw(c, body, sizeof(body), m);
}

static void
b_wrong_wiretype(bctx *c, proc_sp *sp, msg *m)
{
    (void) sp;
    const uint8_t body[] = {0x08, 0x05}; /* field 1 (reqs) as a varint */
    sealed_raw(c, body, sizeof(body), m);
}

static void
b_truncated_varint(bctx *c, proc_sp *sp, msg *m)
{
    (void) sp;
    const uint8_t body[] = {0x0a, 0xff, 0xff};
    sealed_raw(c, body, sizeof(body), m);
}

static void
b_overrun_len(bctx *c, proc_sp *sp, msg *m)
{
    (void) sp;
    const uint8_t body[] = {0x0a, 0x10, 0x52, 0x00}; /* 16 bytes claimed */
    sealed_raw(c, body, sizeof(body), m);
}

static void
b_huge_len(bctx *c, proc_sp *sp, msg *m)
{
    (void) sp;
    /* Field 1, length 2^62 as a varint. */
    const uint8_t body[] = {0x0a, 0x80, 0x80, 0x80, 0x80, 0x80,
                            0x80, 0x80, 0x80, 0x40, 0x00};
    sealed_raw(c, body, sizeof(body), m);
}

static void
b_group(bctx *c, proc_sp *sp, msg *m)
{
    (void) sp;
    const uint8_t body[] = {0x0b, 0x0c}; /* start/end group of field 1 */
    sealed_raw(c, body, sizeof(body), m);
}

static void
b_overlong_varint(bctx *c, proc_sp *sp, msg *m)
{
    (void) sp;
    /* Request{id = an 11-byte varint}. */
    const uint8_t body[] = {0x0a, 0x0c, 0x08, 0xff, 0xff, 0xff, 0xff,
                            0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01};
    sealed_raw(c, body, sizeof(body), m);
}

static void
b_nested_bad(bctx *c, proc_sp *sp, msg *m)
{
    (void) sp;
    /* Request{get = GetReq{key: length 100 in 2 bytes}}. */
    const uint8_t body[] = {0x0a, 0x06, 0x52, 0x04, 0x0a, 0x64, 0x61, 0x62};
    sealed_raw(c, body, sizeof(body), m);
}

static void
b_too_many_reqs(bctx *c, proc_sp *sp, msg *m)
{
    (void) sp;
    size_t n = 65537;
    uint8_t *body = malloc(2 * n);
    assert_non_null(body);
    for (size_t i = 0; i < n; i++) {
        body[2 * i] = 0x0a; /* an empty Request */
        body[2 * i + 1] = 0x00;
    }
    sealed_raw(c, body, 2 * n, m);
    free(body);
}

/* ---- frames that decode: the expected responses -----------------------------
 */

static void
b_empty_frame(bctx *c, proc_sp *sp, msg *m)
{
    (void) sp;
    sealed_raw(c, "", 0, m);
}

static void
b_unknown_fields(bctx *c, proc_sp *sp, msg *m)
{
    (void) sp;
    /* Field 99 varint, field 100 bytes: no request at all. */
    const uint8_t body[] = {0x98, 0x06, 0x01, 0xa2, 0x06, 0x02, 0x61, 0x62};
    sealed_raw(c, body, sizeof(body), m);
}

static void
b_tiny_reqs(bctx *c, proc_sp *sp, msg *m)
{
    (void) sp;
    size_t n = 10000;
    uint8_t *body = malloc(2 * n);
    assert_non_null(body);
    for (size_t i = 0; i < n; i++) {
        body[2 * i] = 0x0a;
        body[2 * i + 1] = 0x00;
    }
    sealed_raw(c, body, 2 * n, m);
    free(body);
}

/* Request{get = GetReq{key "bad/none", field 15: 2000 levels of nested
 * length-delimited blobs}}: unknown fields are skipped, the get runs. */
static void
b_deep_unknown(bctx *c, proc_sp *sp, msg *m)
{
    (void) sp;
    enum { DEPTH = 2000 };
    uint8_t *nest = malloc(DEPTH * 4 + 64);
    assert_non_null(nest);
    size_t len = 0;
    for (int d = 0; d < DEPTH; d++) { /* inside out: tag 0x7a, length */
        memmove(nest + 3, nest, len);
        nest[0] = 0x7a;
        nest[1] = (uint8_t) (0x80 | (len & 0x7f));
        nest[2] = (uint8_t) (len >> 7);
        len += 3;
    }
    uint8_t *get = malloc(len + 32);
    assert_non_null(get);
    size_t gl = 0;
    get[gl++] = 0x0a; /* key */
    get[gl++] = 8;
    memcpy(get + gl, "bad/none", 8);
    gl += 8;
    memcpy(get + gl, nest, len);
    gl += len;
    uint8_t *req = malloc(gl + 32), *frame = malloc(gl + 64);
    assert_true(req != NULL && frame != NULL);
    size_t rl = 0, fl = 0;
    req[rl++] = 0x52; /* field 10 (get), length as 3-byte varint */
    req[rl++] = (uint8_t) (0x80 | (gl & 0x7f));
    req[rl++] = (uint8_t) (0x80 | ((gl >> 7) & 0x7f));
    req[rl++] = (uint8_t) (gl >> 14);
    memcpy(req + rl, get, gl);
    rl += gl;
    frame[fl++] = 0x0a;
    frame[fl++] = (uint8_t) (0x80 | (rl & 0x7f));
    frame[fl++] = (uint8_t) (0x80 | ((rl >> 7) & 0x7f));
    frame[fl++] = (uint8_t) (rl >> 14);
    memcpy(frame + fl, req, rl);
    fl += rl;
    sealed_raw(c, frame, fl, m);
    free(nest);
    free(get);
    free(req);
    free(frame);
}

/* Request{id: 2^64-1 as a 10-byte varint, timeout_ms: 2^64-1 (a uint32
 * field), get "bad/none"}. */
static void
b_max_varints(bctx *c, proc_sp *sp, msg *m)
{
    (void) sp;
    const uint8_t body[] = {
        0x0a, 0x2a, 0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        0xff, 0x01, 0x18, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        0xff, 0x01, 0x52, 0x0a, 0x0a, 0x08, 'b',  'a',  'd',  '/',  'n',
        'o',  'n',  'e',  0x10, 0x00, 0x20, 0x00, 0x28, 0x00, 0x18, 0x00};
    sealed_raw(c, body, sizeof(body), m);
}

static void
b_dup_ids(bctx *c, proc_sp *sp, msg *m)
{
    (void) sp;
    Shoal__GetReq g = SHOAL__GET_REQ__INIT;
    g.has_key = true;
    g.key = str_bin("bad/none");
    Shoal__Request r[3];
    Shoal__Request *rp[3];
    for (int i = 0; i < 3; i++) {
        shoal__request__init(&r[i]);
        r[i].has_id = true;
        r[i].id = 5;
        r[i].op_case = SHOAL__REQUEST__OP_GET;
        r[i].get = &g;
        rp[i] = &r[i];
    }
    seal_reqs(c, &c->keys.admin, rp, 3, m);
}

/* ---- request-level cases ----------------------------------------------------
 */

typedef struct rq {
    Shoal__Request r;
    Shoal__GetReq get;
    Shoal__PutReq put;
    Shoal__DelReq del;
    Shoal__IncrReq incr;
    Shoal__TtlReq ttl;
    Shoal__ExistsReq exists;
    Shoal__BatchReq batch;
    Shoal__ScanReq scan;
    Shoal__CountReq count;
    Shoal__StatsReq stats;
} rq;

static void
rq_init(rq *q, Shoal__Request__OpCase op)
{
    memset(q, 0, sizeof(*q));
    shoal__request__init(&q->r);
    shoal__get_req__init(&q->get);
    shoal__put_req__init(&q->put);
    shoal__del_req__init(&q->del);
    shoal__incr_req__init(&q->incr);
    shoal__ttl_req__init(&q->ttl);
    shoal__exists_req__init(&q->exists);
    shoal__batch_req__init(&q->batch);
    shoal__scan_req__init(&q->scan);
    shoal__count_req__init(&q->count);
    shoal__stats_req__init(&q->stats);
    q->r.op_case = op;
    q->r.get = &q->get; /* a union: the right member is set below */
    switch (op) {
    case SHOAL__REQUEST__OP_PUT:
        q->r.put = &q->put;
        break;
    case SHOAL__REQUEST__OP_DEL:
        q->r.del = &q->del;
        break;
    case SHOAL__REQUEST__OP_INCR:
        q->r.incr = &q->incr;
        break;
    case SHOAL__REQUEST__OP_TTL:
        q->r.ttl = &q->ttl;
        break;
    case SHOAL__REQUEST__OP_EXISTS:
        q->r.exists = &q->exists;
        break;
    case SHOAL__REQUEST__OP_BATCH:
        q->r.batch = &q->batch;
        break;
    case SHOAL__REQUEST__OP_SCAN:
        q->r.scan = &q->scan;
        break;
    case SHOAL__REQUEST__OP_COUNT:
        q->r.count = &q->count;
        break;
    case SHOAL__REQUEST__OP_STATS:
        q->r.stats = &q->stats;
        break;
    default:
        break;
    }
}

static void
rq_send(bctx *c, rq *q, const wire_key *k, msg *m)
{
    seal_one(c, k != NULL ? k : &c->keys.admin, &q->r, m);
}

static uint8_t long_key[1025];

static void
b_no_op(bctx *c, proc_sp *sp, msg *m)
{
    (void) sp;
    rq q;
    rq_init(&q, SHOAL__REQUEST__OP__NOT_SET);
    rq_send(c, &q, NULL, m);
}

static void
b_unknown_op(bctx *c, proc_sp *sp, msg *m)
{
    (void) sp;
    /* Request{field 25 (no such op): bytes "x"}. */
    const uint8_t body[] = {0x0a, 0x04, 0xca, 0x01, 0x01, 'x'};
    sealed_raw(c, body, sizeof(body), m);
}

static void
b_get_no_key(bctx *c, proc_sp *sp, msg *m)
{
    (void) sp;
    rq q;
    rq_init(&q, SHOAL__REQUEST__OP_GET);
    rq_send(c, &q, NULL, m);
}

static void
b_get_empty_key(bctx *c, proc_sp *sp, msg *m)
{
    (void) sp;
    rq q;
    rq_init(&q, SHOAL__REQUEST__OP_GET);
    q.get.has_key = true;
    q.get.key = bin("", 0);
    rq_send(c, &q, NULL, m);
}

static void
b_put_long_key(bctx *c, proc_sp *sp, msg *m)
{
    (void) sp;
    rq q;
    rq_init(&q, SHOAL__REQUEST__OP_PUT);
    q.put.has_key = q.put.has_value = true;
    q.put.key = bin(long_key, 1025);
    q.put.value = str_bin("v");
    rq_send(c, &q, NULL, m);
}

static void
b_put_big_value(bctx *c, proc_sp *sp, msg *m)
{
    (void) sp;
    uint8_t *v = calloc(1, VALUE_LIMIT + 1);
    assert_non_null(v);
    rq q;
    rq_init(&q, SHOAL__REQUEST__OP_PUT);
    q.put.has_key = q.put.has_value = true;
    q.put.key = str_bin("bad/big");
    q.put.value = bin(v, VALUE_LIMIT + 1);
    rq_send(c, &q, NULL, m);
    free(v);
}

static void
b_put_no_key(bctx *c, proc_sp *sp, msg *m)
{
    (void) sp;
    rq q;
    rq_init(&q, SHOAL__REQUEST__OP_PUT);
    q.put.has_value = true;
    q.put.value = str_bin("v");
    rq_send(c, &q, NULL, m);
}

static void
b_put_huge_ttl(bctx *c, proc_sp *sp, msg *m)
{
    (void) sp;
    rq q;
    rq_init(&q, SHOAL__REQUEST__OP_PUT);
    q.put.has_key = q.put.has_value = q.put.has_ttl_ms = true;
    q.put.key = str_bin("bad/ttl");
    q.put.value = str_bin("v");
    q.put.ttl_ms = UINT64_MAX;
    rq_send(c, &q, NULL, m);
}

static void
b_put_if_version(bctx *c, proc_sp *sp, msg *m)
{
    (void) sp;
    rq q;
    rq_init(&q, SHOAL__REQUEST__OP_PUT);
    q.put.has_key = q.put.has_value = q.put.has_if_version = true;
    q.put.key = str_bin("bad/k");
    q.put.value = str_bin("v2");
    q.put.if_version = 999999999;
    rq_send(c, &q, NULL, m);
}

static void
b_put_if_absent(bctx *c, proc_sp *sp, msg *m)
{
    (void) sp;
    rq q;
    rq_init(&q, SHOAL__REQUEST__OP_PUT);
    q.put.has_key = q.put.has_value = q.put.has_if_absent = true;
    q.put.key = str_bin("bad/k");
    q.put.value = str_bin("v2");
    q.put.if_absent = true;
    rq_send(c, &q, NULL, m);
}

static void
b_del_missing(bctx *c, proc_sp *sp, msg *m)
{
    (void) sp;
    rq q;
    rq_init(&q, SHOAL__REQUEST__OP_DEL);
    q.del.has_key = true;
    q.del.key = str_bin("bad/none");
    rq_send(c, &q, NULL, m);
}

static void
b_del_if_version(bctx *c, proc_sp *sp, msg *m)
{
    (void) sp;
    rq q;
    rq_init(&q, SHOAL__REQUEST__OP_DEL);
    q.del.has_key = q.del.has_if_version = true;
    q.del.key = str_bin("bad/k");
    q.del.if_version = 999999999;
    rq_send(c, &q, NULL, m);
}

static void
b_del_empty_key(bctx *c, proc_sp *sp, msg *m)
{
    (void) sp;
    rq q;
    rq_init(&q, SHOAL__REQUEST__OP_DEL);
    q.del.has_key = true;
    q.del.key = bin("", 0);
    rq_send(c, &q, NULL, m);
}

static void
incr_req(bctx *c, const char *key, int64_t delta, msg *m)
{
    rq q;
    rq_init(&q, SHOAL__REQUEST__OP_INCR);
    q.incr.has_key = key != NULL;
    q.incr.key = key != NULL ? str_bin(key) : bin(NULL, 0);
    q.incr.has_delta = true;
    q.incr.delta = delta;
    rq_send(c, &q, NULL, m);
}

static void
b_incr_no_key(bctx *c, proc_sp *sp, msg *m)
{
    (void) sp;
    incr_req(c, NULL, 1, m);
}

static void
b_incr_text(bctx *c, proc_sp *sp, msg *m)
{
    (void) sp;
    incr_req(c, "bad/txt", 1, m);
}

static void
b_incr_overflow(bctx *c, proc_sp *sp, msg *m)
{
    (void) sp;
    incr_req(c, "bad/max", 1, m);
}

static void
b_incr_underflow(bctx *c, proc_sp *sp, msg *m)
{
    (void) sp;
    incr_req(c, "bad/min", INT64_MIN, m);
}

static void
b_ttl_empty_key(bctx *c, proc_sp *sp, msg *m)
{
    (void) sp;
    rq q;
    rq_init(&q, SHOAL__REQUEST__OP_TTL);
    q.ttl.has_key = true;
    q.ttl.key = bin("", 0);
    rq_send(c, &q, NULL, m);
}

static void
b_exists_long_key(bctx *c, proc_sp *sp, msg *m)
{
    (void) sp;
    rq q;
    rq_init(&q, SHOAL__REQUEST__OP_EXISTS);
    q.exists.has_key = true;
    q.exists.key = bin(long_key, 1025);
    rq_send(c, &q, NULL, m);
}

/* A batch of n ops (puts of "bad/b%d" unless dup, kinds as given). */
static void
batch_req(bctx *c, size_t n, bool dup, int kind, const void *key, size_t klen,
          msg *m)
{
    Shoal__BatchOp *ops = calloc(n + 1, sizeof(*ops));
    Shoal__BatchOp **opp = calloc(n + 1, sizeof(*opp));
    char(*keys)[32] = calloc(n + 1, 32);
    assert_true(ops != NULL && opp != NULL && keys != NULL);
    for (size_t i = 0; i < n; i++) {
        shoal__batch_op__init(&ops[i]);
        snprintf(keys[i], 32, "bad/b%zu", dup ? (size_t) 0 : i);
        ops[i].has_kind = kind != 0;
        ops[i].kind = (Shoal__BatchOp__Kind) kind;
        ops[i].has_key = ops[i].has_value = true;
        ops[i].key = key != NULL ? bin(key, klen) : str_bin(keys[i]);
        ops[i].value = str_bin("v");
        opp[i] = &ops[i];
    }
    rq q;
    rq_init(&q, SHOAL__REQUEST__OP_BATCH);
    q.batch.n_ops = n;
    q.batch.ops = opp;
    rq_send(c, &q, NULL, m);
    free(ops);
    free(opp);
    free(keys);
}

static void
b_batch_empty(bctx *c, proc_sp *sp, msg *m)
{
    (void) sp;
    batch_req(c, 0, false, 1, NULL, 0, m);
}

static void
b_batch_over(bctx *c, proc_sp *sp, msg *m)
{
    (void) sp;
    batch_req(c, 10001, false, 1, NULL, 0, m);
}

static void
b_batch_dup(bctx *c, proc_sp *sp, msg *m)
{
    (void) sp;
    batch_req(c, 3, true, 1, NULL, 0, m);
}

static void
b_batch_no_kind(bctx *c, proc_sp *sp, msg *m)
{
    (void) sp;
    batch_req(c, 2, false, 0, NULL, 0, m);
}

static void
b_batch_bad_kind(bctx *c, proc_sp *sp, msg *m)
{
    (void) sp;
    batch_req(c, 2, false, 99, NULL, 0, m);
}

static void
b_batch_empty_key(bctx *c, proc_sp *sp, msg *m)
{
    (void) sp;
    batch_req(c, 1, false, 1, "", 0, m);
}

static void
b_batch_long_key(bctx *c, proc_sp *sp, msg *m)
{
    (void) sp;
    batch_req(c, 1, false, 1, long_key, 1025, m);
}

static void
b_scan_huge_limit(bctx *c, proc_sp *sp, msg *m)
{
    (void) sp;
    rq q;
    rq_init(&q, SHOAL__REQUEST__OP_SCAN);
    q.scan.has_limit = q.scan.has_keys_only = true;
    q.scan.limit = UINT32_MAX;
    q.scan.keys_only = true;
    rq_send(c, &q, NULL, m);
}

static void
b_scan_inverted(bctx *c, proc_sp *sp, msg *m)
{
    (void) sp;
    rq q;
    rq_init(&q, SHOAL__REQUEST__OP_SCAN);
    q.scan.has_start = q.scan.has_end = true;
    q.scan.start = str_bin("fill/09000");
    q.scan.end = str_bin("fill/00100");
    rq_send(c, &q, NULL, m);
}

static void
b_scan_long_prefix(bctx *c, proc_sp *sp, msg *m)
{
    (void) sp;
    rq q;
    rq_init(&q, SHOAL__REQUEST__OP_SCAN);
    q.scan.has_prefix = true;
    q.scan.prefix = bin(long_key, 1025);
    rq_send(c, &q, NULL, m);
}

static void
b_scan_long_token(bctx *c, proc_sp *sp, msg *m)
{
    (void) sp;
    rq q;
    rq_init(&q, SHOAL__REQUEST__OP_SCAN);
    q.scan.has_token = true;
    q.scan.token = bin(long_key, 1025);
    rq_send(c, &q, NULL, m);
}

static void
b_scan_bad_shard(bctx *c, proc_sp *sp, msg *m)
{
    (void) sp;
    uint32_t shard = c->n_shards;
    rq q;
    rq_init(&q, SHOAL__REQUEST__OP_SCAN);
    q.scan.n_shards = 1;
    q.scan.shards = &shard;
    rq_send(c, &q, NULL, m);
}

static void
b_count_bad_shard(bctx *c, proc_sp *sp, msg *m)
{
    (void) sp;
    uint32_t shard = UINT32_MAX;
    rq q;
    rq_init(&q, SHOAL__REQUEST__OP_COUNT);
    q.count.n_shards = 1;
    q.count.shards = &shard;
    rq_send(c, &q, NULL, m);
}

static void
b_count_dup_shard(bctx *c, proc_sp *sp, msg *m)
{
    (void) sp;
    uint32_t shards[2] = {1, 1};
    rq q;
    rq_init(&q, SHOAL__REQUEST__OP_COUNT);
    q.count.n_shards = 2;
    q.count.shards = shards;
    rq_send(c, &q, NULL, m);
}

static void
b_count_long_prefix(bctx *c, proc_sp *sp, msg *m)
{
    (void) sp;
    rq q;
    rq_init(&q, SHOAL__REQUEST__OP_COUNT);
    q.count.has_prefix = true;
    q.count.prefix = bin(long_key, 1025);
    rq_send(c, &q, NULL, m);
}

static void
b_stats_write_key(bctx *c, proc_sp *sp, msg *m)
{
    (void) sp;
    rq q;
    rq_init(&q, SHOAL__REQUEST__OP_STATS);
    rq_send(c, &q, &c->keys.write, m);
}

static void
b_put_read_key(bctx *c, proc_sp *sp, msg *m)
{
    (void) sp;
    rq q;
    rq_init(&q, SHOAL__REQUEST__OP_PUT);
    q.put.has_key = q.put.has_value = true;
    q.put.key = str_bin("bad/k");
    q.put.value = str_bin("v");
    rq_send(c, &q, &c->keys.read, m);
}

static void
b_put_outside_prefix(bctx *c, proc_sp *sp, msg *m)
{
    (void) sp;
    rq q;
    rq_init(&q, SHOAL__REQUEST__OP_PUT);
    q.put.has_key = q.put.has_value = true;
    q.put.key = str_bin("bad/k");
    q.put.value = str_bin("v");
    rq_send(c, &q, &c->keys.prefixed, m);
}

static void
b_scan_outside_prefix(bctx *c, proc_sp *sp, msg *m)
{
    (void) sp;
    rq q;
    rq_init(&q, SHOAL__REQUEST__OP_SCAN);
    rq_send(c, &q, &c->keys.prefixed, m);
}

/* ---- transport cases: the connection is dropped -----------------------------
 */

static void
sp_len_prefix(msg *m, uint64_t len)
{
    uint8_t h[12];
    for (int i = 0; i < 8; i++)
        h[i] = (uint8_t) (len >> (56 - 8 * i));
    put_u32(h + 8, 0x01000080); /* request id 0x80000001, big-endian */
    raw_bytes(m, h, sizeof(h));
    m->raw = true;
}

static void
b_sp_len_2e40(bctx *c, proc_sp *sp, msg *m)
{
    (void) c;
    (void) sp;
    sp_len_prefix(m, 1ull << 40);
}

static void
b_sp_len_2e63(bctx *c, proc_sp *sp, msg *m)
{
    (void) c;
    (void) sp;
    sp_len_prefix(m, 1ull << 63);
}

/* A whole message one byte over --max-frame-bytes (17 MiB). */
static void
b_sp_over_limit(bctx *c, proc_sp *sp, msg *m)
{
    (void) c;
    (void) sp;
    size_t body = (17u << 20) + 1;
    m->p = calloc(1, body + 12);
    assert_non_null(m->p);
    uint64_t len = body + 4;
    for (int i = 0; i < 8; i++)
        m->p[i] = (uint8_t) (len >> (56 - 8 * i));
    m->p[8] = 0x80;
    m->p[11] = 0x01;
    m->len = body + 12;
    m->raw = true;
}

/* An SP message too short to hold a req0 request id. */
static void
b_sp_no_id(bctx *c, proc_sp *sp, msg *m)
{
    (void) c;
    (void) sp;
    const uint8_t h[] = {0, 0, 0, 0, 0, 0, 0, 2, 0x80, 0x00};
    raw_bytes(m, h, sizeof(h));
    m->raw = true;
}

/* A header word without the high bit and nothing after it. */
static void
b_sp_no_high_bit(bctx *c, proc_sp *sp, msg *m)
{
    (void) c;
    (void) sp;
    const uint8_t h[] = {0, 0, 0, 0, 0, 0, 0, 4, 0x00, 0x00, 0x00, 0x01};
    raw_bytes(m, h, sizeof(h));
    m->raw = true;
}

/* ---- the catalogue ----------------------------------------------------------
 */

enum { X_ERR, X_RESP, X_DROP };

typedef struct bad_case {
    const char *name;
    void (*build)(bctx *c, proc_sp *sp, msg *m);
    int expect;
    shoal_err status; /* X_ERR: the error frame's; X_RESP: every response's */
    size_t n_resps;   /* X_RESP */
    bool (*check)(bctx *c, const Shoal__ResponseFrame *rf); /* may be NULL */
} bad_case;

static bool
chk_scan_clamped(bctx *c, const Shoal__ResponseFrame *rf)
{
    (void) c;
    const Shoal__Response *r = rf->resps[0];
    return r->result_case == SHOAL__RESPONSE__RESULT_SCAN &&
           r->scan->n_items == 10000 && r->scan->has_more && r->scan->more;
}

/* start > end is an empty range, not an error. */
static bool
chk_scan_empty(bctx *c, const Shoal__ResponseFrame *rf)
{
    (void) c;
    const Shoal__Response *r = rf->resps[0];
    return r->result_case == SHOAL__RESPONSE__RESULT_SCAN &&
           r->scan->n_items == 0 && !(r->scan->has_more && r->scan->more);
}

#define ERR(n, fn, st)                    \
    {                                     \
        n, fn, X_ERR, SHOAL_##st, 0, NULL \
    }
#define RESP(n, fn, st)                    \
    {                                      \
        n, fn, X_RESP, SHOAL_##st, 1, NULL \
    }
#define RESPN(n, fn, st, k)                \
    {                                      \
        n, fn, X_RESP, SHOAL_##st, k, NULL \
    }
#define CHECK(n, fn, st, k, chk)          \
    {                                     \
        n, fn, X_RESP, SHOAL_##st, k, chk \
    }
#define DROP(n, fn)                      \
    {                                    \
        n, fn, X_DROP, SHOAL_OK, 0, NULL \
    }

static const bad_case catalogue[] = {
    /* frames that cannot be opened: plaintext error frames */
    ERR("empty message", b_empty, EINVAL),
    ERR("1 byte", b_one_byte, EINVAL),
    ERR("31-byte header", b_short_hdr, EINVAL),
    ERR("bad magic", b_bad_magic, EINVAL),
    ERR("version 0", b_version0, EINVAL),
    ERR("version 2", b_version2, EINVAL),
    ERR("version 255", b_version255, EINVAL),
    ERR("unknown flag 0x10", b_flag10, EINVAL),
    ERR("unknown flag 0x80", b_flag80, EINVAL),
    ERR("response flag on a request", b_resp_flag, EINVAL),
    ERR("peer flag on a client frame", b_peer_flag, EINVAL),
    ERR("error flag on a sealed frame", b_error_flag, EINVAL),
    ERR("sealed frame without tag", b_no_tag, EINVAL),
    ERR("sealed frame with a truncated tag", b_short_tag, EINVAL),
    ERR("sealed frame with key id 0", b_key_id0, EINVAL),
    ERR("unknown key id", b_unknown_key, EAUTH),
    ERR("flipped tag byte", b_flip_tag, EAUTH),
    ERR("flipped body byte", b_flip_body, EAUTH),
    ERR("flipped nonce byte", b_flip_nonce, EAUTH),
    ERR("another key's id", b_other_key_id, EAUTH),
    ERR("right id, wrong secret", b_wrong_secret, EAUTH),
    ERR("plaintext frame on a sealed node", b_plaintext, EAUTH),
    ERR("plaintext frame with a key id", b_plain_with_id, EINVAL),
    ERR("replayed frame", b_replay, EAUTH),
    ERR("sealed an hour ago", b_old_time, EAUTH),
    ERR("sealed an hour ahead", b_future_time, EAUTH),
    ERR("1 MiB of random bytes", b_random_mib, EINVAL),
    /* frames that open but do not decode: one frame-level response */
    RESP("garbage protobuf", b_garbage_pb, EINVAL),
    RESP("wrong wire type", b_wrong_wiretype, EINVAL),
    RESP("truncated varint", b_truncated_varint, EINVAL),
    RESP("length past the end", b_overrun_len, EINVAL),
    RESP("length 2^62", b_huge_len, EINVAL),
    RESP("group wire type", b_group, EINVAL),
    RESP("11-byte varint", b_overlong_varint, EINVAL),
    RESP("nested length past the end", b_nested_bad, EINVAL),
    RESP("65537 requests in a frame", b_too_many_reqs, ETOOLARGE),
    /* frames that decode */
    RESPN("empty request frame", b_empty_frame, OK, 0),
    RESPN("only unknown fields", b_unknown_fields, OK, 0),
    RESPN("10000 empty requests", b_tiny_reqs, EINVAL, 10000),
    RESP("2000-deep unknown nesting", b_deep_unknown, ENOTFOUND),
    RESP("max-value varints", b_max_varints, ENOTFOUND),
    RESPN("duplicate request ids", b_dup_ids, ENOTFOUND, 3),
    RESP("request without op", b_no_op, EINVAL),
    RESP("unknown op field", b_unknown_op, EINVAL),
    RESP("get without key", b_get_no_key, EINVAL),
    RESP("get with empty key", b_get_empty_key, EINVAL),
    RESP("put key 1025 bytes", b_put_long_key, ETOOLARGE),
    RESP("put value 16 MiB + 1", b_put_big_value, ETOOLARGE),
    RESP("put without key", b_put_no_key, EINVAL),
    RESP("put ttl 2^64-1", b_put_huge_ttl, EINVAL),
    RESP("put if_version mismatch", b_put_if_version, EVERSION),
    RESP("put if_absent on a live key", b_put_if_absent, EEXISTS),
    RESP("delete missing", b_del_missing, ENOTFOUND),
    RESP("delete if_version mismatch", b_del_if_version, EVERSION),
    RESP("delete empty key", b_del_empty_key, EINVAL),
    RESP("incr without key", b_incr_no_key, EINVAL),
    RESP("incr on a non-number", b_incr_text, ENOTNUM),
    RESP("incr overflow", b_incr_overflow, EOVERFLOW),
    RESP("incr underflow", b_incr_underflow, EOVERFLOW),
    RESP("ttl empty key", b_ttl_empty_key, EINVAL),
    RESP("exists key 1025 bytes", b_exists_long_key, ETOOLARGE),
    RESP("batch without ops", b_batch_empty, EINVAL),
    RESP("batch over the op limit", b_batch_over, ETOOLARGE),
    RESP("batch with duplicate keys", b_batch_dup, EINVAL),
    RESP("batch op without kind", b_batch_no_kind, EINVAL),
    RESP("batch op of kind 99", b_batch_bad_kind, EINVAL),
    RESP("batch op with empty key", b_batch_empty_key, EINVAL),
    RESP("batch op key 1025 bytes", b_batch_long_key, ETOOLARGE),
    CHECK("scan limit 2^32-1 (clamped)", b_scan_huge_limit, OK, 1,
          chk_scan_clamped),
    CHECK("scan with inverted range (empty)", b_scan_inverted, OK, 1,
          chk_scan_empty),
    RESP("scan prefix 1025 bytes", b_scan_long_prefix, ETOOLARGE),
    RESP("scan token 1025 bytes", b_scan_long_token, ETOOLARGE),
    RESP("scan shard out of range", b_scan_bad_shard, EINVAL),
    RESP("count shard out of range", b_count_bad_shard, EINVAL),
    RESP("count shard listed twice", b_count_dup_shard, EINVAL),
    RESP("count prefix 1025 bytes", b_count_long_prefix, ETOOLARGE),
    RESP("stats with a write key", b_stats_write_key, EPERM),
    RESP("put with a read key", b_put_read_key, EPERM),
    RESP("put outside the key's prefix", b_put_outside_prefix, EPERM),
    RESP("scan outside the key's prefix", b_scan_outside_prefix, EPERM),
    /* transport: the connection is dropped */
    DROP("SP length prefix 2^40", b_sp_len_2e40),
    DROP("SP length prefix 2^63", b_sp_len_2e63),
    DROP("SP message over --max-frame-bytes", b_sp_over_limit),
    DROP("SP message without request id", b_sp_no_id),
    DROP("SP header without end of backtrace", b_sp_no_high_bit),
};

#define N_CASES (sizeof(catalogue) / sizeof(catalogue[0]))

/* ---- running a case ---------------------------------------------------------
 */

static bool
check_resps(bctx *c, const bad_case *bc, const uint8_t nonce[WIRE_NONCE_BYTES],
            const proc_reply *r, char *why, size_t why_len)
{
    const Shoal__ResponseFrame *rf = r->frame;
    if (r->is_error) {
        snprintf(why, why_len, "error frame %s", shoal_errname(r->error));
        return false;
    }
    if (!rf->has_req_nonce || rf->req_nonce.len != WIRE_NONCE_BYTES ||
        memcmp(rf->req_nonce.data, nonce, WIRE_NONCE_BYTES) != 0) {
        snprintf(why, why_len, "req_nonce does not match");
        return false;
    }
    if (rf->n_resps != bc->n_resps) {
        snprintf(why, why_len, "%zu responses", rf->n_resps);
        return false;
    }
    for (size_t i = 0; i < rf->n_resps; i++) {
        shoal_err st = (shoal_err) rf->resps[i]->status;
        if (st != bc->status) {
            snprintf(why, why_len, "response %zu: %s (%s)", i,
                     shoal_errname(st),
                     rf->resps[i]->message ? rf->resps[i]->message : "");
            return false;
        }
    }
    if (bc->check != NULL && !bc->check(c, rf)) {
        snprintf(why, why_len, "result check failed");
        return false;
    }
    snprintf(why, why_len, "%zu x %s", rf->n_resps, shoal_errname(bc->status));
    return true;
}

static bool
expect_answer(bctx *c, const bad_case *bc, proc_sp *sp, msg *m, char *why,
              size_t why_len)
{
    uint8_t nonce[WIRE_NONCE_BYTES] = {0};
    if (m->len >= WIRE_HDR_BYTES)
        memcpy(nonce, m->p + 8, WIRE_NONCE_BYTES);
    uint8_t *resp = NULL;
    size_t rlen = 0;
    shoal_err rc = proc_sp_call(sp, m->p, m->len, CALL_MS, &resp, &rlen);
    if (rc != SHOAL_OK) {
        snprintf(why, why_len, "no answer: %s", shoal_errname(rc));
        return false;
    }
    proc_reply r;
    rc = proc_reply_decode(answer_key(c, resp, rlen), resp, rlen, &r);
    bool ok = false;
    if (rc != SHOAL_OK) {
        snprintf(why, why_len, "undecodable answer: %s", shoal_errname(rc));
    } else if (bc->expect == X_ERR) {
        ok = r.is_error && r.error == bc->status;
        snprintf(why, why_len, "%s %s", r.is_error ? "error frame" : "answer",
                 r.is_error ? shoal_errname(r.error) : "(sealed)");
    } else {
        /* Frame-level errors come back under the caller's key. */
        ok = check_resps(c, bc, nonce, &r, why, why_len);
    }
    proc_reply_fini(&r);
    free(resp);
    return ok;
}

static bool
expect_drop(proc_sp *sp, msg *m, char *why, size_t why_len)
{
    shoal_err rc = proc_sp_send_raw(sp, m->p, m->len);
    bool closed = proc_sp_closed(sp, 10000);
    snprintf(why, why_len, "send %s, connection %s", shoal_errname(rc),
             closed ? "dropped" : "still open");
    return closed;
}

static bool
run_case(bctx *c, const bad_case *bc, char *why, size_t why_len)
{
    proc_sp *sp = NULL;
    assert_int_equal(proc_sp_connect(proc_node_port(c->node), 10000, &sp),
                     SHOAL_OK);
    msg m = {NULL, 0, false};
    bc->build(c, sp, &m);
    bool ok = bc->expect == X_DROP ? expect_drop(sp, &m, why, why_len)
                                   : expect_answer(c, bc, sp, &m, why, why_len);
    free(m.p);
    proc_sp_close(sp);
    return ok;
}

/* ---- fixture ----------------------------------------------------------------
 */

static void
fill(bctx *c)
{
    const char *puts[][2] = {{"bad/txt", "hello"},
                             {"bad/max", "9223372036854775807"},
                             {"bad/min", "-9223372036854775808"},
                             {"bad/k", "v"}};
    for (size_t i = 0; i < 4; i++)
        assert_int_equal(shoal_put(c->db, puts[i][0], strlen(puts[i][0]),
                                   puts[i][1], strlen(puts[i][1]), NULL, NULL,
                                   NULL),
                         SHOAL_OK);
    enum { PER = 1005 };
    static char keys[PER][16];
    static shoal_batch_op ops[PER];
    for (size_t b = 0; b < FILL_KEYS / PER; b++) {
        memset(ops, 0, sizeof(ops));
        for (size_t i = 0; i < PER; i++) {
            snprintf(keys[i], sizeof(keys[i]), "fill/%05zu", b * PER + i);
            ops[i].kind = SHOAL_BATCH_PUT;
            ops[i].key = keys[i];
            ops[i].klen = strlen(keys[i]);
            ops[i].val = keys[i] + 5;
            ops[i].vlen = 5;
        }
        assert_int_equal(shoal_batch(c->db, ops, PER, NULL, NULL, NULL),
                         SHOAL_OK);
    }
}

static int
bx_start(void **state, bool no_quarantine)
{
    bctx *c = calloc(1, sizeof(*c));
    void *dir = NULL;
    if (c == NULL || tu_tmpdir_up(&dir) != 0)
        return -1;
    c->dir = dir;
    *state = c;
    memset(long_key, 'L', sizeof(long_key));
    wire_sender_init(&c->sender);
    const char *asan = getenv("ASAN_OPTIONS");
    snprintf(c->asan_env, sizeof(c->asan_env),
             "ASAN_OPTIONS=%s%squarantine_size_mb=0", asan ? asan : "",
             asan && asan[0] ? ":" : "");
    const char *env[] = {no_quarantine ? c->asan_env : NULL, NULL};
    const char *extra[] = {"--max-frame-bytes", MAX_FRAME, NULL};
    proc_node_opts o;
    proc_node_opts_default(&o);
    o.dir = c->dir;
    o.extra_args = extra;
    o.env = env;
    shoal_opts so;
    shoal_opts_default(&so);
    if (proc_node_start_keyed(c->dir, &o, &c->keys, &c->node) != SHOAL_OK)
        return -1;
    const char *seeds[] = {proc_node_url(c->node)};
    so.seeds = seeds;
    so.n_seeds = 1;
    so.key_file = c->keys.admin_file;
    so.timeout_ms = CALL_MS;
    if (shoal_open(&so, &c->db) != SHOAL_OK)
        return -1;
    shoal_stats st;
    if (shoal_stats_get(c->db, &st, NULL) != SHOAL_OK)
        return -1;
    c->n_shards = st.n_shards;
    return 0;
}

static int
bx_up(void **state)
{
    return bx_start(state, false);
}

static int
bx_up_flood(void **state)
{
    return bx_start(state, true);
}

static int
bx_down(void **state)
{
    bctx *c = *state;
    if (c == NULL)
        return 0;
    shoal_close(c->db);
    proc_node_free(c->node);
    proc_reap_all();
    proc_keys_wipe(&c->keys);
    void *dir = c->dir;
    tu_tmpdir_down(&dir);
    free(c);
    return 0;
}

typedef struct snapshot {
    uint64_t digest;
    size_t n_keys;
    uint64_t wal_records;
} snapshot;

static void
take_snapshot(bctx *c, snapshot *s)
{
    assert_int_equal(proc_scan_digest(c->db, &s->digest, &s->n_keys), SHOAL_OK);
    shoal_stats st;
    assert_int_equal(shoal_stats_get(c->db, &st, NULL), SHOAL_OK);
    s->wal_records = st.wal_records;
}

static void
test_badinput_catalogue(void **state)
{
    bctx *c = *state;
    fill(c);
    snapshot before, after;
    take_snapshot(c, &before);
    printf("# catalogue: %zu cases; state: %zu keys, digest %016" PRIx64
           ", %" PRIu64 " WAL records\n",
           N_CASES, before.n_keys, before.digest, before.wal_records);
    assert_true(N_CASES >= 50);
    size_t failed = 0;
    for (size_t i = 0; i < N_CASES; i++) {
        char why[256];
        bool ok = run_case(c, &catalogue[i], why, sizeof(why));
        printf("# %s [%2zu] %-40s %s\n", ok ? "ok  " : "FAIL", i + 1,
               catalogue[i].name, why);
        failed += !ok;
        /* The node must survive every case. */
        int status = 0;
        assert_int_equal(proc_node_http(c->node, "/health", &status, NULL),
                         SHOAL_OK);
        assert_int_equal(status, 200);
    }
    fflush(stdout);
    take_snapshot(c, &after);
    printf("# after: %zu keys, digest %016" PRIx64 ", %" PRIu64
           " WAL records\n",
           after.n_keys, after.digest, after.wal_records);
    assert_int_equal(failed, 0);
    assert_int_equal(after.n_keys, before.n_keys);
    assert_int_equal(after.digest, before.digest);
    assert_int_equal(after.wal_records, before.wal_records);
}

/* ---- flood: RSS after 1 M bad requests --------------------------------------
 */

typedef struct flood {
    bctx *c;
    proc_sp *sp;
    uint8_t *big_body; /* RequestFrame of FLOOD_K bad requests */
    size_t big_len;
    uint8_t *replay; /* a frame the node has seen */
    size_t replay_len;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int outstanding;    /* guarded by mu */
    uint64_t sent_msgs; /* guarded by mu */
    bool sending_done;  /* guarded by mu */
    uint64_t answered;  /* receiver thread */
    uint64_t bad_answers;
    uint64_t checked_big;
    shoal_err recv_rc;
} flood;

/* One of the FLOOD_K requests of the big frame (kind i % 10), built in q. */
static void
flood_req(rq *q, size_t i, Shoal__BatchOp **bopp, uint32_t *bad_shard)
{
    static const Shoal__Request__OpCase ops[10] = {
        SHOAL__REQUEST__OP_GET,      SHOAL__REQUEST__OP_PUT,
        SHOAL__REQUEST__OP__NOT_SET, SHOAL__REQUEST__OP_INCR,
        SHOAL__REQUEST__OP_DEL,      SHOAL__REQUEST__OP_BATCH,
        SHOAL__REQUEST__OP_COUNT,    SHOAL__REQUEST__OP_SCAN,
        SHOAL__REQUEST__OP_STATS,    SHOAL__REQUEST__OP_PUT};
    size_t kind = i % 10;
    rq_init(q, ops[kind]);
    q->r.has_id = true;
    q->r.id = i + 1;
    switch (kind) {
    case 0:
        q->get.has_key = true;
        break; /* empty key */
    case 1:    /* key too large, 1 in 50 */
        q->put.has_key = q->put.has_value = true;
        q->put.key = i % 50 == 1 ? bin(long_key, 1025) : bin("", 0);
        q->put.value = str_bin("v");
        break;
    case 3:
        q->incr.has_key = q->incr.has_delta = true;
        q->incr.key = str_bin("bad/txt");
        q->incr.delta = 1;
        break;
    case 4:
        q->del.has_key = true;
        q->del.key = str_bin("bad/none");
        break;
    case 5:
        q->batch.n_ops = 2;
        q->batch.ops = bopp;
        break;
    case 6:
        q->count.n_shards = 1;
        q->count.shards = bad_shard;
        break;
    case 7:
        q->scan.n_shards = 1;
        q->scan.shards = bad_shard;
        break;
    case 9:
        q->put.has_key = q->put.has_value = true;
        q->put.has_if_version = true;
        q->put.key = str_bin("bad/k");
        q->put.value = str_bin("v");
        q->put.if_version = 999999999;
        break;
    default:
        break;
    }
}

static void
flood_build(flood *f)
{
    rq *store = calloc(FLOOD_K, sizeof(*store));
    Shoal__Request **rp = calloc(FLOOD_K, sizeof(*rp));
    assert_true(store != NULL && rp != NULL);
    Shoal__BatchOp bops[2];
    Shoal__BatchOp *bopp[2] = {&bops[0], &bops[1]};
    for (int i = 0; i < 2; i++) {
        shoal__batch_op__init(&bops[i]);
        bops[i].has_kind = bops[i].has_key = true;
        bops[i].kind = SHOAL__BATCH_OP__KIND__DEL;
        bops[i].key = str_bin("bad/dup");
    }
    uint32_t bad_shard = f->c->n_shards + 5;
    for (size_t i = 0; i < FLOOD_K; i++) {
        flood_req(&store[i], i, bopp, &bad_shard);
        rp[i] = &store[i].r;
    }
    assert_int_equal(proc_reqframe_pack(rp, FLOOD_K, &f->big_body, &f->big_len),
                     SHOAL_OK);
    free(store);
    free(rp);
}

/* The small bad frame number i of a round. */
static void
flood_small(flood *f, size_t i, msg *m)
{
    bctx *c = f->c;
    switch (i % 6) {
    case 0:
        b_bad_magic(c, NULL, m);
        break;
    case 1:
        b_unknown_key(c, NULL, m);
        break;
    case 2:
        b_flip_tag(c, NULL, m);
        break;
    case 3:
        b_plaintext(c, NULL, m);
        break;
    case 4: {
        const uint8_t body[] = {0xff, 0xff, 0x07};
        seal_body(c, &c->keys.write, 0, body, sizeof(body), m);
        break;
    }
    default:
        raw_bytes(m, f->replay, f->replay_len);
        break;
    }
}

static void
flood_send(flood *f, uint32_t id, msg *m)
{
    pthread_mutex_lock(&f->mu);
    while (f->outstanding >= FLOOD_WINDOW && f->recv_rc == SHOAL_OK)
        pthread_cond_wait(&f->cv, &f->mu);
    f->outstanding++;
    f->sent_msgs++;
    pthread_mutex_unlock(&f->mu);
    assert_int_equal(proc_sp_send(f->sp, id, m->p, m->len), SHOAL_OK);
    free(m->p);
    m->p = NULL;
}

/* Check an answer: an error frame, or (every 16th) a decoded big answer
 * whose every response failed. */
static void
flood_check(flood *f, uint8_t *resp, size_t len)
{
    if (len == 36) {
        shoal_err st = SHOAL_OK;
        if (wire_error_status(resp, len, &st) != SHOAL_OK ||
            (st != SHOAL_EINVAL && st != SHOAL_EAUTH))
            f->bad_answers++;
        return;
    }
    if (f->answered % 16 != 0)
        return;
    proc_reply r;
    if (proc_reply_decode(answer_key(f->c, resp, len), resp, len, &r) !=
        SHOAL_OK) {
        f->bad_answers++;
        return;
    }
    if (r.frame->n_resps == FLOOD_K) {
        f->checked_big++;
        for (size_t i = 0; i < r.frame->n_resps; i++)
            if (r.frame->resps[i]->status == SHOAL__STATUS__OK)
                f->bad_answers++;
    } else if (r.frame->n_resps != 1 ||
               r.frame->resps[0]->status != SHOAL__STATUS__EINVAL) {
        f->bad_answers++; /* garbage protobuf: one EINVAL */
    }
    proc_reply_fini(&r);
}

static void *
flood_recv(void *arg)
{
    flood *f = arg;
    for (;;) {
        pthread_mutex_lock(&f->mu);
        bool done = f->sending_done && f->answered == f->sent_msgs;
        pthread_mutex_unlock(&f->mu);
        if (done)
            break;
        uint32_t id = 0;
        uint8_t *resp = NULL;
        size_t len = 0;
        shoal_err rc = proc_sp_recv(f->sp, CALL_MS, &id, &resp, &len);
        if (rc == SHOAL_OK)
            flood_check(f, resp, len);
        free(resp);
        pthread_mutex_lock(&f->mu);
        if (rc != SHOAL_OK)
            f->recv_rc = rc;
        else
            f->answered++;
        f->outstanding--;
        pthread_cond_signal(&f->cv);
        pthread_mutex_unlock(&f->mu);
        if (rc != SHOAL_OK)
            break;
    }
    return NULL;
}

/* Send bad requests until `target` more have gone out. */
static uint64_t
flood_run(flood *f, uint64_t target)
{
    uint64_t sent = 0;
    uint32_t id = 1;
    pthread_t thr;
    f->sending_done = false;
    assert_int_equal(pthread_create(&thr, NULL, flood_recv, f), 0);
    while (sent < target && f->recv_rc == SHOAL_OK) {
        msg m = {NULL, 0, false};
        seal_body(f->c, &f->c->keys.write, 0, f->big_body, f->big_len, &m);
        flood_send(f, id++, &m);
        sent += FLOOD_K;
        for (size_t i = 0; i < FLOOD_SMALL; i++) {
            flood_small(f, i, &m);
            flood_send(f, id++, &m);
            sent++;
        }
    }
    pthread_mutex_lock(&f->mu);
    f->sending_done = true;
    pthread_mutex_unlock(&f->mu);
    pthread_join(thr, NULL);
    assert_int_equal(f->recv_rc, SHOAL_OK);
    return sent;
}

static void
test_badinput_rss(void **state)
{
    bctx *c = *state;
    fill(c);
    flood f;
    memset(&f, 0, sizeof(f));
    f.c = c;
    f.recv_rc = SHOAL_OK;
    pthread_mutex_init(&f.mu, NULL);
    pthread_cond_init(&f.cv, NULL);
    flood_build(&f);
    assert_int_equal(proc_sp_connect(proc_node_port(c->node), 10000, &f.sp),
                     SHOAL_OK);
    msg rm = {NULL, 0, false};
    b_replay(c, f.sp, &rm); /* rm: a frame the node has answered once */
    f.replay = rm.p;
    f.replay_len = rm.len;

    uint64_t total = tu_long() ? 5000000 : 1000000;
    snapshot before, after;
    take_snapshot(c, &before);
    uint64_t t0 = proc_now_ms();
    uint64_t warm = flood_run(&f, 100000);
    uint64_t rss_warm = 0, rss_end = 0;
    assert_int_equal(proc_rss_kb(proc_node_pid(c->node), &rss_warm), SHOAL_OK);
    uint64_t t1 = proc_now_ms();
    uint64_t sent = 0;
    while (sent < total) { /* in steps of 1 M, printing the RSS */
        sent += flood_run(&f, 1000000);
        assert_int_equal(proc_rss_kb(proc_node_pid(c->node), &rss_end),
                         SHOAL_OK);
        printf("# %" PRIu64 " bad requests after the warm-up: RSS %" PRIu64
               " KiB\n",
               sent, rss_end);
        fflush(stdout);
    }
    uint64_t t2 = proc_now_ms();
    double growth =
        100.0 * ((double) rss_end - (double) rss_warm) / (double) rss_warm;
    printf("# flood (%s profile): warm-up %" PRIu64 " bad requests in %" PRIu64
           " ms, RSS %" PRIu64 " KiB; then %" PRIu64 " in %" PRIu64
           " ms, RSS %" PRIu64 " KiB: %+.2f %% (limit +10 %%); %" PRIu64
           " big answers checked, %" PRIu64 " wrong\n",
           tu_long() ? "long" : "default", warm, t1 - t0, rss_warm, sent,
           t2 - t1, rss_end, growth, f.checked_big, f.bad_answers);
    assert_true(sent >= total);
    assert_int_equal(f.bad_answers, 0);
    assert_true(f.checked_big > 0);
    assert_true(growth < 10.0);
    take_snapshot(c, &after);
    assert_int_equal(after.digest, before.digest);
    assert_int_equal(after.wal_records, before.wal_records);
    proc_sp_close(f.sp);
    free(f.big_body);
    free(f.replay);
    pthread_mutex_destroy(&f.mu);
    pthread_cond_destroy(&f.cv);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_badinput_catalogue, bx_up,
                                        bx_down),
        cmocka_unit_test_setup_teardown(test_badinput_rss, bx_up_flood,
                                        bx_down),
    };
    /* SHOAL_TEST_FILTER=test_x_* runs only the matching tests. */
    const char *filter = getenv("SHOAL_TEST_FILTER");
    if (filter != NULL && filter[0] != '\0')
        cmocka_set_test_filter(filter);
    return cmocka_run_group_tests(tests, NULL, NULL);
}
