/*
 * test_cmap.c -- the cluster map (cluster/cmap.h): good files and
 * defaults, every error kind (with its line number), format -> parse
 * round trips, determinism, cmap_load limits, cmap_to_pb contents and
 * allocation failures.
 */
#include "cluster/cmap.h"

#include "proto/mem.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#define KEY "000102030405060708090a0b0c0d0e0f"

static const char good[] =
    "# a cluster\n"
    "epoch = 7\n"
    "shards = 64   # power of two\n"
    "replicas = 3\n"
    "write_quorum = 2\n"
    "hash_key = " KEY "\n"
    "\n"
    "node = n1 tcp://10.0.0.1:7400 tcp://10.0.0.1:7401\n"
    "node = n2 tcp://10.0.0.2:7400 tcp://10.0.0.2:7401 2\n"
    "  node\t=\tn3 ipc:///tmp/n3.c ipc:///tmp/n3.p 1\r\n"
    "node = n4 tcp://10.0.0.4:7400 tcp://10.0.0.4:7401\n";

static cmap *
parse_ok(const char *text)
{
    char err[CMAP_ERR_LEN];
    cmap *m = NULL;
    shoal_err rc = cmap_parse(text, strlen(text), &m, err, sizeof(err));
    if (rc != SHOAL_OK)
        fail_msg("unexpected error: %s", err);
    assert_non_null(m);
    return m;
}

/* Parse must fail with EINVAL and a message containing want. */
static void
parse_bad(const char *text, const char *want)
{
    char err[CMAP_ERR_LEN];
    cmap *m = (cmap *) 1;
    shoal_err rc = cmap_parse(text, strlen(text), &m, err, sizeof(err));
    if (rc != SHOAL_EINVAL || strstr(err, want) == NULL)
        fail_msg("for %s: rc %d, err '%s', wanted '%s'", text, rc, err, want);
    assert_null(m);
    assert_null(strchr(err, '\n'));
}

static void
check_placement(const cmap *m)
{
    for (uint32_t s = 0; s < m->n_shards; s++) {
        const cmap_shard *sh = &m->shards[s];
        assert_int_equal(sh->n_replicas, m->r);
        assert_int_equal(sh->primary, sh->replicas[0]);
        assert_int_equal(sh->shard_epoch, 1);
        assert_int_equal(sh->state, CMAP_SHARD_STABLE);
        for (uint32_t k = 0; k < sh->n_replicas; k++) {
            assert_true(sh->replicas[k] < m->n_nodes);
            assert_true(cmap_is_replica(m, s, sh->replicas[k]));
            for (uint32_t j = 0; j < k; j++)
                assert_int_not_equal(sh->replicas[j], sh->replicas[k]);
        }
    }
}

static void
test_cmap_parses_good_file(void **state)
{
    (void) state;
    cmap *m = parse_ok(good);
    assert_int_equal(m->epoch, 7);
    assert_int_equal(m->n_shards, 64);
    assert_int_equal(m->r, 3);
    assert_int_equal(m->w, 2);
    for (int i = 0; i < KEYHASH_KEY_BYTES; i++)
        assert_int_equal(m->hash_key[i], i);
    assert_int_equal(m->n_nodes, 4);
    assert_string_equal(m->nodes[1].id, "n2");
    assert_string_equal(m->nodes[1].addr, "tcp://10.0.0.2:7400");
    assert_string_equal(m->nodes[1].peer_addr, "tcp://10.0.0.2:7401");
    assert_int_equal(m->nodes[1].weight, 2);
    assert_int_equal(m->nodes[0].weight, 1);
    assert_string_equal(m->nodes[2].addr, "ipc:///tmp/n3.c");
    assert_int_equal(m->nodes[2].state, CMAP_NODE_UP);
    check_placement(m);
    assert_int_equal(cmap_node_index(m, "n3"), 2);
    assert_int_equal(cmap_node_index(m, "n9"), -1);
    assert_int_equal(cmap_node_index(m, NULL), -1);
    assert_false(cmap_is_replica(m, 64, 0));
    assert_false(cmap_is_replica(m, 0, 99));
    cmap_free(m);
    cmap_free(NULL);
}

