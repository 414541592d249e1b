/*
 * test_cfg.c -- shoald's flags, config file and NODE file (node/cfg.h):
 * every option with good and bad values (tables), messages that name the
 * option and what it accepts, file syntax errors with line numbers, flags
 * over file, the rules between options, size suffixes and overflow, and
 * out-of-memory at every allocation.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "node/cfg.h"
#include "proto/mem.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define KIB      (1024ull)
#define MIB      (1024ull * 1024)
#define GIB      (1024ull * 1024 * 1024)
#define MAX_ARGS 16

/* Parse "shoald" + the NULL-terminated args into c (cfg_init'd here). */
static shoal_err
parse_v(cfg *c, char *err, const char *a0, va_list ap)
{
    char *argv[MAX_ARGS + 1] = {(char *) "shoald"};
    int argc = 1;
    for (const char *a = a0; a != NULL; a = va_arg(ap, const char *)) {
        assert_true(argc < MAX_ARGS);
        argv[argc++] = (char *) a;
    }
    assert_int_equal(cfg_init(c), SHOAL_OK);
    return cfg_parse_args(argc, argv, c, err, CFG_ERR_LEN);
}

static shoal_err
parse(cfg *c, char *err, const char *a0, ...)
{
    va_list ap;
    va_start(ap, a0);
    shoal_err rc = parse_v(c, err, a0, ap);
    va_end(ap);
    return rc;
}

/* The numeric value of an option, by name (test side, independent of the
 * table in cfg.c). */
static uint64_t
num_of(const cfg *c, const char *name)
{
    static const struct {
        const char *name;
        size_t off, width;
    } f[] = {
#define N(n, fld) {n, offsetof(cfg, fld), sizeof(((cfg *) 0)->fld)}
        N("fsync-interval-ms", fsync_interval_ms),
        N("shards", n_shards),
        N("max-key-bytes", max_key_bytes),
        N("max-value-bytes", max_value_bytes),
        N("max-batch-ops", max_batch_ops),
        N("max-frame-bytes", max_frame_bytes),
        N("workers", workers),
        N("contexts", contexts),
        N("snapshot-wal-bytes", snapshot_wal_bytes),
        N("snapshot-interval-ms", snapshot_interval_ms),
        N("replay-window-ms", replay_window_ms),
        N("drain-timeout-ms", drain_timeout_ms),
#undef N
    };
    if (strcmp(name, "fsync") == 0)
        return (uint64_t) c->fsync;
    if (strcmp(name, "log-level") == 0)
        return (uint64_t) c->log_level;
    for (size_t i = 0; i < sizeof(f) / sizeof(f[0]); i++) {
        if (strcmp(name, f[i].name) != 0)
            continue;
        const char *p = (const char *) c + f[i].off;
        if (f[i].width == 4) {
            uint32_t v;
            memcpy(&v, p, 4);
            return v;
        }
        uint64_t v;
        memcpy(&v, p, 8);
        return v;
    }
    fail_msg("no numeric option %s", name);
    return 0;
}

static const char *
str_of(const cfg *c, const char *name)
{
    if (strcmp(name, "id") == 0)
        return c->id;
    if (strcmp(name, "listen") == 0)
        return c->listen_url;
    if (strcmp(name, "advertise") == 0)
        return c->advertise_url;
    if (strcmp(name, "http") == 0)
        return c->http_addr;
    if (strcmp(name, "data-dir") == 0)
        return c->data_dir;
    if (strcmp(name, "key-file") == 0)
        return c->key_file;
    if (strcmp(name, "config") == 0)
        return c->config_file;
    fail_msg("no string option %s", name);
    return NULL;
}

static void
assert_one_line(const char *err)
{
    assert_true(err[0] != '\0');
    for (const char *p = err; *p != '\0'; p++)
        assert_true((unsigned char) *p >= 0x20 && (unsigned char) *p < 0x7f);
}

static void
test_cfg_defaults(void **state)
{
    (void) state;
    cfg c;
    assert_int_equal(cfg_init(&c), SHOAL_OK);
    assert_null(c.id);
    assert_string_equal(c.listen_url, "tcp://127.0.0.1:7400");
    assert_null(c.advertise_url);
    assert_string_equal(cfg_advertise(&c), "tcp://127.0.0.1:7400");
    assert_string_equal(c.http_addr, "127.0.0.1:7480");
    assert_null(c.data_dir);
    assert_false(c.memory);
    assert_int_equal(c.fsync, WAL_FSYNC_ALWAYS);
    assert_int_equal(c.fsync_interval_ms, 100);
    assert_false(c.insecure);
    assert_null(c.key_file);
    assert_int_equal(c.n_shards, 256);
    assert_false(c.shards_given);
    assert_int_equal(c.max_key_bytes, 1024);
    assert_int_equal(c.max_value_bytes, 16 * MIB);
    assert_int_equal(c.max_batch_ops, 10000);
    assert_int_equal(c.max_frame_bytes, 64 * MIB + 64 * KIB);
    assert_int_equal(c.workers, cfg_default_workers());
    assert_int_equal(c.contexts, 128);
    assert_int_equal(c.snapshot_wal_bytes, 256 * MIB);
    assert_int_equal(c.snapshot_interval_ms, 0);
    assert_int_equal(c.replay_window_ms, 300000);
    assert_int_equal(c.log_level, SLOG_NOTICE);
    assert_int_equal(c.drain_timeout_ms, 10000);
    assert_int_equal(c.flag_mask, 0);
    cfg_fini(&c);
    cfg_fini(&c); /* twice is harmless */
    cfg_fini(NULL);
}

