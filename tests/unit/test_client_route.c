/*
 * test_client_route.c -- libshoal's pure cluster logic (client/client_route.c):
 * map validation of hostile maps, key -> shard -> node routing, splitting
 * by node and merging back (batch statuses, scan pages, counts).
 *
 * The functions are reached through the shoal__* test hooks that
 * libshoal.map exports; everything they return is freed with libshoal's
 * own shoal_free / shoal_scan_page_free.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "client/client_int.h"
#include "tests/support/testutil.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- a map under construction ----------------------------------------------
 */

#define T_NODES  3
#define T_SHARDS 8

typedef struct tmap {
    Shoal__ClusterMap m;
    Shoal__MapNode nodes[T_NODES + 1];
    Shoal__MapNode *node_ptrs[T_NODES + 1];
    char ids[T_NODES + 1][16];
    char addrs[T_NODES + 1][40];
    Shoal__MapShard shards[T_SHARDS + 1];
    Shoal__MapShard *shard_ptrs[T_SHARDS + 1];
    uint32_t reps[T_SHARDS + 1][CL_MAP_R_MAX + 2];
    uint8_t hk[KEYHASH_KEY_BYTES + 1];
} tmap;

/* A good map: 3 nodes, 8 shards, R = 2, shard s on nodes s%3 (primary) and
 * (s+1)%3. */
static void
tmap_init(tmap *t)
{
    memset(t, 0, sizeof(*t));
    shoal__cluster_map__init(&t->m);
    t->m.has_epoch = true;
    t->m.epoch = 7;
    t->m.has_shard_count = true;
    t->m.shard_count = T_SHARDS;
    t->m.has_replicas = t->m.has_write_quorum = true;
    t->m.replicas = 2;
    t->m.write_quorum = 2;
    memcpy(t->hk, "0123456789abcdef", KEYHASH_KEY_BYTES);
    t->m.has_hash_key = true;
    t->m.hash_key.data = t->hk;
    t->m.hash_key.len = KEYHASH_KEY_BYTES;
    for (unsigned i = 0; i < T_NODES; i++) {
        Shoal__MapNode *n = &t->nodes[i];
        shoal__map_node__init(n);
        snprintf(t->ids[i], sizeof(t->ids[i]), "n%u", i + 1);
        snprintf(t->addrs[i], sizeof(t->addrs[i]), "tcp://127.0.0.1:%u",
                 7400 + i);
        n->id = t->ids[i];
        n->addr = t->addrs[i];
        n->has_weight = true;
        n->weight = i + 1;
        t->node_ptrs[i] = n;
    }
    t->m.n_nodes = T_NODES;
    t->m.nodes = t->node_ptrs;
    for (unsigned s = 0; s < T_SHARDS; s++) {
        Shoal__MapShard *sh = &t->shards[s];
        shoal__map_shard__init(sh);
        sh->has_shard = sh->has_primary = true;
        sh->shard = s;
        sh->primary = s % T_NODES;
        t->reps[s][0] = s % T_NODES;
        t->reps[s][1] = (s + 1) % T_NODES;
        sh->replicas = t->reps[s];
        sh->n_replicas = 2;
        t->shard_ptrs[s] = sh;
    }
    t->m.n_shards = T_SHARDS;
    t->m.shards = t->shard_ptrs;
}

