/*
 * kdedup - the pipeline's ownerships ended: a partition's offsets
 * forgotten and its pending handover dropped, on a revoke or when the
 * group took this consumer's assignment (assignment lost).
 */
#include "sidecar/log.h"
#include "sidecar/pipeline_int.h"

/* Ends this ownership of a partition: its offsets are forgotten (no message
 * of it is produced or settled as ours from now on), its handover dropped. */
void kd_pl_own_end(kd_pipeline *p, size_t route, int32_t partition) {
    size_t h = kd_pl_handover_find(p, route, partition);

    kd_offsets_revoke(p->offsets, route, partition);
    if (h != SIZE_MAX)
        kd_pl_handover_remove(p, h);
}

typedef struct ending {
    kd_pipeline *p;
    int n;
} ending;

static void end_ownership_cb(void *arg, size_t route, int32_t partition) {
    ending *e = arg;

    kd_pl_own_end(e->p, route, partition);
    e->n++;
}

bool kd_pl_own_lost(kd_pipeline *p) {
    ending e = {p, 0};

    if (!rd_kafka_assignment_lost(p->consumer))
        return false;
    kd_offsets_each_assigned(p->offsets, end_ownership_cb, &e);
    if (e.n) {
        KD_WARN("the group took this consumer's %d partition(s) (assignment lost: its "
                "session expired, or max.poll.interval.ms passed without a poll): "
                "nothing more is produced for them, and their messages in hand are "
                "left to their next owner",
                e.n);
        kd_pl_msg_abandon_retries(p, false);
    }
    return true;
}
