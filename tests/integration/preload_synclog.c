/*
 * preload_synclog.c -- an LD_PRELOAD shim for power-loss tests on real
 * shoald processes (test_cluster_kill.c): it records how far an fdatasync
 * has covered each WAL segment, so a test that SIGKILLs a node can drop
 * exactly the bytes a power cut could lose -- everything written but not
 * yet covered by a returned fdatasync -- and keep what was synced.
 *
 * The WAL's own durable frontier (the slots of storage/wal.h) is a lower
 * bound of that point by design: a claim rides with the next batch and at
 * most once per WAL_CLAIM_NS, so the last batches synced before a crash lie
 * beyond it. Cutting there would drop acknowledged, fsynced writes that a
 * real power cut keeps.
 *
 * Per file descriptor it keeps the highest byte offset written by pwrite
 * (the WAL appends sequentially from one writer thread); a close forgets
 * it. When fdatasync(fd) returns 0 on a file named wal-*.log, the end
 * written before the call is appended as one line "PATH END\n" to
 * $SHOAL_SYNCLOG (O_APPEND, one write(2)), before the caller sees the
 * return: a SIGKILL right after the caller acknowledged a write leaves the
 * line in the file. Without $SHOAL_SYNCLOG it only passes calls through.
 *
 * Built as a module (not part of shoal_testsupport); never linked into a
 * test binary.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <fcntl.h>
#include <limits.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <unistd.h>

#define SL_MAX_FD 65536

static _Atomic uint64_t written_end[SL_MAX_FD];
static _Atomic int log_fd = -1;

typedef ssize_t (*pwrite_fn)(int, const void *, size_t, off_t);
typedef int (*int_fn)(int);

static void *
next_sym(const char *name)
{
    return dlsym(RTLD_NEXT, name);
}

static void
note_write(int fd, off_t off, ssize_t n)
{
    if (fd < 0 || fd >= SL_MAX_FD || n <= 0 || off < 0)
        return;
    uint64_t end = (uint64_t) off + (uint64_t) n;
    uint64_t cur = atomic_load(&written_end[fd]);
    while (end > cur &&
           !atomic_compare_exchange_weak(&written_end[fd], &cur, end))
        ;
}

ssize_t
pwrite(int fd, const void *buf, size_t len, off_t off)
{
    static pwrite_fn real;
    if (real == NULL)
        real = (pwrite_fn) next_sym("pwrite");
    ssize_t n = real(fd, buf, len, off);
    note_write(fd, off, n);
    return n;
}

ssize_t
pwrite64(int fd, const void *buf, size_t len, off_t off)
{
    static pwrite_fn real;
    if (real == NULL)
        real = (pwrite_fn) next_sym("pwrite64");
    ssize_t n = real(fd, buf, len, off);
    note_write(fd, off, n);
    return n;
}

int
close(int fd)
{
    static int_fn real;
    if (real == NULL)
        real = (int_fn) next_sym("close");
    if (fd >= 0 && fd < SL_MAX_FD)
        atomic_store(&written_end[fd], 0);
    return real(fd);
}

static int
get_log_fd(void)
{
    int fd = atomic_load(&log_fd);
    if (fd >= 0)
        return fd;
    const char *path = getenv("SHOAL_SYNCLOG");
    if (path == NULL || path[0] == '\0')
        return -1;
    fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    int expect = -1;
    if (fd >= 0 && !atomic_compare_exchange_strong(&log_fd, &expect, fd)) {
        static int_fn real_close;
        if (real_close == NULL)
            real_close = (int_fn) next_sym("close");
        real_close(fd);
        fd = expect;
    }
    return fd;
}

static void
note_sync(int fd, uint64_t end)
{
    if (end == 0)
        return;
    char link[64], path[PATH_MAX];
    snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
    ssize_t n = readlink(link, path, sizeof(path) - 1);
    if (n <= 0)
        return;
    path[n] = '\0';
    const char *base = strrchr(path, '/');
    base = base != NULL ? base + 1 : path;
    if (strncmp(base, "wal-", 4) != 0)
        return;
    int lfd = get_log_fd();
    if (lfd < 0)
        return;
    char line[PATH_MAX + 32];
    int len = snprintf(line, sizeof(line), "%s %llu\n", path,
                       (unsigned long long) end);
    if (len > 0 && (size_t) len < sizeof(line))
        (void) !write(lfd, line, (size_t) len);
}

static int
synced(int fd, const char *name)
{
    int_fn real = (int_fn) next_sym(name);
    uint64_t end =
        fd >= 0 && fd < SL_MAX_FD ? atomic_load(&written_end[fd]) : 0;
    int rc = real(fd);
    if (rc == 0)
        note_sync(fd, end);
    return rc;
}

int
fdatasync(int fd)
{
    return synced(fd, "fdatasync");
}

int
fsync(int fd)
{
    return synced(fd, "fsync");
}
