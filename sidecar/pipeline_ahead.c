/*
 * kdedup - the store thread: a batch's claims, and the receipts waiting
 * for a store write, are written by a thread of their own while the
 * pipeline produces the batch before and consumes the one after.
 *
 * A job is one turn's store work: the receipts of the deliveries reported
 * so far, written lazily, then the claims of the batch just consumed, a
 * synced write that makes those receipts durable too. Each turn the
 * pipeline waits for last turn's job, hands over this turn's, and only
 * then acts on the finished one (sends its messages, settles its
 * receipts), so the store thread writes while the pipeline does the Kafka
 * work. The store sees the jobs in turn order, and a job's claims are
 * acted on in consumption order, after every earlier batch's.
 *
 * A decision is acted on a turn after it was made, and in between the
 * pipeline may have changed what it said (released a claim whose delivery
 * failed, completed one, taken one over). That is safe because no decision
 * is trusted further than it was before: a claim "in flight" for this run
 * is checked against the held claims when acted on, and one no live
 * message holds goes through kd_pl_claim_takeover, which claims the key afresh;
 * a claim won is held, or found held by a message that took the key over
 * meanwhile (then this one is its duplicate). Anything that must see every
 * claim made (a revoke, the stop) finishes the job first.
 *
 * The loop never waits for the store thread longer than STALL_SLICE_MS at
 * once. A write that takes longer (a slow disk) stalls consumption, not
 * the loop: it goes on turning, ticking its health and serving the
 * producer. Once the write has been under way for a quarter of
 * max.poll.interval.ms (STALL_PAUSE_MAX_MS at most), the partitions are
 * paused and the loop polls the consumer too, so that the member stays in
 * its group and serves its rebalances (a poll of paused partitions returns
 * none of their messages) and no other replica is given partitions whose
 * batch is still to be produced. Not sooner: librdkafka
 * drops a paused partition's prefetched messages and fetches them again on
 * resume, so a pause for every write a little slower than a slice would
 * fetch the backlog over and over (each cost tens of millions of
 * instructions in `make bench-instructions`, under valgrind's slowdown).
 * Should the group take them all the same (a lost session, or a wait that
 * cannot poll, as at the stop), the job is acted on only after
 * rd_kafka_assignment_lost() was asked: the messages of an ended ownership
 * are dropped for their next owner, never produced.
 */
#include "sidecar/log.h"
#include "sidecar/pipeline_int.h"

#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <time.h>

static bool has_store_work(const kd_pl_work *w) {
    return w->nclaims || w->receipts.n;
}

/* A job on the store thread: the receipts, lazily, a write per route; then
 * the claims, a synced write per route, which makes the receipts durable
 * too; then, for the receipts, a sync, which costs nothing when a claim
 * write covered them (and syncs them when no claim was written). */
static void job_write(kd_pipeline *p, kd_pl_work *w) {
    kd_pl_receipts *r = &w->receipts;

    for (size_t first = 0, end; first < r->n; first = end) {
        end = kd_pl_receipts_run(r, first);
        kd_pl_store_complete_write(p, r->msgs[first]->route, r->c + first, end - first,
                                   true);
    }
    for (size_t first = 0, end; first < w->nclaims; first = end) {
        end = kd_pl_claim_run(w->claim_route, w->nclaims, first);
        kd_pl_store_claim_write(p, w->claim_route[first], w->claims + first, end - first,
                                w->now);
    }
    /* a failure is met again by kd_pl_receipts_settle */
    w->receipts_durable = r->n && kd_store_sync(p->store) == KD_OK;
}

static void *store_thread(void *arg) {
    kd_pipeline *p = arg;
    kd_pl_ahead *a = &p->ahead;

    prctl(PR_SET_NAME, "kdedup:store", 0, 0, 0); /* as top and perf name it */
    pthread_mutex_lock(&a->lock);
    for (;;) {
        while (!a->queued && !a->quit)
            pthread_cond_wait(&a->cond, &a->lock);
        if (a->quit)
            break;
        pthread_mutex_unlock(&a->lock);
        job_write(p, &a->job);
        pthread_mutex_lock(&a->lock);
        a->queued = false;
        a->done = true;
        pthread_cond_broadcast(&a->cond);
    }
    pthread_mutex_unlock(&a->lock);
    return NULL;
}

static bool work_grow(kd_pl_work *w, size_t n) {
    msg **msgs = realloc(w->msgs, n * sizeof(*msgs));
    kd_claim *claims;
    size_t *claim_of, *claim_route;

    if (msgs)
        w->msgs = msgs;
    claims = msgs ? realloc(w->claims, n * sizeof(*claims)) : NULL;
    if (claims)
        w->claims = claims;
    claim_of = claims ? realloc(w->claim_of, n * sizeof(*claim_of)) : NULL;
    if (claim_of)
        w->claim_of = claim_of;
    claim_route = claim_of ? realloc(w->claim_route, n * sizeof(*claim_route)) : NULL;
    if (claim_route)
        w->claim_route = claim_route;
    return claim_route != NULL;
}

