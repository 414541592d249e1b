/*
 * fuzz_wal.c -- libFuzzer target for the WAL decoders (TESTING G7).
 *
 * Input: one flags byte, then a body.
 *   (a) The body as a stream of records: wal_rec_decode, then wal_ops_count
 *       and wal_ops_next over each payload, and over the body as a payload.
 *       A decoded record must re-encode to the same bytes.
 *   (b) The body as the records of segment files on fs_mem (after a valid
 *       header, or the body's first 32 bytes as the header with F_RAW_HDR),
 *       recovered by wal_open. Replayed records must decode as ops; a log
 *       that recovered must reopen to the same records (recovery is
 *       idempotent), and take an append.
 *
 * Flags: F_FIX_CRC recomputes each record's crc (and the header's) after
 * mutation, so half the inputs get past the checksums (TESTING.md);
 * F_TWO_SEGS splits the body into two segments at the offset in the next
 * two bytes, so the finished-segment rules run too.
 *
 * The seed corpus (tests/fuzz/corpus/wal) is written by the unit test with
 * SHOAL_WAL_CORPUS=<dir>.
 */
#include "storage/wal.h"

#include "proto/bytes.h"
#include "proto/slog.h"
#include "tests/support/fs_mem.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#define F_FIX_CRC  0x01
#define F_RAW_HDR  0x02
#define F_TWO_SEGS 0x04
#define SEG_BYTES  4096u
#define MAX_BODY   (1u << 16)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void
drop_log(void *arg, slog_level level, const char *module, const char *msg)
{
    (void) arg;
    (void) level;
    (void) module;
    (void) msg;
}

/* Every op of a decoded payload must parse, exactly to its end. */
static void
walk_ops(const uint8_t *p, size_t len, bool must)
{
    uint32_t n;
    size_t pos;
    wal_op op;

    if (wal_ops_count(p, len, &n, &pos) != SHOAL_OK) {
        if (must)
            abort();
        return;
    }
    for (uint32_t i = 0; i < n; i++) {
        if (wal_ops_next(p, len, &pos, &op) != SHOAL_OK) {
            if (must)
                abort();
            return;
        }
        if (op.key < p || op.key + op.klen > p + len ||
            (op.vlen > 0 && op.val + op.vlen > p + len))
            abort();
    }
    if (must && pos != len)
        abort();
}

/* (a) */
static void
decode_stream(const uint8_t *buf, size_t len)
{
    size_t pos = 0, used;
    wal_rec r;
    uint8_t *re = malloc(len + 1);

    walk_ops(buf, len, false);
    while (re != NULL &&
           wal_rec_decode(buf + pos, len - pos, len, &r, &used) == SHOAL_OK) {
        if (used != WAL_REC_HDR + (size_t) r.len || used > len - pos)
            abort();
        if (r.type == WAL_REC_OPS)
            walk_ops(r.payload, r.len, true);
        wal_rec_encode(&r, re);
        if (memcmp(re, buf + pos, used) != 0)
            abort();
        pos += used;
    }
    free(re);
}

static void
fix_crcs(uint8_t *body, size_t len)
{
    size_t pos = 0;
    while (len - pos >= WAL_REC_HDR) {
        size_t rec = WAL_REC_HDR + (size_t) get_u32(body + pos);
        if (rec > len - pos)
            break;
        put_u32(body + pos + 4, (uint32_t) crc32_z(0, body + pos + 8, rec - 8));
        pos += rec;
    }
}

static void
make_header(uint8_t *h, uint64_t seq)
{
    memcpy(h, "SHOALWAL", 8);
    put_u32(h + 8, 1);
    put_u32(h + 12, WAL_SEG_HDR);
    put_u64(h + 16, seq);
    put_u32(h + 24, 0);
    put_u32(h + 28, (uint32_t) crc32_z(0, h, 28));
}

