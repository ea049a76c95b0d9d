/*
 * kdedup tests - power loss and ownership changes, against librdkafka's
 * mock cluster in one `kdedup mock` process shared by every case (each
 * case has topics and a group of its own).
 *
 * Power loss: the pipeline runs over tests/powerloss_store.h, which drops
 * every write no sync covered when it "crashes" at a chosen write; a new
 * pipeline then runs over what survived. Ownership changes: a revoke, a
 * lost assignment, a stop and a reload's restart, each followed by a read
 * of the committed offsets from the broker.
 *
 * The oracle, everywhere: the committed offset of each source partition
 * is at or below its lowest unfinished message (one whose key is not
 * completed in what would survive a power loss: a crash, or now), and at
 * its end once everything settled; downstream, every key exactly once
 * (copies of one produce call with the same kdedup-run and
 * kdedup-forwarded-at are the mock's idempotent-producer artefacts,
 * counted apart).
 * The cases are in test_crash_*.c, their fixture in crash_fixture.c; this
 * file is their table.
 */
#include "tests/crash_fixture.h"

int main(void) {
    const struct CMUnitTest model[] = {
        cmocka_unit_test(test_model_sync),
        cmocka_unit_test(test_model_crash),
    };
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_crash_at_each_point_of_a_turn),
        cmocka_unit_test(test_crash_during_handover),
        cmocka_unit_test(test_crash_during_a_forget),
        cmocka_unit_test(test_offsets_after_a_revoke),
        cmocka_unit_test(test_offsets_after_a_lost_assignment),
        cmocka_unit_test(test_offsets_after_a_stop),
        cmocka_unit_test(test_offsets_after_a_reload_restart),
    };
    const char *filter = getenv("KD_TEST_FILTER");
    int failed;

    if (filter) /* e.g. "*turn*": one test while working */
        cmocka_set_test_filter(filter);
    failed = cmocka_run_group_tests_name("the power-loss store", model, NULL, NULL);
    if (filter && strstr(filter, "model")) /* no mock cluster needed */
        return failed;
    return failed +
           cmocka_run_group_tests_name("power loss and ownership changes (mock cluster)",
                                       tests, setup, teardown);
}
