/*
 * shoalctl.c -- the operator's and script's command line over libshoal.
 *
 *   shoalctl [global options] <command> [arguments]
 *
 * This file holds main(), the global options, the command table and the
 * data commands (get put del incr ttl exists count scan stats). keygen,
 * bench and cluster live in ctl_keygen.c, ctl_bench.c and ctl_cluster.c;
 * argument parsing and output formatting in ctl_args.c and ctl_out.c
 * (private interface: ctl_int.h).
 *
 * Exit codes (also in --help; scripts rely on them, never renumber):
 *   0  success
 *   1  not found: get/del/ttl/exists of a missing key
 *   2  usage error: bad arguments (a message and the usage line on stderr)
 *   3  condition failed: SHOAL_EEXISTS, SHOAL_EVERSION
 *   4  authentication or permission: SHOAL_EAUTH, SHOAL_EPERM
 *   5  unavailable or timed out: SHOAL_EUNAVAILABLE, SHOAL_ETIMEOUT;
 *      cluster status: a node did not answer
 *   6  any other error
 * Errors print "shoalctl: <command>: <shoal_strerror> (<SHOAL_ENAME>)" on
 * stderr, sometimes followed by ": <detail>".
 *
 * Output has three forms: human (stdout is a terminal: text values as
 * text, binary ones escaped, aligned tables), plain (piped: bare results,
 * one item per line) and --json (one object per line, field names stable
 * and listed in --help). The command is parsed completely before any
 * connection is made, so a usage error never waits for a node.
 */
#include "ctl_int.h"

#include "proto/clock.h"
#include "proto/mem.h"
#include "proto/wire.h"

#include <sodium.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#ifndef SHOAL_VERSION
#define SHOAL_VERSION "0.0.0"
#endif

#define CTL_DEFAULT_URL "tcp://127.0.0.1:7400"
#define CTL_STDIN_MAX   ((size_t) 64 << 20) /* libshoal's largest frame */

static const char usage_line[] =
    "usage: shoalctl [global options] <command> [arguments]"
    "  (shoalctl --help)";

static const char help_text[] =
    "usage: shoalctl [global options] <command> [arguments]\n"
    "\n"
    "Global options (before the command):\n"
    "  --url URL       node to talk to; repeatable (default $SHOAL_URL, a\n"
    "                  comma-separated list, else " CTL_DEFAULT_URL ")\n"
    "  --seeds LIST    the same, a comma-separated list of URLs: any node of\n"
    "                  a cluster serves the map, libshoal routes each key\n"
    "  --key-file F    client key file (default $SHOAL_KEY_FILE)\n"
    "  --insecure      plaintext without a key (node run with --insecure)\n"
    "  --timeout-ms N  per-call deadline and connect timeout (default "
    "5000)\n"
    "  --read-any      reads may be served by any replica (possibly stale)\n"
    "  --write-quorum W  writes wait for W durable copies (default: the\n"
    "                  cluster's)\n"
    "  --json          machine output, see JSON below\n"
    "  --hex           keys, values and prefixes are given and printed as "
    "hex\n"
    "  -v, --verbose   libshoal's log lines on stderr\n"
    "  -h, --help      this text      --version  print the version\n"
    "\n"
    "Commands:\n"
    "  get KEY                 print the value\n"
    "  put KEY VALUE [--ttl-ms N] [--if-absent] [--if-version V]\n"
    "                          store VALUE (\"-\": read it from stdin, bytes "
    "as\n"
    "                          they are; with --hex, hex text)\n"
    "  del KEY [--if-version V]\n"
    "  incr KEY [DELTA]        add DELTA (default 1) to a decimal int64 "
    "value\n"
    "  ttl KEY                 remaining time to live in ms (-1: never "
    "expires)\n"
    "  exists KEY              exit 0 when KEY exists, 1 when not\n"
    "  count [PREFIX]          number of live keys (beginning with PREFIX)\n"
    "  scan [--prefix P] [--start S] [--end E] [--limit N] [--keys-only]\n"
    "       [--token T] [--all]\n"
    "                          keys in order from S (inclusive) to E\n"
    "                          (exclusive), N per page (default 100, 1000 "
    "with\n"
    "                          --all); --all follows the pages to the end,\n"
    "                          --token T continues a previous scan\n"
    "  stats                   node statistics (needs an admin key)\n"
    "  keygen --id N --role read|write|admin|peer [--prefix P] [--out FILE]\n"
    "         [--force | --append]\n"
    "                          make a key (shoalctl keygen --help)\n"
    "  bench [-c N] [-n N] [-d N] [-r N] [-t LIST] [-P N] [--duration-s N]\n"
    "                          load generator (shoalctl bench --help)\n"
    "  cluster status [--json] every node's shards, map epoch and "
    "replication\n"
    "                          lag (admin key; shoalctl cluster --help)\n"
    "\n";

