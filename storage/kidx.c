/*
 * kidx.c -- the shard index as a B+tree of entry pointers.
 *
 * Leaves hold up to LEAF_CAP entry pointers in key order and are linked left
 * to right for iteration. An inner node with n separators has n + 1
 * children; levels are counted from the bottom (leaves are level 0), so a
 * node keeps its level when the root grows or collapses.
 *
 *   inner:  child[0] s[0] child[1] s[1] ... s[n-1] child[n]
 *   leaf:   next | n | pfx[0..LEAF_CAP) | e[0] < e[1] < ... < e[n-1]
 *
 * A separator is not a copy of a key: it points at an entry in the tree and
 * caches the first 8 key bytes (pfx, big-endian, zero padded), so a search
 * compares integers and dereferences the entry only on a prefix tie. Keys
 * may be 64 KiB long, so copying them would make node sizes depend on keys
 * and kidx_reserve could not know how much to allocate.
 *
 * Leaves do the same with the first LEAF_PFX bytes (pfx[i] of e[i], the top
 * bytes of the separator encoding): a leaf search is a binary search over
 * pfx[], which lies in the leaf, and then over the run of slots whose prefix
 * equals the probe's, the only ones that dereference entries. For distinct
 * random keys that run is 0 or 1 slots, so a get costs one entry miss (the
 * final full compare) instead of one per halving; keys that share their
 * first LEAF_PFX bytes (user:0000...) tie and search as without prefixes.
 * Zero padding makes "a" and "a\0" tie; the full compare orders them.
 * Four bytes rather than eight: see LEAF_PFX.
 *
 * Invariants:
 *  - s[i] of a node is exactly the smallest key under child[i + 1], and it
 *    points at the entry that is in the tree now. Hence a key is a separator
 *    in at most one inner node, which the descent finds (path.eq_node):
 *    a replace swaps the pointer there, a delete of that key moves it to the
 *    successor before any rebalancing. Merges, splits and borrows only ever
 *    install the first entry of a right-hand node. A separator pointing at a
 *    retired entry would be a use-after-free; ASan catches it in the tests.
 *  - Leaf slot i holds e[i] and pfx[i] == leaf_pfx(key of e[i]); every leaf
 *    edit moves the two together (slots_move, wide_*).
 *  - Every leaf but the root holds at least one entry, every inner node has
 *    at least two children (the root collapses when it has one). Deletion
 *    merges or evens out nodes under LEAF_MIN / INNER_MIN, so memory after
 *    mass deletes shrinks with the keys (an empty tree is one empty leaf).
 *  - Inserting into a full leaf first shifts entries into a sibling with
 *    room and splits only when both are full, keeping leaves ~85% full under
 *    random inserts. An insert past the end of the last leaf splits it
 *    100/0 and one before the start of the first leaf 0/100, so sorted
 *    loads (recovery) in either direction fill leaves completely.
 *  - Puts never allocate: they take nodes from a spare pool that
 *    kidx_reserve_n fills: one leaf per put and inner_need() inner nodes.
 *    Inner nodes freed while a reservation is outstanding go back to the
 *    pool, so deletes between the reserved puts cannot break the bound; the
 *    pool shrinks back to what one put needs when the reservation is used
 *    up, or at the next kidx_reserve_n.
 *
 * Not thread-safe; the shard lock guards every call (kidx.h). kidx_check
 * verifies the tree's shape, order, separators, prefixes and counts for the
 * tests.
 */
#include "storage/kidx.h"

#include "proto/mem.h"

#include <stddef.h>
#include <string.h>

/* Node sizes; -D overrides are for benchmarking only (bench_kidx).
 *
 * LEAF_PFX is the bytes of key prefix cached per leaf slot: 4 bytes make a
 * slot 12 bytes, 8 make it 16. With 1M random 16-byte keys, 8 bytes were
 * no faster (bench_kidx, bench_engine get/put) and took bench_engine's
 * overhead to 41.8 bytes/key, over its 40-byte budget (4 bytes: 37.0).
 * Eight would help only keys that share 4 to 7 leading bytes within a leaf.
 *
 * LEAF_CAP = 169 makes sizeof(leaf) == 2040 with 4-byte prefixes: a 2 KiB
 * glibc chunk, 12.1 bytes per slot. 1 KiB leaves (83 slots) were ~20%
 * slower to search and insert into with 1M keys in one tree (one more
 * inner level) and no faster in bench_engine's 256 small trees. */
#ifndef KIDX_LEAF_PFX
#define KIDX_LEAF_PFX 4
#endif
#define LEAF_PFX KIDX_LEAF_PFX
#ifndef KIDX_LEAF_CAP
#define KIDX_LEAF_CAP 169
#endif
#define LEAF_CAP KIDX_LEAF_CAP
#define LEAF_MIN (LEAF_CAP / 3)
/* sizeof(inner) == 2032; inner nodes are ~1% of the index, so their size
 * matters for search depth, not memory. */