typedef struct good_num {
    const char *opt, *val;
    uint64_t want;
} good_num;

static const good_num good_nums[] = {
    {"fsync-interval-ms", "1", 1},
    {"fsync-interval-ms", "60000", 60000},
    {"fsync-interval-ms", "007", 7},
    {"shards", "1", 1},
    {"shards", "2", 2},
    {"shards", "128", 128},
    {"shards", "65536", 65536},
    {"max-key-bytes", "1", 1},
    {"max-key-bytes", "1k", 1024},
    {"max-key-bytes", "63K", 63 * KIB},
    {"max-key-bytes", "65535", 65535},
    {"max-value-bytes", "1", 1},
    {"max-value-bytes", "16m", 16 * MIB},
    {"max-value-bytes", "16M", 16 * MIB},
    {"max-value-bytes", "1g", GIB},
    {"max-value-bytes", "1G", GIB},
    {"max-value-bytes", "1024m", GIB},
    {"max-batch-ops", "1", 1},
    {"max-batch-ops", "1000000", 1000000},
    {"max-frame-bytes", "4k", 4 * KIB},
    {"max-frame-bytes", "4096", 4096},
    {"max-frame-bytes", "2g", 2 * GIB},
    {"workers", "1", 1},
    {"workers", "256", 256},
    {"contexts", "1", 1},
    {"contexts", "16384", 16384},
    {"snapshot-wal-bytes", "0", 0},
    {"snapshot-wal-bytes", "64m", 64 * MIB},
    {"snapshot-wal-bytes", "1024g", 1024 * GIB},
    {"snapshot-interval-ms", "0", 0},
    {"snapshot-interval-ms", "86400000", 86400000},
    {"replay-window-ms", "1000", 1000},
    {"replay-window-ms", "86400000", 86400000},
    {"drain-timeout-ms", "0", 0},
    {"drain-timeout-ms", "3600000", 3600000},
    {"fsync", "always", WAL_FSYNC_ALWAYS},
    {"fsync", "interval", WAL_FSYNC_INTERVAL},
    {"fsync", "none", WAL_FSYNC_NONE},
    {"log-level", "err", SLOG_ERR},
    {"log-level", "warn", SLOG_WARN},
    {"log-level", "notice", SLOG_NOTICE},
    {"log-level", "info", SLOG_INFO},
    {"log-level", "debug", SLOG_DEBUG},
};

/* Every good number as "--opt val", "--opt=val" and a file line. */
static void
test_cfg_good_numbers(void **state)
{
    (void) state;
    char err[CFG_ERR_LEN], flag[64], eq[128], line[128];
    for (size_t i = 0; i < sizeof(good_nums) / sizeof(good_nums[0]); i++) {
        const good_num *g = &good_nums[i];
        cfg c;
        snprintf(flag, sizeof(flag), "--%s", g->opt);
        snprintf(eq, sizeof(eq), "--%s=%s", g->opt, g->val);
        snprintf(line, sizeof(line), "  %s\t=  %s  \n", g->opt, g->val);
        assert_int_equal(parse(&c, err, flag, g->val, NULL), SHOAL_OK);
        assert_int_equal(num_of(&c, g->opt), g->want);
        assert_int_not_equal(c.flag_mask, 0);
        cfg_fini(&c);
        assert_int_equal(parse(&c, err, eq, NULL), SHOAL_OK);
        assert_int_equal(num_of(&c, g->opt), g->want);
        cfg_fini(&c);
        assert_int_equal(cfg_init(&c), SHOAL_OK);
        assert_int_equal(
            cfg_parse_file(line, strlen(line), &c, err, sizeof(err)), SHOAL_OK);
        assert_int_equal(num_of(&c, g->opt), g->want);
        cfg_fini(&c);
    }
}

typedef struct good_str {
    const char *opt, *val, *want; /* want NULL: the field becomes NULL */
} good_str;

