/*
 * test_store.c -- the engine's operations, limits, TTL, persistence,
 * snapshots and WAL collection, on real files (fs_posix) and in
 * memory-only mode.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "proto/mem.h"
#include "storage/store.h"
#include "tests/support/fs_mem.h"
#include "tests/support/testutil.h"
#include "tests/support/workload.h"

#include <semaphore.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define K(s) ((const uint8_t *) (s)), strlen(s)

/* Durability itself is proven in tests/fault; here fsync=none keeps the
 * suite fast (close still syncs, so reopen sees everything). */
static store *
open_store_policy(const char *dir, uint32_t shards, wal_fsync policy)
{
    store_opts o;
    store_opts_default(&o);
    o.data_dir = dir;
    o.n_shards = shards;
    o.fsync = policy;
    o.segment_bytes = 1u << 20;
    o.max_value_bytes = 64u << 10;
    o.background = false;
    store *s = NULL;
    assert_int_equal(store_open(&o, &s), SHOAL_OK);
    return s;
}

static store *
open_store(const char *dir, uint32_t shards)
{
    return open_store_policy(dir, shards, WAL_FSYNC_NONE);
}

typedef struct got {
    char val[4096];
    size_t vlen;
    uint64_t version;
    uint64_t expire_at;
} got;

static shoal_err
copy_cb(void *arg, const store_item *it)
{
    got *g = arg;
    assert_true(it->vlen < sizeof(g->val));
    memcpy(g->val, it->val, it->vlen);
    g->val[it->vlen] = '\0';
    g->vlen = it->vlen;
    g->version = it->version;
    g->expire_at = it->expire_at;
    return SHOAL_OK;
}

static shoal_err
get_str(store *s, uint32_t sh, const char *key, got *g)
{
    memset(g, 0, sizeof(*g));
    return store_get(s, sh, K(key), copy_cb, g);
}

static void
put_str(store *s, uint32_t sh, const char *key, const char *val)
{
    assert_int_equal(store_put(s, sh, K(key), K(val), NULL, NULL), SHOAL_OK);
}

static uint64_t
digest_all(store *s, uint32_t shards)
{
    uint64_t acc = 0;
    for (uint32_t i = 0; i < shards; i++) {
        uint64_t d;
        assert_int_equal(store_digest(s, i, &d), SHOAL_OK);
        acc = acc * 31 + d;
    }
    return acc;
}

static void
test_store_put_get_versions(void **state)
{
    store *s = open_store_policy(*state, 4, WAL_FSYNC_ALWAYS);
    got g;
    uint64_t v1, v2;
    assert_int_equal(get_str(s, 1, "a", &g), SHOAL_ENOTFOUND);
    assert_int_equal(store_put(s, 1, K("a"), K("one"), NULL, &v1), SHOAL_OK);
    assert_int_equal(store_put(s, 1, K("a"), K("two"), NULL, &v2), SHOAL_OK);
    assert_true(v2 > v1);
    assert_int_equal(get_str(s, 1, "a", &g), SHOAL_OK);
    assert_string_equal(g.val, "two");
    assert_int_equal(g.version, v2);
    /* Shards are separate key spaces. */
    assert_int_equal(get_str(s, 2, "a", &g), SHOAL_ENOTFOUND);
    /* Empty values and binary keys. */
    const uint8_t bk[] = {0, 1, 0, 255};
    assert_int_equal(store_put(s, 0, bk, sizeof(bk), NULL, 0, NULL, NULL),
                     SHOAL_OK);
    got e;
    assert_int_equal(store_get(s, 0, bk, sizeof(bk), copy_cb, &e), SHOAL_OK);
    assert_int_equal(e.vlen, 0);
    store_close(s);
}

