/*
 * test_store_repl.c -- the engine's replication API (store.h, DESIGN §4):
 * the on_record hook, store_apply on a follower, epochs, follower expiry,
 * WAL retention, snapshot export/import, and the restart WAL collection
 * fix. File-backed (a temp dir) and memory-only where both make sense.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "proto/bytes.h"
#include "proto/clock.h"
#include "proto/mem.h"
#include "storage/store.h"
#include "tests/support/fs_mem.h"
#include "tests/support/testutil.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define K(s) ((const uint8_t *) (s)), strlen(s)

/* ---- a record log fed by on_record ------------------------------------- */

typedef struct rec {
    uint32_t shard;
    uint32_t epoch;
    uint64_t lsn;
    uint8_t *payload;
    size_t len;
} rec;

typedef struct reclog {
    rec *v;
    size_t n, cap;
    size_t shipped; /* records already applied to the follower */
} reclog;

static void
on_record(void *arg, uint32_t shard, uint32_t epoch, uint64_t lsn,
          const uint8_t *payload, size_t len)
{
    reclog *l = arg;
    if (l->n == l->cap) {
        l->cap = l->cap ? l->cap * 2 : 256;
        l->v = realloc(l->v, l->cap * sizeof(*l->v));
        assert_non_null(l->v);
    }
    rec *r = &l->v[l->n++];
    *r = (rec){.shard = shard, .epoch = epoch, .lsn = lsn, .len = len};
    r->payload = malloc(len ? len : 1);
    assert_non_null(r->payload);
    memcpy(r->payload, payload, len);
}

static void
reclog_free(reclog *l)
{
    for (size_t i = 0; i < l->n; i++)
        free(l->v[i].payload);
    free(l->v);
    memset(l, 0, sizeof(*l));
}

/* Apply every record not yet shipped to f; each must apply. */
static void
ship(reclog *l, store *f)
{
    for (; l->shipped < l->n; l->shipped++) {
        const rec *r = &l->v[l->shipped];
        bool applied = false;
        assert_int_equal(store_apply(f, r->shard, r->epoch, r->lsn, r->payload,
                                     r->len, false, &applied),
                         SHOAL_OK);
        assert_true(applied);
    }
}

/* ---- stores ---------------------------------------------------------------
 */

#define NSH 4

static void
opts_for(store_opts *o, const char *dir, reclog *hook)
{
    store_opts_default(o);
    o->data_dir = dir;
    o->n_shards = NSH;
    o->fsync = WAL_FSYNC_NONE;
    o->segment_bytes = 256u << 10;
    o->max_value_bytes = 16u << 10;
    o->background = false;
    o->expiry_batch = 50;
    if (hook != NULL) {
        o->on_record = on_record;
        o->on_record_arg = hook;
    }
}

static store *
open_with(const char *dir, reclog *hook)
{
    store_opts o;
    opts_for(&o, dir, hook);
    store *s = NULL;
    assert_int_equal(store_open(&o, &s), SHOAL_OK);
    return s;
}

/* dir/name, or NULL (memory-only) when base is NULL. */
static const char *
sub(char *buf, size_t cap, const char *base, const char *name)
{
    if (base == NULL)
        return NULL;
    snprintf(buf, cap, "%s/%s", base, name);
    return buf;
}

static uint64_t
digest(store *s, uint32_t shard)
{
    uint64_t d = 0;
    assert_int_equal(store_digest(s, shard, &d), SHOAL_OK);
    return d;
}

static uint64_t
shard_lsn(store *s, uint32_t shard)
{
    store_shard_stats st;
    assert_int_equal(store_get_shard_stats(s, shard, &st), SHOAL_OK);
    return st.lsn;
}

static void
assert_same(store *a, store *b)
{
    for (uint32_t i = 0; i < NSH; i++) {
        assert_int_equal(digest(a, i), digest(b, i));
        assert_int_equal(shard_lsn(a, i), shard_lsn(b, i));
    }
}

/* ---- a random workload: puts (some with ttl), dels, batches, incr, expiry */