static void work_free(kd_pl_work *w) {
    free(w->msgs);
    free(w->claims);
    free(w->claim_of);
    free(w->claim_route);
    kd_pl_receipts_free(&w->receipts);
}

bool kd_pl_ahead_grow(kd_pipeline *p, size_t n) {
    kd_pl_ahead_finish(
        p, UINT64_MAX); /* the job's arrays are the store thread's till then */
    return work_grow(&p->ahead.job, n) && work_grow(&p->ahead.acted, n);
}

bool kd_pl_ahead_init(kd_pipeline *p) {
    kd_pl_ahead *a = &p->ahead;
    pthread_condattr_t attr;

    if (!kd_pl_ahead_grow(p, (size_t)p->cfg->batch_max))
        return false;

    pthread_mutex_init(&a->lock, NULL);
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC); /* timed waits on kd_mono */
    pthread_cond_init(&a->cond, &attr);
    pthread_condattr_destroy(&attr);
    a->started = pthread_create(&a->thread, NULL, store_thread, p) == 0;
    if (!a->started) {
        pthread_cond_destroy(&a->cond);
        pthread_mutex_destroy(&a->lock);
    }
    return a->started;
}

void kd_pl_ahead_destroy(kd_pipeline *p) {
    kd_pl_ahead *a = &p->ahead;

    if (a->started) {
        pthread_mutex_lock(&a->lock);
        a->quit = true;
        pthread_cond_broadcast(&a->cond);
        pthread_mutex_unlock(&a->lock);
        pthread_join(a->thread, NULL);
        pthread_cond_destroy(&a->cond);
        pthread_mutex_destroy(&a->lock);
        a->started = false;
    }
    work_free(&a->job);
    work_free(&a->acted);
}

/* True once the job handed over is written (at once when it has no store
 * work); waits up to timeout_ms for it. */
static bool job_written(kd_pl_ahead *a, int timeout_ms) {
    uint64_t until_us = kd_mono_us() + (uint64_t)timeout_ms * 1000u;
    struct timespec ts = {.tv_sec = (time_t)(until_us / 1000000u),
                          .tv_nsec = (long)(until_us % 1000000u) * 1000};
    bool done;

    if (!a->pending || !has_store_work(&a->job))
        return true;
    pthread_mutex_lock(&a->lock);
    while (!a->done && timeout_ms > 0 &&
           pthread_cond_timedwait(&a->cond, &a->lock, &ts) == 0)
        ;
    done = a->done;
    pthread_mutex_unlock(&a->lock);
    return done;
}

/* Takes the job handed over, written: it becomes a->acted. */
static void job_take(kd_pl_ahead *a) {
    kd_pl_work done;

    if (has_store_work(&a->job)) {
        pthread_mutex_lock(&a->lock);
        a->done = false;
        pthread_mutex_unlock(&a->lock);
    }
    a->pending = false;
    done = a->job;
    a->job = a->acted;
    a->acted = done;
}

/* Makes p->batch.msgs[0..n) and the waiting receipts a->job; hands it to
 * the store thread when it has store work. */
static void job_start(kd_pipeline *p, size_t n) {
    kd_pl_ahead *a = &p->ahead;
    kd_pl_work *w = &a->job;
    msg **msgs = w->msgs;

    w->msgs = p->batch.msgs; /* the poll batch's array, swapped */
    p->batch.msgs = msgs;
    w->n = n;
    w->now = kd_wall_ms();
    w->failures_since = p->health.failures;
    w->receipts_durable = false; /* the store thread's to say */
    w->nclaims =
        kd_pl_claim_gather(p, w->msgs, n, w->claims, w->claim_of, w->claim_route);
    /* at most two batches' worth: more than a turn brings, so none wait for long,
     * and the job's receipt arrays stay bounded */
    kd_pl_receipts_gather(p, &w->receipts, 2 * (size_t)p->cfg->batch_max);
    if (!n && !w->receipts.n)
        return;
    a->pending = true;
    if (!has_store_work(w))
        return;
    a->handed_ms = kd_mono_ms();
    a->seq++;
    pthread_mutex_lock(&a->lock);
    a->queued = true;
    pthread_cond_broadcast(&a->cond);
    pthread_mutex_unlock(&a->lock);
}

/* Drops the messages of w whose ownership ended while their claims were
 * written (a revoke that could not wait for the write, a lost assignment):
 * they are their partition's next owner's, never produced from here. A
 * claim the job won for one is released, as kd_pl_msg_abandon does, or
 * left as it is when the key is held by a message of this run; one that
 * replaced another run's expired claim is first resolved from downstream
 * (kd_pl_claim_dropped; this run's own claims never expire for it). The
 * others keep their order. */
