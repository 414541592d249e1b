/*
 * fuzz_response.c -- libFuzzer target for libshoal's decoder of answers
 * (shoal__frame_decode in client/client_frame.c; TESTING G7).
 *
 * The decoder gets a frame as it came off the wire, the nonce of the
 * request frame it answers and that frame's ops (one of every kind, ids
 * 1..N_OPS), and gives every op a verdict and its outputs. Whatever the
 * bytes: no crash, no leak, every op gets a status from proto/err.h, a retry
 * only for the retryable ones, outputs (scan pages, maps) well formed.
 *
 * Input: one mode byte, then
 *   mode & 3 == 0  the rest is the frame; the client has a key (KEY_ID)
 *   mode & 3 == 1  the rest is the frame; the client is insecure
 *   mode & 3 == 2  the rest is a ResponseFrame body, sealed here with the
 *                  client's key (so inputs get past the tag)
 *   mode & 3 == 3  the rest is a body, sent as a plaintext response
 *   mode & 4       (2, 3) do not append the expected req_nonce; otherwise
 *                  field 2 = the nonce is appended to the body (the last
 *                  occurrence of a field wins), so inputs get past it
 *   mode & 8       the rest's first 4 bytes are a status sent in an error
 *                  frame (wire_error_frame)
 *
 * The seed corpus (tests/fuzz/corpus/response) is written by this file:
 * SHOAL_RESPONSE_CORPUS=<dir> fuzz_response_replay <any corpus dir>.
 */
#include "client/client_int.h"

#include "proto/bytes.h"
#include "proto/mem.h"
#include "proto/pbuf.h"
#include "proto/shoal.pb-c.h"
#include "proto/wire.h"

#include <sodium.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define KEY_ID   5u
#define N_OPS    12u
#define N_BATCH  3u
#define MAX_BODY (1u << 20)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static wire_key key;
static wire_sender sender;
static const uint8_t want_nonce[WIRE_NONCE_BYTES] = {
    0xa5, 1,  2,  3,  4,  5,  6,  7,  8,  9,  10, 11,
    12,   13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23};

/* The request frame's ops and everything they point to. */
typedef struct fixture {
    shoal_op u[N_OPS];
    cl_op op[N_OPS];
    cl_op *ops[N_OPS];
    shoal_batch_op batch[N_BATCH];
    shoal_err batch_res[N_BATCH];
    shoal_scan_req scan, scan_keys;
    shoal_stats stats;
} fixture;

static const cl_kind kinds[N_OPS] = {CL_GET,   CL_PUT,    CL_DEL,   CL_INCR,
                                     CL_TTL,   CL_EXISTS, CL_BATCH, CL_SCAN,
                                     CL_COUNT, CL_STATS,  CL_MAP,   CL_SCAN};

static void
fixture_init(fixture *f)
{
    memset(f, 0, sizeof(*f));
    for (unsigned i = 0; i < N_BATCH; i++)
        f->batch[i] = (shoal_batch_op){.kind = SHOAL_BATCH_PUT,
                                       .key = "b",
                                       .klen = 1,
                                       .val = "v",
                                       .vlen = 1};
    f->scan.prefix = "p";
    f->scan.plen = 1;
    f->scan_keys = f->scan;
    f->scan_keys.keys_only = true;
    for (unsigned i = 0; i < N_OPS; i++) {
        cl_op *op = &f->op[i];
        f->u[i] = (shoal_op){.key = "k", .klen = 1, .val = "v", .vlen = 1};
        op->kind = kinds[i];
        op->u = &f->u[i];
        op->id = i + 1;
        op->sent = true;
        op->deadline_ns = UINT64_MAX;
        f->ops[i] = op;
    }
    f->op[6].in.batch.ops = f->batch;
    f->op[6].in.batch.n = N_BATCH;
    f->op[6].out.batch.res = f->batch_res;
    f->op[7].in.scan = &f->scan;
    f->op[9].out.stats = &f->stats;
    f->op[11].in.scan = &f->scan_keys;
}

static bool
retryable(shoal_err st)
{
    return st == SHOAL_EUNAVAILABLE || st == SHOAL_EWRONGSHARD ||
           st == SHOAL_ETIMEOUT;
}

