/*
 * kdedup tests - the case runner (tests/case_runner.h): a case killed by
 * librdkafka's destroy assertion (#3608, upstream) runs once more, and only
 * a case that had not failed before it. Each check runs a group of one made-
 * up case in a process of its own, with its output kept, and asserts the
 * group's outcome. The cases remember their first run by a file in a folder
 * of the check's (CR_TEST_DIR).
 */
#include "tests/case_runner.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

/* As librdkafka 2.0.2's assert() words it, on stderr. */
#define UPSTREAM_LINE                                                                    \
    "rdkafka_broker.c:4633: rd_kafka_broker_destroy_final: Assertion "                   \
    "`thrd_is_current(rkb->rkb_thread)' failed.\n"

/* True on a case's first run (it leaves its mark for the second). */
static bool first_run(void) {
    char path[512];
    FILE *f;

    snprintf(path, sizeof(path), "%s/ran", getenv("CR_TEST_DIR"));
    if (access(path, F_OK) == 0)
        return false;
    if ((f = fopen(path, "w")))
        fclose(f);
    return true;
}

static void upstream_abort(void) {
    fputs(UPSTREAM_LINE, stderr);
    abort();
}

/* Set by the body, for the teardown: whether this run is the first. */
static bool first;

static int case_setup(void **state) {
    (void)state;
    first = first_run();
    return 0;
}

/* The teardown of a case whose clients abort as the mock cluster goes
 * (the first run only). */
static int abort_first_teardown(void **state) {
    (void)state;
    if (first)
        upstream_abort();
    return 0;
}

static int plain_teardown(void **state) {
    (void)state;
    return 0;
}

/* Fails the first time (a flaky duplicate, say), passes the second. */
static void case_flaky(void **state) {
    (void)state;
    assert_false(first);
}

static void case_passes(void **state) {
    (void)state;
}

/* Killed by the upstream assertion mid-body, the first time. */
static void case_aborted_once(void **state) {
    (void)state;
    if (first)
        upstream_abort();
}

static void case_aborted_always(void **state) {
    (void)state;
    upstream_abort();
}

/* An abort of its own (no upstream line). */
static void case_own_abort(void **state) {
    (void)state;
    if (first)
        abort();
}

static void abort_at_exit(void) {
    upstream_abort();
}

/* No teardown: fails, and the process aborts on its way out. */
static void case_fails_then_exit_aborts(void **state) {
    (void)state;
    if (first) {
        atexit(abort_at_exit);
        fail_msg("failed");
    }
}

static const struct CMUnitTest inner[] = {
    cmocka_unit_test_setup_teardown(case_flaky, case_setup, abort_first_teardown),
    cmocka_unit_test_setup_teardown(case_passes, case_setup, abort_first_teardown),
    cmocka_unit_test_setup_teardown(case_aborted_once, case_setup, plain_teardown),
    cmocka_unit_test_setup_teardown(case_aborted_always, case_setup, plain_teardown),
    cmocka_unit_test_setup_teardown(case_own_abort, case_setup, plain_teardown),
    cmocka_unit_test_setup(case_fails_then_exit_aborts, case_setup),
};

/* The outcome of a group of the one inner case `name`. */
typedef struct outcome {
    int failed;      /* cr_run_group's result (-1: the process died) */
    bool rerun;      /* the output says it ran again */
    char out[16384]; /* the output's start */
} outcome;

/* Runs the inner case `name` through cr_run_group, two processes at a
 * time, in a process of its own with a fresh CR_TEST_DIR. */
static void run_inner(const char *name, outcome *o) {
    char dir[256], path[300];
    FILE *out = tmpfile();
    size_t n;
    pid_t pid;
    int status;

    assert_non_null(out);
    snprintf(dir, sizeof(dir), "/tmp/kd-case-runner-XXXXXX");
    assert_non_null(mkdtemp(dir));
    fflush(NULL);
    pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        dup2(fileno(out), STDOUT_FILENO);
        dup2(fileno(out), STDERR_FILENO);
        setenv("CR_TEST_DIR", dir, 1);
        setenv("KD_TEST_JOBS", "2", 1);
        setenv("KD_TEST_FILTER", name, 1);
        _exit(cr_run_group("inner", inner, sizeof(inner) / sizeof(inner[0])));
    }
    assert_int_equal(waitpid(pid, &status, 0), pid);
    o->failed = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    rewind(out);
    n = fread(o->out, 1, sizeof(o->out) - 1, out);
    o->out[n] = '\0';
    o->rerun = strstr(o->out, "[  RERUN   ]") != NULL;
    fclose(out);
    snprintf(path, sizeof(path), "%s/ran", dir);
    unlink(path);
    assert_int_equal(rmdir(dir), 0);
}

/* A case that failed its asserts and then died of the upstream assertion
 * in its teardown (its clients, never stopped, meet the mock cluster's end)
 * failed: it is not run again. cmocka prints the failure only after the
 * teardown, so its output holds no sign of it. Before, it ran again,
 * passed, and the group passed. */
static void test_a_failure_then_the_upstream_abort_fails(void **state) {
    outcome o;

    (void)state;
    run_inner("case_flaky", &o);
    assert_int_equal(o.failed, 1);
    assert_false(o.rerun);
    assert_non_null(strstr(o.out, "after it failed"));
}

/* The same with no teardown: the abort on the process's way out. */
static void test_a_failure_then_an_abort_at_exit_fails(void **state) {
    outcome o;

    (void)state;
    run_inner("case_fails_then_exit_aborts", &o);
    assert_int_equal(o.failed, 1);
    assert_false(o.rerun);
}

/* The upstream assertion in a passing case's teardown, or in its body,
 * the first time: run once more, and passed. */
static void test_the_upstream_abort_alone_runs_again(void **state) {
    outcome o;

    (void)state;
    run_inner("case_passes", &o);
    assert_int_equal(o.failed, 0);
    assert_true(o.rerun);
    run_inner("case_aborted_once", &o);
    assert_int_equal(o.failed, 0);
    assert_true(o.rerun);
}

/* Twice, or an abort of another kind: failed. */
static void test_other_aborts_fail(void **state) {
    outcome o;

    (void)state;
    run_inner("case_aborted_always", &o);
    assert_int_equal(o.failed, 1);
    assert_true(o.rerun);
    run_inner("case_own_abort", &o);
    assert_int_equal(o.failed, 1);
    assert_false(o.rerun);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_a_failure_then_the_upstream_abort_fails),
        cmocka_unit_test(test_a_failure_then_an_abort_at_exit_fails),
        cmocka_unit_test(test_the_upstream_abort_alone_runs_again),
        cmocka_unit_test(test_other_aborts_fail),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
