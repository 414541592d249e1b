/*
 * test_kidx.c -- the shard index against a sorted array of entry pointers:
 * random put/replace/del/get/seek/scan with awkward keys (zero bytes,
 * prefixes of each other, equal first 4 or 8 bytes so the cached prefixes
 * tie, "user:00001234"-style heads, 1..1024 bytes, expiring entries),
 * sorted loads, mass deletes and refills, memory per key, and allocation
 * failure in kidx_open / kidx_reserve_n. kidx_check verifies the tree's
 * invariants (each leaf slot's cached prefix equals its entry's key prefix,
 * separators, order, counts) wherever the contents are compared. Retired
 * entries are freed at once, so a separator left pointing at one is an ASan
 * error. Replay a run with SHOAL_SEED; SHOAL_TEST_LONG=1 runs longer.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "proto/mem.h"
#include "storage/kidx.h"
#include "tests/support/testutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define KEY_MAX 1024

/* KIDX_LEAF_CAP in kidx.c: sorted loads fill leaves to exactly this. */
#define LEAF_CAP 169

/* The reference: entry pointers sorted by key. */
typedef struct ref {
    entry **e;
    size_t n, cap;
} ref;

typedef struct ctx {
    kidx *k;
    ref r;
    uint64_t rng;
    uint64_t version; /* stamped on each new entry */
} ctx;

static entry *
mk_entry(uint64_t version, const uint8_t *key, size_t klen, uint64_t exp)
{
    uint8_t val[4] = {1, 2, 3, 4};
    size_t vlen = version % 5;
    entry *e = mem_alloc(entry_size(klen, vlen, exp));
    assert_non_null(e);
    entry_fill(e, version, key, klen, val, vlen, exp);
    return e;
}

static void
free_entry(void *arg, entry *e)
{
    if (arg != NULL)
        (*(size_t *) arg)++;
    mem_free(e);
}

/* --- reference ----------------------------------------------------------- */