static void
check_page(const shoal_scan_page *p, bool keys_only)
{
    const uint8_t *lo = (const uint8_t *) p;
    for (size_t i = 0; i < p->n_items; i++) {
        const shoal_item *it = &p->items[i];
        if (it->klen > 0 && (it->key == NULL || it->key < lo))
            abort();
        if (keys_only && it->val != NULL)
            abort();
        volatile uint8_t sink = 0;
        for (size_t k = 0; k < it->klen; k++)
            sink ^= it->key[k]; /* ASan checks every byte is ours */
        for (size_t k = 0; k < it->vlen; k++)
            sink ^= it->val[k];
        (void) sink;
    }
    if (p->more && (p->token == NULL || p->token_len == 0))
        abort();
}

/* Every op has a verdict; free what the decoder handed out. */
static void
check_ops(fixture *f)
{
    for (unsigned i = 0; i < N_OPS; i++) {
        cl_op *op = &f->op[i];
        if ((int) op->st < 0 || op->st > SHOAL_EREADONLY)
            abort();
        if (op->retry && !retryable(op->st))
            abort();
        if (op->kind == CL_GET && op->st == SHOAL_OK && op->u->out_val == NULL)
            abort();
        if (op->kind == CL_SCAN && op->out.page != NULL) {
            if (op->st != SHOAL_OK)
                abort();
            check_page(op->out.page, op->in.scan->keys_only);
            shoal_scan_page_free(op->out.page);
        }
        if (op->kind == CL_MAP && op->out.map != NULL) {
            if (op->st != SHOAL_OK)
                abort();
            shoal_free(op->out.map);
        }
    }
}

static void
init_once(void)
{
    static bool done;
    if (done)
        return;
    if (sodium_init() < 0)
        abort();
    memset(&key, 0, sizeof(key));
    key.id = KEY_ID;
    key.role = WIRE_ROLE_ADMIN;
    for (unsigned i = 0; i < WIRE_SECRET_BYTES; i++)
        key.secret[i] = (uint8_t) (i * 3 + 1);
    wire_sender_init(&sender);
    done = true;
}

/* Build the frame for modes 2 and 3 (and error frames) into a malloc'd
 * buffer of exactly its length. */
static uint8_t *
make_frame(unsigned mode, const uint8_t *rest, size_t len, size_t *out_len)
{
    if (mode & 8) {
        uint8_t *f = malloc(64);
        shoal_err st = (shoal_err) (len >= 4 ? get_u32(rest) : 0);
        if (f == NULL || wire_error_frame(st, f, 64, out_len) != SHOAL_OK) {
            free(f);
            return NULL;
        }
        return f;
    }
    size_t blen = len + ((mode & 4) ? 0 : 2 + WIRE_NONCE_BYTES);
    uint8_t *body = malloc(blen + 1);
    if (body == NULL)
        abort();
    memcpy(body, rest, len);
    if (!(mode & 4)) {
        body[len] = 0x12; /* field 2, length-delimited */
        body[len + 1] = WIRE_NONCE_BYTES;
        memcpy(body + len + 2, want_nonce, WIRE_NONCE_BYTES);
    }
    const wire_key *k = (mode & 3) == 2 ? &key : NULL;
    size_t cap = wire_frame_len(blen, k != NULL);
    uint8_t *f = malloc(cap);
    if (f == NULL || wire_seal(&sender, k, WIRE_F_RESPONSE, body, blen, f, cap,
                               out_len, NULL) != SHOAL_OK)
        abort();
    free(body);
    return f;
}

static void write_corpus(const char *dir);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static bool corpus_done;
    init_once();
    if (!corpus_done) {
        corpus_done = true;
        const char *dir = getenv("SHOAL_RESPONSE_CORPUS");
        if (dir != NULL)
            write_corpus(dir);
    }
    if (size < 1 || size > MAX_BODY)
        return 0;
    unsigned mode = data[0];
    const uint8_t *rest = data + 1;
    size_t len = size - 1, flen = 0;
    uint8_t *frame = NULL;
    if ((mode & 3) >= 2 || (mode & 8)) {
        frame = make_frame(mode, rest, len, &flen);
    } else {
        frame = malloc(len + 1); /* exactly the bytes (ASan sees overruns) */
        if (frame != NULL && len > 0)
            memcpy(frame, rest, len);
        flen = len;
    }
    if (frame == NULL)
        return 0;
    fixture f;
    fixture_init(&f);
    pbuf_arena arena;
    pbuf_arena_init(&arena, 4096);
    cl_map *new_map = NULL;
    uint64_t hint = 0;
    const wire_key *k = (mode & 3) == 1 || (mode & 3) == 3 ? NULL : &key;
    shoal_err rc = shoal__frame_decode(k, frame, flen, want_nonce, f.ops, N_OPS,
                                       &arena, &new_map, &hint);
    if (rc != SHOAL_OK && rc != SHOAL_EAUTH && rc != SHOAL_EINVAL)
        abort();
    if (rc != SHOAL_OK && new_map != NULL)
        abort();
    check_ops(&f);
    shoal_free(new_map);
    pbuf_arena_fini(&arena);
    free(frame);
    return 0;
}

