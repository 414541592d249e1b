/*
 * test_cluster.c -- a real 3-node cluster (R=3, W=2) through libshoal and
 * raw frames (DESIGN §3, §4):
 *
 *  - routing: every key put through libshoal is served by its shard's
 *    primary; the same get sent raw (with the map epoch) to a node that is
 *    not the primary answers SHOAL_EWRONGSHARD with the node's map, and
 *    following that map's primary succeeds (the redirect); a put sent to a
 *    non-primary is refused and applies nothing; handles seeded with one
 *    node each reach every shard;
 *  - read-any: followers answer reads of caught-up keys, raw and libshoal;
 *  - cross-shard scans (sorted, paginated, every key exactly once, prefix
 *    and range), counts, and batches spanning shards (an op's status is
 *    SHOAL_OK exactly when it was applied);
 *  - quorum: with one node stopped, w=all is SHOAL_EUNAVAILABLE and applies
 *    nothing, w=1 and the default W=2 succeed;
 *  - follower restart: a node stopped while N keys are written catches up
 *    from the primaries' backlogs (lag 0, same LSNs), then every shard's
 *    digest is equal on all its replicas;
 *  - catch-up by snapshot (its own cluster, --repl-backlog 1m, the
 *    minimum): a follower stopped while more than the backlog is written,
 *    and a follower whose data dir was wiped (LSN 0 while LSN 1 is long
 *    gone from the backlog), both end with equal digests everywhere.
 *
 * Random choices (the stopped node, key order) print their seed.
 */
#include "tests/support/cluster_check.h"
#include "tests/support/proc.h"
#include "tests/support/testutil.h"

#include "shoal.h"

#include <inttypes.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#define STOP_MS   30000
#define CALL_MS   10000
#define SYNC_MS   60000
#define N_ROUTE   256
#define N_SCAN    1000
#define N_RESTART 2000

typedef struct fx {
    char *dir;
    proc_cluster *c;
    cc_map *m;
    shoal *db;    /* seeded with every node */
    size_t wiped; /* node whose data dir test_snapshot_catchup wiped */
    uint64_t rng;
} fx;

static void
log_to_stderr(void *arg, int level, const char *msg)
{
    (void) arg;
    fprintf(stderr, "# libshoal[%d]: %s\n", level, msg);
}

static bool
shoald_has_cluster(void)
{
    const char *argv[] = {PROC_SHOALD, "--help", NULL};
    proc_output out;
    bool has = proc_run(argv, NULL, 0, 10000, &out) == SHOAL_OK &&
               ((out.out != NULL && strstr(out.out, "--cluster") != NULL) ||
                (out.err != NULL && strstr(out.err, "--cluster") != NULL));
    proc_output_free(&out);
    return has;
}

static shoal_err
open_seeds(proc_cluster *c, const size_t *idx, size_t n, shoal **out)
{
    const char *seeds[PROC_CLUSTER_MAX];
    for (size_t i = 0; i < n; i++)
        seeds[i] = proc_node_url(proc_cluster_node(c, idx[i]));
    shoal_opts o;
    shoal_opts_default(&o);
    o.seeds = seeds;
    o.n_seeds = n;
    o.key_file = proc_cluster_key_file(c);
    o.timeout_ms = CALL_MS;
    o.connect_timeout_ms = CALL_MS;
    return shoal_open(&o, out);
}

static shoal_err
open_all(proc_cluster *c, shoal **out)
{
    size_t idx[PROC_CLUSTER_MAX];
    for (size_t i = 0; i < proc_cluster_size(c); i++)
        idx[i] = i;
    return open_seeds(c, idx, proc_cluster_size(c), out);
}

static const wire_key *
admin_key(fx *f)
{
    return &proc_cluster_keys(f->c)->admin;
}

static uint16_t
port_of(fx *f, size_t i)
{
    return proc_node_port(proc_cluster_node(f->c, i));
}

static int
start_cluster(fx *f, const char *const *extra)
{
    proc_cluster_opts o;
    proc_cluster_opts_default(&o);
    o.dir = f->dir;
    o.fsync = "always";
    o.extra_args = extra;
    shoal_err rc = proc_cluster_start(&o, &f->c);
    if (rc != SHOAL_OK) {
        fprintf(stderr, "# cluster start: %s (logs in %s)\n", shoal_errname(rc),
                f->dir);
        return -1;
    }
    if ((rc = cc_map_get(port_of(f, 0), admin_key(f), &f->m)) != SHOAL_OK ||
        (rc = open_all(f->c, &f->db)) != SHOAL_OK) {
        fprintf(stderr, "# map / open: %s\n", shoal_errname(rc));
        return -1;
    }
    return 0;
}

