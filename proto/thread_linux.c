/*
 * thread_linux.c -- thread.h on Linux, where nice values are per thread:
 * setpriority(PRIO_PROCESS, 0, n) changes only the calling thread (a
 * documented departure from POSIX, which Shoal relies on here).
 */
#define _DEFAULT_SOURCE /* setpriority */
#include "proto/thread.h"

#include <stdio.h>
#include <sys/prctl.h>

#include <sys/resource.h>

void
thread_set_background(void)
{
    (void) setpriority(PRIO_PROCESS, 0, 10);
}

void
thread_set_name(const char *name)
{
    char buf[16];
    snprintf(buf, sizeof(buf), "%s", name);
    (void) prctl(PR_SET_NAME, buf, 0, 0, 0);
}
