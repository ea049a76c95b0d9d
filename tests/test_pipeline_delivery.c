/*
 * kdedup tests - the pipeline against a mock cluster: deliveries:
 * duplicates, missing and hostile keys and headers, a full store, failed,
 * possibly persisted and dead-lettered deliveries, commits at a stop (run by
 * test_pipeline.c).
 */
#include "tests/pipeline_fixture.h"

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
void test_duplicates_within_across_and_restart(void **state) {
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
void test_missing_key_policies(void **state) {
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
void test_hostile_headers(void **state) {
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
void test_ambiguous_keys_dead_lettered(void **state) {
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
void test_header_bounds_reject(void **state) {
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
void test_store_full_pauses_and_resumes(void **state) {
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
void test_not_persisted_released_and_retried(void **state) {
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

/* With deliveries failing for good, a stop commits exactly up to the first
 * unfinished message: past everything done, never past what is not. */
void test_commit_stops_at_unfinished(void **state) {
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
void test_stop_mid_stream_loses_nothing(void **state) {
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
void test_retries_exhausted_dead_letter(void **state) {
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
void test_dead_letter_refused_is_stuck(void **state) {
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
void test_possibly_persisted_resolved_downstream(void **state) {
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
