/*
 * test_concurrency_store.c -- many threads writing, reading and scanning one
 * engine while snapshot rounds and active expiry run (TSan in CI).
 *
 * Writers own disjoint keys and write increasing sequence numbers into
 * them, plus a shared counter via incr. Readers check that each key's
 * sequence never goes backwards between their own reads and that every
 * value is intact (self-checking bytes); scanners check sorted order and
 * value integrity. At the end: the counter equals the number of increments,
 * and after a reopen every shard's digest equals the one before closing.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "storage/store.h"
#include "tests/support/testutil.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define N_SHARDS  8
#define N_WRITERS 4
#define N_READERS 2
#define KEYS_PER  64

/* cmocka's asserts longjmp into the test's frame: not from other threads.
 * Worker threads report and abort instead. */
#define CHECK(e)                                                             \
    do {                                                                     \
        if (!(e)) {                                                          \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, \
                    #e);                                                     \
            abort();                                                         \
        }                                                                    \
    } while (0)
#define CHECK_EQ(a, b) CHECK((a) == (b))

typedef struct ctx {
    store *s;
    int ops_per_writer;
    _Atomic int writers_left;
    _Atomic long incrs;
    _Atomic long reads, scans, snaps;
} ctx;

typedef struct targ {
    ctx *c;
    int id;
} targ;

static uint32_t
shard_of(int w, int k)
{
    return (uint32_t) (w * KEYS_PER + k) % N_SHARDS;
}

/* Value: "seq:<n>:" then filler bytes derived from n; checkable alone. */
static size_t
make_val(char *buf, size_t cap, long seq)
{
    int n = snprintf(buf, cap, "seq:%ld:", seq);
    size_t len = (size_t) n + (size_t) (seq % 200);
    for (size_t i = (size_t) n; i < len; i++)
        buf[i] = (char) ('a' + (seq + (long) i) % 26);
    return len;
}

static long
check_val(const uint8_t *v, size_t len)
{
    char buf[512];
    if (len >= sizeof(buf) || len < 5 || memcmp(v, "seq:", 4) != 0)
        return -1;
    memcpy(buf, v, len);
    buf[len] = '\0';
    long seq = strtol(buf + 4, NULL, 10);
    char want[512];
    size_t wl = make_val(want, sizeof(want), seq);
    return wl == len && memcmp(want, buf, len) == 0 ? seq : -1;
}

static void *
writer(void *arg)
{
    targ *t = arg;
    char key[32], val[512];
    for (int i = 0; i < t->c->ops_per_writer; i++) {
        int k = i % KEYS_PER;
        snprintf(key, sizeof(key), "w%d-k%02d", t->id, k);
        size_t vl = make_val(val, sizeof(val), i);
        store_wopts o = {.ttl_ms = (i % 17 == 0) ? 60000 : 0};
        CHECK_EQ(store_put(t->c->s, shard_of(t->id, k), (const uint8_t *) key,
                           strlen(key), (const uint8_t *) val, vl, &o, NULL),
                 SHOAL_OK);
        if (i % 10 == 0) {
            CHECK_EQ(store_incr(t->c->s, 0, (const uint8_t *) "ctr", 3, 1, NULL,
                                NULL, NULL),
                     SHOAL_OK);
            atomic_fetch_add(&t->c->incrs, 1);
        }
    }
    atomic_fetch_sub(&t->c->writers_left, 1);
    return NULL;
}

typedef struct seen {
    long seq;
} seen;

static shoal_err
read_cb(void *arg, const store_item *it)
{
    seen *s = arg;
    s->seq = check_val(it->val, it->vlen);
    return SHOAL_OK;
}

static void *
reader(void *arg)
{
    targ *t = arg;
    long last[N_WRITERS][KEYS_PER];
    memset(last, 0xff, sizeof(last));
    uint64_t rs = (uint64_t) t->id * 7919u + 1;
    char key[32];
    while (atomic_load(&t->c->writers_left) > 0) {
        int w = (int) (tu_rand(&rs) % N_WRITERS);
        int k = (int) (tu_rand(&rs) % KEYS_PER);
        snprintf(key, sizeof(key), "w%d-k%02d", w, k);
        seen s = {-2};
        shoal_err rc = store_get(t->c->s, shard_of(w, k), (const uint8_t *) key,
                                 strlen(key), read_cb, &s);
        if (rc == SHOAL_ENOTFOUND) {
            CHECK(last[w][k] < 0); /* never disappears once seen */
            continue;
        }
        CHECK_EQ(rc, SHOAL_OK);
        CHECK(s.seq >= 0);          /* intact */
        CHECK(s.seq >= last[w][k]); /* never backwards */
        last[w][k] = s.seq;
        atomic_fetch_add(&t->c->reads, 1);
    }
    return NULL;
}

