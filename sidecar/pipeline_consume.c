/*
 * kdedup - the pipeline's consuming: a polled message becomes a msg, or is settled at
 * once.
 */
#include "sidecar/headers.h"
#include "sidecar/keysrc.h"
#include "sidecar/log.h"
#include "sidecar/pipeline_int.h"

#include <stdlib.h>

/* kd_keysrc_header_fn over a message's headers. */
static bool header_of(void *arg, const char *name, bool last, const void **val,
                      size_t *len) {
    return arg && (last ? rd_kafka_header_get_last(arg, name, val, len)
                        : rd_kafka_header_get(arg, 0, name, val, len)) ==
                      RD_KAFKA_RESP_ERR_NO_ERROR;
}

/* Sets m's key (and fingerprint) per its route. Returns KD_KEY_OK, or why
 * it has none (KD_KEY_NOMEM: out of memory, p->fatal set). */
static kd_key_status identify(kd_pipeline *p, const kd_route *r, msg *m) {
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
        return st;
    }
    if (st != KD_KEY_OK) {
        MSG_FIELDS(m, part, off);
        KD_LOG(KD_LOG_DEBUG, fields, "no usable key: %s", kd_key_status_name(st));
        return st;
    }
    m->key = key.bytes;
    m->key_len = key.len;
    m->key_owned = key.owned; /* freed with m */
    if (r->fingerprint && !(m->has_fp = kd_keysrc_fingerprint(
                                r, (size_t)p->cfg->max_json_bytes, &km, m->fp)))
        KD_WARN("fingerprint failed (libcrypto): the claim is stored without one");
    return KD_KEY_OK;
}

/* A consumed message's headers, measured (librdkafka parses them here). */
static kd_headers_size measure_headers(const rd_kafka_message_t *rkm) {
    rd_kafka_headers_t *hdrs = NULL;

    if (rd_kafka_message_headers(rkm, &hdrs) != RD_KAFKA_RESP_ERR_NO_ERROR)
        hdrs = NULL;
    return kd_headers_measure(hdrs);
}

/* Why a message is rejected: it cannot be taken as it is. */
typedef enum reject_reason {
    REJECT_TOO_MANY_HEADERS,  /* more than pipeline.max_headers */
    REJECT_HEADERS_TOO_LARGE, /* more than pipeline.max_header_bytes */
    REJECT_AMBIGUOUS_KEY,     /* read first and last, its key differs */
} reject_reason;

/* Counts a rejection in its route's counter. */
static void count_rejected(kd_pipeline *p, size_t route, reject_reason why) {
    switch (why) {
    case REJECT_TOO_MANY_HEADERS:
        RCOUNT(p, route, rejected_too_many_headers);
        break;
    case REJECT_HEADERS_TOO_LARGE:
        RCOUNT(p, route, rejected_headers_too_large);
        break;
    case REJECT_AMBIGUOUS_KEY:
        RCOUNT(p, route, rejected_ambiguous_key);
        break;
    }
}

/* m is rejected (why, detail for the log): to the route's dead-letter topic
 * with its reason, whatever on_missing_key says; without one, forwarded
 * without dedup or dropped as on_missing_key says. Counted and logged
 * either way. Returns m to claim (kd_pl_claim_batch), or NULL when it was
 * dropped. */
static msg *reject(kd_pipeline *p, msg *m, reject_reason why, const char *detail) {
    static const char *const reasons[] = {
        KD_REASON_TOO_MANY_HEADERS, KD_REASON_HEADERS_TOO_LARGE, KD_REASON_AMBIGUOUS_KEY};
    const kd_route *r = p->routes[m->route].cfg;
    MSG_FIELDS(m, part, off);

    count_rejected(p, m->route, why);
    if (r->dead_letter_topic) {
        KD_LOG(KD_LOG_WARN, fields, "%s (%s): dead-lettered", reasons[why], detail);
        m->kind = MSG_DEAD_LETTER;
        m->dl_reason = reasons[why];
        return m;
    }
    if (r->on_missing_key == KD_MISSING_FORWARD) {
        KD_LOG(KD_LOG_WARN, fields,
               "%s (%s): forwarded without dedup (the route has no dead_letter_topic; "
               "on_missing_key: forward)",
               reasons[why], detail);
        m->kind = MSG_PLAIN;
        return m;
    }
    KD_LOG(KD_LOG_WARN, fields,
           "%s (%s): dropped (the route has no dead_letter_topic; on_missing_key: drop)",
           reasons[why], detail);
    kd_pl_msg_done(p, m);
    return NULL;
}

