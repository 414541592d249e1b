/*
 * cmap.c -- the cluster map from a cluster file (cmap.h).
 *
 * Parsing is one pass over the lines, then checks that need the whole
 * file (replicas and write_quorum against the node count, required keys),
 * then placement with ring_place. Every error is one printable line,
 * "line N: what is wrong", with user text quoted and cut (text_quote()).
 * Checks at the end of the file name the line of the setting they concern,
 * or the last line for a missing one.
 *
 * Grammar of a line, after cutting a '#' comment (at the start or after a
 * blank) and trimming blanks (space, tab, CR):
 *     empty | name "=" value
 *     node value: id client-URL peer-URL [weight], separated by blanks.
 * Settings other than node may appear once. URLs are tcp://REST or
 * ipc://REST: printable ASCII without blanks, REST non-empty, at most
 * CMAP_URL_MAX bytes; no URL may appear twice in the file (an address is
 * one node's, for one purpose).
 *
 * cmap_format writes settings in a fixed order and every node with its
 * weight, so format -> parse gives the same map and format is idempotent.
 */
#include "cluster/cmap.h"

#include "proto/mem.h"
#include "proto/text.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#define CMAP_LINE_MAX 4096
#define MAX_SHARDS    65536

enum { KEY_EPOCH, KEY_SHARDS, KEY_REPLICAS, KEY_W, KEY_HASH, KEY_NODE, N_KEYS };

typedef struct parse_st {
    const char *text;
    size_t len, pos;
    unsigned line;        /* current line number, from 1 */
    unsigned set[N_KEYS]; /* line each setting was set on; 0: not set */
    uint64_t num[N_KEYS]; /* numeric settings */
    cmap *m;              /* being built */
    size_t cap_nodes;     /* allocated entries of m->nodes */
    char *err;            /* caller's message buffer */
    size_t err_len;
    char buf[CMAP_LINE_MAX + 1];
} parse_st;

typedef shoal_err (*key_fn)(parse_st *p, size_t k, char *value);

typedef struct key_def {
    const char *name;
    key_fn set;
    uint64_t min, max; /* numeric settings */
} key_def;

static shoal_err set_number(parse_st *p, size_t k, char *value);
static shoal_err set_hash(parse_st *p, size_t k, char *value);
static shoal_err add_node(parse_st *p, size_t k, char *value);

static const key_def keys[N_KEYS] = {
    [KEY_EPOCH] = {.name = "epoch",
                   .set = set_number,
                   .min = 1,
                   .max = UINT64_MAX},
    [KEY_SHARDS] = {.name = "shards",
                    .set = set_number,
                    .min = 1,
                    .max = MAX_SHARDS},
    [KEY_REPLICAS] = {.name = "replicas",
                      .set = set_number,
                      .min = 1,
                      .max = RING_MAX_R},
    [KEY_W] = {.name = "write_quorum",
               .set = set_number,
               .min = 1,
               .max = RING_MAX_R},
    [KEY_HASH] = {.name = "hash_key", .set = set_hash},
    [KEY_NODE] = {.name = "node", .set = add_node},
};

/* ---- small helpers --------------------------------------------------------
 */

/* Decimal digits only, no sign, no overflow. */
static bool
parse_u64(const char *s, uint64_t *out)
{
    uint64_t v = 0;
    if (*s == '\0')
        return false;
    for (; *s != '\0'; s++) {
        if (*s < '0' || *s > '9')
            return false;
        unsigned d = (unsigned) (*s - '0');
        if (v > (UINT64_MAX - d) / 10)
            return false;
        v = v * 10 + d;
    }
    *out = v;
    return true;
}

static bool
id_valid(const char *s)
{
    size_t n = 0;
    for (; s[n] != '\0'; n++) {
        char ch = s[n];
        bool ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
                  (ch >= '0' && ch <= '9') || ch == '.' || ch == '_' ||
                  ch == '-';
        if (!ok || n >= CMAP_ID_MAX)
            return false;
    }
    return n > 0;
}

