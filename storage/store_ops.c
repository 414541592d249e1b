/*
 * store_ops.c -- the engine's reads and writes (store.h).
 *
 * A write runs in three steps under the shard's write lock:
 *   1. check: evaluate conditions against the live entries, validate sizes;
 *   2. prepare: allocate the new entries, reserve index nodes and room in the
 *      retired list -- everything that can fail, before anything is logged;
 *   3. publish: take the next LSN, append one WAL record, swap the entries
 *      into the index (cannot fail).
 * then, without the lock, waits for the record's commit. So a write either
 * changes nothing and returns its error, or is logged and applied.
 *
 * Reads run under the read lock. An entry whose version is above the shard's
 * committed_lsn may belong to a write still waiting for its fsync; the read
 * then waits for the shard's last ticket after releasing the lock, so it
 * never returns data a crash could take back (DESIGN §4, "acknowledged").
 */
#include "storage/store_int.h"

#include "proto/clock.h"
#include "proto/mem.h"
#include "proto/slog.h"

#include <errno.h>
#include <inttypes.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>

/* ---- entries and accounting ---------------------------------------------- */

entry *
store_entry_new(store *s, uint64_t version, const uint8_t *key, size_t klen,
                const uint8_t *val, size_t vlen, uint64_t expire_at)
{
    entry *e = slab_alloc(s->slab, entry_size(klen, vlen, expire_at));
    if (e != NULL)
        entry_fill(e, version, key, klen, val, vlen, expire_at);
    return e;
}

void
store_entry_free(store *s, entry *e)
{
    if (e != NULL)
        slab_free(s->slab, e, entry_alloc_size(e));
}

void
shard_account(shard *sh, const entry *e, int sign)
{
    uint64_t b = (uint64_t) e->klen + e->vlen;
    if (sign > 0) {
        sh->keys++;
        sh->bytes += b;
        sh->ttl_keys += (e->flags & ENTRY_F_EXPIRES) ? 1u : 0u;
    } else {
        sh->keys--;
        sh->bytes -= b;
        sh->ttl_keys -= (e->flags & ENTRY_F_EXPIRES) ? 1u : 0u;
    }
}

shoal_err
shard_retire_reserve(shard *sh, size_t n)
{
    if (sh->snap_pins == 0 || sh->n_retired + n <= sh->cap_retired)
        return SHOAL_OK;
    size_t cap = sh->cap_retired ? sh->cap_retired : 64;
    while (cap < sh->n_retired + n)
        cap *= 2;
    entry **r = mem_realloc(sh->retired, cap * sizeof(*r));
    if (r == NULL)
        return SHOAL_ENOMEM;
    sh->retired = r;
    sh->cap_retired = cap;
    return SHOAL_OK;
}

void
shard_retire(store *s, shard *sh, entry *e)
{
    if (e == NULL)
        return;
    shard_account(sh, e, -1);
    if (sh->snap_pins == 0) {
        store_entry_free(s, e);
        return;
    }
    /* A snapshot holds pointers to entries of this shard: free later. */
    SH_ASSERT(sh->n_retired < sh->cap_retired);
    sh->retired[sh->n_retired++] = e;
}

static bool
is_live(const entry *e, uint64_t now_ms)
{
    if (e == NULL)
        return false;
    uint64_t x = entry_expire_at(e);
    return x == 0 || x > now_ms;
}

/* ---- argument checks ------------------------------------------------------
 */

static shoal_err
check_shard(store *s, uint32_t shard_id)
{
    if (atomic_load(&s->closing))
        return SHOAL_ECLOSED;
    if (shard_id >= s->o.n_shards)
        return SHOAL_EINVAL;
    return SHOAL_OK;
}

static shoal_err
check_key(store *s, const uint8_t *key, size_t klen)
{
    if (key == NULL || klen == 0)
        return SHOAL_EINVAL;
    if (klen > s->o.max_key_bytes)
        return SHOAL_ETOOLARGE;
    return SHOAL_OK;
}

static shoal_err
check_write(store *s, uint32_t shard_id, const uint8_t *key, size_t klen)
{
    shoal_err rc;
    if ((rc = check_shard(s, shard_id)) != SHOAL_OK)
        return rc;
    if (atomic_load(&s->read_only))
        return SHOAL_EREADONLY;
    return check_key(s, key, klen);
}

/* ---- commit tracking ------------------------------------------------------
 */

static void
committed_raise(shard *sh, uint64_t lsn)
{
    uint64_t cur = atomic_load(&sh->committed_lsn);
    while (cur < lsn &&
           !atomic_compare_exchange_weak(&sh->committed_lsn, &cur, lsn))
        ;
}

/* Under the shard lock (read or write): the ticket a reader of an entry with
 * this version must wait for, or 0 when it is committed already. */
static uint64_t
read_wait_ticket(store *s, shard *sh, uint64_t version)
{
    if (version <= atomic_load(&sh->committed_lsn))
        return 0;
    if (s->wal == NULL || wal_is_committed(s->wal, sh->last_ticket)) {
        committed_raise(sh, sh->lsn);
        return 0;
    }
    return sh->last_ticket;
}

static shoal_err
wait_commit(store *s, shard *sh, uint64_t ticket, uint64_t lsn, bool durable)
{
    if (s->wal == NULL || ticket == 0)
        return SHOAL_OK;
    shoal_err rc = wal_wait(s->wal, ticket, durable);
    if (rc != SHOAL_OK) {
        atomic_store(&s->read_only, 1);
        return SHOAL_EIO;
    }
    committed_raise(sh, lsn);
    return SHOAL_OK;
}