static void
test_client_route_good_map_copied(void **state)
{
    (void) state;
    tmap t;
    tmap_init(&t);
    /* Entries in any order: the copy indexes them by shard number. */
    Shoal__MapShard *tmp = t.shard_ptrs[0];
    t.shard_ptrs[0] = t.shard_ptrs[5];
    t.shard_ptrs[5] = tmp;
    cl_map *m = NULL;
    char err[160];
    assert_int_equal(shoal__map_from_pb(&t.m, &m, err, sizeof(err)), SHOAL_OK);
    assert_non_null(m);
    assert_int_equal(m->epoch, 7);
    assert_int_equal(m->shard_count, T_SHARDS);
    assert_int_equal(m->write_quorum, 2);
    assert_memory_equal(m->hash_key, "0123456789abcdef", KEYHASH_KEY_BYTES);
    assert_int_equal(m->n_nodes, T_NODES);
    assert_string_equal(m->nodes[2].id, "n3");
    assert_string_equal(m->nodes[2].addr, "tcp://127.0.0.1:7402");
    assert_string_equal(m->nodes[2].peer_addr, "");
    assert_int_equal(m->nodes[2].weight, 3);
    for (uint32_t s = 0; s < T_SHARDS; s++) {
        assert_int_equal(m->shards[s].primary, s % T_NODES);
        assert_int_equal(m->shards[s].n_replicas, 2);
        assert_int_equal(m->shards[s].replicas[1], (s + 1) % T_NODES);
    }
    shoal_free(m);

    /* A single node's map (no shard numbers: entries by position). */
    tmap_init(&t);
    t.m.n_nodes = 1;
    for (unsigned s = 0; s < T_SHARDS; s++) {
        t.shards[s].has_shard = false;
        t.shards[s].primary = 0;
        t.reps[s][0] = 0;
        t.shards[s].n_replicas = 1;
    }
    snprintf(t.addrs[0], sizeof(t.addrs[0]), "ipc:///tmp/shoal.sock");
    assert_int_equal(shoal__map_from_pb(&t.m, &m, err, sizeof(err)), SHOAL_OK);
    assert_int_equal(m->shards[T_SHARDS - 1].primary, 0);
    shoal_free(m);
}

/* One hostile change each; every one is refused with a reason. */
typedef void (*mutate_fn)(tmap *t);

#define SETS(buf, s) snprintf((buf), sizeof(buf), "%s", (s))
#define MUT(name, ...)              \
    static void mut_##name(tmap *t) \
    {                               \
        __VA_ARGS__;                \
    }

MUT(no_epoch, t->m.has_epoch = false)
MUT(epoch_zero, t->m.epoch = 0)
MUT(shards_zero, t->m.shard_count = 0)
MUT(shards_not_pow2, t->m.shard_count = 6; t->m.n_shards = 6)
MUT(shards_too_many, t->m.shard_count = 1u << 17)
MUT(shards_entries_fewer, t->m.n_shards = T_SHARDS - 1)
MUT(shards_entries_more, t->m.shard_count = 4)
MUT(no_hash_key, t->m.has_hash_key = false)
MUT(hash_key_short, t->m.hash_key.len = 15)
MUT(hash_key_long, t->m.hash_key.len = 17)
MUT(no_nodes, t->m.n_nodes = 0)
MUT(node_no_id, t->nodes[1].id = NULL)
MUT(node_empty_id, t->ids[1][0] = '\0')
MUT(node_id_space, SETS(t->ids[1], "n 2"))
MUT(node_id_ctrl, SETS(t->ids[1], "n\n2"))
MUT(node_dup_id, SETS(t->ids[2], "n1"))
MUT(node_no_addr, t->nodes[0].addr = NULL)
MUT(addr_scheme, SETS(t->addrs[0], "http://127.0.0.1:80"))
MUT(addr_no_port, SETS(t->addrs[0], "tcp://127.0.0.1"))
MUT(addr_empty_port, SETS(t->addrs[0], "tcp://127.0.0.1:"))
MUT(addr_no_host, SETS(t->addrs[0], "tcp://:7400"))
MUT(addr_port_zero, SETS(t->addrs[0], "tcp://h:0"))
MUT(addr_port_big, SETS(t->addrs[0], "tcp://h:70000"))
MUT(addr_port_junk, SETS(t->addrs[0], "tcp://h:74a0"))
MUT(addr_bare_ipc, SETS(t->addrs[0], "ipc://"))
MUT(addr_dup, SETS(t->addrs[2], t->addrs[0]))
MUT(shard_number_range, t->shards[3].shard = T_SHARDS)
MUT(shard_number_dup, t->shards[3].shard = 2)
MUT(shard_no_replicas, t->shards[3].n_replicas = 0)
MUT(shard_too_many_replicas, t->shards[3].n_replicas = CL_MAP_R_MAX + 1)
MUT(replica_range, t->reps[3][1] = T_NODES)
MUT(replica_huge, t->reps[3][1] = UINT32_MAX)
MUT(replica_dup, t->reps[3][1] = t->reps[3][0])
MUT(primary_missing, t->shards[4].has_primary = false)
MUT(primary_range, t->shards[4].primary = T_NODES + 5)
MUT(primary_not_replica, t->shards[4].primary = (4 + 2) % T_NODES)

