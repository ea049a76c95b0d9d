/*
 * kdedup tests - the pipeline against a real Kafka-protocol broker:
 * librdkafka's mock cluster in a `kdedup mock` process. Each test plays the
 * producer upstream and the reader downstream, and asserts what reached
 * the downstream topics and what offsets were committed.
 */
#include "dedup/dedup.h"
#include "dedup/entry.h"
#include "sidecar/forgets.h"
#include "sidecar/metrics.h"
#include "sidecar/receipt.h"
#include "sidecar/recovery.h"
#include "sidecar/headers.h"
#include "sidecar/signing.h"
#include "store_rocks/store_rocks.h"
#include "tests/case_runner.h"
#include "tests/dedup_fixture.h"
#include "tests/faulty_store.h"
#include "tests/kafka_fixture.h"

#include <stdarg.h>
#include <setjmp.h>
#include <stddef.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/stat.h>
#include <unistd.h>

#define PARTS 4
#define TIMEOUT_MS 60000

typedef struct env {
    kf_mock mock;
    char dir[256];
} env;

static int setup(void **state) {
    static const char *const topics[] = {"in:4",    "out:4",   "dlq:1",   "a:1",
                                         "a.out:1", "b:1",     "b.out:1", "c:1",
                                         "c.out:1", "c.dlq:1", NULL};
    env *e = calloc(1, sizeof(*e));

    kf_mock_start(&e->mock, 2, topics);
    fx_tmpdir(e->dir, sizeof(e->dir));
    *state = e;
    return 0;
}

static int teardown(void **state) {
    env *e = *state;

    kf_mock_stop(&e->mock);
    fx_rmtree(e->dir);
    free(e);
    return 0;
}

/* The one-route config most tests use. A short session: the mock cluster
 * waits for it before a restarted run can join the group. Offsets stored
 * are committed within 200 ms, so a check of the committed offsets sees
 * whatever was stored, not only what a stop commits. */
#define ROUTE_CONFIG                                                                     \
    "{\"kafka\": {\"brokers\": \"%s\", \"group_id\": \"g\", \"producer\": %s,"           \
    " \"consumer\": {\"session.timeout.ms\": \"6000\", \"heartbeat.interval.ms\": "      \
    "\"500\", \"auto.commit.interval.ms\": \"200\"}},"                                   \
    " \"routes\": [{\"from\": \"in\", \"to\": \"out\", \"on_missing_key\": \"forward\"," \
    " \"dead_letter_topic\": \"dlq\", \"max_retries\": %d, \"retry_backoff\": "          \
    "\"100ms\"}],"                                                                       \
    " \"store\": {\"path\": \"%s/store\"}, \"pipeline\": {\"shutdown_grace\": \"%s\"}}"

static void start(kf_run *r, env *e, const char *producer_props, int max_retries,
                  const char *grace) {
    kf_run_start(r, &e->mock, ROUTE_CONFIG, e->mock.bootstrap, producer_props,
                 max_retries, e->dir, grace);
}

/* Upstream (in, dlq) led by broker 1, downstream (out) by broker 2: faults
 * injected on broker 2 hit kdedup's deliveries, not the test's producer. */
static void split_brokers(env *e) {
    kf_mock_cmd(&e->mock, "leader dlq 0 1");
    for (int i = 0; i < PARTS; i++) {
        kf_mock_cmd(&e->mock, "leader in %d 1", i);
        kf_mock_cmd(&e->mock, "leader out %d 2", i);
    }
}