static void
test_store_conditions(void **state)
{
    store *s = open_store(*state, 2);
    uint64_t v;
    store_wopts absent = {.if_absent = true};
    assert_int_equal(store_put(s, 0, K("k"), K("x"), &absent, &v), SHOAL_OK);
    assert_int_equal(store_put(s, 0, K("k"), K("y"), &absent, NULL),
                     SHOAL_EEXISTS);
    store_wopts ver = {.has_if_version = true, .if_version = v + 100};
    assert_int_equal(store_put(s, 0, K("k"), K("y"), &ver, NULL),
                     SHOAL_EVERSION);
    ver.if_version = v;
    assert_int_equal(store_put(s, 0, K("k"), K("y"), &ver, &v), SHOAL_OK);
    /* Version 0 means "absent". */
    store_wopts zero = {.has_if_version = true, .if_version = 0};
    assert_int_equal(store_put(s, 0, K("new"), K("1"), &zero, NULL), SHOAL_OK);
    assert_int_equal(store_put(s, 0, K("new"), K("2"), &zero, NULL),
                     SHOAL_EVERSION);
    /* Conditional delete. */
    ver.if_version = v + 1;
    assert_int_equal(store_del(s, 0, K("k"), &ver), SHOAL_EVERSION);
    ver.if_version = v;
    assert_int_equal(store_del(s, 0, K("k"), &ver), SHOAL_OK);
    assert_int_equal(store_del(s, 0, K("k"), NULL), SHOAL_ENOTFOUND);
    got g;
    assert_string_equal((get_str(s, 0, "new", &g), g.val), "1");
    store_close(s);
}

static void
test_store_incr(void **state)
{
    store *s = open_store(*state, 1);
    int64_t r;
    assert_int_equal(store_incr(s, 0, K("n"), 5, NULL, &r, NULL), SHOAL_OK);
    assert_int_equal(r, 5);
    assert_int_equal(store_incr(s, 0, K("n"), -7, NULL, &r, NULL), SHOAL_OK);
    assert_int_equal(r, -2);
    got g;
    get_str(s, 0, "n", &g);
    assert_string_equal(g.val, "-2");
    put_str(s, 0, "txt", "hello");
    assert_int_equal(store_incr(s, 0, K("txt"), 1, NULL, &r, NULL),
                     SHOAL_ENOTNUM);
    put_str(s, 0, "big", "9223372036854775807");
    assert_int_equal(store_incr(s, 0, K("big"), 1, NULL, &r, NULL),
                     SHOAL_EOVERFLOW);
    put_str(s, 0, "sp", " 1");
    assert_int_equal(store_incr(s, 0, K("sp"), 1, NULL, &r, NULL),
                     SHOAL_ENOTNUM);
    get_str(s, 0, "big", &g);
    assert_string_equal(g.val, "9223372036854775807");
    store_close(s);
}

static void
test_store_ttl_and_expiry(void **state)
{
    tu_clock_fake(1000000);
    store *s = open_store(*state, 2);
    store_wopts t = {.ttl_ms = 500};
    assert_int_equal(store_put(s, 1, K("tmp"), K("v"), &t, NULL), SHOAL_OK);
    put_str(s, 1, "perm", "v");
    int64_t ttl;
    assert_int_equal(store_ttl(s, 1, K("tmp"), &ttl, NULL), SHOAL_OK);
    assert_int_equal(ttl, 500);
    assert_int_equal(store_ttl(s, 1, K("perm"), &ttl, NULL), SHOAL_OK);
    assert_int_equal(ttl, -1);
    /* incr keeps the expiry. */
    assert_int_equal(store_put(s, 1, K("ctr"), K("1"), &t, NULL), SHOAL_OK);
    assert_int_equal(store_incr(s, 1, K("ctr"), 1, NULL, NULL, NULL), SHOAL_OK);
    assert_int_equal(store_ttl(s, 1, K("ctr"), &ttl, NULL), SHOAL_OK);
    assert_int_equal(ttl, 500);

    tu_clock_advance(500);
    got g;
    assert_int_equal(get_str(s, 1, "tmp", &g), SHOAL_ENOTFOUND);
    assert_int_equal(store_ttl(s, 1, K("tmp"), &ttl, NULL), SHOAL_ENOTFOUND);
    uint64_t n;
    assert_int_equal(store_count(s, 1, NULL, 0, &n), SHOAL_OK);
    assert_int_equal(n, 1);
    /* An expired key counts as absent for conditions. */
    store_wopts absent = {.if_absent = true};
    assert_int_equal(store_put(s, 1, K("ctr"), K("0"), &absent, NULL),
                     SHOAL_OK);

    /* Active expiry removes it through the WAL: gone after reopen even with
     * the real clock far in the past. */
    assert_int_equal(store_expire(s, &n), SHOAL_OK);
    assert_int_equal(n, 1);
    store_shard_stats st;
    assert_int_equal(store_get_shard_stats(s, 1, &st), SHOAL_OK);
    assert_int_equal(st.keys, 2);
    store_close(s);
    tu_clock_fake(5);
    s = open_store(*state, 2);
    assert_int_equal(get_str(s, 1, "tmp", &g), SHOAL_ENOTFOUND);
    assert_int_equal(get_str(s, 1, "perm", &g), SHOAL_OK);
    store_close(s);
    tu_clock_real();
}

