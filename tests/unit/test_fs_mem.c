/*
 * test_fs_mem.c -- the in-memory fault-injecting file system
 * (tests/support/fs_mem.h): POSIX-like semantics of every op, the power-loss
 * model of each crash mode, injected failures (k-th call, forever, short
 * write), allocation failure changing nothing, and concurrent use.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h> /* after the four above, which it needs */

#include "proto/mem.h"
#include "proto/slog.h"
#include "storage/fs.h"
#include "tests/support/fs_mem.h"
#include "tests/support/testutil.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define RW_CREATE (FS_RDWR | FS_CREATE)

/* ---- helpers ------------------------------------------------------------ */

/* Each test gets a fresh fs_mem holding a durable directory "/d". */
static int
mem_up(void **state)
{
    fs_mem *m = NULL;
    if (fs_mem_open(&m) != SHOAL_OK)
        return -1;
    if (fs_mkdir(fs_mem_fs(m), "/d") != SHOAL_OK ||
        fs_dir_fsync(fs_mem_fs(m), "/") != SHOAL_OK) {
        fs_mem_close(m);
        return -1;
    }
    *state = m;
    return 0;
}

static int
mem_down(void **state)
{
    fs_mem_close(*state);
    *state = NULL;
    return 0;
}

static int
open_rw(fs *f, const char *path)
{
    int fd = -1;
    assert_int_equal(fs_open(f, path, RW_CREATE, &fd), SHOAL_OK);
    return fd;
}

static void
write_str(fs *f, int fd, uint64_t off, const char *s)
{
    assert_int_equal(fs_pwrite(f, fd, s, strlen(s), off), SHOAL_OK);
}

/* Create path with content s, fsync it, and dir_fsync "/d". */
static void
put_durable(fs_mem *m, const char *path, const char *s)
{
    fs *f = fs_mem_fs(m);
    int fd = open_rw(f, path);
    write_str(f, fd, 0, s);
    assert_int_equal(fs_fsync(f, fd), SHOAL_OK);
    fs_close(f, fd);
    assert_int_equal(fs_dir_fsync(f, "/d"), SHOAL_OK);
}

static void
assert_file(fs_mem *m, const char *path, const void *want, size_t want_len)
{
    uint8_t *data = NULL;
    size_t len = 0;
    assert_int_equal(fs_read_all(fs_mem_fs(m), path, 1u << 20, &data, &len),
                     SHOAL_OK);
    assert_int_equal(len, want_len);
    if (len > 0)
        assert_memory_equal(data, want, len);
    mem_free(data);
}

static void
assert_str(fs_mem *m, const char *path, const char *s)
{
    assert_file(m, path, s, strlen(s));
}

static void
assert_missing(fs_mem *m, const char *path)
{
    uint64_t len;
    assert_int_equal(fs_mem_file_size(m, path, &len), SHOAL_ENOTFOUND);
}

static fs_mem *
crash(fs_mem *m, fs_crash_mode mode, uint64_t seed)
{
    fs_mem *c = NULL;
    assert_int_equal(fs_mem_crash_clone(m, mode, seed, &c), SHOAL_OK);
    assert_non_null(c);
    return c;
}

typedef struct names {
    char v[16][32];
    size_t n;
} names;

static shoal_err
collect(void *arg, const char *name)
{
    names *ns = arg;
    assert_true(ns->n < 16 && strlen(name) < 32);
    snprintf(ns->v[ns->n++], 32, "%s", name);
    return SHOAL_OK;
}

static int
cmp_name(const void *a, const void *b)
{
    return strcmp(a, b);
}

/* The entries of dir, sorted and joined with ','. */
static const char *
list_sorted(fs *f, const char *dir, char *out, size_t cap)
{
    names ns = {.n = 0};
    assert_int_equal(fs_list(f, dir, collect, &ns), SHOAL_OK);
    qsort(ns.v, ns.n, sizeof ns.v[0], cmp_name);
    out[0] = '\0';
    for (size_t i = 0; i < ns.n; i++) {
        size_t len = strlen(out);
        snprintf(out + len, cap - len, "%s%s", i ? "," : "", ns.v[i]);
    }
    return out;
}

/* ---- operations --------------------------------------------------------- */

static void
test_fs_mem_open_flags(void **state)
{
    fs_mem *m = *state;
    fs *f = fs_mem_fs(m);
    int fd = 7, fd2 = -1;

    assert_int_equal(fs_open(f, "/d/a", FS_RDWR, &fd), SHOAL_ENOTFOUND);
    assert_int_equal(fd, -1);
    assert_int_equal(fs_open(f, "/nodir/a", RW_CREATE, &fd), SHOAL_ENOTFOUND);
    fd = open_rw(f, "/d/a");
    assert_true(fd >= 3); /* a zeroed fd field is never valid */
    write_str(f, fd, 0, "hello");
    assert_int_equal(fs_open(f, "/d/a", RW_CREATE | FS_EXCL, &fd2),
                     SHOAL_EEXISTS);
    assert_int_equal(fd2, -1);
    assert_int_equal(fs_open(f, "/d/a", FS_RDONLY, &fd2), SHOAL_OK);
    assert_int_not_equal(fd, fd2);
    fs_close(f, fd2);
    assert_str(m, "/d/a", "hello");
    assert_int_equal(fs_open(f, "/d/a", FS_RDWR | FS_TRUNC, &fd2), SHOAL_OK);
    assert_str(m, "/d/a", "");
    fs_close(f, fd2);
    /* Directories and paths through files. */
    assert_int_equal(fs_open(f, "/d", FS_RDONLY, &fd2), SHOAL_EIO);
    assert_int_equal(fs_open(f, "/", FS_RDONLY, &fd2), SHOAL_EIO);
    assert_int_equal(fs_open(f, "/d/a/x", RW_CREATE, &fd2), SHOAL_EIO);
    assert_int_equal(fs_open(f, "", RW_CREATE, &fd2), SHOAL_ENOTFOUND);
    /* The lowest free fd is reused, as in POSIX. */
    fs_close(f, fd);
    fd2 = open_rw(f, "/d/b");
    assert_int_equal(fd2, fd);
    fs_close(f, fd2);
    fs_close(f, -1);
    fs_close(f, 12345);
}

static void
test_fs_mem_pread_pwrite(void **state)
{
    fs_mem *m = *state;
    fs *f = fs_mem_fs(m);
    char buf[32];
    size_t n = 99;
    uint64_t size = 0;
    int fd = open_rw(f, "/d/a"), ro = -1;

    write_str(f, fd, 0, "abcdef");
    assert_int_equal(fs_pread(f, fd, buf, 4, 1, &n), SHOAL_OK);
    assert_int_equal(n, 4);
    assert_memory_equal(buf, "bcde", 4);
    assert_int_equal(fs_pread(f, fd, buf, sizeof buf, 4, &n), SHOAL_OK);
    assert_int_equal(n, 2); /* short only at end of file */
    assert_int_equal(fs_pread(f, fd, buf, sizeof buf, 6, &n), SHOAL_OK);
    assert_int_equal(n, 0);
    assert_int_equal(fs_pread(f, fd, buf, sizeof buf, 1000, &n), SHOAL_OK);
    assert_int_equal(n, 0);
    /* Past the end: the gap reads as zeros. */
    write_str(f, fd, 9, "XY");
    assert_file(m, "/d/a", "abcdef\0\0\0XY", 11);
    assert_int_equal(fs_fsize(f, fd, &size), SHOAL_OK);
    assert_int_equal(size, 11);
    /* A zero-length write changes nothing, even past the end. */
    assert_int_equal(fs_pwrite(f, fd, "", 0, 100), SHOAL_OK);
    assert_int_equal(fs_fsize(f, fd, &size), SHOAL_OK);
    assert_int_equal(size, 11);
    /* Read-only and bad fds. */
    assert_int_equal(fs_open(f, "/d/a", FS_RDONLY, &ro), SHOAL_OK);
    assert_int_equal(fs_pwrite(f, ro, "z", 1, 0), SHOAL_EIO);
    assert_int_equal(fs_pread(f, ro, buf, 2, 0, &n), SHOAL_OK);
    assert_memory_equal(buf, "ab", 2);
    fs_close(f, ro);
    assert_int_equal(fs_pwrite(f, ro, "z", 1, 0), SHOAL_EIO);
    assert_int_equal(fs_pread(f, ro, buf, 2, 0, &n), SHOAL_EIO);
    assert_int_equal(fs_fsize(f, ro, &size), SHOAL_EIO);
    assert_int_equal(fs_fsync(f, ro), SHOAL_EIO);
    /* The size cap is ENOSPC, not an allocation attempt. */
    assert_int_equal(fs_pwrite(f, fd, "z", 1, UINT64_MAX - 1), SHOAL_ENOSPC);
    assert_int_equal(fs_pwrite(f, fd, "z", 1, (uint64_t) 1 << 40),
                     SHOAL_ENOSPC);
    fs_close(f, fd);
}

