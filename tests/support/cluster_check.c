/*
 * cluster_check.c -- see cluster_check.h. Raw requests go through the
 * proc_sp_* REQ client with frames sealed here; the WAL power cut reads the
 * segment layout of storage/wal.h directly (header, frontier slots, records
 * through wal_rec_decode), so it checks the format from outside too.
 */
#define _DEFAULT_SOURCE /* realpath */
#include "tests/support/cluster_check.h"

#include <time.h>

#include <pthread.h>

#include "proto/keyhash.h"
#include "storage/wal.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

#define CALL_MS 10000

/* ---- raw calls -------------------------------------------------------------
 */

shoal_err
cc_call(uint16_t port, const wire_key *k, Shoal__Request *req,
        uint32_t timeout_ms, proc_reply *out)
{
    static _Atomic uint64_t next_id = 1;
    proc_sp *sp = NULL;
    uint8_t *body = NULL, *frame = NULL, *resp = NULL;
    size_t blen = 0, flen = 0, rlen = 0;
    wire_sender s;
    memset(out, 0, sizeof(*out));
    wire_sender_init(&s);
    req->has_id = true;
    req->id = atomic_fetch_add(&next_id, 1);
    shoal_err rc = proc_reqframe_pack(&req, 1, &body, &blen);
    if (rc == SHOAL_OK)
        rc = proc_frame_seal(&s, k, 0, body, blen, &frame, &flen);
    if (rc == SHOAL_OK)
        rc = proc_sp_connect(port, timeout_ms, &sp);
    if (rc == SHOAL_OK)
        rc = proc_sp_call(sp, frame, flen, timeout_ms, &resp, &rlen);
    if (rc == SHOAL_OK)
        rc = proc_reply_decode(k, resp, rlen, out);
    if (rc == SHOAL_OK && !out->is_error && out->frame->n_resps != 1) {
        proc_reply_fini(out);
        rc = SHOAL_EINVAL;
    }
    proc_sp_close(sp);
    free(body);
    free(frame);
    free(resp);
    return rc;
}

/* One request, its response's status folded into the return value. */
static shoal_err
call_ok(uint16_t port, const wire_key *k, Shoal__Request *req, proc_reply *out)
{
    shoal_err rc = cc_call(port, k, req, CALL_MS, out);
    if (rc != SHOAL_OK)
        return rc;
    if (out->is_error) {
        rc = out->error != SHOAL_OK ? out->error : SHOAL_EIO;
        proc_reply_fini(out);
        return rc;
    }
    Shoal__Response *r = out->frame->resps[0];
    if (r->has_status && r->status != SHOAL__STATUS__OK) {
        rc = (shoal_err) r->status;
        proc_reply_fini(out);
    }
    return rc;
}

/* ---- map
 * ---------------------------------------------------------------------
 */

void
cc_map_free(cc_map *m)
{
    if (m == NULL)
        return;
    free(m->primary);
    free(m->replicas);
    free(m->n_replicas);
    free(m);
}

static shoal_err
map_fill(const Shoal__ClusterMap *pb, cc_map *m)
{
    if (pb->shard_count == 0 || pb->hash_key.len != 16 ||
        pb->n_nodes > CC_MAX_NODES || pb->n_shards != pb->shard_count)
        return SHOAL_EINVAL;
    m->epoch = pb->epoch;
    m->n_shards = pb->shard_count;
    m->r = pb->replicas;
    m->w = pb->write_quorum;
    memcpy(m->hash_key, pb->hash_key.data, 16);
    m->n_nodes = pb->n_nodes;
    for (size_t i = 0; i < pb->n_nodes; i++) {
        snprintf(m->node_id[i], sizeof(m->node_id[i]), "%s",
                 pb->nodes[i]->id != NULL ? pb->nodes[i]->id : "");
        snprintf(m->peer_addr[i], sizeof(m->peer_addr[i]), "%s",
                 pb->nodes[i]->peer_addr != NULL ? pb->nodes[i]->peer_addr
                                                 : "");
    }
    m->primary = calloc(m->n_shards, sizeof(uint32_t));
    m->n_replicas = calloc(m->n_shards, sizeof(uint32_t));
    m->replicas = calloc((size_t) m->n_shards * CC_MAX_R, sizeof(uint32_t));
    if (m->primary == NULL || m->n_replicas == NULL || m->replicas == NULL)
        return SHOAL_ENOMEM;
    for (size_t i = 0; i < pb->n_shards; i++) {
        const Shoal__MapShard *sh = pb->shards[i];
        if (sh->shard >= m->n_shards || sh->primary >= m->n_nodes ||
            sh->n_replicas > CC_MAX_R)
            return SHOAL_EINVAL;
        m->primary[sh->shard] = sh->primary;
        m->n_replicas[sh->shard] = (uint32_t) sh->n_replicas;
        for (size_t j = 0; j < sh->n_replicas; j++)
            m->replicas[sh->shard * CC_MAX_R + j] = sh->replicas[j];
    }
    return SHOAL_OK;
}

