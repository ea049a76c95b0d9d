/*
 * kdedup tests - test_dedup's fixture (see dedup_cases.h).
 */
#include "tests/dedup_cases.h"

fx_backend backend_mem = FX_MEM;

fx_backend backend_rocks = FX_ROCKS;

int setup(void **state) {
    *state = fx_new(*(fx_backend *)*state);
    return 0;
}

int teardown(void **state) {
    fx_free(*state);
    return 0;
}

void assert_claim(kd_dedup *d, const char *key, uint64_t ts, kd_state want,
                  uint64_t want_ts) {
    kd_decision dec;

    assert_int_equal(kd_dedup_claim_or_get(d, K(key), ts, &dec), KD_OK);
    assert_int_equal(dec.state, want);
    assert_int_equal(dec.timestamp_ms, want_ts);
    kd_decision_clear(&dec);
}

void assert_completed_with(kd_dedup *d, const char *key, const char *receipt) {
    kd_decision dec;

    assert_int_equal(kd_dedup_claim_or_get(d, K(key), 999999, &dec), KD_OK);
    assert_int_equal(dec.state, KD_COMPLETED);
    assert_int_equal(dec.receipt_len, strlen(receipt));
    assert_memory_equal(dec.receipt, receipt, strlen(receipt));
    kd_decision_clear(&dec);
}

void race_hook(void *arg) {
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

kd_dedup *racing_dedup(fx *f, race *r, kd_store **wrapper) {
    r->competitor = f->dedup;
    *wrapper = fx_racing_store(f->store, race_hook, r);
    return kd_dedup_new(*wrapper, "test");
}
