/*
 * test_slab.c -- the entry allocator: alignment, no overlap between live
 * objects of any size, reuse of freed objects, accounting, threads sharing
 * classes (objects freed by another thread than the one that allocated
 * them), and allocation failure. Objects are filled with a pattern naming
 * their owner and checked before they are freed: the slab has no red zones,
 * so this is what catches two live objects sharing bytes.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "proto/mem.h"
#include "storage/slab.h"
#include "tests/support/testutil.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

typedef struct obj {
    uint8_t *p;
    size_t len;
    uint8_t tag;
} obj;

static void
obj_fill(obj *o)
{
    memset(o->p, o->tag, o->len);
}

static bool
obj_ok(const obj *o)
{
    for (size_t i = 0; i < o->len; i++)
        if (o->p[i] != o->tag)
            return false;
    return true;
}

static void
obj_check(const obj *o)
{
    if (!obj_ok(o))
        fail_msg("object %p len %zu: bytes overwritten", (void *) o->p, o->len);
}

static slab *
open_slab(void)
{
    slab *s = NULL;
    assert_int_equal(slab_open(&s), SHOAL_OK);
    assert_non_null(s);
    assert_int_equal(slab_bytes(s), 0);
    return s;
}

/* Every size from 0 to beyond SLAB_MAX_OBJ: aligned, usable, disjoint. */
static void
test_slab_every_size(void **state)
{
    (void) state;
    slab *s = open_slab();
    enum { N = 2 * SLAB_MAX_OBJ + 2 };
    obj *o = calloc(N, sizeof(obj));
    assert_non_null(o);
    for (size_t len = 0; len < N; len++) {
        o[len].p = slab_alloc(s, len);
        assert_non_null(o[len].p);
        assert_int_equal((uintptr_t) o[len].p % SLAB_ALIGN, 0);
        o[len].len = len;
        o[len].tag = (uint8_t) (len * 31 + 7);
        obj_fill(&o[len]);
    }
    for (size_t len = 0; len < N; len++) {
        obj_check(&o[len]);
        slab_free(s, o[len].p, len);
    }
    slab_free(s, NULL, 8);
    free(o);
    slab_close(s);
    slab_close(NULL);
}

/* Freed objects come back to the next allocations of their class without
 * new pages; sizes in one class share objects. */
static void
test_slab_reuse(void **state)
{
    (void) state;
    slab *s = open_slab();
    enum { N = 5000 };
    void **p = calloc(N, sizeof(void *));
    assert_non_null(p);
    for (size_t i = 0; i < N; i++)
        assert_non_null(p[i] = slab_alloc(s, 132));
    size_t bytes = slab_bytes(s);
    assert_true(bytes >= N * 136);
    assert_true(bytes <= N * 136 + 2 * (64 * 1024 + 64));
    for (size_t i = 0; i < N; i++)
        slab_free(s, p[i], 132);
    for (size_t i = 0; i < N; i++) {
        void *q = slab_alloc(s, 129 + i % 8); /* same class: 136 bytes */
        bool seen = false;
        for (size_t j = 0; j < N && !seen; j++)
            seen = p[j] == q;
        assert_true(seen);
    }
    assert_int_equal(slab_bytes(s), bytes);
    free(p);
    slab_close(s); /* frees the objects still allocated */
}

/* Objects above SLAB_MAX_OBJ are counted at their size while they live. */
static void
test_slab_large_accounting(void **state)
{
    (void) state;
    slab *s = open_slab();
    void *a = slab_alloc(s, SLAB_MAX_OBJ + 1);
    void *b = slab_alloc(s, 1u << 20);
    assert_non_null(a);
    assert_non_null(b);
    assert_int_equal(slab_bytes(s), SLAB_MAX_OBJ + 1 + (1u << 20));
    memset(b, 0xab, 1u << 20);
    slab_free(s, a, SLAB_MAX_OBJ + 1);
    slab_free(s, b, 1u << 20);
    assert_int_equal(slab_bytes(s), 0);
    slab_close(s);
}

/* Random allocations and frees of random sizes against a shadow list. */
static void
test_slab_random(void **state)
{
    (void) state;
    uint64_t rng = tu_seed("slab_random");
    slab *s = open_slab();
    enum { LIVE = 4000 };
    obj *o = calloc(LIVE, sizeof(obj));
    assert_non_null(o);
    size_t rounds = tu_long() ? 2000000 : 200000;
    for (size_t r = 0; r < rounds; r++) {
        obj *x = &o[tu_rand(&rng) % LIVE];
        if (x->p != NULL) {
            obj_check(x);
            slab_free(s, x->p, x->len);
            x->p = NULL;
            continue;
        }
        uint64_t v = tu_rand(&rng);
        x->len = v % 8 == 0 ? v % 5000 : 1 + (v >> 8) % 300;
        x->tag = (uint8_t) r;
        assert_non_null(x->p = slab_alloc(s, x->len));
        obj_fill(x);
    }
    for (size_t i = 0; i < LIVE; i++) {
        if (o[i].p != NULL) {
            obj_check(&o[i]);
            slab_free(s, o[i].p, o[i].len);
        }
    }
    free(o);
    slab_close(s);
}

