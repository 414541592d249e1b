/*
 * wal.c -- the write-ahead log of wal.h: the record codec, segment files,
 * recovery, and one writer thread doing group commit.
 *
 * Files in the log directory (byte layouts in wal.h):
 *
 *   wal-0000000000000007.log  finished: header, records, SEG_END (fsynced),
 *                             frontier slot claiming the SEG_END's end
 *   wal-0000000000000008.log  current:  header, records, zeros; its slots
 *                             claim how far an fdatasync has covered
 *   wal-0000000000000009.log  spare:    header, zeros (made ahead of need)
 *
 * Segment header (64 bytes, wal.h has the field list):
 *
 *   0        8       12        16     24         28     32        48      64
 *   +--------+-------+---------+------+----------+------+---------+-------+
 *   |SHOALWAL|version|hdr_len  | seq  | reserved | crc  | slot A  | slot B|
 *   |        |  2    |  64     |      |    0     |0..27 |odd gens |even   |
 *   +--------+-------+---------+------+----------+------+---------+-------+
 *   slot: u64 frontier | u32 generation | u32 crc32(seq, frontier, gen)
 *
 * Invariants
 *  - Records never span segments. A record is placed only where it leaves
 *    room for the SEG_END that closes the segment, so a SEG_END always fits.
 *  - A segment's SEG_END is fdatasynced before any byte is written to the
 *    next segment, so after a crash only the newest segment holding records
 *    can have a torn tail; every older one ends with SEG_END.
 *  - A segment file is complete (created, preallocated, header written,
 *    fsynced, directory fsynced) before a record is placed in it. Recovery
 *    removes trailing files with no byte past the fixed 32-byte header:
 *    spares, or creations a crash cut short. They never held a record (the
 *    slots are zero until a record is synced: creation writes only the
 *    fixed header, so even a garbled creation leaves them zero).
 *  - Durable frontier: a slot claiming F is written only after an
 *    fdatasync that covered bytes [0, F) of its segment returned, so every
 *    slot that reads back valid is true, even if its own write was never
 *    synced. Between two slot writes of a segment there is always an
 *    fdatasync, and the two generations alternate between slots A and B:
 *    at most one slot write is unsynced, and the other slot holds an older
 *    true claim to fall back on if that write is torn (its crc fails).
 *    The writer claims the frontier of its last fdatasync together with the
 *    next batch's data write (before that batch's fdatasync): no fdatasync
 *    is added on the hot path, and under load at most one batch per
 *    WAL_CLAIM_NS carries a claim (a claim is an extra page to sync). A
 *    finished segment (SEG_END synced) claims its end; wal_close claims
 *    the end and syncs once more.
 *  - Tickets count the bytes of data records appended since open, so ticket
 *    order is log order, and durable <= written <= last_ticket.
 *  - The appenders' buffer holds at most one segment switch: the writer makes
 *    a spare only after switching to the previous one, and an appender can
 *    rotate only into a ready spare.
 *  - segs[] is sorted by seq; its last element is the segment appenders fill
 *    (fill_seq). A segment is "finished" once its SEG_END is durable; only
 *    finished segments are deleted by wal_gc.
 *
 * Threads and locks
 *  - mu guards every field marked "mu" below; the two condition variables
 *    use it: writer_cv wakes the writer, space_cv wakes appenders waiting
 *    for buffer room or a spare segment.
 *  - wal_wait callers sleep each on its own semaphore, in a list sorted by
 *    ticket (one per commit level). After publishing, the writer takes the
 *    waiters now covered (or all, once failed or exited) off the list under
 *    mu, sets their result, and posts their semaphores after releasing mu:
 *    only those wake, and they return without taking mu again.
 *  - The commit levels (written, durable, last_ticket, failed) are mirrored
 *    in atomics, stored with release under mu after the field changes, so
 *    wal_wait and wal_is_committed answer an already committed ticket with
 *    no lock. They only ever answer "committed" from them; anything else
 *    (not yet, failed, bad ticket) takes the locked path.
 *  - Fields marked "writer" belong to the writer thread after wal_open
 *    returns (wal_open and wal_close use them while no writer runs).
 *  - After open only the writer does I/O on segment files, except wal_gc,
 *    which unlinks finished segments the writer no longer touches.
 *  - wal_notify callbacks run with mu released, one at a time.
 *
 * One writer iteration: plan (under mu: what to flush, sync, prepare; swap
 * buffers) -> I/O (unlocked) -> publish (under mu: tickets, failure, spare
 * state) -> callbacks (unlocked).
 *
 * States
 *   healthy --failed pwrite / fsync / preallocation--> failed (sticky: until
 *             reopened; appends get SHOAL_EREADONLY, waiters the error)
 *   spare:  NONE --made--> READY --an appender rotates into it--> NONE
 *           NONE --ENOSPC--> NOSPC --retry every second, made--> READY
 *
 * Appenders wait only when the buffer backlog passes buf_limit or a record
 * must go to a spare that is still being made; neither happens while the
 * disk keeps up.
 *
 * Recovery reads one segment file at a time into memory. In the newest
 * segment holding records, F = the largest valid claim of its two slots
 * (WAL_SEG_HDR if neither is valid). At the first bad or short record X:
 *   X <  F  corruption of acknowledged data: SHOAL_ECORRUPT, logged with the
 *           file, X and F. Never cut. (Except when the file ends before F
 *           and the record runs past that end: the file was truncated, what
 *           is gone is gone; cut, and logged as lost acknowledged records.)
 *   X >= F  a torn tail: cut at X, whatever follows, and a SEG_END written
 *           at X (fsynced), then its end claimed as the frontier.
 * Beyond F lie only writes no fdatasync has covered, which a power cut may
 * keep, drop, tear or reorder in any combination (the page cache writes
 * pages back in any order): a later write surviving an earlier one, or a
 * user value that holds an encoded record, says nothing about corruption.
 * Below F every byte was reported durable, so a bad byte there is the
 * medium's fault. The cost: records synced after the last claim (the last
 * batch, or the last WAL_CLAIM_NS of batches under load, before an idle
 * period or a crash) are beyond F, so a media flip in them is cut as a
 * tail rather than reported.
 *
 * Tickets restart at 0 on every open: they name positions in this run's log
 * (data record bytes appended since open), not offsets in files.
 */
#include "storage/wal.h"

#include "proto/bytes.h"
#include "proto/clock.h"
#include "proto/mem.h"
#include "proto/slog.h"
#include "proto/thread.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <zlib.h>

#define WAL_VERSION    2u
#define SEG_FIXED      32u                /* header bytes before the slots */
#define SEG_NAME_LEN   24u                /* "wal-" 16 hex ".log" */
#define PATH_CAP       4096u              /* bytes of a segment path */
#define STACK_REC      512u               /* records this small: stack */
#define FLUSH_DELAY_NS 1000000u           /* fsync=none: buffer <= 1 ms */
#define FLUSH_BYTES    ((size_t) 1 << 20) /* ... or this many bytes */
#define BUF_LIMIT_MIN  ((size_t) 8 << 20) /* backlog before appenders wait */
#define SPARE_RETRY_NS 1000000000u        /* ENOSPC: retry after 1 s */
#define READ_MAX       ((size_t) 1 << 40) /* largest segment file read */
#define SEG_MIN        4096u              /* smallest segment_bytes */
#define DEFAULT_SEG    ((uint64_t) 64 << 20)
#define NS_PER_MS      1000000u

static const uint8_t seg_magic[8] = {'S', 'H', 'O', 'A', 'L', 'W', 'A', 'L'};

/* ---- fsync policy names -------------------------------------------------- */

static const char *const fsync_names[] = {
    [WAL_FSYNC_ALWAYS] = "always",
    [WAL_FSYNC_INTERVAL] = "interval",
    [WAL_FSYNC_NONE] = "none",
};

int
wal_fsync_parse(const char *s)
{
    for (int i = 0; s != NULL && i <= WAL_FSYNC_NONE; i++)
        if (strcmp(s, fsync_names[i]) == 0)
            return i;
    return -1;
}

const char *
wal_fsync_name(wal_fsync f)
{
    if ((unsigned) f > WAL_FSYNC_NONE)
        return "?";
    return fsync_names[f];
}

/* ---- op codec ------------------------------------------------------------ */

static size_t
op_size(const wal_op *op)
{
    size_t n = WAL_OP_HDR + (size_t) op->klen;
    return op->kind == WAL_OP_DEL ? n : n + op->vlen;
}

size_t
wal_ops_size(const wal_op *ops, size_t n)
{
    size_t total = 4;
    for (size_t i = 0; i < n; i++) {
        size_t one = op_size(&ops[i]);
        if (total > SIZE_MAX - one)
            return SIZE_MAX;
        total += one;
    }
    return total;
}

void
wal_ops_encode(const wal_op *ops, size_t n, uint8_t *out)
{
    size_t pos = 4;

    put_u32(out, (uint32_t) n);
    for (size_t i = 0; i < n; i++) {
        const wal_op *op = &ops[i];
        bool del = op->kind == WAL_OP_DEL;
        uint32_t vlen = del ? 0 : op->vlen;
        out[pos] = op->kind;
        put_u64(out + pos + 1, del ? 0 : op->expire_at);
        put_u32(out + pos + 9, op->klen);
        put_u32(out + pos + 13, vlen);
        pos += WAL_OP_HDR;
        if (op->klen > 0)
            memcpy(out + pos, op->key, op->klen);
        pos += op->klen;
        if (vlen > 0)
            memcpy(out + pos, op->val, vlen);
        pos += vlen;
    }
}

