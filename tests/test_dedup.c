/*
 * kdedup tests - the dedup contract (docs/architecture.md), every rule run against
 * both backends, the in-memory store and RocksDB, by the same test code.
 * The cases are in test_dedup_*.c, their helpers in dedup_cases.c; this
 * file is their table.
 */
#include "tests/dedup_cases.h"

int main(void) {
    const struct CMUnitTest tests[] = {
        BOTH(test_claim_then_in_flight),
        BOTH(test_complete_then_completed),
        BOTH(test_complete_idempotent_or_collision),
        BOTH(test_complete_missing_key),
        BOTH(test_release_absent_and_completed_noop),
        BOTH(test_release_then_reclaim),
        BOTH(test_lookup_never_writes),
        BOTH(test_hash_collision_detected),
        BOTH(test_claim_race_returns_winner),
        BOTH(test_stale_release_after_reclaim),
        BOTH(test_release_race_with_completion),
        BOTH(test_complete_race),
        BOTH(test_claim_batch),
        BOTH(test_claim_batch_claimed_at),
        BOTH(test_own_claims_do_not_expire),
        BOTH(test_complete_batch),
        BOTH(test_complete_given_claim),
        BOTH(test_complete_given_hash),
        BOTH(test_retention),
        BOTH(test_stream_key_format),
        BOTH(test_garbage_entry),
        BOTH(test_bad_arguments),
        BOTH(test_concurrent_claims_exactly_once),
        BOTH(test_forget),
        BOTH(test_forget_race),
        BOTH(test_fingerprint_stored),
        BOTH(test_claim_says_why_the_key_was_let_go),
        BOTH(test_release_forgotten),
        BOTH(test_forget_replay),
    };

    return cmocka_run_group_tests_name("dedup (memory and rocksdb)", tests, NULL, NULL);
}
