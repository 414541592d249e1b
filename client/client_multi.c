/*
 * client_multi.c -- blocking calls that span nodes: batch, scan and count
 * (client_int.h, cl_multi_*).
 *
 * A call is cut into items: a batch's ops, or a scan's or count's shards.
 * Each round splits the pending items by the node that serves them under
 * the map in force (shoal__split), sends one part per node (an op pinned to
 * that node's conn, so it coalesces with everything else bound there),
 * waits for every part and keeps what they answered:
 *
 *   pending --split by map--> parts --answers--> done items
 *        ^                                         |
 *        +---- items a node answered EWRONGSHARD --+
 *
 * EWRONGSHARD says the node ran nothing of the part (or, in a batch, of
 * that op's shard), so those items and only those go round again under the
 * newer map (at once when it is in, else after a backoff while the refresh
 * runs), at most CL_REDIRECT_MAX rounds, within the call's deadline. A
 * part's other retries (no connection yet, a lost read) are the scheduler's
 * as for any op, to the same node. Nothing that may have run is sent again.
 *
 * Merging: batch statuses go back to the caller's op order and the call's
 * status is the first non-OK one; scan pages are merged by key
 * (shoal__scan_merge); counts are summed. Any part of a scan or count that
 * fails otherwise fails the call.
 *
 * Shard numbers only mean something under one shard_count; should a map
 * come with another (a recreated cluster), a scan or count starts over.
 */
#include "client_int.h"

#include "proto/clock.h"
#include "proto/mem.h"

#include <string.h>
#include <time.h>

#define NS_PER_MS 1000000ull

typedef struct part_group {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    size_t left; /* parts not finished */
} part_group;

typedef struct part {
    cl_op op;
    shoal_op u;
    part_group *g;
    uint32_t *items; /* op indexes (batch) or shard numbers */
    size_t n_items;
    shoal_batch_op *bops; /* batch: this node's ops, caller order */
    shoal_err *bres;      /* batch: their statuses */
} part;

/* One round's parts, and the map they were cut by. */
typedef struct round {
    part *parts;
    size_t n_parts;
    uint64_t epoch;
    uint32_t shard_count;
} round;

/* Kind-specific: the node serving item i under m. */
typedef struct splitter {
    cl_op *parent;
    const uint32_t *items;
    size_t n;
    uint64_t spin; /* read_any */
} splitter;

static uint32_t
item_node(const splitter *s, const cl_map *m, size_t i)
{
    const cl_op *p = s->parent;
    if (p->kind == CL_BATCH) {
        const shoal_batch_op *b = &p->in.batch.ops[s->items[i]];
        return shoal__map_route(m, b->key, b->klen, false, 0, NULL);
    }
    uint32_t shard = s->items[i];
    return cl_map_node_of(m, shard, p->read_any, s->spin + shard);
}

static void
part_done(cl_op *op)
{
    part *p = (part *) op;
    pthread_mutex_lock(&p->g->mu);
    p->g->left--;
    pthread_cond_signal(&p->g->cv);
    pthread_mutex_unlock(&p->g->mu);
}

static void
round_free(round *r)
{
    for (size_t i = 0; r->parts != NULL && i < r->n_parts; i++) {
        part *p = &r->parts[i];
        mem_free(p->items);
        mem_free(p->bops);
        mem_free(p->bres);
        if (p->op.kind == CL_SCAN)
            mem_free(p->op.out.page);
    }
    mem_free(r->parts);
    r->parts = NULL;
    r->n_parts = 0;
}

/* Node of every item and the parts, under the read lock; each part gets
 * its items and the conn of its node (NULL: cannot be reached). */
static shoal_err
cut_locked(shoal *db, const cl_map *m, const splitter *s, round *r,
           cl_conn **conns)
{
    cl_split *sp = NULL;
    uint32_t *node_of = mem_alloc((s->n > 0 ? s->n : 1) * sizeof(uint32_t));
    if (node_of == NULL)
        return SHOAL_ENOMEM;
    for (size_t i = 0; i < s->n; i++)
        node_of[i] = item_node(s, m, i);
    shoal_err rc = shoal__split(node_of, s->n, m->n_nodes, &sp);
    mem_free(node_of);
    if (rc != SHOAL_OK)
        return rc;
    r->parts = mem_calloc(sp->n_groups > 0 ? sp->n_groups : 1, sizeof(part));
    rc = r->parts != NULL ? SHOAL_OK : SHOAL_ENOMEM;
    for (size_t g = 0; rc == SHOAL_OK && g < sp->n_groups; g++) {
        part *p = &r->parts[g];
        size_t k = sp->start[g + 1] - sp->start[g];
        r->n_parts++;
        if ((p->items = mem_alloc(k * sizeof(uint32_t))) == NULL) {
            rc = SHOAL_ENOMEM;
            break;
        }
        for (size_t j = 0; j < k; j++)
            p->items[j] = s->items[sp->idx[sp->start[g] + j]];
        p->n_items = k;
        conns[g] = cl_node_conn(db, (cl_map *) m, sp->node[g]);
    }
    mem_free(sp);
    return rc;
}

