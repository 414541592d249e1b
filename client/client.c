/*
 * client.c -- libshoal's public API (include/shoal.h).
 *
 * Every call becomes a cl_op handed to cl_dispatch: asynchronous calls take
 * theirs from the handle's pool and finish through the user's callback;
 * blocking calls keep theirs on the stack and sleep on a condition variable
 * until it finishes. Batch, scan, count and stats (not in shoal_op_kind) use
 * internal op kinds on the same path, so they coalesce and retry like the
 * rest.
 *
 * Arguments are checked here, before anything is sent: empty key
 * SHOAL_EINVAL, key over 1024 bytes or value over 16 MiB SHOAL_ETOOLARGE
 * (DESIGN §2 defaults), an op that cannot fit in max_frame_bytes
 * SHOAL_ETOOLARGE.
 *
 * Close and concurrent calls: db->users counts threads inside a call; close
 * sets closing (new calls get SHOAL_ECLOSED), fails what is pending, and
 * waits for users to reach zero before it frees anything.
 */
#include "client_int.h"

#include "proto/clock.h"
#include "proto/mem.h"
#include "proto/slog.h"

#include <sodium.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define NS_PER_MS      1000000ull
#define FRAME_OVERHEAD (WIRE_HDR_BYTES + WIRE_TAG_BYTES + 64u)

/* ---- logging
 * -----------------------------------------------------------------
 */

static pthread_mutex_t log_mtx = PTHREAD_MUTEX_INITIALIZER;
static shoal_log_fn log_fn; /* log_mtx */
static void *log_arg;       /* log_mtx */
static _Atomic int log_max = -1;

static void vlog(int level, const char *fmt, va_list ap)
    __attribute__((format(printf, 2, 0)));

static void
vlog(int level, const char *fmt, va_list ap)
{
    char msg[512];
    vsnprintf(msg, sizeof(msg), fmt, ap);
    pthread_mutex_lock(&log_mtx);
    shoal_log_fn fn = log_fn;
    void *arg = log_arg;
    pthread_mutex_unlock(&log_mtx);
    if (fn != NULL)
        fn(arg, level, msg);
}

void
cl_log(int level, const char *fmt, ...)
{
    if (level > atomic_load_explicit(&log_max, memory_order_relaxed))
        return;
    va_list ap;
    va_start(ap, fmt);
    vlog(level, fmt, ap);
    va_end(ap);
}

/* Lines from proto/ code linked into libshoal (wire, pbuf) go to the hook
 * too: libshoal never writes to stderr. */
static void
slog_forward(void *arg, slog_level level, const char *module, const char *msg)
{
    (void) arg;
    cl_log((int) level, "%s: %s", module, msg);
}

__attribute__((constructor)) static void
lib_init(void)
{
    slog_set_sink(slog_forward, NULL);
    atomic_store(&slog_max_level, -1);
}

void
shoal_set_logger(shoal_log_fn fn, void *arg, int max_level)
{
    pthread_mutex_lock(&log_mtx);
    log_fn = fn;
    log_arg = arg;
    pthread_mutex_unlock(&log_mtx);
    int max = fn != NULL ? max_level : -1;
    atomic_store(&log_max, max);
    atomic_store(&slog_max_level, max);
}

/* ---- options
 * -------------------------------------------------------------------
 */

void
shoal_opts_default(shoal_opts *o)
{
    memset(o, 0, sizeof(*o));
    o->timeout_ms = 5000;
    o->connect_timeout_ms = 5000;
    o->max_frame_ops = 1024;
    o->max_inflight = 4;
    o->max_frame_bytes = 64u << 20;
}

static bool
url_ok(const char *u)
{
    if (u == NULL)
        return false;
    if (strncmp(u, "tcp://", 6) == 0)
        return u[6] != '\0';
    if (strncmp(u, "ipc://", 6) == 0)
        return u[6] != '\0';
    return false;
}

static shoal_err
check_opts(const shoal_opts *o)
{
    if (o == NULL || o->seeds == NULL || o->n_seeds == 0 || o->n_seeds > 64)
        return SHOAL_EINVAL;
    for (size_t i = 0; i < o->n_seeds; i++)
        if (!url_ok(o->seeds[i]))
            return SHOAL_EINVAL;
    bool has_key = o->key_file != NULL && o->key_file[0] != '\0';
    if (has_key == o->insecure)
        return SHOAL_EINVAL;
    if (o->max_inflight > 1024 || o->max_frame_ops > (1u << 20) ||
        (o->max_frame_bytes != 0 &&
         (o->max_frame_bytes < 4096 || o->max_frame_bytes > (1u << 30))))
        return SHOAL_EINVAL;
    return SHOAL_OK;
}