/* ---- the seed corpus --------------------------------------------------------
 */

static void
save(const char *dir, const char *name, unsigned mode, const uint8_t *body,
     size_t len)
{
    char path[1024];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    FILE *fp = fopen(path, "wb");
    if (fp == NULL)
        abort();
    uint8_t m = (uint8_t) mode;
    fwrite(&m, 1, 1, fp);
    fwrite(body, 1, len, fp);
    fclose(fp);
}

static void
save_frame(const char *dir, const char *name, unsigned mode,
           Shoal__ResponseFrame *rf)
{
    size_t len = shoal__response_frame__get_packed_size(rf);
    uint8_t *buf = malloc(len + 1);
    if (buf == NULL)
        abort();
    shoal__response_frame__pack(rf, buf);
    save(dir, name, mode, buf, len);
    free(buf);
}

/* A good answer for every op of the fixture, in resps[] (items, statuses
 * and map nodes in static storage). */
static Shoal__Response resps[N_OPS];
static Shoal__Response *resp_ptrs[N_OPS];
static Shoal__GetResp get_r = SHOAL__GET_RESP__INIT;
static Shoal__WriteResp write_r = SHOAL__WRITE_RESP__INIT;
static Shoal__TtlResp ttl_r = SHOAL__TTL_RESP__INIT;
static Shoal__ExistsResp exists_r = SHOAL__EXISTS_RESP__INIT;
static Shoal__BatchResp batch_r = SHOAL__BATCH_RESP__INIT;
static Shoal__Status batch_st[N_BATCH];
static Shoal__ScanResp scan_r = SHOAL__SCAN_RESP__INIT;
static Shoal__Item items[3];
static Shoal__Item *item_ptrs[3];
static Shoal__CountResp count_r = SHOAL__COUNT_RESP__INIT;
static Shoal__StatsResp stats_r = SHOAL__STATS_RESP__INIT;
static Shoal__ClusterMap map_r = SHOAL__CLUSTER_MAP__INIT;
static Shoal__MapNode node_r = SHOAL__MAP_NODE__INIT;
static Shoal__MapNode *node_ptrs[1] = {&node_r};
static uint8_t hash_key[KEYHASH_KEY_BYTES];

static ProtobufCBinaryData
bin_s(const char *s)
{
    ProtobufCBinaryData b = {strlen(s), (uint8_t *) (uintptr_t) s};
    return b;
}

static void
good_results(void)
{
    get_r.has_value = true;
    get_r.value = bin_s("value");
    get_r.has_version = true;
    get_r.version = 7;
    write_r.has_version = true;
    write_r.version = 8;
    write_r.has_value = true;
    write_r.value = 42;
    ttl_r.has_ttl_ms = true;
    ttl_r.ttl_ms = -1;
    exists_r.has_exists = true;
    exists_r.exists = true;
    batch_r.n_statuses = N_BATCH;
    batch_r.statuses = batch_st;
    for (unsigned i = 0; i < 3; i++) {
        shoal__item__init(&items[i]);
        items[i].has_key = items[i].has_value = true;
        items[i].key = bin_s(i == 0 ? "pa" : i == 1 ? "pb" : "pc");
        items[i].value = bin_s("val");
        items[i].has_version = true;
        items[i].version = i + 1;
        item_ptrs[i] = &items[i];
    }
    scan_r.n_items = 3;
    scan_r.items = item_ptrs;
    scan_r.has_more = scan_r.more = true;
    scan_r.has_token = true;
    scan_r.token = bin_s("pc");
    count_r.has_count = true;
    count_r.count = 3;
    stats_r.node_id = (char *) "n1";
    stats_r.has_keys = true;
    stats_r.keys = 10;
    node_r.id = (char *) "n1";
    node_r.addr = (char *) "tcp://127.0.0.1:7400";
    map_r.has_epoch = true;
    map_r.epoch = 1;
    map_r.has_shard_count = true;
    map_r.shard_count = 256;
    map_r.has_hash_key = true;
    map_r.hash_key.len = KEYHASH_KEY_BYTES;
    map_r.hash_key.data = hash_key;
    map_r.n_nodes = 1;
    map_r.nodes = node_ptrs;
}