static shoal_err
cut(shoal *db, const splitter *s, round *r, cl_conn ***conns_out)
{
    shoal_err rc = SHOAL_EUNAVAILABLE;
    *conns_out = NULL;
    pthread_rwlock_rdlock(&db->map_lock);
    const cl_map *m = db->map;
    if (m != NULL) {
        r->epoch = m->epoch;
        r->shard_count = m->shard_count;
        rc = SHOAL_ENOMEM;
        *conns_out = mem_calloc(m->n_nodes, sizeof(cl_conn *));
        if (*conns_out != NULL)
            rc = cut_locked(db, m, s, r, *conns_out);
    }
    pthread_rwlock_unlock(&db->map_lock);
    return rc;
}

/* ---- per-kind part setup ----------------------------------------------------
 */

static shoal_err
setup_batch(const cl_op *parent, part *p)
{
    p->bops = mem_alloc(p->n_items * sizeof(shoal_batch_op));
    p->bres = mem_alloc(p->n_items * sizeof(shoal_err));
    if (p->bops == NULL || p->bres == NULL)
        return SHOAL_ENOMEM;
    size_t est = CL_OP_OVERHEAD;
    for (size_t j = 0; j < p->n_items; j++) {
        const shoal_batch_op *b = &parent->in.batch.ops[p->items[j]];
        p->bops[j] = *b;
        p->bres[j] = SHOAL_EUNAVAILABLE;
        est += CL_OP_OVERHEAD / 2 + b->klen +
               (b->kind == SHOAL_BATCH_PUT ? b->vlen : 0);
    }
    p->op.in.batch.ops = p->bops;
    p->op.in.batch.n = p->n_items;
    p->op.out.batch.res = p->bres;
    p->op.est_bytes = est;
    return SHOAL_OK;
}

static shoal_err
setup_part(const cl_op *parent, part *p, part_group *g)
{
    cl_op *op = &p->op;
    p->g = g;
    p->u.key = parent->u->key; /* count: the prefix */
    p->u.klen = parent->u->klen;
    op->db = parent->db;
    op->kind = parent->kind;
    op->u = &p->u;
    op->deadline_ns = parent->deadline_ns;
    op->w = parent->w;
    op->read_any = parent->read_any;
    op->part = true;
    op->done = part_done;
    cl_op_reset_outputs(op);
    if (parent->kind == CL_BATCH)
        return setup_batch(parent, p);
    op->in.scan = parent->in.scan;
    op->shards = p->items;
    op->n_shards = p->n_items;
    op->est_bytes = parent->est_bytes + 5 * p->n_items;
    return SHOAL_OK;
}

/* ---- rounds ----------------------------------------------------------------
 */

/* Cut the pending items into parts and run them to completion. */
static shoal_err
run_round(shoal *db, cl_op *parent, const uint32_t *items, size_t n, round *r)
{
    cl_conn **conns = NULL;
    part_group g = {.left = 0};
    splitter s = {.parent = parent, .items = items, .n = n};
    if (parent->read_any)
        s.spin = atomic_fetch_add(&db->spin, 1);
    shoal_err rc = cut(db, &s, r, &conns);
    for (size_t i = 0; rc == SHOAL_OK && i < r->n_parts; i++)
        rc = setup_part(parent, &r->parts[i], &g);
    if (rc != SHOAL_OK) {
        mem_free(conns);
        round_free(r);
        return rc;
    }
    pthread_mutex_init(&g.mu, NULL);
    pthread_cond_init(&g.cv, NULL);
    g.left = r->n_parts;
    for (size_t i = 0; i < r->n_parts; i++) {
        part *p = &r->parts[i];
        p->op.pin = conns[i];
        p->op.map_epoch = r->epoch; /* the map it was cut by */
        if (conns[i] == NULL) {
            p->op.st =
                atomic_load(&db->closing) ? SHOAL_ECLOSED : SHOAL_EUNAVAILABLE;
            part_done(&p->op);
            continue;
        }
        cl_dispatch(db, &p->op);
    }
    pthread_mutex_lock(&g.mu);
    while (g.left > 0)
        pthread_cond_wait(&g.cv, &g.mu);
    pthread_mutex_unlock(&g.mu);
    pthread_cond_destroy(&g.cv);
    pthread_mutex_destroy(&g.mu);
    mem_free(conns);
    return SHOAL_OK;
}

