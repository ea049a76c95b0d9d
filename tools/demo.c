/*
 * kdedup - `kdedup demo`: the whole pipeline on one machine, with nothing to
 * set up. Starts an embedded mock cluster, produces a stream in which a share
 * of the messages are retries (an earlier message again: same key, same
 * payload), then a few key conflicts on purpose (an earlier key with another
 * payload), runs the real pipeline over it with a temporary RocksDB store
 * (synced), reads the downstream topic back and checks that it holds every
 * unique key exactly once, with its first payload, and that the summary's
 * duplicates and conflicts are the ones produced.
 *
 *   kdedup demo [--messages N] [--duplicates PCT] [--conflicts N] [--partitions P]
 *
 * The temporary store goes under $TMPDIR (else /tmp): a container with a
 * read-only root has no writable /tmp, and points TMPDIR at its volume.
 *
 * Exit 0 only if the check passes; every failure says what failed.
 */
#define _XOPEN_SOURCE 700 /* nftw */
#include "config/config.h"
#include "sidecar/kafka.h"
#include "sidecar/log.h"
#include "sidecar/pipeline.h"
#include "tools/tools.h"
#include "store_rocks/store_rocks.h"

#include <librdkafka/rdkafka.h>

#include <errno.h>
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
    long messages; /* in all: retries and conflicts included */
    int dup_pct;
    long conflicts; /* asked for; at most messages / 100 are made */
    int partitions;
    long unique;     /* distinct keys produced */
    long retries;    /* earlier messages produced again */
    long conflicted; /* earlier keys produced with another payload */
    char dir[4096];
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

    if (rd_kafka_conf_set(conf, "bootstrap.servers", kd_mock_bootstraps(d->mock), err,
                          sizeof(err)) != RD_KAFKA_CONF_OK ||
        rd_kafka_conf_set(conf, group ? "group.id" : "linger.ms", group ? group : "20",
                          err, sizeof(err)) != RD_KAFKA_CONF_OK ||
        !(rk = rd_kafka_new(type, conf, err, sizeof(err)))) {
        fprintf(stderr, "demo: cannot create the %s client: %s\n",
                type == RD_KAFKA_PRODUCER ? "producer" : "verifying consumer", err);
        rd_kafka_conf_destroy(conf);
        return NULL;
    }
    return rk; /* rd_kafka_new() took the conf */
}

/* The payload of order id: the same bytes every time it is sent, unless
 * conflict (then another amount: a key reused for another payload). */
static int payload(long id, bool conflict, char *out, size_t size) {
    return snprintf(out, size,
                    "{\"order\":%ld,\"amount\":%ld.%02ld,\"currency\":\"EUR\","
                    "\"note\":\"kdedup demo\"}",
                    id, id % 997 + (conflict ? 1000 : 0), id % 100);
}

/* Produces order id (conflict: with another payload). */
static bool produce_one(rd_kafka_t *rk, long id, bool conflict) {
    char key[32], value[128];
    int klen = snprintf(key, sizeof(key), "order-%08ld", id);
    int vlen = payload(id, conflict, value, sizeof(value));
    rd_kafka_resp_err_t err;

    while ((err = rd_kafka_producev(rk, RD_KAFKA_V_TOPIC(IN_TOPIC),
                                    RD_KAFKA_V_KEY(key, (size_t)klen),
                                    RD_KAFKA_V_VALUE(value, (size_t)vlen),
                                    RD_KAFKA_V_HEADER(KEY_HEADER, key, klen),
                                    RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                                    RD_KAFKA_V_END)) == RD_KAFKA_RESP_ERR__QUEUE_FULL)
        rd_kafka_poll(rk, 10);
    if (err)
        fprintf(stderr, "demo: producing the input to %s: %s\n", IN_TOPIC,
                rd_kafka_err2str(err));
    return err == RD_KAFKA_RESP_ERR_NO_ERROR;
}

/* Produces the input: message i is a retry of an earlier one (same key and
 * payload) with probability dup_pct%, else a new order; then the conflicts,
 * spread over the keys, after their originals (the record key puts both on
 * one partition, so they come in that order). */
static bool produce_input(demo *d) {
    rd_kafka_t *rk = client(d, RD_KAFKA_PRODUCER, NULL);
    long plain = d->messages - d->conflicted;
    unsigned seed = 42;
    bool ok = rk != NULL;

    for (long i = 0; ok && i < plain; i++) {
        bool retry = d->unique > 0 && (long)(rand_r(&seed) % 100) < d->dup_pct;
        long id = retry ? (long)(rand_r(&seed) % (unsigned)d->unique) : d->unique++;

        d->retries += retry;
        ok = produce_one(rk, id, false);
    }
    for (long k = 0; ok && k < d->conflicted; k++)
        ok = produce_one(rk, k * d->unique / d->conflicted, true);
    if (ok && rd_kafka_flush(rk, 60000) != RD_KAFKA_RESP_ERR_NO_ERROR) {
        fprintf(stderr, "demo: producing the input to %s: %d messages unsent after 60s\n",
                IN_TOPIC, rd_kafka_outq_len(rk));
        ok = false;
    }
    if (rk)
        rd_kafka_destroy(rk);
    return ok;
}

