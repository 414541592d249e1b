/*
 * test_client.c -- libshoal against a real shoald on loopback.
 *
 * Every call of shoal.h (with its conditions and client-side limits),
 * batches within one shard and across shards, scans paginated across shards
 * visiting every key once, deadlines (a SIGSTOPped node: SIGSTOP, the call
 * returns SHOAL_ETIMEOUT within its deadline plus a little), retries (the
 * client starts before the node; a call in flight while the node restarts),
 * shoal_close with calls in flight (SHOAL_ECLOSED, every callback once), 16
 * threads of blocking calls, 50 async clients with 16 ops each in flight,
 * keys: wrong key / wrong secret / plaintext at open -> SHOAL_EAUTH, a read
 * key writing and a prefixed key outside its prefix -> SHOAL_EPERM, and the
 * README's example program run as a process.
 *
 * One node serves the group (fsync none: this tests the client); tests that
 * stop or restart a node start their own.
 */
#include "client/client_int.h"
#include "tests/support/proc.h"
#include "tests/support/testutil.h"

#include "proto/clock.h"
#include "proto/keyhash.h"

#include <dirent.h>
#include <nng/nng.h>
#include <nng/protocol/reqrep0/rep.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include <cmocka.h>

#define STOP_MS     30000
#define SLACK_MS    400 /* scheduling slack over a deadline (ASan, 2 cores) */
#define WAIT_MS     60000
#define N_THREADS   16
#define THREAD_OPS  2000
#define N_CLIENTS   50
#define PIPELINE    16
#define ROUNDS      8
#define SCAN_KEYS   1000
#define EXAMPLE_BIN SHOAL_BIN_DIR "/client/shoal_example_hello"

typedef struct fx {
    char *dir;
    proc_keys keys;
    proc_node *node;
    shoal *db; /* admin key */
} fx;

static fx *g; /* the group's node */

static void
log_to_stderr(void *arg, int level, const char *msg)
{
    (void) arg;
    fprintf(stderr, "# libshoal[%d]: %s\n", level, msg);
}

static shoal_err
open_url(const char *url, const char *key_file, uint32_t connect_ms,
         shoal **out)
{
    shoal_opts o;
    shoal_opts_default(&o);
    const char *seeds[] = {url};
    o.seeds = seeds;
    o.n_seeds = 1;
    o.key_file = key_file;
    o.insecure = key_file == NULL;
    o.timeout_ms = 10000;
    o.connect_timeout_ms = connect_ms;
    return shoal_open(&o, out);
}

static shoal_err
open_node(const proc_node *n, const char *key_file, shoal **out)
{
    return open_url(proc_node_url(n), key_file, 10000, out);
}

static int
group_up(void **state)
{
    (void) state;
    void *dir = NULL;
    g = calloc(1, sizeof(*g));
    if (g == NULL || tu_tmpdir_up(&dir) != 0)
        return -1;
    g->dir = dir;
    shoal_set_logger(log_to_stderr, NULL, 1);
    proc_node_opts o;
    proc_node_opts_default(&o);
    o.dir = g->dir;
    o.id = "t1";
    o.fsync = "none";
    if (proc_node_start_keyed(g->dir, &o, &g->keys, &g->node) != SHOAL_OK ||
        open_node(g->node, g->keys.admin_file, &g->db) != SHOAL_OK) {
        fprintf(stderr, "# group fixture failed; node log in %s\n", g->dir);
        return -1;
    }
    return 0;
}

static int
group_down(void **state)
{
    (void) state;
    if (g == NULL)
        return 0;
    shoal_close(g->db);
    if (g->node != NULL)
        proc_node_stop(g->node, STOP_MS, NULL);
    proc_node_free(g->node);
    proc_reap_all();
    proc_keys_wipe(&g->keys);
    void *dir = g->dir;
    tu_tmpdir_down(&dir);
    free(g);
    g = NULL;
    return 0;
}

static uint64_t
ms_since(uint64_t t0_ns)
{
    return (clock_mono_ns() - t0_ns) / 1000000u;
}

static uint64_t
put_s(shoal *db, const char *k, const char *v)
{
    uint64_t ver = 0;
    assert_int_equal(
        shoal_put(db, k, strlen(k), v, strlen(v), NULL, &ver, NULL), SHOAL_OK);
    assert_true(ver > 0);
    return ver;
}

static void
check_value(shoal *db, const char *k, const char *v)
{
    void *val = NULL;
    size_t vlen = 0;
    assert_int_equal(shoal_get(db, k, strlen(k), &val, &vlen, NULL, NULL),
                     SHOAL_OK);
    assert_int_equal(vlen, strlen(v));
    assert_memory_equal(val, v, vlen);
    shoal_free(val);
}

static void
check_missing(shoal *db, const char *k)
{
    void *val = NULL;
    size_t vlen = 0;
    assert_int_equal(shoal_get(db, k, strlen(k), &val, &vlen, NULL, NULL),
                     SHOAL_ENOTFOUND);
    assert_null(val);
}

/* ---- every call -----------------------------------------------------------
 */

static void
test_client_get_put_del(void **state)
{
    (void) state;
    shoal *db = g->db;
    uint64_t v1 = put_s(db, "gp:a", "one");
    check_value(db, "gp:a", "one");
    uint64_t v2 = put_s(db, "gp:a", "two");
    assert_true(v2 > v1);
    void *val = NULL;
    size_t vlen = 0;
    uint64_t ver = 0;
    assert_int_equal(shoal_get(db, "gp:a", 4, &val, &vlen, &ver, NULL),
                     SHOAL_OK);
    assert_int_equal(ver, v2);
    shoal_free(val);
    /* An empty value is a value. */
    assert_int_equal(shoal_put(db, "gp:e", 4, NULL, 0, NULL, NULL, NULL),
                     SHOAL_OK);
    assert_int_equal(shoal_get(db, "gp:e", 4, &val, &vlen, NULL, NULL),
                     SHOAL_OK);
    assert_int_equal(vlen, 0);
    assert_non_null(val);
    shoal_free(val);
    assert_int_equal(shoal_del(db, "gp:a", 4, NULL, NULL), SHOAL_OK);
    check_missing(db, "gp:a");
    assert_int_equal(shoal_del(db, "gp:a", 4, NULL, NULL), SHOAL_ENOTFOUND);
}

