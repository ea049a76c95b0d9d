/*
 * kdedup - a message's headers: the key, and their size (see headers.h).
 */
#include "sidecar/headers.h"

#include <string.h>

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

kd_headers_size kd_headers_measure(const rd_kafka_headers_t *hdrs) {
    kd_headers_size s = {0};
    const char *name;
    const void *val;
    size_t len;

    for (size_t i = 0; hdrs && rd_kafka_header_get_all(hdrs, i, &name, &val, &len) ==
                                   RD_KAFKA_RESP_ERR_NO_ERROR;
         i++) {
        s.count++;
        s.bytes += strlen(name) + (val ? len : 0);
    }
    return s;
}

size_t kd_headers_memory(kd_headers_size s) {
    return s.bytes + s.count * KD_HEADER_OVERHEAD;
}

size_t kd_headers_record_memory(const rd_kafka_message_t *rkm) {
    rd_kafka_headers_t *hdrs = NULL;

    if (rd_kafka_message_headers(rkm, &hdrs) != RD_KAFKA_RESP_ERR_NO_ERROR)
        hdrs = NULL;
    return rkm->len + rkm->key_len + kd_headers_memory(kd_headers_measure(hdrs));
}