/* Split in two: C99 compilers need support only 4095-byte literals. */
static const char help_text2[] =
    "Output: on a terminal, printable values as text and others escaped\n"
    "(\\n \\t \\\\ \\xNN), scan and stats as tables. Piped: get prints the "
    "raw\n"
    "value and a newline, scan \"KEY<TAB>VALUE\" lines (escaped), others "
    "the\n"
    "bare result (put: the new version).\n"
    "\n"
    "JSON (--json): one object per line on stdout.\n"
    "  get     {\"key\",\"value\",\"version\"}\n"
    "  put     {\"key\",\"version\"}\n"
    "  del     {\"key\",\"deleted\":true}\n"
    "  incr    {\"key\",\"value\":int,\"version\"}\n"
    "  ttl     {\"key\",\"ttl_ms\":int (-1: never),\"version\"}\n"
    "  exists  {\"key\",\"exists\":bool}\n"
    "  count   {\"prefix\",\"count\"}\n"
    "  scan    {\"items\":[{\"key\",\"value\",\"version\",\"expire_at\" (unix "
    "ms,\n"
    "          0: never)}],\"count\",\"more\":bool,\"token\" (hex, when "
    "more)}\n"
    "  stats   {\"node_id\",\"keys\",\"bytes\",\"index_bytes\","
    "\"wal_records\",\n"
    "          \"wal_bytes\",\"wal_fsyncs\",\"wal_segments\",\"snapshots\",\n"
    "          \"snapshot_ms_max\",\"expired\",\"uptime_ms\",\"requests\",\n"
    "          \"n_shards\",\"read_only\"}\n"
    "  keygen  {\"id\",\"role\",\"prefix_hex\",\"out\"} (\"line\" instead of "
    "\"out\"\n"
    "          when printing to stdout)\n"
    "  bench   one object per test (shoalctl bench --help)\n"
    "  cluster status: one object (shoalctl cluster --help)\n"
    "  errors  {\"error\":\"SHOAL_E...\",\"status\":int,\"message\"} (and the "
    "usual\n"
    "          line on stderr)\n"
    "Keys and values are JSON strings when they are valid UTF-8; otherwise\n"
    "the member is \"key_hex\"/\"value_hex\"/\"prefix_hex\" and holds hex. "
    "With\n"
    "--hex, \"key\" and \"value\" always hold hex.\n"
    "\n"
    "Exit codes:\n"
    "  0 success            1 not found (get/del/ttl/exists of a missing "
    "key)\n"
    "  2 usage error        3 condition failed (SHOAL_EEXISTS, "
    "SHOAL_EVERSION)\n"
    "  4 authentication or permission (SHOAL_EAUTH, SHOAL_EPERM)\n"
    "  5 unavailable or timed out (SHOAL_EUNAVAILABLE, SHOAL_ETIMEOUT);\n"
    "    cluster status: some node did not answer\n"
    "  6 any other error\n";

/* ---- exits and messages -------------------------------------------------- */

int
ctl_exit_code(shoal_err rc)
{
    switch (rc) {
    case SHOAL_OK:
        return CTL_EXIT_OK;
    case SHOAL_ENOTFOUND:
        return CTL_EXIT_NOTFOUND;
    case SHOAL_EEXISTS:
    case SHOAL_EVERSION:
        return CTL_EXIT_COND;
    case SHOAL_EAUTH:
    case SHOAL_EPERM:
        return CTL_EXIT_AUTH;
    case SHOAL_EUNAVAILABLE:
    case SHOAL_ETIMEOUT:
        return CTL_EXIT_UNAVAIL;
    default:
        return CTL_EXIT_ERR;
    }
}

int
ctl_fail(ctl *c, shoal_err rc, const char *fmt, ...)
{
    char detail[512] = "";
    if (fmt) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(detail, sizeof(detail), fmt, ap);
        va_end(ap);
    }
    fprintf(stderr, "shoalctl: %s: %s (%s)%s%s\n", c->cmd ? c->cmd : "start",
            shoal_strerror(rc), shoal_errname(rc), fmt ? ": " : "", detail);
    if (c->json) {
        ctl_sb sb = {0};
        ctl_sb_printf(&sb, "{\"error\":\"%s\",\"status\":%d,\"message\":",
                      shoal_errname(rc), (int) rc);
        const char *m = fmt ? detail : shoal_strerror(rc);
        ctl_sb_json_str(&sb, m, strlen(m));
        ctl_sb_put(&sb, "}\n", 2);
        if (!sb.oom)
            fputs(sb.ptr, stdout);
        fflush(stdout);
        ctl_sb_free(&sb);
    }
    return ctl_exit_code(rc);
}

int
ctl_usage(ctl *c, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (c->cmd)
        fprintf(stderr,
                "shoalctl: %s: %s\nusage: shoalctl [global options] "
                "%s\n",
                c->cmd, msg, c->usage);
    else
        fprintf(stderr, "shoalctl: %s\n%s\n", msg, usage_line);
    return CTL_EXIT_USAGE;
}

/* ---- connecting ---------------------------------------------------------- */

/* Load the key file ourselves first: libshoal only says EIO/EPERM/EINVAL,
 * the key ring loader says which line is wrong or why the mode is refused. */
static int
check_key_file(ctl *c)
{
    char err[256] = "";
    wire_keyring *kr = NULL;
    shoal_err rc = wire_keyring_load(c->key_file, &kr, err, sizeof(err));
    wire_keyring_free(kr);
    if (rc != SHOAL_OK)
        return ctl_fail(c, rc, "key file %s: %s", c->key_file, err);
    return CTL_EXIT_OK;
}

int
ctl_connect(ctl *c)
{
    if (c->db)
        return CTL_EXIT_OK;
    if (c->key_file == NULL && !c->insecure)
        return ctl_usage(c, "no key: give --key-file F (or set "
                            "SHOAL_KEY_FILE), or --insecure for a node run "
                            "with --insecure");
    int ec = c->key_file ? check_key_file(c) : CTL_EXIT_OK;
    if (ec != CTL_EXIT_OK)
        return ec;
    shoal_opts o;
    shoal_opts_default(&o);
    o.seeds = c->urls;
    o.n_seeds = c->n_urls;
    o.key_file = c->key_file;
    o.insecure = c->insecure;
    o.read_any = c->call.read_any; /* for bench too, which has no call */
    o.write_quorum = c->call.w;
    if (c->timeout_ms) {
        o.timeout_ms = c->timeout_ms;
        o.connect_timeout_ms = c->timeout_ms;
    }
    shoal_err rc = shoal_open(&o, &c->db);
    if (rc != SHOAL_OK)
        return ctl_fail(c, rc, "connecting to %s%s", c->urls[0],
                        c->n_urls > 1 ? " and the other --url" : "");
    return CTL_EXIT_OK;
}

/* ---- get, put, del ------------------------------------------------------- */

/* The bytes of a key argument, with the handle opened: the common start of
 * every single-key command. */