static void
test_client_conditional(void **state)
{
    (void) state;
    shoal *db = g->db;
    shoal_put_opts po = {.if_absent = true};
    uint64_t v1 = 0, v2 = 0;
    assert_int_equal(shoal_put(db, "cd:a", 4, "x", 1, &po, &v1, NULL),
                     SHOAL_OK);
    assert_int_equal(shoal_put(db, "cd:a", 4, "y", 1, &po, NULL, NULL),
                     SHOAL_EEXISTS);
    po = (shoal_put_opts){.has_if_version = true, .if_version = v1 + 1000};
    assert_int_equal(shoal_put(db, "cd:a", 4, "y", 1, &po, NULL, NULL),
                     SHOAL_EVERSION);
    po.if_version = v1;
    assert_int_equal(shoal_put(db, "cd:a", 4, "y", 1, &po, &v2, NULL),
                     SHOAL_OK);
    check_value(db, "cd:a", "y");
    /* if_version 0: only when absent. */
    po.if_version = 0;
    assert_int_equal(shoal_put(db, "cd:b", 4, "z", 1, &po, NULL, NULL),
                     SHOAL_OK);
    uint64_t stale = v1;
    assert_int_equal(shoal_del(db, "cd:a", 4, &stale, NULL), SHOAL_EVERSION);
    assert_int_equal(shoal_del(db, "cd:a", 4, &v2, NULL), SHOAL_OK);
    check_missing(db, "cd:a");
}

static void
test_client_incr_ttl_exists(void **state)
{
    (void) state;
    shoal *db = g->db;
    int64_t r = 0;
    uint64_t ver = 0;
    assert_int_equal(shoal_incr(db, "it:n", 4, 5, &r, &ver, NULL), SHOAL_OK);
    assert_int_equal(r, 5);
    assert_true(ver > 0);
    assert_int_equal(shoal_incr(db, "it:n", 4, -7, &r, NULL, NULL), SHOAL_OK);
    assert_int_equal(r, -2);
    put_s(db, "it:s", "text");
    assert_int_equal(shoal_incr(db, "it:s", 4, 1, &r, NULL, NULL),
                     SHOAL_ENOTNUM);
    put_s(db, "it:max", "9223372036854775807");
    assert_int_equal(shoal_incr(db, "it:max", 6, 1, &r, NULL, NULL),
                     SHOAL_EOVERFLOW);

    int64_t ttl = 0;
    assert_int_equal(shoal_ttl(db, "it:s", 4, &ttl, NULL, NULL), SHOAL_OK);
    assert_int_equal(ttl, -1);
    shoal_put_opts po = {.ttl_ms = 60000};
    assert_int_equal(shoal_put(db, "it:t", 4, "v", 1, &po, NULL, NULL),
                     SHOAL_OK);
    assert_int_equal(shoal_ttl(db, "it:t", 4, &ttl, &ver, NULL), SHOAL_OK);
    assert_true(ttl > 50000 && ttl <= 60000);
    assert_int_equal(shoal_ttl(db, "it:none", 7, &ttl, NULL, NULL),
                     SHOAL_ENOTFOUND);
    /* A key that expires vanishes (polled, bounded). */
    po.ttl_ms = 50;
    assert_int_equal(shoal_put(db, "it:x", 4, "v", 1, &po, NULL, NULL),
                     SHOAL_OK);
    bool ex = true;
    uint64_t t0 = clock_mono_ns();
    while (ex && ms_since(t0) < 5000)
        assert_int_equal(shoal_exists(db, "it:x", 4, &ex, NULL), SHOAL_OK);
    assert_false(ex);
    assert_int_equal(shoal_exists(db, "it:s", 4, &ex, NULL), SHOAL_OK);
    assert_true(ex);
}

static void
test_client_count_stats(void **state)
{
    (void) state;
    shoal *db = g->db;
    char k[32];
    for (int i = 0; i < 37; i++) {
        snprintf(k, sizeof(k), "cn:%03d", i);
        put_s(db, k, "v");
    }
    uint64_t n = 0;
    assert_int_equal(shoal_count(db, "cn:", 3, &n, NULL), SHOAL_OK);
    assert_int_equal(n, 37);
    assert_int_equal(shoal_count(db, "cn:00", 5, &n, NULL), SHOAL_OK);
    assert_int_equal(n, 10);
    uint64_t all = 0;
    assert_int_equal(shoal_count(db, NULL, 0, &all, NULL), SHOAL_OK);
    assert_true(all >= 37);

    shoal_stats st;
    assert_int_equal(shoal_stats_get(db, &st, NULL), SHOAL_OK);
    assert_string_equal(st.node_id, "t1");
    assert_true(st.keys >= all); /* stats counts expired keys not yet swept */
    assert_int_equal(st.n_shards, 256);
    assert_true(st.requests > 0);
    assert_false(st.read_only);
}

static void
test_client_limits(void **state)
{
    (void) state;
    shoal *db = g->db;
    static char big[CL_KEY_MAX + 1];
    memset(big, 'k', sizeof(big));
    void *val = NULL;
    size_t vlen = 0;
    assert_int_equal(shoal_get(db, "", 0, &val, &vlen, NULL, NULL),
                     SHOAL_EINVAL);
    assert_int_equal(shoal_get(db, NULL, 3, &val, &vlen, NULL, NULL),
                     SHOAL_EINVAL);
    assert_int_equal(shoal_get(db, big, sizeof(big), &val, &vlen, NULL, NULL),
                     SHOAL_ETOOLARGE);
    assert_int_equal(shoal_put(db, big, sizeof(big), "v", 1, NULL, NULL, NULL),
                     SHOAL_ETOOLARGE);
    /* The largest key works. */
    assert_int_equal(shoal_put(db, big, CL_KEY_MAX, "v", 1, NULL, NULL, NULL),
                     SHOAL_OK);
    char *huge = calloc(1, CL_VALUE_MAX + 1);
    assert_non_null(huge);
    assert_int_equal(
        shoal_put(db, "lm:v", 4, huge, CL_VALUE_MAX + 1, NULL, NULL, NULL),
        SHOAL_ETOOLARGE);
    assert_int_equal(
        shoal_put(db, "lm:v", 4, huge, CL_VALUE_MAX, NULL, NULL, NULL),
        SHOAL_OK);
    assert_int_equal(shoal_get(db, "lm:v", 4, &val, &vlen, NULL, NULL),
                     SHOAL_OK);
    assert_int_equal(vlen, CL_VALUE_MAX);
    shoal_free(val);
    free(huge);
}

/* ---- batches
 * -----------------------------------------------------------------
 */

/* Keys "<prefix>N" whose shards are (same) all equal or (!same) all
 * different, n of them, into keys[n][32]. */