/* First index with key >= (> when after) the given key. */
static size_t
ref_bound(const ref *r, const uint8_t *key, size_t klen, bool after)
{
    size_t lo = 0, hi = r->n;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        const entry *e = r->e[mid];
        int c = key_cmp(entry_key(e), e->klen, key, klen);
        if (c < 0 || (after && c == 0))
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

static entry *
ref_find(const ref *r, const uint8_t *key, size_t klen)
{
    size_t i = ref_bound(r, key, klen, false);
    if (i < r->n && key_cmp(entry_key(r->e[i]), r->e[i]->klen, key, klen) == 0)
        return r->e[i];
    return NULL;
}

static entry *
ref_put(ref *r, entry *e)
{
    size_t i = ref_bound(r, entry_key(e), e->klen, false);
    if (i < r->n && key_cmp(entry_key(r->e[i]), r->e[i]->klen, entry_key(e),
                            e->klen) == 0) {
        entry *old = r->e[i];
        r->e[i] = e;
        return old;
    }
    if (r->n == r->cap) {
        r->cap = r->cap ? r->cap * 2 : 1024;
        r->e = realloc(r->e, r->cap * sizeof(entry *));
        assert_non_null(r->e);
    }
    memmove(&r->e[i + 1], &r->e[i], (r->n - i) * sizeof(entry *));
    r->e[i] = e;
    r->n++;
    return NULL;
}

static entry *
ref_del(ref *r, const uint8_t *key, size_t klen)
{
    size_t i = ref_bound(r, key, klen, false);
    if (i >= r->n || key_cmp(entry_key(r->e[i]), r->e[i]->klen, key, klen))
        return NULL;
    entry *old = r->e[i];
    memmove(&r->e[i], &r->e[i + 1], (r->n - i - 1) * sizeof(entry *));
    r->n--;
    return old;
}

static int
entry_qcmp(const void *a, const void *b)
{
    const entry *x = *(entry *const *) a, *y = *(entry *const *) b;
    return key_cmp(entry_key(x), x->klen, entry_key(y), y->klen);
}

/* --- keys ---------------------------------------------------------------- */

/* A head of 3, 4, 5, 7, 8 or 9 bytes (around both cached prefix widths)
 * and 0..3 bytes from the alphabet: "abcd" vs "abcd\0" vs "abcd\0\1" tie on
 * their zero-padded prefixes and only the full compare orders them. */
static size_t
gen_head_key(uint64_t *rng, const uint8_t *alpha, uint8_t *buf)
{
    static const size_t heads[] = {3, 4, 5, 7, 8, 9};
    uint64_t r = tu_rand(rng);
    size_t len = heads[r % 6], extra = (r >> 8) % 4;
    memcpy(buf, "abcdefghi", len);
    for (size_t i = 0; i < extra; i++)
        buf[len + i] = alpha[tu_rand(rng) % 4];
    return len + extra;
}

/* "user:" and a decimal number, zero-padded to 8 digits (all such keys
 * share their first 8 bytes, so whole leaves tie) or not ("user:12" sorts
 * between "user:1" and "user:2"). */
static size_t
gen_user_key(uint64_t *rng, bool padded, uint8_t *buf)
{
    unsigned v = (unsigned) (tu_rand(rng) % 50000);
    int n = snprintf((char *) buf, 32, padded ? "user:%08u" : "user:%u", v);
    assert_true(n > 0 && n < 32);
    return (size_t) n;
}

/* Keys from a few shapes that stress ordering: tiny alphabets with zero
 * bytes (prefixes of each other, "a" vs "a\0"), a shared 12-byte head (ties
 * on the cached 8-byte prefix), heads around the prefix widths, user:NNN,
 * 16 random bytes, and long keys. */
static size_t
gen_key(uint64_t *rng, uint8_t *buf)
{
    static const uint8_t alpha[] = {0x00, 0x01, 0x7f, 0xff};
    uint64_t r = tu_rand(rng);
    size_t len;
    switch (r % 16) {
    case 0:
    case 1:
    case 2:
    case 3:
        len = 1 + (r >> 8) % 5;
        for (size_t i = 0; i < len; i++)
            buf[i] = alpha[tu_rand(rng) % 4];
        return len;
    case 4:
    case 5:
        len = 12 + (r >> 8) % 4;
        memset(buf, 'p', 12);
        for (size_t i = 12; i < len; i++)
            buf[i] = alpha[tu_rand(rng) % 4];
        return len;
    case 6:
    case 7:
        return gen_head_key(rng, alpha, buf);
    case 8:
    case 9:
        return gen_user_key(rng, true, buf);
    case 10:
        return gen_user_key(rng, false, buf);
    case 11:
    case 12:
    case 13:
        len = 16;
        break;
    default:
        len = 1 + (r >> 8) % KEY_MAX;
        break;
    }
    for (size_t i = 0; i < len; i++)
        buf[i] = (uint8_t) tu_rand(rng);
    if (len > 1)
        buf[0] = alpha[r % 3]; /* share first bytes with the short keys */
    return len;
}

/* Either a key in the reference (so ops hit) or a fresh one. */
static size_t
pick_key(ctx *c, uint8_t *buf)
{
    if (c->r.n > 0 && tu_rand(&c->rng) % 2 == 0) {
        const entry *e = c->r.e[tu_rand(&c->rng) % c->r.n];
        memcpy(buf, entry_key(e), e->klen);
        return e->klen;
    }
    return gen_key(&c->rng, buf);
}

/* --- checks -------------------------------------------------------------- */

static void
check_seek(const ctx *c, const uint8_t *key, size_t klen, bool excl)
{
    kidx_iter it;
    size_t i = key == NULL ? 0 : ref_bound(&c->r, key, klen, excl);
    kidx_seek(c->k, &it, key, klen, excl);
    for (unsigned j = 0; j < 4; j++, i++) {
        entry *got = kidx_next(&it);
        assert_ptr_equal(got, i < c->r.n ? c->r.e[i] : NULL);
        if (got == NULL)
            break;
    }
}

static void
check_tree(const ctx *c)
{
    const char *err = kidx_check(c->k);
    if (err != NULL)
        fail_msg("kidx_check: %s", err);
}

/* The whole index equals the reference, in order, and its invariants hold.
 */
static void
check_all(const ctx *c)
{
    kidx_iter it;
    check_tree(c);
    assert_int_equal(kidx_count(c->k), c->r.n);
    kidx_seek(c->k, &it, NULL, 0, false);
    for (size_t i = 0; i < c->r.n; i++)
        assert_ptr_equal(kidx_next(&it), c->r.e[i]);
    assert_null(kidx_next(&it));
    assert_null(kidx_next(&it));
    for (size_t i = 0; i < c->r.n; i += 1 + c->r.n / 512) {
        const entry *e = c->r.e[i];
        assert_ptr_equal(kidx_get(c->k, entry_key(e), e->klen), e);
    }
}

/* --- operations ---------------------------------------------------------- */

static void
ctx_open(ctx *c, const char *what)
{
    memset(c, 0, sizeof(*c));
    c->rng = tu_seed(what);
    assert_int_equal(kidx_open(&c->k), SHOAL_OK);
}

static void
ctx_close(ctx *c)
{
    size_t n = 0;
    size_t want = kidx_count(c->k);
    kidx_close(c->k, free_entry, &n);
    assert_int_equal(n, want);
    free(c->r.e);
}

/* Put without reserving (the caller did). */
static void
do_put_reserved(ctx *c, const uint8_t *key, size_t klen)
{
    uint64_t exp = tu_rand(&c->rng) % 8 == 0 ? 1234567 : 0;
    entry *e = mk_entry(++c->version, key, klen, exp);
    entry *want = ref_put(&c->r, e);
    assert_ptr_equal(kidx_put(c->k, e), want);
    mem_free(want);
}

static void
do_put(ctx *c, const uint8_t *key, size_t klen)
{
    assert_int_equal(kidx_reserve(c->k), SHOAL_OK);
    do_put_reserved(c, key, klen);
}

static void
do_del(ctx *c, const uint8_t *key, size_t klen)
{
    entry *want = ref_del(&c->r, key, klen);
    assert_ptr_equal(kidx_del(c->k, key, klen), want);
    mem_free(want);
}

/* A batch: reserve for n puts, then n puts mixed with deletes. */
static void
do_batch(ctx *c, size_t n)
{
    uint8_t key[KEY_MAX];
    assert_int_equal(kidx_reserve_n(c->k, n), SHOAL_OK);
    for (size_t i = 0; i < n; i++) {
        if (tu_rand(&c->rng) % 3 == 0) {
            size_t klen = pick_key(c, key);
            do_del(c, key, klen);
        }
        size_t klen = gen_key(&c->rng, key);
        do_put_reserved(c, key, klen);
    }
}

/* One random operation; puts outnumber deletes while the index is smaller
 * than target and the other way round above it. */
static void
random_op(ctx *c, size_t target)
{
    uint8_t key[KEY_MAX];
    size_t klen = pick_key(c, key);
    uint64_t r = tu_rand(&c->rng) % 100;
    uint64_t put = c->r.n < target ? 65 : 20;
    if (r < put)
        do_put(c, key, klen);
    else if (r < 75)
        do_del(c, key, klen);
    else if (r < 82)
        assert_ptr_equal(kidx_get(c->k, key, klen), ref_find(&c->r, key, klen));
    else if (r < 98)
        check_seek(c, key, klen, r % 2 == 0);
    else if (r < 99)
        check_seek(c, NULL, 0, false);
    else if (tu_rand(&c->rng) % 8 == 0)
        do_batch(c, 1 + tu_rand(&c->rng) % 200);
}

/* --- tests --------------------------------------------------------------- */

static void
test_kidx_empty(void **state)
{
    (void) state;
    ctx c;
    kidx_iter it;
    ctx_open(&c, "kidx_empty");
    assert_null(kidx_get(c.k, (const uint8_t *) "a", 1));
    assert_null(kidx_del(c.k, (const uint8_t *) "a", 1));
    kidx_seek(c.k, &it, NULL, 0, false);
    assert_null(kidx_next(&it));
    kidx_seek(c.k, &it, (const uint8_t *) "a", 1, true);
    assert_null(kidx_next(&it));
    assert_int_equal(kidx_count(c.k), 0);
    assert_true(kidx_mem_bytes(c.k) > 0);
    ctx_close(&c);
    kidx_close(NULL, NULL, NULL);
}

/* Each shape of key, inserted in random order, sorts as key_cmp says. */
static void
test_kidx_key_shapes(void **state)
{
    (void) state;
    /* Length from the literal, so embedded zero bytes count. */
#define K(lit)                                   \
    {                                            \
        (const uint8_t *) (lit), sizeof(lit) - 1 \
    }
    static const struct {
        const uint8_t *key;
        size_t len;
    } keys[] = {
        K("a"),           K("a\0"),
        K("a\0\0"),       K("a\0\1"),
        K("ab"),          K("b"),
        K("\0"),          K("\0\0"),
        K("\xff"),        K("\xff\xff"),
        K("abcdefgh"),    K("abcdefgh\0"),
        K("abcdefghi"),   K("abcdefg"),
        K("abcdefg\xff"), K("abcdefgg\xff\xff\xff"),
        K("abc"),         K("abc\0"),
        K("abc\0\1"),     K("abcd"),
        K("abcd\0"),      K("abcd\1"),
        K("abcdefg\0"),   K("abcdefg\0\0"),
        K("user:1"),      K("user:10"),
        K("user:2"),      K("user:00001234"),
        K("user:0000"),   K("user:00001235"),
    };
#undef K
    const size_t n_keys = sizeof(keys) / sizeof(keys[0]);
    ctx c;
    uint8_t big[KEY_MAX];
    ctx_open(&c, "kidx_key_shapes");
    for (size_t round = 0; round < 3; round++) {
        for (size_t i = 0; i < n_keys; i++) {
            size_t j = tu_rand(&c.rng) % n_keys;
            do_put(&c, keys[j].key, keys[j].len);
            do_put(&c, keys[i].key, keys[i].len);
        }
        for (size_t len = 1; len <= KEY_MAX; len += 1 + len / 3) {
            memset(big, 'a', len);
            big[len - 1] = (uint8_t) (round * 7);
            do_put(&c, big, len);
        }
        check_all(&c);
        for (size_t i = 0; i < n_keys; i++) {
            check_seek(&c, keys[i].key, keys[i].len, false);
            check_seek(&c, keys[i].key, keys[i].len, true);
        }
    }
    ctx_close(&c);
}

static void
test_kidx_random_differential(void **state)
{
    (void) state;
    ctx c;
    static const size_t targets[] = {0, 50, 2000, 5000, 30000};
    size_t ops = tu_long() ? 5000000 : 800000;
    size_t target = 0, max_n = 0;
    ctx_open(&c, "kidx_random_differential");
    for (size_t i = 0; i < ops; i++) {
        if (i % 100000 == 0)
            target = targets[tu_rand(&c.rng) % 5];
        random_op(&c, target);
        if (i % 4096 == 0)
            check_all(&c);
        max_n = c.r.n > max_n ? c.r.n : max_n;
    }
    print_message("# up to %zu keys\n", max_n);
    check_all(&c);
    ctx_close(&c);
}

/* Keys that tie on their cached prefixes, many to a leaf: "user:%08u"
 * (the first 8 bytes of every key are equal, so whole leaves tie), keys
 * shorter than the prefix, and runs of trailing zero bytes that zero padding
 * cannot tell apart ("a" < "a\0" < "a\0\0" ...). Inserted in random
 * order, then every key is found and seeks land between them; half are
 * deleted and the rest checked again. */
static void
test_kidx_prefix_ties(void **state)
{
    (void) state;
    ctx c;
    uint8_t key[KEY_MAX + 1];
    size_t n = tu_long() ? 200000 : 20000;
    ctx_open(&c, "kidx_prefix_ties");
    for (size_t i = 0; i < n; i++) {
        uint64_t r = tu_rand(&c.rng);
        size_t klen;
        if (r % 4 == 3) {
            /* A head of 1..9 bytes and 0..12 zero bytes. */
            size_t head = 1 + (r >> 8) % 9, zeros = (r >> 16) % 13;
            memcpy(key, "abcdefghi", head);
            memset(key + head, 0, zeros);
            key[head - 1] = (uint8_t) ('a' + (r >> 24) % 3);
            klen = head + zeros;
        } else {
            klen = (size_t) snprintf((char *) key, sizeof(key), "user:%08u",
                                     (unsigned) ((r >> 8) % (4 * n)));
        }
        do_put(&c, key, klen);
        if (i % 2048 == 0)
            check_tree(&c);
    }
    check_all(&c);
    for (size_t i = 0; i < c.r.n; i++) {
        const entry *e = c.r.e[i];
        assert_ptr_equal(kidx_get(c.k, entry_key(e), e->klen), e);
        memcpy(key, entry_key(e), e->klen);
        check_seek(&c, key, e->klen, i % 2 == 0);
        /* The next possible key: absent unless a zero run continues. */
        key[e->klen] = 0;
        assert_ptr_equal(kidx_get(c.k, key, e->klen + 1U),
                         ref_find(&c.r, key, e->klen + 1U));
        check_seek(&c, key, e->klen + 1U, false);
    }
    for (size_t i = 0; i < n / 2; i++) {
        size_t klen = pick_key(&c, key);
        do_del(&c, key, klen);
    }
    check_all(&c);
    ctx_close(&c);
}

/* 16-byte big-endian counter keys, optionally scrambled. */
static void
num_key(uint64_t i, bool scramble, uint8_t *key)
{
    uint64_t v = scramble ? tu_rand(&i) : i;
    for (unsigned b = 0; b < 8; b++) {
        key[b] = (uint8_t) (v >> (56 - 8 * b));
        key[8 + b] = (uint8_t) (i >> (56 - 8 * b));
    }
}

/* Puts of keys known to be new (no reference lookup per key, so big fills
 * stay fast); the reference takes them at the end, sorted. */
static void
bulk_put(ctx *c, entry **fresh, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        assert_null(ref_find(&c->r, entry_key(fresh[i]), fresh[i]->klen));
        assert_int_equal(kidx_reserve(c->k), SHOAL_OK);
        assert_null(kidx_put(c->k, fresh[i]));
    }
    qsort(fresh, n, sizeof(entry *), entry_qcmp);
    entry **all = malloc((c->r.n + n) * sizeof(entry *));
    assert_non_null(all);
    size_t i = 0, j = 0, o = 0;
    while (i < c->r.n || j < n) {
        bool take_ref =
            j == n || (i < c->r.n && entry_qcmp(&c->r.e[i], &fresh[j]) < 0);
        all[o++] = take_ref ? c->r.e[i++] : fresh[j++];
    }
    free(c->r.e);
    c->r.e = all;
    c->r.n = c->r.cap = o;
}

