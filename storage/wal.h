/*
 * wal.h -- the node's write-ahead log: one log for all shards, in segments,
 * appended by one writer thread with group commit.
 *
 * Segment file "wal-<seq:016x>.log", format version 2 (version 1 files,
 * which had no frontier slots, are refused with SHOAL_ECORRUPT):
 *   header (WAL_SEG_HDR = 64 bytes):
 *     0  "SHOALWAL" | u32 version (2) | u32 header_len (64) | u64 seq |
 *        u32 reserved (0) | u32 crc32(bytes 0..27)
 *     32 frontier slot A, 48 frontier slot B (WAL_SLOT_LEN = 16 bytes each):
 *        u64 frontier | u32 generation | u32 crc
 *        crc = crc32 over the segment's u64 seq (little-endian), then the
 *        slot's first 12 bytes, so a slot copied from another segment does
 *        not validate. Odd generations live in slot A, even ones in B; 0
 *        (all zeros, as preallocated) is no claim.
 *   records, back to back from offset 64, then zeros (segments are
 *   preallocated).
 * Record (DESIGN §7), little-endian, WAL_REC_HDR = 23 bytes of header:
 *   u32 len (payload bytes) | u32 crc32 | u8 type | u16 shard |
 *   u32 shard_epoch | u64 lsn | payload
 *   crc = zlib crc32 over type..payload (everything after the crc field).
 *
 * Durable frontier: a valid slot claiming F says "an fdatasync covering
 * bytes [0, F) of this segment returned"; it is written only after that
 * fdatasync, so it is true even if the slot write itself never reached the
 * disk. The segment's frontier is the largest valid claim (64 if none).
 * The writer claims with the batch after an fdatasync, at most once per
 * WAL_CLAIM_NS, and claims a segment's end when it finishes or closes it.
 * Recovery: a segment that is not the newest must end with a
 * WAL_REC_SEG_END record, and any bad record in it is corruption. In the
 * newest, the first bad or short record at offset X is corruption
 * (SHOAL_ECORRUPT, logged with file and offset) if X < F -- acknowledged
 * data was damaged, and is never silently cut -- and otherwise a torn tail,
 * cut at X whatever follows (a SEG_END is written in its place). A file
 * shorter than its frontier was truncated: a record cut by the end of the
 * file is then cut too (logged as lost acknowledged records).
 *
 * WAL_REC_OPS payload: u32 n | n x op, op =
 *   u8 kind (WAL_OP_PUT / WAL_OP_DEL) | u64 expire_at | u32 klen | u32 vlen |
 *   key | value     (DEL carries vlen 0 and expire_at 0)
 * All ops of one record share the record's LSN (their version) and apply
 * atomically: a batch is one record.
 *
 * Tickets: every appended record gets a ticket, the log position just past
 * it (bytes since the log began, across segments); "ticket t is committed"
 * means the record is as durable as the fsync policy promises:
 *   always   -- fdatasync covering it returned (group commit: concurrent
 *               appenders share one fdatasync);
 *   interval -- written to the OS; synced within interval_ms;
 *   none     -- in the writer's buffer; written to the OS within ~1 ms and
 *               never synced except at rotation and close.
 * A request can ask for durable (fdatasync) regardless of policy.
 *
 * Failure is sticky (STYLE §4): after a failed write or fsync the log
 * returns SHOAL_EREADONLY to appends and waits until reopened.
 * Running out of disk while preallocating the next segment is not a failure:
 * appends that do not fit get SHOAL_ENOSPC and the log retries later.
 */
#ifndef SHOAL_STORAGE_WAL_H
#define SHOAL_STORAGE_WAL_H

#include "proto/err.h"
#include "storage/fs.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define WAL_REC_HDR     23u
#define WAL_SEG_HDR     64u /* fixed header + two frontier slots */
#define WAL_SEG_SLOTS   32u /* offset of frontier slot A; B follows */
#define WAL_SLOT_LEN    16u
#define WAL_CLAIM_NS    10000000u /* least time between two claims (10 ms) */
#define WAL_REC_OPS     1         /* data: a list of ops */
#define WAL_REC_SEG_END 2         /* end of a finished segment */
#define WAL_OP_PUT      1
#define WAL_OP_DEL      2
#define WAL_OP_HDR      17u /* kind + expire_at + klen + vlen */

typedef struct wal wal;

typedef enum wal_fsync {
    WAL_FSYNC_ALWAYS = 0,
    WAL_FSYNC_INTERVAL = 1,
    WAL_FSYNC_NONE = 2,
} wal_fsync;

/* Parse "always|interval|none"; -1 for anything else. */
int wal_fsync_parse(const char *s);
const char *wal_fsync_name(wal_fsync f);

typedef struct wal_rec {
    uint8_t type;
    uint16_t shard;
    uint32_t shard_epoch;
    uint64_t lsn;
    const uint8_t *payload; /* borrowed: valid during the callback only */
    uint32_t len;           /* payload bytes */
} wal_rec;

typedef struct wal_op {
    uint8_t kind; /* WAL_OP_PUT or WAL_OP_DEL */
    uint64_t expire_at;
    const uint8_t *key;
    uint32_t klen;
    const uint8_t *val;
    uint32_t vlen;
} wal_op;

/* --- pure codec (no I/O; fuzzed) --------------------------------------- */

/* Bytes the payload of these ops takes. */
size_t wal_ops_size(const wal_op *ops, size_t n);

/* Encode ops into out (wal_ops_size bytes). */
void wal_ops_encode(const wal_op *ops, size_t n, uint8_t *out);