static int
key_and_connect(ctl *c, const char *arg, ctl_bytes *key)
{
    int ec = ctl_arg_bytes(c, "KEY", arg, key);
    if (ec == CTL_EXIT_OK)
        ec = ctl_connect(c);
    return ec;
}

/* Start a JSON object with the key member: {"key":... */
static void
json_key(ctl_sb *sb, const ctl *c, const ctl_bytes *key)
{
    ctl_sb_put(sb, "{", 1);
    ctl_sb_json_bytes(sb, c, "key", key->ptr, key->len, true);
}

static int
print_value(ctl *c, const ctl_bytes *key, const uint8_t *v, size_t n,
            uint64_t version)
{
    ctl_sb sb = {0};
    if (c->json) {
        json_key(&sb, c, key);
        ctl_sb_json_bytes(&sb, c, "value", v, n, false);
        ctl_sb_printf(&sb, ",\"version\":%llu}\n",
                      (unsigned long long) version);
    } else if (c->hex) {
        ctl_sb_hex(&sb, v, n);
        ctl_sb_put(&sb, "\n", 1);
    } else if (c->out_tty && (n == 0 || !ctl_printable(v, n))) {
        ctl_sb_put(&sb, "\"", 1);
        ctl_sb_escaped(&sb, v, n);
        ctl_sb_put(&sb, "\"\n", 2);
    } else {
        ctl_sb_put(&sb, v, n);
        ctl_sb_put(&sb, "\n", 1);
    }
    int ec = ctl_sb_flush(c, &sb, stdout);
    ctl_sb_free(&sb);
    return ec;
}

static int
cmd_get(ctl *c, int argc, char **argv)
{
    const char *pos[1];
    ctl_bytes key = {0};
    int ec = ctl_parse(c, argc, argv, NULL, pos, 1, 1, NULL);
    if (ec == CTL_EXIT_OK)
        ec = key_and_connect(c, pos[0], &key);
    if (ec == CTL_EXIT_OK) {
        void *val = NULL;
        size_t vlen = 0;
        uint64_t version = 0;
        shoal_err rc =
            shoal_get(c->db, key.ptr, key.len, &val, &vlen, &version, &c->call);
        ec = rc != SHOAL_OK ? ctl_fail(c, rc, NULL)
                            : print_value(c, &key, val, vlen, version);
        shoal_free(val);
    }
    ctl_bytes_free(&key);
    return ec;
}

/* The VALUE of put: the argument, or stdin for "-". */
static int
put_value(ctl *c, const char *arg, ctl_bytes *val)
{
    if (strcmp(arg, "-") != 0)
        return ctl_arg_bytes(c, "VALUE", arg, val);
    ctl_bytes in = {0};
    shoal_err rc = ctl_read_fd(STDIN_FILENO, CTL_STDIN_MAX, &in);
    if (rc != SHOAL_OK)
        return ctl_fail(c, rc, "reading the value from stdin");
    if (!c->hex) {
        *val = in;
        return CTL_EXIT_OK;
    }
    size_t n = in.len;
    while (n > 0 && strchr(" \t\r\n", in.ptr[n - 1]) != NULL)
        n--;
    rc = ctl_hex_decode((const char *) in.ptr, n, val);
    ctl_bytes_free(&in);
    if (rc == SHOAL_EINVAL)
        return ctl_usage(c, "stdin is not hex (--hex)");
    return rc == SHOAL_OK ? CTL_EXIT_OK : ctl_fail(c, rc, NULL);
}

static int
print_version(ctl *c, const ctl_bytes *key, uint64_t version)
{
    ctl_sb sb = {0};
    if (c->json) {
        json_key(&sb, c, key);
        ctl_sb_printf(&sb, ",\"version\":%llu}\n",
                      (unsigned long long) version);
    } else if (c->out_tty) {
        ctl_sb_printf(&sb, "OK (version %llu)\n", (unsigned long long) version);
    } else {
        ctl_sb_printf(&sb, "%llu\n", (unsigned long long) version);
    }
    int ec = ctl_sb_flush(c, &sb, stdout);
    ctl_sb_free(&sb);
    return ec;
}

static int
cmd_put(ctl *c, int argc, char **argv)
{
    shoal_put_opts po = {0};
    const ctl_opt opts[] = {
        {"--ttl-ms", NULL, CTL_OPT_U64, &po.ttl_ms, NULL, 1, UINT64_MAX, NULL},
        {"--if-absent", NULL, CTL_OPT_FLAG, &po.if_absent, NULL, 0, 0, NULL},
        {"--if-version", NULL, CTL_OPT_U64, &po.if_version, &po.has_if_version,
         0, UINT64_MAX, NULL},
        {NULL, NULL, CTL_OPT_FLAG, NULL, NULL, 0, 0, NULL},
    };
    const char *pos[2];
    ctl_bytes key = {0}, val = {0};
    int ec = ctl_parse(c, argc, argv, opts, pos, 2, 2, NULL);
    if (ec == CTL_EXIT_OK)
        ec = ctl_arg_bytes(c, "KEY", pos[0], &key);
    if (ec == CTL_EXIT_OK)
        ec = put_value(c, pos[1], &val);
    if (ec == CTL_EXIT_OK)
        ec = ctl_connect(c);
    if (ec == CTL_EXIT_OK) {
        uint64_t version = 0;
        shoal_err rc = shoal_put(c->db, key.ptr, key.len, val.ptr, val.len, &po,
                                 &version, &c->call);
        ec = rc != SHOAL_OK ? ctl_fail(c, rc, NULL)
                            : print_version(c, &key, version);
    }
    ctl_bytes_free(&key);
    ctl_bytes_free(&val);
    return ec;
}

/* Print the result of a command whose plain form is one short line:
 * human on a terminal, plain when piped, and with --json {"key":..,<json>}.
 */
