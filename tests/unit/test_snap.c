/*
 * test_snap.c -- snapshots (storage/snap.h): round trips through memory and
 * files, prune and fallback, every single-bit flip and every truncation of a
 * small image (TESTING G4), crafted images with valid crcs (unsorted keys,
 * wrong counts, zip bombs with bounded memory), allocation failure loops,
 * and with fs_mem: the k-th I/O call failing during a snapshot write (G6)
 * and power loss at every step of it (G5).
 *
 * SHOAL_TEST_LONG=1 makes the throughput test encode ~200 MB instead of
 * ~20 MB (run it in a Release build for real figures).
 * SHOAL_SNAP_CORPUS=<dir> writes the fuzz seed corpus (tests/fuzz/corpus/snap).
 */
#include "storage/snap.h"

#include "proto/bytes.h"
#include "proto/mem.h"
#include "proto/slog.h"
#include "storage/entry.h"
#include "tests/support/fs_mem.h"
#include "tests/support/testutil.h"

#include <inttypes.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <zlib.h>

#if defined(__SANITIZE_ADDRESS__)
#define HAVE_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define HAVE_ASAN 1
#endif
#endif

#define MAX_KEY   1024u
#define MAX_VALUE (8u << 20)
#define BIG_VAL   (5u << 20) /* largest value of the K_LARGE set */

/* --- heap high-water mark (ASan builds only) ------------------------------ */

#ifdef HAVE_ASAN
int __sanitizer_install_malloc_and_free_hooks(
    void (*malloc_hook)(const volatile void *, size_t),
    void (*free_hook)(const volatile void *));
size_t __sanitizer_get_allocated_size(const volatile void *p);

static bool heap_on;        /* tracking */
static long long heap_cur;  /* bytes allocated since tracking began */
static long long heap_peak; /* high-water mark of heap_cur */

static void
on_malloc(const volatile void *p, size_t n)
{
    (void) p;
    if (!heap_on)
        return;
    heap_cur += (long long) n;
    if (heap_cur > heap_peak)
        heap_peak = heap_cur;
}

static void
on_free(const volatile void *p)
{
    if (heap_on && p != NULL)
        heap_cur -= (long long) __sanitizer_get_allocated_size(p);
}

static void
heap_track(bool on)
{
    static bool installed;
    if (!installed)
        __sanitizer_install_malloc_and_free_hooks(on_malloc, on_free);
    installed = true;
    if (on)
        heap_cur = heap_peak = 0;
    heap_on = on;
}
#endif

/* --- entry sets ----------------------------------------------------------- */

enum { K_TEXT, K_BINARY, K_EMPTYVAL, K_LARGE, K_BENCH };

typedef struct spec {
    int kind;
    uint32_t seed; /* varies values, versions and expiry */
    uint64_t n;    /* entries */
} spec;

static size_t
make_key(const spec *s, uint64_t i, uint8_t *k)
{
    if (s->kind == K_BINARY) {
        /* First half under 0x00, second under 0xff; then big-endian i and
         * a tail with 0x00/0xff bytes: ordered by i whatever the tail. */
        k[0] = i < s->n / 2 ? 0x00 : 0xff;
        for (int b = 0; b < 4; b++)
            k[1 + b] = (uint8_t) (i >> (24 - 8 * b));
        size_t tail = i % 3;
        memset(k + 5, i % 2 ? 0xff : 0x00, tail);
        return 5 + tail;
    }
    if (s->kind == K_BENCH)
        return (size_t) snprintf((char *) k, 64, "user:%012" PRIu64 ":profile",
                                 i);
    return (size_t) snprintf((char *) k, 32, "key:%010" PRIu64, i);
}

static uint64_t
mix(uint64_t z)
{
    return tu_rand(&z);
}

static size_t
make_val(const spec *s, uint64_t i, uint8_t *v)
{
    static const size_t large[] = {0, (1u << 20) + 3, 100, BIG_VAL,
                                   7, (3u << 20) - 1};
    size_t len;
    switch (s->kind) {
    case K_EMPTYVAL:
        return 0;
    case K_LARGE:
        len = large[i % (sizeof(large) / sizeof(large[0]))];
        break;
    case K_BENCH:
        len = 64 + mix(i) % 128;
        break;
    default:
        len = (size_t) ((i * 7 + s->seed) % 200);
        break;
    }
    /* Half text (compressible), half noise. */
    uint64_t r = mix(i ^ ((uint64_t) s->seed << 32));
    for (size_t j = 0; j < len; j++) {
        if (j % 16 == 0)
            r = mix(r);
        v[j] = (j / 8) % 2 ? (uint8_t) (r >> (8 * (j % 8)))
                           : (uint8_t) ("abcdefgh"[j % 8]);
    }
    return len;
}

static size_t
val_cap(const spec *s)
{
    return s->kind == K_LARGE ? BIG_VAL : 256;
}

static void
make_entry(const spec *s, uint64_t i, uint8_t *kb, uint8_t *vb, snap_entry *e)
{
    e->key = kb;
    e->klen = (uint32_t) make_key(s, i, kb);
    e->val = vb;
    e->vlen = (uint32_t) make_val(s, i, vb);
    e->version = i * 2 + s->seed + 1;
    e->expire_at = i % 4 == 0 ? 0 : 1700000000000ull + i * 1000 + s->seed;
}

static snap_meta
meta_of(const spec *s, uint32_t shard, uint64_t lsn)
{
    snap_meta m = {
        .shard = shard, .shard_epoch = 7 + s->seed, .lsn = lsn, .count = s->n};
    return m;
}

/* Checks each decoded entry against the spec, in order. */
typedef struct checker {
    const spec *s;
    uint64_t i;
    uint8_t kb[64];
    uint8_t *vb;
    bool bad;
} checker;

static void
checker_init(checker *c, const spec *s)
{
    memset(c, 0, sizeof(*c));
    c->s = s;
    c->vb = malloc(val_cap(s));
    assert_non_null(c->vb);
}

static shoal_err
check_cb(void *arg, const snap_entry *got)
{
    checker *c = arg;
    snap_entry want;
    if (c->i >= c->s->n) {
        c->bad = true;
        return SHOAL_EINVAL;
    }
    make_entry(c->s, c->i, c->kb, c->vb, &want);
    c->i++;
    if (got->klen != want.klen || got->vlen != want.vlen ||
        got->version != want.version || got->expire_at != want.expire_at ||
        memcmp(got->key, want.key, want.klen) != 0 ||
        (want.vlen > 0 && memcmp(got->val, want.val, want.vlen) != 0)) {
        c->bad = true;
        return SHOAL_EINVAL;
    }
    return SHOAL_OK;
}

/* Assert that c saw exactly its spec, and free it. */
static void
checker_done(checker *c)
{
    assert_false(c->bad);
    assert_int_equal(c->i, c->s->n);
    free(c->vb);
}

static shoal_err
count_cb(void *arg, const snap_entry *e)
{
    (void) e;
    (*(uint64_t *) arg)++;
    return SHOAL_OK;
}

/* --- images in memory ----------------------------------------------------- */

typedef struct membuf {
    uint8_t *p;
    size_t len;
    size_t cap;
} membuf;

static shoal_err
membuf_sink(void *arg, const uint8_t *buf, size_t len)
{
    membuf *b = arg;
    if (b->len + len > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->len + len)
            cap *= 2;
        uint8_t *p = realloc(b->p, cap);
        if (p == NULL)
            return SHOAL_ENOMEM;
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, buf, len);
    b->len += len;
    return SHOAL_OK;
}

