/*
 * store_repl.c -- the engine's side of replication (store.h, DESIGN §4):
 * shard epochs and follower flags, WAL retention marks, and whole-shard
 * snapshots exported to and imported from a peer. Applying single records
 * (store_apply) lives with the other writes in store_ops.c.
 *
 * Export: the shard is captured and pinned exactly as for a local snapshot
 * (store.c), under snap_mtx, so writes continue; once the captured state is
 * committed it is encoded into one in-memory image (the snap header needs
 * the body length, so a stream cannot start before the body is done; the
 * image costs the shard's compressed size), the shard is unpinned, and the
 * image is handed to the callback in chunks of at most EXPORT_CHUNK bytes
 * with no lock held.
 *
 * Import: the bytes collect in memory (bounded by begin's max_bytes); finish
 * decodes the whole image into a new index with nothing shared, and only
 * then, holding snap_mtx (so no snapshot or export pins the shard):
 *   1. refuses when the shard's LSN is past the image's (SHOAL_EVERSION);
 *   2. with a data dir, installs the image bytes as the shard's snapshot
 *      file at its LSN (temp file, fsync, rename, dir fsync) -- the newest,
 *      since the shard's own snapshots are at or below its LSN;
 *   3. under the write lock, checks the LSN again (a record applied
 *      meanwhile undoes step 2) and swaps the index, LSN, epoch, snap_lsn
 *      and committed_lsn.
 * A restart then loads that snapshot; the shard's older WAL records are at
 * or below its LSN and are skipped as covered, and records applied after
 * the import follow it without a gap.
 *
 * Epoch and follower marks are not logged: the cluster sets them again from
 * its map after a restart (an epoch also travels in every record and
 * snapshot).
 */
#include "storage/store_int.h"

#include "proto/mem.h"
#include "proto/slog.h"

#include <inttypes.h>
#include <string.h>

#define EXPORT_CHUNK (1u << 20) /* largest chunk handed to the callback */

static shoal_err
shard_check(store *s, uint32_t shard_id)
{
    if (atomic_load(&s->closing))
        return SHOAL_ECLOSED;
    return shard_id >= s->o.n_shards ? SHOAL_EINVAL : SHOAL_OK;
}

static void
free_entry_cb(void *arg, entry *e)
{
    store_entry_free(arg, e);
}

/* ---- marks --------------------------------------------------------------- */

shoal_err
store_set_shard_epoch(store *s, uint32_t shard_id, uint32_t shard_epoch)
{
    shoal_err rc = shard_check(s, shard_id);
    if (rc != SHOAL_OK)
        return rc;
    shard *sh = &s->shards[shard_id];
    pthread_rwlock_wrlock(&sh->lock);
    if (shard_epoch > sh->epoch)
        sh->epoch = shard_epoch;
    pthread_rwlock_unlock(&sh->lock);
    return SHOAL_OK;
}

shoal_err
store_set_follower(store *s, uint32_t shard_id, bool follower)
{
    shoal_err rc = shard_check(s, shard_id);
    if (rc != SHOAL_OK)
        return rc;
    shard *sh = &s->shards[shard_id];
    pthread_rwlock_wrlock(&sh->lock);
    sh->follower = follower;
    pthread_rwlock_unlock(&sh->lock);
    return SHOAL_OK;
}

shoal_err
store_set_retain_lsn(store *s, uint32_t shard_id, uint64_t lsn)
{
    shoal_err rc = shard_check(s, shard_id);
    if (rc != SHOAL_OK)
        return rc;
    atomic_store(&s->shards[shard_id].retain_lsn, lsn);
    return SHOAL_OK;
}

/* ---- export -------------------------------------------------------------- */

typedef struct membuf {
    uint8_t *p;
    size_t len;
    size_t cap;
} membuf;

