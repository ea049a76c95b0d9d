/*
 * kdedup tests - the configuration loader: durations, integer ranges, the
 * rules that span keys, load errors, topics (run by test_config.c).
 */
#include "tests/config_fixture.h"

void test_durations(void **state) {
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
void test_integer_range(void **state) {
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
void test_rules(void **state) {
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
void test_secrets_not_shown(void **state) {
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

void test_load_errors(void **state) {
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

void test_topics(void **state) {
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
