/*
 * kdedup tests - power loss: the power-loss store's model, then the pipeline
 * crashed at each point of a turn, during a handover and during a forget,
 * and run again over what survived (run by test_crash.c).
 */
#include "tests/crash_fixture.h"

/*
 * Runs.
 */

#define RETRY_ONCE "{\"retries\": \"1\", \"retry.backoff.ms\": \"10\"}"

static bool crashed(tcase *t, uint64_t arg) {
    (void)arg;
    return kd_powerloss_crashed(t->store);
}

/* The restart after a power loss (t->store crashed, or not: then its
 * unsynced writes are lost now): t->store becomes what survived. */
static void power_back(tcase *t) {
    kd_store *survivor = kd_powerloss_new(t->store);

    assert_non_null(survivor); /* the model replays */
    kd_store_destroy(t->store);
    t->store = survivor;
}

/*
 * Input and the oracle.
 */

/*
 * The model itself.
 */

/* Claims key in d alone; returns the claim's error. */
static kd_err claim1(kd_dedup *d, const char *key) {
    kd_claim c = {.key = key, .key_len = strlen(key)};

    assert_int_equal(kd_dedup_claim_batch(d, &c, 1, 1000), KD_OK);
    kd_decision_clear(&c.decision);
    return c.err;
}

/* Completes key in d alone, lazily; returns its error. */
static kd_err complete1_lazy(kd_dedup *d, const char *key) {
    kd_completion c = {
        .key = key, .key_len = strlen(key), .receipt = "r", .receipt_len = 1};

    assert_int_equal(kd_dedup_complete_batch_lazy(d, &c, 1), KD_OK);
    return c.err;
}

/* key's state in namespace ns of what survives a power loss of s now: 0
 * absent, 1 in flight, 2 completed. */
static int survived_in(kd_store *s, const char *ns, const char *key) {
    kd_store *image = kd_powerloss_new(s);
    kd_dedup *d = kd_dedup_new(image, ns);
    kd_decision dec;
    bool found = false;
    int state;

    assert_int_equal(kd_dedup_lookup(d, key, strlen(key), &dec, &found), KD_OK);
    state = !found ? 0 : dec.state == KD_COMPLETED ? 2 : 1;
    kd_decision_clear(&dec);
    kd_dedup_destroy(d);
    kd_store_destroy(image);
    return state;
}

/* Synced writes survive; lazy ones only once a sync or a later synced
 * write (that wrote something) covered them; a failure applies nothing
 * and the store works on. */
void test_model_sync(void **state) {
    kd_store *s = kd_powerloss_new(NULL);
    kd_dedup *d = kd_dedup_new(s, "t");

    (void)state;
    assert_int_equal(claim1(d, "a"), KD_OK); /* synced */
    assert_int_equal(claim1(d, "b"), KD_OK);
    assert_int_equal(survived_in(s, "t", "a"), 1);
    assert_int_equal(complete1_lazy(d, "a"), KD_OK);
    assert_int_equal(kd_powerloss_pending(s), 1);
    assert_int_equal(survived_in(s, "t", "a"), 1); /* lazy: not yet */
    assert_int_equal(claim1(d, "a"),
                     KD_OK); /* completed: writes nothing, syncs nothing */
    assert_int_equal(survived_in(s, "t", "a"), 1);
    assert_int_equal(kd_store_sync(s), KD_OK);
    assert_int_equal(survived_in(s, "t", "a"), 2);
    assert_int_equal(kd_powerloss_count(s, KD_POWERLOSS_SYNC), 1);
    assert_int_equal(kd_store_sync(s), KD_OK); /* nothing pending: not counted */
    assert_int_equal(kd_powerloss_count(s, KD_POWERLOSS_SYNC), 1);
    assert_int_equal(complete1_lazy(d, "b"), KD_OK);
    assert_int_equal(claim1(d, "c"), KD_OK); /* a synced write covers b's receipt */
    assert_int_equal(survived_in(s, "t", "b"), 2);

    kd_powerloss_fail_at(s, KD_POWERLOSS_CLAIM, 1);
    assert_int_equal(claim1(d, "d"), KD_ERR_STORE);
    kd_powerloss_refuse(s, KD_POWERLOSS_ALL);
    assert_int_equal(claim1(d, "d"), KD_ERR_STORE);
    kd_powerloss_refuse(s, KD_POWERLOSS_BIT(KD_POWERLOSS_RECEIPT));
    assert_int_equal(complete1_lazy(d, "c"), KD_ERR_STORE);
    assert_int_equal(claim1(d, "d"), KD_OK);
    kd_powerloss_refuse(s, 0);
    assert_int_equal(complete1_lazy(d, "c"), KD_OK);
    assert_int_equal(kd_powerloss_count(s, KD_POWERLOSS_CLAIM), 4);
    assert_int_equal(kd_powerloss_count(s, KD_POWERLOSS_RECEIPT), 3);
    assert_false(kd_powerloss_crashed(s));
    kd_dedup_destroy(d);
    kd_store_destroy(s);
}

