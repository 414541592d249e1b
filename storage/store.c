/*
 * store.c -- the engine's life cycle: options, recovery, snapshots, the
 * background thread, statistics. Reads and writes are in store_ops.c.
 *
 * Recovery (DESIGN §7): for each shard the newest valid snapshot is loaded
 * (snap_load_latest falls back to an older one if the newest is damaged),
 * then the WAL is replayed; a record at or below the shard's LSN is already
 * in the snapshot, the next must carry exactly LSN + 1 -- a gap means lost
 * records and stops the open with SHOAL_ECORRUPT rather than serving a
 * silently older state.
 *
 * Snapshots without stalling writes: entries are immutable once published,
 * so a snapshot copies the shard's entry pointers under its write lock (a
 * few microseconds per thousand keys), "pins" the shard so that entries
 * displaced meanwhile are retired instead of freed, waits until the copied
 * state is committed in the WAL, writes the file with no lock held, and
 * finally unpins (freeing the retired entries). A snapshot therefore never
 * holds a write a crash could take back.
 *
 * Background thread: every expiry_interval_ms runs active expiry; when the
 * WAL has grown by snapshot_wal_bytes (or snapshot_interval_ms passed) since
 * the last round, snapshots every changed shard and deletes the WAL
 * segments the snapshots cover (except those a follower's retain_lsn still
 * needs, up to wal_retain_bytes). WAL bytes replayed at open count toward
 * snapshot_wal_bytes: every open starts a fresh segment, so a node
 * restarted more often than it writes that much would otherwise never
 * collect its WAL.
 *
 * Replication (store_repl.c, store_apply in store_ops.c): on_record sees
 * every WAL_REC_OPS record -- during recovery each record read, in log
 * order, then each record appended, under the shard's write lock.
 */
#include "storage/store_int.h"

#include "proto/clock.h"
#include "proto/mem.h"
#include "proto/slog.h"
#include "proto/thread.h"
#include "storage/snap.h"

#include <inttypes.h>
#include <string.h>

void
store_opts_default(store_opts *o)
{
    memset(o, 0, sizeof(*o));
    o->n_shards = 256;
    o->max_key_bytes = 1024;
    o->max_value_bytes = 16u << 20;
    o->max_batch_ops = 10000;
    o->fsync = WAL_FSYNC_ALWAYS;
    o->fsync_interval_ms = 100;
    o->segment_bytes = 64u << 20;
    o->snapshot_wal_bytes = 256u << 20;
    o->snapshots_kept = 2;
    o->expiry_interval_ms = 100;
    o->expiry_batch = 200;
    o->background = true;
    o->wal_retain_bytes = 1ull << 30;
}

static shoal_err
check_opts(const store_opts *o)
{
    if (o->n_shards == 0 || o->n_shards > 65536) {
        slog(SLOG_ERR, "store", "n_shards %u out of range 1..65536",
             (unsigned) o->n_shards);
        return SHOAL_EINVAL;
    }
    if (o->max_key_bytes == 0 || o->max_key_bytes > ENTRY_KEY_MAX ||
        o->max_value_bytes > UINT32_MAX / 2 || o->max_batch_ops == 0 ||
        o->snapshots_kept == 0 || o->expiry_batch == 0) {
        slog(SLOG_ERR, "store", "invalid limits in options");
        return SHOAL_EINVAL;
    }
    return SHOAL_OK;
}

/* ---- shards
 * ------------------------------------------------------------------ */

static shoal_err
shard_init(shard *sh)
{
    memset(sh, 0, sizeof(*sh));
    shoal_err rc = kidx_open(&sh->idx);
    if (rc != SHOAL_OK)
        return rc;
    atomic_store(&sh->retain_lsn, UINT64_MAX);
    pthread_rwlock_init(&sh->lock, NULL);
    pthread_mutex_init(&sh->snap_mtx, NULL);
    return SHOAL_OK;
}

static void
free_entry_cb(void *arg, entry *e)
{
    store_entry_free(arg, e);
}

