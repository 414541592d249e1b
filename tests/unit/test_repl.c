/*
 * test_repl.c -- the replication data plane (cluster/repl.h) in one
 * process: three engines, each with its own repl, talking over real nng
 * sockets (ipc://) with sealed peer frames. Quorum waits, shipping,
 * catch-up of a restarted follower from the backlog, catch-up of an empty
 * follower by snapshot, and a node with the wrong cluster key.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "cluster/cmap.h"
#include "cluster/repl.h"
#include "proto/clock.h"
#include "proto/keyhash.h"
#include "proto/mem.h"
#include "proto/wire.h"
#include "storage/store.h"
#include "tests/support/testutil.h"

#include <sys/stat.h>

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define N_NODES  3
#define N_SHARDS 16

typedef struct tnode {
    repl *r;
    store *st;
    bool up;
} tnode;

typedef struct world {
    cmap *map;
    wire_keyring *keys;  /* the cluster key */
    wire_keyring *other; /* a different key with the same id */
    tnode n[N_NODES];
    uint64_t backlog;
    char dir[128]; /* data dirs dir/n1..n3 */
} world;

static void
sleep_ms(unsigned ms)
{
    struct timespec ts = {ms / 1000, (long) (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static wire_keyring *
make_ring(void)
{
    wire_key k;
    char line[WIRE_KEY_LINE_MAX];
    wire_keyring *kr = NULL;
    assert_int_equal(wire_key_generate(9, WIRE_ROLE_PEER, NULL, 0, &k),
                     SHOAL_OK);
    assert_int_equal(wire_key_format(&k, line, sizeof(line)), SHOAL_OK);
    assert_int_equal(wire_keyring_parse(line, strlen(line), &kr, NULL, 0),
                     SHOAL_OK);
    return kr;
}

static void
world_init(world *w, uint32_t write_quorum)
{
    static int generation;
    char text[2048];
    int pid = (int) getpid() * 100 + generation++;
    int len = snprintf(text, sizeof(text),
                       "epoch = 1\nshards = %d\nreplicas = 3\n"
                       "write_quorum = %" PRIu32 "\n"
                       "hash_key = 000102030405060708090a0b0c0d0e0f\n",
                       N_SHARDS, write_quorum);
    for (int i = 1; i <= N_NODES; i++)
        len += snprintf(text + len, sizeof(text) - (size_t) len,
                        "node = n%d ipc:///tmp/shoal-trepl-%d-c%d "
                        "ipc:///tmp/shoal-trepl-%d-p%d\n",
                        i, pid, i, pid, i);
    char err[CMAP_ERR_LEN] = "";
    memset(w, 0, sizeof(*w));
    shoal_err rc = cmap_parse(text, (size_t) len, &w->map, err, sizeof(err));
    if (rc != SHOAL_OK)
        fail_msg("cmap_parse: %s", err);
    w->keys = make_ring();
    w->other = make_ring();
    w->backlog = (uint64_t) 64 << 20;
    snprintf(w->dir, sizeof(w->dir), "/tmp/shoal-trepl-%d-data", pid);
    tu_rm_rf(w->dir);
    assert_int_equal(mkdir(w->dir, 0700), 0);
}

static void
node_up(world *w, int i, const wire_keyring *keys)
{
    tnode *t = &w->n[i];
    char id[16];
    snprintf(id, sizeof(id), "n%d", i + 1);
    repl_opts ro;
    repl_opts_default(&ro);
    ro.map = w->map;
    ro.self_id = id;
    ro.keys = keys;
    ro.peer_key = wire_keyring_at(keys, 0);
    ro.backlog_bytes = w->backlog;
    ro.dead_ms = 400;
    ro.heartbeat_ms = 50;
    assert_int_equal(repl_create(&ro, &t->r), SHOAL_OK);
    char dir[192];
    snprintf(dir, sizeof(dir), "%s/%s", w->dir, id);
    store_opts so;
    store_opts_default(&so);
    so.data_dir = dir;
    so.fsync = WAL_FSYNC_NONE;
    so.segment_bytes = 1 << 20;
    so.max_value_bytes = 64 << 10;
    so.n_shards = N_SHARDS;
    so.on_record = repl_on_record;
    so.on_record_arg = t->r;
    assert_int_equal(store_open(&so, &t->st), SHOAL_OK);
    assert_int_equal(repl_start(t->r, t->st), SHOAL_OK);
    t->up = true;
}

static void
node_down(world *w, int i)
{
    tnode *t = &w->n[i];
    if (!t->up)
        return;
    repl_close(t->r);
    store_close(t->st);
    t->r = NULL;
    t->st = NULL;
    t->up = false;
}

static void
world_fini(world *w)
{
    for (int i = 0; i < N_NODES; i++)
        node_down(w, i);
    cmap_free(w->map);
    wire_keyring_free(w->keys);
    wire_keyring_free(w->other);
    tu_rm_rf(w->dir);
}

typedef struct waitres {
    _Atomic int done;
    shoal_err rc;
} waitres;

static void
wait_cb(void *arg, shoal_err rc)
{
    waitres *wr = arg;
    wr->rc = rc;
    atomic_store(&wr->done, 1);
}

/* Put key=val on the shard's primary and wait for w copies. */
static shoal_err
put_w(world *w, const char *key, const char *val, uint32_t wq,
      uint32_t timeout_ms)
{
    uint32_t s = keyhash_shard(w->map->hash_key, (const uint8_t *) key,
                               strlen(key), N_SHARDS);
    tnode *p = &w->n[w->map->shards[s].primary];
    assert_true(p->up);
    shoal_err rc = repl_admit(p->r, s, wq);
    if (rc != SHOAL_OK)
        return rc;
    uint64_t v = 0;
    rc = store_put(p->st, s, (const uint8_t *) key, strlen(key),
                   (const uint8_t *) val, strlen(val), NULL, &v);
    if (rc != SHOAL_OK)
        return rc;
    repl_need nd = {s, v, wq};
    waitres wr = {0};
    assert_int_equal(
        repl_wait(p->r, &nd, 1, clock_now_ms() + timeout_ms, wait_cb, &wr),
        SHOAL_OK);
    while (!atomic_load(&wr.done))
        sleep_ms(1);
    return wr.rc;
}

/* Wait until every replica of every shard (but those led by node skip)
 * has the primary's digest. */
static bool
converged_but(world *w, unsigned timeout_ms, int skip)
{
    uint64_t until = clock_now_ms() + timeout_ms;
    for (;;) {
        bool same = true;
        for (uint32_t s = 0; s < N_SHARDS && same; s++) {
            const cmap_shard *sh = &w->map->shards[s];
            if ((int) sh->primary == skip)
                continue;
            uint64_t want = 0, got = 0;
            assert_int_equal(store_digest(w->n[sh->primary].st, s, &want),
                             SHOAL_OK);
            for (uint32_t k = 0; k < sh->n_replicas && same; k++) {
                tnode *t = &w->n[sh->replicas[k]];
                if (!t->up)
                    continue;
                assert_int_equal(store_digest(t->st, s, &got), SHOAL_OK);
                same = got == want;
            }
        }
        if (same)
            return true;
        if (clock_now_ms() > until) {
            for (uint32_t s = 0; s < N_SHARDS; s++) {
                const cmap_shard *sh = &w->map->shards[s];
                fprintf(stderr, "shard %2u primary n%u:", s, sh->primary + 1);
                for (uint32_t k = 0; k < sh->n_replicas; k++) {
                    tnode *t = &w->n[sh->replicas[k]];
                    store_shard_stats ss = {0};
                    uint64_t d = 0;
                    if (t->up) {
                        store_get_shard_stats(t->st, s, &ss);
                        store_digest(t->st, s, &d);
                    }
                    fprintf(stderr, " n%u lsn %" PRIu64 " digest %016" PRIx64,
                            sh->replicas[k] + 1, ss.lsn, d);
                }
                fprintf(stderr, "\n");
            }
            return false;
        }
        sleep_ms(20);
    }
}

static bool
converged(world *w, unsigned timeout_ms)
{
    return converged_but(w, timeout_ms, -1);
}

static void
start_all(world *w)
{
    for (int i = 0; i < N_NODES; i++)
        node_up(w, i, w->keys);
    /* First heartbeats: every primary hears from all its followers. */
    uint64_t until = clock_now_ms() + 10000;
    for (uint32_t s = 0; s < N_SHARDS; s++)
        while (repl_admit(w->n[w->map->shards[s].primary].r, s, 3) !=
               SHOAL_OK) {
            assert_true(clock_now_ms() < until);
            sleep_ms(10);
        }
}

static void
test_quorum_and_ship(void **state)
{
    (void) state;
    world w;
    world_init(&w, 2);
    start_all(&w);
    char key[32], val[64];
    for (int i = 0; i < 300; i++) {
        snprintf(key, sizeof(key), "k%04d", i);
        snprintf(val, sizeof(val), "value-%d", i);
        /* w = 3: every replica holds it when the wait ends. */
        assert_int_equal(put_w(&w, key, val, 3, 5000), SHOAL_OK);
    }
    assert_true(converged(&w, 5000));
    repl_stats rs;
    repl_get_stats(w.n[0].r, &rs);
    assert_true(rs.records_shipped > 0);
    world_fini(&w);
}

static void
test_follower_restart_catches_up(void **state)
{
    (void) state;
    world w;
    world_init(&w, 2);
    start_all(&w);
    char key[32], val[64];
    for (int i = 0; i < 100; i++) {
        snprintf(key, sizeof(key), "a%04d", i);
        assert_int_equal(put_w(&w, key, "x", 2, 5000), SHOAL_OK);
    }
    node_down(&w, 2);
    sleep_ms(600); /* past dead_ms */
    int n_all = 0;
    for (int i = 0; i < 200; i++) {
        snprintf(key, sizeof(key), "b%04d", i);
        snprintf(val, sizeof(val), "v%d", i);
        uint32_t s = keyhash_shard(w.map->hash_key, (const uint8_t *) key,
                                   strlen(key), N_SHARDS);
        if (w.map->shards[s].primary == 2)
            continue; /* its primary is down */
        assert_int_equal(put_w(&w, key, val, 2, 5000), SHOAL_OK);
        {
            /* w = all cannot be admitted with a replica down */
            shoal_err rc = put_w(&w, key, val, 3, 300);
            assert_true(rc == SHOAL_EUNAVAILABLE);
            n_all++;
        }
    }
    assert_true(n_all > 0);
    /* n3 comes back with what it had: it catches up from its LSN out of
     * the primaries' backlogs. */
    node_up(&w, 2, w.keys);
    assert_true(converged(&w, 10000));
    repl_stats rs;
    repl_get_stats(w.n[2].r, &rs);
    assert_int_equal(rs.snapshots_installed, 0);
    world_fini(&w);
}

static void
test_snapshot_catch_up(void **state)
{
    (void) state;
    world w;
    world_init(&w, 2);
    w.backlog = 32 << 10; /* 32 KiB: n3's next records fall out */
    start_all(&w);
    node_down(&w, 2);
    sleep_ms(600);
    char key[32], val[512];
    memset(val, 'v', sizeof(val) - 1);
    val[sizeof(val) - 1] = '\0';
    for (int i = 0; i < 600; i++) {
        snprintf(key, sizeof(key), "s%04d", i);
        uint32_t s = keyhash_shard(w.map->hash_key, (const uint8_t *) key,
                                   strlen(key), N_SHARDS);
        if (w.map->shards[s].primary == 2)
            continue;
        assert_int_equal(put_w(&w, key, val, 2, 5000), SHOAL_OK);
    }
    node_up(&w, 2, w.keys);
    assert_true(converged(&w, 15000));
    repl_stats rs, r0, r1;
    repl_get_stats(w.n[2].r, &rs);
    repl_get_stats(w.n[0].r, &r0);
    repl_get_stats(w.n[1].r, &r1);
    fprintf(stderr,
            "snapshots: sent %" PRIu64 "+%" PRIu64 ", installed %" PRIu64
            "; backlog %" PRIu64 "/%" PRIu64 "\n",
            r0.snapshots_sent, r1.snapshots_sent, rs.snapshots_installed,
            r0.backlog_bytes, r1.backlog_bytes);
    assert_true(rs.snapshots_installed > 0);
    world_fini(&w);
}

/* A node whose data dir was lost comes back empty: the shards it follows
 * are rebuilt from their primaries (backlog or snapshot); the shards it
 * leads are behind their followers, so it serves none of them (no reused
 * LSNs, no "not found") until it repaired them from a follower. */
static void
test_wiped_node(void **state)
{
    (void) state;
    world w;
    world_init(&w, 2);
    w.backlog = 32 << 10;
    start_all(&w);
    char key[32], val[512];
    memset(val, 'w', sizeof(val) - 1);
    val[sizeof(val) - 1] = '\0';
    for (int i = 0; i < 300; i++) {
        snprintf(key, sizeof(key), "w%04d", i);
        assert_int_equal(put_w(&w, key, val, 3, 5000), SHOAL_OK);
    }
    node_down(&w, 2);
    char dir[192];
    snprintf(dir, sizeof(dir), "%s/n3", w.dir);
    assert_int_equal(tu_rm_rf(dir), 0);
    node_up(&w, 2, w.keys);
    /* Everything converges: the shards it follows from their primaries,
     * the shards it leads repaired from its followers. */
    assert_true(converged(&w, 20000));
    uint32_t led = UINT32_MAX;
    for (uint32_t s = 0; s < N_SHARDS && led == UINT32_MAX; s++)
        if (w.map->shards[s].primary == 2)
            led = s;
    assert_true(led != UINT32_MAX);
    store_shard_stats ss;
    assert_int_equal(store_get_shard_stats(w.n[2].st, led, &ss), SHOAL_OK);
    assert_true(ss.lsn > 0);
    /* ... and it serves its shards again, with new LSNs after theirs. */
    uint64_t until = clock_now_ms() + 10000;
    while (repl_admit(w.n[2].r, led, 3) != SHOAL_OK) {
        assert_true(clock_now_ms() < until);
        sleep_ms(20);
    }
    for (int i = 0; i < 300; i++) {
        snprintf(key, sizeof(key), "x%04d", i);
        assert_int_equal(put_w(&w, key, "after", 3, 5000), SHOAL_OK);
    }
    assert_true(converged(&w, 10000));
    world_fini(&w);
}

static void
test_wrong_key_ships_nothing(void **state)
{
    (void) state;
    world w;
    world_init(&w, 2);
    node_up(&w, 0, w.keys);
    node_up(&w, 1, w.keys);
    node_up(&w, 2, w.other); /* same key id, different secret */
    /* n1 and n2 never hear n3: they serve once the start-up grace ends. */
    uint64_t until = clock_now_ms() + 10000;
    while (!repl_ready(w.n[0].r) || !repl_ready(w.n[1].r)) {
        assert_true(clock_now_ms() < until);
        sleep_ms(20);
    }
    char key[32];
    int tried = 0;
    for (int i = 0; i < 200; i++) {
        snprintf(key, sizeof(key), "r%04d", i);
        uint32_t s = keyhash_shard(w.map->hash_key, (const uint8_t *) key,
                                   strlen(key), N_SHARDS);
        if (w.map->shards[s].primary == 2)
            continue;
        assert_int_equal(put_w(&w, key, "secret", 2, 5000), SHOAL_OK);
        tried++;
    }
    assert_true(tried > 0);
    sleep_ms(500);
    repl_stats rs;
    repl_get_stats(w.n[2].r, &rs);
    assert_int_equal(rs.records_applied, 0);
    assert_true(rs.frames_refused > 0);
    store_stats ss;
    store_get_stats(w.n[2].st, &ss);
    assert_int_equal(ss.keys, 0);
    world_fini(&w);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_quorum_and_ship),
        cmocka_unit_test(test_follower_restart_catches_up),
        cmocka_unit_test(test_snapshot_catch_up),
        cmocka_unit_test(test_wiped_node),
        cmocka_unit_test(test_wrong_key_ships_nothing),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