static bool
url_valid(const char *v)
{
    static const char *const schemes[] = {"tcp://", "ipc://"};
    size_t n = strlen(v);
    if (n > CMAP_URL_MAX)
        return false;
    for (const char *p = v; *p != '\0'; p++)
        if ((unsigned char) *p <= 0x20 || (unsigned char) *p >= 0x7f)
            return false;
    for (size_t i = 0; i < 2; i++) {
        size_t k = strlen(schemes[i]);
        if (n > k && strncmp(v, schemes[i], k) == 0)
            return true;
    }
    return false;
}

/* ---- settings -------------------------------------------------------------
 */

static shoal_err
set_number(parse_st *p, size_t k, char *value)
{
    char q[64];
    uint64_t v;
    if (!parse_u64(value, &v) || v < keys[k].min || v > keys[k].max) {
        text_err(p->err, p->err_len,
                 "line %u: %s: '%s' is not a number in %llu..%llu", p->line,
                 keys[k].name, text_quote(value, q, sizeof(q)),
                 (unsigned long long) keys[k].min,
                 (unsigned long long) keys[k].max);
        return SHOAL_EINVAL;
    }
    if (k == KEY_SHARDS && (v & (v - 1)) != 0) {
        text_err(p->err, p->err_len,
                 "line %u: shards: %llu is not a power of two", p->line,
                 (unsigned long long) v);
        return SHOAL_EINVAL;
    }
    p->num[k] = v;
    return SHOAL_OK;
}

static shoal_err
set_hash(parse_st *p, size_t k, char *value)
{
    (void) k;
    char q[64];
    if (!keyhash_parse_hex(value, p->m->hash_key)) {
        text_err(p->err, p->err_len,
                 "line %u: hash_key: '%s' is not %d hex digits", p->line,
                 text_quote(value, q, sizeof(q)), 2 * KEYHASH_KEY_BYTES);
        return SHOAL_EINVAL;
    }
    return SHOAL_OK;
}

/* ---- node lines -----------------------------------------------------------
 */

/* Split value into at most 5 blank-separated fields (in place). */
static size_t
split(char *value, char *f[5])
{
    size_t n = 0;
    char *s = value;
    while (*s != '\0' && n < 5) {
        while (text_is_blank(*s))
            s++;
        if (*s == '\0')
            break;
        f[n++] = s;
        while (*s != '\0' && !text_is_blank(*s))
            s++;
        if (*s != '\0')
            *s++ = '\0';
    }
    return n;
}

/* The node that already uses id or one of the URLs, if any. */
static shoal_err
check_unique(parse_st *p, char *const f[3])
{
    char q[64];
    const cmap *m = p->m;
    if (strcmp(f[1], f[2]) == 0) {
        text_err(p->err, p->err_len,
                 "line %u: node: client and peer URL are the same '%s'",
                 p->line, text_quote(f[1], q, sizeof(q)));
        return SHOAL_EINVAL;
    }
    for (size_t i = 0; i < m->n_nodes; i++) {
        const cmap_node *o = &m->nodes[i];
        const char *what = NULL, *dup = NULL;
        if (strcmp(o->id, f[0]) == 0)
            what = "id", dup = f[0];
        for (size_t k = 1; what == NULL && k < 3; k++)
            if (strcmp(o->addr, f[k]) == 0 || strcmp(o->peer_addr, f[k]) == 0)
                what = "URL", dup = f[k];
        if (what != NULL) {
            text_err(p->err, p->err_len,
                     "line %u: node: %s '%s' is already used by node '%s'",
                     p->line, what, text_quote(dup, q, sizeof(q)), o->id);
            return SHOAL_EINVAL;
        }
    }
    return SHOAL_OK;
}

