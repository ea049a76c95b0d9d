/*
 * kdedup - exact recovery of claims left in flight by a run that died.
 *
 * Such a claim's message may or may not have reached the downstream topic.
 * The downstream topic itself says which: every run records, in the store
 * and before it claims anything, where each downstream partition ended when
 * it started (its "run record"): every record it produces lands at or past
 * that offset. On meeting an orphaned claim, kdedup scans the downstream
 * partition its message would have gone to, from the dead run's start
 * offset to the end, for the idempotency key (records of the claim's route
 * only): found, the claim is completed with a receipt naming that record;
 * absent, it is released and the message forwarded, once. A partition
 * scanned is remembered (key digests and offsets) for the orphans that
 * follow. When the answer cannot be known (no run record, a scan longer
 * than the bound, records deleted, the broker not answering), the caller
 * falls back to forwarding again (at least once) and counts it.
 *
 * The same downstream topic carries a partition's history across a
 * rebalance (the "handover"). Each replica's store knows the keys of the
 * partitions it consumed; when a source partition is assigned, the new
 * owner reads the route's records of that source partition from the
 * downstream partition it maps to, over the dedup.ttl window (from where
 * its own last handover of the pair ended, when that is later), and the
 * caller records their keys as completed before consuming. The end of the
 * read is saved in the store (a "mark"), so a partition that comes back
 * reads only what was added meanwhile.
 */
#ifndef KD_RECOVERY_H
#define KD_RECOVERY_H

#include "config/config.h"
#include "dedup/store.h"
#include "sidecar/headers.h"

#include <librdkafka/rdkafka.h>

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* KD_FORWARDED_AT_HEADER (headers.h) on every record kdedup forwards says
 * when (wall clock) it was sent. The handover's dedup.ttl window counts from
 * it, not from the record's timestamp, which is the source message's (a
 * producer may stamp event time, hours or days old). */

typedef struct kd_recovery kd_recovery;

/* What a scan found for one key. */
typedef enum kd_recover_result {
    KD_RECOVER_FOUND,   /* downstream: complete the claim with *out */
    KD_RECOVER_ABSENT,  /* not downstream: release and forward */
    KD_RECOVER_UNKNOWN, /* cannot tell: forward again, at least once */
    KD_RECOVER_LATER,   /* not known yet (a scan under way, or failed a moment
                         * ago and waiting to be tried again): ask again later */
} kd_recover_result;

typedef struct kd_recover_found {
    int64_t offset;    /* of the downstream record */
    int64_t timestamp; /* its timestamp (ms) */
} kd_recover_found;

/* Cumulative cost of the scans, and what they hold now. */
typedef struct kd_recovery_stats {
    uint64_t scans;            /* reads of downstream for claims (steps included) */
    uint64_t records;          /* downstream records they read */
    uint64_t micros;           /* time they took */
    uint64_t handovers;        /* history scans of assigned partitions (steps) */
    uint64_t handover_records; /* downstream records they read */
    uint64_t handover_micros;  /* time they took */
    uint64_t foreign;          /* records not trusted (dedup.signing_key): skipped */
    uint64_t cache_bytes;      /* gauge: key tables of dead runs' scans held */
    uint64_t cache_scans;      /* gauge: scans held (tables or failures) */
} kd_recovery_stats;

/* A record of a handover scan: what kdedup forwarded, and from where. */
typedef struct kd_history_rec {
    const void *key; /* the idempotency key: valid during the callback only */
    size_t key_len;
    int64_t offset;       /* downstream */
    int64_t timestamp;    /* downstream (ms) */
    int64_t src_offset;   /* in the source partition */
    int64_t forwarded_at; /* wall ms (its KD_FORWARDED_AT_HEADER, else timestamp) */
    bool stamped;         /* forwarded_at came from its KD_FORWARDED_AT_HEADER */
    bool forget;          /* a forget record (forgets.h): the key was forgotten at
                           * forwarded_at; offset is the forget record's */
} kd_history_rec;

/* True when a record forwarded at `at` (wall ms; -1: unknown, an older
 * kdedup's, which may be anything's) can be the delivery of a claim made,
 * or a message sent, at since_ms (wall): one forwarded earlier is the
 * delivery of an older claim of the key. Allows one second for a clock
 * stepped between the two. */
bool kd_recovery_forwarded_since(int64_t at, uint64_t since_ms);

