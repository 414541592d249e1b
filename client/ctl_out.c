/*
 * ctl_out.c -- how shoalctl prints keys, values, JSON and tables.
 *
 * Keys and values are bytes. Three renderings:
 *  - raw: the bytes themselves (get, when stdout is not a terminal);
 *  - escaped: printable UTF-8 as is, everything else as C escapes (\n, \t,
 *    \\, \xNN), so one item always stays on one line (scan lines, tables,
 *    get on a terminal when the value is binary);
 *  - hex: lowercase hex (--hex).
 * JSON strings must be valid UTF-8; bytes that are not are given in a
 * "<name>_hex" member instead (ctl_sb_json_bytes), so a script never sees
 * a lossy string.
 *
 * Everything is built in a ctl_sb and written in one go, so a failed write
 * (EPIPE, ENOSPC) is noticed and reported once.
 */
#include "ctl_int.h"

#include "proto/mem.h"

#include <errno.h>
#include <string.h>

static void
sb_grow(ctl_sb *sb, size_t more)
{
    if (sb->oom)
        return;
    if (sb->len + more + 1 <= sb->cap)
        return;
    size_t cap = sb->cap ? sb->cap : 256;
    while (cap < sb->len + more + 1) {
        if (cap > SIZE_MAX / 2) {
            sb->oom = true;
            return;
        }
        cap *= 2;
    }
    char *p = mem_realloc(sb->ptr, cap);
    if (p == NULL) {
        sb->oom = true;
        return;
    }
    sb->ptr = p;
    sb->cap = cap;
}

void
ctl_sb_put(ctl_sb *sb, const void *p, size_t n)
{
    sb_grow(sb, n);
    if (sb->oom)
        return;
    if (n > 0)
        memcpy(sb->ptr + sb->len, p, n);
    sb->len += n;
    sb->ptr[sb->len] = '\0';
}

void
ctl_sb_printf(ctl_sb *sb, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0) {
        sb->oom = true;
        return;
    }
    sb_grow(sb, (size_t) n);
    if (sb->oom)
        return;
    va_start(ap, fmt);
    vsnprintf(sb->ptr + sb->len, (size_t) n + 1, fmt, ap);
    va_end(ap);
    sb->len += (size_t) n;
}

void
ctl_sb_free(ctl_sb *sb)
{
    mem_free(sb->ptr);
    memset(sb, 0, sizeof(*sb));
}

int
ctl_sb_flush(ctl *c, ctl_sb *sb, FILE *f)
{
    if (sb->oom) {
        sb->len = 0;
        sb->oom = false;
        return ctl_fail(c, SHOAL_ENOMEM, "formatting output");
    }
    size_t n = sb->len;
    sb->len = 0;
    if (n > 0 && fwrite(sb->ptr, 1, n, f) != n)
        goto fail;
    if (fflush(f) != 0)
        goto fail;
    return CTL_EXIT_OK;
fail:
    fprintf(stderr, "shoalctl: %s: write: %s\n", c->cmd, strerror(errno));
    return CTL_EXIT_ERR;
}

/* Length of the UTF-8 sequence at p (1..4), or 0 if it is not one
 * (overlong forms, surrogates and code points above U+10FFFF included). */
static size_t
utf8_seq(const uint8_t *p, size_t n)
{
    uint8_t b = p[0];
    if (b < 0x80)
        return 1;
    size_t len = b >= 0xf0 ? 4 : b >= 0xe0 ? 3 : b >= 0xc2 ? 2 : 0;
    if (len == 0 || b > 0xf4 || len > n)
        return 0;
    for (size_t i = 1; i < len; i++)
        if ((p[i] & 0xc0) != 0x80)
            return 0;
    if (b == 0xe0 && p[1] < 0xa0)
        return 0; /* overlong */
    if (b == 0xed && p[1] >= 0xa0)
        return 0; /* surrogate */
    if (b == 0xf0 && p[1] < 0x90)
        return 0; /* overlong */
    if (b == 0xf4 && p[1] >= 0x90)
        return 0; /* above U+10FFFF */
    return len;
}

