/*
 * wire.h -- frames, sealing, keys and the replay window (DESIGN §8).
 *
 * A frame is
 *
 *   "SH" | u8 version | u8 flags | u32 key_id (LE) | 24-byte nonce | body
 *
 * The 32-byte header is the associated data; the body is sealed with
 * XChaCha20-Poly1305-IETF (libsodium) under the secret of key_id and carries
 * a 16-byte tag at its end. With WIRE_F_PLAIN the body is plaintext and
 * key_id is 0: only a node started with --insecure accepts or sends those.
 *
 * Nonce layout (it doubles as the replay-protection identity of a frame):
 *   bytes  0..7   sender id: random per sender (one libshoal handle, one
 *                 node's peer link), fixed for its lifetime
 *   bytes  8..15  counter (LE): rises by one per frame of that sender
 *   bytes 16..23  unix ms (LE) when the frame was sealed
 * A receiver accepts a frame once: its (key_id, sender id, counter) must be
 * new and inside the sender's window, and its time within window_ms of the
 * receiver's clock (so a sender the receiver has forgotten cannot be
 * replayed either).
 *
 * Error frames: a receiver that cannot open a frame answers (if it answers)
 * with a plaintext frame of flags WIRE_F_PLAIN|WIRE_F_RESPONSE|WIRE_F_ERROR
 * whose body is a u32 LE status (proto/err.h). It says nothing else, and a
 * client treats it as unauthenticated advice (a status, never data).
 *
 * Key files are text, one key per line, '#' comments and blank lines
 * ignored:
 *   key id=7 role=write prefix=6170703a secret=<64 hex chars>
 * role is read | write | admin | peer; prefix (hex, optional, may be empty)
 * confines the key to keys beginning with those bytes. A node's key file
 * lists every key it accepts; a client's key file holds its one key (the
 * first line is used).
 */
#ifndef SHOAL_PROTO_WIRE_H
#define SHOAL_PROTO_WIRE_H

#include "proto/err.h"

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define WIRE_VERSION      1
#define WIRE_HDR_BYTES    32
#define WIRE_NONCE_BYTES  24
#define WIRE_TAG_BYTES    16
#define WIRE_SECRET_BYTES 32
#define WIRE_PREFIX_MAX   255 /* key prefix bytes a key may carry */

enum wire_flags {
    WIRE_F_PLAIN = 0x01,    /* body not sealed (--insecure) */
    WIRE_F_RESPONSE = 0x02, /* node -> client; requests have it clear */
    WIRE_F_ERROR = 0x04,    /* body is a u32 LE status only (plaintext) */
    WIRE_F_PEER = 0x08,     /* node <-> node traffic (peer.proto) */
};

typedef enum wire_role {
    WIRE_ROLE_READ = 1,  /* get, ttl, exists, scan, count, map */
    WIRE_ROLE_WRITE = 2, /* read + put, del, incr, batch */
    WIRE_ROLE_ADMIN = 3, /* write + stats and admin operations */
    WIRE_ROLE_PEER = 4,  /* the cluster key: node-to-node only */
} wire_role;

typedef struct wire_key {
    uint32_t id; /* 1..2^32-1; 0 is reserved for plaintext */
    wire_role role;
    uint8_t prefix[WIRE_PREFIX_MAX];
    size_t prefix_len;
    uint8_t secret[WIRE_SECRET_BYTES];
} wire_key;

/* "read", "write", "admin", "peer"; NULL for other values. */
const char *wire_role_name(wire_role r);
/* Parse a role name; SHOAL_EINVAL for anything else. */
shoal_err wire_role_parse(const char *s, wire_role *out);

/* Whether a key with role `have` may do what needs role `need`
 * (read < write < admin; peer only matches peer). */
bool wire_role_allows(wire_role have, wire_role need);

/* Whether key (klen bytes) lies inside k's prefix (always true for an
 * empty prefix). */
bool wire_key_covers(const wire_key *k, const uint8_t *key, size_t klen);

/* A fresh random key with the given id, role and prefix. SHOAL_EINVAL (id 0,
 * bad role), SHOAL_ETOOLARGE (prefix over WIRE_PREFIX_MAX). */
shoal_err wire_key_generate(uint32_t id, wire_role role, const uint8_t *prefix,
                            size_t prefix_len, wire_key *out);

/* Format k as one key-file line with a trailing newline into buf.
 * SHOAL_ETOOLARGE if buf is too small (WIRE_KEY_LINE_MAX bytes always
 * suffice: a 255-byte prefix alone is 510 hex characters). */
#define WIRE_KEY_LINE_MAX 640
shoal_err wire_key_format(const wire_key *k, char *buf, size_t buf_len);

/* ---- key rings ------------------------------------------------------------
 */

typedef struct wire_keyring wire_keyring;

/* Parse key-file text. On a bad line returns SHOAL_EINVAL and writes
 * "line N: what is wrong" into err (may be NULL); duplicate ids and an
 * empty file are errors too. Secrets are wiped on free. */
shoal_err wire_keyring_parse(const char *text, size_t len, wire_keyring **out,
                             char *err, size_t err_len);

