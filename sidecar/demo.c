/*
 * kdedup - `kdedup demo`: the whole pipeline on one machine, with nothing to
 * set up. Starts an embedded mock cluster, produces a stream in which a share
 * of the messages repeat an earlier idempotency key, runs the real pipeline
 * over it with a temporary RocksDB store (synced), reads the downstream
 * topic back and checks that it holds every unique key exactly once.
 *
 *   kdedup demo [--messages N] [--duplicates PCT] [--partitions P]
 *
 * Exit 0 only if the check passes.
 */
#define _XOPEN_SOURCE 700 /* nftw */
#include "config/config.h"
#include "sidecar/kafka.h"
#include "sidecar/log.h"
#include "sidecar/pipeline.h"
#include "sidecar/tools.h"
#include "store_rocks/store_rocks.h"

#include <librdkafka/rdkafka.h>

#include <ftw.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define IN_TOPIC "demo.orders"
#define OUT_TOPIC "demo.orders.deduped"
#define KEY_HEADER "Idempotency-Key"
#define TIMEOUT_S 600

typedef struct demo {
    long messages;
    int dup_pct;
    int partitions;
    long unique; /* distinct keys produced */
    char dir[256];
    kd_mock *mock;
} demo;

static double now_s(void) {
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static rd_kafka_t *client(demo *d, rd_kafka_type_t type, const char *group) {
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    char err[256];
    rd_kafka_t *rk;

    rd_kafka_conf_set(conf, "bootstrap.servers", kd_mock_bootstraps(d->mock), NULL, 0);
    if (group)
        rd_kafka_conf_set(conf, "group.id", group, NULL, 0);
    else
        rd_kafka_conf_set(conf, "linger.ms", "20", NULL, 0);
    if (!(rk = rd_kafka_new(type, conf, err, sizeof(err)))) {
        fprintf(stderr, "demo: %s\n", err);
        rd_kafka_conf_destroy(conf);
    }
    return rk;
}

/* Produces the input: message i repeats an earlier key with probability
 * dup_pct%, else takes a new one. */
static bool produce_input(demo *d) {
    rd_kafka_t *rk = client(d, RD_KAFKA_PRODUCER, NULL);
    char key[32], value[128];
    unsigned seed = 42;

    if (!rk)
        return false;
    for (long i = 0; i < d->messages; i++) {
        long id = d->unique > 0 && (long)(rand_r(&seed) % 100) < d->dup_pct
                      ? (long)(rand_r(&seed) % (unsigned)d->unique)
                      : d->unique++;
        int klen = snprintf(key, sizeof(key), "order-%08ld", id);
        int vlen = snprintf(value, sizeof(value),
                            "{\"order\":%ld,\"seq\":%ld,\"amount\":%ld.%02ld,"
                            "\"currency\":\"EUR\",\"note\":\"kdedup demo\"}",
                            id, i, id % 997, id % 100);
        rd_kafka_resp_err_t err;

        while ((err = rd_kafka_producev(rk, RD_KAFKA_V_TOPIC(IN_TOPIC),
                                        RD_KAFKA_V_KEY(key, (size_t)klen),
                                        RD_KAFKA_V_VALUE(value, (size_t)vlen),
                                        RD_KAFKA_V_HEADER(KEY_HEADER, key, klen),
                                        RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                                        RD_KAFKA_V_END)) == RD_KAFKA_RESP_ERR__QUEUE_FULL)
            rd_kafka_poll(rk, 10);
        if (err) {
            fprintf(stderr, "demo: produce: %s\n", rd_kafka_err2str(err));
            rd_kafka_destroy(rk);
            return false;
        }
    }
    rd_kafka_flush(rk, 60000);
    rd_kafka_destroy(rk);
    return true;
}

static void *run_pipeline(void *p) {
    kd_pipeline_run(p);
    return NULL;
}

/* Runs the pipeline until it has consumed everything and settled it. */
static bool run(demo *d, kd_pipeline_stats *st, double *secs) {
    char json[1024], err[1024];
    kd_config *cfg;
    kd_store *store = NULL;
    kd_pipeline *p = NULL;
    pthread_t tid;
    double t0, deadline;
    bool ok = false;

    snprintf(json, sizeof(json),
             "{\"kafka\": {\"brokers\": \"mock:1\", \"group_id\": \"kdedup-demo\"},"
             " \"routes\": [{\"from\": \"" IN_TOPIC "\", \"to\": \"" OUT_TOPIC "\","
             " \"key_header\": \"" KEY_HEADER "\", \"on_missing_key\": \"forward\"}],"
             " \"store\": {\"path\": \"%s/store\", \"sync\": true},"
             " \"log\": {\"level\": \"warn\"}}",
             d->dir);
    if (!(cfg = kd_config_parse(json, strlen(json), "demo", err, sizeof(err))) ||
        !(store = kd_rocks_open(cfg->store_path, cfg->store_sync, err, sizeof(err))) ||
        !(p = kd_pipeline_new(cfg, store, kd_mock_bootstraps(d->mock), err,
                              sizeof(err)))) {
        fprintf(stderr, "demo: %s\n", err);
        goto done;
    }
    t0 = now_s();
    deadline = t0 + TIMEOUT_S;
    pthread_create(&tid, NULL, run_pipeline, p);
    do {
        nanosleep(&(struct timespec){0, 20 * 1000 * 1000}, NULL);
        kd_pipeline_stats_get(p, st);
    } while ((st->consumed < (uint64_t)d->messages || st->inflight) &&
             now_s() < deadline);
    *secs = now_s() - t0;
    kd_pipeline_stop(p);
    pthread_join(tid, NULL);
    kd_pipeline_stats_get(p, st);
    ok = st->consumed == (uint64_t)d->messages && st->inflight == 0;
    if (!ok)
        fprintf(stderr, "demo: timed out after %ds\n", TIMEOUT_S);
done:
    kd_pipeline_destroy(p);
    kd_store_destroy(store);
    kd_config_destroy(cfg);
    return ok;
}

/* Reads the downstream topic and counts each key: returns how many keys
 * appear exactly once; *bad counts keys missing or repeated. */
static long verify(demo *d, long *bad, long *downstream) {
    rd_kafka_t *rk = client(d, RD_KAFKA_CONSUMER, "kdedup-demo-verify");
    rd_kafka_topic_partition_list_t *parts =
        rd_kafka_topic_partition_list_new(d->partitions);
    unsigned char *seen = calloc((size_t)d->unique + 1, 1);
    double quiet_until = now_s() + 10;
    long once = 0;

    *bad = d->unique;
    *downstream = 0;
    if (!rk || !seen)
        goto done;
    for (int i = 0; i < d->partitions; i++)
        rd_kafka_topic_partition_list_add(parts, OUT_TOPIC, i)->offset =
            RD_KAFKA_OFFSET_BEGINNING;
    rd_kafka_assign(rk, parts);
    while (*downstream < d->unique + 1 && now_s() < quiet_until) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 100);
        rd_kafka_headers_t *h;
        const void *v;
        size_t n;
        long id;

        if (!m)
            continue;
        if (!m->err && !rd_kafka_message_headers(m, &h) &&
            !rd_kafka_header_get(h, 0, KEY_HEADER, &v, &n) && n < 32 &&
            sscanf((const char *)v, "order-%8ld", &id) == 1 && id >= 0 &&
            id < d->unique) {
            seen[id] += seen[id] < 255;
            (*downstream)++;
            quiet_until = now_s() + 2; /* stop 2s after the last message */
        }
        rd_kafka_message_destroy(m);
    }
    for (long i = 0; i < d->unique; i++)
        once += seen[i] == 1;
    *bad = d->unique - once;
