/*
 * snap.c -- per-shard snapshots (DESIGN §7): a streaming zlib encoder that
 * writes through a sink, a pure decoder for hostile images, and the file
 * side (temp file, fsync, rename, directory fsync; load the newest valid
 * file; prune old ones).
 *
 * Image layout, integers little-endian (SNAP_HDR = 48):
 *
 *   offset  size      field
 *        0     8      magic "SHOALSNP"
 *        8     4      version (1)
 *       12     4      shard
 *       16     4      shard_epoch
 *       20     8      lsn
 *       28     8      count: number of entries
 *       36     8      body_len: bytes of the zlib stream
 *       44     4      crc32 of bytes 0..43
 *       48     body_len  zlib stream (RFC 1950) of count entries, each
 *                        u64 version | u64 expire_at | u32 klen | u32 vlen |
 *                        key | value
 *   48+body_len  4    crc32 of the body bytes
 *
 * Invariants, all checked by the decoder (any failure is SHOAL_ECORRUPT):
 *  - the image is exactly SNAP_HDR + body_len + 4 bytes; both crcs match;
 *  - 1 <= klen <= max_key, vlen <= max_value, keys strictly increasing
 *    (key_cmp), exactly count entries;
 *  - the zlib stream ends exactly at the end of the body, and its inflated
 *    bytes end exactly after the last entry.
 * The decoder never trusts a count or a length for allocation: it inflates
 * into a window that starts at 4-256 KiB (by body size) and doubles only
 * when it is full of inflated bytes of one entry, up to ENT_HDR + max_key +
 * max_value, so memory is bounded by the limits and by what the data really
 * holds (a zip bomb claiming huge lengths gets a small window and
 * ECORRUPT).
 *
 * A file named snap-<shard:04x>-<lsn:016x>.snap only gets that name by a
 * rename after its bytes were fsynced, and its header must name the same
 * shard and lsn. Writer states:
 *
 *   open --add*--> commit: finish, header, fsync, rename, dir fsync -> freed
 *     |      \--> any failure -> failed (sticky: add returns the error;
 *     |                          commit or abort removes the temp file)
 *     \--> abort: temp removed -> freed
 *
 * Not thread-safe: one writer per shard at a time (the shard's snapshot
 * mutex); snap_prune removes every *.tmp of the shard, so it must not run
 * while a writer of that shard is open.
 */
#include "storage/snap.h"

#include "proto/bytes.h"
#include "proto/mem.h"
#include "proto/slog.h"
#include "storage/entry.h"

#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ZLIB_CONST
#include <zlib.h>

#define SNAP_MAGIC     "SHOALSNP"
#define SNAP_VERSION   1u
#define SNAP_TRAILER   4u
#define HDR_CRC_OFF    44u
#define ENT_HDR        24u            /* version, expire_at, klen, vlen */
#define ENC_LEVEL      1              /* see the measurements below */
#define ENC_MEMLEVEL   9              /* 512 KiB hash: +15% speed vs 8 */
#define STAGE_CAP      (64u * 1024u)  /* entry bytes batched per deflate */
#define OUT_CAP        (256u * 1024u) /* compressed bytes per sink call */
#define WIN_START      (256u * 1024u) /* decoder window for big bodies */
#define WIN_MIN        (4u * 1024u)   /* ... and for small ones */
#define ZCHUNK         (1u << 30)     /* bytes per zlib call (uInt) */
#define NAME_LEN       31u            /* "snap-xxxx-<16 hex>.snap" */
#define TMP_SUFFIX     ".tmp"
#define SNAP_PATH_MAX  4096u
#define SNAP_SHARD_MAX 0xffffu /* four hex digits in the name */

/* --- zlib allocator on the mem seam --------------------------------------- */

static voidpf
z_alloc(voidpf opaque, uInt items, uInt size)
{
    (void) opaque;
    /* Not calloc: zlib zeroes what it reads before writing (deflate's hash
     * heads, the window tail since 1.2.5), and zeroing ~1 MiB of deflate
     * state per encoder is measurable on small snapshots. */
    if (size != 0 && items > SIZE_MAX / size)
        return NULL;
    return mem_alloc((size_t) items * size);
}

static void
z_free(voidpf opaque, voidpf p)
{
    (void) opaque;
    mem_free(p);
}

static const char *
ename(shoal_err rc)
{
    return shoal_errname(rc);
}

static uint32_t
crc_of(const uint8_t *p, size_t len)
{
    return (uint32_t) crc32_z(0, p, len);
}

/* --- encoder -------------------------------------------------------------- */

/*
 * Entries are copied into a 64 KiB stage and deflated in batches (one
 * deflate call per ~30-byte entry costs more than the compression); large
 * values go to deflate directly. Compressed bytes collect in a 256 KiB
 * buffer handed to the sink when full, so a file sink makes one pwrite per
 * 256 KiB.
 *
 * Level 1 with memLevel 9 is the fastest setting that still compresses.
 * Measured with stock zlib 1.2.13 on the dev machine (one core): level 1
 * does 100-120 MB/s (output 46% of the input for half-random values, 34%
 * for JSON-like ones), level 6 does 15-40 MB/s for 1-7% smaller output,
 * Z_RLE and Z_HUFFMAN_ONLY are no faster and 50-60% bigger, and level 0
 * (stored) runs at 2 GB/s without compressing. So deflate itself bounds
 * the encoder; the staging and crc add a few percent. test_snap prints
 * the figures (SHOAL_TEST_LONG=1, Release build).
 */
