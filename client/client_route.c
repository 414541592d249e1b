/*
 * client_route.c -- libshoal's pure cluster logic (client_int.h): no I/O,
 * no locks, no logging, so tests/unit/test_client_route.c can drive it.
 *
 * The map arrives from nodes and is hostile input like any answer: it is
 * checked whole (shoal__map_from_pb) before the handle routes by it, so the
 * router never bounds-checks again: every shard has an entry, every
 * primary and replica is a node index.
 *
 * Map copy layout (one allocation):
 *   cl_map | cl_map_node[n_nodes] | cl_map_shard[shard_count] |
 *   uint32_t replicas[sum of n_replicas] | strings (id, addr, peer_addr,
 *   each NUL-terminated)
 *
 * Routing: shard = keyhash_shard(hash_key, key, shard_count) (DESIGN §3),
 * node = the shard's primary, or for read_any reads replicas[spin mod R].
 *
 * Scan merge: each node returns its shards' keys in order, at most limit,
 * and may stop early (its page's byte bound) saying more. Keys of a part
 * with more may continue right after its last item, interleaved with the
 * other parts' keys, so the merged page stops at the smallest last key of
 * such a part: the next page (token = last key returned, exclusive) asks
 * every node again from there, and nothing is skipped or repeated.
 */
#include "client_int.h"

#include "proto/mem.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static shoal_err reject(char *err, size_t err_len, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static shoal_err
reject(char *err, size_t err_len, const char *fmt, ...)
{
    if (err != NULL && err_len > 0) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, err_len, fmt, ap);
        va_end(ap);
    }
    return SHOAL_EIO;
}

/* ---- map validation -------------------------------------------------------
 */

static bool
printable(const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++)
        if ((unsigned char) s[i] <= 0x20 || (unsigned char) s[i] >= 0x7f)
            return false;
    return true;
}

/* tcp://host:port (port 1..65535, host non-empty) or ipc://path. */
static bool
addr_ok(const char *a)
{
    size_t len = strlen(a);
    if (len > CL_NODE_ADDR_MAX || !printable(a, len))
        return false;
    if (strncmp(a, "ipc://", 6) == 0)
        return len > 6;
    if (strncmp(a, "tcp://", 6) != 0)
        return false;
    const char *colon = strrchr(a + 6, ':');
    if (colon == NULL || colon == a + 6 || colon[1] == '\0')
        return false;
    unsigned long port = 0;
    for (const char *p = colon + 1; *p != '\0'; p++) {
        if (*p < '0' || *p > '9' || p - colon > 5)
            return false;
        port = port * 10 + (unsigned long) (*p - '0');
    }
    return port >= 1 && port <= 65535;
}

static shoal_err
check_node(const Shoal__ClusterMap *m, size_t i, char *err, size_t err_len)
{
    const Shoal__MapNode *nd = m->nodes[i];
    size_t il = nd->id != NULL ? strlen(nd->id) : 0;
    if (il == 0 || il > CL_NODE_ID_MAX || !printable(nd->id, il))
        return reject(err, err_len, "node %zu: bad id", i);
    if (nd->addr == NULL || !addr_ok(nd->addr))
        return reject(err, err_len, "node %s: bad address", nd->id);
    if (nd->peer_addr != NULL &&
        (strlen(nd->peer_addr) > CL_NODE_ADDR_MAX ||
         !printable(nd->peer_addr, strlen(nd->peer_addr))))
        return reject(err, err_len, "node %s: bad peer address", nd->id);
    for (size_t k = 0; k < i; k++) {
        if (strcmp(m->nodes[k]->id, nd->id) == 0)
            return reject(err, err_len, "node id %s listed twice", nd->id);
        if (strcmp(m->nodes[k]->addr, nd->addr) == 0)
            return reject(err, err_len, "address %s listed twice", nd->addr);
    }
    return SHOAL_OK;
}

static shoal_err
check_shard(const Shoal__ClusterMap *m, size_t i, uint8_t *seen, char *err,
            size_t err_len)
{
    const Shoal__MapShard *sh = m->shards[i];
    uint32_t s = sh->has_shard ? sh->shard : (uint32_t) i;
    if (s >= m->shard_count)
        return reject(err, err_len, "shard %" PRIu32 " out of range", s);
    if (seen[s / 8u] & (1u << (s % 8u)))
        return reject(err, err_len, "shard %" PRIu32 " listed twice", s);
    seen[s / 8u] |= (uint8_t) (1u << (s % 8u));
    if (sh->n_replicas == 0 || sh->n_replicas > CL_MAP_R_MAX)
        return reject(err, err_len, "shard %" PRIu32 ": %zu replicas", s,
                      sh->n_replicas);
    bool has_primary = false;
    for (size_t r = 0; r < sh->n_replicas; r++) {
        if (sh->replicas[r] >= m->n_nodes)
            return reject(err, err_len,
                          "shard %" PRIu32 ": replica %" PRIu32
                          " out of range (%zu nodes)",
                          s, sh->replicas[r], m->n_nodes);
        for (size_t k = 0; k < r; k++)
            if (sh->replicas[k] == sh->replicas[r])
                return reject(err, err_len,
                              "shard %" PRIu32 ": replica listed twice", s);
        has_primary |= sh->replicas[r] == sh->primary;
    }
    if (!sh->has_primary || !has_primary)
        return reject(err, err_len,
                      "shard %" PRIu32 ": primary missing or not a replica", s);
    return SHOAL_OK;
}

