/*
 * proc.h -- a harness for integration tests that run real shoald processes
 * on loopback (STYLE §9: bounded polling, never a fixed sleep).
 *
 * What it offers:
 *  - processes: spawn with argv and extra environment, bounded waits,
 *    signals, RSS from /proc, run a command capturing stdout/stderr/exit;
 *  - nodes: a shoald on free loopback ports with its stderr in a log file
 *    in the test directory, ready when GET /health answers 200; stop with
 *    SIGTERM (exit status back), kill with SIGKILL, restart on the same data
 *    directory;
 *  - keys: a node key file with an admin, a write, a read and a prefix-
 *    confined write key, plus one client key file per key;
 *  - clusters: N nodes in cluster mode with a generated cluster file and
 *    peer key, each node a proc_node (stop/kill/restart on the same ports);
 *  - HTTP: a tiny GET over a plain TCP socket, and a Prometheus text reader;
 *  - raw transport: a hand-written SP-over-TCP REQ client (the nng tcp
 *    transport's 8-byte handshake, 64-bit big-endian length prefixes and the
 *    req0 4-byte request id), so tests can send any bytes, pipeline frames
 *    and see a dropped connection as such; sealing and opening helpers;
 *  - a TCP relay that records every byte it copies (capture of traffic).
 *
 * Children get PR_SET_PDEATHSIG(SIGKILL), so a test that dies takes its
 * nodes with it; proc_reap_all() kills whatever a failed test left.
 *
 * Memory returned by this harness is malloc'd: free it with free() (or the
 * named *_free function).
 */
#ifndef SHOAL_TESTS_SUPPORT_PROC_H
#define SHOAL_TESTS_SUPPORT_PROC_H

#include "proto/err.h"
#include "proto/shoal.pb-c.h"
#include "proto/wire.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* Paths of the binaries under test. */
#define PROC_SHOALD   SHOAL_BIN_DIR "/node/shoald"
#define PROC_SHOALCTL SHOAL_BIN_DIR "/client/shoalctl"

/* Milliseconds on the monotonic clock. */
uint64_t proc_now_ms(void);

/* Sleep ms milliseconds: only between polls of a bounded wait. */
void proc_nap_ms(uint32_t ms);

/* ---- processes ------------------------------------------------------------
 */

/* Start argv[0] (a path) with argv. env_add (NULL-terminated "K=V" list,
 * may be NULL) is added to (or overrides in) the inherited environment.
 * stdout/stderr go to out_path/err_path (appended; NULL: /dev/null).
 * SHOAL_EIO if fork or the log files fail. The child is recorded for
 * proc_reap_all. */
shoal_err proc_spawn(const char *const argv[], const char *const env_add[],
                     const char *out_path, const char *err_path,
                     pid_t *pid_out);

/* Wait up to timeout_ms for pid to exit; *status_out gets the waitpid
 * status. SHOAL_ETIMEOUT if it is still running (not reaped). */
shoal_err proc_wait(pid_t pid, uint32_t timeout_ms, int *status_out);

/* Exit code of a waitpid status: the exit status, or 128 + signal. */
int proc_exit_code(int status);

/* kill(pid, sig); SHOAL_EINVAL if it fails. */
shoal_err proc_signal(pid_t pid, int sig);

/* Resident set size of pid in KiB (VmRSS of /proc/PID/status). */
shoal_err proc_rss_kb(pid_t pid, uint64_t *kb_out);

/* SIGKILL and reap every child spawned here that is still running. */
void proc_reap_all(void);

typedef struct proc_output {
    char *out; /* stdout, NUL-terminated */
    size_t out_len;
    char *err; /* stderr, NUL-terminated */
    size_t err_len;
    int code; /* exit code (128 + signal if killed) */
} proc_output;

/* Run argv to completion within timeout_ms, feeding in (in_len bytes, may be
 * NULL) on its stdin and capturing stdout and stderr. SHOAL_ETIMEOUT (the
 * child is killed; out still holds what it printed), SHOAL_EIO. */
shoal_err proc_run(const char *const argv[], const void *in, size_t in_len,
                   uint32_t timeout_ms, proc_output *out);
void proc_output_free(proc_output *o);

/* ---- ports and HTTP --------------------------------------------------------
 */

/* A loopback TCP port that was free a moment ago (bind port 0, read it,
 * close). Callers retry on "address in use". */
shoal_err proc_free_port(uint16_t *port_out);

/* GET path from 127.0.0.1:port. *status_out the HTTP status, *body_out the
 * body (malloc'd, NUL-terminated, may be NULL), *len_out its length (may be
 * NULL). SHOAL_EUNAVAILABLE (cannot connect), SHOAL_ETIMEOUT, SHOAL_EIO
 * (malformed answer). */