/* ---- deferred commit
 * ---------------------------------------------------------
 */

uint64_t
store_commit_point(store *s)
{
    return s->wal == NULL ? 0 : wal_last_ticket(s->wal);
}

/* A failed log makes the engine read-only; callers see SHOAL_EIO (their
 * writes' fate is unknown) unless the store simply closed. */
static shoal_err
commit_rc(store *s, shoal_err rc)
{
    if (rc == SHOAL_OK || rc == SHOAL_ECLOSED)
        return rc;
    atomic_store(&s->read_only, 1);
    return SHOAL_EIO;
}

typedef struct commit_ctx {
    store *s;
    store_done_cb cb;
    void *arg;
} commit_ctx;

static void
commit_done(void *arg, shoal_err rc)
{
    commit_ctx *c = arg;
    store_done_cb cb = c->cb;
    void *cb_arg = c->arg;
    rc = commit_rc(c->s, rc);
    mem_free(c);
    cb(cb_arg, rc);
}

shoal_err
store_commit_notify(store *s, uint64_t point, bool durable, store_done_cb cb,
                    void *arg)
{
    if (s->wal == NULL || point == 0) {
        cb(arg, SHOAL_OK);
        return SHOAL_OK;
    }
    commit_ctx *c = mem_alloc(sizeof(*c));
    if (c == NULL)
        return SHOAL_ENOMEM;
    *c = (commit_ctx){.s = s, .cb = cb, .arg = arg};
    shoal_err rc = wal_notify(s->wal, point, durable, commit_done, c);
    if (rc != SHOAL_OK)
        mem_free(c);
    return rc;
}

shoal_err
store_commit_wait(store *s, uint64_t point, bool durable)
{
    if (s->wal == NULL || point == 0)
        return SHOAL_OK;
    return commit_rc(s, wal_wait(s->wal, point, durable));
}

/* ---- the write path ---------------------------------------------------------
 */

/* Step 2: everything that can fail before the record is logged. fresh[i]
 * is the new entry of op i (NULL for deletes). On failure frees nothing the
 * caller allocated. */
static shoal_err
write_prepare(shard *sh, size_t n_puts, size_t n_ops)
{
    shoal_err rc;
    if ((rc = kidx_reserve_n(sh->idx, n_puts)) != SHOAL_OK)
        return rc;
    return shard_retire_reserve(sh, n_ops);
}

/* The encoded payload on_record gets: the caller's (store_apply), or ops
 * encoded into *owned (mem_alloc'd, freed by the caller). Nothing to do
 * without a hook. */
static shoal_err
hook_payload(store *s, const wal_op *ops, size_t n, const uint8_t **payload,
             size_t *len, uint8_t **owned)
{
    *owned = NULL;
    if (s->o.on_record == NULL || *payload != NULL)
        return SHOAL_OK;
    *len = wal_ops_size(ops, n);
    if ((*owned = mem_alloc(*len)) == NULL)
        return SHOAL_ENOMEM;
    wal_ops_encode(ops, n, *owned);
    *payload = *owned;
    return SHOAL_OK;
}

/* Step 3: log and apply. Called with the write lock held and after a
 * successful write_prepare; on error nothing changed. payload is the encoded
 * ops when the caller has it (store_apply), else NULL. on_record runs after
 * the append, under the lock, so a shard's records reach it in LSN order. */
static shoal_err
write_publish_rec(store *s, uint32_t shard_id, shard *sh, const wal_op *ops,
                  entry **fresh, size_t n, const uint8_t *payload,
                  size_t payload_len, uint64_t *lsn_out)
{
    uint64_t lsn = sh->lsn + 1;
    uint8_t *owned = NULL;
    shoal_err rc = hook_payload(s, ops, n, &payload, &payload_len, &owned);
    if (rc != SHOAL_OK)
        return rc;
    if (s->wal != NULL) {
        uint64_t ticket;
        rc = wal_append(s->wal, (uint16_t) shard_id, sh->epoch, lsn, ops, n,
                        &ticket);
        if (rc != SHOAL_OK) {
            if (rc == SHOAL_EREADONLY)
                atomic_store(&s->read_only, 1);
            mem_free(owned);
            return rc;
        }
        sh->last_ticket = ticket;
    }
    for (size_t i = 0; i < n; i++) {
        entry *old;
        if (fresh[i] != NULL) {
            fresh[i]->version = lsn;
            old = kidx_put(sh->idx, fresh[i]);
            shard_account(sh, fresh[i], +1);
        } else {
            old = kidx_del(sh->idx, ops[i].key, ops[i].klen);
        }
        shard_retire(s, sh, old);
    }
    sh->lsn = lsn;
    if (s->wal == NULL)
        atomic_store(&sh->committed_lsn, lsn);
    if (s->o.on_record != NULL)
        s->o.on_record(s->o.on_record_arg, shard_id, sh->epoch, lsn, payload,
                       payload_len);
    mem_free(owned);
    *lsn_out = lsn;
    return SHOAL_OK;
}

static shoal_err
write_publish(store *s, uint32_t shard_id, shard *sh, const wal_op *ops,
              entry **fresh, size_t n, uint64_t *lsn_out)
{
    return write_publish_rec(s, shard_id, sh, ops, fresh, n, NULL, 0, lsn_out);
}

