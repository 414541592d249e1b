/*
 * test_pbuf.c -- protobuf-c allocators (proto/pbuf.h): the per-frame arena
 * (alignment, big requests, reset, fini, allocation failure) and decoding a
 * RequestFrame through the arena and through pbuf_allocator with the k-th
 * allocation failing, k = 1.. until the decode succeeds (no crash, no leak
 * under ASan).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "proto/mem.h"
#include "proto/pbuf.h"
#include "proto/shoal.pb-c.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

static bool
aligned8(const void *p)
{
    return ((uintptr_t) p & 7u) == 0;
}

/* Small allocations: 8-aligned, disjoint (each filled with its own byte and
 * checked after all are made), counted in used. */
static void
test_pbuf_arena_alloc_aligned_disjoint(void **state)
{
    (void) state;
    enum { N = 500 };
    pbuf_arena a;
    uint8_t *p[N];
    size_t len[N], used = 0;
    pbuf_arena_init(&a, 1024);
    for (size_t i = 0; i < N; i++) {
        len[i] = i % 41; /* 0..40 bytes, every residue mod 8 */
        p[i] = pbuf_arena_alloc(&a, len[i]);
        assert_non_null(p[i]);
        assert_true(aligned8(p[i]));
        memset(p[i], (int) (i & 0xff), len[i]);
        used += (len[i] + 7) & ~(size_t) 7;
    }
    assert_int_equal(a.used, used);
    for (size_t i = 0; i < N; i++)
        for (size_t j = 0; j < len[i]; j++)
            assert_int_equal(p[i][j], i & 0xff);
    pbuf_arena_fini(&a);
    assert_null(a.chunks);
    assert_int_equal(a.used, 0);
}

/* Requests over a quarter chunk get their own chunk; the current chunk's
 * free room is still used by the next small request. */
static void
test_pbuf_arena_big_allocations(void **state)
{
    (void) state;
    pbuf_arena a;
    pbuf_arena_init(&a, 1024);
    uint8_t *s1 = pbuf_arena_alloc(&a, 16);
    uint8_t *big = pbuf_arena_alloc(&a, 100000);
    uint8_t *s2 = pbuf_arena_alloc(&a, 16);
    assert_non_null(s1);
    assert_non_null(big);
    assert_true(aligned8(big));
    memset(big, 0xee, 100000); /* ASan: the whole request is ours */
    assert_ptr_equal(s2, s1 + 16);
    /* Over a quarter chunk but fits the current one's room: served there. */
    uint8_t *big2 = pbuf_arena_alloc(&a, 257);
    assert_ptr_equal(big2, s2 + 16);
    memset(big2, 0xdd, 257);
    assert_ptr_equal(pbuf_arena_alloc(&a, 8), big2 + 264);
    assert_int_equal(big[99999], 0xee);
    assert_int_equal(a.used, 16 + 100000 + 16 + 264 + 8);
    /* Sizes that would overflow the rounding or cannot exist. */
    assert_null(pbuf_arena_alloc(&a, SIZE_MAX));
    assert_null(pbuf_arena_alloc(&a, SIZE_MAX - 3));
    assert_null(pbuf_arena_alloc(&a, SIZE_MAX - 16)); /* + chunk header */
    /* A big request into an empty arena. */
    pbuf_arena_fini(&a);
    big = pbuf_arena_alloc(&a, 5000);
    assert_non_null(big);
    memset(big, 1, 5000);
    pbuf_arena_fini(&a);
}

/* Reset keeps one regular chunk and hands its memory out again. */
static void
test_pbuf_arena_reset_reuses(void **state)
{
    (void) state;
    pbuf_arena a;
    pbuf_arena_init(&a, 0); /* raised to the minimum */
    assert_true(a.chunk_bytes >= 256);
    uint8_t *first = pbuf_arena_alloc(&a, 8);
    for (int i = 0; i < 100; i++)
        assert_non_null(pbuf_arena_alloc(&a, 40));
    assert_non_null(pbuf_arena_alloc(&a, 10000));
    for (int round = 0; round < 3; round++) {
        pbuf_arena_reset(&a);
        assert_int_equal(a.used, 0);
        assert_non_null(a.chunks);
        uint8_t *p = pbuf_arena_alloc(&a, 8);
        assert_non_null(p);
        memset(p, 0, 8);
        (void) first;
    }
    pbuf_arena_reset(&a);
    pbuf_arena_fini(&a);
    pbuf_arena_fini(&a); /* twice is harmless */
    /* Reset of a never-used arena. */
    pbuf_arena_init(&a, 512);
    pbuf_arena_reset(&a);
    assert_null(a.chunks);
    pbuf_arena_fini(&a);
}

