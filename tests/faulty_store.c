/*
 * kdedup tests - a store that fails on demand (see faulty_store.h).
 */
#include "tests/faulty_store.h"
#include "dedup/store_int.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define DISK_FULL "injected: IO error: No space left on device"

typedef struct faulty {
    kd_store *inner;
    atomic_bool fail;
    atomic_long fail_after; /* batch appends let through before fail (-1: none) */
    atomic_ulong refused;
    atomic_uint delay_ms;
    atomic_ulong delayed;
    pthread_mutex_t hold_lock; /* guards hold */
    pthread_cond_t hold_cond;  /* signalled when hold ends */
    bool hold;
    atomic_ulong held;
    pthread_mutex_t race_lock; /* guards the armed race */
    char *race_stream;         /* NULL: none armed */
    size_t race_stream_len;
    void *race_payload;
    size_t race_payload_len;
    unsigned race_times; /* races left to lose */
    atomic_ulong raced;
    pthread_mutex_t reads_lock; /* guards fail_reads */
    char *fail_reads;           /* reads of streams beginning so fail (NULL: none) */
    atomic_ulong reads_refused;
} faulty;

/* True when a read of stream is to fail (counted). */
static bool refuse_read(faulty *f, const char *stream, size_t stream_len) {
    bool refuse;

    pthread_mutex_lock(&f->reads_lock);
    refuse = f->fail_reads && stream_len >= strlen(f->fail_reads) &&
             !memcmp(stream, f->fail_reads, strlen(f->fail_reads));
    pthread_mutex_unlock(&f->reads_lock);
    if (refuse)
        atomic_fetch_add(&f->reads_refused, 1);
    return refuse;
}

static kd_err f_read_last(void *impl, const char *stream, size_t stream_len,
                          uint64_t *seq, void **payload, size_t *payload_len,
                          bool *found) {
    faulty *f = impl;

    if (refuse_read(f, stream, stream_len))
        return KD_ERR_STORE;
    return kd_store_read_last(f->inner, stream, stream_len, seq, payload, payload_len,
                              found);
}

static kd_err f_read_last_batch(void *impl, kd_read *items, size_t n) {
    faulty *f = impl;

    return kd_store_read_last_batch(f->inner, items, n);
}

static bool refuse(faulty *f) {
    if (!atomic_load(&f->fail))
        return false;
    atomic_fetch_add(&f->refused, 1);
    return true;
}

static void race_clear(faulty *f) {
    free(f->race_stream);
    free(f->race_payload);
    f->race_stream = NULL;
    f->race_payload = NULL;
}

/* The armed race, if it is for stream: the other writer appends first, at
 * the sequence number the caller expects. */
static void race(faulty *f, const char *stream, size_t stream_len, uint64_t seq) {
    pthread_mutex_lock(&f->race_lock);
    if (f->race_stream && f->race_stream_len == stream_len &&
        !memcmp(f->race_stream, stream, stream_len)) {
        if (kd_store_append(f->inner, stream, stream_len, seq, f->race_payload,
                            f->race_payload_len) == KD_OK)
            atomic_fetch_add(&f->raced, 1);
        if (--f->race_times == 0)
            race_clear(f);
    }
    pthread_mutex_unlock(&f->race_lock);
}

static kd_err f_append(void *impl, const char *stream, size_t stream_len,
                       uint64_t expected_seq, const void *payload, size_t payload_len) {
    faulty *f = impl;

    if (refuse(f))
        return KD_ERR_STORE;
    race(f, stream, stream_len, expected_seq);
    return kd_store_append(f->inner, stream, stream_len, expected_seq, payload,
                           payload_len);
}

/* Counts a batch append against fail_after: the one past it switches
 * writes off. */
static void fail_after_count(faulty *f) {
    long left = atomic_load(&f->fail_after);

    while (left >= 0 && !atomic_compare_exchange_weak(&f->fail_after, &left, left - 1))
        ;
    if (left == 0)
        atomic_store(&f->fail, true);
}

/* Waits while batch appends are held. */
static void wait_while_held(faulty *f) {
    pthread_mutex_lock(&f->hold_lock);
    if (f->hold)
        atomic_fetch_add(&f->held, 1);
    while (f->hold)
        pthread_cond_wait(&f->hold_cond, &f->hold_lock);
    pthread_mutex_unlock(&f->hold_lock);
}

static kd_err f_append_batch(void *impl, kd_append *items, size_t n) {
    faulty *f = impl;
    unsigned ms = atomic_load(&f->delay_ms);

    wait_while_held(f);
    fail_after_count(f);

    if (ms) {
        nanosleep(&(struct timespec){ms / 1000, (long)(ms % 1000) * 1000000}, NULL);
        atomic_fetch_add(&f->delayed, 1);
    }
    if (refuse(f)) {
        for (size_t i = 0; i < n; i++)
            items[i].result = KD_ERR_STORE;
        return KD_ERR_STORE;
    }
    for (size_t i = 0; i < n; i++)
        race(f, items[i].stream, items[i].stream_len, items[i].expected_seq);
    return kd_store_append_batch(f->inner, items, n);
}