static void
random_op(store *s, uint64_t *rs)
{
    char k[32], v[128], k2[32];
    uint64_t r = tu_rand(rs);
    uint32_t sh = (uint32_t) (r % NSH);
    snprintf(k, sizeof(k), "k%02u", (unsigned) ((r >> 8) % 40));
    snprintf(k2, sizeof(k2), "k%02u", (unsigned) ((r >> 16) % 40 + 40));
    size_t vlen = (size_t) snprintf(v, sizeof(v), "v%" PRIu64, tu_rand(rs));
    store_wopts wo = {0};
    shoal_err rc;
    switch ((r >> 24) % 8) {
    case 0:
    case 1:
        rc = store_put(s, sh, K(k), (const uint8_t *) v, vlen, NULL, NULL);
        break;
    case 2: /* ttl: some expire within the test's clock steps */
        wo.ttl_ms = 1 + (r >> 32) % 300;
        rc = store_put(s, sh, K(k), (const uint8_t *) v, vlen, &wo, NULL);
        break;
    case 3:
        rc = store_del(s, sh, K(k), NULL);
        break;
    case 4:
        rc = store_incr(s, sh, K("ctr"), (int64_t) ((r >> 32) % 7) - 3, NULL,
                        NULL, NULL);
        break;
    case 5: {
        store_op ops[2] = {{.kind = STORE_OP_PUT,
                            .key = (const uint8_t *) k,
                            .klen = strlen(k),
                            .val = (const uint8_t *) v,
                            .vlen = vlen},
                           {.kind = (r >> 40) & 1 ? STORE_OP_DEL : STORE_OP_PUT,
                            .key = (const uint8_t *) k2,
                            .klen = strlen(k2),
                            .val = (const uint8_t *) v,
                            .vlen = vlen}};
        ops[0].opts.ttl_ms = (r >> 41) & 1 ? 50 : 0;
        rc = store_batch(s, sh, ops, 2, NULL, NULL);
        break;
    }
    case 6:
        tu_clock_advance(1 + (r >> 32) % 40);
        rc = SHOAL_OK;
        break;
    default:
        rc = store_expire(s, NULL);
        break;
    }
    assert_true(rc == SHOAL_OK || rc == SHOAL_ENOTFOUND);
}

static void
follower_matches_primary(const char *base)
{
    char pb[512], fb[512];
    uint64_t seed = tu_seed("store_repl follower"), rs = seed;
    reclog log = {0};
    tu_clock_fake(1700000000000ull);
    store *p = open_with(sub(pb, sizeof(pb), base, "p"), &log);
    store *f = open_with(sub(fb, sizeof(fb), base, "f"), NULL);
    for (uint32_t i = 0; i < NSH; i++)
        assert_int_equal(store_set_follower(f, i, true), SHOAL_OK);
    for (int i = 0; i < 3000; i++) {
        random_op(p, &rs);
        if (i % 97 == 0)
            ship(&log, f);
    }
    ship(&log, f);
    uint64_t n_exp = 0;
    assert_int_equal(store_expire(f, &n_exp), SHOAL_OK);
    assert_int_equal(n_exp, 0); /* followers never expire on their own */
    assert_same(p, f);
    store_stats pst, fst;
    store_get_stats(p, &pst);
    store_get_stats(f, &fst);
    assert_true(pst.expired > 0); /* the workload did expire entries */
    assert_int_equal(pst.keys, fst.keys);

    if (base != NULL) { /* both recover the same state */
        size_t total = log.n;
        store_close(p);
        store_close(f);
        reclog replay = {0};
        p = open_with(pb, &replay);
        f = open_with(fb, NULL);
        assert_same(p, f);
        /* Recovery hands on every record of the log, in order. */
        assert_int_equal(replay.n, total);
        for (size_t i = 0; i < total; i++) {
            assert_int_equal(replay.v[i].lsn, log.v[i].lsn);
            assert_int_equal(replay.v[i].len, log.v[i].len);
            assert_memory_equal(replay.v[i].payload, log.v[i].payload,
                                log.v[i].len);
        }
        reclog_free(&replay);
    }
    store_close(p);
    store_close(f);
    reclog_free(&log);
    tu_clock_real();
}

static void
test_store_repl_follower_matches_primary(void **state)
{
    follower_matches_primary(*state);
}

static void
test_store_repl_follower_matches_primary_memory(void **state)
{
    (void) state;
    follower_matches_primary(NULL);
}

/* ---- refusals ------------------------------------------------------------ */

static size_t
one_put(uint8_t *buf, const char *key, const char *val, uint64_t expire_at)
{
    wal_op op = {.kind = WAL_OP_PUT,
                 .expire_at = expire_at,
                 .key = (const uint8_t *) key,
                 .klen = (uint32_t) strlen(key),
                 .val = (const uint8_t *) val,
                 .vlen = (uint32_t) strlen(val)};
    wal_ops_encode(&op, 1, buf);
    return wal_ops_size(&op, 1);
}

