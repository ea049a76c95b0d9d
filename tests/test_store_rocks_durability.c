/*
 * kdedup tests - the RocksDB store's durability: synced appends across
 * kill -9 and observed as fdatasync() calls, lazy writes made durable, a
 * batch's appends and reads item by item, retention applied by
 * compaction, small memory bounds (run by test_store_rocks.c).
 */
#include "tests/store_rocks_fixture.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

void test_retention_compaction(void **state) {
    fx *f = *state;
    uint64_t now = wall_ms(), records = 0;
    kd_decision dec;
    kd_claim c;
    char key[32];

    kd_dedup_set_retention(f->dedup, 3600 * 1000, 60 * 1000);
    for (int i = 0; i < 50; i++) { /* claimed two hours ago: past ttl */
        snprintf(key, sizeof(key), "old-%d", i);
        assert_int_equal(kd_dedup_claim_or_get(f->dedup, K(key), now - 7200000, &dec),
                         KD_OK);
    }
    kd_dedup_set_owner(f->dedup, 0xabc);
    for (int i = 0; i < 10; i++) { /* claimed two minutes ago: expired, kept */
        snprintf(key, sizeof(key), "stale-%d", i);
        assert_int_equal(kd_dedup_claim_or_get(f->dedup, K(key), now - 120000, &dec),
                         KD_OK);
    }
    kd_dedup_set_owner(f->dedup, 0);
    for (int i = 0; i < 20; i++) { /* claimed and completed now: live */
        snprintf(key, sizeof(key), "new-%d", i);
        assert_int_equal(kd_dedup_claim_or_get(f->dedup, K(key), now, &dec), KD_OK);
        assert_int_equal(kd_dedup_complete_receipt(f->dedup, K(key), K("r")), KD_OK);
    }
    assert_int_equal(kd_rocks_count_records(f->store, &records), KD_OK);
    assert_int_equal(records, 50 + 10 + 20); /* one head record per stream */
    assert_int_equal(kd_rocks_compact(f->store), KD_OK);
    assert_int_equal(kd_rocks_count_records(f->store, &records), KD_OK);
    assert_int_equal(records, 10 + 20);
    assert_int_equal(fx_stream_count(f, "old-7"), 0);
    assert_state(f->dedup, "new-7", true, KD_COMPLETED);

    /* An expired claim is taken over, and the claim says whose it was. */
    c = (kd_claim){.key = "stale-3", .key_len = 7};
    assert_int_equal(kd_dedup_claim_batch(f->dedup, &c, 1, now), KD_OK);
    assert_int_equal(c.err, KD_OK);
    assert_int_equal(c.decision.state, KD_CLAIMED);
    assert_true(c.expired);
    assert_int_equal(c.expired_owner, 0xabc);
    kd_decision_clear(&c.decision);
    c = (kd_claim){.key = "brand-new", .key_len = 9};
    assert_int_equal(kd_dedup_claim_batch(f->dedup, &c, 1, now), KD_OK);
    assert_int_equal(c.decision.state, KD_CLAIMED);
    assert_false(c.expired);
    kd_decision_clear(&c.decision);

    /* An expired key is claimable again, from seq 0. */
    assert_int_equal(kd_dedup_claim_or_get(f->dedup, K("old-7"), now, &dec), KD_OK);
    assert_int_equal(dec.state, KD_CLAIMED);
    assert_int_equal(fx_stream_count(f, "old-7"), 1);

    /* Retention off (the default for a fresh store) keeps everything. */
    fx_reopen(f);
    assert_int_equal(kd_rocks_compact(f->store), KD_OK);
    assert_int_equal(kd_rocks_count_records(f->store, &records), KD_OK);
    assert_int_equal(records, 10 + 20 + 2);
    kd_store *mem = kd_store_mem_new();
    assert_int_equal(kd_rocks_compact(mem), KD_ERR_CONFIG);
    assert_int_equal(kd_rocks_count_records(mem, &records), KD_ERR_CONFIG);
    kd_store_destroy(mem);
}