done:
    rd_kafka_topic_partition_list_destroy(parts);
    if (rk) {
        rd_kafka_consumer_close(rk);
        rd_kafka_destroy(rk);
    }
    free(seen);
    return once;
}

static bool parse_args(demo *d, int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        long v = i + 1 < argc ? strtol(argv[i + 1], NULL, 10) : -1;

        if (!strcmp(argv[i], "--messages") && v >= 1 && v <= 10000000)
            d->messages = v;
        else if (!strcmp(argv[i], "--duplicates") && v >= 0 && v <= 99)
            d->dup_pct = (int)v;
        else if (!strcmp(argv[i], "--partitions") && v >= 1 && v <= 64)
            d->partitions = (int)v;
        else
            return false;
        i++;
    }
    return true;
}

int kd_demo_main(int argc, char **argv) {
    demo d = {.messages = 100000, .dup_pct = 20, .partitions = 8};
    kd_pipeline_stats st = {0};
    const char *tmp = getenv("TMPDIR");
    char err[512];
    long bad = 0, downstream = 0, once;
    double secs = 0;
    bool ok;

    if (!parse_args(&d, argc, argv)) {
        fprintf(stderr, "usage: kdedup demo [--messages 1-10000000] [--duplicates 0-99] "
                        "[--partitions 1-64]\n");
        return 2;
    }
    kd_log_set_level(KD_LOG_WARN);
    snprintf(d.dir, sizeof(d.dir), "%s/kdedup-demo-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(d.dir) || !(d.mock = kd_mock_start(1, err, sizeof(err)))) {
        fprintf(stderr, "demo: %s\n",
                d.mock ? "cannot create a temporary directory" : err);
        return 1;
    }
    kd_mock_topic(d.mock, IN_TOPIC, d.partitions);
    kd_mock_topic(d.mock, OUT_TOPIC, d.partitions);
    printf("kdedup demo: %ld messages, %d%% repeating an earlier key, %d partitions\n",
           d.messages, d.dup_pct, d.partitions);
    fflush(stdout);
    ok = produce_input(&d) && run(&d, &st, &secs);
    once = ok ? verify(&d, &bad, &downstream) : 0;
    ok = ok && bad == 0 && downstream == d.unique;
    printf("  consumed               %10llu\n"
           "  forwarded              %10llu\n"
           "  duplicates suppressed  %10llu\n"
           "  unique keys produced   %10ld\n"
           "  downstream messages    %10ld\n"
           "  keys exactly once      %10ld\n"
           "  throughput             %10.0f msgs/s (synced RocksDB store)\n"
           "%s\n",
           (unsigned long long)st.consumed, (unsigned long long)st.forwarded,
           (unsigned long long)(st.duplicates_completed + st.duplicates_in_flight),
           d.unique, downstream, once, secs > 0 ? (double)st.consumed / secs : 0.0,
           ok ? "OK: every unique key downstream exactly once"
              : "FAILED: downstream does not hold every unique key exactly once");
    kd_mock_stop(d.mock);
    nftw(d.dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
    return ok ? 0 : 1;
}