static shoal_err
membuf_put(void *arg, const uint8_t *buf, size_t len)
{
    membuf *b = arg;
    if (len > SIZE_MAX / 2 - b->len)
        return SHOAL_ENOMEM;
    if (b->len + len > b->cap) {
        size_t cap = b->cap ? b->cap : 64u << 10;
        while (cap < b->len + len)
            cap *= 2;
        uint8_t *p = mem_realloc(b->p, cap);
        if (p == NULL)
            return SHOAL_ENOMEM;
        b->p = p;
        b->cap = cap;
    }
    if (len > 0)
        memcpy(b->p + b->len, buf, len);
    b->len += len;
    return SHOAL_OK;
}

/* Encode the captured entries as a whole image: header, body, trailer. */
static shoal_err
encode_image(const snap_meta *m, entry **ents, membuf *img)
{
    static const uint8_t zero[SNAP_HDR];
    uint8_t hdr[SNAP_HDR];
    snap_enc *enc = NULL;
    shoal_err rc = membuf_put(img, zero, SNAP_HDR);
    if (rc == SHOAL_OK)
        rc = snap_enc_open(m, membuf_put, img, &enc);
    for (uint64_t i = 0; rc == SHOAL_OK && i < m->count; i++) {
        const entry *e = ents[i];
        snap_entry se = {.key = entry_key(e),
                         .klen = e->klen,
                         .val = entry_val(e),
                         .vlen = e->vlen,
                         .version = e->version,
                         .expire_at = entry_expire_at(e)};
        rc = snap_enc_add(enc, &se);
    }
    if (rc == SHOAL_OK && (rc = snap_enc_finish(enc, hdr)) == SHOAL_OK)
        memcpy(img->p, hdr, SNAP_HDR);
    snap_enc_free(enc);
    return rc;
}

/* Capture, wait for the captured state's commit, encode, unpin. */
static shoal_err
export_image(store *s, uint32_t shard_id, membuf *img, snap_meta *m)
{
    shard *sh = &s->shards[shard_id];
    entry **ents = NULL;
    uint64_t ticket = 0;
    *m = (snap_meta){.shard = shard_id};
    pthread_mutex_lock(&sh->snap_mtx);
    shoal_err rc = shard_snap_capture(sh, &ents, m, &ticket);
    if (rc != SHOAL_OK) {
        pthread_mutex_unlock(&sh->snap_mtx);
        return rc;
    }
    /* Never ship a state a crash of this node could take back. */
    if (s->wal != NULL && ticket != 0 &&
        wal_wait(s->wal, ticket, false) != SHOAL_OK) {
        atomic_store(&s->read_only, 1);
        rc = SHOAL_EIO;
    }
    if (rc == SHOAL_OK)
        rc = encode_image(m, ents, img);
    shard_snap_unpin(s, sh);
    pthread_mutex_unlock(&sh->snap_mtx);
    mem_free(ents);
    return rc;
}

shoal_err
store_snapshot_export(store *s, uint32_t shard_id, store_chunk_cb cb, void *arg,
                      uint64_t *lsn_out, uint32_t *epoch_out)
{
    membuf img = {0};
    snap_meta m;
    shoal_err rc = shard_check(s, shard_id);
    if (rc != SHOAL_OK)
        return rc;
    if (cb == NULL)
        return SHOAL_EINVAL;
    if ((rc = export_image(s, shard_id, &img, &m)) != SHOAL_OK) {
        mem_free(img.p);
        return rc;
    }
    for (size_t off = 0; rc == SHOAL_OK && off < img.len;) {
        size_t n = img.len - off < EXPORT_CHUNK ? img.len - off : EXPORT_CHUNK;
        rc = cb(arg, img.p + off, n);
        off += n;
    }
    mem_free(img.p);
    if (rc != SHOAL_OK)
        return rc;
    if (lsn_out != NULL)
        *lsn_out = m.lsn;
    if (epoch_out != NULL)
        *epoch_out = m.shard_epoch;
    return SHOAL_OK;
}

