/*
 * exec.c -- execute one decoded Shoal__Request against the engine (exec.h).
 *
 * exec_request stamps the response (id, map epoch, status OK), finds the
 * op's handler in a table indexed by the request's oneof case, checks the
 * caller's role, and runs the handler. Every handler validates all of its
 * arguments (presence, limits, the caller's key prefix) before it touches
 * the engine, so bad input changes nothing, and allocates its result
 * message before it writes, so a full arena never hides an applied write.
 *
 * Memory: everything a response points to comes from the frame's arena.
 * Values are copied into it inside the store callbacks (under the shard's
 * read lock; the arena belongs to the calling worker only). Error messages
 * are formatted into the arena, or are string literals.
 *
 * Scans across many shards are a k-way merge. Each shard has a cursor
 * holding a small buffer of entries fetched with store_scan (limit = the
 * cursor's chunk); a binary heap orders the cursors by their head key. The
 * first fetch asks each shard for ceil(limit / shards) entries; a cursor
 * that runs dry is refilled lazily (just before the next pick) from its last
 * key, start_exclusive, with its chunk doubled but never more than the page
 * still needs. So a page of L items over S shards costs about L + S small
 * store calls, and what is fetched but not returned is about one chunk per
 * shard. Values over SCAN_INLINE_VALUE bytes are not buffered: the item is
 * read again with store_get when it is emitted (dropped if it vanished), so
 * 256 cursors never hold 256 large values.
 *
 * `more` is exact at the time of the call: store_scan reports whether a
 * shard has entries past the ones it gave, so more = some cursor still holds
 * entries or has more in its shard.
 */
#include "node/exec.h"

#include "proto/clock.h"
#include "storage/wal.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MSG_BYTES         160  /* formatted error messages */
#define SCAN_INLINE_VALUE 4096 /* larger scan values are read when emitted */
#define BATCH_SLACK       4096 /* mirrors store_batch's record size limit */

typedef struct exec_call {
    const exec_ctx *x;
    const wire_key *caller; /* NULL: insecure, everything allowed */
    const Shoal__Request *req;
    Shoal__Response *resp;
    pbuf_arena *arena;
    exec_result *out;
} exec_call;

static const uint8_t empty_bytes[1];

/* ---- errors ---------------------------------------------------------------
 */

static void
set_status(exec_call *c, shoal_err rc)
{
    c->resp->has_status = true;
    c->resp->status = (Shoal__Status) rc;
    c->out->status = rc;
}

static void vmsg(exec_call *c, shoal_err rc, const char *fmt, va_list ap)
    __attribute__((format(printf, 3, 0)));

/* Message from fmt in the arena, or rc's own text when it is full. */
static void
vmsg(exec_call *c, shoal_err rc, const char *fmt, va_list ap)
{
    char *m = pbuf_arena_alloc(c->arena, MSG_BYTES);
    if (m == NULL) {
        c->resp->message = (char *) shoal_strerror(rc);
        return;
    }
    vsnprintf(m, MSG_BYTES, fmt, ap);
    c->resp->message = m;
}

