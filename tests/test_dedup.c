/*
 * kdedup tests - the dedup contract (docs/architecture.md), every rule run against
 * both backends, the in-memory store and RocksDB, by the same test code.
 */
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

static fx_backend backend_mem = FX_MEM;
static fx_backend backend_rocks = FX_ROCKS;

static int setup(void **state) {
    *state = fx_new(*(fx_backend *)*state);
    return 0;
}

static int teardown(void **state) {
    fx_free(*state);
    return 0;
}

static void assert_claim(kd_dedup *d, const char *key, uint64_t ts, kd_state want,
                         uint64_t want_ts) {
    kd_decision dec;

    assert_int_equal(kd_dedup_claim_or_get(d, K(key), ts, &dec), KD_OK);
    assert_int_equal(dec.state, want);
    assert_int_equal(dec.timestamp_ms, want_ts);
    kd_decision_clear(&dec);
}

static void assert_completed_with(kd_dedup *d, const char *key, const char *receipt) {
    kd_decision dec;

    assert_int_equal(kd_dedup_claim_or_get(d, K(key), 999999, &dec), KD_OK);
    assert_int_equal(dec.state, KD_COMPLETED);
    assert_int_equal(dec.receipt_len, strlen(receipt));
    assert_memory_equal(dec.receipt, receipt, strlen(receipt));
    kd_decision_clear(&dec);
}

/* claim → claimed; claim again → in flight with the first claim's time. */
static void test_claim_then_in_flight(void **state) {
    fx *f = *state;

    assert_claim(f->dedup, "order-1", 100, KD_CLAIMED, 100);
    assert_claim(f->dedup, "order-1", 200, KD_IN_FLIGHT, 100);
    assert_claim(f->dedup, "order-2", 300, KD_CLAIMED, 300);
    assert_int_equal(fx_stream_count(f, "order-1"), 1);
}