#ifndef KIDX_INNER_CAP
#define KIDX_INNER_CAP 84
#endif
#define INNER_CAP KIDX_INNER_CAP
#define INNER_MIN (INNER_CAP / 3)
/* Inner split: the middle of INNER_CAP + 1 separators moves up. */
#define INNER_SPLIT ((INNER_CAP + 1) / 2)
/* Fewest separators an inner node can take before it splits again after a
 * split or a delete-time evening out (see inner_need). */
#define INNER_SLACK (INNER_CAP + 1 - (INNER_MIN + INNER_CAP) / 2)
/* Inner nodes have >= 2 children, so 2^40 leaves would be needed. */
#define MAX_HEIGHT 40

_Static_assert(INNER_SLACK >= 2, "inner nodes too small for the bound");

#if LEAF_PFX == 4
typedef uint32_t lpfx;
#elif LEAF_PFX == 8
typedef uint64_t lpfx;
#else
#error "KIDX_LEAF_PFX must be 4 or 8"
#endif

typedef struct leaf leaf;
struct leaf {
    leaf *next;         /* right neighbour; NULL for the last leaf */
    uint32_t n;         /* entries in e[] */
    lpfx pfx[LEAF_CAP]; /* pfx[i]: first LEAF_PFX key bytes of e[i] */
    entry *e[LEAF_CAP]; /* sorted by key */
};

/* A full leaf's slots plus the one being inserted: the input of a shift or
 * split. */
typedef struct wide {
    lpfx pfx[LEAF_CAP + 1];
    entry *e[LEAF_CAP + 1];
} wide;

typedef struct sep {
    uint64_t pfx; /* first 8 key bytes of e, big-endian, zero padded */
    entry *e;     /* the smallest entry under the child to the right */
} sep;

typedef struct inner inner;
struct inner {
    uint32_t n;                 /* separators; n + 1 children */
    sep s[INNER_CAP];           /* sorted by key */
    void *child[INNER_CAP + 1]; /* leaf * at level 1, inner * above */
};

struct kidx {
    void *root;                     /* leaf * when height == 0 */
    unsigned height;                /* level of the root */
    size_t count;                   /* entries */
    size_t n_level[MAX_HEIGHT + 1]; /* nodes per level in the tree */
    leaf *pool_leaf;                /* spare leaves, linked through next */
    inner *pool_inner;              /* spare inners, linked through child[0] */
    size_t n_pool_leaf, n_pool_inner;
    size_t resv; /* puts the last kidx_reserve_n still covers */
};

/* A search key with its cached prefix. */
typedef struct probe {
    const uint8_t *key;
    size_t klen;
    uint64_t pfx;
} probe;

/* Root-to-leaf path of a descent: node[d] is the inner node at depth d
 * (level height - d) and idx[d] the child taken there. */
typedef struct path {
    inner *node[MAX_HEIGHT];
    unsigned idx[MAX_HEIGHT];
    leaf *lf;
    inner *eq_node; /* inner node with a separator equal to the key, or NULL */
    unsigned eq_slot;
} path;

/* --- keys ---------------------------------------------------------------- */

static uint64_t
key_pfx(const uint8_t *key, size_t klen)
{
    uint64_t v = 0;
    if (klen >= 8) {
        for (unsigned i = 0; i < 8; i++)
            v = (v << 8) | key[i];
        return v;
    }
    for (unsigned i = 0; i < 8; i++)
        v = (v << 8) | (i < klen ? key[i] : 0u);
    return v;
}

/* The leaf slot prefix: the top LEAF_PFX bytes of a separator prefix, so
 * it orders keys the same way (a shorter key's zero padding sorts first). */
static lpfx
leaf_pfx(uint64_t pfx)
{
    return (lpfx) (pfx >> (64 - 8 * LEAF_PFX));
}

static lpfx
entry_leaf_pfx(const entry *e)
{
    return leaf_pfx(key_pfx(entry_key(e), e->klen));
}

static probe
probe_of(const uint8_t *key, size_t klen)
{
    probe p = {key, klen, key_pfx(key, klen)};
    return p;
}

/* Order of the probe against a key with prefix pfx held by e. Prefixes
 * differ => keys differ the same way: the zero padding sorts a shorter key
 * first, as key_cmp does. */
static int
probe_cmp(const probe *p, uint64_t pfx, const entry *e)
{
    if (p->pfx != pfx)
        return p->pfx < pfx ? -1 : 1;
    return key_cmp(p->key, p->klen, entry_key(e), e->klen);
}

static void
set_sep(inner *x, unsigned i, entry *e)
{
    x->s[i].e = e;
    x->s[i].pfx = key_pfx(entry_key(e), e->klen);
}

/* Separator i of x becomes the entry in slot 0 of lf. */
static void
set_sep_first(inner *x, unsigned i, const leaf *lf)
{
#if LEAF_PFX == 8
    x->s[i].e = lf->e[0];
    x->s[i].pfx = lf->pfx[0];
#else
    set_sep(x, i, lf->e[0]);
#endif
}

