/*
 * ledger.c -- shoal-ledger: an acknowledged-write ledger for black-box
 * durability tests (TESTING.md G2: "no acknowledged write is lost").
 *
 *   shoal-ledger write --seeds URL[,URL..] --key-file F --ledger FILE
 *                [--threads 4] [--seconds N | --count N] [--prefix P]
 *                [--w W] [--timeout-ms 2000] [-v]
 *   shoal-ledger check --seeds URL[,URL..] --key-file F --ledger FILE
 *                [--threads 4] [--read-any] [--timeout-ms 2000]
 *                [--tries 3] [-v]
 *
 * write: threads put unique keys (P "t" thread "-" counter) whose values are
 * a pure function of the key, through libshoal. After each put answered
 * SHOAL_OK it appends one line to the ledger,
 *
 *   key <TAB> version <TAB> fnv1a64(value) as 16 hex digits <LF>
 *
 * with one write(2) on an O_APPEND descriptor: the line reaches the kernel
 * before the next put starts, so a SIGKILL of the writer never loses an
 * acknowledged line already written, and no line is written for a put that
 * was not acknowledged. Failed puts are counted, never ledgered:
 * "unknown" when the put may have taken effect (SHOAL_ETIMEOUT, SHOAL_EIO),
 * "failed" when it did not (SHOAL_EUNAVAILABLE and every other error). The
 * writer keeps going across errors until the time or count is done, prints
 * "acked=N failed=N unknown=N" and exits 0 (1 when it could not start, 2 for
 * bad usage). SIGINT/SIGTERM end the run early, with the summary.
 *
 * check: reads every ledgered key back (each key tried up to --tries times,
 * default 3, each try with the --timeout-ms deadline, while the answer is
 * an error other than SHOAL_ENOTFOUND; with --read-any SHOAL_ENOTFOUND too,
 * as the replica asked may lag and libshoal picks another for the next
 * try) and compares the value with the one the
 * key derives, and with the ledgered hash. Prints
 * "checked=N lost=N mismatched=N unreadable=N" (lost: SHOAL_ENOTFOUND;
 * unreadable: every try failed otherwise) and the first few lost keys.
 * Exit 0 when every key was read back equal, 3 when a key is lost or
 * mismatched, 4 when only reads failed or the ledger is empty (nothing
 * proven either way), 1 when it could not start, 2 for bad usage or a
 * malformed ledger. A final line
 * without its newline (the writer killed inside write(2)) is skipped with a
 * note: it is not evidence of an acknowledged write.
 *
 * --insecure instead of --key-file talks plaintext (a node started
 * --insecure). Results are printed and flushed before the handle is
 * closed; a shoal_close that does not return in 10 s is reported on stderr
 * ("shoal_close did not return") and the process exits without it.
 */
#include <shoal.h>

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define LEDGER_MAX_SEEDS   64
#define LEDGER_MAX_THREADS 256
#define LEDGER_KEY_MAX     512
#define LEDGER_VAL_MAX     (LEDGER_KEY_MAX + 256)
#define LEDGER_SHOW_MAX    10 /* lost/mismatched keys printed */

enum { EXIT_START = 1, EXIT_USAGE = 2, EXIT_LOST = 3, EXIT_UNREAD = 4 };

static const char usage_text[] =
    "usage: shoal-ledger write --seeds URL[,URL..] [--key-file F] --ledger "
    "FILE\n"
    "                    [--threads 4] [--seconds N | --count N] [--prefix "
    "P]\n"
    "                    [--w W] [--timeout-ms 2000] [-v]\n"
    "       shoal-ledger check --seeds URL[,URL..] [--key-file F] --ledger "
    "FILE\n"
    "                    [--threads 4] [--read-any] [--timeout-ms 2000] "
    "[--tries 3]\n"
    "                    [-v]\n"
    "Either --key-file F (a client key) or --insecure (plaintext nodes).\n"
    "write: put unique keys, append \"key\\tversion\\thash\\n\" to FILE per\n"
    "acknowledged put; prints acked=N failed=N unknown=N.\n"
    "check: read every ledgered key back; prints checked=N lost=N "
    "mismatched=N\n"
    "unreadable=N; exit 0 all present and equal, 3 lost or mismatched, 4 "
    "reads\n"
    "failed or an empty ledger.\n";

