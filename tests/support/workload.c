/*
 * workload.c -- see workload.h.
 */
#include "tests/support/workload.h"

#include "tests/support/testutil.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void
wl_key(int k, char *buf, size_t cap)
{
    if (k < 0)
        snprintf(buf, cap, "?");
    else
        snprintf(buf, cap, "key-%03d", k);
}

void
wl_store_opts(store_opts *o, fs *f, uint32_t n_shards, uint64_t segment_bytes,
              size_t max_value_bytes)
{
    store_opts_default(o);
    o->data_dir = "/data";
    o->fs = f;
    o->n_shards = n_shards;
    o->fsync = WAL_FSYNC_ALWAYS;
    o->segment_bytes = segment_bytes;
    o->max_value_bytes = max_value_bytes;
    o->background = false;
}

uint32_t
wl_shard(const wl *w, int k)
{
    return (uint32_t) k % w->n_shards;
}

/* Deterministic value bytes of slot of op i. */
static void
wl_value(const wl *w, size_t i, int slot, uint8_t *buf, uint32_t len)
{
    uint64_t st = w->seed ^ ((uint64_t) i << 8) ^ (uint64_t) slot;
    for (uint32_t b = 0; b < len; b += 8) {
        uint64_t r = tu_rand(&st);
        uint32_t n = len - b < 8 ? len - b : 8;
        memcpy(buf + b, &r, n);
    }
}

static void
gen_op(wl *w, wl_op *op, uint64_t *rs, uint32_t max_vlen)
{
    uint64_t r = tu_rand(rs) % 100;
    memset(op, 0, sizeof(*op));
    if (r < 60) {
        op->kind = WL_PUT;
        op->n = 1;
    } else if (r < 75) {
        op->kind = WL_DEL;
        op->n = 1;
    } else if (r < 90) {
        op->kind = WL_BATCH;
        op->n = 2 + (int) (tu_rand(rs) % (WL_MAX_BATCH - 1));
    } else {
        op->kind = WL_INCR;
        op->n = 1;
        op->key[0] = w->n_keys;
        op->delta = (int64_t) (tu_rand(rs) % 1000) - 300;
        return;
    }
    /* Batch keys must be distinct and share a shard. */
    uint32_t shard = (uint32_t) (tu_rand(rs) % w->n_shards);
    int per_shard = (w->n_keys + (int) w->n_shards - 1) / (int) w->n_shards;
    for (int s = 0; s < op->n; s++) {
        int k;
        bool dup;
        do {
            k = (int) shard +
                (int) w->n_shards * (int) (tu_rand(rs) % (uint64_t) per_shard);
            dup = k >= w->n_keys;
            for (int t = 0; t < s && !dup; t++)
                dup = op->key[t] == k;
        } while (dup);
        op->key[s] = k;
        op->del[s] = op->kind == WL_DEL ||
                     (op->kind == WL_BATCH && tu_rand(rs) % 4 == 0);
        op->vlen[s] =
            op->del[s] ? 0 : (uint32_t) (tu_rand(rs) % (max_vlen + 1));
    }
}

int
wl_gen(wl *w, uint64_t seed, size_t n_ops, int n_keys, uint32_t n_shards,
       uint32_t max_vlen, size_t snap_every)
{
    memset(w, 0, sizeof(*w));
    w->seed = seed;
    w->n_keys = n_keys;
    w->n_shards = n_shards;
    w->n_ops = n_ops;
    w->ops = calloc(n_ops, sizeof(*w->ops));
    if (w->ops == NULL || n_keys < (int) n_shards * WL_MAX_BATCH)
        return -1;
    uint64_t rs = seed;
    for (size_t i = 0; i < n_ops; i++) {
        if (snap_every != 0 && i % snap_every == snap_every - 1)
            w->ops[i].kind = WL_SNAP;
        else
            gen_op(w, &w->ops[i], &rs, max_vlen);
    }
    return 0;
}

void
wl_free(wl *w)
{
    free(w->ops);
    w->ops = NULL;
}

static shoal_err
run_batch(store *s, const wl *w, size_t i)
{
    const wl_op *op = &w->ops[i];
    store_op ops[WL_MAX_BATCH];
    char keys[WL_MAX_BATCH][16];
    uint8_t vals[WL_MAX_BATCH][4096];
    memset(ops, 0, sizeof(ops));
    for (int k = 0; k < op->n; k++) {
        wl_key(op->key[k], keys[k], sizeof(keys[k]));
        ops[k].kind = op->del[k] ? STORE_OP_DEL : STORE_OP_PUT;
        ops[k].key = (const uint8_t *) keys[k];
        ops[k].klen = strlen(keys[k]);
        if (!op->del[k]) {
            wl_value(w, i, k, vals[k], op->vlen[k]);
            ops[k].val = vals[k];
            ops[k].vlen = op->vlen[k];
        }
    }
    return store_batch(s, wl_shard(w, op->key[0]), ops, (size_t) op->n, NULL,
                       NULL);
}

