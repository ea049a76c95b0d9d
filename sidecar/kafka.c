/*
 * kdedup - librdkafka set-up (see kafka.h).
 */
#include "sidecar/kafka.h"
#include "sidecar/clock.h"
#include "sidecar/log.h"

#include <librdkafka/rdkafka_mock.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* Defaults that favour losing nothing; the file may override all but the
 * properties config/ reserves for kdedup. */
static const char *const consumer_defaults[][2] = {
    {"enable.auto.offset.store", "false"}, /* offsets are stored once durable */
    {"enable.auto.commit", "true"},        /* commits what was stored */
    {"auto.offset.reset", "earliest"},     /* a new group reads everything */
    {"partition.assignment.strategy", "cooperative-sticky"},
    {"enable.partition.eof", "false"},
    {"statistics.interval.ms", "2000"},      /* lag, broker states: /metrics, /readyz */
    {"queued.max.messages.kbytes", "16384"}, /* read ahead: 16 MiB (README, Memory) */
    {NULL, NULL},
};

static const char *const producer_defaults[][2] = {
    {"enable.idempotence", "true"}, /* acks=all, ordered, no duplicates on retry */
    {"acks", "all"},
    {"linger.ms", "5"},
    {"statistics.interval.ms", "2000"}, /* queue depth, broker rtt: /metrics */
    {NULL, NULL},
};

/* The newest librdkafka lines written at info and above, with the client
 * that wrote each, for kd_kafka_logged(): librdkafka logs a broker's failure
 * and also hands it to the error callback, with the same text (a
 * "Disconnected" at level info). Another client's line with the same text
 * (the recovery scanner's "2/2 brokers are down") says nothing of this
 * one's error. A fixed ring: 64 lines of 512 bytes, clients' names of 128. */
#define RECENT_LINES 64
#define RECENT_BYTES 512
#define RECENT_CLIENT 128

static struct {
    pthread_mutex_t lock;
    char client[RECENT_LINES][RECENT_CLIENT];
    char text[RECENT_LINES][RECENT_BYTES];
    size_t next;
} recent = {.lock = PTHREAD_MUTEX_INITIALIZER};

static void remember(const char *client, const char *buf) {
    pthread_mutex_lock(&recent.lock);
    snprintf(recent.client[recent.next % RECENT_LINES], RECENT_CLIENT, "%s", client);
    snprintf(recent.text[recent.next++ % RECENT_LINES], RECENT_BYTES, "%s", buf);
    pthread_mutex_unlock(&recent.lock);
}

bool kd_kafka_logged(const rd_kafka_t *rk, const char *reason) {
    const char *client = rd_kafka_name(rk);
    size_t n = strlen(reason);
    bool found = false;

    if (n == 0 || n >= RECENT_BYTES || strlen(client) >= RECENT_CLIENT)
        return false;
    pthread_mutex_lock(&recent.lock);
    for (size_t i = 0; i < RECENT_LINES && !found; i++) {
        size_t len = strlen(recent.text[i]);

        /* librdkafka's line is "[thrd:...]: " and the error's text */
        found = !strcmp(recent.client[i], client) && len >= n &&
                !strcmp(recent.text[i] + len - n, reason);
    }
    pthread_mutex_unlock(&recent.lock);
    return found;
}

/* librdkafka's log lines, into ours. */
static void log_cb(const rd_kafka_t *rk, int level, const char *fac, const char *buf) {
    kd_log_level l = level <= 3   ? KD_LOG_ERROR
                     : level <= 4 ? KD_LOG_WARN
                     : level <= 6 ? KD_LOG_INFO
                                  : KD_LOG_DEBUG;
    const char *fields[] = {"source",   "librdkafka", "client", rd_kafka_name(rk),
                            "facility", fac,          NULL};

    if (l >= KD_LOG_INFO && kd_log_enabled(l))
        remember(rd_kafka_name(rk), buf);
    KD_LOG(l, fields, "%s", buf);
}

/* Sets one property; path names it in messages. librdkafka's message for a
 * rejected value quotes the value: for one the config took from the
 * environment or a file only the value as written in the file is named. */
