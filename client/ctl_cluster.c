/*
 * ctl_cluster.c -- `shoalctl cluster status`: every node's view of
 * replication, side by side.
 *
 * The node list comes from the cluster map libshoal holds
 * (shoal_cluster_nodes); each node is then asked for its ClusterStatusResp
 * (op cluster_status, admin role) through shoal_cluster_status_node, all
 * nodes at once (one thread each), so a node that does not answer costs one
 * deadline, not one per node. A node whose call fails with
 * SHOAL_EUNAVAILABLE, SHOAL_ETIMEOUT or SHOAL_ECLOSED is "down"; any other
 * failure (EPERM for a non-admin key, ...) is shown as that error.
 *
 * What is derived from the answers:
 *  - per node: shards held as primary and as follower, its map epoch
 *    (marked when it differs from the map libshoal holds), backlog bytes;
 *  - per (primary, follower) node pair, from the primaries' follower lists:
 *    shards, shards lagging (lag > 0), max and summed lag in LSNs, shards
 *    whose follower is disconnected or not streaming.
 *
 * Exit code: 0 when every node answered, 5 (CTL_EXIT_UNAVAIL) when any node
 * is down, else the exit code of the first other failure.
 *
 * JSON (--json, one object):
 *   {"map_epoch","nodes":[{"id","addr","peer_addr","weight","up":bool,
 *     "error" (SHOAL_E..., when the call failed),"map_epoch","backlog_bytes",
 *     "primary_shards","follower_shards","shards":[{"shard","primary":bool,
 *     "lsn","shard_epoch","followers":[{"node_id","acked_lsn","lag",
 *     "connected":bool,"state":"streaming"|"catching_up"|"snapshot"}]}]}],
 *    "lag":{"max_lag","shards_lagging","pairs":[{"primary","follower",
 *     "shards","lagging","max_lag","total_lag","disconnected",
 *     "not_streaming"}]},"nodes_down"}
 */
#include "ctl_int.h"

#include "proto/mem.h"
#include "proto/pbuf.h"
#include "proto/shoal.pb-c.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#define CLUSTER_MAX_NODES 1024

static const char cluster_help[] =
    "usage: shoalctl [global options] cluster status [--json]\n"
    "\n"
    "Ask every node of the cluster map for its view of replication (needs "
    "an\n"
    "admin key) and print, per node: address, up/down, shards held as\n"
    "primary and as follower, its map epoch (* when it differs from the map\n"
    "this client holds) and replication backlog; then per (primary,\n"
    "follower) node pair: shards, shards lagging, max and total lag in "
    "LSNs,\n"
    "shards whose follower is disconnected.\n"
    "\n"
    "--json: one object\n"
    "  {\"map_epoch\",\"nodes\":[{\"id\",\"addr\",\"peer_addr\","
    "\"weight\",\"up\":bool,\n"
    "    \"error\" (when its call failed),\"map_epoch\",\"backlog_bytes\",\n"
    "    \"primary_shards\",\"follower_shards\",\"shards\":[{\"shard\","
    "\"primary\":bool,\n"
    "    \"lsn\",\"shard_epoch\",\"followers\":[{\"node_id\",\"acked_lsn\","
    "\"lag\",\n"
    "    \"connected\":bool,\"state\":\"streaming\"|\"catching_up\"|"
    "\"snapshot\"}]}]}],\n"
    "   \"lag\":{\"max_lag\",\"shards_lagging\",\"pairs\":[{\"primary\","
    "\"follower\",\n"
    "    \"shards\",\"lagging\",\"max_lag\",\"total_lag\",\"disconnected\","
    "\n"
    "    \"not_streaming\"}]},\"nodes_down\"}\n"
    "\n"
    "Exit code: 0 every node answered, 5 a node is down (did not answer),\n"
    "else the code of the first other error (4: the key is not admin).\n";

/* One node's answer. */
typedef struct node_view {
    const shoal_cluster_node *info; /* borrowed from the node list */
    shoal *db;
    shoal_err rc;                   /* of the status call */
    Shoal__ClusterStatusResp *st;   /* unpacked answer, NULL when rc fails */
    uint32_t n_primary, n_follower; /* shards held */
    pthread_t thr;
    bool started; /* thr runs */
} node_view;

