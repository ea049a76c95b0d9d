/*
 * kdedup tests - power loss and ownership changes, against librdkafka's
 * mock cluster in one `kdedup mock` process shared by every case (each
 * case has topics and a group of its own).
 *
 * Power loss: the pipeline runs over tests/powerloss_store.h, which drops
 * every write no sync covered when it "crashes" at a chosen write; a new
 * pipeline then runs over what survived. Ownership changes: a revoke, a
 * lost assignment, a stop and a reload's restart, each followed by a read
 * of the committed offsets from the broker.
 *
 * The oracle, everywhere: the committed offset of each source partition
 * is at or below its lowest unfinished message (one whose key is not
 * completed in what would survive a power loss: a crash, or now), and at
 * its end once everything settled; downstream, every key exactly once
 * (copies of one produce call with the same kdedup-run and
 * kdedup-forwarded-at are the mock's idempotent-producer artefacts,
 * counted apart).
 */
#include "dedup/dedup.h"
#include "sidecar/clock.h"
#include "sidecar/log.h"
#include "tests/dedup_fixture.h"
#include "tests/kafka_fixture.h"
#include "tests/powerloss_store.h"

#include <stdarg.h>
#include <setjmp.h>
#include <stddef.h>
#include <cmocka.h>

#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TIMEOUT_MS 60000
#define STEP_MS 5

typedef struct env {
    kf_mock mock;
    char dir[256];
} env;

/* One case's topics ("<name>-in" led by broker 1, "<name>-out" by broker
 * 2, the group's coordinator broker 3), the store its runs use, the run
 * under way, and how many messages it sent. */
typedef struct tcase {
    env *e;
    char in[48], out[48], group[48], ns[64];
    int nparts;
    size_t nsent;
    kd_store *store;
    kf_run run;
    /* An earlier owner's store (another host's), or NULL, and where on each
     * source partition its ownership ended: what it finished. */
    kd_store *prior;
    int64_t handoff[2];
} tcase;

static int setup(void **state) {
    static const char *const no_topics[] = {NULL};
    env *e = calloc(1, sizeof(*e));

    kd_log_set_level(getenv("KD_TEST_LOG") ? KD_LOG_DEBUG : KD_LOG_ERROR);
    kf_mock_start(&e->mock, 3, no_topics);
    fx_tmpdir(e->dir, sizeof(e->dir));
    *state = e;
    return 0;
}

static int teardown(void **state) {
    env *e = *state;

    kf_mock_stop(&e->mock);
    fx_rmtree(e->dir);
    free(e);
    return 0;
}

static void case_open(tcase *t, env *e, const char *name, int nparts) {
    memset(t, 0, sizeof(*t));
    t->e = e;
    t->nparts = nparts;
    snprintf(t->in, sizeof(t->in), "%s-in", name);
    snprintf(t->out, sizeof(t->out), "%s-out", name);
    snprintf(t->group, sizeof(t->group), "%s-group", name);
    snprintf(t->ns, sizeof(t->ns), "kdedup:%s", t->in); /* the route's scope */
    kf_mock_cmd(&e->mock, "topic %s %d", t->in, nparts);
    kf_mock_cmd(&e->mock, "topic %s %d", t->out, nparts);
    for (int i = 0; i < nparts; i++) {
        kf_mock_cmd(&e->mock, "leader %s %d 1", t->in, i);
        kf_mock_cmd(&e->mock, "leader %s %d 2", t->out, i);
    }
    kf_mock_cmd(&e->mock, "coordinator %s 3", t->group);
    assert_non_null(t->store = kd_powerloss_new(NULL));
}

static void case_close(tcase *t) {
    kd_store_destroy(t->store);
    kd_store_destroy(t->prior);
    t->store = t->prior = NULL;
}

/*
 * Runs.
 */

/* A short session (the mock cluster's rebalances wait for it), offsets
 * committed within 200 ms, retries forever. Arguments: brokers, group,
 * producer properties, from, to, the dedup section, the store's directory,
 * shutdown_grace. */