static int
print_simple(ctl *c, const ctl_bytes *key, const char *human, const char *plain,
             const char *json)
{
    ctl_sb sb = {0};
    if (c->json) {
        json_key(&sb, c, key);
        ctl_sb_printf(&sb, ",%s}\n", json);
    } else if (c->out_tty) {
        ctl_sb_printf(&sb, "%s\n", human);
    } else if (plain) {
        ctl_sb_printf(&sb, "%s\n", plain);
    }
    int ec = ctl_sb_flush(c, &sb, stdout);
    ctl_sb_free(&sb);
    return ec;
}

static int
cmd_del(ctl *c, int argc, char **argv)
{
    uint64_t if_version = 0;
    bool has_if_version = false;
    const ctl_opt opts[] = {
        {"--if-version", NULL, CTL_OPT_U64, &if_version, &has_if_version, 0,
         UINT64_MAX, NULL},
        {NULL, NULL, CTL_OPT_FLAG, NULL, NULL, 0, 0, NULL},
    };
    const char *pos[1];
    ctl_bytes key = {0};
    int ec = ctl_parse(c, argc, argv, opts, pos, 1, 1, NULL);
    if (ec == CTL_EXIT_OK)
        ec = key_and_connect(c, pos[0], &key);
    if (ec == CTL_EXIT_OK) {
        shoal_err rc = shoal_del(c->db, key.ptr, key.len,
                                 has_if_version ? &if_version : NULL, &c->call);
        ec = rc != SHOAL_OK
                 ? ctl_fail(c, rc, NULL)
                 : print_simple(c, &key, "deleted", NULL, "\"deleted\":true");
    }
    ctl_bytes_free(&key);
    return ec;
}

/* ---- incr, ttl, exists, count -------------------------------------------- */

static int
cmd_incr(ctl *c, int argc, char **argv)
{
    const char *pos[2];
    size_t n = 0;
    int64_t delta = 1;
    ctl_bytes key = {0};
    int ec = ctl_parse(c, argc, argv, NULL, pos, 1, 2, &n);
    if (ec == CTL_EXIT_OK && n == 2 && !ctl_i64(pos[1], &delta))
        ec = ctl_usage(c, "DELTA '%s' is not a 64-bit integer", pos[1]);
    if (ec == CTL_EXIT_OK)
        ec = key_and_connect(c, pos[0], &key);
    if (ec == CTL_EXIT_OK) {
        int64_t result = 0;
        uint64_t version = 0;
        shoal_err rc = shoal_incr(c->db, key.ptr, key.len, delta, &result,
                                  &version, &c->call);
        char num[32], json[96];
        snprintf(num, sizeof(num), "%lld", (long long) result);
        snprintf(json, sizeof(json), "\"value\":%lld,\"version\":%llu",
                 (long long) result, (unsigned long long) version);
        ec = rc != SHOAL_OK ? ctl_fail(c, rc, NULL)
                            : print_simple(c, &key, num, num, json);
    }
    ctl_bytes_free(&key);
    return ec;
}

static int
cmd_ttl(ctl *c, int argc, char **argv)
{
    const char *pos[1];
    ctl_bytes key = {0};
    int ec = ctl_parse(c, argc, argv, NULL, pos, 1, 1, NULL);
    if (ec == CTL_EXIT_OK)
        ec = key_and_connect(c, pos[0], &key);
    if (ec == CTL_EXIT_OK) {
        int64_t ttl = 0;
        uint64_t version = 0;
        shoal_err rc =
            shoal_ttl(c->db, key.ptr, key.len, &ttl, &version, &c->call);
        char human[48], plain[32], json[96];
        if (ttl < 0)
            snprintf(human, sizeof(human), "no expiry");
        else
            snprintf(human, sizeof(human), "%lld ms", (long long) ttl);
        snprintf(plain, sizeof(plain), "%lld", (long long) ttl);
        snprintf(json, sizeof(json), "\"ttl_ms\":%lld,\"version\":%llu",
                 (long long) ttl, (unsigned long long) version);
        ec = rc != SHOAL_OK ? ctl_fail(c, rc, NULL)
                            : print_simple(c, &key, human, plain, json);
    }
    ctl_bytes_free(&key);
    return ec;
}

static int
cmd_exists(ctl *c, int argc, char **argv)
{
    const char *pos[1];
    ctl_bytes key = {0};
    int ec = ctl_parse(c, argc, argv, NULL, pos, 1, 1, NULL);
    if (ec == CTL_EXIT_OK)
        ec = key_and_connect(c, pos[0], &key);
    if (ec == CTL_EXIT_OK) {
        bool exists = false;
        shoal_err rc = shoal_exists(c->db, key.ptr, key.len, &exists, &c->call);
        if (rc != SHOAL_OK)
            ec = ctl_fail(c, rc, NULL);
        else
            ec =
                print_simple(c, &key, exists ? "yes" : "no", exists ? "1" : "0",
                             exists ? "\"exists\":true" : "\"exists\":false");
        if (rc == SHOAL_OK && ec == CTL_EXIT_OK && !exists)
            ec = CTL_EXIT_NOTFOUND;
    }
    ctl_bytes_free(&key);
    return ec;
}

static int
cmd_count(ctl *c, int argc, char **argv)
{
    const char *pos[1];
    size_t n = 0;
    ctl_bytes prefix = {0};
    int ec = ctl_parse(c, argc, argv, NULL, pos, 0, 1, &n);
    if (ec == CTL_EXIT_OK)
        ec = ctl_arg_bytes(c, "PREFIX", n ? pos[0] : "", &prefix);
    if (ec == CTL_EXIT_OK)
        ec = ctl_connect(c);
    if (ec == CTL_EXIT_OK) {
        uint64_t count = 0;
        shoal_err rc =
            shoal_count(c->db, prefix.ptr, prefix.len, &count, &c->call);
        ctl_sb sb = {0};
        if (rc != SHOAL_OK) {
            ec = ctl_fail(c, rc, NULL);
        } else if (c->json) {
            ctl_sb_put(&sb, "{", 1);
            ctl_sb_json_bytes(&sb, c, "prefix", prefix.ptr, prefix.len, true);
            ctl_sb_printf(&sb, ",\"count\":%llu}\n",
                          (unsigned long long) count);
        } else {
            ctl_sb_printf(&sb, "%llu\n", (unsigned long long) count);
        }
        if (rc == SHOAL_OK)
            ec = ctl_sb_flush(c, &sb, stdout);
        ctl_sb_free(&sb);
    }
    ctl_bytes_free(&prefix);
    return ec;
}