/* Whether the code point starting at p (a valid sequence of len bytes) is a
 * control character: C0, DEL, C1. */
static bool
is_control(const uint8_t *p, size_t len)
{
    if (len == 1)
        return p[0] < 0x20 || p[0] == 0x7f;
    return len == 2 && p[0] == 0xc2 && p[1] < 0xa0;
}

bool
ctl_utf8_valid(const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n;) {
        size_t l = utf8_seq(p + i, n - i);
        if (l == 0)
            return false;
        i += l;
    }
    return true;
}

bool
ctl_printable(const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n;) {
        size_t l = utf8_seq(p + i, n - i);
        if (l == 0 || is_control(p + i, l))
            return false;
        i += l;
    }
    return true;
}

void
ctl_sb_hex(ctl_sb *sb, const uint8_t *p, size_t n)
{
    static const char digits[] = "0123456789abcdef";
    if (p == NULL)
        n = 0;
    if (n > (SIZE_MAX - 1) / 2) {
        sb->oom = true;
        return;
    }
    sb_grow(sb, 2 * n);
    if (sb->oom)
        return;
    for (size_t i = 0; i < n; i++) {
        sb->ptr[sb->len++] = digits[p[i] >> 4];
        sb->ptr[sb->len++] = digits[p[i] & 15];
    }
    sb->ptr[sb->len] = '\0';
}

static void
escape_byte(ctl_sb *sb, uint8_t b)
{
    switch (b) {
    case '\n':
        ctl_sb_put(sb, "\\n", 2);
        return;
    case '\t':
        ctl_sb_put(sb, "\\t", 2);
        return;
    case '\r':
        ctl_sb_put(sb, "\\r", 2);
        return;
    case '\\':
        ctl_sb_put(sb, "\\\\", 2);
        return;
    default:
        ctl_sb_printf(sb, "\\x%02x", b);
    }
}

void
ctl_sb_escaped(ctl_sb *sb, const uint8_t *p, size_t n)
{
    if (p == NULL)
        return;
    for (size_t i = 0; i < n;) {
        size_t l = utf8_seq(p + i, n - i);
        if (l == 0 || is_control(p + i, l) || p[i] == '\\') {
            escape_byte(sb, p[i]);
            i++;
            continue;
        }
        ctl_sb_put(sb, p + i, l);
        i += l;
    }
}

void
ctl_sb_json_str(ctl_sb *sb, const char *s, size_t n)
{
    const uint8_t *p = s ? (const uint8_t *) s : (const uint8_t *) "";
    ctl_sb_put(sb, "\"", 1);
    size_t run = 0; /* start of the pending run of plain bytes */
    for (size_t i = 0; i < n; i++) {
        if (p[i] >= 0x20 && p[i] != '"' && p[i] != '\\' && p[i] != 0x7f)
            continue;
        ctl_sb_put(sb, p + run, i - run);
        if (p[i] == '"' || p[i] == '\\')
            ctl_sb_printf(sb, "\\%c", p[i]);
        else if (p[i] == '\n')
            ctl_sb_put(sb, "\\n", 2);
        else
            ctl_sb_printf(sb, "\\u%04x", p[i]);
        run = i + 1;
    }
    ctl_sb_put(sb, p + run, n - run);
    ctl_sb_put(sb, "\"", 1);
}

void
ctl_sb_json_bytes(ctl_sb *sb, const ctl *c, const char *name, const uint8_t *p,
                  size_t n, bool first)
{
    if (p == NULL) /* an empty value may come without a buffer */
        p = (const uint8_t *) "";
    bool as_hex = c->hex || !ctl_utf8_valid(p, n);
    ctl_sb_printf(sb, "%s\"%s%s\":", first ? "" : ",", name,
                  as_hex && !c->hex ? "_hex" : "");
    if (as_hex) {
        ctl_sb_put(sb, "\"", 1);
        ctl_sb_hex(sb, p, n);
        ctl_sb_put(sb, "\"", 1);
        return;
    }
    ctl_sb_json_str(sb, (const char *) p, n);
}

