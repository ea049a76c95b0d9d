/*
 * kdedup - the pipeline's consuming: a polled message becomes a msg, or is settled at
 * once.
 */
#include "sidecar/headers.h"
#include "sidecar/log.h"
#include "sidecar/pipeline_int.h"

#include <stdlib.h>

/* Turns a consumed message into a msg, or settles it at once. Returns the
 * msg to kd_pl_dispatch, or NULL. */
static msg *classify(kd_pipeline *p, rd_kafka_message_t *rkm) {
    const rd_kafka_headers_t *hdrs = NULL;
    const kd_route *r;
    size_t route = route_of(p, rd_kafka_topic_name(rkm->rkt));
    msg *m;

    if (route == SIZE_MAX) {
        rd_kafka_message_destroy(rkm);
        return NULL;
    }
    switch (kd_offsets_track(p->offsets, route, rkm->partition, rkm->offset)) {
    case KD_TRACKED:
        break;
    case KD_TRACK_NOMEM:
        KD_ERROR("out of memory tracking offsets");
        atomic_store(&p->fatal, 1);
        /* fall through */
    default: /* not assigned any more, or a re-delivery: not ours to handle */
        rd_kafka_message_destroy(rkm);
        return NULL;
    }
    kd_pl_check_front(p, route, rkm->partition);
    RCOUNT(p, route, consumed);
    GCOUNT(p, inflight, 1);
    if (!(m = calloc(1, sizeof(*m)))) {
        KD_ERROR("out of memory");
        atomic_store(&p->fatal, 1); /* the offset stays pending: nothing lost */
        rd_kafka_message_destroy(rkm);
        return NULL;
    }
    m->rkm = rkm;
    m->route = route;
    m->own = kd_offsets_owner(p->offsets, route, rkm->partition);
    m->consumed_us = kd_mono_us();
    m->bytes = rkm->len + rkm->key_len;
    p->inflight_bytes += m->bytes;
    r = p->routes[route].cfg;
    rd_kafka_message_headers(rkm, (rd_kafka_headers_t **)&hdrs);
    if (kd_headers_key(hdrs, r->key_header, (size_t)p->cfg->max_key_bytes, &m->key,
                       &m->key_len))
        return m;
    switch (r->on_missing_key) {
    case KD_MISSING_FORWARD:
        RCOUNT(p, m->route, missing_forwarded);
        m->kind = MSG_PLAIN;
        return m;
    case KD_MISSING_DEAD_LETTER:
        RCOUNT(p, m->route, missing_dead_lettered);
        m->kind = MSG_DEAD_LETTER;
        return m;
    case KD_MISSING_DROP:
        break;
    }
    RCOUNT(p, m->route, missing_dropped);
    kd_pl_msg_done(p, m);
    return NULL;
}

/* Reads up to batch_max messages: waits up to timeout_ms for the first. */
size_t kd_pl_collect(kd_pipeline *p, int timeout_ms) {
    size_t n = 0;

    while (n < (size_t)p->cfg->batch_max && !atomic_load(&p->fatal)) {
        rd_kafka_message_t *rkm = rd_kafka_consumer_poll(p->consumer, n ? 0 : timeout_ms);
        msg *m;

        if (!rkm)
            break;
        if (rkm->err) {
            if (rkm->err != RD_KAFKA_RESP_ERR__PARTITION_EOF)
                KD_WARN("consumer: %s", rd_kafka_message_errstr(rkm));
            rd_kafka_message_destroy(rkm);
            continue;
        }
        if ((m = classify(p, rkm)))
            p->batch_msgs[n++] = m;
    }
    /* A rebalance inside the polls may have revoked some of these: they are
     * the next owner's now. The rest keep their order. */
    size_t kept = 0;
    for (size_t i = 0; i < n; i++) {
        msg *m = p->batch_msgs[i];

        if (msg_live(p, m))
            p->batch_msgs[kept++] = m;
        else
            kd_pl_msg_free(p, m);
    }
    return kept;
}
