/*
 * ctl_keygen.c -- `shoalctl keygen`: make a key and write its key-file line.
 *
 * A node's key file lists every key it accepts (several lines, made with
 * --append); a client's key file holds its one key. Both hold secrets, so
 * the file is created with mode 0600 and a file that exists is never
 * silently replaced:
 *   (default)  create FILE, refusing (SHOAL_EEXISTS, exit 3) if it exists;
 *   --force    write a temporary file beside FILE (mkstemp, 0600), fsync,
 *              rename it over FILE, fsync the directory: FILE is either the
 *              old or the new key file, never a torn one;
 *   --append   add a line to FILE (created when missing), after checking
 *              that FILE parses as a key file and does not hold the id yet;
 *              its mode is set to 0600.
 * Symlinks are not followed for FILE itself (O_NOFOLLOW), and FILE must be
 * a regular file we own. The secret is wiped from memory after use.
 */
#include "ctl_int.h"

#include "proto/mem.h"
#include "proto/wire.h"

#include <errno.h>
#include <fcntl.h>
#include <sodium.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static const char keygen_help[] =
    "usage: shoalctl [global options] keygen --id N --role ROLE [--prefix P]\n"
    "                [--out FILE] [--force | --append]\n"
    "\n"
    "Make a random key and print its key-file line, or write it to FILE.\n"
    "  --id N        key id, 1..4294967295, unique within a node's key file\n"
    "  --role ROLE   read (get ttl exists scan count), write (read + put del\n"
    "                incr), admin (write + stats), peer (node to node)\n"
    "  --prefix P    confine the key to keys beginning with P (hex with "
    "--hex)\n"
    "  --out FILE    write FILE (mode 0600); refused if FILE exists, unless\n"
    "  --force       replace FILE atomically, or\n"
    "  --append      add the line to FILE (a node's key file, one line per\n"
    "                key; the id must be new there)\n"
    "A node's key file: run keygen --append once per key. A client's key "
    "file:\n"
    "one keygen --out. With --json: {\"id\",\"role\",\"prefix_hex\",\"out\"}, "
    "or\n"
    "{\"id\",\"role\",\"prefix_hex\",\"line\"} when printing to stdout.\n";

typedef struct keygen_args {
    uint64_t id;
    const char *role_s, *prefix_s, *out;
    bool force, append, help, has_id;
    wire_role role;
} keygen_args;

static shoal_err
errno_status(int e)
{
    if (e == EACCES || e == EPERM || e == EROFS)
        return SHOAL_EPERM;
    if (e == ENOSPC || e == EDQUOT)
        return SHOAL_ENOSPC;
    return SHOAL_EIO;
}

static int
io_fail(ctl *c, const char *op, const char *path)
{
    int e = errno;
    return ctl_fail(c, errno_status(e), "%s %s: %s", op, path, strerror(e));
}

static bool
write_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return false;
        p += w;
        n -= (size_t) w;
    }
    return true;
}

/* The directory part of path ("." when there is none) into buf. */
static void
dir_of(const char *path, char *buf, size_t len)
{
    const char *slash = strrchr(path, '/');
    if (slash == NULL)
        snprintf(buf, len, ".");
    else if (slash == path)
        snprintf(buf, len, "/");
    else
        snprintf(buf, len, "%.*s", (int) (slash - path), path);
}

static int
fsync_dir(ctl *c, const char *path)
{
    char dir[4096];
    dir_of(path, dir, sizeof(dir));
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return io_fail(c, "open directory", dir);
    int rc = fsync(fd);
    int e = errno;
    close(fd);
    errno = e;
    return rc == 0 ? CTL_EXIT_OK : io_fail(c, "fsync directory", dir);
}

/* Create path, which must not exist. */
static int
write_new(ctl *c, const char *path, const char *line)
{
    int fd =
        open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0 && errno == EEXIST)
        return ctl_fail(c, SHOAL_EEXISTS,
                        "%s exists; --force replaces it, --append adds the "
                        "key to it",
                        path);
    if (fd < 0)
        return io_fail(c, "create", path);
    int ec = CTL_EXIT_OK;
    if (fchmod(fd, 0600) != 0 || !write_all(fd, line, strlen(line)) ||
        fsync(fd) != 0) {
        ec = io_fail(c, "write", path);
        unlink(path);
    }
    close(fd);
    return ec == CTL_EXIT_OK ? fsync_dir(c, path) : ec;
}