/* Lag of one (primary, follower) node pair. */
typedef struct lag_pair {
    const char *primary, *follower; /* borrowed */
    uint64_t shards, lagging, max_lag, total_lag, disconnected, not_streaming;
} lag_pair;

typedef struct lag_sum {
    lag_pair *pairs;
    size_t n_pairs, cap;
    uint64_t max_lag, shards_lagging;
    bool oom;
} lag_sum;

static bool
is_down(shoal_err rc)
{
    return rc == SHOAL_EUNAVAILABLE || rc == SHOAL_ETIMEOUT ||
           rc == SHOAL_ECLOSED;
}

static const char *
follower_state(uint32_t s)
{
    static const char *const names[] = {"streaming", "catching_up", "snapshot"};
    return s < 3 ? names[s] : "unknown";
}

/* ---- asking the nodes ---------------------------------------------------- */

static void *
ask_node(void *arg)
{
    node_view *v = arg;
    void *pb = NULL;
    size_t len = 0;
    v->rc = shoal_cluster_status_node(v->db, v->info->id, &pb, &len);
    if (v->rc == SHOAL_OK) {
        v->st = shoal__cluster_status_resp__unpack(pbuf_allocator(), len, pb);
        if (v->st == NULL)
            v->rc = SHOAL_EIO; /* the node answered bytes we cannot read */
    }
    shoal_free(pb);
    for (size_t i = 0; v->st != NULL && i < v->st->n_shards; i++) {
        if (v->st->shards[i]->primary)
            v->n_primary++;
        else
            v->n_follower++;
    }
    return NULL;
}

/* Ask every node at once; a thread that cannot start asks inline. */
static void
ask_all(node_view *v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        v[i].started = pthread_create(&v[i].thr, NULL, ask_node, &v[i]) == 0;
    for (size_t i = 0; i < n; i++) {
        if (v[i].started)
            pthread_join(v[i].thr, NULL);
        else
            ask_node(&v[i]);
    }
}

/* ---- lag by node pair ---------------------------------------------------- */

static lag_pair *
pair_get(lag_sum *s, const char *primary, const char *follower)
{
    for (size_t i = 0; i < s->n_pairs; i++)
        if (strcmp(s->pairs[i].primary, primary) == 0 &&
            strcmp(s->pairs[i].follower, follower) == 0)
            return &s->pairs[i];
    if (s->n_pairs == s->cap) {
        size_t cap = s->cap ? 2 * s->cap : 16;
        lag_pair *p = mem_realloc(s->pairs, cap * sizeof(*p));
        if (p == NULL) {
            s->oom = true;
            return NULL;
        }
        s->pairs = p;
        s->cap = cap;
    }
    lag_pair *p = &s->pairs[s->n_pairs++];
    memset(p, 0, sizeof(*p));
    p->primary = primary;
    p->follower = follower;
    return p;
}

static void
lag_add(lag_sum *s, const char *primary, const Shoal__ShardStatus *sh)
{
    bool lagging = false;
    for (size_t f = 0; f < sh->n_followers; f++) {
        const Shoal__FollowerStatus *fs = sh->followers[f];
        lag_pair *p = pair_get(s, primary, fs->node_id ? fs->node_id : "?");
        if (p == NULL)
            return;
        p->shards++;
        p->lagging += fs->lag > 0;
        p->total_lag += fs->lag;
        p->max_lag = fs->lag > p->max_lag ? fs->lag : p->max_lag;
        p->disconnected += !fs->connected;
        p->not_streaming += fs->state != 0;
        s->max_lag = fs->lag > s->max_lag ? fs->lag : s->max_lag;
        lagging = lagging || fs->lag > 0;
    }
    s->shards_lagging += lagging;
}

static int
pair_cmp(const void *a, const void *b)
{
    const lag_pair *x = a, *y = b;
    int c = strcmp(x->primary, y->primary);
    return c != 0 ? c : strcmp(x->follower, y->follower);
}

