/*
 * kdedup benchmarks - the plain passthrough (see passthrough.h).
 *
 * Built like the pipeline where it costs the same: the consumed message is
 * kept until its delivery report and produced without copying, with its
 * headers copied plus a source header, on the source partition's number;
 * offsets are stored per partition as deliveries are acknowledged (in
 * order: the idempotent producer keeps a partition's order).
 */
#include "bench/passthrough.h"
#include "sidecar/clock.h"
#include "sidecar/kafka.h"

#include <librdkafka/rdkafka.h>

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MAX_PARTITIONS 1024

typedef struct pending {
    rd_kafka_message_t *rkm;
    uint64_t consumed_us;
} pending;

struct kd_passthrough {
    const kd_config *cfg;
    rd_kafka_t *consumer, *producer;
    int out_partitions;
    int64_t acked[MAX_PARTITIONS];  /* next offset to store, per partition */
    int64_t stored[MAX_PARTITIONS]; /* last stored */
    kd_passthrough_stats stats;
    size_t awaiting; /* produced, no report yet */
    kd_histogram latency;
};

static void dr_cb(rd_kafka_t *rk, const rd_kafka_message_t *rkm, void *opaque) {
    kd_passthrough *pt = opaque;
    pending *pm = rkm->_private;
    int32_t part = pm->rkm->partition;

    (void)rk;
    pt->awaiting--;
    if (rkm->err) {
        pt->stats.failed++;
    } else {
        pt->stats.delivered++;
        pt->stats.last_ack_us = kd_mono_us();
        kd_histogram_observe(&pt->latency,
                             (double)(pt->stats.last_ack_us - pm->consumed_us) / 1e6);
        if (part >= 0 && part < MAX_PARTITIONS && pm->rkm->offset + 1 > pt->acked[part])
            pt->acked[part] = pm->rkm->offset + 1;
    }
    rd_kafka_message_destroy(pm->rkm);
    free(pm);
}

static rd_kafka_t *client(kd_passthrough *pt, kd_client which, const char *brokers,
                          char *errstr, size_t errstr_size) {
    rd_kafka_conf_t *conf = kd_kafka_conf(pt->cfg, which, brokers, errstr, errstr_size);
    rd_kafka_t *rk;

    if (!conf)
        return NULL;
    rd_kafka_conf_set_opaque(conf, pt);
    if (which == KD_PRODUCER)
        rd_kafka_conf_set_dr_msg_cb(conf, dr_cb);
    rk = rd_kafka_new(which == KD_CONSUMER ? RD_KAFKA_CONSUMER : RD_KAFKA_PRODUCER, conf,
                      errstr, errstr_size);
    if (!rk)
        rd_kafka_conf_destroy(conf);
    return rk;
}

kd_passthrough *kd_passthrough_new(const kd_config *cfg, const char *brokers,
                                   char *errstr, size_t errstr_size) {
    kd_passthrough *pt = calloc(1, sizeof(*pt));
    rd_kafka_topic_partition_list_t *topics;
    rd_kafka_resp_err_t err;

    if (!pt) {
        snprintf(errstr, errstr_size, "out of memory");
        return NULL;
    }
    pt->cfg = cfg;
    if (!(pt->producer = client(pt, KD_PRODUCER, brokers, errstr, errstr_size)) ||
        !(pt->consumer = client(pt, KD_CONSUMER, brokers, errstr, errstr_size)))
        goto fail;
    pt->out_partitions = kd_kafka_partition_count(pt->producer, cfg->routes[0].to, 10000);
    if (pt->out_partitions <= 0) {
        snprintf(errstr, errstr_size, "topic %s not found", cfg->routes[0].to);
        goto fail;
    }
    rd_kafka_poll_set_consumer(pt->consumer);
    topics = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(topics, cfg->routes[0].from, RD_KAFKA_PARTITION_UA);
    err = rd_kafka_subscribe(pt->consumer, topics);
    rd_kafka_topic_partition_list_destroy(topics);
    if (err) {
        snprintf(errstr, errstr_size, "subscribe: %s", rd_kafka_err2str(err));
        goto fail;
    }
    return pt;
fail:
    kd_passthrough_destroy(pt);
    return NULL;
}

