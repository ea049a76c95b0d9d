/*
 * kdedup tests - bounds of the flow: backpressure, headers counted in
 * flight, a poison message holding back only its partition, orphans in
 * order, unclaimed records (run by test_bounds.c).
 */
#include "tests/pipeline_fixture.h"

/* One route without a dead-letter topic, at most 50 messages in flight. */
#define BOUNDED_CONFIG                                                                   \
    "{\"kafka\": {\"brokers\": \"%s\", \"group_id\": \"g\", \"producer\": %s,"           \
    " \"consumer\": {\"session.timeout.ms\": \"6000\", \"heartbeat.interval.ms\": "      \
    "\"500\"}},"                                                                         \
    " \"routes\": [{\"from\": \"in\", \"to\": \"out\", \"on_missing_key\": \"forward\"," \
    " \"max_retries\": 0, \"retry_backoff\": \"100ms\"}],"                               \
    " \"store\": {\"path\": \"%s/store\"}, \"pipeline\": {\"shutdown_grace\": \"2s\","   \
    " \"batch_max\": 10, \"max_inflight\": 50}}"

static uint64_t gauge(kf_run *r, size_t at) {
    kd_flow_gauges *g = kd_metrics_flow(kd_pipeline_metrics(r->p));

    return atomic_load((_Atomic uint64_t *)((char *)g + at));
}

/* The gauge at `at` once it is at least min (or after TIMEOUT_MS). The flow
 * gauges are set every 250 ms: read the moment after an event, they may not
 * show it yet. */
static uint64_t gauge_reaches(kf_run *r, size_t at, uint64_t min) {
    uint64_t v = 0;

    for (int i = 0; i < TIMEOUT_MS / 20 && (v = gauge(r, at)) < min; i++)
        kf_sleep_ms(20);
    return v;
}

/* Downstream unreachable: consumption stops at pipeline.max_inflight (plus
 * one poll batch), /readyz says why; once it is back, everything lands
 * exactly once. */
void test_backpressure_pauses_and_resumes(void **state) {
    env *e = *state;
    kd_pipeline_stats st;
    char reason[512];
    kf_record *recs;
    size_t n;
    kf_run r;

    kf_mock_cmd(&e->mock, "leader out 0 2");
    kf_mock_cmd(&e->mock, "leader out 1 2");
    kf_mock_cmd(&e->mock, "leader in 0 1");
    kf_mock_cmd(&e->mock, "leader in 1 1");
    kf_run_start(&r, &e->mock, BOUNDED_CONFIG, e->mock.bootstrap,
                 "{\"message.timeout.ms\": \"60000\"}", e->dir);
    kf_send_range(&e->mock, "in", 0, "k", 0, 10);
    st = kf_run_wait(&r, 10, TIMEOUT_MS);
    assert_int_equal(st.forwarded, 10);

    kf_mock_cmd(&e->mock, "broker-down 2");
    kf_send_range(&e->mock, "in", 0, "k", 10, 260);
    kf_send_range(&e->mock, "in", 1, "k", 260, 510);
    for (int i = 0; i < 500 && !gauge(&r, offsetof(kd_flow_gauges, backpressure)); i++)
        kf_sleep_ms(20);
    assert_int_equal(gauge(&r, offsetof(kd_flow_gauges, backpressure)), 1);
    kf_sleep_ms(2000); /* it stays paused */
    kd_pipeline_stats_get(r.p, &st);
    assert_true(st.consumed >= 10 + 50);
    assert_true(st.consumed <= 10 + 50 + 10);
    assert_true(st.inflight <= 50 + 10);
    assert_false(kd_pipeline_ready(r.p, reason, sizeof(reason)));
    assert_non_null(strstr(reason, "backpressure"));

    kf_mock_cmd(&e->mock, "broker-up 2");
    st = kf_run_wait(&r, 510, TIMEOUT_MS);
    assert_int_equal(st.consumed, 510);
    assert_int_equal(st.forwarded, 510);
    for (int i = 0; i < 500 && gauge(&r, offsetof(kd_flow_gauges, backpressure)); i++)
        kf_sleep_ms(20); /* the gauge is set every 250 ms, after the last settles */
    assert_int_equal(gauge(&r, offsetof(kd_flow_gauges, backpressure)), 0);
    assert_true(kd_pipeline_ready(r.p, reason, sizeof(reason)));
    kf_run_stop(&r);

    recs = kf_read(&e->mock, "out", 3, 510, 1000, TIMEOUT_MS, &n);
    assert_int_equal(n, 510);
    for (int i = 0; i < 510; i++) {
        char key[32];

        snprintf(key, sizeof(key), "k-%d", i);
        assert_int_equal(kf_count_key(recs, n, key), 1);
    }
    free(recs);
}

