/*
 * test_wal.c -- the write-ahead log (storage/wal.h).
 *
 *  - codec: round trips, rejection of every malformed header and op field,
 *    every single-bit flip of a record;
 *  - append and reopen: replay equality across many segment rotations, under
 *    each fsync policy, and appending after a reopen;
 *  - group commit under fsync=always with concurrent appenders: every
 *    acknowledged ticket survives a power loss (fs_mem crash clone);
 *  - power cuts (TESTING G5, the durable frontier of wal.h): 500
 *    FS_CRASH_RANDOM images per fsync policy, taken while 8 appenders
 *    append and wait, behind a device with fdatasync latency: each opens
 *    (never SHOAL_ECORRUPT) with every acknowledged record; and by hand, an
 *    unsynced tail with a garbled record before intact ones, and a torn
 *    record whose user value holds an encoded record: both cut;
 *  - wal_notify: every callback fires exactly once;
 *  - TESTING G3: the segment truncated at every byte offset (inside the
 *    durable region too) recovers exactly the longest whole prefix; zeroed
 *    from every offset on, it does beyond the frontier and is reported
 *    inside it;
 *  - TESTING G4: every single-bit flip of the header, the frontier slots
 *    and the records, in a log synced record by record, in one whose last
 *    records lie beyond the frontier (a crash image), and in one closed
 *    cleanly (frontier = end): a flip in a record below the frontier is
 *    SHOAL_ECORRUPT, beyond it a cut at that record; a slot flip falls back
 *    and loses nothing; a finished segment reports any flip; a version 1
 *    segment is refused;
 *  - wal_gc deletes exactly the finished segments the keep LSNs cover;
 *  - TESTING G6 with fs_mem: the k-th I/O call fails (EIO / ENOSPC, once or
 *    forever, short writes): no crash, sticky SHOAL_EREADONLY and errors,
 *    nothing acknowledged lost; ENOSPC while preallocating is clean.
 *
 * SHOAL_WAL_BENCH=<dir> also runs the throughput figures (use a Release
 * build); they are skipped otherwise. SHOAL_WAL_CORPUS=<dir> writes the fuzz
 * seed corpus (tests/fuzz/corpus/wal). SHOAL_TEST_FILTER=<glob> runs only
 * the matching tests; SHOAL_TEST_LONG=1 runs the disk G3 zeroing variant at
 * every offset too (fs_mem always does).
 */
#include "storage/wal.h"

#include "proto/bytes.h"
#include "proto/clock.h"
#include "proto/mem.h"
#include "proto/slog.h"
#include "tests/support/fs_mem.h"
#include "tests/support/testutil.h"

#include <inttypes.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>
#include <zlib.h>

#define SEG1 "wal-0000000000000001.log"
#define SEG2 "wal-0000000000000002.log"
#define VMAX 2048

/* ---- log capture --------------------------------------------------------- */

static pthread_mutex_t log_mu = PTHREAD_MUTEX_INITIALIZER;
static char last_err[512]; /* last ERR line from "wal" */

static void
log_sink(void *arg, slog_level level, const char *module, const char *msg)
{
    (void) arg;
    if (level != SLOG_ERR || strcmp(module, "wal") != 0)
        return;
    pthread_mutex_lock(&log_mu);
    snprintf(last_err, sizeof last_err, "%s", msg);
    pthread_mutex_unlock(&log_mu);
}

static void
log_reset(void)
{
    pthread_mutex_lock(&log_mu);
    last_err[0] = '\0';
    pthread_mutex_unlock(&log_mu);
}

/* The last ERR line names the file and an offset. */
static void
assert_logged(const char *file, const char *offset)
{
    pthread_mutex_lock(&log_mu);
    bool ok =
        strstr(last_err, file) != NULL && strstr(last_err, offset) != NULL;
    if (!ok)
        fprintf(stderr, "# log: \"%s\", wanted %s and %s\n", last_err, file,
                offset);
    pthread_mutex_unlock(&log_mu);
    assert_true(ok);
}

static int
quiet_up(void **state)
{
    slog_set_sink(log_sink, NULL);
    slog_set_level(SLOG_DEBUG);
    return tu_tmpdir_up(state);
}

static int
quiet_down(void **state)
{
    slog_set_sink(NULL, NULL);
    slog_set_level(SLOG_NOTICE);
    return tu_tmpdir_down(state);
}

static int
quiet_up_mem(void **state)
{
    *state = NULL;
    slog_set_sink(log_sink, NULL);
    return 0;
}

static int
quiet_down_mem(void **state)
{
    (void) state;
    slog_set_sink(NULL, NULL);
    return 0;
}

/* ---- record specs: record i of a test log, from its index ---------------- */

typedef struct spec {
    uint16_t shard;
    uint32_t epoch;
    uint64_t lsn;
    size_t n;
    wal_op ops[3];
    uint8_t key[3][24];
    uint8_t val[3][VMAX];
} spec;

static void
spec_fill(spec *s, uint64_t i, uint32_t n_shards, size_t vmax)
{
    memset(s, 0, sizeof *s);
    s->shard = (uint16_t) (i % n_shards);
    s->epoch = (uint32_t) (1 + i / 50);
    s->lsn = i + 1;
    s->n = 1 + (size_t) (i % 3);
    for (size_t j = 0; j < s->n; j++) {
        wal_op *op = &s->ops[j];
        int kl = snprintf((char *) s->key[j], sizeof s->key[j],
                          "key-%" PRIu64 "-%zu", i, j);
        op->key = s->key[j];
        op->klen = (uint32_t) kl;
        if ((i + j) % 5 == 4) {
            op->kind = WAL_OP_DEL;
            continue;
        }
        op->kind = WAL_OP_PUT;
        op->expire_at = (i % 7 == 0) ? 1700000000000u + i : 0;
        op->vlen = (uint32_t) ((i * 37 + j * 101) % (vmax + 1));
        for (size_t b = 0; b < op->vlen; b++)
            s->val[j][b] = (uint8_t) (i * 31 + j * 7 + b);
        op->val = s->val[j];
    }
}

static size_t
spec_rec_len(const spec *s)
{
    return WAL_REC_HDR + wal_ops_size(s->ops, s->n);
}

static shoal_err
spec_append(wal *w, const spec *s, uint64_t *ticket)
{
    return wal_append(w, s->shard, s->epoch, s->lsn, s->ops, s->n, ticket);
}

/* ---- replay collection --------------------------------------------------- */

typedef struct got_rec {
    uint16_t shard;
    uint32_t epoch;
    uint64_t lsn;
    uint8_t *payload;
    uint32_t len;
} got_rec;

typedef struct got {
    got_rec *v;
    size_t n;
    size_t cap;
} got;

static shoal_err
collect(void *arg, const wal_rec *r)
{
    got *g = arg;
    if (g == NULL)
        return SHOAL_OK;
    assert_int_equal(r->type, WAL_REC_OPS);
    if (g->n == g->cap) {
        g->cap = g->cap ? g->cap * 2 : 64;
        g->v = realloc(g->v, g->cap * sizeof *g->v);
        assert_non_null(g->v);
    }
    got_rec *c = &g->v[g->n++];
    *c = (got_rec){r->shard, r->shard_epoch, r->lsn, malloc(r->len + 1u),
                   r->len};
    assert_non_null(c->payload);
    memcpy(c->payload, r->payload, r->len);
    return SHOAL_OK;
}

static void
got_clear(got *g)
{
    for (size_t i = 0; i < g->n; i++)
        free(g->v[i].payload);
    free(g->v);
    *g = (got){0};
}

/* The replayed record equals spec s (payload byte for byte). */
static bool
rec_matches(const got_rec *c, const spec *s)
{
    size_t len = wal_ops_size(s->ops, s->n);
    uint8_t *want = malloc(len);
    assert_non_null(want);
    wal_ops_encode(s->ops, s->n, want);
    bool ok = c->shard == s->shard && c->epoch == s->epoch &&
              c->lsn == s->lsn && c->len == len &&
              memcmp(c->payload, want, len) == 0;
    free(want);
    return ok;
}

/* g holds exactly the records with indexes idx[0..n) (all when idx NULL). */
static void
assert_got(const got *g, const uint64_t *idx, size_t n, uint32_t n_shards,
           size_t vmax)
{
    spec *s = malloc(sizeof *s);
    assert_non_null(s);
    if (g->n != n)
        fprintf(stderr, "# replayed %zu records, wanted %zu\n", g->n, n);
    assert_int_equal(g->n, n);
    for (size_t i = 0; i < n; i++) {
        spec_fill(s, idx != NULL ? idx[i] : i, n_shards, vmax);
        assert_true(rec_matches(&g->v[i], s));
    }
    free(s);
}

/* ---- test directories: posix under the mkdtemp dir, or fs_mem ---------- */

typedef struct tdir {
    fs *f;
    fs_mem *m; /* NULL for posix */
    char path[512];
} tdir;

static void
tdir_init(tdir *d, fs *f, fs_mem *m, const char *base, const char *name)
{
    d->f = f;
    d->m = m;
    snprintf(d->path, sizeof d->path, "%s/%s", base, name);
    assert_int_equal(fs_mkdir(f, d->path), SHOAL_OK);
    /* Make the directory itself survive a crash clone. */
    assert_int_equal(fs_dir_fsync(f, base[0] != '\0' ? base : "/"), SHOAL_OK);
}

static void
tdir_file(const tdir *d, const char *name, char *out, size_t cap)
{
    assert_int_equal(fs_path(out, cap, d->path, name), SHOAL_OK);
}

static shoal_err
unlink_cb(void *arg, const char *name)
{
    const tdir *d = arg;
    char p[600];
    tdir_file(d, name, p, sizeof p);
    return fs_unlink(d->f, p);
}

static void
tdir_clear(const tdir *d)
{
    assert_int_equal(fs_list(d->f, d->path, unlink_cb, (void *) d), SHOAL_OK);
}

static void
tdir_write(const tdir *d, const char *name, const uint8_t *buf, size_t len)
{
    char p[600];
    int fd = -1;
    tdir_file(d, name, p, sizeof p);
    assert_int_equal(fs_open(d->f, p, FS_RDWR | FS_CREATE | FS_TRUNC, &fd),
                     SHOAL_OK);
    if (len > 0)
        assert_int_equal(fs_pwrite(d->f, fd, buf, len, 0), SHOAL_OK);
    fs_close(d->f, fd);
}

static uint8_t *
tdir_read(const tdir *d, const char *name, size_t *len)
{
    char p[600];
    uint8_t *buf = NULL;
    tdir_file(d, name, p, sizeof p);
    assert_int_equal(fs_read_all(d->f, p, (size_t) 1 << 30, &buf, len),
                     SHOAL_OK);
    return buf;
}

static bool
tdir_exists(const tdir *d, const char *name)
{
    char p[600];
    int fd = -1;
    tdir_file(d, name, p, sizeof p);
    shoal_err rc = fs_open(d->f, p, FS_RDONLY, &fd);
    fs_close(d->f, fd);
    return rc == SHOAL_OK;
}

static shoal_err
count_cb(void *arg, const char *name)
{
    if (strncmp(name, "wal-", 4) == 0)
        (*(int *) arg)++;
    return SHOAL_OK;
}

static int
tdir_count(const tdir *d)
{
    int n = 0;
    assert_int_equal(fs_list(d->f, d->path, count_cb, &n), SHOAL_OK);
    return n;
}

static void
opts_for(wal_opts *o, const tdir *d, uint64_t seg, wal_fsync pol)
{
    wal_opts_default(o);
    o->fs = d->f;
    o->dir = d->path;
    o->segment_bytes = seg;
    o->fsync = pol;
    o->n_shards = 4;
}

static shoal_err
reopen(const tdir *d, uint64_t seg, got *g, wal_recovery *ri, wal **out)
{
    wal_opts o;
    opts_for(&o, d, seg, WAL_FSYNC_ALWAYS);
    return wal_open(&o, collect, g, out, ri);
}

/* Open, replay into g, close. */
static shoal_err
recover_only(const tdir *d, uint64_t seg, got *g, wal_recovery *ri)
{
    wal *w = NULL;
    shoal_err rc = reopen(d, seg, g, ri, &w);
    if (rc == SHOAL_OK)
        wal_close(w);
    else
        assert_null(w);
    return rc;
}

/* Append records [from, to) of the spec sequence, waiting for the last. */
static void
append_range(wal *w, uint64_t from, uint64_t to, size_t vmax)
{
    spec *s = malloc(sizeof *s);
    uint64_t t = 0;
    assert_non_null(s);
    for (uint64_t i = from; i < to; i++) {
        spec_fill(s, i, 4, vmax);
        assert_int_equal(spec_append(w, s, &t), SHOAL_OK);
    }
    free(s);
    if (to > from)
        assert_int_equal(wal_wait(w, t, true), SHOAL_OK);
}

/* ---- codec --------------------------------------------------------------- */

/* The decoded ops of d are exactly s's. */
static void
assert_ops_equal(const wal_rec *d, const spec *s)
{
    uint32_t n;
    size_t pos;
    wal_op op;

    assert_int_equal(wal_ops_count(d->payload, d->len, &n, &pos), SHOAL_OK);
    assert_int_equal(n, s->n);
    for (uint32_t j = 0; j < n; j++) {
        const wal_op *want = &s->ops[j];
        assert_int_equal(wal_ops_next(d->payload, d->len, &pos, &op), SHOAL_OK);
        assert_int_equal(op.kind, want->kind);
        assert_int_equal(op.klen, want->klen);
        assert_memory_equal(op.key, want->key, op.klen);
        bool del = op.kind == WAL_OP_DEL;
        assert_int_equal(op.expire_at, del ? 0 : want->expire_at);
        assert_int_equal(op.vlen, del ? 0 : want->vlen);
        if (op.vlen > 0)
            assert_memory_equal(op.val, want->val, op.vlen);
    }
    assert_int_equal(pos, d->len);
}