shoal_err
wal_ops_count(const uint8_t *payload, size_t len, uint32_t *n_out,
              size_t *pos_out)
{
    if (len < 4)
        return SHOAL_ECORRUPT;
    uint32_t n = get_u32(payload);
    /* Every op takes at least its header: a count that cannot fit is a lie,
     * and rejecting it here bounds any loop a caller runs over n. */
    if (n > (len - 4) / WAL_OP_HDR)
        return SHOAL_ECORRUPT;
    *n_out = n;
    *pos_out = 4;
    return SHOAL_OK;
}

shoal_err
wal_ops_next(const uint8_t *payload, size_t len, size_t *pos, wal_op *op)
{
    size_t p = *pos;

    if (p > len || len - p < WAL_OP_HDR)
        return SHOAL_ECORRUPT;
    const uint8_t *h = payload + p;
    size_t left = len - p - WAL_OP_HDR;
    uint32_t klen = get_u32(h + 9);
    uint32_t vlen = get_u32(h + 13);
    uint64_t expire_at = get_u64(h + 1);
    if (klen > left || vlen > left - klen)
        return SHOAL_ECORRUPT;
    if (h[0] == WAL_OP_DEL ? (vlen != 0 || expire_at != 0) : h[0] != WAL_OP_PUT)
        return SHOAL_ECORRUPT;
    op->kind = h[0];
    op->expire_at = expire_at;
    op->key = h + WAL_OP_HDR;
    op->klen = klen;
    op->val = op->key + klen;
    op->vlen = vlen;
    *pos = p + WAL_OP_HDR + klen + vlen;
    return SHOAL_OK;
}

/* A WAL_REC_OPS payload must be exactly its ops. */
static shoal_err
ops_check(const uint8_t *payload, size_t len)
{
    uint32_t n;
    size_t pos;
    wal_op op;
    shoal_err rc;

    if ((rc = wal_ops_count(payload, len, &n, &pos)) != SHOAL_OK)
        return rc;
    for (uint32_t i = 0; i < n; i++)
        if ((rc = wal_ops_next(payload, len, &pos, &op)) != SHOAL_OK)
            return rc;
    return pos == len ? SHOAL_OK : SHOAL_ECORRUPT;
}

/* ---- record codec -------------------------------------------------------- */

static uint32_t
rec_crc(const uint8_t *rec, size_t payload_len)
{
    return (uint32_t) crc32_z(0L, rec + 8, WAL_REC_HDR - 8 + payload_len);
}

void
wal_rec_encode(const wal_rec *r, uint8_t *out)
{
    put_u32(out, r->len);
    out[8] = r->type;
    put_u16(out + 9, r->shard);
    put_u32(out + 11, r->shard_epoch);
    put_u64(out + 15, r->lsn);
    /* The payload may already be in place (wal_append encodes it there). */
    if (r->len > 0 && r->payload != out + WAL_REC_HDR)
        memmove(out + WAL_REC_HDR, r->payload, r->len);
    put_u32(out + 4, rec_crc(out, r->len));
}

/* A SEG_END carries nothing: any other value is not ours. */
static bool
seg_end_ok(const wal_rec *r)
{
    return r->len == 0 && r->shard == 0 && r->shard_epoch == 0 && r->lsn == 0;
}

shoal_err
wal_rec_decode(const uint8_t *buf, size_t avail, size_t max_len, wal_rec *r,
               size_t *used)
{
    if (avail < WAL_REC_HDR)
        return SHOAL_EINVAL;
    uint32_t len = get_u32(buf);
    uint8_t type = buf[8];
    if (len > max_len || (type != WAL_REC_OPS && type != WAL_REC_SEG_END))
        return SHOAL_ECORRUPT;
    if (len > avail - WAL_REC_HDR)
        return SHOAL_EINVAL;
    if (get_u32(buf + 4) != rec_crc(buf, len))
        return SHOAL_ECORRUPT;
    wal_rec d = {.type = type,
                 .shard = get_u16(buf + 9),
                 .shard_epoch = get_u32(buf + 11),
                 .lsn = get_u64(buf + 15),
                 .payload = buf + WAL_REC_HDR,
                 .len = len};
    if (type == WAL_REC_SEG_END ? !seg_end_ok(&d)
                                : ops_check(d.payload, len) != SHOAL_OK)
        return SHOAL_ECORRUPT;
    *r = d;
    *used = WAL_REC_HDR + (size_t) len;
    return SHOAL_OK;
}

static void
seg_end_encode(uint8_t *out)
{
    wal_rec r = {.type = WAL_REC_SEG_END};
    wal_rec_encode(&r, out);
}

/* ---- segment header and names -------------------------------------------- */

static void
seg_hdr_encode(uint64_t seq, uint8_t *out)
{
    memcpy(out, seg_magic, sizeof seg_magic);
    put_u32(out + 8, WAL_VERSION);
    put_u32(out + 12, WAL_SEG_HDR);
    put_u64(out + 16, seq);
    put_u32(out + 24, 0);
    put_u32(out + 28, (uint32_t) crc32_z(0L, out, 28));
}

/* NULL if buf starts with a good header for seq, else what is wrong. */
static const char *
seg_hdr_problem(const uint8_t *buf, size_t len, uint64_t seq)
{
    if (len < WAL_SEG_HDR)
        return "short header";
    if (memcmp(buf, seg_magic, sizeof seg_magic) != 0)
        return "bad magic";
    if (get_u32(buf + 28) != (uint32_t) crc32_z(0L, buf, 28))
        return "header crc mismatch";
    if (get_u32(buf + 8) == 1)
        return "format version 1 (from before durable frontiers): this "
               "build reads version 2 only";
    if (get_u32(buf + 8) != WAL_VERSION)
        return "unsupported format version";
    if (get_u32(buf + 12) != WAL_SEG_HDR)
        return "bad header length";
    if (get_u64(buf + 16) != seq)
        return "sequence number differs from the file name";
    if (get_u32(buf + 24) != 0)
        return "reserved field not zero";
    return NULL;
}

/* ---- frontier slots ------------------------------------------------------ */

/* Salted with seq: a slot copied from another segment does not validate. */
static uint32_t
slot_crc(uint64_t seq, const uint8_t *slot)
{
    uint8_t salt[8];
    put_u64(salt, seq);
    uLong crc = crc32_z(0L, salt, sizeof salt);
    return (uint32_t) crc32_z(crc, slot, 12);
}

/* Odd generations in slot A, even ones in B: consecutive claims alternate. */
static uint64_t
slot_off(uint32_t gen)
{
    return WAL_SEG_SLOTS + (gen & 1u ? 0u : WAL_SLOT_LEN);
}

static void
slot_encode(uint64_t seq, uint64_t frontier, uint32_t gen, uint8_t *out)
{
    put_u64(out, frontier);
    put_u32(out + 8, gen);
    put_u32(out + 12, slot_crc(seq, out));
}

typedef struct frontier {
    uint64_t off; /* largest valid claim; WAL_SEG_HDR when none */
    uint32_t gen; /* largest valid generation; 0 when none */
} frontier;

/* The claims of the slots of buf (at least WAL_SEG_HDR bytes, header of
 * segment seq). A slot that fails its crc, sits in the wrong place for its
 * generation or claims less than the header is ignored: it is a torn or
 * garbled write, and the other slot's older claim is still true. */
static void
frontier_read(const uint8_t *buf, uint64_t seq, frontier *f)
{
    f->off = WAL_SEG_HDR;
    f->gen = 0;
    for (uint32_t i = 0; i < 2; i++) {
        const uint8_t *s = buf + WAL_SEG_SLOTS + i * WAL_SLOT_LEN;
        uint64_t off = get_u64(s);
        uint32_t gen = get_u32(s + 8);
        if (gen == 0 || slot_off(gen) != WAL_SEG_SLOTS + i * WAL_SLOT_LEN ||
            get_u32(s + 12) != slot_crc(seq, s) || off < WAL_SEG_HDR)
            continue;
        if (off > f->off)
            f->off = off;
        if (gen > f->gen)
            f->gen = gen;
    }
}

