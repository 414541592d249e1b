/*
 * test_shoalctl.c -- shoalctl as a user runs it: a real shoald on loopback
 * and the real shoalctl binary, run with fork/exec (proc_run), its stdout,
 * stderr and exit code checked.
 *
 * The keys are made with `shoalctl keygen` (one client file per key; the
 * node's file is their lines together), so keygen is tested by every
 * fixture. Each command is checked in plain form (piped), --json form and,
 * through a pseudo-terminal, human form; the exit codes for not found,
 * usage, condition, auth and unavailable; binary keys and values with
 * --hex; values from stdin; scan --all over a few hundred keys; a short
 * bench. Every wait is bounded; no fixed sleeps.
 */
#define _XOPEN_SOURCE 700 /* posix_openpt, grantpt, unlockpt, ptsname */

#include "tests/support/proc.h"
#include "tests/support/testutil.h"

#include "proto/wire.h"
#include "shoal.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#define RUN_MS   120000 /* longest a shoalctl run may take (bench included) */
#define STOP_MS  30000
#define MAX_ARGS 64

typedef struct fx {
    char *dir;
    char node_keys[512];
    char admin_key[512];
    char write_key[512];
    char read_key[512];
    char app_key[512];      /* write, confined to "app:" */
    char stranger_key[512]; /* not in the node's file */
    proc_node *node;
} fx;

/* ---- running shoalctl ---------------------------------------------------- */

static void
show(const char *what, const proc_output *o)
{
    print_message("# %s: exit %d\n# stdout: %s\n# stderr: %s\n", what, o->code,
                  o->out ? o->out : "", o->err ? o->err : "");
}

/* Run shoalctl with args (NULL-terminated) after argv[0]; in feeds stdin. */
static int
ctl_runv(const void *in, size_t in_len, proc_output *o, const char *pre[],
         va_list ap)
{
    const char *argv[MAX_ARGS];
    size_t n = 0;
    argv[n++] = PROC_SHOALCTL;
    for (size_t i = 0; pre && pre[i]; i++)
        argv[n++] = pre[i];
    for (const char *a; (a = va_arg(ap, const char *)) != NULL;) {
        assert_true(n + 1 < MAX_ARGS);
        argv[n++] = a;
    }
    argv[n] = NULL;
    assert_int_equal(proc_run(argv, in, in_len, RUN_MS, o), SHOAL_OK);
    return o->code;
}

/* shoalctl <args>: nothing added. */
static int
ctl_raw(proc_output *o, ...)
{
    va_list ap;
    va_start(ap, o);
    int code = ctl_runv(NULL, 0, o, NULL, ap);
    va_end(ap);
    return code;
}

/* shoalctl --url <node> --key-file <key> <args>. */
static int
ctl_as(fx *f, const char *key, proc_output *o, ...)
{
    const char *pre[] = {"--url", proc_node_url(f->node), "--key-file", key,
                         NULL};
    va_list ap;
    va_start(ap, o);
    int code = ctl_runv(NULL, 0, o, pre, ap);
    va_end(ap);
    return code;
}

/* The same with stdin. */
static int
ctl_in(fx *f, const void *in, size_t in_len, proc_output *o, ...)
{
    const char *pre[] = {"--url", proc_node_url(f->node), "--key-file",
                         f->admin_key, NULL};
    va_list ap;
    va_start(ap, o);
    int code = ctl_runv(in, in_len, o, pre, ap);
    va_end(ap);
    return code;
}

#define CTL(f, o, ...) ctl_as((f), (f)->admin_key, (o), __VA_ARGS__, NULL)

static void
expect_code(const proc_output *o, int code)
{
    if (o->code != code)
        show("unexpected exit code", o);
    assert_int_equal(o->code, code);
}

static void
expect_out(const proc_output *o, const char *text)
{
    if (strcmp(o->out, text) != 0)
        show("unexpected stdout", o);
    assert_string_equal(o->out, text);
}

static void
expect_err_has(const proc_output *o, const char *needle)
{
    if (strstr(o->err, needle) == NULL)
        show(needle, o);
    assert_non_null(strstr(o->err, needle));
}

/* Run a command that must succeed and return its stdout (free()). */
static char *
ok_out(fx *f, const char *a0, const char *a1, const char *a2, const char *a3)
{
    proc_output o;
    ctl_as(f, f->admin_key, &o, a0, a1, a2, a3, NULL);
    expect_code(&o, 0);
    char *s = strdup(o.out);
    proc_output_free(&o);
    assert_non_null(s);
    return s;
}

/* ---- a pseudo-terminal run: the human output ----------------------------- */

static void
tty_child(const char *slave, const char *const argv[])
{
    setsid();
    int fd = open(slave, O_RDWR);
    if (fd < 0)
        _exit(127);
    dup2(fd, STDOUT_FILENO);
    dup2(fd, STDERR_FILENO);
    close(fd);
    execv(argv[0], (char *const *) argv);
    _exit(127);
}

/* Read the master until the child closes the terminal (bounded). */
static void
tty_drain(int m, char *buf, size_t cap, size_t *len)
{
    uint64_t deadline = proc_now_ms() + RUN_MS;
    while (proc_now_ms() < deadline) {
        struct pollfd p = {.fd = m, .events = POLLIN};
        if (poll(&p, 1, 1000) <= 0)
            continue;
        ssize_t n = read(m, buf + *len, cap - 1 - *len);
        if (n <= 0)
            break; /* EIO: the slave side closed */
        *len += (size_t) n;
        if (*len == cap - 1)
            break;
    }
    buf[*len] = '\0';
}

/* Run shoalctl --url --key-file(admin) args with stdout and stderr on a
 * terminal; returns the exit code, *out the output without '\r'
 * (free()). */
static int
ctl_tty(fx *f, char **out, const char *a0, const char *a1, const char *a2,
        const char *a3)
{
    const char *argv[] = {PROC_SHOALCTL,
                          "--url",
                          proc_node_url(f->node),
                          "--key-file",
                          f->admin_key,
                          a0,
                          a1,
                          a2,
                          a3,
                          NULL};
    int m = posix_openpt(O_RDWR | O_NOCTTY);
    assert_true(m >= 0);
    assert_int_equal(grantpt(m), 0);
    assert_int_equal(unlockpt(m), 0);
    char slave[128];
    snprintf(slave, sizeof(slave), "%s", ptsname(m));
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0)
        tty_child(slave, argv);
    size_t cap = 1 << 20, len = 0;
    char *buf = malloc(cap);
    assert_non_null(buf);
    tty_drain(m, buf, cap, &len);
    close(m);
    int st = 0;
    assert_int_equal(proc_wait(pid, RUN_MS, &st), SHOAL_OK);
    size_t j = 0;
    for (size_t i = 0; i < len; i++)
        if (buf[i] != '\r')
            buf[j++] = buf[i];
    buf[j] = '\0';
    *out = buf;
    return proc_exit_code(st);
}

