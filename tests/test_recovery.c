/*
 * kdedup tests - what recovery (sidecar/recovery*.c) believes of a downstream
 * topic, against librdkafka's mock cluster in a `kdedup mock` process: a
 * table of records signed with the current key, the previous one, a third
 * one, and genuine records with one header or the signature changed. Each
 * of the three readers (a handover, a dead run's orphan scan, an uncertain
 * delivery's read) learns from the trusted ones only: with a key and a
 * previous key (a rotation), with the key alone, and with no key (every
 * record is trusted: README, Security).
 */
#include "dedup/store.h"
#include "sidecar/recovery.h"
#include "sidecar/headers.h"
#include "sidecar/signing.h"
#include "tests/case_runner.h"
#include "tests/dedup_fixture.h"
#include "tests/kafka_fixture.h"

#include <stdarg.h>
#include <setjmp.h>
#include <stddef.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define KEY_ONE "key-one-0123456789"
#define KEY_TWO "key-two-0123456789"
#define KEY_THREE "key-three-0123456789"
#define OWNER 0xbeefull

typedef struct env {
    kf_mock mock;
} env;

static int setup(void **state) {
    static const char *const topics[] = {"in:1", "out:1", NULL};
    env *e = calloc(1, sizeof(*e));

    kf_mock_start(&e->mock, 1, topics);
    *state = e;
    return 0;
}

static int teardown(void **state) {
    env *e = *state;

    kf_mock_stop(&e->mock);
    free(e);
    return 0;
}

/* What a row changes of a genuine record, after signing it. */
typedef enum change {
    NONE,
    SOURCE,     /* kdedup-source: another offset */
    RUN,        /* kdedup-run: another run */
    AT,         /* kdedup-forwarded-at: a ms later */
    KEY,        /* the key header: another key (the one looked up) */
    TO,         /* signed for another downstream topic (copied from there) */
    FROM,       /* signed for a route from another source topic */
    SIG_CUT,    /* the signature one digit short */
    SIG_LONGER, /* one digit more */
    SIG_EMPTY,  /* an empty signature header */
    SIG_NONE,   /* no signature header */
    SIG_V2,     /* "v2:" and the same digits */
} change;

/* Which configs trust a row. */
enum { T_ROTATION = 1, T_CURRENT = 2, T_NOKEY = 4 };

static const struct {
    const char *key; /* the key header's value: what is looked up */
    const char *secret;
    change change;
    int trusted_by;
} rows[] = {
    {"current", KEY_TWO, NONE, T_ROTATION | T_CURRENT | T_NOKEY},
    {"previous", KEY_ONE, NONE, T_ROTATION | T_NOKEY},
    {"third-key", KEY_THREE, NONE, T_NOKEY},
    {"source-changed", KEY_TWO, SOURCE, T_NOKEY},
    {"run-changed", KEY_TWO, RUN, T_NOKEY},
    {"at-changed", KEY_TWO, AT, T_NOKEY},
    {"key-changed", KEY_TWO, KEY, T_NOKEY},
    {"another-to", KEY_TWO, TO, T_NOKEY},
    {"another-from", KEY_TWO, FROM, T_NOKEY},
    {"sig-cut", KEY_TWO, SIG_CUT, T_NOKEY},
    {"sig-longer", KEY_TWO, SIG_LONGER, T_NOKEY},
    {"sig-empty", KEY_TWO, SIG_EMPTY, T_NOKEY},
    {"sig-none", KEY_TWO, SIG_NONE, T_NOKEY},
    {"sig-v2", KEY_TWO, SIG_V2, T_NOKEY},
};
#define NROWS (sizeof(rows) / sizeof(rows[0]))

/* Row i's record on out/0 (from in/0/i), as kdedup forwards it, signed
 * with the row's secret, then changed as the row says. */