#define CONFIG                                                                           \
    "{\"kafka\": {\"brokers\": \"%s\", \"group_id\": \"%s\", \"producer\": %s,"          \
    " \"consumer\": {\"session.timeout.ms\": \"3000\", \"heartbeat.interval.ms\": "      \
    "\"300\", \"auto.commit.interval.ms\": \"200\"}},"                                   \
    " \"routes\": [{\"from\": \"%s\", \"to\": \"%s\", \"on_missing_key\": \"forward\","  \
    " \"max_retries\": -1, \"retry_backoff\": \"100ms\"}],"                              \
    " \"dedup\": %s, \"store\": {\"path\": \"%s/store\"},"                               \
    " \"pipeline\": {\"shutdown_grace\": \"%s\"}}"

#define NO_HANDOVER "{\"handover\": false}"
#define RETRY_ONCE "{\"retries\": \"1\", \"retry.backoff.ms\": \"10\"}"

static kd_config *config(tcase *t, const char *producer, const char *dedup,
                         const char *grace) {
    char json[4096], err[1024];
    kd_config *cfg;

    snprintf(json, sizeof(json), CONFIG, t->e->mock.bootstrap, t->group, producer, t->in,
             t->out, dedup, t->e->dir, grace);
    if (!(cfg = kd_config_parse(json, strlen(json), "test.json", err, sizeof(err))))
        fail_msg("%s", err);
    return cfg;
}

static void *run_thread(void *arg) {
    kf_run *r = arg;

    r->rc = kd_pipeline_run(r->p);
    return NULL;
}

/* Starts a pipeline over cfg (owned) and t->store (borrowed). */
static void run_cfg(tcase *t, kd_config *cfg) {
    char err[1024];

    memset(&t->run, 0, sizeof(t->run));
    t->run.cfg = cfg;
    t->run.store = t->store;
    if (!(t->run.p =
              kd_pipeline_new(cfg, t->store, t->e->mock.bootstrap, err, sizeof(err))))
        fail_msg("kd_pipeline_new: %s", err);
    assert_int_equal(pthread_create(&t->run.tid, NULL, run_thread, &t->run), 0);
}

static void run_start(tcase *t, const char *producer, const char *dedup,
                      const char *grace) {
    run_cfg(t, config(t, producer, dedup, grace));
}

/* Waits for the run to return (after a stop, or to restart). */
static kd_pipeline_stats run_join(tcase *t) {
    kd_pipeline_stats st;

    pthread_join(t->run.tid, NULL);
    kd_pipeline_stats_get(t->run.p, &st);
    assert_int_equal(t->run.rc, 0);
    return st;
}

/* Frees the run (its pipeline and config), not the store. */
static void run_free(tcase *t) {
    kd_pipeline_destroy(t->run.p);
    kd_config_destroy(t->run.cfg);
    memset(&t->run, 0, sizeof(t->run));
}

/* Stops the run, keeping the store. Returns its last stats. */
static kd_pipeline_stats run_stop(tcase *t) {
    kd_pipeline_stats st;

    kd_pipeline_stop(t->run.p);
    st = run_join(t);
    run_free(t);
    return st;
}

static kd_pipeline_stats stats(tcase *t) {
    kd_pipeline_stats st;

    kd_pipeline_stats_get(t->run.p, &st);
    return st;
}

/* A condition on the run, or on the case. */
typedef bool (*cond_fn)(tcase *t, uint64_t arg);

/* Waits until done(t, arg), at most TIMEOUT_MS; fails naming what, with
 * where the run and the group stood. */
static void wait_for(tcase *t, cond_fn done, uint64_t arg, const char *what) {
    for (uint64_t end = kd_mono_ms() + TIMEOUT_MS; !done(t, arg);) {
        if (kd_mono_ms() > end) {
            kd_pipeline_stats st = {0};

            if (t->run.p)
                st = stats(t);

            fail_msg("timed out waiting for %s (consumed %" PRIu64 ", forwarded %" PRIu64
                     ", assigned %" PRIu64 ", in flight %" PRIu64
                     ", store errors %" PRIu64 "; committed %" PRId64 " and %" PRId64
                     " of %zu sent)",
                     what, st.consumed, st.forwarded, st.assigned_partitions, st.inflight,
                     st.store_errors, kf_committed(&t->e->mock, t->group, t->in, 0),
                     kf_committed(&t->e->mock, t->group, t->in, 1), t->nsent);
        }
        nanosleep(&(struct timespec){0, STEP_MS * 1000000L}, NULL);
    }
}

