/*
 * ctl_bench.c -- `shoalctl bench`, our redis-benchmark.
 *
 * One process drives clients * pipeline concurrent operations through the
 * asynchronous API, as redis-benchmark's event loop does: each of the -c
 * logical clients runs -P chains, and a chain keeps one operation in
 * flight. The callback of a finished operation records its latency and
 * submits the chain's next one, so the load never waits for the main
 * thread; the main thread only prints progress and waits for the end.
 *
 * Each chain owns two shoal_op structs and alternates between them, so the
 * op submitted from a callback is never that callback's own op (shoal.h
 * gives an op back to its owner only once its callback has run). The other
 * op's callback is the one that submitted this op, so our code in it is
 * done; libshoal touches nothing of an op once its callback is called.
 *
 * Latency is measured per op from just before shoal_submit to the start of
 * its callback (clock_mono_ns), into a log-linear histogram (HDR style):
 *   values below 1024 us: one bucket per microsecond;
 *   from 2^e us up (e >= 10): 128 buckets per power of two, so a bucket is
 *   at most 1/128 (0.8 %) of its value wide.
 * Percentiles are bucket midpoints, within 0.5 us or 0.4 %.
 *
 * Keys are "key:<12 digits>" (one fixed key without -r, like
 * redis-benchmark; a random one of -r otherwise), counters for incr
 * "counter:<12 digits>", so that incr never meets a put's non-numeric
 * value. A get, exists or del test that does not follow a put in the same
 * run first fills the key space (and says so), or it would read nothing.
 * A get or del of a missing key is a miss, not an error. Any error makes
 * the exit code non-zero.
 */
#include "ctl_int.h"

#include "proto/clock.h"
#include "proto/mem.h"

#include <pthread.h>
#include <stdatomic.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define HIST_LINEAR   1024 /* 1 us buckets below this many us */
#define HIST_SUB_BITS 7
#define HIST_SUB      (1u << HIST_SUB_BITS)
#define HIST_MAX_EXP  40 /* 2^40 us = 12 days: the last bucket holds more */
#define HIST_N        (HIST_LINEAR + (HIST_MAX_EXP - 10) * HIST_SUB)
#define N_STATUS      32 /* errors by status; larger values share the last */

static const char bench_help[] =
    "usage: shoalctl [global options] bench [options]\n"
    "\n"
    "Load generator in the manner of redis-benchmark; every op is sealed\n"
    "and travels through libshoal's asynchronous API.\n"
    "  -c N            logical clients (default 50)\n"
    "  -n N            requests per test (default 100000)\n"
    "  --duration-s S  run each test S seconds instead of -n requests\n"
    "  -d N            value size in bytes for put (default 100)\n"
    "  -r N            random keys key:<0..N-1> (default: one key)\n"
    "  -t LIST         tests, comma-separated: put,get,incr,del,exists\n"
    "                  (default put,get); get, exists and del without an\n"
    "                  earlier put first fill the key space\n"
    "  -P N            ops in flight per client (pipeline, default 1)\n"
    "  -q, --quiet     no progress line on stderr\n"
    "Prints per test: \"<test>: <ops/s> requests per second, p50= p99= "
    "p999=\n"
    "(<n> requests, <c> clients, pipeline <P>, <d> byte values)\".\n"
    "With --json one object per test: {\"test\",\"ops_per_sec\",\"p50_ms\",\n"
    "\"p99_ms\",\"p999_ms\",\"requests\" (completed),\"errors\" (count),\n"
    "\"errors_by_status\":{\"SHOAL_E...\":count},\"misses\" (get/del of a "
    "missing\n"
    "key),\"clients\",\"pipeline\",\"value_bytes\",\"keyspace\" (0: one "
    "key),\n"
    "\"seconds\"}. Exit code: 0 when no op failed, else that of the most\n"
    "frequent error.\n";

typedef struct bench_cfg {
    uint64_t clients, requests, value_bytes, keyspace, pipeline, duration_s;
    bool has_requests, has_keyspace, has_duration, quiet, help;
    const char *tests;
} bench_cfg;

typedef struct bench_test {
    const char *name;
    shoal_op_kind kind;
    const char *key_prefix;
    bool needs_keys; /* reads or deletes keys a put wrote */
} bench_test;

