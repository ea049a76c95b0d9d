/*
 * kdedup tests - the configuration loader: the documented example, defaults,
 * environment interpolation, durations, and one case per rule, each checked
 * for the exact shape of its message (file: path: what, got what).
 */
#include "config/config.h"

#include <stdarg.h>
#include <setjmp.h>
#include <stddef.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MINIMAL_KAFKA "\"kafka\": {\"brokers\": \"k:9092\", \"group_id\": \"g\"}"
#define MINIMAL_ROUTE "{\"from\": \"a\", \"to\": \"b\", \"on_missing_key\": \"drop\"}"

static kd_config *parse(const char *json, char *err, size_t size) {
    return kd_config_parse(json, strlen(json), "kdedup.json", err, size);
}

/* Asserts json is rejected with exactly the message want. */
static void assert_error(const char *json, const char *want) {
    char err[512] = "";
    kd_config *cfg = parse(json, err, sizeof(err));

    if (cfg) {
        kd_config_destroy(cfg);
        fail_msg("accepted: %s", json);
    }
    if (strcmp(err, want) != 0)
        fail_msg("for %s\n  got:  %s\n  want: %s", json, err, want);
}

static kd_config *assert_valid(const char *json) {
    char err[512] = "";
    kd_config *cfg = parse(json, err, sizeof(err));

    if (!cfg)
        fail_msg("rejected: %s\n  %s", json, err);
    return cfg;
}

static void test_design_example(void **state) {
    char err[512];
    kd_config *cfg = kd_config_load("tests/data/kdedup.json", err, sizeof(err));

    (void)state;
    if (!cfg)
        fail_msg("%s", err);
    assert_string_equal(cfg->file, "kdedup.json");
    assert_string_equal(cfg->brokers, "kafka-0:9092,kafka-1:9092");
    assert_string_equal(cfg->group_id, "orders-dedup");
    assert_int_equal(cfg->consumer.n, 1);
    assert_string_equal(cfg->consumer.v[0].name, "session.timeout.ms");
    assert_string_equal(cfg->consumer.v[0].value, "10000");
    assert_string_equal(cfg->consumer.v[0].path,
                        "kafka.consumer[\"session.timeout.ms\"]");
    assert_string_equal(kd_config_prop_get(&cfg->producer, "compression.type"), "lz4");
    assert_int_equal(cfg->nroutes, 1);
    assert_string_equal(cfg->routes[0].from, "orders");
    assert_string_equal(cfg->routes[0].to, "orders.deduped");
    assert_string_equal(cfg->routes[0].key_header, "Idempotency-Key");
    assert_int_equal(cfg->routes[0].key_from, KD_KEY_FROM_HEADER);
    assert_int_equal(cfg->routes[0].nkey_parts, 1);
    assert_string_equal(cfg->routes[0].key_parts[0].name, "Idempotency-Key");
    assert_int_equal(cfg->routes[0].on_key_conflict, KD_CONFLICT_SKIP);
    assert_true(cfg->routes[0].fingerprint);
    assert_int_equal(cfg->routes[0].nfingerprint_headers, 0);
    assert_int_equal(cfg->max_json_bytes, 1048576);
    assert_int_equal(cfg->routes[0].on_missing_key, KD_MISSING_DEAD_LETTER);
    assert_string_equal(cfg->routes[0].dead_letter_topic, "orders.dlq");
    assert_string_equal(cfg->ns, "orders");
    assert_int_equal(cfg->ttl_ms, 24 * 3600 * 1000);
    assert_int_equal(cfg->inflight_timeout_ms, 5 * 60 * 1000);
    assert_int_equal(cfg->max_key_bytes, 255);
    assert_string_equal(cfg->store_path, "/var/lib/kdedup");
    assert_true(cfg->store_sync);
    assert_string_equal(cfg->http_listen, "0.0.0.0:9464");
    assert_int_equal(cfg->log_level, KD_LOG_INFO);
    kd_config_destroy(cfg);
}

static void test_defaults(void **state) {
    kd_config *cfg = assert_valid("{" MINIMAL_KAFKA ", \"routes\": [{\"from\": \"in\", "
                                  "\"to\": \"out\", \"dead_letter_topic\": \"dlq\"}]}");

    (void)state;
    assert_string_equal(cfg->routes[0].key_header, "Idempotency-Key");
    assert_int_equal(cfg->routes[0].key_from, KD_KEY_FROM_HEADER);
    assert_int_equal(cfg->routes[0].nkey_parts, 1);
    assert_string_equal(cfg->routes[0].key_parts[0].name, "Idempotency-Key");
    assert_int_equal(cfg->routes[0].on_key_conflict, KD_CONFLICT_SKIP);
    assert_true(cfg->routes[0].fingerprint);
    assert_int_equal(cfg->routes[0].nfingerprint_headers, 0);
    assert_int_equal(cfg->max_json_bytes, 1048576);
    assert_int_equal(cfg->routes[0].on_missing_key, KD_MISSING_DEAD_LETTER);
    assert_int_equal(cfg->routes[0].max_retries, 5);
    assert_int_equal(cfg->routes[0].retry_backoff_ms, 1000);
    assert_string_equal(cfg->ns, "kdedup");
    assert_int_equal(cfg->ttl_ms, 24 * 3600 * 1000);
    assert_int_equal(cfg->inflight_timeout_ms, 10 * 60 * 1000);
    assert_int_equal(cfg->max_key_bytes, 255);
    assert_true(cfg->handover);
    assert_int_equal(cfg->scan_max_records, 2000000);
    assert_string_equal(cfg->store_path, "/var/lib/kdedup");
    assert_true(cfg->store_sync);
    assert_string_equal(cfg->http_listen, "0.0.0.0:9464");
    assert_int_equal(cfg->log_level, KD_LOG_INFO);
    assert_int_equal(cfg->shutdown_grace_ms, 30000);
    assert_int_equal(cfg->batch_max, 1000);
    assert_int_equal(cfg->max_headers, 1000);
    assert_int_equal(cfg->max_header_bytes, 1048576);
    assert_int_equal(cfg->consumer.n, 0);
    kd_config_destroy(cfg);
}

/* The per-message header bounds: set, and refused out of range. */
static void test_header_bounds(void **state) {
    kd_config *cfg = assert_valid("{" MINIMAL_KAFKA ", \"routes\": [" MINIMAL_ROUTE "], "
                                  "\"pipeline\": {\"max_headers\": 20, "
                                  "\"max_header_bytes\": 60}}");

    (void)state;
    assert_int_equal(cfg->max_headers, 20);
    assert_int_equal(cfg->max_header_bytes, 60);
    kd_config_destroy(cfg);
    assert_error("{" MINIMAL_KAFKA ", \"routes\": [" MINIMAL_ROUTE "], "
                 "\"pipeline\": {\"max_headers\": 0}}",
                 "kdedup.json: pipeline.max_headers: expected an integer from 1 to "
                 "1000000, got 0");
    assert_error("{" MINIMAL_KAFKA ", \"routes\": [" MINIMAL_ROUTE "], "
                 "\"pipeline\": {\"max_header_bytes\": \"many\"}}",
                 "kdedup.json: pipeline.max_header_bytes: expected an integer from 1 to "
                 "1073741824, got \"many\"");
}

static void test_env_interpolation(void **state) {
    kd_config *cfg;

    (void)state;
    setenv("KD_TEST_GROUP", "orders-dedup-pod-7", 1);
    setenv("KD_TEST_PASSWORD", "hunter2", 1);
    unsetenv("KD_TEST_UNSET");
    cfg = assert_valid("{\"kafka\": {\"brokers\": \"${KD_TEST_UNSET:-k:9092}\", "
                       "\"group_id\": \"${KD_TEST_GROUP}\", \"producer\": "
                       "{\"sasl.password\": \"${KD_TEST_PASSWORD}\", \"linger.ms\": 5}}, "
                       "\"store\": {\"sync\": \"${KD_TEST_UNSET:-false}\", "
                       "\"path\": \"/data/${KD_TEST_GROUP}/db\"}, "
                       "\"routes\": [" MINIMAL_ROUTE "]}");
    assert_string_equal(cfg->brokers, "k:9092");
    assert_string_equal(cfg->group_id, "orders-dedup-pod-7");
    assert_string_equal(kd_config_prop_get(&cfg->producer, "sasl.password"), "hunter2");
    assert_string_equal(kd_config_prop_get(&cfg->producer, "linger.ms"), "5");
    assert_false(cfg->store_sync);
    assert_string_equal(cfg->store_path, "/data/orders-dedup-pod-7/db");
    kd_config_destroy(cfg);

    assert_error("{\"kafka\": {\"brokers\": \"${KD_TEST_UNSET}\", \"group_id\": \"g\"}, "
                 "\"routes\": [" MINIMAL_ROUTE "]}",
                 "kdedup.json: kafka.brokers: environment variable KD_TEST_UNSET is not "
                 "set (and no ${KD_TEST_UNSET:-default})");
    assert_error("{\"kafka\": {\"brokers\": \"${KD_TEST_GROUP\", \"group_id\": \"g\"}, "
                 "\"routes\": [" MINIMAL_ROUTE "]}",
                 "kdedup.json: kafka.brokers: unterminated ${ in a string value");
    assert_error("{\"kafka\": {\"brokers\": \"${A:=b}\", \"group_id\": \"g\"}, "
                 "\"routes\": [" MINIMAL_ROUTE "]}",
                 "kdedup.json: kafka.brokers: expected ${NAME}, ${NAME:-default} or "
                 "${file:PATH} in a string value");
}

