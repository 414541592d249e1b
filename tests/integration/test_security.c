/*
 * test_security.c -- TESTING.md G9 on one real shoald.
 *
 * Nobody without a valid key reads or writes: frames without a key
 * (plaintext to a sealed node), with an unknown key id, with the right id
 * and a wrong secret; a read key writing, a prefix key outside its prefix;
 * every byte of a small sealed frame flipped (every bit too); frames
 * captured and replayed. Each is rejected, changes nothing, and is counted:
 * the test checks the exact increase of shoal_frames_refused_total{reason}
 * and shoal_requests_denied_total on /metrics.
 *
 * Capture of traffic: a TCP relay inside the test records every byte
 * between libshoal/shoalctl and the node (the node advertises the relay's
 * URL, so clients never bypass it). A random canary key and value written
 * and read back through it must not appear in the capture, as text or hex,
 * while the clients read the canary back correctly. The control runs the
 * same against an --insecure node and must find the canary, so the capture
 * check can fail.
 */
#include "tests/support/proc.h"
#include "tests/support/testutil.h"

#include "proto/bytes.h"
#include "shoal.h"

#include <inttypes.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <cmocka.h>

#define CALL_MS 30000

typedef struct sx {
    char *dir;
    proc_keys keys;
    proc_node *node;
    proc_relay *relay; /* capture tests only */
    shoal *db;         /* admin */
    wire_sender sender;
} sx;

static shoal_err
db_open_url(const char *url, const char *key_file, shoal **out)
{
    shoal_opts o;
    shoal_opts_default(&o);
    const char *seeds[] = {url};
    o.seeds = seeds;
    o.n_seeds = 1;
    o.key_file = key_file;
    o.insecure = key_file == NULL;
    o.timeout_ms = CALL_MS;
    o.connect_timeout_ms = 10000;
    return shoal_open(&o, out);
}

/* Start a node (sealed unless insecure), optionally behind a relay that it
 * advertises. */
static int
sx_start(void **state, bool insecure, bool relay)
{
    sx *s = calloc(1, sizeof(*s));
    void *dir = NULL;
    if (s == NULL || tu_tmpdir_up(&dir) != 0)
        return -1;
    s->dir = dir;
    *state = s;
    wire_sender_init(&s->sender);
    if (proc_keys_make(s->dir, &s->keys) != SHOAL_OK)
        return -1;
    char adv[64];
    const char *extra[] = {"--advertise", adv, NULL};
    proc_node_opts o;
    proc_node_opts_default(&o);
    o.dir = s->dir;
    o.key_file = insecure ? NULL : s->keys.node_file;
    if (relay) {
        if (proc_relay_open(0, &s->relay) != SHOAL_OK)
            return -1;
        snprintf(adv, sizeof(adv), "tcp://127.0.0.1:%u",
                 proc_relay_port(s->relay));
        o.extra_args = extra;
    }
    if (proc_node_open(&o, &s->node) != SHOAL_OK)
        return -1;
    if (relay)
        proc_relay_set_target(s->relay, proc_node_port(s->node));
    if (proc_node_launch(s->node) != SHOAL_OK)
        return -1;
    if (!relay && db_open_url(proc_node_url(s->node), s->keys.admin_file,
                              &s->db) != SHOAL_OK)
        return -1;
    return 0;
}

static int
sx_up(void **state)
{
    return sx_start(state, false, false);
}

static int
sx_up_relay(void **state)
{
    return sx_start(state, false, true);
}

static int
sx_up_relay_insecure(void **state)
{
    return sx_start(state, true, true);
}

static int
sx_down(void **state)
{
    sx *s = *state;
    if (s == NULL)
        return 0;
    shoal_close(s->db);
    proc_node_free(s->node);
    proc_relay_close(s->relay);
    proc_reap_all();
    proc_keys_wipe(&s->keys);
    void *dir = s->dir;
    tu_tmpdir_down(&dir);
    free(s);
    return 0;
}

/* ---- metrics ----------------------------------------------------------------
 */

typedef struct counts {
    double plaintext, bad_key, bad_tag, bad_header, replayed, bad_decode;
    double denied;
} counts;

