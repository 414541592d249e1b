/*
 * metrics.c -- the node's counters and latency histograms (metrics.h).
 *
 * Every cell is a relaxed atomic counter bumped by request threads; the
 * renderer reads them one by one, so a scrape is not a snapshot of one
 * instant, but each series only grows. A histogram keeps per-bucket (not
 * cumulative) counts so an observation touches one cell; the renderer sums
 * them into Prometheus' cumulative le buckets, and _count is the sum of
 * the buckets, so the +Inf bucket and _count always agree in one scrape.
 *
 * Error counters are indexed by status value (err.h values are dense from
 * 0); a status outside the list is counted as code="UNKNOWN".
 */
#include "node/metrics.h"

#include "proto/mem.h"

#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#define N_BUCKETS 14 /* 13 bounds + Inf */

#define COUNT_CODE_(name, val, msg) +1
enum { N_CODES = 0 SHOAL_ERR_MAP(COUNT_CODE_) };
#undef COUNT_CODE_

static const uint64_t bounds_us[N_BUCKETS - 1] = {
    50,    100,   250,   500,    1000,   2500,   5000,
    10000, 25000, 50000, 100000, 250000, 1000000};

static const char *const op_names[METRICS_N_OPS] = {
    [METRICS_OP_GET] = "get",     [METRICS_OP_PUT] = "put",
    [METRICS_OP_DEL] = "del",     [METRICS_OP_INCR] = "incr",
    [METRICS_OP_TTL] = "ttl",     [METRICS_OP_EXISTS] = "exists",
    [METRICS_OP_BATCH] = "batch", [METRICS_OP_SCAN] = "scan",
    [METRICS_OP_COUNT] = "count", [METRICS_OP_STATS] = "stats",
    [METRICS_OP_MAP] = "map",     [METRICS_OP_OTHER] = "other",
};

typedef struct op_cells {
    _Atomic uint64_t requests;
    _Atomic uint64_t sum_us;
    _Atomic uint64_t bucket[N_BUCKETS];   /* not cumulative */
    _Atomic uint64_t errors[N_CODES + 1]; /* by status; last: unknown */
} op_cells;

struct metrics {
    op_cells ops[METRICS_N_OPS];
    _Atomic uint64_t ev[METRICS_N_EVS];
};

shoal_err
metrics_open(metrics **out)
{
    *out = NULL;
    metrics *m = mem_calloc(1, sizeof(*m));
    if (m == NULL)
        return SHOAL_ENOMEM;
    *out = m;
    return SHOAL_OK;
}

void
metrics_close(metrics *m)
{
    mem_free(m);
}

static unsigned
bucket_of(uint64_t us)
{
    unsigned i = 0;
    while (i < N_BUCKETS - 1 && us > bounds_us[i])
        i++;
    return i;
}

void
metrics_observe(metrics *m, metrics_op op, shoal_err status,
                uint64_t latency_us)
{
    if ((unsigned) op >= METRICS_N_OPS)
        op = METRICS_OP_OTHER;
    op_cells *c = &m->ops[op];
    atomic_fetch_add_explicit(&c->requests, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&c->sum_us, latency_us, memory_order_relaxed);
    atomic_fetch_add_explicit(&c->bucket[bucket_of(latency_us)], 1,
                              memory_order_relaxed);
    if (status == SHOAL_OK)
        return;
    unsigned code = (unsigned) status < N_CODES ? (unsigned) status : N_CODES;
    atomic_fetch_add_explicit(&c->errors[code], 1, memory_order_relaxed);
}

void
metrics_add(metrics *m, metrics_ev ev, uint64_t n)
{
    if ((unsigned) ev >= METRICS_N_EVS)
        return;
    atomic_fetch_add_explicit(&m->ev[ev], n, memory_order_relaxed);
}

static uint64_t
load(const _Atomic uint64_t *a)
{
    return atomic_load_explicit(a, memory_order_relaxed);
}

uint64_t
metrics_requests(const metrics *m)
{
    uint64_t n = 0;
    for (unsigned i = 0; i < METRICS_N_OPS; i++)
        n += load(&m->ops[i].requests);
    return n;
}

metrics_op
metrics_op_from_name(const char *name)
{
    if (name == NULL)
        return METRICS_OP_OTHER;
    for (unsigned i = 0; i < METRICS_OP_OTHER; i++)
        if (strcmp(name, op_names[i]) == 0)
            return (metrics_op) i;
    if (strcmp(name, "delete") == 0)
        return METRICS_OP_DEL;
    return METRICS_OP_OTHER;
}