/* Shell semantics for set-but-empty variables, $${ for a literal ${, and
 * bounds on what expansion may produce. */
static void test_env_edge_cases(void **state) {
    kd_config *cfg;
    char *big;

    (void)state;
    setenv("KD_TEST_EMPTY", "", 1);
    cfg = assert_valid("{\"kafka\": {\"brokers\": \"${KD_TEST_EMPTY:-k:9092}\", "
                       "\"group_id\": \"a$${b}c$$d${KD_TEST_EMPTY}\"}, "
                       "\"routes\": [" MINIMAL_ROUTE "]}");
    assert_string_equal(cfg->brokers, "k:9092");
    assert_string_equal(cfg->group_id, "a${b}c$$d");
    kd_config_destroy(cfg);
    assert_error("{\"kafka\": {\"brokers\": \"${KD_TEST_EMPTY}\", \"group_id\": "
                 "\"g\"}, \"routes\": [" MINIMAL_ROUTE "]}",
                 "kdedup.json: kafka.brokers: expected \"host:port,host:port...\" or "
                 "\"mock:N\" (N 1-9), got \"${KD_TEST_EMPTY}\"");
    assert_error(
        "{\"kafka\": {\"brokers\": \"k:1\", \"group_id\": \"$${x\"}, "
        "\"routes\": [{\"from\": \"a\", \"to\": \"b$${\"}]}",
        "kdedup.json: routes[0].to: expected a topic name (1-249 of a-z A-Z 0-9 . "
        "_ -), got \"b$${\"");

    /* One value: at most KD_CONFIG_MAX_VALUE_BYTES once expanded. */
    big = malloc(200 * 1024 + 1);
    memset(big, 'x', 200 * 1024);
    big[200 * 1024] = '\0';
    setenv("KD_TEST_BIG", big, 1);
    free(big);
    assert_error("{\"kafka\": {\"brokers\": \"k:1\", \"group_id\": "
                 "\"${KD_TEST_BIG}${KD_TEST_BIG}\"}, \"routes\": [" MINIMAL_ROUTE "]}",
                 "kdedup.json: kafka.group_id: expands to more than 262144 bytes");
    /* The whole file: at most KD_CONFIG_MAX_EXPANDED_BYTES from outside. */
    char json[4096] = "{\"kafka\": {\"brokers\": \"k:1\", \"group_id\": \"g\", "
                      "\"producer\": {";
    for (int i = 0; i < 21; i++)
        snprintf(json + strlen(json), sizeof(json) - strlen(json),
                 "%s\"p%d\": \"${KD_TEST_BIG}\"", i ? ", " : "", i);
    strcat(json, "}}, \"routes\": [" MINIMAL_ROUTE "]}");
    assert_error(json, "kdedup.json: kafka.producer[\"p20\"]: the environment and files "
                       "add more than 4194304 bytes to the config in all");
    unsetenv("KD_TEST_BIG");
}

/* Writes content to a new temporary file; its name goes to path. */
static void temp_file(char *path, const char *content, size_t len) {
    int fd;

    strcpy(path, "/tmp/kdedup-secret-XXXXXX");
    fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, content, len), (ssize_t)len);
    close(fd);
}

