/*
 * kdedup - receipts (see receipt.h).
 */
#include "sidecar/receipt.h"

#include "dedup/fmt.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

/* Writes `<topic>/<partition>@<offset>` (what place() reads). */
static void place_put(kd_fmt *f, const char *topic, size_t topic_len, int32_t partition,
                      int64_t offset) {
    kd_fmt_mem(f, topic, topic_len);
    kd_fmt_mem(f, "/", 1);
    kd_fmt_i64(f, partition);
    kd_fmt_mem(f, "@", 1);
    kd_fmt_i64(f, offset);
}

size_t kd_receipt_format(const kd_receipt *r, char *buf, size_t size) {
    kd_fmt f = kd_fmt_on(buf, size);

    kd_fmt_mem(&f, "v1 to=", 6);
    place_put(&f, r->to, r->to_len, r->to_partition, r->to_offset);
    kd_fmt_mem(&f, " ts=", 4);
    kd_fmt_i64(&f, r->timestamp);
    kd_fmt_mem(&f, " from=", 6);
    place_put(&f, r->from, r->from_len, r->from_partition, r->from_offset);
    return kd_fmt_len(&f);
}

/* Reads a decimal number of at most 18 digits, as printf writes it (no
 * leading zero, no "-0"; a '-' only when negative is allowed), from
 * [*p, end); moves *p past it. */
static bool number(const char **p, const char *end, bool negative, int64_t *out) {
    bool minus = negative && *p < end && **p == '-';
    const char *s = *p + minus, *first = s;
    int64_t v = 0;
    int digits = 0;

    for (; s < end && *s >= '0' && *s <= '9' && digits < 18; s++, digits++)
        v = v * 10 + (*s - '0');
    if (!digits || (s < end && *s >= '0' && *s <= '9') || (digits > 1 && *first == '0') ||
        (minus && v == 0))
        return false;
    *out = minus ? -v : v;
    *p = s;
    return true;
}

/* A character Kafka allows in a topic name. */
static bool topic_char(char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           c == '.' || c == '_' || c == '-';
}

/* Reads `<topic>/<partition>@<offset>` from [*p, end). */
static bool place(const char **p, const char *end, const char **topic, size_t *topic_len,
                  int32_t *partition, int64_t *offset) {
    const char *slash = *p;
    int64_t part;

    while (slash < end && topic_char(*slash))
        slash++;
    if (slash == *p || slash >= end || *slash != '/')
        return false;
    *topic = *p;
    *topic_len = (size_t)(slash - *p);
    *p = slash + 1;
    if (!number(p, end, false, &part) || part > INT32_MAX || *p >= end || **p != '@')
        return false;
    (*p)++;
    *partition = (int32_t)part;
    return number(p, end, true, offset);
}

/* Reads the literal word from [*p, end). */
static bool literal(const char **p, const char *end, const char *word) {
    size_t n = strlen(word);

    if ((size_t)(end - *p) < n || memcmp(*p, word, n) != 0)
        return false;
    *p += n;
    return true;
}

bool kd_receipt_parse(const char *text, size_t len, kd_receipt *out) {
    const char *p = text, *end = text + len;

    memset(out, 0, sizeof(*out));
    return text && literal(&p, end, "v1 to=") &&
           place(&p, end, &out->to, &out->to_len, &out->to_partition, &out->to_offset) &&
           literal(&p, end, " ts=") && number(&p, end, true, &out->timestamp) &&
           literal(&p, end, " from=") &&
           place(&p, end, &out->from, &out->from_len, &out->from_partition,
                 &out->from_offset) &&
           (p == end || *p == ' ');
}
