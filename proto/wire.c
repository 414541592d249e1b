/*
 * wire.c -- frames, sealing, key files and the replay window (see wire.h).
 *
 * Frame (all integers little-endian):
 *
 *   off  len  field
 *     0    2  "SH"
 *     2    1  version (WIRE_VERSION)
 *     3    1  flags (enum wire_flags; unknown bits are refused)
 *     4    4  key_id (0 iff WIRE_F_PLAIN)
 *     8   24  nonce: sender id (8) | counter (8) | unix ms (8)
 *    32    n  body: XChaCha20-Poly1305-IETF ciphertext + 16-byte tag, with
 *             bytes 0..31 as associated data; or, with WIRE_F_PLAIN, the
 *             plaintext itself
 *
 * Invariants: a header that wire_parse_hdr accepts has a known version, no
 * unknown flag bits, key_id == 0 exactly when it is plaintext, room for a
 * tag when it is sealed, and WIRE_F_ERROR only together with WIRE_F_PLAIN
 * and WIRE_F_RESPONSE. Since the whole header is authenticated, flipping
 * any bit of a sealed frame makes it fail with SHOAL_EINVAL (header checks)
 * or SHOAL_EAUTH (tag).
 *
 * Replay window: one entry per (key_id, sender id), taken from a pool of
 * max_senders entries allocated at open, so checking a frame never
 * allocates. Entries sit in a chained hash table (keyed SipHash, so an
 * authenticated client cannot pick colliding sender ids) and on an LRU list;
 * a new sender in a full table takes the least recently seen entry. Each
 * entry keeps the highest counter accepted (top) and a 1024-bit map whose
 * bit i says counter top - i was accepted.
 *
 * Forgetting a sender must not let its frames be replayed. So eviction
 * raises a floor, the newest frame time of any sender forgotten; a frame
 * from a sender the table does not know is refused unless it is newer than
 * the floor, and an entry made later keeps the floor of its making for its
 * own frames (its sender may be the one forgotten, whose old frames are not
 * in the new bitmap). With a table large enough that evicted senders are
 * older than window_ms the floor never bites; when the table churns it
 * refuses instead of accepting a replay. Floors are kept per key id (in
 * FLOOR_SLOTS slots, id mod slots), because a key holder may send times up
 * to window_ms ahead: one key's evicted senders could otherwise hold every
 * other key's new senders off for that long. Holders of the same key can
 * forge each other's frames anyway, so sharing a floor costs them nothing.
 *
 * The time check runs outside the lock, and so does the hash; inside it is
 * one lookup and a few word operations.
 */
#include "proto/wire.h"

#include "proto/bytes.h"
#include "proto/clock.h"
#include "proto/mem.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <sodium.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

_Static_assert(crypto_aead_xchacha20poly1305_ietf_NPUBBYTES == WIRE_NONCE_BYTES,
               "nonce size");
_Static_assert(crypto_aead_xchacha20poly1305_ietf_ABYTES == WIRE_TAG_BYTES,
               "tag size");
_Static_assert(crypto_aead_xchacha20poly1305_ietf_KEYBYTES == WIRE_SECRET_BYTES,
               "key size");

#define HDR_KEY_ID     4
#define HDR_NONCE      8
#define NONCE_COUNTER  8
#define NONCE_TIME     16
#define FLAGS_ALL      (WIRE_F_PLAIN | WIRE_F_RESPONSE | WIRE_F_ERROR | WIRE_F_PEER)
#define FLAGS_ERROR    (WIRE_F_PLAIN | WIRE_F_RESPONSE | WIRE_F_ERROR)
#define ERR_FRAME_LEN  (WIRE_HDR_BYTES + 4u)
#define KEYFILE_MAX    (16u << 20) /* bytes; a key line is ~100 */
#define WINDOW_BITS    1024u
#define WINDOW_WORDS   (WINDOW_BITS / 64u)
#define RP_NIL         UINT32_MAX
#define RP_MAX_SENDERS (1u << 30)
#define FLOOR_SLOTS    1024u /* a power of two */

static pthread_once_t sodium_once = PTHREAD_ONCE_INIT;

static void
sodium_start(void)
{
    int rc = sodium_init();
    SH_ASSERT(rc >= 0);
}

/* sodium_init once per process: it picks the fast implementations and
 * seeds randombytes. Cheap after the first call. */
static void
wire_ready(void)
{
    (void) pthread_once(&sodium_once, sodium_start);
}

/* ---- roles and keys ------------------------------------------------------
 */

const char *
wire_role_name(wire_role r)
{
    switch (r) {
    case WIRE_ROLE_READ:
        return "read";
    case WIRE_ROLE_WRITE:
        return "write";
    case WIRE_ROLE_ADMIN:
        return "admin";
    case WIRE_ROLE_PEER:
        return "peer";
    }
    return NULL;
}

static bool
role_valid(wire_role r)
{
    return wire_role_name(r) != NULL;
}

