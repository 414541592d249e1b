/*
 * test_node.c -- one real shoald on loopback, driven through libshoal,
 * shoalctl, the README's example program and HTTP (issue #3 §5).
 *
 * Every operation and its conditions, the HTTP endpoints and their figures,
 * a restart with every key and version intact, the data-dir lock, SIGTERM
 * with requests in flight (every answered write durable, exit 0), and bad
 * flags (exit 2). Each test starts its own node in its own directory.
 */
#include "tests/support/proc.h"
#include "tests/support/testutil.h"

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
#include <sys/stat.h>

#include <cmocka.h>

#define STOP_MS 30000

typedef struct fx {
    char *dir;
    proc_keys keys;
    proc_node *node;
    shoal *db; /* admin key */
} fx;

static void
log_to_stderr(void *arg, int level, const char *msg)
{
    (void) arg;
    fprintf(stderr, "# libshoal[%d]: %s\n", level, msg);
}

static shoal_err
db_open(const proc_node *n, const char *key_file, shoal **out)
{
    shoal_opts o;
    shoal_opts_default(&o);
    const char *seeds[] = {proc_node_url(n)};
    o.seeds = seeds;
    o.n_seeds = 1;
    o.key_file = key_file;
    o.insecure = key_file == NULL;
    o.timeout_ms = 10000;
    o.connect_timeout_ms = 10000;
    return shoal_open(&o, out);
}

static int
fx_up(void **state)
{
    fx *f = calloc(1, sizeof(*f));
    void *dir = NULL;
    if (f == NULL || tu_tmpdir_up(&dir) != 0)
        return -1;
    f->dir = dir;
    *state = f;
    shoal_set_logger(log_to_stderr, NULL, 1);
    proc_node_opts o;
    proc_node_opts_default(&o);
    o.dir = f->dir;
    if (proc_node_start_keyed(f->dir, &o, &f->keys, &f->node) != SHOAL_OK ||
        db_open(f->node, f->keys.admin_file, &f->db) != SHOAL_OK) {
        fprintf(stderr, "# fixture failed; node log in %s\n", f->dir);
        return -1;
    }
    return 0;
}

static int
fx_down(void **state)
{
    fx *f = *state;
    if (f == NULL)
        return 0;
    shoal_close(f->db);
    int code = -1;
    if (f->node != NULL)
        proc_node_stop(f->node, STOP_MS, &code);
    proc_node_free(f->node);
    proc_reap_all();
    proc_keys_wipe(&f->keys);
    void *dir = f->dir;
    tu_tmpdir_down(&dir);
    free(f);
    return 0;
}

static uint64_t
put_s(shoal *db, const char *k, const char *v)
{
    uint64_t ver = 0;
    assert_int_equal(
        shoal_put(db, k, strlen(k), v, strlen(v), NULL, &ver, NULL), SHOAL_OK);
    assert_true(ver > 0);
    return ver;
}

static void
check_value(shoal *db, const char *k, const char *v, uint64_t ver)
{
    void *val = NULL;
    size_t vlen = 0;
    uint64_t got = 0;
    assert_int_equal(shoal_get(db, k, strlen(k), &val, &vlen, &got, NULL),
                     SHOAL_OK);
    assert_int_equal(vlen, strlen(v));
    assert_memory_equal(val, v, vlen);
    if (ver != 0)
        assert_int_equal(got, ver);
    shoal_free(val);
}

static void
check_missing(shoal *db, const char *k)
{
    void *val = NULL;
    size_t vlen = 0;
    assert_int_equal(shoal_get(db, k, strlen(k), &val, &vlen, NULL, NULL),
                     SHOAL_ENOTFOUND);
    assert_null(val);
}

/* ---- a full scan: every live key, value and version ---------------------
 */

typedef struct kv {
    uint8_t *key;
    size_t klen;
    uint8_t *val;
    size_t vlen;
    uint64_t version;
} kv;

typedef struct kvs {
    kv *v;
    size_t n, cap;
} kvs;

static void
kvs_add(kvs *s, const shoal_item *it)
{
    if (s->n == s->cap) {
        s->cap = s->cap ? s->cap * 2 : 256;
        s->v = realloc(s->v, s->cap * sizeof(*s->v));
        assert_non_null(s->v);
    }
    kv *e = &s->v[s->n++];
    e->key = malloc(it->klen + 1);
    e->val = malloc(it->vlen + 1);
    assert_true(e->key != NULL && e->val != NULL);
    memcpy(e->key, it->key, it->klen);
    if (it->vlen > 0)
        memcpy(e->val, it->val, it->vlen);
    e->klen = it->klen;
    e->vlen = it->vlen;
    e->version = it->version;
}

static void
kvs_free(kvs *s)
{
    for (size_t i = 0; i < s->n; i++) {
        free(s->v[i].key);
        free(s->v[i].val);
    }
    free(s->v);
    memset(s, 0, sizeof(*s));
}

static int
key_cmp(const uint8_t *a, size_t alen, const uint8_t *b, size_t blen)
{
    int c = memcmp(a, b, alen < blen ? alen : blen);
    return c != 0 ? c : (alen > blen) - (alen < blen);
}