typedef struct args {
    bool is_write;
    const char *seeds[LEDGER_MAX_SEEDS];
    size_t n_seeds;
    char *seeds_buf; /* strdup of --seeds, split in place */
    const char *key_file;
    const char *ledger;
    const char *prefix;
    uint32_t threads;
    uint64_t seconds;
    uint64_t count; /* 0: until seconds */
    uint32_t w;
    uint32_t timeout_ms;
    uint32_t tries; /* check: reads per key before "unreadable" */
    bool insecure;  /* plaintext instead of key_file */
    bool read_any;
    bool verbose;
} args;

static volatile sig_atomic_t stop_flag;
static volatile sig_atomic_t close_exit_code; /* exit code if close hangs */

static void
on_signal(int sig)
{
    (void) sig;
    stop_flag = 1;
}

static uint64_t
now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t) ts.tv_sec * 1000u + (uint64_t) ts.tv_nsec / 1000000u;
}

static void
sleep_ms(unsigned ms)
{
    struct timespec ts = {.tv_sec = ms / 1000,
                          .tv_nsec = (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR && !stop_flag)
        ;
}

static uint64_t
fnv1a64(const void *p, size_t n)
{
    const uint8_t *b = p;
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i++) {
        h ^= b[i];
        h *= 0x100000001b3ull;
    }
    return h;
}

static uint64_t
splitmix64(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* The value of key: "key=" then 16..143 pseudo-random hex digits seeded by
 * the key, so check needs nothing but the key to know what to expect. */
static size_t
value_of(const char *key, size_t klen, char *out, size_t cap)
{
    static const char hex[] = "0123456789abcdef";
    uint64_t s = fnv1a64(key, klen);
    size_t n = 16 + (size_t) (splitmix64(&s) % 128);
    if (klen + 1 + n > cap)
        n = cap - klen - 1;
    memcpy(out, key, klen);
    out[klen] = '=';
    for (size_t i = 0; i < n; i++)
        out[klen + 1 + i] = hex[splitmix64(&s) & 15];
    return klen + 1 + n;
}

/* ---- arguments ----------------------------------------------------------
 */

static bool
parse_u64(const char *s, uint64_t min, uint64_t max, uint64_t *out)
{
    if (s == NULL || s[0] < '0' || s[0] > '9')
        return false;
    char *end = NULL;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno != 0 || *end != '\0' || v < min || v > max)
        return false;
    *out = (uint64_t) v;
    return true;
}

__attribute__((format(printf, 1, 2))) static int
usage_error(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "shoal-ledger: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, " (shoal-ledger --help)\n");
    va_end(ap);
    return EXIT_USAGE;
}

static int
split_seeds(args *a, const char *s)
{
    free(a->seeds_buf);
    a->n_seeds = 0;
    if ((a->seeds_buf = strdup(s)) == NULL)
        return usage_error("%s", "out of memory");
    char *save = NULL;
    for (char *t = strtok_r(a->seeds_buf, ",", &save); t != NULL;
         t = strtok_r(NULL, ",", &save)) {
        if (a->n_seeds == LEDGER_MAX_SEEDS)
            return usage_error("more than 64 seeds in %s", s);
        a->seeds[a->n_seeds++] = t;
    }
    if (a->n_seeds == 0)
        return usage_error("no URL in --seeds '%s'", s);
    return 0;
}