static void
expect_refused(store *f, uint32_t epoch, uint64_t lsn, const uint8_t *p,
               size_t len, shoal_err want)
{
    uint64_t d = digest(f, 0), l = shard_lsn(f, 0);
    bool applied = true;
    assert_int_equal(store_apply(f, 0, epoch, lsn, p, len, false, &applied),
                     want);
    assert_false(applied);
    assert_int_equal(digest(f, 0), d);
    assert_int_equal(shard_lsn(f, 0), l);
}

static void
apply_refusals(const char *dir)
{
    uint8_t buf[256], bad[256];
    store *f = open_with(dir, NULL);
    bool applied = false;
    size_t n = one_put(buf, "a", "1", 0);
    assert_int_equal(store_apply(f, 0, 3, 1, buf, n, false, &applied),
                     SHOAL_OK);
    assert_true(applied);
    n = one_put(buf, "b", "2", 0);
    assert_int_equal(store_apply(f, 0, 3, 2, buf, n, true, &applied), SHOAL_OK);
    assert_int_equal(store_commit_wait(f, store_commit_point(f), false),
                     SHOAL_OK);
    n = one_put(buf, "c", "3", 0);
    expect_refused(f, 3, 2, buf, n, SHOAL_OK);          /* duplicate */
    expect_refused(f, 3, 1, buf, n, SHOAL_OK);          /* older dup */
    expect_refused(f, 3, 4, buf, n, SHOAL_EVERSION);    /* gap */
    expect_refused(f, 2, 3, buf, n, SHOAL_EWRONGSHARD); /* old epoch */
    assert_int_equal(store_set_shard_epoch(f, 0, 5), SHOAL_OK);
    expect_refused(f, 4, 3, buf, n, SHOAL_EWRONGSHARD);
    /* Hostile payloads: every truncation, trailing bytes, a lying count,
     * a bad kind, an empty or oversized key, an oversized value. */
    for (size_t cut = 0; cut < n; cut++)
        expect_refused(f, 5, 3, buf, cut, SHOAL_ECORRUPT);
    memcpy(bad, buf, n);
    bad[n] = 0;
    expect_refused(f, 5, 3, bad, n + 1, SHOAL_ECORRUPT);
    put_u32(bad, 2);
    expect_refused(f, 5, 3, bad, n, SHOAL_ECORRUPT);
    memcpy(bad, buf, n);
    bad[4] = 9;
    expect_refused(f, 5, 3, bad, n, SHOAL_ECORRUPT);
    wal_op op = {.kind = WAL_OP_PUT, .key = (const uint8_t *) "", .klen = 0};
    wal_ops_encode(&op, 1, bad);
    expect_refused(f, 5, 3, bad, wal_ops_size(&op, 1), SHOAL_ECORRUPT);
    static uint8_t big[(16u << 10) + 1];
    memset(big, 'x', sizeof(big));
    uint8_t *huge = malloc(sizeof(big) + 64);
    assert_non_null(huge);
    op = (wal_op){.kind = WAL_OP_PUT, .key = big, .klen = 1025};
    wal_ops_encode(&op, 1, huge);
    expect_refused(f, 5, 3, huge, wal_ops_size(&op, 1), SHOAL_ECORRUPT);
    op = (wal_op){.kind = WAL_OP_PUT,
                  .key = big,
                  .klen = 1,
                  .val = big,
                  .vlen = sizeof(big)};
    wal_ops_encode(&op, 1, huge);
    expect_refused(f, 5, 3, huge, wal_ops_size(&op, 1), SHOAL_ECORRUPT);
    free(huge);
    expect_refused(f, 5, 3, NULL, 0, SHOAL_EINVAL);
    assert_int_equal(store_apply(f, NSH, 5, 3, buf, n, false, NULL),
                     SHOAL_EINVAL);

    /* A higher epoch is adopted and carried by later records. */
    assert_int_equal(store_apply(f, 0, 7, 3, buf, n, false, &applied),
                     SHOAL_OK);
    assert_true(applied);
    store_shard_stats st;
    assert_int_equal(store_get_shard_stats(f, 0, &st), SHOAL_OK);
    assert_int_equal(st.epoch, 7);
    assert_int_equal(st.lsn, 3);
    uint64_t d = digest(f, 0);
    if (dir != NULL) {
        store_close(f);
        f = open_with(dir, NULL);
        assert_int_equal(digest(f, 0), d);
        assert_int_equal(store_get_shard_stats(f, 0, &st), SHOAL_OK);
        assert_int_equal(st.epoch, 7);
    }
    store_close(f);
}

