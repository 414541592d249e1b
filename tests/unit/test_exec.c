/*
 * test_exec.c -- request execution (node/exec.h) against a memory-only
 * engine and a real on-disk one: every op, every validation and permission
 * error, conditional writes, batches (single-shard atomic, multi-shard per
 * op), scans merged across shards with random pagination checked against a
 * sorted model, stats, the map, deferred commits and an allocation-failure
 * loop. Every response is packed and unpacked again, so it must serialise.
 * SHOAL_REQUEST_CORPUS=<dir> writes the fuzz seed corpus
 * (tests/fuzz/corpus/request); that test is skipped otherwise.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "node/exec.h"
#include "proto/clock.h"
#include "proto/keyhash.h"
#include "proto/mem.h"
#include "tests/support/testutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define N_SHARDS  256u
#define MAX_VALUE (1u << 20)
#define MAX_BATCH 64u

typedef struct fx {
    char *dir; /* NULL: memory-only */
    store *st;
    exec_ctx x;
    pbuf_arena arena;  /* responses (exec's arena) */
    pbuf_arena *build; /* where requests are built: &arena unless swapped */
    _Atomic uint64_t requests;
    uint64_t next_id;
} fx;

/* ---- fixture --------------------------------------------------------------
 */

static void
fx_open_store(fx *f)
{
    store_opts o;
    store_opts_default(&o);
    o.data_dir = f->dir;
    o.n_shards = N_SHARDS;
    o.max_value_bytes = MAX_VALUE;
    o.max_batch_ops = MAX_BATCH;
    o.segment_bytes = 4u << 20;
    o.background = false;
    assert_int_equal(store_open(&o, &f->st), SHOAL_OK);
    f->x.st = f->st;
}

static fx *
fx_new(char *dir)
{
    fx *f = calloc(1, sizeof(*f));
    assert_non_null(f);
    f->dir = dir;
    fx_open_store(f);
    f->x.n_shards = N_SHARDS;
    for (size_t i = 0; i < KEYHASH_KEY_BYTES; i++)
        f->x.hash_key[i] = (uint8_t) (0x40 + i * 7);
    f->x.node_id = "n1";
    f->x.advertise_url = "tcp://127.0.0.1:7400";
    f->x.map_epoch = 1;
    f->x.max_key_bytes = 1024;
    f->x.max_value_bytes = MAX_VALUE;
    f->x.max_batch_ops = MAX_BATCH;
    f->x.start_ms = clock_mono_ns() / 1000000u;
    f->x.requests_total = &f->requests;
    pbuf_arena_init(&f->arena, 64u << 10);
    f->build = &f->arena;
    return f;
}

static int
mem_up(void **state)
{
    *state = fx_new(NULL);
    return 0;
}

static int
disk_up(void **state)
{
    void *dir = NULL;
    if (tu_tmpdir_up(&dir) != 0)
        return -1;
    *state = fx_new(dir);
    return 0;
}

static int
fx_down(void **state)
{
    fx *f = *state;
    store_close(f->st);
    pbuf_arena_fini(&f->arena);
    void *dir = f->dir;
    free(f);
    return dir != NULL ? tu_tmpdir_down(&dir) : 0;
}

/* ---- building requests ----------------------------------------------------
 */

static void *
alloc(fx *f, size_t len)
{
    void *p = pbuf_arena_alloc(f->build, len);
    assert_non_null(p);
    memset(p, 0, len);
    return p;
}

static ProtobufCBinaryData
bin(const char *s)
{
    return (ProtobufCBinaryData){.len = strlen(s), .data = (uint8_t *) s};
}

static ProtobufCBinaryData
binn(const void *p, size_t n)
{
    return (ProtobufCBinaryData){.len = n, .data = (uint8_t *) p};
}

static Shoal__Request *
req_new(fx *f, Shoal__Request__OpCase op)
{
    Shoal__Request *r = alloc(f, sizeof(*r));
    shoal__request__init(r);
    r->has_id = true;
    r->id = ++f->next_id;
    r->op_case = op;
    return r;
}

static Shoal__Request *
get_req(fx *f, ProtobufCBinaryData k)
{
    Shoal__Request *r = req_new(f, SHOAL__REQUEST__OP_GET);
    r->get = alloc(f, sizeof(*r->get));
    shoal__get_req__init(r->get);
    r->get->has_key = true;
    r->get->key = k;
    return r;
}

static Shoal__Request *
put_req(fx *f, ProtobufCBinaryData k, ProtobufCBinaryData v)
{
    Shoal__Request *r = req_new(f, SHOAL__REQUEST__OP_PUT);
    r->put = alloc(f, sizeof(*r->put));
    shoal__put_req__init(r->put);
    r->put->has_key = r->put->has_value = true;
    r->put->key = k;
    r->put->value = v;
    return r;
}

static Shoal__Request *
del_req(fx *f, ProtobufCBinaryData k)
{
    Shoal__Request *r = req_new(f, SHOAL__REQUEST__OP_DEL);
    r->del = alloc(f, sizeof(*r->del));
    shoal__del_req__init(r->del);
    r->del->has_key = true;
    r->del->key = k;
    return r;
}

static Shoal__Request *
incr_req(fx *f, ProtobufCBinaryData k, int64_t delta)
{
    Shoal__Request *r = req_new(f, SHOAL__REQUEST__OP_INCR);
    r->incr = alloc(f, sizeof(*r->incr));
    shoal__incr_req__init(r->incr);
    r->incr->has_key = r->incr->has_delta = true;
    r->incr->key = k;
    r->incr->delta = delta;
    return r;
}

static Shoal__Request *
ttl_req(fx *f, ProtobufCBinaryData k)
{
    Shoal__Request *r = req_new(f, SHOAL__REQUEST__OP_TTL);
    r->ttl = alloc(f, sizeof(*r->ttl));
    shoal__ttl_req__init(r->ttl);
    r->ttl->has_key = true;
    r->ttl->key = k;
    return r;
}

static Shoal__Request *
exists_req(fx *f, ProtobufCBinaryData k)
{
    Shoal__Request *r = req_new(f, SHOAL__REQUEST__OP_EXISTS);
    r->exists = alloc(f, sizeof(*r->exists));
    shoal__exists_req__init(r->exists);
    r->exists->has_key = true;
    r->exists->key = k;
    return r;
}

/* A batch of n ops, each a put of key "" until the caller fills it. */
static Shoal__Request *
batch_req(fx *f, size_t n)
{
    Shoal__Request *r = req_new(f, SHOAL__REQUEST__OP_BATCH);
    r->batch = alloc(f, sizeof(*r->batch));
    shoal__batch_req__init(r->batch);
    r->batch->n_ops = n;
    r->batch->ops = alloc(f, n * sizeof(*r->batch->ops) + 1);
    for (size_t i = 0; i < n; i++) {
        Shoal__BatchOp *op = alloc(f, sizeof(*op));
        shoal__batch_op__init(op);
        op->has_kind = op->has_key = op->has_value = true;
        op->kind = SHOAL__BATCH_OP__KIND__PUT;
        r->batch->ops[i] = op;
    }
    return r;
}

static Shoal__Request *
scan_req(fx *f, uint32_t limit)
{
    Shoal__Request *r = req_new(f, SHOAL__REQUEST__OP_SCAN);
    r->scan = alloc(f, sizeof(*r->scan));
    shoal__scan_req__init(r->scan);
    r->scan->has_limit = true;
    r->scan->limit = limit;
    return r;
}

static Shoal__Request *
count_req(fx *f, const char *prefix)
{
    Shoal__Request *r = req_new(f, SHOAL__REQUEST__OP_COUNT);
    r->count = alloc(f, sizeof(*r->count));
    shoal__count_req__init(r->count);
    if (prefix != NULL) {
        r->count->has_prefix = true;
        r->count->prefix = bin(prefix);
    }
    return r;
}