/* Messages of 500 empty headers each (1.5 KB on the wire; 97 KB counted
 * in flight: each header's name, value and 96 bytes, for the headers
 * parsed and for their copy produced) while downstream is down and every
 * store write is slow, so that a turn finds all of them waiting: the
 * poll batch (batch_max 1000) stops at pipeline.max_inflight_bytes (1 MiB),
 * and consumption pauses there; once downstream is back, every one lands
 * once. Before headers were counted, all 100 were taken in flight (and
 * 200 such messages of 65,000 headers held 1.8 GiB). */
void test_headers_count_in_flight(void **state) {
    env *e = *state;
    kd_flow_gauges *g;
    kd_pipeline_stats st;
    rd_kafka_t *rk;
    char key[32];
    kf_record *recs;
    size_t n;
    kf_run r;

    kf_mock_cmd(&e->mock, "leader out 0 2");
    kf_mock_cmd(&e->mock, "leader in 0 1");
    kf_run_start_faulty(
        &r, &e->mock,
        "{\"kafka\": {\"brokers\": \"%s\", \"group_id\": \"g\", \"producer\": "
        "{\"message.timeout.ms\": \"60000\"}},"
        " \"routes\": [{\"from\": \"in\", \"to\": \"out\", \"on_missing_key\": "
        "\"forward\"}], \"store\": {\"path\": \"%s/store\"},"
        " \"pipeline\": {\"shutdown_grace\": \"2s\", \"batch_max\": 1000,"
        " \"max_inflight_bytes\": 1048576}}",
        e->mock.bootstrap, e->dir);
    g = kd_metrics_flow(kd_pipeline_metrics(r.p));
    kf_send_range(&e->mock, "in", 0, "w", 0, 10);
    st = kf_run_wait(&r, 10, TIMEOUT_MS);
    assert_int_equal(st.forwarded, 10);

    kf_mock_cmd(&e->mock, "broker-down 2");
    kd_faulty_store_delay_writes(r.store, 1500);
    rk = kf_producer(&e->mock);
    for (int i = 0; i < 100; i++) {
        snprintf(key, sizeof(key), "hk-%d", i);
        kf_send_headed(rk, "in", 0, key, 500);
    }
    kf_producer_close(rk);
    for (int i = 0; i < 1000 && !atomic_load(&g->backpressure); i++)
        kf_sleep_ms(20);
    assert_int_equal(atomic_load(&g->backpressure), 1);
    kf_sleep_ms(3000); /* it stays paused: two slow writes' worth */
    kd_pipeline_stats_get(r.p, &st);
    assert_true(gauge_reaches(&r, offsetof(kd_flow_gauges, inflight_bytes), 1048576) >=
                1048576);
    assert_true(st.consumed >= 10 + 10);
    assert_true(st.consumed <= 10 + 12); /* 11 pass 1 MiB */

    kd_faulty_store_delay_writes(r.store, 0);
    kf_mock_cmd(&e->mock, "broker-up 2");
    st = kf_run_wait(&r, 110, TIMEOUT_MS);
    assert_int_equal(st.consumed, 110);
    assert_int_equal(st.forwarded, 110);
    for (int i = 0; i < 500 && atomic_load(&g->inflight_bytes); i++)
        kf_sleep_ms(20); /* the gauge is set every 250 ms */
    assert_int_equal(atomic_load(&g->inflight_bytes), 0);
    kf_run_stop(&r);
    recs = kf_read(&e->mock, "out", 3, 110, 1000, TIMEOUT_MS, &n);
    assert_int_equal(n, 110);
    for (int i = 0; i < 100; i++) {
        snprintf(key, sizeof(key), "hk-%d", i);
        assert_int_equal(kf_count_key(recs, n, key), 1);
    }
    free(recs);
}