static void
test_store_batch(void **state)
{
    store *s = open_store(*state, 1);
    put_str(s, 0, "x", "old");
    store_op ops[3] = {
        {.kind = STORE_OP_PUT, .key = K("a"), .val = K("1")},
        {.kind = STORE_OP_PUT, .key = K("b"), .val = K("2")},
        {.kind = STORE_OP_DEL, .key = K("x")},
    };
    shoal_err res[3];
    uint64_t v;
    assert_int_equal(store_batch(s, 0, ops, 3, res, &v), SHOAL_OK);
    got g;
    assert_int_equal(get_str(s, 0, "a", &g), SHOAL_OK);
    assert_int_equal(g.version, v);
    assert_int_equal(get_str(s, 0, "b", &g), SHOAL_OK);
    assert_int_equal(g.version, v);
    assert_int_equal(get_str(s, 0, "x", &g), SHOAL_ENOTFOUND);

    /* A failed condition applies nothing. */
    uint64_t before = digest_all(s, 1);
    store_op bad[2] = {
        {.kind = STORE_OP_PUT, .key = K("c"), .val = K("3")},
        {.kind = STORE_OP_PUT,
         .key = K("a"),
         .val = K("9"),
         .opts = {.if_absent = true}},
    };
    assert_int_equal(store_batch(s, 0, bad, 2, res, NULL), SHOAL_EEXISTS);
    assert_int_equal(res[0], SHOAL_OK);
    assert_int_equal(res[1], SHOAL_EEXISTS);
    assert_int_equal(digest_all(s, 1), before);
    /* Duplicate keys and empty batches are rejected. */
    store_op dup[2] = {
        {.kind = STORE_OP_PUT, .key = K("d"), .val = K("1")},
        {.kind = STORE_OP_DEL, .key = K("d")},
    };
    assert_int_equal(store_batch(s, 0, dup, 2, NULL, NULL), SHOAL_EINVAL);
    assert_int_equal(store_batch(s, 0, dup, 0, NULL, NULL), SHOAL_EINVAL);
    assert_int_equal(digest_all(s, 1), before);
    store_close(s);
}

typedef struct keys_seen {
    char keys[256][16];
    int n;
} keys_seen;

static shoal_err
collect_cb(void *arg, const store_item *it)
{
    keys_seen *ks = arg;
    assert_true(ks->n < 256 && it->klen < 16);
    memcpy(ks->keys[ks->n], it->key, it->klen);
    ks->keys[ks->n][it->klen] = '\0';
    ks->n++;
    return SHOAL_OK;
}