static shoal_err
check_node(parse_st *p, char *const f[5], size_t nf, uint64_t *weight)
{
    char q[64];
    if (nf < 3 || nf > 4) {
        text_err(p->err, p->err_len,
                 "line %u: node: expected 'ID CLIENT-URL PEER-URL [WEIGHT]'",
                 p->line);
        return SHOAL_EINVAL;
    }
    if (!id_valid(f[0])) {
        text_err(p->err, p->err_len,
                 "line %u: node: '%s' is not a valid id (1 to 63 of A-Z a-z "
                 "0-9 . _ -)",
                 p->line, text_quote(f[0], q, sizeof(q)));
        return SHOAL_EINVAL;
    }
    for (size_t k = 1; k < 3; k++) {
        if (!url_valid(f[k])) {
            text_err(p->err, p->err_len,
                     "line %u: node: '%s' is not a tcp:// or ipc:// URL of at "
                     "most %d printable bytes",
                     p->line, text_quote(f[k], q, sizeof(q)), CMAP_URL_MAX);
            return SHOAL_EINVAL;
        }
    }
    *weight = 1;
    if (nf == 4 && (!parse_u64(f[3], weight) || *weight < 1 ||
                    *weight > RING_MAX_WEIGHT)) {
        text_err(p->err, p->err_len,
                 "line %u: node: weight '%s' is not a number in 1..%d", p->line,
                 text_quote(f[3], q, sizeof(q)), RING_MAX_WEIGHT);
        return SHOAL_EINVAL;
    }
    if (p->m->n_nodes >= RING_MAX_NODES) {
        text_err(p->err, p->err_len, "line %u: node: more than %d nodes",
                 p->line, RING_MAX_NODES);
        return SHOAL_EINVAL;
    }
    return check_unique(p, f);
}

static shoal_err
add_node(parse_st *p, size_t k, char *value)
{
    (void) k;
    char *f[5];
    uint64_t weight;
    size_t nf = split(value, f); /* in place, in p->buf */
    shoal_err rc = check_node(p, f, nf, &weight);
    if (rc != SHOAL_OK)
        return rc;
    cmap *m = p->m;
    if (m->n_nodes == p->cap_nodes) {
        size_t cap = p->cap_nodes ? 2 * p->cap_nodes : 8;
        cmap_node *nn = mem_realloc(m->nodes, cap * sizeof(*nn));
        if (nn == NULL)
            return SHOAL_ENOMEM;
        m->nodes = nn;
        p->cap_nodes = cap;
    }
    cmap_node *n = &m->nodes[m->n_nodes];
    n->id = mem_strdup(f[0]);
    n->addr = mem_strdup(f[1]);
    n->peer_addr = mem_strdup(f[2]);
    n->weight = (uint32_t) weight;
    n->state = CMAP_NODE_UP;
    m->n_nodes++; /* counted even when a copy failed: cmap_free frees it */
    if (n->id == NULL || n->addr == NULL || n->peer_addr == NULL)
        return SHOAL_ENOMEM;
    return SHOAL_OK;
}

/* ---- lines ----------------------------------------------------------------
 */

/* The next "name = value" line: 1 with *name and *value (trimmed, in
 * p->buf), 0 at the end of the text, -1 on a malformed line. */
static int
next_line(parse_st *p, char **name, char **value)
{
    while (p->pos < p->len) {
        const char *s0 = p->text + p->pos;
        const char *nl = memchr(s0, '\n', p->len - p->pos);
        size_t n = nl != NULL ? (size_t) (nl - s0) : p->len - p->pos;
        p->pos += n + (nl != NULL);
        p->line++;
        if (n > CMAP_LINE_MAX || memchr(s0, '\0', n) != NULL) {
            text_err(p->err, p->err_len, "line %u: %s", p->line,
                     n > CMAP_LINE_MAX ? "longer than 4096 bytes"
                                       : "contains a NUL byte");
            return -1;
        }
        memcpy(p->buf, s0, n);
        p->buf[n] = '\0';
        text_cut_comment(p->buf);
        char *s = text_trim(p->buf);
        if (*s == '\0')
            continue;
        char *eq = strchr(s, '=');
        if (eq == NULL || eq == s) {
            text_err(p->err, p->err_len, "line %u: expected 'name = value'",
                     p->line);
            return -1;
        }
        *eq = '\0';
        *name = text_trim(s);
        *value = text_trim(eq + 1);
        return 1;
    }
    return 0;
}