static void
test_fs_mem_ftruncate_fallocate(void **state)
{
    fs_mem *m = *state;
    fs *f = fs_mem_fs(m);
    uint64_t size = 0;
    int fd = open_rw(f, "/d/a"), ro = -1;

    write_str(f, fd, 0, "abcdef");
    assert_int_equal(fs_ftruncate(f, fd, 3), SHOAL_OK);
    assert_str(m, "/d/a", "abc");
    /* Growing again shows zeros, not the old bytes. */
    assert_int_equal(fs_ftruncate(f, fd, 5), SHOAL_OK);
    assert_file(m, "/d/a", "abc\0\0", 5);
    assert_int_equal(fs_fallocate(f, fd, 8), SHOAL_OK);
    assert_file(m, "/d/a", "abc\0\0\0\0\0", 8);
    assert_int_equal(fs_fallocate(f, fd, 2), SHOAL_OK); /* never shrinks */
    assert_int_equal(fs_fsize(f, fd, &size), SHOAL_OK);
    assert_int_equal(size, 8);
    assert_int_equal(fs_fallocate(f, fd, 0), SHOAL_OK);
    assert_int_equal(fs_ftruncate(f, fd, (uint64_t) 1 << 40), SHOAL_ENOSPC);
    assert_int_equal(fs_fallocate(f, fd, (uint64_t) 1 << 40), SHOAL_ENOSPC);
    assert_int_equal(fs_open(f, "/d/a", FS_RDONLY, &ro), SHOAL_OK);
    assert_int_equal(fs_ftruncate(f, ro, 0), SHOAL_EIO);
    assert_int_equal(fs_fallocate(f, ro, 100), SHOAL_EIO);
    assert_int_equal(fs_fsize(f, fd, &size), SHOAL_OK);
    assert_int_equal(size, 8);
    fs_close(f, ro);
    fs_close(f, fd);
}

static void
test_fs_mem_rename(void **state)
{
    fs_mem *m = *state;
    fs *f = fs_mem_fs(m);
    char buf[8], ls[128];
    size_t n = 0;
    int old = -1, fd;

    fd = open_rw(f, "/d/new");
    write_str(f, fd, 0, "new");
    fs_close(f, fd);
    old = open_rw(f, "/d/cur");
    write_str(f, old, 0, "old");
    /* Replaces the target; an fd on the replaced file still reads it. */
    assert_int_equal(fs_rename(f, "/d/new", "/d/cur"), SHOAL_OK);
    assert_str(m, "/d/cur", "new");
    assert_missing(m, "/d/new");
    assert_int_equal(fs_pread(f, old, buf, sizeof buf, 0, &n), SHOAL_OK);
    assert_int_equal(n, 3);
    assert_memory_equal(buf, "old", 3);
    fs_close(f, old);
    /* Same file: nothing happens. */
    assert_int_equal(fs_rename(f, "/d/cur", "/d/./cur"), SHOAL_OK);
    assert_str(m, "/d/cur", "new");
    /* Across directories. */
    assert_int_equal(fs_mkdir(f, "/e"), SHOAL_OK);
    assert_int_equal(fs_rename(f, "/d/cur", "/e/moved"), SHOAL_OK);
    assert_str(m, "/e/moved", "new");
    assert_string_equal(list_sorted(f, "/d", ls, sizeof ls), "");
    /* Errors. */
    assert_int_equal(fs_rename(f, "/d/none", "/d/x"), SHOAL_ENOTFOUND);
    assert_int_equal(fs_rename(f, "/e/moved", "/nodir/x"), SHOAL_ENOTFOUND);
    assert_int_equal(fs_rename(f, "/e", "/f"), SHOAL_EIO);
    assert_int_equal(fs_rename(f, "/e/moved", "/d"), SHOAL_EIO);
    assert_str(m, "/e/moved", "new");
}

static void
test_fs_mem_unlink_open_file_keeps_working(void **state)
{
    fs_mem *m = *state;
    fs *f = fs_mem_fs(m);
    char buf[8];
    size_t n = 0;
    int fd = open_rw(f, "/d/a");

    write_str(f, fd, 0, "abc");
    assert_int_equal(fs_unlink(f, "/d/a"), SHOAL_OK);
    assert_missing(m, "/d/a");
    write_str(f, fd, 3, "def");
    assert_int_equal(fs_fsync(f, fd), SHOAL_OK);
    assert_int_equal(fs_pread(f, fd, buf, sizeof buf, 0, &n), SHOAL_OK);
    assert_int_equal(n, 6);
    assert_memory_equal(buf, "abcdef", 6);
    fs_close(f, fd);
    assert_int_equal(fs_unlink(f, "/d/a"), SHOAL_ENOTFOUND);
    assert_int_equal(fs_unlink(f, "/d"), SHOAL_EIO);
    assert_int_equal(fs_unlink(f, "/"), SHOAL_EIO);
    /* A new file under the old name is a new file. */
    fd = open_rw(f, "/d/a");
    fs_close(f, fd);
    assert_str(m, "/d/a", "");
}

static shoal_err
stop_at_second(void *arg, const char *name)
{
    (void) name;
    return ++*(int *) arg == 2 ? SHOAL_ETIMEOUT : SHOAL_OK;
}

typedef struct unlinker {
    fs *f;
    int n;
} unlinker;

/* The callback may call back into the file system (no lock is held). */
static shoal_err
unlink_each(void *arg, const char *name)
{
    unlinker *u = arg;
    char path[64];
    assert_int_equal(fs_path(path, sizeof path, "/d", name), SHOAL_OK);
    u->n++;
    return fs_unlink(u->f, path);
}

