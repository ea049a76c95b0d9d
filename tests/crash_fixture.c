/*
 * kdedup tests - test_crash's fixture (see crash_fixture.h).
 */
#include "tests/crash_fixture.h"

int setup(void **state) {
    static const char *const no_topics[] = {NULL};

    kd_log_set_level(getenv("KD_TEST_LOG") ? KD_LOG_DEBUG : KD_LOG_ERROR);
    *state = kf_env_new(3, no_topics);
    return 0;
}

int teardown(void **state) {
    kf_env_free(*state);
    return 0;
}

void case_open(tcase *t, env *e, const char *name, int nparts) {
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

void case_close(tcase *t) {
    if (t->reader)
        rd_kafka_destroy(t->reader);
    t->reader = NULL;
    kd_store_destroy(t->store);
    kd_store_destroy(t->prior);
    t->store = t->prior = NULL;
}

kd_config *config(tcase *t, const char *producer, const char *dedup, const char *grace) {
    char json[4096], err[1024];
    kd_config *cfg;

    snprintf(json, sizeof(json), CONFIG, t->e->mock.bootstrap, t->group, producer, t->in,
             t->out, dedup, t->e->dir, grace);
    if (!(cfg = kd_config_parse(json, strlen(json), "test.json", err, sizeof(err))))
        fail_msg("%s", err);
    return cfg;
}

void *run_thread(void *arg) {
    kf_run *r = arg;

    r->rc = kd_pipeline_run(r->p);
    return NULL;
}

/* Starts a pipeline over cfg (owned) and t->store (borrowed). */
void run_cfg(tcase *t, kd_config *cfg) {
    char err[1024];

    memset(&t->run, 0, sizeof(t->run));
    t->run.cfg = cfg;
    t->run.store = t->store;
    if (!(t->run.p =
              kd_pipeline_new(cfg, t->store, t->e->mock.bootstrap, err, sizeof(err))))
        fail_msg("kd_pipeline_new: %s", err);
    assert_int_equal(pthread_create(&t->run.tid, NULL, run_thread, &t->run), 0);
}

void run_start(tcase *t, const char *producer, const char *dedup, const char *grace) {
    run_cfg(t, config(t, producer, dedup, grace));
}

/* Waits for the run to return (after a stop, or to restart). */
kd_pipeline_stats run_join(tcase *t) {
    kd_pipeline_stats st;

    pthread_join(t->run.tid, NULL);
    kd_pipeline_stats_get(t->run.p, &st);
    assert_int_equal(t->run.rc, 0);
    return st;
}

/* Frees the run (its pipeline and config), not the store. */
void run_free(tcase *t) {
    kd_pipeline_destroy(t->run.p);
    kd_config_destroy(t->run.cfg);
    memset(&t->run, 0, sizeof(t->run));
}

/* Stops the run, keeping the store. Returns its last stats. */
kd_pipeline_stats run_stop(tcase *t) {
    kd_pipeline_stats st;

    kd_pipeline_stop(t->run.p);
    st = run_join(t);
    run_free(t);
    return st;
}

/* The committed offset of t's group on its source partition part (-1001
 * when none), read by one client for the whole case: the waits read it
 * every few milliseconds, and a client started for each read (its threads,
 * its connections to every broker) loaded the shared mock cluster with
 * thousands of them a case. */
int64_t committed_at(tcase *t, int part) {
    if (!t->reader)
        t->reader = kf_reader(&t->e->mock, t->group);
    return kf_committed_by(t->reader, t->in, part);
}

kd_pipeline_stats stats(tcase *t) {
    kd_pipeline_stats st;

    kd_pipeline_stats_get(t->run.p, &st);
    return st;
}

/* Waits until done(t, arg), at most TIMEOUT_MS; fails naming what, with
 * where the run and the group stood. */
void wait_for(tcase *t, cond_fn done, uint64_t arg, const char *what) {
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
                     st.store_errors, committed_at(t, 0), committed_at(t, 1), t->nsent);
        }
        nanosleep(&(struct timespec){0, STEP_MS * 1000000L}, NULL);
    }
}

/* More than arg consumed, and a store write failed. */
bool stuck(tcase *t, uint64_t arg) {
    kd_pipeline_stats st = stats(t);

    return st.consumed > arg && st.store_errors > 0;
}

/* Sends key-<from> .. key-<to - 1> (key-i to partition i % nparts). */
void send_keys(tcase *t, int from, int to) {
    rd_kafka_t *rk = kf_producer(&t->e->mock);
    char key[32];

    for (int i = from; i < to; i++) {
        snprintf(key, sizeof(key), "key-%d", i);
        kf_send(rk, t->in, i % t->nparts, key, key);
    }
    kf_producer_close(rk);
    t->nsent += (size_t)(to - from);
}

bool completed(kd_dedup *d, const char *key) {
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
void check_commits(tcase *t, kd_store *image, bool ended, const char *when) {
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
        committed = committed_at(t, part);
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
void check_commits_now(tcase *t, bool ended, const char *when) {
    kd_store *image = kd_powerloss_new(t->store);

    assert_non_null(image);
    check_commits(t, image, ended, when);
    kd_store_destroy(image);
}

bool committed_to_end(tcase *t, uint64_t arg) {
    int64_t total = 0;

    for (int part = 0; part < t->nparts; part++) {
        int64_t c = committed_at(t, part);

        total += c > 0 ? c : 0;
    }
    return total >= (int64_t)arg;
}

/* Downstream: key-0 .. key-<nkeys - 1> each delivered `times[i]` times
 * (NULL: once), copies of one produce call counted once. */
void check_downstream(tcase *t, int nkeys, const int *times) {
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
