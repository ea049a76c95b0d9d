/*
 * kdedup - the pipeline's store: its health (a failed write pauses
 * consumption until one succeeds) and the timed claim and receipt writes
 * (file map: pipeline_int.h).
 */
#include "sidecar/log.h"
#include "sidecar/pipeline_int.h"

/* A store call failed: counted, logged with the backend's own description,
 * and, on the first failure, consumption paused until a write succeeds. */
void kd_pl_store_failed(kd_pipeline *p, size_t route, const char *what) {
    char err[512];
    const char *fields[] = {"route", p->cfg->routes[route].name, NULL};
    uint64_t now = kd_mono_ms();

    GCOUNT(p, store_errors, 1);
    p->health.failures++;
    KD_LOG(KD_LOG_WARN, fields, "store: %s failed: %s (retrying)", what,
           kd_store_last_error(p->store, err, sizeof(err)));
    if (!atomic_load(&p->health.failing_since)) {
        KD_ERROR("store failing: consumption and offset commits paused until it "
                 "accepts writes again");
        atomic_store(&p->health.failing_since, now ? now : 1);
        p->health.backoff_ms = STORE_BACKOFF_MIN_MS;
        kd_pl_flow_apply(p);
    } else if (p->health.backoff_ms < STORE_BACKOFF_MAX_MS) {
        p->health.backoff_ms *= 2;
    }
    p->health.retry_at = now + p->health.backoff_ms;
}

void kd_pl_store_ok(kd_pipeline *p) {
    uint64_t since = atomic_load(&p->health.failing_since);

    if (!since)
        return;
    KD_INFO("store accepts writes again after %llums: resuming consumption",
            (unsigned long long)(kd_mono_ms() - since));
    atomic_store(&p->health.failing_since, 0);
    p->health.backoff_ms = 0;
    kd_pl_flow_apply(p);
}

/* A route's claims in one store write, timed for kdedup_store_write_seconds;
 * a failed write marks every claim KD_ERR_STORE. Touches no pipeline state
 * (the store thread makes claims ahead with it). */
void kd_pl_store_claim_write(kd_pipeline *p, size_t route, kd_claim *c, size_t n,
                             uint64_t now) {
    uint64_t t0 = kd_mono_us();

    if (kd_dedup_claim_batch(p->routes[route].dedup, c, n, now) != KD_OK)
        for (size_t i = 0; i < n; i++)
            c[i].err = KD_ERR_STORE;
    observe_since(kd_metrics_store_write(p->metrics), t0);
}

void kd_pl_store_claim_health(kd_pipeline *p, size_t route, const kd_claim *c, size_t n,
                              bool resume) {
    for (size_t i = 0; i < n; i++)
        if (c[i].err == KD_ERR_STORE) {
            kd_pl_store_failed(p, route, "claim batch");
            return;
        }
    if (resume)
        kd_pl_store_ok(p);
}

void kd_pl_store_claim_timed(kd_pipeline *p, size_t route, kd_claim *c, size_t n,
                             uint64_t now) {
    kd_pl_store_claim_write(p, route, c, n, now);
    kd_pl_store_claim_health(p, route, c, n, true);
}

void kd_pl_store_complete_write(kd_pipeline *p, size_t route, kd_completion *c, size_t n,
                                bool lazy) {
    kd_dedup *d = p->routes[route].dedup;
    uint64_t t0 = kd_mono_us();

    if ((lazy ? kd_dedup_complete_batch_lazy(d, c, n)
              : kd_dedup_complete_batch(d, c, n)) != KD_OK)
        for (size_t i = 0; i < n; i++)
            c[i].err = KD_ERR_STORE;
    observe_since(kd_metrics_store_write(p->metrics), t0);
}

void kd_pl_store_complete_health(kd_pipeline *p, size_t route, const kd_completion *c,
                                 size_t n, bool lazy) {
    for (size_t i = 0; i < n; i++)
        if (c[i].err == KD_ERR_STORE) {
            kd_pl_store_failed(p, route, "receipt batch");
            return;
        }
    if (!lazy) /* a lazy write says nothing of durable ones: kd_pl_receipts_settle */
        kd_pl_store_ok(p);
}

void kd_pl_store_complete_timed(kd_pipeline *p, size_t route, kd_completion *c, size_t n,
                                bool lazy) {
    kd_pl_store_complete_write(p, route, c, n, lazy);
    kd_pl_store_complete_health(p, route, c, n, lazy);
}