static void
test_client_route_hostile_maps_rejected(void **state)
{
    (void) state;
    static const struct {
        const char *name;
        mutate_fn fn;
    } muts[] = {
#define M(n) {#n, mut_##n}
        M(no_epoch),
        M(epoch_zero),
        M(shards_zero),
        M(shards_not_pow2),
        M(shards_too_many),
        M(shards_entries_fewer),
        M(shards_entries_more),
        M(no_hash_key),
        M(hash_key_short),
        M(hash_key_long),
        M(no_nodes),
        M(node_no_id),
        M(node_empty_id),
        M(node_id_space),
        M(node_id_ctrl),
        M(node_dup_id),
        M(node_no_addr),
        M(addr_scheme),
        M(addr_no_port),
        M(addr_empty_port),
        M(addr_no_host),
        M(addr_port_zero),
        M(addr_port_big),
        M(addr_port_junk),
        M(addr_bare_ipc),
        M(addr_dup),
        M(shard_number_range),
        M(shard_number_dup),
        M(shard_no_replicas),
        M(shard_too_many_replicas),
        M(replica_range),
        M(replica_huge),
        M(replica_dup),
        M(primary_missing),
        M(primary_range),
        M(primary_not_replica),
#undef M
    };
    for (size_t i = 0; i < sizeof(muts) / sizeof(muts[0]); i++) {
        tmap t;
        tmap_init(&t);
        muts[i].fn(&t);
        cl_map *m = (cl_map *) (uintptr_t) 1;
        char err[160] = "";
        shoal_err rc = shoal__map_from_pb(&t.m, &m, err, sizeof(err));
        if (rc != SHOAL_EIO || m != NULL || err[0] == '\0')
            fail_msg("%s: rc %s, map %p, err '%s'", muts[i].name,
                     shoal_errname(rc), (void *) m, err);
    }
}

/* ---- routing
 * -----------------------------------------------------------------
 */

static void
test_client_route_key_to_primary(void **state)
{
    (void) state;
    uint64_t seed = tu_seed("client_route_key_to_primary"), rs = seed;
    tmap t;
    tmap_init(&t);
    cl_map *m = NULL;
    assert_int_equal(shoal__map_from_pb(&t.m, &m, NULL, 0), SHOAL_OK);
    unsigned per_node[T_NODES] = {0}, any_hits[T_NODES] = {0};
    for (int i = 0; i < 2000; i++) {
        uint8_t key[40];
        size_t klen = 1 + tu_rand(&rs) % sizeof(key);
        for (size_t k = 0; k < klen; k++)
            key[k] = (uint8_t) tu_rand(&rs);
        uint32_t shard = UINT32_MAX;
        uint32_t ni = shoal__map_route(m, key, klen, false, 0, &shard);
        assert_int_equal(shard, keyhash_shard(t.hk, key, klen, T_SHARDS));
        assert_int_equal(ni, shard % T_NODES); /* the shard's primary */
        per_node[ni]++;
        /* read_any: one of the shard's replicas, spread by spin. */
        uint32_t a = shoal__map_route(m, key, klen, true, (uint64_t) i, NULL);
        assert_true(a == shard % T_NODES || a == (shard + 1) % T_NODES);
        any_hits[a]++;
        assert_int_equal(
            shoal__map_route(m, key, klen, true, (uint64_t) i + 1, NULL),
            a == shard % T_NODES ? (shard + 1) % T_NODES : shard % T_NODES);
    }
    for (unsigned n = 0; n < T_NODES; n++) {
        assert_true(per_node[n] > 300); /* 8 shards over 3 nodes */
        assert_true(any_hits[n] > 300);
    }
    shoal_free(m);
}

static void
test_client_route_split_keeps_order(void **state)
{
    (void) state;
    const uint32_t node_of[] = {2, 0, 2, 1, 0, 2, 4};
    cl_split *s = NULL;
    assert_int_equal(shoal__split(node_of, 7, 5, &s), SHOAL_OK);
    /* Groups in order of first appearance, items ascending in each. */
    assert_int_equal(s->n_groups, 4);
    const uint32_t want_node[] = {2, 0, 1, 4};
    const size_t want_start[] = {0, 3, 5, 6, 7};
    const uint32_t want_idx[] = {0, 2, 5, 1, 4, 3, 6};
    for (size_t g = 0; g < 4; g++)
        assert_int_equal(s->node[g], want_node[g]);
    for (size_t g = 0; g < 5; g++)
        assert_int_equal(s->start[g], want_start[g]);
    for (size_t i = 0; i < 7; i++)
        assert_int_equal(s->idx[i], want_idx[i]);
    shoal_free(s);

    assert_int_equal(shoal__split(node_of, 7, 4, &s), SHOAL_EINVAL);
    assert_null(s);
    assert_int_equal(shoal__split(node_of, 0, 4, &s), SHOAL_OK);
    assert_int_equal(s->n_groups, 0);
    assert_int_equal(s->start[0], 0);
    shoal_free(s);
}

