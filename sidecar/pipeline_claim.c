/*
 * kdedup - the pipeline's claiming: a batch's keys in one store write, acted
 * on; takeovers of claims left by other runs and by ended ownerships, and
 * what is read downstream for them (file map: pipeline_int.h).
 */
#include "sidecar/keysrc.h"
#include "sidecar/log.h"
#include "sidecar/pipeline_int.h"

typedef enum orphan_result {
    ORPHAN_SETTLED, /* its delivery is downstream: m completed */
    ORPHAN_ABSENT,  /* not downstream: forward m */
    ORPHAN_UNKNOWN, /* cannot be told: forward m (at least once) */
    ORPHAN_LATER,   /* the scan is under way: ask again */
} orphan_result;

/* m's key is claimed by run `owner` at claimed_at (wall ms), and nobody is
 * delivering it any more. Reads the downstream partition m would have gone
 * to: if that claim's delivery is there, completes the claim with a receipt
 * naming that record and settles m. With `step`, reads one step of the
 * scan a turn (ORPHAN_LATER until it is complete); without, to its end. */
static orphan_result resolve_orphan(kd_pipeline *p, msg *m, uint64_t owner,
                                    uint64_t claimed_at, bool step) {
    int32_t part = m->rkm->partition % p->routes[m->route].out_partitions;
    kd_recovery_stats before;
    kd_recover_found f;
    kd_recover_result res;

    p->keys.last_orphan_ms = kd_mono_ms();
    kd_recovery_stats_get(p->recovery, &before);
    if (!step)
        kd_recovery_begin_turn(p->recovery, 0);
    res = kd_recovery_find(p->recovery, owner, m->route, part, m->key, m->key_len,
                           claimed_at, &f);
    if (!step)
        kd_recovery_begin_turn(p->recovery, p->cfg->scan_step_ms);
    kd_pl_resolve_count_scans(p, &before);
    if (res == KD_RECOVER_LATER)
        return step ? ORPHAN_LATER : ORPHAN_UNKNOWN; /* failing: tried again later */
    if (res != KD_RECOVER_FOUND)
        return res == KD_RECOVER_ABSENT ? ORPHAN_ABSENT : ORPHAN_UNKNOWN;
    size_t route = m->route; /* m is freed once settled */
    if (kd_pl_resolve_complete_found(p, m, part, &f))
        RCOUNT(p, route, orphans_found);
    return ORPHAN_SETTLED;
}

bool kd_pl_claim_dropped(kd_pipeline *p, msg *m, const kd_claim *c) {
    orphan_result res;

    RCOUNT(p, m->route, orphans_expired);
    res = resolve_orphan(p, m, c->expired_owner, c->expired_at, false);
    m->claimed = res == ORPHAN_ABSENT;
    return res == ORPHAN_SETTLED;
}

/* m met a claim of its key made by this run. Held by a live message, m is
 * a duplicate in flight. Held by a message of an ended ownership (the
 * partition was revoked and came back), its delivery's outcome is not
 * known yet: m waits for it. Held by no message, nobody in this run is
 * delivering it any more (its outcome was uncertain when its ownership
 * ended): it is an orphan like a dead run's; unless `ahead` (a claim m
 * did not make) and the batch the store thread is claiming has the key.
 * Returns true when m was settled or parked, false when the claim is to
 * be taken over. */
static bool own_claim(kd_pipeline *p, msg *m, bool ahead) {
    msg *holder = kd_held_find(p->keys.held, m->route, m->key, m->key_len);

    if (holder && msg_live(p, holder)) {
        RCOUNT(p, m->route, duplicates_in_flight);
        kd_pl_msg_done(p, m);
        return true;
    }
    if (!holder) {
        /* None holds it yet when the batch the store thread is claiming has
         * the key: the claim met may be that batch's, made and not yet
         * acted on. Taken over (released, claimed again), that batch's
         * message would be acted on with a claim the store no longer has,
         * and forwarded beside m (found by reading, after the transactional
         * chaos seed 58 wrote a key twice). m waits for that job only: one
         * handed over later (a key copied batch after batch) holds it no
         * longer, lest it wait for ever. Met with no job under way, the
         * wait is over: m may wait again for a later one (a retry of m, its
         * delivery failed and its claim released). */
        uint64_t job = ahead ? kd_pl_ahead_claiming(p, m->route, m->key, m->key_len) : 0;

        if (!job)
            m->parked_job = 0;
        if (!job || (m->parked_job && m->parked_job != job))
            return false;
        m->parked_job = job;
    }
    /* held by a message of an ended ownership, or by that job's */
    RCOUNT(p, m->route, parked);
    kd_pl_msg_retry(p, m, PARK_MS); /* claimed again then */
    return true;
}