/* One option with a value at argv[*i]; returns 0, or an exit code. */
static int
parse_opt(args *a, int argc, char **argv, int *i)
{
    const char *o = argv[*i];
    if (strcmp(o, "--read-any") == 0)
        return a->read_any = true, 0;
    if (strcmp(o, "--insecure") == 0)
        return a->insecure = true, 0;
    if (strcmp(o, "-v") == 0 || strcmp(o, "--verbose") == 0)
        return a->verbose = true, 0;
    if (*i + 1 >= argc)
        return usage_error("%s needs a value", o);
    const char *v = argv[++*i];
    uint64_t n = 0;
    if (strcmp(o, "--seeds") == 0)
        return split_seeds(a, v);
    if (strcmp(o, "--key-file") == 0)
        return a->key_file = v, 0;
    if (strcmp(o, "--ledger") == 0)
        return a->ledger = v, 0;
    if (strcmp(o, "--prefix") == 0)
        return a->prefix = v, 0;
    if (strcmp(o, "--threads") == 0) {
        if (!parse_u64(v, 1, LEDGER_MAX_THREADS, &n))
            return usage_error("--threads: 1..256, not '%s'", v);
        return a->threads = (uint32_t) n, 0;
    }
    if (strcmp(o, "--seconds") == 0) {
        if (!parse_u64(v, 1, 86400 * 30, &a->seconds))
            return usage_error("--seconds: 1..2592000, not '%s'", v);
        return 0;
    }
    if (strcmp(o, "--count") == 0) {
        if (!parse_u64(v, 1, UINT64_MAX / 2, &a->count))
            return usage_error("--count: a positive number, not '%s'", v);
        return 0;
    }
    if (strcmp(o, "--w") == 0) {
        if (!parse_u64(v, 1, 16, &n))
            return usage_error("--w: 1..16, not '%s'", v);
        return a->w = (uint32_t) n, 0;
    }
    if (strcmp(o, "--tries") == 0) {
        if (!parse_u64(v, 1, 1000, &n))
            return usage_error("--tries: 1..1000, not '%s'", v);
        return a->tries = (uint32_t) n, 0;
    }
    if (strcmp(o, "--timeout-ms") == 0) {
        if (!parse_u64(v, 1, 3600000, &n))
            return usage_error("--timeout-ms: 1..3600000, not '%s'", v);
        return a->timeout_ms = (uint32_t) n, 0;
    }
    return usage_error("unknown option '%s'", o);
}

static int
parse_args(args *a, int argc, char **argv)
{
    *a = (args){.threads = 4, .timeout_ms = 2000, .tries = 3};
    if (argc < 2 || strcmp(argv[1], "--help") == 0 ||
        strcmp(argv[1], "-h") == 0) {
        fputs(usage_text, argc < 2 ? stderr : stdout);
        return argc < 2 ? EXIT_USAGE : -1;
    }
    if (strcmp(argv[1], "write") == 0)
        a->is_write = true;
    else if (strcmp(argv[1], "check") != 0)
        return usage_error("unknown command '%s'", argv[1]);
    for (int i = 2; i < argc; i++) {
        int rc = parse_opt(a, argc, argv, &i);
        if (rc != 0)
            return rc;
    }
    if (a->n_seeds == 0)
        return usage_error("%s", "--seeds is required");
    if (a->ledger == NULL)
        return usage_error("%s", "--ledger is required");
    if ((a->key_file == NULL) == !a->insecure)
        return usage_error("%s", "give --key-file or --insecure (not both)");
    if (a->is_write && a->seconds != 0 && a->count != 0)
        return usage_error("%s", "--seconds and --count exclude each other");
    if (a->is_write && a->seconds == 0 && a->count == 0)
        a->seconds = 10;
    if (a->prefix != NULL && strlen(a->prefix) > LEDGER_KEY_MAX - 64)
        return usage_error("%s", "--prefix is too long");
    return 0;
}

static void
log_hook(void *arg, int level, const char *msg)
{
    (void) arg;
    fprintf(stderr, "shoal-ledger: libshoal[%d]: %s\n", level, msg);
}

