/*
 * kdedup tests - the configuration loader: the documented example, defaults,
 * environment interpolation and secrets from files, and what is never shown
 * (run by test_config.c).
 */
#include "tests/config_fixture.h"

void test_design_example(void **state) {
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

void test_defaults(void **state) {
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
void test_header_bounds(void **state) {
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

void test_env_interpolation(void **state) {
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
void test_env_edge_cases(void **state) {
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

void test_file_secrets(void **state) {
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
void test_env_never_shown(void **state) {
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
void test_redact_secrets_only(void **state) {
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
void test_redact_any(void **state) {
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
