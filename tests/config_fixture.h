/*
 * kdedup tests - the configuration tests' helpers, shared by the
 * test_config_*.c cases: configs parsed from text, and assertions on the
 * exact message of an error. Each helper's doc is at its definition.
 */
#ifndef KD_TEST_CONFIG_FIXTURE_H
#define KD_TEST_CONFIG_FIXTURE_H

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

kd_config *parse(const char *json, char *err, size_t size);
void assert_error(const char *json, const char *want);
kd_config *assert_valid(const char *json);

/* The cases (test_config_*.c), run by test_config.c's table. */
void test_design_example(void **state);
void test_defaults(void **state);
void test_header_bounds(void **state);
void test_env_interpolation(void **state);
void test_env_edge_cases(void **state);
void test_file_secrets(void **state);
void test_env_never_shown(void **state);
void test_redact_secrets_only(void **state);
void test_redact_any(void **state);
void test_durations(void **state);
void test_integer_range(void **state);
void test_rules(void **state);
void test_secrets_not_shown(void **state);
void test_load_errors(void **state);
void test_topics(void **state);
void test_reload_diff(void **state);
void test_admin(void **state);
void test_probes_listen(void **state);
void test_transactional(void **state);
void test_transaction_max_age_below_timeout(void **state);
void test_routes_json(void **state);
void test_route_names(void **state);
void test_key_sources(void **state);
void test_every_error(void **state);
void test_unparsed_keys_not_compared(void **state);
void test_many_errors(void **state);
void test_offline(void **state);
void test_key_errors(void **state);

#endif /* KD_TEST_CONFIG_FIXTURE_H */