/* Encode the spec into a whole image (header, body, trailer). */
static shoal_err
encode_image(const spec *s, const snap_meta *m, uint8_t **img, size_t *len)
{
    membuf b = {0};
    uint8_t hdr[SNAP_HDR] = {0};
    uint8_t *kb = malloc(64), *vb = malloc(val_cap(s));
    snap_enc *e = NULL;
    snap_entry ent;
    shoal_err rc = membuf_sink(&b, hdr, SNAP_HDR);

    if (rc == SHOAL_OK)
        rc = snap_enc_open(m, membuf_sink, &b, &e);
    for (uint64_t i = 0; rc == SHOAL_OK && i < s->n; i++) {
        make_entry(s, i, kb, vb, &ent);
        rc = snap_enc_add(e, &ent);
    }
    if (rc == SHOAL_OK)
        rc = snap_enc_finish(e, hdr);
    snap_enc_free(e);
    free(kb);
    free(vb);
    if (rc != SHOAL_OK) {
        free(b.p);
        return rc;
    }
    memcpy(b.p, hdr, SNAP_HDR);
    *img = b.p;
    *len = b.len;
    return SHOAL_OK;
}

static void
roundtrip_mem(const spec *s)
{
    snap_meta m = meta_of(s, 3, 1000 + s->n), got;
    uint8_t *img = NULL;
    size_t len = 0;
    checker c;

    assert_int_equal(encode_image(s, &m, &img, &len), SHOAL_OK);
    checker_init(&c, s);
    memset(&got, 0xa5, sizeof(got));
    assert_int_equal(
        snap_decode(img, len, MAX_KEY, MAX_VALUE, &got, check_cb, &c),
        SHOAL_OK);
    checker_done(&c);
    assert_memory_equal(&got, &m, sizeof(m));
    free(img);
}

/* --- files ---------------------------------------------------------------- */

static shoal_err
write_snap(fs *f, const char *dir, const spec *s, uint32_t shard, uint64_t lsn)
{
    snap_meta m = meta_of(s, shard, lsn);
    uint8_t *kb = malloc(64), *vb = malloc(val_cap(s));
    snap_writer *w = NULL;
    snap_entry ent;
    shoal_err rc = snap_writer_open(f, dir, &m, &w);

    for (uint64_t i = 0; rc == SHOAL_OK && i < s->n; i++) {
        make_entry(s, i, kb, vb, &ent);
        rc = snap_writer_add(w, &ent);
    }
    if (w != NULL) {
        shoal_err crc = snap_writer_commit(w);
        if (rc == SHOAL_OK)
            rc = crc;
    }
    free(kb);
    free(vb);
    return rc;
}

/* Load the newest snapshot of shard and check it is s at lsn. */
static void
expect_load(fs *f, const char *dir, uint32_t shard, const spec *s, uint64_t lsn)
{
    snap_meta got;
    checker c;
    checker_init(&c, s);
    assert_int_equal(
        snap_load_latest(f, dir, shard, MAX_KEY, MAX_VALUE, &got, check_cb, &c),
        SHOAL_OK);
    checker_done(&c);
    assert_int_equal(got.lsn, lsn);
    assert_int_equal(got.shard, shard);
    assert_int_equal(got.count, s->n);
    assert_int_equal(got.shard_epoch, 7 + s->seed);
}

static void
snap_file(char *out, size_t cap, const char *dir, uint32_t shard, uint64_t lsn,
          const char *suffix)
{
    snprintf(out, cap, "%s/snap-%04" PRIx32 "-%016" PRIx64 ".snap%s", dir,
             shard, lsn, suffix);
}

static bool
exists(const char *path)
{
    FILE *fp = fopen(path, "rb");
    if (fp != NULL)
        fclose(fp);
    return fp != NULL;
}

static void
put_file(const char *path, const uint8_t *buf, size_t len)
{
    FILE *fp = fopen(path, "wb");
    assert_non_null(fp);
    assert_int_equal(fwrite(buf, 1, len, fp), len);
    assert_int_equal(fclose(fp), 0);
}

static uint8_t *
get_file(const char *path, size_t *len)
{
    uint8_t *buf = NULL;
    assert_int_equal(fs_read_all(fs_posix(), path, SIZE_MAX, &buf, len),
                     SHOAL_OK);
    return buf;
}

/* Captures the last log line, to check what a fallback reports. */
static char last_log[512];
static int n_logs;

static void
log_sink(void *arg, slog_level level, const char *module, const char *msg)
{
    (void) arg;
    (void) level;
    snprintf(last_log, sizeof(last_log), "%s %s", module, msg);
    n_logs++;
}

/* Route log lines to log_sink (counted, not printed) while on. */
static void
quiet(bool on)
{
    slog_set_sink(on ? log_sink : NULL, NULL);
}

/* --- round trips ---------------------------------------------------------- */

static void
test_snap_roundtrip_counts(void **state)
{
    (void) state;
    static const uint64_t ns[] = {0, 1, 2, 20, 5000};
    for (size_t i = 0; i < sizeof(ns) / sizeof(ns[0]); i++) {
        spec s = {K_TEXT, (uint32_t) i, ns[i]};
        roundtrip_mem(&s);
    }
}

static void
test_snap_roundtrip_100k_file(void **state)
{
    const char *dir = *state;
    spec s = {K_TEXT, 5, 100000};
    assert_int_equal(write_snap(fs_posix(), dir, &s, 1, 0x1234), SHOAL_OK);
    expect_load(fs_posix(), dir, 1, &s, 0x1234);
    roundtrip_mem(&s);
}

static void
test_snap_roundtrip_empty_file(void **state)
{
    const char *dir = *state;
    spec s = {K_TEXT, 1, 0};
    assert_int_equal(write_snap(fs_posix(), dir, &s, 0xffff, 1), SHOAL_OK);
    expect_load(fs_posix(), dir, 0xffff, &s, 1);
    assert_int_equal(tu_count_files(dir, "snap-"), 1);
}

static void
test_snap_roundtrip_binary_keys(void **state)
{
    (void) state;
    spec s = {K_BINARY, 9, 3000};
    roundtrip_mem(&s);

    /* Prefixes: "a" < "a\0" < "a\0\0" < "a\1" < "b" < "\xff". */
    static const struct {
        const char *k;
        uint32_t len;
    } keys[] = {{"\x00", 1}, {"a", 1}, {"a\0", 2}, {"a\0\0", 3},
                {"a\1", 2},  {"b", 1}, {"\xff", 1}};
    snap_meta m = {.shard = 1, .lsn = 2, .count = 7};
    membuf b = {0};
    uint8_t hdr[SNAP_HDR] = {0};
    snap_enc *e = NULL;
    membuf_sink(&b, hdr, SNAP_HDR);
    assert_int_equal(snap_enc_open(&m, membuf_sink, &b, &e), SHOAL_OK);
    for (size_t i = 0; i < 7; i++) {
        snap_entry ent = {.key = (const uint8_t *) keys[i].k,
                          .klen = keys[i].len,
                          .version = i};
        assert_int_equal(snap_enc_add(e, &ent), SHOAL_OK);
    }
    assert_int_equal(snap_enc_finish(e, hdr), SHOAL_OK);
    memcpy(b.p, hdr, SNAP_HDR);
    snap_enc_free(e);
    uint64_t n = 0;
    assert_int_equal(
        snap_decode(b.p, b.len, MAX_KEY, MAX_VALUE, NULL, count_cb, &n),
        SHOAL_OK);
    assert_int_equal(n, 7);
    free(b.p);
}

static void
test_snap_roundtrip_empty_values(void **state)
{
    (void) state;
    spec s = {K_EMPTYVAL, 2, 777};
    roundtrip_mem(&s);
}

