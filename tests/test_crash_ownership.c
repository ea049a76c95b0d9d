/*
 * kdedup tests - the committed offsets read back from the broker after each
 * way a partition's ownership ends: a revoke, a lost assignment, a stop, a
 * reload's restart (run by test_crash.c).
 */
#include "tests/crash_fixture.h"

/*
 * Offsets at every ownership change.
 */

/* The committed offset of each of t's source partitions is `at[part]`. */
static void check_committed_at(tcase *t, const int64_t *at, const char *when) {
    for (int part = 0; part < t->nparts; part++) {
        int64_t c = committed_at(t, part);

        if (c != at[part])
            fail_msg("%s: %s/%d committed at %" PRId64 ", expected %" PRId64, when, t->in,
                     part, c, at[part]);
    }
}

static bool unassigned(tcase *t, uint64_t arg) {
    (void)arg;
    return stats(t).assigned_partitions == 0;
}

static bool assigned(tcase *t, uint64_t arg) {
    (void)arg;
    return stats(t).assigned_partitions > 0;
}

/* How a case ends an ownership; the run goes on (or runs again) after. */
typedef void (*change_fn)(tcase *t);

/* A rejoin. The mock cluster takes the revoke's own commit and refuses the
 * next one: librdkafka, as it unassigns, commits the offsets stored before
 * the store failed, which would put back whatever the revoke committed. */
static void change_revoke(tcase *t) {
    kf_mock_cmd(&t->e->mock, "commit-errors 1 0");
    kf_mock_cmd(&t->e->mock, "commit-errors 1 %d",
                RD_KAFKA_RESP_ERR_OFFSET_METADATA_TOO_LARGE);
    kd_pipeline_rejoin(t->run.p);
    wait_for(t, unassigned, 0, "the revoke");
}

/* The coordinator gone for longer than the session: the assignment is
 * lost, nothing committed; it comes back. */
static void change_lost(tcase *t) {
    kf_mock_cmd(&t->e->mock, "broker-down 3");
    wait_for(t, unassigned, 0, "the assignment lost");
    kf_mock_cmd(&t->e->mock, "broker-up 3");
}

static void change_stop(tcase *t) {
    kf_mock_cmd(&t->e->mock, "commit-errors 1 0");
    kf_mock_cmd(&t->e->mock, "commit-errors 1 %d",
                RD_KAFKA_RESP_ERR_OFFSET_METADATA_TOO_LARGE);
    run_stop(t);
    run_start(t, "{}", NO_HANDOVER, "300ms");
}

/* A reload that changes the routes: the run returns to restart, and a new
 * pipeline runs over the offered config. */
static void change_reload(tcase *t) {
    kd_config *next = config(t, "{}", NO_HANDOVER, "300ms");

    kd_pipeline_offer(t->run.p, next, true);
    run_join(t);
    assert_ptr_equal(kd_pipeline_restart_config(t->run.p), next);
    run_free(t);
    run_cfg(t, next);
}

/* 10 keys settled and committed; then the store refuses receipts, and 10
 * more are delivered but cannot finish (a store failing during the drain
 * of the change); the ownership changes. Committed after it: exactly the
 * end of the first 10, which is the lowest unfinished message. Then the
 * store takes writes again: every key once, everything committed. */
static void ownership_change(void **state, const char *name, change_fn change) {
    int64_t first_end[2];
    tcase t;

    case_open(&t, *state, name, 2);
    send_keys(&t, 0, 10);
    run_start(&t, "{}", NO_HANDOVER, "300ms");
    wait_for(&t, committed_to_end, 10, "the first keys committed");
    for (int part = 0; part < 2; part++)
        first_end[part] = committed_at(&t, part);
    assert_int_equal(first_end[0] + first_end[1], 10);

    kd_powerloss_refuse(t.store, KD_POWERLOSS_BIT(KD_POWERLOSS_RECEIPT));
    send_keys(&t, 10, 20);
    wait_for(&t, stuck, 10, "the next keys delivered, their receipts refused");
    change(&t);
    check_commits_now(&t, false, name);
    check_committed_at(&t, first_end, name);

    kd_powerloss_refuse(t.store, 0);
    wait_for(&t, assigned, 0, "the partitions assigned again");
    wait_for(&t, committed_to_end, t.nsent, "everything committed");
    run_stop(&t);
    check_commits_now(&t, true, "stopped");
    check_downstream(&t, 20, NULL);
    case_close(&t);
}

void test_offsets_after_a_revoke(void **state) {
    ownership_change(state, "revoke", change_revoke);
}

void test_offsets_after_a_lost_assignment(void **state) {
    ownership_change(state, "lost", change_lost);
}

void test_offsets_after_a_stop(void **state) {
    ownership_change(state, "stop", change_stop);
}

void test_offsets_after_a_reload_restart(void **state) {
    ownership_change(state, "reload", change_reload);
}
