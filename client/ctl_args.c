/*
 * ctl_args.c -- shoalctl's argument parsing: option tables, checked number
 * conversions, hex, stdin.
 *
 * Numbers go through strtoull/strtoll with every failure checked (empty,
 * sign where none is allowed, trailing characters, out of range), never
 * atoi: a typo must be an error with exit code 2, not a zero.
 */
#include "ctl_int.h"

#include "proto/mem.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

bool
ctl_u64(const char *s, uint64_t min, uint64_t max, uint64_t *out)
{
    /* strtoull accepts leading space and "-1" (as a huge value): refuse. */
    if (s == NULL || !isdigit((unsigned char) s[0]))
        return false;
    char *end = NULL;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0')
        return false;
    if (v < min || v > max)
        return false;
    *out = (uint64_t) v;
    return true;
}

bool
ctl_i64(const char *s, int64_t *out)
{
    if (s == NULL)
        return false;
    const char *d = s[0] == '-' || s[0] == '+' ? s + 1 : s;
    if (!isdigit((unsigned char) d[0]))
        return false;
    char *end = NULL;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0')
        return false;
    *out = (int64_t) v;
    return true;
}

static int
hexval(char ch)
{
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    if (ch >= 'a' && ch <= 'f')
        return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F')
        return ch - 'A' + 10;
    return -1;
}

shoal_err
ctl_hex_decode(const char *s, size_t len, ctl_bytes *out)
{
    out->ptr = NULL;
    out->len = 0;
    if (len % 2 != 0)
        return SHOAL_EINVAL;
    uint8_t *p = mem_alloc(len / 2 + 1);
    if (p == NULL)
        return SHOAL_ENOMEM;
    for (size_t i = 0; i < len; i += 2) {
        int hi = hexval(s[i]), lo = hexval(s[i + 1]);
        if (hi < 0 || lo < 0) {
            mem_free(p);
            return SHOAL_EINVAL;
        }
        p[i / 2] = (uint8_t) (hi << 4 | lo);
    }
    out->ptr = p;
    out->len = len / 2;
    return SHOAL_OK;
}

int
ctl_arg_bytes(ctl *c, const char *what, const char *s, ctl_bytes *out)
{
    size_t n = strlen(s);
    if (c->hex) {
        shoal_err rc = ctl_hex_decode(s, n, out);
        if (rc == SHOAL_EINVAL)
            return ctl_usage(c,
                             "%s '%s' is not hex (--hex: an even number "
                             "of 0-9a-f digits)",
                             what, s);
        if (rc != SHOAL_OK)
            return ctl_fail(c, rc, NULL);
        return CTL_EXIT_OK;
    }
    out->ptr = mem_alloc(n + 1);
    if (out->ptr == NULL)
        return ctl_fail(c, SHOAL_ENOMEM, NULL);
    memcpy(out->ptr, s, n + 1);
    out->len = n;
    return CTL_EXIT_OK;
}

void
ctl_bytes_free(ctl_bytes *b)
{
    mem_free(b->ptr);
    b->ptr = NULL;
    b->len = 0;
}

/* Grow b (capacity *cap) towards want bytes. */
static shoal_err
grow(uint8_t **b, size_t *cap, size_t want)
{
    size_t n = *cap * 2 < want ? *cap * 2 : want;
    uint8_t *p = mem_realloc(*b, n);
    if (p == NULL)
        return SHOAL_ENOMEM;
    *b = p;
    *cap = n;
    return SHOAL_OK;
}

shoal_err
ctl_read_fd(int fd, size_t max, ctl_bytes *out)
{
    /* Read at most max + 1 bytes: one more than allowed proves too much. */
    size_t cap = max + 1 < 4096 ? max + 1 : 4096, len = 0;
    uint8_t *buf = mem_alloc(cap);
    shoal_err rc = buf ? SHOAL_OK : SHOAL_ENOMEM;
    out->ptr = NULL;
    out->len = 0;
    while (rc == SHOAL_OK) {
        if (len == max + 1) {
            rc = SHOAL_ETOOLARGE;
            break;
        }
        if (len == cap && (rc = grow(&buf, &cap, max + 1)) != SHOAL_OK)
            break;
        ssize_t n = read(fd, buf + len, cap - len);
        if (n == 0)
            break;
        if (n < 0 && errno != EINTR)
            rc = SHOAL_EIO;
        if (n > 0)
            len += (size_t) n;
    }
    if (rc != SHOAL_OK) {
        mem_free(buf);
        return rc;
    }
    out->ptr = buf;
    out->len = len;
    return SHOAL_OK;
}

