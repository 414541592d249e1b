/*
 * client_frame.c -- libshoal's encoder and decoder, apart from any I/O so the
 * decoder can be fuzzed (tests/fuzz/fuzz_response.c).
 *
 * Out: one RequestFrame per frame, one Request per op, Request.id = a
 * per-handle counter (ops of a frame get consecutive ids in frame order, so
 * answers are matched by binary search), map_epoch = the epoch of the map
 * the op was routed by (none for a map request), timeout_ms = what is left
 * of the op's deadline, write_quorum and read_mode from the op's settings
 * (cl_op_settings), scan/count shards = the part's shard list.
 *
 * Back: the frame (wire.h) must be, with a key:   RESPONSE, sealed under that
 * key (same key id), tag verified; insecure: PLAIN|RESPONSE. Or an error
 * frame PLAIN|RESPONSE|ERROR whose u32 status goes to every op (advice, never
 * data). The body is a ResponseFrame whose req_nonce must equal the nonce of
 * the request frame (an old answer replayed does not match). Each Response is
 * matched to its op by id; a duplicate is ignored; an op without one gets
 * SHOAL_EIO. A frame that fails any of these is not believed at all: see
 * cl_verdict_lost.
 *
 * Verdicts: OK and final errors finish the op; EUNAVAILABLE (the node did
 * not run it) and EWRONGSHARD (the map moved) retry any op; ETIMEOUT from
 * the node retries reads.
 */
#include "client_int.h"

#include "proto/bytes.h"
#include "proto/mem.h"

#include <string.h>

static ProtobufCBinaryData
bin(const void *p, size_t len)
{
    ProtobufCBinaryData b = {len, (uint8_t *) (uintptr_t) p};
    return b;
}

shoal_err
cl_status(int wire_status)
{
    if (wire_status < 0 || wire_status > SHOAL_EREADONLY)
        return SHOAL_EIO;
    return (shoal_err) wire_status;
}

/* ---- request fill ---------------------------------------------------------
 */

/* Declares m, a T from arena a, initialised with init; on ENOMEM returns
 * SHOAL_ENOMEM from the calling fill function. */
#define NEW(a, T, init)                      \
    T *m = pbuf_arena_alloc((a), sizeof(T)); \
    if (m == NULL)                           \
        return SHOAL_ENOMEM;                 \
    init(m)

static shoal_err
fill_get(const cl_op *op, Shoal__Request *r, pbuf_arena *a)
{
    NEW(a, Shoal__GetReq, shoal__get_req__init);
    m->has_key = true;
    m->key = bin(op->u->key, op->u->klen);
    r->op_case = SHOAL__REQUEST__OP_GET;
    r->get = m;
    return SHOAL_OK;
}

static shoal_err
fill_put(const cl_op *op, Shoal__Request *r, pbuf_arena *a)
{
    const shoal_op *u = op->u;
    NEW(a, Shoal__PutReq, shoal__put_req__init);
    m->has_key = true;
    m->key = bin(u->key, u->klen);
    m->has_value = true;
    m->value = bin(u->vlen > 0 ? u->val : NULL, u->vlen);
    m->has_ttl_ms = u->opts.ttl_ms != 0;
    m->ttl_ms = u->opts.ttl_ms;
    m->has_if_absent = u->opts.if_absent;
    m->if_absent = u->opts.if_absent;
    m->has_if_version = u->opts.has_if_version;
    m->if_version = u->opts.if_version;
    r->op_case = SHOAL__REQUEST__OP_PUT;
    r->put = m;
    return SHOAL_OK;
}

static shoal_err
fill_del(const cl_op *op, Shoal__Request *r, pbuf_arena *a)
{
    NEW(a, Shoal__DelReq, shoal__del_req__init);
    m->has_key = true;
    m->key = bin(op->u->key, op->u->klen);
    m->has_if_version = op->u->opts.has_if_version;
    m->if_version = op->u->opts.if_version;
    r->op_case = SHOAL__REQUEST__OP_DEL;
    r->del = m;
    return SHOAL_OK;
}

