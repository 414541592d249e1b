/*
 * test_wire.c -- frames, sealing, key files, roles and the replay window
 * (proto/wire.h): every bit of a sealed frame is authenticated, truncation
 * never crashes, replays are refused, key files parse exactly what
 * wire_key_format writes and refuse everything else with a line number.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "proto/bytes.h"
#include "proto/mem.h"
#include "proto/wire.h"
#include "tests/support/testutil.h"

#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define T0     1700000000000ull /* fake "now", unix ms */
#define WIN_MS 30000u

static const char SECRET_A[] =
    "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

static wire_key
test_key(uint32_t id, uint8_t fill)
{
    wire_key k;
    memset(&k, 0, sizeof(k));
    k.id = id;
    k.role = WIRE_ROLE_WRITE;
    memset(k.secret, fill, sizeof(k.secret));
    return k;
}

/* A sealed frame of body_len pattern bytes in a heap buffer of exactly its
 * length (so ASan sees any read past the end). */
static uint8_t *
sealed_frame(wire_sender *s, const wire_key *k, size_t body_len,
             size_t *len_out)
{
    uint8_t *body = malloc(body_len + 1);
    for (size_t i = 0; i < body_len; i++)
        body[i] = (uint8_t) (i * 7 + 1);
    size_t cap = wire_frame_len(body_len, k != NULL);
    uint8_t *f = malloc(cap);
    assert_int_equal(wire_seal(s, k, 0, body, body_len, f, cap, len_out, NULL),
                     SHOAL_OK);
    assert_int_equal(*len_out, cap);
    free(body);
    return f;
}

static uint8_t *
dup_bytes(const uint8_t *p, size_t len)
{
    uint8_t *d = malloc(len == 0 ? 1 : len);
    if (len > 0)
        memcpy(d, p, len);
    return d;
}

/* ---- frames ---------------------------------------------------------------
 */

static void
test_wire_seal_open_roundtrip(void **state)
{
    (void) state;
    static const size_t lens[] = {0, 1, 15, 16, 17, 100, 4096, 70000};
    wire_key k = test_key(7, 0x42);
    wire_sender s;
    wire_sender_init(&s);
    tu_clock_fake(T0);
    for (size_t i = 0; i < sizeof(lens) / sizeof(lens[0]); i++) {
        size_t n = lens[i], flen, blen = 0;
        uint8_t *body = malloc(n + 1), nonce[WIRE_NONCE_BYTES];
        for (size_t j = 0; j < n; j++)
            body[j] = (uint8_t) (j ^ i);
        uint8_t *f = malloc(wire_frame_len(n, true));
        assert_int_equal(wire_seal(&s, &k, WIRE_F_PEER, body, n, f,
                                   wire_frame_len(n, true), &flen, nonce),
                         SHOAL_OK);
        assert_int_equal(flen, n + WIRE_HDR_BYTES + WIRE_TAG_BYTES);
        assert_true(n < 16 || memcmp(f + WIRE_HDR_BYTES, body, 16) != 0);
        wire_hdr h;
        assert_int_equal(wire_parse_hdr(f, flen, &h), SHOAL_OK);
        assert_int_equal(h.version, WIRE_VERSION);
        assert_int_equal(h.flags, WIRE_F_PEER);
        assert_int_equal(h.key_id, 7);
        assert_memory_equal(h.nonce, nonce, WIRE_NONCE_BYTES);
        assert_memory_equal(h.nonce, s.id, 8);
        assert_int_equal(get_u64(h.nonce + 8), i + 1); /* counter from 1 */
        assert_int_equal(get_u64(h.nonce + 16), T0);
        assert_int_equal(wire_open(&k, f, flen, &blen), SHOAL_OK);
        assert_int_equal(blen, n);
        assert_memory_equal(f + WIRE_HDR_BYTES, body, n);
        free(body);
        free(f);
    }
    tu_clock_real();
}

static void
test_wire_seal_checks_args(void **state)
{
    (void) state;
    wire_key k = test_key(7, 1), k0 = test_key(0, 1);
    wire_sender s;
    wire_sender_init(&s);
    uint8_t body[10] = {0}, out[128];
    size_t need = wire_frame_len(sizeof(body), true), len = 0;
    assert_int_equal(wire_frame_len(10, false), 42);
    assert_int_equal(wire_frame_len(SIZE_MAX - 3, true), SIZE_MAX);
    for (size_t cap = 0; cap < need; cap++)
        assert_int_equal(
            wire_seal(&s, &k, 0, body, sizeof(body), out, cap, &len, NULL),
            SHOAL_ETOOLARGE);
    assert_int_equal(
        wire_seal(&s, &k, 0, body, sizeof(body), out, need, &len, NULL),
        SHOAL_OK);
    assert_int_equal(
        wire_seal(&s, &k, 0x10, body, sizeof(body), out, 128, &len, NULL),
        SHOAL_EINVAL);
    assert_int_equal(wire_seal(&s, &k, WIRE_F_ERROR, body, sizeof(body), out,
                               128, &len, NULL),
                     SHOAL_EINVAL);
    assert_int_equal(wire_seal(&s, &k, WIRE_F_PLAIN, body, sizeof(body), out,
                               128, &len, NULL),
                     SHOAL_EINVAL);
    assert_int_equal(
        wire_seal(&s, &k0, 0, body, sizeof(body), out, 128, &len, NULL),
        SHOAL_EINVAL);
    assert_int_equal(wire_seal(NULL, &k, 0, body, 1, out, 128, &len, NULL),
                     SHOAL_EINVAL);
    assert_int_equal(wire_seal(&s, &k, 0, NULL, 1, out, 128, &len, NULL),
                     SHOAL_EINVAL);
    assert_int_equal(
        wire_seal(&s, &k, 0, body, SIZE_MAX - 8, out, 128, &len, NULL),
        SHOAL_ETOOLARGE);
}

typedef struct seal_thread {
    wire_sender *s;
    uint64_t ctrs[1000]; /* counter of each frame sealed */
} seal_thread;

static void *
seal_worker(void *arg)
{
    seal_thread *t = arg;
    wire_key k = test_key(3, 3);
    uint8_t out[64], nonce[WIRE_NONCE_BYTES];
    size_t len;
    for (size_t i = 0; i < 1000; i++) {
        if (wire_seal(t->s, &k, 0, NULL, 0, out, sizeof(out), &len, nonce) !=
            SHOAL_OK)
            return NULL;
        t->ctrs[i] = get_u64(nonce + 8);
    }
    return arg;
}

/* Two senders never share an id; one sender's counter rises by one a frame,
 * also across threads (atomic): 4 x 1000 frames use 1..4000 once each. */
static void
test_wire_sender_ids_and_counter(void **state)
{
    (void) state;
    wire_sender a, b;
    wire_sender_init(&a);
    wire_sender_init(&b);
    assert_memory_not_equal(a.id, b.id, 8);
    static seal_thread t[4];
    pthread_t th[4];
    for (int i = 0; i < 4; i++) {
        t[i].s = &a;
        assert_int_equal(pthread_create(&th[i], NULL, seal_worker, &t[i]), 0);
    }
    uint8_t *hit = calloc(4001, 1);
    for (int i = 0; i < 4; i++) {
        void *ret;
        pthread_join(th[i], &ret);
        assert_ptr_equal(ret, &t[i]);
        for (int j = 0; j < 1000; j++) {
            uint64_t c = t[i].ctrs[j];
            assert_true(c >= 1 && c <= 4000 && hit[c] == 0);
            hit[c] = 1;
            assert_true(j == 0 || c > t[i].ctrs[j - 1]);
        }
    }
    free(hit);
}

