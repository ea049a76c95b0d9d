/*
 * kdedup tests - the table of claims held by live messages (sidecar/held.h),
 * against a plain array model under a seeded random sequence of operations.
 */
#include "sidecar/held.h"

#include <stdarg.h>
#include <setjmp.h>
#include <stddef.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NKEYS 3000

static char keys[NKEYS][16];

static void test_add_find_remove(void **state) {
    kd_held *h = kd_held_new();
    int holders[2];

    (void)state;
    assert_non_null(h);
    assert_null(kd_held_find(h, 0, "a", 1));
    assert_true(kd_held_add(h, 0, "a", 1, &holders[0]));
    assert_ptr_equal(kd_held_find(h, 0, "a", 1), &holders[0]);
    assert_null(kd_held_find(h, 1, "a", 1)); /* routes are apart */
    assert_null(kd_held_find(h, 0, "ab", 2));
    kd_held_remove(h, 0, "a", 1, &holders[1]); /* not the holder: kept */
    assert_ptr_equal(kd_held_find(h, 0, "a", 1), &holders[0]);
    kd_held_remove(h, 0, "a", 1, &holders[0]);
    assert_null(kd_held_find(h, 0, "a", 1));
    assert_int_equal(kd_held_count(h), 0);
    kd_held_destroy(h);
}

/* Random adds and removes against a model: every key is found exactly
 * when the model holds it, through growth and backward-shift deletions. */
static void test_matches_model(void **state) {
    kd_held *h = kd_held_new();
    void *model[NKEYS] = {0};
    size_t held = 0;

    (void)state;
    srand(20261201);
    for (int i = 0; i < NKEYS; i++)
        snprintf(keys[i], sizeof(keys[i]), "key-%d", i);
    for (int op = 0; op < 200000; op++) {
        int k = rand() % NKEYS;
        size_t len = strlen(keys[k]);

        if (rand() % 3) {
            if (!model[k])
                held++;
            model[k] = &model[k];
            assert_true(kd_held_add(h, (size_t)(k % 3), keys[k], len, model[k]));
        } else {
            if (model[k])
                held--;
            kd_held_remove(h, (size_t)(k % 3), keys[k], len, model[k]);
            model[k] = NULL;
        }
        if (op % 1000 == 0)
            for (int j = 0; j < NKEYS; j++)
                assert_ptr_equal(
                    kd_held_find(h, (size_t)(j % 3), keys[j], strlen(keys[j])), model[j]);
        assert_int_equal(kd_held_count(h), held);
    }
    kd_held_destroy(h);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_add_find_remove),
        cmocka_unit_test(test_matches_model),
    };

    return cmocka_run_group_tests_name("held", tests, NULL, NULL);
}
