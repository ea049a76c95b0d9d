/*
 * kdedup tests - offset tracking: the commit point never passes a pending
 * offset, whatever order messages finish in.
 */
#include "sidecar/offsets.h"

#include <stdarg.h>
#include <setjmp.h>
#include <stddef.h>
#include <cmocka.h>

#include <stdlib.h>

static int64_t commit_point(kd_offsets *o, size_t route, int32_t part) {
    int64_t at = -1;

    assert_true(kd_offsets_commit_point(o, route, part, &at));
    return at;
}

static void test_out_of_order_done(void **state) {
    kd_offsets *o = kd_offsets_new(2);

    (void)state;
    assert_true(kd_offsets_assign(o, 1, 3));
    assert_false(kd_offsets_commit_point(o, 1, 3, &(int64_t){0})); /* nothing yet */
    for (int64_t off = 10; off < 15; off++)
        assert_int_equal(kd_offsets_track(o, 1, 3, off), KD_TRACKED);
    assert_int_equal(commit_point(o, 1, 3), 10);
    kd_offsets_done(o, 1, 3, kd_offsets_owner(o, 1, 3), 12);
    kd_offsets_done(o, 1, 3, kd_offsets_owner(o, 1, 3), 14);
    assert_int_equal(commit_point(o, 1, 3), 10); /* 10 still pending */
    kd_offsets_done(o, 1, 3, kd_offsets_owner(o, 1, 3), 10);
    assert_int_equal(commit_point(o, 1, 3), 11);
    kd_offsets_done(o, 1, 3, kd_offsets_owner(o, 1, 3), 11);
    assert_int_equal(commit_point(o, 1, 3), 13);
    assert_int_equal(kd_offsets_pending(o, 1, 3), 1);
    kd_offsets_done(o, 1, 3, kd_offsets_owner(o, 1, 3), 13);
    assert_int_equal(commit_point(o, 1, 3), 15); /* all done: last + 1 */
    assert_int_equal(kd_offsets_pending_total(o), 0);
    kd_offsets_destroy(o);
}

static void test_gaps_and_redelivery(void **state) {
    kd_offsets *o = kd_offsets_new(1);

    (void)state;
    kd_offsets_assign(o, 0, 0);
    assert_int_equal(kd_offsets_track(o, 0, 0, 100), KD_TRACKED);
    assert_int_equal(kd_offsets_track(o, 0, 0, 105), KD_TRACKED); /* compacted gap */
    assert_int_equal(kd_offsets_track(o, 0, 0, 105), KD_NOT_NEWER);
    assert_int_equal(kd_offsets_track(o, 0, 0, 50), KD_NOT_NEWER);
    kd_offsets_done(o, 0, 0, kd_offsets_owner(o, 0, 0), 103); /* never tracked: ignored */
    assert_int_equal(commit_point(o, 0, 0), 100);
    kd_offsets_done(o, 0, 0, kd_offsets_owner(o, 0, 0), 100);
    assert_int_equal(commit_point(o, 0, 0), 105);
    kd_offsets_done(o, 0, 0, kd_offsets_owner(o, 0, 0), 100); /* twice: harmless */
    assert_int_equal(commit_point(o, 0, 0), 105);
    kd_offsets_destroy(o);
}

static void test_assignment(void **state) {
    kd_offsets *o = kd_offsets_new(1);

    (void)state;
    assert_int_equal(kd_offsets_track(o, 0, 7, 1), KD_NOT_ASSIGNED);
    assert_int_equal(kd_offsets_track(o, 5, 0, 1), KD_NOT_ASSIGNED); /* no such route */
    assert_false(kd_offsets_assign(o, 5, 0));
    assert_false(kd_offsets_assign(o, 0, -1));
    kd_offsets_assign(o, 0, 7);
    assert_true(kd_offsets_assigned(o, 0, 7));
    assert_false(kd_offsets_assigned(o, 0, 6));
    kd_offsets_track(o, 0, 7, 40);
    kd_offsets_revoke(o, 0, 7);
    assert_false(kd_offsets_assigned(o, 0, 7));
    assert_int_equal(kd_offsets_pending(o, 0, 7), 0);
    kd_offsets_done(o, 0, 7, 1, 40); /* late report of a revoked partition */
    /* Assigned again: starts afresh, even below what it tracked before. */
    kd_offsets_assign(o, 0, 7);
    assert_int_equal(kd_offsets_track(o, 0, 7, 30), KD_TRACKED);
    assert_int_equal(commit_point(o, 0, 7), 30);
    kd_offsets_destroy(o);
}

/* A partition revoked and assigned again is a new ownership: a late
 * report of the old one cannot mark the new one's offset done, even when
 * both track the same offset (the message consumed again). */
