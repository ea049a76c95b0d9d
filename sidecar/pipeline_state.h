/*
 * kdedup - the pipeline's state: struct kd_pipeline, and in it each
 * stage's state in a struct of its own, each saying which thread may touch
 * it (the threads: pipeline_int.h). Private to the pipeline.
 */
#ifndef KD_PIPELINE_STATE_H
#define KD_PIPELINE_STATE_H

#include "config/config.h"
#include "dedup/dedup.h"
#include "dedup/store.h"
#include "sidecar/held.h"
#include "sidecar/metrics.h"
#include "sidecar/offsets.h"
#include "sidecar/pipeline_job.h"
#include "sidecar/pipeline_msg.h"
#include "sidecar/recovery.h"

#include <librdkafka/rdkafka.h>

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct kd_pipeline kd_pipeline; /* as pipeline.h has it (C11) */

/* A source offset a transaction settles (pipeline_txn.c). */
typedef struct kd_pl_txn_off {
    size_t route;
    int32_t partition;
    uint64_t own;
    int64_t offset;
} kd_pl_txn_off;

/* Makes a producer like the pipeline's first (the caller owns it); NULL
 * with the reason in errstr. */
typedef rd_kafka_t *kd_pl_producer_new_fn(kd_pipeline *p, char *errstr,
                                          size_t errstr_size);

/* The transactional mode (pipeline_txn.c). The loop's thread only. At most
 * KD_PL_TXN_REPLACES producers replaced within KD_PL_TXN_REPLACE_WINDOW_MS:
 * past it, another process likely uses the same transactional.id, and the
 * pipeline stops. */
#define KD_PL_TXN_REPLACES 5
#define KD_PL_TXN_REPLACE_WINDOW_MS 60000
/* A message that finds the transactional producer not ready (its
 * initialisation waits for the broker) is tried again this much later. */
#define KD_PL_TXN_WAIT_MS 1000
typedef struct kd_pl_txn {
    bool on;      /* pipeline.delivery "transactional" */
    bool open;    /* begun, not yet committed or aborted */
    bool doomed;  /* a delivery of the open one failed: it is aborted */
    bool replace; /* the producer failed for good: replaced, its open
                   * transaction's outcome settled by its successor */
    uint64_t replaced_ms[KD_PL_TXN_REPLACES]; /* mono: the last replacements */
    size_t nreplaced;                         /* replacements so far */
    uint64_t seq;        /* the open (or last) transaction's number, from 1 */
    uint64_t began_ms;   /* mono: when the open one began */
    uint64_t offsets_ms; /* mono: when offsets were last committed */
    size_t outstanding;  /* deliveries of the open one not yet reported */
    /* mono: since when a replacing producer's initialisation has been
     * answered "try again" (0: initialised); nothing is sent meanwhile */
    uint64_t init_since;
    uint64_t init_tried_ms; /* mono: when it was last resumed */
    msg_list acked;         /* ...reported persisted */
    msg_list failed;        /* ...reported failed */
    kd_pl_txn_off *offs;    /* the source offsets it settles, noffs of cap */
    size_t noffs, cap;
    kd_pl_producer_new_fn *producer_new; /* kd_pl_txn_init's: makes a replacement */
} kd_pl_txn;

/* A source partition whose messages wait behind one whose claim is being
 * resolved from a dead run's downstream records, a scan step a turn: they
 * leave in consumption order once it is resolved (pipeline_gate.c). */
typedef struct gate {
    size_t route;
    int32_t partition;
    msg_list waiting; /* the head is the one being resolved */
} gate;

/* A source partition assigned and paused until its history is read from
 * the downstream topic (see recovery.h, "handover"), and then until every
 * partition of its route waiting for a handover is learned too. */