shoal_err proc_http_get(uint16_t port, const char *path, uint32_t timeout_ms,
                        int *status_out, char **body_out, size_t *len_out);

/* Sum of the samples of metric `name` in Prometheus text whose label set
 * contains `label` (e.g. "op=\"put\""; NULL: every sample). -1 when no
 * sample matched. */
double proc_metric_sum(const char *text, const char *name, const char *label);

/* ---- nodes ------------------------------------------------------------------
 */

typedef struct proc_node_opts {
    const char *dir;               /* test directory (logs); required */
    const char *id;                /* --id; default "n1" */
    const char *data_dir;          /* default <dir>/data-<id> */
    const char *key_file;          /* NULL: --insecure */
    const char *fsync;             /* default "always" */
    const char *const *extra_args; /* NULL-terminated, appended; may be NULL */
    const char *const *env;        /* NULL-terminated "K=V"; may be NULL */
    uint32_t ready_timeout_ms;     /* default 60000 */
    uint16_t port;      /* client port; 0: a free one. Either port given
                           makes both fixed: never picked anew */
    uint16_t http_port; /* HTTP port; 0: a free one */
} proc_node_opts;

void proc_node_opts_default(proc_node_opts *o);

typedef struct proc_node proc_node;

/* Make a node handle (ports picked, nothing started); the strings of o are
 * copied. SHOAL_EINVAL (no dir), SHOAL_ENOMEM. */
shoal_err proc_node_open(const proc_node_opts *o, proc_node **out);

/* Start shoald and wait until GET /health answers 200 (bounded by
 * ready_timeout_ms). If the port was taken meanwhile, new ports are picked
 * and it tries again (not when the options fixed them: a cluster file
 * names them; then SHOAL_EUNAVAILABLE). SHOAL_EUNAVAILABLE if shoald exited
 * first (proc_node_exit_code says how), SHOAL_ETIMEOUT if it never became ready
 * (it is killed). */
shoal_err proc_node_launch(proc_node *n);

/* proc_node_open + proc_node_launch; *out NULL on failure. */
shoal_err proc_node_start(const proc_node_opts *o, proc_node **out);

/* SIGTERM and wait up to timeout_ms; *code_out (may be NULL) gets the exit
 * code. SHOAL_ETIMEOUT: it did not exit in time and was SIGKILLed (code
 * 128+9). SHOAL_OK when not running. */
shoal_err proc_node_stop(proc_node *n, uint32_t timeout_ms, int *code_out);

/* SIGKILL and reap. SHOAL_OK when not running. */
shoal_err proc_node_kill(proc_node *n);

/* SIGSTOP / SIGCONT the node (a pause, as a long GC or a stalled VM).
 * pause returns once every thread is stopped (SHOAL_ETIMEOUT if not within
 * 10 s). */
shoal_err proc_node_pause(proc_node *n);
shoal_err proc_node_resume(proc_node *n);

bool proc_node_running(const proc_node *n);
pid_t proc_node_pid(const proc_node *n);
/* Exit code of the last run that ended (-1: none yet). */
int proc_node_exit_code(const proc_node *n);
const char *proc_node_url(const proc_node *n); /* "tcp://127.0.0.1:P" */
uint16_t proc_node_port(const proc_node *n);
uint16_t proc_node_http_port(const proc_node *n);
const char *proc_node_http_url(const proc_node *n); /* "http://127.0.0.1:P" */
const char *proc_node_log(const proc_node *n);      /* stderr log path */
const char *proc_node_data_dir(const proc_node *n);

/* Whether the node's log holds needle (any run so far). */
bool proc_node_log_contains(const proc_node *n, const char *needle);

/* GET path from the node's HTTP port (see proc_http_get). */
shoal_err proc_node_http(const proc_node *n, const char *path, int *status_out,
                         char **body_out);

/* Kill the node if running and free the handle (NULL ok). */
void proc_node_free(proc_node *n);

/* ---- keys -------------------------------------------------------------------
 */

#define PROC_KEY_PREFIX "app:"

enum {
    PROC_KEY_ADMIN = 1,
    PROC_KEY_WRITE = 2,
    PROC_KEY_READ = 3,
    PROC_KEY_PREFIXED = 4,
    PROC_KEY_PEER = 100 /* the cluster key in a cluster's node.keys */
};

