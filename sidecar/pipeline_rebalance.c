/*
 * kdedup - the pipeline's offsets and rebalances: commit points stored, partitions
 * assigned, revoked or lost.
 */
#include "sidecar/headers.h"
#include "sidecar/log.h"
#include "sidecar/pipeline_int.h"

#include <stdlib.h>

typedef struct offset_list {
    kd_pipeline *p;
    rd_kafka_topic_partition_list_t *list;
} offset_list;

static void add_offset(void *arg, size_t route, int32_t partition, int64_t offset) {
    offset_list *ol = arg;

    rd_kafka_topic_partition_list_add(ol->list, ol->p->cfg->routes[route].from, partition)
        ->offset = offset;
}

/* Stores the commit points that moved; the consumer commits them. */
void kd_pl_store_offsets(kd_pipeline *p) {
    offset_list ol;
    rd_kafka_resp_err_t err;

    if (kd_pl_store_failing(p) || p->txn.on)
        return; /* paused: nothing moves until the store is back; or in the
                 * transactions */
    ol = (offset_list){p, rd_kafka_topic_partition_list_new(8)};
    kd_offsets_each_moved(p->offsets, add_offset, &ol);
    if (ol.list->cnt && (err = rd_kafka_offsets_store(p->consumer, ol.list)))
        KD_DEBUG("offsets_store: %s", rd_kafka_err2str(err));
    rd_kafka_topic_partition_list_destroy(ol.list);
}

/* Waits (serving the producer) until nothing is in flight or deadline. */
void kd_pl_drain(kd_pipeline *p, uint64_t deadline_ms) {
    while (p->awaiting || p->receipts.n || p->reported.n || p->unsynced.n ||
           p->txn.open) {
        /* A stop during a revoke's drain starts the one grace period. */
        if (atomic_load(&p->stop) && !p->stop_deadline)
            p->stop_deadline = kd_mono_ms() + p->cfg->shutdown_grace_ms;
        if (p->stop_deadline && p->stop_deadline < deadline_ms)
            deadline_ms = p->stop_deadline;
        if (kd_mono_ms() >= deadline_ms) {
            kd_pl_txn_end(p, false); /* what it holds is sent again by the next owner */
            return;
        }
        kd_pl_service(p, 20);
        if (p->txn.open && !p->awaiting)
            kd_pl_txn_end(p, true);
        kd_pl_receipts_write(p);
        kd_pl_settle_receipts(p);
    }
}

/* Commits the commit points of parts now (synchronously). */
static void commit_parts(kd_pipeline *p, const rd_kafka_topic_partition_list_t *parts) {
    rd_kafka_topic_partition_list_t *list = rd_kafka_topic_partition_list_new(parts->cnt);
    rd_kafka_resp_err_t err;

    for (int i = 0; i < parts->cnt; i++) {
        size_t route = route_of(p, parts->elems[i].topic);
        int64_t at;

        if (route != SIZE_MAX &&
            kd_offsets_commit_point(p->offsets, route, parts->elems[i].partition, &at))
            rd_kafka_topic_partition_list_add(list, parts->elems[i].topic,
                                              parts->elems[i].partition)
                ->offset = at;
    }
    /* Synchronous, so the next owner starts where this one ended; while
     * stopping, asynchronous: the close waits for it within its time limit,
     * and brokers that do not answer cannot hold the stop. */
    if (list->cnt && (err = rd_kafka_commit(p->consumer, list, p->stop_deadline != 0)))
        KD_WARN("commit on revoke: %s", rd_kafka_err2str(err));
    rd_kafka_topic_partition_list_destroy(list);
}

static void on_assign(kd_pipeline *p, rd_kafka_t *rk,
                      rd_kafka_topic_partition_list_t *parts, bool cooperative) {
    rd_kafka_error_t *error = NULL;

    for (int i = 0; i < parts->cnt; i++) {
        size_t route = route_of(p, parts->elems[i].topic);

        if (route != SIZE_MAX &&
            (!kd_offsets_assign(p->offsets, route, parts->elems[i].partition) ||
             (p->cfg->handover &&
              !kd_pl_handover_add(p, route, parts->elems[i].partition))))
            atomic_store(&p->fatal, 1);
    }
    if (cooperative)
        error = rd_kafka_incremental_assign(rk, parts);
    else
        rd_kafka_assign(rk, parts);
    if (error) {
        KD_ERROR("assign: %s", rd_kafka_error_string(error));
        rd_kafka_error_destroy(error);
    }
    /* Nothing is consumed before the partitions' history is read (and the
     * store takes writes): fetched messages are discarded by the pause and
     * fetched again on resume. */
    if (kd_pl_store_failing(p) || p->cfg->handover || p->backpressure)
        rd_kafka_pause_partitions(rk, parts);
    else /* a partition paused in an earlier ownership (held back) starts afresh */
        rd_kafka_resume_partitions(rk, parts);
    p->assigned_once = true;
    GCOUNT(p, assigned, (uint64_t)parts->cnt);
    KD_INFO("assigned %d partition(s)", parts->cnt);
}

static void on_revoke(kd_pipeline *p, rd_kafka_t *rk,
                      rd_kafka_topic_partition_list_t *parts, bool cooperative) {
    bool lost = rd_kafka_assignment_lost(rk);
    rd_kafka_error_t *error = NULL;

    if (!lost) {
        /* Let in-flight deliveries finish so their offsets can be committed;
         * while stopping, within what is left of the one grace period (in
         * the transactional mode the drain commits the transaction, and
         * the offsets with it). */
        kd_pl_drain(p, p->stop_deadline ? p->stop_deadline
                                        : kd_mono_ms() + p->cfg->shutdown_grace_ms);
        kd_pl_store_offsets(p);
        if (!p->txn.on)
            commit_parts(p, parts);
    } else {
        kd_pl_txn_end(p, false); /* its records never show; the next owner sends them */
    }
    for (int i = 0; i < parts->cnt; i++) {
        size_t route = route_of(p, parts->elems[i].topic);

        size_t h = route == SIZE_MAX
                       ? SIZE_MAX
                       : kd_pl_handover_find(p, route, parts->elems[i].partition);

        if (route != SIZE_MAX)
            kd_offsets_revoke(p->offsets, route, parts->elems[i].partition);
        if (h != SIZE_MAX)
            kd_pl_handover_remove(p, h);
    }
    kd_pl_abandon_retries(p, false);
    if (cooperative)
        error = rd_kafka_incremental_unassign(rk, parts);
    else
        rd_kafka_assign(rk, NULL);
    if (error) {
        KD_ERROR("unassign: %s", rd_kafka_error_string(error));
        rd_kafka_error_destroy(error);
    }
    GCOUNT(p, assigned, (uint64_t)-parts->cnt);
    KD_INFO("%s %d partition(s)", lost ? "lost" : "revoked", parts->cnt);
}

void kd_pl_rebalance_cb(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                        rd_kafka_topic_partition_list_t *parts, void *opaque) {
    bool cooperative = !strcmp(rd_kafka_rebalance_protocol(rk), "COOPERATIVE");

    /* The batch the store thread is claiming came before this rebalance:
     * acted on first, as if it had been claimed before the poll. */
    kd_pl_ahead_finish(opaque);
    if (err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS) {
        on_assign(opaque, rk, parts, cooperative);
    } else if (err == RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS) {
        on_revoke(opaque, rk, parts, cooperative);
    } else {
        KD_ERROR("rebalance: %s", rd_kafka_err2str(err));
        rd_kafka_assign(rk, NULL);
    }
}