/* Takes a batch of records; returns false to stop the scan (it fails). */
typedef bool (*kd_history_fn)(void *arg, const kd_history_rec *recs, size_t n);

typedef enum kd_history_result {
    KD_HISTORY_DONE,    /* every record of the window was passed */
    KD_HISTORY_BOUNDED, /* the newest dedup.scan_max_records were; older skipped */
    KD_HISTORY_MORE,    /* the turn's time was used up: call again to go on */
    KD_HISTORY_FAILED,  /* the broker, the store or fn failed: try again later */
} kd_history_result;

/* Where a handover scan is: zero it before the first call, keep it across
 * calls (KD_HISTORY_MORE, and KD_HISTORY_FAILED: a failed scan goes on from
 * the last batch fn took, not from the start). */
typedef struct kd_history_cursor {
    bool started;
    int64_t from, next, end; /* reading [next, end) of [from, end) */
    int64_t taken;           /* every record before it was passed to fn (or skipped) */
    uint64_t mark_seq;       /* where the new mark goes in the store */
    bool have_mark;
    int64_t mark;
    bool bounded;
    int failures; /* in a row: after a few, the scan starts over */
    uint64_t t0_us;
    /* The transactional mode: the high watermark seen when the window was
     * read to its end below it, and since when (mono ms): see
     * markers_awaited() in recovery_history_window.c. 0: not waiting. */
    int64_t markers_hw;
    uint64_t markers_since, markers_asked;
} kd_history_cursor;

/* Prepares recovery for cfg's routes (cfg and store borrowed; they must
 * outlive it); the scanning consumer connects to brokers on first use.
 * Returns NULL with the reason in errstr. */
kd_recovery *kd_recovery_new(const kd_config *cfg, kd_store *store, const char *brokers,
                             char *errstr, size_t errstr_size);

/* Destroys it. NULL-safe. */
void kd_recovery_destroy(kd_recovery *rc);

/* Records this run's run record (boot_id): for every route and downstream
 * partition, the partition's end offset now, read through producer, and
 * also stored in ends[route][partition] when ends is not NULL. Durable
 * when it returns KD_OK; else the error (the run must not claim). */
kd_err kd_recovery_record_run(kd_recovery *rc, rd_kafka_t *producer, uint64_t boot_id,
                              const int *out_partitions, int64_t *const *ends,
                              char *errstr, size_t errstr_size);

/* Starts a turn of the caller's loop: the scans of dead runs and the
 * handovers read for at most budget_ms in all until the next call, then
 * answer KD_RECOVER_LATER / KD_HISTORY_MORE, so the loop keeps polling and
 * serving deliveries between steps. Without a call (or with 0) they read to
 * the end at once. */
void kd_recovery_begin_turn(kd_recovery *rc, uint64_t budget_ms);

/* Looks for key among the records route (index into cfg->routes) put on
 * downstream partition out_partition since run `owner` started, for a
 * claim made at claimed_at_ms (wall): a record forwarded before it is the
 * delivery of an older claim of the key, and does not count. The scan of
 * (owner, route, partition) is read in steps and its key table kept for
 * the orphans that follow, within dedup.scan_cache_bytes for all scans
 * (the least recently used go first). KD_RECOVER_LATER while it is read,
 * or after it failed (tried again with backoff); KD_RECOVER_UNKNOWN when
 * it cannot be made: no run record, records deleted, more than
 * dedup.scan_max_records, a table larger than dedup.scan_cache_bytes, or
 * failing again and again. */
kd_recover_result kd_recovery_find(kd_recovery *rc, uint64_t owner, size_t route,
                                   int32_t out_partition, const char *key, size_t key_len,
                                   uint64_t claimed_at_ms, kd_recover_found *out);

/* The handover of source partition src_partition of route (mapped to
 * downstream partition out_partition): passes fn, in batches of at most
 * `batch` records and 4 MiB of what they hold (keys, values, headers; see
 * headers.h), every record of that source partition put downstream within
 * dedup.ttl and after this store's previous handover of the pair (forget
 * records among them, in their place), then saves where it ended. Records
 * forwarded longer than dedup.ttl ago (by their KD_FORWARDED_AT_HEADER; their
 * timestamp when they have none) are skipped. Without a mark the read starts
 * dedup.scan_max_records before
 * the end: record timestamps cannot bound it. Reads within the turn's
 * budget (KD_HISTORY_MORE: call again with the same cursor). */
