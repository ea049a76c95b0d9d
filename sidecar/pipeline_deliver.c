/*
 * kdedup - the pipeline's delivery reports: what was delivered waits for
 * its receipt, what was not goes to pipeline_failure.c, and a report of a
 * message in a transaction is held by the transaction (pipeline_txn.c).
 */
#include "sidecar/pipeline_int.h"

static void handle_reports(kd_pipeline *p) {
    msg_list all = list_take(&p->q.reported);

    for (msg *m = all.head, *next; m; m = next) {
        next = m->next;
        kd_pl_msg_reported(p, m);
        if (kd_pl_txn_report(p, m))
            continue; /* settled with its transaction */
        if (!m->err && m->kind == MSG_DEDUP && m->claimed && m->out_offset < 0) {
            /* Acknowledged without an offset: librdkafka 2.0.2 reports a
             * DUPLICATE_SEQUENCE_NUMBER answer as "already persisted",
             * offset -1001. A receipt must name its record: the delivery is
             * read for downstream, as a possibly persisted one. (The mock
             * cluster so answered batches it never appended: faults_test
             * lost 35 keys, each completed with a receipt at -1001.) */
            m->err = RD_KAFKA_RESP_ERR_DUPLICATE_SEQUENCE_NUMBER;
            m->status = RD_KAFKA_MSG_STATUS_POSSIBLY_PERSISTED;
        }
        if (m->err) {
            kd_pl_failure_settle(p, m);
        } else if (m->kind == MSG_DEDUP && m->claimed) {
            list_push(&p->q.receipts, m);
        } else {
            if (m->kind == MSG_DEAD_LETTER)
                RCOUNT(p, m->route, dead_lettered);
            kd_pl_msg_done(p, m);
        }
    }
}

/* Serves the producer for up to timeout_ms and settles what it reported. */
void kd_pl_deliver_serve(kd_pipeline *p, int timeout_ms) {
    atomic_store(&p->tick_ms, kd_mono_ms());
    rd_kafka_poll(p->producer, timeout_ms);
    handle_reports(p);
}