static void
test_wire_every_bit_flip_rejected(void **state)
{
    (void) state;
    wire_key k = test_key(9, 0x5a);
    wire_sender s;
    wire_sender_init(&s);
    size_t len, blen;
    uint8_t *f = sealed_frame(&s, &k, 61, &len);
    for (size_t bit = 0; bit < len * 8; bit++) {
        uint8_t *g = dup_bytes(f, len);
        g[bit / 8] ^= (uint8_t) (1u << (bit % 8));
        shoal_err rc = wire_open(&k, g, len, &blen);
        if (rc != SHOAL_EAUTH && rc != SHOAL_EINVAL)
            fail_msg("bit %zu: %s", bit, shoal_errname(rc));
        /* Header bits other than the version/magic/flags checks all end at
         * the tag: the header is associated data. */
        if (bit >= 64 && rc != SHOAL_EAUTH)
            fail_msg("bit %zu (nonce/body/tag) gave %s", bit,
                     shoal_errname(rc));
        free(g);
    }
    /* The untouched frame still opens. */
    assert_int_equal(wire_open(&k, f, len, &blen), SHOAL_OK);
    assert_int_equal(blen, 61);
    free(f);
}

static void
test_wire_wrong_key(void **state)
{
    (void) state;
    wire_key k = test_key(9, 0x5a), other = test_key(9, 0x5b),
             other_id = test_key(10, 0x5a);
    wire_sender s;
    wire_sender_init(&s);
    size_t len, blen;
    uint8_t *f = sealed_frame(&s, &k, 40, &len);
    uint8_t *g = dup_bytes(f, len);
    assert_int_equal(wire_open(&other, g, len, &blen), SHOAL_EAUTH);
    free(g);
    g = dup_bytes(f, len);
    assert_int_equal(wire_open(&other_id, g, len, &blen), SHOAL_EAUTH);
    free(g);
    /* Re-labelling the frame with the other key's id does not help. */
    g = dup_bytes(f, len);
    put_u32(g + 4, 10);
    assert_int_equal(wire_open(&other_id, g, len, &blen), SHOAL_EAUTH);
    free(g);
    assert_int_equal(wire_open(NULL, f, len, &blen), SHOAL_EINVAL);
    assert_int_equal(wire_open(&k, f, len, &blen), SHOAL_OK);
    free(f);
}

/* Every prefix of a sealed, a plaintext and an error frame, in a buffer of
 * exactly that size, through every decoder: a defined error, no crash. */
static void
test_wire_truncated_never_crash(void **state)
{
    (void) state;
    wire_key k = test_key(2, 0x11);
    wire_sender s;
    wire_sender_init(&s);
    size_t slen, plen, elen, blen;
    uint8_t *sealed = sealed_frame(&s, &k, 50, &slen);
    uint8_t *plain = sealed_frame(&s, NULL, 20, &plen);
    uint8_t err[64];
    assert_int_equal(wire_error_frame(SHOAL_EAUTH, err, sizeof(err), &elen),
                     SHOAL_OK);
    const uint8_t *frames[] = {sealed, plain, err};
    size_t lens[] = {slen, plen, elen};
    for (size_t fi = 0; fi < 3; fi++) {
        for (size_t n = 0; n < lens[fi]; n++) {
            uint8_t *g = dup_bytes(frames[fi], n);
            const uint8_t *body;
            shoal_err st;
            shoal_err rc = wire_open(&k, g, n, &blen);
            assert_true(rc == SHOAL_EINVAL || rc == SHOAL_EAUTH);
            assert_true(n >= WIRE_HDR_BYTES ||
                        wire_parse_hdr(g, n, NULL) == SHOAL_EINVAL);
            rc = wire_open_plain(g, n, &body, &blen);
            assert_true(rc == SHOAL_EINVAL || fi != 0); /* error: plain */
            assert_true(rc != SHOAL_OK || blen == n - WIRE_HDR_BYTES);
            rc = wire_error_status(g, n, &st);
            assert_int_equal(rc, SHOAL_EINVAL);
            free(g);
        }
    }
    /* One byte too many breaks the tag too. */
    uint8_t *longer = malloc(slen + 1);
    memcpy(longer, sealed, slen);
    longer[slen] = 0;
    assert_int_equal(wire_open(&k, longer, slen + 1, &blen), SHOAL_EAUTH);
    free(longer);
    free(sealed);
    free(plain);
}

static void
test_wire_plain_frames(void **state)
{
    (void) state;
    wire_key k = test_key(2, 0x11);
    wire_sender s;
    wire_sender_init(&s);
    const uint8_t msg[] = "plaintext body";
    uint8_t f[128];
    size_t len, blen;
    const uint8_t *body;
    assert_int_equal(wire_seal(&s, NULL, WIRE_F_RESPONSE, msg, sizeof(msg), f,
                               sizeof(f), &len, NULL),
                     SHOAL_OK);
    assert_int_equal(len, WIRE_HDR_BYTES + sizeof(msg));
    wire_hdr h;
    assert_int_equal(wire_parse_hdr(f, len, &h), SHOAL_OK);
    assert_int_equal(h.flags, WIRE_F_PLAIN | WIRE_F_RESPONSE);
    assert_int_equal(h.key_id, 0);
    assert_int_equal(wire_open_plain(f, len, &body, &blen), SHOAL_OK);
    assert_int_equal(blen, sizeof(msg));
    assert_memory_equal(body, msg, sizeof(msg));
    /* PLAIN may also be passed explicitly. */
    assert_int_equal(wire_seal(&s, NULL, WIRE_F_PLAIN, msg, sizeof(msg), f,
                               sizeof(f), &len, NULL),
                     SHOAL_OK);
    /* A plaintext frame never opens as sealed, nor a sealed one as plain. */
    assert_int_equal(wire_open(&k, f, len, &blen), SHOAL_EINVAL);
    size_t slen;
    uint8_t *sealed = sealed_frame(&s, &k, 8, &slen);
    assert_int_equal(wire_open_plain(sealed, slen, &body, &blen), SHOAL_EINVAL);
    free(sealed);
    /* A plaintext frame with a key id is malformed. */
    put_u32(f + 4, 5);
    assert_int_equal(wire_open_plain(f, len, &body, &blen), SHOAL_EINVAL);
    /* A header alone is a valid empty plaintext frame. */
    assert_int_equal(
        wire_seal(&s, NULL, 0, NULL, 0, f, WIRE_HDR_BYTES, &len, NULL),
        SHOAL_OK);
    assert_int_equal(wire_open_plain(f, len, &body, &blen), SHOAL_OK);
    assert_int_equal(blen, 0);
}

