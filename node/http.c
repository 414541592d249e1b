/*
 * http.c -- /health, /status and /metrics on nng's HTTP server (http.h).
 *
 * Lifetime: nng runs a handler synchronously on one of its threads, and
 * frees handlers (calling their data destructor) asynchronously, on its
 * reaper, some time after the server is released. So:
 *  - struct http is reference-counted: one reference for the owner and one
 *    per registered handler (dropped by the handler's destructor); the
 *    last one frees it, whichever thread that is.
 *  - The borrowed sources are guarded by a gate: a handler enters (inflight
 *    + 1) unless closing is set, and leaves when done. http_close sets
 *    closing and waits for inflight to reach 0, so once it returns nothing
 *    touches the store, metrics or cfg again (later requests get 503).
 *
 * JSON: a tiny writer that tracks commas per nesting level and escapes
 * strings: '"', '\\' and control bytes are escaped, valid UTF-8 passes
 * through, and each byte of an invalid sequence becomes U+FFFD, so any
 * node id or path yields valid JSON.
 */
#include "node/http.h"

#include <inttypes.h>

#include "proto/clock.h"
#include "proto/mem.h"
#include "proto/slog.h"

#include <arpa/inet.h>
#include <nng/nng.h>
#include <nng/supplemental/http/http.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

struct http {
    http_sources src; /* borrowed pointers; see the gate */
    nng_http_server *srv;
    uint16_t port;
    pthread_mutex_t mtx; /* guards everything below */
    pthread_cond_t idle; /* inflight reached 0 while closing */
    unsigned inflight;   /* handlers using src right now */
    bool closing;        /* http_close started */
    unsigned refs;       /* owner + registered handlers */
};

/* ---- growable text buffer -------------------------------------------------
 */

typedef struct sbuf {
    char *p;
    size_t len, cap;
    bool oom;
} sbuf;