static shoal_err
fill_incr(const cl_op *op, Shoal__Request *r, pbuf_arena *a)
{
    NEW(a, Shoal__IncrReq, shoal__incr_req__init);
    m->has_key = true;
    m->key = bin(op->u->key, op->u->klen);
    m->has_delta = true;
    m->delta = op->u->delta;
    r->op_case = SHOAL__REQUEST__OP_INCR;
    r->incr = m;
    return SHOAL_OK;
}

static shoal_err
fill_ttl(const cl_op *op, Shoal__Request *r, pbuf_arena *a)
{
    NEW(a, Shoal__TtlReq, shoal__ttl_req__init);
    m->has_key = true;
    m->key = bin(op->u->key, op->u->klen);
    r->op_case = SHOAL__REQUEST__OP_TTL;
    r->ttl = m;
    return SHOAL_OK;
}

static shoal_err
fill_exists(const cl_op *op, Shoal__Request *r, pbuf_arena *a)
{
    NEW(a, Shoal__ExistsReq, shoal__exists_req__init);
    m->has_key = true;
    m->key = bin(op->u->key, op->u->klen);
    r->op_case = SHOAL__REQUEST__OP_EXISTS;
    r->exists = m;
    return SHOAL_OK;
}

static void
fill_batch_op(Shoal__BatchOp *b, const shoal_batch_op *s)
{
    shoal__batch_op__init(b);
    b->has_kind = true;
    b->kind = s->kind == SHOAL_BATCH_PUT ? SHOAL__BATCH_OP__KIND__PUT
                                         : SHOAL__BATCH_OP__KIND__DEL;
    b->has_key = true;
    b->key = bin(s->key, s->klen);
    if (s->kind == SHOAL_BATCH_PUT) {
        b->has_value = true;
        b->value = bin(s->vlen > 0 ? s->val : NULL, s->vlen);
        b->has_ttl_ms = s->opts.ttl_ms != 0;
        b->ttl_ms = s->opts.ttl_ms;
        b->has_if_absent = s->opts.if_absent;
        b->if_absent = s->opts.if_absent;
    }
    b->has_if_version = s->opts.has_if_version;
    b->if_version = s->opts.if_version;
}

static shoal_err
fill_batch(const cl_op *op, Shoal__Request *r, pbuf_arena *a)
{
    size_t n = op->in.batch.n;
    NEW(a, Shoal__BatchReq, shoal__batch_req__init);
    Shoal__BatchOp *bs = pbuf_arena_alloc(a, n * sizeof(*bs));
    Shoal__BatchOp **ps = pbuf_arena_alloc(a, n * sizeof(*ps));
    if (n > 0 && (bs == NULL || ps == NULL))
        return SHOAL_ENOMEM;
    for (size_t i = 0; i < n; i++) {
        fill_batch_op(&bs[i], &op->in.batch.ops[i]);
        ps[i] = &bs[i];
    }
    m->n_ops = n;
    m->ops = ps;
    r->op_case = SHOAL__REQUEST__OP_BATCH;
    r->batch = m;
    return SHOAL_OK;
}

static shoal_err
fill_scan(const cl_op *op, Shoal__Request *r, pbuf_arena *a)
{
    const shoal_scan_req *s = op->in.scan;
    NEW(a, Shoal__ScanReq, shoal__scan_req__init);
    m->has_prefix = s->plen > 0;
    m->prefix = bin(s->prefix, s->plen);
    m->has_start = s->start != NULL;
    m->start = bin(s->start, s->start_len);
    m->has_end = s->end != NULL;
    m->end = bin(s->end, s->end_len);
    m->has_limit = true;
    m->limit = s->limit == 0 ? CL_SCAN_DEFAULT : s->limit;
    m->has_token = s->token != NULL;
    m->token = bin(s->token, s->token_len);
    m->has_keys_only = s->keys_only;
    m->keys_only = s->keys_only;
    m->n_shards = op->n_shards;
    m->shards = (uint32_t *) (uintptr_t) op->shards;
    r->op_case = SHOAL__REQUEST__OP_SCAN;
    r->scan = m;
    return SHOAL_OK;
}