/* Every page of a scan of prefix, limit per page; checks order. */
static void
scan_all(shoal *db, const char *prefix, uint32_t limit, bool keys_only,
         kvs *out, size_t *pages_out)
{
    memset(out, 0, sizeof(*out));
    shoal_scan_req r;
    memset(&r, 0, sizeof(r));
    r.prefix = prefix;
    r.plen = prefix != NULL ? strlen(prefix) : 0;
    r.limit = limit;
    r.keys_only = keys_only;
    uint8_t token[2048];
    size_t pages = 0;
    for (;;) {
        shoal_scan_page *p = NULL;
        assert_int_equal(shoal_scan(db, &r, &p, NULL), SHOAL_OK);
        pages++;
        assert_true(p->n_items <= (limit ? limit : 100));
        for (size_t i = 0; i < p->n_items; i++) {
            if (out->n > 0) {
                const kv *last = &out->v[out->n - 1];
                assert_true(key_cmp(last->key, last->klen, p->items[i].key,
                                    p->items[i].klen) < 0);
            }
            if (keys_only)
                assert_null(p->items[i].val);
            kvs_add(out, &p->items[i]);
        }
        bool more = p->more;
        if (more) {
            assert_true(p->token_len > 0 && p->token_len <= sizeof(token));
            memcpy(token, p->token, p->token_len);
            r.token = token;
            r.token_len = p->token_len;
        }
        shoal_scan_page_free(p);
        if (!more)
            break;
        assert_true(pages < 1000000);
    }
    if (pages_out != NULL)
        *pages_out = pages;
}

static void
kvs_assert_equal(const kvs *a, const kvs *b)
{
    assert_int_equal(a->n, b->n);
    for (size_t i = 0; i < a->n; i++) {
        assert_int_equal(a->v[i].klen, b->v[i].klen);
        assert_memory_equal(a->v[i].key, b->v[i].key, a->v[i].klen);
        assert_int_equal(a->v[i].vlen, b->v[i].vlen);
        if (a->v[i].vlen > 0)
            assert_memory_equal(a->v[i].val, b->v[i].val, a->v[i].vlen);
        assert_int_equal(a->v[i].version, b->v[i].version);
    }
}

/* ---- operations -----------------------------------------------------------
 */

static void
test_node_put_get_del(void **state)
{
    fx *f = *state;
    shoal *db = f->db;
    uint64_t v1 = put_s(db, "k1", "v1");
    check_value(db, "k1", "v1", v1);
    uint64_t v2 = put_s(db, "k1", "v1b");
    assert_true(v2 > v1);
    check_value(db, "k1", "v1b", v2);
    check_missing(db, "nope");

    /* Binary key and an empty value. */
    const uint8_t bkey[] = {0, 1, 2, 0xff, 0};
    uint64_t bv = 0;
    assert_int_equal(shoal_put(db, bkey, sizeof(bkey), "", 0, NULL, &bv, NULL),
                     SHOAL_OK);
    void *val = NULL;
    size_t vlen = 99;
    uint64_t got = 0;
    assert_int_equal(shoal_get(db, bkey, sizeof(bkey), &val, &vlen, &got, NULL),
                     SHOAL_OK);
    assert_int_equal(vlen, 0);
    assert_int_equal(got, bv);
    shoal_free(val);

    /* del: missing, wrong if_version, right if_version, then gone. */
    assert_int_equal(shoal_del(db, "nope", 4, NULL, NULL), SHOAL_ENOTFOUND);
    uint64_t wrong = v2 + 1000;
    assert_int_equal(shoal_del(db, "k1", 2, &wrong, NULL), SHOAL_EVERSION);
    check_value(db, "k1", "v1b", v2);
    assert_int_equal(shoal_del(db, "k1", 2, &v2, NULL), SHOAL_OK);
    check_missing(db, "k1");
    put_s(db, "k2", "x");
    assert_int_equal(shoal_del(db, "k2", 2, NULL, NULL), SHOAL_OK);
    check_missing(db, "k2");
}

static void
test_node_conditions(void **state)
{
    fx *f = *state;
    shoal *db = f->db;
    shoal_put_opts po;
    memset(&po, 0, sizeof(po));
    po.if_absent = true;
    uint64_t v1 = 0;
    assert_int_equal(shoal_put(db, "c", 1, "a", 1, &po, &v1, NULL), SHOAL_OK);
    assert_int_equal(shoal_put(db, "c", 1, "b", 1, &po, NULL, NULL),
                     SHOAL_EEXISTS);
    check_value(db, "c", "a", v1);

    memset(&po, 0, sizeof(po));
    po.has_if_version = true;
    po.if_version = v1 + 7;
    assert_int_equal(shoal_put(db, "c", 1, "b", 1, &po, NULL, NULL),
                     SHOAL_EVERSION);
    po.if_version = v1;
    uint64_t v2 = 0;
    assert_int_equal(shoal_put(db, "c", 1, "b", 1, &po, &v2, NULL), SHOAL_OK);
    assert_true(v2 > v1);
    check_value(db, "c", "b", v2);

    /* if_version 0 means "absent". */
    po.if_version = 0;
    assert_int_equal(shoal_put(db, "c", 1, "z", 1, &po, NULL, NULL),
                     SHOAL_EVERSION);
    assert_int_equal(shoal_put(db, "fresh", 5, "z", 1, &po, NULL, NULL),
                     SHOAL_OK);
    check_value(db, "fresh", "z", 0);
}

static void
test_node_incr(void **state)
{
    fx *f = *state;
    shoal *db = f->db;
    int64_t r = 0;
    uint64_t v = 0;
    assert_int_equal(shoal_incr(db, "n", 1, 5, &r, &v, NULL), SHOAL_OK);
    assert_int_equal(r, 5);
    assert_int_equal(shoal_incr(db, "n", 1, -7, &r, NULL, NULL), SHOAL_OK);
    assert_int_equal(r, -2);
    check_value(db, "n", "-2", 0);
    put_s(db, "txt", "hello");
    assert_int_equal(shoal_incr(db, "txt", 3, 1, &r, NULL, NULL),
                     SHOAL_ENOTNUM);
    check_value(db, "txt", "hello", 0);
    put_s(db, "big", "9223372036854775807");
    assert_int_equal(shoal_incr(db, "big", 3, 1, &r, NULL, NULL),
                     SHOAL_EOVERFLOW);
    put_s(db, "small", "-9223372036854775808");
    assert_int_equal(shoal_incr(db, "small", 5, -1, &r, NULL, NULL),
                     SHOAL_EOVERFLOW);
    check_value(db, "big", "9223372036854775807", 0);
}

