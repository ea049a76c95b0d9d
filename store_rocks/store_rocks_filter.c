/*
 * kdedup - the RocksDB store's key filter: which streams certainly have no
 * record, so that a read of a new key asks RocksDB nothing (file map:
 * store_rocks_int.h).
 *
 * A Bloom filter over the streams' hashes (the 8 bytes each record key
 * starts with), blocked in 64-bit words: one word a stream, four bits in
 * it. Every write adds its stream before it is written; at open a thread
 * adds every record already stored, and until it is done the filter
 * answers "maybe" for every stream. Nothing is ever removed (a record
 * dropped by retention or a forget leaves its bits: a false "maybe", which
 * costs a read). A filter that took more streams than it holds at a low
 * false-positive rate answers "maybe" from then on, until the next open.
 *
 * Why a read trusts a "no": the reader loads its slot's write counter
 * before it asks the filter, and a writer adds its stream before it writes
 * and bumps the counter after. A reader that did not see the add therefore
 * holds the counter from before that write, and its append re-reads the
 * head under the lock (store_rocks_write.c).
 */
#include "store_rocks/store_rocks_int.h"

#include <stdlib.h>
#include <string.h>

#define BITS_PER_STREAM 10    /* capacity: about 2% of the absent ones read anyway */
#define BUILD_STOP_EVERY 4096 /* records the builder reads between stop checks */

/* Streams' hashes (FNV) spread over the word index and the four bit
 * positions (splitmix64's finaliser). */
static uint64_t mix(uint64_t h) {
    h = (h ^ (h >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
    h = (h ^ (h >> 27)) * UINT64_C(0x94d049bb133111eb);
    return h ^ (h >> 31);
}

/* The four bits of a mixed hash within its word (bits 40 to 63). */
static uint64_t bits_of(uint64_t x) {
    return UINT64_C(1) << ((x >> 40) & 63) | UINT64_C(1) << ((x >> 46) & 63) |
           UINT64_C(1) << ((x >> 52) & 63) | UINT64_C(1) << ((x >> 58) & 63);
}

bool kd_rocks_filter_init(kd_rocks_filter *f, size_t bytes) {
    size_t words = 1;

    memset(f, 0, sizeof(*f));
    atomic_init(&f->state, KD_FILTER_OFF);
    if (bytes < sizeof(uint64_t))
        return true; /* no filter: every read asks RocksDB */
    while (words * 2 * sizeof(uint64_t) <= bytes)
        words *= 2; /* the largest power of two that fits */
    if (!(f->words = calloc(words, sizeof(*f->words))))
        return false;
    f->mask = words - 1;
    f->bytes = words * sizeof(*f->words);
    f->capacity = (uint64_t)words * 64 / BITS_PER_STREAM;
    atomic_init(&f->state, KD_FILTER_BUILDING);
    return true;
}

void kd_rocks_filter_add(kd_rocks_filter *f, uint64_t hash) {
    uint64_t x, bits;

    if (!f->words)
        return;
    x = mix(hash);
    bits = bits_of(x);
    if ((atomic_fetch_or(&f->words[x & f->mask], bits) & bits) != bits &&
        atomic_fetch_add(&f->added, 1) + 1 > f->capacity)
        atomic_store(&f->state, KD_FILTER_OFF); /* full: "maybe" until the next open */
}

bool kd_rocks_filter_may_have(kd_rocks_filter *f, uint64_t hash) {
    uint64_t x, bits;

    if (atomic_load(&f->state) != KD_FILTER_READY)
        return true;
    x = mix(hash);
    bits = bits_of(x);
    return (atomic_load(&f->words[x & f->mask]) & bits) == bits;
}

/* The builder: adds every head record's stream, then makes the filter
 * answer (unless it filled up, or the store is closing). */
static void *build(void *arg) {
    rocks_store *r = arg;
    kd_rocks_filter *f = &r->filter_keys;
    rocksdb_iterator_t *it = rocksdb_create_iterator(r->db, r->scan_opts);
    const char prefix = PREFIX_HEAD;
    size_t n = 0;
    char *err = NULL;

    kd_rocks_perf_off();
    for (rocksdb_iter_seek(it, &prefix, 1); rocksdb_iter_valid(it);
         rocksdb_iter_next(it)) {
        size_t klen;
        const unsigned char *key = (const unsigned char *)rocksdb_iter_key(it, &klen);
        uint64_t h = 0;

        if (klen < 1 + HASH_LEN || key[0] != PREFIX_HEAD)
            break;
        for (int i = 1; i <= HASH_LEN; i++)
            h = h << 8 | key[i];
        kd_rocks_filter_add(f, h);
        if (++n % BUILD_STOP_EVERY == 0 && atomic_load(&f->stop))
            break;
    }
    rocksdb_iter_get_error(it, &err);
    rocksdb_iter_destroy(it);
    if (err) { /* unread records: the filter never answers */
        rocksdb_free(err);
        atomic_store(&f->state, KD_FILTER_OFF);
    } else if (!atomic_load(&f->stop)) {
        int building = KD_FILTER_BUILDING; /* not OFF: full meanwhile */

        atomic_compare_exchange_strong(&f->state, &building, KD_FILTER_READY);
    }
    return NULL;
}

void kd_rocks_filter_start(rocks_store *r) {
    kd_rocks_filter *f = &r->filter_keys;

    if (!f->words)
        return;
    f->has_builder = pthread_create(&f->builder, NULL, build, r) == 0;
    if (!f->has_builder) /* no builder: it never answers */
        atomic_store(&f->state, KD_FILTER_OFF);
}

void kd_rocks_filter_destroy(kd_rocks_filter *f) {
    atomic_store(&f->stop, true);
    if (f->has_builder)
        pthread_join(f->builder, NULL);
    f->has_builder = false;
    free((void *)f->words);
    f->words = NULL;
}
