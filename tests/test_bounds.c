/*
 * kdedup tests - the bounds of what kdedup holds in memory, and a loop that
 * keeps turning: recovery scans read in steps within dedup.scan_cache_bytes,
 * backpressure while deliveries cannot land, and a partition held back
 * alone behind a message that never can. Against librdkafka's mock cluster
 * in a `kdedup mock` process, like test_pipeline.
 * The cases are in test_bounds_*.c, their fixture (test_pipeline's) in
 * pipeline_fixture.c;
 * this file is their table.
 */
#include "tests/pipeline_fixture.h"

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_scans_step_within_the_cache_budget,
                                        setup_bounds, teardown),
        cmocka_unit_test_setup_teardown(test_scans_that_do_not_fit_together_take_turns,
                                        setup_bounds, teardown),
        cmocka_unit_test_setup_teardown(test_handover_beside_a_paused_scan, setup_bounds,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_unclaimed_records_are_no_delivery,
                                        setup_bounds, teardown),
        cmocka_unit_test_setup_teardown(test_orphans_keep_their_order, setup_bounds,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_handover_batches_within_their_bytes,
                                        setup_bounds, teardown),
        cmocka_unit_test_setup_teardown(test_headers_count_in_flight, setup_bounds,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_backpressure_pauses_and_resumes,
                                        setup_bounds, teardown),
        cmocka_unit_test_setup_teardown(test_poison_holds_back_only_its_partition,
                                        setup_bounds, teardown),
    };

    return cr_run_group("bounds (mock cluster)", tests, sizeof(tests) / sizeof(tests[0]));
}
