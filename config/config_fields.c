/*
 * kdedup - configuration: the tables, one row per key of a JSON object
 * (type, default, bounds, doc); config_tables.c applies them.
 */
#include "config/config_int.h"

#include <stddef.h>

#define END_FIELDS                                                                       \
    { NULL, F_STRING, 0, NULL, false, 0, 0, NULL, NULL, NULL }
#define OFF(m) offsetof(kd_config, m)
#define ROFF(m) offsetof(kd_route, m)
#define DAY_MS (24LL * 3600 * 1000)

static const char *const missing_key_names[] = {"forward", "drop", "dead_letter", NULL};
static const char *const conflict_names[] = {"skip", "dead_letter", "forward", NULL};
/* A duration whose names are these may say "off" for 0. */
static const char *const off_names[] = {"off", NULL};

static const char *const log_level_names[] = {"debug", "info", "warn", "error", NULL};
static const char *const delivery_names[] = {"idempotent", "transactional", NULL};

const field kd_cfg_route_fields[] = {
    {"name", F_NAME, ROFF(name), NULL, true, 0, 0, NULL, NULL,
     "the route's name in logs, metrics (label route), the admin API and kdedup lookup; "
     "default: its \"from\""},
    {"from", F_TOPIC, ROFF(from), NULL, false, 0, 0, NULL, NULL, "source topic"},
    {"to", F_TOPIC, ROFF(to), NULL, false, 0, 0, NULL, NULL, "downstream topic"},
    {"key_header", F_STRING, ROFF(key_header), NULL, true, 0, 0, NULL, NULL,
     "header holding the idempotency key (given twice with two values: ambiguous, "
     "rejected); shorthand for "
     "\"key\": {\"from\": \"header\", \"name\": ...}; default Idempotency-Key"},
    {"key", F_KEY, 0, NULL, true, 0, 0, NULL, NULL,
     "where the key comes from: header, record_key, json (pointer) or composite (parts)"},
    {"on_key_conflict", F_ENUM, ROFF(on_key_conflict), "skip", false, 0, 0,
     conflict_names, NULL,
     "a duplicate key whose fingerprint differs: skip, dead_letter or forward"},
    {"fingerprint", F_FINGERPRINT, 0, NULL, true, 0, 0, NULL, NULL,
     "true (default), false, or {\"headers\": [...], \"json\": [...]}: SHA-256 of the "
     "value (or of the JSON fields the pointers name) and those headers, stored with "
     "each claim"},
    {"on_missing_key", F_ENUM, ROFF(on_missing_key), "dead_letter", false, 0, 0,
     missing_key_names, NULL, "what to do with a message without a usable key"},
    {"dead_letter_topic", F_TOPIC, ROFF(dead_letter_topic), NULL, true, 0, 0, NULL, NULL,
     "where dead-lettered messages go"},
    {"max_retries", F_INT, ROFF(max_retries), "5", false, -1, 1000000, NULL, NULL,
     "deliveries retried after a definite failure before dead-lettering (the "
     "dead-letter topic gets as many; past them a message is stuck); -1 = forever"},
    {"retry_backoff", F_DURATION, ROFF(retry_backoff_ms), "1s", false, 1, DAY_MS, NULL,
     NULL, "wait before the first retry; doubles per retry, at most 1m"},
    END_FIELDS,
};

static const field kafka_fields[] = {
    {"brokers", F_BROKERS, OFF(brokers), NULL, false, 0, 0, NULL, NULL,
     "bootstrap servers, or \"mock:N\" for an embedded mock cluster"},
    {"group_id", F_STRING, OFF(group_id), NULL, false, 0, 0, NULL, NULL,
     "consumer group"},
    {"consumer", F_PROPS, OFF(consumer), "{}", false, 0, 0, NULL, NULL,
     "librdkafka consumer properties"},
    {"producer", F_PROPS, OFF(producer), "{}", false, 0, 0, NULL, NULL,
     "librdkafka producer properties"},
    END_FIELDS,
};

