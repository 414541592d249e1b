/*
 * bench_kidx.c -- choose the shard index by measurement (DESIGN §7).
 *
 * Candidates, each behind the same ops table:
 *   btree    storage/kidx.c (the B+tree in the engine)
 *   skiplist a private skiplist (p = 1/4, nodes sized to their level)
 *   array    a sorted array of entry pointers: the lookup and memory floor,
 *            built by one sort (no insert or delete figures)
 *
 * Workload: n (default 1M) 16-byte keys with 100-byte values stored as
 * entries (entry.h), allocated from the slab (storage/slab.c) or from
 * malloc, inserted and looked up in random order. Keys are random bytes, or
 * with --keys user "user:%011u" of 0..n-1: every key shares its first 10
 * bytes, the worst case for the B+tree's cached key prefixes. Each candidate
 * runs in a forked child, so resident memory is measured from a clean
 * start: rss_* is the RSS growth per key for entries plus index, overhead_*
 * the same minus the 116 key+value bytes.
 *
 * Output: one figure per line, "name value unit".
 *
 *   bench_kidx [--only btree,skiplist,array,alloc] [--keys random|user]
 *              [n_keys] [seed]
 */
#include "proto/clock.h"
#include "proto/mem.h"
#include "storage/entry.h"
#include "storage/kidx.h"
#include "storage/slab.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define KLEN 16
#define VLEN 100

typedef struct cand_ops {
    const char *name;
    void *(*open)(slab *s); /* s == NULL: nodes from mem_alloc */
    void (*close)(void *h);
    void (*put)(void *h, entry *e); /* NULL: bulk load via seal */
    void (*seal)(void *h, entry **e, size_t n);
    entry *(*get)(void *h, const uint8_t *key, size_t klen);
    entry *(*del)(void *h, const uint8_t *key, size_t klen); /* may be NULL */
    size_t (*scan)(void *h); /* entries visited in order */
    size_t (*mem_bytes)(void *h);
} cand_ops;