/* A batch of keys split by the map's primaries, statuses scattered back
 * in the caller's order; the overall status is the first failing op's. */
static void
test_client_route_batch_split_merge(void **state)
{
    (void) state;
    tmap t;
    tmap_init(&t);
    cl_map *m = NULL;
    assert_int_equal(shoal__map_from_pb(&t.m, &m, NULL, 0), SHOAL_OK);
    enum { N = 40 };
    char keys[N][16];
    uint32_t node_of[N];
    for (int i = 0; i < N; i++) {
        snprintf(keys[i], sizeof(keys[i]), "b:%d", i);
        node_of[i] =
            shoal__map_route(m, keys[i], strlen(keys[i]), false, 0, NULL);
    }
    cl_split *s = NULL;
    assert_int_equal(shoal__split(node_of, N, m->n_nodes, &s), SHOAL_OK);
    assert_int_equal(s->n_groups, T_NODES);
    /* Each node answers its part: statuses keyed by the op's index, so
     * the scatter can be checked; node 1 fails op 17 and 30 if it has
     * them, else its first. */
    shoal_err res[N];
    for (int i = 0; i < N; i++)
        res[i] = (shoal_err) 99;
    size_t seen = 0;
    for (size_t g = 0; g < s->n_groups; g++) {
        for (size_t j = s->start[g]; j < s->start[g + 1]; j++) {
            uint32_t op = s->idx[j];
            assert_int_equal(node_of[op], s->node[g]);
            if (j > s->start[g])
                assert_true(s->idx[j - 1] < op);
            res[op] = op % 7 == 3    ? SHOAL_EVERSION
                      : op % 11 == 5 ? SHOAL_EEXISTS
                                     : SHOAL_OK;
            seen++;
        }
    }
    assert_int_equal(seen, N);
    /* First failing in op order: op 3 (EVERSION), before op 5 (EEXISTS). */
    assert_int_equal(shoal__batch_status(res, N), SHOAL_EVERSION);
    assert_int_equal(shoal__batch_status(res + 4, N - 4), SHOAL_EEXISTS);
    assert_int_equal(shoal__batch_status(res, 3), SHOAL_OK);
    assert_int_equal(shoal__batch_status(res, 0), SHOAL_OK);
    shoal_free(s);
    shoal_free(m);
}

/* ---- scan merge
 * ---------------------------------------------------------------
 */

/* A page as a node would send it: keys given as strings. */
typedef struct tpage {
    shoal_scan_page p;
    shoal_item items[64];
} tpage;

static void
tpage_set(tpage *t, bool more, const char *const *keys, size_t n)
{
    memset(t, 0, sizeof(*t));
    t->p.items = t->items;
    t->p.n_items = n;
    t->p.more = more;
    for (size_t i = 0; i < n; i++) {
        t->items[i].key = (const uint8_t *) keys[i];
        t->items[i].klen = strlen(keys[i]);
        t->items[i].val = (const uint8_t *) "v";
        t->items[i].vlen = 1;
        t->items[i].version = i + 1;
    }
    if (more && n > 0) {
        t->p.token = t->items[n - 1].key;
        t->p.token_len = t->items[n - 1].klen;
    }
}

static void
assert_page(const shoal_scan_page *p, const char *const *want, size_t n,
            bool more)
{
    assert_int_equal(p->n_items, n);
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(p->items[i].klen, strlen(want[i]));
        assert_memory_equal(p->items[i].key, want[i], p->items[i].klen);
    }
    assert_int_equal(p->more, more);
    if (more) {
        assert_int_equal(p->token_len, strlen(want[n - 1]));
        assert_memory_equal(p->token, want[n - 1], p->token_len);
    } else {
        assert_null(p->token);
        assert_int_equal(p->token_len, 0);
    }
}