static void
pick_keys(shoal *db, const char *prefix, bool same, size_t n, char keys[][32])
{
    const cl_map *m = db->map;
    uint32_t shards[64];
    size_t got = 0;
    assert_true(n <= 64 && m->shard_count >= n);
    for (int i = 0; got < n && i < 100000; i++) {
        char k[32];
        snprintf(k, sizeof(k), "%s%d", prefix, i);
        uint32_t s = keyhash_shard(m->hash_key, (const uint8_t *) k, strlen(k),
                                   m->shard_count);
        bool dup = false;
        for (size_t j = 0; j < got; j++)
            dup |= shards[j] == s;
        if ((same && got > 0 && s != shards[0]) || (!same && dup))
            continue;
        shards[got] = s;
        memcpy(keys[got++], k, sizeof(k));
    }
    assert_int_equal(got, n);
}

static void
batch_puts(shoal_batch_op *ops, char keys[][32], size_t n, const char *val)
{
    for (size_t i = 0; i < n; i++)
        ops[i] = (shoal_batch_op){.kind = SHOAL_BATCH_PUT,
                                  .key = keys[i],
                                  .klen = strlen(keys[i]),
                                  .val = val,
                                  .vlen = strlen(val)};
}

static void
test_client_batch_one_shard(void **state)
{
    (void) state;
    shoal *db = g->db;
    char keys[4][32];
    shoal_batch_op ops[4];
    shoal_err res[4];
    uint64_t ver = 0;
    pick_keys(db, "b1:", true, 4, keys);
    batch_puts(ops, keys, 4, "v1");
    assert_int_equal(shoal_batch(db, ops, 4, res, &ver, NULL), SHOAL_OK);
    assert_true(ver > 0);
    for (size_t i = 0; i < 4; i++) {
        assert_int_equal(res[i], SHOAL_OK);
        check_value(db, keys[i], "v1");
        uint64_t kv = 0;
        void *v = NULL;
        size_t vl = 0;
        assert_int_equal(
            shoal_get(db, keys[i], strlen(keys[i]), &v, &vl, &kv, NULL),
            SHOAL_OK);
        assert_int_equal(kv, ver); /* one version for all */
        shoal_free(v);
    }
    /* Atomic: one failing condition applies nothing. */
    batch_puts(ops, keys, 4, "v2");
    ops[2].opts.if_absent = true;
    ops[3].kind = SHOAL_BATCH_DEL;
    assert_int_equal(shoal_batch(db, ops, 4, res, NULL, NULL), SHOAL_EEXISTS);
    assert_int_equal(res[2], SHOAL_EEXISTS);
    for (size_t i = 0; i < 4; i++) {
        assert_int_not_equal(res[i], SHOAL_OK);
        check_value(db, keys[i], "v1");
    }
    /* Each key once, checked before anything is sent. */
    ops[1] = ops[0];
    assert_int_equal(shoal_batch(db, ops, 4, res, NULL, NULL), SHOAL_EINVAL);
    assert_int_equal(shoal_batch(db, ops, 0, NULL, NULL, NULL), SHOAL_OK);
}

static void
test_client_batch_many_shards(void **state)
{
    (void) state;
    shoal *db = g->db;
    char keys[8][32];
    shoal_batch_op ops[8];
    shoal_err res[8];
    pick_keys(db, "b8:", false, 8, keys);
    batch_puts(ops, keys, 8, "m1");
    assert_int_equal(shoal_batch(db, ops, 8, res, NULL, NULL), SHOAL_OK);
    for (size_t i = 0; i < 8; i++) {
        assert_int_equal(res[i], SHOAL_OK);
        check_value(db, keys[i], "m1");
    }
    /* Per shard: the failing op's shard applies nothing, the others all. */
    batch_puts(ops, keys, 8, "m2");
    ops[5].opts.if_absent = true;
    ops[6].kind = SHOAL_BATCH_DEL;
    assert_int_equal(shoal_batch(db, ops, 8, res, NULL, NULL), SHOAL_EEXISTS);
    for (size_t i = 0; i < 8; i++) {
        if (i == 5) {
            assert_int_equal(res[i], SHOAL_EEXISTS);
            check_value(db, keys[i], "m1");
        } else if (i == 6) {
            assert_int_equal(res[i], SHOAL_OK);
            check_missing(db, keys[i]);
        } else {
            assert_int_equal(res[i], SHOAL_OK);
            check_value(db, keys[i], "m2");
        }
    }
}

/* ---- scans
 * -------------------------------------------------------------------
 */

static int
cmp_bytes(const uint8_t *a, size_t al, const uint8_t *b, size_t bl)
{
    int c = memcmp(a, b, al < bl ? al : bl);
    return c != 0 ? c : (al > bl) - (al < bl);
}

/* Scan req to its end in pages; every key strictly after the last. Returns
 * the number of items; checks each value is "v<key>". */
static size_t
scan_all(shoal *db, shoal_scan_req req)
{
    uint8_t last[64], token[CL_TOKEN_MAX];
    size_t last_len = 0, n = 0;
    for (;;) {
        shoal_scan_page *p = NULL;
        assert_int_equal(shoal_scan(db, &req, &p, NULL), SHOAL_OK);
        assert_true(p->n_items <= (req.limit ? req.limit : 100));
        for (size_t i = 0; i < p->n_items; i++) {
            const shoal_item *it = &p->items[i];
            assert_true(it->klen < sizeof(last));
            if (n > 0)
                assert_true(cmp_bytes(last, last_len, it->key, it->klen) < 0);
            memcpy(last, it->key, it->klen);
            last_len = it->klen;
            if (req.keys_only)
                assert_null(it->val);
            else
                assert_true(it->vlen == it->klen + 1 && it->val[0] == 'v' &&
                            memcmp(it->val + 1, it->key, it->klen) == 0);
            assert_true(it->version > 0);
            n++;
        }
        bool more = p->more;
        if (more) {
            assert_true(p->token_len > 0 && p->token_len <= sizeof(token));
            memcpy(token, p->token, p->token_len);
            req.token = token;
            req.token_len = p->token_len;
        }
        shoal_scan_page_free(p);
        if (!more)
            return n;
    }
}

