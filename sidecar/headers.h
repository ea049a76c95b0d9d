/*
 * kdedup - the headers of a record kdedup writes downstream, and what a
 * message's headers hold in memory.
 *
 * The one home of the downstream record format: every kdedup-* header's
 * name, building them on a record kdedup forwards (or a forget record),
 * reading them back (the handover, orphan recovery, uncertain deliveries),
 * and which of them a signature covers (kd_signed, signing.h: the MAC).
 *
 * librdkafka parses a consumed message's headers on first use into one
 * allocation per header plus a slot in a list, and kdedup copies them once
 * more into the message it produces. A header with an empty name and
 * value is 2 or 3 bytes on the wire but about 83 bytes in memory, so byte
 * bounds over messages count each header's name, value and
 * KD_HEADER_OVERHEAD.
 */
#ifndef KD_HEADERS_H
#define KD_HEADERS_H

#include "sidecar/signing.h"

#include <librdkafka/rdkafka.h>

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Every header kdedup writes is named so; a source message's headers of
 * that prefix are not forwarded (kd_headers_copy_foreign). */
#define KD_HEADERS_PREFIX "kdedup-"
/* The headers kdedup adds to what it forwards. */
#define KD_SOURCE_HEADER "kdedup-source"             /* "<topic>/<partition>/<offset>" */
#define KD_RUN_HEADER "kdedup-run"                   /* the producing run's id (hex) */
#define KD_FORWARDED_AT_HEADER "kdedup-forwarded-at" /* wall ms, decimal */
#define KD_SIGNATURE_HEADER "kdedup-signature"       /* signing.h */
/* The key kdedup used, on what it forwards from a route whose key is not a
 * header (record key, JSON, composite): the handover and recovery read it
 * back from there, as they read the key header of other routes. */
#define KD_KEY_HEADER "kdedup-key"
/* On a record forwarded without a claim of its key (a key conflict under
 * on_key_conflict "forward", a key that cannot be deduplicated): it is no
 * claim's delivery, and recovery and the handover never read it as one. */
#define KD_UNCLAIMED_HEADER "kdedup-unclaimed"
/* On a forget record (forgets.h): an operator forgot the key. It is no
 * delivery; the handover forgets the key on reading it. */
#define KD_FORGET_HEADER "kdedup-forget"
/* On a dead letter: why (KD_REASON_* in pipeline_int.h); for a key
 * conflict, the original's receipt (or state), and the fingerprints (hex)
 * of the original and of this message. */
#define KD_REASON_HEADER "kdedup-reason"
#define KD_ORIGINAL_HEADER "kdedup-original"
#define KD_FINGERPRINT_HEADER "kdedup-fingerprint"
#define KD_ORIGINAL_FP_HEADER "kdedup-original-fingerprint"

/* Bytes one parsed (or copied) header takes beside its name and value: its
 * allocation and its list slot (83 measured for an empty header with
 * librdkafka 2.0.2 and glibc 2.36 on x86-64; rounded up). */
#define KD_HEADER_OVERHEAD 96

/* Room for a KD_SOURCE_HEADER value (kd_headers_source_format). */
#define KD_HEADERS_SOURCE_MAX 320
/* Room for a KD_FORWARDED_AT_HEADER value (kd_headers_at_format). */
#define KD_HEADERS_AT_MAX 24

/* What kdedup stamps on a downstream record: the signed fields. The
 * strings are borrowed. */
typedef struct kd_headers_stamp {
    const char *from;   /* the route's source topic */
    const char *to;     /* the topic the record is written to */
    const char *source; /* KD_SOURCE_HEADER (kd_headers_source_format) */
    const char *run;    /* KD_RUN_HEADER: the producing run's id, hex */
    const char *at;     /* KD_FORWARDED_AT_HEADER (kd_headers_at_format) */
    const void *key;    /* the idempotency key; NULL: none (nothing signed) */
    size_t key_len;
    bool key_header; /* write the key in KD_KEY_HEADER */
    bool forget;     /* a forget record: KD_FORGET_HEADER first, signed apart */
} kd_headers_stamp;

/* What a message's headers hold. */
typedef struct kd_headers_size {
    size_t count; /* headers */
    size_t bytes; /* their names' and values' bytes */
} kd_headers_size;