static shoal_err
fill_count(const cl_op *op, Shoal__Request *r, pbuf_arena *a)
{
    NEW(a, Shoal__CountReq, shoal__count_req__init);
    m->has_prefix = op->u->klen > 0;
    m->prefix = bin(op->u->key, op->u->klen);
    m->n_shards = op->n_shards;
    m->shards = (uint32_t *) (uintptr_t) op->shards;
    r->op_case = SHOAL__REQUEST__OP_COUNT;
    r->count = m;
    return SHOAL_OK;
}

static shoal_err
fill_stats(const cl_op *op, Shoal__Request *r, pbuf_arena *a)
{
    (void) op;
    NEW(a, Shoal__StatsReq, shoal__stats_req__init);
    r->op_case = SHOAL__REQUEST__OP_STATS;
    r->stats = m;
    return SHOAL_OK;
}

static shoal_err
fill_map(const cl_op *op, Shoal__Request *r, pbuf_arena *a)
{
    (void) op;
    NEW(a, Shoal__MapReq, shoal__map_req__init);
    r->op_case = SHOAL__REQUEST__OP_MAP;
    r->map = m;
    return SHOAL_OK;
}

static shoal_err
fill_cstatus(const cl_op *op, Shoal__Request *r, pbuf_arena *a)
{
    (void) op;
    NEW(a, Shoal__ClusterStatusReq, shoal__cluster_status_req__init);
    r->op_case = SHOAL__REQUEST__OP_CLUSTER_STATUS;
    r->cluster_status = m;
    return SHOAL_OK;
}

/* ---- result extraction ------------------------------------------------------
 */

static const uint8_t empty_value[1];

static shoal_err
take_get(cl_op *op, const Shoal__Response *r)
{
    if (r->result_case != SHOAL__RESPONSE__RESULT_GET)
        return SHOAL_EIO;
    const Shoal__GetResp *g = r->get;
    shoal_op *u = op->u;
    u->out_val = g->has_value && g->value.len > 0 ? g->value.data : empty_value;
    u->out_vlen = g->has_value ? g->value.len : 0;
    u->version = g->version;
    return SHOAL_OK;
}

/* put, del, incr: the WriteResp (a del or put without one is taken as
 * version 0; an incr must say its value). */
static shoal_err
take_write(cl_op *op, const Shoal__Response *r)
{
    if (r->result_case != SHOAL__RESPONSE__RESULT_WRITE)
        return op->kind == CL_INCR ? SHOAL_EIO : SHOAL_OK;
    if (op->kind == CL_INCR && !r->write->has_value)
        return SHOAL_EIO;
    op->u->version = r->write->version;
    op->u->result = r->write->value;
    return SHOAL_OK;
}

static shoal_err
take_ttl(cl_op *op, const Shoal__Response *r)
{
    if (r->result_case != SHOAL__RESPONSE__RESULT_TTL || !r->ttl->has_ttl_ms)
        return SHOAL_EIO;
    op->u->result = r->ttl->ttl_ms;
    op->u->version = r->ttl->version;
    return SHOAL_OK;
}

static shoal_err
take_exists(cl_op *op, const Shoal__Response *r)
{
    if (r->result_case != SHOAL__RESPONSE__RESULT_EXISTS)
        return SHOAL_EIO;
    op->u->exists = r->exists->has_exists && r->exists->exists;
    op->u->version = r->exists->version;
    return SHOAL_OK;
}

/* Batch results are taken whatever the response status: each op has its
 * own. The call's status becomes the first failing op's. */
static shoal_err
take_batch(cl_op *op, const Shoal__Response *r)
{
    if (r->result_case != SHOAL__RESPONSE__RESULT_BATCH ||
        r->batch->n_statuses != op->in.batch.n)
        return SHOAL_EIO;
    shoal_err first = SHOAL_OK;
    for (size_t i = 0; i < op->in.batch.n; i++) {
        shoal_err s = cl_status((int) r->batch->statuses[i]);
        if (op->out.batch.res != NULL)
            op->out.batch.res[i] = s;
        if (first == SHOAL_OK)
            first = s;
    }
    op->out.batch.version = r->batch->version;
    op->out.batch.got = true;
    return first;
}