static bool set(rd_kafka_conf_t *conf, const kd_config *cfg, const char *name,
                const char *value, const char *path, char *errstr, size_t errstr_size) {
    const char *written = kd_config_template(cfg, path);
    char err[512], msg[1024];

    if (rd_kafka_conf_set(conf, name, value, err, sizeof(err)) == RD_KAFKA_CONF_OK)
        return true;
    if (written)
        snprintf(msg, sizeof(msg),
                 "%s: %s: librdkafka rejects the value of \"%s\" (not shown: it comes "
                 "from the environment or a file)",
                 cfg->file, path, written);
    else
        snprintf(msg, sizeof(msg), "%s: %s: %s", cfg->file, path, err);
    kd_config_redact(cfg, msg, errstr, errstr_size);
    return false;
}

/* Appends one error line to errstr (after those it holds when *nerr > 0). */
static void add_error(char *errstr, size_t errstr_size, int *nerr, const char *line) {
    size_t at = *nerr ? strlen(errstr) : 0;

    if (at < errstr_size)
        snprintf(errstr + at, errstr_size - at, "%s%s", at ? "\n" : "", line);
    (*nerr)++;
}

/* A client configuration as kd_kafka_conf() makes it. With all, every
 * property the file sets is tried and each rejected one adds a line to
 * errstr (*nerr counts them); without, the first one ends it. Values the
 * config could not resolve (offline) are not tried. */
static rd_kafka_conf_t *conf_new(const kd_config *cfg, kd_client which,
                                 const char *brokers, bool all, int *nerr, char *errstr,
                                 size_t errstr_size) {
    const char *const(*defaults)[2] =
        which == KD_CONSUMER ? consumer_defaults : producer_defaults;
    const kd_config_props *props = which == KD_CONSUMER ? &cfg->consumer : &cfg->producer;
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    char timeout[32], line[1024], txn_id[300];
    int before = *nerr;

    for (size_t i = 0; defaults[i][0]; i++)
        if (!set(conf, cfg, defaults[i][0], defaults[i][1], "(kdedup default)", line,
                 sizeof(line)))
            goto fail_line;
    if (which == KD_PRODUCER) {
        kd_config mode = {.delivery = cfg->delivery}; /* the mode's default */

        snprintf(timeout, sizeof(timeout), "%llu",
                 (unsigned long long)kd_config_message_timeout_ms(&mode));
        if (!set(conf, cfg, "message.timeout.ms", timeout, "(kdedup default)", line,
                 sizeof(line)))
            goto fail_line;
        if (cfg->delivery == KD_DELIVERY_TRANSACTIONAL &&
            ((!kd_config_unresolved(cfg, "pipeline.transactional_id") &&
              !set(conf, cfg, "transactional.id",
                   kd_kafka_transactional_id(cfg, txn_id, sizeof(txn_id)),
                   "pipeline.transactional_id", line, sizeof(line))) ||
             !set(conf, cfg, "transaction.timeout.ms", KD_CONFIG_DEFAULT_TXN_TIMEOUT_MS,
                  "(kdedup default)", line, sizeof(line))))
            goto fail_line;
    } else if (!kd_config_unresolved(cfg, "kafka.group_id") &&
               !set(conf, cfg, "group.id", cfg->group_id, "kafka.group_id", line,
                    sizeof(line))) {
        goto fail_line;
    } else if (cfg->delivery == KD_DELIVERY_TRANSACTIONAL &&
               /* offsets are committed in the transactions, never by the consumer */
               !set(conf, cfg, "enable.auto.commit", "false", "(transactional mode)",
                    line, sizeof(line))) {
        goto fail_line;
    }
    for (size_t i = 0; i < props->n; i++) {
        if (!*props->v[i].value || /* empty (e.g. "${VAR:-}"): librdkafka's default */
            kd_config_unresolved(cfg, props->v[i].path) ||
            set(conf, cfg, props->v[i].name, props->v[i].value, props->v[i].path, line,
                sizeof(line)))
            continue;
        add_error(errstr, errstr_size, nerr, line);
        if (!all)
            goto fail;
    }
    if (!kd_config_unresolved(cfg, "kafka.brokers") &&
        !set(conf, cfg, "bootstrap.servers", brokers, "kafka.brokers", line,
             sizeof(line)))
        goto fail_line;
    if (*nerr > before)
        goto fail;
    rd_kafka_conf_set_log_cb(conf, log_cb);
    return conf;
fail_line:
    add_error(errstr, errstr_size, nerr, line);
fail:
    rd_kafka_conf_destroy(conf);
    return NULL;
}

