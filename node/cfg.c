/*
 * cfg.c -- shoald's flags, config file and NODE identity file (cfg.h).
 *
 * One table (opts[]) describes every option: its name (the long flag
 * without dashes, and the config-file name), how its value is parsed and
 * checked, where it is stored in struct cfg, and its --help line. Flags and
 * file lines go through the same apply(), so a value means the same in both
 * places and gets the same message when it is bad.
 *
 * Precedence: the flags are parsed first and each sets its bit in
 * cfg.flag_mask; the file then checks such options into a scratch cfg and
 * applies only the others. An option given twice on the command line takes
 * the last value; given twice in a file it is an error (a likely mistake).
 *
 * Numbers: strtoull after checking that the text starts with a digit
 * (strtoull would accept blanks, '+' and a wrapping '-'), with ERANGE and
 * the end pointer checked, then the option's range. Sizes may end in k, m
 * or g (x1024, x1024^2, x1024^3), with the multiplication checked.
 *
 * Messages quote user text through text_quote(), which replaces control bytes
 * and cuts long values, so an error is always one printable line.
 */
#include "node/cfg.h"

#include "proto/mem.h"
#include "proto/text.h"

#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef enum opt_kind {
    K_FLAG, /* bool; a flag takes no value, a file line takes a boolean */
    K_STR,  /* char *, non-empty, printable */
    K_NUM,  /* decimal number in [min, max] */
    K_SIZE, /* K_NUM with a k/m/g suffix allowed */
    K_FN,   /* parsed by fn */
} opt_kind;

struct opt_def;
typedef shoal_err (*opt_fn)(const struct opt_def *o, cfg *c, const char *v,
                            char *msg, size_t cap);

typedef struct opt_def {
    const char *name; /* long flag without "--", and the file name */
    opt_kind kind;
    size_t off;       /* field in struct cfg */
    size_t width;     /* K_NUM/K_SIZE: 4 (uint32_t) or 8 (uint64_t) */
    uint64_t min;     /* K_NUM/K_SIZE range, inclusive */
    uint64_t max;     /* ... and K_STR maximum length */
    opt_fn fn;        /* K_FN */
    bool in_file;     /* may appear in a config file */
    const char *arg;  /* value placeholder for messages and --help */
    const char *help; /* --help text */
} opt_def;

#define F(field) offsetof(cfg, field), sizeof(((cfg *) 0)->field)
#define KIB      1024ull
#define MIB      (1024ull * 1024)
#define GIB      (1024ull * 1024 * 1024)

static shoal_err set_id(const opt_def *, cfg *, const char *, char *, size_t);
static shoal_err set_url(const opt_def *, cfg *, const char *, char *, size_t);
static shoal_err set_http(const opt_def *, cfg *, const char *, char *, size_t);
static shoal_err set_fsync(const opt_def *, cfg *, const char *, char *,
                           size_t);
static shoal_err set_shards(const opt_def *, cfg *, const char *, char *,
                            size_t);
static shoal_err set_level(const opt_def *, cfg *, const char *, char *,
                           size_t);

