/*
 * slog.h -- leveled log lines on stderr (or a sink set by the embedder).
 *
 * slog(SLOG_WARN, "wal", "fsync %s: %s", path, strerror(e)) prints one line
 * "2026-11-21T10:00:00.123Z WARN wal fsync ...". The level is checked before
 * the arguments are evaluated, so DEBUG lines cost one load when disabled.
 */
#ifndef SHOAL_PROTO_SLOG_H
#define SHOAL_PROTO_SLOG_H

#include <stdatomic.h>

typedef enum slog_level {
    SLOG_ERR = 0,
    SLOG_WARN = 1,
    SLOG_NOTICE = 2,
    SLOG_INFO = 3,
    SLOG_DEBUG = 4,
} slog_level;

/* A sink receives each formatted message (without time or newline). */
typedef void (*slog_sink)(void *arg, slog_level level, const char *module,
                          const char *msg);

extern _Atomic int slog_max_level; /* lines above this level are dropped */

/* Set the most verbose level printed (default SLOG_NOTICE). */
void slog_set_level(slog_level level);

/* Parse "err|warn|notice|info|debug"; returns -1 for anything else. */
int slog_level_parse(const char *s);

/* Route lines to sink instead of stderr; sink == NULL restores stderr. */
void slog_set_sink(slog_sink sink, void *arg);

void slog_write(slog_level level, const char *module, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#define slog(level, module, ...)                                         \
    do {                                                                 \
        if ((int) (level) <=                                             \
            atomic_load_explicit(&slog_max_level, memory_order_relaxed)) \
            slog_write((level), (module), __VA_ARGS__);                  \
    } while (0)

#endif