/* Condition check for one op against the live entry (NULL if none). */
static shoal_err
check_cond(const store_wopts *o, const entry *live, bool is_del)
{
    if (o == NULL)
        return is_del && live == NULL ? SHOAL_ENOTFOUND : SHOAL_OK;
    if (o->if_absent && live != NULL)
        return SHOAL_EEXISTS;
    if (o->has_if_version &&
        (live != NULL ? live->version : 0) != o->if_version)
        return SHOAL_EVERSION;
    if (is_del && live == NULL)
        return SHOAL_ENOTFOUND;
    return SHOAL_OK;
}

static bool
has_cond(const store_wopts *o)
{
    return o != NULL && (o->if_absent || o->has_if_version);
}

static uint64_t
expiry_of(const store_wopts *o, uint64_t now_ms)
{
    if (o == NULL || o->ttl_ms == 0)
        return 0;
    /* Saturate: a ttl past the end of time must not wrap into the past. */
    return o->ttl_ms > UINT64_MAX - now_ms ? UINT64_MAX : now_ms + o->ttl_ms;
}

/* Write one op whose entry (NULL for a delete) was built by the caller,
 * then wait for its commit. Takes ownership of fresh in every case. */
static shoal_err
write_one_locked(store *s, uint32_t shard_id, shard *sh, wal_op *op,
                 entry *fresh, uint64_t *lsn_out)
{
    shoal_err rc = write_prepare(sh, fresh != NULL, 1);
    if (rc == SHOAL_OK)
        rc = write_publish(s, shard_id, sh, op, &fresh, 1, lsn_out);
    if (rc != SHOAL_OK)
        store_entry_free(s, fresh);
    return rc;
}

static void
op_from_entry(wal_op *op, const entry *e)
{
    op->kind = WAL_OP_PUT;
    op->expire_at = entry_expire_at(e);
    op->key = entry_key(e);
    op->klen = e->klen;
    op->val = entry_val(e);
    op->vlen = e->vlen;
}

/* Build the entry for key = val and write it (write lock held). */
static shoal_err
put_locked(store *s, uint32_t shard_id, shard *sh, const uint8_t *key,
           size_t klen, const uint8_t *val, size_t vlen, uint64_t expire_at,
           uint64_t *lsn_out)
{
    entry *e = store_entry_new(s, 0, key, klen, val, vlen, expire_at);
    if (e == NULL)
        return SHOAL_ENOMEM;
    wal_op op;
    op_from_entry(&op, e);
    return write_one_locked(s, shard_id, sh, &op, e, lsn_out);
}

static shoal_err
finish_write(store *s, shard *sh, shoal_err rc, uint64_t ticket, uint64_t lsn,
             const store_wopts *opts, uint64_t *version_out)
{
    if (rc != SHOAL_OK)
        return rc;
    if (opts == NULL || !opts->no_wait)
        rc = wait_commit(s, sh, ticket, lsn, opts != NULL && opts->durable);
    if (rc == SHOAL_OK && version_out != NULL)
        *version_out = lsn;
    return rc;
}

shoal_err
store_put(store *s, uint32_t shard_id, const uint8_t *key, size_t klen,
          const uint8_t *val, size_t vlen, const store_wopts *opts,
          uint64_t *version_out)
{
    shoal_err rc;
    if ((rc = check_write(s, shard_id, key, klen)) != SHOAL_OK)
        return rc;
    if (vlen > s->o.max_value_bytes)
        return SHOAL_ETOOLARGE;
    if (val == NULL && vlen != 0)
        return SHOAL_EINVAL;

    shard *sh = &s->shards[shard_id];
    uint64_t now = clock_now_ms(), lsn = 0, ticket = 0;
    pthread_rwlock_wrlock(&sh->lock);
    /* A plain put needs no lookup: kidx_put hands back what it displaces. */
    if (has_cond(opts)) {
        entry *cur = kidx_get(sh->idx, key, klen);
        rc = check_cond(opts, is_live(cur, now) ? cur : NULL, false);
    }
    if (rc == SHOAL_OK) {
        rc = put_locked(s, shard_id, sh, key, klen, val, vlen,
                        expiry_of(opts, now), &lsn);
        ticket = sh->last_ticket;
    }
    pthread_rwlock_unlock(&sh->lock);
    return finish_write(s, sh, rc, ticket, lsn, opts, version_out);
}

shoal_err
store_del(store *s, uint32_t shard_id, const uint8_t *key, size_t klen,
          const store_wopts *opts)
{
    shoal_err rc;
    if ((rc = check_write(s, shard_id, key, klen)) != SHOAL_OK)
        return rc;
    shard *sh = &s->shards[shard_id];
    uint64_t now = clock_now_ms(), lsn = 0, ticket = 0;
    pthread_rwlock_wrlock(&sh->lock);
    entry *cur = kidx_get(sh->idx, key, klen);
    rc = check_cond(opts, is_live(cur, now) ? cur : NULL, true);
    if (rc == SHOAL_OK) {
        wal_op op = {.kind = WAL_OP_DEL, .key = key, .klen = (uint32_t) klen};
        rc = write_one_locked(s, shard_id, sh, &op, NULL, &lsn);
        ticket = sh->last_ticket;
    }
    pthread_rwlock_unlock(&sh->lock);
    return finish_write(s, sh, rc, ticket, lsn, opts, NULL);
}

