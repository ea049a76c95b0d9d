/*
 * kdedup - the handover: the history of a newly assigned partition (see
 * recovery.h).
 *
 * The handovers read with a consumer of their own (the historian): every
 * partition being handed over in one assignment, read together, so a
 * replica given 200 partitions waits for one read of them all, not for 200
 * reads one after another. Each handover's records (those of its source
 * partition) go to the caller in batches, unremembered; one batch holds at
 * most pipeline.batch_max records and HISTORY_BATCH_BYTES of all of them.
 */
#include "sidecar/recovery_int.h"
#include "sidecar/clock.h"
#include "sidecar/log.h"

#include <stdlib.h>

/* Allocates h's arrays for n jobs and batches of `batch`; false when out
 * of memory. */
static bool hist_alloc(histories *h, kd_history_job *jobs, size_t n) {
    h->jobs = calloc(n, sizeof(*h->jobs));
    h->count = calloc(n, sizeof(*h->count));
    h->held = malloc(h->batch * sizeof(*h->held));
    h->recs = malloc(h->batch * sizeof(*h->recs));
    h->sorted = malloc(h->batch * sizeof(*h->sorted));
    h->owner = malloc(h->batch * sizeof(*h->owner));
    if (!h->jobs || !h->count || !h->held || !h->recs || !h->sorted || !h->owner)
        return false;
    for (size_t j = 0; j < n; j++)
        h->jobs[j] = (hjob){.job = &jobs[j], .route = &h->rc->cfg->routes[jobs[j].route]};
    return true;
}

static void hist_free(histories *h) {
    free(h->jobs);
    free(h->count);
    free(h->held);
    free(h->recs);
    free(h->sorted);
    free(h->owner);
    free(h->first_job);
}

void kd_recovery_histories(kd_recovery *rc, kd_history_job *jobs, size_t n,
                           size_t batch) {
    histories h = {.rc = rc, .n = n, .batch = batch ? batch : 1};
    uint64_t t0 = kd_mono_us();

    if (!n)
        return;
    if (rc->cfg->ttl_ms)
        h.since_ms = (int64_t)kd_wall_ms() - (int64_t)rc->cfg->ttl_ms;
    if (!hist_alloc(&h, jobs, n)) {
        KD_WARN("handover: out of memory");
        for (size_t j = 0; j < n; j++)
            jobs[j].result = KD_HISTORY_FAILED;
        hist_free(&h);
        return;
    }
    kd_rc_hist_start(&h);
    for (size_t j = 0; j < n; j++)
        if (!h.jobs[j].failed && jobs[j].cur->next < jobs[j].cur->end) {
            h.jobs[j].active = true;
            h.nactive++;
        }
    if (h.nactive && !kd_rc_hist_assign(rc, &h)) {
        for (size_t j = 0; j < n; j++)
            if (h.jobs[j].active)
                kd_rc_hist_fail(&h, j);
    }
    if (h.nactive)
        kd_rc_hist_read(&h);
    kd_rc_hist_flush(&h);
    for (size_t j = 0; j < n; j++)
        kd_rc_hist_finish(&h, j);
    if (!h.nactive)
        kd_rc_history_unassign(rc); /* nothing left to read: it stops fetching */
    hist_free(&h);
    rc->stats.handovers += n;
    rc->stats.handover_micros += kd_mono_us() - t0;
}

kd_history_result kd_recovery_history(kd_recovery *rc, size_t route,
                                      int32_t src_partition, int32_t out_partition,
                                      size_t batch, kd_history_fn fn, void *arg,
                                      kd_history_cursor *cur) {
    kd_history_job job = {.route = route,
                          .src_partition = src_partition,
                          .out_partition = out_partition,
                          .fn = fn,
                          .arg = arg,
                          .cur = cur};

    kd_recovery_histories(rc, &job, 1, batch);
    return job.result;
}
