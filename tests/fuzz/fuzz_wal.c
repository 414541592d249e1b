/*
 * fuzz_wal.c -- libFuzzer target for the WAL decoders (TESTING G7).
 *
 * Input: one flags byte, then a body.
 *   (a) The body as a stream of records: wal_rec_decode, then wal_ops_count
 *       and wal_ops_next over each payload, and over the body as a payload.
 *       A decoded record must re-encode to the same bytes.
 *   (b) The body as the records of segment files on fs_mem (after a valid
 *       header, or the body's first WAL_SEG_HDR bytes as the header and
 *       frontier slots with F_RAW_HDR), recovered by wal_open. Replayed
 *       records must decode as ops; a log that recovered must reopen to the
 *       same records (recovery is idempotent), and take an append.
 *   (c) With F_SLOTS and one segment, the outcome must be the one the
 *       frontier rule of wal.h predicts (computed here independently): a
 *       bad record below the claimed frontier is SHOAL_ECORRUPT, anything
 *       else opens.
 *
 * Flags: F_FIX_CRC recomputes each record's crc (and the header's and the
 * slots') after mutation, so half the inputs get past the checksums
 * (TESTING.md); F_TWO_SEGS splits the body into two segments at the offset
 * in the next two bytes, so the finished-segment rules run too; F_SLOTS
 * (without F_RAW_HDR) takes two claims (u64 frontier, u32 generation) from
 * the next 24 bytes and writes them as valid slots, so the frontier rules
 * get inputs past the slot crcs.
 *
 * The seed corpus (tests/fuzz/corpus/wal) is written by the unit test with
 * SHOAL_WAL_CORPUS=<dir>.
 */
#include "storage/wal.h"

#include "proto/bytes.h"
#include "proto/mem.h"
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
#define F_SLOTS    0x08
#define SLOT_SPECS 24u /* F_SLOTS: 2 x (u64 frontier, u32 generation) */
#define N_SHARDS   8u
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
    put_u32(h + 8, 2);
    put_u32(h + 12, WAL_SEG_HDR);
    put_u64(h + 16, seq);
    put_u32(h + 24, 0);
    put_u32(h + 28, (uint32_t) crc32_z(0, h, 28));
}

/* The crc of a frontier slot of segment seq (wal.h). */
static uint32_t
slot_crc(uint64_t seq, const uint8_t *slot)
{
    uint8_t salt[8];
    put_u64(salt, seq);
    return (uint32_t) crc32_z(crc32_z(0, salt, 8), slot, 12);
}

static void
fix_slot_crcs(uint8_t *img, uint64_t seq)
{
    for (unsigned i = 0; i < 2; i++) {
        uint8_t *s = img + WAL_SEG_SLOTS + i * WAL_SLOT_LEN;
        put_u32(s + 12, slot_crc(seq, s));
    }
}

/* F_SLOTS: two valid claims from spec, each frontier inside or just past
 * the file (img_len bytes), generations of the parity of their slot (a
 * generation 0 stays "no claim"). Returns the frontier they claim. */
static uint64_t
make_slots(uint8_t *img, size_t img_len, uint64_t seq, const uint8_t *spec)
{
    uint64_t frontier = WAL_SEG_HDR;
    for (unsigned i = 0; i < 2; i++) {
        uint8_t *s = img + WAL_SEG_SLOTS + i * WAL_SLOT_LEN;
        uint64_t off = WAL_SEG_HDR + get_u64(spec + 12 * i) % (img_len + 64);
        uint32_t raw = get_u32(spec + 12 * i + 8);
        /* Odd generations in slot A, even ones in B. */
        uint32_t gen = i == 0 ? (raw == 0 ? 0 : raw | 1u) : raw & ~1u;
        put_u64(s, off);
        put_u32(s + 8, gen);
        put_u32(s + 12, slot_crc(seq, s));
        if (gen != 0 && off > frontier)
            frontier = off;
    }
    return frontier;
}

/* Write one segment file: header (made, or raw from the body) + body.
 * *frontier gets the claim F_SLOTS made (0: none made). */