/* ---- minimal JSON reading ------------------------------------------------ */

/* The text after "field": in js (from the first match), or NULL. */
static const char *
json_at(const char *js, const char *field)
{
    char pat[96];
    snprintf(pat, sizeof(pat), "\"%s\":", field);
    const char *p = strstr(js, pat);
    return p ? p + strlen(pat) : NULL;
}

static uint64_t
json_u64(const char *js, const char *field)
{
    const char *p = json_at(js, field);
    if (p == NULL)
        print_message("# no %s in %s\n", field, js);
    assert_non_null(p);
    assert_true(*p >= '0' && *p <= '9');
    return strtoull(p, NULL, 10);
}

static int64_t
json_i64(const char *js, const char *field)
{
    const char *p = json_at(js, field);
    assert_non_null(p);
    return strtoll(p, NULL, 10);
}

static double
json_num(const char *js, const char *field)
{
    const char *p = json_at(js, field);
    assert_non_null(p);
    return strtod(p, NULL);
}

static bool
json_bool(const char *js, const char *field)
{
    const char *p = json_at(js, field);
    assert_non_null(p);
    assert_true(strncmp(p, "true", 4) == 0 || strncmp(p, "false", 5) == 0);
    return p[0] == 't';
}

/* A string member, unescaped (\" \\ \n \t \uXXXX below 0x80), malloc'd;
 * NULL when absent. */
static char *
json_str(const char *js, const char *field)
{
    const char *p = json_at(js, field);
    if (p == NULL)
        return NULL;
    assert_int_equal(*p, '"');
    char *s = malloc(strlen(p) + 1), *w = s;
    assert_non_null(s);
    for (p++; *p && *p != '"'; p++) {
        if (*p != '\\') {
            *w++ = *p;
            continue;
        }
        p++;
        if (*p == 'n')
            *w++ = '\n';
        else if (*p == 't')
            *w++ = '\t';
        else if (*p == 'u') {
            char hex[5] = {p[1], p[2], p[3], p[4], 0};
            *w++ = (char) strtoul(hex, NULL, 16);
            p += 4;
        } else
            *w++ = *p;
    }
    assert_int_equal(*p, '"');
    *w = '\0';
    return s;
}

static void
expect_json_str(const char *js, const char *field, const char *want)
{
    char *got = json_str(js, field);
    if (got == NULL || strcmp(got, want) != 0)
        print_message("# %s: want %s in %s\n", field, want, js);
    assert_non_null(got);
    assert_string_equal(got, want);
    free(got);
}

/* ---- fixture ------------------------------------------------------------- */

static void
path_in(const fx *f, char *buf, size_t len, const char *name)
{
    snprintf(buf, len, "%s/%s", f->dir, name);
}

/* Append the contents of src to dst (the node's key file). */
static int
append_file(const char *dst, const char *src)
{
    char buf[1024];
    FILE *in = fopen(src, "r");
    int out = open(dst, O_WRONLY | O_APPEND | O_CREAT, 0600);
    if (in == NULL || out < 0) {
        if (in)
            fclose(in);
        if (out >= 0)
            close(out);
        return -1;
    }
    size_t n = fread(buf, 1, sizeof(buf), in);
    int rc = n > 0 && write(out, buf, n) == (ssize_t) n ? 0 : -1;
    fclose(in);
    close(out);
    return rc;
}

/* shoalctl keygen --out file; then (node != NULL) its line into node. */
static int
keygen(const char *file, const char *id, const char *role, const char *prefix,
       const char *node)
{
    proc_output o;
    int code = prefix ? ctl_raw(&o, "keygen", "--id", id, "--role", role,
                                "--prefix", prefix, "--out", file, NULL)
                      : ctl_raw(&o, "keygen", "--id", id, "--role", role,
                                "--out", file, NULL);
    if (code != 0)
        show("keygen", &o);
    proc_output_free(&o);
    if (code != 0)
        return -1;
    return node ? append_file(node, file) : 0;
}

static int
make_keys(fx *f)
{
    path_in(f, f->node_keys, sizeof(f->node_keys), "node.keys");
    path_in(f, f->admin_key, sizeof(f->admin_key), "admin.key");
    path_in(f, f->write_key, sizeof(f->write_key), "write.key");
    path_in(f, f->read_key, sizeof(f->read_key), "read.key");
    path_in(f, f->app_key, sizeof(f->app_key), "app.key");
    path_in(f, f->stranger_key, sizeof(f->stranger_key), "stranger.key");
    if (keygen(f->admin_key, "1", "admin", NULL, f->node_keys) != 0 ||
        keygen(f->write_key, "2", "write", NULL, f->node_keys) != 0 ||
        keygen(f->read_key, "3", "read", NULL, f->node_keys) != 0 ||
        keygen(f->app_key, "4", "write", "app:", f->node_keys) != 0)
        return -1;
    /* Same id as the admin key, another secret: the node cannot open it. */
    return keygen(f->stranger_key, "1", "admin", NULL, NULL);
}

static int
fx_up(void **state)
{
    fx *f = calloc(1, sizeof(*f));
    void *dir = NULL;
    if (f == NULL || tu_tmpdir_up(&dir) != 0)
        return -1;
    f->dir = dir;
    *state = f;
    if (make_keys(f) != 0)
        return -1;
    proc_node_opts o;
    proc_node_opts_default(&o);
    o.dir = f->dir;
    o.key_file = f->node_keys;
    if (proc_node_start(&o, &f->node) != SHOAL_OK) {
        fprintf(stderr, "# shoald did not start; log in %s\n", f->dir);
        return -1;
    }
    return 0;
}

static int
fx_down(void **state)
{
    fx *f = *state;
    if (f == NULL)
        return 0;
    int code = -1;
    if (f->node != NULL)
        proc_node_stop(f->node, STOP_MS, &code);
    proc_node_free(f->node);
    proc_reap_all();
    void *dir = f->dir;
    tu_tmpdir_down(&dir);
    free(f);
    return 0;
}

