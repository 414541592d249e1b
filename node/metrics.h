/*
 * metrics.h -- the node's counters and latency histograms, rendered as
 * Prometheus text for GET /metrics (DESIGN §10).
 *
 * Lock-free: every counter is a relaxed atomic, so request threads never
 * wait on a reader. Latency histograms have fixed buckets (upper bounds in
 * microseconds: 50, 100, 250, 500, 1000, 2500, 5000, 10000, 25000, 50000,
 * 100000, 250000, 1000000, +Inf).
 */
#ifndef SHOAL_NODE_METRICS_H
#define SHOAL_NODE_METRICS_H

#include "proto/err.h"
#include "storage/store.h"

#include <stddef.h>
#include <stdint.h>

typedef enum metrics_op {
    METRICS_OP_GET,
    METRICS_OP_PUT,
    METRICS_OP_DEL,
    METRICS_OP_INCR,
    METRICS_OP_TTL,
    METRICS_OP_EXISTS,
    METRICS_OP_BATCH,
    METRICS_OP_SCAN,
    METRICS_OP_COUNT,
    METRICS_OP_STATS,
    METRICS_OP_MAP,
    METRICS_OP_OTHER, /* empty or unknown op */
    METRICS_N_OPS
} metrics_op;

/* Frame-level events. */
typedef enum metrics_ev {
    METRICS_FRAMES_IN,     /* frames received */
    METRICS_FRAMES_OUT,    /* response frames sent */
    METRICS_BYTES_IN,      /* frame bytes received */
    METRICS_BYTES_OUT,     /* frame bytes sent */
    METRICS_BAD_HEADER,    /* malformed header, unknown version or flags */
    METRICS_BAD_KEY,       /* unknown key id */
    METRICS_BAD_TAG,       /* failed to open (tampered or wrong key) */
    METRICS_REPLAYED,      /* refused by the replay window */
    METRICS_PLAIN_REFUSED, /* plaintext frame on a sealed node, or sealed
                              frame on an --insecure node */
    METRICS_BAD_DECODE,    /* opened but not a valid RequestFrame */
    METRICS_DENIED,        /* requests refused by role or prefix */
    METRICS_COMMIT_FAILED, /* frames whose writes failed to commit */
    METRICS_N_EVS
} metrics_ev;

typedef struct metrics metrics;

shoal_err metrics_open(metrics **out);
void metrics_close(metrics *m);

/* One request of op finished with status after latency_us (from frame
 * receipt to response send). */
void metrics_observe(metrics *m, metrics_op op, shoal_err status,
                     uint64_t latency_us);

void metrics_add(metrics *m, metrics_ev ev, uint64_t n);

/* Requests served so far (all ops). */
uint64_t metrics_requests(const metrics *m);

/* Map a request's op (exec_op_name's names) to a metrics_op. */
metrics_op metrics_op_from_name(const char *name);

/* Render every metric (plus the engine's, from st, which may be NULL) as
 * Prometheus text exposition format 0.0.4 into a malloc'd buffer
 * (*out, mem_free, NUL-terminated; *len_out without the NUL).
 * SHOAL_ENOMEM. */
shoal_err metrics_render(const metrics *m, store *st, char **out,
                         size_t *len_out);

#endif