typedef enum left_result {
    LEFT_NONE,    /* no note: resolve as any orphan */
    LEFT_SETTLED, /* found (m settled), or to be read again (m retried) */
    LEFT_ABSENT,  /* not downstream: claim and forward */
    LEFT_UNKNOWN, /* could not be read, again and again: forward (at least once) */
} left_result;

/* A claim of this run that no message holds: when an ended ownership's
 * possibly persisted delivery left it, reads the downstream partition that
 * delivery went to, from where it would have landed, a step a turn (m
 * waits for the next), and with every other message due that met a note
 * of the same partition (kd_pl_resolve_left: an ownership lost under load
 * leaves thousands, and each read alone asked the broker for the
 * partition's end and read it again, turn after turn, which held them for
 * minutes), unless m heads a gate. The claim is left as it is meanwhile
 * (this run's claims do not expire for it: kd_dedup_set_owner), so that a
 * stop leaves the next run its time, and the next run reads from there. */
static left_result resolve_left(kd_pipeline *p, msg *m) {
    left_claim *l = kd_pl_msg_left_find(p, m->route, m->key, m->key_len);
    int32_t part;
    kd_recovery_stats before;
    kd_recover_found f;
    kd_recover_result res;
    bool told;

    if (!l)
        return LEFT_NONE;
    part = l->out_partition;
    /* Reads that failed again and again for another copy (or ownership)
     * say nothing to m, which reads for itself; what a read found or did
     * not find is known, with a step or without. */
    if (l->result == KD_RECOVER_UNKNOWN && m->reads < UNCERTAIN_TRIES)
        l->result = KD_RECOVER_LATER;
    told = l->result != KD_RECOVER_LATER;
    /* Read only past the delivery's barrier (kd_pl_msg_barrier_set), so that a
     * late write is seen or fenced. */
    if (!told &&
        !kd_pl_msg_barrier_passed(p, m->route, part, l->barrier, l->barrier_until)) {
        kd_pl_msg_retry(p, m, BARRIER_POLL_MS);
        return LEFT_SETTLED;
    }
    if (!told && p->gate.passing != m) {
        m->left_read = true;
        kd_pl_msg_retry(p, m, 0);
        return LEFT_SETTLED;
    }
    if (told) { /* a read with others told */
        res = l->result;
        f = l->found;
    } else {
        p->keys.last_orphan_ms = kd_mono_ms();
        kd_recovery_stats_get(p->recovery, &before);
        kd_recover_ask a = {.key = m->key,
                            .key_len = m->key_len,
                            .from = l->scan_from,
                            .settle_to = l->scan_settle,
                            .sent_at_ms = l->sent_at_ms};

        res = kd_recovery_find_since(p->recovery, m->route, part, &a, &f);
        l->scan_from = a.from;
        l->scan_settle = a.settle_to;
        kd_pl_resolve_count_scans(p, &before);
    }
    if (res == KD_RECOVER_LATER) { /* read on from there next turn */
        kd_pl_msg_retry(p, m, 0);
        return LEFT_SETTLED;
    }
    if (res == KD_RECOVER_UNKNOWN && !told && ++m->reads < UNCERTAIN_TRIES) {
        kd_pl_msg_retry(p, m, 250u << (m->reads < 6 ? m->reads : 6));
        return LEFT_SETTLED;
    }
    kd_pl_msg_left_drop(p, l);
    if (res != KD_RECOVER_FOUND)
        return res == KD_RECOVER_ABSENT ? LEFT_ABSENT : LEFT_UNKNOWN;
    size_t route = m->route; /* m is freed once settled */
    if (kd_pl_resolve_complete_found(p, m, part, &f))
        RCOUNT(p, route, orphans_found);
    return LEFT_SETTLED;
}

/* m's key is claimed for m (c says how). Produces m, unless a message of
 * this run still holds the key (a claim the store lost) or the claim was
 * taken over an expired one (another run's: kd_dedup_set_owner) whose
 * delivery may have happened: that is looked up downstream first, like a
 * dead run's orphan. */