/* --- search -------------------------------------------------------------- */

/* The child to descend into: the number of separators <= the key. *eq is set
 * when one of them equals it (then it is the last one counted). */
static unsigned
inner_search(const inner *x, const probe *p, bool *eq)
{
    unsigned lo = 0, hi = x->n;
    while (lo < hi) {
        unsigned mid = (lo + hi) / 2;
        int c = probe_cmp(p, x->s[mid].pfx, x->s[mid].e);
        if (c < 0) {
            hi = mid;
        } else {
            lo = mid + 1;
            *eq = *eq || c == 0;
        }
    }
    return lo;
}

/* First index in a[0..n) with a[i] >= v (> v when after), branch-free: the
 * prefixes of random keys make a branch on each halving a coin toss. */
static unsigned
pfx_bound(const lpfx *a, unsigned n, lpfx v, bool after)
{
    if (n == 0)
        return 0;
    const lpfx *b = a;
    while (n > 1) {
        unsigned half = n / 2;
        bool right = after ? b[half] <= v : b[half] < v;
        b = right ? b + half : b;
        n -= half;
    }
    bool past = after ? *b <= v : *b < v;
    return (unsigned) (b - a) + past;
}

/* The slots [*lo, *hi) of lf whose prefix equals want: those before are
 * smaller keys, those after greater. */
static void
pfx_run(const leaf *lf, lpfx want, unsigned *lo, unsigned *hi)
{
    unsigned n = lf->n, i, j;
    /* pfx[0] is on the line with n; a leaf of keys that all share their
     * first LEAF_PFX bytes starts its run there. */
    i = n > 0 && lf->pfx[0] >= want ? 0 : pfx_bound(lf->pfx, n, want, false);
    j = i;
    if (j < n && lf->pfx[j] == want) {
        j++;
        /* A run longer than one: often the whole rest of the leaf (keys
         * like user:0000...). */
        if (j < n && lf->pfx[j] == want)
            j = lf->pfx[n - 1] == want
                    ? n
                    : j + pfx_bound(&lf->pfx[j], n - j, want, true);
    }
    *lo = i;
    *hi = j;
}

/* First slot with key >= probe (> probe when after_eq); *found when the key
 * at that slot equals the probe. Slots outside the run of prefixes equal
 * to the probe's are ordered by prefix alone; only the run is searched by
 * key, which is where entries are dereferenced: for distinct random keys it
 * is 0 or 1 slots, for keys that share their first LEAF_PFX bytes it can be
 * the whole leaf. */
static unsigned
leaf_search(const leaf *lf, const probe *p, bool after_eq, bool *found)
{
    unsigned lo, hi;
    /* The leaf is likely cold: fetch all of pfx[] at once rather than one
     * line per halving. */
    for (size_t off = 0; off <= offsetof(leaf, e); off += 64)
        __builtin_prefetch((const char *) lf + off);
    pfx_run(lf, leaf_pfx(p->pfx), &lo, &hi);
    *found = false;
    while (lo < hi) {
        unsigned mid = (lo + hi) / 2;
        /* Each probe is a cache miss on an entry; start both possible next
         * probes now so the misses overlap instead of chaining. */
        __builtin_prefetch(lf->e[(lo + mid) / 2]);
        if ((mid + 1 + hi) / 2 < hi)
            __builtin_prefetch(lf->e[(mid + 1 + hi) / 2]);
        const entry *e = lf->e[mid];
        int c = key_cmp(p->key, p->klen, entry_key(e), e->klen);
        if (c < 0 || (c == 0 && !after_eq)) {
            hi = mid;
            *found = *found || c == 0;
        } else {
            lo = mid + 1;
        }
    }
    return lo;
}

static const leaf *
find_leaf(const kidx *k, const probe *p)
{
    const void *n = k->root;
    for (unsigned lv = k->height; lv > 0; lv--) {
        const inner *x = n;
        bool eq = false;
        n = x->child[inner_search(x, p, &eq)];
    }
    return n;
}

static void
descend(const kidx *k, const probe *p, path *out)
{
    void *n = k->root;
    out->eq_node = NULL;
    for (unsigned d = 0; d < k->height; d++) {
        inner *x = n;
        bool eq = false;
        unsigned i = inner_search(x, p, &eq);
        out->node[d] = x;
        out->idx[d] = i;
        if (eq) {
            out->eq_node = x;
            out->eq_slot = i - 1;
        }
        n = x->child[i];
    }
    out->lf = n;
}

/* --- node pool ----------------------------------------------------------- */

static leaf *
take_leaf(kidx *k)
{
    leaf *lf = k->pool_leaf;
    SH_ASSERT(lf != NULL); /* kidx_put without kidx_reserve */
    k->pool_leaf = lf->next;
    k->n_pool_leaf--;
    k->n_level[0]++;
    return lf;
}

