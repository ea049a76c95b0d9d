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
void kd_pl_rebalance_store_offsets(kd_pipeline *p) {
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
void kd_pl_rebalance_drain(kd_pipeline *p, uint64_t deadline_ms) {
    while (p->q.awaiting || p->q.receipts.n || p->q.reported.n || p->q.unsynced.n ||
           p->txn.open) {
        /* A stop during a revoke's drain starts the one grace period. */
        uint64_t stop = kd_pl_stop_deadline(p);

        if (stop && stop < deadline_ms)
            deadline_ms = stop;
        if (kd_mono_ms() >= deadline_ms) {
            kd_pl_txn_end(p, false); /* what it holds is sent again by the next owner */
            return;
        }
        kd_pl_deliver_serve(p, 20);
        if (p->txn.open && !p->q.awaiting)
            kd_pl_txn_end(p, true);
        kd_pl_receipts_write(p);
        kd_pl_receipts_settle(p);
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
    if (kd_pl_store_failing(p) || p->cfg->handover || p->flow.backpressure ||
        atomic_load(&p->health.slow_since)) {
        rd_kafka_pause_partitions(rk, parts);
        for (int i = 0; i < parts->cnt; i++)
            if (parts->elems[i].err) /* a handover's messages wait all the same */
                KD_WARN("assign: %s/%" PRId32 " not paused: %s", parts->elems[i].topic,
                        parts->elems[i].partition, rd_kafka_err2str(parts->elems[i].err));
    } else /* a partition paused in an earlier ownership (held back) starts afresh */
        rd_kafka_resume_partitions(rk, parts);
    p->assigned_once = true;
    GCOUNT(p, assigned, (uint64_t)parts->cnt);
    KD_INFO("assigned %d partition(s)", parts->cnt);
}

static void on_revoke(kd_pipeline *p, rd_kafka_t *rk,
                      rd_kafka_topic_partition_list_t *parts, bool cooperative) {
    bool lost = rd_kafka_assignment_lost(rk);
    rd_kafka_error_t *error = NULL;

    atomic_fetch_add(&p->revokes, 1);
    if (!lost) {
        /* The batch the store thread is claiming came before this revoke:
         * produced, if its write ends in time (half of max.poll.interval.ms
         * at most, which this callback may count against), then in-flight
         * deliveries finish so their offsets can be committed; while
         * stopping, within what is left of the one grace period (in the
         * transactional mode the drain commits the transaction, and the
         * offsets with it). A batch still being written is dropped once it
         * is (see drop_ended). */
        uint64_t deadline = p->stop_deadline ? p->stop_deadline
                                             : kd_mono_ms() + p->cfg->shutdown_grace_ms;
        uint64_t store_by = kd_mono_ms() + (uint64_t)p->max_poll_ms / 2;

        kd_pl_ahead_finish(p, store_by < deadline ? store_by : deadline);
        kd_pl_rebalance_drain(p, deadline);
        kd_pl_rebalance_store_offsets(p);
        if (!p->txn.on)
            commit_parts(p, parts);
    } else {
        kd_pl_txn_end(p, false); /* its records never show; the next owner sends them */
    }
    for (int i = 0; i < parts->cnt; i++) {
        size_t route = route_of(p, parts->elems[i].topic);

        if (route != SIZE_MAX)
            kd_pl_own_end(p, route, parts->elems[i].partition);
    }
    kd_pl_msg_abandon_retries(p, false);
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

/* A rebalance event served after the consumer's group handler ended
 * (kd_pl_rebalance_cb): librdkafka assigns nothing any more, and the group
 * no longer counts this member, so a revoke ends the ownerships as a lost
 * assignment does (nothing commits: the transaction is aborted, its
 * records are sent again by the next owner). No (un)assign call: the
 * handler that would take it is gone. */
static void on_group_ended(kd_pipeline *p, rd_kafka_resp_err_t err,
                           rd_kafka_topic_partition_list_t *parts) {
    int n = 0;

    if (err != RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS) {
        KD_WARN("rebalance (%s) of %d partition(s) after the consumer's group ended: "
                "ignored",
                rd_kafka_err2str(err), parts->cnt);
        return;
    }
    atomic_fetch_add(&p->revokes, 1);
    kd_pl_txn_end(p, false);
    for (int i = 0; i < parts->cnt; i++) {
        size_t route = route_of(p, parts->elems[i].topic);

        if (route != SIZE_MAX &&
            kd_offsets_assigned(p->offsets, route, parts->elems[i].partition)) {
            kd_pl_own_end(p, route, parts->elems[i].partition);
            n++;
        }
    }
    kd_pl_msg_abandon_retries(p, false);
    GCOUNT(p, assigned, (uint64_t)-n);
    KD_INFO("revoked %d partition(s) after the consumer's group ended", n);
}

void kd_pl_rebalance_cb(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                        rd_kafka_topic_partition_list_t *parts, void *opaque) {
    /* NULL once the consumer's group handler has ended (its queue takes no
     * request), which a rebalance event queued before may still see. At a
     * stop, librdkafka 2.0.2 queues the close's revoke behind an assignment
     * not yet served; served first, that assignment is taken as an unassign,
     * the group is left and may end before the revoke is served (chaos seed
     * 101, transactional: a SIGSEGV in strcmp, 2026-12-07). */
    const char *protocol = rd_kafka_rebalance_protocol(rk);
    bool cooperative;

    if (!protocol) {
        on_group_ended(opaque, err, parts);
        return;
    }
    cooperative = !strcmp(protocol, "COOPERATIVE");

    /* A batch the store thread is claiming stays handed over through an
     * assignment (its partitions stay this consumer's) and a lost revoke
     * (its messages are dropped when it is acted on): only a revoke that
     * commits waits for it (on_revoke). */
    if (err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS) {
        on_assign(opaque, rk, parts, cooperative);
    } else if (err == RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS) {
        on_revoke(opaque, rk, parts, cooperative);
    } else {
        KD_ERROR("rebalance: %s", rd_kafka_err2str(err));
        rd_kafka_assign(rk, NULL);
    }
}
