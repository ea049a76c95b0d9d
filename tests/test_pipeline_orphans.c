/*
 * kdedup tests - the pipeline against a mock cluster: orphaned claims:
 * resends read from the first copy, claims of dead runs resolved from
 * downstream, expired claims (run by test_pipeline.c).
 */
#include "tests/pipeline_fixture.h"

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
void test_resend_reads_from_the_first_copy(void **state) {
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

/* A claim left in flight by a run that is gone (another owner id) is taken
 * over and the message forwarded, not suppressed forever; a claim this run
 * holds is a duplicate. */
void test_orphaned_claim_is_reforwarded(void **state) {
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

void test_orphans_resolved_from_downstream(void **state) {
    orphans_resolved(*state, (uint64_t)time(NULL) * 1000, true);
}

/* The same, found by recovery alone (no handover completes them first). */
void test_orphans_resolved_without_handover(void **state) {
    orphans_resolved(*state, (uint64_t)time(NULL) * 1000, false);
}

/* Claims older than dedup.inflight_timeout (the run died 11 minutes ago)
 * count as absent, but their deliveries may be downstream all the same:
 * they are looked up there before anything is forwarded again. */
void test_expired_orphans_looked_up(void **state) {
    orphans_resolved(*state, (uint64_t)time(NULL) * 1000 - 11 * 60 * 1000, false);
}

/* A key forwarded two hours ago (ttl 1 h: expired), consumed again and
 * claimed a minute ago by a run that died before delivering it. The old
 * record downstream is that key's, but not that claim's delivery: the
 * claim is resolved as absent and the message forwarded (once more), not
 * completed by the old record (which would lose it). */
void test_orphan_not_completed_by_an_older_delivery(void **state) {
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
