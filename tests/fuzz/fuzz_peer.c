/*
 * fuzz_peer.c -- libFuzzer target for what a follower does with a peer
 * message's body (TESTING.md G7, "replication batch"): the PeerMsg
 * protobuf decoder, then every record through store_apply (the WAL ops
 * payload decoder) and every snapshot chunk through store_import_* (the
 * snapshot stream decoder), on a memory-only engine of 4 shards.
 *
 * Records are applied at the shard's next LSN whatever LSN they claim
 * (else nearly all would be refused as gaps and the payload decoder never
 * reached), with the epoch they claim. Promises checked: nothing crashes;
 * a refused record or import changes nothing (the shard's digest and LSN
 * are the same as before); an applied record raises the LSN by one.
 * Seeds: tests/fuzz/corpus/peer.
 */
#include "proto/mem.h"
#include "proto/pbuf.h"
#include "proto/peer.pb-c.h"
#include "storage/store.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define N_SHARDS 4

#define CHECK(e)                                                               \
    do {                                                                       \
        if (!(e)) {                                                            \
            fprintf(stderr, "fuzz_peer: %s:%d: %s\n", __FILE__, __LINE__, #e); \
            abort();                                                           \
        }                                                                      \
    } while (0)

static void
shard_state(store *st, uint32_t s, uint64_t *digest, uint64_t *lsn)
{
    store_shard_stats ss;
    CHECK(store_get_shard_stats(st, s, &ss) == SHOAL_OK);
    CHECK(store_digest(st, s, digest) == SHOAL_OK);
    *lsn = ss.lsn;
}

static void
apply_records(store *st, const Shoal__Peer__PeerMsg *m)
{
    for (size_t i = 0; i < m->n_records; i++) {
        const Shoal__Peer__Record *r = m->records[i];
        uint32_t s = r->shard % N_SHARDS;
        uint64_t d0, l0, d1, l1;
        shard_state(st, s, &d0, &l0);
        bool applied = false;
        shoal_err rc =
            store_apply(st, s, r->shard_epoch, l0 + 1, r->payload.data,
                        r->payload.len, false, &applied);
        shard_state(st, s, &d1, &l1);
        if (rc == SHOAL_OK && applied) {
            CHECK(l1 == l0 + 1);
        } else {
            CHECK(d1 == d0 && l1 == l0);
        }
    }
}

static void
import_snap(store *st, const Shoal__Peer__SnapChunk *c)
{
    uint32_t s = c->shard % N_SHARDS;
    uint64_t d0, l0, d1, l1;
    shard_state(st, s, &d0, &l0);
    store_import *im = NULL;
    if (store_import_begin(st, s, 1u << 20, &im) != SHOAL_OK)
        return;
    shoal_err rc = store_import_write(im, c->data.data, c->data.len);
    uint64_t lsn = 0;
    if (rc == SHOAL_OK) {
        rc = store_import_finish(im, &lsn);
    } else {
        store_import_abort(im);
    }
    shard_state(st, s, &d1, &l1);
    if (rc != SHOAL_OK)
        CHECK(d1 == d0 && l1 == l0);
    else
        CHECK(l1 == lsn);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static store *st;
    if (st == NULL) {
        store_opts o;
        store_opts_default(&o);
        o.n_shards = N_SHARDS;
        o.background = false;
        o.max_value_bytes = 1u << 16;
        CHECK(store_open(&o, &st) == SHOAL_OK);
    }
    pbuf_arena a;
    pbuf_arena_init(&a, 4096);
    Shoal__Peer__PeerMsg *m =
        shoal__peer__peer_msg__unpack(&a.alloc, size, data);
    if (m != NULL) {
        apply_records(st, m);
        if (m->snap != NULL)
            import_snap(st, m->snap);
    }
    pbuf_arena_fini(&a);
    return 0;
}