/* ---- scan ---------------------------------------------------------------- */

typedef struct scan_args {
    const char *prefix, *start, *end, *token; /* as given */
    uint64_t limit;
    bool keys_only, all, has_limit;
} scan_args;

/* The state of one scan command across its pages. */
typedef struct scan_out {
    ctl *c;
    ctl_sb sb;
    ctl_table table; /* human output */
    uint64_t n_items;
    uint64_t now_ms;
    bool keys_only; /* items carry no value */
} scan_out;

static void
scan_json_item(scan_out *s, const shoal_item *it)
{
    ctl_sb *sb = &s->sb;
    ctl_sb_put(sb, s->n_items ? ",{" : "{", s->n_items ? 2 : 1);
    ctl_sb_json_bytes(sb, s->c, "key", it->key, it->klen, true);
    if (!s->keys_only)
        ctl_sb_json_bytes(sb, s->c, "value", it->val, it->vlen, false);
    ctl_sb_printf(sb, ",\"version\":%llu,\"expire_at\":%llu}",
                  (unsigned long long) it->version,
                  (unsigned long long) it->expire_at);
}

static void
scan_human_item(scan_out *s, const shoal_item *it)
{
    ctl_sb k = {0}, v = {0};
    char ver[24], ttl[32];
    ctl_sb_plain(&k, s->c, it->key, it->klen);
    ctl_sb_put(&k, "", 0);
    if (!s->keys_only)
        ctl_sb_plain(&v, s->c, it->val, it->vlen);
    ctl_sb_put(&v, "", 0);
    snprintf(ver, sizeof(ver), "%llu", (unsigned long long) it->version);
    if (it->expire_at == 0)
        snprintf(ttl, sizeof(ttl), "-");
    else
        snprintf(ttl, sizeof(ttl), "%llu ms",
                 (unsigned long long) (it->expire_at > s->now_ms
                                           ? it->expire_at - s->now_ms
                                           : 0));
    if (k.oom || v.oom) {
        s->sb.oom = true;
    } else if (!s->keys_only) {
        const char *row[] = {k.ptr, v.ptr, ver, ttl};
        ctl_table_row(&s->table, row);
    } else {
        const char *row[] = {k.ptr, ver, ttl};
        ctl_table_row(&s->table, row);
    }
    ctl_sb_free(&k);
    ctl_sb_free(&v);
}

static void
scan_plain_item(scan_out *s, const shoal_item *it)
{
    ctl_sb_plain(&s->sb, s->c, it->key, it->klen);
    if (!s->keys_only) {
        ctl_sb_put(&s->sb, "\t", 1);
        ctl_sb_plain(&s->sb, s->c, it->val, it->vlen);
    }
    ctl_sb_put(&s->sb, "\n", 1);
}

static int
scan_emit(scan_out *s, const shoal_scan_page *page)
{
    for (size_t i = 0; i < page->n_items; i++) {
        const shoal_item *it = &page->items[i];
        if (s->c->json)
            scan_json_item(s, it);
        else if (s->c->out_tty)
            scan_human_item(s, it);
        else
            scan_plain_item(s, it);
        s->n_items++;
    }
    if (s->c->out_tty && !s->c->json)
        ctl_table_render(&s->table, &s->sb);
    return ctl_sb_flush(s->c, &s->sb, stdout);
}

/* The last lines: the JSON tail, or the count and how to continue. */
static int
scan_finish(scan_out *s, const shoal_scan_page *last)
{
    bool more = last && last->more;
    ctl_sb tok = {0};
    if (more)
        ctl_sb_hex(&tok, last->token, last->token_len);
    if (s->c->json) {
        ctl_sb_printf(&s->sb, "],\"count\":%llu,\"more\":%s",
                      (unsigned long long) s->n_items, more ? "true" : "false");
        if (more)
            ctl_sb_printf(&s->sb, ",\"token\":\"%s\"", tok.ptr);
        ctl_sb_put(&s->sb, "}\n", 2);
    } else if (s->c->out_tty) {
        ctl_sb_printf(&s->sb, "(%llu key%s)\n", (unsigned long long) s->n_items,
                      s->n_items == 1 ? "" : "s");
        if (more)
            ctl_sb_printf(&s->sb,
                          "(more: continue with --token %s, or "
                          "use --all)\n",
                          tok.ptr);
    } else if (more) {
        fprintf(stderr, "shoalctl: scan: more keys: continue with --token %s\n",
                tok.ptr);
    }
    ctl_sb_free(&tok);
    return ctl_sb_flush(s->c, &s->sb, stdout);
}

/* Decode an optional bytes argument into b (left empty when s is NULL). */
static int
opt_bytes(ctl *c, const char *what, const char *s, ctl_bytes *b)
{
    return s ? ctl_arg_bytes(c, what, s, b) : CTL_EXIT_OK;
}

