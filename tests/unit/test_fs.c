/*
 * test_fs.c -- the POSIX file system behind the fs seam (storage/fs.c) and
 * the helpers common to every implementation (fs_read_all, fs_path), on a
 * fresh mkdtemp directory per test.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h> /* after the four above, which it needs */

#include "proto/mem.h"
#include "proto/slog.h"
#include "storage/fs.h"
#include "tests/support/testutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define RW_CREATE (FS_RDWR | FS_CREATE)

/* dir/name in a static buffer per slot (a test needs at most four). */
static const char *
P(void **state, int slot, const char *name)
{
    static char buf[4][512];
    assert_int_equal(fs_path(buf[slot], sizeof buf[slot], *state, name),
                     SHOAL_OK);
    return buf[slot];
}

static int
open_rw(const char *path)
{
    int fd = -1;
    assert_int_equal(fs_open(fs_posix(), path, RW_CREATE, &fd), SHOAL_OK);
    assert_true(fd >= 0);
    return fd;
}

static void
write_str(int fd, uint64_t off, const char *s)
{
    assert_int_equal(fs_pwrite(fs_posix(), fd, s, strlen(s), off), SHOAL_OK);
}

static void
assert_file(const char *path, const void *want, size_t want_len)
{
    uint8_t *data = NULL;
    size_t len = 0;
    assert_int_equal(fs_read_all(fs_posix(), path, 1u << 20, &data, &len),
                     SHOAL_OK);
    assert_int_equal(len, want_len);
    if (len > 0)
        assert_memory_equal(data, want, len);
    mem_free(data);
}

static void
assert_str(const char *path, const char *s)
{
    assert_file(path, s, strlen(s));
}

static void
put(const char *path, const char *s)
{
    int fd = open_rw(path);
    write_str(fd, 0, s);
    fs_close(fs_posix(), fd);
}

static void
test_fs_open_flags(void **state)
{
    fs *f = fs_posix();
    const char *a = P(state, 0, "a");
    int fd = 7, ro = -1;

    assert_int_equal(fs_open(f, a, FS_RDONLY, &fd), SHOAL_ENOTFOUND);
    assert_int_equal(fd, -1);
    assert_int_equal(fs_open(f, P(state, 1, "no/a"), RW_CREATE, &fd),
                     SHOAL_ENOTFOUND);
    fd = open_rw(a);
    write_str(fd, 0, "hello");
    fs_close(f, fd);
    assert_int_equal(fs_open(f, a, RW_CREATE | FS_EXCL, &fd), SHOAL_EEXISTS);
    assert_int_equal(fd, -1);
    assert_str(a, "hello");
    assert_int_equal(fs_open(f, a, FS_RDONLY, &ro), SHOAL_OK);
    assert_int_equal(fs_pwrite(f, ro, "x", 1, 0), SHOAL_EIO);
    fs_close(f, ro);
    assert_int_equal(fs_open(f, a, FS_RDWR | FS_TRUNC, &fd), SHOAL_OK);
    fs_close(f, fd);
    assert_str(a, "");
    fs_close(f, -1); /* a no-op */
}

static void
test_fs_pread_pwrite(void **state)
{
    fs *f = fs_posix();
    const char *a = P(state, 0, "a");
    char buf[32];
    size_t n = 99;
    uint64_t size = 0;
    int fd = open_rw(a);

    write_str(fd, 0, "abcdef");
    assert_int_equal(fs_pread(f, fd, buf, 4, 1, &n), SHOAL_OK);
    assert_int_equal(n, 4);
    assert_memory_equal(buf, "bcde", 4);
    assert_int_equal(fs_pread(f, fd, buf, sizeof buf, 4, &n), SHOAL_OK);
    assert_int_equal(n, 2);
    assert_int_equal(fs_pread(f, fd, buf, sizeof buf, 100, &n), SHOAL_OK);
    assert_int_equal(n, 0);
    write_str(fd, 9, "XY");
    assert_int_equal(fs_fsync(f, fd), SHOAL_OK);
    assert_int_equal(fs_fsize(f, fd, &size), SHOAL_OK);
    assert_int_equal(size, 11);
    fs_close(f, fd);
    assert_file(a, "abcdef\0\0\0XY", 11);
}