static void
shard_fini(store *s, shard *sh)
{
    if (sh->idx == NULL)
        return;
    kidx_close(sh->idx, free_entry_cb, s);
    for (size_t i = 0; i < sh->n_retired; i++)
        store_entry_free(s, sh->retired[i]);
    mem_free(sh->retired);
    mem_free(sh->exp_cursor);
    pthread_rwlock_destroy(&sh->lock);
    pthread_mutex_destroy(&sh->snap_mtx);
    sh->idx = NULL;
}

/* ---- recovery
 * ------------------------------------------------------------------ */

typedef struct load_ctx {
    store *s;
    shard *sh;
} load_ctx;

static shoal_err
load_entry_cb(void *arg, const snap_entry *se)
{
    load_ctx *c = arg;
    entry *e = store_entry_new(c->s, se->version, se->key, se->klen, se->val,
                               se->vlen, se->expire_at);
    if (e == NULL)
        return SHOAL_ENOMEM;
    if (kidx_reserve(c->sh->idx) != SHOAL_OK) {
        store_entry_free(c->s, e);
        return SHOAL_ENOMEM;
    }
    entry *old = kidx_put(c->sh->idx, e);
    shard_account(c->sh, e, +1);
    if (old != NULL) { /* the decoder rejects duplicates; be safe anyway */
        shard_account(c->sh, old, -1);
        store_entry_free(c->s, old);
    }
    return SHOAL_OK;
}

static shoal_err
load_shard(store *s, uint32_t id)
{
    shard *sh = &s->shards[id];
    load_ctx c = {s, sh};
    snap_meta m;
    shoal_err rc =
        snap_load_latest(s->fs, s->dir, id, s->o.max_key_bytes,
                         s->o.max_value_bytes, &m, load_entry_cb, &c);
    if (rc == SHOAL_ENOTFOUND)
        return SHOAL_OK;
    if (rc != SHOAL_OK) {
        slog(SLOG_ERR, "store", "shard %u: loading snapshot: %s", (unsigned) id,
             shoal_strerror(rc));
        return rc;
    }
    sh->lsn = m.lsn;
    sh->epoch = m.shard_epoch;
    atomic_store(&sh->snap_lsn, m.lsn);
    atomic_store(&sh->committed_lsn, m.lsn);
    return SHOAL_OK;
}

/* Every record read goes to on_record, covered by a snapshot or not: a
 * replication log rebuilt from the WAL must see the whole log. */
static shoal_err
replay_cb(void *arg, const wal_rec *r)
{
    store *s = arg;
    shoal_err rc = store_apply_rec(s, r);
    if (rc == SHOAL_OK && s->o.on_record != NULL)
        s->o.on_record(s->o.on_record_arg, r->shard, r->shard_epoch, r->lsn,
                       r->payload, r->len);
    return rc;
}

/* Create the data dir and make its entry durable in the parent, or a power
 * cut could take the whole directory with it. */
static shoal_err
make_data_dir(store *s)
{
    shoal_err rc;
    char parent[4096];
    if ((rc = fs_mkdir(s->fs, s->dir)) != SHOAL_OK)
        return rc;
    size_t n = strlen(s->dir);
    while (n > 1 && s->dir[n - 1] == '/')
        n--;
    while (n > 0 && s->dir[n - 1] != '/')
        n--;
    if (n >= sizeof(parent))
        return SHOAL_ETOOLARGE;
    if (n == 0) {
        memcpy(parent, ".", 2);
    } else {
        memcpy(parent, s->dir, n);
        parent[n > 1 ? n - 1 : 1] = '\0';
    }
    return fs_dir_fsync(s->fs, parent);
}

