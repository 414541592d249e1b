/*
 * err.h -- the one error list of Shoal.
 *
 * SHOAL_ERR_MAP generates the enum, shoal_strerror() and shoal_errname().
 * Values are positive, stable and never renumbered: they travel on the wire in
 * Response.status, and a unit test checks the proto enum against this list.
 */
#ifndef SHOAL_PROTO_ERR_H
#define SHOAL_PROTO_ERR_H

#define SHOAL_ERR_MAP(X)                            \
    X(OK, 0, "success")                             \
    X(ENOTFOUND, 1, "key not found")                \
    X(EVERSION, 2, "version mismatch")              \
    X(EEXISTS, 3, "key already exists")             \
    X(EWRONGSHARD, 4, "wrong shard for this node")  \
    X(EUNAVAILABLE, 5, "service unavailable")       \
    X(ETIMEOUT, 6, "timed out")                     \
    X(EINVAL, 7, "invalid argument")                \
    X(ETOOLARGE, 8, "argument too large")           \
    X(EAUTH, 9, "authentication failed")            \
    X(EPERM, 10, "permission denied")               \
    X(ENOSPC, 11, "no space left on device")        \
    X(EIO, 12, "input/output error")                \
    X(ECORRUPT, 13, "data corrupt")                 \
    X(ENOMEM, 14, "out of memory")                  \
    X(ECLOSED, 15, "handle closed")                 \
    X(ENOTNUM, 16, "value is not a 64-bit integer") \
    X(EOVERFLOW, 17, "integer overflow")            \
    X(EREADONLY, 18, "engine is read-only after an I/O failure")

typedef enum shoal_err {
#define SHOAL_ERR_ENUM_(name, val, msg) SHOAL_##name = val,
    SHOAL_ERR_MAP(SHOAL_ERR_ENUM_)
#undef SHOAL_ERR_ENUM_
} shoal_err;

/* Human-readable message for rc; a string literal, never NULL ("unknown
 * error" for values outside the list). */
const char *shoal_strerror(shoal_err rc);

/* The symbolic name ("SHOAL_ENOTFOUND"); "SHOAL_E?" for unknown values. */
const char *shoal_errname(shoal_err rc);

/* Always-on assertion for invariants (never for bytes from disk or network):
 * prints file:line and the expression, then aborts. */
#define SH_ASSERT(e) ((e) ? (void) 0 : sh_assert_fail(#e, __FILE__, __LINE__))
_Noreturn void sh_assert_fail(const char *expr, const char *file, int line);

#endif
