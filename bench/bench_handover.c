/*
 * kdedup benchmarks - the cost of a handover (RELIABILITY.md): how long a
 * replica with an empty store takes to learn the history of the partitions
 * it is given.
 *
 *   bench_handover [--records N] [--partitions P] [--dir DIR] [--brokers B]
 *
 * An embedded mock cluster's (or, with --brokers, a real cluster's, where
 * topics "in" and "out" are created) downstream topic is filled with N records as
 * kdedup forwards them (an Idempotency-Key and a kdedup-source header,
 * 100-byte values; lz4, since the mock keeps only 5 MB of a partition) over
 * P partitions (default 10^6 and 8). Then a pipeline with an empty, synced
 * RocksDB store joins the group: each partition is paused until the
 * histories of all are read and every key recorded as completed. Reported:
 * the time from the start, and from the assignment, until every partition
 * was handed over, the handover scans' own time
 * (kdedup_handover_scan_seconds_total), records read and keys learned.
 *
 * Exit 0 only if every record was read and every key learned.
 */
#include "bench/admin.h"
#include "config/config.h"
#include "sidecar/clock.h"
#include "sidecar/kafka.h"
#include "sidecar/log.h"
#include "sidecar/metrics.h"
#include "sidecar/pipeline.h"

#include <librdkafka/rdkafka.h>

#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define TIMEOUT_S 900

static void *pipeline_thread(void *p) {
    kd_pipeline_run(p);
    return NULL;
}

/* Fills topic "out" with n records of kdedup's shape over parts partitions. */
static bool fill(const char *brokers, long n, int parts) {
    char err[512], key[32], source[64], value[101];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_t *rk;

    memset(value, 'x', 100);
    value[100] = '\0';
    if (rd_kafka_conf_set(conf, "bootstrap.servers", brokers, err, sizeof(err)) ||
        rd_kafka_conf_set(conf, "linger.ms", "20", err, sizeof(err)) ||
        /* the mock keeps 5 MB a partition: compressed, 10^6 records fit */
        rd_kafka_conf_set(conf, "compression.type", "lz4", err, sizeof(err)) ||
        !(rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof(err)))) {
        fprintf(stderr, "producer: %s\n", err);
        return false;
    }
    for (long i = 0; i < n; i++) {
        int32_t part = (int32_t)(i % parts);
        rd_kafka_headers_t *h = rd_kafka_headers_new(2);
        rd_kafka_resp_err_t e;

        snprintf(key, sizeof(key), "key-%ld", i);
        snprintf(source, sizeof(source), "in/%" PRId32 "/%ld", part, i / parts);
        rd_kafka_header_add(h, "Idempotency-Key", -1, key, -1);
        rd_kafka_header_add(h, "kdedup-source", -1, source, -1);
        while ((e = rd_kafka_producev(rk, RD_KAFKA_V_TOPIC("out"),
                                      RD_KAFKA_V_PARTITION(part),
                                      RD_KAFKA_V_VALUE(value, 100), RD_KAFKA_V_HEADERS(h),
                                      RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                                      RD_KAFKA_V_END)) == RD_KAFKA_RESP_ERR__QUEUE_FULL)
            rd_kafka_poll(rk, 10);
        if (e) {
            fprintf(stderr, "produce: %s\n", rd_kafka_err2str(e));
            rd_kafka_headers_destroy(h);
            rd_kafka_destroy(rk);
            return false;
        }
        rd_kafka_poll(rk, 0);
    }
    bool ok = rd_kafka_flush(rk, 120000) == RD_KAFKA_RESP_ERR_NO_ERROR;
    rd_kafka_destroy(rk);
    return ok;
}

static int usage(void) {
    fprintf(stderr, "usage: bench_handover [--records N] [--partitions P] [--dir DIR] "
                    "[--brokers B]\n");
    return 2;
}

