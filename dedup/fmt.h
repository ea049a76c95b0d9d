/*
 * kdedup - text built on the hot path without printf: strings, decimal
 * integers and hex appended to a bounded buffer, cut as snprintf cuts
 * (receipts, the source header, the forwarding time). printf's format
 * parsing cost about 4,000 instructions a message there (BENCHMARKS,
 * "Instructions per message").
 */
#ifndef KD_FMT_H
#define KD_FMT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* A buffer being written: buf[0..size), n characters wanted so far (more
 * than size - 1 once cut). Borrowed: the caller owns buf. */
typedef struct kd_fmt {
    char *buf;
    size_t size;
    size_t n;
} kd_fmt;

/* A builder over buf[0..size), empty (buf holds "" when size > 0). */
kd_fmt kd_fmt_on(char *buf, size_t size);

/* kd_fmt_mem() when s does not fit whole: as much as fits. */
void kd_fmt_mem_cut(kd_fmt *f, const char *s, size_t len);

/* Appends s[0..len). Inline: most pieces are a few constant bytes. */
static inline void kd_fmt_mem(kd_fmt *f, const char *s, size_t len) {
    if (f->n < f->size && len < f->size - f->n) { /* fits, with its NUL */
        memcpy(f->buf + f->n, s, len);
        f->n += len;
        f->buf[f->n] = '\0';
        return;
    }
    kd_fmt_mem_cut(f, s, len);
}

/* Appends the NUL-terminated s. */
void kd_fmt_str(kd_fmt *f, const char *s);

/* Appends v in decimal, as printf's %lld writes it. */
void kd_fmt_i64(kd_fmt *f, int64_t v);

/* Appends v in decimal, as printf's %llu writes it. */
void kd_fmt_u64(kd_fmt *f, uint64_t v);

/* Appends bytes[0..n) as 2n lowercase hex digits. */
void kd_fmt_hex(kd_fmt *f, const unsigned char *bytes, size_t n);

/* The length of the text in buf (NUL-terminated, cut to size - 1 if it
 * did not fit, as snprintf leaves it; 0 when size is 0). */
size_t kd_fmt_len(const kd_fmt *f);

#endif /* KD_FMT_H */
