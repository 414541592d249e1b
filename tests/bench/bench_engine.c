/*
 * bench_engine.c -- the storage engine (storage/store.h) against LMDB and
 * RocksDB on one workload; figures go in BENCHMARKS.md. On demand only,
 * never part of the test suite; tests/bench/engine_bench.sh runs it (and
 * Redis) and tabulates medians.
 *
 * Workload, identical for every engine:
 *   keys   N distinct keys of key_size bytes: word 0 is mix64(i + seed * G),
 *          a bijection of i, so keys never collide; word j > 0 is
 *          mix64(word0 + j * G). Generated up front, outside timed regions.
 *          engine_bench.sh computes the same bytes for Redis.
 *   values value_size bytes at a pseudo-random offset (of key index and
 *          version) into a 4 MiB pool of random bytes: random-looking and
 *          incompressible for zlib's 32 KiB window, and the pool costs no
 *          per-key memory, so the memory figure counts the engine only.
 *   shoal  the shard of a key is keyhash_shard() under a seeded hash key,
 *          computed inside the timed loop, as a node does per request.
 *
 * Output on stdout, one figure per line: "name value unit". Parameters and
 * notes go to stderr as "# ..." lines.
 *
 * Phases (--only):
 *   memory    shoal memory-only: RSS delta of loading N keys, per key. Runs
 *             first so the heap is clean; the key array and value pool are
 *             resident before the baseline is read.
 *   put       T threads put disjoint slices of the keys (all new); ops/s.
 *   get       T threads get N random existing keys, checking every value.
 *   scan      one thread, full ordered scan. Shoal scans shard by shard:
 *             ordered within a shard, not globally.
 *   recovery  checkpoint (shoal: store_snapshot_all; RocksDB: flush the
 *             memtable; LMDB: env sync), then W overwrites, close, and time
 *             open + one get.
 *   snapstall shoal only: one writer puts continuously (fsync none) while
 *             store_snapshot_now runs (background thread); longest and
 *             p99.9 put latency.
 */
#include "proto/clock.h"
#include "proto/err.h"
#include "proto/keyhash.h"
#include "storage/store.h"
#include "storage/wal.h"

#ifdef SHOAL_HAVE_LMDB
#include <lmdb.h>
#endif
#ifdef SHOAL_HAVE_ROCKSDB
#include <rocksdb/c.h>
#endif

#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define GOLDEN      0x9e3779b97f4a7c15ull
#define POOL_BYTES  (4u << 20)
#define MAX_THREADS 1024u
#define HIST_SUB    16u
#define HIST_N      (64u * HIST_SUB)

enum {
    PH_PUT = 1,
    PH_GET = 2,
    PH_SCAN = 4,
    PH_RECOVERY = 8,
    PH_SNAPSTALL = 16,
    PH_MEMORY = 32,
    PH_MAIN = PH_PUT | PH_GET | PH_SCAN | PH_RECOVERY,
};

typedef struct cfg {
    uint64_t keys;
    size_t key_size;
    size_t value_size;
    unsigned threads;
    wal_fsync fsync;
    const char *engine;
    const char *dir; /* parent of our mkdtemp work dir */
    uint32_t shards; /* shoal */
    uint64_t seed;
    unsigned phases;       /* PH_* */
    uint64_t overwrites;   /* recovery: writes after the checkpoint */
    uint64_t max_seconds;  /* put: stop after this long; 0 = load all */
    uint64_t snap_warm_ms; /* snapstall: writer runs alone before/after */
    bool lmdb_writemap;
    bool keep; /* keep the work dir */
} cfg;

typedef struct bench bench;

/* One engine behind the workload. db and reader handles are opaque. */
typedef struct engine_ops {
    const char *name;
    shoal_err (*open)(const bench *b, const char *dir, void **out);
    void (*close)(void *db);
    shoal_err (*put)(void *db, const uint8_t *k, size_t klen, const uint8_t *v,
                     size_t vlen);
    /* Per-thread read context (LMDB: a reset/renewed read txn). */
    shoal_err (*reader_open)(void *db, void **out);
    void (*reader_close)(void *rd);
    shoal_err (*get)(void *db, void *rd, const uint8_t *k, size_t klen,
                     uint8_t *buf, size_t cap, size_t *vlen_out);
    shoal_err (*scan)(void *db, uint64_t *n_out);
    shoal_err (*sync)(void *db);       /* fsync=interval tick */
    shoal_err (*checkpoint)(void *db); /* before the recovery overwrites */
    shoal_err (*count)(void *db, uint64_t *n_out); /* NULL: unknown */
} engine_ops;

struct bench {
    cfg c;
    const engine_ops *ops;
    uint8_t *keys; /* c.keys x c.key_size */
    uint8_t *pool; /* POOL_BYTES + value_size random bytes */
    uint8_t hash_key[KEYHASH_KEY_BYTES];
    char *work; /* our mkdtemp directory */
};

/* ---- workload ------------------------------------------------------------ */