/* memcpy that accepts (NULL, 0), as protobuf-c gives for empty bytes. */
static uint8_t *
put_bytes(uint8_t *at, const ProtobufCBinaryData *b)
{
    if (b->len > 0)
        memcpy(at, b->data, b->len);
    return at + b->len;
}

/* The page: one allocation holding the struct, the items, then every key,
 * value and the token. */
static shoal_err
page_size(const Shoal__ScanResp *s, bool keys_only, size_t *out)
{
    size_t total = sizeof(shoal_scan_page);
    if (s->n_items > (SIZE_MAX / 2) / sizeof(shoal_item))
        return SHOAL_EIO;
    total += s->n_items * sizeof(shoal_item);
    for (size_t i = 0; i < s->n_items; i++) {
        const Shoal__Item *it = s->items[i];
        size_t add = it->key.len + (keys_only ? 0 : it->value.len);
        if (add < it->key.len || total + add < total)
            return SHOAL_EIO;
        total += add;
    }
    if (total + s->token.len < total)
        return SHOAL_EIO;
    *out = total + s->token.len;
    return SHOAL_OK;
}

static shoal_err
take_scan(cl_op *op, const Shoal__Response *r)
{
    if (r->result_case != SHOAL__RESPONSE__RESULT_SCAN)
        return SHOAL_EIO;
    const Shoal__ScanResp *s = r->scan;
    bool keys_only = op->in.scan->keys_only;
    bool more = s->has_more && s->more;
    size_t total;
    if ((more && (!s->has_token || s->token.len == 0)) ||
        s->token.len > CL_TOKEN_MAX || page_size(s, keys_only, &total) != 0)
        return SHOAL_EIO;
    shoal_scan_page *p = mem_alloc(total);
    if (p == NULL)
        return SHOAL_ENOMEM;
    p->items = (shoal_item *) (p + 1);
    p->n_items = s->n_items;
    p->more = more;
    uint8_t *at = (uint8_t *) (p->items + s->n_items);
    for (size_t i = 0; i < s->n_items; i++) {
        const Shoal__Item *it = s->items[i];
        shoal_item *d = &p->items[i];
        d->key = at;
        d->klen = it->key.len;
        at = put_bytes(at, &it->key);
        d->val = NULL;
        d->vlen = 0;
        if (!keys_only) {
            d->val = at;
            d->vlen = it->value.len;
            at = put_bytes(at, &it->value);
        }
        d->version = it->version;
        d->expire_at = it->expire_at;
    }
    put_bytes(at, &s->token);
    p->token = more ? at : NULL;
    p->token_len = more ? s->token.len : 0;
    op->out.page = p;
    return SHOAL_OK;
}

static shoal_err
take_count(cl_op *op, const Shoal__Response *r)
{
    if (r->result_case != SHOAL__RESPONSE__RESULT_COUNT)
        return SHOAL_EIO;
    op->out.count = r->count->count;
    return SHOAL_OK;
}

static shoal_err
take_stats(cl_op *op, const Shoal__Response *r)
{
    if (r->result_case != SHOAL__RESPONSE__RESULT_STATS)
        return SHOAL_EIO;
    const Shoal__StatsResp *s = r->stats;
    shoal_stats *d = op->out.stats;
    memset(d, 0, sizeof(*d));
    if (s->node_id != NULL) {
        size_t n = strnlen(s->node_id, sizeof(d->node_id) - 1);
        memcpy(d->node_id, s->node_id, n);
    }
    d->keys = s->keys;
    d->bytes = s->bytes;
    d->index_bytes = s->index_bytes;
    d->wal_records = s->wal_records;
    d->wal_bytes = s->wal_bytes;
    d->wal_fsyncs = s->wal_fsyncs;
    d->wal_segments = s->wal_segments;
    d->snapshots = s->snapshots;
    d->snapshot_ms_max = s->snapshot_ms_max;
    d->expired = s->expired;
    d->uptime_ms = s->uptime_ms;
    d->requests = s->requests;
    d->n_shards = s->shard_count;
    d->read_only = s->read_only;
    return SHOAL_OK;
}

