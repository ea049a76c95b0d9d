/*
 * kdedup - text built without printf (see fmt.h).
 */
#include "dedup/fmt.h"

#include "dedup/hex.h"

#include <string.h>

kd_fmt kd_fmt_on(char *buf, size_t size) {
    if (size)
        buf[0] = '\0';
    return (kd_fmt){.buf = buf, .size = size, .n = 0};
}

void kd_fmt_mem_cut(kd_fmt *f, const char *s, size_t len) {
    size_t room = f->n + 1 < f->size ? f->size - 1 - f->n : 0;
    size_t put = len < room ? len : room;

    if (put) {
        memcpy(f->buf + f->n, s, put);
        f->buf[f->n + put] = '\0';
    }
    f->n += len;
}

void kd_fmt_str(kd_fmt *f, const char *s) {
    kd_fmt_mem(f, s, strlen(s));
}

/* The two decimal digits of 0..99, in order: "00" "01" ... "99". */
static const char dec_pairs[2 * 100 + 1] =
    "00010203040506070809101112131415161718192021222324252627282930313233343536373839"
    "40414243444546474849505152535455565758596061626364656667686970717273747576777879"
    "8081828384858687888990919293949596979899";

void kd_fmt_u64(kd_fmt *f, uint64_t v) {
    char digits[20];
    size_t i = sizeof(digits);

    for (; v >= 100; v /= 100) /* two digits a division */
        memcpy(digits + (i -= 2), dec_pairs + 2 * (v % 100), 2);
    if (v >= 10)
        memcpy(digits + (i -= 2), dec_pairs + 2 * v, 2);
    else
        digits[--i] = (char)('0' + v);
    kd_fmt_mem(f, digits + i, sizeof(digits) - i);
}

void kd_fmt_i64(kd_fmt *f, int64_t v) {
    if (v < 0) {
        kd_fmt_mem(f, "-", 1);
        kd_fmt_u64(f, 0 - (uint64_t)v); /* INT64_MIN too */
    } else {
        kd_fmt_u64(f, (uint64_t)v);
    }
}

void kd_fmt_hex(kd_fmt *f, const unsigned char *bytes, size_t n) {
    char pair[2];

    if (f->n + 2 * n < f->size) { /* fits: straight into the buffer */
        kd_hex_put(bytes, n, f->buf + f->n);
        f->n += 2 * n;
        f->buf[f->n] = '\0';
        return;
    }
    for (size_t i = 0; i < n; i++) {
        kd_hex_put(bytes + i, 1, pair);
        kd_fmt_mem(f, pair, 2);
    }
}

size_t kd_fmt_len(const kd_fmt *f) {
    if (!f->size)
        return 0;
    return f->n < f->size ? f->n : f->size - 1;
}