static void
roundtrip_one(const spec *s)
{
    size_t plen = wal_ops_size(s->ops, s->n);
    uint8_t *rec = malloc(WAL_REC_HDR + plen);
    wal_rec d;
    size_t used = 0;

    assert_non_null(rec);
    wal_ops_encode(s->ops, s->n, rec + WAL_REC_HDR);
    wal_rec r = {WAL_REC_OPS, s->shard,          s->epoch,
                 s->lsn,      rec + WAL_REC_HDR, (uint32_t) plen};
    wal_rec_encode(&r, rec);
    assert_int_equal(wal_rec_decode(rec, WAL_REC_HDR + plen, plen, &d, &used),
                     SHOAL_OK);
    assert_int_equal(used, WAL_REC_HDR + plen);
    assert_int_equal(d.type, WAL_REC_OPS);
    assert_int_equal(d.shard, s->shard);
    assert_int_equal(d.shard_epoch, s->epoch);
    assert_int_equal(d.lsn, s->lsn);
    assert_int_equal(d.len, plen);
    assert_ops_equal(&d, s);
    free(rec);
}

static void
test_wal_codec_roundtrip(void **state)
{
    (void) state;
    spec *s = malloc(sizeof *s);
    assert_non_null(s);
    for (uint64_t i = 0; i < 300; i++) {
        spec_fill(s, i, 4, 300);
        roundtrip_one(s);
    }
    free(s);
    /* An empty batch and a SEG_END decode too. */
    uint8_t rec[WAL_REC_HDR + 4];
    wal_ops_encode(NULL, 0, rec + WAL_REC_HDR);
    wal_rec r = {WAL_REC_OPS, 1, 2, 3, rec + WAL_REC_HDR, 4};
    wal_rec_encode(&r, rec);
    wal_rec d;
    size_t used;
    assert_int_equal(wal_rec_decode(rec, sizeof rec, 4, &d, &used), SHOAL_OK);
    r = (wal_rec){.type = WAL_REC_SEG_END};
    wal_rec_encode(&r, rec);
    assert_int_equal(wal_rec_decode(rec, WAL_REC_HDR, 0, &d, &used), SHOAL_OK);
    assert_int_equal(d.type, WAL_REC_SEG_END);
    assert_int_equal(used, WAL_REC_HDR);
}

static void
test_wal_fsync_names(void **state)
{
    (void) state;
    assert_int_equal(wal_fsync_parse("always"), WAL_FSYNC_ALWAYS);
    assert_int_equal(wal_fsync_parse("interval"), WAL_FSYNC_INTERVAL);
    assert_int_equal(wal_fsync_parse("none"), WAL_FSYNC_NONE);
    assert_int_equal(wal_fsync_parse("sometimes"), -1);
    assert_int_equal(wal_fsync_parse(NULL), -1);
    assert_string_equal(wal_fsync_name(WAL_FSYNC_INTERVAL), "interval");
    assert_string_equal(wal_fsync_name((wal_fsync) 9), "?");
}

/* A record with a correct crc over whatever fields it has. */
static void
fix_crc(uint8_t *rec, size_t payload_len)
{
    put_u32(rec + 4, (uint32_t) crc32_z(0, rec + 8, 15 + payload_len));
}

static shoal_err
decode(const uint8_t *buf, size_t avail)
{
    wal_rec r;
    size_t used;
    return wal_rec_decode(buf, avail, 1u << 20, &r, &used);
}

/* A one-op PUT record (klen 3, vlen 4) to mutate: payload at +23, op at +27. */
static size_t
base_rec(uint8_t *rec)
{
    wal_op op = {
        WAL_OP_PUT, 5, (const uint8_t *) "key", 3, (const uint8_t *) "vvvv", 4};
    size_t plen = wal_ops_size(&op, 1);
    wal_ops_encode(&op, 1, rec + WAL_REC_HDR);
    wal_rec r = {WAL_REC_OPS, 1, 7, 9, rec + WAL_REC_HDR, (uint32_t) plen};
    wal_rec_encode(&r, rec);
    return plen;
}

static void
test_wal_codec_rejects_short_and_flipped(void **state)
{
    (void) state;
    uint8_t rec[256], m[256];
    size_t plen = base_rec(rec), full = WAL_REC_HDR + plen;
    wal_rec r;
    size_t used;

    assert_int_equal(plen, 4 + WAL_OP_HDR + 3 + 4);
    assert_int_equal(decode(rec, full), SHOAL_OK);
    /* Short: every proper prefix is "maybe torn". */
    for (size_t a = 0; a < full; a++)
        assert_int_equal(decode(rec, a), SHOAL_EINVAL);
    /* Payload longer than max_len. */
    assert_int_equal(wal_rec_decode(rec, full, plen - 1, &r, &used),
                     SHOAL_ECORRUPT);
    /* Every single-bit flip of the record. */
    for (size_t bit = 0; bit < full * 8; bit++) {
        memcpy(m, rec, full);
        m[bit / 8] ^= (uint8_t) (1u << (bit % 8));
        assert_int_not_equal(decode(m, full), SHOAL_OK);
    }
    /* Bad type, even with a good crc. */
    const uint8_t types[] = {0, 3, 4, 0x81, 0xff};
    for (size_t i = 0; i < sizeof types; i++) {
        memcpy(m, rec, full);
        m[8] = types[i];
        fix_crc(m, plen);
        assert_int_equal(decode(m, full), SHOAL_ECORRUPT);
    }
}

typedef struct field_case {
    size_t off; /* in the record */
    int width;  /* 1, 4 or 8 bytes */
    uint64_t val;
    shoal_err want;
} field_case;

/* Each op field of base_rec set to a bad value, with a good crc. */
static const field_case op_cases[] = {
    {23, 4, 0, SHOAL_ECORRUPT},          /* n = 0: trailing bytes */
    {23, 4, 2, SHOAL_ECORRUPT},          /* n = 2: second op missing */
    {23, 4, 0xffffffff, SHOAL_ECORRUPT}, /* n absurd */
    {27, 1, 0, SHOAL_ECORRUPT},          /* kind 0 */
    {27, 1, 3, SHOAL_ECORRUPT},          /* kind 3 */
    {27, 1, WAL_OP_DEL, SHOAL_ECORRUPT}, /* DEL with value, expire */
    {36, 4, 4, SHOAL_ECORRUPT},          /* klen past the end */
    {36, 4, 0xffffffff, SHOAL_ECORRUPT}, /* klen overflow */
    {40, 4, 5, SHOAL_ECORRUPT},          /* vlen past the end */
    {40, 4, 3, SHOAL_ECORRUPT},          /* vlen short: trailing byte */
    {40, 4, 0xfffffffd, SHOAL_ECORRUPT}, /* klen + vlen wraps */
    {28, 8, 0, SHOAL_OK},                /* expire 0 is fine for PUT */
};

static void
test_wal_codec_rejects_bad_ops(void **state)
{
    (void) state;
    uint8_t rec[256], m[256];
    size_t plen = base_rec(rec), full = WAL_REC_HDR + plen;

    for (size_t i = 0; i < sizeof op_cases / sizeof op_cases[0]; i++) {
        const field_case *c = &op_cases[i];
        memcpy(m, rec, full);
        if (c->width == 1)
            m[c->off] = (uint8_t) c->val;
        else if (c->width == 4)
            put_u32(m + c->off, (uint32_t) c->val);
        else
            put_u64(m + c->off, c->val);
        fix_crc(m, plen);
        assert_int_equal(decode(m, full), c->want);
    }
    /* A DEL with expire_at is not ours. */
    wal_op del = {WAL_OP_DEL, 0, (const uint8_t *) "k", 1, NULL, 0};
    size_t dl = wal_ops_size(&del, 1);
    wal_ops_encode(&del, 1, m + WAL_REC_HDR);
    wal_rec dr = {WAL_REC_OPS, 0, 0, 1, m + WAL_REC_HDR, (uint32_t) dl};
    wal_rec_encode(&dr, m);
    assert_int_equal(decode(m, WAL_REC_HDR + dl), SHOAL_OK);
    put_u64(m + 28, 1);
    fix_crc(m, dl);
    assert_int_equal(decode(m, WAL_REC_HDR + dl), SHOAL_ECORRUPT);
    /* Payload under 4 bytes cannot hold the op count. */
    memcpy(m, rec, WAL_REC_HDR);
    put_u32(m, 3);
    fix_crc(m, 3);
    assert_int_equal(decode(m, WAL_REC_HDR + 3), SHOAL_ECORRUPT);
    /* The op walkers never read outside [0, len). */
    size_t pos = plen + 1;
    wal_op op;
    uint32_t n;
    assert_int_equal(wal_ops_next(rec + WAL_REC_HDR, plen, &pos, &op),
                     SHOAL_ECORRUPT);
    assert_int_equal(wal_ops_count(rec + WAL_REC_HDR, 3, &n, &pos),
                     SHOAL_ECORRUPT);
}

/* SEG_END must be empty with zero fields. */
static void
test_wal_codec_rejects_bad_seg_end(void **state)
{
    (void) state;
    uint8_t m[WAL_REC_HDR], x[WAL_REC_HDR + 1];
    wal_rec se = {.type = WAL_REC_SEG_END};

    wal_rec_encode(&se, m);
    assert_int_equal(decode(m, WAL_REC_HDR), SHOAL_OK);
    for (size_t f = 9; f < WAL_REC_HDR; f++) {
        memcpy(x, m, WAL_REC_HDR);
        x[f] = 1;
        fix_crc(x, 0);
        assert_int_equal(decode(x, WAL_REC_HDR), SHOAL_ECORRUPT);
    }
    memcpy(x, m, WAL_REC_HDR);
    put_u32(x, 1);
    x[WAL_REC_HDR] = 0;
    fix_crc(x, 1);
    assert_int_equal(decode(x, sizeof x), SHOAL_ECORRUPT);
}

/* ---- append and reopen --------------------------------------------------- */

static void
roundtrip_policy(const char *base, wal_fsync pol, const char *name)
{
    tdir d;
    got g = {0};
    wal *w = NULL;
    wal_recovery ri;
    const uint64_t seg = 64u << 10, n1 = 1500, n2 = 2300;

    tdir_init(&d, fs_posix(), NULL, base, name);
    wal_opts o;
    opts_for(&o, &d, seg, pol);
    assert_int_equal(wal_open(&o, collect, &g, &w, &ri), SHOAL_OK);
    assert_int_equal(ri.records, 0);
    append_range(w, 0, n1, VMAX);
    wal_stats st;
    wal_get_stats(w, &st);
    assert_int_equal(st.records, n1);
    assert_true(st.segments > 10);
    assert_int_equal(st.failed, SHOAL_OK);
    wal_close(w);

    assert_int_equal(wal_open(&o, collect, &g, &w, &ri), SHOAL_OK);
    assert_got(&g, NULL, n1, 4, VMAX);
    assert_int_equal(ri.records, n1);
    assert_int_equal(ri.torn_bytes, 0);
    got_clear(&g);
    append_range(w, n1, n2, VMAX); /* appends continue after recovery */
    wal_close(w);
    assert_int_equal(recover_only(&d, seg, &g, &ri), SHOAL_OK);
    assert_got(&g, NULL, n2, 4, VMAX);
    got_clear(&g);
}

static void
test_wal_reopen_replays_everything(void **state)
{
    roundtrip_policy(*state, WAL_FSYNC_ALWAYS, "always");
    roundtrip_policy(*state, WAL_FSYNC_INTERVAL, "interval");
    roundtrip_policy(*state, WAL_FSYNC_NONE, "none");
}

static void
test_wal_bad_options_and_args(void **state)
{
    tdir d;
    wal *w = (wal *) &d;
    wal_opts o;
    tdir_init(&d, fs_posix(), NULL, *state, "opts");

    opts_for(&o, &d, 4096, WAL_FSYNC_ALWAYS);
    o.dir = NULL;
    assert_int_equal(wal_open(&o, NULL, NULL, &w, NULL), SHOAL_EINVAL);
    assert_null(w);
    opts_for(&o, &d, 1000, WAL_FSYNC_ALWAYS); /* segment too small */
    assert_int_equal(wal_open(&o, NULL, NULL, &w, NULL), SHOAL_EINVAL);
    opts_for(&o, &d, 8192, WAL_FSYNC_ALWAYS);
    o.max_record_bytes = 4097; /* over segment_bytes / 2 */
    assert_int_equal(wal_open(&o, NULL, NULL, &w, NULL), SHOAL_EINVAL);
    opts_for(&o, &d, 8192, WAL_FSYNC_ALWAYS);
    o.n_shards = 0;
    assert_int_equal(wal_open(&o, NULL, NULL, &w, NULL), SHOAL_EINVAL);
    opts_for(&o, &d, 8192, (wal_fsync) 7);
    assert_int_equal(wal_open(&o, NULL, NULL, &w, NULL), SHOAL_EINVAL);
    opts_for(&o, &d, 8192, WAL_FSYNC_ALWAYS);
    o.dir = "/nonexistent/shoal-wal-test";
    assert_int_equal(wal_open(&o, NULL, NULL, &w, NULL), SHOAL_EINVAL);
    assert_int_equal(tdir_count(&d), 0);

    opts_for(&o, &d, 8192, WAL_FSYNC_ALWAYS);
    o.max_record_bytes = 1000;
    assert_int_equal(wal_open(&o, NULL, NULL, &w, NULL), SHOAL_OK);
    uint8_t big[1000] = {0};
    wal_op op = {WAL_OP_PUT, 0, (const uint8_t *) "k", 1, big, 1000};
    uint64_t t = 99;
    assert_int_equal(wal_append(w, 0, 1, 1, &op, 1, &t), SHOAL_ETOOLARGE);
    assert_int_equal(t, 0);
    op.vlen = 1000 - WAL_REC_HDR - 4 - WAL_OP_HDR - 1; /* exactly the max */
    assert_int_equal(wal_append(w, 0, 1, 1, &op, 1, &t), SHOAL_OK);
    assert_int_equal(t, 1000);
    assert_int_equal(wal_append(w, 4, 1, 2, &op, 1, &t), SHOAL_EINVAL);
    op.kind = 9;
    assert_int_equal(wal_append(w, 0, 1, 2, &op, 1, &t), SHOAL_EINVAL);
    assert_int_equal(wal_last_ticket(w), 1000);
    assert_int_equal(wal_wait(w, 1001, false), SHOAL_EINVAL);
    assert_int_equal(wal_wait(w, 1000, false), SHOAL_OK);
    assert_true(wal_is_committed(w, 1000));
    assert_int_equal(wal_wait(w, 0, true), SHOAL_OK);
    wal_close(w);
    wal_close(NULL);
}

