/*
 * kdedup tests - Kafka fixtures (see kafka_fixture.h).
 */
#include "tests/kafka_fixture.h"
#include "config/config.h"
#include "dedup/store.h"
#include "sidecar/log.h"
#include "store_rocks/store_rocks.h"
#include "tests/dedup_fixture.h"
#include "tests/faulty_store.h"

#include <stdarg.h>
#include <setjmp.h>
#include <stddef.h>
#include <cmocka.h>

#include <openssl/evp.h>

#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static uint64_t now_ms(void) {
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

void kf_sleep_ms(int ms) {
    nanosleep(&(struct timespec){ms / 1000, (long)(ms % 1000) * 1000000}, NULL);
}

void kf_send_range(const kf_mock *m, const char *topic, int32_t partition,
                   const char *prefix, int from, int to) {
    rd_kafka_t *rk = kf_producer(m);
    char key[32];

    for (int i = from; i < to; i++) {
        snprintf(key, sizeof(key), "%s-%d", prefix, i);
        kf_send(rk, topic, partition, key, key);
    }
    kf_producer_close(rk);
}

/* Reads one line from fd (blocking); asserts on end of input. */
static void read_line(int fd, char *buf, size_t size) {
    size_t n = 0;

    while (n + 1 < size) {
        ssize_t r = read(fd, buf + n, 1);

        assert_true(r == 1);
        if (buf[n] == '\n')
            break;
        n++;
    }
    buf[n] = '\0';
}

void kf_mock_start(kf_mock *m, int brokers, const char *const *topics) {
    const char *bin = getenv("KDEDUP") ? getenv("KDEDUP") : "build/kdedup";
    char nbrokers[16];
    int in[2], out[2];
    const char *argv[32] = {bin, "mock", "--brokers", nbrokers};
    int argc = 4;

    snprintf(nbrokers, sizeof(nbrokers), "%d", brokers);

    for (size_t i = 0; topics[i] && argc < 30; i++) {
        argv[argc++] = "--topic";
        argv[argc++] = topics[i];
    }
    assert_int_equal(pipe(in), 0);
    assert_int_equal(pipe(out), 0);
    m->pid = fork();
    assert_true(m->pid >= 0);
    if (m->pid == 0) {
        dup2(in[0], 0);
        dup2(out[1], 1);
        close(in[1]);
        close(out[0]);
        execv(bin, (char *const *)argv);
        _exit(127);
    }
    close(in[0]);
    close(out[1]);
    m->to_child = in[1];
    m->from_child = out[0];
    read_line(m->from_child, m->bootstrap, sizeof(m->bootstrap));
    assert_non_null(strstr(m->bootstrap, "127.0.0.1:"));
}

void kf_mock_cmd(kf_mock *m, const char *fmt, ...) {
    char cmd[256], reply[256];
    va_list ap;
    int n;

    va_start(ap, fmt);
    n = vsnprintf(cmd, sizeof(cmd) - 1, fmt, ap);
    va_end(ap);
    cmd[n++] = '\n';
    assert_int_equal(write(m->to_child, cmd, (size_t)n), n);
    read_line(m->from_child, reply, sizeof(reply));
    assert_string_equal(reply, "ok");
}

void kf_mock_stop(kf_mock *m) {
    close(m->to_child);
    close(m->from_child);
    waitpid(m->pid, NULL, 0);
}

kf_env *kf_env_new(int brokers, const char *const *topics) {
    kf_env *e = calloc(1, sizeof(*e));

    assert_non_null(e);
    kf_mock_start(&e->mock, brokers, topics);
    fx_tmpdir(e->dir, sizeof(e->dir));
    return e;
}

void kf_env_free(kf_env *e) {
    kf_mock_stop(&e->mock);
    fx_rmtree(e->dir);
    free(e);
}

static rd_kafka_t *client(const kf_mock *m, rd_kafka_type_t type, const char *group) {
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    char err[256];
    rd_kafka_t *rk;

    assert_int_equal(
        rd_kafka_conf_set(conf, "bootstrap.servers", m->bootstrap, err, sizeof(err)),
        RD_KAFKA_CONF_OK);
    rd_kafka_conf_set(conf, "log_level", "3", NULL, 0);
    if (group) {
        rd_kafka_conf_set(conf, "group.id", group, NULL, 0);
        rd_kafka_conf_set(conf, "enable.auto.commit", "false", NULL, 0);
        rd_kafka_conf_set(conf, "reconnect.backoff.ms", "10", NULL, 0);
        rd_kafka_conf_set(conf, "reconnect.backoff.max.ms", "100", NULL, 0);
    } else {
        rd_kafka_conf_set(conf, "linger.ms", "1", NULL, 0);
    }
    rk = rd_kafka_new(type, conf, err, sizeof(err));
    if (!rk)
        fail_msg("rd_kafka_new: %s", err);
    return rk;
}

rd_kafka_t *kf_producer(const kf_mock *m) {
    return client(m, RD_KAFKA_PRODUCER, NULL);
}