static void
fill_resps(void)
{
    good_results();
    for (unsigned i = 0; i < N_OPS; i++) {
        Shoal__Response *r = &resps[i];
        shoal__response__init(r);
        r->has_id = true;
        r->id = i + 1;
        r->has_map_epoch = true;
        r->map_epoch = 1;
        resp_ptrs[i] = r;
    }
    resps[0].result_case = SHOAL__RESPONSE__RESULT_GET;
    resps[0].get = &get_r;
    for (unsigned i = 1; i <= 3; i++) {
        resps[i].result_case = SHOAL__RESPONSE__RESULT_WRITE;
        resps[i].write = &write_r;
    }
    resps[4].result_case = SHOAL__RESPONSE__RESULT_TTL;
    resps[4].ttl = &ttl_r;
    resps[5].result_case = SHOAL__RESPONSE__RESULT_EXISTS;
    resps[5].exists = &exists_r;
    resps[6].result_case = SHOAL__RESPONSE__RESULT_BATCH;
    resps[6].batch = &batch_r;
    resps[7].result_case = SHOAL__RESPONSE__RESULT_SCAN;
    resps[7].scan = &scan_r;
    resps[8].result_case = SHOAL__RESPONSE__RESULT_COUNT;
    resps[8].count = &count_r;
    resps[9].result_case = SHOAL__RESPONSE__RESULT_STATS;
    resps[9].stats = &stats_r;
    resps[10].result_case = SHOAL__RESPONSE__RESULT_MAP;
    resps[10].map = &map_r;
    resps[11].result_case = SHOAL__RESPONSE__RESULT_SCAN;
    resps[11].scan = &scan_r;
}

static void
write_corpus(const char *dir)
{
    Shoal__ResponseFrame rf = SHOAL__RESPONSE_FRAME__INIT;
    fill_resps();
    rf.n_resps = N_OPS;
    rf.resps = resp_ptrs;
    save_frame(dir, "all-ok-sealed", 2, &rf);
    save_frame(dir, "all-ok-plain", 3, &rf);
    save_frame(dir, "all-ok-no-nonce", 2 | 4, &rf);
    /* Reversed order, a duplicate and an unknown id. */
    Shoal__Response *rev[N_OPS + 2];
    for (unsigned i = 0; i < N_OPS; i++)
        rev[i] = resp_ptrs[N_OPS - 1 - i];
    Shoal__Response stray = resps[0];
    stray.id = 999;
    rev[N_OPS] = resp_ptrs[3];
    rev[N_OPS + 1] = &stray;
    rf.resps = rev;
    rf.n_resps = N_OPS + 2;
    save_frame(dir, "reversed-dup-stray", 2, &rf);
    /* Statuses: failures, retryable ones, a wrong shard with a new map. */
    rf.resps = resp_ptrs;
    rf.n_resps = N_OPS;
    for (unsigned i = 0; i < N_OPS; i++) {
        resps[i].has_status = true;
        resps[i].status = (Shoal__Status) (i + 1);
    }
    resps[2].status = SHOAL__STATUS__EWRONGSHARD;
    resps[2].new_map = &map_r;
    batch_st[1] = SHOAL__STATUS__EEXISTS;
    save_frame(dir, "statuses", 2, &rf);
    /* Missing results and half the answers. */
    for (unsigned i = 0; i < N_OPS; i++) {
        resps[i].has_status = false;
        resps[i].result_case = SHOAL__RESPONSE__RESULT__NOT_SET;
    }
    rf.n_resps = N_OPS / 2;
    save_frame(dir, "no-results-half", 3, &rf);
    /* Error frames, raw frames. */
    uint8_t st[4];
    put_u32(st, SHOAL_EAUTH);
    save(dir, "error-eauth", 8, st, 4);
    put_u32(st, SHOAL_EUNAVAILABLE);
    save(dir, "error-unavailable", 8, st, 4);
    uint8_t ef[64];
    size_t elen = 0;
    if (wire_error_frame(SHOAL_EPERM, ef, sizeof(ef), &elen) != SHOAL_OK)
        abort();
    save(dir, "raw-error-frame", 0, ef, elen);
    save(dir, "raw-header-only", 1, ef, WIRE_HDR_BYTES);
}