static uint64_t
rnd(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static void
die(const char *what)
{
    fprintf(stderr, "bench_kidx: %s\n", what);
    exit(1);
}

static int
entry_cmp(const entry *a, const entry *b)
{
    return key_cmp(entry_key(a), a->klen, entry_key(b), b->klen);
}

/* --- btree (kidx) -------------------------------------------------------- */

static void *
bt_open(slab *s)
{
    (void) s;
    kidx *k;
    if (kidx_open(&k) != SHOAL_OK)
        die("kidx_open");
    return k;
}

static void
bt_close(void *h)
{
    kidx_close(h, NULL, NULL);
}

static void
bt_put(void *h, entry *e)
{
    if (kidx_reserve(h) != SHOAL_OK)
        die("kidx_reserve");
    kidx_put(h, e);
}

static entry *
bt_get(void *h, const uint8_t *key, size_t klen)
{
    return kidx_get(h, key, klen);
}

static entry *
bt_del(void *h, const uint8_t *key, size_t klen)
{
    return kidx_del(h, key, klen);
}

static size_t
bt_scan(void *h)
{
    kidx_iter it;
    size_t n = 0;
    const entry *prev = NULL, *e;
    kidx_seek(h, &it, NULL, 0, false);
    while ((e = kidx_next(&it)) != NULL) {
        if (prev != NULL && entry_cmp(prev, e) >= 0)
            die("btree scan out of order");
        prev = e;
        n++;
    }
    return n;
}

static size_t
bt_mem(void *h)
{
    return kidx_mem_bytes(h);
}

static const cand_ops btree_ops = {
    .name = "btree",
    .open = bt_open,
    .close = bt_close,
    .put = bt_put,
    .get = bt_get,
    .del = bt_del,
    .scan = bt_scan,
    .mem_bytes = bt_mem,
};

/* --- skiplist ------------------------------------------------------------ */

#define SL_MAX 24

typedef struct sl_node sl_node;
struct sl_node {
    entry *e;
    sl_node *next[]; /* as many as the node's level */
};

typedef struct skiplist {
    sl_node *head; /* SL_MAX levels, no entry */
    unsigned level;
    size_t bytes; /* node bytes requested */
    uint64_t rng;
    slab *s;
} skiplist;

static void *
sl_alloc(skiplist *l, size_t len)
{
    void *p = l->s != NULL ? slab_alloc(l->s, len) : mem_alloc(len);
    if (p == NULL)
        die("skiplist node");
    l->bytes += len;
    return p;
}

static void
sl_free(skiplist *l, void *p, size_t len)
{
    if (l->s != NULL)
        slab_free(l->s, p, len);
    else
        mem_free(p);
    l->bytes -= len;
}

static void *
sl_open(slab *s)
{
    skiplist *l = calloc(1, sizeof(*l));
    if (l == NULL)
        die("skiplist");
    l->s = s;
    l->rng = 42;
    l->level = 1;
    l->head = sl_alloc(l, sizeof(sl_node) + SL_MAX * sizeof(sl_node *));
    memset(l->head, 0, sizeof(sl_node) + SL_MAX * sizeof(sl_node *));
    return l;
}

static void
sl_close(void *h)
{
    skiplist *l = h;
    sl_node *n = l->head->next[0];
    if (l->s == NULL) {
        while (n != NULL) {
            sl_node *next = n->next[0];
            mem_free(n);
            n = next;
        }
        mem_free(l->head);
    }
    free(l);
}

/* The last node before key on every level (update[i]); returns the node at
 * level 0 after it (first >= key). */
static sl_node *
sl_find(const skiplist *l, const uint8_t *key, size_t klen, sl_node **update)
{
    sl_node *x = l->head;
    for (unsigned i = l->level; i-- > 0;) {
        sl_node *nx;
        while ((nx = x->next[i]) != NULL &&
               key_cmp(entry_key(nx->e), nx->e->klen, key, klen) < 0)
            x = nx;
        if (update != NULL)
            update[i] = x;
    }
    return x->next[0];
}

static void
sl_put(void *h, entry *e)
{
    skiplist *l = h;
    sl_node *update[SL_MAX];
    sl_node *x = sl_find(l, entry_key(e), e->klen, update);
    if (x != NULL && entry_cmp(x->e, e) == 0) {
        x->e = e;
        return;
    }
    unsigned lvl = 1;
    while (lvl < SL_MAX && (rnd(&l->rng) & 3) == 0)
        lvl++;
    for (; l->level < lvl; l->level++)
        update[l->level] = l->head;
    x = sl_alloc(l, sizeof(sl_node) + lvl * sizeof(sl_node *));
    x->e = e;
    for (unsigned i = 0; i < lvl; i++) {
        x->next[i] = update[i]->next[i];
        update[i]->next[i] = x;
    }
}

static entry *
sl_get(void *h, const uint8_t *key, size_t klen)
{
    sl_node *x = sl_find(h, key, klen, NULL);
    if (x != NULL && key_cmp(entry_key(x->e), x->e->klen, key, klen) == 0)
        return x->e;
    return NULL;
}

static entry *
sl_del(void *h, const uint8_t *key, size_t klen)
{
    skiplist *l = h;
    sl_node *update[SL_MAX];
    sl_node *x = sl_find(l, key, klen, update);
    if (x == NULL || key_cmp(entry_key(x->e), x->e->klen, key, klen) != 0)
        return NULL;
    unsigned lvl = 0;
    for (; lvl < l->level && update[lvl]->next[lvl] == x; lvl++)
        update[lvl]->next[lvl] = x->next[lvl];
    entry *e = x->e;
    sl_free(l, x, sizeof(sl_node) + lvl * sizeof(sl_node *));
    return e;
}

static size_t
sl_scan(void *h)
{
    const skiplist *l = h;
    size_t n = 0;
    const entry *prev = NULL;
    for (const sl_node *x = l->head->next[0]; x != NULL; x = x->next[0]) {
        if (prev != NULL && entry_cmp(prev, x->e) >= 0)
            die("skiplist scan out of order");
        prev = x->e;
        n++;
    }
    return n;
}

static size_t
sl_mem(void *h)
{
    return ((const skiplist *) h)->bytes + sizeof(skiplist);
}

static const cand_ops skiplist_ops = {
    .name = "skiplist",
    .open = sl_open,
    .close = sl_close,
    .put = sl_put,
    .get = sl_get,
    .del = sl_del,
    .scan = sl_scan,
    .mem_bytes = sl_mem,
};

/* --- sorted array -------------------------------------------------------- */

typedef struct sarray {
    entry **e;
    size_t n;
} sarray;

static void *
sa_open(slab *s)
{
    (void) s;
    sarray *a = calloc(1, sizeof(*a));
    if (a == NULL)
        die("sarray");
    return a;
}

static void
sa_close(void *h)
{
    sarray *a = h;
    mem_free(a->e);
    free(a);
}

static int
sa_qcmp(const void *a, const void *b)
{
    return entry_cmp(*(entry *const *) a, *(entry *const *) b);
}

static void
sa_seal(void *h, entry **e, size_t n)
{
    sarray *a = h;
    a->e = mem_alloc(n * sizeof(entry *));
    if (a->e == NULL)
        die("sarray");
    memcpy(a->e, e, n * sizeof(entry *));
    qsort(a->e, n, sizeof(entry *), sa_qcmp);
    a->n = n;
}

static entry *
sa_get(void *h, const uint8_t *key, size_t klen)
{
    const sarray *a = h;
    size_t lo = 0, hi = a->n;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        const entry *e = a->e[mid];
        int c = key_cmp(entry_key(e), e->klen, key, klen);
        if (c == 0)
            return a->e[mid];
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

static size_t
sa_scan(void *h)
{
    const sarray *a = h;
    for (size_t i = 1; i < a->n; i++)
        if (entry_cmp(a->e[i - 1], a->e[i]) >= 0)
            die("array out of order");
    return a->n;
}

static size_t
sa_mem(void *h)
{
    return ((const sarray *) h)->n * sizeof(entry *) + sizeof(sarray);
}

static const cand_ops array_ops = {
    .name = "array",
    .open = sa_open,
    .close = sa_close,
    .seal = sa_seal,
    .get = sa_get,
    .scan = sa_scan,
    .mem_bytes = sa_mem,
};

/* --- harness ------------------------------------------------------------- */

typedef struct workload {
    size_t n;
    uint8_t *keys;     /* n * KLEN, random */
    size_t *get_order; /* permutations of 0..n-1 */
    size_t *del_order;
} workload;

/* CPU seconds of this process: the 2-core machines are shared, and wall
 * time would charge other jobs' time slices to the candidate. */
static double
cpu_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double) ts.tv_sec + (double) ts.tv_nsec / 1e9;
}

