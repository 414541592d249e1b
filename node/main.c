/*
 * main.c -- shoald: one Shoal node (DESIGN §10).
 *
 * Start-up is a ladder; each rung returns 0 or the exit code, and stop()
 * undoes whatever was done, in reverse, whichever rung failed:
 *
 *   block signals     SIGINT, SIGTERM, SIGHUP, SIGPIPE, SIGUSR1 blocked
 *                     before any thread exists, so every thread inherits
 *                     the mask and only sigwait() sees them
 *   configure         flags, --config file, cross-checks     (bad: exit 2)
 *   load keys         --key-file (unless --insecure)          (bad: exit 2)
 *   data dir          create, lock <dir>/LOCK, read or write <dir>/NODE
 *                     (in use: exit 1; id/shards mismatch: exit 2)
 *   serve             the --insecure banner and --memory warning, then
 *                     store_open, metrics, srv_open, http_open (exit 1)
 *   wait              sigwait: SIGHUP is ignored; SIGINT/SIGTERM drain
 *
 * Stop: /health turns "draining", srv_drain(--drain-timeout-ms), then
 * http_close, srv_close, store_close (commits and syncs), unlock, exit 0.
 * A second SIGINT/SIGTERM while stopping exits 1 at once (acknowledged
 * writes are already durable under the fsync policy).
 *
 * The LOCK file is held with a POSIX record lock (fcntl F_SETLK), released
 * by the kernel when the process dies, so a crash never leaves a stale
 * lock. It holds the owner's pid for people; the holder's pid in the
 * refusal message comes from F_GETLK. The NODE file (cfg.h) is written
 * once, to NODE.tmp, fsynced, renamed, and the directory fsynced.
 *
 * Out of memory during start-up is fatal here (STYLE §4): shoald exits 1
 * with a message; nothing is half-started.
 */
#include "node/cfg.h"
#include "node/exec.h"
#include "node/http.h"
#include "node/metrics.h"
#include "node/srv.h"
#include "proto/clock.h"
#include "proto/mem.h"
#include "proto/slog.h"
#include "proto/wire.h"
#include "storage/fs.h"
#include "storage/store.h"

#include <errno.h>
#include <fcntl.h>
#include <nng/nng.h>
#include <pthread.h>
#include <signal.h>
#include <sodium.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#ifndef SHOAL_VERSION
#define SHOAL_VERSION "unknown"
#endif

#define EXIT_RUNTIME 1
#define EXIT_CONFIG  2
#define EXIT_DONE    -1 /* --help/--version printed: exit 0 */

/* Process-wide state lives only here (STYLE §7). */
typedef struct node {
    cfg c;
    bool cfg_ready;
    cfg_ident ident; /* effective id, shard count and hash key */
    wire_keyring *keys;
    int lock_fd;
    store *st;
    exec_ctx x;
    cmap *map;                /* --cluster; NULL for a single node */
    const wire_key *peer_key; /* the cluster key (role peer) */
    repl *rp;                 /* replication; NULL without peers */
    _Atomic uint64_t requests_total;
    metrics *m;
    srv *s;
    http *h;
    _Atomic bool draining;
    sigset_t sigs;
    pthread_t watcher;
    bool watching;
    bool ready; /* served: log the stop */
} node;

static node the_node = {.lock_fd = -1};

static int
oom(void)
{
    fprintf(stderr, "shoald: out of memory during start-up\n");
    return EXIT_RUNTIME;
}

static int
block_signals(node *n)
{
    sigemptyset(&n->sigs);
    sigaddset(&n->sigs, SIGINT);
    sigaddset(&n->sigs, SIGTERM);
    sigaddset(&n->sigs, SIGHUP);
    sigaddset(&n->sigs, SIGPIPE);
    sigaddset(&n->sigs, SIGUSR1); /* ends the stop watcher */
    if (pthread_sigmask(SIG_BLOCK, &n->sigs, NULL) != 0) {
        fprintf(stderr, "shoald: cannot block signals\n");
        return EXIT_RUNTIME;
    }
    return 0;
}

