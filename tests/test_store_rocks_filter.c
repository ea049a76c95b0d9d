/*
 * kdedup tests - the RocksDB store's key filter (store_rocks_filter.c):
 * what it answers for records stored before the open, for each write path
 * after it, once it is full, and an append that trusted its "no" (run by
 * test_store_rocks.c).
 */
#define _GNU_SOURCE /* RTLD_NEXT */
#include "dedup/entry.h"
#include "store_rocks/store_rocks.h"
#include "tests/store_rocks_fixture.h"

#include <rocksdb/c.h>

#include <dlfcn.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define READY_WAIT_MS 30000
#define RENEW 1000

/* What kd_rocks_memory_get() tells once done(m) holds, waited for at most
 * READY_WAIT_MS (what failing names `what`). */
static kd_rocks_memory wait_memory(kd_store *s, bool (*done)(const kd_rocks_memory *),
                                   const char *what) {
    kd_rocks_memory m;

    for (int waited = 0;; waited += 5) {
        assert_int_equal(kd_rocks_memory_get(s, &m), KD_OK);
        if (done(&m))
            return m;
        if (waited > READY_WAIT_MS)
            fail_msg("the key filter never %s (%llu rebuilds, ready %d, off %d)", what,
                     (unsigned long long)m.key_filter_rebuilds, m.key_filter_ready,
                     m.key_filter_off);
        nanosleep(&(struct timespec){0, 5 * 1000 * 1000}, NULL);
    }
}

static bool is_ready(const kd_rocks_memory *m) {
    return m->key_filter_ready;
}

static bool is_off(const kd_rocks_memory *m) {
    return m->key_filter_off;
}

static bool rebuilt_ready(const kd_rocks_memory *m) {
    return m->key_filter_rebuilds >= 1 && m->key_filter_ready;
}

void wait_key_filter_ready(kd_store *s) {
    wait_memory(s, is_ready, "became ready");
}

/* Opens dir with a key filter of `bytes`, whose builds take a new iterator
 * every RENEW records (the default is 2^20). */
static kd_store *open_with_filter(const char *dir, size_t bytes) {
    kd_rocks_options o = KD_ROCKS_OPTIONS_DEFAULT;
    char err[512];
    kd_store *s;

    o.key_filter_bytes = bytes;
    o.key_filter_renew_records = RENEW;
    if (!(s = kd_rocks_open_with(dir, &o, err, sizeof(err))))
        fail_msg("%s", err);
    return s;
}

/* Asserts that stream `name` holds seq entries (0: none), read alone and
 * among n - 1 absent streams in one batch (which takes the MultiGet). */
static void assert_seq(kd_store *s, const char *name, uint64_t entries) {
    enum { N = 4 };
    char absent[N][32];
    kd_read reads[N];
    void *payload = NULL;
    size_t len = 0;
    uint64_t seq = 0;
    bool found = true;

    assert_int_equal(
        kd_store_read_last(s, name, strlen(name), &seq, &payload, &len, &found), KD_OK);
    if (found != (entries > 0) || (found && seq != entries - 1))
        fail_msg("%s read alone: found %d, seq %llu; %llu entries written", name, found,
                 (unsigned long long)seq, (unsigned long long)entries);
    free(payload);
    reads[0] = (kd_read){.stream = name, .stream_len = strlen(name)};
    for (int i = 1; i < N; i++) {
        snprintf(absent[i], sizeof(absent[i]), "absent-%d-%s", i, name);
        reads[i] = (kd_read){.stream = absent[i], .stream_len = strlen(absent[i])};
    }
    assert_int_equal(kd_store_read_last_batch(s, reads, N), KD_OK);
    if (reads[0].err != KD_OK || reads[0].found != (entries > 0) ||
        (reads[0].found && reads[0].seq != entries - 1))
        fail_msg("%s read in a batch: found %d, seq %llu; %llu entries written", name,
                 reads[0].found, (unsigned long long)reads[0].seq,
                 (unsigned long long)entries);
    for (int i = 0; i < N; i++) {
        if (i)
            assert_false(reads[i].found);
        free(reads[i].payload);
    }
}