/* Read and parse a key file. SHOAL_EIO (cannot read: err says why),
 * SHOAL_EINVAL as above. A key file readable by group or others is refused
 * (SHOAL_EPERM) unless it is a regular file owned by the caller with mode
 * bits & 077 == 0. */
shoal_err wire_keyring_load(const char *path, wire_keyring **out, char *err,
                            size_t err_len);

void wire_keyring_free(wire_keyring *kr);

/* The key with this id, or NULL. The pointer lives as long as kr. */
const wire_key *wire_keyring_find(const wire_keyring *kr, uint32_t id);

/* Number of keys, and the i-th (0-based, file order). */
size_t wire_keyring_count(const wire_keyring *kr);
const wire_key *wire_keyring_at(const wire_keyring *kr, size_t i);

/* ---- frames ---------------------------------------------------------------
 */

/* A sender's nonce source. Thread-safe: the counter is atomic. */
typedef struct wire_sender {
    uint8_t id[8];
    _Atomic uint64_t counter;
} wire_sender;

/* Pick a random sender id and start the counter at 1. */
void wire_sender_init(wire_sender *s);

typedef struct wire_hdr {
    uint8_t version;
    uint8_t flags;
    uint32_t key_id;
    uint8_t nonce[WIRE_NONCE_BYTES];
} wire_hdr;

/* Bytes of a frame whose plaintext body is body_len bytes (sealed: plus the
 * tag; plain: header + body). */
size_t wire_frame_len(size_t body_len, bool sealed);

/* Seal body into out (out_cap >= wire_frame_len(body_len, k != NULL)).
 * k == NULL makes a plaintext frame (key_id 0, WIRE_F_PLAIN added to
 * flags). The frame's nonce is drawn from s and copied to nonce_out (may be
 * NULL). out may not overlap body. SHOAL_ETOOLARGE if out_cap is short;
 * SHOAL_EINVAL for unknown flag bits, WIRE_F_ERROR (see wire_error_frame)
 * or WIRE_F_PLAIN with a key. */
shoal_err wire_seal(wire_sender *s, const wire_key *k, uint8_t flags,
                    const uint8_t *body, size_t body_len, uint8_t *out,
                    size_t out_cap, size_t *out_len,
                    uint8_t nonce_out[WIRE_NONCE_BYTES]);

/* Parse and check a frame's header only: length, magic, version, flags.
 * SHOAL_EINVAL for every malformed header (short, bad magic, unknown flag
 * bits, a version this build does not speak, a sealed frame too short to
 * hold its tag, a plaintext frame with a key id). */
shoal_err wire_parse_hdr(const uint8_t *frame, size_t len, wire_hdr *out);

/* Open a sealed frame in place: on success the plaintext body is at
 * frame + WIRE_HDR_BYTES, *body_len_out bytes long. k must be the key of
 * hdr->key_id (the caller looks it up). SHOAL_EAUTH if the tag does not
 * verify (the frame is then garbage and must be dropped), SHOAL_EINVAL if
 * the header is malformed or the frame is plaintext. A plaintext frame is
 * opened with wire_open_plain instead. */
shoal_err wire_open(const wire_key *k, uint8_t *frame, size_t len,
                    size_t *body_len_out);

/* The body of a WIRE_F_PLAIN frame (no copying). SHOAL_EINVAL if the frame
 * is malformed or not plaintext. */
shoal_err wire_open_plain(const uint8_t *frame, size_t len,
                          const uint8_t **body_out, size_t *body_len_out);

/* Make a plaintext error frame carrying status (WIRE_F_PLAIN|RESPONSE|
 * ERROR, 36 bytes) into out (out_cap >= 36); *out_len set. */
shoal_err wire_error_frame(shoal_err status, uint8_t *out, size_t out_cap,
                           size_t *out_len);

/* The status of an error frame. SHOAL_EINVAL if frame is not one. */
shoal_err wire_error_status(const uint8_t *frame, size_t len,
                            shoal_err *status_out);

/* ---- replay window --------------------------------------------------------
 */

typedef struct wire_replay wire_replay;

/* A replay filter remembering up to max_senders senders (oldest-seen
 * forgotten first), each with a window of the last 1024 counters, and
 * refusing frames whose time is more than window_ms away from now.
 * Thread-safe. SHOAL_EINVAL (0 sizes), SHOAL_ENOMEM. */
shoal_err wire_replay_open(size_t max_senders, uint32_t window_ms,
                           wire_replay **out);
void wire_replay_close(wire_replay *r);

/* Accept or refuse a frame that has already been opened (authenticated):
 * call it only after wire_open succeeded, or forged nonces would poison the
 * window. SHOAL_OK records the frame; SHOAL_EAUTH if it was seen before, is
 * older than the sender's window, or its time is outside window_ms of
 * now_ms; also if it is not newer than the newest frame of every sender
 * of its key forgotten before this sender was (re)learnt (so eviction never
 * opens a replay). */
shoal_err wire_replay_check(wire_replay *r, const wire_hdr *hdr,
                            uint64_t now_ms);

/* Frames refused so far (for metrics). */
uint64_t wire_replay_refused(const wire_replay *r);

#endif