static void
test_wire_header_checks(void **state)
{
    (void) state;
    wire_key k = test_key(4, 4);
    wire_sender s;
    wire_sender_init(&s);
    size_t len;
    uint8_t *f = sealed_frame(&s, &k, 0, &len);
    assert_int_equal(len, WIRE_HDR_BYTES + WIRE_TAG_BYTES);
    assert_int_equal(wire_parse_hdr(f, len, NULL), SHOAL_OK);
    struct {
        size_t off;
        uint8_t val;
    } bad[] = {
        {0, 'X'},
        {1, 'h'},
        {2, 0},
        {2, 2},
        {3, 0x10},
        {3, 0x80},                        /* flags */
        {3, WIRE_F_ERROR},                /* error, not plain */
        {3, WIRE_F_PLAIN | WIRE_F_ERROR}, /* error, not response */
        {3, WIRE_F_PLAIN},                /* plain with key id */
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        uint8_t *g = dup_bytes(f, len);
        g[bad[i].off] = bad[i].val;
        assert_int_equal(wire_parse_hdr(g, len, NULL), SHOAL_EINVAL);
        free(g);
    }
    /* Sealed with key id 0; sealed too short for a tag. */
    uint8_t *g = dup_bytes(f, len);
    put_u32(g + 4, 0);
    assert_int_equal(wire_parse_hdr(g, len, NULL), SHOAL_EINVAL);
    free(g);
    for (size_t n = WIRE_HDR_BYTES; n < len; n++)
        assert_int_equal(wire_parse_hdr(f, n, NULL), SHOAL_EINVAL);
    assert_int_equal(wire_parse_hdr(NULL, 100, NULL), SHOAL_EINVAL);
    free(f);
}

static void
test_wire_error_frames(void **state)
{
    (void) state;
    uint8_t f[64];
    size_t len = 0;
    shoal_err st;
    for (int v = 1; v <= SHOAL_EREADONLY; v++) {
        assert_int_equal(wire_error_frame((shoal_err) v, f, sizeof(f), &len),
                         SHOAL_OK);
        assert_int_equal(len, 36);
        wire_hdr h;
        assert_int_equal(wire_parse_hdr(f, len, &h), SHOAL_OK);
        assert_int_equal(h.flags,
                         WIRE_F_PLAIN | WIRE_F_RESPONSE | WIRE_F_ERROR);
        assert_int_equal(h.key_id, 0);
        assert_int_equal(wire_error_status(f, len, &st), SHOAL_OK);
        assert_int_equal(st, v);
    }
    assert_int_equal(wire_error_frame(SHOAL_OK, f, sizeof(f), &len),
                     SHOAL_EINVAL);
    assert_int_equal(wire_error_frame((shoal_err) 99, f, sizeof(f), &len),
                     SHOAL_EINVAL);
    assert_int_equal(wire_error_frame(SHOAL_EAUTH, f, 35, &len),
                     SHOAL_ETOOLARGE);
    assert_int_equal(wire_error_frame(SHOAL_EAUTH, f, 36, &len), SHOAL_OK);
    /* Unknown or OK status, wrong length, not an error frame. */
    put_u32(f + 32, 99);
    assert_int_equal(wire_error_status(f, 36, &st), SHOAL_EINVAL);
    put_u32(f + 32, 0);
    assert_int_equal(wire_error_status(f, 36, &st), SHOAL_EINVAL);
    put_u32(f + 32, SHOAL_EAUTH);
    f[36] = 0;
    assert_int_equal(wire_error_status(f, 37, &st), SHOAL_EINVAL);
    f[3] = WIRE_F_PLAIN | WIRE_F_RESPONSE;
    assert_int_equal(wire_error_status(f, 36, &st), SHOAL_EINVAL);
    wire_sender s;
    wire_sender_init(&s);
    wire_key k = test_key(1, 1);
    size_t slen;
    uint8_t *sealed = sealed_frame(&s, &k, 4, &slen);
    assert_int_equal(wire_error_status(sealed, slen, &st), SHOAL_EINVAL);
    free(sealed);
}

/* ---- replay window -------------------------------------------------------
 */

static wire_hdr
mk_hdr(uint32_t key_id, uint8_t sender, uint64_t ctr, uint64_t ts)
{
    wire_hdr h;
    memset(&h, 0, sizeof(h));
    h.version = WIRE_VERSION;
    h.key_id = key_id;
    memset(h.nonce, sender, 8);
    put_u64(h.nonce + 8, ctr);
    put_u64(h.nonce + 16, ts);
    return h;
}

static shoal_err
chk(wire_replay *r, uint8_t sender, uint64_t ctr, uint64_t ts, uint64_t now)
{
    wire_hdr h = mk_hdr(1, sender, ctr, ts);
    return wire_replay_check(r, &h, now);
}

static void
test_wire_replay_same_frame_twice(void **state)
{
    (void) state;
    wire_replay *r;
    assert_int_equal(wire_replay_open(0, WIN_MS, &r), SHOAL_EINVAL);
    assert_null(r);
    assert_int_equal(wire_replay_open(8, 0, &r), SHOAL_EINVAL);
    assert_int_equal(wire_replay_open(8, WIN_MS, &r), SHOAL_OK);
    assert_int_equal(chk(r, 1, 1, T0, T0), SHOAL_OK);
    assert_int_equal(chk(r, 1, 1, T0, T0), SHOAL_EAUTH);
    assert_int_equal(chk(r, 1, 1, T0, T0 + 5), SHOAL_EAUTH);
    assert_int_equal(wire_replay_refused(r), 2);
    /* Same counter from another sender, or under another key: new. */
    assert_int_equal(chk(r, 2, 1, T0, T0), SHOAL_OK);
    wire_hdr h = mk_hdr(2, 1, 1, T0);
    assert_int_equal(wire_replay_check(r, &h, T0), SHOAL_OK);
    assert_int_equal(wire_replay_check(r, &h, T0), SHOAL_EAUTH);
    assert_int_equal(wire_replay_refused(r), 3);
    wire_replay_close(r);
    wire_replay_close(NULL);
}

static void
test_wire_replay_out_of_order_window(void **state)
{
    (void) state;
    wire_replay *r;
    assert_int_equal(wire_replay_open(8, WIN_MS, &r), SHOAL_OK);
    assert_int_equal(chk(r, 1, 10, T0, T0), SHOAL_OK);
    for (int c = 9; c >= 1; c -= 2) /* 9 7 5 3 1, each once */
        assert_int_equal(chk(r, 1, (uint64_t) c, T0, T0), SHOAL_OK);
    for (uint64_t c = 1; c <= 10; c++)
        assert_int_equal(chk(r, 1, c, T0, T0),
                         c % 2 == 1 || c == 10 ? SHOAL_EAUTH : SHOAL_OK);
    /* top = 2000: 977 = top - 1023 is the oldest still in the window. */
    assert_int_equal(chk(r, 1, 2000, T0, T0), SHOAL_OK);
    assert_int_equal(chk(r, 1, 976, T0, T0), SHOAL_EAUTH);
    assert_int_equal(chk(r, 1, 977, T0, T0), SHOAL_OK);
    assert_int_equal(chk(r, 1, 977, T0, T0), SHOAL_EAUTH);
    assert_int_equal(chk(r, 1, 5, T0, T0), SHOAL_EAUTH); /* far behind */
    assert_int_equal(chk(r, 1, 1999, T0, T0), SHOAL_OK);
    /* A jump past the whole window forgets it; 2000 is now too old. */
    assert_int_equal(chk(r, 1, 5000, T0, T0), SHOAL_OK);
    assert_int_equal(chk(r, 1, 2000, T0, T0), SHOAL_EAUTH);
    assert_int_equal(chk(r, 1, 3977, T0, T0), SHOAL_OK);
    assert_int_equal(chk(r, 1, 3976, T0, T0), SHOAL_EAUTH);
    wire_replay_close(r);
}