static Shoal__Request *
stats_req(fx *f)
{
    Shoal__Request *r = req_new(f, SHOAL__REQUEST__OP_STATS);
    r->stats = alloc(f, sizeof(*r->stats));
    shoal__stats_req__init(r->stats);
    return r;
}

static Shoal__Request *
map_req(fx *f)
{
    Shoal__Request *r = req_new(f, SHOAL__REQUEST__OP_MAP);
    r->map = alloc(f, sizeof(*r->map));
    shoal__map_req__init(r->map);
    return r;
}

/* ---- running them ---------------------------------------------------------
 */

/* The response must pack, and unpack to the same status and id. */
static void
pack_check(const Shoal__Response *resp)
{
    Shoal__ResponseFrame fr;
    shoal__response_frame__init(&fr);
    Shoal__Response *one = (Shoal__Response *) resp;
    fr.n_resps = 1;
    fr.resps = &one;
    size_t len = shoal__response_frame__get_packed_size(&fr);
    uint8_t *buf = malloc(len + 1);
    assert_non_null(buf);
    assert_int_equal(shoal__response_frame__pack(&fr, buf), len);
    Shoal__ResponseFrame *back = shoal__response_frame__unpack(NULL, len, buf);
    assert_non_null(back);
    assert_int_equal(back->n_resps, 1);
    assert_int_equal(back->resps[0]->status, resp->status);
    assert_int_equal(back->resps[0]->id, resp->id);
    assert_int_equal(back->resps[0]->result_case, resp->result_case);
    shoal__response_frame__free_unpacked(back, NULL);
    free(buf);
}

static Shoal__Response *
run_full(fx *f, const wire_key *caller, const Shoal__Request *req,
         exec_result *out)
{
    Shoal__Response *resp = alloc(f, sizeof(*resp));
    shoal__response__init(resp);
    exec_result r;
    exec_request(&f->x, caller, req, resp, &f->arena, &r);
    assert_true(resp->has_status && resp->has_id && resp->has_map_epoch);
    assert_int_equal(resp->status, r.status);
    assert_int_equal(resp->id, req->id);
    assert_int_equal(resp->map_epoch, 1);
    if (r.status != SHOAL_OK)
        assert_non_null(resp->message);
    pack_check(resp);
    if (out != NULL)
        *out = r;
    return resp;
}

static Shoal__Response *
run_as(fx *f, const wire_key *caller, const Shoal__Request *req)
{
    return run_full(f, caller, req, NULL);
}

static Shoal__Response *
run(fx *f, const Shoal__Request *req)
{
    return run_full(f, NULL, req, NULL);
}

/* Status of req run as caller; when msg is not NULL the message must
 * contain it. */
static shoal_err
status_as(fx *f, const wire_key *caller, const Shoal__Request *req,
          const char *msg)
{
    Shoal__Response *resp = run_as(f, caller, req);
    if (msg != NULL) {
        assert_non_null(resp->message);
        if (strstr(resp->message, msg) == NULL)
            fail_msg("message \"%s\" lacks \"%s\"", resp->message, msg);
    }
    return (shoal_err) resp->status;
}

static shoal_err
status_of(fx *f, const Shoal__Request *req)
{
    return status_as(f, NULL, req, NULL);
}

static uint64_t
put_ok(fx *f, const char *k, const char *v)
{
    Shoal__Response *r = run(f, put_req(f, bin(k), bin(v)));
    assert_int_equal(r->status, SHOAL_OK);
    assert_int_equal(r->result_case, SHOAL__RESPONSE__RESULT_WRITE);
    assert_true(r->write->has_version);
    return r->write->version;
}

/* The live value of k as a string, or NULL when absent. */
static const char *
get_str(fx *f, const char *k, uint64_t *version)
{
    Shoal__Response *r = run(f, get_req(f, bin(k)));
    if (r->status == SHOAL__STATUS__ENOTFOUND)
        return NULL;
    assert_int_equal(r->status, SHOAL_OK);
    assert_int_equal(r->result_case, SHOAL__RESPONSE__RESULT_GET);
    char *s = alloc(f, r->get->value.len + 1);
    memcpy(s, r->get->value.data, r->get->value.len);
    if (version != NULL)
        *version = r->get->version;
    return s;
}

static wire_key
key_of(wire_role role, const char *prefix)
{
    wire_key k = {.id = 7, .role = role};
    if (prefix != NULL) {
        k.prefix_len = strlen(prefix);
        memcpy(k.prefix, prefix, k.prefix_len);
    }
    return k;
}

/* A key "<stem><n>" that lands in shard (first n from *n on). */
static const char *
key_in_shard(fx *f, const char *stem, uint32_t shard, unsigned *n)
{
    char buf[64];
    for (;; (*n)++) {
        int len = snprintf(buf, sizeof(buf), "%s%u", stem, *n);
        if (keyhash_shard(f->x.hash_key, (const uint8_t *) buf, (size_t) len,
                          N_SHARDS) == shard) {
            (*n)++;
            char *s = alloc(f, (size_t) len + 1);
            memcpy(s, buf, (size_t) len + 1);
            return s;
        }
    }
}

/* ---- single-key ops -------------------------------------------------------
 */

static void
test_exec_single_key_ops(void **state)
{
    fx *f = *state;
    uint64_t v1 = put_ok(f, "alpha", "one"), ver = 0;
    assert_string_equal(get_str(f, "alpha", &ver), "one");
    assert_int_equal(ver, v1);
    assert_true(put_ok(f, "alpha", "two") > v1);

    Shoal__Response *r = run(f, ttl_req(f, bin("alpha")));
    assert_int_equal(r->result_case, SHOAL__RESPONSE__RESULT_TTL);
    assert_int_equal(r->ttl->ttl_ms, -1);

    Shoal__Request *p = put_req(f, bin("temp"), bin("x"));
    p->put->has_ttl_ms = true;
    p->put->ttl_ms = 60000;
    exec_result res;
    r = run_full(f, NULL, p, &res);
    assert_true(res.wrote);
    assert_false(res.durable);
    r = run(f, get_req(f, bin("temp")));
    assert_true(r->get->expire_at > clock_now_ms() + 50000);
    r = run(f, ttl_req(f, bin("temp")));
    assert_true(r->ttl->ttl_ms > 50000 && r->ttl->ttl_ms <= 60000);

    r = run(f, exists_req(f, bin("alpha")));
    assert_int_equal(r->status, SHOAL_OK);
    assert_true(r->exists->exists && r->exists->has_version);
    r = run(f, exists_req(f, bin("nope")));
    assert_int_equal(r->status, SHOAL_OK); /* absent is not an error */
    assert_int_equal(r->result_case, SHOAL__RESPONSE__RESULT_EXISTS);
    assert_false(r->exists->exists);

    r = run_full(f, NULL, del_req(f, bin("alpha")), &res);
    assert_int_equal(r->status, SHOAL_OK);
    assert_true(res.wrote);
    assert_null(get_str(f, "alpha", NULL));
    assert_int_equal(status_of(f, ttl_req(f, bin("alpha"))), SHOAL_ENOTFOUND);
    r = run_full(f, NULL, del_req(f, bin("alpha")), &res);
    assert_int_equal(r->status, SHOAL_ENOTFOUND);
    assert_false(res.wrote);

    /* Binary keys and an empty value. */
    uint8_t bk[3] = {0, 0xff, 0};
    r = run(f, put_req(f, binn(bk, 3), binn(NULL, 0)));
    assert_int_equal(r->status, SHOAL_OK);
    r = run(f, get_req(f, binn(bk, 3)));
    assert_int_equal(r->status, SHOAL_OK);
    assert_true(r->get->has_value);
    assert_int_equal(r->get->value.len, 0);
    assert_true(f->requests >= 14);
}