shoal_err
cc_map_get(uint16_t port, const wire_key *k, cc_map **out)
{
    Shoal__Request req = SHOAL__REQUEST__INIT;
    Shoal__MapReq mr = SHOAL__MAP_REQ__INIT;
    proc_reply rep;
    *out = NULL;
    req.op_case = SHOAL__REQUEST__OP_MAP;
    req.map = &mr;
    shoal_err rc = call_ok(port, k, &req, &rep);
    if (rc != SHOAL_OK)
        return rc;
    Shoal__Response *r = rep.frame->resps[0];
    cc_map *m = calloc(1, sizeof(*m));
    if (m == NULL)
        rc = SHOAL_ENOMEM;
    else if (r->result_case != SHOAL__RESPONSE__RESULT_MAP)
        rc = SHOAL_EINVAL;
    else
        rc = map_fill(r->map, m);
    proc_reply_fini(&rep);
    if (rc != SHOAL_OK) {
        cc_map_free(m);
        return rc;
    }
    *out = m;
    return SHOAL_OK;
}

uint32_t
cc_map_shard(const cc_map *m, const void *key, size_t klen)
{
    return keyhash_shard(m->hash_key, key, klen, m->n_shards);
}

bool
cc_map_is_replica(const cc_map *m, uint32_t shard, uint32_t ni)
{
    for (uint32_t j = 0; j < m->n_replicas[shard]; j++)
        if (m->replicas[shard * CC_MAX_R + j] == ni)
            return true;
    return false;
}

/* ---- digests and status
 * ------------------------------------------------------
 */

shoal_err
cc_digests(uint16_t port, const wire_key *k, uint32_t n_shards,
           uint64_t *digest, uint64_t *keys)
{
    Shoal__Request req = SHOAL__REQUEST__INIT;
    Shoal__StatsReq sr = SHOAL__STATS_REQ__INIT;
    proc_reply rep;
    sr.has_digests = true;
    sr.digests = true;
    req.op_case = SHOAL__REQUEST__OP_STATS;
    req.stats = &sr;
    shoal_err rc = call_ok(port, k, &req, &rep);
    if (rc != SHOAL_OK)
        return rc;
    memset(digest, 0, n_shards * sizeof(uint64_t));
    if (keys != NULL)
        memset(keys, 0, n_shards * sizeof(uint64_t));
    Shoal__Response *r = rep.frame->resps[0];
    if (r->result_case != SHOAL__RESPONSE__RESULT_STATS)
        rc = SHOAL_EINVAL;
    for (size_t i = 0; rc == SHOAL_OK && i < r->stats->n_shards; i++) {
        const Shoal__ShardStats *ss = r->stats->shards[i];
        if (ss->shard >= n_shards || !ss->has_digest) {
            rc = SHOAL_EINVAL;
            break;
        }
        digest[ss->shard] = ss->keys > 0 ? ss->digest : 0;
        if (keys != NULL)
            keys[ss->shard] = ss->keys;
    }
    proc_reply_fini(&rep);
    return rc;
}

void
cc_status_free(cc_status *s)
{
    if (s == NULL)
        return;
    free(s->has);
    free(s->primary);
    free(s->lsn);
    free(s->n_followers);
    free(s->f_acked);
    free(s->f_lag);
    free(s->f_connected);
    free(s);
}