/* Parse a whole value as a decimal int64 (optional sign, no spaces). */
static shoal_err
parse_i64(const uint8_t *v, size_t len, int64_t *out)
{
    char buf[24];
    if (len == 0 || len >= sizeof(buf))
        return SHOAL_ENOTNUM;
    memcpy(buf, v, len);
    buf[len] = '\0';
    for (size_t i = 0; i < len; i++)
        if (!((buf[i] >= '0' && buf[i] <= '9') ||
              (i == 0 && (buf[i] == '-' || buf[i] == '+') && len > 1)))
            return SHOAL_ENOTNUM;
    errno = 0;
    char *end = NULL;
    long long x = strtoll(buf, &end, 10);
    if (errno == ERANGE || end != buf + len)
        return SHOAL_ENOTNUM;
    *out = (int64_t) x;
    return SHOAL_OK;
}

static shoal_err
incr_value(const entry *live, int64_t delta, int64_t *result)
{
    int64_t cur = 0;
    shoal_err rc;
    if (live != NULL &&
        (rc = parse_i64(entry_val(live), live->vlen, &cur)) != SHOAL_OK)
        return rc;
    if ((delta > 0 && cur > INT64_MAX - delta) ||
        (delta < 0 && cur < INT64_MIN - delta))
        return SHOAL_EOVERFLOW;
    *result = cur + delta;
    return SHOAL_OK;
}

shoal_err
store_incr(store *s, uint32_t shard_id, const uint8_t *key, size_t klen,
           int64_t delta, const store_wopts *opts, int64_t *result_out,
           uint64_t *version_out)
{
    shoal_err rc;
    if ((rc = check_write(s, shard_id, key, klen)) != SHOAL_OK)
        return rc;
    shard *sh = &s->shards[shard_id];
    uint64_t now = clock_now_ms(), lsn = 0, ticket = 0;
    int64_t result = 0;
    pthread_rwlock_wrlock(&sh->lock);
    entry *cur = kidx_get(sh->idx, key, klen);
    entry *live = is_live(cur, now) ? cur : NULL;
    rc = check_cond(opts, live, false);
    if (rc == SHOAL_OK)
        rc = incr_value(live, delta, &result);
    if (rc == SHOAL_OK) {
        char txt[24];
        int len = snprintf(txt, sizeof(txt), "%" PRId64, result);
        uint64_t exp =
            live != NULL ? entry_expire_at(live) : expiry_of(opts, now);
        rc = put_locked(s, shard_id, sh, key, klen, (const uint8_t *) txt,
                        (size_t) len, exp, &lsn);
        ticket = sh->last_ticket;
    }
    pthread_rwlock_unlock(&sh->lock);
    rc = finish_write(s, sh, rc, ticket, lsn, opts, version_out);
    if (rc == SHOAL_OK && result_out != NULL)
        *result_out = result;
    return rc;
}

/* ---- batch ------------------------------------------------------------------
 */

static int
cmp_op_key(const void *a, const void *b)
{
    const store_op *x = *(const store_op *const *) a;
    const store_op *y = *(const store_op *const *) b;
    return key_cmp(x->key, x->klen, y->key, y->klen);
}

/* Validate sizes and reject duplicate keys. */
static shoal_err
batch_validate(store *s, const store_op *ops, size_t n)
{
    shoal_err rc;
    if (n == 0)
        return SHOAL_EINVAL;
    if (n > s->o.max_batch_ops)
        return SHOAL_ETOOLARGE;
    size_t total = 0;
    for (size_t i = 0; i < n; i++) {
        if (ops[i].kind != STORE_OP_PUT && ops[i].kind != STORE_OP_DEL)
            return SHOAL_EINVAL;
        if ((rc = check_key(s, ops[i].key, ops[i].klen)) != SHOAL_OK)
            return rc;
        if (ops[i].kind == STORE_OP_PUT) {
            if (ops[i].vlen > s->o.max_value_bytes)
                return SHOAL_ETOOLARGE;
            if (ops[i].val == NULL && ops[i].vlen != 0)
                return SHOAL_EINVAL;
        }
        total += ops[i].klen + ops[i].vlen + WAL_OP_HDR;
    }
    /* One record holds the whole batch; keep it within one value's room. */
    if (total > s->o.max_value_bytes + s->o.max_key_bytes + 4096)
        return SHOAL_ETOOLARGE;
    const store_op **sorted = mem_alloc(n * sizeof(*sorted));
    if (sorted == NULL)
        return SHOAL_ENOMEM;
    for (size_t i = 0; i < n; i++)
        sorted[i] = &ops[i];
    qsort(sorted, n, sizeof(*sorted), cmp_op_key);
    rc = SHOAL_OK;
    for (size_t i = 1; i < n && rc == SHOAL_OK; i++)
        if (cmp_op_key(&sorted[i - 1], &sorted[i]) == 0)
            rc = SHOAL_EINVAL;
    mem_free(sorted);
    return rc;
}

/* Check every condition; results[i] gets each op's outcome. */
static shoal_err
batch_check(shard *sh, const store_op *ops, size_t n, uint64_t now,
            shoal_err *results)
{
    shoal_err first = SHOAL_OK;
    for (size_t i = 0; i < n; i++) {
        entry *cur = kidx_get(sh->idx, ops[i].key, ops[i].klen);
        shoal_err rc = check_cond(&ops[i].opts, is_live(cur, now) ? cur : NULL,
                                  ops[i].kind == STORE_OP_DEL);
        /* A batch delete of an absent key is not a failure unless it
         * carries a version condition. */
        if (rc == SHOAL_ENOTFOUND && !ops[i].opts.has_if_version)
            rc = SHOAL_OK;
        if (results != NULL)
            results[i] = rc;
        if (rc != SHOAL_OK && first == SHOAL_OK)
            first = rc;
    }
    return first;
}

