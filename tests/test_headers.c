/*
 * kdedup tests - the downstream record's headers (sidecar/headers.c alone,
 * over librdkafka header lists, no broker): what kdedup writes is read back
 * as written, a source message's kdedup-* headers are not forwarded, a
 * signature over the stamp verifies only as that stamp, and malformed
 * values are refused.
 */
#include "sidecar/headers.h"

#include <stdarg.h>
#include <setjmp.h>
#include <stddef.h>
#include <cmocka.h>

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SECRET "key-one-0123456789"

/* A stamp of a record forwarded from in/3@42 to out, with its strings. */
typedef struct stamped {
    char source[KD_HEADERS_SOURCE_MAX], at[KD_HEADERS_AT_MAX];
    kd_headers_stamp s;
} stamped;

static void stamp_init(stamped *st, bool key_header, bool forget) {
    st->s = (kd_headers_stamp){
        .from = "in",
        .to = "out",
        .source = kd_headers_source_format(st->source, sizeof(st->source), "in", 3, 42),
        .run = "00000000deadbeef",
        .at = kd_headers_at_format(st->at, sizeof(st->at), 1700000000123ull),
        .key = "order-42",
        .key_len = 8,
        .key_header = key_header,
        .forget = forget,
    };
}

/* The name of header i of hdrs. */
static const char *name_at(const rd_kafka_headers_t *hdrs, size_t i) {
    const char *name = NULL;
    const void *v;
    size_t len;

    assert_int_equal(rd_kafka_header_get_all(hdrs, i, &name, &v, &len),
                     RD_KAFKA_RESP_ERR_NO_ERROR);
    return name;
}

static void test_stamp_is_read_back(void **state) {
    stamped st;
    rd_kafka_headers_t *h = rd_kafka_headers_new(8);
    int32_t part = -1;
    int64_t off = -1;
    const void *key = NULL;
    size_t key_len = 0;

    (void)state;
    stamp_init(&st, true, false);
    assert_string_equal(st.source, "in/3/42");
    assert_string_equal(st.at, "1700000000123");
    kd_headers_add_stamp(h, &st.s);
    /* in this order on the wire */
    assert_int_equal(rd_kafka_header_cnt(h), 4);
    assert_string_equal(name_at(h, 0), KD_SOURCE_HEADER);
    assert_string_equal(name_at(h, 1), KD_RUN_HEADER);
    assert_string_equal(name_at(h, 2), KD_FORWARDED_AT_HEADER);
    assert_string_equal(name_at(h, 3), KD_KEY_HEADER);
    assert_true(kd_headers_source(h, "in", &part, &off));
    assert_int_equal(part, 3);
    assert_int_equal(off, 42);
    assert_false(kd_headers_source(h, "i", &part, &off)); /* another topic */
    assert_false(kd_headers_source(h, "in/3", &part, &off));
    assert_int_equal(kd_headers_forwarded_at(h), 1700000000123ll);
    assert_true(kd_headers_key(h, KD_KEY_HEADER, 100, &key, &key_len));
    assert_int_equal(key_len, 8);
    assert_memory_equal(key, "order-42", 8);
    assert_false(kd_headers_key(h, KD_KEY_HEADER, 7, &key, &key_len)); /* too long */
    assert_false(kd_headers_unclaimed(h));
    assert_false(kd_headers_forget(h));
    kd_headers_add_unclaimed(h);
    assert_true(kd_headers_unclaimed(h));
    rd_kafka_headers_destroy(h);
}

static void test_forget_record_stamp(void **state) {
    stamped st;
    rd_kafka_headers_t *h = rd_kafka_headers_new(8);

    (void)state;
    stamp_init(&st, true, true);
    kd_headers_add_stamp(h, &st.s);
    assert_int_equal(rd_kafka_header_cnt(h), 5);
    assert_string_equal(name_at(h, 0), KD_FORGET_HEADER);
    assert_true(kd_headers_forget(h));
    assert_false(kd_headers_unclaimed(h));
    rd_kafka_headers_destroy(h);
}

static void test_no_headers_read_as_none(void **state) {
    int32_t part;
    int64_t off;
    const void *key;
    size_t key_len;

    (void)state;
    assert_false(kd_headers_source(NULL, "in", &part, &off));
    assert_int_equal(kd_headers_forwarded_at(NULL), -1);
    assert_false(kd_headers_unclaimed(NULL));
    assert_false(kd_headers_forget(NULL));
    assert_false(kd_headers_key(NULL, KD_KEY_HEADER, 100, &key, &key_len));
}

static void test_malformed_values_are_refused(void **state) {
    /* (Not here: "in/1/" and "in/1/ 1" are read today as offsets 0 and 1,
     * strtoll's leniency; a reshaping keeps that.) */
    static const char *const sources[] = {"in/x/1",  "in//1", "in/1/-1",        "in/-1/1",
                                          "in/1/2j", "in/1",  "in/1/1/",        "in1/1/1",
                                          "in/",     "",      "in/2147483648/1"};
    static const char *const ats[] = {"", "abc", "-5", "12x", "123456789012345678901234"};
    int32_t part;
    int64_t off;

    (void)state;
    for (size_t i = 0; i < sizeof(sources) / sizeof(sources[0]); i++) {
        rd_kafka_headers_t *h = rd_kafka_headers_new(1);

        rd_kafka_header_add(h, KD_SOURCE_HEADER, -1, sources[i], -1);
        if (kd_headers_source(h, "in", &part, &off))
            fail_msg("source parsed: \"%s\"", sources[i]);
        rd_kafka_headers_destroy(h);
    }
    for (size_t i = 0; i < sizeof(ats) / sizeof(ats[0]); i++) {
        rd_kafka_headers_t *h = rd_kafka_headers_new(1);

        rd_kafka_header_add(h, KD_FORWARDED_AT_HEADER, -1, ats[i], -1);
        if (kd_headers_forwarded_at(h) != -1)
            fail_msg("forwarded-at parsed: \"%s\"", ats[i]);
        rd_kafka_headers_destroy(h);
    }
}