static double
now_s(void)
{
    return (double) clock_mono_ns() / 1e9;
}

static double
rss_bytes(void)
{
    long pages = 0, resident = 0;
    FILE *f = fopen("/proc/self/statm", "r");
    if (f == NULL || fscanf(f, "%ld %ld", &pages, &resident) != 2)
        die("/proc/self/statm");
    fclose(f);
    return (double) resident * (double) sysconf(_SC_PAGESIZE);
}

static size_t *
permutation(size_t n, uint64_t *rng)
{
    size_t *p = malloc(n * sizeof(size_t));
    if (p == NULL)
        die("permutation");
    for (size_t i = 0; i < n; i++)
        p[i] = i;
    for (size_t i = n; i > 1; i--) {
        size_t j = rnd(rng) % i, t = p[i - 1];
        p[i - 1] = p[j];
        p[j] = t;
    }
    return p;
}

static void
figure(const char *cand, const char *what, double v, const char *unit)
{
    printf("%s.%s %.2f %s\n", cand, what, v, unit);
    fflush(stdout);
}

/* A touched array for n entry pointers, allocated before the first RSS
 * reading so it is not counted. */
static entry **
entry_array(size_t n)
{
    entry **e = malloc(n * sizeof(entry *));
    if (e == NULL)
        die("entries");
    memset(e, 0xff, n * sizeof(entry *)); /* not 0: malloc+memset 0 is calloc */
    return e;
}

static void
make_entries(const workload *w, slab *s, entry **e)
{
    static const uint8_t val[VLEN] = {1};
    size_t len = entry_size(KLEN, VLEN, 0);
    for (size_t i = 0; i < w->n; i++) {
        e[i] = s != NULL ? slab_alloc(s, len) : mem_alloc(len);
        if (e[i] == NULL)
            die("entry");
        entry_fill(e[i], i + 1, &w->keys[i * KLEN], KLEN, val, VLEN, 0);
    }
}

static void
build(const cand_ops *o, void *h, entry **e, size_t n)
{
    if (o->put == NULL) {
        o->seal(h, e, n);
        return;
    }
    for (size_t i = 0; i < n; i++)
        o->put(h, e[i]);
}

