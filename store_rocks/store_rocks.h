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

/* Opens (creating it and its parents if missing) the RocksDB store at path.
 * With sync, every append has reached the disk (WAL fsync) when it returns.
 * Returns the store, owned by the caller (kd_store_destroy() closes it), or
 * NULL with a message naming the path and the cause in errstr. */
kd_store *kd_rocks_open(const char *path, bool sync, char *errstr, size_t errstr_size);

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
