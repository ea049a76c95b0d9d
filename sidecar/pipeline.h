/*
 * kdedup - the pipeline (docs/architecture.md): consume a poll batch, claim its keys
 * with one durable write, forward the claimed messages, complete receipts in
 * batches as deliveries are acknowledged, release claims of failed
 * deliveries for a retry, and store offsets only up to the lowest message
 * whose fate is not durable.
 *
 * One thread runs the pipeline (kd_pipeline_run); kd_pipeline_stop() and
 * kd_pipeline_stats() may be called from any thread (stop also from a
 * signal handler).
 */
#ifndef KD_PIPELINE_H
#define KD_PIPELINE_H

#include "config/config.h"
#include "dedup/store.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct kd_pipeline kd_pipeline;

/* Counters since start (all monotonic but inflight). */
typedef struct kd_pipeline_stats {
    uint64_t consumed;             /* messages read from source topics */
    uint64_t forwarded;            /* claimed messages delivered with a receipt */
    uint64_t duplicates_completed; /* skipped: key already completed */
    uint64_t duplicates_in_flight; /* skipped: key claimed, delivery under way */
    uint64_t key_conflicts;        /* duplicate keys with another payload (any action) */
    uint64_t released;             /* claims released after a failed delivery */
    uint64_t retries;              /* deliveries attempted again */
    uint64_t dead_lettered;        /* delivered to a dead-letter topic */
    uint64_t missing_forwarded;    /* no usable key: forwarded without dedup */
    uint64_t missing_dropped;      /* no usable key: dropped */
    uint64_t rejected;             /* over the header bounds (or an ambiguous key) */
    uint64_t produce_errors;       /* failed or uncertain delivery reports */
    uint64_t possibly_persisted;   /* uncertain deliveries, produced again */
    uint64_t orphans_reforwarded;  /* orphaned claims forwarded again (unresolved) */
    uint64_t orphans_found;        /* orphaned claims found downstream: completed */
    uint64_t orphans_expired;      /* claims past inflight_timeout, looked up first */
    uint64_t abandoned;            /* left to the next owner of their partition */
    uint64_t parked;               /* waited for an ended ownership's delivery */
    uint64_t foreign_records;      /* downstream records read but not trusted */
    uint64_t headers_stripped;     /* messages that came with kdedup-* headers */
    uint64_t orphans_absent;       /* orphaned claims not downstream: forwarded */
    uint64_t handover_keys;        /* keys learned from downstream on assignment */
    uint64_t handover_forgets;     /* keys forgotten on reading a forget record */
    uint64_t handover_early;       /* consumed while their handover was pending: held */
    uint64_t uncertain_found;      /* possibly persisted, found downstream: done */
    uint64_t uncertain_absent;     /* possibly persisted, not downstream: resent */
    uint64_t uncertain_unknown;    /* possibly persisted, unreadable: resent */
    uint64_t handover_records;     /* downstream records read for them */
    uint64_t collisions;   /* keys the store could not dedup (collision, garbage) */
    uint64_t store_errors; /* store writes or reads that failed */
    uint64_t assigned_partitions; /* gauge */
    uint64_t inflight;            /* gauge: consumed, fate not yet durable */
    uint64_t revokes; /* revokes begun (a rebalance's, a rejoin's, the close's) */
} kd_pipeline_stats;

/* How a process opens the store (kd_pipeline_open_store). */
typedef enum kd_pipeline_store_mode {
    KD_PIPELINE_STORE_OWNER,  /* the sidecar's own: read and written */
    KD_PIPELINE_STORE_READER, /* read-only beside a live sidecar (`kdedup lookup`) */
} kd_pipeline_store_mode;

/* Opens the RocksDB store cfg names, as production does: its owner with
 * store.path, sync and memory sizes; a reader as a RocksDB secondary (see
 * kd_rocks_open_secondary). The one way the sidecar, its tools, the tests'
 * fixture and the benchmarks open a store. Returns it (the caller destroys
 * it after the pipeline), or NULL with the reason in errstr. */
kd_store *kd_pipeline_open_store(const kd_config *cfg, kd_pipeline_store_mode mode,
                                 char *errstr, size_t errstr_size);

/* Builds a pipeline over cfg (borrowed; must outlive it) and store
 * (borrowed), connecting to brokers ("host:port,...": the resolved form of
 * cfg->brokers). Returns it, or NULL with the reason in errstr. */
kd_pipeline *kd_pipeline_new(const kd_config *cfg, kd_store *store, const char *brokers,
                             char *errstr, size_t errstr_size);

/* Runs until kd_pipeline_stop(), then drains in-flight deliveries within the
 * configured grace period, commits offsets and closes the consumer. Returns
 * 0, or -1 after a fatal error (logged). */
int kd_pipeline_run(kd_pipeline *p);

/* Asks the pipeline to stop. Async-signal-safe. */
void kd_pipeline_stop(kd_pipeline *p);

/* Makes the pipeline leave its consumer group and join it again: every
 * partition is revoked (drained and committed as in any rebalance), then
 * assigned again, to this process or another. Returns at once; may be
 * called from any thread. */
void kd_pipeline_rejoin(kd_pipeline *p);

/* Offers a config reloaded from the file (borrowed; must outlive the
 * pipeline), to take effect between two turns of the loop. In place when
 * only log.level or pipeline.batch_max differ (restart false); with
 * restart, kd_pipeline_run() returns as on a stop (deliveries drained,
 * offsets committed, consumer closed) once the group gave it a first
 * assignment, and kd_pipeline_restart_config() names cfg: the caller
 * builds a new pipeline over it. A later offer replaces one not yet taken
 * (a restart asked stays asked). Any thread. */
void kd_pipeline_offer(kd_pipeline *p, const kd_config *cfg, bool restart);

/* After kd_pipeline_run() returned: the config it stopped to restart with,
 * or NULL when it stopped for good. */
const kd_config *kd_pipeline_restart_config(const kd_pipeline *p);

/* The id this pipeline stamps on its claims (random, per pipeline). */
uint64_t kd_pipeline_boot_id(const kd_pipeline *p);

/* Copies the current counters. */
void kd_pipeline_stats_get(const kd_pipeline *p, kd_pipeline_stats *out);

struct kd_metrics;
/* The pipeline's metrics (owned by it). */
struct kd_metrics *kd_pipeline_metrics(kd_pipeline *p);

/* /healthz: true while the loop turned within stale_ms and no store write
 * has been under way for write_ms (the loop turns on while one is: see
 * kd_pl_ahead_stall); else false with the reason. Thread-safe. */
bool kd_pipeline_healthy(const kd_pipeline *p, uint64_t stale_ms, uint64_t write_ms,
                         char *reason, size_t size);

/* /readyz: true when a broker is reachable and the group is joined (with
 * partitions, or legitimately idle without); else false with the reason.
 * Thread-safe. */
bool kd_pipeline_ready(kd_pipeline *p, char *reason, size_t size);

/* True when kd_pipeline_run() returned leaving its consumer running (it
 * stopped before its first assignment, or the brokers did not answer its
 * close in time): its threads may still log, so the process should end
 * with _exit() after destroying the pipeline and the store, keeping the
 * config (the logger reads it) alive. */
bool kd_pipeline_consumer_left(const kd_pipeline *p);

/* Destroys the pipeline (after kd_pipeline_run returned). NULL-safe. */
void kd_pipeline_destroy(kd_pipeline *p);

#endif /* KD_PIPELINE_H */
