/*
 * kdedup tests - a store that fails on demand (see faulty_store.h).
 */
#include "tests/faulty_store.h"
#include "dedup/store_int.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#define DISK_FULL "injected: IO error: No space left on device"

typedef struct faulty {
    kd_store *inner;
    atomic_bool fail;
    atomic_ulong refused;
    atomic_uint delay_ms;
    atomic_ulong delayed;
} faulty;

static kd_err f_read_last(void *impl, const char *stream, size_t stream_len,
                          uint64_t *seq, void **payload, size_t *payload_len,
                          bool *found) {
    faulty *f = impl;

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

static kd_err f_append(void *impl, const char *stream, size_t stream_len,
                       uint64_t expected_seq, const void *payload, size_t payload_len) {
    faulty *f = impl;

    if (refuse(f))
        return KD_ERR_STORE;
    return kd_store_append(f->inner, stream, stream_len, expected_seq, payload,
                           payload_len);
}

static kd_err f_append_batch(void *impl, kd_append *items, size_t n) {
    faulty *f = impl;
    unsigned ms = atomic_load(&f->delay_ms);

    if (ms) {
        nanosleep(&(struct timespec){ms / 1000, (long)(ms % 1000) * 1000000}, NULL);
        atomic_fetch_add(&f->delayed, 1);
    }
    if (refuse(f)) {
        for (size_t i = 0; i < n; i++)
            items[i].result = KD_ERR_STORE;
        return KD_ERR_STORE;
    }
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
    return kd_store_new(&faulty_ops, f);
}

void kd_faulty_store_fail_writes(kd_store *faulty_store, bool fail) {
    atomic_store(&impl_of(faulty_store)->fail, fail);
}

void kd_faulty_store_delay_writes(kd_store *faulty_store, unsigned ms) {
    atomic_store(&impl_of(faulty_store)->delay_ms, ms);
}

unsigned long kd_faulty_store_delayed(kd_store *faulty_store) {
    return atomic_load(&impl_of(faulty_store)->delayed);
}

unsigned long kd_faulty_store_refused(kd_store *faulty_store) {
    return atomic_load(&impl_of(faulty_store)->refused);
}