static shoal_err
role_parse_n(const char *s, size_t n, wire_role *out)
{
    static const wire_role all[] = {WIRE_ROLE_READ, WIRE_ROLE_WRITE,
                                    WIRE_ROLE_ADMIN, WIRE_ROLE_PEER};
    for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++) {
        const char *name = wire_role_name(all[i]);
        if (strlen(name) == n && memcmp(name, s, n) == 0) {
            *out = all[i];
            return SHOAL_OK;
        }
    }
    return SHOAL_EINVAL;
}

shoal_err
wire_role_parse(const char *s, wire_role *out)
{
    if (s == NULL || out == NULL)
        return SHOAL_EINVAL;
    return role_parse_n(s, strlen(s), out);
}

bool
wire_role_allows(wire_role have, wire_role need)
{
    if (!role_valid(have) || !role_valid(need))
        return false;
    if (have == WIRE_ROLE_PEER || need == WIRE_ROLE_PEER)
        return have == need;
    return have >= need;
}

bool
wire_key_covers(const wire_key *k, const uint8_t *key, size_t klen)
{
    if (k->prefix_len == 0)
        return true;
    if (key == NULL || klen < k->prefix_len)
        return false;
    return memcmp(key, k->prefix, k->prefix_len) == 0;
}

shoal_err
wire_key_generate(uint32_t id, wire_role role, const uint8_t *prefix,
                  size_t prefix_len, wire_key *out)
{
    if (id == 0 || !role_valid(role) || (prefix == NULL && prefix_len > 0))
        return SHOAL_EINVAL;
    if (prefix_len > WIRE_PREFIX_MAX)
        return SHOAL_ETOOLARGE;
    wire_ready();
    memset(out, 0, sizeof(*out));
    out->id = id;
    out->role = role;
    if (prefix_len > 0)
        memcpy(out->prefix, prefix, prefix_len);
    out->prefix_len = prefix_len;
    randombytes_buf(out->secret, sizeof(out->secret));
    return SHOAL_OK;
}

shoal_err
wire_key_format(const wire_key *k, char *buf, size_t buf_len)
{
    char prefix[2 * WIRE_PREFIX_MAX + 1];
    char secret[2 * WIRE_SECRET_BYTES + 1];
    const char *role = wire_role_name(k->role);

    if (role == NULL || k->id == 0 || k->prefix_len > WIRE_PREFIX_MAX)
        return SHOAL_EINVAL;
    sodium_bin2hex(prefix, sizeof(prefix), k->prefix, k->prefix_len);
    sodium_bin2hex(secret, sizeof(secret), k->secret, sizeof(k->secret));
    int n = snprintf(buf, buf_len, "key id=%" PRIu32 " role=%s%s%s secret=%s\n",
                     k->id, role, k->prefix_len > 0 ? " prefix=" : "", prefix,
                     secret);
    sodium_memzero(secret, sizeof(secret));
    if (n < 0 || (size_t) n >= buf_len) {
        if (buf_len > 0)
            sodium_memzero(buf, buf_len); /* no partial secret left behind */
        return SHOAL_ETOOLARGE;
    }
    return SHOAL_OK;
}

/* ---- key rings -------------------------------------------------------------
 *
 * Keys are kept in file order; by_id holds (id, index) sorted by id for
 * wire_keyring_find, which sits on the request path.
 */

typedef struct kr_ent {
    uint32_t id;
    uint32_t idx; /* into keys */
} kr_ent;

struct wire_keyring {
    wire_key *keys; /* file order; wiped on free and on growth */
    size_t n;
    size_t cap;
    kr_ent *by_id; /* n entries sorted by id */
};

typedef struct kr_parse {
    wire_keyring *kr;
    size_t *lines; /* file line of each key (cap entries) */
    size_t line;   /* current line, 1-based */
    char *err;
    size_t err_len;
} kr_parse;