struct snap_enc {
    z_stream zs;
    bool zs_live;  /* deflateInit succeeded */
    bool finished; /* snap_enc_finish succeeded */
    shoal_err err; /* sticky: first failure */
    snap_sink sink;
    void *arg;
    snap_meta meta;
    uint64_t added;    /* entries accepted */
    uint64_t body_len; /* compressed bytes produced */
    uint32_t body_crc; /* crc32 of those bytes */
    uint8_t *prev;     /* last key added */
    size_t prev_len;
    size_t prev_cap;
    uint8_t *stage; /* STAGE_CAP: entry bytes not yet deflated */
    size_t stage_len;
    uint8_t *out; /* OUT_CAP: compressed bytes not yet sunk */
    size_t out_len;
};

shoal_err
snap_enc_open(const snap_meta *m, snap_sink sink, void *arg, snap_enc **out)
{
    snap_enc *e = NULL;

    *out = NULL;
    if (m == NULL || sink == NULL)
        return SHOAL_EINVAL;
    if ((e = mem_calloc(1, sizeof(*e))) == NULL)
        return SHOAL_ENOMEM;
    e->sink = sink;
    e->arg = arg;
    e->meta = *m;
    e->stage = mem_alloc(STAGE_CAP);
    e->out = mem_alloc(OUT_CAP);
    if (e->stage == NULL || e->out == NULL)
        goto nomem;
    e->zs.zalloc = z_alloc;
    e->zs.zfree = z_free;
    if (deflateInit2(&e->zs, ENC_LEVEL, Z_DEFLATED, 15, ENC_MEMLEVEL,
                     Z_DEFAULT_STRATEGY) != Z_OK)
        goto nomem;
    e->zs_live = true;
    *out = e;
    return SHOAL_OK;
nomem:
    snap_enc_free(e);
    return SHOAL_ENOMEM;
}

void
snap_enc_free(snap_enc *e)
{
    if (e == NULL)
        return;
    if (e->zs_live)
        deflateEnd(&e->zs);
    mem_free(e->prev);
    mem_free(e->stage);
    mem_free(e->out);
    mem_free(e);
}

static shoal_err
enc_sink_out(snap_enc *e)
{
    shoal_err rc = SHOAL_OK;
    if (e->out_len > 0)
        rc = e->sink(e->arg, e->out, e->out_len);
    e->out_len = 0;
    return rc;
}

/* Deflate one chunk (at most ZCHUNK bytes) with flush; returns once zlib
 * has taken all the input (and, for Z_FINISH, ended the stream). */
static shoal_err
enc_deflate_chunk(snap_enc *e, const uint8_t *p, uInt len, int flush)
{
    shoal_err rc;
    int zr;

    e->zs.next_in = p;
    e->zs.avail_in = len;
    do {
        if (e->out_len == OUT_CAP && (rc = enc_sink_out(e)) != SHOAL_OK)
            return rc;
        uint8_t *o = e->out + e->out_len;
        e->zs.next_out = o;
        e->zs.avail_out = (uInt) (OUT_CAP - e->out_len);
        zr = deflate(&e->zs, flush);
        /* Z_BUF_ERROR only means "no progress possible": not an error. */
        SH_ASSERT(zr == Z_OK || zr == Z_STREAM_END || zr == Z_BUF_ERROR);
        size_t made = (size_t) (e->zs.next_out - o);
        e->body_crc = (uint32_t) crc32_z(e->body_crc, o, made);
        e->body_len += made;
        e->out_len += made;
    } while (e->zs.avail_out == 0 || (flush == Z_FINISH && zr != Z_STREAM_END));
    return SHOAL_OK;
}

static shoal_err
enc_deflate(snap_enc *e, const uint8_t *p, size_t len, int flush)
{
    shoal_err rc;
    do {
        uInt n = len > ZCHUNK ? ZCHUNK : (uInt) len;
        int fl = (size_t) n == len ? flush : Z_NO_FLUSH;
        if ((rc = enc_deflate_chunk(e, p, n, fl)) != SHOAL_OK)
            return rc;
        p += n;
        len -= n;
    } while (len > 0);
    return SHOAL_OK;
}

/* Append entry bytes: small pieces go through the stage, big ones (over half
 * the stage) straight to deflate after the stage is drained. */
static shoal_err
enc_put(snap_enc *e, const uint8_t *p, size_t len)
{
    shoal_err rc;

    if (len <= STAGE_CAP - e->stage_len) {
        if (len > 0)
            memcpy(e->stage + e->stage_len, p, len);
        e->stage_len += len;
        return SHOAL_OK;
    }
    if (e->stage_len > 0 &&
        (rc = enc_deflate(e, e->stage, e->stage_len, Z_NO_FLUSH)) != SHOAL_OK)
        return rc;
    e->stage_len = 0;
    if (len > STAGE_CAP / 2)
        return enc_deflate(e, p, len, Z_NO_FLUSH);
    memcpy(e->stage, p, len);
    e->stage_len = len;
    return SHOAL_OK;
}

