/*
 * kdedup - the pipeline's producing to the downstream and dead-letter topics, and the
 * delivery-report callback.
 */
#include "dedup/hex.h"
#include "sidecar/headers.h"
#include "sidecar/keysrc.h"
#include "sidecar/log.h"
#include "sidecar/pipeline_int.h"

#include <stdlib.h>

/* Why m is dead-lettered; for a key conflict, which record holds the
 * original and both fingerprints. */
static void add_dead_letter_headers(rd_kafka_headers_t *hdrs, const msg *m) {
    char hex[2 * KD_FINGERPRINT_LEN + 1];

    if (m->dl_reason)
        rd_kafka_header_add(hdrs, KD_REASON_HEADER, -1, m->dl_reason, -1);
    if (m->conflict_original)
        rd_kafka_header_add(hdrs, KD_ORIGINAL_HEADER, -1, m->conflict_original, -1);
    if (m->conflict_original && m->has_fp)
        rd_kafka_header_add(hdrs, KD_FINGERPRINT_HEADER, -1,
                            kd_hex(m->fp, KD_FINGERPRINT_LEN, hex), -1);
    if (m->conflict_original && m->orig_has_fp)
        rd_kafka_header_add(hdrs, KD_ORIGINAL_FP_HEADER, -1,
                            kd_hex(m->orig_fp, KD_FINGERPRINT_LEN, hex), -1);
}

/* m's headers for downstream: the source message's, less any named like
 * kdedup's own (a source producer must not plant provenance a downstream
 * reader might trust; the route's key header is kept whatever its name),
 * then kdedup's: where m came from, the run, when, and (with a signing key)
 * a signature over them and the key. */
static rd_kafka_headers_t *headers_for(kd_pipeline *p, const msg *m) {
    const kd_route *r = p->routes[m->route].cfg;
    rd_kafka_headers_t *src = NULL, *hdrs;
    size_t n = 0;
    char source[KD_HEADERS_SOURCE_MAX], at[KD_HEADERS_AT_MAX];
    kd_headers_stamp s = {.from = r->from, .to = r->to, .run = p->boot_hex};

    if (rd_kafka_message_headers(m->rkm, &src) != RD_KAFKA_RESP_ERR_NO_ERROR)
        src = NULL;
    hdrs = kd_headers_copy_foreign(src, r->key_header, 8, &n);
    if (n)
        RCOUNT(p, m->route, headers_stripped);
    s.source = kd_headers_source_format(source, sizeof(source), src_topic(m),
                                        m->rkm->partition, m->rkm->offset);
    s.at = kd_headers_at_format(at, sizeof(at), kd_wall_ms());
    s.key = m->key;
    s.key_len = m->key_len;
    s.key_header = m->key && !r->key_header && m->kind != MSG_DEAD_LETTER;
    kd_headers_add_stamp(hdrs, &s);
    if (m->kind == MSG_DEAD_LETTER)
        add_dead_letter_headers(hdrs, m);
    else if (m->kind != MSG_DEDUP || !m->claimed)
        kd_headers_add_unclaimed(hdrs);
    if (p->signer && m->key && m->kind != MSG_DEAD_LETTER &&
        !kd_headers_add_signature(hdrs, p->signer, &s))
        KD_WARN("signing a record failed: it is forwarded unsigned, and never "
                "learned from downstream");
    return hdrs;
}

/* Sends m to its downstream (or dead-letter) topic, on the partition with
 * the source partition's number, so one source partition keeps its order. */
void kd_pl_produce(kd_pipeline *p, msg *m) {
    const route_rt *r = &p->routes[m->route];
    bool dlt = m->kind == MSG_DEAD_LETTER;
    const char *topic = dlt ? r->cfg->dead_letter_topic : r->cfg->to;
    int32_t partition = m->rkm->partition % (dlt ? r->dlt_partitions : r->out_partitions);
    rd_kafka_headers_t *hdrs;
    rd_kafka_resp_err_t err;

    if (kd_pl_msg_gated(p, m, false))
        return;                /* behind an orphan being resolved: in order, later */
    if (!kd_pl_txn_ready(p)) { /* the producer's initialisation waits, or fatal (the
                                * pipeline stops; m waits for the next run) */
        kd_pl_msg_retry(p, m, KD_PL_TXN_WAIT_MS);
        return;
    }
    hdrs = headers_for(p, m);

    if (!dlt && !m->maybe_out) { /* the first copy that may be there bounds the read */
        m->scan_from = r->acked[partition];
        m->sent_at_ms = kd_wall_ms();
    }
    if (!dlt) {
        m->out_seq = ++r->sent[partition];
        m->scan_settle = 0; /* a read for this copy sees its own high watermark */
    }
    for (;;) {
        err = rd_kafka_producev(
            p->producer, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_PARTITION(partition),
            RD_KAFKA_V_KEY(m->rkm->key, m->rkm->key_len),
            RD_KAFKA_V_VALUE(m->rkm->payload, m->rkm->len), RD_KAFKA_V_HEADERS(hdrs),
            RD_KAFKA_V_TIMESTAMP(rd_kafka_message_timestamp(m->rkm, NULL)),
            RD_KAFKA_V_OPAQUE(m), RD_KAFKA_V_END);
        if (err != RD_KAFKA_RESP_ERR__QUEUE_FULL || atomic_load(&p->stop))
            break; /* stopping: fails as not sent, and waits for the next run */
        rd_kafka_poll(p->producer, 10); /* reports only queue up: no re-entry */
    }
    if (err) {
        rd_kafka_headers_destroy(hdrs);
        m->err = err;
        m->status = RD_KAFKA_MSG_STATUS_NOT_PERSISTED;
        kd_pl_failure_settle(p, m);
        return;
    }
    if (p->txn.on)
        kd_pl_txn_sent(p, m);
    p->q.awaiting++;
}

void kd_pl_produce_dr_cb(rd_kafka_t *rk, const rd_kafka_message_t *rkm, void *opaque) {
    kd_pipeline *p = opaque;
    msg *m = rkm->_private;

    (void)rk;
    m->err = rkm->err;
    m->status = rd_kafka_message_status(rkm);
    m->out_partition = rkm->partition;
    m->out_offset = rkm->offset;
    m->out_timestamp = rd_kafka_message_timestamp(rkm, NULL);
    if (!rkm->err && m->kind != MSG_DEAD_LETTER && rkm->offset >= 0) {
        const route_rt *r = &p->routes[m->route];
        int64_t *acked = &r->acked[rkm->partition];

        if (rkm->offset + 1 > *acked)
            *acked = rkm->offset + 1;
        if (m->out_seq > r->acked_sent[rkm->partition])
            r->acked_sent[rkm->partition] = m->out_seq;
    }
    p->q.awaiting--;
    list_push(&p->q.reported, m);
}