/* Claims 100 keys and completes one in a store at dir, synced, then
 * returns so that in_child() kills the process. */
static int claim_then_die(void *dir) {
    static char keys[100][8];
    kd_claim claims[100];
    char err[512];
    kd_store *s = kd_rocks_open(dir, true, err, sizeof(err));
    kd_dedup *d = s ? kd_dedup_new(s, "test") : NULL;

    if (!d)
        return 1;
    for (int i = 0; i < 100; i++) {
        snprintf(keys[i], sizeof(keys[i]), "k%d", i);
        claims[i] = (kd_claim){.key = keys[i], .key_len = strlen(keys[i])};
    }
    if (kd_dedup_claim_batch(d, claims, 100, 5) != KD_OK || claims[99].err != KD_OK)
        return 1;
    return kd_dedup_complete_receipt(d, K("k0"), K("r0")) == KD_OK ? 0 : 1;
}

/* A synced append survives kill -9 of the process that made it. */
void test_kill9_keeps_synced_appends(void **state) {
    fx *f = *state;

    fx_close(f);
    assert_int_equal(in_child(claim_then_die, f->dir), 0);
    fx_reopen(f);
    assert_state(f->dedup, "k0", true, KD_COMPLETED);
    assert_state(f->dedup, "k99", true, KD_IN_FLIGHT);
    assert_state(f->dedup, "k50", true, KD_IN_FLIGHT);
}

/* The disk syncs made while claiming n keys one by one and then a batch of
 * n more, in a fresh store opened with sync. */
static unsigned long syncs_of_claims(bool sync, int n) {
    char dir[256], err[512], keys[2][64][16];
    kd_claim claims[64];
    kd_decision dec;
    kd_store *s;
    kd_dedup *d;
    unsigned long before;

    assert_true(n <= 64);
    fx_tmpdir(dir, sizeof(dir));
    s = kd_rocks_open(dir, sync, err, sizeof(err));
    if (!s)
        fail_msg("kd_rocks_open: %s", err);
    assert_non_null(d = kd_dedup_new(s, "test"));
    for (int i = 0; i < n; i++) {
        snprintf(keys[0][i], sizeof(keys[0][i]), "one-%d", i);
        snprintf(keys[1][i], sizeof(keys[1][i]), "batch-%d", i);
        claims[i] = (kd_claim){.key = keys[1][i], .key_len = strlen(keys[1][i])};
    }
    before = atomic_load(&disk_syncs);
    for (int i = 0; i < n; i++) {
        assert_int_equal(kd_dedup_claim_or_get(d, K(keys[0][i]), 1, &dec), KD_OK);
        assert_int_equal(dec.state, KD_CLAIMED);
    }
    assert_int_equal(kd_dedup_claim_batch(d, claims, (size_t)n, 1), KD_OK);
    for (int i = 0; i < n; i++)
        assert_int_equal(claims[i].err, KD_OK);
    before = atomic_load(&disk_syncs) - before;
    kd_dedup_destroy(d);
    kd_store_destroy(s);
    fx_rmtree(dir);
    return before;
}

/* With sync, every append reaches the disk before it returns: one claim,
 * one sync; a batch, at least one. Without, the writes make none. */
void test_synced_appends_reach_the_disk(void **state) {
    unsigned long synced, unsynced;

    (void)state;
    synced = syncs_of_claims(true, 50);
    unsynced = syncs_of_claims(false, 50);
    print_message("disk syncs for 50 claims and a batch of 50: %lu synced, %lu not\n",
                  synced, unsynced);
    assert_true(synced >= 51);
    assert_true(unsynced < 5);
}

/* Claims n keys "<prefix>-i" in one synced batch and fills done[] with
 * their completions (receipt "r", given their claims). */