static void
test_fs_mem_mkdir_list(void **state)
{
    fs_mem *m = *state;
    fs *f = fs_mem_fs(m);
    char ls[128];
    int calls = 0;

    assert_int_equal(fs_mkdir(f, "/d"), SHOAL_OK); /* exists: OK */
    assert_int_equal(fs_mkdir(f, "/"), SHOAL_OK);
    assert_int_equal(fs_mkdir(f, "/d/sub"), SHOAL_OK);
    assert_int_equal(fs_mkdir(f, "/x/y"), SHOAL_ENOTFOUND);
    fs_close(f, open_rw(f, "/d/b"));
    fs_close(f, open_rw(f, "/d/a"));
    fs_close(f, open_rw(f, "/d/sub/c"));
    assert_int_equal(fs_mkdir(f, "/d/a"), SHOAL_EEXISTS); /* a file */
    assert_string_equal(list_sorted(f, "/d", ls, sizeof ls), "a,b,sub");
    assert_string_equal(list_sorted(f, "/d/sub", ls, sizeof ls), "c");
    assert_string_equal(list_sorted(f, "/", ls, sizeof ls), "d");
    assert_int_equal(fs_list(f, "/nodir", collect, NULL), SHOAL_ENOTFOUND);
    assert_int_equal(fs_list(f, "/d/a", collect, NULL), SHOAL_EIO);
    assert_int_equal(fs_list(f, "/d", stop_at_second, &calls), SHOAL_ETIMEOUT);
    assert_int_equal(calls, 2);
    /* Unlinking from the callback works; "sub" is refused and stops it. */
    assert_int_equal(fs_unlink(f, "/d/sub/c"), SHOAL_OK);
    unlinker u = {.f = f, .n = 0};
    shoal_err rc = fs_list(f, "/d", unlink_each, &u);
    assert_true(rc == SHOAL_OK || rc == SHOAL_EIO);
    assert_true(u.n >= 1 && u.n <= 3);
}

static void
test_fs_mem_paths(void **state)
{
    fs_mem *m = *state;
    fs *f = fs_mem_fs(m);
    int fd = open_rw(f, "//d///a");
    char ls[64];

    write_str(f, fd, 0, "x");
    fs_close(f, fd);
    assert_str(m, "/d/a", "x");
    assert_str(m, "d/a", "x"); /* relative to "/" */
    assert_str(m, "/./d/./a", "x");
    assert_int_equal(fs_dir_fsync(f, "/d/"), SHOAL_OK);
    assert_string_equal(list_sorted(f, "d/", ls, sizeof ls), "a");
    assert_int_equal(fs_open(f, "/d/../d/a", FS_RDONLY, &fd), SHOAL_EIO);
    assert_int_equal(fs_mkdir(f, ".."), SHOAL_EIO);
    assert_int_equal(fs_dir_fsync(f, "/d/a"), SHOAL_EIO);
    assert_int_equal(fs_dir_fsync(f, "/zz"), SHOAL_ENOTFOUND);
}

static void
test_fs_mem_read_all(void **state)
{
    fs_mem *m = *state;
    fs *f = fs_mem_fs(m);
    uint8_t *buf = (uint8_t *) "x";
    size_t len = 9;

    put_durable(m, "/d/a", "0123456789");
    assert_int_equal(fs_read_all(f, "/d/a", 9, &buf, &len), SHOAL_ETOOLARGE);
    assert_null(buf);
    assert_int_equal(len, 0);
    assert_int_equal(fs_read_all(f, "/d/a", 10, &buf, &len), SHOAL_OK);
    assert_int_equal(len, 10);
    assert_memory_equal(buf, "0123456789", 10);
    mem_free(buf);
    assert_int_equal(fs_read_all(f, "/d/none", 10, &buf, &len),
                     SHOAL_ENOTFOUND);
}

static void
test_fs_mem_helpers(void **state)
{
    fs_mem *m = *state;
    uint64_t len = 0;

    put_durable(m, "/d/a", "abcdef");
    assert_int_equal(fs_mem_file_size(m, "/d/a", &len), SHOAL_OK);
    assert_int_equal(len, 6);
    assert_int_equal(fs_mem_file_size(m, "/d", &len), SHOAL_EIO);
    assert_int_equal(fs_mem_poke(m, "/d/a", 1, "XY", 2), SHOAL_OK);
    assert_str(m, "/d/a", "aXYdef");
    assert_int_equal(fs_mem_poke(m, "/d/a", 5, "XY", 2), SHOAL_EINVAL);
    assert_int_equal(fs_mem_poke(m, "/d/none", 0, "XY", 2), SHOAL_ENOTFOUND);
    assert_int_equal(fs_mem_truncate(m, "/d/a", 4), SHOAL_OK);
    assert_str(m, "/d/a", "aXYd");
    assert_int_equal(fs_mem_truncate(m, "/d/none", 4), SHOAL_ENOTFOUND);
    /* Both are durable: a crash that drops everything unsynced keeps them. */
    fs_mem *c = crash(m, FS_CRASH_DROP_UNSYNCED, 1);
    assert_str(c, "/d/a", "aXYd");
    fs_mem_close(c);
}

/* Unsynced bytes under the helpers become durable first (fs_mem.c). */
static void
test_fs_mem_helpers_on_unsynced_file(void **state)
{
    fs_mem *m = *state;
    fs *f = fs_mem_fs(m);
    int fd = open_rw(f, "/d/a");

    assert_int_equal(fs_dir_fsync(f, "/d"), SHOAL_OK);
    write_str(f, fd, 0, "abcdef");
    assert_int_equal(fs_mem_truncate(m, "/d/a", 3), SHOAL_OK);
    assert_int_equal(fs_fsync(f, fd), SHOAL_OK); /* replays consistently */
    assert_str(m, "/d/a", "abc");
    write_str(f, fd, 3, "def");
    assert_int_equal(fs_mem_poke(m, "/d/a", 4, "Z", 1), SHOAL_OK);
    fs_mem *c = crash(m, FS_CRASH_DROP_UNSYNCED, 1);
    assert_str(c, "/d/a", "abcdZf");
    fs_mem_close(c);
    fs_close(f, fd);
}

/* ---- power loss --------------------------------------------------------- */

static void
test_fs_mem_crash_drops_unsynced_keeps_fsynced(void **state)
{
    fs_mem *m = *state;
    fs *f = fs_mem_fs(m);
    int fd = open_rw(f, "/d/a");

    assert_int_equal(fs_dir_fsync(f, "/d"), SHOAL_OK);
    write_str(f, fd, 0, "synced|");
    assert_int_equal(fs_fsync(f, fd), SHOAL_OK);
    write_str(f, fd, 7, "unsynced");
    assert_int_equal(fs_ftruncate(f, fd, 12), SHOAL_OK);

    fs_mem *c = crash(m, FS_CRASH_DROP_UNSYNCED, 1);
    assert_str(c, "/d/a", "synced|");
    fs_mem_close(c);
    c = crash(m, FS_CRASH_KEEP_UNSYNCED, 1);
    assert_str(c, "/d/a", "synced|unsyn");
    fs_mem_close(c);
    /* The source is untouched by cloning. */
    assert_str(m, "/d/a", "synced|unsyn");
    fs_close(f, fd);
}

static void
test_fs_mem_crash_create_without_dir_fsync_vanishes(void **state)
{
    fs_mem *m = *state;
    fs *f = fs_mem_fs(m);
    int fd = open_rw(f, "/d/a");

    write_str(f, fd, 0, "data");
    assert_int_equal(fs_fsync(f, fd), SHOAL_OK); /* data, not the entry */
    fs_mem *c = crash(m, FS_CRASH_KEEP_UNSYNCED, 1);
    assert_missing(c, "/d/a");
    fs_mem_close(c);

    assert_int_equal(fs_dir_fsync(f, "/d"), SHOAL_OK);
    c = crash(m, FS_CRASH_DROP_UNSYNCED, 1);
    assert_str(c, "/d/a", "data");
    fs_mem_close(c);
    fs_close(f, fd);
}

/* The entry made durable before any fsync of the data: an empty file. */
static void
test_fs_mem_crash_entry_without_fsync_is_empty(void **state)
{
    fs_mem *m = *state;
    fs *f = fs_mem_fs(m);
    int fd = open_rw(f, "/d/a");

    write_str(f, fd, 0, "data");
    assert_int_equal(fs_dir_fsync(f, "/d"), SHOAL_OK);
    fs_mem *c = crash(m, FS_CRASH_DROP_UNSYNCED, 1);
    assert_str(c, "/d/a", "");
    fs_mem_close(c);
    fs_close(f, fd);
}