static shoal_err
enc_check(const snap_enc *e, const snap_entry *ent)
{
    if (e->finished || e->added >= e->meta.count)
        return SHOAL_EINVAL;
    if (ent == NULL || ent->klen == 0 || ent->key == NULL)
        return SHOAL_EINVAL;
    if (ent->vlen > 0 && ent->val == NULL)
        return SHOAL_EINVAL;
    if (e->added > 0 && key_cmp(e->prev, e->prev_len, ent->key, ent->klen) >= 0)
        return SHOAL_EINVAL;
    return SHOAL_OK;
}

static shoal_err
enc_remember_key(snap_enc *e, const uint8_t *key, size_t klen)
{
    if (klen > e->prev_cap) {
        size_t cap = klen < 64 ? 64 : klen;
        uint8_t *p = mem_realloc(e->prev, cap);
        if (p == NULL)
            return SHOAL_ENOMEM;
        e->prev = p;
        e->prev_cap = cap;
    }
    memcpy(e->prev, key, klen);
    e->prev_len = klen;
    return SHOAL_OK;
}

shoal_err
snap_enc_add(snap_enc *e, const snap_entry *ent)
{
    uint8_t h[ENT_HDR];
    shoal_err rc;

    if (e->err != SHOAL_OK)
        return e->err;
    if ((rc = enc_check(e, ent)) != SHOAL_OK)
        goto fail;
    if ((rc = enc_remember_key(e, ent->key, ent->klen)) != SHOAL_OK)
        goto fail;
    put_u64(h, ent->version);
    put_u64(h + 8, ent->expire_at);
    put_u32(h + 16, ent->klen);
    put_u32(h + 20, ent->vlen);
    if ((rc = enc_put(e, h, ENT_HDR)) != SHOAL_OK ||
        (rc = enc_put(e, ent->key, ent->klen)) != SHOAL_OK ||
        (rc = enc_put(e, ent->val, ent->vlen)) != SHOAL_OK)
        goto fail;
    e->added++;
    return SHOAL_OK;
fail:
    e->err = rc;
    return rc;
}

static void
build_header(const snap_meta *m, uint64_t body_len, uint8_t h[SNAP_HDR])
{
    memcpy(h, SNAP_MAGIC, 8);
    put_u32(h + 8, SNAP_VERSION);
    put_u32(h + 12, m->shard);
    put_u32(h + 16, m->shard_epoch);
    put_u64(h + 20, m->lsn);
    put_u64(h + 28, m->count);
    put_u64(h + 36, body_len);
    put_u32(h + HDR_CRC_OFF, crc_of(h, HDR_CRC_OFF));
}

shoal_err
snap_enc_finish(snap_enc *e, uint8_t hdr_out[SNAP_HDR])
{
    shoal_err rc;

    if (e->err != SHOAL_OK)
        return e->err;
    if (e->finished || e->added != e->meta.count) {
        rc = SHOAL_EINVAL;
        goto fail;
    }
    if ((rc = enc_deflate(e, e->stage, e->stage_len, Z_FINISH)) != SHOAL_OK)
        goto fail;
    e->stage_len = 0;
    if (OUT_CAP - e->out_len < SNAP_TRAILER &&
        (rc = enc_sink_out(e)) != SHOAL_OK)
        goto fail;
    put_u32(e->out + e->out_len, e->body_crc);
    e->out_len += SNAP_TRAILER;
    if ((rc = enc_sink_out(e)) != SHOAL_OK)
        goto fail;
    build_header(&e->meta, e->body_len, hdr_out);
    e->finished = true;
    return SHOAL_OK;
fail:
    e->err = rc;
    return rc;
}

/* --- decoder -------------------------------------------------------------- */

typedef struct dec {
    z_stream zs;
    bool zs_live;        /* inflateInit succeeded */
    bool eos;            /* inflate returned Z_STREAM_END */
    const uint8_t *body; /* the zlib stream */
    uint64_t body_len;   /* its bytes */
    uint64_t fed;        /* body bytes handed to inflate */
    uint8_t *win;        /* inflated bytes */
    size_t cap;          /* win bytes allocated */
    size_t max_cap;      /* ENT_HDR + max_key + max_value (clamped) */
    size_t pos;          /* first unparsed byte of win */
    size_t fill;         /* end of inflated bytes in win */
    const uint8_t *prev; /* previous key: in win, or in prev_buf */
    size_t prev_len;
    uint8_t *prev_buf; /* the previous key, saved before win moves */
    size_t prev_buf_cap;
    uint64_t count;   /* entries the header claims */
    uint64_t seen;    /* entries parsed */
    uint32_t max_key; /* limits, clamped to the u32 fields */
    uint32_t max_value;
    snap_entry_cb cb; /* NULL: validate only */
    void *arg;
    const char *why; /* reason for SHOAL_ECORRUPT */
} dec;

static shoal_err
corrupt(const char **why, const char *reason)
{
    *why = reason;
    return SHOAL_ECORRUPT;
}

/* Header, length and both crcs; fills *m and *body_len. */
static shoal_err
check_image(const uint8_t *buf, size_t len, snap_meta *m, uint64_t *body_len,
            const char **why)
{
    if (buf == NULL || len < SNAP_HDR + SNAP_TRAILER)
        return corrupt(why, "shorter than header and trailer");
    if (memcmp(buf, SNAP_MAGIC, 8) != 0)
        return corrupt(why, "bad magic");
    if (crc_of(buf, HDR_CRC_OFF) != get_u32(buf + HDR_CRC_OFF))
        return corrupt(why, "bad header crc");
    if (get_u32(buf + 8) != SNAP_VERSION)
        return corrupt(why, "unknown version");
    *body_len = get_u64(buf + 36);
    if (*body_len != len - SNAP_HDR - SNAP_TRAILER)
        return corrupt(why, "file length does not match header");
    size_t n = (size_t) *body_len;
    if (crc_of(buf + SNAP_HDR, n) != get_u32(buf + SNAP_HDR + n))
        return corrupt(why, "bad body crc");
    m->shard = get_u32(buf + 12);
    m->shard_epoch = get_u32(buf + 16);
    m->lsn = get_u64(buf + 20);
    m->count = get_u64(buf + 28);
    return SHOAL_OK;
}

