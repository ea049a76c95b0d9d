/*
 * kdedup - forget records (see forgets.h).
 */
#include "sidecar/forgets.h"
#include "sidecar/kafka.h"
#include "sidecar/headers.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#define WRITE_TIMEOUT_MS 10000 /* the producer gives up on the record */
#define FLUSH_MS 15000         /* and its answer is waited for at most this */

/* What the delivery report said. */
typedef struct written {
    bool reported;
    rd_kafka_resp_err_t err;
    int64_t offset;
} written;

static void on_report(rd_kafka_t *rk, const rd_kafka_message_t *rkm, void *opaque) {
    written *w = rkm->_private;

    (void)rk;
    (void)opaque;
    w->reported = true;
    w->err = rkm->err;
    w->offset = rkm->offset;
}

/* f's headers, signed with signing_key when there is one; NULL when the
 * signature cannot be made. */
static rd_kafka_headers_t *headers_of(const kd_forget_record *f,
                                      const char *signing_key) {
    rd_kafka_headers_t *h = rd_kafka_headers_new(6);
    char source[KD_HEADERS_SOURCE_MAX], at[KD_HEADERS_AT_MAX];
    kd_headers_stamp s = {
        .from = f->from,
        .to = f->to,
        .source = kd_headers_source_format(source, sizeof(source), f->from,
                                           f->src_partition, f->src_offset),
        .run = KD_FORGET_RUN,
        .at = kd_headers_at_format(at, sizeof(at), f->at_ms),
        .key = f->key,
        .key_len = f->key_len,
        .key_header = true,
        .forget = true,
    };
    kd_signer *signer;
    bool ok = true;

    kd_headers_add_stamp(h, &s);
    if (signing_key) {
        ok = (signer = kd_signer_new(signing_key)) &&
             kd_headers_add_signature(h, signer, &s);
        kd_signer_destroy(signer);
    }
    if (!ok) {
        rd_kafka_headers_destroy(h);
        return NULL;
    }
    return h;
}

bool kd_forgets_write(const kd_config *cfg, const char *brokers,
                      const kd_forget_record *f, int64_t *offset, char *errstr,
                      size_t errstr_size) {
    rd_kafka_conf_t *conf = kd_kafka_conf(cfg, KD_PRODUCER, brokers, errstr, errstr_size);
    rd_kafka_headers_t *h = NULL;
    rd_kafka_t *rk = NULL;
    written w = {0};
    char timeout[16];
    rd_kafka_resp_err_t err;

    if (!conf)
        return false;
    snprintf(timeout, sizeof(timeout), "%d", WRITE_TIMEOUT_MS);
    rd_kafka_conf_set(conf, "message.timeout.ms", timeout, NULL, 0);
    rd_kafka_conf_set(conf, "client.id", "kdedup-admin", NULL, 0);
    /* One record, on its own: never in a transaction, whatever the
     * pipeline's delivery mode (the pipeline's transactional.id would fence
     * its producer, and the record would wait for a commit that never comes) */
    rd_kafka_conf_set(conf, "transactional.id", NULL, NULL, 0);
    rd_kafka_conf_set_dr_msg_cb(conf, on_report);
    if (!(rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, errstr_size))) {
        rd_kafka_conf_destroy(conf);
        return false;
    }
    if (!(h = headers_of(f, cfg->signing_key))) {
        snprintf(errstr, errstr_size, "libcrypto: the forget record cannot be signed");
        goto done;
    }
    err =
        rd_kafka_producev(rk, RD_KAFKA_V_TOPIC(f->to), RD_KAFKA_V_PARTITION(f->partition),
                          RD_KAFKA_V_HEADERS(h), RD_KAFKA_V_OPAQUE(&w), RD_KAFKA_V_END);
    if (err) {
        rd_kafka_headers_destroy(h);
        snprintf(errstr, errstr_size, "%s/%" PRId32 ": %s", f->to, f->partition,
                 rd_kafka_err2str(err));
        goto done;
    }
    rd_kafka_flush(rk, FLUSH_MS);
    if (!w.reported)
        snprintf(errstr, errstr_size, "%s/%" PRId32 ": no answer from the broker in %ds",
                 f->to, f->partition, FLUSH_MS / 1000);
    else if (w.err)
        snprintf(errstr, errstr_size, "%s/%" PRId32 ": %s", f->to, f->partition,
                 rd_kafka_err2str(w.err));
    else
        *offset = w.offset;
done:
    rd_kafka_destroy(rk); /* purges what was not answered */
    return w.reported && !w.err;
}