static void
sb_put(sbuf *b, const char *s, size_t n)
{
    if (b->oom)
        return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap * 2 > b->len + n + 1 ? b->cap * 2 : b->len + n + 1;
        char *p = mem_realloc(b->p, cap);
        if (p == NULL) {
            b->oom = true;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void sb_printf(sbuf *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void
sb_printf(sbuf *b, const char *fmt, ...)
{
    char tmp[64];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t) n >= sizeof(tmp)) {
        b->oom = true; /* only short numbers are formatted here */
        return;
    }
    sb_put(b, tmp, (size_t) n);
}

/* ---- JSON writer ----------------------------------------------------------
 */

#define JW_DEPTH 8

typedef struct jw {
    sbuf b;
    int depth;
    bool first[JW_DEPTH]; /* nothing written yet at this level */
    bool after_key;       /* the next value follows "key": */
} jw;

static void
jw_sep(jw *w)
{
    if (w->after_key) {
        w->after_key = false;
        return;
    }
    if (!w->first[w->depth])
        sb_put(&w->b, ",", 1);
    w->first[w->depth] = false;
}

static void
jw_open(jw *w, char ch)
{
    jw_sep(w);
    sb_put(&w->b, &ch, 1);
    SH_ASSERT(w->depth + 1 < JW_DEPTH);
    w->first[++w->depth] = true;
}

static void
jw_close(jw *w, char ch)
{
    sb_put(&w->b, &ch, 1);
    w->depth--;
}

/* Length of the valid UTF-8 sequence at s (n bytes left), or 0. */
static size_t
utf8_len(const unsigned char *s, size_t n)
{
    size_t len = s[0] >= 0xf0 ? 4 : s[0] >= 0xe0 ? 3 : 2;
    if (s[0] < 0xc2 || s[0] > 0xf4 || len > n)
        return 0;
    for (size_t i = 1; i < len; i++)
        if ((s[i] & 0xc0) != 0x80)
            return 0;
    if ((s[0] == 0xe0 && s[1] < 0xa0) || (s[0] == 0xed && s[1] > 0x9f) ||
        (s[0] == 0xf0 && s[1] < 0x90) || (s[0] == 0xf4 && s[1] > 0x8f))
        return 0; /* overlong, surrogate, or above U+10FFFF */
    return len;
}

static void
jw_escape(sbuf *b, const char *str)
{
    const unsigned char *s = (const unsigned char *) str;
    size_t n = strlen(str);
    sb_put(b, "\"", 1);
    for (size_t i = 0; i < n;) {
        size_t u = s[i] >= 0x80 ? utf8_len(s + i, n - i) : 1;
        if (s[i] == '"' || s[i] == '\\') {
            sb_put(b, "\\", 1);
            sb_put(b, (const char *) s + i, 1);
        } else if (s[i] < 0x20 || s[i] == 0x7f) {
            sb_printf(b, "\\u%04x", s[i]);
        } else if (u == 0) {
            sb_put(b, "\\ufffd", 6);
            u = 1;
        } else {
            sb_put(b, (const char *) s + i, u);
        }
        i += u;
    }
    sb_put(b, "\"", 1);
}

static void
jw_key(jw *w, const char *k)
{
    jw_sep(w);
    jw_escape(&w->b, k);
    sb_put(&w->b, ":", 1);
    w->after_key = true;
}

static void
jw_str(jw *w, const char *k, const char *v)
{
    jw_key(w, k);
    jw_sep(w);
    if (v == NULL)
        sb_put(&w->b, "null", 4);
    else
        jw_escape(&w->b, v);
}

static void
jw_u64(jw *w, const char *k, uint64_t v)
{
    jw_key(w, k);
    jw_sep(w);
    sb_printf(&w->b, "%llu", (unsigned long long) v);
}

static void
jw_bool(jw *w, const char *k, bool v)
{
    jw_key(w, k);
    jw_sep(w);
    sb_put(&w->b, v ? "true" : "false", v ? 4 : 5);
}

/* ---- documents ------------------------------------------------------------
 */

static bool
is_draining(const http_sources *src)
{
    return src->draining != NULL &&
           atomic_load_explicit(src->draining, memory_order_acquire);
}

uint16_t
http_health(const http_sources *src, const char **body_out)
{
    store_stats s;
    if (is_draining(src)) {
        *body_out = "draining\n";
        return 503;
    }
    store_get_stats(src->st, &s);
    if (s.read_only) {
        *body_out = "read-only\n";
        return 503;
    }
    if (src->rp != NULL && !repl_ready(src->rp)) {
        *body_out = "syncing\n";
        return 503;
    }
    *body_out = "ok\n";
    return 200;
}

static void
status_node(jw *w, const http_sources *src)
{
    const cfg *c = src->c;
    uint64_t now_ms = clock_mono_ns() / 1000000;
    jw_str(w, "node", src->node_id);
    jw_str(w, "version", src->version);
    jw_u64(w, "uptime_ms", now_ms > src->start_ms ? now_ms - src->start_ms : 0);
    jw_str(w, "listen", c->listen_url);
    jw_str(w, "advertise", cfg_advertise(c));
    jw_str(w, "http", c->http_addr);
    jw_str(w, "data_dir", c->data_dir);
    jw_bool(w, "memory", c->memory);
    jw_str(w, "fsync", wal_fsync_name(c->fsync));
    jw_bool(w, "insecure", c->insecure);
    jw_bool(w, "draining", is_draining(src));
    jw_u64(w, "map_epoch", src->map_epoch);
    jw_u64(w, "shard_count", src->n_shards);
    jw_u64(w, "requests", src->m != NULL ? metrics_requests(src->m) : 0);
}

static void
status_engine(jw *w, const store_stats *s)
{
    jw_u64(w, "keys", s->keys);
    jw_u64(w, "bytes", s->bytes);
    jw_u64(w, "index_bytes", s->index_bytes);
    jw_bool(w, "read_only", s->read_only);
    jw_key(w, "wal");
    jw_open(w, '{');
    jw_u64(w, "records", s->wal_records);
    jw_u64(w, "bytes", s->wal_bytes);
    jw_u64(w, "fsyncs", s->wal_fsyncs);
    jw_u64(w, "segments", s->wal_segments);
    jw_close(w, '}');
    jw_key(w, "snapshots");
    jw_open(w, '{');
    jw_u64(w, "taken", s->snapshots);
    jw_u64(w, "ms_max", s->snapshot_ms_max);
    jw_close(w, '}');
    jw_u64(w, "expired", s->expired);
    jw_key(w, "recovery");
    jw_open(w, '{');
    jw_u64(w, "records", s->recovered_records);
    jw_u64(w, "ms", s->recovery_ms);
    jw_close(w, '}');
}

static void
status_shards(jw *w, const http_sources *src)
{
    store_shard_stats ss;
    jw_key(w, "shards");
    jw_open(w, '[');
    for (uint32_t i = 0; i < src->n_shards; i++) {
        if (store_get_shard_stats(src->st, i, &ss) != SHOAL_OK ||
            (ss.keys == 0 && ss.lsn == 0))
            continue;
        jw_open(w, '{');
        jw_u64(w, "shard", i);
        jw_u64(w, "keys", ss.keys);
        jw_u64(w, "bytes", ss.bytes);
        jw_u64(w, "lsn", ss.lsn);
        jw_u64(w, "snap_lsn", ss.snap_lsn);
        jw_u64(w, "epoch", ss.epoch);
        jw_close(w, '}');
    }
    jw_close(w, ']');
}

shoal_err
http_status_json(const http_sources *src, char **out, size_t *len_out)
{
    store_stats s;
    jw w = {.b = {.p = mem_alloc(4096), .cap = 4096}};
    *out = NULL;
    *len_out = 0;
    if (w.b.p == NULL)
        return SHOAL_ENOMEM;
    w.b.p[0] = '\0';
    w.first[0] = true;
    store_get_stats(src->st, &s);
    jw_open(&w, '{');
    status_node(&w, src);
    status_engine(&w, &s);
    status_shards(&w, src);
    jw_close(&w, '}');
    sb_put(&w.b, "\n", 1);
    if (w.b.oom) {
        mem_free(w.b.p);
        return SHOAL_ENOMEM;
    }
    *out = w.b.p;
    *len_out = w.b.len;
    return SHOAL_OK;
}

/* ---- handlers -------------------------------------------------------------
 */

static void
unref(void *arg)
{
    http *h = arg;
    pthread_mutex_lock(&h->mtx);
    bool last = --h->refs == 0;
    pthread_mutex_unlock(&h->mtx);
    if (!last)
        return;
    pthread_cond_destroy(&h->idle);
    pthread_mutex_destroy(&h->mtx);
    mem_free(h);
}

/* The handler's http, with the gate entered; NULL when closing. */
static http *
enter(nng_aio *aio)
{
    http *h = nng_http_handler_get_data(nng_aio_get_input(aio, 1));
    pthread_mutex_lock(&h->mtx);
    bool ok = !h->closing;
    if (ok)
        h->inflight++;
    pthread_mutex_unlock(&h->mtx);
    return ok ? h : NULL;
}

static void
leave(http *h)
{
    pthread_mutex_lock(&h->mtx);
    if (--h->inflight == 0 && h->closing)
        pthread_cond_broadcast(&h->idle);
    pthread_mutex_unlock(&h->mtx);
}

static void
reply(nng_aio *aio, uint16_t status, const char *ctype, const void *body,
      size_t len)
{
    nng_http_res *res = NULL;
    int rv;
    if ((rv = nng_http_res_alloc(&res)) != 0 ||
        (rv = nng_http_res_set_status(res, status)) != 0 ||
        (rv = nng_http_res_set_header(res, "Content-Type", ctype)) != 0 ||
        (rv = nng_http_res_set_header(res, "Cache-Control", "no-store")) != 0 ||
        (rv = nng_http_res_copy_data(res, body, len)) != 0) {
        nng_http_res_free(res);
        nng_aio_finish(aio, rv); /* nng drops the connection */
        return;
    }
    nng_aio_set_output(aio, 0, res);
    nng_aio_finish(aio, 0);
}

static void
reply_text(nng_aio *aio, uint16_t status, const char *text)
{
    reply(aio, status, "text/plain; charset=utf-8", text, strlen(text));
}

static void
on_health(nng_aio *aio)
{
    const char *body;
    http *h = enter(aio);
    if (h == NULL) {
        reply_text(aio, 503, "draining\n");
        return;
    }
    uint16_t status = http_health(&h->src, &body);
    leave(h);
    reply_text(aio, status, body);
}

static void
on_status(nng_aio *aio)
{
    char *doc = NULL;
    size_t len = 0;
    http *h = enter(aio);
    if (h == NULL) {
        reply_text(aio, 503, "draining\n");
        return;
    }
    shoal_err rc = http_status_json(&h->src, &doc, &len);
    leave(h);
    if (rc != SHOAL_OK)
        reply_text(aio, 500, "out of memory\n");
    else
        reply(aio, 200, "application/json", doc, len);
    mem_free(doc);
}

/* Append the replication counters to a /metrics text. */
static shoal_err
repl_metrics(repl *rp, char **text, size_t *len)
{
    repl_stats rs;
    repl_get_stats(rp, &rs);
    const struct {
        const char *name, *type, *help;
        uint64_t v;
    } rows[] = {
        {"shoal_repl_records_shipped_total", "counter",
         "WAL records shipped to followers", rs.records_shipped},
        {"shoal_repl_bytes_shipped_total", "counter",
         "record and snapshot bytes shipped", rs.bytes_shipped},
        {"shoal_repl_records_applied_total", "counter",
         "records applied as a follower", rs.records_applied},
        {"shoal_repl_snapshots_sent_total", "counter",
         "shard snapshots streamed to followers", rs.snapshots_sent},
        {"shoal_repl_snapshots_installed_total", "counter",
         "shard snapshots installed from primaries", rs.snapshots_installed},
        {"shoal_repl_peer_frames_refused_total", "counter",
         "peer frames refused (no cluster key, tampered, replayed, unknown "
         "sender)",
         rs.frames_refused},
        {"shoal_repl_backlog_bytes", "gauge",
         "records held in memory for followers", rs.backlog_bytes},
    };
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        char line[512];
        int n = snprintf(line, sizeof(line),
                         "# HELP %s %s\n# TYPE %s %s\n%s %" PRIu64 "\n",
                         rows[i].name, rows[i].help, rows[i].name, rows[i].type,
                         rows[i].name, rows[i].v);
        if (n < 0 || (size_t) n >= sizeof(line))
            continue;
        char *t = mem_realloc(*text, *len + (size_t) n + 1);
        if (t == NULL)
            return SHOAL_ENOMEM;
        memcpy(t + *len, line, (size_t) n + 1);
        *text = t;
        *len += (size_t) n;
    }
    return SHOAL_OK;
}

