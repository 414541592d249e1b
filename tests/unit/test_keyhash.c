/*
 * test_keyhash.c -- key -> shard: deterministic, keyed, and balanced.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "proto/keyhash.h"

#include <stdio.h>
#include <string.h>

static const uint8_t hk1[KEYHASH_KEY_BYTES] = "0123456789abcdef";
static const uint8_t hk2[KEYHASH_KEY_BYTES] = "fedcba9876543210";

static void
test_keyhash_deterministic_and_keyed(void **state)
{
    (void) state;
    const uint8_t k[] = "user:42";
    uint32_t a = keyhash_shard(hk1, k, 7, 256);
    assert_int_equal(keyhash_shard(hk1, k, 7, 256), a);
    assert_true(a < 256);
    /* A different hash key moves most keys. */
    int moved = 0;
    char key[32];
    for (int i = 0; i < 1000; i++) {
        int n = snprintf(key, sizeof(key), "k%d", i);
        moved += keyhash_shard(hk1, (const uint8_t *) key, (size_t) n, 256) !=
                 keyhash_shard(hk2, (const uint8_t *) key, (size_t) n, 256);
    }
    assert_true(moved > 950);
}

static void
test_keyhash_balanced(void **state)
{
    (void) state;
    enum { S = 64, N = 64000 };
    int count[S] = {0};
    char key[32];
    for (int i = 0; i < N; i++) {
        int n = snprintf(key, sizeof(key), "key-%d", i);
        count[keyhash_shard(hk1, (const uint8_t *) key, (size_t) n, S)]++;
    }
    for (int s = 0; s < S; s++) {
        /* Expected 1000 per shard; 5 sigma is about +-160. */
        assert_true(count[s] > 840 && count[s] < 1160);
    }
}

static void
test_keyhash_parse_hex(void **state)
{
    (void) state;
    uint8_t k[KEYHASH_KEY_BYTES];
    assert_true(keyhash_parse_hex("000102030405060708090a0B0c0D0e0F", k));
    for (int i = 0; i < KEYHASH_KEY_BYTES; i++)
        assert_int_equal(k[i], i);
    assert_false(keyhash_parse_hex("", k));
    assert_false(keyhash_parse_hex("000102030405060708090a0b0c0d0e0", k));
    assert_false(keyhash_parse_hex("000102030405060708090a0b0c0d0e0f0", k));
    assert_false(keyhash_parse_hex("000102030405060708090a0b0c0d0e0g", k));
    assert_false(keyhash_parse_hex(" 00102030405060708090a0b0c0d0e0f", k));
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_keyhash_deterministic_and_keyed),
        cmocka_unit_test(test_keyhash_balanced),
        cmocka_unit_test(test_keyhash_parse_hex),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
