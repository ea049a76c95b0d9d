/*
 * kdedup tests - the entry codec: round trips, the layouts of versions 1
 * and 2, and every malformed input rejected with KD_ERR_SERIALIZATION.
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
    assert_int_equal(a->reason, b->reason);
    assert_int_equal(a->timestamp_ms, b->timestamp_ms);
    assert_int_equal(a->key_len, b->key_len);
    assert_memory_equal(a->key, b->key, a->key_len);
    assert_int_equal(a->has_owner, b->has_owner);
    if (a->has_owner)
        assert_int_equal(a->owner, b->owner);
    assert_int_equal(a->has_fingerprint, b->has_fingerprint);
    if (a->has_fingerprint)
        assert_memory_equal(a->fingerprint, b->fingerprint, KD_ENTRY_FINGERPRINT_LEN);
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
        {3, 3},    {4, 0x08}, /* unknown flag */
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

static const unsigned char FP[KD_ENTRY_FINGERPRINT_LEN] = {
    0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0x99, 0xaa,
    0xbb, 0xcc, 0xdd, 0xee, 0xff, 1,    2,    3,    4,    5,    6,
    7,    8,    9,    10,   11,   12,   13,   14,   15,   16};

static void test_roundtrip_fingerprint(void **state) {
    kd_entry claim = {.kind = KD_ENTRY_ACTIVE,
                      .timestamp_ms = 1700000000123ULL,
                      .key = "order-42",
                      .key_len = 8,
                      .has_fingerprint = true,
                      .fingerprint = FP};
    kd_entry done = claim;

    (void)state;
    roundtrip(&claim);
    done.has_owner = true;
    done.owner = 7;
    done.has_receipt = true;
    done.receipt = "v1 to=x/0@1";
    done.receipt_len = 11;
    roundtrip(&done);
}

/* The fingerprint sits after the owner and before the receipt, under flag
 * bit 2; the version stays 1. */
static void test_fingerprint_layout(void **state) {
    kd_entry e = {.kind = KD_ENTRY_ACTIVE,
                  .timestamp_ms = 1,
                  .key = "k",
                  .key_len = 1,
                  .has_owner = true,
                  .owner = 2,
                  .has_fingerprint = true,
                  .fingerprint = FP,
                  .has_receipt = true,
                  .receipt = "r",
                  .receipt_len = 1};
    unsigned char buf[128];
    size_t len;

    (void)state;
    assert_int_equal(kd_entry_encode(&e, buf, sizeof(buf), &len), KD_OK);
    assert_int_equal(len, 17 + 1 + 8 + KD_ENTRY_FINGERPRINT_LEN + 4 + 1);
    assert_int_equal(buf[2], 1);
    assert_int_equal(buf[4], 0x07);
    assert_memory_equal(buf + 18 + 8, FP, KD_ENTRY_FINGERPRINT_LEN);
    assert_int_equal(buf[18 + 8 + KD_ENTRY_FINGERPRINT_LEN + 3], 1);
}

/* Entries written before fingerprints existed decode as they did: bytes
 * of a claim with an owner, as an older kdedup wrote them. */
static void test_old_entry_decodes(void **state) {
    const unsigned char old[] = {'K', 'D', 1, 1,   0x02, 0, 0, 0, 0, 0, 0, 0, 5, 0,
                                 0,   0,   2, 'i', 'd',  0, 0, 0, 0, 0, 0, 0, 9};
    kd_entry out;

    (void)state;
    assert_int_equal(kd_entry_decode(old, sizeof(old), &out), KD_OK);
    assert_int_equal(out.kind, KD_ENTRY_ACTIVE);
    assert_int_equal(out.timestamp_ms, 5);
    assert_int_equal(out.key_len, 2);
    assert_true(out.has_owner);
    assert_int_equal(out.owner, 9);
    assert_false(out.has_fingerprint);
    assert_null(out.fingerprint);
    assert_false(out.has_receipt);
}

static void test_fingerprint_malformed(void **state) {
    kd_entry e = {.kind = KD_ENTRY_ACTIVE,
                  .timestamp_ms = 1,
                  .key = "k",
                  .key_len = 1,
                  .has_fingerprint = true,
                  .fingerprint = FP};
    kd_entry tomb_fp = {.kind = KD_ENTRY_TOMBSTONE,
                        .key = "k",
                        .key_len = 1,
                        .has_fingerprint = true,
                        .fingerprint = FP};
    kd_entry no_bytes = {
        .kind = KD_ENTRY_ACTIVE, .key = "k", .key_len = 1, .has_fingerprint = true};
    unsigned char buf[128], bad[128];
    size_t len, scratch;
    kd_entry out;

    (void)state;
    assert_int_equal(kd_entry_encode(&e, buf, sizeof(buf), &len), KD_OK);
    /* A tombstone with a fingerprint is not an entry. */
    memcpy(bad, buf, len);
    bad[3] = KD_ENTRY_TOMBSTONE;
    assert_int_equal(kd_entry_decode(bad, len, &out), KD_ERR_SERIALIZATION);
    /* The flag without its 32 bytes, or the bytes without the flag. */
    assert_int_equal(kd_entry_decode(buf, len - 1, &out), KD_ERR_SERIALIZATION);
    memcpy(bad, buf, len);
    bad[4] = 0;
    assert_int_equal(kd_entry_decode(bad, len, &out), KD_ERR_SERIALIZATION);
    /* ...and it claims a receipt whose length is not there. */
    bad[4] = 0x05;
    assert_int_equal(kd_entry_decode(bad, len, &out), KD_ERR_SERIALIZATION);
    assert_int_equal(kd_entry_encode(&tomb_fp, buf, sizeof(buf), &scratch),
                     KD_ERR_SERIALIZATION);
    assert_int_equal(kd_entry_encode(&no_bytes, buf, sizeof(buf), &scratch),
                     KD_ERR_SERIALIZATION);
}

