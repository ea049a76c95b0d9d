/*
 * kdedup - reading the idempotency key from a message's headers.
 */
#ifndef KD_HEADERS_H
#define KD_HEADERS_H

#include <librdkafka/rdkafka.h>

#include <stdbool.h>
#include <stddef.h>

/* Finds the first header called name and returns its value as the key in
 * *key / *key_len (borrowed from hdrs). false when there is no such header,
 * or its value is null, empty or longer than max_len: the key is missing. */
bool kd_headers_key(const rd_kafka_headers_t *hdrs, const char *name, size_t max_len,
                    const char **key, size_t *key_len);

#endif /* KD_HEADERS_H */