static int
fx_up_common(void **state, const char *const *extra)
{
    fx *f = calloc(1, sizeof(*f));
    void *dir = NULL;
    if (f == NULL || tu_tmpdir_up(&dir) != 0)
        return -1;
    f->dir = dir;
    f->wiped = SIZE_MAX;
    *state = f;
    shoal_set_logger(log_to_stderr, NULL, 1);
    if (!shoald_has_cluster())
        return 0; /* the tests skip */
    return start_cluster(f, extra);
}

static int
grp_up(void **state)
{
    return fx_up_common(state, NULL);
}

static int
grp_up_backlog(void **state)
{
    static const char *const extra[] = {"--repl-backlog", "1m", NULL};
    return fx_up_common(state, extra);
}

static int
grp_down(void **state)
{
    fx *f = *state;
    if (f == NULL)
        return 0;
    shoal_close(f->db);
    cc_map_free(f->m);
    proc_cluster_free(f->c);
    proc_reap_all();
    void *dir = f->dir;
    tu_tmpdir_down(&dir);
    free(f);
    return 0;
}

/* ---- helpers --------------------------------------------------------------
 */

static void
put_ok(shoal *db, const char *k, const char *v, const shoal_call *call)
{
    shoal_err rc = shoal_put(db, k, strlen(k), v, strlen(v), NULL, NULL, call);
    if (rc != SHOAL_OK)
        fail_msg("put %s: %s", k, shoal_errname(rc));
}

static void
get_eq(shoal *db, const char *k, const char *want, const shoal_call *call)
{
    void *v = NULL;
    size_t vlen = 0;
    shoal_err rc = shoal_get(db, k, strlen(k), &v, &vlen, NULL, call);
    if (rc != SHOAL_OK)
        fail_msg("get %s: %s", k, shoal_errname(rc));
    bool same = vlen == strlen(want) && memcmp(v, want, vlen) == 0;
    shoal_free(v);
    if (!same)
        fail_msg("get %s: wrong value", k);
}

/* A raw get (or put when val != NULL) of key to node i with the map epoch.
 * *status the node's status; *redirect (may be NULL) the client URL of
 * the primary the answer's new_map names for the key's shard ("" none). */
static void
raw_key_op(fx *f, size_t i, const char *key, const char *val, bool read_any,
           shoal_err *status, char *redirect, size_t rcap, char *value,
           size_t vcap)
{
    Shoal__Request req = SHOAL__REQUEST__INIT;
    Shoal__GetReq g = SHOAL__GET_REQ__INIT;
    Shoal__PutReq p = SHOAL__PUT_REQ__INIT;
    req.has_map_epoch = true;
    req.map_epoch = f->m->epoch;
    if (read_any) {
        req.has_read_mode = true;
        req.read_mode = SHOAL__READ_MODE__READ_ANY;
    }
    if (val == NULL) {
        g.has_key = true;
        g.key.data = (uint8_t *) key;
        g.key.len = strlen(key);
        req.op_case = SHOAL__REQUEST__OP_GET;
        req.get = &g;
    } else {
        p.has_key = p.has_value = true;
        p.key.data = (uint8_t *) key;
        p.key.len = strlen(key);
        p.value.data = (uint8_t *) val;
        p.value.len = strlen(val);
        req.op_case = SHOAL__REQUEST__OP_PUT;
        req.put = &p;
    }
    proc_reply rep;
    shoal_err rc = cc_call(port_of(f, i), admin_key(f), &req, CALL_MS, &rep);
    if (rc != SHOAL_OK)
        fail_msg("raw op %s to n%zu: %s", key, i + 1, shoal_errname(rc));
    assert_false(rep.is_error);
    Shoal__Response *r = rep.frame->resps[0];
    *status = r->has_status ? (shoal_err) r->status : SHOAL_OK;
    if (redirect != NULL) {
        redirect[0] = '\0';
        if (r->new_map != NULL) {
            /* Only the primary's address is needed: look it up directly. */
            uint32_t s = cc_map_shard(f->m, key, strlen(key));
            for (size_t j = 0; j < r->new_map->n_shards; j++) {
                const Shoal__MapShard *sh = r->new_map->shards[j];
                if (sh->shard == s && sh->primary < r->new_map->n_nodes &&
                    r->new_map->nodes[sh->primary]->addr != NULL)
                    snprintf(redirect, rcap, "%s",
                             r->new_map->nodes[sh->primary]->addr);
            }
        }
    }
    if (value != NULL) {
        value[0] = '\0';
        if (r->result_case == SHOAL__RESPONSE__RESULT_GET &&
            r->get->has_value && r->get->value.len < vcap) {
            memcpy(value, r->get->value.data, r->get->value.len);
            value[r->get->value.len] = '\0';
        }
    }
    proc_reply_fini(&rep);
}

static size_t
node_of_url(fx *f, const char *url)
{
    for (size_t i = 0; i < proc_cluster_size(f->c); i++)
        if (strcmp(proc_node_url(proc_cluster_node(f->c, i)), url) == 0)
            return i;
    return SIZE_MAX;
}