static void
test_snap_roundtrip_large_values(void **state)
{
    const char *dir = *state;
    spec s = {K_LARGE, 4, 12};
    roundtrip_mem(&s);
    assert_int_equal(write_snap(fs_posix(), dir, &s, 2, 99), SHOAL_OK);
    expect_load(fs_posix(), dir, 2, &s, 99);

    /* A value one byte over max_value is refused. */
    uint64_t n = 0;
    assert_int_equal(snap_load_latest(fs_posix(), dir, 2, MAX_KEY, BIG_VAL - 1,
                                      NULL, count_cb, &n),
                     SHOAL_ECORRUPT);
}

/* --- encoder misuse --------------------------------------------------------
 */

static void
test_snap_enc_rejects_misuse(void **state)
{
    (void) state;
    snap_meta m = {.shard = 1, .lsn = 1, .count = 2};
    uint8_t hdr[SNAP_HDR];
    membuf b = {0};
    snap_enc *e = NULL;
    snap_entry b_ent = {.key = (const uint8_t *) "b", .klen = 1};
    snap_entry a_ent = {.key = (const uint8_t *) "a", .klen = 1};
    snap_entry empty = {.key = (const uint8_t *) "", .klen = 0};

    /* Descending, equal, and empty keys: EINVAL, and sticky. */
    assert_int_equal(snap_enc_open(&m, membuf_sink, &b, &e), SHOAL_OK);
    assert_int_equal(snap_enc_add(e, &b_ent), SHOAL_OK);
    assert_int_equal(snap_enc_add(e, &a_ent), SHOAL_EINVAL);
    assert_int_equal(
        snap_enc_add(e, &(snap_entry){.key = (const uint8_t *) "c", .klen = 1}),
        SHOAL_EINVAL);
    assert_int_equal(snap_enc_finish(e, hdr), SHOAL_EINVAL);
    snap_enc_free(e);

    assert_int_equal(snap_enc_open(&m, membuf_sink, &b, &e), SHOAL_OK);
    assert_int_equal(snap_enc_add(e, &a_ent), SHOAL_OK);
    assert_int_equal(snap_enc_add(e, &a_ent), SHOAL_EINVAL);
    snap_enc_free(e);

    assert_int_equal(snap_enc_open(&m, membuf_sink, &b, &e), SHOAL_OK);
    assert_int_equal(snap_enc_add(e, &empty), SHOAL_EINVAL);
    snap_enc_free(e);

    /* Fewer than count at finish, more than count at add. */
    assert_int_equal(snap_enc_open(&m, membuf_sink, &b, &e), SHOAL_OK);
    assert_int_equal(snap_enc_add(e, &a_ent), SHOAL_OK);
    assert_int_equal(snap_enc_finish(e, hdr), SHOAL_EINVAL);
    snap_enc_free(e);

    m.count = 1;
    assert_int_equal(snap_enc_open(&m, membuf_sink, &b, &e), SHOAL_OK);
    assert_int_equal(snap_enc_add(e, &a_ent), SHOAL_OK);
    assert_int_equal(snap_enc_add(e, &b_ent), SHOAL_EINVAL);
    assert_int_equal(snap_enc_finish(e, hdr), SHOAL_EINVAL);
    snap_enc_free(e);
    free(b.p);
}

/* A sink error stops the encoder and stays. */
static shoal_err
full_sink(void *arg, const uint8_t *buf, size_t len)
{
    (void) arg;
    (void) buf;
    (void) len;
    return SHOAL_ENOSPC;
}

static void
test_snap_enc_sink_error_is_sticky(void **state)
{
    (void) state;
    spec s = {K_TEXT, 1, 50000};
    snap_meta m = meta_of(&s, 1, 1);
    uint8_t kb[64], vb[256], hdr[SNAP_HDR];
    snap_enc *e = NULL;
    snap_entry ent;
    shoal_err rc = SHOAL_OK;
    uint64_t i;

    assert_int_equal(snap_enc_open(&m, full_sink, NULL, &e), SHOAL_OK);
    for (i = 0; i < s.n && rc == SHOAL_OK; i++) {
        make_entry(&s, i, kb, vb, &ent);
        rc = snap_enc_add(e, &ent);
    }
    assert_int_equal(rc, SHOAL_ENOSPC);
    assert_true(i < s.n);
    make_entry(&s, i, kb, vb, &ent);
    assert_int_equal(snap_enc_add(e, &ent), SHOAL_ENOSPC);
    assert_int_equal(snap_enc_finish(e, hdr), SHOAL_ENOSPC);
    snap_enc_free(e);
}

static void
test_snap_writer_failure_keeps_old(void **state)
{
    const char *dir = *state;
    spec old = {K_TEXT, 1, 10};
    spec s = {K_TEXT, 2, 10};
    snap_meta m = meta_of(&s, 1, 20);
    uint8_t kb[64], vb[256];
    snap_writer *w = NULL;
    snap_entry ent;
    char tmp[4096];

    assert_int_equal(write_snap(fs_posix(), dir, &old, 1, 10), SHOAL_OK);
    assert_int_equal(snap_writer_open(fs_posix(), dir, &m, &w), SHOAL_OK);
    snap_file(tmp, sizeof(tmp), dir, 1, 20, ".tmp");
    assert_true(exists(tmp));
    make_entry(&s, 5, kb, vb, &ent);
    assert_int_equal(snap_writer_add(w, &ent), SHOAL_OK);
    make_entry(&s, 4, kb, vb, &ent);
    assert_int_equal(snap_writer_add(w, &ent), SHOAL_EINVAL);
    make_entry(&s, 6, kb, vb, &ent);
    assert_int_equal(snap_writer_add(w, &ent), SHOAL_EINVAL);
    assert_int_equal(snap_writer_commit(w), SHOAL_EINVAL);
    assert_false(exists(tmp));
    assert_int_equal(tu_count_files(dir, "snap-"), 1);
    expect_load(fs_posix(), dir, 1, &old, 10);

    /* Abort removes the temp file too. */
    assert_int_equal(snap_writer_open(fs_posix(), dir, &m, &w), SHOAL_OK);
    assert_true(exists(tmp));
    snap_writer_abort(w);
    snap_writer_abort(NULL);
    assert_false(exists(tmp));

    /* Shards that do not fit the name are refused. */
    m.shard = 0x10000;
    assert_int_equal(snap_writer_open(fs_posix(), dir, &m, &w), SHOAL_EINVAL);
    assert_null(w);
}

/* --- prune, fallback, temp files ------------------------------------------ */