int main(int argc, char **argv) {
    long records = 1000000;
    int parts = 8;
    const char *base = "/tmp", *brokers = NULL;
    char err[1024], dir[600], json[2048];
    kd_mock *mock = NULL;
    kd_config *cfg = NULL;
    kd_store *store = NULL;
    kd_pipeline *p = NULL;
    kd_pipeline_stats st = {0};
    pthread_t tid;
    bool ok = false;

    for (int i = 1; i < argc; i += 2) {
        if (i + 1 == argc)
            return usage();
        if (!strcmp(argv[i], "--records"))
            records = atol(argv[i + 1]);
        else if (!strcmp(argv[i], "--partitions"))
            parts = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--dir"))
            base = argv[i + 1];
        else if (!strcmp(argv[i], "--brokers"))
            brokers = argv[i + 1];
        else
            return usage();
    }
    if (records < 1 || parts < 1)
        return usage();
    kd_log_set_level(KD_LOG_WARN);
    snprintf(dir, sizeof(dir), "%s/kdedup-bench-handover-XXXXXX", base);
    if (!mkdtemp(dir) || (!brokers && !(mock = kd_mock_start(1, err, sizeof(err))))) {
        fprintf(stderr, "setup: %s\n", err);
        return 1;
    }
    if (brokers ? !bench_admin_topic(brokers, "in", parts) ||
                      !bench_admin_topic(brokers, "out", parts)
                : kd_mock_topic(mock, "in", parts) || kd_mock_topic(mock, "out", parts))
        goto out;
    if (!brokers)
        brokers = kd_mock_bootstraps(mock);
    double t0 = (kd_mono_us() / 1e6);
    if (!fill(brokers, records, parts))
        goto out;
    printf("# filled out with %ld records over %d partitions in %.1f s\n", records, parts,
           (kd_mono_us() / 1e6) - t0);
    snprintf(json, sizeof(json),
             "{\"kafka\": {\"brokers\": \"%s\", \"group_id\": \"bench-handover\"},"
             " \"routes\": [{\"from\": \"in\", \"to\": \"out\", \"on_missing_key\": "
             "\"forward\"}], \"store\": {\"path\": \"%s/store\"},"
             " \"dedup\": {\"scan_max_records\": %ld}}",
             brokers, dir, records);
    if (!(cfg = kd_config_parse(json, strlen(json), "bench.json", err, sizeof(err))) ||
        !(store =
              kd_pipeline_open_store(cfg, KD_PIPELINE_STORE_OWNER, err, sizeof(err))) ||
        !(p = kd_pipeline_new(cfg, store, brokers, err, sizeof(err)))) {
        fprintf(stderr, "pipeline: %s\n", err);
        goto out;
    }
    t0 = (kd_mono_us() / 1e6);
    pthread_create(&tid, NULL, pipeline_thread, p);
    kd_metrics *m = kd_pipeline_metrics(p);
    double assigned = 0;
    do {
        nanosleep(&(struct timespec){0, 10 * 1000 * 1000}, NULL);
        kd_pipeline_stats_get(p, &st);
        if (!assigned && st.assigned_partitions >= (uint64_t)parts)
            assigned = kd_mono_us() / 1e6;
    } while ((st.assigned_partitions < (uint64_t)parts ||
              atomic_load(kd_metrics_handover_pending(m))) &&
             (kd_mono_us() / 1e6) - t0 < TIMEOUT_S);
    double wall = (kd_mono_us() / 1e6) - t0;
    double scan = (double)atomic_load(kd_metrics_handover_us(m)) / 1e6;
    kd_pipeline_stop(p);
    pthread_join(tid, NULL);
    ok =
        st.handover_records == (uint64_t)records && st.handover_keys == (uint64_t)records;
    printf(
        "# handover of %d partitions, empty synced store: %.2f s from start (group join "
        "included), %.2f s from the assignment, %.2f s in handover scans; %" PRIu64
        " records read (%.0f/s of scan time), %" PRIu64 " keys learned%s\n",
        parts, wall, assigned ? t0 + wall - assigned : 0, scan, st.handover_records,
        scan > 0 ? st.handover_records / scan : 0, st.handover_keys,
        ok ? "" : " (INCOMPLETE)");
out:
    kd_pipeline_destroy(p);
    kd_store_destroy(store);
    kd_config_destroy(cfg);
    kd_mock_stop(mock);
    snprintf(json, sizeof(json), "rm -rf '%s'", dir);
    if (system(json) != 0)
        fprintf(stderr, "could not remove %s\n", dir);
    return ok ? 0 : 1;
}