static void
wait_synced(fx *f)
{
    char why[256] = "";
    shoal_err rc = cc_wait_synced(f->c, f->m, SYNC_MS, why, sizeof(why));
    if (rc != SHOAL_OK) {
        cc_dump_why(f->c, why);
        fail_msg("replicas not in step after %d ms: %s", SYNC_MS, why);
    }
}

static void
digests_equal(fx *f, uint64_t want_min_keys)
{
    uint64_t keys = 0;
    long differ = cc_digests_compare(f->c, f->m, &keys);
    printf("# digests: %ld shards differ, %" PRIu64 " keys\n", differ, keys);
    assert_int_equal(differ, 0);
    assert_true(keys >= want_min_keys);
}

/* ---- tests ------------------------------------------------------------------
 */

static void
test_routing(void **state)
{
    fx *f = *state;
    if (f->c == NULL)
        skip();
    size_t n = proc_cluster_size(f->c);
    assert_int_equal(n, 3);
    assert_int_equal(f->m->r, 3);
    assert_int_equal(f->m->w, 2);
    assert_int_equal(f->m->n_nodes, 3);
    /* Every node is primary of some shards (placement spreads them). */
    uint32_t prim[3] = {0};
    for (uint32_t s = 0; s < f->m->n_shards; s++)
        prim[f->m->primary[s]]++;
    printf("# primaries: n1 %u, n2 %u, n3 %u of %u shards\n", prim[0], prim[1],
           prim[2], f->m->n_shards);
    for (size_t i = 0; i < n; i++)
        assert_true(prim[i] > 0);

    size_t redirected = 0;
    for (int i = 0; i < N_ROUTE; i++) {
        char k[64], v[128], got[128], redir[256];
        snprintf(k, sizeof(k), "route:%04d", i);
        snprintf(v, sizeof(v), "value-of-%s", k);
        put_ok(f->db, k, v, NULL);
        uint32_t s = cc_map_shard(f->m, k, strlen(k));
        size_t p = f->m->primary[s];
        shoal_err st;
        /* The primary serves it. */
        raw_key_op(f, p, k, NULL, false, &st, NULL, 0, got, sizeof(got));
        if (st != SHOAL_OK || strcmp(got, v) != 0)
            fail_msg("%s (shard %u) at its primary n%zu: %s", k, s, p + 1,
                     shoal_errname(st));
        /* Every other node redirects to it, and the redirect works. */
        for (size_t q = 0; q < n; q++) {
            if (q == p)
                continue;
            raw_key_op(f, q, k, NULL, false, &st, redir, sizeof(redir), NULL,
                       0);
            if (st != SHOAL_EWRONGSHARD)
                fail_msg("%s (shard %u, primary n%zu) at n%zu: %s, want "
                         "EWRONGSHARD",
                         k, s, p + 1, q + 1, shoal_errname(st));
            size_t to = node_of_url(f, redir);
            if (to != p)
                fail_msg("%s: n%zu redirects to '%s', want n%zu", k, q + 1,
                         redir, p + 1);
            raw_key_op(f, to, k, NULL, false, &st, NULL, 0, got, sizeof(got));
            assert_int_equal(st, SHOAL_OK);
            assert_string_equal(got, v);
            redirected++;
        }
    }
    printf("# routing: %d keys at their primaries, %zu redirects followed\n",
           N_ROUTE, redirected);

    /* A put sent to a non-primary is refused and applies nothing. */
    for (int i = 0; i < 32; i++) {
        char k[64], redir[256];
        snprintf(k, sizeof(k), "misrouted:%02d", i);
        uint32_t s = cc_map_shard(f->m, k, strlen(k));
        size_t q = (f->m->primary[s] + 1 + (size_t) (i % 2)) % n;
        shoal_err st;
        raw_key_op(f, q, k, "nope", false, &st, redir, sizeof(redir), NULL, 0);
        assert_int_equal(st, SHOAL_EWRONGSHARD);
        assert_int_equal(node_of_url(f, redir), f->m->primary[s]);
        void *v = NULL;
        size_t vlen = 0;
        assert_int_equal(shoal_get(f->db, k, strlen(k), &v, &vlen, NULL, NULL),
                         SHOAL_ENOTFOUND);
    }

    /* A handle seeded with one node reaches every shard. */
    for (size_t i = 0; i < n; i++) {
        shoal *one = NULL;
        assert_int_equal(open_seeds(f->c, &i, 1, &one), SHOAL_OK);
        for (int j = 0; j < 64; j++) {
            char k[64], v[128];
            snprintf(k, sizeof(k), "seeded:n%zu:%03d", i + 1, j);
            snprintf(v, sizeof(v), "v:%s", k);
            put_ok(one, k, v, NULL);
            get_eq(one, k, v, NULL);
            get_eq(f->db, k, v, NULL);
        }
        shoal_close(one);
    }
}