static const good_str good_strs[] = {
    {"id", "n", "n"},
    {"id", "node-1.a_B", "node-1.a_B"},
    {"id", "abcdefghijabcdefghijabcdefghijabcdefghijabcdefghijabcdefghij123",
     "abcdefghijabcdefghijabcdefghijabcdefghijabcdefghijabcdefghij123"},
    {"listen", "tcp://0.0.0.0:1", "tcp://0.0.0.0:1"},
    {"listen", "tcp://127.0.0.1:0", "tcp://127.0.0.1:0"},
    {"listen", "tcp://:7400", "tcp://:7400"},
    {"listen", "tcp://*:7400", "tcp://*:7400"},
    {"listen", "tcp://[::1]:7400", "tcp://[::1]:7400"},
    {"listen", "tcp4://h.example:65535", "tcp4://h.example:65535"},
    {"listen", "tcp6://[::]:9", "tcp6://[::]:9"},
    {"listen", "ipc:///tmp/shoal.sock", "ipc:///tmp/shoal.sock"},
    {"listen", "inproc://n1", "inproc://n1"},
    {"advertise", "tcp://10.0.0.5:7400", "tcp://10.0.0.5:7400"},
    {"http", "127.0.0.1:7480", "127.0.0.1:7480"},
    {"http", "localhost:0", "localhost:0"},
    {"http", "[::1]:80", "[::1]:80"},
    {"http", "0.0.0.0:65535", "0.0.0.0:65535"},
    {"http", "off", NULL},
    {"data-dir", "/var/lib/shoal", "/var/lib/shoal"},
    {"data-dir", "rel dir/with=sign", "rel dir/with=sign"},
    {"key-file", "/etc/shoal/keys", "/etc/shoal/keys"},
};

static void
test_cfg_good_strings(void **state)
{
    (void) state;
    char err[CFG_ERR_LEN], flag[64], line[256];
    for (size_t i = 0; i < sizeof(good_strs) / sizeof(good_strs[0]); i++) {
        const good_str *g = &good_strs[i];
        cfg c;
        snprintf(flag, sizeof(flag), "--%s", g->opt);
        assert_int_equal(parse(&c, err, flag, g->val, NULL), SHOAL_OK);
        if (g->want == NULL)
            assert_null(str_of(&c, g->opt));
        else
            assert_string_equal(str_of(&c, g->opt), g->want);
        cfg_fini(&c);
        snprintf(line, sizeof(line), "%s = %s", g->opt, g->val);
        assert_int_equal(cfg_init(&c), SHOAL_OK);
        assert_int_equal(
            cfg_parse_file(line, strlen(line), &c, err, sizeof(err)), SHOAL_OK);
        if (g->want == NULL)
            assert_null(str_of(&c, g->opt));
        else
            assert_string_equal(str_of(&c, g->opt), g->want);
        cfg_fini(&c);
    }
}

static void
test_cfg_flags_and_booleans(void **state)
{
    (void) state;
    char err[CFG_ERR_LEN];
    cfg c;
    assert_int_equal(parse(&c, err, "--memory", "--insecure", "--help",
                           "--version", "--config", "/x.conf", NULL),
                     SHOAL_OK);
    assert_true(c.memory && c.insecure && c.help && c.version);
    assert_string_equal(c.config_file, "/x.conf");
    cfg_fini(&c);
    assert_int_equal(parse(&c, err, "-h", NULL), SHOAL_OK);
    assert_true(c.help);
    cfg_fini(&c);

    static const struct {
        const char *text;
        bool want;
    } b[] = {{"memory = true", true},   {"memory = yes", true},
             {"memory = on", true},     {"memory = 1", true},
             {"memory = false", false}, {"memory = no", false},
             {"memory = off", false},   {"memory = 0", false}};
    for (size_t i = 0; i < sizeof(b) / sizeof(b[0]); i++) {
        assert_int_equal(cfg_init(&c), SHOAL_OK);
        c.memory = !b[i].want;
        assert_int_equal(
            cfg_parse_file(b[i].text, strlen(b[i].text), &c, err, sizeof(err)),
            SHOAL_OK);
        assert_int_equal(c.memory, b[i].want);
        cfg_fini(&c);
    }
}

typedef struct bad_val {
    const char *opt, *val;
    const char *msg; /* the message after "--opt: ", as a prefix */
} bad_val;