/* More than arg consumed, and a store write failed. */
static bool stuck(tcase *t, uint64_t arg) {
    kd_pipeline_stats st = stats(t);

    return st.consumed > arg && st.store_errors > 0;
}

static bool crashed(tcase *t, uint64_t arg) {
    (void)arg;
    return kd_powerloss_crashed(t->store);
}

/* The restart after a power loss (t->store crashed, or not: then its
 * unsynced writes are lost now): t->store becomes what survived. */
static void power_back(tcase *t) {
    kd_store *survivor = kd_powerloss_new(t->store);

    assert_non_null(survivor); /* the model replays */
    kd_store_destroy(t->store);
    t->store = survivor;
}

/*
 * Input and the oracle.
 */

/* Sends key-<from> .. key-<to - 1> (key-i to partition i % nparts). */
static void send_keys(tcase *t, int from, int to) {
    rd_kafka_t *rk = kf_producer(&t->e->mock);
    char key[32];

    for (int i = from; i < to; i++) {
        snprintf(key, sizeof(key), "key-%d", i);
        kf_send(rk, t->in, i % t->nparts, key, key);
    }
    kf_producer_close(rk);
    t->nsent += (size_t)(to - from);
}

static bool completed(kd_dedup *d, const char *key) {
    kd_decision dec;
    bool found = false, done;

    assert_int_equal(kd_dedup_lookup(d, key, strlen(key), &dec, &found), KD_OK);
    done = found && dec.state == KD_COMPLETED;
    kd_decision_clear(&dec);
    return done;
}

/* The committed offsets of t's group, read from the broker, against the
 * source messages whose keys image (what survives a power loss; below
 * t->handoff, t->prior) has not completed: at or below the lowest of them; with `ended`,
 * also at the end of each partition, with none unfinished. */
static void check_commits(tcase *t, kd_store *image, bool ended, const char *when) {
    size_t n;
    kf_record *src =
        kf_read(&t->e->mock, t->in, t->nparts, t->nsent, 100, TIMEOUT_MS, &n);
    kd_dedup *d = kd_dedup_new(image, t->ns);
    kd_dedup *before = t->prior ? kd_dedup_new(t->prior, t->ns) : NULL;

    assert_int_equal(n, t->nsent);
    for (int part = 0; part < t->nparts; part++) {
        int64_t unfinished = INT64_MAX, end = 0, committed;
        const char *key = "";

        for (size_t i = 0; i < n; i++) {
            if (src[i].partition != part)
                continue;
            if (src[i].offset + 1 > end)
                end = src[i].offset + 1;
            bool earlier = before && src[i].offset < t->handoff[part];

            if (src[i].offset < unfinished &&
                !completed(earlier ? before : d, src[i].ikey)) {
                unfinished = src[i].offset;
                key = src[i].ikey;
            }
        }
        committed = kf_committed(&t->e->mock, t->group, t->in, part);
        if (committed > (unfinished < end ? unfinished : end))
            fail_msg("%s: %s/%d committed at %" PRId64 ", past offset %" PRId64
                     " (%s), not completed in the store",
                     when, t->in, part, committed, unfinished, key);
        if (ended && (committed != end || unfinished < end))
            fail_msg("%s: %s/%d committed at %" PRId64 ", end %" PRId64
                     ", first unfinished %" PRId64,
                     when, t->in, part, committed, end, unfinished);
    }
    kd_dedup_destroy(before);
    kd_dedup_destroy(d);
    free(src);
}

/* check_commits() against a power loss now. */
static void check_commits_now(tcase *t, bool ended, const char *when) {
    kd_store *image = kd_powerloss_new(t->store);

    assert_non_null(image);
    check_commits(t, image, ended, when);
    kd_store_destroy(image);
}

static bool committed_to_end(tcase *t, uint64_t arg) {
    int64_t total = 0;

    for (int part = 0; part < t->nparts; part++) {
        int64_t c = kf_committed(&t->e->mock, t->group, t->in, part);

        total += c > 0 ? c : 0;
    }
    return total >= (int64_t)arg;
}

/* Downstream: key-0 .. key-<nkeys - 1> each delivered `times[i]` times
 * (NULL: once), copies of one produce call counted once. */