/* A directory only (keygen and usage tests need no node). */
static int
dir_up(void **state)
{
    fx *f = calloc(1, sizeof(*f));
    void *dir = NULL;
    if (f == NULL || tu_tmpdir_up(&dir) != 0)
        return -1;
    f->dir = dir;
    *state = f;
    return 0;
}

static int
dir_down(void **state)
{
    fx *f = *state;
    void *dir = f->dir;
    tu_tmpdir_down(&dir);
    free(f);
    return 0;
}

/* ---- get, put, del ------------------------------------------------------- */

static void
test_shoalctl_put_get_del(void **state)
{
    fx *f = *state;
    proc_output o;
    CTL(f, &o, "put", "greeting", "hello world");
    expect_code(&o, 0);
    uint64_t v1 = strtoull(o.out, NULL, 10);
    assert_true(v1 > 0);
    proc_output_free(&o);

    CTL(f, &o, "get", "greeting");
    expect_code(&o, 0);
    expect_out(&o, "hello world\n");
    proc_output_free(&o);

    CTL(f, &o, "--json", "get", "greeting");
    expect_code(&o, 0);
    expect_json_str(o.out, "key", "greeting");
    expect_json_str(o.out, "value", "hello world");
    assert_int_equal(json_u64(o.out, "version"), v1);
    proc_output_free(&o);

    CTL(f, &o, "--json", "put", "greeting", "hi \"there\"\n");
    expect_code(&o, 0);
    uint64_t v2 = json_u64(o.out, "version");
    assert_true(v2 > v1);
    expect_json_str(o.out, "key", "greeting");
    proc_output_free(&o);

    CTL(f, &o, "--json", "get", "greeting");
    expect_json_str(o.out, "value", "hi \"there\"\n");
    proc_output_free(&o);

    CTL(f, &o, "del", "greeting");
    expect_code(&o, 0);
    expect_out(&o, "");
    proc_output_free(&o);

    CTL(f, &o, "get", "greeting");
    expect_code(&o, 1);
    expect_out(&o, "");
    expect_err_has(&o, "shoalctl: get: key not found (SHOAL_ENOTFOUND)");
    proc_output_free(&o);

    CTL(f, &o, "del", "greeting");
    expect_code(&o, 1);
    expect_err_has(&o, "shoalctl: del: key not found (SHOAL_ENOTFOUND)");
    proc_output_free(&o);

    CTL(f, &o, "--json", "get", "greeting");
    expect_code(&o, 1);
    expect_json_str(o.out, "error", "SHOAL_ENOTFOUND");
    assert_int_equal(json_u64(o.out, "status"), 1);
    proc_output_free(&o);

    CTL(f, &o, "put", "e", "x");
    proc_output_free(&o);
    CTL(f, &o, "--json", "del", "e");
    expect_code(&o, 0);
    assert_true(json_bool(o.out, "deleted"));
    proc_output_free(&o);
}

/* put --if-absent / --if-version, del --if-version: exit 3. */
static void
test_shoalctl_conditions(void **state)
{
    fx *f = *state;
    proc_output o;
    char *s = ok_out(f, "put", "c", "1", NULL);
    uint64_t v = strtoull(s, NULL, 10);
    free(s);
    char vbuf[32], wrong[32];
    snprintf(vbuf, sizeof(vbuf), "%llu", (unsigned long long) v);
    snprintf(wrong, sizeof(wrong), "%llu", (unsigned long long) v + 1000);

    CTL(f, &o, "put", "c", "2", "--if-absent");
    expect_code(&o, 3);
    expect_err_has(&o, "shoalctl: put: key already exists (SHOAL_EEXISTS)");
    proc_output_free(&o);

    CTL(f, &o, "put", "c", "2", "--if-version", wrong);
    expect_code(&o, 3);
    expect_err_has(&o, "(SHOAL_EVERSION)");
    proc_output_free(&o);

    CTL(f, &o, "del", "c", "--if-version", wrong);
    expect_code(&o, 3);
    expect_err_has(&o, "shoalctl: del: version mismatch (SHOAL_EVERSION)");
    proc_output_free(&o);

    CTL(f, &o, "--json", "put", "--if-version", vbuf, "c", "3");
    expect_code(&o, 0);
    assert_true(json_u64(o.out, "version") > v);
    proc_output_free(&o);

    CTL(f, &o, "put", "fresh", "1", "--if-absent");
    expect_code(&o, 0);
    proc_output_free(&o);

    CTL(f, &o, "put", "never", "1", "--if-version=0");
    expect_code(&o, 0);
    proc_output_free(&o);

    s = ok_out(f, "get", "c", NULL, NULL);
    assert_string_equal(s, "3\n");
    free(s);
}

/* ---- incr, ttl, exists, count, stats ------------------------------------- */

static void
test_shoalctl_incr(void **state)
{
    fx *f = *state;
    proc_output o;
    char *s = ok_out(f, "incr", "n", NULL, NULL);
    assert_string_equal(s, "1\n");
    free(s);
    s = ok_out(f, "incr", "n", "41", NULL);
    assert_string_equal(s, "42\n");
    free(s);
    s = ok_out(f, "incr", "n", "-50", NULL);
    assert_string_equal(s, "-8\n");
    free(s);

    CTL(f, &o, "--json", "incr", "n", "+3");
    expect_code(&o, 0);
    assert_int_equal(json_i64(o.out, "value"), -5);
    assert_true(json_u64(o.out, "version") > 0);
    proc_output_free(&o);

    CTL(f, &o, "put", "word", "abc");
    proc_output_free(&o);
    CTL(f, &o, "incr", "word");
    expect_code(&o, 6);
    expect_err_has(&o, "(SHOAL_ENOTNUM)");
    proc_output_free(&o);

    CTL(f, &o, "put", "big", "9223372036854775807");
    proc_output_free(&o);
    CTL(f, &o, "incr", "big");
    expect_code(&o, 6);
    expect_err_has(&o, "(SHOAL_EOVERFLOW)");
    proc_output_free(&o);
}