/* Claims e, f and g in d in one write; each sees err. */
static void claim3(kd_dedup *d, kd_err err) {
    kd_claim c[3] = {{.key = "e", .key_len = 1},
                     {.key = "f", .key_len = 1},
                     {.key = "g", .key_len = 1}};

    assert_int_equal(kd_dedup_claim_batch(d, c, 3, 1000), KD_OK);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(c[i].err, err);
        kd_decision_clear(&c[i].decision);
    }
}

/* A crash keeps a prefix of the writes no sync covered, whole writes
 * only, the one it falls in last; it fails every call after it; the store
 * made from it starts with what survived. */
void test_model_crash(void **state) {
    kd_store *s = kd_powerloss_new(NULL), *s2, *s3;
    kd_dedup *d = kd_dedup_new(s, "t");

    (void)state;
    assert_int_equal(claim1(d, "a"), KD_OK);
    assert_int_equal(complete1_lazy(d, "a"), KD_OK);
    kd_powerloss_crash_at(s, KD_POWERLOSS_CLAIM, 1, 1); /* a's receipt, not the claims */
    claim3(d, KD_ERR_STORE);                            /* the caller saw it fail */
    assert_true(kd_powerloss_wait_crash(s, 0));
    assert_int_equal(survived_in(s, "t", "a"), 2);
    assert_int_equal(survived_in(s, "t", "e"), 0); /* one write: all of it or none */
    assert_int_equal(survived_in(s, "t", "g"), 0);
    assert_int_equal(claim1(d, "h"), KD_ERR_STORE); /* dead */
    kd_dedup_destroy(d);

    assert_non_null(s2 = kd_powerloss_new(s));
    d = kd_dedup_new(s2, "t");
    kd_powerloss_crash_at(s2, KD_POWERLOSS_CLAIM, 1, SIZE_MAX); /* all reached the disk */
    claim3(d, KD_ERR_STORE);
    assert_int_equal(survived_in(s2, "t", "e"),
                     1); /* failed to the caller, durable all the same */
    assert_int_equal(survived_in(s2, "t", "g"), 1);
    kd_dedup_destroy(d);

    assert_non_null(s3 = kd_powerloss_new(s2));
    d = kd_dedup_new(s3, "t");
    assert_int_equal(complete1_lazy(d, "e"), KD_OK);
    assert_int_equal(complete1_lazy(d, "f"), KD_OK);
    assert_int_equal(complete1_lazy(d, "g"), KD_OK);
    kd_powerloss_crash_at(s3, KD_POWERLOSS_SYNC, 1, 2);
    assert_int_equal(kd_store_sync(s3), KD_ERR_STORE);
    assert_true(kd_powerloss_crashed(s3));
    assert_int_equal(survived_in(s3, "t", "e"), 2);
    assert_int_equal(survived_in(s3, "t", "f"), 2);
    assert_int_equal(survived_in(s3, "t", "g"), 1); /* past the prefix the log kept */
    kd_dedup_destroy(d);
    kd_store_destroy(s3);
    kd_store_destroy(s2);
    kd_store_destroy(s);
}

/*
 * Power loss at each point of a turn.
 */

/* Crashed, or every source message committed (what a run that counted
 * receipts durable before a sync covered them would reach). */
static bool crashed_or_committed(tcase *t, uint64_t arg) {
    return crashed(t, 0) || committed_to_end(t, arg);
}

/* Runs t until its store crashes at what is armed (or, with `or_commit`,
 * until everything is committed, which the crash must come before), stops
 * the run, restarts the power over what survived and checks the commits. */
static void crash_run(tcase *t, const char *dedup, bool or_commit, const char *when) {
    run_start(t, "{}", dedup, "300ms");
    wait_for(t, or_commit ? crashed_or_committed : crashed, t->nsent, when);
    kd_powerloss_crash(t->store); /* when it did not: the power goes now */
    run_stop(t);
    power_back(t);
    check_commits(t, t->store, false, when);
}

/* Runs t over what survived to the end: everything committed, none of it
 * unfinished, each of the nkeys keys downstream times[i] times (NULL:
 * once). */
static void finish_run(tcase *t, const char *dedup, int nkeys, const int *times) {
    run_start(t, "{}", dedup, "5s");
    wait_for(t, committed_to_end, t->nsent, "everything committed");
    run_stop(t);
    power_back(t);
    check_commits(t, t->store, true, "settled");
    check_downstream(t, nkeys, times);
}

/* One turn, crashed at each of its points in turn, with the handover off:
 * a restart knows only what its store kept. 1: the receipts written
 * lazily, the sync that covers them not reached (first, so no orphan's
 * synced completion covers them; a run that counts them durable without
 * the sync commits everything first, and then the power goes). 2: the
 * claims' write reached the log, its sync did not return (the claims
 * survive, nothing was produced). 3: the claims' write, its sync not
 * reached: lost. 4: the deliveries acknowledged, the receipts' write lost
 * (the restart finds the orphans downstream). Each restart runs over what
 * survived the crash before; at each crash the commits are at or below the
 * lowest unfinished message; at the end every key is downstream once and
 * everything is committed. */