static void produce_row(rd_kafka_t *rk, size_t i, const char *at) {
    char source[32], signed_key[32], sig[KD_SIGNATURE_LEN + 2], later[24];
    const char *run = "00000000deadbeef";
    kd_signer *s = kd_signer_new(rows[i].secret);
    rd_kafka_headers_t *h = rd_kafka_headers_new(8);
    change c = rows[i].change;
    kd_signed w;

    assert_non_null(s);
    snprintf(source, sizeof(source), "in/0/%zu", i);
    snprintf(signed_key, sizeof(signed_key), "%s%s", rows[i].key,
             c == KEY ? "-real" : "");
    w = (kd_signed){.from = c == FROM ? "elsewhere" : "in",
                    .to = c == TO ? "out.copy" : "out",
                    .source = source,
                    .source_len = strlen(source),
                    .run = run,
                    .run_len = strlen(run),
                    .at = at,
                    .at_len = strlen(at),
                    .key = signed_key,
                    .key_len = strlen(signed_key)};
    assert_true(kd_sign(s, &w, sig));
    kd_signer_destroy(s);
    snprintf(later, sizeof(later), "%s", at); /* a ms later: at ends in 0 */
    later[strlen(later) - 1] = '1';
    if (c == SOURCE)
        snprintf(source, sizeof(source), "in/0/%zu", i + 1000);
    if (c == SIG_CUT)
        sig[KD_SIGNATURE_LEN - 1] = '\0';
    if (c == SIG_LONGER)
        strcat(sig, "0");
    if (c == SIG_V2)
        sig[1] = '2';
    rd_kafka_header_add(h, "Idempotency-Key", -1, rows[i].key, -1);
    rd_kafka_header_add(h, KD_SOURCE_HEADER, -1, source, -1);
    rd_kafka_header_add(h, KD_RUN_HEADER, -1, c == RUN ? "00000000deadbeee" : run, -1);
    rd_kafka_header_add(h, KD_FORWARDED_AT_HEADER, -1, c == AT ? later : at, -1);
    if (c != SIG_NONE)
        rd_kafka_header_add(h, KD_SIGNATURE_HEADER, -1, c == SIG_EMPTY ? "" : sig, -1);
    assert_int_equal(
        rd_kafka_producev(rk, RD_KAFKA_V_TOPIC("out"), RD_KAFKA_V_PARTITION(0),
                          RD_KAFKA_V_VALUE("v", 1), RD_KAFKA_V_HEADERS(h),
                          RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END),
        RD_KAFKA_RESP_ERR_NO_ERROR);
}

/* The keys a handover passed. */
typedef struct learned {
    bool row[NROWS];
    size_t n;
} learned;

static bool learn(void *arg, const kd_history_rec *recs, size_t n) {
    learned *l = arg;

    for (size_t i = 0; i < n; i++)
        for (size_t j = 0; j < NROWS; j++)
            if (recs[i].key_len == strlen(rows[j].key) &&
                !memcmp(recs[i].key, rows[j].key, recs[i].key_len)) {
                l->row[j] = true;
                l->n++;
            }
    return true;
}

/* A recovery over out, with the members `dedup` of the "dedup" object
 * ("": none), over an in-memory store holding run OWNER's run record (out/0
 * from offset 0). The config and the store are the caller's to destroy,
 * after the recovery. */
static kd_recovery *recovery_open(env *e, const char *dedup, kd_config **cfg,
                                  kd_store **store) {
    char json[1024], err[512], stream[32];
    const char *run = "kdedup-run v1\n0 0 out\n";
    kd_recovery *rc;

    snprintf(json, sizeof(json),
             "{\"kafka\": {\"brokers\": \"%s\", \"group_id\": \"g\"},"
             " \"routes\": [{\"from\": \"in\", \"to\": \"out\", \"on_missing_key\": "
             "\"forward\"}], \"dedup\": {%s}, \"store\": {\"path\": \"/nonexistent\"}}",
             e->mock.bootstrap, dedup);
    if (!(*cfg = kd_config_parse(json, strlen(json), "test.json", err, sizeof(err))))
        fail_msg("%s", err);
    *store = kd_store_mem_new();
    assert_int_equal(
        kd_store_append(*store, stream,
                        kd_recovery_run_stream(OWNER, stream, sizeof(stream)), 0, run,
                        strlen(run)),
        KD_OK);
    if (!(rc = kd_recovery_new(*cfg, *store, e->mock.bootstrap, err, sizeof(err))))
        fail_msg("%s", err);
    return rc;
}