/* fsync=none commits on append; durable waits still fsync. interval
 * commits once written. */
static void
test_wal_policies_commit_levels(void **state)
{
    const wal_fsync pols[] = {WAL_FSYNC_NONE, WAL_FSYNC_INTERVAL};
    for (size_t p = 0; p < 2; p++) {
        tdir d;
        wal *w = NULL;
        wal_opts o;
        tdir_init(&d, fs_posix(), NULL, *state, p == 0 ? "none" : "intv");
        opts_for(&o, &d, 1u << 20, pols[p]);
        o.interval_ms = 20;
        assert_int_equal(wal_open(&o, NULL, NULL, &w, NULL), SHOAL_OK);
        wal_op op = {
            WAL_OP_PUT, 0, (const uint8_t *) "k", 1, (const uint8_t *) "v", 1};
        uint64_t t = 0;
        assert_int_equal(wal_append(w, 1, 1, 1, &op, 1, &t), SHOAL_OK);
        if (pols[p] == WAL_FSYNC_NONE)
            assert_true(wal_is_committed(w, t));
        assert_int_equal(wal_wait(w, t, false), SHOAL_OK);
        assert_true(wal_is_committed(w, t));
        assert_int_equal(wal_wait(w, t, true), SHOAL_OK);
        wal_stats st;
        wal_get_stats(w, &st);
        assert_true(st.durable_ticket >= t);
        assert_true(st.fsyncs >= 1);
        if (pols[p] == WAL_FSYNC_INTERVAL) {
            /* The timer syncs unsynced writes by itself. */
            assert_int_equal(wal_append(w, 1, 1, 2, &op, 1, &t), SHOAL_OK);
            uint64_t until = clock_mono_ns() + 5000000000u;
            do {
                wal_get_stats(w, &st);
            } while (st.durable_ticket < t && clock_mono_ns() < until);
            assert_true(st.durable_ticket >= t);
        }
        wal_close(w);
    }
}

/* ---- group commit -------------------------------------------------------- */

#define GC_THREADS 8
#define GC_PER     150

typedef struct gthread {
    wal *w;
    uint16_t shard;
    _Atomic uint64_t acked; /* lsns 1..acked of this shard are durable */
} gthread;

static void *
gc_main(void *arg)
{
    gthread *t = arg;
    uint8_t val[64];
    for (uint64_t lsn = 1; lsn <= GC_PER; lsn++) {
        memset(val, (int) lsn, sizeof val);
        wal_op op = {WAL_OP_PUT, 0,   (const uint8_t *) "k",
                     1,          val, (uint32_t) (lsn % sizeof val)};
        uint64_t tk;
        assert_int_equal(wal_append(t->w, t->shard, 1, lsn, &op, 1, &tk),
                         SHOAL_OK);
        assert_int_equal(wal_wait(t->w, tk, false), SHOAL_OK);
        atomic_store(&t->acked, lsn);
    }
    return NULL;
}

/* Each shard's replayed lsns are 1..n with n >= floor[shard]. */
static void
assert_shard_prefixes(const got *g, const uint64_t *floor, int n_shards)
{
    uint64_t next[GC_THREADS] = {0};
    for (size_t i = 0; i < g->n; i++) {
        assert_true(g->v[i].shard < n_shards);
        assert_int_equal(g->v[i].lsn, next[g->v[i].shard] + 1);
        next[g->v[i].shard]++;
    }
    for (int s = 0; s < n_shards; s++) {
        if (next[s] < floor[s])
            fprintf(stderr,
                    "# shard %d: %" PRIu64 " replayed, %" PRIu64
                    " acknowledged\n",
                    s, next[s], floor[s]);
        assert_true(next[s] >= floor[s]);
    }
}

/* Recover a crash image of d->m taken now into g (and *ri, may be NULL). */
static shoal_err
crash_image_open(const tdir *d, const wal_opts *o, fs_crash_mode mode,
                 uint64_t seed, got *g, wal_recovery *ri)
{
    fs_mem *img = NULL;
    wal *wi = NULL;
    wal_opts oi = *o;

    assert_int_equal(fs_mem_crash_clone(d->m, mode, seed, &img), SHOAL_OK);
    oi.fs = fs_mem_fs(img);
    shoal_err rc = wal_open(&oi, collect, g, &wi, ri);
    wal_close(wi);
    fs_mem_close(img);
    return rc;
}

/* Crash images taken while the appenders run hold every record
 * acknowledged before the image. */
static void
crash_images_while_running(const tdir *d, const wal_opts *o, gthread *th)
{
    got g = {0};

    for (int round = 0; round < 200; round++) {
        uint64_t floor[GC_THREADS];
        for (int i = 0; i < GC_THREADS; i++)
            floor[i] = atomic_load(&th[i].acked);
        fs_crash_mode mode = (fs_crash_mode) (round % 4);
        /* Every image opens: whatever a power cut does to the unsynced
         * batch is beyond the durable frontier, a tail to cut. */
        assert_int_equal(
            crash_image_open(d, o, mode, (uint64_t) round, &g, NULL), SHOAL_OK);
        assert_shard_prefixes(&g, floor, GC_THREADS);
        got_clear(&g);
        if (round % 8 == 0) {
            struct timespec ts = {0, 1000 * 1000};
            nanosleep(&ts, NULL);
        }
    }
    printf("# group commit: 200 crash images recovered\n");
}

static void
group_commit_stats(const tdir *d, wal *w)
{
    wal_stats st;
    wal_get_stats(w, &st);
    printf("# group commit (%s): %" PRIu64 " records, %" PRIu64
           " fsyncs, %" PRIu64 " batches, largest %" PRIu64 "\n",
           d->m != NULL ? "fs_mem" : "disk", st.records, st.fsyncs, st.batches,
           st.max_batch_records);
    assert_int_equal(st.records, GC_THREADS * GC_PER);
    assert_true(st.batches <= st.records);
    if (d->m == NULL)
        assert_true(st.max_batch_records > 1); /* a real fsync is slow */
}

/* GC_THREADS appenders wait for each record; everything waited for is
 * durable (crash images on fs_mem), and all of it reopens. */
static void
group_commit_run(tdir *d, bool crash_images)
{
    wal *w = NULL;
    wal_opts o;
    gthread th[GC_THREADS];
    pthread_t tid[GC_THREADS];
    uint64_t all[GC_THREADS];
    got g = {0};

    opts_for(&o, d, 64u << 10, WAL_FSYNC_ALWAYS);
    o.n_shards = GC_THREADS;
    assert_int_equal(wal_open(&o, NULL, NULL, &w, NULL), SHOAL_OK);
    for (int i = 0; i < GC_THREADS; i++) {
        th[i] = (gthread){.w = w, .shard = (uint16_t) i};
        all[i] = GC_PER;
        assert_int_equal(pthread_create(&tid[i], NULL, gc_main, &th[i]), 0);
    }
    if (crash_images)
        crash_images_while_running(d, &o, th);
    for (int i = 0; i < GC_THREADS; i++)
        pthread_join(tid[i], NULL);
    group_commit_stats(d, w);
    if (d->m != NULL) {
        assert_int_equal(
            crash_image_open(d, &o, FS_CRASH_DROP_UNSYNCED, 1, &g, NULL),
            SHOAL_OK);
        assert_shard_prefixes(&g, all, GC_THREADS);
        got_clear(&g);
    }
    wal_close(w);
    assert_int_equal(wal_open(&o, collect, &g, &w, NULL), SHOAL_OK);
    wal_close(w);
    assert_int_equal(g.n, GC_THREADS * GC_PER);
    assert_shard_prefixes(&g, all, GC_THREADS);
    got_clear(&g);
}

static void
test_wal_group_commit_always(void **state)
{
    tdir d;
    tdir_init(&d, fs_posix(), NULL, *state, "gc");
    group_commit_run(&d, false);

    fs_mem *m = NULL;
    assert_int_equal(fs_mem_open(&m), SHOAL_OK);
    tdir_init(&d, fs_mem_fs(m), m, "", "gcmem");
    group_commit_run(&d, true);
    fs_mem_close(m);
}

/* ---- notifications ------------------------------------------------------- */

#define NT_N 300

typedef struct ncount {
    _Atomic int calls;
    _Atomic int rc;
} ncount;

static void
note_cb(void *arg, shoal_err rc)
{
    ncount *c = arg;
    atomic_fetch_add(&c->calls, 1);
    atomic_store(&c->rc, (int) rc);
}

static void
test_wal_notify_fires_once(void **state)
{
    const wal_fsync pols[] = {WAL_FSYNC_ALWAYS, WAL_FSYNC_INTERVAL,
                              WAL_FSYNC_NONE};
    static ncount c[NT_N];
    for (size_t p = 0; p < 3; p++) {
        tdir d;
        wal *w = NULL;
        wal_opts o;
        char name[16];
        snprintf(name, sizeof name, "n%zu", p);
        tdir_init(&d, fs_posix(), NULL, *state, name);
        opts_for(&o, &d, 16u << 10, pols[p]);
        assert_int_equal(wal_open(&o, NULL, NULL, &w, NULL), SHOAL_OK);
        memset(c, 0, sizeof c);
        spec *s = malloc(sizeof *s);
        assert_non_null(s);
        for (int i = 0; i < NT_N; i++) {
            uint64_t t;
            spec_fill(s, (uint64_t) i, 4, 200);
            assert_int_equal(spec_append(w, s, &t), SHOAL_OK);
            bool durable = i % 3 == 0;
            assert_int_equal(wal_notify(w, t, durable, note_cb, &c[i]),
                             SHOAL_OK);
            if (pols[p] == WAL_FSYNC_NONE && !durable)
                assert_int_equal(atomic_load(&c[i].calls), 1); /* at once */
            if (i == NT_N / 2) {
                /* Already committed: the callback runs before return. */
                assert_int_equal(wal_wait(w, t, true), SHOAL_OK);
                ncount now = {0};
                assert_int_equal(wal_notify(w, t, true, note_cb, &now),
                                 SHOAL_OK);
                assert_int_equal(atomic_load(&now.calls), 1);
            }
        }
        free(s);
        ncount never = {0};
        assert_int_equal(
            wal_notify(w, wal_last_ticket(w) + 1, false, note_cb, &never),
            SHOAL_EINVAL);
        wal_close(w); /* completes whatever is pending */
        assert_int_equal(atomic_load(&never.calls), 0);
        for (int i = 0; i < NT_N; i++) {
            assert_int_equal(atomic_load(&c[i].calls), 1);
            assert_int_equal(atomic_load(&c[i].rc), SHOAL_OK);
        }
    }
}

/* ---- G3 / G4 images ------------------------------------------------------ */

#define IMG_N   20
#define IMG_SEG (16u << 10)
#define HOUR_MS 3600000u /* an fsync interval that never fires in a test */

typedef struct image {
    uint8_t *crash;      /* the segment as a power cut could leave it */
    uint8_t *clean;      /* the same after wal_close (ends with SEG_END) */
    size_t len;          /* bytes of either */
    size_t b[IMG_N + 1]; /* record k spans [b[k], b[k+1]) */
    uint64_t f_crash;    /* the durable frontier the crash image claims */
    uint64_t f_clean;    /* ... and the clean one: its end */
} image;

/* The frontier the slots of a segment image of seq claim (WAL_SEG_HDR if
 * none): the layout of wal.h, read independently of wal.c. */
static uint64_t
claim_of(const uint8_t *seg, uint64_t seq)
{
    uint64_t best = WAL_SEG_HDR;
    uint8_t salt[8];
    put_u64(salt, seq);
    for (unsigned i = 0; i < 2; i++) {
        const uint8_t *s = seg + WAL_SEG_SLOTS + i * WAL_SLOT_LEN;
        uint32_t gen = get_u32(s + 8);
        uint32_t crc = (uint32_t) crc32_z(crc32_z(0, salt, 8), s, 12);
        if (gen == 0 || (gen & 1u) != (i == 0 ? 1u : 0u) ||
            get_u32(s + 12) != crc)
            continue;
        if (get_u64(s) > best)
            best = get_u64(s);
    }
    return best;
}

/* Write IMG_N records to a fresh log in d and capture the segment. Records
 * [0, n_durable) are each waited for durably (one batch and fdatasync
 * each, WAL_CLAIM_NS apart so each next batch claims); the rest only reach
 * the OS (fsync=interval, an interval that never fires), so they lie beyond
 * the durable frontier. */