static shoal_err
dec_init(dec *d, const uint8_t *body, uint64_t body_len, uint64_t count,
         size_t max_key, size_t max_value)
{
    memset(d, 0, sizeof(*d));
    d->body = body;
    d->body_len = body_len;
    d->count = count;
    d->max_key = max_key > UINT32_MAX ? UINT32_MAX : (uint32_t) max_key;
    d->max_value = max_value > UINT32_MAX ? UINT32_MAX : (uint32_t) max_value;
    uint64_t max_cap = (uint64_t) ENT_HDR + d->max_key + d->max_value;
    d->max_cap = max_cap > SIZE_MAX ? SIZE_MAX : (size_t) max_cap;
    /* Small bodies start small (most shards are), big ones at WIN_START;
     * either way the window grows only with real data. */
    d->cap = body_len < WIN_START ? (size_t) body_len : WIN_START;
    d->cap = d->cap < WIN_MIN ? WIN_MIN : d->cap;
    d->cap = d->cap > d->max_cap ? d->max_cap : d->cap;
    if ((d->win = mem_alloc(d->cap)) == NULL)
        return SHOAL_ENOMEM;
    d->zs.zalloc = z_alloc;
    d->zs.zfree = z_free;
    int zr = inflateInit(&d->zs);
    if (zr == Z_MEM_ERROR)
        return SHOAL_ENOMEM;
    SH_ASSERT(zr == Z_OK);
    d->zs_live = true;
    return SHOAL_OK;
}

static void
dec_fini(dec *d)
{
    if (d->zs_live)
        inflateEnd(&d->zs);
    mem_free(d->win);
    mem_free(d->prev_buf);
}

/* Bytes the entry at pos needs in the window (ENT_HDR while its header is
 * incomplete); ECORRUPT for lengths over the limits. */
static shoal_err
dec_need(dec *d, size_t *need)
{
    if (d->fill - d->pos < ENT_HDR) {
        *need = ENT_HDR;
        return SHOAL_OK;
    }
    const uint8_t *h = d->win + d->pos;
    uint32_t klen = get_u32(h + 16);
    uint32_t vlen = get_u32(h + 20);
    if (klen == 0 || klen > d->max_key)
        return corrupt(&d->why, "key length out of range");
    if (vlen > d->max_value)
        return corrupt(&d->why, "value length over the limit");
    /* Cannot overflow: at most max_cap. */
    *need = (size_t) ENT_HDR + klen + vlen;
    return SHOAL_OK;
}

/* Parse the whole entry at pos, check its order and hand it to cb. */
static shoal_err
dec_entry(dec *d, size_t need)
{
    const uint8_t *h = d->win + d->pos;
    snap_entry ent = {
        .version = get_u64(h),
        .expire_at = get_u64(h + 8),
        .klen = get_u32(h + 16),
        .vlen = get_u32(h + 20),
        .key = h + ENT_HDR,
    };
    ent.val = ent.key + ent.klen;
    if (d->seen == d->count)
        return corrupt(&d->why, "more entries than the header count");
    if (d->seen > 0 && key_cmp(d->prev, d->prev_len, ent.key, ent.klen) >= 0)
        return corrupt(&d->why, "keys not strictly increasing");
    if (d->cb != NULL) {
        shoal_err rc = d->cb(d->arg, &ent);
        if (rc != SHOAL_OK)
            return rc;
    }
    d->prev = ent.key;
    d->prev_len = ent.klen;
    d->pos += need;
    d->seen++;
    return SHOAL_OK;
}

/* Copy the previous key out of the window before the window moves. */
static shoal_err
dec_save_prev(dec *d)
{
    if (d->seen == 0 || d->prev == d->prev_buf)
        return SHOAL_OK;
    if (d->prev_len > d->prev_buf_cap) {
        uint8_t *p = mem_realloc(d->prev_buf, d->prev_len);
        if (p == NULL)
            return SHOAL_ENOMEM;
        d->prev_buf = p;
        d->prev_buf_cap = d->prev_len;
    }
    memcpy(d->prev_buf, d->prev, d->prev_len);
    d->prev = d->prev_buf;
    return SHOAL_OK;
}

/* Make room for need bytes at the start of the window: move the unparsed
 * tail down, and grow only when the window is full of one entry's bytes, so
 * its size follows what was really inflated, not what a length claims. */
static shoal_err
dec_make_room(dec *d, size_t need)
{
    shoal_err rc;

    if ((rc = dec_save_prev(d)) != SHOAL_OK)
        return rc;
    if (d->pos > 0) {
        memmove(d->win, d->win + d->pos, d->fill - d->pos);
        d->fill -= d->pos;
        d->pos = 0;
    }
    if (d->fill < d->cap || need <= d->cap)
        return SHOAL_OK;
    size_t cap = d->cap > d->max_cap / 2 ? d->max_cap : d->cap * 2;
    uint8_t *w = mem_realloc(d->win, cap);
    if (w == NULL)
        return SHOAL_ENOMEM;
    d->win = w;
    d->cap = cap;
    return SHOAL_OK;
}