static shoal_err
batch_build(store *s, const store_op *ops, size_t n, uint64_t now, wal_op *wops,
            entry **fresh)
{
    for (size_t i = 0; i < n; i++) {
        if (ops[i].kind == STORE_OP_DEL) {
            fresh[i] = NULL;
            wops[i] = (wal_op){.kind = WAL_OP_DEL,
                               .key = ops[i].key,
                               .klen = (uint32_t) ops[i].klen};
            continue;
        }
        fresh[i] = store_entry_new(s, 0, ops[i].key, ops[i].klen, ops[i].val,
                                   ops[i].vlen, expiry_of(&ops[i].opts, now));
        if (fresh[i] == NULL)
            return SHOAL_ENOMEM;
        op_from_entry(&wops[i], fresh[i]);
    }
    return SHOAL_OK;
}

shoal_err
store_batch(store *s, uint32_t shard_id, const store_op *ops, size_t n,
            shoal_err *results, uint64_t *version_out)
{
    shoal_err rc;
    if ((rc = check_shard(s, shard_id)) != SHOAL_OK)
        return rc;
    if (atomic_load(&s->read_only))
        return SHOAL_EREADONLY;
    if (ops == NULL || (rc = batch_validate(s, ops, n)) != SHOAL_OK)
        return ops == NULL ? SHOAL_EINVAL : rc;

    wal_op *wops = mem_calloc(n, sizeof(*wops));
    entry **fresh = mem_calloc(n, sizeof(*fresh));
    if (wops == NULL || fresh == NULL) {
        mem_free(wops);
        mem_free(fresh);
        return SHOAL_ENOMEM;
    }
    shard *sh = &s->shards[shard_id];
    uint64_t now = clock_now_ms(), lsn = 0, ticket = 0;
    size_t n_puts = 0;
    for (size_t i = 0; i < n; i++)
        n_puts += ops[i].kind == STORE_OP_PUT;

    pthread_rwlock_wrlock(&sh->lock);
    rc = batch_check(sh, ops, n, now, results);
    if (rc == SHOAL_OK)
        rc = batch_build(s, ops, n, now, wops, fresh);
    if (rc == SHOAL_OK)
        rc = write_prepare(sh, n_puts, n);
    if (rc == SHOAL_OK)
        rc = write_publish(s, shard_id, sh, wops, fresh, n, &lsn);
    if (rc != SHOAL_OK) {
        for (size_t i = 0; i < n; i++)
            store_entry_free(s, fresh[i]);
    }
    ticket = sh->last_ticket;
    pthread_rwlock_unlock(&sh->lock);
    mem_free(wops);
    mem_free(fresh);
    return finish_write(s, sh, rc, ticket, lsn, &ops[0].opts, version_out);
}

/* ---- replication: applying the primary's records ---------------------- */

/* A shipped record, decoded and checked: ops point into the payload, fresh
 * holds the new entries (NULL for deletes), built with version lsn. */
typedef struct shipped {
    wal_op *ops;
    entry **fresh;
    uint32_t n;
    size_t n_puts;
} shipped;

static void
shipped_free(store *s, shipped *r, bool entries)
{
    for (uint32_t i = 0; entries && r->fresh != NULL && i < r->n; i++)
        store_entry_free(s, r->fresh[i]);
    mem_free(r->ops);
    mem_free(r->fresh);
}

/* Decode the whole payload (hostile) before anything changes: exactly its
 * ops, keys 1..max_key_bytes, values up to max_value_bytes. */
static shoal_err
shipped_decode(store *s, const uint8_t *payload, size_t len, uint64_t lsn,
               shipped *r)
{
    size_t pos;
    shoal_err rc;
    memset(r, 0, sizeof(*r));
    if ((rc = wal_ops_count(payload, len, &r->n, &pos)) != SHOAL_OK)
        return rc;
    r->ops = mem_calloc(r->n ? r->n : 1, sizeof(*r->ops));
    r->fresh = mem_calloc(r->n ? r->n : 1, sizeof(*r->fresh));
    if (r->ops == NULL || r->fresh == NULL)
        return SHOAL_ENOMEM;
    for (uint32_t i = 0; i < r->n; i++) {
        wal_op *op = &r->ops[i];
        if ((rc = wal_ops_next(payload, len, &pos, op)) != SHOAL_OK)
            return rc;
        if (op->klen == 0 || op->klen > s->o.max_key_bytes ||
            op->vlen > s->o.max_value_bytes)
            return SHOAL_ECORRUPT;
    }
    if (pos != len)
        return SHOAL_ECORRUPT;
    for (uint32_t i = 0; i < r->n; i++) {
        const wal_op *op = &r->ops[i];
        if (op->kind != WAL_OP_PUT)
            continue;
        r->fresh[i] = store_entry_new(s, lsn, op->key, op->klen, op->val,
                                      op->vlen, op->expire_at);
        if (r->fresh[i] == NULL)
            return SHOAL_ENOMEM;
        r->n_puts++;
    }
    return SHOAL_OK;
}

