/*
 * fuzz_cluster.c -- libFuzzer target for the cluster-file parser
 * (cluster/cmap.h, DESIGN §8: every decoder gets a fuzz target).
 *
 * The input is cluster-file text for cmap_parse. Whatever the input,
 * nothing may crash or leak (ASan/UBSan); a failure must leave a one-line
 * printable message; a success must give a map inside cmap.h's ranges
 * with a valid placement, whose cmap_format text parses back to the same
 * map and formats to the same bytes, and which converts with cmap_to_pb.
 */
#include "cluster/cmap.h"

#include "proto/mem.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* Inputs are capped so that the ring stays small (at most about 150 nodes
 * of weight 100 fit); placement time, not parsing, dominates. */
#define FUZZ_INPUT_MAX 4096

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void
check_err(const char *err)
{
    if (err[0] == '\0')
        abort();
    for (const char *p = err; *p != '\0'; p++)
        if ((unsigned char) *p < 0x20 || (unsigned char) *p >= 0x7f)
            abort();
}

static void
check_map(const cmap *m)
{
    if (m->n_nodes == 0 || m->n_nodes > RING_MAX_NODES || m->epoch < 1 ||
        m->n_shards == 0 || m->n_shards > 65536 ||
        (m->n_shards & (m->n_shards - 1)) != 0 || m->r < 1 ||
        m->r > RING_MAX_R || m->r > m->n_nodes || m->w < 1 || m->w > m->r)
        abort();
    for (size_t i = 0; i < m->n_nodes; i++)
        if (m->nodes[i].weight < 1 || m->nodes[i].weight > RING_MAX_WEIGHT ||
            cmap_node_index(m, m->nodes[i].id) != (int) i)
            abort();
    for (uint32_t s = 0; s < m->n_shards; s++) {
        const cmap_shard *sh = &m->shards[s];
        if (sh->n_replicas != m->r || sh->primary != sh->replicas[0])
            abort();
        for (uint32_t k = 0; k < sh->n_replicas; k++) {
            if (sh->replicas[k] >= m->n_nodes ||
                !cmap_is_replica(m, s, sh->replicas[k]))
                abort();
            for (uint32_t j = 0; j < k; j++)
                if (sh->replicas[j] == sh->replicas[k])
                    abort();
        }
    }
}

static bool
same(const cmap *a, const cmap *b)
{
    if (a->epoch != b->epoch || a->n_shards != b->n_shards || a->r != b->r ||
        a->w != b->w || a->n_nodes != b->n_nodes ||
        memcmp(a->hash_key, b->hash_key, KEYHASH_KEY_BYTES) != 0)
        return false;
    for (size_t i = 0; i < a->n_nodes; i++)
        if (strcmp(a->nodes[i].id, b->nodes[i].id) != 0 ||
            strcmp(a->nodes[i].addr, b->nodes[i].addr) != 0 ||
            strcmp(a->nodes[i].peer_addr, b->nodes[i].peer_addr) != 0 ||
            a->nodes[i].weight != b->nodes[i].weight)
            return false;
    return memcmp(a->shards, b->shards, a->n_shards * sizeof(*a->shards)) == 0;
}

static void
round_trip(const cmap *m)
{
    char err[CMAP_ERR_LEN];
    cmap *back = NULL;
    char *text = cmap_format(m), *again = NULL;
    if (text == NULL)
        return;
    if (cmap_parse(text, strlen(text), &back, err, sizeof(err)) != SHOAL_OK ||
        !same(m, back))
        abort();
    again = cmap_format(back);
    if (again != NULL && strcmp(text, again) != 0)
        abort();
    mem_free(again);
    mem_free(text);
    cmap_free(back);
}

static void
to_pb(const cmap *m)
{
    pbuf_arena a;
    Shoal__ClusterMap pb;
    pbuf_arena_init(&a, 4096);
    if (cmap_to_pb(m, &pb, &a) == SHOAL_OK &&
        (pb.n_nodes != m->n_nodes || pb.n_shards != m->n_shards ||
         pb.shard_count != m->n_shards))
        abort();
    pbuf_arena_fini(&a);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char err[CMAP_ERR_LEN];
    cmap *m = NULL;
    if (size > FUZZ_INPUT_MAX)
        return 0;
    shoal_err rc = cmap_parse((const char *) data, size, &m, err, sizeof(err));
    if (rc == SHOAL_OK) {
        check_map(m);
        round_trip(m);
        to_pb(m);
    } else if (rc == SHOAL_EINVAL) {
        check_err(err);
        if (m != NULL)
            abort();
    } else if (rc != SHOAL_ENOMEM) {
        abort();
    }
    cmap_free(m);
    return 0;
}