static shoal_err
take_map(cl_op *op, const Shoal__Response *r)
{
    if (r->result_case != SHOAL__RESPONSE__RESULT_MAP)
        return SHOAL_EIO;
    return cl_map_copy(r->map, &op->out.map);
}

/* The ClusterStatusResp packed again for the caller (shoalctl decodes it
 * with protobuf-c): what the node sent, minus unknown fields. */
static shoal_err
take_cstatus(cl_op *op, const Shoal__Response *r)
{
    if (r->result_case != SHOAL__RESPONSE__RESULT_CLUSTER_STATUS)
        return SHOAL_EIO;
    const ProtobufCMessage *msg = &r->cluster_status->base;
    size_t len = protobuf_c_message_get_packed_size(msg);
    uint8_t *pb = mem_alloc(len > 0 ? len : 1);
    if (pb == NULL)
        return SHOAL_ENOMEM;
    op->out.blob.len = protobuf_c_message_pack(msg, pb);
    op->out.blob.pb = pb;
    return SHOAL_OK;
}

const cl_kind_ops cl_kinds[CL_KIND_END] = {
    [CL_GET] = {"get", false, fill_get, take_get},
    [CL_PUT] = {"put", true, fill_put, take_write},
    [CL_DEL] = {"del", true, fill_del, take_write},
    [CL_INCR] = {"incr", true, fill_incr, take_write},
    [CL_TTL] = {"ttl", false, fill_ttl, take_ttl},
    [CL_EXISTS] = {"exists", false, fill_exists, take_exists},
    [CL_BATCH] = {"batch", true, fill_batch, take_batch},
    [CL_SCAN] = {"scan", false, fill_scan, take_scan},
    [CL_COUNT] = {"count", false, fill_count, take_count},
    [CL_STATS] = {"stats", false, fill_stats, take_stats},
    [CL_MAP] = {"map", false, fill_map, take_map},
    [CL_CSTATUS] = {"cluster_status", false, fill_cstatus, take_cstatus},
};

bool
cl_is_write(cl_kind kind)
{
    return cl_kinds[kind].is_write;
}

void
cl_op_reset_outputs(cl_op *op)
{
    shoal_op *u = op->u;
    if (u != NULL) {
        u->status = SHOAL_OK;
        u->out_val = NULL;
        u->out_vlen = 0;
        u->version = 0;
        u->result = 0;
        u->exists = false;
    }
    op->st = SHOAL_OK;
    op->retry = false;
    op->sent = false;
    op->ever_sent = false;
    op->backoff_ms = 0;
}

/* ---- packing ---------------------------------------------------------------
 */

static uint32_t
remaining_ms(uint64_t deadline_ns, uint64_t now_ns)
{
    if (deadline_ns <= now_ns)
        return 1;
    uint64_t ms = (deadline_ns - now_ns + 999999u) / 1000000u;
    return ms > UINT32_MAX ? UINT32_MAX : (uint32_t) ms;
}

static shoal_err
pack_one(const cl_pack_in *in, cl_op *op, uint64_t id, Shoal__Request *r,
         pbuf_arena *a)
{
    /* A map request names no epoch: it asks for the node's map whatever
     * ours is. */
    uint64_t epoch = op->kind == CL_MAP   ? 0
                     : op->map_epoch != 0 ? op->map_epoch
                                          : in->map_epoch;
    shoal__request__init(r);
    op->id = id;
    r->has_id = true;
    r->id = id;
    r->has_map_epoch = epoch != 0;
    r->map_epoch = epoch;
    r->has_timeout_ms = true;
    r->timeout_ms = remaining_ms(op->deadline_ns, in->now_ns);
    r->has_write_quorum = op->w != 0;
    r->write_quorum = op->w;
    r->has_read_mode = op->read_any;
    r->read_mode = SHOAL__READ_MODE__READ_ANY;
    return cl_kinds[op->kind].fill(op, r, a);
}

