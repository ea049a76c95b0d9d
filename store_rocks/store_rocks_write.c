/*
 * kdedup - the RocksDB store's writes: appends under the stripe locks, lazy
 * writes and their sync (file map: store_rocks_int.h).
 */
#include "store_rocks/store_rocks_int.h"
#include "dedup/store_int.h"

#include <stdlib.h>
#include <string.h>

static pthread_mutex_t *stripe_of(rocks_store *r, uint64_t hash) {
    return &r->stripes[hash % STRIPES];
}

/* Raises r->lazy_durable to at least n. */
static void lazy_covered(rocks_store *r, uint64_t n) {
    uint64_t cur = atomic_load(&r->lazy_durable);

    while (cur < n && !atomic_compare_exchange_weak(&r->lazy_durable, &cur, n))
        ;
}

static kd_err batch_write(rocks_store *r, rocksdb_writebatch_t *wb, bool lazy) {
    uint64_t before = atomic_load(&r->lazy_writes); /* all written already */
    char *err = NULL;

    rocksdb_write(r->db, lazy ? r->lazy_wopts : r->wopts, wb, &err);
    if (err)
        return kd_rocks_fail(r, "write failed", err);
    if (lazy)
        atomic_fetch_add(&r->lazy_writes, 1);
    else
        lazy_covered(r, before);
    return KD_OK;
}

kd_err kd_rocks_sync(void *impl) {
    rocks_store *r = impl;
    uint64_t written = atomic_load(&r->lazy_writes);
    char *err = NULL;

    if (!r->sync || atomic_load(&r->lazy_durable) >= written)
        return KD_OK;
    rocksdb_flush_wal(r->db, 1, &err);
    if (err)
        return kd_rocks_fail(r, "syncing the write-ahead log failed", err);
    lazy_covered(r, written);
    return KD_OK;
}

kd_err kd_rocks_append(void *impl, const char *stream, size_t stream_len,
                       uint64_t expected_seq, const void *payload, size_t payload_len) {
    rocks_store *r = impl;
    uint64_t h = kd_store_stream_hash(stream, stream_len);
    pthread_mutex_t *lock = stripe_of(r, h);
    rocksdb_writebatch_t *wb;
    uint64_t count;
    kd_err err;

    pthread_mutex_lock(lock);
    err = kd_rocks_head_get(r, stream, stream_len, h, &count, NULL, NULL);
    if (err == KD_OK && count != expected_seq)
        err = KD_ERR_SEQUENCE_CONFLICT;
    if (err == KD_OK) {
        kd_rocks_filter_add(&r->filter_keys, h); /* before the write */
        wb = rocksdb_writebatch_create();
        err = kd_rocks_batch_put(wb, stream, stream_len, h, expected_seq, payload,
                                 payload_len)
                  ? batch_write(r, wb, false)
                  : KD_ERR_STORE;
        rocksdb_writebatch_destroy(wb);
        atomic_fetch_add(kd_rocks_version_of(r, h), 1);
    }
    pthread_mutex_unlock(lock);
    return err;
}

/* Batch order: by stripe (the lock order), then stream (by hash first), then
 * array order: a stream's appends are next to each other. */
typedef struct bref {
    uint64_t hash;
    size_t stripe;
    size_t idx;
    const kd_append *a;
} bref;

static int bref_cmp(const void *x, const void *y) {
    const bref *p = x, *q = y;
    size_t n;
    int c;

    if (p->stripe != q->stripe)
        return p->stripe < q->stripe ? -1 : 1;
    if (p->hash != q->hash) /* streams that differ mostly differ here */
        return p->hash < q->hash ? -1 : 1;
    n = p->a->stream_len < q->a->stream_len ? p->a->stream_len : q->a->stream_len;
    if ((c = memcmp(p->a->stream, q->a->stream, n)) != 0)
        return c;
    if (p->a->stream_len != q->a->stream_len)
        return p->a->stream_len < q->a->stream_len ? -1 : 1;
    return p->idx < q->idx ? -1 : p->idx > q->idx;
}

