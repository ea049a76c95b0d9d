/*
 * kdedup benchmarks - topics made on a real cluster (see admin.h).
 */
#include "bench/admin.h"

#include <librdkafka/rdkafka.h>

#include <stdio.h>
#include <time.h>

/* Waits (up to 30 s) until every partition of a topic just created answers
 * for its offsets: on Apache Kafka its leaders take a moment to learn it
 * (NOT_LEADER_FOR_PARTITION meanwhile failed bench_e2e's kdedup run). */
static bool topic_ready(rd_kafka_t *rk, const char *name, int partitions) {
    struct timespec tick = {0, 100 * 1000000L};
    int64_t lo, hi;

    for (int i = 0; i < partitions; i++)
        for (int tries = 0; rd_kafka_query_watermark_offsets(rk, name, i, &lo, &hi, 1000);
             tries++) {
            if (tries == 300)
                return false;
            nanosleep(&tick, NULL);
        }
    return true;
}

bool bench_admin_topic(const char *bootstrap, const char *name, int partitions) {
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_NewTopic_t *nt = NULL;
    rd_kafka_queue_t *q = NULL;
    rd_kafka_event_t *ev = NULL;
    rd_kafka_t *rk;
    char err[256];
    bool ok = false;

    rd_kafka_conf_set(conf, "bootstrap.servers", bootstrap, NULL, 0);
    if (!(rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof(err)))) {
        rd_kafka_conf_destroy(conf);
        fprintf(stderr, "bench: admin client: %s\n", err);
        return false;
    }
    if ((nt = rd_kafka_NewTopic_new(name, partitions, -1, err, sizeof(err))) &&
        (q = rd_kafka_queue_new(rk))) {
        rd_kafka_CreateTopics(rk, &nt, 1, NULL, q);
        if ((ev = rd_kafka_queue_poll(q, 30000))) {
            const rd_kafka_CreateTopics_result_t *res =
                rd_kafka_event_CreateTopics_result(ev);
            size_t n = 0;
            const rd_kafka_topic_result_t **tr =
                res ? rd_kafka_CreateTopics_result_topics(res, &n) : NULL;

            ok = n == 1 &&
                 rd_kafka_topic_result_error(tr[0]) == RD_KAFKA_RESP_ERR_NO_ERROR &&
                 topic_ready(rk, name, partitions);
            if (!ok)
                fprintf(stderr, "bench: creating %s: %s\n", name,
                        n == 1 ? rd_kafka_topic_result_error_string(tr[0])
                               : rd_kafka_event_error_string(ev));
        }
    }
    if (ev)
        rd_kafka_event_destroy(ev);
    if (q)
        rd_kafka_queue_destroy(q);
    if (nt)
        rd_kafka_NewTopic_destroy(nt);
    rd_kafka_destroy(rk);
    return ok;
}
