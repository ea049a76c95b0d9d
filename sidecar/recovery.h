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
 */
#ifndef KD_RECOVERY_H
#define KD_RECOVERY_H

#include "config/config.h"
#include "dedup/store.h"

#include <librdkafka/rdkafka.h>

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* At most this many downstream records are read for one partition. */
#define KD_RECOVERY_SCAN_MAX 2000000

typedef struct kd_recovery kd_recovery;

/* What a scan found for one key. */
typedef enum kd_recover_result {
    KD_RECOVER_FOUND,   /* downstream: complete the claim with *out */
    KD_RECOVER_ABSENT,  /* not downstream: release and forward */
    KD_RECOVER_UNKNOWN, /* cannot tell: forward again, at least once */
} kd_recover_result;

typedef struct kd_recover_found {
    int64_t offset;    /* of the downstream record */
    int64_t timestamp; /* its timestamp (ms) */
} kd_recover_found;

/* Cumulative cost of the scans. */
typedef struct kd_recovery_stats {
    uint64_t scans;
    uint64_t records; /* downstream records read */
    uint64_t micros;  /* time spent scanning */
} kd_recovery_stats;

/* Prepares recovery for cfg's routes (cfg and store borrowed; they must
 * outlive it); the scanning consumer connects to brokers on first use.
 * Returns NULL with the reason in errstr. */
kd_recovery *kd_recovery_new(const kd_config *cfg, kd_store *store, const char *brokers,
                             char *errstr, size_t errstr_size);

/* Destroys it. NULL-safe. */
void kd_recovery_destroy(kd_recovery *rc);

/* Records this run's run record (boot_id): for every route and downstream
 * partition, the partition's end offset now, read through producer.
 * Durable when it returns KD_OK; else the error (the run must not claim). */
kd_err kd_recovery_record_run(kd_recovery *rc, rd_kafka_t *producer, uint64_t boot_id,
                              const int *out_partitions, char *errstr,
                              size_t errstr_size);

/* Looks for key among the records route (index into cfg->routes) put on
 * downstream partition out_partition since run `owner` started. */
kd_recover_result kd_recovery_find(kd_recovery *rc, uint64_t owner, size_t route,
                                   int32_t out_partition, const char *key, size_t key_len,
                                   kd_recover_found *out);

/* Drops what scans remembered (when no orphan is left to resolve). */
void kd_recovery_forget(kd_recovery *rc);

void kd_recovery_stats_get(const kd_recovery *rc, kd_recovery_stats *out);

/* The store stream of run boot_id's run record, "kdedup:run:<hex>": buf
 * must hold 32 bytes. Returns its length. */
size_t kd_recovery_run_stream(uint64_t boot_id, char *buf, size_t size);

/* Finds topic/partition's start offset in a run record's payload. */
bool kd_recovery_run_lookup(const void *payload, size_t len, const char *topic,
                            int32_t partition, int64_t *offset);

#endif /* KD_RECOVERY_H */
