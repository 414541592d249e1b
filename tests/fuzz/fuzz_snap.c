/*
 * fuzz_snap.c -- libFuzzer target for the snapshot decoder (snap_decode).
 *
 * The first input byte picks the mode, the rest is the image:
 *   bit 0: fix up magic, version, body_len and both crcs after mutation, so
 *          mutations reach the zlib and entry parsers (TESTING.md) instead
 *          of dying at the crc check;
 *   bit 1: tiny limits (max_key 8, max_value 16) instead of 64 and 256;
 *   bit 2: max_value 64 KiB (with bit 1 clear), so the decoder's window
 *          (4 KiB for small bodies) has to grow;
 *   bit 3: the rest is not an image but u64 count | raw entry bytes, which
 *          the harness compresses into a valid image: mutations then hit
 *          the entry parser directly instead of the deflate stream.
 * Whatever decodes must hold the decoder's promises (lengths in range, keys
 * strictly increasing, count entries) and must survive a round trip: the
 * entries re-encoded by snap_enc decode to the same entries and meta.
 * Seeds: tests/fuzz/corpus/snap (written by test_snap with
 * SHOAL_SNAP_CORPUS=<dir>).
 */
#include "storage/snap.h"

#include "proto/bytes.h"
#include "storage/entry.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <zlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(e)                                                               \
    do {                                                                       \
        if (!(e)) {                                                            \
            fprintf(stderr, "fuzz_snap: %s:%d: %s\n", __FILE__, __LINE__, #e); \
            abort();                                                           \
        }                                                                      \
    } while (0)

/* Every entry decoded, copied (the decoder's pointers die with the cb). */
typedef struct seen {
    snap_entry *v;
    uint8_t **bytes;
    size_t n;
    size_t cap;
    size_t max_key;
    size_t max_value;
} seen;

static void
seen_free(seen *s)
{
    for (size_t i = 0; i < s->n; i++)
        free(s->bytes[i]);
    free(s->v);
    free(s->bytes);
    memset(s, 0, sizeof(*s));
}

static shoal_err
collect_cb(void *arg, const snap_entry *e)
{
    seen *s = arg;
    CHECK(e->klen >= 1 && e->klen <= s->max_key && e->vlen <= s->max_value);
    if (s->n > 0) {
        const snap_entry *p = &s->v[s->n - 1];
        CHECK(key_cmp(p->key, p->klen, e->key, e->klen) < 0);
    }
    if (s->n == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 16;
        snap_entry *v = realloc(s->v, cap * sizeof(*v));
        uint8_t **b = v ? realloc(s->bytes, cap * sizeof(*b)) : NULL;
        if (v != NULL)
            s->v = v;
        if (b == NULL)
            return SHOAL_ENOMEM;
        s->bytes = b;
        s->cap = cap;
    }
    uint8_t *copy = malloc((size_t) e->klen + e->vlen);
    if (copy == NULL)
        return SHOAL_ENOMEM;
    memcpy(copy, e->key, e->klen);
    if (e->vlen > 0)
        memcpy(copy + e->klen, e->val, e->vlen);
    s->bytes[s->n] = copy;
    s->v[s->n] = *e;
    s->v[s->n].key = copy;
    s->v[s->n].val = copy + e->klen;
    s->n++;
    return SHOAL_OK;
}

typedef struct grow {
    uint8_t *p;
    size_t len;
    size_t cap;
} grow;

static shoal_err
grow_sink(void *arg, const uint8_t *buf, size_t len)
{
    grow *g = arg;
    if (g->len + len > g->cap) {
        size_t cap = g->cap ? g->cap : 1024;
        while (cap < g->len + len)
            cap *= 2;
        uint8_t *p = realloc(g->p, cap);
        if (p == NULL)
            return SHOAL_ENOMEM;
        g->p = p;
        g->cap = cap;
    }
    memcpy(g->p + g->len, buf, len);
    g->len += len;
    return SHOAL_OK;
}

/* Re-encode what was decoded; it must decode to the same thing. */
static void
roundtrip(const snap_meta *m, const seen *s)
{
    uint8_t hdr[SNAP_HDR] = {0};
    grow g = {0};
    snap_enc *e = NULL;
    snap_meta m2;
    seen s2 = {.max_key = s->max_key, .max_value = s->max_value};

    CHECK(grow_sink(&g, hdr, SNAP_HDR) == SHOAL_OK);
    CHECK(snap_enc_open(m, grow_sink, &g, &e) == SHOAL_OK);
    for (size_t i = 0; i < s->n; i++)
        CHECK(snap_enc_add(e, &s->v[i]) == SHOAL_OK);
    CHECK(snap_enc_finish(e, hdr) == SHOAL_OK); /* g.p may move */
    memcpy(g.p, hdr, SNAP_HDR);
    snap_enc_free(e);
    CHECK(snap_decode(g.p, g.len, s->max_key, s->max_value, &m2, collect_cb,
                      &s2) == SHOAL_OK);
    CHECK(memcmp(&m2, m, sizeof(m2)) == 0 && s2.n == s->n);
    for (size_t i = 0; i < s->n; i++) {
        const snap_entry *a = &s->v[i], *b = &s2.v[i];
        CHECK(a->klen == b->klen && a->vlen == b->vlen &&
              a->version == b->version && a->expire_at == b->expire_at);
        CHECK(memcmp(a->key, b->key, (size_t) a->klen + a->vlen) == 0);
    }
    seen_free(&s2);
    free(g.p);
}

/* Make the header and trailer consistent with whatever the body now is. */
static void
fix_up(uint8_t *buf, size_t len)
{
    if (len < SNAP_HDR + 4)
        return;
    size_t body = len - SNAP_HDR - 4;
    memcpy(buf, "SHOALSNP", 8);
    put_u32(buf + 8, 1);
    put_u64(buf + 36, body);
    put_u32(buf + 44, (uint32_t) crc32(0, buf, 44));
    put_u32(buf + SNAP_HDR + body, (uint32_t) crc32_z(0, buf + SNAP_HDR, body));
}

/* Mode bit 3: compress raw entry bytes into an image (exact size). */
static uint8_t *
from_raw(const uint8_t *p, size_t n, size_t *len_out)
{
    if (n < 8)
        return NULL;
    uLong zcap = compressBound((uLong) (n - 8));
    uint8_t *img = malloc(SNAP_HDR + zcap + 4);
    if (img == NULL)
        return NULL;
    uLongf zlen = zcap;
    if (compress2(img + SNAP_HDR, &zlen, p + 8, (uLong) (n - 8), 1) != Z_OK) {
        free(img);
        return NULL;
    }
    memset(img, 0, SNAP_HDR);
    put_u64(img + 28, get_u64(p));
    *len_out = SNAP_HDR + zlen + 4;
    fix_up(img, *len_out);
    return img;
}

static uint8_t *
input_image(uint8_t mode, const uint8_t *p, size_t n, size_t *len_out)
{
    if (mode & 8)
        return from_raw(p, n, len_out);
    /* An exact-size copy, so ASan sees any read past the end. */
    uint8_t *buf = malloc(n ? n : 1);
    if (buf == NULL)
        return NULL;
    memcpy(buf, p, n);
    if (mode & 1)
        fix_up(buf, n);
    *len_out = n;
    return buf;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    uint8_t mode = data[0];
    size_t len = 0;
    uint8_t *buf = input_image(mode, data + 1, size - 1, &len);
    if (buf == NULL)
        return 0;
    seen s = {.max_key = (mode & 2) ? 8 : 64,
              .max_value = (mode & 2)   ? 16
                           : (mode & 4) ? (1u << 16)
                                        : 256};
    snap_meta m;
    shoal_err rc =
        snap_decode(buf, len, s.max_key, s.max_value, &m, collect_cb, &s);
    CHECK(rc == SHOAL_OK || rc == SHOAL_ECORRUPT || rc == SHOAL_ENOMEM);
    if (rc == SHOAL_OK) {
        CHECK(m.count == s.n);
        roundtrip(&m, &s);
    }
    seen_free(&s);
    free(buf);
    return 0;
}
