/*
 * kdedup - the headers of a downstream record, and their size (see
 * headers.h).
 */
#include "sidecar/headers.h"

#include "dedup/fmt.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* The last value of header name in hdrs (NULL: none), or false. */
static bool header(const rd_kafka_headers_t *hdrs, const char *name, const void **v,
                   size_t *len) {
    return hdrs &&
           rd_kafka_header_get_last(hdrs, name, v, len) == RD_KAFKA_RESP_ERR_NO_ERROR &&
           *v;
}

/* What a signature covers, of a stamp. */
static kd_signed signed_of(const kd_headers_stamp *s) {
    return (kd_signed){.from = s->from,
                       .to = s->to,
                       .source = s->source,
                       .source_len = strlen(s->source),
                       .run = s->run,
                       .run_len = strlen(s->run),
                       .at = s->at,
                       .at_len = strlen(s->at),
                       .key = s->key,
                       .key_len = s->key_len,
                       .forget = s->forget};
}

const char *kd_headers_source_format(char *buf, size_t size, const char *topic,
                                     int32_t partition, int64_t offset) {
    kd_fmt f = kd_fmt_on(buf, size);

    kd_fmt_str(&f, topic);
    kd_fmt_mem(&f, "/", 1);
    kd_fmt_i64(&f, partition);
    kd_fmt_mem(&f, "/", 1);
    kd_fmt_i64(&f, offset);
    return buf;
}

const char *kd_headers_at_format(char *buf, size_t size, uint64_t wall_ms) {
    kd_fmt f = kd_fmt_on(buf, size);

    kd_fmt_u64(&f, wall_ms);
    return buf;
}

rd_kafka_headers_t *kd_headers_copy_foreign(const rd_kafka_headers_t *src,
                                            const char *keep, size_t extra,
                                            size_t *stripped) {
    rd_kafka_headers_t *hdrs =
        rd_kafka_headers_new(src ? rd_kafka_header_cnt(src) + extra : extra);
    const char *name;
    const void *val;
    size_t len;

    *stripped = 0;
    for (size_t i = 0; src && !rd_kafka_header_get_all(src, i, &name, &val, &len); i++)
        if (strncasecmp(name, KD_HEADERS_PREFIX, strlen(KD_HEADERS_PREFIX)) ||
            (keep && !strcasecmp(name, keep)))
            rd_kafka_header_add(hdrs, name, -1, val, (ssize_t)len);
        else
            (*stripped)++;
    return hdrs;
}

void kd_headers_add_stamp(rd_kafka_headers_t *hdrs, const kd_headers_stamp *s) {
    if (s->forget)
        rd_kafka_header_add(hdrs, KD_FORGET_HEADER, -1, "1", 1);
    rd_kafka_header_add(hdrs, KD_SOURCE_HEADER, -1, s->source, -1);
    rd_kafka_header_add(hdrs, KD_RUN_HEADER, -1, s->run, -1);
    rd_kafka_header_add(hdrs, KD_FORWARDED_AT_HEADER, -1, s->at, -1);
    if (s->key_header)
        rd_kafka_header_add(hdrs, KD_KEY_HEADER, -1, s->key, (ssize_t)s->key_len);
}

void kd_headers_add_unclaimed(rd_kafka_headers_t *hdrs) {
    rd_kafka_header_add(hdrs, KD_UNCLAIMED_HEADER, -1, "1", 1);
}

bool kd_headers_add_signature(rd_kafka_headers_t *hdrs, kd_signer *signer,
                              const kd_headers_stamp *s) {
    kd_signed w = signed_of(s);
    char sig[KD_SIGNATURE_LEN + 1];

    if (!kd_sign(signer, &w, sig))
        return false;
    rd_kafka_header_add(hdrs, KD_SIGNATURE_HEADER, -1, sig, -1);
    return true;
}

bool kd_headers_key(const rd_kafka_headers_t *hdrs, const char *name, size_t max_len,
                    const void **key, size_t *key_len) {
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

bool kd_headers_source(const rd_kafka_headers_t *hdrs, const char *topic, int32_t *part,
                       int64_t *offset) {
    const void *v;
    size_t len, tlen = strlen(topic);
    char rest[48], *end;
    long long pn, on;

    if (!hdrs ||
        rd_kafka_header_get_last(hdrs, KD_SOURCE_HEADER, &v, &len) !=
            RD_KAFKA_RESP_ERR_NO_ERROR ||
        !v || len <= tlen + 1 || memcmp(v, topic, tlen) != 0 ||
        ((const char *)v)[tlen] != '/' || len - tlen - 1 >= sizeof(rest))
        return false;
    memcpy(rest, (const char *)v + tlen + 1, len - tlen - 1);
    rest[len - tlen - 1] = '\0';
    pn = strtoll(rest, &end, 10);
    if (end == rest || *end != '/' || pn < 0 || pn > INT32_MAX)
        return false;
    on = strtoll(end + 1, &end, 10);
    if (*end || on < 0)
        return false;
    *part = (int32_t)pn;
    *offset = on;
    return true;
}

int64_t kd_headers_forwarded_at(const rd_kafka_headers_t *hdrs) {
    const void *v;
    size_t len;
    char text[24], *end;
    long long at;

    if (!hdrs ||
        rd_kafka_header_get_last(hdrs, KD_FORWARDED_AT_HEADER, &v, &len) !=
            RD_KAFKA_RESP_ERR_NO_ERROR ||
        !v || len == 0 || len >= sizeof(text))
        return -1;
    memcpy(text, v, len);
    text[len] = '\0';
    at = strtoll(text, &end, 10);
    return !*end && at >= 0 ? at : -1;
}

/* True when hdrs (NULL: none) hold a header called name (any value). */
static bool has_header(const rd_kafka_headers_t *hdrs, const char *name) {
    const void *v;
    size_t len;

    return hdrs &&
           rd_kafka_header_get_last(hdrs, name, &v, &len) == RD_KAFKA_RESP_ERR_NO_ERROR;
}

const rd_kafka_headers_t *kd_headers_of(const rd_kafka_message_t *rkm) {
    rd_kafka_headers_t *h = NULL;

    return rd_kafka_message_headers(rkm, &h) == RD_KAFKA_RESP_ERR_NO_ERROR ? h : NULL;
}

bool kd_headers_unclaimed(const rd_kafka_headers_t *hdrs) {
    return has_header(hdrs, KD_UNCLAIMED_HEADER);
}

bool kd_headers_forget(const rd_kafka_headers_t *hdrs) {
    return has_header(hdrs, KD_FORGET_HEADER);
}

bool kd_headers_verify(const rd_kafka_headers_t *hdrs, kd_signer *const *signers,
                       size_t n, const char *from, const char *to, const void *key,
                       size_t key_len, bool forget) {
    kd_signed w = {
        .from = from, .to = to, .key = key, .key_len = key_len, .forget = forget};
    const void *sig;
    size_t sig_len;

    if (header(hdrs, KD_SOURCE_HEADER, &w.source, &w.source_len) &&
        header(hdrs, KD_RUN_HEADER, &w.run, &w.run_len) &&
        header(hdrs, KD_FORWARDED_AT_HEADER, &w.at, &w.at_len) &&
        header(hdrs, KD_SIGNATURE_HEADER, &sig, &sig_len))
        for (size_t i = 0; i < n && signers[i]; i++)
            if (kd_sign_verify(signers[i], &w, sig, sig_len))
                return true;
    return false;
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
