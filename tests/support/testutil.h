/*
 * testutil.h -- helpers shared by the cmocka suites: temporary directories,
 * seeds that print and replay, a settable fake clock.
 */
#ifndef SHOAL_TESTS_SUPPORT_TESTUTIL_H
#define SHOAL_TESTS_SUPPORT_TESTUTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* cmocka setup/teardown: *state becomes a fresh mkdtemp directory (char *)
 * under $SHOAL_TEST_TMP, else /var/tmp (a real disk, unlike tmpfs /tmp). */
int tu_tmpdir_up(void **state);
int tu_tmpdir_down(void **state);

/* Remove a directory tree; 0 on success. */
int tu_rm_rf(const char *path);

/* Seed from $SHOAL_SEED, else from the time; printed once per call so a
 * failing run can be replayed. */
uint64_t tu_seed(const char *what);

/* splitmix64 step. */
uint64_t tu_rand(uint64_t *state);

/* Whether the long profile was asked for ($SHOAL_TEST_LONG non-empty, not 0).
 */
bool tu_long(void);

/* Fake wall clock for TTL tests: installs itself as the clock source. */
void tu_clock_fake(uint64_t start_ms);
void tu_clock_advance(uint64_t ms);
void tu_clock_real(void);

/* Number of files in dir whose name starts with prefix (-1 on error). */
int tu_count_files(const char *dir, const char *prefix);

#endif
