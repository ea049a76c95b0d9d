/*
 * kdedup tests - the entry codec: round trips, and every malformed input
 * rejected with KD_ERR_SERIALIZATION.
 */
#include "dedup/entry.h"

#include <stdarg.h>
#include <setjmp.h>
#include <stddef.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

static void assert_entries_equal(const kd_entry *a, const kd_entry *b) {
    assert_int_equal(a->kind, b->kind);
    assert_int_equal(a->timestamp_ms, b->timestamp_ms);
    assert_int_equal(a->key_len, b->key_len);
    assert_memory_equal(a->key, b->key, a->key_len);
    assert_int_equal(a->has_owner, b->has_owner);
    if (a->has_owner)
        assert_int_equal(a->owner, b->owner);
    assert_int_equal(a->has_receipt, b->has_receipt);
    if (a->has_receipt) {
        assert_int_equal(a->receipt_len, b->receipt_len);
        assert_memory_equal(a->receipt, b->receipt, a->receipt_len);
    }
}

static void roundtrip(const kd_entry *in) {
    unsigned char buf[512];
    size_t len = 0;
    kd_entry out;

    assert_int_equal(kd_entry_encode(in, buf, sizeof(buf), &len), KD_OK);
    assert_int_equal(len, kd_entry_encoded_size(in));
    assert_int_equal(kd_entry_decode(buf, len, &out), KD_OK);
    assert_entries_equal(in, &out);
    /* Every strict prefix is rejected, and so is one trailing byte. */
    for (size_t n = 0; n < len; n++)
        assert_int_equal(kd_entry_decode(buf, n, &out), KD_ERR_SERIALIZATION);
    buf[len] = 0;
    assert_int_equal(kd_entry_decode(buf, len + 1, &out), KD_ERR_SERIALIZATION);
}

static void test_roundtrip_kinds(void **state) {
    kd_entry claim = {.kind = KD_ENTRY_ACTIVE,
                      .timestamp_ms = 1700000000123ULL,
                      .key = "order-42",
                      .key_len = 8,
                      .has_owner = true,
                      .owner = 0xdeadbeefcafef00dULL};
    kd_entry done = claim;
    kd_entry tomb = {
        .kind = KD_ENTRY_TOMBSTONE, .timestamp_ms = UINT64_MAX, .key = "", .key_len = 0};
    kd_entry empty_receipt = {.kind = KD_ENTRY_ACTIVE,
                              .key = "k",
                              .key_len = 1,
                              .has_receipt = true,
                              .receipt = "",
                              .receipt_len = 0};

    (void)state;
    done.has_receipt = true;
    done.receipt = "orders.deduped/3@1234\0binary";
    done.receipt_len = 28;
    roundtrip(&claim);
    roundtrip(&done);
    roundtrip(&tomb);
    roundtrip(&empty_receipt);
}

static void test_known_layout(void **state) {
    const unsigned char want[] = {'K', 'D', 1, 2, 0, 0, 0, 0, 0,
                                  0,   0,   1, 2, 0, 0, 0, 1, 'x'};
    kd_entry e = {
        .kind = KD_ENTRY_TOMBSTONE, .timestamp_ms = 258, .key = "x", .key_len = 1};
    unsigned char buf[64];
    size_t len;

    (void)state;
    assert_int_equal(kd_entry_encode(&e, buf, sizeof(buf), &len), KD_OK);
    assert_int_equal(len, sizeof(want));
    assert_memory_equal(buf, want, sizeof(want));
}

static void test_rejects_malformed(void **state) {
    kd_entry e = {.kind = KD_ENTRY_ACTIVE,
                  .timestamp_ms = 1,
                  .key = "key",
                  .key_len = 3,
                  .has_receipt = true,
                  .receipt = "r",
                  .receipt_len = 1};
    unsigned char good[64], bad[64];
    size_t len;
    kd_entry out;

    (void)state;
    assert_int_equal(kd_entry_encode(&e, good, sizeof(good), &len), KD_OK);
    struct {
        size_t at;
        unsigned char value;
    } cases[] = {
        {0, 'X'},             /* magic */
        {1, 'X'},             /* magic */
        {2, 2},               /* unknown version */
        {2, 0},    {3, 0},    /* unknown kind */
        {3, 3},    {4, 0x04}, /* unknown flag */
        {4, 0x80}, {16, 200}, /* key length past the end */
        {13, 1},              /* key length over 16 MiB */
        {20, 9},              /* receipt length past the end */
        {23, 0},              /* receipt length short: trailing byte */
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        memcpy(bad, good, len);
        bad[cases[i].at] = cases[i].value;
        assert_int_equal(kd_entry_decode(bad, len, &out), KD_ERR_SERIALIZATION);
    }
    /* A tombstone that claims a receipt is not an entry. */
    memcpy(bad, good, len);
    bad[3] = KD_ENTRY_TOMBSTONE;
    assert_int_equal(kd_entry_decode(bad, len, &out), KD_ERR_SERIALIZATION);
    assert_int_equal(kd_entry_decode(NULL, 0, &out), KD_ERR_SERIALIZATION);
}

static void test_encode_rejects_invalid(void **state) {
    kd_entry tomb_receipt = {.kind = KD_ENTRY_TOMBSTONE,
                             .key = "k",
                             .key_len = 1,
                             .has_receipt = true,
                             .receipt = "r",
                             .receipt_len = 1};
    kd_entry bad_kind = {.kind = (kd_entry_kind)7, .key = "k", .key_len = 1};
    kd_entry ok = {.kind = KD_ENTRY_ACTIVE, .key = "k", .key_len = 1};
    unsigned char buf[64];
    size_t len;
    void *heap = NULL;

    (void)state;
    assert_int_equal(kd_entry_encode(&tomb_receipt, buf, sizeof(buf), &len),
                     KD_ERR_SERIALIZATION);
    assert_int_equal(kd_entry_encode(&bad_kind, buf, sizeof(buf), &len),
                     KD_ERR_SERIALIZATION);
    assert_int_equal(kd_entry_encode(&ok, buf, 10, &len), KD_ERR_SERIALIZATION);
    assert_int_equal(kd_entry_encode_alloc(&ok, &heap, &len), KD_OK);
    assert_int_equal(len, 18);
    free(heap);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_roundtrip_kinds),
        cmocka_unit_test(test_known_layout),
        cmocka_unit_test(test_rejects_malformed),
        cmocka_unit_test(test_encode_rejects_invalid),
    };

    return cmocka_run_group_tests_name("entry codec", tests, NULL, NULL);
}