static void
put_seg(fs *f, uint64_t seq, const uint8_t *body, size_t len, unsigned flags,
        const uint8_t *slots, uint64_t *frontier)
{
    char path[64];
    uint8_t *img = malloc(WAL_SEG_HDR + len + 1);
    int fd = -1;

    if (img == NULL)
        abort();
    memset(img, 0, WAL_SEG_HDR);
    *frontier = 0;
    if ((flags & F_RAW_HDR) && len >= WAL_SEG_HDR) {
        memcpy(img, body, WAL_SEG_HDR);
        body += WAL_SEG_HDR;
        len -= WAL_SEG_HDR;
        if (flags & F_FIX_CRC) {
            put_u32(img + 28, (uint32_t) crc32_z(0, img, 28));
            fix_slot_crcs(img, get_u64(img + 16));
        }
    } else {
        make_header(img, seq);
        if (slots != NULL)
            *frontier = make_slots(img, WAL_SEG_HDR + len, seq, slots);
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

/* (c) What recovering the single segment at path must return, by the rule
 * of wal.h: replay to the first SEG_END or bad record X (a record naming a
 * shard out of range is corruption); then X < frontier is corruption,
 * unless the record at X runs past the end of a file shorter than the
 * frontier (truncated). A file with nothing past the fixed header is
 * dropped, and opens. */
static shoal_err
predict(fs *f, const char *path, uint64_t frontier)
{
    uint8_t *img = NULL;
    size_t len = 0, pos = WAL_SEG_HDR, used;
    wal_rec r;
    shoal_err drc, want = SHOAL_OK;

    if (fs_read_all(f, path, MAX_BODY * 2, &img, &len) != SHOAL_OK)
        abort();
    while ((drc = wal_rec_decode(img + pos, len - pos, SIZE_MAX, &r, &used)) ==
               SHOAL_OK &&
           r.type != WAL_REC_SEG_END) {
        if (r.shard >= N_SHARDS) {
            want = SHOAL_ECORRUPT;
            break;
        }
        pos += used;
    }
    if (want == SHOAL_OK && drc != SHOAL_OK && pos < frontier &&
        !(drc == SHOAL_EINVAL && len < frontier))
        want = SHOAL_ECORRUPT;
    mem_free(img);
    return want;
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
    o.n_shards = N_SHARDS;
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

/* (b), (c) */
static void
recover_body(const uint8_t *body, size_t len, unsigned flags, size_t split,
             const uint8_t *slots)
{
    fs_mem *m = NULL;
    wal *w = NULL;
    seen s;
    uint64_t frontier;
    shoal_err want = SHOAL_OK;

    if (fs_mem_open(&m) != SHOAL_OK)
        abort();
    fs *f = fs_mem_fs(m);
    if (fs_mkdir(f, "/w") != SHOAL_OK)
        abort();
    if (flags & F_TWO_SEGS) {
        split = split < len ? split : len;
        put_seg(f, 1, body, split, flags, slots, &frontier);
        put_seg(f, 2, body + split, len - split, flags & ~F_RAW_HDR, slots,
                &frontier);
    } else {
        put_seg(f, 1, body, len, flags, slots, &frontier);
        if (frontier != 0)
            want = predict(f, "/w/wal-0000000000000001.log", frontier);
    }
    shoal_err rc = open_log(f, &s, 0, &w);
    if (frontier != 0 && !(flags & F_TWO_SEGS) && rc != want)
        abort();
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
    const uint8_t *slots = NULL;
    size_t len = size - 1;
    if ((flags & F_TWO_SEGS) && len >= 2) {
        body += 2;
        len -= 2;
    }
    if ((flags & F_SLOTS) && !(flags & F_RAW_HDR) && len >= SLOT_SPECS) {
        slots = body;
        body += SLOT_SPECS;
        len -= SLOT_SPECS;
    }
    uint8_t *copy = malloc(len + 1);
    if (copy == NULL)
        abort();
    memcpy(copy, body, len);
    if (flags & F_FIX_CRC)
        fix_crcs(copy, len);
    decode_stream(copy, len);
    free(copy);
    recover_body(body, len, flags, split, slots);
    return 0;
}