static const bad_val bad_vals[] = {
    {"fsync", "sometimes", "'sometimes' is not one of always, interval, none"},
    {"fsync", "ALWAYS", "'ALWAYS' is not one of always, interval, none"},
    {"fsync", "", "'' is not one of always, interval, none"},
    {"fsync-interval-ms", "0", "'0' is out of range 1..60000"},
    {"fsync-interval-ms", "60001", "'60001' is out of range 1..60000"},
    {"fsync-interval-ms", "abc", "'abc' is not a number"},
    {"fsync-interval-ms", "-1", "'-1' is not a number"},
    {"fsync-interval-ms", "+5", "'+5' is not a number"},
    {"fsync-interval-ms", " 5", "' 5' is not a number"},
    {"fsync-interval-ms", "5 ", "'5 ' is not a number"},
    {"fsync-interval-ms", "0x10", "'0x10' is not a number"},
    {"fsync-interval-ms", "1.5", "'1.5' is not a number"},
    {"fsync-interval-ms", "10k", "'10k' is not a number"},
    {"fsync-interval-ms", "", "'' is not a number"},
    {"fsync-interval-ms", "99999999999999999999999",
     "'99999999999999999999999' is out of range 1..60000"},
    {"shards", "0", "'0' is out of range 1..65536"},
    {"shards", "3", "'3' is not a power of two"},
    {"shards", "100", "'100' is not a power of two"},
    {"shards", "131072", "'131072' is out of range 1..65536"},
    {"shards", "4294967296", "'4294967296' is out of range 1..65536"},
    {"max-key-bytes", "0", "'0' is out of range 1..65535"},
    {"max-key-bytes", "65536", "'65536' is out of range 1..65535"},
    {"max-key-bytes", "64k", "'64k' is out of range 1..65535"},
    {"max-key-bytes", "1t", "'1t' is not a size"},
    {"max-key-bytes", "16mb", "'16mb' is not a size"},
    {"max-key-bytes", "k", "'k' is not a size"},
    {"max-key-bytes", "1 k", "'1 k' is not a size"},
    {"max-value-bytes", "0", "'0' is out of range 1..1g"},
    {"max-value-bytes", "2g", "'2g' is out of range 1..1g"},
    {"max-value-bytes", "1073741825", "'1073741825' is out of range 1..1g"},
    {"max-value-bytes", "18446744073709551615k",
     "'18446744073709551615k' is out of range 1..1g"},
    {"max-value-bytes", "17179869184g", "'17179869184g' is out of range"},
    {"max-value-bytes", "18446744073709551616",
     "'18446744073709551616' is out of range"},
    {"max-batch-ops", "0", "'0' is out of range 1..1000000"},
    {"max-batch-ops", "1000001", "'1000001' is out of range 1..1000000"},
    {"max-batch-ops", "1k", "'1k' is not a number"},
    {"max-frame-bytes", "4095", "'4095' is out of range 4k..2g"},
    {"max-frame-bytes", "3g", "'3g' is out of range 4k..2g"},
    {"workers", "0", "'0' is out of range 1..256"},
    {"workers", "257", "'257' is out of range 1..256"},
    {"contexts", "0", "'0' is out of range 1..16384"},
    {"contexts", "16385", "'16385' is out of range 1..16384"},
    {"snapshot-wal-bytes", "1025g", "'1025g' is out of range 0..1024g"},
    {"snapshot-interval-ms", "86400001", "'86400001' is out of range"},
    {"replay-window-ms", "999", "'999' is out of range 1000..86400000"},
    {"replay-window-ms", "0", "'0' is out of range 1000..86400000"},
    {"drain-timeout-ms", "3600001", "'3600001' is out of range 0..3600000"},
    {"log-level", "verbose",
     "'verbose' is not one of err, warn, notice, info, debug"},
    {"log-level", "", "'' is not one of err, warn, notice, info, debug"},
    {"id", "", "'' is not a valid id (1 to 63 of A-Z a-z 0-9 . _ -)"},
    {"id", "a b", "'a b' is not a valid id"},
    {"id", "node/1", "'node/1' is not a valid id"},
    {"id", "n\xc3\xa9", "'n?\?' is not a valid id"},
    {"id", "abcdefghijabcdefghijabcdefghijabcdefghijabcdefghijabcdefghij1234",
     "'abcdefghijabcdefghijabcdefghijabcdefghijabcdefghijabcdefg...' is not"},
    {"listen", "http://h:1", "'http://h:1' is not a URL of the form"},
    {"listen", "tcp://host", "'tcp://host' is not a URL"},
    {"listen", "tcp://host:99999", "'tcp://host:99999' is not a URL"},
    {"listen", "tcp://host:123456", "'tcp://host:123456' is not a URL"},
    {"listen", "tcp://host:port", "'tcp://host:port' is not a URL"},
    {"listen", "tcp://host:", "'tcp://host:' is not a URL"},
    {"listen", "tcp://a:b:1", "'tcp://a:b:1' is not a URL"},
    {"listen", "tcp://[::1:80", "'tcp://[::1:80' is not a URL"},
    {"listen", "tcp://a b:1", "'tcp://a b:1' is not a URL"},
    {"listen", "ipc://", "'ipc://' is not a URL"},
    {"listen", "inproc://", "'inproc://' is not a URL"},
    {"listen", "", "'' is not a URL"},
    {"listen", "tcp://h:1\n", "'tcp://h:1?' is not a URL"},
    {"advertise", "udp://h:1", "'udp://h:1' is not a URL of the form"},
    {"http", "7480", "'7480' is not HOST:PORT (port 0..65535) or off"},
    {"http", ":80", "':80' is not HOST:PORT"},
    {"http", "host:", "'host:' is not HOST:PORT"},
    {"http", "host:65536", "'host:65536' is not HOST:PORT"},
    {"http", "on", "'on' is not HOST:PORT"},
    {"http", "http://h:1", "'http://h:1' is not HOST:PORT"},
    {"http", "[]:80", "'[]:80' is not HOST:PORT"},
    {"data-dir", "", "the value is empty (expected DIR)"},
    {"data-dir", "a\tb", "'a?b' is not printable text"},
    {"key-file", "", "the value is empty (expected FILE)"},
    {"config", "", "the value is empty (expected FILE)"},
};