static void
test_read_any(void **state)
{
    fx *f = *state;
    if (f->c == NULL)
        skip();
    for (int i = 0; i < 64; i++) {
        char k[64], v[128];
        snprintf(k, sizeof(k), "any:%03d", i);
        snprintf(v, sizeof(v), "v:%s", k);
        put_ok(f->db, k, v, NULL);
    }
    wait_synced(f);
    shoal_call any = {.read_any = true};
    size_t follower_reads = 0;
    for (int i = 0; i < 64; i++) {
        char k[64], v[128], got[128];
        snprintf(k, sizeof(k), "any:%03d", i);
        snprintf(v, sizeof(v), "v:%s", k);
        get_eq(f->db, k, v, &any);
        uint32_t s = cc_map_shard(f->m, k, strlen(k));
        for (size_t q = 0; q < proc_cluster_size(f->c); q++) {
            if (q == f->m->primary[s])
                continue;
            shoal_err st;
            raw_key_op(f, q, k, NULL, true, &st, NULL, 0, got, sizeof(got));
            if (st != SHOAL_OK || strcmp(got, v) != 0)
                fail_msg("read-any %s at follower n%zu: %s", k, q + 1,
                         shoal_errname(st));
            follower_reads++;
        }
    }
    printf("# read-any: %zu reads answered by followers\n", follower_reads);
}

/* Full paginated scan of prefix (or [start, end)); checks order and
 * returns the keys seen (malloc'd array of strdup'd keys). */
static char **
scan_all(shoal *db, const char *prefix, const char *start, const char *end,
         uint32_t limit, size_t *n_out, size_t *pages_out)
{
    size_t n = 0, cap = 0, pages = 0;
    char **keys = NULL;
    char *token = NULL;
    size_t token_len = 0;
    for (;;) {
        shoal_scan_req r;
        memset(&r, 0, sizeof(r));
        r.prefix = prefix;
        r.plen = prefix != NULL ? strlen(prefix) : 0;
        r.start = start;
        r.start_len = start != NULL ? strlen(start) : 0;
        r.end = end;
        r.end_len = end != NULL ? strlen(end) : 0;
        r.limit = limit;
        r.token = token;
        r.token_len = token_len;
        shoal_scan_page *pg = NULL;
        shoal_err rc = shoal_scan(db, &r, &pg, NULL);
        if (rc != SHOAL_OK)
            fail_msg("scan page %zu: %s", pages, shoal_errname(rc));
        pages++;
        assert_true(pg->n_items <= limit);
        for (size_t i = 0; i < pg->n_items; i++) {
            const shoal_item *it = &pg->items[i];
            char *k = strndup((const char *) it->key, it->klen);
            assert_non_null(k);
            if (n > 0 && strcmp(keys[n - 1], k) >= 0)
                fail_msg("scan out of order or repeated: '%s' after '%s'", k,
                         keys[n - 1]);
            /* values are "v:" + key */
            if (it->vlen != it->klen + 2 || memcmp(it->val, "v:", 2) != 0 ||
                memcmp((const char *) it->val + 2, it->key, it->klen) != 0)
                fail_msg("scan: wrong value for %s", k);
            if (n == cap) {
                cap = cap ? 2 * cap : 256;
                keys = realloc(keys, cap * sizeof(*keys));
                assert_non_null(keys);
            }
            keys[n++] = k;
        }
        free(token);
        token = NULL;
        if (!pg->more) {
            shoal_scan_page_free(pg);
            break;
        }
        assert_true(pg->token_len > 0);
        token = malloc(pg->token_len);
        assert_non_null(token);
        memcpy(token, pg->token, pg->token_len);
        token_len = pg->token_len;
        shoal_scan_page_free(pg);
        assert_true(pages < 100000);
    }
    *n_out = n;
    *pages_out = pages;
    return keys;
}

static void
free_keys(char **k, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(k[i]);
    free(k);
}

