/*
 * kdedup - the pipeline's handover: a newly assigned partition's history read
 * from the downstream topic before it is consumed (see recovery.h).
 */
#include "sidecar/headers.h"
#include "sidecar/log.h"
#include "sidecar/pipeline_int.h"
#include "sidecar/receipt.h"

#include <stdlib.h>
#include <string.h>

typedef struct learning {
    kd_pipeline *p;
    size_t route;
    int32_t src_partition, out_partition;
} learning;

/* What the handover does with a record of a key, given the claim it made. */
typedef enum verdict {
    LEARN, /* the key's delivery: complete the key with it */
    SKIP,  /* completed already, failed, or not this claim's delivery */
    /* Claimed here, but the record is older than what let the key go: */
    UNCLAIM,  /* an expired claim the store held (made after the record) */
    REFORGET, /* an operator's forget */
    /* Either releases that claim with a forget's tombstone dated when the key
     * was let go (kd_dedup_release_forgotten), so that the record read again
     * (a batch retried, a handover begun again from its mark) is judged the
     * same, not learned: a release's tombstone would say nothing of it. */
} verdict;

/* True when rec was forwarded before `at` (wall ms; 0: never), by more than
 * a clock step: the delivery of something older. */
static bool forwarded_before(const kd_history_rec *rec, uint64_t at) {
    return at && !kd_recovery_forwarded_since(rec->forwarded_at, at);
}

/* What to do with rec, given c: the handover's claim of rec's key. */
static verdict judge(const kd_claim *c, const kd_history_rec *rec) {
    if (c->err != KD_OK || c->decision.state == KD_COMPLETED)
        return SKIP;
    if (c->decision.state == KD_IN_FLIGHT)
        /* A claim made after the record was forwarded (a copy consumed after
         * a forget, or after the key expired) is not completed by it, as
         * recovery would not: that claim is resolved when its copy comes. A
         * record without its forwarding time may be anyone's. */
        return rec->stamped && forwarded_before(rec, c->decision.timestamp_ms) ? SKIP
                                                                               : LEARN;
    /* Forgotten since (DELETE /v1/keys): the operator let the key go after
     * this record. A release (a delivery that failed here, while another
     * replica forwarded the key) says nothing of the record: learned. */
    if (forwarded_before(rec, c->forgotten_at))
        return REFORGET;
    if (c->expired && rec->stamped && forwarded_before(rec, c->expired_at))
        return UNCLAIM; /* older than the expired claim just taken over */
    return LEARN;
}

/* Lets go of the handover's claim c, judged v (UNCLAIM or REFORGET): as of
 * the expired claim's time, or the forget's (neither 0: judge). */
static kd_err let_go(kd_dedup *d, const kd_claim *c, verdict v) {
    return kd_dedup_release_forgotten(d, c->key, c->key_len,
                                      v == REFORGET ? c->forgotten_at : c->expired_at);
}

/* When the handover's claim of rec's key says it was made: when rec was
 * forwarded (never later than now), so that a handover cut between its
 * claim and its completion (a store error, a crash) and read again, here or
 * by the next run, finds its own claim no newer than the record, and learns
 * it (judge, and the orphan lookup of recovery). A record without its
 * forwarding time is learned whatever the claim's time: claimed now. */
static uint64_t learned_at(const kd_history_rec *rec, uint64_t now) {
    if (!rec->stamped || rec->forwarded_at <= 0)
        return 0;
    return (uint64_t)rec->forwarded_at < now ? (uint64_t)rec->forwarded_at : now;
}

/* Records the keys of deliveries read downstream as completed: claimed
 * and completed when the store did not know them; completed when a claim
 * holds them that their delivery may be. A key met twice is decided by its
 * newest record: the records are claimed newest first, so that it leads
 * and the older ones follow it. False when the store failed. */