/* ---- configuration --------------------------------------------------------
 */

static int
read_config_file(node *n)
{
    char err[CFG_ERR_LEN];
    uint8_t *text = NULL;
    size_t len = 0;
    const char *path = n->c.config_file;
    shoal_err rc = fs_read_all(fs_posix(), path, CFG_FILE_MAX, &text, &len);
    if (rc == SHOAL_ENOMEM)
        return oom();
    if (rc != SHOAL_OK) {
        fprintf(stderr, "shoald: --config: cannot read '%s': %s\n", path,
                rc == SHOAL_ENOTFOUND   ? "no such file"
                : rc == SHOAL_ETOOLARGE ? "larger than 1 MiB"
                                        : shoal_strerror(rc));
        return EXIT_CONFIG;
    }
    rc = cfg_parse_file((const char *) text, len, &n->c, err, sizeof(err));
    mem_free(text);
    if (rc == SHOAL_ENOMEM)
        return oom();
    if (rc != SHOAL_OK) {
        fprintf(stderr, "shoald: %s: %s\n", path, err);
        return EXIT_CONFIG;
    }
    return 0;
}

static int
configure(node *n, int argc, char **argv)
{
    char err[CFG_ERR_LEN];
    int ex;
    if (cfg_init(&n->c) != SHOAL_OK)
        return oom();
    n->cfg_ready = true;
    shoal_err rc = cfg_parse_args(argc, argv, &n->c, err, sizeof(err));
    if (rc == SHOAL_ENOMEM)
        return oom();
    if (rc != SHOAL_OK) {
        fprintf(stderr, "shoald: %s\n", err);
        return EXIT_CONFIG;
    }
    if (n->c.help) {
        cfg_usage(stdout, "shoald");
        return EXIT_DONE;
    }
    if (n->c.version) {
        printf("shoald %s\n", SHOAL_VERSION);
        return EXIT_DONE;
    }
    if (n->c.config_file != NULL && (ex = read_config_file(n)) != 0)
        return ex;
    if (cfg_check(&n->c, err, sizeof(err)) != SHOAL_OK) {
        fprintf(stderr, "shoald: %s\n", err);
        return EXIT_CONFIG;
    }
    slog_set_level(n->c.log_level);
    if (sodium_init() < 0) {
        fprintf(stderr, "shoald: libsodium failed to initialise\n");
        return EXIT_RUNTIME;
    }
    return 0;
}

static void
insecure_banner(const cfg *c)
{
    static const char *const lines[] = {
        "******************************************************************",
        "* --insecure: traffic is NOT encrypted or authenticated.         *",
        "* Anyone who can reach the listen address can read, write and    *",
        "* delete every key, and see all traffic on the network.          *",
        "* Use --key-file FILE (make keys with 'shoalctl keygen') for     *",
        "* anything but a test on a trusted machine.                      *",
        "******************************************************************",
    };
    for (size_t i = 0; i < sizeof(lines) / sizeof(lines[0]); i++)
        slog(SLOG_WARN, "main", "%s", lines[i]);
    slog(SLOG_WARN, "main", "insecure listener: %s", c->listen_url);
}

static int
load_keys(node *n)
{
    char err[CFG_ERR_LEN] = "";
    if (n->c.insecure)
        return 0;
    shoal_err rc = wire_keyring_load(n->c.key_file, &n->keys, err, sizeof(err));
    if (rc == SHOAL_ENOMEM)
        return oom();
    if (rc != SHOAL_OK) {
        if (err[0] != '\0') /* err names the file */
            fprintf(stderr, "shoald: --key-file: %s\n", err);
        else
            fprintf(stderr, "shoald: --key-file %s: %s\n", n->c.key_file,
                    shoal_strerror(rc));
        return EXIT_CONFIG;
    }
    return 0;
}