static void
test_fs_mem_crash_rename_needs_dir_fsync(void **state)
{
    fs_mem *m = *state;
    fs *f = fs_mem_fs(m);
    char ls[64];

    put_durable(m, "/d/snap", "old");
    int fd = open_rw(f, "/d/snap.tmp");
    write_str(f, fd, 0, "new");
    assert_int_equal(fs_fsync(f, fd), SHOAL_OK);
    fs_close(f, fd);
    assert_int_equal(fs_rename(f, "/d/snap.tmp", "/d/snap"), SHOAL_OK);

    /* Undone: the old name still points at the old inode. */
    fs_mem *c = crash(m, FS_CRASH_KEEP_UNSYNCED, 1);
    assert_str(c, "/d/snap", "old");
    assert_string_equal(list_sorted(fs_mem_fs(c), "/d", ls, sizeof ls), "snap");
    fs_mem_close(c);

    assert_int_equal(fs_dir_fsync(f, "/d"), SHOAL_OK);
    c = crash(m, FS_CRASH_DROP_UNSYNCED, 1);
    assert_str(c, "/d/snap", "new");
    assert_string_equal(list_sorted(fs_mem_fs(c), "/d", ls, sizeof ls), "snap");
    fs_mem_close(c);
}

/* A temp file made durable, then renamed without dir_fsync: the crash
 * shows the temp name again. */
static void
test_fs_mem_crash_rename_undone_restores_source(void **state)
{
    fs_mem *m = *state;
    fs *f = fs_mem_fs(m);

    put_durable(m, "/d/a", "A");
    assert_int_equal(fs_rename(f, "/d/a", "/d/b"), SHOAL_OK);
    fs_mem *c = crash(m, FS_CRASH_DROP_UNSYNCED, 1);
    assert_str(c, "/d/a", "A");
    assert_missing(c, "/d/b");
    fs_mem_close(c);
}

/* Across directories with only the target synced, both names survive and
 * still name one file. */
static void
test_fs_mem_crash_rename_across_dirs_shares_inode(void **state)
{
    fs_mem *m = *state;
    fs *f = fs_mem_fs(m);
    int fd = -1;

    assert_int_equal(fs_mkdir(f, "/e"), SHOAL_OK);
    assert_int_equal(fs_dir_fsync(f, "/"), SHOAL_OK);
    put_durable(m, "/d/a", "A");
    assert_int_equal(fs_rename(f, "/d/a", "/e/b"), SHOAL_OK);
    assert_int_equal(fs_dir_fsync(f, "/e"), SHOAL_OK);
    fs_mem *c = crash(m, FS_CRASH_DROP_UNSYNCED, 1);
    fs *cf = fs_mem_fs(c);
    assert_str(c, "/d/a", "A");
    assert_str(c, "/e/b", "A");
    assert_int_equal(fs_open(cf, "/e/b", FS_RDWR, &fd), SHOAL_OK);
    write_str(cf, fd, 0, "Z");
    fs_close(cf, fd);
    assert_str(c, "/d/a", "Z");
    fs_mem_close(c);
}

static void
test_fs_mem_crash_unlink_needs_dir_fsync(void **state)
{
    fs_mem *m = *state;
    fs *f = fs_mem_fs(m);

    put_durable(m, "/d/a", "A");
    assert_int_equal(fs_unlink(f, "/d/a"), SHOAL_OK);
    fs_mem *c = crash(m, FS_CRASH_DROP_UNSYNCED, 1);
    assert_str(c, "/d/a", "A");
    fs_mem_close(c);
    assert_int_equal(fs_dir_fsync(f, "/d"), SHOAL_OK);
    c = crash(m, FS_CRASH_DROP_UNSYNCED, 1);
    assert_missing(c, "/d/a");
    fs_mem_close(c);
}

/* An open, unlinked file whose unlink was made durable is gone after a
 * crash even though the fd kept writing and syncing it. */
static void
test_fs_mem_crash_unlinked_open_file_is_gone(void **state)
{
    fs_mem *m = *state;
    fs *f = fs_mem_fs(m);

    put_durable(m, "/d/a", "A");
    int fd = open_rw(f, "/d/a");
    assert_int_equal(fs_unlink(f, "/d/a"), SHOAL_OK);
    assert_int_equal(fs_dir_fsync(f, "/d"), SHOAL_OK);
    write_str(f, fd, 1, "B");
    assert_int_equal(fs_fsync(f, fd), SHOAL_OK);
    fs_mem *c = crash(m, FS_CRASH_KEEP_UNSYNCED, 1);
    assert_missing(c, "/d/a");
    fs_mem_close(c);
    fs_close(f, fd);
}

static void
test_fs_mem_crash_mkdir_needs_parent_dir_fsync(void **state)
{
    fs_mem *m = *state;
    fs *f = fs_mem_fs(m);
    char ls[64];

    assert_int_equal(fs_mkdir(f, "/d/sub"), SHOAL_OK);
    int fd = open_rw(f, "/d/sub/x");
    write_str(f, fd, 0, "x");
    assert_int_equal(fs_fsync(f, fd), SHOAL_OK);
    fs_close(f, fd);
    assert_int_equal(fs_dir_fsync(f, "/d/sub"), SHOAL_OK);
    /* The file's entry is durable, but its directory's entry is not. */
    fs_mem *c = crash(m, FS_CRASH_KEEP_UNSYNCED, 1);
    assert_int_equal(fs_list(fs_mem_fs(c), "/d/sub", collect, NULL),
                     SHOAL_ENOTFOUND);
    fs_mem_close(c);
    assert_int_equal(fs_dir_fsync(f, "/d"), SHOAL_OK);
    c = crash(m, FS_CRASH_DROP_UNSYNCED, 1);
    assert_string_equal(list_sorted(fs_mem_fs(c), "/d/sub", ls, sizeof ls),
                        "x");
    assert_str(c, "/d/sub/x", "x");
    fs_mem_close(c);
}

static void
test_fs_mem_crash_torn_last_is_prefix(void **state)
{
    fs_mem *m = *state;
    fs *f = fs_mem_fs(m);
    bool seen_len[16] = {false};
    int fd = open_rw(f, "/d/a");

    assert_int_equal(fs_dir_fsync(f, "/d"), SHOAL_OK);
    write_str(f, fd, 0, "AAAA");
    assert_int_equal(fs_fsync(f, fd), SHOAL_OK);
    write_str(f, fd, 4, "BBBB");
    write_str(f, fd, 8, "CCCCCCCC");
    for (uint64_t seed = 0; seed < 64; seed++) {
        fs_mem *c = crash(m, FS_CRASH_TORN_LAST, seed);
        uint8_t *buf = NULL;
        size_t len = 0;
        assert_int_equal(fs_read_all(fs_mem_fs(c), "/d/a", 64, &buf, &len),
                         SHOAL_OK);
        assert_true(len >= 8 && len < 16); /* a proper prefix of the C's */
        assert_memory_equal(buf, "AAAABBBB", 8);
        for (size_t i = 8; i < len; i++)
            assert_int_equal(buf[i], 'C');
        seen_len[len] = true;
        mem_free(buf);
        fs_mem_close(c);
    }
    int distinct = 0;
    for (size_t i = 0; i < 16; i++)
        distinct += seen_len[i];
    assert_true(distinct >= 4);
    fs_close(f, fd);
}

enum { SLOTS = 16, SLOT_LEN = 16 };

/* Count how slot i of a RANDOM crash image came out: [0] dropped, [1] kept,
 * [2] torn (a non-empty proper prefix), [3] garbled. */
