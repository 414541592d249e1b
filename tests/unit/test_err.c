/*
 * test_err.c -- the error list: stable values, names and messages.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "proto/err.h"

#include <string.h>

static void
test_err_values_are_stable(void **state)
{
    (void) state;
    /* These travel on the wire: changing one breaks every peer. */
    assert_int_equal(SHOAL_OK, 0);
    assert_int_equal(SHOAL_ENOTFOUND, 1);
    assert_int_equal(SHOAL_EWRONGSHARD, 4);
    assert_int_equal(SHOAL_EINVAL, 7);
    assert_int_equal(SHOAL_ETOOLARGE, 8);
    assert_int_equal(SHOAL_ECORRUPT, 13);
    assert_int_equal(SHOAL_ENOMEM, 14);
    assert_int_equal(SHOAL_EREADONLY, 18);
}

static void
test_err_names_and_messages(void **state)
{
    (void) state;
    int seen = 0;
#define X(name, val, msg)                                    \
    assert_string_equal(shoal_errname(val), "SHOAL_" #name); \
    assert_string_equal(shoal_strerror(val), msg);           \
    seen++;
    SHOAL_ERR_MAP(X)
#undef X
    assert_true(seen >= 15);
    assert_string_equal(shoal_strerror((shoal_err) -1), "unknown error");
    assert_string_equal(shoal_strerror((shoal_err) 100000), "unknown error");
    assert_string_equal(shoal_errname((shoal_err) 12345), "SHOAL_E?");
}

static void
test_err_values_unique(void **state)
{
    (void) state;
    int vals[] = {
#define X(name, val, msg) val,
        SHOAL_ERR_MAP(X)
#undef X
    };
    size_t n = sizeof(vals) / sizeof(vals[0]);
    for (size_t i = 0; i < n; i++)
        for (size_t j = i + 1; j < n; j++)
            assert_int_not_equal(vals[i], vals[j]);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_err_values_are_stable),
        cmocka_unit_test(test_err_names_and_messages),
        cmocka_unit_test(test_err_values_unique),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