/* Under the write lock: refuse, skip or log and apply the record. */
static shoal_err
apply_locked(store *s, uint32_t shard_id, shard *sh, uint32_t shard_epoch,
             uint64_t lsn, const uint8_t *payload, size_t len, shipped *r,
             bool *done)
{
    shoal_err rc;
    *done = false;
    if (shard_epoch < sh->epoch)
        return SHOAL_EWRONGSHARD;
    if (lsn <= sh->lsn)
        return SHOAL_OK;
    if (lsn != sh->lsn + 1)
        return SHOAL_EVERSION;
    if ((rc = write_prepare(sh, r->n_puts, r->n)) != SHOAL_OK)
        return rc;
    uint32_t old_epoch = sh->epoch;
    sh->epoch = shard_epoch; /* the record carries it into this WAL too */
    uint64_t got = 0;
    rc = write_publish_rec(s, shard_id, sh, r->ops, r->fresh, r->n, payload,
                           len, &got);
    if (rc != SHOAL_OK) {
        sh->epoch = old_epoch;
        return rc;
    }
    SH_ASSERT(got == lsn);
    *done = true;
    return SHOAL_OK;
}

shoal_err
store_apply(store *s, uint32_t shard_id, uint32_t shard_epoch, uint64_t lsn,
            const uint8_t *payload, size_t len, bool no_wait, bool *applied)
{
    shoal_err rc;
    shipped r;
    bool done = false;
    if (applied != NULL)
        *applied = false;
    if ((rc = check_shard(s, shard_id)) != SHOAL_OK)
        return rc;
    if (atomic_load(&s->read_only))
        return SHOAL_EREADONLY;
    if (payload == NULL || lsn == 0)
        return payload == NULL ? SHOAL_EINVAL : SHOAL_ECORRUPT;
    if ((rc = shipped_decode(s, payload, len, lsn, &r)) != SHOAL_OK) {
        shipped_free(s, &r, true);
        return rc;
    }
    shard *sh = &s->shards[shard_id];
    pthread_rwlock_wrlock(&sh->lock);
    rc = apply_locked(s, shard_id, sh, shard_epoch, lsn, payload, len, &r,
                      &done);
    uint64_t ticket = sh->last_ticket;
    pthread_rwlock_unlock(&sh->lock);
    shipped_free(s, &r, !done);
    if (rc != SHOAL_OK || !done)
        return rc;
    if (applied != NULL)
        *applied = true;
    return no_wait ? SHOAL_OK : wait_commit(s, sh, ticket, lsn, false);
}

/* ---- reads
 * -------------------------------------------------------------------- */

static void
item_of(store_item *it, const entry *e)
{
    it->key = entry_key(e);
    it->klen = e->klen;
    it->val = entry_val(e);
    it->vlen = e->vlen;
    it->version = e->version;
    it->expire_at = entry_expire_at(e);
}

static shoal_err
read_begin(store *s, uint32_t shard_id, const uint8_t *key, size_t klen)
{
    shoal_err rc;
    if ((rc = check_shard(s, shard_id)) != SHOAL_OK)
        return rc;
    return check_key(s, key, klen);
}

static shoal_err
read_end(store *s, shard *sh, shoal_err rc, uint64_t ticket)
{
    if (rc != SHOAL_OK || ticket == 0)
        return rc;
    return wait_commit(s, sh, ticket, 0, false);
}

shoal_err
store_get(store *s, uint32_t shard_id, const uint8_t *key, size_t klen,
          store_item_cb cb, void *arg)
{
    shoal_err rc;
    if ((rc = read_begin(s, shard_id, key, klen)) != SHOAL_OK)
        return rc;
    shard *sh = &s->shards[shard_id];
    uint64_t ticket = 0;
    pthread_rwlock_rdlock(&sh->lock);
    entry *e = kidx_get(sh->idx, key, klen);
    if (!is_live(e, clock_now_ms())) {
        rc = SHOAL_ENOTFOUND;
    } else {
        store_item it;
        item_of(&it, e);
        ticket = read_wait_ticket(s, sh, e->version);
        rc = cb != NULL ? cb(arg, &it) : SHOAL_OK;
    }
    pthread_rwlock_unlock(&sh->lock);
    return read_end(s, sh, rc, ticket);
}

shoal_err
store_ttl(store *s, uint32_t shard_id, const uint8_t *key, size_t klen,
          int64_t *ttl_ms_out, uint64_t *version_out)
{
    shoal_err rc;
    if ((rc = read_begin(s, shard_id, key, klen)) != SHOAL_OK)
        return rc;
    shard *sh = &s->shards[shard_id];
    uint64_t now = clock_now_ms(), ticket = 0;
    pthread_rwlock_rdlock(&sh->lock);
    entry *e = kidx_get(sh->idx, key, klen);
    if (!is_live(e, now)) {
        rc = SHOAL_ENOTFOUND;
    } else {
        uint64_t x = entry_expire_at(e);
        if (ttl_ms_out != NULL)
            *ttl_ms_out = x == 0 ? -1 : (int64_t) (x - now);
        if (version_out != NULL)
            *version_out = e->version;
        ticket = read_wait_ticket(s, sh, e->version);
    }
    pthread_rwlock_unlock(&sh->lock);
    return read_end(s, sh, rc, ticket);
}

static bool
has_prefix(const entry *e, const uint8_t *p, size_t plen)
{
    return e->klen >= plen && (plen == 0 || memcmp(entry_key(e), p, plen) == 0);
}

