/*
 * kdedup - the claims held by live messages (see held.h): an open-addressing
 * table with linear probing and backward-shift deletion, at most half full.
 * Keys come from anyone who can write to a source topic, so the hash is
 * seeded per table.
 */
#include "sidecar/held.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct slot {
    uint64_t hash;
    size_t route;
    const void *key;
    size_t key_len;
    void *holder; /* NULL: empty */
} slot;

struct kd_held {
    slot *slots;
    size_t cap; /* a power of two */
    size_t n;
    uint64_t seed;
};

#define MIN_CAP 64

/* FNV-1a over the route and key from a per-table seed, then a final mix. */
static uint64_t hash_of(uint64_t seed, size_t route, const void *key, size_t len) {
    const unsigned char *b = key;
    uint64_t x = seed ^ ((uint64_t)route * 0x9e3779b97f4a7c15ull);

    for (size_t i = 0; i < len; i++)
        x = (x ^ b[i]) * 0x100000001b3ull;
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    return x;
}

static uint64_t random_seed(void) {
    uint64_t seed = 0;
    FILE *fp = fopen("/dev/urandom", "rb");

    if (fp) {
        if (fread(&seed, sizeof(seed), 1, fp) != 1)
            seed = 0;
        fclose(fp);
    }
    return seed ? seed : (uint64_t)time(NULL) * 0xcbf29ce484222325ull;
}

kd_held *kd_held_new(void) {
    kd_held *h = calloc(1, sizeof(*h));

    if (!h || !(h->slots = calloc(MIN_CAP, sizeof(*h->slots)))) {
        free(h);
        return NULL;
    }
    h->cap = MIN_CAP;
    h->seed = random_seed();
    return h;
}

void kd_held_destroy(kd_held *h) {
    if (!h)
        return;
    free(h->slots);
    free(h);
}

static bool same(const slot *s, uint64_t hash, size_t route, const void *key,
                 size_t len) {
    return s->holder && s->hash == hash && s->route == route && s->key_len == len &&
           !memcmp(s->key, key, len);
}

/* The slot holding the key, or the empty slot where it would go. */
static slot *probe(const kd_held *h, uint64_t hash, size_t route, const void *key,
                   size_t len) {
    size_t mask = h->cap - 1;

    for (size_t i = hash & mask;; i = (i + 1) & mask)
        if (!h->slots[i].holder || same(&h->slots[i], hash, route, key, len))
            return &h->slots[i];
}

static bool grow(kd_held *h) {
    slot *old = h->slots;
    size_t old_cap = h->cap;
    slot *slots = calloc(old_cap * 2, sizeof(*slots));

    if (!slots)
        return false;
    h->slots = slots;
    h->cap = old_cap * 2;
    for (size_t i = 0; i < old_cap; i++)
        if (old[i].holder)
            *probe(h, old[i].hash, old[i].route, old[i].key, old[i].key_len) = old[i];
    free(old);
    return true;
}

bool kd_held_add(kd_held *h, size_t route, const void *key, size_t key_len,
                 void *holder) {
    uint64_t hash = hash_of(h->seed, route, key, key_len);
    slot *s;

    if ((h->n + 1) * 2 > h->cap && !grow(h))
        return false;
    s = probe(h, hash, route, key, key_len);
    if (!s->holder)
        h->n++;
    *s = (slot){hash, route, key, key_len, holder};
    return true;
}

void *kd_held_find(const kd_held *h, size_t route, const void *key, size_t key_len) {
    return probe(h, hash_of(h->seed, route, key, key_len), route, key, key_len)->holder;
}

void kd_held_remove(kd_held *h, size_t route, const void *key, size_t key_len,
                    const void *holder) {
    size_t mask = h->cap - 1;
    slot *s = probe(h, hash_of(h->seed, route, key, key_len), route, key, key_len);
    size_t i = (size_t)(s - h->slots), j = i;

    if (!s->holder || s->holder != holder)
        return;
    h->n--;
    /* Backward shift: pull later entries of the run into the hole, so that
     * every entry stays reachable from its home slot without tombstones. */
    for (;;) {
        h->slots[i].holder = NULL;
        for (;;) {
            j = (j + 1) & mask;
            if (!h->slots[j].holder)
                return;
            size_t home = h->slots[j].hash & mask;

            /* j's entry may move to i only if i lies between home and j. */
            if (i <= j ? (home <= i || home > j) : (home <= i && home > j))
                break;
        }
        h->slots[i] = h->slots[j];
        i = j;
    }
}

size_t kd_held_count(const kd_held *h) {
    return h->n;
}