static const bench_test bench_tests[] = {
    {"put", SHOAL_OP_PUT, "key:", false},
    {"get", SHOAL_OP_GET, "key:", true},
    {"incr", SHOAL_OP_INCR, "counter:", false},
    {"del", SHOAL_OP_DEL, "key:", true},
    {"exists", SHOAL_OP_EXISTS, "key:", true},
};

typedef struct bench_run bench_run;

/* One chain of operations: one op in flight at a time. */
typedef struct bench_chain {
    bench_run *run;
    shoal_op ops[2];      /* alternating, see the top of the file */
    char keys[2][40];     /* ops[i].key */
    uint64_t start_ns[2]; /* submit time of ops[i] */
    uint64_t rng;         /* xorshift state; touched by one op at a time */
} bench_chain;

/* One test's run. The counters are written by libshoal's threads. */
struct bench_run {
    shoal *db;
    const bench_test *test;
    const uint8_t *value; /* put */
    size_t vlen;
    uint64_t keyspace;    /* 0: the one key */
    bool fill;            /* keys 0..limit-1 in order (filling) */
    uint64_t limit;       /* ops to issue */
    uint64_t deadline_ns; /* 0: none */
    _Atomic uint64_t issued, done, misses;
    _Atomic uint64_t errors[N_STATUS];
    _Atomic uint64_t hist[HIST_N];
    _Atomic size_t active; /* chains still running */
    uint64_t t0_ns, t_end_ns;
    pthread_mutex_t mu; /* guards t_end_ns with cv */
    pthread_cond_t cv;  /* signalled when active reaches 0 */
    bench_chain *chains;
    size_t n_chains;
};

/* ---- histogram ----------------------------------------------------------- */

static size_t
hist_index(uint64_t us)
{
    if (us < HIST_LINEAR)
        return (size_t) us;
    unsigned e = 63u - (unsigned) __builtin_clzll(us); /* >= 10 */
    if (e >= HIST_MAX_EXP)
        return HIST_N - 1;
    return HIST_LINEAR + (e - 10) * HIST_SUB +
           (size_t) ((us >> (e - HIST_SUB_BITS)) & (HIST_SUB - 1));
}

/* The midpoint of bucket i in microseconds. */
static double
hist_mid_us(size_t i)
{
    if (i < HIST_LINEAR)
        return (double) i + 0.5;
    size_t j = i - HIST_LINEAR;
    unsigned e = 10 + (unsigned) (j / HIST_SUB);
    uint64_t width = (uint64_t) 1 << (e - HIST_SUB_BITS);
    uint64_t low = ((uint64_t) 1 << e) + (j % HIST_SUB) * width;
    return (double) low + (double) width / 2.0;
}

/* The p-th quantile (0 < p <= 1) in milliseconds; 0 without samples. */
static double
hist_quantile_ms(bench_run *r, double p)
{
    uint64_t total = 0;
    for (size_t i = 0; i < HIST_N; i++)
        total += atomic_load_explicit(&r->hist[i], memory_order_relaxed);
    if (total == 0)
        return 0.0;
    uint64_t rank = (uint64_t) (p * (double) total + 0.999999);
    if (rank == 0)
        rank = 1;
    uint64_t seen = 0;
    for (size_t i = 0; i < HIST_N; i++) {
        seen += atomic_load_explicit(&r->hist[i], memory_order_relaxed);
        if (seen >= rank)
            return hist_mid_us(i) / 1000.0;
    }
    return hist_mid_us(HIST_N - 1) / 1000.0;
}

/* ---- the chains ---------------------------------------------------------- */

static uint64_t
xorshift(uint64_t *s)
{
    uint64_t x = *s;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    *s = x;
    return x;
}

static void chain_done(shoal_op *op, void *arg);

static void
chain_finished(bench_run *r)
{
    if (atomic_fetch_sub(&r->active, 1) != 1)
        return;
    pthread_mutex_lock(&r->mu);
    r->t_end_ns = clock_mono_ns();
    pthread_cond_signal(&r->cv);
    pthread_mutex_unlock(&r->mu);
}

static void
count_status(bench_run *r, shoal_err rc)
{
    if (rc == SHOAL_OK)
        return;
    if (rc == SHOAL_ENOTFOUND &&
        (r->test->kind == SHOAL_OP_GET || r->test->kind == SHOAL_OP_DEL)) {
        atomic_fetch_add_explicit(&r->misses, 1, memory_order_relaxed);
        return;
    }
    size_t i = (size_t) rc < N_STATUS ? (size_t) rc : N_STATUS - 1;
    atomic_fetch_add_explicit(&r->errors[i], 1, memory_order_relaxed);
}

