/*
 * proc.c -- see proc.h.
 *
 * The SP-over-TCP wire, as nng's tcp transport speaks it (so the raw client
 * below can talk to shoald's rep0 socket without nng):
 *
 *   handshake, each side, once:  00 'S' 'P' 00 | u16 BE protocol | 00 00
 *                                (req0 = 0x0030, rep0 = 0x0031)
 *   every message:               u64 BE length | length bytes
 *   req0 message body:           u32 BE request id (high bit set) | payload
 *
 * rep0 echoes the request id in front of its answer. A message whose length
 * prefix is over the receiver's limit makes nng close the connection.
 *
 * Every socket here is non-blocking and every wait is a poll() bounded by a
 * deadline, so a test never hangs on a silent peer.
 */
#include "tests/support/proc.h"

#include "shoal.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/prctl.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

#define SP_PROTO_REQ0   0x0030
#define SP_PROTO_REP0   0x0031
#define SP_MAX_MSG      (1ull << 30)
#define IO_TIMEOUT_MS   30000
#define MAX_CHILDREN    256
#define MAX_RELAY_PAIRS 64
#define MAX_CLOSE_FD    4096

uint64_t
proc_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t) ts.tv_sec * 1000u + (uint64_t) ts.tv_nsec / 1000000u;
}

void
proc_nap_ms(uint32_t ms)
{
    struct timespec ts = {.tv_sec = ms / 1000u,
                          .tv_nsec = (long) (ms % 1000u) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

static int
ms_left(uint64_t deadline)
{
    uint64_t now = proc_now_ms();
    return now >= deadline ? 0 : (int) (deadline - now);
}

bool
proc_memmem(const void *hay, size_t hay_len, const void *needle,
            size_t needle_len)
{
    const uint8_t *h = hay;
    const uint8_t *n = needle;
    if (needle_len == 0)
        return true;
    size_t i = 0;
    while (i + needle_len <= hay_len) {
        const uint8_t *p = memchr(h + i, n[0], hay_len - needle_len + 1 - i);
        if (p == NULL)
            return false;
        if (memcmp(p, n, needle_len) == 0)
            return true;
        i = (size_t) (p - h) + 1;
    }
    return false;
}

static char *
read_file(const char *path, size_t *len_out)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return NULL;
    size_t cap = 4096, len = 0;
    char *buf = malloc(cap);
    while (buf != NULL) {
        size_t n = fread(buf + len, 1, cap - len - 1, f);
        len += n;
        if (n == 0)
            break;
        if (cap - len - 1 == 0) {
            char *nb = realloc(buf, cap * 2);
            if (nb == NULL)
                free(buf);
            buf = nb;
            cap *= 2;
        }
    }
    fclose(f);
    if (buf != NULL) {
        buf[len] = '\0';
        if (len_out != NULL)
            *len_out = len;
    }
    return buf;
}

/* ---- children ---------------------------------------------------------------
 */

static pthread_mutex_t children_mu = PTHREAD_MUTEX_INITIALIZER;
static pid_t children[MAX_CHILDREN];

static void
child_track(pid_t pid, bool add)
{
    pthread_mutex_lock(&children_mu);
    for (size_t i = 0; i < MAX_CHILDREN; i++) {
        if (add ? children[i] == 0 : children[i] == pid) {
            children[i] = add ? pid : 0;
            break;
        }
    }
    pthread_mutex_unlock(&children_mu);
}

void
proc_reap_all(void)
{
    for (size_t i = 0; i < MAX_CHILDREN; i++) {
        pthread_mutex_lock(&children_mu);
        pid_t pid = children[i];
        children[i] = 0;
        pthread_mutex_unlock(&children_mu);
        if (pid <= 0)
            continue;
        kill(pid, SIGKILL);
        while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
            ;
    }
}

static void
ignore_sigpipe_once(void)
{
    signal(SIGPIPE, SIG_IGN);
}

static void
ignore_sigpipe(void)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, ignore_sigpipe_once);
}

/* Whether env entry e ("K=V") sets the same variable as a ("K=..."). */
static bool
same_var(const char *e, const char *a)
{
    const char *eq = strchr(a, '=');
    size_t klen = eq != NULL ? (size_t) (eq - a) : strlen(a);
    return strncmp(e, a, klen) == 0 && e[klen] == '=';
}

/* The inherited environment with env_add merged in (malloc'd array of
 * borrowed strings). */
static char **
env_build(const char *const env_add[])
{
    size_t n_env = 0, n_add = 0;
    while (environ[n_env] != NULL)
        n_env++;
    while (env_add != NULL && env_add[n_add] != NULL)
        n_add++;
    char **envp = calloc(n_env + n_add + 1, sizeof(*envp));
    if (envp == NULL)
        return NULL;
    size_t k = 0;
    for (size_t i = 0; i < n_env; i++) {
        bool overridden = false;
        for (size_t j = 0; j < n_add; j++)
            overridden = overridden || same_var(environ[i], env_add[j]);
        if (!overridden)
            envp[k++] = environ[i];
    }
    for (size_t j = 0; j < n_add; j++)
        envp[k++] = (char *) env_add[j];
    return envp;
}

/* In the child after fork: only async-signal-safe calls. Never returns. */
static void
child_exec(const char *const argv[], char *const envp[], pid_t parent,
           int in_fd, int out_fd, int err_fd)
{
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    signal(SIGPIPE, SIG_DFL);
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent)
        _exit(127);
    if (dup2(in_fd, 0) < 0 || dup2(out_fd, 1) < 0 || dup2(err_fd, 2) < 0)
        _exit(127);
    for (int fd = 3; fd < MAX_CLOSE_FD; fd++)
        close(fd);
    execve(argv[0], (char *const *) argv, envp);
    _exit(127);
}

static int
open_out(const char *path)
{
    if (path == NULL)
        return open("/dev/null", O_WRONLY | O_CLOEXEC);
    return open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
}

static shoal_err
spawn_fds(const char *const argv[], const char *const env_add[], int in_fd,
          int out_fd, int err_fd, pid_t *pid_out)
{
    ignore_sigpipe();
    char **envp = env_build(env_add);
    if (envp == NULL)
        return SHOAL_ENOMEM;
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid == 0)
        child_exec(argv, envp, parent, in_fd, out_fd, err_fd);
    free(envp);
    if (pid < 0)
        return SHOAL_EIO;
    child_track(pid, true);
    *pid_out = pid;
    return SHOAL_OK;
}

shoal_err
proc_spawn(const char *const argv[], const char *const env_add[],
           const char *out_path, const char *err_path, pid_t *pid_out)
{
    int in_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    int out_fd = open_out(out_path);
    int err_fd = open_out(err_path);
    shoal_err rc = SHOAL_EIO;
    if (in_fd >= 0 && out_fd >= 0 && err_fd >= 0)
        rc = spawn_fds(argv, env_add, in_fd, out_fd, err_fd, pid_out);
    if (in_fd >= 0)
        close(in_fd);
    if (out_fd >= 0)
        close(out_fd);
    if (err_fd >= 0)
        close(err_fd);
    return rc;
}

shoal_err
proc_wait(pid_t pid, uint32_t timeout_ms, int *status_out)
{
    uint64_t deadline = proc_now_ms() + timeout_ms;
    uint32_t nap = 1;
    for (;;) {
        int st = 0;
        pid_t r = waitpid(pid, &st, WNOHANG);
        if (r == pid) {
            child_track(pid, false);
            if (status_out != NULL)
                *status_out = st;
            return SHOAL_OK;
        }
        if (r < 0 && errno != EINTR)
            return SHOAL_EINVAL;
        if (ms_left(deadline) == 0)
            return SHOAL_ETIMEOUT;
        proc_nap_ms(nap);
        nap = nap < 20 ? nap * 2 : 20;
    }
}