static void
test_scan_count_batch(void **state)
{
    fx *f = *state;
    if (f->c == NULL)
        skip();
    uint64_t seed = tu_seed("scan order");
    /* Write in a shuffled order, so nothing arrives sorted. */
    int *order = malloc(N_SCAN * sizeof(int));
    assert_non_null(order);
    for (int i = 0; i < N_SCAN; i++)
        order[i] = i;
    for (int i = N_SCAN - 1; i > 0; i--) {
        int j = (int) (tu_rand(&seed) % (uint64_t) (i + 1));
        int t = order[i];
        order[i] = order[j];
        order[j] = t;
    }
    /* Through batches of 50 ops spanning shards. */
    for (int b = 0; b < N_SCAN / 50; b++) {
        shoal_batch_op ops[50];
        char keys[50][32], vals[50][40];
        shoal_err res[50];
        uint32_t shards_seen = 0;
        for (int i = 0; i < 50; i++) {
            snprintf(keys[i], sizeof(keys[i]), "scan:%05d", order[b * 50 + i]);
            memcpy(vals[i], "v:", 2);
            memcpy(vals[i] + 2, keys[i], strlen(keys[i]) + 1);
            memset(&ops[i], 0, sizeof(ops[i]));
            ops[i].kind = SHOAL_BATCH_PUT;
            ops[i].key = keys[i];
            ops[i].klen = strlen(keys[i]);
            ops[i].val = vals[i];
            ops[i].vlen = strlen(vals[i]);
            shards_seen |= 1u << (f->m->primary[cc_map_shard(f->m, keys[i],
                                                             strlen(keys[i]))]);
        }
        assert_int_equal(shards_seen, 7u); /* all three primaries involved */
        shoal_err rc = shoal_batch(f->db, ops, 50, res, NULL, NULL);
        if (rc != SHOAL_OK)
            fail_msg("batch %d: %s", b, shoal_errname(rc));
        for (int i = 0; i < 50; i++)
            assert_int_equal(res[i], SHOAL_OK);
    }
    free(order);

    /* Paginated scans of the prefix, several page sizes. */
    const uint32_t limits[] = {1, 7, 100, 333, 10000};
    for (size_t li = 0; li < sizeof(limits) / sizeof(limits[0]); li++) {
        size_t n = 0, pages = 0;
        char **keys =
            scan_all(f->db, "scan:", NULL, NULL, limits[li], &n, &pages);
        printf("# scan limit %u: %zu keys in %zu pages\n", limits[li], n,
               pages);
        assert_int_equal(n, N_SCAN);
        for (size_t i = 0; i < n; i++) {
            char want[32];
            snprintf(want, sizeof(want), "scan:%05zu", i);
            assert_string_equal(keys[i], want);
        }
        free_keys(keys, n);
    }
    /* A range: [scan:00100, scan:00350). */
    {
        size_t n = 0, pages = 0;
        char **keys =
            scan_all(f->db, NULL, "scan:00100", "scan:00350", 64, &n, &pages);
        assert_int_equal(n, 250);
        assert_string_equal(keys[0], "scan:00100");
        assert_string_equal(keys[249], "scan:00349");
        free_keys(keys, n);
    }
    uint64_t cnt = 0;
    assert_int_equal(shoal_count(f->db, "scan:", 5, &cnt, NULL), SHOAL_OK);
    assert_int_equal(cnt, N_SCAN);
    assert_int_equal(shoal_count(f->db, "scan:001", 8, &cnt, NULL), SHOAL_OK);
    assert_int_equal(cnt, 100);

    /* A batch across shards where some ops fail: each op is OK exactly
     * when it was applied. Deletes of scan:00000..09 plus if_absent puts of
     * existing keys (EEXISTS) and of new keys. */
    shoal_batch_op ops[30];
    char keys[30][32];
    shoal_err res[30];
    for (int i = 0; i < 30; i++) {
        memset(&ops[i], 0, sizeof(ops[i]));
        if (i < 10) {
            snprintf(keys[i], sizeof(keys[i]), "scan:%05d", i);
            ops[i].kind = SHOAL_BATCH_DEL;
        } else {
            snprintf(keys[i], sizeof(keys[i]),
                     i < 20 ? "scan:%05d" : "new:%05d", i * 10);
            ops[i].kind = SHOAL_BATCH_PUT;
            ops[i].val = "x";
            ops[i].vlen = 1;
            ops[i].opts.if_absent = true;
        }
        ops[i].key = keys[i];
        ops[i].klen = strlen(keys[i]);
    }
    shoal_err rc = shoal_batch(f->db, ops, 30, res, NULL, NULL);
    assert_int_not_equal(rc, SHOAL_OK); /* the EEXISTS ops */
    size_t applied = 0;
    for (int i = 0; i < 30; i++) {
        void *v = NULL;
        size_t vlen = 0;
        shoal_err g =
            shoal_get(f->db, keys[i], strlen(keys[i]), &v, &vlen, NULL, NULL);
        bool is_x = g == SHOAL_OK && vlen == 1 && memcmp(v, "x", 1) == 0;
        shoal_free(v);
        bool was_applied = i < 10 ? g == SHOAL_ENOTFOUND : is_x;
        if (i >= 10 && i < 20)
            assert_int_equal(res[i], SHOAL_EEXISTS);
        if ((res[i] == SHOAL_OK) != was_applied)
            fail_msg("batch op %d (%s): status %s but applied=%d", i, keys[i],
                     shoal_errname(res[i]), (int) was_applied);
        applied += was_applied;
    }
    printf("# mixed batch: %zu of 30 ops applied\n", applied);
    /* Count and scan agree with what was applied. */
    assert_int_equal(shoal_count(f->db, "scan:", 5, &cnt, NULL), SHOAL_OK);
    size_t n = 0, pages = 0;
    char **sk = scan_all(f->db, "scan:", NULL, NULL, 97, &n, &pages);
    free_keys(sk, n);
    assert_int_equal(cnt, n);
    wait_synced(f);
    digests_equal(f, N_SCAN);
}

