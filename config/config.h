/*
 * kdedup - the configuration file: one JSON document (docs/architecture.md), loaded,
 * defaulted and validated in one call.
 *
 * Every error names the file, the JSON path, the value and what was
 * expected, e.g. `kdedup.json: routes[1].to: expected a topic name, got 42`.
 * Unknown keys are errors.
 *
 * String values may use ${VAR} and ${VAR:-default} (the default also when VAR
 * is set but empty, as in the shell), taken from the environment, and
 * ${file:PATH}, the content of a file (a mounted Secret; one trailing newline
 * dropped). $${ writes a literal ${. A value expands to at most
 * KD_CONFIG_MAX_VALUE_BYTES, the whole file to KD_CONFIG_MAX_EXPANDED_BYTES.
 *
 * Errors never show what came from the environment or a file: they show the
 * value as written in the file ("${KAFKA_PASSWORD}"), and kd_config_template()
 * tells other modules which values to treat so. Secrets (the values of keys
 * kd_config_is_secret() names: passwords, tokens, keys, SASL and SSL
 * settings) taken from there are masked in any text by kd_config_redact();
 * broker lists, topics and other values are not. Values of secret keys are
 * never shown in errors, even when written out in the file.
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

/* Where a route's idempotency key comes from. */
typedef enum kd_key_from {
    KD_KEY_FROM_HEADER,     /* a header's value (repeated with two values: ambiguous) */
    KD_KEY_FROM_RECORD_KEY, /* the record's key */
    KD_KEY_FROM_JSON,       /* a string or number in the JSON value (RFC 6901 pointer) */
    KD_KEY_FROM_COMPOSITE   /* several of the above, length-prefixed */
} kd_key_from;

/* One source of key bytes: the whole key, or one part of a composite. */
typedef struct kd_key_part {
    kd_key_from from; /* never KD_KEY_FROM_COMPOSITE */
    char *name;       /* header: its name; else NULL */
    char *pointer; /* json: an RFC 6901 JSON pointer ("" = the whole value); else NULL */
} kd_key_part;

/* At most this many parts in a composite key. */
#define KD_CONFIG_MAX_KEY_PARTS 16

/* What to do with a duplicate whose fingerprint differs from its claim's. */
typedef enum kd_key_conflict {
    KD_CONFLICT_SKIP,        /* not forwarded: counted and logged */
    KD_CONFLICT_DEAD_LETTER, /* to the route's dead_letter_topic */
    KD_CONFLICT_FORWARD      /* forwarded all the same: counted */
} kd_key_conflict;

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
    char *name; /* in logs, metrics, the admin API, lookup: "name", else from */
    char *from; /* source topic */
    char *to;   /* downstream topic */
    /* The key: key_from, and its parts (one, or a composite's in order).
     * key_header is the header's name when key_from is KD_KEY_FROM_HEADER
     * (the shorthand "key_header" or "key": {"from": "header"}), else NULL. */
    char *key_header;
    kd_key_from key_from;
    kd_key_part *key_parts;
    size_t nkey_parts;
    kd_missing_key on_missing_key;
    kd_key_conflict on_key_conflict;
    bool fingerprint;           /* store and compare fingerprints (default true) */
    char **fingerprint_headers; /* headers fingerprinted beside the value */
    size_t nfingerprint_headers;
    /* JSON pointers: when any, these fields of the value are fingerprinted
     * instead of the whole value (a value that is not JSON: whole). */
    char **fingerprint_json;
    size_t nfingerprint_json;
    char *dead_letter_topic; /* NULL when unset */
    int64_t max_retries;     /* produce retries after a failed delivery; -1 = forever */
    uint64_t retry_backoff_ms;
} kd_route;

/* What ${...} took from the environment and from files (config_env.c). */
typedef struct kd_config_env kd_config_env;

/* How forwarded records and source offsets reach Kafka (pipeline.delivery). */
typedef enum kd_delivery {
    KD_DELIVERY_IDEMPOTENT,   /* an idempotent producer; offsets committed by the consumer
                               */
    KD_DELIVERY_TRANSACTIONAL /* records and offsets in one transaction a turn */
} kd_delivery;