/* Monotonic milliseconds. */
static uint64_t now_ms(void) {
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void send_keys(env *e, const char *topic, int from, int to, int copies) {
    rd_kafka_t *rk = kf_producer(&e->mock);
    char key[32], value[64];

    for (int i = from; i < to; i++)
        for (int c = 0; c < copies; c++) {
            snprintf(key, sizeof(key), "key-%d", i);
            snprintf(value, sizeof(value), "value-%d-copy-%d", i, c);
            kf_send(rk, topic, -1, key, value);
        }
    kf_producer_close(rk);
}

/* Every key in [from, to) exactly once in recs, with its first copy's value
 * and trace header, and a source header. */
static void assert_each_once(const kf_record *recs, size_t n, int from, int to) {
    char key[32], value[64];

    for (int i = from; i < to; i++) {
        snprintf(key, sizeof(key), "key-%d", i);
        snprintf(value, sizeof(value), "value-%d-copy-0", i);
        if (kf_count_key(recs, n, key) != 1)
            fail_msg("%s appears %zu times downstream", key, kf_count_key(recs, n, key));
        for (size_t j = 0; j < n; j++)
            if (!strcmp(recs[j].ikey, key)) {
                assert_string_equal(recs[j].value, value);
                assert_string_equal(recs[j].trace, value);
                assert_non_null(strstr(recs[j].source, "in/"));
            }
    }
}

static int64_t committed_total(env *e, const char *topic, int nparts) {
    int64_t sum = 0;

    for (int i = 0; i < nparts; i++) {
        int64_t off = kf_committed(&e->mock, "g", topic, i);

        sum += off < 0 ? 0 : off;
    }
    return sum;
}

/* Duplicates next to each other (one poll batch), in later batches, and
 * after a restart over the same store are all suppressed. */
static void test_duplicates_within_across_and_restart(void **state) {
    env *e = *state;
    kd_pipeline_stats st;
    kf_record *recs;
    size_t n;
    kf_run r;

    send_keys(e, "in", 0, 150, 2); /* k0,k0,k1,k1,... */
    start(&r, e, "{}", 5, "5s");
    st = kf_run_wait(&r, 300, TIMEOUT_MS);
    assert_int_equal(st.consumed, 300);
    assert_int_equal(st.forwarded, 150);
    assert_int_equal(st.duplicates_completed + st.duplicates_in_flight, 150);

    send_keys(e, "in", 100, 200, 1); /* 50 old, 50 new */
    st = kf_run_wait(&r, 400, TIMEOUT_MS);
    assert_int_equal(st.forwarded, 200);
    st = kf_run_stop(&r);
    assert_int_equal(st.inflight, 0);
    assert_int_equal(committed_total(e, "in", PARTS), 400);

    send_keys(e, "in", 0, 50, 1);    /* all old */
    send_keys(e, "in", 200, 210, 1); /* new */
    start(&r, e, "{}", 5, "5s");
    st = kf_run_wait(&r, 60, TIMEOUT_MS);
    assert_int_equal(st.consumed, 60);
    assert_int_equal(st.forwarded, 10);
    assert_int_equal(st.duplicates_completed, 50);
    kf_run_stop(&r);
    assert_int_equal(committed_total(e, "in", PARTS), 460);

    recs = kf_read(&e->mock, "out", PARTS, 210, 1000, TIMEOUT_MS, &n);
    assert_int_equal(n, 210);
    assert_each_once(recs, n, 0, 210);
    free(recs);
}

/* forward, drop and dead_letter, for a message without the header, with an
 * empty one, and with one longer than max_key_bytes. */
static void test_missing_key_policies(void **state) {
    env *e = *state;
    const char *topics[] = {"a", "b", "c"};
    rd_kafka_t *rk = kf_producer(&e->mock);
    kf_record *recs;
    size_t n;
    kf_run r;

    for (int t = 0; t < 3; t++) {
        kf_send(rk, topics[t], 0, "good-key", "keyed");
        kf_send(rk, topics[t], 0, NULL, "no-header");
        kf_send(rk, topics[t], 0, "", "empty-header");
        kf_send(rk, topics[t], 0, "a-key-of-17-bytes", "long-header");
    }
    kf_producer_close(rk);
    kf_run_start(
        &r, &e->mock,
        "{\"kafka\": {\"brokers\": \"%s\", \"group_id\": \"g\"}, \"routes\": ["
        "{\"from\": \"a\", \"to\": \"a.out\", \"on_missing_key\": \"forward\"},"
        "{\"from\": \"b\", \"to\": \"b.out\", \"on_missing_key\": \"drop\"},"
        "{\"from\": \"c\", \"to\": \"c.out\", \"on_missing_key\": \"dead_letter\","
        " \"dead_letter_topic\": \"c.dlq\"}],"
        " \"dedup\": {\"max_key_bytes\": 16}, \"store\": {\"path\": \"%s/store\"}}",
        e->mock.bootstrap, e->dir);
    kd_pipeline_stats st = kf_run_wait(&r, 12, TIMEOUT_MS);
    assert_int_equal(st.consumed, 12);
    assert_int_equal(st.missing_forwarded, 3);
    assert_int_equal(st.missing_dropped, 3);
    assert_int_equal(st.dead_lettered, 3);
    assert_int_equal(st.forwarded, 3); /* one key, three routes: once on each */
    kf_run_stop(&r);

    recs = kf_read(&e->mock, "a.out", 1, 4, 500, TIMEOUT_MS, &n);
    assert_int_equal(n, 4);
    free(recs);
    recs = kf_read(&e->mock, "b.out", 1, 1, 500, TIMEOUT_MS, &n);
    assert_int_equal(n, 1);
    assert_string_equal(recs[0].value, "keyed");
    free(recs);
    recs = kf_read(&e->mock, "c.out", 1, 1, 500, TIMEOUT_MS, &n);
    assert_int_equal(n, 1);
    assert_string_equal(recs[0].value, "keyed");
    free(recs);
    recs = kf_read(&e->mock, "c.dlq", 1, 3, 500, TIMEOUT_MS, &n);
    assert_int_equal(n, 3);
    assert_string_equal(recs[0].value, "no-header");
    assert_string_equal(recs[1].value, "empty-header");
    assert_string_equal(recs[2].value, "long-header");
    free(recs);
}

/* The payload send_raw() sends: payload_len bytes of a pattern, malloc()ed. */
static unsigned char *raw_payload(size_t payload_len) {
    unsigned char *payload = malloc(payload_len + 1);

    assert_non_null(payload);
    for (size_t i = 0; i < payload_len; i++)
        payload[i] = (unsigned char)(i * 7 + i / 251 + 3);
    return payload;
}

/* Produces to topic with the given Idempotency-Key headers (values with
 * lengths, so binary) and the raw_payload() of payload_len bytes. */
static void send_raw_to(rd_kafka_t *rk, const char *topic, const char *const *keys,
                        const size_t *key_lens, int nkeys, size_t payload_len) {
    rd_kafka_headers_t *h = rd_kafka_headers_new(2);
    unsigned char *payload = raw_payload(payload_len);

    for (int i = 0; i < nkeys; i++)
        rd_kafka_header_add(h, "Idempotency-Key", -1, keys[i], (ssize_t)key_lens[i]);
    assert_int_equal(rd_kafka_producev(rk, RD_KAFKA_V_TOPIC(topic),
                                       RD_KAFKA_V_PARTITION(0),
                                       RD_KAFKA_V_VALUE(payload, payload_len),
                                       RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                                       RD_KAFKA_V_HEADERS(h), RD_KAFKA_V_END),
                     RD_KAFKA_RESP_ERR_NO_ERROR);
    free(payload);
}

/* send_raw_to() topic "a". */
static void send_raw(rd_kafka_t *rk, const char *const *keys, const size_t *key_lens,
                     int nkeys, size_t payload_len) {
    send_raw_to(rk, "a", keys, key_lens, nkeys, payload_len);
}

/* Keys that are binary and not UTF-8 (with NULs), exactly max_key_bytes,
 * one byte over, 64 KiB; a key header repeated with two values (ambiguous:
 * on this route without a dead-letter topic, forwarded without dedup); a
 * payload near the 1 MB message limit. Each gets its policy; nothing is
 * lost. */
static void test_hostile_headers(void **state) {
    env *e = *state;
    static const char binary[16] = {'\0', '\xff', '\xfe', 'k', '\0', '\x80', '\xc3', '('};
    char *huge = malloc(65536);
    rd_kafka_t *rk = kf_producer(&e->mock);
    kd_pipeline_stats st;
    kf_record *recs;
    size_t n;
    kf_run r;

    memset(huge, 'h', 65536);
    send_raw(rk, (const char *[]){binary}, (size_t[]){16}, 1, 10); /* forwarded */
    send_raw(rk, (const char *[]){binary}, (size_t[]){16}, 1, 10); /* duplicate */
    send_raw(rk, (const char *[]){binary}, (size_t[]){15}, 1, 10); /* another key */
    send_raw(rk, (const char *[]){"first", "second"}, (size_t[]){5, 6}, 2,
             10);                                                   /* rejected */
    send_raw(rk, (const char *[]){"first"}, (size_t[]){5}, 1, 10);  /* new */
    send_raw(rk, (const char *[]){"second"}, (size_t[]){6}, 1, 10); /* new */
    send_raw(rk, (const char *[]){"seventeen-bytes-x"}, (size_t[]){17}, 1,
             10);                                                    /* missing */
    send_raw(rk, (const char *[]){huge}, (size_t[]){65536}, 1, 10);  /* missing */
    send_raw(rk, (const char *[]){"big"}, (size_t[]){3}, 1, 900000); /* forwarded */
    kf_producer_close(rk);
    free(huge);
    kf_run_start(
        &r, &e->mock,
        "{\"kafka\": {\"brokers\": \"%s\", \"group_id\": \"g\"}, \"routes\": ["
        "{\"from\": \"a\", \"to\": \"a.out\", \"on_missing_key\": \"forward\"}],"
        " \"dedup\": {\"max_key_bytes\": 16}, \"store\": {\"path\": \"%s/store\"}}",
        e->mock.bootstrap, e->dir);
    st = kf_run_wait(&r, 9, TIMEOUT_MS);
    assert_int_equal(st.consumed, 9);
    assert_int_equal(st.forwarded, 5);
    assert_int_equal(st.duplicates_completed + st.duplicates_in_flight, 1);
    assert_int_equal(st.missing_forwarded, 2);
    assert_int_equal(st.rejected, 1);
    assert_int_equal(st.store_errors, 0);
    assert_int_equal(st.collisions, 0);
    kf_run_stop(&r);

    recs = kf_read(&e->mock, "a.out", 1, 8, 500, TIMEOUT_MS, &n);
    assert_int_equal(n, 8);
    /* The big payload arrived whole, the small ones too. */
    unsigned char *big = raw_payload(900000), *small = raw_payload(10);
    unsigned char big_sha[32], small_sha[32];
    size_t bigs = 0;

    kf_sha256(big, 900000, big_sha);
    kf_sha256(small, 10, small_sha);
    for (size_t i = 0; i < n; i++) {
        bool is_big = !strcmp(recs[i].ikey, "big");

        bigs += is_big;
        assert_int_equal(recs[i].value_len, is_big ? 900000 : 10);
        assert_memory_equal(recs[i].value_sha256, is_big ? big_sha : small_sha, 32);
    }
    assert_int_equal(bigs, 1);
    free(big);
    free(small);
    free(recs);
}

/* A key given twice with different values, as a repeated header (route c)
 * or a duplicated JSON member (route b): kdedup would key on the first, a
 * consumer reading the last (lastHeader(), Jackson, Python's json) would
 * see another id, so the message is dead-lettered as ambiguous-key. Its
 * ids sent alone afterwards are new keys, forwarded; a key repeated with
 * one value is no ambiguity. Before, [x-1, x-2] was forwarded keyed x-1
 * and x-2 after it too: a last-reader saw x-2 twice. */
static void test_ambiguous_keys_dead_lettered(void **state) {
    env *e = *state;
    rd_kafka_t *rk = kf_producer(&e->mock);
    kd_pipeline_stats st;
    kf_record *recs;
    size_t n;
    kf_run r;

    send_raw_to(rk, "c", (const char *[]){"x-1", "x-2"}, (size_t[]){3, 3}, 2, 10);
    send_raw_to(rk, "c", (const char *[]){"y", "y"}, (size_t[]){1, 1}, 2, 10);
    send_raw_to(rk, "c", (const char *[]){"x-2"}, (size_t[]){3}, 1, 10);
    kf_send(rk, "b", 0, NULL, "{\"id\": \"j-1\", \"id\": \"j-2\"}");
    kf_send(rk, "b", 0, NULL, "{\"id\": \"j-2\"}");
    kf_send(rk, "b", 0, NULL, "{\"id\": \"j-3\", \"n\": 1, \"id\": \"j-3\"}");
    kf_producer_close(rk);
    kf_run_start(&r, &e->mock,
                 "{\"kafka\": {\"brokers\": \"%s\", \"group_id\": \"g\"}, \"routes\": ["
                 "{\"from\": \"c\", \"to\": \"c.out\", \"dead_letter_topic\": \"c.dlq\"},"
                 "{\"from\": \"b\", \"to\": \"b.out\", \"dead_letter_topic\": \"c.dlq\","
                 " \"key\": {\"from\": \"json\", \"pointer\": \"/id\"}}],"
                 " \"store\": {\"path\": \"%s/store\"}}",
                 e->mock.bootstrap, e->dir);
    st = kf_run_wait(&r, 6, TIMEOUT_MS);
    assert_int_equal(st.consumed, 6);
    assert_int_equal(st.forwarded, 4);
    assert_int_equal(st.rejected, 2);
    assert_int_equal(st.dead_lettered, 2);
    assert_int_equal(st.duplicates_completed + st.duplicates_in_flight, 0);
    kf_run_stop(&r);
    assert_int_equal(kf_committed(&e->mock, "g", "c", 0), 3);
    assert_int_equal(kf_committed(&e->mock, "g", "b", 0), 3);

    recs = kf_read(&e->mock, "c.dlq", 1, 2, 500, TIMEOUT_MS, &n);
    assert_int_equal(n, 2);
    for (size_t i = 0; i < n; i++)
        assert_string_equal(recs[i].reason, "ambiguous-key");
    free(recs);
    recs = kf_read(&e->mock, "c.out", 1, 2, 500, TIMEOUT_MS, &n);
    assert_int_equal(n, 2);
    assert_int_equal(kf_count_key(recs, n, "y"), 1);
    assert_int_equal(kf_count_key(recs, n, "x-2"), 1);
    free(recs);
    recs = kf_read(&e->mock, "b.out", 1, 2, 500, TIMEOUT_MS, &n);
    assert_int_equal(n, 2);
    assert_string_equal(recs[0].value, "{\"id\": \"j-2\"}");
    assert_non_null(strstr(recs[1].value, "j-3"));
    free(recs);
}

/* Messages past pipeline.max_headers (20) or max_header_bytes (60 bytes
 * of names and values) are rejected, never dropped silently: to the
 * dead-letter topic with their reason and every header they came with (route
 * c); without one, forwarded without dedup under on_missing_key forward
 * (route a: both copies, marked unclaimed) or dropped under drop (route b);
 * counted in each case. A message at the bounds passes. */
static void test_header_bounds_reject(void **state) {
    env *e = *state;
    rd_kafka_t *rk = kf_producer(&e->mock);
    const char *big = "c-big-0123456789012345678901234567890123456789012";
    kd_pipeline_stats st;
    kf_record *recs;
    size_t n;
    kf_run r;

    kf_send_headed(rk, "c", 0, "c-ok", 19); /* 20 headers, 38 bytes: passes */
    kf_send_headed(rk, "c", 0, "c-many", 20);
    kf_send(rk, "c", 0, big, "v"); /* 2 headers, 71 bytes */
    kf_send_headed(rk, "a", 0, "a-many", 20);
    kf_send_headed(rk, "a", 0, "a-many", 20);
    kf_send_headed(rk, "b", 0, "b-many", 20);
    kf_send_headed(rk, "b", 0, "b-ok", 5);
    kf_producer_close(rk);
    kf_run_start(&r, &e->mock,
                 "{\"kafka\": {\"brokers\": \"%s\", \"group_id\": \"g\"}, \"routes\": ["
                 "{\"from\": \"c\", \"to\": \"c.out\", \"dead_letter_topic\": \"c.dlq\"},"
                 "{\"from\": \"a\", \"to\": \"a.out\", \"on_missing_key\": \"forward\"},"
                 "{\"from\": \"b\", \"to\": \"b.out\", \"on_missing_key\": \"drop\"}],"
                 " \"store\": {\"path\": \"%s/store\"},"
                 " \"pipeline\": {\"max_headers\": 20, \"max_header_bytes\": 60}}",
                 e->mock.bootstrap, e->dir);
    st = kf_run_wait(&r, 7, TIMEOUT_MS);
    assert_int_equal(st.consumed, 7);
    assert_int_equal(st.forwarded, 2); /* c-ok, b-ok */
    assert_int_equal(st.rejected, 5);
    assert_int_equal(st.dead_lettered, 2);
    assert_int_equal(st.missing_forwarded + st.missing_dropped, 0);
    st = kf_run_stop(&r);
    assert_int_equal(st.inflight, 0);
    assert_int_equal(kf_committed(&e->mock, "g", "c", 0), 3);
    assert_int_equal(kf_committed(&e->mock, "g", "a", 0), 2);
    assert_int_equal(kf_committed(&e->mock, "g", "b", 0), 2);

    recs = kf_read(&e->mock, "c.out", 1, 1, 500, TIMEOUT_MS, &n);
    assert_int_equal(n, 1);
    assert_string_equal(recs[0].ikey, "c-ok");
    free(recs);
    recs = kf_read(&e->mock, "c.dlq", 1, 2, 500, TIMEOUT_MS, &n);
    assert_int_equal(n, 2);
    assert_string_equal(recs[0].ikey, "c-many");
    assert_string_equal(recs[0].reason, "too-many-headers");
    assert_true(recs[0].nheaders > 21); /* its own, and kdedup's */
    assert_string_equal(recs[1].ikey, big);
    assert_string_equal(recs[1].reason, "headers-too-large");
    free(recs);
    recs = kf_read(&e->mock, "a.out", 1, 2, 500, TIMEOUT_MS, &n);
    assert_int_equal(n, 2);
    for (size_t i = 0; i < n; i++) {
        assert_string_equal(recs[i].ikey, "a-many");
        assert_true(recs[i].unclaimed);
    }
    free(recs);
    recs = kf_read(&e->mock, "b.out", 1, 1, 500, TIMEOUT_MS, &n);
    assert_int_equal(n, 1);
    assert_string_equal(recs[0].ikey, "b-ok");
    free(recs);
}

/* The store refuses writes (a full disk) from the start: nothing is
 * forwarded or committed, /readyz says why; once it accepts writes again,
 * every key is forwarded exactly once and everything is committed. */
static void test_store_full_pauses_and_resumes(void **state) {
    env *e = *state;
    kd_pipeline_stats st = {0};
    char reason[512];
    kf_record *recs;
    size_t n;
    kf_run r;

    send_keys(e, "in", 0, 100, 1);
    kf_run_start_faulty(&r, &e->mock, ROUTE_CONFIG, e->mock.bootstrap, "{}", 5, e->dir,
                        "5s");
    kd_faulty_store_fail_writes(r.store, true);
    for (int i = 0; i < 500 && !st.consumed; i++) { /* it cannot settle: no kf_run_wait */
        nanosleep(&(struct timespec){0, 20000000}, NULL);
        kd_pipeline_stats_get(r.p, &st);
    }
    assert_true(st.consumed >= 1);
    sleep(2); /* ten auto-commit intervals: anything stored is committed */
    kd_pipeline_stats_get(r.p, &st);
    assert_int_equal(st.forwarded, 0);
    assert_true(st.store_errors >= 2); /* retried */
    assert_true(kd_faulty_store_refused(r.store) >= 2);
    assert_false(kd_pipeline_ready(r.p, reason, sizeof(reason)));
    assert_non_null(strstr(reason, "store failing"));
    assert_non_null(strstr(reason, "No space left on device"));
    assert_int_equal(committed_total(e, "in", PARTS), 0);

    kd_faulty_store_fail_writes(r.store, false);
    st = kf_run_wait(&r, 100, TIMEOUT_MS);
    assert_int_equal(st.consumed, 100);
    assert_int_equal(st.forwarded, 100);
    assert_int_equal(st.inflight, 0);
    assert_true(kd_pipeline_ready(r.p, reason, sizeof(reason)));
    kf_run_stop(&r);
    assert_int_equal(committed_total(e, "in", PARTS), 100);

    recs = kf_read(&e->mock, "out", PARTS, 100, 1000, TIMEOUT_MS, &n);
    assert_int_equal(n, 100);
    assert_each_once(recs, n, 0, 100);
    free(recs);
}

/* Produce requests failing with KAFKA_STORAGE_ERROR (retries=1: the
 * delivery is NOT_PERSISTED): the claim is released, the message retried,
 * and exactly one copy lands downstream. */
static void test_not_persisted_released_and_retried(void **state) {
    env *e = *state;
    kd_pipeline_stats st;
    kf_record *recs;
    size_t n;
    kf_run r;

    send_keys(e, "in", 0, 20, 1); /* before the errors: they hit any producer */
    /* One error fails one partition of a request: 8 fail the first attempt
     * and the one retry of all 4 partitions. */
    kf_mock_cmd(&e->mock, "produce-errors 8 %d", RD_KAFKA_RESP_ERR_KAFKA_STORAGE_ERROR);
    start(&r, e, "{\"retries\": \"1\", \"retry.backoff.ms\": \"10\"}", 5, "5s");
    st = kf_run_wait(&r, 20, TIMEOUT_MS);
    assert_int_equal(st.consumed, 20);
    assert_int_equal(st.forwarded, 20);
    assert_true(st.released >= 1);
    assert_true(st.produce_errors >= 1);
    assert_int_equal(st.dead_lettered, 0);
    st = kf_run_stop(&r);
    assert_int_equal(st.inflight, 0);
    assert_int_equal(st.forwarded, 20);
    assert_int_equal(committed_total(e, "in", PARTS), 20);

    recs = kf_read(&e->mock, "out", PARTS, 20, 1000, TIMEOUT_MS, &n);
    assert_int_equal(n, 20);
    assert_each_once(recs, n, 0, 20);
    free(recs);
}

/* Sends key-0 .. key-4 to in/0 and waits until r has consumed them. */
static void send_five(env *e, kf_run *r) {
    rd_kafka_t *rk = kf_producer(&e->mock);
    char key[32];

    for (int i = 0; i < 5; i++) {
        snprintf(key, sizeof(key), "key-%d", i);
        kf_send(rk, "in", 0, key, key);
    }
    kf_producer_close(rk);
    kf_run_wait(r, 5, TIMEOUT_MS);
}

/* With deliveries failing for good, a stop commits exactly up to the first
 * unfinished message: past everything done, never past what is not. */
static void test_commit_stops_at_unfinished(void **state) {
    env *e = *state;
    rd_kafka_t *rk;
    char key[32];
    kf_run r;

    split_brokers(e);
    start(&r, e, "{\"retries\": \"1\", \"retry.backoff.ms\": \"10\"}", -1, "1s");
    send_five(e, &r);

    kf_mock_cmd(&e->mock, "broker-produce-errors 2 100000 %d",
                RD_KAFKA_RESP_ERR_KAFKA_STORAGE_ERROR);
    rk = kf_producer(&e->mock);
    for (int i = 5; i < 10; i++) {
        snprintf(key, sizeof(key), "key-%d", i);
        kf_send(rk, "in", 0, key, key);
    }
    kf_producer_close(rk);
    kd_pipeline_stats st;
    for (int i = 0; i < 250; i++) { /* until the failing ones were retried */
        kd_pipeline_stats_get(r.p, &st);
        if (st.consumed == 10 && st.released >= 5 && st.retries >= 5)
            break;
        nanosleep(&(struct timespec){0, 20 * 1000 * 1000}, NULL);
    }
    st = kf_run_stop(&r);
    assert_int_equal(st.consumed, 10);
    assert_int_equal(st.forwarded, 5);
    assert_true(st.released >= 5);
    assert_int_equal(kf_committed(&e->mock, "g", "in", 0), 5);
}

/* A stop in mid-stream drains what is in flight and commits; the next run
 * carries on: every key exactly once, nothing lost. */
static void test_stop_mid_stream_loses_nothing(void **state) {
    env *e = *state;
    kd_pipeline_stats st1, st2;
    kf_record *recs;
    size_t n;
    kf_run r;

    send_keys(e, "in", 0, 1500, 1);
    send_keys(e, "in", 0, 500, 1); /* duplicates */
    start(&r, e, "{}", 5, "10s");
    /* Until the join and the handover are over and the stream is flowing,
     * however long a loaded machine takes (bounded by TIMEOUT_MS). */
    for (uint64_t end = now_ms() + TIMEOUT_MS; now_ms() < end;) {
        kd_pipeline_stats_get(r.p, &st1);
        if (st1.consumed > 200)
            break;
        nanosleep(&(struct timespec){0, 1000 * 1000}, NULL);
    }
    st1 = kf_run_stop(&r);
    assert_true(st1.consumed > 200);
    assert_int_equal(st1.inflight, 0); /* drained */

    start(&r, e, "{}", 5, "10s");
    st2 = kf_run_wait(&r, 2000 - st1.consumed, TIMEOUT_MS);
    kf_run_stop(&r);
    assert_int_equal(st1.consumed + st2.consumed, 2000);
    assert_int_equal(st1.forwarded + st2.forwarded, 1500);

    recs = kf_read(&e->mock, "out", PARTS, 1500, 1000, TIMEOUT_MS, &n);
    assert_int_equal(n, 1500);
    assert_each_once(recs, n, 0, 1500);
    free(recs);
}

/* Deliveries that keep failing go to the dead-letter topic after the
 * route's retry limit, and their claims are released. */
static void test_retries_exhausted_dead_letter(void **state) {
    env *e = *state;
    kd_pipeline_stats st;
    kf_record *recs;
    size_t n;
    kf_run r;

    split_brokers(e);
    send_keys(e, "in", 0, 5, 1);
    kf_mock_cmd(&e->mock, "broker-produce-errors 2 100000 %d",
                RD_KAFKA_RESP_ERR_KAFKA_STORAGE_ERROR);
    start(&r, e, "{\"retries\": \"1\", \"retry.backoff.ms\": \"10\"}", 1, "1s");
    st = kf_run_wait(&r, 5, TIMEOUT_MS);
    assert_int_equal(st.dead_lettered, 5);
    assert_int_equal(st.forwarded, 0);
    assert_true(st.released >= 5);
    kf_run_stop(&r);
    assert_int_equal(committed_total(e, "in", PARTS), 5);
    recs = kf_read(&e->mock, "dlq", 1, 5, 500, TIMEOUT_MS, &n);
    assert_int_equal(n, 5);
    assert_int_equal(kf_count_key(recs, n, "key-2"), 1);
    free(recs);
}

/* A message that the downstream topic and then its dead-letter topic
 * refuse (every produce request fails) is neither lost nor retried
 * silently: after max_retries (1) failures at each it is stuck, named in
 * the log, counted (kdedup_stuck_messages 1), /readyz 503 saying so, its
 * offset not committed. Once the dead-letter topic takes it, it is
 * dead-lettered once, the gauge is back to 0, ready, committed. Before, it
 * was retried forever with /readyz 200 and nothing to see but its
 * partition's offset standing still. */
static void test_dead_letter_refused_is_stuck(void **state) {
    env *e = *state;
    kd_flow_gauges *g;
    kd_pipeline_stats st;
    char reason[512];
    kf_record *recs;
    size_t n;
    kf_run r;

    send_keys(e, "in", 0, 1, 1); /* before the errors: they hit any producer */
    kf_mock_cmd(&e->mock, "produce-errors 100000 %d",
                RD_KAFKA_RESP_ERR_KAFKA_STORAGE_ERROR);
    start(&r, e, "{\"retries\": \"1\", \"retry.backoff.ms\": \"10\"}", 1, "1s");
    g = kd_metrics_flow(kd_pipeline_metrics(r.p));
    for (int i = 0; i < 1500 && !atomic_load(&g->stuck); i++)
        nanosleep(&(struct timespec){0, 20 * 1000 * 1000}, NULL);
    assert_int_equal(atomic_load(&g->stuck), 1);
    assert_false(kd_pipeline_ready(r.p, reason, sizeof(reason)));
    assert_non_null(strstr(reason, "1 message(s) stuck"));
    kd_pipeline_stats_get(r.p, &st);
    assert_int_equal(st.inflight, 1);
    assert_int_equal(st.dead_lettered, 0);
    assert_true(st.produce_errors >= 4); /* 2 downstream, then 2 dead-letter */
    assert_int_equal(committed_total(e, "in", PARTS), 0);

    kf_mock_cmd(&e->mock, "clear-produce-errors");
    st = kf_run_wait(&r, 1, TIMEOUT_MS);
    assert_int_equal(st.inflight, 0);
    assert_int_equal(st.dead_lettered, 1);
    assert_int_equal(st.forwarded, 0);
    assert_int_equal(atomic_load(&g->stuck), 0);
    assert_true(kd_pipeline_ready(r.p, reason, sizeof(reason)));
    kf_run_stop(&r);
    assert_int_equal(committed_total(e, "in", PARTS), 1);
    recs = kf_read(&e->mock, "dlq", 1, 1, 500, TIMEOUT_MS, &n);
    assert_int_equal(n, 1);
    assert_string_equal(recs[0].ikey, "key-0");
    assert_string_equal(recs[0].reason, "delivery-failed");
    free(recs);
}

/* A delivery whose outcome is unknown (the broker answers after
 * message.timeout.ms: POSSIBLY_PERSISTED, with the message in the log)
 * keeps its claim, so no other copy can take the key, and is looked up
 * downstream: found there, it is completed with that record, not sent a
 * second time. */
static void test_possibly_persisted_resolved_downstream(void **state) {
    env *e = *state;
    kd_pipeline_stats st;
    kf_record *recs;
    size_t n;
    kf_run r;

    split_brokers(e);
    send_keys(e, "in", 0, 5, 1);
    start(&r, e, "{\"message.timeout.ms\": \"1000\"}", 5, "5s");
    kf_run_wait(&r, 5, TIMEOUT_MS);      /* connections up, first deliveries done */
    kf_mock_cmd(&e->mock, "rtt 2 2500"); /* now answers arrive after the timeout */
    send_keys(e, "in", 5, 10, 1);
    for (int i = 0; i < 500; i++) {
        kd_pipeline_stats_get(r.p, &st);
        if (st.possibly_persisted >= 1)
            break;
        nanosleep(&(struct timespec){0, 20 * 1000 * 1000}, NULL);
    }
    kf_mock_cmd(&e->mock, "rtt 2 0");
    st = kf_run_wait(&r, 10, TIMEOUT_MS);
    assert_true(st.possibly_persisted >= 1);
    /* Every failure was either released (not persisted) or kept (possibly). */
    assert_int_equal(st.released + st.possibly_persisted, st.produce_errors);
    /* The mock appends before it answers: each is found, none sent again. */
    assert_int_equal(st.uncertain_found, st.possibly_persisted);
    assert_int_equal(st.uncertain_absent + st.uncertain_unknown, 0);
    /* kdedup_retries_total: deliveries sent again, each released one once;
     * the reads of downstream are none (they were counted before) */
    assert_int_equal(st.retries, st.released);
    assert_int_equal(st.forwarded, 10);
    kf_run_stop(&r);
    recs = kf_read(&e->mock, "out", PARTS, 10, 1000, TIMEOUT_MS, &n);
    assert_int_equal(n, 10);
    assert_each_once(recs, n, 0, 10);
    free(recs);
}

/* Waits (TIMEOUT_MS at most) until the stats' uint64_t at offset `field`
 * reaches n; returns the last stats. */
static kd_pipeline_stats stats_reach(kf_run *r, size_t field, uint64_t n) {
    kd_pipeline_stats st;

    for (int i = 0; i < TIMEOUT_MS / 20; i++) {
        kd_pipeline_stats_get(r->p, &st);
        if (*(const uint64_t *)((const char *)&st + field) >= n)
            break;
        nanosleep(&(struct timespec){0, 20 * 1000 * 1000}, NULL);
    }
    return st;
}

#define STATS_REACH(r, name, n) stats_reach((r), offsetof(kd_pipeline_stats, name), (n))

static void put_downstream(rd_kafka_t *rk, const char *key, int src_off, uint64_t at);

/* Wall milliseconds. */
static uint64_t wall_ms(void) {
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* A resend must not move the downstream read past the first copy (issue
 * 27). x's first copy is possibly persisted (REQUEST_TIMED_OUT past the
 * producer's retries: not in the log); no later delivery to out/0 is
 * acknowledged, so x is read for after the barrier's wait (10 x
 * message.timeout.ms), found absent, and sent again, under the same claim;
 * the resend is possibly persisted too. Then the first copy lands, late
 * (a broker that held the request that long: RELIABILITY.md, "Late
 * writes"; the mock appends before it answers, so the test appends it,
 * with the headers the read judges, stamped no earlier than kdedup's own
 * stamp and 10 s before the resend). The read for the resend starts where
 * the first copy could land and accepts a record forwarded since the first
 * copy was sent (kd_pl_produce keeps scan_from and sent_at_ms for a
 * message that may be downstream): it finds the first copy and completes
 * the claim with it. Read from where the resend went and since it was sent,
 * it would miss the first copy and send x a third time: twice downstream. */
static void test_resend_reads_from_the_first_copy(void **state) {
    env *e = *state;
    kd_pipeline_stats st;
    uint64_t first_failed;
    kf_record *recs;
    rd_kafka_t *rk;
    size_t n;
    kf_run r;

    split_brokers(e);
    start(&r, e,
          "{\"message.timeout.ms\": \"1000\", \"retries\": \"1\", \"retry.backoff.ms\": "
          "\"10\"}",
          5, "5s");
    rk = kf_producer(&e->mock);
    kf_send(rk, "in", 0, "w", "warm"); /* in/0 offset 0: connections up */
    kf_producer_close(rk);
    st = kf_run_wait(&r, 1, TIMEOUT_MS);
    assert_int_equal(st.forwarded, 1);

    /* Both copies of x fail their two attempts with REQUEST_TIMED_OUT:
     * possibly persisted, and not in the log. */
    kf_mock_cmd(&e->mock, "broker-produce-errors 2 4 %d",
                RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT);
    rk = kf_producer(&e->mock);
    kf_send(rk, "in", 0, "x", "the message"); /* in/0 offset 1 */
    kf_producer_close(rk);
    st = STATS_REACH(&r, possibly_persisted, 1);
    first_failed = wall_ms(); /* after the first copy was sent, 10 s before the resend */
    /* No later delivery to out/0: read after 10 x message.timeout.ms */
    st = STATS_REACH(&r, uncertain_absent, 1);
    assert_int_equal(st.uncertain_absent, 1);
    st = STATS_REACH(&r, possibly_persisted, 2); /* the resend, uncertain too */
    assert_int_equal(st.possibly_persisted, 2);
    /* The first copy lands now (its stamp: see above) */
    rk = kf_producer(&e->mock);
    put_downstream(rk, "x", 1, first_failed);
    kf_producer_close(rk);

    st = STATS_REACH(&r, forwarded, 2);
    assert_int_equal(st.forwarded, 2);
    assert_int_equal(st.uncertain_found, 1);
    assert_int_equal(st.uncertain_absent, 1);
    kf_run_stop(&r);
    recs = kf_read(&e->mock, "out", PARTS, 2, 1000, TIMEOUT_MS, &n);
    assert_int_equal(kf_count_key(recs, n, "x"), 1);
    assert_int_equal(n, 2);
    free(recs);
}

/* Opens e->dir/store and records in it a run `owner` that delivered to
 * "out" from partitions 0-3 and died (its run record, as recovery reads
 * it); returns the store; asserts. */
static kd_store *store_with_dead_run(env *e, uint64_t owner) {
    static const char run[] = "kdedup-run v1\n0 0 out\n1 0 out\n2 0 out\n3 0 out\n";
    char path[512], err[512], stream[32];
    kd_store *store;

    snprintf(path, sizeof(path), "%s/store", e->dir);
    assert_non_null(store = kd_rocks_open(path, true, err, sizeof(err)));
    assert_int_equal(
        kd_store_append(store, stream,
                        kd_recovery_run_stream(owner, stream, sizeof(stream)), 0, run,
                        strlen(run)),
        KD_OK);
    return store;
}

/* A claim left in flight by a run that is gone (another owner id) is taken
 * over and the message forwarded, not suppressed forever; a claim this run
 * holds is a duplicate. */
static void test_orphaned_claim_is_reforwarded(void **state) {
    env *e = *state;
    char path[512], err[512];
    kd_pipeline_stats st;
    kd_decision dec;
    kf_record *recs;
    kd_store *store;
    kd_dedup *d;
    size_t n;
    kf_run r;

    snprintf(path, sizeof(path), "%s/store", e->dir);
    store = kd_rocks_open(path, true, err, sizeof(err));
    assert_non_null(store);
    d = kd_dedup_new(store, "kdedup:in"); /* the route's scope: namespace ":" from */
    kd_dedup_set_owner(d, 0xdead);
    /* Claimed just now: well within the in-flight timeout, so only its
     * owner tells it apart from a live claim. */
    assert_int_equal(
        kd_dedup_claim_or_get(d, "key-3", 5, (uint64_t)time(NULL) * 1000, &dec), KD_OK);
    assert_int_equal(dec.state, KD_CLAIMED);
    kd_dedup_destroy(d);
    kd_store_destroy(store);

    send_keys(e, "in", 0, 10, 1);
    start(&r, e, "{}", 5, "5s");
    st = kf_run_wait(&r, 10, TIMEOUT_MS);
    assert_int_equal(st.forwarded, 10);
    assert_int_equal(st.orphans_reforwarded, 1);
    /* /healthz: the loop turns (within 10s), but not within 0ms. */
    assert_true(kd_pipeline_healthy(r.p, 10000, 10000, err, sizeof(err)));
    assert_false(kd_pipeline_healthy(r.p, 0, 10000, err, sizeof(err)));
    assert_non_null(strstr(err, "main loop has not turned"));
    assert_true(kd_pipeline_ready(r.p, err, sizeof(err)));
    kf_run_stop(&r);
    recs = kf_read(&e->mock, "out", PARTS, 10, 1000, TIMEOUT_MS, &n);
    assert_int_equal(n, 10);
    assert_each_once(recs, n, 0, 10);
    free(recs);
}

/* Claims of owner in d for key-<from>..key-<to-1>, made at `at` (wall ms). */
static void claim_at(kd_dedup *d, uint64_t owner, int from, int to, uint64_t at) {
    char key[32];
    kd_decision dec;

    kd_dedup_set_owner(d, owner);
    for (int i = from; i < to; i++) {
        snprintf(key, sizeof(key), "key-%d", i);
        assert_int_equal(kd_dedup_claim_or_get(d, key, strlen(key), at, &dec), KD_OK);
        assert_int_equal(dec.state, KD_CLAIMED);
        kd_decision_clear(&dec);
    }
}

/* The one-route config with a dedup section of the caller's (the handover
 * off: only recovery can tell what a dead run delivered). */
#define DEDUP_CONFIG                                                                     \
    "{\"kafka\": {\"brokers\": \"%s\", \"group_id\": \"g\","                             \
    " \"consumer\": {\"session.timeout.ms\": \"6000\", \"heartbeat.interval.ms\": "      \
    "\"500\"}},"                                                                         \
    " \"routes\": [{\"from\": \"in\", \"to\": \"out\", \"on_missing_key\": "             \
    "\"forward\"}],"                                                                     \
    " \"dedup\": %s, \"store\": {\"path\": \"%s/store\"}}"
#define NO_HANDOVER "{\"handover\": false, \"inflight_timeout\": \"10m\"}"

/* A run killed after its deliveries of key-0..2 were acknowledged but before
 * their receipts, with key-3..5 claimed and never delivered; key-9 claimed
 * by a run that left no run record. The next run completes key-0..2 from
 * the records it finds downstream, forwards key-3..5 once, and key-9 again
 * (at least once, counted): every key downstream exactly once. */
static void orphans_resolved(env *e, uint64_t claimed_at, bool handover) {
    char path[512], err[512], key[32], value[64], source[64];
    rd_kafka_t *rk = kf_producer(&e->mock);
    kd_pipeline_stats st;
    kd_decision dec;
    kf_record *recs;
    kd_store *store;
    kd_dedup *d;
    bool found;
    size_t n;
    kf_run r;

    store = store_with_dead_run(e, 0xbeef);
    d = kd_dedup_new(store, "kdedup:in");
    claim_at(d, 0xbeef, 0, 6, claimed_at);
    claim_at(d, 0xdead, 9, 10, claimed_at);
    kd_dedup_destroy(d);
    kd_store_destroy(store);

    for (int i = 0; i < 10; i++) {
        snprintf(key, sizeof(key), "key-%d", i);
        snprintf(value, sizeof(value), "value-%d-copy-0", i);
        kf_send(rk, "in", 0, key, value);
        if (i >= 3)
            continue;
        /* what the dead run delivered: in/0/i -> out/0 */
        snprintf(source, sizeof(source), "in/0/%d", i);
        assert_int_equal(
            rd_kafka_producev(rk, RD_KAFKA_V_TOPIC("out"), RD_KAFKA_V_PARTITION(0),
                              RD_KAFKA_V_VALUE(value, strlen(value)),
                              RD_KAFKA_V_HEADER("Idempotency-Key", key, -1),
                              RD_KAFKA_V_HEADER("trace", value, -1),
                              RD_KAFKA_V_HEADER("kdedup-source", source, -1),
                              RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END),
            RD_KAFKA_RESP_ERR_NO_ERROR);
    }
    kf_producer_close(rk);

    if (handover)
        start(&r, e, "{}", 5, "5s");
    else
        kf_run_start(&r, &e->mock, DEDUP_CONFIG, e->mock.bootstrap, NO_HANDOVER, e->dir);
    st = kf_run_wait(&r, 10, TIMEOUT_MS);
    assert_int_equal(st.consumed, 10);
    assert_int_equal(st.orphans_found, 3);
    /* past the in-flight timeout, every orphan (key-0..5, key-9) was one */
    assert_int_equal(st.orphans_expired,
                     (uint64_t)time(NULL) * 1000 - claimed_at > 10 * 60 * 1000 ? 7 : 0);
    assert_int_equal(st.orphans_absent, 3);
    assert_int_equal(st.orphans_reforwarded, 1);
    assert_int_equal(st.forwarded, 7);
    kf_run_stop(&r);

    recs = kf_read(&e->mock, "out", PARTS, 10, 1000, TIMEOUT_MS, &n);
    assert_int_equal(n, 10);
    assert_each_once(recs, n, 0, 10);
    free(recs);

    /* key-1's receipt names the record the dead run delivered. */
    snprintf(path, sizeof(path), "%s/store", e->dir);
    assert_non_null(store = kd_rocks_open(path, true, err, sizeof(err)));
    d = kd_dedup_new(store, "kdedup:in");
    assert_int_equal(kd_dedup_lookup(d, "key-1", 5, &dec, &found), KD_OK);
    assert_true(found);
    assert_int_equal(dec.state, KD_COMPLETED);
    snprintf(err, sizeof(err), "%.*s", (int)dec.receipt_len, (const char *)dec.receipt);
    assert_non_null(strstr(err, "to=out/0@1 "));
    assert_non_null(strstr(err, "from=in/0@1"));
    kd_decision_clear(&dec);
    kd_dedup_destroy(d);
    kd_store_destroy(store);
}

static void test_orphans_resolved_from_downstream(void **state) {
    orphans_resolved(*state, (uint64_t)time(NULL) * 1000, true);
}

/* The same, found by recovery alone (no handover completes them first). */
static void test_orphans_resolved_without_handover(void **state) {
    orphans_resolved(*state, (uint64_t)time(NULL) * 1000, false);
}

/* Claims older than dedup.inflight_timeout (the run died 11 minutes ago)
 * count as absent, but their deliveries may be downstream all the same:
 * they are looked up there before anything is forwarded again. */
static void test_expired_orphans_looked_up(void **state) {
    orphans_resolved(*state, (uint64_t)time(NULL) * 1000 - 11 * 60 * 1000, false);
}

/* A key forwarded two hours ago (ttl 1 h: expired), consumed again and
 * claimed a minute ago by a run that died before delivering it. The old
 * record downstream is that key's, but not that claim's delivery: the
 * claim is resolved as absent and the message forwarded (once more), not
 * completed by the old record (which would lose it). */
static void test_orphan_not_completed_by_an_older_delivery(void **state) {
    env *e = *state;
    uint64_t now = (uint64_t)time(NULL) * 1000;
    char at[32];
    rd_kafka_t *rk = kf_producer(&e->mock);
    kd_pipeline_stats st;
    kf_record *recs;
    kd_store *store;
    kd_dedup *d;
    size_t n;
    kf_run r;

    store = store_with_dead_run(e, 0xbeef);
    d = kd_dedup_new(store, "kdedup:in");
    claim_at(d, 0xbeef, 0, 1, now - 60 * 1000);
    kd_dedup_destroy(d);
    kd_store_destroy(store);

    /* key-0's delivery of two hours ago, then key-0 again */
    snprintf(at, sizeof(at), "%llu", (unsigned long long)(now - 7200 * 1000));
    assert_int_equal(
        rd_kafka_producev(rk, RD_KAFKA_V_TOPIC("out"), RD_KAFKA_V_PARTITION(0),
                          RD_KAFKA_V_VALUE("old", 3),
                          RD_KAFKA_V_HEADER("Idempotency-Key", "key-0", -1),
                          RD_KAFKA_V_HEADER("kdedup-source", "in/0/0", -1),
                          RD_KAFKA_V_HEADER("kdedup-forwarded-at", at, -1),
                          RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END),
        RD_KAFKA_RESP_ERR_NO_ERROR);
    kf_send(rk, "in", 0, "key-0", "value-0-copy-0");
    kf_producer_close(rk);

    kf_run_start(&r, &e->mock, DEDUP_CONFIG, e->mock.bootstrap, "{\"ttl\": \"1h\"}",
                 e->dir);
    st = kf_run_wait(&r, 1, TIMEOUT_MS);
    kf_run_stop(&r);
    assert_int_equal(st.handover_keys, 0); /* forwarded past the ttl: not learned */
    assert_int_equal(st.orphans_found, 0);
    assert_int_equal(st.orphans_absent, 1);
    assert_int_equal(st.forwarded, 1);
    recs = kf_read(&e->mock, "out", PARTS, 2, 1000, TIMEOUT_MS, &n);
    assert_int_equal(kf_count_key(recs, n, "key-0"), 2); /* the old one, and now */
    free(recs);
}

/* Puts on out/0 a record kdedup forwarded from in/0 at offset src_off, for
 * key, at wall time `at` (ms); unsigned. */
static void put_downstream(rd_kafka_t *rk, const char *key, int src_off, uint64_t at) {
    char source[32], stamp[24];

    snprintf(source, sizeof(source), "in/0/%d", src_off);
    snprintf(stamp, sizeof(stamp), "%llu", (unsigned long long)at);
    assert_int_equal(
        rd_kafka_producev(rk, RD_KAFKA_V_TOPIC("out"), RD_KAFKA_V_PARTITION(0),
                          RD_KAFKA_V_VALUE("old", 3),
                          RD_KAFKA_V_HEADER("Idempotency-Key", key, -1),
                          RD_KAFKA_V_HEADER("kdedup-source", source, -1),
                          RD_KAFKA_V_HEADER("kdedup-forwarded-at", stamp, -1),
                          RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END),
        RD_KAFKA_RESP_ERR_NO_ERROR);
}

/* The store of a run (0xdead) that died: key-0 forwarded by 0xbeef 61 s
 * before claimed_at, then forgotten, and its copy claimed by 0xdead at
 * claimed_at, never produced. */
static void forgotten_then_claimed(env *e, uint64_t claimed_at) {
    kd_store *store = store_with_dead_run(e, 0xdead);
    kd_dedup *d = kd_dedup_new(store, "kdedup:in");
    kd_forget_result res;

    claim_at(d, 0xbeef, 0, 1, claimed_at - 61 * 1000);
    assert_int_equal(kd_dedup_complete_receipt(d, "key-0", 5, "v1 to=out/0@0", 13),
                     KD_OK);
    assert_int_equal(kd_dedup_forget(d, "key-0", 5, false, NULL, NULL, &res), KD_OK);
    assert_int_equal(res, KD_FORGET_DONE);
    claim_at(d, 0xdead, 0, 1, claimed_at); /* the copy, claimed; its run died */
    kd_dedup_destroy(d);
    kd_store_destroy(store);
}

/* key-0 was forwarded (its record downstream), then forgotten (DELETE
 * /v1/keys: kd_dedup_forget), and a new copy claimed `age_ms` ago by a run
 * that died before producing it. The next run's handover reads the old
 * record: forwarded before that claim, it is not its delivery and must not
 * complete it, as recovery would not; the copy reaches downstream. */
static void older_than_the_claim(env *e, uint64_t age_ms) {
    uint64_t now = (uint64_t)time(NULL) * 1000, claimed_at = now - age_ms;
    rd_kafka_t *rk = kf_producer(&e->mock);
    kd_pipeline_stats st;
    kf_record *recs;
    size_t n;
    kf_run r;

    forgotten_then_claimed(e, claimed_at);

    put_downstream(rk, "key-0", 0, claimed_at - 60 * 1000);
    kf_send(rk, "in", 0, "key-0", "value-0-copy-0");
    kf_producer_close(rk);

    start(&r, e, "{}", 5, "5s");
    st = kf_run_wait(&r, 1, TIMEOUT_MS);
    kf_run_stop(&r);
    assert_int_equal(st.handover_keys, 0);
    assert_int_equal(st.orphans_found, 0); /* by neither the handover nor recovery */
    /* a live claim is resolved as absent; an expired one the handover took
     * over and let go of, so the copy was claimed afresh */
    assert_int_equal(st.orphans_absent, age_ms < 10 * 60 * 1000 ? 1 : 0);
    assert_int_equal(st.forwarded, 1);
    recs = kf_read(&e->mock, "out", PARTS, 2, 1000, TIMEOUT_MS, &n);
    assert_int_equal(kf_count_key(recs, n, "key-0"), 2); /* the old one, and the copy */
    free(recs);
}

/* Starts a replica over a faulty store whose handover is cut between its
 * two writes: the claims of the keys it learns are written, the write
 * after them (their receipts) is refused; then the store accepts writes
 * again, and the handover reads its history again. */
static void start_with_handover_cut(env *e, kf_run *r) {
    kd_pipeline_stats st;

    kf_run_start_faulty(r, &e->mock, ROUTE_CONFIG, e->mock.bootstrap, "{}", 5, e->dir,
                        "5s");
    kd_pipeline_stats_get(r->p, &st);
    assert_int_equal(st.assigned_partitions, 0);    /* armed before the handover */
    kd_faulty_store_fail_writes_after(r->store, 1); /* the claims, not the receipts */
    for (int i = 0; i < TIMEOUT_MS / 20 && !kd_faulty_store_refused(r->store); i++)
        nanosleep(&(struct timespec){0, 20 * 1000 * 1000}, NULL);
    assert_true(kd_faulty_store_refused(r->store) >= 1);
    kd_faulty_store_fail_writes(r->store, false);
}

/* A handover whose claims were written but whose completions were not (the
 * store refused the second write), read again (hunt). Another replica
 * forwarded key-0 from in/0 a minute ago (its record downstream, stamped);
 * this replica, with a fresh store, is given in/0: its handover claims
 * key-0 and fails to complete it, and tries again once the store is back.
 * Expected: learned on the retry (its own claim was made at the record's
 * forwarding time), the copy a duplicate. Before, the claim was made at
 * the first read's time: the retry judged the record older than it, "not
 * this claim's delivery" (SKIP), key-0 stayed claimed and unlearned, and
 * its copy, taken for an orphan of this run and looked up among this run's
 * own deliveries (none), was forwarded: downstream twice. */
static void test_handover_retried_after_a_failed_completion(void **state) {
    env *e = *state;
    rd_kafka_t *rk = kf_producer(&e->mock);
    kd_pipeline_stats st;
    kf_record *recs;
    size_t n;
    kf_run r;

    put_downstream(rk, "key-0", 0, (uint64_t)time(NULL) * 1000 - 60 * 1000);
    kf_send(rk, "in", 0, "key-0", "value-0-copy-0");
    kf_producer_close(rk);

    start_with_handover_cut(e, &r);
    st = kf_run_wait(&r, 1, TIMEOUT_MS);
    kf_run_stop(&r);
    assert_int_equal(st.consumed, 1);
    recs = kf_read(&e->mock, "out", PARTS, 1, 2000, TIMEOUT_MS, &n);
    assert_int_equal(kf_count_key(recs, n, "key-0"), 1);
    free(recs);
}

static void test_handover_refuses_a_delivery_older_than_the_claim(void **state) {
    older_than_the_claim(*state, 0);
}

/* The same with the claim past dedup.inflight_timeout (10 m): the handover
 * takes the expired claim over, and lets the key go again. */
static void test_handover_refuses_a_delivery_older_than_an_expired_claim(void **state) {
    older_than_the_claim(*state, 11 * 60 * 1000);
}

/* Replica a's revoke drain ran out while its deliveries of key-0 and key-1
 * were still out; b forwarded both; then a's deliveries failed and a
 * released their claims. a gets the partition back: its handover reads b's
 * records, older than a's releases, and learns both all the same (a
 * release is not a forget), so a's retried copies are duplicates. key-2,
 * forwarded a minute ago and then forgotten by the operator, is not
 * learned: its copy goes out again, as asked. */
static void test_handover_honours_forgets_not_releases(void **state) {
    env *e = *state;
    uint64_t now = (uint64_t)time(NULL) * 1000;
    char path[512], err[512];
    rd_kafka_t *rk = kf_producer(&e->mock);
    kd_forget_result res;
    kd_pipeline_stats st;
    kf_record *recs;
    kd_store *store;
    kd_dedup *d;
    size_t n;
    kf_run r;

    snprintf(path, sizeof(path), "%s/store", e->dir);
    assert_non_null(store = kd_rocks_open(path, true, err, sizeof(err)));
    d = kd_dedup_new(store, "kdedup:in");
    claim_at(d, 0xa, 0, 3, now - 70 * 1000);
    assert_int_equal(kd_dedup_complete_receipt(d, "key-2", 5, "v1 to=out/0@0", 13),
                     KD_OK);
    assert_int_equal(kd_dedup_forget(d, "key-2", 5, false, NULL, NULL, &res), KD_OK);
    assert_int_equal(res, KD_FORGET_DONE);
    put_downstream(rk, "key-2", 2, now - 60 * 1000);
    put_downstream(rk, "key-0", 0, now - 5 * 1000); /* b's */
    put_downstream(rk, "key-1", 1, now - 5 * 1000);
    kf_producer_close(rk);
    /* a's deliveries fail now, after b forwarded the keys */
    assert_int_equal(kd_dedup_release_claim(d, "key-0", 5), KD_OK);
    assert_int_equal(kd_dedup_release_claim(d, "key-1", 5), KD_OK);
    kd_dedup_destroy(d);
    kd_store_destroy(store);

    rk = kf_producer(&e->mock);
    for (int i = 0; i < 3; i++) { /* the copies a consumes again */
        char key[16];

        snprintf(key, sizeof(key), "key-%d", i);
        kf_send(rk, "in", 0, key, "again");
    }
    kf_producer_close(rk);

    start(&r, e, "{}", 5, "5s");
    st = kf_run_wait(&r, 3, TIMEOUT_MS);
    kf_run_stop(&r);
    assert_int_equal(st.handover_keys, 2);
    assert_int_equal(st.duplicates_completed, 2);
    assert_int_equal(st.forwarded, 1);
    recs = kf_read(&e->mock, "out", PARTS, 4, 1000, TIMEOUT_MS, &n);
    assert_int_equal(kf_count_key(recs, n, "key-0"), 1);
    assert_int_equal(kf_count_key(recs, n, "key-1"), 1);
    assert_int_equal(kf_count_key(recs, n, "key-2"), 2); /* forgotten: sent again */
    free(recs);
}

/* A forget undone by a handover read again (hunt). key-2 was forwarded a
 * minute ago and then forgotten by the operator; key-0 was forwarded by
 * another replica. The handover claims both, lets key-2 go again (forgotten
 * after its record: UNCLAIM, a release), and the store refuses the receipt
 * of key-0: the batch is read again once the store is back. The release
 * left a release's tombstone, not a forget's, so the second reading takes
 * key-2's record for a delivery (a release is not a forget) and learns it:
 * the copy sent after the forget is dropped as a duplicate. Expected:
 * key-2 forwarded again, key-0 learned. */
static void test_handover_read_again_keeps_a_forget(void **state) {
    env *e = *state;
    uint64_t now = (uint64_t)time(NULL) * 1000;
    char path[512], err[512];
    rd_kafka_t *rk = kf_producer(&e->mock);
    kd_forget_result res;
    kd_pipeline_stats st;
    kf_record *recs;
    kd_store *store;
    kd_dedup *d;
    size_t n;
    kf_run r;

    snprintf(path, sizeof(path), "%s/store", e->dir);
    assert_non_null(store = kd_rocks_open(path, true, err, sizeof(err)));
    d = kd_dedup_new(store, "kdedup:in");
    claim_at(d, 0xa, 2, 3, now - 70 * 1000);
    assert_int_equal(kd_dedup_complete_receipt(d, "key-2", 5, "v1 to=out/0@0", 13),
                     KD_OK);
    assert_int_equal(kd_dedup_forget(d, "key-2", 5, false, NULL, NULL, &res), KD_OK);
    assert_int_equal(res, KD_FORGET_DONE);
    kd_dedup_destroy(d);
    kd_store_destroy(store);
    put_downstream(rk, "key-2", 2, now - 60 * 1000);
    put_downstream(rk, "key-0", 0, now - 5 * 1000);
    kf_send(rk, "in", 0, "key-0", "again");
    kf_send(rk, "in", 0, "key-2", "again");
    kf_producer_close(rk);

    start_with_handover_cut(e, &r);
    st = kf_run_wait(&r, 2, TIMEOUT_MS);
    kf_run_stop(&r);
    assert_int_equal(st.consumed, 2);
    recs = kf_read(&e->mock, "out", PARTS, 3, 2000, TIMEOUT_MS, &n);
    assert_int_equal(kf_count_key(recs, n, "key-0"), 1);
    assert_int_equal(kf_count_key(recs, n, "key-2"), 2); /* forgotten: sent again */
    free(recs);
}

/* An expired claim's judgment undone by a handover read again (hunt). As
 * in test_handover_refuses_a_delivery_older_than_an_expired_claim, key-0's
 * copy was claimed 11 minutes ago, after its old record was forwarded, by
 * a run that died before producing it; key-1 was forwarded by another
 * replica. The handover takes the expired claim of key-0 over and lets it
 * go again (the record is older than that claim), and the store refuses
 * key-1's receipt: the batch is read again once the store is back. The
 * release left nothing of the expired claim, so the second reading learns
 * key-0 from the old record and the copy is skipped. Expected: as without
 * the store error, key-0's copy forwarded, key-1 learned. */
static void test_handover_read_again_keeps_an_expired_claim(void **state) {
    env *e = *state;
    uint64_t now = (uint64_t)time(NULL) * 1000, claimed_at = now - 11 * 60 * 1000;
    rd_kafka_t *rk = kf_producer(&e->mock);
    kd_pipeline_stats st;
    kf_record *recs;
    size_t n;
    kf_run r;

    forgotten_then_claimed(e, claimed_at);
    put_downstream(rk, "key-0", 0, claimed_at - 60 * 1000);
    put_downstream(rk, "key-1", 1, now - 5 * 1000);
    kf_send(rk, "in", 0, "key-0", "value-0-copy-0");
    kf_send(rk, "in", 0, "key-1", "again");
    kf_producer_close(rk);

    start_with_handover_cut(e, &r);
    st = kf_run_wait(&r, 2, TIMEOUT_MS);
    kf_run_stop(&r);
    assert_int_equal(st.consumed, 2);
    recs = kf_read(&e->mock, "out", PARTS, 3, 2000, TIMEOUT_MS, &n);
    assert_int_equal(kf_count_key(recs, n, "key-1"), 1);
    assert_int_equal(kf_count_key(recs, n, "key-0"), 2); /* the old one, and the copy */
    free(recs);
}

/* Runs the one-route pipeline over the store in e->dir/<name>. */
static void start_named(kf_run *r, env *e, const char *name) {
    char dir[300];

    snprintf(dir, sizeof(dir), "%s/%s", e->dir, name);
    if (mkdir(dir, 0700) != 0)
        assert_int_equal(errno, EEXIST); /* the replica's second run */
    kf_run_start(r, &e->mock, ROUTE_CONFIG, e->mock.bootstrap, "{}", 5, dir, "5s");
}

/* Two replicas with stores of their own take turns with the partitions.
 * Each learns on assignment what the other forwarded, so a duplicate
 * arriving after the move is suppressed; each reads only the records
 * added since its own last handover of a partition, and learns nothing
 * from records kdedup did not forward. */
static void test_handover_moves_history(void **state) {
    env *e = *state;
    kd_pipeline_stats st;
    kf_record *recs;
    rd_kafka_t *rk;
    size_t n;
    kf_run r;

    send_keys(e, "in", 0, 100, 1);
    start_named(&r, e, "a"); /* downstream is empty: a learns nothing */
    st = kf_run_wait(&r, 100, TIMEOUT_MS);
    assert_int_equal(st.forwarded, 100);
    assert_int_equal(st.handover_keys, 0);
    kf_run_stop(&r);

    /* Records another producer put downstream are read, never learned. */
    rk = kf_producer(&e->mock);
    kf_send(rk, "out", 0, "key-150", "no kdedup-source header");
    kf_send(rk, "out", 1, "key-151", "no kdedup-source header");
    kf_producer_close(rk);

    send_keys(e, "in", 50, 150, 1); /* 50 a forwarded, 50 new */
    start_named(&r, e, "b");
    st = kf_run_wait(&r, 100, TIMEOUT_MS);
    assert_int_equal(st.handover_records, 102);
    assert_int_equal(st.handover_keys, 100);
    assert_int_equal(st.forwarded, 50);
    assert_int_equal(st.duplicates_completed, 50);
    kf_run_stop(&r);

    send_keys(e, "in", 100, 200, 1); /* 50 b forwarded, 50 new */
    start_named(&r, e, "a");         /* its marks are at 0: reads all 152 */
    st = kf_run_wait(&r, 100, TIMEOUT_MS);
    assert_int_equal(st.handover_records, 152);
    assert_int_equal(st.handover_keys, 50);
    assert_int_equal(st.forwarded, 50);
    assert_int_equal(st.duplicates_completed, 50);
    kf_run_stop(&r);

    send_keys(e, "in", 0, 200, 1); /* all seen */
    start_named(&r, e, "b");       /* reads from its marks: 50 own, 50 a's */
    st = kf_run_wait(&r, 200, TIMEOUT_MS);
    assert_int_equal(st.handover_records, 100);
    assert_int_equal(st.handover_keys, 50);
    assert_int_equal(st.forwarded, 0);
    assert_int_equal(st.duplicates_completed, 200);
    kf_run_stop(&r);

    recs = kf_read(&e->mock, "out", PARTS, 202, 1000, TIMEOUT_MS, &n);
    assert_int_equal(n, 202); /* key-150 and key-151 forwarded once each, too */
    for (int i = 0; i < 200; i++) {
        char key[32];

        snprintf(key, sizeof(key), "key-%d", i);
        assert_int_equal(kf_count_key(recs, n, key), i == 150 || i == 151 ? 2 : 1);
    }
    free(recs);
}

/* Sends key-from .. key-(to - 1), copy `copy`, onto partitions first ..
 * first + nparts - 1 of "in", round-robin (as a keyless producer would). */
static void send_onto(env *e, int first, int nparts, int from, int to, int copy) {
    rd_kafka_t *rk = kf_producer(&e->mock);
    char key[32], value[64];

    for (int i = from; i < to; i++) {
        snprintf(key, sizeof(key), "key-%d", i);
        snprintf(value, sizeof(value), "value-%d-copy-%d", i, copy);
        kf_send(rk, "in", first + i % nparts, key, value);
    }
    kf_producer_close(rk);
}

/* Keys spread over partitions (issue 26 item 5): a replica forwarded
 * 20,000 keys from partition 3; a keyless producer sends the last 200 of
 * them again onto partitions 0, 1 and 2. A replica with a fresh store (an
 * emptyDir pod start) is given every partition: partitions 0-2, whose own
 * histories are empty, are not consumed before partition 3's history is
 * learned too, so every copy is a duplicate. (Before, each was consumed as
 * soon as its own empty history was read, while partition 3's was still
 * being read: copies went downstream again.) */
static void test_handover_keys_spread(void **state) {
    env *e = *state;
    kd_pipeline_stats st;
    char key[32], dir[300];
    kf_record *recs;
    size_t n, twice = 0;
    kf_run r;

    send_onto(e, 3, 1, 0, 20000, 0);
    start_named(&r, e, "a");
    st = kf_run_wait(&r, 20000, TIMEOUT_MS);
    kf_run_stop(&r);
    assert_int_equal(st.forwarded, 20000);

    send_onto(e, 0, 3, 19800, 20000, 1);
    /* A fresh store, reading 1 ms a turn: partition 3's 20,000 records take
     * many turns, the empty histories of the others none. */
    snprintf(dir, sizeof(dir), "%s/b", e->dir);
    assert_int_equal(mkdir(dir, 0700), 0);
    kf_run_start(&r, &e->mock, DEDUP_CONFIG, e->mock.bootstrap,
                 "{\"scan_step\": \"1ms\"}", dir);
    st = kf_run_wait(&r, 200, TIMEOUT_MS);
    kf_run_stop(&r);
    recs = kf_read(&e->mock, "out", PARTS, 20000, 1000, TIMEOUT_MS, &n);
    for (int i = 19800; i < 20000; i++) {
        snprintf(key, sizeof(key), "key-%d", i);
        twice += kf_count_key(recs, n, key) > 1;
    }
    print_message("%zu records downstream for 20000 keys; %zu of the 200 copies "
                  "forwarded again\n",
                  n, twice);
    free(recs);
    assert_int_equal(twice, 0);
    assert_int_equal(n, 20000);
    assert_int_equal(st.handover_keys, 20000);
    assert_int_equal(st.forwarded, 0);
    assert_int_equal(st.duplicates_completed, 200);
    assert_int_equal(st.collisions, 0);
}

/* What DELETE /v1/keys/in/<key> does on the replica whose store is in
 * e->dir/<name>: the key's forget record written beside its delivery (the
 * one its receipt names), then the key forgotten in that store. */
static void forget_on(env *e, const char *name, const char *key) {
    char json[4096], err[512], dir[300], path[512];
    kd_forget_result res;
    kd_forget_record f;
    kd_decision dec;
    kd_receipt rc;
    kd_config *cfg;
    kd_store *store;
    kd_dedup *d;
    int64_t offset = -1;
    bool found;

    snprintf(dir, sizeof(dir), "%s/%s", e->dir, name);
    snprintf(json, sizeof(json), ROUTE_CONFIG, e->mock.bootstrap, "{}", 5, dir, "5s");
    assert_non_null(
        cfg = kd_config_parse(json, strlen(json), "test.json", err, sizeof(err)));
    snprintf(path, sizeof(path), "%s/store", dir);
    assert_non_null(store = kd_rocks_open(path, true, err, sizeof(err)));
    d = kd_dedup_new(store, "kdedup:in");
    assert_int_equal(kd_dedup_lookup(d, key, strlen(key), &dec, &found), KD_OK);
    assert_true(found);
    assert_true(kd_receipt_parse(dec.receipt, dec.receipt_len, &rc));
    f = (kd_forget_record){.from = "in",
                           .to = "out",
                           .partition = rc.to_partition,
                           .src_partition = rc.from_partition,
                           .src_offset = rc.from_offset,
                           .key = key,
                           .key_len = strlen(key),
                           .at_ms = (uint64_t)time(NULL) * 1000};
    kd_decision_clear(&dec);
    if (!kd_forgets_write(cfg, e->mock.bootstrap, &f, &offset, err, sizeof(err)))
        fail_msg("%s", err);
    assert_true(offset > rc.to_offset);
    assert_int_equal(kd_dedup_forget(d, key, strlen(key), false, NULL, NULL, &res),
                     KD_OK);
    assert_int_equal(res, KD_FORGET_DONE);
    kd_dedup_destroy(d);
    kd_store_destroy(store);
    kd_config_destroy(cfg);
}

/* A forget travels with its partition. Replica a forwards key-0..4, then
 * forgets key-1 (DELETE /v1/keys on a). Replica b, with an empty store,
 * takes the partitions: its handover learns key-0..4 from a's records and
 * then reads the forget record, so the copy of key-1 the operator sends is
 * forwarded (a duplicate of key-2 is not). Replica c, with an empty store
 * too, reads key-1's first delivery, the forget record and b's delivery of
 * the copy, in that order: key-1 is completed again, and its next copy is
 * a duplicate. Without forget records b learned key-1 and dropped the copy. */
static void test_forget_travels_with_the_partition(void **state) {
    env *e = *state;
    kd_pipeline_stats st;
    kf_record *recs;
    rd_kafka_t *rk;
    size_t n;
    kf_run r;

    send_keys(e, "in", 0, 5, 1);
    start_named(&r, e, "a");
    st = kf_run_wait(&r, 5, TIMEOUT_MS);
    assert_int_equal(st.forwarded, 5);
    kf_run_stop(&r);
    forget_on(e, "a", "key-1");

    rk = kf_producer(&e->mock);
    kf_send(rk, "in", -1, "key-1", "value-1-copy-1"); /* the copy asked for */
    kf_send(rk, "in", -1, "key-2", "value-2-copy-1"); /* a duplicate */
    kf_producer_close(rk);
    start_named(&r, e, "b");
    st = kf_run_wait(&r, 2, TIMEOUT_MS);
    kf_run_stop(&r);
    assert_int_equal(st.handover_keys, 5);
    assert_int_equal(st.handover_forgets, 1);
    assert_int_equal(st.forwarded, 1);
    assert_int_equal(st.duplicates_completed, 1);

    rk = kf_producer(&e->mock);
    kf_send(rk, "in", -1, "key-1", "value-1-copy-2");
    kf_producer_close(rk);
    start_named(&r, e, "c");
    st = kf_run_wait(&r, 1, TIMEOUT_MS);
    kf_run_stop(&r);
    assert_int_equal(st.handover_forgets, 1);
    assert_int_equal(st.forwarded, 0);
    assert_int_equal(st.duplicates_completed, 1);

    recs = kf_read(&e->mock, "out", PARTS, 7, 1000, TIMEOUT_MS, &n);
    assert_int_equal(n, 7); /* five, the forget record, the copy */
    assert_int_equal(kf_count_key(recs, n, "key-1"), 2);
    assert_int_equal(kf_count_key(recs, n, "key-2"), 1);
    assert_int_equal(kf_count_key(recs, n, ""), 1); /* the forget record: no key header */
    free(recs);
}

/* Puts on out/0 a record of key from in/0/0 carrying the key in
 * kdedup-key, with kdedup-forget when `forget`, signed by signer as a
 * forget record's when `as_forget`, else as a delivery's. */
static void put_signed(rd_kafka_t *rk, kd_signer *signer, const char *key, bool forget,
                       bool as_forget) {
    char at[24], sig[KD_SIGNATURE_LEN + 1];
    const char *source = "in/0/0", *run = "0000000000000001";
    kd_signed w = {.from = "in",
                   .to = "out",
                   .source = source,
                   .source_len = strlen(source),
                   .run = run,
                   .run_len = strlen(run),
                   .at = at,
                   .key = key,
                   .key_len = strlen(key),
                   .forget = as_forget};
    rd_kafka_headers_t *h = rd_kafka_headers_new(6);

    snprintf(at, sizeof(at), "%llu", (unsigned long long)time(NULL) * 1000);
    w.at_len = strlen(at);
    assert_true(kd_sign(signer, &w, sig));
    if (forget)
        rd_kafka_header_add(h, KD_FORGET_HEADER, -1, "1", 1);
    rd_kafka_header_add(h, KD_SOURCE_HEADER, -1, source, -1);
    rd_kafka_header_add(h, KD_RUN_HEADER, -1, run, -1);
    rd_kafka_header_add(h, KD_FORWARDED_AT_HEADER, -1, at, -1);
    rd_kafka_header_add(h, KD_KEY_HEADER, -1, key, -1);
    rd_kafka_header_add(h, KD_SIGNATURE_HEADER, -1, sig, -1);
    assert_int_equal(rd_kafka_producev(rk, RD_KAFKA_V_TOPIC("out"),
                                       RD_KAFKA_V_PARTITION(0), RD_KAFKA_V_VALUE("v", 1),
                                       RD_KAFKA_V_HEADERS(h), RD_KAFKA_V_END),
                     RD_KAFKA_RESP_ERR_NO_ERROR);
}

/* Keys a handover was passed, "<key>:forget" or "<key>:delivery". */
typedef struct seen {
    char text[8][32];
    size_t n;
} seen;

static bool remember(void *arg, const kd_history_rec *recs, size_t n) {
    seen *s = arg;

    for (size_t i = 0; i < n && s->n < 8; i++)
        snprintf(s->text[s->n++], sizeof(s->text[0]), "%.*s:%s", (int)recs[i].key_len,
                 (const char *)recs[i].key, recs[i].forget ? "forget" : "delivery");
    return true;
}

/* A forget record is no delivery, and the two are signed apart. On a route
 * whose key is the record key (so its deliveries carry kdedup-key, as
 * forget records do): a forget record written by kd_forgets_write() reaches
 * the handover as a forget, never as anyone's delivery (orphan and
 * uncertain lookups do not find it, with a signing key or without); a
 * record with kdedup-forget signed as a delivery, and one without it
 * signed as a forget, are not trusted. */
static void test_forget_record_is_no_delivery(void **state) {
    env *e = *state;
    const char *run = "kdedup-run v1\n0 0 out\n1 0 out\n2 0 out\n3 0 out\n";
    char json[2048], err[512], path[512], stream[32];
    rd_kafka_t *rk = kf_producer(&e->mock);
    kd_forget_record f = {.from = "in",
                          .to = "out",
                          .key = "key-0",
                          .key_len = 5,
                          .at_ms = (uint64_t)time(NULL) * 1000};
    kd_history_cursor cur = {0};
    kd_recovery_stats rs;
    kd_recover_found found;
    int64_t offset = -1, from = 0;
    kd_signer *signer;
    kd_recovery *rc;
    kd_config *cfg;
    kd_store *store;
    seen s = {0};

    snprintf(json, sizeof(json),
             "{\"kafka\": {\"brokers\": \"%s\", \"group_id\": \"g\"}, \"routes\": "
             "[{\"from\": \"in\", \"to\": \"out\", \"key\": {\"from\": \"record_key\"}, "
             "\"on_missing_key\": \"forward\"}], \"dedup\": {\"signing_key\": "
             "\"key-one-0123456789\"}, \"store\": {\"path\": \"%s/store\"}}",
             e->mock.bootstrap, e->dir);
    assert_non_null(
        cfg = kd_config_parse(json, strlen(json), "test.json", err, sizeof(err)));
    if (!kd_forgets_write(cfg, e->mock.bootstrap, &f, &offset, err, sizeof(err)))
        fail_msg("%s", err);
    assert_int_equal(offset, 0);
    assert_non_null(signer = kd_signer_new("key-one-0123456789"));
    put_signed(rk, signer, "key-1", true, false); /* a forget signed as a delivery */
    put_signed(rk, signer, "key-2", false, true); /* a delivery signed as a forget */
    put_signed(rk, signer, "key-3", false, false);
    kd_signer_destroy(signer);
    kf_producer_close(rk);

    snprintf(path, sizeof(path), "%s/store", e->dir);
    assert_non_null(store = kd_rocks_open(path, true, err, sizeof(err)));
    assert_non_null(rc =
                        kd_recovery_new(cfg, store, e->mock.bootstrap, err, sizeof(err)));
    assert_int_equal(kd_recovery_history(rc, 0, 0, 0, 10, remember, &s, &cur),
                     KD_HISTORY_DONE);
    assert_int_equal(s.n, 2);
    assert_string_equal(s.text[0], "key-0:forget");
    assert_string_equal(s.text[1], "key-3:delivery");
    kd_recovery_stats_get(rc, &rs);
    assert_int_equal(rs.foreign, 2);
    assert_int_equal(kd_recovery_find_since(rc, 0, 0, &from, 0, "key-0", 5, &found),
                     KD_RECOVER_ABSENT);
    from = 0;
    assert_int_equal(kd_recovery_find_since(rc, 0, 0, &from, 0, "key-3", 5, &found),
                     KD_RECOVER_FOUND);
    assert_int_equal(found.offset, 3);
    kd_recovery_destroy(rc);
    kd_config_destroy(cfg);

    /* without a signing key, every record is trusted: the forget record is
     * still no delivery, for a dead run's claim or an uncertain one */
    snprintf(json, sizeof(json),
             "{\"kafka\": {\"brokers\": \"%s\", \"group_id\": \"g\"}, \"routes\": "
             "[{\"from\": \"in\", \"to\": \"out\", \"key\": {\"from\": \"record_key\"}, "
             "\"on_missing_key\": \"forward\"}], \"store\": {\"path\": \"%s/store\"}}",
             e->mock.bootstrap, e->dir);
    assert_non_null(
        cfg = kd_config_parse(json, strlen(json), "test.json", err, sizeof(err)));
    assert_int_equal(
        kd_store_append(store, stream,
                        kd_recovery_run_stream(0xdead, stream, sizeof(stream)), 0, run,
                        strlen(run)),
        KD_OK);
    assert_non_null(rc =
                        kd_recovery_new(cfg, store, e->mock.bootstrap, err, sizeof(err)));
    from = 0;
    assert_int_equal(kd_recovery_find_since(rc, 0, 0, &from, 0, "key-0", 5, &found),
                     KD_RECOVER_ABSENT);
    assert_int_equal(kd_recovery_find(rc, 0xdead, 0, 0, "key-0", 5, 0, &found),
                     KD_RECOVER_ABSENT);
    assert_int_equal(kd_recovery_find(rc, 0xdead, 0, 0, "key-2", 5, 0, &found),
                     KD_RECOVER_FOUND); /* unsigned: any delivery counts */
    kd_recovery_destroy(rc);
    kd_store_destroy(store);
    kd_config_destroy(cfg);
}

/* dedup.ttl counts from when kdedup forwarded a key, not from the source
 * message's timestamp: messages stamped 30 h ago (ttl 24 h) forwarded by one
 * replica are learned by the next, whose store is empty, and their copies
 * are duplicates. */
static void test_handover_ignores_event_time(void **state) {
    env *e = *state;
    int64_t old = (int64_t)time(NULL) * 1000 - 30 * 3600 * 1000ll;
    kd_pipeline_stats st;
    char key[32];
    kf_record *recs;
    rd_kafka_t *rk;
    size_t n;
    kf_run r;

    for (int copy = 0; copy < 2; copy++) {
        rk = kf_producer(&e->mock);
        for (int i = 0; i < 40; i++) {
            snprintf(key, sizeof(key), "key-%d", i);
            kf_send_at(rk, "in", i % PARTS, key, key, old + i);
        }
        kf_producer_close(rk);
        start_named(&r, e, copy ? "b" : "a");
        st = kf_run_wait(&r, 40, TIMEOUT_MS);
        kf_run_stop(&r);
        if (copy) {
            assert_int_equal(st.handover_keys, 40);
            assert_int_equal(st.forwarded, 0);
            assert_int_equal(st.duplicates_completed, 40);
        } else {
            assert_int_equal(st.forwarded, 40);
        }
    }
    recs = kf_read(&e->mock, "out", PARTS, 40, 1000, TIMEOUT_MS, &n);
    assert_int_equal(n, 40);
    free(recs);
}

/* While the downstream topic cannot be read, a partition's history cannot
 * be either: the partition waits, unconsumed, /readyz says why, and it is
 * consumed once the broker is back. */
static void test_handover_waits_for_downstream(void **state) {
    env *e = *state;
    kd_pipeline_stats st;
    char reason[512] = "";
    bool ready = true;
    kf_record *recs;
    size_t n;
    kf_run r;

    split_brokers(e);
    kf_mock_cmd(&e->mock, "coordinator g 1");
    send_keys(e, "in", 0, 20, 1);
    start(&r, e, "{}", 5, "5s");
    kf_mock_cmd(&e->mock, "broker-down 2"); /* downstream, before the group is joined */
    for (int i = 0; i < 1500 && ready; i++) {
        nanosleep(&(struct timespec){0, 20 * 1000 * 1000}, NULL);
        ready =
            kd_pipeline_ready(r.p, reason, sizeof(reason)) || !strstr(reason, "history");
    }
    assert_false(ready);
    kd_pipeline_stats_get(r.p, &st);
    assert_int_equal(st.consumed, 0);
    kf_mock_cmd(&e->mock, "broker-up 2");
    st = kf_run_wait(&r, 20, TIMEOUT_MS);
    assert_int_equal(st.forwarded, 20);
    assert_true(kd_pipeline_ready(r.p, reason, sizeof(reason)));
    kf_run_stop(&r);
    recs = kf_read(&e->mock, "out", PARTS, 20, 1000, TIMEOUT_MS, &n);
    assert_int_equal(n, 20);
    assert_each_once(recs, n, 0, 20);
    free(recs);
}

/* A run with the handover off (so a partition assigned again is consumed
 * at once); its arguments: brokers, message.timeout.ms, the store's
 * directory, and shutdown_grace (how long a revoke or a stop drains). */
#define REJOIN_CONFIG                                                                    \
    "{\"kafka\": {\"brokers\": \"%s\", \"group_id\": \"g\","                             \
    " \"producer\": {\"message.timeout.ms\": \"%s\", \"retries\": \"1\","                \
    " \"retry.backoff.ms\": \"10\"},"                                                    \
    " \"consumer\": {\"session.timeout.ms\": \"6000\", \"heartbeat.interval.ms\": "      \
    "\"500\"}},"                                                                         \
    " \"routes\": [{\"from\": \"in\", \"to\": \"out\", \"on_missing_key\": \"drop\", "   \
    "\"max_retries\": -1, \"retry_backoff\": \"100ms\"}], \"dedup\": {\"handover\": "    \
    "false}, \"store\": {\"path\": \"%s/store\"}, \"pipeline\": {\"shutdown_grace\": "   \
    "\"%s\"}}"

/* Waits until the pipeline's stats satisfy done (or TIMEOUT_MS); returns
 * the last stats. */
static kd_pipeline_stats wait_stats(kf_run *r, bool (*done)(const kd_pipeline_stats *)) {
    kd_pipeline_stats st;

    for (int i = 0; i < TIMEOUT_MS / 20; i++) {
        kd_pipeline_stats_get(r->p, &st);
        if (done(&st))
            break;
        nanosleep(&(struct timespec){0, 20 * 1000 * 1000}, NULL);
    }
    return st;
}

static bool consumed_6(const kd_pipeline_stats *st) {
    return st->consumed >= 6;
}

static bool consumed_again(const kd_pipeline_stats *st) {
    return st->consumed >= 7;
}

static bool failed_once(const kd_pipeline_stats *st) {
    return st->produce_errors >= 1;
}

static bool abandoned(const kd_pipeline_stats *st) {
    return st->abandoned >= 1;
}

static bool forwarded_6(const kd_pipeline_stats *st) {
    return st->forwarded + st->orphans_found >= 6;
}

/* Replicas whose member leaves its group after 3 s without a poll
 * (max.poll.interval.ms; the session is as short), in batches of 50 from
 * fetches of about 8 messages a partition. Each reads a partition's history
 * when it is given one (the default): only a copy forwarded after the new
 * owner read the history is downstream twice. Arguments: brokers, dir,
 * replica, batch_max, pipeline keys more ("" or ", \"k\": v..."). */
#define STALL_CONFIG                                                                     \
    "{\"kafka\": {\"brokers\": \"%s\", \"group_id\": \"g\", \"producer\": {},"           \
    " \"consumer\": {\"session.timeout.ms\": \"3000\", \"max.poll.interval.ms\": "       \
    "\"3000\", \"heartbeat.interval.ms\": \"500\", \"auto.commit.interval.ms\": "        \
    "\"200\", \"max.partition.fetch.bytes\": \"1024\"}},"                                \
    " \"routes\": [{\"from\": \"in\", \"to\": \"out\", \"on_missing_key\": "             \
    "\"forward\"}],"                                                                     \
    " \"store\": {\"path\": \"%s/%s/store\"}, \"pipeline\": {\"batch_max\": %d%s}}"

/* Starts replica `name` (a faulty store or not) in e->dir/name, over
 * STALL_CONFIG with `pipeline` keys more ("" for none). */
static void start_replica_with(env *e, kf_run *r, const char *name, bool faulty,
                               const char *pipeline) {
    char dir[300];

    snprintf(dir, sizeof(dir), "%s/%s", e->dir, name);
    assert_int_equal(mkdir(dir, 0700), 0);
    if (faulty)
        kf_run_start_faulty(r, &e->mock, STALL_CONFIG, e->mock.bootstrap, e->dir, name,
                            50, pipeline);
    else
        kf_run_start(r, &e->mock, STALL_CONFIG, e->mock.bootstrap, e->dir, name, 50,
                     pipeline);
}

/* Starts replica `name` (a faulty store or not) in e->dir/name. */
static void start_replica(env *e, kf_run *r, const char *name, bool faulty) {
    start_replica_with(e, r, name, faulty, "");
}

/* Waits until a and b hold `parts_a` and `parts_b` partitions, nothing in
 * flight, and `forwarded` keys were forwarded between them; asserts. */
static void wait_replicas(kf_run *a, kf_run *b, uint64_t parts_a, uint64_t parts_b,
                          uint64_t forwarded) {
    kd_pipeline_stats sa, sb = {0};

    for (int i = 0; i < TIMEOUT_MS / 20; i++) {
        kd_pipeline_stats_get(a->p, &sa);
        if (b)
            kd_pipeline_stats_get(b->p, &sb);
        if (sa.assigned_partitions == parts_a && sb.assigned_partitions == parts_b &&
            !sa.inflight && !sb.inflight && sa.forwarded + sb.forwarded >= forwarded)
            return;
        nanosleep(&(struct timespec){0, 20 * 1000 * 1000}, NULL);
    }
    fail_msg("replicas: %" PRIu64 "+%" PRIu64 " partitions, %" PRIu64 "+%" PRIu64
             " forwarded, %" PRIu64 "+%" PRIu64 " in flight",
             sa.assigned_partitions, sb.assigned_partitions, sa.forwarded, sb.forwarded,
             sa.inflight, sb.inflight);
}

/* Replica a alone, or sharing the partitions with b, 200 keys settled;
 * then a's store takes ms a batch write, and new keys (200..800) wait on
 * every partition, a batch of a's handed to that write. */
static void slow_write_under_way(env *e, kf_run *a, kf_run *b, unsigned ms) {
    kd_pipeline_stats sa;

    send_keys(e, "in", 0, 200, 1);
    start_replica(e, a, "a", true);
    wait_replicas(a, NULL, PARTS, 0, 200);
    if (b) {
        start_replica(e, b, "b", false);
        wait_replicas(a, b, PARTS / 2, PARTS / 2, 200);
    }
    kd_faulty_store_delay_writes(a->store, ms);
    send_keys(e, "in", 200, 800, 1);
    for (int i = 0; i < TIMEOUT_MS / 20; i++) { /* consumed: handed to the store */
        kd_pipeline_stats_get(a->p, &sa);
        if (sa.consumed > 200)
            return;
        nanosleep(&(struct timespec){0, 20 * 1000 * 1000}, NULL);
    }
    fail_msg("a consumed nothing new");
}

/* A store write slower than max.poll.interval.ms (issue 26, item 4).
 * Replicas a and b share the partitions; then a's store takes 8 s a batch
 * write, with more than a batch waiting on each of its partitions. a's loop
 * waits for the write a slice at a time, and meanwhile turns with its
 * partitions paused, polling: it stays in the group, healthy, not ready
 * ("store slow"), and produces its batch once the write is done, its
 * partitions still its own. Every key downstream once. (Before, the loop
 * waited for the write in one go: unhealthy, it left the group after 3 s,
 * b took a's partitions, read their history and forwarded what waited on
 * them; a's batch went out after that, its keys twice.) A reload that
 * grows pipeline.batch_max is offered meanwhile: taken once the write is
 * done, a's membership and health unaffected. */
static void test_store_slower_than_max_poll(void **state) {
    env *e = *state;
    kd_pipeline_stats sa;
    char reason[512], json[4096];
    kd_config *grown;
    bool slow_seen = false, unhealthy = false, write_bound = false;
    uint64_t abandoned;
    kf_record *recs;
    size_t n;
    kf_run a, b;

    slow_write_under_way(e, &a, &b, 8000);
    kd_pipeline_stats_get(a.p, &sa);
    abandoned = sa.abandoned;
    snprintf(json, sizeof(json), STALL_CONFIG, e->mock.bootstrap, e->dir, "a", 60, "");
    assert_non_null(grown = kd_config_parse(json, strlen(json), "grown.json", reason,
                                            sizeof(reason)));
    kd_pipeline_offer(a.p, grown, false);
    for (int i = 0; i < TIMEOUT_MS / 20 && !kd_faulty_store_delayed(a.store); i++) {
        if (!kd_pipeline_ready(a.p, reason, sizeof(reason)) &&
            strstr(reason, "store slow"))
            slow_seen = true;
        if (!kd_pipeline_healthy(a.p, 2000, 20000, reason, sizeof(reason)))
            unhealthy = true;
        if (!kd_pipeline_healthy(a.p, 2000, 1000, reason, sizeof(reason)) &&
            strstr(reason, "store write"))
            write_bound = true; /* a bound of its own: 1 s, not 20 s */
        nanosleep(&(struct timespec){0, 20 * 1000 * 1000}, NULL);
    }
    assert_true(kd_faulty_store_delayed(a.store) >= 1); /* a write took 8 s */
    kd_faulty_store_delay_writes(a.store, 0);
    wait_replicas(&a, &b, PARTS / 2, PARTS / 2, 800); /* a kept its partitions */
    recs = kf_read(&e->mock, "out", PARTS, 800, 2000, TIMEOUT_MS, &n);
    kd_pipeline_stats_get(a.p, &sa);
    kf_run_stop(&b);
    kf_run_stop(&a);
    kd_config_destroy(grown);
    assert_each_once(recs, n, 0, 800);
    assert_int_equal(sa.abandoned, abandoned); /* never lost its partitions */
    assert_false(unhealthy);
    assert_true(write_bound);
    assert_true(slow_seen);
    free(recs);
}

/* Store writes slower than the loop's slice (each append 300 ms, a job
 * one or two of them, against 200) but within the bound on pausing (a
 * quarter of max.poll.interval.ms: 750 ms here). Consumption is not paused
 * for them: a pause makes librdkafka drop the partitions' prefetched
 * messages and fetch them again, which for every such write fetched the
 * backlog over and over. a is never "store slow", and every key is
 * downstream once. (Before, each of these writes paused consumption.) */
static void test_store_write_within_its_bound_does_not_pause(void **state) {
    env *e = *state;
    char reason[512];
    bool slow_seen = false;
    kf_record *recs;
    size_t n;
    kf_run a;

    slow_write_under_way(e, &a, NULL, 300);
    for (int i = 0; i < TIMEOUT_MS / 20 && kd_faulty_store_delayed(a.store) < 4; i++) {
        if (!kd_pipeline_ready(a.p, reason, sizeof(reason)) &&
            strstr(reason, "store slow"))
            slow_seen = true;
        nanosleep(&(struct timespec){0, 20 * 1000 * 1000}, NULL);
    }
    assert_true(kd_faulty_store_delayed(a.store) >= 4);
    kd_faulty_store_delay_writes(a.store, 0);
    recs = kf_read(&e->mock, "out", PARTS, 800, 2000, TIMEOUT_MS, &n);
    kf_run_stop(&a);
    assert_each_once(recs, n, 0, 800);
    assert_false(slow_seen);
    free(recs);
}

/* A stop while a store write slower than max.poll.interval.ms is under way.
 * The stop waits for the write without polling: the group takes a's
 * partitions after 3 s, and b reads their history and forwards what waits
 * on them. When the write is done, rd_kafka_assignment_lost() says the
 * partitions are gone: a's batch is dropped, not produced, and every key
 * is downstream once. (Before, a produced it after b's copies: twice.) */
static void test_stop_during_a_slow_write(void **state) {
    env *e = *state;
    kd_pipeline_stats sa;
    kf_record *recs;
    size_t n;
    kf_run a, b;

    slow_write_under_way(e, &a, &b, 10000);
    sa = kf_run_stop(&a);
    wait_replicas(&b, NULL, PARTS, 0, 800 - sa.forwarded);
    recs = kf_read(&e->mock, "out", PARTS, 800, 2000, TIMEOUT_MS, &n);
    kf_run_stop(&b);
    assert_each_once(recs, n, 0, 800);
    free(recs);
}

/* The one-route config in the transactional mode, with a 2 s grace and
 * the producer's properties (a JSON object literal). Arguments: brokers,
 * dir. */
#define TXN_CONFIG_WITH(producer)                                                        \
    "{\"kafka\": {\"brokers\": \"%s\", \"group_id\": \"g\", \"producer\": " producer     \
    ", \"consumer\": {\"session.timeout.ms\": \"6000\", \"heartbeat.interval.ms\": "     \
    "\"500\"}},"                                                                         \
    " \"routes\": [{\"from\": \"in\", \"to\": \"out\", \"on_missing_key\": "             \
    "\"forward\"}],"                                                                     \
    " \"store\": {\"path\": \"%s/store\"}, \"pipeline\": {\"shutdown_grace\": \"2s\", "  \
    "\"delivery\": \"transactional\", \"transactional_id\": \"kd-test\"}}"
#define TXN_CONFIG TXN_CONFIG_WITH("{}")

/* Stops r within limit_s seconds: past them SIGALRM ends the case's
 * process, which the case runner reports as failed. */
static void stop_within(kf_run *r, unsigned limit_s) {
    uint64_t t0 = now_ms(), took;

    alarm(limit_s);
    kf_run_stop(r);
    alarm(0);
    took = now_ms() - t0;
    print_message("stopped in %" PRIu64 " ms\n", took);
    assert_true(took < limit_s * 1000);
}

/* A transaction's commit that keeps failing with a retriable error (the
 * coordinator loading, for minutes) is tried no longer than the stop's
 * deadline: a SIGTERM then ends within pipeline.shutdown_grace. Before,
 * the commit was tried again, 30 s a try, for as long as it failed. The
 * message is not lost: its claim was kept, and the next run forwards it. */
static void test_txn_commit_tries_end_at_the_stop(void **state) {
    env *e = *state;
    rd_kafka_t *rk = kf_producer(&e->mock);
    _Atomic uint64_t *begun;
    kd_pipeline_stats st;
    kf_run r;

    kf_run_start(&r, &e->mock, TXN_CONFIG, e->mock.bootstrap, e->dir);
    begun = kd_metrics_txn_begun(kd_pipeline_metrics(r.p));
    kf_mock_cmd(&e->mock, "endtxn-errors 3000 14"); /* COORDINATOR_LOAD_IN_PROGRESS */
    kf_send(rk, "in", 0, "key-0", "value-0");
    for (int i = 0; i < TIMEOUT_MS / 20 && !atomic_load(begun); i++)
        kf_sleep_ms(20);
    assert_true(atomic_load(begun) >= 1);
    stop_within(&r, 2 + 8); /* the grace, and the consumer's close */

    kf_run_start(&r, &e->mock, ROUTE_CONFIG, e->mock.bootstrap, "{}", 5, e->dir, "5s");
    st = kf_run_wait(&r, 1, TIMEOUT_MS);
    kf_run_stop(&r);
    kf_producer_close(rk);
    assert_int_equal(st.consumed, 1);
}

/* Sends key-1 to key-5 to in/0 with rk, closes it, and waits until the
 * transactional producer was replaced (`replaced` says 1): the faults the
 * caller armed fail the transaction of those keys for good. */
static void send_until_replaced(rd_kafka_t *rk, _Atomic uint64_t *replaced) {
    for (int i = 1; i <= 5; i++) {
        char key[16];

        snprintf(key, sizeof(key), "key-%d", i);
        kf_send(rk, "in", 0, key, "value");
    }
    kf_producer_close(rk);
    for (int i = 0; i < TIMEOUT_MS / 20 && !atomic_load(replaced); i++)
        kf_sleep_ms(20);
    assert_int_equal(atomic_load(replaced), 1);
}

/* A replacing producer whose initialisation the broker answers "try
 * again" for 45 s (CONCURRENT_TRANSACTIONS: the broker still ends the old
 * producer's transaction; seen for more than 40 s on Apache Kafka after a
 * broker was paused) is initialised in later turns while the loop goes on,
 * and the messages waiting meanwhile are forwarded once it is. Before, the
 * replacement gave up after 30 s and stopped the pipeline. The producer is
 * replaced after an abort the broker refuses as in an invalid state (fatal
 * for librdkafka), the abort of a transaction whose delivery failed. */
static void test_txn_producer_initialised_in_later_turns(void **state) {
    env *e = *state;
    rd_kafka_t *rk = kf_producer(&e->mock);
    _Atomic uint64_t *replaced;
    kd_pipeline_stats st;
    kf_record *recs;
    size_t n;
    kf_run r;

    split_brokers(e);
    kf_run_start(&r, &e->mock, TXN_CONFIG, e->mock.bootstrap, e->dir);
    replaced = kd_metrics_txn_replaced(kd_pipeline_metrics(r.p));
    kf_send(rk, "in", 0, "key-0", "value-0");
    st = kf_run_wait(&r, 1, TIMEOUT_MS);
    assert_int_equal(st.forwarded, 1);
    kf_mock_cmd(&e->mock, "broker-produce-errors 2 1 10"); /* MSG_SIZE_TOO_LARGE */
    kf_mock_cmd(&e->mock, "endtxn-errors 1 48");           /* INVALID_TXN_STATE */
    kf_mock_cmd(&e->mock, "initpid-errors 100 51");        /* CONCURRENT_TRANSACTIONS */
    send_until_replaced(rk, replaced);
    st = kf_run_wait(&r, 6, 2 * TIMEOUT_MS);
    kf_run_stop(&r); /* rc 0: the pipeline did not stop on its own */
    assert_int_equal(st.forwarded, 6);
    recs = kf_read(&e->mock, "out", PARTS, 6, 2000, TIMEOUT_MS, &n);
    for (int i = 1; i <= 5; i++) {
        char key[16];

        snprintf(key, sizeof(key), "key-%d", i);
        assert_true(kf_count_key(recs, n, key) >=
                    1); /* the mock shows aborted ones too */
    }
    free(recs);
}

/* TXN_CONFIG with message.timeout.ms 1 s: a delivery of unknown outcome
 * is read downstream 10 s after it failed at the latest (its barrier). */
#define TXN_FAST_CONFIG TXN_CONFIG_WITH("{\"message.timeout.ms\": \"1000\"}")

/* A commit whose outcome is unknown (it failed for good: INVALID_TXN_STATE)
 * leaves its deliveries possibly persisted, to be read downstream; the
 * replacing producer's initialisation, which ends that transaction, waits
 * for the broker (CONCURRENT_TRANSACTIONS, 100 times: tens of seconds).
 * The reads wait for it: before, a read_committed read missed the records
 * of a transaction the broker had yet to commit, and the message went
 * again: its key twice (found by reading, 2026-12-06). Their barrier (10 s
 * here) passes long before the initialisation ends; no read is made while
 * kdedup_txn_producer_initialising says 1. */
static void test_txn_unknown_commit_read_once_the_producer_is_ready(void **state) {
    env *e = *state;
    rd_kafka_t *rk = kf_producer(&e->mock);
    _Atomic uint64_t *replaced, *initialising;
    kd_pipeline_stats st;
    uint64_t reads = 0;
    bool waited = false;
    kf_run r;

    split_brokers(e);
    kf_run_start(&r, &e->mock, TXN_FAST_CONFIG, e->mock.bootstrap, e->dir);
    replaced = kd_metrics_txn_replaced(kd_pipeline_metrics(r.p));
    initialising = &kd_metrics_flow(kd_pipeline_metrics(r.p))->txn_initialising;
    kf_send(rk, "in", 0, "key-0", "value-0");
    st = kf_run_wait(&r, 1, TIMEOUT_MS);
    assert_int_equal(st.forwarded, 1);
    kf_mock_cmd(&e->mock, "endtxn-errors 1 48");    /* INVALID_TXN_STATE: fatal */
    kf_mock_cmd(&e->mock, "initpid-errors 100 51"); /* CONCURRENT_TRANSACTIONS */
    send_until_replaced(rk, replaced);
    /* until the initialisation ended and the reads were made */
    for (int i = 0;
         i < 2 * TIMEOUT_MS / 20 && !(waited && reads && !atomic_load(initialising));
         i++) {
        bool before = atomic_load(initialising) != 0;

        kd_pipeline_stats_get(r.p, &st);
        reads = st.uncertain_found + st.uncertain_absent + st.uncertain_unknown;
        /* a read seen while the initialisation is still under way, both
         * before and after the stats were taken */
        if (reads && before && atomic_load(initialising))
            fail_msg("%" PRIu64 " deliveries read downstream while the new producer "
                     "was still initialising",
                     reads);
        waited |= before;
        kf_sleep_ms(20);
    }
    kf_run_stop(&r);
    assert_true(waited); /* the initialisation did wait for the broker */
    assert_true(reads >= 1);
}

/* The handover off (only recovery tells what a dead run delivered), claims
 * in flight for 10 minutes, and a member that leaves its group after 3 s
 * without a poll. Arguments: brokers, dir. */
#define EXPIRED_STALL_CONFIG                                                             \
    "{\"kafka\": {\"brokers\": \"%s\", \"group_id\": \"g\", \"consumer\": "              \
    "{\"session.timeout.ms\": \"3000\", \"max.poll.interval.ms\": \"3000\", "            \
    "\"heartbeat.interval.ms\": \"500\"}},"                                              \
    " \"routes\": [{\"from\": \"in\", \"to\": \"out\", \"on_missing_key\": "             \
    "\"forward\"}],"                                                                     \
    " \"dedup\": " NO_HANDOVER ", \"store\": {\"path\": \"%s/store\"}}"

/* A claim taken over an expired one, in a batch whose ownership ends while
 * its write is slow (hunt). A dead run (0xbeef) claimed key-0 11 minutes
 * ago (past dedup.inflight_timeout) and delivered it to out/0, then died
 * before the receipt. The next run consumes key-0 again: its claim replaces
 * the expired one, in a store write that takes 10 s, and the run is stopped
 * meanwhile: the group takes its partitions (max.poll.interval.ms 3 s), and
 * the batch is dropped. drop_ended leaves the new claim in the store (it
 * replaced an expired one "whose delivery may be downstream"), but that
 * claim now names this run and this time: the dead run's identity, which
 * on_claimed would have looked up downstream, is gone. A third run, given
 * key-0 again, resolves the claim against the second run's deliveries (none)
 * and forwards key-0: downstream twice. Expected: once (the dead run's). */
static void test_expired_claim_in_a_dropped_batch(void **state) {
    env *e = *state;
    rd_kafka_t *rk = kf_producer(&e->mock);
    kd_pipeline_stats st;
    kf_record *recs;
    kd_store *store;
    kd_dedup *d;
    size_t n;
    kf_run r;

    store = store_with_dead_run(e, 0xbeef);
    d = kd_dedup_new(store, "kdedup:in");
    claim_at(d, 0xbeef, 0, 1, (uint64_t)time(NULL) * 1000 - 11 * 60 * 1000);
    kd_dedup_destroy(d);
    kd_store_destroy(store);
    /* what the dead run delivered: in/0/0 -> out/0 */
    assert_int_equal(
        rd_kafka_producev(rk, RD_KAFKA_V_TOPIC("out"), RD_KAFKA_V_PARTITION(0),
                          RD_KAFKA_V_VALUE("value-0", 7),
                          RD_KAFKA_V_HEADER("Idempotency-Key", "key-0", -1),
                          RD_KAFKA_V_HEADER("kdedup-source", "in/0/0", -1),
                          RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END),
        RD_KAFKA_RESP_ERR_NO_ERROR);
    rd_kafka_flush(rk, 10000);

    /* The second run: assigned, then its store writes take 10 s. */
    kf_run_start_faulty(&r, &e->mock, EXPIRED_STALL_CONFIG, e->mock.bootstrap, e->dir);
    for (int i = 0; i < TIMEOUT_MS / 20; i++) {
        kd_pipeline_stats_get(r.p, &st);
        if (st.assigned_partitions == PARTS)
            break;
        nanosleep(&(struct timespec){0, 20 * 1000 * 1000}, NULL);
    }
    assert_int_equal(st.assigned_partitions, PARTS);
    kd_faulty_store_delay_writes(r.store, 10000);
    kf_send(rk, "in", 0, "key-0", "value-0");
    kf_producer_close(rk);
    for (int i = 0; i < TIMEOUT_MS / 20; i++) { /* consumed: handed to the store */
        kd_pipeline_stats_get(r.p, &st);
        if (st.consumed >= 1)
            break;
        nanosleep(&(struct timespec){0, 20 * 1000 * 1000}, NULL);
    }
    assert_int_equal(st.consumed, 1);
    st = kf_run_stop(&r);              /* waits out the write, without polling */
    assert_int_equal(st.forwarded, 0); /* the batch was dropped */

    /* The third run, over the same store, consumes key-0 again. */
    kf_run_start(&r, &e->mock, EXPIRED_STALL_CONFIG, e->mock.bootstrap, e->dir);
    st = kf_run_wait(&r, 1, TIMEOUT_MS);
    kf_run_stop(&r);
    assert_int_equal(st.consumed, 1);
    recs = kf_read(&e->mock, "out", PARTS, 1, 2000, TIMEOUT_MS, &n);
    assert_int_equal(kf_count_key(recs, n, "key-0"), 1);
    free(recs);
}
/* A revoke while a store write slower than max.poll.interval.ms is under
 * way: b joins while a holds every partition. The revoke waits for the
 * write half of max.poll.interval.ms at most (its time may count against
 * it), then commits and gives up the partitions, a staying in the group;
 * the batch's messages of those partitions are dropped once the write is
 * done, the others produced. Every key downstream once. (Before, the
 * revoke waited for the write: a left the group meanwhile, b took every
 * partition, read their history and forwarded what waited on them, and a
 * then produced its batch: its keys twice.) */
static void test_revoke_during_a_slow_write(void **state) {
    env *e = *state;
    kf_record *recs;
    size_t n;
    kf_run a, b;

    slow_write_under_way(e, &a, NULL, 10000);
    start_replica(e, &b, "b", false);
    for (int i = 0; i < TIMEOUT_MS / 20 && !kd_faulty_store_delayed(a.store); i++)
        nanosleep(&(struct timespec){0, 20 * 1000 * 1000}, NULL);
    kd_faulty_store_delay_writes(a.store, 0);
    wait_replicas(&a, &b, PARTS / 2, PARTS / 2, 800);
    recs = kf_read(&e->mock, "out", PARTS, 800, 2000, TIMEOUT_MS, &n);
    kf_run_stop(&b);
    kf_run_stop(&a);
    assert_each_once(recs, n, 0, 800);
    free(recs);
}

/* Starts replica `name` over STALL_CONFIG in the transactional mode, with a
 * transactional.id of its own. */
static void start_txn_replica(env *e, kf_run *r, const char *name, bool faulty) {
    char pipeline[200];

    snprintf(pipeline, sizeof(pipeline),
             ", \"delivery\": \"transactional\", \"transactional_id\": \"kd-%s\"", name);
    start_replica_with(e, r, name, faulty, pipeline);
}

/* test_revoke_during_a_slow_write in the transactional mode (hunt3: the
 * loop polls only once a slow write outlasts a quarter of
 * max.poll.interval.ms, and the revoke callback commits the open
 * transaction while the batch is still being written). a alone, 200 keys
 * settled; its store writes then take 10 s and 600 keys more come; b joins.
 * a's revoke commits what it forwarded with the offsets it settles, gives up
 * two partitions, and drops the batch's messages of those once written; b
 * takes them from the committed offsets. Nothing is aborted (the mock
 * cluster shows aborted records too), and every key is downstream once. */
static void test_txn_revoke_during_a_slow_write(void **state) {
    env *e = *state;
    kd_pipeline_stats sa;
    uint64_t aborted;
    kf_record *recs;
    size_t n;
    kf_run a, b;

    send_keys(e, "in", 0, 200, 1);
    start_txn_replica(e, &a, "a", true);
    wait_replicas(&a, NULL, PARTS, 0, 200);
    kd_faulty_store_delay_writes(a.store, 10000);
    send_keys(e, "in", 200, 800, 1);
    for (int i = 0; i < TIMEOUT_MS / 20; i++) { /* consumed: handed to the store */
        kd_pipeline_stats_get(a.p, &sa);
        if (sa.consumed > 200)
            break;
        kf_sleep_ms(20);
    }
    assert_true(sa.consumed > 200);
    start_txn_replica(e, &b, "b", false);
    for (int i = 0; i < TIMEOUT_MS / 20 && !kd_faulty_store_delayed(a.store); i++)
        kf_sleep_ms(20);
    kd_faulty_store_delay_writes(a.store, 0);
    wait_replicas(&a, &b, PARTS / 2, PARTS / 2, 800);
    recs = kf_read(&e->mock, "out", PARTS, 800, 2000, TIMEOUT_MS, &n);
    aborted = atomic_load(kd_metrics_txn_aborted(kd_pipeline_metrics(a.p))) +
              atomic_load(kd_metrics_txn_aborted(kd_pipeline_metrics(b.p)));
    kf_run_stop(&b);
    kf_run_stop(&a);
    assert_int_equal(aborted, 0);
    assert_each_once(recs, n, 0, 800);
    free(recs);
}

/* STALL_CONFIG with the eager protocol (range): a rebalance revokes every
 * partition and assigns some back. Arguments: brokers, dir, replica. */
#define EAGER_STALL_CONFIG                                                               \
    "{\"kafka\": {\"brokers\": \"%s\", \"group_id\": \"g\", \"producer\": {},"           \
    " \"consumer\": {\"session.timeout.ms\": \"3000\", \"max.poll.interval.ms\": "       \
    "\"3000\", \"heartbeat.interval.ms\": \"500\", \"auto.commit.interval.ms\": "        \
    "\"200\", \"max.partition.fetch.bytes\": \"1024\","                                  \
    " \"partition.assignment.strategy\": \"range\"}},"                                   \
    " \"routes\": [{\"from\": \"in\", \"to\": \"out\", \"on_missing_key\": "             \
    "\"forward\"}],"                                                                     \
    " \"store\": {\"path\": \"%s/%s/store\"}, \"pipeline\": {\"batch_max\": 50}}"

/* An eager revoke while a store write is under way that outlasts the
 * revoke's wait for it (hunt3): a holds every partition, its store writes
 * take 8 s, and b joins. a's revoke of every partition waits 1.5 s (half of
 * max.poll.interval.ms), commits and gives them up; the group gives two
 * back to a, which reads their history while the batch's claims are still
 * being written, and two to b. The batch, written after, holds messages of
 * the ended ownership only: dropped, its claims released, and a consumes
 * its two partitions again from the committed offsets. Every key
 * downstream once. */
static void test_eager_revoke_outlasted_by_a_slow_write(void **state) {
    env *e = *state;
    kd_pipeline_stats sa;
    kf_record *recs;
    size_t n;
    kf_run a, b;
    char dir[300];

    send_keys(e, "in", 0, 200, 1);
    snprintf(dir, sizeof(dir), "%s/a", e->dir);
    assert_int_equal(mkdir(dir, 0700), 0);
    kf_run_start_faulty(&a, &e->mock, EAGER_STALL_CONFIG, e->mock.bootstrap, e->dir, "a");
    wait_replicas(&a, NULL, PARTS, 0, 200);
    kd_faulty_store_delay_writes(a.store, 8000);
    send_keys(e, "in", 200, 800, 1);
    for (int i = 0; i < TIMEOUT_MS / 20; i++) { /* consumed: handed to the store */
        kd_pipeline_stats_get(a.p, &sa);
        if (sa.consumed > 200)
            break;
        kf_sleep_ms(20);
    }
    assert_true(sa.consumed > 200);
    snprintf(dir, sizeof(dir), "%s/b", e->dir);
    assert_int_equal(mkdir(dir, 0700), 0);
    kf_run_start(&b, &e->mock, EAGER_STALL_CONFIG, e->mock.bootstrap, e->dir, "b");
    for (int i = 0; i < TIMEOUT_MS / 20 && !kd_faulty_store_delayed(a.store); i++)
        kf_sleep_ms(20);
    kd_faulty_store_delay_writes(a.store, 0);
    wait_replicas(&a, &b, PARTS / 2, PARTS / 2, 800);
    recs = kf_read(&e->mock, "out", PARTS, 800, 2000, TIMEOUT_MS, &n);
    kf_run_stop(&b);
    kf_run_stop(&a);
    assert_each_once(recs, n, 0, 800);
    free(recs);
}

/* An assignment lost while a store write is under way (issue 26, item 4:
 * the rebalance callback produced the batch being claimed for partitions
 * that were lost). a alone holds every partition, a batch's write taking
 * 10 s, when the group forgets it (a Heartbeat answered UNKNOWN_MEMBER_ID);
 * b joins at once. a's loop, polling through the write, is told its
 * assignment is lost: its ownerships end there, and the batch is dropped
 * once written, not produced. b takes partitions, reads their history and
 * forwards what waits on them; a joins again. Every key downstream once.
 * (Before, a's lost revoke waited for the write and then produced the
 * batch, after b's copies: its keys twice.) */
static void test_assignment_lost_during_a_slow_write(void **state) {
    env *e = *state;
    kf_record *recs;
    size_t n;
    kf_run a, b;

    slow_write_under_way(e, &a, NULL, 10000);
    kf_mock_cmd(&e->mock, "heartbeat-errors 1 %d", RD_KAFKA_RESP_ERR_UNKNOWN_MEMBER_ID);
    start_replica(e, &b, "b", false);
    for (int i = 0; i < TIMEOUT_MS / 20 && !kd_faulty_store_delayed(a.store); i++)
        nanosleep(&(struct timespec){0, 20 * 1000 * 1000}, NULL);
    kd_faulty_store_delay_writes(a.store, 0);
    wait_replicas(&a, &b, PARTS / 2, PARTS / 2, 800);
    recs = kf_read(&e->mock, "out", PARTS, 800, 2000, TIMEOUT_MS, &n);
    kf_run_stop(&b);
    kf_run_stop(&a);
    assert_each_once(recs, n, 0, 800);
    free(recs);
}

/* ROUTE_CONFIG with poll batches of 50 and the eager protocol (range): a
 * rebalance revokes every partition, so any batch being claimed then holds
 * messages of partitions revoked. Arguments: brokers, dir. */
#define EAGER_CONFIG                                                                     \
    "{\"kafka\": {\"brokers\": \"%s\", \"group_id\": \"g\", \"producer\": {},"           \
    " \"consumer\": {\"session.timeout.ms\": \"6000\", \"heartbeat.interval.ms\": "      \
    "\"500\", \"auto.commit.interval.ms\": \"200\","                                     \
    " \"partition.assignment.strategy\": \"range\"}},"                                   \
    " \"routes\": [{\"from\": \"in\", \"to\": \"out\", \"on_missing_key\": "             \
    "\"forward\"}],"                                                                     \
    " \"store\": {\"path\": \"%s/store\"}, \"pipeline\": {\"batch_max\": 50}}"

static bool revoke_begun(const kd_pipeline_stats *st) {
    return st->revokes >= 1;
}

/* Starts a replica over EAGER_CONFIG in e->dir/name (a faulty store or not). */
static void start_eager(env *e, kf_run *r, const char *name, bool faulty) {
    char dir[300];

    snprintf(dir, sizeof(dir), "%s/%s", e->dir, name);
    assert_int_equal(mkdir(dir, 0700), 0);
    if (faulty)
        kf_run_start_faulty(r, &e->mock, EAGER_CONFIG, e->mock.bootstrap, dir);
    else
        kf_run_start(r, &e->mock, EAGER_CONFIG, e->mock.bootstrap, dir);
}

/* A rebalance while the store thread writes a batch's claims, driven step
 * by step. Replica a holds every partition, 200 keys settled; then its store
 * holds every write until the test lets it go, and 600 keys more come: a
 * batch of them is handed to the store thread and held there. Replica b
 * joins; a's revoke (of every partition: the eager protocol) begins while
 * the batch is held, and only then does the test let the write end. The
 * batch came before the revoke: the revoke waits for its write and produces
 * it (kd_pl_ahead_finish), so none of it is left to the next owner (a's
 * `abandoned` does not move), and every key is downstream once (what a
 * forwarded, b's and a's new ownerships learn from downstream). Without
 * the wait, the revoke ends first and the batch, written after, is dropped
 * (drop_ended): left to the next owner, 1 to 50 messages abandoned. (Before,
 * the test waited for luck: the revoke came while a batch holding messages
 * of the partitions b took was being claimed in about 1 run of 3.) */
static void test_rebalance_while_claims_are_written(void **state) {
    env *e = *state;
    kd_pipeline_stats sa;
    uint64_t abandoned;
    kf_record *recs;
    size_t n;
    kf_run a, b;

    send_keys(e, "in", 0, 200, 1);
    start_eager(e, &a, "a", true);
    wait_replicas(&a, NULL, PARTS, 0, 200);
    kd_pipeline_stats_get(a.p, &sa);
    abandoned = sa.abandoned;
    kd_faulty_store_hold_writes(a.store, true);
    send_keys(e, "in", 200, 800, 1);
    for (int i = 0; i < TIMEOUT_MS / 20 && !kd_faulty_store_held(a.store); i++)
        nanosleep(&(struct timespec){0, 20 * 1000 * 1000}, NULL);
    assert_true(kd_faulty_store_held(a.store) >= 1); /* a batch's claims, held */
    kd_pipeline_stats_get(a.p, &sa);
    assert_int_equal(sa.revokes, 0);
    start_eager(e, &b, "b", false);
    assert_true(wait_stats(&a, revoke_begun).revokes >= 1);
    kd_faulty_store_hold_writes(a.store, false);
    wait_replicas(&a, &b, PARTS / 2, PARTS / 2, 800);
    kd_pipeline_stats_get(a.p, &sa);
    recs = kf_read(&e->mock, "out", PARTS, 800, 2000, TIMEOUT_MS, &n);
    kf_run_stop(&b);
    kf_run_stop(&a);
    assert_int_equal(sa.abandoned, abandoned);
    assert_each_once(recs, n, 0, 800);
    free(recs);
}

/* Five keys through a run in e->dir, on in/0; then, with broker 2
 * (downstream) answering after rtt_ms and failing its next `errors`
 * produce requests, key-X (in/0 offset 5), consumed. */
static void run_until_x(env *e, kf_run *r, const char *message_timeout, int rtt_ms,
                        int errors, const char *grace) {
    rd_kafka_t *rk;

    split_brokers(e);
    kf_mock_cmd(&e->mock, "coordinator g 1"); /* the group is not slowed below */
    kf_run_start(r, &e->mock, REJOIN_CONFIG, e->mock.bootstrap, message_timeout, e->dir,
                 grace);
    send_five(e, r);
    if (errors)
        kf_mock_cmd(&e->mock, "broker-produce-errors 2 %d %d", errors,
                    RD_KAFKA_RESP_ERR_KAFKA_STORAGE_ERROR);
    kf_mock_cmd(&e->mock, "rtt 2 %d", rtt_ms);
    rk = kf_producer(&e->mock);
    kf_send(rk, "in", 0, "key-X", "key-X");
    kf_producer_close(rk);
    wait_stats(r, consumed_6); /* its delivery still out */
}

/* Every key of run_until_x downstream exactly once. */
static void assert_x_once(env *e) {
    kf_record *recs;
    char key[32];
    size_t n;

    recs = kf_read(&e->mock, "out", PARTS, 6, 2000, TIMEOUT_MS, &n);
    assert_int_equal(kf_count_key(recs, n, "key-X"), 1);
    for (int i = 0; i < 5; i++) {
        snprintf(key, sizeof(key), "key-%d", i);
        assert_int_equal(kf_count_key(recs, n, key), 1);
    }
    free(recs);
}

/* Message X is in flight when its partition is revoked (the drain runs out
 * of time) and assigned back to the same process, which consumes X again
 * while the old delivery is still out; that delivery then fails. The copy
 * must not count as a duplicate of a delivery that nobody will make: the
 * commit never passes X, and X reaches downstream exactly once. */
static void test_partition_back_to_same_process(void **state) {
    env *e = *state;
    kd_pipeline_stats st;
    kf_run r;

    /* X's delivery (two attempts) fails, each answered after 3 s */
    run_until_x(e, &r, "60000", 3000, 2, "200ms");
    kd_pipeline_rejoin(r.p); /* revoke all, assign all again: X consumed again */
    st = wait_stats(&r, consumed_again);
    assert_true(st.consumed >= 7);
    st = wait_stats(&r, failed_once);
    assert_true(st.produce_errors >= 1);
    st = kf_run_stop(&r); /* before any new delivery of X can land */
    assert_true(st.parked >= 1);
    assert_true(st.abandoned >= 1); /* the old ownership's failure: not retried there */
    assert_true(kf_committed(&e->mock, "g", "in", 0) <= 5);

    kf_mock_cmd(&e->mock, "rtt 2 0");
    start(&r, e, "{}", -1, "5s");
    for (int i = 0; i < TIMEOUT_MS / 100; i++) {
        if (kf_committed(&e->mock, "g", "in", 0) >= 6)
            break;
        nanosleep(&(struct timespec){0, 100 * 1000 * 1000}, NULL);
    }
    kf_run_stop(&r);
    assert_int_equal(kf_committed(&e->mock, "g", "in", 0), 6);
    assert_x_once(e);
}

/* A stop waits for deliveries in flight for one shutdown_grace in all: the
 * consumer close's revoke does not wait a second one. X's delivery is
 * answered after 10 s; the grace is 2 s. */
static void test_stop_takes_one_grace_period(void **state) {
    env *e = *state;
    uint64_t t0;
    kf_run r;

    run_until_x(e, &r, "60000", 10000, 0, "2s");
    t0 = now_ms();
    kd_pipeline_stop(r.p);
    pthread_join(r.tid, NULL);
    uint64_t took = now_ms() - t0; /* the run itself, before its teardown */
    kd_pipeline_destroy(r.p);
    kd_store_destroy(r.store);
    kd_config_destroy(r.cfg);
    assert_int_equal(r.rc, 0);
    if (took >= 3500)
        fail_msg("the stop took %llums with a 2s grace", (unsigned long long)took);
    assert_true(took >= 2000); /* it did wait for X */
}

/* X's delivery times out (possibly persisted: the mock has it) after its
 * partition was revoked and assigned back. Its claim is kept, with where
 * the delivery went; the copy consumed again waits for it, then reads
 * there and finds it: X downstream once, never sent again. */
static void test_uncertain_delivery_of_an_ended_ownership(void **state) {
    env *e = *state;
    kd_pipeline_stats st;
    kf_run r;

    run_until_x(e, &r, "3000", 5000, 0, "200ms");
    kd_pipeline_rejoin(r.p);
    st = wait_stats(&r, abandoned); /* X timed out after its ownership ended */
    assert_true(st.abandoned >= 1);
    assert_true(st.possibly_persisted >= 1);
    kf_mock_cmd(&e->mock, "rtt 2 0");
    st = wait_stats(&r, forwarded_6);
    kf_run_stop(&r);
    assert_int_equal(st.orphans_found, 1); /* the copy found X downstream */
    assert_int_equal(st.forwarded, 5);
    assert_int_equal(kf_committed(&e->mock, "g", "in", 0), 6);
    assert_x_once(e);
}

/* n records of no key on out/0: a downstream partition to read through. */
static void pad_out(env *e, size_t n) {
    rd_kafka_t *rk = kf_producer(&e->mock);

    for (size_t i = 0; i < n; i++) {
        while (rd_kafka_producev(rk, RD_KAFKA_V_TOPIC("out"), RD_KAFKA_V_PARTITION(0),
                                 RD_KAFKA_V_VALUE("pad", 3),
                                 RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                                 RD_KAFKA_V_END) == RD_KAFKA_RESP_ERR__QUEUE_FULL)
            rd_kafka_poll(rk, 10);
    }
    kf_producer_close(rk);
}

#define LEFT_COPIES 100
#define LEFT_PAD 5000

static bool left_abandoned(const kd_pipeline_stats *st) {
    return st->abandoned >= LEFT_COPIES;
}

static bool left_timed_out(const kd_pipeline_stats *st) {
    return st->possibly_persisted >= LEFT_COPIES;
}

static bool left_found(const kd_pipeline_stats *st) {
    return st->orphans_found >= LEFT_COPIES;
}

/* LEFT_COPIES deliveries time out possibly persisted (the mock has them)
 * and wait for a later delivery to read downstream past; their partition
 * is revoked and assigned back meanwhile: a note of each claim is left to
 * the next owner, and each copy consumed again waits for a read of out/0,
 * which holds LEFT_PAD unrelated records past where they landed. The
 * copies are read for together, a read of the partition a turn: the
 * records read stay within a few passes over it. (Each copy read for alone,
 * with its own end offsets asked of the broker, read the partition once
 * per copy, and turned the loop once per handful: the CI's broker_faults
 * run left 1,160 such copies in the retries, which drained by a few a turn
 * while consumption waited for them, past the test's 120 s.) */
static void test_left_copies_read_together(void **state) {
    env *e = *state;
    _Atomic uint64_t *records;
    kd_pipeline_stats st;
    rd_kafka_t *rk;
    char key[32];
    kf_run r;

    run_until_x(e, &r, "3000", 0, 0, "200ms");
    records = kd_metrics_recovery_records(kd_pipeline_metrics(r.p));
    pad_out(e, LEFT_PAD); /* unrelated records on out/0 */
    kf_mock_cmd(&e->mock, "rtt 2 5000");
    rk = kf_producer(&e->mock);
    for (int i = 0; i < LEFT_COPIES; i++) {
        snprintf(key, sizeof(key), "left-%d", i);
        kf_send(rk, "in", 0, key, key);
    }
    kf_producer_close(rk);
    wait_stats(&r, left_timed_out); /* their reads wait for a later delivery */
    kd_pipeline_rejoin(r.p);
    st = wait_stats(&r, left_abandoned); /* noted, left to the next owner */
    assert_true(st.possibly_persisted >= LEFT_COPIES);
    kf_mock_cmd(&e->mock, "rtt 2 0");
    rk = kf_producer(&e->mock); /* its delivery passes the copies' barrier */
    kf_send(rk, "in", 0, "fresh", "fresh");
    kf_producer_close(rk);
    uint64_t before = atomic_load(records);
    st = wait_stats(&r, left_found);
    uint64_t read = atomic_load(records) - before;
    kf_run_stop(&r);
    print_message("%llu records read for %d copies\n", (unsigned long long)read,
                  LEFT_COPIES);
    assert_int_equal(st.orphans_found, LEFT_COPIES);
    assert_true(read <= 10 * (LEFT_PAD + LEFT_COPIES + 10)); /* alone: 100 passes */
}

static bool assigned_again(const kd_pipeline_stats *st) {
    return st->revokes >= 1 && st->assigned_partitions == PARTS;
}

static bool conflict_judged(const kd_pipeline_stats *st) {
    return st->key_conflicts >= 1;
}

/* X's delivery is slow (the downstream broker answers after 20 s) when its
 * partition is revoked and assigned back. Then Y comes: key-X with another
 * payload. It meets X's claim, in flight and held by a message of the
 * ended ownership, whose outcome is not known yet (X may still fail, and
 * then Y is the key's only delivery): the claim is not judged for a
 * conflict. Y waits beside the copy of X consumed again, and no conflict is
 * counted while X is out. Once X's late acknowledgement completes the
 * claim, Y is judged against it: one conflict (skipped), key-X downstream
 * once. (Judged against the claim in flight, Y would be skipped at once.) */
static void test_conflict_waits_for_an_ended_ownership(void **state) {
    env *e = *state;
    kd_flow_gauges *g;
    kd_pipeline_stats st;
    rd_kafka_t *rk;
    kf_run r;

    run_until_x(e, &r, "60000", 20000, 0, "200ms");
    g = kd_metrics_flow(kd_pipeline_metrics(r.p));
    kd_pipeline_rejoin(r.p);
    assert_int_equal(wait_stats(&r, assigned_again).assigned_partitions, PARTS);
    rk = kf_producer(&e->mock);
    kf_send(rk, "in", 0, "key-X", "another payload");
    kf_producer_close(rk);
    for (int i = 0; i < TIMEOUT_MS / 20; i++) { /* Y acted on: waits, or judged */
        kd_pipeline_stats_get(r.p, &st);
        if (st.key_conflicts || atomic_load(&g->retrying) >= 2)
            break;
        nanosleep(&(struct timespec){0, 20 * 1000 * 1000}, NULL);
    }
    assert_int_equal(st.forwarded, 5); /* X is still out */
    assert_int_equal(st.key_conflicts, 0);
    assert_int_equal(atomic_load(&g->retrying), 2); /* X's copy and Y wait */
    kf_mock_cmd(&e->mock, "rtt 2 0");
    st = wait_stats(&r, conflict_judged);
    kf_run_stop(&r);
    assert_int_equal(st.key_conflicts, 1);
    assert_x_once(e);
}

#define STEP_CONFIG                                                                      \
    "{\"kafka\": {\"brokers\": \"%s\", \"group_id\": \"g\","                             \
    " \"producer\": {\"message.timeout.ms\": \"3000\", \"retries\": \"1\","              \
    " \"retry.backoff.ms\": \"10\"},"                                                    \
    " \"consumer\": {\"session.timeout.ms\": \"6000\", \"heartbeat.interval.ms\": "      \
    "\"500\"}},"                                                                         \
    " \"routes\": [{\"from\": \"in\", \"to\": \"out\", \"on_missing_key\": \"drop\", "   \
    "\"max_retries\": -1, \"retry_backoff\": \"100ms\"}], \"dedup\": {\"handover\": "    \
    "false, \"inflight_timeout\": \"3500ms\", \"scan_step\": \"1ms\"},"                  \
    " \"store\": {\"path\": \"%s/store\"}, \"pipeline\": {\"shutdown_grace\": "          \
    "\"200ms\"}}"

static bool x_settled(const kd_pipeline_stats *st) {
    return st->forwarded + st->orphans_found + st->duplicates_completed +
               st->duplicates_in_flight >=
           1;
}

/* A copy of X meets this run's own claim of X, past inflight_timeout,
 * whose delivery an ended ownership left possibly persisted (in the log,
 * 300,000 records into the partition), with 1 ms of scan a turn; the run
 * stops while the copy reads, and a second run takes over. The claim is
 * this run's, so it does not expire for it: it stays as X made it while
 * the copy reads, and the second run reads from its time: X once. Taken
 * over as expired (found by review), the claim was rewritten with the
 * copy's time, which a stop before the read ended (a read that failed and
 * was retried) left to the next run: it took X's delivery for an older
 * copy's, and forwarded X again. */
static void test_own_expired_claim_kept_while_it_is_read(void **state) {
    env *e = *state;
    kd_pipeline_stats st, st2;
    rd_kafka_t *rk;
    kf_record *recs;
    size_t n, npad = 300000;
    kf_run r;

    split_brokers(e);
    kf_mock_cmd(&e->mock, "coordinator g 1");
    kf_run_start(&r, &e->mock, STEP_CONFIG, e->mock.bootstrap, e->dir);
    send_five(e, &r);
    pad_out(e, npad); /* unrelated records on out/0, before X lands */
    kf_mock_cmd(&e->mock, "rtt 2 5000");
    rk = kf_producer(&e->mock);
    kf_send(rk, "in", 0, "key-X", "key-X");
    kf_producer_close(rk);
    wait_stats(&r, consumed_6);
    kd_pipeline_rejoin(r.p);
    st = wait_stats(&r, abandoned);
    assert_true(st.abandoned >= 1);
    kf_mock_cmd(&e->mock, "rtt 2 0");
    wait_stats(&r, consumed_again);            /* the copy, which reads a step a turn */
    nanosleep(&(struct timespec){4, 0}, NULL); /* past inflight_timeout (3.5 s) */
    st = kf_run_stop(&r);
    assert_int_equal(st.orphans_expired, 0); /* its own claim: never taken over */
    assert_int_equal(st.orphans_found, 0);   /* still reading at the stop */

    kf_run_start(&r, &e->mock, STEP_CONFIG, e->mock.bootstrap, e->dir);
    st2 = wait_stats(&r, x_settled);
    kf_run_stop(&r);
    assert_int_equal(st2.orphans_found, 1); /* from X's claim's time */
    assert_int_equal(st2.forwarded, 0);
    recs = kf_read(&e->mock, "out", PARTS, npad + 6, 2000, TIMEOUT_MS, &n);
    assert_int_equal(kf_count_key(recs, n, "key-X"), 1);
    free(recs);
}

/* Signed history. A record forged downstream (VICTIM-1, a made-up source
 * and signature) must not suppress the real message; records signed with
 * the key before a rotation are learned while it is configured as the
 * previous key, and not once it is gone; kdedup-* headers a source producer
 * planted never reach downstream. */
static void test_signed_history_only(void **state) {
    env *e = *state;
    const char *one = "{\"signing_key\": \"key-one-0123456789\"}",
               *rotated = "{\"signing_key\": \"key-two-0123456789\", "
                          "\"previous_signing_key\": \"key-one-0123456789\"}",
               *two = "{\"signing_key\": \"key-two-0123456789\"}";
    char dir[300], at[32], zeros[68];
    rd_kafka_t *rk = kf_producer(&e->mock);
    kd_pipeline_stats st;
    kf_record *recs;
    size_t n;
    kf_run r;

    snprintf(at, sizeof(at), "%llu", (unsigned long long)time(NULL) * 1000);
    memset(zeros, '0', sizeof(zeros));
    memcpy(zeros, "v1:", 3);
    zeros[67] = '\0';
    assert_int_equal(
        rd_kafka_producev(rk, RD_KAFKA_V_TOPIC("out"), RD_KAFKA_V_PARTITION(0),
                          RD_KAFKA_V_VALUE("forged", 6),
                          RD_KAFKA_V_HEADER("Idempotency-Key", "VICTIM-1", -1),
                          RD_KAFKA_V_HEADER("kdedup-source", "in/0/12345", -1),
                          RD_KAFKA_V_HEADER("kdedup-run", "00000000deadbeef", -1),
                          RD_KAFKA_V_HEADER("kdedup-forwarded-at", at, -1),
                          RD_KAFKA_V_HEADER("kdedup-signature", zeros, -1),
                          RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END),
        RD_KAFKA_RESP_ERR_NO_ERROR);
    /* planted provenance on a source message */
    assert_int_equal(
        rd_kafka_producev(rk, RD_KAFKA_V_TOPIC("in"), RD_KAFKA_V_PARTITION(0),
                          RD_KAFKA_V_VALUE("value-0-copy-0", 14),
                          RD_KAFKA_V_HEADER("Idempotency-Key", "key-0", -1),
                          RD_KAFKA_V_HEADER("trace", "value-0-copy-0", -1),
                          RD_KAFKA_V_HEADER("kdedup-source", "planted/9/9", -1),
                          RD_KAFKA_V_HEADER("KDEDUP-run", "planted", -1),
                          RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END),
        RD_KAFKA_RESP_ERR_NO_ERROR);
    for (int i = 1; i < 10; i++) {
        char key[32], value[64];

        snprintf(key, sizeof(key), "key-%d", i);
        snprintf(value, sizeof(value), "value-%d-copy-0", i);
        kf_send(rk, "in", 0, key, value);
    }
    kf_producer_close(rk);

    const char *const configs[] = {one, rotated, two};
    for (int run = 0; run < 3; run++) {
        snprintf(dir, sizeof(dir), "%s/%c", e->dir, 'a' + run);
        assert_int_equal(mkdir(dir, 0700), 0);
        if (run > 0) { /* the real VICTIM-1, and copies of key-0..9 */
            rk = kf_producer(&e->mock);
            kf_send(rk, "in", 0, "VICTIM-1", "victim");
            for (int i = 0; i < 10; i++) {
                char key[32];

                snprintf(key, sizeof(key), "key-%d", i);
                kf_send(rk, "in", 0, key, "copy");
            }
            kf_producer_close(rk);
        }
        kf_run_start(&r, &e->mock, DEDUP_CONFIG, e->mock.bootstrap, configs[run], dir);
        st = kf_run_wait(&r, run ? 11 : 10, TIMEOUT_MS);
        kf_run_stop(&r);
        if (run == 0) {
            assert_int_equal(st.forwarded, 10);
            assert_int_equal(st.headers_stripped, 1);
            assert_int_equal(st.foreign_records, 1); /* the forged one */
            assert_int_equal(st.handover_keys, 0);
        } else if (run == 1) { /* previous key accepted: 10 learned, the forgery not */
            assert_int_equal(st.handover_keys, 10);
            assert_int_equal(st.foreign_records, 1);
            assert_int_equal(st.forwarded, 1); /* VICTIM-1 */
            assert_int_equal(st.duplicates_completed, 10);
        } else { /* the old key gone: only VICTIM-1, signed with key two, is learned */
            assert_int_equal(st.handover_keys, 1);
            assert_int_equal(st.foreign_records, 11);
            assert_int_equal(st.duplicates_completed, 1);
            assert_int_equal(st.forwarded, 10); /* what dropping a key too early costs */
        }
    }
    recs = kf_read(&e->mock, "out", PARTS, 1 + 10 + 1 + 10, 1000, TIMEOUT_MS, &n);
    assert_int_equal(n, 22);
    assert_int_equal(kf_count_key(recs, n, "VICTIM-1"), 2); /* the forgery, the real */
    for (size_t i = 0; i < n; i++)
        if (strcmp(recs[i].value, "forged"))
            assert_memory_equal(recs[i].source, "in/0/", 5); /* never the planted one */
    free(recs);
}

/* A claim without an owner (a store written before owners existed) has no
 * run record: its lookup is unknown, never answered from the scan this run
 * keeps of its own uncertain deliveries (whose owner slot is 0 too). */
static void test_claim_without_owner_reads_no_own_scan(void **state) {
    env *e = *state;
    char json[2048], err[512], path[512];
    rd_kafka_t *rk = kf_producer(&e->mock);
    kd_recover_found f;
    int64_t from = 0;
    kd_recovery *rc;
    kd_config *cfg;
    kd_store *store;

    snprintf(json, sizeof(json), DEDUP_CONFIG, e->mock.bootstrap, "{}", e->dir);
    assert_non_null(
        cfg = kd_config_parse(json, strlen(json), "test.json", err, sizeof(err)));
    snprintf(path, sizeof(path), "%s/store", e->dir);
    assert_non_null(store = kd_rocks_open(path, true, err, sizeof(err)));
    assert_non_null(rc =
                        kd_recovery_new(cfg, store, e->mock.bootstrap, err, sizeof(err)));
    assert_int_equal(rd_kafka_producev(rk, RD_KAFKA_V_TOPIC("out"),
                                       RD_KAFKA_V_PARTITION(0), RD_KAFKA_V_VALUE("v", 1),
                                       RD_KAFKA_V_HEADER("Idempotency-Key", "key-0", -1),
                                       RD_KAFKA_V_HEADER("kdedup-source", "in/0/0", -1),
                                       RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                                       RD_KAFKA_V_END),
                     RD_KAFKA_RESP_ERR_NO_ERROR);
    kf_producer_close(rk);
    /* this run's own scan of out/0 now knows key-0 */
    assert_int_equal(kd_recovery_find_since(rc, 0, 0, &from, 0, "key-0", 5, &f),
                     KD_RECOVER_FOUND);
    assert_int_equal(kd_recovery_find(rc, 0, 0, 0, "key-0", 5, 0, &f),
                     KD_RECOVER_UNKNOWN);
    kd_recovery_destroy(rc);
    kd_store_destroy(store);
    kd_config_destroy(cfg);
}

/* A claim that loses the race for its stream to a release (another writer
 * appends a tombstone of key-0 at the sequence the claim expected), then
 * finds the key absent: the key is claimed again and forwarded under its
 * claim, completed with a receipt, not forwarded unclaimed as a key that
 * "cannot be deduplicated". Twice: the batch's claim, then the claim made
 * again alone. */
static void test_lost_claim_race_claims_again(void **state) {
    env *e = *state;
    kd_entry tomb = {.kind = KD_ENTRY_TOMBSTONE, .key = "key-0", .key_len = 5};
    char stream[256], path[512], err[512];
    unsigned char payload[64];
    size_t plen, slen;
    kd_pipeline_stats st;
    kd_decision dec;
    kf_record *recs;
    kd_store *store;
    kd_dedup *d;
    bool found;
    size_t n;
    kf_run r;

    tomb.timestamp_ms = (uint64_t)time(NULL) * 1000;
    assert_int_equal(kd_entry_encode(&tomb, payload, sizeof(payload), &plen), KD_OK);
    snprintf(path, sizeof(path), "%s/store", e->dir);
    assert_non_null(store = kd_store_mem_new());
    d = kd_dedup_new(store, "kdedup:in");
    slen = kd_dedup_stream_key_for(d, "key-0", 5, stream, sizeof(stream));
    kd_dedup_destroy(d);
    kd_store_destroy(store);

    kf_run_start_faulty(&r, &e->mock, ROUTE_CONFIG, e->mock.bootstrap, "{}", 5, e->dir,
                        "5s");
    kd_faulty_store_race(r.store, stream, slen, payload, plen, 2);
    send_keys(e, "in", 0, 10, 1);
    st = kf_run_wait(&r, 10, TIMEOUT_MS);
    assert_int_equal(kd_faulty_store_raced(r.store), 2);
    kf_run_stop(&r);
    assert_int_equal(st.collisions, 0);
    assert_int_equal(st.forwarded, 10);
    recs = kf_read(&e->mock, "out", PARTS, 10, 1000, TIMEOUT_MS, &n);
    assert_int_equal(n, 10);
    assert_each_once(recs, n, 0, 10);
    free(recs);

    assert_non_null(store = kd_rocks_open(path, true, err, sizeof(err)));
    d = kd_dedup_new(store, "kdedup:in");
    assert_int_equal(kd_dedup_lookup(d, "key-0", 5, &dec, &found), KD_OK);
    assert_true(found); /* under a claim: completed by its receipt */
    assert_int_equal(dec.state, KD_COMPLETED);
    kd_decision_clear(&dec);
    kd_dedup_destroy(d);
    kd_store_destroy(store);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_duplicates_within_across_and_restart, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_missing_key_policies, setup, teardown),
        cmocka_unit_test_setup_teardown(test_hostile_headers, setup, teardown),
        cmocka_unit_test_setup_teardown(test_header_bounds_reject, setup, teardown),
        cmocka_unit_test_setup_teardown(test_ambiguous_keys_dead_lettered, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_store_full_pauses_and_resumes, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_not_persisted_released_and_retried, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_commit_stops_at_unfinished, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stop_mid_stream_loses_nothing, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_orphaned_claim_is_reforwarded, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_orphans_resolved_from_downstream, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_orphans_resolved_without_handover, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_expired_orphans_looked_up, setup, teardown),
        cmocka_unit_test_setup_teardown(test_claim_without_owner_reads_no_own_scan, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_orphan_not_completed_by_an_older_delivery,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_retries_exhausted_dead_letter, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_dead_letter_refused_is_stuck, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_handover_moves_history, setup, teardown),
        cmocka_unit_test_setup_teardown(test_signed_history_only, setup, teardown),
        cmocka_unit_test_setup_teardown(test_handover_keys_spread, setup, teardown),
        cmocka_unit_test_setup_teardown(test_handover_ignores_event_time, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_handover_waits_for_downstream, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_store_slower_than_max_poll, setup, teardown),
        cmocka_unit_test_setup_teardown(test_store_write_within_its_bound_does_not_pause,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_stop_during_a_slow_write, setup, teardown),
        cmocka_unit_test_setup_teardown(test_expired_claim_in_a_dropped_batch, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_handover_retried_after_a_failed_completion,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_txn_commit_tries_end_at_the_stop, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(
            test_txn_unknown_commit_read_once_the_producer_is_ready, setup, teardown),
        cmocka_unit_test_setup_teardown(test_txn_producer_initialised_in_later_turns,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_revoke_during_a_slow_write, setup, teardown),
        cmocka_unit_test_setup_teardown(test_txn_revoke_during_a_slow_write, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_eager_revoke_outlasted_by_a_slow_write,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_assignment_lost_during_a_slow_write, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_rebalance_while_claims_are_written, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_partition_back_to_same_process, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_own_expired_claim_kept_while_it_is_read,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_conflict_waits_for_an_ended_ownership, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_uncertain_delivery_of_an_ended_ownership,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_left_copies_read_together, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stop_takes_one_grace_period, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_possibly_persisted_resolved_downstream,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_resend_reads_from_the_first_copy, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_lost_claim_race_claims_again, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(
            test_handover_refuses_a_delivery_older_than_the_claim, setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_handover_refuses_a_delivery_older_than_an_expired_claim, setup,
            teardown),
        cmocka_unit_test_setup_teardown(test_handover_honours_forgets_not_releases, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_forget_travels_with_the_partition, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_forget_record_is_no_delivery, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_handover_read_again_keeps_a_forget, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_handover_read_again_keeps_an_expired_claim,
                                        setup, teardown),
    };

    /* KD_TEST_FILTER='*same_process*': one case while working; each case in
     * a process of its own, KD_TEST_JOBS (3) at a time */
    return cr_run_group("pipeline (mock cluster)", tests,
                        sizeof(tests) / sizeof(tests[0]));
}