static void
test_store_repl_apply_refusals(void **state)
{
    apply_refusals(*state);
}

static void
test_store_repl_apply_refusals_memory(void **state)
{
    (void) state;
    apply_refusals(NULL);
}

static void
test_store_repl_follower_expiry_off(void **state)
{
    uint8_t buf[64];
    tu_clock_fake(1000000);
    store *f = open_with(*state, NULL);
    assert_int_equal(store_set_follower(f, 0, true), SHOAL_OK);
    size_t n = one_put(buf, "t", "v", clock_now_ms() + 10);
    assert_int_equal(store_apply(f, 0, 1, 1, buf, n, false, NULL), SHOAL_OK);
    tu_clock_advance(20);
    uint64_t n_exp = 9;
    assert_int_equal(store_expire(f, &n_exp), SHOAL_OK);
    assert_int_equal(n_exp, 0);
    store_shard_stats st;
    assert_int_equal(store_get_shard_stats(f, 0, &st), SHOAL_OK);
    assert_int_equal(st.keys, 1);
    assert_int_equal(st.lsn, 1);
    /* Reads hide it all the same. */
    assert_int_equal(store_get(f, 0, K("t"), NULL, NULL), SHOAL_ENOTFOUND);
    /* Promoted to primary: expiry deletes it through the WAL. */
    assert_int_equal(store_set_follower(f, 0, false), SHOAL_OK);
    assert_int_equal(store_expire(f, &n_exp), SHOAL_OK);
    assert_int_equal(n_exp, 1);
    assert_int_equal(store_get_shard_stats(f, 0, &st), SHOAL_OK);
    assert_int_equal(st.keys, 0);
    assert_int_equal(st.lsn, 2);
    store_close(f);
    tu_clock_real();
}

/* ---- export / import ----------------------------------------------------- */

typedef struct image {
    uint8_t *p;
    size_t len;
    size_t chunks;
} image;

static shoal_err
collect_cb(void *arg, const uint8_t *data, size_t len)
{
    image *im = arg;
    assert_true(len > 0 && len <= (1u << 20));
    im->p = realloc(im->p, im->len + len);
    assert_non_null(im->p);
    memcpy(im->p + im->len, data, len);
    im->len += len;
    im->chunks++;
    return SHOAL_OK;
}

static shoal_err
import_bytes(store *s, uint32_t shard, const uint8_t *p, size_t len,
             size_t step, uint64_t *lsn_out)
{
    store_import *im = NULL;
    shoal_err rc = store_import_begin(s, shard, 0, &im);
    if (rc != SHOAL_OK)
        return rc;
    for (size_t off = 0; off < len; off += step) {
        size_t n = len - off < step ? len - off : step;
        if ((rc = store_import_write(im, p + off, n)) != SHOAL_OK) {
            store_import_abort(im);
            return rc;
        }
    }
    return store_import_finish(im, lsn_out);
}

static void
fill_random(store *s, uint32_t shard, int n, size_t vlen, uint64_t *rs)
{
    uint8_t v[16u << 10];
    char k[32];
    assert_true(vlen <= sizeof(v));
    for (int i = 0; i < n; i++) {
        for (size_t j = 0; j < vlen; j += 8) {
            uint64_t x = tu_rand(rs);
            memcpy(v + j, &x, vlen - j < 8 ? vlen - j : 8);
        }
        snprintf(k, sizeof(k), "big%05d", i);
        assert_int_equal(store_put(s, shard, K(k), v, vlen, NULL, NULL),
                         SHOAL_OK);
    }
}