/* complete → completed, and claims return the same receipt bytes. */
static void test_complete_then_completed(void **state) {
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
static void test_complete_idempotent_or_collision(void **state) {
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
static void test_complete_missing_key(void **state) {
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
static void test_release_absent_and_completed_noop(void **state) {
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
static void test_release_then_reclaim(void **state) {
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
static void test_lookup_never_writes(void **state) {
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
static void test_hash_collision_detected(void **state) {
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

typedef struct race {
    kd_dedup *competitor; /* over the inner store */
    const char *key;
    const char *receipt; /* complete with this, when set */
    bool release_and_reclaim;
} race;

static void race_hook(void *arg) {
    race *r = arg;
    kd_decision dec;

    if (r->release_and_reclaim) {
        assert_int_equal(kd_dedup_release_claim(r->competitor, K(r->key)), KD_OK);
        assert_int_equal(kd_dedup_claim_or_get(r->competitor, K(r->key), 77, &dec),
                         KD_OK);
        assert_int_equal(dec.state, KD_CLAIMED);
    } else if (r->receipt) {
        assert_int_equal(
            kd_dedup_complete_receipt(r->competitor, K(r->key), K(r->receipt)), KD_OK);
    } else {
        assert_int_equal(kd_dedup_claim_or_get(r->competitor, K(r->key), 55, &dec),
                         KD_OK);
        assert_int_equal(dec.state, KD_CLAIMED);
    }
}

static kd_dedup *racing_dedup(fx *f, race *r, kd_store **wrapper) {
    r->competitor = f->dedup;
    *wrapper = fx_racing_store(f->store, race_hook, r);
    return kd_dedup_new(*wrapper, "test");
}

/* A claim that loses the append race returns the winner's decision. */
static void test_claim_race_returns_winner(void **state) {
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
static void test_stale_release_after_reclaim(void **state) {
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
static void test_release_race_with_completion(void **state) {
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
static void test_complete_race(void **state) {
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

/*
 * Batches.
 */

/* One store write per batch; a repeated key: first claimed, the rest in
 * flight; existing keys keep their decisions. */
/* A claim made with its own time (claimed_at, as a handover claims a learned
 * key at its record's forwarding time) is stored and answered with that
 * time; whether a held claim expired is still judged at the batch's time. */
static void test_claim_batch_claimed_at(void **state) {
    fx *f = *state;
    kd_claim c[2] = {{.key = "old", .key_len = 3, .claimed_at = 400},
                     {.key = "now", .key_len = 3}};

    kd_dedup_set_retention(f->dedup, 0, 1000);
    assert_int_equal(kd_dedup_claim_batch(f->dedup, c, 2, 1000), KD_OK);
    assert_int_equal(c[0].decision.state, KD_CLAIMED);
    assert_int_equal(c[0].decision.timestamp_ms, 400);
    assert_int_equal(c[1].decision.timestamp_ms, 1000);
    kd_decision_clear(&c[0].decision);
    kd_decision_clear(&c[1].decision);

    /* Read back at 1500: held since 400, so expired, unlike the other. */
    c[0] = (kd_claim){.key = "old", .key_len = 3};
    c[1] = (kd_claim){.key = "now", .key_len = 3};
    assert_int_equal(kd_dedup_claim_batch(f->dedup, c, 2, 1500), KD_OK);
    assert_int_equal(c[0].decision.state, KD_CLAIMED);
    assert_true(c[0].expired);
    assert_int_equal(c[0].expired_at, 400);
    assert_int_equal(c[1].decision.state, KD_IN_FLIGHT);
    assert_int_equal(c[1].decision.timestamp_ms, 1000);
    kd_decision_clear(&c[0].decision);
    kd_decision_clear(&c[1].decision);
}

/* A claim of this cache's owner does not expire for it: its process
 * resolves it itself, and a claim taken over would lose the time that says
 * where its delivery may be downstream. Another owner's does, and so does
 * this owner's once a cache of another owner (the next run) reads it. */
static void test_own_claims_do_not_expire(void **state) {
    fx *f = *state;
    kd_claim mine = {.key = "mine", .key_len = 4},
             theirs = {.key = "theirs", .key_len = 6};
    kd_decision dec;
    bool found;

    kd_dedup_set_retention(f->dedup, 0, 1000);
    kd_dedup_set_owner(f->dedup, 7);
    assert_claim(f->dedup, "theirs", 100, KD_CLAIMED, 100);
    kd_dedup_set_owner(f->dedup, 8);
    assert_claim(f->dedup, "mine", 100, KD_CLAIMED, 100);

    assert_int_equal(kd_dedup_claim_batch(f->dedup, &mine, 1, 5000), KD_OK);
    assert_int_equal(mine.decision.state, KD_IN_FLIGHT); /* held since 100, mine */
    assert_int_equal(mine.decision.timestamp_ms, 100);
    assert_int_equal(mine.owner, 8);
    assert_false(mine.expired);
    assert_int_equal(fx_stream_count(f, "mine"), 1);
    assert_int_equal(kd_dedup_claim_batch(f->dedup, &theirs, 1, 5000), KD_OK);
    assert_int_equal(theirs.decision.state, KD_CLAIMED); /* owner 7's: expired */
    assert_true(theirs.expired);
    assert_int_equal(theirs.expired_owner, 7);
    assert_int_equal(theirs.expired_at, 100);
    kd_decision_clear(&mine.decision);
    kd_decision_clear(&theirs.decision);
    assert_int_equal(kd_dedup_lookup(f->dedup, K("mine"), &dec, &found), KD_OK);
    assert_true(found);
    kd_decision_clear(&dec);

    kd_dedup_set_owner(f->dedup, 9); /* the next run */
    mine = (kd_claim){.key = "mine", .key_len = 4};
    assert_int_equal(kd_dedup_claim_batch(f->dedup, &mine, 1, 5000), KD_OK);
    assert_int_equal(mine.decision.state, KD_CLAIMED);
    assert_true(mine.expired);
    assert_int_equal(mine.expired_owner, 8);
    assert_int_equal(mine.expired_at, 100);
    kd_decision_clear(&mine.decision);
}

static void test_claim_batch(void **state) {
    fx *f = *state;
    fx_counts counts;
    kd_store *counting = fx_counting_store(f->store, &counts);
    kd_dedup *d = kd_dedup_new(counting, "test");
    kd_claim c[5] = {{.key = "a", .key_len = 1},
                     {.key = "b", .key_len = 1},
                     {.key = "a", .key_len = 1},
                     {.key = "done", .key_len = 4},
                     {.key = "a", .key_len = 1}};

    assert_claim(f->dedup, "done", 1, KD_CLAIMED, 1);
    assert_int_equal(kd_dedup_complete_receipt(f->dedup, K("done"), K("R")), KD_OK);
    kd_dedup_set_owner(d, 42);

    assert_int_equal(kd_dedup_claim_batch(d, c, 5, 1000), KD_OK);
    for (int i = 0; i < 5; i++)
        assert_int_equal(c[i].err, KD_OK);
    assert_int_equal(c[0].decision.state, KD_CLAIMED);
    assert_int_equal(c[1].decision.state, KD_CLAIMED);
    assert_int_equal(c[2].decision.state, KD_IN_FLIGHT);
    assert_int_equal(c[2].decision.timestamp_ms, 1000);
    assert_int_equal(c[2].owner, 42);
    assert_int_equal(c[3].decision.state, KD_COMPLETED);
    assert_memory_equal(c[3].decision.receipt, "R", 1);
    assert_int_equal(c[4].decision.state, KD_IN_FLIGHT);
    assert_int_equal(counts.append_batch, 1);
    assert_int_equal(counts.batch_items, 2);
    assert_int_equal(counts.append, 0);
    for (int i = 0; i < 5; i++)
        kd_decision_clear(&c[i].decision);

    /* The claims were stored with their owner. */
    assert_int_equal(kd_dedup_claim_batch(d, c, 2, 2000), KD_OK);
    assert_int_equal(c[0].decision.state, KD_IN_FLIGHT);
    assert_int_equal(c[0].owner, 42);
    assert_int_equal(fx_stream_count(f, "a"), 1);
    kd_dedup_destroy(d);
    kd_store_destroy(counting);
}

/* One store write per completion batch, with per-key semantics. */
static void test_complete_batch(void **state) {
    fx *f = *state;
    fx_counts counts;
    kd_store *counting = fx_counting_store(f->store, &counts);
    kd_dedup *d = kd_dedup_new(counting, "test");
    kd_completion c[5] = {
        {.key = "a", .key_len = 1, .receipt = "ra", .receipt_len = 2},
        {.key = "b", .key_len = 1, .receipt = "rb", .receipt_len = 2},
        {.key = "a", .key_len = 1, .receipt = "ra", .receipt_len = 2},
        {.key = "a", .key_len = 1, .receipt = "XX", .receipt_len = 2},
        {.key = "none", .key_len = 4, .receipt = "r", .receipt_len = 1},
    };

    assert_claim(f->dedup, "a", 1, KD_CLAIMED, 1);
    assert_claim(f->dedup, "b", 1, KD_CLAIMED, 1);
    assert_int_equal(kd_dedup_complete_batch(d, c, 5), KD_OK);
    assert_int_equal(c[0].err, KD_OK);
    assert_int_equal(c[1].err, KD_OK);
    assert_int_equal(c[2].err, KD_OK);
    assert_int_equal(c[3].err, KD_ERR_DEDUP_COLLISION);
    assert_int_equal(c[4].err, KD_ERR_DEDUP_COLLISION);
    assert_int_equal(counts.append_batch, 1);
    assert_int_equal(counts.batch_items, 2);
    assert_completed_with(f->dedup, "a", "ra");
    assert_completed_with(f->dedup, "b", "rb");

    /* Again: everything already completed, nothing written. */
    assert_int_equal(kd_dedup_complete_batch(d, c, 3), KD_OK);
    assert_int_equal(c[0].err + c[1].err + c[2].err, KD_OK);
    assert_int_equal(counts.append_batch, 1);
    kd_dedup_destroy(d);
    kd_store_destroy(counting);
}

/* A receipt given its claim (kd_claim.seq and .version) is appended
 * without reading the key, keeping the claim's owner and fingerprint; one
 * whose claim was overtaken since (released, or released and claimed
 * again) is decided as without, in a second write. */
static void test_complete_given_claim(void **state) {
    fx *f = *state;
    fx_counts counts;
    kd_store *counting = fx_counting_store(f->store, &counts);
    kd_dedup *d = kd_dedup_new(counting, "test");
    unsigned char fp[KD_FINGERPRINT_LEN];
    kd_claim c[3] = {{.key = "a", .key_len = 1, .fingerprint = fp},
                     {.key = "b", .key_len = 1},
                     {.key = "c", .key_len = 1}};
    kd_completion done[3];
    kd_decision dec;

    memset(fp, 7, sizeof(fp));
    kd_dedup_set_owner(d, 42);
    assert_int_equal(kd_dedup_claim_batch(d, c, 3, 1000), KD_OK);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(c[i].decision.state, KD_CLAIMED);
        assert_int_not_equal(c[i].version, 0);
        done[i] = (kd_completion){.key = c[i].key,
                                  .key_len = 1,
                                  .receipt = "r",
                                  .receipt_len = 1,
                                  .claim_seq = c[i].seq,
                                  .claim_version = c[i].version,
                                  .fingerprint = c[i].fingerprint};
    }
    assert_int_equal(kd_dedup_release_claim(d, K("b")), KD_OK);
    assert_int_equal(kd_dedup_release_claim(d, K("c")), KD_OK);
    assert_claim(d, "c", 2000, KD_CLAIMED, 2000);

    memset(&counts, 0, sizeof(counts));
    assert_int_equal(kd_dedup_complete_batch(d, done, 3), KD_OK);
    assert_int_equal(done[0].err, KD_OK);
    assert_int_equal(done[1].err, KD_ERR_DEDUP_COLLISION); /* released: gone */
    assert_int_equal(done[2].err, KD_OK);  /* in flight again: completed */
    assert_int_equal(counts.read_last, 2); /* b and c, not a */
    assert_int_equal(counts.append_batch, 2);
    assert_completed_with(d, "a", "r");
    assert_completed_with(d, "c", "r");
    assert_int_equal(fx_stream_count(f, "b"), 2); /* claim, tombstone */

    /* a's receipt kept its claim's fingerprint */
    assert_int_equal(kd_dedup_lookup(d, K("a"), &dec, &(bool){false}), KD_OK);
    assert_int_equal(dec.state, KD_COMPLETED);
    assert_true(dec.has_fingerprint);
    assert_memory_equal(dec.fingerprint, fp, sizeof(fp));
    kd_decision_clear(&dec);
    kd_dedup_destroy(d);
    kd_store_destroy(counting);
}

/* A claim gives its key's hash, the one its stream key is made of; a
 * completion given it with its claim is not hashed again and lands on the
 * same key. Without claim_version the hash given is not used: the key is
 * hashed. */
static void test_complete_given_hash(void **state) {
    fx *f = *state;
    kd_dedup *d = kd_dedup_new(f->store, "test");
    kd_claim c[2] = {{.key = "a", .key_len = 1}, {.key = "b", .key_len = 1}};
    unsigned char bogus[KD_KEY_HASH_LEN];
    char stream[128], hex[2 * KD_KEY_HASH_LEN + 1];
    kd_completion done[2];

    memset(bogus, 0x5a, sizeof(bogus));
    assert_int_equal(kd_dedup_claim_batch(d, c, 2, 1000), KD_OK);
    for (int i = 0; i < 2; i++) {
        assert_int_equal(c[i].decision.state, KD_CLAIMED);
        kd_dedup_stream_key_for(d, c[i].key, 1, stream, sizeof(stream));
        for (int j = 0; j < KD_KEY_HASH_LEN; j++)
            snprintf(hex + 2 * j, 3, "%02x", c[i].hash[j]);
        assert_string_equal(stream + strlen("test:"), hex);
    }
    done[0] = (kd_completion){.key = "a",
                              .key_len = 1,
                              .receipt = "ra",
                              .receipt_len = 2,
                              .claim_seq = c[0].seq,
                              .claim_version = c[0].version,
                              .claim_hash = c[0].hash};
    done[1] = (kd_completion){
        .key = "b", .key_len = 1, .receipt = "rb", .receipt_len = 2, .claim_hash = bogus};
    assert_int_equal(kd_dedup_complete_batch(d, done, 2), KD_OK);
    assert_int_equal(done[0].err, KD_OK);
    assert_int_equal(done[1].err, KD_OK);
    assert_completed_with(d, "a", "ra");
    assert_completed_with(d, "b", "rb");
    kd_dedup_destroy(d);
}

/*
 * Retention, stream keys, bad input.
 */

static void test_retention(void **state) {
    fx *f = *state;
    kd_decision dec;
    bool found;

    kd_dedup_set_retention(f->dedup, 60000, 1000);
    assert_claim(f->dedup, "slow", 10000, KD_CLAIMED, 10000);
    assert_claim(f->dedup, "slow", 10999, KD_IN_FLIGHT, 10000);
    assert_claim(f->dedup, "slow", 11000, KD_CLAIMED, 11000); /* claim expired */
    assert_int_equal(fx_stream_count(f, "slow"), 2);

    /* Completed at wall-clock now: kept within ttl, absent after it. */
    assert_int_equal(kd_dedup_complete_receipt(f->dedup, K("slow"), K("r")), KD_OK);
    assert_int_equal(kd_dedup_lookup(f->dedup, K("slow"), &dec, &found), KD_OK);
    assert_true(found);
    assert_int_equal(dec.state, KD_COMPLETED);
    assert_claim(f->dedup, "slow", dec.timestamp_ms + 59999, KD_COMPLETED,
                 dec.timestamp_ms);
    assert_claim(f->dedup, "slow", dec.timestamp_ms + 60000, KD_CLAIMED,
                 dec.timestamp_ms + 60000);
    kd_decision_clear(&dec);

    /* An in-flight claim from long ago is absent for lookup too. */
    assert_claim(f->dedup, "old", 5, KD_CLAIMED, 5);
    assert_int_equal(kd_dedup_lookup(f->dedup, K("old"), &dec, &found), KD_OK);
    assert_false(found);
}

static void test_stream_key_format(void **state) {
    fx *f = *state;
    const char *want =
        "test:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
    char buf[128], small[8];

    assert_int_equal(kd_dedup_stream_key_for(f->dedup, K("abc"), buf, sizeof(buf)),
                     strlen(want));
    assert_string_equal(buf, want);
    /* snprintf-like: truncated and terminated, full length returned. */
    assert_int_equal(kd_dedup_stream_key_for(f->dedup, K("abc"), small, sizeof(small)),
                     strlen(want));
    assert_string_equal(small, "test:ba");
    assert_int_equal(kd_dedup_stream_key_for(f->dedup, K("abc"), NULL, 0), strlen(want));
}

/* A stream holding bytes that are not an entry: every call says so. */
static void test_garbage_entry(void **state) {
    fx *f = *state;
    char stream[128];
    size_t len = kd_dedup_stream_key_for(f->dedup, K("k"), stream, sizeof(stream));
    kd_decision dec;
    bool found;

    assert_int_equal(kd_store_append(f->store, stream, len, 0, "\x00garbage", 8), KD_OK);
    assert_int_equal(kd_dedup_lookup(f->dedup, K("k"), &dec, &found),
                     KD_ERR_SERIALIZATION);
    assert_int_equal(kd_dedup_claim_or_get(f->dedup, K("k"), 1, &dec),
                     KD_ERR_SERIALIZATION);
    assert_int_equal(kd_dedup_complete_receipt(f->dedup, K("k"), K("r")),
                     KD_ERR_SERIALIZATION);
    assert_int_equal(kd_dedup_release_claim(f->dedup, K("k")), KD_ERR_SERIALIZATION);
    assert_int_equal(fx_stream_count(f, "k"), 1);
}

static void test_bad_arguments(void **state) {
    fx *f = *state;
    kd_decision dec;
    kd_claim c = {.key = NULL, .key_len = 3};
    bool found;

    assert_null(kd_dedup_new(NULL, "ns"));
    assert_null(kd_dedup_new(f->store, NULL));
    assert_int_equal(kd_dedup_claim_or_get(f->dedup, NULL, 3, 1, &dec), KD_ERR_CONFIG);
    assert_int_equal(kd_dedup_claim_or_get(f->dedup, K("k"), 1, NULL), KD_ERR_CONFIG);
    assert_int_equal(kd_dedup_lookup(f->dedup, NULL, 1, &dec, &found), KD_ERR_CONFIG);
    assert_int_equal(kd_dedup_complete_receipt(f->dedup, K("k"), NULL, 4), KD_ERR_CONFIG);
    assert_int_equal(kd_dedup_release_claim(f->dedup, NULL, 2), KD_ERR_CONFIG);
    assert_int_equal(kd_dedup_claim_batch(f->dedup, &c, 1, 1), KD_ERR_CONFIG);
    assert_int_equal(kd_dedup_claim_batch(f->dedup, NULL, 0, 1), KD_OK);
    /* The empty key is a key like any other. */
    assert_claim(f->dedup, "", 1, KD_CLAIMED, 1);
    assert_claim(f->dedup, "", 2, KD_IN_FLIGHT, 1);
    assert_string_equal(kd_err_name(KD_ERR_SEQUENCE_CONFLICT),
                        "KD_ERR_SEQUENCE_CONFLICT");
    assert_string_equal(kd_err_name((kd_err)99), "KD_ERR_UNKNOWN");
}

/*
 * Concurrency: 8 threads claim the same keys at once.
 */

#define RACE_THREADS 8
#define RACE_KEYS 300

typedef struct racer {
    kd_dedup *d;
    int id;
    pthread_barrier_t *go;
    int claimed[RACE_KEYS];
    int bad;
} racer;

static void *racer_run(void *arg) {
    racer *r = arg;
    char key[32];

    pthread_barrier_wait(r->go);
    for (int n = 0; n < RACE_KEYS; n++) {
        int k = (n * 7 + r->id * 37) % RACE_KEYS; /* each thread its own order */
        kd_decision dec;
        kd_err err;

        snprintf(key, sizeof(key), "key-%d", k);
        if (kd_dedup_claim_or_get(r->d, K(key), 1000 + (uint64_t)r->id, &dec) != KD_OK) {
            r->bad++;
            continue;
        }
        if (dec.state == KD_CLAIMED) {
            r->claimed[k]++;
            if (k % 2 == 0) { /* complete half, so losers also see completed */
                err = kd_dedup_complete_receipt(r->d, K(key), K("receipt"));
                r->bad += err != KD_OK;
            }
        }
        kd_decision_clear(&dec);
    }
    return NULL;
}

static void test_concurrent_claims_exactly_once(void **state) {
    fx *f = *state;
    pthread_t tid[RACE_THREADS];
    pthread_barrier_t go;
    racer *r = calloc(RACE_THREADS, sizeof(*r));

    assert_non_null(r);
    pthread_barrier_init(&go, NULL, RACE_THREADS);
    for (int t = 0; t < RACE_THREADS; t++) {
        r[t] = (racer){.d = f->dedup, .id = t, .go = &go};
        assert_int_equal(pthread_create(&tid[t], NULL, racer_run, &r[t]), 0);
    }
    for (int t = 0; t < RACE_THREADS; t++)
        pthread_join(tid[t], NULL);
    for (int k = 0; k < RACE_KEYS; k++) {
        int total = 0;
        char key[32];

        for (int t = 0; t < RACE_THREADS; t++)
            total += r[t].claimed[k];
        assert_int_equal(total, 1);
        snprintf(key, sizeof(key), "key-%d", k);
        assert_int_equal(fx_stream_count(f, key), k % 2 == 0 ? 2 : 1);
    }
    for (int t = 0; t < RACE_THREADS; t++)
        assert_int_equal(r[t].bad, 0);
    pthread_barrier_destroy(&go);
    free(r);
}

static bool protect_7(void *arg, uint64_t owner) {
    (*(int *)arg)++;
    return owner == 7;
}

/* forget: a completed key gets a tombstone and is claimed again; an absent
 * key is left alone; an in-flight claim only with force, never a protected
 * owner's; a wrong seq writes nothing. */
static void test_forget(void **state) {
    fx *f = *state;
    kd_forget_result res;
    kd_decision dec;
    uint64_t owner;
    bool found;
    int asked = 0;

    /* completed → forgotten, durable, next claim wins */
    assert_claim(f->dedup, "done", 10, KD_CLAIMED, 10);
    assert_int_equal(kd_dedup_complete_receipt(f->dedup, K("done"), K("r1")), KD_OK);
    assert_int_equal(kd_dedup_forget(f->dedup, K("done"), false, NULL, NULL, &res),
                     KD_OK);
    assert_int_equal(res, KD_FORGET_DONE);
    assert_int_equal(fx_stream_count(f, "done"), 3);
    assert_int_equal(kd_dedup_lookup(f->dedup, K("done"), &dec, &found), KD_OK);
    assert_false(found);
    assert_claim(f->dedup, "done", 20, KD_CLAIMED, 20);

    /* absent → nothing written */
    assert_int_equal(kd_dedup_forget(f->dedup, K("never"), true, NULL, NULL, &res),
                     KD_OK);
    assert_int_equal(res, KD_FORGET_ABSENT);
    assert_int_equal(fx_stream_count(f, "never"), 0);

    /* in flight, owner 7 */
    kd_dedup_set_owner(f->dedup, 7);
    assert_claim(f->dedup, "busy", 30, KD_CLAIMED, 30);
    assert_int_equal(kd_dedup_inspect(f->dedup, K("busy"), &dec, &owner, &found), KD_OK);
    assert_true(found);
    assert_int_equal(dec.state, KD_IN_FLIGHT);
    assert_int_equal(dec.timestamp_ms, 30);
    assert_int_equal(owner, 7);
    assert_int_equal(kd_dedup_forget(f->dedup, K("busy"), false, protect_7, &asked, &res),
                     KD_OK);
    assert_int_equal(res, KD_FORGET_IN_FLIGHT);
    assert_int_equal(asked, 0); /* not forced: the owner is not even asked */
    assert_int_equal(kd_dedup_forget(f->dedup, K("busy"), true, protect_7, &asked, &res),
                     KD_OK);
    assert_int_equal(res, KD_FORGET_PROTECTED);
    assert_int_equal(asked, 1);
    assert_int_equal(fx_stream_count(f, "busy"), 1);
    assert_claim(f->dedup, "busy", 99, KD_IN_FLIGHT, 30);

    /* in flight, another owner (a dead run): forced */
    kd_dedup_set_owner(f->dedup, 8);
    assert_claim(f->dedup, "orphan", 40, KD_CLAIMED, 40);
    assert_int_equal(
        kd_dedup_forget(f->dedup, K("orphan"), true, protect_7, &asked, &res), KD_OK);
    assert_int_equal(res, KD_FORGET_DONE);
    assert_claim(f->dedup, "orphan", 50, KD_CLAIMED, 50);
}

/* A forget that loses the append race writes nothing: the receipt that came
 * between stays. */
static void test_forget_race(void **state) {
    fx *f = *state;
    race r = {.key = "k", .receipt = "won"};
    kd_forget_result res;
    kd_store *w;
    kd_dedup *d;

    kd_dedup_set_owner(f->dedup, 5);
    assert_claim(f->dedup, "k", 10, KD_CLAIMED, 10);
    d = racing_dedup(f, &r, &w);
    assert_int_equal(kd_dedup_forget(d, K("k"), true, NULL, NULL, &res),
                     KD_ERR_SEQUENCE_CONFLICT);
    assert_completed_with(f->dedup, "k", "won");
    assert_int_equal(fx_stream_count(f, "k"), 2);
    kd_dedup_destroy(d);
    kd_store_destroy(w);
}

/* A claim's fingerprint is stored with it: duplicates in flight and
 * completed (the receipt keeps it) and lookups carry it; a follower in the
 * batch carries its leader's; a claim made without one has none. */
static void test_fingerprint_stored(void **state) {
    fx *f = *state;
    unsigned char fp1[KD_FINGERPRINT_LEN], fp2[KD_FINGERPRINT_LEN];
    kd_claim c[3] = {{.key = "fp-a", .key_len = 4, .fingerprint = fp1},
                     {.key = "fp-a", .key_len = 4, .fingerprint = fp2},
                     {.key = "fp-b", .key_len = 4}};
    kd_claim again = {.key = "fp-a", .key_len = 4, .fingerprint = fp2};
    kd_decision dec;
    bool found;

    memset(fp1, 0x11, sizeof(fp1));
    memset(fp2, 0x22, sizeof(fp2));
    assert_int_equal(kd_dedup_claim_batch(f->dedup, c, 3, 100), KD_OK);
    assert_int_equal(c[0].decision.state, KD_CLAIMED);
    assert_int_equal(c[1].decision.state, KD_IN_FLIGHT);
    assert_true(c[1].decision.has_fingerprint);
    assert_memory_equal(c[1].decision.fingerprint, fp1, KD_FINGERPRINT_LEN);
    assert_int_equal(c[2].decision.state, KD_CLAIMED);
    for (int i = 0; i < 3; i++)
        kd_decision_clear(&c[i].decision);

    /* Another claimer sees the stored one, not its own. */
    assert_int_equal(kd_dedup_claim_batch(f->dedup, &again, 1, 200), KD_OK);
    assert_int_equal(again.decision.state, KD_IN_FLIGHT);
    assert_true(again.decision.has_fingerprint);
    assert_memory_equal(again.decision.fingerprint, fp1, KD_FINGERPRINT_LEN);
    kd_decision_clear(&again.decision);

    /* Completed: kept with the receipt. */
    assert_int_equal(kd_dedup_complete_receipt(f->dedup, K("fp-a"), "r1", 2), KD_OK);
    assert_int_equal(kd_dedup_lookup(f->dedup, K("fp-a"), &dec, &found), KD_OK);
    assert_true(found);
    assert_int_equal(dec.state, KD_COMPLETED);
    assert_true(dec.has_fingerprint);
    assert_memory_equal(dec.fingerprint, fp1, KD_FINGERPRINT_LEN);
    kd_decision_clear(&dec);
    assert_int_equal(kd_dedup_claim_batch(f->dedup, &again, 1, 300), KD_OK);
    assert_int_equal(again.decision.state, KD_COMPLETED);
    assert_memory_equal(again.decision.fingerprint, fp1, KD_FINGERPRINT_LEN);
    kd_decision_clear(&again.decision);

    /* Without one: none stored. */
    assert_int_equal(kd_dedup_lookup(f->dedup, K("fp-b"), &dec, &found), KD_OK);
    assert_true(found);
    assert_false(dec.has_fingerprint);
    kd_decision_clear(&dec);
}

/* Claims the key alone at ts; returns the claim (decision cleared). */
static kd_claim claim_one(kd_dedup *d, const char *key, uint64_t ts) {
    kd_claim c = {.key = key, .key_len = strlen(key)};

    assert_int_equal(kd_dedup_claim_batch(d, &c, 1, ts), KD_OK);
    assert_int_equal(c.err, KD_OK);
    assert_int_equal(c.decision.state, KD_CLAIMED);
    kd_decision_clear(&c.decision);
    return c;
}

/* A claim says when the key was let go, and whether by a forget: a
 * release's tombstone is no forget; a forget's is; one written before
 * tombstones said why counts as a forget. */
static void test_claim_says_why_the_key_was_let_go(void **state) {
    fx *f = *state;
    kd_entry old = {
        .kind = KD_ENTRY_TOMBSTONE, .timestamp_ms = 77, .key = "old", .key_len = 3};
    char stream[256];
    unsigned char buf[64];
    size_t len;
    kd_forget_result res;
    kd_claim c;

    c = claim_one(f->dedup, "k", 10);
    assert_int_equal(c.tombstoned_at, 0);
    assert_int_equal(kd_dedup_release_claim(f->dedup, K("k")), KD_OK);
    c = claim_one(f->dedup, "k", 20);
    assert_true(c.tombstoned_at > 0);
    assert_int_equal(c.forgotten_at, 0);
    assert_int_equal(kd_dedup_complete_receipt(f->dedup, K("k"), K("r")), KD_OK);
    assert_int_equal(kd_dedup_forget(f->dedup, K("k"), false, NULL, NULL, &res), KD_OK);
    assert_int_equal(res, KD_FORGET_DONE);
    c = claim_one(f->dedup, "k", 30);
    assert_true(c.tombstoned_at > 0);
    assert_int_equal(c.forgotten_at, c.tombstoned_at);

    assert_int_equal(kd_entry_encode(&old, buf, sizeof(buf), &len), KD_OK);
    kd_dedup_stream_key_for(f->dedup, K("old"), stream, sizeof(stream));
    assert_int_equal(kd_store_append(f->store, stream, strlen(stream), 0, buf, len),
                     KD_OK);
    c = claim_one(f->dedup, "old", 40);
    assert_int_equal(c.tombstoned_at, 77);
    assert_int_equal(c.forgotten_at, 77);
}

/* A claim made over a forget and let go of as that forget: the next claim
 * still reports the forget, at its own time (a handover read again). */
static void test_release_forgotten(void **state) {
    fx *f = *state;
    kd_decision dec;
    kd_claim c;

    c = claim_one(f->dedup, "k", 10);
    assert_int_equal(kd_dedup_release_forgotten(f->dedup, K("k"), 0), KD_ERR_CONFIG);
    assert_int_equal(kd_dedup_release_forgotten(f->dedup, K("k"), 15), KD_OK);
    c = claim_one(f->dedup, "k", 20);
    assert_int_equal(c.decision.state, KD_CLAIMED);
    assert_int_equal(c.tombstoned_at, 15);
    assert_int_equal(c.forgotten_at, 15);
    assert_int_equal(kd_dedup_release_claim(f->dedup, K("k")), KD_OK);
    c = claim_one(f->dedup, "k", 30);
    assert_int_equal(c.forgotten_at, 0); /* a release says no forget */
    assert_int_equal(kd_dedup_complete_receipt(f->dedup, K("k"), K("r")), KD_OK);
    assert_int_equal(kd_dedup_release_forgotten(f->dedup, K("k"), 40), KD_OK);
    assert_int_equal(kd_dedup_claim_or_get(f->dedup, K("k"), 50, &dec), KD_OK);
    assert_int_equal(dec.state, KD_COMPLETED); /* never a receipt */
    kd_decision_clear(&dec);
}

/* True when the completion's receipt is arg (a string). */
static bool receipt_is(void *arg, const kd_decision *dec) {
    const char *want = arg;

    assert_int_equal(dec->state, KD_COMPLETED);
    return dec->receipt_len == strlen(want) && !memcmp(dec->receipt, want, strlen(want));
}

/* A forget replayed: a completion it covers gets a forget's tombstone dated
 * when the forget was made; one it does not cover, an absent key and a
 * claim in flight are left alone. */
static void test_forget_replay(void **state) {
    fx *f = *state;
    kd_forget_result res;
    kd_claim c;

    assert_claim(f->dedup, "a", 10, KD_CLAIMED, 10);
    assert_int_equal(kd_dedup_complete_receipt(f->dedup, K("a"), K("r-old")), KD_OK);
    assert_int_equal(
        kd_dedup_forget_replay(f->dedup, K("a"), 5000, receipt_is, "r-new", &res), KD_OK);
    assert_int_equal(res, KD_FORGET_PROTECTED); /* completed after the forget */
    assert_completed_with(f->dedup, "a", "r-old");
    assert_int_equal(
        kd_dedup_forget_replay(f->dedup, K("a"), 5000, receipt_is, "r-old", &res), KD_OK);
    assert_int_equal(res, KD_FORGET_DONE);
    c = claim_one(f->dedup, "a", 20);
    assert_int_equal(c.tombstoned_at, 5000);
    assert_int_equal(c.forgotten_at, 5000);

    assert_int_equal(kd_dedup_forget_replay(f->dedup, K("never"), 5000, NULL, NULL, &res),
                     KD_OK);
    assert_int_equal(res, KD_FORGET_ABSENT);
    assert_int_equal(fx_stream_count(f, "never"), 0);
    assert_int_equal(kd_dedup_forget_replay(f->dedup, K("a"), 5000, NULL, NULL, &res),
                     KD_OK);
    assert_int_equal(res, KD_FORGET_IN_FLIGHT); /* claimed again: never forced */
    assert_claim(f->dedup, "a", 30, KD_IN_FLIGHT, 20);
    assert_int_equal(kd_dedup_forget_replay(f->dedup, K("a"), 0, NULL, NULL, &res),
                     KD_ERR_CONFIG);
}

/* Each test twice, named after the backend it runs on. */
#define BOTH(fn)                                                                         \
    {"memory/" #fn, fn, setup, teardown, &backend_mem}, {                                \
        "rocksdb/" #fn, fn, setup, teardown, &backend_rocks                              \
    }

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