static shoal_err
recover(store *s)
{
    shoal_err rc;
    uint64_t t0 = clock_mono_ns();
    if ((rc = make_data_dir(s)) != SHOAL_OK)
        return rc;
    for (uint32_t i = 0; i < s->o.n_shards; i++)
        if ((rc = load_shard(s, i)) != SHOAL_OK)
            return rc;
    wal_opts wo;
    wal_opts_default(&wo);
    wo.fs = s->fs;
    wo.dir = s->dir;
    wo.segment_bytes = s->o.segment_bytes;
    wo.fsync = s->o.fsync;
    wo.interval_ms = s->o.fsync_interval_ms;
    wo.n_shards = s->o.n_shards;
    /* The largest record: a batch as big as store_batch admits. */
    wo.max_record_bytes = WAL_REC_HDR + 8 + s->o.max_value_bytes +
                          s->o.max_key_bytes + 4096 + WAL_OP_HDR;
    wal_recovery info;
    if ((rc = wal_open(&wo, replay_cb, s, &s->wal, &info)) != SHOAL_OK)
        return rc;
    s->recovery_ms = (clock_mono_ns() - t0) / 1000000u;
    s->replayed_bytes = info.bytes;
    slog(SLOG_NOTICE, "store",
         "replayed %" PRIu64 " of %" PRIu64 " WAL records in %" PRIu64
         " ms (%" PRIu64 " torn bytes cut)",
         s->recovered_records, info.records, s->recovery_ms, info.torn_bytes);
    return SHOAL_OK;
}

/* ---- snapshots
 * ------------------------------------------------------------------ */

/* Copy the shard's entry pointers and pin it. Caller holds snap_mtx. */
shoal_err
shard_snap_capture(shard *sh, entry ***ents_out, snap_meta *m, uint64_t *ticket)
{
    pthread_rwlock_wrlock(&sh->lock);
    size_t n = kidx_count(sh->idx);
    entry **ents = mem_alloc((n ? n : 1) * sizeof(*ents));
    if (ents == NULL) {
        pthread_rwlock_unlock(&sh->lock);
        return SHOAL_ENOMEM;
    }
    kidx_iter it;
    kidx_seek(sh->idx, &it, NULL, 0, false);
    size_t i = 0;
    entry *e;
    while ((e = kidx_next(&it)) != NULL)
        ents[i++] = e;
    SH_ASSERT(i == n);
    m->lsn = sh->lsn;
    m->shard_epoch = sh->epoch;
    m->count = n;
    *ticket = sh->last_ticket;
    sh->snap_pins++;
    pthread_rwlock_unlock(&sh->lock);
    *ents_out = ents;
    return SHOAL_OK;
}

void
shard_snap_unpin(store *s, shard *sh)
{
    pthread_rwlock_wrlock(&sh->lock);
    if (--sh->snap_pins == 0) {
        for (size_t i = 0; i < sh->n_retired; i++)
            store_entry_free(s, sh->retired[i]);
        sh->n_retired = 0;
    }
    pthread_rwlock_unlock(&sh->lock);
}

static shoal_err
snap_write_file(store *s, const snap_meta *m, entry **ents)
{
    snap_writer *w = NULL;
    shoal_err rc = snap_writer_open(s->fs, s->dir, m, &w);
    for (uint64_t i = 0; rc == SHOAL_OK && i < m->count; i++) {
        entry *e = ents[i];
        snap_entry se = {.key = entry_key(e),
                         .klen = e->klen,
                         .val = entry_val(e),
                         .vlen = e->vlen,
                         .version = e->version,
                         .expire_at = entry_expire_at(e)};
        rc = snap_writer_add(w, &se);
    }
    if (rc != SHOAL_OK) {
        snap_writer_abort(w);
        return rc;
    }
    return snap_writer_commit(w);
}

static shoal_err
snapshot_locked(store *s, uint32_t id)
{
    shard *sh = &s->shards[id];
    entry **ents = NULL;
    snap_meta m = {.shard = id};
    uint64_t ticket = 0, t0 = clock_mono_ns();
    shoal_err rc = shard_snap_capture(sh, &ents, &m, &ticket);
    if (rc != SHOAL_OK)
        return rc;
    if (m.lsn == atomic_load(&sh->snap_lsn)) {
        rc = SHOAL_OK; /* nothing new since the last snapshot */
        goto out;
    }
    if (ticket != 0 && (rc = wal_wait(s->wal, ticket, true)) != SHOAL_OK) {
        atomic_store(&s->read_only, 1);
        goto out;
    }
    if ((rc = snap_write_file(s, &m, ents)) != SHOAL_OK) {
        slog(SLOG_WARN, "store",
             "shard %u: snapshot at lsn %" PRIu64 " failed: %s", (unsigned) id,
             m.lsn, shoal_strerror(rc));
        goto out;
    }
    atomic_store(&sh->snap_lsn, m.lsn);
    (void) snap_prune(s->fs, s->dir, id, s->o.snapshots_kept);
    atomic_fetch_add(&s->n_snapshots, 1);
    uint64_t ms = (clock_mono_ns() - t0) / 1000000u;
    uint64_t prev = atomic_load(&s->snapshot_ms_max);
    while (ms > prev &&
           !atomic_compare_exchange_weak(&s->snapshot_ms_max, &prev, ms))
        ;
out:
    shard_snap_unpin(s, sh);
    mem_free(ents);
    return rc;
}

