/*
 * fs_mem.c -- the in-memory, fault-injecting file system of fs_mem.h.
 *
 * Model
 * -----
 * The tree is made of inodes. A directory inode has two entry tables, sorted
 * by name: cur_ents (what open, rename, unlink and list see) and dur_ents
 * (what survives a power loss: a copy of cur_ents taken by the last dir_fsync
 * of that directory). A file inode has its current bytes, its durable bytes
 * (as of its last fsync) and the ordered list of changes since then -- pwrite,
 * ftruncate, fallocate, open with FS_TRUNC -- so a crash can replay any
 * subset of them. The invariant is
 *
 *     cur == dur + every pending change, replayed in order.
 *
 * fsync replays the pending changes onto dur and empties the list; like
 * fdatasync it leaves the directory entry alone. Inodes are reference
 * counted: every cur entry, dur entry and open fd holds one reference. So an
 * unlinked but open file keeps working, and a file renamed over another
 * without dir_fsync leaves the old inode reachable from the dur table.
 *
 * Power loss (fs_mem_crash_clone) walks the dur tables from the root and
 * builds a new tree. Each file reached gets dur plus, per mode, none, all or a
 * seeded random subset of its pending changes (RANDOM: each kept or dropped
 * with p = 1/2, and a kept write is torn to a prefix or garbled over a
 * sub-range with p = 1/4; TORN_LAST: all but the last, whose write is cut
 * to a proper prefix, possibly empty, or a size change kept or dropped). The
 * random stream of a file is seeded from the seed and the file's path, so a
 * seed replays exactly. A file reachable under two durable names (a rename
 * across directories with one of them synced) stays one inode in the clone.
 *
 * Choices a caller may notice
 *  - mkdir is durable only once the parent is dir_fsynced, like a file
 *    create; "/" always exists. A directory that vanishes takes its files.
 *  - Directories cannot be renamed or unlinked (SHOAL_EIO). Shoal never does
 *    either, and it keeps the directory graph a tree (no reference cycles).
 *  - Paths: empty and "." components are skipped and a relative path is taken
 *    from "/"; ".." is refused with SHOAL_EIO.
 *  - list reports entries in a fixed order that is not sorted (by a hash of
 *    the name), so code that relies on readdir order fails here too. Names
 *    are copied and the lock dropped before the callback runs, so the
 *    callback may call back into the file system (e.g. unlink).
 *  - A file grows to FS_MEM_MAX_FILE bytes at most; beyond it SHOAL_ENOSPC.
 *  - fds start at FS_MEM_FD_BASE, so a zeroed fd field is never valid.
 *  - A failed call changes nothing, except an injected short write, which
 *    lands a prefix as an ordinary pending write. Every allocation of an
 *    operation is made before its first change, so a call that returns
 *    SHOAL_ENOMEM has changed nothing either.
 *  - fs_mem_poke and fs_mem_truncate first make the file's pending changes
 *    durable (as fsync would), then change current and durable bytes alike.
 *  - A failed fsync leaves the pending changes pending: a retried fsync would
 *    succeed here. (Linux may drop the dirty pages instead; callers must not
 *    retry, and tests check that by counting FS_OP_FSYNC calls.)
 *
 * Locking: fs_mem.mu guards everything reachable from the handle; only a
 * list callback runs without it. The crash clone is built under the
 * source's lock.
 */
#include "tests/support/fs_mem.h"

#include "proto/mem.h"
#include "proto/slog.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#define FS_MEM_MAX_FILE ((uint64_t) 1 << 30) /* bytes per file */
#define FS_MEM_FD_BASE  3                    /* first fd handed out */
#define FS_MEM_MAX_FDS  ((size_t) 1 << 20)   /* open files at once */
#define FS_MEM_N_OPS    12                   /* bits in FS_OP_ALL */

typedef enum pend_kind {
    PEND_WRITE,    /* pwrite: len bytes of data at off */
    PEND_TRUNCATE, /* ftruncate / FS_TRUNC: the length becomes len */
    PEND_EXTEND,   /* fallocate: the length becomes len if shorter */
} pend_kind;

typedef struct pending {
    pend_kind kind;
    uint64_t off;  /* PEND_WRITE: file offset; else 0 */
    size_t len;    /* PEND_WRITE: bytes of data; else the new length */
    uint8_t *data; /* PEND_WRITE: len bytes, owned; else NULL */
} pending;

typedef struct bytes {
    uint8_t *ptr; /* cap bytes; NULL while cap == 0 */
    size_t len;   /* file length */
    size_t cap;   /* allocated bytes */
} bytes;

typedef struct inode inode;

typedef struct entry {
    char *name; /* owned, NUL-terminated, no '/' */
    inode *ino; /* holds one reference */
} entry;

typedef struct ents {
    entry *v; /* sorted by name (memcmp order) */
    size_t n;
    size_t cap;
} ents;

struct inode {
    bool is_dir;
    size_t refs;       /* cur/dur entries and open fds pointing here */
    bytes cur;         /* file: what pread and fsize see */
    bytes dur;         /* file: as of the last fsync */
    pending *pend;     /* file: changes since the last fsync, oldest first */
    size_t n_pend;     /* used entries of pend */
    size_t cap_pend;   /* allocated entries of pend */
    ents cur_ents;     /* dir: the live entries */
    ents dur_ents;     /* dir: the entries as of the last dir_fsync */
    uint64_t copy_gen; /* crash clone that set copy (0: none) */
    inode *copy;       /* this inode's image in that clone */
};

typedef struct ofile {
    inode *ino;     /* NULL: slot free; else holds one reference */
    bool can_write; /* opened with FS_RDWR */
} ofile;

typedef struct fault {
    unsigned mask;    /* FS_OP_* bits that count; 0: disarmed */
    uint64_t k;       /* the k-th matching call fails (k >= 1) */
    uint64_t seen;    /* matching calls since fs_mem_fail */
    shoal_err code;   /* what the failing call returns */
    bool forever;     /* every matching call after the k-th fails too */
    bool short_write; /* a failing pwrite lands a proper prefix first */
} fault;

