/*
 * test_metrics.c -- node/metrics.h: counters and histograms observed, then
 * rendered and read back from the Prometheus text; the text's shape (HELP
 * and TYPE before every family, one sample per line); exact sums from four
 * concurrent observers; the engine's figures; out-of-memory while rendering.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "node/metrics.h"
#include "proto/mem.h"
#include "storage/store.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const ops[METRICS_N_OPS] = {
    "get",   "put",  "del",   "incr",  "ttl", "exists",
    "batch", "scan", "count", "stats", "map", "other"};

static const char *const les[] = {
    "0.00005", "0.0001", "0.00025", "0.0005", "0.001", "0.0025", "0.005",
    "0.01",    "0.025",  "0.05",    "0.1",    "0.25",  "1",      "+Inf"};
#define N_LES (sizeof(les) / sizeof(les[0]))

static char *
render(metrics *m, store *st)
{
    char *text = NULL;
    size_t len = 0;
    assert_int_equal(metrics_render(m, st, &text, &len), SHOAL_OK);
    assert_non_null(text);
    assert_int_equal(strlen(text), len);
    return text;
}

/* The value of the sample whose series (name + labels) is exactly series;
 * -1 if absent. Fails the test on a duplicate. */
static double
sample(const char *text, const char *series)
{
    size_t n = strlen(series);
    double v = -1;
    int seen = 0;
    for (const char *p = text; *p != '\0';) {
        const char *nl = strchr(p, '\n');
        assert_non_null(nl); /* every line ends with a newline */
        if ((size_t) (nl - p) > n && strncmp(p, series, n) == 0 &&
            p[n] == ' ') {
            char *end;
            v = strtod(p + n + 1, &end);
            assert_ptr_equal(end, nl);
            seen++;
        }
        p = nl + 1;
    }
    assert_true(seen <= 1);
    return v;
}

/* name{op="op"} */
static double
op_sample(const char *text, const char *name, const char *op)
{
    char series[256];
    snprintf(series, sizeof(series), "%s{op=\"%s\"}", name, op);
    return sample(text, series);
}

/* '# HELP f', then '# TYPE f', then samples of f only; every family once;
 * "le" buckets of a histogram never decrease. */
static void
check_shape(const char *text)
{
    static char seen[64][128];
    size_t n_seen = 0;
    char family[128] = "";
    int state = 0; /* 0 expect HELP, 1 expect TYPE, 2 in samples */
    for (const char *p = text; *p != '\0';) {
        const char *nl = strchr(p, '\n');
        char line[512];
        size_t n = (size_t) (nl - p);
        assert_true(n < sizeof(line));
        memcpy(line, p, n);
        line[n] = '\0';
        p = nl + 1;
        if (strncmp(line, "# HELP ", 7) == 0) {
            assert_true(state != 1);
            assert_int_equal(sscanf(line + 7, "%127s", family), 1);
            for (size_t i = 0; i < n_seen; i++) /* each family once */
                assert_string_not_equal(seen[i], family);
            assert_true(n_seen < 64);
            memcpy(seen[n_seen++], family, sizeof(family));
            state = 1;
        } else if (strncmp(line, "# TYPE ", 7) == 0) {
            char name[128], type[32];
            assert_int_equal(state, 1);
            assert_int_equal(sscanf(line + 7, "%127s %31s", name, type), 2);
            assert_string_equal(name, family);
            assert_true(strcmp(type, "counter") == 0 ||
                        strcmp(type, "gauge") == 0 ||
                        strcmp(type, "histogram") == 0);
            state = 2;
        } else {
            assert_int_equal(state, 2);
            assert_true(strncmp(line, family, strlen(family)) == 0);
            char *sp = strrchr(line, ' ');
            assert_non_null(sp);
            char *end;
            double v = strtod(sp + 1, &end);
            assert_true(*end == '\0' && v >= 0);
        }
    }
}