shoal_err
store_snapshot(store *s, uint32_t shard_id)
{
    if (atomic_load(&s->closing))
        return SHOAL_ECLOSED;
    if (shard_id >= s->o.n_shards || s->wal == NULL)
        return SHOAL_EINVAL;
    shard *sh = &s->shards[shard_id];
    pthread_mutex_lock(&sh->snap_mtx);
    shoal_err rc = snapshot_locked(s, shard_id);
    pthread_mutex_unlock(&sh->snap_mtx);
    return rc;
}

/* WAL bytes on disk: segments are preallocated, so each takes
 * segment_bytes whatever it holds (the live one and the spare included). */
static uint64_t
wal_disk_bytes(store *s)
{
    wal_stats ws;
    wal_get_stats(s->wal, &ws);
    return ws.segments * s->o.segment_bytes;
}

/* keep[i]: the shard's snapshot LSN, lowered to its retain_lsn when
 * retention applies. Returns whether any retention lowered a value. */
static bool
collect_keep(store *s, uint64_t *keep, bool retain)
{
    bool lowered = false;
    for (uint32_t i = 0; i < s->o.n_shards; i++) {
        keep[i] = atomic_load(&s->shards[i].snap_lsn);
        uint64_t r = atomic_load(&s->shards[i].retain_lsn);
        if (retain && r < keep[i]) {
            keep[i] = r;
            lowered = true;
        }
    }
    return lowered;
}

/* Delete the segments the snapshots cover, except those a follower's
 * retain_lsn still needs. Retention is bounded by wal_retain_bytes (0: no
 * retention): when the WAL is still larger after a collection that kept
 * segments for followers, a second collection ignores retention and drops
 * every covered segment; those followers then re-sync by snapshot. */
static shoal_err
wal_collect(store *s)
{
    uint64_t *keep = mem_alloc(s->o.n_shards * sizeof(*keep));
    if (keep == NULL)
        return SHOAL_ENOMEM;
    bool retain = s->o.wal_retain_bytes != 0;
    bool lowered = collect_keep(s, keep, retain);
    unsigned n = 0, n2 = 0;
    shoal_err rc = wal_gc(s->wal, keep, &n);
    if (rc == SHOAL_OK && lowered &&
        wal_disk_bytes(s) > s->o.wal_retain_bytes) {
        (void) collect_keep(s, keep, false);
        rc = wal_gc(s->wal, keep, &n2);
        if (n2 > 0)
            slog(SLOG_WARN, "store",
                 "WAL over wal_retain_bytes (%" PRIu64
                 "): dropped %u segments followers asked to keep",
                 s->o.wal_retain_bytes, n2);
    }
    mem_free(keep);
    if (n + n2 > 0)
        slog(SLOG_INFO, "store", "deleted %u WAL segments", n + n2);
    return rc;
}

shoal_err
store_snapshot_all(store *s)
{
    if (s->wal == NULL)
        return SHOAL_EINVAL;
    shoal_err first = SHOAL_OK;
    for (uint32_t i = 0; i < s->o.n_shards; i++) {
        shoal_err rc = store_snapshot(s, i);
        if (rc != SHOAL_OK && first == SHOAL_OK)
            first = rc;
        if (rc == SHOAL_ECLOSED || rc == SHOAL_EREADONLY)
            return rc;
    }
    shoal_err rc = wal_collect(s);
    return first != SHOAL_OK ? first : rc;
}

/* ---- background thread
 * ------------------------------------------------------------ */