static inner *
take_inner(kidx *k, unsigned level)
{
    inner *x = k->pool_inner;
    SH_ASSERT(x != NULL); /* kidx_put without kidx_reserve */
    k->pool_inner = x->child[0];
    k->n_pool_inner--;
    k->n_level[level]++;
    return x;
}

static void
push_leaf(kidx *k, leaf *lf)
{
    lf->next = k->pool_leaf;
    k->pool_leaf = lf;
    k->n_pool_leaf++;
}

static void
push_inner(kidx *k, inner *x)
{
    x->child[0] = k->pool_inner;
    k->pool_inner = x;
    k->n_pool_inner++;
}

/* A leaf leaving the tree is kept only as the spare one put needs: the
 * reserved leaves cover a put each whatever deletes do in between. */
static void
drop_leaf(kidx *k, leaf *lf)
{
    k->n_level[0]--;
    if (k->n_pool_leaf < 1)
        push_leaf(k, lf);
    else
        mem_free(lf);
}

/* An inner node leaving the tree stays pooled while a reservation is
 * outstanding: the merge that freed it can make a full node, which splits
 * sooner than inner_need assumed, and the freed node pays for that split.
 * Otherwise keep what one put needs. */
static void
drop_inner(kidx *k, inner *x, unsigned level)
{
    k->n_level[level]--;
    if (k->resv > 0 || k->n_pool_inner < k->height + 1u)
        push_inner(k, x);
    else
        mem_free(x);
}

/* Free pooled nodes beyond n_leaf leaves and n_inner inner nodes. */
static void
pool_trim(kidx *k, size_t n_leaf, size_t n_inner)
{
    while (k->n_pool_leaf > n_leaf) {
        leaf *lf = k->pool_leaf;
        k->pool_leaf = lf->next;
        k->n_pool_leaf--;
        mem_free(lf);
    }
    while (k->n_pool_inner > n_inner) {
        inner *x = k->pool_inner;
        k->pool_inner = x->child[0];
        k->n_pool_inner--;
        mem_free(x);
    }
}

/*
 * Inner nodes that n puts can need. A put splits at most one leaf, and each
 * split inserts one separator into the level above. A node can split after
 * one insert only if it was there at reserve time (n_level); a node made by
 * a split or evened out by a delete has INNER_SLACK free slots first. Merges
 * also make fuller nodes, but each one returns a node to the pool (drop_*).
 * Above the root, one new root per level plus its splits.
 */
static size_t
inner_need(const kidx *k, size_t n)
{
    size_t x = n, total = 0;
    for (unsigned lv = 1; x > 0 && lv <= MAX_HEIGHT; lv++) {
        size_t old = lv <= k->height ? k->n_level[lv] : 0;
        size_t splits = old + x / INNER_SLACK;
        if (lv > k->height)
            total++;
        x = splits < x ? splits : x;
        total += x;
    }
    return total;
}

/* --- leaf edits ---------------------------------------------------------- */

/* Move n slots (entry and prefix) from src[si] to dst[di]; the ranges may
 * overlap. Every edit of a leaf's slots goes through here or wide_*. */
static void
slots_move(leaf *dst, unsigned di, const leaf *src, unsigned si, unsigned n)
{
    memmove(&dst->e[di], &src->e[si], n * sizeof(entry *));
    memmove(&dst->pfx[di], &src->pfx[si], n * sizeof(lpfx));
}

static void
leaf_insert_at(leaf *lf, unsigned pos, entry *e, lpfx pfx)
{
    slots_move(lf, pos + 1, lf, pos, lf->n - pos);
    lf->e[pos] = e;
    lf->pfx[pos] = pfx;
    lf->n++;
}

static void
leaf_remove_at(leaf *lf, unsigned pos)
{
    slots_move(lf, pos, lf, pos + 1, lf->n - pos - 1);
    lf->n--;
}

/* w = the slots of a full leaf with (e, pfx) inserted at pos. */
static void
wide_gather(wide *w, const leaf *lf, unsigned pos, entry *e, lpfx pfx)
{
    memcpy(w->e, lf->e, pos * sizeof(entry *));
    memcpy(w->pfx, lf->pfx, pos * sizeof(lpfx));
    w->e[pos] = e;
    w->pfx[pos] = pfx;
    memcpy(&w->e[pos + 1], &lf->e[pos], (lf->n - pos) * sizeof(entry *));
    memcpy(&w->pfx[pos + 1], &lf->pfx[pos], (lf->n - pos) * sizeof(lpfx));
}

/* Copy n slots from w[wi] to dst[di]. */
static void
wide_put(leaf *dst, unsigned di, const wide *w, unsigned wi, unsigned n)
{
    memcpy(&dst->e[di], &w->e[wi], n * sizeof(entry *));
    memcpy(&dst->pfx[di], &w->pfx[wi], n * sizeof(lpfx));
}