struct fs_mem {
    fs base; /* first member: fs_mem_fs() hands out &base */
    pthread_mutex_t mu;
    /* Everything below is guarded by mu. */
    inode *root;                  /* "/", one reference */
    ofile *fds;                   /* slot i is fd i + FS_MEM_FD_BASE */
    size_t n_fds;                 /* slots in fds */
    uint64_t calls[FS_MEM_N_OPS]; /* calls per op bit since open */
    fault fault;                  /* the armed failure, if any */
    uint64_t fail_hits;           /* failures injected since open */
    uint64_t rng;                 /* splitmix64 state for short writes */
    uint64_t clone_gen;           /* last crash clone taken of this fs */
};

/* ---- small helpers ---------------------------------------------------- */

static uint64_t
mix64(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9u;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebu;
    return z ^ (z >> 31);
}

/* splitmix64: tiny, seedable with any value, good enough for tests. */
static uint64_t
rng_next(uint64_t *s)
{
    *s += 0x9e3779b97f4a7c15u;
    return mix64(*s);
}

static uint64_t
rng_below(uint64_t *s, uint64_t n)
{
    return rng_next(s) % n;
}

static uint64_t
fnv1a(const char *s)
{
    uint64_t h = 0xcbf29ce484222325u;
    for (; *s != '\0'; s++)
        h = (h ^ (uint8_t) *s) * 0x100000001b3u;
    return h;
}

static size_t
max_size(size_t a, size_t b)
{
    return a > b ? a : b;
}

/* The capacity to grow to so that need fits, doubling from cap. */
static size_t
next_cap(size_t cap, size_t need)
{
    size_t n = cap != 0 ? cap : 8;
    while (n < need)
        n *= 2;
    return n;
}

static char *
name_dup(const char *name, size_t len)
{
    char *s = mem_alloc(len + 1);
    if (s == NULL)
        return NULL;
    memcpy(s, name, len);
    s[len] = '\0';
    return s;
}

/* ---- bytes ------------------------------------------------------------ */

static shoal_err
bytes_reserve(bytes *b, size_t need)
{
    if (need <= b->cap)
        return SHOAL_OK;
    size_t cap = next_cap(b->cap, need);
    uint8_t *p = mem_realloc(b->ptr, cap);
    if (p == NULL)
        return SHOAL_ENOMEM;
    b->ptr = p;
    b->cap = cap;
    return SHOAL_OK;
}

/* Set the length, zero-filling when it grows; cap >= len. */
static void
bytes_setlen(bytes *b, size_t len)
{
    if (len > b->len)
        memset(b->ptr + b->len, 0, len - b->len);
    b->len = len;
}

/* Write like pwrite (a gap past the end reads as zeros); cap >= off + len. */
static void
bytes_write(bytes *b, uint64_t off, const uint8_t *data, size_t len)
{
    if (len == 0)
        return;
    size_t o = (size_t) off;
    if (o > b->len)
        bytes_setlen(b, o);
    memcpy(b->ptr + o, data, len);
    b->len = max_size(b->len, o + len);
}

/* ---- pending changes ---------------------------------------------------- */

/* The file length right after p, at most. */
static size_t
pend_end(const pending *p)
{
    return p->kind == PEND_WRITE ? (size_t) p->off + p->len : p->len;
}

static void
pend_apply(bytes *b, const pending *p)
{
    switch (p->kind) {
    case PEND_WRITE:
        bytes_write(b, p->off, p->data, p->len);
        break;
    case PEND_TRUNCATE:
        bytes_setlen(b, p->len);
        break;
    case PEND_EXTEND:
        if (p->len > b->len)
            bytes_setlen(b, p->len);
        break;
    }
}

/* The largest length dur can reach while any subset of the pending changes
 * is replayed onto it: no change grows a file past its own end. */
static size_t
pend_bound(const inode *ino)
{
    size_t max = ino->dur.len;
    for (size_t i = 0; i < ino->n_pend; i++)
        max = max_size(max, pend_end(&ino->pend[i]));
    return max;
}

static shoal_err
pend_reserve(inode *ino, size_t need)
{
    if (need <= ino->cap_pend)
        return SHOAL_OK;
    size_t cap = next_cap(ino->cap_pend, need);
    pending *p = mem_realloc(ino->pend, cap * sizeof *p);
    if (p == NULL)
        return SHOAL_ENOMEM;
    ino->pend = p;
    ino->cap_pend = cap;
    return SHOAL_OK;
}

/* ---- inodes and entry tables -------------------------------------------- */

static inode *
inode_new(bool is_dir)
{
    inode *ino = mem_calloc(1, sizeof *ino);
    if (ino != NULL)
        ino->is_dir = is_dir;
    return ino;
}

static void inode_free(inode *ino);

static void
inode_unref(inode *ino)
{
    SH_ASSERT(ino->refs > 0);
    if (--ino->refs == 0)
        inode_free(ino);
}

static void
ents_clear(ents *e)
{
    for (size_t i = 0; i < e->n; i++) {
        mem_free(e->v[i].name);
        inode_unref(e->v[i].ino);
    }
    mem_free(e->v);
    *e = (ents){0};
}

/* NULL ok. Drops the references the inode's own tables hold. */
static void
inode_free(inode *ino)
{
    if (ino == NULL)
        return;
    mem_free(ino->cur.ptr);
    mem_free(ino->dur.ptr);
    for (size_t i = 0; i < ino->n_pend; i++)
        mem_free(ino->pend[i].data);
    mem_free(ino->pend);
    ents_clear(&ino->cur_ents);
    ents_clear(&ino->dur_ents);
    mem_free(ino);
}

/* Compare a NUL-terminated name with a (name, len) path component. */
static int
name_cmp(const char *a, const char *b, size_t blen)
{
    size_t alen = strlen(a);
    int c = memcmp(a, b, alen < blen ? alen : blen);
    if (c != 0)
        return c;
    return (alen > blen) - (alen < blen);
}