/* Whether a is positional although it starts with '-': "-" (stdin) and
 * negative numbers (incr KEY -5). */
static bool
dash_positional(const char *a)
{
    return a[1] == '\0' || isdigit((unsigned char) a[1]);
}

static const ctl_opt *
find_opt(const ctl_opt *opts, const char *a, size_t alen)
{
    for (const ctl_opt *o = opts; o && o->name; o++) {
        if (strlen(o->name) == alen && strncmp(o->name, a, alen) == 0)
            return o;
        if (o->alias && strlen(o->alias) == alen &&
            strncmp(o->alias, a, alen) == 0)
            return o;
    }
    return NULL;
}

/* Store val into o's target; name is the option as typed (for messages). */
static int
set_opt(ctl *c, const ctl_opt *o, const char *name, int name_len,
        const char *val)
{
    if (o->seen)
        *o->seen = true;
    switch (o->kind) {
    case CTL_OPT_FLAG:
        *(bool *) o->out = true;
        return CTL_EXIT_OK;
    case CTL_OPT_STR:
        *(const char **) o->out = val;
        return CTL_EXIT_OK;
    case CTL_OPT_FN:
        return o->fn(c, val);
    case CTL_OPT_U64:
        if (ctl_u64(val, o->min, o->max, (uint64_t *) o->out))
            return CTL_EXIT_OK;
        if (o->max == UINT64_MAX)
            return ctl_usage(c, "%.*s: '%s' is not a whole number >= %llu",
                             name_len, name, val, (unsigned long long) o->min);
        return ctl_usage(c, "%.*s: '%s' is not a whole number in %llu..%llu",
                         name_len, name, val, (unsigned long long) o->min,
                         (unsigned long long) o->max);
    }
    return CTL_EXIT_USAGE;
}

static bool
is_global(const char *a, size_t alen)
{
    static const char *const names[] = {
        "--url", "--key-file",   "--insecure", "--json",
        "--hex", "--timeout-ms", "--verbose"};
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        if (strlen(names[i]) == alen && strncmp(names[i], a, alen) == 0)
            return true;
    return false;
}

/* Handle the option argv[*i]; advances *i past its value. */
static int
take_opt(ctl *c, int argc, char **argv, int *i, const ctl_opt *opts)
{
    const char *a = argv[*i];
    const char *eq = strncmp(a, "--", 2) == 0 ? strchr(a, '=') : NULL;
    size_t alen = eq ? (size_t) (eq - a) : strlen(a);
    const ctl_opt *o = find_opt(opts, a, alen);
    if (o == NULL)
        return ctl_usage(c, "unknown option '%.*s'%s", (int) alen, a,
                         c->cmd && is_global(a, alen)
                             ? " (global options go before the command)"
                             : "");
    if (o->kind == CTL_OPT_FLAG) {
        if (eq)
            return ctl_usage(c, "%s takes no value", o->name);
        return set_opt(c, o, a, (int) alen, NULL);
    }
    if (eq)
        return set_opt(c, o, a, (int) alen, eq + 1);
    if (*i + 1 >= argc)
        return ctl_usage(c, "%.*s needs a value", (int) alen, a);
    *i += 1;
    return set_opt(c, o, a, (int) alen, argv[*i]);
}

int
ctl_parse(ctl *c, int argc, char **argv, const ctl_opt *opts, const char **pos,
          size_t min_pos, size_t max_pos, size_t *n_pos)
{
    size_t n = 0;
    bool opts_done = false;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (!opts_done && strcmp(a, "--") == 0) {
            opts_done = true;
            continue;
        }
        if (!opts_done && a[0] == '-' && !dash_positional(a)) {
            int ec = take_opt(c, argc, argv, &i, opts);
            if (ec != CTL_EXIT_OK)
                return ec;
            continue;
        }
        if (n == max_pos)
            return ctl_usage(c, "unexpected argument '%s'", a);
        pos[n++] = a;
    }
    if (n < min_pos)
        return ctl_usage(c, "missing argument%s", min_pos - n > 1 ? "s" : "");
    if (n_pos)
        *n_pos = n;
    return CTL_EXIT_OK;
}

int
ctl_parse_globals(ctl *c, int argc, char **argv, const ctl_opt *opts,
                  int *cmd_index)
{
    int i = 1;
    for (; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--") == 0) {
            i++;
            break;
        }
        if (a[0] != '-' || a[1] == '\0')
            break;
        int ec = take_opt(c, argc, argv, &i, opts);
        if (ec != CTL_EXIT_OK)
            return ec;
    }
    *cmd_index = i;
    return CTL_EXIT_OK;
}
