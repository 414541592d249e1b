/*
 * cfg.h -- shoald's configuration: command-line flags and a config file
 * (DESIGN §10).
 *
 * Every option has a long flag (--name VALUE or --name=VALUE) and the same
 * name in a config file, one "name = value" per line ('#' starts a comment
 * at the beginning of a line or after a blank; blank lines are ignored;
 * booleans take true/false, yes/no, on/off or 1/0). Flags override the file:
 * parse the flags first (cfg_parse_args), then the file they name
 * (cfg_parse_file, which checks but does not apply options the flags set),
 * then cfg_check for the rules between options.
 *
 * Numbers are decimal without sign; byte sizes take a k, m or g suffix
 * (powers of 1024, e.g. 16m). Every error is one line that names the option
 * and what it accepts, e.g.
 *   --fsync: 'sometimes' is not one of always, interval, none
 *
 * These functions are pure: they read their inputs and write only the cfg
 * and err (no files, no logging), so they are unit-tested and fuzzed.
 *
 * The NODE identity file of a data dir (cfg_ident) is parsed and formatted
 * here too, for the same reasons.
 */
#ifndef SHOAL_NODE_CFG_H
#define SHOAL_NODE_CFG_H

#include "proto/err.h"
#include "proto/keyhash.h"
#include "proto/slog.h"
#include "storage/wal.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define CFG_ID_MAX         63         /* node id: [A-Za-z0-9._-]{1,63} */
#define CFG_URL_MAX        255        /* --listen, --advertise, --http */
#define CFG_PATH_MAX       4095       /* --data-dir, --key-file, --config */
#define CFG_LINE_MAX       4096       /* config file line */
#define CFG_FILE_MAX       (1u << 20) /* config file size main accepts */
#define CFG_ERR_LEN        512 /* an err buffer this big never truncates */
#define CFG_DEFAULT_LISTEN "tcp://127.0.0.1:7400"
#define CFG_DEFAULT_HTTP   "127.0.0.1:7480"

/* Options; strings are owned (mem_alloc) and freed by cfg_fini. */
typedef struct cfg {
    char *config_file;   /* --config, NULL if none */
    char *id;            /* NULL: taken from the data dir's NODE file */
    char *listen_url;    /* never NULL after cfg_init */
    char *advertise_url; /* NULL: same as listen (cfg_advertise) */
    char *http_addr;     /* "HOST:PORT"; NULL when --http off */
    char *data_dir;      /* NULL with --memory */
    bool memory;         /* no files at all */
    wal_fsync fsync;
    uint32_t fsync_interval_ms;
    char *key_file;        /* NULL with --insecure */
    char *cluster_file;    /* --cluster: NULL for a single node */
    char *peer_listen_url; /* NULL: the node's peer URL in the cluster file */
    uint64_t repl_backlog_bytes;
    bool insecure;
    uint32_t n_shards; /* power of two, 1..65536 */
    bool shards_given; /* --shards was set (else adopt the data dir's) */
    uint64_t max_key_bytes;
    uint64_t max_value_bytes;
    uint64_t max_batch_ops;
    uint64_t max_frame_bytes;
    uint32_t workers;
    uint32_t contexts;
    uint64_t snapshot_wal_bytes;   /* 0: off */
    uint32_t snapshot_interval_ms; /* 0: off */
    uint32_t replay_window_ms;
    slog_level log_level;
    uint32_t drain_timeout_ms;
    bool help;          /* --help: print cfg_usage, exit 0 */
    bool version;       /* --version */
    uint64_t flag_mask; /* options set by flags (one bit per option) */
} cfg;

/* Defaults: listen tcp://127.0.0.1:7400, http 127.0.0.1:7480, fsync always
 * (interval 100 ms), 256 shards, limits as the engine's defaults (key 1024,
 * value 16m, batch 10000), frame 64m + 64k, 4 workers, 128 contexts,
 * snapshots every 256m of WAL, replay window 300000 ms, log level notice,
 * drain timeout 10000 ms. SHOAL_ENOMEM (c is then cfg_fini-safe). */
shoal_err cfg_init(cfg *c);

/* Free the strings (c stays cfg_fini-safe; NULL ok). */
void cfg_fini(cfg *c);

/* Apply flags argv[1..argc-1] to c (argv[0] is the program name). Later
 * flags override earlier ones. --help and --version are recorded, not
 * acted on. SHOAL_EINVAL with a one-line message in err (unknown flag,
 * missing value, bad value, stray argument), SHOAL_ENOMEM. c may hold some
 * of the flags after a failure; cfg_fini it. */
shoal_err cfg_parse_args(int argc, char *const argv[], cfg *c, char *err,
                         size_t err_len);

/* Apply config-file text (len bytes, need not be NUL-terminated) to c,
 * except the options c->flag_mask says the flags set (their file values
 * are still checked). Errors start with "line N: ": a line that is not
 * "name = value", an unknown name, an option set twice, a bad value,
 * "config", "help" or "version" in a file. SHOAL_EINVAL, SHOAL_ENOMEM. */
shoal_err cfg_parse_file(const char *text, size_t len, cfg *c, char *err,
                         size_t err_len);

/* The rules between options: exactly one of --key-file and --insecure,
 * exactly one of --data-dir and --memory, --id with --memory, a frame limit
 * that holds the largest key and value. SHOAL_EINVAL with err. */
shoal_err cfg_check(const cfg *c, char *err, size_t err_len);

/* --advertise, or --listen when not given. */
const char *cfg_advertise(const cfg *c);

/* Whether s is a valid node id. */
bool cfg_id_valid(const char *s);

/* Print the --help text. */
void cfg_usage(FILE *f, const char *prog);

/* ---- the NODE identity file ----------------------------------------------
 * Text, written once when a data dir is created:
 *   id = node1
 *   shards = 256
 *   hash_key = <32 lowercase hex digits>
 */

typedef struct cfg_ident {
    char id[CFG_ID_MAX + 1];
    uint32_t n_shards;
    uint8_t hash_key[KEYHASH_KEY_BYTES];
} cfg_ident;

/* Parse a NODE file. SHOAL_ECORRUPT with "line N: ..." or "missing ..."
 * in err for anything but the three fields, each once and valid. */
shoal_err cfg_ident_parse(const char *text, size_t len, cfg_ident *out,
                          char *err, size_t err_len);

/* Format id into buf (128 bytes always suffice). SHOAL_ETOOLARGE if buf is
 * short, SHOAL_EINVAL if id is not valid. *len_out without the NUL. */
shoal_err cfg_ident_format(const cfg_ident *id, char *buf, size_t buf_len,
                           size_t *len_out);

/* The default --workers: the number of CPUs online, clamped to 2..16. */
unsigned cfg_default_workers(void);

#endif
