/*
 * fs.h -- the file-system seam. Every byte Shoal reads from or writes to disk
 * goes through an fs ops table, so tests can fail the k-th call, make short
 * writes, or simulate power loss (tests/support/fs_mem.h). fs_posix() is the
 * real one.
 *
 * Contracts shared by every implementation:
 *  - Paths are plain C strings; directories are not nested by Shoal beyond the
 *    data dir itself.
 *  - pwrite writes all len bytes or fails; after a failure any prefix of the
 *    bytes may be on the file (a short write).
 *  - pread returns fewer bytes than asked only at end of file.
 *  - fsync is fdatasync: the file's data and size are durable afterwards, its
 *    directory entry is not until dir_fsync of the directory.
 *  - A failed fsync must never be retried by the caller (STYLE §4).
 *  - Errors: SHOAL_ENOTFOUND (no such file), SHOAL_EEXISTS (exclusive create
 *    of an existing file), SHOAL_ENOSPC, SHOAL_EIO (everything else), each
 *    logged once by the implementation with the path and strerror.
 */
#ifndef SHOAL_STORAGE_FS_H
#define SHOAL_STORAGE_FS_H

#include "proto/err.h"

#include <stddef.h>
#include <stdint.h>

typedef struct fs fs;

/* Flags for open. FS_RDONLY alone opens for reading. */
#define FS_RDONLY 0x0
#define FS_RDWR   0x1
#define FS_CREATE 0x2 /* create if missing */
#define FS_EXCL   0x4 /* with FS_CREATE: fail with SHOAL_EEXISTS if present */
#define FS_TRUNC  0x8 /* truncate to zero length */

/* Called once per directory entry (not "." or ".."); a non-OK return stops
 * the listing and is returned by list. */
typedef shoal_err (*fs_list_cb)(void *arg, const char *name);

typedef struct fs_ops {
    shoal_err (*open)(fs *f, const char *path, int flags, int *fd_out);
    void (*close)(fs *f, int fd); /* fd == -1 is a no-op */
    shoal_err (*pread)(fs *f, int fd, void *buf, size_t len, uint64_t off,
                       size_t *n_out);
    shoal_err (*pwrite)(fs *f, int fd, const void *buf, size_t len,
                        uint64_t off);
    shoal_err (*fsync)(fs *f, int fd);
    shoal_err (*ftruncate)(fs *f, int fd, uint64_t len);
    /* Reserve [0, len) so later pwrites inside it cannot hit ENOSPC; the new
     * bytes read as zeros. */
    shoal_err (*fallocate)(fs *f, int fd, uint64_t len);
    shoal_err (*fsize)(fs *f, int fd, uint64_t *len_out);
    shoal_err (*rename)(fs *f, const char *from, const char *to);
    shoal_err (*unlink)(fs *f, const char *path);
    shoal_err (*mkdir)(fs *f, const char *path); /* OK if it exists */
    shoal_err (*dir_fsync)(fs *f, const char *dir);
    shoal_err (*list)(fs *f, const char *dir, fs_list_cb cb, void *arg);
} fs_ops;

/* Implementations embed this as their first member. */
struct fs {
    const fs_ops *ops;
};

/* The real file system (POSIX calls); a process-wide constant. */
fs *fs_posix(void);

/* Thin wrappers so callers read fs_pwrite(f, ...) rather than f->ops->... */
static inline shoal_err
fs_open(fs *f, const char *path, int flags, int *fd_out)
{
    return f->ops->open(f, path, flags, fd_out);
}
static inline void
fs_close(fs *f, int fd)
{
    if (fd >= 0)
        f->ops->close(f, fd);
}
static inline shoal_err
fs_pread(fs *f, int fd, void *buf, size_t len, uint64_t off, size_t *n_out)
{
    return f->ops->pread(f, fd, buf, len, off, n_out);
}
static inline shoal_err
fs_pwrite(fs *f, int fd, const void *buf, size_t len, uint64_t off)
{
    return f->ops->pwrite(f, fd, buf, len, off);
}
static inline shoal_err
fs_fsync(fs *f, int fd)
{
    return f->ops->fsync(f, fd);
}
static inline shoal_err
fs_ftruncate(fs *f, int fd, uint64_t len)
{
    return f->ops->ftruncate(f, fd, len);
}
static inline shoal_err
fs_fallocate(fs *f, int fd, uint64_t len)
{
    return f->ops->fallocate(f, fd, len);
}
static inline shoal_err
fs_fsize(fs *f, int fd, uint64_t *len_out)
{
    return f->ops->fsize(f, fd, len_out);
}
static inline shoal_err
fs_rename(fs *f, const char *from, const char *to)
{
    return f->ops->rename(f, from, to);
}
static inline shoal_err
fs_unlink(fs *f, const char *path)
{
    return f->ops->unlink(f, path);
}
static inline shoal_err
fs_mkdir(fs *f, const char *path)
{
    return f->ops->mkdir(f, path);
}
static inline shoal_err
fs_dir_fsync(fs *f, const char *dir)
{
    return f->ops->dir_fsync(f, dir);
}
static inline shoal_err
fs_list(fs *f, const char *dir, fs_list_cb cb, void *arg)
{
    return f->ops->list(f, dir, cb, arg);
}

/* Read the whole file at path into a mem_alloc'd buffer (freed by the caller
 * with mem_free). Files over max_len give SHOAL_ETOOLARGE. */
shoal_err fs_read_all(fs *f, const char *path, size_t max_len,
                      uint8_t **buf_out, size_t *len_out);

/* Join dir and name into out (size cap); SHOAL_ETOOLARGE if it does not fit. */
shoal_err fs_path(char *out, size_t cap, const char *dir, const char *name);

#endif
