/*
 * kdedup - libFuzzer target for key extraction: headers built from the
 * input (empty, binary, huge, repeated, null values, names that differ only
 * in case) go through kd_headers_key() and, when it yields a key, through a
 * claim, a receipt and a lookup in an in-memory dedup cache.
 *
 * Checked: a key is returned only if it is the first header of exactly that
 * name, non-empty and within max_len; the cache then sees the key as new,
 * completes it and reports it completed with the receipt given; and
 * kd_headers_measure() counts every header and its name's and value's bytes.
 *
 * Input: byte 0 picks max_len; then repeated [name_len u8][name][flags u8]
 * [value_len u16 le][value], flags bit 0 meaning a null value.
 */
#include "dedup/dedup.h"
#include "sidecar/headers.h"

#include <librdkafka/rdkafka.h>

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define KEY_HEADER "Idempotency-Key"

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size);

/* The first header called name, as a reference scan finds it. */
static bool first_header(const unsigned char *data, size_t size, const void **val,
                         size_t *len, bool *is_null) {
    size_t at = 1;

    while (at < size) {
        size_t nlen = data[at++], vlen;
        const unsigned char *name = data + at;
        unsigned flags;

        if (size - at < nlen + 3)
            return false;
        at += nlen;
        flags = data[at++];
        vlen = (size_t)data[at] | (size_t)data[at + 1] << 8;
        at += 2;
        if (vlen > size - at)
            vlen = size - at;
        /* librdkafka takes the name up to its first NUL */
        if (strnlen((const char *)name, nlen) == strlen(KEY_HEADER) &&
            !memcmp(name, KEY_HEADER, strlen(KEY_HEADER))) {
            *is_null = flags & 1;
            *val = data + at;
            *len = vlen;
            return true;
        }
        at += vlen;
    }
    return false;
}

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size) {
    rd_kafka_headers_t *hdrs;
    size_t max_len, at = 1, key_len = 0, want_len = 0;
    const void *key = NULL, *want = NULL;
    bool found, want_found, want_null = false;
    char name[256];
    kd_headers_size added = {0}, measured;

    if (size < 1)
        return 0;
    max_len = data[0] ? (size_t)data[0] * 4 : 1;
    hdrs = rd_kafka_headers_new(4);
    while (at < size) {
        size_t nlen = data[at++], vlen;
        unsigned flags;

        if (size - at < nlen + 3)
            break;
        memcpy(name, data + at, nlen);
        name[nlen] = '\0';
        at += nlen;
        flags = data[at++];
        vlen = (size_t)data[at] | (size_t)data[at + 1] << 8;
        at += 2;
        if (vlen > size - at)
            vlen = size - at;
        /* names with a NUL inside are cut there, as librdkafka sees them */
        rd_kafka_header_add(hdrs, name, (ssize_t)strlen(name),
                            (flags & 1) ? NULL : data + at, (ssize_t)vlen);
        added.count++;
        added.bytes += strlen(name) + ((flags & 1) ? 0 : vlen);
        at += vlen;
    }
    measured = kd_headers_measure(hdrs);
    if (measured.count != added.count || measured.bytes != added.bytes ||
        kd_headers_memory(measured) != added.bytes + added.count * KD_HEADER_OVERHEAD)
        abort(); /* the byte bounds count what is there */
    found = kd_headers_key(hdrs, KEY_HEADER, max_len, &key, &key_len);
    want_found = first_header(data, size, &want, &want_len, &want_null);
    if (found) {
        if (!want_found || want_null || key_len == 0 || key_len > max_len ||
            key_len != want_len || memcmp(key, want, key_len) != 0)
            abort();
        kd_store *store = kd_store_mem_new();
        kd_dedup *d = kd_dedup_new(store, "fuzz");
        kd_decision dec;
        bool seen;

        if (kd_dedup_claim_or_get(d, key, key_len, 60000, &dec) != KD_OK ||
            dec.state != KD_CLAIMED)
            abort();
        kd_decision_clear(&dec);
        if (kd_dedup_complete_receipt(d, key, key_len, "r", 1) != KD_OK ||
            kd_dedup_lookup(d, key, key_len, &dec, &seen) != KD_OK || !seen ||
            dec.state != KD_COMPLETED || dec.receipt_len != 1)
            abort();
        kd_decision_clear(&dec);
        kd_dedup_destroy(d);
        kd_store_destroy(store);
    } else if (want_found && !want_null && want_len > 0 && want_len <= max_len) {
        abort(); /* a usable key was missed */
    }
    rd_kafka_headers_destroy(hdrs);
    return 0;
}
