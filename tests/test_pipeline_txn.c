/*
 * kdedup tests - the pipeline against a mock cluster in the transactional
 * delivery mode: commits at a stop, a producer replaced and initialised in
 * later turns, reads of deliveries of unknown outcome, offsets alone (run by
 * test_pipeline.c).
 */
#include "tests/pipeline_fixture.h"

#include <inttypes.h>

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
void test_txn_commit_tries_end_at_the_stop(void **state) {
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
void test_txn_producer_initialised_in_later_turns(void **state) {
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
void test_txn_unknown_commit_read_once_the_producer_is_ready(void **state) {
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

/* The note of an ended ownership's delivery of unknown outcome (outside
 * review, 2026-12-07). As test_txn_unknown_commit_read_once_the_producer_is_ready:
 * key-1..5's commit fails for good, the replacing producer's initialisation
 * is answered CONCURRENT_TRANSACTIONS for long. Meanwhile b joins the group
 * (not transactional, a store of its own): a's revoke callback ends its
 * ownerships, and the uncertain deliveries waiting in its retries leave
 * notes (left_claim) with their barrier (10 s here). Copies of key-1..5 then
 * sent to every partition meet those notes on a's partitions. resolve_left
 * and kd_pl_resolve_left read downstream once the barrier passed, without
 * waiting for the initialisation the way live uncertain messages do
 * (kd_pl_retry_due): a read_committed read made while the old transaction is
 * undecided stops at its last stable offset and misses its records (on
 * Apache Kafka), and the copy is forwarded again: its key twice. Expected:
 * no note is read while kdedup_txn_producer_initialising says 1. */
#define TXN_PLAIN_B_CONFIG                                                               \
    "{\"kafka\": {\"brokers\": \"%s\", \"group_id\": \"g\", \"producer\": {}"            \
    ", \"consumer\": {\"session.timeout.ms\": \"6000\", \"heartbeat.interval.ms\": "     \
    "\"500\"}},"                                                                         \
    " \"routes\": [{\"from\": \"in\", \"to\": \"out\", \"on_missing_key\": "             \
    "\"forward\"}],"                                                                     \
    " \"dedup\": " NO_HANDOVER ", \"store\": {\"path\": \"%s/b/store\"},"                \
    " \"pipeline\": {\"shutdown_grace\": \"2s\"}}"

/* TXN_FAST_CONFIG with the handover off (a partition assigned again is
 * consumed at once). Arguments: brokers, dir. */
#define TXN_FAST_NO_HANDOVER_CONFIG                                                      \
    "{\"kafka\": {\"brokers\": \"%s\", \"group_id\": \"g\", \"producer\": "              \
    "{\"message.timeout.ms\": \"1000\"}, \"consumer\": {\"session.timeout.ms\": "        \
    "\"6000\", \"heartbeat.interval.ms\": \"500\"}},"                                    \
    " \"routes\": [{\"from\": \"in\", \"to\": \"out\", \"on_missing_key\": "             \
    "\"forward\"}], \"dedup\": " NO_HANDOVER ","                                         \
    " \"store\": {\"path\": \"%s/store\"}, \"pipeline\": {\"shutdown_grace\": \"2s\", "  \
    "\"delivery\": \"transactional\", \"transactional_id\": \"kd-test\"}}"

void test_txn_unknown_commit_note_read_once_the_producer_is_ready(void **state) {
    env *e = *state;
    rd_kafka_t *rk = kf_producer(&e->mock);
    _Atomic uint64_t *replaced, *initialising;
    kd_pipeline_stats st;
    uint64_t reads = 0, abandoned = 0;
    bool waited = false, sent = false;
    char dir[300];
    kf_run r, b;

    split_brokers(e);
    kf_run_start(&r, &e->mock, TXN_FAST_NO_HANDOVER_CONFIG, e->mock.bootstrap, e->dir);
    replaced = kd_metrics_txn_replaced(kd_pipeline_metrics(r.p));
    initialising = &kd_metrics_flow(kd_pipeline_metrics(r.p))->txn_initialising;
    kf_send(rk, "in", 0, "key-0", "value-0");
    st = kf_run_wait(&r, 1, TIMEOUT_MS);
    assert_int_equal(st.forwarded, 1);
    kf_mock_cmd(&e->mock, "endtxn-errors 1 48");    /* INVALID_TXN_STATE: fatal */
    kf_mock_cmd(&e->mock, "initpid-errors 250 51"); /* CONCURRENT_TRANSACTIONS */
    send_until_replaced(rk, replaced);
    for (int i = 0; i < TIMEOUT_MS / 20 && !atomic_load(initialising); i++)
        kf_sleep_ms(20); /* the first try of the initialisation ends first */
    assert_true(atomic_load(initialising) != 0);
    snprintf(dir, sizeof(dir), "%s/b", e->dir);
    assert_int_equal(mkdir(dir, 0700), 0);
    kf_run_start(&b, &e->mock, TXN_PLAIN_B_CONFIG, e->mock.bootstrap, e->dir);
    rk = kf_producer(&e->mock);
    for (int i = 0;
         i < 3 * TIMEOUT_MS / 20 && !(waited && reads && !atomic_load(initialising));
         i++) {
        bool before = atomic_load(initialising) != 0;

        kd_pipeline_stats_get(r.p, &st);
        abandoned = st.abandoned;
        if (!sent && st.assigned_partitions == PARTS / 2 && abandoned) {
            /* a's ownerships ended (its uncertain deliveries left notes) and
             * it holds half of the partitions again: a copy of each key to
             * every partition */
            for (int p = 0; p < PARTS; p++)
                for (int k = 1; k <= 5; k++) {
                    char key[16];

                    snprintf(key, sizeof(key), "key-%d", k);
                    kf_send(rk, "in", p, key, "copy");
                }
            kf_producer_close(rk);
            sent = true;
            print_message("copies sent while initialising: %d\n", before);
        }
        reads = st.orphans_found + st.orphans_absent + st.orphans_reforwarded;
        if (reads && before && atomic_load(initialising))
            fail_msg("%" PRIu64 " notes read downstream while the new producer was "
                     "still initialising",
                     reads);
        waited |= before;
        kf_sleep_ms(20);
    }
    kf_run_stop(&b);
    kf_run_stop(&r);
    assert_true(sent);
    assert_true(waited);
    assert_true(reads >= 1);
}