static void
export_import_roundtrip(const char *base)
{
    char pb[512], fb[512];
    uint64_t seed = tu_seed("store_repl export"), rs = seed;
    reclog log = {0};
    tu_clock_fake(1700000000000ull);
    store *p = open_with(sub(pb, sizeof(pb), base, "p"), &log);
    store *f = open_with(sub(fb, sizeof(fb), base, "f"), NULL);
    /* The follower's shard has an unrelated older history: its WAL records
     * must be skipped after the import jumps the LSN forward. */
    for (int i = 0; i < 5; i++)
        assert_int_equal(store_put(f, 1, K("old"), K("x"), NULL, NULL),
                         SHOAL_OK);
    fill_random(p, 1, 200, 16000, &rs); /* ~3 MiB incompressible */
    assert_int_equal(store_incr(p, 1, K("n"), 5, NULL, NULL, NULL), SHOAL_OK);

    image img = {0};
    uint64_t lsn = 0, got = 0;
    uint32_t epoch = 9;
    assert_int_equal(
        store_snapshot_export(p, 1, collect_cb, &img, &lsn, &epoch), SHOAL_OK);
    assert_true(img.chunks >= 3);
    assert_int_equal(lsn, 201);
    assert_int_equal(epoch, 0);
    assert_int_equal(import_bytes(f, 1, img.p, img.len, 100000, &got),
                     SHOAL_OK);
    assert_int_equal(got, lsn);
    assert_int_equal(digest(f, 1), digest(p, 1));
    assert_int_equal(shard_lsn(f, 1), lsn);
    store_shard_stats st;
    assert_int_equal(store_get_shard_stats(f, 1, &st), SHOAL_OK);
    assert_int_equal(st.snap_lsn, lsn);
    assert_int_equal(st.keys, 201);

    /* Later records follow the import. */
    log.shipped = log.n;
    for (int i = 0; i < 50; i++)
        random_op(p, &rs);
    assert_int_equal(store_put(p, 1, K("after"), K("y"), NULL, NULL), SHOAL_OK);
    for (size_t i = log.shipped; i < log.n; i++)
        if (log.v[i].shard == 1) {
            bool applied = false;
            const rec *r = &log.v[i];
            assert_int_equal(store_apply(f, 1, r->epoch, r->lsn, r->payload,
                                         r->len, false, &applied),
                             SHOAL_OK);
            assert_true(applied);
        }
    uint64_t d = digest(p, 1);
    assert_int_equal(digest(f, 1), d);

    /* An import when the shard is already past the image is refused. */
    assert_int_equal(import_bytes(f, 1, img.p, img.len, 1u << 20, NULL),
                     SHOAL_EVERSION);
    assert_int_equal(digest(f, 1), d);

    if (base != NULL) {
        store_close(f);
        f = open_with(fb, NULL);
        assert_int_equal(digest(f, 1), d);
        assert_int_equal(shard_lsn(f, 1), shard_lsn(p, 1));
        store_close(f);
        f = open_with(fb, NULL); /* and again, after a clean reopen */
        assert_int_equal(digest(f, 1), d);
    }
    free(img.p);
    store_close(p);
    store_close(f);
    reclog_free(&log);
    tu_clock_real();
}

static void
test_store_repl_export_import_roundtrip(void **state)
{
    export_import_roundtrip(*state);
}

static void
test_store_repl_export_import_roundtrip_memory(void **state)
{
    (void) state;
    export_import_roundtrip(NULL);
}

