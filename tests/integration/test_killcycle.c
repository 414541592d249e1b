/*
 * test_killcycle.c -- SIGKILL a real shoald (fsync=always) at random moments
 * under write load and check that every acknowledged write survives
 * (TESTING.md G2 for one node; issue #3 §5).
 *
 * A cycle: start shoald on the data dir, open libshoal, keep a random
 * window (1..64) of asynchronous puts in flight, each of a unique key
 * "kc/<cycle>/<seq>" whose value is a function of the key and the seed;
 * once a random number of them (1..cap) has been acknowledged, SIGKILL the
 * node while the rest are still in flight. Close the handle (what was in
 * flight ends with an error: not acknowledged), restart on the same data
 * dir, and scan every "kc/" key: every acknowledged write must be there
 * with its value and version; a key that was never acknowledged may be
 * there too (its write reached the WAL before the kill), but only with its
 * own value, never garbage.
 *
 * Snapshots are taken every 64 KiB of WAL and every 100 ms, so recovery
 * runs from snapshots plus WAL tails, not only from the log, and old WAL
 * segments are deleted (each start opens a new 64 MiB segment).
 *
 * Default: 20 cycles; SHOAL_TEST_LONG=1: 300. The seed is printed and
 * SHOAL_SEED replays it (the kill moments depend on timing, so a replay
 * repeats the workload, not the exact interleaving).
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

#include <cmocka.h>

#define MAX_WINDOW 64
#define KEY_BYTES  24
#define VAL_BYTES  48
#define CALL_MS    5000

typedef struct ack {
    char key[KEY_BYTES];
    uint64_t version;
} ack;

/* The ledger: every acknowledged write, sorted by key (= by cycle, then
 * sequence, as keys are zero-padded). */
typedef struct ledger {
    ack *v;
    size_t n, cap;
} ledger;

typedef struct writer {
    shoal *db;
    uint64_t seed;
    unsigned cycle;
    pthread_mutex_t mu; /* guards cycle_acks */
    ledger cycle_acks;  /* this cycle's acks, in ack order */
    _Atomic bool stop;
    _Atomic uint64_t next_seq;
    _Atomic size_t n_acked;
    _Atomic int outstanding;
    shoal_op ops[MAX_WINDOW];
    char keys[MAX_WINDOW][KEY_BYTES];
    char vals[MAX_WINDOW][VAL_BYTES];
} writer;

static void
value_of(uint64_t seed, const char *key, char out[VAL_BYTES])
{
    uint64_t h = seed ^ 0x9e3779b97f4a7c15ull;
    for (const char *p = key; *p != '\0'; p++)
        h = (h ^ (uint8_t) *p) * 0x100000001b3ull;
    char v[VAL_BYTES]; /* not straight into out: gcc -O2 -Wrestrict */
    snprintf(v, sizeof(v), "%s=%016" PRIx64, key, h);
    memcpy(out, v, sizeof(v));
}

static void
ledger_add(ledger *l, const char *key, uint64_t version)
{
    if (l->n == l->cap) {
        l->cap = l->cap ? l->cap * 2 : 4096;
        l->v = realloc(l->v, l->cap * sizeof(*l->v));
        SH_ASSERT(l->v != NULL);
    }
    memcpy(l->v[l->n].key, key, KEY_BYTES);
    l->v[l->n++].version = version;
}

static int
ack_cmp(const void *a, const void *b)
{
    return strcmp(((const ack *) a)->key, ((const ack *) b)->key);
}

static void writer_done(shoal_op *op, void *arg);

static void
writer_submit(writer *w, size_t slot)
{
    uint64_t seq = atomic_fetch_add(&w->next_seq, 1);
    shoal_op *op = &w->ops[slot];
    memset(op, 0, sizeof(*op));
    snprintf(w->keys[slot], KEY_BYTES, "kc/%05u/%09" PRIu64, w->cycle, seq);
    value_of(w->seed, w->keys[slot], w->vals[slot]);
    op->kind = SHOAL_OP_PUT;
    op->key = w->keys[slot];
    op->klen = strlen(w->keys[slot]);
    op->val = w->vals[slot];
    op->vlen = strlen(w->vals[slot]);
    op->call.timeout_ms = CALL_MS;
    atomic_fetch_add(&w->outstanding, 1);
    if (shoal_submit(w->db, op, writer_done, w) != SHOAL_OK)
        atomic_fetch_sub(&w->outstanding, 1);
}

static void
writer_done(shoal_op *op, void *arg)
{
    writer *w = arg;
    size_t slot = (size_t) (op - w->ops);
    if (op->status == SHOAL_OK) {
        pthread_mutex_lock(&w->mu);
        ledger_add(&w->cycle_acks, w->keys[slot], op->version);
        pthread_mutex_unlock(&w->mu);
        atomic_fetch_add(&w->n_acked, 1);
    }
    atomic_fetch_sub(&w->outstanding, 1);
    if (!atomic_load(&w->stop))
        writer_submit(w, slot);
}