int
proc_exit_code(int status)
{
    if (WIFEXITED(status))
        return WEXITSTATUS(status);
    if (WIFSIGNALED(status))
        return 128 + WTERMSIG(status);
    return -1;
}

shoal_err
proc_signal(pid_t pid, int sig)
{
    return pid > 0 && kill(pid, sig) == 0 ? SHOAL_OK : SHOAL_EINVAL;
}

shoal_err
proc_rss_kb(pid_t pid, uint64_t *kb_out)
{
    char path[64];
    snprintf(path, sizeof(path), "/proc/%ld/status", (long) pid);
    char *text = read_file(path, NULL);
    if (text == NULL)
        return SHOAL_EIO;
    const char *p = strstr(text, "\nVmRSS:");
    shoal_err rc = SHOAL_EIO;
    if (p != NULL) {
        char *end = NULL;
        unsigned long long kb = strtoull(p + 7, &end, 10);
        if (end != p + 7) {
            *kb_out = kb;
            rc = SHOAL_OK;
        }
    }
    free(text);
    return rc;
}

/* ---- run a command ----------------------------------------------------------
 */

typedef struct sbuf {
    char *p;
    size_t len, cap;
} sbuf;

static int
sbuf_add(sbuf *b, const void *data, size_t len)
{
    if (b->len + len + 1 > b->cap) {
        size_t cap = b->cap == 0 ? 4096 : b->cap;
        while (cap < b->len + len + 1)
            cap *= 2;
        char *np = realloc(b->p, cap);
        if (np == NULL)
            return -1;
        b->p = np;
        b->cap = cap;
    }
    memcpy(b->p + b->len, data, len);
    b->len += len;
    b->p[b->len] = '\0';
    return 0;
}

static void
set_nonblock(int fd)
{
    int fl = fcntl(fd, F_GETFL);
    if (fl >= 0)
        fcntl(fd, F_SETFL, fl | O_NONBLOCK);
}

/* One poll round of proc_run: feed stdin, drain stdout and stderr. fds[i]
 * is set to -1 once done. */
static void
run_pump(int fds[3], const uint8_t *in, size_t in_len, size_t *in_off,
         sbuf out[2], int timeout_ms)
{
    struct pollfd pfd[3];
    for (int i = 0; i < 3; i++) {
        pfd[i].fd = fds[i];
        pfd[i].events = i == 0 ? POLLOUT : POLLIN;
        pfd[i].revents = 0;
    }
    if (poll(pfd, 3, timeout_ms) <= 0)
        return;
    if (fds[0] >= 0 && pfd[0].revents != 0) {
        ssize_t n = write(fds[0], in + *in_off, in_len - *in_off);
        if (n > 0)
            *in_off += (size_t) n;
        if (n < 0 && errno != EAGAIN && errno != EINTR)
            *in_off = in_len;
        if (*in_off == in_len) {
            close(fds[0]);
            fds[0] = -1;
        }
    }
    for (int i = 1; i < 3; i++) {
        if (fds[i] < 0 || pfd[i].revents == 0)
            continue;
        char buf[65536];
        ssize_t n = read(fds[i], buf, sizeof(buf));
        if (n > 0 && sbuf_add(&out[i - 1], buf, (size_t) n) == 0)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EINTR))
            continue;
        close(fds[i]);
        fds[i] = -1;
    }
}

static shoal_err
make_pipes(int p[3][2])
{
    for (int i = 0; i < 3; i++)
        p[i][0] = p[i][1] = -1;
    for (int i = 0; i < 3; i++)
        if (pipe(p[i]) != 0)
            return SHOAL_EIO;
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 2; j++)
            fcntl(p[i][j], F_SETFD, FD_CLOEXEC);
    return SHOAL_OK;
}

static void
close_pipes(int p[3][2])
{
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 2; j++)
            if (p[i][j] >= 0)
                close(p[i][j]);
}

shoal_err
proc_run(const char *const argv[], const void *in, size_t in_len,
         uint32_t timeout_ms, proc_output *out)
{
    memset(out, 0, sizeof(*out));
    out->code = -1;
    int p[3][2];
    pid_t pid = -1;
    shoal_err rc = make_pipes(p);
    if (rc == SHOAL_OK)
        rc = spawn_fds(argv, NULL, p[0][0], p[1][1], p[2][1], &pid);
    int fds[3] = {p[0][1], p[1][0], p[2][0]};
    p[0][1] = p[1][0] = p[2][0] = -1; /* the parent's ends: now in fds */
    close_pipes(p);                   /* the child's ends */
    for (int i = 0; i < 3; i++)
        if (fds[i] >= 0)
            set_nonblock(fds[i]);
    if (rc != SHOAL_OK) {
        for (int i = 0; i < 3; i++)
            if (fds[i] >= 0)
                close(fds[i]);
        return rc;
    }
    if (in_len == 0) {
        close(fds[0]);
        fds[0] = -1;
    }
    uint64_t deadline = proc_now_ms() + timeout_ms;
    size_t in_off = 0;
    sbuf bufs[2] = {{0}, {0}};
    while ((fds[0] >= 0 || fds[1] >= 0 || fds[2] >= 0) && ms_left(deadline))
        run_pump(fds, in, in_len, &in_off, bufs, ms_left(deadline));
    for (int i = 0; i < 3; i++)
        if (fds[i] >= 0)
            close(fds[i]);
    int st = 0;
    rc = proc_wait(pid, (uint32_t) ms_left(deadline), &st);
    if (rc == SHOAL_ETIMEOUT) {
        kill(pid, SIGKILL);
        proc_wait(pid, 10000, &st);
    }
    out->code = proc_exit_code(st);
    sbuf_add(&bufs[0], "", 0);
    sbuf_add(&bufs[1], "", 0);
    out->out = bufs[0].p;
    out->out_len = bufs[0].len;
    out->err = bufs[1].p;
    out->err_len = bufs[1].len;
    return rc;
}

void
proc_output_free(proc_output *o)
{
    if (o == NULL)
        return;
    free(o->out);
    free(o->err);
    memset(o, 0, sizeof(*o));
}

/* ---- sockets ----------------------------------------------------------------
 */

static struct sockaddr_in
loopback(uint16_t port)
{
    struct sockaddr_in a;
    memset(&a, 0, sizeof(a));
    a.sin_family = AF_INET;
    a.sin_port = htons(port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    return a;
}

shoal_err
proc_free_port(uint16_t *port_out)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return SHOAL_EIO;
    struct sockaddr_in a = loopback(0);
    socklen_t alen = sizeof(a);
    shoal_err rc = SHOAL_EIO;
    if (bind(fd, (struct sockaddr *) &a, sizeof(a)) == 0 &&
        getsockname(fd, (struct sockaddr *) &a, &alen) == 0) {
        *port_out = ntohs(a.sin_port);
        rc = SHOAL_OK;
    }
    close(fd);
    return rc;
}

/* A non-blocking socket connected to 127.0.0.1:port. */
static shoal_err
tcp_connect(uint16_t port, uint32_t timeout_ms, int *fd_out)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0)
        return SHOAL_EIO;
    struct sockaddr_in a = loopback(port);
    if (connect(fd, (struct sockaddr *) &a, sizeof(a)) != 0 &&
        errno != EINPROGRESS) {
        close(fd);
        return SHOAL_EUNAVAILABLE;
    }
    struct pollfd pfd = {.fd = fd, .events = POLLOUT};
    int err = 0;
    socklen_t elen = sizeof(err);
    if (poll(&pfd, 1, (int) timeout_ms) != 1) {
        close(fd);
        return SHOAL_ETIMEOUT;
    }
    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &elen) != 0 || err != 0) {
        close(fd);
        return SHOAL_EUNAVAILABLE;
    }
    /* A header and a body in two writes must not wait for a delayed ACK. */
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    *fd_out = fd;
    return SHOAL_OK;
}

