/*
 * kdedup tests - the pipeline's fixture (see pipeline_fixture.h).
 */
#include "tests/pipeline_fixture.h"

static const char *const route_topics[] = {"in:4",    "out:4",   "dlq:1",   "a:1",
                                           "a.out:1", "b:1",     "b.out:1", "c:1",
                                           "c.out:1", "c.dlq:1", NULL};

int setup(void **state) {
    *state = kf_env_new(2, route_topics);
    return 0;
}

/* The same topics over three brokers: a third one to lead a partition
 * that a case slows alone (rtt). */
int setup_three(void **state) {
    *state = kf_env_new(3, route_topics);
    return 0;
}

int teardown(void **state) {
    kf_env_free(*state);
    return 0;
}

/* test_bounds's mock cluster: fewer partitions upstream than downstream
 * (in:2, out:3), so that a partition's messages and its history read land
 * where the bounds cases count them. */
int setup_bounds(void **state) {
    static const char *const topics[] = {"in:2", "out:3", NULL};

    *state = kf_env_new(2, topics);
    return 0;
}

void start(kf_run *r, env *e, const char *producer_props, int max_retries,
           const char *grace) {
    kf_run_start(r, &e->mock, ROUTE_CONFIG, e->mock.bootstrap, producer_props,
                 max_retries, e->dir, grace);
}

/* Upstream (in, dlq) led by broker 1, downstream (out) by broker 2: faults
 * injected on broker 2 hit kdedup's deliveries, not the test's producer. */
void split_brokers(env *e) {
    kf_mock_cmd(&e->mock, "leader dlq 0 1");
    for (int i = 0; i < PARTS; i++) {
        kf_mock_cmd(&e->mock, "leader in %d 1", i);
        kf_mock_cmd(&e->mock, "leader out %d 2", i);
    }
}