/* A message that can never be delivered (larger than the producer's
 * message.max.bytes) on a route without a dead-letter topic is retried
 * forever: its partition is held back once pipeline.max_inflight of its
 * messages wait behind it, its offset never committed past, while the
 * other partition goes on. */
void test_poison_holds_back_only_its_partition(void **state) {
    env *e = *state;
    rd_kafka_t *rk = kf_producer(&e->mock);
    char *big = malloc(5001);
    kd_pipeline_stats st;
    kf_record *recs;
    size_t n;
    kf_run r;

    memset(big, 'x', 5000);
    big[5000] = '\0';
    kf_send(rk, "in", 0, "poison", big);
    kf_producer_close(rk);
    free(big);
    kf_send_range(&e->mock, "in", 0, "p0", 0, 300);
    kf_send_range(&e->mock, "in", 1, "p1", 0, 300);
    kf_run_start(&r, &e->mock, BOUNDED_CONFIG, e->mock.bootstrap,
                 "{\"message.max.bytes\": \"2000\"}", e->dir);
    for (int i = 0; i < 1500 && !gauge(&r, offsetof(kd_flow_gauges, held_back)); i++)
        kf_sleep_ms(20);
    assert_int_equal(gauge(&r, offsetof(kd_flow_gauges, held_back)), 1);
    recs = kf_read(&e->mock, "out", 3, 300, 2000, TIMEOUT_MS, &n);
    for (int i = 0; i < 300; i++) { /* the other partition: all of it */
        char key[32];

        snprintf(key, sizeof(key), "p1-%d", i);
        assert_int_equal(kf_count_key(recs, n, key), 1);
    }
    assert_int_equal(kf_count_key(recs, n, "poison"), 0);
    free(recs);
    kf_sleep_ms(1000); /* it stays held back */
    kd_pipeline_stats_get(r.p, &st);
    assert_true(st.consumed >= 300 + 50);
    assert_true(st.consumed <= 300 + 1 + 50 + 10);
    assert_true(st.retries >= 2); /* the poison, again and again */
    assert_true(gauge_reaches(&r, offsetof(kd_flow_gauges, retrying), 1) >= 1);
    assert_int_equal(gauge(&r, offsetof(kd_flow_gauges, held_back)), 1);
    assert_int_equal(gauge(&r, offsetof(kd_flow_gauges, stuck)), 1); /* and says so */
    kf_run_stop(&r);
    assert_true(kf_committed(&e->mock, "g", "in", 0) <= 0); /* never past the poison */
    assert_int_equal(kf_committed(&e->mock, "g", "in", 1), 300);
}

/* Messages consumed after an orphan wait behind it while its scan reads a
 * step a turn (1 ms here), and leave in consumption order: o-1 found
 * downstream (the dead run delivered it), o-2 absent (forwarded), n-1..3
 * new; downstream they follow their source offsets. */