/* The full leaf lf at child c of par takes the slots of w (its own and the
 * new one) by moving some into its left sibling l, which has room. */
static void
shift_left(inner *par, unsigned c, leaf *l, leaf *lf, const wide *w)
{
    unsigned k = (LEAF_CAP - l->n + 1) / 2;
    wide_put(l, l->n, w, 0, k);
    l->n += k;
    lf->n = LEAF_CAP + 1 - k;
    wide_put(lf, 0, w, k, lf->n);
    set_sep_first(par, c - 1, lf);
}

/* As shift_left, into the right sibling r. */
static void
shift_right(inner *par, unsigned c, leaf *lf, leaf *r, const wide *w)
{
    unsigned k = (LEAF_CAP - r->n + 1) / 2;
    slots_move(r, k, r, 0, r->n);
    wide_put(r, 0, w, LEAF_CAP + 1 - k, k);
    r->n += k;
    lf->n = LEAF_CAP + 1 - k;
    wide_put(lf, 0, w, 0, lf->n);
    set_sep_first(par, c, r);
}

/* Spread w, the full leaf p->lf plus the new slot, over p->lf and a sibling
 * with room under the same parent; false when there is none. */
static bool
leaf_shift(const kidx *k, const path *p, const wide *w)
{
    if (k->height == 0)
        return false;
    inner *par = p->node[k->height - 1];
    unsigned c = p->idx[k->height - 1];
    leaf *l = c > 0 ? par->child[c - 1] : NULL;
    leaf *r = c < par->n ? par->child[c + 1] : NULL;
    if (l != NULL && l->n < LEAF_CAP) {
        shift_left(par, c, l, p->lf, w);
        return true;
    }
    if (r != NULL && r->n < LEAF_CAP) {
        shift_right(par, c, p->lf, r, w);
        return true;
    }
    return false;
}

/* --- inner edits --------------------------------------------------------- */

/* Insert separator e with its right-hand child at slot i (after child i). */
static void
inner_insert_at(inner *x, unsigned i, entry *e, void *right)
{
    memmove(&x->s[i + 1], &x->s[i], (x->n - i) * sizeof(sep));
    memmove(&x->child[i + 2], &x->child[i + 1], (x->n - i) * sizeof(void *));
    set_sep(x, i, e);
    x->child[i + 1] = right;
    x->n++;
}

/* Remove separator i and the child to its right. */
static void
inner_remove_at(inner *x, unsigned i)
{
    memmove(&x->s[i], &x->s[i + 1], (x->n - i - 1) * sizeof(sep));
    memmove(&x->child[i + 1], &x->child[i + 2],
            (x->n - i - 1) * sizeof(void *));
    x->n--;
}

/* Split the full node x while inserting (*e, *right) at slot i; on return
 * *e and *right are the separator and node to insert one level up. */
static void
inner_split(kidx *k, inner *x, unsigned level, unsigned i, entry **e,
            void **right)
{
    sep ts[INNER_CAP + 1];
    void *tc[INNER_CAP + 2];
    inner *r = take_inner(k, level);
    memcpy(ts, x->s, i * sizeof(sep));
    ts[i].e = *e;
    ts[i].pfx = key_pfx(entry_key(*e), (*e)->klen);
    memcpy(&ts[i + 1], &x->s[i], (INNER_CAP - i) * sizeof(sep));
    memcpy(tc, x->child, (i + 1) * sizeof(void *));
    tc[i + 1] = *right;
    memcpy(&tc[i + 2], &x->child[i + 1], (INNER_CAP - i) * sizeof(void *));

    unsigned m = INNER_SPLIT;
    x->n = m;
    memcpy(x->s, ts, m * sizeof(sep));
    memcpy(x->child, tc, (m + 1) * sizeof(void *));
    r->n = INNER_CAP - m;
    memcpy(r->s, &ts[m + 1], r->n * sizeof(sep));
    memcpy(r->child, &tc[m + 1], (r->n + 1) * sizeof(void *));
    *e = ts[m].e;
    *right = r;
}

static void
grow_root(kidx *k, entry *e, void *right)
{
    SH_ASSERT(k->height < MAX_HEIGHT);
    inner *x = take_inner(k, k->height + 1);
    x->n = 1;
    set_sep(x, 0, e);
    x->child[0] = k->root;
    x->child[1] = right;
    k->root = x;
    k->height++;
}

/* Insert separator e and node right next to the node at depth d of p,
 * splitting up the path as needed. */
static void
insert_up(kidx *k, const path *p, unsigned d, entry *e, void *right)
{
    while (d > 0) {
        inner *x = p->node[d - 1];
        unsigned i = p->idx[d - 1];
        if (x->n < INNER_CAP) {
            inner_insert_at(x, i, e, right);
            return;
        }
        inner_split(k, x, k->height - d + 1, i, &e, &right);
        d--;
    }
    grow_root(k, e, right);
}

