/*
 * text.h -- small helpers for parsers of operator-written text (the config
 * file, the cluster file): one-line error messages that quote the user's
 * input safely.
 */
#ifndef SHOAL_PROTO_TEXT_H
#define SHOAL_PROTO_TEXT_H

#include <stddef.h>

/* printf into err (err_len bytes; NULL or 0: nothing). */
void text_err(char *err, size_t err_len, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* User text for a message: control and non-ASCII bytes become '?', and
 * text over cap - 4 bytes is cut with "...". Returns buf; cap >= 64. */
const char *text_quote(const char *v, char *buf, size_t cap);

/* Blank within a line: space, tab or CR. */
int text_is_blank(char ch);

/* s without leading and trailing blanks (cut in place). */
char *text_trim(char *s);

/* Cut a comment in place: '#' at the start or after a blank. */
void text_cut_comment(char *s);

#endif
