/*
 * test_cluster_kill.c -- TESTING.md G2 on a real 3-node cluster (R=3, W=2,
 * fsync=always): no acknowledged write is lost.
 *
 * An in-process ledger (the logic of tests/tools/ledger.c, with threads):
 * writer threads put unique keys "kill:<cycle>:<thread>:<seq>" whose value
 * is a function of the key and the seed, through one libshoal handle, and
 * record each put answered SHOAL_OK (with the time of the answer). The
 * check reads every recorded key back through the primaries: lost
 * (SHOAL_ENOTFOUND), mismatched (another value) or unreadable (every try
 * failed otherwise) must all be 0; then a scan of every "kill:" key checks
 * that whatever is there, acknowledged or not, holds its own value (never
 * garbage), and every shard's digest is equal on all its replicas.
 *
 *  (a) one node SIGKILLed under load -- one that is primary of some shards
 *      and follower of the others -- writes go on for ~5 s (those to its
 *      shards fail: no failover yet), it is restarted on its data, the
 *      replicas catch up, the check runs. 3 cycles (SHOAL_TEST_LONG=1: 10).
 *  (b) all three SIGKILLed at once under load, and each node's unsynced
 *      WAL bytes dropped as a power cut would (cc_wal_power_cut: zero the
 *      newest segment past its durable frontier), all restarted, the check
 *      runs. 2 cycles (long: 6).
 *
 * Each cycle prints acked / failed / unknown and checked / lost /
 * mismatched / unreadable. The seed (victims, load durations) is printed;
 * kill moments depend on timing, so a replay repeats the choices, not the
 * interleaving.
 */
#include "tests/support/cluster_check.h"
#include "tests/support/proc.h"
#include "tests/support/testutil.h"

#include "shoal.h"

#include <inttypes.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#define N_WRITERS 16
#define N_CHECKER 4
#define PUT_MS    1000
#define CALL_MS   10000
#define SYNC_MS   90000
#define STOP_MS   30000
#define KEY_MAX   48
#define VAL_MAX   160

typedef struct ack {
    char key[KEY_MAX];
    uint64_t at_ms; /* when the put was answered SHOAL_OK */
} ack;

typedef struct ledger {
    pthread_mutex_t mu;
    ack *v;
    size_t n, cap;
} ledger;

typedef struct writer {
    shoal *db;
    ledger *lg;
    uint64_t seed;
    int cycle, id;
    _Atomic bool *stop;
    size_t failed, unknown, acked;
    pthread_t th;
} writer;

typedef struct fx {
    char *dir;
    proc_cluster *c;
    cc_map *m;
    ledger lg;
    uint64_t seed;
} fx;

static void
log_to_stderr(void *arg, int level, const char *msg)
{
    (void) arg;
    fprintf(stderr, "# libshoal[%d]: %s\n", level, msg);
}

static bool
shoald_has_cluster(void)
{
    const char *argv[] = {PROC_SHOALD, "--help", NULL};
    proc_output out;
    bool has = proc_run(argv, NULL, 0, 10000, &out) == SHOAL_OK &&
               ((out.out != NULL && strstr(out.out, "--cluster") != NULL) ||
                (out.err != NULL && strstr(out.err, "--cluster") != NULL));
    proc_output_free(&out);
    return has;
}

/* The value of key: a pure function of key and seed, ~100 bytes. */
static size_t
value_of(uint64_t seed, const char *key, char *out, size_t cap)
{
    uint64_t h = 1469598103934665603ull ^ seed;
    for (const char *p = key; *p; p++)
        h = (h ^ (uint8_t) *p) * 1099511628211ull;
    return (size_t) snprintf(out, cap,
                             "val|%s|%016" PRIx64 "|%016" PRIx64
                             "|padding-padding-padding-padding",
                             key, h, ~h);
}

static void
ledger_add(ledger *lg, const char *key, uint64_t at_ms)
{
    pthread_mutex_lock(&lg->mu);
    if (lg->n == lg->cap) {
        lg->cap = lg->cap ? 2 * lg->cap : 4096;
        lg->v = realloc(lg->v, lg->cap * sizeof(*lg->v));
        if (lg->v == NULL)
            abort();
    }
    snprintf(lg->v[lg->n].key, KEY_MAX, "%s", key);
    lg->v[lg->n].at_ms = at_ms;
    lg->n++;
    pthread_mutex_unlock(&lg->mu);
}

