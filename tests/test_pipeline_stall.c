/*
 * kdedup tests - the pipeline against a mock cluster: slow store writes
 * against max.poll.interval.ms, revokes and lost assignments during a
 * write (run by test_pipeline.c; the transactional mode's own cases are in
 * test_pipeline_txn.c).
 */
#include "tests/pipeline_fixture.h"

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
void test_store_slower_than_max_poll(void **state) {
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
void test_store_write_within_its_bound_does_not_pause(void **state) {
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
void test_stop_during_a_slow_write(void **state) {
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
void test_expired_claim_in_a_dropped_batch(void **state) {
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
void test_revoke_during_a_slow_write(void **state) {
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
void test_txn_revoke_during_a_slow_write(void **state) {
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
void test_eager_revoke_outlasted_by_a_slow_write(void **state) {
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
void test_assignment_lost_during_a_slow_write(void **state) {
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
void test_rebalance_while_claims_are_written(void **state) {
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