static void
test_cmap_defaults(void **state)
{
    (void) state;
    cmap *m = parse_ok("hash_key = " KEY "\n"
                       "node = a tcp://h:1 tcp://h:2\n"
                       "node = b tcp://h:3 tcp://h:4"); /* no final \n */
    assert_int_equal(m->epoch, 1);
    assert_int_equal(m->n_shards, 256);
    assert_int_equal(m->r, 2); /* min(3, nodes) */
    assert_int_equal(m->w, 2); /* R/2 + 1 */
    check_placement(m);
    cmap_free(m);
    m = parse_ok("hash_key = " KEY "\n"
                 "node = a tcp://h:1 tcp://h:2\nnode = b tcp://h:3 tcp://h:4\n"
                 "node = c tcp://h:5 tcp://h:6\nnode = d tcp://h:7 "
                 "tcp://h:8\nreplicas = 4\n");
    assert_int_equal(m->r, 4);
    assert_int_equal(m->w, 3);
    check_placement(m);
    cmap_free(m);
    m = parse_ok("hash_key = " KEY "\nnode = a tcp://h:1 tcp://h:2\n");
    assert_int_equal(m->r, 1);
    assert_int_equal(m->w, 1);
    for (uint32_t s = 0; s < m->n_shards; s++)
        assert_int_equal(m->shards[s].primary, 0);
    cmap_free(m);
}

