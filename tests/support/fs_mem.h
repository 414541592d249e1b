/*
 * fs_mem.h -- an in-memory file system behind the fs seam, for fault tests
 * (STYLE §9, TESTING.md G5/G6). Like SQLite's crash VFS and LevelDB's
 * FaultInjectionTestEnv:
 *
 *  - fail the k-th call of chosen operations (once, or from then on), with
 *    SHOAL_EIO or SHOAL_ENOSPC, or as a short write (part of the bytes land);
 *  - simulate power loss: fs_mem_crash_clone() makes a new fs_mem holding
 *    what a disk could hold after a crash now -- each file keeps its fsynced
 *    bytes plus, per the mode, none, all or a random subset of its unsynced
 *    writes (the last one possibly torn or garbled); directory changes
 *    (create, rename, unlink) not made durable by dir_fsync are undone.
 *
 * Thread-safe (one mutex). Paths are compared as strings; a path's
 * directory is everything before its last '/'.
 *
 * Model choices (details at the top of fs_mem.c): mkdir is durable only
 * after dir_fsync of the parent, like a create; directories cannot be
 * renamed or unlinked (SHOAL_EIO); "//" and "." are ignored in paths, ".."
 * is refused; list order is fixed but deliberately not sorted; files are
 * capped at 1 GiB (SHOAL_ENOSPC beyond).
 */
#ifndef SHOAL_TESTS_SUPPORT_FS_MEM_H
#define SHOAL_TESTS_SUPPORT_FS_MEM_H

#include "proto/err.h"
#include "storage/fs.h"

#include <stdbool.h>
#include <stdint.h>

typedef struct fs_mem fs_mem;

/* Operation bits for fault injection and counting. */
#define FS_OP_OPEN      (1u << 0)
#define FS_OP_PREAD     (1u << 1)
#define FS_OP_PWRITE    (1u << 2)
#define FS_OP_FSYNC     (1u << 3)
#define FS_OP_FTRUNCATE (1u << 4)
#define FS_OP_FALLOCATE (1u << 5)
#define FS_OP_FSIZE     (1u << 6)
#define FS_OP_RENAME    (1u << 7)
#define FS_OP_UNLINK    (1u << 8)
#define FS_OP_MKDIR     (1u << 9)
#define FS_OP_DIR_FSYNC (1u << 10)
#define FS_OP_LIST      (1u << 11)
#define FS_OP_ALL       0xfffu
#define FS_OP_WRITES                                                  \
    (FS_OP_PWRITE | FS_OP_FSYNC | FS_OP_FTRUNCATE | FS_OP_FALLOCATE | \
     FS_OP_RENAME | FS_OP_UNLINK | FS_OP_MKDIR | FS_OP_DIR_FSYNC)

typedef enum fs_crash_mode {
    FS_CRASH_DROP_UNSYNCED = 0, /* only fsynced bytes survive */
    FS_CRASH_KEEP_UNSYNCED = 1, /* every write survives (process crash) */
    FS_CRASH_RANDOM = 2,        /* a random subset; the last kept may be torn */
    FS_CRASH_TORN_LAST = 3,     /* all but the last unsynced write of each
                                   file, which is cut at a random length */
} fs_crash_mode;

/* An empty file system with the root directory "/" only. */
shoal_err fs_mem_open(fs_mem **out);
void fs_mem_close(fs_mem *m); /* NULL ok; open fds become invalid */

/* The fs handle to pass to storage code; lives as long as m. */
fs *fs_mem_fs(fs_mem *m);

/* From now, the k-th call (k >= 1) of an operation in op_mask fails with
 * code (SHOAL_EIO or SHOAL_ENOSPC); with forever, every later matching call
 * fails too. With short_write, a failing pwrite first writes a random
 * non-empty proper prefix of its bytes. Replaces any earlier setting. */
void fs_mem_fail(fs_mem *m, unsigned op_mask, uint64_t k, shoal_err code,
                 bool forever, bool short_write);

/* The fault kinds every I/O-error loop runs (TESTING.md G6). */
typedef struct fs_mem_fault {
    const char *name;
    shoal_err code;
    bool forever;
    bool short_write;
} fs_mem_fault;

extern const fs_mem_fault fs_mem_faults[];
extern const size_t fs_mem_n_faults;

/* Stop injecting failures. */
void fs_mem_fail_clear(fs_mem *m);

/* Calls of the operations in op_mask since open (failed ones included). */
uint64_t fs_mem_op_count(fs_mem *m, unsigned op_mask);

/* Failures injected so far. */
uint64_t fs_mem_fail_count(fs_mem *m);

/* A new fs_mem with the state a power loss now could leave (see above);
 * seed drives FS_CRASH_RANDOM / FS_CRASH_TORN_LAST. m is unchanged. */
shoal_err fs_mem_crash_clone(fs_mem *m, fs_crash_mode mode, uint64_t seed,
                             fs_mem **out);

/* Test helpers on the current (not crashed) state. */
shoal_err fs_mem_file_size(fs_mem *m, const char *path, uint64_t *len_out);
/* Overwrite bytes of a file in place, durably (as if the disk changed):
 * the file's unsynced writes become durable first. [off, off + len) must lie
 * inside the file, else SHOAL_EINVAL. */
shoal_err fs_mem_poke(fs_mem *m, const char *path, uint64_t off,
                      const void *buf, size_t len);
/* Cut a file to len bytes (or extend it with zeros), durably; its unsynced
 * writes become durable first. */
shoal_err fs_mem_truncate(fs_mem *m, const char *path, uint64_t len);

#endif
