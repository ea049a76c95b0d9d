/*
 * kdedup tests - the power-loss and ownership tests' fixture, shared by the
 * test_crash_*.c cases: one mock cluster for the group, a case's topics,
 * store and runs of the pipeline, waits, and the oracle (committed offsets
 * and downstream). Each helper's doc is at its definition.
 */
#ifndef KD_TEST_CRASH_FIXTURE_H
#define KD_TEST_CRASH_FIXTURE_H

#include "dedup/dedup.h"
#include "sidecar/clock.h"
#include "sidecar/log.h"
#include "tests/dedup_fixture.h"
#include "tests/kafka_fixture.h"
#include "tests/powerloss_store.h"

#include <stdarg.h>
#include <setjmp.h>
#include <stddef.h>
#include <cmocka.h>

#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TIMEOUT_MS 60000

#define STEP_MS 5

/* A short session (the mock cluster's rebalances wait for it), offsets
 * committed within 200 ms, retries forever. Arguments: brokers, group,
 * producer properties, from, to, the dedup section, the store's directory,
 * shutdown_grace. */
#define CONFIG                                                                           \
    "{\"kafka\": {\"brokers\": \"%s\", \"group_id\": \"%s\", \"producer\": %s,"          \
    " \"consumer\": {\"session.timeout.ms\": \"3000\", \"heartbeat.interval.ms\": "      \
    "\"300\", \"auto.commit.interval.ms\": \"200\"}},"                                   \
    " \"routes\": [{\"from\": \"%s\", \"to\": \"%s\", \"on_missing_key\": \"forward\","  \
    " \"max_retries\": -1, \"retry_backoff\": \"100ms\"}],"                              \
    " \"dedup\": %s, \"store\": {\"path\": \"%s/store\"},"                               \
    " \"pipeline\": {\"shutdown_grace\": \"%s\"}}"

#define NO_HANDOVER "{\"handover\": false}"

typedef kf_env env;

/* One case's topics ("<name>-in" led by broker 1, "<name>-out" by broker
 * 2, the group's coordinator broker 3), the store its runs use, the run
 * under way, and how many messages it sent. */
typedef struct tcase {
    env *e;
    char in[48], out[48], group[48], ns[64];
    int nparts;
    size_t nsent;
    kd_store *store;
    kf_run run;
    /* An earlier owner's store (another host's), or NULL, and where on each
     * source partition its ownership ended: what it finished. */
    kd_store *prior;
    int64_t handoff[2];
    rd_kafka_t *reader; /* reads the group's committed offsets (committed_at) */
} tcase;

/* A condition on the run, or on the case. */
typedef bool (*cond_fn)(tcase *t, uint64_t arg);

int setup(void **state);
int teardown(void **state);
void case_open(tcase *t, env *e, const char *name, int nparts);
void case_close(tcase *t);
kd_config *config(tcase *t, const char *producer, const char *dedup, const char *grace);
void *run_thread(void *arg);
void run_cfg(tcase *t, kd_config *cfg);
void run_start(tcase *t, const char *producer, const char *dedup, const char *grace);
kd_pipeline_stats run_join(tcase *t);
void run_free(tcase *t);
kd_pipeline_stats run_stop(tcase *t);
kd_pipeline_stats stats(tcase *t);
int64_t committed_at(tcase *t, int part);
void wait_for(tcase *t, cond_fn done, uint64_t arg, const char *what);
bool stuck(tcase *t, uint64_t arg);
void send_keys(tcase *t, int from, int to);
bool completed(kd_dedup *d, const char *key);
void check_commits(tcase *t, kd_store *image, bool ended, const char *when);
void check_commits_now(tcase *t, bool ended, const char *when);
bool committed_to_end(tcase *t, uint64_t arg);
void check_downstream(tcase *t, int nkeys, const int *times);

/* The cases (test_crash_*.c), run by test_crash.c's table. */
void test_model_sync(void **state);
void test_model_crash(void **state);
void test_crash_at_each_point_of_a_turn(void **state);
void test_crash_during_handover(void **state);
void test_crash_during_a_forget(void **state);
void test_offsets_after_a_revoke(void **state);
void test_offsets_after_a_lost_assignment(void **state);
void test_offsets_after_a_stop(void **state);
void test_offsets_after_a_reload_restart(void **state);

#endif /* KD_TEST_CRASH_FIXTURE_H */
