/*
 * ctl_int.h -- private interface between the files of shoalctl
 * (shoalctl.c: main, global options, data commands; ctl_args.c: argument
 * parsing; ctl_out.c: output formatting; ctl_keygen.c; ctl_bench.c;
 * ctl_cluster.c).
 * Only those files include it.
 */
#ifndef SHOAL_CLIENT_CTL_INT_H
#define SHOAL_CLIENT_CTL_INT_H

#include "shoal.h"

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* Exit codes (documented in --help). */
enum ctl_exit {
    CTL_EXIT_OK = 0,       /* success */
    CTL_EXIT_NOTFOUND = 1, /* get/del/ttl/exists of a missing key */
    CTL_EXIT_USAGE = 2,    /* bad arguments */
    CTL_EXIT_COND = 3,     /* SHOAL_EEXISTS, SHOAL_EVERSION */
    CTL_EXIT_AUTH = 4,     /* SHOAL_EAUTH, SHOAL_EPERM */
    CTL_EXIT_UNAVAIL = 5,  /* SHOAL_EUNAVAILABLE, SHOAL_ETIMEOUT */
    CTL_EXIT_ERR = 6,      /* anything else */
};

#define CTL_MAX_URLS 64

/* The state of one shoalctl run: global options and the open handle. */
typedef struct ctl {
    const char *urls[CTL_MAX_URLS]; /* --url, else $SHOAL_URL, else default */
    size_t n_urls;
    char *url_env; /* mem_strdup of $SHOAL_URL, split in place at ',' */
    const char *key_file;
    bool insecure;
    bool json;           /* machine output */
    bool hex;            /* keys and values given and printed as hex */
    bool out_tty;        /* stdout is a terminal: human output */
    bool verbose;        /* libshoal log lines on stderr */
    uint32_t timeout_ms; /* 0: libshoal's default */
    shoal_call call;     /* per call: --read-any, --write-quorum */
    const char *cmd;     /* command name, for messages (NULL: none yet) */
    const char *usage;   /* the command's usage line */
    shoal *db;           /* open handle, or NULL */
} ctl;

/* ---- exits and messages (shoalctl.c) ------------------------------------ */

/* The exit code for a status. */
int ctl_exit_code(shoal_err rc);

/* Print "shoalctl: <cmd>: <strerror> (<NAME>)" (plus ": detail" when fmt is
 * not NULL) on stderr, and with --json an error object on stdout; returns
 * ctl_exit_code(rc). */