static void __attribute__((format(printf, 3, 4)))
set_err(char *err, size_t err_len, const char *fmt, ...)
{
    if (err == NULL || err_len == 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    (void) vsnprintf(err, err_len, fmt, ap);
    va_end(ap);
}

/* "line N: " + message into p->err; always SHOAL_EINVAL. */
static shoal_err __attribute__((format(printf, 2, 3)))
line_err(kr_parse *p, const char *fmt, ...)
{
    if (p->err == NULL || p->err_len == 0)
        return SHOAL_EINVAL;
    int n = snprintf(p->err, p->err_len, "line %zu: ", p->line);
    if (n < 0 || (size_t) n >= p->err_len)
        return SHOAL_EINVAL;
    va_list ap;
    va_start(ap, fmt);
    (void) vsnprintf(p->err + n, p->err_len - (size_t) n, fmt, ap);
    va_end(ap);
    return SHOAL_EINVAL;
}

void
wire_keyring_free(wire_keyring *kr)
{
    if (kr == NULL)
        return;
    if (kr->keys != NULL)
        sodium_memzero(kr->keys, kr->cap * sizeof(*kr->keys));
    mem_free(kr->keys);
    mem_free(kr->by_id);
    mem_free(kr);
}

/* Grow keys (and the parallel lines array) by copying, never realloc, so
 * the old block can be wiped before it is freed. */
static shoal_err
kr_grow(kr_parse *p)
{
    wire_keyring *kr = p->kr;
    size_t cap = kr->cap == 0 ? 4 : kr->cap * 2;
    if (cap > UINT32_MAX || cap > SIZE_MAX / sizeof(wire_key))
        return SHOAL_ETOOLARGE;
    wire_key *keys = mem_calloc(cap, sizeof(*keys));
    size_t *lines = mem_calloc(cap, sizeof(*lines));
    if (keys == NULL || lines == NULL) {
        mem_free(keys);
        mem_free(lines);
        return SHOAL_ENOMEM;
    }
    if (kr->n > 0) {
        memcpy(keys, kr->keys, kr->n * sizeof(*keys));
        memcpy(lines, p->lines, kr->n * sizeof(*lines));
    }
    if (kr->keys != NULL)
        sodium_memzero(kr->keys, kr->cap * sizeof(*kr->keys));
    mem_free(kr->keys);
    mem_free(p->lines);
    kr->keys = keys;
    p->lines = lines;
    kr->cap = cap;
    return SHOAL_OK;
}

static bool
is_blank(char c)
{
    return c == ' ' || c == '\t';
}

/* Next whitespace-separated token of s[*pos..n); false at the end. */
static bool
next_token(const char *s, size_t n, size_t *pos, const char **tok,
           size_t *tok_len)
{
    size_t i = *pos;
    while (i < n && is_blank(s[i]))
        i++;
    if (i == n)
        return false;
    size_t start = i;
    while (i < n && !is_blank(s[i]))
        i++;
    *tok = s + start;
    *tok_len = i - start;
    *pos = i;
    return true;
}

static bool
tok_is(const char *tok, size_t len, const char *word)
{
    return strlen(word) == len && memcmp(tok, word, len) == 0;
}

/* Decimal 1..UINT32_MAX, digits only. */
static bool
parse_id(const char *s, size_t n, uint32_t *out)
{
    uint64_t v = 0;
    if (n == 0 || n > 10)
        return false;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
        v = v * 10 + (uint64_t) (s[i] - '0');
    }
    if (v == 0 || v > UINT32_MAX)
        return false;
    *out = (uint32_t) v;
    return true;
}

/* Exactly n hex characters into n / 2 bytes, at most cap (constant time:
 * secrets go through here). */
static bool
parse_hex(const char *s, size_t n, uint8_t *out, size_t cap, size_t *out_len)
{
    size_t got = 0;
    if (n % 2 != 0 || n / 2 > cap)
        return false;
    if (n == 0) {
        *out_len = 0;
        return true;
    }
    if (sodium_hex2bin(out, cap, s, n, NULL, &got, NULL) != 0 || got != n / 2)
        return false;
    *out_len = got;
    return true;
}

enum { F_ID = 1, F_ROLE = 2, F_PREFIX = 4, F_SECRET = 8 };

static int
field_bit(const char *name, size_t n)
{
    if (tok_is(name, n, "id"))
        return F_ID;
    if (tok_is(name, n, "role"))
        return F_ROLE;
    if (tok_is(name, n, "prefix"))
        return F_PREFIX;
    if (tok_is(name, n, "secret"))
        return F_SECRET;
    return 0;
}

static shoal_err
parse_value(kr_parse *p, int field, const char *v, size_t vn, wire_key *k)
{
    size_t got = 0;
    switch (field) {
    case F_ID:
        if (!parse_id(v, vn, &k->id))
            return line_err(p, "id must be a number in 1..4294967295");
        return SHOAL_OK;
    case F_ROLE:
        if (role_parse_n(v, vn, &k->role) != SHOAL_OK)
            return line_err(p, "role must be read, write, admin or peer");
        return SHOAL_OK;
    case F_PREFIX:
        if (!parse_hex(v, vn, k->prefix, sizeof(k->prefix), &got))
            return line_err(p, "prefix must be hex, at most %d bytes",
                            WIRE_PREFIX_MAX);
        k->prefix_len = got;
        return SHOAL_OK;
    default:
        if (vn != 2 * WIRE_SECRET_BYTES ||
            !parse_hex(v, vn, k->secret, sizeof(k->secret), &got))
            return line_err(p, "secret must be %d hex characters",
                            2 * WIRE_SECRET_BYTES);
        return SHOAL_OK;
    }
}

/* One "name=value" token into k; *seen collects the fields given. */
static shoal_err
parse_field(kr_parse *p, const char *tok, size_t n, int *seen, wire_key *k)
{
    const char *eq = memchr(tok, '=', n);
    if (eq == NULL)
        return line_err(p, "'%.*s' is not name=value", n > 32 ? 32 : (int) n,
                        tok);
    size_t name_len = (size_t) (eq - tok);
    int field = field_bit(tok, name_len);
    if (field == 0)
        return line_err(p, "unknown field '%.*s'",
                        name_len > 32 ? 32 : (int) name_len, tok);
    if (*seen & field)
        return line_err(p, "field '%.*s' given twice", (int) name_len, tok);
    *seen |= field;
    return parse_value(p, field, eq + 1, n - name_len - 1, k);
}

static shoal_err
check_chars(kr_parse *p, const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char) s[i];
        if ((c < 0x20 && c != '\t') || c == 0x7f)
            return line_err(p, "control character 0x%02x", c);
    }
    return SHOAL_OK;
}