typedef struct handover {
    size_t route;
    int32_t partition;
    bool learned;          /* its history is read: it waits for its route's */
    bool early;            /* messages came while it was pending (logged once) */
    uint64_t due_ms;       /* mono: the next attempt */
    uint64_t backoff_ms;   /* after a failed attempt */
    kd_history_cursor cur; /* where its scan is */
} handover;

typedef struct route_rt {
    const kd_route *cfg;
    kd_dedup *dedup; /* keys are scoped to their route: namespace ":" from */
    int out_partitions;
    int dlt_partitions;
    int64_t *acked; /* per downstream partition: past the last delivery acked */
    /* Per downstream partition: deliveries sent there (numbered from 1, see
     * msg.out_seq) and the highest number of those acknowledged. */
    uint64_t *sent, *acked_sent;
} route_rt;

/*
 * The state of each stage, in a struct of its own, and the thread that may
 * touch it. The queues between the stages are in kd_pl_queues: a stage
 * takes from its input and puts each message on the next one's.
 */

/* The queues messages wait in between stages (pipeline_msg.h says which
 * stage fills and which drains each). The loop's. */
typedef struct kd_pl_queues {
    msg_list reported; /* delivery reports: kd_pl_produce_dr_cb -> deliver, or the
                        * transaction's own serve (pipeline_txn.c) */
    msg_list receipts; /* delivered, receipt not yet written: -> receipts */
    msg_list unsynced; /* receipt written lazily, durable with the next sync */
    msg_list retries;  /* waiting for due_ms: -> retry */
    size_t awaiting;   /* produced, no report yet (on no list: librdkafka's) */
} kd_pl_queues;

/* pipeline_gate.c's: partitions waiting for an orphan's scan. The loop's. */
typedef struct kd_pl_gates {
    gate *v;
    size_t n, cap;
    msg *passing; /* leaving its gate: produced, not gated again */
} kd_pl_gates;

/* pipeline_handover.c's: partitions waiting for their history, in
 * assignment order. The loop's, but for failing. */
typedef struct kd_pl_handovers {
    handover *v;
    size_t n, cap;
    _Atomic uint64_t failing; /* waiting after a failed attempt: the loop
                               * writes, any reads (/readyz) */
} kd_pl_handovers;

/* pipeline_flow.c's: backpressure and partitions held back. The loop's. */
typedef struct kd_pl_flow {
    size_t inflight_bytes;       /* what the messages in flight hold (see headers.h) */
    bool backpressure;           /* consumption paused: a pipeline.max_* passed */
    uint64_t backpressure_since; /* mono ms */
    size_t held_back;            /* partitions paused behind a stuck message */
    uint64_t check_ms;           /* mono: the next look at partitions and gauges */
} kd_pl_flow;

/* Keys held and left (pipeline_msg.c, pipeline_claim.c). The loop's. */
typedef struct kd_pl_keys {
    kd_held *held; /* claims held by this run's messages, by route and key */
    kd_held *left; /* claims left by ended ownerships' uncertain deliveries */
    left_claim *left_oldest, *left_newest; /* the same, oldest first */
    size_t nleft;
    uint64_t last_orphan_ms; /* mono: the latest orphaned claim met */
} kd_pl_keys;

/* pipeline_store.c's: the store's health. While store writes fail,
 * consumption is paused and offsets are not stored; failed claims and
 * receipts are retried with backoff. The loop's (the store thread marks
 * failed claims and receipts in its job; the loop counts them:
 * kd_pl_store_claim_health, kd_pl_store_complete_health), but for the
 * atomics, which any reads (/readyz). */
typedef struct kd_pl_health {
    _Atomic uint64_t failing_since; /* mono ms; 0 when healthy */
    uint64_t retry_at;              /* mono ms: next receipt retry */
    uint64_t backoff_ms;
    uint64_t failures; /* kd_pl_store_failed calls: a job's success is news
                        * only if none came since it was handed over */
    /* Consumption paused while the store thread's write outlasts its bound
     * (the loop turns on, polling; see kd_pl_ahead_stall); mono ms since
     * then, or 0. */
    _Atomic uint64_t slow_since;
} kd_pl_health;