/* Order is the --help order. in_file false: command line only. */
static const opt_def opts[] = {
    {"config", K_STR, F(config_file), 0, CFG_PATH_MAX, NULL, false, "FILE",
     "read options from FILE (flags override it)"},
    {"id", K_FN, F(id), 0, 0, set_id, true, "ID",
     "node id, [A-Za-z0-9._-]{1,63} (required for a new data dir)"},
    {"listen", K_FN, F(listen_url), 0, 0, set_url, true, "URL",
     "client listener (default " CFG_DEFAULT_LISTEN ")"},
    {"advertise", K_FN, F(advertise_url), 0, 0, set_url, true, "URL",
     "URL clients are told to use (default: the listen URL)"},
    {"http", K_FN, F(http_addr), 0, 0, set_http, true, "HOST:PORT|off",
     "HTTP /health /status /metrics (default " CFG_DEFAULT_HTTP ")"},
    {"data-dir", K_STR, F(data_dir), 0, CFG_PATH_MAX, NULL, true, "DIR",
     "data directory, created if missing (required unless --memory)"},
    {"memory", K_FLAG, F(memory), 0, 0, NULL, true, NULL,
     "keep nothing on disk: every key is lost at exit"},
    {"fsync", K_FN, F(fsync), 0, 0, set_fsync, true, "always|interval|none",
     "when writes are acknowledged (default always)"},
    {"fsync-interval-ms", K_NUM, F(fsync_interval_ms), 1, 60000, NULL, true,
     "N", "fsync period for --fsync interval (default 100)"},
    {"key-file", K_STR, F(key_file), 0, CFG_PATH_MAX, NULL, true, "FILE",
     "keys this node accepts (this or --insecure is required)"},
    {"insecure", K_FLAG, F(insecure), 0, 0, NULL, true, NULL,
     "plaintext, unauthenticated traffic (testing only)"},
    {"cluster", K_STR, F(cluster_file), 0, CFG_PATH_MAX, NULL, true, "FILE",
     "cluster file (cluster/cmap.h): members, S, R, W, hash key; with it "
     "--id names this node, --listen defaults to its client URL"},
    {"peer-listen", K_FN, F(peer_listen_url), 0, 0, set_url, true, "URL",
     "replication listener (default: this node's peer URL in --cluster)"},
    {"repl-backlog", K_SIZE, F(repl_backlog_bytes), MIB, 64 * GIB, NULL, true,
     "SIZE", "records kept in memory for followers to catch up (64m)"},
    {"shards", K_FN, F(n_shards), 1, 65536, set_shards, true, "N",
     "shard count, a power of two (default 256; fixed by the data dir)"},
    {"max-key-bytes", K_SIZE, F(max_key_bytes), 1, 65535, NULL, true, "SIZE",
     "largest key (default 1024)"},
    {"max-value-bytes", K_SIZE, F(max_value_bytes), 1, GIB, NULL, true, "SIZE",
     "largest value (default 16m)"},
    {"max-batch-ops", K_NUM, F(max_batch_ops), 1, 1000000, NULL, true, "N",
     "most operations in one batch (default 10000)"},
    {"max-frame-bytes", K_SIZE, F(max_frame_bytes), 4 * KIB, 2 * GIB, NULL,
     true, "SIZE", "largest request frame (default 64m + 64k)"},
    {"workers", K_NUM, F(workers), 1, 256, NULL, true, "N",
     "request worker threads (default: one per CPU, 2..16)"},
    {"contexts", K_NUM, F(contexts), 1, 16384, NULL, true, "N",
     "frames received concurrently (default 128)"},
    {"snapshot-wal-bytes", K_SIZE, F(snapshot_wal_bytes), 0, 1024 * GIB, NULL,
     true, "SIZE", "snapshot after this much WAL, 0 = off (256m)"},
    {"snapshot-interval-ms", K_NUM, F(snapshot_interval_ms), 0, 86400000, NULL,
     true, "N", "snapshot at least this often, 0 = off (default 0)"},
    {"replay-window-ms", K_NUM, F(replay_window_ms), 1000, 86400000, NULL, true,
     "N", "frames older than this are refused (default 300000)"},
    {"log-level", K_FN, F(log_level), 0, 0, set_level, true,
     "err|warn|notice|info|debug", "most verbose level logged (notice)"},
    {"drain-timeout-ms", K_NUM, F(drain_timeout_ms), 0, 3600000, NULL, true,
     "N", "longest wait for in-flight requests at exit (default 10000)"},
    {"help", K_FLAG, F(help), 0, 0, NULL, false, NULL, "print this and exit"},
    {"version", K_FLAG, F(version), 0, 0, NULL, false, NULL,
     "print the version and exit"},
};

#define N_OPTS (sizeof(opts) / sizeof(opts[0]))
_Static_assert(N_OPTS <= 64, "flag_mask holds one bit per option");

/* ---- small helpers --------------------------------------------------------
 */

static bool
printable(const char *v)
{
    for (; *v != '\0'; v++)
        if ((unsigned char) *v < 0x20 || (unsigned char) *v == 0x7f)
            return false;
    return true;
}

/* Replace the string at *slot with a copy of v (NULL v: clear it). */
static shoal_err
set_string(char **slot, const char *v)
{
    char *copy = NULL;
    if (v != NULL && (copy = mem_strdup(v)) == NULL)
        return SHOAL_ENOMEM;
    mem_free(*slot);
    *slot = copy;
    return SHOAL_OK;
}