static void
test_client_scan_pages(void **state)
{
    (void) state;
    shoal *db = g->db;
    char k[32], v[40];
    /* Written in a scrambled order, through async submits for speed. */
    for (int i = 0; i < SCAN_KEYS; i++) {
        int j = (i * 7919) % SCAN_KEYS;
        snprintf(k, sizeof(k), "sc:%05d", j);
        snprintf(v, sizeof(v), "v%s", k);
        put_s(db, k, v);
    }
    shoal_scan_req req = {.prefix = "sc:", .plen = 3, .limit = 7};
    assert_int_equal(scan_all(db, req), SCAN_KEYS);
    req.limit = 0; /* default page */
    assert_int_equal(scan_all(db, req), SCAN_KEYS);
    req.keys_only = true;
    req.limit = 333;
    assert_int_equal(scan_all(db, req), SCAN_KEYS);
    /* A range: [sc:00100, sc:00200). */
    shoal_scan_req rr = {.start = "sc:00100",
                         .start_len = 8,
                         .end = "sc:00200",
                         .end_len = 8,
                         .limit = 9};
    assert_int_equal(scan_all(db, rr), 100);
    /* Nothing under a prefix nobody uses. */
    shoal_scan_req none = {.prefix = "zz-none:", .plen = 8};
    assert_int_equal(scan_all(db, none), 0);
    /* Bad requests are refused before sending. */
    shoal_scan_page *p = NULL;
    req.limit = CL_SCAN_MAX + 1;
    assert_int_equal(shoal_scan(db, &req, &p, NULL), SHOAL_EINVAL);
    assert_null(p);
}

/* ---- deadlines and retries
 * -------------------------------------------------------
 */

/* Whether every thread of pid is stopped ('T' in /proc/PID/task/N/stat). */
static bool
all_stopped(pid_t pid)
{
    char path[64];
    snprintf(path, sizeof(path), "/proc/%d/task", (int) pid);
    DIR *d = opendir(path);
    if (d == NULL)
        return false;
    bool stopped = true;
    struct dirent *de;
    while (stopped && (de = readdir(d)) != NULL) {
        if (de->d_name[0] == '.')
            continue;
        char st[600], buf[256] = "";
        snprintf(st, sizeof(st), "%s/%s/stat", path, de->d_name);
        FILE *f = fopen(st, "r");
        if (f == NULL)
            continue; /* the thread is gone */
        size_t n = fread(buf, 1, sizeof(buf) - 1, f);
        fclose(f);
        buf[n] = '\0';
        const char *rp = strrchr(buf, ')');
        stopped = rp != NULL && rp[1] == ' ' && (rp[2] == 'T' || rp[2] == 't');
    }
    closedir(d);
    return stopped;
}

/* SIGSTOP the node and wait until every thread of it has stopped. */
static void
stop_node(proc_node *n)
{
    assert_int_equal(proc_signal(proc_node_pid(n), SIGSTOP), SHOAL_OK);
    uint64_t t0 = clock_mono_ns();
    while (!all_stopped(proc_node_pid(n)) && ms_since(t0) < WAIT_MS)
        proc_nap_ms(1);
    assert_true(all_stopped(proc_node_pid(n)));
}

static void
test_client_deadline_stopped_node(void **state)
{
    (void) state;
    shoal *db = g->db;
    put_s(db, "dl:a", "v");
    stop_node(g->node);
    shoal_call call = {.timeout_ms = 300};
    void *val = NULL;
    size_t vlen = 0;
    uint64_t t0 = clock_mono_ns();
    shoal_err rc = shoal_get(db, "dl:a", 4, &val, &vlen, NULL, &call);
    uint64_t took = ms_since(t0);
    /* A write too: its outcome is unknown, so ETIMEOUT, not retried. */
    uint64_t t1 = clock_mono_ns();
    shoal_err wrc = shoal_put(db, "dl:b", 4, "v", 1, NULL, NULL, &call);
    uint64_t wtook = ms_since(t1);
    assert_int_equal(proc_signal(proc_node_pid(g->node), SIGCONT), SHOAL_OK);
    assert_int_equal(rc, SHOAL_ETIMEOUT);
    assert_null(val);
    assert_true(took >= 290 && took <= 300 + SLACK_MS);
    assert_int_equal(wrc, SHOAL_ETIMEOUT);
    assert_true(wtook >= 290 && wtook <= 300 + SLACK_MS);
    /* The handle works again once the node runs. */
    check_value(db, "dl:a", "v");
}

typedef struct opener {
    const char *url;
    const char *key_file;
    shoal *db;
    shoal_err rc;
} opener;

static void *
open_thread(void *arg)
{
    opener *o = arg;
    o->rc = open_url(o->url, o->key_file, 30000, &o->db);
    return NULL;
}

typedef struct getter {
    shoal *db;
    const char *key;
    shoal_err rc;
    char val[32];
} getter;

static void *
get_thread(void *arg)
{
    getter *t = arg;
    shoal_call call = {.timeout_ms = 30000};
    void *v = NULL;
    size_t vl = 0;
    t->rc = shoal_get(t->db, t->key, strlen(t->key), &v, &vl, NULL, &call);
    if (t->rc == SHOAL_OK)
        snprintf(t->val, sizeof(t->val), "%.*s", (int) vl, (const char *) v);
    shoal_free(v);
    return NULL;
}

static void
wait_pending(shoal *db, size_t n)
{
    uint64_t t0 = clock_mono_ns();
    while (shoal__pending(db) < n && ms_since(t0) < WAIT_MS)
        proc_nap_ms(2);
    assert_true(shoal__pending(db) >= n);
}

/* The client starts before the node, then a call rides out a restart. */
static void
test_client_retry_until_node_up(void **state)
{
    (void) state;
    void *dir = NULL;
    proc_keys keys;
    proc_node *n = NULL;
    proc_node_opts o;
    assert_int_equal(tu_tmpdir_up(&dir), 0);
    assert_int_equal(proc_keys_make(dir, &keys), SHOAL_OK);
    proc_node_opts_default(&o);
    o.dir = dir;
    o.id = "t2";
    o.fsync = "always";
    o.key_file = keys.node_file;
    assert_int_equal(proc_node_open(&o, &n), SHOAL_OK);

    opener op = {.url = proc_node_url(n), .key_file = keys.write_file};
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, open_thread, &op), 0);
    assert_int_equal(proc_node_launch(n), SHOAL_OK);
    pthread_join(th, NULL);
    assert_int_equal(op.rc, SHOAL_OK);
    put_s(op.db, "rt:a", "kept");

    /* Node down; a get in flight; node back on the same data. */
    assert_int_equal(proc_node_stop(n, STOP_MS, NULL), SHOAL_OK);
    getter gt = {.db = op.db, .key = "rt:a"};
    assert_int_equal(pthread_create(&th, NULL, get_thread, &gt), 0);
    wait_pending(op.db, 1);
    assert_int_equal(proc_node_launch(n), SHOAL_OK);
    pthread_join(th, NULL);
    assert_int_equal(gt.rc, SHOAL_OK);
    assert_string_equal(gt.val, "kept");

    /* Nobody there at all: SHOAL_EUNAVAILABLE at the deadline. */
    assert_int_equal(proc_node_stop(n, STOP_MS, NULL), SHOAL_OK);
    shoal_call call = {.timeout_ms = 200};
    void *v = NULL;
    size_t vl = 0;
    assert_int_equal(shoal_get(op.db, "rt:a", 4, &v, &vl, NULL, &call),
                     SHOAL_EUNAVAILABLE);
    shoal_close(op.db);
    shoal *db = NULL;
    assert_int_equal(open_url(proc_node_url(n), keys.write_file, 200, &db),
                     SHOAL_EUNAVAILABLE);
    assert_null(db);
    proc_node_free(n);
    proc_keys_wipe(&keys);
    tu_tmpdir_down(&dir);
}

