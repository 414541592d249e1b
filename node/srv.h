/*
 * srv.h -- the client listener of shoald (DESIGN §8).
 *
 * An nng REP0 socket with many contexts, so requests are served
 * concurrently. A context's receive callback (an nng thread) only queues
 * the frame for a worker; workers open the frame, check the replay window,
 * decode the RequestFrame (into a per-worker arena), run each request
 * (exec.h), and, when the frame wrote, hand the answer to the engine's group
 * commit (store_commit_notify) instead of blocking: the commit callback
 * requeues the frame and a worker seals and sends the ResponseFrame. So a
 * response is sent only after its writes are committed under the fsync
 * policy, and no nng thread ever blocks on the disk.
 *
 * Frames that cannot be opened (malformed header, unknown key, bad tag,
 * replay, plaintext on a sealed node) never reach the decoder: they are
 * counted and answered with a plaintext error frame (wire.h). Frames over
 * max_frame_bytes are refused by nng before they are read.
 */
#ifndef SHOAL_NODE_SRV_H
#define SHOAL_NODE_SRV_H

#include "node/exec.h"
#include "node/metrics.h"
#include "proto/err.h"
#include "proto/wire.h"

#include <stddef.h>
#include <stdint.h>

typedef struct srv srv;

typedef struct srv_opts {
    const char *listen_url;    /* e.g. "tcp://127.0.0.1:7400" */
    const exec_ctx *x;         /* borrowed; outlives the srv */
    const wire_keyring *keys;  /* borrowed; NULL only when insecure */
    bool insecure;             /* plaintext frames only, no keys */
    metrics *m;                /* borrowed */
    unsigned n_contexts;       /* concurrent frames; default 128 */
    unsigned n_workers;        /* worker threads; default 4 */
    size_t max_frame_bytes;    /* nng receive limit; default 64 MiB + 64 KiB */
    uint32_t replay_window_ms; /* default 300000 (5 min) */
    size_t replay_senders;     /* senders remembered; default 65536 */
} srv_opts;

void srv_opts_default(srv_opts *o);

/* Start listening and serving. SHOAL_EINVAL (bad options or URL),
 * SHOAL_EUNAVAILABLE (address in use or cannot listen: logged with the
 * URL and nng's reason), SHOAL_ENOMEM. */
shoal_err srv_open(const srv_opts *o, srv **out);

/* Stop taking new frames, finish every frame in flight (answers sent),
 * waiting at most timeout_ms. Returns SHOAL_OK when all finished,
 * SHOAL_ETIMEOUT otherwise. */
shoal_err srv_drain(srv *s, uint32_t timeout_ms);

/* Close the socket and stop the workers (NULL ok). Call srv_drain first
 * for a clean stop. */
void srv_close(srv *s);

/* Frames being worked on right now (received, not yet answered). */
unsigned srv_inflight(const srv *s);

#endif