static shoal *
open_db(const args *a)
{
    shoal_opts o;
    shoal_opts_default(&o);
    o.seeds = a->seeds;
    o.n_seeds = a->n_seeds;
    o.key_file = a->key_file;
    o.insecure = a->insecure;
    if (a->verbose)
        shoal_set_logger(log_hook, NULL, 2);
    shoal *db = NULL;
    shoal_err rc = shoal_open(&o, &db);
    if (rc != SHOAL_OK) {
        fprintf(stderr, "shoal-ledger: open %s%s: %s\n", a->seeds[0],
                a->n_seeds > 1 ? ",..." : "", shoal_strerror(rc));
        return NULL;
    }
    return db;
}

static void
on_close_alarm(int sig)
{
    static const char msg[] =
        "shoal-ledger: warning: shoal_close did not return within "
        "10 s (a libshoal hang); exiting without it\n";
    (void) sig;
    ssize_t n = write(STDERR_FILENO, msg, sizeof(msg) - 1);
    (void) n;
    _exit(close_exit_code);
}

/* Close the handle, the results already printed and flushed. A close that
 * hangs (a libshoal bug) must not hide them or stall a test script: after
 * 10 s the process says so on stderr and exits with the code it would
 * have. */
static void
close_db(shoal *db, int ret)
{
    if (db == NULL)
        return;
    fflush(stdout);
    close_exit_code = ret;
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_close_alarm;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGALRM, &sa, NULL);
    alarm(10);
    shoal_close(db);
    alarm(0);
}

/* ---- write --------------------------------------------------------------
 */

typedef struct writer {
    const args *a;
    shoal *db;
    int fd;                       /* the ledger, O_APPEND */
    const char *prefix;           /* key prefix */
    uint64_t deadline;            /* now_ms() bound, 0: none */
    atomic_uint_fast64_t tickets; /* puts started (for --count) */
    atomic_uint_fast64_t acked, failed, unknown;
    atomic_uint_fast64_t by_err[32]; /* failures by shoal_err */
    atomic_int ledger_errno;         /* first failed ledger write */
    atomic_uint running;             /* threads not finished yet */
} writer;

typedef struct wthread {
    writer *w;
    uint32_t index;
    pthread_t tid;
} wthread;

static bool
write_line(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t k = write(fd, p, n);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0)
            return false;
        p += k;
        n -= (size_t) k;
    }
    return true;
}

static bool
writer_done(writer *w)
{
    if (stop_flag || atomic_load(&w->ledger_errno) != 0)
        return true;
    if (w->deadline != 0 && now_ms() >= w->deadline)
        return true;
    if (w->a->count != 0 && atomic_fetch_add(&w->tickets, 1) >= w->a->count)
        return true;
    return false;
}

static void
count_error(writer *w, shoal_err rc)
{
    if (rc == SHOAL_ETIMEOUT || rc == SHOAL_EIO)
        atomic_fetch_add(&w->unknown, 1);
    else
        atomic_fetch_add(&w->failed, 1);
    atomic_fetch_add(&w->by_err[(unsigned) rc < 32 ? (unsigned) rc : 31], 1);
}

static void *
writer_main(void *arg)
{
    wthread *t = arg;
    writer *w = t->w;
    shoal_call call = {.timeout_ms = w->a->timeout_ms, .w = w->a->w};
    char key[LEDGER_KEY_MAX], val[LEDGER_VAL_MAX], line[LEDGER_KEY_MAX + 64];
    for (uint64_t i = 0; !writer_done(w); i++) {
        int kn = snprintf(key, sizeof(key), "%st%" PRIu32 "-%09" PRIu64,
                          w->prefix, t->index, i);
        size_t klen = (size_t) kn;
        size_t vlen = value_of(key, klen, val, sizeof(val));
        uint64_t version = 0;
        shoal_err rc =
            shoal_put(w->db, key, klen, val, vlen, NULL, &version, &call);
        if (rc != SHOAL_OK) {
            count_error(w, rc);
            /* Errors that come back at once must not spin the CPU. */
            sleep_ms(10);
            continue;
        }
        int ln =
            snprintf(line, sizeof(line), "%s\t%" PRIu64 "\t%016" PRIx64 "\n",
                     key, version, fnv1a64(val, vlen));
        if (!write_line(w->fd, line, (size_t) ln)) {
            int zero = 0;
            atomic_compare_exchange_strong(&w->ledger_errno, &zero,
                                           errno != 0 ? errno : EIO);
            break;
        }
        atomic_fetch_add(&w->acked, 1);
    }
    atomic_fetch_sub(&w->running, 1);
    return NULL;
}