static void
test_exec_conditional(void **state)
{
    fx *f = *state;
    Shoal__Request *p = put_req(f, bin("c"), bin("1"));
    p->put->has_if_version = true;
    p->put->if_version = 0; /* absent key: version 0 */
    assert_int_equal(status_of(f, p), SHOAL_OK);
    uint64_t v = 0;
    get_str(f, "c", &v);

    p = put_req(f, bin("c"), bin("2"));
    p->put->has_if_absent = p->put->if_absent = true;
    assert_int_equal(status_of(f, p), SHOAL_EEXISTS);
    p = put_req(f, bin("c"), bin("2"));
    p->put->has_if_version = true;
    p->put->if_version = v + 1;
    exec_result res;
    assert_int_equal(run_full(f, NULL, p, &res)->status, SHOAL_EVERSION);
    assert_false(res.wrote);
    assert_string_equal(get_str(f, "c", NULL), "1");
    p->put->if_version = v;
    assert_int_equal(status_of(f, p), SHOAL_OK);
    get_str(f, "c", &v);

    Shoal__Request *d = del_req(f, bin("c"));
    d->del->has_if_version = true;
    d->del->if_version = v - 1;
    assert_int_equal(status_of(f, d), SHOAL_EVERSION);
    assert_string_equal(get_str(f, "c", NULL), "2");
    d->del->if_version = v;
    assert_int_equal(status_of(f, d), SHOAL_OK);
    assert_null(get_str(f, "c", NULL));
}

static void
test_exec_incr(void **state)
{
    fx *f = *state;
    Shoal__Response *r = run(f, incr_req(f, bin("n"), 5));
    assert_int_equal(r->status, SHOAL_OK);
    assert_true(r->write->has_value && r->write->has_version);
    assert_int_equal(r->write->value, 5);
    r = run(f, incr_req(f, bin("n"), -8));
    assert_int_equal(r->write->value, -3);
    assert_string_equal(get_str(f, "n", NULL), "-3");

    put_ok(f, "word", "abc");
    assert_int_equal(status_of(f, incr_req(f, bin("word"), 1)), SHOAL_ENOTNUM);
    put_ok(f, "big", "9223372036854775807");
    assert_int_equal(status_of(f, incr_req(f, bin("big"), 1)), SHOAL_EOVERFLOW);
    put_ok(f, "small", "-9223372036854775808");
    assert_int_equal(status_of(f, incr_req(f, bin("small"), -1)),
                     SHOAL_EOVERFLOW);
    assert_string_equal(get_str(f, "big", NULL), "9223372036854775807");
}

/* ---- validation -----------------------------------------------------------
 */

static uint64_t
total_keys(fx *f)
{
    Shoal__Response *r = run(f, count_req(f, NULL));
    assert_int_equal(r->status, SHOAL_OK);
    return r->count->count;
}

static void
test_exec_limits(void **state)
{
    fx *f = *state;
    put_ok(f, "keep", "v");
    uint64_t before = total_keys(f);
    static uint8_t big[MAX_VALUE + 1];

    Shoal__Request *q = get_req(f, bin(""));
    assert_int_equal(status_as(f, NULL, q, "empty key"), SHOAL_EINVAL);
    q->get->has_key = false;
    assert_int_equal(status_as(f, NULL, q, "missing key"), SHOAL_EINVAL);
    q = put_req(f, binn(big, 2000), bin("v"));
    assert_int_equal(status_as(f, NULL, q, "key is 2000 bytes, limit 1024"),
                     SHOAL_ETOOLARGE);
    q = put_req(f, binn(big, 1024), bin("v")); /* exactly the limit */
    assert_int_equal(status_of(f, q), SHOAL_OK);
    q = put_req(f, bin("v"), binn(big, MAX_VALUE + 1));
    assert_int_equal(status_as(f, NULL, q, "value is 1048577 bytes"),
                     SHOAL_ETOOLARGE);
    q = put_req(f, bin("t"), bin("v"));
    q->put->has_ttl_ms = true;
    q->put->ttl_ms = UINT64_MAX - 5;
    assert_int_equal(status_as(f, NULL, q, "ttl_ms"), SHOAL_EINVAL);
    q = incr_req(f, binn(big, 1025), 1);
    assert_int_equal(status_of(f, q), SHOAL_ETOOLARGE);
    q = del_req(f, bin(""));
    assert_int_equal(status_of(f, q), SHOAL_EINVAL);

    /* No op, an unknown op, an op case without its body. */
    q = req_new(f, SHOAL__REQUEST__OP__NOT_SET);
    assert_int_equal(status_as(f, NULL, q, "no known op"), SHOAL_EINVAL);
    q = req_new(f, (Shoal__Request__OpCase) 99);
    assert_int_equal(status_of(f, q), SHOAL_EINVAL);
    q = req_new(f, SHOAL__REQUEST__OP_GET);
    assert_int_equal(status_of(f, q), SHOAL_EINVAL);

    /* Scan and count bounds. */
    q = scan_req(f, 10);
    q->scan->has_prefix = true;
    q->scan->prefix = binn(big, 1025);
    assert_int_equal(status_as(f, NULL, q, "prefix is 1025 bytes"),
                     SHOAL_ETOOLARGE);
    q = count_req(f, NULL);
    uint32_t ids[3] = {1, N_SHARDS, 2};
    q->count->n_shards = 3;
    q->count->shards = ids;
    assert_int_equal(status_as(f, NULL, q, "out of range"), SHOAL_EINVAL);
    ids[1] = 1;
    assert_int_equal(status_as(f, NULL, q, "listed twice"), SHOAL_EINVAL);
    assert_int_equal(total_keys(f), before + 1);
}

static void
test_exec_batch_validation(void **state)
{
    fx *f = *state;
    put_ok(f, "keep", "v");
    uint64_t before = total_keys(f);
    static uint8_t big[MAX_VALUE];

    Shoal__Request *q = batch_req(f, 0);
    assert_int_equal(status_as(f, NULL, q, "no ops"), SHOAL_EINVAL);
    q = batch_req(f, MAX_BATCH + 1);
    assert_int_equal(status_as(f, NULL, q, "65 ops, limit 64"),
                     SHOAL_ETOOLARGE);

    /* Each bad op fails the whole batch before anything is applied. */
    q = batch_req(f, 3);
    q->batch->ops[0]->key = bin("b0");
    q->batch->ops[1]->key = bin("b1");
    q->batch->ops[2]->key = bin("b0");
    assert_int_equal(status_as(f, NULL, q, "op 0 and op 2 have the same key"),
                     SHOAL_EINVAL);
    q->batch->ops[2]->key = bin("");
    assert_int_equal(status_as(f, NULL, q, "op 2: empty key"), SHOAL_EINVAL);
    q->batch->ops[2]->key = binn(big, 1025);
    assert_int_equal(status_as(f, NULL, q, "op 2: key is 1025 bytes"),
                     SHOAL_ETOOLARGE);
    q->batch->ops[2]->key = bin("b2");
    q->batch->ops[1]->has_kind = false;
    assert_int_equal(status_as(f, NULL, q, "op 1: missing or unknown kind"),
                     SHOAL_EINVAL);
    q->batch->ops[1]->has_kind = true;
    q->batch->ops[1]->kind = (Shoal__BatchOp__Kind) 9;
    assert_int_equal(status_of(f, q), SHOAL_EINVAL);
    q->batch->ops[1]->kind = SHOAL__BATCH_OP__KIND__PUT;
    q->batch->ops[1]->value = binn(big, MAX_VALUE);
    q->batch->ops[0]->value = binn(big, MAX_VALUE);
    assert_int_equal(status_as(f, NULL, q, "batch is"), SHOAL_ETOOLARGE);
    q->batch->ops[0]->value = bin("small");
    q->batch->ops[1]->value = bin("small");
    q->batch->ops[2]->has_ttl_ms = true;
    q->batch->ops[2]->ttl_ms = EXEC_MAX_TTL_MS + 1;
    assert_int_equal(status_as(f, NULL, q, "op 2: ttl_ms"), SHOAL_EINVAL);
    assert_int_equal(total_keys(f), before);
    q->batch->ops[2]->ttl_ms = 1000;
    assert_int_equal(status_of(f, q), SHOAL_OK);
    assert_int_equal(total_keys(f), before + 3);
}