static void *
field(cfg *c, const opt_def *o)
{
    return (char *) c + o->off;
}

/* "16m"-style text for a byte count when it is an exact multiple. */
static const char *
fmt_size(uint64_t v, char *buf, size_t cap)
{
    static const char units[] = {'g', 'm', 'k'};
    static const uint64_t mult[] = {GIB, MIB, KIB};
    for (size_t i = 0; i < sizeof(units); i++) {
        if (v >= mult[i] && v % mult[i] == 0) {
            snprintf(buf, cap, "%llu%c", (unsigned long long) (v / mult[i]),
                     units[i]);
            return buf;
        }
    }
    snprintf(buf, cap, "%llu", (unsigned long long) v);
    return buf;
}

typedef enum num_res { NUM_OK, NUM_BAD, NUM_BIG } num_res;

/* Decimal digits, then (units only) one of k, m, g in either case. */
static num_res
parse_num(const char *s, bool units, uint64_t *out)
{
    if (*s < '0' || *s > '9')
        return NUM_BAD;
    errno = 0;
    char *end = NULL;
    unsigned long long v = strtoull(s, &end, 10);
    bool big = errno == ERANGE;
    static const char suffix[] = "kKmMgG";
    unsigned shift = 0;
    if (units && *end != '\0' && end[1] == '\0') {
        const char *u = strchr(suffix, *end);
        if (u != NULL) {
            shift = 10u * (unsigned) (1 + (u - suffix) / 2);
            end++;
        }
    }
    if (*end != '\0')
        return NUM_BAD;
    if (big || v > (UINT64_MAX >> shift))
        return NUM_BIG;
    *out = (uint64_t) v << shift;
    return NUM_OK;
}

/* Like parse_num, with the option's range and messages. */
static shoal_err
num_value(const opt_def *o, const char *v, uint64_t *out, char *msg, size_t cap)
{
    char q[64], lo[32], hi[32];
    bool sz = o->kind == K_SIZE;
    num_res r = parse_num(v, sz, out);
    if (r == NUM_BAD) {
        text_err(msg, cap, "'%s' is not a %s", text_quote(v, q, sizeof(q)),
                 sz ? "size (digits, optionally k, m or g)" : "number");
        return SHOAL_EINVAL;
    }
    if (r == NUM_BIG || *out < o->min || *out > o->max) {
        text_err(
            msg, cap, "'%s' is out of range %s..%s",
            text_quote(v, q, sizeof(q)),
            sz ? fmt_size(o->min, lo, sizeof(lo))
               : (snprintf(lo, sizeof(lo), "%llu", (unsigned long long) o->min),
                  lo),
            sz ? fmt_size(o->max, hi, sizeof(hi))
               : (snprintf(hi, sizeof(hi), "%llu", (unsigned long long) o->max),
                  hi));
        return SHOAL_EINVAL;
    }
    return SHOAL_OK;
}

static shoal_err
set_number(const opt_def *o, cfg *c, const char *v, char *msg, size_t cap)
{
    uint64_t n;
    shoal_err rc = num_value(o, v, &n, msg, cap);
    if (rc != SHOAL_OK)
        return rc;
    if (o->width == sizeof(uint32_t)) {
        uint32_t n32 = (uint32_t) n;
        memcpy(field(c, o), &n32, sizeof(n32));
    } else {
        memcpy(field(c, o), &n, sizeof(n));
    }
    return SHOAL_OK;
}

static shoal_err
set_flag(const opt_def *o, cfg *c, const char *v, char *msg, size_t cap)
{
    static const char *const yes[] = {"true", "yes", "on", "1"};
    static const char *const no[] = {"false", "no", "off", "0"};
    char q[64];
    bool *b = field(c, o);
    if (v == NULL) { /* a bare flag */
        *b = true;
        return SHOAL_OK;
    }
    for (size_t i = 0; i < 4; i++) {
        if (strcmp(v, yes[i]) == 0 || strcmp(v, no[i]) == 0) {
            *b = strcmp(v, yes[i]) == 0;
            return SHOAL_OK;
        }
    }
    text_err(msg, cap, "'%s' is not one of true, false, yes, no, on, off, 1, 0",
             text_quote(v, q, sizeof(q)));
    return SHOAL_EINVAL;
}

