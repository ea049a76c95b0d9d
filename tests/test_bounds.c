/*
 * kdedup tests - the bounds of what kdedup holds in memory, and a loop that
 * keeps turning: recovery scans read in steps within dedup.scan_cache_bytes,
 * backpressure while deliveries cannot land, and a partition held back
 * alone behind a message that never can. Against librdkafka's mock cluster
 * in a `kdedup mock` process, like test_pipeline.
 */
#include "dedup/dedup.h"
#include "sidecar/metrics.h"
#include "sidecar/recovery.h"
#include "store_rocks/store_rocks.h"
#include "tests/case_runner.h"
#include "tests/dedup_fixture.h"
#include "tests/faulty_store.h"
#include "tests/kafka_fixture.h"

#include <stdarg.h>
#include <setjmp.h>
#include <stddef.h>
#include <cmocka.h>

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define TIMEOUT_MS 60000
#define CACHE_BYTES (1 << 20)
/* The key table of a scan of n records: 40-byte slots, at most 3/4 full. */
#define TABLE_BYTES(n) (((n) / 3 * 4 + 4) * 40)

typedef struct env {
    kf_mock mock;
    char dir[256];
} env;

static int setup(void **state) {
    static const char *const topics[] = {"in:2", "out:3", NULL};
    env *e = calloc(1, sizeof(*e));

    kf_mock_start(&e->mock, 2, topics);
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

static void sleep_ms(int ms) {
    nanosleep(&(struct timespec){ms / 1000, (long)(ms % 1000) * 1000000}, NULL);
}

/* What a dead run put on out/partition: n records keyed prefix-i from
 * in/partition/i, each with `extra` empty headers besides. */
static void deliveries_headed(rd_kafka_t *rk, int32_t partition, const char *prefix,
                              int n, int extra) {
    char key[32], source[32];

    for (int i = 0; i < n; i++) {
        rd_kafka_headers_t *h = rd_kafka_headers_new((size_t)extra + 2);
        rd_kafka_resp_err_t err;

        snprintf(key, sizeof(key), "%s-%d", prefix, i);
        snprintf(source, sizeof(source), "in/%" PRId32 "/%d", partition, i);
        rd_kafka_header_add(h, "Idempotency-Key", -1, key, -1);
        rd_kafka_header_add(h, "kdedup-source", -1, source, -1);
        for (int j = 0; j < extra; j++)
            rd_kafka_header_add(h, "h", 1, "", 0);
        while ((err = rd_kafka_producev(rk, RD_KAFKA_V_TOPIC("out"),
                                        RD_KAFKA_V_PARTITION(partition),
                                        RD_KAFKA_V_VALUE("v", 1), RD_KAFKA_V_HEADERS(h),
                                        RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                                        RD_KAFKA_V_END)) == RD_KAFKA_RESP_ERR__QUEUE_FULL)
            rd_kafka_poll(rk, 10);
        assert_int_equal(err, RD_KAFKA_RESP_ERR_NO_ERROR);
    }
}

static void deliveries(rd_kafka_t *rk, int32_t partition, const char *prefix, int n) {
    deliveries_headed(rk, partition, prefix, n, 0);
}

/* Asks for key in (0xbeef, out/partition) a step at a time (1 ms a turn);
 * returns the answer, counting the steps that said "later" in *laters. */
static kd_recover_result find_stepwise(kd_recovery *rc, int32_t partition,
                                       const char *key, kd_recover_found *f,
                                       int *laters) {
    kd_recover_result res = KD_RECOVER_LATER;

    for (*laters = 0; res == KD_RECOVER_LATER && *laters < 100000; ++*laters) {
        kd_recovery_begin_turn(rc, 1);
        res = kd_recovery_find(rc, 0xbeef, 0, partition, key, strlen(key), 0, f);
    }
    --*laters;
    return res;
}

static uint64_t cache_bytes(const kd_recovery *rc) {
    kd_recovery_stats st;

    kd_recovery_stats_get(rc, &st);
    return st.cache_bytes;
}

typedef struct history_count {
    size_t records;
    int64_t last_offset;
    size_t batches, largest; /* batches passed, and the most records in one */
} history_count;

static bool count_history(void *arg, const kd_history_rec *recs, size_t n) {
    history_count *h = arg;

    h->batches++;
    if (n > h->largest)
        h->largest = n;
    for (size_t i = 0; i < n; i++) {
        assert_true(recs[i].offset > h->last_offset); /* in order, never twice */
        h->last_offset = recs[i].offset;
    }
    h->records += n;
    return true;
}

/* A recovery over out (route in -> out), its store holding dead run
 * 0xbeef's record `run`; dedup.scan_cache_bytes cache_bytes (0: default). */
static void recovery_open(env *e, const char *run, int cache_bytes, kd_config **cfg,
                          kd_store **store, kd_recovery **rc) {
    char json[1024], err[512], path[512], stream[32], cache[64] = "";

    if (cache_bytes)
        snprintf(cache, sizeof(cache), " \"dedup\": {\"scan_cache_bytes\": %d},",
                 cache_bytes);
    snprintf(json, sizeof(json),
             "{\"kafka\": {\"brokers\": \"%s\", \"group_id\": \"g\"},"
             " \"routes\": [{\"from\": \"in\", \"to\": \"out\", \"on_missing_key\": "
             "\"forward\"}],%s \"store\": {\"path\": \"%s/store\"}}",
             e->mock.bootstrap, cache, e->dir);
    if (!(*cfg = kd_config_parse(json, strlen(json), "test.json", err, sizeof(err))))
        fail_msg("%s", err);
    snprintf(path, sizeof(path), "%s/store", e->dir);
    if (!(*store = kd_rocks_open(path, true, err, sizeof(err))))
        fail_msg("%s", err);
    assert_int_equal(
        kd_store_append(*store, stream,
                        kd_recovery_run_stream(0xbeef, stream, sizeof(stream)), 0, run,
                        strlen(run)),
        KD_OK);
    if (!(*rc = kd_recovery_new(*cfg, *store, e->mock.bootstrap, err, sizeof(err))))
        fail_msg("%s", err);
}

/* Scans of a dead run read in steps, and their key tables stay within
 * dedup.scan_cache_bytes together: the least recently used is dropped (and
 * made again when asked for), a scan too large for the budget is not made. */
static void test_scans_step_within_the_cache_budget(void **state) {
    env *e = *state;
    const char *run = "kdedup-run v1\n0 0 out\n1 0 out\n2 0 out\n";
    rd_kafka_t *rk = kf_producer(&e->mock);
    kd_recover_found f = {0};
    kd_history_cursor cur = {0};
    history_count hc = {.last_offset = -1};
    kd_history_result hres;
    kd_recovery *rc;
    kd_config *cfg;
    kd_store *store;
    int laters, mores = 0;

    deliveries(rk, 0, "a", 15000);
    deliveries(rk, 1, "b", 15000);
    deliveries(rk, 2, "c", 30000);
    kf_producer_close(rk);
    recovery_open(e, run, CACHE_BYTES, &cfg, &store, &rc);

    /* 1 ms a turn: many steps, then the answer */
    assert_int_equal(find_stepwise(rc, 0, "a-7", &f, &laters), KD_RECOVER_FOUND);
    assert_int_equal(f.offset, 7);
    assert_true(laters >= 3);
    assert_int_equal(cache_bytes(rc), TABLE_BYTES(15000));
    /* the next scan does not fit beside it: the first goes */
    assert_int_equal(find_stepwise(rc, 1, "b-9", &f, &laters), KD_RECOVER_FOUND);
    assert_int_equal(f.offset, 9);
    assert_int_equal(cache_bytes(rc), TABLE_BYTES(15000));
    /* asked for again, it is made again */
    assert_int_equal(find_stepwise(rc, 0, "a-14999", &f, &laters), KD_RECOVER_FOUND);
    assert_int_equal(f.offset, 14999);
    assert_true(laters >= 3);
    assert_int_equal(find_stepwise(rc, 0, "a-15000", &f, &laters), KD_RECOVER_ABSENT);
    assert_int_equal(laters, 0); /* from the table */
    assert_int_equal(cache_bytes(rc), TABLE_BYTES(15000));
    /* a table larger than the whole budget is never made */
    assert_true(TABLE_BYTES(30000) > CACHE_BYTES);
    assert_int_equal(find_stepwise(rc, 2, "c-1", &f, &laters), KD_RECOVER_UNKNOWN);
    assert_true(cache_bytes(rc) <= CACHE_BYTES);

    /* this run's uncertain deliveries keep nothing: each key is compared
     * whole, from where it could have landed */
    kd_recover_ask asks[] = {
        {.key = "a-5", .key_len = 3, .from = 0},
        {.key = "a-5", .key_len = 3, .from = 6}, /* landed before: not this delivery */
        {.key = "a-50", .key_len = 4, .from = 40},
        {.key = "nope", .key_len = 4, .from = 0},
    };
    uint64_t before = cache_bytes(rc);
    kd_recovery_begin_turn(rc, 0);
    kd_recovery_find_since_many(rc, 0, 0, asks, 4);
    assert_int_equal(asks[0].result, KD_RECOVER_FOUND);
    assert_int_equal(asks[0].found.offset, 5);
    assert_int_equal(asks[1].result, KD_RECOVER_ABSENT);
    assert_int_equal(asks[2].result, KD_RECOVER_FOUND);
    assert_int_equal(asks[2].found.offset, 50);
    assert_int_equal(asks[3].result, KD_RECOVER_ABSENT);
    assert_int_equal(cache_bytes(rc), before);

    /* ...and read in steps too: LATER, from moved on, until the answer */
    kd_recover_ask late[] = {
        {.key = "a-14990", .key_len = 7, .from = 0},
        {.key = "nope", .key_len = 4, .from = 0},
    };
    int steps = 0;
    int64_t last_from = 0;
    do {
        kd_recovery_begin_turn(rc, 1);
        kd_recovery_find_since_many(rc, 0, 0, late, 2);
        if (late[1].result == KD_RECOVER_LATER) {
            assert_true(late[1].from >= last_from); /* never back */
            last_from = late[1].from;
        }
    } while (late[1].result == KD_RECOVER_LATER && ++steps < 10000);
    assert_true(steps >= 3);
    assert_int_equal(late[0].result, KD_RECOVER_FOUND);
    assert_int_equal(late[0].found.offset, 14990);
    assert_int_equal(late[1].result, KD_RECOVER_ABSENT);
    assert_int_equal(cache_bytes(rc), before);

    /* a handover reads in steps too, every record once */
    do {
        kd_recovery_begin_turn(rc, 1);
        hres = kd_recovery_history(rc, 0, 1, 1, 100, count_history, &hc, &cur);
        mores += hres == KD_HISTORY_MORE;
    } while (hres == KD_HISTORY_MORE && mores < 100000);
    assert_int_equal(hres, KD_HISTORY_DONE);
    assert_true(mores >= 3);
    assert_int_equal(hc.records, 15000);
    assert_int_equal(hc.last_offset, 14999);

    kd_recovery_destroy(rc);
    kd_store_destroy(store);
    kd_config_destroy(cfg);
}

/* Two orphans of one dead run on two downstream partitions whose tables
 * each fit dedup.scan_cache_bytes but not together, asked in turn: the
 * second waits for the first to complete (it once evicted the first's
 * half-read table, and the first the second's, forever). (From a review.) */
static void test_scans_that_do_not_fit_together_take_turns(void **state) {
    env *e = *state;
    const char *run = "kdedup-run v1\n0 0 out\n1 0 out\n2 0 out\n";
    rd_kafka_t *rk = kf_producer(&e->mock);
    kd_recover_found f = {0};
    kd_recovery *rc;
    kd_config *cfg;
    kd_store *store;
    kd_recover_result ra = KD_RECOVER_LATER, rb = KD_RECOVER_LATER;
    int turns;

    deliveries(rk, 0, "a", 15000);
    deliveries(rk, 1, "b", 15000);
    kf_producer_close(rk);
    recovery_open(e, run, CACHE_BYTES, &cfg, &store, &rc);
    time_t t_end = time(NULL) + 60;
    for (turns = 0;
         time(NULL) < t_end && (ra == KD_RECOVER_LATER || rb == KD_RECOVER_LATER);
         turns++) {
        kd_recovery_begin_turn(rc, 5);
        if (ra == KD_RECOVER_LATER)
            ra = kd_recovery_find(rc, 0xbeef, 0, 0, "a-7", 3, 0, &f);
        if (rb == KD_RECOVER_LATER)
            rb = kd_recovery_find(rc, 0xbeef, 0, 1, "b-7", 3, 0, &f);
    }
    assert_int_equal(ra, KD_RECOVER_FOUND);
    assert_int_equal(rb, KD_RECOVER_FOUND);
    kd_recovery_destroy(rc);
    kd_store_destroy(store);
    kd_config_destroy(cfg);
}

/* A dead run's scan paused part-way on out/0 leaves the scanner there; a
 * handover of the same downstream partition then reads it from further
 * back, interleaved with the scan's steps: every record, once. (From a
 * review.) */
static void test_handover_beside_a_paused_scan(void **state) {
    env *e = *state;
    const char *run = "kdedup-run v1\n0 0 out\n1 0 out\n2 0 out\n";
    rd_kafka_t *rk = kf_producer(&e->mock);
    kd_recover_found f = {0};
    kd_history_cursor cur = {0};
    history_count hc = {.last_offset = -1};
    kd_history_result hres = KD_HISTORY_MORE;
    kd_recover_result ra = KD_RECOVER_LATER;
    kd_recovery *rc;
    kd_config *cfg;
    kd_store *store;
    int turns = 0;

    deliveries(rk, 0, "a", 15000);
    kf_producer_close(rk);
    recovery_open(e, run, CACHE_BYTES, &cfg, &store, &rc);
    /* the scan a few steps in */
    for (int i = 0; i < 4 && ra == KD_RECOVER_LATER; i++) {
        kd_recovery_begin_turn(rc, 3);
        ra = kd_recovery_find(rc, 0xbeef, 0, 0, "a-7", 3, 0, &f);
    }
    do {
        kd_recovery_begin_turn(rc, 3);
        hres = kd_recovery_history(rc, 0, 0, 0, 100, count_history, &hc, &cur);
        if (ra == KD_RECOVER_LATER)
            ra = kd_recovery_find(rc, 0xbeef, 0, 0, "a-7", 3, 0, &f);
        kd_recovery_begin_turn(rc, 3);
        if (ra == KD_RECOVER_LATER)
            ra = kd_recovery_find(rc, 0xbeef, 0, 0, "a-7", 3, 0, &f);
    } while (hres == KD_HISTORY_MORE && ++turns < 100000);
    assert_int_equal(hres, KD_HISTORY_DONE);
    assert_int_equal(hc.records, 15000);
    kd_recovery_destroy(rc);
    kd_store_destroy(store);
    kd_config_destroy(cfg);
}

/* A handover keeps a batch's records alive while their keys are written:
 * records of 5,000 empty headers (15 KB on the wire, some 480 KB once
 * parsed) come in batches of at most 4 MiB of what they hold, not of the
 * 1,000 records asked for. (From a review: 200 such records read back held
 * 390 MiB.) */
static void test_handover_batches_within_their_bytes(void **state) {
    env *e = *state;
    const char *run = "kdedup-run v1\n0 0 out\n1 0 out\n2 0 out\n";
    rd_kafka_t *rk = kf_producer(&e->mock);
    kd_history_cursor cur = {0};
    history_count hc = {.last_offset = -1};
    kd_history_result hres;
    kd_recovery *rc;
    kd_config *cfg;
    kd_store *store;
    size_t each = 5000 * (1 + 96); /* the headers alone, as headers.h counts them */

    deliveries_headed(rk, 0, "a", 60, 5000);
    kf_producer_close(rk);
    recovery_open(e, run, 0, &cfg, &store, &rc);
    kd_recovery_begin_turn(rc, 0);
    hres = kd_recovery_history(rc, 0, 0, 0, 1000, count_history, &hc, &cur);
    assert_int_equal(hres, KD_HISTORY_DONE);
    assert_int_equal(hc.records, 60);
    assert_int_equal(hc.last_offset, 59);
    assert_true(hc.largest <= (4u << 20) / each + 1);
    assert_true(hc.batches >= 60 / ((4u << 20) / each + 1));
    kd_recovery_destroy(rc);
    kd_store_destroy(store);
    kd_config_destroy(cfg);
}

/* One route without a dead-letter topic, at most 50 messages in flight. */
#define BOUNDED_CONFIG                                                                   \
    "{\"kafka\": {\"brokers\": \"%s\", \"group_id\": \"g\", \"producer\": %s,"           \
    " \"consumer\": {\"session.timeout.ms\": \"6000\", \"heartbeat.interval.ms\": "      \
    "\"500\"}},"                                                                         \
    " \"routes\": [{\"from\": \"in\", \"to\": \"out\", \"on_missing_key\": \"forward\"," \
    " \"max_retries\": 0, \"retry_backoff\": \"100ms\"}],"                               \
    " \"store\": {\"path\": \"%s/store\"}, \"pipeline\": {\"shutdown_grace\": \"2s\","   \
    " \"batch_max\": 10, \"max_inflight\": 50}}"

static void send_range(env *e, int32_t partition, const char *prefix, int from, int to) {
    rd_kafka_t *rk = kf_producer(&e->mock);
    char key[32];

    for (int i = from; i < to; i++) {
        snprintf(key, sizeof(key), "%s-%d", prefix, i);
        kf_send(rk, "in", partition, key, key);
    }
    kf_producer_close(rk);
}

static uint64_t gauge(kf_run *r, size_t at) {
    kd_flow_gauges *g = kd_metrics_flow(kd_pipeline_metrics(r->p));

    return atomic_load((_Atomic uint64_t *)((char *)g + at));
}

/* The gauge at `at` once it is at least min (or after TIMEOUT_MS). The flow
 * gauges are set every 250 ms: read the moment after an event, they may not
 * show it yet. */
static uint64_t gauge_reaches(kf_run *r, size_t at, uint64_t min) {
    uint64_t v = 0;

    for (int i = 0; i < TIMEOUT_MS / 20 && (v = gauge(r, at)) < min; i++)
        sleep_ms(20);
    return v;
}

/* Downstream unreachable: consumption stops at pipeline.max_inflight (plus
 * one poll batch), /readyz says why; once it is back, everything lands
 * exactly once. */
static void test_backpressure_pauses_and_resumes(void **state) {
    env *e = *state;
    kd_pipeline_stats st;
    char reason[512];
    kf_record *recs;
    size_t n;
    kf_run r;

    kf_mock_cmd(&e->mock, "leader out 0 2");
    kf_mock_cmd(&e->mock, "leader out 1 2");
    kf_mock_cmd(&e->mock, "leader in 0 1");
    kf_mock_cmd(&e->mock, "leader in 1 1");
    kf_run_start(&r, &e->mock, BOUNDED_CONFIG, e->mock.bootstrap,
                 "{\"message.timeout.ms\": \"60000\"}", e->dir);
    send_range(e, 0, "k", 0, 10);
    st = kf_run_wait(&r, 10, TIMEOUT_MS);
    assert_int_equal(st.forwarded, 10);

    kf_mock_cmd(&e->mock, "broker-down 2");
    send_range(e, 0, "k", 10, 260);
    send_range(e, 1, "k", 260, 510);
    for (int i = 0; i < 500 && !gauge(&r, offsetof(kd_flow_gauges, backpressure)); i++)
        sleep_ms(20);
    assert_int_equal(gauge(&r, offsetof(kd_flow_gauges, backpressure)), 1);
    sleep_ms(2000); /* it stays paused */
    kd_pipeline_stats_get(r.p, &st);
    assert_true(st.consumed >= 10 + 50);
    assert_true(st.consumed <= 10 + 50 + 10);
    assert_true(st.inflight <= 50 + 10);
    assert_false(kd_pipeline_ready(r.p, reason, sizeof(reason)));
    assert_non_null(strstr(reason, "backpressure"));

    kf_mock_cmd(&e->mock, "broker-up 2");
    st = kf_run_wait(&r, 510, TIMEOUT_MS);
    assert_int_equal(st.consumed, 510);
    assert_int_equal(st.forwarded, 510);
    for (int i = 0; i < 500 && gauge(&r, offsetof(kd_flow_gauges, backpressure)); i++)
        sleep_ms(20); /* the gauge is set every 250 ms, after the last settles */
    assert_int_equal(gauge(&r, offsetof(kd_flow_gauges, backpressure)), 0);
    assert_true(kd_pipeline_ready(r.p, reason, sizeof(reason)));
    kf_run_stop(&r);

    recs = kf_read(&e->mock, "out", 3, 510, 1000, TIMEOUT_MS, &n);
    assert_int_equal(n, 510);
    for (int i = 0; i < 510; i++) {
        char key[32];

        snprintf(key, sizeof(key), "k-%d", i);
        assert_int_equal(kf_count_key(recs, n, key), 1);
    }
    free(recs);
}

/* Messages of 500 empty headers each (1.5 KB on the wire; 97 KB counted
 * in flight: each header's name, value and 96 bytes, for the headers
 * parsed and for their copy produced) while downstream is down and every
 * store write is slow, so that a turn finds all of them waiting: the
 * poll batch (batch_max 1000) stops at pipeline.max_inflight_bytes (1 MiB),
 * and consumption pauses there; once downstream is back, every one lands
 * once. Before headers were counted, all 100 were taken in flight (and
 * 200 such messages of 65,000 headers held 1.8 GiB). */
static void test_headers_count_in_flight(void **state) {
    env *e = *state;
    kd_flow_gauges *g;
    kd_pipeline_stats st;
    rd_kafka_t *rk;
    char key[32];
    kf_record *recs;
    size_t n;
    kf_run r;

    kf_mock_cmd(&e->mock, "leader out 0 2");
    kf_mock_cmd(&e->mock, "leader in 0 1");
    kf_run_start_faulty(
        &r, &e->mock,
        "{\"kafka\": {\"brokers\": \"%s\", \"group_id\": \"g\", \"producer\": "
        "{\"message.timeout.ms\": \"60000\"}},"
        " \"routes\": [{\"from\": \"in\", \"to\": \"out\", \"on_missing_key\": "
        "\"forward\"}], \"store\": {\"path\": \"%s/store\"},"
        " \"pipeline\": {\"shutdown_grace\": \"2s\", \"batch_max\": 1000,"
        " \"max_inflight_bytes\": 1048576}}",
        e->mock.bootstrap, e->dir);
    g = kd_metrics_flow(kd_pipeline_metrics(r.p));
    send_range(e, 0, "w", 0, 10);
    st = kf_run_wait(&r, 10, TIMEOUT_MS);
    assert_int_equal(st.forwarded, 10);

    kf_mock_cmd(&e->mock, "broker-down 2");
    kd_faulty_store_delay_writes(r.store, 1500);
    rk = kf_producer(&e->mock);
    for (int i = 0; i < 100; i++) {
        snprintf(key, sizeof(key), "hk-%d", i);
        kf_send_headed(rk, "in", 0, key, 500);
    }
    kf_producer_close(rk);
    for (int i = 0; i < 1000 && !atomic_load(&g->backpressure); i++)
        sleep_ms(20);
    assert_int_equal(atomic_load(&g->backpressure), 1);
    sleep_ms(3000); /* it stays paused: two slow writes' worth */
    kd_pipeline_stats_get(r.p, &st);
    assert_true(gauge_reaches(&r, offsetof(kd_flow_gauges, inflight_bytes), 1048576) >=
                1048576);
    assert_true(st.consumed >= 10 + 10);
    assert_true(st.consumed <= 10 + 12); /* 11 pass 1 MiB */

    kd_faulty_store_delay_writes(r.store, 0);
    kf_mock_cmd(&e->mock, "broker-up 2");
    st = kf_run_wait(&r, 110, TIMEOUT_MS);
    assert_int_equal(st.consumed, 110);
    assert_int_equal(st.forwarded, 110);
    for (int i = 0; i < 500 && atomic_load(&g->inflight_bytes); i++)
        sleep_ms(20); /* the gauge is set every 250 ms */
    assert_int_equal(atomic_load(&g->inflight_bytes), 0);
    kf_run_stop(&r);
    recs = kf_read(&e->mock, "out", 3, 110, 1000, TIMEOUT_MS, &n);
    assert_int_equal(n, 110);
    for (int i = 0; i < 100; i++) {
        snprintf(key, sizeof(key), "hk-%d", i);
        assert_int_equal(kf_count_key(recs, n, key), 1);
    }
    free(recs);
}

/* A message that can never be delivered (larger than the producer's
 * message.max.bytes) on a route without a dead-letter topic is retried
 * forever: its partition is held back once pipeline.max_inflight of its
 * messages wait behind it, its offset never committed past, while the
 * other partition goes on. */
static void test_poison_holds_back_only_its_partition(void **state) {
    env *e = *state;
    rd_kafka_t *rk = kf_producer(&e->mock);
    char *big = malloc(5001);
    kd_pipeline_stats st;
    kf_record *recs;
    size_t n;
    kf_run r;

    memset(big, 'x', 5000);
    big[5000] = '\0';
    kf_send(rk, "in", 0, "poison", big);
    kf_producer_close(rk);
    free(big);
    send_range(e, 0, "p0", 0, 300);
    send_range(e, 1, "p1", 0, 300);
    kf_run_start(&r, &e->mock, BOUNDED_CONFIG, e->mock.bootstrap,
                 "{\"message.max.bytes\": \"2000\"}", e->dir);
    for (int i = 0; i < 1500 && !gauge(&r, offsetof(kd_flow_gauges, held_back)); i++)
        sleep_ms(20);
    assert_int_equal(gauge(&r, offsetof(kd_flow_gauges, held_back)), 1);
    recs = kf_read(&e->mock, "out", 3, 300, 2000, TIMEOUT_MS, &n);
    for (int i = 0; i < 300; i++) { /* the other partition: all of it */
        char key[32];

        snprintf(key, sizeof(key), "p1-%d", i);
        assert_int_equal(kf_count_key(recs, n, key), 1);
    }
    assert_int_equal(kf_count_key(recs, n, "poison"), 0);
    free(recs);
    sleep_ms(1000); /* it stays held back */
    kd_pipeline_stats_get(r.p, &st);
    assert_true(st.consumed >= 300 + 50);
    assert_true(st.consumed <= 300 + 1 + 50 + 10);
    assert_true(st.retries >= 2); /* the poison, again and again */
    assert_true(gauge_reaches(&r, offsetof(kd_flow_gauges, retrying), 1) >= 1);
    assert_int_equal(gauge(&r, offsetof(kd_flow_gauges, held_back)), 1);
    assert_int_equal(gauge(&r, offsetof(kd_flow_gauges, stuck)), 1); /* and says so */
    kf_run_stop(&r);
    assert_true(kf_committed(&e->mock, "g", "in", 0) <= 0); /* never past the poison */
    assert_int_equal(kf_committed(&e->mock, "g", "in", 1), 300);
}

/* Messages consumed after an orphan wait behind it while its scan reads a
 * step a turn (1 ms here), and leave in consumption order: o-1 found
 * downstream (the dead run delivered it), o-2 absent (forwarded), n-1..3
 * new; downstream they follow their source offsets. */
static void test_orphans_keep_their_order(void **state) {
    env *e = *state;
    const char *run = "kdedup-run v1\n0 0 out\n1 0 out\n2 0 out\n";
    static const char *const order[] = {"o-1", "n-1", "o-2", "n-2", "n-3"};
    uint64_t now = (uint64_t)time(NULL) * 1000;
    char path[512], err[512], stream[32];
    rd_kafka_t *rk = kf_producer(&e->mock);
    int64_t last = -1;
    kd_pipeline_stats st;
    kd_decision dec;
    kf_record *recs;
    kd_store *store;
    kd_dedup *d;
    size_t n;
    kf_run r;

    deliveries(rk, 0, "a", 15000); /* what the dead run forwarded... */
    assert_int_equal(
        rd_kafka_producev(rk, RD_KAFKA_V_TOPIC("out"), RD_KAFKA_V_PARTITION(0),
                          RD_KAFKA_V_VALUE("o-1", 3),
                          RD_KAFKA_V_HEADER("Idempotency-Key", "o-1", -1),
                          RD_KAFKA_V_HEADER("kdedup-source", "in/0/0", -1),
                          RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END),
        RD_KAFKA_RESP_ERR_NO_ERROR); /* ...o-1 last */
    for (size_t i = 0; i < 5; i++)
        kf_send(rk, "in", 0, order[i], order[i]);
    kf_producer_close(rk);
    snprintf(path, sizeof(path), "%s/store", e->dir);
    assert_non_null(store = kd_rocks_open(path, true, err, sizeof(err)));
    assert_int_equal(
        kd_store_append(store, stream,
                        kd_recovery_run_stream(0xbeef, stream, sizeof(stream)), 0, run,
                        strlen(run)),
        KD_OK);
    d = kd_dedup_new(store, "kdedup:in");
    kd_dedup_set_owner(d, 0xbeef);
    assert_int_equal(kd_dedup_claim_or_get(d, "o-1", 3, now, &dec), KD_OK);
    assert_int_equal(kd_dedup_claim_or_get(d, "o-2", 3, now, &dec), KD_OK);
    kd_dedup_destroy(d);
    kd_store_destroy(store);

    kf_run_start(&r, &e->mock,
                 "{\"kafka\": {\"brokers\": \"%s\", \"group_id\": \"g\"},"
                 " \"routes\": [{\"from\": \"in\", \"to\": \"out\","
                 " \"on_missing_key\": \"forward\"}],"
                 " \"dedup\": {\"handover\": false, \"inflight_timeout\": \"0s\","
                 " \"scan_step\": \"1ms\"},"
                 " \"store\": {\"path\": \"%s/store\"}}",
                 e->mock.bootstrap, e->dir);
    st = kf_run_wait(&r, 5, TIMEOUT_MS);
    if (getenv("KD_TEST_LOG"))
        fprintf(stderr,
                "consumed %llu forwarded %llu found %llu absent %llu reforwarded %llu\n",
                (unsigned long long)st.consumed, (unsigned long long)st.forwarded,
                (unsigned long long)st.orphans_found,
                (unsigned long long)st.orphans_absent,
                (unsigned long long)st.orphans_reforwarded);
    assert_int_equal(st.consumed, 5);
    assert_int_equal(st.orphans_found, 1);
    assert_int_equal(st.orphans_absent, 1);
    assert_int_equal(st.forwarded, 4);
    kf_run_stop(&r);

    recs = kf_read(&e->mock, "out", 1, 15001 + 4, 1000, TIMEOUT_MS, &n);
    assert_int_equal(n, 15001 + 4);
    for (size_t i = 1; i < 5; i++) { /* downstream in their source order */
        int64_t at = -1;

        for (size_t j = 0; j < n; j++)
            if (!strcmp(recs[j].ikey, order[i])) {
                assert_int_equal(at, -1); /* once */
                at = recs[j].offset;
            }
        assert_true(at > last);
        last = at;
    }
    assert_int_equal(kf_count_key(recs, n, "o-1"), 1); /* the dead run's only */
    free(recs);
}

/* A record forwarded without a claim (kdedup-unclaimed: a key conflict
 * forwarded, a key that could not be deduplicated) carries the key header
 * but is no claim's delivery: neither an orphan's lookup nor an uncertain
 * delivery's takes it (one did, completing the original from it: lost). */
static void test_unclaimed_records_are_no_delivery(void **state) {
    env *e = *state;
    const char *run = "kdedup-run v1\n0 0 out\n1 0 out\n2 0 out\n";
    rd_kafka_t *rk = kf_producer(&e->mock);
    kd_recover_found f = {0};
    int64_t from = 0;
    kd_recovery *rc;
    kd_config *cfg;
    kd_store *store;

    assert_int_equal(
        rd_kafka_producev(rk, RD_KAFKA_V_TOPIC("out"), RD_KAFKA_V_PARTITION(0),
                          RD_KAFKA_V_VALUE("other payload", 13),
                          RD_KAFKA_V_HEADER("Idempotency-Key", "k", -1),
                          RD_KAFKA_V_HEADER("kdedup-source", "in/0/1", -1),
                          RD_KAFKA_V_HEADER("kdedup-unclaimed", "1", -1),
                          RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END),
        RD_KAFKA_RESP_ERR_NO_ERROR);
    kf_producer_close(rk);
    recovery_open(e, run, 0, &cfg, &store, &rc);
    assert_int_equal(kd_recovery_find(rc, 0xbeef, 0, 0, "k", 1, 0, &f),
                     KD_RECOVER_ABSENT);
    assert_int_equal(kd_recovery_find_since(rc, 0, 0, &from, 0, "k", 1, &f),
                     KD_RECOVER_ABSENT);
    kd_recovery_destroy(rc);
    kd_store_destroy(store);
    kd_config_destroy(cfg);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_scans_step_within_the_cache_budget, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_scans_that_do_not_fit_together_take_turns,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_handover_beside_a_paused_scan, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_unclaimed_records_are_no_delivery, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_orphans_keep_their_order, setup, teardown),
        cmocka_unit_test_setup_teardown(test_handover_batches_within_their_bytes, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_headers_count_in_flight, setup, teardown),
        cmocka_unit_test_setup_teardown(test_backpressure_pauses_and_resumes, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_poison_holds_back_only_its_partition, setup,
                                        teardown),
    };

    return cr_run_group("bounds (mock cluster)", tests, sizeof(tests) / sizeof(tests[0]));
}
