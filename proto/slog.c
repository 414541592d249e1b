/*
 * slog.c -- the logger behind slog.h. One write(2)-sized fprintf per line so
 * concurrent lines do not interleave mid-line.
 */
#include "proto/slog.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>

_Atomic int slog_max_level = SLOG_NOTICE;

static pthread_mutex_t sink_mtx = PTHREAD_MUTEX_INITIALIZER;
static slog_sink sink_fn; /* guarded by sink_mtx */
static void *sink_arg;    /* guarded by sink_mtx */

static const char *const level_names[] = {"ERR", "WARN", "NOTICE", "INFO",
                                          "DEBUG"};

void
slog_set_level(slog_level level)
{
    atomic_store(&slog_max_level, (int) level);
}

int
slog_level_parse(const char *s)
{
    for (int i = 0; i < 5; i++)
        if (strcasecmp(s, level_names[i]) == 0)
            return i;
    if (strcasecmp(s, "error") == 0)
        return SLOG_ERR;
    if (strcasecmp(s, "warning") == 0)
        return SLOG_WARN;
    return -1;
}

void
slog_set_sink(slog_sink sink, void *arg)
{
    pthread_mutex_lock(&sink_mtx);
    sink_fn = sink;
    sink_arg = arg;
    pthread_mutex_unlock(&sink_mtx);
}

void
slog_write(slog_level level, const char *module, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);

    pthread_mutex_lock(&sink_mtx);
    slog_sink fn = sink_fn;
    void *arg = sink_arg;
    pthread_mutex_unlock(&sink_mtx);
    if (fn != NULL) {
        fn(arg, level, module, msg);
        return;
    }

    struct timespec ts;
    struct tm tm;
    char when[32];
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%S", &tm);
    unsigned lv = (unsigned) level < 5 ? (unsigned) level : 4;
    fprintf(stderr, "%s.%03ldZ %s %s %s\n", when, ts.tv_nsec / 1000000L,
            level_names[lv], module, msg);
}