static void
test_snap_prune_keeps_k_newest(void **state)
{
    const char *dir = *state;
    spec s = {K_TEXT, 1, 3};
    char path[4096];

    /* lsn order differs from creation order, and from name length. */
    static const uint64_t lsns[] = {0x30, 0x10, 0x1000000000, 0x20, 0xff, 1};
    for (size_t i = 0; i < 6; i++)
        assert_int_equal(write_snap(fs_posix(), dir, &s, 4, lsns[i]), SHOAL_OK);
    assert_int_equal(write_snap(fs_posix(), dir, &s, 5, 1), SHOAL_OK);
    snprintf(path, sizeof(path), "%s/SNAP-0004-0000000000000001.snap", dir);
    put_file(path, (const uint8_t *) "x", 1);
    snprintf(path, sizeof(path), "%s/snap-0004-1.snap", dir);
    put_file(path, (const uint8_t *) "x", 1);

    assert_int_equal(snap_prune(fs_posix(), dir, 4, 3), SHOAL_OK);
    static const uint64_t kept[] = {0x1000000000, 0xff, 0x30};
    static const uint64_t gone[] = {0x20, 0x10, 1};
    for (size_t i = 0; i < 3; i++) {
        snap_file(path, sizeof(path), dir, 4, kept[i], "");
        assert_true(exists(path));
        snap_file(path, sizeof(path), dir, 4, gone[i], "");
        assert_false(exists(path));
    }
    assert_int_equal(tu_count_files(dir, "snap-0004-"), 4); /* + foreign */
    assert_int_equal(tu_count_files(dir, "snap-0005-"), 1);
    assert_int_equal(tu_count_files(dir, "SNAP-"), 1);
    expect_load(fs_posix(), dir, 4, &s, 0x1000000000);

    /* Pruning again changes nothing; keep 1 leaves the newest. */
    assert_int_equal(snap_prune(fs_posix(), dir, 4, 3), SHOAL_OK);
    assert_int_equal(tu_count_files(dir, "snap-0004-"), 4);
    assert_int_equal(snap_prune(fs_posix(), dir, 4, 1), SHOAL_OK);
    assert_int_equal(tu_count_files(dir, "snap-0004-"), 2);
    expect_load(fs_posix(), dir, 4, &s, 0x1000000000);
}

static void
test_snap_load_falls_back_to_older(void **state)
{
    const char *dir = *state;
    spec s10 = {K_TEXT, 10, 50}, s20 = {K_TEXT, 20, 60};
    char p20[4096], p30[4096];
    size_t len;

    assert_int_equal(write_snap(fs_posix(), dir, &s10, 1, 10), SHOAL_OK);
    assert_int_equal(write_snap(fs_posix(), dir, &s20, 1, 20), SHOAL_OK);
    expect_load(fs_posix(), dir, 1, &s20, 20);

    /* A copy of lsn 20 under the name of lsn 30 fails the name check. */
    snap_file(p20, sizeof(p20), dir, 1, 20, "");
    snap_file(p30, sizeof(p30), dir, 1, 30, "");
    uint8_t *img = get_file(p20, &len);
    put_file(p30, img, len);
    slog_set_sink(log_sink, NULL);
    n_logs = 0;
    expect_load(fs_posix(), dir, 1, &s20, 20);
    assert_int_equal(n_logs, 1);
    assert_non_null(strstr(last_log, "snap-0001-000000000000001e.snap"));
    assert_non_null(strstr(last_log, "name"));

    /* Damage the body of lsn 20: back to lsn 10. */
    img[len / 2] ^= 0x10;
    put_file(p20, img, len);
    n_logs = 0;
    expect_load(fs_posix(), dir, 1, &s10, 10);
    assert_int_equal(n_logs, 2);
    assert_non_null(strstr(last_log, "snap-0001-0000000000000014.snap"));
    assert_non_null(strstr(last_log, "crc"));
    slog_set_sink(NULL, NULL);
    free(img);

    /* Snapshots exist but none is valid: ECORRUPT (starting empty could
     * drop keys whose WAL is gone); a shard with none at all: ENOTFOUND. */
    snap_file(p20, sizeof(p20), dir, 1, 10, "");
    put_file(p20, (const uint8_t *) "junk", 4);
    uint64_t n = 0;
    quiet(true);
    assert_int_equal(snap_load_latest(fs_posix(), dir, 1, MAX_KEY, MAX_VALUE,
                                      NULL, count_cb, &n),
                     SHOAL_ECORRUPT);
    assert_int_equal(snap_load_latest(fs_posix(), dir, 2, MAX_KEY, MAX_VALUE,
                                      NULL, count_cb, &n),
                     SHOAL_ENOTFOUND);
    quiet(false);
    assert_int_equal(n, 0);
}

static void
test_snap_tmp_ignored_and_pruned(void **state)
{
    const char *dir = *state;
    spec s = {K_TEXT, 1, 10}, s2 = {K_TEXT, 2, 10};
    char p[4096], tmp[4096], other[4096];
    size_t len;

    assert_int_equal(write_snap(fs_posix(), dir, &s, 1, 10), SHOAL_OK);
    assert_int_equal(write_snap(fs_posix(), dir, &s2, 1, 20), SHOAL_OK);
    /* A crash after the temp file was complete but before the rename: even
     * a valid image under a .tmp name is not a snapshot. */
    snap_file(p, sizeof(p), dir, 1, 20, "");
    snap_file(tmp, sizeof(tmp), dir, 1, 30, ".tmp");
    uint8_t *img = get_file(p, &len);
    put_file(tmp, img, len);
    snap_file(other, sizeof(other), dir, 2, 30, ".tmp");
    put_file(other, img, len);
    free(img);
    assert_int_equal(unlink(p), 0);

    expect_load(fs_posix(), dir, 1, &s, 10);
    assert_int_equal(snap_prune(fs_posix(), dir, 1, 2), SHOAL_OK);
    assert_false(exists(tmp));
    assert_true(exists(other));
    assert_int_equal(tu_count_files(dir, "snap-0001-"), 1);
    expect_load(fs_posix(), dir, 1, &s, 10);
}

/* --- damage (TESTING G4) -------------------------------------------------- */

static void
test_snap_every_bit_flip_detected(void **state)
{
    const char *dir = *state;
    spec old = {K_TEXT, 1, 20}, s = {K_TEXT, 2, 20};
    snap_meta m = meta_of(&s, 1, 200);
    uint8_t *img = NULL;
    size_t len = 0;
    char path[4096];

    assert_int_equal(write_snap(fs_posix(), dir, &old, 1, 100), SHOAL_OK);
    assert_int_equal(encode_image(&s, &m, &img, &len), SHOAL_OK);
    snap_file(path, sizeof(path), dir, 1, 200, "");
    slog_set_sink(log_sink, NULL);
    size_t flips = 0;
    for (size_t bit = 0; bit < len * 8; bit++) {
        uint64_t n = 0;
        img[bit / 8] ^= (uint8_t) (1u << (bit % 8));
        assert_int_equal(
            snap_decode(img, len, MAX_KEY, MAX_VALUE, NULL, count_cb, &n),
            SHOAL_ECORRUPT);
        assert_int_equal(n, 0); /* crcs fail before any entry */
        put_file(path, img, len);
        n_logs = 0;
        expect_load(fs_posix(), dir, 1, &old, 100);
        assert_int_equal(n_logs, 1);
        img[bit / 8] ^= (uint8_t) (1u << (bit % 8));
        flips++;
    }
    slog_set_sink(NULL, NULL);
    printf("# %zu of %zu single-bit flips detected (image %zu bytes)\n", flips,
           len * 8, len);
    put_file(path, img, len);
    expect_load(fs_posix(), dir, 1, &s, 200);
    free(img);
}

static void
test_snap_every_truncation_detected(void **state)
{
    (void) state;
    spec s = {K_TEXT, 3, 20};
    snap_meta m = meta_of(&s, 1, 5);
    uint8_t *img = NULL;
    size_t len = 0;
    uint64_t n = 0;

    assert_int_equal(encode_image(&s, &m, &img, &len), SHOAL_OK);
    for (size_t cut = 0; cut < len; cut++) {
        /* A fresh copy, so ASan catches a read past the cut. */
        uint8_t *p = malloc(cut ? cut : 1);
        memcpy(p, img, cut);
        assert_int_equal(
            snap_decode(p, cut, MAX_KEY, MAX_VALUE, NULL, count_cb, &n),
            SHOAL_ECORRUPT);
        free(p);
    }
    /* And one extra byte at the end. */
    uint8_t *p = malloc(len + 1);
    memcpy(p, img, len);
    p[len] = 0;
    assert_int_equal(
        snap_decode(p, len + 1, MAX_KEY, MAX_VALUE, NULL, count_cb, &n),
        SHOAL_ECORRUPT);
    assert_int_equal(n, 0);
    assert_int_equal(snap_decode(NULL, 0, MAX_KEY, MAX_VALUE, NULL, NULL, NULL),
                     SHOAL_ECORRUPT);
    free(p);
    free(img);
}

