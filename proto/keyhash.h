/*
 * keyhash.h -- key -> shard, shared by nodes and clients (DESIGN §3):
 * shard = siphash(cluster_hash_key, key) mod n_shards, with libsodium's
 * crypto_shorthash (SipHash-2-4, 16-byte key).
 */
#ifndef SHOAL_PROTO_KEYHASH_H
#define SHOAL_PROTO_KEYHASH_H

#include <stddef.h>
#include <stdint.h>

#define KEYHASH_KEY_BYTES 16

/* Shard of key under hash_key; n_shards must be > 0. */
uint32_t keyhash_shard(const uint8_t hash_key[KEYHASH_KEY_BYTES],
                       const uint8_t *key, size_t klen, uint32_t n_shards);

/* Parse 2 * KEYHASH_KEY_BYTES hex digits (either case) into out. false if
 * v is not exactly that (out is then unspecified). */
#include <stdbool.h>
bool keyhash_parse_hex(const char *v, uint8_t out[KEYHASH_KEY_BYTES]);

#endif
