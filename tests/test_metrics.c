/*
 * kdedup tests - metrics: the exposition text for known counters, histogram
 * buckets, and gauges read from librdkafka statistics documents.
 */
#include "config/config.h"
#include "sidecar/metrics.h"

#include <stdarg.h>
#include <setjmp.h>
#include <stddef.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const CONFIG =
    "{\"kafka\": {\"brokers\": \"k:9092\", \"group_id\": \"g\"}, \"routes\": ["
    "{\"from\": \"orders\", \"to\": \"orders.deduped\", \"on_missing_key\": \"drop\"},"
    "{\"name\": \"payments\", \"from\": \"pay\", \"to\": \"pay.out\","
    " \"on_missing_key\": \"forward\"}]}";

static int setup(void **state) {
    char err[256];
    kd_config *cfg = kd_config_parse(CONFIG, strlen(CONFIG), "t.json", err, sizeof(err));

    assert_non_null(cfg);
    *state = cfg;
    return 0;
}

static int teardown(void **state) {
    kd_config_destroy(*state);
    return 0;
}

static void assert_line(const char *text, const char *line) {
    size_t n = strlen(line) + 3;
    char *want = malloc(n);

    snprintf(want, n, "\n%s\n", line);
    if (!strstr(text, want))
        fail_msg("missing line: %s\n%s", line, text);
    free(want);
}

static void test_counters_render(void **state) {
    kd_metrics *m = kd_metrics_new(*state);
    size_t len;
    char *text;

    kd_metrics_route(m, 0)->consumed = 10;
    kd_metrics_route(m, 0)->forwarded = 7;
    kd_metrics_route(m, 0)->duplicates_completed = 2;
    kd_metrics_route(m, 0)->duplicates_in_flight = 1;
    kd_metrics_route(m, 1)->missing_forwarded = 4;
    kd_metrics_route(m, 1)->possibly_persisted = 3;
    *kd_metrics_store_errors(m) = 5;
    *kd_metrics_inflight(m) = 9;
    text = kd_metrics_render(m, &len);
    assert_non_null(text);
    assert_int_equal(strlen(text), len);
    assert_line(text, "# TYPE kdedup_messages_consumed_total counter");
    assert_line(text, "kdedup_messages_consumed_total{topic=\"orders\"} 10");
    assert_line(text, "kdedup_messages_consumed_total{topic=\"pay\"} 0");
    /* a route's name labels it: "payments" (its "name"), not its topic */
    assert_line(text, "kdedup_messages_forwarded_total{route=\"payments\"} 0");
    assert_line(text, "kdedup_messages_forwarded_total{route=\"orders\"} 7");
    assert_line(text, "kdedup_duplicates_total{route=\"orders\","
                      "state=\"completed\"} 2");
    assert_line(text, "kdedup_duplicates_total{route=\"orders\","
                      "state=\"in_flight\"} 1");
    assert_line(text,
                "kdedup_missing_key_total{route=\"payments\",action=\"forward\"} 4");
    assert_line(text, "kdedup_produce_errors_total{route=\"payments\","
                      "status=\"possibly_persisted\"} 3");
    assert_line(text, "kdedup_store_errors_total 5");
    assert_line(text, "# TYPE kdedup_inflight_messages gauge");
    assert_line(text, "kdedup_inflight_messages 9");
    assert_line(text, "kdedup_build_info{version=\"0.1.0\"} 1");
    assert_true(text[len - 1] == '\n');
    free(text);
    kd_metrics_destroy(m);
}

static void test_histogram_buckets(void **state) {
    kd_metrics *m = kd_metrics_new(*state);
    kd_histogram *h = kd_metrics_forward_latency(m);
    size_t len;
    char *text;

    kd_histogram_observe(h, 0.0002); /* <= 0.5ms */
    kd_histogram_observe(h, 0.003);  /* <= 5ms */
    kd_histogram_observe(h, 0.003);
    kd_histogram_observe(h, 7.0);   /* <= 10s */
    kd_histogram_observe(h, 100.0); /* only +Inf */
    text = kd_metrics_render(m, &len);
    assert_line(text, "# TYPE kdedup_forward_latency_seconds histogram");
    assert_line(text, "kdedup_forward_latency_seconds_bucket{le=\"0.0005\"} 1");
    assert_line(text, "kdedup_forward_latency_seconds_bucket{le=\"0.0025\"} 1");
    assert_line(text, "kdedup_forward_latency_seconds_bucket{le=\"0.005\"} 3");
    assert_line(text, "kdedup_forward_latency_seconds_bucket{le=\"5\"} 3");
    assert_line(text, "kdedup_forward_latency_seconds_bucket{le=\"10\"} 4");
    assert_line(text, "kdedup_forward_latency_seconds_bucket{le=\"+Inf\"} 5");
    assert_line(text, "kdedup_forward_latency_seconds_count 5");
    assert_line(text, "kdedup_forward_latency_seconds_sum 107.006200");
    assert_line(text, "kdedup_store_write_seconds_count 0");
    free(text);
    kd_metrics_destroy(m);
}

/* Quantiles come from log-scale slots: within ~5% of the true value. */
static void test_histogram_quantiles(void **state) {
    kd_metrics *m = kd_metrics_new(*state);
    kd_histogram *h = kd_metrics_store_write(m);

    assert_true(kd_histogram_quantile(h, 0.5) == 0);
    for (int i = 1; i <= 1000; i++) /* 1 ms ... 1 s, uniformly */
        kd_histogram_observe(h, i / 1000.0);
    kd_histogram_observe(h, -1.0); /* a clock step back counts as 0 */
    assert_in_range((long)(kd_histogram_quantile(h, 0.5) * 1e6), 475000, 525000);
    assert_in_range((long)(kd_histogram_quantile(h, 0.99) * 1e6), 940000, 1040000);
    assert_in_range((long)(kd_histogram_quantile(h, 0.0) * 1e6), 0, 1);
    assert_in_range((long)(kd_histogram_quantile(h, 1.0) * 1e6), 950000, 1050000);
    kd_histogram_observe(h, 1e9); /* beyond the last slot: clamped, not lost */
    assert_true(kd_histogram_quantile(h, 1.0) > 1e4);
    kd_metrics_destroy(m);
}