static void
test_shoalctl_ttl_exists(void **state)
{
    fx *f = *state;
    proc_output o;
    CTL(f, &o, "put", "t", "v", "--ttl-ms", "600000");
    expect_code(&o, 0);
    proc_output_free(&o);
    char *s = ok_out(f, "ttl", "t", NULL, NULL);
    long long ttl = strtoll(s, NULL, 10);
    free(s);
    assert_true(ttl > 0 && ttl <= 600000);

    CTL(f, &o, "--json", "ttl", "t");
    expect_code(&o, 0);
    assert_true(json_i64(o.out, "ttl_ms") > 0);
    proc_output_free(&o);

    CTL(f, &o, "put", "forever", "v");
    proc_output_free(&o);
    s = ok_out(f, "ttl", "forever", NULL, NULL);
    assert_string_equal(s, "-1\n");
    free(s);

    CTL(f, &o, "ttl", "nothing");
    expect_code(&o, 1);
    expect_err_has(&o, "shoalctl: ttl: key not found (SHOAL_ENOTFOUND)");
    proc_output_free(&o);

    s = ok_out(f, "exists", "t", NULL, NULL);
    assert_string_equal(s, "1\n");
    free(s);
    CTL(f, &o, "exists", "nothing");
    expect_code(&o, 1);
    expect_out(&o, "0\n");
    assert_string_equal(o.err, "");
    proc_output_free(&o);
    CTL(f, &o, "--json", "exists", "nothing");
    expect_code(&o, 1);
    assert_false(json_bool(o.out, "exists"));
    proc_output_free(&o);
    CTL(f, &o, "--json", "exists", "t");
    expect_code(&o, 0);
    assert_true(json_bool(o.out, "exists"));
    proc_output_free(&o);
}

static void
test_shoalctl_count_stats(void **state)
{
    fx *f = *state;
    proc_output o;
    const char *keys[] = {"a:1", "a:2", "a:3", "b:1"};
    for (size_t i = 0; i < 4; i++) {
        CTL(f, &o, "put", keys[i], "v");
        expect_code(&o, 0);
        proc_output_free(&o);
    }
    char *s = ok_out(f, "count", NULL, NULL, NULL);
    assert_string_equal(s, "4\n");
    free(s);
    s = ok_out(f, "count", "a:", NULL, NULL);
    assert_string_equal(s, "3\n");
    free(s);
    CTL(f, &o, "--json", "count", "b:");
    expect_code(&o, 0);
    assert_int_equal(json_u64(o.out, "count"), 1);
    expect_json_str(o.out, "prefix", "b:");
    proc_output_free(&o);

    CTL(f, &o, "--json", "stats");
    expect_code(&o, 0);
    expect_json_str(o.out, "node_id", "n1");
    assert_int_equal(json_u64(o.out, "keys"), 4);
    assert_true(json_u64(o.out, "n_shards") > 0);
    assert_true(json_u64(o.out, "requests") > 0);
    assert_false(json_bool(o.out, "read_only"));
    proc_output_free(&o);

    CTL(f, &o, "stats");
    expect_code(&o, 0);
    assert_non_null(strstr(o.out, "node_id"));
    assert_non_null(strstr(o.out, "keys"));
    assert_non_null(strstr(o.out, "wal_fsyncs"));
    proc_output_free(&o);
}

/* The human forms, on a pseudo-terminal. */
static void
test_shoalctl_human_output(void **state)
{
    fx *f = *state;
    proc_output o;
    char *out = NULL;
    assert_int_equal(ctl_tty(f, &out, "put", "h:text", "plain words", NULL), 0);
    assert_non_null(strstr(out, "OK (version "));
    free(out);
    assert_int_equal(ctl_tty(f, &out, "get", "h:text", NULL, NULL), 0);
    assert_string_equal(out, "plain words\n");
    free(out);

    CTL(f, &o, "--hex", "put", "683a62696e", "00610afe");
    expect_code(&o, 0);
    proc_output_free(&o);
    assert_int_equal(ctl_tty(f, &out, "get", "h:bin", NULL, NULL), 0);
    assert_string_equal(out, "\"\\x00a\\n\\xfe\"\n");
    free(out);

    assert_int_equal(ctl_tty(f, &out, "scan", "--prefix", "h:", NULL), 0);
    assert_non_null(strstr(out, "KEY"));
    assert_non_null(strstr(out, "VERSION"));
    assert_non_null(strstr(out, "plain words"));
    assert_non_null(strstr(out, "\\x00a\\n\\xfe"));
    assert_non_null(strstr(out, "(2 keys)"));
    free(out);

    assert_int_equal(ctl_tty(f, &out, "stats", NULL, NULL, NULL), 0);
    assert_non_null(strstr(out, "node_id"));
    assert_non_null(strstr(out, "B)")); /* sizes shown beside bytes */
    free(out);

    assert_int_equal(ctl_tty(f, &out, "exists", "h:none", NULL, NULL), 1);
    assert_string_equal(out, "no\n");
    free(out);
}

/* ---- usage errors: exit 2, a message and the usage line ------------------ */

static void
expect_usage(const char *what, proc_output *o)
{
    if (o->code != 2 || strstr(o->err, "usage:") == NULL ||
        strncmp(o->err, "shoalctl: ", 10) != 0)
        show(what, o);
    assert_int_equal(o->code, 2);
    assert_non_null(strstr(o->err, "usage:"));
    assert_int_equal(strncmp(o->err, "shoalctl: ", 10), 0);
    assert_string_equal(o->out, "");
    proc_output_free(o);
}

/* Usage errors, each after "--url <dead> --insecure" unless it starts with
 * "-" (then as it is): a usage error must come before any connection. */
static const char *const usage_cases[][10] = {
    {"frobnicate"},
    {"get"},
    {"get", "a", "b"},
    {"put", "k"},
    {"put", "k", "v", "--ttl-ms", "abc"},
    {"put", "k", "v", "--ttl-ms", "-1"},
    {"put", "k", "v", "--ttl-ms", " 5"},
    {"put", "k", "v", "--if-version", "1x"},
    {"put", "k", "v", "--if-version", "99999999999999999999999"},
    {"put", "k", "v", "--if-absent=yes"},
    {"put", "k", "v", "--ttl-ms"},
    {"incr", "k", "12x"},
    {"incr", "k", "9223372036854775808"},
    {"scan", "--limit", "0"},
    {"scan", "--limit", "10001"},
    {"scan", "--token", "xyz"},
    {"scan", "extra"},
    {"count", "a", "b"},
    {"get", "k", "--json"},
    {"bench", "-c", "0"},
    {"bench", "-t", "put,frob"},
    {"bench", "-n", "10", "--duration-s", "1"},
    {"bench", "-P", "x"},
    {"bench", "-c", "10000", "-P", "11"},
    {"--url", "tcp://127.0.0.1:1", "--insecure", "--hex", "get", "zz"},
    {"--url", "tcp://127.0.0.1:1", "--insecure", "--hex", "get", "abc"},
    {"--timeout-ms", "0", "--insecure", "get", "k"},
    {"--timeout-ms", "5000000000", "--insecure", "get", "k"},
    {"--bogus", "get", "k"},
    {"--url", "", "get", "k"},
    {"--key-file", "x", "--insecure", "get", "k"},
    {"--url", "tcp://127.0.0.1:1", "get", "k"}, /* no key at all */
    {"-v"},                                     /* no command */
    {"-v", "keygen", "--role", "admin"},
    {"-v", "keygen", "--id", "1", "--role", "root"},
    {"-v", "keygen", "--id", "0", "--role", "read"},
    {"-v", "keygen", "--id", "4294967296", "--role", "read"},
    {"-v", "keygen", "--id", "1", "--role", "read", "--force"},
    {"-v", "keygen", "--id", "1", "--role", "read", "--out", "f", "--force",
     "--append"},
};