rd_kafka_conf_t *kd_kafka_conf(const kd_config *cfg, kd_client which, const char *brokers,
                               char *errstr, size_t errstr_size) {
    int nerr = 0;

    return conf_new(cfg, which, brokers, false, &nerr, errstr, errstr_size);
}

const char *kd_kafka_transactional_id(const kd_config *cfg, char *buf, size_t size) {
    const char *instance = kd_config_prop_get(&cfg->consumer, "group.instance.id");
    char host[256] = "";

    if (cfg->transactional_id)
        return cfg->transactional_id;
    if (!instance || !*instance) {
        gethostname(host, sizeof(host) - 1);
        instance = host;
    }
    snprintf(buf, size, "kdedup-%s-%s", cfg->group_id, instance);
    return buf;
}

bool kd_kafka_check(const kd_config *cfg, char *errstr, size_t errstr_size) {
    const char *brokers =
        strncmp(cfg->brokers, "mock:", 5) ? cfg->brokers : "localhost:9092";
    int nerr = 0;

    for (int which = KD_CONSUMER; which <= KD_PRODUCER; which++) {
        rd_kafka_conf_t *c =
            conf_new(cfg, (kd_client)which, brokers, true, &nerr, errstr, errstr_size);

        if (c)
            rd_kafka_conf_destroy(c);
    }
    return nerr == 0;
}

struct kd_mock {
    rd_kafka_t *rk; /* the mock lives inside this handle */
    rd_kafka_mock_cluster_t *cluster;
};

kd_mock *kd_mock_start(int nbrokers, char *errstr, size_t errstr_size) {
    kd_mock *m = calloc(1, sizeof(*m));
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    char n[16];

    snprintf(n, sizeof(n), "%d", nbrokers);
    if (!m || rd_kafka_conf_set(conf, "test.mock.num.brokers", n, errstr, errstr_size) ||
        rd_kafka_conf_set(conf, "log_level", "3", errstr, errstr_size))
        goto fail;
    rd_kafka_conf_set_log_cb(conf, log_cb);
    if (!(m->rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, errstr_size)))
        goto fail;
    conf = NULL;
    if (!(m->cluster = rd_kafka_handle_mock_cluster(m->rk))) {
        snprintf(errstr, errstr_size, "mock cluster did not start");
        goto fail;
    }
    return m;
fail:
    if (conf)
        rd_kafka_conf_destroy(conf);
    kd_mock_stop(m);
    return NULL;
}

const char *kd_mock_bootstraps(const kd_mock *m) {
    return rd_kafka_mock_cluster_bootstraps(m->cluster);
}

int kd_mock_topic(kd_mock *m, const char *topic, int partitions) {
    return rd_kafka_mock_topic_create(m->cluster, topic, partitions, 1);
}

struct rd_kafka_mock_cluster_s *kd_mock_cluster(kd_mock *m) {
    return m->cluster;
}

void kd_mock_stop(kd_mock *m) {
    if (!m)
        return;
    if (m->rk)
        rd_kafka_destroy(m->rk);
    free(m);
}

int kd_kafka_partition_count(rd_kafka_t *rk, const char *topic, int timeout_ms) {
    rd_kafka_topic_t *rkt = rd_kafka_topic_new(rk, topic, NULL);
    const struct rd_kafka_metadata *md = NULL;
    uint64_t end = kd_mono_ms() + (uint64_t)timeout_ms;
    int n = -1;

    if (!rkt)
        return -1;
    /* A topic just created reaches every broker through the cluster's
     * metadata log: one that answers "unknown" is asked again until the
     * timeout. */
    for (;;) {
        rd_kafka_resp_err_t err = rd_kafka_metadata(rk, 0, rkt, &md, timeout_ms);

        if (!err && md->topic_cnt == 1 && md->topics[0].err == RD_KAFKA_RESP_ERR_NO_ERROR)
            n = md->topics[0].partition_cnt;
        if (md)
            rd_kafka_metadata_destroy(md);
        md = NULL;
        if (n >= 0 || err || kd_mono_ms() + 200 >= end)
            break;
        nanosleep(&(struct timespec){.tv_nsec = 200 * 1000 * 1000}, NULL);
    }
    rd_kafka_topic_destroy(rkt);
    return n;
}