static size_t
ledger_count(ledger *lg)
{
    pthread_mutex_lock(&lg->mu);
    size_t n = lg->n;
    pthread_mutex_unlock(&lg->mu);
    return n;
}

static void *
writer_main(void *arg)
{
    writer *w = arg;
    shoal_call call = {.timeout_ms = PUT_MS};
    for (uint64_t seq = 0; !atomic_load(w->stop); seq++) {
        char key[KEY_MAX], val[VAL_MAX];
        snprintf(key, sizeof(key), "kill:%03d:%d:%07" PRIu64, w->cycle, w->id,
                 seq);
        size_t vlen = value_of(w->seed, key, val, sizeof(val));
        shoal_err rc =
            shoal_put(w->db, key, strlen(key), val, vlen, NULL, NULL, &call);
        if (rc == SHOAL_OK) {
            ledger_add(w->lg, key, proc_now_ms());
            w->acked++;
        } else if (rc == SHOAL_ETIMEOUT || rc == SHOAL_EIO) {
            w->unknown++; /* may have taken effect: never ledgered */
        } else {
            w->failed++;
            if (rc == SHOAL_ECLOSED)
                break;
            if (rc == SHOAL_EUNAVAILABLE)
                proc_nap_ms(5); /* its primary is down: do not spin */
        }
    }
    return NULL;
}

typedef struct load {
    writer w[N_WRITERS];
    _Atomic bool stop;
} load;

static void
load_start(load *l, shoal *db, ledger *lg, uint64_t seed, int cycle)
{
    atomic_store(&l->stop, false);
    for (int i = 0; i < N_WRITERS; i++) {
        writer *w = &l->w[i];
        memset(w, 0, sizeof(*w));
        w->db = db;
        w->lg = lg;
        w->seed = seed;
        w->cycle = cycle;
        w->id = i;
        w->stop = &l->stop;
        assert_int_equal(pthread_create(&w->th, NULL, writer_main, w), 0);
    }
}

static void
load_stop(load *l, size_t *acked, size_t *failed, size_t *unknown)
{
    atomic_store(&l->stop, true);
    *acked = *failed = *unknown = 0;
    for (int i = 0; i < N_WRITERS; i++) {
        pthread_join(l->w[i].th, NULL);
        *acked += l->w[i].acked;
        *failed += l->w[i].failed;
        *unknown += l->w[i].unknown;
    }
}

static shoal_err
open_all(proc_cluster *c, shoal **out)
{
    size_t n = 0;
    const char *const *seeds = proc_cluster_seeds(c, &n);
    shoal_opts o;
    shoal_opts_default(&o);
    o.seeds = seeds;
    o.n_seeds = n;
    o.key_file = proc_cluster_key_file(c);
    o.timeout_ms = CALL_MS;
    o.connect_timeout_ms = CALL_MS;
    return shoal_open(&o, out);
}

/* ---- the check ------------------------------------------------------------
 */

typedef struct checker {
    shoal *db;
    const ledger *lg;
    uint64_t seed, kill_ms;
    size_t from, to;
    size_t checked, lost, mismatched, unreadable;
    pthread_t th;
} checker;

static void *
checker_main(void *arg)
{
    checker *k = arg;
    for (size_t i = k->from; i < k->to; i++) {
        const ack *a = &k->lg->v[i];
        char want[VAL_MAX];
        size_t wlen = value_of(k->seed, a->key, want, sizeof(want));
        shoal_err rc = SHOAL_EIO;
        void *v = NULL;
        size_t vlen = 0;
        for (int t = 0; t < 3; t++) {
            rc =
                shoal_get(k->db, a->key, strlen(a->key), &v, &vlen, NULL, NULL);
            if (rc == SHOAL_OK || rc == SHOAL_ENOTFOUND)
                break;
        }
        k->checked++;
        if (rc == SHOAL_ENOTFOUND) {
            if (k->lost++ < 10)
                fprintf(stderr,
                        "# LOST %s (acked %" PRId64 " ms before the kill)\n",
                        a->key,
                        k->kill_ms ? (int64_t) (k->kill_ms - a->at_ms) : -1);
        } else if (rc != SHOAL_OK) {
            if (k->unreadable++ < 10)
                fprintf(stderr, "# UNREADABLE %s: %s\n", a->key,
                        shoal_errname(rc));
        } else if (vlen != wlen || memcmp(v, want, wlen) != 0) {
            if (k->mismatched++ < 10)
                fprintf(stderr, "# MISMATCH %s\n", a->key);
        }
        shoal_free(v);
        v = NULL;
    }
    return NULL;
}

