/*
 * kdedup tests - limits set low, seen to act: pipeline.max_retrying pauses
 * consumption (the gauges say so) and it resumes once the retries drain;
 * and a partition whose handover is pending stays paused while flow control
 * pauses and resumes the others. Against librdkafka's mock cluster in a
 * `kdedup mock` process, like test_pipeline and test_bounds. Gauges are set
 * every 250 ms: each is waited for, never read right after the event.
 */
#include "sidecar/metrics.h"
#include "sidecar/pipeline_int.h" /* the consumer: resumed behind kdedup's back */
#include "sidecar/headers.h"
#include "sidecar/signing.h"
#include "tests/case_runner.h"
#include "tests/dedup_fixture.h"
#include "tests/faulty_store.h"
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

typedef kf_env env;

static int setup(void **state) {
    static const char *const topics[] = {"in:2", "out:2", NULL};
    env *e = kf_env_new(3, topics);

    kf_mock_cmd(&e->mock, "leader in 0 1");
    kf_mock_cmd(&e->mock, "leader in 1 1");
    kf_mock_cmd(&e->mock, "leader out 0 2");
    kf_mock_cmd(&e->mock, "leader out 1 1");
    kf_mock_cmd(&e->mock, "coordinator g 3");
    *state = e;
    return 0;
}

