/*
 * keyhash.c -- SipHash-2-4 key -> shard mapping (see keyhash.h).
 */
#include "proto/keyhash.h"

#include <string.h>

#include "proto/bytes.h"

#include <sodium.h>

uint32_t
keyhash_shard(const uint8_t hash_key[KEYHASH_KEY_BYTES], const uint8_t *key,
              size_t klen, uint32_t n_shards)
{
    uint8_t h[crypto_shorthash_BYTES];
    crypto_shorthash(h, key, (unsigned long long) klen, hash_key);
    return (uint32_t) (get_u64(h) % n_shards);
}

static int
hexval(char ch)
{
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    if (ch >= 'a' && ch <= 'f')
        return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F')
        return ch - 'A' + 10;
    return -1;
}

bool
keyhash_parse_hex(const char *v, uint8_t out[KEYHASH_KEY_BYTES])
{
    if (strlen(v) != 2 * KEYHASH_KEY_BYTES)
        return false;
    for (size_t i = 0; i < KEYHASH_KEY_BYTES; i++) {
        int hi = hexval(v[2 * i]), lo = hexval(v[2 * i + 1]);
        if (hi < 0 || lo < 0)
            return false;
        out[i] = (uint8_t) (hi << 4 | lo);
    }
    return true;
}