static void
test_client_route_scan_merge_edges(void **state)
{
    (void) state;
    static tpage a, b, c;
    const shoal_scan_page *parts[] = {&a.p, &b.p, &c.p};
    shoal_scan_page *out = NULL;
    const char *ka[] = {"a", "d", "g"}, *kb[] = {"b", "e"},
               *kc[] = {"c", "f", "h", "i"};

    /* All fits: sorted, no more, values kept. */
    tpage_set(&a, false, ka, 3);
    tpage_set(&b, false, kb, 2);
    tpage_set(&c, false, kc, 4);
    assert_int_equal(shoal__scan_merge(parts, 3, 100, false, &out), SHOAL_OK);
    const char *all[] = {"a", "b", "c", "d", "e", "f", "g", "h", "i"};
    assert_page(out, all, 9, false);
    assert_int_equal(out->items[0].vlen, 1);
    assert_memory_equal(out->items[0].val, "v", 1);
    shoal_scan_page_free(out);

    /* Exactly the limit and nothing left: no more. */
    assert_int_equal(shoal__scan_merge(parts, 3, 9, true, &out), SHOAL_OK);
    assert_page(out, all, 9, false);
    assert_null(out->items[3].val); /* keys_only */
    shoal_scan_page_free(out);

    /* Over the limit: cut, more, token = last key returned. */
    assert_int_equal(shoal__scan_merge(parts, 3, 4, false, &out), SHOAL_OK);
    assert_page(out, all, 4, true);
    shoal_scan_page_free(out);

    /* A part that stopped early (more) bounds the page at its last key:
     * b may hold keys between "e" and the others' later keys. */
    tpage_set(&b, true, kb, 2);
    assert_int_equal(shoal__scan_merge(parts, 3, 100, false, &out), SHOAL_OK);
    assert_page(out, all, 5, true);
    shoal_scan_page_free(out);

    /* The limit comes before the bound. */
    assert_int_equal(shoal__scan_merge(parts, 3, 2, false, &out), SHOAL_OK);
    assert_page(out, all, 2, true);
    shoal_scan_page_free(out);

    /* Two parts with more: the smaller last key bounds. */
    tpage_set(&a, true, ka, 2); /* a, d */
    assert_int_equal(shoal__scan_merge(parts, 3, 100, false, &out), SHOAL_OK);
    assert_page(out, all, 4, true); /* a b c d */
    shoal_scan_page_free(out);

    /* Limit 0 means the default page (100). */
    tpage_set(&a, false, ka, 3);
    tpage_set(&b, false, kb, 2);
    assert_int_equal(shoal__scan_merge(parts, 3, 0, false, &out), SHOAL_OK);
    assert_page(out, all, 9, false);
    shoal_scan_page_free(out);

    /* Empty parts, no parts. */
    tpage_set(&a, false, NULL, 0);
    tpage_set(&b, false, NULL, 0);
    tpage_set(&c, false, NULL, 0);
    assert_int_equal(shoal__scan_merge(parts, 3, 10, false, &out), SHOAL_OK);
    assert_page(out, NULL, 0, false);
    shoal_scan_page_free(out);
    assert_int_equal(shoal__scan_merge(parts, 0, 10, false, &out), SHOAL_OK);
    assert_page(out, NULL, 0, false);
    shoal_scan_page_free(out);

    /* Prefix keys order before their extensions; a duplicate is kept once. */
    const char *kp[] = {"ab", "abc"}, *kq[] = {"a", "ab", "b"};
    tpage_set(&a, false, kp, 2);
    tpage_set(&b, false, kq, 3);
    assert_int_equal(shoal__scan_merge(parts, 2, 10, false, &out), SHOAL_OK);
    const char *pq[] = {"a", "ab", "abc", "b"};
    assert_page(out, pq, 4, false);
    shoal_scan_page_free(out);

    /* Hostile parts: out of order, a repeat inside a part, more with no
     * items. */
    const char *bad[] = {"b", "a"}, *rep[] = {"a", "a"};
    tpage_set(&a, false, bad, 2);
    out = (shoal_scan_page *) (uintptr_t) 1;
    assert_int_equal(shoal__scan_merge(parts, 1, 10, false, &out), SHOAL_EIO);
    assert_null(out);
    tpage_set(&a, false, rep, 2);
    assert_int_equal(shoal__scan_merge(parts, 1, 10, false, &out), SHOAL_EIO);
    tpage_set(&a, true, NULL, 0);
    assert_int_equal(shoal__scan_merge(parts, 1, 10, false, &out), SHOAL_EIO);
}

