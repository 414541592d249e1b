/*
 * test_mem.c -- the allocation seam: the n-th allocation fails, once or
 * forever, across all entry points.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "proto/mem.h"

static void
test_mem_nth_fails_once(void **state)
{
    (void) state;
    long before = mem_fail_count();
    mem_fail_set(3, 0);
    void *a = mem_alloc(8), *b = mem_calloc(2, 8), *c = mem_alloc(8);
    void *d = mem_alloc(8);
    mem_fail_set(0, 0);
    assert_non_null(a);
    assert_non_null(b);
    assert_null(c);
    assert_non_null(d);
    assert_int_equal(mem_fail_count(), before + 1);
    mem_free(a);
    mem_free(b);
    mem_free(d);
    mem_free(NULL);
}

static void
test_mem_forever(void **state)
{
    (void) state;
    mem_fail_set(2, 1);
    void *a = mem_alloc(8);
    assert_non_null(a);
    assert_null(mem_alloc(8));
    assert_null(mem_realloc(a, 64));
    assert_null(mem_strdup("x"));
    assert_null(mem_calloc(1, 1));
    mem_fail_set(0, 0);
    char *s = mem_strdup("shoal");
    assert_string_equal(s, "shoal");
    mem_free(s);
    mem_free(a);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_mem_nth_fails_once),
        cmocka_unit_test(test_mem_forever),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
