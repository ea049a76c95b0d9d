/*
 * kdedup tests - the pipeline against a mock cluster: an operator's forget,
 * which travels with the partition to its next owner, and a forget record
 * that is never read as a delivery (run by test_pipeline.c).
 */
#include "tests/pipeline_fixture.h"

/* What DELETE /v1/keys/in/<key> does on the replica whose store is in
 * e->dir/<name>: the key's forget record written beside its delivery (the
 * one its receipt names), then the key forgotten in that store. */
static void forget_on(env *e, const char *name, const char *key) {
    char json[4096], err[512], dir[300], path[512];
    kd_forget_result res;
    kd_forget_record f;
    kd_decision dec;
    kd_receipt rc;
    kd_config *cfg;
    kd_store *store;
    kd_dedup *d;
    int64_t offset = -1;
    bool found;

    snprintf(dir, sizeof(dir), "%s/%s", e->dir, name);
    snprintf(json, sizeof(json), ROUTE_CONFIG, e->mock.bootstrap, "{}", 5, dir, "5s");
    assert_non_null(
        cfg = kd_config_parse(json, strlen(json), "test.json", err, sizeof(err)));
    snprintf(path, sizeof(path), "%s/store", dir);
    assert_non_null(store = kd_rocks_open(path, true, err, sizeof(err)));
    d = kd_dedup_new(store, "kdedup:in");
    assert_int_equal(kd_dedup_lookup(d, key, strlen(key), &dec, &found), KD_OK);
    assert_true(found);
    assert_true(kd_receipt_parse(dec.receipt, dec.receipt_len, &rc));
    f = (kd_forget_record){.from = "in",
                           .to = "out",
                           .partition = rc.to_partition,
                           .src_partition = rc.from_partition,
                           .src_offset = rc.from_offset,
                           .key = key,
                           .key_len = strlen(key),
                           .at_ms = (uint64_t)time(NULL) * 1000};
    kd_decision_clear(&dec);
    if (!kd_forgets_write(cfg, e->mock.bootstrap, &f, &offset, err, sizeof(err)))
        fail_msg("%s", err);
    assert_true(offset > rc.to_offset);
    assert_int_equal(kd_dedup_forget(d, key, strlen(key), false, NULL, NULL, &res),
                     KD_OK);
    assert_int_equal(res, KD_FORGET_DONE);
    kd_dedup_destroy(d);
    kd_store_destroy(store);
    kd_config_destroy(cfg);
}

/* A forget travels with its partition. Replica a forwards key-0..4, then
 * forgets key-1 (DELETE /v1/keys on a). Replica b, with an empty store,
 * takes the partitions: its handover learns key-0..4 from a's records and
 * then reads the forget record, so the copy of key-1 the operator sends is
 * forwarded (a duplicate of key-2 is not). Replica c, with an empty store
 * too, reads key-1's first delivery, the forget record and b's delivery of
 * the copy, in that order: key-1 is completed again, and its next copy is
 * a duplicate. Without forget records b learned key-1 and dropped the copy. */
void test_forget_travels_with_the_partition(void **state) {
    env *e = *state;
    kd_pipeline_stats st;
    kf_record *recs;
    rd_kafka_t *rk;
    size_t n;
    kf_run r;

    send_keys(e, "in", 0, 5, 1);
    start_named(&r, e, "a");
    st = kf_run_wait(&r, 5, TIMEOUT_MS);
    assert_int_equal(st.forwarded, 5);
    kf_run_stop(&r);
    forget_on(e, "a", "key-1");

    rk = kf_producer(&e->mock);
    kf_send(rk, "in", -1, "key-1", "value-1-copy-1"); /* the copy asked for */
    kf_send(rk, "in", -1, "key-2", "value-2-copy-1"); /* a duplicate */
    kf_producer_close(rk);
    start_named(&r, e, "b");
    st = kf_run_wait(&r, 2, TIMEOUT_MS);
    kf_run_stop(&r);
    assert_int_equal(st.handover_keys, 5);
    assert_int_equal(st.handover_forgets, 1);
    assert_int_equal(st.forwarded, 1);
    assert_int_equal(st.duplicates_completed, 1);

    rk = kf_producer(&e->mock);
    kf_send(rk, "in", -1, "key-1", "value-1-copy-2");
    kf_producer_close(rk);
    start_named(&r, e, "c");
    st = kf_run_wait(&r, 1, TIMEOUT_MS);
    kf_run_stop(&r);
    assert_int_equal(st.handover_forgets, 1);
    assert_int_equal(st.forwarded, 0);
    assert_int_equal(st.duplicates_completed, 1);

    recs = kf_read(&e->mock, "out", PARTS, 7, 1000, TIMEOUT_MS, &n);
    assert_int_equal(n, 7); /* five, the forget record, the copy */
    assert_int_equal(kf_count_key(recs, n, "key-1"), 2);
    assert_int_equal(kf_count_key(recs, n, "key-2"), 1);
    assert_int_equal(kf_count_key(recs, n, ""), 1); /* the forget record: no key header */
    free(recs);
}

