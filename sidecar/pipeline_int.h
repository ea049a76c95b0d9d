/*
 * kdedup - the pipeline's private header: the functions one part of the
 * pipeline calls in another, and which thread does what.
 *
 * The message a consumed record becomes, the lists it waits in and the
 * table of its life (where it waits, and what comes next) are in
 * pipeline_msg.h; the state the parts share (struct kd_pipeline, a struct
 * for each stage in it) in pipeline_state.h. The pipeline is split into
 * twenty files (the kd_pl_* functions each offers the others, named
 * kd_pl_<file>_<verb>, are declared below under its name; a small query of
 * a part's state is an inline):
 *   pipeline.c           life cycle: new, run (the loop and its turns), reloads
 *                        offered, stop, rejoin, destroy (kd_pipeline_*, pipeline.h)
 *   pipeline_status.c    seen from outside: stats, metrics, /healthz, /readyz
 *   pipeline_consume.c   consuming: a polled message becomes a msg (its key,
 *                        its bounds), or is settled at once
 *   pipeline_claim.c     claiming: the claims of a batch gathered, written and
 *                        acted on; takeovers of claims left by other runs and
 *                        ended ownerships, and a scan of downstream for them
 *   pipeline_resolve.c   reads of downstream for uncertain deliveries and
 *                        ended ownerships' notes (each partition read once)
 *   pipeline_store.c     the store's health (store_failed / store_ok) and the
 *                        timed claim and receipt writes
 *   pipeline_conflict.c  key conflicts: a key met again with another payload
 *   pipeline_ahead.c     the store thread: a turn's claims and receipts
 *                        written ahead while the loop does the Kafka work
 *                        (its job, and who may touch what: pipeline_job.h)
 *   pipeline_produce.c   producing to the downstream and dead-letter topics,
 *                        and the delivery-report callback
 *   pipeline_msg.c       a msg's life (claim held, done, freed, abandoned),
 *                        ended ownerships' notes, the barrier, the lists it
 *                        waits in (retries, gates); calls no pipeline_*.c
 *   pipeline_deliver.c   delivery reports served: receipts wait, failures go on
 *   pipeline_failure.c   a failed delivery: released and retried, dead-lettered,
 *                        stuck, kept and read downstream for, or abandoned
 *   pipeline_retry.c     the retries due: sent, or handed back to the loop to
 *                        claim again or read downstream for (kd_pl_due)
 *   pipeline_receipts.c  receipts' text and buffers; gathered, written
 *                        lazily, made durable by the next sync
 *   pipeline_gate.c      gates let out: a partition's messages wait, in order,
 *                        behind an orphan being resolved (lists: pipeline_msg.c)
 *   pipeline_handover.c  reading a newly assigned partition's history
 *   pipeline_flow.c      flow control: backpressure, partitions held back, pauses
 *   pipeline_rebalance.c offsets stored, drains, assignments, revocations, losses
 *   pipeline_own.c       ownerships ended: a partition's offsets forgotten,
 *                        its handover dropped; an assignment lost
 *   pipeline_txn.c       the transactional delivery mode (its calls:
 *                        pipeline_txn.h; its state: pipeline_state.h)
 * Calls between the files run one way, with no circle. The loop (pipeline.c)
 * drives the stages in a fixed order each turn and hands the retries due to
 * their next stage. Some stages still call the next one directly: the claim
 * stage produces, the retries produce, a gate claims and produces, the
 * transaction serves the producer and takes its own reports.
 *
 * Every message consumed becomes a `msg` that lives until its fate is
 * durable: forwarded with a receipt, skipped as a duplicate, dropped or
 * dead-lettered by policy. Until then its offset is pending in kd_offsets,
 * and the consumed rd_kafka_message_t is kept, so the producer sends its
 * key, value and headers without copying them, and a retry needs nothing
 * from the broker.
 *
 * Threads. Three kinds touch a kd_pipeline; struct kd_pipeline, and each
 * stage's struct in it (pipeline_state.h), say which:
 *   the loop   the thread in kd_pipeline_run(). Almost all work happens
 *              here; librdkafka calls the delivery-report, rebalance,
 *              error and statistics callbacks from inside the polls made
 *              here (its log callback, kafka.c, comes from its own threads
 *              and touches no kd_pipeline).
 *   the store  the store thread (pipeline_ahead.c). It runs only
 *              kd_pl_receipts_run, kd_pl_store_complete_write, kd_pl_claim_run,
 *              kd_pl_store_claim_write and kd_store_sync on the job handed to it:
 *              it reads p->routes[].dedup, p->store and p->metrics, and
 *              writes only into p->ahead.job while that is pending. The
 *              hand-over is p->ahead's lock and condition (pipeline_job.h).
 *   any        other threads (HTTP handlers, signal handlers, a reload)
 *              through pipeline.h's thread-safe calls: kd_pipeline_stop,
 *              _rejoin, _offer, _stats_get, _metrics, _healthy, _ready.
 *              They read atomics, p->metrics, p->store's last error and
 *              p->cfg->nroutes; they write only stop, rejoin and the offer.
 * Fields set in kd_pipeline_new and not changed after may be read by any.
 */
