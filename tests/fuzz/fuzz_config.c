/*
 * fuzz_config.c -- libFuzzer target for shoald's configuration parsers
 * (node/cfg.h; TESTING G7).
 *
 * The same input is used three ways:
 *   (a) as config-file text: cfg_parse_file into a fresh cfg, then
 *       cfg_check;
 *   (b) as argv, split on NUL bytes (argv[0] = "shoald", at most 64
 *       arguments): cfg_parse_args, then (a) on top of the flags, as shoald
 *       does with --config;
 *   (c) as a NODE identity file: cfg_ident_parse; a parsed identity must
 *       format and parse back to the same bytes.
 * Whatever the input, nothing may crash or leak (ASan/UBSan), a failure
 * must leave a one-line printable message, and a success must leave every
 * option inside its documented range.
 */
#include "node/cfg.h"

#include "proto/mem.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define MAX_ARGS 64

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void
check_err(const char *err)
{
    if (err[0] == '\0')
        abort();
    for (const char *p = err; *p != '\0'; p++)
        if ((unsigned char) *p < 0x20 || (unsigned char) *p >= 0x7f)
            abort();
}

static bool
pow2(uint64_t n)
{
    return n != 0 && (n & (n - 1)) == 0;
}

/* Every option inside the range cfg.h and --help promise. */
static void
check_ranges(const cfg *c)
{
    if (c->listen_url == NULL || !pow2(c->n_shards) || c->n_shards > 65536 ||
        (c->id != NULL && !cfg_id_valid(c->id)) || c->fsync_interval_ms < 1 ||
        c->fsync_interval_ms > 60000 || c->max_key_bytes < 1 ||
        c->max_key_bytes > 65535 || c->max_value_bytes < 1 ||
        c->max_value_bytes > (1ull << 30) || c->max_batch_ops < 1 ||
        c->max_batch_ops > 1000000 || c->max_frame_bytes < 4096 ||
        c->max_frame_bytes > (2ull << 30) || c->workers < 1 ||
        c->workers > 256 || c->contexts < 1 || c->contexts > 16384 ||
        c->snapshot_wal_bytes > (1024ull << 30) ||
        c->snapshot_interval_ms > 86400000 || c->replay_window_ms < 1000 ||
        c->replay_window_ms > 86400000 || c->drain_timeout_ms > 3600000 ||
        (unsigned) c->fsync > WAL_FSYNC_NONE ||
        (unsigned) c->log_level > SLOG_DEBUG)
        abort();
    if (c->data_dir != NULL &&
        (c->data_dir[0] == '\0' || strlen(c->data_dir) > CFG_PATH_MAX))
        abort();
}

static void
after_parse(const cfg *c, shoal_err rc, const char *err)
{
    char err2[CFG_ERR_LEN];
    if (rc == SHOAL_OK) {
        check_ranges(c);
        if (cfg_check(c, err2, sizeof(err2)) != SHOAL_OK)
            check_err(err2);
    } else if (rc == SHOAL_EINVAL) {
        check_err(err);
    } else if (rc != SHOAL_ENOMEM) {
        abort();
    }
}

static void
as_file(const uint8_t *data, size_t size)
{
    char err[CFG_ERR_LEN];
    cfg c;
    if (cfg_init(&c) == SHOAL_OK)
        after_parse(
            &c, cfg_parse_file((const char *) data, size, &c, err, sizeof(err)),
            err);
    cfg_fini(&c);
}

static void
as_args(const uint8_t *data, size_t size)
{
    char err[CFG_ERR_LEN];
    char *buf = malloc(size + 1);
    char *argv[MAX_ARGS + 1];
    int argc = 1;
    cfg c;
    if (buf == NULL)
        return;
    memcpy(buf, data, size);
    buf[size] = '\0';
    argv[0] = (char *) "shoald";
    for (size_t i = 0; i < size && argc < MAX_ARGS; i++) {
        argv[argc++] = buf + i;
        i += strlen(buf + i);
    }
    argv[argc] = NULL;
    if (cfg_init(&c) == SHOAL_OK) {
        shoal_err rc = cfg_parse_args(argc, argv, &c, err, sizeof(err));
        after_parse(&c, rc, err);
        if (rc == SHOAL_OK) /* the same bytes as a --config file on top */
            after_parse(
                &c,
                cfg_parse_file((const char *) data, size, &c, err, sizeof(err)),
                err);
    }
    cfg_fini(&c);
    free(buf);
}

static void
as_ident(const uint8_t *data, size_t size)
{
    char err[CFG_ERR_LEN], text[128];
    size_t len;
    cfg_ident a, b;
    shoal_err rc =
        cfg_ident_parse((const char *) data, size, &a, err, sizeof(err));
    if (rc == SHOAL_ECORRUPT) {
        check_err(err);
        return;
    }
    if (rc != SHOAL_OK)
        return;
    if (cfg_ident_format(&a, text, sizeof(text), &len) != SHOAL_OK ||
        cfg_ident_parse(text, len, &b, err, sizeof(err)) != SHOAL_OK ||
        memcmp(&a, &b, sizeof(a)) != 0)
        abort();
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > (64u << 10))
        return 0;
    as_file(data, size);
    as_args(data, size);
    as_ident(data, size);
    return 0;
}