/* ---- permissions ----------------------------------------------------------
 */

static void
test_exec_roles(void **state)
{
    fx *f = *state;
    wire_key rd = key_of(WIRE_ROLE_READ, NULL);
    wire_key wr = key_of(WIRE_ROLE_WRITE, NULL);
    wire_key ad = key_of(WIRE_ROLE_ADMIN, NULL);
    wire_key peer = key_of(WIRE_ROLE_PEER, NULL);
    put_ok(f, "r", "1");

    assert_int_equal(status_as(f, &rd, put_req(f, bin("r"), bin("2")),
                               "put needs role write"),
                     SHOAL_EPERM);
    assert_int_equal(status_as(f, &rd, del_req(f, bin("r")), NULL),
                     SHOAL_EPERM);
    assert_int_equal(status_as(f, &rd, incr_req(f, bin("n"), 1), NULL),
                     SHOAL_EPERM);
    Shoal__Request *b = batch_req(f, 1);
    b->batch->ops[0]->key = bin("r");
    assert_int_equal(status_as(f, &rd, b, NULL), SHOAL_EPERM);
    assert_string_equal(get_str(f, "r", NULL), "1");
    assert_int_equal(status_as(f, &rd, get_req(f, bin("r")), NULL), SHOAL_OK);
    assert_int_equal(status_as(f, &rd, scan_req(f, 5), NULL), SHOAL_OK);
    assert_int_equal(status_as(f, &rd, map_req(f), NULL), SHOAL_OK);
    assert_int_equal(status_as(f, &rd, stats_req(f), NULL), SHOAL_EPERM);
    assert_int_equal(status_as(f, &wr, stats_req(f), "stats needs role admin"),
                     SHOAL_EPERM);
    assert_int_equal(status_as(f, &wr, b, NULL), SHOAL_OK);
    assert_int_equal(status_as(f, &ad, stats_req(f), NULL), SHOAL_OK);
    assert_int_equal(status_as(f, &ad, put_req(f, bin("r"), bin("3")), NULL),
                     SHOAL_OK);
    /* The cluster key is for peers only. */
    assert_int_equal(status_as(f, &peer, get_req(f, bin("r")), NULL),
                     SHOAL_EPERM);

    assert_int_equal(exec_required_role(SHOAL__REQUEST__OP_GET),
                     WIRE_ROLE_READ);
    assert_int_equal(exec_required_role(SHOAL__REQUEST__OP_BATCH),
                     WIRE_ROLE_WRITE);
    assert_int_equal(exec_required_role(SHOAL__REQUEST__OP_STATS),
                     WIRE_ROLE_ADMIN);
    assert_int_equal(exec_required_role(SHOAL__REQUEST__OP__NOT_SET),
                     WIRE_ROLE_ADMIN);
    assert_string_equal(exec_op_name(SHOAL__REQUEST__OP_SCAN), "scan");
    assert_string_equal(exec_op_name((Shoal__Request__OpCase) 77), "unknown");
}

static Shoal__Request *
scan_bounds(fx *f, const char *prefix, const char *start, const char *end)
{
    Shoal__Request *q = scan_req(f, 100);
    if (prefix != NULL) {
        q->scan->has_prefix = true;
        q->scan->prefix = bin(prefix);
    }
    if (start != NULL) {
        q->scan->has_start = true;
        q->scan->start = bin(start);
    }
    if (end != NULL) {
        q->scan->has_end = true;
        q->scan->end = bin(end);
    }
    return q;
}

static void
test_exec_prefix_confinement(void **state)
{
    fx *f = *state;
    wire_key k = key_of(WIRE_ROLE_WRITE, "app:");
    put_ok(f, "app:a", "1");
    put_ok(f, "app:b", "2");
    put_ok(f, "apq", "x");
    put_ok(f, "other", "y");

    assert_int_equal(status_as(f, &k, put_req(f, bin("app:c"), bin("3")), NULL),
                     SHOAL_OK);
    assert_int_equal(status_as(f, &k, put_req(f, bin("other"), bin("z")),
                               "outside the prefix"),
                     SHOAL_EPERM);
    assert_int_equal(status_as(f, &k, get_req(f, bin("apq")), NULL),
                     SHOAL_EPERM);
    assert_int_equal(status_as(f, &k, del_req(f, bin("other")), NULL),
                     SHOAL_EPERM);
    assert_int_equal(status_as(f, &k, incr_req(f, bin("app"), 1), NULL),
                     SHOAL_EPERM);
    assert_int_equal(status_as(f, &k, exists_req(f, bin("other")), NULL),
                     SHOAL_EPERM);
    assert_string_equal(get_str(f, "other", NULL), "y");

    /* One op outside the prefix: nothing of the batch is applied. */
    Shoal__Request *b = batch_req(f, 2);
    b->batch->ops[0]->key = bin("app:d");
    b->batch->ops[1]->key = bin("zzz");
    assert_int_equal(status_as(f, &k, b, "op 1: key is outside"), SHOAL_EPERM);
    assert_null(get_str(f, "app:d", NULL));

    /* Scans and counts must stay inside. */
    assert_int_equal(
        status_as(f, &k, scan_bounds(f, NULL, NULL, NULL), "not confined"),
        SHOAL_EPERM);
    assert_int_equal(status_as(f, &k, scan_bounds(f, "ap", NULL, NULL), NULL),
                     SHOAL_EPERM);
    assert_int_equal(status_as(f, &k, scan_bounds(f, NULL, "app:", NULL), NULL),
                     SHOAL_EPERM);
    assert_int_equal(status_as(f, &k, scan_bounds(f, NULL, "app:", "b"), NULL),
                     SHOAL_EPERM);
    assert_int_equal(status_as(f, &k, scan_bounds(f, NULL, "a", "app:z"), NULL),
                     SHOAL_EPERM);
    Shoal__Response *r = run_as(f, &k, scan_bounds(f, "app:", NULL, NULL));
    assert_int_equal(r->status, SHOAL_OK);
    assert_int_equal(r->scan->n_items, 3);
    r = run_as(f, &k, scan_bounds(f, "app:b", NULL, NULL));
    assert_int_equal(r->scan->n_items, 1);
    r = run_as(f, &k, scan_bounds(f, NULL, "app:b", "app:z"));
    assert_int_equal(r->status, SHOAL_OK);
    assert_int_equal(r->scan->n_items, 2);
    /* A token before the range cannot widen it. */
    Shoal__Request *q = scan_bounds(f, NULL, "app:b", "app:z");
    q->scan->has_token = true;
    q->scan->token = bin("a");
    r = run_as(f, &k, q);
    assert_int_equal(r->scan->n_items, 2);

    assert_int_equal(status_as(f, &k, count_req(f, NULL), NULL), SHOAL_EPERM);
    assert_int_equal(status_as(f, &k, count_req(f, "a"), NULL), SHOAL_EPERM);
    r = run_as(f, &k, count_req(f, "app:"));
    assert_int_equal(r->status, SHOAL_OK);
    assert_int_equal(r->count->count, 3);
    r = run_as(f, &k, count_req(f, "app:a"));
    assert_int_equal(r->count->count, 1);
}