static bool learn_deliveries(learning *l, const kd_history_rec *recs, size_t n) {
    kd_pipeline *p = l->p;
    size_t ndone = 0, nlearned = 0;

    uint64_t now = kd_wall_ms();

    if (!kd_pl_receipts_reserve(&p->receipts_now, n))
        return false;
    for (size_t i = 0; i < n; i++) {
        const kd_history_rec *rec = &recs[n - 1 - i];

        p->batch.claims[i] = (kd_claim){
            .key = rec->key, .key_len = rec->key_len, .claimed_at = learned_at(rec, now)};
    }
    kd_pl_store_claim_timed(p, l->route, p->batch.claims, n, now);
    for (size_t i = 0; i < n; i++)
        if (p->batch.claims[i].err ==
            KD_ERR_STORE) { /* kd_pl_store_failed: kd_pl_store_claim_timed */
            for (size_t j = 0; j < n; j++)
                kd_decision_clear(&p->batch.claims[j].decision);
            return false;
        }
    for (size_t i = 0; i < n; i++) {
        kd_claim *c = &p->batch.claims[i];
        const kd_history_rec *rec = &recs[n - 1 - i];
        char *text = p->receipts_now.text + ndone * RECEIPT_MAX;
        verdict v = judge(c, rec);

        if (v != LEARN && v != SKIP && let_go(p->routes[l->route].dedup, c, v) != KD_OK) {
            kd_pl_store_failed(p, l->route, "release of a key not learned");
            for (size_t j = i; j < n; j++)
                kd_decision_clear(&p->batch.claims[j].decision);
            return false;
        }
        if (v == LEARN) {
            if (c->decision.state == KD_CLAIMED)
                nlearned++;
            else if (c->owner != p->boot_id)
                RCOUNT(p, l->route, orphans_found);
            p->receipts_now.c[ndone++] = (kd_completion){
                .key = c->key,
                .key_len = c->key_len,
                .receipt = text,
                .receipt_len = kd_pl_receipts_text(
                    p, l->route, l->out_partition, rec->offset, rec->timestamp,
                    l->src_partition, rec->src_offset, text, RECEIPT_MAX),
                .claim_seq = c->seq, /* claimed here: not read again */
                .claim_version = c->version,
                .claim_hash = c->hash};
        }
        kd_decision_clear(&c->decision);
    }
    if (ndone)
        kd_pl_store_complete_timed(p, l->route, p->receipts_now.c, ndone, false);
    for (size_t i = 0; i < ndone; i++)
        if (p->receipts_now.c[i].err == KD_ERR_STORE)
            return false;
    atomic_fetch_add(&kd_metrics_route(p->metrics, l->route)->handover_keys, nlearned);
    return true;
}

/* A forget record read at `offset` of the downstream partition. */
typedef struct forget_at {
    const learning *l;
    int64_t offset;
} forget_at;

/* True when a completion came from a record before the forget record in
 * the same downstream partition: the forget is newer, and undoes it. A
 * completion from elsewhere (another partition, or a receipt that does
 * not parse) is left alone. */
static bool forget_covers(void *arg, const kd_decision *dec) {
    const forget_at *f = arg;
    const kd_route *r = f->l->p->routes[f->l->route].cfg;
    kd_receipt rc;

    return kd_receipt_parse(dec->receipt, dec->receipt_len, &rc) &&
           rc.to_len == strlen(r->to) && !memcmp(rc.to, r->to, rc.to_len) &&
           rc.to_partition == f->l->out_partition && rc.to_offset < f->offset;
}

/* Replays a forget record: the key is forgotten here too, as of when the
 * operator forgot it. False when the store failed. */
static bool learn_forget(learning *l, const kd_history_rec *rec) {
    kd_pipeline *p = l->p;
    forget_at f = {l, rec->offset};
    kd_forget_result res = KD_FORGET_ABSENT;
    kd_err err = KD_ERR_SEQUENCE_CONFLICT;

    for (int tries = 0; tries < TAKEOVER_TRIES && err == KD_ERR_SEQUENCE_CONFLICT;
         tries++)
        err =
            kd_dedup_forget_replay(p->routes[l->route].dedup, rec->key, rec->key_len,
                                   (uint64_t)rec->forwarded_at, forget_covers, &f, &res);
    if (err != KD_OK) {
        kd_pl_store_failed(p, l->route, "a forget read downstream");
        return false;
    }
    if (res == KD_FORGET_DONE) {
        RCOUNT(p, l->route, handover_forgets);
        KD_INFO("handover: %s/%" PRId32 "@%" PRId64 " forgets a key (DELETE /v1/keys "
                "elsewhere): its next copy is forwarded again",
                p->routes[l->route].cfg->to, l->out_partition, rec->offset);
    }
    return true;
}

/* Takes a batch of the history: deliveries learned, forget records
 * replayed, in their order downstream. False when the store failed. */
static bool learn(void *arg, const kd_history_rec *recs, size_t n) {
    learning *l = arg;
    size_t from = 0;

    for (size_t i = 0; i <= n; i++) {
        if (i < n && !recs[i].forget)
            continue;
        if (i > from && !learn_deliveries(l, recs + from, i - from))
            return false;
        if (i < n && !learn_forget(l, &recs[i]))
            return false;
        from = i + 1;
    }
    return true;
}

bool kd_pl_handover_add(kd_pipeline *p, size_t route, int32_t partition) {
    handover *grown;

    if (kd_pl_handover_find(p, route, partition) != SIZE_MAX)
        return true;
    if (p->handover.n == p->handover.cap) {
        size_t cap = p->handover.cap ? p->handover.cap * 2 : 16;

        if (!(grown = realloc(p->handover.v, cap * sizeof(*grown))))
            return false;
        p->handover.v = grown;
        p->handover.cap = cap;
    }
    p->handover.v[p->handover.n++] = (handover){.route = route, .partition = partition};
    GCOUNT(p, handover_pending, 1);
    return true;
}

void kd_pl_handover_remove(kd_pipeline *p, size_t i) {
    if (p->handover.v[i].backoff_ms)
        atomic_fetch_sub(&p->handover.failing, 1);
    memmove(&p->handover.v[i], &p->handover.v[i + 1],
            (p->handover.n - i - 1) * sizeof(*p->handover.v));
    p->handover.n--;
    GCOUNT(p, handover_pending, (uint64_t)-1);
}