/* Random counters against a model (a set plus the highest counter): each
 * frame is accepted iff it is new and top - ctr < 1024. Steps of every
 * size, so the window shift is exercised at every bit offset. */
static void
test_wire_replay_matches_model(void **state)
{
    (void) state;
    enum { N = 20000, SPAN = 1u << 20 };
    uint64_t seed = tu_seed("replay model"), rs = seed;
    uint8_t *seen = calloc(SPAN, 1);
    uint64_t top = 0;
    wire_replay *r;
    assert_int_equal(wire_replay_open(4, WIN_MS, &r), SHOAL_OK);
    for (int i = 0; i < N; i++) {
        uint64_t x = tu_rand(&rs), ctr;
        if (top == 0 || x % 3 == 0)
            ctr = top + 1 + (tu_rand(&rs) % 1100) * (x % 7 == 0);
        else
            ctr = top - tu_rand(&rs) % (x % 5 == 0 ? 1100 : 80);
        if (ctr == 0 || ctr >= SPAN)
            continue;
        bool want = !seen[ctr] && (top == 0 || ctr > top || top - ctr < 1024);
        shoal_err rc = chk(r, 9, ctr, T0, T0);
        if (rc != (want ? SHOAL_OK : SHOAL_EAUTH))
            fail_msg("seed %llu step %d ctr %llu top %llu: got %s",
                     (unsigned long long) seed, i, (unsigned long long) ctr,
                     (unsigned long long) top, shoal_errname(rc));
        if (want) {
            seen[ctr] = 1;
            if (ctr > top)
                top = ctr;
        }
    }
    free(seen);
    wire_replay_close(r);
}

static void
test_wire_replay_time_bounds(void **state)
{
    (void) state;
    wire_replay *r;
    assert_int_equal(wire_replay_open(8, WIN_MS, &r), SHOAL_OK);
    assert_int_equal(chk(r, 1, 1, T0 - WIN_MS - 1, T0), SHOAL_EAUTH);
    assert_int_equal(chk(r, 1, 2, T0 + WIN_MS + 1, T0), SHOAL_EAUTH);
    assert_int_equal(chk(r, 1, 3, 0, T0), SHOAL_EAUTH);
    assert_int_equal(chk(r, 1, 4, UINT64_MAX, T0), SHOAL_EAUTH);
    assert_int_equal(chk(r, 1, 5, T0 - WIN_MS, T0), SHOAL_OK);
    assert_int_equal(chk(r, 1, 6, T0 + WIN_MS, T0), SHOAL_OK);
    assert_int_equal(wire_replay_refused(r), 4);
    /* The frames of a known sender get the same time check. */
    assert_int_equal(chk(r, 1, 7, T0, T0 + 2 * WIN_MS + 1), SHOAL_EAUTH);
    assert_int_equal(chk(r, 1, 7, T0 + WIN_MS, T0 + 2 * WIN_MS), SHOAL_OK);
    wire_replay_close(r);
}

/* max_senders = 4: the least recently seen sender is forgotten first, and a
 * forgotten sender's frames are still refused: by the eviction floor while
 * they are inside the time window, by the time check after it. */
static void
test_wire_replay_eviction(void **state)
{
    (void) state;
    wire_replay *r;
    assert_int_equal(wire_replay_open(4, WIN_MS, &r), SHOAL_OK);
    for (uint8_t s = 1; s <= 4; s++) {
        assert_int_equal(chk(r, s, 4, T0 + s, T0), SHOAL_OK);
        assert_int_equal(chk(r, s, 5, T0 + s, T0), SHOAL_OK);
    }
    assert_int_equal(chk(r, 1, 6, T0 + 10, T0), SHOAL_OK); /* 1 is fresh */
    assert_int_equal(chk(r, 5, 5, T0 + 20, T0), SHOAL_OK); /* evicts 2 */
    /* Sender 1 is remembered: its counter 5 is still a replay. */
    assert_int_equal(chk(r, 1, 5, T0 + 30, T0), SHOAL_EAUTH);
    /* Sender 2 is forgotten: its old frame (time T0 + 2) is refused by the
     * floor although it is in the time window... */
    assert_int_equal(chk(r, 2, 5, T0 + 2, T0), SHOAL_EAUTH);
    /* ...and after the window by the time check. */
    assert_int_equal(chk(r, 2, 5, T0 + 2, T0 + 2 + WIN_MS + 1), SHOAL_EAUTH);
    /* A frame newer than every forgotten one starts it afresh (counter 5
     * again: the proof that 2 was forgotten, not remembered). */
    assert_int_equal(chk(r, 2, 5, T0 + 21, T0), SHOAL_OK); /* evicts 3 */
    assert_int_equal(chk(r, 2, 5, T0 + 21, T0), SHOAL_EAUTH);
    /* Its new entry does not know the old counters 4 and 5, but their
     * frames (time T0 + 2, under the floor it was made with) stay refused. */
    assert_int_equal(chk(r, 2, 4, T0 + 2, T0), SHOAL_EAUTH);
    assert_int_equal(chk(r, 2, 5, T0 + 2, T0), SHOAL_EAUTH);
    assert_int_equal(chk(r, 2, 4, T0 + 22, T0), SHOAL_OK);
    /* 3 forgotten (floor T0 + 3), 4 remembered. */
    assert_int_equal(chk(r, 4, 5, T0 + 40, T0), SHOAL_EAUTH);
    assert_int_equal(chk(r, 3, 5, T0 + 3, T0), SHOAL_EAUTH);
    /* A brand-new sender with a current time is unaffected. */
    assert_int_equal(chk(r, 6, 1, T0 + 50, T0), SHOAL_OK);
    /* Many senders through a small table: nothing leaks or breaks. */
    for (int i = 0; i < 1000; i++) {
        wire_hdr h = mk_hdr((uint32_t) i + 100, 7, 1, T0 + 100 + (uint64_t) i);
        assert_int_equal(wire_replay_check(r, &h, T0), SHOAL_OK);
    }
    wire_replay_close(r);
}

/* One key's evicted senders raise only that key's floor: a key holder
 * sending times window_ms ahead cannot hold other keys' new senders off. */