static void
read_counts(sx *s, counts *c)
{
    int status = 0;
    char *body = NULL;
    assert_int_equal(proc_node_http(s->node, "/metrics", &status, &body),
                     SHOAL_OK);
    assert_int_equal(status, 200);
    const char *fr = "shoal_frames_refused_total";
    c->plaintext = proc_metric_sum(body, fr, "reason=\"plaintext\"");
    c->bad_key = proc_metric_sum(body, fr, "reason=\"bad_key\"");
    c->bad_tag = proc_metric_sum(body, fr, "reason=\"bad_tag\"");
    c->bad_header = proc_metric_sum(body, fr, "reason=\"bad_header\"");
    c->replayed = proc_metric_sum(body, fr, "reason=\"replayed\"");
    c->bad_decode = proc_metric_sum(body, fr, "reason=\"bad_decode\"");
    c->denied = proc_metric_sum(body, "shoal_requests_denied_total", NULL);
    free(body);
    assert_true(c->plaintext >= 0 && c->bad_key >= 0 && c->bad_tag >= 0 &&
                c->bad_header >= 0 && c->replayed >= 0 && c->bad_decode >= 0 &&
                c->denied >= 0);
}

static void
print_delta(const char *what, const counts *a, const counts *b)
{
    printf("# %s: refused plaintext +%.0f, bad_key +%.0f, bad_tag +%.0f, "
           "bad_header +%.0f, replayed +%.0f, bad_decode +%.0f; denied "
           "+%.0f\n",
           what, b->plaintext - a->plaintext, b->bad_key - a->bad_key,
           b->bad_tag - a->bad_tag, b->bad_header - a->bad_header,
           b->replayed - a->replayed, b->bad_decode - a->bad_decode,
           b->denied - a->denied);
}

/* ---- raw frames -------------------------------------------------------------
 */

static ProtobufCBinaryData
str_bin(const char *str)
{
    ProtobufCBinaryData b = {strlen(str), (uint8_t *) str};
    return b;
}

/* A sealed frame of one request under k (NULL: plaintext). */
static void
frame_one(sx *s, const wire_key *k, Shoal__Request *r, uint8_t **out,
          size_t *len)
{
    uint8_t *body = NULL;
    size_t blen = 0;
    assert_int_equal(proc_reqframe_pack(&r, 1, &body, &blen), SHOAL_OK);
    assert_int_equal(proc_frame_seal(&s->sender, k, 0, body, blen, out, len),
                     SHOAL_OK);
    free(body);
}

static void
frame_put(sx *s, const wire_key *k, const char *key, const char *val,
          uint8_t **out, size_t *len)
{
    Shoal__Request r = SHOAL__REQUEST__INIT;
    Shoal__PutReq p = SHOAL__PUT_REQ__INIT;
    p.has_key = p.has_value = true;
    p.key = str_bin(key);
    p.value = str_bin(val);
    r.op_case = SHOAL__REQUEST__OP_PUT;
    r.put = &p;
    frame_one(s, k, &r, out, len);
}

static void
frame_incr(sx *s, const wire_key *k, const char *key, uint8_t **out,
           size_t *len)
{
    Shoal__Request r = SHOAL__REQUEST__INIT;
    Shoal__IncrReq p = SHOAL__INCR_REQ__INIT;
    p.has_key = p.has_delta = true;
    p.key = str_bin(key);
    p.delta = 1;
    r.op_case = SHOAL__REQUEST__OP_INCR;
    r.incr = &p;
    frame_one(s, k, &r, out, len);
}

/* Send a frame on a fresh connection; the answer's error-frame status, or
 * SHOAL_OK with *resp_status the first response's status when it opened
 * (under k). */
static shoal_err
send_frame(sx *s, const wire_key *k, const uint8_t *frame, size_t len,
           shoal_err *resp_status)
{
    proc_sp *sp = NULL;
    assert_int_equal(proc_sp_connect(proc_node_port(s->node), 10000, &sp),
                     SHOAL_OK);
    uint8_t *resp = NULL;
    size_t rlen = 0;
    assert_int_equal(proc_sp_call(sp, frame, len, CALL_MS, &resp, &rlen),
                     SHOAL_OK);
    proc_sp_close(sp);
    proc_reply r;
    assert_int_equal(proc_reply_decode(k, resp, rlen, &r), SHOAL_OK);
    shoal_err rc = SHOAL_OK;
    if (r.is_error) {
        rc = r.error;
    } else {
        assert_int_equal(r.frame->n_resps, 1);
        *resp_status = (shoal_err) r.frame->resps[0]->status;
    }
    proc_reply_fini(&r);
    free(resp);
    return rc;
}