static void
on_metrics(nng_aio *aio)
{
    char *text = NULL;
    size_t len = 0;
    http *h = enter(aio);
    if (h == NULL) {
        reply_text(aio, 503, "draining\n");
        return;
    }
    shoal_err rc = metrics_render(h->src.m, h->src.st, &text, &len);
    if (rc == SHOAL_OK && h->src.rp != NULL)
        rc = repl_metrics(h->src.rp, &text, &len);
    leave(h);
    if (rc != SHOAL_OK)
        reply_text(aio, 500, "out of memory\n");
    else
        reply(aio, 200, "text/plain; version=0.0.4", text, len);
    mem_free(text);
}

/* Register path -> cb; the handler holds a reference on h. */
static int
add_handler(http *h, const char *path, void (*cb)(nng_aio *))
{
    nng_http_handler *hd = NULL;
    int rv;
    if ((rv = nng_http_handler_alloc(&hd, path, cb)) != 0)
        return rv;
    pthread_mutex_lock(&h->mtx);
    h->refs++;
    pthread_mutex_unlock(&h->mtx);
    if ((rv = nng_http_handler_set_data(hd, h, unref)) != 0) {
        unref(h);
        nng_http_handler_free(hd);
        return rv;
    }
    if ((rv = nng_http_handler_collect_body(hd, true, 0)) != 0 ||
        (rv = nng_http_server_add_handler(h->srv, hd)) != 0) {
        nng_http_handler_free(hd); /* runs unref */
        return rv;
    }
    return 0;
}