static shoal_err
add_key(kr_parse *p, const wire_key *k)
{
    wire_keyring *kr = p->kr;
    shoal_err rc;
    if (kr->n == kr->cap && (rc = kr_grow(p)) != SHOAL_OK)
        return rc == SHOAL_ENOMEM ? rc : line_err(p, "too many keys");
    kr->keys[kr->n] = *k;
    p->lines[kr->n] = p->line;
    kr->n++;
    return SHOAL_OK;
}

/* The fields of a "key" line (after the word key) into k. */
static shoal_err
parse_fields(kr_parse *p, const char *s, size_t n, size_t pos, wire_key *k)
{
    const char *tok;
    size_t tn;
    int seen = 0;
    shoal_err rc;
    while (next_token(s, n, &pos, &tok, &tn) && tok[0] != '#') {
        if ((rc = parse_field(p, tok, tn, &seen, k)) != SHOAL_OK)
            return rc;
    }
    if (!(seen & F_ID))
        return line_err(p, "missing id=");
    if (!(seen & F_ROLE))
        return line_err(p, "missing role=");
    if (!(seen & F_SECRET))
        return line_err(p, "missing secret=");
    return SHOAL_OK;
}

static shoal_err
parse_line(kr_parse *p, const char *s, size_t n)
{
    const char *tok;
    size_t tn, pos = 0;
    wire_key k;
    shoal_err rc;

    if (n > 0 && s[n - 1] == '\r')
        n--;
    if ((rc = check_chars(p, s, n)) != SHOAL_OK)
        return rc;
    if (!next_token(s, n, &pos, &tok, &tn) || tok[0] == '#')
        return SHOAL_OK; /* blank or comment */
    if (!tok_is(tok, tn, "key"))
        return line_err(p, "expected 'key', got '%.*s'",
                        tn > 32 ? 32 : (int) tn, tok);
    memset(&k, 0, sizeof(k));
    rc = parse_fields(p, s, n, pos, &k);
    if (rc == SHOAL_OK)
        rc = add_key(p, &k);
    sodium_memzero(&k, sizeof(k));
    return rc;
}

static int
ent_cmp(const void *a, const void *b)
{
    const kr_ent *x = a, *y = b;
    if (x->id != y->id)
        return x->id < y->id ? -1 : 1;
    return x->idx < y->idx ? -1 : (x->idx > y->idx);
}

/* Sort the id index; report the earliest line that repeats an id. */
static shoal_err
build_index(kr_parse *p)
{
    wire_keyring *kr = p->kr;
    kr->by_id = mem_calloc(kr->n, sizeof(*kr->by_id));
    if (kr->by_id == NULL)
        return SHOAL_ENOMEM;
    for (size_t i = 0; i < kr->n; i++)
        kr->by_id[i] = (kr_ent){.id = kr->keys[i].id, .idx = (uint32_t) i};
    qsort(kr->by_id, kr->n, sizeof(*kr->by_id), ent_cmp);
    size_t dup = SIZE_MAX, first = 0;
    for (size_t i = 1; i < kr->n; i++) {
        if (kr->by_id[i].id != kr->by_id[i - 1].id)
            continue;
        size_t later = p->lines[kr->by_id[i].idx];
        if (dup == SIZE_MAX || later < p->lines[dup]) {
            dup = kr->by_id[i].idx;
            first = p->lines[kr->by_id[i - 1].idx];
        }
    }
    if (dup == SIZE_MAX)
        return SHOAL_OK;
    p->line = p->lines[dup];
    return line_err(p, "duplicate key id %" PRIu32 " (also on line %zu)",
                    kr->keys[dup].id, first);
}

static shoal_err
parse_text(kr_parse *p, const char *text, size_t len)
{
    size_t pos = 0;
    shoal_err rc;
    while (pos < len) {
        const char *nl = memchr(text + pos, '\n', len - pos);
        size_t end = nl != NULL ? (size_t) (nl - text) : len;
        p->line++;
        if ((rc = parse_line(p, text + pos, end - pos)) != SHOAL_OK)
            return rc;
        pos = end + 1;
    }
    if (p->kr->n == 0) {
        set_err(p->err, p->err_len,
                "no keys (every line is blank or a "
                "comment)");
        return SHOAL_EINVAL;
    }
    return build_index(p);
}

shoal_err
wire_keyring_parse(const char *text, size_t len, wire_keyring **out, char *err,
                   size_t err_len)
{
    kr_parse p = {.err = err, .err_len = err_len};
    shoal_err rc;

    *out = NULL;
    set_err(err, err_len, "%s", "");
    if (text == NULL && len > 0)
        return SHOAL_EINVAL;
    wire_ready();
    p.kr = mem_calloc(1, sizeof(*p.kr));
    if (p.kr == NULL)
        return SHOAL_ENOMEM;
    rc = parse_text(&p, text, len);
    mem_free(p.lines);
    if (rc != SHOAL_OK) {
        if (rc == SHOAL_ENOMEM)
            set_err(err, err_len, "out of memory");
        wire_keyring_free(p.kr);
        return rc;
    }
    *out = p.kr;
    return SHOAL_OK;
}