/* --cluster: load the map, find this node and the cluster key. */
static int
load_cluster(node *n)
{
    char err[CMAP_ERR_LEN] = "";
    cfg *c = &n->c;
    if (c->cluster_file == NULL)
        return 0;
    shoal_err rc = cmap_load(c->cluster_file, &n->map, err, sizeof(err));
    if (rc == SHOAL_ENOMEM)
        return oom();
    if (rc != SHOAL_OK) {
        fprintf(stderr, "shoald: --cluster: %s\n",
                err[0] != '\0' ? err : shoal_strerror(rc));
        return EXIT_CONFIG;
    }
    if (c->id == NULL || cmap_node_index(n->map, c->id) < 0) {
        fprintf(stderr,
                "shoald: --id: %s%s%s must name a node of cluster file %s\n",
                c->id ? "'" : "", c->id ? c->id : "is required and",
                c->id ? "'" : "", c->cluster_file);
        return EXIT_CONFIG;
    }
    const cmap_node *me = &n->map->nodes[cmap_node_index(n->map, c->id)];
    /* --listen not given: the node's client URL from the file. */
    if (strcmp(c->listen_url, CFG_DEFAULT_LISTEN) == 0) {
        mem_free(c->listen_url);
        c->listen_url = mem_alloc(strlen(me->addr) + 1);
        if (c->listen_url == NULL)
            return oom();
        memcpy(c->listen_url, me->addr, strlen(me->addr) + 1);
    }
    if (c->shards_given && c->n_shards != n->map->n_shards) {
        fprintf(stderr,
                "shoald: --shards %u disagrees with the %u shards of "
                "cluster file %s\n",
                (unsigned) c->n_shards, (unsigned) n->map->n_shards,
                c->cluster_file);
        return EXIT_CONFIG;
    }
    c->n_shards = n->map->n_shards;
    c->shards_given = true;
    for (size_t i = 0; !c->insecure && i < wire_keyring_count(n->keys); i++) {
        const wire_key *k = wire_keyring_at(n->keys, i);
        if (k->role == WIRE_ROLE_PEER) {
            n->peer_key = k;
            break;
        }
    }
    if (!c->insecure && n->map->n_nodes > 1 && n->peer_key == NULL) {
        fprintf(stderr,
                "shoald: --key-file %s holds no key of role peer: nodes of a "
                "cluster seal their traffic with it (shoalctl keygen --role "
                "peer)\n",
                c->key_file);
        return EXIT_CONFIG;
    }
    return 0;
}

/* ---- data dir: LOCK and NODE ----------------------------------------------
 */

static int
make_dir(const cfg *c)
{
    struct stat st;
    if (stat(c->data_dir, &st) == 0) {
        if (S_ISDIR(st.st_mode))
            return 0;
        fprintf(stderr, "shoald: --data-dir %s is not a directory\n",
                c->data_dir);
        return EXIT_CONFIG;
    }
    if (errno != ENOENT) {
        fprintf(stderr, "shoald: --data-dir %s: %s\n", c->data_dir,
                strerror(errno));
        return EXIT_RUNTIME;
    }
    if (c->id == NULL) { /* checked before anything is created */
        fprintf(stderr,
                "shoald: --id is required: data dir %s is new and records "
                "no id yet\n",
                c->data_dir);
        return EXIT_CONFIG;
    }
    if (mkdir(c->data_dir, 0755) != 0) {
        fprintf(stderr, "shoald: cannot create data dir %s: %s\n", c->data_dir,
                strerror(errno));
        return EXIT_RUNTIME;
    }
    return 0;
}

/* The pid holding the lock on fd, or -1. */
static long
lock_holder(int fd)
{
    struct flock fl = {.l_type = F_WRLCK, .l_whence = SEEK_SET};
    if (fcntl(fd, F_GETLK, &fl) == 0 && fl.l_type != F_UNLCK)
        return (long) fl.l_pid;
    return -1;
}

