/*
 * kdedup - bytes as lowercase hex digits: the one encoder (stream names,
 * signatures, fingerprints, key digests in logs, JSON escapes).
 */
#ifndef KD_HEX_H
#define KD_HEX_H

#include <stddef.h>

/* Writes bytes[0..n) as 2n lowercase hex digits into out, without a NUL
 * (out holds 2n bytes). */
void kd_hex_put(const unsigned char *bytes, size_t n, char *out);

/* Writes bytes[0..n) as 2n lowercase hex digits and a NUL into out (2n + 1
 * bytes). Returns out. */
char *kd_hex(const unsigned char *bytes, size_t n, char *out);

#endif /* KD_HEX_H */