static void check_downstream(tcase *t, int nkeys, const int *times) {
    size_t n, expect = 0;
    kf_record *recs;

    for (int i = 0; i < nkeys; i++)
        expect += times ? (size_t)times[i] : 1;
    recs = kf_read(&t->e->mock, t->out, t->nparts, expect, 500, TIMEOUT_MS, &n);
    for (int i = 0; i < nkeys; i++) {
        char key[32];
        int deliveries = 0, want = times ? times[i] : 1;

        snprintf(key, sizeof(key), "key-%d", i);
        for (size_t j = 0; j < n; j++) {
            bool first = !strcmp(recs[j].ikey, key);

            for (size_t k = 0; first && k < j; k++) /* the same produce call */
                first = strcmp(recs[k].ikey, key) || strcmp(recs[k].run, recs[j].run) ||
                        strcmp(recs[k].forwarded_at, recs[j].forwarded_at);
            deliveries += first;
        }
        if (deliveries != want) {
            for (size_t j = 0; j < n; j++)
                if (!strcmp(recs[j].ikey, key))
                    print_message("%s: %s/%d@%" PRId64 " run %s at %s\n", key, t->out,
                                  recs[j].partition, recs[j].offset, recs[j].run,
                                  recs[j].forwarded_at);
            fail_msg("%s delivered %d times downstream, expected %d", key, deliveries,
                     want);
        }
    }
    free(recs);
}

/*
 * The model itself.
 */

/* Claims key in d alone; returns the claim's error. */
static kd_err claim1(kd_dedup *d, const char *key) {
    kd_claim c = {.key = key, .key_len = strlen(key)};

    assert_int_equal(kd_dedup_claim_batch(d, &c, 1, 1000), KD_OK);
    kd_decision_clear(&c.decision);
    return c.err;
}

/* Completes key in d alone, lazily; returns its error. */
static kd_err complete1_lazy(kd_dedup *d, const char *key) {
    kd_completion c = {
        .key = key, .key_len = strlen(key), .receipt = "r", .receipt_len = 1};

    assert_int_equal(kd_dedup_complete_batch_lazy(d, &c, 1), KD_OK);
    return c.err;
}

/* key's state in namespace ns of what survives a power loss of s now: 0
 * absent, 1 in flight, 2 completed. */
static int survived_in(kd_store *s, const char *ns, const char *key) {
    kd_store *image = kd_powerloss_new(s);
    kd_dedup *d = kd_dedup_new(image, ns);
    kd_decision dec;
    bool found = false;
    int state;

    assert_int_equal(kd_dedup_lookup(d, key, strlen(key), &dec, &found), KD_OK);
    state = !found ? 0 : dec.state == KD_COMPLETED ? 2 : 1;
    kd_decision_clear(&dec);
    kd_dedup_destroy(d);
    kd_store_destroy(image);
    return state;
}

/* Synced writes survive; lazy ones only once a sync or a later synced
 * write (that wrote something) covered them; a failure applies nothing
 * and the store works on. */