/* Binary search; *at is the match or the insertion point. */
static bool
ents_find(const ents *e, const char *name, size_t len, size_t *at)
{
    size_t lo = 0, hi = e->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = name_cmp(e->v[mid].name, name, len);
        if (c == 0) {
            *at = mid;
            return true;
        }
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    *at = lo;
    return false;
}

static shoal_err
ents_reserve(ents *e, size_t need)
{
    if (need <= e->cap)
        return SHOAL_OK;
    size_t cap = next_cap(e->cap, need);
    entry *v = mem_realloc(e->v, cap * sizeof *v);
    if (v == NULL)
        return SHOAL_ENOMEM;
    e->v = v;
    e->cap = cap;
    return SHOAL_OK;
}

/* Room must be reserved. Takes name; adds a reference to ino. */
static void
ents_insert(ents *e, size_t at, char *name, inode *ino)
{
    memmove(&e->v[at + 1], &e->v[at], (e->n - at) * sizeof *e->v);
    e->v[at] = (entry){.name = name, .ino = ino};
    e->n++;
    ino->refs++;
}

/* Frees the name and drops the entry's reference (last: it may free). */
static void
ents_remove(ents *e, size_t at)
{
    entry gone = e->v[at];
    memmove(&e->v[at], &e->v[at + 1], (e->n - at - 1) * sizeof *e->v);
    e->n--;
    mem_free(gone.name);
    inode_unref(gone.ino);
}

/* dur_ents := cur_ents. All copies are made before the old table goes. */
static shoal_err
ents_sync(inode *dir)
{
    const ents *cur = &dir->cur_ents;
    ents copy = {0};
    if (ents_reserve(&copy, cur->n) != SHOAL_OK)
        return SHOAL_ENOMEM;
    for (size_t i = 0; i < cur->n; i++) {
        char *name = mem_strdup(cur->v[i].name);
        if (name == NULL) {
            ents_clear(&copy);
            return SHOAL_ENOMEM;
        }
        ents_insert(&copy, i, name, cur->v[i].ino);
    }
    ents_clear(&dir->dur_ents);
    dir->dur_ents = copy;
    return SHOAL_OK;
}

/* ---- file changes ------------------------------------------------------- */

/* Apply p to the current bytes and queue it for fsync and crashes. Takes
 * p->data on success only. */
static shoal_err
inode_change(inode *ino, const pending *p)
{
    if (pend_reserve(ino, ino->n_pend + 1) != SHOAL_OK ||
        bytes_reserve(&ino->cur, max_size(ino->cur.len, pend_end(p))) !=
            SHOAL_OK)
        return SHOAL_ENOMEM;
    pend_apply(&ino->cur, p);
    ino->pend[ino->n_pend++] = *p;
    return SHOAL_OK;
}

static shoal_err
inode_write(inode *ino, const void *buf, size_t len, uint64_t off)
{
    pending p = {.kind = PEND_WRITE, .off = off, .len = len};
    if ((p.data = mem_alloc(len)) == NULL)
        return SHOAL_ENOMEM;
    memcpy(p.data, buf, len);
    shoal_err rc = inode_change(ino, &p);
    if (rc != SHOAL_OK)
        mem_free(p.data);
    return rc;
}

static shoal_err
inode_resize(inode *ino, pend_kind kind, uint64_t len)
{
    pending p = {.kind = kind, .len = (size_t) len};
    return inode_change(ino, &p);
}

/* fsync: replay the pending changes onto dur (after one reservation). */
static shoal_err
inode_sync(inode *ino)
{
    if (bytes_reserve(&ino->dur, pend_bound(ino)) != SHOAL_OK)
        return SHOAL_ENOMEM;
    for (size_t i = 0; i < ino->n_pend; i++) {
        pend_apply(&ino->dur, &ino->pend[i]);
        mem_free(ino->pend[i].data);
    }
    ino->n_pend = 0;
    SH_ASSERT(ino->dur.len == ino->cur.len);
    return SHOAL_OK;
}

/* ---- paths -------------------------------------------------------------- */

typedef struct where {
    inode *dir;       /* the parent directory; NULL when the path is "/" */
    const char *name; /* the last component (not NUL-terminated) */
    size_t len;       /* its length */
} where;

/* The next component of *p, skipping empty and "." ones. */
static bool
next_comp(const char **p, const char **c, size_t *len)
{
    for (;;) {
        while (**p == '/')
            (*p)++;
        if (**p == '\0')
            return false;
        *c = *p;
        while (**p != '\0' && **p != '/')
            (*p)++;
        *len = (size_t) (*p - *c);
        if (*len != 1 || (*c)[0] != '.')
            return true;
    }
}

static bool
is_dotdot(const char *c, size_t len)
{
    return len == 2 && c[0] == '.' && c[1] == '.';
}

/* Walk all but the last component through the live entries. */
static shoal_err
resolve(fs_mem *m, const char *path, where *w)
{
    const char *p = path, *c = NULL, *next = NULL;
    size_t len = 0, next_len = 0;
    inode *dir = m->root;

    *w = (where){0};
    if (path[0] == '\0')
        return SHOAL_ENOTFOUND;
    if (!next_comp(&p, &c, &len))
        return SHOAL_OK; /* the root itself */
    while (next_comp(&p, &next, &next_len)) {
        size_t at;
        if (is_dotdot(c, len))
            return SHOAL_EIO;
        if (!ents_find(&dir->cur_ents, c, len, &at))
            return SHOAL_ENOTFOUND;
        dir = dir->cur_ents.v[at].ino;
        if (!dir->is_dir)
            return SHOAL_EIO; /* ENOTDIR */
        c = next;
        len = next_len;
    }
    if (is_dotdot(c, len))
        return SHOAL_EIO;
    *w = (where){.dir = dir, .name = c, .len = len};
    return SHOAL_OK;
}