/* Position it at the first candidate of r. */
static void
range_seek(const kidx *idx, const store_range *r, kidx_iter *it)
{
    if (r->prefix_len != 0 &&
        (r->start == NULL ||
         key_cmp(r->start, r->start_len, r->prefix, r->prefix_len) < 0)) {
        kidx_seek(idx, it, r->prefix, r->prefix_len, false);
        return;
    }
    kidx_seek(idx, it, r->start, r->start_len, r->start_exclusive);
}

/* The next live entry in r, or NULL at the end of the range. */
static entry *
range_next(const store_range *r, kidx_iter *it, uint64_t now)
{
    entry *e;
    while ((e = kidx_next(it)) != NULL) {
        if (r->end != NULL &&
            key_cmp(entry_key(e), e->klen, r->end, r->end_len) >= 0)
            return NULL;
        if (!has_prefix(e, r->prefix, r->prefix_len))
            return NULL; /* sorted: past the prefix, nothing else matches */
        if (is_live(e, now))
            return e;
    }
    return NULL;
}

shoal_err
store_scan(store *s, uint32_t shard_id, const store_range *r, size_t limit,
           store_item_cb cb, void *arg, bool *more_out)
{
    shoal_err rc;
    static const store_range all = {0};
    if ((rc = check_shard(s, shard_id)) != SHOAL_OK)
        return rc;
    if (r == NULL)
        r = &all;
    if ((r->start == NULL && r->start_len) || (r->end == NULL && r->end_len) ||
        (r->prefix == NULL && r->prefix_len))
        return SHOAL_EINVAL;
    shard *sh = &s->shards[shard_id];
    uint64_t now = clock_now_ms(), max_version = 0, ticket = 0;
    size_t n = 0;
    bool more = false;
    kidx_iter it;
    pthread_rwlock_rdlock(&sh->lock);
    range_seek(sh->idx, r, &it);
    entry *e;
    while (rc == SHOAL_OK && (e = range_next(r, &it, now)) != NULL) {
        if (limit != 0 && n == limit) {
            more = true;
            break;
        }
        store_item item;
        item_of(&item, e);
        if (e->version > max_version)
            max_version = e->version;
        rc = cb != NULL ? cb(arg, &item) : SHOAL_OK;
        n++;
    }
    if (rc == SHOAL_OK)
        ticket = read_wait_ticket(s, sh, max_version);
    pthread_rwlock_unlock(&sh->lock);
    if (more_out != NULL)
        *more_out = more;
    return read_end(s, sh, rc, ticket);
}

shoal_err
store_count(store *s, uint32_t shard_id, const uint8_t *prefix,
            size_t prefix_len, uint64_t *count_out)
{
    shoal_err rc;
    if ((rc = check_shard(s, shard_id)) != SHOAL_OK)
        return rc;
    if (prefix == NULL && prefix_len != 0)
        return SHOAL_EINVAL;
    store_range r = {.prefix = prefix, .prefix_len = prefix_len};
    shard *sh = &s->shards[shard_id];
    uint64_t now = clock_now_ms(), n = 0, max_version = 0, ticket;
    kidx_iter it;
    pthread_rwlock_rdlock(&sh->lock);
    range_seek(sh->idx, &r, &it);
    entry *e;
    while ((e = range_next(&r, &it, now)) != NULL) {
        n++;
        if (e->version > max_version)
            max_version = e->version;
    }
    ticket = read_wait_ticket(s, sh, max_version);
    pthread_rwlock_unlock(&sh->lock);
    *count_out = n;
    return read_end(s, sh, SHOAL_OK, ticket);
}

shoal_err
store_digest(store *s, uint32_t shard_id, uint64_t *digest_out)
{
    shoal_err rc;
    if ((rc = check_shard(s, shard_id)) != SHOAL_OK)
        return rc;
    crypto_generichash_state st;
    uint8_t out[crypto_generichash_BYTES_MIN];
    crypto_generichash_init(&st, NULL, 0, sizeof(out));
    shard *sh = &s->shards[shard_id];
    store_range all = {0};
    uint64_t now = clock_now_ms(), ticket;
    kidx_iter it;
    pthread_rwlock_rdlock(&sh->lock);
    range_seek(sh->idx, &all, &it);
    entry *e;
    while ((e = range_next(&all, &it, now)) != NULL) {
        uint64_t meta[4] = {e->klen, e->vlen, e->version, entry_expire_at(e)};
        crypto_generichash_update(&st, (const uint8_t *) meta, sizeof(meta));
        crypto_generichash_update(&st, entry_key(e), e->klen);
        crypto_generichash_update(&st, entry_val(e), e->vlen);
    }
    ticket = read_wait_ticket(s, sh, sh->lsn);
    pthread_rwlock_unlock(&sh->lock);
    crypto_generichash_final(&st, out, sizeof(out));
    uint64_t d = 0;
    memcpy(&d, out, sizeof(d));
    *digest_out = d;
    return read_end(s, sh, SHOAL_OK, ticket);
}

/* ---- active expiry
 * -------------------------------------------------------------- */

/* Collect up to max expired entries after the shard's cursor; advances the
 * cursor (wrapping to the start at the end). */
