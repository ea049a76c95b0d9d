/*
 * kdedup tests - the dedup contract: claims, completions, releases, lookups,
 * collisions and races (run by test_dedup.c).
 */
#include "tests/dedup_cases.h"

/* claim → claimed; claim again → in flight with the first claim's time. */
void test_claim_then_in_flight(void **state) {
    fx *f = *state;

    assert_claim(f->dedup, "order-1", 100, KD_CLAIMED, 100);
    assert_claim(f->dedup, "order-1", 200, KD_IN_FLIGHT, 100);
    assert_claim(f->dedup, "order-2", 300, KD_CLAIMED, 300);
    assert_int_equal(fx_stream_count(f, "order-1"), 1);
}

/* complete → completed, and claims return the same receipt bytes. */
void test_complete_then_completed(void **state) {
    fx *f = *state;
    const char receipt[] = {'r', 0, '\xff', 'x'}; /* binary-safe */
    kd_decision dec;
    bool found;

    assert_claim(f->dedup, "k", 100, KD_CLAIMED, 100);
    assert_int_equal(
        kd_dedup_complete_receipt(f->dedup, K("k"), receipt, sizeof(receipt)), KD_OK);
    assert_int_equal(kd_dedup_claim_or_get(f->dedup, K("k"), 500, &dec), KD_OK);
    assert_int_equal(dec.state, KD_COMPLETED);
    assert_true(dec.timestamp_ms > 1000000000000ULL); /* completion wall-clock time */
    assert_int_equal(dec.receipt_len, sizeof(receipt));
    assert_memory_equal(dec.receipt, receipt, sizeof(receipt));
    kd_decision_clear(&dec);
    assert_null(dec.receipt);

    assert_int_equal(kd_dedup_lookup(f->dedup, K("k"), &dec, &found), KD_OK);
    assert_true(found);
    assert_int_equal(dec.state, KD_COMPLETED);
    assert_memory_equal(dec.receipt, receipt, sizeof(receipt));
    kd_decision_clear(&dec);
    assert_int_equal(fx_stream_count(f, "k"), 2);
}

/* complete is idempotent for the same bytes and a collision for others. */
void test_complete_idempotent_or_collision(void **state) {
    fx *f = *state;

    assert_claim(f->dedup, "k", 1, KD_CLAIMED, 1);
    assert_int_equal(kd_dedup_complete_receipt(f->dedup, K("k"), K("r1")), KD_OK);
    assert_int_equal(kd_dedup_complete_receipt(f->dedup, K("k"), K("r1")), KD_OK);
    assert_int_equal(fx_stream_count(f, "k"), 2); /* the repeat wrote nothing */
    assert_int_equal(kd_dedup_complete_receipt(f->dedup, K("k"), K("r2")),
                     KD_ERR_DEDUP_COLLISION);
    assert_int_equal(fx_stream_count(f, "k"), 2);
    assert_completed_with(f->dedup, "k", "r1");
}

/* complete on a key never claimed (or released) is a collision, writes nothing. */
void test_complete_missing_key(void **state) {
    fx *f = *state;

    assert_int_equal(kd_dedup_complete_receipt(f->dedup, K("ghost"), K("r")),
                     KD_ERR_DEDUP_COLLISION);
    assert_int_equal(fx_stream_count(f, "ghost"), 0);

    assert_claim(f->dedup, "gone", 1, KD_CLAIMED, 1);
    assert_int_equal(kd_dedup_release_claim(f->dedup, K("gone")), KD_OK);
    assert_int_equal(kd_dedup_complete_receipt(f->dedup, K("gone"), K("r")),
                     KD_ERR_DEDUP_COLLISION);
    assert_int_equal(fx_stream_count(f, "gone"), 2);
}

/* release of an absent or completed key is a no-op that writes nothing. */
void test_release_absent_and_completed_noop(void **state) {
    fx *f = *state;

    assert_int_equal(kd_dedup_release_claim(f->dedup, K("never")), KD_OK);
    assert_int_equal(fx_stream_count(f, "never"), 0);

    assert_claim(f->dedup, "done", 1, KD_CLAIMED, 1);
    assert_int_equal(kd_dedup_complete_receipt(f->dedup, K("done"), K("rcpt")), KD_OK);
    assert_int_equal(kd_dedup_release_claim(f->dedup, K("done")), KD_OK);
    assert_int_equal(fx_stream_count(f, "done"), 2);
    assert_completed_with(f->dedup, "done", "rcpt"); /* receipt not clobbered */
}

/* release of in flight appends a tombstone; the next claim succeeds. */
void test_release_then_reclaim(void **state) {
    fx *f = *state;
    kd_decision dec;
    bool found = true;

    assert_claim(f->dedup, "k", 10, KD_CLAIMED, 10);
    assert_int_equal(kd_dedup_release_claim(f->dedup, K("k")), KD_OK);
    assert_int_equal(fx_stream_count(f, "k"), 2);
    assert_int_equal(kd_dedup_lookup(f->dedup, K("k"), &dec, &found), KD_OK);
    assert_false(found);
    assert_int_equal(kd_dedup_release_claim(f->dedup, K("k")), KD_OK); /* no-op */
    assert_int_equal(fx_stream_count(f, "k"), 2);
    assert_claim(f->dedup, "k", 20, KD_CLAIMED, 20);
    assert_claim(f->dedup, "k", 30, KD_IN_FLIGHT, 20);
    assert_int_equal(fx_stream_count(f, "k"), 3);
}