typedef struct proc_keys {
    wire_key admin;    /* id 1, admin */
    wire_key write;    /* id 2, write */
    wire_key read;     /* id 3, read */
    wire_key prefixed; /* id 4, write confined to PROC_KEY_PREFIX */
    wire_key peer;     /* id PROC_KEY_PEER, the cluster key (clusters only;
                          zero otherwise) */
    char node_file[512];
    char admin_file[512];
    char write_file[512];
    char read_file[512];
    char prefixed_file[512];
} proc_keys;

/* Make fresh keys and write node.keys, admin.key, write.key, read.key and
 * prefixed.key (mode 0600) into dir. SHOAL_EIO. */
shoal_err proc_keys_make(const char *dir, proc_keys *out);

/* proc_keys_make, then start one node in dir with those keys (o's key_file
 * is replaced by keys->node_file; o->dir defaults to dir). The setup most
 * integration fixtures repeat. *out NULL on failure. */
shoal_err proc_node_start_keyed(const char *dir, const proc_node_opts *o,
                                proc_keys *keys, proc_node **out);

/* Wipe the secrets. */
void proc_keys_wipe(proc_keys *k);

/* ---- clusters ---------------------------------------------------------------
 *
 * N shoald nodes in cluster mode on loopback: proc_cluster_start makes the
 * keys (proc_keys_make, plus the peer key in node.keys) and the cluster file
 * (<dir>/cluster.conf: nodes n1..nN, client and peer ports picked free, a
 * random hash key), starts every node at once and waits until each answers
 * /health. Node i (0-based) has id "n<i+1>", data dir <dir>/data-n<i+1>, log
 * <dir>/n<i+1>.log. Its ports are fixed by the cluster file, so a stopped or
 * killed node comes back on the same ports and data with proc_node_launch
 * (or proc_cluster_launch for several at once).
 */

#define PROC_CLUSTER_MAX 16

typedef struct proc_cluster_opts {
    const char *dir;               /* test directory; required */
    uint32_t n_nodes;              /* default 3; at most PROC_CLUSTER_MAX */
    uint32_t replicas;             /* R; 0: min(3, n_nodes) */
    uint32_t write_quorum;         /* W; 0: R/2+1 */
    uint32_t shards;               /* 0: 256 */
    const char *fsync;             /* default "always" */
    const char *const *extra_args; /* NULL-terminated, every node; may be
                                      NULL */
    const char *const *env;        /* NULL-terminated "K=V"; may be NULL */
    uint32_t ready_timeout_ms;     /* per start; default 60000 */
} proc_cluster_opts;

void proc_cluster_opts_default(proc_cluster_opts *o);

typedef struct proc_cluster proc_cluster;

/* Make keys and cluster file in o->dir, start the nodes, wait until all are
 * ready. When a port was taken meanwhile, every port is picked anew and the
 * cluster file rewritten (up to 5 times). SHOAL_EINVAL (no dir, n_nodes or
 * R/W out of range), SHOAL_EIO (files), SHOAL_EUNAVAILABLE (a node exited:
 * see its log), SHOAL_ETIMEOUT (a node never became ready; all are killed).
 * *out NULL on failure. */
shoal_err proc_cluster_start(const proc_cluster_opts *o, proc_cluster **out);

/* Number of nodes, and node i (0-based; NULL when out of range). Stop, kill,
 * pause and restart it with the proc_node_* functions; the cluster keeps
 * owning it (never proc_node_free it). */
size_t proc_cluster_size(const proc_cluster *c);
proc_node *proc_cluster_node(proc_cluster *c, size_t i);

/* The peer (replication) port of node i, as the cluster file names it
 * (0 when out of range). */
uint16_t proc_cluster_peer_port(const proc_cluster *c, size_t i);

/* Start every node that is not running, all at once, and wait until each
 * is ready (for nodes that wait on each other at start). Errors as
 * proc_node_launch. */
shoal_err proc_cluster_launch(proc_cluster *c);

/* The client URLs of every node (n of them), for shoal_opts.seeds. Valid
 * while c lives. */
const char *const *proc_cluster_seeds(const proc_cluster *c, size_t *n_out);

/* The admin client key file; the keys of every role (proc_keys); the node
 * key file (client keys + the peer key); the cluster file. */
const char *proc_cluster_key_file(const proc_cluster *c);
const proc_keys *proc_cluster_keys(const proc_cluster *c);
const char *proc_cluster_node_keys(const proc_cluster *c);
const char *proc_cluster_file(const proc_cluster *c);

/* SIGTERM every running node at once and wait up to timeout_ms for all;
 * those still running are SIGKILLed (SHOAL_ETIMEOUT). SHOAL_EIO when a node
 * exited with a code other than 0. The nodes can be launched again. */