static void test_file_secrets(void **state) {
    char path[64], big_path[64], json[1024], want[512], err[512];
    kd_config *cfg;
    char *big;

    (void)state;
    temp_file(path, "file-s3cret-value\n", 18);
    snprintf(json, sizeof(json),
             "{\"kafka\": {\"brokers\": \"k:1\", \"group_id\": \"g\", \"producer\": "
             "{\"sasl.password\": \"${file:%s}\", \"client.id\": \"c-${file:%s}\"}}, "
             "\"routes\": [" MINIMAL_ROUTE "]}",
             path, path);
    cfg = assert_valid(json);
    assert_string_equal(kd_config_prop_get(&cfg->producer, "sasl.password"),
                        "file-s3cret-value"); /* the trailing newline dropped */
    assert_string_equal(kd_config_prop_get(&cfg->producer, "client.id"),
                        "c-file-s3cret-value");
    snprintf(want, sizeof(want), "${file:%s}", path);
    assert_string_equal(kd_config_template(cfg, "kafka.producer[\"sasl.password\"]"),
                        want);
    assert_null(kd_config_template(cfg, "kafka.group_id"));
    kd_config_destroy(cfg);

    /* Unreadable, not a file, too large, empty name: clear errors that
     * name the file, never its content. */
    static const struct {
        const char *ref, *want;
    } bad[] = {
        {"${file:/nonexistent/kd-secret}",
         "cannot read ${file:/nonexistent/kd-secret}: No such file or directory"},
        {"${file:/tmp}", "cannot read ${file:/tmp}: not a regular file"},
        {"${file:}", "expected ${file:PATH} with a path of 1 to 255 bytes"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        snprintf(json, sizeof(json),
                 "{\"kafka\": {\"brokers\": \"k:1\", \"group_id\": \"g\", "
                 "\"producer\": {\"sasl.password\": \"%s\"}}, \"routes\": "
                 "[" MINIMAL_ROUTE "]}",
                 bad[i].ref);
        snprintf(want, sizeof(want), "kdedup.json: kafka.producer[\"sasl.password\"]: %s",
                 bad[i].want);
        assert_error(json, want);
    }
    big = calloc(1, KD_CONFIG_MAX_VALUE_BYTES + 1);
    memset(big, 's', KD_CONFIG_MAX_VALUE_BYTES + 1);
    temp_file(big_path, big, KD_CONFIG_MAX_VALUE_BYTES + 1);
    free(big);
    snprintf(json, sizeof(json),
             "{\"kafka\": {\"brokers\": \"k:1\", \"group_id\": \"${file:%s}\"}, "
             "\"routes\": [" MINIMAL_ROUTE "]}",
             big_path);
    snprintf(want, sizeof(want),
             "kdedup.json: kafka.group_id: ${file:%s} is larger than 262144 bytes",
             big_path);
    assert_error(json, want);
    remove(big_path);

    /* A file's content where a topic belongs: shown as written. */
    remove(path);
    temp_file(path, "not a topic s3cret", 18);
    snprintf(json, sizeof(json),
             "{" MINIMAL_KAFKA ", \"routes\": [{\"from\": \"${file:%s}\", "
             "\"to\": \"b\", \"on_missing_key\": \"drop\"}]}",
             path);
    assert_null(parse(json, err, sizeof(err)));
    assert_null(strstr(err, "s3cret"));
    assert_non_null(strstr(err, path));
    remove(path);
}

/* Errors never show a value from the environment: they show the value as
 * written; what a rule prints from a secret's value is masked all the same. */
static void test_env_never_shown(void **state) {
    char err[512] = "";
    kd_config *cfg;

    (void)state;
    setenv("KD_TEST_TOPIC", "topic-s3cret", 1);
    setenv("KD_TEST_SHORT", "ab", 1);
    static const char *const rejected[] = {
        "{" MINIMAL_KAFKA ", \"routes\": [{\"from\": \"${KD_TEST_TOPIC}\", \"to\": "
        "\"${KD_TEST_TOPIC}\", \"on_missing_key\": \"drop\"}]}",
        "{\"kafka\": {\"brokers\": \"k:1\", \"group_id\": \"g\", \"producer\": "
        "{\"sasl.password\": \"${KD_TEST_TOPIC}\"}}, \"routes\": [{\"from\": "
        "\"topic-s3cret\", \"to\": \"topic-s3cret\", \"on_missing_key\": \"drop\"}]}",
        "{" MINIMAL_KAFKA ", \"routes\": [{\"from\": \"${KD_TEST_TOPIC}\", \"to\": "
        "\"b\", \"on_missing_key\": \"drop\"}, {\"from\": \"${KD_TEST_TOPIC}\", "
        "\"to\": \"c\", \"on_missing_key\": \"drop\"}]}",
        "{" MINIMAL_KAFKA ", \"routes\": [{\"from\": \"${KD_TEST_SHORT}\", \"to\": "
        "\"${KD_TEST_SHORT}\", \"on_missing_key\": \"drop\"}]}",
        "{" MINIMAL_KAFKA ", \"routes\": [{\"from\": \"${KD_TEST_TOPIC}!\", \"to\": "
        "\"b\"}]}",
    };
    for (size_t i = 0; i < sizeof(rejected) / sizeof(rejected[0]); i++) {
        assert_null(parse(rejected[i], err, sizeof(err)));
        if (strstr(err, "s3cret") || strstr(err, "\"ab\"") || !strstr(err, "${KD_TEST_"))
            fail_msg("case %zu shows a value from the environment: %s", i, err);
    }

    setenv("KD_TEST_MS", "700000", 1);
    setenv("KD_TEST_DUR", "10m", 1);
    assert_error(
        "{\"kafka\": {\"brokers\": \"k:1\", \"group_id\": \"g\", \"producer\": "
        "{\"delivery.timeout.ms\": \"${KD_TEST_MS}\"}}, \"routes\": "
        "[" MINIMAL_ROUTE "], \"dedup\": {\"inflight_timeout\": \"${KD_TEST_DUR}\"}}",
        "kdedup.json: dedup.inflight_timeout: expected a duration longer than the "
        "producer's delivery.timeout.ms (${KD_TEST_MS}), got ${KD_TEST_DUR}");

    cfg = assert_valid("{\"kafka\": {\"brokers\": \"k:1\", \"group_id\": "
                       "\"g-${KD_TEST_TOPIC:-none}\", \"consumer\": {\"client.id\": "
                       "\"${KD_TEST_SHORT}\", \"x\": \"${KD_TEST_UNSET:-d}\"}}, "
                       "\"routes\": [" MINIMAL_ROUTE "]}");
    assert_string_equal(kd_config_template(cfg, "kafka.group_id"),
                        "g-${KD_TEST_TOPIC:-none}");
    assert_string_equal(kd_config_template(cfg, "kafka.consumer[\"client.id\"]"),
                        "${KD_TEST_SHORT}");
    assert_null(kd_config_template(cfg, "kafka.consumer[\"x\"]")); /* a default */
    assert_null(kd_config_template(cfg, "kafka.brokers"));
    kd_config_destroy(cfg);
}

/* kd_config_redact() masks secrets (the values of secret keys) taken from
 * the environment or a file, and nothing else: a broker list, a topic, a
 * group id or a client id is shown as it is (issue 31, item 9). */
static void test_redact_secrets_only(void **state) {
    char out[160];
    kd_config *cfg;

    (void)state;
    setenv("KD_TEST_BROKERS", "kafka-0.kafka:9093,kafka-1.kafka:9093", 1);
    setenv("KD_TEST_TOPIC", "orders-eu", 1);
    setenv("KD_TEST_PW", "pw-s3cret-value", 1);
    setenv("KD_TEST_USER", "kdedup-eu", 1);
    cfg = assert_valid(
        "{\"kafka\": {\"brokers\": \"${KD_TEST_BROKERS}\", \"group_id\": "
        "\"g-${KD_TEST_TOPIC}\", \"consumer\": {\"client.id\": \"${KD_TEST_TOPIC}-c\", "
        "\"sasl.username\": \"${KD_TEST_USER}\", \"sasl.password\": \"${KD_TEST_PW}\"}}, "
        "\"routes\": [{\"from\": \"${KD_TEST_TOPIC}\", \"to\": \"b\", "
        "\"on_missing_key\": \"drop\"}], \"admin\": {\"token\": "
        "\"${KD_TEST_PW}-and-more\"}}");
    assert_string_equal(kd_config_redact(cfg,
                                         "kafka-0.kafka:9093/bootstrap: Connect failed",
                                         out, sizeof(out)),
                        "kafka-0.kafka:9093/bootstrap: Connect failed");
    assert_string_equal(kd_config_redact(cfg,
                                         "orders-eu [0] from g-orders-eu, orders-eu-c",
                                         out, sizeof(out)),
                        "orders-eu [0] from g-orders-eu, orders-eu-c");
    assert_string_equal(
        kd_config_redact(cfg, "user kdedup-eu, password pw-s3cret-value: ab", out,
                         sizeof(out)),
        "user ${KD_TEST_USER}, password ${KD_TEST_PW}: ab"); /* 2 bytes: not masked */
    assert_string_equal(
        kd_config_redact(cfg, "pw-s3cret-value-and-more", out, sizeof(out)),
        "${KD_TEST_PW}-and-more"); /* the token: as written */
    assert_string_equal(kd_config_redact(cfg, "cut: pw-s3", out, sizeof(out)),
                        "cut: ${KD_TEST_PW}");
    assert_string_equal(kd_config_redact(cfg, "pw-s3cret-value", out, 8), "${KD_TE");
    assert_string_equal(kd_config_redact(NULL, "pw-s3cret-value", out, sizeof(out)),
                        "pw-s3cret-value");
    assert_true(kd_config_is_secret("kafka.producer[\"sasl.username\"]"));
    assert_true(kd_config_is_secret("kafka.consumer[\"ssl.keystore.location\"]"));
    assert_true(kd_config_is_secret("admin.token"));
    assert_true(kd_config_is_secret("dedup.previous_signing_key"));
    assert_false(kd_config_is_secret("kafka.brokers"));
    assert_false(kd_config_is_secret("routes[0].from"));
    assert_false(kd_config_is_secret("kafka.consumer[\"client.id\"]"));
    assert_false(kd_config_is_secret("kafka.consumer[\"security.protocol\"]"));
    kd_config_destroy(cfg);
}

/* Several configs mask together (the log's, across reloads): at each place
 * the longest value of any of them is masked, whole. */
static void test_redact_any(void **state) {
    const kd_config *both[2];
    char out[160];

    (void)state;
    setenv("KD_TEST_OLD", "rotated-pw", 1);
    setenv("KD_TEST_NEW", "rotated-pw-2", 1);
    both[0] = assert_valid("{\"kafka\": {\"brokers\": \"k:1\", \"group_id\": \"g\", "
                           "\"producer\": {\"sasl.password\": \"${KD_TEST_OLD}\"}}, "
                           "\"routes\": [" MINIMAL_ROUTE "]}");
    both[1] = assert_valid("{\"kafka\": {\"brokers\": \"k:1\", \"group_id\": \"g\", "
                           "\"producer\": {\"sasl.password\": \"${KD_TEST_NEW}\"}}, "
                           "\"routes\": [" MINIMAL_ROUTE "]}");
    assert_string_equal(kd_config_redact_any(both, 2, "now rotated-pw-2, was rotated-pw.",
                                             out, sizeof(out)),
                        "now ${KD_TEST_NEW}, was ${KD_TEST_OLD}.");
    assert_string_equal(
        kd_config_redact_any(both, 1, "now rotated-pw-2", out, sizeof(out)),
        "now ${KD_TEST_OLD}-2"); /* one config knows one value */
    assert_string_equal(kd_config_redact_any(both, 0, "rotated-pw", out, sizeof(out)),
                        "rotated-pw");
    kd_config_destroy((kd_config *)both[0]);
    kd_config_destroy((kd_config *)both[1]);
}

static void test_durations(void **state) {
    uint64_t ms;

    (void)state;
    assert_true(kd_config_parse_duration("250ms", &ms));
    assert_int_equal(ms, 250);
    assert_true(kd_config_parse_duration("30s", &ms));
    assert_int_equal(ms, 30000);
    assert_true(kd_config_parse_duration("5m", &ms));
    assert_int_equal(ms, 300000);
    assert_true(kd_config_parse_duration("24h", &ms));
    assert_int_equal(ms, 86400000);
    assert_true(kd_config_parse_duration("0s", &ms));
    assert_int_equal(ms, 0);
    assert_true(kd_config_parse_duration("1h30m", &ms));
    assert_int_equal(ms, 5400000);
    assert_true(kd_config_parse_duration("7d", &ms));
    assert_int_equal(ms, 7 * 86400000ull);
    assert_true(kd_config_parse_duration("1d2h3m4s5ms", &ms));
    assert_int_equal(ms, 86400000ull + 2 * 3600000 + 3 * 60000 + 4000 + 5);
    const char *bad[] = {"",
                         "5",
                         "5 m",
                         "-5s",
                         "5w",
                         "1.5s",
                         "s",
                         "5ms ",
                         "ms5",
                         "1m1h",
                         "1h1h",
                         "30m1d",
                         "1s1ms1s",
                         "off",
                         "1h 30m",
                         "1h30",
                         "99999999999999999999s",
                         "300000000000d",
                         NULL};
    for (int i = 0; bad[i]; i++)
        if (kd_config_parse_duration(bad[i], &ms))
            fail_msg("accepted duration \"%s\"", bad[i]);
    assert_error("{" MINIMAL_KAFKA ", \"routes\": [" MINIMAL_ROUTE "], "
                 "\"dedup\": {\"ttl\": \"1 day\"}}",
                 "kdedup.json: dedup.ttl: expected a duration like \"250ms\", \"30s\", "
                 "\"1h30m\" or \"7d\", or \"off\", got \"1 day\"");
    assert_error("{" MINIMAL_KAFKA ", \"routes\": [" MINIMAL_ROUTE "], "
                 "\"dedup\": {\"ttl\": 3600}}",
                 "kdedup.json: dedup.ttl: expected a duration like \"250ms\", \"30s\", "
                 "\"1h30m\" or \"7d\", or \"off\", got 3600");
    /* "off" where 0 turns a key off; elsewhere a duration it is not. */
    kd_config *cfg =
        assert_valid("{" MINIMAL_KAFKA ", \"routes\": [" MINIMAL_ROUTE "], "
                     "\"dedup\": {\"ttl\": \"off\", \"inflight_timeout\": \"1h30m\"}}");
    assert_int_equal(cfg->ttl_ms, 0);
    assert_int_equal(cfg->inflight_timeout_ms, 5400000);
    kd_config_destroy(cfg);
    cfg = assert_valid("{" MINIMAL_KAFKA ", \"routes\": [" MINIMAL_ROUTE "], "
                       "\"dedup\": {\"ttl\": \"7d\"}}");
    assert_int_equal(cfg->ttl_ms, 7 * 86400000ull);
    kd_config_destroy(cfg);
    assert_error("{" MINIMAL_KAFKA ", \"routes\": [" MINIMAL_ROUTE "], "
                 "\"pipeline\": {\"shutdown_grace\": \"off\"}}",
                 "kdedup.json: pipeline.shutdown_grace: expected a duration like "
                 "\"250ms\", \"30s\", \"1h30m\" or \"7d\", got \"off\"");
}

/* Numbers out of every integer's range are refused before any conversion
 * (converting 1e300 to an integer is undefined behaviour). */
static void test_integer_range(void **state) {
    (void)state;
    static const struct {
        const char *num, *shown;
    } cases[] = {
        {"1e300", "1e+300"},
        {"-1e300", "-1e+300"},
        {"9223372036854775808", "9.2233720368547758e+18"}, /* 2^63 */
        {"1e19", "1e+19"},
    };
    char json[512], want[512];

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        snprintf(json, sizeof(json),
                 "{" MINIMAL_KAFKA ", \"routes\": [" MINIMAL_ROUTE "], \"dedup\": "
                 "{\"max_key_bytes\": %s}}",
                 cases[i].num);
        snprintf(want, sizeof(want),
                 "kdedup.json: dedup.max_key_bytes: expected an integer from 1 to 65535, "
                 "got %s",
                 cases[i].shown);
        assert_error(json, want);
        snprintf(json, sizeof(json),
                 "{\"kafka\": {\"brokers\": \"k:1\", \"group_id\": \"g\", "
                 "\"producer\": {\"linger.ms\": %s}}, \"routes\": [" MINIMAL_ROUTE "]}",
                 cases[i].num);
        snprintf(
            want, sizeof(want),
            "kdedup.json: kafka.producer[\"linger.ms\"]: expected a string, number or "
            "boolean, got %s",
            cases[i].shown);
        assert_error(json, want);
    }
    kd_config *cfg = assert_valid("{" MINIMAL_KAFKA ", \"routes\": [" MINIMAL_ROUTE "], "
                                  "\"pipeline\": {\"batch_max\": 1e2}}");
    assert_int_equal(cfg->batch_max, 100);
    kd_config_destroy(cfg);
}