static void
test_wire_replay_floor_per_key(void **state)
{
    (void) state;
    wire_replay *r;
    assert_int_equal(wire_replay_open(2, WIN_MS, &r), SHOAL_OK);
    wire_hdr a1 = mk_hdr(1, 0xa1, 1, T0 + WIN_MS), a2 = mk_hdr(1, 0xa2, 1, T0);
    wire_hdr b1 = mk_hdr(2, 0xb1, 1, T0 + 1), b2 = mk_hdr(2, 0xb2, 1, T0 + 2);
    wire_hdr b3 = mk_hdr(2, 0xb3, 1, T0 + 3), a3 = mk_hdr(1, 0xa3, 1, T0 + 5);
    assert_int_equal(wire_replay_check(r, &a1, T0), SHOAL_OK);
    assert_int_equal(wire_replay_check(r, &a2, T0), SHOAL_OK);
    assert_int_equal(wire_replay_check(r, &b1, T0), SHOAL_OK); /* evicts a1 */
    assert_int_equal(wire_replay_check(r, &b2, T0), SHOAL_OK); /* evicts a2 */
    assert_int_equal(wire_replay_check(r, &b3, T0), SHOAL_OK); /* evicts b1 */
    /* Key 2's floor is only T0 + 1 (b1): a new key-2 sender gets in, b1's
     * frame stays refused... */
    wire_hdr b4 = mk_hdr(2, 0xb4, 1, T0 + 2);
    assert_int_equal(wire_replay_check(r, &b4, T0), SHOAL_OK);
    assert_int_equal(wire_replay_check(r, &b1, T0), SHOAL_EAUTH);
    /* ...while key 1's is T0 + WIN_MS: its new senders wait for that. */
    assert_int_equal(wire_replay_check(r, &a3, T0), SHOAL_EAUTH);
    wire_hdr a4 = mk_hdr(1, 0xa4, 1, T0 + WIN_MS + 1);
    assert_int_equal(wire_replay_check(r, &a4, T0 + 1), SHOAL_OK);
    wire_replay_close(r);
}

typedef struct rp_thread {
    wire_replay *r;
    uint8_t sender_base;
    int n_senders;
    uint64_t frames;
    _Atomic uint64_t *accepted;
} rp_thread;

static void *
rp_worker(void *arg)
{
    rp_thread *t = arg;
    for (uint64_t c = 1; c <= t->frames; c++) {
        for (int s = 0; s < t->n_senders; s++) {
            /* Counters a little out of order: pairs swapped. */
            uint64_t ctr = c % 2 == 1 ? c + 1 : c - 1;
            wire_hdr h = mk_hdr(1, (uint8_t) (t->sender_base + s), ctr, T0 + c);
            if (wire_replay_check(t->r, &h, T0) == SHOAL_OK)
                atomic_fetch_add(t->accepted, 1);
        }
    }
    return NULL;
}

/* Four threads on disjoint senders all get every frame accepted; then two
 * threads racing on the same senders get each frame accepted exactly once
 * between them. */
static void
test_wire_replay_concurrent(void **state)
{
    (void) state;
    enum { T = 4, SENDERS = 8, FRAMES = 2000 };
    wire_replay *r;
    _Atomic uint64_t accepted = 0;
    pthread_t th[T];
    rp_thread args[T];
    assert_int_equal(wire_replay_open(T * SENDERS, WIN_MS, &r), SHOAL_OK);
    for (int i = 0; i < T; i++) {
        args[i] = (rp_thread){r, (uint8_t) (1 + i * SENDERS), SENDERS, FRAMES,
                              &accepted};
        assert_int_equal(pthread_create(&th[i], NULL, rp_worker, &args[i]), 0);
    }
    for (int i = 0; i < T; i++)
        pthread_join(th[i], NULL);
    assert_int_equal(atomic_load(&accepted), (uint64_t) T * SENDERS * FRAMES);
    assert_int_equal(wire_replay_refused(r), 0);
    wire_replay_close(r);

    assert_int_equal(wire_replay_open(SENDERS, WIN_MS, &r), SHOAL_OK);
    atomic_store(&accepted, 0);
    for (int i = 0; i < 2; i++) {
        args[i] = (rp_thread){r, 1, SENDERS, FRAMES, &accepted};
        assert_int_equal(pthread_create(&th[i], NULL, rp_worker, &args[i]), 0);
    }
    for (int i = 0; i < 2; i++)
        pthread_join(th[i], NULL);
    assert_int_equal(atomic_load(&accepted), (uint64_t) SENDERS * FRAMES);
    assert_int_equal(wire_replay_refused(r), (uint64_t) SENDERS * FRAMES);
    wire_replay_close(r);
}

/* Open + replay check as a receiver does it, with real sealed frames. */
static void
test_wire_replay_sealed_frames(void **state)
{
    (void) state;
    wire_key k = test_key(5, 0x77);
    wire_sender s;
    wire_sender_init(&s);
    wire_replay *r;
    assert_int_equal(wire_replay_open(16, WIN_MS, &r), SHOAL_OK);
    tu_clock_fake(T0);
    size_t len, blen;
    uint8_t *f = sealed_frame(&s, &k, 30, &len);
    uint8_t *copy = dup_bytes(f, len);
    wire_hdr h;
    assert_int_equal(wire_open(&k, f, len, &blen), SHOAL_OK);
    assert_int_equal(wire_parse_hdr(f, len, &h), SHOAL_OK);
    assert_int_equal(wire_replay_check(r, &h, T0 + 10), SHOAL_OK);
    /* The captured copy opens (it is authentic) but is a replay. */
    assert_int_equal(wire_open(&k, copy, len, &blen), SHOAL_OK);
    assert_int_equal(wire_parse_hdr(copy, len, &h), SHOAL_OK);
    assert_int_equal(wire_replay_check(r, &h, T0 + 10), SHOAL_EAUTH);
    tu_clock_real();
    free(f);
    free(copy);
    wire_replay_close(r);
}

static void
test_wire_replay_open_enomem(void **state)
{
    (void) state;
    wire_replay *r = NULL;
    shoal_err rc = SHOAL_ENOMEM;
    for (long n = 1; rc == SHOAL_ENOMEM; n++) {
        mem_fail_set(n, 0);
        rc = wire_replay_open(100, WIN_MS, &r);
        mem_fail_set(0, 0);
        assert_true(rc == SHOAL_OK || (rc == SHOAL_ENOMEM && r == NULL));
    }
    assert_int_equal(chk(r, 1, 1, T0, T0), SHOAL_OK);
    wire_replay_close(r);
}

/* ---- roles and keys -------------------------------------------------------
 */

static void
test_wire_role_allows_matrix(void **state)
{
    (void) state;
    /* rows: have; cols: need (0 = invalid, 1..4, 5 = invalid) */
    static const bool want[6][6] = {
        {0, 0, 0, 0, 0, 0}, {0, 1, 0, 0, 0, 0}, {0, 1, 1, 0, 0, 0},
        {0, 1, 1, 1, 0, 0}, {0, 0, 0, 0, 1, 0}, {0, 0, 0, 0, 0, 0},
    };
    for (int have = 0; have < 6; have++)
        for (int need = 0; need < 6; need++)
            if (wire_role_allows((wire_role) have, (wire_role) need) !=
                want[have][need])
                fail_msg("have %d need %d", have, need);
    static const char *names[] = {NULL, "read", "write", "admin", "peer", NULL};
    for (int r = 0; r < 6; r++) {
        const char *n = wire_role_name((wire_role) r);
        if (names[r] == NULL) {
            assert_null(n);
            continue;
        }
        assert_string_equal(n, names[r]);
        wire_role back;
        assert_int_equal(wire_role_parse(n, &back), SHOAL_OK);
        assert_int_equal(back, r);
    }
    wire_role back;
    assert_int_equal(wire_role_parse("Read", &back), SHOAL_EINVAL);
    assert_int_equal(wire_role_parse("", &back), SHOAL_EINVAL);
    assert_int_equal(wire_role_parse("readx", &back), SHOAL_EINVAL);
    assert_int_equal(wire_role_parse(NULL, &back), SHOAL_EINVAL);
}