static void
test_store_scan_and_count(void **state)
{
    store *s = open_store(*state, 1);
    char k[16];
    for (int i = 99; i >= 0; i--) {
        snprintf(k, sizeof(k), "%s%02d", i % 2 ? "odd/" : "even/", i);
        put_str(s, 0, k, "v");
    }
    put_str(s, 0, "even", "prefix-itself");
    put_str(s, 0, "evem", "before");
    put_str(s, 0, "evenz", "after-prefix-range");

    uint64_t n;
    assert_int_equal(store_count(s, 0, K("even/"), &n), SHOAL_OK);
    assert_int_equal(n, 50);
    assert_int_equal(store_count(s, 0, NULL, 0, &n), SHOAL_OK);
    assert_int_equal(n, 103);

    /* Paginate the prefix 7 at a time with exclusive continuation. */
    keys_seen all = {0};
    store_range r = {.prefix = K("odd/")};
    bool more = true;
    char last[16] = "";
    while (more) {
        keys_seen page = {0};
        assert_int_equal(store_scan(s, 0, &r, 7, collect_cb, &page, &more),
                         SHOAL_OK);
        for (int i = 0; i < page.n; i++)
            memcpy(all.keys[all.n++], page.keys[i], 16);
        if (page.n > 0) {
            memcpy(last, page.keys[page.n - 1], 16);
            r.start = (const uint8_t *) last;
            r.start_len = strlen(last);
            r.start_exclusive = true;
        }
    }
    assert_int_equal(all.n, 50);
    for (int i = 1; i < all.n; i++)
        assert_true(strcmp(all.keys[i - 1], all.keys[i]) < 0);
    assert_string_equal(all.keys[0], "odd/01");
    assert_string_equal(all.keys[49], "odd/99");

    /* Range [even/10, even/20). */
    keys_seen rg = {0};
    store_range r2 = {.start = K("even/10"), .end = K("even/20")};
    assert_int_equal(store_scan(s, 0, &r2, 0, collect_cb, &rg, &more),
                     SHOAL_OK);
    assert_int_equal(rg.n, 5);
    assert_false(more);
    assert_string_equal(rg.keys[0], "even/10");
    assert_string_equal(rg.keys[4], "even/18");
    store_close(s);
}

static void
test_store_bad_input_changes_nothing(void **state)
{
    store *s = open_store(*state, 4);
    put_str(s, 0, "k", "v");
    uint64_t before = digest_all(s, 4);
    char *big = calloc(1, (64u << 10) + 1);
    char longkey[1100];
    memset(longkey, 'k', sizeof(longkey));
    assert_non_null(big);
    got g;
    assert_int_equal(
        store_put(s, 0, (const uint8_t *) "", 0, K("v"), NULL, NULL),
        SHOAL_EINVAL);
    assert_int_equal(store_put(s, 0, NULL, 3, K("v"), NULL, NULL),
                     SHOAL_EINVAL);
    assert_int_equal(
        store_put(s, 0, (const uint8_t *) longkey, 1025, K("v"), NULL, NULL),
        SHOAL_ETOOLARGE);
    assert_int_equal(store_put(s, 0, K("k"), (const uint8_t *) big,
                               (64u << 10) + 1, NULL, NULL),
                     SHOAL_ETOOLARGE);
    assert_int_equal(store_put(s, 0, K("k"), NULL, 5, NULL, NULL),
                     SHOAL_EINVAL);
    assert_int_equal(store_put(s, 4, K("k"), K("v"), NULL, NULL), SHOAL_EINVAL);
    assert_int_equal(store_put(s, UINT32_MAX, K("k"), K("v"), NULL, NULL),
                     SHOAL_EINVAL);
    assert_int_equal(store_get(s, 9, K("k"), copy_cb, &g), SHOAL_EINVAL);
    assert_int_equal(store_get(s, 0, (const uint8_t *) "", 0, copy_cb, &g),
                     SHOAL_EINVAL);
    assert_int_equal(store_del(s, 0, (const uint8_t *) longkey, 1025, NULL),
                     SHOAL_ETOOLARGE);
    assert_int_equal(store_incr(s, 7, K("k"), 1, NULL, NULL, NULL),
                     SHOAL_EINVAL);
    assert_int_equal(store_count(s, 0, NULL, 3, NULL), SHOAL_EINVAL);
    store_range bad = {.start = NULL, .start_len = 4};
    assert_int_equal(store_scan(s, 0, &bad, 0, NULL, NULL, NULL), SHOAL_EINVAL);
    store_op op = {.kind = 99, .key = K("k")};
    assert_int_equal(store_batch(s, 0, &op, 1, NULL, NULL), SHOAL_EINVAL);
    assert_int_equal(digest_all(s, 4), before);
    free(big);
    store_close(s);

    /* Bad options never open. */
    store_opts o;
    store_opts_default(&o);
    o.n_shards = 0;
    store *s2 = (store *) 1;
    assert_int_equal(store_open(&o, &s2), SHOAL_EINVAL);
    assert_null(s2);
    store_opts_default(&o);
    o.max_key_bytes = 70000;
    assert_int_equal(store_open(&o, &s2), SHOAL_EINVAL);
}