typedef struct kd_config {
    char *file;         /* the name errors and logs use */
    kd_config_env *env; /* see kd_config_template(), kd_config_redact() */

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
    int64_t max_json_bytes;     /* larger values are not parsed for a key */
    bool handover;              /* scan a newly assigned partition's history */
    int64_t scan_max_records;   /* per partition and scan (handover, recovery) */
    int64_t scan_cache_bytes;   /* recovery scans' key tables, all together */
    uint64_t scan_step_ms;      /* scans read this long per loop turn */
    char *signing_key;          /* signs what kdedup forwards; NULL: trust downstream */
    char *previous_signing_key; /* also accepted when reading (a rotation); or NULL */

    char *store_path;
    bool store_sync;
    int64_t store_block_cache_bytes;  /* index and filter blocks included */
    int64_t store_write_buffer_bytes; /* one memtable */
    int64_t store_max_write_buffers;
    int64_t store_key_filter_bytes; /* 0: none */

    char *http_listen;                /* "host:port" */
    char *http_probes_listen;         /* "host:port" of the probes alone, or NULL */
    char *admin_listen;               /* "host:port" of the admin API */
    char *admin_token;                /* its bearer token; NULL: no admin API */
    uint64_t health_timeout_ms;       /* /healthz fails when the loop stalls this long */
    uint64_t health_write_timeout_ms; /* ...or one store write takes this long */
    kd_log_level log_level;

    uint64_t shutdown_grace_ms; /* drain budget on SIGTERM and on revoke */
    int64_t batch_max;          /* messages claimed per store write */
    int64_t max_inflight;       /* consumption pauses above these: messages, */
    int64_t max_inflight_bytes; /* their bytes, */
    int64_t max_retrying;       /* and messages waiting for a retry */
    int64_t max_headers;        /* a message with more headers is rejected, */
    int64_t max_header_bytes;   /* or with more bytes of header names and values */
    kd_delivery delivery;       /* pipeline.delivery */
    uint64_t txn_max_age_ms;    /* transactional: a transaction commits at this age */
    char *transactional_id;     /* transactional: the producer's; NULL: derived */
} kd_config;

/* The producer's message.timeout.ms when the config does not set it. In the
 * transactional mode it must not exceed transaction.timeout.ms, which kdedup
 * sets to 15 s unless the config does: a transaction a crashed replica left
 * open holds back read_committed readers of its partitions that long. */
#define KD_CONFIG_DEFAULT_MESSAGE_TIMEOUT_MS 120000
#define KD_CONFIG_DEFAULT_TXN_MESSAGE_TIMEOUT_MS 10000
#define KD_CONFIG_DEFAULT_TXN_TIMEOUT_MS "15000"

/* Bounds of ${...} expansion: one string value (also a ${file:...}'s
 * content), and everything the environment and files add to one config. */
#define KD_CONFIG_MAX_VALUE_BYTES (256 * 1024)
#define KD_CONFIG_MAX_EXPANDED_BYTES (4 * 1024 * 1024)

/* kd_config_redact() masks values of at least this many bytes: shorter ones
 * cannot be told apart from other text (errors never show them either). */
#define KD_CONFIG_REDACT_MIN 4

/* Flags of the *_opts() loaders. KD_CONFIG_OFFLINE: a ${VAR} that is not
 * set (without a default) or a ${file:PATH} that cannot be read is no
 * error: the value keeps its text as written and is not checked (a string;
 * any other value takes its default), and kd_config_unresolved() names it.
 * For linting a config without its environment, and for tools that need
 * only part of it. */
#define KD_CONFIG_OFFLINE 1u

/* Reads, parses and validates the file at path. Returns the config (free it
 * with kd_config_destroy()), or NULL with the message in errstr: every
 * error found, one a line ("file: path: what"), at most 20 and then how
 * many more. */
kd_config *kd_config_load(const char *path, char *errstr, size_t errstr_size);

/* kd_config_load() with flags (KD_CONFIG_OFFLINE). */
kd_config *kd_config_load_opts(const char *path, unsigned flags, char *errstr,
                               size_t errstr_size);

/* kd_config_load(), also handing over the file's bytes when the config is
 * returned: *bytes is malloc()ed (the caller frees it), *len its length.
 * On failure *bytes is NULL. */
kd_config *kd_config_load_bytes(const char *path, char **bytes, size_t *len, char *errstr,
                                size_t errstr_size);

/* kd_config_load_bytes() with flags. */
kd_config *kd_config_load_bytes_opts(const char *path, unsigned flags, char **bytes,
                                     size_t *len, char *errstr, size_t errstr_size);

/* Parses and validates len bytes of JSON; name stands for the file in
 * messages. Returns the config or NULL with the message in errstr. */
kd_config *kd_config_parse(const char *json, size_t len, const char *name, char *errstr,
                           size_t errstr_size);

/* kd_config_parse() with flags. */
kd_config *kd_config_parse_opts(const char *json, size_t len, const char *name,
                                unsigned flags, char *errstr, size_t errstr_size);

