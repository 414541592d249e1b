/*
 * http.h -- shoald's HTTP endpoints on nng's HTTP server (DESIGN §10).
 *
 *   GET /health   200 "ok\n" while serving; 503 "draining\n" once the node
 *                 is stopping, 503 "read-only\n" when the engine turned
 *                 read-only after an I/O failure.
 *   GET /status   JSON (application/json): node, URLs, data dir, fsync
 *                 policy, map epoch, engine totals, WAL, snapshot and
 *                 recovery figures, and one object per shard that holds
 *                 keys or has been written.
 *   GET /metrics  Prometheus text 0.0.4 (metrics_render).
 * Other paths get 404 and other methods 405 from nng. HEAD works as GET.
 *
 * Handlers run on nng threads and only read: store_get_stats and friends,
 * the metrics counters, and the borrowed configuration.
 */
#ifndef SHOAL_NODE_HTTP_H
#define SHOAL_NODE_HTTP_H

#include "cluster/repl.h"
#include "node/cfg.h"
#include "node/metrics.h"
#include "proto/err.h"
#include "storage/store.h"

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct http http;

/* What the endpoints report. Every pointer is borrowed and must stay valid
 * until http_close returns. */
typedef struct http_sources {
    store *st;                    /* engine figures */
    metrics *m;                   /* /metrics and the request total */
    const cfg *c;                 /* URLs, data dir, fsync, insecure */
    const char *node_id;          /* the effective id (NODE file or --id) */
    uint32_t n_shards;            /* the effective shard count */
    uint64_t map_epoch;           /* single node: 1 */
    uint64_t start_ms;            /* clock_mono_ns() / 1e6 at start */
    const char *version;          /* shoald's version string */
    const _Atomic bool *draining; /* true once the node is stopping; may
                                     be NULL */
    repl *rp;                     /* replication figures; may be NULL */
} http_sources;

/* Serve the endpoints on url ("http://HOST:PORT"; port 0 picks one, see
 * http_port). SHOAL_EINVAL (bad URL), SHOAL_EUNAVAILABLE (cannot listen:
 * logged with the URL and nng's reason), SHOAL_ENOMEM. */
shoal_err http_open(const char *url, const http_sources *src, http **out);

/* Stop serving (NULL ok). Waits for handlers that are running; requests
 * that arrive meanwhile get 503. No source is touched after it returns. */
void http_close(http *h);

/* The TCP port the server is bound to. */
uint16_t http_port(const http *h);

/* The /health answer: HTTP status, and the body (a string literal). */
uint16_t http_health(const http_sources *src, const char **body_out);

/* The /status document into a mem_alloc'd NUL-terminated buffer (*out,
 * mem_free; *len_out without the NUL). SHOAL_ENOMEM. */
shoal_err http_status_json(const http_sources *src, char **out,
                           size_t *len_out);

#endif