static void
load(store *s, uint32_t shards, int n, const char *tag)
{
    char k[32], v[64];
    for (int i = 0; i < n; i++) {
        snprintf(k, sizeof(k), "key-%06d", i);
        snprintf(v, sizeof(v), "%s-%d", tag, i);
        put_str(s, (uint32_t) i % shards, k, v);
    }
}

static void
test_store_reopen_replays_wal(void **state)
{
    store *s = open_store(*state, 8);
    load(s, 8, 3000, "a");
    for (int i = 0; i < 3000; i += 3) {
        char k[32];
        snprintf(k, sizeof(k), "key-%06d", i);
        assert_int_equal(store_del(s, (uint32_t) i % 8, K(k), NULL), SHOAL_OK);
    }
    uint64_t d = digest_all(s, 8);
    store_close(s);
    s = open_store(*state, 8);
    assert_int_equal(digest_all(s, 8), d);
    store_stats st;
    store_get_stats(s, &st);
    assert_int_equal(st.keys, 2000);
    assert_int_equal(st.recovered_records, 4000);
    store_close(s);
}

static void
test_store_snapshot_then_wal_and_gc(void **state)
{
    const char *dir = *state;
    store *s = open_store(dir, 4);
    load(s, 4, 20000, "first"); /* ~1.3 MB of WAL: several 1 MiB segments */
    int segs_before = tu_count_files(dir, "wal-");
    assert_true(segs_before >= 2);
    assert_int_equal(store_snapshot_all(s), SHOAL_OK);
    assert_int_equal(tu_count_files(dir, "snap-"), 4);
    /* Everything up to here is in snapshots: only the live segment stays. */
    assert_true(tu_count_files(dir, "wal-") < segs_before);
    load(s, 4, 5000, "second");
    uint64_t d = digest_all(s, 4);
    store_shard_stats ss;
    assert_int_equal(store_get_shard_stats(s, 0, &ss), SHOAL_OK);
    assert_true(ss.snap_lsn > 0 && ss.lsn > ss.snap_lsn);
    store_close(s);

    s = open_store(dir, 4);
    assert_int_equal(digest_all(s, 4), d);
    store_stats st;
    store_get_stats(s, &st);
    assert_int_equal(st.recovered_records, 5000);
    /* Two more snapshot rounds: the last K=2 are kept. */
    load(s, 4, 100, "third");
    assert_int_equal(store_snapshot_all(s), SHOAL_OK);
    load(s, 4, 100, "fourth");
    assert_int_equal(store_snapshot_all(s), SHOAL_OK);
    assert_int_equal(tu_count_files(dir, "snap-"), 8);
    d = digest_all(s, 4);
    store_close(s);
    s = open_store(dir, 4);
    assert_int_equal(digest_all(s, 4), d);
    store_close(s);
}

static void
test_store_memory_only(void **state)
{
    (void) state;
    store_opts o;
    store_opts_default(&o);
    o.n_shards = 2;
    o.background = false;
    store *s;
    assert_int_equal(store_open(&o, &s), SHOAL_OK);
    load(s, 2, 1000, "m");
    got g;
    assert_int_equal(get_str(s, 1, "key-000001", &g), SHOAL_OK);
    assert_string_equal(g.val, "m-1");
    assert_int_equal(store_snapshot(s, 0), SHOAL_EINVAL);
    store_stats st;
    store_get_stats(s, &st);
    assert_int_equal(st.keys, 1000);
    assert_int_equal(st.wal_records, 0);
    store_close(s);
}