/* One bad file per rule, with the whole message. */
static void test_rules(void **state) {
    (void)state;
    static const struct {
        const char *json, *want;
    } cases[] = {
        {"[]", "kdedup.json: expected a JSON object at the top, got []"},
        {"{\"kafka\": {\"brokers\": \"k:1\", \"group_id\": \"g\"}",
         "kdedup.json: invalid JSON at line 1, column 45 (truncated?)"},
        {"{}\n{}", "kdedup.json: invalid JSON: trailing data at line 2, column 1"},
        /* README's config block, pasted with its comments */
        {"{\n  \"kafka\": {\n    \"brokers\": \"k:9092\",  // or \"mock:N\"\n  }\n}",
         "kdedup.json: invalid JSON at line 3, column 28 (a comment? JSON has none: "
         "remove the // and /* */ parts)"},
        {"{ /* a comment */ }",
         "kdedup.json: invalid JSON at line 1, column 4 (a comment? JSON has none: "
         "remove the // and /* */ parts)"},
        {"{" MINIMAL_KAFKA "}", "kdedup.json: routes: missing (required)"},
        {"{" MINIMAL_KAFKA ", \"routes\": []}",
         "kdedup.json: routes: expected a non-empty array of routes, got []"},
        {"{\"kafka\": {\"group_id\": \"g\"}, \"routes\": [" MINIMAL_ROUTE "]}",
         "kdedup.json: kafka.brokers: missing (bootstrap servers, or \"mock:N\" for an "
         "embedded mock cluster)"},
        {"{" MINIMAL_KAFKA ", \"routes\": [" MINIMAL_ROUTE
         ", {\"from\": \"c\", \"to\": 42}]}",
         "kdedup.json: routes[1].to: expected a topic name (1-249 of a-z A-Z 0-9 . _ -), "
         "got 42"},
        {"{" MINIMAL_KAFKA ", \"routes\": [{\"from\": \"a b\", \"to\": \"b\"}]}",
         "kdedup.json: routes[0].from: expected a topic name (1-249 of a-z A-Z 0-9 . _ "
         "-), "
         "got \"a b\""},
        {"{" MINIMAL_KAFKA ", \"routes\": [{\"from\": \"a\", \"to\": \"a\", "
         "\"on_missing_key\": \"drop\"}]}",
         "kdedup.json: routes[0]: \"from\" and \"to\" are both \"a\": a route may not "
         "feed "
         "its own source"},
        {"{" MINIMAL_KAFKA ", \"routes\": [{\"from\": \"a\", \"to\": \"b\"}]}",
         "kdedup.json: routes[0]: \"on_missing_key\": \"dead_letter\" needs a "
         "\"dead_letter_topic\" (or set \"forward\" or \"drop\")"},
        {"{" MINIMAL_KAFKA ", \"routes\": [" MINIMAL_ROUTE ", " MINIMAL_ROUTE "]}",
         "kdedup.json: routes[1]: \"from\": \"a\" is already the source of routes[0]"},
        /* kdedup's own headers are never a key: a source could plant them */
        {"{" MINIMAL_KAFKA ", \"routes\": [{\"from\": \"a\", \"to\": \"b\", "
         "\"on_missing_key\": \"drop\", \"key_header\": \"kdedup-source\"}]}",
         "kdedup.json: routes[0].key_header: \"kdedup-source\": headers named kdedup-* "
         "are "
         "kdedup's own (stripped from what it forwards)"},
        {"{" MINIMAL_KAFKA ", \"routes\": [{\"from\": \"a\", \"to\": \"b\", "
         "\"on_missing_key\": \"skip\"}]}",
         "kdedup.json: routes[0].on_missing_key: expected one of \"forward\", \"drop\", "
         "\"dead_letter\", got \"skip\""},
        {"{" MINIMAL_KAFKA ", \"routes\": [" MINIMAL_ROUTE
         "], \"dedup\": {\"tll\": \"1h\"}}",
         "kdedup.json: dedup.tll: unknown key (expected one of: namespace, ttl, "
         "inflight_timeout, max_key_bytes, max_json_bytes, handover, scan_max_records, "
         "scan_step, scan_cache_bytes, "
         "signing_key, "
         "previous_signing_key)"},
        /* a signing key that can be guessed is refused, and never shown */
        {"{" MINIMAL_KAFKA ", \"routes\": [" MINIMAL_ROUTE
         "], \"dedup\": {\"signing_key\": \"short-secret\"}}",
         "kdedup.json: dedup.signing_key: expected at least 16 bytes (a random secret), "
         "got 12"},
        {"{" MINIMAL_KAFKA ", \"routes\": [" MINIMAL_ROUTE
         "], \"dedup\": {\"previous_signing_key\": \"0123456789abcdef\"}}",
         "kdedup.json: dedup.previous_signing_key: needs dedup.signing_key (the key that "
         "replaced it)"},
        {"{" MINIMAL_KAFKA ", \"routes\": [" MINIMAL_ROUTE "], \"extra\": 1}",
         "kdedup.json: extra: unknown key (expected one of: kafka, routes, dedup, store, "
         "http, admin, log, pipeline)"},
        {"{" MINIMAL_KAFKA ", \"routes\": [" MINIMAL_ROUTE "], \"log\": {\"level\": "
         "\"info\", \"level\": \"debug\"}}",
         "kdedup.json: log.level: duplicate key"},
        {"{" MINIMAL_KAFKA ", \"routes\": [" MINIMAL_ROUTE "], \"dedup\": "
         "{\"max_key_bytes\": 0}}",
         "kdedup.json: dedup.max_key_bytes: expected an integer from 1 to 65535, got 0"},
        {"{" MINIMAL_KAFKA ", \"routes\": [" MINIMAL_ROUTE "], \"dedup\": "
         "{\"scan_max_records\": 0}}",
         "kdedup.json: dedup.scan_max_records: expected an integer from 1 to 1000000000, "
         "got 0"},
        {"{" MINIMAL_KAFKA ", \"routes\": [" MINIMAL_ROUTE "], \"dedup\": "
         "{\"max_key_bytes\": 2.5}}",
         "kdedup.json: dedup.max_key_bytes: expected an integer from 1 to 65535, got "
         "2.5"},
        {"{" MINIMAL_KAFKA ", \"routes\": [" MINIMAL_ROUTE "], \"store\": {\"sync\": "
         "\"yes\"}}",
         "kdedup.json: store.sync: expected true or false, got \"yes\""},
        {"{" MINIMAL_KAFKA ", \"routes\": [" MINIMAL_ROUTE
         "], \"store\": {\"path\": \"\"}}",
         "kdedup.json: store.path: expected a non-empty string, got \"\""},
        {"{" MINIMAL_KAFKA ", \"routes\": [" MINIMAL_ROUTE "], \"store\": []}",
         "kdedup.json: store: expected an object, got []"},
        {"{" MINIMAL_KAFKA ", \"routes\": [" MINIMAL_ROUTE "], \"http\": {\"listen\": "
         "\"9464\"}}",
         "kdedup.json: http.listen: expected \"host:port\", got \"9464\""},
        {"{\"kafka\": {\"brokers\": \"mock:0\", \"group_id\": \"g\"}, \"routes\": "
         "[" MINIMAL_ROUTE "]}",
         "kdedup.json: kafka.brokers: expected \"host:port,host:port...\" or \"mock:N\" "
         "(N 1-9), got \"mock:0\""},
        {"{\"kafka\": {\"brokers\": \"k:9092\", \"group_id\": \"g\", \"consumer\": "
         "{\"group.id\": \"x\"}}, \"routes\": [" MINIMAL_ROUTE "]}",
         "kdedup.json: kafka.consumer[\"group.id\"]: set by kdedup itself (use "
         "kafka.brokers and kafka.group_id; offsets are stored by kdedup)"},
        {"{\"kafka\": {\"brokers\": \"k:9092\", \"group_id\": \"g\", \"consumer\": "
         "{\"enable.auto.offset.store\": true}}, \"routes\": [" MINIMAL_ROUTE "]}",
         "kdedup.json: kafka.consumer[\"enable.auto.offset.store\"]: set by kdedup "
         "itself "
         "(use kafka.brokers and kafka.group_id; offsets are stored by kdedup)"},
        {"{\"kafka\": {\"brokers\": \"k:9092\", \"group_id\": \"g\", \"producer\": "
         "{\"linger.ms\": [5]}}, \"routes\": [" MINIMAL_ROUTE "]}",
         "kdedup.json: kafka.producer[\"linger.ms\"]: expected a string, number or "
         "boolean, got [5]"},
        {"{\"kafka\": {\"brokers\": \"k:9092\", \"group_id\": \"g\", \"producer\": "
         "{\"message.timeout.ms\": \"600000\"}}, \"routes\": [" MINIMAL_ROUTE "]}",
         "kdedup.json: dedup.inflight_timeout: expected a duration longer than the "
         "producer's message.timeout.ms (600000ms), got 600000ms"},
        {"{" MINIMAL_KAFKA ", \"routes\": [" MINIMAL_ROUTE "], \"dedup\": "
         "{\"inflight_timeout\": \"1m\"}}",
         "kdedup.json: dedup.inflight_timeout: expected a duration longer than the "
         "producer's message.timeout.ms (120000ms), got 60000ms"},
        /* an empty value is left at the default, so the default is checked */
        {"{\"kafka\": {\"brokers\": \"k:9092\", \"group_id\": \"g\", \"producer\": "
         "{\"message.timeout.ms\": \"\"}}, \"routes\": [" MINIMAL_ROUTE "], \"dedup\": "
         "{\"inflight_timeout\": \"1m\"}}",
         "kdedup.json: dedup.inflight_timeout: expected a duration longer than the "
         "producer's message.timeout.ms (120000ms), got 60000ms"},
        /* librdkafka's alias of message.timeout.ms is checked too */
        {"{\"kafka\": {\"brokers\": \"k:9092\", \"group_id\": \"g\", \"producer\": "
         "{\"delivery.timeout.ms\": \"0\"}}, \"routes\": [" MINIMAL_ROUTE "]}",
         "kdedup.json: dedup.inflight_timeout: expected a duration longer than the "
         "producer's delivery.timeout.ms (0ms, i.e. never), got 600000ms"},
    };

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        assert_error(cases[i].json, cases[i].want);
}

