/*
 * fs.c -- the POSIX implementation of the fs seam, plus helpers common to
 * every implementation. Errors are logged here, where the path and errno are
 * known, and passed up as codes (STYLE §4, §6).
 */
#include "storage/fs.h"

#include "proto/mem.h"
#include "proto/slog.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static shoal_err
errno_code(int e)
{
    switch (e) {
    case ENOENT:
        return SHOAL_ENOTFOUND;
    case EEXIST:
        return SHOAL_EEXISTS;
    case ENOSPC:
    case EDQUOT:
        return SHOAL_ENOSPC;
    case ENOMEM:
        return SHOAL_ENOMEM;
    default:
        return SHOAL_EIO;
    }
}

static shoal_err
fail(const char *op, const char *what, int e)
{
    /* A missing file is often expected (probing); keep it quiet. */
    slog(e == ENOENT ? SLOG_DEBUG : SLOG_WARN, "fs", "%s %s: %s", op, what,
         strerror(e));
    return errno_code(e);
}

static shoal_err
px_open(fs *f, const char *path, int flags, int *fd_out)
{
    (void) f;
    int oflags = O_CLOEXEC;
    oflags |= (flags & FS_RDWR) ? O_RDWR : O_RDONLY;
    if (flags & FS_CREATE)
        oflags |= O_CREAT;
    if (flags & FS_EXCL)
        oflags |= O_EXCL;
    if (flags & FS_TRUNC)
        oflags |= O_TRUNC;
    int fd = open(path, oflags, 0644);
    if (fd < 0) {
        *fd_out = -1;
        return fail("open", path, errno);
    }
    *fd_out = fd;
    return SHOAL_OK;
}

static void
px_close(fs *f, int fd)
{
    (void) f;
    if (fd >= 0)
        close(fd);
}

static shoal_err
px_pread(fs *f, int fd, void *buf, size_t len, uint64_t off, size_t *n_out)
{
    (void) f;
    size_t done = 0;
    while (done < len) {
        ssize_t n =
            pread(fd, (char *) buf + done, len - done, (off_t) (off + done));
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            *n_out = done;
            return fail("pread", "fd", errno);
        }
        if (n == 0)
            break;
        done += (size_t) n;
    }
    *n_out = done;
    return SHOAL_OK;
}

static shoal_err
px_pwrite(fs *f, int fd, const void *buf, size_t len, uint64_t off)
{
    (void) f;
    size_t done = 0;
    /* pwrite may be short on signals or near a full disk; continue until all
     * bytes are down or the kernel reports an error. */
    while (done < len) {
        ssize_t n = pwrite(fd, (const char *) buf + done, len - done,
                           (off_t) (off + done));
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return fail("pwrite", "fd", errno);
        done += (size_t) n;
    }
    return SHOAL_OK;
}

static shoal_err
px_fsync(fs *f, int fd)
{
    (void) f;
    if (fdatasync(fd) != 0)
        return fail("fdatasync", "fd", errno);
    return SHOAL_OK;
}

static shoal_err
px_ftruncate(fs *f, int fd, uint64_t len)
{
    (void) f;
    if (ftruncate(fd, (off_t) len) != 0)
        return fail("ftruncate", "fd", errno);
    return SHOAL_OK;
}

static shoal_err
px_fallocate(fs *f, int fd, uint64_t len)
{
    (void) f;
    if (len == 0)
        return SHOAL_OK; /* posix_fallocate rejects len 0 with EINVAL */
    int e = posix_fallocate(fd, 0, (off_t) len);
    if (e != 0)
        return fail("posix_fallocate", "fd", e);
    return SHOAL_OK;
}

static shoal_err
px_fsize(fs *f, int fd, uint64_t *len_out)
{
    (void) f;
    struct stat st;
    if (fstat(fd, &st) != 0)
        return fail("fstat", "fd", errno);
    *len_out = (uint64_t) st.st_size;
    return SHOAL_OK;
}