static void
test_store_enomem_loop_changes_nothing(void **state)
{
    store *s = open_store(*state, 2);
    load(s, 2, 200, "base");
    for (long n = 1; n < 100; n++) {
        uint64_t before = digest_all(s, 2);
        char k[32];
        snprintf(k, sizeof(k), "new-%ld", n);
        store_op ops[2] = {
            {.kind = STORE_OP_PUT, .key = K(k), .val = K("v")},
            {.kind = STORE_OP_DEL, .key = K("key-000003")},
        };
        mem_fail_set(n, 0);
        shoal_err rc = store_batch(s, 1, ops, 2, NULL, NULL);
        mem_fail_set(0, 0);
        if (rc == SHOAL_OK)
            break;
        assert_int_equal(rc, SHOAL_ENOMEM);
        assert_int_equal(digest_all(s, 2), before);
    }
    got g;
    assert_int_equal(get_str(s, 1, "key-000003", &g), SHOAL_ENOTFOUND);
    store_close(s);
}

/* The only snapshot of a shard is damaged after every WAL record of that
 * shard was collected: the open must refuse (SHOAL_ECORRUPT), not come up
 * with the shard silently empty. */
static void
test_store_damaged_only_snapshot_refuses_open(void **state)
{
    const char *dir = *state;
    store *s = open_store(dir, 2);
    for (int i = 0; i < 50; i++) {
        char k[16];
        snprintf(k, sizeof(k), "zero-%d", i);
        put_str(s, 0, k, "v");
    }
    assert_int_equal(store_snapshot_all(s), SHOAL_OK);
    /* Shard 1 alone fills segments until shard 0's records are in finished
     * segments only; the next round collects them. */
    for (int i = 0; i < 30000; i++) {
        char k[16];
        snprintf(k, sizeof(k), "one-%d", i);
        put_str(s, 1, k, "value-of-shard-one");
    }
    assert_int_equal(store_snapshot_all(s), SHOAL_OK);
    store_close(s);
    char p[600];
    snprintf(p, sizeof(p), "%s/snap-0000-%016llx.snap", dir, 50ull);
    FILE *f = fopen(p, "r+b");
    assert_non_null(f);
    fseek(f, 60, SEEK_SET);
    fputc(0x5a, f);
    fclose(f);
    store_opts o;
    store_opts_default(&o);
    o.data_dir = dir;
    o.n_shards = 2;
    o.segment_bytes = 1u << 20;
    o.max_value_bytes = 64u << 10;
    o.background = false;
    store *r = (store *) 1;
    assert_int_equal(store_open(&o, &r), SHOAL_ECORRUPT);
    assert_null(r);
}

/* store_snapshot_now runs the round on the background thread and waits. */
static void
test_store_snapshot_now_on_background_thread(void **state)
{
    const char *dir = *state;
    store_opts o;
    store_opts_default(&o);
    o.data_dir = dir;
    o.n_shards = 4;
    o.fsync = WAL_FSYNC_NONE;
    o.background = true;
    store *s = NULL;
    assert_int_equal(store_open(&o, &s), SHOAL_OK);
    load(s, 4, 1000, "bg");
    assert_int_equal(store_snapshot_now(s), SHOAL_OK);
    assert_int_equal(tu_count_files(dir, "snap-"), 4);
    store_stats st;
    store_get_stats(s, &st);
    assert_int_equal(st.snapshots, 4);
    /* Nothing changed since: a second round writes nothing new. */
    assert_int_equal(store_snapshot_now(s), SHOAL_OK);
    store_get_stats(s, &st);
    assert_int_equal(st.snapshots, 4);
    uint64_t d = digest_all(s, 4);
    store_close(s);
    assert_int_equal(store_open(&o, &s), SHOAL_OK);
    assert_int_equal(digest_all(s, 4), d);
    store_get_stats(s, &st);
    assert_int_equal(st.recovered_records, 0);
    store_close(s);
}

