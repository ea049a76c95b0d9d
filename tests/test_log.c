/*
 * kdedup tests - logging: the budget of a repeated event (kd_log_limit),
 * and the fields written as JSON numbers.
 */
#include "sidecar/log.h"

#include <stdarg.h>
#include <setjmp.h>
#include <stddef.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void test_limit_burst_then_count(void **state) {
    kd_log_limit l = KD_LOG_LIMIT_INIT;
    uint64_t left = 99, t = 1000;
    int passed = 0;

    (void)state;
    for (int i = 0; i < 100; i++)
        passed += kd_log_limit_pass(&l, t + (uint64_t)i, &left);
    assert_int_equal(passed, KD_LOG_LIMIT_BURST);
    /* Within the window: still left out. */
    assert_false(kd_log_limit_pass(&l, t + KD_LOG_LIMIT_WINDOW_MS - 1, &left));
    /* The next window: written, saying how many were left out before it. */
    assert_true(kd_log_limit_pass(&l, t + KD_LOG_LIMIT_WINDOW_MS, &left));
    assert_int_equal(left, 100 - KD_LOG_LIMIT_BURST + 1);
    assert_true(kd_log_limit_pass(&l, t + KD_LOG_LIMIT_WINDOW_MS + 1, &left));
    assert_int_equal(left, 0);
}

static void test_limit_quiet_events_all_pass(void **state) {
    kd_log_limit l = KD_LOG_LIMIT_INIT;
    uint64_t left = 99;

    (void)state;
    /* One event a minute never meets the budget. */
    for (uint64_t i = 0; i < 50; i++) {
        assert_true(kd_log_limit_pass(&l, i * KD_LOG_LIMIT_WINDOW_MS, &left));
        assert_int_equal(left, 0);
    }
}

/* The lines kd_log_write() writes while fn runs, from stderr. */
static char *captured(void (*fn)(void)) {
    static char buf[8192];
    FILE *tmp = tmpfile();
    int saved = dup(2);
    size_t n;

    assert_non_null(tmp);
    fflush(stderr);
    assert_true(dup2(fileno(tmp), 2) >= 0);
    fn();
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    rewind(tmp);
    n = fread(buf, 1, sizeof(buf) - 1, tmp);
    buf[n] = '\0';
    fclose(tmp);
    return buf;
}

static void write_numbers(void) {
    const char *fields[] = {"topic",  "orders",   "partition", "3",      "offset",
                            "1234",   "left_out", "0123",      "status", "401",
                            "offset", "-5x",      NULL};

    kd_log_write(KD_LOG_WARN, fields, "hello");
}

static void test_numeric_fields(void **state) {
    const char *line = captured(write_numbers);

    (void)state;
    assert_non_null(strstr(line, "\"topic\":\"orders\""));
    assert_non_null(strstr(line, "\"partition\":3,"));
    assert_non_null(strstr(line, "\"offset\":1234,"));
    assert_non_null(strstr(line, "\"left_out\":\"0123\"")); /* not a plain integer */
    assert_non_null(strstr(line, "\"status\":\"401\""));    /* not a numeric field */
    assert_non_null(strstr(line, "\"offset\":\"-5x\""));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_limit_burst_then_count),
        cmocka_unit_test(test_limit_quiet_events_all_pass),
        cmocka_unit_test(test_numeric_fields),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