static void
apply_defaults(shoal_opts *d, const shoal_opts *o)
{
    shoal_opts_default(d);
    d->insecure = o->insecure;
    if (o->timeout_ms != 0)
        d->timeout_ms = o->timeout_ms;
    if (o->connect_timeout_ms != 0)
        d->connect_timeout_ms = o->connect_timeout_ms;
    if (o->max_frame_ops != 0)
        d->max_frame_ops = o->max_frame_ops;
    if (o->max_inflight != 0)
        d->max_inflight = o->max_inflight;
    if (o->max_frame_bytes != 0)
        d->max_frame_bytes = o->max_frame_bytes;
    d->read_any = o->read_any;
    d->write_quorum = o->write_quorum;
}

/* ---- entering and leaving calls
 * ---------------------------------------------------
 */

static bool
enter(shoal *db)
{
    atomic_fetch_add(&db->users, 1);
    if (atomic_load(&db->closing)) {
        atomic_fetch_sub(&db->users, 1);
        return false;
    }
    return true;
}

static void
leave(shoal *db)
{
    atomic_fetch_sub(&db->users, 1);
}

static uint64_t
deadline_of(const shoal *db, const shoal_call *call)
{
    uint32_t ms = call != NULL && call->timeout_ms != 0 ? call->timeout_ms
                                                        : db->o.timeout_ms;
    return clock_mono_ns() + (uint64_t) ms * NS_PER_MS;
}

/* ---- blocking calls
 * ------------------------------------------------------------------
 */

typedef struct cl_wait {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool done;
} cl_wait;