static void claim_for_receipts(kd_dedup *d, const char *prefix, int n, char keys[][16],
                               kd_completion *done) {
    kd_claim c[16];

    assert_true(n <= 16);
    for (int i = 0; i < n; i++) {
        snprintf(keys[i], 16, "%s-%d", prefix, i);
        c[i] = (kd_claim){.key = keys[i], .key_len = strlen(keys[i])};
    }
    assert_int_equal(kd_dedup_claim_batch(d, c, (size_t)n, 1), KD_OK);
    for (int i = 0; i < n; i++) {
        assert_int_equal(c[i].decision.state, KD_CLAIMED);
        done[i] = (kd_completion){.key = keys[i],
                                  .key_len = strlen(keys[i]),
                                  .receipt = "r",
                                  .receipt_len = 1,
                                  .claim_seq = c[i].seq,
                                  .claim_version = c[i].version};
    }
}

/* Lazy receipts are read at once but reach the disk only with the next
 * durable write, or with kd_store_sync(); a sync with nothing lazy since
 * the last durable write syncs nothing. */
void test_lazy_writes_made_durable(void **state) {
    char dir[256], err[512], keys[3][16][16];
    kd_completion done[3][16];
    unsigned long before;
    kd_store *s;
    kd_dedup *d;

    (void)state;
    fx_tmpdir(dir, sizeof(dir));
    if (!(s = kd_rocks_open(dir, true, err, sizeof(err))))
        fail_msg("kd_rocks_open: %s", err);
    assert_non_null(d = kd_dedup_new(s, "test"));
    claim_for_receipts(d, "a", 16, keys[0], done[0]);

    before = atomic_load(&disk_syncs);
    assert_int_equal(kd_dedup_complete_batch_lazy(d, done[0], 16), KD_OK);
    for (int i = 0; i < 16; i++)
        assert_int_equal(done[0][i].err, KD_OK);
    assert_int_equal(atomic_load(&disk_syncs), before); /* not synced */
    assert_state(d, keys[0][3], true, KD_COMPLETED);    /* but read */
    assert_int_equal(kd_store_sync(s), KD_OK);
    assert_true(atomic_load(&disk_syncs) > before);
    before = atomic_load(&disk_syncs);
    assert_int_equal(kd_store_sync(s), KD_OK); /* nothing lazy since */
    assert_int_equal(atomic_load(&disk_syncs), before);

    /* a durable write after lazy ones covers them: the sync has nothing to do */
    claim_for_receipts(d, "b", 16, keys[1], done[1]);
    assert_int_equal(kd_dedup_complete_batch_lazy(d, done[1], 16), KD_OK);
    claim_for_receipts(d, "c", 4, keys[2], done[2]);
    before = atomic_load(&disk_syncs);
    assert_int_equal(kd_store_sync(s), KD_OK);
    assert_int_equal(atomic_load(&disk_syncs), before);
    assert_state(d, keys[1][15], true, KD_COMPLETED);
    kd_dedup_destroy(d);
    kd_store_destroy(s);
    fx_rmtree(dir);
}

/* Batch appends: per-item conflicts, items of one stream in array order. */
void test_batch_append_per_item(void **state) {
    fx *f = *state;
    kd_append items[4] = {
        {.stream = "s1",
         .stream_len = 2,
         .expected_seq = 0,
         .payload = "a",
         .payload_len = 1},
        {.stream = "s1",
         .stream_len = 2,
         .expected_seq = 1,
         .payload = "b",
         .payload_len = 1},
        {.stream = "s2",
         .stream_len = 2,
         .expected_seq = 5,
         .payload = "c",
         .payload_len = 1},
        {.stream = "s1",
         .stream_len = 2,
         .expected_seq = 1,
         .payload = "d",
         .payload_len = 1},
    };
    uint64_t seq;
    void *p;
    size_t plen;
    bool found;

    assert_int_equal(kd_store_append_batch(f->store, items, 4), KD_OK);
    assert_int_equal(items[0].result, KD_OK);
    assert_int_equal(items[1].result, KD_OK);
    assert_int_equal(items[2].result, KD_ERR_SEQUENCE_CONFLICT);
    assert_int_equal(items[3].result, KD_ERR_SEQUENCE_CONFLICT);
    assert_int_equal(kd_store_read_last(f->store, "s1", 2, &seq, &p, &plen, &found),
                     KD_OK);
    assert_true(found);
    assert_int_equal(seq, 1);
    assert_memory_equal(p, "b", 1);
    free(p);
    assert_int_equal(kd_store_read_last(f->store, "s2", 2, &seq, &p, &plen, &found),
                     KD_OK);
    assert_false(found);
}

