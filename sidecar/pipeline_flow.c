/*
 * kdedup - the pipeline's flow control: what it holds in memory stays within
 * the limits of the config.
 *
 * Consumption pauses (backpressure) while the messages in flight, their
 * bytes or the messages waiting for a retry pass pipeline.max_inflight,
 * max_inflight_bytes or max_retrying, and resumes once all three are back
 * under 3/4 of their limits. A partition whose oldest unsettled message
 * holds pipeline.max_inflight later ones behind it (a message whose
 * deliveries keep failing: larger than the broker takes, a dead-letter
 * topic that refuses it, a route without one) is paused alone ("held back")
 * until that message is settled: the others go on.
 */
#include "sidecar/log.h"
#include "sidecar/pipeline_int.h"
#include "store_rocks/store_rocks.h"

#define FLOW_CHECK_MS 250 /* partitions held back, and the memory gauges */

void kd_pl_flow_pause(kd_pipeline *p, size_t route, int32_t partition, bool pause) {
    rd_kafka_topic_partition_list_t *one = rd_kafka_topic_partition_list_new(1);

    rd_kafka_topic_partition_list_add(one, p->cfg->routes[route].from, partition);
    (pause ? rd_kafka_pause_partitions : rd_kafka_resume_partitions)(p->consumer, one);
    rd_kafka_topic_partition_list_destroy(one);
}

bool kd_pl_flow_paused(const kd_pipeline *p, size_t route, int32_t partition) {
    return kd_pl_store_failing(p) || atomic_load(&p->health.slow_since) ||
           p->flow.backpressure || kd_pl_handover_find(p, route, partition) != SIZE_MAX ||
           kd_offsets_flag(p->offsets, route, partition);
}

void kd_pl_flow_apply(kd_pipeline *p) {
    rd_kafka_topic_partition_list_t *parts = NULL, *pause, *resume;

    if (rd_kafka_assignment(p->consumer, &parts) || !parts)
        return;
    pause = rd_kafka_topic_partition_list_new(parts->cnt ? parts->cnt : 1);
    resume = rd_kafka_topic_partition_list_new(parts->cnt ? parts->cnt : 1);
    for (int i = 0; i < parts->cnt; i++) {
        const rd_kafka_topic_partition_t *e = &parts->elems[i];

        rd_kafka_topic_partition_list_add(
            kd_pl_flow_paused(p, route_of(p, e->topic), e->partition) ? pause : resume,
            e->topic, e->partition);
    }
    if (pause->cnt)
        rd_kafka_pause_partitions(p->consumer, pause);
    if (resume->cnt)
        rd_kafka_resume_partitions(p->consumer, resume);
    rd_kafka_topic_partition_list_destroy(pause);
    rd_kafka_topic_partition_list_destroy(resume);
    rd_kafka_topic_partition_list_destroy(parts);
}

/* How many may wait behind a partition's front before it is held back: a
 * quarter as many behind an orphan being resolved (they wait unsettled, and
 * would otherwise fill pipeline.max_inflight, pausing every partition). */
static size_t front_limit(kd_pipeline *p, size_t route, int32_t partition) {
    size_t limit = (size_t)p->cfg->max_inflight;

    if (kd_pl_msg_gate_waiting(p, route, partition))
        limit = limit / 4 ? limit / 4 : 1;
    return limit;
}

void kd_pl_flow_check_front(kd_pipeline *p, size_t route, int32_t partition) {
    size_t span = kd_offsets_span(p->offsets, route, partition);
    int64_t front = -1;

    if (span >= front_limit(p, route, partition) &&
        !kd_offsets_flag(p->offsets, route, partition)) {
        kd_offsets_commit_point(p->offsets, route, partition, &front);
        KD_WARN("%s/%" PRId32 " held back: %zu messages consumed after offset %" PRId64
                " wait for it to settle (pipeline.max_inflight); the partition is paused "
                "until it does, the others go on (a delivery failing again and again? "
                "see the log above)",
                p->cfg->routes[route].from, partition, span - 1, front);
        kd_offsets_set_flag(p->offsets, route, partition, true);
        p->flow.held_back++;
        kd_pl_flow_pause(p, route, partition, true);
    }
}