void test_orphans_keep_their_order(void **state) {
    env *e = *state;
    const char *run = "kdedup-run v1\n0 0 out\n1 0 out\n2 0 out\n";
    static const char *const order[] = {"o-1", "n-1", "o-2", "n-2", "n-3"};
    uint64_t now = (uint64_t)time(NULL) * 1000;
    char path[512], err[512], stream[32];
    rd_kafka_t *rk = kf_producer(&e->mock);
    int64_t last = -1;
    kd_pipeline_stats st;
    kd_decision dec;
    kf_record *recs;
    kd_store *store;
    kd_dedup *d;
    size_t n;
    kf_run r;

    deliveries(rk, 0, "a", 15000); /* what the dead run forwarded... */
    assert_int_equal(
        rd_kafka_producev(rk, RD_KAFKA_V_TOPIC("out"), RD_KAFKA_V_PARTITION(0),
                          RD_KAFKA_V_VALUE("o-1", 3),
                          RD_KAFKA_V_HEADER("Idempotency-Key", "o-1", -1),
                          RD_KAFKA_V_HEADER("kdedup-source", "in/0/0", -1),
                          RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END),
        RD_KAFKA_RESP_ERR_NO_ERROR); /* ...o-1 last */
    for (size_t i = 0; i < 5; i++)
        kf_send(rk, "in", 0, order[i], order[i]);
    kf_producer_close(rk);
    snprintf(path, sizeof(path), "%s/store", e->dir);
    assert_non_null(store = kd_rocks_open(path, true, err, sizeof(err)));
    assert_int_equal(
        kd_store_append(store, stream,
                        kd_recovery_run_stream(0xbeef, stream, sizeof(stream)), 0, run,
                        strlen(run)),
        KD_OK);
    d = kd_dedup_new(store, "kdedup:in");
    kd_dedup_set_owner(d, 0xbeef);
    assert_int_equal(kd_dedup_claim_or_get(d, "o-1", 3, now, &dec), KD_OK);
    assert_int_equal(kd_dedup_claim_or_get(d, "o-2", 3, now, &dec), KD_OK);
    kd_dedup_destroy(d);
    kd_store_destroy(store);

    kf_run_start(&r, &e->mock,
                 "{\"kafka\": {\"brokers\": \"%s\", \"group_id\": \"g\"},"
                 " \"routes\": [{\"from\": \"in\", \"to\": \"out\","
                 " \"on_missing_key\": \"forward\"}],"
                 " \"dedup\": {\"handover\": false, \"inflight_timeout\": \"0s\","
                 " \"scan_step\": \"1ms\"},"
                 " \"store\": {\"path\": \"%s/store\"}}",
                 e->mock.bootstrap, e->dir);
    st = kf_run_wait(&r, 5, TIMEOUT_MS);
    if (getenv("KD_TEST_LOG"))
        fprintf(stderr,
                "consumed %llu forwarded %llu found %llu absent %llu reforwarded %llu\n",
                (unsigned long long)st.consumed, (unsigned long long)st.forwarded,
                (unsigned long long)st.orphans_found,
                (unsigned long long)st.orphans_absent,
                (unsigned long long)st.orphans_reforwarded);
    assert_int_equal(st.consumed, 5);
    assert_int_equal(st.orphans_found, 1);
    assert_int_equal(st.orphans_absent, 1);
    assert_int_equal(st.forwarded, 4);
    kf_run_stop(&r);

    recs = kf_read(&e->mock, "out", 1, 15001 + 4, 1000, TIMEOUT_MS, &n);
    assert_int_equal(n, 15001 + 4);
    for (size_t i = 1; i < 5; i++) { /* downstream in their source order */
        int64_t at = -1;

        for (size_t j = 0; j < n; j++)
            if (!strcmp(recs[j].ikey, order[i])) {
                assert_int_equal(at, -1); /* once */
                at = recs[j].offset;
            }
        assert_true(at > last);
        last = at;
    }
    assert_int_equal(kf_count_key(recs, n, "o-1"), 1); /* the dead run's only */
    free(recs);
}

/* A record forwarded without a claim (kdedup-unclaimed: a key conflict
 * forwarded, a key that could not be deduplicated) carries the key header
 * but is no claim's delivery: neither an orphan's lookup nor an uncertain
 * delivery's takes it (one did, completing the original from it: lost). */
void test_unclaimed_records_are_no_delivery(void **state) {
    env *e = *state;
    const char *run = "kdedup-run v1\n0 0 out\n1 0 out\n2 0 out\n";
    rd_kafka_t *rk = kf_producer(&e->mock);
    kd_recover_found f = {0};
    int64_t from = 0;
    kd_recovery *rc;
    kd_config *cfg;
    kd_store *store;

    assert_int_equal(
        rd_kafka_producev(rk, RD_KAFKA_V_TOPIC("out"), RD_KAFKA_V_PARTITION(0),
                          RD_KAFKA_V_VALUE("other payload", 13),
                          RD_KAFKA_V_HEADER("Idempotency-Key", "k", -1),
                          RD_KAFKA_V_HEADER("kdedup-source", "in/0/1", -1),
                          RD_KAFKA_V_HEADER("kdedup-unclaimed", "1", -1),
                          RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END),
        RD_KAFKA_RESP_ERR_NO_ERROR);
    kf_producer_close(rk);
    recovery_open(e, run, 0, &cfg, &store, &rc);
    assert_int_equal(kd_recovery_find(rc, 0xbeef, 0, 0, "k", 1, 0, &f),
                     KD_RECOVER_ABSENT);
    assert_int_equal(kf_find_since(rc, 0, 0, &from, 0, "k", 1, &f), KD_RECOVER_ABSENT);
    kd_recovery_destroy(rc);
    kd_store_destroy(store);
    kd_config_destroy(cfg);
}