/* Fill ops[i] with the next operation of the run. */
static void
chain_prepare(bench_chain *ch, unsigned i, uint64_t seq)
{
    bench_run *r = ch->run;
    shoal_op *op = &ch->ops[i];
    uint64_t n = r->fill       ? seq
                 : r->keyspace ? xorshift(&ch->rng) % r->keyspace
                               : 0;
    int len = snprintf(ch->keys[i], sizeof(ch->keys[i]), "%s%012llu",
                       r->test->key_prefix, (unsigned long long) n);
    memset(op, 0, sizeof(*op));
    op->kind = r->fill ? SHOAL_OP_PUT : r->test->kind;
    op->key = ch->keys[i];
    op->klen = (size_t) len;
    if (op->kind == SHOAL_OP_PUT) {
        op->val = r->value;
        op->vlen = r->vlen;
    }
    op->delta = 1;
}

/* Submit the chain's next op into ops[i]; false when the chain is over
 * (count or time reached, or the submit failed: counted as an error). */
static bool
chain_next(bench_chain *ch, unsigned i)
{
    bench_run *r = ch->run;
    if (r->deadline_ns && clock_mono_ns() >= r->deadline_ns)
        return false;
    uint64_t seq = atomic_fetch_add(&r->issued, 1);
    if (seq >= r->limit)
        return false;
    chain_prepare(ch, i, seq);
    ch->start_ns[i] = clock_mono_ns();
    shoal_err rc = shoal_submit(r->db, &ch->ops[i], chain_done, ch);
    if (rc == SHOAL_OK)
        return true;
    count_status(r, rc);
    atomic_fetch_add(&r->done, 1);
    return false;
}

static void
chain_done(shoal_op *op, void *arg)
{
    bench_chain *ch = arg;
    bench_run *r = ch->run;
    unsigned i = op == &ch->ops[0] ? 0 : 1;
    uint64_t ns = clock_mono_ns() - ch->start_ns[i];
    atomic_fetch_add_explicit(&r->hist[hist_index(ns / 1000)], 1,
                              memory_order_relaxed);
    count_status(r, op->status);
    atomic_fetch_add(&r->done, 1);
    /* op is not touched after this point: libshoal owns it until we
     * return. */
    if (!chain_next(ch, i ^ 1))
        chain_finished(r);
}

/* ---- one test ------------------------------------------------------------ */

static uint64_t
total_errors(bench_run *r)
{
    uint64_t n = 0;
    for (size_t i = 0; i < N_STATUS; i++)
        n += atomic_load(&r->errors[i]);
    return n;
}

/* Print progress: on a terminal a line rewritten in place, otherwise one
 * line per call (the caller calls at most once a second then). */
static void
progress(const bench_run *r, const char *name, bool tty, uint64_t *last_done,
         uint64_t *last_ns)
{
    uint64_t now = clock_mono_ns(), done = atomic_load(&r->done);
    double dt = (double) (now - *last_ns) / 1e9;
    double rate = dt > 0 ? (double) (done - *last_done) / dt : 0.0;
    double overall = (double) done / ((double) (now - r->t0_ns) / 1e9);
    char of[48];
    if (r->deadline_ns == 0)
        snprintf(of, sizeof(of), "/%llu requests",
                 (unsigned long long) r->limit);
    else
        snprintf(of, sizeof(of), " requests, %.0f s left",
                 now < r->deadline_ns ? (double) (r->deadline_ns - now) / 1e9
                                      : 0.0);
    fprintf(stderr, "%s%s: rps=%.1f (overall: %.1f) %llu%s%s",
            tty ? "\r\033[K" : "", name, rate, overall,
            (unsigned long long) done, of, tty ? "" : "\n");
    fflush(stderr);
    *last_done = done;
    *last_ns = now;
}