static void
test_node_ttl_exists(void **state)
{
    fx *f = *state;
    shoal *db = f->db;
    int64_t ttl = 0;
    put_s(db, "forever", "x");
    assert_int_equal(shoal_ttl(db, "forever", 7, &ttl, NULL, NULL), SHOAL_OK);
    assert_int_equal(ttl, -1);
    assert_int_equal(shoal_ttl(db, "nope", 4, &ttl, NULL, NULL),
                     SHOAL_ENOTFOUND);

    shoal_put_opts po;
    memset(&po, 0, sizeof(po));
    po.ttl_ms = 600000;
    assert_int_equal(shoal_put(db, "later", 5, "x", 1, &po, NULL, NULL),
                     SHOAL_OK);
    assert_int_equal(shoal_ttl(db, "later", 5, &ttl, NULL, NULL), SHOAL_OK);
    assert_true(ttl > 500000 && ttl <= 600000);

    bool ex = false;
    assert_int_equal(shoal_exists(db, "later", 5, &ex, NULL), SHOAL_OK);
    assert_true(ex);
    assert_int_equal(shoal_exists(db, "nope", 4, &ex, NULL), SHOAL_OK);
    assert_false(ex);

    /* A short TTL expires: poll (bounded) until the key is gone. */
    po.ttl_ms = 150;
    assert_int_equal(shoal_put(db, "soon", 4, "x", 1, &po, NULL, NULL),
                     SHOAL_OK);
    uint64_t deadline = proc_now_ms() + 20000;
    do {
        assert_int_equal(shoal_exists(db, "soon", 4, &ex, NULL), SHOAL_OK);
        if (ex)
            proc_nap_ms(20);
    } while (ex && proc_now_ms() < deadline);
    assert_false(ex);
    check_missing(db, "soon");
}

static void scan_ranges(shoal *db);

static void
test_node_count_scan(void **state)
{
    fx *f = *state;
    shoal *db = f->db;
    const size_t n = 250;
    for (size_t i = 0; i < n; i++) {
        char k[32], v[32];
        snprintf(k, sizeof(k), "s/%04zu", i);
        snprintf(v, sizeof(v), "val-%zu", i * 7);
        put_s(db, k, v);
    }
    put_s(db, "t/other", "x");
    uint64_t c = 0;
    assert_int_equal(shoal_count(db, "s/", 2, &c, NULL), SHOAL_OK);
    assert_int_equal(c, n);
    assert_int_equal(shoal_count(db, NULL, 0, &c, NULL), SHOAL_OK);
    assert_int_equal(c, n + 1);
    assert_int_equal(shoal_count(db, "zzz", 3, &c, NULL), SHOAL_OK);
    assert_int_equal(c, 0);

    kvs all;
    size_t pages = 0;
    scan_all(db, "s/", 37, false, &all, &pages);
    assert_int_equal(all.n, n);
    assert_int_equal(pages, (n + 36) / 37);
    for (size_t i = 0; i < n; i++) {
        char k[32], v[32];
        snprintf(k, sizeof(k), "s/%04zu", i);
        snprintf(v, sizeof(v), "val-%zu", i * 7);
        assert_int_equal(all.v[i].klen, strlen(k));
        assert_memory_equal(all.v[i].key, k, strlen(k));
        assert_int_equal(all.v[i].vlen, strlen(v));
        assert_memory_equal(all.v[i].val, v, strlen(v));
        assert_true(all.v[i].version > 0);
    }
    kvs_free(&all);
    scan_all(db, "s/", 0, true, &all, &pages);
    assert_int_equal(all.n, n);
    kvs_free(&all);
    scan_ranges(db);
}

/* A range [s/0100, s/0200) of the s/ keys, and an inverted one. */
static void
scan_ranges(shoal *db)
{
    shoal_scan_req r;
    memset(&r, 0, sizeof(r));
    r.start = "s/0100";
    r.start_len = 6;
    r.end = "s/0200";
    r.end_len = 6;
    r.limit = 1000;
    shoal_scan_page *p = NULL;
    assert_int_equal(shoal_scan(db, &r, &p, NULL), SHOAL_OK);
    assert_int_equal(p->n_items, 100);
    assert_false(p->more);
    assert_memory_equal(p->items[0].key, "s/0100", 6);
    assert_memory_equal(p->items[99].key, "s/0199", 6);
    shoal_scan_page_free(p);
    r.start = "s/0200";
    r.end = "s/0100";
    shoal_err rc = shoal_scan(db, &r, &p, NULL);
    assert_true(rc == SHOAL_EINVAL || rc == SHOAL_OK);
    if (rc == SHOAL_OK) {
        assert_int_equal(p->n_items, 0);
        shoal_scan_page_free(p);
    }
}