/* One node stopped: w=all refused up front, nothing applied; w=1 and the
 * default W=2 go through; the node restarted catches up (backlog) and
 * every shard's replicas end equal. */
static void
test_quorum_and_follower_restart(void **state)
{
    fx *f = *state;
    if (f->c == NULL)
        skip();
    uint64_t seed = tu_seed("stopped node");
    size_t down = (size_t) (tu_rand(&seed) % 3);
    proc_node *nd = proc_cluster_node(f->c, down);
    printf("# stopping n%zu\n", down + 1);
    int code = -1;
    assert_int_equal(proc_node_stop(nd, STOP_MS, &code), SHOAL_OK);
    assert_int_equal(code, 0);

    /* repl_admit counts a follower reachable until dead_ms (1.5 s) without
     * an ack: wait past that, or w=all could still be admitted and then
     * time out after its local apply. */
    proc_nap_ms(2500);
    size_t all_refused = 0, w1_ok = 0, w2_ok = 0, skipped = 0;
    shoal_call wall = {.w = 3, .timeout_ms = 1000};
    shoal_call w1 = {.w = 1};
    /* w=all: refused up front (libshoal retries SHOAL_EUNAVAILABLE until
     * its deadline, so keep these few). */
    for (int i = 0; all_refused < 6 && i < 100; i++) {
        char ka[64];
        snprintf(ka, sizeof(ka), "wall:%05d", i);
        uint32_t sa = cc_map_shard(f->m, ka, strlen(ka));
        if (f->m->primary[sa] == down)
            continue;
        shoal_err rc =
            shoal_put(f->db, ka, strlen(ka), "x", 1, NULL, NULL, &wall);
        if (rc != SHOAL_EUNAVAILABLE)
            fail_msg("w=all put %s with n%zu down: %s", ka, down + 1,
                     shoal_errname(rc));
        void *got = NULL;
        size_t gl = 0;
        assert_int_equal(
            shoal_get(f->db, ka, strlen(ka), &got, &gl, NULL, NULL),
            SHOAL_ENOTFOUND);
        all_refused++;
    }
    for (int i = 0; i < N_RESTART; i++) {
        char k[64], v[128];
        snprintf(k, sizeof(k), "restart:%05d", i);
        snprintf(v, sizeof(v), "v:%s", k);
        uint32_t s = cc_map_shard(f->m, k, strlen(k));
        if (f->m->primary[s] == down) {
            skipped++; /* no failover without the control plane */
            continue;
        }
        put_ok(f->db, k, v, i % 2 ? &w1 : NULL);
        if (i % 2)
            w1_ok++;
        else
            w2_ok++;
    }
    printf("# n%zu down: %zu w=all refused, %zu w=1 and %zu w=2 puts ok, %zu "
           "keys skipped (primary down)\n",
           down + 1, all_refused, w1_ok, w2_ok, skipped);
    assert_true(all_refused > 0);
    /* read_any with a replica down: every read is answered by a replica
     * that is up (libshoal once sent some to the stopped node, where they
     * waited out their whole deadline: 600 ms each here). */
    shoal_call any_down = {.read_any = true, .timeout_ms = 600};
    uint64_t r0 = proc_now_ms();
    size_t any_reads = 0;
    for (int i = 0; i < N_RESTART && any_reads < 60; i++) {
        char k[64], v[128];
        snprintf(k, sizeof(k), "restart:%05d", i);
        snprintf(v, sizeof(v), "v:%s", k);
        if (f->m->primary[cc_map_shard(f->m, k, strlen(k))] == down)
            continue;
        get_eq(f->db, k, v, &any_down);
        any_reads++;
    }
    uint64_t any_ms = proc_now_ms() - r0;
    printf("# %zu read_any reads with n%zu down took %" PRIu64 " ms\n",
           any_reads, down + 1, any_ms);
    assert_true(any_ms < 300 * any_reads / 10); /* far below 600 ms each */

    assert_int_equal(proc_node_launch(nd), SHOAL_OK);
    uint64_t t0 = proc_now_ms();
    wait_synced(f);
    printf("# n%zu caught up in %" PRIu64 " ms\n", down + 1,
           proc_now_ms() - t0);
    digests_equal(f, w1_ok + w2_ok);
    /* All three up again: w=all goes through. */
    shoal_call wall_ok = {.w = 3};
    assert_int_equal(
        shoal_put(f->db, "wall:after", 10, "y", 1, NULL, NULL, &wall_ok),
        SHOAL_OK);
    /* And the restarted node serves what it missed (read-any there). */
    shoal_call any = {.read_any = true};
    for (int i = 1; i < N_RESTART; i += 97) {
        char k[64], v[128], got[128];
        snprintf(k, sizeof(k), "restart:%05d", i);
        snprintf(v, sizeof(v), "v:%s", k);
        if (f->m->primary[cc_map_shard(f->m, k, strlen(k))] == down)
            continue;
        shoal_err st;
        raw_key_op(f, down, k, NULL, true, &st, NULL, 0, got, sizeof(got));
        assert_int_equal(st, SHOAL_OK);
        assert_string_equal(got, v);
        get_eq(f->db, k, v, &any);
    }
}