shoal_err
cl_frame_pack(const cl_pack_in *in, pbuf_arena *arena, uint8_t **buf,
              size_t *cap, size_t *len_out)
{
    Shoal__RequestFrame f = SHOAL__REQUEST_FRAME__INIT;
    Shoal__Request *rs = pbuf_arena_alloc(arena, in->n * sizeof(*rs));
    Shoal__Request **ps = pbuf_arena_alloc(arena, in->n * sizeof(*ps));
    if (rs == NULL || ps == NULL)
        return SHOAL_ENOMEM;
    for (size_t i = 0; i < in->n; i++) {
        shoal_err rc =
            pack_one(in, in->ops[i], in->first_id + i, &rs[i], arena);
        if (rc != SHOAL_OK)
            return rc;
        ps[i] = &rs[i];
    }
    f.n_reqs = in->n;
    f.reqs = ps;
    size_t len = shoal__request_frame__get_packed_size(&f);
    if (len > *cap) {
        uint8_t *nb = mem_realloc(*buf, len);
        if (nb == NULL)
            return SHOAL_ENOMEM;
        *buf = nb;
        *cap = len;
    }
    *len_out = shoal__request_frame__pack(&f, *buf);
    return SHOAL_OK;
}

/* ---- decoding
 * ----------------------------------------------------------------
 */

void
cl_verdict_lost(cl_op *op, shoal_err write_st)
{
    if (cl_is_write(op->kind) && op->sent) {
        op->st = write_st;
        op->retry = false;
        return;
    }
    op->st = SHOAL_EUNAVAILABLE;
    op->retry = true;
}

static void
all_lost(cl_op *const *ops, size_t n)
{
    for (size_t i = 0; i < n; i++)
        cl_verdict_lost(ops[i], SHOAL_EIO);
}

/* Retry by status: EUNAVAILABLE and EWRONGSHARD say "not executed here". */
static bool
status_retries(shoal_err st, cl_kind kind)
{
    if (st == SHOAL_EUNAVAILABLE || st == SHOAL_EWRONGSHARD)
        return true;
    return st == SHOAL_ETIMEOUT && !cl_is_write(kind);
}

static void
all_status(cl_op *const *ops, size_t n, shoal_err st)
{
    for (size_t i = 0; i < n; i++) {
        ops[i]->st = st;
        ops[i]->retry = status_retries(st, ops[i]->kind);
    }
}

/* Index of the op with this id, or n. ops[] ids ascend. */
static size_t
find_op(cl_op *const *ops, size_t n, uint64_t id, size_t guess)
{
    if (guess < n && ops[guess]->id == id)
        return guess;
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (ops[mid]->id < id)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < n && ops[lo]->id == id ? lo : n;
}

static void
answer_op(cl_op *op, const Shoal__Response *r)
{
    shoal_err st = r->has_status ? cl_status((int) r->status) : SHOAL_OK;
    op->retry = false;
    if (st == SHOAL_OK || op->kind == CL_BATCH) {
        if (op->kind == CL_BATCH && st != SHOAL_OK &&
            r->result_case != SHOAL__RESPONSE__RESULT_BATCH) {
            op->st = st; /* failed as a whole */
            op->retry = status_retries(st, op->kind);
            return;
        }
        op->st = cl_kinds[op->kind].extract(op, r);
        return;
    }
    op->st = st;
    op->retry = status_retries(st, op->kind);
}

/* The newest map carried by the frame's EWRONGSHARD answers. */
static void
take_new_map(const Shoal__Response *r, cl_map **best)
{
    if (r->new_map == NULL || best == NULL)
        return;
    if (*best != NULL && (*best)->epoch >= r->new_map->epoch)
        return;
    cl_map *m = NULL;
    if (cl_map_copy(r->new_map, &m) != SHOAL_OK)
        return;
    mem_free(*best);
    *best = m;
}

