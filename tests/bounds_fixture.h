/*
 * kdedup tests - the bounds tests' fixture, shared by the
 * test_bounds_*.c cases: a mock cluster per case, and the helpers more than
 * one part uses. Each helper's doc is at its definition.
 */
#ifndef KD_TEST_BOUNDS_FIXTURE_H
#define KD_TEST_BOUNDS_FIXTURE_H

#include "dedup/dedup.h"
#include "sidecar/metrics.h"
#include "sidecar/recovery.h"
#include "store_rocks/store_rocks.h"
#include "tests/case_runner.h"
#include "tests/dedup_fixture.h"
#include "tests/faulty_store.h"
#include "tests/kafka_fixture.h"

#include <stdarg.h>
#include <setjmp.h>
#include <stddef.h>
#include <cmocka.h>

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define TIMEOUT_MS 60000

typedef kf_env env;

int setup(void **state);
int teardown(void **state);
void deliveries_headed(rd_kafka_t *rk, int32_t partition, const char *prefix, int n,
                       int extra);
void deliveries(rd_kafka_t *rk, int32_t partition, const char *prefix, int n);
uint64_t cache_bytes(const kd_recovery *rc);
void recovery_open(env *e, const char *run, int cache_bytes, kd_config **cfg,
                   kd_store **store, kd_recovery **rc);

/* The cases (test_bounds_*.c), run by test_bounds.c's table. */
void test_scans_step_within_the_cache_budget(void **state);
void test_scans_that_do_not_fit_together_take_turns(void **state);
void test_handover_beside_a_paused_scan(void **state);
void test_handover_batches_within_their_bytes(void **state);
void test_backpressure_pauses_and_resumes(void **state);
void test_headers_count_in_flight(void **state);
void test_poison_holds_back_only_its_partition(void **state);
void test_orphans_keep_their_order(void **state);
void test_unclaimed_records_are_no_delivery(void **state);

#endif /* KD_TEST_BOUNDS_FIXTURE_H */
