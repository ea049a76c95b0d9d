/*
 * kdedup - the idempotency key from headers (see headers.h).
 */
#include "sidecar/headers.h"

bool kd_headers_key(const rd_kafka_headers_t *hdrs, const char *name, size_t max_len,
                    const char **key, size_t *key_len) {
    const void *val = NULL;
    size_t size = 0;

    if (!hdrs ||
        rd_kafka_header_get(hdrs, 0, name, &val, &size) != RD_KAFKA_RESP_ERR_NO_ERROR)
        return false;
    if (!val || size == 0 || size > max_len)
        return false;
    *key = val;
    *key_len = size;
    return true;
}
