/*
 * kdedup - the RocksDB backend of the store interface (dedup/store.h).
 *
 * Layout 2: one head record per stream ('k', be64 hash of the stream,
 * stream → be64 seq, newest entry), so the newest entry is one point read;
 * the hash leads so that keys differ early. A store holding records of
 * layout 1 ('h' stream) is refused at open. An append checks the head's seq
 * and replaces it in one WriteBatch under a striped per-stream lock; older
 * entries are superseded (the contract only reads the newest; the memory
 * backend keeps them all). A compaction filter drops entries past the
 * retention set through kd_store_set_retention().
 */
#ifndef KD_STORE_ROCKS_H
#define KD_STORE_ROCKS_H

#include "dedup/store.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* How the store uses memory and the disk. RocksDB's memory is bounded by
 * block_cache_bytes (data, index and filter blocks all charged to it) plus
 * max_write_buffers memtables of write_buffer_bytes each (a quarter of
 * which, at most 8 MiB, is the memtable's hash-bucket array). */
typedef struct kd_rocks_options {
    bool sync; /* every append has reached the disk (WAL fsync) when it returns */
    size_t block_cache_bytes;
    size_t write_buffer_bytes;
    int max_write_buffers;
    /* The key filter, outside RocksDB: reads of streams it knows have no
     * record (new keys) skip RocksDB. Holds about key_filter_bytes / 1.25
     * streams; built again (a scan) once that many were added since its
     * last build; a store of more than half that gets none (until the next
     * open). 0: none. */
    size_t key_filter_bytes;
    /* Records one iterator of the key filter's build reads before it goes
     * on with a new one (0: 2^20); for tests. */
    size_t key_filter_renew_records;
} kd_rocks_options;

/* The defaults: sync, a 64 MiB block cache, two memtables of 32 MiB, a
 * 16 MiB key filter. */
#define KD_ROCKS_OPTIONS_DEFAULT                                                         \
    ((kd_rocks_options){true, 64u << 20, 32u << 20, 2, 16u << 20, 0})

/* Opens (creating it and its parents if missing) the RocksDB store at path
 * with opts (NULL: the defaults). Returns the store, owned by the caller
 * (kd_store_destroy() closes it), or NULL with a message naming the path and
 * the cause in errstr. */
kd_store *kd_rocks_open_with(const char *path, const kd_rocks_options *opts, char *errstr,
                             size_t errstr_size);

/* Opens the store at path read-only, beside the kdedup that has it open
 * (a RocksDB secondary instance: what the primary wrote up to now, synced
 * or not, is read; nothing is created or written). It keeps a directory of
 * its own under $TMPDIR (else /tmp) for its log, removed when the store is
 * destroyed. Returns the store (every write fails), or NULL with the path
 * and the cause in errstr (no store there: "cannot open the database"). */
kd_store *kd_rocks_open_secondary(const char *path, char *errstr, size_t errstr_size);

/* kd_rocks_open_with() with the default sizes and the given sync. */
kd_store *kd_rocks_open(const char *path, bool sync, char *errstr, size_t errstr_size);

/* What RocksDB holds in memory now, in bytes. */
typedef struct kd_rocks_memory {
    uint64_t block_cache;         /* data, index and filter blocks (pinned ones too) */
    uint64_t memtables;           /* all memtables, flushing ones too */
    uint64_t table_readers;       /* outside the cache: should stay near 0 */
    uint64_t key_filter;          /* the key filter (kd_rocks_options.key_filter_bytes) */
    bool key_filter_ready;        /* it answers: built, and not full */
    uint64_t key_filter_rebuilds; /* builds after the open's, each once it was full */
    bool key_filter_off; /* given up until the next open: the store too large for it,
                          * or a build's read failed */
} kd_rocks_memory;

/* Fills *out for a RocksDB store. Returns KD_OK, or KD_ERR_CONFIG if store
 * is not one. Thread-safe. */
kd_err kd_rocks_memory_get(kd_store *store, kd_rocks_memory *out);

/* Compacts the whole database now, applying the retention filter. Returns
 * KD_OK, KD_ERR_CONFIG if store is not a RocksDB store, or KD_ERR_STORE. */
kd_err kd_rocks_compact(kd_store *store);

/* Counts every record (one head per stream) by a full scan: for tests and
 * tools, O(records). Returns KD_OK, KD_ERR_CONFIG or KD_ERR_STORE. */
kd_err kd_rocks_count_records(kd_store *store, uint64_t *count);

/* Writes the record key of stream into out (up to size bytes): for tests
 * and tools that write records by hand. Returns its full length (0 when out
 * of memory). */
size_t kd_rocks_record_key(const char *stream, size_t stream_len, char *out, size_t size);

#endif /* KD_STORE_ROCKS_H */