static void
test_cfg_bad_values(void **state)
{
    (void) state;
    char err[CFG_ERR_LEN], flag[64], eq[256], want[512];
    for (size_t i = 0; i < sizeof(bad_vals) / sizeof(bad_vals[0]); i++) {
        const bad_val *b = &bad_vals[i];
        cfg c;
        snprintf(flag, sizeof(flag), "--%s", b->opt);
        snprintf(want, sizeof(want), "--%s: %s", b->opt, b->msg);
        assert_int_equal(parse(&c, err, flag, b->val, NULL), SHOAL_EINVAL);
        if (strncmp(err, want, strlen(want)) != 0)
            fail_msg("%s %s: got \"%s\", want \"%s...\"", flag, b->val, err,
                     want);
        assert_one_line(err);
        cfg_fini(&c);
        /* --opt=value gives the same message. */
        snprintf(eq, sizeof(eq), "--%s=%s", b->opt, b->val);
        assert_int_equal(parse(&c, err, eq, NULL), SHOAL_EINVAL);
        assert_true(strncmp(err, want, strlen(want)) == 0);
        cfg_fini(&c);
    }
}

/* The example message of the brief, in full. */
static void
test_cfg_fsync_message_exact(void **state)
{
    (void) state;
    char err[CFG_ERR_LEN];
    cfg c;
    assert_int_equal(parse(&c, err, "--fsync", "sometimes", NULL),
                     SHOAL_EINVAL);
    assert_string_equal(
        err, "--fsync: 'sometimes' is not one of always, interval, none");
    cfg_fini(&c);
}

static void
test_cfg_bad_arguments(void **state)
{
    (void) state;
    static const struct {
        const char *a, *b, *msg;
    } t[] = {
        {"--nope", NULL, "unknown option '--nope' (see --help)"},
        {"--nope=1", NULL, "unknown option '--nope=1' (see --help)"},
        {"--Fsync", "none", "unknown option '--Fsync'"},
        {"foo", NULL, "unexpected argument 'foo' (see --help)"},
        {"-x", NULL, "unexpected argument '-x'"},
        {"--", NULL, "unexpected argument '--'"},
        {"-", NULL, "unexpected argument '-'"},
        {"", NULL, "unexpected argument ''"},
        {"--fsync", NULL, "--fsync needs a value (always|interval|none)"},
        {"--data-dir", "--memory", "--data-dir needs a value (DIR)"},
        {"--memory=yes", NULL, "--memory takes no value"},
        {"--insecure=", NULL, "--insecure takes no value"},
        {"--help=1", NULL, "--help takes no value"},
        {"--workers", "\x01\x02", "--workers: '?\?' is not a number"},
    };
    char err[CFG_ERR_LEN];
    for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
        cfg c;
        assert_int_equal(parse(&c, err, t[i].a, t[i].b, NULL), SHOAL_EINVAL);
        if (strncmp(err, t[i].msg, strlen(t[i].msg)) != 0)
            fail_msg("%s: got \"%s\", want \"%s\"", t[i].a, err, t[i].msg);
        assert_one_line(err);
        cfg_fini(&c);
    }
}

static void
test_cfg_last_flag_wins(void **state)
{
    (void) state;
    char err[CFG_ERR_LEN];
    cfg c;
    assert_int_equal(parse(&c, err, "--workers", "2", "--id", "a", "--workers",
                           "3", "--id", "b", "--http", "off", "--http", "h:1",
                           NULL),
                     SHOAL_OK);
    assert_int_equal(c.workers, 3);
    assert_string_equal(c.id, "b");
    assert_string_equal(c.http_addr, "h:1");
    cfg_fini(&c);
}

static void
test_cfg_file_syntax(void **state)
{
    (void) state;
    char err[CFG_ERR_LEN];
    cfg c;
    const char *text = "# shoald config\r\n"
                       "\n"
                       "   # indented comment\n"
                       "id = node-7   # trailing comment\r\n"
                       "data-dir=/srv/shoal#7\n"
                       "\tfsync\t=\tinterval\t\n"
                       "fsync-interval-ms = 25\n"
                       "insecure = yes\n"
                       "max-value-bytes = 8m\n"
                       "http = off"; /* no final newline */
    assert_int_equal(cfg_init(&c), SHOAL_OK);
    assert_int_equal(cfg_parse_file(text, strlen(text), &c, err, sizeof(err)),
                     SHOAL_OK);
    assert_string_equal(c.id, "node-7");
    assert_string_equal(c.data_dir, "/srv/shoal#7"); /* '#' not after blank */
    assert_int_equal(c.fsync, WAL_FSYNC_INTERVAL);
    assert_int_equal(c.fsync_interval_ms, 25);
    assert_true(c.insecure);
    assert_int_equal(c.max_value_bytes, 8 * MIB);
    assert_null(c.http_addr);
    assert_int_equal(c.flag_mask, 0); /* the file sets no flag bits */
    assert_int_equal(cfg_check(&c, err, sizeof(err)), SHOAL_OK);
    cfg_fini(&c);

    /* An empty file and a comment-only file are fine. */
    assert_int_equal(cfg_init(&c), SHOAL_OK);
    assert_int_equal(cfg_parse_file("", 0, &c, err, sizeof(err)), SHOAL_OK);
    assert_int_equal(cfg_parse_file("#\n\n  \n", 6, &c, err, sizeof(err)),
                     SHOAL_OK);
    cfg_fini(&c);
}