static int
hex_digit(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

/* "wal-<16 lowercase hex>.log" exactly; anything else is not a segment. */
static bool
seg_name_parse(const char *name, uint64_t *seq)
{
    uint64_t v = 0;

    if (strlen(name) != SEG_NAME_LEN || memcmp(name, "wal-", 4) != 0 ||
        memcmp(name + 20, ".log", 4) != 0)
        return false;
    for (int i = 4; i < 20; i++) {
        int d = hex_digit(name[i]);
        if (d < 0)
            return false;
        v = (v << 4) | (uint64_t) d;
    }
    *seq = v;
    return true;
}

/* ---- the handle ---------------------------------------------------------- */

/* Encoded records waiting for the writer. Bytes [0, split) go to segment seq
 * at file offset off; with a switch, they end with its SEG_END and bytes
 * [split, len) go to segment seq + 1 right after its header. */
typedef struct wbuf {
    uint8_t *data;
    size_t len;            /* bytes used */
    size_t cap;            /* bytes allocated */
    uint64_t seq;          /* segment of data[0] */
    uint64_t off;          /* file offset of data[0] */
    bool has_switch;       /* a SEG_END and a segment switch are inside */
    size_t split;          /* with has_switch: first byte of the next seg */
    uint64_t split_ticket; /* with has_switch: last ticket before split */
    uint64_t end_ticket;   /* last ticket inside (0: none yet) */
    uint64_t n_records;    /* data records inside */
    uint64_t first_ns;     /* mono time the first byte went in */
} wbuf;

/* A wal_wait caller asleep until its ticket commits; lives on its stack.
 * Whoever takes it off its list (under mu) owns it until the post. */
typedef struct waiter {
    uint64_t ticket;
    shoal_err rc; /* the answer, set before the post */
    sem_t sem;
    struct waiter *next;
} waiter;

typedef struct wal_seg {
    uint64_t seq;
    uint64_t *max_lsn; /* [n_shards]: highest lsn of the shard here (0) */
    uint64_t records;  /* data records in it */
    bool finished;     /* its SEG_END is durable: wal_gc may delete it */
    bool deleting;     /* wal_gc is unlinking it */
} wal_seg;

typedef struct notif {
    uint64_t ticket;
    wal_done_cb cb;
    void *arg;
} notif;

/* Pending notifications sorted by ticket; live ones are v[head, len). */
typedef struct nlist {
    notif *v;
    size_t head;
    size_t len;
    size_t cap;
} nlist;

typedef enum spare_state {
    SPARE_NONE = 0,  /* no spare yet */
    SPARE_READY = 1, /* the writer holds a made spare for fill_seq + 1 */
    SPARE_NOSPC = 2, /* making it failed with ENOSPC; retried every second */
} spare_state;

struct wal {
    /* Set at open, then read-only. */
    fs *fs;
    char *dir;
    uint64_t seg_bytes; /* preallocated size of new segments */
    size_t max_rec;     /* largest record, header included */
    size_t buf_limit;   /* backlog (bytes) beyond which appenders wait */
    wal_fsync policy;
    uint64_t interval_ns; /* WAL_FSYNC_INTERVAL period */
    uint32_t n_shards;
    pthread_t thread;
    bool thread_started;

    /* writer */
    int cur_fd; /* segment being written */
    uint64_t cur_seq;
    bool cur_dirty;      /* cur_fd has bytes not yet fdatasynced */
    uint64_t cur_end;    /* file offset past the last record byte written */
    uint64_t synced_end; /* an fdatasync of cur_fd covered [0, this) */
    uint64_t claimed;    /* frontier the last slot written claims */
    uint64_t claim_ns;   /* mono time of that claim (0: none yet) */
    uint32_t slot_gen;   /* generation of that slot (0: none yet) */
    int spare_fd;        /* the spare, -1 if none */
    uint64_t spare_seq;
    wbuf out;              /* the buffer being written */
    uint64_t last_sync_ns; /* mono time of the last fdatasync */

    pthread_mutex_t mu;
    pthread_cond_t writer_cv;
    pthread_cond_t space_cv;
    /* Mirrors of the mu fields of the same name: stored (release) under mu
     * after them, loaded (acquire) without it. */
    _Atomic uint64_t pub_written;
    _Atomic uint64_t pub_durable;
    _Atomic uint64_t pub_last_ticket;
    atomic_bool pub_failed;
    /* mu */
    wbuf in;              /* appenders encode here */
    uint64_t fill_seq;    /* segment the next record goes to */
    uint64_t fill_off;    /* its file offset */
    uint64_t last_ticket; /* highest ticket handed out */
    uint64_t written;     /* tickets <= this reached the OS */
    uint64_t durable;     /* tickets <= this are fdatasynced */
    uint64_t sync_req;    /* a caller wants tickets <= this durable */
    spare_state spare;
    uint64_t spare_retry_ns; /* SPARE_NOSPC: next attempt */
    bool prep_req;           /* an appender waits for the spare */
    bool writer_idle;        /* the writer sleeps on writer_cv */
    bool writer_exited;
    bool closing;
    shoal_err failed; /* sticky: SHOAL_EIO or SHOAL_ENOSPC */
    wal_seg **segs;   /* sorted by seq; last = fill_seq */
    size_t n_segs;
    size_t cap_segs;
    nlist wait_dur;    /* notify when durable >= ticket */
    nlist wait_wr;     /* notify when written >= ticket */
    waiter *sleep_dur; /* wal_wait callers until durable >= ticket, sorted */
    waiter *sleep_wr;  /* ... until written >= ticket, sorted */
    wal_stats st;      /* counters; the rest is filled on demand */
};

void
wal_opts_default(wal_opts *o)
{
    *o = (wal_opts){.fs = NULL,
                    .dir = NULL,
                    .segment_bytes = DEFAULT_SEG,
                    .max_record_bytes = 0, /* segment_bytes / 2 */
                    .fsync = WAL_FSYNC_ALWAYS,
                    .interval_ms = 100,
                    .n_shards = 256};
}

static void
seg_path(const wal *w, uint64_t seq, char *out)
{
    char name[SEG_NAME_LEN + 1];
    snprintf(name, sizeof name, "wal-%016" PRIx64 ".log", seq);
    /* wal_open checked that the directory leaves room for any name. */
    shoal_err rc = fs_path(out, PATH_CAP, w->dir, name);
    SH_ASSERT(rc == SHOAL_OK);
}

static void
lock(wal *w)
{
    int e = pthread_mutex_lock(&w->mu);
    SH_ASSERT(e == 0);
}

static void
unlock(wal *w)
{
    int e = pthread_mutex_unlock(&w->mu);
    SH_ASSERT(e == 0);
}

/* ---- small containers ---------------------------------------------------- */

static shoal_err
buf_reserve(wbuf *b, size_t need)
{
    if (need <= b->cap)
        return SHOAL_OK;
    size_t cap = b->cap != 0 ? b->cap : 4096;
    while (cap < need)
        cap *= 2;
    uint8_t *p = mem_realloc(b->data, cap);
    if (p == NULL)
        return SHOAL_ENOMEM;
    b->data = p;
    b->cap = cap;
    return SHOAL_OK;
}

/* Empty, keeping the allocation. */
static void
buf_clear(wbuf *b)
{
    b->len = 0;
    b->has_switch = false;
    b->split = 0;
    b->split_ticket = 0;
    b->end_ticket = 0;
    b->n_records = 0;
}

static shoal_err
nlist_push(nlist *l, notif n)
{
    if (l->len == l->cap && l->head > 0) {
        memmove(l->v, l->v + l->head, (l->len - l->head) * sizeof *l->v);
        l->len -= l->head;
        l->head = 0;
    }
    if (l->len == l->cap) {
        size_t cap = l->cap != 0 ? l->cap * 2 : 16;
        notif *v = mem_realloc(l->v, cap * sizeof *v);
        if (v == NULL)
            return SHOAL_ENOMEM;
        l->v = v;
        l->cap = cap;
    }
    /* Tickets mostly arrive in order: insert from the back. */
    size_t i = l->len;
    while (i > l->head && l->v[i - 1].ticket > n.ticket) {
        l->v[i] = l->v[i - 1];
        i--;
    }
    l->v[i] = n;
    l->len++;
    return SHOAL_OK;
}

/* Pop the first entry if its ticket <= upto. */
static bool
nlist_pop(nlist *l, uint64_t upto, notif *out)
{
    if (l->head == l->len || l->v[l->head].ticket > upto)
        return false;
    *out = l->v[l->head++];
    if (l->head == l->len)
        l->head = l->len = 0;
    return true;
}

static void
seg_free(wal_seg *s)
{
    if (s == NULL)
        return;
    mem_free(s->max_lsn);
    mem_free(s);
}

static shoal_err
seg_new(const wal *w, uint64_t seq, wal_seg **out)
{
    wal_seg *s = mem_calloc(1, sizeof *s);
    *out = NULL;
    if (s == NULL)
        return SHOAL_ENOMEM;
    if ((s->max_lsn = mem_calloc(w->n_shards, sizeof *s->max_lsn)) == NULL) {
        mem_free(s);
        return SHOAL_ENOMEM;
    }
    s->seq = seq;
    *out = s;
    return SHOAL_OK;
}

/* Room for one more segment in segs[]. */
static shoal_err
segs_reserve(wal *w)
{
    if (w->n_segs < w->cap_segs)
        return SHOAL_OK;
    size_t cap = w->cap_segs != 0 ? w->cap_segs * 2 : 8;
    wal_seg **v = mem_realloc(w->segs, cap * sizeof *v);
    if (v == NULL)
        return SHOAL_ENOMEM;
    w->segs = v;
    w->cap_segs = cap;
    return SHOAL_OK;
}

static void
seg_push(wal *w, wal_seg *s)
{
    SH_ASSERT(w->n_segs < w->cap_segs);
    SH_ASSERT(w->n_segs == 0 || w->segs[w->n_segs - 1]->seq < s->seq);
    w->segs[w->n_segs++] = s;
}

static wal_seg *
seg_find(const wal *w, uint64_t seq, size_t *at)
{
    for (size_t i = w->n_segs; i-- > 0;) {
        if (w->segs[i]->seq == seq) {
            if (at != NULL)
                *at = i;
            return w->segs[i];
        }
    }
    return NULL;
}

/* ---- segment files ------------------------------------------------------- */

/* Create segment seq complete and ready for records (see the invariants).
 * On failure nothing is left behind. quiet: a retry; log at DEBUG only. */
static shoal_err
seg_create(wal *w, uint64_t seq, bool quiet, int *fd_out)
{
    char path[PATH_CAP];
    uint8_t hdr[SEG_FIXED];
    const char *op = "create";
    int fd = -1;
    slog_level level;
    shoal_err rc;

    *fd_out = -1;
    seg_path(w, seq, path);
    seg_hdr_encode(seq, hdr);
    /* Truncating is safe: no seq above the newest data segment names a file
     * with records (recovery removed them, and we create them in order). */
    rc = fs_open(w->fs, path, FS_RDWR | FS_CREATE | FS_TRUNC, &fd);
    if (rc != SHOAL_OK)
        goto fail;
    op = "preallocate";
    if ((rc = fs_fallocate(w->fs, fd, w->seg_bytes)) != SHOAL_OK)
        goto fail;
    /* Only the fixed part: the slots stay zero (no claim) as preallocated,
     * so a crash that garbles this write leaves a file recovery drops. */
    op = "write header of";
    if ((rc = fs_pwrite(w->fs, fd, hdr, sizeof hdr, 0)) != SHOAL_OK)
        goto fail;
    op = "fsync";
    if ((rc = fs_fsync(w->fs, fd)) != SHOAL_OK)
        goto fail;
    op = "fsync the directory of";
    if ((rc = fs_dir_fsync(w->fs, w->dir)) != SHOAL_OK)
        goto fail;
    *fd_out = fd;
    return SHOAL_OK;
fail:
    level = rc == SHOAL_ENOSPC ? SLOG_WARN : SLOG_ERR;
    slog(quiet ? SLOG_DEBUG : level, "wal", "%s %s (%" PRIu64 " bytes): %s", op,
         path, w->seg_bytes, shoal_strerror(rc));
    if (fd >= 0) {
        fs_close(w->fs, fd);
        (void) fs_unlink(w->fs, path);
    }
    return rc;
}

/* ---- recovery ------------------------------------------------------------ */

typedef struct seqlist {
    uint64_t *v;
    size_t n;
    size_t cap;
} seqlist;

static shoal_err
list_cb(void *arg, const char *name)
{
    seqlist *l = arg;
    uint64_t seq;

    if (!seg_name_parse(name, &seq))
        return SHOAL_OK;
    if (l->n == l->cap) {
        size_t cap = l->cap != 0 ? l->cap * 2 : 16;
        uint64_t *v = mem_realloc(l->v, cap * sizeof *v);
        if (v == NULL)
            return SHOAL_ENOMEM;
        l->v = v;
        l->cap = cap;
    }
    l->v[l->n++] = seq;
    return SHOAL_OK;
}

static int
cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *) a, y = *(const uint64_t *) b;
    return (x > y) - (x < y);
}