static void on_claimed(kd_pipeline *p, msg *m, const kd_claim *c) {
    m->claim_seq = c->seq;
    m->claim_version = c->version;
    memcpy(m->claim_hash, c->hash, sizeof(m->claim_hash));
    if (own_claim(p, m, false)) /* the claim is m's own */
        return;
    if (c->expired) {
        RCOUNT(p, m->route, orphans_expired);
        /* The claim just made replaced the expired one: its run and time
         * live only here, so it is resolved now, to the end, not a step a
         * turn: a stop between two steps would leave the next run a claim
         * newer than the delivery, which it would take for an older copy
         * and forward again. */
        orphan_result res = resolve_orphan(p, m, c->expired_owner, c->expired_at, false);

        if (res == ORPHAN_SETTLED)
            return;
        if (res == ORPHAN_ABSENT)
            RCOUNT(p, m->route, orphans_absent);
        else
            RCOUNT(p, m->route, orphans_reforwarded);
    }
    if (kd_pl_msg_hold(p, m))
        kd_pl_produce(p, m);
}

/* Claims m's key alone, taking over a claim that no live message of this
 * run holds: left by another run (a crash), or by an ended ownership of
 * this run whose delivery may or may not have landed. Resolved from the
 * downstream topic when it can be; else that claim is released and made
 * again under this run's id, and m forwarded. A claim that lost the race
 * for its stream and found the key absent (a release or a forget came
 * first) is made again; after TAKEOVER_TRIES, m is retried later. */
void kd_pl_claim_takeover(kd_pipeline *p, msg *m) {
    bool took_over = false, absent = false;

    for (int tries = 0; tries < TAKEOVER_TRIES; tries++) {
        kd_claim c = {.key = m->key,
                      .key_len = m->key_len,
                      .fingerprint = m->has_fp ? m->fp : NULL};
        kd_err err;

        kd_dedup_claim_batch(dedup_of(p, m), &c, 1, kd_wall_ms());
        if (c.err == KD_ERR_STORE) {
            kd_pl_store_failed(p, m->route, "claim");
            kd_pl_msg_retry(p, m, p->health.backoff_ms);
            return;
        }
        kd_pl_store_ok(p);
        if (c.err == KD_ERR_SEQUENCE_CONFLICT)
            continue; /* lost a race, and the key is absent again: claim again */
        if (c.err != KD_OK) {
            MSG_FIELDS(m, part, off);
            KD_LOG(KD_LOG_WARN, fields, "key cannot be deduplicated (%s): forwarding it",
                   kd_err_name(c.err));
            GCOUNT(p, collisions, 1);
            m->kind = MSG_PLAIN;
            kd_pl_produce(p, m);
            return;
        }
        if (c.decision.state != KD_CLAIMED &&
            kd_pl_conflict_judge(p, m, &c.decision, c.owner)) {
            kd_decision_clear(&c.decision);
            return;
        }
        kd_decision_clear(&c.decision);
        if (c.decision.state == KD_CLAIMED && took_over) {
            m->claim_seq = c.seq;
            m->claim_version = c.version;
            memcpy(m->claim_hash, c.hash, sizeof(m->claim_hash));
            if (!kd_pl_msg_hold(p, m))
                return; /* fatal; the offset stays pending */
            if (absent)
                RCOUNT(p, m->route, orphans_absent);
            else
                RCOUNT(p, m->route, orphans_reforwarded);
            kd_pl_produce(p, m);
            return;
        }
        if (c.decision.state == KD_CLAIMED) {
            on_claimed(p, m, &c);
            return;
        }
        if (c.decision.state == KD_COMPLETED) {
            RCOUNT(p, m->route, duplicates_completed);
            kd_pl_msg_done(p, m);
            return;
        }
        left_result left = LEFT_NONE;

        if (c.owner == p->boot_id && own_claim(p, m, true))
            return;
        if (c.owner == p->boot_id && !took_over && p->txn.init_since) {
            /* This run's claim, whose delivery may be in a transaction of
             * unknown outcome: the replacing producer's initialisation ends
             * it, and a read_committed read stops below it until then, so
             * it would not see that delivery (outside review, 2026-12-07;
             * as kd_pl_retry_due holds uncertain messages). */
            kd_pl_msg_retry(p, m, BARRIER_POLL_MS);
            return;
        }
        if (c.owner == p->boot_id && !took_over) {
            if ((left = resolve_left(p, m)) == LEFT_SETTLED)
                return;
            absent = left == LEFT_ABSENT;
        }
        if (!took_over && left == LEFT_NONE) {
            orphan_result res =
                resolve_orphan(p, m, c.owner, c.decision.timestamp_ms, true);

            if (res == ORPHAN_SETTLED)
                return;
            if (res == ORPHAN_LATER) { /* its scan goes on: m waits, in order */
                m->due_ms = 0;
                kd_pl_msg_gate_wait(p, m);
                return;
            }
            absent = res == ORPHAN_ABSENT;
        }
        err = kd_dedup_release_claim(dedup_of(p, m), m->key, m->key_len);
        if (err != KD_OK && err != KD_ERR_SEQUENCE_CONFLICT) {
            kd_pl_store_failed(p, m->route, "release of an orphaned claim");
            kd_pl_msg_retry(p, m, p->health.backoff_ms);
            return;
        }
        took_over = true;
    }
    kd_pl_msg_retry(p, m, kd_pl_backoff_ms(p, m));
}