static const field dedup_fields[] = {
    {"namespace", F_STRING, OFF(ns), "kdedup", false, 0, 0, NULL, NULL,
     "prefix of every stream key"},
    {"ttl", F_DURATION, OFF(ttl_ms), "24h", false, 0, 3650 * DAY_MS, off_names, NULL,
     "how long completed keys suppress duplicates; \"off\" (or 0s) = forever"},
    {"inflight_timeout", F_DURATION, OFF(inflight_timeout_ms), "10m", false, 0,
     3650 * DAY_MS, off_names, NULL,
     "after this an unfinished claim of another run counts as absent (its delivery is "
     "looked up downstream first); \"off\" (or 0s) = never"},
    {"max_key_bytes", F_INT, OFF(max_key_bytes), "255", false, 1, 65535, NULL, NULL,
     "longer keys count as missing"},
    {"max_json_bytes", F_INT, OFF(max_json_bytes), "1048576", false, 1, 64 << 20, NULL,
     NULL, "larger values are not parsed for a JSON key: the key counts as missing"},
    {"handover", F_BOOL, OFF(handover), "true", false, 0, 0, NULL, NULL,
     "learn a newly assigned partition's recent keys from the downstream topic"},
    {"scan_max_records", F_INT, OFF(scan_max_records), "2000000", false, 1, 1000000000,
     NULL, NULL, "downstream records read at most per partition by one scan"},
    {"scan_step", F_DURATION, OFF(scan_step_ms), "200ms", false, 1, 10000, NULL, NULL,
     "reading of downstream per loop turn, all scans together"},
    {"scan_cache_bytes", F_INT, OFF(scan_cache_bytes), "134217728", false, 1 << 20,
     INT64_C(1) << 40, NULL, NULL,
     "memory for the key tables of crash-recovery scans, all scans together"},
    {"signing_key", F_STRING, OFF(signing_key), NULL, true, 0, 0, NULL, NULL,
     "secret signing what kdedup forwards (HMAC-SHA256); only signed records are "
     "learned from downstream"},
    {"previous_signing_key", F_STRING, OFF(previous_signing_key), NULL, true, 0, 0, NULL,
     NULL, "the key before a rotation: its signatures are still accepted"},
    END_FIELDS,
};

static const field store_fields[] = {
    {"path", F_STRING, OFF(store_path), "/var/lib/kdedup", false, 0, 0, NULL, NULL,
     "RocksDB directory"},
    {"sync", F_BOOL, OFF(store_sync), "true", false, 0, 0, NULL, NULL,
     "fsync every claim and receipt batch"},
    {"block_cache_bytes", F_INT, OFF(store_block_cache_bytes), "67108864", false, 1 << 20,
     INT64_C(1) << 40, NULL, NULL,
     "RocksDB block cache, holding index and filter blocks too"},
    {"write_buffer_bytes", F_INT, OFF(store_write_buffer_bytes), "33554432", false,
     1 << 20, INT64_C(1) << 34, NULL, NULL, "RocksDB memtable size"},
    {"max_write_buffers", F_INT, OFF(store_max_write_buffers), "2", false, 2, 16, NULL,
     NULL, "RocksDB memtables at most (one written, the others flushing)"},
    {"key_filter_bytes", F_INT, OFF(store_key_filter_bytes), "16777216", false, 0,
     INT64_C(1) << 34, NULL, NULL,
     "filter of the stored keys that lets new keys skip RocksDB's read (0: none)"},
    END_FIELDS,
};

static const field http_fields[] = {
    {"listen", F_LISTEN, OFF(http_listen), "0.0.0.0:9464", false, 0, 0, NULL, NULL,
     "address of /metrics, /healthz, /readyz"},
    {"probes_listen", F_LISTEN, OFF(http_probes_listen), NULL, true, 0, 0, NULL, NULL,
     "address of /healthz and /readyz alone (for the kubelet), a listener no scraper "
     "or client of /metrics can crowd out"},
    {"health_timeout", F_DURATION, OFF(health_timeout_ms), "60s", false, 1000,
     3600 * 1000, NULL, NULL, "/healthz fails when the main loop stalls this long"},
    {"health_write_timeout", F_DURATION, OFF(health_write_timeout_ms), "120s", false,
     1000, 3600 * 1000, NULL, NULL,
     "/healthz fails when one store write takes this long (the loop turns on "
     "meanwhile, consumption paused)"},
    END_FIELDS,
};

