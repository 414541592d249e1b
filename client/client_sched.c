/*
 * client_sched.c -- what happens to an op after a verdict: retry with
 * backoff or finish; the timer thread that runs retries and expires
 * deadlines; routing; the cluster map; the op pool.
 *
 * Retries: an op whose verdict says retry waits on the handle's delayed
 * list for its backoff (5 ms, doubling to 200 ms), unless its deadline comes
 * first (then it finishes with the status that made it retry). The timer
 * thread wakes at the earliest due retry, and at least every CL_SWEEP_MS to
 * expire ops past their deadline in every conn's queue and frames in flight,
 * so nothing waits forever whatever the network does.
 *
 * Routing: a key op is routed at every attempt by the map in force then
 * (key -> shard -> primary, or any replica for read_any reads), so a retry
 * after EWRONGSHARD goes where the newer map says. Connections are per node
 * address, opened on first use and kept until close (a node that left the
 * map keeps its conn; they are few).
 *
 * Threads: the timer thread and nng's callback threads settle ops; user
 * threads submit. db->mtx guards the delayed list and the timer's state;
 * map_lock (rwlock) the map; conns_mtx the opening of conns; the pool has
 * its own lock. Lock order: map_lock, then conns_mtx, then a conn's mtx.
 * Callbacks (op->done) run with no libshoal lock held.
 */
#include "client_int.h"

#include "proto/clock.h"
#include "proto/mem.h"

#include <errno.h>
#include <string.h>
#include <time.h>

#define NS_PER_MS 1000000ull
#define SLAB_OPS  128u

struct cl_slab {
    cl_slab *next;
    cl_op ops[SLAB_OPS];
};

/* ---- routing
 * -----------------------------------------------------------------
 */

void
cl_conn_list_push(shoal *db, cl_conn *c)
{
    cl_conn *head = atomic_load(&db->conn_list);
    do
        c->list_next = head;
    while (!atomic_compare_exchange_weak(&db->conn_list, &head, c));
}

static cl_conn *
find_conn(shoal *db, const char *url)
{
    for (cl_conn *c = atomic_load(&db->conn_list); c != NULL; c = c->list_next)
        if (strcmp(c->url, url) == 0)
            return c;
    return NULL;
}

/* A one-node map names the node that served it: the seed that answered
 * open, whatever address it advertises (behind a relay or NAT the seed URL
 * is the one that works). Otherwise the conn with the node's address,
 * opened now if there is none. */
cl_conn *
cl_node_conn(shoal *db, cl_map *m, uint32_t ni)
{
    cl_map_node *nd = &m->nodes[ni];
    cl_conn *c = atomic_load(&nd->conn);
    if (c != NULL)
        return c;
    pthread_mutex_lock(&db->conns_mtx);
    if (db->conns_closed) {
        pthread_mutex_unlock(&db->conns_mtx);
        return NULL;
    }
    if ((c = atomic_load(&nd->conn)) == NULL) {
        c = m->n_nodes == 1 ? atomic_load(&db->home) : NULL;
        if (c == NULL)
            c = find_conn(db, nd->addr);
        if (c == NULL) {
            shoal_err rc = cl_conn_open(db, nd->addr, &c);
            if (rc == SHOAL_OK)
                cl_conn_list_push(db, c);
            else
                cl_log(1, "node %s (%s): cannot open a connection: %s", nd->id,
                       nd->addr, shoal_strerror(rc));
        }
        if (c != NULL)
            atomic_store(&nd->conn, c);
    }
    pthread_mutex_unlock(&db->conns_mtx);
    return c;
}

cl_conn *
cl_route(shoal *db, cl_op *op)
{
    cl_conn *c = NULL;
    pthread_rwlock_rdlock(&db->map_lock);
    cl_map *m = db->map;
    if (m != NULL) {
        uint64_t spin = op->read_any ? atomic_fetch_add(&db->spin, 1) : 0;
        uint32_t shard = 0;
        uint32_t ni = shoal__map_route(m, op->u->key, op->u->klen, op->read_any,
                                       spin, &shard);
        op->map_epoch = m->epoch;
        c = cl_node_conn(db, m, ni);
        /* read_any: rather a replica we are connected to than one that is
         * down (which would only hold the read until its deadline). */
        uint32_t nr = m->shards[shard].n_replicas;
        for (uint32_t k = 1;
             op->read_any && k < nr && c != NULL && !cl_conn_up(c); k++) {
            cl_conn *alt =
                cl_node_conn(db, m, cl_map_node_of(m, shard, true, spin + k));
            if (alt != NULL && cl_conn_up(alt))
                c = alt;
        }
    }
    pthread_rwlock_unlock(&db->map_lock);
    return c;
}

void
cl_dispatch(shoal *db, cl_op *op)
{
    cl_conn *c = op->pin;
    if (c == NULL)
        c = cl_route(db, op);
    if (c == NULL) {
        op->st = atomic_load(&db->closing) ? SHOAL_ECLOSED : SHOAL_EUNAVAILABLE;
        cl_finish(op);
        return;
    }
    cl_conn_submit(c, op);
}