/* Every "kill:" key present holds its own value (acknowledged or not). */
static size_t
scan_garbage(shoal *db, uint64_t seed, size_t *n_out)
{
    size_t bad = 0, n = 0;
    uint8_t token[KEY_MAX];
    size_t token_len = 0;
    for (;;) {
        shoal_scan_req r;
        memset(&r, 0, sizeof(r));
        r.prefix = "kill:";
        r.plen = 5;
        r.limit = 1000;
        r.token = token_len ? token : NULL;
        r.token_len = token_len;
        shoal_scan_page *pg = NULL;
        shoal_err rc = shoal_scan(db, &r, &pg, NULL);
        if (rc != SHOAL_OK)
            fail_msg("scan: %s", shoal_errname(rc));
        for (size_t i = 0; i < pg->n_items; i++) {
            char key[KEY_MAX], want[VAL_MAX];
            const shoal_item *it = &pg->items[i];
            if (it->klen >= KEY_MAX) {
                bad++;
                continue;
            }
            memcpy(key, it->key, it->klen);
            key[it->klen] = '\0';
            size_t wlen = value_of(seed, key, want, sizeof(want));
            if (it->vlen != wlen || memcmp(it->val, want, wlen) != 0) {
                if (bad++ < 10)
                    fprintf(stderr, "# GARBAGE at %s\n", key);
            }
            n++;
        }
        bool more = pg->more;
        if (more) {
            assert_true(pg->token_len <= sizeof(token));
            memcpy(token, pg->token, pg->token_len);
            token_len = pg->token_len;
        }
        shoal_scan_page_free(pg);
        if (!more)
            break;
    }
    *n_out = n;
    return bad;
}

static void
check_all(fx *f, uint64_t kill_ms, const char *what)
{
    shoal *db = NULL;
    assert_int_equal(open_all(f->c, &db), SHOAL_OK);
    char why[256] = "";
    shoal_err rc = cc_wait_synced(f->c, f->m, SYNC_MS, why, sizeof(why));
    if (rc != SHOAL_OK) {
        cc_dump_why(f->c, why);
        fail_msg("%s: replicas not in step: %s", what, why);
    }
    checker k[N_CHECKER];
    size_t n = f->lg.n;
    for (int i = 0; i < N_CHECKER; i++) {
        memset(&k[i], 0, sizeof(k[i]));
        k[i].db = db;
        k[i].lg = &f->lg;
        k[i].seed = f->seed;
        k[i].kill_ms = kill_ms;
        k[i].from = n * (size_t) i / N_CHECKER;
        k[i].to = n * (size_t) (i + 1) / N_CHECKER;
        assert_int_equal(pthread_create(&k[i].th, NULL, checker_main, &k[i]),
                         0);
    }
    size_t checked = 0, lost = 0, mism = 0, unread = 0;
    for (int i = 0; i < N_CHECKER; i++) {
        pthread_join(k[i].th, NULL);
        checked += k[i].checked;
        lost += k[i].lost;
        mism += k[i].mismatched;
        unread += k[i].unreadable;
    }
    size_t present = 0;
    size_t garbage = scan_garbage(db, f->seed, &present);
    shoal_close(db);
    uint64_t keys = 0;
    long differ = cc_digests_compare(f->c, f->m, &keys);
    printf("# %s: acked=%zu checked=%zu lost=%zu mismatched=%zu "
           "unreadable=%zu; %zu keys present (%zu garbage); %ld shards with "
           "differing replicas\n",
           what, n, checked, lost, mism, unread, present, garbage, differ);
    fflush(stdout);
    assert_int_equal(checked, n);
    assert_int_equal(lost, 0);
    assert_int_equal(mism, 0);
    assert_int_equal(unread, 0);
    assert_int_equal(garbage, 0);
    assert_true(present >= n);
    assert_int_equal(differ, 0);
}

