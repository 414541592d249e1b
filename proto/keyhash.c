/*
 * keyhash.c -- SipHash-2-4 key -> shard mapping (see keyhash.h).
 */
#include "proto/keyhash.h"

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