static void test_model_sync(void **state) {
    kd_store *s = kd_powerloss_new(NULL);
    kd_dedup *d = kd_dedup_new(s, "t");

    (void)state;
    assert_int_equal(claim1(d, "a"), KD_OK); /* synced */
    assert_int_equal(claim1(d, "b"), KD_OK);
    assert_int_equal(survived_in(s, "t", "a"), 1);
    assert_int_equal(complete1_lazy(d, "a"), KD_OK);
    assert_int_equal(kd_powerloss_pending(s), 1);
    assert_int_equal(survived_in(s, "t", "a"), 1); /* lazy: not yet */
    assert_int_equal(claim1(d, "a"),
                     KD_OK); /* completed: writes nothing, syncs nothing */
    assert_int_equal(survived_in(s, "t", "a"), 1);
    assert_int_equal(kd_store_sync(s), KD_OK);
    assert_int_equal(survived_in(s, "t", "a"), 2);
    assert_int_equal(kd_powerloss_count(s, KD_POWERLOSS_SYNC), 1);
    assert_int_equal(kd_store_sync(s), KD_OK); /* nothing pending: not counted */
    assert_int_equal(kd_powerloss_count(s, KD_POWERLOSS_SYNC), 1);
    assert_int_equal(complete1_lazy(d, "b"), KD_OK);
    assert_int_equal(claim1(d, "c"), KD_OK); /* a synced write covers b's receipt */
    assert_int_equal(survived_in(s, "t", "b"), 2);

    kd_powerloss_fail_at(s, KD_POWERLOSS_CLAIM, 1);
    assert_int_equal(claim1(d, "d"), KD_ERR_STORE);
    kd_powerloss_refuse(s, KD_POWERLOSS_ALL);
    assert_int_equal(claim1(d, "d"), KD_ERR_STORE);
    kd_powerloss_refuse(s, KD_POWERLOSS_BIT(KD_POWERLOSS_RECEIPT));
    assert_int_equal(complete1_lazy(d, "c"), KD_ERR_STORE);
    assert_int_equal(claim1(d, "d"), KD_OK);
    kd_powerloss_refuse(s, 0);
    assert_int_equal(complete1_lazy(d, "c"), KD_OK);
    assert_int_equal(kd_powerloss_count(s, KD_POWERLOSS_CLAIM), 4);
    assert_int_equal(kd_powerloss_count(s, KD_POWERLOSS_RECEIPT), 3);
    assert_false(kd_powerloss_crashed(s));
    kd_dedup_destroy(d);
    kd_store_destroy(s);
}

/* Claims e, f and g in d in one write; each sees err. */
static void claim3(kd_dedup *d, kd_err err) {
    kd_claim c[3] = {{.key = "e", .key_len = 1},
                     {.key = "f", .key_len = 1},
                     {.key = "g", .key_len = 1}};

    assert_int_equal(kd_dedup_claim_batch(d, c, 3, 1000), KD_OK);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(c[i].err, err);
        kd_decision_clear(&c[i].decision);
    }
}

/* A crash keeps a prefix of the writes no sync covered, whole writes
 * only, the one it falls in last; it fails every call after it; the store
 * made from it starts with what survived. */
static void test_model_crash(void **state) {
    kd_store *s = kd_powerloss_new(NULL), *s2, *s3;
    kd_dedup *d = kd_dedup_new(s, "t");

    (void)state;
    assert_int_equal(claim1(d, "a"), KD_OK);
    assert_int_equal(complete1_lazy(d, "a"), KD_OK);
    kd_powerloss_crash_at(s, KD_POWERLOSS_CLAIM, 1, 1); /* a's receipt, not the claims */
    claim3(d, KD_ERR_STORE);                            /* the caller saw it fail */
    assert_true(kd_powerloss_wait_crash(s, 0));
    assert_int_equal(survived_in(s, "t", "a"), 2);
    assert_int_equal(survived_in(s, "t", "e"), 0); /* one write: all of it or none */
    assert_int_equal(survived_in(s, "t", "g"), 0);
    assert_int_equal(claim1(d, "h"), KD_ERR_STORE); /* dead */
    kd_dedup_destroy(d);

    assert_non_null(s2 = kd_powerloss_new(s));
    d = kd_dedup_new(s2, "t");
    kd_powerloss_crash_at(s2, KD_POWERLOSS_CLAIM, 1, SIZE_MAX); /* all reached the disk */
    claim3(d, KD_ERR_STORE);
    assert_int_equal(survived_in(s2, "t", "e"),
                     1); /* failed to the caller, durable all the same */
    assert_int_equal(survived_in(s2, "t", "g"), 1);
    kd_dedup_destroy(d);

    assert_non_null(s3 = kd_powerloss_new(s2));
    d = kd_dedup_new(s3, "t");
    assert_int_equal(complete1_lazy(d, "e"), KD_OK);
    assert_int_equal(complete1_lazy(d, "f"), KD_OK);
    assert_int_equal(complete1_lazy(d, "g"), KD_OK);
    kd_powerloss_crash_at(s3, KD_POWERLOSS_SYNC, 1, 2);
    assert_int_equal(kd_store_sync(s3), KD_ERR_STORE);
    assert_true(kd_powerloss_crashed(s3));
    assert_int_equal(survived_in(s3, "t", "e"), 2);
    assert_int_equal(survived_in(s3, "t", "f"), 2);
    assert_int_equal(survived_in(s3, "t", "g"), 1); /* past the prefix the log kept */
    kd_dedup_destroy(d);
    kd_store_destroy(s3);
    kd_store_destroy(s2);
    kd_store_destroy(s);
}