void
cl_op_settings(shoal *db, cl_op *op, const shoal_call *call)
{
    uint32_t w = 0;
    op->w = 0;
    op->read_any = false;
    if (!cl_is_write(op->kind)) {
        op->read_any = db->o.read_any || (call != NULL && call->read_any);
        if (op->kind == CL_STATS || op->kind == CL_MAP ||
            op->kind == CL_CSTATUS)
            op->read_any = false;
        return;
    }
    if (op->kind == CL_PUT)
        w = op->u->opts.w;
    for (size_t i = 0; op->kind == CL_BATCH && i < op->in.batch.n; i++)
        if (op->in.batch.ops[i].opts.w > w)
            w = op->in.batch.ops[i].opts.w; /* the strictest asked for */
    if (w == 0 && call != NULL)
        w = call->w;
    op->w = w != 0 ? w : db->o.write_quorum;
}

/* ---- verdicts
 * --------------------------------------------------------------------
 */

void
cl_finish(cl_op *op)
{
    op->retry = false;
    op->done(op);
}

/* Put op on the delayed list; false if the handle is closing. */
static bool
delay(shoal *db, cl_op *op, uint64_t due_ns)
{
    pthread_mutex_lock(&db->mtx);
    if (atomic_load(&db->closing)) {
        pthread_mutex_unlock(&db->mtx);
        return false;
    }
    op->due_ns = due_ns;
    op->next = db->delayed;
    db->delayed = op;
    if (due_ns < db->timer_wake_ns) {
        db->timer_wake_ns = due_ns;
        pthread_cond_signal(&db->cv);
    }
    pthread_mutex_unlock(&db->mtx);
    return true;
}

static bool
try_retry(shoal *db, cl_op *op, uint64_t now_ns)
{
    uint32_t b = op->backoff_ms == 0 ? CL_BACKOFF_MIN_MS : op->backoff_ms * 2;
    if (b > CL_BACKOFF_MAX_MS)
        b = CL_BACKOFF_MAX_MS;
    uint64_t due = now_ns + b * NS_PER_MS;
    if (due >= op->deadline_ns)
        return false;
    op->backoff_ms = b;
    if (delay(db, op, due))
        return true;
    op->st = SHOAL_ECLOSED;
    return false;
}

/* EWRONGSHARD: the node did not run op. A part of a split call goes back
 * to its caller, which re-splits by the new map; other ops are routed
 * again, at once when a newer map is already in, else after a backoff
 * (the refresh is under way), at most CL_REDIRECT_MAX times. Returns
 * whether op was sent again. */
static bool
redirect(shoal *db, cl_op *op, uint64_t now)
{
    if (op->part || op->redirects >= CL_REDIRECT_MAX) {
        op->retry = false;
        return false;
    }
    op->redirects++;
    if (op->pin == NULL && op->deadline_ns > now &&
        atomic_load(&db->map_epoch) > op->map_epoch) {
        cl_dispatch(db, op);
        return true;
    }
    return try_retry(db, op, now);
}

void
cl_settle(shoal *db, cl_op *const *ops, size_t n)
{
    uint64_t now = clock_mono_ns();
    for (size_t i = 0; i < n; i++) {
        cl_op *op = ops[i];
        if (op == NULL)
            continue;
        if (op->retry && op->st == SHOAL_EWRONGSHARD) {
            if (redirect(db, op, now))
                continue;
        } else if (op->retry && try_retry(db, op, now)) {
            continue;
        }
        cl_finish(op);
    }
}

/* ---- the timer thread
 * -----------------------------------------------------------
 */

/* Unlink the ops due by now; *next_due gets the earliest later one. */
static cl_op *
take_due_locked(shoal *db, uint64_t now, uint64_t *next_due)
{
    cl_op *due = NULL, **pp = &db->delayed;
    while (*pp != NULL) {
        cl_op *op = *pp;
        if (op->due_ns <= now) {
            *pp = op->next;
            op->next = due;
            due = op;
            continue;
        }
        if (op->due_ns < *next_due)
            *next_due = op->due_ns;
        pp = &op->next;
    }
    return due;
}

static void
wait_until(shoal *db, uint64_t wake_ns)
{
    struct timespec ts = {
        .tv_sec = (time_t) (wake_ns / 1000000000ull),
        .tv_nsec = (long) (wake_ns % 1000000000ull),
    };
    pthread_cond_timedwait(&db->cv, &db->mtx, &ts);
}

static void
run_due(shoal *db, cl_op *due, uint64_t now)
{
    while (due != NULL) {
        cl_op *next = due->next;
        if (due->deadline_ns <= now)
            cl_finish(due);
        else
            cl_dispatch(db, due);
        due = next;
    }
}

static void *
timer_main(void *arg)
{
    shoal *db = arg;
    pthread_mutex_lock(&db->mtx);
    while (!db->timer_stop) {
        uint64_t now = clock_mono_ns();
        uint64_t wake = now + CL_SWEEP_MS * NS_PER_MS;
        cl_op *due = take_due_locked(db, now, &wake);
        db->timer_wake_ns = wake;
        pthread_mutex_unlock(&db->mtx);
        run_due(db, due, now);
        for (cl_conn *c = atomic_load(&db->conn_list); c != NULL;
             c = c->list_next)
            cl_conn_sweep(c, now);
        pthread_mutex_lock(&db->mtx);
        if (!db->timer_stop && clock_mono_ns() < db->timer_wake_ns)
            wait_until(db, db->timer_wake_ns);
    }
    pthread_mutex_unlock(&db->mtx);
    return NULL;
}