static size_t
expiry_collect(store *s, shard *sh, uint64_t now, entry **out, size_t max)
{
    kidx_iter it;
    size_t found = 0, seen = 0;
    kidx_seek(sh->idx, &it, sh->exp_cursor, sh->exp_cursor_len, true);
    entry *e, *last = NULL;
    while (seen < s->o.expiry_batch && found < max &&
           (e = kidx_next(&it)) != NULL) {
        seen++;
        last = e;
        if (!is_live(e, now))
            out[found++] = e;
    }
    mem_free(sh->exp_cursor);
    sh->exp_cursor = NULL;
    sh->exp_cursor_len = 0;
    if (last != NULL && e != NULL) {
        uint8_t *c = mem_alloc(last->klen);
        if (c != NULL) {
            memcpy(c, entry_key(last), last->klen);
            sh->exp_cursor = c;
            sh->exp_cursor_len = last->klen;
        }
    }
    return found;
}

static shoal_err
expire_shard(store *s, uint32_t shard_id, uint64_t now, uint64_t *n_out)
{
    shard *sh = &s->shards[shard_id];
    size_t max = s->o.expiry_batch;
    entry **victims = mem_alloc(max * sizeof(*victims));
    wal_op *ops = mem_alloc(max * sizeof(*ops));
    entry **none = mem_calloc(max, sizeof(*none));
    shoal_err rc = SHOAL_OK;
    uint64_t lsn = 0, ticket = 0;
    *n_out = 0;
    if (victims == NULL || ops == NULL || none == NULL) {
        rc = SHOAL_ENOMEM;
        goto out;
    }
    pthread_rwlock_wrlock(&sh->lock);
    /* A follower's deletes come from its primary: expiring here too would
     * give it records (and LSNs) the primary never wrote. */
    size_t n = sh->ttl_keys && !sh->follower
                   ? expiry_collect(s, sh, now, victims, max)
                   : 0;
    for (size_t i = 0; i < n; i++)
        ops[i] = (wal_op){.kind = WAL_OP_DEL,
                          .key = entry_key(victims[i]),
                          .klen = victims[i]->klen};
    if (n > 0 && (rc = write_prepare(sh, 0, n)) == SHOAL_OK)
        rc = write_publish(s, shard_id, sh, ops, none, n, &lsn);
    ticket = sh->last_ticket;
    pthread_rwlock_unlock(&sh->lock);
    if (n > 0 && rc == SHOAL_OK &&
        (rc = wait_commit(s, sh, ticket, lsn, false)) == SHOAL_OK)
        *n_out = n;
out:
    mem_free(victims);
    mem_free(ops);
    mem_free(none);
    return rc;
}

shoal_err
store_expire(store *s, uint64_t *n_expired_out)
{
    uint64_t total = 0, now = clock_now_ms();
    shoal_err rc = SHOAL_OK;
    if (atomic_load(&s->read_only))
        return SHOAL_EREADONLY;
    for (uint32_t i = 0; i < s->o.n_shards && rc == SHOAL_OK; i++) {
        uint64_t n = 0;
        rc = expire_shard(s, i, now, &n);
        total += n;
    }
    atomic_fetch_add(&s->n_expired, total);
    if (n_expired_out != NULL)
        *n_expired_out = total;
    return rc;
}

/* ---- recovery
 * -------------------------------------------------------------------- */

static shoal_err
apply_op(store *s, shard *sh, const wal_op *op, uint64_t lsn)
{
    entry *old;
    if (op->kind == WAL_OP_DEL) {
        old = kidx_del(sh->idx, op->key, op->klen);
    } else {
        if (op->klen == 0 || op->klen > s->o.max_key_bytes ||
            op->vlen > s->o.max_value_bytes)
            return SHOAL_ECORRUPT;
        entry *e = store_entry_new(s, lsn, op->key, op->klen, op->val, op->vlen,
                                   op->expire_at);
        if (e == NULL)
            return SHOAL_ENOMEM;
        if (kidx_reserve(sh->idx) != SHOAL_OK) {
            store_entry_free(s, e);
            return SHOAL_ENOMEM;
        }
        old = kidx_put(sh->idx, e);
        shard_account(sh, e, +1);
    }
    if (old != NULL) {
        shard_account(sh, old, -1);
        store_entry_free(s, old);
    }
    return SHOAL_OK;
}

shoal_err
store_apply_rec(store *s, const wal_rec *r)
{
    if (r->shard >= s->o.n_shards) {
        slog(SLOG_ERR, "store", "WAL record for shard %u, engine has %u",
             (unsigned) r->shard, (unsigned) s->o.n_shards);
        return SHOAL_ECORRUPT;
    }
    shard *sh = &s->shards[r->shard];
    if (r->lsn <= sh->lsn)
        return SHOAL_OK; /* covered by the snapshot */
    if (r->lsn != sh->lsn + 1) {
        slog(SLOG_ERR, "store",
             "shard %u: WAL jumps from lsn %" PRIu64 " to %" PRIu64
             " (records missing: lost segment or damaged snapshot)",
             (unsigned) r->shard, sh->lsn, r->lsn);
        return SHOAL_ECORRUPT;
    }
    uint32_t n;
    size_t pos;
    shoal_err rc = wal_ops_count(r->payload, r->len, &n, &pos);
    for (uint32_t i = 0; rc == SHOAL_OK && i < n; i++) {
        wal_op op;
        if ((rc = wal_ops_next(r->payload, r->len, &pos, &op)) == SHOAL_OK)
            rc = apply_op(s, sh, &op, r->lsn);
    }
    if (rc != SHOAL_OK)
        return rc;
    sh->lsn = r->lsn;
    sh->epoch = r->shard_epoch;
    atomic_store(&sh->committed_lsn, r->lsn);
    s->recovered_records++;
    return SHOAL_OK;
}