/* A node's answer to a page request: its keys (sorted) after token, at
 * most limit, stopping early at random as a node bounded by bytes does. */
static void
node_page(tpage *t, const char *const *keys, size_t n, const char *token,
          uint32_t limit, uint64_t *rs)
{
    const char *sel[64];
    size_t k = 0, i = 0;
    while (i < n && token != NULL && strcmp(keys[i], token) <= 0)
        i++;
    uint32_t cap = limit;
    if (tu_rand(rs) % 3 == 0)
        cap = 1 + (uint32_t) (tu_rand(rs) % limit); /* early stop */
    while (i < n && k < cap)
        sel[k++] = keys[i++];
    tpage_set(t, i < n, sel, k);
}

/* Paging through random key sets split over several nodes returns every
 * key exactly once, in order, with limit honoured on every page. */
static void
test_client_route_scan_merge_pages_random(void **state)
{
    (void) state;
    uint64_t seed = tu_seed("client_route_scan_merge_pages_random"), rs = seed;
    enum { MAXN = 60, PARTS = 4 };
    static char names[MAXN][8];
    for (int round = 0; round < 300; round++) {
        size_t n = tu_rand(&rs) % MAXN;
        const char *all[MAXN], *per[PARTS][MAXN];
        size_t n_per[PARTS] = {0};
        for (size_t i = 0; i < n; i++) {
            snprintf(names[i], sizeof(names[i]), "k%03zu", i);
            all[i] = names[i];
            size_t p = tu_rand(&rs) % PARTS;
            per[p][n_per[p]++] = names[i];
        }
        uint32_t limit = 1 + (uint32_t) (tu_rand(&rs) % 12);
        char token[8] = "";
        bool have_token = false;
        size_t got = 0;
        for (int page = 0; page < 200; page++) {
            static tpage tp[PARTS];
            const shoal_scan_page *parts[PARTS];
            for (size_t p = 0; p < PARTS; p++) {
                node_page(&tp[p], per[p], n_per[p], have_token ? token : NULL,
                          limit, &rs);
                parts[p] = &tp[p].p;
            }
            shoal_scan_page *out = NULL;
            assert_int_equal(shoal__scan_merge(parts, PARTS, limit, true, &out),
                             SHOAL_OK);
            if (out->n_items > limit)
                fail_msg("seed %" PRIu64 ": page over the limit", seed);
            for (size_t i = 0; i < out->n_items; i++, got++) {
                if (got >= n || out->items[i].klen != strlen(all[got]) ||
                    memcmp(out->items[i].key, all[got], out->items[i].klen))
                    fail_msg("seed %" PRIu64 " round %d: item %zu wrong", seed,
                             round, got);
            }
            bool more = out->more;
            if (more) {
                assert_true(out->token_len < sizeof(token));
                memcpy(token, out->token, out->token_len);
                token[out->token_len] = '\0';
                have_token = true;
            }
            shoal_scan_page_free(out);
            if (!more)
                break;
        }
        if (got != n)
            fail_msg("seed %" PRIu64 " round %d: %zu of %zu keys", seed, round,
                     got, n);
    }
}

static void
test_client_route_count_sum(void **state)
{
    (void) state;
    const uint64_t c[] = {3, 0, 40, 1000};
    uint64_t sum = 1;
    assert_int_equal(shoal__count_sum(c, 4, &sum), SHOAL_OK);
    assert_int_equal(sum, 1043);
    assert_int_equal(shoal__count_sum(c, 0, &sum), SHOAL_OK);
    assert_int_equal(sum, 0);
    const uint64_t big[] = {UINT64_MAX - 1, 1, 1};
    sum = 5;
    assert_int_equal(shoal__count_sum(big, 2, &sum), SHOAL_OK);
    assert_int_equal(sum, UINT64_MAX);
    assert_int_equal(shoal__count_sum(big, 3, &sum), SHOAL_EIO);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_client_route_good_map_copied),
        cmocka_unit_test(test_client_route_hostile_maps_rejected),
        cmocka_unit_test(test_client_route_key_to_primary),
        cmocka_unit_test(test_client_route_split_keeps_order),
        cmocka_unit_test(test_client_route_batch_split_merge),
        cmocka_unit_test(test_client_route_scan_merge_edges),
        cmocka_unit_test(test_client_route_scan_merge_pages_random),
        cmocka_unit_test(test_client_route_count_sum),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