static const field admin_fields[] = {
    {"listen", F_LISTEN, OFF(admin_listen), "127.0.0.1:9465", false, 0, 0, NULL, NULL,
     "address of the admin API (/v1/...); keep it off the Service"},
    {"token", F_STRING, OFF(admin_token), NULL, true, 0, 0, NULL, NULL,
     "bearer token of the admin API (at least 16 bytes); unset: no admin API"},
    END_FIELDS,
};

static const field log_fields[] = {
    {"level", F_ENUM, OFF(log_level), "info", false, 0, 0, log_level_names, NULL,
     "lowest level logged"},
    END_FIELDS,
};

static const field pipeline_fields[] = {
    {"shutdown_grace", F_DURATION, OFF(shutdown_grace_ms), "30s", false, 0, 3600 * 1000,
     NULL, NULL, "time to drain in-flight deliveries on shutdown or revoke"},
    {"batch_max", F_INT, OFF(batch_max), "1000", false, 1, 100000, NULL, NULL,
     "messages claimed per store write"},
    {"max_inflight", F_INT, OFF(max_inflight), "10000", false, 1, 10000000, NULL, NULL,
     "messages consumed and not yet settled; consumption pauses above it"},
    {"max_inflight_bytes", F_INT, OFF(max_inflight_bytes), "67108864", false, 1 << 16,
     INT64_C(1) << 40, NULL, NULL,
     "their keys, values and headers in bytes (each header's name, value and 96 bytes, "
     "twice); consumption pauses above it"},
    {"max_retrying", F_INT, OFF(max_retrying), "1000", false, 1, 10000000, NULL, NULL,
     "messages waiting to be sent again; consumption pauses above it"},
    {"max_headers", F_INT, OFF(max_headers), "1000", false, 1, 1000000, NULL, NULL,
     "headers a message may carry; one with more is dead-lettered (too-many-headers)"},
    {"max_header_bytes", F_INT, OFF(max_header_bytes), "1048576", false, 1, 1 << 30, NULL,
     NULL,
     "bytes of a message's header names and values together; past it the message is "
     "dead-lettered (headers-too-large)"},
    {"delivery", F_ENUM, OFF(delivery), "idempotent", false, 0, 0, delivery_names, NULL,
     "idempotent: an idempotent producer, offsets committed by the consumer; "
     "transactional: each turn's records and the source offsets they settle in one "
     "Kafka transaction, fenced by the group's generation (readers of the downstream "
     "topics set isolation.level=read_committed)"},
    {"transaction_max_age", F_DURATION, OFF(txn_max_age_ms), "100ms", false, 1, 60000,
     NULL, NULL, "transactional: a transaction is committed once this old"},
    {"transactional_id", F_STRING, OFF(transactional_id), NULL, true, 0, 0, NULL, NULL,
     "transactional: the producer's transactional.id, unique to each replica and the "
     "same across its restarts; default kdedup-<group_id>-<group.instance.id>, else "
     "kdedup-<group_id>-<host name>"},
    END_FIELDS,
};

const field kd_cfg_top_fields[] = {
    {"kafka", F_OBJECT, 0, "{}", false, 0, 0, NULL, kafka_fields, NULL},
    {"routes", F_ROUTES, 0, NULL, false, 0, 0, NULL, kd_cfg_route_fields, NULL},
    {"dedup", F_OBJECT, 0, "{}", false, 0, 0, NULL, dedup_fields, NULL},
    {"store", F_OBJECT, 0, "{}", false, 0, 0, NULL, store_fields, NULL},
    {"http", F_OBJECT, 0, "{}", false, 0, 0, NULL, http_fields, NULL},
    {"admin", F_OBJECT, 0, "{}", false, 0, 0, NULL, admin_fields, NULL},
    {"log", F_OBJECT, 0, "{}", false, 0, 0, NULL, log_fields, NULL},
    {"pipeline", F_OBJECT, 0, "{}", false, 0, 0, NULL, pipeline_fields, NULL},
    END_FIELDS,
};

const char *kd_config_log_level_name(kd_log_level level) {
    return level >= KD_LOG_DEBUG && level <= KD_LOG_ERROR ? log_level_names[level] : "?";
}
