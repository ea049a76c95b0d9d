/*
 * kdedup - metrics: counters and histograms updated on the hot path with
 * C11 atomics (no locks), gauges fed from librdkafka statistics, rendered
 * in the Prometheus text exposition format 0.0.4 on scrape.
 */
#ifndef KD_METRICS_H
#define KD_METRICS_H

#include "config/config.h"

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

/* Upper bounds (seconds) of the latency histograms: 0.5 ms ... 30 s. */
#define KD_HIST_BUCKETS 15
/* Log-scale microsecond slots for quantiles: 8 per power of two (each
 * about 9% wide), up to 2^36 us (~19 h). */
#define KD_HIST_FINE_SUB 8
#define KD_HIST_FINE (37 * KD_HIST_FINE_SUB)

typedef struct kd_histogram {
    _Atomic uint64_t buckets[KD_HIST_BUCKETS]; /* not cumulative; +Inf is count */
    _Atomic uint64_t count;
    _Atomic uint64_t sum_us;
    _Atomic uint64_t fine[KD_HIST_FINE]; /* not exported: kd_histogram_quantile */
} kd_histogram;

/* Counters of one route (counters only: kd_metrics_carry() adds them all). */
typedef struct kd_route_metrics {
    _Atomic uint64_t consumed, forwarded, duplicates_completed, duplicates_in_flight,
        released, retries, dead_lettered, missing_forwarded, missing_dropped,
        missing_dead_lettered, not_persisted, possibly_persisted, orphans_reforwarded,
        orphans_found, orphans_absent, handover_keys, uncertain_found, uncertain_absent,
        uncertain_unknown, abandoned, parked, orphans_expired, headers_stripped,
        key_conflicts_skipped, key_conflicts_dead_lettered, key_conflicts_forwarded,
        rejected_too_many_headers, rejected_headers_too_large, rejected_ambiguous_key,
        handover_forgets, handover_early, handover_failures;
} kd_route_metrics;

typedef struct kd_metrics kd_metrics;

/* Gauges of memory and flow control, set by the pipeline. */
typedef struct kd_flow_gauges {
    _Atomic uint64_t inflight_bytes, retrying, backpressure, held_back, offsets_tracked,
        scan_cache_bytes, store_block_cache, store_memtables, store_table_readers,
        store_key_filter, store_key_filter_ready, stuck, txn_initialising;
} kd_flow_gauges;

/* Metrics for the routes of cfg (borrowed; must outlive the metrics). NULL
 * on allocation failure. */
kd_metrics *kd_metrics_new(const kd_config *cfg);
void kd_metrics_destroy(kd_metrics *m);

/* Adds the counters and histograms of from (a pipeline that stopped for a
 * reload) to to's (the one that replaces it, before it is shown): each
 * route's, to the route of the same name (a route removed leaves its
 * counts; one added starts at 0), and the process-wide ones. Gauges are
 * not carried: they describe the pipeline now. So counters never go back
 * across a reload and rate() stays right. */
void kd_metrics_carry(kd_metrics *to, kd_metrics *from);

/* The counters of route i. */
kd_route_metrics *kd_metrics_route(kd_metrics *m, size_t route);

/* Process-wide counters and gauges. */
_Atomic uint64_t *kd_metrics_collisions(kd_metrics *m);
_Atomic uint64_t *kd_metrics_store_errors(kd_metrics *m);
_Atomic uint64_t *kd_metrics_inflight(kd_metrics *m);
/* The gauges of memory and flow control. */
kd_flow_gauges *kd_metrics_flow(kd_metrics *m);
/* Claims held by this run's messages (a gauge). */
_Atomic uint64_t *kd_metrics_held(kd_metrics *m);
/* Downstream records not trusted: unsigned or signed with another key. */
_Atomic uint64_t *kd_metrics_foreign(kd_metrics *m);
/* Claims left by ended ownerships' uncertain deliveries, remembered (a gauge). */
_Atomic uint64_t *kd_metrics_left(kd_metrics *m);
_Atomic uint64_t *kd_metrics_assigned(kd_metrics *m);
/* Recovery scans: downstream records read, microseconds spent, and the
 * reads (each read of one downstream partition, for one key or several
 * together, a step of it counted on its own). */
_Atomic uint64_t *kd_metrics_recovery_records(kd_metrics *m);
_Atomic uint64_t *kd_metrics_recovery_us(kd_metrics *m);
_Atomic uint64_t *kd_metrics_recovery_scans(kd_metrics *m);
/* Handover scans: downstream records read, microseconds spent, and the
 * partitions assigned that wait for theirs (a gauge). */
_Atomic uint64_t *kd_metrics_handover_records(kd_metrics *m);
_Atomic uint64_t *kd_metrics_handover_us(kd_metrics *m);
_Atomic uint64_t *kd_metrics_handover_pending(kd_metrics *m);

/* consume → receipt, and per store batch write. */
kd_histogram *kd_metrics_forward_latency(kd_metrics *m);
kd_histogram *kd_metrics_store_write(kd_metrics *m);

/* The transactional mode: transactions begun, committed and aborted,
 * producers replaced after a fatal error, and the time each commit took. */
_Atomic uint64_t *kd_metrics_txn_begun(kd_metrics *m);
_Atomic uint64_t *kd_metrics_txn_committed(kd_metrics *m);
_Atomic uint64_t *kd_metrics_txn_aborted(kd_metrics *m);
_Atomic uint64_t *kd_metrics_txn_replaced(kd_metrics *m);
kd_histogram *kd_metrics_txn_commit(kd_metrics *m);

/* Records one observation of `seconds`. Lock-free. */
void kd_histogram_observe(kd_histogram *h, double seconds);

/* The q-quantile (0..1) of what h observed, in seconds, within about 5%
 * (the middle of its log-scale slot); 0 when h is empty. */
double kd_histogram_quantile(const kd_histogram *h, double q);

/* Replaces the gauges taken from librdkafka statistics with those in json
 * (one statistics document, from the consumer or the producer). Returns 0,
 * or -1 if json does not parse. */
int kd_metrics_update_stats(kd_metrics *m, const char *json, size_t len);

/* The current exposition text, malloc()ed (the caller frees), *len its
 * length; NULL when out of memory. */
char *kd_metrics_render(kd_metrics *m, size_t *len);

/* From the last consumer statistics: brokers in state UP, and whether the
 * group is joined (steady) and how many partitions it was given. */
typedef struct kd_cluster_view {
    int brokers_up;
    int brokers_known;
    int group_steady; /* 1 joined and steady, 0 not, -1 not reported yet */
    int assignment;
} kd_cluster_view;
void kd_metrics_cluster_view(kd_metrics *m, kd_cluster_view *out);

#endif /* KD_METRICS_H */