/* Write one segment file: header (made, or raw from the body) + body. */
static void
put_seg(fs *f, uint64_t seq, const uint8_t *body, size_t len, unsigned flags)
{
    char path[64];
    uint8_t *img = malloc(WAL_SEG_HDR + len + 1);
    int fd = -1;

    if (img == NULL)
        abort();
    memset(img, 0, WAL_SEG_HDR);
    if ((flags & F_RAW_HDR) && len >= WAL_SEG_HDR) {
        memcpy(img, body, WAL_SEG_HDR);
        body += WAL_SEG_HDR;
        len -= WAL_SEG_HDR;
        if (flags & F_FIX_CRC)
            put_u32(img + 28, (uint32_t) crc32_z(0, img, 28));
    } else {
        make_header(img, seq);
    }
    memcpy(img + WAL_SEG_HDR, body, len);
    if (flags & F_FIX_CRC)
        fix_crcs(img + WAL_SEG_HDR, len);
    snprintf(path, sizeof path, "/w/wal-%016llx.log", (unsigned long long) seq);
    if (fs_open(f, path, FS_RDWR | FS_CREATE | FS_TRUNC, &fd) != SHOAL_OK ||
        fs_pwrite(f, fd, img, WAL_SEG_HDR + len, 0) != SHOAL_OK)
        abort();
    fs_close(f, fd);
    free(img);
}

typedef struct seen {
    uint64_t n;
    uint32_t crc;    /* over every replayed record */
    uint64_t want_n; /* record crc_at after this many records */
    uint32_t crc_at;
} seen;

static shoal_err
replay_cb(void *arg, const wal_rec *r)
{
    seen *s = arg;
    uint8_t h[15];
    if (r->type != WAL_REC_OPS)
        abort();
    walk_ops(r->payload, r->len, true);
    h[0] = r->type;
    put_u16(h + 1, r->shard);
    put_u32(h + 3, r->shard_epoch);
    put_u64(h + 7, r->lsn);
    s->crc = (uint32_t) crc32_z(s->crc, h, sizeof h);
    s->crc = (uint32_t) crc32_z(s->crc, r->payload, r->len);
    if (++s->n == s->want_n)
        s->crc_at = s->crc;
    return SHOAL_OK;
}

static shoal_err
open_log(fs *f, seen *s, uint64_t want_n, wal **w)
{
    wal_opts o;
    wal_opts_default(&o);
    o.fs = f;
    o.dir = "/w";
    o.segment_bytes = SEG_BYTES;
    o.n_shards = 8;
    *s = (seen){.want_n = want_n};
    return wal_open(&o, replay_cb, s, w, NULL);
}

/* After a successful recovery: append, reopen, and compare. */
static void
check_reopen(fs *f, wal *w, const seen *first)
{
    wal_op op = {WAL_OP_PUT, 0, (const uint8_t *) "k", 1, (const uint8_t *) "v",
                 1};
    uint64_t t;
    seen again;

    if (wal_append(w, 1, 1, 1, &op, 1, &t) != SHOAL_OK ||
        wal_wait(w, t, true) != SHOAL_OK)
        abort();
    wal_close(w);
    if (open_log(f, &again, first->n, &w) != SHOAL_OK)
        abort();
    wal_close(w);
    /* The same records, plus the one appended. */
    if (again.n != first->n + 1 || again.crc_at != first->crc)
        abort();
}

/* (b) */
static void
recover_body(const uint8_t *body, size_t len, unsigned flags, size_t split)
{
    fs_mem *m = NULL;
    wal *w = NULL;
    seen s;

    if (fs_mem_open(&m) != SHOAL_OK)
        abort();
    fs *f = fs_mem_fs(m);
    if (fs_mkdir(f, "/w") != SHOAL_OK)
        abort();
    if (flags & F_TWO_SEGS) {
        split = split < len ? split : len;
        put_seg(f, 1, body, split, flags);
        put_seg(f, 2, body + split, len - split, flags & ~F_RAW_HDR);
    } else {
        put_seg(f, 1, body, len, flags);
    }
    shoal_err rc = open_log(f, &s, 0, &w);
    if (rc == SHOAL_OK)
        check_reopen(f, w, &s);
    else if (w != NULL || (rc != SHOAL_ECORRUPT && rc != SHOAL_EIO))
        abort();
    fs_mem_close(m);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static bool init;
    if (!init) {
        slog_set_sink(drop_log, NULL);
        init = true;
    }
    if (size < 1 || size > MAX_BODY)
        return 0;
    unsigned flags = data[0];
    size_t split = size >= 3 ? get_u16(data + 1) : 0;
    const uint8_t *body = data + 1;
    size_t len = size - 1;
    if ((flags & F_TWO_SEGS) && len >= 2) {
        body += 2;
        len -= 2;
    }
    uint8_t *copy = malloc(len + 1);
    if (copy == NULL)
        abort();
    memcpy(copy, body, len);
    if (flags & F_FIX_CRC)
        fix_crcs(copy, len);
    decode_stream(copy, len);
    free(copy);
    recover_body(body, len, flags, split);
    return 0;
}