static shoal_err
set_text(const opt_def *o, cfg *c, const char *v, char *msg, size_t cap)
{
    char q[64];
    if (v[0] == '\0') {
        text_err(msg, cap, "the value is empty (expected %s)", o->arg);
        return SHOAL_EINVAL;
    }
    if (strlen(v) > o->max || !printable(v)) {
        text_err(msg, cap, "'%s' is %s", text_quote(v, q, sizeof(q)),
                 strlen(v) > o->max ? "too long" : "not printable text");
        return SHOAL_EINVAL;
    }
    return set_string(field(c, o), v);
}

/* ---- option-specific values -----------------------------------------------
 */

bool
cfg_id_valid(const char *s)
{
    size_t n = 0;
    for (; s[n] != '\0'; n++) {
        char ch = s[n];
        bool ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
                  (ch >= '0' && ch <= '9') || ch == '.' || ch == '_' ||
                  ch == '-';
        if (!ok || n >= CFG_ID_MAX)
            return false;
    }
    return n > 0;
}

static shoal_err
set_id(const opt_def *o, cfg *c, const char *v, char *msg, size_t cap)
{
    char q[64];
    if (!cfg_id_valid(v)) {
        text_err(msg, cap,
                 "'%s' is not a valid id (1 to 63 of A-Z a-z 0-9 . _ -)",
                 text_quote(v, q, sizeof(q)));
        return SHOAL_EINVAL;
    }
    return set_string(field(c, o), v);
}

/* A decimal port 0..65535 spelt with 1 to 5 digits. */
static bool
port_valid(const char *p)
{
    size_t n = strlen(p);
    uint64_t v;
    return n >= 1 && n <= 5 && parse_num(p, false, &v) == NUM_OK && v <= 65535;
}

/* "HOST:PORT", "[V6]:PORT" or (empty_host) ":PORT". */
static bool
hostport_valid(const char *s, bool empty_host)
{
    const char *colon;
    if (s[0] == '[') {
        const char *close = strchr(s, ']');
        if (close == NULL || close == s + 1 || close[1] != ':')
            return false;
        colon = close + 1;
    } else {
        colon = strrchr(s, ':');
        if (colon == NULL || memchr(s, ':', (size_t) (colon - s)) != NULL ||
            memchr(s, ']', (size_t) (colon - s)) != NULL)
            return false;
        if (colon == s && !empty_host)
            return false;
    }
    for (const char *p = s; p < colon; p++)
        if (*p == ' ' || *p == '/' || *p == '\t')
            return false;
    return port_valid(colon + 1);
}

static bool
url_valid(const char *v)
{
    static const char *const tcp[] = {"tcp://", "tcp4://", "tcp6://"};
    static const char *const path[] = {"ipc://", "inproc://"};
    if (strlen(v) > CFG_URL_MAX || !printable(v) || strchr(v, ' ') != NULL)
        return false;
    for (size_t i = 0; i < 3; i++)
        if (strncmp(v, tcp[i], strlen(tcp[i])) == 0)
            return hostport_valid(v + strlen(tcp[i]), true);
    for (size_t i = 0; i < 2; i++)
        if (strncmp(v, path[i], strlen(path[i])) == 0)
            return v[strlen(path[i])] != '\0';
    return false;
}

static shoal_err
set_url(const opt_def *o, cfg *c, const char *v, char *msg, size_t cap)
{
    char q[64];
    if (!url_valid(v)) {
        text_err(msg, cap,
                 "'%s' is not a URL of the form tcp://HOST:PORT, "
                 "ipc://PATH or inproc://NAME",
                 text_quote(v, q, sizeof(q)));
        return SHOAL_EINVAL;
    }
    return set_string(field(c, o), v);
}

static shoal_err
set_http(const opt_def *o, cfg *c, const char *v, char *msg, size_t cap)
{
    char q[64];
    if (strcmp(v, "off") == 0)
        return set_string(field(c, o), NULL);
    if (strlen(v) > CFG_URL_MAX || !printable(v) || !hostport_valid(v, false)) {
        text_err(msg, cap, "'%s' is not HOST:PORT (port 0..65535) or off",
                 text_quote(v, q, sizeof(q)));
        return SHOAL_EINVAL;
    }
    return set_string(field(c, o), v);
}