static void
classify_slots(const uint8_t *img, unsigned counts[4])
{
    for (unsigned i = 0; i < SLOTS; i++) {
        const uint8_t *s = img + i * SLOT_LEN;
        uint8_t v = (uint8_t) (i + 1);
        size_t k = 0;
        while (k < SLOT_LEN && s[k] == v)
            k++;
        bool rest_zero = true;
        for (size_t j = k; j < SLOT_LEN; j++)
            rest_zero = rest_zero && s[j] == 0;
        if (k == 0 && rest_zero)
            counts[0]++;
        else if (k == SLOT_LEN)
            counts[1]++;
        else if (rest_zero)
            counts[2]++;
        else
            counts[3]++;
    }
}

static void
test_fs_mem_crash_random_mixes_outcomes(void **state)
{
    fs_mem *m = *state;
    fs *f = fs_mem_fs(m);
    uint8_t slot[SLOT_LEN];
    unsigned counts[4] = {0};
    int fd = open_rw(f, "/d/a");

    assert_int_equal(fs_dir_fsync(f, "/d"), SHOAL_OK);
    assert_int_equal(fs_fallocate(f, fd, SLOTS * SLOT_LEN), SHOAL_OK);
    assert_int_equal(fs_fsync(f, fd), SHOAL_OK);
    for (unsigned i = 0; i < SLOTS; i++) {
        memset(slot, (int) i + 1, sizeof slot);
        assert_int_equal(fs_pwrite(f, fd, slot, sizeof slot, i * SLOT_LEN),
                         SHOAL_OK);
    }
    for (uint64_t seed = 1; seed <= 200; seed++) {
        fs_mem *c = crash(m, FS_CRASH_RANDOM, seed);
        uint8_t *img = NULL;
        size_t len = 0;
        assert_int_equal(fs_read_all(fs_mem_fs(c), "/d/a", 1024, &img, &len),
                         SHOAL_OK);
        assert_int_equal(len, SLOTS * SLOT_LEN);
        classify_slots(img, counts);
        mem_free(img);
        fs_mem_close(c);
    }
    /* 3200 samples: p = 1/2 dropped, 3/8 kept, 1/16 torn, 1/16 garbled
     * (a torn-to-empty write counts as dropped, a garble that hit the
     * right bytes as kept). Fixed seeds, so the bounds are not flaky. */
    assert_in_range(counts[0], 1400, 1900);
    assert_in_range(counts[1], 1000, 1400);
    assert_in_range(counts[2], 80, 300);
    assert_in_range(counts[3], 80, 300);
    fs_close(f, fd);
}

/* Many files with pending writes, for comparing crash images. */
static void
make_pending_files(fs_mem *m)
{
    fs *f = fs_mem_fs(m);
    char path[32], data[24];
    uint64_t rng = 99;
    for (int i = 0; i < 8; i++) {
        snprintf(path, sizeof path, "/d/f%d", i);
        put_durable(m, path, "base");
        int fd = open_rw(f, path);
        for (int w = 0; w < 12; w++) {
            memset(data, 'a' + w, sizeof data);
            assert_int_equal(fs_pwrite(f, fd, data, 1 + tu_rand(&rng) % 23,
                                       tu_rand(&rng) % 64),
                             SHOAL_OK);
        }
        fs_close(f, fd);
    }
}

/* Whether every file of the set is byte-identical in a and b. */
static bool
same_images(fs_mem *a, fs_mem *b)
{
    char path[32];
    bool same = true;
    for (int i = 0; i < 8 && same; i++) {
        uint8_t *x = NULL, *y = NULL;
        size_t xl = 0, yl = 0;
        snprintf(path, sizeof path, "/d/f%d", i);
        assert_int_equal(fs_read_all(fs_mem_fs(a), path, 4096, &x, &xl),
                         SHOAL_OK);
        assert_int_equal(fs_read_all(fs_mem_fs(b), path, 4096, &y, &yl),
                         SHOAL_OK);
        same = xl == yl && (xl == 0 || memcmp(x, y, xl) == 0);
        mem_free(x);
        mem_free(y);
    }
    return same;
}

static void
test_fs_mem_crash_seed_replays(void **state)
{
    fs_mem *m = *state;
    static const fs_crash_mode modes[] = {FS_CRASH_RANDOM, FS_CRASH_TORN_LAST};

    make_pending_files(m);
    for (size_t i = 0; i < 2; i++) {
        fs_mem *a = crash(m, modes[i], 42);
        fs_mem *b = crash(m, modes[i], 42);
        fs_mem *c = crash(m, modes[i], 43);
        assert_true(same_images(a, b));
        assert_false(same_images(a, c));
        fs_mem_close(a);
        fs_mem_close(b);
        fs_mem_close(c);
    }
    /* The deterministic modes ignore the seed. */
    fs_mem *a = crash(m, FS_CRASH_KEEP_UNSYNCED, 1);
    fs_mem *b = crash(m, FS_CRASH_KEEP_UNSYNCED, 2);
    assert_true(same_images(a, b));
    assert_true(same_images(a, m));
    fs_mem_close(a);
    fs_mem_close(b);
}

/* A clone is a separate file system: no fds, no faults, no counts. */
static void
test_fs_mem_crash_clone_is_independent(void **state)
{
    fs_mem *m = *state;
    fs *f = fs_mem_fs(m);
    int fd = open_rw(f, "/d/a"), cfd = -1;

    assert_int_equal(fs_dir_fsync(f, "/d"), SHOAL_OK);
    fs_mem_fail(m, FS_OP_ALL, 100, SHOAL_EIO, true, false);
    fs_mem *c = crash(m, FS_CRASH_KEEP_UNSYNCED, 1);
    fs *cf = fs_mem_fs(c);
    assert_int_equal(fs_mem_op_count(c, FS_OP_ALL), 0);
    assert_int_equal(fs_pwrite(cf, fd, "x", 1, 0), SHOAL_EIO); /* no fds */
    fs_mem_fail(c, FS_OP_ALL, 1, SHOAL_EIO, true, false);
    assert_int_equal(fs_pwrite(f, fd, "x", 1, 0), SHOAL_OK); /* m's own */
    fs_mem_fail_clear(c);
    assert_int_equal(fs_open(cf, "/d/a", FS_RDWR, &cfd), SHOAL_OK);
    write_str(cf, cfd, 0, "clone");
    fs_close(cf, cfd);
    fs_mem_fail_clear(m);
    assert_str(m, "/d/a", "x");
    assert_str(c, "/d/a", "clone");
    assert_int_equal(fs_mem_fail_count(c), 0);
    fs_mem_close(c);
    fs_close(f, fd);
}

/* A random history on a few files, checked against a byte-array model:
 * reads see the model, KEEP_UNSYNCED equals the current state, and
 * DROP_UNSYNCED equals each file as of its last fsync. */
enum { NFILES = 3, MODEL_CAP = 512 };

typedef struct model {
    uint8_t cur[MODEL_CAP], dur[MODEL_CAP];
    size_t cur_len, dur_len;
} model;

static void
model_step(fs *f, int fd, model *md, uint64_t *rng)
{
    uint8_t data[40];
    uint64_t r = tu_rand(rng) % 10, off = tu_rand(rng) % 300;
    size_t len = 1 + tu_rand(rng) % sizeof data;

    if (r < 6) {
        for (size_t i = 0; i < len; i++)
            data[i] = (uint8_t) tu_rand(rng);
        assert_int_equal(fs_pwrite(f, fd, data, len, off), SHOAL_OK);
        if (off > md->cur_len)
            memset(md->cur + md->cur_len, 0, off - md->cur_len);
        memcpy(md->cur + off, data, len);
        if (off + len > md->cur_len)
            md->cur_len = off + len;
    } else if (r < 8) {
        assert_int_equal(r == 6 ? fs_ftruncate(f, fd, off)
                                : fs_fallocate(f, fd, off),
                         SHOAL_OK);
        if (off > md->cur_len)
            memset(md->cur + md->cur_len, 0, off - md->cur_len);
        if (r == 6 || off > md->cur_len)
            md->cur_len = off;
    } else {
        assert_int_equal(fs_fsync(f, fd), SHOAL_OK);
        memcpy(md->dur, md->cur, md->cur_len);
        md->dur_len = md->cur_len;
    }
}