static void
print_write_summary(writer *w, FILE *f, const char *lead)
{
    fprintf(f,
            "%sacked=%" PRIuFAST64 " failed=%" PRIuFAST64
            " unknown=%" PRIuFAST64,
            lead, atomic_load(&w->acked), atomic_load(&w->failed),
            atomic_load(&w->unknown));
    for (unsigned e = 1; e < 32; e++) {
        uint_fast64_t n = atomic_load(&w->by_err[e]);
        if (n != 0)
            fprintf(f, " %s=%" PRIuFAST64, shoal_errname((shoal_err) e), n);
    }
    fputc('\n', f);
}

static void
install_signals(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
}

/* Wait for the threads, printing progress to stderr every 5 s. */
static void
writer_wait(writer *w, wthread *t, uint32_t n)
{
    uint64_t start = now_ms(), next = start + 5000;
    while (atomic_load(&w->running) > 0) {
        sleep_ms(50);
        if (now_ms() < next)
            continue;
        char lead[64];
        snprintf(lead, sizeof(lead), "shoal-ledger: t=%" PRIu64 "s ",
                 (now_ms() - start) / 1000);
        print_write_summary(w, stderr, lead);
        next += 5000;
    }
    for (uint32_t i = 0; i < n; i++)
        pthread_join(t[i].tid, NULL);
}

static int
cmd_write(const args *a)
{
    static writer w; /* big (atomics); one per process */
    wthread *t = NULL;
    char prefix[64];
    int ret = EXIT_START;
    w.a = a;
    w.fd = -1;
    if (a->prefix == NULL) {
        /* Default: unique per run, so ledgers of several runs can share a
         * cluster without their keys colliding. */
        snprintf(prefix, sizeof(prefix),
                 "ledger:%lld-%ld:", (long long) time(NULL), (long) getpid());
        w.prefix = prefix;
    } else {
        w.prefix = a->prefix;
    }
    w.fd = open(a->ledger, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (w.fd < 0) {
        fprintf(stderr, "shoal-ledger: open %s: %s\n", a->ledger,
                strerror(errno));
        return EXIT_START;
    }
    if ((w.db = open_db(a)) == NULL)
        goto out;
    if ((t = calloc(a->threads, sizeof(*t))) == NULL)
        goto out;
    install_signals();
    if (a->seconds != 0)
        w.deadline = now_ms() + a->seconds * 1000;
    uint32_t started = 0;
    for (; started < a->threads; started++) {
        t[started] = (wthread){.w = &w, .index = started};
        atomic_fetch_add(&w.running, 1);
        if (pthread_create(&t[started].tid, NULL, writer_main, &t[started]) !=
            0) {
            atomic_fetch_sub(&w.running, 1);
            break;
        }
    }
    if (started == 0) {
        fprintf(stderr, "shoal-ledger: cannot start threads\n");
        goto out;
    }
    writer_wait(&w, t, started);
    if (atomic_load(&w.ledger_errno) != 0)
        fprintf(stderr, "shoal-ledger: write %s: %s (stopped)\n", a->ledger,
                strerror(atomic_load(&w.ledger_errno)));
    print_write_summary(&w, stdout, "");
    ret = 0;
out:
    close_db(w.db, ret);
    if (w.fd >= 0)
        close(w.fd);
    free(t);
    return ret;
}

/* ---- check --------------------------------------------------------------
 */

typedef struct entry {
    char *key;
    size_t klen;
    uint64_t version;
    uint64_t hash;
} entry;

typedef struct checker {
    const args *a;
    shoal *db;
    entry *e;
    size_t n;
    atomic_size_t next;
    atomic_uint_fast64_t checked, lost, mismatched, unreadable, reversioned;
    pthread_mutex_t mu; /* guards the printing of bad keys */
    unsigned shown;
} checker;

/* Parse one ledger line (without its newline) into e. */
static bool
parse_line(char *s, entry *e)
{
    char *t1 = strchr(s, '\t');
    char *t2 = t1 != NULL ? strchr(t1 + 1, '\t') : NULL;
    if (t1 == NULL || t2 == NULL || t1 == s || strchr(t2 + 1, '\t') != NULL)
        return false;
    *t1 = *t2 = '\0';
    char *end = NULL;
    errno = 0;
    e->version = strtoull(t1 + 1, &end, 10);
    if (errno != 0 || *end != '\0' || end == t1 + 1)
        return false;
    if (strlen(t2 + 1) != 16)
        return false;
    e->hash = strtoull(t2 + 1, &end, 16);
    if (*end != '\0')
        return false;
    e->key = s;
    e->klen = (size_t) (t1 - s);
    return e->klen < LEDGER_KEY_MAX;
}

static char *
read_file(const char *path, size_t *len_out)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        fprintf(stderr, "shoal-ledger: open %s: %s\n", path, strerror(errno));
        return NULL;
    }
    size_t cap = 1 << 16, len = 0;
    char *buf = malloc(cap + 1);
    while (buf != NULL) {
        len += fread(buf + len, 1, cap - len, f);
        if (len < cap)
            break;
        char *nb = realloc(buf, cap * 2 + 1);
        if (nb == NULL)
            free(buf);
        buf = nb;
        cap *= 2;
    }
    if (buf != NULL && ferror(f)) {
        fprintf(stderr, "shoal-ledger: read %s: %s\n", path, strerror(errno));
        free(buf);
        buf = NULL;
    }
    fclose(f);
    if (buf != NULL) {
        buf[len] = '\0';
        *len_out = len;
    }
    return buf;
}

