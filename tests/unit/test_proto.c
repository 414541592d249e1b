/*
 * test_proto.c -- the wire status codes cannot drift: every entry of
 * proto/err.h's SHOAL_ERR_MAP equals the Shoal__Status value of the same
 * name generated from shoal.proto, and the proto enum has no value the map
 * lacks (STYLE §4: the codes travel in Response.status).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "proto/err.h"
#include "proto/shoal.pb-c.h"

#include <stdbool.h>
#include <stdio.h>
#include <string.h>

typedef struct err_entry {
    const char *name; /* without the SHOAL_ prefix: "ENOTFOUND" */
    int value;
} err_entry;

static const err_entry err_map[] = {
#define ERR_ENTRY_(name, val, msg) {#name, val},
    SHOAL_ERR_MAP(ERR_ENTRY_)
#undef ERR_ENTRY_
};

#define N_ERR (sizeof(err_map) / sizeof(err_map[0]))

/* Compile-time: each name exists in both enums with the same value. */
#define ERR_SAME_(name, val, msg)                                     \
    _Static_assert((int) SHOAL__STATUS__##name == (int) SHOAL_##name, \
                   "Shoal__Status." #name " differs from err.h");
SHOAL_ERR_MAP(ERR_SAME_)
#undef ERR_SAME_

static void
test_proto_status_matches_err_map(void **state)
{
    (void) state;
    const ProtobufCEnumDescriptor *d = &shoal__status__descriptor;
    for (size_t i = 0; i < N_ERR; i++) {
        const ProtobufCEnumValue *v =
            protobuf_c_enum_descriptor_get_value_by_name(d, err_map[i].name);
        if (v == NULL)
            fail_msg("Shoal__Status lacks %s", err_map[i].name);
        assert_int_equal(v->value, err_map[i].value);
        const ProtobufCEnumValue *back =
            protobuf_c_enum_descriptor_get_value(d, err_map[i].value);
        assert_non_null(back);
        assert_string_equal(back->name, err_map[i].name);
        /* shoal_errname agrees with the proto's name. */
        char want[64];
        snprintf(want, sizeof(want), "SHOAL_%s", err_map[i].name);
        assert_string_equal(shoal_errname((shoal_err) err_map[i].value), want);
    }
}

static void
test_proto_status_has_no_extra_values(void **state)
{
    (void) state;
    const ProtobufCEnumDescriptor *d = &shoal__status__descriptor;
    assert_int_equal(d->n_values, N_ERR);
    for (unsigned i = 0; i < d->n_values; i++) {
        bool found = false;
        for (size_t j = 0; j < N_ERR; j++)
            found |= strcmp(d->values[i].name, err_map[j].name) == 0 &&
                     d->values[i].value == err_map[j].value;
        if (!found)
            fail_msg("Shoal__Status.%s = %d is not in SHOAL_ERR_MAP",
                     d->values[i].name, d->values[i].value);
    }
    /* Distinct values on both sides (so the two-way match is a bijection). */
    for (size_t i = 0; i < N_ERR; i++)
        for (size_t j = i + 1; j < N_ERR; j++)
            assert_int_not_equal(err_map[i].value, err_map[j].value);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_proto_status_matches_err_map),
        cmocka_unit_test(test_proto_status_has_no_extra_values),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