static void
test_pbuf_arena_enomem(void **state)
{
    (void) state;
    pbuf_arena a;
    pbuf_arena_init(&a, 1024);
    mem_fail_set(1, 0);
    assert_null(pbuf_arena_alloc(&a, 8));
    assert_null(a.chunks);
    assert_int_equal(a.used, 0);
    assert_non_null(pbuf_arena_alloc(&a, 8));
    mem_fail_set(1, 0);
    assert_null(pbuf_arena_alloc(&a, 5000));  /* big chunk fails */
    assert_non_null(pbuf_arena_alloc(&a, 8)); /* current chunk still used */
    mem_fail_set(0, 0);
    assert_int_equal(a.used, 16);
    pbuf_arena_fini(&a);
}

/* ---- protobuf-c through the allocators ------------------------------------
 */

typedef struct frame_fixture {
    uint8_t *packed;
    size_t len;
} frame_fixture;

/* A RequestFrame with a get, a put (value, ttl, if_version), a batch of
 * three ops and a scan with shards: strings, bytes, nested and repeated
 * fields all need allocations to decode. */
static frame_fixture
build_frame(void)
{
    Shoal__GetReq get = SHOAL__GET_REQ__INIT;
    Shoal__PutReq put = SHOAL__PUT_REQ__INIT;
    Shoal__BatchReq batch = SHOAL__BATCH_REQ__INIT;
    Shoal__BatchOp op[3] = {SHOAL__BATCH_OP__INIT, SHOAL__BATCH_OP__INIT,
                            SHOAL__BATCH_OP__INIT};
    Shoal__BatchOp *ops[3] = {&op[0], &op[1], &op[2]};
    Shoal__ScanReq scan = SHOAL__SCAN_REQ__INIT;
    Shoal__Request rq[4] = {SHOAL__REQUEST__INIT, SHOAL__REQUEST__INIT,
                            SHOAL__REQUEST__INIT, SHOAL__REQUEST__INIT};
    Shoal__Request *rqs[4] = {&rq[0], &rq[1], &rq[2], &rq[3]};
    Shoal__RequestFrame fr = SHOAL__REQUEST_FRAME__INIT;
    static uint8_t value[3000];
    static uint32_t shards[] = {1, 5, 200};

    memset(value, 'v', sizeof(value));
    get.has_key = 1;
    get.key = (ProtobufCBinaryData){5, (uint8_t *) "alpha"};
    put.has_key = 1;
    put.key = (ProtobufCBinaryData){4, (uint8_t *) "beta"};
    put.has_value = 1;
    put.value = (ProtobufCBinaryData){sizeof(value), value};
    put.has_ttl_ms = put.has_if_version = 1;
    put.ttl_ms = 60000;
    put.if_version = 42;
    for (int i = 0; i < 3; i++) {
        op[i].has_kind = op[i].has_key = 1;
        op[i].kind =
            i == 1 ? SHOAL__BATCH_OP__KIND__DEL : SHOAL__BATCH_OP__KIND__PUT;
        op[i].key = (ProtobufCBinaryData){2, (uint8_t *) (i == 0   ? "k0"
                                                          : i == 1 ? "k1"
                                                                   : "k2")};
    }
    batch.n_ops = 3;
    batch.ops = ops;
    scan.has_prefix = 1;
    scan.prefix = (ProtobufCBinaryData){4, (uint8_t *) "app:"};
    scan.has_limit = 1;
    scan.limit = 100;
    scan.n_shards = 3;
    scan.shards = shards;
    rq[0].op_case = SHOAL__REQUEST__OP_GET;
    rq[0].get = &get;
    rq[1].op_case = SHOAL__REQUEST__OP_PUT;
    rq[1].put = &put;
    rq[2].op_case = SHOAL__REQUEST__OP_BATCH;
    rq[2].batch = &batch;
    rq[3].op_case = SHOAL__REQUEST__OP_SCAN;
    rq[3].scan = &scan;
    for (int i = 0; i < 4; i++) {
        rq[i].has_id = rq[i].has_map_epoch = 1;
        rq[i].id = 1000 + (uint64_t) i;
        rq[i].map_epoch = 7;
    }
    fr.n_reqs = 4;
    fr.reqs = rqs;

    frame_fixture fx;
    fx.len = shoal__request_frame__get_packed_size(&fr);
    fx.packed = malloc(fx.len);
    assert_int_equal(shoal__request_frame__pack(&fr, fx.packed), fx.len);
    return fx;
}

