/*
 * kdedup tests - runs a cmocka group's cases in parallel processes. The
 * integration suites spend most of their time waiting (a mock cluster
 * starting, group joins, session timeouts), not computing, and each case
 * starts a mock cluster of its own in its setup, so cases run side by side
 * without sharing anything. A case added to a group's table is run this way
 * like the others: nothing lists cases anywhere else.
 */
#ifndef KD_TEST_CASE_RUNNER_H
#define KD_TEST_CASE_RUNNER_H

#include <stdarg.h>
#include <setjmp.h>
#include <stddef.h>
#include <cmocka.h>

/* Runs the cases of tests[0..n) whose names match $KD_TEST_FILTER (a glob,
 * as cmocka_set_test_filter(); all when unset), each in a forked process,
 * $KD_TEST_JOBS (default 4) at a time, in table order. A case's output is
 * printed whole when it ends, with its wall time; a summary line closes.
 * KD_TEST_JOBS=1 runs the group in this process as cmocka would. Returns the
 * number of cases that failed (0: all passed), as cmocka_run_group_tests. */
int cr_run_group(const char *group_name, const struct CMUnitTest *tests, size_t n);

#endif /* KD_TEST_CASE_RUNNER_H */