static void produce(kd_passthrough *pt, rd_kafka_message_t *rkm) {
    const kd_route *r = &pt->cfg->routes[0];
    rd_kafka_headers_t *src = NULL, *hdrs;
    pending *pm = malloc(sizeof(*pm));
    rd_kafka_resp_err_t err;
    char source[320];

    if (!pm) {
        pt->stats.failed++;
        rd_kafka_message_destroy(rkm);
        return;
    }
    pm->rkm = rkm;
    pm->consumed_us = kd_mono_us();
    hdrs = rd_kafka_message_headers(rkm, &src) == RD_KAFKA_RESP_ERR_NO_ERROR
               ? rd_kafka_headers_copy(src)
               : rd_kafka_headers_new(1);
    snprintf(source, sizeof(source), "%s/%" PRId32 "/%" PRId64,
             rd_kafka_topic_name(rkm->rkt), rkm->partition, rkm->offset);
    rd_kafka_header_add(hdrs, "kdedup-source", -1, source, -1);
    while ((err = rd_kafka_producev(
                pt->producer, RD_KAFKA_V_TOPIC(r->to),
                RD_KAFKA_V_PARTITION(rkm->partition % pt->out_partitions),
                RD_KAFKA_V_KEY(rkm->key, rkm->key_len),
                RD_KAFKA_V_VALUE(rkm->payload, rkm->len), RD_KAFKA_V_HEADERS(hdrs),
                RD_KAFKA_V_TIMESTAMP(rd_kafka_message_timestamp(rkm, NULL)),
                RD_KAFKA_V_OPAQUE(pm), RD_KAFKA_V_END)) == RD_KAFKA_RESP_ERR__QUEUE_FULL)
        rd_kafka_poll(pt->producer, 10);
    if (err) {
        rd_kafka_headers_destroy(hdrs);
        pt->stats.failed++;
        rd_kafka_message_destroy(rkm);
        free(pm);
        return;
    }
    pt->awaiting++;
}

static void store_offsets(kd_passthrough *pt) {
    rd_kafka_topic_partition_list_t *list = rd_kafka_topic_partition_list_new(8);

    for (int32_t i = 0; i < MAX_PARTITIONS; i++)
        if (pt->acked[i] > pt->stored[i]) {
            rd_kafka_topic_partition_list_add(list, pt->cfg->routes[0].from, i)->offset =
                pt->acked[i];
            pt->stored[i] = pt->acked[i];
        }
    if (list->cnt)
        rd_kafka_offsets_store(pt->consumer, list);
    rd_kafka_topic_partition_list_destroy(list);
}

void kd_passthrough_turn(kd_passthrough *pt) {
    int timeout_ms = pt->awaiting ? 5 : 100; /* as the pipeline waits */

    for (int n = 0; n < pt->cfg->batch_max; n++) {
        rd_kafka_message_t *rkm =
            rd_kafka_consumer_poll(pt->consumer, n ? 0 : timeout_ms);

        if (!rkm)
            break;
        if (rkm->err) {
            rd_kafka_message_destroy(rkm);
            continue;
        }
        if (!pt->stats.consumed++)
            pt->stats.first_us = kd_mono_us();
        produce(pt, rkm);
    }
    rd_kafka_poll(pt->producer, 0);
    store_offsets(pt);
}

void kd_passthrough_stats_get(const kd_passthrough *pt, kd_passthrough_stats *out) {
    *out = pt->stats;
}

const kd_histogram *kd_passthrough_latency(const kd_passthrough *pt) {
    return &pt->latency;
}

void kd_passthrough_destroy(kd_passthrough *pt) {
    if (!pt)
        return;
    if (pt->producer) {
        rd_kafka_flush(pt->producer, 10000);
        rd_kafka_purge(pt->producer, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
        rd_kafka_poll(pt->producer, 100);
    }
    if (pt->consumer) {
        store_offsets(pt);
        rd_kafka_commit(pt->consumer, NULL, 0);
        rd_kafka_consumer_close(pt->consumer);
        rd_kafka_destroy(pt->consumer);
    }
    if (pt->producer)
        rd_kafka_destroy(pt->producer);
    free(pt);
}