static void
wait_done(cl_op *op)
{
    cl_wait *w = op->arg;
    if (op->kind == CL_GET && op->st == SHOAL_OK) {
        size_t n = op->u->out_vlen;
        op->out.get.copy = mem_alloc(n == 0 ? 1 : n);
        if (op->out.get.copy == NULL)
            op->st = SHOAL_ENOMEM;
        else if (n > 0)
            memcpy(op->out.get.copy, op->u->out_val, n);
    }
    pthread_mutex_lock(&w->mu);
    w->done = true;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

/* Send op and wait until it finishes. */
static shoal_err
run_one(shoal *db, cl_op *op)
{
    cl_wait w = {.done = false};
    pthread_mutex_init(&w.mu, NULL);
    pthread_cond_init(&w.cv, NULL);
    op->done = wait_done;
    op->arg = &w;
    cl_dispatch(db, op);
    pthread_mutex_lock(&w.mu);
    while (!w.done)
        pthread_cond_wait(&w.cv, &w.mu);
    pthread_mutex_unlock(&w.mu);
    pthread_cond_destroy(&w.cv);
    pthread_mutex_destroy(&w.mu);
    return op->st;
}

/* Run op (kind, u, in set) to completion: batch, scan and count as calls
 * that span nodes (client_multi.c), the rest as one op. */
static shoal_err
run_blocking(shoal *db, cl_op *op, const shoal_call *call)
{
    shoal_err rc;
    if (op->est_bytes + FRAME_OVERHEAD > db->o.max_frame_bytes)
        return SHOAL_ETOOLARGE;
    if (!enter(db))
        return SHOAL_ECLOSED;
    op->db = db;
    if (call != NULL)
        op->u->call = *call;
    op->deadline_ns = deadline_of(db, call);
    cl_op_reset_outputs(op);
    cl_op_settings(db, op, call);
    switch (op->kind) {
    case CL_BATCH:
        rc = cl_multi_batch(db, op);
        break;
    case CL_SCAN:
        rc = cl_multi_scan(db, op);
        break;
    case CL_COUNT:
        rc = cl_multi_count(db, op);
        break;
    default:
        rc = run_one(db, op);
        break;
    }
    leave(db);
    return rc;
}

static shoal_err
check_key(const void *key, size_t klen)
{
    if (key == NULL || klen == 0)
        return SHOAL_EINVAL;
    return klen > CL_KEY_MAX ? SHOAL_ETOOLARGE : SHOAL_OK;
}

static shoal_err
check_val(const void *val, size_t vlen)
{
    if (val == NULL && vlen > 0)
        return SHOAL_EINVAL;
    return vlen > CL_VALUE_MAX ? SHOAL_ETOOLARGE : SHOAL_OK;
}

/* Check u's inputs for its kind; *est the packed size estimate. */
static shoal_err
check_op(const shoal_op *u, size_t *est)
{
    shoal_err rc;
    if (u->kind < SHOAL_OP_GET || u->kind > SHOAL_OP_EXISTS)
        return SHOAL_EINVAL;
    if ((rc = check_key(u->key, u->klen)) != SHOAL_OK)
        return rc;
    *est = CL_OP_OVERHEAD + u->klen;
    if (u->kind != SHOAL_OP_PUT)
        return SHOAL_OK;
    if ((rc = check_val(u->val, u->vlen)) != SHOAL_OK)
        return rc;
    *est += u->vlen;
    return SHOAL_OK;
}

/* A blocking call of one of the six shoal_op kinds. */
static shoal_err
run_simple(shoal *db, shoal_op *u, cl_op *op, const shoal_call *call)
{
    size_t est = 0;
    shoal_err rc;
    if (db == NULL)
        return SHOAL_EINVAL;
    if ((rc = check_op(u, &est)) != SHOAL_OK)
        return rc;
    op->kind = (cl_kind) u->kind;
    op->u = u;
    op->est_bytes = est;
    return run_blocking(db, op, call);
}

shoal_err
shoal_get(shoal *db, const void *key, size_t klen, void **val_out,
          size_t *vlen_out, uint64_t *version_out, const shoal_call *call)
{
    if (val_out == NULL || vlen_out == NULL)
        return SHOAL_EINVAL;
    *val_out = NULL;
    *vlen_out = 0;
    shoal_op u = {.kind = SHOAL_OP_GET, .key = key, .klen = klen};
    cl_op op = {.kind = CL_GET};
    shoal_err rc = run_simple(db, &u, &op, call);
    if (rc != SHOAL_OK)
        return rc;
    *val_out = op.out.get.copy;
    *vlen_out = u.out_vlen;
    if (version_out != NULL)
        *version_out = u.version;
    return SHOAL_OK;
}

shoal_err
shoal_put(shoal *db, const void *key, size_t klen, const void *val, size_t vlen,
          const shoal_put_opts *opts, uint64_t *version_out,
          const shoal_call *call)
{
    shoal_op u = {.kind = SHOAL_OP_PUT,
                  .key = key,
                  .klen = klen,
                  .val = val,
                  .vlen = vlen};
    if (opts != NULL)
        u.opts = *opts;
    cl_op op = {.kind = CL_PUT};
    shoal_err rc = run_simple(db, &u, &op, call);
    if (rc == SHOAL_OK && version_out != NULL)
        *version_out = u.version;
    return rc;
}

shoal_err
shoal_del(shoal *db, const void *key, size_t klen, const uint64_t *if_version,
          const shoal_call *call)
{
    shoal_op u = {.kind = SHOAL_OP_DEL, .key = key, .klen = klen};
    if (if_version != NULL) {
        u.opts.has_if_version = true;
        u.opts.if_version = *if_version;
    }
    cl_op op = {.kind = CL_DEL};
    return run_simple(db, &u, &op, call);
}

shoal_err
shoal_incr(shoal *db, const void *key, size_t klen, int64_t delta,
           int64_t *result_out, uint64_t *version_out, const shoal_call *call)
{
    shoal_op u = {
        .kind = SHOAL_OP_INCR, .key = key, .klen = klen, .delta = delta};
    cl_op op = {.kind = CL_INCR};
    shoal_err rc = run_simple(db, &u, &op, call);
    if (rc != SHOAL_OK)
        return rc;
    if (result_out != NULL)
        *result_out = u.result;
    if (version_out != NULL)
        *version_out = u.version;
    return SHOAL_OK;
}

shoal_err
shoal_ttl(shoal *db, const void *key, size_t klen, int64_t *ttl_ms_out,
          uint64_t *version_out, const shoal_call *call)
{
    shoal_op u = {.kind = SHOAL_OP_TTL, .key = key, .klen = klen};
    cl_op op = {.kind = CL_TTL};
    shoal_err rc = run_simple(db, &u, &op, call);
    if (rc != SHOAL_OK)
        return rc;
    if (ttl_ms_out != NULL)
        *ttl_ms_out = u.result;
    if (version_out != NULL)
        *version_out = u.version;
    return SHOAL_OK;
}

shoal_err
shoal_exists(shoal *db, const void *key, size_t klen, bool *exists_out,
             const shoal_call *call)
{
    if (exists_out == NULL)
        return SHOAL_EINVAL;
    *exists_out = false;
    shoal_op u = {.kind = SHOAL_OP_EXISTS, .key = key, .klen = klen};
    cl_op op = {.kind = CL_EXISTS};
    shoal_err rc = run_simple(db, &u, &op, call);
    if (rc == SHOAL_OK)
        *exists_out = u.exists;
    return rc;
}

shoal_err
shoal_count(shoal *db, const void *prefix, size_t plen, uint64_t *count_out,
            const shoal_call *call)
{
    if (db == NULL || count_out == NULL || (prefix == NULL && plen > 0))
        return SHOAL_EINVAL;
    *count_out = 0;
    if (plen > CL_KEY_MAX)
        return SHOAL_ETOOLARGE;
    shoal_op u = {.key = prefix, .klen = plen};
    cl_op op = {.kind = CL_COUNT, .u = &u, .est_bytes = CL_OP_OVERHEAD + plen};
    shoal_err rc = run_blocking(db, &op, call);
    if (rc == SHOAL_OK)
        *count_out = op.out.count;
    return rc;
}

shoal_err
shoal_stats_get(shoal *db, shoal_stats *out, const shoal_call *call)
{
    if (db == NULL || out == NULL)
        return SHOAL_EINVAL;
    memset(out, 0, sizeof(*out));
    shoal_op u = {.kind = 0};
    cl_op op = {.kind = CL_STATS, .u = &u, .est_bytes = CL_OP_OVERHEAD};
    op.pin = atomic_load(&db->home);
    op.out.stats = out;
    return run_blocking(db, &op, call);
}

/* ---- the cluster map, for tools
 * ------------------------------------------------------------------
 */

uint64_t
shoal_map_epoch(shoal *db)
{
    return db != NULL ? atomic_load(&db->map_epoch) : 0;
}

static size_t
nodes_size(const cl_map *m)
{
    size_t total = m->n_nodes * sizeof(shoal_cluster_node);
    for (size_t i = 0; i < m->n_nodes; i++)
        total += strlen(m->nodes[i].id) + strlen(m->nodes[i].addr) +
                 strlen(m->nodes[i].peer_addr) + 3;
    return total;
}

static const char *
copy_str(char **at, const char *s)
{
    size_t l = strlen(s) + 1;
    char *d = *at;
    memcpy(d, s, l);
    *at += l;
    return d;
}

shoal_err
shoal_cluster_nodes(shoal *db, shoal_cluster_node **out, size_t *n_out)
{
    if (out == NULL || n_out == NULL)
        return SHOAL_EINVAL;
    *out = NULL;
    *n_out = 0;
    if (db == NULL)
        return SHOAL_EINVAL;
    shoal_err rc = SHOAL_EUNAVAILABLE;
    pthread_rwlock_rdlock(&db->map_lock);
    const cl_map *m = db->map;
    shoal_cluster_node *v = m != NULL ? mem_alloc(nodes_size(m)) : NULL;
    if (m != NULL && v == NULL)
        rc = SHOAL_ENOMEM;
    if (v != NULL) {
        char *at = (char *) (v + m->n_nodes);
        for (size_t i = 0; i < m->n_nodes; i++) {
            v[i].id = copy_str(&at, m->nodes[i].id);
            v[i].addr = copy_str(&at, m->nodes[i].addr);
            v[i].peer_addr = copy_str(&at, m->nodes[i].peer_addr);
            v[i].weight = m->nodes[i].weight;
            v[i].state = m->nodes[i].state;
        }
        *out = v;
        *n_out = m->n_nodes;
        rc = SHOAL_OK;
    }
    pthread_rwlock_unlock(&db->map_lock);
    return rc;
}

void
shoal_cluster_nodes_free(shoal_cluster_node *nodes, size_t n)
{
    (void) n; /* one allocation */
    mem_free(nodes);
}

/* The conn of the node with id (NULL: the home node). */
static shoal_err
node_by_id(shoal *db, const char *id, cl_conn **out)
{
    *out = NULL;
    if (id == NULL) {
        *out = atomic_load(&db->home);
        return *out != NULL ? SHOAL_OK : SHOAL_EUNAVAILABLE;
    }
    shoal_err rc = SHOAL_ENOTFOUND;
    pthread_rwlock_rdlock(&db->map_lock);
    cl_map *m = db->map;
    for (size_t i = 0; m != NULL && i < m->n_nodes; i++) {
        if (strcmp(m->nodes[i].id, id) != 0)
            continue;
        *out = cl_node_conn(db, m, (uint32_t) i);
        rc = *out != NULL ? SHOAL_OK : SHOAL_EUNAVAILABLE;
        break;
    }
    pthread_rwlock_unlock(&db->map_lock);
    return rc;
}

shoal_err
shoal_cluster_status_node(shoal *db, const char *node_id, void **pb_out,
                          size_t *len_out)
{
    if (pb_out == NULL || len_out == NULL)
        return SHOAL_EINVAL;
    *pb_out = NULL;
    *len_out = 0;
    if (db == NULL)
        return SHOAL_EINVAL;
    shoal_op u = {.kind = 0};
    cl_op op = {.kind = CL_CSTATUS, .u = &u, .est_bytes = CL_OP_OVERHEAD};
    shoal_err rc = node_by_id(db, node_id, &op.pin);
    if (rc != SHOAL_OK)
        return rc;
    rc = run_blocking(db, &op, NULL);
    if (rc != SHOAL_OK) {
        mem_free(op.out.blob.pb);
        return rc;
    }
    *pb_out = op.out.blob.pb;
    *len_out = op.out.blob.len;
    return SHOAL_OK;
}

/* ---- batches
 * -----------------------------------------------------------------------
 */

static int
cmp_key(const void *a, const void *b)
{
    const shoal_batch_op *x = *(const shoal_batch_op *const *) a;
    const shoal_batch_op *y = *(const shoal_batch_op *const *) b;
    if (x->klen != y->klen)
        return x->klen < y->klen ? -1 : 1;
    return memcmp(x->key, y->key, x->klen);
}

/* SHOAL_EINVAL if a key appears twice. */
static shoal_err
check_unique(const shoal_batch_op *ops, size_t n)
{
    const shoal_batch_op **v = mem_alloc(n * sizeof(*v));
    if (v == NULL)
        return SHOAL_ENOMEM;
    for (size_t i = 0; i < n; i++)
        v[i] = &ops[i];
    qsort(v, n, sizeof(*v), cmp_key);
    shoal_err rc = SHOAL_OK;
    for (size_t i = 1; i < n && rc == SHOAL_OK; i++)
        if (cmp_key(&v[i - 1], &v[i]) == 0)
            rc = SHOAL_EINVAL;
    mem_free(v);
    return rc;
}

static shoal_err
check_batch(const shoal_batch_op *ops, size_t n, size_t *est)
{
    shoal_err rc;
    size_t total = CL_OP_OVERHEAD;
    if (ops == NULL)
        return SHOAL_EINVAL;
    for (size_t i = 0; i < n; i++) {
        const shoal_batch_op *b = &ops[i];
        if (b->kind != SHOAL_BATCH_PUT && b->kind != SHOAL_BATCH_DEL)
            return SHOAL_EINVAL;
        if ((rc = check_key(b->key, b->klen)) != SHOAL_OK ||
            (b->kind == SHOAL_BATCH_PUT &&
             (rc = check_val(b->val, b->vlen)) != SHOAL_OK))
            return rc;
        total += CL_OP_OVERHEAD / 2 + b->klen +
                 (b->kind == SHOAL_BATCH_PUT ? b->vlen : 0);
    }
    *est = total;
    return check_unique(ops, n);
}

shoal_err
shoal_batch(shoal *db, const shoal_batch_op *ops, size_t n, shoal_err *results,
            uint64_t *version_out, const shoal_call *call)
{
    size_t est = 0;
    shoal_err rc;
    if (version_out != NULL)
        *version_out = 0;
    if (db == NULL)
        return SHOAL_EINVAL;
    if (n == 0)
        return SHOAL_OK;
    if (n > UINT32_MAX)
        return SHOAL_ETOOLARGE;
    if ((rc = check_batch(ops, n, &est)) != SHOAL_OK)
        return rc;
    shoal_op u = {.kind = 0};
    cl_op op = {.kind = CL_BATCH, .u = &u, .est_bytes = est};
    op.in.batch.ops = ops;
    op.in.batch.n = n;
    op.out.batch.res = results;
    rc = run_blocking(db, &op, call);
    /* Per-op statuses came back unless the call failed before any part
     * was sent (closed, no memory). */
    if (!op.out.batch.got && results != NULL)
        for (size_t i = 0; i < n; i++)
            results[i] = rc;
    if (op.out.batch.got && version_out != NULL)
        *version_out = op.out.batch.version;
    return rc;
}

/* ---- scans
 * -----------------------------------------------------------------------------
 */

static shoal_err
check_part(const void *p, size_t len, size_t max)
{
    if (p == NULL && len > 0)
        return SHOAL_EINVAL;
    return len > max ? SHOAL_ETOOLARGE : SHOAL_OK;
}

static shoal_err
check_scan(const shoal_scan_req *r, size_t *est)
{
    shoal_err rc;
    if (r->limit > CL_SCAN_MAX)
        return SHOAL_EINVAL;
    if ((rc = check_part(r->prefix, r->plen, CL_KEY_MAX)) != SHOAL_OK ||
        (rc = check_part(r->start, r->start_len, CL_KEY_MAX)) != SHOAL_OK ||
        (rc = check_part(r->end, r->end_len, CL_KEY_MAX)) != SHOAL_OK ||
        (rc = check_part(r->token, r->token_len, CL_TOKEN_MAX)) != SHOAL_OK)
        return rc;
    *est = CL_OP_OVERHEAD + r->plen + r->start_len + r->end_len + r->token_len;
    return SHOAL_OK;
}

shoal_err
shoal_scan(shoal *db, const shoal_scan_req *req, shoal_scan_page **page_out,
           const shoal_call *call)
{
    size_t est = 0;
    shoal_err rc;
    if (page_out == NULL)
        return SHOAL_EINVAL;
    *page_out = NULL;
    if (db == NULL || req == NULL)
        return SHOAL_EINVAL;
    if ((rc = check_scan(req, &est)) != SHOAL_OK)
        return rc;
    shoal_op u = {.kind = 0};
    cl_op op = {.kind = CL_SCAN, .u = &u, .est_bytes = est};
    op.in.scan = req;
    rc = run_blocking(db, &op, call);
    if (rc == SHOAL_OK)
        *page_out = op.out.page;
    else
        mem_free(op.out.page);
    return rc;
}

void
shoal_scan_page_free(shoal_scan_page *page)
{
    mem_free(page);
}

void
shoal_free(void *p)
{
    mem_free(p);
}

/* ---- asynchronous calls
 * ----------------------------------------------------------------
 */

static void
async_done(cl_op *op)
{
    shoal_op *u = op->u;
    shoal_done_fn fn = op->user_done;
    void *arg = op->user_arg;
    u->status = op->st;
    if (op->st != SHOAL_OK) {
        u->out_val = NULL;
        u->out_vlen = 0;
    }
    u->internal_ = NULL;
    cl_pool_put(op->db, op);
    fn(u, arg);
}

shoal_err
shoal_submit(shoal *db, shoal_op *uop, shoal_done_fn done, void *arg)
{
    size_t est = 0;
    shoal_err rc;
    if (db == NULL || uop == NULL || done == NULL)
        return SHOAL_EINVAL;
    if ((rc = check_op(uop, &est)) != SHOAL_OK)
        return rc;
    if (est + FRAME_OVERHEAD > db->o.max_frame_bytes)
        return SHOAL_ETOOLARGE;
    if (!enter(db))
        return SHOAL_ECLOSED;
    cl_op *op = cl_pool_get(db);
    if (op == NULL) {
        leave(db);
        return SHOAL_ENOMEM;
    }
    op->db = db;
    op->kind = (cl_kind) uop->kind;
    op->u = uop;
    op->est_bytes = est;
    op->deadline_ns = deadline_of(db, &uop->call);
    cl_op_settings(db, op, &uop->call);
    op->done = async_done;
    op->user_done = done;
    op->user_arg = arg;
    cl_op_reset_outputs(op);
    uop->internal_ = op;
    cl_dispatch(db, op);
    leave(db);
    return SHOAL_OK;
}

/* ---- opening
 * ------------------------------------------------------------------------------
 */

/* Shared by the open call and its map requests (one per seed), which may
 * outlive it: freed by whoever drops the last reference. */
typedef struct open_wait {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    unsigned refs;
    unsigned pending;
    cl_conn *winner;
    cl_map *map;
    shoal_err final; /* a refusal worth reporting (EAUTH, EPERM, ...) */
} open_wait;

typedef struct open_op {
    cl_op op;
    shoal_op u;
} open_op;

static void
open_wait_unref_locked(open_wait *w)
{
    bool last = --w->refs == 0;
    pthread_mutex_unlock(&w->mu);
    if (!last)
        return;
    mem_free(w->map);
    pthread_cond_destroy(&w->cv);
    pthread_mutex_destroy(&w->mu);
    mem_free(w);
}

/* Whether st, from a seed, says more than "nobody answered". */
static bool
telling(shoal_err st)
{
    return st != SHOAL_OK && st != SHOAL_EUNAVAILABLE && st != SHOAL_ETIMEOUT &&
           st != SHOAL_ECLOSED;
}

static void
open_map_done(cl_op *op)
{
    open_wait *w = op->arg;
    pthread_mutex_lock(&w->mu);
    if (op->st == SHOAL_OK && w->winner == NULL) {
        w->winner = op->pin;
        w->map = op->out.map;
        op->out.map = NULL;
    } else if (telling(op->st) && w->final != SHOAL_EAUTH) {
        w->final = op->st; /* a refused key says the most */
    }
    mem_free(op->out.map);
    w->pending--;
    pthread_cond_broadcast(&w->cv);
    mem_free(op);
    open_wait_unref_locked(w);
}

/* Send a map request to every seed; false if none could be. */
static bool
ask_seeds(shoal *db, open_wait *w)
{
    uint64_t deadline =
        clock_mono_ns() + (uint64_t) db->o.connect_timeout_ms * NS_PER_MS;
    bool asked = false;
    for (size_t i = 0; i < db->n_conns; i++) {
        open_op *a = mem_calloc(1, sizeof(*a));
        if (a == NULL)
            break;
        a->op = (cl_op){.db = db,
                        .kind = CL_MAP,
                        .u = &a->u,
                        .pin = db->conns[i],
                        .est_bytes = CL_OP_OVERHEAD,
                        .deadline_ns = deadline,
                        .done = open_map_done,
                        .arg = w};
        pthread_mutex_lock(&w->mu);
        w->refs++;
        w->pending++;
        pthread_mutex_unlock(&w->mu);
        cl_dispatch(db, &a->op);
        asked = true;
    }
    return asked;
}

/* Ask every seed for the map; the first answer wins and serves the handle.
 * Otherwise the most telling refusal (SHOAL_EAUTH first), else
 * SHOAL_EUNAVAILABLE. */
static shoal_err
fetch_map(shoal *db)
{
    open_wait *w = mem_calloc(1, sizeof(*w));
    if (w == NULL)
        return SHOAL_ENOMEM;
    pthread_mutex_init(&w->mu, NULL);
    pthread_cond_init(&w->cv, NULL);
    w->refs = 1;
    bool asked = ask_seeds(db, w);
    pthread_mutex_lock(&w->mu);
    while (w->winner == NULL && w->pending > 0)
        pthread_cond_wait(&w->cv, &w->mu);
    shoal_err rc = SHOAL_EUNAVAILABLE;
    if (w->winner != NULL) {
        rc = SHOAL_OK;
        atomic_store(&db->home, w->winner);
        cl_map_adopt(db, w->map);
        w->map = NULL;
    } else if (w->final != SHOAL_OK) {
        rc = w->final;
    } else if (!asked) {
        rc = SHOAL_ENOMEM;
    }
    open_wait_unref_locked(w);
    return rc;
}

static shoal_err
load_key(shoal *db, const char *path)
{
    char err[256] = "";
    shoal_err rc = wire_keyring_load(path, &db->kr, err, sizeof(err));
    if (rc != SHOAL_OK) {
        cl_log(0, "key file %s: %s", path, err);
        return rc;
    }
    db->key = wire_keyring_at(db->kr, 0);
    return db->key != NULL ? SHOAL_OK : SHOAL_EINVAL;
}

static shoal *
db_alloc(const shoal_opts *o)
{
    shoal *db = mem_calloc(1, sizeof(*db));
    if (db == NULL)
        return NULL;
    apply_defaults(&db->o, o);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&db->cv, &ca);
    pthread_condattr_destroy(&ca);
    pthread_mutex_init(&db->mtx, NULL);
    pthread_mutex_init(&db->pool_mtx, NULL);
    pthread_mutex_init(&db->conns_mtx, NULL);
    pthread_rwlock_init(&db->map_lock, NULL);
    atomic_init(&db->next_id, 1);
    wire_sender_init(&db->snd);
    return db;
}