static bool
snapshot_due(store *s)
{
    if (s->wal == NULL)
        return false;
    wal_stats ws;
    wal_get_stats(s->wal, &ws);
    uint64_t now = clock_mono_ns();
    /* Replayed bytes count: a node restarted more often than it writes
     * snapshot_wal_bytes would otherwise never collect its WAL, as every
     * open starts a fresh segment. */
    if (s->o.snapshot_wal_bytes != 0 &&
        ws.bytes + s->replayed_bytes - s->wal_bytes_at_round >=
            s->o.snapshot_wal_bytes)
        return true;
    return s->o.snapshot_interval_ms != 0 &&
           now - s->last_round_ns >=
               (uint64_t) s->o.snapshot_interval_ms * 1000000u;
}

static void
bg_round(store *s)
{
    if (atomic_load(&s->read_only))
        return;
    uint64_t n;
    (void) store_expire(s, &n);
    if (!snapshot_due(s))
        return;
    wal_stats ws;
    wal_get_stats(s->wal, &ws);
    s->wal_bytes_at_round = ws.bytes + s->replayed_bytes;
    s->last_round_ns = clock_mono_ns();
    (void) store_snapshot_all(s);
}

/* Run the rounds asked for by store_snapshot_now (bg_mtx held). */
static void
bg_asked_rounds(store *s)
{
    while (s->round_req > s->round_done && !s->bg_stop) {
        uint64_t req = s->round_req;
        pthread_mutex_unlock(&s->bg_mtx);
        shoal_err rc = store_snapshot_all(s);
        pthread_mutex_lock(&s->bg_mtx);
        s->round_rc = rc;
        s->round_done = req;
        pthread_cond_broadcast(&s->round_cond);
    }
}

static void
bg_sleep(store *s)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    uint64_t ns =
        (uint64_t) ts.tv_nsec + (uint64_t) s->o.expiry_interval_ms * 1000000u;
    ts.tv_sec += (time_t) (ns / 1000000000u);
    ts.tv_nsec = (long) (ns % 1000000000u);
    pthread_cond_timedwait(&s->bg_cond, &s->bg_mtx, &ts);
}

static void *
bg_main(void *arg)
{
    thread_set_name("shoal-bg");
    store *s = arg;
    /* Snapshots compress for seconds: on two cores, at normal priority they
     * would take the CPU from request threads mid-write. */
    thread_set_background();
    pthread_mutex_lock(&s->bg_mtx);
    while (!s->bg_stop) {
        bg_asked_rounds(s);
        if (s->bg_stop)
            break;
        bg_sleep(s);
        if (s->bg_stop || s->round_req > s->round_done)
            continue;
        pthread_mutex_unlock(&s->bg_mtx);
        bg_round(s);
        pthread_mutex_lock(&s->bg_mtx);
    }
    /* Whoever still waits for a round learns it will not run. */
    s->round_rc = SHOAL_ECLOSED;
    s->round_done = s->round_req;
    pthread_cond_broadcast(&s->round_cond);
    pthread_mutex_unlock(&s->bg_mtx);
    return NULL;
}

shoal_err
store_snapshot_now(store *s)
{
    if (!s->bg_running)
        return store_snapshot_all(s);
    pthread_mutex_lock(&s->bg_mtx);
    uint64_t my = ++s->round_req;
    pthread_cond_signal(&s->bg_cond);
    while (s->round_done < my)
        pthread_cond_wait(&s->round_cond, &s->bg_mtx);
    shoal_err rc = s->round_rc;
    pthread_mutex_unlock(&s->bg_mtx);
    return rc;
}

/* ---- open / close
 * ----------------------------------------------------------------- */

