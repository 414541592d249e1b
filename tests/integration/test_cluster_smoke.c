/*
 * test_cluster_smoke.c -- the cluster harness (proc_cluster_*) against real
 * shoald nodes in cluster mode: 3 nodes, R=3, W=2.
 *
 *  - writes through a handle seeded with node 1 are read back through a
 *    handle seeded with node 2 only (libshoal routes by the map), and with
 *    read-any (a follower may answer: polled until it has caught up);
 *  - node 3 killed and restarted with proc_node_launch: same ports, same
 *    data; it serves as a seed, every key is there, and new writes go
 *    through (no failover yet, so nothing is written while it is down);
 *  - shoalctl cluster status --json: 3 nodes up, each of the 256 shards
 *    reported once as primary (with 2 followers) and twice as follower,
 *    lag 0 once the writes are in; with a node killed it exits 5 and shows
 *    the node down;
 *  - proc_cluster_stop: every node exits 0.
 *
 * The deeper cluster tests (failover, lag, partitions) are elsewhere; this
 * one checks that the harness itself works.
 */
#include "tests/support/proc.h"
#include "tests/support/testutil.h"

#include "shoal.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#define STOP_MS 30000
#define CALL_MS 10000
#define N_KEYS  200

typedef struct fx {
    char *dir;
    proc_cluster *c;
} fx;

static void
log_to_stderr(void *arg, int level, const char *msg)
{
    (void) arg;
    fprintf(stderr, "# libshoal[%d]: %s\n", level, msg);
}

/* A handle seeded with node i only. */
static shoal_err
open_seed(fx *f, size_t i, shoal **out)
{
    const char *seeds[] = {proc_node_url(proc_cluster_node(f->c, i))};
    shoal_opts o;
    shoal_opts_default(&o);
    o.seeds = seeds;
    o.n_seeds = 1;
    o.key_file = proc_cluster_key_file(f->c);
    o.timeout_ms = CALL_MS;
    o.connect_timeout_ms = CALL_MS;
    return shoal_open(&o, out);
}

static void
key_of(char *buf, size_t cap, const char *tag, int i)
{
    snprintf(buf, cap, "smoke:%s:%04d", tag, i);
}

static void
put_keys(shoal *db, const char *tag)
{
    for (int i = 0; i < N_KEYS; i++) {
        char k[64];
        key_of(k, sizeof(k), tag, i);
        shoal_err rc =
            shoal_put(db, k, strlen(k), k, strlen(k), NULL, NULL, NULL);
        if (rc != SHOAL_OK)
            fail_msg("put %s: %s", k, shoal_errname(rc));
    }
}

/* Every key of tag reads back as written; with read_any a replica may lag,
 * so a miss is polled for up to 10 s. */
static void
check_keys(shoal *db, const char *tag, bool read_any)
{
    shoal_call call = {.read_any = read_any};
    for (int i = 0; i < N_KEYS; i++) {
        char k[64];
        key_of(k, sizeof(k), tag, i);
        uint64_t deadline = proc_now_ms() + 10000;
        shoal_err rc;
        void *v = NULL;
        size_t vlen = 0;
        while ((rc = shoal_get(db, k, strlen(k), &v, &vlen, NULL, &call)) ==
                   SHOAL_ENOTFOUND &&
               read_any && proc_now_ms() < deadline)
            proc_nap_ms(20);
        if (rc != SHOAL_OK)
            fail_msg("get %s%s: %s", k, read_any ? " (read any)" : "",
                     shoal_errname(rc));
        bool same = vlen == strlen(k) && memcmp(v, k, vlen) == 0;
        shoal_free(v);
        if (!same)
            fail_msg("get %s: wrong value", k);
    }
}

static size_t
count_str(const char *hay, const char *needle)
{
    size_t n = 0;
    for (const char *p = hay; (p = strstr(p, needle)) != NULL; p++)
        n++;
    return n;
}

/* shoalctl --json cluster status through node 1; *code_out its exit code.
 * Returns the JSON (free()). */
static char *
ctl_status(fx *f, int *code_out)
{
    const char *argv[] = {PROC_SHOALCTL,
                          "--seeds",
                          proc_node_url(proc_cluster_node(f->c, 0)),
                          "--key-file",
                          proc_cluster_key_file(f->c),
                          "--timeout-ms",
                          "2000",
                          "--json",
                          "cluster",
                          "status",
                          NULL};
    proc_output out;
    assert_int_equal(proc_run(argv, NULL, 0, 30000, &out), SHOAL_OK);
    *code_out = out.code;
    char *json = out.out;
    out.out = NULL;
    if (out.code != 0)
        fprintf(stderr, "# shoalctl cluster status: %s", out.err);
    proc_output_free(&out);
    return json;
}

/* Every node up, every shard reported by exactly one primary with R-1
 * followers, in step. */