shoal_err
shoal_open(const shoal_opts *o, shoal **out)
{
    shoal_err rc;
    if (out == NULL)
        return SHOAL_EINVAL;
    *out = NULL;
    if ((rc = check_opts(o)) != SHOAL_OK)
        return rc;
    if (sodium_init() < 0)
        return SHOAL_ENOMEM;
    shoal *db = db_alloc(o);
    if (db == NULL)
        return SHOAL_ENOMEM;
    if (!o->insecure && (rc = load_key(db, o->key_file)) != SHOAL_OK)
        goto fail;
    rc = SHOAL_ENOMEM;
    if ((db->conns = mem_calloc(o->n_seeds, sizeof(cl_conn *))) == NULL)
        goto fail;
    for (size_t i = 0; i < o->n_seeds; i++) {
        if ((rc = cl_conn_open(db, o->seeds[i], &db->conns[i])) != SHOAL_OK)
            goto fail;
        db->n_conns++;
        cl_conn_list_push(db, db->conns[i]);
    }
    if ((rc = cl_timer_start(db)) != SHOAL_OK ||
        (rc = fetch_map(db)) != SHOAL_OK)
        goto fail;
    *out = db;
    return SHOAL_OK;
fail:
    shoal_close(db);
    return rc;
}

/* ---- closing
 * -------------------------------------------------------------------------------
 */