/*
 * Power loss at each point of a turn.
 */

/* Crashed, or every source message committed (what a run that counted
 * receipts durable before a sync covered them would reach). */
static bool crashed_or_committed(tcase *t, uint64_t arg) {
    return crashed(t, 0) || committed_to_end(t, arg);
}

/* Runs t until its store crashes at what is armed (or, with `or_commit`,
 * until everything is committed, which the crash must come before), stops
 * the run, restarts the power over what survived and checks the commits. */
static void crash_run(tcase *t, const char *dedup, bool or_commit, const char *when) {
    run_start(t, "{}", dedup, "300ms");
    wait_for(t, or_commit ? crashed_or_committed : crashed, t->nsent, when);
    kd_powerloss_crash(t->store); /* when it did not: the power goes now */
    run_stop(t);
    power_back(t);
    check_commits(t, t->store, false, when);
}

/* Runs t over what survived to the end: everything committed, none of it
 * unfinished, each of the nkeys keys downstream times[i] times (NULL:
 * once). */
static void finish_run(tcase *t, const char *dedup, int nkeys, const int *times) {
    run_start(t, "{}", dedup, "5s");
    wait_for(t, committed_to_end, t->nsent, "everything committed");
    run_stop(t);
    power_back(t);
    check_commits(t, t->store, true, "settled");
    check_downstream(t, nkeys, times);
}

/* One turn, crashed at each of its points in turn, with the handover off:
 * a restart knows only what its store kept. 1: the receipts written
 * lazily, the sync that covers them not reached (first, so no orphan's
 * synced completion covers them; a run that counts them durable without
 * the sync commits everything first, and then the power goes). 2: the
 * claims' write reached the log, its sync did not return (the claims
 * survive, nothing was produced). 3: the claims' write, its sync not
 * reached: lost. 4: the deliveries acknowledged, the receipts' write lost
 * (the restart finds the orphans downstream). Each restart runs over what
 * survived the crash before; at each crash the commits are at or below the
 * lowest unfinished message; at the end every key is downstream once and
 * everything is committed. */
static void test_crash_at_each_point_of_a_turn(void **state) {
    tcase t;

    case_open(&t, *state, "turn", 2);
    send_keys(&t, 0, 10);
    kd_powerloss_crash_at(t.store, KD_POWERLOSS_SYNC, 1, 0);
    crash_run(&t, NO_HANDOVER, true, "crashed before the receipts' sync");
    send_keys(&t, 10, 20);
    kd_powerloss_crash_at(t.store, KD_POWERLOSS_CLAIM, 1, SIZE_MAX);
    crash_run(&t, NO_HANDOVER, false, "crashed in the claims' sync");
    send_keys(&t, 20, 30);
    kd_powerloss_crash_at(t.store, KD_POWERLOSS_CLAIM, 1, 0);
    crash_run(&t, NO_HANDOVER, false, "crashed before the claims' sync");
    kd_powerloss_crash_at(t.store, KD_POWERLOSS_RECEIPT, 1, 0);
    crash_run(&t, NO_HANDOVER, false, "crashed in the receipts' write");
    finish_run(&t, NO_HANDOVER, 30, NULL);
    case_close(&t);
}

/* A new owner with an empty store (another host) learns the partitions'
 * history from downstream before it consumes them, and crashes during
 * those writes: 1, the learned keys' claims not synced; 2, their
 * completions not synced (the claims survive). Each restart learns again;
 * the copies sent again are skipped, the new keys forwarded once. */