static shoal_err
set_fsync(const opt_def *o, cfg *c, const char *v, char *msg, size_t cap)
{
    char q[64];
    int f = wal_fsync_parse(v);
    if (f < 0) {
        text_err(msg, cap, "'%s' is not one of always, interval, none",
                 text_quote(v, q, sizeof(q)));
        return SHOAL_EINVAL;
    }
    (void) o;
    c->fsync = (wal_fsync) f;
    return SHOAL_OK;
}

static shoal_err
set_shards(const opt_def *o, cfg *c, const char *v, char *msg, size_t cap)
{
    char q[64];
    uint64_t n;
    shoal_err rc = num_value(o, v, &n, msg, cap);
    if (rc != SHOAL_OK)
        return rc;
    if ((n & (n - 1)) != 0) {
        text_err(msg, cap, "'%s' is not a power of two (1, 2, 4, ... 65536)",
                 text_quote(v, q, sizeof(q)));
        return SHOAL_EINVAL;
    }
    c->n_shards = (uint32_t) n;
    c->shards_given = true;
    return SHOAL_OK;
}

static shoal_err
set_level(const opt_def *o, cfg *c, const char *v, char *msg, size_t cap)
{
    char q[64];
    int l = slog_level_parse(v);
    if (l < 0) {
        text_err(msg, cap, "'%s' is not one of err, warn, notice, info, debug",
                 text_quote(v, q, sizeof(q)));
        return SHOAL_EINVAL;
    }
    (void) o;
    c->log_level = (slog_level) l;
    return SHOAL_OK;
}

/* Parse v for option o into c. v is NULL only for a bare flag. */
static shoal_err
apply(const opt_def *o, cfg *c, const char *v, char *msg, size_t cap)
{
    switch (o->kind) {
    case K_FLAG:
        return set_flag(o, c, v, msg, cap);
    case K_STR:
        return set_text(o, c, v, msg, cap);
    case K_NUM:
    case K_SIZE:
        return set_number(o, c, v, msg, cap);
    case K_FN:
        return o->fn(o, c, v, msg, cap);
    }
    return SHOAL_EINVAL;
}

static const opt_def *
find_opt(const char *name, size_t len, size_t *idx)
{
    for (size_t i = 0; i < N_OPTS; i++) {
        if (strlen(opts[i].name) == len &&
            memcmp(opts[i].name, name, len) == 0) {
            *idx = i;
            return &opts[i];
        }
    }
    return NULL;
}

/* ---- public ---------------------------------------------------------------
 */

/* One worker per CPU: measured on 2 cores, 2 workers serve 10-25 % more
 * than 4 (less switching); at least 2 so that one read waiting for a
 * commit it observed does not stall the node. */
unsigned
cfg_default_workers(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    if (n < 2)
        return 2;
    return n > 16 ? 16u : (unsigned) n;
}

shoal_err
cfg_init(cfg *c)
{
    memset(c, 0, sizeof(*c));
    c->fsync = WAL_FSYNC_ALWAYS;
    c->fsync_interval_ms = 100;
    c->n_shards = 256;
    c->max_key_bytes = 1024;
    c->max_value_bytes = 16 * MIB;
    c->max_batch_ops = 10000;
    c->max_frame_bytes = 64 * MIB + 64 * KIB;
    c->workers = cfg_default_workers();
    c->contexts = 128;
    c->snapshot_wal_bytes = 256 * MIB;
    c->replay_window_ms = 300000;
    c->log_level = SLOG_NOTICE;
    c->drain_timeout_ms = 10000;
    c->repl_backlog_bytes = 64 * MIB;
    if (set_string(&c->listen_url, CFG_DEFAULT_LISTEN) != SHOAL_OK ||
        set_string(&c->http_addr, CFG_DEFAULT_HTTP) != SHOAL_OK)
        return SHOAL_ENOMEM;
    return SHOAL_OK;
}