/* ---- catch-up by snapshot (--repl-backlog 1m) ---------------------------- */

#define BIG_VAL 1024

/* Write n keys tag:%06d of BIG_VAL bytes in cross-shard batches of 64;
 * keys whose primary is node `skip_primary` (SIZE_MAX: none) are left out.
 * Returns the number written. */
static size_t
write_big(fx *f, const char *tag, size_t n, size_t skip_primary)
{
    static char val[BIG_VAL];
    memset(val, 'b', sizeof(val));
    size_t written = 0;
    shoal_batch_op ops[64];
    char keys[64][48];
    size_t k = 0;
    for (size_t i = 0; i <= n; i++) {
        if (i < n) {
            snprintf(keys[k], sizeof(keys[k]), "%s:%06zu", tag, i);
            if (f->m->primary[cc_map_shard(f->m, keys[k], strlen(keys[k]))] ==
                skip_primary)
                continue;
            memset(&ops[k], 0, sizeof(ops[k]));
            ops[k].kind = SHOAL_BATCH_PUT;
            ops[k].key = keys[k];
            ops[k].klen = strlen(keys[k]);
            ops[k].val = val;
            ops[k].vlen = sizeof(val);
            k++;
        }
        if (k == 64 || (i == n && k > 0)) {
            shoal_err rc = shoal_batch(f->db, ops, k, NULL, NULL, NULL);
            if (rc != SHOAL_OK)
                fail_msg("big batch (%s): %s", tag, shoal_errname(rc));
            written += k;
            k = 0;
        }
    }
    return written;
}

/* n keys of BIG_VAL bytes, all in shard `shard`, in batches of 64 (one
 * record each). */
static size_t
write_hot(fx *f, uint32_t shard, size_t n)
{
    static char val[BIG_VAL];
    memset(val, 'h', sizeof(val));
    shoal_batch_op ops[64];
    char keys[64][48];
    size_t k = 0, written = 0;
    for (uint64_t i = 0; written + k < n; i++) {
        snprintf(keys[k], sizeof(keys[k]), "hot:%u:%08" PRIu64, shard, i);
        if (cc_map_shard(f->m, keys[k], strlen(keys[k])) != shard)
            continue;
        memset(&ops[k], 0, sizeof(ops[k]));
        ops[k].kind = SHOAL_BATCH_PUT;
        ops[k].key = keys[k];
        ops[k].klen = strlen(keys[k]);
        ops[k].val = val;
        ops[k].vlen = sizeof(val);
        if (++k < 64 && written + k < n)
            continue;
        shoal_err rc = shoal_batch(f->db, ops, k, NULL, NULL, NULL);
        if (rc != SHOAL_OK)
            fail_msg("hot batch (shard %u): %s", shard, shoal_errname(rc));
        written += k;
        k = 0;
    }
    return written;
}

static bool
any_log_has(fx *f, const char *needle)
{
    for (size_t i = 0; i < proc_cluster_size(f->c); i++)
        if (proc_node_log_contains(proc_cluster_node(f->c, i), needle))
            return true;
    return false;
}