/* ---- batches --------------------------------------------------------------
 */

static void
test_exec_batch_single_shard(void **state)
{
    fx *f = *state;
    unsigned n = 0;
    const char *k[4];
    for (int i = 0; i < 4; i++)
        k[i] = key_in_shard(f, "s", 17, &n);
    put_ok(f, k[3], "old");

    Shoal__Request *b = batch_req(f, 4);
    for (int i = 0; i < 3; i++) {
        b->batch->ops[i]->key = bin(k[i]);
        b->batch->ops[i]->value = bin("new");
    }
    b->batch->ops[3]->kind = SHOAL__BATCH_OP__KIND__DEL;
    b->batch->ops[3]->key = bin(k[3]);
    exec_result res;
    Shoal__Response *r = run_full(f, NULL, b, &res);
    assert_int_equal(r->status, SHOAL_OK);
    assert_true(res.wrote);
    assert_int_equal(r->result_case, SHOAL__RESPONSE__RESULT_BATCH);
    assert_int_equal(r->batch->n_statuses, 4);
    assert_true(r->batch->has_version);
    for (int i = 0; i < 3; i++) {
        uint64_t v = 0;
        assert_string_equal(get_str(f, k[i], &v), "new");
        assert_int_equal(v, r->batch->version); /* one version for all */
    }
    assert_null(get_str(f, k[3], NULL));

    /* A failing condition applies nothing; each op's status says why. */
    b = batch_req(f, 3);
    b->batch->ops[0]->key = bin(k[0]);
    b->batch->ops[0]->value = bin("newer");
    b->batch->ops[1]->key = bin(k[1]);
    b->batch->ops[1]->has_if_absent = b->batch->ops[1]->if_absent = true;
    b->batch->ops[2]->key = bin(k[3]);
    b->batch->ops[2]->kind = SHOAL__BATCH_OP__KIND__DEL;
    b->batch->ops[2]->has_if_version = true;
    b->batch->ops[2]->if_version = 5;
    r = run_full(f, NULL, b, &res);
    assert_false(res.wrote);
    assert_int_equal(r->status, SHOAL_EEXISTS);
    assert_int_equal(r->result_case, SHOAL__RESPONSE__RESULT_BATCH);
    assert_int_equal(r->batch->statuses[1], SHOAL_EEXISTS);
    assert_int_equal(r->batch->statuses[2], SHOAL_EVERSION);
    assert_int_not_equal(r->batch->statuses[0], SHOAL_OK);
    assert_false(r->batch->has_version);
    assert_string_equal(get_str(f, k[0], NULL), "new");
}

static void
test_exec_batch_multi_shard(void **state)
{
    fx *f = *state;
    unsigned n = 0;
    const char *a0 = key_in_shard(f, "m", 3, &n);
    const char *a1 = key_in_shard(f, "m", 3, &n);
    const char *b0 = key_in_shard(f, "m", 90, &n);
    const char *c0 = key_in_shard(f, "m", 200, &n);
    put_ok(f, a1, "present");

    Shoal__Request *b = batch_req(f, 4);
    const char *keys[4] = {b0, a0, c0, a1};
    for (int i = 0; i < 4; i++) {
        b->batch->ops[i]->key = bin(keys[i]);
        b->batch->ops[i]->value = bin("v");
    }
    b->batch->ops[3]->has_if_absent = b->batch->ops[3]->if_absent = true;
    exec_result res;
    Shoal__Response *r = run_full(f, NULL, b, &res);
    assert_true(res.wrote); /* shards 90 and 200 applied */
    assert_int_equal(r->result_case, SHOAL__RESPONSE__RESULT_BATCH);
    assert_int_equal(r->batch->statuses[0], SHOAL_OK);
    assert_int_equal(r->batch->statuses[1], SHOAL_EEXISTS); /* part of a1 */
    assert_int_equal(r->batch->statuses[2], SHOAL_OK);
    assert_int_equal(r->batch->statuses[3], SHOAL_EEXISTS);
    assert_int_equal(r->status, SHOAL_EEXISTS);
    assert_string_equal(r->message, "op 1: key already exists");
    assert_false(r->batch->has_version);
    assert_string_equal(get_str(f, b0, NULL), "v");
    assert_string_equal(get_str(f, c0, NULL), "v");
    assert_null(get_str(f, a0, NULL));
    assert_string_equal(get_str(f, a1, NULL), "present");

    /* All parts succeed: OK, no single version. */
    b->batch->ops[3]->if_absent = false;
    r = run(f, b);
    assert_int_equal(r->status, SHOAL_OK);
    for (int i = 0; i < 4; i++)
        assert_int_equal(r->batch->statuses[i], SHOAL_OK);
    assert_false(r->batch->has_version);
    assert_string_equal(get_str(f, a1, NULL), "v");
}

/* ---- scans ----------------------------------------------------------------
 */

typedef struct mkey {
    uint8_t k[16];
    size_t len;
    int seen;
} mkey;

static int
mkey_cmp(const void *a, const void *b)
{
    const mkey *x = a, *y = b;
    size_t n = x->len < y->len ? x->len : y->len;
    int d = memcmp(x->k, y->k, n);
    return d != 0 ? d : (x->len > y->len) - (x->len < y->len);
}

/* Random binary keys over a small alphabet (so prefixes are shared), put
 * with value = key; returns the sorted model. */
static mkey *
fill_random(fx *f, uint64_t *rng, size_t *n_io)
{
    size_t n = *n_io, got = 0;
    mkey *m = calloc(n, sizeof(*m));
    assert_non_null(m);
    while (got < n) {
        mkey *k = &m[got];
        k->len = 1 + tu_rand(rng) % 10;
        for (size_t i = 0; i < k->len; i++)
            k->k[i] = (uint8_t) ("ab\0\xff"[tu_rand(rng) % 4]);
        bool dup = false;
        for (size_t i = 0; i < got && !dup; i++)
            dup = mkey_cmp(&m[i], k) == 0;
        if (dup)
            continue;
        Shoal__Response *r =
            run(f, put_req(f, binn(k->k, k->len), binn(k->k, k->len)));
        assert_int_equal(r->status, SHOAL_OK);
        got++;
        if (got % 256 == 0)
            pbuf_arena_reset(&f->arena);
    }
    qsort(m, n, sizeof(*m), mkey_cmp);
    *n_io = n;
    return m;
}

/* Page through everything with random page sizes: each key exactly once,
 * in order, values equal to keys unless keys_only. */
static void
paginate(fx *f, uint64_t *rng, const mkey *m, size_t n, bool keys_only)
{
    uint8_t token[16];
    size_t token_len = 0, at = 0;
    bool more = true;
    while (more) {
        uint32_t limit = (uint32_t) (1 + tu_rand(rng) % 300);
        Shoal__Request *q = scan_req(f, limit);
        q->scan->has_keys_only = q->scan->keys_only = keys_only;
        if (token_len != 0) {
            q->scan->has_token = true;
            q->scan->token = binn(token, token_len);
        }
        Shoal__Response *r = run(f, q);
        assert_int_equal(r->status, SHOAL_OK);
        Shoal__ScanResp *s = r->scan;
        assert_true(s->n_items <= limit);
        for (size_t i = 0; i < s->n_items; i++, at++) {
            assert_true(at < n);
            Shoal__Item *it = s->items[i];
            assert_int_equal(it->key.len, m[at].len);
            assert_memory_equal(it->key.data, m[at].k, m[at].len);
            assert_int_equal(it->has_value, !keys_only);
            if (!keys_only)
                assert_memory_equal(it->value.data, m[at].k, m[at].len);
        }
        more = s->more;
        assert_int_equal(more, at < n); /* exact: no empty last page */
        assert_int_equal(s->has_token, more);
        if (more) {
            assert_int_equal(s->n_items, limit);
            memcpy(token, s->token.data, s->token.len);
            token_len = s->token.len;
        }
        pbuf_arena_reset(&f->arena);
    }
    assert_int_equal(at, n);
}