static int
take_lock(node *n)
{
    char path[CFG_PATH_MAX + 16], pid[32];
    const char *dir = n->c.data_dir;
    if (fs_path(path, sizeof(path), dir, "LOCK") != SHOAL_OK)
        return EXIT_CONFIG;
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) {
        fprintf(stderr, "shoald: cannot open %s: %s\n", path, strerror(errno));
        return EXIT_RUNTIME;
    }
    struct flock fl = {.l_type = F_WRLCK, .l_whence = SEEK_SET};
    if (fcntl(fd, F_SETLK, &fl) != 0) {
        int e = errno;
        long holder = lock_holder(fd);
        close(fd);
        if (e == EACCES || e == EAGAIN)
            fprintf(stderr,
                    "shoald: data dir %s is in use by another shoald "
                    "(pid %ld)\n",
                    dir, holder);
        else
            fprintf(stderr, "shoald: cannot lock %s: %s\n", path, strerror(e));
        return EXIT_RUNTIME;
    }
    int len = snprintf(pid, sizeof(pid), "%ld\n", (long) getpid());
    if (ftruncate(fd, 0) != 0 || pwrite(fd, pid, (size_t) len, 0) != len)
        slog(SLOG_WARN, "main", "%s: cannot record the pid: %s", path,
             strerror(errno));
    n->lock_fd = fd;
    return 0;
}

/* Write NODE atomically: NODE.tmp, fsync, rename, fsync the directory. */
static int
write_ident(const char *dir, const cfg_ident *id)
{
    char tmp[CFG_PATH_MAX + 16], path[CFG_PATH_MAX + 16], text[256];
    size_t len;
    int fd = -1;
    fs *f = fs_posix();
    if (cfg_ident_format(id, text, sizeof(text), &len) != SHOAL_OK ||
        fs_path(tmp, sizeof(tmp), dir, "NODE.tmp") != SHOAL_OK ||
        fs_path(path, sizeof(path), dir, "NODE") != SHOAL_OK)
        return EXIT_CONFIG;
    shoal_err rc = fs_open(f, tmp, FS_RDWR | FS_CREATE | FS_TRUNC, &fd);
    if (rc == SHOAL_OK)
        rc = fs_pwrite(f, fd, text, len, 0);
    if (rc == SHOAL_OK)
        rc = fs_fsync(f, fd);
    fs_close(f, fd);
    if (rc == SHOAL_OK)
        rc = fs_rename(f, tmp, path);
    if (rc == SHOAL_OK)
        rc = fs_dir_fsync(f, dir);
    if (rc != SHOAL_OK) {
        fprintf(stderr, "shoald: cannot write %s: %s\n", path,
                shoal_strerror(rc));
        return EXIT_RUNTIME;
    }
    slog(SLOG_NOTICE, "main", "new data dir %s: id=%s shards=%u", dir, id->id,
         (unsigned) id->n_shards);
    return 0;
}

/* A fresh identity from the flags: a new data dir or --memory. */
static int
new_ident(node *n)
{
    if (n->c.id == NULL) {
        fprintf(stderr,
                "shoald: --id is required: data dir %s records no id yet\n",
                n->c.data_dir);
        return EXIT_CONFIG;
    }
    memcpy(n->ident.id, n->c.id, strlen(n->c.id) + 1);
    n->ident.n_shards = n->c.n_shards;
    if (n->map != NULL)
        memcpy(n->ident.hash_key, n->map->hash_key, sizeof(n->ident.hash_key));
    else
        randombytes_buf(n->ident.hash_key, sizeof(n->ident.hash_key));
    return n->c.memory ? 0 : write_ident(n->c.data_dir, &n->ident);
}

/* NODE exists: the flags must agree with it; what they omit is adopted. */
static int
check_ident(node *n, const cfg_ident *id)
{
    const cfg *c = &n->c;
    if (c->id != NULL && strcmp(c->id, id->id) != 0) {
        fprintf(stderr,
                "shoald: --id: '%s' does not match the id '%s' recorded in "
                "data dir %s\n",
                c->id, id->id, c->data_dir);
        return EXIT_CONFIG;
    }
    if (c->shards_given && c->n_shards != id->n_shards) {
        fprintf(stderr,
                "shoald: --shards: %u does not match the %u shards data dir "
                "%s was created with\n",
                (unsigned) c->n_shards, (unsigned) id->n_shards, c->data_dir);
        return EXIT_CONFIG;
    }
    if (n->map != NULL &&
        memcmp(id->hash_key, n->map->hash_key, sizeof(id->hash_key)) != 0) {
        fprintf(stderr,
                "shoald: data dir %s belongs to another cluster (its hash key "
                "differs from cluster file %s)\n",
                c->data_dir, c->cluster_file);
        return EXIT_CONFIG;
    }
    n->ident = *id;
    return 0;
}

