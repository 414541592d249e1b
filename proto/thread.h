/*
 * thread.h -- small per-thread controls that need platform calls.
 */
#ifndef SHOAL_PROTO_THREAD_H
#define SHOAL_PROTO_THREAD_H

/* Lower the calling thread's CPU priority (nice +10), so background work
 * (snapshots, expiry) yields the CPU to request threads on a busy machine.
 * Best effort: failure is ignored. */
void thread_set_background(void);

/* Name the calling thread (shown by top -H, /proc/PID/task/TID/comm);
 * truncated to 15 bytes. Best effort. */
void thread_set_name(const char *name);

#endif