/* Split buf into entries. Returns 0 or EXIT_USAGE (malformed line). */
static int
load_ledger(const char *path, char *buf, size_t len, entry **out, size_t *n)
{
    size_t lines = 0;
    for (size_t i = 0; i < len; i++)
        lines += buf[i] == '\n';
    *n = 0;
    if ((*out = calloc(lines + 1, sizeof(entry))) == NULL)
        return EXIT_START;
    char *p = buf, *end = buf + len;
    for (size_t no = 1; p < end; no++) {
        char *nl = memchr(p, '\n', (size_t) (end - p));
        if (nl == NULL) {
            fprintf(stderr,
                    "shoal-ledger: %s: line %zu has no newline (writer "
                    "killed mid-line?): skipped\n",
                    path, no);
            break;
        }
        *nl = '\0';
        if (!parse_line(p, &(*out)[*n])) {
            fprintf(stderr, "shoal-ledger: %s: line %zu is malformed\n", path,
                    no);
            return EXIT_USAGE;
        }
        (*n)++;
        p = nl + 1;
    }
    return 0;
}

static void
show_bad(checker *c, const char *what, const entry *e, const char *detail)
{
    pthread_mutex_lock(&c->mu);
    if (c->shown++ < LEDGER_SHOW_MAX)
        printf("%s %.*s (version %" PRIu64 ")%s%s\n", what, (int) e->klen,
               e->key, e->version, detail[0] != '\0' ? ": " : "", detail);
    pthread_mutex_unlock(&c->mu);
}