/* Put num_key(order[0..n-1]) (order NULL: 0..n-1, or n-1..0 when
 * descending). */
static void
fill_keys(ctx *c, size_t n, const size_t *order, bool scramble, bool descending)
{
    uint8_t key[16];
    entry **fresh = malloc(n * sizeof(entry *));
    assert_non_null(fresh);
    for (size_t i = 0; i < n; i++) {
        size_t k = order != NULL ? order[i] : descending ? n - 1 - i : i;
        num_key(k, scramble, key);
        fresh[i] = mk_entry(++c->version, key, sizeof(key), 0);
    }
    bulk_put(c, fresh, n);
    free(fresh);
}

static void
fill(ctx *c, size_t n, bool scramble, bool descending)
{
    fill_keys(c, n, NULL, scramble, descending);
}

static void
shuffle(uint64_t *rng, entry **a, size_t n)
{
    for (size_t i = n; i > 1; i--) {
        size_t j = tu_rand(rng) % i;
        entry *t = a[i - 1];
        a[i - 1] = a[j];
        a[j] = t;
    }
}

/* The index iterates strictly ascending and has count entries. */
static void
check_sorted(const ctx *c, size_t count)
{
    kidx_iter it;
    const entry *prev = NULL, *e;
    size_t n = 0;
    kidx_seek(c->k, &it, NULL, 0, false);
    while ((e = kidx_next(&it)) != NULL) {
        if (prev != NULL)
            assert_true(key_cmp(entry_key(prev), prev->klen, entry_key(e),
                                e->klen) < 0);
        prev = e;
        n++;
    }
    assert_int_equal(n, count);
    assert_int_equal(kidx_count(c->k), count);
}