/* Wait for every chain to finish, printing progress. */
static void
run_wait(bench_run *r, const char *name, bool quiet)
{
    bool tty = isatty(STDERR_FILENO) == 1;
    uint64_t period_ns = tty ? 250000000ull : 1000000000ull;
    uint64_t last_done = 0, last_ns = r->t0_ns;
    pthread_mutex_lock(&r->mu);
    while (atomic_load(&r->active) > 0) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        uint64_t t = (uint64_t) ts.tv_sec * 1000000000ull +
                     (uint64_t) ts.tv_nsec + period_ns;
        ts.tv_sec = (time_t) (t / 1000000000ull);
        ts.tv_nsec = (long) (t % 1000000000ull);
        pthread_cond_timedwait(&r->cv, &r->mu, &ts);
        if (atomic_load(&r->active) == 0 || quiet)
            continue;
        pthread_mutex_unlock(&r->mu);
        progress(r, name, tty, &last_done, &last_ns);
        pthread_mutex_lock(&r->mu);
    }
    pthread_mutex_unlock(&r->mu);
    if (tty && !quiet) {
        fputs("\r\033[K", stderr);
        fflush(stderr);
    }
}

static int
run_init(bench_run *r)
{
    pthread_condattr_t ca;
    if (pthread_condattr_init(&ca) != 0)
        return -1;
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    int rc = pthread_cond_init(&r->cv, &ca);
    pthread_condattr_destroy(&ca);
    if (rc != 0)
        return -1;
    if (pthread_mutex_init(&r->mu, NULL) != 0) {
        pthread_cond_destroy(&r->cv);
        return -1;
    }
    return 0;
}

/* Run r to the end: start every chain, wait. r->chains is set up. */
static void
run_go(bench_run *r, const char *name, bool quiet)
{
    atomic_store(&r->active, r->n_chains);
    r->t0_ns = clock_mono_ns();
    for (size_t i = 0; i < r->n_chains; i++) {
        bench_chain *ch = &r->chains[i];
        ch->run = r;
        ch->rng = 0x9e3779b97f4a7c15ull * (i + 1) ^ r->t0_ns;
        if (ch->rng == 0)
            ch->rng = 1;
        if (!chain_next(ch, 0))
            chain_finished(r);
    }
    run_wait(r, name, quiet);
}

/* ---- reporting ----------------------------------------------------------- */

static void
report_errors(ctl_sb *sb, bench_run *r, bool json)
{
    bool first = true;
    for (size_t i = 0; i < N_STATUS; i++) {
        uint64_t n = atomic_load(&r->errors[i]);
        if (n == 0)
            continue;
        const char *name =
            i == N_STATUS - 1 ? "SHOAL_E?" : shoal_errname((shoal_err) i);
        if (json)
            ctl_sb_printf(sb, "%s\"%s\":%llu", first ? "" : ",", name,
                          (unsigned long long) n);
        else
            ctl_sb_printf(sb, " %s=%llu", name, (unsigned long long) n);
        first = false;
    }
}

static void
report(ctl *c, const bench_cfg *cfg, bench_run *r, ctl_sb *sb)
{
    uint64_t done = atomic_load(&r->done), errs = total_errors(r);
    uint64_t misses = atomic_load(&r->misses);
    double secs = (double) (r->t_end_ns - r->t0_ns) / 1e9;
    double ops = secs > 0 ? (double) done / secs : 0.0;
    double p50 = hist_quantile_ms(r, 0.50), p99 = hist_quantile_ms(r, 0.99);
    double p999 = hist_quantile_ms(r, 0.999);
    if (c->json) {
        ctl_sb_printf(sb,
                      "{\"test\":\"%s\",\"ops_per_sec\":%.2f,\"p50_ms\":%.3f,"
                      "\"p99_ms\":%.3f,\"p999_ms\":%.3f,\"requests\":%llu,"
                      "\"errors\":%llu,\"errors_by_status\":{",
                      r->test->name, ops, p50, p99, p999,
                      (unsigned long long) done, (unsigned long long) errs);
        report_errors(sb, r, true);
        ctl_sb_printf(sb,
                      "},\"misses\":%llu,\"clients\":%llu,\"pipeline\":%llu,"
                      "\"value_bytes\":%llu,\"keyspace\":%llu,"
                      "\"seconds\":%.3f}\n",
                      (unsigned long long) misses,
                      (unsigned long long) cfg->clients,
                      (unsigned long long) cfg->pipeline,
                      (unsigned long long) cfg->value_bytes,
                      (unsigned long long) r->keyspace, secs);
        return;
    }
    ctl_sb_printf(sb,
                  "%s: %.2f requests per second, p50=%.3f ms p99=%.3f ms "
                  "p999=%.3f ms (%llu requests, %llu clients, pipeline %llu, "
                  "%llu byte values)\n",
                  r->test->name, ops, p50, p99, p999, (unsigned long long) done,
                  (unsigned long long) cfg->clients,
                  (unsigned long long) cfg->pipeline,
                  (unsigned long long) cfg->value_bytes);
    if (errs) {
        ctl_sb_printf(sb, "  errors: %llu:", (unsigned long long) errs);
        report_errors(sb, r, false);
        ctl_sb_put(sb, "\n", 1);
    }
    if (misses)
        ctl_sb_printf(sb, "  misses: %llu (key not found)\n",
                      (unsigned long long) misses);
}