static void
test_store_repl_import_refuses_damage(void **state)
{
    const char *dir = *state;
    char pb[512], fb[512];
    store *p = open_with(sub(pb, sizeof(pb), dir, "p"), NULL);
    store *f = open_with(sub(fb, sizeof(fb), dir, "f"), NULL);
    assert_int_equal(store_put(p, 2, K("a"), K("1"), NULL, NULL), SHOAL_OK);
    assert_int_equal(store_put(p, 2, K("b"), K("22"), NULL, NULL), SHOAL_OK);
    assert_int_equal(store_put(f, 2, K("mine"), K("z"), NULL, NULL), SHOAL_OK);
    image img = {0};
    assert_int_equal(store_snapshot_export(p, 2, collect_cb, &img, NULL, NULL),
                     SHOAL_OK);
    assert_int_equal(img.chunks, 1);
    uint64_t d = digest(f, 2), l = shard_lsn(f, 2);
    int files = tu_count_files(fb, "snap-");
    uint8_t *bad = malloc(img.len);
    assert_non_null(bad);
    for (size_t i = 0; i < img.len; i++) {
        memcpy(bad, img.p, img.len);
        bad[i] ^= (uint8_t) (1u << (i % 8));
        assert_int_equal(import_bytes(f, 2, bad, img.len, 7, NULL),
                         SHOAL_ECORRUPT);
    }
    for (size_t cut = 0; cut < img.len; cut++)
        assert_int_equal(import_bytes(f, 2, img.p, cut, 1u << 20, NULL),
                         SHOAL_ECORRUPT);
    /* Another shard's image, and one over the size limit. */
    assert_int_equal(import_bytes(f, 3, img.p, img.len, 1u << 20, NULL),
                     SHOAL_ECORRUPT);
    store_import *im = NULL;
    assert_int_equal(store_import_begin(f, 2, img.len - 1, &im), SHOAL_OK);
    assert_int_equal(store_import_write(im, img.p, img.len), SHOAL_ETOOLARGE);
    assert_int_equal(store_import_finish(im, NULL), SHOAL_ETOOLARGE);
    assert_int_equal(store_import_begin(f, NSH, 0, &im), SHOAL_EINVAL);
    assert_null(im);
    assert_int_equal(digest(f, 2), d);
    assert_int_equal(shard_lsn(f, 2), l);
    assert_int_equal(digest(f, 3), digest(p, 3));
    assert_int_equal(tu_count_files(fb, "snap-"), files);
    /* The undamaged image still installs (the shard's LSN 1 < 2). */
    assert_int_equal(import_bytes(f, 2, img.p, img.len, 3, NULL), SHOAL_OK);
    assert_int_equal(digest(f, 2), digest(p, 2));
    free(bad);
    free(img.p);
    store_close(p);
    store_close(f);
}

/* An I/O failure at any step of the install leaves the shard as it was;
 * once the failures stop the same image installs and survives a restart. */
static void
test_store_repl_import_io_errors(void **state)
{
    (void) state;
    fs_mem *m = NULL;
    assert_int_equal(fs_mem_open(&m), SHOAL_OK);
    store_opts o;
    opts_for(&o, "/data", NULL);
    o.fs = fs_mem_fs(m);
    store *p = open_with(NULL, NULL), *f = NULL;
    assert_int_equal(store_open(&o, &f), SHOAL_OK);
    for (int i = 0; i < 20; i++)
        assert_int_equal(store_incr(p, 0, K("n"), i, NULL, NULL, NULL),
                         SHOAL_OK);
    assert_int_equal(store_put(f, 0, K("mine"), K("z"), NULL, NULL), SHOAL_OK);
    image img = {0};
    assert_int_equal(store_snapshot_export(p, 0, collect_cb, &img, NULL, NULL),
                     SHOAL_OK);
    uint64_t d = digest(f, 0);
    shoal_err rc = SHOAL_EIO;
    uint64_t k;
    for (k = 1; k < 100 && rc != SHOAL_OK; k++) {
        fs_mem_fail(m, FS_OP_WRITES, k, SHOAL_EIO, false, false);
        rc = import_bytes(f, 0, img.p, img.len, 1000, NULL);
        fs_mem_fail_clear(m);
        if (rc == SHOAL_OK)
            break;
        assert_int_equal(rc, SHOAL_EIO);
        assert_int_equal(digest(f, 0), d);
        assert_int_equal(shard_lsn(f, 0), 1);
    }
    assert_int_equal(rc, SHOAL_OK);
    assert_true(k > 3); /* open, write, fsync, rename, dir fsync all failed */
    d = digest(p, 0);
    assert_int_equal(digest(f, 0), d);
    store_close(f);
    assert_int_equal(store_open(&o, &f), SHOAL_OK);
    assert_int_equal(digest(f, 0), d);
    assert_int_equal(shard_lsn(f, 0), 20);
    free(img.p);
    store_close(p);
    store_close(f);
    fs_mem_close(m);
}

/* ---- WAL retention and collection --------------------------------------- */

static void
write_kib(store *s, uint32_t shard, size_t kib)
{
    uint8_t v[1000];
    char k[32];
    memset(v, 'r', sizeof(v));
    for (size_t i = 0; i < kib; i++) {
        snprintf(k, sizeof(k), "r%05zu", i % 500);
        assert_int_equal(store_put(s, shard, K(k), v, sizeof(v), NULL, NULL),
                         SHOAL_OK);
    }
}

