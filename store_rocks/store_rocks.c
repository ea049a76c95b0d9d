/*
 * kdedup - the RocksDB store backend (layout in store_rocks.h).
 */
#include "store_rocks/store_rocks.h"
#include "dedup/entry.h"
#include "dedup/store_int.h"

#include <rocksdb/c.h>

#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define STRIPES 1024   /* striped locks serialising appends per stream */
#define VERSIONS 65536 /* write counters that let appends trust a read */
#define KEY_INLINE 256 /* record keys up to this long stay on the stack */
#define SEQ_LEN 8
#define PREFIX_HEAD 'k'    /* layout 2: 'k', be64 hash of the stream, stream */
#define PREFIX_HEAD_V1 'h' /* layout 1: 'h', stream (refused at open) */
#define HASH_LEN 8
#define MEMTABLE_BUCKETS_MAX (1u << 20)

typedef struct rocks_store {
    rocksdb_t *db;
    rocksdb_options_t *opts;
    rocksdb_block_based_table_options_t *table;
    rocksdb_cache_t *cache;
    rocksdb_compactionfilter_t *filter;
    rocksdb_column_family_handle_t *cf; /* the default one: batched MultiGet */
    rocksdb_writeoptions_t *wopts;
    rocksdb_writeoptions_t *lazy_wopts; /* never synced: append_batch_lazy */
    bool sync;                          /* wopts sync (store.sync) */
    /* Lazy writes made, and how many of them a durable write or sync has
     * covered: a durable write syncs the WAL, every write before it too. */
    _Atomic uint64_t lazy_writes;
    _Atomic uint64_t lazy_durable;
    rocksdb_readoptions_t *ropts;
    rocksdb_readoptions_t *scan_opts; /* iterators: in key order across prefixes */
    char *path;
    char *
        secondary; /* a secondary (read-only) open: its own directory, removed at close */
    _Atomic uint64_t ttl_ms;
    _Atomic uint64_t inflight_ms;
    pthread_mutex_t err_lock;
    char last_error[512];
    pthread_mutex_t stripes[STRIPES];
    /* Bumped after every write to a stream hashing to the slot. A read that
     * saw version v of its slot, appended while the slot is still at v,
     * needs no re-read under the lock: nothing wrote the stream since (one
     * process owns the database, by RocksDB's LOCK file). */
    _Atomic uint64_t versions[VERSIONS];
} rocks_store;

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
static size_t rkey_fill(char *p, const char *stream, size_t stream_len, uint64_t hash) {
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
    rkey_fill(k->p, stream, stream_len, hash);
    return true;
}

static void rkey_free(rkey *k) {
    if (k->p != k->inline_buf)
        free(k->p);
}

