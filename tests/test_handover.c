/*
 * kdedup tests - what a handover must not learn back: a key an operator
 * forgot (DELETE /v1/keys) after its delivery was forwarded. Against
 * librdkafka's mock cluster in a `kdedup mock` process, like test_pipeline:
 * two runs over one RocksDB store, the key forgotten between them.
 */
#include "dedup/dedup.h"
#include "store_rocks/store_rocks.h"
#include "tests/dedup_fixture.h"
#include "tests/kafka_fixture.h"

#include <stdarg.h>
#include <setjmp.h>
#include <stddef.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define TIMEOUT_MS 60000
#define CONFIG                                                                           \
    "{\"kafka\": {\"brokers\": \"%s\", \"group_id\": \"g\","                             \
    " \"consumer\": {\"session.timeout.ms\": \"6000\", \"heartbeat.interval.ms\": "      \
    "\"500\"}},"                                                                         \
    " \"routes\": [{\"from\": \"in\", \"to\": \"out\", \"on_missing_key\": "             \
    "\"forward\"}],"                                                                     \
    " \"store\": {\"path\": \"%s/store\"}, \"pipeline\": {\"shutdown_grace\": \"2s\"}}"
/* A forget counts against a delivery forwarded more than this before it
 * (pipeline_handover.c's FORGET_SLACK_MS, and a margin). */
#define FORGET_SLACK_MS 1100

typedef struct env {
    kf_mock mock;
    char dir[256];
} env;

static int setup(void **state) {
    static const char *const topics[] = {"in:1", "out:1", NULL};
    env *e = calloc(1, sizeof(*e));

    kf_mock_start(&e->mock, 1, topics);
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

static int64_t wall_ms(void) {
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void send_one(env *e, const char *key, const char *value) {
    rd_kafka_t *rk = kf_producer(&e->mock);

    kf_send(rk, "in", 0, key, value);
    kf_producer_close(rk);
}

/* Forgets key in the store of dir, as DELETE /v1/keys does (route "in",
 * namespace "kdedup"), once the delivery forwarded at at_ms is older than
 * the handover's slack. */
static void forget(env *e, const char *key, int64_t at_ms) {
    char path[512], err[512];
    kd_forget_result res;
    kd_store *store;
    kd_dedup *d;
    int64_t wait = at_ms + FORGET_SLACK_MS - wall_ms();

    if (wait > 0) /* a clock condition, not an event: the slack, once */
        nanosleep(&(struct timespec){wait / 1000, (long)(wait % 1000) * 1000000}, NULL);
    snprintf(path, sizeof(path), "%s/store", e->dir);
    if (!(store = kd_rocks_open(path, true, err, sizeof(err))))
        fail_msg("%s", err);
    assert_non_null(d = kd_dedup_new(store, "kdedup:in"));
    assert_int_equal(kd_dedup_forget(d, key, strlen(key), false, NULL, NULL, &res),
                     KD_OK);
    assert_int_equal(res, KD_FORGET_DONE);
    kd_dedup_destroy(d);
    kd_store_destroy(store);
}

/* A run forwards "gone"; the operator forgets it; the next run's handover
 * reads that delivery downstream (its mark is before it) and must not
 * learn the key back: the copy sent after the forget is forwarded, as the
 * operator asked. Learned back, the copy would be dropped as a duplicate. */
static void test_handover_does_not_learn_back_a_forgotten_key(void **state) {
    env *e = *state;
    kd_pipeline_stats st;
    kf_record *recs;
    size_t n;
    kf_run r;

    kf_run_start(&r, &e->mock, CONFIG, e->mock.bootstrap, e->dir);
    send_one(e, "gone", "first");
    st = kf_run_wait(&r, 1, TIMEOUT_MS);
    assert_int_equal(st.forwarded, 1);
    kf_run_stop(&r);
    assert_int_equal(kf_committed(&e->mock, "g", "in", 0), 1);
    recs = kf_read(&e->mock, "out", 1, 1, 500, TIMEOUT_MS, &n);
    assert_int_equal(n, 1);
    forget(e, "gone", atoll(recs[0].forwarded_at));
    free(recs);

    send_one(e, "gone", "again");
    kf_run_start(&r, &e->mock, CONFIG, e->mock.bootstrap, e->dir);
    st = kf_run_wait(&r, 1, TIMEOUT_MS);
    kf_run_stop(&r);
    assert_int_equal(st.handover_keys, 0);
    assert_int_equal(st.duplicates_completed, 0);
    assert_int_equal(st.forwarded, 1);
    recs = kf_read(&e->mock, "out", 1, 2, 500, TIMEOUT_MS, &n);
    assert_int_equal(n, 2);
    assert_int_equal(kf_count_key(recs, n, "gone"), 2);
    free(recs);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_handover_does_not_learn_back_a_forgotten_key,
                                        setup, teardown),
    };

    if (getenv("KD_TEST_FILTER"))
        cmocka_set_test_filter(getenv("KD_TEST_FILTER"));
    return cmocka_run_group_tests_name("handover (mock cluster)", tests, NULL, NULL);
}