enum { DEL_RANDOM, DEL_ASCENDING, DEL_DESCENDING };

/* Delete every key in the given order. Between checks, the remaining keys
 * are found, sorted and counted, and a sample of deleted ones is gone. */
static void
delete_all(ctx *c, int how)
{
    size_t n = c->r.n, every = n / 32 > 500 ? n / 32 : 500;
    entry **order = c->r.e;
    uint8_t(*gone)[16] = malloc(n * 16 + 1);
    assert_non_null(gone);
    if (how == DEL_RANDOM)
        shuffle(&c->rng, order, n);
    for (size_t i = 0; i < n; i++) {
        entry *e = order[how == DEL_DESCENDING ? n - 1 - i : i];
        assert_int_equal(e->klen, 16);
        memcpy(gone[i], entry_key(e), 16);
        assert_ptr_equal(kidx_del(c->k, gone[i], 16), e);
        mem_free(e);
        if (i % every != 0)
            continue;
        check_sorted(c, n - 1 - i);
        for (size_t j = 0; j <= i; j += 1 + i / 64)
            assert_null(kidx_get(c->k, gone[j], 16));
    }
    c->r.n = 0;
    free(gone);
    check_all(c);
}

static double
bytes_per_key(const ctx *c)
{
    return (double) kidx_mem_bytes(c->k) / (double) kidx_count(c->k);
}