/* Before another round: false when out of rounds or time. Waits for a map
 * newer than epoch, at most the backoff (5 ms doubling to 200 ms). */
static bool
next_round(shoal *db, const cl_op *parent, unsigned *rounds,
           uint32_t *backoff_ms, uint64_t epoch)
{
    if (++*rounds > CL_REDIRECT_MAX || atomic_load(&db->closing))
        return false;
    *backoff_ms = *backoff_ms == 0 ? CL_BACKOFF_MIN_MS : *backoff_ms * 2;
    if (*backoff_ms > CL_BACKOFF_MAX_MS)
        *backoff_ms = CL_BACKOFF_MAX_MS;
    uint64_t until = clock_mono_ns() + *backoff_ms * NS_PER_MS;
    struct timespec step = {0, 1000000};
    while (atomic_load(&db->map_epoch) <= epoch) {
        uint64_t now = clock_mono_ns();
        if (now >= parent->deadline_ns)
            return false;
        if (now >= until)
            break;
        nanosleep(&step, NULL);
    }
    return clock_mono_ns() < parent->deadline_ns;
}

/* ---- batch -----------------------------------------------------------------
 */

/* Take a round's answers into res; the ops to send again go to pending
 * (*n_pending). *version gets the single part's version when there is
 * exactly one. */
static void
batch_take(const round *r, shoal_err *res, uint32_t *pending, size_t *n_pending,
           uint64_t *version)
{
    *n_pending = 0;
    for (size_t i = 0; i < r->n_parts; i++) {
        const part *p = &r->parts[i];
        bool got = p->op.out.batch.got;
        if (got && r->n_parts == 1)
            *version = p->op.out.batch.version;
        for (size_t j = 0; j < p->n_items; j++) {
            shoal_err st = got ? p->bres[j] : p->op.st;
            res[p->items[j]] = st;
            if (st == SHOAL_EWRONGSHARD)
                pending[(*n_pending)++] = p->items[j];
        }
    }
}

shoal_err
cl_multi_batch(shoal *db, cl_op *op)
{
    size_t n = op->in.batch.n, n_pending = n;
    shoal_err *res = mem_alloc(n * sizeof(*res));
    uint32_t *pending = mem_alloc(n * sizeof(*pending));
    unsigned rounds = 0;
    uint32_t backoff = 0;
    shoal_err rc = SHOAL_ENOMEM;
    if (res == NULL || pending == NULL)
        goto out;
    for (size_t i = 0; i < n; i++)
        pending[i] = (uint32_t) i;
    for (;;) {
        round r = {0};
        uint64_t version = 0;
        bool whole = n_pending == n; /* this round carries every op */
        if ((rc = run_round(db, op, pending, n_pending, &r)) != SHOAL_OK) {
            for (size_t i = 0; i < n_pending; i++)
                res[pending[i]] = rc;
            break;
        }
        batch_take(&r, res, pending, &n_pending, &version);
        if (whole && r.n_parts == 1)
            op->out.batch.version = version;
        round_free(&r);
        if (n_pending == 0 || !next_round(db, op, &rounds, &backoff, r.epoch))
            break;
    }
    if (op->out.batch.res != NULL)
        memcpy(op->out.batch.res, res, n * sizeof(*res));
    op->out.batch.got = true;
    rc = shoal__batch_status(res, n);
out:
    mem_free(res);
    mem_free(pending);
    return rc;
}

/* ---- scan and count --------------------------------------------------------
 */

/* What a scan or count has gathered so far. */
typedef struct gather {
    shoal_scan_page **pages; /* scan: one per part answered, owned */
    size_t n_pages;
    uint64_t *counts; /* count */
    size_t n_counts;
    size_t cap;
    uint32_t shard_count; /* the items' numbering */
} gather;

static void
gather_reset(gather *g)
{
    for (size_t i = 0; i < g->n_pages; i++)
        mem_free(g->pages[i]);
    g->n_pages = 0;
    g->n_counts = 0;
}