static void
test_node_batch(void **state)
{
    fx *f = *state;
    shoal *db = f->db;
    put_s(db, "b/old", "x");
    char keys[10][16];
    shoal_batch_op ops[11];
    memset(ops, 0, sizeof(ops));
    for (int i = 0; i < 10; i++) {
        snprintf(keys[i], sizeof(keys[i]), "b/%02d", i);
        ops[i].kind = SHOAL_BATCH_PUT;
        ops[i].key = keys[i];
        ops[i].klen = strlen(keys[i]);
        ops[i].val = keys[i];
        ops[i].vlen = strlen(keys[i]);
    }
    ops[10].kind = SHOAL_BATCH_DEL;
    ops[10].key = "b/old";
    ops[10].klen = 5;
    shoal_err res[11];
    assert_int_equal(shoal_batch(db, ops, 11, res, NULL, NULL), SHOAL_OK);
    for (int i = 0; i < 11; i++)
        assert_int_equal(res[i], SHOAL_OK);
    for (int i = 0; i < 10; i++)
        check_value(db, keys[i], keys[i], 0);
    check_missing(db, "b/old");

    /* One failing condition: its status, the others applied per shard. */
    ops[0].opts.if_absent = true;
    shoal_err rc = shoal_batch(db, ops, 1, res, NULL, NULL);
    assert_int_equal(rc, SHOAL_EEXISTS);
    assert_int_equal(res[0], SHOAL_EEXISTS);

    /* The same key twice: refused, nothing applied. */
    shoal_batch_op dup[2];
    memset(dup, 0, sizeof(dup));
    dup[0].kind = dup[1].kind = SHOAL_BATCH_PUT;
    dup[0].key = dup[1].key = "b/dup";
    dup[0].klen = dup[1].klen = 5;
    dup[0].val = dup[1].val = "v";
    dup[0].vlen = dup[1].vlen = 1;
    assert_int_equal(shoal_batch(db, dup, 2, NULL, NULL, NULL), SHOAL_EINVAL);
    check_missing(db, "b/dup");
}

static void
test_node_limits(void **state)
{
    fx *f = *state;
    shoal *db = f->db;
    size_t big = 1u << 20;
    uint8_t *v = malloc(big);
    assert_non_null(v);
    for (size_t i = 0; i < big; i++)
        v[i] = (uint8_t) (i * 31 + 7);
    uint64_t ver = 0;
    assert_int_equal(shoal_put(db, "big", 3, v, big, NULL, &ver, NULL),
                     SHOAL_OK);
    void *got = NULL;
    size_t glen = 0;
    assert_int_equal(shoal_get(db, "big", 3, &got, &glen, NULL, NULL),
                     SHOAL_OK);
    assert_int_equal(glen, big);
    assert_memory_equal(got, v, big);
    shoal_free(got);
    free(v);

    char key[1026];
    memset(key, 'k', sizeof(key));
    assert_int_equal(shoal_put(db, key, 1024, "x", 1, NULL, NULL, NULL),
                     SHOAL_OK);
    assert_int_equal(shoal_put(db, key, 1025, "x", 1, NULL, NULL, NULL),
                     SHOAL_ETOOLARGE);
    assert_int_equal(shoal_put(db, key, 0, "x", 1, NULL, NULL, NULL),
                     SHOAL_EINVAL);
}

typedef struct async_ctx {
    _Atomic int done;
    _Atomic int ok;
} async_ctx;

static void
async_done(shoal_op *op, void *arg)
{
    async_ctx *a = arg;
    if (op->status == SHOAL_OK)
        atomic_fetch_add(&a->ok, 1);
    atomic_fetch_add(&a->done, 1);
}

static void
test_node_async(void **state)
{
    fx *f = *state;
    enum { N = 200 };
    static shoal_op ops[N];
    static char keys[N][16];
    async_ctx a = {0, 0};
    memset(ops, 0, sizeof(ops));
    for (int i = 0; i < N; i++) {
        snprintf(keys[i], sizeof(keys[i]), "a/%03d", i);
        ops[i].kind = SHOAL_OP_PUT;
        ops[i].key = keys[i];
        ops[i].klen = strlen(keys[i]);
        ops[i].val = keys[i];
        ops[i].vlen = strlen(keys[i]);
        assert_int_equal(shoal_submit(f->db, &ops[i], async_done, &a),
                         SHOAL_OK);
    }
    uint64_t deadline = proc_now_ms() + 30000;
    while (atomic_load(&a.done) < N && proc_now_ms() < deadline)
        proc_nap_ms(2);
    assert_int_equal(atomic_load(&a.done), N);
    assert_int_equal(atomic_load(&a.ok), N);
    for (int i = 0; i < N; i++)
        check_value(f->db, keys[i], keys[i], ops[i].version);
    uint64_t c = 0;
    assert_int_equal(shoal_count(f->db, "a/", 2, &c, NULL), SHOAL_OK);
    assert_int_equal(c, N);
}

static void
test_node_permissions(void **state)
{
    fx *f = *state;
    put_s(f->db, "shared", "x");
    shoal *rd = NULL, *wr = NULL, *px = NULL;
    assert_int_equal(db_open(f->node, f->keys.read_file, &rd), SHOAL_OK);
    assert_int_equal(db_open(f->node, f->keys.write_file, &wr), SHOAL_OK);
    assert_int_equal(db_open(f->node, f->keys.prefixed_file, &px), SHOAL_OK);

    check_value(rd, "shared", "x", 0);
    assert_int_equal(shoal_put(rd, "shared", 6, "y", 1, NULL, NULL, NULL),
                     SHOAL_EPERM);
    assert_int_equal(shoal_del(rd, "shared", 6, NULL, NULL), SHOAL_EPERM);
    int64_t r = 0;
    assert_int_equal(shoal_incr(rd, "n", 1, 1, &r, NULL, NULL), SHOAL_EPERM);
    shoal_stats st;
    assert_int_equal(shoal_stats_get(wr, &st, NULL), SHOAL_EPERM);
    assert_int_equal(shoal_put(wr, "w", 1, "y", 1, NULL, NULL, NULL), SHOAL_OK);

    assert_int_equal(shoal_put(px, "app:1", 5, "y", 1, NULL, NULL, NULL),
                     SHOAL_OK);
    assert_int_equal(shoal_put(px, "other", 5, "y", 1, NULL, NULL, NULL),
                     SHOAL_EPERM);
    void *val = NULL;
    size_t vlen = 0;
    assert_int_equal(shoal_get(px, "shared", 6, &val, &vlen, NULL, NULL),
                     SHOAL_EPERM);
    uint64_t c = 0;
    assert_int_equal(shoal_count(px, "app:", 4, &c, NULL), SHOAL_OK);
    assert_int_equal(c, 1);
    assert_int_equal(shoal_count(px, NULL, 0, &c, NULL), SHOAL_EPERM);
    check_value(f->db, "shared", "x", 0);
    check_missing(f->db, "other");
    shoal_close(rd);
    shoal_close(wr);
    shoal_close(px);
}

