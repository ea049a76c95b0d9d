/*
 * kdedup - the RocksDB store's reads: a stream's head, one or a batch (file map:
 * store_rocks_int.h).
 */
#include "store_rocks/store_rocks_int.h"
#include "dedup/store_int.h"

#include <stdlib.h>
#include <string.h>

kd_err kd_rocks_read_last(void *impl, const char *stream, size_t stream_len,
                          uint64_t *seq, void **payload, size_t *payload_len,
                          bool *found) {
    rocks_store *r = impl;
    uint64_t count = 0, h = kd_store_stream_hash(stream, stream_len);
    kd_err err = KD_OK;

    if (kd_rocks_filter_may_have(&r->filter_keys, h))
        err = kd_rocks_head_get(r, stream, stream_len, h, &count, payload, payload_len);
    else if (payload)
        *payload = NULL;
    *found = err == KD_OK && count > 0;
    if (*found)
        *seq = count - 1;
    return err;
}

/* Sets a read item from a head record's value (NULL: no record). */
static void read_item_set(kd_read *it, const char *val, size_t vlen) {
    uint64_t count = 0;

    it->err = val ? kd_rocks_head_parse(val, vlen, &count, &it->payload, &it->payload_len)
                  : KD_OK;
    it->found = it->err == KD_OK && count > 0;
    if (it->found)
        it->seq = count - 1;
}

/* A record key to read, and the item it is read for. */
typedef struct mref {
    const char *key;
    size_t len;
    size_t idx;
} mref;

/* RocksDB's order of record keys (bytewise, a prefix first). */
static int mref_cmp(const void *x, const void *y) {
    const mref *p = x, *q = y;
    int c = memcmp(p->key, q->key, p->len < q->len ? p->len : q->len);

    if (c)
        return c;
    return (p->len > q->len) - (p->len < q->len);
}

/* The items' heads with one batched MultiGet (its filter and block
 * lookups shared by the batch), its keys handed over in RocksDB's order
 * (sorted_input: RocksDB's own sort of them cost more than this one);
 * streams the key filter knows have no record are not asked for. False
 * when out of memory (nothing read). */
static bool read_multi(rocks_store *r, kd_read *items, size_t n) {
    size_t total = 0, at = 0, m = 0;
    char *buf, **errs;
    const char **keys;
    size_t *lens;
    mref *refs;
    rocksdb_pinnableslice_t **vals;
    bool ok;

    for (size_t i = 0; i < n; i++)
        total += 1 + HASH_LEN + items[i].stream_len;
    buf = malloc(total);
    refs = malloc(n * sizeof(*refs));
    keys = malloc(n * sizeof(*keys));
    lens = malloc(n * sizeof(*lens));
    vals = calloc(n, sizeof(*vals));
    errs = calloc(n, sizeof(*errs));
    ok = buf && refs && keys && lens && vals && errs;
    if (!ok)
        goto done;
    for (size_t i = 0; i < n; i++) {
        kd_read *it = &items[i];
        uint64_t h = kd_store_stream_hash(it->stream, it->stream_len);

        /* before the read, and before the filter (store_rocks_filter.c) */
        it->version = atomic_load(kd_rocks_version_of(r, h));
        it->payload = NULL;
        if (!kd_rocks_filter_may_have(&r->filter_keys, h)) {
            read_item_set(it, NULL, 0);
            continue;
        }
        refs[m] = (mref){buf + at,
                         kd_rocks_rkey_fill(buf + at, it->stream, it->stream_len, h), i};
        at += refs[m++].len;
    }
    if (!m)
        goto done;
    qsort(refs, m, sizeof(*refs), mref_cmp);
    for (size_t j = 0; j < m; j++) {
        keys[j] = refs[j].key;
        lens[j] = refs[j].len;
    }
    rocksdb_batched_multi_get_cf(r->db, r->ropts, r->cf, m, keys, lens, vals, errs, true);
    for (size_t j = 0; j < m; j++) {
        kd_read *it = &items[refs[j].idx];
        const char *val = NULL;
        size_t vlen = 0;

        if (errs[j]) {
            it->err = kd_rocks_fail(r, "read failed", errs[j]); /* frees it */
            it->found = false;
        } else {
            if (vals[j])
                val = rocksdb_pinnableslice_value(vals[j], &vlen);
            read_item_set(it, val, vlen);
        }
        rocksdb_pinnableslice_destroy(vals[j]);
    }
done:
    free(buf);
    free(refs);
    free(keys);
    free(lens);
    free(vals);
    free(errs);
    return ok;
}

kd_err kd_rocks_read_last_batch(void *impl, kd_read *items, size_t n) {
    rocks_store *r = impl;

    kd_rocks_perf_off();
    if (n > 1 && read_multi(r, items, n))
        return KD_OK;
    for (size_t i = 0; i < n; i++) {
        kd_read *it = &items[i];
        uint64_t h = kd_store_stream_hash(it->stream, it->stream_len);
        uint64_t count;

        /* The version is taken before the read: a write that lands after
         * it bumps the version after it is visible, so a stale read never
         * carries a current version. */
        it->version = atomic_load(kd_rocks_version_of(r, h));
        it->payload = NULL;
        count = 0;
        it->err = kd_rocks_filter_may_have(&r->filter_keys, h)
                      ? kd_rocks_head_get(r, it->stream, it->stream_len, h, &count,
                                          &it->payload, &it->payload_len)
                      : KD_OK;
        it->found = it->err == KD_OK && count > 0;
        if (it->found)
            it->seq = count - 1;
    }
    return KD_OK;
}