static shoal_err
write_all(int fd, const void *data, size_t len, uint64_t deadline)
{
    const uint8_t *p = data;
    while (len > 0) {
        ssize_t n = send(fd, p, len, MSG_NOSIGNAL);
        if (n > 0) {
            p += n;
            len -= (size_t) n;
            continue;
        }
        if (n < 0 && errno != EAGAIN && errno != EINTR)
            return errno == EPIPE || errno == ECONNRESET ? SHOAL_ECLOSED
                                                         : SHOAL_EIO;
        struct pollfd pfd = {.fd = fd, .events = POLLOUT};
        if (ms_left(deadline) == 0)
            return SHOAL_ETIMEOUT;
        poll(&pfd, 1, ms_left(deadline));
    }
    return SHOAL_OK;
}

static shoal_err
read_all(int fd, void *data, size_t len, uint64_t deadline)
{
    uint8_t *p = data;
    while (len > 0) {
        ssize_t n = recv(fd, p, len, 0);
        if (n > 0) {
            p += n;
            len -= (size_t) n;
            continue;
        }
        if (n == 0 || (errno != EAGAIN && errno != EINTR))
            return n == 0 || errno == ECONNRESET ? SHOAL_ECLOSED : SHOAL_EIO;
        struct pollfd pfd = {.fd = fd, .events = POLLIN};
        if (ms_left(deadline) == 0)
            return SHOAL_ETIMEOUT;
        poll(&pfd, 1, ms_left(deadline));
    }
    return SHOAL_OK;
}

/* ---- HTTP -------------------------------------------------------------------
 */

/* Whether buf holds a whole answer: headers and Content-Length bytes. */
static bool
http_complete(const sbuf *b)
{
    if (b->p == NULL)
        return false;
    const char *hend = strstr(b->p, "\r\n\r\n");
    if (hend == NULL)
        return false;
    size_t hlen = (size_t) (hend - b->p) + 4;
    for (const char *l = b->p; l < hend; l = strstr(l, "\r\n") + 2) {
        if (strncasecmp(l, "Content-Length:", 15) == 0)
            return b->len - hlen >= strtoull(l + 15, NULL, 10);
    }
    return false; /* no length: read to EOF */
}

static shoal_err
http_parse(sbuf *b, int *status_out, char **body_out, size_t *len_out)
{
    int major = 0, minor = 0, status = 0;
    if (b->p == NULL ||
        sscanf(b->p, "HTTP/%d.%d %d", &major, &minor, &status) != 3)
        return SHOAL_EIO;
    const char *hend = strstr(b->p, "\r\n\r\n");
    if (hend == NULL)
        return SHOAL_EIO;
    size_t off = (size_t) (hend - b->p) + 4;
    size_t blen = b->len - off;
    *status_out = status;
    if (len_out != NULL)
        *len_out = blen;
    if (body_out != NULL) {
        memmove(b->p, b->p + off, blen);
        b->p[blen] = '\0';
        *body_out = b->p;
        b->p = NULL;
    }
    return SHOAL_OK;
}

shoal_err
proc_http_get(uint16_t port, const char *path, uint32_t timeout_ms,
              int *status_out, char **body_out, size_t *len_out)
{
    if (body_out != NULL)
        *body_out = NULL;
    uint64_t deadline = proc_now_ms() + timeout_ms;
    int fd = -1;
    shoal_err rc = tcp_connect(port, timeout_ms, &fd);
    if (rc != SHOAL_OK)
        return rc;
    char req[1024];
    int n = snprintf(req, sizeof(req),
                     "GET %s HTTP/1.1\r\nHost: 127.0.0.1:%u\r\n"
                     "Connection: close\r\n\r\n",
                     path, (unsigned) port);
    sbuf b = {0};
    rc = write_all(fd, req, (size_t) n, deadline);
    while (rc == SHOAL_OK && !http_complete(&b)) {
        char buf[16384];
        ssize_t r = recv(fd, buf, sizeof(buf), 0);
        if (r > 0) {
            sbuf_add(&b, buf, (size_t) r);
            continue;
        }
        if (r == 0 || (errno != EAGAIN && errno != EINTR))
            break; /* EOF ends an answer without a length */
        struct pollfd pfd = {.fd = fd, .events = POLLIN};
        if (ms_left(deadline) == 0)
            rc = SHOAL_ETIMEOUT;
        else
            poll(&pfd, 1, ms_left(deadline));
    }
    close(fd);
    if (rc == SHOAL_OK)
        rc = http_parse(&b, status_out, body_out, len_out);
    free(b.p);
    return rc;
}

/* The value of the sample on line l (name already matched at l) if its
 * labels contain label; false otherwise. */
static bool
metric_line(const char *l, size_t name_len, const char *label, double *v)
{
    const char *p = l + name_len;
    const char *eol = strchr(p, '\n');
    if (eol == NULL)
        eol = p + strlen(p);
    if (*p == '{') {
        const char *close = memchr(p, '}', (size_t) (eol - p));
        if (close == NULL)
            return false;
        if (label != NULL &&
            !proc_memmem(p, (size_t) (close - p), label, strlen(label)))
            return false;
        p = close + 1;
    } else if (*p != ' ' || label != NULL) {
        return false;
    }
    char *end = NULL;
    *v = strtod(p, &end);
    return end != p;
}

double
proc_metric_sum(const char *text, const char *name, const char *label)
{
    size_t nlen = strlen(name);
    double sum = 0;
    bool found = false;
    for (const char *l = text; l != NULL && *l != '\0';) {
        double v = 0;
        if (l[0] != '#' && strncmp(l, name, nlen) == 0 &&
            metric_line(l, nlen, label, &v)) {
            sum += v;
            found = true;
        }
        l = strchr(l, '\n');
        if (l != NULL)
            l++;
    }
    return found ? sum : -1;
}

/* ---- nodes ------------------------------------------------------------------
 */

struct proc_node {
    char *dir, *id, *data_dir, *key_file, *fsync;
    char **extra; /* NULL-terminated copies */
    char **env;
    uint32_t ready_timeout_ms;
    uint16_t port, http_port;
    char url[64], http_url[64];
    char log[600];
    pid_t pid;     /* -1 when not running */
    int last_code; /* exit code of the last run, -1 none */
    unsigned runs;
    bool fixed_ports; /* given by the caller (a cluster file names them) */
};

void
proc_node_opts_default(proc_node_opts *o)
{
    memset(o, 0, sizeof(*o));
    o->id = "n1";
    o->fsync = "always";
    o->ready_timeout_ms = 60000;
}

static char **
strv_dup(const char *const *v)
{
    size_t n = 0;
    while (v != NULL && v[n] != NULL)
        n++;
    char **c = calloc(n + 1, sizeof(*c));
    for (size_t i = 0; c != NULL && i < n; i++)
        c[i] = strdup(v[i]);
    return c;
}

static void
strv_free(char **v)
{
    for (size_t i = 0; v != NULL && v[i] != NULL; i++)
        free(v[i]);
    free(v);
}

static void
node_set_ports(proc_node *n, uint16_t port, uint16_t http_port)
{
    n->port = port;
    n->http_port = http_port;
    snprintf(n->url, sizeof(n->url), "tcp://127.0.0.1:%u", n->port);
    snprintf(n->http_url, sizeof(n->http_url), "http://127.0.0.1:%u",
             n->http_port);
}

/* Free ports for those of port/http_port that are 0. */
static shoal_err
node_pick_ports(proc_node *n, uint16_t port, uint16_t http_port)
{
    shoal_err rc = SHOAL_OK;
    if (port == 0)
        rc = proc_free_port(&port);
    while (rc == SHOAL_OK && (http_port == 0 || http_port == port))
        rc = proc_free_port(&http_port);
    node_set_ports(n, port, http_port);
    return rc;
}