static bool
is_zero(const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (p[i] != 0)
            return false;
    return true;
}

/* Offset just past the last nonzero byte of buf[from, len). */
static size_t
nonzero_end(const uint8_t *buf, size_t from, size_t len)
{
    while (len > from && buf[len - 1] == 0)
        len--;
    return len;
}

static shoal_err
read_seg(wal *w, uint64_t seq, uint8_t **buf, size_t *len)
{
    char path[PATH_CAP];
    seg_path(w, seq, path);
    shoal_err rc = fs_read_all(w->fs, path, READ_MAX, buf, len);
    if (rc == SHOAL_OK || rc == SHOAL_ENOMEM)
        return rc;
    slog(SLOG_ERR, "wal", "read %s: %s", path, shoal_strerror(rc));
    return SHOAL_EIO;
}

/* Remove trailing segment files that never held a record (see the
 * invariants); *n_data gets how many of l's (sorted) files remain. */
static shoal_err
drop_blank_tail(wal *w, const seqlist *l, size_t *n_data, wal_recovery *ri)
{
    size_t n = l->n;
    shoal_err rc = SHOAL_OK;

    while (n > 0 && rc == SHOAL_OK) {
        uint8_t *buf = NULL;
        size_t len = 0;
        char path[PATH_CAP];
        if ((rc = read_seg(w, l->v[n - 1], &buf, &len)) != SHOAL_OK)
            break;
        ri->segments++;
        /* Slots included: a claim means a record was synced here. */
        bool blank =
            len <= SEG_FIXED || is_zero(buf + SEG_FIXED, len - SEG_FIXED);
        mem_free(buf);
        if (!blank)
            break;
        seg_path(w, l->v[n - 1], path);
        slog(SLOG_INFO, "wal", "%s holds no records: removed", path);
        if ((rc = fs_unlink(w->fs, path)) == SHOAL_OK)
            n--;
    }
    if (rc == SHOAL_OK && n < l->n)
        rc = fs_dir_fsync(w->fs, w->dir);
    *n_data = n;
    return rc == SHOAL_OK || rc == SHOAL_ENOMEM ? rc : SHOAL_EIO;
}

typedef struct replay {
    wal *w;
    wal_replay_cb cb;
    void *arg;
    wal_recovery *ri;
    const char *path; /* of the segment being read */
} replay;

static shoal_err
replay_rec(replay *rp, wal_seg *seg, const wal_rec *r, size_t off)
{
    if (r->shard >= rp->w->n_shards) {
        slog(SLOG_ERR, "wal",
             "%s: record at offset %zu names shard %u of %" PRIu32 ": corrupt",
             rp->path, off, (unsigned) r->shard, rp->w->n_shards);
        return SHOAL_ECORRUPT;
    }
    if (r->lsn > seg->max_lsn[r->shard])
        seg->max_lsn[r->shard] = r->lsn;
    seg->records++;
    rp->ri->records++;
    rp->ri->bytes += WAL_REC_HDR + (uint64_t) r->len;
    return rp->cb != NULL ? rp->cb(rp->arg, r) : SHOAL_OK;
}

/* Where replaying a segment stopped. */
typedef struct rstop {
    size_t off;    /* after the last good record */
    bool ended;    /* at a SEG_END (off is where it starts) */
    bool is_short; /* else: the record at off runs past the end of the file */
} rstop;

/* Replay the records of one segment up to its SEG_END or its first bad
 * record. */
static shoal_err
replay_records(replay *rp, wal_seg *seg, const uint8_t *buf, size_t len,
               rstop *st)
{
    size_t pos = WAL_SEG_HDR;
    shoal_err rc, drc;
    wal_rec r;
    size_t used;

    *st = (rstop){0};
    while ((drc = wal_rec_decode(buf + pos, len - pos, SIZE_MAX, &r, &used)) ==
           SHOAL_OK) {
        if (r.type == WAL_REC_SEG_END) {
            st->ended = true;
            break;
        }
        if ((rc = replay_rec(rp, seg, &r, pos)) != SHOAL_OK)
            return rc;
        pos += used;
    }
    st->off = pos;
    st->is_short = drc == SHOAL_EINVAL;
    return SHOAL_OK;
}

/* Finish the newest segment at path (of seq; slots as in f): a SEG_END at
 * off, fsynced, then its end claimed as the frontier (a claim follows the
 * fsync it describes), fsynced too so the next open need not redo it. */
static shoal_err
write_seg_end(wal *w, const char *path, uint64_t seq, size_t off,
              const frontier *f)
{
    uint8_t rec[WAL_REC_HDR], slot[WAL_SLOT_LEN];
    uint64_t end = off + (uint64_t) WAL_REC_HDR;
    uint32_t gen = f->gen + 1;
    const char *op = "open";
    int fd = -1;
    shoal_err rc;

    seg_end_encode(rec);
    slot_encode(seq, end, gen, slot);
    if ((rc = fs_open(w->fs, path, FS_RDWR, &fd)) != SHOAL_OK)
        goto fail;
    op = "write a SEG_END to";
    if ((rc = fs_pwrite(w->fs, fd, rec, sizeof rec, off)) != SHOAL_OK)
        goto fail;
    op = "fsync";
    if ((rc = fs_fsync(w->fs, fd)) != SHOAL_OK)
        goto fail;
    if (end > f->off && f->gen < UINT32_MAX) {
        op = "write the frontier of";
        if ((rc = fs_pwrite(w->fs, fd, slot, sizeof slot, slot_off(gen))) !=
            SHOAL_OK)
            goto fail;
        op = "fsync";
        if ((rc = fs_fsync(w->fs, fd)) != SHOAL_OK)
            goto fail;
    }
    fs_close(w->fs, fd);
    return SHOAL_OK;
fail:
    fs_close(w->fs, fd);
    slog(SLOG_ERR, "wal", "%s %s (closing it with a SEG_END at offset %zu): %s",
         op, path, off, shoal_strerror(rc));
    return rc == SHOAL_ENOSPC || rc == SHOAL_ENOMEM ? rc : SHOAL_EIO;
}

/* The newest segment stopped at st->off without a SEG_END. Below its
 * frontier that is corruption (unless the file was truncated there); at or
 * beyond it, the end of the log: a clean end (zeros) or a torn tail, cut
 * whatever follows. Either gets its SEG_END. */
static shoal_err
end_newest(replay *rp, uint64_t seq, const uint8_t *buf, size_t len,
           const rstop *st)
{
    frontier f;
    size_t stop = st->off;

    frontier_read(buf, seq, &f);
    if (stop < f.off && !(st->is_short && len < f.off)) {
        slog(SLOG_ERR, "wal",
             "%s: bad record at offset %zu, inside the durable region ending "
             "at %" PRIu64 ": acknowledged data is damaged: corrupt",
             rp->path, stop, f.off);
        return SHOAL_ECORRUPT;
    }
    if (stop < f.off)
        slog(SLOG_ERR, "wal",
             "%s: file ends at %zu, inside the durable region ending at "
             "%" PRIu64 ": truncated; acknowledged records from offset %zu "
             "on are lost",
             rp->path, len, f.off, stop);
    if (!is_zero(buf + stop, len - stop)) {
        size_t cut = nonzero_end(buf, stop, len) - stop;
        slog(SLOG_WARN, "wal",
             "%s: torn tail at offset %zu (durable up to %" PRIu64
             "): %zu bytes cut",
             rp->path, stop, f.off, cut);
        rp->ri->torn_bytes += cut;
    }
    return write_seg_end(rp->w, rp->path, seq, stop, &f);
}

static shoal_err
recover_buf(replay *rp, wal_seg *seg, const uint8_t *buf, size_t len,
            bool newest)
{
    const char *bad = seg_hdr_problem(buf, len, seg->seq);
    rstop st;
    shoal_err rc;

    if (bad != NULL) {
        slog(SLOG_ERR, "wal", "%s: offset 0: %s: corrupt", rp->path, bad);
        return SHOAL_ECORRUPT;
    }
    if ((rc = replay_records(rp, seg, buf, len, &st)) != SHOAL_OK)
        return rc;
    if (st.ended)
        return SHOAL_OK;
    if (newest)
        return end_newest(rp, seg->seq, buf, len, &st);
    slog(SLOG_ERR, "wal",
         "%s: bad or missing record at offset %zu of a finished segment: "
         "corrupt",
         rp->path, st.off);
    return SHOAL_ECORRUPT;
}