/* ---- HTTP -------------------------------------------------------------------
 */

static void check_metrics(fx *f);

static void
test_node_http(void **state)
{
    fx *f = *state;
    shoal *db = f->db;
    /* Exactly these successful calls, on a fresh node. */
    for (int i = 0; i < 7; i++) {
        char k[8];
        snprintf(k, sizeof(k), "m%d", i);
        put_s(db, k, "v");
    }
    for (int i = 0; i < 5; i++)
        check_value(db, "m1", "v", 0);
    for (int i = 0; i < 3; i++) {
        char k[8];
        snprintf(k, sizeof(k), "m%d", i);
        assert_int_equal(shoal_del(db, k, strlen(k), NULL, NULL), SHOAL_OK);
    }
    int64_t r = 0;
    assert_int_equal(shoal_incr(db, "ctr", 3, 1, &r, NULL, NULL), SHOAL_OK);
    assert_int_equal(shoal_incr(db, "ctr", 3, 1, &r, NULL, NULL), SHOAL_OK);
    shoal_stats st;
    assert_int_equal(shoal_stats_get(db, &st, NULL), SHOAL_OK);
    assert_string_equal(st.node_id, "n1");
    assert_int_equal(st.keys, 5);
    assert_true(st.n_shards > 0);
    assert_true(st.wal_fsyncs > 0);

    assert_true(proc_node_log_contains(f->node, "shoald ready"));
    int status = 0;
    char *body = NULL;
    assert_int_equal(proc_node_http(f->node, "/health", &status, &body),
                     SHOAL_OK);
    assert_int_equal(status, 200);
    free(body);
    assert_int_equal(proc_node_http(f->node, "/status", &status, &body),
                     SHOAL_OK);
    assert_int_equal(status, 200);
    printf("# /status: %.300s...\n", body);
    assert_non_null(strstr(body, "\"n1\""));
    assert_non_null(strstr(body, "shards"));
    assert_int_equal(body[0], '{');
    free(body);
    assert_int_equal(proc_node_http(f->node, "/nope", &status, &body),
                     SHOAL_OK);
    assert_int_equal(status, 404);
    free(body);

    check_metrics(f);
}

/* The figures of test_node_http's calls on /metrics. */
static void
check_metrics(fx *f)
{
    int status = 0;
    char *body = NULL;
    assert_int_equal(proc_node_http(f->node, "/metrics", &status, &body),
                     SHOAL_OK);
    assert_int_equal(status, 200);
    const char *rt = "shoal_requests_total";
    assert_true(proc_metric_sum(body, rt, "op=\"put\"") == 7);
    assert_true(proc_metric_sum(body, rt, "op=\"get\"") == 5);
    assert_true(proc_metric_sum(body, rt, "op=\"del\"") == 3);
    assert_true(proc_metric_sum(body, rt, "op=\"incr\"") == 2);
    assert_true(proc_metric_sum(body, rt, "op=\"stats\"") == 1);
    assert_true(proc_metric_sum(body, "shoal_request_duration_seconds_count",
                                "op=\"put\"") == 7);
    assert_true(proc_metric_sum(body, "shoal_wal_fsyncs_total", NULL) > 0);
    assert_true(proc_metric_sum(body, "shoal_requests_denied_total", NULL) ==
                0);
    free(body);
}

/* ---- shoalctl and the example program -----------------------------------
 */

static int
ctl(const fx *f, const char *key_file, proc_output *o, ...)
{
    const char *argv[32];
    size_t k = 0;
    argv[k++] = PROC_SHOALCTL;
    argv[k++] = "--url";
    argv[k++] = proc_node_url(f->node);
    argv[k++] = "--key-file";
    argv[k++] = key_file;
    va_list ap;
    va_start(ap, o);
    const char *a;
    while ((a = va_arg(ap, const char *)) != NULL && k < 31)
        argv[k++] = a;
    va_end(ap);
    argv[k] = NULL;
    assert_int_equal(proc_run(argv, NULL, 0, 60000, o), SHOAL_OK);
    return o->code;
}

