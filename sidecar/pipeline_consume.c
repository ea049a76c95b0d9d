/*
 * kdedup - the pipeline's consuming: a polled message becomes a msg, or is settled at
 * once.
 */
#include "sidecar/keysrc.h"
#include "sidecar/log.h"
#include "sidecar/pipeline_int.h"

#include <stdlib.h>

/* kd_keysrc_header_fn over a message's headers. */
static bool header_of(void *arg, const char *name, const void **val, size_t *len) {
    return arg &&
           rd_kafka_header_get(arg, 0, name, val, len) == RD_KAFKA_RESP_ERR_NO_ERROR;
}

/* Sets m's key (and fingerprint) per its route. False when it has no
 * usable key (or, with p->fatal set, when memory ran out). */
static bool identify(kd_pipeline *p, const kd_route *r, msg *m) {
    rd_kafka_headers_t *hdrs = NULL;
    kd_keysrc_msg km = {.key = m->rkm->key,
                        .key_len = m->rkm->key_len,
                        .value = m->rkm->payload,
                        .value_len = m->rkm->len,
                        .header = header_of};
    kd_key key;
    kd_key_status st;

    if (rd_kafka_message_headers(m->rkm, &hdrs) == RD_KAFKA_RESP_ERR_NO_ERROR)
        km.header_arg = hdrs;
    st = kd_keysrc_extract(r, (size_t)p->cfg->max_key_bytes,
                           (size_t)p->cfg->max_json_bytes, &km, &key);
    if (st == KD_KEY_NOMEM) {
        KD_ERROR("out of memory extracting a key");
        atomic_store(&p->fatal, 1); /* the offset stays pending: nothing lost */
        return false;
    }
    if (st != KD_KEY_OK) {
        MSG_FIELDS(m, part, off);
        KD_LOG(KD_LOG_DEBUG, fields, "no usable key: %s", kd_key_status_name(st));
        return false;
    }
    m->key = key.bytes;
    m->key_len = key.len;
    m->key_owned = key.owned; /* freed with m */
    if (r->fingerprint && !(m->has_fp = kd_keysrc_fingerprint(r, &km, m->fp)))
        KD_WARN("fingerprint failed (libcrypto): the claim is stored without one");
    return true;
}

/* Turns a consumed message into a msg, or settles it at once. Returns the
 * msg to kd_pl_dispatch, or NULL. */
static msg *classify(kd_pipeline *p, rd_kafka_message_t *rkm) {
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
    if (identify(p, r, m)) {
        if (m->key_owned) { /* a JSON or composite key: its own bytes too */
            m->bytes += m->key_len;
            p->inflight_bytes += m->key_len;
        }
        return m;
    }
    if (atomic_load(&p->fatal)) { /* out of memory: the offset stays pending */
        kd_pl_msg_free(p, m);
        return NULL;
    }
    switch (r->on_missing_key) {
    case KD_MISSING_FORWARD:
        RCOUNT(p, m->route, missing_forwarded);
        m->kind = MSG_PLAIN;
        return m;
    case KD_MISSING_DEAD_LETTER:
        RCOUNT(p, m->route, missing_dead_lettered);
        m->kind = MSG_DEAD_LETTER;
        m->dl_reason = KD_REASON_MISSING_KEY;
        return m;
    case KD_MISSING_DROP:
        break;
    }
    RCOUNT(p, m->route, missing_dropped);
    kd_pl_msg_done(p, m);
    return NULL;
}

/* Reads up to batch_max messages (with the `have` read before): waits up to
 * timeout_ms for the first. */
size_t kd_pl_collect(kd_pipeline *p, size_t have, int timeout_ms) {
    size_t n = have;

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