/* Crafted images: entries written by hand, compressed by zlib, with valid
 * crcs, so only the body checks stand between them and cb. */
static size_t
raw_entry(uint8_t *p, uint32_t klen, uint32_t vlen, const void *key,
          size_t key_bytes, size_t val_bytes)
{
    put_u64(p, 1);
    put_u64(p + 8, 0);
    put_u32(p + 16, klen);
    put_u32(p + 20, vlen);
    memcpy(p + 24, key, key_bytes);
    memset(p + 24 + key_bytes, 'v', val_bytes);
    return 24 + key_bytes + val_bytes;
}

/* Header by the layout in snap.h, written independently of snap.c. */
static uint8_t *
craft(uint64_t count, const uint8_t *raw, size_t raw_len, const uint8_t *junk,
      size_t junk_len, size_t *len_out)
{
    uLongf zlen = compressBound((uLong) raw_len);
    uint8_t *img = malloc(SNAP_HDR + zlen + junk_len + 4);
    assert_non_null(img);
    assert_int_equal(compress2(img + SNAP_HDR, &zlen, raw, (uLong) raw_len, 9),
                     Z_OK);
    if (junk_len > 0)
        memcpy(img + SNAP_HDR + zlen, junk, junk_len);
    size_t body = zlen + junk_len;
    memcpy(img, "SHOALSNP", 8);
    put_u32(img + 8, 1);
    put_u32(img + 12, 1);
    put_u32(img + 16, 0);
    put_u64(img + 20, 9);
    put_u64(img + 28, count);
    put_u64(img + 36, body);
    put_u32(img + 44, (uint32_t) crc32(0, img, 44));
    put_u32(img + SNAP_HDR + body,
            (uint32_t) crc32(0, img + SNAP_HDR, (uInt) body));
    *len_out = SNAP_HDR + body + 4;
    return img;
}

static shoal_err
decode_crafted(uint64_t count, const uint8_t *raw, size_t raw_len,
               const uint8_t *junk, size_t junk_len, uint64_t *n)
{
    size_t len;
    uint8_t *img = craft(count, raw, raw_len, junk, junk_len, &len);
    *n = 0;
    shoal_err rc = snap_decode(img, len, 16, 64, NULL, count_cb, n);
    free(img);
    return rc;
}

static void
test_snap_crafted_images_rejected(void **state)
{
    (void) state;
    uint8_t raw[1024], zero[4] = {0};
    size_t r = 0;
    uint64_t n;

    r += raw_entry(raw + r, 1, 2, "a", 1, 2);
    r += raw_entry(raw + r, 2, 0, "ab", 2, 0);
    r += raw_entry(raw + r, 1, 64, "b", 1, 64);
    /* The crafting is right: this one decodes. */
    assert_int_equal(decode_crafted(3, raw, r, NULL, 0, &n), SHOAL_OK);
    assert_int_equal(n, 3);
    /* Counts that do not match. */
    assert_int_equal(decode_crafted(2, raw, r, NULL, 0, &n), SHOAL_ECORRUPT);
    assert_int_equal(decode_crafted(4, raw, r, NULL, 0, &n), SHOAL_ECORRUPT);
    assert_int_equal(decode_crafted(UINT64_MAX, raw, r, NULL, 0, &n),
                     SHOAL_ECORRUPT);
    /* Cut inside the last entry, or extra bytes after it. */
    assert_int_equal(decode_crafted(3, raw, r - 1, NULL, 0, &n),
                     SHOAL_ECORRUPT);
    raw[r] = 0;
    assert_int_equal(decode_crafted(3, raw, r + 1, NULL, 0, &n),
                     SHOAL_ECORRUPT);
    /* Bytes after the zlib stream, inside the body. */
    assert_int_equal(decode_crafted(3, raw, r, zero, 1, &n), SHOAL_ECORRUPT);
    size_t z2len;
    uint8_t *second = craft(0, raw, r, NULL, 0, &z2len);
    assert_int_equal(
        decode_crafted(3, raw, r, second + SNAP_HDR, z2len - SNAP_HDR - 4, &n),
        SHOAL_ECORRUPT);
    free(second);

    /* Unsorted and duplicate keys. */
    r = raw_entry(raw, 1, 0, "b", 1, 0);
    r += raw_entry(raw + r, 1, 0, "a", 1, 0);
    assert_int_equal(decode_crafted(2, raw, r, NULL, 0, &n), SHOAL_ECORRUPT);
    assert_int_equal(n, 1);
    r = raw_entry(raw, 2, 0, "ab", 2, 0);
    r += raw_entry(raw + r, 1, 0, "a", 1, 0);
    assert_int_equal(decode_crafted(2, raw, r, NULL, 0, &n), SHOAL_ECORRUPT);
    r = raw_entry(raw, 1, 0, "a", 1, 0);
    r += raw_entry(raw + r, 1, 0, "a", 1, 0);
    assert_int_equal(decode_crafted(2, raw, r, NULL, 0, &n), SHOAL_ECORRUPT);

    /* Lengths: empty key, key over max_key (16), value over max_value
     * (64), and u32 lengths near overflow. */
    r = raw_entry(raw, 0, 0, "", 0, 0);
    assert_int_equal(decode_crafted(1, raw, r, NULL, 0, &n), SHOAL_ECORRUPT);
    r = raw_entry(raw, 17, 0, "0123456789abcdefg", 17, 0);
    assert_int_equal(decode_crafted(1, raw, r, NULL, 0, &n), SHOAL_ECORRUPT);
    r = raw_entry(raw, 16, 0, "0123456789abcdef", 16, 0);
    assert_int_equal(decode_crafted(1, raw, r, NULL, 0, &n), SHOAL_OK);
    r = raw_entry(raw, 1, 65, "a", 1, 65);
    assert_int_equal(decode_crafted(1, raw, r, NULL, 0, &n), SHOAL_ECORRUPT);
    r = raw_entry(raw, UINT32_MAX, UINT32_MAX, "a", 1, 0);
    assert_int_equal(decode_crafted(1, raw, r, NULL, 0, &n), SHOAL_ECORRUPT);
    assert_int_equal(n, 0);
}

/* A newest file that passes its crcs but fails to decode: before any entry
 * reached cb it is skipped like a damaged one; after, ECORRUPT (the caller
 * has to discard what cb built). */
static void
test_snap_load_undecodable_newest(void **state)
{
    const char *dir = *state;
    spec s = {K_TEXT, 1, 10};
    uint8_t raw[256];
    char path[4096];
    size_t r, len;
    uint64_t n = 0;

    assert_int_equal(write_snap(fs_posix(), dir, &s, 1, 5), SHOAL_OK);
    snap_file(path, sizeof(path), dir, 1, 9, ""); /* craft() writes lsn 9 */
    r = raw_entry(raw, 0, 0, "", 0, 0);
    uint8_t *img = craft(1, raw, r, NULL, 0, &len);
    put_file(path, img, len);
    free(img);
    quiet(true);
    n_logs = 0;
    expect_load(fs_posix(), dir, 1, &s, 5);
    assert_int_equal(n_logs, 1);
    assert_non_null(strstr(last_log, "key length"));

    r = raw_entry(raw, 1, 0, "b", 1, 0);
    r += raw_entry(raw + r, 1, 0, "a", 1, 0);
    img = craft(2, raw, r, NULL, 0, &len);
    put_file(path, img, len);
    free(img);
    assert_int_equal(snap_load_latest(fs_posix(), dir, 1, MAX_KEY, MAX_VALUE,
                                      NULL, count_cb, &n),
                     SHOAL_ECORRUPT);
    quiet(false);
    assert_int_equal(n, 1);
}