static void
test_cfg_file_errors(void **state)
{
    (void) state;
    static char long_line[CFG_LINE_MAX + 32];
    memset(long_line, 'x', sizeof(long_line) - 1);
    memcpy(long_line, "id = ", 5);
    static const struct {
        const char *text;
        size_t len; /* 0: strlen */
        const char *msg;
    } t[] = {
        {"fsync = sometimes", 0,
         "line 1: fsync: 'sometimes' is not one of always, interval, none"},
        {"\n\n# c\nbogus = 1\n", 0, "line 4: unknown option 'bogus'"},
        {"fsync\n", 0, "line 1: expected 'name = value'"},
        {"id = a\n= x\n", 0, "line 2: expected 'name = value'"},
        {"help = true", 0, "line 1: not allowed in a config file: 'help'"},
        {"version = true", 0,
         "line 1: not allowed in a config file: 'version'"},
        {"config = /x", 0, "line 1: not allowed in a config file: 'config'"},
        {"fsync = always\nid = a\nfsync = none\n", 0,
         "line 3: fsync is already set on line 1"},
        {"workers =\n", 0, "line 1: workers: needs a value (N)"},
        {"memory = \n", 0, "line 1: memory: needs a value (true or false)"},
        {"data-dir = # only a comment\n", 0,
         "line 1: data-dir: needs a value (DIR)"},
        {"id = a\nid = b\0c\n", 14, "line 2: contains a NUL byte"},
        {long_line, 0, "line 1: longer than 4096 bytes"},
        {"insecure = maybe", 0,
         "line 1: insecure: 'maybe' is not one of true, false"},
        {"shards = 12", 0, "line 1: shards: '12' is not a power of two"},
        {"max-key-bytes = 1m", 0,
         "line 1: max-key-bytes: '1m' is out of range 1..65535"},
        {"--fsync = none", 0, "line 1: unknown option '--fsync'"},
        {"listen = tcp://h:1 2", 0, "line 1: listen: 'tcp://h:1 2' is not"},
    };
    char err[CFG_ERR_LEN];
    for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
        cfg c;
        size_t len = t[i].len != 0 ? t[i].len : strlen(t[i].text);
        assert_int_equal(cfg_init(&c), SHOAL_OK);
        assert_int_equal(cfg_parse_file(t[i].text, len, &c, err, sizeof(err)),
                         SHOAL_EINVAL);
        if (strncmp(err, t[i].msg, strlen(t[i].msg)) != 0)
            fail_msg("case %zu: got \"%s\", want \"%s\"", i, err, t[i].msg);
        assert_one_line(err);
        cfg_fini(&c);
    }
}

/* Flags override the file, and the file's value for a flagged option is
 * still checked. */
static void
test_cfg_flags_override_file(void **state)
{
    (void) state;
    char err[CFG_ERR_LEN];
    cfg c;
    const char *file = "fsync = interval\nworkers = 2\ncontexts = 64\n"
                       "id = from-file\nhttp = h:9\n";
    assert_int_equal(parse(&c, err, "--fsync", "none", "--workers", "8", "--id",
                           "from-flag", "--http", "off", NULL),
                     SHOAL_OK);
    assert_int_equal(cfg_parse_file(file, strlen(file), &c, err, sizeof(err)),
                     SHOAL_OK);
    assert_int_equal(c.fsync, WAL_FSYNC_NONE);
    assert_int_equal(c.workers, 8);
    assert_int_equal(c.contexts, 64); /* not a flag: from the file */
    assert_string_equal(c.id, "from-flag");
    assert_null(c.http_addr); /* --http off beats the file */
    cfg_fini(&c);

    const char *bad = "fsync = bogus\n";
    assert_int_equal(parse(&c, err, "--fsync", "none", NULL), SHOAL_OK);
    assert_int_equal(cfg_parse_file(bad, strlen(bad), &c, err, sizeof(err)),
                     SHOAL_EINVAL);
    assert_string_equal(
        err, "line 1: fsync: 'bogus' is not one of always, interval, none");
    cfg_fini(&c);

    /* --shards from the file counts as given, like the flag. */
    assert_int_equal(cfg_init(&c), SHOAL_OK);
    assert_int_equal(cfg_parse_file("shards = 64", 11, &c, err, sizeof(err)),
                     SHOAL_OK);
    assert_true(c.shards_given);
    assert_int_equal(c.n_shards, 64);
    cfg_fini(&c);
}