static void
expect_refused(sx *s, const uint8_t *frame, size_t len, shoal_err want)
{
    shoal_err st = SHOAL_OK;
    assert_int_equal(send_frame(s, NULL, frame, len, &st), want);
}

static void
expect_status(sx *s, const wire_key *k, const uint8_t *frame, size_t len,
              shoal_err want)
{
    shoal_err st = SHOAL_EIO;
    assert_int_equal(send_frame(s, k, frame, len, &st), SHOAL_OK);
    assert_int_equal(st, want);
}

static void
check_absent(sx *s, const char *key)
{
    void *v = NULL;
    size_t vlen = 0;
    assert_int_equal(shoal_get(s->db, key, strlen(key), &v, &vlen, NULL, NULL),
                     SHOAL_ENOTFOUND);
}

/* ---- no key, wrong key ------------------------------------------------------
 */

static void clients_refused(sx *s, const wire_key *unknown);

static void
test_security_unauthenticated(void **state)
{
    sx *s = *state;
    uint64_t d0 = 0, d1 = 0;
    size_t n0 = 0, n1 = 0;
    assert_int_equal(proc_scan_digest(s->db, &d0, &n0), SHOAL_OK);
    counts a, b;
    read_counts(s, &a);
    enum { N = 5 };
    wire_key unknown, wrong = s->keys.admin;
    assert_int_equal(wire_key_generate(77, WIRE_ROLE_ADMIN, NULL, 0, &unknown),
                     SHOAL_OK);
    wrong.secret[5] ^= 0x20;
    const wire_key *ks[3] = {NULL, &unknown, &wrong};
    for (int i = 0; i < N; i++) {
        for (int j = 0; j < 3; j++) {
            uint8_t *f = NULL;
            size_t len = 0;
            frame_put(s, ks[j], "sec/intruder", "x", &f, &len);
            expect_refused(s, f, len, SHOAL_EAUTH);
            free(f);
        }
    }
    read_counts(s, &b);
    print_delta("no key / unknown id / wrong secret", &a, &b);
    assert_true(b.plaintext - a.plaintext == N);
    assert_true(b.bad_key - a.bad_key == N);
    assert_true(b.bad_tag - a.bad_tag == N);
    assert_true(b.bad_decode == a.bad_decode);

    clients_refused(s, &unknown);
    check_absent(s, "sec/intruder");
    assert_int_equal(proc_scan_digest(s->db, &d1, &n1), SHOAL_OK);
    assert_int_equal(d0, d1);
    assert_int_equal(n0, n1);
}

/* libshoal and shoalctl without a key, and libshoal with a key the node
 * does not know. */
static void
clients_refused(sx *s, const wire_key *unknown)
{
    shoal *db = NULL;
    assert_int_equal(db_open_url(proc_node_url(s->node), NULL, &db),
                     SHOAL_EAUTH);
    assert_null(db);
    char path[600], line[600];
    snprintf(path, sizeof(path), "%s/unknown.key", s->dir);
    assert_int_equal(wire_key_format(unknown, line, sizeof(line)), SHOAL_OK);
    FILE *fp = fopen(path, "w");
    assert_non_null(fp);
    fputs(line, fp);
    fclose(fp);
    assert_int_equal(chmod(path, 0600), 0);
    assert_int_equal(db_open_url(proc_node_url(s->node), path, &db),
                     SHOAL_EAUTH);
    assert_null(db);

    /* shoalctl without a key: exit 4 (authentication). */
    proc_output o;
    const char *argv[] = {PROC_SHOALCTL, "--url", proc_node_url(s->node),
                          "--insecure",  "put",   "sec/intruder",
                          "x",           NULL};
    assert_int_equal(proc_run(argv, NULL, 0, 60000, &o), SHOAL_OK);
    assert_int_equal(o.code, 4);
    proc_output_free(&o);
}