static void
test_node_shoalctl(void **state)
{
    fx *f = *state;
    const char *adm = f->keys.admin_file;
    proc_output o;
    assert_int_equal(ctl(f, adm, &o, "put", "ctl/a", "hello", NULL), 0);
    proc_output_free(&o);
    assert_int_equal(ctl(f, adm, &o, "get", "ctl/a", NULL), 0);
    assert_non_null(strstr(o.out, "hello"));
    proc_output_free(&o);
    check_value(f->db, "ctl/a", "hello", 0);
    assert_int_equal(ctl(f, adm, &o, "get", "ctl/none", NULL), 1);
    proc_output_free(&o);
    assert_int_equal(ctl(f, adm, &o, "incr", "ctl/n", "41", NULL), 0);
    proc_output_free(&o);
    assert_int_equal(ctl(f, adm, &o, "incr", "ctl/n", NULL), 0);
    assert_non_null(strstr(o.out, "42"));
    proc_output_free(&o);
    assert_int_equal(ctl(f, adm, &o, "put", "ctl/a", "x", "--if-absent", NULL),
                     3);
    proc_output_free(&o);
    assert_int_equal(ctl(f, adm, &o, "exists", "ctl/a", NULL), 0);
    proc_output_free(&o);
    assert_int_equal(ctl(f, adm, &o, "count", "ctl/", NULL), 0);
    assert_non_null(strstr(o.out, "2"));
    proc_output_free(&o);
    assert_int_equal(
        ctl(f, adm, &o, "--json", "scan", "--prefix", "ctl/", NULL), 0);
    assert_non_null(strstr(o.out, "ctl/a"));
    assert_non_null(strstr(o.out, "ctl/n"));
    proc_output_free(&o);
    assert_int_equal(ctl(f, adm, &o, "--json", "stats", NULL), 0);
    assert_non_null(strstr(o.out, "n1"));
    proc_output_free(&o);
    assert_int_equal(ctl(f, adm, &o, "ttl", "ctl/a", NULL), 0);
    assert_non_null(strstr(o.out, "-1"));
    proc_output_free(&o);
    assert_int_equal(ctl(f, adm, &o, "del", "ctl/a", NULL), 0);
    proc_output_free(&o);
    assert_int_equal(ctl(f, adm, &o, "exists", "ctl/a", NULL), 1);
    proc_output_free(&o);
    /* A read key writing: exit 4; a usage error: exit 2. */
    assert_int_equal(ctl(f, f->keys.read_file, &o, "put", "ctl/b", "x", NULL),
                     4);
    assert_true(o.err_len > 0);
    proc_output_free(&o);
    assert_int_equal(ctl(f, adm, &o, "frobnicate", NULL), 2);
    proc_output_free(&o);
}

/* keygen makes 0600 key files a node and a client accept. */
static void
test_node_keygen(void **state)
{
    fx *f = *state;
    char nk[600], ck[600];
    snprintf(nk, sizeof(nk), "%s/gen-node.keys", f->dir);
    snprintf(ck, sizeof(ck), "%s/gen-admin.key", f->dir);
    const char *a1[] = {PROC_SHOALCTL, "keygen", "--id", "11", "--role",
                        "admin",       "--out",  ck,     NULL};
    proc_output o;
    assert_int_equal(proc_run(a1, NULL, 0, 30000, &o), SHOAL_OK);
    assert_int_equal(o.code, 0);
    proc_output_free(&o);
    const char *a2[] = {
        PROC_SHOALCTL, "keygen", "--id",  "12", "--role", "read",
        "--prefix",    "p:",     "--out", nk,   NULL};
    assert_int_equal(proc_run(a2, NULL, 0, 30000, &o), SHOAL_OK);
    assert_int_equal(o.code, 0);
    proc_output_free(&o);
    struct stat sb;
    assert_int_equal(stat(ck, &sb), 0);
    assert_int_equal(sb.st_mode & 0777, 0600);
    /* The node file: the read key, then the admin key appended. */
    FILE *in = fopen(ck, "r");
    FILE *out = fopen(nk, "a");
    assert_true(in != NULL && out != NULL);
    char line[1024];
    while (fgets(line, sizeof(line), in) != NULL)
        fputs(line, out);
    fclose(in);
    fclose(out);

    proc_node_opts no;
    proc_node_opts_default(&no);
    no.dir = f->dir;
    no.id = "gen";
    no.key_file = nk;
    proc_node *n = NULL;
    assert_int_equal(proc_node_start(&no, &n), SHOAL_OK);
    shoal *db = NULL;
    assert_int_equal(db_open(n, ck, &db), SHOAL_OK);
    put_s(db, "g", "1");
    check_value(db, "g", "1", 0);
    shoal_close(db);
    int code = -1;
    assert_int_equal(proc_node_stop(n, STOP_MS, &code), SHOAL_OK);
    assert_int_equal(code, 0);
    proc_node_free(n);
}

static void
test_node_example(void **state)
{
    fx *f = *state;
    const char *argv[] = {SHOAL_BIN_DIR "/client/shoal_example_hello",
                          proc_node_url(f->node), f->keys.write_file, NULL};
    proc_output o;
    assert_int_equal(proc_run(argv, NULL, 0, 60000, &o), SHOAL_OK);
    printf("# example: %s%s", o.out, o.err);
    assert_int_equal(o.code, 0);
    proc_output_free(&o);
}

/* A paused node: calls end at their deadline; after SIGCONT it serves. */
static void
test_node_pause(void **state)
{
    fx *f = *state;
    put_s(f->db, "p/before", "x");
    shoal_call call = {.timeout_ms = 300};
    assert_int_equal(proc_node_pause(f->node), SHOAL_OK);
    uint64_t t0 = proc_now_ms();
    void *v = NULL;
    size_t vlen = 0;
    assert_int_equal(shoal_get(f->db, "p/before", 8, &v, &vlen, NULL, &call),
                     SHOAL_ETIMEOUT);
    shoal_err rc = shoal_put(f->db, "p/during", 8, "y", 1, NULL, NULL, &call);
    uint64_t waited = proc_now_ms() - t0;
    assert_int_equal(proc_node_resume(f->node), SHOAL_OK);
    printf("# paused node: get and put ended after %" PRIu64 " ms (put: %s)\n",
           waited, shoal_errname(rc));
    assert_int_equal(rc, SHOAL_ETIMEOUT);
    assert_true(waited < 5000);
    check_value(f->db, "p/before", "x", 0);
    put_s(f->db, "p/after", "z");
    check_value(f->db, "p/after", "z", 0);
}