static void
test_fs_mem_model_random_history(void **state)
{
    fs_mem *m = *state;
    fs *f = fs_mem_fs(m);
    static model md[NFILES];
    int fds[NFILES];
    char path[NFILES][16];
    uint64_t rng = tu_seed("fs_mem model");

    memset(md, 0, sizeof md);
    for (int i = 0; i < NFILES; i++) {
        snprintf(path[i], sizeof path[i], "/d/m%d", i);
        fds[i] = open_rw(f, path[i]);
    }
    assert_int_equal(fs_dir_fsync(f, "/d"), SHOAL_OK);
    for (int step = 0; step < 600; step++) {
        int i = (int) (tu_rand(&rng) % NFILES);
        model_step(f, fds[i], &md[i], &rng);
        if (step % 50 == 0)
            assert_file(m, path[i], md[i].cur, md[i].cur_len);
    }
    fs_mem *keep = crash(m, FS_CRASH_KEEP_UNSYNCED, 0);
    fs_mem *drop = crash(m, FS_CRASH_DROP_UNSYNCED, 0);
    for (int i = 0; i < NFILES; i++) {
        assert_file(m, path[i], md[i].cur, md[i].cur_len);
        assert_file(keep, path[i], md[i].cur, md[i].cur_len);
        assert_file(drop, path[i], md[i].dur, md[i].dur_len);
        fs_close(f, fds[i]);
    }
    fs_mem_close(keep);
    fs_mem_close(drop);
}

/* ---- injected failures -------------------------------------------------- */

static void
test_fs_mem_fail_kth_call_once(void **state)
{
    fs_mem *m = *state;
    fs *f = fs_mem_fs(m);
    int fd = open_rw(f, "/d/a");

    fs_mem_fail(m, FS_OP_PWRITE, 3, SHOAL_EIO, false, false);
    write_str(f, fd, 0, "1");
    assert_int_equal(fs_fsync(f, fd), SHOAL_OK); /* other ops don't count */
    write_str(f, fd, 1, "2");
    assert_int_equal(fs_pwrite(f, fd, "3", 1, 2), SHOAL_EIO);
    assert_str(m, "/d/a", "12"); /* the failed call changed nothing */
    write_str(f, fd, 2, "4");
    write_str(f, fd, 3, "5");
    assert_str(m, "/d/a", "1245");
    assert_int_equal(fs_mem_fail_count(m), 1);
    fs_close(f, fd);
}

static void
test_fs_mem_fail_forever(void **state)
{
    fs_mem *m = *state;
    fs *f = fs_mem_fs(m);
    int fd = open_rw(f, "/d/a");

    fs_mem_fail(m, FS_OP_FSYNC | FS_OP_DIR_FSYNC, 2, SHOAL_ENOSPC, true, false);
    assert_int_equal(fs_fsync(f, fd), SHOAL_OK);
    for (int i = 0; i < 5; i++) {
        assert_int_equal(fs_fsync(f, fd), SHOAL_ENOSPC);
        assert_int_equal(fs_dir_fsync(f, "/d"), SHOAL_ENOSPC);
    }
    write_str(f, fd, 0, "ok"); /* not in the mask */
    assert_int_equal(fs_mem_fail_count(m), 10);
    fs_mem_fail_clear(m);
    assert_int_equal(fs_fsync(f, fd), SHOAL_OK);
    assert_int_equal(fs_mem_fail_count(m), 10);
    fs_close(f, fd);
}

/* Setting a failure restarts the count from that moment. */
static void
test_fs_mem_fail_counts_from_set(void **state)
{
    fs_mem *m = *state;
    fs *f = fs_mem_fs(m);
    int fd = open_rw(f, "/d/a");

    for (int i = 0; i < 5; i++)
        write_str(f, fd, 0, "x");
    fs_mem_fail(m, FS_OP_PWRITE, 1, SHOAL_EIO, false, false);
    assert_int_equal(fs_pwrite(f, fd, "y", 1, 0), SHOAL_EIO);
    write_str(f, fd, 0, "z");
    fs_mem_fail(m, FS_OP_PWRITE, 2, SHOAL_ENOSPC, false, false);
    write_str(f, fd, 0, "z");
    assert_int_equal(fs_pwrite(f, fd, "y", 1, 0), SHOAL_ENOSPC);
    fs_close(f, fd);
}

static void
test_fs_mem_fail_short_write_is_proper_prefix(void **state)
{
    fs_mem *m = *state;
    fs *f = fs_mem_fs(m);
    const char *data = "0123456789abcdef";
    bool seen[16] = {false};
    int distinct = 0;

    for (int round = 0; round < 64; round++) {
        int fd = -1;
        uint64_t size = 0;
        assert_int_equal(fs_open(f, "/d/a", RW_CREATE | FS_TRUNC, &fd),
                         SHOAL_OK);
        fs_mem_fail(m, FS_OP_PWRITE, 1, SHOAL_EIO, false, true);
        assert_int_equal(fs_pwrite(f, fd, data, 16, 0), SHOAL_EIO);
        fs_mem_fail_clear(m);
        assert_int_equal(fs_fsize(f, fd, &size), SHOAL_OK);
        assert_true(size >= 1 && size <= 15);
        assert_file(m, "/d/a", data, (size_t) size);
        distinct += !seen[size];
        seen[size] = true;
        fs_close(f, fd);
    }
    assert_true(distinct >= 5);
    /* One byte cannot be split: nothing lands. */
    int fd = open_rw(f, "/d/b");
    fs_mem_fail(m, FS_OP_PWRITE, 1, SHOAL_EIO, false, true);
    assert_int_equal(fs_pwrite(f, fd, "x", 1, 0), SHOAL_EIO);
    fs_mem_fail_clear(m);
    assert_str(m, "/d/b", "");
    fs_close(f, fd);
}

/* A short write lands as an unsynced write like any other. */
static void
test_fs_mem_fail_short_write_is_unsynced(void **state)
{
    fs_mem *m = *state;
    fs *f = fs_mem_fs(m);

    put_durable(m, "/d/a", "base");
    int fd = open_rw(f, "/d/a");
    fs_mem_fail(m, FS_OP_PWRITE, 1, SHOAL_EIO, false, true);
    assert_int_equal(fs_pwrite(f, fd, "XXXXXXXX", 8, 4), SHOAL_EIO);
    fs_mem_fail_clear(m);
    fs_mem *c = crash(m, FS_CRASH_DROP_UNSYNCED, 1);
    assert_str(c, "/d/a", "base");
    fs_mem_close(c);
    fs_close(f, fd);
}