shoal_err
proc_node_open(const proc_node_opts *o, proc_node **out)
{
    *out = NULL;
    if (o->dir == NULL)
        return SHOAL_EINVAL;
    proc_node *n = calloc(1, sizeof(*n));
    if (n == NULL)
        return SHOAL_ENOMEM;
    n->pid = -1;
    n->last_code = -1;
    n->dir = strdup(o->dir);
    n->id = strdup(o->id != NULL ? o->id : "n1");
    n->fsync = strdup(o->fsync != NULL ? o->fsync : "always");
    n->key_file = o->key_file != NULL ? strdup(o->key_file) : NULL;
    n->extra = strv_dup(o->extra_args);
    n->env = strv_dup(o->env);
    n->ready_timeout_ms = o->ready_timeout_ms ? o->ready_timeout_ms : 60000;
    n->fixed_ports = o->port != 0 || o->http_port != 0;
    char dd[600];
    snprintf(dd, sizeof(dd), "%s/data-%s", o->dir, n->id);
    n->data_dir = strdup(o->data_dir != NULL ? o->data_dir : dd);
    snprintf(n->log, sizeof(n->log), "%s/%s.log", o->dir, n->id);
    if (n->dir == NULL || n->id == NULL || n->fsync == NULL ||
        n->data_dir == NULL || n->extra == NULL || n->env == NULL ||
        node_pick_ports(n, o->port, o->http_port) != SHOAL_OK) {
        proc_node_free(n);
        return SHOAL_ENOMEM;
    }
    *out = n;
    return SHOAL_OK;
}

/* argv for this node (pointers into n and into bufs). */
static void
node_argv(proc_node *n, const char *argv[64], char listen[64], char http[64])
{
    size_t k = 0;
    snprintf(listen, 64, "tcp://127.0.0.1:%u", n->port);
    snprintf(http, 64, "127.0.0.1:%u", n->http_port);
    argv[k++] = PROC_SHOALD;
    argv[k++] = "--id";
    argv[k++] = n->id;
    argv[k++] = "--listen";
    argv[k++] = listen;
    argv[k++] = "--http";
    argv[k++] = http;
    argv[k++] = "--data-dir";
    argv[k++] = n->data_dir;
    argv[k++] = "--fsync";
    argv[k++] = n->fsync;
    if (n->key_file != NULL) {
        argv[k++] = "--key-file";
        argv[k++] = n->key_file;
    } else {
        argv[k++] = "--insecure";
    }
    for (size_t i = 0; n->extra[i] != NULL && k < 63; i++)
        argv[k++] = n->extra[i];
    argv[k] = NULL;
}

static void
node_log_mark(proc_node *n, size_t *off_out)
{
    FILE *f = fopen(n->log, "a");
    if (f == NULL)
        return;
    fprintf(f, "=== proc: run %u of %s, ports %u/%u\n", ++n->runs, n->id,
            n->port, n->http_port);
    fflush(f);
    long off = ftell(f);
    *off_out = off > 0 ? (size_t) off : 0;
    fclose(f);
}

/* Poll until /health says 200, the process exits, or the deadline. */
static shoal_err
node_wait_ready(proc_node *n)
{
    uint64_t deadline = proc_now_ms() + n->ready_timeout_ms;
    uint32_t nap = 2;
    for (;;) {
        int st = 0;
        if (proc_wait(n->pid, 0, &st) == SHOAL_OK) {
            n->pid = -1;
            n->last_code = proc_exit_code(st);
            return SHOAL_EUNAVAILABLE;
        }
        int status = 0;
        if (proc_http_get(n->http_port, "/health", 1000, &status, NULL, NULL) ==
                SHOAL_OK &&
            status == 200)
            return SHOAL_OK;
        if (ms_left(deadline) == 0) {
            proc_node_kill(n);
            return SHOAL_ETIMEOUT;
        }
        proc_nap_ms(nap);
        nap = nap < 25 ? nap * 2 : 25;
    }
}

/* Whether this run's log part says the address was taken. */
static bool
node_addr_in_use(const proc_node *n, size_t off)
{
    size_t len = 0;
    char *text = read_file(n->log, &len);
    bool in_use = false;
    if (text != NULL && off <= len)
        in_use = strstr(text + off, "Address in use") != NULL ||
                 strstr(text + off, "EADDRINUSE") != NULL;
    free(text);
    return in_use;
}

/* Start shoald without waiting; *off_out gets where this run's part of
 * the log begins. */
static shoal_err
node_spawn(proc_node *n, size_t *off_out)
{
    const char *argv[64];
    char listen[64], http[64];
    mkdir(n->data_dir, 0700);
    node_argv(n, argv, listen, http);
    node_log_mark(n, off_out);
    shoal_err rc =
        proc_spawn(argv, (const char *const *) n->env, n->log, n->log, &n->pid);
    if (rc != SHOAL_OK)
        n->pid = -1;
    return rc;
}

shoal_err
proc_node_launch(proc_node *n)
{
    if (n->pid > 0)
        return SHOAL_EINVAL;
    shoal_err rc = SHOAL_EUNAVAILABLE;
    for (int attempt = 0; attempt < 5; attempt++) {
        size_t off = 0;
        if ((rc = node_spawn(n, &off)) != SHOAL_OK)
            return rc;
        rc = node_wait_ready(n);
        if (rc != SHOAL_EUNAVAILABLE || n->fixed_ports ||
            !node_addr_in_use(n, off))
            return rc;
        if ((rc = node_pick_ports(n, 0, 0)) != SHOAL_OK)
            return rc;
        rc = SHOAL_EUNAVAILABLE;
    }
    return rc;
}

shoal_err
proc_node_start(const proc_node_opts *o, proc_node **out)
{
    proc_node *n = NULL;
    shoal_err rc = proc_node_open(o, &n);
    if (rc == SHOAL_OK && (rc = proc_node_launch(n)) != SHOAL_OK) {
        proc_node_free(n);
        n = NULL;
    }
    *out = n;
    return rc;
}

shoal_err
proc_node_stop(proc_node *n, uint32_t timeout_ms, int *code_out)
{
    shoal_err rc = SHOAL_OK;
    if (n->pid > 0) {
        int st = 0;
        kill(n->pid, SIGTERM);
        rc = proc_wait(n->pid, timeout_ms, &st);
        if (rc == SHOAL_ETIMEOUT) {
            kill(n->pid, SIGKILL);
            proc_wait(n->pid, 30000, &st);
        }
        n->last_code = proc_exit_code(st);
        n->pid = -1;
    }
    if (code_out != NULL)
        *code_out = n->last_code;
    return rc;
}

shoal_err
proc_node_kill(proc_node *n)
{
    if (n->pid <= 0)
        return SHOAL_OK;
    int st = 0;
    kill(n->pid, SIGKILL);
    shoal_err rc = proc_wait(n->pid, 30000, &st);
    n->last_code = proc_exit_code(st);
    n->pid = -1;
    return rc;
}

/* Whether every thread of pid is stopped ('T' in /proc/PID/task/N/stat). */
static bool
all_stopped(pid_t pid)
{
    char path[64];
    snprintf(path, sizeof(path), "/proc/%ld/task", (long) pid);
    DIR *d = opendir(path);
    if (d == NULL)
        return false;
    bool stopped = true;
    struct dirent *de;
    while (stopped && (de = readdir(d)) != NULL) {
        if (de->d_name[0] == '.')
            continue;
        char sp[400];
        snprintf(sp, sizeof(sp), "%s/%s/stat", path, de->d_name);
        char *st = read_file(sp, NULL);
        const char *rp = st != NULL ? strrchr(st, ')') : NULL;
        stopped = rp != NULL && rp[1] == ' ' && rp[2] == 'T';
        free(st);
    }
    closedir(d);
    return stopped;
}

shoal_err
proc_node_pause(proc_node *n)
{
    shoal_err rc = proc_signal(n->pid, SIGSTOP);
    /* kill() returns before the threads stop: wait until they have, so
     * nothing the caller sends next is served. */
    uint64_t deadline = proc_now_ms() + 10000;
    while (rc == SHOAL_OK && !all_stopped(n->pid)) {
        if (ms_left(deadline) == 0)
            return SHOAL_ETIMEOUT;
        proc_nap_ms(1);
    }
    return rc;
}