static void
image_make(const tdir *d, image *im, int n_durable)
{
    wal *w = NULL;
    wal_opts o;
    spec *s = malloc(sizeof *s);
    assert_non_null(s);
    opts_for(&o, d, IMG_SEG, WAL_FSYNC_INTERVAL);
    o.interval_ms = HOUR_MS;
    assert_int_equal(wal_open(&o, NULL, NULL, &w, NULL), SHOAL_OK);
    im->b[0] = WAL_SEG_HDR;
    for (int i = 0; i < IMG_N; i++) {
        uint64_t t;
        spec_fill(s, (uint64_t) i, 4, 60);
        im->b[i + 1] = im->b[i] + spec_rec_len(s);
        assert_int_equal(spec_append(w, s, &t), SHOAL_OK);
        assert_int_equal(wal_wait(w, t, i < n_durable), SHOAL_OK);
        if (i < n_durable) {
            struct timespec ts = {0, (long) WAL_CLAIM_NS + 1000000};
            nanosleep(&ts, NULL);
        }
    }
    free(s);
    assert_true(im->b[IMG_N] < IMG_SEG / 2); /* one segment, no rotation */
    size_t len;
    im->crash = tdir_read(d, SEG1, &im->len);
    wal_close(w);
    im->clean = tdir_read(d, SEG1, &len);
    assert_int_equal(len, im->len);
    assert_int_equal(len, IMG_SEG);
    assert_memory_equal(im->crash, im->clean, WAL_SEG_SLOTS);
    assert_memory_equal(im->crash + WAL_SEG_HDR, im->clean + WAL_SEG_HDR,
                        im->b[IMG_N] - WAL_SEG_HDR);
    assert_int_equal(im->clean[im->b[IMG_N] + 8], WAL_REC_SEG_END);
    assert_true(im->crash[im->b[IMG_N] + 8] == 0);
    /* The claims: batch k carries what the fdatasync of batch k - 1
     * covered; wal_close claims the end. */
    int last_claim = n_durable < IMG_N ? n_durable : IMG_N - 1;
    im->f_crash = im->b[last_claim];
    im->f_clean = im->b[IMG_N] + WAL_REC_HDR;
    assert_int_equal(claim_of(im->crash, 1), im->f_crash);
    assert_int_equal(claim_of(im->clean, 1), im->f_clean);
}

static void
image_free(image *im)
{
    free(im->crash);
    free(im->clean);
}

/* Recover buf as the only segment of d: the rc, and the replay in g. */
static shoal_err
image_try(const tdir *d, const uint8_t *buf, size_t len, got *g,
          wal_recovery *ri)
{
    tdir_clear(d);
    tdir_write(d, SEG1, buf, len);
    got_clear(g);
    log_reset();
    return recover_only(d, IMG_SEG, g, ri);
}

/* How many whole records end at or before x. */
static size_t
whole_before(const image *im, size_t x)
{
    size_t k = 0;
    while (k < IMG_N && im->b[k + 1] <= x)
        k++;
    return k;
}

/* Whether to try the zeroing variant at x (all: every offset). */
static bool
g3_zero_at(const image *im, size_t x, bool all)
{
    size_t k = whole_before(im, x);
    return all || k >= IMG_N - 1 || x - im->b[k] <= 1 || im->b[k + 1] - x <= 1;
}

/* The log names the file, the offset of the bad record and the frontier. */
static void
assert_logged_durable(size_t off, uint64_t frontier)
{
    char at[64], region[96];
    snprintf(at, sizeof at, "offset %zu,", off);
    snprintf(region, sizeof region, "durable region ending at %" PRIu64,
             frontier);
    assert_logged(SEG1, at);
    assert_logged(SEG1, region);
}

/* Zeroed from x on (preallocated: the size stays): a tail beyond the
 * frontier is cut to the longest whole prefix; zeros inside it are lost
 * acknowledged data, reported. */
static void
g3_zeroed(const tdir *d, const image *im, uint8_t *z, size_t x)
{
    got g = {0};
    wal_recovery ri;
    size_t k = whole_before(im, x);
    memcpy(z, im->crash, x);
    memset(z + x, 0, im->len - x);
    shoal_err rc = image_try(d, z, im->len, &g, &ri);
    if (im->b[k] < im->f_crash) {
        assert_int_equal(rc, SHOAL_ECORRUPT);
        assert_logged_durable(im->b[k], im->f_crash);
    } else {
        assert_int_equal(rc, SHOAL_OK);
        assert_got(&g, NULL, k, 4, 60);
        assert_true(ri.torn_bytes <= x - im->b[k]);
    }
    got_clear(&g);
}

/* zero_all: the zeroing variant at every offset too (else only in the last
 * record and next to record boundaries; the truncation variant always runs
 * at every offset). */
static void
g3_run(const tdir *d, const image *im, bool zero_all)
{
    uint8_t *z = malloc(im->len);
    got g = {0};
    wal_recovery ri;
    assert_non_null(z);
    size_t end = im->b[IMG_N] + WAL_REC_HDR;
    for (size_t x = WAL_SEG_HDR; x <= end; x++) {
        size_t k = whole_before(im, x);
        /* Truncated at x, inside the durable region or not: the file ends
         * there, what is gone is gone, the whole prefix stays. */
        assert_int_equal(image_try(d, im->crash, x, &g, &ri), SHOAL_OK);
        assert_got(&g, NULL, k, 4, 60);
        assert_true(ri.torn_bytes <= x - im->b[k]);
        /* The clean image cut anywhere, its SEG_END included. */
        assert_int_equal(image_try(d, im->clean, x, &g, &ri), SHOAL_OK);
        assert_got(&g, NULL, x < end ? k : IMG_N, 4, 60);
        if (g3_zero_at(im, x, zero_all))
            g3_zeroed(d, im, z, x);
    }
    /* After a cut the log takes appends and keeps them. */
    assert_int_equal(image_try(d, im->crash, im->b[5] + 7, &g, &ri), SHOAL_OK);
    assert_true(ri.torn_bytes > 0 && ri.torn_bytes <= 7);
    wal *w = NULL;
    assert_int_equal(reopen(d, IMG_SEG, NULL, NULL, &w), SHOAL_OK);
    append_range(w, 5, 9, 60);
    wal_close(w);
    got_clear(&g);
    assert_int_equal(recover_only(d, IMG_SEG, &g, &ri), SHOAL_OK);
    assert_got(&g, NULL, 9, 4, 60);
    got_clear(&g);
    free(z);
}

static void
test_wal_g3_truncate_every_offset(void **state)
{
    tdir src, d;
    image im;
    tdir_init(&src, fs_posix(), NULL, *state, "src");
    tdir_init(&d, fs_posix(), NULL, *state, "try");
    image_make(&src, &im, IMG_N);
    g3_run(&d, &im, tu_long());
    image_free(&im);
}

/* What one bit flip at byte pos of img (claiming frontier f) must give:
 * the fixed header is always corruption; a slot flip falls back to the
 * other slot or to no frontier and loses nothing (the records are intact);
 * a flip in record k (or the SEG_END, k = IMG_N) is corruption when the
 * record starts inside the durable region, else a cut there. */
static void
g4_expect(const image *im, uint64_t f, size_t pos, shoal_err rc, const got *g,
          const wal_recovery *ri)
{
    size_t k = whole_before(im, pos);
    if (pos < WAL_SEG_SLOTS) {
        assert_int_equal(rc, SHOAL_ECORRUPT);
        assert_logged(SEG1, "offset 0");
    } else if (pos < WAL_SEG_HDR) {
        assert_int_equal(rc, SHOAL_OK);
        assert_got(g, NULL, IMG_N, 4, 60);
    } else if (im->b[k] < f) {
        if (rc != SHOAL_ECORRUPT)
            fprintf(stderr,
                    "# flip at byte %zu (record %zu, frontier %" PRIu64
                    "): %s\n",
                    pos, k, f, shoal_errname(rc));
        assert_int_equal(rc, SHOAL_ECORRUPT);
        assert_logged_durable(im->b[k], f);
    } else {
        assert_int_equal(rc, SHOAL_OK);
        assert_got(g, NULL, k, 4, 60);
        assert_true(ri->torn_bytes > 0);
    }
}

/* Flip each bit of img[from, to) in turn. */
static void
g4_flips(const tdir *d, const image *im, const uint8_t *img, uint64_t f,
         size_t from, size_t to)
{
    uint8_t *m = malloc(im->len);
    got g = {0};
    wal_recovery ri;
    assert_non_null(m);
    memcpy(m, img, im->len);
    for (size_t bit = from * 8; bit < to * 8; bit++) {
        m[bit / 8] ^= (uint8_t) (1u << (bit % 8));
        shoal_err rc = image_try(d, m, im->len, &g, &ri);
        m[bit / 8] ^= (uint8_t) (1u << (bit % 8));
        g4_expect(im, f, bit / 8, rc, &g, &ri);
    }
    got_clear(&g);
    free(m);
}

/* Two faults: a slot flip and a flip in record k. The frontier may fall
 * back below record k, so it may be cut instead of reported, but recovery
 * never replays anything but an exact prefix. */
static void
g4_slot_and_record(const tdir *d, const image *im, const uint8_t *img, size_t k)
{
    uint8_t *m = malloc(im->len);
    got g = {0};
    wal_recovery ri;
    assert_non_null(m);
    for (size_t bit = WAL_SEG_SLOTS * 8; bit < WAL_SEG_HDR * 8; bit++) {
        memcpy(m, img, im->len);
        m[bit / 8] ^= (uint8_t) (1u << (bit % 8));
        m[im->b[k] + 8] ^= 0x40; /* the type byte */
        shoal_err rc = image_try(d, m, im->len, &g, &ri);
        assert_true(rc == SHOAL_ECORRUPT || rc == SHOAL_OK);
        if (rc == SHOAL_OK)
            assert_got(&g, NULL, k, 4, 60);
    }
    got_clear(&g);
    free(m);
}

/* Flip every bit of the header and slots, and of the records from record
 * `from` on (the clean image's SEG_END included), of the crash image and,
 * with clean, of the clean one. */
static void
g4_run(const tdir *d, const image *im, size_t from, bool clean)
{
    const size_t *b = im->b;
    g4_flips(d, im, im->crash, im->f_crash, 0, WAL_SEG_HDR);
    g4_flips(d, im, im->crash, im->f_crash, b[from], b[IMG_N]);
    g4_slot_and_record(d, im, im->crash, IMG_N - 2);
    if (!clean)
        return;
    /* Closed cleanly, the frontier is the end: a flip anywhere in the
     * records, the last one and the SEG_END included, is reported. */
    g4_flips(d, im, im->clean, im->f_clean, 0, WAL_SEG_HDR);
    g4_flips(d, im, im->clean, im->f_clean, b[from], b[IMG_N] + WAL_REC_HDR);
    g4_slot_and_record(d, im, im->clean, IMG_N - 1);
}

static void
test_wal_g4_bit_flips(void **state)
{
    tdir src, d;
    image im;
    tdir_init(&src, fs_posix(), NULL, *state, "src");
    tdir_init(&d, fs_posix(), NULL, *state, "try");
    image_make(&src, &im, IMG_N);
    g4_run(&d, &im, IMG_N - 3, true);
    image_free(&im);
}

/* The same exhaustive runs on the in-memory fs (fast, so cheap to keep),
 * for a log synced record by record, and for one whose last half only
 * reached the OS (beyond the frontier: a crash image taken before close,
 * where a flip in those records is a cut at that record). */
static void
test_wal_g3_g4_fs_mem(void **state)
{
    (void) state;
    const int durable[] = {IMG_N, IMG_N / 2, 0};
    for (size_t i = 0; i < sizeof durable / sizeof durable[0]; i++) {
        fs_mem *m = NULL;
        tdir src, d;
        image im;
        assert_int_equal(fs_mem_open(&m), SHOAL_OK);
        tdir_init(&src, fs_mem_fs(m), m, "", "src");
        tdir_init(&d, fs_mem_fs(m), m, "", "try");
        image_make(&src, &im, durable[i]);
        g3_run(&d, &im, true);
        g4_run(&d, &im, 0, i == 0); /* the clean images are alike */
        image_free(&im);
        fs_mem_close(m);
    }
}

/* A flip anywhere in a finished segment is corruption, even in its final
 * records: only the newest segment can have a torn tail. */
static void
test_wal_g4_finished_segment(void **state)
{
    (void) state;
    fs_mem *m = NULL;
    tdir d;
    wal *w = NULL;
    assert_int_equal(fs_mem_open(&m), SHOAL_OK);
    tdir_init(&d, fs_mem_fs(m), m, "", "fin");
    assert_int_equal(reopen(&d, IMG_SEG, NULL, NULL, &w), SHOAL_OK);
    append_range(w, 0, IMG_N, 60);
    wal_close(w); /* segment 1 finished */
    assert_int_equal(reopen(&d, IMG_SEG, NULL, NULL, &w), SHOAL_OK);
    append_range(w, IMG_N, IMG_N + 3, 60);
    wal_close(w); /* segment 2 holds 3 records */
    size_t len1, len2;
    uint8_t *s1 = tdir_read(&d, SEG1, &len1);
    uint8_t *s2 = tdir_read(&d, SEG2, &len2);
    size_t end = WAL_SEG_HDR;
    spec *s = malloc(sizeof *s);
    assert_non_null(s);
    size_t b17 = 0;
    for (int i = 0; i < IMG_N; i++) {
        if (i == IMG_N - 3)
            b17 = end;
        spec_fill(s, (uint64_t) i, 4, 60);
        end += spec_rec_len(s);
    }
    free(s);
    uint8_t *mut = malloc(len1);
    got g = {0};
    wal_recovery ri;
    assert_non_null(mut);
    for (size_t bit = 0; bit < (end + WAL_REC_HDR) * 8; bit++) {
        if (bit == WAL_SEG_SLOTS * 8)
            bit = b17 * 8; /* header, then the last 3 records + SEG_END */
        memcpy(mut, s1, len1);
        mut[bit / 8] ^= (uint8_t) (1u << (bit % 8));
        tdir_clear(&d);
        tdir_write(&d, SEG1, mut, len1);
        tdir_write(&d, SEG2, s2, len2);
        log_reset();
        got_clear(&g);
        assert_int_equal(recover_only(&d, IMG_SEG, &g, &ri), SHOAL_ECORRUPT);
        assert_logged(SEG1, "offset");
    }
    /* Its slots are not read: a finished segment must end with SEG_END,
     * whatever it claims. */
    for (size_t bit = WAL_SEG_SLOTS * 8; bit < WAL_SEG_HDR * 8; bit++) {
        memcpy(mut, s1, len1);
        mut[bit / 8] ^= (uint8_t) (1u << (bit % 8));
        tdir_clear(&d);
        tdir_write(&d, SEG1, mut, len1);
        tdir_write(&d, SEG2, s2, len2);
        got_clear(&g);
        assert_int_equal(recover_only(&d, IMG_SEG, &g, &ri), SHOAL_OK);
        assert_got(&g, NULL, IMG_N + 3, 4, 60);
    }
    /* Truncated anywhere before its SEG_END ends: corruption too. */
    for (size_t x = b17; x < end + WAL_REC_HDR; x += 5) {
        tdir_clear(&d);
        tdir_write(&d, SEG1, s1, x);
        tdir_write(&d, SEG2, s2, len2);
        got_clear(&g);
        assert_int_equal(recover_only(&d, IMG_SEG, &g, &ri), SHOAL_ECORRUPT);
    }
    /* Intact, both replay. */
    tdir_clear(&d);
    tdir_write(&d, SEG1, s1, len1);
    tdir_write(&d, SEG2, s2, len2);
    got_clear(&g);
    assert_int_equal(recover_only(&d, IMG_SEG, &g, &ri), SHOAL_OK);
    assert_got(&g, NULL, IMG_N + 3, 4, 60);
    got_clear(&g);
    free(mut);
    free(s1);
    free(s2);
    fs_mem_close(m);
}