/* Lets go of a partition held back once its front moved. */
static void check_partition(void *arg, size_t route, int32_t partition) {
    kd_pipeline *p = arg;

    if (kd_offsets_flag(p->offsets, route, partition) &&
        kd_offsets_span(p->offsets, route, partition) <=
            front_limit(p, route, partition) / 2) {
        KD_INFO("%s/%" PRId32 " resumes: its front message was settled",
                p->cfg->routes[route].from, partition);
        kd_offsets_set_flag(p->offsets, route, partition, false);
        p->flow.held_back--;
        if (!kd_pl_flow_paused(p, route, partition))
            kd_pl_flow_pause(p, route, partition, false);
    }
}

/* Counts the partitions held back (after assignments changed). */
static void count_held_back(void *arg, size_t route, int32_t partition) {
    kd_pipeline *p = arg;

    p->flow.held_back += kd_offsets_flag(p->offsets, route, partition);
}

/* Sets the memory gauges. */
static void update_gauges(kd_pipeline *p) {
    kd_flow_gauges *g = kd_metrics_flow(p->metrics);
    kd_recovery_stats rs;
    kd_rocks_memory rm;

    atomic_store(&g->inflight_bytes, p->flow.inflight_bytes);
    atomic_store(&g->retrying, p->q.retries.n);
    atomic_store(&g->backpressure, p->flow.backpressure);
    atomic_store(&g->held_back, p->flow.held_back);
    atomic_store(&g->offsets_tracked, kd_offsets_span_total(p->offsets));
    kd_recovery_stats_get(p->recovery, &rs);
    atomic_store(&g->scan_cache_bytes, rs.cache_bytes);
    if (kd_rocks_memory_get(p->store, &rm) == KD_OK) {
        atomic_store(&g->store_block_cache, rm.block_cache);
        atomic_store(&g->store_memtables, rm.memtables);
        atomic_store(&g->store_table_readers, rm.table_readers);
        atomic_store(&g->store_key_filter, rm.key_filter);
        atomic_store(&g->store_key_filter_ready, rm.key_filter_ready);
    }
}

void kd_pl_flow_turn(kd_pipeline *p) {
    uint64_t inflight = atomic_load(kd_metrics_inflight(p->metrics)), now;
    const kd_config *c = p->cfg;
    bool over = inflight >= (uint64_t)c->max_inflight ||
                p->flow.inflight_bytes >= (uint64_t)c->max_inflight_bytes ||
                p->q.retries.n >= (size_t)c->max_retrying;
    bool under = inflight <= (uint64_t)c->max_inflight / 4 * 3 &&
                 p->flow.inflight_bytes <= (uint64_t)c->max_inflight_bytes / 4 * 3 &&
                 p->q.retries.n <= (size_t)c->max_retrying / 4 * 3;

    if (!p->flow.backpressure && over) {
        KD_WARN("backpressure: %llu messages (%zu bytes) in flight, %zu waiting for a "
                "retry; consumption paused until they settle (pipeline.max_inflight "
                "%lld, max_inflight_bytes %lld, max_retrying %lld)",
                (unsigned long long)inflight, p->flow.inflight_bytes, p->q.retries.n,
                (long long)c->max_inflight, (long long)c->max_inflight_bytes,
                (long long)c->max_retrying);
        p->flow.backpressure = true;
        p->flow.backpressure_since = kd_mono_ms();
        kd_pl_flow_apply(p);
    } else if (p->flow.backpressure && under) {
        KD_INFO("backpressure over after %llums: consumption resumes",
                (unsigned long long)(kd_mono_ms() - p->flow.backpressure_since));
        p->flow.backpressure = false;
        kd_pl_flow_apply(p);
    }
    if ((now = kd_mono_ms()) < p->flow.check_ms)
        return;
    p->flow.check_ms = now + FLOW_CHECK_MS;
    p->flow.held_back = 0;
    kd_offsets_each_assigned(p->offsets, count_held_back, p);
    kd_offsets_each_assigned(p->offsets, check_partition, p);
    update_gauges(p);
}
