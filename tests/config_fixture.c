/*
 * kdedup tests - test_config's fixture (see config_fixture.h).
 */
#include "tests/config_fixture.h"

kd_config *parse(const char *json, char *err, size_t size) {
    return kd_config_parse(json, strlen(json), "kdedup.json", err, size);
}

/* Asserts json is rejected with exactly the message want. */
void assert_error(const char *json, const char *want) {
    char err[512] = "";
    kd_config *cfg = parse(json, err, sizeof(err));

    if (cfg) {
        kd_config_destroy(cfg);
        fail_msg("accepted: %s", json);
    }
    if (strcmp(err, want) != 0)
        fail_msg("for %s\n  got:  %s\n  want: %s", json, err, want);
}

kd_config *assert_valid(const char *json) {
    char err[512] = "";
    kd_config *cfg = parse(json, err, sizeof(err));

    if (!cfg)
        fail_msg("rejected: %s\n  %s", json, err);
    return cfg;
}