static void *run_pipeline(void *p) {
    kd_pipeline_run(p);
    return NULL;
}

/* Runs the pipeline until it has consumed everything and settled it. */
static bool run(demo *d, kd_pipeline_stats *st, double *secs) {
    char json[5120], err[1024];
    kd_config *cfg;
    kd_store *store = NULL;
    kd_pipeline *p = NULL;
    pthread_t tid;
    double t0, deadline;
    bool ok = false;
    int rc;

    snprintf(json, sizeof(json),
             "{\"kafka\": {\"brokers\": \"mock:1\", \"group_id\": \"kdedup-demo\"},"
             " \"routes\": [{\"from\": \"" IN_TOPIC "\", \"to\": \"" OUT_TOPIC "\","
             " \"key_header\": \"" KEY_HEADER "\", \"on_missing_key\": \"forward\"}],"
             " \"store\": {\"path\": \"%s/store\", \"sync\": true},"
             " \"log\": {\"level\": \"warn\"}}",
             d->dir);
    if (!(cfg = kd_config_parse(json, strlen(json), "demo", err, sizeof(err)))) {
        fprintf(stderr, "demo: its configuration: %s\n", err);
        goto done;
    }
    if (!(store =
              kd_pipeline_open_store(cfg, KD_PIPELINE_STORE_OWNER, err, sizeof(err)))) {
        fprintf(stderr, "demo: cannot open the store %s: %s\n", cfg->store_path, err);
        goto done;
    }
    if (!(p = kd_pipeline_new(cfg, store, kd_mock_bootstraps(d->mock), err,
                              sizeof(err)))) {
        fprintf(stderr, "demo: cannot create the pipeline: %s\n", err);
        goto done;
    }
    t0 = now_s();
    deadline = t0 + TIMEOUT_S;
    if ((rc = pthread_create(&tid, NULL, run_pipeline, p)) != 0) {
        fprintf(stderr, "demo: cannot start the pipeline thread: %s\n", strerror(rc));
        goto done;
    }
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
        fprintf(stderr,
                "demo: the pipeline did not settle within %ds: %llu of %ld consumed, "
                "%llu in flight\n",
                TIMEOUT_S, (unsigned long long)st->consumed, d->messages,
                (unsigned long long)st->inflight);
done:
    kd_pipeline_destroy(p);
    kd_store_destroy(store);
    kd_config_destroy(cfg);
    return ok;
}

/* True when m holds order id with its original payload. */
static bool original(const rd_kafka_message_t *m, long id) {
    char value[128];
    int n = payload(id, false, value, sizeof(value));

    return m->len == (size_t)n && !memcmp(m->payload, value, (size_t)n);
}

/* Reads the downstream topic and counts each key: returns how many keys
 * appear exactly once, with their original payload; *bad counts keys
 * missing, repeated, or forwarded with a conflicting payload. */
static long verify(demo *d, long *bad, long *downstream) {
    rd_kafka_t *rk = client(d, RD_KAFKA_CONSUMER, "kdedup-demo-verify");
    rd_kafka_topic_partition_list_t *parts =
        rd_kafka_topic_partition_list_new(d->partitions);
    unsigned char *seen = calloc((size_t)d->unique + 1, 1);
    double quiet_until = now_s() + 10;
    rd_kafka_resp_err_t aerr;
    long once = 0;

    *bad = d->unique;
    *downstream = 0;
    if (!rk || !parts || !seen) {
        if (rk)
            fprintf(stderr, "demo: out of memory for the verification\n");
        goto done;
    }
    for (int i = 0; i < d->partitions; i++)
        rd_kafka_topic_partition_list_add(parts, OUT_TOPIC, i)->offset =
            RD_KAFKA_OFFSET_BEGINNING;
    if ((aerr = rd_kafka_assign(rk, parts)) != RD_KAFKA_RESP_ERR_NO_ERROR) {
        fprintf(stderr, "demo: cannot assign %s to the verifying consumer: %s\n",
                OUT_TOPIC, rd_kafka_err2str(aerr));
        goto done;
    }
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
            seen[id] = original(m, id) ? seen[id] + (seen[id] < 255) : 255;
            (*downstream)++;
            quiet_until = now_s() + 2; /* stop 2s after the last message */
        }
        rd_kafka_message_destroy(m);
    }
    for (long i = 0; i < d->unique; i++)
        once += seen[i] == 1;
    *bad = d->unique - once;
done:
    if (parts)
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
        else if (!strcmp(argv[i], "--conflicts") && v >= 0 && v <= 100000)
            d->conflicts = v;
        else if (!strcmp(argv[i], "--partitions") && v >= 1 && v <= 64)
            d->partitions = (int)v;
        else
            return false;
        i++;
    }
    return true;
}

/* Creates d->dir, a new directory under $TMPDIR (else /tmp). On failure
 * returns false with errstr saying where and why. */