static void
test_metrics_empty_render(void **state)
{
    (void) state;
    metrics *m;
    assert_int_equal(metrics_open(&m), SHOAL_OK);
    char *text = render(m, NULL);
    check_shape(text);
    for (unsigned i = 0; i < METRICS_N_OPS; i++) {
        assert_true(op_sample(text, "shoal_requests_total", ops[i]) == 0);
        assert_true(op_sample(text, "shoal_request_duration_seconds_count",
                              ops[i]) == 0);
        assert_true(
            op_sample(text, "shoal_request_duration_seconds_sum", ops[i]) == 0);
    }
    assert_null(strstr(text, "shoal_request_errors_total{"));
    assert_non_null(strstr(text, "# TYPE shoal_request_errors_total counter"));
    assert_null(strstr(text, "shoal_keys")); /* no store given */
    assert_int_equal(metrics_requests(m), 0);
    mem_free(text);
    metrics_close(m);
    metrics_close(NULL);
}

/* Latencies across every bucket edge: 50 -> le 0.00005 (bounds inclusive),
 * 51 -> 0.0001, ..., 2000000 -> +Inf only. */
static void
test_metrics_histogram(void **state)
{
    (void) state;
    static const uint64_t lat[] = {0,      50,      51,      100,     101,
                                   250,    999,     1000,    2500,    7000,
                                   10000,  25000,   49999,   100000,  250000,
                                   999999, 1000000, 1000001, 2000000, 0};
    static const uint64_t bound[N_LES - 1] = {
        50,    100,   250,   500,    1000,   2500,   5000,
        10000, 25000, 50000, 100000, 250000, 1000000};
    size_t n = sizeof(lat) / sizeof(lat[0]);
    uint64_t sum = 0;
    metrics *m;
    assert_int_equal(metrics_open(&m), SHOAL_OK);
    for (size_t i = 0; i < n; i++) {
        metrics_observe(m, METRICS_OP_PUT, SHOAL_OK, lat[i]);
        sum += lat[i];
    }
    metrics_observe(m, METRICS_OP_GET, SHOAL_ENOTFOUND, 75);
    char *text = render(m, NULL);
    check_shape(text);
    double prev = 0;
    for (size_t k = 0; k < N_LES; k++) {
        char series[128];
        snprintf(series, sizeof(series),
                 "shoal_request_duration_seconds_bucket{op=\"put\",le=\"%s\"}",
                 les[k]);
        uint64_t want = 0;
        for (size_t i = 0; i < n; i++)
            want += k == N_LES - 1 || lat[i] <= bound[k];
        double v = sample(text, series);
        assert_true(v == (double) want);
        assert_true(v >= prev); /* cumulative, monotone */
        prev = v;
    }
    assert_true(prev == (double) n); /* +Inf holds everything */
    assert_true(
        sample(text, "shoal_request_duration_seconds_count{op=\"put\"}") ==
        (double) n);
    double s = sample(text, "shoal_request_duration_seconds_sum{op=\"put\"}");
    assert_true(s > (double) sum / 1e6 - 1e-9 && s < (double) sum / 1e6 + 1e-9);
    assert_true(sample(text, "shoal_requests_total{op=\"put\"}") == (double) n);
    /* The get landed in the 0.0001 bucket, not the 0.00005 one. */
    assert_true(sample(text, "shoal_request_duration_seconds_bucket{op=\"get\","
                             "le=\"0.00005\"}") == 0);
    assert_true(sample(text, "shoal_request_duration_seconds_bucket{op=\"get\","
                             "le=\"0.0001\"}") == 1);
    assert_int_equal(metrics_requests(m), n + 1);
    mem_free(text);
    metrics_close(m);
}