int ctl_fail(ctl *c, shoal_err rc, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Print "shoalctl: <cmd>: <message>" and the command's usage line on
 * stderr; returns CTL_EXIT_USAGE. */
int ctl_usage(ctl *c, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Open c->db from the global options (no-op when open). On failure prints
 * the error and returns its exit code; CTL_EXIT_OK on success. */
int ctl_connect(ctl *c);

/* ---- arguments (ctl_args.c) --------------------------------------------- */

typedef enum ctl_opt_kind {
    CTL_OPT_FLAG, /* bool *, no value */
    CTL_OPT_U64,  /* uint64_t *, in [min, max] */
    CTL_OPT_STR,  /* const char ** */
    CTL_OPT_FN,   /* fn(c, value): repeatable options such as --url */
} ctl_opt_kind;

/* One option of a command; a table ends with name == NULL. */
typedef struct ctl_opt {
    const char *name;  /* "--ttl-ms" */
    const char *alias; /* "-c" or NULL */
    ctl_opt_kind kind;
    void *out;
    bool *seen; /* set when given (may be NULL) */
    uint64_t min, max;
    int (*fn)(struct ctl *c, const char *val); /* CTL_OPT_FN */
} ctl_opt;

/* Parse argv[0..argc) of a command: options from opts (as "--opt v",
 * "--opt=v"; "--" ends options; "-" and negative numbers are positional)
 * and between min_pos and max_pos positionals into pos[]. Prints the
 * problem and returns CTL_EXIT_USAGE, or CTL_EXIT_OK. */
int ctl_parse(ctl *c, int argc, char **argv, const ctl_opt *opts,
              const char **pos, size_t min_pos, size_t max_pos, size_t *n_pos);

/* Parse the global options at the front of argv (argv[0] is skipped) up to
 * the first argument that is not an option; *cmd_index gets its index
 * (argc when there is none). Returns CTL_EXIT_USAGE after a message, or
 * CTL_EXIT_OK. */
int ctl_parse_globals(ctl *c, int argc, char **argv, const ctl_opt *opts,
                      int *cmd_index);

/* Checked conversions: the whole string, decimal, no sign for u64, in
 * range. false (with nothing written) otherwise. */
bool ctl_u64(const char *s, uint64_t min, uint64_t max, uint64_t *out);
bool ctl_i64(const char *s, int64_t *out);

/* Bytes given on the command line: text, or hex with --hex. */
typedef struct ctl_bytes {
    uint8_t *ptr; /* mem_alloc'd (never NULL after success) */
    size_t len;
} ctl_bytes;

/* Decode s as hex (c->hex) or take it as text into out. Prints the problem
 * and returns CTL_EXIT_USAGE for bad hex. */
int ctl_arg_bytes(ctl *c, const char *what, const char *s, ctl_bytes *out);
void ctl_bytes_free(ctl_bytes *b);

/* Decode hex text (even length, [0-9a-fA-F]) into a new buffer.
 * SHOAL_EINVAL for bad hex, SHOAL_ENOMEM. */
shoal_err ctl_hex_decode(const char *s, size_t len, ctl_bytes *out);

/* Read all of fd into out, at most max bytes (SHOAL_ETOOLARGE beyond,
 * SHOAL_EIO on a read error, SHOAL_ENOMEM). */
shoal_err ctl_read_fd(int fd, size_t max, ctl_bytes *out);

/* ---- output (ctl_out.c) ------------------------------------------------- */

/* A growable string. */
typedef struct ctl_sb {
    char *ptr; /* NUL-terminated while len > 0 or after any append */
    size_t len, cap;
    bool oom; /* an append failed: contents truncated */
} ctl_sb;

void ctl_sb_put(ctl_sb *sb, const void *p, size_t n);
void ctl_sb_printf(ctl_sb *sb, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
void ctl_sb_free(ctl_sb *sb);

/* Whether p is valid UTF-8 without control characters (so it prints as
 * is), and valid UTF-8 at all. */
bool ctl_printable(const uint8_t *p, size_t n);
bool ctl_utf8_valid(const uint8_t *p, size_t n);

/* Lowercase hex of p. */
void ctl_sb_hex(ctl_sb *sb, const uint8_t *p, size_t n);

/* C-style escapes for everything that is not printable UTF-8 (\n \t \\
 * \xNN); printable text is copied. */
void ctl_sb_escaped(ctl_sb *sb, const uint8_t *p, size_t n);

/* A JSON string literal of UTF-8 text p (quotes included). */
void ctl_sb_json_str(ctl_sb *sb, const char *p, size_t n);

/* A JSON member for bytes: with --hex "name":"<hex>"; else "name":"<text>"
 * when p is valid UTF-8, otherwise "name_hex":"<hex>". Writes a leading
 * comma unless first. */
void ctl_sb_json_bytes(ctl_sb *sb, const ctl *c, const char *name,
                       const uint8_t *p, size_t n, bool first);

/* Bytes for a line of plain output: hex with --hex, escaped otherwise. */
void ctl_sb_plain(ctl_sb *sb, const ctl *c, const uint8_t *p, size_t n);

/* Write sb to f; CTL_EXIT_ERR (after a message) if writing failed or sb ran
 * out of memory, else CTL_EXIT_OK. The buffer is emptied. */
int ctl_sb_flush(ctl *c, ctl_sb *sb, FILE *f);

/* An aligned text table: rows are kept until rendered. */
typedef struct ctl_table {
    size_t n_cols;    /* at most CTL_TABLE_COLS */
    size_t widths[8]; /* display columns per column, kept across renders */
    bool right[8];    /* right-aligned (numbers) */
    char **cells;     /* n_rows * n_cols mem_strdup'd cells */
    size_t n_rows, cap_rows;
    size_t max_width; /* cells wider than this are cut with "..." */
    bool oom;         /* a row was dropped for lack of memory */
} ctl_table;

#define CTL_TABLE_COLS 8

void ctl_table_init(ctl_table *t, size_t n_cols, size_t max_width);
/* Add one row of n_cols NUL-terminated cells. */
void ctl_table_row(ctl_table *t, const char *const *cells);
/* Append the table to sb (each row one line, two spaces between columns)
 * and empty it, keeping the widths for the next rows. */
void ctl_table_render(ctl_table *t, ctl_sb *sb);
void ctl_table_fini(ctl_table *t);

/* Display width of UTF-8 text (code points; wide characters count one). */
size_t ctl_text_width(const char *s);

/* "1.5 KiB" style size. */
void ctl_sb_size(ctl_sb *sb, uint64_t bytes);

/* ---- commands with their own files -------------------------------------- */

int ctl_cmd_keygen(ctl *c, int argc, char **argv);
int ctl_cmd_bench(ctl *c, int argc, char **argv);
int ctl_cmd_cluster(ctl *c, int argc, char **argv); /* ctl_cluster.c */

#endif
