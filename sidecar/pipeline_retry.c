/*
 * kdedup - the pipeline's retries: each turn, the messages of p->q.retries
 * that are due go again. Those to produce are produced; the others are
 * handed back to the loop in lists, for the stage that follows: claimed
 * again (released ones, together), or read downstream for (uncertain
 * deliveries, and the notes ended ownerships left).
 */
#include "sidecar/pipeline_int.h"

void kd_pl_retry_due(kd_pipeline *p, kd_pl_due *due) {
    msg_list all = list_take(&p->q.retries);
    uint64_t now = kd_mono_ms();

    for (msg *m = all.head, *next; m; m = next) {
        next = m->next;
        if (m->early && msg_live(p, m) &&
            kd_pl_handover_find(p, m->route, m->rkm->partition) == SIZE_MAX) {
            /* Not a retry: its first claim, now that the handover is done
             * (whatever its due): the partition resumed this turn, and what
             * it brings next must come after. */
            m->early = false;
            list_push(&due->reclaim, m);
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
            list_push(&due->left, m);
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
            list_push(&due->uncertain, m);
            continue;
        }
        if (m->early) { /* its handover is still pending (above) */
            kd_pl_msg_retry(p, m, EARLY_POLL_MS);
            continue;
        }
        RCOUNT(p, m->route, retries);
        if (m->kind == MSG_DEDUP && !m->claimed)
            list_push(&due->reclaim, m); /* released: claimed again first, together */
        else
            kd_pl_produce(p, m);
    }
}