/* ---- power cuts with concurrent appenders (fs_mem) ---------------------- */

#define PC_IMAGES  500
#define PC_STEP    2      /* records each appender may add per image */
#define PC_VMAX    300    /* value bytes at most */
#define PC_SYNC_NS 300000 /* fdatasync latency of the device */

/* The appenders are paced by the images (each may run PC_STEP records
 * ahead of the image count), so the log stays small enough to clone and
 * replay 500 times, and every image is taken while they append. */
typedef struct pcthread {
    wal *w;
    uint16_t shard;
    wal_fsync pol;
    _Atomic int *stop;
    _Atomic uint64_t *allow; /* lsns up to this may be appended */
    _Atomic uint64_t acked;  /* lsns 1..acked of this shard: wal_wait OK */
} pcthread;

/* fs_mem behind a device with fdatasync latency: fsync waits before it
 * syncs, so the writer's last batch stays unsynced for a while, as on a
 * disk, and a crash image taken at a random moment often catches it in
 * flight. Everything else goes straight through. */
typedef struct slow_fs {
    fs base; /* first member: (fs *) is (slow_fs *) */
    fs *inner;
    long fsync_ns;
} slow_fs;

static fs *
slow_inner(fs *f)
{
    return ((slow_fs *) (void *) f)->inner;
}

static shoal_err
slow_open(fs *f, const char *path, int flags, int *fd_out)
{
    return fs_open(slow_inner(f), path, flags, fd_out);
}

static void
slow_close(fs *f, int fd)
{
    fs_close(slow_inner(f), fd);
}

static shoal_err
slow_pread(fs *f, int fd, void *buf, size_t len, uint64_t off, size_t *n_out)
{
    return fs_pread(slow_inner(f), fd, buf, len, off, n_out);
}

static shoal_err
slow_pwrite(fs *f, int fd, const void *buf, size_t len, uint64_t off)
{
    return fs_pwrite(slow_inner(f), fd, buf, len, off);
}

static shoal_err
slow_fsync(fs *f, int fd)
{
    struct timespec ts = {0, ((slow_fs *) (void *) f)->fsync_ns};
    nanosleep(&ts, NULL);
    return fs_fsync(slow_inner(f), fd);
}

static shoal_err
slow_ftruncate(fs *f, int fd, uint64_t len)
{
    return fs_ftruncate(slow_inner(f), fd, len);
}

static shoal_err
slow_fallocate(fs *f, int fd, uint64_t len)
{
    return fs_fallocate(slow_inner(f), fd, len);
}

static shoal_err
slow_fsize(fs *f, int fd, uint64_t *len_out)
{
    return fs_fsize(slow_inner(f), fd, len_out);
}

static shoal_err
slow_rename(fs *f, const char *from, const char *to)
{
    return fs_rename(slow_inner(f), from, to);
}

static shoal_err
slow_unlink(fs *f, const char *path)
{
    return fs_unlink(slow_inner(f), path);
}

static shoal_err
slow_mkdir(fs *f, const char *path)
{
    return fs_mkdir(slow_inner(f), path);
}

static shoal_err
slow_dir_fsync(fs *f, const char *dir)
{
    return fs_dir_fsync(slow_inner(f), dir);
}

static shoal_err
slow_list(fs *f, const char *dir, fs_list_cb cb, void *arg)
{
    return fs_list(slow_inner(f), dir, cb, arg);
}

static const fs_ops slow_ops = {
    .open = slow_open,
    .close = slow_close,
    .pread = slow_pread,
    .pwrite = slow_pwrite,
    .fsync = slow_fsync,
    .ftruncate = slow_ftruncate,
    .fallocate = slow_fallocate,
    .fsize = slow_fsize,
    .rename = slow_rename,
    .unlink = slow_unlink,
    .mkdir = slow_mkdir,
    .dir_fsync = slow_dir_fsync,
    .list = slow_list,
};

/* The one op of record (shard, lsn): sizes vary so batches span pages. */
static void
pc_op(uint16_t shard, uint64_t lsn, uint8_t *val, wal_op *op)
{
    uint32_t vlen = (uint32_t) ((lsn * 37 + shard * 11) % (PC_VMAX + 1));
    for (uint32_t i = 0; i < vlen; i++)
        val[i] = (uint8_t) (lsn * 7 + shard + i);
    *op = (wal_op){WAL_OP_PUT, 0, (const uint8_t *) "pc", 2, val, vlen};
}

/* always: wait for every record; interval and none: a durable wait on
 * every 4th, a plain one (written / buffered) on the rest. Only durable
 * waits count as acknowledged. */
static void *
pc_main(void *arg)
{
    pcthread *t = arg;
    uint8_t val[PC_VMAX];
    for (uint64_t lsn = 1; !atomic_load(t->stop); lsn++) {
        wal_op op;
        uint64_t tk;
        while (lsn > atomic_load(t->allow) && !atomic_load(t->stop)) {
            struct timespec ts = {0, 20 * 1000};
            nanosleep(&ts, NULL);
        }
        pc_op(t->shard, lsn, val, &op);
        assert_int_equal(wal_append(t->w, t->shard, 1, lsn, &op, 1, &tk),
                         SHOAL_OK);
        bool durable = t->pol == WAL_FSYNC_ALWAYS || lsn % 4 == 0;
        assert_int_equal(wal_wait(t->w, tk, durable), SHOAL_OK);
        if (durable)
            atomic_store(&t->acked, lsn);
    }
    return NULL;
}

/* Every replayed record is exactly the one appended (never garbage). */
static void
pc_check_payloads(const got *g)
{
    uint8_t val[PC_VMAX], want[WAL_OP_HDR + 16 + PC_VMAX];
    for (size_t i = 0; i < g->n; i++) {
        wal_op op;
        pc_op(g->v[i].shard, g->v[i].lsn, val, &op);
        size_t len = wal_ops_size(&op, 1);
        wal_ops_encode(&op, 1, want);
        assert_int_equal(g->v[i].len, len);
        assert_memory_equal(g->v[i].payload, want, len);
    }
}

/* Let the appenders run PC_STEP more records each, and pick a moment in
 * that burst to crash (seeded). */
static void
pc_burst(_Atomic uint64_t *allow, uint64_t *rs)
{
    atomic_fetch_add(allow, PC_STEP);
    struct timespec ts = {0, (long) (tu_rand(rs) % 400) * 1000};
    nanosleep(&ts, NULL);
}

/* One power-cut run: its log, its device and its appenders. Static, one
 * per policy: a failed assertion leaves the test while they still run. */
typedef struct pcrun {
    fs_mem *m;
    tdir d;
    slow_fs slow;
    wal_opts o;
    wal *w;
    pcthread th[GC_THREADS];
    pthread_t tid[GC_THREADS];
    _Atomic int stop;
    _Atomic uint64_t allow;
} pcrun;

static pcrun *
pc_start(wal_fsync pol)
{
    static pcrun runs[3];
    pcrun *r = &runs[pol];

    assert_int_equal(fs_mem_open(&r->m), SHOAL_OK);
    tdir_init(&r->d, fs_mem_fs(r->m), r->m, "", "pc");
    r->slow = (slow_fs){{&slow_ops}, r->d.f, PC_SYNC_NS};
    atomic_store(&r->stop, 0);
    atomic_store(&r->allow, PC_STEP);
    opts_for(&r->o, &r->d, 64u << 10, pol);
    r->o.fs = &r->slow.base;
    r->o.n_shards = GC_THREADS;
    r->o.interval_ms = 2;
    assert_int_equal(wal_open(&r->o, NULL, NULL, &r->w, NULL), SHOAL_OK);
    for (int i = 0; i < GC_THREADS; i++) {
        r->th[i] = (pcthread){.w = r->w,
                              .shard = (uint16_t) i,
                              .pol = pol,
                              .stop = &r->stop,
                              .allow = &r->allow};
        assert_int_equal(pthread_create(&r->tid[i], NULL, pc_main, &r->th[i]),
                         0);
    }
    return r;
}

/* Crash now (seeded): the image opens, with every acknowledged record and
 * nothing else. Returns whether it had a tail to cut. */
static bool
pc_image(pcrun *r, uint64_t seed)
{
    uint64_t floor[GC_THREADS];
    got g = {0};
    wal_recovery ri;

    for (int i = 0; i < GC_THREADS; i++)
        floor[i] = atomic_load(&r->th[i].acked);
    shoal_err rc =
        crash_image_open(&r->d, &r->o, FS_CRASH_RANDOM, seed, &g, &ri);
    if (rc != SHOAL_OK)
        fprintf(stderr, "# %s, image seed %" PRIu64 ": %s\n",
                wal_fsync_name(r->o.fsync), seed, shoal_errname(rc));
    assert_int_equal(rc, SHOAL_OK);
    assert_shard_prefixes(&g, floor, GC_THREADS);
    pc_check_payloads(&g);
    got_clear(&g);
    return ri.torn_bytes > 0;
}

static void
pc_stop(pcrun *r, int torn)
{
    wal_stats st;

    atomic_store(&r->stop, 1);
    for (int i = 0; i < GC_THREADS; i++)
        pthread_join(r->tid[i], NULL);
    wal_get_stats(r->w, &st);
    printf("# power cut, fsync=%s, %d appenders: %d crash images, %d with "
           "a tail cut; %" PRIu64 " records, %" PRIu64
           " batches (largest %" PRIu64 "), %" PRIu64 " fsyncs\n",
           wal_fsync_name(r->o.fsync), GC_THREADS, PC_IMAGES, torn, st.records,
           st.batches, st.max_batch_records, st.fsyncs);
    wal_close(r->w);
    fs_mem_close(r->m);
}

/* PC_IMAGES FS_CRASH_RANDOM images of a log GC_THREADS appenders fill
 * under pol, each in a burst of appends. Returns how many images had a
 * tail to cut (a power cut caught a batch in flight). */
static int
power_cut_run(wal_fsync pol, uint64_t seed)
{
    pcrun *r = pc_start(pol);
    uint64_t rs = seed;
    int torn = 0;

    for (int n = 0; n < PC_IMAGES; n++) {
        pc_burst(&r->allow, &rs);
        torn += pc_image(r, seed + (uint64_t) n) ? 1 : 0;
    }
    pc_stop(r, torn);
    return torn;
}

/* A power cut can keep any subset of the unsynced writes (the page cache
 * writes pages back in any order), tear or garble them: under
 * fsync=always that is the last batch, one pwrite of many records. Every
 * such image must open (a later write surviving an earlier one is not
 * corruption) with everything acknowledged. */
static void
test_wal_power_cut_always(void **state)
{
    (void) state;
    assert_true(power_cut_run(WAL_FSYNC_ALWAYS, 1000) > 0);
}

/* The same with many unsynced batches at once. */
static void
test_wal_power_cut_interval_none(void **state)
{
    (void) state;
    assert_true(power_cut_run(WAL_FSYNC_INTERVAL, 2000) > 0);
    assert_true(power_cut_run(WAL_FSYNC_NONE, 3000) > 0);
}

/* ---- deterministic power-cut images ------------------------------------ */

/* A log on fs_mem whose records [0, n_sync) are durable (one fdatasync
 * after the last) and [n_sync, n) only reached the OS; *im is a crash image
 * keeping every unsynced write (the caller changes it), b[] the record
 * offsets. Closes the log. */
static void
tail_image(fs_mem *m, const tdir *d, uint64_t n_sync, uint64_t n, fs_mem **im,
           size_t *b)
{
    wal *w = NULL;
    wal_opts o;
    spec *s = malloc(sizeof *s);
    uint64_t t = 0;
    assert_non_null(s);
    opts_for(&o, d, IMG_SEG, WAL_FSYNC_INTERVAL);
    o.interval_ms = HOUR_MS;
    assert_int_equal(wal_open(&o, NULL, NULL, &w, NULL), SHOAL_OK);
    append_range(w, 0, n_sync, 60);
    b[0] = WAL_SEG_HDR;
    for (uint64_t i = 0; i < n; i++) {
        spec_fill(s, i, 4, 60);
        b[i + 1] = b[i] + spec_rec_len(s);
        if (i >= n_sync)
            assert_int_equal(spec_append(w, s, &t), SHOAL_OK);
    }
    assert_int_equal(wal_wait(w, t, false), SHOAL_OK); /* written */
    assert_int_equal(fs_mem_crash_clone(m, FS_CRASH_KEEP_UNSYNCED, 1, im),
                     SHOAL_OK);
    wal_close(w);
    free(s);
}

/* d's path on the file system img. */
static tdir
tdir_on(const tdir *d, fs_mem *img)
{
    tdir c = *d;
    c.f = fs_mem_fs(img);
    c.m = img;
    return c;
}

/* The unsynced tail holds a garbled record with intact records after it
 * (a power cut kept later pages of the batch but not an earlier one): cut
 * at the garbled record, the records before it kept. The same damage below
 * the frontier is reported. */