static void
test_metrics_errors_by_code(void **state)
{
    (void) state;
    metrics *m;
    assert_int_equal(metrics_open(&m), SHOAL_OK);
    for (int i = 0; i < 3; i++)
        metrics_observe(m, METRICS_OP_GET, SHOAL_ENOTFOUND, 10);
    metrics_observe(m, METRICS_OP_GET, SHOAL_OK, 10);
    metrics_observe(m, METRICS_OP_PUT, SHOAL_EREADONLY, 10);
    metrics_observe(m, METRICS_OP_PUT, SHOAL_ETOOLARGE, 10);
    metrics_observe(m, METRICS_OP_PUT, (shoal_err) 999, 10); /* unknown */
    metrics_observe(m, (metrics_op) 77, SHOAL_EINVAL, 10);   /* -> other */
    char *text = render(m, NULL);
    check_shape(text);
    assert_true(sample(text, "shoal_request_errors_total{op=\"get\","
                             "code=\"ENOTFOUND\"}") == 3);
    assert_true(sample(text, "shoal_request_errors_total{op=\"put\","
                             "code=\"EREADONLY\"}") == 1);
    assert_true(sample(text, "shoal_request_errors_total{op=\"put\","
                             "code=\"ETOOLARGE\"}") == 1);
    assert_true(sample(text, "shoal_request_errors_total{op=\"put\","
                             "code=\"UNKNOWN\"}") == 1);
    assert_true(sample(text, "shoal_request_errors_total{op=\"other\","
                             "code=\"EINVAL\"}") == 1);
    assert_true(sample(text, "shoal_requests_total{op=\"get\"}") == 4);
    assert_true(sample(text, "shoal_requests_total{op=\"other\"}") == 1);
    /* Only non-zero codes appear, and never OK. */
    assert_null(strstr(text, "code=\"OK\""));
    assert_null(strstr(text, "code=\"EEXISTS\""));
    size_t lines = 0;
    for (const char *p = text; (p = strstr(p, "shoal_request_errors_total{"));
         p++)
        lines++;
    assert_int_equal(lines, 5);
    mem_free(text);
    metrics_close(m);
}

static void
test_metrics_frame_events(void **state)
{
    (void) state;
    static const struct {
        metrics_ev ev;
        const char *series;
    } t[] = {
        {METRICS_FRAMES_IN, "shoal_frames_total{dir=\"in\"}"},
        {METRICS_FRAMES_OUT, "shoal_frames_total{dir=\"out\"}"},
        {METRICS_BYTES_IN, "shoal_frame_bytes_total{dir=\"in\"}"},
        {METRICS_BYTES_OUT, "shoal_frame_bytes_total{dir=\"out\"}"},
        {METRICS_BAD_HEADER,
         "shoal_frames_refused_total{reason=\"bad_header\"}"},
        {METRICS_BAD_KEY, "shoal_frames_refused_total{reason=\"bad_key\"}"},
        {METRICS_BAD_TAG, "shoal_frames_refused_total{reason=\"bad_tag\"}"},
        {METRICS_REPLAYED, "shoal_frames_refused_total{reason=\"replayed\"}"},
        {METRICS_PLAIN_REFUSED,
         "shoal_frames_refused_total{reason=\"plaintext\"}"},
        {METRICS_BAD_DECODE,
         "shoal_frames_refused_total{reason=\"bad_decode\"}"},
        {METRICS_DENIED, "shoal_requests_denied_total"},
        {METRICS_COMMIT_FAILED, "shoal_commit_failures_total"},
    };
    _Static_assert(sizeof(t) / sizeof(t[0]) == METRICS_N_EVS,
                   "every event is rendered");
    metrics *m;
    assert_int_equal(metrics_open(&m), SHOAL_OK);
    for (size_t i = 0; i < METRICS_N_EVS; i++)
        metrics_add(m, t[i].ev, (uint64_t) (i + 1) * 1000 + 7);
    metrics_add(m, METRICS_N_EVS, 5);   /* out of range: ignored */
    metrics_add(m, (metrics_ev) -1, 5); /* likewise */
    char *text = render(m, NULL);
    check_shape(text);
    for (size_t i = 0; i < METRICS_N_EVS; i++)
        assert_true(sample(text, t[i].series) == (double) ((i + 1) * 1000 + 7));
    mem_free(text);
    metrics_close(m);
}

