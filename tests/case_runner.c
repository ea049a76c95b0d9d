/*
 * kdedup tests - cmocka cases in parallel processes (see case_runner.h).
 */
#include "tests/case_runner.h"

#include <fnmatch.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* The cases mostly wait: make test-mock used a third of one core at 3. */
#define DEFAULT_JOBS 4
#define MAX_JOBS 16

/* One case: its process while it runs, and the file its output goes to. */
typedef struct cr_case {
    const struct CMUnitTest *test;
    pid_t pid;
    FILE *out;
    FILE *marks; /* what the run got to (MARK_*), written by the case's process */
    uint64_t started_ms;
    bool failed;
    bool upstream_abort; /* ended by UPSTREAM_ABORT: run once more */
    bool rerun;          /* this is that second run */
} cr_case;

/* librdkafka 2.0.2's assertion that a broker handle is destroyed on its own
 * thread, which fails now and then as a client is destroyed (librdkafka
 * #3608, open upstream; seen once in test_txn_revoke_during_a_slow_write).
 * A case that dies of it says nothing of kdedup: it runs once more, and
 * counts as that run counts. Any other abort, or this one twice, fails. */
#define UPSTREAM_ABORT "rd_kafka_broker_destroy_final: Assertion"

/* What a case's process got to, one byte each in its marks file (write(),
 * unbuffered: an abort loses none). A case that failed an assert leaves its
 * body for its teardown without MARK_PASSED; cmocka prints the failure only
 * after the teardown, which a failed case's clients, still running as the
 * teardown stops the mock cluster, may abort in (the brokers fail at once:
 * #3608's own path). Such a case failed, whatever killed it after. */
#define MARK_PASSED 'P'   /* the case's body returned */
#define MARK_TEARDOWN 'T' /* its teardown began */
#define MARK_FAILED 'F'   /* cmocka counted it failed */

/* The case a forked process runs (child only): its own functions, called
 * by the ones that mark. */
static CMUnitTestFunction child_body;
static CMFixtureFunction child_teardown;
static int child_marks = -1;

static uint64_t mono_ms(void) {
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static int jobs_wanted(void) {
    const char *s = getenv("KD_TEST_JOBS");
    int jobs = s && *s ? atoi(s) : DEFAULT_JOBS;

    return jobs < 1 ? 1 : jobs > MAX_JOBS ? MAX_JOBS : jobs;
}

static void mark(char what) {
    if (write(child_marks, &what, 1) != 1)
        perror("case_runner: mark");
}

static void marked_body(void **state) {
    child_body(state);
    mark(MARK_PASSED);
}

static int marked_teardown(void **state) {
    mark(MARK_TEARDOWN);
    return child_teardown(state);
}

/* In the forked process: runs c alone, marking what it gets to; exits. */
static void run_child(const char *group_name, const cr_case *c) {
    struct CMUnitTest t = *c->test;
    int failed;

    child_body = t.test_func;
    child_teardown = t.teardown_func;
    child_marks = fileno(c->marks);
    t.test_func = marked_body;
    if (t.teardown_func)
        t.teardown_func = marked_teardown;
    if ((failed = _cmocka_run_group_tests(group_name, &t, 1, NULL, NULL)))
        mark(MARK_FAILED);
    exit(failed ? 1 : 0);
}

/* Forks the process that runs c alone, its stdout and stderr into c->out.
 * The child dies with this process (a timeout that kills the runner kills
 * the cases, whose mock clusters then see their input close and exit). */
static bool start_case(const char *group_name, cr_case *c) {
    if (!(c->out = tmpfile()) || !(c->marks = tmpfile())) {
        perror("case_runner: tmpfile");
        if (c->out)
            fclose(c->out);
        c->out = NULL;
        return false;
    }
    fflush(NULL); /* nothing buffered here is written twice by the child */
    c->started_ms = mono_ms();
    c->pid = fork();
    if (c->pid < 0) {
        perror("case_runner: fork");
        fclose(c->out);
        fclose(c->marks);
        c->out = c->marks = NULL;
        return false;
    }
    if (c->pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() == 1)
            _exit(127);
        dup2(fileno(c->out), STDOUT_FILENO);
        dup2(fileno(c->out), STDERR_FILENO);
        run_child(group_name, c);
    }
    return true;
}

/* True when c's run failed before whatever ended it: its body left for the
 * teardown without passing, or cmocka counted it failed. Closes c->marks. */
static bool failed_first(cr_case *c) {
    char marks[8] = {0};
    size_t n;

    rewind(c->marks);
    n = fread(marks, 1, sizeof(marks) - 1, c->marks);
    fclose(c->marks);
    c->marks = NULL;
    marks[n] = '\0';
    return (strchr(marks, MARK_TEARDOWN) && !strchr(marks, MARK_PASSED)) ||
           strchr(marks, MARK_FAILED);
}