/* The loop's reused buffers (pipeline_consume.c, pipeline_claim.c): a poll
 * batch (batch_max long) and its claims. */
typedef struct kd_pl_batch {
    msg **msgs;
    size_t n; /* msgs[0..n): polled while the store thread wrote,
               * for the next batch */
    kd_claim *claims;
    size_t *claim_of;    /* batch index -> claims index */
    size_t *claim_route; /* claims index -> route */
} kd_pl_batch;

/* kd_pipeline_offer(): a config waiting for the loop, taken between turns
 * (lock guards offered's setting, cfg and restart, never across I/O):
 * written by any under lock, taken by the loop. waiting and deferred are
 * the loop's. */
typedef struct kd_pl_offer {
    _Atomic int offered;
    pthread_mutex_t lock;
    const kd_config *cfg;
    bool restart;
    bool waiting;  /* logged that a restart waits */
    bool deferred; /* a larger batch_max waits for the store write */
} kd_pl_offer;

struct kd_pipeline {
    /* Set in kd_pipeline_new. cfg is replaced by the loop when a reload
     * changes only log.level or batch_max (the routes stay), and read by any
     * (kd_pipeline_stats_get: cfg->nroutes). store: used by the loop, the
     * store thread and any (its last error), kd_store's own locking. */
    const kd_config *cfg;
    kd_store *store;
    /* The loop's (the producer replaced by pipeline_txn.c). The store
     * thread reads routes[].dedup only (kd_dedup is thread-safe). */
    rd_kafka_t *consumer;
    rd_kafka_t *producer;
    route_rt *routes;
    kd_offsets *offsets;
    kd_recovery *recovery;
    kd_signer *signer;   /* dedup.signing_key: signs what is forwarded; or NULL */
    kd_metrics *metrics; /* atomics: every thread */
    uint64_t boot_id;    /* read-only after kd_pipeline_new */
    char boot_hex[17];
    char *brokers;            /* kd_pipeline_new's (owned), or NULL */
    uint64_t barrier_wait_ms; /* BARRIER_WAIT_FACTOR x the producer's
                               * message.timeout.ms (see msg.barrier) */
    int max_poll_ms;          /* the consumer's max.poll.interval.ms */

    /* Each stage's state (above; each says whose). */
    kd_pl_queues q;
    kd_pl_batch batch;
    kd_pl_keys keys;
    kd_pl_gates gate;
    kd_pl_handovers handover;
    kd_pl_flow flow;
    kd_pl_health health;
    kd_pl_receipts receipts_now; /* receipts written at once: while draining,
                                  * and a handover's (the loop's) */
    kd_pl_ahead ahead;           /* the store thread: a batch's claims, a turn's receipts;
                                  * shared with it under its lock (pipeline_job.h) */
    kd_pl_txn txn;               /* the transactional mode's (above): the loop's */
    kd_pl_offer offer;

    /* pipeline.c's: the loop's life. stop and rejoin are written by any
     * (kd_pipeline_stop, kd_pipeline_rejoin) and read by the loop; fatal,
     * tick_ms and revokes are written by the loop and read by any. */
    _Atomic int stop;
    _Atomic int rejoin;
    _Atomic int fatal;
    _Atomic uint64_t tick_ms;     /* last turn of the loop: /healthz */
    _Atomic uint64_t revokes;     /* revokes begun: kd_pipeline_stats */
    const kd_config *restart_cfg; /* the loop ended to restart with it */
    bool rejoining;               /* unsubscribed, waiting for the revoke */
    bool assigned_once;           /* the group gave the consumer an assignment */
    bool consumer_left;           /* stopped before that: the consumer is not destroyed */
    uint64_t stop_deadline;       /* mono ms: the end of shutdown_grace once stopping */
};

#endif