/* Writes stream `name`'s entry seq through path: 0 kd_store_append, 1 a
 * synced batch, 2 a lazy batch. */
static void write_via(kd_store *s, int path, const char *name, uint64_t seq) {
    kd_append a = {.stream = name,
                   .stream_len = strlen(name),
                   .expected_seq = seq,
                   .payload = "p",
                   .payload_len = 1};

    if (path == 0)
        assert_int_equal(kd_store_append(s, name, strlen(name), seq, "p", 1), KD_OK);
    else if (path == 1)
        assert_int_equal(kd_store_append_batch(s, &a, 1), KD_OK);
    else
        assert_int_equal(kd_store_append_batch_lazy(s, &a, 1), KD_OK);
    if (path)
        assert_int_equal(a.result, KD_OK);
}

/* Writes or reads the bulk streams b-<from>..b-<from + n - 1> (n <= 1000)
 * in one batch; a read asserts each is found, once written. */
static void bulk(kd_store *s, int from, int n, bool write) {
    static char names[1000][16];
    kd_append a[1000];
    kd_read rd[1000];

    for (int i = 0; i < n; i++) {
        snprintf(names[i], sizeof(names[i]), "b-%d", from + i);
        a[i] = (kd_append){.stream = names[i],
                           .stream_len = strlen(names[i]),
                           .payload = "p",
                           .payload_len = 1};
        rd[i] = (kd_read){.stream = names[i], .stream_len = strlen(names[i])};
    }
    if (write) {
        assert_int_equal(kd_store_append_batch_lazy(s, a, (size_t)n), KD_OK);
        return;
    }
    assert_int_equal(kd_store_read_last_batch(s, rd, (size_t)n), KD_OK);
    for (int i = 0; i < n; i++) {
        if (!rd[i].found || rd[i].seq != 0)
            fail_msg("%s: found %d seq %llu", names[i], rd[i].found,
                     (unsigned long long)rd[i].seq);
        free(rd[i].payload);
    }
}

/* Records stored before the open are found once the filter is built from
 * them, whichever path wrote them, and new streams are not; with more
 * records than one iterator of the build reads (it goes on with another). */
void test_key_filter_built_at_open(void **state) {
    fx *f = *state;
    enum { STREAMS = 3000, BULK = 70000 };
    char name[32];
    kd_store *s;

    fx_close(f);
    s = open_with_filter(f->dir, 1u << 20);
    for (int i = 0; i < STREAMS; i++) {
        snprintf(name, sizeof(name), "s-%d", i);
        for (int e = 0; e <= i % 2; e++)
            write_via(s, i % 3, name, (uint64_t)e);
    }
    for (int i = 0; i < BULK; i += 1000)
        bulk(s, i, 1000, true);
    assert_int_equal(kd_store_sync(s), KD_OK);
    kd_store_destroy(s);

    s = open_with_filter(f->dir, 1u << 20); /* 838,860 streams: built, not too full */
    wait_key_filter_ready(s);
    for (int i = 0; i < STREAMS; i++) {
        snprintf(name, sizeof(name), "s-%d", i);
        assert_seq(s, name, (uint64_t)(i % 2) + 1);
        snprintf(name, sizeof(name), "n-%d", i);
        assert_seq(s, name, 0);
    }
    for (int i = 0; i < BULK; i += 1000)
        bulk(s, i, 1000, false);
    kd_store_destroy(s);
}

/* Streams written after the filter was built, by each write path, are
 * found by both reads. */
void test_key_filter_learns_writes(void **state) {
    fx *f = *state;
    char name[32];

    wait_key_filter_ready(f->store);
    for (int path = 0; path < 3; path++)
        for (int i = 0; i < 20; i++) {
            snprintf(name, sizeof(name), "w-%d-%d", path, i);
            assert_seq(f->store, name, 0);
            write_via(f->store, path, name, 0);
            assert_seq(f->store, name, 1);
        }
}

/* A store with more streams than half what its filter holds gets none:
 * the filter, built again once full, stops answering (its gauge says so)
 * and every read asks RocksDB: still right. */