/* A leaf slot is 12.07 bytes (a 2040-byte leaf of LEAF_CAP slots): sorted
 * loads come within 8% of that, random inserts within 35%. */
#define FULL_BYTES_PER_KEY   13.1
#define RANDOM_BYTES_PER_KEY 16.3

/* Sorted loads fill leaves; random inserts stay dense; deleting every key
 * gives the memory back; the tree refills from empty. */
static void
test_kidx_fill_and_mass_delete(void **state)
{
    (void) state;
    ctx c;
    size_t n = tu_long() ? 1000000 : 30000;
    ctx_open(&c, "kidx_fill_and_mass_delete");
    size_t empty_bytes = kidx_mem_bytes(c.k);

    fill(&c, n, false, false);
    check_all(&c);
    print_message("# ascending load: %.2f index bytes/key\n",
                  bytes_per_key(&c));
    assert_true(bytes_per_key(&c) < FULL_BYTES_PER_KEY);
    delete_all(&c, DEL_RANDOM);
    assert_int_equal(kidx_count(c.k), 0);
    assert_true(kidx_mem_bytes(c.k) <= empty_bytes + 8192);

    fill(&c, n, false, true);
    check_all(&c);
    print_message("# descending load: %.2f index bytes/key\n",
                  bytes_per_key(&c));
    assert_true(bytes_per_key(&c) < FULL_BYTES_PER_KEY);
    delete_all(&c, DEL_RANDOM);
    assert_true(kidx_mem_bytes(c.k) <= empty_bytes + 8192);

    fill(&c, n, true, false);
    check_all(&c);
    print_message("# random inserts: %.2f index bytes/key\n",
                  bytes_per_key(&c));
    assert_true(bytes_per_key(&c) < RANDOM_BYTES_PER_KEY);
    delete_all(&c, DEL_RANDOM);
    assert_true(kidx_mem_bytes(c.k) <= empty_bytes + 8192);
    ctx_close(&c);
}