static void test_crash_during_handover(void **state) {
    tcase t;

    case_open(&t, *state, "handover", 2);
    send_keys(&t, 0, 10);
    finish_run(&t, "{}", 10, NULL);
    for (int part = 0; part < 2; part++)
        t.handoff[part] = kf_committed(&t.e->mock, t.group, t.in, part);
    t.prior = t.store;
    assert_non_null(t.store = kd_powerloss_new(NULL)); /* the new owner's */

    send_keys(&t, 0, 20); /* 0-9 again: copies */
    kd_powerloss_crash_at(t.store, KD_POWERLOSS_CLAIM, 1, 0);
    crash_run(&t, "{}", false, "crashed in the handover's claims");
    kd_powerloss_crash_at(t.store, KD_POWERLOSS_RECEIPT, 1, 0);
    crash_run(&t, "{}", false, "crashed in the handover's completions");
    assert_true(survived_in(t.store, t.ns, "key-0") == 1 ||
                survived_in(t.store, t.ns, "key-1") == 1); /* the claims survived */
    finish_run(&t, "{}", 20, NULL);
    case_close(&t);
}

/* Forgets key in t's store as an operator does (DELETE /v1/keys). */
static kd_err forget(tcase *t, const char *key, kd_forget_result *res) {
    kd_dedup *d = kd_dedup_new(t->store, t->ns);
    kd_err err = kd_dedup_forget(d, key, strlen(key), false, NULL, NULL, res);

    kd_dedup_destroy(d);
    return err;
}

/* An operator's forget, crashed: 1, before its tombstone reached the log
 * (it failed; the key stays completed: a copy is skipped); 2, after it did
 * but before the answer (it failed, yet the key is forgotten: a copy is
 * forwarded); 3, it answered DONE and the power went at once (it holds: a
 * copy is forwarded). */
static void test_crash_during_a_forget(void **state) {
    static const int times[] = {2, 3, 1};
    kd_forget_result res;
    tcase t;

    case_open(&t, *state, "forget", 1);
    send_keys(&t, 0, 3);
    finish_run(&t, NO_HANDOVER, 3, NULL);

    kd_powerloss_crash_at(t.store, KD_POWERLOSS_TOMBSTONE, 1, 0);
    assert_int_equal(forget(&t, "key-0", &res), KD_ERR_STORE);
    power_back(&t);
    send_keys(&t, 0, 1); /* skipped */
    kd_powerloss_crash_at(t.store, KD_POWERLOSS_TOMBSTONE, 1, SIZE_MAX);
    assert_int_equal(forget(&t, "key-1", &res), KD_ERR_STORE);
    power_back(&t);
    send_keys(&t, 1, 2); /* forwarded again */
    finish_run(&t, NO_HANDOVER, 3, (const int[]){1, 2, 1});

    assert_int_equal(forget(&t, "key-0", &res), KD_OK);
    assert_int_equal(res, KD_FORGET_DONE);
    assert_int_equal(forget(&t, "key-1", &res), KD_OK);
    assert_int_equal(res, KD_FORGET_DONE);
    kd_powerloss_crash(t.store);
    power_back(&t);
    send_keys(&t, 0, 2);
    finish_run(&t, NO_HANDOVER, 3, times);
    case_close(&t);
}

/*
 * Offsets at every ownership change.
 */

/* The committed offset of each of t's source partitions is `at[part]`. */
static void check_committed_at(tcase *t, const int64_t *at, const char *when) {
    for (int part = 0; part < t->nparts; part++) {
        int64_t c = kf_committed(&t->e->mock, t->group, t->in, part);

        if (c != at[part])
            fail_msg("%s: %s/%d committed at %" PRId64 ", expected %" PRId64, when, t->in,
                     part, c, at[part]);
    }
}

static bool unassigned(tcase *t, uint64_t arg) {
    (void)arg;
    return stats(t).assigned_partitions == 0;
}

static bool assigned(tcase *t, uint64_t arg) {
    (void)arg;
    return stats(t).assigned_partitions > 0;
}

/* How a case ends an ownership; the run goes on (or runs again) after. */
typedef void (*change_fn)(tcase *t);

/* A rejoin. The mock cluster takes the revoke's own commit and refuses the
 * next one: librdkafka, as it unassigns, commits the offsets stored before
 * the store failed, which would put back whatever the revoke committed. */
static void change_revoke(tcase *t) {
    kf_mock_cmd(&t->e->mock, "commit-errors 1 0");
    kf_mock_cmd(&t->e->mock, "commit-errors 1 %d",
                RD_KAFKA_RESP_ERR_OFFSET_METADATA_TOO_LARGE);
    kd_pipeline_rejoin(t->run.p);
    wait_for(t, unassigned, 0, "the revoke");
}

