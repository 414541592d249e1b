/*
 * fuzz_keyfile.c -- libFuzzer target for the key-file parser (TESTING G7:
 * a config decoder; a key file is operator input, but a parser that can be
 * crashed by a stray byte is a parser that can be crashed).
 *
 * The input is key-file text for wire_keyring_parse. A refusal must come
 * with a message ("line N: ..." or "no keys ..."); an accepted file must
 * survive a round trip: every key formatted by wire_key_format and parsed
 * again gives the same keys in the same order, and every id is found.
 *
 * The seed corpus is tests/fuzz/corpus/keyfile.
 */
#include "proto/wire.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static bool
same_key(const wire_key *a, const wire_key *b)
{
    return a->id == b->id && a->role == b->role &&
           a->prefix_len == b->prefix_len &&
           memcmp(a->prefix, b->prefix, a->prefix_len) == 0 &&
           memcmp(a->secret, b->secret, WIRE_SECRET_BYTES) == 0;
}

static void
roundtrip(const wire_keyring *kr)
{
    size_t n = wire_keyring_count(kr);
    char *text = malloc(n * WIRE_KEY_LINE_MAX + 1);
    size_t used = 0;
    if (text == NULL)
        abort();
    for (size_t i = 0; i < n; i++) {
        const wire_key *k = wire_keyring_at(kr, i);
        if (wire_keyring_find(kr, k->id) != k)
            abort();
        if (wire_key_format(k, text + used, WIRE_KEY_LINE_MAX) != SHOAL_OK)
            abort();
        used += strlen(text + used);
    }
    wire_keyring *again = NULL;
    char err[256];
    if (wire_keyring_parse(text, used, &again, err, sizeof(err)) != SHOAL_OK ||
        wire_keyring_count(again) != n)
        abort();
    for (size_t i = 0; i < n; i++)
        if (!same_key(wire_keyring_at(kr, i), wire_keyring_at(again, i)))
            abort();
    wire_keyring_free(again);
    free(text);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    wire_keyring *kr = NULL;
    char err[256];
    memset(err, 'x', sizeof(err));
    shoal_err rc =
        wire_keyring_parse((const char *) data, size, &kr, err, sizeof(err));
    if (rc != SHOAL_OK) {
        if (rc != SHOAL_EINVAL || kr != NULL ||
            memchr(err, 0, sizeof(err)) == NULL ||
            (strncmp(err, "line ", 5) != 0 && strncmp(err, "no keys", 7) != 0))
            abort();
        return 0;
    }
    if (kr == NULL || wire_keyring_count(kr) == 0)
        abort();
    roundtrip(kr);
    wire_keyring_free(kr);
    return 0;
}