void
cfg_fini(cfg *c)
{
    if (c == NULL)
        return;
    char **strs[] = {&c->config_file,   &c->id,           &c->listen_url,
                     &c->advertise_url, &c->http_addr,    &c->data_dir,
                     &c->key_file,      &c->cluster_file, &c->peer_listen_url};
    for (size_t i = 0; i < sizeof(strs) / sizeof(strs[0]); i++) {
        mem_free(*strs[i]);
        *strs[i] = NULL;
    }
}

const char *
cfg_advertise(const cfg *c)
{
    return c->advertise_url != NULL ? c->advertise_url : c->listen_url;
}

/* One argv element (and maybe its value, argv[*i + 1]). */
static shoal_err
parse_arg(int argc, char *const argv[], int *i, cfg *c, char *err,
          size_t err_len)
{
    char q[64], msg[CFG_ERR_LEN];
    const char *a = argv[*i];
    if (strcmp(a, "-h") == 0)
        a = "--help";
    if (strncmp(a, "--", 2) != 0 || a[2] == '\0') {
        text_err(err, err_len, "unexpected argument '%s' (see --help)",
                 text_quote(a, q, sizeof(q)));
        return SHOAL_EINVAL;
    }
    const char *name = a + 2, *eq = strchr(name, '=');
    size_t idx, nlen = eq != NULL ? (size_t) (eq - name) : strlen(name);
    const opt_def *o = find_opt(name, nlen, &idx);
    if (o == NULL) {
        text_err(err, err_len, "unknown option '%s' (see --help)",
                 text_quote(a, q, sizeof(q)));
        return SHOAL_EINVAL;
    }
    const char *v = eq != NULL ? eq + 1 : NULL;
    if (o->kind == K_FLAG && v != NULL) {
        text_err(err, err_len, "--%s takes no value", o->name);
        return SHOAL_EINVAL;
    }
    if (o->kind != K_FLAG && v == NULL) {
        if (*i + 1 >= argc || strncmp(argv[*i + 1], "--", 2) == 0) {
            text_err(err, err_len, "--%s needs a value (%s)", o->name, o->arg);
            return SHOAL_EINVAL;
        }
        v = argv[++*i];
    }
    shoal_err rc = apply(o, c, v, msg, sizeof(msg));
    if (rc == SHOAL_EINVAL)
        text_err(err, err_len, "--%s: %s", o->name, msg);
    else if (rc == SHOAL_ENOMEM)
        text_err(err, err_len, "out of memory");
    c->flag_mask |= 1ull << idx;
    return rc;
}

shoal_err
cfg_parse_args(int argc, char *const argv[], cfg *c, char *err, size_t err_len)
{
    text_err(err, err_len, "%s", "");
    for (int i = 1; i < argc; i++) {
        shoal_err rc = parse_arg(argc, argv, &i, c, err, err_len);
        if (rc != SHOAL_OK)
            return rc;
    }
    return SHOAL_OK;
}

/* ---- "name = value" lines (config and NODE files) ------------------------
 */

typedef struct kv_iter {
    const char *text;
    size_t len, pos;
    unsigned line;
    char buf[CFG_LINE_MAX + 1];
} kv_iter;

/* The next "name = value" line: 1 with *name and *value (trimmed, in
 * it->buf), 0 at the end of the text, -1 on a malformed line (err set). */
static int
kv_next(kv_iter *it, char **name, char **value, char *err, size_t err_len)
{
    while (it->pos < it->len) {
        const char *p = it->text + it->pos;
        const char *nl = memchr(p, '\n', it->len - it->pos);
        size_t n = nl != NULL ? (size_t) (nl - p) : it->len - it->pos;
        it->pos += n + (nl != NULL);
        it->line++;
        if (n > CFG_LINE_MAX || memchr(p, '\0', n) != NULL) {
            text_err(err, err_len, "line %u: %s", it->line,
                     n > CFG_LINE_MAX ? "longer than 4096 bytes"
                                      : "contains a NUL byte");
            return -1;
        }
        memcpy(it->buf, p, n);
        it->buf[n] = '\0';
        text_cut_comment(it->buf);
        char *s = text_trim(it->buf);
        if (*s == '\0')
            continue;
        char *eq = strchr(s, '=');
        if (eq == NULL || eq == s) {
            text_err(err, err_len, "line %u: expected 'name = value'",
                     it->line);
            return -1;
        }
        *eq = '\0';
        *name = text_trim(s);
        *value = text_trim(eq + 1);
        return 1;
    }
    return 0;
}