/* Offline (KD_CONFIG_OFFLINE): the first JSON path beginning with prefix
 * ("" for any) whose value holds a ${...} that was not there, or NULL. */
const char *kd_config_unresolved(const kd_config *cfg, const char *prefix);

/* Frees the config. NULL-safe. */
void kd_config_destroy(kd_config *cfg);

/* Parses a duration into *ms: one or more of a decimal count and a unit,
 * d h m s ms, each unit at most once and after the larger ones ("250ms",
 * "30s", "1h30m", "7d", "1d12h"). Returns false for anything else ("off",
 * which some keys take, is theirs to read). */
bool kd_config_parse_duration(const char *s, uint64_t *ms);

/* True for a Kafka topic name: 1-249 of [a-zA-Z0-9._-], not "." or "..". */
bool kd_config_valid_topic(const char *s);

/* True for an RFC 6901 JSON pointer: empty, or "/"-separated tokens in
 * which every '~' is followed by '0' or '1'. */
bool kd_config_valid_pointer(const char *s);

/* True when a property name (or a JSON path) looks like a secret, whose
 * value is never shown: passwords, secrets, tokens, keys, credentials and
 * every SASL and SSL setting. */
bool kd_config_is_secret(const char *name);

/* The property's value in props (by name), or NULL. */
const char *kd_config_prop_get(const kd_config_props *props, const char *name);

/* The producer's message timeout in ms: message.timeout.ms (or its alias
 * delivery.timeout.ms, the last one set that parses), else kdedup's
 * default for the delivery mode (KD_CONFIG_DEFAULT_*MESSAGE_TIMEOUT_MS). */
uint64_t kd_config_message_timeout_ms(const kd_config *cfg);

/* The producer's transaction.timeout.ms, or kdedup's default for it
 * (KD_CONFIG_DEFAULT_TXN_TIMEOUT_MS); 0 when the value set does not parse
 * as a positive number (librdkafka refuses it). */
uint64_t kd_config_txn_timeout_ms(const kd_config *cfg);

/* The value at a JSON path (as errors name it, e.g. kafka.brokers or
 * kafka.producer["sasl.password"]) as written in the file, e.g.
 * "${KAFKA_PASSWORD}", when ${...} put anything from the environment or a
 * file into it; NULL for a value written out in the file. Owned by cfg. */
const char *kd_config_template(const kd_config *cfg, const char *path);

/* Copies text into out (at most out_size bytes, always terminated) with each
 * secret the config took from the environment or a file (the value of a key
 * kd_config_is_secret() names), of KD_CONFIG_REDACT_MIN bytes or more,
 * replaced by its ${NAME} or ${file:PATH}. Other values (broker lists,
 * topics, client ids) are left as they are. cfg may be NULL (a plain copy).
 * Returns out. */
char *kd_config_redact(const kd_config *cfg, const char *text, char *out,
                       size_t out_size);

/* kd_config_redact() with the secrets of n configs (none NULL) at once:
 * where values of several start at one place, the longest is masked. */
char *kd_config_redact_any(const kd_config *const *cfgs, size_t n, const char *text,
                           char *out, size_t out_size);

/* The name of a log level ("info"), or "?" */
const char *kd_config_log_level_name(kd_log_level level);

/* What a reload from old to cur would change. */
typedef struct kd_config_diff {
    bool refused;    /* keys only a restart may change differ (named in what) */
    bool routes;     /* routes added, removed, changed or reordered */
    bool log_level;  /* log.level */
    bool batch_max;  /* pipeline.batch_max */
    char what[1024]; /* one line: what changes, or what is refused and why;
                      * names keys and topics, never values */
} kd_config_diff;

/* Compares two configs as written in their files (values from the
 * environment compare as their ${...}): routes by source topic (added,
 * removed, changed: any key of the route), log.level and pipeline.batch_max
 * may change while running; any other key that differs, even to its default
 * written out, is refused. */
void kd_config_diff_of(const kd_config *old, const kd_config *cur, kd_config_diff *out);

/* The routes of cfg as a JSON array, every key of the table with its value
 * in force (defaults too), secrets as "(secret)": the name, the key source
 * written out ("key": {"from": "header", "name": ...}, a json "pointer", a
 * composite's "parts"), the fingerprint (false, or {"value": "whole" |
 * "json fields", "json": [...], "headers": [...]}). malloc()ed text the
 * caller frees, or NULL when out of memory. */
char *kd_config_routes_json(const kd_config *cfg);

#endif /* KD_CONFIG_H */