void test_crash_at_each_point_of_a_turn(void **state) {
    tcase t;

    case_open(&t, *state, "turn", 2);
    send_keys(&t, 0, 10);
    kd_powerloss_crash_at(t.store, KD_POWERLOSS_SYNC, 1, 0);
    crash_run(&t, NO_HANDOVER, true, "crashed before the receipts' sync");
    send_keys(&t, 10, 20);
    kd_powerloss_crash_at(t.store, KD_POWERLOSS_CLAIM, 1, SIZE_MAX);
    crash_run(&t, NO_HANDOVER, false, "crashed in the claims' sync");
    send_keys(&t, 20, 30);
    kd_powerloss_crash_at(t.store, KD_POWERLOSS_CLAIM, 1, 0);
    crash_run(&t, NO_HANDOVER, false, "crashed before the claims' sync");
    kd_powerloss_crash_at(t.store, KD_POWERLOSS_RECEIPT, 1, 0);
    crash_run(&t, NO_HANDOVER, false, "crashed in the receipts' write");
    finish_run(&t, NO_HANDOVER, 30, NULL);
    case_close(&t);
}

/* A new owner with an empty store (another host) learns the partitions'
 * history from downstream before it consumes them, and crashes during
 * those writes: 1, the learned keys' claims not synced; 2, their
 * completions not synced (the claims survive). Each restart learns again;
 * the copies sent again are skipped, the new keys forwarded once. */
void test_crash_during_handover(void **state) {
    tcase t;

    case_open(&t, *state, "handover", 2);
    send_keys(&t, 0, 10);
    finish_run(&t, "{}", 10, NULL);
    for (int part = 0; part < 2; part++)
        t.handoff[part] = committed_at(&t, part);
    t.prior = t.store;
    assert_non_null(t.store = kd_powerloss_new(NULL)); /* the new owner's */

    send_keys(&t, 0, 20); /* 0-9 again: copies */
    kd_powerloss_crash_at(t.store, KD_POWERLOSS_CLAIM, 1, 0);
    crash_run(&t, "{}", false, "crashed in the handover's claims");
    kd_powerloss_crash_at(t.store, KD_POWERLOSS_RECEIPT, 1, 0);
    crash_run(&t, "{}", false, "crashed in the handover's completions");
    assert_true(survived_in(t.store, t.ns, "key-0") == 1 ||
                survived_in(t.store, t.ns, "key-1") == 1); /* the claims survived */
    finish_run(&t, "{}", 20, NULL);
    case_close(&t);
}

/* Forgets key in t's store as an operator does (DELETE /v1/keys). */
static kd_err forget(tcase *t, const char *key, kd_forget_result *res) {
    kd_dedup *d = kd_dedup_new(t->store, t->ns);
    kd_err err = kd_dedup_forget(d, key, strlen(key), false, NULL, NULL, res);

    kd_dedup_destroy(d);
    return err;
}

/* An operator's forget, crashed: 1, before its tombstone reached the log
 * (it failed; the key stays completed: a copy is skipped); 2, after it did
 * but before the answer (it failed, yet the key is forgotten: a copy is
 * forwarded); 3, it answered DONE and the power went at once (it holds: a
 * copy is forwarded). */
void test_crash_during_a_forget(void **state) {
    static const int times[] = {2, 3, 1};
    kd_forget_result res;
    tcase t;

    case_open(&t, *state, "forget", 1);
    send_keys(&t, 0, 3);
    finish_run(&t, NO_HANDOVER, 3, NULL);

    kd_powerloss_crash_at(t.store, KD_POWERLOSS_TOMBSTONE, 1, 0);
    assert_int_equal(forget(&t, "key-0", &res), KD_ERR_STORE);
    power_back(&t);
    send_keys(&t, 0, 1); /* skipped */
    kd_powerloss_crash_at(t.store, KD_POWERLOSS_TOMBSTONE, 1, SIZE_MAX);
    assert_int_equal(forget(&t, "key-1", &res), KD_ERR_STORE);
    power_back(&t);
    send_keys(&t, 1, 2); /* forwarded again */
    finish_run(&t, NO_HANDOVER, 3, (const int[]){1, 2, 1});

    assert_int_equal(forget(&t, "key-0", &res), KD_OK);
    assert_int_equal(res, KD_FORGET_DONE);
    assert_int_equal(forget(&t, "key-1", &res), KD_OK);
    assert_int_equal(res, KD_FORGET_DONE);
    kd_powerloss_crash(t.store);
    power_back(&t);
    send_keys(&t, 0, 2);
    finish_run(&t, NO_HANDOVER, 3, times);
    case_close(&t);
}
