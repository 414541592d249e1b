/*
 * entry.h -- the in-memory layout of one stored key/value.
 *
 * One allocation per entry, immutable once published in an index: a write
 * makes a new entry and retires the old one, so a snapshot can hold pointers
 * to entries without copying them (frees are deferred while a snapshot of
 * the shard runs).
 *
 *   +---------+------+------+-------+-----+------------------+-----+-------+
 *   | version | vlen | klen | flags | pad | expire_at (opt.) | key | value |
 *   |   u64   | u32  | u16  |  u8   | u8  | u64 if EXPIRES   |     |       |
 *   +---------+------+------+-------+-----+------------------+-----+-------+
 *
 * expire_at is stored only when nonzero, saving 8 bytes for most keys.
 */
#ifndef SHOAL_STORAGE_ENTRY_H
#define SHOAL_STORAGE_ENTRY_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define ENTRY_F_EXPIRES 0x01 /* expire_at present */
#define ENTRY_KEY_MAX   65535u

typedef struct entry {
    uint64_t version; /* shard LSN of the last write */
    uint32_t vlen;    /* value bytes */
    uint16_t klen;    /* key bytes, 1..ENTRY_KEY_MAX */
    uint8_t flags;    /* ENTRY_F_* */
    uint8_t pad;
    uint8_t data[]; /* [expire_at] key value */
} entry;

static inline size_t
entry_size(size_t klen, size_t vlen, uint64_t expire_at)
{
    return sizeof(entry) + (expire_at ? 8u : 0u) + klen + vlen;
}

static inline size_t
entry_alloc_size(const entry *e)
{
    return sizeof(entry) + ((e->flags & ENTRY_F_EXPIRES) ? 8u : 0u) + e->klen +
           e->vlen;
}

static inline uint64_t
entry_expire_at(const entry *e)
{
    uint64_t v = 0;
    if (e->flags & ENTRY_F_EXPIRES)
        memcpy(&v, e->data, 8);
    return v;
}

static inline const uint8_t *
entry_key(const entry *e)
{
    return e->data + ((e->flags & ENTRY_F_EXPIRES) ? 8u : 0u);
}

static inline const uint8_t *
entry_val(const entry *e)
{
    return entry_key(e) + e->klen;
}

/* Fill a freshly allocated entry of entry_size(klen, vlen, expire_at). */
static inline void
entry_fill(entry *e, uint64_t version, const uint8_t *key, size_t klen,
           const uint8_t *val, size_t vlen, uint64_t expire_at)
{
    e->version = version;
    e->vlen = (uint32_t) vlen;
    e->klen = (uint16_t) klen;
    e->flags = expire_at ? ENTRY_F_EXPIRES : 0;
    e->pad = 0;
    uint8_t *p = e->data;
    if (expire_at) {
        memcpy(p, &expire_at, 8);
        p += 8;
    }
    memcpy(p, key, klen);
    if (vlen)
        memcpy(p + klen, val, vlen);
}

/* Byte-wise key order: memcmp over the common prefix, then shorter first. */
static inline int
key_cmp(const uint8_t *a, size_t alen, const uint8_t *b, size_t blen)
{
    size_t n = alen < blen ? alen : blen;
    int c = n ? memcmp(a, b, n) : 0;
    if (c != 0)
        return c;
    return (alen > blen) - (alen < blen);
}

#endif