static void
test_metrics_op_from_name(void **state)
{
    (void) state;
    for (unsigned i = 0; i < METRICS_N_OPS; i++)
        assert_int_equal(metrics_op_from_name(ops[i]), i);
    assert_int_equal(metrics_op_from_name("delete"), METRICS_OP_DEL);
    assert_int_equal(metrics_op_from_name("unknown"), METRICS_OP_OTHER);
    assert_int_equal(metrics_op_from_name(""), METRICS_OP_OTHER);
    assert_int_equal(metrics_op_from_name("GET"), METRICS_OP_OTHER);
    assert_int_equal(metrics_op_from_name(NULL), METRICS_OP_OTHER);
}

#define N_THREADS  4
#define PER_THREAD 50000

typedef struct worker {
    metrics *m;
    unsigned id;
} worker;

static void *
observe_loop(void *arg)
{
    worker *w = arg;
    for (unsigned i = 0; i < PER_THREAD; i++) {
        metrics_op op = (metrics_op) ((i + w->id) % METRICS_N_OPS);
        shoal_err st = i % 3 == 0 ? SHOAL_ENOTFOUND : SHOAL_OK;
        metrics_observe(w->m, op, st, (uint64_t) (i % 2000));
        metrics_add(w->m, METRICS_FRAMES_IN, 1);
        metrics_add(w->m, METRICS_BYTES_IN, 3);
    }
    return NULL;
}

/* Four threads observe at once: every counter sums exactly. */
static void
test_metrics_concurrent_observers(void **state)
{
    (void) state;
    metrics *m;
    pthread_t th[N_THREADS];
    worker w[N_THREADS];
    assert_int_equal(metrics_open(&m), SHOAL_OK);
    for (unsigned i = 0; i < N_THREADS; i++) {
        w[i] = (worker){.m = m, .id = i};
        assert_int_equal(pthread_create(&th[i], NULL, observe_loop, &w[i]), 0);
    }
    for (unsigned i = 0; i < N_THREADS; i++)
        pthread_join(th[i], NULL);
    /* Expected figures, computed the same way single-threaded. */
    uint64_t req[METRICS_N_OPS] = {0}, errs[METRICS_N_OPS] = {0};
    uint64_t sum_us[METRICS_N_OPS] = {0};
    for (unsigned t = 0; t < N_THREADS; t++) {
        for (unsigned i = 0; i < PER_THREAD; i++) {
            unsigned op = (i + t) % METRICS_N_OPS;
            req[op]++;
            errs[op] += i % 3 == 0;
            sum_us[op] += i % 2000;
        }
    }
    char *text = render(m, NULL);
    check_shape(text);
    for (unsigned i = 0; i < METRICS_N_OPS; i++) {
        char series[128];
        assert_true(op_sample(text, "shoal_requests_total", ops[i]) ==
                    (double) req[i]);
        assert_true(op_sample(text, "shoal_request_duration_seconds_count",
                              ops[i]) == (double) req[i]);
        snprintf(series, sizeof(series),
                 "shoal_request_errors_total{op=\"%s\",code=\"ENOTFOUND\"}",
                 ops[i]);
        assert_true(sample(text, series) == (double) errs[i]);
        double s =
            op_sample(text, "shoal_request_duration_seconds_sum", ops[i]);
        assert_true(s * 1e6 > (double) sum_us[i] - 0.5 &&
                    s * 1e6 < (double) sum_us[i] + 0.5);
    }
    assert_true(sample(text, "shoal_frames_total{dir=\"in\"}") ==
                N_THREADS * PER_THREAD);
    assert_true(sample(text, "shoal_frame_bytes_total{dir=\"in\"}") ==
                3.0 * N_THREADS * PER_THREAD);
    assert_int_equal(metrics_requests(m), N_THREADS * PER_THREAD);
    mem_free(text);
    metrics_close(m);
}

