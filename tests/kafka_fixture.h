/*
 * kdedup tests - Kafka fixtures for integration tests: a mock cluster in a
 * `kdedup mock` process (so it outlives any pipeline), a producer and a
 * reader that play the applications around kdedup, and a pipeline run in a
 * thread of the test.
 */
#ifndef KD_TEST_KAFKA_FIXTURE_H
#define KD_TEST_KAFKA_FIXTURE_H

#include "config/config.h"
#include "dedup/store.h"
#include "sidecar/pipeline.h"
#include "sidecar/recovery.h"

#include <librdkafka/rdkafka.h>

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* The mock cluster process. */
typedef struct kf_mock {
    pid_t pid;
    int to_child, from_child;
    char bootstrap[512];
} kf_mock;

/* Starts `$KDEDUP mock --brokers N` with topics "name:partitions"
 * (NULL-terminated); asserts. */
void kf_mock_start(kf_mock *m, int brokers, const char *const *topics);
/* Sends one command (see tools/mockd.c); asserts the answer is "ok". */
void kf_mock_cmd(kf_mock *m, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void kf_mock_stop(kf_mock *m);

/* A case's mock cluster and a temporary directory of its own. */
typedef struct kf_env {
    kf_mock mock;
    char dir[256];
} kf_env;

/* Starts a mock cluster of `brokers` with topics ("name:partitions",
 * NULL-terminated) and makes the directory. Returns it (kf_env_free). */
kf_env *kf_env_new(int brokers, const char *const *topics);
/* Stops the cluster, removes the directory, frees e. */
void kf_env_free(kf_env *e);

/* A producer of test input. */
rd_kafka_t *kf_producer(const kf_mock *m);
/* Produces one message to topic/partition (-1: by message key) with an
 * Idempotency-Key header of ikey (NULL: none), a "trace" header, and
 * value; asserts it was queued. */
void kf_send(rd_kafka_t *rk, const char *topic, int32_t partition, const char *ikey,
             const char *value);
/* As kf_send, with the message's timestamp (ms; 0: now). */
void kf_send_at(rd_kafka_t *rk, const char *topic, int32_t partition, const char *ikey,
                const char *value, int64_t timestamp_ms);
/* Produces one message to topic/partition whose value is ikey, with an
 * Idempotency-Key header of ikey and then n empty headers named "h" (3
 * bytes each on the wire); asserts it was queued. */
void kf_send_headed(rd_kafka_t *rk, const char *topic, int32_t partition,
                    const char *ikey, int n);
/* Flushes and destroys the producer; asserts nothing failed. */
void kf_producer_close(rd_kafka_t *rk);

/* Sends prefix-i (key and value), from <= i < to, to topic/partition
 * through a producer of its own, and waits until all are acknowledged. */
void kf_send_range(const kf_mock *m, const char *topic, int32_t partition,
                   const char *prefix, int from, int to);

/* Sleeps ms milliseconds. */
void kf_sleep_ms(int ms);

/* A record read back. */
typedef struct kf_record {
    int32_t partition;
    int64_t offset;
    char ikey[64];                  /* Idempotency-Key header, "" if none */
    char value[128];                /* the value's first 127 bytes, NUL-terminated */
    size_t value_len;               /* the whole value's length */
    unsigned char value_sha256[32]; /* kf_sha256() of the whole value */
    char source[128];               /* kdedup-source header */
    char trace[64];                 /* trace header */
    char run[24];                   /* kdedup-run header: the forwarding run's id */
    char forwarded_at[24];          /* kdedup-forwarded-at header: wall ms */
    char reason[32];                /* kdedup-reason header (dead letters) */
    bool unclaimed;                 /* has a kdedup-unclaimed header */
    size_t nheaders;                /* how many headers it has */
} kf_record;

/* Reads a topic of nparts partitions from the beginning until `expect`
 * records arrived and then `quiet_ms` passed without more (or timeout_ms).
 * Returns a malloc()ed array, *n its length. */
kf_record *kf_read(const kf_mock *m, const char *topic, int nparts, size_t expect,
                   int quiet_ms, int timeout_ms, size_t *n);

/* Writes the SHA-256 of len bytes at p into out (libcrypto): tells a value
 * that arrived whole from one cut or changed; asserts. */
void kf_sha256(const void *p, size_t len, unsigned char out[32]);

/* How many records carry ikey. */
size_t kf_count_key(const kf_record *r, size_t n, const char *ikey);

/* A consumer of group that never joins it, to read the group's committed
 * offsets again and again (kf_committed_by) without a client's start-up
 * each time; it reconnects within 100 ms of a broker coming back. Owned by
 * the caller (rd_kafka_destroy). */
rd_kafka_t *kf_reader(const kf_mock *m, const char *group);
/* The committed offset, read by reader's group, of topic/partition (-1001
 * when none); asserts the read. */
int64_t kf_committed_by(rd_kafka_t *reader, const char *topic, int32_t partition);
/* The committed offset of group on topic/partition (-1001 when none). */
int64_t kf_committed(const kf_mock *m, const char *group, const char *topic,
                     int32_t partition);

/* A pipeline running in a thread over a RocksDB store in dir. */
typedef struct kf_run {
    kd_config *cfg;
    kd_store *store;
    kd_pipeline *p;
    pthread_t tid;
    int rc;
} kf_run;

/* Parses config_json (printf format; brokers come from m), opens the store
 * and starts the pipeline; asserts. */
void kf_run_start(kf_run *r, const kf_mock *m, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* As kf_run_start, over a store wrapped by tests/faulty_store.h, whose
 * writes the test switches off and on (r->store). */
void kf_run_start_faulty(kf_run *r, const kf_mock *m, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Waits until at least `consumed` messages were consumed and none is in
 * flight (or timeout_ms); returns the stats. */
kd_pipeline_stats kf_run_wait(kf_run *r, uint64_t consumed, int timeout_ms);
/* Stops the pipeline, waits for it, frees it and closes the store. Returns
 * the final stats. */
kd_pipeline_stats kf_run_stop(kf_run *r);

/* kd_recovery_find_since() for one key sent at sent_at_ms, read for from
 * *from (moved on LATER): its result, *out filled when FOUND. */
kd_recover_result kf_find_since(kd_recovery *rc, size_t route, int32_t part,
                                int64_t *from, uint64_t sent_at_ms, const char *key,
                                size_t key_len, kd_recover_found *out);

#endif /* KD_TEST_KAFKA_FIXTURE_H */