/* ---- restart, lock, SIGTERM -------------------------------------------------
 */

static void
test_node_restart(void **state)
{
    fx *f = *state;
    uint64_t seed = tu_seed("restart workload");
    for (int i = 0; i < 2000; i++) {
        uint64_t r = tu_rand(&seed);
        char k[32], v[64];
        snprintf(k, sizeof(k), "r/%03u", (unsigned) (r % 500));
        snprintf(v, sizeof(v), "v-%016" PRIx64, r);
        if (r % 10 == 0)
            shoal_del(f->db, k, strlen(k), NULL, NULL);
        else
            put_s(f->db, k, v);
    }
    int64_t cnt = 0;
    assert_int_equal(shoal_incr(f->db, "r/ctr", 5, 12, &cnt, NULL, NULL),
                     SHOAL_OK);
    kvs before, after;
    scan_all(f->db, NULL, 300, false, &before, NULL);
    assert_true(before.n > 100);
    shoal_close(f->db);
    f->db = NULL;

    int code = -1;
    assert_int_equal(proc_node_stop(f->node, STOP_MS, &code), SHOAL_OK);
    assert_int_equal(code, 0);
    assert_int_equal(proc_node_launch(f->node), SHOAL_OK);
    assert_int_equal(db_open(f->node, f->keys.admin_file, &f->db), SHOAL_OK);
    scan_all(f->db, NULL, 300, false, &after, NULL);
    kvs_assert_equal(&before, &after);
    printf("# restart: %zu keys, values and versions equal\n", after.n);

    /* Versions keep rising per shard after the restart. */
    uint64_t maxv = 0;
    for (size_t i = 0; i < before.n; i++)
        maxv = before.v[i].version > maxv ? before.v[i].version : maxv;
    uint64_t nv = put_s(f->db, (const char *) "r/ctr", "1");
    assert_true(nv > 0);
    for (size_t i = 0; i < before.n; i++) {
        if (before.v[i].klen == 5 && memcmp(before.v[i].key, "r/ctr", 5) == 0)
            assert_true(nv > before.v[i].version);
    }
    kvs_free(&before);
    kvs_free(&after);
}

static void
test_node_lock(void **state)
{
    fx *f = *state;
    proc_node_opts o;
    proc_node_opts_default(&o);
    o.dir = f->dir;
    o.id = "n1b";
    o.data_dir = proc_node_data_dir(f->node);
    o.key_file = f->keys.node_file;
    o.ready_timeout_ms = 30000;
    proc_node *second = NULL;
    assert_int_equal(proc_node_open(&o, &second), SHOAL_OK);
    assert_int_equal(proc_node_launch(second), SHOAL_EUNAVAILABLE);
    int code = proc_node_exit_code(second);
    printf("# second shoald on the same data dir: exit %d\n", code);
    assert_true(code != 0);
    /* It says why: the data dir is locked by (in use by) the first. */
    assert_true(proc_node_log_contains(second, "lock") ||
                proc_node_log_contains(second, "in use by another shoald"));
    proc_node_free(second);
    /* The first one still serves. */
    put_s(f->db, "still", "here");
    check_value(f->db, "still", "here", 0);
}

typedef struct ledger_ent {
    char key[24];
    uint64_t version;
} ledger_ent;

typedef struct inflight {
    shoal *db;
    pthread_mutex_t mu;
    ledger_ent *acked;
    size_t n_acked, cap;
    _Atomic bool stop;
    _Atomic uint64_t next;
    _Atomic int outstanding;
    shoal_op ops[64];
    char keys[64][24];
} inflight;

static void inflight_done(shoal_op *op, void *arg);

static void
inflight_submit(inflight *w, size_t slot)
{
    uint64_t seq = atomic_fetch_add(&w->next, 1);
    shoal_op *op = &w->ops[slot];
    memset(op, 0, sizeof(*op));
    snprintf(w->keys[slot], sizeof(w->keys[slot]), "t/%08" PRIu64, seq);
    op->kind = SHOAL_OP_PUT;
    op->key = w->keys[slot];
    op->klen = strlen(w->keys[slot]);
    op->val = w->keys[slot];
    op->vlen = op->klen;
    op->call.timeout_ms = 3000;
    atomic_fetch_add(&w->outstanding, 1);
    if (shoal_submit(w->db, op, inflight_done, w) != SHOAL_OK)
        atomic_fetch_sub(&w->outstanding, 1);
}

static void
inflight_done(shoal_op *op, void *arg)
{
    inflight *w = arg;
    size_t slot = (size_t) (op - w->ops);
    if (op->status == SHOAL_OK) {
        pthread_mutex_lock(&w->mu);
        if (w->n_acked < w->cap) {
            ledger_ent *e = &w->acked[w->n_acked++];
            memcpy(e->key, w->keys[slot], sizeof(e->key));
            e->version = op->version;
        }
        pthread_mutex_unlock(&w->mu);
    }
    atomic_fetch_sub(&w->outstanding, 1);
    if (!atomic_load(&w->stop))
        inflight_submit(w, slot);
}