/* A secret's value never appears in a message, whatever is wrong with it. */
static void test_secrets_not_shown(void **state) {
    char err[512] = "";
    kd_config *cfg;

    (void)state;
    cfg =
        parse("{\"kafka\": {\"brokers\": \"k:9092\", \"group_id\": \"g\", \"producer\": "
              "{\"sasl.password\": [\"hunter2\"]}}, \"routes\": [" MINIMAL_ROUTE "]}",
              err, sizeof(err));
    assert_null(cfg);
    assert_null(strstr(err, "hunter2"));
    assert_string_equal(err, "kdedup.json: kafka.producer[\"sasl.password\"]: expected a "
                             "string, number or boolean, got (a secret, not shown)");
    assert_true(kd_config_is_secret("ssl.key.password"));
    assert_true(kd_config_is_secret("sasl.oauthbearer.client.secret"));
    assert_false(kd_config_is_secret("linger.ms"));
}

static void test_load_errors(void **state) {
    char err[512], path[] = "/tmp/kdedup-config-XXXXXX";
    int fd = mkstemp(path);
    kd_config *cfg;
    FILE *fp;

    (void)state;
    assert_null(kd_config_load("/nonexistent/kdedup.json", err, sizeof(err)));
    assert_string_equal(err, "/nonexistent/kdedup.json: cannot open: No such file or "
                             "directory");
    /* Larger than any config: refused before parsing. */
    assert_true(fd >= 0);
    fp = fdopen(fd, "w");
    for (int i = 0; i < (1 << 20) / 8 + 1; i++)
        fputs("        ", fp);
    fclose(fp);
    cfg = kd_config_load(path, err, sizeof(err));
    assert_null(cfg);
    assert_non_null(strstr(err, "larger than 1048576 bytes"));
    remove(path);

    /* Nested absurdly deep: a clear error, no crash. */
    char *deep = malloc(200001);
    for (int i = 0; i < 100000; i++)
        deep[i] = '[';
    for (int i = 100000; i < 200000; i++)
        deep[i] = ']';
    deep[200000] = '\0';
    assert_null(kd_config_parse(deep, 200000, "deep.json", err, sizeof(err)));
    assert_non_null(strstr(err, "deep.json: invalid JSON at line 1"));
    free(deep);
    assert_null(kd_config_parse("", 0, "empty.json", err, sizeof(err)));
    assert_string_equal(err, "empty.json: invalid JSON at line 1, column 1 (truncated?)");
}

static void test_topics(void **state) {
    (void)state;
    assert_true(kd_config_valid_topic("orders.deduped-v2_x"));
    assert_false(kd_config_valid_topic(""));
    assert_false(kd_config_valid_topic("."));
    assert_false(kd_config_valid_topic(".."));
    assert_false(kd_config_valid_topic("a/b"));
    char longname[251];
    memset(longname, 'a', 250);
    longname[250] = '\0';
    assert_false(kd_config_valid_topic(longname));
    longname[249] = '\0';
    assert_true(kd_config_valid_topic(longname));
}

#define R_A "{\"from\": \"a\", \"to\": \"a.out\", \"on_missing_key\": \"drop\"}"
#define R_B "{\"from\": \"b\", \"to\": \"b.out\", \"on_missing_key\": \"drop\"}"
#define R_C "{\"from\": \"c\", \"to\": \"c.out\", \"on_missing_key\": \"drop\"}"

/* Asserts the diff from old_json to new_json. */
static void assert_diff(const char *old_json, const char *new_json, bool refused,
                        bool routes, const char *want) {
    kd_config *a = assert_valid(old_json), *b = assert_valid(new_json);
    kd_config_diff d;

    kd_config_diff_of(a, b, &d);
    if (strcmp(d.what, want) != 0)
        fail_msg("got:  %s\nwant: %s", d.what, want);
    assert_int_equal(d.refused, refused);
    assert_int_equal(d.routes, routes);
    kd_config_destroy(a);
    kd_config_destroy(b);
}

/* Reload: routes, log.level and pipeline.batch_max change; anything else is
 * refused by name, never by value. */
static void test_reload_diff(void **state) {
    (void)state;
    assert_diff("{" MINIMAL_KAFKA ", \"routes\": [" R_A "]}",
                "{" MINIMAL_KAFKA ", \"routes\": [" R_A "]}", false, false,
                "nothing to change");
    assert_diff("{" MINIMAL_KAFKA ", \"routes\": [" R_A ", " R_B "]}",
                "{" MINIMAL_KAFKA ", \"routes\": [" R_A ", " R_C "]}", false, true,
                "routes added: c; routes removed: b");
    assert_diff("{" MINIMAL_KAFKA ", \"routes\": [" R_A "]}",
                "{" MINIMAL_KAFKA ", \"routes\": [{\"from\": \"a\", \"to\": \"a.out\", "
                "\"on_missing_key\": \"forward\"}], \"log\": {\"level\": \"debug\"}, "
                "\"pipeline\": {\"batch_max\": 7}}",
                false, true,
                "routes changed: a; log.level: info -> debug; "
                "pipeline.batch_max: 1000 -> 7");
    assert_diff("{" MINIMAL_KAFKA ", \"routes\": [" R_A ", " R_B "]}",
                "{" MINIMAL_KAFKA ", \"routes\": [" R_B ", " R_A "]}", false, true,
                "routes reordered");
    assert_diff("{" MINIMAL_KAFKA ", \"routes\": [" R_A
                "], \"log\": {\"level\": \"warn\"}}",
                "{" MINIMAL_KAFKA ", \"routes\": [" R_A "]}", false, false,
                "log.level: warn -> info");
    /* refused, even with allowed changes beside; the secret is not shown */
    assert_diff("{" MINIMAL_KAFKA ", \"routes\": [" R_A "], \"admin\": {\"token\": "
                "\"0123456789abcdef-old\"}}",
                "{\"kafka\": {\"brokers\": \"k:9092\", \"group_id\": \"other\"}, "
                "\"routes\": [" R_B "], \"store\": {\"path\": \"/x\"}, \"admin\": "
                "{\"token\": \"0123456789abcdef-new\"}}",
                true, false,
                "kafka.group_id, admin.token, store.path: cannot change while kdedup "
                "runs (restart it to apply these); nothing changed");
    assert_diff(
        "{" MINIMAL_KAFKA ", \"routes\": [" R_A "]}",
        "{" MINIMAL_KAFKA ", \"routes\": [" R_A "], \"http\": {\"listen\": "
        "\"0.0.0.0:9464\"}}",
        true, false,
        "http.listen: cannot change while kdedup runs (restart it to apply this); "
        "nothing changed");
}