/* Replace path atomically (--force). */
static int
write_replace(ctl *c, const char *path, const char *line)
{
    size_t n = strlen(path) + sizeof(".tmpXXXXXX");
    char *tmp = mem_alloc(n);
    if (tmp == NULL)
        return ctl_fail(c, SHOAL_ENOMEM, NULL);
    snprintf(tmp, n, "%s.tmpXXXXXX", path);
    int ec = CTL_EXIT_OK;
    int fd = mkstemp(tmp); /* mode 0600 */
    if (fd < 0) {
        ec = io_fail(c, "create", tmp);
        goto out;
    }
    if (fchmod(fd, 0600) != 0 || !write_all(fd, line, strlen(line)) ||
        fsync(fd) != 0)
        ec = io_fail(c, "write", tmp);
    close(fd);
    if (ec == CTL_EXIT_OK && rename(tmp, path) != 0)
        ec = io_fail(c, "rename onto", path);
    if (ec != CTL_EXIT_OK)
        unlink(tmp);
    else
        ec = fsync_dir(c, path);
out:
    mem_free(tmp);
    return ec;
}

/* Check the key file text already in FILE before appending to it. */
static int
check_existing(ctl *c, const char *path, const ctl_bytes *text, uint32_t id)
{
    char err[256] = "";
    wire_keyring *kr = NULL;
    shoal_err rc = wire_keyring_parse((const char *) text->ptr, text->len, &kr,
                                      err, sizeof(err));
    if (rc != SHOAL_OK)
        return ctl_fail(c, rc, "%s is not a key file (%s); not appending", path,
                        err);
    bool dup = wire_keyring_find(kr, id) != NULL;
    wire_keyring_free(kr);
    if (dup)
        return ctl_fail(c, SHOAL_EEXISTS, "%s already holds key id %u", path,
                        (unsigned) id);
    return CTL_EXIT_OK;
}

/* Whether the text has a line besides blank lines and comments (an
 * empty key file does not parse, but appending to one is fine). */
static bool
has_keys(const ctl_bytes *t)
{
    size_t i = 0;
    while (i < t->len) {
        while (i < t->len && strchr(" \t\r", t->ptr[i]) && t->ptr[i])
            i++;
        if (i < t->len && t->ptr[i] != '\n' && t->ptr[i] != '#')
            return true;
        while (i < t->len && t->ptr[i] != '\n')
            i++;
        i++;
    }
    return false;
}

/* Read what fd holds, check it, and append line (after a newline if the
 * file does not end with one). */
static int
append_checked(ctl *c, int fd, const char *path, const char *line, uint32_t id)
{
    ctl_bytes text = {0};
    shoal_err rc = ctl_read_fd(fd, (size_t) 16 << 20, &text);
    if (rc != SHOAL_OK)
        return ctl_fail(c, rc, "reading %s", path);
    int ec = has_keys(&text) ? check_existing(c, path, &text, id) : 0;
    bool need_nl = text.len > 0 && text.ptr[text.len - 1] != '\n';
    sodium_memzero(text.ptr, text.len);
    ctl_bytes_free(&text);
    if (ec != CTL_EXIT_OK)
        return ec;
    if ((need_nl && !write_all(fd, "\n", 1)) ||
        !write_all(fd, line, strlen(line)) || fsync(fd) != 0)
        return io_fail(c, "append to", path);
    return CTL_EXIT_OK;
}

static int
write_append(ctl *c, const char *path, const char *line, uint32_t id)
{
    int fd =
        open(path, O_RDWR | O_APPEND | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0)
        return io_fail(c, "open", path);
    struct stat st;
    int ec = CTL_EXIT_OK;
    if (fstat(fd, &st) != 0) {
        ec = io_fail(c, "stat", path);
    } else if (!S_ISREG(st.st_mode) || st.st_uid != geteuid()) {
        ec = ctl_fail(c, SHOAL_EPERM, "%s is not a regular file of ours", path);
    } else if (fchmod(fd, 0600) != 0) {
        ec = io_fail(c, "chmod", path);
    } else {
        ec = append_checked(c, fd, path, line, id);
    }
    close(fd);
    return ec == CTL_EXIT_OK ? fsync_dir(c, path) : ec;
}