static void
test_store_repl_retain_keeps_segments(void **state)
{
    const char *dir = *state;
    store_opts o;
    opts_for(&o, dir, NULL);
    o.wal_retain_bytes = 64u << 20;
    store *s = NULL;
    assert_int_equal(store_open(&o, &s), SHOAL_OK);
    write_kib(s, 0, 1200); /* ~1.2 MiB: several 256 KiB segments */
    int before = tu_count_files(dir, "wal-");
    assert_true(before >= 4);
    assert_int_equal(store_set_retain_lsn(s, 0, 10), SHOAL_OK);
    assert_int_equal(store_snapshot_all(s), SHOAL_OK);
    /* Nothing deleted (the writer may have added a spare meanwhile). */
    assert_true(tu_count_files(dir, "wal-") >= before);
    /* The follower caught up: the segments go. */
    assert_int_equal(store_set_retain_lsn(s, 0, UINT64_MAX), SHOAL_OK);
    assert_int_equal(store_snapshot_all(s), SHOAL_OK);
    int after = tu_count_files(dir, "wal-");
    assert_true(after < before && after <= 2);
    store_close(s);

    /* Past wal_retain_bytes retention gives way. */
    o.wal_retain_bytes = 512u << 10;
    assert_int_equal(store_open(&o, &s), SHOAL_OK);
    assert_int_equal(store_set_retain_lsn(s, 0, 10), SHOAL_OK);
    write_kib(s, 0, 1200);
    before = tu_count_files(dir, "wal-");
    assert_true(before >= 4);
    assert_int_equal(store_snapshot_all(s), SHOAL_OK);
    after = tu_count_files(dir, "wal-");
    assert_true(after <= 2);
    uint64_t d = digest(s, 0);
    store_close(s);
    assert_int_equal(store_open(&o, &s), SHOAL_OK);
    assert_int_equal(digest(s, 0), d);
    store_close(s);
}

/* Bug: every open starts a fresh segment and only WAL bytes written since
 * open counted toward snapshot_wal_bytes, so a node restarted more often
 * than it wrote that much never collected its WAL. */
static void
test_store_repl_restarts_still_collect_wal(void **state)
{
    const char *dir = *state;
    store_opts o;
    opts_for(&o, dir, NULL);
    o.expiry_interval_ms = 5;
    o.snapshot_wal_bytes = 300u << 10;
    store *s = NULL;
    /* Short runs, each writing less than snapshot_wal_bytes (no background
     * thread here, so no round can run in them whatever the timing). */
    for (int i = 0; i < 5; i++) {
        assert_int_equal(store_open(&o, &s), SHOAL_OK);
        write_kib(s, (uint32_t) i % NSH, 100);
        store_close(s);
    }
    int before = tu_count_files(dir, "wal-");
    assert_true(before >= 5);
    /* The WAL replayed at this open passes the threshold: a round runs. */
    o.background = true;
    assert_int_equal(store_open(&o, &s), SHOAL_OK);
    store_stats st;
    for (int t = 0; t < 500; t++) { /* up to 5 s */
        store_get_stats(s, &st);
        if (st.snapshots > 0 && tu_count_files(dir, "wal-") <= 2)
            break;
        struct timespec ts = {0, 10 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    assert_true(st.snapshots > 0);
    assert_true(tu_count_files(dir, "wal-") <= 2);
    store_close(s);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(
            test_store_repl_follower_matches_primary, tu_tmpdir_up,
            tu_tmpdir_down),
        cmocka_unit_test(test_store_repl_follower_matches_primary_memory),
        cmocka_unit_test_setup_teardown(test_store_repl_apply_refusals,
                                        tu_tmpdir_up, tu_tmpdir_down),
        cmocka_unit_test(test_store_repl_apply_refusals_memory),
        cmocka_unit_test_setup_teardown(test_store_repl_follower_expiry_off,
                                        tu_tmpdir_up, tu_tmpdir_down),
        cmocka_unit_test_setup_teardown(test_store_repl_export_import_roundtrip,
                                        tu_tmpdir_up, tu_tmpdir_down),
        cmocka_unit_test(test_store_repl_export_import_roundtrip_memory),
        cmocka_unit_test_setup_teardown(test_store_repl_import_refuses_damage,
                                        tu_tmpdir_up, tu_tmpdir_down),
        cmocka_unit_test(test_store_repl_import_io_errors),
        cmocka_unit_test_setup_teardown(test_store_repl_retain_keeps_segments,
                                        tu_tmpdir_up, tu_tmpdir_down),
        cmocka_unit_test_setup_teardown(
            test_store_repl_restarts_still_collect_wal, tu_tmpdir_up,
            tu_tmpdir_down),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