shoal_err proc_cluster_stop(proc_cluster *c, uint32_t timeout_ms);

/* Kill every running node, wipe the keys, free c (NULL ok). The test
 * directory is the caller's. */
void proc_cluster_free(proc_cluster *c);

/* ---- raw SP-over-TCP REQ client --------------------------------------------
 */

typedef struct proc_sp proc_sp;

/* Connect to 127.0.0.1:port and do the SP handshake as a req0 peer.
 * SHOAL_EUNAVAILABLE, SHOAL_ETIMEOUT, SHOAL_EIO (handshake refused). */
shoal_err proc_sp_connect(uint16_t port, uint32_t timeout_ms, proc_sp **out);

/* Send one SP message: 8-byte length, the req0 id (high bit set), body.
 * SHOAL_ECLOSED if the peer closed, SHOAL_EIO. */
shoal_err proc_sp_send(proc_sp *c, uint32_t req_id, const void *body,
                       size_t len);

/* Write raw bytes on the stream (for hand-made length prefixes). */
shoal_err proc_sp_send_raw(proc_sp *c, const void *bytes, size_t len);

/* Receive one message. *body_out (malloc'd) is the body after the request
 * id. SHOAL_ECLOSED (peer closed the connection), SHOAL_ETIMEOUT, SHOAL_EIO
 * (malformed). */
shoal_err proc_sp_recv(proc_sp *c, uint32_t timeout_ms, uint32_t *req_id_out,
                       uint8_t **body_out, size_t *len_out);

/* Send body with a fresh id and wait for the answer with that id. */
shoal_err proc_sp_call(proc_sp *c, const void *body, size_t len,
                       uint32_t timeout_ms, uint8_t **resp_out,
                       size_t *resp_len_out);

/* Whether the peer has closed the connection (waits up to timeout_ms for
 * EOF, discarding anything received). */
bool proc_sp_closed(proc_sp *c, uint32_t timeout_ms);

void proc_sp_close(proc_sp *c);

/* ---- frames -----------------------------------------------------------------
 */

/* Seal body as a request frame (k NULL: plaintext) into a malloc'd buffer. */
shoal_err proc_frame_seal(wire_sender *s, const wire_key *k, uint8_t flags,
                          const void *body, size_t len, uint8_t **out,
                          size_t *out_len);

/* Pack a RequestFrame of n requests (malloc'd). */
shoal_err proc_reqframe_pack(Shoal__Request *const *reqs, size_t n,
                             uint8_t **out, size_t *out_len);

/* What came back for a request frame. */
typedef struct proc_reply {
    bool is_error;               /* a plaintext error frame */
    shoal_err error;             /* ... its status */
    Shoal__ResponseFrame *frame; /* else the decoded ResponseFrame */
} proc_reply;

/* Decode an answer: an error frame, or a response frame opened with k
 * (NULL: plaintext). frame is modified in place. SHOAL_EAUTH (does not
 * open), SHOAL_EINVAL (malformed), SHOAL_ENOMEM. */
shoal_err proc_reply_decode(const wire_key *k, uint8_t *frame, size_t len,
                            proc_reply *out);
void proc_reply_fini(proc_reply *r);

/* ---- relay ------------------------------------------------------------------
 */

typedef struct proc_relay proc_relay;

/* Listen on a free loopback port and relay every connection to
 * 127.0.0.1:target_port, recording every byte in both directions. */
shoal_err proc_relay_open(uint16_t target_port, proc_relay **out);
uint16_t proc_relay_port(const proc_relay *r);

/* Relay connections accepted from now on to this port instead (for a node
 * started after the relay, so it can advertise the relay's URL). */
void proc_relay_set_target(proc_relay *r, uint16_t target_port);

/* A copy of every byte relayed so far (malloc'd). */
shoal_err proc_relay_capture(proc_relay *r, uint8_t **out, size_t *len_out);

/* Bytes relayed so far. */
size_t proc_relay_bytes(proc_relay *r);

void proc_relay_close(proc_relay *r);

/* ---- state digest -----------------------------------------------------------
 */

struct shoal;

/* A digest of every live key, value, version and expiry a full scan of db
 * returns (pages of 1000; the key needs read access to every key), and the
 * number of keys. Errors: what shoal_scan returns. */
shoal_err proc_scan_digest(struct shoal *db, uint64_t *digest_out,
                           size_t *n_keys_out);

/* Whether needle occurs in hay. */
bool proc_memmem(const void *hay, size_t hay_len, const void *needle,
                 size_t needle_len);

#endif
