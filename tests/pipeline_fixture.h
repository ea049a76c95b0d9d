/*
 * kdedup tests - the pipeline's fixture, shared by the test_pipeline_*.c
 * and test_bounds_*.c cases: a mock cluster per case (setup, setup_bounds,
 * teardown), runs of the pipeline over it (kafka_fixture.h), configs,
 * senders and waits. Each helper's doc is at its definition in
 * pipeline_fixture.c.
 */
#ifndef KD_TEST_PIPELINE_FIXTURE_H
#define KD_TEST_PIPELINE_FIXTURE_H

#include "dedup/dedup.h"
#include "dedup/entry.h"
#include "sidecar/forgets.h"
#include "sidecar/metrics.h"
#include "sidecar/receipt.h"
#include "sidecar/recovery.h"
#include "sidecar/headers.h"
#include "sidecar/signing.h"
#include "store_rocks/store_rocks.h"
#include "tests/case_runner.h"
#include "tests/dedup_fixture.h"
#include "tests/faulty_store.h"
#include "tests/kafka_fixture.h"

#include <stdarg.h>
#include <setjmp.h>
#include <stddef.h>
#include <cmocka.h>

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/stat.h>
#include <unistd.h>

#define PARTS 4

#define TIMEOUT_MS 60000

/* The one-route config most tests use. A short session: the mock cluster
 * waits for it before a restarted run can join the group. Offsets stored
 * are committed within 200 ms, so a check of the committed offsets sees
 * whatever was stored, not only what a stop commits. */
#define ROUTE_CONFIG                                                                     \
    "{\"kafka\": {\"brokers\": \"%s\", \"group_id\": \"g\", \"producer\": %s,"           \
    " \"consumer\": {\"session.timeout.ms\": \"6000\", \"heartbeat.interval.ms\": "      \
    "\"500\", \"auto.commit.interval.ms\": \"200\"}},"                                   \
    " \"routes\": [{\"from\": \"in\", \"to\": \"out\", \"on_missing_key\": \"forward\"," \
    " \"dead_letter_topic\": \"dlq\", \"max_retries\": %d, \"retry_backoff\": "          \
    "\"100ms\"}],"                                                                       \
    " \"store\": {\"path\": \"%s/store\"}, \"pipeline\": {\"shutdown_grace\": \"%s\"}}"

/* The one-route config with a dedup section of the caller's (the handover
 * off: only recovery can tell what a dead run delivered). */
#define DEDUP_CONFIG                                                                     \
    "{\"kafka\": {\"brokers\": \"%s\", \"group_id\": \"g\","                             \
    " \"consumer\": {\"session.timeout.ms\": \"6000\", \"heartbeat.interval.ms\": "      \
    "\"500\"}},"                                                                         \
    " \"routes\": [{\"from\": \"in\", \"to\": \"out\", \"on_missing_key\": "             \
    "\"forward\"}],"                                                                     \
    " \"dedup\": %s, \"store\": {\"path\": \"%s/store\"}}"

#define NO_HANDOVER "{\"handover\": false, \"inflight_timeout\": \"10m\"}"

/* A run with the handover off (so a partition assigned again is consumed
 * at once); its arguments: brokers, message.timeout.ms, the store's
 * directory, and shutdown_grace (how long a revoke or a stop drains). */
#define REJOIN_CONFIG                                                                    \
    "{\"kafka\": {\"brokers\": \"%s\", \"group_id\": \"g\","                             \
    " \"producer\": {\"message.timeout.ms\": \"%s\", \"retries\": \"1\","                \
    " \"retry.backoff.ms\": \"10\"},"                                                    \
    " \"consumer\": {\"session.timeout.ms\": \"6000\", \"heartbeat.interval.ms\": "      \
    "\"500\"}},"                                                                         \
    " \"routes\": [{\"from\": \"in\", \"to\": \"out\", \"on_missing_key\": \"drop\", "   \
    "\"max_retries\": -1, \"retry_backoff\": \"100ms\"}], \"dedup\": {\"handover\": "    \
    "false}, \"store\": {\"path\": \"%s/store\"}, \"pipeline\": {\"shutdown_grace\": "   \
    "\"%s\"}}"

/* Replicas whose member leaves its group after 3 s without a poll
 * (max.poll.interval.ms; the session is as short), in batches of 50 from
 * fetches of about 8 messages a partition. Each reads a partition's history
 * when it is given one (the default): only a copy forwarded after the new
 * owner read the history is downstream twice. Arguments: brokers, dir,
 * replica, batch_max, pipeline keys more ("" or ", \"k\": v..."). */
#define STALL_CONFIG                                                                     \
    "{\"kafka\": {\"brokers\": \"%s\", \"group_id\": \"g\", \"producer\": {},"           \
    " \"consumer\": {\"session.timeout.ms\": \"3000\", \"max.poll.interval.ms\": "       \
    "\"3000\", \"heartbeat.interval.ms\": \"500\", \"auto.commit.interval.ms\": "        \
    "\"200\", \"max.partition.fetch.bytes\": \"1024\"}},"                                \
    " \"routes\": [{\"from\": \"in\", \"to\": \"out\", \"on_missing_key\": "             \
    "\"forward\"}],"                                                                     \
    " \"store\": {\"path\": \"%s/%s/store\"}, \"pipeline\": {\"batch_max\": %d%s}}"

typedef kf_env env;

int setup(void **state);
int setup_bounds(void **state);
int setup_three(void **state);
int teardown(void **state);
void start(kf_run *r, env *e, const char *producer_props, int max_retries,
           const char *grace);