/* Monotonic milliseconds. */
uint64_t now_ms(void) {
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

void send_keys(env *e, const char *topic, int from, int to, int copies) {
    rd_kafka_t *rk = kf_producer(&e->mock);
    char key[32], value[64];

    for (int i = from; i < to; i++)
        for (int c = 0; c < copies; c++) {
            snprintf(key, sizeof(key), "key-%d", i);
            snprintf(value, sizeof(value), "value-%d-copy-%d", i, c);
            kf_send(rk, topic, -1, key, value);
        }
    kf_producer_close(rk);
}

/* Every key in [from, to) exactly once in recs, with its first copy's value
 * and trace header, and a source header. */
void assert_each_once(const kf_record *recs, size_t n, int from, int to) {
    char key[32], value[64];

    for (int i = from; i < to; i++) {
        snprintf(key, sizeof(key), "key-%d", i);
        snprintf(value, sizeof(value), "value-%d-copy-0", i);
        if (kf_count_key(recs, n, key) != 1)
            fail_msg("%s appears %zu times downstream", key, kf_count_key(recs, n, key));
        for (size_t j = 0; j < n; j++)
            if (!strcmp(recs[j].ikey, key)) {
                assert_string_equal(recs[j].value, value);
                assert_string_equal(recs[j].trace, value);
                assert_non_null(strstr(recs[j].source, "in/"));
            }
    }
}

/* Sends key-0 .. key-4 to in/0 and waits until r has consumed them. */
void send_five(env *e, kf_run *r) {
    rd_kafka_t *rk = kf_producer(&e->mock);
    char key[32];

    for (int i = 0; i < 5; i++) {
        snprintf(key, sizeof(key), "key-%d", i);
        kf_send(rk, "in", 0, key, key);
    }
    kf_producer_close(rk);
    kf_run_wait(r, 5, TIMEOUT_MS);
}

/* Opens e->dir/store and records in it a run `owner` that delivered to
 * "out" from partitions 0-3 and died (its run record, as recovery reads
 * it); returns the store; asserts. */
kd_store *store_with_dead_run(env *e, uint64_t owner) {
    static const char run[] = "kdedup-run v1\n0 0 out\n1 0 out\n2 0 out\n3 0 out\n";
    char path[512], err[512], stream[32];
    kd_store *store;

    snprintf(path, sizeof(path), "%s/store", e->dir);
    assert_non_null(store = kd_rocks_open(path, true, err, sizeof(err)));
    assert_int_equal(
        kd_store_append(store, stream,
                        kd_recovery_run_stream(owner, stream, sizeof(stream)), 0, run,
                        strlen(run)),
        KD_OK);
    return store;
}

/* Claims of owner in d for key-<from>..key-<to-1>, made at `at` (wall ms). */
void claim_at(kd_dedup *d, uint64_t owner, int from, int to, uint64_t at) {
    char key[32];
    kd_decision dec;

    kd_dedup_set_owner(d, owner);
    for (int i = from; i < to; i++) {
        snprintf(key, sizeof(key), "key-%d", i);
        assert_int_equal(kd_dedup_claim_or_get(d, key, strlen(key), at, &dec), KD_OK);
        assert_int_equal(dec.state, KD_CLAIMED);
        kd_decision_clear(&dec);
    }
}

/* Puts on out/0 a record kdedup forwarded from in/0 at offset src_off, for
 * key, at wall time `at` (ms); unsigned. */
void put_downstream(rd_kafka_t *rk, const char *key, int src_off, uint64_t at) {
    char source[32], stamp[24];

    snprintf(source, sizeof(source), "in/0/%d", src_off);
    snprintf(stamp, sizeof(stamp), "%llu", (unsigned long long)at);
    assert_int_equal(
        rd_kafka_producev(rk, RD_KAFKA_V_TOPIC("out"), RD_KAFKA_V_PARTITION(0),
                          RD_KAFKA_V_VALUE("old", 3),
                          RD_KAFKA_V_HEADER("Idempotency-Key", key, -1),
                          RD_KAFKA_V_HEADER("kdedup-source", source, -1),
                          RD_KAFKA_V_HEADER("kdedup-forwarded-at", stamp, -1),
                          RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END),
        RD_KAFKA_RESP_ERR_NO_ERROR);
}

/* Waits until the pipeline's stats satisfy done (or TIMEOUT_MS); returns
 * the last stats. */
kd_pipeline_stats wait_stats(kf_run *r, bool (*done)(const kd_pipeline_stats *)) {
    kd_pipeline_stats st;

    for (int i = 0; i < TIMEOUT_MS / 20; i++) {
        kd_pipeline_stats_get(r->p, &st);
        if (done(&st))
            break;
        nanosleep(&(struct timespec){0, 20 * 1000 * 1000}, NULL);
    }
    return st;
}

bool consumed_6(const kd_pipeline_stats *st) {
    return st->consumed >= 6;
}

bool consumed_again(const kd_pipeline_stats *st) {
    return st->consumed >= 7;
}

bool failed_once(const kd_pipeline_stats *st) {
    return st->produce_errors >= 1;
}

bool abandoned(const kd_pipeline_stats *st) {
    return st->abandoned >= 1;
}

bool forwarded_6(const kd_pipeline_stats *st) {
    return st->forwarded + st->orphans_found >= 6;
}

/* Starts replica `name` (a faulty store or not) in e->dir/name, over
 * STALL_CONFIG with `pipeline` keys more ("" for none). */
void start_replica_with(env *e, kf_run *r, const char *name, bool faulty,
                        const char *pipeline) {
    char dir[300];

    snprintf(dir, sizeof(dir), "%s/%s", e->dir, name);
    assert_int_equal(mkdir(dir, 0700), 0);
    if (faulty)
        kf_run_start_faulty(r, &e->mock, STALL_CONFIG, e->mock.bootstrap, e->dir, name,
                            50, pipeline);
    else
        kf_run_start(r, &e->mock, STALL_CONFIG, e->mock.bootstrap, e->dir, name, 50,
                     pipeline);
}

/* Starts replica `name` (a faulty store or not) in e->dir/name. */
void start_replica(env *e, kf_run *r, const char *name, bool faulty) {
    start_replica_with(e, r, name, faulty, "");
}

/* Waits until a and b hold `parts_a` and `parts_b` partitions, nothing in
 * flight, and `forwarded` keys were forwarded between them; asserts. */
void wait_replicas(kf_run *a, kf_run *b, uint64_t parts_a, uint64_t parts_b,
                   uint64_t forwarded) {
    kd_pipeline_stats sa, sb = {0};

    for (int i = 0; i < TIMEOUT_MS / 20; i++) {
        kd_pipeline_stats_get(a->p, &sa);
        if (b)
            kd_pipeline_stats_get(b->p, &sb);
        if (sa.assigned_partitions == parts_a && sb.assigned_partitions == parts_b &&
            !sa.inflight && !sb.inflight && sa.forwarded + sb.forwarded >= forwarded)
            return;
        nanosleep(&(struct timespec){0, 20 * 1000 * 1000}, NULL);
    }
    fail_msg("replicas: %" PRIu64 "+%" PRIu64 " partitions, %" PRIu64 "+%" PRIu64
             " forwarded, %" PRIu64 "+%" PRIu64 " in flight",
             sa.assigned_partitions, sb.assigned_partitions, sa.forwarded, sb.forwarded,
             sa.inflight, sb.inflight);
}

/* Replica a alone, or sharing the partitions with b, 200 keys settled;
 * then a's store takes ms a batch write, and new keys (200..800) wait on
 * every partition, a batch of a's handed to that write. */
void slow_write_under_way(env *e, kf_run *a, kf_run *b, unsigned ms) {
    kd_pipeline_stats sa;

    send_keys(e, "in", 0, 200, 1);
    start_replica(e, a, "a", true);
    wait_replicas(a, NULL, PARTS, 0, 200);
    if (b) {
        start_replica(e, b, "b", false);
        wait_replicas(a, b, PARTS / 2, PARTS / 2, 200);
    }
    kd_faulty_store_delay_writes(a->store, ms);
    send_keys(e, "in", 200, 800, 1);
    for (int i = 0; i < TIMEOUT_MS / 20; i++) { /* consumed: handed to the store */
        kd_pipeline_stats_get(a->p, &sa);
        if (sa.consumed > 200)
            return;
        nanosleep(&(struct timespec){0, 20 * 1000 * 1000}, NULL);
    }
    fail_msg("a consumed nothing new");
}

/* Runs the one-route pipeline over the store in e->dir/<name>. */
void start_named(kf_run *r, env *e, const char *name) {
    char dir[300];

    snprintf(dir, sizeof(dir), "%s/%s", e->dir, name);
    if (mkdir(dir, 0700) != 0)
        assert_int_equal(errno, EEXIST); /* the replica's second run */
    kf_run_start(r, &e->mock, ROUTE_CONFIG, e->mock.bootstrap, "{}", 5, dir, "5s");
}

/* test_bounds's helpers. */

/* What a dead run put on out/partition: n records keyed prefix-i from
 * in/partition/i, each with `extra` empty headers besides. */
void deliveries_headed(rd_kafka_t *rk, int32_t partition, const char *prefix, int n,
                       int extra) {
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

void deliveries(rd_kafka_t *rk, int32_t partition, const char *prefix, int n) {
    deliveries_headed(rk, partition, prefix, n, 0);
}

uint64_t cache_bytes(const kd_recovery *rc) {
    kd_recovery_stats st;

    kd_recovery_stats_get(rc, &st);
    return st.cache_bytes;
}

/* A recovery over out (route in -> out), its store holding dead run
 * 0xbeef's record `run`; dedup.scan_cache_bytes cache_bytes (0: default). */
void recovery_open(env *e, const char *run, int cache_bytes, kd_config **cfg,
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