/* Pairs from every primary's follower list, sorted by primary, follower. */
static void
lag_collect(lag_sum *s, const node_view *v, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        const Shoal__ClusterStatusResp *st = v[i].st;
        const char *id = st && st->node_id ? st->node_id : v[i].info->id;
        for (size_t k = 0; st != NULL && k < st->n_shards; k++)
            if (st->shards[k]->primary)
                lag_add(s, id, st->shards[k]);
    }
    if (s->n_pairs > 1)
        qsort(s->pairs, s->n_pairs, sizeof(s->pairs[0]), pair_cmp);
}

/* ---- output -------------------------------------------------------------- */

static void
json_str(ctl_sb *sb, const char *name, const char *s)
{
    ctl_sb_printf(sb, "\"%s\":", name);
    if (s == NULL)
        ctl_sb_put(sb, "null", 4);
    else
        ctl_sb_json_str(sb, s, strlen(s));
}

static void
json_shard(ctl_sb *sb, const Shoal__ShardStatus *sh)
{
    ctl_sb_printf(sb,
                  "{\"shard\":%u,\"primary\":%s,\"lsn\":%llu,"
                  "\"shard_epoch\":%u,\"followers\":[",
                  (unsigned) sh->shard, sh->primary ? "true" : "false",
                  (unsigned long long) sh->lsn, (unsigned) sh->shard_epoch);
    for (size_t f = 0; f < sh->n_followers; f++) {
        const Shoal__FollowerStatus *fs = sh->followers[f];
        ctl_sb_put(sb, f ? ",{" : "{", f ? 2 : 1);
        json_str(sb, "node_id", fs->node_id);
        ctl_sb_printf(
            sb,
            ",\"acked_lsn\":%llu,\"lag\":%llu,\"connected\":%s,"
            "\"state\":\"%s\"}",
            (unsigned long long) fs->acked_lsn, (unsigned long long) fs->lag,
            fs->connected ? "true" : "false", follower_state(fs->state));
    }
    ctl_sb_put(sb, "]}", 2);
}

static void
json_node(ctl_sb *sb, const node_view *v)
{
    ctl_sb_put(sb, "{", 1);
    json_str(sb, "id", v->info->id);
    ctl_sb_put(sb, ",", 1);
    json_str(sb, "addr", v->info->addr);
    ctl_sb_put(sb, ",", 1);
    json_str(sb, "peer_addr", v->info->peer_addr);
    ctl_sb_printf(sb, ",\"weight\":%u,\"up\":%s", (unsigned) v->info->weight,
                  is_down(v->rc) ? "false" : "true");
    if (v->st == NULL) {
        ctl_sb_printf(sb, ",\"error\":\"%s\"}", shoal_errname(v->rc));
        return;
    }
    ctl_sb_printf(sb,
                  ",\"map_epoch\":%llu,\"backlog_bytes\":%llu,"
                  "\"primary_shards\":%u,\"follower_shards\":%u,\"shards\":[",
                  (unsigned long long) v->st->map_epoch,
                  (unsigned long long) v->st->backlog_bytes, v->n_primary,
                  v->n_follower);
    for (size_t k = 0; k < v->st->n_shards; k++) {
        if (k)
            ctl_sb_put(sb, ",", 1);
        json_shard(sb, v->st->shards[k]);
    }
    ctl_sb_put(sb, "]}", 2);
}

static void
json_all(ctl_sb *sb, uint64_t epoch, const node_view *v, size_t n,
         const lag_sum *lag, size_t n_down)
{
    ctl_sb_printf(sb, "{\"map_epoch\":%llu,\"nodes\":[",
                  (unsigned long long) epoch);
    for (size_t i = 0; i < n; i++) {
        if (i)
            ctl_sb_put(sb, ",", 1);
        json_node(sb, &v[i]);
    }
    ctl_sb_printf(sb,
                  "],\"lag\":{\"max_lag\":%llu,\"shards_lagging\":%llu,"
                  "\"pairs\":[",
                  (unsigned long long) lag->max_lag,
                  (unsigned long long) lag->shards_lagging);
    for (size_t i = 0; i < lag->n_pairs; i++) {
        const lag_pair *p = &lag->pairs[i];
        ctl_sb_put(sb, i ? ",{" : "{", i ? 2 : 1);
        json_str(sb, "primary", p->primary);
        ctl_sb_put(sb, ",", 1);
        json_str(sb, "follower", p->follower);
        ctl_sb_printf(
            sb,
            ",\"shards\":%llu,\"lagging\":%llu,\"max_lag\":%llu,"
            "\"total_lag\":%llu,\"disconnected\":%llu,\"not_streaming\":%llu}",
            (unsigned long long) p->shards, (unsigned long long) p->lagging,
            (unsigned long long) p->max_lag, (unsigned long long) p->total_lag,
            (unsigned long long) p->disconnected,
            (unsigned long long) p->not_streaming);
    }
    ctl_sb_printf(sb, "]},\"nodes_down\":%zu}\n", n_down);
}