static void test_foreign_kdedup_headers_are_stripped(void **state) {
    rd_kafka_headers_t *src = rd_kafka_headers_new(6), *out;
    size_t stripped = 0;
    const void *v;
    size_t len;

    (void)state;
    rd_kafka_header_add(src, "Idempotency-Key", -1, "k1", -1);
    rd_kafka_header_add(src, KD_SOURCE_HEADER, -1, "in/0/0", -1);  /* planted */
    rd_kafka_header_add(src, "KDEDUP-Signature", -1, "v1:00", -1); /* any case */
    rd_kafka_header_add(src, "kdedup-id", -1, "k2", -1);           /* the route's key */
    rd_kafka_header_add(src, "trace", -1, "t", -1);
    out = kd_headers_copy_foreign(src, "KDEDUP-ID", 4, &stripped);
    assert_int_equal(stripped, 2);
    assert_int_equal(rd_kafka_header_cnt(out), 3);
    assert_string_equal(name_at(out, 0), "Idempotency-Key");
    assert_string_equal(name_at(out, 1), "kdedup-id");
    assert_string_equal(name_at(out, 2), "trace");
    assert_int_equal(rd_kafka_header_get_last(out, KD_SOURCE_HEADER, &v, &len),
                     RD_KAFKA_RESP_ERR__NOENT);
    rd_kafka_headers_destroy(out);
    out = kd_headers_copy_foreign(NULL, NULL, 4, &stripped);
    assert_int_equal(stripped, 0);
    assert_int_equal(rd_kafka_header_cnt(out), 0);
    rd_kafka_headers_destroy(out);
    rd_kafka_headers_destroy(src);
}

/* Headers of a record signed by signer, verified by readers[0..nreaders):
 * change 0 leaves all as written; 1 writes another forwarding time than
 * the one signed; 2 reads it as a forget record; 3 for another downstream
 * topic; 4 with a shorter key. */
static bool verifies(kd_signer *signer, kd_signer *const *readers, size_t nreaders,
                     int change) {
    stamped sig, written;
    rd_kafka_headers_t *h = rd_kafka_headers_new(8);
    bool ok;

    stamp_init(&sig, false, false);
    stamp_init(&written, false, false);
    if (change == 1)
        kd_headers_at_format(written.at, sizeof(written.at), 1700000000124ull);
    kd_headers_add_stamp(h, &written.s);
    assert_true(kd_headers_add_signature(h, signer, &sig.s));
    ok = kd_headers_verify(h, readers, nreaders, "in", change == 3 ? "elsewhere" : "out",
                           "order-42", change == 4 ? 7 : 8, change == 2);
    rd_kafka_headers_destroy(h);
    return ok;
}

static void test_signature_covers_the_stamp(void **state) {
    kd_signer *s = kd_signer_new(SECRET), *other = kd_signer_new("another-secret-0123");
    kd_signer *just_s[] = {s, NULL}, *other_then_s[] = {other, s},
              *only_other[] = {other, NULL}, *none[] = {NULL, s};

    (void)state;
    assert_non_null(s);
    assert_non_null(other);
    assert_true(verifies(s, just_s, 2, 0));
    assert_true(verifies(s, other_then_s, 2, 0)); /* the previous key, in a rotation */
    assert_false(verifies(s, other_then_s, 1, 0));
    assert_false(verifies(s, only_other, 2, 0));
    assert_false(verifies(s, none, 2, 0)); /* a NULL entry ends the list */
    for (int change = 1; change <= 4; change++)
        if (verifies(s, just_s, 2, change))
            fail_msg("verified with change %d", change);
    kd_signer_destroy(s);
    kd_signer_destroy(other);
}

static void test_unsigned_record_is_refused(void **state) {
    stamped st;
    rd_kafka_headers_t *h = rd_kafka_headers_new(8);
    kd_signer *s = kd_signer_new(SECRET), *signers[] = {s};

    (void)state;
    stamp_init(&st, false, false);
    kd_headers_add_stamp(h, &st.s);
    assert_false(kd_headers_verify(h, signers, 1, "in", "out", "order-42", 8, false));
    assert_false(kd_headers_verify(NULL, signers, 1, "in", "out", "order-42", 8, false));
    rd_kafka_headers_destroy(h);
    kd_signer_destroy(s);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_stamp_is_read_back),
        cmocka_unit_test(test_forget_record_stamp),
        cmocka_unit_test(test_no_headers_read_as_none),
        cmocka_unit_test(test_malformed_values_are_refused),
        cmocka_unit_test(test_foreign_kdedup_headers_are_stripped),
        cmocka_unit_test(test_signature_covers_the_stamp),
        cmocka_unit_test(test_unsigned_record_is_refused),
    };

    if (getenv("KD_TEST_FILTER"))
        cmocka_set_test_filter(getenv("KD_TEST_FILTER"));
    return cmocka_run_group_tests_name("headers", tests, NULL, NULL);
}