/* admin: defaults, and a token too short to resist guessing. */
static void test_admin(void **state) {
    kd_config *cfg = assert_valid("{" MINIMAL_KAFKA ", \"routes\": [" R_A "]}");

    (void)state;
    assert_string_equal(cfg->admin_listen, "127.0.0.1:9465");
    assert_null(cfg->admin_token);
    kd_config_destroy(cfg);
    cfg = assert_valid("{" MINIMAL_KAFKA ", \"routes\": [" R_A "], \"admin\": "
                       "{\"listen\": \"0.0.0.0:1\", \"token\": \"0123456789abcdef\"}}");
    assert_string_equal(cfg->admin_listen, "0.0.0.0:1");
    assert_string_equal(cfg->admin_token, "0123456789abcdef");
    kd_config_destroy(cfg);
    assert_error("{" MINIMAL_KAFKA ", \"routes\": [" R_A "], \"admin\": {\"token\": "
                 "\"short-secret\"}}",
                 "kdedup.json: admin.token: expected at least 16 bytes (a random "
                 "secret), got 12");
}

/* http.probes_listen: off by default, an address of its own when set. */
static void test_probes_listen(void **state) {
    kd_config *cfg = assert_valid("{" MINIMAL_KAFKA ", \"routes\": [" R_A "]}");

    (void)state;
    assert_null(cfg->http_probes_listen);
    kd_config_destroy(cfg);
    cfg = assert_valid("{" MINIMAL_KAFKA ", \"routes\": [" R_A "], \"http\": "
                       "{\"probes_listen\": \"0.0.0.0:9466\"}}");
    assert_string_equal(cfg->http_probes_listen, "0.0.0.0:9466");
    assert_string_equal(cfg->http_listen, "0.0.0.0:9464");
    kd_config_destroy(cfg);
    assert_error("{" MINIMAL_KAFKA ", \"routes\": [" R_A "], \"http\": "
                 "{\"probes_listen\": \"9466\"}}",
                 "kdedup.json: http.probes_listen: expected \"host:port\", got \"9466\"");
    assert_error("{" MINIMAL_KAFKA ", \"routes\": [" R_A "], \"http\": "
                 "{\"probes_listen\": \"0.0.0.0:9464\"}}",
                 "kdedup.json: http.probes_listen: \"0.0.0.0:9464\" is http.listen too: "
                 "give the probes an address of their own");
    assert_error(
        "{" MINIMAL_KAFKA ", \"routes\": [" R_A "], \"http\": "
        "{\"probes_listen\": \"127.0.0.1:9465\"}}",
        "kdedup.json: http.probes_listen: \"127.0.0.1:9465\" is admin.listen too: "
        "give the probes an address of their own");
}

/* The transactional mode's settings; the transactional.id is freed with the
 * config (a leak LeakSanitizer found in chaos_test under ASan). */
static void test_transactional(void **state) {
    kd_config *cfg =
        assert_valid("{" MINIMAL_KAFKA ", \"routes\": [" R_A "], \"pipeline\": "
                     "{\"delivery\": \"transactional\", "
                     "\"transactional_id\": \"kdedup-a\"}}");

    (void)state;
    assert_int_equal(cfg->delivery, KD_DELIVERY_TRANSACTIONAL);
    assert_string_equal(cfg->transactional_id, "kdedup-a");
    kd_config_destroy(cfg);
}

/* A transaction committed only past transaction.timeout.ms would be
 * aborted by the broker, every one of them: refused at load. */
static void test_transaction_max_age_below_timeout(void **state) {
    (void)state;
    assert_error(
        "{" MINIMAL_KAFKA ", \"routes\": [" R_A "], \"pipeline\": "
        "{\"delivery\": \"transactional\", \"transaction_max_age\": \"15s\"}}",
        "kdedup.json: pipeline.transaction_max_age: expected a duration below the "
        "producer's transaction.timeout.ms (15000ms: the broker aborts an older "
        "transaction), got 15000ms");
    assert_error(
        "{\"kafka\": {\"brokers\": \"k:9092\", \"group_id\": \"g\", "
        "\"producer\": {\"transaction.timeout.ms\": \"30000\"}}, \"routes\": [" R_A
        "], \"pipeline\": {\"delivery\": \"transactional\", "
        "\"transaction_max_age\": \"1m\"}}",
        "kdedup.json: pipeline.transaction_max_age: expected a duration below the "
        "producer's transaction.timeout.ms (30000ms: the broker aborts an older "
        "transaction), got 60000ms");
    kd_config_destroy(assert_valid(
        "{\"kafka\": {\"brokers\": \"k:9092\", \"group_id\": \"g\", "
        "\"producer\": {\"transaction.timeout.ms\": \"30000\"}}, \"routes\": [" R_A
        "], \"pipeline\": {\"delivery\": \"transactional\", \"transaction_max_age\": "
        "\"20s\"}}"));
    /* the default mode has no transactions */
    kd_config_destroy(assert_valid("{" MINIMAL_KAFKA ", \"routes\": [" R_A "], "
                                   "\"pipeline\": {\"transaction_max_age\": \"1m\"}}"));
}

/* GET /v1/routes: every key with its value in force, the key source and
 * the fingerprint written out. */
static void test_routes_json(void **state) {
    kd_config *cfg = assert_valid(
        "{" MINIMAL_KAFKA ", \"routes\": [{\"from\": \"a\", \"to\": \"b\", "
        "\"dead_letter_topic\": \"dl\"}, " R_C ", "
        "{\"name\": \"pay\", \"from\": \"p\", \"to\": \"p.out\", \"on_missing_key\": "
        "\"drop\","
        " \"key\": {\"from\": \"composite\", \"parts\": [{\"from\": \"header\", \"name\":"
        " \"Tenant\"}, {\"from\": \"json\", \"pointer\": \"/id\"}]},"
        " \"fingerprint\": {\"json\": [\"/amount\"], \"headers\": [\"Tenant\"]}},"
        " {\"from\": \"q\", \"to\": \"q.out\", \"on_missing_key\": \"drop\", "
        "\"fingerprint\": false,"
        " \"key\": {\"from\": \"record_key\"}}]}");
    char *json = kd_config_routes_json(cfg);

    (void)state;
    assert_non_null(json);
    assert_non_null(strstr(json,
                           "{\"name\":\"a\",\"from\":\"a\",\"to\":\"b\",\"key_header\":"
                           "\"Idempotency-Key\",\"key\":{\"from\":\"header\",\"name\":"
                           "\"Idempotency-Key\"},\"on_key_conflict\":\"skip\","
                           "\"fingerprint\":{\"value\":\"whole\",\"json\":[],"
                           "\"headers\":[]},\"on_missing_key\":\"dead_letter\","
                           "\"dead_letter_topic\":\"dl\",\"max_retries\":5,"
                           "\"retry_backoff\":\"1000ms\"}"));
    assert_non_null(strstr(json, "\"from\":\"c\""));
    assert_non_null(strstr(json, "\"dead_letter_topic\":null"));
    assert_non_null(strstr(json,
                           "{\"name\":\"pay\",\"from\":\"p\",\"to\":\"p.out\","
                           "\"key_header\":null,\"key\":{\"from\":\"composite\","
                           "\"parts\":[{\"from\":\"header\",\"name\":\"Tenant\"},"
                           "{\"from\":\"json\",\"pointer\":\"/id\"}]},"
                           "\"on_key_conflict\":\"skip\",\"fingerprint\":{\"value\":"
                           "\"json fields\",\"json\":[\"/amount\"],\"headers\":"
                           "[\"Tenant\"]}"));
    assert_non_null(strstr(json, "\"key\":{\"from\":\"record_key\"},\"on_key_conflict\":"
                                 "\"skip\",\"fingerprint\":false"));
    free(json);
    kd_config_destroy(cfg);
}