/* Acts on the claim decision for m. */
static void on_claim(kd_pipeline *p, msg *m, kd_claim *c) {
    if (c->err == KD_ERR_STORE) {
        kd_pl_msg_retry(
            p, m, p->health.backoff_ms); /* kd_pl_store_failed: kd_pl_store_claim_timed */
    } else if (c->err == KD_ERR_SEQUENCE_CONFLICT) {
        kd_pl_claim_takeover(p, m); /* lost a race to a release or forget: claim again */
    } else if (c->err != KD_OK) {
        MSG_FIELDS(m, part, off);
        KD_LOG(KD_LOG_WARN, fields, "key cannot be deduplicated (%s): forwarding it",
               kd_err_name(c->err));
        GCOUNT(p, collisions, 1);
        m->kind = MSG_PLAIN;
        kd_pl_produce(p, m);
    } else if (c->decision.state == KD_CLAIMED) {
        on_claimed(p, m, c);
    } else if (kd_pl_conflict_judge(p, m, &c->decision, c->owner)) {
        /* settled per on_key_conflict */
    } else if (c->decision.state == KD_COMPLETED) {
        RCOUNT(p, m->route, duplicates_completed);
        kd_pl_msg_done(p, m);
    } else if (c->owner != p->boot_id || !own_claim(p, m, true)) {
        kd_pl_claim_takeover(p, m); /* claimed by a run that is gone, or by nobody here */
    }
    kd_decision_clear(&c->decision);
}

size_t kd_pl_claim_gather(const kd_pipeline *p, msg *const *batch, size_t n,
                          kd_claim *claims, size_t *claim_of, size_t *claim_route) {
    size_t nclaims = 0;

    for (size_t r = 0; r < p->cfg->nroutes; r++)
        for (size_t i = 0; i < n; i++)
            if (batch[i]->kind == MSG_DEDUP && batch[i]->route == r) {
                claim_of[i] = nclaims;
                claim_route[nclaims] = r;
                claims[nclaims++] =
                    (kd_claim){.key = batch[i]->key,
                               .key_len = batch[i]->key_len,
                               .fingerprint = batch[i]->has_fp ? batch[i]->fp : NULL};
            }
    return nclaims;
}

size_t kd_pl_claim_run(const size_t *claim_route, size_t nclaims, size_t first) {
    size_t end = first + 1;

    while (end < nclaims && claim_route[end] == claim_route[first])
        end++;
    return end;
}

void kd_pl_claim_act(kd_pipeline *p, msg **batch, size_t n, kd_claim *claims,
                     const size_t *claim_of) {
    for (size_t i = 0; i < n; i++) {
        if (batch[i]->kind == MSG_DEDUP)
            on_claim(p, batch[i], &claims[claim_of[i]]);
        else
            kd_pl_produce(p, batch[i]);
    }
}

/* Claims the keyed messages of a batch with one store write per route
 * (usually one), then acts on every message in consumption order. */
void kd_pl_claim_batch(kd_pipeline *p, msg **batch, size_t n) {
    uint64_t now = kd_wall_ms();
    size_t nclaims = kd_pl_claim_gather(p, batch, n, p->batch.claims, p->batch.claim_of,
                                        p->batch.claim_route);

    for (size_t first = 0, end; first < nclaims; first = end) {
        end = kd_pl_claim_run(p->batch.claim_route, nclaims, first);
        kd_pl_store_claim_timed(p, p->batch.claim_route[first], p->batch.claims + first,
                                end - first, now);
    }
    kd_pl_claim_act(p, batch, n, p->batch.claims, p->batch.claim_of);
}

void kd_pl_claim_list(kd_pipeline *p, msg_list *l) {
    msg_list all = list_take(l);
    msg *chunk[64];
    size_t n = 0, max = (size_t)p->cfg->batch_max < 64 ? (size_t)p->cfg->batch_max : 64;

    for (msg *m = all.head, *next; m; m = next) {
        next = m->next;
        chunk[n++] = m;
        if (n == max || !next) {
            kd_pl_claim_batch(p, chunk, n);
            n = 0;
        }
    }
}