static shoal_err
recover_seg(replay *rp, uint64_t seq, bool newest)
{
    char path[PATH_CAP];
    uint8_t *buf = NULL;
    size_t len = 0;
    wal_seg *seg = NULL;
    shoal_err rc;

    seg_path(rp->w, seq, path);
    rp->path = path;
    if ((rc = segs_reserve(rp->w)) != SHOAL_OK ||
        (rc = seg_new(rp->w, seq, &seg)) != SHOAL_OK ||
        (rc = read_seg(rp->w, seq, &buf, &len)) != SHOAL_OK)
        goto done;
    if (!newest)
        rp->ri->segments++; /* the newest was counted by drop_blank_tail */
    if ((rc = recover_buf(rp, seg, buf, len, newest)) != SHOAL_OK)
        goto done;
    seg->finished = true;
    seg_push(rp->w, seg);
    seg = NULL;
done:
    seg_free(seg);
    mem_free(buf);
    return rc;
}

/* Replay every segment in order; sets fill_seq to the seq of the segment to
 * start. */
static shoal_err
recover(wal *w, wal_replay_cb cb, void *arg, wal_recovery *ri)
{
    seqlist l = {0};
    size_t n_data = 0;
    replay rp = {.w = w, .cb = cb, .arg = arg, .ri = ri};
    shoal_err rc = fs_list(w->fs, w->dir, list_cb, &l);

    if (rc == SHOAL_ENOTFOUND)
        rc = SHOAL_EINVAL;
    if (rc != SHOAL_OK)
        goto done;
    if (l.n > 0)
        qsort(l.v, l.n, sizeof *l.v, cmp_u64);
    if (l.n > 0 && l.v[l.n - 1] == UINT64_MAX) {
        slog(SLOG_ERR, "wal", "%s: segment sequence numbers exhausted", w->dir);
        rc = SHOAL_ECORRUPT;
        goto done;
    }
    if ((rc = drop_blank_tail(w, &l, &n_data, ri)) != SHOAL_OK)
        goto done;
    for (size_t i = 0; i < n_data && rc == SHOAL_OK; i++)
        rc = recover_seg(&rp, l.v[i], i + 1 == n_data);
    w->fill_seq = n_data > 0 ? l.v[n_data - 1] + 1 : l.n > 0 ? l.v[0] : 1;
done:
    mem_free(l.v);
    return rc;
}

/* ---- failure ------------------------------------------------------------- */

/* Enter the sticky failed state (the failing call logged the details). */
static void
fail_locked(wal *w, shoal_err rc)
{
    if (w->failed != SHOAL_OK)
        return;
    w->failed = rc == SHOAL_ENOSPC ? SHOAL_ENOSPC : SHOAL_EIO;
    slog(SLOG_ERR, "wal",
         "%s: log failed (%s): appends refused until it is reopened", w->dir,
         shoal_errname(rc));
    atomic_store_explicit(&w->pub_failed, true, memory_order_release);
    /* What the appenders buffered can no longer be written in order. */
    buf_clear(&w->in);
    pthread_cond_broadcast(&w->space_cv);
}

/* ---- commit levels ------------------------------------------------------- */

static bool
committed_locked(const wal *w, uint64_t ticket, bool durable)
{
    if (durable || w->policy == WAL_FSYNC_ALWAYS)
        return ticket <= w->durable;
    if (w->policy == WAL_FSYNC_INTERVAL)
        return ticket <= w->written;
    /* none: committed once buffered, unless the log failed before writing
     * it -- a lost record is not reported as committed. */
    return ticket <= w->last_ticket &&
           (w->failed == SHOAL_OK || ticket <= w->written);
}

/* committed_locked from the atomic mirrors, without mu. true is final; false
 * may be stale (or a bad ticket): the caller then asks under mu. */
static bool
committed_fast(wal *w, uint64_t ticket, bool durable)
{
    if (durable || w->policy == WAL_FSYNC_ALWAYS)
        return ticket <=
               atomic_load_explicit(&w->pub_durable, memory_order_acquire);
    if (ticket <= atomic_load_explicit(&w->pub_written, memory_order_acquire))
        return true;
    if (w->policy == WAL_FSYNC_INTERVAL)
        return false;
    return ticket <= atomic_load_explicit(&w->pub_last_ticket,
                                          memory_order_acquire) &&
           !atomic_load_explicit(&w->pub_failed, memory_order_acquire);
}

/* The list a wal_wait caller sleeps in (fsync=none commits when buffered:
 * a caller that is not answered at once never sleeps there). */
static waiter **
sleep_list(wal *w, bool durable)
{
    if (durable || w->policy == WAL_FSYNC_ALWAYS)
        return &w->sleep_dur;
    return &w->sleep_wr;
}

/* Move the waiters of *head with ticket <= level to the end of the list
 * whose last next pointer is **tail, answering rc; lowest tickets first. */
static void
take_upto(waiter **head, uint64_t level, shoal_err rc, waiter ***tail)
{
    waiter *v;

    while ((v = *head) != NULL && v->ticket <= level) {
        *head = v->next;
        v->rc = rc;
        v->next = NULL;
        **tail = v;
        *tail = &v->next;
    }
}

/* The waiters to wake now: committed, or all once failed or exited. */
static waiter *
waiters_due(wal *w)
{
    waiter *due = NULL;
    waiter **tail = &due;

    take_upto(&w->sleep_dur, w->durable, SHOAL_OK, &tail);
    take_upto(&w->sleep_wr, w->written, SHOAL_OK, &tail);
    if (w->failed == SHOAL_OK && !w->writer_exited)
        return due;
    shoal_err rc = w->failed != SHOAL_OK ? w->failed : SHOAL_ECLOSED;
    take_upto(&w->sleep_dur, UINT64_MAX, rc, &tail);
    take_upto(&w->sleep_wr, UINT64_MAX, rc, &tail);
    return due;
}

/* Wake the waiters taken by waiters_due (mu need not be held). */
static void
waiters_post(waiter *v)
{
    while (v != NULL) {
        waiter *next = v->next; /* v may be gone once posted */
        int e = sem_post(&v->sem);
        SH_ASSERT(e == 0);
        v = next;
    }
}

/* Wake the waiters due, with mu released (held on entry and exit). */
static void
wake_waiters(wal *w)
{
    waiter *due = waiters_due(w);
    if (due == NULL)
        return;
    unlock(w);
    waiters_post(due);
    lock(w);
}

/* The list a notification waits in; NULL: none needed (fsync=none). */
static nlist *
notify_list(wal *w, bool durable)
{
    if (durable || w->policy == WAL_FSYNC_ALWAYS)
        return &w->wait_dur;
    if (w->policy == WAL_FSYNC_INTERVAL)
        return &w->wait_wr;
    return NULL;
}

/* Take the next notification due (committed, or any once failed/exited). */
static bool
notif_due(wal *w, notif *n, shoal_err *rc)
{
    *rc = SHOAL_OK;
    if (nlist_pop(&w->wait_dur, w->durable, n) ||
        nlist_pop(&w->wait_wr, w->written, n))
        return true;
    if (w->failed == SHOAL_OK && !w->writer_exited)
        return false;
    *rc = w->failed != SHOAL_OK ? w->failed : SHOAL_ECLOSED;
    return nlist_pop(&w->wait_dur, UINT64_MAX, n) ||
           nlist_pop(&w->wait_wr, UINT64_MAX, n);
}

/* Run due callbacks with mu released (mu held on entry and exit). */
static void
run_callbacks(wal *w)
{
    notif n;
    shoal_err rc;

    while (notif_due(w, &n, &rc)) {
        unlock(w);
        n.cb(n.arg, rc);
        lock(w);
    }
}

/* ---- the writer thread --------------------------------------------------- */

typedef struct plan {
    bool flush;       /* write the appenders' buffer */
    bool sync;        /* then fdatasync the current segment */
    bool prep;        /* make the spare segment */
    bool prep_quiet;  /* a retry after ENOSPC: do not log each failure */
    bool exit;        /* closing and nothing left */
    uint64_t wake_ns; /* nothing to do: look again then (0: when woken) */
} plan;

/* What one iteration's I/O achieved. */
typedef struct wprog {
    shoal_err rc;      /* first failure */
    shoal_err prep_rc; /* making the spare */
    uint64_t written;  /* tickets <= this reached the OS (0: none) */
    uint64_t durable;  /* tickets <= this are durable (0: none) */
    bool synced;       /* cur_fd was fdatasynced at the end */
    bool switched;     /* finished_seq is finished */
    uint64_t finished_seq;
    uint64_t fsyncs;
} wprog;

static uint64_t
min_nz(uint64_t a, uint64_t b)
{
    if (a == 0)
        return b;
    return b == 0 || a < b ? a : b;
}

/* Whether the spare should be made (when the ENOSPC back-off allows). */
static bool
prep_wanted(const wal *w)
{
    if (w->failed != SHOAL_OK || w->closing || w->spare_fd >= 0 ||
        w->spare == SPARE_READY)
        return false;
    return w->prep_req || w->fill_off >= w->seg_bytes / 2;
}

static bool
flush_due(const wal *w, uint64_t now)
{
    if (w->in.len == 0)
        return false;
    if (w->policy != WAL_FSYNC_NONE || w->closing || w->prep_req ||
        w->in.len >= FLUSH_BYTES || w->sync_req > w->written)
        return true;
    return now >= w->in.first_ns + FLUSH_DELAY_NS;
}