/* Inflate more bytes into the window after fill (room is guaranteed). */
static shoal_err
dec_inflate(dec *d)
{
    if (d->zs.avail_in == 0 && d->fed < d->body_len) {
        uint64_t rest = d->body_len - d->fed;
        d->zs.next_in = d->body + d->fed;
        d->zs.avail_in = rest > ZCHUNK ? ZCHUNK : (uInt) rest;
        d->fed += d->zs.avail_in;
    }
    size_t room = d->cap - d->fill;
    d->zs.next_out = d->win + d->fill;
    d->zs.avail_out = room > ZCHUNK ? ZCHUNK : (uInt) room;
    int zr = inflate(&d->zs, Z_NO_FLUSH);
    d->fill = (size_t) (d->zs.next_out - d->win);
    if (zr == Z_OK)
        return SHOAL_OK;
    if (zr == Z_MEM_ERROR)
        return SHOAL_ENOMEM;
    if (zr != Z_STREAM_END)
        return corrupt(&d->why, zr == Z_BUF_ERROR ? "zlib stream truncated"
                                                  : "zlib stream damaged");
    d->eos = true;
    if (d->zs.avail_in != 0 || d->fed != d->body_len)
        return corrupt(&d->why, "bytes after the zlib stream");
    return SHOAL_OK;
}

static shoal_err
dec_run(dec *d)
{
    shoal_err rc;
    size_t need;

    for (;;) {
        if ((rc = dec_need(d, &need)) != SHOAL_OK)
            return rc;
        if (d->fill - d->pos >= need) {
            if ((rc = dec_entry(d, need)) != SHOAL_OK)
                return rc;
            continue;
        }
        if (d->eos)
            break;
        if ((rc = dec_make_room(d, need)) != SHOAL_OK ||
            (rc = dec_inflate(d)) != SHOAL_OK)
            return rc;
    }
    if (d->pos != d->fill)
        return corrupt(&d->why, "stream ends inside an entry");
    if (d->seen != d->count)
        return corrupt(&d->why, "fewer entries than the header count");
    return SHOAL_OK;
}

/* Inflate and check the body of an image that passed check_image. */
static shoal_err
decode_body(const uint8_t *buf, uint64_t body_len, const snap_meta *m,
            size_t max_key, size_t max_value, snap_entry_cb cb, void *arg,
            const char **why)
{
    dec d;
    shoal_err rc =
        dec_init(&d, buf + SNAP_HDR, body_len, m->count, max_key, max_value);
    if (rc == SHOAL_OK) {
        d.cb = cb;
        d.arg = arg;
        rc = dec_run(&d);
    }
    if (rc == SHOAL_ECORRUPT && d.why != NULL)
        *why = d.why;
    dec_fini(&d);
    return rc;
}

shoal_err
snap_decode(const uint8_t *buf, size_t len, size_t max_key, size_t max_value,
            snap_meta *meta_out, snap_entry_cb cb, void *arg)
{
    const char *why = NULL;
    uint64_t body_len = 0;
    snap_meta m;
    shoal_err rc;

    if ((rc = check_image(buf, len, &m, &body_len, &why)) != SHOAL_OK)
        return rc;
    /* Set once the crcs pass, before the first cb, so cb may consult it. */
    if (meta_out != NULL)
        *meta_out = m;
    return decode_body(buf, body_len, &m, max_key, max_value, cb, arg, &why);
}

/* --- file names ----------------------------------------------------------- */

static bool
parse_hex(const char *s, size_t n, uint64_t *out)
{
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        unsigned d;
        if (c >= '0' && c <= '9')
            d = (unsigned) (c - '0');
        else if (c >= 'a' && c <= 'f')
            d = (unsigned) (c - 'a') + 10u;
        else
            return false;
        v = (v << 4) | d;
    }
    *out = v;
    return true;
}

/* "snap-<shard:04x>-<lsn:016x>.snap" with an optional ".tmp"; lowercase hex
 * only, exactly as snap_path writes it. */
static bool
parse_name(const char *name, uint32_t *shard, uint64_t *lsn, bool *is_tmp)
{
    size_t n = strlen(name);
    uint64_t sh;

    if (n == NAME_LEN)
        *is_tmp = false;
    else if (n == NAME_LEN + 4 && strcmp(name + NAME_LEN, TMP_SUFFIX) == 0)
        *is_tmp = true;
    else
        return false;
    if (memcmp(name, "snap-", 5) != 0 || name[9] != '-' ||
        memcmp(name + 26, ".snap", 5) != 0)
        return false;
    if (!parse_hex(name + 5, 4, &sh) || !parse_hex(name + 10, 16, lsn))
        return false;
    *shard = (uint32_t) sh;
    return true;
}

static shoal_err
snap_path(char *out, const char *dir, uint32_t shard, uint64_t lsn, bool is_tmp)
{
    char name[64];
    snprintf(name, sizeof(name), "snap-%04" PRIx32 "-%016" PRIx64 ".snap%s",
             shard, lsn, is_tmp ? TMP_SUFFIX : "");
    return fs_path(out, SNAP_PATH_MAX, dir, name);
}