/* ---- close with calls in flight
 * ----------------------------------------------------
 */

typedef struct closing {
    shoal_op *base; /* ops[0] */
    _Atomic int hits[40];
    _Atomic int closed;
    _Atomic int other;
} closing;

static void
count_close(shoal_op *op, void *arg)
{
    closing *c = arg;
    atomic_fetch_add(&c->hits[op - c->base], 1);
    if (op->status == SHOAL_ECLOSED)
        atomic_fetch_add(&c->closed, 1);
    else
        atomic_fetch_add(&c->other, 1);
}

static void
test_client_close_in_flight(void **state)
{
    (void) state;
    shoal *db = NULL;
    assert_int_equal(open_node(g->node, g->keys.write_file, &db), SHOAL_OK);
    stop_node(g->node);
    shoal_op ops[40];
    closing c = {.base = ops};
    for (int i = 0; i < 40; i++) {
        ops[i] = (shoal_op){.kind = i % 2 ? SHOAL_OP_GET : SHOAL_OP_PUT,
                            .key = "cl:k",
                            .klen = 4,
                            .val = "v",
                            .vlen = 1,
                            .call = {.timeout_ms = 30000}};
        assert_int_equal(shoal_submit(db, &ops[i], count_close, &c), SHOAL_OK);
    }
    getter gt[4];
    pthread_t th[4];
    for (int i = 0; i < 4; i++) {
        gt[i] = (getter){.db = db, .key = "cl:k"};
        assert_int_equal(pthread_create(&th[i], NULL, get_thread, &gt[i]), 0);
    }
    wait_pending(db, 44);
    uint64_t t0 = clock_mono_ns();
    shoal_close(db);
    assert_true(ms_since(t0) < 5000);
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        assert_int_equal(gt[i].rc, SHOAL_ECLOSED);
    }
    assert_int_equal(proc_signal(proc_node_pid(g->node), SIGCONT), SHOAL_OK);
    /* Every callback ran exactly once, before close returned. */
    for (int i = 0; i < 40; i++)
        assert_int_equal(atomic_load(&c.hits[i]), 1);
    assert_int_equal(atomic_load(&c.closed), 40);
    assert_int_equal(atomic_load(&c.other), 0);
}

/* ---- concurrency
 * ---------------------------------------------------------------------
 */

typedef struct worker {
    shoal *db;
    int id;
    int failures;
} worker;

static void *
blocking_worker(void *arg)
{
    worker *w = arg;
    char k[32], v[32];
    for (int i = 0; i < THREAD_OPS / 2; i++) {
        snprintf(k, sizeof(k), "th:%02d:%d", w->id, i % 50);
        snprintf(v, sizeof(v), "%d.%d", w->id, i);
        void *got = NULL;
        size_t gl = 0;
        if (shoal_put(w->db, k, strlen(k), v, strlen(v), NULL, NULL, NULL) !=
                SHOAL_OK ||
            shoal_get(w->db, k, strlen(k), &got, &gl, NULL, NULL) != SHOAL_OK ||
            gl != strlen(v) || memcmp(got, v, gl) != 0)
            w->failures++;
        shoal_free(got);
    }
    for (int i = 0; i < 50; i++)
        if (shoal_incr(w->db, "th:counter", 10, 1, NULL, NULL, NULL) !=
            SHOAL_OK)
            w->failures++;
    return NULL;
}

static void
test_client_threads_blocking(void **state)
{
    (void) state;
    pthread_t th[N_THREADS];
    worker w[N_THREADS];
    for (int i = 0; i < N_THREADS; i++) {
        w[i] = (worker){.db = g->db, .id = i};
        assert_int_equal(pthread_create(&th[i], NULL, blocking_worker, &w[i]),
                         0);
    }
    for (int i = 0; i < N_THREADS; i++) {
        pthread_join(th[i], NULL);
        assert_int_equal(w[i].failures, 0);
    }
    check_value(g->db, "th:counter", "800");
}

/* 50 logical clients, each keeping PIPELINE ops in flight for ROUNDS
 * rounds: slot s of client c alternates put "a:c:s" = round and get (which
 * must see the previous round's put: a slot's next op is submitted from its
 * previous op's callback). */
typedef struct aslot {
    shoal_op op;
    int client, slot, round;
    char key[32];
    char val[16];
} aslot;

typedef struct arun {
    shoal *db;
    aslot slots[N_CLIENTS * PIPELINE];
    _Atomic int hits[N_CLIENTS * PIPELINE * ROUNDS];
    _Atomic int done;
    _Atomic int bad;
    pthread_mutex_t mu;
    pthread_cond_t cv;
} arun;

static void async_cb(shoal_op *op, void *arg);

static void
async_next(arun *r, aslot *s)
{
    snprintf(s->val, sizeof(s->val), "%d", s->round);
    s->op = (shoal_op){.key = s->key, .klen = strlen(s->key)};
    if (s->round % 2 == 0) {
        s->op.kind = SHOAL_OP_PUT;
        s->op.val = s->val;
        s->op.vlen = strlen(s->val);
    } else {
        s->op.kind = SHOAL_OP_GET;
    }
    shoal_err rc = shoal_submit(r->db, &s->op, async_cb, r);
    if (rc != SHOAL_OK && atomic_fetch_add(&r->bad, 1) < 5)
        fprintf(stderr, "# submit %s: %s\n", s->key, shoal_errname(rc));
}