typedef struct scan_state {
    char prev[64];
    size_t prev_len;
    long n;
} scan_state;

static shoal_err
scan_cb(void *arg, const store_item *it)
{
    scan_state *st = arg;
    if (st->prev_len > 0) {
        size_t m = st->prev_len < it->klen ? st->prev_len : it->klen;
        int c = memcmp(st->prev, it->key, m);
        CHECK(c < 0 || (c == 0 && st->prev_len < it->klen));
    }
    CHECK(it->klen < sizeof(st->prev));
    memcpy(st->prev, it->key, it->klen);
    st->prev_len = it->klen;
    if (it->klen > 3 && it->key[0] == 'w')
        CHECK(check_val(it->val, it->vlen) >= 0);
    st->n++;
    return SHOAL_OK;
}

static void *
scanner(void *arg)
{
    targ *t = arg;
    while (atomic_load(&t->c->writers_left) > 0) {
        for (uint32_t sh = 0; sh < N_SHARDS; sh++) {
            scan_state st = {{0}, 0, 0};
            CHECK_EQ(store_scan(t->c->s, sh, NULL, 0, scan_cb, &st, NULL),
                     SHOAL_OK);
        }
        atomic_fetch_add(&t->c->scans, 1);
    }
    return NULL;
}

static void *
snapshotter(void *arg)
{
    targ *t = arg;
    while (atomic_load(&t->c->writers_left) > 0) {
        CHECK_EQ(store_snapshot_all(t->c->s), SHOAL_OK);
        atomic_fetch_add(&t->c->snaps, 1);
    }
    return NULL;
}

static store *
open_store(const char *dir)
{
    store_opts o;
    store_opts_default(&o);
    o.data_dir = dir;
    o.n_shards = N_SHARDS;
    o.fsync = WAL_FSYNC_INTERVAL;
    o.fsync_interval_ms = 5;
    o.segment_bytes = 256u << 10;
    o.max_value_bytes = 4096;
    o.expiry_interval_ms = 5;
    o.background = true;
    store *s = NULL;
    assert_int_equal(store_open(&o, &s), SHOAL_OK);
    return s;
}

static void
test_concurrency_writers_readers_scanners_snapshots(void **state)
{
    ctx c;
    memset(&c, 0, sizeof(c));
    c.s = open_store(*state);
    c.ops_per_writer = tu_long() ? 50000 : 4000;
    atomic_store(&c.writers_left, N_WRITERS);
    pthread_t th[N_WRITERS + N_READERS + 2];
    targ ta[N_WRITERS + N_READERS + 2];
    int n = 0;
    for (int i = 0; i < N_WRITERS; i++, n++) {
        ta[n] = (targ){&c, i};
        assert_int_equal(pthread_create(&th[n], NULL, writer, &ta[n]), 0);
    }
    for (int i = 0; i < N_READERS; i++, n++) {
        ta[n] = (targ){&c, i};
        assert_int_equal(pthread_create(&th[n], NULL, reader, &ta[n]), 0);
    }
    ta[n] = (targ){&c, 0};
    assert_int_equal(pthread_create(&th[n], NULL, scanner, &ta[n]), 0);
    n++;
    ta[n] = (targ){&c, 0};
    assert_int_equal(pthread_create(&th[n], NULL, snapshotter, &ta[n]), 0);
    n++;
    for (int i = 0; i < n; i++)
        pthread_join(th[i], NULL);

    int64_t ctr = 0;
    assert_int_equal(
        store_incr(c.s, 0, (const uint8_t *) "ctr", 3, 0, NULL, &ctr, NULL),
        SHOAL_OK);
    assert_int_equal(ctr, atomic_load(&c.incrs));
    printf("# reads %ld, scan rounds %ld, snapshot rounds %ld\n",
           atomic_load(&c.reads), atomic_load(&c.scans), atomic_load(&c.snaps));
    assert_true(atomic_load(&c.snaps) > 0);

    uint64_t d[N_SHARDS];
    for (uint32_t i = 0; i < N_SHARDS; i++)
        assert_int_equal(store_digest(c.s, i, &d[i]), SHOAL_OK);
    store_close(c.s);
    store *s = open_store(*state);
    for (uint32_t i = 0; i < N_SHARDS; i++) {
        uint64_t x;
        assert_int_equal(store_digest(s, i, &x), SHOAL_OK);
        assert_int_equal(x, d[i]);
    }
    store_close(s);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(
            test_concurrency_writers_readers_scanners_snapshots, tu_tmpdir_up,
            tu_tmpdir_down),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