/* True while a handover of route has its history still to read. */
static bool route_learning(const kd_pipeline *p, size_t route) {
    for (size_t i = 0; i < p->handover.n; i++)
        if (p->handover.v[i].route == route && !p->handover.v[i].learned)
            return true;
    return false;
}

/* Resumes the partitions whose history was learned, once every partition
 * of their route waiting for a handover has been learned too: a key
 * forwarded from one partition and sent again onto another is known
 * before either is consumed (RELIABILITY.md, "Keys spread over
 * partitions"). */
static void release_learned(kd_pipeline *p) {
    for (size_t i = p->handover.n; i-- > 0;) {
        size_t route = p->handover.v[i].route;
        int32_t partition = p->handover.v[i].partition;

        if (!p->handover.v[i].learned || route_learning(p, route))
            continue;
        kd_pl_handover_remove(p, i);
        if (!kd_pl_flow_paused(p, route, partition))
            kd_pl_flow_pause(p, route, partition, false);
    }
}

/* Handover h's read failed: it is tried again after a backoff. */
static void handover_failed(kd_pipeline *p, handover *h) {
    RCOUNT(p, h->route, handover_failures);
    if (!h->backoff_ms)
        atomic_fetch_add(&p->handover.failing, 1);
    h->backoff_ms = h->backoff_ms ? h->backoff_ms * 2 : HANDOVER_BACKOFF_MIN_MS;
    if (h->backoff_ms > HANDOVER_BACKOFF_MAX_MS)
        h->backoff_ms = HANDOVER_BACKOFF_MAX_MS;
    h->due_ms = kd_mono_ms() + h->backoff_ms;
    KD_WARN("handover of %s/%" PRId32 " failed: its route's new partitions wait; again "
            "in %llums",
            p->routes[h->route].cfg->from, h->partition,
            (unsigned long long)h->backoff_ms);
}

/* Reads the histories of every partition due, together (a step a turn),
 * records them, and resumes a route's partitions once all are learned. */
void kd_pl_handover_turn(kd_pipeline *p) {
    uint64_t now = kd_mono_ms();
    kd_recovery_stats before, after;
    kd_history_job *jobs;
    learning *ls;
    size_t *of, n = 0;

    if (!p->handover.n || (kd_pl_store_failing(p) && now < p->health.retry_at))
        return;
    jobs = calloc(p->handover.n, sizeof(*jobs));
    ls = calloc(p->handover.n, sizeof(*ls));
    of = calloc(p->handover.n, sizeof(*of));
    if (!jobs || !ls || !of)
        goto out; /* tried again next turn */
    for (size_t i = 0; i < p->handover.n; i++) {
        handover *h = &p->handover.v[i];

        if (h->learned || h->due_ms > now)
            continue;
        ls[n] = (learning){p, h->route, h->partition,
                           h->partition % p->routes[h->route].out_partitions};
        jobs[n] = (kd_history_job){.route = h->route,
                                   .src_partition = h->partition,
                                   .out_partition = ls[n].out_partition,
                                   .fn = learn,
                                   .arg = &ls[n],
                                   .cur = &h->cur};
        of[n++] = i;
    }
    kd_recovery_stats_get(p->recovery, &before);
    kd_recovery_histories(p->recovery, jobs, n, (size_t)p->cfg->batch_max);
    kd_recovery_stats_get(p->recovery, &after);
    GCOUNT(p, handover_records, after.handover_records - before.handover_records);
    GCOUNT(p, handover_us, after.handover_micros - before.handover_micros);
    GCOUNT(p, foreign, after.foreign - before.foreign);
    for (size_t j = 0; j < n; j++) {
        handover *h = &p->handover.v[of[j]];

        if (jobs[j].result == KD_HISTORY_FAILED) {
            handover_failed(p, h);
        } else if (jobs[j].result != KD_HISTORY_MORE) {
            if (h->backoff_ms)
                atomic_fetch_sub(&p->handover.failing, 1);
            h->backoff_ms = 0;
            h->learned = true;
        }
    }
out:
    free(jobs);
    free(ls);
    free(of);
    release_learned(p);
}

void kd_pl_handover_hold(kd_pipeline *p, msg *m) {
    size_t i = kd_pl_handover_find(p, m->route, m->rkm->partition);

    if (i != SIZE_MAX && !p->handover.v[i].early) { /* once a handover */
        p->handover.v[i].early = true;
        KD_WARN("%s/%" PRId32 "@%" PRId64 " consumed while the partition is paused for "
                "its handover: held, unclaimed, until the handover is done "
                "(kdedup_handover_early_total)",
                p->cfg->routes[m->route].from, m->rkm->partition, m->rkm->offset);
        kd_pl_flow_pause(p, m->route, m->rkm->partition, true);
    }
    RCOUNT(p, m->route, handover_early);
    m->early = true;
    kd_pl_msg_retry(p, m, EARLY_POLL_MS);
}

/* Called while a scan runs: the loop is busy, not stuck. */
void kd_pl_handover_progress(void *arg) {
    kd_pipeline *p = arg;

    atomic_store(&p->tick_ms, kd_mono_ms());
}