/* A route's name: its "from" unless given; one per route; spelt as a topic. */
static void test_route_names(void **state) {
    kd_config *cfg = assert_valid(
        "{" MINIMAL_KAFKA ", \"routes\": [" MINIMAL_ROUTE ", {\"name\": \"payments\", "
        "\"from\": \"p\", \"to\": \"q\", \"on_missing_key\": \"drop\"}]}");

    (void)state;
    assert_string_equal(cfg->routes[0].name, "a");
    assert_string_equal(cfg->routes[1].name, "payments");
    kd_config_destroy(cfg);
    assert_error("{" MINIMAL_KAFKA ", \"routes\": [" MINIMAL_ROUTE ", {\"name\": \"a\", "
                 "\"from\": \"p\", \"to\": \"q\", \"on_missing_key\": \"drop\"}]}",
                 "kdedup.json: routes[1]: the name \"a\" is already routes[0]'s (a "
                 "route's name is its \"name\", or else its \"from\")");
    assert_error(
        "{" MINIMAL_KAFKA ", \"routes\": [{\"name\": \"a b\", \"from\": \"p\", "
        "\"to\": \"q\", \"on_missing_key\": \"drop\"}]}",
        "kdedup.json: routes[0].name: expected a route name (1-249 of a-z A-Z 0-9 "
        ". _ -), got \"a b\"");
}

#define ROUTE_WITH(extra)                                                                \
    "{" MINIMAL_KAFKA ", \"routes\": [{\"from\": \"a\", \"to\": \"b\", "                 \
    "\"on_missing_key\": \"drop\", " extra "}]}"

/* Each key source, the shorthand, fingerprint forms and on_key_conflict. */
static void test_key_sources(void **state) {
    kd_config *cfg;

    (void)state;
    cfg = assert_valid(ROUTE_WITH("\"key\": {\"from\": \"record_key\"}"));
    assert_int_equal(cfg->routes[0].key_from, KD_KEY_FROM_RECORD_KEY);
    assert_null(cfg->routes[0].key_header);
    kd_config_destroy(cfg);

    cfg = assert_valid(ROUTE_WITH("\"key\": {\"from\": \"header\", \"name\": \"X-Id\"}"));
    assert_int_equal(cfg->routes[0].key_from, KD_KEY_FROM_HEADER);
    assert_string_equal(cfg->routes[0].key_header, "X-Id");
    kd_config_destroy(cfg);

    cfg = assert_valid(
        ROUTE_WITH("\"key\": {\"from\": \"json\", \"pointer\": \"/a~1b/~0c\"}, "
                   "\"on_key_conflict\": \"forward\", \"fingerprint\": false"));
    assert_int_equal(cfg->routes[0].key_from, KD_KEY_FROM_JSON);
    assert_string_equal(cfg->routes[0].key_parts[0].pointer, "/a~1b/~0c");
    assert_int_equal(cfg->routes[0].on_key_conflict, KD_CONFLICT_FORWARD);
    assert_false(cfg->routes[0].fingerprint);
    kd_config_destroy(cfg);

    cfg = assert_valid(ROUTE_WITH(
        "\"key\": {\"from\": \"composite\", \"parts\": [{\"from\": \"header\", \"name\": "
        "\"Tenant\"}, {\"from\": \"json\", \"pointer\": \"\"}, {\"from\": "
        "\"record_key\"}]}, "
        "\"fingerprint\": {\"headers\": [\"Tenant\", \"Content-Type\"], "
        "\"json\": [\"/order\", \"/a~1b\"]}, "
        "\"dead_letter_topic\": \"d\", \"on_key_conflict\": \"dead_letter\""));
    assert_int_equal(cfg->routes[0].key_from, KD_KEY_FROM_COMPOSITE);
    assert_int_equal(cfg->routes[0].nkey_parts, 3);
    assert_string_equal(cfg->routes[0].key_parts[0].name, "Tenant");
    assert_string_equal(cfg->routes[0].key_parts[1].pointer, "");
    assert_int_equal(cfg->routes[0].key_parts[2].from, KD_KEY_FROM_RECORD_KEY);
    assert_null(cfg->routes[0].key_header);
    assert_true(cfg->routes[0].fingerprint);
    assert_int_equal(cfg->routes[0].nfingerprint_headers, 2);
    assert_string_equal(cfg->routes[0].fingerprint_headers[1], "Content-Type");
    assert_int_equal(cfg->routes[0].nfingerprint_json, 2);
    assert_string_equal(cfg->routes[0].fingerprint_json[1], "/a~1b");
    assert_int_equal(cfg->routes[0].on_key_conflict, KD_CONFLICT_DEAD_LETTER);
    kd_config_destroy(cfg);

    cfg = assert_valid("{" MINIMAL_KAFKA ", \"routes\": [" MINIMAL_ROUTE "], "
                       "\"dedup\": {\"max_json_bytes\": 4096}}");
    assert_int_equal(cfg->max_json_bytes, 4096);
    kd_config_destroy(cfg);
}

/* --check-config lists every error in one pass: each key's own, every
 * route's, and the rules across keys of the routes that parsed. */
static void test_every_error(void **state) {
    char err[4096] = "";
    kd_config *cfg;

    (void)state;
    cfg = parse(
        "{\"kafka\": {\"brokers\": \"k:9092\", \"group_id\": \"g\", \"typo\": 1},"
        " \"routes\": [{\"from\": \"a\", \"to\": 42},"
        "              {\"from\": \"b\", \"to\": \"b.out\", \"on_missing_key\": \"drop\","
        "               \"dead_letter_topic\": \"b.out\"}],"
        " \"dedup\": {\"ttl\": \"1 day\"}, \"store\": {\"sync\": \"maybe\"},"
        " \"admin\": {\"token\": \"short\"}}",
        err, sizeof(err));
    assert_null(cfg);
    assert_string_equal(
        err,
        "kdedup.json: kafka.typo: unknown key (expected one of: brokers, group_id, "
        "consumer, producer)\n"
        "kdedup.json: routes[0].to: expected a topic name (1-249 of a-z A-Z 0-9 . _ "
        "-), got 42\n"
        "kdedup.json: dedup.ttl: expected a duration like \"250ms\", \"30s\", "
        "\"1h30m\" or \"7d\", or \"off\", got \"1 day\"\n"
        "kdedup.json: store.sync: expected true or false, got \"maybe\"\n"
        "kdedup.json: admin.token: expected at least 16 bytes (a random secret), got "
        "5\n"
        "kdedup.json: routes[1]: \"dead_letter_topic\" is the route's own \"to\" "
        "\"b.out\": dead letters would be read back as forwarded records (give them "
        "a topic of their own)");
}

/* A key that did not parse is an error of its own, never compared with
 * another: a route that failed its checks before a valid one, a listener
 * that is no address beside http.probes_listen. (Before, --check-config
 * crashed on each: the rules compared the NULL they left.) */
static void test_unparsed_keys_not_compared(void **state) {
    (void)state;
    assert_error("{\"kafka\": {\"brokers\": \"k:9092\", \"group_id\": \"g\"},"
                 " \"routes\": [{\"to\": \"b\", \"dead_letter_topic\": \"dl\"},"
                 "  {\"from\": \"a\", \"to\": \"b\", \"dead_letter_topic\": \"dl\"}]}",
                 "kdedup.json: routes[0].from: missing (source topic)");
    assert_error(
        "{\"kafka\": {\"brokers\": \"k:9092\", \"group_id\": \"g\"},"
        " \"routes\": [{\"from\": \"a\", \"to\": \"b\", \"dead_letter_topic\": "
        "\"dl\"}], \"http\": {\"listen\": 5, \"probes_listen\": \"0.0.0.0:9466\"}}",
        "kdedup.json: http.listen: expected \"host:port\", got 5");
    assert_error("{\"kafka\": {\"brokers\": \"k:9092\", \"group_id\": \"g\"},"
                 " \"routes\": [{\"from\": \"a\", \"to\": \"b\", \"dead_letter_topic\": "
                 "\"dl\"}], \"admin\": {\"listen\": 5}, \"http\": {\"probes_listen\": "
                 "\"0.0.0.0:9466\"}}",
                 "kdedup.json: admin.listen: expected \"host:port\", got 5");
}

/* Past 20 errors the rest are counted. */
static void test_many_errors(void **state) {
    char json[4096], err[8192] = "";
    size_t n;

    (void)state;
    n = (size_t)snprintf(json, sizeof(json), "{" MINIMAL_KAFKA ", \"routes\": [");
    for (int i = 0; i < 30; i++)
        n += (size_t)snprintf(json + n, sizeof(json) - n, "%s{\"from\": \"t%d\"}",
                              i ? ", " : "", i);
    snprintf(json + n, sizeof(json) - n, "]}");
    assert_null(parse(json, err, sizeof(err)));
    assert_non_null(strstr(err, "kdedup.json: routes[19].to: missing"));
    assert_null(strstr(err, "routes[20]"));
    assert_non_null(strstr(err, "\nkdedup.json: (and 10 more errors)"));
}

/* Offline: a ${VAR} that is not set is no error; its value is kept as
 * written and not checked, and named by kd_config_unresolved(). */
