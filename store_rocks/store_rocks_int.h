/*
 * kdedup - the RocksDB backend's private header: the state its parts share,
 * and what each part offers the others. Public API and the on-disk layout:
 * store_rocks.h.
 *
 * File map, from the ground floor up (a file calls only files listed before
 * it):
 *   store_rocks.c            record keys and head records (the layout), the
 *                            write counters, errors, kd_rocks_record_key
 *   store_rocks_filter.c     the key filter: streams that certainly have
 *                            no record, built at open, added to by writes
 *   store_rocks_read.c       reads of a stream's head, one or a batch (one
 *                            MultiGet)
 *   store_rocks_write.c      appends under the stripe locks, one or a batch,
 *                            lazy writes and their sync
 *   store_rocks_retention.c  retention: the longest a cache asks for, and
 *                            the compaction filter that applies it
 *   store_rocks_options.c    RocksDB's options: table, cache, memtable,
 *                            write options
 *   store_rocks_open.c       opening (primary or secondary), layout checks,
 *                            closing, and the store ops (kd_rocks_ops)
 *   store_rocks_stats.c      compaction, record count and memory, for tools
 *                            and /metrics
 *
 * A rocks_store is shared by every thread that uses its kd_store: appends
 * to one stream are serialised by its stripe lock, the error text by
 * err_lock, and the rest is set at open or atomic.
 */
#ifndef KD_STORE_ROCKS_INT_H
#define KD_STORE_ROCKS_INT_H

#include "store_rocks/store_rocks.h"

#include <rocksdb/c.h>

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define STRIPES 1024   /* striped locks serialising appends per stream */
#define VERSIONS 65536 /* write counters that let appends trust a read */
#define KEY_INLINE 256 /* record keys up to this long stay on the stack */
#define SEQ_LEN 8
#define PREFIX_HEAD 'k'    /* layout 2: 'k', be64 hash of the stream, stream */
#define PREFIX_HEAD_V1 'h' /* layout 1: 'h', stream (refused at open) */
#define HASH_LEN 8

/* What the key filter answers (kd_rocks_filter.state): only READY answers
 * "no"; FULL waits for the builder to build it again. */
enum { KD_FILTER_OFF, KD_FILTER_BUILDING, KD_FILTER_READY, KD_FILTER_FULL };

#define KD_FILTER_MAX_BYTES ((size_t)1 << 40)     /* larger sizes are cut to this */
#define KD_FILTER_RENEW_RECORDS ((size_t)1 << 20) /* one iterator of a build reads */

/* The key filter (store_rocks_filter.c). Its words, state and counters are
 * atomic: every thread that reads or writes the store uses it, and its
 * builder thread runs from the open until the store closes (or the filter
 * gives up). */
typedef struct kd_rocks_filter {
    _Atomic uint64_t *words; /* NULL: no filter (key_filter_bytes 0, a secondary) */
    uint64_t mask;           /* words - 1 (a power of two) */
    size_t bytes;
    uint64_t capacity;         /* streams it holds at its false-positive rate */
    size_t renew;              /* records one iterator of a build reads */
    _Atomic uint64_t added;    /* streams that set a new bit since the last build began:
                                * about the distinct ones */
    _Atomic int state;         /* KD_FILTER_* */
    _Atomic uint64_t gen;      /* bumped as a build begins (before it clears) */
    _Atomic uint64_t rebuilds; /* builds after the first */
    _Atomic bool stop;         /* the store closes: the builder stops */
    pthread_mutex_t lock;      /* with wake: the builder waits for FULL or stop */
    pthread_cond_t wake;
    bool has_sync; /* lock and wake made */
    pthread_t builder;
    bool has_builder;
} kd_rocks_filter;

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
    kd_rocks_filter filter_keys;
} rocks_store;

/* store_rocks.c */

/* Writes the record key of a stream whose kd_store_stream_hash() is hash
 * into p (1 + HASH_LEN + stream_len bytes); returns its length. */
size_t kd_rocks_rkey_fill(char *p, const char *stream, size_t stream_len, uint64_t hash);

/* Records a RocksDB error (freeing it) as the store's last error; returns
 * KD_ERR_STORE. */
kd_err kd_rocks_fail(rocks_store *r, const char *what, char *rocks_err);

/* The write counter of the streams hashing to hash's slot. */
_Atomic uint64_t *kd_rocks_version_of(rocks_store *r, uint64_t hash);

/* Parses a head record's value: *count is the stream's number of entries;
 * with payload, also a malloc()ed copy of the newest entry. */