/* The snapshot files (and temp files) of one shard in a directory. */
typedef struct snap_list {
    uint32_t shard;
    uint64_t *lsn; /* complete snapshots, sorted newest first */
    size_t n;
    size_t cap;
    uint64_t *tmp; /* temp files */
    size_t n_tmp;
    size_t cap_tmp;
} snap_list;

static shoal_err
push_lsn(uint64_t **v, size_t *n, size_t *cap, uint64_t lsn)
{
    if (*n == *cap) {
        size_t c = *cap ? *cap * 2 : 16;
        uint64_t *p = mem_realloc(*v, c * sizeof(*p));
        if (p == NULL)
            return SHOAL_ENOMEM;
        *v = p;
        *cap = c;
    }
    (*v)[(*n)++] = lsn;
    return SHOAL_OK;
}

static shoal_err
list_cb(void *arg, const char *name)
{
    snap_list *l = arg;
    uint32_t shard;
    uint64_t lsn;
    bool is_tmp;

    if (!parse_name(name, &shard, &lsn, &is_tmp) || shard != l->shard)
        return SHOAL_OK;
    if (is_tmp)
        return push_lsn(&l->tmp, &l->n_tmp, &l->cap_tmp, lsn);
    return push_lsn(&l->lsn, &l->n, &l->cap, lsn);
}

static int
lsn_desc(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *) a, y = *(const uint64_t *) b;
    return (x < y) - (x > y);
}

static void
list_free(snap_list *l)
{
    mem_free(l->lsn);
    mem_free(l->tmp);
}

static shoal_err
list_shard(fs *f, const char *dir, uint32_t shard, snap_list *l)
{
    memset(l, 0, sizeof(*l));
    l->shard = shard;
    shoal_err rc = fs_list(f, dir, list_cb, l);
    if (rc != SHOAL_OK) {
        if (rc != SHOAL_ENOTFOUND)
            slog(SLOG_WARN, "snap", "list %s: %s", dir, ename(rc));
        list_free(l);
        memset(l, 0, sizeof(*l));
        return rc;
    }
    if (l->n > 1)
        qsort(l->lsn, l->n, sizeof(*l->lsn), lsn_desc);
    return SHOAL_OK;
}

/* --- writer --------------------------------------------------------------- */

struct snap_writer {
    fs *f;
    int fd; /* temp file; -1 once closed */
    snap_enc *enc;
    uint64_t off;  /* file offset of the next body byte */
    shoal_err err; /* sticky: first failure */
    char *dir;
    char *tmp_path; /* "<final_path>.tmp" */
    char *final_path;
};

static shoal_err
writer_sink(void *arg, const uint8_t *buf, size_t len)
{
    snap_writer *w = arg;
    shoal_err rc = fs_pwrite(w->f, w->fd, buf, len, w->off);
    if (rc == SHOAL_OK)
        w->off += len;
    return rc;
}

/* Close, remove the temp file (if any) and free. */
static void
writer_free(snap_writer *w, bool remove_tmp)
{
    if (w == NULL)
        return;
    fs_close(w->f, w->fd);
    if (remove_tmp && w->tmp_path != NULL)
        (void) fs_unlink(w->f, w->tmp_path);
    snap_enc_free(w->enc);
    mem_free(w->dir);
    mem_free(w->tmp_path);
    mem_free(w->final_path);
    mem_free(w);
}

static shoal_err
writer_paths(snap_writer *w, const char *dir, const snap_meta *m)
{
    char path[SNAP_PATH_MAX];
    shoal_err rc;

    if ((w->dir = mem_strdup(dir)) == NULL)
        return SHOAL_ENOMEM;
    if ((rc = snap_path(path, dir, m->shard, m->lsn, false)) != SHOAL_OK)
        return rc;
    if ((w->final_path = mem_strdup(path)) == NULL)
        return SHOAL_ENOMEM;
    if ((rc = snap_path(path, dir, m->shard, m->lsn, true)) != SHOAL_OK)
        return rc;
    if ((w->tmp_path = mem_strdup(path)) == NULL)
        return SHOAL_ENOMEM;
    return SHOAL_OK;
}

shoal_err
snap_writer_open(fs *f, const char *dir, const snap_meta *m, snap_writer **out)
{
    snap_writer *w = NULL;
    shoal_err rc;
    bool created = false;

    *out = NULL;
    if (f == NULL || dir == NULL || m == NULL || m->shard > SNAP_SHARD_MAX)
        return SHOAL_EINVAL;
    if ((w = mem_calloc(1, sizeof(*w))) == NULL)
        return SHOAL_ENOMEM;
    w->f = f;
    w->fd = -1;
    w->off = SNAP_HDR;
    if ((rc = writer_paths(w, dir, m)) != SHOAL_OK)
        goto fail;
    rc = fs_open(f, w->tmp_path, FS_RDWR | FS_CREATE | FS_TRUNC, &w->fd);
    if (rc != SHOAL_OK)
        goto fail;
    created = true;
    if ((rc = snap_enc_open(m, writer_sink, w, &w->enc)) != SHOAL_OK)
        goto fail;
    *out = w;
    return SHOAL_OK;
fail:
    slog(SLOG_WARN, "snap", "open %s: %s",
         w->tmp_path != NULL ? w->tmp_path : dir, ename(rc));
    writer_free(w, created);
    return rc;
}

