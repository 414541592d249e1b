/*
 * text.c -- see text.h.
 */
#include "proto/text.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

void
text_err(char *err, size_t err_len, const char *fmt, ...)
{
    if (err == NULL || err_len == 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, err_len, fmt, ap);
    va_end(ap);
}

const char *
text_quote(const char *v, char *buf, size_t cap)
{
    size_t n = 0;
    for (; v[n] != '\0' && n + 4 < cap; n++) {
        unsigned char ch = (unsigned char) v[n];
        buf[n] = (ch < 0x20 || ch >= 0x7f) ? '?' : (char) ch;
    }
    if (v[n] != '\0' && n >= 3)
        memcpy(buf + n - 3, "...", 3);
    buf[n] = '\0';
    return buf;
}

int
text_is_blank(char ch)
{
    return ch == ' ' || ch == '\t' || ch == '\r';
}

char *
text_trim(char *s)
{
    while (text_is_blank(*s))
        s++;
    size_t n = strlen(s);
    while (n > 0 && text_is_blank(s[n - 1]))
        s[--n] = '\0';
    return s;
}

void
text_cut_comment(char *s)
{
    for (char *p = s; *p != '\0'; p++) {
        if (*p == '#' && (p == s || text_is_blank(p[-1]))) {
            *p = '\0';
            return;
        }
    }
}
