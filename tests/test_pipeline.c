/*
 * kdedup tests - the pipeline against a real Kafka-protocol broker:
 * librdkafka's mock cluster in a `kdedup mock` process. Each test plays the
 * producer upstream and the reader downstream, and asserts what reached
 * the downstream topics and what offsets were committed. The cases are in
 * test_pipeline_*.c (by subject), their fixture in pipeline_fixture.c; this
 * file is their table.
 */
#include "tests/pipeline_fixture.h"

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_duplicates_within_across_and_restart, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_missing_key_policies, setup, teardown),
        cmocka_unit_test_setup_teardown(test_hostile_headers, setup, teardown),
        cmocka_unit_test_setup_teardown(test_header_bounds_reject, setup, teardown),
        cmocka_unit_test_setup_teardown(test_ambiguous_keys_dead_lettered, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_store_full_pauses_and_resumes, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_not_persisted_released_and_retried, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_commit_stops_at_unfinished, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stop_mid_stream_loses_nothing, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_orphaned_claim_is_reforwarded, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_orphans_resolved_from_downstream, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_orphans_resolved_without_handover, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_expired_orphans_looked_up, setup, teardown),
        cmocka_unit_test_setup_teardown(test_claim_without_owner_reads_no_own_scan, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_orphan_not_completed_by_an_older_delivery,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_retries_exhausted_dead_letter, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_dead_letter_refused_is_stuck, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_handover_moves_history, setup, teardown),
        cmocka_unit_test_setup_teardown(test_signed_history_only, setup, teardown),
        cmocka_unit_test_setup_teardown(test_handover_keys_spread, setup_three, teardown),
        cmocka_unit_test_setup_teardown(test_handover_ignores_event_time, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_handover_waits_for_downstream, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_store_slower_than_max_poll, setup, teardown),
        cmocka_unit_test_setup_teardown(test_store_write_within_its_bound_does_not_pause,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_stop_during_a_slow_write, setup, teardown),
        cmocka_unit_test_setup_teardown(test_expired_claim_in_a_dropped_batch, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_handover_retried_after_a_failed_completion,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_txn_commit_tries_end_at_the_stop, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(
            test_txn_unknown_commit_read_once_the_producer_is_ready, setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_txn_unknown_commit_note_read_once_the_producer_is_ready, setup,
            teardown),
        cmocka_unit_test_setup_teardown(test_txn_producer_initialised_in_later_turns,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_revoke_during_a_slow_write, setup, teardown),
        cmocka_unit_test_setup_teardown(test_txn_revoke_during_a_slow_write, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_eager_revoke_outlasted_by_a_slow_write,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_assignment_lost_during_a_slow_write, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_rebalance_while_claims_are_written, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_partition_back_to_same_process, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_own_claim_kept_while_its_copy_waits, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_conflict_waits_for_an_ended_ownership, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_uncertain_delivery_of_an_ended_ownership,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_left_copies_read_together, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stop_takes_one_grace_period, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_possibly_persisted_resolved_downstream,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_resend_reads_from_the_first_copy, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_lost_claim_race_claims_again, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(
            test_handover_refuses_a_delivery_older_than_the_claim, setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_handover_refuses_a_delivery_older_than_an_expired_claim, setup,
            teardown),
        cmocka_unit_test_setup_teardown(test_handover_honours_forgets_not_releases, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_forget_travels_with_the_partition, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_forget_record_is_no_delivery, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_handover_read_again_keeps_a_forget, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_handover_read_again_keeps_an_expired_claim,
                                        setup, teardown),
    };

    /* KD_TEST_FILTER='*same_process*': one case while working; each case in
     * a process of its own, KD_TEST_JOBS (4) at a time */
    return cr_run_group("pipeline (mock cluster)", tests,
                        sizeof(tests) / sizeof(tests[0]));
}