void test_key_filter_full_stops_answering(void **state) {
    fx *f = *state;
    char name[32];
    kd_rocks_memory m;
    kd_store *s;

    fx_close(f);
    s = open_with_filter(f->dir, 64); /* 8 words: 51 streams, 25 stored at most */
    wait_key_filter_ready(s);
    assert_int_equal(kd_rocks_memory_get(s, &m), KD_OK);
    assert_int_equal(m.key_filter, 64);
    for (int i = 0; i < 200; i++) {
        snprintf(name, sizeof(name), "f-%d", i);
        write_via(s, 1, name, 0);
    }
    m = wait_memory(s, is_off, "was given up"); /* not only building again */
    assert_false(m.key_filter_ready);
    for (int i = 0; i < 200; i++) {
        snprintf(name, sizeof(name), "f-%d", i);
        assert_seq(s, name, 1);
    }
    kd_store_destroy(s);
    s = open_with_filter(f->dir, 0); /* none: never ready, every read asks */
    assert_int_equal(kd_rocks_memory_get(s, &m), KD_OK);
    assert_int_equal(m.key_filter, 0);
    assert_false(m.key_filter_ready);
    assert_seq(s, "f-7", 1);
    kd_store_destroy(s);
}

/* A batch read told "no record" by the filter carries the version from
 * before: a write to the stream in between makes the append that trusted
 * it re-read, and refuse. */
void test_key_filter_no_then_written(void **state) {
    fx *f = *state;
    kd_read reads[2] = {{.stream = "race", .stream_len = 4},
                        {.stream = "other", .stream_len = 5}};
    kd_append a = {.stream = "race",
                   .stream_len = 4,
                   .expected_seq = 0,
                   .payload = "p",
                   .payload_len = 1};

    wait_key_filter_ready(f->store);
    assert_int_equal(kd_store_read_last_batch(f->store, reads, 2), KD_OK);
    assert_false(reads[0].found);
    assert_int_equal(kd_store_append(f->store, "race", 4, 0, "q", 1), KD_OK);
    a.version = reads[0].version;
    kd_store_append_batch(f->store, &a, 1);
    assert_int_equal(a.result, KD_ERR_SEQUENCE_CONFLICT);
    assert_seq(f->store, "race", 1);
}

/* A filter full of keys the store no longer holds (dropped by retention)
 * is built again from what it holds, and answers again: the keys still
 * stored are found, the dropped ones and new ones are not. */
void test_key_filter_rebuilt_once_full(void **state) {
    fx *f = *state;
    uint64_t now = wall_ms();
    kd_decision dec;
    char key[32];
    kd_store *s;
    kd_dedup *d;

    fx_close(f);
    s = open_with_filter(f->dir, 1024); /* 128 words: 819 streams, 409 stored */
    assert_non_null(d = kd_dedup_new(s, "test"));
    kd_dedup_set_retention(d, 3600 * 1000, 60 * 1000);
    wait_key_filter_ready(s);
    for (int i = 0; i < 600; i++) { /* claimed two hours ago: past ttl */
        snprintf(key, sizeof(key), "old-%d", i);
        assert_int_equal(kd_dedup_claim_or_get(d, K(key), now - 7200000, &dec), KD_OK);
    }
    assert_int_equal(kd_rocks_compact(s),
                     KD_OK); /* gone from the store, not the filter */
    for (int i = 0; i < 300; i++) {
        snprintf(key, sizeof(key), "live-%d", i);
        assert_int_equal(kd_dedup_claim_or_get(d, K(key), now, &dec), KD_OK);
    }
    wait_memory(s, rebuilt_ready, "was built again"); /* full at ~820 added */
    for (int i = 0; i < 300; i++) {
        snprintf(key, sizeof(key), "live-%d", i);
        assert_state(d, key, true, KD_IN_FLIGHT);
        snprintf(key, sizeof(key), "old-%d", i);
        assert_state(d, key, false, KD_CLAIMED);
    }
    kd_dedup_destroy(d);
    kd_store_destroy(s);
}

