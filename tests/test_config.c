/*
 * kdedup tests - the configuration loader: the documented example, defaults,
 * environment interpolation, durations, and one case per rule, each checked
 * for the exact shape of its message (file: path: what, got what). The
 * cases are in test_config_*.c, their helpers in config_fixture.c; this
 * file is their table.
 */
#include "tests/config_fixture.h"

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