static void
test_cmap_rejects_every_error(void **state)
{
    (void) state;
    const char *nodes = "node = a tcp://h:1 tcp://h:2\n"
                        "node = b tcp://h:3 tcp://h:4\n";
    char text[8192];
    /* Text is head, then "hash_key = ...", two nodes, then tail: head
     * errors are on line 1, tail errors on line 4. */
    static const struct {
        const char *head, *tail, *want;
    } cases[] = {
        {"epoch = 0\n", "", "line 1: epoch: '0' is not a number"},
        {"epoch = -1\n", "", "line 1: epoch"},
        {"epoch = 18446744073709551616\n", "", "line 1: epoch"},
        {"epoch = 1x\n", "", "line 1: epoch"},
        {"shards = 100\n", "", "line 1: shards: 100 is not a power of two"},
        {"shards = 131072\n", "", "line 1: shards"},
        {"shards = 0\n", "", "line 1: shards"},
        {"replicas = 0\n", "", "line 1: replicas"},
        {"replicas = 8\n", "", "line 1: replicas"},
        {"replicas = 3\n", "", "line 1: replicas = 3 but there are only 2"},
        {"write_quorum = 3\n", "", "line 1: write_quorum = 3 exceeds"},
        {"replicas = 1\nwrite_quorum = 2\n", "", "line 2: write_quorum = 2"},
        {"hash_key = " KEY "\n", "",
         "line 2: hash_key is already set on line 1"},
        {"", "hash_key = " KEY "\n",
         "line 4: hash_key is already set on line 1"},
        {"epoch = 1\nepoch = 2\n", "",
         "line 2: epoch is already set on line 1"},
        {"colour = blue\n", "", "line 1: unknown name 'colour'"},
        {"epoch\n", "", "line 1: expected 'name = value'"},
        {"= 3\n", "", "line 1: expected 'name = value'"},
        {"epoch =\n", "", "line 1: epoch: needs a value"},
        {"", "node = c\n", "line 4: node: expected 'ID CLIENT-URL PEER-URL"},
        {"", "node = c tcp://x:1 tcp://x:2 1 9\n", "line 4: node: expected"},
        {"", "node = c/d tcp://x:1 tcp://x:2\n", "line 4: node: 'c/d' is not"},
        {"", "node = c http://x:1 tcp://x:2\n",
         "line 4: node: 'http://x:1' is not a tcp:// or ipc:// URL"},
        {"", "node = c tcp:// tcp://x:2\n", "line 4: node: 'tcp://' is not"},
        {"", "node = c tcp://x:1 ipc://\n", "line 4: node: 'ipc://' is not"},
        {"", "node = c tcp://x:1 tcp://x:2 0\n", "line 4: node: weight '0'"},
        {"", "node = c tcp://x:1 tcp://x:2 101\n",
         "line 4: node: weight '101'"},
        {"", "node = c tcp://x:1 tcp://x:1\n",
         "client and peer URL are the same"},
        {"", "node = a tcp://x:1 tcp://x:2\n",
         "line 4: node: id 'a' is already used by node 'a'"},
        {"", "node = c tcp://h:3 tcp://x:2\n",
         "line 4: node: URL 'tcp://h:3' is already used by node 'b'"},
        {"", "node = c tcp://x:9 tcp://h:1\n", "line 4: node: URL 'tcp://h:1'"},
        {"",
         "node = c tcp://x:9 tcp://x:10 1 # ok\nnode = d tcp://x:10 "
         "tcp://x:11\n",
         "line 5: node: URL 'tcp://x:10' is already used by node 'c'"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        snprintf(text, sizeof(text), "%shash_key = " KEY "\n%s%s",
                 cases[i].head, nodes, cases[i].tail);
        parse_bad(text, cases[i].want);
    }
    parse_bad("hash_key = 0011\n", "line 1: hash_key: '0011' is not 32 hex");
    parse_bad("hash_key = " KEY "zz\n", "line 1: hash_key");
    parse_bad("hash_key = 000102030405060708090a0b0c0d0e0g\n",
              "line 1: hash_key");
    /* NUL byte inside a line (strlen-based helpers cannot hold it). */
    {
        char err[CMAP_ERR_LEN];
        cmap *m = NULL;
        static const char nul[] = "epoch = 1\0\nhash_key = " KEY "\n";
        assert_int_equal(cmap_parse(nul, sizeof(nul) - 1, &m, err, sizeof(err)),
                         SHOAL_EINVAL);
        assert_non_null(strstr(err, "line 1: contains a NUL byte"));
    }
    parse_bad("hash_key = " KEY "\n", "line 1: no 'node = ...' line");
    parse_bad("", "line 0: no 'node = ...' line");
    parse_bad(nodes, "line 2: hash_key is required");
    /* URL too long, and a long line. */
    char url[CMAP_URL_MAX + 8];
    memcpy(url, "tcp://", 6);
    memset(url + 6, 'h', sizeof(url) - 7);
    url[CMAP_URL_MAX + 1] = '\0'; /* 256 bytes */
    snprintf(text, sizeof(text), "node = c %s tcp://x:2\n", url);
    parse_bad(text, "line 1: node: 'tcp://hhh");
    url[CMAP_URL_MAX] = '\0'; /* 255 bytes: fine */
    snprintf(text, sizeof(text), "hash_key = " KEY "\nnode = c %s tcp://x:2\n",
             url);
    cmap_free(parse_ok(text));
    memset(text, ' ', 5000);
    text[5000] = '\0';
    parse_bad(text, "line 1: longer than 4096 bytes");
}

static void
test_cmap_error_text_is_one_printable_line(void **state)
{
    (void) state;
    char err[CMAP_ERR_LEN];
    cmap *m = NULL;
    static const char t[] = "\x01\xff\x7f = 3\n";
    assert_int_equal(cmap_parse(t, sizeof(t) - 1, &m, err, sizeof(err)),
                     SHOAL_EINVAL);
    for (const char *p = err; *p != '\0'; p++)
        assert_true(*p >= 0x20 && *p < 0x7f);
    assert_non_null(strstr(err, "line 1: unknown name '?\?\?'"));
    /* A small buffer is cut, never overrun. */
    char small[8];
    assert_int_equal(cmap_parse(t, sizeof(t) - 1, &m, small, sizeof(small)),
                     SHOAL_EINVAL);
    assert_int_equal(strlen(small), sizeof(small) - 1);
}

static bool
maps_equal(const cmap *a, const cmap *b)
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
    return memcmp(a->shards, b->shards, a->n_shards * sizeof(cmap_shard)) == 0;
}