/* Writes "<topic>/<partition>/<offset>" (a KD_SOURCE_HEADER value) into buf
 * (KD_HEADERS_SOURCE_MAX bytes); returns buf. */
const char *kd_headers_source_format(char *buf, size_t size, const char *topic,
                                     int32_t partition, int64_t offset);

/* Writes wall_ms in decimal (a KD_FORWARDED_AT_HEADER value) into buf
 * (KD_HEADERS_AT_MAX bytes); returns buf. */
const char *kd_headers_at_format(char *buf, size_t size, uint64_t wall_ms);

/* A new header list (the caller owns it) with src's headers (NULL: none),
 * less those named like kdedup's own, save the header called keep (the
 * route's key header, whatever its name; NULL: none), and room for
 * `extra` more. *stripped counts the headers left out. */
rd_kafka_headers_t *kd_headers_copy_foreign(const rd_kafka_headers_t *src,
                                            const char *keep, size_t extra,
                                            size_t *stripped);

/* Adds s's headers to hdrs: KD_FORGET_HEADER for a forget record, then
 * KD_SOURCE_HEADER, KD_RUN_HEADER, KD_FORWARDED_AT_HEADER, and
 * KD_KEY_HEADER when s->key_header. */
void kd_headers_add_stamp(rd_kafka_headers_t *hdrs, const kd_headers_stamp *s);

/* Adds KD_UNCLAIMED_HEADER to hdrs. */
void kd_headers_add_unclaimed(rd_kafka_headers_t *hdrs);

/* Adds KD_SIGNATURE_HEADER, signer's signature over s's signed fields, to
 * hdrs. False (nothing added) when libcrypto fails. */
bool kd_headers_add_signature(rd_kafka_headers_t *hdrs, kd_signer *signer,
                              const kd_headers_stamp *s);

/* Finds the first header called name and returns its value as the key in
 * *key / *key_len (borrowed from hdrs). false when there is no such header,
 * or its value is null, empty or longer than max_len: the key is missing. */
bool kd_headers_key(const rd_kafka_headers_t *hdrs, const char *name, size_t max_len,
                    const void **key, size_t *key_len);

/* A consumed record's headers (parsed on the first call; they stay with
 * rkm), or NULL when it has none. The readers below take them. */
const rd_kafka_headers_t *kd_headers_of(const rd_kafka_message_t *rkm);

/* hdrs (NULL: none) are a record's that kdedup forwarded from topic: its
 * KD_SOURCE_HEADER is "<topic>/<partition>/<offset>". Sets the source
 * coordinates; false when there is none, or one of another topic, or a
 * malformed one. */
bool kd_headers_source(const rd_kafka_headers_t *hdrs, const char *topic, int32_t *part,
                       int64_t *offset);

/* When kdedup forwarded the record of hdrs (its KD_FORWARDED_AT_HEADER, wall
 * ms), or -1 for one without it (forwarded by an older kdedup). */
int64_t kd_headers_forwarded_at(const rd_kafka_headers_t *hdrs);

/* True when hdrs hold KD_UNCLAIMED_HEADER. */
bool kd_headers_unclaimed(const rd_kafka_headers_t *hdrs);

/* True when hdrs are a forget record's (they hold KD_FORGET_HEADER). */
bool kd_headers_forget(const rd_kafka_headers_t *hdrs);

/* True when the signature in hdrs (a forget record's when `forget`)
 * verifies under one of signers[0..n) (a NULL entry ends the list), over
 * the route from -> to, the key and the signed headers in hdrs. */
bool kd_headers_verify(const rd_kafka_headers_t *hdrs, kd_signer *const *signers,
                       size_t n, const char *from, const char *to, const void *key,
                       size_t key_len, bool forget);

/* Counts hdrs' headers and their names' and values' bytes (NULL: none). */
kd_headers_size kd_headers_measure(const rd_kafka_headers_t *hdrs);

/* The memory one copy of headers of size s takes: their bytes plus
 * KD_HEADER_OVERHEAD each. */
size_t kd_headers_memory(kd_headers_size s);

/* The memory a consumed record holds while it is kept: its key, its value
 * and one copy of its headers (parsed here if they were not yet; they stay
 * with rkm). */
size_t kd_headers_record_memory(const rd_kafka_message_t *rkm);

#endif /* KD_HEADERS_H */