/* The exit code of the most frequent error of r, or CTL_EXIT_OK. */
static int
run_exit(bench_run *r)
{
    uint64_t best = 0;
    int ec = CTL_EXIT_OK;
    for (size_t i = 0; i < N_STATUS; i++) {
        uint64_t n = atomic_load(&r->errors[i]);
        if (n > best) {
            best = n;
            ec =
                i == N_STATUS - 1 ? CTL_EXIT_ERR : ctl_exit_code((shoal_err) i);
        }
    }
    return ec;
}

/* ---- driver -------------------------------------------------------------- */

/* Make a zeroed run with its chains (mem_calloc: the atomics start at 0). */
static int
run_new(ctl *c, const bench_cfg *cfg, bench_run **out)
{
    *out = NULL;
    bench_run *r = mem_calloc(1, sizeof(*r));
    size_t n = (size_t) (cfg->clients * cfg->pipeline);
    bench_chain *chains = mem_calloc(n, sizeof(*chains));
    if (r == NULL || chains == NULL || run_init(r) != 0) {
        mem_free(r);
        mem_free(chains);
        return ctl_fail(c, SHOAL_ENOMEM, "bench state");
    }
    r->db = c->db;
    r->chains = chains;
    r->n_chains = n;
    *out = r;
    return CTL_EXIT_OK;
}

static void
run_free(bench_run *r)
{
    if (r == NULL)
        return;
    pthread_mutex_destroy(&r->mu);
    pthread_cond_destroy(&r->cv);
    mem_free(r->chains);
    mem_free(r);
}

/* Put every key of the key space once, so that a get has something to
 * read. */
static int
fill_keys(ctl *c, const bench_cfg *cfg, const bench_test *t,
          const uint8_t *value)
{
    uint64_t n = cfg->has_keyspace ? cfg->keyspace : 1;
    if (!cfg->quiet)
        fprintf(stderr,
                "%s: no put test ran before it: filling %llu key%s "
                "first\n",
                t->name, (unsigned long long) n, n == 1 ? "" : "s");
    bench_run *r = NULL;
    int ec = run_new(c, cfg, &r);
    if (ec != CTL_EXIT_OK)
        return ec;
    r->test = &bench_tests[0];
    r->fill = true;
    r->value = value;
    r->vlen = (size_t) cfg->value_bytes;
    r->limit = n;
    run_go(r, "fill", cfg->quiet);
    uint64_t errs = total_errors(r);
    ec = run_exit(r);
    if (errs)
        fprintf(stderr,
                "shoalctl: bench: filling the keys failed: %llu "
                "errors\n",
                (unsigned long long) errs);
    run_free(r);
    return ec;
}

static int
run_test(ctl *c, const bench_cfg *cfg, const bench_test *t,
         const uint8_t *value)
{
    bench_run *r = NULL;
    int ec = run_new(c, cfg, &r);
    if (ec != CTL_EXIT_OK)
        return ec;
    r->test = t;
    r->value = value;
    r->vlen = (size_t) cfg->value_bytes;
    r->keyspace = cfg->has_keyspace ? cfg->keyspace : 0;
    r->limit = cfg->has_duration ? UINT64_MAX : cfg->requests;
    if (cfg->has_duration)
        r->deadline_ns = clock_mono_ns() + cfg->duration_s * 1000000000ull;
    run_go(r, t->name, cfg->quiet);
    ctl_sb sb = {0};
    report(c, cfg, r, &sb);
    ec = ctl_sb_flush(c, &sb, stdout);
    ctl_sb_free(&sb);
    if (ec == CTL_EXIT_OK)
        ec = run_exit(r);
    run_free(r);
    return ec;
}