static void
test_snapshot_catchup(void **state)
{
    fx *f = *state;
    if (f->c == NULL)
        skip();
    uint64_t seed = tu_seed("snapshot catch-up nodes");
    size_t a = (size_t) (tu_rand(&seed) % 3);
    size_t b = (a + 1 + (size_t) (tu_rand(&seed) % 2)) % 3;

    /* 1. A follower stopped while > backlog bytes are written. */
    size_t w0 = write_big(f, "pre", 512, SIZE_MAX);
    wait_synced(f);
    printf("# stopping n%zu, writing ~4 MiB past a 1 MiB backlog\n", a + 1);
    assert_int_equal(proc_node_stop(proc_cluster_node(f->c, a), STOP_MS, NULL),
                     SHOAL_OK);
    size_t w1 = write_big(f, "gap", 4096, a);
    assert_int_equal(proc_node_launch(proc_cluster_node(f->c, a)), SHOAL_OK);
    uint64_t t0 = proc_now_ms();
    wait_synced(f);
    printf("# n%zu caught up in %" PRIu64 " ms\n", a + 1, proc_now_ms() - t0);
    digests_equal(f, w0 + w1);

    /* 2. A node with a wiped data dir: LSN 0, LSN 1 long gone. It is a
     * follower of the shards whose primary is another node; those must
     * catch up by snapshot. (It is also primary of a third of the shards:
     * test_wiped_primary looks at those.) */
    proc_node *nb = proc_cluster_node(f->c, b);
    printf("# wiping n%zu's data dir\n", b + 1);
    assert_int_equal(proc_node_stop(nb, STOP_MS, NULL), SHOAL_OK);
    assert_int_equal(tu_rm_rf(proc_node_data_dir(nb)), 0);
    /* Meanwhile more than the backlog goes to one shard per other
     * primary: the backlogs then hold records of those two shards only,
     * and every other shard must be sent as a snapshot from an empty
     * backlog. */
    size_t w2 = 0;
    for (size_t p = 0; p < 3; p++) {
        if (p == b)
            continue;
        uint32_t hot = 0;
        while (f->m->primary[hot] != p)
            hot++;
        w2 += write_hot(f, hot, 1400);
    }
    f->wiped = b;
    assert_int_equal(proc_node_launch(nb), SHOAL_OK);
    t0 = proc_now_ms();
    char why[256] = "";
    if (cc_wait_synced_skip(f->c, f->m, b, SYNC_MS, why, sizeof(why)) !=
        SHOAL_OK) {
        cc_dump_why(f->c, why);
        fail_msg("wiped n%zu never caught up as a follower: %s", b + 1, why);
    }
    printf("# fresh n%zu caught up (as follower) in %" PRIu64 " ms\n", b + 1,
           proc_now_ms() - t0);
    uint64_t keys = 0;
    long differ = cc_digests_compare_skip(f->c, f->m, b, &keys);
    printf("# digests of the shards n%zu follows: %ld differ, %" PRIu64
           " keys\n",
           b + 1, differ, keys);
    assert_int_equal(differ, 0);
    assert_true(keys >= (w0 + w1 + w2) / 2);
    /* The path taken was a snapshot (repl.c logs it at NOTICE). */
    char needle[64];
    snprintf(needle, sizeof(needle), "sending snapshot to n%zu", b + 1);
    bool snap = any_log_has(f, needle);
    printf("# a primary logged '%s': %s\n", needle, snap ? "yes" : "no");
    assert_true(snap);
}

/* The wiped node is also the primary of a third of the shards (a static
 * map: no failover). Its followers hold every acknowledged write of those
 * shards; it holds nothing. One lost disk is within R-W = 1 failed
 * replica, so no acknowledged write may be lost: each must read back with
 * its value, or the read must fail (the shard unavailable) -- never
 * SHOAL_ENOTFOUND, a silent loss. */
static void
test_wiped_primary(void **state)
{
    fx *f = *state;
    if (f->c == NULL || f->wiped == SIZE_MAX)
        skip();
    size_t b = f->wiped, ok = 0, lost = 0, failed = 0, total = 0;
    shoal_call call = {.timeout_ms = 2000};
    for (size_t i = 0; i < 512 && failed < 20; i++) {
        char k[48];
        snprintf(k, sizeof(k), "pre:%06zu", i);
        if (f->m->primary[cc_map_shard(f->m, k, strlen(k))] != b)
            continue;
        total++;
        void *v = NULL;
        size_t vlen = 0;
        shoal_err rc = shoal_get(f->db, k, strlen(k), &v, &vlen, NULL, &call);
        shoal_free(v);
        if (rc == SHOAL_OK && vlen == BIG_VAL)
            ok++;
        else if (rc == SHOAL_ENOTFOUND)
            lost++;
        else
            failed++;
    }
    printf("# shards whose primary n%zu was wiped: %zu acknowledged keys "
           "tried, %zu read back, %zu ENOTFOUND (silently lost), %zu "
           "failed\n",
           b + 1, total, ok, lost, failed);
    assert_true(total > 0);
    assert_int_equal(lost, 0);
}

int
main(void)
{
    const struct CMUnitTest ops[] = {
        cmocka_unit_test(test_routing),
        cmocka_unit_test(test_read_any),
        cmocka_unit_test(test_scan_count_batch),
        cmocka_unit_test(test_quorum_and_follower_restart),
    };
    const struct CMUnitTest snap[] = {
        cmocka_unit_test(test_snapshot_catchup),
        cmocka_unit_test(test_wiped_primary),
    };
    /* SHOAL_TEST_FILTER=test_snapshot* runs only the matching tests. */
    const char *filter = getenv("SHOAL_TEST_FILTER");
    if (filter != NULL && filter[0] != '\0')
        cmocka_set_test_filter(filter);
    int failed = cmocka_run_group_tests_name("cluster", ops, grp_up, grp_down);
    failed += cmocka_run_group_tests_name("cluster_snapshot", snap,
                                          grp_up_backlog, grp_down);
    return failed;
}