/* lookup reads only: no append, whatever the state. */
void test_lookup_never_writes(void **state) {
    fx *f = *state;
    fx_counts counts;
    kd_store *counting = fx_counting_store(f->store, &counts);
    kd_dedup *d = kd_dedup_new(counting, "test");
    kd_decision dec;
    bool found = true;

    assert_int_equal(kd_dedup_lookup(d, K("k"), &dec, &found), KD_OK);
    assert_false(found);
    assert_claim(f->dedup, "k", 5, KD_CLAIMED, 5);
    assert_int_equal(kd_dedup_lookup(d, K("k"), &dec, &found), KD_OK);
    assert_true(found);
    assert_int_equal(dec.state, KD_IN_FLIGHT);
    assert_int_equal(dec.timestamp_ms, 5);
    assert_int_equal(kd_dedup_complete_receipt(f->dedup, K("k"), K("r")), KD_OK);
    assert_int_equal(kd_dedup_lookup(d, K("k"), &dec, &found), KD_OK);
    assert_int_equal(dec.state, KD_COMPLETED);
    kd_decision_clear(&dec);

    assert_int_equal(counts.read_last, 3);
    assert_int_equal(counts.append + counts.append_batch, 0);
    assert_int_equal(fx_stream_count(f, "k"), 2);
    kd_dedup_destroy(d);
    kd_store_destroy(counting);
}

/* Every stream key maps to one stream: a second key is a collision in
 * lookup, claim, complete and release, and nothing is merged. */
void test_hash_collision_detected(void **state) {
    fx *f = *state;
    kd_store *colliding = fx_colliding_store(f->store);
    kd_dedup *d = kd_dedup_new(colliding, "test");
    kd_claim batch[2] = {{.key = "a", .key_len = 1}, {.key = "b", .key_len = 1}};
    kd_decision dec;
    bool found;

    assert_claim(d, "a", 1, KD_CLAIMED, 1);
    assert_int_equal(kd_dedup_lookup(d, K("b"), &dec, &found), KD_ERR_DEDUP_COLLISION);
    assert_int_equal(kd_dedup_claim_or_get(d, K("b"), 2, &dec), KD_ERR_DEDUP_COLLISION);
    assert_int_equal(kd_dedup_complete_receipt(d, K("b"), K("r")),
                     KD_ERR_DEDUP_COLLISION);
    assert_int_equal(kd_dedup_release_claim(d, K("b")), KD_ERR_DEDUP_COLLISION);
    assert_int_equal(kd_dedup_claim_batch(d, batch, 2, 3), KD_OK);
    assert_int_equal(batch[0].err, KD_OK);
    assert_int_equal(batch[0].decision.state, KD_IN_FLIGHT);
    assert_int_equal(batch[1].err, KD_ERR_DEDUP_COLLISION);
    /* "a" is untouched: still in flight from its own claim. */
    assert_claim(d, "a", 9, KD_IN_FLIGHT, 1);
    kd_dedup_destroy(d);
    kd_store_destroy(colliding);
}

/*
 * Races, forced by a store wrapper that lets a competitor write first.
 */

/* A claim that loses the append race returns the winner's decision. */
void test_claim_race_returns_winner(void **state) {
    fx *f = *state;
    race r = {.key = "k"};
    kd_store *w;
    kd_dedup *d = racing_dedup(f, &r, &w);

    assert_claim(d, "k", 66, KD_IN_FLIGHT, 55);
    assert_int_equal(fx_stream_count(f, "k"), 1);
    kd_dedup_destroy(d);
    kd_store_destroy(w);
}

/* A stale release after a re-claim returns the conflict and leaves the
 * fresh claim in flight. */
void test_stale_release_after_reclaim(void **state) {
    fx *f = *state;
    race r = {.key = "k", .release_and_reclaim = true};
    kd_store *w;
    kd_dedup *d;

    assert_claim(f->dedup, "k", 10, KD_CLAIMED, 10);
    d = racing_dedup(f, &r, &w);
    assert_int_equal(kd_dedup_release_claim(d, K("k")), KD_ERR_SEQUENCE_CONFLICT);
    assert_claim(f->dedup, "k", 99, KD_IN_FLIGHT, 77);
    assert_int_equal(fx_stream_count(f, "k"), 3);
    kd_dedup_destroy(d);
    kd_store_destroy(w);
}

/* A release that loses to a completion succeeds without touching the receipt. */
void test_release_race_with_completion(void **state) {
    fx *f = *state;
    race r = {.key = "k", .receipt = "won"};
    kd_store *w;
    kd_dedup *d;

    assert_claim(f->dedup, "k", 10, KD_CLAIMED, 10);
    d = racing_dedup(f, &r, &w);
    assert_int_equal(kd_dedup_release_claim(d, K("k")), KD_OK);
    assert_completed_with(f->dedup, "k", "won");
    kd_dedup_destroy(d);
    kd_store_destroy(w);
}

/* A completion that loses the race succeeds only for the same receipt. */
void test_complete_race(void **state) {
    fx *f = *state;
    race same = {.key = "k1", .receipt = "r"}, other = {.key = "k2", .receipt = "theirs"};
    kd_store *w;
    kd_dedup *d;

    assert_claim(f->dedup, "k1", 1, KD_CLAIMED, 1);
    assert_claim(f->dedup, "k2", 1, KD_CLAIMED, 1);
    d = racing_dedup(f, &same, &w);
    assert_int_equal(kd_dedup_complete_receipt(d, K("k1"), K("r")), KD_OK);
    kd_dedup_destroy(d);
    kd_store_destroy(w);
    d = racing_dedup(f, &other, &w);
    assert_int_equal(kd_dedup_complete_receipt(d, K("k2"), K("mine")),
                     KD_ERR_SEQUENCE_CONFLICT);
    assert_completed_with(f->dedup, "k2", "theirs");
    kd_dedup_destroy(d);
    kd_store_destroy(w);
}
