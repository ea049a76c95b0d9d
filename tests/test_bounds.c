/*
 * kdedup tests - the bounds of what kdedup holds in memory, and a loop that
 * keeps turning: recovery scans read in steps within dedup.scan_cache_bytes,
 * backpressure while deliveries cannot land, and a partition held back
 * alone behind a message that never can. Against librdkafka's mock cluster
 * in a `kdedup mock` process, like test_pipeline.
 * The cases are in test_bounds_*.c, their fixture in bounds_fixture.c;
 * this file is their table.
 */
#include "tests/bounds_fixture.h"

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_scans_step_within_the_cache_budget, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_scans_that_do_not_fit_together_take_turns,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_handover_beside_a_paused_scan, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_unclaimed_records_are_no_delivery, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_orphans_keep_their_order, setup, teardown),
        cmocka_unit_test_setup_teardown(test_handover_batches_within_their_bytes, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_headers_count_in_flight, setup, teardown),
        cmocka_unit_test_setup_teardown(test_backpressure_pauses_and_resumes, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_poison_holds_back_only_its_partition, setup,
                                        teardown),
    };

    return cr_run_group("bounds (mock cluster)", tests, sizeof(tests) / sizeof(tests[0]));
}