static void
text_node_row(ctl_table *t, uint64_t epoch, const node_view *v)
{
    char prim[16] = "-", foll[16] = "-", ep[32] = "-";
    const char *state = v->rc == SHOAL_OK ? "up"
                        : is_down(v->rc)  ? "down"
                                          : shoal_errname(v->rc);
    ctl_sb backlog = {0};
    if (v->st != NULL) {
        snprintf(prim, sizeof(prim), "%u", v->n_primary);
        snprintf(foll, sizeof(foll), "%u", v->n_follower);
        snprintf(ep, sizeof(ep), "%llu%s",
                 (unsigned long long) v->st->map_epoch,
                 v->st->map_epoch != epoch ? "*" : "");
        ctl_sb_size(&backlog, v->st->backlog_bytes);
    } else {
        ctl_sb_put(&backlog, "-", 1);
    }
    const char *row[] = {
        v->info->id, v->info->addr ? v->info->addr : "?", state, prim, foll,
        ep,          backlog.oom ? "?" : backlog.ptr};
    ctl_table_row(t, row);
    ctl_sb_free(&backlog);
}

static void
text_lag(ctl_sb *sb, const lag_sum *lag)
{
    ctl_sb_printf(sb, "\nreplication: max lag %llu, %llu shard%s lagging\n",
                  (unsigned long long) lag->max_lag,
                  (unsigned long long) lag->shards_lagging,
                  lag->shards_lagging == 1 ? "" : "s");
    if (lag->n_pairs == 0)
        return;
    static const char *const head[] = {"PRIMARY",     "FOLLOWER", "SHARDS",
                                       "LAGGING",     "MAX LAG",  "TOTAL LAG",
                                       "DISCONNECTED"};
    ctl_table t;
    ctl_table_init(&t, 7, 40);
    for (size_t i = 2; i < 7; i++)
        t.right[i] = true;
    ctl_table_row(&t, head);
    for (size_t i = 0; i < lag->n_pairs; i++) {
        const lag_pair *p = &lag->pairs[i];
        char num[5][24];
        const uint64_t vals[5] = {p->shards, p->lagging, p->max_lag,
                                  p->total_lag, p->disconnected};
        for (size_t k = 0; k < 5; k++)
            snprintf(num[k], sizeof(num[k]), "%llu",
                     (unsigned long long) vals[k]);
        const char *row[] = {p->primary, p->follower, num[0], num[1],
                             num[2],     num[3],      num[4]};
        ctl_table_row(&t, row);
    }
    ctl_table_render(&t, sb);
    ctl_table_fini(&t);
}

static void
text_all(ctl_sb *sb, uint64_t epoch, const node_view *v, size_t n,
         const lag_sum *lag, size_t n_down)
{
    static const char *const head[] = {"NODE",     "ADDR",  "STATE",  "PRIMARY",
                                       "FOLLOWER", "EPOCH", "BACKLOG"};
    ctl_sb_printf(sb, "cluster map epoch %llu: %zu node%s, %zu down\n",
                  (unsigned long long) epoch, n, n == 1 ? "" : "s", n_down);
    ctl_table t;
    ctl_table_init(&t, 7, 60);
    for (size_t i = 3; i < 7; i++)
        t.right[i] = true;
    ctl_table_row(&t, head);
    bool stale = false;
    for (size_t i = 0; i < n; i++) {
        text_node_row(&t, epoch, &v[i]);
        stale = stale || (v[i].st != NULL && v[i].st->map_epoch != epoch);
    }
    ctl_table_render(&t, sb);
    ctl_table_fini(&t);
    if (stale)
        ctl_sb_printf(sb, "* the node holds another map epoch than %llu\n",
                      (unsigned long long) epoch);
    text_lag(sb, lag);
}