static void
test_shoalctl_usage_errors(void **state)
{
    (void) state;
    unsetenv("SHOAL_KEY_FILE");
    for (size_t i = 0; i < sizeof(usage_cases) / sizeof(usage_cases[0]); i++) {
        const char *argv[MAX_ARGS];
        size_t n = 0;
        argv[n++] = PROC_SHOALCTL;
        if (usage_cases[i][0][0] != '-') {
            argv[n++] = "--url";
            argv[n++] = "tcp://127.0.0.1:1";
            argv[n++] = "--insecure";
        }
        for (size_t j = 0; j < 10 && usage_cases[i][j]; j++)
            argv[n++] = usage_cases[i][j];
        argv[n] = NULL;
        proc_output o;
        assert_int_equal(proc_run(argv, NULL, 0, RUN_MS, &o), SHOAL_OK);
        char what[64];
        snprintf(what, sizeof(what), "usage case %zu", i);
        expect_usage(what, &o);
    }
}

static void
test_shoalctl_help_version(void **state)
{
    (void) state;
    proc_output o;
    ctl_raw(&o, "--help", NULL);
    expect_code(&o, 0);
    assert_non_null(strstr(o.out, "Exit codes"));
    assert_non_null(strstr(o.out, "bench"));
    assert_non_null(strstr(o.out, "\"value_hex\""));
    assert_non_null(strstr(o.out, "4 authentication or permission"));
    proc_output_free(&o);
    ctl_raw(&o, "--version", NULL);
    expect_code(&o, 0);
    assert_int_equal(strncmp(o.out, "shoalctl ", 9), 0);
    proc_output_free(&o);
    ctl_raw(&o, "get", "--help", NULL);
    expect_code(&o, 0);
    assert_non_null(strstr(o.out, "get KEY"));
    proc_output_free(&o);
    ctl_raw(&o, "bench", "--help", NULL);
    expect_code(&o, 0);
    assert_non_null(strstr(o.out, "ops_per_sec"));
    proc_output_free(&o);
    ctl_raw(&o, "keygen", "--help", NULL);
    expect_code(&o, 0);
    assert_non_null(strstr(o.out, "--append"));
    proc_output_free(&o);
}

/* ---- auth and unavailable ------------------------------------------------ */

static void
test_shoalctl_auth(void **state)
{
    fx *f = *state;
    proc_output o;
    ctl_as(f, f->write_key, &o, "put", "app:x", "1", NULL);
    expect_code(&o, 0);
    proc_output_free(&o);

    ctl_as(f, f->stranger_key, &o, "get", "app:x", NULL);
    expect_code(&o, 4);
    expect_err_has(&o, "(SHOAL_EAUTH)");
    proc_output_free(&o);

    ctl_as(f, f->read_key, &o, "get", "app:x", NULL);
    expect_code(&o, 0);
    expect_out(&o, "1\n");
    proc_output_free(&o);

    ctl_as(f, f->read_key, &o, "put", "app:x", "2", NULL);
    expect_code(&o, 4);
    expect_err_has(&o, "shoalctl: put: permission denied (SHOAL_EPERM)");
    proc_output_free(&o);

    ctl_as(f, f->read_key, &o, "--json", "del", "app:x", NULL);
    expect_code(&o, 4);
    expect_json_str(o.out, "error", "SHOAL_EPERM");
    proc_output_free(&o);

    ctl_as(f, f->write_key, &o, "stats", NULL);
    expect_code(&o, 4);
    expect_err_has(&o, "(SHOAL_EPERM)");
    proc_output_free(&o);

    ctl_as(f, f->app_key, &o, "put", "app:y", "1", NULL);
    expect_code(&o, 0);
    proc_output_free(&o);
    ctl_as(f, f->app_key, &o, "put", "other:y", "1", NULL);
    expect_code(&o, 4);
    proc_output_free(&o);

    /* A key file others may read is refused before anything is sent. */
    assert_int_equal(chmod(f->write_key, 0644), 0);
    ctl_as(f, f->write_key, &o, "get", "app:x", NULL);
    expect_code(&o, 4);
    expect_err_has(&o, "key file");
    proc_output_free(&o);
    assert_int_equal(chmod(f->write_key, 0600), 0);

    /* Plaintext to a node that wants keys. */
    ctl_raw(&o, "--url", proc_node_url(f->node), "--insecure", "--timeout-ms",
            "2000", "get", "app:x", NULL);
    if (o.code != 4 && o.code != 5)
        show("plaintext to a sealed node", &o);
    assert_true(o.code == 4 || o.code == 5);
    proc_output_free(&o);
}