static void
check_status_all_up(fx *f)
{
    int code = -1;
    char *json = NULL;
    uint64_t deadline = proc_now_ms() + 10000;
    for (;;) { /* lag may still be draining */
        free(json);
        json = ctl_status(f, &code);
        if (code == 0 && strstr(json, "\"max_lag\":0,") != NULL)
            break;
        if (proc_now_ms() > deadline)
            fail_msg("cluster status: exit %d: %s", code, json);
        proc_nap_ms(100);
    }
    assert_int_equal(count_str(json, "\"up\":true"), 3);
    assert_int_equal(count_str(json, "\"primary\":true"), 256);
    assert_int_equal(count_str(json, "\"primary\":false"), 512);
    assert_int_equal(count_str(json, "\"acked_lsn\""), 512);
    assert_non_null(strstr(json, "\"nodes_down\":0}"));
    free(json);
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
    shoal_set_logger(log_to_stderr, NULL, 1);
    return 0;
}

static int
fx_down(void **state)
{
    fx *f = *state;
    if (f == NULL)
        return 0;
    proc_cluster_free(f->c);
    proc_reap_all();
    void *dir = f->dir;
    tu_tmpdir_down(&dir);
    free(f);
    return 0;
}

static void
test_cluster_smoke(void **state)
{
    fx *f = *state;
    proc_cluster_opts o;
    proc_cluster_opts_default(&o);
    o.dir = f->dir;
    o.fsync = "none";
    shoal_err rc = proc_cluster_start(&o, &f->c);
    if (rc != SHOAL_OK)
        fail_msg("cluster start: %s (logs in %s)", shoal_errname(rc), f->dir);
    assert_int_equal(proc_cluster_size(f->c), 3);
    size_t n_seeds = 0;
    const char *const *seeds = proc_cluster_seeds(f->c, &n_seeds);
    assert_int_equal(n_seeds, 3);
    for (size_t i = 0; i < 3; i++)
        assert_string_equal(seeds[i],
                            proc_node_url(proc_cluster_node(f->c, i)));
    assert_null(proc_cluster_node(f->c, 3));

    shoal *w = NULL, *r = NULL;
    assert_int_equal(open_seed(f, 0, &w), SHOAL_OK);
    assert_int_equal(open_seed(f, 1, &r), SHOAL_OK);
    put_keys(w, "a");
    check_keys(r, "a", false);
    check_keys(r, "a", true);

    proc_node *n3 = proc_cluster_node(f->c, 2);
    uint16_t port = proc_node_port(n3), http = proc_node_http_port(n3);
    uint16_t peer = proc_cluster_peer_port(f->c, 2);
    check_status_all_up(f);
    assert_int_equal(proc_node_kill(n3), SHOAL_OK);
    assert_false(proc_node_running(n3));
    int code = -1;
    char *json = ctl_status(f, &code);
    assert_int_equal(code, 5); /* a node is down */
    assert_non_null(strstr(json, "\"nodes_down\":1}"));
    assert_int_equal(count_str(json, "\"up\":false"), 1);
    free(json);
    assert_int_equal(proc_node_launch(n3), SHOAL_OK);
    put_keys(w, "b");
    assert_int_equal(proc_node_port(n3), port);
    assert_int_equal(proc_node_http_port(n3), http);
    assert_int_equal(proc_cluster_peer_port(f->c, 2), peer);
    assert_int_equal(proc_cluster_peer_port(f->c, 3), 0);
    shoal *r3 = NULL;
    assert_int_equal(open_seed(f, 2, &r3), SHOAL_OK);
    check_keys(r3, "a", false);
    check_keys(r3, "b", false);
    shoal_close(r3);
    shoal_close(r);
    shoal_close(w);

    assert_int_equal(proc_cluster_stop(f->c, STOP_MS), SHOAL_OK);
    for (size_t i = 0; i < 3; i++) {
        assert_false(proc_node_running(proc_cluster_node(f->c, i)));
        assert_int_equal(proc_node_exit_code(proc_cluster_node(f->c, i)), 0);
    }
    /* And back, all at once, on the same files. */
    assert_int_equal(proc_cluster_launch(f->c), SHOAL_OK);
    assert_int_equal(open_seed(f, 1, &r), SHOAL_OK);
    check_keys(r, "b", false);
    shoal_close(r);
    assert_int_equal(proc_cluster_stop(f->c, STOP_MS), SHOAL_OK);
}

/* Bad options are refused before anything starts. */
static void
test_cluster_bad_opts(void **state)
{
    fx *f = *state;
    proc_cluster_opts o;
    proc_cluster *c = NULL;
    proc_cluster_opts_default(&o);
    assert_int_equal(proc_cluster_start(&o, &c), SHOAL_EINVAL); /* no dir */
    o.dir = f->dir;
    o.n_nodes = 2;
    o.replicas = 3;
    assert_int_equal(proc_cluster_start(&o, &c), SHOAL_EINVAL);
    o.replicas = 2;
    o.write_quorum = 3;
    assert_int_equal(proc_cluster_start(&o, &c), SHOAL_EINVAL);
    o.n_nodes = PROC_CLUSTER_MAX + 1;
    o.replicas = o.write_quorum = 0;
    assert_int_equal(proc_cluster_start(&o, &c), SHOAL_EINVAL);
    assert_null(c);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_cluster_bad_opts, fx_up, fx_down),
        cmocka_unit_test_setup_teardown(test_cluster_smoke, fx_up, fx_down),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