static void
test_wal_power_cut_garbled_middle_of_tail(void **state)
{
    (void) state;
    fs_mem *m = NULL, *img = NULL;
    tdir d;
    size_t b[16];
    got g = {0};
    wal_recovery ri;
    const uint8_t junk[8] = {0xa5, 0x5a, 0xa5, 0x5a, 0xa5, 0x5a, 0xa5, 0x5a};

    assert_int_equal(fs_mem_open(&m), SHOAL_OK);
    tdir_init(&d, fs_mem_fs(m), m, "", "w");
    for (int below = 0; below < 2; below++) {
        tdir_clear(&d);
        tail_image(m, &d, 10, 15, &img, b);
        tdir c = tdir_on(&d, img);
        char p[600];
        tdir_file(&c, SEG1, p, sizeof p);
        size_t len;
        uint8_t *seg = tdir_read(&c, SEG1, &len);
        assert_int_equal(claim_of(seg, 1), b[10]);
        free(seg);
        size_t at = below ? 5 : 12; /* records 13, 14 stay intact */
        assert_int_equal(fs_mem_poke(img, p, b[at] + 20, junk, sizeof junk),
                         SHOAL_OK);
        log_reset();
        shoal_err rc = recover_only(&c, IMG_SEG, &g, &ri);
        if (below) {
            assert_int_equal(rc, SHOAL_ECORRUPT);
            assert_logged_durable(b[at], b[10]);
        } else {
            assert_int_equal(rc, SHOAL_OK);
            assert_got(&g, NULL, at, 4, 60);
            assert_true(ri.torn_bytes > b[14] - b[at]);
            /* Cut for good: the SEG_END sits at the garbled record. */
            got_clear(&g);
            assert_int_equal(recover_only(&c, IMG_SEG, &g, &ri), SHOAL_OK);
            assert_got(&g, NULL, at, 4, 60);
            assert_int_equal(ri.torn_bytes, 0);
            seg = tdir_read(&c, SEG1, &len);
            assert_int_equal(seg[b[at] + 8], WAL_REC_SEG_END);
            assert_int_equal(claim_of(seg, 1), b[at] + WAL_REC_HDR);
            free(seg);
        }
        got_clear(&g);
        fs_mem_close(img);
    }
    fs_mem_close(m);
}

/* A user value: record 3 byte for byte as the log encodes it, then a
 * SEG_END. Returns its length. */
static size_t
value_of_records(uint8_t *val)
{
    spec *s = malloc(sizeof *s);
    assert_non_null(s);
    spec_fill(s, 3, 4, 60);
    size_t plen = wal_ops_size(s->ops, s->n);
    wal_ops_encode(s->ops, s->n, val + WAL_REC_HDR);
    wal_rec r = {WAL_REC_OPS, s->shard,          s->epoch,
                 s->lsn,      val + WAL_REC_HDR, (uint32_t) plen};
    wal_rec_encode(&r, val);
    size_t vlen = WAL_REC_HDR + plen;
    r = (wal_rec){.type = WAL_REC_SEG_END};
    wal_rec_encode(&r, val + vlen);
    free(s);
    return vlen + WAL_REC_HDR;
}

/* A user value holding a byte-exact encoded record (and a SEG_END) in a
 * torn tail: the value's record is not evidence of anything; cut. */
static void
test_wal_torn_tail_value_holds_a_record(void **state)
{
    (void) state;
    fs_mem *m = NULL, *img = NULL;
    tdir d;
    wal *w = NULL;
    wal_opts o;
    got g = {0};
    wal_recovery ri;
    uint8_t val[1024];
    size_t vlen = value_of_records(val), b5;
    spec *s;

    assert_int_equal(fs_mem_open(&m), SHOAL_OK);
    tdir_init(&d, fs_mem_fs(m), m, "", "w");
    opts_for(&o, &d, IMG_SEG, WAL_FSYNC_INTERVAL);
    o.interval_ms = HOUR_MS;
    assert_int_equal(wal_open(&o, NULL, NULL, &w, NULL), SHOAL_OK);
    append_range(w, 0, 5, 60); /* durable */
    b5 = WAL_SEG_HDR;
    s = malloc(sizeof *s);
    assert_non_null(s);
    for (uint64_t i = 0; i < 5; i++) {
        spec_fill(s, i, 4, 60);
        b5 += spec_rec_len(s);
    }
    free(s);
    wal_op op = {WAL_OP_PUT, 0,   (const uint8_t *) "user",
                 4,          val, (uint32_t) vlen};
    uint64_t t;
    assert_int_equal(wal_append(w, 1, 1, 99, &op, 1, &t), SHOAL_OK);
    assert_int_equal(wal_wait(w, t, false), SHOAL_OK); /* written, unsynced */
    assert_int_equal(fs_mem_crash_clone(m, FS_CRASH_KEEP_UNSYNCED, 1, &img),
                     SHOAL_OK);
    wal_close(w);
    /* The power cut lost the record's first bytes, kept the rest. */
    tdir c = tdir_on(&d, img);
    char p[600];
    uint8_t zero[WAL_REC_HDR] = {0};
    tdir_file(&c, SEG1, p, sizeof p);
    assert_int_equal(fs_mem_poke(img, p, b5, zero, sizeof zero), SHOAL_OK);
    log_reset();
    assert_int_equal(recover_only(&c, IMG_SEG, &g, &ri), SHOAL_OK);
    assert_got(&g, NULL, 5, 4, 60);
    assert_true(ri.torn_bytes > vlen);
    got_clear(&g);
    fs_mem_close(img);
    fs_mem_close(m);
}

/* Files past the newest records that never held one (a spare, a creation
 * cut short) are removed; files that are not segments are left alone. */
static void
test_wal_recovery_removes_blank_tail(void **state)
{
    tdir d;
    wal *w = NULL;
    got g = {0};
    wal_recovery ri;
    uint8_t junk[WAL_SEG_HDR + 100] = {0};

    tdir_init(&d, fs_posix(), NULL, *state, "edge");
    assert_int_equal(reopen(&d, 8192, NULL, NULL, &w), SHOAL_OK);
    append_range(w, 0, 10, 60);
    wal_close(w);
    assert_int_equal(tdir_count(&d), 1); /* finished 1, no spare */
    memcpy(junk, "SHOALWAL garbage", 16);
    tdir_write(&d, "wal-0000000000000003.log", junk, 20);
    tdir_write(&d, "wal-0000000000000004.log", junk, sizeof junk);
    tdir_write(&d, "wal-00000000000000zz.log", junk, 5); /* not ours */
    tdir_write(&d, "notes.txt", junk, 5);
    assert_int_equal(recover_only(&d, 8192, &g, &ri), SHOAL_OK);
    assert_got(&g, NULL, 10, 4, 60);
    assert_int_equal(ri.torn_bytes, 0);
    assert_false(tdir_exists(&d, "wal-0000000000000003.log"));
    assert_false(tdir_exists(&d, "wal-0000000000000004.log"));
    assert_true(tdir_exists(&d, "wal-00000000000000zz.log"));
    assert_true(tdir_exists(&d, "notes.txt"));
    assert_true(tdir_exists(&d, SEG1));
    got_clear(&g);
}

/* A record-less segment before a data segment, or a header whose seq is not
 * the file's, is corruption. */
static void
test_wal_recovery_bad_middle_and_header(void **state)
{
    tdir d;
    wal *w = NULL;
    got g = {0};
    size_t len;
    uint8_t hdr_only[WAL_SEG_HDR + 64] = {0};

    tdir_init(&d, fs_posix(), NULL, *state, "mid");
    assert_int_equal(reopen(&d, 8192, NULL, NULL, &w), SHOAL_OK);
    append_range(w, 0, 10, 60);
    wal_close(w);
    uint8_t *s1 = tdir_read(&d, SEG1, &len);
    tdir_write(&d, SEG2, hdr_only, sizeof hdr_only);
    s1[16] = 3; /* seq 3 in the header, crc fixed */
    put_u32(s1 + 28, (uint32_t) crc32_z(0, s1, 28));
    tdir_write(&d, "wal-0000000000000003.log", s1, len);
    log_reset();
    assert_int_equal(recover_only(&d, 8192, &g, NULL), SHOAL_ECORRUPT);
    assert_logged(SEG2, "offset 0");
    tdir_clear(&d);
    tdir_write(&d, SEG2, s1, len); /* names seq 2, holds seq 3 */
    assert_int_equal(recover_only(&d, 8192, &g, NULL), SHOAL_ECORRUPT);
    assert_logged(SEG2, "offset 0");
    free(s1);
    got_clear(&g);
}

/* A version 1 segment (from before the frontier slots) is refused, and the
 * log says why. */
static void
test_wal_recovery_refuses_version_1(void **state)
{
    tdir d;
    wal *w = NULL;
    got g = {0};
    size_t len;

    tdir_init(&d, fs_posix(), NULL, *state, "v1");
    assert_int_equal(reopen(&d, 8192, NULL, NULL, &w), SHOAL_OK);
    append_range(w, 0, 3, 60);
    wal_close(w);
    uint8_t *s1 = tdir_read(&d, SEG1, &len);
    put_u32(s1 + 8, 1);
    put_u32(s1 + 12, 32);
    put_u32(s1 + 28, (uint32_t) crc32_z(0, s1, 28));
    tdir_write(&d, SEG1, s1, len);
    log_reset();
    assert_int_equal(recover_only(&d, 8192, &g, NULL), SHOAL_ECORRUPT);
    assert_logged(SEG1, "format version 1");
    assert_int_equal(g.n, 0);
    free(s1);
}

/* A crc-valid record naming a shard >= n_shards is corruption. */
static void
test_wal_recovery_rejects_bad_shard(void **state)
{
    tdir d;
    wal *w = NULL;
    got g = {0};
    size_t len;
    uint8_t seg[512] = {0};

    tdir_init(&d, fs_posix(), NULL, *state, "shard");
    assert_int_equal(reopen(&d, 8192, NULL, NULL, &w), SHOAL_OK);
    wal_close(w);
    uint8_t *s0 = tdir_read(&d, SEG1, &len); /* a header, no records */
    memcpy(seg, s0, WAL_SEG_HDR);
    free(s0);
    wal_op op = {WAL_OP_PUT, 0, (const uint8_t *) "k", 1, (const uint8_t *) "v",
                 1};
    size_t plen = wal_ops_size(&op, 1);
    wal_ops_encode(&op, 1, seg + WAL_SEG_HDR + WAL_REC_HDR);
    wal_rec r = {WAL_REC_OPS,    5, 1, 1, seg + WAL_SEG_HDR + WAL_REC_HDR,
                 (uint32_t) plen};
    wal_rec_encode(&r, seg + WAL_SEG_HDR);
    tdir_clear(&d);
    tdir_write(&d, SEG1, seg, sizeof seg);
    log_reset();
    assert_int_equal(recover_only(&d, 8192, &g, NULL), SHOAL_ECORRUPT);
    assert_logged(SEG1, "offset 64");
    got_clear(&g);
}

/* ---- wal_gc -------------------------------------------------------------- */

typedef struct seginfo {
    uint64_t seq;
    bool ended;
    uint64_t max_lsn[4];
} seginfo;

typedef struct seglist {
    const tdir *d;
    seginfo v[256];
    size_t n;
} seglist;

static shoal_err
scan_cb(void *arg, const char *name)
{
    seglist *l = arg;
    unsigned long long seq;
    if (sscanf(name, "wal-%16llx.log", &seq) != 1)
        return SHOAL_OK;
    size_t len;
    uint8_t *buf = tdir_read(l->d, name, &len);
    seginfo *si = &l->v[l->n++];
    memset(si, 0, sizeof *si);
    si->seq = seq;
    size_t pos = WAL_SEG_HDR, used;
    wal_rec r;
    while (pos < len &&
           wal_rec_decode(buf + pos, len - pos, len, &r, &used) == SHOAL_OK) {
        if (r.type == WAL_REC_SEG_END) {
            si->ended = true;
            break;
        }
        if (r.lsn > si->max_lsn[r.shard])
            si->max_lsn[r.shard] = r.lsn;
        pos += used;
    }
    free(buf);
    return SHOAL_OK;
}

static void
test_wal_gc_deletes_covered_segments(void **state)
{
    tdir d;
    wal *w = NULL;
    got g = {0};
    tdir_init(&d, fs_posix(), NULL, *state, "gc");
    assert_int_equal(reopen(&d, 16u << 10, NULL, NULL, &w), SHOAL_OK);
    append_range(w, 0, 400, 300); /* lsn i + 1 on shard i % 4 */
    static seglist l;
    l.d = &d;
    l.n = 0;
    assert_int_equal(fs_list(d.f, d.path, scan_cb, &l), SHOAL_OK);
    assert_true(l.n > 6);
    const uint64_t keeps[][4] = {
        {0, 0, 0, 0},
        {40, 80, 120, 160},
        {200, 0, 0, 0},
        {300, 300, 300, 300},
        {UINT64_MAX, UINT64_MAX, UINT64_MAX, UINT64_MAX}};
    int deleted_total = 0;
    for (size_t k = 0; k < sizeof keeps / sizeof keeps[0]; k++) {
        int want = 0;
        for (size_t i = 0; i < l.n; i++) {
            seginfo *si = &l.v[i];
            bool cover = si->ended && si->seq != 0;
            for (int s = 0; s < 4; s++)
                cover = cover && si->max_lsn[s] <= keeps[k][s];
            if (cover) {
                want++;
                si->seq = 0; /* gone */
            }
        }
        unsigned n = 99;
        assert_int_equal(wal_gc(w, keeps[k], &n), SHOAL_OK);
        assert_int_equal(n, (unsigned) want);
        deleted_total += want;
        char name[64];
        for (size_t i = 0; i < l.n; i++) {
            snprintf(name, sizeof name, "wal-%016" PRIx64 ".log", l.v[i].seq);
            if (l.v[i].seq != 0)
                assert_true(tdir_exists(&d, name));
        }
    }
    wal_stats st;
    wal_get_stats(w, &st);
    assert_int_equal(st.segments_deleted, (uint64_t) deleted_total);
    /* Everything finished is gone; the current segment stays and works. */
    append_range(w, 400, 410, 300);
    wal_close(w);
    assert_int_equal(recover_only(&d, 16u << 10, &g, NULL), SHOAL_OK);
    assert_true(g.n >= 10);
    uint64_t idx[410];
    for (size_t i = 0; i < g.n; i++)
        idx[i] = 410 - g.n + i;
    assert_got(&g, idx, g.n, 4, 300);
    got_clear(&g);
}

