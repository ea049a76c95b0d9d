/*
 * kdedup tests - the pipeline against a mock cluster: the handover: history
 * read from downstream when a partition is assigned (run by
 * test_pipeline.c).
 */
#include "tests/pipeline_fixture.h"

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
void test_handover_retried_after_a_failed_completion(void **state) {
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

void test_handover_refuses_a_delivery_older_than_the_claim(void **state) {
    older_than_the_claim(*state, 0);
}

/* The same with the claim past dedup.inflight_timeout (10 m): the handover
 * takes the expired claim over, and lets the key go again. */
void test_handover_refuses_a_delivery_older_than_an_expired_claim(void **state) {
    older_than_the_claim(*state, 11 * 60 * 1000);
}

/* Replica a's revoke drain ran out while its deliveries of key-0 and key-1
 * were still out; b forwarded both; then a's deliveries failed and a
 * released their claims. a gets the partition back: its handover reads b's
 * records, older than a's releases, and learns both all the same (a
 * release is not a forget), so a's retried copies are duplicates. key-2,
 * forwarded a minute ago and then forgotten by the operator, is not
 * learned: its copy goes out again, as asked. */
void test_handover_honours_forgets_not_releases(void **state) {
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
void test_handover_read_again_keeps_a_forget(void **state) {
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
void test_handover_read_again_keeps_an_expired_claim(void **state) {
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

/* Two replicas with stores of their own take turns with the partitions.
 * Each learns on assignment what the other forwarded, so a duplicate
 * arriving after the move is suppressed; each reads only the records
 * added since its own last handover of a partition, and learns nothing
 * from records kdedup did not forward. */
void test_handover_moves_history(void **state) {
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
 * 2,000 keys from partition 3; a keyless producer sends the last 200 of
 * them again onto partitions 0, 1 and 2. A replica with a fresh store (an
 * emptyDir pod start) is given every partition: partitions 0-2, whose own
 * histories are empty, are not consumed before partition 3's history is
 * learned too, so every copy is a duplicate. (Before, each was consumed as
 * soon as its own empty history was read, while partition 3's was still
 * being read: copies went downstream again.)
 *
 * Partition 3's history (out 3) is led by broker 3, which answers each
 * request 1 s late while the new replica reads it; the other partitions'
 * brokers answer at once. So the empty histories are learned seconds
 * before partition 3's, and a replica that consumed them then forwards the
 * copies long before partition 3's first fetch returns: setup_three's
 * cluster (test_pipeline.c). */
void test_handover_keys_spread(void **state) {
    env *e = *state;
    kd_pipeline_stats st;
    char key[32], dir[300];
    kf_record *recs;
    size_t n, twice = 0;
    kf_run r;

    kf_mock_cmd(&e->mock, "coordinator g 1");
    for (int i = 0; i < PARTS; i++) {
        kf_mock_cmd(&e->mock, "leader in %d 1", i);
        kf_mock_cmd(&e->mock, "leader out %d %d", i, i == 3 ? 3 : 2);
    }
    send_onto(e, 3, 1, 0, 2000, 0);
    start_named(&r, e, "a");
    st = kf_run_wait(&r, 2000, TIMEOUT_MS);
    kf_run_stop(&r);
    assert_int_equal(st.forwarded, 2000);

    send_onto(e, 0, 3, 1800, 2000, 1);
    snprintf(dir, sizeof(dir), "%s/b", e->dir);
    assert_int_equal(mkdir(dir, 0700), 0);
    kf_mock_cmd(&e->mock, "rtt 3 1000");
    kf_run_start(&r, &e->mock, DEDUP_CONFIG, e->mock.bootstrap, "{}", dir);
    st = kf_run_wait(&r, 200, TIMEOUT_MS);
    kf_run_stop(&r);
    kf_mock_cmd(&e->mock, "rtt 3 0");
    recs = kf_read(&e->mock, "out", PARTS, 2000, 1000, TIMEOUT_MS, &n);
    for (int i = 1800; i < 2000; i++) {
        snprintf(key, sizeof(key), "key-%d", i);
        twice += kf_count_key(recs, n, key) > 1;
    }
    print_message("%zu records downstream for 2000 keys; %zu of the 200 copies "
                  "forwarded again\n",
                  n, twice);
    free(recs);
    assert_int_equal(twice, 0);
    assert_int_equal(n, 2000);
    assert_int_equal(st.handover_keys, 2000);
    assert_int_equal(st.forwarded, 0);
    assert_int_equal(st.duplicates_completed, 200);
    assert_int_equal(st.collisions, 0);
}

/* dedup.ttl counts from when kdedup forwarded a key, not from the source
 * message's timestamp: messages stamped 30 h ago (ttl 24 h) forwarded by one
 * replica are learned by the next, whose store is empty, and their copies
 * are duplicates. */
void test_handover_ignores_event_time(void **state) {
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
void test_handover_waits_for_downstream(void **state) {
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