static void
test_shoalctl_unavailable(void **state)
{
    fx *f = *state;
    proc_output o;
    uint16_t port = 0;
    assert_int_equal(proc_free_port(&port), SHOAL_OK);
    char url[64];
    snprintf(url, sizeof(url), "tcp://127.0.0.1:%u", port);
    uint64_t t0 = proc_now_ms();
    ctl_raw(&o, "--url", url, "--key-file", f->admin_key, "--timeout-ms", "300",
            "get", "k", NULL);
    expect_code(&o, 5);
    expect_err_has(&o, "shoalctl: get: ");
    assert_true(strstr(o.err, "SHOAL_EUNAVAILABLE") ||
                strstr(o.err, "SHOAL_ETIMEOUT"));
    assert_true(proc_now_ms() - t0 < 20000);
    proc_output_free(&o);

    ctl_raw(&o, "--url", url, "--key-file", f->admin_key, "--timeout-ms", "300",
            "--json", "bench", "-n", "10", "-q", NULL);
    expect_code(&o, 5);
    proc_output_free(&o);

    /* A stopped node: the connection is accepted, nothing answers. */
    assert_int_equal(proc_signal(proc_node_pid(f->node), SIGSTOP), SHOAL_OK);
    ctl_as(f, f->admin_key, &o, "--timeout-ms", "500", "get", "k", NULL);
    assert_int_equal(proc_signal(proc_node_pid(f->node), SIGCONT), SHOAL_OK);
    expect_code(&o, 5);
    proc_output_free(&o);

    /* A dead seed first, the live node second. */
    ctl_raw(&o, "--url", url, "--url", proc_node_url(f->node), "--key-file",
            f->admin_key, "--timeout-ms", "10000", "put", "k", "v", NULL);
    expect_code(&o, 0);
    proc_output_free(&o);

    /* The environment's defaults. */
    setenv("SHOAL_URL", proc_node_url(f->node), 1);
    setenv("SHOAL_KEY_FILE", f->admin_key, 1);
    ctl_raw(&o, "get", "k", NULL);
    unsetenv("SHOAL_URL");
    unsetenv("SHOAL_KEY_FILE");
    expect_code(&o, 0);
    expect_out(&o, "v\n");
    proc_output_free(&o);
}

/* ---- keygen -------------------------------------------------------------- */

static char *
read_text(const char *path)
{
    FILE *fp = fopen(path, "r");
    assert_non_null(fp);
    char *buf = calloc(1, 8192);
    assert_non_null(buf);
    size_t n = fread(buf, 1, 8191, fp);
    buf[n] = '\0';
    fclose(fp);
    return buf;
}

static mode_t
file_mode(const char *path)
{
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    return st.st_mode & 07777;
}

/* path holds a key file of n keys, the last one with id last_id. */
static void
expect_keyfile(const char *path, size_t n, uint32_t last_id)
{
    char *text = read_text(path);
    wire_keyring *kr = NULL;
    char err[256] = "";
    assert_int_equal(
        wire_keyring_parse(text, strlen(text), &kr, err, sizeof(err)),
        SHOAL_OK);
    assert_int_equal(wire_keyring_count(kr), n);
    assert_int_equal(wire_keyring_at(kr, n - 1)->id, last_id);
    wire_keyring_free(kr);
    free(text);
    assert_int_equal(file_mode(path), 0600);
}

static void
test_shoalctl_keygen(void **state)
{
    fx *f = *state;
    proc_output o;
    char file[512], link[512];
    path_in(f, file, sizeof(file), "k.keys");
    path_in(f, link, sizeof(link), "link.keys");
    mode_t old = umask(0); /* a careless umask must not matter */

    ctl_raw(&o, "keygen", "--id", "7", "--role", "write", "--out", file, NULL);
    expect_code(&o, 0);
    expect_keyfile(file, 1, 7);
    proc_output_free(&o);
    char *first = read_text(file);
    assert_int_equal(strncmp(first, "key id=7 role=write ", 20), 0);

    ctl_raw(&o, "keygen", "--id", "8", "--role", "read", "--out", file, NULL);
    expect_code(&o, 3);
    expect_err_has(&o, "--force");
    proc_output_free(&o);
    char *now = read_text(file);
    assert_string_equal(now, first);
    free(now);

    assert_int_equal(chmod(file, 0644), 0);
    ctl_raw(&o, "--json", "keygen", "--id", "9", "--role", "admin", "--out",
            file, "--append", NULL);
    expect_code(&o, 0);
    assert_int_equal(json_u64(o.out, "id"), 9);
    expect_json_str(o.out, "role", "admin");
    expect_json_str(o.out, "out", file);
    proc_output_free(&o);
    expect_keyfile(file, 2, 9);

    ctl_raw(&o, "keygen", "--id", "7", "--role", "read", "--out", file,
            "--append", NULL);
    expect_code(&o, 3);
    expect_err_has(&o, "already holds key id 7");
    proc_output_free(&o);
    expect_keyfile(file, 2, 9);

    ctl_raw(&o, "keygen", "--id", "5", "--role", "peer", "--out", file,
            "--force", NULL);
    expect_code(&o, 0);
    proc_output_free(&o);
    expect_keyfile(file, 1, 5);
    now = read_text(file);
    assert_string_not_equal(now, first);
    free(now);
    free(first);

    /* Never through a symlink. */
    assert_int_equal(symlink(file, link), 0);
    ctl_raw(&o, "keygen", "--id", "6", "--role", "read", "--out", link,
            "--append", NULL);
    assert_int_not_equal(o.code, 0);
    proc_output_free(&o);
    expect_keyfile(file, 1, 5);
    umask(old);
}

/* keygen without --out: the line on stdout, or in JSON. */
static void
test_shoalctl_keygen_stdout(void **state)
{
    (void) state;
    proc_output o;
    /* A prefix given as hex. */
    ctl_raw(&o, "--hex", "keygen", "--id", "12", "--role", "read", "--prefix",
            "6170703a", NULL);
    expect_code(&o, 0);
    assert_int_equal(strncmp(o.out, "key id=12 role=read prefix=6170703a ", 36),
                     0);
    wire_keyring *kr = NULL;
    assert_int_equal(wire_keyring_parse(o.out, o.out_len, &kr, NULL, 0),
                     SHOAL_OK);
    assert_int_equal(wire_keyring_at(kr, 0)->prefix_len, 4);
    wire_keyring_free(kr);
    proc_output_free(&o);

    ctl_raw(&o, "--json", "keygen", "--id", "13", "--role", "write", NULL);
    expect_code(&o, 0);
    char *line = json_str(o.out, "line");
    assert_non_null(line);
    assert_int_equal(strncmp(line, "key id=13 role=write ", 21), 0);
    free(line);
    proc_output_free(&o);
}

/* ---- binary data: --hex and stdin ---------------------------------------- */