static uint64_t wall_ms(void) {
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* Records a RocksDB error (freeing it) as the store's last error. */
static kd_err rocks_fail(rocks_store *r, const char *what, char *rocks_err) {
    pthread_mutex_lock(&r->err_lock);
    snprintf(r->last_error, sizeof(r->last_error), "store \"%s\": %s: %s", r->path, what,
             rocks_err ? rocks_err : "unknown error");
    pthread_mutex_unlock(&r->err_lock);
    rocksdb_free(rocks_err);
    return KD_ERR_STORE;
}

static pthread_mutex_t *stripe_of(rocks_store *r, uint64_t hash) {
    return &r->stripes[hash % STRIPES];
}

static _Atomic uint64_t *version_of(rocks_store *r, uint64_t hash) {
    return &r->versions[hash % VERSIONS];
}

/*
 * The head record.
 */

/* Parses a head record's value: *count is the stream's number of entries;
 * with payload, also a malloc()ed copy of the newest entry. */
static kd_err head_parse(const char *val, size_t vlen, uint64_t *count, void **payload,
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
static kd_err head_get(rocks_store *r, const char *stream, size_t stream_len,
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
        return rocks_fail(r, "read failed", err);
    if (!v)
        return KD_OK;
    val = rocksdb_pinnableslice_value(v, &vlen);
    res = head_parse(val, vlen, count, payload, payload_len);
    rocksdb_pinnableslice_destroy(v);
    return res;
}

/* Adds the head record for entry number seq to wb. The head holds the
 * newest entry and its number; older entries are superseded, since the
 * contract only ever reads the newest. */
static bool batch_put(rocksdb_writebatch_t *wb, const char *stream, size_t stream_len,
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
        return rocks_fail(r, "write failed", err);
    if (lazy)
        atomic_fetch_add(&r->lazy_writes, 1);
    else
        lazy_covered(r, before);
    return KD_OK;
}

static kd_err rocks_sync(void *impl) {
    rocks_store *r = impl;
    uint64_t written = atomic_load(&r->lazy_writes);
    char *err = NULL;

    if (!r->sync || atomic_load(&r->lazy_durable) >= written)
        return KD_OK;
    rocksdb_flush_wal(r->db, 1, &err);
    if (err)
        return rocks_fail(r, "syncing the write-ahead log failed", err);
    lazy_covered(r, written);
    return KD_OK;
}

/*
 * Store ops.
 */

static kd_err rocks_read_last(void *impl, const char *stream, size_t stream_len,
                              uint64_t *seq, void **payload, size_t *payload_len,
                              bool *found) {
    uint64_t count;
    kd_err err =
        head_get(impl, stream, stream_len, kd_store_stream_hash(stream, stream_len),
                 &count, payload, payload_len);

    *found = err == KD_OK && count > 0;
    if (*found)
        *seq = count - 1;
    return err;
}

/* Turns RocksDB's per-thread perf counters off on the calling thread (they
 * are on by default, and their thread-local bookkeeping showed in the
 * profile of every read and write). */
static void perf_off(void) {
    static _Thread_local bool off;

    if (!off) {
        rocksdb_set_perf_level(rocksdb_disable);
        off = true;
    }
}

/* Sets a read item from a head record's value (NULL: no record). */
static void read_item_set(kd_read *it, const char *val, size_t vlen) {
    uint64_t count = 0;

    it->err = val ? head_parse(val, vlen, &count, &it->payload, &it->payload_len) : KD_OK;
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
 * false when out of memory (nothing read). */
static bool read_multi(rocks_store *r, kd_read *items, size_t n) {
    size_t total = 0, at = 0;
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

        /* before the read, as below */
        it->version = atomic_load(version_of(r, h));
        it->payload = NULL;
        refs[i] = (mref){buf + at, rkey_fill(buf + at, it->stream, it->stream_len, h), i};
        at += refs[i].len;
    }
    qsort(refs, n, sizeof(*refs), mref_cmp);
    for (size_t j = 0; j < n; j++) {
        keys[j] = refs[j].key;
        lens[j] = refs[j].len;
    }
    rocksdb_batched_multi_get_cf(r->db, r->ropts, r->cf, n, keys, lens, vals, errs, true);
    for (size_t j = 0; j < n; j++) {
        kd_read *it = &items[refs[j].idx];
        const char *val = NULL;
        size_t vlen = 0;

        if (errs[j]) {
            it->err = rocks_fail(r, "read failed", errs[j]); /* frees it */
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

static kd_err rocks_read_last_batch(void *impl, kd_read *items, size_t n) {
    rocks_store *r = impl;

    perf_off();
    if (n > 1 && read_multi(r, items, n))
        return KD_OK;
    for (size_t i = 0; i < n; i++) {
        kd_read *it = &items[i];
        uint64_t h = kd_store_stream_hash(it->stream, it->stream_len);
        uint64_t count;

        /* The version is taken before the read: a write that lands after
         * it bumps the version after it is visible, so a stale read never
         * carries a current version. */
        it->version = atomic_load(version_of(r, h));
        it->payload = NULL;
        it->err = head_get(r, it->stream, it->stream_len, h, &count, &it->payload,
                           &it->payload_len);
        it->found = it->err == KD_OK && count > 0;
        if (it->found)
            it->seq = count - 1;
    }
    return KD_OK;
}

static kd_err rocks_append(void *impl, const char *stream, size_t stream_len,
                           uint64_t expected_seq, const void *payload,
                           size_t payload_len) {
    rocks_store *r = impl;
    uint64_t h = kd_store_stream_hash(stream, stream_len);
    pthread_mutex_t *lock = stripe_of(r, h);
    rocksdb_writebatch_t *wb;
    uint64_t count;
    kd_err err;

    pthread_mutex_lock(lock);
    err = head_get(r, stream, stream_len, h, &count, NULL, NULL);
    if (err == KD_OK && count != expected_seq)
        err = KD_ERR_SEQUENCE_CONFLICT;
    if (err == KD_OK) {
        wb = rocksdb_writebatch_create();
        err = batch_put(wb, stream, stream_len, h, expected_seq, payload, payload_len)
                  ? batch_write(r, wb, false)
                  : KD_ERR_STORE;
        rocksdb_writebatch_destroy(wb);
        atomic_fetch_add(version_of(r, h), 1);
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
        } else if (a->version && a->version == atomic_load(version_of(r, refs[i].hash))) {
            count = a->expected_seq; /* unchanged since the caller's read */
        } else {
            err = head_get(r, a->stream, a->stream_len, refs[i].hash, &count, NULL, NULL);
            if (err == KD_ERR_STORE)
                return err;
            if (err != KD_OK)
                count = UINT64_MAX; /* unreadable head: nothing appends to it */
        }
        if (a->expected_seq != count) {
            a->result = KD_ERR_SEQUENCE_CONFLICT;
            continue;
        }
        if (!batch_put(wb, a->stream, a->stream_len, refs[i].hash, a->expected_seq,
                       a->payload, a->payload_len))
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

    perf_off();
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
                v = atomic_fetch_add(version_of(r, refs[i].hash), 1) + 1;
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

static void rocks_set_retention(void *impl, uint64_t ttl_ms, uint64_t inflight_ms) {
    rocks_store *r = impl;
    uint64_t cur;

    /* Shared by several caches, the store keeps what the longest asks for;
     * 0 (keep forever) wins over any limit. */
    cur = atomic_load(&r->ttl_ms);
    if (cur != UINT64_MAX && (ttl_ms == 0 || ttl_ms > cur))
        atomic_store(&r->ttl_ms, ttl_ms ? ttl_ms : UINT64_MAX);
    cur = atomic_load(&r->inflight_ms);
    if (cur != UINT64_MAX && (inflight_ms == 0 || inflight_ms > cur))
        atomic_store(&r->inflight_ms, inflight_ms ? inflight_ms : UINT64_MAX);
}

static void rocks_last_error(void *impl, char *buf, size_t buf_size) {
    rocks_store *r = impl;

    pthread_mutex_lock(&r->err_lock);
    snprintf(buf, buf_size, "%s", r->last_error);
    pthread_mutex_unlock(&r->err_lock);
}

/* Removes dir and the files in it (a secondary open's own: its LOG files).
 * NULL-safe. */
static void remove_dir(const char *dir) {
    DIR *d = dir ? opendir(dir) : NULL;
    struct dirent *e;
    char file[4096];

    if (!d)
        return;
    while ((e = readdir(d)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..") &&
            snprintf(file, sizeof(file), "%s/%s", dir, e->d_name) < (int)sizeof(file))
            unlink(file);
    closedir(d);
    rmdir(dir);
}

static void rocks_destroy(void *impl) {
    rocks_store *r = impl;

    if (!r)
        return;
    if (r->cf)
        rocksdb_column_family_handle_destroy(r->cf);
    if (r->db)
        rocksdb_close(r->db);
    if (r->opts)
        rocksdb_options_destroy(r->opts);
    if (r->table)
        rocksdb_block_based_options_destroy(r->table);
    if (r->cache)
        rocksdb_cache_destroy(r->cache);
    if (r->filter)
        rocksdb_compactionfilter_destroy(r->filter);
    if (r->wopts)
        rocksdb_writeoptions_destroy(r->wopts);
    if (r->lazy_wopts)
        rocksdb_writeoptions_destroy(r->lazy_wopts);
    if (r->ropts)
        rocksdb_readoptions_destroy(r->ropts);
    if (r->scan_opts)
        rocksdb_readoptions_destroy(r->scan_opts);
    for (size_t i = 0; i < STRIPES; i++)
        pthread_mutex_destroy(&r->stripes[i]);
    pthread_mutex_destroy(&r->err_lock);
    remove_dir(r->secondary);
    free(r->secondary);
    free(r->path);
    free(r);
}

static kd_err rocks_append_batch(void *impl, kd_append *items, size_t n) {
    return append_batch(impl, items, n, false);
}

static kd_err rocks_append_batch_lazy(void *impl, kd_append *items, size_t n) {
    return append_batch(impl, items, n, true);
}

static const struct kd_store_ops kd_rocks_ops = {
    .name = "rocksdb",
    .read_last = rocks_read_last,
    .append = rocks_append,
    .destroy = rocks_destroy,
    .append_batch = rocks_append_batch,
    .read_last_batch = rocks_read_last_batch,
    .set_retention = rocks_set_retention,
    .last_error = rocks_last_error,
    .append_batch_lazy = rocks_append_batch_lazy,
    .sync = rocks_sync,
};

/*
 * Retention: the compaction filter.
 */

/* True when the head record holds an entry past retention. Records that do
 * not decode are kept: corruption must surface, not vanish. */
static bool record_expired(rocks_store *r, const char *key, size_t klen, const char *val,
                           size_t vlen, uint64_t now) {
    uint64_t ttl = atomic_load(&r->ttl_ms), inflight = atomic_load(&r->inflight_ms);
    uint64_t limit;
    kd_entry e;

    if (klen < 1 || key[0] != PREFIX_HEAD || vlen < SEQ_LEN)
        return false;
    if (kd_entry_decode(val + SEQ_LEN, vlen - SEQ_LEN, &e) != KD_OK)
        return false;
    if (e.kind == KD_ENTRY_TOMBSTONE)
        limit = ttl ? ttl : inflight; /* absent either way */
    else if (e.has_receipt)
        limit = ttl;
    else /* unfinished: kept as long as a completed key would be, so that its
          * owner stays known and its delivery can be looked up downstream
          * after the claim expired (kd_claim.expired) */
        limit = ttl == 0 ? 0 : ttl > inflight ? ttl : inflight;
    if (limit == 0 || limit == UINT64_MAX)
        return false;
    return now >= e.timestamp_ms && now - e.timestamp_ms >= limit;
}

static unsigned char retention_filter(void *state, int level, const char *key,
                                      size_t klen, const char *val, size_t vlen,
                                      char **new_val, size_t *new_vlen,
                                      unsigned char *changed) {
    (void)level;
    (void)new_val;
    (void)new_vlen;
    *changed = 0;
    perf_off(); /* a compaction thread's, from its first record on */
    return record_expired(state, key, klen, val, vlen, wall_ms());
}

static void retention_filter_free(void *state) {
    (void)state; /* the filter borrows the store */
}

static const char *retention_filter_name(void *state) {
    (void)state;
    return "kdedup.retention";
}

/*
 * Open.
 */

/* mkdir -p; false with errno set. */
static bool mkdir_p(const char *path) {
    char *p = strdup(path);
    bool ok = p != NULL;

    for (char *s = p ? p + 1 : NULL; ok && s && *s; s++) {
        if (*s != '/')
            continue;
        *s = '\0';
        ok = mkdir(p, 0750) == 0 || errno == EEXIST;
        *s = '/';
    }
    ok = ok && (mkdir(path, 0750) == 0 || errno == EEXIST);
    free(p);
    return ok;
}

/* Names the cause of a failed rocksdb_open in words an operator acts on. */
static const char *open_cause(const char *msg) {
    if (strstr(msg, "lock"))
        return "the database is locked: another process (or another handle in this "
               "one) has it open";
    if (strstr(msg, "Corruption") || strstr(msg, "corrupt"))
        return "the database files are corrupt";
    if (strstr(msg, "Permission denied"))
        return "permission denied";
    if (strstr(msg, "No space"))
        return "no space left on the device";
    return "cannot open the database";
}

/* The memtable's hash buckets: a record's prefix and hash. Keys shorter
 * than that (never written by kdedup, but possible in a foreign or damaged
 * database) are their own prefix, where RocksDB's fixed-prefix transform
 * would abort on them. */
static char *prefix_transform(void *state, const char *key, size_t len, size_t *out_len) {
    (void)state;
    *out_len = len < 1 + HASH_LEN ? len : 1 + HASH_LEN;
    return (char *)key;
}

static void prefix_free(void *state) {
    (void)state; /* stateless */
}

static unsigned char prefix_in_domain(void *state, const char *key, size_t len) {
    (void)state;
    (void)key;
    (void)len;
    return 1;
}

static unsigned char prefix_in_range(void *state, const char *key, size_t len) {
    (void)state;
    (void)key;
    return len == 1 + HASH_LEN;
}

static const char *prefix_name(void *state) {
    (void)state;
    return "kdedup.record_hash_prefix";
}

static bool rocks_configure(rocks_store *r, const kd_rocks_options *o) {
    r->opts = rocksdb_options_create();
    r->table = rocksdb_block_based_options_create();
    r->cache = rocksdb_cache_create_lru(o->block_cache_bytes);
    r->filter = rocksdb_compactionfilter_create(r, retention_filter_free,
                                                retention_filter, retention_filter_name);
    r->wopts = rocksdb_writeoptions_create();
    r->lazy_wopts = rocksdb_writeoptions_create();
    r->ropts = rocksdb_readoptions_create();
    r->scan_opts = rocksdb_readoptions_create();
    if (!r->opts || !r->table || !r->cache || !r->filter || !r->wopts || !r->lazy_wopts ||
        !r->ropts || !r->scan_opts)
        return false;
    rocksdb_readoptions_set_total_order_seek(r->scan_opts, 1);

    rocksdb_block_based_options_set_block_cache(r->table, r->cache);
    /* Index and filter blocks grow with the key count: charged to the block
     * cache, RocksDB's memory stays within the cache and the memtables. The
     * level-0 ones are pinned (read on every miss); the rest go first to
     * the high-priority pool, ahead of data blocks. */
    rocksdb_block_based_options_set_cache_index_and_filter_blocks(r->table, 1);
    rocksdb_block_based_options_set_cache_index_and_filter_blocks_with_high_priority(
        r->table, 1);
    rocksdb_block_based_options_set_pin_l0_filter_and_index_blocks_in_cache(r->table, 1);
    /* Most reads are of keys never seen: a bloom filter answers them without I/O. */
    rocksdb_block_based_options_set_filter_policy(
        r->table, rocksdb_filterpolicy_create_bloom_full(10));
    rocksdb_options_set_block_based_table_factory(r->opts, r->table);
    rocksdb_options_set_create_if_missing(r->opts, 1);
    rocksdb_options_set_max_background_jobs(r->opts, 2);
    rocksdb_options_set_level_compaction_dynamic_level_bytes(r->opts, 1);
    rocksdb_options_set_keep_log_file_num(r->opts, 4);
    rocksdb_options_set_compaction_filter(r->opts, r->filter);
    /* Point reads and writes only: the memtable is a hash table of small
     * skiplists keyed by the record's hash, so an insert or a read costs a
     * bucket, not a walk of a skiplist of the whole memtable (which was
     * most of a claim's CPU time). Scans (tools, flushes) still see key
     * order; iterators ask for it with total_order_seek. */
    rocksdb_options_set_prefix_extractor(
        r->opts,
        rocksdb_slicetransform_create(NULL, prefix_free, prefix_transform,
                                      prefix_in_domain, prefix_in_range, prefix_name));
    /* The bucket array lives in the memtable's arena: at most a quarter of
     * it, or a small memtable would be full (and flushed) as it is made. */
    size_t buckets = o->write_buffer_bytes / 4 / sizeof(void *);
    rocksdb_options_set_hash_skip_list_rep(
        r->opts, buckets < MEMTABLE_BUCKETS_MAX ? buckets : MEMTABLE_BUCKETS_MAX, 4, 4);
    rocksdb_options_set_allow_concurrent_memtable_write(r->opts, 0);
    /* Claims are mostly of new keys: a memtable bloom filter answers those
     * without a probe. */
    rocksdb_options_set_memtable_prefix_bloom_size_ratio(r->opts, 0.1);
    rocksdb_options_set_memtable_whole_key_filtering(r->opts, 1);
    /* No compression: the keys are hashes and the values short; snappy on
     * every flush, compaction and block read cost more CPU than the disk it
     * saved (BENCHMARKS.md: 0.26x -> 0.37x a passthrough at 10^6 keys). */
    rocksdb_options_set_compression(r->opts, rocksdb_no_compression);
    rocksdb_options_set_write_buffer_size(r->opts, o->write_buffer_bytes);
    rocksdb_options_set_max_write_buffer_number(r->opts, o->max_write_buffers);
    rocksdb_writeoptions_set_sync(r->wopts, o->sync);
    rocksdb_writeoptions_set_sync(r->lazy_wopts, 0);
    r->sync = o->sync;
    return true;
}

/* True if the database holds a record of the first layout. */
static bool has_layout_v1(rocks_store *r) {
    rocksdb_iterator_t *it = rocksdb_create_iterator(r->db, r->scan_opts);
    const char prefix = PREFIX_HEAD_V1;
    bool found = false;

    rocksdb_iter_seek(it, &prefix, 1);
    if (rocksdb_iter_valid(it)) {
        size_t klen;
        const char *key = rocksdb_iter_key(it, &klen);

        found = klen >= 1 && key[0] == PREFIX_HEAD_V1;
    }
    rocksdb_iter_destroy(it);
    return found;
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

kd_store *kd_rocks_open(const char *path, bool sync, char *errstr, size_t errstr_size) {
    kd_rocks_options o = KD_ROCKS_OPTIONS_DEFAULT;

    o.sync = sync;
    return kd_rocks_open_with(path, &o, errstr, errstr_size);
}

/* A directory of its own for a secondary open, under $TMPDIR (else /tmp):
 * malloc()ed, or NULL with errstr set. */
static char *secondary_dir(const char *path, char *errstr, size_t errstr_size) {
    const char *tmp = getenv("TMPDIR") && *getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
    size_t len = strlen(tmp) + sizeof("/kdedup-secondary-XXXXXX");
    char *dir = malloc(len);

    if (!dir) {
        snprintf(errstr, errstr_size, "store \"%s\": out of memory", path);
        return NULL;
    }
    snprintf(dir, len, "%s/kdedup-secondary-XXXXXX", tmp);
    if (!mkdtemp(dir)) {
        snprintf(errstr, errstr_size,
                 "store \"%s\": cannot create a directory in %s for a read-only open: %s "
                 "(set TMPDIR to a writable directory)",
                 path, tmp, strerror(errno));
        free(dir);
        return NULL;
    }
    return dir;
}

/* Opens the store; secondary: as a RocksDB secondary instance (read-only,
 * beside a live primary, not created when missing). */
static kd_store *rocks_open(const char *path, const kd_rocks_options *opts,
                            bool secondary, char *errstr, size_t errstr_size) {
    kd_rocks_options defaults = KD_ROCKS_OPTIONS_DEFAULT;
    rocks_store *r;
    char *err = NULL;

    if (!path || !*path) {
        snprintf(errstr, errstr_size, "store: no path given");
        return NULL;
    }
    if (secondary && access(path, R_OK | X_OK) != 0) {
        snprintf(errstr, errstr_size, "store \"%s\": cannot read the directory: %s", path,
                 strerror(errno));
        return NULL;
    }
    if (!secondary && !mkdir_p(path)) {
        snprintf(errstr, errstr_size, "store \"%s\": cannot create the directory: %s",
                 path, strerror(errno));
        return NULL;
    }
    if (!secondary && access(path, R_OK | W_OK | X_OK) != 0) {
        snprintf(errstr, errstr_size, "store \"%s\": cannot use the directory: %s", path,
                 strerror(errno));
        return NULL;
    }
    if (!(r = calloc(1, sizeof(*r)))) {
        snprintf(errstr, errstr_size, "store \"%s\": out of memory", path);
        return NULL;
    }
    pthread_mutex_init(&r->err_lock, NULL);
    for (size_t i = 0; i < STRIPES; i++)
        pthread_mutex_init(&r->stripes[i], NULL);
    for (size_t i = 0; i < VERSIONS; i++)
        atomic_init(&r->versions[i], 1);
    if (!(r->path = strdup(path)) || !rocks_configure(r, opts ? opts : &defaults)) {
        snprintf(errstr, errstr_size, "store \"%s\": out of memory", path);
        goto fail;
    }
    const char *cf_names[] = {"default"};
    const rocksdb_options_t *cf_opts[] = {r->opts};

    if (secondary) {
        if (!(r->secondary = secondary_dir(path, errstr, errstr_size)))
            goto fail;
        /* A secondary keeps every table file open: the primary's
         * compactions may delete them while it reads. */
        rocksdb_options_set_max_open_files(r->opts, -1);
        rocksdb_options_set_create_if_missing(r->opts, 0);
        r->db = rocksdb_open_as_secondary_column_families(
            r->opts, path, r->secondary, 1, cf_names, cf_opts, &r->cf, &err);
    } else {
        r->db = rocksdb_open_column_families(r->opts, path, 1, cf_names, cf_opts, &r->cf,
                                             &err);
    }
    if (err) {
        r->cf = NULL;
        snprintf(errstr, errstr_size, "store \"%s\": %s (%s)", path, open_cause(err),
                 err);
        rocksdb_free(err);
        goto fail;
    }
    if (has_layout_v1(r)) {
        snprintf(errstr, errstr_size,
                 "store \"%s\": written by an older kdedup (record layout 1); this one "
                 "reads layout 2 and would miss every key in it: move the directory "
                 "aside (its keys are then forgotten) or run the older version",
                 path);
        goto fail;
    }
    return kd_store_new(&kd_rocks_ops, r);
fail:
    rocks_destroy(r);
    return NULL;
}

kd_store *kd_rocks_open_with(const char *path, const kd_rocks_options *opts, char *errstr,
                             size_t errstr_size) {
    return rocks_open(path, opts, false, errstr, errstr_size);
}

kd_store *kd_rocks_open_secondary(const char *path, char *errstr, size_t errstr_size) {
    kd_rocks_options o = KD_ROCKS_OPTIONS_DEFAULT;

    /* It reads a few keys: a small cache, one small memtable for the WAL. */
    o.block_cache_bytes = 8u << 20;
    o.write_buffer_bytes = 4u << 20;
    return rocks_open(path, &o, true, errstr, errstr_size);
}

kd_err kd_rocks_compact(kd_store *store) {
    rocks_store *r = kd_store_backend(store, &kd_rocks_ops);

    if (!r)
        return KD_ERR_CONFIG;
    rocksdb_compact_range(r->db, NULL, 0, NULL, 0);
    return KD_OK;
}

kd_err kd_rocks_count_records(kd_store *store, uint64_t *count) {
    rocks_store *r = kd_store_backend(store, &kd_rocks_ops);
    rocksdb_iterator_t *it;
    char *err = NULL;

    if (!r || !count)
        return KD_ERR_CONFIG;
    *count = 0;
    it = rocksdb_create_iterator(r->db, r->scan_opts);
    for (rocksdb_iter_seek_to_first(it); rocksdb_iter_valid(it); rocksdb_iter_next(it))
        (*count)++;
    rocksdb_iter_get_error(it, &err);
    rocksdb_iter_destroy(it);
    return err ? rocks_fail(r, "scan failed", err) : KD_OK;
}

/* A RocksDB integer property, 0 when it cannot be read. */
static uint64_t int_property(rocks_store *r, const char *name) {
    char *v = rocksdb_property_value(r->db, name);
    uint64_t n = v ? strtoull(v, NULL, 10) : 0;

    rocksdb_free(v);
    return n;
}

kd_err kd_rocks_memory_get(kd_store *store, kd_rocks_memory *out) {
    rocks_store *r = kd_store_backend(store, &kd_rocks_ops);

    if (!r)
        return KD_ERR_CONFIG;
    out->block_cache = rocksdb_cache_get_usage(r->cache);
    out->memtables = int_property(r, "rocksdb.size-all-mem-tables");
    out->table_readers = int_property(r, "rocksdb.estimate-table-readers-mem");
    return KD_OK;
}