/* ---- roles and prefixes -----------------------------------------------------
 */

static void
test_security_roles(void **state)
{
    sx *s = *state;
    assert_int_equal(shoal_put(s->db, "sec/k", 5, "orig", 4, NULL, NULL, NULL),
                     SHOAL_OK);
    counts a, b;
    read_counts(s, &a);
    uint8_t *f = NULL;
    size_t len = 0;
    /* The read key may read ... */
    Shoal__Request r = SHOAL__REQUEST__INIT;
    Shoal__GetReq g = SHOAL__GET_REQ__INIT;
    g.has_key = true;
    g.key = str_bin("sec/k");
    r.op_case = SHOAL__REQUEST__OP_GET;
    r.get = &g;
    frame_one(s, &s->keys.read, &r, &f, &len);
    expect_status(s, &s->keys.read, f, len, SHOAL_OK);
    free(f);
    /* ... and not write. */
    frame_put(s, &s->keys.read, "sec/k", "evil", &f, &len);
    expect_status(s, &s->keys.read, f, len, SHOAL_EPERM);
    free(f);
    frame_incr(s, &s->keys.read, "sec/n", &f, &len);
    expect_status(s, &s->keys.read, f, len, SHOAL_EPERM);
    free(f);
    /* The prefix key: inside yes, outside no. */
    frame_put(s, &s->keys.prefixed, PROC_KEY_PREFIX "ok", "v", &f, &len);
    expect_status(s, &s->keys.prefixed, f, len, SHOAL_OK);
    free(f);
    frame_put(s, &s->keys.prefixed, "sec/k", "evil", &f, &len);
    expect_status(s, &s->keys.prefixed, f, len, SHOAL_EPERM);
    free(f);
    frame_one(s, &s->keys.prefixed, &r, &f, &len); /* get outside */
    expect_status(s, &s->keys.prefixed, f, len, SHOAL_EPERM);
    free(f);
    /* The write key: no stats. */
    Shoal__StatsReq st = SHOAL__STATS_REQ__INIT;
    r.op_case = SHOAL__REQUEST__OP_STATS;
    r.stats = &st;
    frame_one(s, &s->keys.write, &r, &f, &len);
    expect_status(s, &s->keys.write, f, len, SHOAL_EPERM);
    free(f);
    read_counts(s, &b);
    print_delta("roles and prefixes", &a, &b);
    assert_true(b.denied - a.denied == 5);

    void *v = NULL;
    size_t vlen = 0;
    assert_int_equal(shoal_get(s->db, "sec/k", 5, &v, &vlen, NULL, NULL),
                     SHOAL_OK);
    assert_int_equal(vlen, 4);
    assert_memory_equal(v, "orig", 4);
    shoal_free(v);
    check_absent(s, "sec/n");
}

/* ---- tampering --------------------------------------------------------------
 */

typedef struct tamper_counts {
    double header, key, tag;
} tamper_counts;

/* Which refusal a frame with byte pos of f changed to v must get: the
 * magic, version and flags fail the header check; the key id fails as an
 * unknown key, as a malformed header when it becomes 0, or at the tag when
 * it names another valid key; nonce, body and tag fail the tag check. */
static void
tamper_expect(const proc_keys *k, const uint8_t *f, size_t pos, uint8_t v,
              tamper_counts *c)
{
    if (pos < 4) {
        c->header++;
        return;
    }
    if (pos >= 8) {
        c->tag++;
        return;
    }
    uint8_t id[4];
    memcpy(id, f + 4, 4);
    id[pos - 4] = v;
    uint32_t kid = get_u32(id);
    if (kid == 0)
        c->header++;
    else if (kid == k->admin.id || kid == k->write.id || kid == k->read.id ||
             kid == k->prefixed.id)
        c->tag++;
    else
        c->key++;
}