/* Fill req from the arguments; the buffers in b[] back its pointers. */
static int
scan_req(ctl *c, const scan_args *a, shoal_scan_req *req, ctl_bytes b[4])
{
    memset(req, 0, sizeof(*req));
    int ec = opt_bytes(c, "--prefix", a->prefix, &b[0]);
    if (ec == CTL_EXIT_OK)
        ec = opt_bytes(c, "--start", a->start, &b[1]);
    if (ec == CTL_EXIT_OK)
        ec = opt_bytes(c, "--end", a->end, &b[2]);
    if (ec != CTL_EXIT_OK)
        return ec;
    shoal_err rc =
        a->token ? ctl_hex_decode(a->token, strlen(a->token), &b[3]) : SHOAL_OK;
    if (rc == SHOAL_EINVAL)
        return ctl_usage(c, "--token '%s' is not hex", a->token);
    if (rc != SHOAL_OK)
        return ctl_fail(c, rc, NULL);
    req->prefix = b[0].ptr;
    req->plen = b[0].len;
    req->start = b[1].ptr;
    req->start_len = b[1].len;
    req->end = b[2].ptr;
    req->end_len = b[2].len;
    req->token = b[3].ptr;
    req->token_len = b[3].len;
    req->keys_only = a->keys_only;
    req->limit = (uint32_t) (a->has_limit ? a->limit : a->all ? 1000 : 100);
    return CTL_EXIT_OK;
}

/* A page failed: with --json the object begun on stdout is closed with the
 * error in it (no second object), and the usual line goes to stderr. */
static int
scan_failed(scan_out *s, shoal_err rc)
{
    if (s->c->json) {
        ctl_sb_printf(&s->sb,
                      "],\"count\":%llu,\"more\":true,\"error\":\"%s\","
                      "\"status\":%d}\n",
                      (unsigned long long) s->n_items, shoal_errname(rc),
                      (int) rc);
        (void) ctl_sb_flush(s->c, &s->sb, stdout);
        s->c->json = false;
    }
    return ctl_fail(s->c, rc, "after %llu keys",
                    (unsigned long long) s->n_items);
}

/* Fetch and print pages until the last one (or the first with --all
 * unset). The token of each page is copied into b[3] before the page is
 * freed, as the next request points at it. */
static int
scan_pages(scan_out *s, const scan_args *a, shoal_scan_req *req, ctl_bytes b[4])
{
    shoal_scan_page *page = NULL;
    int ec = CTL_EXIT_OK;
    for (;;) {
        shoal_err rc = shoal_scan(s->c->db, req, &page, &s->c->call);
        if (rc != SHOAL_OK)
            return scan_failed(s, rc);
        if ((ec = scan_emit(s, page)) != CTL_EXIT_OK || !a->all || !page->more)
            break;
        ctl_bytes_free(&b[3]);
        b[3].ptr = mem_alloc(page->token_len + 1);
        if (b[3].ptr == NULL) {
            shoal_scan_page_free(page);
            return ctl_fail(s->c, SHOAL_ENOMEM, NULL);
        }
        memcpy(b[3].ptr, page->token, page->token_len);
        b[3].len = page->token_len;
        req->token = b[3].ptr;
        req->token_len = b[3].len;
        shoal_scan_page_free(page);
    }
    if (ec == CTL_EXIT_OK)
        ec = scan_finish(s, page);
    shoal_scan_page_free(page);
    return ec;
}

/* The human table, with its header as the first row. */
static void
scan_table(scan_out *s)
{
    static const char *const head[] = {"KEY", "VALUE", "VERSION", "TTL"};
    static const char *const head_ko[] = {"KEY", "VERSION", "TTL"};
    ctl_table_init(&s->table, s->keys_only ? 3 : 4, 60);
    s->table.right[s->keys_only ? 1 : 2] = true;
    if (s->c->out_tty && !s->c->json)
        ctl_table_row(&s->table, s->keys_only ? head_ko : head);
}

static int
cmd_scan(ctl *c, int argc, char **argv)
{
    scan_args a = {0};
    const ctl_opt opts[] = {
        {"--prefix", NULL, CTL_OPT_STR, &a.prefix, NULL, 0, 0, NULL},
        {"--start", NULL, CTL_OPT_STR, &a.start, NULL, 0, 0, NULL},
        {"--end", NULL, CTL_OPT_STR, &a.end, NULL, 0, 0, NULL},
        {"--token", NULL, CTL_OPT_STR, &a.token, NULL, 0, 0, NULL},
        {"--limit", NULL, CTL_OPT_U64, &a.limit, &a.has_limit, 1, 10000, NULL},
        {"--keys-only", NULL, CTL_OPT_FLAG, &a.keys_only, NULL, 0, 0, NULL},
        {"--all", NULL, CTL_OPT_FLAG, &a.all, NULL, 0, 0, NULL},
        {NULL, NULL, CTL_OPT_FLAG, NULL, NULL, 0, 0, NULL},
    };
    ctl_bytes b[4] = {{0}};
    shoal_scan_req req;
    scan_out s = {.c = c, .now_ms = clock_now_ms()}; /* table zeroed */
    int ec = ctl_parse(c, argc, argv, opts, NULL, 0, 0, NULL);
    if (ec == CTL_EXIT_OK)
        ec = scan_req(c, &a, &req, b);
    if (ec == CTL_EXIT_OK)
        ec = ctl_connect(c);
    if (ec == CTL_EXIT_OK) {
        s.keys_only = a.keys_only;
        scan_table(&s);
        if (c->json)
            ctl_sb_put(&s.sb, "{\"items\":[", 10);
        ec = scan_pages(&s, &a, &req, b);
    }
    for (size_t i = 0; i < 4; i++)
        ctl_bytes_free(&b[i]);
    ctl_table_fini(&s.table);
    ctl_sb_free(&s.sb);
    return ec;
}

/* ---- stats --------------------------------------------------------------- */

typedef struct stat_field {
    const char *name;
    size_t off; /* offset of the uint64_t in shoal_stats */
    bool bytes; /* show a size beside it on a terminal */
} stat_field;

#define STAT_U64(f, b)                  \
    {                                   \
#f, offsetof(shoal_stats, f), b \
    }

static const stat_field stat_fields[] = {
    STAT_U64(keys, false),
    STAT_U64(bytes, true),
    STAT_U64(index_bytes, true),
    STAT_U64(wal_records, false),
    STAT_U64(wal_bytes, true),
    STAT_U64(wal_fsyncs, false),
    STAT_U64(wal_segments, false),
    STAT_U64(snapshots, false),
    STAT_U64(snapshot_ms_max, false),
    STAT_U64(expired, false),
    STAT_U64(uptime_ms, false),
    STAT_U64(requests, false),
};