shoal_err
proc_node_resume(proc_node *n)
{
    return proc_signal(n->pid, SIGCONT);
}

bool
proc_node_running(const proc_node *n)
{
    return n->pid > 0;
}

pid_t
proc_node_pid(const proc_node *n)
{
    return n->pid;
}

int
proc_node_exit_code(const proc_node *n)
{
    return n->last_code;
}

const char *
proc_node_url(const proc_node *n)
{
    return n->url;
}

uint16_t
proc_node_port(const proc_node *n)
{
    return n->port;
}

uint16_t
proc_node_http_port(const proc_node *n)
{
    return n->http_port;
}

const char *
proc_node_http_url(const proc_node *n)
{
    return n->http_url;
}

const char *
proc_node_log(const proc_node *n)
{
    return n->log;
}

const char *
proc_node_data_dir(const proc_node *n)
{
    return n->data_dir;
}

bool
proc_node_log_contains(const proc_node *n, const char *needle)
{
    char *text = read_file(n->log, NULL);
    bool found = text != NULL && strstr(text, needle) != NULL;
    free(text);
    return found;
}

shoal_err
proc_node_http(const proc_node *n, const char *path, int *status_out,
               char **body_out)
{
    return proc_http_get(n->http_port, path, 10000, status_out, body_out, NULL);
}

void
proc_node_free(proc_node *n)
{
    if (n == NULL)
        return;
    proc_node_kill(n);
    free(n->dir);
    free(n->id);
    free(n->data_dir);
    free(n->key_file);
    free(n->fsync);
    strv_free(n->extra);
    strv_free(n->env);
    free(n);
}

/* ---- keys -------------------------------------------------------------------
 */

static shoal_err
write_private(const char *path, const char *text)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0)
        return SHOAL_EIO;
    size_t len = strlen(text);
    bool ok = fchmod(fd, 0600) == 0 && write(fd, text, len) == (ssize_t) len;
    close(fd);
    return ok ? SHOAL_OK : SHOAL_EIO;
}

static shoal_err
key_write(const wire_key *k, const char *dir, const char *name, char *path,
          char *all, size_t all_cap)
{
    char line[600];
    shoal_err rc = wire_key_format(k, line, sizeof(line));
    if (rc != SHOAL_OK)
        return rc;
    snprintf(path, 512, "%s/%s", dir, name);
    size_t used = strlen(all);
    snprintf(all + used, all_cap - used, "%s", line);
    return write_private(path, line);
}

shoal_err
proc_keys_make(const char *dir, proc_keys *out)
{
    memset(out, 0, sizeof(*out));
    const uint8_t *pfx = (const uint8_t *) PROC_KEY_PREFIX;
    shoal_err rc;
    if ((rc = wire_key_generate(PROC_KEY_ADMIN, WIRE_ROLE_ADMIN, NULL, 0,
                                &out->admin)) != SHOAL_OK ||
        (rc = wire_key_generate(PROC_KEY_WRITE, WIRE_ROLE_WRITE, NULL, 0,
                                &out->write)) != SHOAL_OK ||
        (rc = wire_key_generate(PROC_KEY_READ, WIRE_ROLE_READ, NULL, 0,
                                &out->read)) != SHOAL_OK ||
        (rc = wire_key_generate(PROC_KEY_PREFIXED, WIRE_ROLE_WRITE, pfx,
                                strlen(PROC_KEY_PREFIX), &out->prefixed)) !=
            SHOAL_OK)
        return rc;
    char all[4096] = "# test node keys\n";
    if ((rc = key_write(&out->admin, dir, "admin.key", out->admin_file, all,
                        sizeof(all))) != SHOAL_OK ||
        (rc = key_write(&out->write, dir, "write.key", out->write_file, all,
                        sizeof(all))) != SHOAL_OK ||
        (rc = key_write(&out->read, dir, "read.key", out->read_file, all,
                        sizeof(all))) != SHOAL_OK ||
        (rc = key_write(&out->prefixed, dir, "prefixed.key", out->prefixed_file,
                        all, sizeof(all))) != SHOAL_OK)
        return rc;
    snprintf(out->node_file, sizeof(out->node_file), "%s/node.keys", dir);
    return write_private(out->node_file, all);
}

void
proc_keys_wipe(proc_keys *k)
{
    volatile uint8_t *p = (volatile uint8_t *) k;
    for (size_t i = 0; i < sizeof(*k); i++)
        p[i] = 0;
}

shoal_err
proc_node_start_keyed(const char *dir, const proc_node_opts *o, proc_keys *keys,
                      proc_node **out)
{
    *out = NULL;
    proc_node_opts ko = *o;
    shoal_err rc = proc_keys_make(dir, keys);
    if (rc != SHOAL_OK)
        return rc;
    ko.dir = o->dir != NULL ? o->dir : dir;
    ko.key_file = keys->node_file;
    return proc_node_start(&ko, out);
}

/* ---- clusters ---------------------------------------------------------------
 */

struct proc_cluster {
    size_t n;
    proc_node *nodes[PROC_CLUSTER_MAX];
    uint16_t peer_port[PROC_CLUSTER_MAX];
    const char *seeds[PROC_CLUSTER_MAX]; /* the nodes' url fields */
    uint32_t r, w, shards;
    char hash_key[33]; /* 32 hex */
    char file[600];    /* <dir>/cluster.conf */
    proc_keys keys;
};

void
proc_cluster_opts_default(proc_cluster_opts *o)
{
    memset(o, 0, sizeof(*o));
    o->n_nodes = 3;
    o->fsync = "always";
    o->ready_timeout_ms = 60000;
}

/* Add the peer key to the node key file proc_keys_make wrote. */
static shoal_err
cluster_peer_key(proc_cluster *c)
{
    char line[WIRE_KEY_LINE_MAX];
    shoal_err rc = wire_key_generate(PROC_KEY_PEER, WIRE_ROLE_PEER, NULL, 0,
                                     &c->keys.peer);
    if (rc == SHOAL_OK)
        rc = wire_key_format(&c->keys.peer, line, sizeof(line));
    if (rc != SHOAL_OK)
        return rc;
    char *text = read_file(c->keys.node_file, NULL);
    sbuf b = {0};
    if (text == NULL || sbuf_add(&b, text, strlen(text)) != 0 ||
        sbuf_add(&b, line, strlen(line)) != 0)
        rc = SHOAL_EIO;
    if (rc == SHOAL_OK)
        rc = write_private(c->keys.node_file, b.p);
    free(text);
    free(b.p);
    return rc;
}

static shoal_err
cluster_hash_key(proc_cluster *c)
{
    uint8_t key[16];
    if (getrandom(key, sizeof(key), 0) != (ssize_t) sizeof(key))
        return SHOAL_EIO;
    for (size_t i = 0; i < sizeof(key); i++)
        snprintf(c->hash_key + 2 * i, 3, "%02x", key[i]);
    return SHOAL_OK;
}

/* Whether port is among the first k picked for c (client, http, peer). */
static bool
cluster_port_used(const proc_cluster *c, size_t k, uint16_t port)
{
    for (size_t i = 0; i < k; i++)
        if (proc_node_port(c->nodes[i]) == port ||
            proc_node_http_port(c->nodes[i]) == port || c->peer_port[i] == port)
            return true;
    return false;
}

/* Three distinct free ports per node. */
static shoal_err
cluster_pick_ports(proc_cluster *c)
{
    for (size_t i = 0; i < c->n; i++) {
        uint16_t p[3] = {0, 0, 0};
        for (size_t j = 0; j < 3; j++) {
            shoal_err rc;
            do {
                if ((rc = proc_free_port(&p[j])) != SHOAL_OK)
                    return rc;
            } while (cluster_port_used(c, i, p[j]) || (j > 0 && p[j] == p[0]) ||
                     (j > 1 && p[j] == p[1]));
        }
        node_set_ports(c->nodes[i], p[0], p[1]);
        c->peer_port[i] = p[2];
    }
    return SHOAL_OK;
}