/* The inode at w (NULL if missing); *at is its slot or insertion point. */
static inode *
where_get(fs_mem *m, const where *w, size_t *at)
{
    *at = 0;
    if (w->dir == NULL)
        return m->root;
    if (!ents_find(&w->dir->cur_ents, w->name, w->len, at))
        return NULL;
    return w->dir->cur_ents.v[*at].ino;
}

/* Make an empty inode at w (slot at). The last step that can fail. */
static shoal_err
create_at(const where *w, size_t at, bool is_dir, inode **out)
{
    inode *ino = inode_new(is_dir);
    char *name = name_dup(w->name, w->len);
    ents *e = &w->dir->cur_ents;
    if (ino == NULL || name == NULL || ents_reserve(e, e->n + 1) != SHOAL_OK) {
        mem_free(ino);
        mem_free(name);
        return SHOAL_ENOMEM;
    }
    ents_insert(e, at, name, ino);
    *out = ino;
    return SHOAL_OK;
}

/* ---- faults and fds ----------------------------------------------------- */

/* Count a call of op; the code it must fail with, or SHOAL_OK. */
static shoal_err
op_enter(fs_mem *m, unsigned op)
{
    fault *f = &m->fault;
    m->calls[(unsigned) __builtin_ctz(op)]++;
    if ((op & f->mask) == 0)
        return SHOAL_OK;
    f->seen++;
    if (f->seen < f->k || (f->seen > f->k && !f->forever))
        return SHOAL_OK;
    m->fail_hits++;
    slog(SLOG_DEBUG, "fs_mem", "injected %s on op 0x%x",
         shoal_errname((int) f->code), op);
    return f->code;
}

static ofile *
fd_get(fs_mem *m, int fd)
{
    if (fd < FS_MEM_FD_BASE)
        return NULL;
    size_t i = (size_t) (fd - FS_MEM_FD_BASE);
    if (i >= m->n_fds || m->fds[i].ino == NULL)
        return NULL;
    return &m->fds[i];
}

static ofile *
fd_get_writable(fs_mem *m, int fd)
{
    ofile *of = fd_get(m, fd);
    return of != NULL && of->can_write ? of : NULL;
}

/* A free slot (the lowest, as POSIX), growing the table if needed. */
static shoal_err
fd_reserve(fs_mem *m, size_t *slot)
{
    for (size_t i = 0; i < m->n_fds; i++) {
        if (m->fds[i].ino == NULL) {
            *slot = i;
            return SHOAL_OK;
        }
    }
    if (m->n_fds >= FS_MEM_MAX_FDS)
        return SHOAL_EIO; /* EMFILE */
    size_t n = next_cap(m->n_fds, m->n_fds + 1);
    ofile *v = mem_realloc(m->fds, n * sizeof *v);
    if (v == NULL)
        return SHOAL_ENOMEM;
    memset(&v[m->n_fds], 0, (n - m->n_fds) * sizeof *v);
    *slot = m->n_fds;
    m->fds = v;
    m->n_fds = n;
    return SHOAL_OK;
}

/* ---- operations (called with mu held) ----------------------------------- */

static shoal_err
open_check(const inode *ino, int flags)
{
    if (ino != NULL && ino->is_dir)
        return SHOAL_EIO; /* directories are not opened as files here */
    if (ino != NULL && (flags & FS_CREATE) && (flags & FS_EXCL))
        return SHOAL_EEXISTS;
    if (ino == NULL && !(flags & FS_CREATE))
        return SHOAL_ENOTFOUND;
    return SHOAL_OK;
}

static shoal_err
do_open(fs_mem *m, const char *path, int flags, int *fd_out)
{
    where w;
    size_t at, slot;
    inode *ino;
    shoal_err rc;

    *fd_out = -1;
    if ((rc = op_enter(m, FS_OP_OPEN)) != SHOAL_OK ||
        (rc = resolve(m, path, &w)) != SHOAL_OK)
        return rc;
    ino = where_get(m, &w, &at);
    if ((rc = open_check(ino, flags)) != SHOAL_OK ||
        (rc = fd_reserve(m, &slot)) != SHOAL_OK)
        return rc;
    /* Each branch is the last step that can fail; a new file is empty. */
    if (ino == NULL)
        rc = create_at(&w, at, false, &ino);
    else if (flags & FS_TRUNC)
        rc = inode_resize(ino, PEND_TRUNCATE, 0);
    if (rc != SHOAL_OK)
        return rc;
    m->fds[slot] = (ofile){.ino = ino, .can_write = (flags & FS_RDWR) != 0};
    ino->refs++;
    *fd_out = (int) slot + FS_MEM_FD_BASE;
    return SHOAL_OK;
}

static void
do_close(fs_mem *m, int fd)
{
    ofile *of = fd_get(m, fd);
    if (of == NULL)
        return;
    inode *ino = of->ino;
    of->ino = NULL;
    inode_unref(ino);
}

static shoal_err
do_pread(fs_mem *m, int fd, void *buf, size_t len, uint64_t off, size_t *n_out)
{
    shoal_err rc;
    ofile *of;

    *n_out = 0;
    if ((rc = op_enter(m, FS_OP_PREAD)) != SHOAL_OK)
        return rc;
    if ((of = fd_get(m, fd)) == NULL)
        return SHOAL_EIO; /* EBADF */
    const bytes *b = &of->ino->cur;
    if (off >= b->len)
        return SHOAL_OK;
    size_t n = b->len - (size_t) off;
    n = n < len ? n : len;
    if (n > 0)
        memcpy(buf, b->ptr + off, n);
    *n_out = n;
    return SHOAL_OK;
}

static shoal_err
write_check(const ofile *of, size_t len, uint64_t off)
{
    if (of == NULL)
        return SHOAL_EIO; /* EBADF, or not opened for writing */
    if (off > FS_MEM_MAX_FILE || len > FS_MEM_MAX_FILE - off)
        return SHOAL_ENOSPC;
    return SHOAL_OK;
}

