/*
 * kdedup - the claims this run's live messages hold, by route and key.
 *
 * The store says a key is in flight and which run claimed it, but not which
 * of that run's messages holds the claim. When a partition changes owner in
 * the same process, a message of the ended ownership may still hold a claim
 * while the partition's next ownership consumes the same key again: only
 * the holder's ownership tells "a duplicate of a delivery in flight" from
 * "a claim whose delivery nobody in this run is making any more". This
 * table answers it. It holds one entry per message that holds a claim, so
 * it is bounded by the messages in flight.
 *
 * Not thread-safe: the pipeline's thread owns it. Keys are borrowed from
 * the holders, which must outlive their entries.
 */
#ifndef KD_HELD_H
#define KD_HELD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct kd_held kd_held;

/* An empty table; NULL when out of memory. */
kd_held *kd_held_new(void);

/* Destroys it (the holders are not touched). NULL-safe. */
void kd_held_destroy(kd_held *h);

/* Records that `holder` holds the claim of key in route; key (key_len
 * bytes) must stay valid until the entry is removed. A key holds at most
 * one entry: a second add replaces the holder. False when out of memory
 * (nothing recorded). */
bool kd_held_add(kd_held *h, size_t route, const void *key, size_t key_len, void *holder);

/* The holder of key in route, or NULL. */
void *kd_held_find(const kd_held *h, size_t route, const void *key, size_t key_len);

/* Removes key's entry if `holder` is its holder (a no-op otherwise). */
void kd_held_remove(kd_held *h, size_t route, const void *key, size_t key_len,
                    const void *holder);

/* How many claims are held. */
size_t kd_held_count(const kd_held *h);

#endif /* KD_HELD_H */