static void
test_cmap_format_round_trips(void **state)
{
    (void) state;
    cmap *a = parse_ok(good);
    char *text = cmap_format(a);
    assert_non_null(text);
    cmap *b = parse_ok(text);
    assert_true(maps_equal(a, b));
    char *again = cmap_format(b);
    assert_string_equal(text, again); /* idempotent */
    assert_non_null(strstr(text, "hash_key = " KEY "\n"));
    assert_non_null(strstr(text, "node = n2 tcp://10.0.0.2:7400 "
                                 "tcp://10.0.0.2:7401 2\n"));
    mem_free(text);
    mem_free(again);
    cmap_free(a);
    cmap_free(b);
}

/* Placement depends on the node set only: the same nodes in another order
 * give the same replica ids per shard, and parsing twice is identical. */
static void
test_cmap_is_deterministic(void **state)
{
    (void) state;
    cmap *a = parse_ok(good), *b = parse_ok(good);
    assert_true(maps_equal(a, b));
    cmap *c = parse_ok("epoch = 7\nshards = 64\nhash_key = " KEY "\n"
                       "node = n4 tcp://10.0.0.4:7400 tcp://10.0.0.4:7401\n"
                       "node = n3 ipc:///tmp/n3.c ipc:///tmp/n3.p\n"
                       "node = n2 tcp://10.0.0.2:7400 tcp://10.0.0.2:7401 2\n"
                       "node = n1 tcp://10.0.0.1:7400 tcp://10.0.0.1:7401\n");
    for (uint32_t s = 0; s < a->n_shards; s++)
        for (uint32_t k = 0; k < a->r; k++)
            assert_string_equal(a->nodes[a->shards[s].replicas[k]].id,
                                c->nodes[c->shards[s].replicas[k]].id);
    cmap_free(a);
    cmap_free(b);
    cmap_free(c);
}

static void
test_cmap_load_reads_and_limits(void **state)
{
    (void) state;
    char dir[] = "/tmp/test_cmap.XXXXXX", path[256], err[CMAP_ERR_LEN];
    cmap *m = NULL;
    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof(path), "%s/cluster.conf", dir);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(good, f);
    fclose(f);
    assert_int_equal(cmap_load(path, &m, err, sizeof(err)), SHOAL_OK);
    assert_int_equal(m->n_nodes, 4);
    cmap_free(m);
    /* An error names the path. */
    f = fopen(path, "w");
    fputs("epoch = 0\n", f);
    fclose(f);
    assert_int_equal(cmap_load(path, &m, err, sizeof(err)), SHOAL_EINVAL);
    assert_null(m);
    assert_non_null(strstr(err, path));
    assert_non_null(strstr(err, "line 1: epoch"));
    /* Over CMAP_FILE_MAX: refused. */
    f = fopen(path, "w");
    char pad[1024];
    memset(pad, 'x', sizeof(pad));
    pad[0] = '#';
    pad[sizeof(pad) - 1] = '\n';
    for (size_t i = 0; i <= CMAP_FILE_MAX / sizeof(pad); i++)
        fwrite(pad, 1, sizeof(pad), f);
    fclose(f);
    assert_int_equal(cmap_load(path, &m, err, sizeof(err)), SHOAL_ETOOLARGE);
    assert_null(m);
    unlink(path);
    assert_int_equal(cmap_load(path, &m, err, sizeof(err)), SHOAL_EIO);
    assert_non_null(strstr(err, path));
    assert_int_equal(rmdir(dir), 0);
}