static int
report(ctl *c, const keygen_args *a, const wire_key *k, const char *line)
{
    ctl_sb sb = {0};
    if (c->json) {
        ctl_sb_printf(&sb, "{\"id\":%u,\"role\":\"%s\",\"prefix_hex\":\"",
                      (unsigned) k->id, wire_role_name(k->role));
        ctl_sb_hex(&sb, k->prefix, k->prefix_len);
        ctl_sb_printf(&sb, "\",\"%s\":", a->out ? "out" : "line");
        const char *v = a->out ? a->out : line;
        ctl_sb_json_str(&sb, v, strcspn(v, a->out ? "" : "\n"));
        ctl_sb_put(&sb, "}\n", 2);
    } else if (a->out) {
        ctl_sb_printf(&sb, "%s key id=%u role=%s to %s\n",
                      a->append ? "added" : "wrote", (unsigned) k->id,
                      wire_role_name(k->role), a->out);
    } else {
        ctl_sb_put(&sb, line, strlen(line));
    }
    int ec = ctl_sb_flush(c, &sb, stdout);
    if (sb.ptr)
        sodium_memzero(sb.ptr, sb.cap);
    ctl_sb_free(&sb);
    return ec;
}

static int
keygen_check(ctl *c, keygen_args *a)
{
    if (!a->has_id)
        return ctl_usage(c, "--id N is required");
    if (a->role_s == NULL)
        return ctl_usage(c, "--role is required");
    if (wire_role_parse(a->role_s, &a->role) != SHOAL_OK)
        return ctl_usage(c, "--role '%s': read, write, admin or peer",
                         a->role_s);
    if (a->force && a->append)
        return ctl_usage(c, "--force and --append exclude each other");
    if ((a->force || a->append) && a->out == NULL)
        return ctl_usage(c, "--%s needs --out FILE",
                         a->force ? "force" : "append");
    return CTL_EXIT_OK;
}

/* Generate the key and write or print it. */
static int
keygen_make(ctl *c, const keygen_args *a, const ctl_bytes *prefix)
{
    wire_key k;
    char line[WIRE_KEY_LINE_MAX];
    shoal_err rc = wire_key_generate((uint32_t) a->id, a->role, prefix->ptr,
                                     prefix->len, &k);
    if (rc == SHOAL_OK)
        rc = wire_key_format(&k, line, sizeof(line));
    int ec = rc != SHOAL_OK ? ctl_fail(c, rc, "making the key") : 0;
    if (ec == CTL_EXIT_OK && a->out && a->append)
        ec = write_append(c, a->out, line, k.id);
    else if (ec == CTL_EXIT_OK && a->out && a->force)
        ec = write_replace(c, a->out, line);
    else if (ec == CTL_EXIT_OK && a->out)
        ec = write_new(c, a->out, line);
    if (ec == CTL_EXIT_OK)
        ec = report(c, a, &k, line);
    sodium_memzero(&k, sizeof(k));
    sodium_memzero(line, sizeof(line));
    return ec;
}

int
ctl_cmd_keygen(ctl *c, int argc, char **argv)
{
    keygen_args a = {0};
    const ctl_opt opts[] = {
        {"--id", NULL, CTL_OPT_U64, &a.id, &a.has_id, 1, UINT32_MAX, NULL},
        {"--role", NULL, CTL_OPT_STR, &a.role_s, NULL, 0, 0, NULL},
        {"--prefix", NULL, CTL_OPT_STR, &a.prefix_s, NULL, 0, 0, NULL},
        {"--out", NULL, CTL_OPT_STR, &a.out, NULL, 0, 0, NULL},
        {"--force", NULL, CTL_OPT_FLAG, &a.force, NULL, 0, 0, NULL},
        {"--append", NULL, CTL_OPT_FLAG, &a.append, NULL, 0, 0, NULL},
        {"--help", "-h", CTL_OPT_FLAG, &a.help, NULL, 0, 0, NULL},
        {NULL, NULL, CTL_OPT_FLAG, NULL, NULL, 0, 0, NULL},
    };
    int ec = ctl_parse(c, argc, argv, opts, NULL, 0, 0, NULL);
    if (ec == CTL_EXIT_OK && a.help) {
        fputs(keygen_help, stdout);
        return CTL_EXIT_OK;
    }
    if (ec == CTL_EXIT_OK)
        ec = keygen_check(c, &a);
    ctl_bytes prefix = {0};
    if (ec == CTL_EXIT_OK)
        ec =
            ctl_arg_bytes(c, "--prefix", a.prefix_s ? a.prefix_s : "", &prefix);
    if (ec == CTL_EXIT_OK && prefix.len > WIRE_PREFIX_MAX)
        ec = ctl_usage(c, "--prefix: at most %d bytes", WIRE_PREFIX_MAX);
    if (ec == CTL_EXIT_OK)
        ec = keygen_make(c, &a, &prefix);
    ctl_bytes_free(&prefix);
    return ec;
}