/* Split the full leaf p->lf into itself and a new right sibling, taking w
 * (its slots with the new one at pos). An insert past the end of the last
 * leaf (or before the first) leaves the old entries together, so sorted
 * loads make full leaves. */
static void
leaf_split(kidx *k, const path *p, unsigned pos, const wide *w)
{
    leaf *lf = p->lf, *r = take_leaf(k);
    unsigned s = (LEAF_CAP + 1) / 2;
    if (pos == LEAF_CAP && lf->next == NULL)
        s = LEAF_CAP;
    else if (pos == 0)
        s = 1;
    lf->n = s;
    wide_put(lf, 0, w, 0, s);
    r->n = LEAF_CAP + 1 - s;
    wide_put(r, 0, w, s, r->n);
    r->next = lf->next;
    lf->next = r;
    insert_up(k, p, k->height, r->e[0], r);
}

/* --- delete rebalancing -------------------------------------------------- */

/* After the key p->eq_node pointed at left the leaf, point it at the
 * successor: the smallest key left under that separator's right child. */
static void
fix_eq_sep(const kidx *k, const path *p)
{
    const leaf *lf = p->lf;
    if (lf->n > 0) {
        set_sep_first(p->eq_node, p->eq_slot, lf);
        return;
    }
    /* Only the last leaf can be down to one entry (after an append split),
     * and it is never a first child: the separator is its parent's, and the
     * merge with its left sibling removes it. */
    SH_ASSERT(p->eq_node == p->node[k->height - 1]);
}

/* Even out two adjacent leaves; r's first entry becomes the separator. */
static void
leaf_balance(inner *par, unsigned li, leaf *l, leaf *r)
{
    unsigned want = (l->n + r->n) / 2;
    if (l->n < want) {
        unsigned d = want - l->n;
        slots_move(l, l->n, r, 0, d);
        slots_move(r, 0, r, d, r->n - d);
        l->n += d;
        r->n -= d;
    } else {
        unsigned d = l->n - want;
        slots_move(r, d, r, 0, r->n);
        slots_move(r, 0, l, want, d);
        l->n -= d;
        r->n += d;
    }
    set_sep_first(par, li, r);
}

static void inner_rebalance(kidx *k, const path *p, unsigned d);

/* The leaf p->lf fell under LEAF_MIN: merge it with a sibling or even the
 * two out. An empty leaf always merges, with its left sibling if any. */
static void
leaf_rebalance(kidx *k, const path *p)
{
    unsigned d = k->height - 1;
    inner *par = p->node[d];
    unsigned li = p->idx[d] > 0 ? p->idx[d] - 1 : 0;
    leaf *l = par->child[li], *r = par->child[li + 1];
    if (l->n + r->n > LEAF_CAP) {
        leaf_balance(par, li, l, r);
        return;
    }
    slots_move(l, l->n, r, 0, r->n);
    l->n += r->n;
    l->next = r->next;
    inner_remove_at(par, li);
    drop_leaf(k, r);
    inner_rebalance(k, p, d);
}

/* Move separators from r to l through the parent separator g->s[li]. */
static void
inner_take_right(inner *g, unsigned li, inner *l, inner *r, unsigned d)
{
    l->s[l->n] = g->s[li];
    memcpy(&l->s[l->n + 1], r->s, (d - 1) * sizeof(sep));
    memcpy(&l->child[l->n + 1], r->child, d * sizeof(void *));
    g->s[li] = r->s[d - 1];
    memmove(r->s, &r->s[d], (r->n - d) * sizeof(sep));
    memmove(r->child, &r->child[d], (r->n - d + 1) * sizeof(void *));
    l->n += d;
    r->n -= d;
}

/* Move separators from l to r through the parent separator g->s[li]. */
static void
inner_take_left(inner *g, unsigned li, inner *l, inner *r, unsigned d)
{
    memmove(&r->s[d], r->s, r->n * sizeof(sep));
    memmove(&r->child[d], r->child, (r->n + 1) * sizeof(void *));
    r->s[d - 1] = g->s[li];
    memcpy(r->s, &l->s[l->n - d + 1], (d - 1) * sizeof(sep));
    memcpy(r->child, &l->child[l->n - d + 1], d * sizeof(void *));
    g->s[li] = l->s[l->n - d];
    l->n -= d;
    r->n += d;
}

/* Append the parent separator g->s[li] and all of r to l. */
static void
inner_merge(const inner *g, unsigned li, inner *l, const inner *r)
{
    l->s[l->n] = g->s[li];
    memcpy(&l->s[l->n + 1], r->s, r->n * sizeof(sep));
    memcpy(&l->child[l->n + 1], r->child, (r->n + 1) * sizeof(void *));
    l->n += r->n + 1;
}

/* The root has one child, which becomes the root. Puts need one spare inner
 * node per level, so a lower tree keeps fewer. */
static void
collapse_root(kidx *k)
{
    inner *x = k->root;
    k->root = x->child[0];
    k->height--;
    drop_inner(k, x, k->height + 1);
    if (k->resv == 0)
        pool_trim(k, 1, k->height + 1u);
}