static cc_status *
status_alloc(uint32_t n)
{
    cc_status *s = calloc(1, sizeof(*s));
    if (s == NULL)
        return NULL;
    s->n_shards = n;
    s->has = calloc(n, sizeof(bool));
    s->primary = calloc(n, sizeof(bool));
    s->lsn = calloc(n, sizeof(uint64_t));
    s->n_followers = calloc(n, sizeof(uint32_t));
    s->f_acked = calloc((size_t) n * CC_MAX_R, sizeof(uint64_t));
    s->f_lag = calloc((size_t) n * CC_MAX_R, sizeof(uint64_t));
    s->f_connected = calloc((size_t) n * CC_MAX_R, sizeof(bool));
    if (s->has == NULL || s->primary == NULL || s->lsn == NULL ||
        s->n_followers == NULL || s->f_acked == NULL || s->f_lag == NULL ||
        s->f_connected == NULL) {
        cc_status_free(s);
        return NULL;
    }
    return s;
}

shoal_err
cc_status_get(uint16_t port, const wire_key *k, uint32_t n_shards,
              cc_status **out)
{
    Shoal__Request req = SHOAL__REQUEST__INIT;
    Shoal__ClusterStatusReq cr = SHOAL__CLUSTER_STATUS_REQ__INIT;
    proc_reply rep;
    *out = NULL;
    req.op_case = SHOAL__REQUEST__OP_CLUSTER_STATUS;
    req.cluster_status = &cr;
    shoal_err rc = call_ok(port, k, &req, &rep);
    if (rc != SHOAL_OK)
        return rc;
    Shoal__Response *r = rep.frame->resps[0];
    cc_status *s = status_alloc(n_shards);
    if (s == NULL)
        rc = SHOAL_ENOMEM;
    else if (r->result_case != SHOAL__RESPONSE__RESULT_CLUSTER_STATUS)
        rc = SHOAL_EINVAL;
    const Shoal__ClusterStatusResp *cs =
        rc == SHOAL_OK ? r->cluster_status : NULL;
    for (size_t i = 0; cs != NULL && i < cs->n_shards; i++) {
        const Shoal__ShardStatus *ss = cs->shards[i];
        if (ss->shard >= n_shards || ss->n_followers > CC_MAX_R) {
            rc = SHOAL_EINVAL;
            break;
        }
        uint32_t sh = ss->shard;
        s->has[sh] = true;
        s->primary[sh] = ss->primary;
        s->lsn[sh] = ss->lsn;
        s->n_followers[sh] = (uint32_t) ss->n_followers;
        for (size_t j = 0; j < ss->n_followers; j++) {
            s->f_acked[sh * CC_MAX_R + j] = ss->followers[j]->acked_lsn;
            s->f_lag[sh * CC_MAX_R + j] = ss->followers[j]->lag;
            s->f_connected[sh * CC_MAX_R + j] = ss->followers[j]->connected;
        }
    }
    if (cs != NULL)
        s->backlog_bytes = cs->backlog_bytes;
    proc_reply_fini(&rep);
    if (rc != SHOAL_OK) {
        cc_status_free(s);
        return rc;
    }
    *out = s;
    return SHOAL_OK;
}

/* Whether the statuses st (one per node, NULL for nodes not running) agree:
 * else a reason in why. */