static uint64_t
stat_value(const shoal_stats *st, const stat_field *f)
{
    uint64_t v;
    memcpy(&v, (const char *) st + f->off, sizeof(v));
    return v;
}

static void
stats_json(ctl_sb *sb, const shoal_stats *st)
{
    ctl_sb_put(sb, "{\"node_id\":", 11);
    ctl_sb_json_str(sb, st->node_id, strnlen(st->node_id, sizeof(st->node_id)));
    for (size_t i = 0; i < sizeof(stat_fields) / sizeof(stat_fields[0]); i++)
        ctl_sb_printf(sb, ",\"%s\":%llu", stat_fields[i].name,
                      (unsigned long long) stat_value(st, &stat_fields[i]));
    ctl_sb_printf(sb, ",\"n_shards\":%u,\"read_only\":%s}\n",
                  (unsigned) st->n_shards, st->read_only ? "true" : "false");
}

static void
stats_text(ctl *c, ctl_sb *sb, const shoal_stats *st)
{
    ctl_table t;
    char id[sizeof(st->node_id) + 1], num[32], shards[16];
    ctl_table_init(&t, 2, 0);
    memcpy(id, st->node_id, sizeof(st->node_id));
    id[sizeof(st->node_id)] = '\0';
    const char *row0[] = {"node_id", id};
    ctl_table_row(&t, row0);
    for (size_t i = 0; i < sizeof(stat_fields) / sizeof(stat_fields[0]); i++) {
        const stat_field *f = &stat_fields[i];
        ctl_sb v = {0};
        ctl_sb_printf(&v, "%llu", (unsigned long long) stat_value(st, f));
        if (f->bytes && c->out_tty) {
            ctl_sb_put(&v, " (", 2);
            ctl_sb_size(&v, stat_value(st, f));
            ctl_sb_put(&v, ")", 1);
        }
        const char *row[] = {f->name, v.oom ? "?" : v.ptr};
        ctl_table_row(&t, row);
        ctl_sb_free(&v);
    }
    snprintf(shards, sizeof(shards), "%u", (unsigned) st->n_shards);
    snprintf(num, sizeof(num), "%s", st->read_only ? "true" : "false");
    const char *row1[] = {"n_shards", shards}, *row2[] = {"read_only", num};
    ctl_table_row(&t, row1);
    ctl_table_row(&t, row2);
    ctl_table_render(&t, sb);
    ctl_table_fini(&t);
}

static int
cmd_stats(ctl *c, int argc, char **argv)
{
    int ec = ctl_parse(c, argc, argv, NULL, NULL, 0, 0, NULL);
    if (ec == CTL_EXIT_OK)
        ec = ctl_connect(c);
    if (ec != CTL_EXIT_OK)
        return ec;
    shoal_stats st;
    memset(&st, 0, sizeof(st));
    shoal_err rc = shoal_stats_get(c->db, &st, NULL);
    if (rc != SHOAL_OK)
        return ctl_fail(c, rc, NULL);
    ctl_sb sb = {0};
    if (c->json)
        stats_json(&sb, &st);
    else
        stats_text(c, &sb, &st);
    ec = ctl_sb_flush(c, &sb, stdout);
    ctl_sb_free(&sb);
    return ec;
}

/* ---- main ---------------------------------------------------------------- */

typedef struct ctl_cmd {
    const char *name;
    int (*run)(ctl *c, int argc, char **argv);
    const char *usage; /* after "shoalctl [global options] " */
} ctl_cmd;

static const ctl_cmd commands[] = {
    {"get", cmd_get, "get KEY"},
    {"put", cmd_put,
     "put KEY VALUE|- [--ttl-ms N] [--if-absent] [--if-version V]"},
    {"del", cmd_del, "del KEY [--if-version V]"},
    {"incr", cmd_incr, "incr KEY [DELTA]"},
    {"ttl", cmd_ttl, "ttl KEY"},
    {"exists", cmd_exists, "exists KEY"},
    {"count", cmd_count, "count [PREFIX]"},
    {"scan", cmd_scan,
     "scan [--prefix P] [--start S] [--end E] [--limit N] [--keys-only] "
     "[--token T] [--all]"},
    {"stats", cmd_stats, "stats"},
    {"keygen", ctl_cmd_keygen,
     "keygen --id N --role read|write|admin|peer [--prefix P] [--out FILE] "
     "[--force|--append]"},
    {"bench", ctl_cmd_bench,
     "bench [-c clients] [-n requests] [-d bytes] [-r keyspace] "
     "[-t put,get,incr,del,exists] [-P pipeline] [--duration-s S] [--quiet]"},
    {"cluster", ctl_cmd_cluster, "cluster status [--json]"},
};

static int
add_url(ctl *c, const char *val)
{
    if (val[0] == '\0')
        return ctl_usage(c, "--url: empty URL");
    if (c->n_urls == CTL_MAX_URLS)
        return ctl_usage(c, "--url: at most %d URLs", CTL_MAX_URLS);
    c->urls[c->n_urls++] = val;
    return CTL_EXIT_OK;
}

/* --seeds LIST: each comma-separated URL, as --url. The list is split in
 * place: val points into argv, which is writable and outlives the run. */
static int
add_seeds(ctl *c, const char *val)
{
    size_t before = c->n_urls;
    for (char *p = (char *) val; p;) {
        char *comma = strchr(p, ',');
        if (comma)
            *comma++ = '\0';
        if (p[0] != '\0' && add_url(c, p) != CTL_EXIT_OK)
            return CTL_EXIT_USAGE;
        p = comma;
    }
    if (c->n_urls == before)
        return ctl_usage(c, "--seeds: no URL given");
    return CTL_EXIT_OK;
}