static shoal_err
do_pwrite(fs_mem *m, int fd, const void *buf, size_t len, uint64_t off)
{
    shoal_err injected = op_enter(m, FS_OP_PWRITE);
    if (injected != SHOAL_OK && !m->fault.short_write)
        return injected;
    ofile *of = fd_get_writable(m, fd);
    shoal_err rc = write_check(of, len, off);
    if (injected != SHOAL_OK) {
        /* A short write: a non-empty proper prefix lands, then the error. */
        if (rc == SHOAL_OK && len >= 2)
            (void) inode_write(of->ino, buf,
                               1 + (size_t) rng_below(&m->rng, len - 1), off);
        return injected;
    }
    if (rc != SHOAL_OK || len == 0)
        return rc;
    return inode_write(of->ino, buf, len, off);
}

static shoal_err
do_fsync(fs_mem *m, int fd)
{
    shoal_err rc;
    ofile *of;

    if ((rc = op_enter(m, FS_OP_FSYNC)) != SHOAL_OK)
        return rc;
    if ((of = fd_get(m, fd)) == NULL)
        return SHOAL_EIO;
    return inode_sync(of->ino);
}

/* ftruncate and fallocate: a length change through a writable fd. */
static shoal_err
do_resize(fs_mem *m, unsigned op, int fd, pend_kind kind, uint64_t len)
{
    shoal_err rc;
    ofile *of;

    if ((rc = op_enter(m, op)) != SHOAL_OK)
        return rc;
    if ((of = fd_get_writable(m, fd)) == NULL)
        return SHOAL_EIO;
    if (len > FS_MEM_MAX_FILE)
        return SHOAL_ENOSPC;
    return inode_resize(of->ino, kind, len);
}

static shoal_err
do_fsize(fs_mem *m, int fd, uint64_t *len_out)
{
    shoal_err rc;
    ofile *of;

    if ((rc = op_enter(m, FS_OP_FSIZE)) != SHOAL_OK)
        return rc;
    if ((of = fd_get(m, fd)) == NULL)
        return SHOAL_EIO;
    *len_out = of->ino->cur.len;
    return SHOAL_OK;
}

/* Point the entry at (w, at) -- existing (dst != NULL) or new, with its name
 * in name -- at src. Cannot fail: room was reserved. */
static void
link_at(const where *w, size_t at, inode *dst, char *name, inode *src)
{
    if (dst == NULL) {
        ents_insert(&w->dir->cur_ents, at, name, src);
        return;
    }
    src->refs++;
    w->dir->cur_ents.v[at].ino = src;
    inode_unref(dst);
}

static shoal_err
do_rename(fs_mem *m, const char *from, const char *to)
{
    where wf, wt;
    size_t af, at;
    inode *src, *dst;
    char *name = NULL;
    shoal_err rc;

    if ((rc = op_enter(m, FS_OP_RENAME)) != SHOAL_OK ||
        (rc = resolve(m, from, &wf)) != SHOAL_OK ||
        (rc = resolve(m, to, &wt)) != SHOAL_OK)
        return rc;
    if ((src = where_get(m, &wf, &af)) == NULL)
        return SHOAL_ENOTFOUND;
    dst = where_get(m, &wt, &at);
    if (src == dst)
        return SHOAL_OK; /* POSIX: same file, nothing to do */
    if (src->is_dir || (dst != NULL && dst->is_dir))
        return SHOAL_EIO; /* not modelled (see the top of the file) */
    if (dst == NULL &&
        ((name = name_dup(wt.name, wt.len)) == NULL ||
         ents_reserve(&wt.dir->cur_ents, wt.dir->cur_ents.n + 1) != SHOAL_OK)) {
        mem_free(name);
        return SHOAL_ENOMEM;
    }
    src->refs++; /* keep src alive between link and unlink */
    link_at(&wt, at, dst, name, src);
    /* The new link may have shifted the old one in a shared directory. */
    bool found = ents_find(&wf.dir->cur_ents, wf.name, wf.len, &af);
    SH_ASSERT(found);
    ents_remove(&wf.dir->cur_ents, af);
    inode_unref(src);
    return SHOAL_OK;
}

static shoal_err
do_unlink(fs_mem *m, const char *path)
{
    where w;
    size_t at;
    inode *ino;
    shoal_err rc;

    if ((rc = op_enter(m, FS_OP_UNLINK)) != SHOAL_OK ||
        (rc = resolve(m, path, &w)) != SHOAL_OK)
        return rc;
    if ((ino = where_get(m, &w, &at)) == NULL)
        return SHOAL_ENOTFOUND;
    if (ino->is_dir)
        return SHOAL_EIO; /* EISDIR */
    ents_remove(&w.dir->cur_ents, at);
    return SHOAL_OK;
}

static shoal_err
do_mkdir(fs_mem *m, const char *path)
{
    where w;
    size_t at;
    inode *ino;
    shoal_err rc;

    if ((rc = op_enter(m, FS_OP_MKDIR)) != SHOAL_OK ||
        (rc = resolve(m, path, &w)) != SHOAL_OK)
        return rc;
    if ((ino = where_get(m, &w, &at)) != NULL)
        return ino->is_dir ? SHOAL_OK : SHOAL_EEXISTS;
    return create_at(&w, at, true, &ino);
}

/* The directory at path, for dir_fsync and list. */
static shoal_err
dir_get(fs_mem *m, const char *path, inode **out)
{
    where w;
    size_t at;
    shoal_err rc;

    if ((rc = resolve(m, path, &w)) != SHOAL_OK)
        return rc;
    if ((*out = where_get(m, &w, &at)) == NULL)
        return SHOAL_ENOTFOUND;
    return (*out)->is_dir ? SHOAL_OK : SHOAL_EIO; /* ENOTDIR */
}

static shoal_err
do_dir_fsync(fs_mem *m, const char *path)
{
    inode *dir;
    shoal_err rc;

    if ((rc = op_enter(m, FS_OP_DIR_FSYNC)) != SHOAL_OK ||
        (rc = dir_get(m, path, &dir)) != SHOAL_OK)
        return rc;
    return ents_sync(dir);
}