static shoal_err
one_line(parse_st *p, const char *name, char *value)
{
    char q[64];
    size_t k = 0;
    while (k < N_KEYS && strcmp(keys[k].name, name) != 0)
        k++;
    if (k == N_KEYS) {
        text_err(p->err, p->err_len, "line %u: unknown name '%s'", p->line,
                 text_quote(name, q, sizeof(q)));
        return SHOAL_EINVAL;
    }
    if (k != KEY_NODE && p->set[k] != 0) {
        text_err(p->err, p->err_len, "line %u: %s is already set on line %u",
                 p->line, keys[k].name, p->set[k]);
        return SHOAL_EINVAL;
    }
    p->set[k] = p->line;
    if (value[0] == '\0') {
        text_err(p->err, p->err_len, "line %u: %s: needs a value", p->line,
                 keys[k].name);
        return SHOAL_EINVAL;
    }
    return keys[k].set(p, k, value);
}

/* Defaults and the checks that need the whole file. */
static shoal_err
finish(parse_st *p)
{
    cmap *m = p->m;
    if (m->n_nodes == 0) {
        text_err(p->err, p->err_len, "line %u: no 'node = ...' line", p->line);
        return SHOAL_EINVAL;
    }
    if (p->set[KEY_HASH] == 0) {
        text_err(p->err, p->err_len,
                 "line %u: hash_key is required (%d hex digits)", p->line,
                 2 * KEYHASH_KEY_BYTES);
        return SHOAL_EINVAL;
    }
    m->epoch = p->set[KEY_EPOCH] ? p->num[KEY_EPOCH] : 1;
    m->n_shards = (uint32_t) (p->set[KEY_SHARDS] ? p->num[KEY_SHARDS] : 256);
    m->r = (uint32_t) (p->set[KEY_REPLICAS] ? p->num[KEY_REPLICAS]
                       : m->n_nodes < 3     ? m->n_nodes
                                            : 3);
    if (m->r > m->n_nodes) {
        text_err(p->err, p->err_len,
                 "line %u: replicas = %u but there are only %zu nodes",
                 p->set[KEY_REPLICAS], m->r, m->n_nodes);
        return SHOAL_EINVAL;
    }
    m->w = (uint32_t) (p->set[KEY_W] ? p->num[KEY_W] : m->r / 2 + 1);
    if (m->w > m->r) {
        text_err(p->err, p->err_len,
                 "line %u: write_quorum = %u exceeds replicas = %u",
                 p->set[KEY_W], m->w, m->r);
        return SHOAL_EINVAL;
    }
    return SHOAL_OK;
}

static shoal_err
place(cmap *m)
{
    ring_member *mem = mem_calloc(m->n_nodes, sizeof(*mem));
    uint32_t *out = mem_calloc((size_t) m->n_shards * m->r, sizeof(*out));
    m->shards = mem_calloc(m->n_shards, sizeof(*m->shards));
    shoal_err rc = SHOAL_ENOMEM;
    if (mem == NULL || out == NULL || m->shards == NULL)
        goto done;
    for (size_t i = 0; i < m->n_nodes; i++) {
        mem[i].id = m->nodes[i].id;
        mem[i].weight = m->nodes[i].weight;
    }
    if ((rc = ring_place(mem, m->n_nodes, m->n_shards, m->r, out)) != SHOAL_OK)
        goto done;
    for (uint32_t s = 0; s < m->n_shards; s++) {
        cmap_shard *sh = &m->shards[s];
        memcpy(sh->replicas, out + (size_t) s * m->r, m->r * sizeof(*out));
        sh->n_replicas = m->r;
        sh->primary = sh->replicas[0];
        sh->shard_epoch = 1;
        sh->state = CMAP_SHARD_STABLE;
    }
done:
    mem_free(mem);
    mem_free(out);
    return rc;
}