static void
test_node_sigterm_inflight(void **state)
{
    fx *f = *state;
    inflight *w = calloc(1, sizeof(*w));
    assert_non_null(w);
    w->db = f->db;
    w->cap = 1u << 20;
    w->acked = calloc(w->cap, sizeof(*w->acked));
    assert_non_null(w->acked);
    pthread_mutex_init(&w->mu, NULL);
    for (size_t i = 0; i < 64; i++)
        inflight_submit(w, i);
    uint64_t deadline = proc_now_ms() + 30000;
    for (;;) {
        pthread_mutex_lock(&w->mu);
        size_t n = w->n_acked;
        pthread_mutex_unlock(&w->mu);
        if (n >= 500 || proc_now_ms() > deadline)
            break;
        proc_nap_ms(1);
    }
    int code = -1;
    assert_int_equal(proc_node_stop(f->node, STOP_MS, &code), SHOAL_OK);
    atomic_store(&w->stop, true);
    shoal_close(f->db); /* what is still in flight ends with ECLOSED */
    f->db = NULL;
    assert_int_equal(atomic_load(&w->outstanding), 0);
    printf("# SIGTERM with %d in flight: exit %d, %zu writes acknowledged\n",
           64, code, w->n_acked);
    assert_int_equal(code, 0);
    assert_true(w->n_acked >= 500);

    assert_int_equal(proc_node_launch(f->node), SHOAL_OK);
    assert_int_equal(db_open(f->node, f->keys.admin_file, &f->db), SHOAL_OK);
    for (size_t i = 0; i < w->n_acked; i++)
        check_value(f->db, w->acked[i].key, w->acked[i].key,
                    w->acked[i].version);
    pthread_mutex_destroy(&w->mu);
    free(w->acked);
    free(w);
}

static void
test_node_bad_flags(void **state)
{
    fx *f = *state;
    char dd[600];
    snprintf(dd, sizeof(dd), "%s/flags-data", f->dir);
    const char *kf = f->keys.node_file;
    const char *cases[][8] = {
        {"--bogus-flag", NULL},
        {"--data-dir", dd, "--key-file", kf, "--fsync", "sometimes", NULL},
        {"--data-dir", dd, "--key-file", kf, "--shards", "3", NULL},
        {"--data-dir", dd, "--key-file", kf, "--shards", "abc", NULL},
        {"--data-dir", dd, "--key-file", kf, "--max-key-bytes", "0", NULL},
        {"--data-dir", dd, "--key-file", kf, "--max-key-bytes", "-5", NULL},
        {"--data-dir", dd, "--key-file", kf, "--log-level", "loud", NULL},
        {"--data-dir", dd, "--key-file", kf, "--listen", "nonsense", NULL},
        {"--data-dir", dd, "--key-file", kf, "--id", "bad id!", NULL},
        {"--data-dir", dd, "--key-file", kf, "--id", NULL},
        {"--data-dir", dd, "--key-file", kf, "--insecure", "--id", "x", NULL},
        {"--data-dir", dd, "--id", "x", NULL},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const char *argv[16] = {PROC_SHOALD};
        size_t k = 1;
        for (size_t j = 0; cases[i][j] != NULL; j++)
            argv[k++] = cases[i][j];
        argv[k] = NULL;
        proc_output o;
        assert_int_equal(proc_run(argv, NULL, 0, 30000, &o), SHOAL_OK);
        printf("# shoald %s ...: exit %d: %.200s", cases[i][0], o.code, o.err);
        assert_int_equal(o.code, 2);
        assert_true(o.err_len > 0);
        proc_output_free(&o);
    }
    const char *help[] = {PROC_SHOALD, "--help", NULL};
    proc_output o;
    assert_int_equal(proc_run(help, NULL, 0, 30000, &o), SHOAL_OK);
    assert_int_equal(o.code, 0);
    assert_non_null(strstr(o.out, "--data-dir"));
    proc_output_free(&o);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_node_put_get_del, fx_up, fx_down),
        cmocka_unit_test_setup_teardown(test_node_conditions, fx_up, fx_down),
        cmocka_unit_test_setup_teardown(test_node_incr, fx_up, fx_down),
        cmocka_unit_test_setup_teardown(test_node_ttl_exists, fx_up, fx_down),
        cmocka_unit_test_setup_teardown(test_node_count_scan, fx_up, fx_down),
        cmocka_unit_test_setup_teardown(test_node_batch, fx_up, fx_down),
        cmocka_unit_test_setup_teardown(test_node_limits, fx_up, fx_down),
        cmocka_unit_test_setup_teardown(test_node_async, fx_up, fx_down),
        cmocka_unit_test_setup_teardown(test_node_permissions, fx_up, fx_down),
        cmocka_unit_test_setup_teardown(test_node_http, fx_up, fx_down),
        cmocka_unit_test_setup_teardown(test_node_shoalctl, fx_up, fx_down),
        cmocka_unit_test_setup_teardown(test_node_keygen, fx_up, fx_down),
        cmocka_unit_test_setup_teardown(test_node_example, fx_up, fx_down),
        cmocka_unit_test_setup_teardown(test_node_pause, fx_up, fx_down),
        cmocka_unit_test_setup_teardown(test_node_restart, fx_up, fx_down),
        cmocka_unit_test_setup_teardown(test_node_lock, fx_up, fx_down),
        cmocka_unit_test_setup_teardown(test_node_sigterm_inflight, fx_up,
                                        fx_down),
        cmocka_unit_test_setup_teardown(test_node_bad_flags, fx_up, fx_down),
    };
    /* SHOAL_TEST_FILTER=test_x_* runs only the matching tests. */
    const char *filter = getenv("SHOAL_TEST_FILTER");
    if (filter != NULL && filter[0] != '\0')
        cmocka_set_test_filter(filter);
    return cmocka_run_group_tests(tests, NULL, NULL);
}