static void
check_one(checker *c, const entry *e, const shoal_call *call)
{
    char want[LEDGER_VAL_MAX];
    size_t wlen = value_of(e->key, e->klen, want, sizeof(want));
    void *got = NULL;
    size_t glen = 0;
    uint64_t version = 0;
    shoal_err rc = SHOAL_OK;
    for (uint32_t i = 0; i < c->a->tries; i++) {
        rc = shoal_get(c->db, e->key, e->klen, &got, &glen, &version, call);
        /* With read_any the replica asked may lag: another may have it. */
        if (rc == SHOAL_OK || (rc == SHOAL_ENOTFOUND && !call->read_any))
            break;
    }
    atomic_fetch_add(&c->checked, 1);
    if (rc == SHOAL_ENOTFOUND) {
        atomic_fetch_add(&c->lost, 1);
        show_bad(c, "lost", e, "");
    } else if (rc != SHOAL_OK) {
        atomic_fetch_add(&c->unreadable, 1);
        show_bad(c, "unreadable", e, shoal_strerror(rc));
    } else if (glen != wlen || memcmp(got, want, wlen) != 0 ||
               fnv1a64(want, wlen) != e->hash) {
        atomic_fetch_add(&c->mismatched, 1);
        show_bad(c, "mismatched", e, "value differs");
    } else if (version != e->version) {
        /* Keys are written once, so the version should stay; a change is
         * worth a look but the value is intact. */
        atomic_fetch_add(&c->reversioned, 1);
    }
    shoal_free(got);
}

static void *
checker_main(void *arg)
{
    checker *c = arg;
    shoal_call call = {.timeout_ms = c->a->timeout_ms,
                       .read_any = c->a->read_any};
    for (;;) {
        size_t i = atomic_fetch_add(&c->next, 1);
        if (i >= c->n || stop_flag)
            break;
        check_one(c, &c->e[i], &call);
    }
    return NULL;
}

static int
run_checkers(checker *c, uint32_t threads)
{
    pthread_t tid[LEDGER_MAX_THREADS];
    uint32_t started = 0;
    for (; started < threads; started++)
        if (pthread_create(&tid[started], NULL, checker_main, c) != 0)
            break;
    if (started == 0) {
        fprintf(stderr, "shoal-ledger: cannot start threads\n");
        return EXIT_START;
    }
    for (uint32_t i = 0; i < started; i++)
        pthread_join(tid[i], NULL);
    return 0;
}

static int
cmd_check(const args *a)
{
    static checker c;
    size_t len = 0;
    int ret = EXIT_START;
    c.a = a;
    pthread_mutex_init(&c.mu, NULL);
    char *buf = read_file(a->ledger, &len);
    if (buf == NULL)
        return EXIT_START;
    if ((ret = load_ledger(a->ledger, buf, len, &c.e, &c.n)) != 0)
        goto out;
    ret = EXIT_START;
    if ((c.db = open_db(a)) == NULL)
        goto out;
    install_signals();
    if ((ret = run_checkers(&c, a->threads)) != 0)
        goto out;
    printf("checked=%" PRIuFAST64 " lost=%" PRIuFAST64
           " mismatched=%" PRIuFAST64 " unreadable=%" PRIuFAST64 "\n",
           atomic_load(&c.checked), atomic_load(&c.lost),
           atomic_load(&c.mismatched), atomic_load(&c.unreadable));
    if (atomic_load(&c.reversioned) != 0)
        printf("note: %" PRIuFAST64 " keys read back with another version "
               "than ledgered (values equal)\n",
               atomic_load(&c.reversioned));
    if (atomic_load(&c.lost) != 0 || atomic_load(&c.mismatched) != 0)
        ret = EXIT_LOST;
    else if (atomic_load(&c.unreadable) != 0 || atomic_load(&c.checked) != c.n)
        ret = EXIT_UNREAD;
    else if (c.n == 0) {
        printf("note: the ledger is empty: nothing was proven\n");
        ret = EXIT_UNREAD;
    } else
        ret = 0;
out:
    close_db(c.db, ret);
    free(c.e);
    free(buf);
    return ret;
}

int
main(int argc, char **argv)
{
    args a;
    int rc = parse_args(&a, argc, argv);
    if (rc == 0)
        rc = a.is_write ? cmd_write(&a) : cmd_check(&a);
    else if (rc < 0)
        rc = 0;
    free(a.seeds_buf);
    fflush(stdout);
    return rc;
}
