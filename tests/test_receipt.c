/*
 * kdedup tests - receipts: written and read back the same, the text that
 * may follow ignored, anything else refused.
 */
#include "sidecar/receipt.h"

#include <stdarg.h>
#include <setjmp.h>
#include <stddef.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

static void test_roundtrip(void **state) {
    kd_receipt in = {.to = "orders.deduped",
                     .to_len = 14,
                     .to_partition = 3,
                     .to_offset = 1234567890123,
                     .timestamp = -1,
                     .from = "orders",
                     .from_len = 6,
                     .from_partition = 11,
                     .from_offset = 0},
               out;
    char buf[256], fp[300];
    size_t n;

    (void)state;
    n = kd_receipt_format(&in, buf, sizeof(buf));
    assert_string_equal(buf,
                        "v1 to=orders.deduped/3@1234567890123 ts=-1 from=orders/11@0");
    assert_int_equal(n, strlen(buf));
    assert_true(kd_receipt_parse(buf, n, &out));
    assert_int_equal(out.to_len, 14);
    assert_memory_equal(out.to, "orders.deduped", 14);
    assert_int_equal(out.to_partition, 3);
    assert_int_equal(out.to_offset, 1234567890123);
    assert_int_equal(out.timestamp, -1);
    assert_int_equal(out.from_len, 6);
    assert_memory_equal(out.from, "orders", 6);
    assert_int_equal(out.from_partition, 11);
    assert_int_equal(out.from_offset, 0);
    snprintf(fp, sizeof(fp), "%s fp=00ff", buf); /* a fingerprint follows */
    assert_true(kd_receipt_parse(fp, strlen(fp), &out));
    assert_int_equal(out.from_offset, 0);
    assert_false(kd_receipt_parse(buf, n + 1, &out));     /* its NUL: a trailing byte */
    assert_int_equal(kd_receipt_format(&in, buf, 10), 9); /* cut, NUL-terminated */
    assert_string_equal(buf, "v1 to=ord");
}

static void test_refused(void **state) {
    static const char *const bad[] = {
        "",
        "v1 to=out/0@7",                                    /* no ts, no from */
        "v2 to=out/0@7 ts=1 from=in/0@1",                   /* unknown version */
        "v1 to=/0@7 ts=1 from=in/0@1",                      /* no topic */
        "v1 to=out/x@7 ts=1 from=in/0@1",                   /* partition not a number */
        "v1 to=out/-1@7 ts=1 from=in/0@1",                  /* negative partition */
        "v1 to=out/2147483648@7 ts=1 from=in/0@1",          /* partition past 32 bits */
        "v1 to=out/0@ ts=1 from=in/0@1",                    /* no offset */
        "v1 to=out/0@7 ts= from=in/0@1",                    /* no timestamp */
        "v1 to=out/0@7 ts=1 from=in/0@1x",                  /* trailing bytes */
        "v1 to=out/0@1234567890123456789 ts=1 from=in/0@1", /* 19 digits */
        "v1 to=out 0@7 ts=1 from=in/0@1",                   /* a space in the topic */
        "v1 to=o\x01t/0@7 ts=1 from=in/0@1",                /* a byte no topic holds */
        "v1 to=out/0@07 ts=1 from=in/0@1", /* not as written: a leading zero */
        "v1 to=out/0@7 ts=-0 from=in/0@1", /* nor "-0" */
    };
    kd_receipt out;

    (void)state;
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        if (kd_receipt_parse(bad[i], strlen(bad[i]), &out))
            fail_msg("parsed: %s", bad[i]);
    assert_false(kd_receipt_parse(NULL, 0, &out));
    /* a length that stops inside it */
    assert_false(kd_receipt_parse("v1 to=out/0@7 ts=1 from=in/0@12", 28, &out));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_roundtrip),
        cmocka_unit_test(test_refused),
    };

    return cmocka_run_group_tests_name("receipts", tests, NULL, NULL);
}