static shoal_err
put(store *st, uint32_t shard, const char *k, const char *v)
{
    return store_put(st, shard, (const uint8_t *) k, strlen(k),
                     (const uint8_t *) v, strlen(v), NULL, NULL);
}

/* The engine's figures come from store_get_stats. */
static void
test_metrics_store_figures(void **state)
{
    (void) state;
    store_opts o;
    store *st;
    metrics *m;
    store_opts_default(&o);
    o.n_shards = 4;
    o.background = false;
    assert_int_equal(store_open(&o, &st), SHOAL_OK);
    assert_int_equal(metrics_open(&m), SHOAL_OK);
    assert_int_equal(put(st, 0, "alpha", "1"), SHOAL_OK);
    assert_int_equal(put(st, 1, "beta", "22"), SHOAL_OK);
    assert_int_equal(put(st, 3, "gamma", "333"), SHOAL_OK);
    store_stats s;
    store_get_stats(st, &s);
    char *text = render(m, st);
    check_shape(text);
    assert_true(sample(text, "shoal_keys") == 3);
    assert_true(sample(text, "shoal_keys") == (double) s.keys);
    assert_true(sample(text, "shoal_bytes") == (double) s.bytes);
    assert_true(sample(text, "shoal_index_bytes") == (double) s.index_bytes);
    assert_true(sample(text, "shoal_wal_records_total") ==
                (double) s.wal_records);
    assert_true(sample(text, "shoal_wal_bytes_total") == (double) s.wal_bytes);
    assert_true(sample(text, "shoal_wal_fsyncs_total") ==
                (double) s.wal_fsyncs);
    assert_true(sample(text, "shoal_wal_records_per_fsync") >= 0);
    assert_true(sample(text, "shoal_wal_segments") == (double) s.wal_segments);
    assert_true(sample(text, "shoal_snapshots_total") == 0);
    assert_true(sample(text, "shoal_snapshot_ms_max") == 0);
    assert_true(sample(text, "shoal_expired_total") == 0);
    assert_true(sample(text, "shoal_read_only") == 0);
    assert_true(sample(text, "shoal_recovery_ms") >= 0);
    assert_true(sample(text, "shoal_recovery_records") == 0);
    mem_free(text);
    metrics_close(m);
    store_close(st);
}

/* Out of memory at each allocation of a render: SHOAL_ENOMEM, nothing
 * leaked, and a later render works. */
static void
test_metrics_render_out_of_memory(void **state)
{
    (void) state;
    metrics *m;
    assert_int_equal(metrics_open(&m), SHOAL_OK);
    for (unsigned i = 0; i < 2000; i++)
        metrics_observe(m, (metrics_op) (i % METRICS_N_OPS),
                        (shoal_err) (i % 19), i);
    bool ok = false;
    for (long n = 1; !ok && n < 100; n++) {
        char *text = (char *) 1;
        size_t len = 1;
        mem_fail_set(n, 1);
        shoal_err rc = metrics_render(m, NULL, &text, &len);
        mem_fail_set(0, 0);
        if (rc == SHOAL_OK) {
            ok = true;
            mem_free(text);
        } else {
            assert_int_equal(rc, SHOAL_ENOMEM);
            assert_null(text);
            assert_int_equal(len, 0);
        }
    }
    assert_true(ok);
    metrics *m2 = (metrics *) 1;
    mem_fail_set(1, 0);
    assert_int_equal(metrics_open(&m2), SHOAL_ENOMEM);
    mem_fail_set(0, 0);
    assert_null(m2);
    metrics_close(m);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_metrics_empty_render),
        cmocka_unit_test(test_metrics_histogram),
        cmocka_unit_test(test_metrics_errors_by_code),
        cmocka_unit_test(test_metrics_frame_events),
        cmocka_unit_test(test_metrics_op_from_name),
        cmocka_unit_test(test_metrics_concurrent_observers),
        cmocka_unit_test(test_metrics_store_figures),
        cmocka_unit_test(test_metrics_render_out_of_memory),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