/* ---- the command --------------------------------------------------------- */

/* The exit code: 5 when a node is down, else the first other failure's. */
static int
status_exit(ctl *c, const node_view *v, size_t n, size_t *n_down)
{
    int ec = CTL_EXIT_OK;
    *n_down = 0;
    for (size_t i = 0; i < n; i++) {
        if (is_down(v[i].rc))
            (*n_down)++;
        else if (v[i].rc != SHOAL_OK && ec == CTL_EXIT_OK)
            ec = ctl_exit_code(v[i].rc);
    }
    for (size_t i = 0; i < n; i++)
        if (v[i].rc != SHOAL_OK)
            fprintf(stderr, "shoalctl: %s: node %s (%s): %s (%s)\n", c->cmd,
                    v[i].info->id, v[i].info->addr ? v[i].info->addr : "?",
                    shoal_strerror(v[i].rc), shoal_errname(v[i].rc));
    return *n_down > 0 ? CTL_EXIT_UNAVAIL : ec;
}

static int
print_status(ctl *c, node_view *v, size_t n)
{
    lag_sum lag = {0};
    size_t n_down = 0;
    uint64_t epoch = shoal_map_epoch(c->db);
    lag_collect(&lag, v, n);
    int ec = status_exit(c, v, n, &n_down);
    ctl_sb sb = {0};
    if (lag.oom)
        sb.oom = true;
    else if (c->json)
        json_all(&sb, epoch, v, n, &lag, n_down);
    else
        text_all(&sb, epoch, v, n, &lag, n_down);
    int fec = ctl_sb_flush(c, &sb, stdout);
    ctl_sb_free(&sb);
    mem_free(lag.pairs);
    return fec != CTL_EXIT_OK ? fec : ec;
}

static int
cluster_status(ctl *c, int argc, char **argv)
{
    const ctl_opt opts[] = {
        {"--json", NULL, CTL_OPT_FLAG, &c->json, NULL, 0, 0, NULL},
        {NULL, NULL, CTL_OPT_FLAG, NULL, NULL, 0, 0, NULL},
    };
    int ec = ctl_parse(c, argc, argv, opts, NULL, 0, 0, NULL);
    if (ec == CTL_EXIT_OK)
        ec = ctl_connect(c);
    if (ec != CTL_EXIT_OK)
        return ec;
    shoal_cluster_node *nodes = NULL;
    size_t n = 0;
    shoal_err rc = shoal_cluster_nodes(c->db, &nodes, &n);
    if (rc != SHOAL_OK)
        return ctl_fail(c, rc, "reading the cluster map");
    node_view *v =
        n > 0 && n <= CLUSTER_MAX_NODES ? mem_calloc(n, sizeof(*v)) : NULL;
    if (v == NULL) {
        shoal_cluster_nodes_free(nodes, n);
        return ctl_fail(c, n == 0 ? SHOAL_EIO : SHOAL_ENOMEM,
                        n == 0 ? "the cluster map has no node" : NULL);
    }
    for (size_t i = 0; i < n; i++) {
        v[i].info = &nodes[i];
        v[i].db = c->db;
    }
    ask_all(v, n);
    ec = print_status(c, v, n);
    for (size_t i = 0; i < n; i++)
        if (v[i].st != NULL)
            shoal__cluster_status_resp__free_unpacked(v[i].st,
                                                      pbuf_allocator());
    mem_free(v);
    shoal_cluster_nodes_free(nodes, n);
    return ec;
}

int
ctl_cmd_cluster(ctl *c, int argc, char **argv)
{
    if (argc > 0 &&
        (strcmp(argv[0], "--help") == 0 || strcmp(argv[0], "-h") == 0)) {
        fputs(cluster_help, stdout);
        return CTL_EXIT_OK;
    }
    if (argc == 0)
        return ctl_usage(c, "no subcommand given (status)");
    if (strcmp(argv[0], "status") == 0) {
        for (int i = 1; i < argc && strcmp(argv[i], "--") != 0; i++)
            if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
                fputs(cluster_help, stdout);
                return CTL_EXIT_OK;
            }
        return cluster_status(c, argc - 1, argv + 1);
    }
    return ctl_usage(c, "unknown subcommand '%s' (status)", argv[0]);
}