/* ---- fixture --------------------------------------------------------------
 */

static int
fx_up(void **state)
{
    fx *f = calloc(1, sizeof(*f));
    void *dir = NULL;
    if (f == NULL || tu_tmpdir_up(&dir) != 0)
        return -1;
    f->dir = dir;
    pthread_mutex_init(&f->lg.mu, NULL);
    *state = f;
    shoal_set_logger(log_to_stderr, NULL, 0);
    return 0;
}

static int
fx_down(void **state)
{
    fx *f = *state;
    if (f == NULL)
        return 0;
    cc_map_free(f->m);
    proc_cluster_free(f->c);
    proc_reap_all();
    free(f->lg.v);
    pthread_mutex_destroy(&f->lg.mu);
    void *dir = f->dir;
    tu_tmpdir_down(&dir);
    free(f);
    return 0;
}

static void
cluster_up(fx *f, const char *const *env)
{
    if (!shoald_has_cluster())
        skip();
    proc_cluster_opts o;
    proc_cluster_opts_default(&o);
    o.dir = f->dir;
    o.fsync = "always";
    o.env = env;
    shoal_err rc = proc_cluster_start(&o, &f->c);
    if (rc != SHOAL_OK)
        fail_msg("cluster start: %s (logs in %s)", shoal_errname(rc), f->dir);
    rc = cc_map_get(proc_node_port(proc_cluster_node(f->c, 0)),
                    &proc_cluster_keys(f->c)->admin, &f->m);
    if (rc != SHOAL_OK)
        fail_msg("map: %s", shoal_errname(rc));
    assert_int_equal(f->m->r, 3);
    assert_int_equal(f->m->w, 2);
}

/* ---- (a) one node ----------------------------------------------------------
 */

static void
test_kill_one(void **state)
{
    fx *f = *state;
    cluster_up(f, NULL);
    uint64_t rng = f->seed = tu_seed("cluster kill one");
    int cycles = tu_long() ? 10 : 3;
    shoal *db = NULL;
    assert_int_equal(open_all(f->c, &db), SHOAL_OK);
    for (int cy = 0; cy < cycles; cy++) {
        size_t victim = (size_t) (tu_rand(&rng) % 3);
        uint32_t prim = 0, foll = 0;
        for (uint32_t s = 0; s < f->m->n_shards; s++) {
            if (f->m->primary[s] == victim)
                prim++;
            else if (cc_map_is_replica(f->m, s, (uint32_t) victim))
                foll++;
        }
        assert_true(prim > 0 && foll > 0);
        uint32_t before_ms = 1000 + (uint32_t) (tu_rand(&rng) % 2000);
        proc_node *n = proc_cluster_node(f->c, victim);

        load l;
        load_start(&l, db, &f->lg, f->seed, cy);
        proc_nap_ms(before_ms);
        size_t acked_at_kill = ledger_count(&f->lg);
        assert_int_equal(proc_node_kill(n), SHOAL_OK);
        uint64_t kill_ms = proc_now_ms();
        proc_nap_ms(5000); /* keep writing without it */
        size_t acked_down = ledger_count(&f->lg) - acked_at_kill;
        assert_int_equal(proc_node_launch(n), SHOAL_OK);
        proc_nap_ms(1000); /* and with it back */
        size_t acked, failed, unknown;
        load_stop(&l, &acked, &failed, &unknown);
        printf("# cycle %d: SIGKILL n%zu (primary of %u shards, follower of "
               "%u) after %u ms; acked=%zu (%zu while it was down) failed=%zu "
               "unknown=%zu\n",
               cy, victim + 1, prim, foll, before_ms, acked, acked_down, failed,
               unknown);
        fflush(stdout);
        assert_true(acked_down > 0); /* W=2 of 3: the others kept acking */
        char what[64];
        snprintf(what, sizeof(what), "cycle %d (n%zu killed)", cy, victim + 1);
        check_all(f, kill_ms, what);
    }
    shoal_close(db);
    assert_int_equal(proc_cluster_stop(f->c, STOP_MS), SHOAL_OK);
}