static shoal_err
cluster_write_file(const proc_cluster *c)
{
    char text[8192];
    size_t len = (size_t) snprintf(text, sizeof(text),
                                   "# written by tests/support/proc.c\n"
                                   "epoch = 1\nshards = %u\nreplicas = %u\n"
                                   "write_quorum = %u\nhash_key = %s\n",
                                   c->shards, c->r, c->w, c->hash_key);
    for (size_t i = 0; i < c->n && len < sizeof(text); i++)
        len += (size_t) snprintf(
            text + len, sizeof(text) - len,
            "node = n%zu tcp://127.0.0.1:%u tcp://127.0.0.1:%u\n", i + 1,
            proc_node_port(c->nodes[i]), c->peer_port[i]);
    return len < sizeof(text) ? write_private(c->file, text) : SHOAL_EIO;
}

/* Spawn every node that is not running, then wait for each of them.
 * *in_use_out: a failure was a port taken meanwhile. */
static shoal_err
cluster_spawn_wait(proc_cluster *c, bool *in_use_out)
{
    size_t off[PROC_CLUSTER_MAX] = {0};
    bool spawned[PROC_CLUSTER_MAX] = {false};
    shoal_err rc = SHOAL_OK;
    *in_use_out = false;
    for (size_t i = 0; i < c->n && rc == SHOAL_OK; i++) {
        if (proc_node_running(c->nodes[i]))
            continue;
        rc = node_spawn(c->nodes[i], &off[i]);
        spawned[i] = rc == SHOAL_OK;
    }
    for (size_t i = 0; i < c->n; i++) {
        if (!spawned[i])
            continue;
        shoal_err r = node_wait_ready(c->nodes[i]);
        if (r == SHOAL_EUNAVAILABLE && node_addr_in_use(c->nodes[i], off[i]))
            *in_use_out = true;
        if (rc == SHOAL_OK)
            rc = r;
    }
    return rc;
}

static shoal_err
cluster_open_nodes(proc_cluster *c, const proc_cluster_opts *o)
{
    const char *extra[64];
    size_t k = 0;
    extra[k++] = "--cluster";
    extra[k++] = c->file;
    for (size_t i = 0;
         o->extra_args != NULL && o->extra_args[i] != NULL && k < 63; i++)
        extra[k++] = o->extra_args[i];
    extra[k] = NULL;
    for (size_t i = 0; i < c->n; i++) {
        char id[32];
        snprintf(id, sizeof(id), "n%zu", i + 1);
        proc_node_opts no;
        proc_node_opts_default(&no);
        no.dir = o->dir;
        no.id = id;
        no.key_file = c->keys.node_file;
        no.fsync = o->fsync;
        no.extra_args = extra;
        no.env = o->env;
        no.ready_timeout_ms = o->ready_timeout_ms;
        no.port = 1; /* fixed: cluster_pick_ports sets the real ones */
        no.http_port = 2;
        shoal_err rc = proc_node_open(&no, &c->nodes[i]);
        if (rc != SHOAL_OK)
            return rc;
        c->seeds[i] = c->nodes[i]->url;
    }
    return SHOAL_OK;
}

static shoal_err
cluster_check_opts(const proc_cluster_opts *o, proc_cluster *c)
{
    c->n = o->n_nodes;
    c->r = o->replicas ? o->replicas : (c->n < 3 ? (uint32_t) c->n : 3);
    c->w = o->write_quorum ? o->write_quorum : c->r / 2 + 1;
    c->shards = o->shards ? o->shards : 256;
    if (o->dir == NULL || c->n == 0 || c->n > PROC_CLUSTER_MAX || c->r > c->n ||
        c->w > c->r) {
        c->n = 0; /* nothing opened: proc_cluster_free has no node */
        return SHOAL_EINVAL;
    }
    snprintf(c->file, sizeof(c->file), "%s/cluster.conf", o->dir);
    return SHOAL_OK;
}

shoal_err
proc_cluster_start(const proc_cluster_opts *o, proc_cluster **out)
{
    *out = NULL;
    proc_cluster *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return SHOAL_ENOMEM;
    shoal_err rc = cluster_check_opts(o, c);
    if (rc == SHOAL_OK && (rc = proc_keys_make(o->dir, &c->keys)) == SHOAL_OK &&
        (rc = cluster_peer_key(c)) == SHOAL_OK &&
        (rc = cluster_hash_key(c)) == SHOAL_OK)
        rc = cluster_open_nodes(c, o);
    for (int attempt = 0; rc == SHOAL_OK && attempt < 5; attempt++) {
        bool in_use = false;
        if ((rc = cluster_pick_ports(c)) != SHOAL_OK ||
            (rc = cluster_write_file(c)) != SHOAL_OK)
            break;
        if ((rc = cluster_spawn_wait(c, &in_use)) == SHOAL_OK || !in_use)
            break;
        for (size_t i = 0; i < c->n; i++)
            proc_node_kill(c->nodes[i]);
        rc = SHOAL_OK; /* a port was taken: pick all anew */
        if (attempt == 4)
            rc = SHOAL_EUNAVAILABLE;
    }
    if (rc != SHOAL_OK) {
        proc_cluster_free(c);
        return rc;
    }
    *out = c;
    return SHOAL_OK;
}

size_t
proc_cluster_size(const proc_cluster *c)
{
    return c->n;
}

proc_node *
proc_cluster_node(proc_cluster *c, size_t i)
{
    return i < c->n ? c->nodes[i] : NULL;
}

uint16_t
proc_cluster_peer_port(const proc_cluster *c, size_t i)
{
    return i < c->n ? c->peer_port[i] : 0;
}

shoal_err
proc_cluster_launch(proc_cluster *c)
{
    bool in_use = false;
    return cluster_spawn_wait(c, &in_use);
}

const char *const *
proc_cluster_seeds(const proc_cluster *c, size_t *n_out)
{
    *n_out = c->n;
    return c->seeds;
}

const char *
proc_cluster_key_file(const proc_cluster *c)
{
    return c->keys.admin_file;
}

const proc_keys *
proc_cluster_keys(const proc_cluster *c)
{
    return &c->keys;
}

const char *
proc_cluster_node_keys(const proc_cluster *c)
{
    return c->keys.node_file;
}

const char *
proc_cluster_file(const proc_cluster *c)
{
    return c->file;
}

shoal_err
proc_cluster_stop(proc_cluster *c, uint32_t timeout_ms)
{
    uint64_t deadline = proc_now_ms() + timeout_ms;
    shoal_err rc = SHOAL_OK;
    for (size_t i = 0; i < c->n; i++)
        if (c->nodes[i]->pid > 0)
            kill(c->nodes[i]->pid, SIGTERM);
    for (size_t i = 0; i < c->n; i++) {
        proc_node *n = c->nodes[i];
        if (n->pid <= 0)
            continue;
        int st = 0;
        shoal_err r = proc_wait(n->pid, (uint32_t) ms_left(deadline), &st);
        if (r == SHOAL_ETIMEOUT) {
            kill(n->pid, SIGKILL);
            proc_wait(n->pid, 30000, &st);
        }
        n->last_code = proc_exit_code(st);
        n->pid = -1;
        if (r == SHOAL_OK && n->last_code != 0)
            r = SHOAL_EIO;
        if (rc == SHOAL_OK)
            rc = r;
    }
    return rc;
}

void
proc_cluster_free(proc_cluster *c)
{
    if (c == NULL)
        return;
    for (size_t i = 0; i < c->n; i++)
        proc_node_free(c->nodes[i]);
    proc_keys_wipe(&c->keys);
    free(c);
}

/* ---- raw SP client ----------------------------------------------------------
 */