enum { THREADS = 4, PER_THREAD = 20000 };

typedef struct worker {
    slab *s;
    pthread_barrier_t *bar;
    obj *mine;   /* allocated here */
    obj *theirs; /* allocated by the next worker, freed here */
    uint64_t rng;
    uint8_t id;
    bool bad; /* cmocka asserts only on the main thread */
} worker;

/* Churn own objects, then free the neighbour's. */
static void *
worker_run(void *arg)
{
    worker *w = arg;
    for (size_t r = 0; r < 4 * PER_THREAD; r++) {
        obj *x = &w->mine[tu_rand(&w->rng) % PER_THREAD];
        if (x->p != NULL) {
            w->bad |= !obj_ok(x);
            slab_free(w->s, x->p, x->len);
            x->p = NULL;
            continue;
        }
        x->len = 8 + tu_rand(&w->rng) % 200; /* classes shared by all */
        x->tag = (uint8_t) (w->id * 64 + r % 64);
        x->p = slab_alloc(w->s, x->len);
        if (x->p == NULL) {
            w->bad = true;
            break;
        }
        obj_fill(x);
    }
    pthread_barrier_wait(w->bar);
    for (size_t i = 0; i < PER_THREAD; i++) {
        obj *x = &w->theirs[i];
        if (x->p == NULL)
            continue;
        w->bad |= !obj_ok(x);
        slab_free(w->s, x->p, x->len);
    }
    return NULL;
}

static void
test_slab_threads(void **state)
{
    (void) state;
    slab *s = open_slab();
    pthread_barrier_t bar;
    pthread_t th[THREADS];
    worker w[THREADS];
    uint64_t seed = tu_seed("slab_threads");
    assert_int_equal(pthread_barrier_init(&bar, NULL, THREADS), 0);
    for (unsigned i = 0; i < THREADS; i++) {
        w[i].mine = calloc(PER_THREAD, sizeof(obj));
        assert_non_null(w[i].mine);
    }
    for (unsigned i = 0; i < THREADS; i++) {
        w[i] = (worker){
            s,        &bar,        w[i].mine, w[(i + 1) % THREADS].mine,
            seed + i, (uint8_t) i, false};
        assert_int_equal(pthread_create(&th[i], NULL, worker_run, &w[i]), 0);
    }
    for (unsigned i = 0; i < THREADS; i++)
        assert_int_equal(pthread_join(th[i], NULL), 0);
    for (unsigned i = 0; i < THREADS; i++)
        assert_false(w[i].bad);
    for (unsigned i = 0; i < THREADS; i++)
        free(w[i].mine);
    pthread_barrier_destroy(&bar);
    slab_close(s);
}

static void
test_slab_open_enomem(void **state)
{
    (void) state;
    for (long n = 1;; n++) {
        slab *s = (slab *) 1;
        mem_fail_set(n, 0);
        shoal_err rc = slab_open(&s);
        mem_fail_set(0, 0);
        if (rc == SHOAL_OK) {
            slab_close(s);
            break;
        }
        assert_int_equal(rc, SHOAL_ENOMEM);
        assert_null(s);
    }
}

/* A failed page or large allocation returns NULL and changes nothing;
 * objects from the current page and the free list need no allocation. */
static void
test_slab_alloc_enomem(void **state)
{
    (void) state;
    slab *s = open_slab();
    mem_fail_set(1, 1);
    assert_null(slab_alloc(s, 100));
    assert_null(slab_alloc(s, SLAB_MAX_OBJ + 1));
    mem_fail_set(0, 0);
    assert_int_equal(slab_bytes(s), 0);

    void *a = slab_alloc(s, 100);
    assert_non_null(a);
    size_t bytes = slab_bytes(s);
    mem_fail_set(1, 1);
    void *b = slab_alloc(s, 100); /* same page */
    assert_non_null(b);
    slab_free(s, a, 100);
    assert_ptr_equal(slab_alloc(s, 100), a); /* free list */
    assert_null(slab_alloc(s, 200));         /* new class: new page */
    mem_fail_set(0, 0);
    assert_int_equal(slab_bytes(s), bytes);
    slab_close(s);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_slab_every_size),
        cmocka_unit_test(test_slab_reuse),
        cmocka_unit_test(test_slab_large_accounting),
        cmocka_unit_test(test_slab_random),
        cmocka_unit_test(test_slab_threads),
        cmocka_unit_test(test_slab_open_enomem),
        cmocka_unit_test(test_slab_alloc_enomem),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
