/*
 * kdedup tests - the dedup contract: concurrent claimers, forgets,
 * fingerprints, and why a key was let go (run by test_dedup.c).
 */
#include "tests/dedup_cases.h"

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

void test_concurrent_claims_exactly_once(void **state) {
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
void test_forget(void **state) {
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
void test_forget_race(void **state) {
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
void test_fingerprint_stored(void **state) {
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
void test_claim_says_why_the_key_was_let_go(void **state) {
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
void test_release_forgotten(void **state) {
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
void test_forget_replay(void **state) {
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
