/*
 * kdedup - the RocksDB store's options: table, cache, memtable and write
 * options (file map: store_rocks_int.h).
 */
#include "store_rocks/store_rocks_int.h"

#define MEMTABLE_BUCKETS_MAX (1u << 20)

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

bool kd_rocks_configure(rocks_store *r, const kd_rocks_options *o) {
    r->opts = rocksdb_options_create();
    r->table = rocksdb_block_based_options_create();
    r->cache = rocksdb_cache_create_lru(o->block_cache_bytes);
    r->filter = rocksdb_compactionfilter_create(r, kd_rocks_retention_filter_free,
                                                kd_rocks_retention_filter,
                                                kd_rocks_retention_filter_name);
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