static int
hash_order(const void *a, const void *b)
{
    const char *x = *(const char *const *) a, *y = *(const char *const *) b;
    uint64_t hx = fnv1a(x), hy = fnv1a(y);
    if (hx != hy)
        return hx < hy ? -1 : 1;
    return strcmp(x, y);
}

/* Copy the names of dir into one mem_alloc'd block: n pointers, then the
 * strings they point at. */
static shoal_err
list_names(fs_mem *m, const char *path, char ***names_out, size_t *n_out)
{
    inode *dir;
    shoal_err rc;

    if ((rc = op_enter(m, FS_OP_LIST)) != SHOAL_OK ||
        (rc = dir_get(m, path, &dir)) != SHOAL_OK)
        return rc;
    const ents *e = &dir->cur_ents;
    size_t size = e->n * sizeof(char *);
    for (size_t i = 0; i < e->n; i++)
        size += strlen(e->v[i].name) + 1;
    char **v = mem_alloc(size);
    if (v == NULL)
        return SHOAL_ENOMEM;
    char *p = (char *) (v + e->n);
    for (size_t i = 0; i < e->n; i++) {
        size_t len = strlen(e->v[i].name) + 1;
        v[i] = memcpy(p, e->v[i].name, len);
        p += len;
    }
    qsort(v, e->n, sizeof *v, hash_order);
    *names_out = v;
    *n_out = e->n;
    return SHOAL_OK;
}

/* ---- the ops table: lock, do, unlock ------------------------------------ */

static fs_mem *
from_fs(fs *f)
{
    return (fs_mem *) (void *) f;
}

static void
lock(fs_mem *m)
{
    int e = pthread_mutex_lock(&m->mu);
    SH_ASSERT(e == 0);
}

static void
unlock(fs_mem *m)
{
    int e = pthread_mutex_unlock(&m->mu);
    SH_ASSERT(e == 0);
}

static shoal_err
mem_open(fs *f, const char *path, int flags, int *fd_out)
{
    fs_mem *m = from_fs(f);
    lock(m);
    shoal_err rc = do_open(m, path, flags, fd_out);
    unlock(m);
    return rc;
}

static void
mem_close(fs *f, int fd)
{
    fs_mem *m = from_fs(f);
    lock(m);
    do_close(m, fd);
    unlock(m);
}

static shoal_err
mem_pread(fs *f, int fd, void *buf, size_t len, uint64_t off, size_t *n_out)
{
    fs_mem *m = from_fs(f);
    lock(m);
    shoal_err rc = do_pread(m, fd, buf, len, off, n_out);
    unlock(m);
    return rc;
}

static shoal_err
mem_pwrite(fs *f, int fd, const void *buf, size_t len, uint64_t off)
{
    fs_mem *m = from_fs(f);
    lock(m);
    shoal_err rc = do_pwrite(m, fd, buf, len, off);
    unlock(m);
    return rc;
}

static shoal_err
mem_fsync(fs *f, int fd)
{
    fs_mem *m = from_fs(f);
    lock(m);
    shoal_err rc = do_fsync(m, fd);
    unlock(m);
    return rc;
}

static shoal_err
mem_ftruncate(fs *f, int fd, uint64_t len)
{
    fs_mem *m = from_fs(f);
    lock(m);
    shoal_err rc = do_resize(m, FS_OP_FTRUNCATE, fd, PEND_TRUNCATE, len);
    unlock(m);
    return rc;
}

static shoal_err
mem_fallocate(fs *f, int fd, uint64_t len)
{
    fs_mem *m = from_fs(f);
    lock(m);
    shoal_err rc = do_resize(m, FS_OP_FALLOCATE, fd, PEND_EXTEND, len);
    unlock(m);
    return rc;
}

static shoal_err
mem_fsize(fs *f, int fd, uint64_t *len_out)
{
    fs_mem *m = from_fs(f);
    lock(m);
    shoal_err rc = do_fsize(m, fd, len_out);
    unlock(m);
    return rc;
}

static shoal_err
mem_rename(fs *f, const char *from, const char *to)
{
    fs_mem *m = from_fs(f);
    lock(m);
    shoal_err rc = do_rename(m, from, to);
    unlock(m);
    return rc;
}

static shoal_err
mem_unlink(fs *f, const char *path)
{
    fs_mem *m = from_fs(f);
    lock(m);
    shoal_err rc = do_unlink(m, path);
    unlock(m);
    return rc;
}

static shoal_err
mem_mkdir(fs *f, const char *path)
{
    fs_mem *m = from_fs(f);
    lock(m);
    shoal_err rc = do_mkdir(m, path);
    unlock(m);
    return rc;
}

static shoal_err
mem_dir_fsync(fs *f, const char *dir)
{
    fs_mem *m = from_fs(f);
    lock(m);
    shoal_err rc = do_dir_fsync(m, dir);
    unlock(m);
    return rc;
}

/* The callback runs unlocked on a copy of the names (see the top). */
static shoal_err
mem_list(fs *f, const char *dir, fs_list_cb cb, void *arg)
{
    fs_mem *m = from_fs(f);
    char **names = NULL;
    size_t n = 0;
    lock(m);
    shoal_err rc = list_names(m, dir, &names, &n);
    unlock(m);
    for (size_t i = 0; rc == SHOAL_OK && i < n; i++)
        rc = cb(arg, names[i]);
    mem_free(names);
    return rc;
}

static const fs_ops mem_ops = {
    .open = mem_open,
    .close = mem_close,
    .pread = mem_pread,
    .pwrite = mem_pwrite,
    .fsync = mem_fsync,
    .ftruncate = mem_ftruncate,
    .fallocate = mem_fallocate,
    .fsize = mem_fsize,
    .rename = mem_rename,
    .unlink = mem_unlink,
    .mkdir = mem_mkdir,
    .dir_fsync = mem_dir_fsync,
    .list = mem_list,
};

/* ---- lifecycle, faults, counters ---------------------------------------- */