void kf_send(rd_kafka_t *rk, const char *topic, int32_t partition, const char *ikey,
             const char *value) {
    kf_send_at(rk, topic, partition, ikey, value, 0);
}

void kf_send_at(rd_kafka_t *rk, const char *topic, int32_t partition, const char *ikey,
                const char *value, int64_t timestamp_ms) {
    rd_kafka_headers_t *h = rd_kafka_headers_new(2);
    rd_kafka_resp_err_t err;

    if (ikey)
        rd_kafka_header_add(h, "Idempotency-Key", -1, ikey, -1);
    rd_kafka_header_add(h, "trace", -1, value, -1);
    err = rd_kafka_producev(
        rk, RD_KAFKA_V_TOPIC(topic),
        RD_KAFKA_V_PARTITION(partition < 0 ? RD_KAFKA_PARTITION_UA : partition),
        RD_KAFKA_V_KEY(ikey ? ikey : value, strlen(ikey ? ikey : value)),
        RD_KAFKA_V_VALUE((void *)value, strlen(value)), RD_KAFKA_V_HEADERS(h),
        RD_KAFKA_V_TIMESTAMP(timestamp_ms), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
        RD_KAFKA_V_END);
    assert_int_equal(err, RD_KAFKA_RESP_ERR_NO_ERROR);
    rd_kafka_poll(rk, 0);
}

void kf_send_headed(rd_kafka_t *rk, const char *topic, int32_t partition,
                    const char *ikey, int n) {
    rd_kafka_headers_t *h = rd_kafka_headers_new((size_t)n + 1);
    rd_kafka_resp_err_t err;

    rd_kafka_header_add(h, "Idempotency-Key", -1, ikey, -1);
    for (int i = 0; i < n; i++)
        rd_kafka_header_add(h, "h", 1, "", 0);
    while ((err = rd_kafka_producev(
                rk, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_PARTITION(partition),
                RD_KAFKA_V_VALUE((void *)ikey, strlen(ikey)), RD_KAFKA_V_HEADERS(h),
                RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END)) ==
           RD_KAFKA_RESP_ERR__QUEUE_FULL)
        rd_kafka_poll(rk, 10);
    assert_int_equal(err, RD_KAFKA_RESP_ERR_NO_ERROR);
    rd_kafka_poll(rk, 0);
}

void kf_producer_close(rd_kafka_t *rk) {
    assert_int_equal(rd_kafka_flush(rk, 30000), RD_KAFKA_RESP_ERR_NO_ERROR);
    rd_kafka_destroy(rk);
}

static void header_str(rd_kafka_headers_t *h, const char *name, char *out, size_t size) {
    const void *v;
    size_t n;

    out[0] = '\0';
    if (h && !rd_kafka_header_get(h, 0, name, &v, &n) && v) {
        n = n < size - 1 ? n : size - 1;
        memcpy(out, v, n);
        out[n] = '\0';
    }
}

static bool has_header(rd_kafka_headers_t *h, const char *name) {
    const void *v;
    size_t n;

    return h && rd_kafka_header_get_last(h, name, &v, &n) == RD_KAFKA_RESP_ERR_NO_ERROR;
}

kf_record *kf_read(const kf_mock *m, const char *topic, int nparts, size_t expect,
                   int quiet_ms, int timeout_ms, size_t *n) {
    rd_kafka_t *rk = client(m, RD_KAFKA_CONSUMER, "kf-reader");
    rd_kafka_topic_partition_list_t *parts = rd_kafka_topic_partition_list_new(nparts);
    uint64_t end = now_ms() + (uint64_t)timeout_ms, quiet_end = UINT64_MAX;
    size_t cap = expect + 16;
    kf_record *recs = calloc(cap, sizeof(*recs));

    assert_non_null(recs);
    *n = 0;
    for (int i = 0; i < nparts; i++)
        rd_kafka_topic_partition_list_add(parts, topic, i)->offset =
            RD_KAFKA_OFFSET_BEGINNING;
    rd_kafka_assign(rk, parts);
    rd_kafka_topic_partition_list_destroy(parts);
    while (now_ms() < end && now_ms() < quiet_end) {
        rd_kafka_message_t *msg = rd_kafka_consumer_poll(rk, 50);
        rd_kafka_headers_t *h = NULL;
        kf_record *r;
        size_t vlen;

        if (!msg)
            continue;
        if (msg->err) {
            rd_kafka_message_destroy(msg);
            continue;
        }
        if (*n == cap)
            assert_non_null(recs = realloc(recs, (cap *= 2) * sizeof(*recs)));
        r = &recs[(*n)++];
        memset(r, 0, sizeof(*r));
        r->partition = msg->partition;
        r->offset = msg->offset;
        vlen = msg->len < sizeof(r->value) - 1 ? msg->len : sizeof(r->value) - 1;
        if (vlen) /* a forget record has no value: payload NULL */
            memcpy(r->value, msg->payload, vlen);
        r->value_len = msg->len;
        kf_sha256(msg->payload, msg->len, r->value_sha256);
        rd_kafka_message_headers(msg, &h);
        header_str(h, "Idempotency-Key", r->ikey, sizeof(r->ikey));
        header_str(h, "kdedup-source", r->source, sizeof(r->source));
        header_str(h, "trace", r->trace, sizeof(r->trace));
        header_str(h, "kdedup-run", r->run, sizeof(r->run));
        header_str(h, "kdedup-forwarded-at", r->forwarded_at, sizeof(r->forwarded_at));
        header_str(h, "kdedup-reason", r->reason, sizeof(r->reason));
        r->unclaimed = has_header(h, "kdedup-unclaimed");
        r->nheaders = h ? rd_kafka_header_cnt(h) : 0;
        rd_kafka_message_destroy(msg);
        if (*n >= expect)
            quiet_end = now_ms() + (uint64_t)quiet_ms;
    }
    rd_kafka_consumer_close(rk);
    rd_kafka_destroy(rk);
    return recs;
}

