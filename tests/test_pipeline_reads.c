/*
 * kdedup tests - the pipeline against a mock cluster: ended ownerships:
 * partitions that come back, notes of uncertain deliveries read together,
 * conflicts against them, signed history (run by test_pipeline.c).
 */
#include "tests/pipeline_fixture.h"

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
void test_partition_back_to_same_process(void **state) {
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
void test_stop_takes_one_grace_period(void **state) {
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
void test_uncertain_delivery_of_an_ended_ownership(void **state) {
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
 * reads stay a few (kdedup_recovery_scans_total), and the records read
 * within a few passes over it. (Each copy read for alone,
 * with its own end offsets asked of the broker, read the partition once
 * per copy, and turned the loop once per handful: the CI's broker_faults
 * run left 1,160 such copies in the retries, which drained by a few a turn
 * while consumption waited for them, past the test's 120 s.) */
void test_left_copies_read_together(void **state) {
    env *e = *state;
    _Atomic uint64_t *records, *scans;
    kd_pipeline_stats st;
    rd_kafka_t *rk;
    char key[32];
    kf_run r;

    run_until_x(e, &r, "3000", 0, 0, "200ms");
    records = kd_metrics_recovery_records(kd_pipeline_metrics(r.p));
    scans = kd_metrics_recovery_scans(kd_pipeline_metrics(r.p));
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
    uint64_t before = atomic_load(records), scans_before = atomic_load(scans);
    st = wait_stats(&r, left_found);
    uint64_t read = atomic_load(records) - before,
             nscans = atomic_load(scans) - scans_before;
    kf_run_stop(&r);
    print_message("%llu records read for %d copies, in %llu reads\n",
                  (unsigned long long)read, LEFT_COPIES, (unsigned long long)nscans);
    assert_int_equal(st.orphans_found, LEFT_COPIES);
    assert_true(nscans <= 10);                               /* alone: 100 at least */
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
void test_conflict_waits_for_an_ended_ownership(void **state) {
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

/* A copy of X meets this run's own claim of X, whose delivery an ended
 * ownership left possibly persisted (in the log, 300,000 records into the
 * partition). The copy waits to read for it: the note's barrier holds
 * (nothing sent after X was acknowledged: 10 x message.timeout.ms), and
 * the claim passes inflight_timeout meanwhile; the run stops, and a second
 * run takes over. The claim is this run's, so it does not expire for it:
 * it stays as X made it while the copy waits and retries, and the second
 * run reads from its time: X once. Taken over as expired (found by review),
 * the claim was rewritten with the copy's time, which a stop before the
 * copy's read ended (a read that failed and was retried) left to the next
 * run: it took X's delivery for an older copy's, and forwarded X again. */
void test_own_claim_kept_while_its_copy_waits(void **state) {
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
    wait_stats(&r, consumed_again);            /* the copy: it waits for the barrier */
    nanosleep(&(struct timespec){4, 0}, NULL); /* past inflight_timeout (3.5 s) */
    st = kf_run_stop(&r);
    assert_int_equal(st.orphans_expired, 0); /* its own claim: never taken over */
    assert_int_equal(st.orphans_found, 0);   /* still waiting at the stop */

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
void test_signed_history_only(void **state) {
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
void test_claim_without_owner_reads_no_own_scan(void **state) {
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
    assert_int_equal(kf_find_since(rc, 0, 0, &from, 0, "key-0", 5, &f), KD_RECOVER_FOUND);
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
void test_lost_claim_race_claims_again(void **state) {
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