static void
test_fs_mem_op_counts(void **state)
{
    fs_mem *m = *state; /* mem_up made one mkdir and one dir_fsync */
    fs *f = fs_mem_fs(m);
    int fd = -1;
    size_t n;
    uint64_t size;
    char buf[4];

    assert_int_equal(fs_mem_op_count(m, FS_OP_MKDIR), 1);
    assert_int_equal(fs_mem_op_count(m, FS_OP_DIR_FSYNC), 1);
    assert_int_equal(fs_open(f, "/d/none", FS_RDONLY, &fd), SHOAL_ENOTFOUND);
    fd = open_rw(f, "/d/a");
    write_str(f, fd, 0, "ab");
    assert_int_equal(fs_pread(f, fd, buf, 2, 0, &n), SHOAL_OK);
    assert_int_equal(fs_fsync(f, fd), SHOAL_OK);
    assert_int_equal(fs_ftruncate(f, fd, 1), SHOAL_OK);
    assert_int_equal(fs_fallocate(f, fd, 4), SHOAL_OK);
    assert_int_equal(fs_fsize(f, fd, &size), SHOAL_OK);
    fs_close(f, fd);
    assert_int_equal(fs_rename(f, "/d/a", "/d/b"), SHOAL_OK);
    assert_int_equal(fs_unlink(f, "/d/b"), SHOAL_OK);
    assert_int_equal(fs_list(f, "/d", collect, NULL), SHOAL_OK);
    fs_mem_fail(m, FS_OP_UNLINK, 1, SHOAL_EIO, true, false);
    assert_int_equal(fs_unlink(f, "/d/b"), SHOAL_EIO); /* failed: counted */

    assert_int_equal(fs_mem_op_count(m, FS_OP_OPEN), 2);
    assert_int_equal(fs_mem_op_count(m, FS_OP_UNLINK), 2);
    assert_int_equal(fs_mem_op_count(m, FS_OP_PWRITE | FS_OP_PREAD), 2);
    assert_int_equal(fs_mem_op_count(m, FS_OP_WRITES), 9);
    assert_int_equal(fs_mem_op_count(m, FS_OP_ALL), 14);
    assert_int_equal(fs_mem_op_count(m, 0), 0);
}

/* Every op that fails by injection leaves the state as it was. */
static void
test_fs_mem_failed_ops_change_nothing(void **state)
{
    fs_mem *m = *state;
    fs *f = fs_mem_fs(m);
    int fd = -1;
    char ls[64];

    put_durable(m, "/d/a", "A");
    fs_mem_fail(m, FS_OP_ALL, 1, SHOAL_EIO, true, false);
    assert_int_equal(fs_open(f, "/d/new", RW_CREATE, &fd), SHOAL_EIO);
    assert_int_equal(fd, -1);
    assert_int_equal(fs_open(f, "/d/a", FS_RDWR | FS_TRUNC, &fd), SHOAL_EIO);
    assert_int_equal(fs_rename(f, "/d/a", "/d/b"), SHOAL_EIO);
    assert_int_equal(fs_unlink(f, "/d/a"), SHOAL_EIO);
    assert_int_equal(fs_mkdir(f, "/d/sub"), SHOAL_EIO);
    assert_int_equal(fs_list(f, "/d", collect, NULL), SHOAL_EIO);
    fs_mem_fail_clear(m);
    assert_string_equal(list_sorted(f, "/d", ls, sizeof ls), "a");
    assert_str(m, "/d/a", "A");

    fd = open_rw(f, "/d/a");
    write_str(f, fd, 1, "B");
    fs_close(f, open_rw(f, "/d/c"));
    fs_mem_fail(m, FS_OP_ALL, 1, SHOAL_EIO, true, false);
    assert_int_equal(fs_pwrite(f, fd, "C", 1, 2), SHOAL_EIO);
    assert_int_equal(fs_ftruncate(f, fd, 0), SHOAL_EIO);
    assert_int_equal(fs_fallocate(f, fd, 100), SHOAL_EIO);
    assert_int_equal(fs_fsync(f, fd), SHOAL_EIO);
    assert_int_equal(fs_dir_fsync(f, "/d"), SHOAL_EIO);
    fs_mem_fail_clear(m);
    assert_str(m, "/d/a", "AB");
    fs_mem *c = crash(m, FS_CRASH_DROP_UNSYNCED, 1);
    assert_str(c, "/d/a", "A"); /* the failed fsync made nothing durable */
    assert_missing(c, "/d/c");  /* nor the failed dir_fsync */
    fs_mem_close(c);
    fs_close(f, fd);
}

/* ---- allocation failure ------------------------------------------------- */

static int oom_fd = -1; /* the fd the OOM ops use */

/* Run op with the n-th allocation failing, n = 1, 2, ... until it succeeds;
 * after each SHOAL_ENOMEM, check reports that nothing changed. */
static void
oom_loop(fs_mem *m, shoal_err (*op)(fs_mem *), void (*check)(fs_mem *))
{
    for (long n = 1;; n++) {
        mem_fail_set(n, 0);
        shoal_err rc = op(m);
        mem_fail_set(0, 0);
        if (rc == SHOAL_OK)
            return;
        assert_int_equal(rc, SHOAL_ENOMEM);
        check(m);
        assert_true(n < 64);
    }
}

static shoal_err
oom_create(fs_mem *m)
{
    int fd = -1;
    shoal_err rc = fs_open(fs_mem_fs(m), "/d/new", RW_CREATE, &fd);
    if (rc != SHOAL_OK)
        assert_int_equal(fd, -1);
    fs_close(fs_mem_fs(m), fd);
    return rc;
}

static void
oom_create_check(fs_mem *m)
{
    assert_missing(m, "/d/new");
}

static shoal_err
oom_trunc_open(fs_mem *m)
{
    int fd = -1;
    shoal_err rc = fs_open(fs_mem_fs(m), "/d/a", FS_RDWR | FS_TRUNC, &fd);
    fs_close(fs_mem_fs(m), fd);
    return rc;
}

static shoal_err
oom_write(fs_mem *m)
{
    return fs_pwrite(fs_mem_fs(m), oom_fd, "0123456789", 10, 100);
}

static void
oom_a_unchanged(fs_mem *m)
{
    assert_str(m, "/d/a", "abc");
}

static shoal_err
oom_fsync(fs_mem *m)
{
    return fs_fsync(fs_mem_fs(m), oom_fd);
}

static void
oom_fsync_check(fs_mem *m)
{
    fs_mem *c = crash(m, FS_CRASH_DROP_UNSYNCED, 1);
    assert_str(c, "/d/a", "abc");
    fs_mem_close(c);
}

static shoal_err
oom_rename(fs_mem *m)
{
    return fs_rename(fs_mem_fs(m), "/d/a", "/d/b");
}

static void
oom_rename_check(fs_mem *m)
{
    assert_missing(m, "/d/b");
    assert_str(m, "/d/a", "abcXYZ");
}

static shoal_err
oom_mkdir(fs_mem *m)
{
    return fs_mkdir(fs_mem_fs(m), "/d/sub");
}

static void
oom_mkdir_check(fs_mem *m)
{
    char ls[64];
    assert_string_equal(list_sorted(fs_mem_fs(m), "/d", ls, sizeof ls),
                        "b,new");
}

static shoal_err
oom_dir_fsync(fs_mem *m)
{
    return fs_dir_fsync(fs_mem_fs(m), "/d");
}

static void
oom_dir_fsync_check(fs_mem *m)
{
    fs_mem *c = crash(m, FS_CRASH_DROP_UNSYNCED, 1);
    assert_missing(c, "/d/b");
    assert_str(c, "/d/a", "abcXYZ");
    fs_mem_close(c);
}

static shoal_err
oom_list(fs_mem *m)
{
    names ns = {.n = 0};
    shoal_err rc = fs_list(fs_mem_fs(m), "/d", collect, &ns);
    if (rc != SHOAL_OK)
        assert_int_equal(ns.n, 0);
    return rc;
}

static void
oom_nothing(fs_mem *m)
{
    (void) m;
}

static shoal_err
oom_clone(fs_mem *m)
{
    fs_mem *c = (fs_mem *) &oom_fd;
    shoal_err rc = fs_mem_crash_clone(m, FS_CRASH_RANDOM, 5, &c);
    if (rc != SHOAL_OK)
        assert_null(c);
    fs_mem_close(c);
    return rc;
}

