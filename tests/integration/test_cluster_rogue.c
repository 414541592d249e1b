/*
 * test_cluster_rogue.c -- TESTING.md G9 for the peer protocol: a rogue
 * process that speaks it (nng PUSH/PULL, proto/wire.h frames, peer.proto)
 * but holds no cluster key, against a real 3-node cluster (R=3, W=2).
 *
 *  (ii) capture: node 3 is stopped and the rogue binds its peer URL with a
 *       PULL socket, so the other nodes' links to node 3 deliver to it.
 *       A canary value is written meanwhile. Every frame captured must be
 *       sealed (not plaintext, flagged peer), must not open under a wrong
 *       key of the same id nor under any client key, and must not hold the
 *       canary in its bytes. As a control, the real cluster key opens them
 *       and the canary is inside: the capture did carry the data.
 *  (i)  injection: node 3 back and caught up, the rogue PUSHes to a
 *       follower's peer URL records that would change its state if
 *       accepted (next LSN of a shard, a put of a rogue key): plaintext,
 *       sealed with a wrong secret under the cluster key's id, with a
 *       client key (not role peer), with an unknown key id; tampered copies
 *       of captured real frames (a bit flipped in the header, nonce, body,
 *       tag); truncated and garbage frames; and the captured real frames
 *       replayed as they are, to that follower and to node 3 (restarted,
 *       so with an empty replay window). Afterwards every node's per-shard
 *       digests and LSNs are what they were, no rogue key is readable on
 *       any replica, and replication still works (a write reaches every
 *       replica, digests equal).
 *
 * The replay window cannot be told apart from the duplicate-LSN rule from
 * outside (both leave the state alone); the node does not export its count
 * of refused peer frames yet.
 */
#include "tests/support/cluster_check.h"
#include "tests/support/proc.h"
#include "tests/support/testutil.h"

#include "proto/peer.pb-c.h"
#include "proto/wire.h"
#include "storage/wal.h"

#include "shoal.h"

#include <nng/nng.h>
#include <nng/protocol/pipeline0/pull.h>
#include <nng/protocol/pipeline0/push.h>

#include <inttypes.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#define CALL_MS     10000
#define SYNC_MS     60000
#define STOP_MS     30000
#define MAX_CAPTURE 4000
#define N_CANARY    200

typedef struct frame {
    uint8_t *p;
    size_t len;
    bool has_records; /* set by check_capture (opened with the real key) */
} frame;