kd_err kd_rocks_head_parse(const char *val, size_t vlen, uint64_t *count, void **payload,
                           size_t *payload_len);

/* Reads a stream's head: *count is its number of entries (0 when absent);
 * with payload, also a malloc()ed copy of the newest entry. */
kd_err kd_rocks_head_get(rocks_store *r, const char *stream, size_t stream_len,
                         uint64_t hash, uint64_t *count, void **payload,
                         size_t *payload_len);

/* Adds the head record for entry number seq to wb; false when out of
 * memory. */
bool kd_rocks_batch_put(rocksdb_writebatch_t *wb, const char *stream, size_t stream_len,
                        uint64_t hash, uint64_t seq, const void *payload,
                        size_t payload_len);

/* Turns RocksDB's per-thread perf counters off on the calling thread. */
void kd_rocks_perf_off(void);

/* Store op: copies the store's last error into buf. */
void kd_rocks_last_error(void *impl, char *buf, size_t buf_size);

/* store_rocks_read.c */

/* Store op: reads the newest entry of a stream (kd_store_read_last). */
kd_err kd_rocks_read_last(void *impl, const char *stream, size_t stream_len,
                          uint64_t *seq, void **payload, size_t *payload_len,
                          bool *found);

/* Store op: reads the newest entries of n streams, each with the version
 * its append may name (kd_store_read_last_batch). */
kd_err kd_rocks_read_last_batch(void *impl, kd_read *items, size_t n);

/* store_rocks_write.c */

/* Store op: makes the lazy writes so far durable (kd_store_sync). */
kd_err kd_rocks_sync(void *impl);

/* Store op: appends entry expected_seq to a stream (kd_store_append). */
kd_err kd_rocks_append(void *impl, const char *stream, size_t stream_len,
                       uint64_t expected_seq, const void *payload, size_t payload_len);

/* Store op: appends a batch in one synced write (kd_store_append_batch). */
kd_err kd_rocks_append_batch(void *impl, kd_append *items, size_t n);

/* Store op: appends a batch in one write, not synced
 * (kd_store_append_batch_lazy). */
kd_err kd_rocks_append_batch_lazy(void *impl, kd_append *items, size_t n);

/* store_rocks_filter.c */

/* Sets f up with the largest power-of-two number of words that fits in
 * bytes (none under 8 bytes: no filter; at most KD_FILTER_MAX_BYTES),
 * answering "maybe" until it is built, its builds taking a new iterator
 * every renew records (0: KD_FILTER_RENEW_RECORDS); false when out of
 * memory. */
bool kd_rocks_filter_init(kd_rocks_filter *f, size_t bytes, size_t renew);

/* Starts the thread that builds r's filter from the stored streams (it
 * answers once built) and builds it again whenever it is full. Without a
 * filter, nothing; without a thread, the filter never answers. */
void kd_rocks_filter_start(rocks_store *r);

/* Adds the stream whose kd_store_stream_hash() is hash; called under the
 * stream's stripe lock, before the stream is written. Thread-safe. */
void kd_rocks_filter_add(kd_rocks_filter *f, uint64_t hash);

/* False only when the stream whose hash is hash certainly has no record;
 * the caller loaded the slot's write counter before asking. Thread-safe. */
bool kd_rocks_filter_may_have(kd_rocks_filter *f, uint64_t hash);

/* Stops and joins the builder and frees the words (before the database
 * closes). */
void kd_rocks_filter_destroy(kd_rocks_filter *f);

/* store_rocks_retention.c */

/* Store op: keeps what the longest-lived cache asks for
 * (kd_store_set_retention). */
void kd_rocks_set_retention(void *impl, uint64_t ttl_ms, uint64_t inflight_ms);

/* The compaction filter (state: the rocks_store): drops head records past
 * retention. */
unsigned char kd_rocks_retention_filter(void *state, int level, const char *key,
                                        size_t klen, const char *val, size_t vlen,
                                        char **new_val, size_t *new_vlen,
                                        unsigned char *changed);

/* The compaction filter's destructor: it owns nothing. */
void kd_rocks_retention_filter_free(void *state);

/* The compaction filter's name. */
const char *kd_rocks_retention_filter_name(void *state);

/* store_rocks_options.c */

/* Creates r's options from o; false when out of memory (what was made is
 * r's, freed by its destroy). */
bool kd_rocks_configure(rocks_store *r, const kd_rocks_options *o);

/* store_rocks_open.c */

/* The store ops of a RocksDB store (kd_store_backend() finds its state). */
extern const struct kd_store_ops kd_rocks_ops;

#endif /* KD_STORE_ROCKS_INT_H */