/* One config line: check it, then apply it to c, or only check it when the
 * flags set this option. */
static shoal_err
file_opt(const kv_iter *it, unsigned first[], const char *name,
         const char *value, cfg *c, char *err, size_t err_len)
{
    char q[64], msg[CFG_ERR_LEN];
    size_t idx;
    const opt_def *o = find_opt(name, strlen(name), &idx);
    if (o == NULL || !o->in_file) {
        text_err(err, err_len, "line %u: %s '%s'", it->line,
                 o == NULL ? "unknown option" : "not allowed in a config file:",
                 text_quote(name, q, sizeof(q)));
        return SHOAL_EINVAL;
    }
    if (first[idx] != 0) {
        text_err(err, err_len, "line %u: %s is already set on line %u",
                 it->line, o->name, first[idx]);
        return SHOAL_EINVAL;
    }
    first[idx] = it->line;
    if (value[0] == '\0') {
        text_err(err, err_len, "line %u: %s: needs a value (%s)", it->line,
                 o->name, o->arg != NULL ? o->arg : "true or false");
        return SHOAL_EINVAL;
    }
    cfg scratch;
    memset(&scratch, 0, sizeof(scratch));
    bool flagged = (c->flag_mask >> idx) & 1;
    shoal_err rc = apply(o, flagged ? &scratch : c, value, msg, sizeof(msg));
    cfg_fini(&scratch);
    if (rc == SHOAL_EINVAL)
        text_err(err, err_len, "line %u: %s: %s", it->line, o->name, msg);
    else if (rc == SHOAL_ENOMEM)
        text_err(err, err_len, "out of memory");
    return rc;
}

shoal_err
cfg_parse_file(const char *text, size_t len, cfg *c, char *err, size_t err_len)
{
    unsigned first[N_OPTS] = {0};
    char *name, *value;
    int r;
    kv_iter *it = mem_calloc(1, sizeof(*it));
    if (it == NULL) {
        text_err(err, err_len, "out of memory");
        return SHOAL_ENOMEM;
    }
    it->text = text;
    it->len = len;
    text_err(err, err_len, "%s", "");
    shoal_err rc = SHOAL_OK;
    while (rc == SHOAL_OK && (r = kv_next(it, &name, &value, err, err_len)))
        rc = r < 0 ? SHOAL_EINVAL
                   : file_opt(it, first, name, value, c, err, err_len);
    mem_free(it);
    return rc;
}

shoal_err
cfg_check(const cfg *c, char *err, size_t err_len)
{
    char a[32], b[32], d[32];
    if (c->insecure == (c->key_file != NULL)) {
        text_err(err, err_len, "%s",
                 c->insecure ? "--insecure and --key-file are mutually "
                               "exclusive: give one of them"
                             : "one of --key-file FILE or --insecure is "
                               "required");
        return SHOAL_EINVAL;
    }
    if (c->memory == (c->data_dir != NULL)) {
        text_err(err, err_len, "%s",
                 c->memory ? "--memory and --data-dir are mutually exclusive"
                           : "--data-dir DIR is required (or --memory to "
                             "keep nothing on disk)");
        return SHOAL_EINVAL;
    }
    if (c->memory && c->id == NULL) {
        text_err(err, err_len, "--id is required with --memory");
        return SHOAL_EINVAL;
    }
    uint64_t need = c->max_value_bytes + c->max_key_bytes + 4 * KIB;
    if (c->max_frame_bytes < need) {
        text_err(err, err_len,
                 "--max-frame-bytes: %s cannot hold a --max-value-bytes value "
                 "and key (at least %s + %s + 4k)",
                 fmt_size(c->max_frame_bytes, a, sizeof(a)),
                 fmt_size(c->max_value_bytes, b, sizeof(b)),
                 fmt_size(c->max_key_bytes, d, sizeof(d)));
        return SHOAL_EINVAL;
    }
    return SHOAL_OK;
}

