/*
 * kdedup - the RocksDB store's key filter: which streams certainly have no
 * record, so that a read of a new key asks RocksDB nothing (file map:
 * store_rocks_int.h).
 *
 * A Bloom filter over the streams' hashes (the 8 bytes each record key
 * starts with), blocked in 64-bit words: one word a stream, four bits in
 * it. Every write adds its stream before it is written. A thread of its
 * own builds it: at open from every record stored, and again whenever it
 * has taken more streams than it holds at its false-positive rate (nothing
 * is ever removed from it: records dropped by retention or a forget leave
 * their bits). While it builds, it answers "maybe" for every stream, and
 * every read asks RocksDB. A store holding more than half the streams it
 * holds is too large for it: it answers "maybe" until the next open.
 *
 * Why a read trusts a "no":
 * - Writes. A writer adds its stream under the stream's stripe lock and
 *   writes before it lets go. A build clears the words, then takes and
 *   lets go of every stripe lock, then opens its iterator: a write whose
 *   add the clear may have wiped is in the iterator's view, and every
 *   later write adds to the cleared words.
 * - Reads during a clear. A build marks the filter BUILDING and bumps its
 *   generation before it clears. A reader reads the generation, the state
 *   (READY), the word, and the generation again; a word it read cleared
 *   comes after the bump, so the two generations differ and it answers
 *   "maybe".
 * - Appends. The reader loads its slot's write counter before it asks the
 *   filter, and a writer bumps the counter after its write: a reader that
 *   did not see the add holds the counter from before that write, and its
 *   append re-reads the head under the lock (store_rocks_write.c).
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

/* The four bits of a mixed hash within its word (bits 40 to 63; the word
 * index takes bits 0 to 30 at most). */
static uint64_t bits_of(uint64_t x) {
    return UINT64_C(1) << ((x >> 40) & 63) | UINT64_C(1) << ((x >> 46) & 63) |
           UINT64_C(1) << ((x >> 52) & 63) | UINT64_C(1) << ((x >> 58) & 63);
}

bool kd_rocks_filter_init(kd_rocks_filter *f, size_t bytes, size_t renew) {
    size_t words = 1;

    memset(f, 0, sizeof(*f));
    f->renew = renew ? renew : KD_FILTER_RENEW_RECORDS;
    atomic_init(&f->state, KD_FILTER_OFF);
    if (bytes < sizeof(uint64_t))
        return true; /* no filter: every read asks RocksDB */
    if (bytes > KD_FILTER_MAX_BYTES)
        bytes = KD_FILTER_MAX_BYTES;
    while (words * 2 * sizeof(uint64_t) <= bytes)
        words *= 2; /* the largest power of two that fits */
    if (!(f->words = calloc(words, sizeof(*f->words))))
        return false;
    f->mask = words - 1;
    f->bytes = words * sizeof(*f->words);
    f->capacity = (uint64_t)words * 64 / BITS_PER_STREAM;
    atomic_init(&f->state, KD_FILTER_BUILDING);
    pthread_mutex_init(&f->lock, NULL);
    pthread_cond_init(&f->wake, NULL);
    f->has_sync = true;
    return true;
}

void kd_rocks_filter_add(kd_rocks_filter *f, uint64_t hash) {
    uint64_t x, bits;
    int ready = KD_FILTER_READY;

    if (!f->words)
        return;
    x = mix(hash);
    bits = bits_of(x);
    if ((atomic_fetch_or(&f->words[x & f->mask], bits) & bits) != bits &&
        atomic_fetch_add(&f->added, 1) + 1 > f->capacity &&
        atomic_compare_exchange_strong(&f->state, &ready, KD_FILTER_FULL)) {
        pthread_mutex_lock(&f->lock); /* once a build: the builder builds again */
        pthread_cond_signal(&f->wake);
        pthread_mutex_unlock(&f->lock);
    }
}

bool kd_rocks_filter_may_have(kd_rocks_filter *f, uint64_t hash) {
    uint64_t gen = atomic_load(&f->gen), x, bits;
    bool have;

    if (atomic_load(&f->state) != KD_FILTER_READY)
        return true;
    x = mix(hash);
    bits = bits_of(x);
    have = (atomic_load(&f->words[x & f->mask]) & bits) == bits;
    return have || atomic_load(&f->gen) != gen; /* a build began: maybe cleared */
}

/* Clears the words for a build, and waits out every write under way (see
 * the head of this file). */