static int
load_ident(node *n)
{
    char path[CFG_PATH_MAX + 16], err[CFG_ERR_LEN] = "";
    uint8_t *text = NULL;
    size_t len = 0;
    cfg_ident id;
    if (fs_path(path, sizeof(path), n->c.data_dir, "NODE") != SHOAL_OK)
        return EXIT_CONFIG;
    shoal_err rc = fs_read_all(fs_posix(), path, 4096, &text, &len);
    if (rc == SHOAL_ENOTFOUND)
        return new_ident(n);
    if (rc == SHOAL_ENOMEM)
        return oom();
    if (rc == SHOAL_OK)
        rc = cfg_ident_parse((const char *) text, len, &id, err, sizeof(err));
    mem_free(text);
    if (rc == SHOAL_ENOMEM)
        return oom();
    if (rc != SHOAL_OK) {
        fprintf(stderr, "shoald: %s is unreadable or damaged: %s\n", path,
                err[0] != '\0' ? err : shoal_strerror(rc));
        return EXIT_RUNTIME;
    }
    return check_ident(n, &id);
}

static int
open_data_dir(node *n)
{
    int ex;
    if (n->c.memory)
        return new_ident(n);
    if ((ex = make_dir(&n->c)) != 0 || (ex = take_lock(n)) != 0)
        return ex;
    return load_ident(n);
}

/* ---- serving --------------------------------------------------------------
 */

static int
open_store(node *n)
{
    const cfg *c = &n->c;
    store_opts o;
    store_opts_default(&o);
    o.data_dir = c->memory ? NULL : c->data_dir;
    o.n_shards = n->ident.n_shards;
    o.max_key_bytes = (size_t) c->max_key_bytes;
    o.max_value_bytes = (size_t) c->max_value_bytes;
    o.max_batch_ops = (size_t) c->max_batch_ops;
    o.fsync = c->fsync;
    o.fsync_interval_ms = c->fsync_interval_ms;
    o.snapshot_wal_bytes = c->snapshot_wal_bytes;
    o.snapshot_interval_ms = c->snapshot_interval_ms;
    if (n->rp != NULL) { /* recovery fills the replication backlog */
        o.on_record = repl_on_record;
        o.on_record_arg = n->rp;
    }
    shoal_err rc = store_open(&o, &n->st);
    if (rc == SHOAL_ENOMEM)
        return oom();
    if (rc != SHOAL_OK) {
        fprintf(stderr, "shoald: cannot open the store in %s: %s\n",
                c->memory ? "memory" : c->data_dir, shoal_strerror(rc));
        return EXIT_RUNTIME;
    }
    return 0;
}

static void
init_exec(node *n)
{
    exec_ctx *x = &n->x;
    memset(x, 0, sizeof(*x));
    x->st = n->st;
    x->n_shards = n->ident.n_shards;
    memcpy(x->hash_key, n->ident.hash_key, sizeof(x->hash_key));
    x->node_id = n->ident.id;
    x->advertise_url = cfg_advertise(&n->c);
    x->map_epoch = n->map != NULL ? n->map->epoch : 1;
    x->map = n->map;
    x->self = n->map != NULL ? cmap_node_index(n->map, n->ident.id) : 0;
    x->rp = n->rp;
    x->max_key_bytes = (size_t) n->c.max_key_bytes;
    x->max_value_bytes = (size_t) n->c.max_value_bytes;
    x->max_batch_ops = (size_t) n->c.max_batch_ops;
    x->start_ms = clock_mono_ns() / 1000000;
    x->requests_total = &n->requests_total;
}