static shoal_err
oom_helpers(fs_mem *m)
{
    shoal_err rc = fs_mem_truncate(m, "/d/b", 2);
    if (rc == SHOAL_OK)
        rc = fs_mem_poke(m, "/d/b", 0, "Q", 1);
    return rc;
}

static void
oom_helpers_check(fs_mem *m)
{
    uint64_t len = 0;
    assert_int_equal(fs_mem_file_size(m, "/d/b", &len), SHOAL_OK);
    assert_true(len == 7 || len == 2); /* the truncate may have passed */
}

static void
test_fs_mem_enomem_changes_nothing(void **state)
{
    fs_mem *m = *state;
    fs *f = fs_mem_fs(m);

    put_durable(m, "/d/a", "abc");
    oom_fd = open_rw(f, "/d/a");
    oom_loop(m, oom_create, oom_create_check);
    oom_loop(m, oom_write, oom_a_unchanged);
    assert_int_equal(fs_ftruncate(f, oom_fd, 3), SHOAL_OK);
    write_str(f, oom_fd, 3, "XYZ");
    oom_loop(m, oom_fsync, oom_fsync_check);
    oom_loop(m, oom_rename, oom_rename_check);
    oom_loop(m, oom_mkdir, oom_mkdir_check);
    oom_loop(m, oom_dir_fsync, oom_dir_fsync_check);
    oom_loop(m, oom_list, oom_nothing);
    write_str(f, oom_fd, 0, "pending");
    oom_loop(m, oom_clone, oom_nothing);
    oom_loop(m, oom_helpers, oom_helpers_check);
    assert_int_equal(fs_rename(f, "/d/b", "/d/a"), SHOAL_OK);
    oom_loop(m, oom_trunc_open, oom_nothing);
    assert_str(m, "/d/a", "");
    assert_true(mem_fail_count() > 0);
    fs_close(f, oom_fd);
    oom_fd = -1;
}

/* ---- threads ------------------------------------------------------------ */

enum { WRITERS = 4, RECORDS = 400, REC_LEN = 8 };

typedef struct worker {
    fs_mem *m;
    int id;
    _Atomic int *errors;
    _Atomic int *running;
} worker;

static void *
writer_main(void *arg)
{
    worker *w = arg;
    fs *f = fs_mem_fs(w->m);
    char path[32], rec[REC_LEN], back[REC_LEN];
    int fd = -1;
    size_t n = 0;

    snprintf(path, sizeof path, "/d/t%d", w->id);
    if (fs_open(f, path, RW_CREATE, &fd) != SHOAL_OK)
        goto out;
    for (int i = 0; i < RECORDS; i++) {
        memset(rec, 'a' + w->id, sizeof rec);
        rec[0] = (char) i;
        uint64_t off = (uint64_t) i * REC_LEN;
        if (fs_pwrite(f, fd, rec, sizeof rec, off) != SHOAL_OK ||
            fs_pread(f, fd, back, sizeof back, off, &n) != SHOAL_OK ||
            n != REC_LEN || memcmp(rec, back, REC_LEN) != 0 ||
            (i % 16 == 0 && fs_fsync(f, fd) != SHOAL_OK))
            atomic_fetch_add(w->errors, 1);
    }
    if (fs_fsync(f, fd) != SHOAL_OK)
        atomic_fetch_add(w->errors, 1);
out:
    if (fd < 0)
        atomic_fetch_add(w->errors, 1);
    fs_close(f, fd);
    atomic_fetch_sub(w->running, 1);
    return NULL;
}

static shoal_err
count_cb(void *arg, const char *name)
{
    (void) name;
    ++*(int *) arg;
    return SHOAL_OK;
}

static void
test_fs_mem_threads(void **state)
{
    fs_mem *m = *state;
    pthread_t th[WRITERS];
    worker w[WRITERS];
    _Atomic int errors = 0, running = WRITERS;
    int clones = 0;

    for (int i = 0; i < WRITERS; i++) {
        w[i] =
            (worker){.m = m, .id = i, .errors = &errors, .running = &running};
        assert_int_equal(pthread_create(&th[i], NULL, writer_main, &w[i]), 0);
    }
    /* Meanwhile: directory syncs, listings and crash clones. */
    while (atomic_load(&running) > 0 || clones == 0) {
        int n = 0;
        fs_mem *c = NULL;
        assert_int_equal(fs_dir_fsync(fs_mem_fs(m), "/d"), SHOAL_OK);
        assert_int_equal(fs_list(fs_mem_fs(m), "/d", count_cb, &n), SHOAL_OK);
        assert_int_equal(
            fs_mem_crash_clone(m, FS_CRASH_RANDOM, (uint64_t) clones, &c),
            SHOAL_OK);
        fs_mem_close(c);
        clones++;
    }
    for (int i = 0; i < WRITERS; i++)
        assert_int_equal(pthread_join(th[i], NULL), 0);
    assert_int_equal(atomic_load(&errors), 0);
    assert_int_equal(fs_dir_fsync(fs_mem_fs(m), "/d"), SHOAL_OK);
    fs_mem *c = crash(m, FS_CRASH_DROP_UNSYNCED, 1);
    for (int i = 0; i < WRITERS; i++) {
        char path[32];
        uint64_t len = 0;
        snprintf(path, sizeof path, "/d/t%d", i);
        assert_int_equal(fs_mem_file_size(c, path, &len), SHOAL_OK);
        assert_int_equal(len, RECORDS * REC_LEN);
    }
    fs_mem_close(c);
}

int
main(void)
{
    slog_set_level(SLOG_ERR);
#define T(name) cmocka_unit_test_setup_teardown(name, mem_up, mem_down)
    const struct CMUnitTest tests[] = {
        T(test_fs_mem_open_flags),
        T(test_fs_mem_pread_pwrite),
        T(test_fs_mem_ftruncate_fallocate),
        T(test_fs_mem_rename),
        T(test_fs_mem_unlink_open_file_keeps_working),
        T(test_fs_mem_mkdir_list),
        T(test_fs_mem_paths),
        T(test_fs_mem_read_all),
        T(test_fs_mem_helpers),
        T(test_fs_mem_helpers_on_unsynced_file),
        T(test_fs_mem_crash_drops_unsynced_keeps_fsynced),
        T(test_fs_mem_crash_create_without_dir_fsync_vanishes),
        T(test_fs_mem_crash_entry_without_fsync_is_empty),
        T(test_fs_mem_crash_rename_needs_dir_fsync),
        T(test_fs_mem_crash_rename_undone_restores_source),
        T(test_fs_mem_crash_rename_across_dirs_shares_inode),
        T(test_fs_mem_crash_unlink_needs_dir_fsync),
        T(test_fs_mem_crash_unlinked_open_file_is_gone),
        T(test_fs_mem_crash_mkdir_needs_parent_dir_fsync),
        T(test_fs_mem_crash_torn_last_is_prefix),
        T(test_fs_mem_crash_random_mixes_outcomes),
        T(test_fs_mem_crash_seed_replays),
        T(test_fs_mem_crash_clone_is_independent),
        T(test_fs_mem_model_random_history),
        T(test_fs_mem_fail_kth_call_once),
        T(test_fs_mem_fail_forever),
        T(test_fs_mem_fail_counts_from_set),
        T(test_fs_mem_fail_short_write_is_proper_prefix),
        T(test_fs_mem_fail_short_write_is_unsynced),
        T(test_fs_mem_op_counts),
        T(test_fs_mem_failed_ops_change_nothing),
        T(test_fs_mem_enomem_changes_nothing),
        T(test_fs_mem_threads),
    };
#undef T
    return cmocka_run_group_tests(tests, NULL, NULL);
}