#ifndef KD_PIPELINE_INT_H
#define KD_PIPELINE_INT_H

#include "dedup/dedup.h"
#include "sidecar/clock.h"
#include "sidecar/headers.h"
#include "sidecar/held.h"
#include "sidecar/metrics.h"
#include "sidecar/offsets.h"
#include "sidecar/pipeline.h"
#include "sidecar/pipeline_job.h"
#include "sidecar/pipeline_msg.h"
#include "sidecar/pipeline_state.h"
#include "sidecar/pipeline_txn.h"
#include "sidecar/recovery.h"

#include <librdkafka/rdkafka.h>

#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#define MAX_BACKOFF_MS 60000
#define TAKEOVER_TRIES 3
#define CLOSE_SLACK_MS 5000    /* past shutdown_grace, for the close's commit and leave */
#define PARK_MS 250            /* a copy waiting for an ended ownership's delivery */
#define LEFT_MAX 65536         /* claims left by uncertain deliveries remembered */
#define RECOVERY_IDLE_MS 60000 /* scans are forgotten after this without orphans */
#define METADATA_TIMEOUT_MS 10000
#define STORE_BACKOFF_MIN_MS 100
#define STORE_BACKOFF_MAX_MS 5000
#define HANDOVER_BACKOFF_MIN_MS 1000
#define HANDOVER_BACKOFF_MAX_MS 30000
#define UNCERTAIN_TRIES 10     /* reads of downstream before resending anyway */
#define BARRIER_POLL_MS 50     /* an uncertain delivery waiting for its barrier */
#define EARLY_POLL_MS 20       /* a message waiting for its partition's handover */
#define BARRIER_WAIT_FACTOR 10 /* ...at most this many message.timeout.ms */
#define STUCK_AFTER_FOREVER 5  /* failures that make a message stuck, max_retries -1 */
#define ORPHAN_WAIT_MS 20      /* a message waiting for its orphan's scan: asks again */

/* Counters: per route, and process-wide. */
#define RCOUNT(p, route, field)                                                          \
    atomic_fetch_add_explicit(&kd_metrics_route((p)->metrics, (route))->field, 1,        \
                              memory_order_relaxed)
#define GCOUNT(p, which, by)                                                             \
    atomic_fetch_add_explicit(kd_metrics_##which((p)->metrics), (by),                    \
                              memory_order_relaxed)

/*
 * Small helpers.
 */

/* Observes the seconds since t0_us (monotonic) in h. */
static inline void observe_since(kd_histogram *h, uint64_t t0_us) {
    kd_histogram_observe(h, (double)(kd_mono_us() - t0_us) / 1e6);
}

static inline size_t route_of(const kd_pipeline *p, const char *topic) {
    for (size_t i = 0; i < p->cfg->nroutes; i++)
        if (!strcmp(p->cfg->routes[i].from, topic))
            return i;
    return SIZE_MAX;
}