kd_history_result kd_recovery_history(kd_recovery *rc, size_t route,
                                      int32_t src_partition, int32_t out_partition,
                                      size_t batch, kd_history_fn fn, void *arg,
                                      kd_history_cursor *cur);

/* One partition's handover, read with others (kd_recovery_histories). */
typedef struct kd_history_job {
    size_t route; /* in: index into cfg->routes */
    int32_t src_partition, out_partition;
    kd_history_fn fn; /* in: takes the records (fn(arg, ...)) */
    void *arg;
    kd_history_cursor *cur;   /* in, out: kept across calls, as for one */
    kd_history_result result; /* out */
} kd_history_job;

/* kd_recovery_history() for jobs[0..n) at once: their partitions are read
 * together (one consumer, one assignment; the first and end offsets of all
 * in two requests), within the turn's budget. A batch passed to a job's fn
 * holds that job's records only; all the batches held at a time together
 * hold at most `batch` records and 4 MiB. Sets each job's result. */
void kd_recovery_histories(kd_recovery *rc, kd_history_job *jobs, size_t n, size_t batch);

/* Sets a function called at least every 100 ms while a scan runs (e.g. to
 * show the caller's loop is alive). */
void kd_recovery_set_progress(kd_recovery *rc, void (*fn)(void *arg), void *arg);

/* One delivery of this run whose outcome is unknown (POSSIBLY_PERSISTED). */
typedef struct kd_recover_ask {
    const char *key; /* in */
    size_t key_len;
    int64_t from;             /* in: downstream, it landed at or after this offset;
                               * out, LATER: where the next step goes on */
    uint64_t sent_at_ms;      /* in: wall, when it was first sent */
    int64_t settle_to;        /* in, out, the transactional mode: 0 at the first
                               * ask; then the high watermark the first read
                               * saw. Until the last stable offset reaches it,
                               * what was not found answers LATER, not ABSENT */
    kd_recover_result result; /* out: FOUND, ABSENT, UNKNOWN or LATER */
    kd_recover_found found;   /* out, FOUND */
} kd_recover_ask;

/* Looks for each ask's key among the records route put on downstream
 * partition out_partition from the ask's `from` to the partition's current
 * end, with one read from the smallest `from`; a record forwarded before
 * the ask's sent_at_ms is not that delivery (a replayed or older copy).
 * Reads within the turn's budget (kd_recovery_begin_turn): when it runs
 * out, the asks not found yet answer LATER, their `from` moved past what
 * was read, and the caller asks again from there on a later turn.
 * Nothing is kept: memory is O(n). UNKNOWN when the broker does not answer
 * (then for a second without asking again), records were deleted, or more
 * than dedup.scan_max_records are to be read.
 *
 * In the transactional mode a read ends at the last stable offset: past it
 * lie records of transactions still open, and behind them, committed ones
 * (another replica's transaction held open, as a killed one's is until the
 * broker aborts it, hides the records committed after its first). So a key
 * is ABSENT only once the last stable offset has reached the high
 * watermark the ask's first read saw (settle_to): every record written
 * before that read is then committed or aborted. Until then, LATER. */
void kd_recovery_find_since_many(kd_recovery *rc, size_t route, int32_t out_partition,
                                 kd_recover_ask *asks, size_t n);

/* kd_recovery_find_since_many() for one ask; returns its result (a->from
 * and a->settle_to kept for the next ask, *out filled when FOUND). */
kd_recover_result kd_recovery_find_since(kd_recovery *rc, size_t route,
                                         int32_t out_partition, kd_recover_ask *a,
                                         kd_recover_found *out);

/* Drops what scans of dead runs hold (when no orphan is left to resolve). */
void kd_recovery_forget(kd_recovery *rc);

/* Copies the stats. */
void kd_recovery_stats_get(const kd_recovery *rc, kd_recovery_stats *out);

/* The store stream of run boot_id's run record, "kdedup:run:<hex>": buf
 * must hold 32 bytes. Returns its length. */
size_t kd_recovery_run_stream(uint64_t boot_id, char *buf, size_t size);

/* Finds topic/partition's start offset in a run record's payload. */
bool kd_recovery_run_lookup(const void *payload, size_t len, const char *topic,
                            int32_t partition, int64_t *offset);

#endif /* KD_RECOVERY_H */