static void
writer_plan(const wal *w, uint64_t now, plan *p)
{
    bool ok = w->failed == SHOAL_OK;

    *p = (plan){0};
    p->flush = ok && flush_due(w, now);
    bool dirty = ok && (w->cur_dirty || p->flush);
    p->sync = dirty && (w->policy == WAL_FSYNC_ALWAYS || w->closing ||
                        w->sync_req > w->durable ||
                        (w->policy == WAL_FSYNC_INTERVAL &&
                         now >= w->last_sync_ns + w->interval_ns));
    bool want = prep_wanted(w);
    bool nospc = w->spare == SPARE_NOSPC;
    p->prep = want && (!nospc || now >= w->spare_retry_ns);
    p->prep_quiet = nospc;
    p->exit = w->closing && !p->flush && !p->sync;
    if (ok && w->in.len > 0 && w->policy == WAL_FSYNC_NONE)
        p->wake_ns = w->in.first_ns + FLUSH_DELAY_NS;
    if (ok && w->cur_dirty && w->policy == WAL_FSYNC_INTERVAL)
        p->wake_ns = min_nz(p->wake_ns, w->last_sync_ns + w->interval_ns);
    if (want && nospc)
        p->wake_ns = min_nz(p->wake_ns, w->spare_retry_ns);
}

static void
writer_sleep(wal *w, uint64_t wake_ns)
{
    w->writer_idle = true;
    if (wake_ns == 0) {
        pthread_cond_wait(&w->writer_cv, &w->mu);
    } else {
        struct timespec ts = {.tv_sec = (time_t) (wake_ns / 1000000000u),
                              .tv_nsec = (long) (wake_ns % 1000000000u)};
        pthread_cond_timedwait(&w->writer_cv, &w->mu, &ts);
    }
    w->writer_idle = false;
}

static shoal_err
write_at(wal *w, const uint8_t *buf, size_t len, uint64_t off)
{
    shoal_err rc = fs_pwrite(w->fs, w->cur_fd, buf, len, off);
    if (rc != SHOAL_OK) {
        char path[PATH_CAP];
        seg_path(w, w->cur_seq, path);
        slog(SLOG_ERR, "wal", "write %s: %zu bytes at offset %" PRIu64 ": %s",
             path, len, off, shoal_strerror(rc));
    }
    w->cur_dirty = true; /* even a failed write may have landed a prefix */
    return rc;
}

static shoal_err
sync_cur(wal *w, wprog *g)
{
    shoal_err rc = fs_fsync(w->fs, w->cur_fd);
    g->fsyncs++;
    if (rc != SHOAL_OK) {
        char path[PATH_CAP];
        seg_path(w, w->cur_seq, path);
        slog(SLOG_ERR, "wal", "fdatasync %s: %s (never retried)", path,
             shoal_strerror(rc));
        return rc;
    }
    w->cur_dirty = false;
    w->synced_end = w->cur_end;
    return SHOAL_OK;
}

/* Claim the current segment's durable frontier: write the next slot with
 * what the last fdatasync covered, if that is news -- and, unless forced,
 * if the last claim is WAL_CLAIM_NS old: a slot is a second page for the
 * fdatasync to write (measured: 9% fewer fdatasyncs/s on a virtio disk), so
 * under load only one batch in WAL_CLAIM_NS carries one. The write needs
 * no fdatasync of its own (the claim is true before it lands); the next
 * one covers it, and no second claim is written before that (see the
 * invariants), so the other slot always holds a synced claim. */
static shoal_err
claim_frontier(wal *w, bool force)
{
    uint8_t slot[WAL_SLOT_LEN];

    if (w->synced_end <= w->claimed || w->slot_gen == UINT32_MAX)
        return SHOAL_OK;
    uint64_t now = clock_mono_ns();
    if (!force && w->claim_ns != 0 && now - w->claim_ns < WAL_CLAIM_NS)
        return SHOAL_OK;
    uint32_t gen = w->slot_gen + 1;
    slot_encode(w->cur_seq, w->synced_end, gen, slot);
    shoal_err rc = write_at(w, slot, sizeof slot, slot_off(gen));
    if (rc != SHOAL_OK)
        return rc;
    w->slot_gen = gen;
    w->claimed = w->synced_end;
    w->claim_ns = now;
    return SHOAL_OK;
}

/* A fresh segment: no record, no claim. */
static void
frontier_reset(wal *w)
{
    w->cur_end = w->synced_end = w->claimed = WAL_SEG_HDR;
    w->slot_gen = 0;
    w->claim_ns = 0;
}

/* The current segment now ends with its SEG_END: make it durable, then move
 * to the spare. */
static shoal_err
switch_segment(wal *w, wprog *g)
{
    shoal_err rc = sync_cur(w, g);
    if (rc != SHOAL_OK)
        return rc;
    SH_ASSERT(w->spare_fd >= 0 && w->spare_seq == w->cur_seq + 1);
    g->switched = true;
    g->finished_seq = w->cur_seq;
    /* Finished: claim its end. Left unsynced -- recovery reads the slots of
     * the newest segment only, and this one ends with a durable SEG_END. */
    if ((rc = claim_frontier(w, true)) != SHOAL_OK)
        return rc;
    fs_close(w->fs, w->cur_fd);
    w->cur_fd = w->spare_fd;
    w->cur_seq = w->spare_seq;
    w->spare_fd = -1;
    w->cur_dirty = false; /* the spare was synced when made */
    frontier_reset(w);
    return SHOAL_OK;
}

static shoal_err
write_out(wal *w, wprog *g)
{
    const wbuf *b = &w->out;
    size_t n1 = b->has_switch ? b->split : b->len;
    shoal_err rc;

    SH_ASSERT(b->seq == w->cur_seq);
    if ((rc = write_at(w, b->data, n1, b->off)) != SHOAL_OK)
        return rc;
    w->cur_end = b->off + n1;
    /* The last fdatasync's frontier rides with this batch, before its own
     * fdatasync: no extra fdatasync. */
    if ((rc = claim_frontier(w, false)) != SHOAL_OK)
        return rc;
    g->written = b->has_switch ? b->split_ticket : b->end_ticket;
    if (!b->has_switch)
        return SHOAL_OK;
    if ((rc = switch_segment(w, g)) != SHOAL_OK)
        return rc;
    g->durable = b->split_ticket;
    if (b->len == n1)
        return SHOAL_OK;
    if ((rc = write_at(w, b->data + n1, b->len - n1, WAL_SEG_HDR)) != SHOAL_OK)
        return rc;
    w->cur_end = WAL_SEG_HDR + (b->len - n1);
    g->written = b->end_ticket;
    return SHOAL_OK;
}

static void
writer_io(wal *w, const plan *p, wprog *g)
{
    if (p->flush)
        g->rc = write_out(w, g);
    if (g->rc == SHOAL_OK && p->sync && w->cur_dirty) {
        g->rc = sync_cur(w, g);
        g->synced = g->rc == SHOAL_OK;
    }
    if (g->rc == SHOAL_OK && p->prep) {
        uint64_t seq = w->cur_seq + 1;
        g->prep_rc = seg_create(w, seq, p->prep_quiet, &w->spare_fd);
        w->spare_seq = seq;
    }
}

static void
prep_publish(wal *w, shoal_err rc, uint64_t now)
{
    if (rc == SHOAL_OK) {
        if (w->spare == SPARE_NOSPC)
            slog(SLOG_NOTICE, "wal",
                 "%s: segment %" PRIu64 " preallocated: appends resume", w->dir,
                 w->spare_seq);
        w->spare = SPARE_READY;
    } else if (rc == SHOAL_ENOSPC) {
        if (w->spare != SPARE_NOSPC)
            slog(SLOG_WARN, "wal",
                 "%s: no space for the next segment: "
                 "appends that do not fit get ENOSPC; retrying every second",
                 w->dir);
        w->spare = SPARE_NOSPC;
        w->spare_retry_ns = now + SPARE_RETRY_NS;
    } else {
        fail_locked(w, rc);
    }
    w->prep_req = false;
    pthread_cond_broadcast(&w->space_cv);
}

static void
writer_publish(wal *w, const plan *p, const wprog *g, uint64_t now)
{
    if (g->written > w->written)
        w->written = g->written;
    if (g->durable > w->durable)
        w->durable = g->durable;
    if (g->synced) {
        w->durable = w->written;
        w->last_sync_ns = now;
    }
    atomic_store_explicit(&w->pub_written, w->written, memory_order_release);
    atomic_store_explicit(&w->pub_durable, w->durable, memory_order_release);
    if (g->switched) {
        wal_seg *s = seg_find(w, g->finished_seq, NULL);
        if (s != NULL)
            s->finished = true;
    }
    if (p->flush) {
        w->st.batches++;
        if (w->out.n_records > w->st.max_batch_records)
            w->st.max_batch_records = w->out.n_records;
    }
    w->st.fsyncs += g->fsyncs;
    if (g->rc != SHOAL_OK)
        fail_locked(w, g->rc);
    else if (p->prep)
        prep_publish(w, g->prep_rc, now);
    buf_clear(&w->out);
}

/* Hand the appenders' buffer to the writer; they get the empty one. */
static void
buf_swap(wal *w)
{
    wbuf t = w->out;
    w->out = w->in;
    w->in = t;
    buf_clear(&w->in);
    pthread_cond_broadcast(&w->space_cv);
}

static void *
writer_main(void *arg)
{
    thread_set_name("shoal-wal");
    wal *w = arg;
    plan p;

    lock(w);
    for (;;) {
        writer_plan(w, clock_mono_ns(), &p);
        if (p.exit)
            break;
        if (!p.flush && !p.sync && !p.prep) {
            writer_sleep(w, p.wake_ns);
            continue;
        }
        if (p.flush)
            buf_swap(w);
        unlock(w);
        wprog g = {0};
        writer_io(w, &p, &g);
        lock(w);
        writer_publish(w, &p, &g, clock_mono_ns());
        wake_waiters(w);
        run_callbacks(w);
    }
    w->writer_exited = true;
    wake_waiters(w);
    run_callbacks(w);
    pthread_cond_broadcast(&w->space_cv);
    unlock(w);
    return NULL;
}