static void
test_exec_scan_paginate_random(void **state)
{
    fx *f = *state;
    uint64_t rng = tu_seed("test_exec_scan_paginate_random");
    size_t n = 1500;
    mkey *m = fill_random(f, &rng, &n);
    paginate(f, &rng, m, n, false);
    paginate(f, &rng, m, n, true);

    /* Default page size and clamping. */
    Shoal__Response *r = run(f, scan_req(f, 0));
    assert_int_equal(r->scan->n_items, EXEC_SCAN_DEFAULT_LIMIT);
    assert_true(r->scan->more);
    r = run(f, scan_req(f, 4000000));
    assert_int_equal(r->scan->n_items, n); /* under the clamp */
    assert_false(r->scan->more);
    assert_false(r->scan->has_token);
    pbuf_arena_reset(&f->arena);

    /* A subset of shards: exactly the model's keys in those shards. */
    uint32_t ids[3] = {5, 77, 250};
    Shoal__Request *q = scan_req(f, 10000);
    q->scan->n_shards = 3;
    q->scan->shards = ids;
    r = run(f, q);
    size_t want = 0;
    for (size_t i = 0; i < n; i++) {
        uint32_t s = keyhash_shard(f->x.hash_key, m[i].k, m[i].len, N_SHARDS);
        want += s == 5 || s == 77 || s == 250;
    }
    assert_int_equal(r->scan->n_items, want);
    for (size_t i = 1; i < r->scan->n_items; i++) {
        mkey a = {.len = r->scan->items[i - 1]->key.len};
        mkey b = {.len = r->scan->items[i]->key.len};
        memcpy(a.k, r->scan->items[i - 1]->key.data, a.len);
        memcpy(b.k, r->scan->items[i]->key.data, b.len);
        assert_true(mkey_cmp(&a, &b) < 0);
    }
    q->scan->shards[0] = N_SHARDS;
    assert_int_equal(status_of(f, q), SHOAL_EINVAL);
    free(m);
}

static void
test_exec_scan_prefix_range(void **state)
{
    fx *f = *state;
    const char *keys[] = {"a", "b:1", "b:2", "b:3", "b;", "c", "b"};
    for (size_t i = 0; i < 7; i++)
        put_ok(f, keys[i], keys[i]);

    Shoal__Response *r = run(f, scan_bounds(f, "b:", NULL, NULL));
    assert_int_equal(r->scan->n_items, 3);
    assert_memory_equal(r->scan->items[0]->key.data, "b:1", 3);
    assert_memory_equal(r->scan->items[2]->key.data, "b:3", 3);
    assert_false(r->scan->more);

    r = run(f, scan_bounds(f, NULL, "b", "b;"));
    assert_int_equal(r->scan->n_items, 4); /* b, b:1, b:2, b:3 */
    r = run(f, scan_bounds(f, "b:", "b:2", NULL));
    assert_int_equal(r->scan->n_items, 2);
    r = run(f, scan_bounds(f, NULL, "c", "b"));
    assert_int_equal(r->scan->n_items, 0);
    assert_false(r->scan->more);

    /* Paginate a prefix by one. */
    Shoal__Request *q = scan_bounds(f, "b:", NULL, NULL);
    q->scan->limit = 1;
    int pages = 0;
    for (;;) {
        r = run(f, q);
        assert_int_equal(r->status, SHOAL_OK);
        pages += (int) r->scan->n_items;
        if (!r->scan->more)
            break;
        q->scan->has_token = true;
        q->scan->token = r->scan->token;
    }
    assert_int_equal(pages, 3);

    /* One shard listed, a page ending where its buffer runs dry: more must
     * still say its shard has entries. */
    unsigned n = 0;
    for (int i = 0; i < 5; i++)
        put_ok(f, key_in_shard(f, "one", 42, &n), "v");
    uint32_t id = 42;
    q = scan_req(f, 2);
    q->scan->n_shards = 1;
    q->scan->shards = &id;
    for (pages = 0;; pages++) {
        r = run(f, q);
        assert_int_equal(r->scan->n_items, pages < 2 ? 2 : 1);
        if (!r->scan->more)
            break;
        q->scan->has_token = true;
        q->scan->token = r->scan->token;
    }
    assert_int_equal(pages, 2);

    /* keys_only omits values; values otherwise. */
    q = scan_bounds(f, "c", NULL, NULL);
    r = run(f, q);
    assert_true(r->scan->items[0]->has_value);
    assert_memory_equal(r->scan->items[0]->value.data, "c", 1);
    q->scan->has_keys_only = q->scan->keys_only = true;
    r = run(f, q);
    assert_false(r->scan->items[0]->has_value);
}

/* Values too large to buffer are read when emitted; a page stops at
 * EXEC_SCAN_MAX_BYTES. */
static void
test_exec_scan_large_values(void **state)
{
    fx *f = *state;
    size_t vlen = 900u << 10;
    uint8_t *v = malloc(vlen);
    assert_non_null(v);
    char k[16];
    for (int i = 0; i < 10; i++) {
        memset(v, 'A' + i, vlen);
        snprintf(k, sizeof(k), "big%02d", i);
        assert_int_equal(status_of(f, put_req(f, bin(k), binn(v, vlen))),
                         SHOAL_OK);
        pbuf_arena_reset(&f->arena);
    }
    put_ok(f, "mid", "5000 bytes follow");
    memset(v, 'z', 5000);
    assert_int_equal(status_of(f, put_req(f, bin("mid2"), binn(v, 5000))),
                     SHOAL_OK);

    uint8_t token[16];
    size_t token_len = 0, seen = 0, pages = 0;
    for (bool more = true; more; pages++) {
        Shoal__Request *q = scan_req(f, 1000);
        if (token_len != 0) {
            q->scan->has_token = true;
            q->scan->token = binn(token, token_len);
        }
        Shoal__Response *r = run(f, q);
        size_t bytes = 0;
        for (size_t i = 0; i < r->scan->n_items; i++, seen++) {
            Shoal__Item *it = r->scan->items[i];
            bytes += it->value.len;
            if (seen < 10) {
                assert_int_equal(it->value.len, vlen);
                assert_int_equal(it->value.data[vlen - 1], 'A' + (int) seen);
            }
        }
        assert_true(bytes < EXEC_SCAN_MAX_BYTES + vlen);
        more = r->scan->more;
        if (more) {
            memcpy(token, r->scan->token.data, r->scan->token.len);
            token_len = r->scan->token.len;
        }
        pbuf_arena_reset(&f->arena);
    }
    assert_int_equal(seen, 12);
    assert_true(pages >= 3);
    free(v);
}

static void
test_exec_count(void **state)
{
    fx *f = *state;
    unsigned n = 0;
    for (int i = 0; i < 5; i++)
        put_ok(f, key_in_shard(f, "p:", 9, &n), "v");
    put_ok(f, key_in_shard(f, "q", 10, &n), "v");
    Shoal__Response *r = run(f, count_req(f, NULL));
    assert_int_equal(r->count->count, 6);
    r = run(f, count_req(f, "p:"));
    assert_int_equal(r->count->count, 5);
    Shoal__Request *q = count_req(f, "p:");
    uint32_t ids[2] = {9, 10};
    q->count->n_shards = 1;
    q->count->shards = ids;
    assert_int_equal(run(f, q)->count->count, 5);
    q->count->n_shards = 2;
    q->count->has_prefix = false;
    assert_int_equal(run(f, q)->count->count, 6);
    ids[0] = 11;
    assert_int_equal(run(f, q)->count->count, 1);
    ids[1] = 1000;
    assert_int_equal(status_of(f, q), SHOAL_EINVAL);
}