static void clear_for_build(rocks_store *r, kd_rocks_filter *f) {
    atomic_store(&f->state, KD_FILTER_BUILDING);
    atomic_fetch_add(&f->gen, 1);
    for (uint64_t i = 0; i <= f->mask; i++) /* release: a reader of a 0 sees the bump */
        atomic_store_explicit(&f->words[i], 0, memory_order_release);
    atomic_store(&f->added, 0);
    for (size_t i = 0; i < STRIPES; i++) {
        pthread_mutex_lock(&r->stripes[i]);
        pthread_mutex_unlock(&r->stripes[i]);
    }
}

/* Adds every head record's stream, counting them in *heads; false when an
 * iterator failed. The
 * iterator is made afresh every f->renew records, from where it was: one
 * iterator pins the memtables and files of its start, which the writes
 * of a long build would otherwise keep in memory. */
static bool scan(rocks_store *r, kd_rocks_filter *f, uint64_t *heads) {
    rocksdb_iterator_t *it = rocksdb_create_iterator(r->db, r->scan_opts);
    char at[1 + HASH_LEN] = {PREFIX_HEAD}, *err = NULL;
    size_t n = 0, at_len = 1;
    bool ok;

    rocksdb_iter_seek(it, at, at_len);
    while (rocksdb_iter_valid(it)) {
        size_t klen;
        const unsigned char *key = (const unsigned char *)rocksdb_iter_key(it, &klen);
        uint64_t h = 0;

        if (klen < 1 || key[0] != PREFIX_HEAD)
            break; /* past the head records */
        if (++n % BUILD_STOP_EVERY == 0 && atomic_load(&f->stop))
            break;
        if (klen >= 1 + HASH_LEN) { /* else a foreign key (test_short_foreign_keys) */
            for (int i = 1; i <= HASH_LEN; i++)
                h = h << 8 | key[i];
            kd_rocks_filter_add(f, h);
            ++*heads;
        }
        if (n % f->renew == 0 && klen >= 1 + HASH_LEN) {
            /* The next iterator starts at this hash and reads what it
             * finds there: this record may be gone from its view
             * (retention), and the one after it must not be skipped. */
            memcpy(at, key, at_len = 1 + HASH_LEN);
            rocksdb_iter_get_error(it, &err);
            rocksdb_iter_destroy(it);
            it = NULL;
            if (err)
                break;
            it = rocksdb_create_iterator(r->db, r->scan_opts);
            rocksdb_iter_seek(it, at, at_len);
            continue;
        }
        rocksdb_iter_next(it);
    }
    if (it) {
        rocksdb_iter_get_error(it, &err);
        rocksdb_iter_destroy(it);
    }
    ok = err == NULL;
    rocksdb_free(err);
    return ok;
}

/* The builder: builds, answers, and builds again once the filter is full;
 * gives up (OFF) on a failed scan or a store too large for it (more head
 * records than half what it holds: it would be full again soon). */
static void *build(void *arg) {
    rocks_store *r = arg;
    kd_rocks_filter *f = &r->filter_keys;

    kd_rocks_perf_off();
    for (;;) {
        uint64_t heads = 0;

        clear_for_build(r, f);
        if (!scan(r, f, &heads) || heads > f->capacity / 2) {
            atomic_store(&f->state, KD_FILTER_OFF);
            return NULL;
        }
        pthread_mutex_lock(&f->lock);
        if (!atomic_load(&f->stop))
            atomic_store(&f->state, KD_FILTER_READY);
        while (!atomic_load(&f->stop) && atomic_load(&f->state) != KD_FILTER_FULL)
            pthread_cond_wait(&f->wake, &f->lock);
        pthread_mutex_unlock(&f->lock);
        if (atomic_load(&f->stop))
            return NULL;
        atomic_fetch_add(&f->rebuilds, 1);
    }
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
    if (f->has_sync) {
        pthread_mutex_lock(&f->lock);
        atomic_store(&f->stop, true);
        pthread_cond_signal(&f->wake);
        pthread_mutex_unlock(&f->lock);
    }
    if (f->has_builder)
        pthread_join(f->builder, NULL);
    if (f->has_sync) {
        pthread_cond_destroy(&f->wake);
        pthread_mutex_destroy(&f->lock);
    }
    f->has_builder = f->has_sync = false;
    free((void *)f->words);
    f->words = NULL;
}