static shoal_err
check_map(const Shoal__ClusterMap *m, char *err, size_t err_len)
{
    shoal_err rc;
    if (!m->has_epoch || m->epoch == 0)
        return reject(err, err_len, "no epoch");
    if (m->shard_count == 0 || m->shard_count > CL_MAP_SHARDS_MAX ||
        (m->shard_count & (m->shard_count - 1)) != 0)
        return reject(err, err_len,
                      "shard_count %" PRIu32 " is not a power of two in 1..%u",
                      m->shard_count, CL_MAP_SHARDS_MAX);
    if (m->n_shards != m->shard_count)
        return reject(err, err_len,
                      "%zu shard entries for shard_count %" PRIu32, m->n_shards,
                      m->shard_count);
    if (!m->has_hash_key || m->hash_key.len != KEYHASH_KEY_BYTES)
        return reject(err, err_len, "hash_key is not %d bytes",
                      KEYHASH_KEY_BYTES);
    if (m->n_nodes == 0 || m->n_nodes > CL_MAP_NODES_MAX)
        return reject(err, err_len, "%zu nodes", m->n_nodes);
    for (size_t i = 0; i < m->n_nodes; i++)
        if ((rc = check_node(m, i, err, err_len)) != SHOAL_OK)
            return rc;
    uint8_t *seen = mem_calloc(1, (m->shard_count + 7u) / 8u);
    if (seen == NULL)
        return SHOAL_ENOMEM;
    rc = SHOAL_OK;
    for (size_t i = 0; i < m->n_shards && rc == SHOAL_OK; i++)
        rc = check_shard(m, i, seen, err, err_len);
    mem_free(seen);
    return rc;
}

/* ---- map copy ---------------------------------------------------------------
 */

static size_t
slen(const char *s)
{
    return s != NULL ? strlen(s) : 0;
}

static const char *
put_str(char **at, const char *s)
{
    size_t l = slen(s);
    char *d = *at;
    if (l > 0)
        memcpy(d, s, l);
    d[l] = '\0';
    *at += l + 1;
    return d;
}

/* Bytes of the copy (bounded: 4096 nodes of ~2.3 KiB strings, 65536 shards
 * of 16 replicas: no overflow). */
static size_t
copy_size(const Shoal__ClusterMap *m)
{
    size_t total = sizeof(cl_map) + m->n_nodes * sizeof(cl_map_node) +
                   m->shard_count * sizeof(cl_map_shard);
    for (size_t i = 0; i < m->n_shards; i++)
        total += m->shards[i]->n_replicas * sizeof(uint32_t);
    for (size_t i = 0; i < m->n_nodes; i++) {
        const Shoal__MapNode *nd = m->nodes[i];
        total += slen(nd->id) + slen(nd->addr) + slen(nd->peer_addr) + 3;
    }
    return total;
}

shoal_err
shoal__map_from_pb(const Shoal__ClusterMap *m, cl_map **out, char *err,
                   size_t err_len)
{
    *out = NULL;
    if (err != NULL && err_len > 0)
        err[0] = '\0';
    shoal_err rc = check_map(m, err, err_len);
    if (rc != SHOAL_OK)
        return rc;
    cl_map *c = mem_calloc(1, copy_size(m));
    if (c == NULL)
        return SHOAL_ENOMEM;
    c->epoch = m->epoch;
    c->shard_count = m->shard_count;
    c->replicas = m->replicas;
    c->write_quorum = m->write_quorum;
    memcpy(c->hash_key, m->hash_key.data, KEYHASH_KEY_BYTES);
    c->n_nodes = m->n_nodes;
    c->nodes = (cl_map_node *) (c + 1);
    c->shards = (cl_map_shard *) (c->nodes + m->n_nodes);
    uint32_t *reps = (uint32_t *) (c->shards + m->shard_count);
    for (size_t i = 0; i < m->n_shards; i++) {
        const Shoal__MapShard *sh = m->shards[i];
        cl_map_shard *d = &c->shards[sh->has_shard ? sh->shard : i];
        d->primary = sh->primary;
        d->n_replicas = (uint32_t) sh->n_replicas;
        d->replicas = reps;
        memcpy(reps, sh->replicas, sh->n_replicas * sizeof(uint32_t));
        reps += sh->n_replicas;
    }
    char *at = (char *) reps;
    for (size_t i = 0; i < m->n_nodes; i++) {
        const Shoal__MapNode *nd = m->nodes[i];
        c->nodes[i].id = put_str(&at, nd->id);
        c->nodes[i].addr = put_str(&at, nd->addr);
        c->nodes[i].peer_addr = put_str(&at, nd->peer_addr);
        c->nodes[i].weight = nd->weight;
        c->nodes[i].state = nd->state;
        atomic_init(&c->nodes[i].conn, NULL);
    }
    *out = c;
    return SHOAL_OK;
}