shoal_err
cl_timer_start(shoal *db)
{
    if (pthread_create(&db->timer, NULL, timer_main, db) != 0)
        return SHOAL_ENOMEM;
    db->timer_running = true;
    return SHOAL_OK;
}

void
cl_timer_stop(shoal *db)
{
    if (!db->timer_running)
        return;
    pthread_mutex_lock(&db->mtx);
    db->timer_stop = true;
    pthread_cond_signal(&db->cv);
    pthread_mutex_unlock(&db->mtx);
    pthread_join(db->timer, NULL);
    db->timer_running = false;
}

/* ---- the cluster map
 * -------------------------------------------------------------
 */

shoal_err
cl_map_copy(const Shoal__ClusterMap *m, cl_map **out)
{
    char err[160];
    shoal_err rc = shoal__map_from_pb(m, out, err, sizeof(err));
    if (rc == SHOAL_EIO)
        cl_log(0, "cluster map (epoch %llu) rejected: %s",
               (unsigned long long) m->epoch, err);
    return rc;
}

/* The old map is freed under the write lock: routers hold the read lock
 * for as long as they look at a map (its nodes' conns outlive it: they are
 * on the conn list until close). */
void
cl_map_adopt(shoal *db, cl_map *m)
{
    pthread_rwlock_wrlock(&db->map_lock);
    if (db->map == NULL || m->epoch > db->map->epoch) {
        cl_map *old = db->map;
        if (old != NULL)
            cl_log(3, "cluster map epoch %llu -> %llu",
                   (unsigned long long) old->epoch,
                   (unsigned long long) m->epoch);
        db->map = m;
        m = old;
        atomic_store(&db->map_epoch, db->map->epoch);
    }
    pthread_rwlock_unlock(&db->map_lock);
    mem_free(m);
}

typedef struct aux_op {
    cl_op op;
    shoal_op u;
} aux_op;

static void
refresh_done(cl_op *op)
{
    shoal *db = op->db;
    if (op->st == SHOAL_OK && op->out.map != NULL)
        cl_map_adopt(db, op->out.map);
    else
        mem_free(op->out.map);
    pthread_mutex_lock(&db->mtx);
    db->map_refreshing = false;
    pthread_mutex_unlock(&db->mtx);
    mem_free(op);
}

void
cl_map_refresh(shoal *db, cl_conn *from)
{
    cl_conn *c = from != NULL ? from : atomic_load(&db->home);
    if (atomic_load(&db->home) == NULL || c == NULL)
        return; /* still opening: the open's own map request decides */
    pthread_mutex_lock(&db->mtx);
    bool busy = db->map_refreshing || atomic_load(&db->closing);
    db->map_refreshing = true;
    pthread_mutex_unlock(&db->mtx);
    if (busy)
        return;
    aux_op *a = mem_calloc(1, sizeof(*a));
    if (a == NULL) {
        pthread_mutex_lock(&db->mtx);
        db->map_refreshing = false;
        pthread_mutex_unlock(&db->mtx);
        return;
    }
    a->op.db = db;
    a->op.kind = CL_MAP;
    a->op.u = &a->u;
    a->op.pin = c;
    a->op.est_bytes = CL_OP_OVERHEAD;
    a->op.deadline_ns = clock_mono_ns() + db->o.timeout_ms * NS_PER_MS;
    a->op.done = refresh_done;
    cl_dispatch(db, &a->op);
}

/* ---- op pool
 * ---------------------------------------------------------------------
 */

cl_op *
cl_pool_get(shoal *db)
{
    pthread_mutex_lock(&db->pool_mtx);
    if (db->pool == NULL) {
        cl_slab *s = mem_alloc(sizeof(*s));
        if (s == NULL) {
            pthread_mutex_unlock(&db->pool_mtx);
            return NULL;
        }
        s->next = db->slabs;
        db->slabs = s;
        for (unsigned i = 0; i < SLAB_OPS; i++) {
            s->ops[i].next = db->pool;
            db->pool = &s->ops[i];
        }
    }
    cl_op *op = db->pool;
    db->pool = op->next;
    pthread_mutex_unlock(&db->pool_mtx);
    memset(op, 0, sizeof(*op));
    op->pooled = true;
    return op;
}

void
cl_pool_put(shoal *db, cl_op *op)
{
    pthread_mutex_lock(&db->pool_mtx);
    op->next = db->pool;
    db->pool = op;
    pthread_mutex_unlock(&db->pool_mtx);
}

void
cl_pool_fini(shoal *db)
{
    while (db->slabs != NULL) {
        cl_slab *next = db->slabs->next;
        mem_free(db->slabs);
        db->slabs = next;
    }
    db->pool = NULL;
}
