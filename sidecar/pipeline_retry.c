/*
 * kdedup - the pipeline's retries: each turn, the messages of p->q.retries
 * that are due go again: produced, claimed again first (released ones,
 * together), or read downstream for (uncertain deliveries, and the notes
 * ended ownerships left), in that order.
 */
#include "sidecar/pipeline_int.h"

#include <stdlib.h>

/* Claims the keys of released messages again, a poll batch's worth per
 * store write (after a store outage, one write for many, not one each). */
static void reclaim_all(kd_pipeline *p, msg_list *l) {
    msg *chunk[64];
    size_t n = 0, max = (size_t)p->cfg->batch_max < 64 ? (size_t)p->cfg->batch_max : 64;

    for (msg *m = l->head, *next; m; m = next) {
        next = m->next;
        chunk[n++] = m;
        if (n == max || !next) {
            kd_pl_claim_batch(p, chunk, n);
            n = 0;
        }
    }
}

/* Hands the messages of l, due for a read of downstream, to read (which
 * reads once per downstream partition) as an array. */
static void read_downstream(kd_pipeline *p, msg_list *l,
                            void (*read)(kd_pipeline *, msg **, size_t)) {
    msg **ms;
    size_t n = 0;

    if (!l->n)
        return;
    if (!(ms = malloc(l->n * sizeof(*ms)))) { /* out of memory: later */
        for (msg *m = l->head, *next; m; m = next) {
            next = m->next;
            kd_pl_msg_retry(p, m, 250);
        }
        return;
    }
    for (msg *m = l->head; m; m = m->next)
        ms[n++] = m;
    read(p, ms, n);
    free(ms);
}

void kd_pl_retry_due(kd_pipeline *p) {
    msg_list all = list_take(&p->q.retries), uncertain = {0}, left = {0}, reclaim = {0};
    uint64_t now = kd_mono_ms();

    for (msg *m = all.head, *next; m; m = next) {
        next = m->next;
        if (m->early && msg_live(p, m) &&
            kd_pl_handover_find(p, m->route, m->rkm->partition) == SIZE_MAX) {
            /* Not a retry: its first claim, now that the handover is done
             * (whatever its due): the partition resumed this turn, and what
             * it brings next must come after. */
            m->early = false;
            list_push(&reclaim, m);
            continue;
        }
        if (m->due_ms > now) {
            list_push(&p->q.retries, m);
            continue;
        }
        if (!msg_live(p, m)) {
            kd_pl_msg_abandon(p, m);
            continue;
        }
        if (m->left_read && p->txn.init_since) { /* as uncertain ones, below */
            kd_pl_msg_retry(p, m, BARRIER_POLL_MS);
            continue;
        }
        if (m->left_read) { /* an ended ownership's note: read with the others */
            list_push(&left, m);
            continue;
        }
        if (m->uncertain && p->txn.init_since) {
            /* A commit whose outcome is unknown: the replacing producer's
             * initialisation ends its transaction (commits one under way,
             * aborts any other). read_committed says nothing before. */
            kd_pl_msg_retry(p, m, BARRIER_POLL_MS);
            continue;
        }
        if (m->uncertain && !kd_pl_msg_barrier_passed(p, m->route, m->out_partition,
                                                      m->barrier, m->barrier_until)) {
            kd_pl_msg_retry(p, m, BARRIER_POLL_MS);
            continue;
        }
        if (m->uncertain) { /* a read of downstream, not a delivery: below */
            list_push(&uncertain, m);
            continue;
        }
        if (m->early) { /* its handover is still pending (above) */
            kd_pl_msg_retry(p, m, EARLY_POLL_MS);
            continue;
        }
        RCOUNT(p, m->route, retries);
        if (m->kind == MSG_DEDUP && !m->claimed)
            list_push(&reclaim, m); /* released: claimed again first, together */
        else
            kd_pl_produce(p, m);
    }
    reclaim_all(p, &reclaim);
    read_downstream(p, &uncertain, kd_pl_resolve_uncertain);
    read_downstream(p, &left, kd_pl_resolve_left);
}