shoal_err
cmap_parse(const char *text, size_t len, cmap **out, char *err, size_t err_len)
{
    char *name, *value;
    int r;
    shoal_err rc = SHOAL_ENOMEM;
    *out = NULL;
    text_err(err, err_len, "%s", "");
    parse_st *p = mem_calloc(1, sizeof(*p));
    cmap *m = mem_calloc(1, sizeof(*m));
    if (p == NULL || m == NULL)
        goto fail;
    p->text = text;
    p->len = text != NULL ? len : 0;
    p->m = m;
    p->err = err;
    p->err_len = err_len;
    rc = SHOAL_OK;
    while (rc == SHOAL_OK && (r = next_line(p, &name, &value)) != 0)
        rc = r < 0 ? SHOAL_EINVAL : one_line(p, name, value);
    if (rc == SHOAL_OK)
        rc = finish(p);
    if (rc == SHOAL_OK)
        rc = place(m);
    if (rc != SHOAL_OK)
        goto fail;
    mem_free(p);
    *out = m;
    return SHOAL_OK;
fail:
    if (rc == SHOAL_ENOMEM)
        text_err(err, err_len, "out of memory");
    else if (rc != SHOAL_EINVAL)
        text_err(err, err_len, "placement failed: %s", shoal_strerror(rc));
    mem_free(p);
    cmap_free(m);
    return rc;
}

shoal_err
cmap_load(const char *path, cmap **out, char *err, size_t err_len)
{
    char msg[CMAP_ERR_LEN];
    char *buf = NULL;
    size_t len = 0;
    shoal_err rc = SHOAL_EIO;
    *out = NULL;
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        text_err(err, err_len, "%s: %s", path, strerror(errno));
        return SHOAL_EIO;
    }
    buf = mem_alloc(CMAP_FILE_MAX + 1);
    if (buf == NULL) {
        rc = SHOAL_ENOMEM;
        text_err(err, err_len, "%s: out of memory", path);
        goto done;
    }
    len = fread(buf, 1, CMAP_FILE_MAX + 1, f);
    if (ferror(f)) {
        text_err(err, err_len, "%s: read error", path);
        goto done;
    }
    if (len > CMAP_FILE_MAX) {
        rc = SHOAL_ETOOLARGE;
        text_err(err, err_len, "%s: larger than %u bytes", path, CMAP_FILE_MAX);
        goto done;
    }
    rc = cmap_parse(buf, len, out, msg, sizeof(msg));
    if (rc != SHOAL_OK)
        text_err(err, err_len, "%s: %s", path, msg);
done:
    mem_free(buf);
    fclose(f);
    return rc;
}

char *
cmap_format(const cmap *m)
{
    size_t cap = 256;
    for (size_t i = 0; i < m->n_nodes; i++)
        cap += strlen(m->nodes[i].id) + strlen(m->nodes[i].addr) +
               strlen(m->nodes[i].peer_addr) + 32;
    char *s = mem_alloc(cap);
    if (s == NULL)
        return NULL;
    char hex[2 * KEYHASH_KEY_BYTES + 1];
    for (size_t i = 0; i < KEYHASH_KEY_BYTES; i++)
        snprintf(hex + 2 * i, 3, "%02x", m->hash_key[i]);
    int n =
        snprintf(s, cap,
                 "epoch = %llu\nshards = %u\nreplicas = %u\n"
                 "write_quorum = %u\nhash_key = %s\n",
                 (unsigned long long) m->epoch, m->n_shards, m->r, m->w, hex);
    size_t used = (size_t) n;
    for (size_t i = 0; i < m->n_nodes; i++) {
        const cmap_node *nd = &m->nodes[i];
        n = snprintf(s + used, cap - used, "node = %s %s %s %u\n", nd->id,
                     nd->addr, nd->peer_addr, nd->weight);
        used += (size_t) n;
    }
    SH_ASSERT(used < cap);
    return s;
}

void
cmap_free(cmap *m)
{
    if (m == NULL)
        return;
    for (size_t i = 0; i < m->n_nodes; i++) {
        mem_free(m->nodes[i].id);
        mem_free(m->nodes[i].addr);
        mem_free(m->nodes[i].peer_addr);
    }
    mem_free(m->nodes);
    mem_free(m->shards);
    mem_free(m);
}

int
cmap_node_index(const cmap *m, const char *id)
{
    for (size_t i = 0; id != NULL && i < m->n_nodes; i++)
        if (strcmp(m->nodes[i].id, id) == 0)
            return (int) i;
    return -1;
}

