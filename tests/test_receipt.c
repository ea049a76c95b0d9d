/*
 * kdedup tests - receipts: written and read back the same, the text that
 * may follow ignored, anything else refused; and the printf-free builder
 * they are written with (dedup/fmt.h), against snprintf.
 */
#include "dedup/fmt.h"
#include "sidecar/receipt.h"

#include <stdarg.h>
#include <setjmp.h>
#include <stddef.h>
#include <cmocka.h>

#include <inttypes.h>
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

/* Every integer edge and every buffer size, cut or not: the builder's text
 * and length are snprintf's. */
static void test_fmt_as_snprintf(void **state) {
    static const int64_t values[] = {0,
                                     1,
                                     -1,
                                     9,
                                     10,
                                     -10,
                                     99,
                                     100,
                                     2147483647,
                                     -2147483648LL,
                                     1234567890123,
                                     INT64_MAX,
                                     INT64_MIN,
                                     INT64_MIN + 1};
    static const unsigned char bytes[] = {0x00, 0x0f, 0xa5, 0xff};
    char want[128], got[128];

    (void)state;
    for (size_t i = 0; i < sizeof(values) / sizeof(values[0]); i++)
        for (size_t size = 0; size <= 64; size++) {
            int n =
                snprintf(want, size ? size : 1, "t/%" PRId64 "/%" PRIu64 " fp=00 0fa5ff",
                         values[i], (uint64_t)values[i]);
            kd_fmt f = kd_fmt_on(got, size);

            kd_fmt_str(&f, "t/");
            kd_fmt_i64(&f, values[i]);
            kd_fmt_mem(&f, "/", 1);
            kd_fmt_u64(&f, (uint64_t)values[i]);
            kd_fmt_mem(&f, " fp=", 4);
            kd_fmt_hex(&f, bytes, 1);
            kd_fmt_mem(&f, " ", 1);
            kd_fmt_hex(&f, bytes + 1, 3);
            assert_int_equal(f.n, n);
            if (!size) {
                assert_int_equal(kd_fmt_len(&f), 0);
                continue;
            }
            assert_string_equal(got, want);
            assert_int_equal(kd_fmt_len(&f), strlen(want));
        }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_roundtrip),
        cmocka_unit_test(test_refused),
        cmocka_unit_test(test_fmt_as_snprintf),
    };

    return cmocka_run_group_tests_name("receipts", tests, NULL, NULL);
}