static bool
statuses_synced(const cc_map *m, cc_status *const *st, size_t skip_primary,
                char *why, size_t why_len)
{
    for (uint32_t s = 0; s < m->n_shards; s++) {
        if (m->primary[s] == skip_primary)
            continue;
        bool seen = false;
        uint64_t lsn = 0;
        size_t first = 0;
        for (size_t i = 0; i < m->n_nodes; i++) {
            if (st[i] == NULL || !cc_map_is_replica(m, s, (uint32_t) i))
                continue;
            if (!st[i]->has[s]) {
                snprintf(why, why_len, "shard %u: %s does not list it", s,
                         m->node_id[i]);
                return false;
            }
            if (seen && st[i]->lsn[s] != lsn) {
                snprintf(why, why_len,
                         "shard %u: %s at lsn %" PRIu64 ", %s at %" PRIu64, s,
                         m->node_id[first], lsn, m->node_id[i], st[i]->lsn[s]);
                return false;
            }
            if (!seen) {
                seen = true;
                lsn = st[i]->lsn[s];
                first = i;
            }
        }
        uint32_t p = m->primary[s];
        if (st[p] == NULL)
            continue;
        for (uint32_t j = 0; j < st[p]->n_followers[s]; j++) {
            size_t f = s * CC_MAX_R + j;
            if (st[p]->f_lag[f] != 0 || !st[p]->f_connected[f]) {
                /* A follower that is down is not running here: only the
                 * running ones must be caught up, and they all reported
                 * the primary's LSN above. */
                bool any_down = false;
                for (size_t i = 0; i < m->n_nodes; i++)
                    if (st[i] == NULL && cc_map_is_replica(m, s, (uint32_t) i))
                        any_down = true;
                if (any_down)
                    continue;
                snprintf(why, why_len,
                         "shard %u: primary %s sees follower %u lag %" PRIu64
                         " connected %d",
                         s, m->node_id[p], j, st[p]->f_lag[f],
                         (int) st[p]->f_connected[f]);
                return false;
            }
        }
    }
    return true;
}

shoal_err
cc_wait_synced(proc_cluster *c, const cc_map *m, uint32_t timeout_ms, char *why,
               size_t why_len)
{
    return cc_wait_synced_skip(c, m, SIZE_MAX, timeout_ms, why, why_len);
}

shoal_err
cc_wait_synced_skip(proc_cluster *c, const cc_map *m, size_t skip_primary,
                    uint32_t timeout_ms, char *why, size_t why_len)
{
    const wire_key *k = &proc_cluster_keys(c)->admin;
    char local[256] = "";
    if (why == NULL) {
        why = local;
        why_len = sizeof(local);
    }
    uint64_t deadline = proc_now_ms() + timeout_ms;
    for (;;) {
        cc_status *st[CC_MAX_NODES] = {NULL};
        shoal_err rc = SHOAL_OK;
        for (size_t i = 0; i < m->n_nodes && rc == SHOAL_OK; i++) {
            proc_node *n = proc_cluster_node(c, i);
            if (n == NULL || !proc_node_running(n))
                continue;
            rc = cc_status_get(proc_node_port(n), k, m->n_shards, &st[i]);
            if (rc != SHOAL_OK)
                snprintf(why, why_len, "%s: cluster status: %s", m->node_id[i],
                         shoal_errname(rc));
        }
        bool ok = rc == SHOAL_OK &&
                  statuses_synced(m, st, skip_primary, why, why_len);
        for (size_t i = 0; i < m->n_nodes; i++)
            cc_status_free(st[i]);
        if (ok)
            return SHOAL_OK;
        if (proc_now_ms() >= deadline)
            return SHOAL_ETIMEOUT;
        proc_nap_ms(100);
    }
}

long
cc_digests_compare(proc_cluster *c, const cc_map *m, uint64_t *n_keys_out)
{
    return cc_digests_compare_skip(c, m, SIZE_MAX, n_keys_out);
}