static inline kd_dedup *dedup_of(const kd_pipeline *p, const msg *m) {
    return p->routes[m->route].dedup;
}

/* True while the ownership that consumed m lasts: its partition was not
 * revoked or lost since. Only then may m's outcome touch offsets, retries
 * or produce anything. */
static inline bool msg_live(const kd_pipeline *p, const msg *m) {
    return m->own && kd_offsets_owner(p->offsets, m->route, m->rkm->partition) == m->own;
}

/* Log fields naming a message's source coordinates. */
#define MSG_FIELDS(m, part, off)                                                         \
    char part[16], off[24];                                                              \
    snprintf(part, sizeof(part), "%" PRId32, (m)->rkm->partition);                       \
    snprintf(off, sizeof(off), "%" PRId64, (m)->rkm->offset);                            \
    const char *fields[] = {                                                             \
        "topic",  src_topic(m), "partition", part,                                       \
        "offset", off,          "route",     p->cfg->routes[(m)->route].name,            \
        NULL}

#define RECEIPT_MAX 600

/* The reasons a dead-lettered message carries in KD_REASON_HEADER. */
#define KD_REASON_MISSING_KEY "missing-key"
#define KD_REASON_DELIVERY_FAILED "delivery-failed"
#define KD_REASON_KEY_CONFLICT "key-conflict"
#define KD_REASON_TOO_MANY_HEADERS "too-many-headers"   /* pipeline.max_headers */
#define KD_REASON_HEADERS_TOO_LARGE "headers-too-large" /* pipeline.max_header_bytes */
#define KD_REASON_AMBIGUOUS_KEY "ambiguous-key" /* see keysrc.h, "Ambiguous keys" */

/* pipeline.c */
/* Creates a producer like the pipeline's first (kd_pipeline_new's brokers);
 * NULL with the reason in errstr. The caller owns it. Handed to
 * kd_pl_txn_init, which makes a replacing producer with it. */
rd_kafka_t *kd_pl_producer_new(kd_pipeline *p, char *errstr, size_t errstr_size);

/* pipeline_consume.c */
/* Polls messages into p->batch.msgs after the `have` already there, up to
 * batch_max; returns how many it holds now (those of revoked partitions
 * dropped). */
size_t kd_pl_consume_collect(kd_pipeline *p, size_t have, int timeout_ms);

/* pipeline_job.h: the job handed over, as the loop sees it */
/* The number of the job handed over to the store thread (never 0) when it
 * claims key in route, else 0: a claim of this run that no message holds
 * yet may be that job's, made and not yet acted on. */
static inline uint64_t kd_pl_ahead_claiming(const kd_pipeline *p, size_t route,
                                            const void *key, size_t key_len) {
    const kd_pl_work *w = &p->ahead.job;

    if (!p->ahead.pending)
        return 0;
    /* the claims' keys are the loop's: the store thread writes decisions only */
    for (size_t i = 0; i < w->nclaims; i++)
        if (w->claim_route[i] == route && w->claims[i].key_len == key_len &&
            !memcmp(w->claims[i].key, key, key_len))
            return p->ahead.seq;
    return 0;
}

/* pipeline_claim.c */
/* Fills claims with the keyed messages of batch[0..n), route by route
 * (claim_route[j]: claim j's route; claim_of[i]: message i's claim).
 * Returns how many. */
size_t kd_pl_claim_gather(const kd_pipeline *p, msg *const *batch, size_t n,
                          kd_claim *claims, size_t *claim_of, size_t *claim_route);
/* One past the last of the claims from first on (of nclaims) that share a
 * route: one store write's worth. */
size_t kd_pl_claim_run(const size_t *claim_route, size_t nclaims, size_t first);
/* Acts on the claims made for batch[0..n), in consumption order: sends,
 * settles or retries every message. */
void kd_pl_claim_act(kd_pipeline *p, msg **batch, size_t n, kd_claim *claims,
                     const size_t *claim_of);
/* Claims a batch's keys and sends, settles or retries every message of it. */
void kd_pl_claim_batch(kd_pipeline *p, msg **batch, size_t n);
/* Claims the messages of l (taken: each is sent, settled or retried) a
 * poll batch's worth per store write: after a store outage, one write for
 * many released messages, not one each. */