bool
cmap_is_replica(const cmap *m, uint32_t shard, uint32_t ni)
{
    if (shard >= m->n_shards)
        return false;
    const cmap_shard *sh = &m->shards[shard];
    for (uint32_t k = 0; k < sh->n_replicas; k++)
        if (sh->replicas[k] == ni)
            return true;
    return false;
}

/* ---- protobuf ---------------------------------------------------------------
 */

static char *
arena_str(pbuf_arena *a, const char *s)
{
    size_t n = strlen(s) + 1;
    char *d = pbuf_arena_alloc(a, n);
    if (d != NULL)
        memcpy(d, s, n);
    return d;
}

static shoal_err
pb_nodes(const cmap *m, Shoal__ClusterMap *pb, pbuf_arena *a)
{
    Shoal__MapNode *v = pbuf_arena_alloc(a, m->n_nodes * sizeof(*v));
    pb->nodes = pbuf_arena_alloc(a, m->n_nodes * sizeof(*pb->nodes));
    if (v == NULL || pb->nodes == NULL)
        return SHOAL_ENOMEM;
    for (size_t i = 0; i < m->n_nodes; i++) {
        const cmap_node *nd = &m->nodes[i];
        shoal__map_node__init(&v[i]);
        v[i].id = arena_str(a, nd->id);
        v[i].addr = arena_str(a, nd->addr);
        v[i].peer_addr = arena_str(a, nd->peer_addr);
        if (v[i].id == NULL || v[i].addr == NULL || v[i].peer_addr == NULL)
            return SHOAL_ENOMEM;
        v[i].has_weight = v[i].has_state = true;
        v[i].weight = nd->weight;
        v[i].state = nd->state;
        pb->nodes[i] = &v[i];
    }
    pb->n_nodes = m->n_nodes;
    return SHOAL_OK;
}

static shoal_err
pb_shards(const cmap *m, Shoal__ClusterMap *pb, pbuf_arena *a)
{
    size_t ns = m->n_shards;
    Shoal__MapShard *v = pbuf_arena_alloc(a, ns * sizeof(*v));
    uint32_t *reps = pbuf_arena_alloc(a, ns * m->r * sizeof(*reps));
    pb->shards = pbuf_arena_alloc(a, ns * sizeof(*pb->shards));
    if (v == NULL || reps == NULL || pb->shards == NULL)
        return SHOAL_ENOMEM;
    for (uint32_t s = 0; s < m->n_shards; s++) {
        const cmap_shard *sh = &m->shards[s];
        shoal__map_shard__init(&v[s]);
        v[s].has_shard = v[s].has_primary = true;
        v[s].has_shard_epoch = v[s].has_state = true;
        v[s].shard = s;
        v[s].replicas = reps + (size_t) s * m->r;
        memcpy(v[s].replicas, sh->replicas, sh->n_replicas * sizeof(*reps));
        v[s].n_replicas = sh->n_replicas;
        v[s].primary = sh->primary;
        v[s].shard_epoch = sh->shard_epoch;
        v[s].state = sh->state;
        pb->shards[s] = &v[s];
    }
    pb->n_shards = ns;
    return SHOAL_OK;
}

shoal_err
cmap_to_pb(const cmap *m, Shoal__ClusterMap *pb, pbuf_arena *arena)
{
    shoal_err rc;
    shoal__cluster_map__init(pb);
    pb->has_epoch = pb->has_shard_count = true;
    pb->has_replicas = pb->has_write_quorum = pb->has_hash_key = true;
    pb->epoch = m->epoch;
    pb->shard_count = m->n_shards;
    pb->replicas = m->r;
    pb->write_quorum = m->w;
    pb->hash_key.data = pbuf_arena_alloc(arena, KEYHASH_KEY_BYTES);
    if (pb->hash_key.data == NULL)
        return SHOAL_ENOMEM;
    memcpy(pb->hash_key.data, m->hash_key, KEYHASH_KEY_BYTES);
    pb->hash_key.len = KEYHASH_KEY_BYTES;
    if ((rc = pb_nodes(m, pb, arena)) != SHOAL_OK)
        return rc;
    return pb_shards(m, pb, arena);
}