/* ---- stats and map --------------------------------------------------------
 */

static void
test_exec_stats(void **state)
{
    fx *f = *state;
    put_ok(f, "s1", "abc");
    put_ok(f, "s2", "defg");
    Shoal__Response *r = run(f, stats_req(f));
    assert_int_equal(r->result_case, SHOAL__RESPONSE__RESULT_STATS);
    Shoal__StatsResp *s = r->stats;
    assert_string_equal(s->node_id, "n1");
    assert_int_equal(s->keys, 2);
    assert_int_equal(s->shard_count, N_SHARDS);
    assert_true(s->has_requests && s->requests == f->requests);
    assert_true(s->has_uptime_ms);
    assert_false(s->read_only);
    uint64_t keys = 0;
    assert_true(s->n_shards >= 1 && s->n_shards <= 2);
    for (size_t i = 0; i < s->n_shards; i++) {
        assert_true(s->shards[i]->keys > 0);
        keys += s->shards[i]->keys;
        assert_true(s->shards[i]->lsn >= 1);
    }
    assert_int_equal(keys, 2);
    if (f->dir != NULL)
        assert_true(s->wal_records >= 2);

    f->x.requests_total = NULL;
    r = run(f, stats_req(f));
    assert_false(r->stats->has_requests);
    f->x.requests_total = &f->requests;
}

static void
test_exec_map(void **state)
{
    fx *f = *state;
    Shoal__Response *r = run(f, map_req(f));
    assert_int_equal(r->result_case, SHOAL__RESPONSE__RESULT_MAP);
    Shoal__ClusterMap *m = r->map;
    assert_int_equal(m->epoch, 1);
    assert_int_equal(m->shard_count, N_SHARDS);
    assert_int_equal(m->replicas, 1);
    assert_int_equal(m->write_quorum, 1);
    assert_int_equal(m->hash_key.len, KEYHASH_KEY_BYTES);
    assert_memory_equal(m->hash_key.data, f->x.hash_key, KEYHASH_KEY_BYTES);
    assert_int_equal(m->n_nodes, 1);
    assert_string_equal(m->nodes[0]->id, "n1");
    assert_string_equal(m->nodes[0]->addr, "tcp://127.0.0.1:7400");
    assert_int_equal(m->nodes[0]->weight, 1);
    assert_int_equal(m->n_shards, N_SHARDS);
    for (uint32_t i = 0; i < N_SHARDS; i++) {
        assert_int_equal(m->shards[i]->shard, i);
        assert_int_equal(m->shards[i]->n_replicas, 1);
        assert_int_equal(m->shards[i]->replicas[0], 0);
        assert_int_equal(m->shards[i]->primary, 0);
        assert_int_equal(m->shards[i]->state, 0);
    }

    Shoal__ClusterMap direct;
    assert_int_equal(exec_map(&f->x, &direct, &f->arena), SHOAL_OK);
    assert_int_equal(direct.n_shards, N_SHARDS);
}

/* ---- commits --------------------------------------------------------------
 */

static void
test_exec_commit_no_wait(void **state)
{
    fx *f = *state;
    exec_result res;
    Shoal__Response *r =
        run_full(f, NULL, put_req(f, bin("durable"), bin("yes")), &res);
    assert_int_equal(r->status, SHOAL_OK);
    assert_true(res.wrote);
    uint64_t point = store_commit_point(f->st);
    assert_true(point > 0);
    assert_int_equal(store_commit_wait(f->st, point, false), SHOAL_OK);

    r = run_full(f, NULL, incr_req(f, bin("ctr"), 2), &res);
    assert_true(res.wrote);
    assert_int_equal(store_commit_wait(f->st, store_commit_point(f->st), true),
                     SHOAL_OK);

    /* Reopen: both writes were committed. */
    store_close(f->st);
    fx_open_store(f);
    assert_string_equal(get_str(f, "durable", NULL), "yes");
    assert_string_equal(get_str(f, "ctr", NULL), "2");
}

static void
test_exec_commit_failed(void **state)
{
    fx *f = *state;
    exec_result res;
    Shoal__Response *r =
        run_full(f, NULL, put_req(f, bin("k"), bin("v")), &res);
    assert_true(res.wrote);
    exec_commit_failed(r, SHOAL_EIO);
    assert_int_equal(r->status, SHOAL_EIO);
    assert_int_equal(r->result_case, SHOAL__RESPONSE__RESULT__NOT_SET);
    assert_non_null(r->message);
    pack_check(r);

    Shoal__Request *b = batch_req(f, 1);
    b->batch->ops[0]->key = bin("k2");
    r = run(f, b);
    exec_commit_failed(r, SHOAL_ECLOSED);
    assert_int_equal(r->status, SHOAL_ECLOSED);
    assert_int_equal(r->result_case, SHOAL__RESPONSE__RESULT__NOT_SET);
    pack_check(r);
}

/* ---- allocation failures --------------------------------------------------
 */

/* Fail the Nth allocation for N = 1, 2, ... until req runs without hitting
 * the failure: every attempt answers OK (or what the op may answer) or
 * ENOMEM with a packable response, and ASan sees no leak. */
static void
enomem_loop(fx *f, const Shoal__Request *req, shoal_err other)
{
    for (long n = 1;; n++) {
        pbuf_arena_fini(&f->arena);
        pbuf_arena_init(&f->arena, 4096);
        Shoal__Response resp;
        shoal__response__init(&resp);
        exec_result res;
        long hits = mem_fail_count();
        mem_fail_set(n, 0);
        exec_request(&f->x, NULL, req, &resp, &f->arena, &res);
        mem_fail_set(0, 0);
        bool clean = mem_fail_count() == hits;
        if (res.status != SHOAL_OK && res.status != other)
            assert_int_equal(res.status, SHOAL_ENOMEM);
        assert_false(clean && res.status == SHOAL_ENOMEM);
        pack_check(&resp);
        if (clean)
            break;
        assert_true(n < 100000);
    }
}

static void
test_exec_enomem(void **state)
{
    fx *f = *state;
    unsigned n = 0;
    for (int i = 0; i < 40; i++)
        put_ok(f, key_in_shard(f, "e", (uint32_t) (i % 7), &n), "value");
    /* Requests are built in their own arena: the loop replaces f->arena. */
    pbuf_arena reqs;
    pbuf_arena_init(&reqs, 1u << 16);
    f->build = &reqs;
    Shoal__Request *b = batch_req(f, 2);
    b->batch->ops[0]->key = bin("enomem-a");
    b->batch->ops[1]->key = bin("enomem-b");
    b->batch->ops[1]->has_if_absent = b->batch->ops[1]->if_absent = true;
    enomem_loop(f, scan_req(f, 30), SHOAL_OK);
    enomem_loop(f, stats_req(f), SHOAL_OK);
    enomem_loop(f, map_req(f), SHOAL_OK);
    enomem_loop(f, b, SHOAL_EEXISTS);
    enomem_loop(f, get_req(f, bin("enomem-a")), SHOAL_OK);
    enomem_loop(f, put_req(f, bin("enomem-c"), bin("v")), SHOAL_OK);
    f->build = &f->arena;
    pbuf_arena_fini(&reqs);
}

