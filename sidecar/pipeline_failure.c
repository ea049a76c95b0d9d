/*
 * kdedup - the pipeline's failed deliveries: what a delivery that failed,
 * or may have, becomes. Released and retried with backoff, dead-lettered
 * past the route's max_retries, kept and read downstream for when it may
 * be there, or left to the partition's next owner.
 */
#include "sidecar/log.h"
#include "sidecar/pipeline_int.h"

/* Releases m's claim, unless a delivery of it may be downstream. True
 * when m holds no claim any more. */
static bool release(kd_pipeline *p, msg *m) {
    kd_err err;

    if (!m->claimed || m->maybe_out)
        return !m->claimed;
    err = kd_dedup_release_claim(dedup_of(p, m), m->key, m->key_len);
    if (err != KD_OK) {
        kd_pl_store_failed(p, m->route, "release"); /* kept; the retry re-sends */
        return false;
    }
    kd_pl_msg_unhold(p, m);
    RCOUNT(p, m->route, released);
    return true;
}

/* Failed deliveries to its last destination after which a message is
 * stuck: the route's max_retries, or this many when it retries forever. */
static int stuck_after(const kd_route *r) {
    return r->max_retries >= 0 ? (int)r->max_retries : STUCK_AFTER_FOREVER;
}

/* m was refused past stuck_after() where it cannot go further: it stays,
 * retried, and is made visible (a log line naming it, the gauge, /readyz). */
static void mark_stuck(kd_pipeline *p, msg *m) {
    const kd_route *r = p->routes[m->route].cfg;
    bool dlt = m->kind == MSG_DEAD_LETTER;
    MSG_FIELDS(m, part, off);

    m->stuck = true;
    atomic_fetch_add(&kd_metrics_flow(p->metrics)->stuck, 1);
    KD_LOG(KD_LOG_ERROR, fields,
           "stuck: %s %s refused it %d time(s) (%s)%s; it is kept and retried (every "
           "minute at most), its offset never committed past, its partition held back "
           "once pipeline.max_inflight wait behind it; /readyz is 503 until it is "
           "delivered (kdedup_stuck_messages)",
           dlt ? "the dead-letter topic" : "the downstream topic",
           dlt ? r->dead_letter_topic : r->to, m->attempts, rd_kafka_err2str(m->err),
           dlt                    ? ""
           : r->dead_letter_topic ? " and max_retries is -1"
                                  : " and the route has no dead_letter_topic");
}

void kd_pl_failure_settle(kd_pipeline *p, msg *m) {
    const kd_route *r = p->routes[m->route].cfg;
    bool possibly = m->status == RD_KAFKA_MSG_STATUS_POSSIBLY_PERSISTED;
    MSG_FIELDS(m, part, off);

    if (possibly)
        RCOUNT(p, m->route, possibly_persisted);
    else
        RCOUNT(p, m->route, not_persisted);
    if (possibly && m->kind != MSG_DEAD_LETTER) {
        m->maybe_out = true;
        kd_pl_msg_barrier_set(p, m);
    }
    if (!msg_live(p, m) || p->stop_deadline) {
        /* The partition was revoked or lost meanwhile (or the run stops):
         * the message is its next owner's to forward, never this
         * ownership's to retry or read downstream for. */
        KD_LOG(KD_LOG_INFO, fields,
               "delivery %s (%s) after the partition left this ownership: left to "
               "its next owner",
               possibly ? "possibly persisted" : "failed", rd_kafka_err2str(m->err));
        kd_pl_msg_abandon(p, m);
        return;
    }
    if (possibly) {
        /* It may be in the log: releasing could let a duplicate through, so
         * the claim is kept, and the downstream partition read to tell. A
         * message without a claim is sent again (at least once). */
        if (m->kind == MSG_DEDUP && m->claimed) {
            KD_LOG(KD_LOG_WARN, fields,
                   "delivery possibly persisted (%s): reading downstream to tell",
                   rd_kafka_err2str(m->err));
            m->uncertain = true;
            m->reads = 0;
            kd_pl_msg_retry(p, m, 0); /* read with the others due */
            return;
        }
        KD_LOG(KD_LOG_WARN, fields, "delivery possibly persisted (%s): producing again",
               rd_kafka_err2str(m->err));
        kd_pl_msg_retry(p, m, 0);
        return;
    }
    release(p, m);
    m->attempts++;
    if (r->max_retries >= 0 && m->attempts > r->max_retries &&
        m->kind != MSG_DEAD_LETTER && r->dead_letter_topic) {
        KD_LOG(KD_LOG_WARN, fields, "delivery failed %d times (%s): dead-lettering",
               m->attempts, rd_kafka_err2str(m->err));
        release(p, m);
        m->kind = MSG_DEAD_LETTER;
        m->dl_reason = KD_REASON_DELIVERY_FAILED;
        m->attempts = 0; /* the dead-letter topic gets max_retries of its own */
        kd_pl_msg_retry(p, m, 0);
        return;
    }
    if (!m->stuck && m->attempts > stuck_after(r))
        mark_stuck(p, m);
    else
        KD_LOG(KD_LOG_WARN, fields, "delivery failed (%s): retrying",
               rd_kafka_err2str(m->err));
    kd_pl_msg_retry(p, m, kd_pl_backoff_ms(p, m));
}