static void
async_cb(shoal_op *op, void *arg)
{
    arun *r = arg;
    aslot *s = (aslot *) op; /* op is the first member */
    int idx = (s->client * PIPELINE + s->slot) * ROUNDS + s->round;
    atomic_fetch_add(&r->hits[idx], 1);
    bool ok = op->status == SHOAL_OK;
    if (ok && op->kind == SHOAL_OP_GET) {
        char want[16];
        snprintf(want, sizeof(want), "%d", s->round - 1);
        ok = op->out_vlen == strlen(want) &&
             memcmp(op->out_val, want, op->out_vlen) == 0;
    }
    if (!ok && atomic_fetch_add(&r->bad, 1) < 5)
        fprintf(stderr, "# async op %s (kind %d, round %d): %s\n", s->key,
                (int) op->kind, s->round, shoal_errname(op->status));
    if (++s->round < ROUNDS) {
        async_next(r, s);
        return;
    }
    pthread_mutex_lock(&r->mu);
    if (atomic_fetch_add(&r->done, 1) + 1 == N_CLIENTS * PIPELINE)
        pthread_cond_signal(&r->cv);
    pthread_mutex_unlock(&r->mu);
}

static void
test_client_async_pipelined(void **state)
{
    (void) state;
    arun *r = calloc(1, sizeof(*r));
    assert_non_null(r);
    r->db = g->db;
    pthread_mutex_init(&r->mu, NULL);
    pthread_cond_init(&r->cv, NULL);
    for (int c = 0; c < N_CLIENTS; c++)
        for (int s = 0; s < PIPELINE; s++) {
            aslot *sl = &r->slots[c * PIPELINE + s];
            sl->client = c;
            sl->slot = s;
            snprintf(sl->key, sizeof(sl->key), "as:%d:%d", c, s);
            async_next(r, sl);
        }
    uint64_t t0 = clock_mono_ns();
    pthread_mutex_lock(&r->mu);
    while (atomic_load(&r->done) < N_CLIENTS * PIPELINE &&
           ms_since(t0) < WAIT_MS) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_sec += 1;
        pthread_cond_timedwait(&r->cv, &r->mu, &ts);
    }
    pthread_mutex_unlock(&r->mu);
    assert_int_equal(atomic_load(&r->done), N_CLIENTS * PIPELINE);
    assert_int_equal(atomic_load(&r->bad), 0);
    for (size_t i = 0; i < N_CLIENTS * PIPELINE * ROUNDS; i++)
        assert_int_equal(atomic_load(&r->hits[i]), 1);
    assert_int_equal(shoal__pending(g->db), 0);
    pthread_cond_destroy(&r->cv);
    pthread_mutex_destroy(&r->mu);
    free(r);
}

static void
never_called(shoal_op *op, void *arg)
{
    (void) op;
    (void) arg;
    fail_msg("callback of a refused submit");
}

static void
test_client_submit_refused(void **state)
{
    (void) state;
    shoal_op op = {.kind = 99, .key = "k", .klen = 1};
    assert_int_equal(shoal_submit(g->db, &op, never_called, NULL),
                     SHOAL_EINVAL);
    op.kind = SHOAL_OP_GET;
    op.klen = 0;
    assert_int_equal(shoal_submit(g->db, &op, never_called, NULL),
                     SHOAL_EINVAL);
    op.klen = CL_KEY_MAX + 1;
    assert_int_equal(shoal_submit(g->db, &op, never_called, NULL),
                     SHOAL_ETOOLARGE);
    op.klen = 1;
    assert_int_equal(shoal_submit(g->db, &op, NULL, NULL), SHOAL_EINVAL);
}

/* ---- keys
 * ------------------------------------------------------------------------------
 */

static void
write_key(const char *path, const wire_key *k)
{
    char line[WIRE_KEY_LINE_MAX];
    assert_int_equal(wire_key_format(k, line, sizeof(line)), SHOAL_OK);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    assert_int_equal(chmod(path, 0600), 0);
    fputs(line, f);
    fclose(f);
}

static void
test_client_auth(void **state)
{
    (void) state;
    char path[600];
    wire_key k;
    shoal *db = NULL;
    const char *url = proc_node_url(g->node);
    /* A key the node does not know. */
    assert_int_equal(wire_key_generate(77, WIRE_ROLE_ADMIN, NULL, 0, &k),
                     SHOAL_OK);
    snprintf(path, sizeof(path), "%s/unknown.key", g->dir);
    write_key(path, &k);
    assert_int_equal(open_url(url, path, 10000, &db), SHOAL_EAUTH);
    assert_null(db);
    /* A known id with the wrong secret. */
    assert_int_equal(
        wire_key_generate(PROC_KEY_WRITE, WIRE_ROLE_WRITE, NULL, 0, &k),
        SHOAL_OK);
    snprintf(path, sizeof(path), "%s/forged.key", g->dir);
    write_key(path, &k);
    assert_int_equal(open_url(url, path, 10000, &db), SHOAL_EAUTH);
    /* Plaintext to a sealed node. */
    assert_int_equal(open_url(url, NULL, 10000, &db), SHOAL_EAUTH);
    /* Bad options and key files, refused before any I/O. */
    shoal_opts o;
    shoal_opts_default(&o);
    assert_int_equal(shoal_open(&o, &db), SHOAL_EINVAL);
    const char *bad[] = {"http://127.0.0.1:1"};
    o.seeds = bad;
    o.n_seeds = 1;
    o.insecure = true;
    assert_int_equal(shoal_open(&o, &db), SHOAL_EINVAL);
    const char *good[] = {url};
    o.seeds = good;
    o.key_file = g->keys.write_file; /* and insecure: both */
    assert_int_equal(shoal_open(&o, &db), SHOAL_EINVAL);
    o.insecure = false;
    o.key_file = "/nonexistent/shoal.key";
    assert_int_equal(shoal_open(&o, &db), SHOAL_EIO);
    assert_int_equal(chmod(path, 0644), 0);
    o.key_file = path;
    assert_int_equal(shoal_open(&o, &db), SHOAL_EPERM);
    assert_null(db);
}