long
cc_digests_compare_skip(proc_cluster *c, const cc_map *m, size_t skip_primary,
                        uint64_t *n_keys_out)
{
    const wire_key *k = &proc_cluster_keys(c)->admin;
    uint64_t *dig[CC_MAX_NODES] = {NULL}, *keys[CC_MAX_NODES] = {NULL};
    long differ = 0;
    uint64_t total = 0;
    for (size_t i = 0; i < m->n_nodes && differ >= 0; i++) {
        proc_node *n = proc_cluster_node(c, i);
        if (n == NULL || !proc_node_running(n))
            continue;
        dig[i] = calloc(m->n_shards, sizeof(uint64_t));
        keys[i] = calloc(m->n_shards, sizeof(uint64_t));
        shoal_err rc = dig[i] == NULL || keys[i] == NULL
                           ? SHOAL_ENOMEM
                           : cc_digests(proc_node_port(n), k, m->n_shards,
                                        dig[i], keys[i]);
        if (rc != SHOAL_OK) {
            fprintf(stderr, "# digests of %s: %s\n", m->node_id[i],
                    shoal_errname(rc));
            differ = -1;
        }
    }
    for (uint32_t s = 0; differ >= 0 && s < m->n_shards; s++) {
        if (m->primary[s] == skip_primary)
            continue;
        long first = -1;
        for (size_t i = 0; i < m->n_nodes; i++) {
            if (dig[i] == NULL || !cc_map_is_replica(m, s, (uint32_t) i))
                continue;
            if (first < 0) {
                first = (long) i;
                total += keys[i][s];
                continue;
            }
            if (dig[i][s] == dig[first][s] && keys[i][s] == keys[first][s])
                continue;
            if (differ < 8)
                fprintf(stderr,
                        "# shard %u: %s has %" PRIu64 " keys digest %016" PRIx64
                        ", %s has %" PRIu64 " keys digest %016" PRIx64 "\n",
                        s, m->node_id[first], keys[first][s], dig[first][s],
                        m->node_id[i], keys[i][s], dig[i][s]);
            differ++;
            break;
        }
    }
    for (size_t i = 0; i < m->n_nodes; i++) {
        free(dig[i]);
        free(keys[i]);
    }
    if (n_keys_out != NULL)
        *n_keys_out = total;
    return differ;
}

void
cc_dump_logs(proc_cluster *c, const char *filter, size_t max_lines)
{
    for (size_t i = 0; i < proc_cluster_size(c); i++) {
        const char *path = proc_node_log(proc_cluster_node(c, i));
        FILE *fp = fopen(path, "r");
        if (fp == NULL)
            continue;
        char **ring = calloc(max_lines, sizeof(char *));
        size_t n = 0;
        char line[1024];
        while (ring != NULL && fgets(line, sizeof(line), fp) != NULL) {
            if (filter != NULL && strstr(line, filter) == NULL)
                continue;
            free(ring[n % max_lines]);
            ring[n % max_lines] = strdup(line);
            n++;
        }
        fclose(fp);
        fprintf(stderr, "# ---- n%zu log (%s), last %zu of %zu lines%s%s\n",
                i + 1, path, n < max_lines ? n : max_lines, n,
                filter ? " with " : "", filter ? filter : "");
        for (size_t k = n > max_lines ? n - max_lines : 0;
             ring != NULL && k < n; k++)
            fprintf(stderr, "#   %s", ring[k % max_lines]);
        for (size_t k = 0; ring != NULL && k < max_lines; k++)
            free(ring[k]);
        free(ring);
    }
}

void
cc_dump_why(proc_cluster *c, const char *why)
{
    unsigned shard = 0;
    const char *p = strstr(why, "shard ");
    char filter[32];
    if (p != NULL && sscanf(p, "shard %u:", &shard) == 1) {
        snprintf(filter, sizeof(filter), "shard %u:", shard);
        cc_dump_logs(c, filter, 40);
    }
    cc_dump_logs(c, NULL, 15);
}

/* ---- WAL power cut
 * -----------------------------------------------------------
 */

static uint64_t
le64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

static uint32_t
le32(const uint8_t *p)
{
    return (uint32_t) p[0] | (uint32_t) p[1] << 8 | (uint32_t) p[2] << 16 |
           (uint32_t) p[3] << 24;
}

/* The largest valid frontier claim of a segment header (wal.h). */
static uint64_t
hdr_frontier(const uint8_t *h, uint64_t seq)
{
    uint64_t f = WAL_SEG_HDR;
    uint8_t salt[8];
    for (int i = 0; i < 8; i++)
        salt[i] = (uint8_t) (seq >> (8 * i));
    for (uint32_t i = 0; i < 2; i++) {
        const uint8_t *s = h + WAL_SEG_SLOTS + i * WAL_SLOT_LEN;
        uint64_t off = le64(s);
        uint32_t gen = le32(s + 8);
        uLong crc = crc32_z(crc32_z(0L, salt, 8), s, 12);
        bool in_a = (gen & 1u) != 0;
        if (gen == 0 || in_a != (i == 0) || le32(s + 12) != (uint32_t) crc ||
            off < WAL_SEG_HDR)
            continue;
        if (off > f)
            f = off;
    }
    return f;
}