static void
test_cfg_check_rules(void **state)
{
    (void) state;
    static const struct {
        const char *a[8];
        const char *msg; /* NULL: passes */
    } t[] = {
        {{"--insecure", "--memory", "--id", "a"}, NULL},
        {{"--key-file", "k", "--data-dir", "d"}, NULL},
        {{"--insecure", "--key-file", "k", "--data-dir", "d"},
         "--insecure and --key-file are mutually exclusive: give one of "
         "them"},
        {{"--data-dir", "d"},
         "one of --key-file FILE or --insecure is "
         "required"},
        {{"--insecure", "--memory", "--data-dir", "d", "--id", "a"},
         "--memory and --data-dir are mutually exclusive"},
        {{"--insecure"},
         "--data-dir DIR is required (or --memory to keep nothing on disk)"},
        {{"--insecure", "--memory"}, "--id is required with --memory"},
        {{"--insecure", "--data-dir", "d", "--max-frame-bytes", "16m"},
         "--max-frame-bytes: 16m cannot hold a --max-value-bytes value and "
         "key (at least 16m + 1k + 4k)"},
        {{"--insecure", "--data-dir", "d", "--max-frame-bytes", "17m"}, NULL},
        {{"--insecure", "--data-dir", "d", "--max-value-bytes", "1g",
          "--max-frame-bytes", "1g"},
         "--max-frame-bytes: 1g cannot hold"},
    };
    char err[CFG_ERR_LEN];
    for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
        cfg c;
        const char *const *a = t[i].a;
        assert_int_equal(parse(&c, err, a[0], a[1], a[2], a[3], a[4], a[5],
                               a[6], a[7], NULL),
                         SHOAL_OK);
        shoal_err rc = cfg_check(&c, err, sizeof(err));
        if (t[i].msg == NULL) {
            assert_int_equal(rc, SHOAL_OK);
        } else {
            assert_int_equal(rc, SHOAL_EINVAL);
            if (strncmp(err, t[i].msg, strlen(t[i].msg)) != 0)
                fail_msg("case %zu: got \"%s\", want \"%s\"", i, err, t[i].msg);
        }
        cfg_fini(&c);
    }
}

static void
test_cfg_advertise_defaults_to_listen(void **state)
{
    (void) state;
    char err[CFG_ERR_LEN];
    cfg c;
    assert_int_equal(parse(&c, err, "--listen", "tcp://h:1", NULL), SHOAL_OK);
    assert_string_equal(cfg_advertise(&c), "tcp://h:1");
    cfg_fini(&c);
    assert_int_equal(parse(&c, err, "--listen", "tcp://h:1", "--advertise",
                           "tcp://pub:2", NULL),
                     SHOAL_OK);
    assert_string_equal(cfg_advertise(&c), "tcp://pub:2");
    cfg_fini(&c);
}

/* Out of memory at every allocation of init + args + file: ENOMEM (or
 * success once nothing fails), never a leak (ASan) or a crash. */
static void
test_cfg_out_of_memory(void **state)
{
    (void) state;
    static char a0[] = "shoald", a1[] = "--id", a2[] = "a", a3[] = "--data-dir",
                a4[] = "/d", a5[] = "--listen", a6[] = "tcp://h:1",
                a7[] = "--key-file", a8[] = "/k";
    char *argv[] = {a0, a1, a2, a3, a4, a5, a6, a7, a8};
    const char *file = "advertise = tcp://p:2\nhttp = h:3\nworkers = 9\n";
    char err[CFG_ERR_LEN];
    bool done = false;
    for (long n = 1; !done && n < 1000; n++) {
        cfg c;
        mem_fail_set(n, 0);
        shoal_err rc = cfg_init(&c);
        if (rc == SHOAL_OK)
            rc = cfg_parse_args(9, argv, &c, err, sizeof(err));
        if (rc == SHOAL_OK)
            rc = cfg_parse_file(file, strlen(file), &c, err, sizeof(err));
        mem_fail_set(0, 0);
        if (rc == SHOAL_OK) {
            assert_string_equal(c.advertise_url, "tcp://p:2");
            assert_int_equal(c.workers, 9);
            done = true;
        } else {
            assert_int_equal(rc, SHOAL_ENOMEM);
        }
        cfg_fini(&c);
    }
    assert_true(done);
}

