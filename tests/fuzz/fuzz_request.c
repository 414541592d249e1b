/*
 * fuzz_request.c -- libFuzzer target for the request decoder and executor
 * (TESTING G7, G9).
 *
 * Input: one flags byte, then an encoded Shoal__RequestFrame (at most
 * 64 KiB). The frame is decoded through a pbuf_arena, and every request in
 * it runs (exec.h) against a memory-only store of 16 shards, opened once,
 * as an admin caller; with an odd flags byte each also runs as a write
 * caller confined to the prefix "a". The responses are packed into a
 * ResponseFrame, which must unpack again; then the arena is reset.
 *
 * Checked beyond "no crash, no leak": each response echoes its request's id
 * and the node's map epoch with the status exec reported, errors carry a
 * message, and the confined caller never gets stats nor sees or touches a
 * key outside its prefix (a scan's items, a get's or write's key).
 *
 * The store is emptied (closed and reopened) when it holds many keys, so
 * long runs stay within the fuzzer's memory limit.
 *
 * The seed corpus (tests/fuzz/corpus/request) is written by the unit test
 * with SHOAL_REQUEST_CORPUS=<dir>.
 */
#include "node/exec.h"

#include "proto/clock.h"
#include "proto/slog.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define INPUT_MAX   (1u << 16)
#define N_SHARDS    16u
#define MAX_REQS    512u   /* requests run per input */
#define RESET_KEYS  20000u /* empty the store past this many keys */
#define RESET_BYTES (32u << 20)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static store *st;
static exec_ctx x;
static pbuf_arena arena;
static wire_key admin = {.id = 1, .role = WIRE_ROLE_ADMIN};
static wire_key confined = {
    .id = 2, .role = WIRE_ROLE_WRITE, .prefix = {'a'}, .prefix_len = 1};

static void
drop_log(void *arg, slog_level level, const char *module, const char *msg)
{
    (void) arg;
    (void) level;
    (void) module;
    (void) msg;
}

static void
open_store(void)
{
    store_opts o;
    store_opts_default(&o);
    o.data_dir = NULL;
    o.n_shards = N_SHARDS;
    o.max_value_bytes = INPUT_MAX;
    o.background = false;
    if (store_open(&o, &st) != SHOAL_OK)
        abort();
    x.st = st;
}

static void
setup(void)
{
    if (st != NULL) {
        store_stats ss;
        store_get_stats(st, &ss);
        if (ss.keys < RESET_KEYS && ss.bytes < RESET_BYTES)
            return;
        store_close(st);
        open_store();
        return;
    }
    slog_set_sink(drop_log, NULL);
    open_store();
    x.n_shards = N_SHARDS;
    memcpy(x.hash_key, "fuzz-request-key", KEYHASH_KEY_BYTES);
    x.node_id = "fuzz";
    x.advertise_url = "tcp://127.0.0.1:7400";
    x.map_epoch = 3;
    x.max_key_bytes = 1024;
    x.max_value_bytes = INPUT_MAX;
    x.max_batch_ops = 10000;
    x.start_ms = clock_mono_ns() / 1000000u;
    pbuf_arena_init(&arena, 64u << 10);
}

static bool
in_prefix(const ProtobufCBinaryData *k)
{
    return k->len >= 1 && k->data[0] == 'a';
}

static int
bcmp_bytes(const ProtobufCBinaryData *a, const ProtobufCBinaryData *b)
{
    size_t n = a->len < b->len ? a->len : b->len;
    int d = n != 0 ? memcmp(a->data, b->data, n) : 0;
    return d != 0 ? d : (a->len > b->len) - (a->len < b->len);
}

/* Where a scan starts (exec.h): the token, unless it lies before start. */
static const ProtobufCBinaryData *
scan_start(const Shoal__ScanReq *s)
{
    if (s->token.len != 0 &&
        (s->start.len == 0 || bcmp_bytes(&s->token, &s->start) >= 0))
        return &s->token;
    return &s->start;
}

