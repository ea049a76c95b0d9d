/*
 * kdedup tests - the dedup contract: claim and completion batches, claims
 * with their own time or owner, retention, stream keys, garbage and bad
 * arguments (run by test_dedup.c).
 */
#include "tests/dedup_cases.h"

/*
 * Batches.
 */

/* One store write per batch; a repeated key: first claimed, the rest in
 * flight; existing keys keep their decisions. */
/* A claim made with its own time (claimed_at, as a handover claims a learned
 * key at its record's forwarding time) is stored and answered with that
 * time; whether a held claim expired is still judged at the batch's time. */
void test_claim_batch_claimed_at(void **state) {
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
void test_own_claims_do_not_expire(void **state) {
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

void test_claim_batch(void **state) {
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
void test_complete_batch(void **state) {
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
void test_complete_given_claim(void **state) {
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
void test_complete_given_hash(void **state) {
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

void test_retention(void **state) {
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

void test_stream_key_format(void **state) {
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
void test_garbage_entry(void **state) {
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

void test_bad_arguments(void **state) {
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
