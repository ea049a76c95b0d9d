/*
 * kdedup benchmarks - the baseline kdedup is measured against: a plain
 * consume -> produce passthrough with the librdkafka settings kdedup would
 * use for the same configuration (sidecar/kafka.c), forwarding every
 * message of the first route and storing each partition's offset once its
 * deliveries are acknowledged. No dedup, no store.
 */
#ifndef KD_BENCH_PASSTHROUGH_H
#define KD_BENCH_PASSTHROUGH_H

#include "config/config.h"
#include "sidecar/metrics.h"

#include <stdint.h>

/* What one passthrough run saw. */
typedef struct kd_passthrough_stats {
    uint64_t consumed;
    uint64_t delivered;
    uint64_t failed;      /* delivery reports with an error (not retried) */
    uint64_t first_us;    /* monotonic: the first message consumed */
    uint64_t last_ack_us; /* monotonic: the latest delivery acknowledged */
} kd_passthrough_stats;

typedef struct kd_passthrough kd_passthrough;

/* Connects a consumer (subscribed to cfg's first route) and a producer to
 * brokers. cfg is borrowed and must outlive the passthrough. Returns it, or
 * NULL with the reason in errstr. */
kd_passthrough *kd_passthrough_new(const kd_config *cfg, const char *brokers,
                                   char *errstr, size_t errstr_size);

/* Runs one turn: a poll batch of up to cfg->batch_max messages (waiting
 * for the first as long as the pipeline would), produced, then delivery
 * reports served and offsets stored. */
void kd_passthrough_turn(kd_passthrough *pt);

/* Counters so far, and the consume -> delivery-ack latencies. */
void kd_passthrough_stats_get(const kd_passthrough *pt, kd_passthrough_stats *out);
const kd_histogram *kd_passthrough_latency(const kd_passthrough *pt);

/* Flushes, commits, closes and frees. NULL-safe. */
void kd_passthrough_destroy(kd_passthrough *pt);

#endif /* KD_BENCH_PASSTHROUGH_H */
