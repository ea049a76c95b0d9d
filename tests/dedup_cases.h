/*
 * kdedup tests - the dedup tests' helpers, shared by the test_dedup_*.c
 * cases (over tests/dedup_fixture.h): a fixture per backend, and
 * assertions on claims and completions. Each helper's doc is at its
 * definition.
 */
#ifndef KD_TEST_DEDUP_CASES_H
#define KD_TEST_DEDUP_CASES_H

#include "dedup/dedup.h"
#include "dedup/entry.h"
#include "tests/dedup_fixture.h"

#include <stdarg.h>
#include <setjmp.h>
#include <stddef.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define K(s) (s), strlen(s)

/* Each test twice, named after the backend it runs on. */
#define BOTH(fn)                                                                         \
    {"memory/" #fn, fn, setup, teardown, &backend_mem}, {                                \
        "rocksdb/" #fn, fn, setup, teardown, &backend_rocks                              \
    }

typedef struct race {
    kd_dedup *competitor; /* over the inner store */
    const char *key;
    const char *receipt; /* complete with this, when set */
    bool release_and_reclaim;
} race;

extern fx_backend backend_mem;
extern fx_backend backend_rocks;

int setup(void **state);
int teardown(void **state);
void assert_claim(kd_dedup *d, const char *key, uint64_t ts, kd_state want,
                  uint64_t want_ts);
void assert_completed_with(kd_dedup *d, const char *key, const char *receipt);
void race_hook(void *arg);
kd_dedup *racing_dedup(fx *f, race *r, kd_store **wrapper);

/* The cases (test_dedup_*.c), run by test_dedup.c's table. */
void test_claim_then_in_flight(void **state);
void test_complete_then_completed(void **state);
void test_complete_idempotent_or_collision(void **state);
void test_complete_missing_key(void **state);
void test_release_absent_and_completed_noop(void **state);
void test_release_then_reclaim(void **state);
void test_lookup_never_writes(void **state);
void test_hash_collision_detected(void **state);
void test_claim_race_returns_winner(void **state);
void test_stale_release_after_reclaim(void **state);
void test_release_race_with_completion(void **state);
void test_complete_race(void **state);
void test_claim_batch_claimed_at(void **state);
void test_own_claims_do_not_expire(void **state);
void test_claim_batch(void **state);
void test_complete_batch(void **state);
void test_complete_given_claim(void **state);
void test_complete_given_hash(void **state);
void test_retention(void **state);
void test_stream_key_format(void **state);
void test_garbage_entry(void **state);
void test_bad_arguments(void **state);
void test_concurrent_claims_exactly_once(void **state);
void test_forget(void **state);
void test_forget_race(void **state);
void test_fingerprint_stored(void **state);
void test_claim_says_why_the_key_was_let_go(void **state);
void test_release_forgotten(void **state);
void test_forget_replay(void **state);

#endif /* KD_TEST_DEDUP_CASES_H */