static void
test_wire_key_covers(void **state)
{
    (void) state;
    wire_key k = test_key(1, 0);
    assert_true(wire_key_covers(&k, (const uint8_t *) "anything", 8));
    assert_true(wire_key_covers(&k, NULL, 0));
    memcpy(k.prefix, "app:", 4);
    k.prefix_len = 4;
    assert_true(wire_key_covers(&k, (const uint8_t *) "app:", 4));
    assert_true(wire_key_covers(&k, (const uint8_t *) "app:x", 5));
    assert_false(wire_key_covers(&k, (const uint8_t *) "app", 3));
    assert_false(wire_key_covers(&k, (const uint8_t *) "apq:x", 5));
    assert_false(wire_key_covers(&k, (const uint8_t *) "", 0));
    assert_false(wire_key_covers(&k, NULL, 0));
    /* Binary prefixes: a NUL byte is an ordinary byte. */
    k.prefix[1] = 0;
    assert_true(wire_key_covers(&k, (const uint8_t *) "a\0p:zz", 6));
    assert_false(wire_key_covers(&k, (const uint8_t *) "a", 2));
}

static void
test_wire_key_generate(void **state)
{
    (void) state;
    wire_key a, b;
    uint8_t big[WIRE_PREFIX_MAX + 1];
    memset(big, 'p', sizeof(big));
    assert_int_equal(wire_key_generate(0, WIRE_ROLE_READ, NULL, 0, &a),
                     SHOAL_EINVAL);
    assert_int_equal(wire_key_generate(1, (wire_role) 0, NULL, 0, &a),
                     SHOAL_EINVAL);
    assert_int_equal(wire_key_generate(1, (wire_role) 5, NULL, 0, &a),
                     SHOAL_EINVAL);
    assert_int_equal(wire_key_generate(1, WIRE_ROLE_READ, NULL, 3, &a),
                     SHOAL_EINVAL);
    assert_int_equal(wire_key_generate(1, WIRE_ROLE_READ, big, sizeof(big), &a),
                     SHOAL_ETOOLARGE);
    assert_int_equal(
        wire_key_generate(1, WIRE_ROLE_READ, big, WIRE_PREFIX_MAX, &a),
        SHOAL_OK);
    assert_int_equal(a.prefix_len, WIRE_PREFIX_MAX);
    assert_int_equal(wire_key_generate(UINT32_MAX, WIRE_ROLE_PEER, NULL, 0, &b),
                     SHOAL_OK);
    assert_int_equal(b.id, UINT32_MAX);
    assert_int_equal(b.role, WIRE_ROLE_PEER);
    assert_int_equal(b.prefix_len, 0);
    assert_memory_not_equal(a.secret, b.secret, WIRE_SECRET_BYTES);
}

/* ---- key files ------------------------------------------------------------
 */

static wire_keyring *
parse_ok(const char *text)
{
    wire_keyring *kr = NULL;
    char err[256];
    shoal_err rc =
        wire_keyring_parse(text, strlen(text), &kr, err, sizeof(err));
    if (rc != SHOAL_OK)
        fail_msg("parse failed: %s: %s", shoal_errname(rc), err);
    return kr;
}

static void
test_wire_keyfile_good(void **state)
{
    (void) state;
    char text[2048];
    snprintf(text, sizeof(text),
             "# Shoal key file\n"
             "\n"
             "key id=7 role=write prefix=6170703a secret=%s\n"
             "   \t  \n"
             "  key\tid=3  role=read secret=%s   # trailing comment\r\n"
             "key secret=%s role=admin id=4294967295 prefix=\n"
             "# last line without newline next\n"
             "key id=12 role=peer secret=%s",
             SECRET_A, SECRET_A,
             "FFEEDDCCBBAA99887766554433221100"
             "FFEEDDCCBBAA99887766554433221100",
             SECRET_A);
    wire_keyring *kr = parse_ok(text);
    assert_int_equal(wire_keyring_count(kr), 4);
    const wire_key *k = wire_keyring_at(kr, 0);
    assert_int_equal(k->id, 7);
    assert_int_equal(k->role, WIRE_ROLE_WRITE);
    assert_int_equal(k->prefix_len, 4);
    assert_memory_equal(k->prefix, "app:", 4);
    for (int i = 0; i < 32; i++)
        assert_int_equal(k->secret[i], i);
    k = wire_keyring_at(kr, 1);
    assert_int_equal(k->id, 3);
    assert_int_equal(k->role, WIRE_ROLE_READ);
    assert_int_equal(k->prefix_len, 0);
    k = wire_keyring_at(kr, 2);
    assert_int_equal(k->id, UINT32_MAX);
    assert_int_equal(k->role, WIRE_ROLE_ADMIN);
    assert_int_equal(k->secret[0], 0xff);
    assert_int_equal(k->secret[31], 0x00);
    assert_int_equal(wire_keyring_at(kr, 3)->role, WIRE_ROLE_PEER);
    assert_null(wire_keyring_at(kr, 4));
    assert_ptr_equal(wire_keyring_find(kr, 7), wire_keyring_at(kr, 0));
    assert_ptr_equal(wire_keyring_find(kr, 3), wire_keyring_at(kr, 1));
    assert_ptr_equal(wire_keyring_find(kr, UINT32_MAX), wire_keyring_at(kr, 2));
    assert_ptr_equal(wire_keyring_find(kr, 12), wire_keyring_at(kr, 3));
    assert_null(wire_keyring_find(kr, 0));
    assert_null(wire_keyring_find(kr, 8));
    assert_null(wire_keyring_find(kr, 1));
    wire_keyring_free(kr);
    wire_keyring_free(NULL);
}

/* tmpl with every "S!" replaced by "secret=<64 hex>" and "P!" by 512 hex
 * characters (a 256-byte prefix). */
static void
expand(char *out, size_t cap, const char *tmpl)
{
    size_t o = 0;
    for (const char *t = tmpl; *t != '\0' && o + 1 < cap; t++) {
        const char *add = NULL;
        char pre[513];
        if (t[0] == 'S' && t[1] == '!') {
            add = "secret=";
        } else if (t[0] == 'P' && t[1] == '!') {
            memset(pre, 'a', 512);
            pre[512] = '\0';
            add = pre;
        }
        if (add == NULL) {
            out[o++] = *t;
            continue;
        }
        o += (size_t) snprintf(out + o, cap - o, "%s%s", add,
                               add[0] == 's' ? SECRET_A : "");
        t++;
    }
    out[o] = '\0';
}