/* True when headers of size hs pass pipeline.max_headers or
 * max_header_bytes: *why and detail say which. */
static bool over_header_bounds(const kd_pipeline *p, kd_headers_size hs,
                               reject_reason *why, char *detail, size_t size) {
    if (hs.count > (size_t)p->cfg->max_headers) {
        *why = REJECT_TOO_MANY_HEADERS;
        snprintf(detail, size, "%zu headers, pipeline.max_headers %lld", hs.count,
                 (long long)p->cfg->max_headers);
        return true;
    }
    if (hs.bytes > (size_t)p->cfg->max_header_bytes) {
        *why = REJECT_HEADERS_TOO_LARGE;
        snprintf(detail, size,
                 "%zu bytes of header names and values, pipeline.max_header_bytes %lld",
                 hs.bytes, (long long)p->cfg->max_header_bytes);
        return true;
    }
    return false;
}

/* m has no usable key: on_missing_key decides. Returns m to claim
 * (kd_pl_claim_batch), or NULL when it was dropped. */
static msg *missing(kd_pipeline *p, msg *m, const kd_route *r) {
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

/* Turns a consumed message into a msg, or settles it at once. Returns the
 * msg to kd_pl_claim_batch, or NULL. */
static msg *classify(kd_pipeline *p, rd_kafka_message_t *rkm) {
    const kd_route *r;
    size_t route = route_of(p, rd_kafka_topic_name(rkm->rkt));
    kd_headers_size hs;
    kd_key_status st;
    reject_reason why;
    char detail[160];
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
    kd_pl_flow_check_front(p, route, rkm->partition);
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
    /* Its headers count twice: as parsed, and as copied into what is produced. */
    hs = measure_headers(rkm);
    m->bytes = rkm->len + rkm->key_len + 2 * kd_headers_memory(hs);
    p->flow.inflight_bytes += m->bytes;
    if (over_header_bounds(p, hs, &why, detail, sizeof(detail)))
        return reject(p, m, why, detail);
    r = p->routes[route].cfg;
    if ((st = identify(p, r, m)) == KD_KEY_OK) {
        if (m->key_owned) { /* a JSON or composite key: its own bytes too */
            m->bytes += m->key_len;
            p->flow.inflight_bytes += m->key_len;
        }
        return m;
    }
    if (st == KD_KEY_NOMEM) { /* the offset stays pending: nothing lost */
        kd_pl_msg_free(p, m);
        return NULL;
    }
    if (st == KD_KEY_AMBIGUOUS)
        return reject(p, m, REJECT_AMBIGUOUS_KEY,
                      "its key header or JSON member is given twice, with "
                      "different values: readers of the first and of the last "
                      "would see two ids");
    return missing(p, m, r);
}

/* Reads up to batch_max messages (with the `have` read before): waits up to
 * timeout_ms for the first. Polls once at least (rebalances are served
 * there), and no more once the messages in flight hold
 * pipeline.max_inflight_bytes: a batch of messages with many headers would
 * hold far more than the bound before the turn's flow control pauses
 * consumption. */
size_t kd_pl_consume_collect(kd_pipeline *p, size_t have, int timeout_ms) {
    size_t n = have;
    bool polled = false;

    while (n < (size_t)p->cfg->batch_max && !atomic_load(&p->fatal)) {
        rd_kafka_message_t *rkm;
        msg *m;

        if (polled && p->flow.inflight_bytes >= (size_t)p->cfg->max_inflight_bytes)
            break;
        rkm = rd_kafka_consumer_poll(p->consumer, n ? 0 : timeout_ms);
        polled = true;
        if (!rkm)
            break;
        if (rkm->err) {
            if (rkm->err != RD_KAFKA_RESP_ERR__PARTITION_EOF)
                KD_WARN("consumer: %s", rd_kafka_message_errstr(rkm));
            rd_kafka_message_destroy(rkm);
            continue;
        }
        if ((m = classify(p, rkm)))
            p->batch.msgs[n++] = m;
    }
    /* A rebalance inside the polls may have revoked some of these: they are
     * the next owner's now. The rest keep their order: a partition's
     * messages of every kind wait for its handover together (a keyless one
     * forwarded at once would go out before the keyed ones before it). */
    size_t kept = 0;
    for (size_t i = 0; i < n; i++) {
        msg *m = p->batch.msgs[i];

        if (!msg_live(p, m))
            kd_pl_msg_free(p, m);
        else if (kd_pl_handover_find(p, m->route, m->rkm->partition) != SIZE_MAX)
            kd_pl_handover_hold(p, m);
        else
            p->batch.msgs[kept++] = m;
    }
    return kept;
}