/* ---- deferred commit (store_wopts.no_wait + store_commit_*) ---- */

typedef struct commit_seen {
    sem_t done;
    shoal_err rc;
    int calls;
} commit_seen;

static void
commit_seen_cb(void *arg, shoal_err rc)
{
    commit_seen *c = arg;
    c->rc = rc;
    c->calls++;
    sem_post(&c->done);
}

static shoal_err
commit_seen_wait(commit_seen *c)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += 10;
    assert_int_equal(sem_timedwait(&c->done, &ts), 0);
    return c->rc;
}

/* A no_wait write is applied (visible, versioned) at once; its commit is
 * reported by store_commit_notify once the WAL covers the commit point. */
static void
test_store_deferred_commit_notify(void **state)
{
    store_opts o;
    store_opts_default(&o);
    o.data_dir = *state;
    o.n_shards = 2;
    o.fsync = WAL_FSYNC_INTERVAL;
    o.fsync_interval_ms = 60000; /* only an explicit durable wait syncs */
    o.background = false;
    store *s = NULL;
    assert_int_equal(store_open(&o, &s), SHOAL_OK);
    assert_int_equal(store_commit_point(s), 0);

    store_wopts w = {.no_wait = true, .durable = true};
    uint64_t v1 = 0, v2 = 0;
    assert_int_equal(store_put(s, 0, K("a"), K("1"), &w, &v1), SHOAL_OK);
    assert_int_equal(store_put(s, 1, K("b"), K("2"), &w, &v2), SHOAL_OK);
    assert_int_equal(v1, 1);
    assert_int_equal(v2, 1);
    uint64_t point = store_commit_point(s);
    assert_true(point > 0);

    store_stats before;
    store_get_stats(s, &before);
    commit_seen c = {.calls = 0};
    sem_init(&c.done, 0, 0);
    assert_int_equal(store_commit_notify(s, point, true, commit_seen_cb, &c),
                     SHOAL_OK);
    assert_int_equal(commit_seen_wait(&c), SHOAL_OK);
    assert_int_equal(c.calls, 1);
    store_stats after;
    store_get_stats(s, &after);
    assert_true(after.wal_fsyncs > before.wal_fsyncs);

    /* Already committed: the callback runs before notify returns. */
    assert_int_equal(store_commit_notify(s, point, true, commit_seen_cb, &c),
                     SHOAL_OK);
    assert_int_equal(c.calls, 2);
    assert_int_equal(store_commit_wait(s, point, true), SHOAL_OK);
    sem_destroy(&c.done);
    store_close(s);

    /* Both writes survive a reopen. */
    assert_int_equal(store_open(&o, &s), SHOAL_OK);
    got g;
    assert_int_equal(store_get(s, 1, K("b"), copy_cb, &g), SHOAL_OK);
    assert_string_equal(g.val, "2");
    store_close(s);
}

/* Memory-only: nothing to wait for, the callback runs in the caller. */
static void
test_store_deferred_commit_memory_only(void **state)
{
    (void) state;
    store *s = open_store(NULL, 1);
    store_wopts w = {.no_wait = true};
    assert_int_equal(store_put(s, 0, K("k"), K("v"), &w, NULL), SHOAL_OK);
    assert_int_equal(store_commit_point(s), 0);
    commit_seen c = {.calls = 0};
    sem_init(&c.done, 0, 0);
    assert_int_equal(store_commit_notify(s, 0, true, commit_seen_cb, &c),
                     SHOAL_OK);
    assert_int_equal(c.calls, 1);
    assert_int_equal(c.rc, SHOAL_OK);
    sem_destroy(&c.done);
    store_close(s);
}

/* A failed fsync under a deferred commit reports SHOAL_EIO to the callback
 * and leaves the engine read-only: no later write is acknowledged. */