/* ---- rendering ------------------------------------------------------------
 */

typedef struct sbuf {
    char *p;
    size_t len, cap;
    bool oom; /* an append failed: the text is incomplete */
} sbuf;

static void sb_printf(sbuf *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void
sb_printf(sbuf *b, const char *fmt, ...)
{
    va_list ap;
    for (int tries = 0; tries < 2 && !b->oom; tries++) {
        size_t room = b->cap - b->len;
        va_start(ap, fmt);
        int n = vsnprintf(b->p + b->len, room, fmt, ap);
        va_end(ap);
        if (n < 0) {
            b->oom = true;
            return;
        }
        if ((size_t) n < room) {
            b->len += (size_t) n;
            return;
        }
        size_t cap = b->cap * 2 > b->len + (size_t) n + 1
                         ? b->cap * 2
                         : b->len + (size_t) n + 1;
        char *p = mem_realloc(b->p, cap);
        if (p == NULL) {
            b->oom = true;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
}

static void
family(sbuf *b, const char *name, const char *type, const char *help)
{
    sb_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* A microsecond count as decimal seconds ("0.00025", "1", "12.5"). */
static const char *
seconds(uint64_t us, char *buf, size_t cap)
{
    int n =
        snprintf(buf, cap, "%llu.%06llu", (unsigned long long) (us / 1000000),
                 (unsigned long long) (us % 1000000));
    while (n > 0 && buf[n - 1] == '0')
        buf[--n] = '\0';
    if (n > 0 && buf[n - 1] == '.')
        buf[--n] = '\0';
    return buf;
}

static void
render_requests(const metrics *m, sbuf *b)
{
    family(b, "shoal_requests_total", "counter",
           "Requests served, by operation.");
    for (unsigned i = 0; i < METRICS_N_OPS; i++)
        sb_printf(b, "shoal_requests_total{op=\"%s\"} %llu\n", op_names[i],
                  (unsigned long long) load(&m->ops[i].requests));
    family(b, "shoal_request_errors_total", "counter",
           "Requests answered with an error status, by operation and code.");
    for (unsigned i = 0; i < METRICS_N_OPS; i++) {
        for (unsigned c = 1; c <= N_CODES; c++) {
            uint64_t n = load(&m->ops[i].errors[c]);
            if (n == 0)
                continue;
            const char *code = c < N_CODES ? shoal_errname((shoal_err) c) + 6
                                           : "UNKNOWN"; /* skip "SHOAL_" */
            sb_printf(b,
                      "shoal_request_errors_total{op=\"%s\",code=\"%s\"} "
                      "%llu\n",
                      op_names[i], code, (unsigned long long) n);
        }
    }
}

static void
render_histograms(const metrics *m, sbuf *b)
{
    char le[32];
    family(b, "shoal_request_duration_seconds", "histogram",
           "Time from frame receipt to response, by operation.");
    for (unsigned i = 0; i < METRICS_N_OPS; i++) {
        const op_cells *c = &m->ops[i];
        uint64_t cum = 0;
        for (unsigned k = 0; k < N_BUCKETS; k++) {
            cum += load(&c->bucket[k]);
            sb_printf(b,
                      "shoal_request_duration_seconds_bucket{op=\"%s\","
                      "le=\"%s\"} %llu\n",
                      op_names[i],
                      k < N_BUCKETS - 1 ? seconds(bounds_us[k], le, sizeof(le))
                                        : "+Inf",
                      (unsigned long long) cum);
        }
        sb_printf(b, "shoal_request_duration_seconds_sum{op=\"%s\"} %s\n",
                  op_names[i], seconds(load(&c->sum_us), le, sizeof(le)));
        sb_printf(b, "shoal_request_duration_seconds_count{op=\"%s\"} %llu\n",
                  op_names[i], (unsigned long long) cum);
    }
}

static void
render_frames(const metrics *m, sbuf *b)
{
    static const struct {
        metrics_ev ev;
        const char *reason;
    } refused[] = {
        {METRICS_BAD_HEADER, "bad_header"},
        {METRICS_BAD_KEY, "bad_key"},
        {METRICS_BAD_TAG, "bad_tag"},
        {METRICS_REPLAYED, "replayed"},
        {METRICS_PLAIN_REFUSED, "plaintext"},
        {METRICS_BAD_DECODE, "bad_decode"},
    };
    family(b, "shoal_frames_total", "counter", "Frames, by direction.");
    sb_printf(b, "shoal_frames_total{dir=\"in\"} %llu\n",
              (unsigned long long) load(&m->ev[METRICS_FRAMES_IN]));
    sb_printf(b, "shoal_frames_total{dir=\"out\"} %llu\n",
              (unsigned long long) load(&m->ev[METRICS_FRAMES_OUT]));
    family(b, "shoal_frame_bytes_total", "counter",
           "Frame bytes, by direction.");
    sb_printf(b, "shoal_frame_bytes_total{dir=\"in\"} %llu\n",
              (unsigned long long) load(&m->ev[METRICS_BYTES_IN]));
    sb_printf(b, "shoal_frame_bytes_total{dir=\"out\"} %llu\n",
              (unsigned long long) load(&m->ev[METRICS_BYTES_OUT]));
    family(b, "shoal_frames_refused_total", "counter",
           "Frames dropped before decoding, by reason.");
    for (size_t i = 0; i < sizeof(refused) / sizeof(refused[0]); i++)
        sb_printf(b, "shoal_frames_refused_total{reason=\"%s\"} %llu\n",
                  refused[i].reason,
                  (unsigned long long) load(&m->ev[refused[i].ev]));
    family(b, "shoal_requests_denied_total", "counter",
           "Requests refused by the key's role or prefix.");
    sb_printf(b, "shoal_requests_denied_total %llu\n",
              (unsigned long long) load(&m->ev[METRICS_DENIED]));
    family(b, "shoal_commit_failures_total", "counter",
           "Frames whose writes failed to commit.");
    sb_printf(b, "shoal_commit_failures_total %llu\n",
              (unsigned long long) load(&m->ev[METRICS_COMMIT_FAILED]));
}

static void
one(sbuf *b, const char *name, const char *type, const char *help, uint64_t v)
{
    family(b, name, type, help);
    sb_printf(b, "%s %llu\n", name, (unsigned long long) v);
}

static void
render_store(store *st, sbuf *b)
{
    store_stats s;
    store_get_stats(st, &s);
    one(b, "shoal_keys", "gauge", "Stored entries.", s.keys);
    one(b, "shoal_bytes", "gauge", "Key and value bytes stored.", s.bytes);
    one(b, "shoal_index_bytes", "gauge", "Memory used by the indexes.",
        s.index_bytes);
    one(b, "shoal_wal_records_total", "counter", "WAL records appended.",
        s.wal_records);
    one(b, "shoal_wal_bytes_total", "counter", "WAL bytes appended.",
        s.wal_bytes);
    one(b, "shoal_wal_fsyncs_total", "counter", "WAL fsyncs.", s.wal_fsyncs);
    family(b, "shoal_wal_records_per_fsync", "gauge",
           "WAL records per fsync since start (group commit batch size).");
    sb_printf(b, "shoal_wal_records_per_fsync %.3f\n",
              s.wal_fsyncs != 0 ? (double) s.wal_records / (double) s.wal_fsyncs
                                : 0.0);
    one(b, "shoal_wal_segments", "gauge", "WAL segment files.", s.wal_segments);
    one(b, "shoal_snapshots_total", "counter", "Shard snapshots taken.",
        s.snapshots);
    one(b, "shoal_snapshot_ms_max", "gauge", "Longest snapshot, in ms.",
        s.snapshot_ms_max);
    one(b, "shoal_expired_total", "counter",
        "Entries removed by active expiry.", s.expired);
    one(b, "shoal_read_only", "gauge",
        "1 when the engine turned read-only after an I/O failure.",
        s.read_only ? 1 : 0);
    one(b, "shoal_recovery_records", "gauge", "WAL records replayed at start.",
        s.recovered_records);
    one(b, "shoal_recovery_ms", "gauge", "Time spent recovering at start.",
        s.recovery_ms);
}

shoal_err
metrics_render(const metrics *m, store *st, char **out, size_t *len_out)
{
    *out = NULL;
    *len_out = 0;
    sbuf b = {.p = mem_alloc(16384), .cap = 16384};
    if (b.p == NULL)
        return SHOAL_ENOMEM;
    b.p[0] = '\0';
    render_requests(m, &b);
    render_histograms(m, &b);
    render_frames(m, &b);
    if (st != NULL)
        render_store(st, &b);
    if (b.oom) {
        mem_free(b.p);
        return SHOAL_ENOMEM;
    }
    *out = b.p;
    *len_out = b.len;
    return SHOAL_OK;
}