static void
test_security_tamper(void **state)
{
    sx *s = *state;
    uint8_t *f = NULL;
    size_t len = 0;
    frame_put(s, &s->keys.admin, "sec/t", "tampered?", &f, &len);
    counts a, b;
    read_counts(s, &a);
    size_t n = 0;
    tamper_counts want = {0, 0, 0};
    uint8_t *copy = malloc(len);
    assert_non_null(copy);
    const uint8_t masks[] = {0xff, 0x01, 0x02, 0x04, 0x08,
                             0x10, 0x20, 0x40, 0x80};
    for (size_t pos = 0; pos < len; pos++) {
        for (size_t m = 0; m < sizeof(masks); m++) {
            memcpy(copy, f, len);
            copy[pos] ^= masks[m];
            tamper_expect(&s->keys, f, pos, copy[pos], &want);
            shoal_err st = SHOAL_OK;
            shoal_err rc = send_frame(s, NULL, copy, len, &st);
            assert_true(rc == SHOAL_EAUTH || rc == SHOAL_EINVAL);
            n++;
        }
    }
    read_counts(s, &b);
    print_delta("tampered frames", &a, &b);
    printf("# tampered: %zu frames (%zu bytes x %zu flips), all refused; "
           "expected bad_header +%.0f, bad_key +%.0f, bad_tag +%.0f\n",
           n, len, sizeof(masks), want.header, want.key, want.tag);
    assert_true(b.bad_header - a.bad_header == want.header);
    assert_true(b.bad_key - a.bad_key == want.key);
    assert_true(b.bad_tag - a.bad_tag == want.tag);
    assert_true(want.header + want.key + want.tag == (double) n);
    assert_true(b.plaintext == a.plaintext && b.replayed == a.replayed);
    assert_true(b.bad_decode == a.bad_decode);
    check_absent(s, "sec/t");
    /* The untouched frame still works (no tampered copy was accepted). */
    expect_status(s, &s->keys.admin, f, len, SHOAL_OK);
    free(copy);
    free(f);
}

/* ---- replay -----------------------------------------------------------------
 */

static void
test_security_replay(void **state)
{
    sx *s = *state;
    enum { FRAMES = 10, AGAIN = 3 };
    uint8_t *f[FRAMES];
    size_t len[FRAMES];
    for (int i = 0; i < FRAMES; i++) {
        frame_incr(s, &s->keys.write, "sec/ctr", &f[i], &len[i]);
        expect_status(s, &s->keys.write, f[i], len[i], SHOAL_OK);
    }
    counts a, b;
    read_counts(s, &a);
    for (int k = 0; k < AGAIN; k++)
        for (int i = 0; i < FRAMES; i++)
            expect_refused(s, f[i], len[i], SHOAL_EAUTH);
    read_counts(s, &b);
    print_delta("replayed frames", &a, &b);
    assert_true(b.replayed - a.replayed == FRAMES * AGAIN);
    int64_t v = 0;
    assert_int_equal(shoal_incr(s->db, "sec/ctr", 7, 0, &v, NULL, NULL),
                     SHOAL_OK);
    assert_int_equal(v, FRAMES); /* each incr applied exactly once */
    for (int i = 0; i < FRAMES; i++)
        free(f[i]);
}

/* ---- capture of traffic -----------------------------------------------------
 */

static void
hex(const uint8_t *p, size_t len, char *out, bool upper)
{
    const char *d = upper ? "0123456789ABCDEF" : "0123456789abcdef";
    for (size_t i = 0; i < len; i++) {
        out[2 * i] = d[p[i] >> 4];
        out[2 * i + 1] = d[p[i] & 15];
    }
    out[2 * len] = '\0';
}

/* How many forms of the canary (key, value; text, hex, HEX) the capture
 * holds. */
static int
canary_hits(sx *s, const char *key, const char *val, size_t *captured)
{
    uint8_t *cap = NULL;
    size_t clen = 0;
    assert_int_equal(proc_relay_capture(s->relay, &cap, &clen), SHOAL_OK);
    *captured = clen;
    int hits = 0;
    const char *forms[2] = {key, val};
    for (int i = 0; i < 2; i++) {
        char h[256];
        size_t n = strlen(forms[i]);
        hits += proc_memmem(cap, clen, forms[i], n);
        hex((const uint8_t *) forms[i], n, h, false);
        hits += proc_memmem(cap, clen, h, 2 * n);
        hex((const uint8_t *) forms[i], n, h, true);
        hits += proc_memmem(cap, clen, h, 2 * n);
        /* A distinctive middle part, in case of framing around it. */
        hits += proc_memmem(cap, clen, forms[i] + 4, n - 8);
    }
    free(cap);
    return hits;
}