static void test_statistics(void **state) {
    static const char consumer[] =
        "{\"type\":\"consumer\",\"brokers\":{"
        "\"127.0.0.1:9092/bootstrap\":{\"nodeid\":-1,\"state\":\"UP\"},"
        "\"127.0.0.1:9092/1\":{\"nodeid\":1,\"state\":\"UP\"},"
        "\"127.0.0.1:9093/2\":{\"nodeid\":2,\"state\":\"DOWN\"}},"
        "\"topics\":{\"orders\":{\"partitions\":{"
        "\"0\":{\"partition\":0,\"consumer_lag\":42},"
        "\"1\":{\"partition\":1,\"consumer_lag\":-1},"
        "\"-1\":{\"partition\":-1,\"consumer_lag\":7}}}},"
        "\"cgrp\":{\"state\":\"up\",\"join_state\":\"steady\",\"assignment_size\":2}}";
    static const char producer[] =
        "{\"type\":\"producer\",\"msg_cnt\":17,\"brokers\":{"
        "\"127.0.0.1:9092/1\":{\"nodeid\":1,\"state\":\"UP\",\"rtt\":{\"avg\":2500}}}}";
    kd_metrics *m = kd_metrics_new(*state);
    kd_cluster_view v;
    size_t len;
    char *text;

    kd_metrics_cluster_view(m, &v);
    assert_int_equal(v.group_steady, -1); /* nothing reported yet */
    assert_int_equal(kd_metrics_update_stats(m, consumer, strlen(consumer)), 0);
    assert_int_equal(kd_metrics_update_stats(m, producer, strlen(producer)), 0);
    assert_int_equal(kd_metrics_update_stats(m, "{not json", 9), -1);
    kd_metrics_cluster_view(m, &v);
    assert_int_equal(v.brokers_known, 2);
    assert_int_equal(v.brokers_up, 1);
    assert_int_equal(v.group_steady, 1);
    assert_int_equal(v.assignment, 2);
    text = kd_metrics_render(m, &len);
    assert_line(text, "kdedup_consumer_lag{topic=\"orders\",partition=\"0\"} 42");
    assert_null(strstr(text, "partition=\"1\"")); /* unknown lag: not reported */
    assert_null(strstr(text, "partition=\"-1\""));
    assert_line(text, "kdedup_producer_queue_messages 17");
    assert_line(text, "kdedup_broker_rtt_seconds{broker=\"127.0.0.1:9092/1\"} 0.002500");
    free(text);
    kd_metrics_destroy(m);
}

/* Across a reload that restarts the pipeline: counters carried over by
 * route name (a route removed leaves its counts, one added starts at 0),
 * histograms too, gauges not. */
static void test_carry(void **state) {
    static const char *const NEXT =
        "{\"kafka\": {\"brokers\": \"k:9092\", \"group_id\": \"g\"}, \"routes\": ["
        "{\"name\": \"payments\", \"from\": \"pay\", \"to\": \"pay.out\","
        " \"on_missing_key\": \"forward\"},"
        "{\"from\": \"new\", \"to\": \"new.out\", \"on_missing_key\": \"drop\"}]}";
    char err[256];
    kd_config *next = kd_config_parse(NEXT, strlen(NEXT), "t.json", err, sizeof(err));
    kd_metrics *a = kd_metrics_new(*state), *b;
    size_t len;
    char *text;

    assert_non_null(next);
    b = kd_metrics_new(next);
    atomic_store(&kd_metrics_route(a, 1)->forwarded, 40);
    atomic_store(&kd_metrics_route(a, 1)->key_conflicts_skipped, 3);
    atomic_store(&kd_metrics_route(a, 0)->forwarded, 99); /* "orders": removed */
    atomic_store(kd_metrics_store_errors(a), 2);
    atomic_store(kd_metrics_inflight(a), 5); /* a gauge */
    kd_histogram_observe(kd_metrics_forward_latency(a), 0.002);
    atomic_store(&kd_metrics_route(b, 0)->forwarded, 1); /* counted before it was shown */
    kd_metrics_carry(b, a);
    text = kd_metrics_render(b, &len);
    assert_line(text, "kdedup_messages_forwarded_total{route=\"payments\"} 41");
    assert_line(text, "kdedup_messages_forwarded_total{route=\"new\"} 0");
    assert_line(text, "kdedup_key_conflicts_total{route=\"payments\",action=\"skip\"} 3");
    assert_line(text, "kdedup_store_errors_total 2");
    assert_line(text, "kdedup_inflight_messages 0");
    assert_line(text, "kdedup_forward_latency_seconds_count 1");
    assert_null(strstr(text, "route=\"orders\""));
    free(text);
    kd_metrics_destroy(a);
    kd_metrics_destroy(b);
    kd_config_destroy(next);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_counters_render, setup, teardown),
        cmocka_unit_test_setup_teardown(test_histogram_buckets, setup, teardown),
        cmocka_unit_test_setup_teardown(test_histogram_quantiles, setup, teardown),
        cmocka_unit_test_setup_teardown(test_statistics, setup, teardown),
        cmocka_unit_test_setup_teardown(test_carry, setup, teardown),
    };

    return cmocka_run_group_tests_name("metrics", tests, NULL, NULL);
}