/* A batched read hands RocksDB its keys in RocksDB's order, not the
 * batch's: each item still gets its own stream's head. Streams s0..s59,
 * stream i holding i % 3 entries (the last one "i"), read in reverse with
 * streams never written between them. */
void test_batch_read_per_item(void **state) {
    fx *f = *state;
    enum { STREAMS = 60, READS = 2 * STREAMS };
    char names[READS][16], payload[16];
    kd_read reads[READS];

    for (int i = 0; i < STREAMS; i++) {
        snprintf(names[i], sizeof(names[i]), "s%d", i);
        snprintf(payload, sizeof(payload), "%d", i);
        for (int e = 0; e < i % 3; e++)
            assert_int_equal(kd_store_append(f->store, names[i], strlen(names[i]),
                                             (uint64_t)e, payload, strlen(payload)),
                             KD_OK);
    }
    for (int j = 0; j < READS; j++) {
        int i = STREAMS - 1 - j / 2;

        if (j % 2)
            snprintf(names[STREAMS + j / 2], sizeof(names[0]), "never-%d", i);
        reads[j] = (kd_read){.stream = j % 2 ? names[STREAMS + j / 2] : names[i]};
        reads[j].stream_len = strlen(reads[j].stream);
    }
    assert_int_equal(kd_store_read_last_batch(f->store, reads, READS), KD_OK);
    for (int j = 0; j < READS; j++) {
        int i = STREAMS - 1 - j / 2;

        assert_int_equal(reads[j].err, KD_OK);
        if (j % 2 || i % 3 == 0) {
            assert_false(reads[j].found);
            continue;
        }
        snprintf(payload, sizeof(payload), "%d", i);
        assert_true(reads[j].found);
        assert_int_equal(reads[j].seq, i % 3 - 1);
        assert_int_equal(reads[j].payload_len, strlen(payload));
        assert_memory_equal(reads[j].payload, payload, strlen(payload));
        free(reads[j].payload);
    }
}

/* The smallest sizes the config allows open and work (the memtable's bucket
 * array fits in it), and RocksDB's memory stays near them while 12,000 keys
 * are claimed and completed through several flushes. */
void test_small_memory_bounds(void **state) {
    kd_rocks_options o = {.sync = false,
                          .block_cache_bytes = 1u << 20,
                          .write_buffer_bytes = 1u << 20,
                          .max_write_buffers = 2};
    char dir[256], err[512], key[32];
    kd_rocks_memory mem;
    kd_decision dec;
    kd_store *s;
    kd_dedup *d;

    (void)state;
    fx_tmpdir(dir, sizeof(dir));
    assert_non_null(s = kd_rocks_open_with(dir, &o, err, sizeof(err)));
    assert_non_null(d = kd_dedup_new(s, "t"));
    for (int i = 0; i < 12000; i++) {
        snprintf(key, sizeof(key), "key-%d", i);
        assert_int_equal(kd_dedup_claim_or_get(d, key, strlen(key), 1, &dec), KD_OK);
        assert_int_equal(dec.state, KD_CLAIMED);
        assert_int_equal(kd_dedup_complete_receipt(d, key, strlen(key), "r", 1), KD_OK);
        if (i % 3000 == 0) {
            assert_int_equal(kd_rocks_memory_get(s, &mem), KD_OK);
            assert_true(mem.memtables <= 3u << 20); /* two of 1 MiB, and slack */
            assert_true(mem.block_cache <= 2u << 20);
        }
    }
    assert_int_equal(kd_dedup_lookup(d, "key-7", 5, &dec, &(bool){false}), KD_OK);
    assert_int_equal(dec.state, KD_COMPLETED);
    kd_decision_clear(&dec);
    kd_dedup_destroy(d);
    kd_store_destroy(s);
    fx_rmtree(dir);
}
