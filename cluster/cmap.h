/*
 * cmap.h -- the cluster map (DESIGN §3): one immutable value with an epoch
 * that rises on every change: nodes (id, client address, peer address,
 * weight, state), S, R, W, the hash key, and per shard its replicas,
 * primary, shard_epoch and state.
 *
 * Its source in this version is a static cluster file; the control plane
 * (DESIGN §5) will produce the same type, so only the source changes.
 * A map is never modified once built: a node swaps whole maps.
 *
 * Cluster file: UTF-8 text, one "name = value" per line, '#' comments and
 * blank lines ignored (as the config file, node/cfg.h):
 *     epoch = 1                 # >= 1
 *     shards = 256              # power of two, 1..65536
 *     replicas = 3              # R, 1..min(RING_MAX_R, nodes)
 *     write_quorum = 2          # W, 1..R; default majority R/2+1
 *     hash_key = <32 hex chars> # the 16-byte siphash key of keyhash.h
 *     node = n1 tcp://10.0.0.1:7400 tcp://10.0.0.1:7401 [weight]
 *     node = n2 ...             # id, client URL, peer URL, weight 1..100
 * Every error is one line naming the line number and what is wrong; a
 * file over CMAP_FILE_MAX bytes is refused. Placement: ring_place over the
 * nodes; primary = first replica; shard_epoch = 1; state stable.
 */
#ifndef SHOAL_CLUSTER_CMAP_H
#define SHOAL_CLUSTER_CMAP_H

#include "cluster/ring.h"
#include "proto/err.h"
#include "proto/keyhash.h"
#include "proto/pbuf.h"
#include "proto/shoal.pb-c.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define CMAP_FILE_MAX (1u << 20)
#define CMAP_ID_MAX   63 /* [A-Za-z0-9._-]{1,63}, as cfg's node id */
#define CMAP_URL_MAX  255
#define CMAP_ERR_LEN  512

typedef enum cmap_node_state {
    CMAP_NODE_UP = 0,
} cmap_node_state;

typedef enum cmap_shard_state {
    CMAP_SHARD_STABLE = 0,
    CMAP_SHARD_MIGRATING = 1,
} cmap_shard_state;

typedef struct cmap_node {
    char *id;
    char *addr;      /* client URL */
    char *peer_addr; /* replication URL */
    uint32_t weight;
    uint32_t state;
} cmap_node;

typedef struct cmap_shard {
    uint32_t replicas[RING_MAX_R]; /* node indexes; n_replicas of them */
    uint32_t n_replicas;
    uint32_t primary; /* node index; one of replicas */
    uint32_t shard_epoch;
    uint32_t state;
} cmap_shard;

typedef struct cmap {
    uint64_t epoch;
    uint32_t n_shards;
    uint32_t r;
    uint32_t w;
    uint8_t hash_key[KEYHASH_KEY_BYTES];
    cmap_node *nodes;
    size_t n_nodes;
    cmap_shard *shards; /* n_shards */
} cmap;

/* Parse cluster-file text (len bytes, need not be NUL-terminated) and place
 * the shards. SHOAL_EINVAL with a one-line message in err, SHOAL_ENOMEM.
 * Pure: no I/O, no logging (fuzzed by fuzz_cluster). */
shoal_err cmap_parse(const char *text, size_t len, cmap **out, char *err,
                     size_t err_len);

/* Read and parse a cluster file. SHOAL_EINVAL (message names the path),
 * SHOAL_EIO (cannot read), SHOAL_ETOOLARGE, SHOAL_ENOMEM. */
shoal_err cmap_load(const char *path, cmap **out, char *err, size_t err_len);

/* The cluster file text of m (nodes and settings; placement is derived).
 * Returns a mem_alloc'd NUL-terminated string or NULL (ENOMEM). */
char *cmap_format(const cmap *m);

void cmap_free(cmap *m); /* NULL ok */

/* Index of the node with id, or -1. */
int cmap_node_index(const cmap *m, const char *id);

/* Whether node index ni holds a replica of shard. */
bool cmap_is_replica(const cmap *m, uint32_t shard, uint32_t ni);

/* The map as the API's ClusterMap, allocated from arena. SHOAL_ENOMEM. */
shoal_err cmap_to_pb(const cmap *m, Shoal__ClusterMap *pb, pbuf_arena *arena);

#endif