/* ---- open and close ------------------------------------------------------ */

static shoal_err
opts_check(const wal_opts *o)
{
    if (o->dir == NULL || o->dir[0] == '\0' ||
        strlen(o->dir) + 1 + SEG_NAME_LEN >= PATH_CAP)
        return SHOAL_EINVAL;
    if (o->segment_bytes < SEG_MIN || o->segment_bytes > ((uint64_t) 1 << 40))
        return SHOAL_EINVAL;
    if (o->max_record_bytes != 0 &&
        (o->max_record_bytes < WAL_REC_HDR + 4 ||
         o->max_record_bytes > o->segment_bytes / 2))
        return SHOAL_EINVAL;
    if ((unsigned) o->fsync > WAL_FSYNC_NONE || o->n_shards == 0 ||
        o->n_shards > 65536u)
        return SHOAL_EINVAL;
    return SHOAL_OK;
}

static shoal_err
sync_init(wal *w)
{
    pthread_condattr_t ca;
    bool ok = pthread_condattr_init(&ca) == 0;
    ok = ok && pthread_condattr_setclock(&ca, CLOCK_MONOTONIC) == 0;
    ok = ok && pthread_mutex_init(&w->mu, NULL) == 0;
    ok = ok && pthread_cond_init(&w->writer_cv, &ca) == 0;
    ok = ok && pthread_cond_init(&w->space_cv, &ca) == 0;
    pthread_condattr_destroy(&ca);
    /* On Linux these only fail for bad attributes; treat it as no memory. */
    return ok ? SHOAL_OK : SHOAL_ENOMEM;
}

static shoal_err
wal_new(const wal_opts *o, wal **out)
{
    wal *w;

    *out = NULL;
    if ((w = mem_calloc(1, sizeof *w)) == NULL)
        return SHOAL_ENOMEM;
    w->cur_fd = w->spare_fd = -1;
    w->fs = o->fs != NULL ? o->fs : fs_posix();
    w->seg_bytes = o->segment_bytes;
    w->max_rec = o->max_record_bytes != 0 ? o->max_record_bytes
                                          : (size_t) (o->segment_bytes / 2);
    w->buf_limit =
        w->max_rec * 2 > BUF_LIMIT_MIN ? w->max_rec * 2 : BUF_LIMIT_MIN;
    w->policy = o->fsync;
    w->interval_ns =
        (uint64_t) (o->interval_ms != 0 ? o->interval_ms : 1) * NS_PER_MS;
    w->n_shards = o->n_shards;
    if ((w->dir = mem_strdup(o->dir)) == NULL || sync_init(w) != SHOAL_OK) {
        mem_free(w->dir);
        mem_free(w);
        return SHOAL_ENOMEM;
    }
    *out = w;
    return SHOAL_OK;
}

/* Free everything; no writer runs. The spare holds no records: removed. */
static void
wal_free(wal *w)
{
    if (w == NULL)
        return;
    fs_close(w->fs, w->cur_fd);
    if (w->spare_fd >= 0) {
        char path[PATH_CAP];
        seg_path(w, w->spare_seq, path);
        fs_close(w->fs, w->spare_fd);
        (void) fs_unlink(w->fs, path); /* recovery removes it if this fails */
    }
    for (size_t i = 0; i < w->n_segs; i++)
        seg_free(w->segs[i]);
    mem_free(w->segs);
    mem_free(w->in.data);
    mem_free(w->out.data);
    mem_free(w->wait_dur.v);
    mem_free(w->wait_wr.v);
    pthread_cond_destroy(&w->space_cv);
    pthread_cond_destroy(&w->writer_cv);
    pthread_mutex_destroy(&w->mu);
    mem_free(w->dir);
    mem_free(w);
}

/* Create the segment appends start in (fill_seq, set by recover). */
static shoal_err
start_fresh(wal *w)
{
    wal_seg *seg = NULL;
    shoal_err rc;

    if ((rc = segs_reserve(w)) != SHOAL_OK ||
        (rc = seg_new(w, w->fill_seq, &seg)) != SHOAL_OK)
        return rc;
    if ((rc = seg_create(w, w->fill_seq, false, &w->cur_fd)) != SHOAL_OK) {
        seg_free(seg);
        return rc == SHOAL_ENOSPC || rc == SHOAL_ENOMEM ? rc : SHOAL_EIO;
    }
    seg_push(w, seg);
    w->cur_seq = w->fill_seq;
    w->fill_off = WAL_SEG_HDR;
    frontier_reset(w);
    w->last_sync_ns = clock_mono_ns();
    return SHOAL_OK;
}

shoal_err
wal_open(const wal_opts *o, wal_replay_cb cb, void *arg, wal **out,
         wal_recovery *info)
{
    wal *w = NULL;
    wal_recovery ri = {0};
    shoal_err rc;

    *out = NULL;
    if ((rc = opts_check(o)) != SHOAL_OK)
        goto done;
    if ((rc = wal_new(o, &w)) != SHOAL_OK)
        goto done;
    if ((rc = recover(w, cb, arg, &ri)) != SHOAL_OK ||
        (rc = start_fresh(w)) != SHOAL_OK)
        goto done;
    if (pthread_create(&w->thread, NULL, writer_main, w) != 0) {
        rc = SHOAL_ENOMEM;
        goto done;
    }
    w->thread_started = true;
    *out = w;
done:
    if (info != NULL)
        *info = ri;
    if (rc != SHOAL_OK)
        wal_free(w);
    return rc;
}

static shoal_err buf_put(wal *w, const uint8_t *bytes, size_t len);

/* After the writer's last fdatasync (no writer runs): claim the end, so a
 * flip anywhere in the closed segment is reported, and sync the claim. A
 * failure here loses nothing: the older claim still holds. */
static void
close_claim(wal *w)
{
    wprog g = {0};

    if (w->failed != SHOAL_OK || w->cur_fd < 0 || w->cur_dirty ||
        w->synced_end <= w->claimed)
        return;
    if (claim_frontier(w, true) == SHOAL_OK)
        (void) sync_cur(w, &g);
}

void
wal_close(wal *w)
{
    uint8_t rec[WAL_REC_HDR];

    if (w == NULL)
        return;
    lock(w);
    w->closing = true;
    /* A clean end: the segment gets its SEG_END now, not at recovery. If
     * there is no memory for it, recovery writes it. */
    if (w->failed == SHOAL_OK && w->segs[w->n_segs - 1]->records > 0) {
        seg_end_encode(rec);
        (void) buf_put(w, rec, sizeof rec);
    }
    pthread_cond_signal(&w->writer_cv);
    pthread_cond_broadcast(&w->space_cv);
    unlock(w);
    if (w->thread_started)
        pthread_join(w->thread, NULL);
    close_claim(w);
    wal_free(w);
}

/* ---- appending ----------------------------------------------------------- */

/* Copy bytes to the appenders' buffer at the fill position. Wakes the writer
 * only when it sleeps and this is news: the buffer was empty, or it just
 * grew past FLUSH_BYTES (fsync=none waits for that or the timer). */
static shoal_err
buf_put(wal *w, const uint8_t *bytes, size_t len)
{
    wbuf *b = &w->in;
    size_t before = b->len;
    shoal_err rc;

    if ((rc = buf_reserve(b, b->len + len)) != SHOAL_OK)
        return rc;
    if (before == 0) {
        b->seq = w->fill_seq;
        b->off = w->fill_off;
        b->first_ns = clock_mono_ns();
    }
    memcpy(b->data + b->len, bytes, len);
    b->len += len;
    w->fill_off += len;
    if (w->writer_idle &&
        (before == 0 || (before < FLUSH_BYTES && b->len >= FLUSH_BYTES)))
        pthread_cond_signal(&w->writer_cv);
    return SHOAL_OK;
}

/* The record does not fit the fill segment: close it with a SEG_END and
 * continue in the spare. *waited: the spare was not ready and this waited
 * for it instead; the caller looks again. */
static shoal_err
rotate_locked(wal *w, size_t rec_len, bool *waited)
{
    uint8_t end[WAL_REC_HDR];
    wal_seg *seg = NULL;
    shoal_err rc;

    if (w->spare == SPARE_NOSPC)
        return SHOAL_ENOSPC;
    if (w->spare != SPARE_READY) {
        w->prep_req = true;
        if (w->writer_idle)
            pthread_cond_signal(&w->writer_cv);
        pthread_cond_wait(&w->space_cv, &w->mu);
        *waited = true;
        return SHOAL_OK;
    }
    SH_ASSERT(!w->in.has_switch);
    /* Every allocation first, so a failure changes nothing. */
    if ((rc = segs_reserve(w)) != SHOAL_OK ||
        (rc = seg_new(w, w->fill_seq + 1, &seg)) != SHOAL_OK ||
        (rc = buf_reserve(&w->in, w->in.len + sizeof end + rec_len)) !=
            SHOAL_OK) {
        seg_free(seg);
        return rc;
    }
    seg_end_encode(end);
    rc = buf_put(w, end, sizeof end);
    SH_ASSERT(rc == SHOAL_OK);
    w->in.has_switch = true;
    w->in.split = w->in.len;
    w->in.split_ticket = w->last_ticket;
    w->fill_seq++;
    w->fill_off = WAL_SEG_HDR;
    w->spare = SPARE_NONE;
    seg_push(w, seg);
    return SHOAL_OK;
}

/* Wait or rotate until rec_len bytes fit at the fill position. */
static shoal_err
make_room(wal *w, size_t rec_len)
{
    shoal_err rc = SHOAL_OK;
    bool waited = true;

    while (rc == SHOAL_OK && waited) {
        waited = false;
        if (w->closing)
            return SHOAL_ECLOSED;
        if (w->failed != SHOAL_OK)
            return SHOAL_EREADONLY;
        if (w->in.len > 0 && w->in.len + rec_len > w->buf_limit) {
            pthread_cond_wait(&w->space_cv, &w->mu); /* backpressure */
            waited = true;
        } else if (w->fill_off + rec_len + WAL_REC_HDR > w->seg_bytes) {
            rc = rotate_locked(w, rec_len, &waited);
        }
    }
    return rc;
}