/* Puts on out/0 a record of key from in/0/0 carrying the key in
 * kdedup-key, with kdedup-forget when `forget`, signed by signer as a
 * forget record's when `as_forget`, else as a delivery's. */
static void put_signed(rd_kafka_t *rk, kd_signer *signer, const char *key, bool forget,
                       bool as_forget) {
    char at[24], sig[KD_SIGNATURE_LEN + 1];
    const char *source = "in/0/0", *run = "0000000000000001";
    kd_signed w = {.from = "in",
                   .to = "out",
                   .source = source,
                   .source_len = strlen(source),
                   .run = run,
                   .run_len = strlen(run),
                   .at = at,
                   .key = key,
                   .key_len = strlen(key),
                   .forget = as_forget};
    rd_kafka_headers_t *h = rd_kafka_headers_new(6);

    snprintf(at, sizeof(at), "%llu", (unsigned long long)time(NULL) * 1000);
    w.at_len = strlen(at);
    assert_true(kd_sign(signer, &w, sig));
    if (forget)
        rd_kafka_header_add(h, KD_FORGET_HEADER, -1, "1", 1);
    rd_kafka_header_add(h, KD_SOURCE_HEADER, -1, source, -1);
    rd_kafka_header_add(h, KD_RUN_HEADER, -1, run, -1);
    rd_kafka_header_add(h, KD_FORWARDED_AT_HEADER, -1, at, -1);
    rd_kafka_header_add(h, KD_KEY_HEADER, -1, key, -1);
    rd_kafka_header_add(h, KD_SIGNATURE_HEADER, -1, sig, -1);
    assert_int_equal(rd_kafka_producev(rk, RD_KAFKA_V_TOPIC("out"),
                                       RD_KAFKA_V_PARTITION(0), RD_KAFKA_V_VALUE("v", 1),
                                       RD_KAFKA_V_HEADERS(h), RD_KAFKA_V_END),
                     RD_KAFKA_RESP_ERR_NO_ERROR);
}

/* Keys a handover was passed, "<key>:forget" or "<key>:delivery". */
typedef struct seen {
    char text[8][32];
    size_t n;
} seen;

static bool remember(void *arg, const kd_history_rec *recs, size_t n) {
    seen *s = arg;

    for (size_t i = 0; i < n && s->n < 8; i++)
        snprintf(s->text[s->n++], sizeof(s->text[0]), "%.*s:%s", (int)recs[i].key_len,
                 (const char *)recs[i].key, recs[i].forget ? "forget" : "delivery");
    return true;
}

/* A forget record is no delivery, and the two are signed apart. On a route
 * whose key is the record key (so its deliveries carry kdedup-key, as
 * forget records do): a forget record written by kd_forgets_write() reaches
 * the handover as a forget, never as anyone's delivery (orphan and
 * uncertain lookups do not find it, with a signing key or without); a
 * record with kdedup-forget signed as a delivery, and one without it
 * signed as a forget, are not trusted. */