/* Decode the op at *pos of a WAL_REC_OPS payload and advance *pos; *n_out of
 * wal_ops_count tells how many there are. Views point into payload.
 * SHOAL_ECORRUPT if the bytes do not form an op. */
shoal_err wal_ops_count(const uint8_t *payload, size_t len, uint32_t *n_out,
                        size_t *pos_out);
shoal_err wal_ops_next(const uint8_t *payload, size_t len, size_t *pos,
                       wal_op *op);

/* Encode a record header + payload into out (WAL_REC_HDR + r->len bytes). */
void wal_rec_encode(const wal_rec *r, uint8_t *out);

/* Decode the record at the start of buf (avail bytes). SHOAL_OK fills r
 * (payload points into buf) and *used; SHOAL_EINVAL when avail is too short
 * for the record its header announces (maybe torn); SHOAL_ECORRUPT when the
 * crc or a field is wrong. max_len bounds the payload length accepted. */
shoal_err wal_rec_decode(const uint8_t *buf, size_t avail, size_t max_len,
                         wal_rec *r, size_t *used);

/* --- the log ------------------------------------------------------------ */

typedef struct wal_opts {
    fs *fs;                  /* default fs_posix() */
    const char *dir;         /* existing directory */
    uint64_t segment_bytes;  /* preallocated segment size, default 64 MiB */
    size_t max_record_bytes; /* largest record accepted; <= segment_bytes/2 */
    wal_fsync fsync;         /* default always */
    uint32_t interval_ms;    /* for WAL_FSYNC_INTERVAL, default 100 */
    uint32_t n_shards;       /* shard ids are < n_shards */
} wal_opts;

void wal_opts_default(wal_opts *o);

/* Called for every WAL_REC_OPS record during recovery, in log order; a non-OK
 * return stops recovery and is returned by wal_open. */
typedef shoal_err (*wal_replay_cb)(void *arg, const wal_rec *r);

typedef struct wal_recovery {
    uint64_t segments;   /* segment files read */
    uint64_t records;    /* data records replayed */
    uint64_t bytes;      /* bytes of valid records */
    uint64_t torn_bytes; /* bytes cut from the tail (0: clean) */
} wal_recovery;

/* Recover the log in o->dir (replaying every data record through cb), cut a
 * torn tail (whatever lies beyond the newest segment's durable frontier),
 * then start the writer thread on a fresh segment. *info may be NULL.
 * SHOAL_ECORRUPT (a bad record inside the durable region or in a finished
 * segment, a bad or version 1 header; file and offset logged),
 * SHOAL_EINVAL (bad options), SHOAL_EIO, SHOAL_ENOSPC, SHOAL_ENOMEM, or
 * whatever cb returned. On failure nothing runs and *out is NULL. */
shoal_err wal_open(const wal_opts *o, wal_replay_cb cb, void *arg, wal **out,
                   wal_recovery *info);

/* Flush and sync everything appended, stop the writer, free (NULL ok).
 * Waiters and callbacks still pending are completed first. */
void wal_close(wal *w);

/* Append one WAL_REC_OPS record. Only buffers: never waits for the disk.
 * The caller orders appends of one shard (holds the shard's lock), so a
 * shard's records reach the log in LSN order. *ticket_out identifies it for
 * wal_wait/wal_notify. SHOAL_ETOOLARGE (record over max_record_bytes),
 * SHOAL_ENOSPC (no preallocated room left; nothing appended),
 * SHOAL_EREADONLY (after a failure), SHOAL_ECLOSED, SHOAL_ENOMEM. */
shoal_err wal_append(wal *w, uint16_t shard, uint32_t shard_epoch, uint64_t lsn,
                     const wal_op *ops, size_t n, uint64_t *ticket_out);

/* Block until ticket is committed (durable: until fdatasync covers it,
 * whatever the policy). SHOAL_OK, or the sticky error (SHOAL_EIO /
 * SHOAL_ENOSPC) if the log failed before it was committed. */
shoal_err wal_wait(wal *w, uint64_t ticket, bool durable);

typedef void (*wal_done_cb)(void *arg, shoal_err rc);

/* Call cb(arg, rc) exactly once when ticket is committed (rc == SHOAL_OK) or
 * the log failed first. If it is already committed, cb runs before this
 * returns; otherwise on the writer thread, which must not be blocked by cb.
 * Returns SHOAL_ENOMEM without calling cb. */
shoal_err wal_notify(wal *w, uint64_t ticket, bool durable, wal_done_cb cb,
                     void *arg);

/* Highest ticket handed out so far (0 if none). */
uint64_t wal_last_ticket(wal *w);

/* Whether ticket is committed under the policy. */
bool wal_is_committed(wal *w, uint64_t ticket);

/* Delete finished segments none of whose records is still needed:
 * a segment is needed while, for some shard s, it holds a record with
 * lsn > keep_lsn[s] (keep_lsn has n_shards elements). Returns the number of
 * segments deleted via *n_deleted (may be NULL). */
shoal_err wal_gc(wal *w, const uint64_t *keep_lsn, unsigned *n_deleted);

typedef struct wal_stats {
    uint64_t records; /* appended since open */
    uint64_t bytes;   /* appended since open */
    uint64_t fsyncs;  /* fdatasync calls */
    uint64_t batches; /* writer batches (group commits) */
    uint64_t max_batch_records;
    uint64_t segments; /* segment files present */
    uint64_t segments_deleted;
    uint64_t durable_ticket; /* everything up to here is fsynced */
    shoal_err failed;        /* sticky error, SHOAL_OK when healthy */
} wal_stats;

void wal_get_stats(wal *w, wal_stats *out);

#endif
