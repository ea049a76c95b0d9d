/*
 * kdedup - the store thread's job (pipeline_ahead.c): the job the loop
 * hands it, the receipts such a job writes, and what the rest of the
 * pipeline calls of that file.
 * Private to the pipeline: pipeline_int.h includes it (its file map says
 * what each file does).
 *
 * Threads. Two touch these structs, the loop and the store thread (see
 * pipeline_int.h, "Threads"):
 *   the loop          fills a job (kd_pl_work: the poll batch's messages,
 *                     their claims' keys, the receipts gathered) and hands
 *                     it over; acts on p->ahead.acted, the job done; alone
 *                     reads and writes thread, started, pending, seq and
 *                     handed_ms. A kd_pl_receipts outside a job
 *                     (p->receipts_now) is the loop's alone.
 *   the store thread  p->ahead.job while it is handed over (from queued
 *                     until the loop takes it back): it reads it, and
 *                     writes only the claims' decisions and errors, the
 *                     completions' errors and receipts_durable. Meanwhile
 *                     the loop reads only the claims' keys and routes
 *                     (kd_pl_ahead_claiming), never what the thread writes.
 *   the hand-over     queued, done and quit, under p->ahead.lock, with
 *                     p->ahead.cond: the loop sets queued (a job handed
 *                     over) or quit; the store thread clears queued and
 *                     sets done once the job is written; the loop waits
 *                     for done (kd_pl_ahead_wait, _finish), clears it and
 *                     swaps job and acted. The lock is never held across a
 *                     store write.
 */
#ifndef KD_PIPELINE_JOB_H
#define KD_PIPELINE_JOB_H

#include "dedup/dedup.h"
#include "sidecar/pipeline_msg.h"

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct kd_pipeline kd_pipeline; /* pipeline.h */

#define STALL_SLICE_MS 200 /* the longest the loop waits for the store thread at once */
#define STALL_PAUSE_MAX_MS 5000 /* a write under way this long pauses consumption... */
#define STALL_PAUSE_POLLS 4     /* ...or a max.poll.interval.ms / this, if shorter */

/* Receipts gathered for one store write a route: their messages, the
 * completions and the receipts' text (RECEIPT_MAX each), cap long. */
typedef struct kd_pl_receipts {
    msg **msgs;
    kd_completion *c;
    char *text;
    size_t n, cap;
} kd_pl_receipts;

/* One batch's store work: the receipts waiting when it was handed over
 * (written first, lazily), then its messages' claims. The message and
 * claim arrays are batch_max long, like the poll batch's. */
typedef struct kd_pl_work {
    msg **msgs;
    size_t n, nclaims;
    kd_claim *claims;
    size_t *claim_of, *claim_route;
    uint64_t now; /* wall ms: the claims' time */
    kd_pl_receipts receipts;
    bool receipts_durable;   /* a synced write or sync after them succeeded */
    uint64_t failures_since; /* p->health.failures when handed over */
} kd_pl_work;

/* The store thread and the work it is given (pipeline_ahead.c). */
typedef struct kd_pl_ahead {
    pthread_t thread;
    bool started;
    pthread_mutex_t lock;
    pthread_cond_t cond;     /* on CLOCK_MONOTONIC */
    bool queued, done, quit; /* under lock */
    bool pending;            /* the pipeline's: job handed over, not yet acted on */
    uint64_t seq;            /* the pipeline's: jobs handed over so far */
    uint64_t handed_ms;      /* mono: when the job was handed over */
    kd_pl_work job;          /* the store thread's while pending */
    kd_pl_work acted;        /* the last job done, being acted on */
} kd_pl_ahead;

/* Starts the store thread; false when it cannot be. */
bool kd_pl_ahead_init(kd_pipeline *p);
/* Stops and joins the store thread, and frees its arrays. */
void kd_pl_ahead_destroy(kd_pipeline *p);
/* Waits up to timeout_ms for the job handed over to be written. True when
 * no job is being written: kd_pl_ahead_turn may go on. */
bool kd_pl_ahead_wait(kd_pipeline *p, int timeout_ms);
/* A turn's store work, once kd_pl_ahead_wait said the job handed over last
 * turn is written: hands over the next (p->batch.msgs[0..n)'s claims,
 * after the waiting receipts), then acts on the finished job while the
 * store thread works: receipts' messages are done (or wait on p->q.unsynced
 * when the job could not sync them), and every message of its batch still
 * owned is sent, settled or retried as kd_pl_claim_batch would (the others are
 * dropped). The poll batch's array swaps with the job's. */
void kd_pl_ahead_turn(kd_pipeline *p, size_t n);
/* The store thread's write outlasted a wait of the loop. Once it has been
 * under way for a quarter of max.poll.interval.ms (STALL_PAUSE_MAX_MS at
 * most), consumption pauses (every partition; /readyz says why) until it
 * is done, while the loop turns on without it. Returns whether it is
 * paused: only then may the loop poll the consumer. */
bool kd_pl_ahead_stall(kd_pipeline *p);
/* Waits for the job handed over, if any, until deadline_ms (mono;
 * UINT64_MAX: however long it takes), ticking the loop's health and
 * serving the producer (never polling the consumer), then acts on it:
 * before anything that must see every claim made (a revoke, the stop).
 * False when the deadline came first (the job stays handed over). */
bool kd_pl_ahead_finish(kd_pipeline *p, uint64_t deadline_ms);
/* Grows the jobs' batch arrays to n (finishing the job handed over first);
 * false when out of memory. */
bool kd_pl_ahead_grow(kd_pipeline *p, size_t n);

#endif /* KD_PIPELINE_JOB_H */