static void
test_cmap_to_pb_contents(void **state)
{
    (void) state;
    cmap *m = parse_ok(good);
    pbuf_arena a;
    pbuf_arena_init(&a, 4096);
    Shoal__ClusterMap pb;
    assert_int_equal(cmap_to_pb(m, &pb, &a), SHOAL_OK);
    assert_true(pb.has_epoch && pb.epoch == 7);
    assert_true(pb.has_shard_count && pb.shard_count == 64);
    assert_true(pb.has_replicas && pb.replicas == 3);
    assert_true(pb.has_write_quorum && pb.write_quorum == 2);
    assert_true(pb.has_hash_key && pb.hash_key.len == KEYHASH_KEY_BYTES);
    assert_memory_equal(pb.hash_key.data, m->hash_key, KEYHASH_KEY_BYTES);
    assert_int_equal(pb.n_nodes, 4);
    assert_string_equal(pb.nodes[3]->id, "n4");
    assert_string_equal(pb.nodes[1]->addr, "tcp://10.0.0.2:7400");
    assert_string_equal(pb.nodes[1]->peer_addr, "tcp://10.0.0.2:7401");
    assert_int_equal(pb.nodes[1]->weight, 2);
    assert_int_equal(pb.nodes[1]->state, 0);
    assert_int_equal(pb.n_shards, 64);
    for (uint32_t s = 0; s < 64; s++) {
        const Shoal__MapShard *sh = pb.shards[s];
        assert_int_equal(sh->shard, s);
        assert_int_equal(sh->n_replicas, 3);
        assert_memory_equal(sh->replicas, m->shards[s].replicas,
                            3 * sizeof(uint32_t));
        assert_int_equal(sh->primary, m->shards[s].primary);
        assert_int_equal(sh->shard_epoch, 1);
        assert_int_equal(sh->state, 0);
    }
    /* It packs and unpacks: the message is well formed. */
    size_t len = shoal__cluster_map__get_packed_size(&pb);
    uint8_t *buf = malloc(len);
    assert_non_null(buf);
    shoal__cluster_map__pack(&pb, buf);
    Shoal__ClusterMap *back = shoal__cluster_map__unpack(NULL, len, buf);
    assert_non_null(back);
    assert_int_equal(back->n_shards, 64);
    assert_string_equal(back->nodes[2]->addr, "ipc:///tmp/n3.c");
    shoal__cluster_map__free_unpacked(back, NULL);
    free(buf);
    pbuf_arena_fini(&a);
    cmap_free(m);
}

/* Fail allocation N for N = 1, 2, ... until the call succeeds: each
 * failure is ENOMEM with a message and leaks nothing (ASan). */
static void
test_cmap_enomem_everywhere(void **state)
{
    (void) state;
    char err[CMAP_ERR_LEN];
    for (long n = 1;; n++) {
        cmap *m = NULL;
        mem_fail_set(n, 0);
        shoal_err rc = cmap_parse(good, strlen(good), &m, err, sizeof(err));
        mem_fail_set(0, 0);
        if (rc == SHOAL_OK) {
            cmap_free(m);
            break;
        }
        assert_int_equal(rc, SHOAL_ENOMEM);
        assert_null(m);
        assert_string_equal(err, "out of memory");
        assert_true(n < 1000);
    }
    cmap *m = parse_ok(good);
    for (long n = 1;; n++) {
        mem_fail_set(n, 0);
        char *t = cmap_format(m);
        mem_fail_set(0, 0);
        if (t != NULL) {
            mem_free(t);
            break;
        }
        assert_true(n < 10);
    }
    for (long n = 1;; n++) {
        pbuf_arena a;
        Shoal__ClusterMap pb;
        pbuf_arena_init(&a, 256);
        mem_fail_set(n, 0);
        shoal_err rc = cmap_to_pb(m, &pb, &a);
        mem_fail_set(0, 0);
        pbuf_arena_fini(&a);
        if (rc == SHOAL_OK)
            break;
        assert_int_equal(rc, SHOAL_ENOMEM);
        assert_true(n < 1000);
    }
    cmap_free(m);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cmap_parses_good_file),
        cmocka_unit_test(test_cmap_defaults),
        cmocka_unit_test(test_cmap_rejects_every_error),
        cmocka_unit_test(test_cmap_error_text_is_one_printable_line),
        cmocka_unit_test(test_cmap_format_round_trips),
        cmocka_unit_test(test_cmap_is_deterministic),
        cmocka_unit_test(test_cmap_load_reads_and_limits),
        cmocka_unit_test(test_cmap_to_pb_contents),
        cmocka_unit_test(test_cmap_enomem_everywhere),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