/* ---- import -------------------------------------------------------------- */

struct store_import {
    store *s;
    uint32_t shard;
    uint64_t max_bytes; /* the image may not exceed this */
    membuf buf;         /* bytes received */
    shoal_err err;      /* sticky: a failed write drops the bytes */
};

shoal_err
store_import_begin(store *s, uint32_t shard_id, uint64_t max_bytes,
                   store_import **out)
{
    *out = NULL;
    shoal_err rc = shard_check(s, shard_id);
    if (rc != SHOAL_OK)
        return rc;
    store_import *im = mem_calloc(1, sizeof(*im));
    if (im == NULL)
        return SHOAL_ENOMEM;
    im->s = s;
    im->shard = shard_id;
    im->max_bytes = max_bytes == 0 ? UINT64_MAX : max_bytes;
    *out = im;
    return SHOAL_OK;
}

static void
import_drop(store_import *im, shoal_err rc)
{
    mem_free(im->buf.p);
    im->buf = (membuf){0};
    im->err = rc;
}

shoal_err
store_import_write(store_import *im, const uint8_t *data, size_t len)
{
    shoal_err rc;
    if (im->err != SHOAL_OK)
        return im->err;
    if (data == NULL && len != 0)
        rc = SHOAL_EINVAL;
    else if ((uint64_t) len > im->max_bytes - im->buf.len)
        rc = SHOAL_ETOOLARGE;
    else
        rc = membuf_put(&im->buf, data, len);
    if (rc != SHOAL_OK)
        import_drop(im, rc);
    return rc;
}

void
store_import_abort(store_import *im)
{
    if (im == NULL)
        return;
    mem_free(im->buf.p);
    mem_free(im);
}

/* The new contents, built aside from the shard. */
typedef struct built {
    store *s;
    uint32_t shard;
    const snap_meta *m; /* set by snap_decode before the first entry */
    shard tmp;          /* idx and counters only */
} built;

static shoal_err
build_entry_cb(void *arg, const snap_entry *se)
{
    built *b = arg;
    if (b->m->shard != b->shard)
        return SHOAL_ECORRUPT; /* do not build a foreign shard */
    entry *e = store_entry_new(b->s, se->version, se->key, se->klen, se->val,
                               se->vlen, se->expire_at);
    if (e == NULL)
        return SHOAL_ENOMEM;
    if (kidx_reserve(b->tmp.idx) != SHOAL_OK) {
        store_entry_free(b->s, e);
        return SHOAL_ENOMEM;
    }
    entry *old = kidx_put(b->tmp.idx, e);
    shard_account(&b->tmp, e, +1);
    if (old != NULL) { /* the decoder rejects duplicates; be safe anyway */
        shard_account(&b->tmp, old, -1);
        store_entry_free(b->s, old);
    }
    return SHOAL_OK;
}

/* Decode and check the whole image into b->tmp. */
static shoal_err
import_build(store_import *im, built *b, snap_meta *m)
{
    store *s = im->s;
    memset(b, 0, sizeof(*b));
    memset(m, 0, sizeof(*m));
    b->s = s;
    b->shard = im->shard;
    b->m = m;
    shoal_err rc = kidx_open(&b->tmp.idx);
    if (rc != SHOAL_OK)
        return rc;
    rc = snap_decode(im->buf.p, im->buf.len, s->o.max_key_bytes,
                     s->o.max_value_bytes, m, build_entry_cb, b);
    if (rc == SHOAL_OK && m->shard != im->shard)
        rc = SHOAL_ECORRUPT;
    if (rc != SHOAL_OK)
        slog(SLOG_WARN, "store", "shard %u: snapshot import refused: %s",
             (unsigned) im->shard, shoal_strerror(rc));
    return rc;
}

/* Step 3 (write lock held): swap in the built contents; returns the old
 * index for the caller to free outside the lock. */