/* A tombstone says why it was written (version 2, flag bit 3: a forget);
 * one of version 1 decodes with its reason unknown, and an active entry is
 * still written as version 1. */
static void test_tombstone_reasons(void **state) {
    const unsigned char forget[] = {'K', 'D', 2, 2, 0x08, 0, 0, 0, 0,
                                    0,   0,   1, 2, 0,    0, 0, 1, 'x'};
    const unsigned char old_tomb[] = {'K', 'D', 1, 2, 0, 0, 0, 0, 0,
                                      0,   0,   1, 2, 0, 0, 0, 1, 'x'};
    kd_entry e = {.kind = KD_ENTRY_TOMBSTONE,
                  .reason = KD_TOMB_FORGET,
                  .timestamp_ms = 258,
                  .key = "x",
                  .key_len = 1};
    kd_entry active = {.kind = KD_ENTRY_ACTIVE, .key = "x", .key_len = 1};
    unsigned char buf[64], bad[64];
    size_t len;
    kd_entry out;

    (void)state;
    roundtrip(&e);
    assert_int_equal(kd_entry_encode(&e, buf, sizeof(buf), &len), KD_OK);
    assert_int_equal(len, sizeof(forget));
    assert_memory_equal(buf, forget, sizeof(forget));
    e.reason = KD_TOMB_RELEASE;
    roundtrip(&e);
    assert_int_equal(kd_entry_encode(&e, buf, sizeof(buf), &len), KD_OK);
    assert_int_equal(buf[2], 2);
    assert_int_equal(buf[4], 0);
    e.owner = 9;
    e.has_owner = true;
    roundtrip(&e);

    assert_int_equal(kd_entry_decode(old_tomb, sizeof(old_tomb), &out), KD_OK);
    assert_int_equal(out.kind, KD_ENTRY_TOMBSTONE);
    assert_int_equal(out.reason, KD_TOMB_UNKNOWN);
    assert_int_equal(kd_entry_encode(&active, buf, sizeof(buf), &len), KD_OK);
    assert_int_equal(buf[2], 1);

    /* the forget flag only in version 2, version 2 only for tombstones */
    memcpy(bad, forget, sizeof(forget));
    bad[2] = 1;
    assert_int_equal(kd_entry_decode(bad, sizeof(forget), &out), KD_ERR_SERIALIZATION);
    memcpy(bad, forget, sizeof(forget));
    bad[3] = KD_ENTRY_ACTIVE;
    assert_int_equal(kd_entry_decode(bad, sizeof(forget), &out), KD_ERR_SERIALIZATION);
    bad[4] = 0;
    assert_int_equal(kd_entry_decode(bad, sizeof(forget), &out), KD_ERR_SERIALIZATION);
    memcpy(bad, forget, sizeof(forget));
    bad[2] = 3;
    assert_int_equal(kd_entry_decode(bad, sizeof(forget), &out), KD_ERR_SERIALIZATION);
    memcpy(bad, forget, sizeof(forget));
    bad[4] = 0x10 | 0x08;
    assert_int_equal(kd_entry_decode(bad, sizeof(forget), &out), KD_ERR_SERIALIZATION);

    active.reason = KD_TOMB_FORGET;
    assert_int_equal(kd_entry_encode(&active, buf, sizeof(buf), &len),
                     KD_ERR_SERIALIZATION);
    e.reason = (kd_tomb_reason)7;
    assert_int_equal(kd_entry_encode(&e, buf, sizeof(buf), &len), KD_ERR_SERIALIZATION);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_roundtrip_kinds),
        cmocka_unit_test(test_known_layout),
        cmocka_unit_test(test_rejects_malformed),
        cmocka_unit_test(test_encode_rejects_invalid),
        cmocka_unit_test(test_roundtrip_fingerprint),
        cmocka_unit_test(test_fingerprint_layout),
        cmocka_unit_test(test_old_entry_decodes),
        cmocka_unit_test(test_fingerprint_malformed),
        cmocka_unit_test(test_tombstone_reasons),
    };

    return cmocka_run_group_tests_name("entry codec", tests, NULL, NULL);
}