/* Find the WAL directory: the data dir or a subdirectory holding
 * wal-*.log files. */
static bool
has_wal(const char *dir)
{
    DIR *d = opendir(dir);
    if (d == NULL)
        return false;
    struct dirent *e;
    bool found = false;
    while (!found && (e = readdir(d)) != NULL)
        found = strncmp(e->d_name, "wal-", 4) == 0 &&
                strstr(e->d_name, ".log") != NULL;
    closedir(d);
    return found;
}

static bool
find_wal_dir(const char *data_dir, char *out, size_t cap)
{
    if (has_wal(data_dir)) {
        snprintf(out, cap, "%s", data_dir);
        return true;
    }
    DIR *d = opendir(data_dir);
    if (d == NULL)
        return false;
    struct dirent *e;
    bool found = false;
    while (!found && (e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        snprintf(out, cap, "%s/%s", data_dir, e->d_name);
        found = has_wal(out);
    }
    closedir(d);
    return found;
}

static uint8_t *
slurp(const char *path, size_t *len_out)
{
    int fd = open(path, O_RDONLY);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0) {
        if (fd >= 0)
            close(fd);
        return NULL;
    }
    uint8_t *buf = malloc((size_t) st.st_size + 1);
    size_t got = 0;
    while (buf != NULL && got < (size_t) st.st_size) {
        ssize_t n = read(fd, buf + got, (size_t) st.st_size - got);
        if (n <= 0) {
            free(buf);
            buf = NULL;
            break;
        }
        got += (size_t) n;
    }
    close(fd);
    *len_out = got;
    return buf;
}

/* End of the run of valid records from WAL_SEG_HDR. */
static uint64_t
records_end(const uint8_t *buf, size_t len)
{
    size_t off = WAL_SEG_HDR;
    while (off < len) {
        wal_rec r;
        size_t used = 0;
        if (wal_rec_decode(buf + off, len - off, len, &r, &used) != SHOAL_OK ||
            used == 0)
            break;
        off += used;
    }
    return off;
}

/* Seq of the newest segment in dir holding a record: header read and the
 * first record decodes. 0 with *path "" when none. */
static void
newest_with_records(const char *dir, char *path, size_t cap, uint64_t *seq)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    *seq = 0;
    path[0] = '\0';
    while (d != NULL && (e = readdir(d)) != NULL) {
        unsigned long long s = 0;
        if (sscanf(e->d_name, "wal-%16llx.log", &s) != 1 ||
            (path[0] != '\0' && s <= *seq))
            continue;
        char p[PATH_MAX];
        int pn = snprintf(p, sizeof(p), "%s/%s", dir, e->d_name);
        if (pn < 0 || (size_t) pn >= sizeof(p))
            continue;
        uint8_t h[WAL_SEG_HDR + WAL_REC_HDR];
        int fd = open(p, O_RDONLY);
        bool rec = fd >= 0 &&
                   pread(fd, h, sizeof(h), 0) == (ssize_t) sizeof(h) &&
                   le32(h + WAL_SEG_HDR) != 0;
        if (fd >= 0)
            close(fd);
        if (!rec)
            continue;
        if (strlen(p) >= cap)
            continue;
        *seq = s;
        memcpy(path, p, strlen(p) + 1);
    }
    if (d != NULL)
        closedir(d);
}

/* The largest end the sync log records for path (realpath'd), 0 if none. */
static uint64_t
synclog_end(const char *synclog, const char *path)
{
    char real[PATH_MAX];
    if (synclog == NULL || realpath(path, real) == NULL)
        return 0;
    FILE *fp = fopen(synclog, "r");
    if (fp == NULL)
        return 0;
    char line[PATH_MAX + 64];
    uint64_t best = 0;
    size_t plen = strlen(real);
    while (fgets(line, sizeof(line), fp) != NULL) {
        unsigned long long end = 0;
        if (strncmp(line, real, plen) != 0 || line[plen] != ' ' ||
            sscanf(line + plen + 1, "%llu", &end) != 1)
            continue;
        if (end > best)
            best = end;
    }
    fclose(fp);
    return best;
}

