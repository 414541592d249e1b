/*
 * fuzz_frame.c -- libFuzzer target for the frame decoders (TESTING G7,
 * DESIGN §8: a frame from the network is hostile).
 *
 * Every input, as raw bytes: wire_parse_hdr, wire_open_plain,
 * wire_error_status and wire_open under a fixed test key (id 1). Whatever
 * they accept must be self-consistent (body inside the frame, a known
 * status).
 *
 * The first byte then selects more:
 *   bit 0  seal-and-tamper: the rest is u16 position | u8 xor | body. The
 *          body is sealed under the test key (flags from the xor byte's
 *          RESPONSE/PEER bits), must open back to itself, and then one byte
 *          at position % frame length is xor-ed (0 becomes 1): the tampered
 *          frame must be refused by wire_open and wire_open_plain.
 *   bit 1  replay: the rest is records of u8 key_id | 24-byte nonce, fed to
 *          a replay window of 4 senders with now = the first record's time.
 *          No record (key id and nonce) may be accepted twice, and nothing
 *          accepted may be outside the time window.
 *   bit 2  error frame: a status from the next byte through
 *          wire_error_frame and back.
 *
 * The seed corpus is tests/fuzz/corpus/frame (sealed under the same key).
 */
#include "proto/bytes.h"
#include "proto/clock.h"
#include "proto/wire.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define FUZZ_NOW    1700000000000ull /* fixed clock: reproducible nonces */
#define MAX_BODY    (1u << 16)
#define REC_BYTES   25u
#define WINDOW_MS   1000u
#define MAX_RECORDS 256u

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static wire_key test_key;
static wire_sender sender;

static uint64_t
fixed_now(void *arg)
{
    (void) arg;
    return FUZZ_NOW;
}

static void
setup(void)
{
    static bool done;
    if (done)
        return;
    done = true;
    memset(&test_key, 0, sizeof(test_key));
    test_key.id = 1;
    test_key.role = WIRE_ROLE_WRITE;
    for (int i = 0; i < WIRE_SECRET_BYTES; i++)
        test_key.secret[i] = (uint8_t) i;
    wire_sender_init(&sender);
    memset(sender.id, 0x5e, sizeof(sender.id));
    clock_set_source(fixed_now, NULL);
}

static void
raw_checks(const uint8_t *data, size_t size)
{
    uint8_t *f = malloc(size == 0 ? 1 : size);
    if (f == NULL)
        return;
    if (size > 0)
        memcpy(f, data, size);
    wire_hdr h;
    const uint8_t *body;
    size_t blen = 0;
    shoal_err st;
    bool hdr_ok = wire_parse_hdr(f, size, &h) == SHOAL_OK;
    if (wire_open_plain(f, size, &body, &blen) == SHOAL_OK &&
        (!hdr_ok || body != f + WIRE_HDR_BYTES ||
         blen != size - WIRE_HDR_BYTES || !(h.flags & WIRE_F_PLAIN)))
        abort();
    if (wire_error_status(f, size, &st) == SHOAL_OK &&
        (!hdr_ok || st <= SHOAL_OK || st > SHOAL_EREADONLY || size != 36))
        abort();
    shoal_err rc = wire_open(&test_key, f, size, &blen);
    if (rc == SHOAL_OK &&
        (!hdr_ok || blen != size - WIRE_HDR_BYTES - WIRE_TAG_BYTES))
        abort();
    if (rc != SHOAL_OK && rc != SHOAL_EAUTH && rc != SHOAL_EINVAL)
        abort();
    if (!hdr_ok && rc != SHOAL_EINVAL)
        abort();
    free(f);
}

static void
seal_and_tamper(const uint8_t *p, size_t n)
{
    if (n < 3)
        return;
    size_t pos = get_u16(p);
    uint8_t x = p[2] == 0 ? 1 : p[2];
    const uint8_t *body = p + 3;
    size_t blen = n - 3 > MAX_BODY ? MAX_BODY : n - 3, olen = 0, len = 0;
    size_t cap = wire_frame_len(blen, true);
    uint8_t *f = malloc(cap), *g = malloc(cap);
    if (f == NULL || g == NULL)
        abort();
    uint8_t flags = (uint8_t) (x & (WIRE_F_RESPONSE | WIRE_F_PEER));
    atomic_store(&sender.counter, 1);
    if (wire_seal(&sender, &test_key, flags, body, blen, f, cap, &len, NULL) !=
            SHOAL_OK ||
        len != cap)
        abort();
    memcpy(g, f, len);
    if (wire_open(&test_key, g, len, &olen) != SHOAL_OK || olen != blen ||
        memcmp(g + WIRE_HDR_BYTES, body, blen) != 0)
        abort();
    f[pos % len] ^= x;
    const uint8_t *pb;
    if (wire_open(&test_key, f, len, &olen) == SHOAL_OK ||
        wire_open_plain(f, len, &pb, &olen) == SHOAL_OK)
        abort();
    free(f);
    free(g);
}

/* The identity of a frame: key id and the whole nonce (a sealed frame's
 * nonce cannot be changed without the key, so a replay repeats all of it). */
static bool
same_frame(const uint8_t *a, const uint8_t *b)
{
    return memcmp(a, b, REC_BYTES) == 0;
}

static void
replay_run(const uint8_t *p, size_t n)
{
    size_t nrec = n / REC_BYTES;
    if (nrec == 0)
        return;
    if (nrec > MAX_RECORDS)
        nrec = MAX_RECORDS;
    wire_replay *r;
    if (wire_replay_open(4, WINDOW_MS, &r) != SHOAL_OK)
        abort();
    static const uint8_t *accepted[MAX_RECORDS];
    size_t n_acc = 0;
    uint64_t now = get_u64(p + 1 + 16);
    for (size_t i = 0; i < nrec; i++) {
        const uint8_t *rec = p + i * REC_BYTES;
        wire_hdr h;
        memset(&h, 0, sizeof(h));
        h.version = WIRE_VERSION;
        h.key_id = rec[0];
        memcpy(h.nonce, rec + 1, WIRE_NONCE_BYTES);
        if (wire_replay_check(r, &h, now) != SHOAL_OK)
            continue;
        uint64_t ts = get_u64(rec + 1 + 16);
        if ((ts > now ? ts - now : now - ts) > WINDOW_MS)
            abort();
        for (size_t j = 0; j < n_acc; j++)
            if (same_frame(accepted[j], rec))
                abort(); /* a replay got through */
        accepted[n_acc++] = rec;
    }
    if (wire_replay_refused(r) != nrec - n_acc)
        abort();
    wire_replay_close(r);
}

static void
error_roundtrip(const uint8_t *p, size_t n)
{
    if (n < 1)
        return;
    uint8_t f[40];
    size_t len = 0;
    shoal_err st = SHOAL_OK, want = (shoal_err) p[0];
    shoal_err rc = wire_error_frame(want, f, sizeof(f), &len);
    if ((rc == SHOAL_OK) != (p[0] >= 1 && p[0] <= SHOAL_EREADONLY))
        abort();
    if (rc == SHOAL_OK &&
        (wire_error_status(f, len, &st) != SHOAL_OK || st != want))
        abort();
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    setup();
    raw_checks(data, size);
    if (size < 1)
        return 0;
    if (data[0] & 1)
        seal_and_tamper(data + 1, size - 1);
    if (data[0] & 2)
        replay_run(data + 1, size - 1);
    if (data[0] & 4)
        error_roundtrip(data + 1, size - 1);
    return 0;
}