struct proc_sp {
    int fd;
    uint32_t next_id;
};

static void
be_put32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t) (v >> (24 - 8 * i));
}

static void
be_put64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t) (v >> (56 - 8 * i));
}

static uint64_t
be_get(const uint8_t *p, int n)
{
    uint64_t v = 0;
    for (int i = 0; i < n; i++)
        v = (v << 8) | p[i];
    return v;
}

shoal_err
proc_sp_connect(uint16_t port, uint32_t timeout_ms, proc_sp **out)
{
    *out = NULL;
    ignore_sigpipe();
    uint64_t deadline = proc_now_ms() + timeout_ms;
    int fd = -1;
    shoal_err rc = tcp_connect(port, timeout_ms, &fd);
    if (rc != SHOAL_OK)
        return rc;
    uint8_t hs[8] = {0, 'S', 'P', 0, 0, SP_PROTO_REQ0, 0, 0};
    uint8_t peer[8];
    if ((rc = write_all(fd, hs, sizeof(hs), deadline)) == SHOAL_OK &&
        (rc = read_all(fd, peer, sizeof(peer), deadline)) == SHOAL_OK &&
        (memcmp(peer, "\0SP\0", 4) != 0 ||
         be_get(peer + 4, 2) != SP_PROTO_REP0))
        rc = SHOAL_EIO;
    proc_sp *c = rc == SHOAL_OK ? calloc(1, sizeof(*c)) : NULL;
    if (c == NULL) {
        close(fd);
        return rc != SHOAL_OK ? rc : SHOAL_ENOMEM;
    }
    c->fd = fd;
    c->next_id = 1;
    *out = c;
    return SHOAL_OK;
}

shoal_err
proc_sp_send(proc_sp *c, uint32_t req_id, const void *body, size_t len)
{
    uint64_t deadline = proc_now_ms() + IO_TIMEOUT_MS;
    uint8_t hdr[12];
    be_put64(hdr, (uint64_t) len + 4);
    be_put32(hdr + 8, req_id | 0x80000000u);
    shoal_err rc = write_all(c->fd, hdr, sizeof(hdr), deadline);
    if (rc == SHOAL_OK && len > 0)
        rc = write_all(c->fd, body, len, deadline);
    return rc;
}

shoal_err
proc_sp_send_raw(proc_sp *c, const void *bytes, size_t len)
{
    return write_all(c->fd, bytes, len, proc_now_ms() + IO_TIMEOUT_MS);
}

shoal_err
proc_sp_recv(proc_sp *c, uint32_t timeout_ms, uint32_t *req_id_out,
             uint8_t **body_out, size_t *len_out)
{
    *body_out = NULL;
    uint64_t deadline = proc_now_ms() + timeout_ms;
    uint8_t hdr[12];
    shoal_err rc = read_all(c->fd, hdr, 8, deadline);
    if (rc != SHOAL_OK)
        return rc;
    uint64_t len = be_get(hdr, 8);
    if (len < 4 || len > SP_MAX_MSG)
        return SHOAL_EIO;
    if ((rc = read_all(c->fd, hdr + 8, 4, deadline)) != SHOAL_OK)
        return rc;
    uint8_t *body = malloc(len - 4 + 1);
    if (body == NULL)
        return SHOAL_ENOMEM;
    if ((rc = read_all(c->fd, body, len - 4, deadline)) != SHOAL_OK) {
        free(body);
        return rc;
    }
    *req_id_out = (uint32_t) be_get(hdr + 8, 4) & 0x7fffffffu;
    *body_out = body;
    *len_out = len - 4;
    return SHOAL_OK;
}

shoal_err
proc_sp_call(proc_sp *c, const void *body, size_t len, uint32_t timeout_ms,
             uint8_t **resp_out, size_t *resp_len_out)
{
    *resp_out = NULL;
    uint32_t id = c->next_id++ & 0x7fffffffu;
    uint64_t deadline = proc_now_ms() + timeout_ms;
    shoal_err rc = proc_sp_send(c, id, body, len);
    while (rc == SHOAL_OK) {
        uint32_t got = 0;
        rc = proc_sp_recv(c, (uint32_t) ms_left(deadline), &got, resp_out,
                          resp_len_out);
        if (rc != SHOAL_OK || got == id)
            break;
        free(*resp_out); /* a late answer to an earlier call */
        *resp_out = NULL;
    }
    return rc;
}

bool
proc_sp_closed(proc_sp *c, uint32_t timeout_ms)
{
    uint64_t deadline = proc_now_ms() + timeout_ms;
    for (;;) {
        uint8_t buf[4096];
        ssize_t n = recv(c->fd, buf, sizeof(buf), 0);
        if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR))
            return true;
        if (n > 0)
            continue;
        if (ms_left(deadline) == 0)
            return false;
        struct pollfd pfd = {.fd = c->fd, .events = POLLIN};
        poll(&pfd, 1, ms_left(deadline));
    }
}

void
proc_sp_close(proc_sp *c)
{
    if (c == NULL)
        return;
    close(c->fd);
    free(c);
}

/* ---- frames -----------------------------------------------------------------
 */

shoal_err
proc_frame_seal(wire_sender *s, const wire_key *k, uint8_t flags,
                const void *body, size_t len, uint8_t **out, size_t *out_len)
{
    size_t cap = wire_frame_len(len, k != NULL);
    uint8_t *buf = malloc(cap);
    *out = NULL;
    if (buf == NULL)
        return SHOAL_ENOMEM;
    shoal_err rc = wire_seal(s, k, flags, body, len, buf, cap, out_len, NULL);
    if (rc != SHOAL_OK) {
        free(buf);
        return rc;
    }
    *out = buf;
    return SHOAL_OK;
}

shoal_err
proc_reqframe_pack(Shoal__Request *const *reqs, size_t n, uint8_t **out,
                   size_t *out_len)
{
    Shoal__RequestFrame rf = SHOAL__REQUEST_FRAME__INIT;
    rf.n_reqs = n;
    rf.reqs = (Shoal__Request **) reqs;
    size_t len = shoal__request_frame__get_packed_size(&rf);
    uint8_t *buf = malloc(len > 0 ? len : 1);
    *out = NULL;
    if (buf == NULL)
        return SHOAL_ENOMEM;
    *out_len = shoal__request_frame__pack(&rf, buf);
    *out = buf;
    return SHOAL_OK;
}

shoal_err
proc_reply_decode(const wire_key *k, uint8_t *frame, size_t len,
                  proc_reply *out)
{
    memset(out, 0, sizeof(*out));
    wire_hdr h;
    shoal_err rc = wire_parse_hdr(frame, len, &h);
    if (rc != SHOAL_OK)
        return rc;
    if (h.flags & WIRE_F_ERROR) {
        out->is_error = true;
        return wire_error_status(frame, len, &out->error);
    }
    const uint8_t *body = NULL;
    size_t blen = 0;
    if (h.flags & WIRE_F_PLAIN) {
        rc = wire_open_plain(frame, len, &body, &blen);
    } else if (k == NULL) {
        rc = SHOAL_EAUTH;
    } else {
        rc = wire_open(k, frame, len, &blen);
        body = frame + WIRE_HDR_BYTES;
    }
    if (rc != SHOAL_OK)
        return rc;
    out->frame = shoal__response_frame__unpack(NULL, blen, body);
    return out->frame != NULL ? SHOAL_OK : SHOAL_EINVAL;
}

void
proc_reply_fini(proc_reply *r)
{
    if (r != NULL && r->frame != NULL)
        shoal__response_frame__free_unpacked(r->frame, NULL);
    if (r != NULL)
        r->frame = NULL;
}

/* ---- relay ------------------------------------------------------------------
 */

struct proc_relay {
    int lfd;
    uint16_t port;
    _Atomic uint16_t target;
    int wake[2];
    pthread_t thr;
    pthread_mutex_t mu; /* guards cap */
    sbuf cap;
    int pairs[MAX_RELAY_PAIRS][2]; /* client fd, server fd; -1 unused */
};