/* Insert num_key(0..n-1) in random order. */
static void
fill_shuffled(ctx *c, size_t n)
{
    size_t *perm = malloc(n * sizeof(size_t));
    assert_non_null(perm);
    for (size_t i = 0; i < n; i++)
        perm[i] = i;
    for (size_t i = n; i > 1; i--) {
        size_t j = tu_rand(&c->rng) % i;
        size_t t = perm[i - 1];
        perm[i - 1] = perm[j];
        perm[j] = t;
    }
    fill_keys(c, n, perm, false, false);
    free(perm);
}

/* Deletes in key order empty the tree from one end, so underfull nodes
 * borrow from and merge with their right (or left) siblings at every level,
 * and each leaf's first key, a separator, goes first (or last). */
static void
test_kidx_ordered_deletes(void **state)
{
    (void) state;
    ctx c;
    size_t n = tu_long() ? 1000000 : 25000;
    ctx_open(&c, "kidx_ordered_deletes");
    for (int pass = 0; pass < 4; pass++) {
        if (pass < 2)
            fill(&c, n, false, pass == 1);
        else
            fill_shuffled(&c, n);
        delete_all(&c, pass % 2 == 0 ? DEL_ASCENDING : DEL_DESCENDING);
    }
    ctx_close(&c);
}

/* A sorted load leaves a last leaf holding one key, a separator; deleting
 * it empties that leaf. */
static void
test_kidx_single_entry_leaf(void **state)
{
    (void) state;
    ctx c;
    uint8_t key[16];
    static const size_t sizes[] = {LEAF_CAP + 1, 2 * LEAF_CAP + 1,
                                   LEAF_CAP * 43 + 1, LEAF_CAP * 86 + 1};
    ctx_open(&c, "kidx_single_entry_leaf");
    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
        fill(&c, sizes[i], false, false);
        num_key(sizes[i] - 1, false, key);
        do_del(&c, key, sizeof(key));
        check_all(&c);
        do_put(&c, key, sizeof(key));
        num_key(sizes[i], false, key);
        do_put(&c, key, sizeof(key));
        check_all(&c);
        delete_all(&c, DEL_RANDOM);
    }
    ctx_close(&c);
}