void
cfg_usage(FILE *f, const char *prog)
{
    fprintf(f,
            "usage: %s --id ID (--data-dir DIR | --memory)\n"
            "       (--key-file FILE | --insecure) [options]\n\n"
            "Options (also 'name = value' lines in a --config file):\n",
            prog);
    for (size_t i = 0; i < N_OPTS; i++) {
        const opt_def *o = &opts[i];
        char left[64];
        snprintf(left, sizeof(left), "--%s%s%s", o->name,
                 o->arg != NULL ? " " : "", o->arg != NULL ? o->arg : "");
        fprintf(f, "  %-34s %s\n", left, o->help);
    }
    fprintf(f, "Sizes take k, m or g (16m). Exit codes: 0 clean stop, "
               "1 runtime failure, 2 bad configuration.\n");
}

/* ---- NODE identity file ---------------------------------------------------
 */

/* One NODE line into out; bit 1 << field in *seen. */
static shoal_err
ident_field(const kv_iter *it, const char *name, const char *v, cfg_ident *out,
            unsigned *seen, char *err, size_t err_len)
{
    static const char *const names[] = {"id", "shards", "hash_key"};
    uint64_t n = 0;
    unsigned f = 0;
    while (f < 3 && strcmp(name, names[f]) != 0)
        f++;
    bool ok = f < 3 && !(*seen & (1u << f));
    if (ok && f == 0) {
        ok = cfg_id_valid(v);
        if (ok)
            memcpy(out->id, v, strlen(v) + 1);
    } else if (ok && f == 1) {
        ok = parse_num(v, false, &n) == NUM_OK && n >= 1 && n <= 65536 &&
             (n & (n - 1)) == 0;
        out->n_shards = (uint32_t) n;
    } else if (ok) {
        ok = keyhash_parse_hex(v, out->hash_key);
    }
    if (!ok) {
        text_err(err, err_len, "line %u: %s", it->line,
                 f == 3                ? "unknown field"
                 : (*seen & (1u << f)) ? "field repeated"
                                       : "bad value");
        return SHOAL_ECORRUPT;
    }
    *seen |= 1u << f;
    return SHOAL_OK;
}

shoal_err
cfg_ident_parse(const char *text, size_t len, cfg_ident *out, char *err,
                size_t err_len)
{
    char *name, *value;
    unsigned seen = 0;
    int r;
    memset(out, 0, sizeof(*out));
    kv_iter *it = mem_calloc(1, sizeof(*it));
    if (it == NULL) {
        text_err(err, err_len, "out of memory");
        return SHOAL_ENOMEM;
    }
    it->text = text;
    it->len = len;
    shoal_err rc = SHOAL_OK;
    while (rc == SHOAL_OK && (r = kv_next(it, &name, &value, err, err_len)))
        rc = r < 0 ? SHOAL_ECORRUPT
                   : ident_field(it, name, value, out, &seen, err, err_len);
    mem_free(it);
    if (rc == SHOAL_OK && seen != 7) {
        text_err(err, err_len, "missing %s",
                 !(seen & 1)   ? "id"
                 : !(seen & 2) ? "shards"
                               : "hash_key");
        rc = SHOAL_ECORRUPT;
    }
    if (rc != SHOAL_OK)
        memset(out, 0, sizeof(*out));
    return rc;
}

shoal_err
cfg_ident_format(const cfg_ident *id, char *buf, size_t buf_len,
                 size_t *len_out)
{
    char hex[2 * KEYHASH_KEY_BYTES + 1];
    if (!cfg_id_valid(id->id) || id->n_shards == 0 || id->n_shards > 65536 ||
        (id->n_shards & (id->n_shards - 1)) != 0)
        return SHOAL_EINVAL;
    for (size_t i = 0; i < KEYHASH_KEY_BYTES; i++)
        snprintf(hex + 2 * i, 3, "%02x", id->hash_key[i]);
    int n = snprintf(buf, buf_len, "id = %s\nshards = %u\nhash_key = %s\n",
                     id->id, (unsigned) id->n_shards, hex);
    if (n < 0 || (size_t) n >= buf_len)
        return SHOAL_ETOOLARGE;
    *len_out = (size_t) n;
    return SHOAL_OK;
}
