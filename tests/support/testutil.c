/*
 * testutil.c -- see testutil.h.
 */
#define _XOPEN_SOURCE 700 /* nftw */
#include "tests/support/testutil.h"

#include "proto/clock.h"

#include <dirent.h>
#include <ftw.h>
#include <inttypes.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

int
tu_tmpdir_up(void **state)
{
    const char *base = getenv("SHOAL_TEST_TMP");
    char tmpl[512];
    snprintf(tmpl, sizeof(tmpl), "%s/shoal-test-XXXXXX",
             base != NULL && base[0] != '\0' ? base : "/var/tmp");
    char *d = mkdtemp(tmpl);
    if (d == NULL)
        return -1;
    *state = strdup(d);
    return *state == NULL ? -1 : 0;
}

static int
rm_one(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void) sb;
    (void) flag;
    (void) ftw;
    return remove(path);
}

int
tu_rm_rf(const char *path)
{
    return nftw(path, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

int
tu_tmpdir_down(void **state)
{
    if (*state != NULL) {
        tu_rm_rf(*state);
        free(*state);
        *state = NULL;
    }
    return 0;
}

uint64_t
tu_seed(const char *what)
{
    const char *e = getenv("SHOAL_SEED");
    uint64_t seed;
    if (e != NULL && e[0] != '\0') {
        seed = strtoull(e, NULL, 0);
    } else {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        seed = (uint64_t) ts.tv_nsec ^ ((uint64_t) ts.tv_sec << 20) ^
               (uint64_t) getpid();
    }
    printf("# %s: seed %" PRIu64 " (replay with SHOAL_SEED=%" PRIu64 ")\n",
           what, seed, seed);
    fflush(stdout);
    return seed;
}

uint64_t
tu_rand(uint64_t *state)
{
    uint64_t z = (*state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

bool
tu_long(void)
{
    const char *e = getenv("SHOAL_TEST_LONG");
    return e != NULL && e[0] != '\0' && strcmp(e, "0") != 0;
}

static _Atomic uint64_t fake_now;

static uint64_t
fake_clock(void *arg)
{
    (void) arg;
    return atomic_load(&fake_now);
}

void
tu_clock_fake(uint64_t start_ms)
{
    atomic_store(&fake_now, start_ms);
    clock_set_source(fake_clock, NULL);
}

void
tu_clock_advance(uint64_t ms)
{
    atomic_fetch_add(&fake_now, ms);
}

void
tu_clock_real(void)
{
    clock_set_source(NULL, NULL);
}

int
tu_count_files(const char *dir, const char *prefix)
{
    DIR *d = opendir(dir);
    if (d == NULL)
        return -1;
    int n = 0;
    struct dirent *de;
    size_t plen = strlen(prefix);
    while ((de = readdir(d)) != NULL)
        if (strncmp(de->d_name, prefix, plen) == 0)
            n++;
    closedir(d);
    return n;
}