static void
test_cfg_ident_roundtrip(void **state)
{
    (void) state;
    cfg_ident a, b;
    char buf[128], err[CFG_ERR_LEN];
    size_t len;
    memset(&a, 0, sizeof(a));
    memcpy(a.id, "node-9", 7);
    a.n_shards = 1024;
    for (size_t i = 0; i < sizeof(a.hash_key); i++)
        a.hash_key[i] = (uint8_t) (i * 37 + 5);
    assert_int_equal(cfg_ident_format(&a, buf, sizeof(buf), &len), SHOAL_OK);
    assert_int_equal(len, strlen(buf));
    assert_string_equal(buf, "id = node-9\nshards = 1024\n"
                             "hash_key = 052a4f7499bee3082d52779cc1e60b30\n");
    assert_int_equal(cfg_ident_parse(buf, len, &b, err, sizeof(err)), SHOAL_OK);
    assert_memory_equal(&a, &b, sizeof(a));
    assert_int_equal(cfg_ident_format(&a, buf, 20, &len), SHOAL_ETOOLARGE);
    a.n_shards = 3;
    assert_int_equal(cfg_ident_format(&a, buf, sizeof(buf), &len),
                     SHOAL_EINVAL);
    a.n_shards = 8;
    memcpy(a.id, "bad id", 7);
    assert_int_equal(cfg_ident_format(&a, buf, sizeof(buf), &len),
                     SHOAL_EINVAL);
}

static void
test_cfg_ident_damaged(void **state)
{
    (void) state;
    const char *key = "00112233445566778899aabbccddeeff";
    char good[128];
    snprintf(good, sizeof(good), "id = n\nshards = 4\nhash_key = %s\n", key);
    static const struct {
        const char *text, *msg;
    } t[] = {
        {"", "missing id"},
        {"id = n\n", "missing shards"},
        {"id = n\nshards = 4\n", "missing hash_key"},
        {"id = n\nid = n\n", "line 2: field repeated"},
        {"name = n\n", "line 1: unknown field"},
        {"id = bad id\n", "line 1: bad value"},
        {"shards = 3\n", "line 1: bad value"},
        {"shards = 0\n", "line 1: bad value"},
        {"shards = 131072\n", "line 1: bad value"},
        {"shards = x\n", "line 1: bad value"},
        {"hash_key = 0011\n", "line 1: bad value"},
        {"hash_key = 00112233445566778899aabbccddeefg\n", "line 1: bad value"},
        {"hash_key = 00112233445566778899aabbccddeeff00\n",
         "line 1: bad value"},
        {"garbage\n", "line 1: expected 'name = value'"},
    };
    char err[CFG_ERR_LEN];
    cfg_ident id;
    assert_int_equal(cfg_ident_parse(good, strlen(good), &id, err, sizeof(err)),
                     SHOAL_OK);
    assert_string_equal(id.id, "n");
    assert_int_equal(id.n_shards, 4);
    assert_int_equal(id.hash_key[15], 0xff);
    for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
        assert_int_equal(cfg_ident_parse(t[i].text, strlen(t[i].text), &id, err,
                                         sizeof(err)),
                         SHOAL_ECORRUPT);
        if (strncmp(err, t[i].msg, strlen(t[i].msg)) != 0)
            fail_msg("case %zu: got \"%s\", want \"%s\"", i, err, t[i].msg);
        assert_int_equal(id.n_shards, 0); /* cleared on failure */
    }
}

static void
test_cfg_usage_lists_every_option(void **state)
{
    (void) state;
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    assert_non_null(f);
    cfg_usage(f, "shoald");
    fclose(f);
    static const char *const names[] = {
        "--config FILE",
        "--id ID",
        "--listen URL",
        "--advertise URL",
        "--http HOST:PORT|off",
        "--data-dir DIR",
        "--memory",
        "--fsync always|interval|none",
        "--fsync-interval-ms N",
        "--key-file FILE",
        "--insecure",
        "--shards N",
        "--max-key-bytes SIZE",
        "--max-value-bytes SIZE",
        "--max-batch-ops N",
        "--max-frame-bytes SIZE",
        "--workers N",
        "--contexts N",
        "--snapshot-wal-bytes SIZE",
        "--snapshot-interval-ms N",
        "--replay-window-ms N",
        "--log-level err|warn|notice|info|debug",
        "--drain-timeout-ms N",
        "--help",
        "--version"};
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        if (strstr(text, names[i]) == NULL)
            fail_msg("usage lacks %s", names[i]);
    free(text);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cfg_defaults),
        cmocka_unit_test(test_cfg_good_numbers),
        cmocka_unit_test(test_cfg_good_strings),
        cmocka_unit_test(test_cfg_flags_and_booleans),
        cmocka_unit_test(test_cfg_bad_values),
        cmocka_unit_test(test_cfg_fsync_message_exact),
        cmocka_unit_test(test_cfg_bad_arguments),
        cmocka_unit_test(test_cfg_last_flag_wins),
        cmocka_unit_test(test_cfg_file_syntax),
        cmocka_unit_test(test_cfg_file_errors),
        cmocka_unit_test(test_cfg_flags_override_file),
        cmocka_unit_test(test_cfg_check_rules),
        cmocka_unit_test(test_cfg_advertise_defaults_to_listen),
        cmocka_unit_test(test_cfg_out_of_memory),
        cmocka_unit_test(test_cfg_ident_roundtrip),
        cmocka_unit_test(test_cfg_ident_damaged),
        cmocka_unit_test(test_cfg_usage_lists_every_option),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
