/*
 * hello.c -- the README's libshoal example: connect, put, get, incr, scan.
 *
 *   hello [URL [KEY_FILE]]
 *
 * URL defaults to $SHOAL_URL, else tcp://127.0.0.1:7400; KEY_FILE to
 * $SHOAL_KEY_FILE. Without a key file it talks plaintext (a node started
 * with --insecure). Exits 0 when every call succeeded.
 *
 * Build: cc hello.c -lshoal (the Shoal build makes shoal_example_hello).
 */
#include <shoal.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int
fail(const char *what, shoal_err rc)
{
    fprintf(stderr, "hello: %s: %s\n", what, shoal_strerror(rc));
    return 1;
}

static shoal *
connect_db(int argc, char **argv, shoal_err *rc)
{
    const char *url = argc > 1 ? argv[1] : getenv("SHOAL_URL");
    const char *key_file = argc > 2 ? argv[2] : getenv("SHOAL_KEY_FILE");
    if (url == NULL || url[0] == '\0')
        url = "tcp://127.0.0.1:7400";
    const char *seeds[] = {url};

    shoal_opts o;
    shoal_opts_default(&o);
    o.seeds = seeds;
    o.n_seeds = 1;
    if (key_file != NULL && key_file[0] != '\0')
        o.key_file = key_file;
    else
        o.insecure = true;

    shoal *db = NULL;
    *rc = shoal_open(&o, &db);
    return db;
}

/* Print every key under prefix, a page at a time. */
static shoal_err
list_prefix(shoal *db, const char *prefix)
{
    shoal_scan_req req = {.prefix = prefix, .plen = strlen(prefix)};
    shoal_scan_page *page = NULL;
    unsigned char token[4096]; /* the next page's start */
    shoal_err rc;
    do {
        if ((rc = shoal_scan(db, &req, &page, NULL)) != SHOAL_OK)
            return rc;
        for (size_t i = 0; i < page->n_items; i++) {
            const shoal_item *it = &page->items[i];
            printf("  %.*s = %.*s (version %llu)\n", (int) it->klen,
                   (const char *) it->key, (int) it->vlen,
                   (const char *) it->val, (unsigned long long) it->version);
        }
        bool more = page->more;
        /* The token lives in the page: copy it before freeing the page. */
        req.token = NULL;
        req.token_len = 0;
        if (more && page->token_len <= sizeof(token)) {
            memcpy(token, page->token, page->token_len);
            req.token = token;
            req.token_len = page->token_len;
        }
        shoal_scan_page_free(page);
        if (more && req.token == NULL)
            return SHOAL_EIO;
    } while (req.token != NULL);
    return SHOAL_OK;
}

int
main(int argc, char **argv)
{
    shoal_err rc;
    shoal *db = connect_db(argc, argv, &rc);
    if (db == NULL)
        return fail("open", rc);

    const char *key = "hello:greeting", *val = "world";
    uint64_t version = 0;
    rc =
        shoal_put(db, key, strlen(key), val, strlen(val), NULL, &version, NULL);
    if (rc != SHOAL_OK)
        goto out;
    printf("put %s = %s (version %llu)\n", key, val,
           (unsigned long long) version);

    void *got = NULL;
    size_t got_len = 0;
    if ((rc = shoal_get(db, key, strlen(key), &got, &got_len, NULL, NULL)) !=
        SHOAL_OK)
        goto out;
    printf("get %s -> %.*s\n", key, (int) got_len, (const char *) got);
    shoal_free(got);

    int64_t visits = 0;
    const char *counter = "hello:visits";
    if ((rc = shoal_incr(db, counter, strlen(counter), 1, &visits, NULL,
                         NULL)) != SHOAL_OK)
        goto out;
    printf("incr %s -> %lld\n", counter, (long long) visits);

    printf("scan hello:\n");
    rc = list_prefix(db, "hello:");
out:
    shoal_close(db);
    if (rc != SHOAL_OK)
        return fail("call", rc);
    return 0;
}