static void
fail_delayed(shoal *db)
{
    pthread_mutex_lock(&db->mtx);
    cl_op *list = db->delayed;
    db->delayed = NULL;
    pthread_mutex_unlock(&db->mtx);
    while (list != NULL) {
        cl_op *next = list->next;
        list->st = SHOAL_ECLOSED;
        cl_finish(list);
        list = next;
    }
}

static void
wait_users(shoal *db)
{
    struct timespec ts = {0, 200000};
    while (atomic_load(&db->users) > 0)
        nanosleep(&ts, NULL);
}

void
shoal_close(shoal *db)
{
    if (db == NULL)
        return;
    pthread_mutex_lock(&db->mtx);
    atomic_store(&db->closing, true);
    pthread_mutex_unlock(&db->mtx);
    cl_timer_stop(db);
    fail_delayed(db);
    /* No conn opens from here on, so the list is complete. */
    pthread_mutex_lock(&db->conns_mtx);
    db->conns_closed = true;
    pthread_mutex_unlock(&db->conns_mtx);
    for (cl_conn *c = atomic_load(&db->conn_list); c != NULL; c = c->list_next)
        cl_conn_shutdown(c);
    fail_delayed(db);
    wait_users(db);
    cl_conn *c = atomic_load(&db->conn_list);
    while (c != NULL) {
        cl_conn *next = c->list_next;
        cl_conn_close(c);
        c = next;
    }
    mem_free(db->conns);
    mem_free(db->map);
    pthread_rwlock_destroy(&db->map_lock);
    pthread_mutex_destroy(&db->conns_mtx);
    wire_keyring_free(db->kr);
    cl_pool_fini(db);
    pthread_mutex_destroy(&db->pool_mtx);
    pthread_mutex_destroy(&db->mtx);
    pthread_cond_destroy(&db->cv);
    sodium_memzero(&db->snd, sizeof(db->snd));
    mem_free(db);
}

size_t
shoal__pending(shoal *db)
{
    size_t n = 0;
    for (cl_conn *c = atomic_load(&db->conn_list); c != NULL; c = c->list_next)
        n += cl_conn_pending(c);
    pthread_mutex_lock(&db->mtx);
    for (const cl_op *op = db->delayed; op != NULL; op = op->next)
        n++;
    pthread_mutex_unlock(&db->mtx);
    return n;
}