shoal_err
cc_wal_power_cut(const char *data_dir, const char *synclog, cc_cut *out)
{
    char dir[512];
    memset(out, 0, sizeof(*out));
    if (!find_wal_dir(data_dir, dir, sizeof(dir)))
        return SHOAL_OK; /* nothing logged yet */
    newest_with_records(dir, out->path, sizeof(out->path), &out->seq);
    if (out->path[0] == '\0')
        return SHOAL_OK;
    size_t len = 0;
    uint8_t *buf = slurp(out->path, &len);
    if (buf == NULL)
        return SHOAL_EIO;
    if (len < WAL_SEG_HDR || memcmp(buf, "SHOALWAL", 8) != 0 ||
        le64(buf + 16) != out->seq) {
        free(buf);
        return SHOAL_ECORRUPT;
    }
    out->frontier = hdr_frontier(buf, out->seq);
    out->data_end = records_end(buf, len);
    out->synced = synclog_end(synclog, out->path);
    out->cut_at = out->frontier > out->synced ? out->frontier : out->synced;
    if (out->cut_at > len)
        out->cut_at = len;
    out->dropped =
        out->data_end > out->cut_at ? out->data_end - out->cut_at : 0;
    free(buf);
    size_t zlen = len - out->cut_at;
    if (zlen == 0)
        return SHOAL_OK;
    uint8_t *zeros = calloc(1, zlen);
    int fd = open(out->path, O_WRONLY);
    bool ok = zeros != NULL && fd >= 0 &&
              pwrite(fd, zeros, zlen, (off_t) out->cut_at) == (ssize_t) zlen &&
              fsync(fd) == 0;
    if (fd >= 0)
        close(fd);
    free(zeros);
    return ok ? SHOAL_OK : SHOAL_EIO;
}

/* ---- bounded nng_close ----------------------------------------------------
 */

typedef struct cc_closer {
    nng_socket sock;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool done;
    bool abandoned; /* the waiter left: the thread frees */
} cc_closer;

static void *
cc_closer_main(void *arg)
{
    cc_closer *c = arg;
    nng_close(c->sock);
    pthread_mutex_lock(&c->mu);
    c->done = true;
    bool free_it = c->abandoned;
    pthread_cond_signal(&c->cv);
    pthread_mutex_unlock(&c->mu);
    if (free_it) {
        pthread_mutex_destroy(&c->mu);
        pthread_cond_destroy(&c->cv);
        free(c);
    }
    return NULL;
}

bool
cc_close_bounded(nng_socket sock, uint32_t timeout_ms)
{
    cc_closer *c = calloc(1, sizeof(*c));
    pthread_t th;
    if (c == NULL) {
        nng_close(sock);
        return true;
    }
    c->sock = sock;
    pthread_mutex_init(&c->mu, NULL);
    pthread_cond_init(&c->cv, NULL);
    if (pthread_create(&th, NULL, cc_closer_main, c) != 0) {
        pthread_mutex_destroy(&c->mu);
        pthread_cond_destroy(&c->cv);
        free(c);
        nng_close(sock);
        return true;
    }
    pthread_detach(th);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += timeout_ms / 1000;
    ts.tv_nsec += (long) (timeout_ms % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&c->mu);
    while (!c->done && pthread_cond_timedwait(&c->cv, &c->mu, &ts) != ETIMEDOUT)
        ;
    bool done = c->done;
    if (!done)
        c->abandoned = true;
    pthread_mutex_unlock(&c->mu);
    if (done) {
        pthread_mutex_destroy(&c->mu);
        pthread_cond_destroy(&c->cv);
        free(c);
    } else {
        fprintf(stderr,
                "# nng_close did not return in %u ms (nng#1543); "
                "going on\n",
                (unsigned) timeout_ms);
    }
    return done;
}
