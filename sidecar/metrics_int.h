/*
 * kdedup - metrics' private header: the state its parts share. Public API:
 * metrics.h.
 *
 * File map, from the ground floor up (a file calls only files listed before
 * it):
 *   metrics.c         the handle (new, destroy, carry across a reload), the
 *                     accessors of its counters and gauges, histograms
 *                     (observe, quantile)
 *   metrics_stats.c   gauges from librdkafka statistics
 *                     (kd_metrics_update_stats, _cluster_view)
 *   metrics_render.c  the Prometheus text exposition (kd_metrics_render)
 *
 * Counters, gauges and histograms are atomics, updated from any thread;
 * view (the statistics' gauges) only under lock.
 */
#ifndef KD_METRICS_INT_H
#define KD_METRICS_INT_H

#include "sidecar/metrics.h"

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#define MAX_LAGS 4096
#define MAX_BROKERS 64

typedef struct lag {
    char topic[256];
    int32_t partition;
    int64_t lag;
} lag;

typedef struct broker_rtt {
    char name[128];
    double rtt_s;
} broker_rtt;

/* Gauges from librdkafka statistics, replaced as a whole under the lock. */
typedef struct stats_view {
    lag *lags;
    size_t nlags;
    broker_rtt rtts[MAX_BROKERS];
    size_t nrtts;
    int64_t producer_queue;
    kd_cluster_view cluster;
} stats_view;

struct kd_metrics {
    const kd_config *cfg;
    kd_route_metrics *routes;
    _Atomic uint64_t collisions, store_errors, inflight, assigned, held, left, foreign;
    _Atomic uint64_t txn_begun, txn_committed, txn_aborted, txn_replaced; /* txn mode */
    _Atomic uint64_t recovery_records, recovery_us, recovery_scans;
    _Atomic uint64_t handover_records, handover_us, handover_pending;
    kd_histogram forward_latency, store_write, txn_commit;
    kd_flow_gauges flow;
    pthread_mutex_t lock; /* guards view */
    stats_view view;
};

/* Upper bounds (seconds) of the histograms' buckets (metrics.c). */
extern const double kd_metrics_bucket_le[KD_HIST_BUCKETS];

#endif /* KD_METRICS_INT_H */