static bool same_stream(const kd_append *a, const kd_append *b) {
    return a->stream_len == b->stream_len &&
           memcmp(a->stream, b->stream, a->stream_len) == 0;
}

/* Checks every item against its stream's head under the stripe locks (held
 * by the caller) and adds the matching ones to wb. */
static kd_err batch_check(rocks_store *r, kd_append *items, const bref *refs, size_t n,
                          rocksdb_writebatch_t *wb) {
    uint64_t count = 0;

    for (size_t i = 0; i < n; i++) {
        kd_append *a = &items[refs[i].idx];
        kd_err err;

        if (i > 0 && same_stream(refs[i - 1].a, a)) {
            /* count runs on within the stream */
        } else if (a->version &&
                   a->version == atomic_load(kd_rocks_version_of(r, refs[i].hash))) {
            count = a->expected_seq; /* unchanged since the caller's read */
        } else {
            err = kd_rocks_head_get(r, a->stream, a->stream_len, refs[i].hash, &count,
                                    NULL, NULL);
            if (err == KD_ERR_STORE)
                return err;
            if (err != KD_OK)
                count = UINT64_MAX; /* unreadable head: nothing appends to it */
        }
        if (a->expected_seq != count) {
            a->result = KD_ERR_SEQUENCE_CONFLICT;
            continue;
        }
        kd_rocks_filter_add(&r->filter_keys, refs[i].hash); /* before the write */
        if (!kd_rocks_batch_put(wb, a->stream, a->stream_len, refs[i].hash,
                                a->expected_seq, a->payload, a->payload_len))
            return KD_ERR_STORE;
        a->result = KD_OK;
        count++;
    }
    return KD_OK;
}

static kd_err append_batch(rocks_store *r, kd_append *items, size_t n, bool lazy) {
    rocksdb_writebatch_t *wb;
    bref *refs = malloc(n * sizeof(*refs));
    kd_err err = KD_ERR_STORE;

    kd_rocks_perf_off();
    if (!refs)
        goto fail;
    for (size_t i = 0; i < n; i++) {
        uint64_t h = kd_store_stream_hash(items[i].stream, items[i].stream_len);

        refs[i] = (bref){h, h % STRIPES, i, &items[i]};
    }
    qsort(refs, n, sizeof(*refs), bref_cmp);

    for (size_t i = 0; i < n; i++)
        if (i == 0 || refs[i].stripe != refs[i - 1].stripe)
            pthread_mutex_lock(&r->stripes[refs[i].stripe]);
    wb = rocksdb_writebatch_create();
    err = batch_check(r, items, refs, n, wb);
    if (err == KD_OK && rocksdb_writebatch_count(wb) > 0) {
        uint64_t v = 0;

        err = batch_write(r, wb, lazy);
        for (size_t i = 0; i < n; i++) {
            if (i == 0 || !same_stream(refs[i - 1].a, refs[i].a))
                v = atomic_fetch_add(kd_rocks_version_of(r, refs[i].hash), 1) + 1;
            items[refs[i].idx].written_version = err == KD_OK ? v : 0;
        }
    }
    rocksdb_writebatch_destroy(wb);
    for (size_t i = 0; i < n; i++)
        if (i == 0 || refs[i].stripe != refs[i - 1].stripe)
            pthread_mutex_unlock(&r->stripes[refs[i].stripe]);
fail:
    free(refs);
    if (err != KD_OK)
        for (size_t i = 0; i < n; i++)
            items[i].result = err;
    return err;
}

kd_err kd_rocks_append_batch(void *impl, kd_append *items, size_t n) {
    return append_batch(impl, items, n, false);
}

kd_err kd_rocks_append_batch_lazy(void *impl, kd_append *items, size_t n) {
    return append_batch(impl, items, n, true);
}