static void
test_fs_ftruncate_fallocate(void **state)
{
    fs *f = fs_posix();
    const char *a = P(state, 0, "a");
    uint64_t size = 0;
    int fd = open_rw(a);

    write_str(fd, 0, "abcdef");
    assert_int_equal(fs_ftruncate(f, fd, 3), SHOAL_OK);
    assert_int_equal(fs_fallocate(f, fd, 8), SHOAL_OK);
    assert_int_equal(fs_fsize(f, fd, &size), SHOAL_OK);
    assert_int_equal(size, 8);
    assert_int_equal(fs_fallocate(f, fd, 2), SHOAL_OK); /* never shrinks */
    assert_int_equal(fs_fsize(f, fd, &size), SHOAL_OK);
    assert_int_equal(size, 8);
    fs_close(f, fd);
    assert_file(a, "abc\0\0\0\0\0", 8);
}

/* Reserving nothing is a no-op (posix_fallocate says EINVAL for len 0). */
static void
test_fs_fallocate_zero_is_ok(void **state)
{
    fs *f = fs_posix();
    uint64_t size = 1;
    int fd = open_rw(P(state, 0, "a"));

    assert_int_equal(fs_fallocate(f, fd, 0), SHOAL_OK);
    assert_int_equal(fs_fsize(f, fd, &size), SHOAL_OK);
    assert_int_equal(size, 0);
    fs_close(f, fd);
}

static void
test_fs_rename_unlink(void **state)
{
    fs *f = fs_posix();
    const char *a = P(state, 0, "a"), *b = P(state, 1, "b");
    const char *c = P(state, 2, "c");

    put(a, "new");
    put(b, "old");
    assert_int_equal(fs_rename(f, a, b), SHOAL_OK);
    assert_str(b, "new");
    assert_int_equal(fs_rename(f, a, c), SHOAL_ENOTFOUND);
    assert_int_equal(fs_unlink(f, b), SHOAL_OK);
    assert_int_equal(fs_unlink(f, b), SHOAL_ENOTFOUND);
    assert_int_equal(fs_unlink(f, *state), SHOAL_EIO); /* a directory */
}

static void
test_fs_mkdir(void **state)
{
    fs *f = fs_posix();
    const char *sub = P(state, 0, "sub"), *file = P(state, 1, "file");

    assert_int_equal(fs_mkdir(f, sub), SHOAL_OK);
    assert_int_equal(fs_mkdir(f, sub), SHOAL_OK); /* exists */
    assert_int_equal(fs_mkdir(f, P(state, 2, "no/sub")), SHOAL_ENOTFOUND);
    put(file, "x");
    /* "OK if it exists" means a directory exists, not a file. */
    assert_int_equal(fs_mkdir(f, file), SHOAL_EEXISTS);
}

typedef struct names {
    char v[8][32];
    size_t n;
} names;

static shoal_err
collect(void *arg, const char *name)
{
    names *ns = arg;
    assert_true(ns->n < 8);
    snprintf(ns->v[ns->n++], 32, "%s", name);
    return SHOAL_OK;
}

static shoal_err
stop_at_first(void *arg, const char *name)
{
    (void) name;
    ++*(int *) arg;
    return SHOAL_ETIMEOUT;
}

static int
cmp_name(const void *a, const void *b)
{
    return strcmp(a, b);
}