void kf_sha256(const void *p, size_t len, unsigned char out[32]) {
    assert_int_equal(EVP_Digest(p, len, out, NULL, EVP_sha256(), NULL), 1);
}

size_t kf_count_key(const kf_record *r, size_t n, const char *ikey) {
    size_t c = 0;

    for (size_t i = 0; i < n; i++)
        c += !strcmp(r[i].ikey, ikey);
    return c;
}

rd_kafka_t *kf_reader(const kf_mock *m, const char *group) {
    return client(m, RD_KAFKA_CONSUMER, group);
}

int64_t kf_committed_by(rd_kafka_t *reader, const char *topic, int32_t partition) {
    rd_kafka_topic_partition_list_t *parts = rd_kafka_topic_partition_list_new(1);
    int64_t off;

    rd_kafka_topic_partition_list_add(parts, topic, partition);
    assert_int_equal(rd_kafka_committed(reader, parts, 10000),
                     RD_KAFKA_RESP_ERR_NO_ERROR);
    off = parts->elems[0].offset;
    rd_kafka_topic_partition_list_destroy(parts);
    return off;
}

int64_t kf_committed(const kf_mock *m, const char *group, const char *topic,
                     int32_t partition) {
    rd_kafka_t *rk = kf_reader(m, group);
    int64_t off = kf_committed_by(rk, topic, partition);

    rd_kafka_destroy(rk);
    return off;
}

static void *run_thread(void *arg) {
    kf_run *r = arg;

    r->rc = kd_pipeline_run(r->p);
    return NULL;
}

static void run_start(kf_run *r, const kf_mock *m, bool faulty, const char *json) {
    char err[1024];

    memset(r, 0, sizeof(*r));
    kd_log_set_level(getenv("KD_TEST_LOG") ? KD_LOG_DEBUG : KD_LOG_ERROR);
    r->cfg = kd_config_parse(json, strlen(json), "test.json", err, sizeof(err));
    if (!r->cfg)
        fail_msg("%s", err);
    r->store = kd_pipeline_open_store(r->cfg, KD_PIPELINE_STORE_OWNER, err, sizeof(err));
    if (!r->store)
        fail_msg("%s", err);
    if (faulty)
        assert_non_null(r->store = kd_faulty_store_new(r->store));
    r->p = kd_pipeline_new(r->cfg, r->store, m->bootstrap, err, sizeof(err));
    if (!r->p)
        fail_msg("kd_pipeline_new: %s", err);
    assert_int_equal(pthread_create(&r->tid, NULL, run_thread, r), 0);
}

void kf_run_start(kf_run *r, const kf_mock *m, const char *fmt, ...) {
    char json[4096];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(json, sizeof(json), fmt, ap);
    va_end(ap);
    run_start(r, m, false, json);
}

void kf_run_start_faulty(kf_run *r, const kf_mock *m, const char *fmt, ...) {
    char json[4096];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(json, sizeof(json), fmt, ap);
    va_end(ap);
    run_start(r, m, true, json);
}

kd_pipeline_stats kf_run_wait(kf_run *r, uint64_t consumed, int timeout_ms) {
    uint64_t end = now_ms() + (uint64_t)timeout_ms;
    kd_pipeline_stats st;

    do {
        kf_sleep_ms(20);
        kd_pipeline_stats_get(r->p, &st);
    } while ((st.consumed < consumed || st.inflight) && now_ms() < end);
    return st;
}

kd_pipeline_stats kf_run_stop(kf_run *r) {
    kd_pipeline_stats st;

    kd_pipeline_stop(r->p);
    pthread_join(r->tid, NULL);
    kd_pipeline_stats_get(r->p, &st);
    kd_pipeline_destroy(r->p);
    kd_store_destroy(r->store);
    kd_config_destroy(r->cfg);
    assert_int_equal(r->rc, 0);
    return st;
}

kd_recover_result kf_find_since(kd_recovery *rc, size_t route, int32_t part,
                                int64_t *from, uint64_t sent_at_ms, const char *key,
                                size_t key_len, kd_recover_found *out) {
    kd_recover_ask a = {
        .key = key, .key_len = key_len, .from = *from, .sent_at_ms = sent_at_ms};
    kd_recover_result res = kd_recovery_find_since(rc, route, part, &a, out);

    *from = a.from;
    return res;
}