static shoal_err
nng_to_shoal(int rv)
{
    return rv == NNG_ENOMEM ? SHOAL_ENOMEM : SHOAL_EUNAVAILABLE;
}

static int
start(http *h, const char *url)
{
    nng_url *u = NULL;
    nng_sockaddr sa;
    int rv;
    if ((rv = nng_url_parse(&u, url)) != 0)
        return rv;
    rv = nng_http_server_hold(&h->srv, u);
    nng_url_free(u);
    if (rv != 0)
        return rv;
    if ((rv = add_handler(h, "/health", on_health)) != 0 ||
        (rv = add_handler(h, "/status", on_status)) != 0 ||
        (rv = add_handler(h, "/metrics", on_metrics)) != 0 ||
        (rv = nng_http_server_start(h->srv)) != 0)
        return rv;
    if (nng_http_server_get_addr(h->srv, &sa) == 0 &&
        (sa.s_family == NNG_AF_INET || sa.s_family == NNG_AF_INET6))
        h->port = ntohs(sa.s_family == NNG_AF_INET ? sa.s_in.sa_port
                                                   : sa.s_in6.sa_port);
    return 0;
}

shoal_err
http_open(const char *url, const http_sources *src, http **out)
{
    *out = NULL;
    if (url == NULL || src == NULL || src->st == NULL || src->m == NULL ||
        src->c == NULL)
        return SHOAL_EINVAL;
    http *h = mem_calloc(1, sizeof(*h));
    if (h == NULL)
        return SHOAL_ENOMEM;
    h->src = *src;
    h->refs = 1;
    pthread_mutex_init(&h->mtx, NULL);
    pthread_cond_init(&h->idle, NULL);
    int rv = start(h, url);
    if (rv != 0) {
        slog(SLOG_ERR, "http", "cannot serve %s: %s", url, nng_strerror(rv));
        if (h->srv != NULL)
            nng_http_server_release(h->srv);
        unref(h);
        return rv == NNG_EINVAL || rv == NNG_EADDRINVAL ? SHOAL_EINVAL
                                                        : nng_to_shoal(rv);
    }
    *out = h;
    return SHOAL_OK;
}

void
http_close(http *h)
{
    if (h == NULL)
        return;
    pthread_mutex_lock(&h->mtx);
    h->closing = true;
    while (h->inflight > 0)
        pthread_cond_wait(&h->idle, &h->mtx);
    pthread_mutex_unlock(&h->mtx);
    nng_http_server_stop(h->srv);
    nng_http_server_release(h->srv);
    unref(h);
}

uint16_t
http_port(const http *h)
{
    return h->port;
}
