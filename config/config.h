/*
 * kdedup - the configuration file: one JSON document (DESIGN.md §4), loaded,
 * defaulted and validated in one call.
 *
 * Every error names the file, the JSON path, the value and what was
 * expected, e.g. `kdedup.json: routes[1].to: expected a topic name, got 42`.
 * Unknown keys are errors. String values may use ${VAR} and ${VAR:-default},
 * taken from the environment. Values of keys that look like secrets
 * (password, secret, ...) are never shown in errors.
 */
#ifndef KD_CONFIG_H
#define KD_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum kd_missing_key {
    KD_MISSING_FORWARD,    /* forward without dedup */
    KD_MISSING_DROP,       /* skip (counted) */
    KD_MISSING_DEAD_LETTER /* produce to the route's dead_letter_topic */
} kd_missing_key;

typedef enum kd_log_level {
    KD_LOG_DEBUG,
    KD_LOG_INFO,
    KD_LOG_WARN,
    KD_LOG_ERROR
} kd_log_level;

/* A librdkafka property passed through, with where it came from. */
typedef struct kd_config_prop {
    char *name;
    char *value;
    char *path; /* e.g. kafka.consumer["session.timeout.ms"] */
} kd_config_prop;

typedef struct kd_config_props {
    kd_config_prop *v;
    size_t n;
} kd_config_props;

typedef struct kd_route {
    char *from;       /* source topic */
    char *to;         /* downstream topic */
    char *key_header; /* idempotency-key header name */
    kd_missing_key on_missing_key;
    char *dead_letter_topic; /* NULL when unset */
    int64_t max_retries;     /* produce retries after a failed delivery; -1 = forever */
    uint64_t retry_backoff_ms;
} kd_route;

typedef struct kd_config {
    char *file; /* the name errors and logs use */

    char *brokers; /* "host:port,..." or "mock:N" */
    char *group_id;
    kd_config_props consumer; /* librdkafka consumer properties */
    kd_config_props producer; /* librdkafka producer properties */

    kd_route *routes;
    size_t nroutes;

    char *ns;        /* dedup.namespace */
    uint64_t ttl_ms; /* 0 = keep completed keys forever */
    uint64_t inflight_timeout_ms;
    int64_t max_key_bytes;
    bool handover;            /* scan a newly assigned partition's history */
    int64_t scan_max_records; /* per partition and scan (handover, recovery) */

    char *store_path;
    bool store_sync;

    char *http_listen;          /* "host:port" */
    uint64_t health_timeout_ms; /* /healthz fails when the loop stalls this long */
    kd_log_level log_level;

    uint64_t shutdown_grace_ms; /* drain budget on SIGTERM and on revoke */
    int64_t batch_max;          /* messages claimed per store write */
} kd_config;

/* The producer's message.timeout.ms when the config does not set it. */
#define KD_CONFIG_DEFAULT_MESSAGE_TIMEOUT_MS 120000

/* Reads, parses and validates the file at path. Returns the config (free it
 * with kd_config_destroy()), or NULL with the message in errstr. */
kd_config *kd_config_load(const char *path, char *errstr, size_t errstr_size);

/* Parses and validates len bytes of JSON; name stands for the file in
 * messages. Returns the config or NULL with the message in errstr. */
kd_config *kd_config_parse(const char *json, size_t len, const char *name, char *errstr,
                           size_t errstr_size);

/* Frees the config. NULL-safe. */
void kd_config_destroy(kd_config *cfg);

/* Parses a duration ("250ms", "30s", "5m", "24h") into *ms. Returns false
 * for anything else. */
bool kd_config_parse_duration(const char *s, uint64_t *ms);

/* True for a Kafka topic name: 1-249 of [a-zA-Z0-9._-], not "." or "..". */
bool kd_config_valid_topic(const char *s);

/* True when a property name looks like a secret, whose value is never shown. */
bool kd_config_is_secret(const char *name);

/* The property's value in props (by name), or NULL. */
const char *kd_config_prop_get(const kd_config_props *props, const char *name);

/* The name of a log level ("info"), or "?" */
const char *kd_config_log_level_name(kd_log_level level);

#endif /* KD_CONFIG_H */