typedef struct kc {
    char *dir;
    proc_keys keys;
    proc_node *node;
    writer *w;
    ledger all; /* sorted */
    uint64_t seed, rng;
    uint64_t unacked_present;
} kc;

static shoal_err
kc_open_db(kc *k, shoal **out)
{
    shoal_opts o;
    shoal_opts_default(&o);
    const char *seeds[] = {proc_node_url(k->node)};
    o.seeds = seeds;
    o.n_seeds = 1;
    o.key_file = k->keys.write_file;
    o.timeout_ms = CALL_MS;
    o.connect_timeout_ms = 30000;
    return shoal_open(&o, out);
}

/* One scanned item against the ledger at *i. */
static void
verify_item(kc *k, const shoal_item *it, size_t *i)
{
    char key[KEY_BYTES + 1], want[VAL_BYTES];
    assert_true(it->klen < KEY_BYTES);
    memcpy(key, it->key, it->klen);
    key[it->klen] = '\0';
    if (*i < k->all.n && strcmp(k->all.v[*i].key, key) < 0)
        fail_msg("acknowledged write lost: %s (version %" PRIu64 ")",
                 k->all.v[*i].key, k->all.v[*i].version);
    value_of(k->seed, key, want);
    if (it->vlen != strlen(want) || memcmp(it->val, want, it->vlen) != 0)
        fail_msg("garbage under %s: %.*s", key, (int) it->vlen,
                 (const char *) it->val);
    if (*i < k->all.n && strcmp(k->all.v[*i].key, key) == 0) {
        if (it->version != k->all.v[*i].version)
            fail_msg("%s: version %" PRIu64 ", acknowledged %" PRIu64, key,
                     it->version, k->all.v[*i].version);
        (*i)++;
    } else {
        k->unacked_present++;
    }
}

/* Scan every "kc/" key and check the ledger against it. */
static void
verify_all(kc *k, shoal *db)
{
    shoal_scan_req r;
    memset(&r, 0, sizeof(r));
    r.prefix = "kc/";
    r.plen = 3;
    r.limit = 10000;
    char token[KEY_BYTES];
    size_t i = 0;
    k->unacked_present = 0;
    for (;;) {
        shoal_scan_page *p = NULL;
        assert_int_equal(shoal_scan(db, &r, &p, NULL), SHOAL_OK);
        for (size_t j = 0; j < p->n_items; j++)
            verify_item(k, &p->items[j], &i);
        bool more = p->more;
        if (more) {
            assert_true(p->token_len <= sizeof(token));
            memcpy(token, p->token, p->token_len);
            r.token = token;
            r.token_len = p->token_len;
        }
        shoal_scan_page_free(p);
        if (!more)
            break;
    }
    if (i < k->all.n)
        fail_msg("acknowledged write lost: %s (version %" PRIu64 ")",
                 k->all.v[i].key, k->all.v[i].version);
}

/* Load until `target` acks, then SIGKILL with writes in flight. */
static void
cycle_load(kc *k, shoal *db, unsigned cycle, size_t window, size_t target)
{
    writer *w = k->w;
    w->db = db;
    w->cycle = cycle;
    w->cycle_acks.n = 0;
    atomic_store(&w->stop, false);
    atomic_store(&w->n_acked, 0);
    atomic_store(&w->next_seq, 0);
    for (size_t s = 0; s < window; s++)
        writer_submit(w, s);
    uint64_t deadline = proc_now_ms() + 30000;
    while (atomic_load(&w->n_acked) < target && proc_now_ms() < deadline)
        proc_nap_ms(1);
    assert_int_equal(proc_node_kill(k->node), SHOAL_OK);
    atomic_store(&w->stop, true);
    shoal_close(db); /* in flight: ends with an error, not acknowledged */
    assert_int_equal(atomic_load(&w->outstanding), 0);
    assert_true(atomic_load(&w->n_acked) >= target);
}

/* Append this cycle's acks (sorted) to the ledger. */
static void
ledger_merge(kc *k)
{
    ledger *c = &k->w->cycle_acks;
    qsort(c->v, c->n, sizeof(*c->v), ack_cmp);
    for (size_t i = 0; i < c->n; i++)
        ledger_add(&k->all, c->v[i].key, c->v[i].version);
}

/* Let a snapshot round finish and delete the WAL segments it covers:
 * kills every second would otherwise interrupt every round, and each start
 * adds a 64 MiB segment. Bounded wait; the count must come down. */