/* The key a single-key request names, or NULL. */
static const ProtobufCBinaryData *
req_key(const Shoal__Request *q)
{
    switch (q->op_case) {
    case SHOAL__REQUEST__OP_GET:
        return &q->get->key;
    case SHOAL__REQUEST__OP_PUT:
        return &q->put->key;
    case SHOAL__REQUEST__OP_DEL:
        return &q->del->key;
    case SHOAL__REQUEST__OP_INCR:
        return &q->incr->key;
    case SHOAL__REQUEST__OP_TTL:
        return &q->ttl->key;
    case SHOAL__REQUEST__OP_EXISTS:
        return &q->exists->key;
    default:
        return NULL;
    }
}

/* What the confined caller got must stay inside its prefix. */
static void
check_confined(const Shoal__Request *q, const Shoal__Response *r)
{
    if (r->status != SHOAL__STATUS__OK)
        return;
    if (q->op_case == SHOAL__REQUEST__OP_STATS)
        abort();
    const ProtobufCBinaryData *k = req_key(q);
    if (k != NULL && !in_prefix(k))
        abort();
    if (q->op_case == SHOAL__REQUEST__OP_BATCH)
        for (size_t i = 0; i < q->batch->n_ops; i++)
            if (!in_prefix(&q->batch->ops[i]->key))
                abort();
    if (q->op_case == SHOAL__REQUEST__OP_COUNT && !in_prefix(&q->count->prefix))
        abort();
    if (q->op_case == SHOAL__REQUEST__OP_SCAN && !in_prefix(&q->scan->prefix) &&
        !(in_prefix(scan_start(q->scan)) && in_prefix(&q->scan->end)))
        abort();
    if (r->result_case == SHOAL__RESPONSE__RESULT_SCAN)
        for (size_t i = 0; i < r->scan->n_items; i++)
            if (!in_prefix(&r->scan->items[i]->key))
                abort();
}

static Shoal__Response *
run(const wire_key *caller, const Shoal__Request *q)
{
    Shoal__Response *r = pbuf_arena_alloc(&arena, sizeof(*r));
    if (r == NULL)
        abort();
    shoal__response__init(r);
    exec_result res;
    exec_request(&x, caller, q, r, &arena, &res);
    if (!r->has_status || (shoal_err) r->status != res.status ||
        r->id != q->id || r->map_epoch != x.map_epoch)
        abort();
    if (res.status != SHOAL_OK && r->message == NULL)
        abort();
    if (caller == &confined)
        check_confined(q, r);
    return r;
}

/* Pack the responses; the bytes must decode again. */
static void
pack_all(Shoal__Response **resps, size_t n)
{
    Shoal__ResponseFrame fr;
    shoal__response_frame__init(&fr);
    fr.resps = resps;
    fr.n_resps = n;
    size_t len = shoal__response_frame__get_packed_size(&fr);
    uint8_t *buf = malloc(len + 1);
    if (buf == NULL)
        abort();
    if (shoal__response_frame__pack(&fr, buf) != len)
        abort();
    Shoal__ResponseFrame *back =
        shoal__response_frame__unpack(&arena.alloc, len, buf);
    if (back == NULL || back->n_resps != n)
        abort();
    free(buf);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1 || size > INPUT_MAX)
        return 0;
    setup();
    bool also_confined = (data[0] & 1) != 0;
    Shoal__RequestFrame *fr =
        shoal__request_frame__unpack(&arena.alloc, size - 1, data + 1);
    if (fr != NULL) {
        size_t n = fr->n_reqs < MAX_REQS ? fr->n_reqs : MAX_REQS;
        size_t per = also_confined ? 2 : 1, k = 0;
        Shoal__Response **resps =
            pbuf_arena_alloc(&arena, (n * per + 1) * sizeof(*resps));
        if (resps == NULL)
            abort();
        for (size_t i = 0; i < n; i++) {
            resps[k++] = run(&admin, fr->reqs[i]);
            if (also_confined)
                resps[k++] = run(&confined, fr->reqs[i]);
        }
        pack_all(resps, k);
    }
    pbuf_arena_reset(&arena);
    return 0;
}