static int
open_srv(node *n)
{
    srv_opts o;
    srv_opts_default(&o);
    o.listen_url = n->c.listen_url;
    o.x = &n->x;
    o.keys = n->keys;
    o.insecure = n->c.insecure;
    o.m = n->m;
    o.n_contexts = n->c.contexts;
    o.n_workers = n->c.workers;
    o.max_frame_bytes = (size_t) n->c.max_frame_bytes;
    o.replay_window_ms = n->c.replay_window_ms;
    shoal_err rc = srv_open(&o, &n->s);
    if (rc == SHOAL_ENOMEM)
        return oom();
    if (rc != SHOAL_OK) {
        fprintf(stderr, "shoald: cannot listen on %s: %s\n", o.listen_url,
                shoal_strerror(rc));
        return EXIT_RUNTIME;
    }
    return 0;
}

static int
open_http(node *n)
{
    char url[CFG_URL_MAX + 16];
    if (n->c.http_addr == NULL)
        return 0;
    snprintf(url, sizeof(url), "http://%s", n->c.http_addr);
    http_sources src = {
        .st = n->st,
        .m = n->m,
        .c = &n->c,
        .node_id = n->ident.id,
        .n_shards = n->ident.n_shards,
        .map_epoch = n->x.map_epoch,
        .start_ms = n->x.start_ms,
        .version = SHOAL_VERSION,
        .draining = &n->draining,
        .rp = n->rp,
    };
    shoal_err rc = http_open(url, &src, &n->h);
    if (rc == SHOAL_ENOMEM)
        return oom();
    if (rc != SHOAL_OK) {
        fprintf(stderr, "shoald: --http: cannot serve on %s: %s\n",
                n->c.http_addr, shoal_strerror(rc));
        return EXIT_RUNTIME;
    }
    return 0;
}

static void
log_ready(const node *n)
{
    char http_addr[CFG_URL_MAX + 16] = "off";
    const char *a = n->c.http_addr;
    if (a != NULL) { /* with the bound port, in case it was 0 */
        const char *colon = strrchr(a, ':');
        snprintf(http_addr, sizeof(http_addr), "%.*s:%u", (int) (colon - a), a,
                 (unsigned) http_port(n->h));
    }
    slog(SLOG_NOTICE, "main",
         "shoald ready: id=%s listen=%s http=%s data=%s fsync=%s", n->ident.id,
         n->c.listen_url, http_addr,
         n->c.memory ? "memory (nothing kept)" : n->c.data_dir,
         wal_fsync_name(n->c.fsync));
}

/* Replication exists when the cluster has other nodes. */
static int
create_repl(node *n)
{
    if (n->map == NULL || n->map->n_nodes < 2 || n->map->r < 2)
        return 0;
    repl_opts o;
    repl_opts_default(&o);
    o.map = n->map;
    o.self_id = n->ident.id;
    o.listen_url = n->c.peer_listen_url;
    o.keys = n->keys;
    o.peer_key = n->peer_key;
    o.insecure = n->c.insecure;
    o.backlog_bytes = n->c.repl_backlog_bytes;
    o.replay_window_ms = n->c.replay_window_ms;
    shoal_err rc = repl_create(&o, &n->rp);
    if (rc == SHOAL_ENOMEM)
        return oom();
    if (rc != SHOAL_OK) {
        fprintf(stderr, "shoald: cannot set up replication: %s\n",
                shoal_strerror(rc));
        return EXIT_CONFIG;
    }
    return 0;
}

static int
start_repl(node *n)
{
    if (n->rp == NULL)
        return 0;
    shoal_err rc = repl_start(n->rp, n->st);
    if (rc == SHOAL_ENOMEM)
        return oom();
    if (rc != SHOAL_OK) {
        fprintf(stderr, "shoald: cannot start replication: %s\n",
                shoal_strerror(rc));
        return EXIT_RUNTIME;
    }
    return 0;
}