static kidx *
import_swap(shard *sh, built *b, const snap_meta *m)
{
    SH_ASSERT(sh->snap_pins == 0 && sh->n_retired == 0);
    kidx *old = sh->idx;
    sh->idx = b->tmp.idx;
    b->tmp.idx = NULL;
    sh->keys = b->tmp.keys;
    sh->bytes = b->tmp.bytes;
    sh->ttl_keys = b->tmp.ttl_keys;
    sh->lsn = m->lsn;
    if (m->shard_epoch > sh->epoch)
        sh->epoch = m->shard_epoch;
    atomic_store(&sh->snap_lsn, m->lsn);
    atomic_store(&sh->committed_lsn, m->lsn);
    mem_free(sh->exp_cursor);
    sh->exp_cursor = NULL;
    sh->exp_cursor_len = 0;
    return old;
}

static bool
lsn_past(shard *sh, uint64_t lsn)
{
    pthread_rwlock_rdlock(&sh->lock);
    bool past = sh->lsn > lsn;
    pthread_rwlock_unlock(&sh->lock);
    return past;
}

/* Steps 1-3 with snap_mtx held. */
static shoal_err
import_install(store *s, uint32_t shard_id, built *b, const snap_meta *m,
               const membuf *img)
{
    shard *sh = &s->shards[shard_id];
    shoal_err rc;
    if (lsn_past(sh, m->lsn))
        return SHOAL_EVERSION;
    if (s->dir != NULL &&
        (rc = snap_install(s->fs, s->dir, m, img->p, img->len)) != SHOAL_OK)
        return rc;
    pthread_rwlock_wrlock(&sh->lock);
    if (sh->lsn > m->lsn) {
        pthread_rwlock_unlock(&sh->lock);
        /* A record applied meanwhile: the file is not this shard's history.
         * Its name cannot be one of the shard's own snapshots (those are at
         * or below the LSN the check above saw). */
        if (s->dir != NULL)
            (void) snap_remove(s->fs, s->dir, shard_id, m->lsn);
        return SHOAL_EVERSION;
    }
    kidx *old = import_swap(sh, b, m);
    pthread_rwlock_unlock(&sh->lock);
    kidx_close(old, free_entry_cb, s);
    if (s->dir != NULL)
        (void) snap_prune(s->fs, s->dir, shard_id, s->o.snapshots_kept);
    return SHOAL_OK;
}

static shoal_err
import_run(store_import *im, uint64_t *lsn_out)
{
    store *s = im->s;
    built b;
    snap_meta m;
    shoal_err rc = shard_check(s, im->shard);
    if (rc == SHOAL_OK && atomic_load(&s->read_only))
        rc = SHOAL_EREADONLY;
    if (rc != SHOAL_OK)
        return rc;
    if ((rc = import_build(im, &b, &m)) == SHOAL_OK) {
        shard *sh = &s->shards[im->shard];
        pthread_mutex_lock(&sh->snap_mtx);
        rc = import_install(s, im->shard, &b, &m, &im->buf);
        pthread_mutex_unlock(&sh->snap_mtx);
    }
    kidx_close(b.tmp.idx, free_entry_cb, s);
    if (rc == SHOAL_OK) {
        *lsn_out = m.lsn;
        slog(SLOG_NOTICE, "store",
             "shard %u: installed snapshot at lsn %" PRIu64 " (%" PRIu64
             " keys, epoch %u)",
             (unsigned) im->shard, m.lsn, m.count, (unsigned) m.shard_epoch);
    }
    return rc;
}

shoal_err
store_import_finish(store_import *im, uint64_t *lsn_out)
{
    uint64_t lsn = 0;
    shoal_err rc = im->err != SHOAL_OK ? im->err : import_run(im, &lsn);
    store_import_abort(im);
    if (rc == SHOAL_OK && lsn_out != NULL)
        *lsn_out = lsn;
    return rc;
}