void test_forget_record_is_no_delivery(void **state) {
    env *e = *state;
    const char *run = "kdedup-run v1\n0 0 out\n1 0 out\n2 0 out\n3 0 out\n";
    char json[2048], err[512], path[512], stream[32];
    rd_kafka_t *rk = kf_producer(&e->mock);
    kd_forget_record f = {.from = "in",
                          .to = "out",
                          .key = "key-0",
                          .key_len = 5,
                          .at_ms = (uint64_t)time(NULL) * 1000};
    kd_history_cursor cur = {0};
    kd_recovery_stats rs;
    kd_recover_found found;
    int64_t offset = -1, from = 0;
    kd_signer *signer;
    kd_recovery *rc;
    kd_config *cfg;
    kd_store *store;
    seen s = {0};

    snprintf(json, sizeof(json),
             "{\"kafka\": {\"brokers\": \"%s\", \"group_id\": \"g\"}, \"routes\": "
             "[{\"from\": \"in\", \"to\": \"out\", \"key\": {\"from\": \"record_key\"}, "
             "\"on_missing_key\": \"forward\"}], \"dedup\": {\"signing_key\": "
             "\"key-one-0123456789\"}, \"store\": {\"path\": \"%s/store\"}}",
             e->mock.bootstrap, e->dir);
    assert_non_null(
        cfg = kd_config_parse(json, strlen(json), "test.json", err, sizeof(err)));
    if (!kd_forgets_write(cfg, e->mock.bootstrap, &f, &offset, err, sizeof(err)))
        fail_msg("%s", err);
    assert_int_equal(offset, 0);
    assert_non_null(signer = kd_signer_new("key-one-0123456789"));
    put_signed(rk, signer, "key-1", true, false); /* a forget signed as a delivery */
    put_signed(rk, signer, "key-2", false, true); /* a delivery signed as a forget */
    put_signed(rk, signer, "key-3", false, false);
    kd_signer_destroy(signer);
    kf_producer_close(rk);

    snprintf(path, sizeof(path), "%s/store", e->dir);
    assert_non_null(store = kd_rocks_open(path, true, err, sizeof(err)));
    assert_non_null(rc =
                        kd_recovery_new(cfg, store, e->mock.bootstrap, err, sizeof(err)));
    assert_int_equal(kd_recovery_history(rc, 0, 0, 0, 10, remember, &s, &cur),
                     KD_HISTORY_DONE);
    assert_int_equal(s.n, 2);
    assert_string_equal(s.text[0], "key-0:forget");
    assert_string_equal(s.text[1], "key-3:delivery");
    kd_recovery_stats_get(rc, &rs);
    assert_int_equal(rs.foreign, 2);
    assert_int_equal(kf_find_since(rc, 0, 0, &from, 0, "key-0", 5, &found),
                     KD_RECOVER_ABSENT);
    from = 0;
    assert_int_equal(kf_find_since(rc, 0, 0, &from, 0, "key-3", 5, &found),
                     KD_RECOVER_FOUND);
    assert_int_equal(found.offset, 3);
    kd_recovery_destroy(rc);
    kd_config_destroy(cfg);

    /* without a signing key, every record is trusted: the forget record is
     * still no delivery, for a dead run's claim or an uncertain one */
    snprintf(json, sizeof(json),
             "{\"kafka\": {\"brokers\": \"%s\", \"group_id\": \"g\"}, \"routes\": "
             "[{\"from\": \"in\", \"to\": \"out\", \"key\": {\"from\": \"record_key\"}, "
             "\"on_missing_key\": \"forward\"}], \"store\": {\"path\": \"%s/store\"}}",
             e->mock.bootstrap, e->dir);
    assert_non_null(
        cfg = kd_config_parse(json, strlen(json), "test.json", err, sizeof(err)));
    assert_int_equal(
        kd_store_append(store, stream,
                        kd_recovery_run_stream(0xdead, stream, sizeof(stream)), 0, run,
                        strlen(run)),
        KD_OK);
    assert_non_null(rc =
                        kd_recovery_new(cfg, store, e->mock.bootstrap, err, sizeof(err)));
    from = 0;
    assert_int_equal(kf_find_since(rc, 0, 0, &from, 0, "key-0", 5, &found),
                     KD_RECOVER_ABSENT);
    assert_int_equal(kd_recovery_find(rc, 0xdead, 0, 0, "key-0", 5, 0, &found),
                     KD_RECOVER_ABSENT);
    assert_int_equal(kd_recovery_find(rc, 0xdead, 0, 0, "key-2", 5, 0, &found),
                     KD_RECOVER_FOUND); /* unsigned: any delivery counts */
    kd_recovery_destroy(rc);
    kd_store_destroy(store);
    kd_config_destroy(cfg);
}