static void
time_lookups(const cand_ops *o, void *h, const workload *w)
{
    uint64_t sum = 0;
    double t = cpu_s();
    for (size_t i = 0; i < w->n; i++) {
        const entry *e = o->get(h, &w->keys[w->get_order[i] * KLEN], KLEN);
        if (e == NULL)
            die("lookup missed");
        sum += e->version;
    }
    t = cpu_s() - t;
    if (sum != (uint64_t) w->n * (w->n + 1) / 2)
        die("lookup found wrong entries");
    figure(o->name, "lookup", (double) w->n / t, "ops/s");
}

static void
time_deletes(const cand_ops *o, void *h, const workload *w)
{
    double t = cpu_s();
    for (size_t i = 0; i < w->n; i++)
        if (o->del(h, &w->keys[w->del_order[i] * KLEN], KLEN) == NULL)
            die("delete missed");
    t = cpu_s() - t;
    figure(o->name, "delete", (double) w->n / t, "ops/s");
    figure(o->name, "index_bytes_after_delete_all", (double) o->mem_bytes(h),
           "bytes");
}

/* Every timing, with entries from the slab. */
static void
run_timed(const cand_ops *o, const workload *w)
{
    slab *s;
    if (slab_open(&s) != SHOAL_OK)
        die("slab_open");
    entry **e = entry_array(w->n);
    double rss0 = rss_bytes();
    make_entries(w, s, e);
    void *h = o->open(s);
    double t = cpu_s();
    build(o, h, e, w->n);
    t = cpu_s() - t;
    double rss1 = rss_bytes();
    if (o->put != NULL)
        figure(o->name, "insert", (double) w->n / t, "ops/s");
    time_lookups(o, h, w);
    t = cpu_s();
    if (o->scan(h) != w->n)
        die("scan count");
    figure(o->name, "scan", (double) w->n / (cpu_s() - t), "keys/s");
    figure(o->name, "index_bytes", (double) o->mem_bytes(h) / (double) w->n,
           "bytes/key");
    figure(o->name, "rss_slab", (rss1 - rss0) / (double) w->n, "bytes/key");
    figure(o->name, "overhead_slab",
           (rss1 - rss0) / (double) w->n - KLEN - VLEN, "bytes/key");
    if (o->del != NULL)
        time_deletes(o, h, w);
}

/* Resident memory only, with entries from malloc. */
static void
run_malloc_rss(const cand_ops *o, const workload *w)
{
    entry **e = entry_array(w->n);
    double rss0 = rss_bytes();
    make_entries(w, NULL, e);
    void *h = o->open(NULL);
    build(o, h, e, w->n);
    double rss1 = rss_bytes();
    figure(o->name, "rss_malloc", (rss1 - rss0) / (double) w->n, "bytes/key");
    figure(o->name, "overhead_malloc",
           (rss1 - rss0) / (double) w->n - KLEN - VLEN, "bytes/key");
}

/* The btree's index size after inserting keys in order (recovery loads a
 * snapshot in key order). */
static void
run_sorted_load(const cand_ops *o, const workload *w)
{
    entry **e = entry_array(w->n);
    make_entries(w, NULL, e);
    qsort(e, w->n, sizeof(entry *), sa_qcmp);
    void *h = o->open(NULL);
    build(o, h, e, w->n);
    figure(o->name, "index_bytes_sorted_load",
           (double) o->mem_bytes(h) / (double) w->n, "bytes/key");
}

static void
in_child(void (*fn)(const cand_ops *, const workload *), const cand_ops *o,
         const workload *w)
{
    fflush(stdout);
    pid_t pid = fork();
    if (pid < 0)
        die("fork");
    if (pid == 0) {
        fn(o, w);
        fflush(stdout);
        _exit(0);
    }
    int st;
    if (waitpid(pid, &st, 0) != pid || !WIFEXITED(st) || WEXITSTATUS(st) != 0)
        die("child failed");
}

/* --- allocator ----------------------------------------------------------- */

typedef struct alloc_arg {
    slab *s; /* NULL: malloc */
    size_t ops;
} alloc_arg;