/* The inner node at depth d of p lost a separator. */
static void
inner_rebalance(kidx *k, const path *p, unsigned d)
{
    inner *x = p->node[d];
    if (d == 0) {
        if (x->n == 0)
            collapse_root(k);
        return;
    }
    if (x->n >= INNER_MIN)
        return;
    inner *g = p->node[d - 1];
    unsigned li = p->idx[d - 1] > 0 ? p->idx[d - 1] - 1 : 0;
    inner *l = g->child[li], *r = g->child[li + 1];
    unsigned want = (l->n + r->n) / 2;
    if (l->n + r->n + 1 > INNER_CAP) {
        if (l->n < want)
            inner_take_right(g, li, l, r, want - l->n);
        else
            inner_take_left(g, li, l, r, l->n - want);
        return;
    }
    inner_merge(g, li, l, r);
    inner_remove_at(g, li);
    drop_inner(k, r, k->height - d);
    inner_rebalance(k, p, d - 1);
}

/* --- public -------------------------------------------------------------- */

shoal_err
kidx_open(kidx **out)
{
    *out = NULL;
    kidx *k = mem_calloc(1, sizeof(*k));
    leaf *root = mem_alloc(sizeof(leaf));
    if (k == NULL || root == NULL) {
        mem_free(k);
        mem_free(root);
        return SHOAL_ENOMEM;
    }
    root->next = NULL;
    root->n = 0;
    k->root = root;
    k->n_level[0] = 1;
    *out = k;
    return SHOAL_OK;
}

static void
free_subtree(void *n, unsigned level, void (*free_entry)(void *, entry *),
             void *arg)
{
    if (level == 0) {
        leaf *lf = n;
        for (unsigned i = 0; free_entry != NULL && i < lf->n; i++)
            free_entry(arg, lf->e[i]);
        mem_free(lf);
        return;
    }
    inner *x = n;
    for (unsigned i = 0; i <= x->n; i++)
        free_subtree(x->child[i], level - 1, free_entry, arg);
    mem_free(x);
}

void
kidx_close(kidx *k, void (*free_entry)(void *arg, entry *e), void *arg)
{
    if (k == NULL)
        return;
    free_subtree(k->root, k->height, free_entry, arg);
    pool_trim(k, 0, 0);
    mem_free(k);
}

entry *
kidx_get(const kidx *k, const uint8_t *key, size_t klen)
{
    probe p = probe_of(key, klen);
    const leaf *lf = find_leaf(k, &p);
    bool found;
    unsigned pos = leaf_search(lf, &p, false, &found);
    return found ? lf->e[pos] : NULL;
}

shoal_err
kidx_reserve(kidx *k)
{
    return kidx_reserve_n(k, 1);
}

shoal_err
kidx_reserve_n(kidx *k, size_t n)
{
    size_t n_inner = inner_need(k, n);
    while (k->n_pool_leaf < n) {
        leaf *lf = mem_alloc(sizeof(leaf));
        if (lf == NULL)
            return SHOAL_ENOMEM;
        push_leaf(k, lf);
    }
    while (k->n_pool_inner < n_inner) {
        inner *x = mem_alloc(sizeof(inner));
        if (x == NULL)
            return SHOAL_ENOMEM;
        push_inner(k, x);
    }
    pool_trim(k, n > 0 ? n : 1, n_inner > k->height ? n_inner : k->height + 1u);
    k->resv = n;
    return SHOAL_OK;
}

entry *
kidx_put(kidx *k, entry *e)
{
    probe pr = probe_of(entry_key(e), e->klen);
    path p;
    bool found;
    descend(k, &pr, &p);
    unsigned pos = leaf_search(p.lf, &pr, false, &found);
    if (found) { /* same key, so pfx[pos] and the separator's pfx hold */
        entry *old = p.lf->e[pos];
        p.lf->e[pos] = e;
        if (p.eq_node != NULL)
            p.eq_node->s[p.eq_slot].e = e;
        return old;
    }
    k->count++;
    if (p.lf->n < LEAF_CAP) {
        leaf_insert_at(p.lf, pos, e, leaf_pfx(pr.pfx));
    } else {
        wide w;
        wide_gather(&w, p.lf, pos, e, leaf_pfx(pr.pfx));
        if (!leaf_shift(k, &p, &w))
            leaf_split(k, &p, pos, &w);
    }
    if (k->resv > 0 && --k->resv == 0)
        pool_trim(k, 1, k->height + 1u);
    return NULL;
}

entry *
kidx_del(kidx *k, const uint8_t *key, size_t klen)
{
    probe pr = probe_of(key, klen);
    path p;
    bool found;
    descend(k, &pr, &p);
    unsigned pos = leaf_search(p.lf, &pr, false, &found);
    if (!found)
        return NULL;
    entry *old = p.lf->e[pos];
    leaf_remove_at(p.lf, pos);
    k->count--;
    if (p.eq_node != NULL)
        fix_eq_sep(k, &p);
    if (k->height > 0 && p.lf->n < LEAF_MIN)
        leaf_rebalance(k, &p);
    return old;
}

