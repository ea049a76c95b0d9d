/*
 * kdedup - the pipeline seen from outside: its counters (stats), its
 * metrics, and the answers of /healthz and /readyz; read from any thread
 * (file map: pipeline_int.h).
 */
#include "sidecar/pipeline_int.h"

#include <stdio.h>
#include <string.h>

void kd_pipeline_stats_get(const kd_pipeline *p, kd_pipeline_stats *out) {
    memset(out, 0, sizeof(*out));
    for (size_t i = 0; i < p->cfg->nroutes; i++) {
        kd_route_metrics *r = kd_metrics_route(p->metrics, i);

        out->consumed += atomic_load(&r->consumed);
        out->forwarded += atomic_load(&r->forwarded);
        out->duplicates_completed += atomic_load(&r->duplicates_completed);
        out->duplicates_in_flight += atomic_load(&r->duplicates_in_flight);
        out->key_conflicts += atomic_load(&r->key_conflicts_skipped) +
                              atomic_load(&r->key_conflicts_dead_lettered) +
                              atomic_load(&r->key_conflicts_forwarded);
        out->released += atomic_load(&r->released);
        out->retries += atomic_load(&r->retries);
        out->dead_lettered += atomic_load(&r->dead_lettered);
        out->missing_forwarded += atomic_load(&r->missing_forwarded);
        out->missing_dropped += atomic_load(&r->missing_dropped);
        out->rejected += atomic_load(&r->rejected_too_many_headers) +
                         atomic_load(&r->rejected_headers_too_large) +
                         atomic_load(&r->rejected_ambiguous_key);
        out->possibly_persisted += atomic_load(&r->possibly_persisted);
        out->produce_errors +=
            atomic_load(&r->not_persisted) + atomic_load(&r->possibly_persisted);
        out->orphans_reforwarded += atomic_load(&r->orphans_reforwarded);
        out->orphans_found += atomic_load(&r->orphans_found);
        out->orphans_expired += atomic_load(&r->orphans_expired);
        out->abandoned += atomic_load(&r->abandoned);
        out->parked += atomic_load(&r->parked);
        out->headers_stripped += atomic_load(&r->headers_stripped);
        out->orphans_absent += atomic_load(&r->orphans_absent);
        out->handover_keys += atomic_load(&r->handover_keys);
        out->handover_forgets += atomic_load(&r->handover_forgets);
        out->handover_early += atomic_load(&r->handover_early);
        out->uncertain_found += atomic_load(&r->uncertain_found);
        out->uncertain_absent += atomic_load(&r->uncertain_absent);
        out->uncertain_unknown += atomic_load(&r->uncertain_unknown);
    }
    out->handover_records = atomic_load(kd_metrics_handover_records(p->metrics));
    out->collisions = atomic_load(kd_metrics_collisions(p->metrics));
    out->foreign_records = atomic_load(kd_metrics_foreign(p->metrics));
    out->store_errors = atomic_load(kd_metrics_store_errors(p->metrics));
    out->assigned_partitions = atomic_load(kd_metrics_assigned(p->metrics));
    out->inflight = atomic_load(kd_metrics_inflight(p->metrics));
    out->revokes = atomic_load(&p->revokes);
}

kd_metrics *kd_pipeline_metrics(kd_pipeline *p) {
    return p->metrics;
}

bool kd_pipeline_healthy(const kd_pipeline *p, uint64_t stale_ms, uint64_t write_ms,
                         char *reason, size_t size) {
    uint64_t now = kd_mono_ms(), idle = now - atomic_load(&p->tick_ms);
    uint64_t slow = atomic_load(&p->health.slow_since);

    if (idle >= stale_ms) {
        snprintf(reason, size, "the main loop has not turned for %llums",
                 (unsigned long long)idle);
        return false;
    }
    if (slow && now - slow >= write_ms) {
        snprintf(reason, size,
                 "consumption paused for %llums while one store write is under way "
                 "(the disk of store.path?)",
                 (unsigned long long)(now - slow));
        return false;
    }
    return true;
}

bool kd_pipeline_ready(kd_pipeline *p, char *reason, size_t size) {
    uint64_t assigned = atomic_load(kd_metrics_assigned(p->metrics));
    kd_cluster_view v;

    kd_metrics_cluster_view(p->metrics, &v);
    uint64_t failing = atomic_load(&p->health.failing_since), unread, stuck, slow;
    char err[400];

    if (atomic_load(&p->stop) || atomic_load(&p->fatal))
        snprintf(reason, size, "stopping");
    else if (failing)
        snprintf(reason, size, "store failing for %llums, consumption paused: %s",
                 (unsigned long long)(kd_mono_ms() - failing),
                 kd_store_last_error(p->store, err, sizeof(err)));
    else if ((slow = atomic_load(&p->health.slow_since)))
        snprintf(reason, size,
                 "store slow: consumption paused for %llums while a store write is "
                 "under way (the disk of store.path?)",
                 (unsigned long long)(kd_mono_ms() - slow));
    else if (atomic_load(&kd_metrics_flow(p->metrics)->backpressure))
        snprintf(reason, size,
                 "backpressure: consumption paused until the messages in flight settle "
                 "(pipeline.max_inflight, max_inflight_bytes, max_retrying)");
    else if ((stuck = atomic_load(&kd_metrics_flow(p->metrics)->stuck)))
        snprintf(
            reason, size,
            "%llu message(s) stuck: refused more than max_retries times by their "
            "dead-letter topic (or, on a route without one, by the downstream topic); "
            "they are retried and their partitions commit no further until they are "
            "delivered (each is named in the log)",
            (unsigned long long)stuck);
    else if ((unread = atomic_load(&p->handover.failing)))
        snprintf(reason, size,
                 "reading the history of %llu assigned partition(s) from the downstream "
                 "topic failed; they are not consumed until it succeeds (see the log)",
                 (unsigned long long)unread);
    else if (v.brokers_known > 0 && v.brokers_up == 0)
        snprintf(reason, size, "no broker reachable (0 of %d up)", v.brokers_known);
    else if (assigned == 0 && v.group_steady != 1)
        snprintf(reason, size, "consumer group not joined yet (no partition assignment)");
    else
        return true; /* joined: with partitions, or legitimately idle without */
    return false;
}