/* Refuse anything but a regular file of ours that only we can read. */
static shoal_err
check_mode(int fd, const char *path, size_t *size, char *err, size_t err_len)
{
    struct stat st;
    if (fstat(fd, &st) != 0) {
        set_err(err, err_len, "stat %s: %s", path, strerror(errno));
        return SHOAL_EIO;
    }
    if (!S_ISREG(st.st_mode)) {
        set_err(err, err_len, "%s: not a regular file", path);
        return SHOAL_EPERM;
    }
    if (st.st_uid != geteuid()) {
        set_err(err, err_len, "%s: owned by uid %u, not by this user (uid %u)",
                path, (unsigned) st.st_uid, (unsigned) geteuid());
        return SHOAL_EPERM;
    }
    if ((st.st_mode & 077) != 0) {
        set_err(err, err_len,
                "%s: mode %04o lets group or others at the secrets; "
                "run chmod 600 %s",
                path, (unsigned) (st.st_mode & 07777), path);
        return SHOAL_EPERM;
    }
    if (st.st_size < 0 || (uint64_t) st.st_size > KEYFILE_MAX) {
        set_err(err, err_len, "%s: larger than %u bytes", path, KEYFILE_MAX);
        return SHOAL_EINVAL;
    }
    *size = (size_t) st.st_size;
    return SHOAL_OK;
}

/* Read the whole file (size bytes by fstat) into a fresh buffer. */
static shoal_err
read_all(int fd, const char *path, size_t size, char **buf_out, size_t *len_out,
         char *err, size_t err_len)
{
    size_t cap = size + 1, len = 0;
    char *buf = mem_alloc(cap);
    if (buf == NULL) {
        set_err(err, err_len, "%s: out of memory", path);
        return SHOAL_ENOMEM;
    }
    while (len < cap) {
        ssize_t n = read(fd, buf + len, cap - len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            set_err(err, err_len, "read %s: %s", path, strerror(errno));
            sodium_memzero(buf, cap);
            mem_free(buf);
            return SHOAL_EIO;
        }
        if (n == 0)
            break;
        len += (size_t) n;
    }
    if (len == cap) {
        set_err(err, err_len, "read %s: file grew while reading", path);
        sodium_memzero(buf, cap);
        mem_free(buf);
        return SHOAL_EIO;
    }
    *buf_out = buf;
    *len_out = len;
    return SHOAL_OK;
}

shoal_err
wire_keyring_load(const char *path, wire_keyring **out, char *err,
                  size_t err_len)
{
    char *buf = NULL, msg[256];
    size_t size = 0, len = 0;
    shoal_err rc;

    *out = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        set_err(err, err_len, "open %s: %s", path, strerror(errno));
        return SHOAL_EIO;
    }
    rc = check_mode(fd, path, &size, err, err_len);
    if (rc == SHOAL_OK)
        rc = read_all(fd, path, size, &buf, &len, err, err_len);
    close(fd);
    if (rc != SHOAL_OK)
        return rc;
    rc = wire_keyring_parse(buf, len, out, msg, sizeof(msg));
    if (rc != SHOAL_OK)
        set_err(err, err_len, "%s: %s", path, msg);
    sodium_memzero(buf, len);
    mem_free(buf);
    return rc;
}

const wire_key *
wire_keyring_find(const wire_keyring *kr, uint32_t id)
{
    size_t lo = 0, hi = kr->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (kr->by_id[mid].id < id)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (lo < kr->n && kr->by_id[lo].id == id)
        return &kr->keys[kr->by_id[lo].idx];
    return NULL;
}

size_t
wire_keyring_count(const wire_keyring *kr)
{
    return kr->n;
}

const wire_key *
wire_keyring_at(const wire_keyring *kr, size_t i)
{
    return i < kr->n ? &kr->keys[i] : NULL;
}

/* ---- frames ----------------------------------------------------------------
 */

void
wire_sender_init(wire_sender *s)
{
    wire_ready();
    randombytes_buf(s->id, sizeof(s->id));
    atomic_store(&s->counter, 1);
}

size_t
wire_frame_len(size_t body_len, bool sealed)
{
    size_t extra = WIRE_HDR_BYTES + (sealed ? WIRE_TAG_BYTES : 0u);
    return body_len > SIZE_MAX - extra ? SIZE_MAX : body_len + extra;
}

static void
put_hdr(uint8_t *out, uint8_t flags, uint32_t key_id)
{
    out[0] = 'S';
    out[1] = 'H';
    out[2] = WIRE_VERSION;
    out[3] = flags;
    put_u32(out + HDR_KEY_ID, key_id);
}

static void
draw_nonce(wire_sender *s, uint8_t *nonce)
{
    memcpy(nonce, s->id, sizeof(s->id));
    put_u64(nonce + NONCE_COUNTER,
            atomic_fetch_add_explicit(&s->counter, 1, memory_order_relaxed));
    put_u64(nonce + NONCE_TIME, clock_now_ms());
}