size_t
kidx_count(const kidx *k)
{
    return k->count;
}

size_t
kidx_mem_bytes(const kidx *k)
{
    size_t n_inner = k->n_pool_inner;
    for (unsigned lv = 1; lv <= k->height; lv++)
        n_inner += k->n_level[lv];
    return sizeof(*k) + (k->n_level[0] + k->n_pool_leaf) * sizeof(leaf) +
           n_inner * sizeof(inner);
}

void
kidx_seek(const kidx *k, kidx_iter *it, const uint8_t *key, size_t klen,
          bool exclusive)
{
    const leaf *lf;
    unsigned pos = 0;
    if (key == NULL) {
        const void *n = k->root;
        for (unsigned lv = k->height; lv > 0; lv--)
            n = ((const inner *) n)->child[0];
        lf = n;
    } else {
        probe p = probe_of(key, klen);
        bool found;
        lf = find_leaf(k, &p);
        pos = leaf_search(lf, &p, exclusive, &found);
    }
    if (pos >= lf->n) {
        lf = lf->next;
        pos = 0;
    }
    it->node = lf;
    it->pos = pos;
}

entry *
kidx_next(kidx_iter *it)
{
    const leaf *lf = it->node;
    if (lf == NULL)
        return NULL;
    entry *e = lf->e[it->pos];
    if (++it->pos >= lf->n) {
        it->node = lf->next;
        it->pos = 0;
    }
    return e;
}

/* --- invariant check ----------------------------------------------------- */

typedef struct check {
    bool in_chain;                  /* a leaf was seen: next_leaf is set */
    const leaf *next_leaf;          /* the leaf the chain says comes next */
    const entry *last;              /* the greatest entry seen so far */
    size_t count;                   /* entries seen */
    size_t n_level[MAX_HEIGHT + 1]; /* nodes seen per level */
} check;

static const char *
check_leaf(check *c, const leaf *lf, bool is_root)
{
    if (lf->n > LEAF_CAP || (lf->n == 0 && !is_root))
        return "leaf entry count out of range";
    if (c->in_chain && c->next_leaf != lf)
        return "leaf chain skips or reorders a leaf";
    for (unsigned i = 0; i < lf->n; i++) {
        const entry *e = lf->e[i];
        if (lf->pfx[i] != entry_leaf_pfx(e))
            return "leaf prefix differs from its entry's key";
        if (c->last != NULL && key_cmp(entry_key(c->last), c->last->klen,
                                       entry_key(e), e->klen) >= 0)
            return "keys not strictly ascending";
        c->last = e;
    }
    c->count += lf->n;
    c->in_chain = true;
    c->next_leaf = lf->next;
    return NULL;
}

/* Check the subtree at n (of the given level); *min is its first entry. */
static const char *
check_node(check *c, const void *n, unsigned level, bool is_root,
           const entry **min)
{
    c->n_level[level]++;
    if (level == 0) {
        const leaf *lf = n;
        *min = lf->n > 0 ? lf->e[0] : NULL;
        return check_leaf(c, lf, is_root);
    }
    const inner *x = n;
    if (x->n < 1 || x->n > INNER_CAP)
        return "inner separator count out of range";
    const char *err = check_node(c, x->child[0], level - 1, false, min);
    for (unsigned i = 0; err == NULL && i < x->n; i++) {
        const entry *m;
        err = check_node(c, x->child[i + 1], level - 1, false, &m);
        if (err == NULL && x->s[i].e != m)
            err = "separator is not the first entry of its right child";
        if (err == NULL && x->s[i].pfx != key_pfx(entry_key(m), m->klen))
            err = "separator prefix differs from its entry's key";
    }
    return err;
}

const char *
kidx_check(const kidx *k)
{
    check c;
    const entry *min;
    memset(&c, 0, sizeof(c));
    const char *err = check_node(&c, k->root, k->height, true, &min);
    if (err != NULL)
        return err;
    if (c.next_leaf != NULL)
        return "last leaf has a next leaf";
    if (c.count != k->count)
        return "entry count differs from the tree";
    for (unsigned lv = 0; lv <= MAX_HEIGHT; lv++)
        if (c.n_level[lv] != k->n_level[lv])
            return "node count per level differs from the tree";
    size_t n_leaf = 0, n_inner = 0;
    for (const leaf *lf = k->pool_leaf; lf != NULL; lf = lf->next)
        n_leaf++;
    for (const inner *x = k->pool_inner; x != NULL; x = x->child[0])
        n_inner++;
    if (n_leaf != k->n_pool_leaf || n_inner != k->n_pool_inner)
        return "pool counts differ from the pool lists";
    return NULL;
}