/* $SHOAL_URL (comma-separated) or the default, when no --url was given. */
static int
default_urls(ctl *c)
{
    const char *env = getenv("SHOAL_URL");
    if (c->n_urls > 0)
        return CTL_EXIT_OK;
    if (env == NULL || env[0] == '\0') {
        c->urls[c->n_urls++] = CTL_DEFAULT_URL;
        return CTL_EXIT_OK;
    }
    if ((c->url_env = mem_strdup(env)) == NULL)
        return ctl_fail(c, SHOAL_ENOMEM, NULL);
    for (char *p = c->url_env; p;) {
        char *comma = strchr(p, ',');
        if (comma)
            *comma++ = '\0';
        if (p[0] != '\0' && add_url(c, p) != CTL_EXIT_OK)
            return CTL_EXIT_USAGE;
        p = comma;
    }
    if (c->n_urls == 0)
        return ctl_usage(c, "SHOAL_URL holds no URL");
    return CTL_EXIT_OK;
}

static void
log_to_stderr(void *arg, int level, const char *msg)
{
    static const char *const names[] = {"error", "warning", "notice", "info",
                                        "debug"};
    (void) arg;
    fprintf(stderr, "shoalctl: libshoal %s: %s\n",
            names[level < 0   ? 0
                  : level > 4 ? 4
                              : level],
            msg);
}

/* Parse the global options; *cmd_index gets the command's index, or -1 when
 * --help/--version answered already. */
static int
parse_globals(ctl *c, int argc, char **argv, int *cmd_index)
{
    bool help = false, version = false, key_given = false;
    uint64_t timeout_ms = 0, w = 0;
    const ctl_opt opts[] = {
        {"--url", NULL, CTL_OPT_FN, NULL, NULL, 0, 0, add_url},
        {"--seeds", NULL, CTL_OPT_FN, NULL, NULL, 0, 0, add_seeds},
        {"--key-file", NULL, CTL_OPT_STR, &c->key_file, &key_given, 0, 0, NULL},
        {"--insecure", NULL, CTL_OPT_FLAG, &c->insecure, NULL, 0, 0, NULL},
        {"--timeout-ms", NULL, CTL_OPT_U64, &timeout_ms, NULL, 1, UINT32_MAX,
         NULL},
        {"--read-any", NULL, CTL_OPT_FLAG, &c->call.read_any, NULL, 0, 0, NULL},
        {"--write-quorum", NULL, CTL_OPT_U64, &w, NULL, 1, 255, NULL},
        {"--json", NULL, CTL_OPT_FLAG, &c->json, NULL, 0, 0, NULL},
        {"--hex", NULL, CTL_OPT_FLAG, &c->hex, NULL, 0, 0, NULL},
        {"--verbose", "-v", CTL_OPT_FLAG, &c->verbose, NULL, 0, 0, NULL},
        {"--help", "-h", CTL_OPT_FLAG, &help, NULL, 0, 0, NULL},
        {"--version", NULL, CTL_OPT_FLAG, &version, NULL, 0, 0, NULL},
        {NULL, NULL, CTL_OPT_FLAG, NULL, NULL, 0, 0, NULL},
    };
    int ec = ctl_parse_globals(c, argc, argv, opts, cmd_index);
    if (ec != CTL_EXIT_OK)
        return ec;
    c->timeout_ms = (uint32_t) timeout_ms;
    c->call.w = (uint32_t) w;
    if (help || version) {
        fputs(help ? help_text : "shoalctl " SHOAL_VERSION "\n", stdout);
        if (help)
            fputs(help_text2, stdout);
        *cmd_index = -1;
        return CTL_EXIT_OK;
    }
    if (key_given && c->insecure)
        return ctl_usage(c, "--key-file and --insecure exclude each other");
    if (c->key_file == NULL && !c->insecure) {
        const char *env = getenv("SHOAL_KEY_FILE");
        c->key_file = env && env[0] ? env : NULL;
    }
    return default_urls(c);
}

static const ctl_cmd *
find_command(const char *name)
{
    for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
        if (strcmp(commands[i].name, name) == 0)
            return &commands[i];
    return NULL;
}

/* "shoalctl CMD --help": the usage line, and for keygen, bench and cluster
 * their own help (printed by the command when it sees --help first). */
static bool
wants_help(int argc, char **argv)
{
    for (int i = 0; i < argc && strcmp(argv[i], "--") != 0; i++)
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0)
            return true;
    return false;
}

static int
run(ctl *c, int argc, char **argv)
{
    int i = 0;
    int ec = parse_globals(c, argc, argv, &i);
    if (ec != CTL_EXIT_OK || i < 0)
        return ec;
    if (i >= argc)
        return ctl_usage(c, "no command given");
    const ctl_cmd *cmd = find_command(argv[i]);
    if (cmd == NULL)
        return ctl_usage(c, "unknown command '%s'", argv[i]);
    c->cmd = cmd->name;
    c->usage = cmd->usage;
    if (c->verbose)
        shoal_set_logger(log_to_stderr, NULL, 3);
    if (wants_help(argc - i - 1, argv + i + 1) && cmd->run != ctl_cmd_keygen &&
        cmd->run != ctl_cmd_bench && cmd->run != ctl_cmd_cluster) {
        printf("usage: shoalctl [global options] %s\n", cmd->usage);
        return CTL_EXIT_OK;
    }
    return cmd->run(c, argc - i - 1, argv + i + 1);
}

int
main(int argc, char **argv)
{
    ctl c;
    memset(&c, 0, sizeof(c));
    c.out_tty = isatty(STDOUT_FILENO) == 1;
    if (sodium_init() < 0) {
        fprintf(stderr, "shoalctl: libsodium failed to initialise\n");
        return CTL_EXIT_ERR;
    }
    int ec = run(&c, argc, argv);
    shoal_close(c.db);
    mem_free(c.url_env);
    return ec;
}