/* Each bad line, alone after a good one, gives EINVAL and "line 2: ..." with
 * the expected words. */
static void
test_wire_keyfile_bad_lines(void **state)
{
    (void) state;
    struct {
        const char *line;
        const char *want;
    } bad[] = {
        {"key id=0 role=read S!", "id must be"},
        {"key id=4294967296 role=read S!", "id must be"},
        {"key id=-1 role=read S!", "id must be"},
        {"key id=+1 role=read S!", "id must be"},
        {"key id=1x role=read S!", "id must be"},
        {"key id= role=read S!", "id must be"},
        {"key id=00000000001 role=read S!", "id must be"},
        {"key role=read S!", "missing id"},
        {"key id=1 S!", "missing role"},
        {"key id=1 role=read", "missing secret"},
        {"key", "missing id"},
        {"key id=1 role=read # S!", "missing secret"},
        {"key id=1 role=root S!", "role must be"},
        {"key id=1 role=READ S!", "role must be"},
        {"key id=1 role= S!", "role must be"},
        {"key id=1 role=read S!a", "secret must be"},
        {"key id=1 role=read secret=00", "secret must be"},
        {"key id=1 role=read secret=zz0102030405060708090a0b0c0d0e0f1011121314"
         "15161718191a1b1c1d1e1f",
         "secret must be"},
        {"key id=1 role=read secret=", "secret must be"},
        {"key id=1 role=read prefix=abc S!", "prefix must be"},
        {"key id=1 role=read prefix=zz S!", "prefix must be"},
        {"key id=1 role=read prefix=P! S!", "prefix must be"},
        {"key id=1 role=read color=blue S!", "unknown field 'color'"},
        {"key id=1 role=read =x S!", "unknown field ''"},
        {"key id=1 role=read orphan S!", "'orphan' is not name=value"},
        {"key id=1 id=2 role=read S!", "field 'id' given twice"},
        {"key id=1 role=read role=read S!", "field 'role' given twice"},
        {"key id=1 role=read S! S!", "field 'secret' given twice"},
        {"keys id=1 role=read S!", "expected 'key'"},
        {"id=1 role=read S!", "expected 'key'"},
        {"KEY id=1 role=read S!", "expected 'key'"},
        {"key id=1 role=read \x01 S!", "control character 0x01"},
        {"key id=1 role=read \x7f S!", "control character 0x7f"},
        {"key id=1 role=read \x1b[2J S!", "control character 0x1b"},
    };
    char tmpl[1024], text[2048], err[256];
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        snprintf(tmpl, sizeof(tmpl), "key id=99 role=read S!\n%s\n",
                 bad[i].line);
        expand(text, sizeof(text), tmpl);
        wire_keyring *kr = (wire_keyring *) 1;
        shoal_err rc =
            wire_keyring_parse(text, strlen(text), &kr, err, sizeof(err));
        if (rc != SHOAL_EINVAL || kr != NULL ||
            strncmp(err, "line 2: ", 8) != 0 || !strstr(err, bad[i].want))
            fail_msg("case %zu (%s): %s, err '%s'", i, bad[i].line,
                     shoal_errname(rc), err);
        /* Same with no room for a message, and with a tiny one. */
        assert_int_equal(wire_keyring_parse(text, strlen(text), &kr, NULL, 0),
                         SHOAL_EINVAL);
        assert_int_equal(wire_keyring_parse(text, strlen(text), &kr, err, 5),
                         SHOAL_EINVAL);
        assert_int_equal(strlen(err), 4);
    }
    /* A NUL byte inside a line. */
    expand(text, sizeof(text), "key id=1 role=read S!\n");
    size_t n = strlen(text);
    text[3] = '\0';
    wire_keyring *kr;
    assert_int_equal(wire_keyring_parse(text, n, &kr, err, sizeof(err)),
                     SHOAL_EINVAL);
    assert_string_equal(err, "line 1: control character 0x00");
}

static void
test_wire_keyfile_duplicates_and_empty(void **state)
{
    (void) state;
    char text[1024], err[256];
    wire_keyring *kr;
    snprintf(text, sizeof(text),
             "key id=7 role=read secret=%s\n"
             "key id=8 role=read secret=%s\n"
             "# gap\n"
             "key id=8 role=write secret=%s\n"
             "key id=7 role=write secret=%s\n",
             SECRET_A, SECRET_A, SECRET_A, SECRET_A);
    assert_int_equal(
        wire_keyring_parse(text, strlen(text), &kr, err, sizeof(err)),
        SHOAL_EINVAL);
    assert_null(kr);
    assert_string_equal(err, "line 4: duplicate key id 8 (also on line 2)");
    static const char *empties[] = {"", "\n\n", "# only\n  # comments\n",
                                    "   \t \r\n"};
    for (size_t i = 0; i < 4; i++) {
        assert_int_equal(wire_keyring_parse(empties[i], strlen(empties[i]), &kr,
                                            err, sizeof(err)),
                         SHOAL_EINVAL);
        assert_non_null(strstr(err, "no keys"));
    }
    assert_int_equal(wire_keyring_parse(NULL, 0, &kr, err, sizeof(err)),
                     SHOAL_EINVAL);
    assert_int_equal(wire_keyring_parse(NULL, 5, &kr, err, sizeof(err)),
                     SHOAL_EINVAL);
}

/* wire_key_format writes what the parser reads: many keys of every role,
 * with and without prefixes up to the maximum, through one file. */
static void
test_wire_keyfile_format_roundtrip(void **state)
{
    (void) state;
    enum { N = 300 };
    uint64_t rs = tu_seed("keyfile roundtrip");
    static wire_key keys[N];
    size_t cap = (size_t) N * WIRE_KEY_LINE_MAX, used = 0;
    char *text = malloc(cap);
    for (int i = 0; i < N; i++) {
        uint8_t prefix[WIRE_PREFIX_MAX];
        size_t plen = i == 0 ? WIRE_PREFIX_MAX : tu_rand(&rs) % 12;
        for (size_t j = 0; j < plen; j++)
            prefix[j] = (uint8_t) tu_rand(&rs);
        uint32_t id = i == 1 ? UINT32_MAX : (uint32_t) i * 7919u + 1u;
        wire_role role = (wire_role) (1 + i % 4);
        assert_int_equal(wire_key_generate(id, role, prefix, plen, &keys[i]),
                         SHOAL_OK);
        assert_int_equal(wire_key_format(&keys[i], text + used, cap - used),
                         SHOAL_OK);
        size_t n = strlen(text + used);
        assert_true(n < WIRE_KEY_LINE_MAX);
        assert_int_equal(text[used + n - 1], '\n');
        used += n;
    }
    wire_keyring *kr = parse_ok(text);
    assert_int_equal(wire_keyring_count(kr), N);
    for (int i = 0; i < N; i++) {
        const wire_key *k = wire_keyring_find(kr, keys[i].id);
        assert_ptr_equal(k, wire_keyring_at(kr, (size_t) i));
        assert_int_equal(k->role, keys[i].role);
        assert_int_equal(k->prefix_len, keys[i].prefix_len);
        assert_memory_equal(k->prefix, keys[i].prefix, k->prefix_len);
        assert_memory_equal(k->secret, keys[i].secret, WIRE_SECRET_BYTES);
    }
    wire_keyring_free(kr);
    free(text);
}