/* ---- routing ---------------------------------------------------------------
 */

uint32_t
cl_map_shard_of(const cl_map *m, const void *key, size_t klen)
{
    return keyhash_shard(m->hash_key, key, klen, m->shard_count);
}

uint32_t
cl_map_node_of(const cl_map *m, uint32_t shard, bool any, uint64_t spin)
{
    const cl_map_shard *s = &m->shards[shard];
    if (!any)
        return s->primary;
    return s->replicas[spin % s->n_replicas];
}

uint32_t
shoal__map_route(const cl_map *m, const void *key, size_t klen, bool any,
                 uint64_t spin, uint32_t *shard_out)
{
    uint32_t shard = cl_map_shard_of(m, key, klen);
    if (shard_out != NULL)
        *shard_out = shard;
    return cl_map_node_of(m, shard, any, spin);
}

/* ---- splitting by node -----------------------------------------------------
 */

shoal_err
shoal__split(const uint32_t *node_of, size_t n, size_t n_nodes, cl_split **out)
{
    *out = NULL;
    for (size_t i = 0; i < n; i++)
        if (node_of[i] >= n_nodes)
            return SHOAL_EINVAL;
    /* gid[node] = group number + 1 (0: no group yet). */
    uint32_t *gid = mem_calloc(n_nodes > 0 ? n_nodes : 1, sizeof(uint32_t));
    if (gid == NULL)
        return SHOAL_ENOMEM;
    size_t g = 0;
    for (size_t i = 0; i < n; i++)
        if (gid[node_of[i]] == 0)
            gid[node_of[i]] = (uint32_t) ++g;
    size_t total = sizeof(cl_split) + g * sizeof(uint32_t) +
                   (g + 1) * sizeof(size_t) + n * sizeof(uint32_t) +
                   sizeof(size_t);
    cl_split *s = mem_calloc(1, total);
    if (s == NULL) {
        mem_free(gid);
        return SHOAL_ENOMEM;
    }
    s->n_groups = g;
    s->start = (size_t *) (s + 1);
    s->node = (uint32_t *) (s->start + g + 1);
    s->idx = s->node + g;
    for (size_t i = 0; i < n; i++) {
        uint32_t k = gid[node_of[i]] - 1;
        s->node[k] = node_of[i];
        s->start[k + 1]++;
    }
    for (size_t k = 0; k < g; k++)
        s->start[k + 1] += s->start[k];
    /* Fill with a running cursor per group (start[k] .. start[k+1]). */
    size_t *cur = mem_alloc((g > 0 ? g : 1) * sizeof(size_t));
    if (cur == NULL) {
        mem_free(s);
        mem_free(gid);
        return SHOAL_ENOMEM;
    }
    memcpy(cur, s->start, g * sizeof(size_t));
    for (size_t i = 0; i < n; i++)
        s->idx[cur[gid[node_of[i]] - 1]++] = (uint32_t) i;
    mem_free(cur);
    mem_free(gid);
    *out = s;
    return SHOAL_OK;
}

shoal_err
shoal__batch_status(const shoal_err *res, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (res[i] != SHOAL_OK)
            return res[i];
    return SHOAL_OK;
}

shoal_err
shoal__count_sum(const uint64_t *counts, size_t n, uint64_t *out)
{
    uint64_t sum = 0;
    for (size_t i = 0; i < n; i++) {
        if (sum + counts[i] < sum)
            return SHOAL_EIO;
        sum += counts[i];
    }
    *out = sum;
    return SHOAL_OK;
}

/* ---- scan merge -------------------------------------------------------------
 */

static int
key_cmp(const shoal_item *a, const shoal_item *b)
{
    size_t n = a->klen < b->klen ? a->klen : b->klen;
    int c = n > 0 ? memcmp(a->key, b->key, n) : 0;
    if (c != 0)
        return c;
    return (a->klen > b->klen) - (a->klen < b->klen);
}