static void test_offline(void **state) {
    const char *json = "{\"kafka\": {\"brokers\": \"${KD_TEST_UNSET_BROKERS}\","
                       " \"group_id\": \"g\", \"producer\": {\"sasl.password\":"
                       " \"${file:/nonexistent/kdedup-test}\"}},"
                       " \"routes\": [" MINIMAL_ROUTE "],"
                       " \"store\": {\"sync\": \"${KD_TEST_UNSET_SYNC}\"},"
                       " \"admin\": {\"token\": \"${KD_TEST_UNSET_TOKEN}\"}}";
    char err[1024] = "";
    kd_config *cfg;

    (void)state;
    unsetenv("KD_TEST_UNSET_BROKERS");
    assert_null(kd_config_parse(json, strlen(json), "kdedup.json", err, sizeof(err)));
    assert_non_null(strstr(err,
                           "kafka.brokers: environment variable KD_TEST_UNSET_BROKERS "
                           "is not set"));
    assert_non_null(strstr(err,
                           "\nkdedup.json: kafka.producer[\"sasl.password\"]: cannot "
                           "read ${file:/nonexistent/kdedup-test}"));
    cfg = kd_config_parse_opts(json, strlen(json), "kdedup.json", KD_CONFIG_OFFLINE, err,
                               sizeof(err));
    if (!cfg)
        fail_msg("offline: %s", err);
    assert_string_equal(cfg->brokers, "${KD_TEST_UNSET_BROKERS}");
    assert_true(cfg->store_sync); /* the default */
    assert_string_equal(kd_config_unresolved(cfg, ""), "kafka.brokers");
    assert_string_equal(kd_config_unresolved(cfg, "store."), "store.sync");
    assert_non_null(kd_config_unresolved(cfg, "kafka.producer"));
    assert_null(kd_config_unresolved(cfg, "routes"));
    kd_config_destroy(cfg);
}

static void test_key_errors(void **state) {
    static const struct {
        const char *json, *want;
    } cases[] = {
        {ROUTE_WITH("\"key\": {\"from\": \"json\", \"pointer\": \"a/b\"}"),
         "kdedup.json: routes[0].key.pointer: expected an RFC 6901 JSON pointer (\"\" or "
         "\"/a/b\", with \"~\" only as \"~0\" or \"~1\"), got \"a/b\""},
        {ROUTE_WITH("\"key\": {\"from\": \"json\", \"pointer\": \"/a~2\"}"),
         "kdedup.json: routes[0].key.pointer: expected an RFC 6901 JSON pointer (\"\" or "
         "\"/a/b\", with \"~\" only as \"~0\" or \"~1\"), got \"/a~2\""},
        {ROUTE_WITH("\"key\": {\"from\": \"json\", \"pointer\": \"/a~\"}"),
         "kdedup.json: routes[0].key.pointer: expected an RFC 6901 JSON pointer (\"\" or "
         "\"/a/b\", with \"~\" only as \"~0\" or \"~1\"), got \"/a~\""},
        {ROUTE_WITH("\"key\": {\"from\": \"json\"}"),
         "kdedup.json: routes[0].key.pointer: missing (an RFC 6901 JSON pointer like "
         "\"/order/id\")"},
        {ROUTE_WITH("\"key\": {\"from\": \"json\", \"pointer\": 5}"),
         "kdedup.json: routes[0].key.pointer: expected an RFC 6901 JSON pointer like "
         "\"/order/id\", got 5"},
        {ROUTE_WITH("\"key\": {\"from\": \"composite\", \"parts\": []}"),
         "kdedup.json: routes[0].key.parts: expected an array of 1 to 16 key parts, got "
         "[]"},
        {ROUTE_WITH("\"key\": {\"from\": \"composite\"}"),
         "kdedup.json: routes[0].key.parts: missing (a non-empty array of key parts)"},
        {ROUTE_WITH("\"key\": {\"from\": \"composite\", \"parts\": [{\"from\": "
                    "\"record_key\"}, {\"from\": \"composite\", \"parts\": []}]}"),
         "kdedup.json: routes[0].key.parts[1].from: expected one of \"header\", "
         "\"record_key\", \"json\" (a part of a composite key cannot be composite), got "
         "\"composite\""},
        {ROUTE_WITH("\"key\": {\"from\": \"composite\", \"parts\": [{\"from\": "
                    "\"header\"}]}"),
         "kdedup.json: routes[0].key.parts[0].name: missing (a header name)"},
        {ROUTE_WITH("\"key\": {\"from\": \"body\"}"),
         "kdedup.json: routes[0].key.from: expected one of \"header\", \"record_key\", "
         "\"json\", \"composite\", got \"body\""},
        {ROUTE_WITH("\"key\": {}"),
         "kdedup.json: routes[0].key.from: missing (one of \"header\", \"record_key\", "
         "\"json\", \"composite\")"},
        {ROUTE_WITH("\"key\": \"Idempotency-Key\""),
         "kdedup.json: routes[0].key: expected an object like {\"from\": \"header\", "
         "\"name\": \"...\"}, got \"Idempotency-Key\""},
        {ROUTE_WITH("\"key\": {\"from\": \"record_key\", \"name\": \"x\"}"),
         "kdedup.json: routes[0].key.name: unknown key (a record_key key has only "
         "\"from\")"},
        {ROUTE_WITH("\"key\": {\"from\": \"header\", \"name\": \"\"}"),
         "kdedup.json: routes[0].key.name: expected a header name, got \"\""},
        {ROUTE_WITH("\"key_header\": \"X\", \"key\": {\"from\": \"record_key\"}"),
         "kdedup.json: routes[0].key_header: give either \"key_header\" (a shorthand) or "
         "\"key\", not both"},
        {ROUTE_WITH("\"on_key_conflict\": \"dead_letter\""),
         "kdedup.json: routes[0]: \"on_key_conflict\": \"dead_letter\" needs a "
         "\"dead_letter_topic\" (or set \"skip\" or \"forward\")"},
        {ROUTE_WITH("\"on_key_conflict\": \"reject\""),
         "kdedup.json: routes[0].on_key_conflict: expected one of \"skip\", "
         "\"dead_letter\", \"forward\", got \"reject\""},
        {ROUTE_WITH("\"fingerprint\": \"yes\""),
         "kdedup.json: routes[0].fingerprint: expected true, false or {\"headers\": "
         "[\"Name\", ...], \"json\": [\"/pointer\", ...]}, got \"yes\""},
        {ROUTE_WITH("\"fingerprint\": {\"header\": []}"),
         "kdedup.json: routes[0].fingerprint.header: unknown key (expected "
         "\"headers\" or \"json\")"},
        {ROUTE_WITH("\"fingerprint\": {\"json\": [\"/order\", \"amount\"]}"),
         "kdedup.json: routes[0].fingerprint.json[1]: expected an RFC 6901 JSON pointer "
         "(\"\" or \"/a/b\", with \"~\" only as \"~0\" or \"~1\"), got \"amount\""},
        {ROUTE_WITH("\"fingerprint\": {\"json\": []}"),
         "kdedup.json: routes[0].fingerprint.json: expected an array of 1 to 32 JSON "
         "pointers, got []"},
        {ROUTE_WITH("\"fingerprint\": {\"json\": [\"/a\", 7]}"),
         "kdedup.json: routes[0].fingerprint.json[1]: expected a JSON pointer, got 7"},
        {ROUTE_WITH("\"fingerprint\": {\"json\": [\"/a\", \"/a\"]}"),
         "kdedup.json: routes[0].fingerprint.json[1]: \"/a\" is listed twice"},
        {ROUTE_WITH("\"fingerprint\": {\"headers\": [\"A\", 1]}"),
         "kdedup.json: routes[0].fingerprint.headers[1]: expected a header name, got 1"},
        {ROUTE_WITH("\"fingerprint\": {\"headers\": [\"A\", \"A\"]}"),
         "kdedup.json: routes[0].fingerprint.headers[1]: \"A\" is listed twice"},
        {"{" MINIMAL_KAFKA ", \"routes\": [" MINIMAL_ROUTE "], "
         "\"dedup\": {\"max_json_bytes\": 0}}",
         "kdedup.json: dedup.max_json_bytes: expected an integer from 1 to 67108864, got "
         "0"},
    };

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        assert_error(cases[i].json, cases[i].want);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_design_example),
        cmocka_unit_test(test_reload_diff),
        cmocka_unit_test(test_admin),
        cmocka_unit_test(test_probes_listen),
        cmocka_unit_test(test_transactional),
        cmocka_unit_test(test_transaction_max_age_below_timeout),
        cmocka_unit_test(test_routes_json),
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_header_bounds),
        cmocka_unit_test(test_env_interpolation),
        cmocka_unit_test(test_env_edge_cases),
        cmocka_unit_test(test_file_secrets),
        cmocka_unit_test(test_env_never_shown),
        cmocka_unit_test(test_redact_secrets_only),
        cmocka_unit_test(test_redact_any),
        cmocka_unit_test(test_integer_range),
        cmocka_unit_test(test_durations),
        cmocka_unit_test(test_rules),
        cmocka_unit_test(test_secrets_not_shown),
        cmocka_unit_test(test_load_errors),
        cmocka_unit_test(test_topics),
        cmocka_unit_test(test_key_sources),
        cmocka_unit_test(test_key_errors),
        cmocka_unit_test(test_every_error),
        cmocka_unit_test(test_unparsed_keys_not_compared),
        cmocka_unit_test(test_route_names),
        cmocka_unit_test(test_many_errors),
        cmocka_unit_test(test_offline),
    };

    return cmocka_run_group_tests_name("config", tests, NULL, NULL);
}
