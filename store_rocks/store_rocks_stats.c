/*
 * kdedup - the RocksDB store for tools and /metrics: compaction, the record
 * count, memory (file map: store_rocks_int.h).
 */
#include "store_rocks/store_rocks_int.h"
#include "dedup/store_int.h"

#include <stdlib.h>

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
    return err ? kd_rocks_fail(r, "scan failed", err) : KD_OK;
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
    out->key_filter = r->filter_keys.bytes;
    out->key_filter_ready = atomic_load(&r->filter_keys.state) == KD_FILTER_READY;
    out->key_filter_rebuilds = atomic_load(&r->filter_keys.rebuilds);
    out->key_filter_off =
        r->filter_keys.words && atomic_load(&r->filter_keys.state) == KD_FILTER_OFF;
    return KD_OK;
}