/* ---- G6: the k-th I/O call fails (fs_mem) -------------------------------- */

#define FW_N 90

typedef struct frun {
    uint64_t idx[FW_N]; /* spec indexes appended, in order */
    size_t n;           /* appended */
    size_t acked;       /* the first acked of them are durable */
    shoal_err failed;   /* first sticky error seen */
} frun;

/* After the log failed: appends refused, waits get the error. */
static void
assert_sticky(wal *w, const frun *r, uint64_t last_ticket)
{
    wal_op op = {WAL_OP_PUT, 0, (const uint8_t *) "k", 1, NULL, 0};
    uint64_t t;
    assert_int_equal(wal_append(w, 0, 1, 1, &op, 1, &t), SHOAL_EREADONLY);
    wal_stats st;
    wal_get_stats(w, &st);
    assert_int_equal(st.failed, r->failed);
    if (last_ticket > st.durable_ticket)
        assert_int_equal(wal_wait(w, last_ticket, true), r->failed);
    ncount c = {0};
    if (last_ticket > st.durable_ticket) {
        assert_int_equal(wal_notify(w, last_ticket, true, note_cb, &c),
                         SHOAL_OK);
        assert_int_equal(atomic_load(&c.calls), 1);
        assert_int_equal(atomic_load(&c.rc), r->failed);
    }
}

/* The workload: appends, waiting durable on every 4th. */
static void
fault_workload(wal *w, const fs_mem_fault *f, frun *r)
{
    spec *s = malloc(sizeof *s);
    uint64_t t = 0, last = 0;
    assert_non_null(s);
    for (uint64_t i = 0; i < FW_N && r->failed == SHOAL_OK; i++) {
        spec_fill(s, i, 4, 300);
        shoal_err rc = spec_append(w, s, &t);
        if (rc == SHOAL_ENOSPC) { /* no room for the next segment: clean */
            assert_int_equal(f->code, SHOAL_ENOSPC);
            continue;
        }
        if (rc == SHOAL_EREADONLY) {
            wal_stats st;
            wal_get_stats(w, &st);
            r->failed = st.failed;
            break;
        }
        assert_int_equal(rc, SHOAL_OK);
        r->idx[r->n++] = i;
        last = t;
        if (i % 4 != 3)
            continue;
        rc = wal_wait(w, t, true);
        if (rc == SHOAL_OK) {
            r->acked = r->n;
            continue;
        }
        assert_true(rc == SHOAL_EIO || rc == SHOAL_ENOSPC);
        r->failed = rc;
    }
    free(s);
    if (r->failed != SHOAL_OK)
        assert_sticky(w, r, last);
}

/* The log in m replays a prefix of what was appended, at least the acked. */
static void
assert_image_ok(fs_mem *m, const frun *r, fs_crash_mode mode)
{
    fs_mem *img = NULL;
    tdir d = {.m = NULL};
    got g = {0};
    assert_int_equal(fs_mem_crash_clone(m, mode, 7, &img), SHOAL_OK);
    d.f = fs_mem_fs(img);
    snprintf(d.path, sizeof d.path, "/w");
    shoal_err rc = recover_only(&d, 4096, &g, NULL);
    if (rc != SHOAL_OK)
        fprintf(stderr, "# reopen after the fault: %s\n", shoal_errname(rc));
    assert_int_equal(rc, SHOAL_OK);
    assert_true(g.n >= r->acked && g.n <= r->n);
    assert_got(&g, r->idx, g.n, 4, 300);
    got_clear(&g);
    fs_mem_close(img);
}

/* One run with the k-th call failing. Returns whether the fault fired. */
static bool
fault_run(const fs_mem_fault *f, uint64_t k)
{
    fs_mem *m = NULL;
    tdir d;
    wal *w = NULL;
    frun r = {.failed = SHOAL_OK};
    assert_int_equal(fs_mem_open(&m), SHOAL_OK);
    tdir_init(&d, fs_mem_fs(m), m, "", "w");
    fs_mem_fail(m, FS_OP_ALL, k, f->code, f->forever, f->short_write);
    shoal_err rc = reopen(&d, 4096, NULL, NULL, &w);
    if (rc == SHOAL_OK) {
        fault_workload(w, f, &r);
        wal_close(w);
    } else {
        assert_null(w);
        assert_true(rc == SHOAL_EIO || rc == SHOAL_ENOSPC);
    }
    bool fired = fs_mem_fail_count(m) > 0;
    fs_mem_fail_clear(m);
    assert_image_ok(m, &r, FS_CRASH_DROP_UNSYNCED);
    assert_image_ok(m, &r, FS_CRASH_KEEP_UNSYNCED);
    fs_mem_close(m);
    return fired;
}

static void
test_wal_g6_kth_call_fails(void **state)
{
    (void) state;
    for (size_t f = 0; f < fs_mem_n_faults; f++) {
        uint64_t k = 1;
        while (fault_run(&fs_mem_faults[f], k))
            k++;
        printf("# %s: failed calls 1..%" PRIu64 "\n", fs_mem_faults[f].name,
               k - 1);
        assert_true(k > 40);
    }
}

/* A failed fsync is never retried, and the log stays failed. */
static void
test_wal_fsync_failure_is_sticky(void **state)
{
    (void) state;
    fs_mem *m = NULL;
    tdir d;
    wal *w = NULL;
    assert_int_equal(fs_mem_open(&m), SHOAL_OK);
    tdir_init(&d, fs_mem_fs(m), m, "", "w");
    assert_int_equal(reopen(&d, 1u << 20, NULL, NULL, &w), SHOAL_OK);
    append_range(w, 0, 5, 300);
    fs_mem_fail(m, FS_OP_FSYNC, 1, SHOAL_EIO, false, false);
    spec s;
    uint64_t t;
    spec_fill(&s, 5, 4, 300);
    assert_int_equal(spec_append(w, &s, &t), SHOAL_OK);
    assert_int_equal(wal_wait(w, t, true), SHOAL_EIO);
    uint64_t fsyncs = fs_mem_op_count(m, FS_OP_FSYNC);
    uint64_t t2 = 1;
    assert_int_equal(spec_append(w, &s, &t2), SHOAL_EREADONLY);
    assert_int_equal(t2, 0);
    assert_int_equal(wal_wait(w, t, false), SHOAL_EIO);
    assert_false(wal_is_committed(w, t));
    ncount c = {0};
    assert_int_equal(wal_notify(w, t, false, note_cb, &c), SHOAL_OK);
    assert_int_equal(atomic_load(&c.calls), 1);
    assert_int_equal(atomic_load(&c.rc), SHOAL_EIO);
    wal_close(w);
    assert_int_equal(fs_mem_op_count(m, FS_OP_FSYNC), fsyncs);
    frun r = {.n = 6, .acked = 5};
    for (size_t i = 0; i < 6; i++)
        r.idx[i] = i;
    assert_image_ok(m, &r, FS_CRASH_DROP_UNSYNCED);
    fs_mem_close(m);
}

typedef struct fwthread {
    wal *w;
    uint16_t shard;
    uint64_t ok_max;   /* largest ticket whose wait returned SHOAL_OK */
    uint64_t fail_min; /* smallest ticket whose wait failed (0: none) */
    shoal_err fail_rc;
    shoal_err append_rc; /* the append that ended the loop */
} fwthread;

static void *
fw_main(void *arg)
{
    fwthread *t = arg;
    uint8_t val[32] = {0};
    for (uint64_t lsn = 1;; lsn++) {
        wal_op op = {WAL_OP_PUT, 0, (const uint8_t *) "k", 1, val, sizeof val};
        uint64_t tk;
        shoal_err rc = wal_append(t->w, t->shard, 1, lsn, &op, 1, &tk);
        if (rc != SHOAL_OK) {
            t->append_rc = rc;
            return NULL;
        }
        rc = wal_wait(t->w, tk, true);
        if (rc == SHOAL_OK) {
            t->ok_max = tk;
            continue;
        }
        if (t->fail_min == 0) {
            t->fail_min = tk;
            t->fail_rc = rc;
        }
    }
}

/* Waiters asleep when an fdatasync fails all wake: those covered by an
 * earlier fdatasync with SHOAL_OK, the others with the error -- and an OK
 * is never given for a ticket the log did not make durable. */
static void
test_wal_failure_wakes_every_waiter(void **state)
{
    (void) state;
    for (uint64_t k = 2; k <= 30; k += 7) {
        fs_mem *m = NULL;
        tdir d;
        wal *w = NULL;
        fwthread th[GC_THREADS];
        pthread_t tid[GC_THREADS];
        assert_int_equal(fs_mem_open(&m), SHOAL_OK);
        tdir_init(&d, fs_mem_fs(m), m, "", "fw");
        assert_int_equal(reopen(&d, 1u << 20, NULL, NULL, &w), SHOAL_OK);
        fs_mem_fail(m, FS_OP_FSYNC, k, SHOAL_EIO, false, false);
        for (int i = 0; i < GC_THREADS; i++) {
            th[i] = (fwthread){.w = w, .shard = (uint16_t) (i % 4)};
            assert_int_equal(pthread_create(&tid[i], NULL, fw_main, &th[i]), 0);
        }
        for (int i = 0; i < GC_THREADS; i++)
            pthread_join(tid[i], NULL);
        wal_stats st;
        wal_get_stats(w, &st);
        assert_int_equal(st.failed, SHOAL_EIO);
        for (int i = 0; i < GC_THREADS; i++) {
            assert_int_equal(th[i].append_rc, SHOAL_EREADONLY);
            assert_true(th[i].ok_max <= st.durable_ticket);
            if (th[i].fail_min != 0) {
                assert_int_equal(th[i].fail_rc, SHOAL_EIO);
                assert_true(th[i].fail_min > st.durable_ticket);
            }
        }
        wal_close(w);
        fs_mem_close(m);
    }
}

/* No room for the next segment: appends that do not fit get ENOSPC, nothing
 * is appended, the log is not failed; once space returns it resumes. */