static int teardown(void **state) {
    kf_env_free(*state);
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

static bool consumed_reached(const kd_pipeline_stats *st, uint64_t n) {
    return st->consumed >= n;
}

static bool forwarded_reached(const kd_pipeline_stats *st, uint64_t n) {
    return st->forwarded >= n;
}

/* n messages held for their handover, or any forwarded (a hold missed) */
static bool early_reached(const kd_pipeline_stats *st, uint64_t n) {
    return st->handover_early >= n || st->forwarded;
}

static bool assigned_reached(const kd_pipeline_stats *st, uint64_t n) {
    return st->assigned_partitions >= n;
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

/* Two routes: in -> out (its partitions' handovers made to wait by the
 * test) and in2 -> out2 (whose deliveries drive flow control); %s: the
 * store's folder. pipeline.max_inflight 3: three messages in flight pause
 * consumption; it resumes once none is. */
#define TWO_ROUTES_CONFIG                                                                \
    "{\"kafka\": {\"brokers\": \"%s\", \"group_id\": \"g\", \"producer\": "              \
    "{\"message.timeout.ms\": \"60000\", \"reconnect.backoff.max.ms\": \"500\"},"        \
    " \"consumer\": {\"session.timeout.ms\": \"6000\", \"heartbeat.interval.ms\": "      \
    "\"500\", \"reconnect.backoff.max.ms\": \"500\"}},"                                  \
    " \"routes\": [{\"from\": \"in\", \"to\": \"out\", \"on_missing_key\": "             \
    "\"forward\"},"                                                                      \
    " {\"from\": \"in2\", \"to\": \"out2\", \"on_missing_key\": \"forward\"}],"          \
    " \"store\": {\"path\": \"%s/store\"}, \"pipeline\": {\"shutdown_grace\": \"2s\", "  \
    "\"max_inflight\": 3}}"

/* The store's reads of in's handover marks: failing, in's partitions' handovers
 * fail and wait (retried with a backoff of up to 30 s); in2's go on. */
#define IN_MARKS "kdedup:handover:in/"

/* A delivery of key from in/0, by an earlier run, on out/0 (unsigned). */
static void earlier_delivery(env *e, const char *key) {
    rd_kafka_t *rk = kf_producer(&e->mock);
    rd_kafka_headers_t *h = rd_kafka_headers_new(2);

    rd_kafka_header_add(h, "Idempotency-Key", -1, key, -1);
    rd_kafka_header_add(h, KD_SOURCE_HEADER, -1, "in/0/0", -1);
    assert_int_equal(
        rd_kafka_producev(rk, RD_KAFKA_V_TOPIC("out"), RD_KAFKA_V_PARTITION(0),
                          RD_KAFKA_V_VALUE("v", 1), RD_KAFKA_V_HEADERS(h),
                          RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END),
        RD_KAFKA_RESP_ERR_NO_ERROR);
    kf_producer_close(rk);
}

/* Sends prefix-from..to to in2 while out2's broker (2) is down, so that
 * pipeline.max_inflight (3) pauses consumption; waits until they are
 * consumed, `consumed` in all, and kdedup_backpressure says 1. */
static void backpressure_on(env *e, kf_run *r, kd_flow_gauges *g, const char *prefix,
                            uint64_t consumed) {
    kd_pipeline_stats st;

    kf_mock_cmd(&e->mock, "broker-down 2");
    kf_send_range(&e->mock, "in2", 0, prefix, 0, 3);
    st = stats_until(r, TIMEOUT_MS, consumed_reached, consumed);
    assert_int_equal(st.consumed, consumed);
    assert_int_equal(gauge_wait(&g->backpressure, 1, false), 1);
}

/* in/0 holds the copy of a key ("held") an earlier run delivered to out/0,
 * and five new keys, a-0 to a-4; in2 and out2 have a partition each (out2/0
 * alone on broker 2, the rest on broker 1). r starts over a faulty store
 * that fails the reads of in's handover marks, so that in's two handovers
 * fail and wait while in2's is done. Returns r's
 * kdedup_handover_pending_partitions gauge, once it says 2. */
static _Atomic uint64_t *start_with_in_pending(env *e, kf_run *r) {
    _Atomic uint64_t *pending;
    kd_pipeline_stats st;
    rd_kafka_t *rk;

    kf_mock_cmd(&e->mock, "topic in2 1");
    kf_mock_cmd(&e->mock, "topic out2 1");
    kf_mock_cmd(&e->mock, "leader in2 0 1");
    kf_mock_cmd(&e->mock, "leader out 0 1");
    kf_mock_cmd(&e->mock, "leader out2 0 2");
    earlier_delivery(e, "held");
    rk = kf_producer(&e->mock);
    kf_send(rk, "in", 0, "held", "the copy");
    kf_producer_close(rk);
    kf_send_range(&e->mock, "in", 0, "a", 0, 5);
    /* The coordinator down until the store fails the mark reads: the group
     * is joined, and the handovers begun, only after. */
    kf_mock_cmd(&e->mock, "broker-down 3");
    kf_run_start_faulty(r, &e->mock, TWO_ROUTES_CONFIG, e->mock.bootstrap, e->dir);
    assert_true(kd_faulty_store_fail_reads(r->store, IN_MARKS));
    kf_mock_cmd(&e->mock, "broker-up 3");
    pending = kd_metrics_handover_pending(kd_pipeline_metrics(r->p));
    st = stats_until(r, TIMEOUT_MS, assigned_reached, 3);
    assert_int_equal(st.assigned_partitions, 3);
    assert_int_equal(gauge_wait(pending, 2, false), 2); /* in/0, in/1; in2/0 done */
    return pending;
}

/* out holds the keys of start_with_in_pending once each: "held" (its
 * earlier delivery: the copy was a duplicate), and a-0 to a-4. */
static void check_in_keys_once(env *e) {
    kf_record *recs;
    size_t n;

    recs = kf_read(&e->mock, "out", 2, 6, 1000, TIMEOUT_MS, &n);
    assert_int_equal(n, 6);
    assert_int_equal(kf_count_key(recs, n, "held"), 1);
    check_once(recs, n, "a", 0, 5);
    free(recs);
}

/* A partition whose handover is pending stays paused whatever else resumes
 * consumption (issue 27: "a partition resumed while its handover is still
 * pending"). in/0 holds the copy of a key an earlier run delivered to
 * out/0, and five new keys; the store fails the reads of in's handover
 * marks, so in's handovers fail and wait, while in2's is done and in2 is
 * consumed.
 * 1. Backpressure from in2 (out2's broker down, max_inflight 3 in flight)
 *    pauses everything; out2 back, it ends and flow control resumes the
 *    partitions (kd_pl_flow_apply): in/0 and in/1 must stay paused, so
 *    nothing of in is consumed. Resumed, the copy would be claimed and
 *    forwarded before the handover learned the key: twice downstream.
 * 2. Backpressure again, and then in's handover is let through: it learns
 *    the key, but in/0 must stay paused while backpressure lasts (the
 *    handover resumes only what nothing else holds paused). Backpressure
 *    over, in is consumed: the copy a duplicate, each key once. */
static void test_pending_handover_keeps_its_partition_paused(void **state) {
    env *e = *state;
    _Atomic uint64_t *pending;
    kd_pipeline_stats st;
    kd_flow_gauges *g;
    kf_record *recs;
    size_t n;
    kf_run r;

    pending = start_with_in_pending(e, &r);
    g = kd_metrics_flow(kd_pipeline_metrics(r.p));
    assert_true(kd_faulty_store_reads_refused(r.store) >= 1);

    /* 1. */
    backpressure_on(e, &r, g, "b", 3);
    kf_mock_cmd(&e->mock, "broker-up 2");
    st = stats_until(&r, TIMEOUT_MS, forwarded_reached, 3);
    assert_int_equal(st.forwarded, 3);
    assert_int_equal(gauge_wait(&g->backpressure, 0, false), 0); /* resumed */
    st = stats_until(&r, 2000, consumed_past, 3);
    assert_int_equal(st.consumed, 3);
    assert_int_equal(atomic_load(pending), 2);

    /* 2. */
    backpressure_on(e, &r, g, "c", 6);
    assert_true(kd_faulty_store_fail_reads(r.store, NULL));
    for (int i = 0; i < TIMEOUT_MS / 20 && atomic_load(pending); i++)
        kf_sleep_ms(20); /* the next try comes within the 30 s backoff */
    assert_int_equal(atomic_load(pending), 0);
    st = stats_until(&r, 2000, consumed_past, 6);
    assert_int_equal(st.consumed, 6);
    assert_int_equal(st.handover_keys, 1);

    kf_mock_cmd(&e->mock, "broker-up 2");
    st = kf_run_wait(&r, 12, TIMEOUT_MS);
    assert_int_equal(st.consumed, 12);
    assert_int_equal(st.forwarded, 11);
    assert_int_equal(st.duplicates_completed, 1);
    kf_run_stop(&r);

    check_in_keys_once(e);
    recs = kf_read(&e->mock, "out2", 1, 6, 1000, TIMEOUT_MS, &n);
    assert_int_equal(n, 6);
    check_once(recs, n, "b", 0, 3);
    check_once(recs, n, "c", 0, 3);
    free(recs);
}

/* A message the consumer hands over while its partition is paused for its
 * handover waits, unclaimed, until the handover is done (issue 30: chaos
 * seed 101 in the transactional mode, where a replica claimed and forwarded
 * the first messages of a partition it was reading the history of: the
 * handover then found its own fresh claims and skipped 20 keys another
 * replica had forwarded, which went downstream twice). As there, in/0
 * holds the copy of a key an earlier run delivered to out/0, and five new
 * keys; in's handovers fail while the store refuses their marks. The
 * partitions are then resumed behind kdedup's back, as librdkafka did
 * there: what comes is held (kdedup_handover_early_total), nothing is
 * forwarded, and the partitions are paused again. Once the handover reads
 * out/0, the copy is a duplicate and each key is downstream once. */
static void test_consumed_during_its_handover_waits_for_it(void **state) {
    env *e = *state;
    rd_kafka_topic_partition_list_t *in;
    _Atomic uint64_t *pending;
    kd_pipeline_stats st;
    kf_run r;

    pending = start_with_in_pending(e, &r);

    in = rd_kafka_topic_partition_list_new(2);
    rd_kafka_topic_partition_list_add(in, "in", 0);
    rd_kafka_topic_partition_list_add(in, "in", 1);
    assert_int_equal(rd_kafka_resume_partitions(r.p->consumer, in), 0);
    rd_kafka_topic_partition_list_destroy(in);
    /* some or all six: the hold pauses the partitions again */
    st = stats_until(&r, TIMEOUT_MS, early_reached, 1);
    assert_int_equal(st.forwarded, 0);
    assert_true(st.handover_early >= 1);
    assert_int_equal(st.handover_early, st.consumed);
    assert_int_equal(atomic_load(pending), 2);

    assert_true(kd_faulty_store_fail_reads(r.store, NULL));
    st = kf_run_wait(&r, 6, TIMEOUT_MS); /* the next try within the 30 s backoff */
    assert_int_equal(atomic_load(pending), 0);
    assert_int_equal(st.forwarded, 5);
    assert_int_equal(st.duplicates_completed, 1);
    kf_run_stop(&r);
    check_in_keys_once(e);
}

/* True when *st shows a message settled (inflight under consumed). */
static bool settled_any(const kd_pipeline_stats *st, uint64_t unused) {
    (void)unused;
    return st->inflight < st->consumed;
}

/* The records of out/0 came in the order of their sources in in/0 (their
 * kdedup-source headers, "in/0/<offset>"): one source partition keeps its
 * order. Returns how many there are. */
static size_t check_source_order(const kf_record *recs, size_t n) {
    long long last = -1, off;
    size_t got = 0;

    for (size_t i = 0; i < n; i++) {
        if (recs[i].partition != 0)
            continue;
        assert_int_equal(sscanf(recs[i].source, "in/0/%lld", &off), 1);
        if (off <= last)
            fail_msg("out/0@%lld (%s, from in/0/%lld) after in/0/%lld: out of order",
                     (long long)recs[i].offset, recs[i].trace, off, last);
        last = off;
        got++;
    }
    return got;
}

/* Messages held for their partition's handover leave in their order, before
 * what the partition brings after it (issue 30's hold, hunted from
 * outside). in/0 holds k-0, a message without a key (forwarded without
 * dedup: on_missing_key forward) and k-2, produced together; in's
 * handovers fail, the partitions are resumed behind kdedup's back and all
 * three are held: the keyless one too (before, it was forwarded at once,
 * ahead of k-0: nothing may settle while the handover is pending). k-3..5
 * are then sent, and the handover let through: the held three go first,
 * the same turn the partition resumes (before, they waited for their next
 * 20 ms poll, and k-3..5, fetched on the resume, could go out before them).
 * out/0 holds all six in the source's order. */
static void test_held_for_its_handover_keeps_order(void **state) {
    env *e = *state;
    rd_kafka_topic_partition_list_t *in;
    _Atomic uint64_t *pending;
    kd_pipeline_stats st;
    kf_record *recs;
    size_t n;
    kf_run r;

    kf_mock_cmd(&e->mock, "topic in2 1");
    kf_mock_cmd(&e->mock, "topic out2 1");
    kf_mock_cmd(&e->mock, "leader in2 0 1");
    kf_mock_cmd(&e->mock, "leader out2 0 1");
    {
        rd_kafka_t *rk = kf_producer(&e->mock); /* one batch: fetched together */

        kf_send(rk, "in", 0, "k-0", "k-0");
        kf_send(rk, "in", 0, NULL, "keyless-1");
        kf_send(rk, "in", 0, "k-2", "k-2");
        kf_producer_close(rk);
    }
    kf_mock_cmd(&e->mock, "broker-down 3"); /* joined once the marks fail: */
    kf_run_start_faulty(&r, &e->mock, TWO_ROUTES_CONFIG, e->mock.bootstrap, e->dir);
    assert_true(kd_faulty_store_fail_reads(r.store, IN_MARKS));
    kf_mock_cmd(&e->mock, "broker-up 3");
    pending = kd_metrics_handover_pending(kd_pipeline_metrics(r.p));
    st = stats_until(&r, TIMEOUT_MS, assigned_reached, 3);
    assert_int_equal(st.assigned_partitions, 3);
    assert_int_equal(gauge_wait(pending, 2, false), 2); /* in/0, in/1 */

    in = rd_kafka_topic_partition_list_new(2);
    rd_kafka_topic_partition_list_add(in, "in", 0);
    rd_kafka_topic_partition_list_add(in, "in", 1);
    assert_int_equal(rd_kafka_resume_partitions(r.p->consumer, in), 0);
    rd_kafka_topic_partition_list_destroy(in);
    st = stats_until(&r, TIMEOUT_MS, consumed_reached, 3);
    assert_int_equal(st.consumed, 3);
    /* nothing settles while the handover is pending (2 s to show it) */
    st = stats_until(&r, 2000, settled_any, 0);
    assert_int_equal(st.inflight, 3);
    assert_int_equal(st.handover_early, 3);
    assert_int_equal(atomic_load(pending), 2);

    kf_send_range(&e->mock, "in", 0, "k", 3, 6); /* paused again: not fetched */
    assert_true(kd_faulty_store_fail_reads(r.store, NULL));
    st = kf_run_wait(&r, 6, TIMEOUT_MS); /* the next try within the 30 s backoff */
    assert_int_equal(atomic_load(pending), 0);
    assert_int_equal(st.consumed, 6);
    assert_int_equal(st.forwarded, 5);
    assert_int_equal(st.missing_forwarded, 1);
    kf_run_stop(&r);
    recs = kf_read(&e->mock, "out", 2, 6, 1000, TIMEOUT_MS, &n);
    assert_int_equal(check_source_order(recs, n), 6);
    assert_int_equal(n, 6);
    free(recs);
}

/* A rebalance event served after the consumer's group handler ended. At a
 * stop, librdkafka 2.0.2 queues the close's revoke behind an assignment the
 * loop has not served yet; served first (on the close's queue), that
 * assignment is taken as an unassign, the group is left, and it may end
 * before the revoke is served: rd_kafka_rebalance_protocol() then says
 * NULL (chaos seed 101 in the transactional mode, 2026-12-07: replica c
 * logged "assigned 1 partition(s)" while stopping, then died of SIGSEGV in
 * the revoke's strcmp). Here the pipeline runs until it forwarded, stops
 * (the close ends the group), and is handed that assignment and that
 * revoke as librdkafka would hand them: nothing may crash, the revoke ends
 * the ownerships. */
static void test_rebalance_after_the_group_ended(void **state) {
    env *e = *state;
    rd_kafka_topic_partition_list_t *parts;
    kd_pipeline_stats st;
    kf_run r;

    kf_run_start(&r, &e->mock, LIMITS_CONFIG, e->mock.bootstrap, "5000", "1s", e->dir,
                 "\"delivery\": \"transactional\", \"transactional_id\": \"kd-test\"");
    kf_send_range(&e->mock, "in", 0, "a", 0, 5);
    st = kf_run_wait(&r, 5, TIMEOUT_MS);
    assert_int_equal(st.forwarded, 5);
    kd_pipeline_stop(r.p);
    pthread_join(r.tid, NULL);
    assert_int_equal(r.rc, 0);
    assert_true(rd_kafka_consumer_closed(r.p->consumer));
    assert_null(rd_kafka_rebalance_protocol(r.p->consumer)); /* the group ended */

    parts = rd_kafka_topic_partition_list_new(2);
    rd_kafka_topic_partition_list_add(parts, "in", 0);
    rd_kafka_topic_partition_list_add(parts, "in", 1);
    kd_pl_rebalance_cb(r.p->consumer, RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS, parts, r.p);
    kd_pl_rebalance_cb(r.p->consumer, RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS, parts, r.p);
    rd_kafka_topic_partition_list_destroy(parts);
    kd_pipeline_stats_get(r.p, &st);
    assert_int_equal(st.assigned_partitions, 0);

    kd_pipeline_destroy(r.p);
    kd_store_destroy(r.store);
    kd_config_destroy(r.cfg);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_max_retrying_pauses_and_resumes, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_consumed_during_its_handover_waits_for_it,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_pending_handover_keeps_its_partition_paused,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_held_for_its_handover_keeps_order, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_rebalance_after_the_group_ended, setup,
                                        teardown),
    };

    return cr_run_group("limits (mock cluster)", tests, sizeof(tests) / sizeof(tests[0]));
}
