/*
 * kdedup - the RocksDB store's retention: what the caches ask for, and the
 * compaction filter that drops what outlived it (file map:
 * store_rocks_int.h).
 */
#include "store_rocks/store_rocks_int.h"
#include "dedup/entry.h"

#include <time.h>

static uint64_t wall_ms(void) {
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

void kd_rocks_set_retention(void *impl, uint64_t ttl_ms, uint64_t inflight_ms) {
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

unsigned char kd_rocks_retention_filter(void *state, int level, const char *key,
                                        size_t klen, const char *val, size_t vlen,
                                        char **new_val, size_t *new_vlen,
                                        unsigned char *changed) {
    (void)level;
    (void)new_val;
    (void)new_vlen;
    *changed = 0;
    kd_rocks_perf_off(); /* a compaction thread's, from its first record on */
    return record_expired(state, key, klen, val, vlen, wall_ms());
}

void kd_rocks_retention_filter_free(void *state) {
    (void)state; /* the filter borrows the store */
}

const char *kd_rocks_retention_filter_name(void *state) {
    (void)state;
    return "kdedup.retention";
}