/* Zip bombs: a tiny body claiming or inflating to huge sizes. */
static void
test_snap_zip_bomb_bounded(void **state)
{
    (void) state;
    const size_t zeros = 64u << 20;
    const size_t max_value = (size_t) 1 << 30;
    uint8_t *raw = calloc(1, zeros + 64);
    uint64_t n = 0;
    size_t len, r;

    assert_non_null(raw);
    /* 1: an entry claiming a 1 GiB value, backed by 64 MiB of zeros. */
    r = raw_entry(raw, 1, (uint32_t) (max_value - 1), "k", 1, 0);
    uint8_t *img = craft(1, raw, r + zeros, NULL, 0, &len);
    printf("# bomb 1: %zu-byte image inflates to %zu bytes, claims %zu\n", len,
           r + zeros, max_value);
#ifdef HAVE_ASAN
    heap_track(true);
#endif
    assert_int_equal(snap_decode(img, len, 1024, max_value, NULL, count_cb, &n),
                     SHOAL_ECORRUPT);
#ifdef HAVE_ASAN
    heap_track(false);
    printf("# bomb 1: decoder heap peak %lld bytes\n", heap_peak);
    /* The window doubles with real data: with the realloc copy ~3x
     * the 64 MiB inflated, never the 1 GiB claimed. */
    assert_true(heap_peak < (long long) (zeros * 4));
#endif
    free(img);

    /* 2: 64 MiB of zeros claiming 2^63 entries: the first entry header
     * (klen 0) stops it at once, with a window of 256 KiB at most. */
    memset(raw, 0, 64);
    img = craft(UINT64_C(1) << 63, raw, zeros, NULL, 0, &len);
#ifdef HAVE_ASAN
    heap_track(true);
#endif
    assert_int_equal(snap_decode(img, len, 1024, max_value, NULL, count_cb, &n),
                     SHOAL_ECORRUPT);
#ifdef HAVE_ASAN
    heap_track(false);
    printf("# bomb 2: decoder heap peak %lld bytes\n", heap_peak);
    assert_true(heap_peak < (1 << 20));
#endif
    assert_int_equal(n, 0);
    free(img);
    free(raw);
}

/* --- allocation failures ---------------------------------------------------
 */

static void
test_snap_alloc_failures(void **state)
{
    const char *dir = *state;
    spec s = {K_TEXT, 1, 300};
    uint8_t *img = NULL;
    size_t len = 0;
    shoal_err rc;
    long k;

    for (k = 1;; k++) {
        mem_fail_set(k, 0);
        long before = mem_fail_count();
        rc = write_snap(fs_posix(), dir, &s, 1, (uint64_t) k);
        bool failed = mem_fail_count() != before;
        mem_fail_set(0, 0);
        if (!failed) {
            assert_int_equal(rc, SHOAL_OK);
            break;
        }
        assert_int_equal(rc, SHOAL_ENOMEM);
        assert_int_equal(tu_count_files(dir, "snap-"), 0);
    }
    printf("# writer: %ld allocation failures checked\n", k - 1);

    snap_meta m = meta_of(&s, 1, 1);
    assert_int_equal(encode_image(&s, &m, &img, &len), SHOAL_OK);
    for (k = 1;; k++) {
        checker c;
        checker_init(&c, &s);
        mem_fail_set(k, 0);
        long before = mem_fail_count();
        rc = snap_load_latest(fs_posix(), dir, 1, MAX_KEY, MAX_VALUE, NULL,
                              check_cb, &c);
        shoal_err rc2 =
            snap_decode(img, len, MAX_KEY, MAX_VALUE, NULL, NULL, NULL);
        bool failed = mem_fail_count() != before;
        mem_fail_set(0, 0);
        free(c.vb);
        if (!failed) {
            assert_int_equal(rc, SHOAL_OK);
            assert_int_equal(rc2, SHOAL_OK);
            break;
        }
        assert_true(rc == SHOAL_ENOMEM || rc == SHOAL_OK);
        assert_true(rc2 == SHOAL_ENOMEM || rc2 == SHOAL_OK);
    }
    printf("# load: %ld allocation failures checked\n", k - 1);
    free(img);
}

/* --- fs_mem: I/O failures (G6) and power loss (G5) -------------------------
 */

#define MDIR "/data"

static fs_mem *
mem_fs_with_dir(void)
{
    fs_mem *m = NULL;
    assert_int_equal(fs_mem_open(&m), SHOAL_OK);
    fs *f = fs_mem_fs(m);
    assert_int_equal(fs_mkdir(f, MDIR), SHOAL_OK);
    assert_int_equal(fs_dir_fsync(f, "/"), SHOAL_OK);
    return m;
}

static shoal_err
tmp_cb(void *arg, const char *name)
{
    if (strstr(name, ".tmp") != NULL)
        (*(int *) arg)++;
    return SHOAL_OK;
}

static int
count_tmp(fs *f)
{
    int n = 0;
    assert_int_equal(fs_list(f, MDIR, tmp_cb, &n), SHOAL_OK);
    return n;
}

/* Which of the two snapshots loads: 10 (old), 20 (new), or -1. */
static int
which_loads(fs *f, const spec *old, const spec *s)
{
    snap_meta got;
    checker c;
    const spec *want;
    uint64_t n = 0;

    shoal_err rc =
        snap_load_latest(f, MDIR, 1, MAX_KEY, MAX_VALUE, &got, count_cb, &n);
    if (rc != SHOAL_OK || (got.lsn != 10 && got.lsn != 20))
        return -1;
    want = got.lsn == 10 ? old : s;
    checker_init(&c, want);
    rc = snap_load_latest(f, MDIR, 1, MAX_KEY, MAX_VALUE, &got, check_cb, &c);
    bool ok = rc == SHOAL_OK && !c.bad && c.i == want->n;
    free(c.vb);
    return ok ? (int) got.lsn : -1;
}

static void
test_snap_io_failures(void **state)
{
    (void) state;
    spec old = {K_TEXT, 1, 100};
    spec s = {K_BENCH, 2, 6000}; /* ~1 MiB: several body pwrites */
    static const shoal_err codes[] = {SHOAL_EIO, SHOAL_ENOSPC};
    unsigned checked = 0;

    quiet(true);
    for (size_t c = 0; c < 4; c++) {
        fs_mem *m = mem_fs_with_dir();
        fs *f = fs_mem_fs(m);
        assert_int_equal(write_snap(f, MDIR, &old, 1, 10), SHOAL_OK);
        for (uint64_t k = 1;; k++) {
            shoal_err code = codes[c % 2];
            fs_mem_fail(m, FS_OP_ALL, k, code, false, c >= 2);
            uint64_t fails = fs_mem_fail_count(m);
            uint64_t syncs = fs_mem_op_count(m, FS_OP_FSYNC);
            uint64_t dsyncs = fs_mem_op_count(m, FS_OP_DIR_FSYNC);
            shoal_err rc = write_snap(f, MDIR, &s, 1, 20);
            bool failed = fs_mem_fail_count(m) != fails;
            fs_mem_fail_clear(m);
            assert_true(fs_mem_op_count(m, FS_OP_FSYNC) - syncs <= 1);
            if (!failed) {
                assert_int_equal(rc, SHOAL_OK);
                assert_int_equal(which_loads(f, &old, &s), 20);
                break;
            }
            checked++;
            assert_int_equal(rc, code);
            assert_int_equal(count_tmp(f), 0);
            int got = which_loads(f, &old, &s);
            /* Only a failed dir fsync after the rename (the last step, so
             * reached only if it is the one that failed) leaves the new
             * snapshot in place. */
            assert_true(got == 10 || got == 20);
            if (got == 20) {
                assert_int_equal(fs_mem_op_count(m, FS_OP_DIR_FSYNC) - dsyncs,
                                 1);
                char p[256];
                snap_file(p, sizeof(p), MDIR, 1, 20, "");
                assert_int_equal(fs_unlink(f, p), SHOAL_OK);
            }
            assert_int_equal(snap_prune(f, MDIR, 1, 2), SHOAL_OK);
            assert_int_equal(count_tmp(f), 0);
            assert_int_equal(which_loads(f, &old, &s), 10);
        }
        fs_mem_close(m);
    }
    quiet(false);
    printf("# %u injected I/O failures checked\n", checked);
}

