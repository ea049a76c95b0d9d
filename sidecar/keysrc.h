/*
 * kdedup - what identifies a message: its idempotency key, taken where the
 * route says (a header, the record key, a field of a JSON value, or a
 * composite of these), and its fingerprint, a SHA-256 of what a claim
 * forwards, to tell a key reused for another payload.
 *
 * The module sees a message through kd_keysrc_msg, not librdkafka, so it
 * can be tested and fuzzed on its own.
 *
 * JSON: the value is parsed (cJSON) only for a route whose key needs it,
 * once per message, and only when it is at most max_json_bytes. An RFC 6901
 * pointer picks the field ("~1" is '/', "~0" is '~'; an array index is
 * decimal without leading zeros). A string is used as is (escapes decoded);
 * a number by its value written as a decimal integer (42, 42.0 and 4.2e1
 * are one key), when that value is an integer of magnitude below 2^53: cJSON
 * parses numbers into doubles, which hold only those exactly, so two larger
 * ids could otherwise meet. Any other value (object, array, null, a
 * boolean, a fraction or a larger number, a missing field, a value that is
 * not JSON) gives no key.
 *
 * Composite: each part's bytes are prefixed by their length (u32,
 * big-endian), so ("ab", "c") and ("a", "bc") never meet. Every part must
 * be there and not empty.
 *
 * Limits: the final key (with its prefixes) is at most max_key_bytes, and
 * never empty.
 *
 * Ambiguous keys: a message may name its key twice, a header repeated or
 * a JSON member duplicated along the pointer's path. Readers differ on
 * which counts (librdkafka's rd_kafka_header_get and cJSON the first;
 * Java's lastHeader(), Jackson, Python's json, JavaScript's JSON.parse the
 * last), so kdedup would deduplicate on one id and its consumers see
 * another. When the first and the last reading give different keys (or one
 * gives none), the key is KD_KEY_AMBIGUOUS; repeated with the same value,
 * it is that value.
 */
#ifndef KD_KEYSRC_H
#define KD_KEYSRC_H

#include "config/config.h"

#include <stdbool.h>
#include <stddef.h>

/* Bytes of a fingerprint (SHA-256). */
#define KD_KEYSRC_FP_LEN 32

/* Finds the first header called name (the last one, with last): true with
 * its value in *val / *len (*val NULL for a null value), false when there
 * is none. */
typedef bool (*kd_keysrc_header_fn)(void *arg, const char *name, bool last,
                                    const void **val, size_t *len);

/* A message as the module sees it. Everything is borrowed. */
typedef struct kd_keysrc_msg {
    const void *key; /* the record's key; NULL for none */
    size_t key_len;
    const void *value; /* NULL for none */
    size_t value_len;
    kd_keysrc_header_fn header; /* NULL: the message has no headers */
    void *header_arg;
} kd_keysrc_msg;

/* Why there is or is not a key. Everything but KD_KEY_OK, KD_KEY_AMBIGUOUS
 * and KD_KEY_NOMEM is a missing key (on_missing_key decides); an ambiguous
 * one is rejected (README, "Rejected input"). */
typedef enum kd_key_status {
    KD_KEY_OK,
    KD_KEY_ABSENT,         /* no such header, record key or field; or a null value */
    KD_KEY_EMPTY,          /* the key or one of its parts is empty */
    KD_KEY_TOO_LONG,       /* longer than max_key_bytes */
    KD_KEY_NOT_JSON,       /* the value does not parse as one JSON document */
    KD_KEY_JSON_TOO_LARGE, /* the value is over max_json_bytes: not parsed */
    KD_KEY_NOT_SCALAR,     /* the field is an object, array, null, boolean, or inexact
                            * number */
    KD_KEY_AMBIGUOUS,      /* a repeated header or duplicated JSON member gives
                            * another key (or none) read last than read first */
    KD_KEY_NOMEM
} kd_key_status;

/* A key: bytes point into the message (borrowed) or into owned. */
typedef struct kd_key {
    const char *bytes;
    size_t len;
    char *owned; /* malloc()ed, or NULL; freed by kd_key_clear() */
} kd_key;

/* Extracts route r's key from m into *out (cleared first). Returns
 * KD_KEY_OK with out set, or why not (out then holds nothing). */
kd_key_status kd_keysrc_extract(const kd_route *r, size_t max_key_bytes,
                                size_t max_json_bytes, const kd_keysrc_msg *m,
                                kd_key *out);

/* Joins n parts (bytes and lengths) into a composite key in *out, as
 * kd_keysrc_extract() does for a composite route: for tools that are given
 * the parts (kdedup lookup). Returns KD_KEY_OK, KD_KEY_EMPTY (a part is
 * empty), KD_KEY_TOO_LONG or KD_KEY_NOMEM. */
kd_key_status kd_keysrc_compose(const char *const *parts, const size_t *lens, size_t n,
                                size_t max_key_bytes, kd_key *out);

/* Frees what k owns and clears it. NULL-safe. */
void kd_key_clear(kd_key *k);

/* "absent", "empty", ...: for logs. */
const char *kd_key_status_name(kd_key_status s);

/* Writes the fingerprint of m under route r into out: SHA-256 over the
 * value, or, when r->fingerprint_json lists pointers and the value is JSON
 * of at most max_json_bytes, over those fields (each printed by cJSON, a
 * missing one told apart; a value that is not JSON is taken whole), then
 * the headers r->fingerprint_headers lists (first occurrence of each;
 * absent and null told apart from empty), each length-prefixed. Returns
 * false when libcrypto fails (no fingerprint then). */
bool kd_keysrc_fingerprint(const kd_route *r, size_t max_json_bytes,
                           const kd_keysrc_msg *m, unsigned char out[KD_KEYSRC_FP_LEN]);

#endif /* KD_KEYSRC_H */