static void drop_ended(kd_pipeline *p, kd_pl_work *w) {
    size_t kept = 0;

    for (size_t i = 0; i < w->n; i++) {
        msg *m = w->msgs[i];

        if (msg_live(p, m)) {
            w->msgs[kept] = m;
            w->claim_of[kept++] = w->claim_of[i];
            continue;
        }
        if (m->kind == MSG_DEDUP) {
            kd_claim *c = &w->claims[w->claim_of[i]];

            m->claimed = c->err == KD_OK && c->decision.state == KD_CLAIMED &&
                         !kd_held_find(p->keys.held, m->route, m->key, m->key_len);
            kd_decision_clear(&c->decision);
            if (m->claimed && c->expired && kd_pl_claim_dropped(p, m, c))
                continue; /* its delivery is downstream: m settled */
        }
        kd_pl_msg_abandon(p, m);
    }
    w->n = kept;
}

/* Acts on a->acted: the store's health, then its receipts, then every
 * message of its batch in consumption order; first, whether the group
 * still counts this consumer in. */
static void act(kd_pipeline *p) {
    kd_pl_work *w = &p->ahead.acted;
    kd_pl_receipts *r = &w->receipts;

    bool wrote = w->receipts_durable || w->nclaims;

    kd_pl_own_lost(p); /* ends every ownership when the group took them */
    for (size_t first = 0, end; first < r->n; first = end) {
        end = kd_pl_receipts_run(r, first);
        kd_pl_store_complete_health(p, r->msgs[first]->route, r->c + first, end - first,
                                    true);
    }
    for (size_t first = 0, end; first < w->nclaims; first = end) {
        end = kd_pl_claim_run(w->claim_route, w->nclaims, first);
        kd_pl_store_claim_health(p, w->claim_route[first], w->claims + first, end - first,
                                 false);
    }
    /* The job's writes all went through, and no failure was seen since it
     * was handed over (its successes would be older news): the store works. */
    if (wrote && p->health.failures == w->failures_since)
        kd_pl_store_ok(p);
    kd_pl_receipts_apply(p, r, w->receipts_durable);
    drop_ended(p, w);
    kd_pl_claim_act(p, w->msgs, w->n, w->claims, w->claim_of);
    w->n = w->nclaims = 0;
}

/* The write that stalled consumption is done: it resumes. */
static void stall_over(kd_pipeline *p) {
    uint64_t since = atomic_exchange(&p->health.slow_since, 0);

    if (!since)
        return;
    KD_INFO("the store thread's write is done after %llums: consumption resumes",
            (unsigned long long)(kd_mono_ms() - p->ahead.handed_ms));
    kd_pl_flow_apply(p);
}

bool kd_pl_ahead_wait(kd_pipeline *p, int timeout_ms) {
    return job_written(&p->ahead, timeout_ms);
}

/* How long a write may be under way before consumption pauses. */
static uint64_t stall_pause_ms(const kd_pipeline *p) {
    uint64_t ms = (uint64_t)p->max_poll_ms / STALL_PAUSE_POLLS;

    return ms < STALL_SLICE_MS       ? STALL_SLICE_MS
           : ms > STALL_PAUSE_MAX_MS ? STALL_PAUSE_MAX_MS
                                     : ms;
}

bool kd_pl_ahead_stall(kd_pipeline *p) {
    uint64_t now = kd_mono_ms();

    if (atomic_load(&p->health.slow_since))
        return true;
    if (now - p->ahead.handed_ms < stall_pause_ms(p))
        return false;
    KD_WARN("store slow: a write has been under way for %llums; consumption is paused "
            "until it is done (the loop turns on, so the group keeps this member)",
            (unsigned long long)(now - p->ahead.handed_ms));
    atomic_store(&p->health.slow_since, now ? now : 1);
    kd_pl_flow_apply(p);
    return true;
}

void kd_pl_ahead_turn(kd_pipeline *p, size_t n) {
    kd_pl_ahead *a = &p->ahead;
    bool finished = a->pending;

    if (finished) {
        while (!job_written(a, STALL_SLICE_MS)) /* kd_pl_ahead_wait said it is */
            ;
        job_take(a);
        stall_over(p);
    }
    job_start(p, n);
    if (finished)
        act(p);
    if (a->pending && !has_store_work(&a->job)) { /* nothing to wait for: now */
        job_take(a);
        act(p);
    }
}

bool kd_pl_ahead_finish(kd_pipeline *p, uint64_t deadline_ms) {
    kd_pl_ahead *a = &p->ahead;

    if (!a->pending)
        return true;
    while (!job_written(a, STALL_SLICE_MS)) {
        if (kd_mono_ms() >= deadline_ms)
            return false;
        kd_pl_deliver_serve(p, 0); /* ticks the loop's health too */
    }
    job_take(a);
    stall_over(p);
    act(p);
    return true;
}