void
ctl_sb_plain(ctl_sb *sb, const ctl *c, const uint8_t *p, size_t n)
{
    if (c->hex)
        ctl_sb_hex(sb, p, n);
    else
        ctl_sb_escaped(sb, p, n);
}

void
ctl_sb_size(ctl_sb *sb, uint64_t bytes)
{
    static const char *const units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    double v = (double) bytes;
    size_t u = 0;
    while (v >= 1024.0 && u + 1 < sizeof(units) / sizeof(units[0])) {
        v /= 1024.0;
        u++;
    }
    if (u == 0)
        ctl_sb_printf(sb, "%llu B", (unsigned long long) bytes);
    else
        ctl_sb_printf(sb, "%.1f %s", v, units[u]);
}

/* ---- tables -------------------------------------------------------------- */

size_t
ctl_text_width(const char *s)
{
    size_t w = 0;
    for (const uint8_t *p = (const uint8_t *) s; *p; p++)
        if ((*p & 0xc0) != 0x80)
            w++;
    return w;
}

void
ctl_table_init(ctl_table *t, size_t n_cols, size_t max_width)
{
    memset(t, 0, sizeof(*t));
    SH_ASSERT(n_cols > 0 && n_cols <= CTL_TABLE_COLS);
    t->n_cols = n_cols;
    t->max_width = max_width;
}

/* A copy of s cut to at most max display columns ("..." at the end). */
static char *
cell_dup(const char *s, size_t max)
{
    if (max < 4 || ctl_text_width(s) <= max)
        return mem_strdup(s);
    size_t keep = 0, w = 0;
    for (const uint8_t *p = (const uint8_t *) s; *p; p++, keep++) {
        if ((*p & 0xc0) != 0x80 && ++w > max - 3)
            break;
    }
    char *out = mem_alloc(keep + 4);
    if (out == NULL)
        return NULL;
    memcpy(out, s, keep);
    memcpy(out + keep, "...", 4);
    return out;
}

void
ctl_table_row(ctl_table *t, const char *const *cells)
{
    if (t->n_rows == t->cap_rows) {
        size_t cap = t->cap_rows ? 2 * t->cap_rows : 64;
        char **p = mem_realloc(t->cells, cap * t->n_cols * sizeof(char *));
        if (p == NULL) {
            t->oom = true;
            return;
        }
        t->cells = p;
        t->cap_rows = cap;
    }
    char **row = t->cells + t->n_rows * t->n_cols;
    for (size_t i = 0; i < t->n_cols; i++) {
        row[i] = cell_dup(cells[i], t->max_width);
        if (row[i] == NULL) {
            for (size_t j = 0; j < i; j++)
                mem_free(row[j]);
            t->oom = true;
            return;
        }
        size_t w = ctl_text_width(row[i]);
        if (w > t->widths[i])
            t->widths[i] = w;
    }
    t->n_rows++;
}

static void
pad(ctl_sb *sb, size_t n)
{
    for (size_t i = 0; i < n; i++)
        ctl_sb_put(sb, " ", 1);
}

void
ctl_table_render(ctl_table *t, ctl_sb *sb)
{
    if (t->oom)
        sb->oom = true;
    for (size_t r = 0; r < t->n_rows; r++) {
        char **row = t->cells + r * t->n_cols;
        for (size_t i = 0; i < t->n_cols; i++) {
            size_t w = ctl_text_width(row[i]);
            size_t fill = t->widths[i] > w ? t->widths[i] - w : 0;
            bool last = i + 1 == t->n_cols;
            if (t->right[i])
                pad(sb, fill);
            ctl_sb_put(sb, row[i], strlen(row[i]));
            if (!t->right[i] && !last)
                pad(sb, fill);
            if (!last)
                ctl_sb_put(sb, "  ", 2);
            mem_free(row[i]);
        }
        ctl_sb_put(sb, "\n", 1);
    }
    t->n_rows = 0;
    t->oom = false;
}

void
ctl_table_fini(ctl_table *t)
{
    for (size_t i = 0; i < t->n_rows * t->n_cols; i++)
        mem_free(t->cells[i]);
    mem_free(t->cells);
    memset(t, 0, sizeof(*t));
}