static void
test_client_roles(void **state)
{
    (void) state;
    shoal *rd = NULL, *px = NULL;
    put_s(g->db, "ro:a", "v");
    assert_int_equal(open_node(g->node, g->keys.read_file, &rd), SHOAL_OK);
    check_value(rd, "ro:a", "v");
    assert_int_equal(shoal_put(rd, "ro:b", 4, "v", 1, NULL, NULL, NULL),
                     SHOAL_EPERM);
    assert_int_equal(shoal_del(rd, "ro:a", 4, NULL, NULL), SHOAL_EPERM);
    assert_int_equal(shoal_incr(rd, "ro:n", 4, 1, NULL, NULL, NULL),
                     SHOAL_EPERM);
    shoal_stats st;
    assert_int_equal(shoal_stats_get(rd, &st, NULL), SHOAL_EPERM);
    check_missing(g->db, "ro:b");
    shoal_close(rd);
    /* A prefixed key: inside its prefix only. */
    assert_int_equal(open_node(g->node, g->keys.prefixed_file, &px), SHOAL_OK);
    const char *in = PROC_KEY_PREFIX "x";
    assert_int_equal(shoal_put(px, in, strlen(in), "v", 1, NULL, NULL, NULL),
                     SHOAL_OK);
    assert_int_equal(shoal_put(px, "ro:c", 4, "v", 1, NULL, NULL, NULL),
                     SHOAL_EPERM);
    uint64_t n = 0;
    assert_int_equal(shoal_count(px, "ro:", 3, &n, NULL), SHOAL_EPERM);
    assert_int_equal(
        shoal_count(px, PROC_KEY_PREFIX, strlen(PROC_KEY_PREFIX), &n, NULL),
        SHOAL_OK);
    assert_true(n >= 1);
    shoal_close(px);
}

/* ---- a rogue node: answers that must not be believed ------------------------
 */

typedef enum fake_mode {
    FAKE_TAMPER,       /* answers with a flipped ciphertext byte */
    FAKE_NONCE,        /* answers another request's nonce */
    FAKE_UNAVAIL_ONCE, /* first an error frame EUNAVAILABLE, then fine */
} fake_mode;

typedef struct fake {
    nng_socket sock;
    pthread_t th;
    const wire_key *key;
    wire_sender snd;
    fake_mode mode;
    char url[64];
    _Atomic bool stop;
    _Atomic int frames;   /* request frames other than map requests */
    _Atomic int refusals; /* error frames sent */
} fake;

static Shoal__ClusterMap fake_map = SHOAL__CLUSTER_MAP__INIT;
static Shoal__GetResp fake_get = SHOAL__GET_RESP__INIT;
static Shoal__WriteResp fake_write = SHOAL__WRITE_RESP__INIT;

/* Answer req (into r) as a node that holds "fake" under every key. */
static bool
fake_answer(const Shoal__Request *req, Shoal__Response *r)
{
    shoal__response__init(r);
    r->has_id = true;
    r->id = req->id;
    if (req->op_case == SHOAL__REQUEST__OP_MAP) {
        r->result_case = SHOAL__RESPONSE__RESULT_MAP;
        r->map = &fake_map;
        return true;
    }
    if (req->op_case == SHOAL__REQUEST__OP_GET) {
        r->result_case = SHOAL__RESPONSE__RESULT_GET;
        r->get = &fake_get;
    } else {
        r->result_case = SHOAL__RESPONSE__RESULT_WRITE;
        r->write = &fake_write;
    }
    return false;
}

static nng_msg *
fake_reply(fake *f, const Shoal__RequestFrame *rf, const uint8_t *nonce)
{
    Shoal__Response rs[8], *rp[8];
    Shoal__ResponseFrame out = SHOAL__RESPONSE_FRAME__INIT;
    uint8_t wrong[WIRE_NONCE_BYTES];
    bool map = false;
    size_t n = rf->n_reqs < 8 ? rf->n_reqs : 8;
    for (size_t i = 0; i < n; i++) {
        map |= fake_answer(rf->reqs[i], &rs[i]);
        rp[i] = &rs[i];
    }
    out.n_resps = n;
    out.resps = rp;
    out.has_req_nonce = true;
    out.req_nonce.len = WIRE_NONCE_BYTES;
    out.req_nonce.data = (uint8_t *) nonce;
    if (!map) {
        int k = atomic_fetch_add(&f->frames, 1);
        if (f->mode == FAKE_NONCE) {
            memcpy(wrong, nonce, sizeof(wrong));
            wrong[9] ^= 1;
            out.req_nonce.data = wrong;
        }
        if (f->mode == FAKE_UNAVAIL_ONCE && k == 0) {
            nng_msg *m = NULL;
            size_t len = 0;
            atomic_fetch_add(&f->refusals, 1);
            assert_int_equal(nng_msg_alloc(&m, 64), 0);
            assert_int_equal(
                wire_error_frame(SHOAL_EUNAVAILABLE, nng_msg_body(m), 64, &len),
                SHOAL_OK);
            nng_msg_chop(m, 64 - len);
            return m;
        }
    }
    size_t blen = shoal__response_frame__get_packed_size(&out);
    uint8_t *body = malloc(blen + 1);
    shoal__response_frame__pack(&out, body);
    size_t flen = wire_frame_len(blen, true), olen = 0;
    nng_msg *m = NULL;
    assert_int_equal(nng_msg_alloc(&m, flen), 0);
    assert_int_equal(wire_seal(&f->snd, f->key, WIRE_F_RESPONSE, body, blen,
                               nng_msg_body(m), flen, &olen, NULL),
                     SHOAL_OK);
    free(body);
    if (!map && f->mode == FAKE_TAMPER)
        ((uint8_t *) nng_msg_body(m))[WIRE_HDR_BYTES] ^= 0x40;
    return m;
}

static void *
fake_main(void *arg)
{
    fake *f = arg;
    while (!atomic_load(&f->stop)) {
        nng_msg *m = NULL;
        if (nng_recvmsg(f->sock, &m, 0) != 0)
            continue; /* receive timeout: look at stop */
        uint8_t *frame = nng_msg_body(m);
        size_t len = nng_msg_len(m), blen = 0;
        wire_hdr h;
        if (wire_parse_hdr(frame, len, &h) != SHOAL_OK ||
            wire_open(f->key, frame, len, &blen) != SHOAL_OK) {
            nng_msg_free(m);
            continue;
        }
        Shoal__RequestFrame *rf =
            shoal__request_frame__unpack(NULL, blen, frame + WIRE_HDR_BYTES);
        if (rf != NULL) {
            nng_msg *reply = fake_reply(f, rf, h.nonce);
            shoal__request_frame__free_unpacked(rf, NULL);
            if (nng_sendmsg(f->sock, reply, 0) != 0)
                nng_msg_free(reply);
        }
        nng_msg_free(m);
    }
    return NULL;
}