static void
relay_accept(proc_relay *r)
{
    int cfd = accept(r->lfd, NULL, NULL);
    if (cfd < 0)
        return;
    int sfd = -1;
    if (tcp_connect(atomic_load(&r->target), 5000, &sfd) != SHOAL_OK) {
        close(cfd);
        return;
    }
    set_nonblock(cfd);
    fcntl(cfd, F_SETFD, FD_CLOEXEC);
    for (size_t i = 0; i < MAX_RELAY_PAIRS; i++) {
        if (r->pairs[i][0] < 0) {
            r->pairs[i][0] = cfd;
            r->pairs[i][1] = sfd;
            return;
        }
    }
    close(cfd);
    close(sfd);
}

/* Copy what is readable on pair i, side s, to the other side. */
static void
relay_copy(proc_relay *r, size_t i, int s)
{
    uint8_t buf[65536];
    ssize_t n = recv(r->pairs[i][s], buf, sizeof(buf), 0);
    if (n < 0 && (errno == EAGAIN || errno == EINTR))
        return;
    if (n > 0) {
        pthread_mutex_lock(&r->mu);
        sbuf_add(&r->cap, buf, (size_t) n);
        pthread_mutex_unlock(&r->mu);
        if (write_all(r->pairs[i][1 - s], buf, (size_t) n,
                      proc_now_ms() + IO_TIMEOUT_MS) == SHOAL_OK)
            return;
    }
    close(r->pairs[i][0]);
    close(r->pairs[i][1]);
    r->pairs[i][0] = r->pairs[i][1] = -1;
}

static void *
relay_main(void *arg)
{
    proc_relay *r = arg;
    for (;;) {
        struct pollfd pfd[2 + 2 * MAX_RELAY_PAIRS];
        size_t np = 0;
        pfd[np++] = (struct pollfd){.fd = r->wake[0], .events = POLLIN};
        pfd[np++] = (struct pollfd){.fd = r->lfd, .events = POLLIN};
        for (size_t i = 0; i < MAX_RELAY_PAIRS; i++)
            for (int s = 0; s < 2; s++)
                pfd[np++] =
                    (struct pollfd){.fd = r->pairs[i][s], .events = POLLIN};
        if (poll(pfd, (nfds_t) np, -1) < 0 && errno != EINTR)
            break;
        if (pfd[0].revents != 0)
            break;
        if (pfd[1].revents != 0)
            relay_accept(r);
        for (size_t i = 0; i < MAX_RELAY_PAIRS; i++)
            for (int s = 0; s < 2; s++)
                if (r->pairs[i][s] >= 0 && pfd[2 + 2 * i + (size_t) s].revents)
                    relay_copy(r, i, s);
    }
    return NULL;
}

static shoal_err
relay_listen(proc_relay *r)
{
    r->lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (r->lfd < 0)
        return SHOAL_EIO;
    struct sockaddr_in a = loopback(0);
    socklen_t alen = sizeof(a);
    if (bind(r->lfd, (struct sockaddr *) &a, sizeof(a)) != 0 ||
        listen(r->lfd, 16) != 0 ||
        getsockname(r->lfd, (struct sockaddr *) &a, &alen) != 0)
        return SHOAL_EIO;
    r->port = ntohs(a.sin_port);
    return SHOAL_OK;
}

shoal_err
proc_relay_open(uint16_t target_port, proc_relay **out)
{
    *out = NULL;
    ignore_sigpipe();
    proc_relay *r = calloc(1, sizeof(*r));
    if (r == NULL)
        return SHOAL_ENOMEM;
    atomic_store(&r->target, target_port);
    r->wake[0] = r->wake[1] = -1;
    for (size_t i = 0; i < MAX_RELAY_PAIRS; i++)
        r->pairs[i][0] = r->pairs[i][1] = -1;
    pthread_mutex_init(&r->mu, NULL);
    shoal_err rc = relay_listen(r);
    if (rc == SHOAL_OK && pipe(r->wake) != 0)
        rc = SHOAL_EIO;
    if (rc == SHOAL_OK && pthread_create(&r->thr, NULL, relay_main, r) != 0)
        rc = SHOAL_EIO;
    if (rc != SHOAL_OK) {
        if (r->lfd >= 0)
            close(r->lfd);
        if (r->wake[0] >= 0) {
            close(r->wake[0]);
            close(r->wake[1]);
        }
        pthread_mutex_destroy(&r->mu);
        free(r);
        return rc;
    }
    *out = r;
    return SHOAL_OK;
}

uint16_t
proc_relay_port(const proc_relay *r)
{
    return r->port;
}

void
proc_relay_set_target(proc_relay *r, uint16_t target_port)
{
    atomic_store(&r->target, target_port);
}

shoal_err
proc_relay_capture(proc_relay *r, uint8_t **out, size_t *len_out)
{
    pthread_mutex_lock(&r->mu);
    uint8_t *copy = malloc(r->cap.len + 1);
    if (copy != NULL) {
        if (r->cap.len > 0)
            memcpy(copy, r->cap.p, r->cap.len);
        *len_out = r->cap.len;
    }
    pthread_mutex_unlock(&r->mu);
    *out = copy;
    return copy != NULL ? SHOAL_OK : SHOAL_ENOMEM;
}

size_t
proc_relay_bytes(proc_relay *r)
{
    pthread_mutex_lock(&r->mu);
    size_t n = r->cap.len;
    pthread_mutex_unlock(&r->mu);
    return n;
}

void
proc_relay_close(proc_relay *r)
{
    if (r == NULL)
        return;
    ssize_t w = write(r->wake[1], "x", 1);
    (void) w;
    pthread_join(r->thr, NULL);
    for (size_t i = 0; i < MAX_RELAY_PAIRS; i++)
        for (int s = 0; s < 2; s++)
            if (r->pairs[i][s] >= 0)
                close(r->pairs[i][s]);
    close(r->lfd);
    close(r->wake[0]);
    close(r->wake[1]);
    pthread_mutex_destroy(&r->mu);
    free(r->cap.p);
    free(r);
}

/* ---- state digest -----------------------------------------------------------
 */

static uint64_t
fnv_add(uint64_t h, const void *p, size_t len)
{
    const uint8_t *b = p;
    for (size_t i = 0; i < len; i++)
        h = (h ^ b[i]) * 0x100000001b3ull;
    return h;
}

static uint64_t
digest_item(uint64_t h, const shoal_item *it)
{
    uint64_t lens[4] = {it->klen, it->vlen, it->version, it->expire_at};
    h = fnv_add(h, lens, sizeof(lens));
    h = fnv_add(h, it->key, it->klen);
    return it->vlen > 0 ? fnv_add(h, it->val, it->vlen) : h;
}

shoal_err
proc_scan_digest(struct shoal *db, uint64_t *digest_out, size_t *n_keys_out)
{
    shoal_scan_req r;
    memset(&r, 0, sizeof(r));
    r.limit = 1000;
    uint8_t token[70000];
    uint64_t h = 0xcbf29ce484222325ull;
    size_t n = 0;
    for (;;) {
        shoal_scan_page *p = NULL;
        shoal_err rc = shoal_scan(db, &r, &p, NULL);
        if (rc != SHOAL_OK)
            return rc;
        for (size_t i = 0; i < p->n_items; i++)
            h = digest_item(h, &p->items[i]);
        n += p->n_items;
        bool more = p->more;
        if (more && p->token_len > sizeof(token)) {
            shoal_scan_page_free(p);
            return SHOAL_EIO;
        }
        if (more) {
            memcpy(token, p->token, p->token_len);
            r.token = token;
            r.token_len = p->token_len;
        }
        shoal_scan_page_free(p);
        if (!more)
            break;
    }
    *digest_out = h;
    *n_keys_out = n;
    return SHOAL_OK;
}