/* An fs that forwards to an fs_mem and, after every call that changes it,
 * checks the crash states a power loss right then could leave. */
typedef struct crash_fs {
    fs base;
    fs_mem *m;
    const spec *old, *s;
    unsigned states;  /* crash states checked */
    unsigned saw_new; /* ... that loaded the new snapshot */
} crash_fs;

static crash_fs *the_crash_fs;

static void
check_crash_states(void)
{
    crash_fs *c = the_crash_fs;
    static const fs_crash_mode modes[] = {
        FS_CRASH_DROP_UNSYNCED, FS_CRASH_KEEP_UNSYNCED, FS_CRASH_TORN_LAST};
    for (uint64_t i = 0; i < 3 + 24; i++) {
        fs_mem *clone = NULL;
        fs_crash_mode mode = i < 3 ? modes[i] : FS_CRASH_RANDOM;
        assert_int_equal(fs_mem_crash_clone(c->m, mode, i, &clone), SHOAL_OK);
        int got = which_loads(fs_mem_fs(clone), c->old, c->s);
        assert_true(got == 10 || got == 20);
        c->saw_new += got == 20;
        c->states++;
        fs_mem_close(clone);
    }
}

#define FWD(ret, name, params, args)              \
    static ret cf_##name params                   \
    {                                             \
        crash_fs *c = (crash_fs *) f;             \
        ret rc = fs_mem_fs(c->m)->ops->name args; \
        check_crash_states();                     \
        return rc;                                \
    }

static shoal_err
cf_open(fs *f, const char *path, int flags, int *fd_out)
{
    crash_fs *c = (crash_fs *) f;
    shoal_err rc = fs_open(fs_mem_fs(c->m), path, flags, fd_out);
    check_crash_states();
    return rc;
}
static void
cf_close(fs *f, int fd)
{
    fs_close(fs_mem_fs(((crash_fs *) f)->m), fd);
}
static shoal_err
cf_pread(fs *f, int fd, void *buf, size_t len, uint64_t off, size_t *n_out)
{
    return fs_pread(fs_mem_fs(((crash_fs *) f)->m), fd, buf, len, off, n_out);
}
FWD(shoal_err, pwrite,
    (fs * f, int fd, const void *buf, size_t len, uint64_t off),
    (fs_mem_fs(c->m), fd, buf, len, off))
FWD(shoal_err, fsync, (fs * f, int fd), (fs_mem_fs(c->m), fd))
FWD(shoal_err, ftruncate, (fs * f, int fd, uint64_t len),
    (fs_mem_fs(c->m), fd, len))
FWD(shoal_err, fallocate, (fs * f, int fd, uint64_t len),
    (fs_mem_fs(c->m), fd, len))
FWD(shoal_err, rename, (fs * f, const char *from, const char *to),
    (fs_mem_fs(c->m), from, to))
FWD(shoal_err, unlink, (fs * f, const char *path), (fs_mem_fs(c->m), path))
FWD(shoal_err, mkdir, (fs * f, const char *path), (fs_mem_fs(c->m), path))
FWD(shoal_err, dir_fsync, (fs * f, const char *dir), (fs_mem_fs(c->m), dir))
static shoal_err
cf_fsize(fs *f, int fd, uint64_t *len_out)
{
    return fs_fsize(fs_mem_fs(((crash_fs *) f)->m), fd, len_out);
}
static shoal_err
cf_list(fs *f, const char *dir, fs_list_cb cb, void *arg)
{
    return fs_list(fs_mem_fs(((crash_fs *) f)->m), dir, cb, arg);
}

static const fs_ops crash_ops = {
    .open = cf_open,
    .close = cf_close,
    .pread = cf_pread,
    .pwrite = cf_pwrite,
    .fsync = cf_fsync,
    .ftruncate = cf_ftruncate,
    .fallocate = cf_fallocate,
    .fsize = cf_fsize,
    .rename = cf_rename,
    .unlink = cf_unlink,
    .mkdir = cf_mkdir,
    .dir_fsync = cf_dir_fsync,
    .list = cf_list,
};

static void
test_snap_power_loss_at_every_step(void **state)
{
    (void) state;
    spec old = {K_TEXT, 1, 100};
    spec s = {K_BENCH, 2, 6000};
    crash_fs c = {.base = {.ops = &crash_ops}, .old = &old, .s = &s};

    c.m = mem_fs_with_dir();
    the_crash_fs = &c;
    assert_int_equal(write_snap(fs_mem_fs(c.m), MDIR, &old, 1, 10), SHOAL_OK);
    quiet(true);
    assert_int_equal(write_snap(&c.base, MDIR, &s, 1, 20), SHOAL_OK);
    /* Committed: every crash state from now on has the new one. */
    unsigned before = c.saw_new;
    check_crash_states();
    assert_int_equal(c.saw_new - before, 27);
    /* Pruning the old one at every step never loses the new one. */
    assert_int_equal(snap_prune(&c.base, MDIR, 1, 1), SHOAL_OK);
    quiet(false);
    assert_true(c.saw_new > 27);
    printf("# %u crash states checked, %u had the new snapshot\n", c.states,
           c.saw_new);
    the_crash_fs = NULL;
    fs_mem_close(c.m);
}

/* --- throughput and corpus -------------------------------------------------
 */

static shoal_err
null_sink(void *arg, const uint8_t *buf, size_t len)
{
    (void) buf;
    *(size_t *) arg += len;
    return SHOAL_OK;
}

static double
now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double) ts.tv_sec + (double) ts.tv_nsec / 1e9;
}

