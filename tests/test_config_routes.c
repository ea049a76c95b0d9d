/*
 * kdedup tests - the configuration loader: reload diffs, admin and probes
 * listeners, the transactional mode, routes, key sources, and every error in
 * one pass (run by test_config.c).
 */
#include "tests/config_fixture.h"

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
void test_reload_diff(void **state) {
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
void test_admin(void **state) {
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
void test_probes_listen(void **state) {
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
void test_transactional(void **state) {
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
void test_transaction_max_age_below_timeout(void **state) {
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
void test_routes_json(void **state) {
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
void test_route_names(void **state) {
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
void test_key_sources(void **state) {
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
void test_every_error(void **state) {
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
void test_unparsed_keys_not_compared(void **state) {
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
void test_many_errors(void **state) {
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
void test_offline(void **state) {
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

void test_key_errors(void **state) {
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