static int
start(node *n)
{
    int ex;
    if (n->c.insecure)
        insecure_banner(&n->c);
    if (n->c.memory)
        slog(SLOG_WARN, "main",
             "--memory: nothing is written to disk; every key is lost when "
             "shoald exits");
    if ((ex = create_repl(n)) != 0 || (ex = open_store(n)) != 0 ||
        (ex = start_repl(n)) != 0)
        return ex;
    init_exec(n);
    if (metrics_open(&n->m) != SHOAL_OK)
        return oom();
    if ((ex = open_srv(n)) != 0 || (ex = open_http(n)) != 0)
        return ex;
    log_ready(n);
    n->ready = true;
    return 0;
}

/* ---- stopping -------------------------------------------------------------
 */

static const char *
sig_name(int sig)
{
    return sig == SIGINT ? "SIGINT" : sig == SIGTERM ? "SIGTERM" : "signal";
}

/* Runs while the node stops: a second SIGINT/SIGTERM exits 1 at once;
 * SIGUSR1 (from stop) ends it. */
static void *
watch_stop(void *arg)
{
    node *n = arg;
    int sig;
    for (;;) {
        if (sigwait(&n->sigs, &sig) != 0)
            continue;
        if (sig == SIGUSR1)
            return NULL;
        if (sig == SIGINT || sig == SIGTERM) {
            slog(SLOG_WARN, "main",
                 "second %s while stopping: exiting now (exit 1) without "
                 "finishing the drain",
                 sig_name(sig));
            _exit(EXIT_RUNTIME);
        }
    }
}

static int
wait_and_drain(node *n)
{
    int sig = 0;
    while (sig != SIGINT && sig != SIGTERM) {
        if (sigwait(&n->sigs, &sig) != 0)
            sig = 0;
        else if (sig == SIGHUP)
            slog(SLOG_NOTICE, "main", "SIGHUP: nothing to reload; ignored");
    }
    atomic_store_explicit(&n->draining, true, memory_order_release);
    slog(SLOG_NOTICE, "main",
         "%s: draining: no new requests, finishing those in flight (at most "
         "%u ms)",
         sig_name(sig), (unsigned) n->c.drain_timeout_ms);
    n->watching = pthread_create(&n->watcher, NULL, watch_stop, n) == 0;
    if (srv_drain(n->s, n->c.drain_timeout_ms) != SHOAL_OK)
        slog(SLOG_WARN, "main",
             "drain timed out after %u ms with %u frames in flight; "
             "stopping anyway",
             (unsigned) n->c.drain_timeout_ms, srv_inflight(n->s));
    return 0;
}

static void
stop(node *n)
{
    http_close(n->h);
    repl_shutdown(n->rp); /* fails quorum waits: their frames answer */
    srv_close(n->s);
    repl_close(n->rp);
    store_close(n->st); /* commits and syncs what was written */
    cmap_free(n->map);
    metrics_close(n->m);
    wire_keyring_free(n->keys);
    if (n->lock_fd >= 0)
        close(n->lock_fd); /* releases the lock */
    if (n->watching) {
        pthread_kill(n->watcher, SIGUSR1);
        pthread_join(n->watcher, NULL);
    }
    if (n->ready)
        slog(SLOG_NOTICE, "main", "shoald %s stopped", n->ident.id);
    if (n->st != NULL)
        nng_fini(); /* lets nng's reaper free the HTTP server */
    if (n->cfg_ready)
        cfg_fini(&n->c);
}

int
main(int argc, char **argv)
{
    node *n = &the_node;
    int ex;
    if ((ex = block_signals(n)) == 0 && (ex = configure(n, argc, argv)) == 0 &&
        (ex = load_keys(n)) == 0 && (ex = load_cluster(n)) == 0 &&
        (ex = open_data_dir(n)) == 0 && (ex = start(n)) == 0)
        ex = wait_and_drain(n);
    stop(n);
    return ex == EXIT_DONE ? 0 : ex;
}