/* The coordinator gone for longer than the session: the assignment is
 * lost, nothing committed; it comes back. */
static void change_lost(tcase *t) {
    kf_mock_cmd(&t->e->mock, "broker-down 3");
    wait_for(t, unassigned, 0, "the assignment lost");
    kf_mock_cmd(&t->e->mock, "broker-up 3");
}

static void change_stop(tcase *t) {
    kf_mock_cmd(&t->e->mock, "commit-errors 1 0");
    kf_mock_cmd(&t->e->mock, "commit-errors 1 %d",
                RD_KAFKA_RESP_ERR_OFFSET_METADATA_TOO_LARGE);
    run_stop(t);
    run_start(t, "{}", NO_HANDOVER, "300ms");
}

/* A reload that changes the routes: the run returns to restart, and a new
 * pipeline runs over the offered config. */
static void change_reload(tcase *t) {
    kd_config *next = config(t, "{}", NO_HANDOVER, "300ms");

    kd_pipeline_offer(t->run.p, next, true);
    run_join(t);
    assert_ptr_equal(kd_pipeline_restart_config(t->run.p), next);
    run_free(t);
    run_cfg(t, next);
}

/* 10 keys settled and committed; then the store refuses receipts, and 10
 * more are delivered but cannot finish (a store failing during the drain
 * of the change); the ownership changes. Committed after it: exactly the
 * end of the first 10, which is the lowest unfinished message. Then the
 * store takes writes again: every key once, everything committed. */
static void ownership_change(void **state, const char *name, change_fn change) {
    int64_t first_end[2];
    tcase t;

    case_open(&t, *state, name, 2);
    send_keys(&t, 0, 10);
    run_start(&t, "{}", NO_HANDOVER, "300ms");
    wait_for(&t, committed_to_end, 10, "the first keys committed");
    for (int part = 0; part < 2; part++)
        first_end[part] = kf_committed(&t.e->mock, t.group, t.in, part);
    assert_int_equal(first_end[0] + first_end[1], 10);

    kd_powerloss_refuse(t.store, KD_POWERLOSS_BIT(KD_POWERLOSS_RECEIPT));
    send_keys(&t, 10, 20);
    wait_for(&t, stuck, 10, "the next keys delivered, their receipts refused");
    change(&t);
    check_commits_now(&t, false, name);
    check_committed_at(&t, first_end, name);

    kd_powerloss_refuse(t.store, 0);
    wait_for(&t, assigned, 0, "the partitions assigned again");
    wait_for(&t, committed_to_end, t.nsent, "everything committed");
    run_stop(&t);
    check_commits_now(&t, true, "stopped");
    check_downstream(&t, 20, NULL);
    case_close(&t);
}

static void test_offsets_after_a_revoke(void **state) {
    ownership_change(state, "revoke", change_revoke);
}

static void test_offsets_after_a_lost_assignment(void **state) {
    ownership_change(state, "lost", change_lost);
}

static void test_offsets_after_a_stop(void **state) {
    ownership_change(state, "stop", change_stop);
}

static void test_offsets_after_a_reload_restart(void **state) {
    ownership_change(state, "reload", change_reload);
}

int main(void) {
    const struct CMUnitTest model[] = {
        cmocka_unit_test(test_model_sync),
        cmocka_unit_test(test_model_crash),
    };
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_crash_at_each_point_of_a_turn),
        cmocka_unit_test(test_crash_during_handover),
        cmocka_unit_test(test_crash_during_a_forget),
        cmocka_unit_test(test_offsets_after_a_revoke),
        cmocka_unit_test(test_offsets_after_a_lost_assignment),
        cmocka_unit_test(test_offsets_after_a_stop),
        cmocka_unit_test(test_offsets_after_a_reload_restart),
    };
    const char *filter = getenv("KD_TEST_FILTER");
    int failed;

    if (filter) /* e.g. "*turn*": one test while working */
        cmocka_set_test_filter(filter);
    failed = cmocka_run_group_tests_name("the power-loss store", model, NULL, NULL);
    if (filter && strstr(filter, "model")) /* no mock cluster needed */
        return failed;
    return failed +
           cmocka_run_group_tests_name("power loss and ownership changes (mock cluster)",
                                       tests, setup, teardown);
}