static shoal_err
append_locked(wal *w, const uint8_t *rec, size_t rec_len, uint16_t shard,
              uint64_t lsn, uint64_t *ticket_out)
{
    shoal_err rc;

    if ((rc = make_room(w, rec_len)) != SHOAL_OK ||
        (rc = buf_put(w, rec, rec_len)) != SHOAL_OK)
        return rc;
    wal_seg *seg = w->segs[w->n_segs - 1];
    if (lsn > seg->max_lsn[shard])
        seg->max_lsn[shard] = lsn;
    seg->records++;
    w->last_ticket += rec_len;
    atomic_store_explicit(&w->pub_last_ticket, w->last_ticket,
                          memory_order_release);
    w->in.end_ticket = w->last_ticket;
    w->in.n_records++;
    w->st.records++;
    w->st.bytes += rec_len;
    *ticket_out = w->last_ticket;
    return SHOAL_OK;
}

/* Validate the ops; *rec_len gets the encoded record's size. */
static shoal_err
check_append(const wal *w, uint16_t shard, const wal_op *ops, size_t n,
             size_t *rec_len)
{
    if (shard >= w->n_shards || (n > 0 && ops == NULL))
        return SHOAL_EINVAL;
    for (size_t i = 0; i < n; i++)
        if (ops[i].kind != WAL_OP_PUT && ops[i].kind != WAL_OP_DEL)
            return SHOAL_EINVAL;
    size_t payload = wal_ops_size(ops, n);
    if (n > UINT32_MAX || payload > w->max_rec - WAL_REC_HDR)
        return SHOAL_ETOOLARGE;
    *rec_len = WAL_REC_HDR + payload;
    return SHOAL_OK;
}

shoal_err
wal_append(wal *w, uint16_t shard, uint32_t shard_epoch, uint64_t lsn,
           const wal_op *ops, size_t n, uint64_t *ticket_out)
{
    uint8_t stack[STACK_REC];
    uint8_t *rec = stack;
    size_t rec_len = 0;
    shoal_err rc;

    *ticket_out = 0;
    if ((rc = check_append(w, shard, ops, n, &rec_len)) != SHOAL_OK)
        return rc;
    if (rec_len > sizeof stack && (rec = mem_alloc(rec_len)) == NULL)
        return SHOAL_ENOMEM;
    /* Encode and checksum outside the lock; only the copy is serialized. */
    wal_ops_encode(ops, n, rec + WAL_REC_HDR);
    wal_rec r = {.type = WAL_REC_OPS,
                 .shard = shard,
                 .shard_epoch = shard_epoch,
                 .lsn = lsn,
                 .payload = rec + WAL_REC_HDR,
                 .len = (uint32_t) (rec_len - WAL_REC_HDR)};
    wal_rec_encode(&r, rec);
    lock(w);
    rc = append_locked(w, rec, rec_len, shard, lsn, ticket_out);
    unlock(w);
    if (rec != stack)
        mem_free(rec);
    return rc;
}

/* ---- waiting ------------------------------------------------------------- */

/* Ask the writer to make tickets <= ticket durable. */
static void
want_sync(wal *w, uint64_t ticket)
{
    if (ticket <= w->sync_req)
        return;
    w->sync_req = ticket;
    if (w->writer_idle)
        pthread_cond_signal(&w->writer_cv);
}

/* Insert v into the sorted list *head (mu). The list holds one entry per
 * sleeping thread, so a linear scan is short. */
static void
sleep_insert(waiter **head, waiter *v)
{
    waiter **at = head;

    while (*at != NULL && (*at)->ticket <= v->ticket)
        at = &(*at)->next;
    v->next = *at;
    *at = v;
}

shoal_err
wal_wait(wal *w, uint64_t ticket, bool durable)
{
    waiter v = {.ticket = ticket, .rc = SHOAL_OK};
    shoal_err rc = SHOAL_OK;

    if (committed_fast(w, ticket, durable))
        return SHOAL_OK;
    lock(w);
    if (ticket > w->last_ticket)
        rc = SHOAL_EINVAL;
    else if (committed_locked(w, ticket, durable))
        rc = SHOAL_OK;
    else if (w->failed != SHOAL_OK)
        rc = w->failed;
    else if (w->writer_exited)
        rc = SHOAL_ECLOSED;
    else if (sem_init(&v.sem, 0, 0) != 0)
        rc = SHOAL_ENOMEM; /* only fails for a bad value */
    else {
        sleep_insert(sleep_list(w, durable), &v);
        if (durable)
            want_sync(w, ticket);
        unlock(w);
        /* The writer answers in v.rc before posting; mu is not needed. */
        while (sem_wait(&v.sem) != 0)
            SH_ASSERT(errno == EINTR);
        sem_destroy(&v.sem);
        return v.rc;
    }
    unlock(w);
    return rc;
}

shoal_err
wal_notify(wal *w, uint64_t ticket, bool durable, wal_done_cb cb, void *arg)
{
    shoal_err now = SHOAL_OK;
    bool call_now = true;

    lock(w);
    nlist *l = notify_list(w, durable);
    if (ticket > w->last_ticket) {
        unlock(w);
        return SHOAL_EINVAL; /* never calls cb (STYLE §4) */
    }
    if (!committed_locked(w, ticket, durable)) {
        if (w->failed != SHOAL_OK || w->writer_exited) {
            now = w->failed != SHOAL_OK ? w->failed : SHOAL_ECLOSED;
        } else {
            if (nlist_push(l, (notif){ticket, cb, arg}) != SHOAL_OK) {
                unlock(w);
                return SHOAL_ENOMEM;
            }
            call_now = false;
            if (durable)
                want_sync(w, ticket);
        }
    }
    unlock(w);
    if (call_now)
        cb(arg, now);
    return SHOAL_OK;
}

uint64_t
wal_last_ticket(wal *w)
{
    lock(w);
    uint64_t t = w->last_ticket;
    unlock(w);
    return t;
}

bool
wal_is_committed(wal *w, uint64_t ticket)
{
    if (committed_fast(w, ticket, false))
        return true;
    lock(w);
    bool yes = committed_locked(w, ticket, false);
    unlock(w);
    return yes;
}

/* ---- garbage collection -------------------------------------------------- */

static bool
seg_covered(const wal *w, const wal_seg *s, const uint64_t *keep_lsn)
{
    for (uint32_t i = 0; i < w->n_shards; i++)
        if (s->max_lsn[i] > keep_lsn[i])
            return false;
    return true;
}

typedef struct victim {
    uint64_t seq;
    bool gone;
} victim;

/* Mark the deletable segments; *out (mem_alloc'd) lists them. */
static shoal_err
gc_pick(wal *w, const uint64_t *keep_lsn, victim **out, size_t *n_out)
{
    victim *v = NULL;
    size_t n = 0;

    lock(w);
    if (w->n_segs > 0 && (v = mem_alloc(w->n_segs * sizeof *v)) == NULL) {
        unlock(w);
        return SHOAL_ENOMEM;
    }
    for (size_t i = 0; i < w->n_segs; i++) {
        wal_seg *s = w->segs[i];
        if (!s->finished || s->deleting || !seg_covered(w, s, keep_lsn))
            continue;
        s->deleting = true;
        v[n++] = (victim){.seq = s->seq};
    }
    unlock(w);
    *out = v;
    *n_out = n;
    return SHOAL_OK;
}

/* Forget the segments unlinked; unmark the others. */
static unsigned
gc_settle(wal *w, const victim *v, size_t n)
{
    unsigned gone = 0;
    size_t at;

    lock(w);
    for (size_t i = 0; i < n; i++) {
        wal_seg *s = seg_find(w, v[i].seq, &at);
        SH_ASSERT(s != NULL);
        s->deleting = false;
        if (!v[i].gone)
            continue;
        seg_free(s);
        memmove(&w->segs[at], &w->segs[at + 1],
                (w->n_segs - at - 1) * sizeof *w->segs);
        w->n_segs--;
        gone++;
    }
    w->st.segments_deleted += gone;
    unlock(w);
    return gone;
}

shoal_err
wal_gc(wal *w, const uint64_t *keep_lsn, unsigned *n_deleted)
{
    victim *v = NULL;
    size_t n = 0;
    shoal_err rc;
    char path[PATH_CAP];

    if (n_deleted != NULL)
        *n_deleted = 0;
    if ((rc = gc_pick(w, keep_lsn, &v, &n)) != SHOAL_OK)
        return rc;
    for (size_t i = 0; i < n; i++) {
        seg_path(w, v[i].seq, path);
        shoal_err e = fs_unlink(w->fs, path);
        v[i].gone = e == SHOAL_OK || e == SHOAL_ENOTFOUND;
        if (!v[i].gone && rc == SHOAL_OK) {
            slog(SLOG_WARN, "wal", "delete %s: %s", path, shoal_strerror(e));
            rc = e;
        }
    }
    unsigned gone = gc_settle(w, v, n);
    mem_free(v);
    if (gone > 0) {
        shoal_err e = fs_dir_fsync(w->fs, w->dir);
        if (e != SHOAL_OK && rc == SHOAL_OK)
            rc = e;
    }
    if (n_deleted != NULL)
        *n_deleted = gone;
    return rc;
}

void
wal_get_stats(wal *w, wal_stats *out)
{
    lock(w);
    *out = w->st;
    out->segments = w->n_segs + (w->spare == SPARE_READY ? 1u : 0u);
    out->durable_ticket = w->durable;
    out->failed = w->failed;
    unlock(w);
}