shoal_err
wire_seal(wire_sender *s, const wire_key *k, uint8_t flags, const uint8_t *body,
          size_t body_len, uint8_t *out, size_t out_cap, size_t *out_len,
          uint8_t nonce_out[WIRE_NONCE_BYTES])
{
    size_t need = wire_frame_len(body_len, k != NULL);
    unsigned long long clen = 0;

    if (s == NULL || out == NULL || (body == NULL && body_len > 0))
        return SHOAL_EINVAL;
    if ((flags & ~FLAGS_ALL) != 0 || (flags & WIRE_F_ERROR) != 0)
        return SHOAL_EINVAL; /* error frames: wire_error_frame */
    if (k != NULL && (flags & WIRE_F_PLAIN) != 0)
        return SHOAL_EINVAL;
    if (k != NULL && k->id == 0)
        return SHOAL_EINVAL;
    if (need == SIZE_MAX || out_cap < need ||
        body_len > crypto_aead_xchacha20poly1305_ietf_MESSAGEBYTES_MAX)
        return SHOAL_ETOOLARGE;
    put_hdr(out, k == NULL ? (uint8_t) (flags | WIRE_F_PLAIN) : flags,
            k == NULL ? 0 : k->id);
    draw_nonce(s, out + HDR_NONCE);
    if (nonce_out != NULL)
        memcpy(nonce_out, out + HDR_NONCE, WIRE_NONCE_BYTES);
    if (k == NULL) {
        if (body_len > 0)
            memmove(out + WIRE_HDR_BYTES, body, body_len);
    } else {
        wire_ready();
        crypto_aead_xchacha20poly1305_ietf_encrypt(
            out + WIRE_HDR_BYTES, &clen, body, body_len, out, WIRE_HDR_BYTES,
            NULL, out + HDR_NONCE, k->secret);
    }
    if (out_len != NULL)
        *out_len = need;
    return SHOAL_OK;
}

shoal_err
wire_parse_hdr(const uint8_t *frame, size_t len, wire_hdr *out)
{
    if (frame == NULL || len < WIRE_HDR_BYTES)
        return SHOAL_EINVAL;
    if (frame[0] != 'S' || frame[1] != 'H' || frame[2] != WIRE_VERSION)
        return SHOAL_EINVAL;
    uint8_t flags = frame[3];
    uint32_t key_id = get_u32(frame + HDR_KEY_ID);
    if ((flags & ~FLAGS_ALL) != 0)
        return SHOAL_EINVAL;
    if ((flags & WIRE_F_ERROR) && (flags & FLAGS_ERROR) != FLAGS_ERROR)
        return SHOAL_EINVAL;
    if (flags & WIRE_F_PLAIN) {
        if (key_id != 0)
            return SHOAL_EINVAL;
    } else if (key_id == 0 || len < WIRE_HDR_BYTES + WIRE_TAG_BYTES) {
        return SHOAL_EINVAL;
    }
    if (out != NULL) {
        out->version = frame[2];
        out->flags = flags;
        out->key_id = key_id;
        memcpy(out->nonce, frame + HDR_NONCE, WIRE_NONCE_BYTES);
    }
    return SHOAL_OK;
}

shoal_err
wire_open(const wire_key *k, uint8_t *frame, size_t len, size_t *body_len_out)
{
    wire_hdr h;
    unsigned long long mlen = 0;
    shoal_err rc;

    if (k == NULL)
        return SHOAL_EINVAL;
    if ((rc = wire_parse_hdr(frame, len, &h)) != SHOAL_OK)
        return rc;
    if (h.flags & WIRE_F_PLAIN)
        return SHOAL_EINVAL;
    if (h.key_id != k->id)
        return SHOAL_EAUTH;
    wire_ready();
    /* In place: libsodium verifies the tag before it writes the plaintext,
     * and zeroes the body when the tag is wrong. */
    if (crypto_aead_xchacha20poly1305_ietf_decrypt(
            frame + WIRE_HDR_BYTES, &mlen, NULL, frame + WIRE_HDR_BYTES,
            len - WIRE_HDR_BYTES, frame, WIRE_HDR_BYTES, frame + HDR_NONCE,
            k->secret) != 0)
        return SHOAL_EAUTH;
    if (body_len_out != NULL)
        *body_len_out = (size_t) mlen;
    return SHOAL_OK;
}

shoal_err
wire_open_plain(const uint8_t *frame, size_t len, const uint8_t **body_out,
                size_t *body_len_out)
{
    wire_hdr h;
    shoal_err rc;
    if ((rc = wire_parse_hdr(frame, len, &h)) != SHOAL_OK)
        return rc;
    if (!(h.flags & WIRE_F_PLAIN))
        return SHOAL_EINVAL;
    if (body_out != NULL)
        *body_out = frame + WIRE_HDR_BYTES;
    if (body_len_out != NULL)
        *body_len_out = len - WIRE_HDR_BYTES;
    return SHOAL_OK;
}

/* A status an error frame may carry: a known code other than OK. */
static bool
error_status_valid(uint32_t v)
{
    switch (v) {
#define WIRE_ERR_CASE_(name, val, msg) case val:
        SHOAL_ERR_MAP(WIRE_ERR_CASE_)
#undef WIRE_ERR_CASE_
        return v != 0;
    default:
        return false;
    }
}

