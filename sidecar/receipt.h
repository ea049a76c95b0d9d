/*
 * kdedup - receipts: the text a completed key's entry keeps of its delivery,
 * written here and read back here (the admin API's forget, the handover).
 *
 *   v1 to=<topic>/<partition>@<offset> ts=<ms> from=<topic>/<partition>@<offset>
 *
 * "to" is the downstream record, "ts" its timestamp, "from" the source
 * message it came from. Text may follow (" fp=<hex>": the claim's
 * fingerprint); a reader ignores it. Topic names are Kafka's: letters,
 * digits, '.', '_' and '-' (anything else is refused).
 */
#ifndef KD_RECEIPT_H
#define KD_RECEIPT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* A receipt's fields; topic names borrow from the text parsed (or from the
 * caller, when writing one). */
typedef struct kd_receipt {
    const char *to;
    size_t to_len;
    int32_t to_partition;
    int64_t to_offset;
    int64_t timestamp;
    const char *from;
    size_t from_len;
    int32_t from_partition;
    int64_t from_offset;
} kd_receipt;

/* Writes r into buf, snprintf-like (cut to size - 1 bytes and a NUL).
 * Returns the length written. */
size_t kd_receipt_format(const kd_receipt *r, char *buf, size_t size);

/* Parses the first len bytes of text (NUL not needed). False when they are
 * not a receipt of this form; *out borrows from text. */
bool kd_receipt_parse(const char *text, size_t len, kd_receipt *out);

#endif /* KD_RECEIPT_H */