static shoal_err
gather_grow(gather *g, size_t more)
{
    size_t need = (g->n_pages > g->n_counts ? g->n_pages : g->n_counts) + more;
    if (need <= g->cap)
        return SHOAL_OK;
    size_t cap = need * 2;
    shoal_scan_page **p = mem_realloc(g->pages, cap * sizeof(*p));
    if (p == NULL)
        return SHOAL_ENOMEM;
    g->pages = p;
    uint64_t *c = mem_realloc(g->counts, cap * sizeof(*c));
    if (c == NULL)
        return SHOAL_ENOMEM;
    g->counts = c;
    g->cap = cap;
    return SHOAL_OK;
}

/* Take a round's answers: pages or counts kept, EWRONGSHARD parts' shards
 * back to pending; any other failure is the call's. */
static shoal_err
gather_take(gather *g, round *r, uint32_t *pending, size_t *n_pending)
{
    shoal_err rc;
    *n_pending = 0;
    if ((rc = gather_grow(g, r->n_parts)) != SHOAL_OK)
        return rc;
    for (size_t i = 0; i < r->n_parts; i++) {
        part *p = &r->parts[i];
        shoal_err st = p->op.st;
        if (st == SHOAL_EWRONGSHARD) {
            memcpy(pending + *n_pending, p->items,
                   p->n_items * sizeof(uint32_t));
            *n_pending += p->n_items;
        } else if (st != SHOAL_OK) {
            return st;
        } else if (p->op.kind == CL_SCAN) {
            g->pages[g->n_pages++] = p->op.out.page;
            p->op.out.page = NULL;
        } else {
            g->counts[g->n_counts++] = p->op.out.count;
        }
    }
    return SHOAL_OK;
}

/* Pending = every shard of the map in force (the first round, or after the
 * shard count changed). */
static shoal_err
all_shards(shoal *db, gather *g, uint32_t **pending, size_t *n_pending)
{
    pthread_rwlock_rdlock(&db->map_lock);
    uint32_t sc = db->map != NULL ? db->map->shard_count : 0;
    pthread_rwlock_unlock(&db->map_lock);
    if (sc == 0)
        return SHOAL_EUNAVAILABLE;
    uint32_t *v = mem_realloc(*pending, sc * sizeof(uint32_t));
    if (v == NULL)
        return SHOAL_ENOMEM;
    for (uint32_t i = 0; i < sc; i++)
        v[i] = i;
    *pending = v;
    *n_pending = sc;
    gather_reset(g);
    g->shard_count = sc;
    return SHOAL_OK;
}

static shoal_err
gather_all(shoal *db, cl_op *op, gather *g)
{
    uint32_t *pending = NULL;
    size_t n_pending = 0;
    unsigned rounds = 0;
    uint32_t backoff = 0;
    shoal_err rc = all_shards(db, g, &pending, &n_pending);
    while (rc == SHOAL_OK) {
        round r = {0};
        if ((rc = run_round(db, op, pending, n_pending, &r)) != SHOAL_OK)
            break;
        if (r.shard_count != g->shard_count) {
            round_free(&r); /* cut by a map of another numbering */
            rc = all_shards(db, g, &pending, &n_pending);
            continue;
        }
        rc = gather_take(g, &r, pending, &n_pending);
        round_free(&r);
        if (rc != SHOAL_OK || n_pending == 0)
            break;
        if (!next_round(db, op, &rounds, &backoff, r.epoch))
            rc = atomic_load(&db->closing) ? SHOAL_ECLOSED : SHOAL_EWRONGSHARD;
    }
    mem_free(pending);
    return rc;
}

shoal_err
cl_multi_scan(shoal *db, cl_op *op)
{
    gather g = {0};
    const shoal_scan_req *q = op->in.scan;
    shoal_err rc = gather_all(db, op, &g);
    if (rc == SHOAL_OK)
        rc =
            shoal__scan_merge((const shoal_scan_page *const *) g.pages,
                              g.n_pages, q->limit, q->keys_only, &op->out.page);
    gather_reset(&g);
    mem_free(g.pages);
    mem_free(g.counts);
    return rc;
}

shoal_err
cl_multi_count(shoal *db, cl_op *op)
{
    gather g = {0};
    shoal_err rc = gather_all(db, op, &g);
    if (rc == SHOAL_OK)
        rc = shoal__count_sum(g.counts, g.n_counts, &op->out.count);
    gather_reset(&g);
    mem_free(g.pages);
    mem_free(g.counts);
    return rc;
}