/* ---- fuzz seeds ------------------------------------------------------------
 */

/* Write one seed of tests/fuzz/corpus/request: a flags byte (odd: also run
 * as a prefix-confined caller), then the packed RequestFrame of reqs. */
static void
write_seed(const char *dir, const char *name, uint8_t flags,
           Shoal__Request **reqs, size_t n)
{
    Shoal__RequestFrame fr;
    shoal__request_frame__init(&fr);
    fr.reqs = reqs;
    fr.n_reqs = n;
    size_t len = shoal__request_frame__get_packed_size(&fr);
    uint8_t *buf = malloc(len + 1);
    assert_non_null(buf);
    buf[0] = flags;
    assert_int_equal(shoal__request_frame__pack(&fr, buf + 1), len);
    char path[4096];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    FILE *fp = fopen(path, "wb");
    assert_non_null(fp);
    assert_int_equal(fwrite(buf, 1, len + 1, fp), len + 1);
    assert_int_equal(fclose(fp), 0);
    free(buf);
}

static void
seed_single(fx *f, const char *dir)
{
    Shoal__Request *q[8];
    q[0] = put_req(f, bin("a:1"), bin("one"));
    q[1] = put_req(f, bin("b:1"), bin("two"));
    q[1]->put->has_ttl_ms = true;
    q[1]->put->ttl_ms = 5000;
    q[2] = get_req(f, bin("a:1"));
    q[3] = ttl_req(f, bin("b:1"));
    q[4] = exists_req(f, bin("a:2"));
    q[5] = incr_req(f, bin("a:n"), 7);
    q[6] = del_req(f, bin("b:1"));
    q[6]->del->has_if_version = true;
    q[6]->del->if_version = 2;
    q[7] = put_req(f, bin("a:1"), bin("again"));
    q[7]->put->has_if_absent = q[7]->put->if_absent = true;
    write_seed(dir, "single-key", 0, q, 8);
    write_seed(dir, "single-key-confined", 1, q, 8);
    q[0] = incr_req(f, bin("a:1"), 1); /* not a number */
    q[1] = put_req(f, bin("a:max"), bin("9223372036854775807"));
    q[2] = incr_req(f, bin("a:max"), 1);
    write_seed(dir, "incr", 1, q, 3);
}

static void
seed_batches(fx *f, const char *dir)
{
    Shoal__Request *q[3];
    static const char *keys[3] = {"a:b1", "a:b2", "b:b3"};
    q[0] = batch_req(f, 3);
    for (size_t i = 0; i < 3; i++) {
        q[0]->batch->ops[i]->key = bin(keys[i]);
        q[0]->batch->ops[i]->value = bin("v");
    }
    q[1] = batch_req(f, 3);
    q[1]->batch->ops[0]->key = bin("a:x");
    q[1]->batch->ops[1]->key = bin("a:y");
    q[1]->batch->ops[1]->kind = SHOAL__BATCH_OP__KIND__DEL;
    q[1]->batch->ops[2]->key = bin("a:z");
    q[1]->batch->ops[2]->has_if_absent = true;
    q[1]->batch->ops[2]->if_absent = true;
    q[2] = batch_req(f, 2);
    q[2]->batch->ops[0]->key = bin("a:d");
    q[2]->batch->ops[1]->key = bin("a:d"); /* duplicate */
    write_seed(dir, "batch", 1, q, 3);
}

static void
seed_reads(fx *f, const char *dir)
{
    Shoal__Request *q[6];
    q[0] = put_req(f, bin("a:s1"), bin("1"));
    q[1] = put_req(f, bin("a:s2"), bin("2"));
    q[2] = scan_bounds(f, "a:", NULL, NULL);
    q[2]->scan->limit = 1;
    q[2]->scan->has_token = true;
    q[2]->scan->token = bin("a:s1");
    q[3] = scan_bounds(f, NULL, "a", "b");
    q[3]->scan->has_keys_only = q[3]->scan->keys_only = true;
    static uint32_t ids[2] = {3, 9};
    q[3]->scan->n_shards = 2;
    q[3]->scan->shards = ids;
    q[4] = count_req(f, "a:");
    q[4]->count->n_shards = 2;
    q[4]->count->shards = ids;
    q[5] = scan_req(f, 0);
    write_seed(dir, "scan-count", 1, q, 6);
    q[0] = stats_req(f);
    q[1] = map_req(f);
    q[2] = req_new(f, SHOAL__REQUEST__OP__NOT_SET);
    q[3] = get_req(f, bin(""));
    write_seed(dir, "stats-map-bad", 1, q, 4);
    static uint8_t big[5000]; /* over the merge's inline size */
    memset(big, 'v', sizeof(big));
    q[0] = put_req(f, bin("a:big"), binn(big, sizeof(big)));
    q[1] = scan_req(f, 3);
    write_seed(dir, "scan-large-value", 0, q, 2);
}

/* With SHOAL_REQUEST_CORPUS=<dir>, write the fuzz seeds there. */
static void
test_exec_write_corpus(void **state)
{
    const char *dir = getenv("SHOAL_REQUEST_CORPUS");
    if (dir == NULL || dir[0] == '\0')
        skip();
    seed_single(*state, dir);
    seed_batches(*state, dir);
    seed_reads(*state, dir);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_exec_single_key_ops, mem_up,
                                        fx_down),
        cmocka_unit_test_setup_teardown(test_exec_single_key_ops, disk_up,
                                        fx_down),
        cmocka_unit_test_setup_teardown(test_exec_conditional, mem_up, fx_down),
        cmocka_unit_test_setup_teardown(test_exec_conditional, disk_up,
                                        fx_down),
        cmocka_unit_test_setup_teardown(test_exec_incr, mem_up, fx_down),
        cmocka_unit_test_setup_teardown(test_exec_limits, mem_up, fx_down),
        cmocka_unit_test_setup_teardown(test_exec_batch_validation, mem_up,
                                        fx_down),
        cmocka_unit_test_setup_teardown(test_exec_roles, mem_up, fx_down),
        cmocka_unit_test_setup_teardown(test_exec_prefix_confinement, mem_up,
                                        fx_down),
        cmocka_unit_test_setup_teardown(test_exec_batch_single_shard, mem_up,
                                        fx_down),
        cmocka_unit_test_setup_teardown(test_exec_batch_single_shard, disk_up,
                                        fx_down),
        cmocka_unit_test_setup_teardown(test_exec_batch_multi_shard, mem_up,
                                        fx_down),
        cmocka_unit_test_setup_teardown(test_exec_batch_multi_shard, disk_up,
                                        fx_down),
        cmocka_unit_test_setup_teardown(test_exec_scan_paginate_random, mem_up,
                                        fx_down),
        cmocka_unit_test_setup_teardown(test_exec_scan_prefix_range, mem_up,
                                        fx_down),
        cmocka_unit_test_setup_teardown(test_exec_scan_large_values, mem_up,
                                        fx_down),
        cmocka_unit_test_setup_teardown(test_exec_count, mem_up, fx_down),
        cmocka_unit_test_setup_teardown(test_exec_stats, mem_up, fx_down),
        cmocka_unit_test_setup_teardown(test_exec_stats, disk_up, fx_down),
        cmocka_unit_test_setup_teardown(test_exec_map, mem_up, fx_down),
        cmocka_unit_test_setup_teardown(test_exec_commit_no_wait, disk_up,
                                        fx_down),
        cmocka_unit_test_setup_teardown(test_exec_commit_failed, mem_up,
                                        fx_down),
        cmocka_unit_test_setup_teardown(test_exec_enomem, mem_up, fx_down),
        cmocka_unit_test_setup_teardown(test_exec_write_corpus, mem_up,
                                        fx_down),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