static void
match_all(const Shoal__ResponseFrame *f, cl_op *const *ops, size_t n,
          cl_map **new_map, uint64_t *hint)
{
    for (size_t i = 0; i < n; i++) {
        ops[i]->st = SHOAL_EIO; /* until answered */
        ops[i]->retry = false;
        ops[i]->answered = false;
    }
    for (size_t i = 0; i < f->n_resps; i++) {
        const Shoal__Response *r = f->resps[i];
        size_t k = find_op(ops, n, r->id, i);
        if (r->map_epoch > *hint)
            *hint = r->map_epoch;
        if (k == n || ops[k]->answered)
            continue; /* unknown id or a duplicate */
        ops[k]->answered = true;
        answer_op(ops[k], r);
        take_new_map(r, new_map);
    }
}

static shoal_err
error_frame(const uint8_t *frame, size_t len, cl_op *const *ops, size_t n)
{
    shoal_err st;
    if (wire_error_status(frame, len, &st) != SHOAL_OK || st == SHOAL_OK)
        return SHOAL_EINVAL;
    all_status(ops, n, cl_status((int) st));
    return SHOAL_OK;
}

/* Open the body: sealed under key, or plaintext when insecure. */
static shoal_err
open_body(const wire_key *key, const wire_hdr *h, uint8_t *frame, size_t len,
          const uint8_t **body, size_t *blen)
{
    if ((h->flags & ~(unsigned) WIRE_F_PLAIN) != WIRE_F_RESPONSE)
        return SHOAL_EINVAL;
    if (key == NULL) {
        if (!(h->flags & WIRE_F_PLAIN))
            return SHOAL_EINVAL;
        return wire_open_plain(frame, len, body, blen);
    }
    if ((h->flags & WIRE_F_PLAIN) || h->key_id != key->id)
        return SHOAL_EAUTH;
    shoal_err rc = wire_open(key, frame, len, blen);
    if (rc != SHOAL_OK)
        return rc == SHOAL_EAUTH ? SHOAL_EAUTH : SHOAL_EINVAL;
    *body = frame + WIRE_HDR_BYTES;
    return SHOAL_OK;
}

shoal_err
shoal__frame_decode(const wire_key *key, uint8_t *frame, size_t len,
                    const uint8_t nonce[WIRE_NONCE_BYTES], cl_op *const *ops,
                    size_t n, pbuf_arena *arena, cl_map **new_map_out,
                    uint64_t *epoch_hint_out)
{
    wire_hdr h;
    const uint8_t *body = NULL;
    size_t blen = 0;
    uint64_t hint = 0;
    shoal_err rc;

    if (new_map_out != NULL)
        *new_map_out = NULL;
    if (epoch_hint_out != NULL)
        *epoch_hint_out = 0;
    if ((rc = wire_parse_hdr(frame, len, &h)) != SHOAL_OK)
        goto lost;
    if (h.flags & WIRE_F_ERROR) {
        if ((rc = error_frame(frame, len, ops, n)) != SHOAL_OK)
            goto lost;
        return SHOAL_OK;
    }
    if ((rc = open_body(key, &h, frame, len, &body, &blen)) != SHOAL_OK)
        goto lost;
    Shoal__ResponseFrame *f =
        shoal__response_frame__unpack(&arena->alloc, blen, body);
    rc = SHOAL_EINVAL;
    if (f == NULL || !f->has_req_nonce ||
        f->req_nonce.len != WIRE_NONCE_BYTES ||
        memcmp(f->req_nonce.data, nonce, WIRE_NONCE_BYTES) != 0)
        goto lost;
    match_all(f, ops, n, new_map_out, &hint);
    if (epoch_hint_out != NULL)
        *epoch_hint_out = hint;
    return SHOAL_OK;
lost:
    all_lost(ops, n);
    return rc == SHOAL_EAUTH ? SHOAL_EAUTH : SHOAL_EINVAL;
}