/* A recovery over out with dedup.signing_key `key` and previous_signing_key
 * `previous` (NULL: none); checks that each of its readers trusts exactly
 * the rows trusted_by `which`. */
static void check_readers(env *e, const char *key, const char *previous, int which) {
    char dedup[256] = "";
    kd_history_cursor cur = {0};
    learned l = {0};
    kd_recovery_stats st;
    size_t want = 0;
    kd_recovery *rc;
    kd_config *cfg;
    kd_store *store;

    if (key)
        snprintf(dedup, sizeof(dedup), "\"signing_key\": \"%s\"%s%s%s", key,
                 previous ? ", \"previous_signing_key\": \"" : "",
                 previous ? previous : "", previous ? "\"" : "");
    rc = recovery_open(e, dedup, &cfg, &store);
    kd_recovery_begin_turn(rc, 0); /* every read to the end at once */

    assert_int_equal(kd_recovery_history(rc, 0, 0, 0, 100, learn, &l, &cur),
                     KD_HISTORY_DONE);
    for (size_t i = 0; i < NROWS; i++) {
        bool trust = rows[i].trusted_by & which;
        kd_recover_found f;
        int64_t from = 0;

        want += trust;
        if (l.row[i] != trust)
            fail_msg("handover: %s %s", rows[i].key, trust ? "not learned" : "learned");
        if ((kd_recovery_find(rc, OWNER, 0, 0, rows[i].key, strlen(rows[i].key), 0, &f) ==
             KD_RECOVER_FOUND) != trust)
            fail_msg("orphan scan: %s %s", rows[i].key, trust ? "not found" : "found");
        if ((kf_find_since(rc, 0, 0, &from, 0, rows[i].key, strlen(rows[i].key), &f) ==
             KD_RECOVER_FOUND) != trust)
            fail_msg("uncertain delivery: %s %s", rows[i].key,
                     trust ? "not found" : "found");
        if (trust)
            assert_int_equal(f.offset, (int64_t)i);
    }
    assert_int_equal(l.n, want);
    kd_recovery_stats_get(rc, &st);
    /* each untrusted record counted by each reader: handover, scan, reads */
    assert_int_equal(st.foreign, (NROWS - want) * (2 + NROWS));
    kd_recovery_destroy(rc);
    kd_store_destroy(store);
    kd_config_destroy(cfg);
}

/* The table read with a rotation (key two, previous key one), then with
 * key two alone, then with no key. */
static void test_only_signed_records_are_learned(void **state) {
    env *e = *state;
    rd_kafka_t *rk = kf_producer(&e->mock);
    char at[24];

    snprintf(at, sizeof(at), "%lld", (long long)time(NULL) * 1000);
    for (size_t i = 0; i < NROWS; i++)
        produce_row(rk, i, at);
    kf_producer_close(rk);
    check_readers(e, KEY_TWO, KEY_ONE, T_ROTATION);
    check_readers(e, KEY_TWO, NULL, T_CURRENT);
    check_readers(e, NULL, NULL, T_NOKEY);
}

/* dedup.scan_max_records 5 over the 14 rows (no key: all trusted): the
 * handover reads the newest 5 alone; the orphan scan, 14 records from the
 * run's start, and an uncertain read from offset 0 cannot be made (the
 * claim is forwarded again, at least once); a read of the last 5 finds. */