static void
test_fs_list(void **state)
{
    fs *f = fs_posix();
    names ns = {.n = 0};
    int calls = 0;

    put(P(state, 0, "b"), "");
    put(P(state, 0, "a"), "");
    assert_int_equal(fs_mkdir(f, P(state, 0, "sub")), SHOAL_OK);
    assert_int_equal(fs_list(f, *state, collect, &ns), SHOAL_OK);
    assert_int_equal(ns.n, 3); /* no "." or ".." */
    qsort(ns.v, ns.n, sizeof ns.v[0], cmp_name);
    assert_string_equal(ns.v[0], "a");
    assert_string_equal(ns.v[1], "b");
    assert_string_equal(ns.v[2], "sub");
    assert_int_equal(fs_list(f, *state, stop_at_first, &calls), SHOAL_ETIMEOUT);
    assert_int_equal(calls, 1);
    assert_int_equal(fs_list(f, P(state, 0, "none"), collect, &ns),
                     SHOAL_ENOTFOUND);
}

static void
test_fs_dir_fsync(void **state)
{
    fs *f = fs_posix();

    put(P(state, 0, "a"), "x");
    assert_int_equal(fs_dir_fsync(f, *state), SHOAL_OK);
    assert_int_equal(fs_dir_fsync(f, P(state, 0, "none")), SHOAL_ENOTFOUND);
    assert_int_equal(fs_dir_fsync(f, P(state, 0, "a")), SHOAL_EIO);
}

static void
test_fs_read_all(void **state)
{
    fs *f = fs_posix();
    const char *a = P(state, 0, "a"), *e = P(state, 1, "empty");
    uint8_t *buf = (uint8_t *) "x";
    size_t len = 9;

    put(a, "0123456789");
    assert_int_equal(fs_read_all(f, a, 9, &buf, &len), SHOAL_ETOOLARGE);
    assert_null(buf);
    assert_int_equal(len, 0);
    assert_int_equal(fs_read_all(f, a, 10, &buf, &len), SHOAL_OK);
    assert_int_equal(len, 10);
    assert_memory_equal(buf, "0123456789", 10);
    mem_free(buf);
    put(e, "");
    assert_int_equal(fs_read_all(f, e, 10, &buf, &len), SHOAL_OK);
    assert_non_null(buf); /* freed with mem_free like any other */
    assert_int_equal(len, 0);
    mem_free(buf);
    assert_int_equal(fs_read_all(f, P(state, 2, "none"), 10, &buf, &len),
                     SHOAL_ENOTFOUND);
    assert_null(buf);
}

/* Allocation failure: ENOMEM, nothing leaked, fd closed (ASan checks). */
static void
test_fs_read_all_enomem(void **state)
{
    const char *a = P(state, 0, "a");
    uint8_t *buf = NULL;
    size_t len = 0;

    put(a, "abc");
    mem_fail_set(1, 0);
    shoal_err rc = fs_read_all(fs_posix(), a, 10, &buf, &len);
    mem_fail_set(0, 0);
    assert_int_equal(rc, SHOAL_ENOMEM);
    assert_null(buf);
}

static void
test_fs_path(void **state)
{
    (void) state;
    char out[8];

    assert_int_equal(fs_path(out, sizeof out, "/d", "abcd"), SHOAL_OK);
    assert_string_equal(out, "/d/abcd"); /* 7 chars + NUL: exactly fits */
    assert_int_equal(fs_path(out, sizeof out, "/d", "abcde"), SHOAL_ETOOLARGE);
    assert_int_equal(fs_path(out, sizeof out, "/dir/long", "x"),
                     SHOAL_ETOOLARGE);
    assert_int_equal(fs_path(out, 0, "", ""), SHOAL_ETOOLARGE);
}

int
main(void)
{
    slog_set_level(SLOG_ERR); /* expected failures log at WARN */
#define T(name) \
    cmocka_unit_test_setup_teardown(name, tu_tmpdir_up, tu_tmpdir_down)
    const struct CMUnitTest tests[] = {
        T(test_fs_open_flags),
        T(test_fs_pread_pwrite),
        T(test_fs_ftruncate_fallocate),
        T(test_fs_fallocate_zero_is_ok),
        T(test_fs_rename_unlink),
        T(test_fs_mkdir),
        T(test_fs_list),
        T(test_fs_dir_fsync),
        T(test_fs_read_all),
        T(test_fs_read_all_enomem),
        T(test_fs_path),
    };
#undef T
    return cmocka_run_group_tests(tests, NULL, NULL);
}