static uint64_t
mix64(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static uint64_t
rng_next(uint64_t *state)
{
    *state += GOLDEN;
    return mix64(*state);
}

static void
put_le64(uint8_t *p, uint64_t v, size_t n)
{
    for (size_t i = 0; i < n && i < 8; i++)
        p[i] = (uint8_t) (v >> (8 * i));
}

static void
key_make(const cfg *c, uint64_t i, uint8_t *out)
{
    uint64_t w0 = mix64(i + c->seed * GOLDEN);
    for (size_t off = 0, j = 0; off < c->key_size; off += 8, j++) {
        uint64_t w = j == 0 ? w0 : mix64(w0 + j * GOLDEN);
        put_le64(out + off, w, c->key_size - off);
    }
}

static const uint8_t *
key_of(const bench *b, uint64_t i)
{
    return b->keys + i * b->c.key_size;
}

static const uint8_t *
value_of(const bench *b, uint64_t i, uint64_t version)
{
    uint64_t h =
        mix64((i << 8) ^ version ^ (b->c.seed * 0x2545f4914f6cdd1dull));
    return b->pool + h % POOL_BYTES;
}

static shoal_err
workload_make(bench *b)
{
    const cfg *c = &b->c;
    b->keys = malloc(c->keys * c->key_size);
    b->pool = malloc(POOL_BYTES + c->value_size);
    if (b->keys == NULL || b->pool == NULL) {
        fprintf(stderr, "bench_engine: out of memory for the workload\n");
        return SHOAL_ENOMEM;
    }
    for (uint64_t i = 0; i < c->keys; i++)
        key_make(c, i, b->keys + i * c->key_size);
    uint64_t st = mix64(c->seed ^ 0x5851f42d4c957f2dull);
    for (size_t off = 0; off < POOL_BYTES + c->value_size; off += 8)
        put_le64(b->pool + off, rng_next(&st),
                 POOL_BYTES + c->value_size - off);
    put_le64(b->hash_key, mix64(c->seed + 1), 8);
    put_le64(b->hash_key + 8, mix64(c->seed + 2), 8);
    return SHOAL_OK;
}

/* ---- small helpers ------------------------------------------------------- */

static double
secs_since(uint64_t t0_ns)
{
    return (double) (clock_mono_ns() - t0_ns) / 1e9;
}

static void
figure(const char *name, double value, const char *unit, int decimals)
{
    printf("%s %.*f %s\n", name, decimals, value, unit);
    fflush(stdout);
}

static void
sleep_ms(uint64_t ms)
{
    struct timespec ts = {.tv_sec = (time_t) (ms / 1000),
                          .tv_nsec = (long) (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

/* Resident set size from /proc/self/statm (pages -> bytes); 0 on error. */
static uint64_t
rss_bytes(void)
{
    unsigned long size = 0, resident = 0;
    FILE *f = fopen("/proc/self/statm", "r");
    if (f == NULL)
        return 0;
    if (fscanf(f, "%lu %lu", &size, &resident) != 2)
        resident = 0;
    fclose(f);
    return (uint64_t) resident * (uint64_t) sysconf(_SC_PAGESIZE);
}

static char *
path_join(const char *a, const char *b)
{
    size_t n = strlen(a) + strlen(b) + 2;
    char *p = malloc(n);
    if (p != NULL)
        snprintf(p, n, "%s/%s", a, b);
    return p;
}

/* Remove path and everything under it (our own work dir only). */
static void
rm_tree(const char *path)
{
    struct stat st;
    if (lstat(path, &st) != 0)
        return;
    if (!S_ISDIR(st.st_mode)) {
        unlink(path);
        return;
    }
    DIR *d = opendir(path);
    struct dirent *de;
    while (d != NULL && (de = readdir(d)) != NULL) {
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
            continue;
        char *sub = path_join(path, de->d_name);
        if (sub != NULL)
            rm_tree(sub);
        free(sub);
    }
    if (d != NULL)
        closedir(d);
    rmdir(path);
}

/* A fresh directory name under the work dir (not created: engines do). */
static char *
work_sub(const bench *b, const char *name)
{
    char *p = path_join(b->work, name);
    if (p == NULL)
        fprintf(stderr, "bench_engine: out of memory\n");
    return p;
}

static shoal_err
mkdir_p1(const char *dir)
{
    if (mkdir(dir, 0755) != 0 && errno != EEXIST) {
        fprintf(stderr, "bench_engine: mkdir %s: %s\n", dir, strerror(errno));
        return SHOAL_EIO;
    }
    return SHOAL_OK;
}

/* ---- latency histogram (log-linear, <= 6% bucket width) ------------------ */

typedef struct hist {
    uint64_t n;
    uint64_t max_ns;
    uint64_t b[HIST_N];
} hist;

static unsigned
hist_idx(uint64_t ns)
{
    if (ns < HIST_SUB)
        return (unsigned) ns;
    unsigned e = 63u - (unsigned) __builtin_clzll(ns);
    return (e - 3u) * HIST_SUB + (unsigned) ((ns >> (e - 4u)) & (HIST_SUB - 1));
}

/* Upper bound of bucket i (a percentile is reported conservatively). */
static uint64_t
hist_upper(unsigned i)
{
    if (i < HIST_SUB)
        return i;
    unsigned e = i / HIST_SUB + 3u, sub = i % HIST_SUB;
    return ((HIST_SUB + sub + 1ull) << (e - 4u)) - 1u;
}

static void
hist_add(hist *h, uint64_t ns)
{
    h->b[hist_idx(ns)]++;
    h->n++;
    if (ns > h->max_ns)
        h->max_ns = ns;
}

static uint64_t
hist_pct(const hist *h, double pct)
{
    uint64_t want = (uint64_t) ((double) h->n * pct / 100.0), seen = 0;
    for (unsigned i = 0; i < HIST_N; i++) {
        seen += h->b[i];
        if (seen > want)
            return hist_upper(i) < h->max_ns ? hist_upper(i) : h->max_ns;
    }
    return h->max_ns;
}

/* ---- engine: shoal ------------------------------------------------------- */

typedef struct shoal_db {
    store *st;
    uint32_t n_shards;
    uint8_t hash_key[KEYHASH_KEY_BYTES];
} shoal_db;

static shoal_err
shoal_open(const bench *b, const char *dir, void **out)
{
    shoal_db *d = calloc(1, sizeof(*d));
    if (d == NULL)
        return SHOAL_ENOMEM;
    store_opts o;
    store_opts_default(&o);
    o.data_dir = dir; /* NULL: memory-only */
    o.n_shards = b->c.shards;
    o.fsync = b->c.fsync;
    d->n_shards = b->c.shards;
    memcpy(d->hash_key, b->hash_key, sizeof(d->hash_key));
    shoal_err rc = store_open(&o, &d->st);
    if (rc != SHOAL_OK) {
        fprintf(stderr, "bench_engine: store_open %s: %s\n",
                dir ? dir : "(memory)", shoal_strerror(rc));
        free(d);
        return rc;
    }
    *out = d;
    return SHOAL_OK;
}

static void
shoal_close(void *db)
{
    shoal_db *d = db;
    if (d == NULL)
        return;
    store_close(d->st);
    free(d);
}

static uint32_t
shoal_shard(const shoal_db *d, const uint8_t *k, size_t klen)
{
    return keyhash_shard(d->hash_key, k, klen, d->n_shards);
}

static shoal_err
shoal_put(void *db, const uint8_t *k, size_t klen, const uint8_t *v,
          size_t vlen)
{
    shoal_db *d = db;
    return store_put(d->st, shoal_shard(d, k, klen), k, klen, v, vlen, NULL,
                     NULL);
}

typedef struct copy_ctx {
    uint8_t *buf;
    size_t cap;
    size_t len;
} copy_ctx;

static shoal_err
copy_cb(void *arg, const store_item *it)
{
    copy_ctx *c = arg;
    c->len = it->vlen;
    memcpy(c->buf, it->val, it->vlen < c->cap ? it->vlen : c->cap);
    return SHOAL_OK;
}

static shoal_err
shoal_reader_open(void *db, void **out)
{
    (void) db;
    *out = NULL;
    return SHOAL_OK;
}

static void
shoal_reader_close(void *rd)
{
    (void) rd;
}

static shoal_err
shoal_get(void *db, void *rd, const uint8_t *k, size_t klen, uint8_t *buf,
          size_t cap, size_t *vlen_out)
{
    shoal_db *d = db;
    copy_ctx c = {buf, cap, 0};
    (void) rd;
    shoal_err rc =
        store_get(d->st, shoal_shard(d, k, klen), k, klen, copy_cb, &c);
    *vlen_out = c.len;
    return rc;
}

typedef struct scan_ctx {
    uint64_t n;
    uint64_t sum; /* touch the bytes, as a reader would */
} scan_ctx;

static shoal_err
scan_cb(void *arg, const store_item *it)
{
    scan_ctx *c = arg;
    c->n++;
    c->sum += it->key[0] + (it->vlen ? it->val[it->vlen - 1] : 0u);
    return SHOAL_OK;
}

static shoal_err
shoal_scan(void *db, uint64_t *n_out)
{
    shoal_db *d = db;
    scan_ctx c = {0, 0};
    store_range all;
    memset(&all, 0, sizeof(all));
    for (uint32_t sh = 0; sh < d->n_shards; sh++) {
        shoal_err rc = store_scan(d->st, sh, &all, 0, scan_cb, &c, NULL);
        if (rc != SHOAL_OK)
            return rc;
    }
    *n_out = c.n + (c.sum == UINT64_MAX); /* keep sum alive */
    return SHOAL_OK;
}

static shoal_err
shoal_sync(void *db)
{
    (void) db; /* the WAL writer runs the interval itself */
    return SHOAL_OK;
}

static shoal_err
shoal_checkpoint(void *db)
{
    shoal_db *d = db;
    return store_snapshot_all(d->st);
}

static shoal_err
shoal_count(void *db, uint64_t *n_out)
{
    shoal_db *d = db;
    store_stats st;
    store_get_stats(d->st, &st);
    *n_out = st.keys;
    return SHOAL_OK;
}

static const engine_ops SHOAL_OPS = {
    .name = "shoal",
    .open = shoal_open,
    .close = shoal_close,
    .put = shoal_put,
    .reader_open = shoal_reader_open,
    .reader_close = shoal_reader_close,
    .get = shoal_get,
    .scan = shoal_scan,
    .sync = shoal_sync,
    .checkpoint = shoal_checkpoint,
    .count = shoal_count,
};

/* ---- engine: LMDB -------------------------------------------------------- */

#ifdef SHOAL_HAVE_LMDB
typedef struct lmdb_db {
    MDB_env *env;
    MDB_dbi dbi;
} lmdb_db;

static shoal_err
lmdb_fail(const char *op, int rc)
{
    fprintf(stderr, "bench_engine: lmdb %s: %s\n", op, mdb_strerror(rc));
    return rc == ENOMEM ? SHOAL_ENOMEM : SHOAL_EIO;
}

/* none/interval: MDB_NOSYNC (interval adds a sync thread); always: default
 * synchronous commits. --lmdb-writemap adds MDB_WRITEMAP. */
static unsigned
lmdb_flags(const cfg *c)
{
    unsigned f = MDB_NORDAHEAD;
    if (c->fsync != WAL_FSYNC_ALWAYS)
        f |= MDB_NOSYNC;
    if (c->lmdb_writemap)
        f |= MDB_WRITEMAP;
    return f;
}

static shoal_err
lmdb_env_up(lmdb_db *d, const cfg *c, const char *dir)
{
    int rc;
    /* Sparse map: room for 4x the raw data plus 1 GiB. */
    size_t map = (size_t) c->keys * (c->key_size + c->value_size + 64) * 4 +
                 ((size_t) 1 << 30);
    if ((rc = mdb_env_create(&d->env)) != 0)
        return lmdb_fail("env_create", rc);
    if ((rc = mdb_env_set_mapsize(d->env, map)) != 0)
        return lmdb_fail("set_mapsize", rc);
    if ((rc = mdb_env_set_maxreaders(d->env, c->threads + 16)) != 0)
        return lmdb_fail("set_maxreaders", rc);
    if (mkdir_p1(dir) != SHOAL_OK)
        return SHOAL_EIO;
    if ((rc = mdb_env_open(d->env, dir, lmdb_flags(c), 0644)) != 0)
        return lmdb_fail("env_open", rc);
    MDB_txn *txn = NULL;
    if ((rc = mdb_txn_begin(d->env, NULL, 0, &txn)) != 0)
        return lmdb_fail("txn_begin", rc);
    if ((rc = mdb_dbi_open(txn, NULL, 0, &d->dbi)) != 0) {
        mdb_txn_abort(txn);
        return lmdb_fail("dbi_open", rc);
    }
    if ((rc = mdb_txn_commit(txn)) != 0)
        return lmdb_fail("txn_commit", rc);
    return SHOAL_OK;
}

static void
lmdb_close(void *db)
{
    lmdb_db *d = db;
    if (d == NULL)
        return;
    if (d->env != NULL)
        mdb_env_close(d->env);
    free(d);
}

static shoal_err
lmdb_open(const bench *b, const char *dir, void **out)
{
    if (dir == NULL) {
        fprintf(stderr, "bench_engine: lmdb has no memory-only mode\n");
        return SHOAL_EINVAL;
    }
    lmdb_db *d = calloc(1, sizeof(*d));
    if (d == NULL)
        return SHOAL_ENOMEM;
    shoal_err rc = lmdb_env_up(d, &b->c, dir);
    if (rc != SHOAL_OK) {
        lmdb_close(d);
        return rc;
    }
    *out = d;
    return SHOAL_OK;
}

/* One put per write transaction: what a key-value store put is. */
static shoal_err
lmdb_put(void *db, const uint8_t *k, size_t klen, const uint8_t *v, size_t vlen)
{
    lmdb_db *d = db;
    MDB_txn *txn = NULL;
    MDB_val key = {klen, (void *) k}, val = {vlen, (void *) v};
    int rc = mdb_txn_begin(d->env, NULL, 0, &txn);
    if (rc != 0)
        return lmdb_fail("txn_begin", rc);
    if ((rc = mdb_put(txn, d->dbi, &key, &val, 0)) != 0) {
        mdb_txn_abort(txn);
        return lmdb_fail("put", rc);
    }
    if ((rc = mdb_txn_commit(txn)) != 0)
        return lmdb_fail("txn_commit", rc);
    return SHOAL_OK;
}

static shoal_err
lmdb_reader_open(void *db, void **out)
{
    lmdb_db *d = db;
    MDB_txn *txn = NULL;
    int rc = mdb_txn_begin(d->env, NULL, MDB_RDONLY, &txn);
    if (rc != 0)
        return lmdb_fail("txn_begin(rdonly)", rc);
    mdb_txn_reset(txn);
    *out = txn;
    return SHOAL_OK;
}

static void
lmdb_reader_close(void *rd)
{
    if (rd != NULL)
        mdb_txn_abort(rd);
}

/* The fastest correct read pattern: renew the thread's reset read txn. */
static shoal_err
lmdb_get(void *db, void *rd, const uint8_t *k, size_t klen, uint8_t *buf,
         size_t cap, size_t *vlen_out)
{
    lmdb_db *d = db;
    MDB_txn *txn = rd;
    MDB_val key = {klen, (void *) k}, val = {0, NULL};
    int rc = mdb_txn_renew(txn);
    if (rc != 0)
        return lmdb_fail("txn_renew", rc);
    rc = mdb_get(txn, d->dbi, &key, &val);
    if (rc == 0) {
        memcpy(buf, val.mv_data, val.mv_size < cap ? val.mv_size : cap);
        *vlen_out = val.mv_size;
    }
    mdb_txn_reset(txn);
    if (rc == MDB_NOTFOUND)
        return SHOAL_ENOTFOUND;
    return rc == 0 ? SHOAL_OK : lmdb_fail("get", rc);
}

static shoal_err
lmdb_scan(void *db, uint64_t *n_out)
{
    lmdb_db *d = db;
    MDB_txn *txn = NULL;
    MDB_cursor *cur = NULL;
    MDB_val k, v;
    uint64_t n = 0, sum = 0;
    int rc = mdb_txn_begin(d->env, NULL, MDB_RDONLY, &txn);
    if (rc != 0)
        return lmdb_fail("txn_begin(rdonly)", rc);
    if ((rc = mdb_cursor_open(txn, d->dbi, &cur)) != 0) {
        mdb_txn_abort(txn);
        return lmdb_fail("cursor_open", rc);
    }
    for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0;
         rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        n++;
        sum += ((const uint8_t *) k.mv_data)[0] +
               (v.mv_size ? ((const uint8_t *) v.mv_data)[v.mv_size - 1] : 0u);
    }
    mdb_cursor_close(cur);
    mdb_txn_abort(txn);
    *n_out = n + (sum == UINT64_MAX);
    return rc == MDB_NOTFOUND ? SHOAL_OK : lmdb_fail("cursor_get", rc);
}

static shoal_err
lmdb_sync(void *db)
{
    lmdb_db *d = db;
    int rc = mdb_env_sync(d->env, 1);
    return rc == 0 ? SHOAL_OK : lmdb_fail("env_sync", rc);
}

static shoal_err
lmdb_count(void *db, uint64_t *n_out)
{
    lmdb_db *d = db;
    MDB_txn *txn = NULL;
    MDB_stat st;
    int rc = mdb_txn_begin(d->env, NULL, MDB_RDONLY, &txn);
    if (rc != 0)
        return lmdb_fail("txn_begin(rdonly)", rc);
    rc = mdb_stat(txn, d->dbi, &st);
    mdb_txn_abort(txn);
    if (rc != 0)
        return lmdb_fail("stat", rc);
    *n_out = st.ms_entries;
    return SHOAL_OK;
}

static const engine_ops LMDB_OPS = {
    .name = "lmdb",
    .open = lmdb_open,
    .close = lmdb_close,
    .put = lmdb_put,
    .reader_open = lmdb_reader_open,
    .reader_close = lmdb_reader_close,
    .get = lmdb_get,
    .scan = lmdb_scan,
    .sync = lmdb_sync,
    .checkpoint = lmdb_sync,
    .count = lmdb_count,
};
#endif

/* ---- engine: RocksDB ----------------------------------------------------- */

#ifdef SHOAL_HAVE_ROCKSDB
typedef struct rocks_db {
    rocksdb_t *db;
    rocksdb_options_t *o;
    rocksdb_writeoptions_t *wo;
    rocksdb_readoptions_t *ro;
} rocks_db;

/* Report and free a RocksDB error string; SHOAL_OK when there is none. */
static shoal_err
rocks_check(const char *op, char *err)
{
    if (err == NULL)
        return SHOAL_OK;
    fprintf(stderr, "bench_engine: rocksdb %s: %s\n", op, err);
    rocksdb_free(err);
    return SHOAL_EIO;
}

static void
rocks_close(void *db)
{
    rocks_db *d = db;
    if (d == NULL)
        return;
    if (d->db != NULL)
        rocksdb_close(d->db);
    if (d->wo != NULL)
        rocksdb_writeoptions_destroy(d->wo);
    if (d->ro != NULL)
        rocksdb_readoptions_destroy(d->ro);
    if (d->o != NULL)
        rocksdb_options_destroy(d->o);
    free(d);
}

/* Defaults plus create_if_missing and increase_parallelism(cores); the WAL
 * is always on; always: WriteOptions.sync = 1, otherwise sync = 0. */
static shoal_err
rocks_open(const bench *b, const char *dir, void **out)
{
    char *err = NULL;
    if (dir == NULL)
        return SHOAL_EINVAL;
    rocks_db *d = calloc(1, sizeof(*d));
    if (d == NULL)
        return SHOAL_ENOMEM;
    d->o = rocksdb_options_create();
    d->wo = rocksdb_writeoptions_create();
    d->ro = rocksdb_readoptions_create();
    rocksdb_options_set_create_if_missing(d->o, 1);
    rocksdb_options_increase_parallelism(d->o,
                                         (int) sysconf(_SC_NPROCESSORS_ONLN));
    rocksdb_writeoptions_set_sync(d->wo, b->c.fsync == WAL_FSYNC_ALWAYS);
    d->db = rocksdb_open(d->o, dir, &err);
    shoal_err rc = rocks_check("open", err);
    if (rc != SHOAL_OK) {
        rocks_close(d);
        return rc;
    }
    *out = d;
    return SHOAL_OK;
}

static shoal_err
rocks_put(void *db, const uint8_t *k, size_t klen, const uint8_t *v,
          size_t vlen)
{
    rocks_db *d = db;
    char *err = NULL;
    rocksdb_put(d->db, d->wo, (const char *) k, klen, (const char *) v, vlen,
                &err);
    return rocks_check("put", err);
}

static shoal_err
rocks_reader_open(void *db, void **out)
{
    (void) db;
    *out = NULL;
    return SHOAL_OK;
}

static void
rocks_reader_close(void *rd)
{
    (void) rd;
}

/* rocksdb_get_pinned avoids the malloc'd copy of rocksdb_get. */
static shoal_err
rocks_get(void *db, void *rd, const uint8_t *k, size_t klen, uint8_t *buf,
          size_t cap, size_t *vlen_out)
{
    rocks_db *d = db;
    char *err = NULL;
    size_t vlen = 0;
    (void) rd;
    rocksdb_pinnableslice_t *p =
        rocksdb_get_pinned(d->db, d->ro, (const char *) k, klen, &err);
    if (err != NULL)
        return rocks_check("get", err);
    if (p == NULL)
        return SHOAL_ENOTFOUND;
    const char *v = rocksdb_pinnableslice_value(p, &vlen);
    memcpy(buf, v, vlen < cap ? vlen : cap);
    *vlen_out = vlen;
    rocksdb_pinnableslice_destroy(p);
    return SHOAL_OK;
}

static shoal_err
rocks_scan(void *db, uint64_t *n_out)
{
    rocks_db *d = db;
    char *err = NULL;
    uint64_t n = 0, sum = 0;
    rocksdb_iterator_t *it = rocksdb_create_iterator(d->db, d->ro);
    for (rocksdb_iter_seek_to_first(it); rocksdb_iter_valid(it);
         rocksdb_iter_next(it)) {
        size_t kl = 0, vl = 0;
        const char *k = rocksdb_iter_key(it, &kl);
        const char *v = rocksdb_iter_value(it, &vl);
        n++;
        sum += (uint8_t) k[0] + (vl ? (uint8_t) v[vl - 1] : 0u);
    }
    rocksdb_iter_get_error(it, &err);
    rocksdb_iter_destroy(it);
    *n_out = n + (sum == UINT64_MAX);
    return rocks_check("iterate", err);
}

static shoal_err
rocks_sync(void *db)
{
    rocks_db *d = db;
    char *err = NULL;
    rocksdb_flush_wal(d->db, 1, &err);
    return rocks_check("flush_wal", err);
}

/* Flush the memtable, so recovery is "SST files + the WAL after them". */
static shoal_err
rocks_checkpoint(void *db)
{
    rocks_db *d = db;
    char *err = NULL;
    rocksdb_flushoptions_t *fo = rocksdb_flushoptions_create();
    rocksdb_flushoptions_set_wait(fo, 1);
    rocksdb_flush(d->db, fo, &err);
    rocksdb_flushoptions_destroy(fo);
    return rocks_check("flush", err);
}

static const engine_ops ROCKS_OPS = {
    .name = "rocksdb",
    .open = rocks_open,
    .close = rocks_close,
    .put = rocks_put,
    .reader_open = rocks_reader_open,
    .reader_close = rocks_reader_close,
    .get = rocks_get,
    .scan = rocks_scan,
    .sync = rocks_sync,
    .checkpoint = rocks_checkpoint,
    .count = NULL, /* only an estimate exists; the loaded count is used */
};
#endif

static const engine_ops *const ENGINES[] = {
    &SHOAL_OPS,
#ifdef SHOAL_HAVE_LMDB
    &LMDB_OPS,
#endif
#ifdef SHOAL_HAVE_ROCKSDB
    &ROCKS_OPS,
#endif
};

/* ---- interval syncer (peers; shoal's WAL writer does its own) ------------ */

typedef struct syncer {
    const engine_ops *ops;
    void *db;
    uint32_t interval_ms;
    atomic_bool stop;
    pthread_t tid;
    bool running;
} syncer;

static void *
syncer_main(void *arg)
{
    syncer *s = arg;
    while (!atomic_load(&s->stop)) {
        sleep_ms(s->interval_ms);
        (void) s->ops->sync(s->db);
    }
    return NULL;
}

static void
syncer_start(syncer *s, const bench *b, void *db)
{
    memset(s, 0, sizeof(*s));
    if (b->c.fsync != WAL_FSYNC_INTERVAL || b->ops == &SHOAL_OPS)
        return;
    s->ops = b->ops;
    s->db = db;
    s->interval_ms = 100;
    atomic_init(&s->stop, false);
    s->running = pthread_create(&s->tid, NULL, syncer_main, s) == 0;
}

static void
syncer_stop(syncer *s)
{
    if (!s->running)
        return;
    atomic_store(&s->stop, true);
    pthread_join(s->tid, NULL);
    s->running = false;
}

/* ---- workers ------------------------------------------------------------- */

typedef enum work_kind {
    WORK_PUT,
    WORK_GET,
} work_kind;

typedef struct worker {
    const bench *b;
    void *db;
    work_kind kind;
    uint64_t lo, hi;      /* put: op numbers [lo, hi); get: hi - lo gets */
    uint64_t version;     /* put: op j writes key j % N at version + j / N */
    uint64_t deadline_ns; /* put: stop when passed (0: never) */
    uint64_t rng;         /* get: key choice */
    uint64_t done;        /* ops completed */
    shoal_err rc;
    pthread_barrier_t *start;
    pthread_t tid;
} worker;

static void
work_put(worker *w)
{
    const bench *b = w->b;
    uint64_t n = b->c.keys;
    for (uint64_t j = w->lo; j < w->hi; j++) {
        uint64_t i = j % n;
        w->rc =
            b->ops->put(w->db, key_of(b, i), b->c.key_size,
                        value_of(b, i, w->version + j / n), b->c.value_size);
        if (w->rc != SHOAL_OK)
            return;
        w->done++;
        if (w->deadline_ns != 0 && clock_mono_ns() > w->deadline_ns)
            return;
    }
}

static shoal_err
check_value(const bench *b, uint64_t i, const uint8_t *got, size_t len)
{
    if (len == b->c.value_size &&
        memcmp(got, value_of(b, i, 0), b->c.value_size) == 0)
        return SHOAL_OK;
    fprintf(stderr, "bench_engine: %s: wrong value for key #%" PRIu64 "\n",
            b->ops->name, i);
    return SHOAL_ECORRUPT;
}

static void
work_get(worker *w)
{
    const bench *b = w->b;
    void *rd = NULL;
    uint8_t *buf = malloc(b->c.value_size + 1);
    if (buf == NULL || (w->rc = b->ops->reader_open(w->db, &rd)) != SHOAL_OK) {
        w->rc = buf == NULL ? SHOAL_ENOMEM : w->rc;
        free(buf);
        return;
    }
    for (uint64_t j = w->lo; j < w->hi; j++) {
        uint64_t i = rng_next(&w->rng) % b->c.keys;
        size_t len = 0;
        w->rc = b->ops->get(w->db, rd, key_of(b, i), b->c.key_size, buf,
                            b->c.value_size + 1, &len);
        if (w->rc == SHOAL_OK)
            w->rc = check_value(b, i, buf, len);
        if (w->rc != SHOAL_OK)
            break;
        w->done++;
    }
    b->ops->reader_close(rd);
    free(buf);
}

static void *
worker_main(void *arg)
{
    worker *w = arg;
    pthread_barrier_wait(w->start);
    if (w->kind == WORK_PUT)
        work_put(w);
    else
        work_get(w);
    return NULL;
}

typedef struct run_result {
    uint64_t done;
    double secs;
} run_result;

static void
workers_init(worker *ws, unsigned t, const bench *b, void *db, work_kind kind,
             uint64_t n_ops, pthread_barrier_t *bar)
{
    for (unsigned i = 0; i < t; i++) {
        worker *w = &ws[i];
        memset(w, 0, sizeof(*w));
        w->b = b;
        w->db = db;
        w->kind = kind;
        w->lo = n_ops * i / t;
        w->hi = n_ops * (i + 1) / t;
        w->rng = mix64(b->c.seed ^ (0x1234567ull + i));
        w->start = bar;
    }
}

/* Run T workers over n_ops operations; wall time from the common start to
 * the last thread's end. */
static shoal_err
run_workers(const bench *b, void *db, work_kind kind, uint64_t n_ops,
            uint64_t version, uint64_t max_s, run_result *res)
{
    unsigned t = b->c.threads;
    worker ws[MAX_THREADS];
    pthread_barrier_t bar;
    pthread_barrier_init(&bar, NULL, t + 1);
    workers_init(ws, t, b, db, kind, n_ops, &bar);
    uint64_t t0 = clock_mono_ns();
    for (unsigned i = 0; i < t; i++) {
        ws[i].version = version;
        ws[i].deadline_ns = max_s ? t0 + max_s * 1000000000ull : 0;
        if (pthread_create(&ws[i].tid, NULL, worker_main, &ws[i]) != 0) {
            /* The barrier counts on every thread: no way to go on. */
            fprintf(stderr, "bench_engine: pthread_create failed\n");
            exit(1);
        }
    }
    pthread_barrier_wait(&bar);
    t0 = clock_mono_ns();
    shoal_err rc = SHOAL_OK;
    res->done = 0;
    for (unsigned i = 0; i < t; i++) {
        pthread_join(ws[i].tid, NULL);
        res->done += ws[i].done;
        rc = rc != SHOAL_OK ? rc : ws[i].rc;
    }
    res->secs = secs_since(t0);
    pthread_barrier_destroy(&bar);
    return rc;
}

/* ---- phases -------------------------------------------------------------- */

static shoal_err
phase_put(const bench *b, void *db)
{
    run_result r;
    syncer sy;
    syncer_start(&sy, b, db);
    shoal_err rc =
        run_workers(b, db, WORK_PUT, b->c.keys, 0, b->c.max_seconds, &r);
    syncer_stop(&sy);
    if (rc != SHOAL_OK)
        return rc;
    if (b->c.phases & PH_PUT) {
        figure("put_ops", (double) r.done / r.secs, "ops/s", 0);
        if (r.done < b->c.keys)
            figure("put_keys_done", (double) r.done, "keys", 0);
    }
    return SHOAL_OK;
}

static shoal_err
phase_get(const bench *b, void *db)
{
    run_result r;
    shoal_err rc = run_workers(b, db, WORK_GET, b->c.keys, 0, 0, &r);
    if (rc != SHOAL_OK)
        return rc;
    figure("get_ops", (double) r.done / r.secs, "ops/s", 0);
    return SHOAL_OK;
}

static shoal_err
phase_scan(const bench *b, void *db)
{
    uint64_t n = 0, t0 = clock_mono_ns();
    shoal_err rc = b->ops->scan(db, &n);
    double s = secs_since(t0);
    if (rc != SHOAL_OK)
        return rc;
    if (n != b->c.keys) {
        fprintf(stderr,
                "bench_engine: scan saw %" PRIu64 " of %" PRIu64 " keys\n", n,
                b->c.keys);
        return SHOAL_ECORRUPT;
    }
    if (b->ops == &SHOAL_OPS)
        fprintf(stderr,
                "# scan_keys: per-shard ordered scans over %u "
                "shards (shard order is not global key order)\n",
                (unsigned) b->c.shards);
    figure("scan_keys", (double) n / s, "keys/s", 0);
    return SHOAL_OK;
}

/* Reopen *db from dir; time open + the first get. */
static shoal_err
timed_reopen(const bench *b, const char *dir, void **db, double *secs)
{
    uint8_t buf[64];
    size_t len = 0;
    void *rd = NULL;
    b->ops->close(*db);
    *db = NULL;
    uint64_t t0 = clock_mono_ns();
    shoal_err rc = b->ops->open(b, dir, db);
    if (rc != SHOAL_OK)
        return rc;
    if ((rc = b->ops->reader_open(*db, &rd)) != SHOAL_OK)
        return rc;
    rc = b->ops->get(*db, rd, key_of(b, 0), b->c.key_size, buf, sizeof(buf),
                     &len);
    b->ops->reader_close(rd);
    *secs = secs_since(t0);
    return rc;
}

static shoal_err
phase_recovery(const bench *b, const char *dir, void **db)
{
    run_result r;
    double s = 0;
    uint64_t n = b->c.keys, t0 = clock_mono_ns();
    shoal_err rc = b->ops->checkpoint(*db);
    if (rc != SHOAL_OK)
        return rc;
    figure("checkpoint_s", secs_since(t0), "s", 3);
    if ((rc = run_workers(b, *db, WORK_PUT, b->c.overwrites, 1, 0, &r)) !=
        SHOAL_OK)
        return rc;
    if ((rc = timed_reopen(b, dir, db, &s)) != SHOAL_OK)
        return rc;
    if (b->ops->count != NULL && (rc = b->ops->count(*db, &n)) != SHOAL_OK)
        return rc;
    figure("recovery_s", s, "s", 4);
    figure("recovery_keys", (double) n, "keys", 0);
    if (b->ops == &SHOAL_OPS) {
        store_stats st;
        store_get_stats(((shoal_db *) *db)->st, &st);
        figure("recovery_wal_records", (double) st.recovered_records, "records",
               0);
    }
    return SHOAL_OK;
}

static shoal_err
main_phases(const bench *b, const char *dir, void **db)
{
    shoal_err rc;
    if ((rc = phase_put(b, *db)) != SHOAL_OK)
        return rc;
    if ((b->c.phases & PH_GET) && (rc = phase_get(b, *db)) != SHOAL_OK)
        return rc;
    if ((b->c.phases & PH_SCAN) && (rc = phase_scan(b, *db)) != SHOAL_OK)
        return rc;
    if (b->c.phases & PH_RECOVERY)
        rc = phase_recovery(b, dir, db);
    return rc;
}

/* put, get, scan, recovery on one instance: the load of put (timed or not)
 * feeds the others. */
static shoal_err
phase_main(const bench *b)
{
    void *db = NULL;
    char *dir = work_sub(b, "main");
    if (dir == NULL)
        return SHOAL_ENOMEM;
    shoal_err rc = b->ops->open(b, dir, &db);
    if (rc == SHOAL_OK)
        rc = main_phases(b, dir, &db);
    b->ops->close(db);
    free(dir);
    return rc;
}

/* ---- memory -------------------------------------------------------------- */

static shoal_err
phase_memory(const bench *b)
{
    void *db = NULL;
    run_result r;
    if (b->ops != &SHOAL_OPS) {
        fprintf(stderr, "# memory: shoal only (peer: Redis, see "
                        "engine_bench.sh)\n");
        return SHOAL_OK;
    }
    uint64_t before = rss_bytes();
    shoal_err rc = b->ops->open(b, NULL, &db);
    if (rc != SHOAL_OK)
        return rc;
    rc = run_workers(b, db, WORK_PUT, b->c.keys, 0, 0, &r);
    uint64_t after = rss_bytes();
    store_stats st;
    store_get_stats(((shoal_db *) db)->st, &st);
    b->ops->close(db);
    if (rc != SHOAL_OK)
        return rc;
    double per = ((double) after - (double) before) / (double) b->c.keys;
    figure("rss_bytes_per_key", per, "B", 1);
    figure("overhead_bytes_per_key",
           per - (double) (b->c.key_size + b->c.value_size), "B", 1);
    figure("index_bytes_per_key", (double) st.index_bytes / (double) b->c.keys,
           "B", 1);
    return SHOAL_OK;
}

/* ---- snapshot stall ------------------------------------------------------ */

typedef struct stall_probe {
    const bench *b;
    void *db;
    atomic_int phase; /* 0 before the snapshot, 1 during, 2 after */
    atomic_bool stop;
    hist during, outside;
    uint64_t ops_during;
    shoal_err rc;
} stall_probe;

/* Continuous overwrites of random keys, each timed; a put that overlaps
 * the snapshot at all counts as "during". */
static void *
stall_writer(void *arg)
{
    stall_probe *p = arg;
    const bench *b = p->b;
    uint64_t rng = mix64(b->c.seed ^ 0xfeedull), ver = 2;
    while (!atomic_load(&p->stop)) {
        uint64_t i = rng_next(&rng) % b->c.keys;
        int ph0 = atomic_load(&p->phase);
        uint64_t t0 = clock_mono_ns();
        p->rc = b->ops->put(p->db, key_of(b, i), b->c.key_size,
                            value_of(b, i, ver++), b->c.value_size);
        uint64_t ns = clock_mono_ns() - t0;
        int ph1 = atomic_load(&p->phase);
        if (p->rc != SHOAL_OK)
            break;
        bool during = ph0 == 1 || ph1 == 1 || ph0 != ph1;
        hist_add(during ? &p->during : &p->outside, ns);
        p->ops_during += during;
    }
    return NULL;
}

static shoal_err
stall_measure(const bench *b, stall_probe *p, double *snap_s)
{
    pthread_t tid;
    if (pthread_create(&tid, NULL, stall_writer, p) != 0)
        return SHOAL_ENOMEM;
    sleep_ms(b->c.snap_warm_ms);
    atomic_store(&p->phase, 1);
    uint64_t t0 = clock_mono_ns();
    /* The production path: the round runs on the engine's background
     * thread (at lowered CPU priority), as the automatic triggers do. */
    shoal_err rc = store_snapshot_now(((shoal_db *) p->db)->st);
    *snap_s = secs_since(t0);
    atomic_store(&p->phase, 2);
    sleep_ms(b->c.snap_warm_ms);
    atomic_store(&p->stop, true);
    pthread_join(tid, NULL);
    return rc != SHOAL_OK ? rc : p->rc;
}

static void
stall_report(const stall_probe *p, double snap_s)
{
    figure("snapshot_s", snap_s, "s", 3);
    figure("snap_stall_ms", (double) p->during.max_ns / 1e6, "ms", 3);
    figure("snap_p999_ms", (double) hist_pct(&p->during, 99.9) / 1e6, "ms", 3);
    figure("snap_put_ops", (double) p->ops_during / snap_s, "ops/s", 0);
    figure("idle_put_max_ms", (double) p->outside.max_ns / 1e6, "ms", 3);
    figure("idle_put_p999_ms", (double) hist_pct(&p->outside, 99.9) / 1e6, "ms",
           3);
}

static shoal_err
stall_run(const bench *b, stall_probe *p)
{
    run_result r;
    double snap_s = 0;
    shoal_err rc = run_workers(b, p->db, WORK_PUT, b->c.keys, 0, 0, &r);
    if (rc == SHOAL_OK)
        rc = stall_measure(b, p, &snap_s);
    if (rc == SHOAL_OK)
        stall_report(p, snap_s);
    return rc;
}

static shoal_err
phase_snapstall(const bench *b)
{
    if (b->ops != &SHOAL_OPS) {
        fprintf(stderr, "# snapstall: shoal only (peer: Redis BGSAVE)\n");
        return SHOAL_OK;
    }
    bench nb = *b; /* the writer runs with fsync none, whatever --fsync */
    nb.c.fsync = WAL_FSYNC_NONE;
    char *dir = work_sub(b, "snap");
    stall_probe *p = calloc(1, sizeof(*p));
    shoal_err rc = dir && p ? SHOAL_OK : SHOAL_ENOMEM;
    if (rc == SHOAL_OK)
        rc = nb.ops->open(&nb, dir, &p->db);
    if (rc == SHOAL_OK) {
        p->b = &nb;
        atomic_init(&p->phase, 0);
        atomic_init(&p->stop, false);
        rc = stall_run(&nb, p);
        nb.ops->close(p->db);
    }
    free(p);
    free(dir);
    return rc;
}

/* ---- options ------------------------------------------------------------- */

static void
usage(FILE *f)
{
    fprintf(
        f, "usage: bench_engine [options]\n"
           "  --keys N             keys to load (1000000)\n"
           "  --key-size B         key bytes, 8..1024 (16)\n"
           "  --value-size B       value bytes (100)\n"
           "  --threads T          threads for put/get (1)\n"
           "  --fsync P            always|interval|none (always)\n"
           "  --engine E           shoal|lmdb|rocksdb (shoal)\n"
           "  --dir PATH           parent of the work dir (.)\n"
           "  --shards S           shoal shards (256)\n"
           "  --seed X             workload seed (1)\n"
           "  --only LIST          put,get,scan,recovery,snapstall,memory\n"
           "  --overwrites W       recovery: writes after checkpoint (200000)\n"
           "  --max-seconds S      put: stop after S s (0: load all; put "
           "only)\n"
           "  --snap-warm-ms MS    snapstall: writer alone before/after "
           "(300)\n"
           "  --lmdb-writemap      LMDB: add MDB_WRITEMAP\n"
           "  --keep               keep the work dir\n");
}

static shoal_err
parse_u64(const char *opt, const char *s, uint64_t lo, uint64_t hi,
          uint64_t *out)
{
    char *end = NULL;
    errno = 0;
    unsigned long long v = s && *s != '-' ? strtoull(s, &end, 0) : 0;
    if (s == NULL || *s == '-' || errno != 0 || end == s || *end != '\0' ||
        v < lo || v > hi) {
        fprintf(stderr,
                "bench_engine: %s needs an integer in %" PRIu64 "..%" PRIu64
                ", got '%s'\n",
                opt, lo, hi, s ? s : "(nothing)");
        return SHOAL_EINVAL;
    }
    *out = v;
    return SHOAL_OK;
}

static const struct phase_name {
    const char *name;
    unsigned bit;
} PHASES[] = {
    {"put", PH_PUT},
    {"get", PH_GET},
    {"scan", PH_SCAN},
    {"recovery", PH_RECOVERY},
    {"snapstall", PH_SNAPSTALL},
    {"memory", PH_MEMORY},
};

static shoal_err
parse_phases(const char *s, unsigned *out)
{
    *out = 0;
    while (s != NULL && *s != '\0') {
        size_t len = strcspn(s, ","), i = 0;
        for (; i < sizeof(PHASES) / sizeof(PHASES[0]); i++)
            if (strlen(PHASES[i].name) == len &&
                memcmp(PHASES[i].name, s, len) == 0)
                break;
        if (i == sizeof(PHASES) / sizeof(PHASES[0])) {
            fprintf(stderr,
                    "bench_engine: --only: unknown figure '%.*s' "
                    "(put,get,scan,recovery,snapstall,memory)\n",
                    (int) len, s);
            return SHOAL_EINVAL;
        }
        *out |= PHASES[i].bit;
        s += len + (s[len] == ',');
    }
    return *out ? SHOAL_OK : SHOAL_EINVAL;
}

typedef shoal_err (*opt_fn)(cfg *c, const char *opt, const char *v);

static shoal_err
opt_keys(cfg *c, const char *opt, const char *v)
{
    return parse_u64(opt, v, 1, 1000000000ull, &c->keys);
}

static shoal_err
opt_size(size_t *dst, const char *opt, const char *v, uint64_t lo, uint64_t hi)
{
    uint64_t x = 0;
    shoal_err rc = parse_u64(opt, v, lo, hi, &x);
    *dst = (size_t) x;
    return rc;
}

static shoal_err
opt_key_size(cfg *c, const char *opt, const char *v)
{
    return opt_size(&c->key_size, opt, v, 8, 1024);
}

static shoal_err
opt_value_size(cfg *c, const char *opt, const char *v)
{
    return opt_size(&c->value_size, opt, v, 0, 1u << 20);
}

static shoal_err
opt_threads(cfg *c, const char *opt, const char *v)
{
    uint64_t x = 0;
    shoal_err rc = parse_u64(opt, v, 1, MAX_THREADS, &x);
    c->threads = (unsigned) x;
    return rc;
}

static shoal_err
opt_fsync(cfg *c, const char *opt, const char *v)
{
    int f = wal_fsync_parse(v);
    if (f < 0) {
        fprintf(stderr,
                "bench_engine: %s must be always|interval|none, "
                "got '%s'\n",
                opt, v);
        return SHOAL_EINVAL;
    }
    c->fsync = (wal_fsync) f;
    return SHOAL_OK;
}

static shoal_err
opt_engine(cfg *c, const char *opt, const char *v)
{
    (void) opt;
    c->engine = v;
    return SHOAL_OK;
}

static shoal_err
opt_dir(cfg *c, const char *opt, const char *v)
{
    (void) opt;
    c->dir = v;
    return SHOAL_OK;
}

static shoal_err
opt_shards(cfg *c, const char *opt, const char *v)
{
    uint64_t x = 0;
    shoal_err rc = parse_u64(opt, v, 1, 65536, &x);
    c->shards = (uint32_t) x;
    return rc;
}

static shoal_err
opt_seed(cfg *c, const char *opt, const char *v)
{
    return parse_u64(opt, v, 0, UINT64_MAX, &c->seed);
}

static shoal_err
opt_only(cfg *c, const char *opt, const char *v)
{
    (void) opt;
    return parse_phases(v, &c->phases);
}

static shoal_err
opt_overwrites(cfg *c, const char *opt, const char *v)
{
    return parse_u64(opt, v, 0, 1000000000ull, &c->overwrites);
}

static shoal_err
opt_max_seconds(cfg *c, const char *opt, const char *v)
{
    return parse_u64(opt, v, 0, 86400, &c->max_seconds);
}

static shoal_err
opt_snap_warm(cfg *c, const char *opt, const char *v)
{
    return parse_u64(opt, v, 0, 60000, &c->snap_warm_ms);
}

static shoal_err
opt_writemap(cfg *c, const char *opt, const char *v)
{
    (void) opt;
    (void) v;
    c->lmdb_writemap = true;
    return SHOAL_OK;
}

static shoal_err
opt_keep(cfg *c, const char *opt, const char *v)
{
    (void) opt;
    (void) v;
    c->keep = true;
    return SHOAL_OK;
}

static const struct opt_def {
    const char *name;
    bool has_arg;
    opt_fn fn;
} OPTS[] = {
    {"--keys", true, opt_keys},
    {"--key-size", true, opt_key_size},
    {"--value-size", true, opt_value_size},
    {"--threads", true, opt_threads},
    {"--fsync", true, opt_fsync},
    {"--engine", true, opt_engine},
    {"--dir", true, opt_dir},
    {"--shards", true, opt_shards},
    {"--seed", true, opt_seed},
    {"--only", true, opt_only},
    {"--overwrites", true, opt_overwrites},
    {"--max-seconds", true, opt_max_seconds},
    {"--snap-warm-ms", true, opt_snap_warm},
    {"--lmdb-writemap", false, opt_writemap},
    {"--keep", false, opt_keep},
};

static const struct opt_def *
opt_find(const char *name)
{
    for (size_t i = 0; i < sizeof(OPTS) / sizeof(OPTS[0]); i++)
        if (strcmp(OPTS[i].name, name) == 0)
            return &OPTS[i];
    return NULL;
}

static void
cfg_default(cfg *c)
{
    memset(c, 0, sizeof(*c));
    c->keys = 1000000;
    c->key_size = 16;
    c->value_size = 100;
    c->threads = 1;
    c->fsync = WAL_FSYNC_ALWAYS;
    c->engine = "shoal";
    c->dir = ".";
    c->shards = 256;
    c->seed = 1;
    c->phases = PH_MAIN | PH_SNAPSTALL | PH_MEMORY;
    c->overwrites = 200000;
    c->snap_warm_ms = 300;
}

static shoal_err
cfg_check(const cfg *c)
{
    if (c->max_seconds != 0 && c->phases != PH_PUT) {
        fprintf(stderr, "bench_engine: --max-seconds loads only part of the "
                        "keys; use it with --only put\n");
        return SHOAL_EINVAL;
    }
    return SHOAL_OK;
}

static shoal_err
parse_args(int argc, char **argv, cfg *c)
{
    cfg_default(c);
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            usage(stdout);
            exit(0);
        }
        const struct opt_def *d = opt_find(argv[i]);
        if (d == NULL) {
            fprintf(stderr, "bench_engine: unknown option '%s'\n", argv[i]);
            usage(stderr);
            return SHOAL_EINVAL;
        }
        const char *v = NULL;
        if (d->has_arg && (v = i + 1 < argc ? argv[++i] : NULL) == NULL) {
            fprintf(stderr, "bench_engine: %s needs a value\n", d->name);
            return SHOAL_EINVAL;
        }
        if (d->fn(c, d->name, v) != SHOAL_OK)
            return SHOAL_EINVAL;
    }
    return cfg_check(c);
}

static const engine_ops *
engine_find(const char *name)
{
    for (size_t i = 0; i < sizeof(ENGINES) / sizeof(ENGINES[0]); i++)
        if (strcmp(ENGINES[i]->name, name) == 0)
            return ENGINES[i];
    fprintf(stderr, "bench_engine: engine '%s' is not built in (have:", name);
    for (size_t i = 0; i < sizeof(ENGINES) / sizeof(ENGINES[0]); i++)
        fprintf(stderr, " %s", ENGINES[i]->name);
    fprintf(stderr, ")\n");
    return NULL;
}

/* ---- main ---------------------------------------------------------------- */

static shoal_err
work_dir_make(bench *b)
{
    b->work = path_join(b->c.dir, "bench_engine.XXXXXX");
    if (b->work == NULL)
        return SHOAL_ENOMEM;
    if (mkdtemp(b->work) == NULL) {
        fprintf(stderr, "bench_engine: mkdtemp %s: %s\n", b->work,
                strerror(errno));
        return SHOAL_EIO;
    }
    return SHOAL_OK;
}

static void
print_params(const bench *b)
{
    const cfg *c = &b->c;
    fprintf(stderr,
            "# engine=%s keys=%" PRIu64 " key_size=%zu value_size=%zu "
            "threads=%u fsync=%s shards=%u seed=%" PRIu64 " dir=%s%s\n",
            b->ops->name, c->keys, c->key_size, c->value_size, c->threads,
            wal_fsync_name(c->fsync), (unsigned) c->shards, c->seed, b->work,
            c->lmdb_writemap ? " lmdb_writemap" : "");
}

static shoal_err
run(bench *b)
{
    shoal_err rc;
    if ((rc = workload_make(b)) != SHOAL_OK ||
        (rc = work_dir_make(b)) != SHOAL_OK)
        return rc;
    print_params(b);
    if ((b->c.phases & PH_MEMORY) && (rc = phase_memory(b)) != SHOAL_OK)
        return rc;
    if ((b->c.phases & PH_MAIN) && (rc = phase_main(b)) != SHOAL_OK)
        return rc;
    if (b->c.phases & PH_SNAPSTALL)
        rc = phase_snapstall(b);
    return rc;
}

int
main(int argc, char **argv)
{
    bench b;
    memset(&b, 0, sizeof(b));
    if (parse_args(argc, argv, &b.c) != SHOAL_OK)
        return 2;
    if ((b.ops = engine_find(b.c.engine)) == NULL)
        return 2;
    shoal_err rc = run(&b);
    if (rc != SHOAL_OK)
        fprintf(stderr, "bench_engine: failed: %s\n", shoal_strerror(rc));
    if (b.work != NULL && !b.c.keep)
        rm_tree(b.work);
    free(b.work);
    free(b.keys);
    free(b.pool);
    return rc == SHOAL_OK ? 0 : 1;
}