/* Allocate 64 entry-sized objects, free them, repeat. */
static void *
alloc_loop(void *arg)
{
    const alloc_arg *a = arg;
    void *p[64];
    size_t len = entry_size(KLEN, VLEN, 0);
    for (size_t i = 0; i < a->ops / 64; i++) {
        for (unsigned j = 0; j < 64; j++)
            p[j] = a->s != NULL ? slab_alloc(a->s, len) : mem_alloc(len);
        for (unsigned j = 0; j < 64; j++) {
            if (a->s != NULL)
                slab_free(a->s, p[j], len);
            else
                mem_free(p[j]);
        }
    }
    return NULL;
}

static void
time_alloc(const char *name, slab *s, unsigned threads)
{
    pthread_t th[2];
    alloc_arg a = {s, 8u << 20};
    double t = now_s();
    for (unsigned i = 0; i < threads; i++)
        if (pthread_create(&th[i], NULL, alloc_loop, &a) != 0)
            die("pthread_create");
    for (unsigned i = 0; i < threads; i++)
        pthread_join(th[i], NULL);
    t = now_s() - t;
    char what[32];
    snprintf(what, sizeof(what), "alloc_free_%ut", threads);
    figure(name, what, (double) a.ops * threads / t, "pairs/s");
}

static void
bench_alloc(void)
{
    slab *s;
    if (slab_open(&s) != SHOAL_OK)
        die("slab_open");
    for (unsigned t = 1; t <= 2; t++) {
        time_alloc("slab", s, t);
        time_alloc("malloc", NULL, t);
    }
    slab_close(s);
}

/* n keys "user:%011zu" of a permutation of 0..n-1. */
static void
user_keys(workload *w, uint64_t *rng)
{
    char buf[KLEN + 1];
    size_t *p = permutation(w->n, rng);
    for (size_t i = 0; i < w->n; i++) {
        if (snprintf(buf, sizeof(buf), "user:%011zu", p[i]) != KLEN)
            die("--keys user: too many keys");
        memcpy(&w->keys[i * KLEN], buf, KLEN);
    }
    free(p);
}

/* Whether name is in the comma-separated list (NULL: all). */
static bool
wanted(const char *list, const char *name)
{
    size_t len = strlen(name);
    for (const char *p = list; p != NULL; p = strchr(p, ',')) {
        p += *p == ',';
        if (strncmp(p, name, len) == 0 && (p[len] == ',' || p[len] == '\0'))
            return true;
    }
    return list == NULL;
}

int
main(int argc, char **argv)
{
    static const char usage[] = "usage: bench_kidx [--only btree,skiplist,"
                                "array,alloc] [--keys random|user] "
                                "[n_keys] [seed]";
    workload w;
    const char *only = NULL, *shape = "random";
    int a = 1;
    for (; a + 1 < argc && strncmp(argv[a], "--", 2) == 0; a += 2) {
        if (strcmp(argv[a], "--only") == 0)
            only = argv[a + 1];
        else if (strcmp(argv[a], "--keys") == 0)
            shape = argv[a + 1];
        else
            die(usage);
    }
    uint64_t rng = argc > a + 1 ? strtoull(argv[a + 1], NULL, 0) : 1;
    w.n = argc > a ? strtoull(argv[a], NULL, 0) : 1000000;
    if (w.n == 0 || (strcmp(shape, "random") != 0 && strcmp(shape, "user")))
        die(usage);
    w.keys = malloc(w.n * KLEN);
    if (w.keys == NULL)
        die("keys");
    for (size_t i = 0; i < w.n * KLEN; i += 8) {
        uint64_t v = rnd(&rng);
        memcpy(&w.keys[i], &v, 8);
    }
    if (strcmp(shape, "user") == 0)
        user_keys(&w, &rng);
    w.get_order = permutation(w.n, &rng);
    w.del_order = permutation(w.n, &rng);
    printf("keys %zu count (%s)\n", w.n, shape);

    static const cand_ops *const cands[] = {&btree_ops, &skiplist_ops,
                                            &array_ops};
    for (size_t i = 0; i < sizeof(cands) / sizeof(cands[0]); i++) {
        if (!wanted(only, cands[i]->name))
            continue;
        in_child(run_timed, cands[i], &w);
        in_child(run_malloc_rss, cands[i], &w);
    }
    if (wanted(only, "btree"))
        in_child(run_sorted_load, &btree_ops, &w);
    if (wanted(only, "alloc"))
        bench_alloc();
    free(w.keys);
    free(w.get_order);
    free(w.del_order);
    return 0;
}