static void
test_wal_enospc_preallocation_is_clean(void **state)
{
    (void) state;
    fs_mem *m = NULL;
    tdir d;
    wal *w = NULL;
    got g = {0};
    assert_int_equal(fs_mem_open(&m), SHOAL_OK);
    tdir_init(&d, fs_mem_fs(m), m, "", "w");
    assert_int_equal(reopen(&d, 8192, NULL, NULL, &w), SHOAL_OK);
    fs_mem_fail(m, FS_OP_FALLOCATE, 1, SHOAL_ENOSPC, true, false);
    spec *s = malloc(sizeof *s);
    assert_non_null(s);
    uint64_t t = 0, i;
    shoal_err rc = SHOAL_OK;
    for (i = 0; i < 200 && rc == SHOAL_OK; i++) {
        spec_fill(s, i, 4, 300);
        if ((rc = spec_append(w, s, &t)) == SHOAL_OK)
            assert_int_equal(wal_wait(w, t, true), SHOAL_OK);
    }
    assert_int_equal(rc, SHOAL_ENOSPC);
    uint64_t ok = i - 1;
    wal_stats st;
    wal_get_stats(w, &st);
    assert_int_equal(st.failed, SHOAL_OK);
    assert_int_equal(st.records, ok);
    assert_int_equal(spec_append(w, s, &t), SHOAL_ENOSPC); /* still */
    fs_mem_fail_clear(m);
    uint64_t until = clock_mono_ns() + 5000000000u;
    while ((rc = spec_append(w, s, &t)) == SHOAL_ENOSPC &&
           clock_mono_ns() < until) {
        struct timespec ts = {0, 10 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    assert_int_equal(rc, SHOAL_OK); /* the writer retried by itself */
    assert_int_equal(wal_wait(w, t, true), SHOAL_OK);
    wal_close(w);
    assert_int_equal(recover_only(&d, 8192, &g, NULL), SHOAL_OK);
    assert_got(&g, NULL, ok + 1, 4, 300);
    got_clear(&g);
    free(s);
    fs_mem_close(m);
}

/* The n-th allocation fails, n = 1, 2, ...: open fails cleanly or appends
 * and notifications get SHOAL_ENOMEM without side effects; nothing leaks
 * (ASan), and what was appended reopens. */
static bool
alloc_fail_run(const tdir *d, long n)
{
    wal *w = NULL;
    got g = {0};
    spec *s = malloc(sizeof *s);
    uint64_t idx[40], t = 0;
    size_t ok = 0;
    ncount c = {0};

    assert_non_null(s);
    tdir_clear(d);
    long before = mem_fail_count();
    mem_fail_set(n, 0);
    shoal_err rc = reopen(d, 8192, NULL, NULL, &w);
    for (uint64_t i = 0; rc == SHOAL_OK && i < 40; i++) {
        spec_fill(s, i, 4, 700); /* up to ~2 KiB: rotations, big records */
        shoal_err e = spec_append(w, s, &t);
        assert_true(e == SHOAL_OK || e == SHOAL_ENOMEM);
        if (e == SHOAL_OK)
            idx[ok++] = i;
        if (e == SHOAL_OK && wal_notify(w, t, true, note_cb, &c) == SHOAL_OK)
            assert_int_equal(wal_wait(w, t, true), SHOAL_OK);
    }
    bool fired = mem_fail_count() > before;
    mem_fail_set(0, 0);
    if (rc == SHOAL_OK)
        wal_close(w);
    else
        assert_int_equal(rc, SHOAL_ENOMEM);
    assert_int_equal(recover_only(d, 8192, &g, NULL), SHOAL_OK);
    assert_got(&g, idx, ok, 4, 700);
    got_clear(&g);
    free(s);
    return fired;
}

static void
test_wal_alloc_failures(void **state)
{
    tdir d;
    long n = 1;
    tdir_init(&d, fs_posix(), NULL, *state, "oom");
    while (alloc_fail_run(&d, n))
        n++;
    printf("# allocation failures: 1..%ld\n", n - 1);
    assert_true(n > 5);
}

/* ---- throughput (SHOAL_WAL_BENCH=<dir>) ---------------------------------- */

typedef struct bthread {
    wal *w;
    uint16_t shard;
    uint64_t until_ns;
    uint64_t n;
} bthread;

static void *
bench_main(void *arg)
{
    bthread *b = arg;
    uint8_t val[100] = {0};
    wal_op op = {WAL_OP_PUT, 0, (const uint8_t *) "bench-key", 9, val, 100};
    while (clock_mono_ns() < b->until_ns) {
        uint64_t t;
        assert_int_equal(wal_append(b->w, b->shard, 1, ++b->n, &op, 1, &t),
                         SHOAL_OK);
        assert_int_equal(wal_wait(b->w, t, false), SHOAL_OK);
    }
    return NULL;
}

static void
bench_always(const tdir *d, int threads)
{
    wal *w = NULL;
    wal_opts o;
    bthread b[16];
    pthread_t tid[16];
    tdir_clear(d);
    opts_for(&o, d, 64u << 20, WAL_FSYNC_ALWAYS);
    o.n_shards = 16;
    assert_int_equal(wal_open(&o, NULL, NULL, &w, NULL), SHOAL_OK);
    uint64_t t0 = clock_mono_ns(), secs = 5;
    for (int i = 0; i < threads; i++) {
        b[i] = (bthread){w, (uint16_t) i, t0 + secs * 1000000000u, 0};
        assert_int_equal(pthread_create(&tid[i], NULL, bench_main, &b[i]), 0);
    }
    for (int i = 0; i < threads; i++)
        pthread_join(tid[i], NULL);
    double el = (double) (clock_mono_ns() - t0) / 1e9;
    wal_stats st;
    wal_get_stats(w, &st);
    printf("# always, %2d threads: %8.0f records/s, %6.0f fsyncs/s, "
           "%5.1f records/fsync, largest batch %" PRIu64 "\n",
           threads, (double) st.records / el, (double) st.fsyncs / el,
           (double) st.records / (double) st.fsyncs, st.max_batch_records);
    wal_close(w);
}

static void
test_wal_bench(void **state)
{
    (void) state;
    const char *dir = getenv("SHOAL_WAL_BENCH");
    if (dir == NULL || dir[0] == '\0')
        skip();
    tdir d;
    tdir_init(&d, fs_posix(), NULL, dir, "bench");
    wal *w = NULL;
    wal_opts o;
    const wal_fsync pols[] = {WAL_FSYNC_NONE, WAL_FSYNC_INTERVAL};
    for (size_t p = 0; p < 2; p++) {
        tdir_clear(&d);
        opts_for(&o, &d, 64u << 20, pols[p]);
        assert_int_equal(wal_open(&o, NULL, NULL, &w, NULL), SHOAL_OK);
        uint8_t val[64] = {0};
        wal_op op = {WAL_OP_PUT, 0,   (const uint8_t *) "bench-key",
                     9,          val, sizeof val};
        const uint64_t n = 3000000;
        uint64_t t = 0, t0 = clock_mono_ns();
        for (uint64_t i = 0; i < n; i++)
            assert_int_equal(
                wal_append(w, (uint16_t) (i & 3), 1, i + 1, &op, 1, &t),
                SHOAL_OK);
        uint64_t t1 = clock_mono_ns();
        assert_int_equal(wal_wait(w, t, true), SHOAL_OK);
        uint64_t t2 = clock_mono_ns();
        wal_stats st;
        wal_get_stats(w, &st);
        printf("# %s, 1 thread: %" PRIu64 " appends of %zu bytes: %.0f "
               "appends/s (%.0f MB/s); durable after %.0f ms more; "
               "%" PRIu64 " batches, %" PRIu64 " fsyncs, %" PRIu64
               " segments\n",
               wal_fsync_name(pols[p]), n, WAL_REC_HDR + wal_ops_size(&op, 1),
               (double) n * 1e9 / (double) (t1 - t0),
               (double) st.bytes * 1e3 / (double) (t1 - t0),
               (double) (t2 - t1) / 1e6, st.batches, st.fsyncs, st.segments);
        wal_close(w);
    }
    bench_always(&d, 1);
    bench_always(&d, 16);
    tdir_clear(&d);
}

/* ---- fuzz seed corpus (SHOAL_WAL_CORPUS=<dir>) ------------------------------
 */

/* Append record i (values up to vmax bytes) to buf at *len. */
static void
corpus_rec(uint8_t *buf, size_t *len, uint64_t i, size_t vmax)
{
    spec *s = malloc(sizeof *s);
    assert_non_null(s);
    spec_fill(s, i, 8, vmax);
    size_t plen = wal_ops_size(s->ops, s->n);
    wal_ops_encode(s->ops, s->n, buf + *len + WAL_REC_HDR);
    wal_rec r = {
        WAL_REC_OPS,    s->shard, s->epoch, s->lsn, buf + *len + WAL_REC_HDR,
        (uint32_t) plen};
    wal_rec_encode(&r, buf + *len);
    *len += WAL_REC_HDR + plen;
    free(s);
}

static void
corpus_seg_end(uint8_t *buf, size_t *len)
{
    wal_rec r = {.type = WAL_REC_SEG_END};
    wal_rec_encode(&r, buf + *len);
    *len += WAL_REC_HDR;
}

static void
corpus_file(const char *dir, const char *name, const uint8_t *buf, size_t len)
{
    char path[600];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(buf, 1, len, f), len);
    assert_int_equal(fclose(f), 0);
}

/* F_SLOTS claims: (frontier - WAL_SEG_HDR, generation) x 2 at b + 1, for a
 * body that starts at b + 25 (image offset WAL_SEG_HDR). */
static void
corpus_claims(uint8_t *b, size_t fa, uint32_t ga, size_t fb, uint32_t gb)
{
    const size_t body = 1 + 24;
    put_u64(b + 1, fa - body);
    put_u32(b + 9, ga);
    put_u64(b + 13, fb - body);
    put_u32(b + 21, gb);
}

/* F_SLOTS seeds: records 50, 51 claimed durable, 52 and 53 not; torn,
 * flipped beyond and inside the frontier, truncated inside it. */
static void
corpus_frontier(const char *dir, uint8_t *b)
{
    size_t n = 1 + 24, ends[4];
    b[0] = 8;
    for (uint64_t i = 0; i < 4; i++) {
        corpus_rec(b, &n, 50 + i, 12);
        ends[i] = n;
    }
    corpus_claims(b, ends[1], 3, ends[0], 2);
    corpus_file(dir, "frontier-torn", b, ends[2] + (ends[3] - ends[2]) / 2);
    b[ends[2] + 30] ^= 0x04;
    corpus_file(dir, "frontier-beyond", b, n);
    b[ends[2] + 30] ^= 0x04;
    b[ends[0] + 30] ^= 0x04;
    corpus_file(dir, "frontier-inside", b, n);
    b[ends[0] + 30] ^= 0x04;
    corpus_file(dir, "frontier-trunc", b, ends[0] + 9);
}

/* Seeds for tests/fuzz/fuzz_wal.c: a flags byte (1: fix crcs, 2: raw
 * header, 4: two segments, split at the next u16, 8: two frontier claims
 * from the next 24 bytes), then the body. */
static void
test_wal_write_corpus(void **state)
{
    (void) state;
    const char *dir = getenv("SHOAL_WAL_CORPUS");
    if (dir == NULL || dir[0] == '\0')
        skip();
    uint8_t b[4096];
    size_t n = 1, cut;
    b[0] = 0; /* records and a SEG_END */
    for (uint64_t i = 0; i < 4; i++)
        corpus_rec(b, &n, i, 12);
    corpus_seg_end(b, &n);
    corpus_file(dir, "seg-clean", b, n);
    b[0] = 1;
    corpus_file(dir, "seg-clean-fixcrc", b, n);
    b[0] = 0; /* a torn tail */
    n = 1;
    for (uint64_t i = 10; i < 13; i++)
        corpus_rec(b, &n, i, 12);
    cut = n;
    corpus_rec(b, &n, 13, 12);
    corpus_file(dir, "seg-torn", b, cut + (n - cut) / 2);
    b[cut / 2] ^= 0x10; /* mid-log corruption */
    corpus_file(dir, "seg-corrupt", b, n);
    b[0] = 4; /* two segments */
    n = 3;
    for (uint64_t i = 20; i < 23; i++)
        corpus_rec(b, &n, i, 8);
    corpus_seg_end(b, &n);
    put_u16(b + 1, (uint16_t) (n - 3));
    for (uint64_t i = 23; i < 25; i++)
        corpus_rec(b, &n, i, 8);
    corpus_file(dir, "two-segs", b, n);
    b[0] = 3; /* the header and slots from the input (crcs fixed) */
    n = 1;
    memset(b + n, 0, WAL_SEG_HDR);
    memcpy(b + n, "SHOALWAL", 8);
    put_u32(b + n + 8, 2);
    put_u32(b + n + 12, WAL_SEG_HDR);
    put_u64(b + n + 16, 1);
    n += WAL_SEG_HDR;
    corpus_rec(b, &n, 30, 16);
    put_u64(b + 1 + WAL_SEG_SLOTS, n - 1); /* slot A claims record 30 */
    put_u32(b + 1 + WAL_SEG_SLOTS + 8, 1);
    corpus_rec(b, &n, 31, 16);
    corpus_file(dir, "raw-header", b, n);
    corpus_frontier(dir, b);
    b[0] = 0; /* an ops payload alone, and an empty batch */
    n = 1;
    corpus_rec(b, &n, 40, 20);
    memmove(b + 1, b + 1 + WAL_REC_HDR, n - 1 - WAL_REC_HDR);
    corpus_file(dir, "ops-payload", b, n - WAL_REC_HDR);
    n = 1;
    wal_ops_encode(NULL, 0, b + n + WAL_REC_HDR);
    wal_rec r = {WAL_REC_OPS, 7, 1, 1, b + n + WAL_REC_HDR, 4};
    wal_rec_encode(&r, b + n);
    n += WAL_REC_HDR + 4;
    corpus_file(dir, "empty-batch", b, n);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_wal_codec_roundtrip),
        cmocka_unit_test(test_wal_fsync_names),
        cmocka_unit_test(test_wal_codec_rejects_short_and_flipped),
        cmocka_unit_test(test_wal_codec_rejects_bad_ops),
        cmocka_unit_test(test_wal_codec_rejects_bad_seg_end),
        cmocka_unit_test_setup_teardown(test_wal_reopen_replays_everything,
                                        quiet_up, quiet_down),
        cmocka_unit_test_setup_teardown(test_wal_bad_options_and_args, quiet_up,
                                        quiet_down),
        cmocka_unit_test_setup_teardown(test_wal_policies_commit_levels,
                                        quiet_up, quiet_down),
        cmocka_unit_test_setup_teardown(test_wal_group_commit_always, quiet_up,
                                        quiet_down),
        cmocka_unit_test_setup_teardown(test_wal_notify_fires_once, quiet_up,
                                        quiet_down),
        cmocka_unit_test_setup_teardown(test_wal_g3_truncate_every_offset,
                                        quiet_up, quiet_down),
        cmocka_unit_test_setup_teardown(test_wal_g4_bit_flips, quiet_up,
                                        quiet_down),
        cmocka_unit_test_setup_teardown(test_wal_g3_g4_fs_mem, quiet_up_mem,
                                        quiet_down_mem),
        cmocka_unit_test_setup_teardown(test_wal_g4_finished_segment,
                                        quiet_up_mem, quiet_down_mem),
        cmocka_unit_test_setup_teardown(test_wal_power_cut_always, quiet_up_mem,
                                        quiet_down_mem),
        cmocka_unit_test_setup_teardown(test_wal_power_cut_interval_none,
                                        quiet_up_mem, quiet_down_mem),
        cmocka_unit_test_setup_teardown(
            test_wal_power_cut_garbled_middle_of_tail, quiet_up_mem,
            quiet_down_mem),
        cmocka_unit_test_setup_teardown(test_wal_torn_tail_value_holds_a_record,
                                        quiet_up_mem, quiet_down_mem),
        cmocka_unit_test_setup_teardown(test_wal_recovery_removes_blank_tail,
                                        quiet_up, quiet_down),
        cmocka_unit_test_setup_teardown(test_wal_recovery_bad_middle_and_header,
                                        quiet_up, quiet_down),
        cmocka_unit_test_setup_teardown(test_wal_recovery_refuses_version_1,
                                        quiet_up, quiet_down),
        cmocka_unit_test_setup_teardown(test_wal_recovery_rejects_bad_shard,
                                        quiet_up, quiet_down),
        cmocka_unit_test_setup_teardown(test_wal_gc_deletes_covered_segments,
                                        quiet_up, quiet_down),
        cmocka_unit_test_setup_teardown(test_wal_g6_kth_call_fails,
                                        quiet_up_mem, quiet_down_mem),
        cmocka_unit_test_setup_teardown(test_wal_fsync_failure_is_sticky,
                                        quiet_up_mem, quiet_down_mem),
        cmocka_unit_test_setup_teardown(test_wal_failure_wakes_every_waiter,
                                        quiet_up_mem, quiet_down_mem),
        cmocka_unit_test_setup_teardown(test_wal_enospc_preallocation_is_clean,
                                        quiet_up_mem, quiet_down_mem),
        cmocka_unit_test_setup_teardown(test_wal_alloc_failures, quiet_up,
                                        quiet_down),
        cmocka_unit_test_setup_teardown(test_wal_bench, quiet_up_mem,
                                        quiet_down_mem),
        cmocka_unit_test(test_wal_write_corpus),
    };
    const char *only = getenv("SHOAL_TEST_FILTER"); /* e.g. "*g6*" */
    if (only != NULL && only[0] != '\0')
        cmocka_set_test_filter(only);
    return cmocka_run_group_tests(tests, NULL, NULL);
}