static void
check_frame(const Shoal__RequestFrame *fr)
{
    assert_int_equal(fr->n_reqs, 4);
    for (size_t i = 0; i < 4; i++) {
        assert_int_equal(fr->reqs[i]->id, 1000 + i);
        assert_int_equal(fr->reqs[i]->map_epoch, 7);
    }
    assert_int_equal(fr->reqs[0]->op_case, SHOAL__REQUEST__OP_GET);
    assert_memory_equal(fr->reqs[0]->get->key.data, "alpha", 5);
    const Shoal__PutReq *put = fr->reqs[1]->put;
    assert_int_equal(put->value.len, 3000);
    assert_int_equal(put->value.data[2999], 'v');
    assert_int_equal(put->ttl_ms, 60000);
    assert_int_equal(put->if_version, 42);
    const Shoal__BatchReq *b = fr->reqs[2]->batch;
    assert_int_equal(b->n_ops, 3);
    assert_int_equal(b->ops[1]->kind, SHOAL__BATCH_OP__KIND__DEL);
    assert_memory_equal(b->ops[2]->key.data, "k2", 2);
    const Shoal__ScanReq *sc = fr->reqs[3]->scan;
    assert_int_equal(sc->n_shards, 3);
    assert_int_equal(sc->shards[2], 200);
    assert_memory_equal(sc->prefix.data, "app:", 4);
}

static void
test_pbuf_unpack_through_arena(void **state)
{
    (void) state;
    frame_fixture fx = build_frame();
    pbuf_arena a;
    pbuf_arena_init(&a, 4096);
    for (int round = 0; round < 3; round++) {
        Shoal__RequestFrame *fr =
            shoal__request_frame__unpack(&a.alloc, fx.len, fx.packed);
        assert_non_null(fr);
        check_frame(fr);
        assert_true(a.used > 3000);
        /* Freeing through the arena is a no-op; reset releases it all. */
        shoal__request_frame__free_unpacked(fr, &a.alloc);
        pbuf_arena_reset(&a);
    }
    /* Truncated input fails cleanly through the arena too. */
    for (size_t n = 0; n < fx.len; n += 7) {
        Shoal__RequestFrame *fr =
            shoal__request_frame__unpack(&a.alloc, n, fx.packed);
        /* A cut at a field boundary decodes to fewer requests. */
        assert_true(fr == NULL || fr->n_reqs < 4);
        pbuf_arena_reset(&a);
    }
    pbuf_arena_fini(&a);
    free(fx.packed);
}

/* Fail the k-th allocation, k = 1.. until the decode succeeds: each failure
 * returns NULL and frees what it had (ASan's leak check at exit). */
static void
test_pbuf_unpack_fault_loop(void **state)
{
    (void) state;
    frame_fixture fx = build_frame();
    Shoal__RequestFrame *fr = NULL;
    long k;
    for (k = 1; fr == NULL; k++) {
        long before = mem_fail_count();
        mem_fail_set(k, 0);
        fr = shoal__request_frame__unpack(pbuf_allocator(), fx.len, fx.packed);
        mem_fail_set(0, 0);
        if (fr == NULL)
            assert_int_equal(mem_fail_count(), before + 1);
        assert_true(k < 1000);
    }
    assert_true(k > 10); /* the frame needs many allocations */
    check_frame(fr);
    shoal__request_frame__free_unpacked(fr, pbuf_allocator());

    /* The same through an arena: its chunks fail instead. */
    pbuf_arena a;
    pbuf_arena_init(&a, 512);
    fr = NULL;
    for (k = 1; fr == NULL; k++) {
        pbuf_arena_reset(&a);
        mem_fail_set(k, 0);
        fr = shoal__request_frame__unpack(&a.alloc, fx.len, fx.packed);
        mem_fail_set(0, 0);
        assert_true(k < 1000);
    }
    check_frame(fr);
    pbuf_arena_fini(&a);
    free(fx.packed);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_pbuf_arena_alloc_aligned_disjoint),
        cmocka_unit_test(test_pbuf_arena_big_allocations),
        cmocka_unit_test(test_pbuf_arena_reset_reuses),
        cmocka_unit_test(test_pbuf_arena_enomem),
        cmocka_unit_test(test_pbuf_unpack_through_arena),
        cmocka_unit_test(test_pbuf_unpack_fault_loop),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