shoal_err
wire_error_frame(shoal_err status, uint8_t *out, size_t out_cap,
                 size_t *out_len)
{
    if (out == NULL || !error_status_valid((uint32_t) status))
        return SHOAL_EINVAL;
    if (out_cap < ERR_FRAME_LEN)
        return SHOAL_ETOOLARGE;
    memset(out, 0, ERR_FRAME_LEN);
    put_hdr(out, FLAGS_ERROR, 0);
    put_u32(out + WIRE_HDR_BYTES, (uint32_t) status);
    if (out_len != NULL)
        *out_len = ERR_FRAME_LEN;
    return SHOAL_OK;
}

shoal_err
wire_error_status(const uint8_t *frame, size_t len, shoal_err *status_out)
{
    wire_hdr h;
    shoal_err rc;
    if ((rc = wire_parse_hdr(frame, len, &h)) != SHOAL_OK)
        return rc;
    if (!(h.flags & WIRE_F_ERROR) || len != ERR_FRAME_LEN)
        return SHOAL_EINVAL;
    uint32_t v = get_u32(frame + WIRE_HDR_BYTES);
    if (!error_status_valid(v))
        return SHOAL_EINVAL;
    if (status_out != NULL)
        *status_out = (shoal_err) v;
    return SHOAL_OK;
}

/* ---- replay window ---------------------------------------------------------
 */

typedef struct rp_ent {
    uint32_t key_id;
    uint8_t sender[8];
    uint32_t bucket;             /* hash bucket it is chained in */
    uint32_t hnext;              /* next in the bucket chain, RP_NIL */
    uint32_t newer;              /* LRU neighbour toward the head */
    uint32_t older;              /* LRU neighbour toward the tail */
    uint64_t top;                /* highest counter accepted */
    uint64_t top_ms;             /* newest frame time accepted (unix ms) */
    uint64_t floor_ms;           /* its key's floor when made: frames no
                                    newer may be an earlier incarnation's */
    uint64_t seen[WINDOW_WORDS]; /* bit i: counter top - i accepted */
} rp_ent;

struct wire_replay {
    pthread_mutex_t mu; /* guards every field below but refused */
    rp_ent *ents;       /* pool of max_senders entries */
    uint32_t max_senders;
    uint32_t n_used;              /* entries of the pool handed out */
    uint32_t *buckets;            /* heads of chains, RP_NIL if empty */
    uint32_t mask;                /* buckets - 1 (a power of two minus one) */
    uint32_t head;                /* most recently seen, RP_NIL if none */
    uint32_t tail;                /* least recently seen (evicted first) */
    uint64_t floors[FLOOR_SLOTS]; /* per key id mod FLOOR_SLOTS: newest
                                     frame time of any sender evicted */
    uint32_t window_ms; /* accepted |frame time - now| (set at open) */
    uint8_t hash_key[crypto_shorthash_KEYBYTES]; /* set at open */
    _Atomic uint64_t refused;                    /* frames refused */
};

shoal_err
wire_replay_open(size_t max_senders, uint32_t window_ms, wire_replay **out)
{
    *out = NULL;
    if (max_senders == 0 || window_ms == 0)
        return SHOAL_EINVAL;
    if (max_senders > RP_MAX_SENDERS)
        return SHOAL_ETOOLARGE;
    size_t nb = 16;
    while (nb < 2 * max_senders)
        nb *= 2;
    wire_ready();
    wire_replay *r = mem_calloc(1, sizeof(*r));
    if (r == NULL)
        return SHOAL_ENOMEM;
    r->ents = mem_calloc(max_senders, sizeof(*r->ents));
    r->buckets = mem_alloc(nb * sizeof(*r->buckets));
    if (r->ents == NULL || r->buckets == NULL) {
        mem_free(r->ents);
        mem_free(r->buckets);
        mem_free(r);
        return SHOAL_ENOMEM;
    }
    memset(r->buckets, 0xff, nb * sizeof(*r->buckets)); /* all RP_NIL */
    r->max_senders = (uint32_t) max_senders;
    r->mask = (uint32_t) (nb - 1);
    r->head = r->tail = RP_NIL;
    r->window_ms = window_ms;
    randombytes_buf(r->hash_key, sizeof(r->hash_key));
    atomic_init(&r->refused, 0);
    pthread_mutex_init(&r->mu, NULL);
    *out = r;
    return SHOAL_OK;
}

void
wire_replay_close(wire_replay *r)
{
    if (r == NULL)
        return;
    pthread_mutex_destroy(&r->mu);
    mem_free(r->ents);
    mem_free(r->buckets);
    mem_free(r);
}

uint64_t
wire_replay_refused(const wire_replay *r)
{
    return atomic_load(&((wire_replay *) r)->refused);
}

static void
lru_unlink(wire_replay *r, uint32_t i)
{
    rp_ent *e = &r->ents[i];
    if (e->newer != RP_NIL)
        r->ents[e->newer].older = e->older;
    else
        r->head = e->older;
    if (e->older != RP_NIL)
        r->ents[e->older].newer = e->newer;
    else
        r->tail = e->newer;
}