static void f_set_retention(void *impl, uint64_t ttl_ms, uint64_t inflight_ms) {
    faulty *f = impl;

    kd_store_set_retention(f->inner, ttl_ms, inflight_ms);
}

static void f_last_error(void *impl, char *buf, size_t size) {
    faulty *f = impl;

    if (atomic_load(&f->fail))
        snprintf(buf, size, "%s", DISK_FULL);
    else
        kd_store_last_error(f->inner, buf, size);
}

static void f_destroy(void *impl) {
    faulty *f = impl;

    kd_store_destroy(f->inner);
    race_clear(f);
    free(f->fail_reads);
    pthread_mutex_destroy(&f->reads_lock);
    pthread_mutex_destroy(&f->race_lock);
    pthread_cond_destroy(&f->hold_cond);
    pthread_mutex_destroy(&f->hold_lock);
    free(f);
}

static const struct kd_store_ops faulty_ops = {
    .name = "faulty",
    .read_last = f_read_last,
    .append = f_append,
    .destroy = f_destroy,
    .append_batch = f_append_batch,
    .read_last_batch = f_read_last_batch,
    .set_retention = f_set_retention,
    .last_error = f_last_error,
};

static faulty *impl_of(kd_store *s) {
    return kd_store_backend(s, &faulty_ops);
}

kd_store *kd_faulty_store_new(kd_store *inner) {
    faulty *f = calloc(1, sizeof(*f));

    if (!f) {
        kd_store_destroy(inner);
        return NULL;
    }
    f->inner = inner;
    atomic_store(&f->fail_after, -1);
    pthread_mutex_init(&f->race_lock, NULL);
    pthread_mutex_init(&f->reads_lock, NULL);
    pthread_mutex_init(&f->hold_lock, NULL);
    pthread_cond_init(&f->hold_cond, NULL);
    return kd_store_new(&faulty_ops, f);
}

void kd_faulty_store_fail_writes(kd_store *faulty_store, bool fail) {
    atomic_store(&impl_of(faulty_store)->fail, fail);
}

void kd_faulty_store_fail_writes_after(kd_store *faulty_store, unsigned ok) {
    atomic_store(&impl_of(faulty_store)->fail_after, (long)ok);
}

void kd_faulty_store_delay_writes(kd_store *faulty_store, unsigned ms) {
    atomic_store(&impl_of(faulty_store)->delay_ms, ms);
}

unsigned long kd_faulty_store_delayed(kd_store *faulty_store) {
    return atomic_load(&impl_of(faulty_store)->delayed);
}

void kd_faulty_store_hold_writes(kd_store *faulty_store, bool hold) {
    faulty *f = impl_of(faulty_store);

    pthread_mutex_lock(&f->hold_lock);
    f->hold = hold;
    pthread_cond_broadcast(&f->hold_cond);
    pthread_mutex_unlock(&f->hold_lock);
}

unsigned long kd_faulty_store_held(kd_store *faulty_store) {
    return atomic_load(&impl_of(faulty_store)->held);
}

unsigned long kd_faulty_store_refused(kd_store *faulty_store) {
    return atomic_load(&impl_of(faulty_store)->refused);
}

void kd_faulty_store_race(kd_store *faulty_store, const char *stream, size_t stream_len,
                          const void *payload, size_t payload_len, unsigned times) {
    faulty *f = impl_of(faulty_store);

    pthread_mutex_lock(&f->race_lock);
    race_clear(f);
    f->race_stream = malloc(stream_len ? stream_len : 1);
    f->race_payload = malloc(payload_len ? payload_len : 1);
    if (f->race_stream && f->race_payload) {
        memcpy(f->race_stream, stream, stream_len);
        memcpy(f->race_payload, payload, payload_len);
        f->race_stream_len = stream_len;
        f->race_payload_len = payload_len;
        f->race_times = times;
    }
    if (!f->race_stream || !f->race_payload || !times)
        race_clear(f);
    pthread_mutex_unlock(&f->race_lock);
}

unsigned long kd_faulty_store_raced(kd_store *faulty_store) {
    return atomic_load(&impl_of(faulty_store)->raced);
}

bool kd_faulty_store_fail_reads(kd_store *faulty_store, const char *prefix) {
    faulty *f = impl_of(faulty_store);
    char *copy = prefix ? strdup(prefix) : NULL;

    if (prefix && !copy)
        return false;
    pthread_mutex_lock(&f->reads_lock);
    free(f->fail_reads);
    f->fail_reads = copy;
    pthread_mutex_unlock(&f->reads_lock);
    return true;
}

unsigned long kd_faulty_store_reads_refused(kd_store *faulty_store) {
    return atomic_load(&impl_of(faulty_store)->reads_refused);
}