void kd_pl_claim_list(kd_pipeline *p, msg_list *l);
/* Claims m's key alone, resolving a claim another run left, or again after
 * a claim lost its race to a release or forget. */
void kd_pl_claim_takeover(kd_pipeline *p, msg *m);
/* m, whose ownership ended before its batch was acted on, won claim c by
 * replacing another run's expired claim: that run's delivery is looked up
 * downstream now, as for a live message (the claim now names this run and
 * this time, so no later claimer could tell). True when it was found (the
 * key completed, m settled); else false, with m->claimed set when the
 * claim is to be released (nothing there) and clear when it cannot be
 * told (the claim is left, and its next claimer forwards again). */
bool kd_pl_claim_dropped(kd_pipeline *p, msg *m, const kd_claim *c);

/* pipeline_resolve.c */
/* Reads downstream for possibly persisted deliveries ms[0..n) (the array
 * is cleared), once per downstream partition; completes, resends or
 * retries each. */
void kd_pl_resolve_uncertain(kd_pipeline *p, msg **ms, size_t n);
/* Reads downstream for the notes (left_claim) that messages ms[0..n) met
 * (the array is cleared), once per downstream partition, and records what
 * each read told in its note; each message is retried, to be settled by
 * what its note says (kd_pl_claim_takeover) or read for again. */
void kd_pl_resolve_left(kd_pipeline *p, msg **ms, size_t n);
/* Reads downstream for the messages of uncertain (kd_pl_resolve_uncertain),
 * then for those of left (kd_pl_resolve_left); both lists are taken. */
void kd_pl_resolve_lists(kd_pipeline *p, msg_list *uncertain, msg_list *left);
/* m's delivery was found downstream at out_part (*f): completes its claim
 * with a receipt naming that record and settles m (freed): true. False when
 * the store failed: m then waits on p->q.receipts (never sent again). */
bool kd_pl_resolve_complete_found(kd_pipeline *p, msg *m, int32_t out_part,
                                  const kd_recover_found *f);
/* Adds what the recovery scans read since `before` to the metrics. */
void kd_pl_resolve_count_scans(kd_pipeline *p, const kd_recovery_stats *before);

/* pipeline_store.c */
/* Claims c[0..n) of route in one store write (timed); a failure pauses consumption. */
void kd_pl_store_claim_timed(kd_pipeline *p, size_t route, kd_claim *c, size_t n,
                             uint64_t now);
/* The store half of kd_pl_store_claim_timed: the write, timed; a failed write
 * marks every claim KD_ERR_STORE. Touches no pipeline state. */
void kd_pl_store_claim_write(kd_pipeline *p, size_t route, kd_claim *c, size_t n,
                             uint64_t now);
/* The pipeline half: a failed claim write pauses consumption; a good one
 * resumes it, with resume (false: a failure seen since the write began is
 * newer news). */
void kd_pl_store_claim_health(kd_pipeline *p, size_t route, const kd_claim *c, size_t n,
                              bool resume);
/* Completes c[0..n) of route in one store write (timed), lazy (durable
 * with the next durable write or sync) or not; a failure pauses consumption. */
void kd_pl_store_complete_timed(kd_pipeline *p, size_t route, kd_completion *c, size_t n,
                                bool lazy);
/* The store half of kd_pl_store_complete_timed: the write, timed; a failed write
 * marks every completion KD_ERR_STORE. Touches no pipeline state. */
void kd_pl_store_complete_write(kd_pipeline *p, size_t route, kd_completion *c, size_t n,
                                bool lazy);
/* The pipeline half: a failed write pauses consumption; a good durable one
 * resumes it. */
void kd_pl_store_complete_health(kd_pipeline *p, size_t route, const kd_completion *c,
                                 size_t n, bool lazy);