static void
test_shoalctl_hex_and_stdin(void **state)
{
    fx *f = *state;
    proc_output o;
    CTL(f, &o, "--hex", "put", "00ff0a41", "00610afe7f");
    expect_code(&o, 0);
    proc_output_free(&o);
    CTL(f, &o, "--hex", "get", "00ff0a41");
    expect_code(&o, 0);
    expect_out(&o, "00610afe7f\n");
    proc_output_free(&o);
    CTL(f, &o, "--json", "--hex", "get", "00FF0A41");
    expect_code(&o, 0);
    expect_json_str(o.out, "key", "00ff0a41");
    expect_json_str(o.out, "value", "00610afe7f");
    proc_output_free(&o);

    /* Raw bytes when piped; _hex members in JSON for non-UTF-8. */
    CTL(f, &o, "--hex", "put", "62696e", "00610afe7f");
    proc_output_free(&o);
    CTL(f, &o, "get", "bin");
    expect_code(&o, 0);
    assert_int_equal(o.out_len, 6);
    assert_memory_equal(o.out,
                        "\x00"
                        "a\n\xfe\x7f\n",
                        6);
    proc_output_free(&o);
    CTL(f, &o, "--json", "get", "bin");
    expect_json_str(o.out, "value_hex", "00610afe7f");
    expect_json_str(o.out, "key", "bin");
    proc_output_free(&o);

    /* stdin: bytes as they are, or hex text with --hex. */
    const uint8_t raw[] = {0, 1, 2, '\n', 0xff, 0, 'z'};
    ctl_in(f, raw, sizeof(raw), &o, "put", "stdin:raw", "-", NULL);
    expect_code(&o, 0);
    proc_output_free(&o);
    CTL(f, &o, "--hex", "get", "737464696e3a726177");
    expect_out(&o, "0001020aff007a\n");
    proc_output_free(&o);
    size_t big_len = 300000; /* many reads of the pipe */
    uint8_t *big = malloc(big_len);
    assert_non_null(big);
    uint64_t seed = tu_seed("shoalctl stdin");
    for (size_t i = 0; i < big_len; i++)
        big[i] = (uint8_t) tu_rand(&seed);
    ctl_in(f, big, big_len, &o, "put", "stdin:big", "-", NULL);
    expect_code(&o, 0);
    proc_output_free(&o);
    CTL(f, &o, "get", "stdin:big");
    expect_code(&o, 0);
    assert_int_equal(o.out_len, big_len + 1);
    assert_memory_equal(o.out, big, big_len);
    proc_output_free(&o);
    free(big);
    ctl_in(f, "deadBEEF\n", 9, &o, "--hex", "put", "6878", "-", NULL);
    expect_code(&o, 0);
    proc_output_free(&o);
    CTL(f, &o, "--hex", "get", "6878");
    expect_out(&o, "deadbeef\n");
    proc_output_free(&o);
    ctl_in(f, "xyz", 3, &o, "--hex", "put", "6878", "-", NULL);
    expect_usage("stdin not hex", &o);
    ctl_in(f, "", 0, &o, "put", "empty", "-", NULL);
    expect_code(&o, 0);
    proc_output_free(&o);
    CTL(f, &o, "--json", "get", "empty");
    expect_json_str(o.out, "value", "");
    proc_output_free(&o);

    /* Binary keys in scan and count. */
    CTL(f, &o, "--hex", "scan", "--prefix", "00ff");
    expect_code(&o, 0);
    expect_out(&o, "00ff0a41\t00610afe7f\n");
    proc_output_free(&o);
    CTL(f, &o, "scan", "--prefix", "bi");
    expect_out(&o, "bin\t\\x00a\\n\\xfe\\x7f\n");
    proc_output_free(&o);
    CTL(f, &o, "--hex", "count", "00");
    expect_out(&o, "1\n");
    proc_output_free(&o);
}

/* ---- scan over a few hundred keys ---------------------------------------- */

#define SCAN_KEYS 300

static void
put_many(fx *f)
{
    shoal_opts so;
    shoal_opts_default(&so);
    const char *seeds[] = {proc_node_url(f->node)};
    so.seeds = seeds;
    so.n_seeds = 1;
    so.key_file = f->admin_key;
    shoal *db = NULL;
    assert_int_equal(shoal_open(&so, &db), SHOAL_OK);
    for (int i = 0; i < SCAN_KEYS; i++) {
        char k[16], v[16];
        snprintf(k, sizeof(k), "s:%04d", i);
        snprintf(v, sizeof(v), "v%d", i);
        assert_int_equal(
            shoal_put(db, k, strlen(k), v, strlen(v), NULL, NULL, NULL),
            SHOAL_OK);
    }
    shoal_close(db);
}

/* Check that text holds lines "s:%04d\tv%d" for i in [from, to). */
static void
expect_scan_lines(const char *text, int from, int to, bool keys_only)
{
    const char *p = text;
    for (int i = from; i < to; i++) {
        char want[32];
        if (keys_only)
            snprintf(want, sizeof(want), "s:%04d\n", i);
        else
            snprintf(want, sizeof(want), "s:%04d\tv%d\n", i, i);
        if (strncmp(p, want, strlen(want)) != 0)
            print_message("# line %d: want %s got %.40s\n", i, want, p);
        assert_int_equal(strncmp(p, want, strlen(want)), 0);
        p += strlen(want);
    }
    assert_string_equal(p, "");
}

static void
test_shoalctl_scan(void **state)
{
    fx *f = *state;
    proc_output o;
    put_many(f);
    CTL(f, &o, "put", "t:after", "x"); /* outside the prefix */
    proc_output_free(&o);

    CTL(f, &o, "scan", "--prefix", "s:", "--all", "--limit", "7");
    expect_code(&o, 0);
    expect_scan_lines(o.out, 0, SCAN_KEYS, false);
    proc_output_free(&o);

    CTL(f, &o, "--json", "scan", "--prefix", "s:", "--all", "--limit", "50");
    expect_code(&o, 0);
    assert_int_equal(json_u64(o.out, "count"), SCAN_KEYS);
    assert_false(json_bool(o.out, "more"));
    assert_null(json_at(o.out, "token"));
    expect_json_str(o.out, "key", "s:0000"); /* the first item */
    assert_true(json_u64(o.out, "version") > 0);
    assert_int_equal(json_u64(o.out, "expire_at"), 0);
    proc_output_free(&o);

    /* One page, then the rest from its token. */
    CTL(f, &o, "--json", "scan", "--prefix", "s:", "--limit", "100");
    expect_code(&o, 0);
    assert_int_equal(json_u64(o.out, "count"), 100);
    assert_true(json_bool(o.out, "more"));
    char *token = json_str(o.out, "token");
    assert_non_null(token);
    proc_output_free(&o);
    CTL(f, &o, "scan", "--prefix", "s:", "--token", token, "--all");
    expect_code(&o, 0);
    expect_scan_lines(o.out, 100, SCAN_KEYS, false);
    proc_output_free(&o);
    free(token);

    CTL(f, &o, "scan", "--prefix", "s:", "--limit", "100");
    expect_code(&o, 0);
    expect_scan_lines(o.out, 0, 100, false);
    expect_err_has(&o, "--token");
    proc_output_free(&o);

    CTL(f, &o, "scan", "--start", "s:0100", "--end", "s:0200", "--all",
        "--keys-only");
    expect_code(&o, 0);
    expect_scan_lines(o.out, 100, 200, true);
    proc_output_free(&o);

    CTL(f, &o, "--json", "scan", "--prefix", "s:", "--keys-only", "--limit",
        "3");
    expect_code(&o, 0);
    assert_int_equal(json_u64(o.out, "count"), 3);
    assert_null(json_at(o.out, "value"));
    expect_json_str(o.out, "key", "s:0000");
    proc_output_free(&o);

    CTL(f, &o, "--json", "scan", "--prefix", "nothing:");
    expect_code(&o, 0);
    assert_int_equal(json_u64(o.out, "count"), 0);
    proc_output_free(&o);

    char *s = ok_out(f, "count", "s:", NULL, NULL);
    assert_int_equal(strtoull(s, NULL, 10), SCAN_KEYS);
    free(s);
}