typedef struct fx {
    char *dir;
    proc_cluster *c;
    cc_map *m;
    char peer_url[PROC_CLUSTER_MAX][256];
    frame cap[MAX_CAPTURE];
    size_t n_cap;
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

/* Peer URLs from the cluster file ("node = ID CLIENT PEER [weight]"). */
static void
read_peer_urls(fx *f)
{
    FILE *fp = fopen(proc_cluster_file(f->c), "r");
    assert_non_null(fp);
    char line[1024];
    while (fgets(line, sizeof(line), fp) != NULL) {
        char id[64], client[256], peer[256];
        unsigned idx = 0;
        if (sscanf(line, " node = %63s %255s %255s", id, client, peer) != 3 ||
            sscanf(id, "n%u", &idx) != 1 || idx == 0 || idx > PROC_CLUSTER_MAX)
            continue;
        snprintf(f->peer_url[idx - 1], sizeof(f->peer_url[0]), "%s", peer);
    }
    fclose(fp);
    for (size_t i = 0; i < proc_cluster_size(f->c); i++)
        assert_true(f->peer_url[i][0] != '\0');
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
    shoal_set_logger(log_to_stderr, NULL, 0);
    return 0;
}

static int
fx_down(void **state)
{
    fx *f = *state;
    if (f == NULL)
        return 0;
    for (size_t i = 0; i < f->n_cap; i++)
        free(f->cap[i].p);
    cc_map_free(f->m);
    proc_cluster_free(f->c);
    proc_reap_all();
    void *dir = f->dir;
    tu_tmpdir_down(&dir);
    free(f);
    return 0;
}

static shoal_err
open_all(proc_cluster *c, shoal **out)
{
    size_t n = 0;
    const char *const *seeds = proc_cluster_seeds(c, &n);
    shoal_opts o;
    shoal_opts_default(&o);
    o.seeds = seeds;
    o.n_seeds = n;
    o.key_file = proc_cluster_key_file(c);
    o.timeout_ms = CALL_MS;
    o.connect_timeout_ms = CALL_MS;
    return shoal_open(&o, out);
}

static const wire_key *
admin(fx *f)
{
    return &proc_cluster_keys(f->c)->admin;
}

static uint16_t
port_of(fx *f, size_t i)
{
    return proc_node_port(proc_cluster_node(f->c, i));
}

static void
wait_synced(fx *f)
{
    char why[256] = "";
    if (cc_wait_synced(f->c, f->m, SYNC_MS, why, sizeof(why)) != SHOAL_OK) {
        cc_dump_why(f->c, why);
        fail_msg("replicas not in step: %s", why);
    }
}

/* ---- (ii) capture ----------------------------------------------------------
 */

static void
capture_while_down(fx *f, const char *canary, size_t *n_canary_ok)
{
    proc_node *n3 = proc_cluster_node(f->c, 2);
    assert_int_equal(proc_node_stop(n3, STOP_MS, NULL), SHOAL_OK);

    nng_socket pull;
    assert_int_equal(nng_pull0_open(&pull), 0);
    nng_socket_set_ms(pull, NNG_OPT_RECVTIMEO, 200);
    nng_socket_set_size(pull, NNG_OPT_RECVMAXSZ, 64u << 20);
    int rv = -1;
    uint64_t deadline = proc_now_ms() + 10000;
    while ((rv = nng_listen(pull, f->peer_url[2], NULL, 0)) != 0 &&
           proc_now_ms() < deadline)
        proc_nap_ms(100); /* the port may linger a moment */
    if (rv != 0)
        fail_msg("rogue listen on %s: %s", f->peer_url[2], nng_strerror(rv));
    printf("# rogue PULL bound to n3's peer URL %s\n", f->peer_url[2]);

    /* The canary, written while n3 is down (W=2 of 3 still acks). */
    shoal *db = NULL;
    assert_int_equal(open_all(f->c, &db), SHOAL_OK);
    shoal_call call = {.timeout_ms = 3000};
    *n_canary_ok = 0;
    for (int i = 0; i < N_CANARY; i++) {
        char k[64];
        snprintf(k, sizeof(k), "canary:%04d", i);
        /* n3's own shards have no primary now (no failover yet). */
        if (f->m->primary[cc_map_shard(f->m, k, strlen(k))] == 2)
            continue;
        if (shoal_put(db, k, strlen(k), canary, strlen(canary), NULL, NULL,
                      &call) == SHOAL_OK)
            (*n_canary_ok)++;
    }
    shoal_close(db);
    printf("# %zu canary puts acknowledged with n3 down\n", *n_canary_ok);
    assert_true(*n_canary_ok > 0);

    /* Collect what arrives for 2 s more (heartbeats, retransmits). */
    deadline = proc_now_ms() + 2000;
    while (proc_now_ms() < deadline && f->n_cap < MAX_CAPTURE) {
        nng_msg *msg = NULL;
        if (nng_recvmsg(pull, &msg, 0) != 0)
            continue;
        frame *fr = &f->cap[f->n_cap++];
        fr->len = nng_msg_len(msg);
        fr->p = malloc(fr->len > 0 ? fr->len : 1);
        assert_non_null(fr->p);
        memcpy(fr->p, nng_msg_body(msg), fr->len);
        nng_msg_free(msg);
    }
    cc_close_bounded(pull, 5000);
}

static void
check_capture(fx *f, const char *canary)
{
    const proc_keys *keys = proc_cluster_keys(f->c);
    wire_key wrong;
    assert_int_equal(
        wire_key_generate(PROC_KEY_PEER, WIRE_ROLE_PEER, NULL, 0, &wrong),
        SHOAL_OK);
    const wire_key *others[] = {&wrong, &keys->admin, &keys->write, &keys->read,
                                &keys->prefixed};
    size_t canary_plain = 0, canary_opened = 0, with_records = 0;
    assert_true(f->n_cap > 0);
    for (size_t i = 0; i < f->n_cap; i++) {
        const frame *fr = &f->cap[i];
        wire_hdr h;
        assert_int_equal(wire_parse_hdr(fr->p, fr->len, &h), SHOAL_OK);
        assert_true((h.flags & WIRE_F_PEER) != 0);
        assert_true((h.flags & WIRE_F_PLAIN) == 0);
        assert_int_equal(h.key_id, PROC_KEY_PEER);
        if (proc_memmem(fr->p, fr->len, canary, strlen(canary)))
            canary_plain++;
        uint8_t *copy = malloc(fr->len);
        assert_non_null(copy);
        size_t blen = 0;
        for (size_t k = 0; k < sizeof(others) / sizeof(others[0]); k++) {
            memcpy(copy, fr->p, fr->len);
            assert_int_equal(wire_open(others[k], copy, fr->len, &blen),
                             SHOAL_EAUTH);
        }
        /* Control: the cluster key opens it, and it is a PeerMsg. */
        memcpy(copy, fr->p, fr->len);
        assert_int_equal(wire_open(&keys->peer, copy, fr->len, &blen),
                         SHOAL_OK);
        Shoal__Peer__PeerMsg *m =
            shoal__peer__peer_msg__unpack(NULL, blen, copy + WIRE_HDR_BYTES);
        assert_non_null(m);
        f->cap[i].has_records = m->n_records > 0;
        with_records += m->n_records > 0;
        shoal__peer__peer_msg__free_unpacked(m, NULL);
        if (proc_memmem(copy + WIRE_HDR_BYTES, blen, canary, strlen(canary)))
            canary_opened++;
        free(copy);
    }
    memset(&wrong, 0, sizeof(wrong));
    printf("# captured %zu frames (%zu with records): %zu hold the canary in "
           "plaintext, %zu once opened with the cluster key; none opens "
           "with a wrong or client key\n",
           f->n_cap, with_records, canary_plain, canary_opened);
    assert_int_equal(canary_plain, 0);
    assert_true(canary_opened > 0); /* the capture did carry the canary */
}

/* ---- (i) injection ---------------------------------------------------------
 */

typedef struct snapshot {
    uint64_t *dig[PROC_CLUSTER_MAX];
    cc_status *st[PROC_CLUSTER_MAX];
} snapshot;

static void
take_snapshot(fx *f, snapshot *s)
{
    for (size_t i = 0; i < proc_cluster_size(f->c); i++) {
        s->dig[i] = calloc(f->m->n_shards, sizeof(uint64_t));
        assert_non_null(s->dig[i]);
        assert_int_equal(cc_digests(port_of(f, i), admin(f), f->m->n_shards,
                                    s->dig[i], NULL),
                         SHOAL_OK);
        assert_int_equal(
            cc_status_get(port_of(f, i), admin(f), f->m->n_shards, &s->st[i]),
            SHOAL_OK);
    }
}

static void
free_snapshot(snapshot *s)
{
    for (size_t i = 0; i < PROC_CLUSTER_MAX; i++) {
        free(s->dig[i]);
        cc_status_free(s->st[i]);
    }
}

/* A PeerMsg from `from` carrying one record for shard at lsn: a put of
 * key -> val. malloc'd packed bytes. */
static uint8_t *
rogue_msg(const char *from, uint32_t shard, uint64_t lsn, const char *key,
          const char *val, size_t *len_out)
{
    wal_op op = {.kind = WAL_OP_PUT,
                 .key = (const uint8_t *) key,
                 .klen = (uint32_t) strlen(key),
                 .val = (const uint8_t *) val,
                 .vlen = (uint32_t) strlen(val)};
    size_t plen = wal_ops_size(&op, 1);
    uint8_t *payload = malloc(plen);
    assert_non_null(payload);
    wal_ops_encode(&op, 1, payload);
    Shoal__Peer__Record rec = SHOAL__PEER__RECORD__INIT;
    rec.has_shard = rec.has_shard_epoch = rec.has_lsn = rec.has_payload = true;
    rec.shard = shard;
    rec.shard_epoch = 1;
    rec.lsn = lsn;
    rec.payload.data = payload;
    rec.payload.len = plen;
    Shoal__Peer__Record *recs[] = {&rec};
    Shoal__Peer__PeerMsg m = SHOAL__PEER__PEER_MSG__INIT;
    m.from = (char *) from;
    m.has_map_epoch = true;
    m.map_epoch = 1;
    m.n_records = 1;
    m.records = recs;
    size_t len = shoal__peer__peer_msg__get_packed_size(&m);
    uint8_t *out = malloc(len);
    assert_non_null(out);
    shoal__peer__peer_msg__pack(&m, out);
    free(payload);
    *len_out = len;
    return out;
}

static void
push_bytes(nng_socket push, const void *p, size_t len)
{
    nng_msg *msg = NULL;
    assert_int_equal(nng_msg_alloc(&msg, len), 0);
    if (len > 0)
        memcpy(nng_msg_body(msg), p, len);
    int rv = nng_sendmsg(push, msg, 0);
    if (rv != 0) {
        nng_msg_free(msg);
        fail_msg("rogue push: %s", nng_strerror(rv));
    }
}

/* Seal body with k (NULL: plaintext) as a peer frame and push it. */
static void
push_sealed(nng_socket push, wire_sender *s, const wire_key *k,
            const uint8_t *body, size_t blen)
{
    uint8_t *fr = NULL;
    size_t flen = 0;
    assert_int_equal(proc_frame_seal(s, k, WIRE_F_PEER, body, blen, &fr, &flen),
                     SHOAL_OK);
    push_bytes(push, fr, flen);
    free(fr);
}

static size_t
inject(fx *f, size_t target, nng_socket push, const snapshot *before,
       const char *tag)
{
    const proc_keys *keys = proc_cluster_keys(f->c);
    wire_key wrong, unknown_id;
    assert_int_equal(
        wire_key_generate(PROC_KEY_PEER, WIRE_ROLE_PEER, NULL, 0, &wrong),
        SHOAL_OK);
    assert_int_equal(
        wire_key_generate(4242, WIRE_ROLE_PEER, NULL, 0, &unknown_id),
        SHOAL_OK);
    wire_sender s;
    wire_sender_init(&s);
    size_t sent = 0;
    /* Records that would apply: for shards the target follows, at its next
     * LSN, from the shard's real primary. */
    for (uint32_t sh = 0; sh < f->m->n_shards; sh += 7) {
        uint32_t p = f->m->primary[sh];
        if (p == target || !cc_map_is_replica(f->m, sh, (uint32_t) target))
            continue;
        char key[64];
        snprintf(key, sizeof(key), "rogue:%s:%u", tag, sh);
        size_t blen = 0;
        uint8_t *body =
            rogue_msg(f->m->node_id[p], sh, before->st[target]->lsn[sh] + 1,
                      key, "PWNED", &blen);
        push_sealed(push, &s, NULL, body, blen);         /* plaintext */
        push_sealed(push, &s, &wrong, body, blen);       /* wrong secret */
        push_sealed(push, &s, &unknown_id, body, blen);  /* unknown id */
        push_sealed(push, &s, &keys->admin, body, blen); /* not role peer */
        push_sealed(push, &s, &keys->write, body, blen);
        /* Raw, unframed protobuf and truncations of a sealed frame. */
        push_bytes(push, body, blen);
        uint8_t *fr = NULL;
        size_t flen = 0;
        assert_int_equal(
            proc_frame_seal(&s, &wrong, WIRE_F_PEER, body, blen, &fr, &flen),
            SHOAL_OK);
        push_bytes(push, fr, WIRE_HDR_BYTES);
        push_bytes(push, fr, flen - 1);
        free(fr);
        free(body);
        sent += 8;
    }
    /* Tampered copies of captured real frames: one bit in the header's
     * flags/key id, in the nonce, in the body, in the tag. */
    size_t tampered = 0;
    for (size_t i = 0; i < f->n_cap && tampered < 200; i++) {
        const frame *c = &f->cap[i];
        if (!c->has_records && i % 10 != 0)
            continue; /* mostly frames that carry records */
        tampered++;
        size_t pos[] = {3,          4,
                        8,          20,
                        31,         WIRE_HDR_BYTES,
                        c->len / 2, c->len - WIRE_TAG_BYTES,
                        c->len - 1};
        for (size_t j = 0; j < sizeof(pos) / sizeof(pos[0]); j++) {
            if (pos[j] >= c->len)
                continue;
            uint8_t *t = malloc(c->len);
            assert_non_null(t);
            memcpy(t, c->p, c->len);
            t[pos[j]] ^= (uint8_t) (1u << (j % 8));
            push_bytes(push, t, c->len);
            free(t);
            sent++;
        }
    }
    /* Replays of captured real frames, as they were. */
    for (size_t i = 0; i < f->n_cap; i++) {
        push_bytes(push, f->cap[i].p, f->cap[i].len);
        sent++;
    }
    memset(&wrong, 0, sizeof(wrong));
    memset(&unknown_id, 0, sizeof(unknown_id));
    return sent;
}

static void
assert_unchanged(fx *f, const snapshot *before, const char *tag)
{
    snapshot after = {{NULL}, {NULL}};
    take_snapshot(f, &after);
    size_t changed = 0;
    for (size_t i = 0; i < proc_cluster_size(f->c); i++) {
        for (uint32_t s = 0; s < f->m->n_shards; s++) {
            if (after.dig[i][s] == before->dig[i][s] &&
                after.st[i]->lsn[s] == before->st[i]->lsn[s])
                continue;
            if (changed++ < 8)
                fprintf(stderr,
                        "# n%zu shard %u changed: lsn %" PRIu64 " -> %" PRIu64
                        ", digest %016" PRIx64 " -> %016" PRIx64 "\n",
                        i + 1, s, before->st[i]->lsn[s], after.st[i]->lsn[s],
                        before->dig[i][s], after.dig[i][s]);
        }
    }
    free_snapshot(&after);
    /* No rogue key on any replica. */
    size_t found = 0;
    for (uint32_t sh = 0; sh < f->m->n_shards; sh += 7) {
        char key[64];
        snprintf(key, sizeof(key), "rogue:%s:%u", tag, sh);
        for (size_t i = 0; i < proc_cluster_size(f->c); i++) {
            Shoal__Request req = SHOAL__REQUEST__INIT;
            Shoal__GetReq g = SHOAL__GET_REQ__INIT;
            g.has_key = true;
            g.key.data = (uint8_t *) key;
            g.key.len = strlen(key);
            req.op_case = SHOAL__REQUEST__OP_GET;
            req.get = &g;
            req.has_read_mode = true;
            req.read_mode = SHOAL__READ_MODE__READ_ANY;
            req.has_map_epoch = true;
            req.map_epoch = f->m->epoch;
            proc_reply rep;
            assert_int_equal(
                cc_call(port_of(f, i), admin(f), &req, CALL_MS, &rep),
                SHOAL_OK);
            assert_false(rep.is_error);
            Shoal__Response *r = rep.frame->resps[0];
            shoal_err st = r->has_status ? (shoal_err) r->status : SHOAL_OK;
            if (st != SHOAL_ENOTFOUND)
                found++;
            proc_reply_fini(&rep);
        }
    }
    printf("# %s: %zu shard states changed, %zu rogue keys readable\n", tag,
           changed, found);
    assert_int_equal(changed, 0);
    assert_int_equal(found, 0);
}

static void
inject_into(fx *f, size_t target, const char *tag)
{
    snapshot before = {{NULL}, {NULL}};
    take_snapshot(f, &before);
    nng_socket push;
    assert_int_equal(nng_push0_open(&push), 0);
    nng_socket_set_ms(push, NNG_OPT_SENDTIMEO, 5000);
    int rv = nng_dial(push, f->peer_url[target], NULL, 0);
    if (rv != 0)
        fail_msg("rogue dial %s: %s", f->peer_url[target], nng_strerror(rv));
    size_t sent = inject(f, target, push, &before, tag);
    proc_nap_ms(1500); /* let the node's receiver drain the socket */
    cc_close_bounded(push, 5000);
    proc_nap_ms(500);
    printf("# %s: pushed %zu rogue frames to n%zu's peer URL %s\n", tag, sent,
           target + 1, f->peer_url[target]);
    assert_unchanged(f, &before, tag);
    free_snapshot(&before);
    /* Still healthy. */
    int status = 0;
    assert_int_equal(proc_node_http(proc_cluster_node(f->c, target), "/health",
                                    &status, NULL),
                     SHOAL_OK);
    assert_int_equal(status, 200);
}

static void
control_injection(fx *f, size_t target)
{
    snapshot before = {{NULL}, {NULL}};
    take_snapshot(f, &before);
    uint32_t sh = 0;
    while (f->m->primary[sh] == target ||
           !cc_map_is_replica(f->m, sh, (uint32_t) target))
        sh++;
    size_t blen = 0;
    uint8_t *body =
        rogue_msg(f->m->node_id[f->m->primary[sh]], sh,
                  before.st[target]->lsn[sh] + 1, "control:key", "x", &blen);
    nng_socket push;
    assert_int_equal(nng_push0_open(&push), 0);
    nng_socket_set_ms(push, NNG_OPT_SENDTIMEO, 5000);
    assert_int_equal(nng_dial(push, f->peer_url[target], NULL, 0), 0);
    wire_sender s;
    wire_sender_init(&s);
    push_sealed(push, &s, &proc_cluster_keys(f->c)->peer, body, blen);
    free(body);
    uint64_t deadline = proc_now_ms() + 10000;
    bool applied = false;
    while (!applied && proc_now_ms() < deadline) {
        proc_nap_ms(100);
        cc_status *st = NULL;
        assert_int_equal(
            cc_status_get(port_of(f, target), admin(f), f->m->n_shards, &st),
            SHOAL_OK);
        applied = st->lsn[sh] == before.st[target]->lsn[sh] + 1;
        cc_status_free(st);
    }
    cc_close_bounded(push, 5000);
    free_snapshot(&before);
    printf("# control: a record sealed with the cluster key is applied by "
           "n%zu: %s\n",
           target + 1, applied ? "yes" : "no");
    assert_true(applied);
}

static void
test_rogue_peer(void **state)
{
    fx *f = *state;
    if (!shoald_has_cluster())
        skip();
    uint64_t seed = tu_seed("rogue canary");
    proc_cluster_opts o;
    proc_cluster_opts_default(&o);
    o.dir = f->dir;
    o.fsync = "none";
    shoal_err rc = proc_cluster_start(&o, &f->c);
    if (rc != SHOAL_OK)
        fail_msg("cluster start: %s (logs in %s)", shoal_errname(rc), f->dir);
    assert_int_equal(cc_map_get(port_of(f, 0), admin(f), &f->m), SHOAL_OK);
    read_peer_urls(f);

    shoal *db = NULL;
    assert_int_equal(open_all(f->c, &db), SHOAL_OK);
    for (int i = 0; i < 100; i++) {
        char k[32];
        snprintf(k, sizeof(k), "base:%03d", i);
        assert_int_equal(
            shoal_put(db, k, strlen(k), k, strlen(k), NULL, NULL, NULL),
            SHOAL_OK);
    }
    shoal_close(db);
    wait_synced(f);

    char canary[96];
    snprintf(canary, sizeof(canary), "CANARY-%016" PRIx64 "-do-not-leak",
             tu_rand(&seed));
    size_t n_canary = 0;
    capture_while_down(f, canary, &n_canary);
    check_capture(f, canary);

    assert_int_equal(proc_node_launch(proc_cluster_node(f->c, 2)), SHOAL_OK);
    wait_synced(f);

    inject_into(f, 1, "n2");
    inject_into(f, 2, "n3"); /* restarted: fresh replay window */

    /* Replication still works after all that. */
    assert_int_equal(open_all(f->c, &db), SHOAL_OK);
    for (int i = 0; i < 50; i++) {
        char k[32];
        snprintf(k, sizeof(k), "after:%03d", i);
        assert_int_equal(
            shoal_put(db, k, strlen(k), k, strlen(k), NULL, NULL, NULL),
            SHOAL_OK);
    }
    shoal_close(db);
    wait_synced(f);
    uint64_t keys = 0;
    assert_int_equal(cc_digests_compare(f->c, f->m, &keys), 0);
    assert_true(keys >= 150 + n_canary);

    /* Control: the same injection sealed with the real cluster key is
     * applied -- the rogue's frames did reach the node's decoder, so the
     * refusals above are the node's doing. (It diverges n2 from its
     * primary on purpose: nothing is compared after this.) */
    control_injection(f, 1);
    assert_int_equal(proc_cluster_stop(f->c, STOP_MS), SHOAL_OK);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_rogue_peer, fx_up, fx_down),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
