/*
 * test_crash.c -- TESTING.md G5: simulated power loss.
 *
 * A writer thread runs a deterministic workload (workload.h) against an
 * engine on the in-memory crash file system (fs_mem) with fsync=always,
 * small WAL segments and periodic snapshots, while this thread takes crash
 * images at random moments: each is what a power cut then could leave
 * (unsynced bytes dropped, kept, torn or garbled; directory entries not made
 * durable forgotten). Every image must open, and hold exactly the model
 * state after j ops for some j between "acknowledged before the image" and
 * "started after it": all acknowledged writes, never garbage. Every tenth
 * recovered image also takes a write and is reopened, to prove the
 * recovered log can be appended to.
 *
 * Default: >= 2 000 crash states; SHOAL_TEST_LONG=1: >= 20 000.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "storage/store.h"
#include "tests/support/fs_mem.h"
#include "tests/support/testutil.h"
#include "tests/support/workload.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#define N_SHARDS 4
#define N_KEYS   48

typedef struct run {
    fs_mem *fsm;
    store *s;
    wl w;
    _Atomic size_t started; /* ops begun */
    _Atomic size_t acked;   /* ops returned OK */
    _Atomic int done;
} run;

static void
opts_for(store_opts *o, fs *f)
{
    wl_store_opts(o, f, N_SHARDS, 64u << 10, 4096);
}

static void *
writer_main(void *arg)
{
    run *r = arg;
    for (size_t i = 0; i < r->w.n_ops; i++) {
        atomic_store(&r->started, i + 1);
        shoal_err rc = wl_run(r->s, &r->w, i);
        if (rc != SHOAL_OK) {
            fprintf(stderr, "# op %zu failed: %s\n", i, shoal_strerror(rc));
            break;
        }
        atomic_store(&r->acked, i + 1);
    }
    atomic_store(&r->done, 1);
    return NULL;
}

static const fs_crash_mode modes[] = {FS_CRASH_DROP_UNSYNCED, FS_CRASH_RANDOM,
                                      FS_CRASH_TORN_LAST,
                                      FS_CRASH_KEEP_UNSYNCED};

/* Append to a recovered image, then reopen: the write must be there. */
static void
write_after_recovery(fs_mem *img, store *s)
{
    assert_int_equal(store_put(s, 0, (const uint8_t *) "after", 5,
                               (const uint8_t *) "crash", 5, NULL, NULL),
                     SHOAL_OK);
    store_close(s);
    store_opts o;
    opts_for(&o, fs_mem_fs(img));
    assert_int_equal(store_open(&o, &s), SHOAL_OK);
    uint64_t n = 0;
    assert_int_equal(store_count(s, 0, (const uint8_t *) "after", 5, &n),
                     SHOAL_OK);
    assert_int_equal(n, 1);
    store_close(s);
}

/* Take one crash image now and check it. Returns 1 when checked. */
static int
crash_once(run *r, uint64_t *rs, long state_no)
{
    size_t lo = atomic_load(&r->acked);
    fs_crash_mode mode = modes[state_no % 4];
    uint64_t seed = tu_rand(rs);
    fs_mem *img = NULL;
    assert_int_equal(fs_mem_crash_clone(r->fsm, mode, seed, &img), SHOAL_OK);
    size_t hi = atomic_load(&r->started);

    store_opts o;
    opts_for(&o, fs_mem_fs(img));
    store *s = NULL;
    shoal_err rc = store_open(&o, &s);
    if (rc != SHOAL_OK)
        fprintf(stderr, "# state %ld (mode %d, seed %llu): open: %s\n",
                state_no, (int) mode, (unsigned long long) seed,
                shoal_strerror(rc));
    assert_int_equal(rc, SHOAL_OK);
    size_t j;
    bool ok = wl_check(s, &r->w, lo, hi, &j, false);
    if (!ok) {
        fprintf(stderr,
                "# state %ld (mode %d, seed %llu): acked %zu, "
                "started %zu: state matches no allowed prefix\n",
                state_no, (int) mode, (unsigned long long) seed, lo, hi);
        wl_check(s, &r->w, lo, hi, &j, true);
    }
    assert_true(ok);
    if (state_no % 10 == 0)
        write_after_recovery(img, s);
    else
        store_close(s);
    fs_mem_close(img);
    return 1;
}

static long
one_round(uint64_t seed, long want)
{
    run r;
    memset(&r, 0, sizeof(r));
    assert_int_equal(wl_gen(&r.w, seed, 1500, N_KEYS, N_SHARDS, 1500, 97), 0);
    assert_int_equal(fs_mem_open(&r.fsm), SHOAL_OK);
    store_opts o;
    opts_for(&o, fs_mem_fs(r.fsm));
    assert_int_equal(store_open(&o, &r.s), SHOAL_OK);

    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, writer_main, &r), 0);
    uint64_t rs = seed ^ 0x5eed;
    long states = 0;
    while (!atomic_load(&r.done) && states < want) {
        states += crash_once(&r, &rs, states);
        struct timespec ts = {0, (long) (tu_rand(&rs) % 300) * 1000};
        nanosleep(&ts, NULL);
    }
    pthread_join(t, NULL);
    assert_int_equal(atomic_load(&r.acked), r.w.n_ops);
    /* The final state, after the last acknowledgement, in every mode. */
    for (int m = 0; m < 4; m++)
        states += crash_once(&r, &rs, states);
    store_close(r.s);
    fs_mem_close(r.fsm);
    wl_free(&r.w);
    return states;
}

static void
test_crash_power_loss_states(void **state)
{
    (void) state;
    long want = tu_long() ? 20000 : 2000;
    uint64_t seed = tu_seed("crash");
    long total = 0;
    int rounds = 0;
    while (total < want) {
        total += one_round(seed + (uint64_t) rounds, want - total);
        rounds++;
    }
    printf("# crash states checked: %ld in %d rounds\n", total, rounds);
    assert_true(total >= want);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_crash_power_loss_states),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