/* Parse -t into tests[] (in the order given). */
static int
parse_tests(ctl *c, const char *list, const bench_test **tests, size_t *n)
{
    size_t count = 0;
    const char *p = list;
    for (;;) {
        size_t len = strcspn(p, ",");
        const bench_test *found = NULL;
        for (size_t i = 0; i < sizeof(bench_tests) / sizeof(bench_tests[0]);
             i++)
            if (strlen(bench_tests[i].name) == len &&
                strncmp(bench_tests[i].name, p, len) == 0)
                found = &bench_tests[i];
        if (found == NULL)
            return ctl_usage(c,
                             "-t: unknown test '%.*s' (put, get, incr, "
                             "del, exists)",
                             (int) len, p);
        if (count == 16)
            return ctl_usage(c, "-t: at most 16 tests");
        tests[count++] = found;
        if (p[len] == '\0')
            break;
        p += len + 1;
    }
    *n = count;
    return CTL_EXIT_OK;
}

static int
bench_all(ctl *c, const bench_cfg *cfg, const bench_test **tests, size_t n)
{
    uint8_t *value = mem_alloc((size_t) cfg->value_bytes + 1);
    if (value == NULL)
        return ctl_fail(c, SHOAL_ENOMEM, "value buffer");
    memset(value, 'x', (size_t) cfg->value_bytes);
    bool have_keys = false;
    int ec = CTL_EXIT_OK;
    for (size_t i = 0; i < n; i++) {
        int tec = CTL_EXIT_OK;
        if (tests[i]->needs_keys && !have_keys) {
            tec = fill_keys(c, cfg, tests[i], value);
            have_keys = tec == CTL_EXIT_OK;
        }
        if (tec == CTL_EXIT_OK)
            tec = run_test(c, cfg, tests[i], value);
        if (tests[i]->kind == SHOAL_OP_PUT)
            have_keys = true;
        if (ec == CTL_EXIT_OK)
            ec = tec;
    }
    mem_free(value);
    return ec;
}

int
ctl_cmd_bench(ctl *c, int argc, char **argv)
{
    bench_cfg cfg = {.clients = 50,
                     .requests = 100000,
                     .value_bytes = 100,
                     .pipeline = 1,
                     .tests = "put,get"};
    const ctl_opt opts[] = {
        {"--clients", "-c", CTL_OPT_U64, &cfg.clients, NULL, 1, 10000, NULL},
        {"--requests", "-n", CTL_OPT_U64, &cfg.requests, &cfg.has_requests, 1,
         UINT64_MAX / 2, NULL},
        {"--data-size", "-d", CTL_OPT_U64, &cfg.value_bytes, NULL, 0,
         (uint64_t) 16 << 20, NULL},
        {"--keyspace", "-r", CTL_OPT_U64, &cfg.keyspace, &cfg.has_keyspace, 1,
         UINT64_MAX / 2, NULL},
        {"--tests", "-t", CTL_OPT_STR, &cfg.tests, NULL, 0, 0, NULL},
        {"--pipeline", "-P", CTL_OPT_U64, &cfg.pipeline, NULL, 1, 1000, NULL},
        {"--duration-s", NULL, CTL_OPT_U64, &cfg.duration_s, &cfg.has_duration,
         1, 86400, NULL},
        {"--quiet", "-q", CTL_OPT_FLAG, &cfg.quiet, NULL, 0, 0, NULL},
        {"--help", "-h", CTL_OPT_FLAG, &cfg.help, NULL, 0, 0, NULL},
        {NULL, NULL, CTL_OPT_FLAG, NULL, NULL, 0, 0, NULL},
    };
    const bench_test *tests[16];
    size_t n = 0;
    int ec = ctl_parse(c, argc, argv, opts, NULL, 0, 0, NULL);
    if (ec == CTL_EXIT_OK && cfg.help) {
        fputs(bench_help, stdout);
        return CTL_EXIT_OK;
    }
    if (ec == CTL_EXIT_OK && cfg.has_requests && cfg.has_duration)
        ec = ctl_usage(c, "-n and --duration-s exclude each other");
    if (ec == CTL_EXIT_OK && cfg.clients * cfg.pipeline > 100000)
        ec = ctl_usage(c, "-c times -P is at most 100000");
    if (ec == CTL_EXIT_OK)
        ec = parse_tests(c, cfg.tests, tests, &n);
    if (ec == CTL_EXIT_OK)
        ec = ctl_connect(c);
    if (ec == CTL_EXIT_OK)
        ec = bench_all(c, &cfg, tests, n);
    return ec;
}