static void
test_kidx_open_enomem(void **state)
{
    (void) state;
    for (long n = 1;; n++) {
        kidx *k = (kidx *) 1;
        mem_fail_set(n, 0);
        shoal_err rc = kidx_open(&k);
        mem_fail_set(0, 0);
        if (rc == SHOAL_OK) {
            kidx_close(k, NULL, NULL);
            break;
        }
        assert_int_equal(rc, SHOAL_ENOMEM);
        assert_null(k);
    }
}

/* Put prepared entries while every allocation fails, deleting a key after
 * every fourth put when with_dels. */
static void
put_all_failing(ctx *c, entry **fresh, size_t n, bool with_dels)
{
    uint8_t key[KEY_MAX];
    mem_fail_set(1, 1);
    for (size_t i = 0; i < n; i++) {
        entry *want = ref_put(&c->r, fresh[i]);
        assert_ptr_equal(kidx_put(c->k, fresh[i]), want);
        mem_free(want);
        if (with_dels && i % 4 == 0) {
            size_t klen = pick_key(c, key);
            do_del(c, key, klen);
        }
    }
    mem_fail_set(0, 0);
    check_all(c);
}

/* Fail allocation n = 1, 2, ... of kidx_reserve_n: each failure leaves the
 * index as it was; the success covers n puts (and deletes between them)
 * while every allocation fails. */
static void
reserve_fault_loop(ctx *c, size_t n_puts)
{
    uint8_t key[KEY_MAX];
    entry **fresh = malloc(n_puts * sizeof(entry *));
    assert_non_null(fresh);
    for (size_t i = 0; i < n_puts; i++) {
        size_t klen = gen_key(&c->rng, key);
        fresh[i] = mk_entry(++c->version, key, klen, 0);
    }
    for (long n = 1;; n++) {
        mem_fail_set(n, 0);
        shoal_err rc = kidx_reserve_n(c->k, n_puts);
        mem_fail_set(0, 0);
        assert_int_equal(kidx_count(c->k), c->r.n);
        if (rc == SHOAL_OK)
            break;
        assert_int_equal(rc, SHOAL_ENOMEM);
        if (n % 16 == 1)
            check_all(c);
    }
    put_all_failing(c, fresh, n_puts, true);
    free(fresh);
}

static void
test_kidx_reserve_enomem(void **state)
{
    (void) state;
    ctx c;
    static const size_t sizes[] = {1, 2, 7, 64, 300, 1000};
    ctx_open(&c, "kidx_reserve_enomem");
    for (size_t round = 0; round < 4; round++) {
        for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++)
            reserve_fault_loop(&c, sizes[i]);
        /* Grow the tree a level's worth between rounds. */
        for (size_t i = 0; i < 20000; i++) {
            uint8_t key[16];
            num_key(round * 20000 + i, round % 2 == 1, key);
            do_put(&c, key, sizeof(key));
        }
    }
    ctx_close(&c);
}

/* Puts that split as much as possible: a sorted load (every leaf full)
 * followed by batches whose keys land in the same or in different leaves. */
static void
test_kidx_reserve_worst_case(void **state)
{
    (void) state;
    ctx c;
    uint8_t key[16];
    ctx_open(&c, "kidx_reserve_worst_case");
    fill(&c, 200000, false, false);
    for (size_t stride = 1; stride <= 4096; stride *= 8) {
        size_t n = 200000 / stride < 5000 ? 200000 / stride : 5000;
        entry **fresh = malloc(n * sizeof(entry *));
        assert_non_null(fresh);
        for (size_t i = 0; i < n; i++) {
            num_key(i * stride, false, key);
            key[15] ^= 0x80; /* next to a loaded key */
            fresh[i] = mk_entry(++c.version, key, sizeof(key), 0);
        }
        assert_int_equal(kidx_reserve_n(c.k, n), SHOAL_OK);
        put_all_failing(&c, fresh, n, false);
        free(fresh);
    }
    ctx_close(&c);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_kidx_empty),
        cmocka_unit_test(test_kidx_key_shapes),
        cmocka_unit_test(test_kidx_random_differential),
        cmocka_unit_test(test_kidx_prefix_ties),
        cmocka_unit_test(test_kidx_fill_and_mass_delete),
        cmocka_unit_test(test_kidx_ordered_deletes),
        cmocka_unit_test(test_kidx_single_entry_leaf),
        cmocka_unit_test(test_kidx_open_enomem),
        cmocka_unit_test(test_kidx_reserve_enomem),
        cmocka_unit_test(test_kidx_reserve_worst_case),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