static void
test_snap_throughput(void **state)
{
    const char *dir = *state;
    spec s = {K_BENCH, 1, tu_long() ? 1500000 : 150000};
    snap_meta m = meta_of(&s, 1, 1);
    uint8_t kb[64], vb[256], hdr[SNAP_HDR];
    snap_entry *ents = malloc(s.n * sizeof(*ents));
    uint8_t *data = malloc(s.n * (64 + 256));
    size_t raw = 0, out = 0;
    snap_enc *e = NULL;

    /* Entries prepared up front: the timing is the encoder's alone. */
    for (uint64_t i = 0; i < s.n; i++) {
        make_entry(&s, i, kb, vb, &ents[i]);
        uint8_t *p = data + i * (64 + 256);
        memcpy(p, kb, ents[i].klen);
        memcpy(p + 64, vb, ents[i].vlen);
        ents[i].key = p;
        ents[i].val = p + 64;
        raw += 24 + ents[i].klen + ents[i].vlen;
    }
    double t0 = now_s();
    assert_int_equal(snap_enc_open(&m, null_sink, &out, &e), SHOAL_OK);
    for (uint64_t i = 0; i < s.n; i++)
        assert_int_equal(snap_enc_add(e, &ents[i]), SHOAL_OK);
    assert_int_equal(snap_enc_finish(e, hdr), SHOAL_OK);
    double t1 = now_s();
    snap_enc_free(e);
    printf("# encode: %zu raw bytes -> %zu (%.1f%%) in %.3f s: %.0f MB/s\n",
           raw, out, 100.0 * (double) out / (double) raw, t1 - t0,
           (double) raw / (t1 - t0) / 1e6);

    uint8_t *img = NULL;
    size_t len = 0;
    uint64_t n = 0;
    assert_int_equal(encode_image(&s, &m, &img, &len), SHOAL_OK);
    t0 = now_s();
    assert_int_equal(
        snap_decode(img, len, MAX_KEY, MAX_VALUE, NULL, count_cb, &n),
        SHOAL_OK);
    t1 = now_s();
    assert_int_equal(n, s.n);
    printf("# decode: %zu raw bytes in %.3f s: %.0f MB/s\n", raw, t1 - t0,
           (double) raw / (t1 - t0) / 1e6);
    free(img);

    /* Through a file: buffered pwrites, fsync, rename, dir fsync. */
    snap_writer *w = NULL;
    t0 = now_s();
    assert_int_equal(snap_writer_open(fs_posix(), dir, &m, &w), SHOAL_OK);
    for (uint64_t i = 0; i < s.n; i++)
        assert_int_equal(snap_writer_add(w, &ents[i]), SHOAL_OK);
    assert_int_equal(snap_writer_commit(w), SHOAL_OK);
    t1 = now_s();
    printf("# writer to %s: %.0f MB/s\n", dir, (double) raw / (t1 - t0) / 1e6);
    n = 0;
    t0 = now_s();
    assert_int_equal(snap_load_latest(fs_posix(), dir, 1, MAX_KEY, MAX_VALUE,
                                      NULL, count_cb, &n),
                     SHOAL_OK);
    t1 = now_s();
    assert_int_equal(n, s.n);
    printf("# load_latest: %.0f MB/s\n", (double) raw / (t1 - t0) / 1e6);
    free(ents);
    free(data);
}

/* Seeds for the fuzzer's other modes: raw entries (bit 3), and a value of
 * 20 KB that compresses to a few dozen bytes (bit 2: max_value 64 KiB). */
static void
write_extra_seeds(const char *out)
{
    char path[4096];
    uint8_t raw[1 + 8 + 3 * 40];
    size_t r = 1 + 8;
    raw[0] = 8;
    put_u64(raw + 1, 3);
    r += raw_entry(raw + r, 1, 3, "a", 1, 3);
    r += raw_entry(raw + r, 2, 0, "ab", 2, 0);
    r += raw_entry(raw + r, 1, 1, "b", 1, 1);
    snprintf(path, sizeof(path), "%s/seed-raw", out);
    put_file(path, raw, r);

    size_t vlen = 20000; /* the window starts at 4 KiB for small bodies */
    uint8_t *big = malloc(24 + 3 + vlen);
    r = raw_entry(big, 3, (uint32_t) vlen, "big", 3, vlen);
    size_t len;
    uint8_t *img = craft(1, big, r, NULL, 0, &len);
    uint8_t *seed = malloc(len + 1);
    seed[0] = 1 | 4;
    memcpy(seed + 1, img, len);
    snprintf(path, sizeof(path), "%s/seed-bigvalue", out);
    put_file(path, seed, len + 1);
    free(seed);
    free(img);
    free(big);
}

/* Writes the fuzz seeds when $SHOAL_SNAP_CORPUS names a directory; the first
 * byte of a seed picks the fuzzer's mode (bit 0: fix the crcs). */
static void
test_snap_corpus_seeds(void **state)
{
    (void) state;
    const char *out = getenv("SHOAL_SNAP_CORPUS");
    static const spec seeds[] = {{K_TEXT, 1, 0},     {K_TEXT, 2, 1},
                                 {K_TEXT, 3, 5},     {K_BINARY, 4, 8},
                                 {K_EMPTYVAL, 5, 4}, {K_TEXT, 6, 12}};
    for (size_t i = 0; i < sizeof(seeds) / sizeof(seeds[0]); i++) {
        snap_meta m = meta_of(&seeds[i], (uint32_t) i, i + 1);
        uint8_t *img = NULL;
        size_t len = 0;
        uint64_t n = 0;
        assert_int_equal(encode_image(&seeds[i], &m, &img, &len), SHOAL_OK);
        /* The fuzzer's limits: max_key 64, max_value 256. */
        assert_int_equal(snap_decode(img, len, 64, 256, NULL, count_cb, &n),
                         SHOAL_OK);
        if (out != NULL && out[0] != '\0') {
            char path[4096];
            uint8_t *seed = malloc(len + 1);
            seed[0] = (uint8_t) (i % 2);
            memcpy(seed + 1, img, len);
            snprintf(path, sizeof(path), "%s/seed-%zu", out, i);
            put_file(path, seed, len + 1);
            free(seed);
        }
        free(img);
    }
    if (out != NULL && out[0] != '\0')
        write_extra_seeds(out);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_snap_roundtrip_counts),
        cmocka_unit_test_setup_teardown(test_snap_roundtrip_100k_file,
                                        tu_tmpdir_up, tu_tmpdir_down),
        cmocka_unit_test_setup_teardown(test_snap_roundtrip_empty_file,
                                        tu_tmpdir_up, tu_tmpdir_down),
        cmocka_unit_test(test_snap_roundtrip_binary_keys),
        cmocka_unit_test(test_snap_roundtrip_empty_values),
        cmocka_unit_test_setup_teardown(test_snap_roundtrip_large_values,
                                        tu_tmpdir_up, tu_tmpdir_down),
        cmocka_unit_test(test_snap_enc_rejects_misuse),
        cmocka_unit_test(test_snap_enc_sink_error_is_sticky),
        cmocka_unit_test_setup_teardown(test_snap_writer_failure_keeps_old,
                                        tu_tmpdir_up, tu_tmpdir_down),
        cmocka_unit_test_setup_teardown(test_snap_prune_keeps_k_newest,
                                        tu_tmpdir_up, tu_tmpdir_down),
        cmocka_unit_test_setup_teardown(test_snap_load_falls_back_to_older,
                                        tu_tmpdir_up, tu_tmpdir_down),
        cmocka_unit_test_setup_teardown(test_snap_tmp_ignored_and_pruned,
                                        tu_tmpdir_up, tu_tmpdir_down),
        cmocka_unit_test_setup_teardown(test_snap_every_bit_flip_detected,
                                        tu_tmpdir_up, tu_tmpdir_down),
        cmocka_unit_test(test_snap_every_truncation_detected),
        cmocka_unit_test(test_snap_crafted_images_rejected),
        cmocka_unit_test_setup_teardown(test_snap_load_undecodable_newest,
                                        tu_tmpdir_up, tu_tmpdir_down),
        cmocka_unit_test(test_snap_zip_bomb_bounded),
        cmocka_unit_test_setup_teardown(test_snap_alloc_failures, tu_tmpdir_up,
                                        tu_tmpdir_down),
        cmocka_unit_test(test_snap_io_failures),
        cmocka_unit_test(test_snap_power_loss_at_every_step),
        cmocka_unit_test_setup_teardown(test_snap_throughput, tu_tmpdir_up,
                                        tu_tmpdir_down),
        cmocka_unit_test(test_snap_corpus_seeds),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