static void
test_store_deferred_commit_fsync_failure(void **state)
{
    (void) state;
    fs_mem *m = NULL;
    assert_int_equal(fs_mem_open(&m), SHOAL_OK);
    store_opts o;
    wl_store_opts(&o, fs_mem_fs(m), 1, 64u << 10, 4096);
    store *s = NULL;
    assert_int_equal(store_open(&o, &s), SHOAL_OK);
    fs_mem_fail(m, FS_OP_FSYNC, 1, SHOAL_EIO, true, false);
    store_wopts w = {.no_wait = true};
    assert_int_equal(store_put(s, 0, K("k"), K("v"), &w, NULL), SHOAL_OK);
    commit_seen c = {.calls = 0};
    sem_init(&c.done, 0, 0);
    assert_int_equal(store_commit_notify(s, store_commit_point(s), false,
                                         commit_seen_cb, &c),
                     SHOAL_OK);
    assert_int_equal(commit_seen_wait(&c), SHOAL_EIO);
    assert_int_equal(store_put(s, 0, K("k2"), K("v"), NULL, NULL),
                     SHOAL_EREADONLY);
    store_stats st;
    store_get_stats(s, &st);
    assert_true(st.read_only);
    sem_destroy(&c.done);
    store_close(s);
    fs_mem_close(m);
}

/* A ttl so large that now + ttl wraps must not make the key expire at
 * once (it saturates to "the end of time"). */
static void
test_store_huge_ttl_does_not_wrap(void **state)
{
    (void) state;
    store *s = open_store(NULL, 1);
    store_wopts w = {.ttl_ms = UINT64_MAX - 5};
    assert_int_equal(store_put(s, 0, K("k"), K("v"), &w, NULL), SHOAL_OK);
    got g;
    assert_int_equal(store_get(s, 0, K("k"), copy_cb, &g), SHOAL_OK);
    assert_int_equal(g.expire_at, UINT64_MAX);
    store_close(s);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_store_deferred_commit_notify,
                                        tu_tmpdir_up, tu_tmpdir_down),
        cmocka_unit_test(test_store_deferred_commit_memory_only),
        cmocka_unit_test(test_store_huge_ttl_does_not_wrap),
        cmocka_unit_test(test_store_deferred_commit_fsync_failure),
        cmocka_unit_test_setup_teardown(test_store_put_get_versions,
                                        tu_tmpdir_up, tu_tmpdir_down),
        cmocka_unit_test_setup_teardown(test_store_conditions, tu_tmpdir_up,
                                        tu_tmpdir_down),
        cmocka_unit_test_setup_teardown(test_store_incr, tu_tmpdir_up,
                                        tu_tmpdir_down),
        cmocka_unit_test_setup_teardown(test_store_ttl_and_expiry, tu_tmpdir_up,
                                        tu_tmpdir_down),
        cmocka_unit_test_setup_teardown(test_store_batch, tu_tmpdir_up,
                                        tu_tmpdir_down),
        cmocka_unit_test_setup_teardown(test_store_scan_and_count, tu_tmpdir_up,
                                        tu_tmpdir_down),
        cmocka_unit_test_setup_teardown(test_store_bad_input_changes_nothing,
                                        tu_tmpdir_up, tu_tmpdir_down),
        cmocka_unit_test_setup_teardown(test_store_reopen_replays_wal,
                                        tu_tmpdir_up, tu_tmpdir_down),
        cmocka_unit_test_setup_teardown(test_store_snapshot_then_wal_and_gc,
                                        tu_tmpdir_up, tu_tmpdir_down),
        cmocka_unit_test(test_store_memory_only),
        cmocka_unit_test_setup_teardown(
            test_store_snapshot_now_on_background_thread, tu_tmpdir_up,
            tu_tmpdir_down),
        cmocka_unit_test_setup_teardown(
            test_store_damaged_only_snapshot_refuses_open, tu_tmpdir_up,
            tu_tmpdir_down),
        cmocka_unit_test_setup_teardown(test_store_enomem_loop_changes_nothing,
                                        tu_tmpdir_up, tu_tmpdir_down),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