/* A store write succeeded: if it was failing, consumption resumes. */
void kd_pl_store_ok(kd_pipeline *p);
/* Counts and logs a failed store call; the first one pauses consumption. */
void kd_pl_store_failed(kd_pipeline *p, size_t route, const char *what);
/* True while store writes fail (consumption paused). */
static inline bool kd_pl_store_failing(const kd_pipeline *p) {
    return atomic_load(&p->health.failing_since) != 0;
}

/* pipeline_conflict.c */
/* True when the duplicate decision d (with its holder's owner) is a key
 * conflict for m: both fingerprinted, the fingerprints differ, and the key
 * is completed or held by a live message of this run. m was then skipped
 * (counted as a duplicate too), dead-lettered or forwarded per the route's
 * on_key_conflict. */
bool kd_pl_conflict_judge(kd_pipeline *p, msg *m, const kd_decision *d, uint64_t owner);

/* pipeline_produce.c */
/* librdkafka's delivery-report callback: queues m on p->q.reported. */
void kd_pl_produce_dr_cb(rd_kafka_t *rk, const rd_kafka_message_t *rkm, void *opaque);
/* Sends m downstream (or to the dead-letter topic); failures: kd_pl_failure_settle. */
void kd_pl_produce(kd_pipeline *p, msg *m);

/* pipeline_msg.c */
/* m's fate is durable: marks its offset done and frees m. */
void kd_pl_msg_done(kd_pipeline *p, msg *m);
/* m's delivery was reported (taken off p->q.reported): logs a stuck
 * message's delivery at last. */
void kd_pl_msg_reported(kd_pipeline *p, const msg *m);
/* m now holds its key's claim (recorded in p->keys.held); false when out of
 * memory (the pipeline then stops: fatal). */
bool kd_pl_msg_hold(kd_pipeline *p, msg *m);
/* m no longer holds a claim (released, or left to recovery). */
void kd_pl_msg_unhold(kd_pipeline *p, msg *m);
/* Frees m without touching offsets (its ownership ended, or the run stops). */
void kd_pl_msg_free(kd_pipeline *p, msg *m);
/* m's ownership ended: it is dropped, and its partition's next owner
 * consumes it again. Its claim is released so that owner can claim it,
 * unless a delivery may be downstream: then the claim stays for the next
 * owner's recovery to resolve exactly. */
void kd_pl_msg_abandon(kd_pipeline *p, msg *m);
/* Remembers where m's delivery may be, for whoever meets its claim next;
 * the oldest note goes past LEFT_MAX. */
void kd_pl_msg_left_add(kd_pipeline *p, const msg *m);
/* The note for key, or NULL. */
left_claim *kd_pl_msg_left_find(kd_pipeline *p, size_t route, const char *key,
                                size_t key_len);
/* Drops a note (resolved). */
void kd_pl_msg_left_drop(kd_pipeline *p, left_claim *l);
/* m's delivery was possibly persisted: its read of downstream waits for a
 * barrier (see pipeline_msg.c). */
void kd_pl_msg_barrier_set(kd_pipeline *p, msg *m);
/* True once a read of downstream for a delivery possibly persisted (to
 * out_partition of route, with its barrier and barrier_until) may begin: a
 * delivery to that partition sent after the failure was acknowledged, or
 * the wait is over. */
bool kd_pl_msg_barrier_passed(const kd_pipeline *p, size_t route, int32_t out_partition,
                              uint64_t barrier, uint64_t until);
/* Puts m on the retry list, due in delay_ms. */
void kd_pl_msg_retry(kd_pipeline *p, msg *m, uint64_t delay_ms);
/* The delay before m's next delivery attempt. */
uint64_t kd_pl_backoff_ms(const kd_pipeline *p, const msg *m);
/* Drops retries of partitions no longer assigned (all, with all_parts). */
void kd_pl_msg_abandon_retries(kd_pipeline *p, bool all_parts);
/* True when m's partition has messages waiting behind an orphan's scan: m
 * is to wait behind them (appended; `takeover`: to be taken over when its
 * turn comes, else produced). False when there is no gate: go on. */
bool kd_pl_msg_gated(kd_pipeline *p, msg *m, bool takeover);
/* m's orphan scan is not complete (or m, a gate's head, is to be tried
 * again at m->due_ms): m waits at its gate's head (opened for it if need
 * be), and the messages of its partition consumed after it wait behind it. */