void split_brokers(env *e);
uint64_t now_ms(void);
void send_keys(env *e, const char *topic, int from, int to, int copies);
void assert_each_once(const kf_record *recs, size_t n, int from, int to);
void send_five(env *e, kf_run *r);
kd_store *store_with_dead_run(env *e, uint64_t owner);
void claim_at(kd_dedup *d, uint64_t owner, int from, int to, uint64_t at);
void put_downstream(rd_kafka_t *rk, const char *key, int src_off, uint64_t at);
kd_pipeline_stats wait_stats(kf_run *r, bool (*done)(const kd_pipeline_stats *));
bool consumed_6(const kd_pipeline_stats *st);
bool consumed_again(const kd_pipeline_stats *st);
bool failed_once(const kd_pipeline_stats *st);
bool abandoned(const kd_pipeline_stats *st);
bool forwarded_6(const kd_pipeline_stats *st);
void start_replica_with(env *e, kf_run *r, const char *name, bool faulty,
                        const char *pipeline);
void start_replica(env *e, kf_run *r, const char *name, bool faulty);
void wait_replicas(kf_run *a, kf_run *b, uint64_t parts_a, uint64_t parts_b,
                   uint64_t forwarded);
void slow_write_under_way(env *e, kf_run *a, kf_run *b, unsigned ms);
void start_named(kf_run *r, env *e, const char *name);
void deliveries_headed(rd_kafka_t *rk, int32_t partition, const char *prefix, int n,
                       int extra);
void deliveries(rd_kafka_t *rk, int32_t partition, const char *prefix, int n);
uint64_t cache_bytes(const kd_recovery *rc);
void recovery_open(env *e, const char *run, int cache_bytes, kd_config **cfg,
                   kd_store **store, kd_recovery **rc);

/* The cases (test_pipeline_*.c), run by test_pipeline.c's table. */
void test_duplicates_within_across_and_restart(void **state);
void test_missing_key_policies(void **state);
void test_hostile_headers(void **state);
void test_ambiguous_keys_dead_lettered(void **state);
void test_header_bounds_reject(void **state);
void test_store_full_pauses_and_resumes(void **state);
void test_not_persisted_released_and_retried(void **state);
void test_commit_stops_at_unfinished(void **state);
void test_stop_mid_stream_loses_nothing(void **state);
void test_retries_exhausted_dead_letter(void **state);
void test_dead_letter_refused_is_stuck(void **state);
void test_possibly_persisted_resolved_downstream(void **state);
void test_resend_reads_from_the_first_copy(void **state);
void test_orphaned_claim_is_reforwarded(void **state);
void test_orphans_resolved_from_downstream(void **state);
void test_orphans_resolved_without_handover(void **state);
void test_expired_orphans_looked_up(void **state);
void test_orphan_not_completed_by_an_older_delivery(void **state);
void test_handover_retried_after_a_failed_completion(void **state);
void test_handover_refuses_a_delivery_older_than_the_claim(void **state);
void test_handover_refuses_a_delivery_older_than_an_expired_claim(void **state);
void test_handover_honours_forgets_not_releases(void **state);
void test_handover_read_again_keeps_a_forget(void **state);
void test_handover_read_again_keeps_an_expired_claim(void **state);
void test_handover_moves_history(void **state);
void test_handover_keys_spread(void **state);
void test_forget_travels_with_the_partition(void **state);
void test_forget_record_is_no_delivery(void **state);
void test_handover_ignores_event_time(void **state);
void test_handover_waits_for_downstream(void **state);
void test_store_slower_than_max_poll(void **state);
void test_store_write_within_its_bound_does_not_pause(void **state);
void test_stop_during_a_slow_write(void **state);
void test_txn_commit_tries_end_at_the_stop(void **state);
void test_txn_producer_initialised_in_later_turns(void **state);
void test_txn_unknown_commit_read_once_the_producer_is_ready(void **state);
void test_txn_unknown_commit_note_read_once_the_producer_is_ready(void **state);
void test_expired_claim_in_a_dropped_batch(void **state);
void test_revoke_during_a_slow_write(void **state);
void test_txn_revoke_during_a_slow_write(void **state);
void test_eager_revoke_outlasted_by_a_slow_write(void **state);
void test_assignment_lost_during_a_slow_write(void **state);
void test_rebalance_while_claims_are_written(void **state);
void test_partition_back_to_same_process(void **state);
void test_stop_takes_one_grace_period(void **state);
void test_uncertain_delivery_of_an_ended_ownership(void **state);
void test_left_copies_read_together(void **state);
void test_conflict_waits_for_an_ended_ownership(void **state);
void test_own_claim_kept_while_its_copy_waits(void **state);
void test_signed_history_only(void **state);
void test_claim_without_owner_reads_no_own_scan(void **state);
void test_lost_claim_race_claims_again(void **state);

/* The cases (test_bounds_*.c), run by test_bounds.c's table (setup_bounds). */
void test_scans_step_within_the_cache_budget(void **state);
void test_scans_that_do_not_fit_together_take_turns(void **state);
void test_handover_beside_a_paused_scan(void **state);
void test_handover_batches_within_their_bytes(void **state);
void test_backpressure_pauses_and_resumes(void **state);
void test_headers_count_in_flight(void **state);
void test_poison_holds_back_only_its_partition(void **state);
void test_orphans_keep_their_order(void **state);
void test_unclaimed_records_are_no_delivery(void **state);

#endif /* KD_TEST_PIPELINE_FIXTURE_H */
