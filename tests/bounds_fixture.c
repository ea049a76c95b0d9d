/*
 * kdedup tests - test_bounds's fixture (see bounds_fixture.h).
 */
#include "tests/bounds_fixture.h"

int setup(void **state) {
    static const char *const topics[] = {"in:2", "out:3", NULL};

    *state = kf_env_new(2, topics);
    return 0;
}

int teardown(void **state) {
    kf_env_free(*state);
    return 0;
}

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
