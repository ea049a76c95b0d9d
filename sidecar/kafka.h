/*
 * kdedup - librdkafka set-up from the config: client configurations with
 * kdedup's defaults and the file's properties (errors naming the JSON path),
 * the embedded mock cluster, and partition counts.
 */
#ifndef KD_KAFKA_H
#define KD_KAFKA_H

#include "config/config.h"

#include <librdkafka/rdkafka.h>

#include <stdbool.h>
#include <stddef.h>

typedef enum kd_client { KD_CONSUMER, KD_PRODUCER } kd_client;

/* A new client configuration: kdedup's defaults for that client, then the
 * file's kafka.consumer / kafka.producer properties, and bootstrap.servers.
 * Returns it (the caller owns it) or NULL with
 * "<file>: <json path>: <librdkafka's message>" in errstr; for a value that
 * came from the environment or a file, the message names it as written in
 * the file ("${KAFKA_PASSWORD}") instead of quoting librdkafka. */
rd_kafka_conf_t *kd_kafka_conf(const kd_config *cfg, kd_client which, const char *brokers,
                               char *errstr, size_t errstr_size);

/* True when one of librdkafka's newest lines (info and above) that client
 * rk wrote to the log ended with reason (an error callback's text): it was
 * said once. */
bool kd_kafka_logged(const rd_kafka_t *rk, const char *reason);

/* The transactional producer's transactional.id (pipeline.delivery
 * "transactional"): pipeline.transactional_id, else
 * "kdedup-<group_id>-<group.instance.id>", else "kdedup-<group_id>-<host
 * name>" (a pod's name). Returns cfg's string or buf. */
const char *kd_kafka_transactional_id(const kd_config *cfg, char *buf, size_t size);

/* Checks every librdkafka property of cfg, as --check-config does (those
 * an offline config could not resolve are left out). Returns true, or
 * false with every rejected property, one a line, in errstr. */
bool kd_kafka_check(const kd_config *cfg, char *errstr, size_t errstr_size);

/* An embedded mock cluster of nbrokers (librdkafka's test broker) on
 * loopback, for "mock:N". */
typedef struct kd_mock kd_mock;

/* Starts the cluster. Returns it or NULL with errstr set. */
kd_mock *kd_mock_start(int nbrokers, char *errstr, size_t errstr_size);
/* "host:port,..." of its brokers; valid while the mock lives. */
const char *kd_mock_bootstraps(const kd_mock *m);
/* Creates a topic; 0 or librdkafka's error code. */
int kd_mock_topic(kd_mock *m, const char *topic, int partitions);
/* The mock's librdkafka cluster handle, for fault injection. */
struct rd_kafka_mock_cluster_s *kd_mock_cluster(kd_mock *m);
/* Stops the cluster. NULL-safe. */
void kd_mock_stop(kd_mock *m);

/* The number of partitions of topic, from the cluster's metadata, or -1 (the
 * topic does not exist or the cluster did not answer within timeout_ms). */
int kd_kafka_partition_count(rd_kafka_t *rk, const char *topic, int timeout_ms);

#endif /* KD_KAFKA_H */