shoal_err
snap_writer_add(snap_writer *w, const snap_entry *ent)
{
    if (w->err != SHOAL_OK)
        return w->err;
    shoal_err rc = snap_enc_add(w->enc, ent);
    if (rc != SHOAL_OK) {
        w->err = rc;
        slog(SLOG_WARN, "snap",
             "write %s at %" PRIu64 ": %s; snapshot "
             "abandoned",
             w->tmp_path, w->off, ename(rc));
    }
    return rc;
}

/* Everything up to the rename; *op names the step that failed. */
static shoal_err
writer_seal(snap_writer *w, const char **op)
{
    uint8_t hdr[SNAP_HDR];
    shoal_err rc;

    *op = "finish";
    if ((rc = snap_enc_finish(w->enc, hdr)) != SHOAL_OK)
        return rc;
    *op = "write header";
    if ((rc = fs_pwrite(w->f, w->fd, hdr, SNAP_HDR, 0)) != SHOAL_OK)
        return rc;
    *op = "fsync";
    if ((rc = fs_fsync(w->f, w->fd)) != SHOAL_OK)
        return rc;
    fs_close(w->f, w->fd);
    w->fd = -1;
    *op = "rename";
    return fs_rename(w->f, w->tmp_path, w->final_path);
}

shoal_err
snap_writer_commit(snap_writer *w)
{
    const char *op = NULL;
    shoal_err rc = w->err; /* already logged by snap_writer_add */

    if (rc == SHOAL_OK && (rc = writer_seal(w, &op)) != SHOAL_OK)
        slog(SLOG_WARN, "snap", "%s %s: %s; snapshot abandoned", op,
             w->tmp_path, ename(rc));
    if (rc != SHOAL_OK) {
        writer_free(w, true);
        return rc;
    }
    /* After the rename the file is complete and its bytes are durable; only
     * its name may not be. It stays: unlinking it could remove an older
     * snapshot of the same name, and a crash may keep or lose it, both
     * valid states. The error still tells the caller to stop. */
    if ((rc = fs_dir_fsync(w->f, w->dir)) != SHOAL_OK)
        slog(SLOG_ERR, "snap", "fsync dir %s after rename of %s: %s", w->dir,
             w->final_path, ename(rc));
    writer_free(w, false);
    return rc;
}

void
snap_writer_abort(snap_writer *w)
{
    writer_free(w, true);
}

/* Temp file, write, fsync, close; the caller renames. */
static shoal_err
install_tmp(fs *f, const char *tmp, const uint8_t *img, size_t len,
            const char **op)
{
    int fd = -1;
    shoal_err rc;

    *op = "open";
    if ((rc = fs_open(f, tmp, FS_RDWR | FS_CREATE | FS_TRUNC, &fd)) != SHOAL_OK)
        return rc;
    *op = "write";
    rc = fs_pwrite(f, fd, img, len, 0);
    if (rc == SHOAL_OK) {
        *op = "fsync";
        rc = fs_fsync(f, fd);
    }
    fs_close(f, fd);
    return rc;
}

shoal_err
snap_install(fs *f, const char *dir, const snap_meta *m, const uint8_t *img,
             size_t len)
{
    char tmp[SNAP_PATH_MAX], final[SNAP_PATH_MAX];
    const char *op = "path";
    shoal_err rc;

    if (f == NULL || dir == NULL || m == NULL || img == NULL ||
        m->shard > SNAP_SHARD_MAX)
        return SHOAL_EINVAL;
    if ((rc = snap_path(tmp, dir, m->shard, m->lsn, true)) != SHOAL_OK ||
        (rc = snap_path(final, dir, m->shard, m->lsn, false)) != SHOAL_OK)
        return rc;
    if ((rc = install_tmp(f, tmp, img, len, &op)) == SHOAL_OK) {
        op = "rename";
        rc = fs_rename(f, tmp, final);
    }
    if (rc != SHOAL_OK) {
        slog(SLOG_WARN, "snap", "install %s: %s %s", final, op, ename(rc));
        (void) fs_unlink(f, tmp);
        return rc;
    }
    /* As in snap_writer_commit: after the rename the file stays. */
    if ((rc = fs_dir_fsync(f, dir)) != SHOAL_OK)
        slog(SLOG_ERR, "snap", "fsync dir %s after rename of %s: %s", dir,
             final, ename(rc));
    return rc;
}

shoal_err
snap_remove(fs *f, const char *dir, uint32_t shard, uint64_t lsn)
{
    char path[SNAP_PATH_MAX];
    shoal_err rc = snap_path(path, dir, shard, lsn, false);
    if (rc == SHOAL_OK)
        rc = fs_unlink(f, path);
    if (rc == SHOAL_OK)
        rc = fs_dir_fsync(f, dir);
    return rc;
}

/* --- load and prune ------------------------------------------------------- */

/* Counts cb calls, so a file that fails before any can fall back. */
typedef struct load_ctx {
    snap_entry_cb cb;
    void *arg;
    uint64_t calls;
    shoal_err cb_rc;
} load_ctx;

static shoal_err
load_cb(void *arg, const snap_entry *ent)
{
    load_ctx *c = arg;
    c->calls++;
    if (c->cb == NULL)
        return SHOAL_OK;
    c->cb_rc = c->cb(c->arg, ent);
    return c->cb_rc;
}