shoal_err
wl_run(store *s, const wl *w, size_t i)
{
    const wl_op *op = &w->ops[i];
    char key[16];
    uint8_t val[4096];
    shoal_err rc;
    wl_key(op->key[0], key, sizeof(key));
    uint32_t sh = wl_shard(w, op->key[0]);
    switch (op->kind) {
    case WL_PUT:
        wl_value(w, i, 0, val, op->vlen[0]);
        return store_put(s, sh, (const uint8_t *) key, strlen(key), val,
                         op->vlen[0], NULL, NULL);
    case WL_DEL:
        rc = store_del(s, sh, (const uint8_t *) key, strlen(key), NULL);
        return rc == SHOAL_ENOTFOUND ? SHOAL_OK : rc;
    case WL_BATCH:
        return run_batch(s, w, i);
    case WL_INCR:
        return store_incr(s, sh, (const uint8_t *) key, strlen(key), op->delta,
                          NULL, NULL, NULL);
    case WL_SNAP:
        return store_snapshot_all(s);
    default:
        return SHOAL_EINVAL;
    }
}

/* ---- the model ------------------------------------------------------------
 */

typedef struct mval {
    bool present;
    uint32_t len;
    uint8_t *bytes;
} mval;

static void
model_set(mval *m, const uint8_t *v, uint32_t len)
{
    free(m->bytes);
    m->bytes = malloc(len ? len : 1);
    memcpy(m->bytes, v, len);
    m->len = len;
    m->present = true;
}

static void
model_apply(const wl *w, mval *m, size_t i)
{
    const wl_op *op = &w->ops[i];
    uint8_t val[4096];
    if (op->kind == WL_SNAP)
        return;
    if (op->kind == WL_INCR) {
        mval *c = &m[w->n_keys];
        int64_t cur = 0;
        if (c->present) {
            char tmp[32];
            memcpy(tmp, c->bytes, c->len);
            tmp[c->len] = '\0';
            cur = strtoll(tmp, NULL, 10);
        }
        int n =
            snprintf((char *) val, sizeof(val), "%" PRId64, cur + op->delta);
        model_set(c, val, (uint32_t) n);
        return;
    }
    for (int k = 0; k < op->n; k++) {
        mval *t = &m[op->key[k]];
        if (op->del[k]) {
            t->present = false;
            continue;
        }
        wl_value(w, i, k, val, op->vlen[k]);
        model_set(t, val, op->vlen[k]);
    }
}

typedef struct cmp_ctx {
    const mval *want;
    bool same;
} cmp_ctx;

static shoal_err
cmp_cb(void *arg, const store_item *it)
{
    cmp_ctx *c = arg;
    c->same = c->want->present && it->vlen == c->want->len &&
              (it->vlen == 0 || memcmp(it->val, c->want->bytes, it->vlen) == 0);
    return SHOAL_OK;
}

/* Index of the first key that differs from the model, or -1. */
static int
first_diff(store *s, const wl *w, const mval *m)
{
    char key[16];
    for (int k = 0; k <= w->n_keys; k++) {
        wl_key(k, key, sizeof(key));
        cmp_ctx c = {.want = &m[k], .same = false};
        shoal_err rc = store_get(s, wl_shard(w, k), (const uint8_t *) key,
                                 strlen(key), cmp_cb, &c);
        if (rc == SHOAL_ENOTFOUND)
            c.same = !m[k].present;
        else if (rc != SHOAL_OK)
            c.same = false;
        if (!c.same)
            return k;
    }
    /* Nothing outside the universe either (no garbage keys). */
    uint64_t total = 0, want = 0;
    for (uint32_t sh = 0; sh < w->n_shards; sh++) {
        uint64_t n = 0;
        if (store_count(s, sh, NULL, 0, &n) != SHOAL_OK)
            return w->n_keys + 1;
        total += n;
    }
    for (int k = 0; k <= w->n_keys; k++)
        want += m[k].present;
    return total == want ? -1 : w->n_keys + 1;
}

static void
model_free(mval *m, int n)
{
    for (int k = 0; k < n; k++)
        free(m[k].bytes);
    free(m);
}

bool
wl_check(store *s, const wl *w, size_t lo, size_t hi, size_t *j_out,
         bool verbose)
{
    mval *m = calloc((size_t) w->n_keys + 1, sizeof(*m));
    if (hi > w->n_ops)
        hi = w->n_ops;
    for (size_t i = 0; i < lo; i++)
        model_apply(w, m, i);
    bool ok = false;
    for (size_t j = lo; j <= hi && !ok; j++) {
        if (j > lo)
            model_apply(w, m, j - 1);
        int d = first_diff(s, w, m);
        if (d < 0) {
            ok = true;
            if (j_out != NULL)
                *j_out = j;
        } else if (verbose) {
            fprintf(stderr, "# model after %zu ops differs at key %d\n", j, d);
        }
    }
    model_free(m, w->n_keys + 1);
    return ok;
}