static void
test_wire_key_format_small_buffer(void **state)
{
    (void) state;
    wire_key k;
    uint8_t prefix[WIRE_PREFIX_MAX];
    memset(prefix, 0xab, sizeof(prefix));
    assert_int_equal(
        wire_key_generate(4000000000u, WIRE_ROLE_ADMIN, prefix, 255, &k),
        SHOAL_OK);
    char full[WIRE_KEY_LINE_MAX], buf[WIRE_KEY_LINE_MAX];
    assert_int_equal(wire_key_format(&k, full, sizeof(full)), SHOAL_OK);
    size_t need = strlen(full) + 1;
    for (size_t cap = 0; cap < need; cap++) {
        memset(buf, 'x', sizeof(buf));
        assert_int_equal(wire_key_format(&k, buf, cap), SHOAL_ETOOLARGE);
        for (size_t i = 0; i < cap; i++) /* no partial secret left */
            assert_int_equal(buf[i], 0);
    }
    assert_int_equal(wire_key_format(&k, buf, need), SHOAL_OK);
    assert_string_equal(buf, full);
    wire_key bad = k;
    bad.role = (wire_role) 0;
    assert_int_equal(wire_key_format(&bad, buf, sizeof(buf)), SHOAL_EINVAL);
    bad = k;
    bad.id = 0;
    assert_int_equal(wire_key_format(&bad, buf, sizeof(buf)), SHOAL_EINVAL);
}

static void
test_wire_keyring_parse_enomem(void **state)
{
    (void) state;
    char text[4096];
    size_t used = 0;
    for (int i = 0; i < 9; i++) /* enough to grow the array twice */
        used += (size_t) snprintf(text + used, sizeof(text) - used,
                                  "key id=%d role=read secret=%s\n", i + 1,
                                  SECRET_A);
    wire_keyring *kr = NULL;
    shoal_err rc = SHOAL_ENOMEM;
    char err[128];
    for (long n = 1; rc == SHOAL_ENOMEM; n++) {
        mem_fail_set(n, 0);
        rc = wire_keyring_parse(text, used, &kr, err, sizeof(err));
        mem_fail_set(0, 0);
        assert_true(rc == SHOAL_OK || (rc == SHOAL_ENOMEM && kr == NULL));
    }
    assert_int_equal(wire_keyring_count(kr), 9);
    wire_keyring_free(kr);
}

static char *
write_file(const char *dir, const char *name, const char *text, mode_t mode)
{
    size_t n = strlen(dir) + strlen(name) + 2;
    char *path = malloc(n);
    snprintf(path, n, "%s/%s", dir, name);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t) strlen(text));
    close(fd);
    assert_int_equal(chmod(path, mode), 0);
    return path;
}

static void
test_wire_keyfile_load(void **state)
{
    const char *dir = *state;
    char text[512], err[512];
    snprintf(text, sizeof(text), "key id=5 role=admin secret=%s\n", SECRET_A);
    wire_keyring *kr;
    char *path = write_file(dir, "keys", text, 0600);
    assert_int_equal(wire_keyring_load(path, &kr, err, sizeof(err)), SHOAL_OK);
    assert_int_equal(wire_keyring_find(kr, 5)->role, WIRE_ROLE_ADMIN);
    wire_keyring_free(kr);
    assert_int_equal(chmod(path, 0400), 0);
    assert_int_equal(wire_keyring_load(path, &kr, err, sizeof(err)), SHOAL_OK);
    wire_keyring_free(kr);

    static const mode_t bad_modes[] = {0644, 0640, 0604, 0660, 0602, 0610};
    for (size_t i = 0; i < sizeof(bad_modes) / sizeof(bad_modes[0]); i++) {
        assert_int_equal(chmod(path, bad_modes[i]), 0);
        kr = (wire_keyring *) 1;
        assert_int_equal(wire_keyring_load(path, &kr, err, sizeof(err)),
                         SHOAL_EPERM);
        assert_null(kr);
        assert_non_null(strstr(err, path));
        assert_non_null(strstr(err, "chmod 600"));
    }
    assert_int_equal(chmod(path, 0644), 0);
    assert_int_equal(wire_keyring_load(path, &kr, err, sizeof(err)),
                     SHOAL_EPERM);
    assert_non_null(strstr(err, "mode 0644"));
    free(path);

    /* A parse error names the file and the line. */
    path = write_file(dir, "bad", "# x\nkey id=1 role=god\n", 0600);
    assert_int_equal(wire_keyring_load(path, &kr, err, sizeof(err)),
                     SHOAL_EINVAL);
    assert_non_null(strstr(err, path));
    assert_non_null(strstr(err, ": line 2: role must be"));
    free(path);

    /* Missing file; a directory. */
    char missing[512];
    snprintf(missing, sizeof(missing), "%s/nope", dir);
    assert_int_equal(wire_keyring_load(missing, &kr, err, sizeof(err)),
                     SHOAL_EIO);
    assert_non_null(strstr(err, "nope"));
    assert_int_equal(wire_keyring_load(dir, &kr, err, sizeof(err)),
                     SHOAL_EPERM);
    assert_non_null(strstr(err, "not a regular file"));
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_wire_seal_open_roundtrip),
        cmocka_unit_test(test_wire_seal_checks_args),
        cmocka_unit_test(test_wire_sender_ids_and_counter),
        cmocka_unit_test(test_wire_every_bit_flip_rejected),
        cmocka_unit_test(test_wire_wrong_key),
        cmocka_unit_test(test_wire_truncated_never_crash),
        cmocka_unit_test(test_wire_plain_frames),
        cmocka_unit_test(test_wire_header_checks),
        cmocka_unit_test(test_wire_error_frames),
        cmocka_unit_test(test_wire_replay_same_frame_twice),
        cmocka_unit_test(test_wire_replay_out_of_order_window),
        cmocka_unit_test(test_wire_replay_matches_model),
        cmocka_unit_test(test_wire_replay_time_bounds),
        cmocka_unit_test(test_wire_replay_eviction),
        cmocka_unit_test(test_wire_replay_floor_per_key),
        cmocka_unit_test(test_wire_replay_concurrent),
        cmocka_unit_test(test_wire_replay_sealed_frames),
        cmocka_unit_test(test_wire_replay_open_enomem),
        cmocka_unit_test(test_wire_role_allows_matrix),
        cmocka_unit_test(test_wire_key_covers),
        cmocka_unit_test(test_wire_key_generate),
        cmocka_unit_test(test_wire_keyfile_good),
        cmocka_unit_test(test_wire_keyfile_bad_lines),
        cmocka_unit_test(test_wire_keyfile_duplicates_and_empty),
        cmocka_unit_test(test_wire_keyfile_format_roundtrip),
        cmocka_unit_test(test_wire_key_format_small_buffer),
        cmocka_unit_test(test_wire_keyring_parse_enomem),
        cmocka_unit_test_setup_teardown(test_wire_keyfile_load, tu_tmpdir_up,
                                        tu_tmpdir_down),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