shoal_err
fs_mem_open(fs_mem **out)
{
    fs_mem *m;

    *out = NULL;
    if ((m = mem_calloc(1, sizeof *m)) == NULL)
        return SHOAL_ENOMEM;
    if ((m->root = inode_new(true)) == NULL)
        goto fail;
    if (pthread_mutex_init(&m->mu, NULL) != 0)
        goto fail;
    m->root->refs = 1;
    m->base.ops = &mem_ops;
    m->rng = 0x5eed;
    *out = m;
    return SHOAL_OK;
fail:
    inode_free(m->root);
    mem_free(m);
    return SHOAL_ENOMEM;
}

void
fs_mem_close(fs_mem *m)
{
    if (m == NULL)
        return;
    for (size_t i = 0; i < m->n_fds; i++)
        if (m->fds[i].ino != NULL)
            inode_unref(m->fds[i].ino);
    mem_free(m->fds);
    inode_unref(m->root);
    pthread_mutex_destroy(&m->mu);
    mem_free(m);
}

fs *
fs_mem_fs(fs_mem *m)
{
    return &m->base;
}

void
fs_mem_fail(fs_mem *m, unsigned op_mask, uint64_t k, shoal_err code,
            bool forever, bool short_write)
{
    SH_ASSERT(k >= 1 && code != SHOAL_OK);
    lock(m);
    m->fault = (fault){.mask = op_mask & FS_OP_ALL,
                       .k = k,
                       .code = code,
                       .forever = forever,
                       .short_write = short_write};
    unlock(m);
}

void
fs_mem_fail_clear(fs_mem *m)
{
    lock(m);
    m->fault = (fault){0};
    unlock(m);
}

uint64_t
fs_mem_op_count(fs_mem *m, unsigned op_mask)
{
    uint64_t n = 0;
    lock(m);
    for (unsigned i = 0; i < FS_MEM_N_OPS; i++)
        if (op_mask & (1u << i))
            n += m->calls[i];
    unlock(m);
    return n;
}

uint64_t
fs_mem_fail_count(fs_mem *m)
{
    lock(m);
    uint64_t n = m->fail_hits;
    unlock(m);
    return n;
}

/* ---- power loss --------------------------------------------------------- */

typedef struct crash_ctx {
    fs_crash_mode mode;
    uint64_t seed;
    uint64_t gen; /* tags the source inodes already copied by this clone */
} crash_ctx;

/* How one pending change of a file survives; b has room for any outcome. */
typedef void (*crash_fn)(bytes *b, const pending *p, bool is_last,
                         uint64_t *rng);

/* A write cut to a proper prefix (maybe empty); a size change kept or not. */
static void
tear(bytes *b, const pending *p, uint64_t *rng)
{
    if (p->kind != PEND_WRITE) {
        if (rng_next(rng) & 1)
            pend_apply(b, p);
        return;
    }
    bytes_write(b, p->off, p->data, (size_t) rng_below(rng, p->len));
}

/* Random bytes over a random non-empty sub-range of an applied write. */
static void
garble(bytes *b, const pending *p, uint64_t *rng)
{
    if (p->kind != PEND_WRITE)
        return;
    size_t from = (size_t) rng_below(rng, p->len);
    size_t to = from + 1 + (size_t) rng_below(rng, p->len - from);
    for (size_t i = from; i < to; i++)
        b->ptr[p->off + i] = (uint8_t) rng_next(rng);
}

static void
crash_drop(bytes *b, const pending *p, bool is_last, uint64_t *rng)
{
    (void) b;
    (void) p;
    (void) is_last;
    (void) rng;
}

static void
crash_keep(bytes *b, const pending *p, bool is_last, uint64_t *rng)
{
    (void) is_last;
    (void) rng;
    pend_apply(b, p);
}

/* Keep with p = 1/2; of the kept, 1/8 torn and 1/8 garbled. */
static void
crash_random(bytes *b, const pending *p, bool is_last, uint64_t *rng)
{
    (void) is_last;
    uint64_t r = rng_below(rng, 16);
    if (r < 8)
        return;
    if (r == 14) {
        tear(b, p, rng);
        return;
    }
    pend_apply(b, p);
    if (r == 15)
        garble(b, p, rng);
}

static void
crash_torn_last(bytes *b, const pending *p, bool is_last, uint64_t *rng)
{
    if (is_last)
        tear(b, p, rng);
    else
        pend_apply(b, p);
}

static const crash_fn crash_fns[] = {
    [FS_CRASH_DROP_UNSYNCED] = crash_drop,
    [FS_CRASH_KEEP_UNSYNCED] = crash_keep,
    [FS_CRASH_RANDOM] = crash_random,
    [FS_CRASH_TORN_LAST] = crash_torn_last,
};

/* dst's bytes (current and durable alike) after a crash of src. */
static shoal_err
clone_bytes(const crash_ctx *cx, const inode *src, inode *dst, uint64_t h)
{
    uint64_t rng = cx->seed ^ h;
    bytes *b = &dst->cur;

    if (bytes_reserve(b, pend_bound(src)) != SHOAL_OK)
        return SHOAL_ENOMEM;
    bytes_write(b, 0, src->dur.ptr, src->dur.len);
    for (size_t i = 0; i < src->n_pend; i++)
        crash_fns[cx->mode](b, &src->pend[i], i + 1 == src->n_pend, &rng);
    if (bytes_reserve(&dst->dur, b->len) != SHOAL_OK)
        return SHOAL_ENOMEM;
    bytes_write(&dst->dur, 0, b->ptr, b->len);
    return SHOAL_OK;
}

static shoal_err clone_dir(const crash_ctx *cx, const inode *src, inode *dst,
                           uint64_t h);

/* The image of src in this clone: made once, shared by every durable name
 * that reaches it. h identifies the path first used to reach it. */