/* Prints c's output whole, its outcome and its wall time. A first run
 * that died of UPSTREAM_ABORT, and had not failed before, is marked to run
 * again, not failed. */
static void report_case(cr_case *c, int status) {
    enum { TAIL = sizeof(UPSTREAM_ABORT) - 1 };
    char buf[8192], scan[TAIL + sizeof(buf) + 1];
    size_t got, carry = 0;
    bool upstream = false, failed_before = failed_first(c);

    c->failed = !WIFEXITED(status) || WEXITSTATUS(status) != 0;
    rewind(c->out);
    while ((got = fread(buf, 1, sizeof(buf), c->out)) > 0) {
        fwrite(buf, 1, got, stdout);
        /* searched with the tail of the read before: found across two too */
        memcpy(scan + carry, buf, got);
        scan[carry + got] = '\0';
        upstream = upstream || strstr(scan, UPSTREAM_ABORT);
        size_t total = carry + got;
        carry = total < TAIL ? total : TAIL;
        memmove(scan, scan + total - carry, carry);
    }
    fclose(c->out);
    c->out = NULL;
    if (WIFSIGNALED(status) && WTERMSIG(status) == SIGABRT && upstream && !c->rerun &&
        !failed_before) {
        printf("[  RERUN   ] %s: librdkafka's own assertion (#3608, upstream), not "
               "kdedup's: the case runs once more\n",
               c->test->name);
        c->upstream_abort = true;
        c->failed = false;
    } else if (WIFSIGNALED(status)) {
        printf("[  FAILED  ] %s: killed by signal %d%s\n", c->test->name,
               WTERMSIG(status), failed_before ? " after it failed (not run again)" : "");
    }
    printf("[ TIME     ] %s: %.1f s\n", c->test->name,
           (double)(mono_ms() - c->started_ms) / 1000.0);
    fflush(stdout);
}

/* Waits for one running case to end and reports it; false when none runs. */
static bool reap_one(cr_case *cases, size_t n) {
    int status;
    pid_t pid;

    while ((pid = waitpid(-1, &status, 0)) > 0)
        for (size_t i = 0; i < n; i++)
            if (cases[i].pid == pid && cases[i].out) {
                report_case(&cases[i], status);
                return true;
            }
    return false;
}

/* Prints how many cases passed, names those that failed; returns how many
 * failed. */
static int summarize(const char *group_name, const cr_case *cases, size_t n, int jobs,
                     uint64_t started_ms) {
    size_t failed = 0;

    for (size_t i = 0; i < n; i++)
        failed += cases[i].failed;
    printf("[==========] %s: %zu case(s) in %d processes at a time, %.1f s\n", group_name,
           n, jobs, (double)(mono_ms() - started_ms) / 1000.0);
    printf("[  PASSED  ] %zu case(s).\n", n - failed);
    if (failed) {
        printf("[  FAILED  ] %zu case(s), listed below:\n", failed);
        for (size_t i = 0; i < n; i++)
            if (cases[i].failed)
                printf("[  FAILED  ] %s\n", cases[i].test->name);
    }
    return (int)failed;
}

int cr_run_group(const char *group_name, const struct CMUnitTest *tests, size_t n) {
    const char *filter = getenv("KD_TEST_FILTER");
    uint64_t started_ms = mono_ms();
    int jobs = jobs_wanted(), running = 0, rc;
    cr_case *cases = calloc(n ? n : 1, sizeof(*cases));
    size_t ncases = 0, next = 0;

    if (jobs == 1 || !cases) {
        free(cases);
        if (filter)
            cmocka_set_test_filter(filter);
        return _cmocka_run_group_tests(group_name, tests, n, NULL, NULL);
    }
    for (size_t i = 0; i < n; i++)
        if (!filter || fnmatch(filter, tests[i].name, 0) == 0)
            cases[ncases++].test = &tests[i];
    while (next < ncases || running > 0) {
        if (next < ncases && running < jobs) {
            if (start_case(group_name, &cases[next]))
                running++;
            else
                cases[next].failed = true;
            next++;
            continue;
        }
        if (!reap_one(cases, ncases))
            break;
        running--;
        for (size_t i = 0; i < next; i++) /* in the place the reaped one left */
            if (cases[i].upstream_abort) {
                cases[i].upstream_abort = false;
                cases[i].rerun = true;
                if (start_case(group_name, &cases[i]))
                    running++;
                else
                    cases[i].failed = true;
            }
    }
    rc = summarize(group_name, cases, ncases, jobs, started_ms);
    free(cases);
    return rc;
}