static shoal_err
px_rename(fs *f, const char *from, const char *to)
{
    (void) f;
    if (rename(from, to) != 0)
        return fail("rename", from, errno);
    return SHOAL_OK;
}

static shoal_err
px_unlink(fs *f, const char *path)
{
    (void) f;
    if (unlink(path) != 0)
        return fail("unlink", path, errno);
    return SHOAL_OK;
}

static shoal_err
px_mkdir(fs *f, const char *path)
{
    (void) f;
    struct stat st;
    if (mkdir(path, 0755) == 0)
        return SHOAL_OK;
    if (errno != EEXIST)
        return fail("mkdir", path, errno);
    /* "OK if it exists" holds for a directory only, not a file. */
    if (stat(path, &st) != 0)
        return fail("stat", path, errno);
    if (!S_ISDIR(st.st_mode))
        return fail("mkdir", path, EEXIST);
    return SHOAL_OK;
}

static shoal_err
px_dir_fsync(fs *f, const char *dir)
{
    (void) f;
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return fail("open dir", dir, errno);
    int rc = fsync(fd);
    int e = errno;
    close(fd);
    if (rc != 0)
        return fail("fsync dir", dir, e);
    return SHOAL_OK;
}

static shoal_err
px_list(fs *f, const char *dir, fs_list_cb cb, void *arg)
{
    (void) f;
    DIR *d = opendir(dir);
    if (d == NULL)
        return fail("opendir", dir, errno);
    shoal_err rc = SHOAL_OK;
    while (rc == SHOAL_OK) {
        /* readdir returns NULL at the end and on error; only errno tells
         * them apart. A silently cut listing could hide a WAL segment. */
        errno = 0;
        struct dirent *de = readdir(d);
        if (de == NULL) {
            if (errno != 0)
                rc = fail("readdir", dir, errno);
            break;
        }
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
            continue;
        rc = cb(arg, de->d_name);
    }
    closedir(d);
    return rc;
}

static const fs_ops posix_ops = {
    .open = px_open,
    .close = px_close,
    .pread = px_pread,
    .pwrite = px_pwrite,
    .fsync = px_fsync,
    .ftruncate = px_ftruncate,
    .fallocate = px_fallocate,
    .fsize = px_fsize,
    .rename = px_rename,
    .unlink = px_unlink,
    .mkdir = px_mkdir,
    .dir_fsync = px_dir_fsync,
    .list = px_list,
};

static fs posix_fs = {.ops = &posix_ops};

fs *
fs_posix(void)
{
    return &posix_fs;
}

shoal_err
fs_read_all(fs *f, const char *path, size_t max_len, uint8_t **buf_out,
            size_t *len_out)
{
    int fd = -1;
    uint8_t *buf = NULL;
    uint64_t size = 0;
    size_t n = 0;
    shoal_err rc;

    *buf_out = NULL;
    *len_out = 0;
    if ((rc = fs_open(f, path, FS_RDONLY, &fd)) != SHOAL_OK)
        return rc;
    if ((rc = fs_fsize(f, fd, &size)) != SHOAL_OK)
        goto fail;
    if (size > max_len) {
        rc = SHOAL_ETOOLARGE;
        goto fail;
    }
    if ((buf = mem_alloc((size_t) size)) == NULL) {
        rc = SHOAL_ENOMEM;
        goto fail;
    }
    if ((rc = fs_pread(f, fd, buf, (size_t) size, 0, &n)) != SHOAL_OK)
        goto fail;
    fs_close(f, fd);
    *buf_out = buf;
    *len_out = n;
    return SHOAL_OK;
fail:
    mem_free(buf);
    fs_close(f, fd);
    return rc;
}

shoal_err
fs_path(char *out, size_t cap, const char *dir, const char *name)
{
    int n = snprintf(out, cap, "%s/%s", dir, name);
    if (n < 0 || (size_t) n >= cap)
        return SHOAL_ETOOLARGE;
    return SHOAL_OK;
}