/* ---- (b) every node, unsynced data dropped --------------------------------
 */

static void
test_kill_all_power_cut(void **state)
{
    fx *f = *state;
    /* The nodes run with the sync-log shim, so the cut keeps exactly what
     * an fdatasync covered (see cluster_check.h). */
    char preload[600], synclog[600], asan[1024];
    snprintf(preload, sizeof(preload), "LD_PRELOAD=%s", SHOAL_SYNCLOG_SO);
    snprintf(synclog, sizeof(synclog), "SHOAL_SYNCLOG=%s/synclog", f->dir);
    const char *prev = getenv("ASAN_OPTIONS");
    snprintf(asan, sizeof(asan), "ASAN_OPTIONS=%s%sverify_asan_link_order=0",
             prev != NULL ? prev : "", prev != NULL && prev[0] ? ":" : "");
    const char *const env[] = {preload, synclog, asan, NULL};
    cluster_up(f, env);
    uint64_t rng = f->seed = tu_seed("cluster kill all");
    int cycles = tu_long() ? 6 : 2;
    for (int cy = 0; cy < cycles; cy++) {
        shoal *db = NULL;
        assert_int_equal(open_all(f->c, &db), SHOAL_OK);
        uint32_t before_ms = 1500 + (uint32_t) (tu_rand(&rng) % 2500);
        load l;
        load_start(&l, db, &f->lg, f->seed, 100 + cy);
        proc_nap_ms(before_ms);
        /* SIGKILL all three at once, then reap. */
        for (size_t i = 0; i < 3; i++)
            proc_signal(proc_node_pid(proc_cluster_node(f->c, i)), SIGKILL);
        uint64_t kill_ms = proc_now_ms();
        for (size_t i = 0; i < 3; i++)
            assert_int_equal(proc_node_kill(proc_cluster_node(f->c, i)),
                             SHOAL_OK);
        size_t acked, failed, unknown;
        load_stop(&l, &acked, &failed, &unknown);
        shoal_close(db);
        printf("# cycle %d: SIGKILL all after %u ms; acked=%zu failed=%zu "
               "unknown=%zu\n",
               cy, before_ms, acked, failed, unknown);
        assert_true(acked > 0);
        for (size_t i = 0; i < 3; i++) {
            proc_node *n = proc_cluster_node(f->c, i);
            cc_cut cut;
            shoal_err rc =
                cc_wal_power_cut(proc_node_data_dir(n),
                                 synclog + strlen("SHOAL_SYNCLOG="), &cut);
            if (rc != SHOAL_OK)
                fail_msg("power cut n%zu: %s", i + 1, shoal_errname(rc));
            printf("# n%zu: %s frontier %" PRIu64 ", fdatasync covered %" PRIu64
                   ", records end %" PRIu64 ": %" PRIu64
                   " unsynced record bytes dropped (%" PRIu64
                   " synced bytes lie past the frontier)\n",
                   i + 1, cut.path[0] ? strrchr(cut.path, '/') + 1 : "(none)",
                   cut.frontier, cut.synced, cut.data_end, cut.dropped,
                   cut.synced > cut.frontier ? cut.synced - cut.frontier : 0);
            /* The shim must have seen the syncs, or the cut is the
             * frontier's and may drop acknowledged writes. */
            if (cut.path[0] != '\0')
                assert_true(cut.synced > 0);
        }
        fflush(stdout);
        shoal_err rc = proc_cluster_launch(f->c);
        if (rc != SHOAL_OK)
            fail_msg("relaunch after power cut: %s (logs in %s)",
                     shoal_errname(rc), f->dir);
        char what[64];
        snprintf(what, sizeof(what), "power cut %d", cy);
        check_all(f, kill_ms, what);
    }
    assert_int_equal(proc_cluster_stop(f->c, STOP_MS), SHOAL_OK);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_kill_one, fx_up, fx_down),
        cmocka_unit_test_setup_teardown(test_kill_all_power_cut, fx_up,
                                        fx_down),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
