/*
 * test_ioerr.c -- TESTING.md G6: fail the k-th I/O call, k = 1, 2, ...
 *
 * For each fault kind (EIO once, EIO forever, ENOSPC once, ENOSPC forever,
 * a short write then EIO) and each k until the run no longer reaches the
 * k-th call, a workload of puts, deletes, batches, incrs and a snapshot
 * round runs over small, often-rotating WAL segments with fsync=always.
 * Every call must return OK or a defined error (never crash); after the
 * faults are lifted, both a crash image of the disk (unsynced data dropped)
 * and a clean reopen must hold every acknowledged write plus at most a
 * prefix of the rest. A failed fsync must leave the engine read-only (never
 * retried), and a full disk must be a clean error.
 *
 * Recovery under faults: the k-th call of store_open fails; the open either
 * succeeds with the full state or fails cleanly, and a later open without
 * faults still finds everything.
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

#include <stdio.h>
#include <string.h>
#include <time.h>

#define N_SHARDS 2
#define N_KEYS   16

static void
opts_for(store_opts *o, fs *f)
{
    wl_store_opts(o, f, N_SHARDS, 16u << 10, 1024);
}

static bool
allowed(shoal_err rc)
{
    return rc == SHOAL_OK || rc == SHOAL_EIO || rc == SHOAL_ENOSPC ||
           rc == SHOAL_EREADONLY;
}

static store *
open_ok(fs_mem *m)
{
    store_opts o;
    opts_for(&o, fs_mem_fs(m));
    store *s = NULL;
    shoal_err rc = store_open(&o, &s);
    if (rc != SHOAL_OK)
        fprintf(stderr, "# reopen failed: %s\n", shoal_strerror(rc));
    assert_int_equal(rc, SHOAL_OK);
    return s;
}

static void
check_image(fs_mem *m, const wl *w, size_t lo, size_t hi, const char *what)
{
    store *s = open_ok(m);
    size_t j;
    if (!wl_check(s, w, lo, hi, &j, false)) {
        fprintf(stderr, "# %s: acked %zu started %zu: no allowed state\n", what,
                lo, hi);
        wl_check(s, w, lo, hi, &j, true);
        fail();
    }
    store_close(s);
}

/* One run with the k-th call failing. Returns whether the fault fired. */
static bool
run_with_fault(const wl *w, const fs_mem_fault *f, uint64_t k, size_t *n_errors)
{
    fs_mem *m = NULL;
    assert_int_equal(fs_mem_open(&m), SHOAL_OK);
    store *s = open_ok(m);
    fs_mem_fail(m, FS_OP_ALL, k, f->code, f->forever, f->short_write);
    size_t acked_prefix = 0, started = 0;
    bool broken = false;
    for (size_t i = 0; i < w->n_ops; i++) {
        started = i + 1;
        shoal_err rc = wl_run(s, w, i);
        if (!allowed(rc))
            fprintf(stderr, "# %s k=%llu op %zu: %s\n", f->name,
                    (unsigned long long) k, i, shoal_strerror(rc));
        assert_true(allowed(rc));
        if (rc != SHOAL_OK) {
            (*n_errors)++;
            broken = true;
        }
        if (rc == SHOAL_OK && !broken && w->ops[i].kind != WL_SNAP)
            acked_prefix = i + 1;
        /* After the first error only snapshots may still succeed... or
         * writes, when the failure was a clean ENOSPC; stop at the first
         * error to keep "acknowledged" a prefix. */
        if (broken)
            break;
    }
    bool fired = fs_mem_fail_count(m) > 0;
    fs_mem_fail_clear(m);
    fs_mem *img = NULL;
    assert_int_equal(fs_mem_crash_clone(m, FS_CRASH_DROP_UNSYNCED, k, &img),
                     SHOAL_OK);
    store_close(s);
    check_image(img, w, acked_prefix, started, "crash image");
    check_image(m, w, acked_prefix, started, "reopen");
    fs_mem_close(img);
    fs_mem_close(m);
    return fired;
}

static void
test_ioerr_kth_call_during_writes(void **state)
{
    (void) state;
    uint64_t seed = tu_seed("ioerr writes");
    wl w;
    assert_int_equal(
        wl_gen(&w, seed, tu_long() ? 400 : 120, N_KEYS, N_SHARDS, 900, 50), 0);
    for (size_t f = 0; f < fs_mem_n_faults; f++) {
        uint64_t k = 1;
        size_t errors = 0;
        while (run_with_fault(&w, &fs_mem_faults[f], k, &errors))
            k++;
        printf("# %s: failed calls 1..%llu, %zu ops saw an error\n",
               fs_mem_faults[f].name, (unsigned long long) (k - 1), errors);
        assert_true(k > 50); /* the workload makes many I/O calls */
    }
    wl_free(&w);
}

