/*
 * snap.h -- per-shard snapshots: a point-in-time copy of one shard's entries.
 *
 * File "snap-<shard:04x>-<lsn:016x>.snap" in the data dir (DESIGN §7):
 *   header (48 bytes): "SHOALSNP" | u32 version (1) | u32 shard |
 *     u32 shard_epoch | u64 lsn | u64 count | u64 body_len |
 *     u32 crc32(bytes 0..43)
 *   body: body_len bytes, zlib stream of count entries, each
 *     u64 version | u64 expire_at | u32 klen | u32 vlen | key | value
 *     in strictly increasing key order
 *   trailer: u32 crc32 of the body bytes
 * Written to "<name>.tmp", fsynced, renamed, directory fsynced; the last K
 * per shard are kept.
 *
 * The encoder writes through a sink callback and the decoder reads from a
 * buffer, so the same code serves files and (later) replication streams,
 * and both are unit-tested and fuzzed without I/O.
 */
#ifndef SHOAL_STORAGE_SNAP_H
#define SHOAL_STORAGE_SNAP_H

#include "proto/err.h"
#include "storage/fs.h"

#include <stddef.h>
#include <stdint.h>

#define SNAP_HDR 48u

typedef struct snap_meta {
    uint32_t shard;
    uint32_t shard_epoch;
    uint64_t lsn;   /* every write with lsn <= this is in the snapshot */
    uint64_t count; /* entries */
} snap_meta;

typedef struct snap_entry {
    const uint8_t *key; /* borrowed: valid during the callback */
    uint32_t klen;
    const uint8_t *val;
    uint32_t vlen;
    uint64_t version;
    uint64_t expire_at;
} snap_entry;

/* --- encoder -------------------------------------------------------------- */

/* Receives encoded bytes in order; non-OK stops the encoder. */
typedef shoal_err (*snap_sink)(void *arg, const uint8_t *buf, size_t len);

typedef struct snap_enc snap_enc;

/* Start an encoding of m->count entries. The header is emitted by
 * snap_enc_finish (it carries body_len), so a sink that needs it first must
 * buffer, or use snap_write which seeks. SHOAL_ENOMEM. */
shoal_err snap_enc_open(const snap_meta *m, snap_sink sink, void *arg,
                        snap_enc **out);

/* Add the next entry (keys strictly increasing). Sink errors pass through. */
shoal_err snap_enc_add(snap_enc *e, const snap_entry *ent);

/* Flush the body and trailer, then write the header into hdr_out.
 * SHOAL_EINVAL if fewer/more than count entries were added. */
shoal_err snap_enc_finish(snap_enc *e, uint8_t hdr_out[SNAP_HDR]);

void snap_enc_free(snap_enc *e); /* NULL ok */

/* --- decoder (pure) ------------------------------------------------------ */

typedef shoal_err (*snap_entry_cb)(void *arg, const snap_entry *ent);

/* Decode a whole snapshot image, calling cb per entry in order. SHOAL_ECORRUPT
 * for any damage (bad magic, version, crc, zlib error, truncated, unsorted
 * keys, counts that do not match, lengths over max_key/max_value),
 * SHOAL_ENOMEM, or cb's error. Never reads outside buf. */
shoal_err snap_decode(const uint8_t *buf, size_t len, size_t max_key,
                      size_t max_value, snap_meta *meta_out, snap_entry_cb cb,
                      void *arg);

/* --- files ---------------------------------------------------------------- */

typedef struct snap_writer snap_writer;

/* Begin writing the snapshot of m->shard at m->lsn in dir (temp file). */
shoal_err snap_writer_open(fs *f, const char *dir, const snap_meta *m,
                           snap_writer **out);
shoal_err snap_writer_add(snap_writer *w, const snap_entry *ent);

/* Finish: trailer, header, fsync, rename into place, fsync dir. Frees w
 * whatever the outcome; on failure the temp file is removed and no
 * snapshot file changes. SHOAL_EIO, SHOAL_ENOSPC, SHOAL_EINVAL. */
shoal_err snap_writer_commit(snap_writer *w);

/* Abandon: remove the temp file, free (NULL ok). */
void snap_writer_abort(snap_writer *w);

/* Write a complete image (already checked with snap_decode) as the
 * snapshot file of m->shard at m->lsn: temp file, fsync, rename, directory
 * fsync, like snap_writer_commit (a same-named file is replaced). On
 * failure before the rename the temp file is removed and no snapshot file
 * changes. SHOAL_EIO, SHOAL_ENOSPC, SHOAL_EINVAL, SHOAL_ENOMEM. */
shoal_err snap_install(fs *f, const char *dir, const snap_meta *m,
                       const uint8_t *img, size_t len);

/* Remove the snapshot file of shard at lsn (durably). SHOAL_ENOTFOUND. */
shoal_err snap_remove(fs *f, const char *dir, uint32_t shard, uint64_t lsn);

/* Load the newest valid snapshot of shard from dir: a damaged newer file is
 * logged (name and reason) and the next older one tried. Header and body
 * crcs are checked before cb is called for any entry of a file, so a file
 * that fails them never reaches cb; should a file pass its crcs yet fail to
 * decode after cb has seen entries, SHOAL_ECORRUPT is returned (no fallback:
 * the caller discards what cb built). SHOAL_ENOTFOUND if there is none;
 * SHOAL_ECORRUPT if there are snapshots of the shard but none is valid;
 * SHOAL_EIO; cb's error. */
shoal_err snap_load_latest(fs *f, const char *dir, uint32_t shard,
                           size_t max_key, size_t max_value,
                           snap_meta *meta_out, snap_entry_cb cb, void *arg);

/* Remove all but the newest keep snapshots of shard, and any stale *.tmp
 * file of it. */
shoal_err snap_prune(fs *f, const char *dir, uint32_t shard, unsigned keep);

#endif
