/*
 * kdedup - a message's headers: the idempotency key read from them, and
 * what they hold in memory.
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

#include <librdkafka/rdkafka.h>

#include <stdbool.h>
#include <stddef.h>

/* Bytes one parsed (or copied) header takes beside its name and value: its
 * allocation and its list slot (83 measured for an empty header with
 * librdkafka 2.0.2 and glibc 2.36 on x86-64; rounded up). */
#define KD_HEADER_OVERHEAD 96

/* What a message's headers hold. */
typedef struct kd_headers_size {
    size_t count; /* headers */
    size_t bytes; /* their names' and values' bytes */
} kd_headers_size;

/* Finds the first header called name and returns its value as the key in
 * *key / *key_len (borrowed from hdrs). false when there is no such header,
 * or its value is null, empty or longer than max_len: the key is missing. */
bool kd_headers_key(const rd_kafka_headers_t *hdrs, const char *name, size_t max_len,
                    const char **key, size_t *key_len);

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