static bool make_dir(demo *d, char *errstr, size_t errstr_size) {
    const char *tmp = getenv("TMPDIR");
    const char *base = tmp && *tmp ? tmp : "/tmp";
    const char *from = tmp && *tmp ? "TMPDIR" : "the default, TMPDIR is not set";
    int n = snprintf(d->dir, sizeof(d->dir), "%s/kdedup-demo-XXXXXX", base);

    if (n < 0 || (size_t)n >= sizeof(d->dir)) {
        snprintf(errstr, errstr_size,
                 "cannot create a temporary directory in %s (%s): %s", base, from,
                 strerror(ENAMETOOLONG));
        d->dir[0] = '\0';
        return false;
    }
    if (!mkdtemp(d->dir)) {
        snprintf(errstr, errstr_size,
                 "cannot create a temporary directory in %s (%s): %s; "
                 "set TMPDIR to a writable directory",
                 base, from, strerror(errno));
        d->dir[0] = '\0';
        return false;
    }
    return true;
}

/* Starts the mock cluster with the demo's two topics. On failure returns
 * false with errstr set. */
static bool start_mock(demo *d, char *errstr, size_t errstr_size) {
    char err[512];
    int rc;

    if (!(d->mock = kd_mock_start(1, err, sizeof(err)))) {
        snprintf(errstr, errstr_size, "cannot start the mock cluster: %s", err);
        return false;
    }
    if ((rc = kd_mock_topic(d->mock, IN_TOPIC, d->partitions)) != 0 ||
        (rc = kd_mock_topic(d->mock, OUT_TOPIC, d->partitions)) != 0) {
        snprintf(errstr, errstr_size, "cannot create the mock cluster's topics: %s",
                 rd_kafka_err2str((rd_kafka_resp_err_t)rc));
        return false;
    }
    return true;
}

/* Prints the summary; ok says whether the checks passed. */
static void summary(const demo *d, const kd_pipeline_stats *st, long downstream,
                    long once, double secs, bool ok) {
    /* The demo's route skips conflicts: they count among the duplicates. */
    uint64_t skipped = st->duplicates_completed + st->duplicates_in_flight;

    printf("  consumed                   %10llu\n"
           "  forwarded                  %10llu\n"
           "  retries suppressed         %10llu  (same key, same payload: %ld sent)\n"
           "  key conflicts              %10llu  (same key, another payload: %ld sent;\n"
           "                                         not forwarded, logged at warn)\n"
           "  unique keys produced       %10ld\n"
           "  downstream messages        %10ld\n"
           "  keys exactly once          %10ld\n"
           "  throughput                 %10.0f msgs/s (synced RocksDB store)\n"
           "%s\n",
           (unsigned long long)st->consumed, (unsigned long long)st->forwarded,
           (unsigned long long)(skipped - st->key_conflicts), d->retries,
           (unsigned long long)st->key_conflicts, d->conflicted, d->unique, downstream,
           once, secs > 0 ? (double)st->consumed / secs : 0.0,
           ok ? "OK: every unique key downstream exactly once, with its first payload"
              : "FAILED: downstream does not hold every unique key exactly once, or "
                "the duplicates and conflicts counted are not the ones sent");
}

int kd_demo_main(int argc, char **argv) {
    demo d = {.messages = 100000, .dup_pct = 20, .conflicts = 10, .partitions = 8};
    kd_pipeline_stats st = {0};
    char err[5120];
    long bad = 0, downstream = 0, once;
    double secs = 0;
    bool ok;

    if (!parse_args(&d, argc, argv)) {
        fprintf(stderr, "usage: kdedup demo [--messages 1-10000000] [--duplicates 0-99] "
                        "[--conflicts 0-100000] [--partitions 1-64]\n");
        return 2;
    }
    d.conflicted = d.conflicts < d.messages / 100 ? d.conflicts : d.messages / 100;
    kd_log_set_level(KD_LOG_WARN);
    if (!make_dir(&d, err, sizeof(err)) || !start_mock(&d, err, sizeof(err))) {
        fprintf(stderr, "demo: %s\n", err);
        ok = false;
        goto done;
    }
    printf("kdedup demo: %ld messages, %d%% of them retries of an earlier one, then %ld "
           "key conflicts; %d partitions\n",
           d.messages, d.dup_pct, d.conflicted, d.partitions);
    fflush(stdout);
    ok = produce_input(&d) && run(&d, &st, &secs);
    once = ok ? verify(&d, &bad, &downstream) : 0;
    ok = ok && bad == 0 && downstream == d.unique &&
         st.key_conflicts == (uint64_t)d.conflicted &&
         st.duplicates_completed + st.duplicates_in_flight ==
             (uint64_t)(d.retries + d.conflicted);
    summary(&d, &st, downstream, once, secs, ok);
done:
    kd_mock_stop(d.mock);
    if (d.dir[0] && nftw(d.dir, rm_one, 16, FTW_DEPTH | FTW_PHYS) != 0)
        fprintf(stderr, "demo: cannot remove %s: %s\n", d.dir, strerror(errno));
    return ok ? 0 : 1;
}