void kd_pl_msg_gate_wait(kd_pipeline *p, msg *m);
/* True when messages of the partition wait at a gate. */
bool kd_pl_msg_gate_waiting(kd_pipeline *p, size_t route, int32_t partition);
/* Closes gate g, its waiting list empty or taken: the last gate moves into
 * its place. */
void kd_pl_msg_gate_close(kd_pipeline *p, gate *g);
/* Drops the waiting messages of ended ownerships (all, with all_parts). */
void kd_pl_msg_gates_abandon(kd_pipeline *p, bool all_parts);

/* pipeline_deliver.c */
/* Serves the producer for up to timeout_ms and settles its reports: a
 * delivered message's receipt waits on p->q.receipts, for the next job of
 * the store thread (kd_pl_ahead_turn) or kd_pl_receipts_write. */
void kd_pl_deliver_serve(kd_pipeline *p, int timeout_ms);

/* pipeline_failure.c */
/* Acts on a failed (or possibly failed) delivery of m (m->err, m->status):
 * kept and read downstream for when it may be there, else released and
 * retried, dead-lettered or marked stuck; abandoned when its ownership
 * ended. m is the retry stage's or freed after. */
void kd_pl_failure_settle(kd_pipeline *p, msg *m);

/* pipeline_retry.c */
/* The retries due this turn that another stage takes on (kd_pl_retry_due
 * fills it; the loop hands each list on, in this order). */
typedef struct kd_pl_due {
    msg_list reclaim;   /* claimed again: kd_pl_claim_list */
    msg_list uncertain; /* possibly persisted: kd_pl_resolve_lists */
    msg_list left;      /* met an ended ownership's note: kd_pl_resolve_lists */
} kd_pl_due;
/* Takes the retries that are due off p->q.retries: produces those to send
 * again, puts those to claim again or to read downstream for in *due
 * (zeroed by the caller), abandons those whose ownership ended; the others
 * wait on. */
void kd_pl_retry_due(kd_pipeline *p, kd_pl_due *due);

/* pipeline_receipts.c */
/* Writes the receipts of p->q.receipts lazily, one write a route; their
 * messages wait on p->q.unsynced (failed ones stay, retried after the store's
 * backoff). */
void kd_pl_receipts_write(kd_pipeline *p);
/* Takes the oldest max of p->q.receipts (all with max 0) into r, route by
 * route, for one lazy write a route; r->n is how many (0, leaving them,
 * while the store is failing and not due again, or when out of memory). */
void kd_pl_receipts_gather(kd_pipeline *p, kd_pl_receipts *r, size_t max);
/* One past the last of the receipts from first on that share a route. */
size_t kd_pl_receipts_run(const kd_pl_receipts *r, size_t first);
/* Acts on r's written completions: their messages are done (durable), or
 * wait on p->q.unsynced, or, not written, on p->q.receipts again. */
void kd_pl_receipts_apply(kd_pipeline *p, kd_pl_receipts *r, bool durable);
/* Makes the receipts waiting on p->q.unsynced durable (no disk sync when a
 * durable write since has done it) and settles their messages: those a
 * job's sync did not cover, and those written while draining. Each turn,
 * and while draining. */
void kd_pl_receipts_settle(kd_pipeline *p);
/* Writes m's receipt into buf; returns its length. */
size_t kd_pl_receipts_format(const kd_pipeline *p, const msg *m, char *buf, size_t size);
/* Writes a receipt naming where a message went and came from; returns its length. */
size_t kd_pl_receipts_text(const kd_pipeline *p, size_t route, int32_t out_part,
                           int64_t out_off, int64_t ts, int32_t src_part, int64_t src_off,
                           char *buf, size_t size);
/* Grows r to hold n receipts; false when out of memory (r unchanged). */
bool kd_pl_receipts_reserve(kd_pl_receipts *r, size_t n);
/* Frees r's arrays. */
void kd_pl_receipts_free(kd_pl_receipts *r);