/* Parts sorted strictly ascending, more only with items; *bound = the
 * smallest last item of a part with more (NULL: none). */
static shoal_err
check_parts(const shoal_scan_page *const *parts, size_t n,
            const shoal_item **bound)
{
    *bound = NULL;
    for (size_t p = 0; p < n; p++) {
        const shoal_scan_page *pg = parts[p];
        for (size_t i = 1; i < pg->n_items; i++)
            if (key_cmp(&pg->items[i - 1], &pg->items[i]) >= 0)
                return SHOAL_EIO;
        if (!pg->more)
            continue;
        if (pg->n_items == 0)
            return SHOAL_EIO;
        const shoal_item *last = &pg->items[pg->n_items - 1];
        if (*bound == NULL || key_cmp(last, *bound) < 0)
            *bound = last;
    }
    return SHOAL_OK;
}

/* The part whose head is smallest (ties: the first part; the others'
 * equal heads are skipped as duplicates), or n when all are used up. */
static size_t
pick(const shoal_scan_page *const *parts, size_t n, const size_t *pos)
{
    size_t best = n;
    for (size_t p = 0; p < n; p++) {
        if (pos[p] >= parts[p]->n_items)
            continue;
        if (best == n || key_cmp(&parts[p]->items[pos[p]],
                                 &parts[best]->items[pos[best]]) < 0)
            best = p;
    }
    return best;
}

/* Choose the merged items (pointers into the parts) into sel; returns how
 * many, *more whether anything is left. */
static size_t
select_items(const shoal_scan_page *const *parts, size_t n, size_t *pos,
             uint32_t limit, const shoal_item *bound, const shoal_item **sel,
             bool *more)
{
    size_t k = 0;
    *more = bound != NULL;
    for (;;) {
        size_t p = pick(parts, n, pos);
        if (p == n)
            break;
        const shoal_item *it = &parts[p]->items[pos[p]];
        if (k == limit || (bound != NULL && key_cmp(it, bound) > 0)) {
            *more = true;
            break;
        }
        if (k > 0 && key_cmp(sel[k - 1], it) == 0) {
            pos[p]++; /* the same key from two parts: keep the first */
            continue;
        }
        sel[k++] = it;
        pos[p]++;
    }
    return k;
}

static shoal_scan_page *
build_page(const shoal_item *const *sel, size_t k, bool keys_only, bool more)
{
    size_t total = sizeof(shoal_scan_page) + k * sizeof(shoal_item);
    for (size_t i = 0; i < k; i++)
        total += sel[i]->klen + (keys_only ? 0 : sel[i]->vlen);
    shoal_scan_page *pg = mem_alloc(total);
    if (pg == NULL)
        return NULL;
    pg->items = (shoal_item *) (pg + 1);
    pg->n_items = k;
    pg->more = more && k > 0;
    uint8_t *at = (uint8_t *) (pg->items + k);
    for (size_t i = 0; i < k; i++) {
        shoal_item *d = &pg->items[i];
        *d = *sel[i];
        d->key = at;
        if (sel[i]->klen > 0)
            memcpy(at, sel[i]->key, sel[i]->klen);
        at += sel[i]->klen;
        d->val = NULL;
        d->vlen = keys_only ? 0 : sel[i]->vlen;
        if (!keys_only) {
            d->val = at;
            if (sel[i]->vlen > 0)
                memcpy(at, sel[i]->val, sel[i]->vlen);
            at += sel[i]->vlen;
        }
    }
    pg->token = pg->more ? pg->items[k - 1].key : NULL;
    pg->token_len = pg->more ? pg->items[k - 1].klen : 0;
    return pg;
}

shoal_err
shoal__scan_merge(const shoal_scan_page *const *parts, size_t n, uint32_t limit,
                  bool keys_only, shoal_scan_page **out)
{
    const shoal_item *bound = NULL;
    *out = NULL;
    if (limit == 0)
        limit = CL_SCAN_DEFAULT;
    shoal_err rc = check_parts(parts, n, &bound);
    if (rc != SHOAL_OK)
        return rc;
    size_t *pos = mem_calloc(n > 0 ? n : 1, sizeof(size_t));
    const shoal_item **sel = mem_alloc(limit * sizeof(*sel));
    rc = SHOAL_ENOMEM;
    if (pos != NULL && sel != NULL) {
        bool more = false;
        size_t k = select_items(parts, n, pos, limit, bound, sel, &more);
        *out = build_page(sel, k, keys_only, more);
        rc = *out != NULL ? SHOAL_OK : SHOAL_ENOMEM;
    }
    mem_free(sel);
    mem_free(pos);
    return rc;
}