static void test_scan_max_records_bounds_each_reader(void **state) {
    env *e = *state;
    rd_kafka_t *rk = kf_producer(&e->mock);
    kd_history_cursor cur = {0};
    learned l = {0};
    kd_recover_found f;
    kd_recovery *rc;
    kd_config *cfg;
    kd_store *store;
    char at[24];

    snprintf(at, sizeof(at), "%lld", (long long)time(NULL) * 1000);
    for (size_t i = 0; i < NROWS; i++)
        produce_row(rk, i, at);
    kf_producer_close(rk);
    rc = recovery_open(e, "\"scan_max_records\": 5", &cfg, &store);
    kd_recovery_begin_turn(rc, 0);
    assert_int_equal(kd_recovery_history(rc, 0, 0, 0, 100, learn, &l, &cur),
                     KD_HISTORY_BOUNDED);
    for (size_t i = 0; i < NROWS; i++) {
        const char *key = rows[i].key;
        int64_t from = 0, last5 = (int64_t)NROWS - 5;

        if (l.row[i] != (i >= NROWS - 5))
            fail_msg("handover: %s %s", key, l.row[i] ? "learned" : "not learned");
        assert_int_equal(kd_recovery_find(rc, OWNER, 0, 0, key, strlen(key), 0, &f),
                         KD_RECOVER_UNKNOWN);
        assert_int_equal(kf_find_since(rc, 0, 0, &from, 0, key, strlen(key), &f),
                         KD_RECOVER_UNKNOWN);
        assert_int_equal(kf_find_since(rc, 0, 0, &last5, 0, key, strlen(key), &f),
                         i >= NROWS - 5 ? KD_RECOVER_FOUND : KD_RECOVER_ABSENT);
    }
    assert_int_equal(l.n, 5);
    kd_recovery_destroy(rc);
    kd_store_destroy(store);
    kd_config_destroy(cfg);
}

#define STEPPED_RECORDS 20000
#define STILL_MAX 50 /* steps in a row that may read nothing (a fetch awaited) */

/* A delivery of an earlier run on out/0: key s-i (written to key), from
 * in/0/i, without a signature. */
static void produce_delivery(rd_kafka_t *rk, int i, char *key, size_t size) {
    rd_kafka_headers_t *h = rd_kafka_headers_new(2);
    char source[32];
    rd_kafka_resp_err_t err;

    snprintf(key, size, "s-%d", i);
    snprintf(source, sizeof(source), "in/0/%d", i);
    rd_kafka_header_add(h, "Idempotency-Key", -1, key, -1);
    rd_kafka_header_add(h, KD_SOURCE_HEADER, -1, source, -1);
    while ((err = rd_kafka_producev(rk, RD_KAFKA_V_TOPIC("out"), RD_KAFKA_V_PARTITION(0),
                                    RD_KAFKA_V_VALUE("v", 1), RD_KAFKA_V_HEADERS(h),
                                    RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                                    RD_KAFKA_V_END)) == RD_KAFKA_RESP_ERR__QUEUE_FULL)
        rd_kafka_poll(rk, 10);
    assert_int_equal(err, RD_KAFKA_RESP_ERR_NO_ERROR);
}

/* An uncertain delivery's read in steps of 1 ms a turn (the pipeline's
 * scan_step), for the last of 20,000 records: each step that says "later"
 * moves the read's start on (never back, and never stays put for long), so
 * the read ends, found, in steps. A cursor that stays put reads the same
 * first records again every turn, forever. */
static void test_stepped_uncertain_read_moves_on(void **state) {
    env *e = *state;
    rd_kafka_t *rk = kf_producer(&e->mock);
    kd_recover_result res = KD_RECOVER_LATER;
    int steps = 0, still = 0;
    int64_t from = 0, before;
    kd_recover_found f;
    kd_recovery *rc;
    kd_config *cfg;
    kd_store *store;
    char key[32];

    for (int i = 0; i < STEPPED_RECORDS; i++)
        produce_delivery(rk, i, key, sizeof(key));
    kf_producer_close(rk);
    rc = recovery_open(e, "", &cfg, &store);
    while (res == KD_RECOVER_LATER) {
        before = from;
        kd_recovery_begin_turn(rc, 1);
        res = kf_find_since(rc, 0, 0, &from, 0, key, strlen(key), &f);
        steps++;
        assert_true(from >= before);
        still = from == before ? still + 1 : 0;
        if (still > STILL_MAX)
            fail_msg("step %d: the read stays at offset %lld", steps, (long long)from);
    }
    assert_int_equal(res, KD_RECOVER_FOUND);
    assert_int_equal(f.offset, STEPPED_RECORDS - 1);
    assert_true(steps > 1); /* it did read in steps */
    kd_recovery_destroy(rc);
    kd_store_destroy(store);
    kd_config_destroy(cfg);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_only_signed_records_are_learned, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_scan_max_records_bounds_each_reader, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_stepped_uncertain_read_moves_on, setup,
                                        teardown),
    };

    return cr_run_group("recovery (mock cluster)", tests,
                        sizeof(tests) / sizeof(tests[0]));
}