static shoal_err
clone_inode(const crash_ctx *cx, inode *src, uint64_t h, inode **out)
{
    if (src->copy_gen == cx->gen) {
        *out = src->copy;
        return SHOAL_OK;
    }
    inode *ino = inode_new(src->is_dir);
    if (ino == NULL)
        return SHOAL_ENOMEM;
    shoal_err rc =
        src->is_dir ? clone_dir(cx, src, ino, h) : clone_bytes(cx, src, ino, h);
    if (rc != SHOAL_OK) {
        inode_free(ino);
        return rc;
    }
    src->copy_gen = cx->gen;
    src->copy = ino;
    *out = ino;
    return SHOAL_OK;
}

/* Link the image of durable entry e into dst, as live and durable entry. */
static shoal_err
clone_link(const crash_ctx *cx, const entry *e, inode *dst, uint64_t h)
{
    char *live = mem_strdup(e->name), *durable = mem_strdup(e->name);
    inode *ino = NULL;
    shoal_err rc = SHOAL_ENOMEM;

    if (live != NULL && durable != NULL)
        rc = clone_inode(cx, e->ino, mix64(h ^ fnv1a(e->name)), &ino);
    if (rc != SHOAL_OK) {
        mem_free(live);
        mem_free(durable);
        return rc;
    }
    /* src's table is sorted, so appending keeps dst's sorted. */
    ents_insert(&dst->cur_ents, dst->cur_ents.n, live, ino);
    ents_insert(&dst->dur_ents, dst->dur_ents.n, durable, ino);
    return SHOAL_OK;
}

static shoal_err
clone_dir(const crash_ctx *cx, const inode *src, inode *dst, uint64_t h)
{
    const ents *e = &src->dur_ents;
    shoal_err rc;

    if (ents_reserve(&dst->cur_ents, e->n) != SHOAL_OK ||
        ents_reserve(&dst->dur_ents, e->n) != SHOAL_OK)
        return SHOAL_ENOMEM;
    for (size_t i = 0; i < e->n; i++)
        if ((rc = clone_link(cx, &e->v[i], dst, h)) != SHOAL_OK)
            return rc;
    return SHOAL_OK;
}

shoal_err
fs_mem_crash_clone(fs_mem *m, fs_crash_mode mode, uint64_t seed, fs_mem **out)
{
    fs_mem *c = NULL;
    shoal_err rc;

    *out = NULL;
    SH_ASSERT((unsigned) mode < sizeof crash_fns / sizeof crash_fns[0]);
    if ((rc = fs_mem_open(&c)) != SHOAL_OK)
        return rc;
    c->rng = mix64(seed);
    lock(m);
    crash_ctx cx = {.mode = mode, .seed = seed, .gen = ++m->clone_gen};
    rc = clone_dir(&cx, m->root, c->root, 0);
    unlock(m);
    if (rc != SHOAL_OK) {
        fs_mem_close(c);
        return rc;
    }
    *out = c;
    return SHOAL_OK;
}

/* ---- test helpers ------------------------------------------------------- */

/* The file at path (not a directory), under the lock. */
static shoal_err
file_get(fs_mem *m, const char *path, inode **out)
{
    where w;
    size_t at;
    shoal_err rc;

    if ((rc = resolve(m, path, &w)) != SHOAL_OK)
        return rc;
    if ((*out = where_get(m, &w, &at)) == NULL)
        return SHOAL_ENOTFOUND;
    return (*out)->is_dir ? SHOAL_EIO : SHOAL_OK;
}

shoal_err
fs_mem_file_size(fs_mem *m, const char *path, uint64_t *len_out)
{
    inode *ino;
    lock(m);
    shoal_err rc = file_get(m, path, &ino);
    if (rc == SHOAL_OK)
        *len_out = ino->cur.len;
    unlock(m);
    return rc;
}

/* The helpers change the disk under the file: its pending changes are made
 * durable first (an fsync), then cur and dur change alike, so the invariant
 * cur == dur + pending holds and every crash mode sees the change. */
static shoal_err
poke_locked(fs_mem *m, const char *path, uint64_t off, const void *buf,
            size_t len)
{
    inode *ino;
    shoal_err rc;

    if ((rc = file_get(m, path, &ino)) != SHOAL_OK)
        return rc;
    if (off > ino->cur.len || len > ino->cur.len - off)
        return SHOAL_EINVAL;
    if ((rc = inode_sync(ino)) != SHOAL_OK || len == 0)
        return rc;
    memcpy(ino->cur.ptr + off, buf, len);
    memcpy(ino->dur.ptr + off, buf, len);
    return SHOAL_OK;
}

shoal_err
fs_mem_poke(fs_mem *m, const char *path, uint64_t off, const void *buf,
            size_t len)
{
    lock(m);
    shoal_err rc = poke_locked(m, path, off, buf, len);
    unlock(m);
    return rc;
}

static shoal_err
truncate_locked(fs_mem *m, const char *path, uint64_t len)
{
    inode *ino;
    shoal_err rc;

    if ((rc = file_get(m, path, &ino)) != SHOAL_OK)
        return rc;
    if (len > FS_MEM_MAX_FILE)
        return SHOAL_ENOSPC;
    if (bytes_reserve(&ino->cur, (size_t) len) != SHOAL_OK ||
        bytes_reserve(&ino->dur, (size_t) len) != SHOAL_OK)
        return SHOAL_ENOMEM;
    if ((rc = inode_sync(ino)) != SHOAL_OK)
        return rc;
    bytes_setlen(&ino->cur, (size_t) len);
    bytes_setlen(&ino->dur, (size_t) len);
    return SHOAL_OK;
}

shoal_err
fs_mem_truncate(fs_mem *m, const char *path, uint64_t len)
{
    lock(m);
    shoal_err rc = truncate_locked(m, path, len);
    unlock(m);
    return rc;
}

const fs_mem_fault fs_mem_faults[] = {
    {"EIO once", SHOAL_EIO, false, false},
    {"EIO forever", SHOAL_EIO, true, false},
    {"ENOSPC once", SHOAL_ENOSPC, false, false},
    {"ENOSPC forever", SHOAL_ENOSPC, true, false},
    {"short write", SHOAL_EIO, false, true},
};

const size_t fs_mem_n_faults = sizeof(fs_mem_faults) / sizeof(fs_mem_faults[0]);