static void note(exec_call *c, shoal_err rc, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Set the message only (the status and result stay). */
static void
note(exec_call *c, shoal_err rc, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vmsg(c, rc, fmt, ap);
    va_end(ap);
}

static void fail(exec_call *c, shoal_err rc, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* The request fails with rc and a detail; any result is dropped. */
static void
fail(exec_call *c, shoal_err rc, const char *fmt, ...)
{
    va_list ap;
    set_status(c, rc);
    c->resp->result_case = SHOAL__RESPONSE__RESULT__NOT_SET;
    va_start(ap, fmt);
    vmsg(c, rc, fmt, ap);
    va_end(ap);
}

/* The request fails with an engine code; its text is the message. */
static void
fail_rc(exec_call *c, shoal_err rc)
{
    set_status(c, rc);
    c->resp->result_case = SHOAL__RESPONSE__RESULT__NOT_SET;
    c->resp->message = (char *) shoal_strerror(rc);
}

/* ---- arena helpers --------------------------------------------------------
 */

/* len bytes from the arena, or NULL after failing the call with ENOMEM. */
static void *
anew(exec_call *c, size_t len)
{
    void *p = pbuf_arena_alloc(c->arena, len);
    if (p == NULL)
        fail_rc(c, SHOAL_ENOMEM);
    return p;
}

/* A copy of p in the arena (never NULL for len 0 unless out of memory). */
static uint8_t *
arena_dup(pbuf_arena *a, const uint8_t *p, size_t len)
{
    uint8_t *d = pbuf_arena_alloc(a, len == 0 ? 1 : len);
    if (d != NULL && len != 0)
        memcpy(d, p, len);
    return d;
}

/* Copy s into the arena; *ok turns false when out of memory (NULL s: NULL). */
static char *
arena_str(pbuf_arena *a, const char *s, bool *ok)
{
    if (s == NULL)
        return NULL;
    char *d = (char *) arena_dup(a, (const uint8_t *) s, strlen(s) + 1);
    if (d == NULL)
        *ok = false;
    return d;
}

/* ---- argument checks ------------------------------------------------------
 */

static int
kcmp(const uint8_t *a, size_t alen, const uint8_t *b, size_t blen)
{
    size_t n = alen < blen ? alen : blen;
    int d = n != 0 ? memcmp(a, b, n) : 0;
    if (d != 0)
        return d;
    return (alen > blen) - (alen < blen);
}

static const uint8_t *
bytes_of(const ProtobufCBinaryData *b)
{
    return b->data != NULL ? b->data : empty_bytes;
}

/* A key argument: present, not empty, within the limit, inside the caller's
 * prefix. what prefixes the message ("" or "op 3: "). */
static bool
key_ok(exec_call *c, const char *what, protobuf_c_boolean has,
       const ProtobufCBinaryData *k)
{
    if (!has || k->len == 0 || k->data == NULL) {
        fail(c, SHOAL_EINVAL, "%s%s key", what, has ? "empty" : "missing");
        return false;
    }
    if (k->len > c->x->max_key_bytes) {
        fail(c, SHOAL_ETOOLARGE, "%skey is %zu bytes, limit %zu", what, k->len,
             c->x->max_key_bytes);
        return false;
    }
    if (c->caller != NULL && !wire_key_covers(c->caller, k->data, k->len)) {
        fail(c, SHOAL_EPERM, "%skey is outside the prefix of key id %" PRIu32,
             what, c->caller->id);
        return false;
    }
    return true;
}

static bool
value_ok(exec_call *c, const char *what, protobuf_c_boolean has,
         const ProtobufCBinaryData *v)
{
    if (has && v->len > c->x->max_value_bytes) {
        fail(c, SHOAL_ETOOLARGE, "%svalue is %zu bytes, limit %zu", what,
             v->len, c->x->max_value_bytes);
        return false;
    }
    if (has && v->len != 0 && v->data == NULL) {
        fail(c, SHOAL_EINVAL, "%svalue has no bytes", what);
        return false;
    }
    return true;
}

static bool
ttl_ok(exec_call *c, const char *what, protobuf_c_boolean has, uint64_t ttl)
{
    if (has && ttl > EXEC_MAX_TTL_MS) {
        fail(c, SHOAL_EINVAL, "%sttl_ms %" PRIu64 " is over %llu", what, ttl,
             EXEC_MAX_TTL_MS);
        return false;
    }
    return true;
}

/* A scan or count bound (prefix, start, end, token): at most a key long. */
static bool
bound_ok(exec_call *c, const char *name, const ProtobufCBinaryData *b)
{
    if (b->len > c->x->max_key_bytes) {
        fail(c, SHOAL_ETOOLARGE, "%s is %zu bytes, limit %zu", name, b->len,
             c->x->max_key_bytes);
        return false;
    }
    if (b->len != 0 && b->data == NULL) {
        fail(c, SHOAL_EINVAL, "%s has no bytes", name);
        return false;
    }
    return true;
}

/* Shard ids of a scan or count: in range, each at most once. */
static bool
shards_ok(exec_call *c, size_t n, const uint32_t *ids)
{
    uint32_t max = c->x->n_shards;
    if (n == 0)
        return true;
    if (n > max || ids == NULL) {
        fail(c, SHOAL_EINVAL, "%zu shards listed, the node has %" PRIu32, n,
             max);
        return false;
    }
    uint8_t *seen = anew(c, (max + 7u) / 8u);
    if (seen == NULL)
        return false;
    memset(seen, 0, (max + 7u) / 8u);
    for (size_t i = 0; i < n; i++) {
        uint32_t s = ids[i];
        if (s >= max || (seen[s / 8u] & (1u << (s % 8u))) != 0) {
            fail(c, SHOAL_EINVAL, "shard %" PRIu32 " %s", s,
                 s >= max ? "is out of range" : "is listed twice");
            return false;
        }
        seen[s / 8u] |= (uint8_t) (1u << (s % 8u));
    }
    return true;
}

static uint32_t
shard_of(const exec_ctx *x, const ProtobufCBinaryData *k)
{
    return keyhash_shard(x->hash_key, k->data, k->len, x->n_shards);
}

/* ---- cluster routing ------------------------------------------------------
 */

static bool
read_any(const exec_call *c)
{
    return c->req->has_read_mode &&
           c->req->read_mode == SHOAL__READ_MODE__READ_ANY;
}

/* Whether this node serves shard for this call (see exec.h). */
static bool
serves_shard(const exec_call *c, uint32_t shard, bool write)
{
    const cmap *m = c->x->map;
    if (m == NULL)
        return true;
    if (m->shards[shard].primary == (uint32_t) c->x->self)
        return true;
    return !write && read_any(c) &&
           cmap_is_replica(m, shard, (uint32_t) c->x->self);
}

/* Answer SHOAL_EWRONGSHARD for shard, with the map attached. */
static void
wrong_shard(exec_call *c, uint32_t shard)
{
    const cmap *m = c->x->map;
    fail(c, SHOAL_EWRONGSHARD, "shard %" PRIu32 " is served by node %s", shard,
         m->nodes[m->shards[shard].primary].id);
    Shoal__ClusterMap *nm = anew(c, sizeof(*nm));
    if (nm != NULL && cmap_to_pb(m, nm, c->arena) == SHOAL_OK)
        c->resp->new_map = nm;
}

static bool
route(exec_call *c, uint32_t shard, bool write)
{
    if (!serves_shard(c, shard, write)) {
        wrong_shard(c, shard);
        return false;
    }
    /* A primary that lost data or has not heard its followers yet serves
     * nothing of the shard (repl.h); READ_ANY reads take what is here. */
    if (c->x->rp != NULL && !(read_any(c) && !write) &&
        repl_serve(c->x->rp, shard) != SHOAL_OK) {
        fail(c, SHOAL_EUNAVAILABLE,
             "shard %" PRIu32 " is not serving here yet (its primary is "
             "behind its followers or still hearing from them)",
             shard);
        return false;
    }
    return true;
}

/* Before a write to shards[0..n): all served here, the quorum possible.
 * Records what the caller must wait for in c->out. */
static bool
write_admit(exec_call *c, const uint32_t *shards, size_t n)
{
    const exec_ctx *x = c->x;
    if (x->map == NULL)
        return true;
    uint32_t w = c->req->has_write_quorum && c->req->write_quorum != 0
                     ? c->req->write_quorum
                     : x->map->w;
    if (w > x->map->r) {
        fail(c, SHOAL_EINVAL,
             "write_quorum %" PRIu32 " exceeds the %" PRIu32
             " replicas of a shard",
             w, x->map->r);
        return false;
    }
    for (size_t i = 0; i < n; i++) {
        if (!route(c, shards[i], true))
            return false;
        if (x->rp != NULL && repl_admit(x->rp, shards[i], w) != SHOAL_OK) {
            fail(c, SHOAL_EUNAVAILABLE,
                 "shard %" PRIu32 ": fewer than %" PRIu32
                 " replicas are reachable; nothing was written",
                 shards[i], w);
            return false;
        }
    }
    uint32_t *cp = anew(c, n * sizeof(*cp));
    if (cp == NULL)
        return false;
    memcpy(cp, shards, n * sizeof(*cp));
    c->out->w = w;
    c->out->shards = cp;
    c->out->n_shards = n;
    return true;
}

/* The shards a scan or count covers: those listed (each must be served
 * here), else every shard this node serves. *ids NULL with *n 0 means all
 * of the node's shards (single node). false: answered with an error. */
static bool
cover_shards(exec_call *c, size_t n_listed, const uint32_t *listed,
             size_t *n_out, const uint32_t **ids_out)
{
    const cmap *m = c->x->map;
    *n_out = n_listed;
    *ids_out = listed;
    if (m == NULL)
        return true;
    for (size_t i = 0; i < n_listed; i++)
        if (!route(c, listed[i], false))
            return false;
    if (n_listed != 0)
        return true;
    uint32_t *v = anew(c, m->n_shards * sizeof(*v));
    if (v == NULL)
        return false;
    size_t k = 0;
    for (uint32_t s = 0; s < m->n_shards; s++) {
        if (!serves_shard(c, s, false))
            continue;
        if (!route(c, s, false))
            return false; /* a shard here is not serving yet */
        v[k++] = s;
    }
    *n_out = k;
    *ids_out = v;
    return true;
}

/* ---- single-key writes ----------------------------------------------------
 */

static Shoal__WriteResp *
write_resp(exec_call *c)
{
    Shoal__WriteResp *w = anew(c, sizeof(*w));
    if (w != NULL)
        shoal__write_resp__init(w);
    return w;
}

/* Finish a single-key write with the engine's answer. */
static void
write_done(exec_call *c, shoal_err rc, Shoal__WriteResp *w)
{
    if (rc != SHOAL_OK) {
        fail_rc(c, rc);
        return;
    }
    c->out->wrote = true;
    c->resp->result_case = SHOAL__RESPONSE__RESULT_WRITE;
    c->resp->write = w;
}

static void
op_put(exec_call *c)
{
    const Shoal__PutReq *p = c->req->put;
    if (!key_ok(c, "", p->has_key, &p->key) ||
        !value_ok(c, "", p->has_value, &p->value) ||
        !ttl_ok(c, "", p->has_ttl_ms, p->ttl_ms))
        return;
    uint32_t shard = shard_of(c->x, &p->key);
    if (!write_admit(c, &shard, 1))
        return;
    Shoal__WriteResp *w = write_resp(c);
    if (w == NULL)
        return;
    store_wopts o = {
        .ttl_ms = p->has_ttl_ms ? p->ttl_ms : 0,
        .if_absent = p->has_if_absent && p->if_absent,
        .has_if_version = p->has_if_version,
        .if_version = p->if_version,
        .no_wait = true,
    };
    size_t vlen = p->has_value ? p->value.len : 0;
    shoal_err rc = store_put(c->x->st, shard, p->key.data, p->key.len,
                             bytes_of(&p->value), vlen, &o, &w->version);
    w->has_version = rc == SHOAL_OK;
    write_done(c, rc, w);
}

static void
op_del(exec_call *c)
{
    const Shoal__DelReq *d = c->req->del;
    if (!key_ok(c, "", d->has_key, &d->key))
        return;
    uint32_t shard = shard_of(c->x, &d->key);
    if (!write_admit(c, &shard, 1))
        return;
    Shoal__WriteResp *w = write_resp(c);
    if (w == NULL)
        return;
    store_wopts o = {
        .has_if_version = d->has_if_version,
        .if_version = d->if_version,
        .no_wait = true,
    };
    shoal_err rc = store_del(c->x->st, shard, d->key.data, d->key.len, &o);
    write_done(c, rc, w);
}

static void
op_incr(exec_call *c)
{
    const Shoal__IncrReq *q = c->req->incr;
    if (!key_ok(c, "", q->has_key, &q->key))
        return;
    uint32_t shard = shard_of(c->x, &q->key);
    if (!write_admit(c, &shard, 1))
        return;
    Shoal__WriteResp *w = write_resp(c);
    if (w == NULL)
        return;
    store_wopts o = {.no_wait = true};
    int64_t delta = q->has_delta ? q->delta : 0;
    shoal_err rc = store_incr(c->x->st, shard, q->key.data, q->key.len, delta,
                              &o, &w->value, &w->version);
    w->has_value = w->has_version = rc == SHOAL_OK;
    write_done(c, rc, w);
}

/* ---- single-key reads -----------------------------------------------------
 */

typedef struct get_arg {
    pbuf_arena *arena;
    Shoal__GetResp *g;
} get_arg;

/* Under the shard's read lock: copy the value out. */
static shoal_err
get_cb(void *arg, const store_item *it)
{
    get_arg *ga = arg;
    uint8_t *v = arena_dup(ga->arena, it->val, it->vlen);
    if (v == NULL)
        return SHOAL_ENOMEM;
    ga->g->has_value = true;
    ga->g->value.data = v;
    ga->g->value.len = it->vlen;
    ga->g->has_version = true;
    ga->g->version = it->version;
    ga->g->has_expire_at = true;
    ga->g->expire_at = it->expire_at;
    return SHOAL_OK;
}

static void
op_get(exec_call *c)
{
    const Shoal__GetReq *q = c->req->get;
    if (!key_ok(c, "", q->has_key, &q->key))
        return;
    uint32_t shard = shard_of(c->x, &q->key);
    if (!route(c, shard, false))
        return;
    Shoal__GetResp *g = anew(c, sizeof(*g));
    if (g == NULL)
        return;
    shoal__get_resp__init(g);
    get_arg ga = {.arena = c->arena, .g = g};
    shoal_err rc =
        store_get(c->x->st, shard, q->key.data, q->key.len, get_cb, &ga);
    if (rc != SHOAL_OK) {
        fail_rc(c, rc);
        return;
    }
    c->resp->result_case = SHOAL__RESPONSE__RESULT_GET;
    c->resp->get = g;
}

static void
op_ttl(exec_call *c)
{
    const Shoal__TtlReq *q = c->req->ttl;
    if (!key_ok(c, "", q->has_key, &q->key))
        return;
    uint32_t shard = shard_of(c->x, &q->key);
    if (!route(c, shard, false))
        return;
    Shoal__TtlResp *t = anew(c, sizeof(*t));
    if (t == NULL)
        return;
    shoal__ttl_resp__init(t);
    shoal_err rc = store_ttl(c->x->st, shard, q->key.data, q->key.len,
                             &t->ttl_ms, &t->version);
    if (rc != SHOAL_OK) {
        fail_rc(c, rc);
        return;
    }
    t->has_ttl_ms = t->has_version = true;
    c->resp->result_case = SHOAL__RESPONSE__RESULT_TTL;
    c->resp->ttl = t;
}

static void
op_exists(exec_call *c)
{
    const Shoal__ExistsReq *q = c->req->exists;
    if (!key_ok(c, "", q->has_key, &q->key))
        return;
    uint32_t shard = shard_of(c->x, &q->key);
    if (!route(c, shard, false))
        return;
    Shoal__ExistsResp *e = anew(c, sizeof(*e));
    if (e == NULL)
        return;
    shoal__exists_resp__init(e);
    shoal_err rc =
        store_ttl(c->x->st, shard, q->key.data, q->key.len, NULL, &e->version);
    if (rc != SHOAL_OK && rc != SHOAL_ENOTFOUND) {
        fail_rc(c, rc);
        return;
    }
    e->has_exists = true;
    e->exists = rc == SHOAL_OK;
    e->has_version = e->exists;
    c->resp->result_case = SHOAL__RESPONSE__RESULT_EXISTS;
    c->resp->exists = e;
}

/* ---- batch ----------------------------------------------------------------
 */

typedef struct batch_slot {
    uint32_t shard;
    size_t idx; /* position in the request */
    const store_op *op;
} batch_slot;

typedef struct batch_run {
    size_t n;
    store_op *ops;     /* in request order */
    batch_slot *slots; /* sorted by (shard, key) */
    store_op *part;    /* scratch: one shard's ops */
    shoal_err *res;    /* scratch: their results */
    Shoal__BatchResp *br;
    uint64_t version; /* of the last part applied */
} batch_run;

static int
slot_cmp(const void *a, const void *b)
{
    const batch_slot *x = a, *y = b;
    if (x->shard != y->shard)
        return x->shard < y->shard ? -1 : 1;
    return kcmp(x->op->key, x->op->klen, y->op->key, y->op->klen);
}

/* Check op i and turn it into a store_op. */
static bool
batch_op(exec_call *c, size_t i, const Shoal__BatchOp *bo, store_op *so)
{
    char what[40];
    snprintf(what, sizeof(what), "op %zu: ", i);
    if (bo == NULL || !bo->has_kind ||
        (bo->kind != SHOAL__BATCH_OP__KIND__PUT &&
         bo->kind != SHOAL__BATCH_OP__KIND__DEL)) {
        fail(c, SHOAL_EINVAL, "%smissing or unknown kind", what);
        return false;
    }
    bool put = bo->kind == SHOAL__BATCH_OP__KIND__PUT;
    if (!key_ok(c, what, bo->has_key, &bo->key) ||
        (put && !value_ok(c, what, bo->has_value, &bo->value)) ||
        (put && !ttl_ok(c, what, bo->has_ttl_ms, bo->ttl_ms)))
        return false;
    *so = (store_op){
        .kind = put ? STORE_OP_PUT : STORE_OP_DEL,
        .key = bo->key.data,
        .klen = bo->key.len,
        .val = put ? bytes_of(&bo->value) : NULL,
        .vlen = put && bo->has_value ? bo->value.len : 0,
        .opts = {.ttl_ms = put && bo->has_ttl_ms ? bo->ttl_ms : 0,
                 .if_absent = put && bo->has_if_absent && bo->if_absent,
                 .has_if_version = bo->has_if_version,
                 .if_version = bo->if_version,
                 .no_wait = true},
    };
    return true;
}

/* Every op valid, the whole batch within one WAL record's room (so no part
 * can fail on size after another was applied). */
static bool
batch_build(exec_call *c, const Shoal__BatchReq *b, batch_run *r)
{
    size_t total = 0;
    size_t room = c->x->max_value_bytes + c->x->max_key_bytes + BATCH_SLACK;
    for (size_t i = 0; i < r->n; i++) {
        if (!batch_op(c, i, b->ops[i], &r->ops[i]))
            return false;
        total += r->ops[i].klen + r->ops[i].vlen + WAL_OP_HDR;
        r->slots[i] = (batch_slot){
            .shard = keyhash_shard(c->x->hash_key, r->ops[i].key,
                                   r->ops[i].klen, c->x->n_shards),
            .idx = i,
            .op = &r->ops[i],
        };
    }
    if (total > room) {
        fail(c, SHOAL_ETOOLARGE, "batch is %zu bytes, limit %zu", total, room);
        return false;
    }
    return true;
}

/* Sort by (shard, key): duplicates (same key, so same shard) end up next to
 * each other. */
static bool
batch_sort(exec_call *c, batch_run *r)
{
    qsort(r->slots, r->n, sizeof(*r->slots), slot_cmp);
    for (size_t i = 1; i < r->n; i++) {
        if (slot_cmp(&r->slots[i - 1], &r->slots[i]) == 0) {
            size_t a = r->slots[i - 1].idx, b = r->slots[i].idx;
            fail(c, SHOAL_EINVAL, "op %zu and op %zu have the same key",
                 a < b ? a : b, a < b ? b : a);
            return false;
        }
    }
    return true;
}

/* Apply slots [from, to) (one shard) atomically; record each op's status. */
static void
batch_part(exec_call *c, batch_run *r, size_t from, size_t to)
{
    size_t m = to - from;
    for (size_t k = 0; k < m; k++) {
        r->part[k] = *r->slots[from + k].op;
        r->res[k] = SHOAL_OK;
    }
    uint64_t version = 0;
    shoal_err rc = store_batch(c->x->st, r->slots[from].shard, r->part, m,
                               r->res, &version);
    if (rc == SHOAL_OK) {
        c->out->wrote = true;
        r->version = version;
    }
    for (size_t k = 0; k < m; k++) {
        shoal_err st = r->res[k] != SHOAL_OK ? r->res[k] : rc;
        r->br->statuses[r->slots[from + k].idx] = (Shoal__Status) st;
    }
}

/* Run every shard's part, then derive the response's status. */
static void
batch_apply(exec_call *c, batch_run *r)
{
    size_t parts = 0;
    for (size_t i = 0, j; i < r->n; i = j, parts++) {
        for (j = i + 1; j < r->n && r->slots[j].shard == r->slots[i].shard;)
            j++;
        batch_part(c, r, i, j);
    }
    r->br->n_statuses = r->n;
    c->resp->result_case = SHOAL__RESPONSE__RESULT_BATCH;
    c->resp->batch = r->br;
    for (size_t i = 0; i < r->n; i++) {
        shoal_err st = (shoal_err) r->br->statuses[i];
        if (st != SHOAL_OK) {
            set_status(c, st);
            note(c, st, "op %zu: %s", i, shoal_strerror(st));
            return;
        }
    }
    r->br->has_version = parts == 1;
    r->br->version = r->version;
}

static bool
batch_alloc(exec_call *c, batch_run *r)
{
    size_t n = r->n;
    r->ops = anew(c, n * sizeof(*r->ops));
    r->slots = r->ops != NULL ? anew(c, n * sizeof(*r->slots)) : NULL;
    r->part = r->slots != NULL ? anew(c, n * sizeof(*r->part)) : NULL;
    r->res = r->part != NULL ? anew(c, n * sizeof(*r->res)) : NULL;
    r->br = r->res != NULL ? anew(c, sizeof(*r->br)) : NULL;
    Shoal__Status *st = r->br != NULL ? anew(c, n * sizeof(*st)) : NULL;
    if (st == NULL)
        return false;
    shoal__batch_resp__init(r->br);
    r->br->statuses = st;
    return true;
}

static void
op_batch(exec_call *c)
{
    const Shoal__BatchReq *b = c->req->batch;
    batch_run r = {.n = b->n_ops};
    if (r.n == 0 || b->ops == NULL) {
        fail(c, SHOAL_EINVAL, "batch has no ops");
        return;
    }
    if (r.n > c->x->max_batch_ops) {
        fail(c, SHOAL_ETOOLARGE, "batch has %zu ops, limit %zu", r.n,
             c->x->max_batch_ops);
        return;
    }
    if (!batch_alloc(c, &r) || !batch_build(c, b, &r) || !batch_sort(c, &r))
        return;
    uint32_t *shards = anew(c, r.n * sizeof(*shards));
    if (shards == NULL)
        return;
    size_t ns = 0;
    for (size_t i = 0; i < r.n; i++)
        if (ns == 0 || shards[ns - 1] != r.slots[i].shard)
            shards[ns++] = r.slots[i].shard;
    if (!write_admit(c, shards, ns))
        return;
    batch_apply(c, &r);
}

/* ---- count ----------------------------------------------------------------
 */

/* Shard i of a scan or count: the listed ones, else all of the node's. */
static uint32_t
shard_at(size_t n_listed, const uint32_t *listed, size_t i)
{
    return n_listed != 0 ? listed[i] : (uint32_t) i;
}

static void
op_count(exec_call *c)
{
    const Shoal__CountReq *q = c->req->count;
    const ProtobufCBinaryData *p = &q->prefix;
    size_t plen = q->has_prefix ? p->len : 0;
    if ((q->has_prefix && !bound_ok(c, "prefix", p)) ||
        !shards_ok(c, q->n_shards, q->shards))
        return;
    if (c->caller != NULL && !wire_key_covers(c->caller, bytes_of(p), plen)) {
        fail(c, SHOAL_EPERM,
             "count prefix is outside the prefix of key id %" PRIu32,
             c->caller->id);
        return;
    }
    size_t n_ids = 0;
    const uint32_t *ids = NULL;
    if (!cover_shards(c, q->n_shards, q->shards, &n_ids, &ids))
        return;
    Shoal__CountResp *r = anew(c, sizeof(*r));
    if (r == NULL)
        return;
    shoal__count_resp__init(r);
    size_t n = ids != NULL ? n_ids : c->x->n_shards;
    for (size_t i = 0; i < n; i++) {
        uint64_t k = 0;
        shoal_err rc = store_count(c->x->st, shard_at(n_ids, ids, i),
                                   bytes_of(p), plen, &k);
        if (rc != SHOAL_OK) {
            fail_rc(c, rc);
            return;
        }
        r->count += k;
    }
    r->has_count = true;
    c->resp->result_case = SHOAL__RESPONSE__RESULT_COUNT;
    c->resp->count = r;
}

/* ---- scan -----------------------------------------------------------------
 */

typedef struct scan_ent {
    uint8_t *key; /* arena copy */
    size_t klen;
    uint8_t *val; /* arena copy; NULL with keys_only or deferred */
    size_t vlen;
    uint64_t version;
    uint64_t expire_at;
    bool deferred; /* value too large to buffer: read it when emitted */
} scan_ent;

/* One shard's position in the merge. */
typedef struct scan_cur {
    uint32_t shard;
    scan_ent *buf; /* fetched entries; [pos, n) not merged yet */
    size_t cap, n, pos;
    size_t chunk;        /* entries the next fetch asks for */
    bool more;           /* the shard had entries past the last fetched */
    const uint8_t *last; /* resume after this key (NULL: range start) */
    size_t last_len;
} scan_cur;

typedef struct scan_run {
    exec_call *c;
    store_range r; /* the request's bounds, token applied */
    bool keys_only;
    size_t limit;
    scan_cur *curs;
    size_t n_curs;
    scan_cur **heap; /* cursors holding entries; least head key on top */
    size_t n_heap;
    scan_cur *fill; /* the cursor fetch_cb writes into */
    size_t page_bytes;
    Shoal__ScanResp *sr;
} scan_run;

static bool
cur_less(const scan_cur *a, const scan_cur *b)
{
    const scan_ent *x = &a->buf[a->pos], *y = &b->buf[b->pos];
    return kcmp(x->key, x->klen, y->key, y->klen) < 0;
}

static void
heap_down(scan_run *s, size_t i)
{
    for (;;) {
        size_t l = 2 * i + 1, m = i;
        if (l < s->n_heap && cur_less(s->heap[l], s->heap[m]))
            m = l;
        if (l + 1 < s->n_heap && cur_less(s->heap[l + 1], s->heap[m]))
            m = l + 1;
        if (m == i)
            return;
        scan_cur *t = s->heap[i];
        s->heap[i] = s->heap[m];
        s->heap[m] = t;
        i = m;
    }
}

static void
heap_push(scan_run *s, scan_cur *cu)
{
    size_t i = s->n_heap++;
    s->heap[i] = cu;
    while (i > 0 && cur_less(s->heap[i], s->heap[(i - 1) / 2])) {
        scan_cur *t = s->heap[i];
        s->heap[i] = s->heap[(i - 1) / 2];
        s->heap[(i - 1) / 2] = t;
        i = (i - 1) / 2;
    }
}

/* Under the shard's read lock: buffer one entry for the merge. */
static shoal_err
fetch_cb(void *arg, const store_item *it)
{
    scan_run *s = arg;
    scan_cur *cu = s->fill;
    SH_ASSERT(cu->n < cu->cap);
    scan_ent *e = &cu->buf[cu->n];
    *e = (scan_ent){.klen = it->klen,
                    .vlen = it->vlen,
                    .version = it->version,
                    .expire_at = it->expire_at};
    e->key = arena_dup(s->c->arena, it->key, it->klen);
    if (e->key == NULL)
        return SHOAL_ENOMEM;
    e->deferred = !s->keys_only && it->vlen > SCAN_INLINE_VALUE;
    if (!s->keys_only && !e->deferred) {
        e->val = arena_dup(s->c->arena, it->val, it->vlen);
        if (e->val == NULL)
            return SHOAL_ENOMEM;
    }
    cu->n++;
    return SHOAL_OK;
}

/* Refill cu's buffer with up to cu->chunk entries after its last key. */
static shoal_err
cur_fetch(scan_run *s, scan_cur *cu)
{
    store_range r = s->r;
    if (cu->last != NULL) {
        r.start = cu->last;
        r.start_len = cu->last_len;
        r.start_exclusive = true;
    }
    if (cu->cap < cu->chunk) {
        cu->buf = pbuf_arena_alloc(s->c->arena, cu->chunk * sizeof(*cu->buf));
        if (cu->buf == NULL)
            return SHOAL_ENOMEM;
        cu->cap = cu->chunk;
    }
    cu->n = cu->pos = 0;
    s->fill = cu;
    bool more = false;
    shoal_err rc =
        store_scan(s->c->x->st, cu->shard, &r, cu->chunk, fetch_cb, s, &more);
    if (rc != SHOAL_OK)
        return rc;
    cu->more = more && cu->n > 0;
    if (cu->n > 0) {
        cu->last = cu->buf[cu->n - 1].key;
        cu->last_len = cu->buf[cu->n - 1].klen;
        heap_push(s, cu);
    }
    return SHOAL_OK;
}

/* A dry cursor whose shard has more: fetch twice as much as last time, but
 * no more than the page still needs. */
static shoal_err
cur_refill(scan_run *s, scan_cur *cu)
{
    size_t need = s->limit - s->sr->n_items;
    cu->chunk = cu->chunk * 2 < need ? cu->chunk * 2 : need;
    return cur_fetch(s, cu);
}

typedef struct item_arg {
    pbuf_arena *arena;
    Shoal__Item *it;
} item_arg;

/* Under the shard's read lock: a deferred item's current value. */
static shoal_err
item_value_cb(void *arg, const store_item *si)
{
    item_arg *ia = arg;
    uint8_t *v = arena_dup(ia->arena, si->val, si->vlen);
    if (v == NULL)
        return SHOAL_ENOMEM;
    ia->it->has_value = true;
    ia->it->value.data = v;
    ia->it->value.len = si->vlen;
    ia->it->version = si->version;
    ia->it->expire_at = si->expire_at;
    return SHOAL_OK;
}

/* Append e (from shard) to the page; a deferred entry that vanished since
 * it was listed is skipped. */
static shoal_err
scan_emit(scan_run *s, uint32_t shard, const scan_ent *e)
{
    Shoal__Item *it = pbuf_arena_alloc(s->c->arena, sizeof(*it));
    if (it == NULL)
        return SHOAL_ENOMEM;
    shoal__item__init(it);
    it->has_key = it->has_version = it->has_expire_at = true;
    it->key.data = e->key;
    it->key.len = e->klen;
    it->version = e->version;
    it->expire_at = e->expire_at;
    if (e->deferred) {
        item_arg ia = {.arena = s->c->arena, .it = it};
        shoal_err rc =
            store_get(s->c->x->st, shard, e->key, e->klen, item_value_cb, &ia);
        if (rc != SHOAL_OK)
            return rc == SHOAL_ENOTFOUND ? SHOAL_OK : rc;
    } else if (!s->keys_only) {
        it->has_value = true;
        it->value.data = e->val;
        it->value.len = e->vlen;
    }
    s->sr->items[s->sr->n_items++] = it;
    s->page_bytes += it->key.len + it->value.len;
    return SHOAL_OK;
}

/* Pick the least head key until the page is full or every shard is done. */
static shoal_err
scan_merge(scan_run *s)
{
    scan_cur *dry = NULL; /* emptied cursor whose shard has more */
    shoal_err rc;
    while (s->sr->n_items < s->limit && s->page_bytes < EXEC_SCAN_MAX_BYTES) {
        if (dry != NULL && (rc = cur_refill(s, dry)) != SHOAL_OK)
            return rc;
        dry = NULL;
        if (s->n_heap == 0)
            break;
        scan_cur *cu = s->heap[0];
        const scan_ent *e = &cu->buf[cu->pos++];
        if (cu->pos == cu->n) {
            s->heap[0] = s->heap[--s->n_heap];
            dry = cu->more ? cu : NULL;
        }
        heap_down(s, 0);
        if ((rc = scan_emit(s, cu->shard, e)) != SHOAL_OK)
            return rc;
    }
    s->sr->has_more = true;
    s->sr->more = s->n_heap > 0 || dry != NULL;
    return SHOAL_OK;
}

/* The request's prefix, start and end; a token at or after start resumes
 * just past it (one before start cannot widen the range). */
static void
scan_range(const Shoal__ScanReq *q, store_range *r)
{
    *r = (store_range){0};
    if (q->has_prefix && q->prefix.len != 0) {
        r->prefix = q->prefix.data;
        r->prefix_len = q->prefix.len;
    }
    if (q->has_start && q->start.len != 0) {
        r->start = q->start.data;
        r->start_len = q->start.len;
    }
    if (q->has_end && q->end.len != 0) {
        r->end = q->end.data;
        r->end_len = q->end.len;
    }
    if (q->has_token && q->token.len != 0 &&
        (r->start == NULL ||
         kcmp(q->token.data, q->token.len, r->start, r->start_len) >= 0)) {
        r->start = q->token.data;
        r->start_len = q->token.len;
        r->start_exclusive = true;
    }
}

/* A prefix-confined caller may scan only inside its prefix: by the scan's
 * prefix, or by a range whose both ends lie inside (the keys with a given
 * prefix are one contiguous run in key order). */
static bool
scan_confined(const wire_key *k, const store_range *r)
{
    if (k == NULL || wire_key_covers(k, empty_bytes, 0))
        return true;
    if (r->prefix != NULL && wire_key_covers(k, r->prefix, r->prefix_len))
        return true;
    return r->start != NULL && r->end != NULL &&
           wire_key_covers(k, r->start, r->start_len) &&
           wire_key_covers(k, r->end, r->end_len);
}

static bool
scan_check(exec_call *c, const Shoal__ScanReq *q, store_range *r)
{
    if ((q->has_prefix && !bound_ok(c, "prefix", &q->prefix)) ||
        (q->has_start && !bound_ok(c, "start", &q->start)) ||
        (q->has_end && !bound_ok(c, "end", &q->end)) ||
        (q->has_token && !bound_ok(c, "token", &q->token)) ||
        !shards_ok(c, q->n_shards, q->shards))
        return false;
    scan_range(q, r);
    if (!scan_confined(c->caller, r)) {
        fail(c, SHOAL_EPERM,
             "scan is not confined to the prefix of key id %" PRIu32,
             c->caller->id);
        return false;
    }
    return true;
}

/* Allocate the page and one cursor per shard; first fetch of each. */
static shoal_err
scan_start(scan_run *s, size_t n_ids, const uint32_t *ids)
{
    pbuf_arena *a = s->c->arena;
    s->n_curs = ids != NULL ? n_ids : s->c->x->n_shards;
    if (s->n_curs == 0) {
        s->sr->items = NULL;
        return SHOAL_OK;
    }
    s->sr->items = pbuf_arena_alloc(a, s->limit * sizeof(*s->sr->items));
    s->curs = pbuf_arena_alloc(a, s->n_curs * sizeof(*s->curs));
    s->heap = pbuf_arena_alloc(a, s->n_curs * sizeof(*s->heap));
    if (s->sr->items == NULL || s->curs == NULL || s->heap == NULL)
        return SHOAL_ENOMEM;
    size_t chunk = (s->limit + s->n_curs - 1) / s->n_curs;
    for (size_t i = 0; i < s->n_curs; i++) {
        s->curs[i] =
            (scan_cur){.shard = shard_at(n_ids, ids, i), .chunk = chunk};
        shoal_err rc = cur_fetch(s, &s->curs[i]);
        if (rc != SHOAL_OK)
            return rc;
    }
    return SHOAL_OK;
}

static void
op_scan(exec_call *c)
{
    const Shoal__ScanReq *q = c->req->scan;
    scan_run s = {.c = c, .keys_only = q->has_keys_only && q->keys_only};
    uint32_t lim = q->has_limit ? q->limit : 0;
    s.limit = lim == 0                    ? EXEC_SCAN_DEFAULT_LIMIT
              : lim > EXEC_SCAN_MAX_LIMIT ? EXEC_SCAN_MAX_LIMIT
                                          : lim;
    if (!scan_check(c, q, &s.r))
        return;
    size_t n_ids = 0;
    const uint32_t *ids = NULL;
    if (!cover_shards(c, q->n_shards, q->shards, &n_ids, &ids))
        return;
    s.sr = anew(c, sizeof(*s.sr));
    if (s.sr == NULL)
        return;
    shoal__scan_resp__init(s.sr);
    shoal_err rc = scan_start(&s, n_ids, ids);
    if (rc == SHOAL_OK && s.n_curs > 0)
        rc = scan_merge(&s);
    if (rc != SHOAL_OK) {
        fail_rc(c, rc);
        return;
    }
    if (s.sr->more && s.sr->n_items > 0) {
        s.sr->has_token = true;
        s.sr->token = s.sr->items[s.sr->n_items - 1]->key;
    }
    c->resp->result_case = SHOAL__RESPONSE__RESULT_SCAN;
    c->resp->scan = s.sr;
}

/* ---- stats and map --------------------------------------------------------
 */

static void
stats_engine(store *st, Shoal__StatsResp *r)
{
    store_stats ss;
    store_get_stats(st, &ss);
    r->has_keys = r->has_bytes = r->has_index_bytes = true;
    r->keys = ss.keys;
    r->bytes = ss.bytes;
    r->index_bytes = ss.index_bytes;
    r->has_wal_records = r->has_wal_bytes = r->has_wal_fsyncs = true;
    r->wal_records = ss.wal_records;
    r->wal_bytes = ss.wal_bytes;
    r->wal_fsyncs = ss.wal_fsyncs;
    r->has_wal_segments = r->has_snapshots = r->has_snapshot_ms_max = true;
    r->wal_segments = ss.wal_segments;
    r->snapshots = ss.snapshots;
    r->snapshot_ms_max = ss.snapshot_ms_max;
    r->has_expired = r->has_read_only = true;
    r->expired = ss.expired;
    r->read_only = ss.read_only;
}

static bool
stats_node(exec_call *c, Shoal__StatsResp *r)
{
    const exec_ctx *x = c->x;
    bool ok = true;
    r->node_id = arena_str(c->arena, x->node_id, &ok);
    if (!ok) {
        fail_rc(c, SHOAL_ENOMEM);
        return false;
    }
    uint64_t now_ms = clock_mono_ns() / 1000000u;
    r->has_uptime_ms = r->has_shard_count = true;
    r->uptime_ms = now_ms > x->start_ms ? now_ms - x->start_ms : 0;
    r->shard_count = x->n_shards;
    if (x->requests_total != NULL) {
        r->has_requests = true;
        r->requests =
            atomic_load_explicit(x->requests_total, memory_order_relaxed);
    }
    return true;
}

/* One ShardStats per non-empty shard. */
static bool
stats_shards(exec_call *c, Shoal__StatsResp *r)
{
    uint32_t n = c->x->n_shards;
    r->shards = anew(c, n * sizeof(*r->shards));
    if (r->shards == NULL)
        return false;
    for (uint32_t i = 0; i < n; i++) {
        store_shard_stats ss;
        if (store_get_shard_stats(c->x->st, i, &ss) != SHOAL_OK || ss.keys == 0)
            continue;
        Shoal__ShardStats *s = anew(c, sizeof(*s));
        if (s == NULL)
            return false;
        shoal__shard_stats__init(s);
        s->has_shard = s->has_keys = s->has_bytes = true;
        s->shard = i;
        s->keys = ss.keys;
        s->bytes = ss.bytes;
        s->has_lsn = s->has_snap_lsn = s->has_shard_epoch = true;
        s->lsn = ss.lsn;
        s->snap_lsn = ss.snap_lsn;
        s->shard_epoch = ss.epoch;
        if (c->req->stats->has_digests && c->req->stats->digests &&
            store_digest(c->x->st, i, &s->digest) == SHOAL_OK)
            s->has_digest = true;
        r->shards[r->n_shards++] = s;
    }
    return true;
}

static void
op_stats(exec_call *c)
{
    Shoal__StatsResp *r = anew(c, sizeof(*r));
    if (r == NULL)
        return;
    shoal__stats_resp__init(r);
    stats_engine(c->x->st, r);
    if (!stats_node(c, r) || !stats_shards(c, r))
        return;
    c->resp->result_case = SHOAL__RESPONSE__RESULT_STATS;
    c->resp->stats = r;
}

/* The map's one node, primary of every shard. */
static Shoal__MapNode *
map_node(const exec_ctx *x, pbuf_arena *a)
{
    Shoal__MapNode *n = pbuf_arena_alloc(a, sizeof(*n));
    if (n == NULL)
        return NULL;
    shoal__map_node__init(n);
    bool ok = true;
    n->id = arena_str(a, x->node_id, &ok);
    n->addr = arena_str(a, x->advertise_url, &ok);
    n->has_weight = n->has_state = true;
    n->weight = 1;
    n->state = 0;
    return ok ? n : NULL;
}

static shoal_err
map_shards(const exec_ctx *x, Shoal__ClusterMap *m, pbuf_arena *a)
{
    uint32_t n = x->n_shards;
    Shoal__MapShard *v = pbuf_arena_alloc(a, n * sizeof(*v));
    uint32_t *replicas = pbuf_arena_alloc(a, sizeof(*replicas));
    m->shards = pbuf_arena_alloc(a, n * sizeof(*m->shards));
    if (v == NULL || replicas == NULL || m->shards == NULL)
        return SHOAL_ENOMEM;
    replicas[0] = 0; /* every shard's only replica is node 0 */
    for (uint32_t i = 0; i < n; i++) {
        store_shard_stats ss = {0};
        shoal_err rc = store_get_shard_stats(x->st, i, &ss);
        if (rc != SHOAL_OK)
            return rc;
        shoal__map_shard__init(&v[i]);
        v[i].has_shard = v[i].has_primary = true;
        v[i].shard = i;
        v[i].n_replicas = 1;
        v[i].replicas = replicas;
        v[i].primary = 0;
        v[i].has_shard_epoch = v[i].has_state = true;
        v[i].shard_epoch = ss.epoch;
        v[i].state = 0;
        m->shards[i] = &v[i];
    }
    m->n_shards = n;
    return SHOAL_OK;
}

shoal_err
exec_map(const exec_ctx *x, Shoal__ClusterMap *m, pbuf_arena *a)
{
    if (x->map != NULL)
        return cmap_to_pb(x->map, m, a);
    shoal__cluster_map__init(m);
    m->has_epoch = m->has_shard_count = true;
    m->epoch = x->map_epoch;
    m->shard_count = x->n_shards;
    m->has_replicas = m->has_write_quorum = true;
    m->replicas = 1;
    m->write_quorum = 1;
    m->hash_key.data = arena_dup(a, x->hash_key, KEYHASH_KEY_BYTES);
    m->hash_key.len = KEYHASH_KEY_BYTES;
    m->has_hash_key = true;
    m->nodes = pbuf_arena_alloc(a, sizeof(*m->nodes));
    if (m->hash_key.data == NULL || m->nodes == NULL)
        return SHOAL_ENOMEM;
    m->nodes[0] = map_node(x, a);
    if (m->nodes[0] == NULL)
        return SHOAL_ENOMEM;
    m->n_nodes = 1;
    return map_shards(x, m, a);
}

static void
op_map(exec_call *c)
{
    Shoal__ClusterMap *m = anew(c, sizeof(*m));
    if (m == NULL)
        return;
    shoal_err rc = exec_map(c->x, m, c->arena);
    if (rc != SHOAL_OK) {
        fail_rc(c, rc);
        return;
    }
    c->resp->result_case = SHOAL__RESPONSE__RESULT_MAP;
    c->resp->map = m;
}

/* Replication as this node sees it; a single node reports its shards as
 * primary with no followers. */
static void
op_cluster_status(exec_call *c)
{
    Shoal__ClusterStatusResp *r = anew(c, sizeof(*r));
    if (r == NULL)
        return;
    shoal__cluster_status_resp__init(r);
    shoal_err rc = SHOAL_OK;
    if (c->x->rp != NULL) {
        rc = repl_status(c->x->rp, r, c->arena);
    } else {
        bool ok = true;
        r->node_id = arena_str(c->arena, c->x->node_id, &ok);
        r->has_map_epoch = true;
        r->map_epoch = c->x->map_epoch;
        uint32_t n = c->x->n_shards;
        r->shards = anew(c, n * sizeof(*r->shards));
        Shoal__ShardStatus *v = r->shards ? anew(c, n * sizeof(*v)) : NULL;
        if (!ok || v == NULL)
            return;
        for (uint32_t i = 0; i < n; i++) {
            if (!serves_shard(c, i, true))
                continue;
            store_shard_stats ss = {0};
            (void) store_get_shard_stats(c->x->st, i, &ss);
            Shoal__ShardStatus *e = &v[r->n_shards];
            shoal__shard_status__init(e);
            e->has_shard = e->has_primary = e->has_lsn = true;
            e->has_shard_epoch = true;
            e->shard = i;
            e->primary = true;
            e->lsn = ss.lsn;
            e->shard_epoch = ss.epoch;
            r->shards[r->n_shards++] = e;
        }
    }
    if (rc != SHOAL_OK) {
        fail_rc(c, rc);
        return;
    }
    c->resp->result_case = SHOAL__RESPONSE__RESULT_CLUSTER_STATUS;
    c->resp->cluster_status = r;
}

/* ---- dispatch -------------------------------------------------------------
 */

typedef struct op_desc {
    const char *name;
    wire_role role; /* needed by the caller's key */
    void (*run)(exec_call *c);
} op_desc;

#define OP_LAST SHOAL__REQUEST__OP_CLUSTER_STATUS

static const op_desc op_table[OP_LAST + 1] = {
    [SHOAL__REQUEST__OP_GET] = {"get", WIRE_ROLE_READ, op_get},
    [SHOAL__REQUEST__OP_PUT] = {"put", WIRE_ROLE_WRITE, op_put},
    [SHOAL__REQUEST__OP_DEL] = {"del", WIRE_ROLE_WRITE, op_del},
    [SHOAL__REQUEST__OP_INCR] = {"incr", WIRE_ROLE_WRITE, op_incr},
    [SHOAL__REQUEST__OP_TTL] = {"ttl", WIRE_ROLE_READ, op_ttl},
    [SHOAL__REQUEST__OP_EXISTS] = {"exists", WIRE_ROLE_READ, op_exists},
    [SHOAL__REQUEST__OP_BATCH] = {"batch", WIRE_ROLE_WRITE, op_batch},
    [SHOAL__REQUEST__OP_SCAN] = {"scan", WIRE_ROLE_READ, op_scan},
    [SHOAL__REQUEST__OP_COUNT] = {"count", WIRE_ROLE_READ, op_count},
    [SHOAL__REQUEST__OP_STATS] = {"stats", WIRE_ROLE_ADMIN, op_stats},
    [SHOAL__REQUEST__OP_MAP] = {"map", WIRE_ROLE_READ, op_map},
    [SHOAL__REQUEST__OP_CLUSTER_STATUS] = {"cluster_status", WIRE_ROLE_ADMIN,
                                           op_cluster_status},
};

static const op_desc *
op_find(Shoal__Request__OpCase op)
{
    if ((int) op < 0 || (int) op > OP_LAST || op_table[op].run == NULL)
        return NULL;
    return &op_table[op];
}

wire_role
exec_required_role(Shoal__Request__OpCase op)
{
    const op_desc *d = op_find(op);
    return d != NULL ? d->role : WIRE_ROLE_ADMIN;
}

const char *
exec_op_name(Shoal__Request__OpCase op)
{
    const op_desc *d = op_find(op);
    return d != NULL ? d->name : "unknown";
}

static const char *
role_name(wire_role r)
{
    const char *s = wire_role_name(r);
    return s != NULL ? s : "?";
}

void
exec_request(const exec_ctx *x, const wire_key *caller,
             const Shoal__Request *req, Shoal__Response *resp,
             pbuf_arena *arena, exec_result *out)
{
    exec_call c = {x, caller, req, resp, arena, out};
    *out = (exec_result){.status = SHOAL_OK};
    resp->has_id = resp->has_map_epoch = true;
    resp->id = req->id;
    resp->map_epoch = x->map_epoch;
    set_status(&c, SHOAL_OK);
    if (x->requests_total != NULL)
        atomic_fetch_add_explicit(x->requests_total, 1, memory_order_relaxed);
    const op_desc *d = op_find(req->op_case);
    /* Every member of the op union is a message pointer, so any one of
     * them tells whether the op's body is there. */
    if (d == NULL || req->get == NULL) {
        fail(&c, SHOAL_EINVAL, "request has no known op");
        return;
    }
    if (caller != NULL && !wire_role_allows(caller->role, d->role)) {
        fail(&c, SHOAL_EPERM, "%s needs role %s; key id %" PRIu32 " is %s",
             d->name, role_name(d->role), caller->id, role_name(caller->role));
        return;
    }
    d->run(&c);
}

void
exec_commit_failed(Shoal__Response *resp, shoal_err rc)
{
    resp->has_status = true;
    resp->status = (Shoal__Status) rc;
    resp->message = (char *) shoal_strerror(rc);
    resp->result_case = SHOAL__RESPONSE__RESULT__NOT_SET;
    resp->write = NULL;
}