static void
fake_start(fake *f, fake_mode mode)
{
    static uint8_t hk[KEYHASH_KEY_BYTES];
    static Shoal__MapNode node = SHOAL__MAP_NODE__INIT;
    static Shoal__MapNode *nodes[1] = {&node};
    /* The one shard, on the one node (libshoal refuses a map without an
     * entry per shard). */
    static uint32_t replicas[1] = {0};
    static Shoal__MapShard shard = SHOAL__MAP_SHARD__INIT;
    static Shoal__MapShard *shards[1] = {&shard};
    shard.has_primary = true;
    shard.n_replicas = 1;
    shard.replicas = replicas;
    fake_map.n_shards = 1;
    fake_map.shards = shards;
    fake_map.has_epoch = fake_map.has_shard_count = true;
    fake_map.epoch = fake_map.shard_count = 1;
    fake_map.has_hash_key = true;
    fake_map.hash_key.len = sizeof(hk);
    fake_map.hash_key.data = hk;
    fake_map.n_nodes = 1;
    fake_map.nodes = nodes;
    node.id = (char *) "rogue";
    fake_get.has_value = true;
    fake_get.value.data = (uint8_t *) "fake";
    fake_get.value.len = 4;
    fake_write.has_version = true;
    fake_write.version = 1;

    f->mode = mode;
    f->key = &g->keys.write;
    wire_sender_init(&f->snd);
    uint16_t port = 0;
    assert_int_equal(proc_free_port(&port), SHOAL_OK);
    snprintf(f->url, sizeof(f->url), "tcp://127.0.0.1:%u", port);
    node.addr = f->url;
    assert_int_equal(nng_rep0_open(&f->sock), 0);
    assert_int_equal(nng_socket_set_ms(f->sock, NNG_OPT_RECVTIMEO, 50), 0);
    assert_int_equal(nng_listen(f->sock, f->url, NULL, 0), 0);
    assert_int_equal(pthread_create(&f->th, NULL, fake_main, f), 0);
}

static void
fake_stop(fake *f)
{
    atomic_store(&f->stop, true);
    pthread_join(f->th, NULL);
    nng_close(f->sock);
}

static void
test_client_rogue_answers(void **state)
{
    (void) state;
    for (int mode = FAKE_TAMPER; mode <= FAKE_NONCE; mode++) {
        fake f = {.frames = 0};
        shoal *db = NULL;
        fake_start(&f, (fake_mode) mode);
        assert_int_equal(open_url(f.url, g->keys.write_file, 10000, &db),
                         SHOAL_OK);
        /* A read is retried (each answer refused) until its deadline. */
        shoal_call call = {.timeout_ms = 300};
        void *v = NULL;
        size_t vl = 0;
        assert_int_equal(shoal_get(db, "k", 1, &v, &vl, NULL, &call),
                         SHOAL_EUNAVAILABLE);
        assert_null(v);
        int reads = atomic_load(&f.frames);
        assert_true(reads >= 2);
        /* A write is not: it may have been applied. */
        assert_int_equal(shoal_put(db, "k", 1, "v", 1, NULL, NULL, &call),
                         SHOAL_EIO);
        assert_int_equal(atomic_load(&f.frames), reads + 1);
        assert_true(atomic_load(&db->bad_frames) >= (uint64_t) reads + 1);
        shoal_close(db);
        fake_stop(&f);
    }
    /* An error frame saying "not executed" is retried, writes too. */
    fake f = {.frames = 0};
    shoal *db = NULL;
    fake_start(&f, FAKE_UNAVAIL_ONCE);
    assert_int_equal(open_url(f.url, g->keys.write_file, 10000, &db), SHOAL_OK);
    assert_int_equal(shoal_put(db, "k", 1, "v", 1, NULL, NULL, NULL), SHOAL_OK);
    assert_int_equal(atomic_load(&f.refusals), 1);
    assert_int_equal(atomic_load(&f.frames), 2);
    check_value(db, "k", "fake");
    shoal_close(db);
    fake_stop(&f);
}

/* ---- the README's example
 * -----------------------------------------------------------------
 */

static void
test_client_example_program(void **state)
{
    (void) state;
    const char *argv[] = {EXAMPLE_BIN, proc_node_url(g->node),
                          g->keys.write_file, NULL};
    proc_output out;
    assert_int_equal(proc_run(argv, NULL, 0, 60000, &out), SHOAL_OK);
    if (out.code != 0)
        fprintf(stderr, "# example: %s%s\n", out.out, out.err);
    assert_int_equal(out.code, 0);
    assert_non_null(strstr(out.out, "get hello:greeting -> world"));
    assert_non_null(strstr(out.out, "hello:visits = "));
    proc_output_free(&out);
    check_value(g->db, "hello:greeting", "world");
    /* Through the environment instead of argv. */
    const char *argv2[] = {EXAMPLE_BIN, NULL};
    char url_env[128], key_env[600];
    snprintf(url_env, sizeof(url_env), "SHOAL_URL=%s", proc_node_url(g->node));
    snprintf(key_env, sizeof(key_env), "SHOAL_KEY_FILE=%s", g->keys.write_file);
    const char *env[] = {url_env, key_env, NULL};
    pid_t pid;
    int status = 0;
    assert_int_equal(proc_spawn(argv2, env, NULL, NULL, &pid), SHOAL_OK);
    assert_int_equal(proc_wait(pid, 60000, &status), SHOAL_OK);
    assert_int_equal(proc_exit_code(status), 0);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_client_get_put_del),
        cmocka_unit_test(test_client_conditional),
        cmocka_unit_test(test_client_incr_ttl_exists),
        cmocka_unit_test(test_client_count_stats),
        cmocka_unit_test(test_client_limits),
        cmocka_unit_test(test_client_batch_one_shard),
        cmocka_unit_test(test_client_batch_many_shards),
        cmocka_unit_test(test_client_scan_pages),
        cmocka_unit_test(test_client_deadline_stopped_node),
        cmocka_unit_test(test_client_retry_until_node_up),
        cmocka_unit_test(test_client_close_in_flight),
        cmocka_unit_test(test_client_threads_blocking),
        cmocka_unit_test(test_client_async_pipelined),
        cmocka_unit_test(test_client_submit_refused),
        cmocka_unit_test(test_client_auth),
        cmocka_unit_test(test_client_roles),
        cmocka_unit_test(test_client_rogue_answers),
        cmocka_unit_test(test_client_example_program),
    };
    return cmocka_run_group_tests(tests, group_up, group_down);
}