static void
lru_push_head(wire_replay *r, uint32_t i)
{
    rp_ent *e = &r->ents[i];
    e->newer = RP_NIL;
    e->older = r->head;
    if (r->head != RP_NIL)
        r->ents[r->head].newer = i;
    r->head = i;
    if (r->tail == RP_NIL)
        r->tail = i;
}

static void
chain_unlink(wire_replay *r, uint32_t i)
{
    uint32_t *link = &r->buckets[r->ents[i].bucket];
    while (*link != i)
        link = &r->ents[*link].hnext;
    *link = r->ents[i].hnext;
}

/* A free entry: a fresh one from the pool, or the least recently seen,
 * whose newest frame time then raises its key's floor. */
static uint32_t
take_entry(wire_replay *r)
{
    if (r->n_used < r->max_senders)
        return r->n_used++;
    uint32_t i = r->tail;
    rp_ent *e = &r->ents[i];
    uint64_t *key_floor = &r->floors[e->key_id & (FLOOR_SLOTS - 1)];
    if (e->top_ms > *key_floor)
        *key_floor = e->top_ms;
    chain_unlink(r, i);
    lru_unlink(r, i);
    return i;
}

static uint32_t
lookup(const wire_replay *r, uint32_t b, uint32_t key_id, const uint8_t *sender)
{
    uint32_t i = r->buckets[b];
    while (i != RP_NIL) {
        const rp_ent *e = &r->ents[i];
        if (e->key_id == key_id && memcmp(e->sender, sender, 8) == 0)
            return i;
        i = e->hnext;
    }
    return RP_NIL;
}

/* Shift the window toward older counters by d (top rises by d). */
static void
window_shift(uint64_t *seen, uint64_t d)
{
    if (d >= WINDOW_BITS) {
        memset(seen, 0, WINDOW_WORDS * sizeof(*seen));
        return;
    }
    unsigned ws = (unsigned) (d / 64), bs = (unsigned) (d % 64);
    for (unsigned w = WINDOW_WORDS; w-- > 0;) {
        uint64_t v = 0;
        if (w >= ws) {
            v = seen[w - ws] << bs;
            if (bs != 0 && w > ws)
                v |= seen[w - ws - 1] >> (64 - bs);
        }
        seen[w] = v;
    }
}

static bool
window_accept(rp_ent *e, uint64_t ctr, uint64_t ts)
{
    if (ctr > e->top) {
        window_shift(e->seen, ctr - e->top);
        e->seen[0] |= 1;
        e->top = ctr;
    } else {
        uint64_t d = e->top - ctr;
        if (d >= WINDOW_BITS)
            return false; /* older than the window */
        uint64_t bit = (uint64_t) 1 << (d % 64);
        if (e->seen[d / 64] & bit)
            return false; /* seen before */
        e->seen[d / 64] |= bit;
    }
    if (ts > e->top_ms)
        e->top_ms = ts;
    return true;
}

/* Under r->mu. */
static bool
record(wire_replay *r, uint32_t b, uint32_t key_id, const uint8_t *sender,
       uint64_t ctr, uint64_t ts)
{
    uint32_t i = lookup(r, b, key_id, sender);
    if (i != RP_NIL) {
        if (ts <= r->ents[i].floor_ms || !window_accept(&r->ents[i], ctr, ts))
            return false;
        lru_unlink(r, i);
        lru_push_head(r, i);
        return true;
    }
    uint64_t key_floor = r->floors[key_id & (FLOOR_SLOTS - 1)];
    if (ts <= key_floor)
        return false; /* could be a forgotten sender's frame */
    i = take_entry(r);
    rp_ent *e = &r->ents[i];
    memset(e, 0, sizeof(*e));
    e->key_id = key_id;
    memcpy(e->sender, sender, 8);
    e->bucket = b;
    e->hnext = r->buckets[b];
    r->buckets[b] = i;
    e->top = ctr;
    e->top_ms = ts;
    e->floor_ms = key_floor;
    e->seen[0] = 1;
    lru_push_head(r, i);
    return true;
}

static shoal_err
refuse(wire_replay *r)
{
    atomic_fetch_add_explicit(&r->refused, 1, memory_order_relaxed);
    return SHOAL_EAUTH;
}

shoal_err
wire_replay_check(wire_replay *r, const wire_hdr *hdr, uint64_t now_ms)
{
    const uint8_t *sender = hdr->nonce;
    uint64_t ctr = get_u64(hdr->nonce + NONCE_COUNTER);
    uint64_t ts = get_u64(hdr->nonce + NONCE_TIME);
    uint64_t skew = ts > now_ms ? ts - now_ms : now_ms - ts;
    if (skew > r->window_ms)
        return refuse(r);

    uint8_t id[12], h[crypto_shorthash_BYTES];
    put_u32(id, hdr->key_id);
    memcpy(id + 4, sender, 8);
    crypto_shorthash(h, id, sizeof(id), r->hash_key);
    uint32_t b = (uint32_t) get_u64(h) & r->mask;

    pthread_mutex_lock(&r->mu);
    bool ok = record(r, b, hdr->key_id, sender, ctr, ts);
    pthread_mutex_unlock(&r->mu);
    return ok ? SHOAL_OK : refuse(r);
}