static void test_ended_ownership_cannot_mark_done(void **state) {
    kd_offsets *o = kd_offsets_new(1);
    uint64_t first, second;

    (void)state;
    assert_int_equal(kd_offsets_owner(o, 0, 3), 0);
    assert_true(kd_offsets_assign(o, 0, 3));
    first = kd_offsets_owner(o, 0, 3);
    assert_true(first != 0);
    assert_int_equal(kd_offsets_track(o, 0, 3, 10), KD_TRACKED);
    kd_offsets_revoke(o, 0, 3);
    assert_int_equal(kd_offsets_owner(o, 0, 3), 0);
    assert_true(kd_offsets_assign(o, 0, 3));
    second = kd_offsets_owner(o, 0, 3);
    assert_true(second != 0 && second != first);
    assert_int_equal(kd_offsets_track(o, 0, 3, 10), KD_TRACKED);
    assert_int_equal(kd_offsets_track(o, 0, 3, 11), KD_TRACKED);
    kd_offsets_done(o, 0, 3, first, 10); /* the old ownership's late report */
    assert_int_equal(commit_point(o, 0, 3), 10);
    assert_int_equal(kd_offsets_pending(o, 0, 3), 2);
    kd_offsets_done(o, 0, 3, second, 10);
    assert_int_equal(commit_point(o, 0, 3), 11);
    kd_offsets_destroy(o);
}

typedef struct moved {
    int calls;
    size_t route;
    int32_t partition;
    int64_t offset;
} moved;

static void on_moved(void *arg, size_t route, int32_t partition, int64_t offset) {
    moved *m = arg;

    m->calls++;
    m->route = route;
    m->partition = partition;
    m->offset = offset;
}

static void test_each_moved_reports_changes_once(void **state) {
    kd_offsets *o = kd_offsets_new(1);
    moved m = {0};

    (void)state;
    kd_offsets_assign(o, 0, 2);
    kd_offsets_each_moved(o, on_moved, &m);
    assert_int_equal(m.calls, 0);
    kd_offsets_track(o, 0, 2, 5);
    kd_offsets_track(o, 0, 2, 6);
    kd_offsets_each_moved(o, on_moved, &m);
    assert_int_equal(m.calls, 1);
    assert_int_equal(m.offset, 5);
    kd_offsets_each_moved(o, on_moved, &m);
    assert_int_equal(m.calls, 1); /* unchanged: not reported again */
    kd_offsets_done(o, 0, 2, kd_offsets_owner(o, 0, 2), 6);
    kd_offsets_each_moved(o, on_moved, &m);
    assert_int_equal(m.calls, 1); /* 5 still pending */
    kd_offsets_done(o, 0, 2, kd_offsets_owner(o, 0, 2), 5);
    kd_offsets_each_moved(o, on_moved, &m);
    assert_int_equal(m.calls, 2);
    assert_int_equal(m.partition, 2);
    assert_int_equal(m.offset, 7);
    kd_offsets_destroy(o);
}

/* Many offsets finishing in a shuffled order: the ring grows and wraps,
 * and the commit point always equals the lowest pending offset. */
static void test_shuffled_many(void **state) {
    enum { N = 5000 };
    kd_offsets *o = kd_offsets_new(1);
    int64_t *order = malloc(N * sizeof(*order));
    bool *done = calloc(N, sizeof(*done));
    unsigned seed = 7;
    int64_t low = 0;

    (void)state;
    kd_offsets_assign(o, 0, 0);
    for (int64_t i = 0; i < N; i++) {
        assert_int_equal(kd_offsets_track(o, 0, 0, i), KD_TRACKED);
        order[i] = i;
    }
    for (int i = N - 1; i > 0; i--) {
        int j = rand_r(&seed) % (i + 1);
        int64_t t = order[i];

        order[i] = order[j];
        order[j] = t;
    }
    for (int i = 0; i < N; i++) {
        done[order[i]] = true;
        kd_offsets_done(o, 0, 0, kd_offsets_owner(o, 0, 0), order[i]);
        while (low < N && done[low])
            low++;
        assert_int_equal(commit_point(o, 0, 0), low == N ? N : low);
    }
    free(order);
    free(done);
    kd_offsets_destroy(o);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_out_of_order_done),
        cmocka_unit_test(test_gaps_and_redelivery),
        cmocka_unit_test(test_assignment),
        cmocka_unit_test(test_ended_ownership_cannot_mark_done),
        cmocka_unit_test(test_each_moved_reports_changes_once),
        cmocka_unit_test(test_shuffled_many),
    };

    return cmocka_run_group_tests_name("offsets", tests, NULL, NULL);
}