/* test_key_filter_renewal_after_a_drop's moment: armed, the third iterator
 * made (the open's layout check, the build's first, its first renewal)
 * first sets a 1 s retention on renew_store and compacts, which drops the
 * record the build read last. Every other call goes to RocksDB's own. */
static _Atomic int renew_armed, renew_calls;
static kd_store *_Atomic renew_store;

rocksdb_iterator_t *rocksdb_create_iterator(rocksdb_t *db,
                                            const rocksdb_readoptions_t *o) {
    rocksdb_iterator_t *(*real)(rocksdb_t *, const rocksdb_readoptions_t *);

    *(void **)&real = dlsym(RTLD_NEXT, "rocksdb_create_iterator");
    if (atomic_load(&renew_armed) && atomic_fetch_add(&renew_calls, 1) + 1 == 3) {
        for (int i = 0; !atomic_load(&renew_store) && i < READY_WAIT_MS; i++)
            nanosleep(&(struct timespec){0, 1000 * 1000}, NULL);
        kd_store_set_retention(atomic_load(&renew_store), 1000, 1000);
        rocksdb_compact_range(db, NULL, 0, NULL, 0);
    }
    return real(db, o);
}

typedef struct rkey_name {
    char key[64], name[32];
    size_t len;
} rkey_name;

static int rkey_cmp(const void *x, const void *y) {
    const rkey_name *p = x, *q = y;
    int c = memcmp(p->key, q->key, p->len < q->len ? p->len : q->len);

    return c ? c : (p->len > q->len) - (p->len < q->len);
}

/* A build's iterator renewed after the record it read last was dropped
 * (retention's compaction, between its two iterators): the next one starts
 * at that record's hash, lands on the record after it, and reads it. (It
 * had stepped past where it landed: that record was never added, and the
 * filter said "no" for it; an outside review found it.) */
void test_key_filter_renewal_after_a_drop(void **state) {
    enum { N = 3 * RENEW };
    static rkey_name k[N];
    fx *f = *state;
    kd_entry old = {
        .kind = KD_ENTRY_TOMBSTONE, .timestamp_ms = 1, .key = "x", .key_len = 1};
    unsigned char tomb[64];
    size_t tomb_len;
    kd_append a[RENEW];
    kd_store *s;

    for (int i = 0; i < N; i++) {
        snprintf(k[i].name, sizeof(k[i].name), "r-%d", i);
        k[i].len =
            kd_rocks_record_key(k[i].name, strlen(k[i].name), k[i].key, sizeof(k[i].key));
    }
    qsort(k, N, sizeof(*k), rkey_cmp); /* the build reads them in this order */
    assert_int_equal(kd_entry_encode(&old, tomb, sizeof(tomb), &tomb_len), KD_OK);
    fx_close(f);
    s = open_with_filter(f->dir, 1u << 20);
    for (int i = 0; i < N; i += RENEW) {
        for (int j = 0; j < RENEW; j++) {
            bool last = i + j == RENEW - 1; /* where the first renewal happens */

            a[j] = (kd_append){.stream = k[i + j].name,
                               .stream_len = strlen(k[i + j].name),
                               .payload = last ? (const void *)tomb : "v",
                               .payload_len = last ? tomb_len : 1};
        }
        assert_int_equal(kd_store_append_batch(s, a, RENEW), KD_OK);
    }
    kd_store_destroy(s);

    atomic_store(&renew_calls, 0);
    atomic_store(&renew_armed, 1);
    s = open_with_filter(f->dir, 1u << 20);
    atomic_store(&renew_store, s);
    wait_key_filter_ready(s);
    atomic_store(&renew_armed, 0);
    assert_true(atomic_load(&renew_calls) >= 3); /* the drop happened */
    assert_seq(s, k[RENEW - 1].name, 0);         /* dropped */
    assert_seq(s, k[RENEW].name, 1);             /* the record after it */
    for (int i = RENEW + 1; i < N; i++)
        assert_seq(s, k[i].name, 1);
    atomic_store(&renew_store, NULL);
    kd_store_destroy(s);
}