/* pipeline_handover.c */
/* Reads the histories of the partitions due for a handover, together;
 * resumes a route's partitions once every one of them is learned. */
void kd_pl_handover_turn(kd_pipeline *p);
/* Queues a newly assigned partition for its handover; false when out of memory. */
bool kd_pl_handover_add(kd_pipeline *p, size_t route, int32_t partition);
/* The index of the partition's pending handover, or SIZE_MAX. */
static inline size_t kd_pl_handover_find(const kd_pipeline *p, size_t route,
                                         int32_t partition) {
    for (size_t i = 0; i < p->handover.n; i++)
        if (p->handover.v[i].route == route && p->handover.v[i].partition == partition)
            return i;
    return SIZE_MAX;
}
/* Drops pending handover i. */
void kd_pl_handover_remove(kd_pipeline *p, size_t i);
/* A message consumed while its partition's handover is pending (the
 * partition is paused: the consumer should not have handed it over): m
 * waits among the retries, unclaimed, until the handover is done
 * (kd_pl_retry_due), and the partition is paused again. Claimed before,
 * it would be forwarded even if the handover then read its key downstream. */
void kd_pl_handover_hold(kd_pipeline *p, msg *m);
/* Called while a scan runs: ticks the loop's health. */
void kd_pl_handover_progress(void *arg);

/* pipeline_gate.c */
/* Lets out of every gate what can go, in order. Each turn. */
void kd_pl_gate_turn(kd_pipeline *p);

/* pipeline_flow.c */
/* Pauses consumption while too much is in flight, resumes it below, holds
 * back partitions behind a stuck message; sets the memory gauges. Each turn. */
void kd_pl_flow_turn(kd_pipeline *p);
/* Holds back (pauses) a partition whose front message has
 * pipeline.max_inflight consumed ones behind it. After each one consumed. */
void kd_pl_flow_check_front(kd_pipeline *p, size_t route, int32_t partition);
/* True when a partition is to stay paused: the store fails or is slow, backpressure,
 * its handover is pending, or it is held back. */
bool kd_pl_flow_paused(const kd_pipeline *p, size_t route, int32_t partition);
/* Pauses or resumes every assigned partition as kd_pl_flow_paused() says. */
void kd_pl_flow_apply(kd_pipeline *p);
/* Pauses or resumes one partition of route. */
void kd_pl_flow_pause(kd_pipeline *p, size_t route, int32_t partition, bool pause);

/* pipeline_rebalance.c */
/* Starts the stop's one grace period (pipeline.shutdown_grace) when a stop
 * was asked and none began. Returns its end (mono ms), or 0 while no stop
 * was asked. */
static inline uint64_t kd_pl_stop_deadline(kd_pipeline *p) {
    if (atomic_load(&p->stop) && !p->stop_deadline)
        p->stop_deadline = kd_mono_ms() + p->cfg->shutdown_grace_ms;
    return p->stop_deadline;
}

/* Serves the producer until nothing is in flight or deadline_ms (monotonic). */
void kd_pl_rebalance_drain(kd_pipeline *p, uint64_t deadline_ms);
/* librdkafka's rebalance callback. */
void kd_pl_rebalance_cb(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                        rd_kafka_topic_partition_list_t *parts, void *opaque);
/* Stores the commit points that moved; the consumer commits them. */
void kd_pl_rebalance_store_offsets(kd_pipeline *p);
/* pipeline_own.c */
/* Ends this ownership of a partition: its offsets are forgotten (no
 * message of it is produced or settled as ours from now on), its pending
 * handover dropped. */
void kd_pl_own_end(kd_pipeline *p, size_t route, int32_t partition);
/* True when the group took this consumer's assignment
 * (rd_kafka_assignment_lost: its session expired, or max.poll.interval.ms
 * passed without a poll). Every ownership then ends at once, before the
 * revoke callback says so: nothing more is produced for those partitions,
 * and their messages in hand are dropped for their next owner. */
bool kd_pl_own_lost(kd_pipeline *p);

#endif /* KD_PIPELINE_INT_H */
