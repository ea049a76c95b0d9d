/*
 * kdedup - the RocksDB store's records: record keys and head records (layout in
 * store_rocks.h), the write counters, and errors (file map:
 * store_rocks_int.h).
 */
#include "store_rocks/store_rocks_int.h"
#include "dedup/store_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A record key: prefix and stream. */
typedef struct rkey {
    char *p;
    size_t len;
    char inline_buf[KEY_INLINE];
} rkey;

static void put_be64(unsigned char *p, uint64_t v) {
    for (int i = 7; i >= 0; i--, v >>= 8)
        p[i] = (unsigned char)v;
}

static uint64_t get_be64(const unsigned char *p) {
    uint64_t v = 0;

    for (int i = 0; i < 8; i++)
        v = v << 8 | p[i];
    return v;
}

/* The record key of a stream whose kd_store_stream_hash() is hash. The hash
 * leads so that keys differ in their first bytes: the memtable's and the
 * index's comparisons end there instead of walking the namespace every
 * stream of a cache shares. */
size_t kd_rocks_rkey_fill(char *p, const char *stream, size_t stream_len, uint64_t hash) {
    p[0] = PREFIX_HEAD;
    put_be64((unsigned char *)p + 1, hash);
    memcpy(p + 1 + HASH_LEN, stream, stream_len);
    return 1 + HASH_LEN + stream_len;
}

static bool rkey_make(rkey *k, const char *stream, size_t stream_len, uint64_t hash) {
    k->len = 1 + HASH_LEN + stream_len;
    k->p = k->len <= KEY_INLINE ? k->inline_buf : malloc(k->len);
    if (!k->p)
        return false;
    kd_rocks_rkey_fill(k->p, stream, stream_len, hash);
    return true;
}

static void rkey_free(rkey *k) {
    if (k->p != k->inline_buf)
        free(k->p);
}

/* Records a RocksDB error (freeing it) as the store's last error. */
kd_err kd_rocks_fail(rocks_store *r, const char *what, char *rocks_err) {
    pthread_mutex_lock(&r->err_lock);
    snprintf(r->last_error, sizeof(r->last_error), "store \"%s\": %s: %s", r->path, what,
             rocks_err ? rocks_err : "unknown error");
    pthread_mutex_unlock(&r->err_lock);
    rocksdb_free(rocks_err);
    return KD_ERR_STORE;
}

_Atomic uint64_t *kd_rocks_version_of(rocks_store *r, uint64_t hash) {
    return &r->versions[hash % VERSIONS];
}

/* Parses a head record's value: *count is the stream's number of entries;
 * with payload, also a malloc()ed copy of the newest entry. */
kd_err kd_rocks_head_parse(const char *val, size_t vlen, uint64_t *count, void **payload,
                           size_t *payload_len) {
    if (vlen < SEQ_LEN || get_be64((const unsigned char *)val) == UINT64_MAX)
        return KD_ERR_SERIALIZATION; /* not a head record we wrote */
    *count = get_be64((const unsigned char *)val) + 1;
    if (!payload)
        return KD_OK;
    *payload_len = vlen - SEQ_LEN;
    if (!(*payload = malloc(*payload_len ? *payload_len : 1)))
        return KD_ERR_STORE;
    memcpy(*payload, val + SEQ_LEN, *payload_len);
    return KD_OK;
}

/* Reads a stream's head: *count is its number of entries (0 when absent);
 * with payload, also a malloc()ed copy of the newest entry. */
kd_err kd_rocks_head_get(rocks_store *r, const char *stream, size_t stream_len,
                         uint64_t hash, uint64_t *count, void **payload,
                         size_t *payload_len) {
    rocksdb_pinnableslice_t *v;
    const char *val;
    size_t vlen;
    char *err = NULL;
    kd_err res;
    rkey k;

    *count = 0;
    if (!rkey_make(&k, stream, stream_len, hash))
        return KD_ERR_STORE;
    v = rocksdb_get_pinned(r->db, r->ropts, k.p, k.len, &err);
    rkey_free(&k);
    if (err)
        return kd_rocks_fail(r, "read failed", err);
    if (!v)
        return KD_OK;
    val = rocksdb_pinnableslice_value(v, &vlen);
    res = kd_rocks_head_parse(val, vlen, count, payload, payload_len);
    rocksdb_pinnableslice_destroy(v);
    return res;
}

/* Adds the head record for entry number seq to wb. The head holds the
 * newest entry and its number; older entries are superseded, since the
 * contract only ever reads the newest. */
bool kd_rocks_batch_put(rocksdb_writebatch_t *wb, const char *stream, size_t stream_len,
                        uint64_t hash, uint64_t seq, const void *payload,
                        size_t payload_len) {
    char inline_val[KEY_INLINE];
    size_t vlen = SEQ_LEN + payload_len;
    char *val = vlen <= sizeof(inline_val) ? inline_val : malloc(vlen);
    rkey k;
    bool ok = false;

    if (!val)
        return false;
    if (rkey_make(&k, stream, stream_len, hash)) {
        put_be64((unsigned char *)val, seq);
        memcpy(val + SEQ_LEN, payload, payload_len);
        rocksdb_writebatch_put(wb, k.p, k.len, val, vlen);
        rkey_free(&k);
        ok = true;
    }
    if (val != inline_val)
        free(val);
    return ok;
}

/* Turns RocksDB's per-thread perf counters off on the calling thread (they
 * are on by default, and their thread-local bookkeeping showed in the
 * profile of every read and write). */
void kd_rocks_perf_off(void) {
    static _Thread_local bool off;

    if (!off) {
        rocksdb_set_perf_level(rocksdb_disable);
        off = true;
    }
}

void kd_rocks_last_error(void *impl, char *buf, size_t buf_size) {
    rocks_store *r = impl;

    pthread_mutex_lock(&r->err_lock);
    snprintf(buf, buf_size, "%s", r->last_error);
    pthread_mutex_unlock(&r->err_lock);
}

size_t kd_rocks_record_key(const char *stream, size_t stream_len, char *out,
                           size_t size) {
    rkey k;
    size_t len;

    if (!rkey_make(&k, stream, stream_len, kd_store_stream_hash(stream, stream_len)))
        return 0;
    len = k.len;
    memcpy(out, k.p, len <= size ? len : size);
    rkey_free(&k);
    return len;
}