/* A failed fsync stops writes for good: nothing is retried. */
static void
test_ioerr_fsync_failure_is_sticky(void **state)
{
    (void) state;
    fs_mem *m = NULL;
    assert_int_equal(fs_mem_open(&m), SHOAL_OK);
    store *s = open_ok(m);
    assert_int_equal(store_put(s, 0, (const uint8_t *) "a", 1,
                               (const uint8_t *) "1", 1, NULL, NULL),
                     SHOAL_OK);
    fs_mem_fail(m, FS_OP_FSYNC, 1, SHOAL_EIO, false, false);
    assert_int_equal(store_put(s, 0, (const uint8_t *) "b", 1,
                               (const uint8_t *) "2", 1, NULL, NULL),
                     SHOAL_EIO);
    uint64_t fsyncs = fs_mem_op_count(m, FS_OP_FSYNC);
    /* The fault was one-shot, yet the engine stays read-only. */
    assert_int_equal(store_put(s, 0, (const uint8_t *) "c", 1,
                               (const uint8_t *) "3", 1, NULL, NULL),
                     SHOAL_EREADONLY);
    assert_int_equal(fs_mem_op_count(m, FS_OP_FSYNC), fsyncs);
    store_stats st;
    store_get_stats(s, &st);
    assert_true(st.read_only);
    /* Committed data still reads. */
    assert_int_equal(store_get(s, 0, (const uint8_t *) "a", 1, NULL, NULL),
                     SHOAL_OK);
    store_close(s);
    fs_mem_close(m);
}

/* A full disk when the next segment is preallocated: clean ENOSPC, nothing
 * changed, and writes resume once space returns. */
static void
test_ioerr_enospc_is_clean(void **state)
{
    (void) state;
    fs_mem *m = NULL;
    assert_int_equal(fs_mem_open(&m), SHOAL_OK);
    store *s = open_ok(m);
    fs_mem_fail(m, FS_OP_FALLOCATE, 1, SHOAL_ENOSPC, true, false);
    uint8_t val[900];
    memset(val, 'v', sizeof(val));
    char key[32];
    shoal_err rc = SHOAL_OK;
    int i, ok = 0;
    for (i = 0; i < 200 && rc == SHOAL_OK; i++) {
        snprintf(key, sizeof(key), "k%03d", i);
        rc = store_put(s, 0, (const uint8_t *) key, strlen(key), val,
                       sizeof(val), NULL, NULL);
        ok += rc == SHOAL_OK;
    }
    assert_int_equal(rc, SHOAL_ENOSPC);
    store_stats st;
    store_get_stats(s, &st);
    assert_false(st.read_only);
    assert_int_equal(st.keys, (uint64_t) ok);
    fs_mem_fail_clear(m);
    /* Space is back: the log preallocates again and accepts writes. */
    for (int tries = 0; tries < 300; tries++) {
        rc = store_put(s, 0, (const uint8_t *) key, strlen(key), val,
                       sizeof(val), NULL, NULL);
        if (rc == SHOAL_OK)
            break;
        assert_int_equal(rc, SHOAL_ENOSPC);
        struct timespec ts = {0, 10 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    assert_int_equal(rc, SHOAL_OK);
    store_close(s);
    s = open_ok(m);
    store_get_stats(s, &st);
    assert_int_equal(st.keys, (uint64_t) ok + 1);
    store_close(s);
    fs_mem_close(m);
}

static void
test_ioerr_kth_call_during_recovery(void **state)
{
    (void) state;
    uint64_t seed = tu_seed("ioerr recovery");
    wl w;
    assert_int_equal(wl_gen(&w, seed, 150, N_KEYS, N_SHARDS, 900, 60), 0);
    fs_mem *base = NULL;
    assert_int_equal(fs_mem_open(&base), SHOAL_OK);
    store *s = open_ok(base);
    for (size_t i = 0; i < w.n_ops; i++)
        assert_int_equal(wl_run(s, &w, i), SHOAL_OK);
    store_close(s);

    for (size_t f = 0; f < fs_mem_n_faults; f++) {
        uint64_t k;
        for (k = 1;; k++) {
            fs_mem *m = NULL;
            assert_int_equal(
                fs_mem_crash_clone(base, FS_CRASH_KEEP_UNSYNCED, k, &m),
                SHOAL_OK);
            fs_mem_fail(m, FS_OP_ALL, k, fs_mem_faults[f].code,
                        fs_mem_faults[f].forever, fs_mem_faults[f].short_write);
            store_opts o;
            opts_for(&o, fs_mem_fs(m));
            store *r = NULL;
            shoal_err rc = store_open(&o, &r);
            bool fired = fs_mem_fail_count(m) > 0;
            if (rc == SHOAL_OK) {
                /* The fault hit after recovery (or was absorbed): the data
                 * must be whole. */
                fs_mem_fail_clear(m);
                assert_true(wl_check(r, &w, w.n_ops, w.n_ops, NULL, true));
                store_close(r);
            } else {
                assert_null(r);
            }
            fs_mem_fail_clear(m);
            check_image(m, &w, w.n_ops, w.n_ops, "after failed recovery");
            fs_mem_close(m);
            if (!fired)
                break;
        }
        printf("# recovery, %s: failed calls 1..%llu\n", fs_mem_faults[f].name,
               (unsigned long long) (k - 1));
    }
    fs_mem_close(base);
    wl_free(&w);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ioerr_fsync_failure_is_sticky),
        cmocka_unit_test(test_ioerr_enospc_is_clean),
        cmocka_unit_test(test_ioerr_kth_call_during_writes),
        cmocka_unit_test(test_ioerr_kth_call_during_recovery),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