static shoal_err
store_alloc(const store_opts *o, store **out)
{
    shoal_err rc;
    store *s = mem_calloc(1, sizeof(*s));
    if (s == NULL)
        return SHOAL_ENOMEM;
    s->o = *o;
    s->fs = o->fs != NULL ? o->fs : fs_posix();
    s->o.data_dir = NULL;
    pthread_mutex_init(&s->bg_mtx, NULL);
    pthread_cond_init(&s->bg_cond, NULL);
    pthread_cond_init(&s->round_cond, NULL);
    if (o->data_dir != NULL && o->data_dir[0] != '\0' &&
        (s->dir = mem_strdup(o->data_dir)) == NULL) {
        rc = SHOAL_ENOMEM;
        goto fail;
    }
    if ((rc = slab_open(&s->slab)) != SHOAL_OK)
        goto fail;
    if ((s->shards = mem_calloc(o->n_shards, sizeof(shard))) == NULL) {
        rc = SHOAL_ENOMEM;
        goto fail;
    }
    for (uint32_t i = 0; i < o->n_shards; i++)
        if ((rc = shard_init(&s->shards[i])) != SHOAL_OK)
            goto fail;
    *out = s;
    return SHOAL_OK;
fail:
    store_close(s);
    return rc;
}

shoal_err
store_open(const store_opts *o, store **out)
{
    shoal_err rc;
    store *s = NULL;
    *out = NULL;
    if ((rc = check_opts(o)) != SHOAL_OK)
        return rc;
    if ((rc = store_alloc(o, &s)) != SHOAL_OK)
        return rc;
    if (s->dir != NULL && (rc = recover(s)) != SHOAL_OK)
        goto fail;
    s->last_round_ns = clock_mono_ns();
    if (o->background) {
        if (pthread_create(&s->bg, NULL, bg_main, s) != 0) {
            rc = SHOAL_ENOMEM;
            goto fail;
        }
        s->bg_running = true;
    }
    *out = s;
    return SHOAL_OK;
fail:
    store_close(s);
    return rc;
}

void
store_close(store *s)
{
    if (s == NULL)
        return;
    if (s->bg_running) {
        pthread_mutex_lock(&s->bg_mtx);
        s->bg_stop = true;
        pthread_cond_signal(&s->bg_cond);
        pthread_mutex_unlock(&s->bg_mtx);
        pthread_join(s->bg, NULL);
    }
    atomic_store(&s->closing, 1);
    wal_close(s->wal);
    if (s->shards != NULL)
        for (uint32_t i = 0; i < s->o.n_shards; i++)
            shard_fini(s, &s->shards[i]);
    mem_free(s->shards);
    slab_close(s->slab);
    mem_free(s->dir);
    pthread_mutex_destroy(&s->bg_mtx);
    pthread_cond_destroy(&s->bg_cond);
    pthread_cond_destroy(&s->round_cond);
    mem_free(s);
}

/* ---- statistics
 * ------------------------------------------------------------------ */

void
store_get_stats(store *s, store_stats *out)
{
    memset(out, 0, sizeof(*out));
    for (uint32_t i = 0; i < s->o.n_shards; i++) {
        shard *sh = &s->shards[i];
        pthread_rwlock_rdlock(&sh->lock);
        out->keys += sh->keys;
        out->bytes += sh->bytes;
        out->index_bytes += kidx_mem_bytes(sh->idx);
        pthread_rwlock_unlock(&sh->lock);
    }
    if (s->wal != NULL) {
        wal_stats ws;
        wal_get_stats(s->wal, &ws);
        out->wal_records = ws.records;
        out->wal_bytes = ws.bytes;
        out->wal_fsyncs = ws.fsyncs;
        out->wal_segments = ws.segments;
    }
    out->snapshots = atomic_load(&s->n_snapshots);
    out->snapshot_ms_max = atomic_load(&s->snapshot_ms_max);
    out->expired = atomic_load(&s->n_expired);
    out->recovered_records = s->recovered_records;
    out->recovery_ms = s->recovery_ms;
    out->read_only = atomic_load(&s->read_only) != 0;
}

shoal_err
store_get_shard_stats(store *s, uint32_t shard_id, store_shard_stats *out)
{
    if (shard_id >= s->o.n_shards)
        return SHOAL_EINVAL;
    shard *sh = &s->shards[shard_id];
    pthread_rwlock_rdlock(&sh->lock);
    out->keys = sh->keys;
    out->bytes = sh->bytes;
    out->lsn = sh->lsn;
    out->epoch = sh->epoch;
    out->snap_lsn = atomic_load(&sh->snap_lsn);
    pthread_rwlock_unlock(&sh->lock);
    return SHOAL_OK;
}