typedef struct load_req {
    fs *f;
    const char *dir;
    uint32_t shard;
    size_t max_key;
    size_t max_value;
    snap_meta *meta_out;
    load_ctx ctx;
} load_req;

/* Check and decode one image; *why is set when the file is damaged and
 * nothing of it reached cb (the caller may then try an older one). */
static shoal_err
load_image(load_req *r, const uint8_t *buf, size_t len, uint64_t lsn,
           const char **why)
{
    uint64_t body_len = 0;
    snap_meta m;
    shoal_err rc;

    if ((rc = check_image(buf, len, &m, &body_len, why)) != SHOAL_OK)
        return rc;
    if (m.shard != r->shard || m.lsn != lsn)
        return corrupt(why, "header does not match the file name");
    if (r->meta_out != NULL)
        *r->meta_out = m;
    r->ctx.calls = 0;
    r->ctx.cb_rc = SHOAL_OK;
    rc = decode_body(buf, body_len, &m, r->max_key, r->max_value, load_cb,
                     &r->ctx, why);
    if (rc == SHOAL_OK || r->ctx.cb_rc != SHOAL_OK)
        return rc;
    if (rc == SHOAL_ECORRUPT && r->ctx.calls > 0)
        *why = NULL; /* entries reached cb: no fallback */
    return rc;
}

static shoal_err
load_one(load_req *r, uint64_t lsn, const char **why)
{
    char path[SNAP_PATH_MAX];
    uint8_t *buf = NULL;
    size_t len = 0;
    shoal_err rc;

    *why = NULL;
    if ((rc = snap_path(path, r->dir, r->shard, lsn, false)) != SHOAL_OK)
        return rc;
    rc = fs_read_all(r->f, path, SIZE_MAX, &buf, &len);
    if (rc == SHOAL_ENOTFOUND) /* removed since the listing */
        return corrupt(why, "vanished");
    if (rc != SHOAL_OK) {
        slog(SLOG_ERR, "snap", "read %s: %s", path, ename(rc));
        return rc;
    }
    rc = load_image(r, buf, len, lsn, why);
    if (rc == SHOAL_ECORRUPT && *why == NULL && r->ctx.cb_rc == SHOAL_OK)
        slog(SLOG_ERR, "snap", "%s: passed its crcs but does not decode", path);
    mem_free(buf);
    return rc;
}

shoal_err
snap_load_latest(fs *f, const char *dir, uint32_t shard, size_t max_key,
                 size_t max_value, snap_meta *meta_out, snap_entry_cb cb,
                 void *arg)
{
    load_req r = {f, dir, shard, max_key, max_value, meta_out, {cb, arg, 0, 0}};
    snap_list l;
    const char *why = NULL;
    shoal_err rc;

    if ((rc = list_shard(f, dir, shard, &l)) != SHOAL_OK)
        return rc;
    rc = SHOAL_ENOTFOUND;
    size_t n_bad = 0;
    for (size_t i = 0; i < l.n; i++) {
        rc = load_one(&r, l.lsn[i], &why);
        if (rc != SHOAL_ECORRUPT || why == NULL)
            break;
        slog(SLOG_WARN, "snap",
             "%s/snap-%04" PRIx32 "-%016" PRIx64 ".snap: %s; trying an "
             "older snapshot",
             dir, shard, l.lsn[i], why);
        n_bad++;
        rc = SHOAL_ENOTFOUND;
    }
    /* Snapshots existed but none is usable: starting the shard empty could
     * silently drop keys whose WAL records were already collected, so this
     * is corruption, not "no snapshot". */
    if (rc == SHOAL_ENOTFOUND && n_bad > 0) {
        slog(SLOG_ERR, "snap",
             "%s: none of %zu snapshots of shard %" PRIu32 " is valid", dir,
             l.n, shard);
        rc = SHOAL_ECORRUPT;
    }
    list_free(&l);
    return rc;
}

static shoal_err
prune_one(fs *f, const char *dir, uint32_t shard, uint64_t lsn, bool is_tmp,
          shoal_err *first)
{
    char path[SNAP_PATH_MAX];
    shoal_err rc = snap_path(path, dir, shard, lsn, is_tmp);
    if (rc == SHOAL_OK)
        rc = fs_unlink(f, path);
    if (rc == SHOAL_ENOTFOUND)
        rc = SHOAL_OK;
    if (rc != SHOAL_OK && *first == SHOAL_OK)
        *first = rc;
    return rc;
}

shoal_err
snap_prune(fs *f, const char *dir, uint32_t shard, unsigned keep)
{
    shoal_err rc, first = SHOAL_OK;
    size_t removed = 0;
    snap_list l;

    if ((rc = list_shard(f, dir, shard, &l)) != SHOAL_OK)
        return rc;
    for (size_t i = keep; i < l.n; i++)
        if (prune_one(f, dir, shard, l.lsn[i], false, &first) == SHOAL_OK)
            removed++;
    for (size_t i = 0; i < l.n_tmp; i++)
        if (prune_one(f, dir, shard, l.tmp[i], true, &first) == SHOAL_OK)
            removed++;
    if (removed > 0 && (rc = fs_dir_fsync(f, dir)) != SHOAL_OK &&
        first == SHOAL_OK)
        first = rc;
    list_free(&l);
    if (first != SHOAL_OK)
        slog(SLOG_WARN, "snap", "prune shard %" PRIu32 " in %s: %s", shard, dir,
             ename(first));
    return first;
}