/* shoalctl --url url (--key-file kf | --insecure) cmd...; its exit code. */
static int
ctl_run(const char *url, const char *kf, const char *const *cmd, proc_output *o)
{
    const char *argv[16];
    size_t k = 0;
    argv[k++] = PROC_SHOALCTL;
    argv[k++] = "--url";
    argv[k++] = url;
    if (kf != NULL) {
        argv[k++] = "--key-file";
        argv[k++] = kf;
    } else {
        argv[k++] = "--insecure";
    }
    for (size_t i = 0; cmd[i] != NULL && k < 15; i++)
        argv[k++] = cmd[i];
    argv[k] = NULL;
    assert_int_equal(proc_run(argv, NULL, 0, 60000, o), SHOAL_OK);
    return o->code;
}

/* Write and read the canary through the relay with libshoal and shoalctl;
 * returns how many canary forms the capture holds. */
static int
canary_run(sx *s, bool insecure)
{
    uint64_t seed = tu_seed("canary");
    char key[64], val[96];
    snprintf(key, sizeof(key), "canary/%016" PRIx64, tu_rand(&seed));
    snprintf(val, sizeof(val), "CANARY-7f3a-%016" PRIx64 "%016" PRIx64,
             tu_rand(&seed), tu_rand(&seed));
    char url[64];
    snprintf(url, sizeof(url), "tcp://127.0.0.1:%u", proc_relay_port(s->relay));
    const char *kf = insecure ? NULL : s->keys.admin_file;

    shoal *db = NULL;
    assert_int_equal(db_open_url(url, kf, &db), SHOAL_OK);
    assert_int_equal(
        shoal_put(db, key, strlen(key), val, strlen(val), NULL, NULL, NULL),
        SHOAL_OK);
    void *got = NULL;
    size_t glen = 0;
    assert_int_equal(shoal_get(db, key, strlen(key), &got, &glen, NULL, NULL),
                     SHOAL_OK);
    assert_int_equal(glen, strlen(val));
    assert_memory_equal(got, val, glen);
    shoal_free(got);
    shoal_close(db);

    /* shoalctl: get it back, then write it again. */
    const char *get[] = {"get", key, NULL};
    const char *put[] = {"put", key, val, NULL};
    proc_output o;
    assert_int_equal(ctl_run(url, kf, get, &o), 0);
    assert_non_null(strstr(o.out, val));
    proc_output_free(&o);
    assert_int_equal(ctl_run(url, kf, put, &o), 0);
    proc_output_free(&o);

    size_t captured = 0;
    int hits = canary_hits(s, key, val, &captured);
    printf("# %s node: %zu bytes captured through the relay, %d canary "
           "matches\n",
           insecure ? "--insecure" : "sealed", captured, hits);
    assert_true(captured > 200);
    return hits;
}

static void
test_security_capture(void **state)
{
    assert_int_equal(canary_run(*state, false), 0);
}

static void
test_security_capture_control(void **state)
{
    assert_true(canary_run(*state, true) > 0);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_security_unauthenticated, sx_up,
                                        sx_down),
        cmocka_unit_test_setup_teardown(test_security_roles, sx_up, sx_down),
        cmocka_unit_test_setup_teardown(test_security_tamper, sx_up, sx_down),
        cmocka_unit_test_setup_teardown(test_security_replay, sx_up, sx_down),
        cmocka_unit_test_setup_teardown(test_security_capture, sx_up_relay,
                                        sx_down),
        cmocka_unit_test_setup_teardown(test_security_capture_control,
                                        sx_up_relay_insecure, sx_down),
    };
    /* SHOAL_TEST_FILTER=test_x_* runs only the matching tests. */
    const char *filter = getenv("SHOAL_TEST_FILTER");
    if (filter != NULL && filter[0] != '\0')
        cmocka_set_test_filter(filter);
    return cmocka_run_group_tests(tests, NULL, NULL);
}