/* ---- bench --------------------------------------------------------------- */

/* The JSON line of test name in text. */
static const char *
bench_line(const char *text, const char *name)
{
    char pat[64];
    snprintf(pat, sizeof(pat), "{\"test\":\"%s\"", name);
    const char *p = strstr(text, pat);
    if (p == NULL)
        print_message("# no %s line in %s\n", name, text);
    assert_non_null(p);
    return p;
}

static void
expect_bench_ok(const char *line, uint64_t requests)
{
    assert_true(json_num(line, "ops_per_sec") > 0);
    assert_int_equal(json_u64(line, "errors"), 0);
    if (requests)
        assert_int_equal(json_u64(line, "requests"), requests);
    double p50 = json_num(line, "p50_ms"), p99 = json_num(line, "p99_ms");
    double p999 = json_num(line, "p999_ms");
    /* A round trip to another process takes more than 5 us. */
    assert_true(p50 >= 0.005 && p50 <= p99 && p99 <= p999);
}

static void
test_shoalctl_bench(void **state)
{
    fx *f = *state;
    proc_output o;
    CTL(f, &o, "--json", "bench", "-n", "2000", "-c", "8", "-P", "4", "-t",
        "put,get,incr", "-r", "100", "-q");
    expect_code(&o, 0);
    const char *put = bench_line(o.out, "put");
    const char *get = bench_line(o.out, "get");
    const char *incr = bench_line(o.out, "incr");
    expect_bench_ok(put, 2000);
    expect_bench_ok(get, 2000);
    expect_bench_ok(incr, 2000);
    assert_int_equal(json_u64(put, "clients"), 8);
    assert_int_equal(json_u64(put, "pipeline"), 4);
    assert_int_equal(json_u64(put, "value_bytes"), 100);
    assert_int_equal(json_u64(get, "misses") <= 2000, 1);
    proc_output_free(&o);
    /* The counters add up: 2000 increments over counter:<0..99>. */
    CTL(f, &o, "scan", "--prefix", "counter:", "--all");
    expect_code(&o, 0);
    uint64_t sum = 0;
    for (const char *p = strchr(o.out, '\t'); p; p = strchr(p + 1, '\t'))
        sum += strtoull(p + 1, NULL, 10);
    assert_int_equal(sum, 2000);
    proc_output_free(&o);

    /* get alone fills its keys first, and the human line. */
    CTL(f, &o, "bench", "-n", "300", "-c", "4", "-t", "get", "-r", "50", "-d",
        "10");
    expect_code(&o, 0);
    expect_err_has(&o, "filling 50 keys");
    assert_non_null(strstr(o.out, "get: "));
    assert_non_null(strstr(o.out, " requests per second, p50="));
    assert_non_null(strstr(o.out, " ms p99="));
    assert_non_null(strstr(o.out, "(300 requests, 4 clients, pipeline 1, 10 "
                                  "byte values)"));
    assert_null(strstr(o.out, "misses"));
    proc_output_free(&o);

    CTL(f, &o, "--json", "bench", "--duration-s", "1", "-c", "2", "-t",
        "put,exists,del", "-q");
    expect_code(&o, 0);
    expect_bench_ok(bench_line(o.out, "put"), 0);
    expect_bench_ok(bench_line(o.out, "exists"), 0);
    assert_true(json_u64(bench_line(o.out, "del"), "requests") > 0);
    proc_output_free(&o);

    /* Errors are counted by status and set the exit code. */
    ctl_as(f, f->read_key, &o, "--json", "bench", "-n", "50", "-c", "2", "-t",
           "put", "-q", NULL);
    expect_code(&o, 4);
    put = bench_line(o.out, "put");
    assert_int_equal(json_u64(put, "errors"), 50);
    assert_int_equal(json_u64(put, "SHOAL_EPERM"), 50);
    proc_output_free(&o);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_shoalctl_usage_errors, dir_up,
                                        dir_down),
        cmocka_unit_test_setup_teardown(test_shoalctl_help_version, dir_up,
                                        dir_down),
        cmocka_unit_test_setup_teardown(test_shoalctl_keygen, dir_up, dir_down),
        cmocka_unit_test_setup_teardown(test_shoalctl_keygen_stdout, dir_up,
                                        dir_down),
        cmocka_unit_test_setup_teardown(test_shoalctl_put_get_del, fx_up,
                                        fx_down),
        cmocka_unit_test_setup_teardown(test_shoalctl_conditions, fx_up,
                                        fx_down),
        cmocka_unit_test_setup_teardown(test_shoalctl_incr, fx_up, fx_down),
        cmocka_unit_test_setup_teardown(test_shoalctl_ttl_exists, fx_up,
                                        fx_down),
        cmocka_unit_test_setup_teardown(test_shoalctl_count_stats, fx_up,
                                        fx_down),
        cmocka_unit_test_setup_teardown(test_shoalctl_human_output, fx_up,
                                        fx_down),
        cmocka_unit_test_setup_teardown(test_shoalctl_auth, fx_up, fx_down),
        cmocka_unit_test_setup_teardown(test_shoalctl_unavailable, fx_up,
                                        fx_down),
        cmocka_unit_test_setup_teardown(test_shoalctl_hex_and_stdin, fx_up,
                                        fx_down),
        cmocka_unit_test_setup_teardown(test_shoalctl_scan, fx_up, fx_down),
        cmocka_unit_test_setup_teardown(test_shoalctl_bench, fx_up, fx_down),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