static void
settle_wal(kc *k)
{
    const char *dd = proc_node_data_dir(k->node);
    int before = tu_count_files(dd, "wal-"), now = before;
    uint64_t t0 = proc_now_ms();
    while (now > 2 && proc_now_ms() - t0 < 120000) {
        proc_nap_ms(50);
        now = tu_count_files(dd, "wal-");
    }
    printf("# WAL segments %d -> %d in %" PRIu64 " ms (snapshot round)\n",
           before, now, proc_now_ms() - t0);
    assert_true(now <= 2);
}

static void
run_cycle(kc *k, unsigned cycle, size_t cap)
{
    shoal *db = NULL;
    assert_int_equal(proc_node_launch(k->node), SHOAL_OK);
    assert_int_equal(kc_open_db(k, &db), SHOAL_OK);
    if (cycle > 0)
        verify_all(k, db); /* after the previous kill */
    if (cycle % 10 == 9)
        settle_wal(k);
    size_t window = 1 + (size_t) (tu_rand(&k->rng) % MAX_WINDOW);
    size_t target = 1 + (size_t) (tu_rand(&k->rng) % cap);
    cycle_load(k, db, cycle, window, target);
    ledger_merge(k);
    if (cycle % 10 != 0)
        return;
    printf("# cycle %u: window %zu, %zu acked this cycle, %zu in the ledger, "
           "%" PRIu64 " unacknowledged writes found durable, %d WAL segments\n",
           cycle, window, k->w->cycle_acks.n, k->all.n, k->unacked_present,
           tu_count_files(proc_node_data_dir(k->node), "wal-"));
    fflush(stdout); /* progress of a long run, also when piped */
}

static void
test_killcycle(void **state)
{
    kc *k = *state;
    unsigned cycles = tu_long() ? 300 : 20;
    size_t cap = tu_long() ? 1000 : 2000;
    k->seed = tu_seed("killcycle");
    k->rng = k->seed;
    k->w->seed = k->seed;
    uint64_t t0 = proc_now_ms();
    for (unsigned c = 0; c < cycles; c++)
        run_cycle(k, c, cap);
    /* The last kill: restart once more and check everything. */
    shoal *db = NULL;
    assert_int_equal(proc_node_launch(k->node), SHOAL_OK);
    assert_int_equal(kc_open_db(k, &db), SHOAL_OK);
    verify_all(k, db);
    shoal_close(db);
    int code = -1;
    assert_int_equal(proc_node_stop(k->node, 30000, &code), SHOAL_OK);
    assert_int_equal(code, 0);
    printf("# killcycle: seed %" PRIu64 ", %u SIGKILL cycles (%s profile) in "
           "%" PRIu64 " ms, %zu acknowledged writes checked after every "
           "restart, 0 lost; %" PRIu64 " unacknowledged writes durable\n",
           k->seed, cycles, tu_long() ? "long" : "default", proc_now_ms() - t0,
           k->all.n, k->unacked_present);
}

static int
kc_up(void **state)
{
    kc *k = calloc(1, sizeof(*k));
    void *dir = NULL;
    if (k == NULL || tu_tmpdir_up(&dir) != 0)
        return -1;
    k->dir = dir;
    *state = k;
    k->w = calloc(1, sizeof(*k->w));
    if (k->w == NULL || proc_keys_make(k->dir, &k->keys) != SHOAL_OK)
        return -1;
    pthread_mutex_init(&k->w->mu, NULL);
    const char *extra[] = {"--snapshot-wal-bytes", "64k",
                           "--snapshot-interval-ms", "100", NULL};
    proc_node_opts o;
    proc_node_opts_default(&o);
    o.dir = k->dir;
    o.key_file = k->keys.node_file;
    o.fsync = "always";
    o.extra_args = extra;
    return proc_node_open(&o, &k->node) == SHOAL_OK ? 0 : -1;
}

static int
kc_down(void **state)
{
    kc *k = *state;
    if (k == NULL)
        return 0;
    proc_node_free(k->node);
    proc_reap_all();
    if (k->w != NULL) {
        pthread_mutex_destroy(&k->w->mu);
        free(k->w->cycle_acks.v);
        free(k->w);
    }
    free(k->all.v);
    proc_keys_wipe(&k->keys);
    void *dir = k->dir;
    tu_tmpdir_down(&dir);
    free(k);
    return 0;
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_killcycle, kc_up, kc_down),
    };
    /* SHOAL_TEST_FILTER=test_x_* runs only the matching tests. */
    const char *filter = getenv("SHOAL_TEST_FILTER");
    if (filter != NULL && filter[0] != '\0')
        cmocka_set_test_filter(filter);
    return cmocka_run_group_tests(tests, NULL, NULL);
}
