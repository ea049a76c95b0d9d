/*
 * kdedup - helpers shared by store backends (dedup/ and store_rocks/ only).
 */
#ifndef KD_STORE_INT_H
#define KD_STORE_INT_H

#include "dedup/store.h"

#include <stddef.h>
#include <stdint.h>

/* The backend state of store if it was made with ops, else NULL: lets a
 * backend offer calls of its own (kd_rocks_compact) on a kd_store. */
void *kd_store_backend(kd_store *store, const struct kd_store_ops *ops);

/* A fast 64-bit hash (FNV-1a) of a stream key, for hash-table placement and
 * lock striping only. Identity always compares the bytes: stream keys carry a
 * SHA-256 of the idempotency key, this only spreads them. */
static inline uint64_t kd_store_stream_hash(const char *s, size_t len) {
    uint64_t h = 0xcbf29ce484222325ULL;

    for (size_t i = 0; i < len; i++) {
        h ^= (unsigned char)s[i];
        h *= 0x100000001b3ULL;
    }
    return h;
}

#endif /* KD_STORE_INT_H */
