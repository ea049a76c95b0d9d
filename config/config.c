/*
 * kdedup - configuration: a table of fields per JSON object (type, default,
 * bounds, doc), one generic pass that applies a table to an object, and a
 * second pass for the rules that span keys.
 */
#include "config/config.h"

#include <cjson/cJSON.h>

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#define MAX_FILE_BYTES (1u << 20)
#define MAX_PATH 256
#define SHOW_MAX 60 /* characters of a bad value shown in an error */

typedef enum ftype {
    F_STRING, /* non-empty string */
    F_TOPIC,  /* Kafka topic name */
    F_NAME,   /* a route's name: as a topic name is spelt */
    F_BOOL,
    F_INT,         /* integer within [min, max] */
    F_DURATION,    /* "250ms" | "30s" | "5m" | "24h", within [min, max] ms */
    F_ENUM,        /* one of names[], stored as int */
    F_BROKERS,     /* "host:port,..." or "mock:N" */
    F_LISTEN,      /* "host:port" */
    F_PROPS,       /* object of librdkafka properties */
    F_OBJECT,      /* nested object filling the same struct */
    F_KEY,         /* a route's "key": {"from": ...} (kd_route) */
    F_FINGERPRINT, /* a route's "fingerprint": true, false or {"headers": [...]} */
    F_ROUTES       /* the array of routes */
} ftype;

typedef struct field {
    const char *key;
    ftype type;
    size_t offset;            /* into the struct this table fills */
    const char *def;          /* default as text; NULL: required unless optional */
    bool optional;            /* may be absent, no default (NULL / untouched) */
    int64_t min, max;         /* F_INT, F_DURATION (ms) */
    const char *const *names; /* F_ENUM; F_DURATION: off_names when "off" is 0 */
    const struct field *sub;  /* F_OBJECT, F_ROUTES: the fields of the element */
    const char *doc;
} field;

#define END_FIELDS                                                                       \
    { NULL, F_STRING, 0, NULL, false, 0, 0, NULL, NULL, NULL }
#define OFF(m) offsetof(kd_config, m)
#define ROFF(m) offsetof(kd_route, m)
#define DAY_MS (24LL * 3600 * 1000)

static const char *const missing_key_names[] = {"forward", "drop", "dead_letter", NULL};
static const char *const conflict_names[] = {"skip", "dead_letter", "forward", NULL};
/* A duration whose names are these may say "off" for 0. */
static const char *const off_names[] = {"off", NULL};

#define DEFAULT_KEY_HEADER "Idempotency-Key"
#define MAX_FINGERPRINT_HEADERS 32
static const char *const log_level_names[] = {"debug", "info", "warn", "error", NULL};
static const char *const delivery_names[] = {"idempotent", "transactional", NULL};

static const field route_fields[] = {
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
     "after this an unfinished claim counts as absent; \"off\" (or 0s) = never"},
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

static const field top_fields[] = {
    {"kafka", F_OBJECT, 0, "{}", false, 0, 0, NULL, kafka_fields, NULL},
    {"routes", F_ROUTES, 0, NULL, false, 0, 0, NULL, route_fields, NULL},
    {"dedup", F_OBJECT, 0, "{}", false, 0, 0, NULL, dedup_fields, NULL},
    {"store", F_OBJECT, 0, "{}", false, 0, 0, NULL, store_fields, NULL},
    {"http", F_OBJECT, 0, "{}", false, 0, 0, NULL, http_fields, NULL},
    {"admin", F_OBJECT, 0, "{}", false, 0, 0, NULL, admin_fields, NULL},
    {"log", F_OBJECT, 0, "{}", false, 0, 0, NULL, log_fields, NULL},
    {"pipeline", F_OBJECT, 0, "{}", false, 0, 0, NULL, pipeline_fields, NULL},
    END_FIELDS,
};

/* Properties kdedup sets itself: taking them from the file would break it. */
static const char *const reserved_consumer[] = {"bootstrap.servers", "group.id",
                                                "enable.auto.offset.store",
                                                "metadata.broker.list", NULL};
static const char *const reserved_producer[] = {
    "bootstrap.servers", "metadata.broker.list",
    "transactional.id", /* pipeline.transactional_id */
    NULL};

typedef struct ctx {
    const char *file;
    char *errstr;
    size_t errstr_size;
    kd_config_env *env; /* what ${...} took so far */
    unsigned flags;     /* KD_CONFIG_OFFLINE, ... */
    int errors;         /* found so far: one line each in errstr */
    int dropped;        /* errors past MAX_ERRORS, or that did not fit */
    bool *route_bad;    /* routes whose own keys failed: no cross-key rules */
} ctx;

/* Errors listed at most; the rest are counted. */
#define MAX_ERRORS 20

/*
 * Errors.
 */

/* Adds one error, a line of errstr ("file: path: message"); every error of
 * a config is found in one pass. Returns false. */
__attribute__((format(printf, 3, 4))) static bool fail(ctx *c, const char *path,
                                                       const char *fmt, ...) {
    size_t at = c->errors ? strlen(c->errstr) : 0;
    char line[1024];
    int n = snprintf(line, sizeof(line), "%s: %s%s", c->file, path, *path ? ": " : "");
    va_list ap;

    if (n >= 0 && (size_t)n < sizeof(line)) {
        va_start(ap, fmt);
        vsnprintf(line + n, sizeof(line) - (size_t)n, fmt, ap);
        va_end(ap);
    }
    if (c->errors >= MAX_ERRORS || at + 1 + strlen(line) + 40 >= c->errstr_size) {
        c->dropped += c->errors > 0; /* the first one is always there, cut short */
        if (c->errors == 0) {
            snprintf(c->errstr, c->errstr_size, "%s", line);
            c->errors++;
        }
        return false;
    }
    snprintf(c->errstr + at, c->errstr_size - at, "%s%s", at ? "\n" : "", line);
    c->errors++;
    return false;
}

/* Closes the list of errors: how many more there were. */
static void fail_done(ctx *c) {
    size_t at = strlen(c->errstr);

    if (c->dropped)
        snprintf(c->errstr + at, c->errstr_size - at, "\n%s: (and %d more error%s)",
                 c->file, c->dropped, c->dropped == 1 ? "" : "s");
}

bool kd_config_is_secret(const char *name) {
    static const char *const words[] = {"password", "secret",  "jaas",        "token",
                                        "sasl.",    "ssl.",    "credential",  "apikey",
                                        "api_key",  "private", "signing_key", NULL};
    char lower[128];
    size_t i;

    for (i = 0; name[i] && i < sizeof(lower) - 1; i++)
        lower[i] = (char)tolower((unsigned char)name[i]);
    lower[i] = '\0';
    for (i = 0; words[i]; i++)
        if (strstr(lower, words[i]))
            return true;
    return false;
}

/* The value as it stands in the file, shortened; secrets are not shown. */
static const char *show(const cJSON *v, const char *path, char *buf, size_t size) {
    char *text;

    if (kd_config_is_secret(path))
        return "(a secret, not shown)";
    if (!v)
        return "nothing";
    text = cJSON_PrintUnformatted(v);
    if (!text)
        return "(unprintable)";
    if (strlen(text) > SHOW_MAX)
        snprintf(buf, size, "%.*s...", SHOW_MAX, text);
    else
        snprintf(buf, size, "%s", text);
    cJSON_free(text);
    return buf;
}

static bool fail_value(ctx *c, const char *path, const cJSON *v, const char *expected) {
    char buf[SHOW_MAX + 8];

    return fail(c, path, "expected %s, got %s", expected,
                show(v, path, buf, sizeof(buf)));
}

/* JSON paths: parent.key, parent[i], parent["name"]; cut short (with "...")
 * past MAX_PATH. */
__attribute__((format(printf, 2, 3))) static void path_fmt(char *out, const char *fmt,
                                                           ...) {
    va_list ap;
    int n;

    va_start(ap, fmt);
    n = vsnprintf(out, MAX_PATH, fmt, ap);
    va_end(ap);
    if (n >= MAX_PATH)
        memcpy(out + MAX_PATH - 4, "...", 4);
}

static void path_key(char *out, const char *parent, const char *key) {
    path_fmt(out, "%s%s%s", parent, *parent ? "." : "", key);
}

/*
 * Scalars.
 */

bool kd_config_parse_duration(const char *s, uint64_t *ms) {
    static const struct {
        const char *unit;
        uint64_t ms;
    } units[] = {{"d", 86400000}, {"h", 3600000}, {"ms", 1}, {"m", 60000}, {"s", 1000}};
    static const int rank[] = {0, 1, 4, 2, 3}; /* d h m s ms: each after the larger */
    uint64_t total = 0;
    int last = -1;

    if (!s || !*s)
        return false;
    while (*s) {
        unsigned long long n;
        char *end;
        size_t i = 0;

        if (!isdigit((unsigned char)*s))
            return false;
        errno = 0;
        n = strtoull(s, &end, 10);
        if (errno)
            return false;
        while (i < sizeof(units) / sizeof(units[0]) &&
               strncmp(end, units[i].unit, strlen(units[i].unit)))
            i++;
        if (i == sizeof(units) / sizeof(units[0]) || rank[i] <= last ||
            n > (UINT64_MAX - total) / units[i].ms)
            return false;
        last = rank[i];
        total += n * units[i].ms;
        s = end + strlen(units[i].unit);
    }
    *ms = total;
    return true;
}

bool kd_config_valid_topic(const char *s) {
    size_t n = strlen(s);

    if (n == 0 || n > 249 || !strcmp(s, ".") || !strcmp(s, ".."))
        return false;
    for (size_t i = 0; i < n; i++)
        if (!isalnum((unsigned char)s[i]) && !strchr("._-", s[i]))
            return false;
    return true;
}

/* "host:port" with a port of min_port-65535 and a non-empty host. */
static bool valid_hostport(const char *s, size_t len, long min_port) {
    const char *colon = NULL;
    long port = 0;

    for (size_t i = 0; i < len; i++)
        if (s[i] == ':')
            colon = s + i;
    if (!colon || colon == s || colon + 1 == s + len)
        return false;
    for (const char *p = colon + 1; p < s + len; p++) {
        if (!isdigit((unsigned char)*p) || port > 65535)
            return false;
        port = port * 10 + (*p - '0');
    }
    for (const char *p = s; p < colon; p++)
        if (isspace((unsigned char)*p) || *p == ',' || *p == '/')
            return false;
    return port >= min_port && port <= 65535;
}

static bool valid_brokers(const char *s) {
    if (!strncmp(s, "mock:", 5))
        return strlen(s) == 6 && s[5] >= '1' && s[5] <= '9';
    for (const char *p = s;;) {
        const char *comma = strchr(p, ',');
        size_t len = comma ? (size_t)(comma - p) : strlen(p);

        if (!valid_hostport(p, len, 1))
            return false;
        if (!comma)
            return true;
        p = comma + 1;
    }
}

/*
 * Interpolation: ${VAR}, ${VAR:-default}, ${file:PATH}, $${.
 */

/* Every secret the environment or a file gave (ref is "${NAME}" or
 * "${file:PATH}"), longest first once parsed, and the JSON paths whose
 * values hold anything from there, with their text as written in the file. */
typedef struct secret {
    char *ref;
    char *value;
} secret;

typedef struct origin {
    char *path;
    char *text;
} origin;

struct kd_config_env {
    secret *secrets;
    size_t nsecrets;
    origin *origins;
    size_t norigins;
    size_t expanded; /* bytes the environment and files added, in total */
    /* KD_CONFIG_OFFLINE: the paths whose ${...} was not there (unset, or
     * an unreadable file), kept as written and not checked. */
    char **unresolved;
    size_t nunresolved;
    /* For kd_config_diff(): the file's JSON as written, split into the
     * routes and the rest less what a reload may change. */
    cJSON *routes;
    cJSON *fixed;
};

static void env_destroy(kd_config_env *env) {
    if (!env)
        return;
    for (size_t i = 0; i < env->nsecrets; i++) {
        free(env->secrets[i].ref);
        free(env->secrets[i].value);
    }
    for (size_t i = 0; i < env->norigins; i++) {
        free(env->origins[i].path);
        free(env->origins[i].text);
    }
    for (size_t i = 0; i < env->nunresolved; i++)
        free(env->unresolved[i]);
    free(env->unresolved);
    free(env->secrets);
    free(env->origins);
    cJSON_Delete(env->routes);
    cJSON_Delete(env->fixed);
    free(env);
}

/* Remembers a value taken from ref (once per ref and value). */
static bool env_add_secret(kd_config_env *env, const char *ref, size_t reflen,
                           const char *value, size_t len) {
    secret *grown;

    for (size_t i = 0; i < env->nsecrets; i++)
        if (strlen(env->secrets[i].ref) == reflen &&
            !memcmp(env->secrets[i].ref, ref, reflen) &&
            strlen(env->secrets[i].value) == len &&
            !memcmp(env->secrets[i].value, value, len))
            return true;
    if (!(grown = realloc(env->secrets, (env->nsecrets + 1) * sizeof(*grown))))
        return false;
    env->secrets = grown;
    grown = &env->secrets[env->nsecrets];
    grown->ref = strndup(ref, reflen);
    grown->value = strndup(value, len);
    if (!grown->ref || !grown->value) {
        free(grown->ref);
        free(grown->value);
        return false;
    }
    env->nsecrets++;
    return true;
}

static bool env_add_origin(kd_config_env *env, const char *path, const char *text) {
    origin *grown = realloc(env->origins, (env->norigins + 1) * sizeof(*grown));

    if (!grown)
        return false;
    env->origins = grown;
    grown = &env->origins[env->norigins];
    grown->path = strdup(path);
    grown->text = strdup(text);
    if (!grown->path || !grown->text) {
        free(grown->path);
        free(grown->text);
        return false;
    }
    env->norigins++;
    return true;
}

/* Offline: remembers that path's value holds a ${...} that is not there. */
static bool env_add_unresolved(kd_config_env *env, const char *path) {
    char **grown;

    for (size_t i = 0; i < env->nunresolved; i++)
        if (!strcmp(env->unresolved[i], path))
            return true;
    if (!(grown = realloc(env->unresolved, (env->nunresolved + 1) * sizeof(*grown))))
        return false;
    env->unresolved = grown;
    return (grown[env->nunresolved] = strdup(path)) && ++env->nunresolved;
}

static bool env_is_unresolved(const kd_config_env *env, const char *path) {
    for (size_t i = 0; env && i < env->nunresolved; i++)
        if (!strcmp(env->unresolved[i], path))
            return true;
    return false;
}

static const char *env_template(const kd_config_env *env, const char *path) {
    for (size_t i = 0; env && i < env->norigins; i++)
        if (!strcmp(env->origins[i].path, path))
            return env->origins[i].text;
    return NULL;
}

/* A string value as it grows, bounded by KD_CONFIG_MAX_VALUE_BYTES. */
typedef struct strbuf {
    char *s;
    size_t len, cap;
} strbuf;

static bool strbuf_add(ctx *c, const char *path, strbuf *b, const char *add, size_t n) {
    char *grown;

    if (n > KD_CONFIG_MAX_VALUE_BYTES - b->len)
        return fail(c, path, "expands to more than %d bytes", KD_CONFIG_MAX_VALUE_BYTES);
    if (b->len + n + 1 > b->cap) {
        size_t cap = (b->len + n + 1) * 2;

        if (!(grown = realloc(b->s, cap)))
            return fail(c, path, "out of memory");
        b->s = grown;
        b->cap = cap;
    }
    memcpy(b->s + b->len, add, n);
    b->len += n;
    b->s[b->len] = '\0';
    return true;
}

/* Adds what the environment or a file gave for ref to the value, counted
 * against the file's budget; remembered as never to be shown when path
 * names a secret (a broker list or a topic name is shown as it is). */
static bool add_outside(ctx *c, const char *path, strbuf *b, const char *ref,
                        size_t reflen, const char *value, size_t len) {
    if (len > KD_CONFIG_MAX_EXPANDED_BYTES - c->env->expanded)
        return fail(c, path,
                    "the environment and files add more than %d bytes to the "
                    "config in all",
                    KD_CONFIG_MAX_EXPANDED_BYTES);
    c->env->expanded += len;
    if (kd_config_is_secret(path) && !env_add_secret(c->env, ref, reflen, value, len))
        return fail(c, path, "out of memory");
    return strbuf_add(c, path, b, value, len);
}

/* Offline, a ${...} that is not there: kept as written, and path noted as
 * unresolved (its value is not checked). */
static bool unresolved(ctx *c, const char *path, strbuf *b, const char *ref,
                       size_t reflen) {
    if (!env_add_unresolved(c->env, path))
        return fail(c, path, "out of memory");
    return strbuf_add(c, path, b, ref, reflen);
}

/* ${file:PATH}: the file's content, one trailing newline dropped. Only
 * regular files (a FIFO would block the start), at most
 * KD_CONFIG_MAX_VALUE_BYTES; the content is never shown. */
static bool expand_file(ctx *c, const char *path, strbuf *b, const char *ref,
                        size_t reflen) {
    char fname[MAX_PATH], *data = NULL;
    struct stat st;
    size_t len = 0, plen = reflen - 8; /* "${file:" ... "}" */
    ssize_t n;
    int fd;
    bool ok;

    if (plen == 0 || plen >= sizeof(fname))
        return fail(c, path, "expected ${file:PATH} with a path of 1 to %d bytes",
                    MAX_PATH - 1);
    memcpy(fname, ref + 7, plen);
    fname[plen] = '\0';
    if ((fd = open(fname, O_RDONLY | O_NONBLOCK | O_CLOEXEC)) < 0 &&
        (c->flags & KD_CONFIG_OFFLINE))
        return unresolved(c, path, b, ref, reflen);
    if (fd < 0)
        return fail(c, path, "cannot read ${file:%s}: %s", fname, strerror(errno));
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return fail(c, path, "cannot read ${file:%s}: not a regular file", fname);
    }
    if (!(data = malloc(KD_CONFIG_MAX_VALUE_BYTES + 1))) {
        close(fd);
        return fail(c, path, "out of memory");
    }
    while (len <= KD_CONFIG_MAX_VALUE_BYTES &&
           (n = read(fd, data + len, KD_CONFIG_MAX_VALUE_BYTES + 1 - len)) != 0) {
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            ok = fail(c, path, "cannot read ${file:%s}: %s", fname, strerror(errno));
            goto done;
        }
        len += (size_t)n;
    }
    if (len > KD_CONFIG_MAX_VALUE_BYTES) {
        ok = fail(c, path, "${file:%s} is larger than %d bytes", fname,
                  KD_CONFIG_MAX_VALUE_BYTES);
        goto done;
    }
    if (memchr(data, '\0', len)) {
        ok = fail(c, path, "${file:%s} holds a NUL byte", fname);
        goto done;
    }
    if (len && data[len - 1] == '\n')
        len -= len > 1 && data[len - 2] == '\r' ? 2 : 1;
    ok = add_outside(c, path, b, ref, reflen, data, len);
done:
    /* The content is a secret: leave no copy in freed memory. */
    for (size_t i = 0; i < len; i++)
        ((volatile char *)data)[i] = 0;
    free(data);
    close(fd);
    return ok;
}

/* ${NAME} or ${NAME:-default}, ref spanning the whole ${...}. */
static bool expand_var(ctx *c, const char *path, strbuf *b, const char *ref,
                       size_t reflen) {
    size_t namelen = strcspn(ref + 2, ":}");
    const char *val, *def = NULL;
    char name[128], shown_as[sizeof(name) + 3];

    if (namelen == 0 || namelen >= sizeof(name) ||
        (ref[2 + namelen] == ':' && ref[3 + namelen] != '-'))
        return fail(c, path,
                    "expected ${NAME}, ${NAME:-default} or ${file:PATH} in a string "
                    "value");
    memcpy(name, ref + 2, namelen);
    name[namelen] = '\0';
    for (size_t i = 0; i < namelen; i++)
        if (!isalnum((unsigned char)name[i]) && name[i] != '_')
            return fail(c, path,
                        "expected an environment variable name in ${...}, got \"%s\"",
                        name);
    if (ref[2 + namelen] == ':')
        def = ref + 4 + namelen;
    val = getenv(name);
    if (val && *val) { /* shown as ${NAME}, with or without a default */
        snprintf(shown_as, sizeof(shown_as), "${%s}", name);
        return add_outside(c, path, b, shown_as, strlen(shown_as), val, strlen(val));
    }
    if (def) /* unset or empty: the default, as in the shell */
        return strbuf_add(c, path, b, def, (size_t)(ref + reflen - 1 - def));
    if (val)
        return true; /* set and empty */
    if (c->flags & KD_CONFIG_OFFLINE)
        return unresolved(c, path, b, ref, reflen);
    return fail(c, path, "environment variable %s is not set (and no ${%s:-default})",
                name, name);
}

/* The string value in with every ${...} expanded, malloc()ed; NULL with the
 * error set. A value that took anything from the environment or a file is
 * remembered under path, with its text as written. */
static char *interpolate(ctx *c, const char *path, const char *in) {
    size_t before = c->env->expanded;
    strbuf b = {NULL, 0, 0};
    const char *p = in, *close;

    if (!strbuf_add(c, path, &b, "", 0))
        return NULL;
    while (*p) {
        size_t lit = 0;
        bool ok;

        while (p[lit] && !(p[lit] == '$' && p[lit + 1] == '{') &&
               !(p[lit] == '$' && p[lit + 1] == '$' && p[lit + 2] == '{'))
            lit++;
        if (!strbuf_add(c, path, &b, p, lit))
            goto fail;
        p += lit;
        if (!*p)
            break;
        if (p[1] == '$') { /* $${: a literal ${ */
            if (!strbuf_add(c, path, &b, "${", 2))
                goto fail;
            p += 3;
            continue;
        }
        if (!(close = strchr(p + 2, '}'))) {
            fail(c, path, "unterminated ${ in a string value");
            goto fail;
        }
        if (!strncmp(p + 2, "file:", 5))
            ok = expand_file(c, path, &b, p, (size_t)(close + 1 - p));
        else
            ok = expand_var(c, path, &b, p, (size_t)(close + 1 - p));
        if (!ok)
            goto fail;
        p = close + 1;
    }
    if (c->env->expanded != before && !env_add_origin(c->env, path, in)) {
        fail(c, path, "out of memory");
        goto fail;
    }
    return b.s;
fail:
    free(b.s);
    return NULL;
}

/* The text of a string value, interpolated, or the text of a number or bool
 * (so "linger.ms": 5 and "sync": "${SYNC:-true}" both work). NULL with the
 * error set when v is neither; kind names what was expected. */
static char *scalar_text(ctx *c, const char *path, const cJSON *v, const char *kind) {
    char buf[64];

    if (cJSON_IsString(v))
        return interpolate(c, path, v->valuestring);
    if (cJSON_IsBool(v))
        return strdup(cJSON_IsTrue(v) ? "true" : "false");
    if (cJSON_IsNumber(v)) {
        /* In range before converting: a double beyond long long (1e300) is
         * undefined behaviour to convert. 2^63 is exact as a double. */
        if (!(v->valuedouble >= -9223372036854775808.0 &&
              v->valuedouble < 9223372036854775808.0) ||
            v->valuedouble != (double)(long long)v->valuedouble) {
            fail_value(c, path, v, kind);
            return NULL;
        }
        snprintf(buf, sizeof(buf), "%lld", (long long)v->valuedouble);
        return strdup(buf);
    }
    fail_value(c, path, v, kind);
    return NULL;
}

/*
 * Tables.
 */

static bool parse_object(ctx *c, const cJSON *obj, const field *fields, void *base,
                         const char *path);

static bool parse_props(ctx *c, const cJSON *obj, kd_config_props *props,
                        const char *path) {
    size_t n = 0;

    if (!cJSON_IsObject(obj))
        return fail_value(c, path, obj, "an object of librdkafka properties");
    for (const cJSON *e = obj->child; e; e = e->next)
        n++;
    props->v = calloc(n + 1, sizeof(*props->v)); /* + room for a half-made one */
    if (!props->v)
        return fail(c, path, "out of memory");
    bool ok = true;

    for (const cJSON *e = obj->child; e; e = e->next) {
        kd_config_prop *p = &props->v[props->n];
        char epath[MAX_PATH];

        path_fmt(epath, "%s[\"%s\"]", path, e->string);
        if (!*e->string) {
            ok = fail(c, epath, "expected a property name");
            continue;
        }
        if (kd_config_prop_get(props, e->string)) {
            ok = fail(c, epath, "duplicate key");
            continue;
        }
        if (!(p->value = scalar_text(c, epath, e, "a string, number or boolean"))) {
            ok = false; /* fail() was called */
            continue;
        }
        p->name = strdup(e->string);
        p->path = strdup(epath);
        props->n++;
        if (!p->name || !p->path)
            return fail(c, epath, "out of memory");
    }
    return ok;
}

/*
 * A route's key and fingerprint: shapes a table cannot say.
 */

bool kd_config_valid_pointer(const char *s) {
    if (*s && *s != '/')
        return false;
    for (; *s; s++)
        if (*s == '~' && s[1] != '0' && s[1] != '1')
            return false;
    return true;
}

static const char *const key_from_names[] = {"header", "record_key", "json", "composite",
                                             NULL};

/* Fails on any key of obj not in allowed (a NULL-terminated list). */
static bool only_keys(ctx *c, const cJSON *obj, const char *const *allowed,
                      const char *path, const char *why) {
    for (const cJSON *e = obj->child; e; e = e->next) {
        char epath[MAX_PATH];
        size_t i = 0;

        while (allowed[i] && strcmp(allowed[i], e->string))
            i++;
        path_key(epath, path, e->string);
        if (!allowed[i])
            return fail(c, epath, "unknown key (%s)", why);
        for (const cJSON *o = obj->child; o != e; o = o->next)
            if (!strcmp(o->string, e->string))
                return fail(c, epath, "duplicate key");
    }
    return true;
}

/* A required string member of obj, interpolated; NULL with the error set. */
static char *member_text(ctx *c, const cJSON *obj, const char *name, const char *path,
                         const char *expected, bool allow_empty) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, name);
    char mpath[MAX_PATH], *text;

    path_key(mpath, path, name);
    if (!v) {
        fail(c, mpath, "missing (%s)", expected);
        return NULL;
    }
    if (!cJSON_IsString(v)) {
        fail_value(c, mpath, v, expected);
        return NULL;
    }
    if (!(text = scalar_text(c, mpath, v, expected)))
        return NULL;
    if (!*text && !allow_empty) {
        free(text);
        fail_value(c, mpath, v, expected);
        return NULL;
    }
    return text;
}

/* One key source object into *part; composite only when top (the key
 * itself), with its parts appended to r. */
static bool parse_key_part(ctx *c, const cJSON *v, kd_route *r, kd_key_part *part,
                           bool top, const char *path) {
    static const char *const header_keys[] = {"from", "name", NULL};
    static const char *const record_keys[] = {"from", NULL};
    static const char *const json_keys[] = {"from", "pointer", NULL};
    static const char *const composite_keys[] = {"from", "parts", NULL};
    static const char *const *const keys_of[] = {header_keys, record_keys, json_keys,
                                                 composite_keys};
    static const char *const why_of[] = {"a header key has \"from\" and \"name\"",
                                         "a record_key key has only \"from\"",
                                         "a json key has \"from\" and \"pointer\"",
                                         "a composite key has \"from\" and \"parts\""};
    const char *expected =
        top ? "one of \"header\", \"record_key\", \"json\", \"composite\""
            : "one of \"header\", \"record_key\", \"json\" (a part "
              "of a composite key cannot be composite)";
    const cJSON *from;
    char fpath[MAX_PATH];
    int kind = -1;

    if (!cJSON_IsObject(v))
        return fail_value(c, path, v,
                          "an object like {\"from\": \"header\", \"name\": \"...\"}");
    path_key(fpath, path, "from");
    if (!(from = cJSON_GetObjectItemCaseSensitive(v, "from")))
        return fail(c, fpath, "missing (%s)", expected);
    for (int i = 0; cJSON_IsString(from) && key_from_names[i]; i++)
        if (!strcmp(from->valuestring, key_from_names[i]))
            kind = i;
    if (kind < 0 || (!top && kind == KD_KEY_FROM_COMPOSITE))
        return fail_value(c, fpath, from, expected);
    if (!only_keys(c, v, keys_of[kind], path, why_of[kind]))
        return false;
    part->from = (kd_key_from)kind;
    switch (kind) {
    case KD_KEY_FROM_HEADER:
        part->name = member_text(c, v, "name", path, "a header name", false);
        return part->name != NULL;
    case KD_KEY_FROM_JSON:
        path_key(fpath, path, "pointer");
        part->pointer = member_text(c, v, "pointer", path,
                                    "an RFC 6901 JSON pointer like \"/order/id\"", true);
        if (!part->pointer)
            return false;
        if (!kd_config_valid_pointer(part->pointer))
            return fail(c, fpath,
                        "expected an RFC 6901 JSON pointer (\"\" or \"/a/b\", with "
                        "\"~\" only as \"~0\" or \"~1\"), got \"%s\"",
                        part->pointer);
        return true;
    case KD_KEY_FROM_COMPOSITE:
        break;
    default:
        return true;
    }
    const cJSON *parts = cJSON_GetObjectItemCaseSensitive(v, "parts");
    int n = cJSON_GetArraySize(parts);

    path_key(fpath, path, "parts");
    if (!parts)
        return fail(c, fpath, "missing (a non-empty array of key parts)");
    if (!cJSON_IsArray(parts) || n == 0 || n > KD_CONFIG_MAX_KEY_PARTS) {
        char expected_parts[80];

        snprintf(expected_parts, sizeof(expected_parts), "an array of 1 to %d key parts",
                 KD_CONFIG_MAX_KEY_PARTS);
        return fail_value(c, fpath, parts, expected_parts);
    }
    free(r->key_parts); /* the placeholder of the composite itself */
    r->nkey_parts = 0;
    if (!(r->key_parts = calloc((size_t)n, sizeof(*r->key_parts))))
        return fail(c, fpath, "out of memory");
    for (const cJSON *e = parts->child; e; e = e->next) {
        char epath[MAX_PATH];

        path_fmt(epath, "%s[%zu]", fpath, r->nkey_parts);
        if (!parse_key_part(c, e, r, &r->key_parts[r->nkey_parts++], false, epath))
            return false;
    }
    r->key_from = KD_KEY_FROM_COMPOSITE;
    return true;
}

static bool parse_key(ctx *c, const cJSON *v, kd_route *r, const char *path) {
    if (!(r->key_parts = calloc(1, sizeof(*r->key_parts))))
        return fail(c, path, "out of memory");
    r->nkey_parts = 1;
    if (!parse_key_part(c, v, r, &r->key_parts[0], true, path))
        return false;
    if (r->key_from != KD_KEY_FROM_COMPOSITE)
        r->key_from = r->key_parts[0].from;
    return true;
}

/* An optional array member of obj of at most MAX_FINGERPRINT_HEADERS
 * non-empty, distinct strings into *out / *n; pointers: each must be an
 * RFC 6901 JSON pointer. what names one element for messages. */
static bool parse_names(ctx *c, const cJSON *obj, const char *member, const char *path,
                        bool pointers, const char *what, const char *whats, char ***out,
                        size_t *n) {
    const cJSON *arr = cJSON_GetObjectItemCaseSensitive(obj, member);
    char apath[MAX_PATH];
    int count;

    path_key(apath, path, member);
    if (!arr)
        return true;
    count = cJSON_GetArraySize(arr);
    if (!cJSON_IsArray(arr) || count > MAX_FINGERPRINT_HEADERS || (pointers && !count)) {
        char expected[120];

        snprintf(expected, sizeof(expected), "an array of %s%d %s",
                 pointers ? "1 to " : "at most ", MAX_FINGERPRINT_HEADERS, whats);
        return fail_value(c, apath, arr, expected);
    }
    if (count && !(*out = calloc((size_t)count, sizeof(char *))))
        return fail(c, apath, "out of memory");
    for (const cJSON *e = arr->child; e; e = e->next) {
        char epath[MAX_PATH], *text;

        path_fmt(epath, "%s[%zu]", apath, *n);
        if (!cJSON_IsString(e) || (!pointers && !*e->valuestring))
            return fail_value(c, epath, e, what);
        if (!(text = scalar_text(c, epath, e, what)))
            return false;
        (*out)[(*n)++] = text;
        if (pointers && !kd_config_valid_pointer(text))
            return fail(c, epath,
                        "expected an RFC 6901 JSON pointer (\"\" or \"/a/b\", with "
                        "\"~\" only as \"~0\" or \"~1\"), got \"%s\"",
                        text);
        for (size_t j = 0; j + 1 < *n; j++)
            if (!strcmp((*out)[j], text))
                return fail(c, epath, "\"%s\" is listed twice", text);
    }
    return true;
}

/* "fingerprint": true | false | {"headers": ["Name", ...], "json": ["/ptr", ...]}. */
static bool parse_fingerprint(ctx *c, const cJSON *v, kd_route *r, const char *path) {
    static const char *const fp_keys[] = {"headers", "json", NULL};

    if (cJSON_IsBool(v)) {
        r->fingerprint = cJSON_IsTrue(v);
        return true;
    }
    if (!cJSON_IsObject(v))
        return fail_value(c, path, v,
                          "true, false or {\"headers\": [\"Name\", ...], \"json\": "
                          "[\"/pointer\", ...]}");
    if (!only_keys(c, v, fp_keys, path, "expected \"headers\" or \"json\""))
        return false;
    r->fingerprint = true;
    return parse_names(c, v, "headers", path, false, "a header name", "header names",
                       &r->fingerprint_headers, &r->nfingerprint_headers) &&
           parse_names(c, v, "json", path, true, "a JSON pointer", "JSON pointers",
                       &r->fingerprint_json, &r->nfingerprint_json);
}

/* After a route's table: the key's default and shorthand, the
 * fingerprint's default. */
static bool finish_route(ctx *c, const cJSON *obj, kd_route *r, const char *path) {
    char kpath[MAX_PATH];

    if (!r->name && !(r->name = strdup(r->from)))
        return fail(c, path, "out of memory");
    path_key(kpath, path, "key_header");
    if (r->key_header && r->key_parts)
        return fail(c, kpath,
                    "give either \"key_header\" (a shorthand) or \"key\", not both");
    if (!cJSON_GetObjectItemCaseSensitive(obj, "fingerprint"))
        r->fingerprint = true;
    for (size_t i = 0; i < r->nkey_parts; i++)
        if (r->key_parts[i].name && !strncasecmp(r->key_parts[i].name, "kdedup-", 7))
            return fail(c, path,
                        "key header \"%s\": headers named kdedup-* are kdedup's own "
                        "(stripped from what it forwards)",
                        r->key_parts[i].name);
    if (r->key_header && !strncasecmp(r->key_header, "kdedup-", 7))
        return fail(c, kpath,
                    "\"%s\": headers named kdedup-* are kdedup's own (stripped from "
                    "what it forwards)",
                    r->key_header);
    if (r->key_parts) {
        if (r->key_from == KD_KEY_FROM_HEADER &&
            !(r->key_header = strdup(r->key_parts[0].name)))
            return fail(c, path, "out of memory");
        return true;
    }
    if (!r->key_header && !(r->key_header = strdup(DEFAULT_KEY_HEADER)))
        return fail(c, path, "out of memory");
    if (!(r->key_parts = calloc(1, sizeof(*r->key_parts))) ||
        !(r->key_parts[0].name = strdup(r->key_header)))
        return fail(c, path, "out of memory");
    r->nkey_parts = 1;
    r->key_from = KD_KEY_FROM_HEADER;
    return true;
}

static bool parse_routes(ctx *c, const cJSON *arr, kd_config *cfg, const field *f,
                         const char *path) {
    size_t n = (size_t)cJSON_GetArraySize(arr);
    size_t i = 0;

    if (!cJSON_IsArray(arr) || n == 0)
        return fail_value(c, path, arr, "a non-empty array of routes");
    bool ok = true;

    if (!(cfg->routes = calloc(n, sizeof(*cfg->routes))) ||
        !(c->route_bad = calloc(n, sizeof(*c->route_bad))))
        return fail(c, path, "out of memory");
    for (const cJSON *e = arr->child; e; e = e->next, i++) {
        char epath[MAX_PATH];

        path_fmt(epath, "%s[%zu]", path, i);
        cfg->nroutes = i + 1;
        c->route_bad[i] = !parse_object(c, e, f->sub, &cfg->routes[i], epath) ||
                          !finish_route(c, e, &cfg->routes[i], epath);
        ok = ok && !c->route_bad[i];
    }
    return ok;
}

/* What a field's value must be, for messages. */
static void expected_text(const field *f, char *buf, size_t size) {
    switch (f->type) {
    case F_STRING:
        snprintf(buf, size, "a non-empty string");
        break;
    case F_TOPIC:
        snprintf(buf, size, "a topic name (1-249 of a-z A-Z 0-9 . _ -)");
        break;
    case F_NAME:
        snprintf(buf, size, "a route name (1-249 of a-z A-Z 0-9 . _ -)");
        break;
    case F_BROKERS:
        snprintf(buf, size, "\"host:port,host:port...\" or \"mock:N\" (N 1-9)");
        break;
    case F_LISTEN:
        snprintf(buf, size, "\"host:port\"");
        break;
    case F_BOOL:
        snprintf(buf, size, "true or false");
        break;
    case F_INT:
        snprintf(buf, size, "an integer from %lld to %lld", (long long)f->min,
                 (long long)f->max);
        break;
    case F_DURATION:
        if (f->min == 0)
            snprintf(buf, size,
                     "a duration like \"250ms\", \"30s\", \"1h30m\" or \"7d\"%s",
                     f->names ? ", or \"off\"" : "");
        else
            snprintf(buf, size, "a duration from %lldms to %lldms", (long long)f->min,
                     (long long)f->max);
        break;
    case F_ENUM:
        snprintf(buf, size, "one of");
        for (int i = 0; f->names[i]; i++)
            snprintf(buf + strlen(buf), size - strlen(buf), "%s \"%s\"", i ? "," : "",
                     f->names[i]);
        break;
    default:
        snprintf(buf, size, "a value");
    }
}

/* Parses one scalar field from its text into base. */
static bool parse_scalar(ctx *c, const field *f, const cJSON *v, const char *text,
                         void *base, const char *path) {
    char *at = (char *)base + f->offset, expected[160], *end;
    long long n;
    uint64_t ms;
    bool ok;

    expected_text(f, expected, sizeof(expected));
    switch (f->type) {
    case F_BOOL:
        if (strcmp(text, "true") && strcmp(text, "false"))
            return fail_value(c, path, v, expected);
        *(bool *)at = !strcmp(text, "true");
        return true;
    case F_INT:
        errno = 0;
        n = strtoll(text, &end, 10);
        if (errno || end == text || *end || n < f->min || n > f->max)
            return fail_value(c, path, v, expected);
        *(int64_t *)at = n;
        return true;
    case F_DURATION:
        if (f->names && !strcmp(text, "off"))
            ms = 0; /* where 0 turns it off, it may say so */
        else if (!kd_config_parse_duration(text, &ms) || ms > (uint64_t)f->max ||
                 ms < (uint64_t)f->min)
            return fail_value(c, path, v, expected);
        *(uint64_t *)at = ms;
        return true;
    case F_ENUM:
        for (int i = 0; f->names[i]; i++)
            if (!strcmp(text, f->names[i])) {
                *(int *)at = i;
                return true;
            }
        return fail_value(c, path, v, expected);
    case F_STRING:
        ok = *text != '\0';
        break;
    case F_TOPIC:
    case F_NAME:
        ok = kd_config_valid_topic(text);
        break;
    case F_BROKERS:
        ok = valid_brokers(text);
        break;
    case F_LISTEN:
        ok = valid_hostport(text, strlen(text), 0); /* 0: any free port */
        break;
    default:
        return fail(c, path, "internal error: not a scalar");
    }
    if (!ok)
        return fail_value(c, path, v, expected);
    free(*(char **)at);
    if (!(*(char **)at = strdup(text)))
        return fail(c, path, "out of memory");
    return true;
}

/* Offline, a value holding a ${...} that is not there: a string keeps its
 * text as written, anything else its default (or zero). */
static bool parse_unchecked(ctx *c, const field *f, const char *text, void *base,
                            const char *path) {
    char **at = (char **)((char *)base + f->offset);
    cJSON *def;
    bool ok;

    switch (f->type) {
    case F_STRING:
    case F_TOPIC:
    case F_NAME:
    case F_BROKERS:
    case F_LISTEN:
        free(*at);
        return (*at = strdup(text)) || fail(c, path, "out of memory");
    default:
        if (!f->def)
            return true;
        if (!(def = cJSON_CreateString(f->def)))
            return fail(c, path, "out of memory");
        ok = parse_scalar(c, f, def, f->def, base, path);
        cJSON_Delete(def);
        return ok;
    }
}

/* Strings, topics, addresses and names come as JSON strings; booleans and
 * integers may also come as strings (for ${VAR} interpolation). */
static bool takes_non_string(const field *f) {
    return f->type == F_BOOL || f->type == F_INT;
}

/* Parses field f from v (the file's value, or its default when NULL). */
static bool parse_field(ctx *c, const field *f, const cJSON *v, void *base,
                        const char *path) {
    cJSON *def = NULL;
    char *text, expected[160];
    bool ok;

    if (!v && (f->type == F_OBJECT || f->type == F_PROPS)) {
        def = cJSON_CreateObject();
        v = def;
    } else if (!v) {
        def = cJSON_CreateString(f->def);
        v = def;
    }
    if (!v)
        return fail(c, path, "out of memory");
    switch (f->type) {
    case F_OBJECT:
        ok = parse_object(c, v, f->sub, base, path);
        break;
    case F_PROPS:
        ok = parse_props(c, v, (kd_config_props *)((char *)base + f->offset), path);
        break;
    case F_ROUTES:
        ok = parse_routes(c, v, base, f, path);
        break;
    case F_KEY:
        ok = parse_key(c, v, base, path);
        break;
    case F_FINGERPRINT:
        ok = parse_fingerprint(c, v, base, path);
        break;
    default:
        expected_text(f, expected, sizeof(expected));
        if (!cJSON_IsString(v) && !takes_non_string(f)) {
            ok = fail_value(c, path, v, expected);
            break;
        }
        text = scalar_text(c, path, v, expected);
        if (text && env_is_unresolved(c->env, path))
            ok = parse_unchecked(c, f, text, base, path);
        else
            ok = text && parse_scalar(c, f, v, text, base, path);
        free(text);
    }
    cJSON_Delete(def);
    return ok;
}

/* Applies fields to obj; every error is recorded, and the keys after it
 * are parsed all the same. */
static bool parse_object(ctx *c, const cJSON *obj, const field *fields, void *base,
                         const char *path) {
    bool ok = true;

    if (!cJSON_IsObject(obj))
        return fail_value(c, path, obj, "an object");
    for (const cJSON *e = obj->child; e; e = e->next) {
        char known[256] = "", epath[MAX_PATH];
        const field *f = fields;

        for (; f->key && strcmp(f->key, e->string); f++)
            snprintf(known + strlen(known), sizeof(known) - strlen(known), "%s%s",
                     f == fields ? "" : ", ", f->key);
        path_key(epath, path, e->string);
        if (!f->key) {
            ok = fail(c, epath, "unknown key (expected one of: %s)", known);
            continue;
        }
        for (const cJSON *o = obj->child; o != e; o = o->next)
            if (!strcmp(o->string, e->string)) {
                ok = fail(c, epath, "duplicate key");
                break;
            }
    }
    for (const field *f = fields; f->key; f++) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, f->key);
        char fpath[MAX_PATH];

        path_key(fpath, path, f->key);
        if (!v && !f->def && f->type != F_OBJECT && f->type != F_PROPS) {
            if (!f->optional)
                ok = fail(c, fpath, "missing (%s)", f->doc ? f->doc : "required");
            continue;
        }
        if (!parse_field(c, f, v, base, fpath))
            ok = false;
    }
    return ok;
}

/*
 * Rules that span keys.
 */

static bool check_reserved(ctx *c, const kd_config_props *props,
                           const char *const *reserved, const char *why) {
    for (size_t i = 0; i < props->n; i++)
        for (size_t r = 0; reserved[r]; r++)
            if (!strcmp(props->v[i].name, reserved[r]))
                return fail(c, props->v[i].path, "set by kdedup itself (%s)", why);
    return true;
}

/* A value for a message: as written in the file when ${...} took any of it
 * from the environment or a file, so such values are never shown. */
static const char *shown(const ctx *c, const char *path, const char *value) {
    const char *t = env_template(c->env, path);

    return t ? t : value;
}

static bool check_route(ctx *c, const kd_config *cfg, size_t i) {
    const kd_route *r = &cfg->routes[i];
    char path[MAX_PATH], from[MAX_PATH], to[MAX_PATH];

    path_fmt(path, "routes[%zu]", i);
    path_fmt(from, "routes[%zu].from", i);
    path_fmt(to, "routes[%zu].to", i);
    if (!strcmp(r->from, r->to) && !strcmp(shown(c, from, r->from), shown(c, to, r->to)))
        return fail(c, path,
                    "\"from\" and \"to\" are both \"%s\": a route may not "
                    "feed its own source",
                    shown(c, from, r->from));
    if (!strcmp(r->from, r->to))
        return fail(c, path,
                    "\"from\" (\"%s\") and \"to\" (\"%s\") are one topic: a route may "
                    "not feed its own source",
                    shown(c, from, r->from), shown(c, to, r->to));
    if (r->dead_letter_topic && !strcmp(r->dead_letter_topic, r->from))
        return fail(c, path, "\"dead_letter_topic\" is the route's own source \"%s\"",
                    shown(c, from, r->from));
    if (r->dead_letter_topic && !strcmp(r->dead_letter_topic, r->to))
        return fail(
            c, path,
            "\"dead_letter_topic\" is the route's own \"to\" \"%s\": dead letters "
            "would be read back as forwarded records (give them a topic of "
            "their own)",
            shown(c, to, r->to));
    if (r->on_missing_key == KD_MISSING_DEAD_LETTER && !r->dead_letter_topic)
        return fail(c, path,
                    "\"on_missing_key\": \"dead_letter\" needs a "
                    "\"dead_letter_topic\" (or set \"forward\" or \"drop\")");
    if (r->on_key_conflict == KD_CONFLICT_DEAD_LETTER && !r->dead_letter_topic)
        return fail(c, path,
                    "\"on_key_conflict\": \"dead_letter\" needs a "
                    "\"dead_letter_topic\" (or set \"skip\" or \"forward\")");
    for (size_t j = 0; j < i; j++)
        if (!strcmp(cfg->routes[j].from, r->from))
            return fail(c, path, "\"from\": \"%s\" is already the source of routes[%zu]",
                        shown(c, from, r->from), j);
    for (size_t j = 0; j < i; j++)
        if (!strcmp(cfg->routes[j].name, r->name))
            return fail(c, path,
                        "the name \"%s\" is already routes[%zu]'s (a route's name is its "
                        "\"name\", or else its \"from\")",
                        r->name, j);
    return true;
}

static bool check_routes(ctx *c, const kd_config *cfg) {
    bool ok = true;

    for (size_t i = 0; i < cfg->nroutes; i++)
        if (!c->route_bad || !c->route_bad[i])
            ok = check_route(c, cfg, i) && ok;
    return ok;
}

/* dedup.inflight_timeout against one delivery timeout of the producer;
 * values from the environment or a file are shown as written. */
static bool timeout_ok(ctx *c, const kd_config *cfg, const char *name,
                       long long timeout) {
    char path[MAX_PATH], have[64], got[64];
    const char *vt, *it = env_template(c->env, "dedup.inflight_timeout");

    if (timeout != 0 && (long long)cfg->inflight_timeout_ms > timeout)
        return true;
    path_fmt(path, "kafka.producer[\"%s\"]", name);
    vt = env_template(c->env, path);
    snprintf(have, sizeof(have), "%lldms%s", timeout, timeout == 0 ? ", i.e. never" : "");
    snprintf(got, sizeof(got), "%llums", (unsigned long long)cfg->inflight_timeout_ms);
    return fail(c, "dedup.inflight_timeout",
                "expected a duration longer than the producer's %s (%s), got %s", name,
                vt ? vt : have, it ? it : got);
}

uint64_t kd_config_message_timeout_ms(const kd_config *cfg) {
    static const char *const names[] = {"message.timeout.ms", "delivery.timeout.ms"};
    uint64_t ms = cfg->delivery == KD_DELIVERY_TRANSACTIONAL
                      ? KD_CONFIG_DEFAULT_TXN_MESSAGE_TIMEOUT_MS
                      : KD_CONFIG_DEFAULT_MESSAGE_TIMEOUT_MS;

    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        const char *v = kd_config_prop_get(&cfg->producer, names[i]);
        char *end;
        long long timeout = v ? strtoll(v, &end, 10) : -1;

        if (v && end != v && !*end && timeout >= 0)
            ms = (uint64_t)timeout;
    }
    return ms;
}

/* An unfinished claim must outlive the producer's own delivery timeout, or
 * a late delivery could race a re-claim. librdkafka takes the timeout under
 * two names (delivery.timeout.ms is an alias): each one set is checked. */
static bool check_timeouts(ctx *c, const kd_config *cfg) {
    static const char *const names[] = {"message.timeout.ms", "delivery.timeout.ms"};
    bool set = false;

    if (cfg->inflight_timeout_ms == 0)
        return true;
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        const char *v = kd_config_prop_get(&cfg->producer, names[i]);
        long long timeout;
        char *end;

        if (!v || !*v)
            continue; /* absent, or empty: left at the default (see kafka.c) */
        set = true;
        timeout = strtoll(v, &end, 10);
        if (end == v || *end || timeout < 0)
            continue; /* librdkafka reports the bad value itself */
        if (!timeout_ok(c, cfg, names[i], timeout))
            return false;
    }
    return set ||
           timeout_ok(c, cfg, names[0], (long long)kd_config_message_timeout_ms(cfg));
}

/* In the transactional mode a transaction is committed at
 * pipeline.transaction_max_age: that must be below the producer's
 * transaction.timeout.ms, past which the broker aborts the transaction and
 * fences the producer (every transaction would be, and nothing ever
 * committed: seen on Apache Kafka with 60 s against the default 15 s). */
static bool check_txn_age(ctx *c, const kd_config *cfg) {
    const char *v = kd_config_prop_get(&cfg->producer, "transaction.timeout.ms");
    long long timeout = strtoll(KD_CONFIG_DEFAULT_TXN_TIMEOUT_MS, NULL, 10);
    char *end;

    if (cfg->delivery != KD_DELIVERY_TRANSACTIONAL)
        return true;
    if (v && *v) {
        timeout = strtoll(v, &end, 10);
        if (end == v || *end || timeout <= 0)
            return true; /* librdkafka reports the bad value itself */
    }
    if ((long long)cfg->txn_max_age_ms < timeout)
        return true;
    return fail(
        c, "pipeline.transaction_max_age",
        "expected a duration below the producer's transaction.timeout.ms (%lldms: "
        "the broker aborts an older transaction), got %llums",
        timeout, (unsigned long long)cfg->txn_max_age_ms);
}

/* A signing key must resist guessing: at least 16 bytes. */
static bool check_signing(ctx *c, const kd_config *cfg) {
    if (cfg->signing_key && strlen(cfg->signing_key) < 16)
        return fail(c, "dedup.signing_key",
                    "expected at least 16 bytes (a random secret), got %zu",
                    strlen(cfg->signing_key));
    if (cfg->previous_signing_key && strlen(cfg->previous_signing_key) < 16)
        return fail(c, "dedup.previous_signing_key",
                    "expected at least 16 bytes (a random secret), got %zu",
                    strlen(cfg->previous_signing_key));
    if (cfg->previous_signing_key && !cfg->signing_key)
        return fail(c, "dedup.previous_signing_key",
                    "needs dedup.signing_key (the key that replaced it)");
    return true;
}

/* The admin token guards forgetting keys: it must resist guessing too. */
static bool check_admin(ctx *c, const kd_config *cfg) {
    if (cfg->admin_token && strlen(cfg->admin_token) < 16)
        return fail(c, "admin.token",
                    "expected at least 16 bytes (a random secret), got %zu",
                    strlen(cfg->admin_token));
    return true;
}

/* The probes' listener is one of their own: not an address another has. */
static bool check_listeners(ctx *c, const kd_config *cfg) {
    const char *p = cfg->http_probes_listen;

    if (p && !strcmp(p, cfg->http_listen))
        return fail(c, "http.probes_listen",
                    "\"%s\" is http.listen too: give the probes an address of their own",
                    shown(c, "http.probes_listen", p));
    if (p && !strcmp(p, cfg->admin_listen))
        return fail(c, "http.probes_listen",
                    "\"%s\" is admin.listen too: give the probes an address of their own",
                    shown(c, "http.probes_listen", p));
    return true;
}

/* The rules that span keys, each over what parsed: every error found. */
static bool validate(ctx *c, const kd_config *cfg) {
    bool ok = check_signing(c, cfg);

    ok = check_admin(c, cfg) && ok;
    ok = check_listeners(c, cfg) && ok;
    ok = check_reserved(c, &cfg->consumer, reserved_consumer,
                        "use kafka.brokers and kafka.group_id; offsets are stored by "
                        "kdedup") &&
         ok;
    ok = check_reserved(c, &cfg->producer, reserved_producer, "use kafka.brokers") && ok;
    ok = check_routes(c, cfg) && ok;
    ok = check_txn_age(c, cfg) && ok;
    return check_timeouts(c, cfg) && ok;
}

/*
 * Entry points.
 */

static int longer_first(const void *a, const void *b) {
    size_t la = strlen(((const secret *)a)->value),
           lb = strlen(((const secret *)b)->value);

    return la < lb ? 1 : la > lb ? -1 : 0;
}

/* Longest first: a value that contains another is masked whole. */
static void sort_secrets(kd_config_env *env) {
    if (env && env->nsecrets > 1)
        qsort(env->secrets, env->nsecrets, sizeof(*env->secrets), longer_first);
}

static void redact_in_place(const kd_config *cfg, char *text, size_t size) {
    char *copy = size ? malloc(size) : NULL;

    if (!copy)
        return;
    kd_config_redact(cfg, text, copy, size);
    memcpy(text, copy, size);
    free(copy);
}

/* line:column of the byte at off. */
static void where(const char *json, size_t off, int *line, int *col) {
    *line = 1;
    *col = 1;
    for (size_t i = 0; i < off; i++, (*col)++)
        if (json[i] == '\n') {
            (*line)++;
            *col = 0;
        }
}

/* Keeps what kd_config_diff() compares: root's routes, and the rest of root
 * less the keys a reload may change (log.level, pipeline.batch_max). */
static bool keep_for_diff(kd_config_env *env, const cJSON *root) {
    cJSON *sub;

    if (!(env->fixed = cJSON_Duplicate(root, true)))
        return false;
    env->routes = cJSON_DetachItemFromObjectCaseSensitive(env->fixed, "routes");
    if ((sub = cJSON_GetObjectItemCaseSensitive(env->fixed, "log")))
        cJSON_DeleteItemFromObjectCaseSensitive(sub, "level");
    if ((sub = cJSON_GetObjectItemCaseSensitive(env->fixed, "pipeline")))
        cJSON_DeleteItemFromObjectCaseSensitive(sub, "batch_max");
    return env->routes != NULL;
}

/* Where cJSON stopped: a hint when it is a comment (README's config block
 * has them, for the page only). */
static const char *json_hint(const char *json, size_t len, size_t off) {
    for (size_t i = off > 0 ? off - 1 : 0; i < len && i <= off + 1; i++)
        if (json[i] == '/' && i + 1 < len && (json[i + 1] == '/' || json[i + 1] == '*'))
            return " (a comment? JSON has none: remove the // and /* */ parts)";
    return "";
}

kd_config *kd_config_parse(const char *json, size_t len, const char *name, char *errstr,
                           size_t errstr_size) {
    return kd_config_parse_opts(json, len, name, 0, errstr, errstr_size);
}

kd_config *kd_config_parse_opts(const char *json, size_t len, const char *name,
                                unsigned flags, char *errstr, size_t errstr_size) {
    ctx c = {name ? name : "config", errstr, errstr_size, NULL, flags, 0, 0, NULL};
    const char *end = NULL;
    kd_config *cfg;
    cJSON *root;
    int line, col;
    bool ok;

    if (len > MAX_FILE_BYTES) {
        fail(&c, "", "larger than %u bytes; not a config file", MAX_FILE_BYTES);
        return NULL;
    }
    root = cJSON_ParseWithLengthOpts(json, len, &end, false);
    if (!root) {
        const char *at = cJSON_GetErrorPtr();
        size_t off = at && at >= json && at <= json + len ? (size_t)(at - json) : len;

        where(json, off, &line, &col);
        fail(&c, "", "invalid JSON at line %d, column %d%s%s", line, col,
             off + 1 >= len ? " (truncated?)" : "", json_hint(json, len, off));
        return NULL;
    }
    for (; end && end < json + len && isspace((unsigned char)*end); end++)
        ;
    if (end && end < json + len) {
        where(json, (size_t)(end - json), &line, &col);
        fail(&c, "", "invalid JSON: trailing data at line %d, column %d", line, col);
        cJSON_Delete(root);
        return NULL;
    }
    if (!(cfg = calloc(1, sizeof(*cfg))) || !(cfg->file = strdup(c.file)) ||
        !(cfg->env = calloc(1, sizeof(*cfg->env)))) {
        kd_config_destroy(cfg);
        cJSON_Delete(root);
        fail(&c, "", "out of memory");
        return NULL;
    }
    c.env = cfg->env;
    if (!cJSON_IsObject(root)) {
        fail_value(&c, "", root, "a JSON object at the top");
        goto fail;
    }
    ok = parse_object(&c, root, top_fields, cfg, "");
    if (!validate(&c, cfg) || !ok)
        goto fail;
    if (!keep_for_diff(cfg->env, root)) {
        fail(&c, "", "out of memory");
        goto fail;
    }
    cJSON_Delete(root);
    free(c.route_bad);
    sort_secrets(cfg->env);
    return cfg;
fail:
    fail_done(&c);
    /* Messages show values as written; this catches what a rule printed
     * from an expanded value all the same. */
    sort_secrets(cfg->env);
    redact_in_place(cfg, errstr, errstr_size);
    cJSON_Delete(root);
    free(c.route_bad);
    kd_config_destroy(cfg);
    return NULL;
}

kd_config *kd_config_load(const char *path, char *errstr, size_t errstr_size) {
    return kd_config_load_opts(path, 0, errstr, errstr_size);
}

kd_config *kd_config_load_opts(const char *path, unsigned flags, char *errstr,
                               size_t errstr_size) {
    char *bytes;
    size_t len;
    kd_config *cfg =
        kd_config_load_bytes_opts(path, flags, &bytes, &len, errstr, errstr_size);

    free(bytes);
    return cfg;
}

kd_config *kd_config_load_bytes(const char *path, char **bytes, size_t *bytes_len,
                                char *errstr, size_t errstr_size) {
    return kd_config_load_bytes_opts(path, 0, bytes, bytes_len, errstr, errstr_size);
}

kd_config *kd_config_load_bytes_opts(const char *path, unsigned flags, char **bytes,
                                     size_t *bytes_len, char *errstr,
                                     size_t errstr_size) {
    const char *base = strrchr(path, '/') ? strrchr(path, '/') + 1 : path;
    FILE *fp = fopen(path, "rb");
    char *buf = NULL;
    size_t len = 0;
    kd_config *cfg = NULL;

    *bytes = NULL;
    *bytes_len = 0;
    if (!fp) {
        snprintf(errstr, errstr_size, "%s: cannot open: %s", path, strerror(errno));
        return NULL;
    }
    if (!(buf = malloc(MAX_FILE_BYTES + 1))) {
        snprintf(errstr, errstr_size, "%s: out of memory", path);
        fclose(fp);
        return NULL;
    }
    len = fread(buf, 1, MAX_FILE_BYTES + 1, fp);
    if (ferror(fp))
        snprintf(errstr, errstr_size, "%s: cannot read: %s", path, strerror(errno));
    else
        cfg = kd_config_parse_opts(buf, len, base, flags, errstr, errstr_size);
    fclose(fp);
    if (!cfg) {
        free(buf);
        return NULL;
    }
    *bytes = buf;
    *bytes_len = len;
    return cfg;
}

static void free_props(kd_config_props *p) {
    for (size_t i = 0; i < p->n; i++) {
        free(p->v[i].name);
        free(p->v[i].value);
        free(p->v[i].path);
    }
    /* A failed parse leaves its half-made prop after n. */
    if (p->v) {
        free(p->v[p->n].name);
        free(p->v[p->n].path);
    }
    free(p->v);
}

void kd_config_destroy(kd_config *cfg) {
    if (!cfg)
        return;
    env_destroy(cfg->env);
    free(cfg->file);
    free(cfg->brokers);
    free(cfg->group_id);
    free_props(&cfg->consumer);
    free_props(&cfg->producer);
    for (size_t i = 0; i < cfg->nroutes; i++) {
        free(cfg->routes[i].name);
        free(cfg->routes[i].from);
        free(cfg->routes[i].to);
        free(cfg->routes[i].key_header);
        free(cfg->routes[i].dead_letter_topic);
        for (size_t j = 0; cfg->routes[i].key_parts && j < cfg->routes[i].nkey_parts;
             j++) {
            free(cfg->routes[i].key_parts[j].name);
            free(cfg->routes[i].key_parts[j].pointer);
        }
        free(cfg->routes[i].key_parts);
        for (size_t j = 0; j < cfg->routes[i].nfingerprint_headers; j++)
            free(cfg->routes[i].fingerprint_headers[j]);
        free(cfg->routes[i].fingerprint_headers);
        for (size_t j = 0; j < cfg->routes[i].nfingerprint_json; j++)
            free(cfg->routes[i].fingerprint_json[j]);
        free(cfg->routes[i].fingerprint_json);
    }
    free(cfg->routes);
    free(cfg->ns);
    free(cfg->signing_key);
    free(cfg->previous_signing_key);
    free(cfg->store_path);
    free(cfg->http_listen);
    free(cfg->http_probes_listen);
    free(cfg->admin_listen);
    free(cfg->admin_token);
    free(cfg->transactional_id);
    free(cfg);
}

const char *kd_config_prop_get(const kd_config_props *props, const char *name) {
    for (size_t i = 0; i < props->n; i++)
        if (!strcmp(props->v[i].name, name))
            return props->v[i].value;
    return NULL;
}

const char *kd_config_template(const kd_config *cfg, const char *path) {
    return cfg ? env_template(cfg->env, path) : NULL;
}

/* The longest of env's secrets that text starts with, or NULL; *vlen is
 * how many bytes of text it covers. A value cut short at end (a truncated
 * message) counts too, from KD_CONFIG_REDACT_MIN bytes on. */
static const secret *secret_at(const kd_config_env *env, const char *text,
                               const char *end, size_t *vlen) {
    /* Longest first (sort_secrets): the first hit is the longest. */
    for (size_t i = 0; env && i < env->nsecrets; i++) {
        size_t n = strlen(env->secrets[i].value);

        if (n > (size_t)(end - text))
            n = (size_t)(end - text);
        if (n >= KD_CONFIG_REDACT_MIN && !strncmp(text, env->secrets[i].value, n)) {
            *vlen = n;
            return &env->secrets[i];
        }
    }
    return NULL;
}

const char *kd_config_unresolved(const kd_config *cfg, const char *prefix) {
    for (size_t i = 0; cfg && i < cfg->env->nunresolved; i++)
        if (!strncmp(cfg->env->unresolved[i], prefix, strlen(prefix)))
            return cfg->env->unresolved[i];
    return NULL;
}

char *kd_config_redact(const kd_config *cfg, const char *text, char *out,
                       size_t out_size) {
    return kd_config_redact_any(&cfg, cfg ? 1 : 0, text, out, out_size);
}

char *kd_config_redact_any(const kd_config *const *cfgs, size_t ncfgs, const char *text,
                           char *out, size_t out_size) {
    const char *end = text + strlen(text);
    size_t len = 0;

    if (!out_size)
        return out;
    while (*text && len + 1 < out_size) {
        const secret *hit = NULL, *at;
        const char *add = text;
        size_t n = 1, vlen = 0, alen;

        /* Across configs too, the longest value wins: one that contains
         * another is masked whole. */
        for (size_t c = 0; c < ncfgs; c++)
            if ((at = secret_at(cfgs[c]->env, text, end, &alen)) && alen > vlen) {
                hit = at;
                vlen = alen;
            }
        if (hit) {
            add = hit->ref;
            n = strlen(hit->ref);
            text += vlen;
        } else {
            text++;
        }
        if (n > out_size - 1 - len)
            n = out_size - 1 - len;
        memcpy(out + len, add, n);
        len += n;
    }
    out[len] = '\0';
    return out;
}

const char *kd_config_log_level_name(kd_log_level level) {
    return level >= KD_LOG_DEBUG && level <= KD_LOG_ERROR ? log_level_names[level] : "?";
}

/*
 * Reloads.
 */

/* Appends the paths under path where a and b differ to out; n counts them. */
static void diff_paths(const cJSON *a, const cJSON *b, const char *path, char *out,
                       size_t size, int *n) {
    char sub[MAX_PATH];

    /* Objects compare key by key; a missing object is an empty one (every
     * key of it has its default), so the keys written are named. */
    if ((cJSON_IsObject(a) || !a) && (cJSON_IsObject(b) || !b) && (a || b)) {
        for (const cJSON *e = a ? a->child : NULL; e; e = e->next) {
            path_key(sub, path, e->string);
            diff_paths(e, cJSON_GetObjectItemCaseSensitive(b, e->string), sub, out, size,
                       n);
        }
        for (const cJSON *e = b ? b->child : NULL; e; e = e->next)
            if (!a || !cJSON_GetObjectItemCaseSensitive(a, e->string)) {
                path_key(sub, path, e->string);
                diff_paths(NULL, e, sub, out, size, n);
            }
        return;
    }
    if (a && b && cJSON_Compare(a, b, true))
        return;
    snprintf(out + strlen(out), size - strlen(out), "%s%s", (*n)++ ? ", " : "", path);
}

/* The index of the route from `from` in cfg, or SIZE_MAX. */
static size_t route_index(const kd_config *cfg, const char *from) {
    for (size_t i = 0; i < cfg->nroutes; i++)
        if (!strcmp(cfg->routes[i].from, from))
            return i;
    return SIZE_MAX;
}

/* Appends "label: a, b" for the routes of `in` that pick() selects. */
static void list_routes(char *out, size_t size, const char *label, const kd_config *in,
                        const kd_config *other, int which) {
    int n = 0;

    for (size_t i = 0; i < in->nroutes; i++) {
        size_t j = route_index(other, in->routes[i].from);
        bool pick;

        if (which == 0) /* absent from other */
            pick = j == SIZE_MAX;
        else /* in both, written differently */
            pick = j != SIZE_MAX &&
                   !cJSON_Compare(cJSON_GetArrayItem(in->env->routes, (int)i),
                                  cJSON_GetArrayItem(other->env->routes, (int)j), true);
        if (!pick)
            continue;
        snprintf(out + strlen(out), size - strlen(out), "%s%s%s",
                 n      ? ", "
                 : *out ? "; "
                        : "",
                 n ? "" : label, in->routes[i].name);
        n++;
    }
}

void kd_config_diff_of(const kd_config *old, const kd_config *cur, kd_config_diff *out) {
    char paths[768] = "";
    int n = 0;

    memset(out, 0, sizeof(*out));
    diff_paths(old->env->fixed, cur->env->fixed, "", paths, sizeof(paths), &n);
    if (n) {
        out->refused = true;
        snprintf(out->what, sizeof(out->what),
                 "%s: cannot change while kdedup runs (restart it to apply %s); "
                 "nothing changed",
                 paths, n == 1 ? "this" : "these");
        return;
    }
    list_routes(out->what, sizeof(out->what), "routes added: ", cur, old, 0);
    list_routes(out->what, sizeof(out->what), "routes removed: ", old, cur, 0);
    list_routes(out->what, sizeof(out->what), "routes changed: ", cur, old, 1);
    out->routes = *out->what != '\0';
    for (size_t i = 0; !out->routes && i < cur->nroutes; i++)
        if (route_index(old, cur->routes[i].from) != i) {
            out->routes = true;
            snprintf(out->what, sizeof(out->what), "routes reordered");
        }
    if (old->log_level != cur->log_level) {
        out->log_level = true;
        snprintf(out->what + strlen(out->what), sizeof(out->what) - strlen(out->what),
                 "%slog.level: %s -> %s", *out->what ? "; " : "",
                 kd_config_log_level_name(old->log_level),
                 kd_config_log_level_name(cur->log_level));
    }
    if (old->batch_max != cur->batch_max) {
        out->batch_max = true;
        snprintf(out->what + strlen(out->what), sizeof(out->what) - strlen(out->what),
                 "%spipeline.batch_max: %lld -> %lld", *out->what ? "; " : "",
                 (long long)old->batch_max, (long long)cur->batch_max);
    }
    if (!*out->what)
        snprintf(out->what, sizeof(out->what), "nothing to change");
}

/* One key source as the config writes it: {"from": "header", "name": ...}. */
static cJSON *render_key_part(const kd_key_part *k) {
    cJSON *o = cJSON_CreateObject();

    cJSON_AddStringToObject(o, "from", key_from_names[k->from]);
    if (k->from == KD_KEY_FROM_HEADER)
        cJSON_AddStringToObject(o, "name", k->name);
    else if (k->from == KD_KEY_FROM_JSON)
        cJSON_AddStringToObject(o, "pointer", k->pointer);
    return o;
}

/* A route's key, every form written out: {"from": ..., ...} or a composite
 * with its parts. */
static cJSON *render_key(const kd_route *r) {
    cJSON *o, *parts;

    if (r->key_from != KD_KEY_FROM_COMPOSITE)
        return render_key_part(&r->key_parts[0]);
    o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "from", "composite");
    parts = cJSON_AddArrayToObject(o, "parts");
    for (size_t i = 0; i < r->nkey_parts; i++)
        cJSON_AddItemToArray(parts, render_key_part(&r->key_parts[i]));
    return o;
}

static cJSON *string_array(char *const *v, size_t n) {
    cJSON *a = cJSON_CreateArray();

    for (size_t i = 0; a && i < n; i++)
        cJSON_AddItemToArray(a, cJSON_CreateString(v[i]));
    return a;
}

/* A route's fingerprint: false, or what it covers: "value" (the whole
 * value, or the json fields), and the headers. */
static cJSON *render_fingerprint(const kd_route *r) {
    cJSON *o;

    if (!r->fingerprint)
        return cJSON_CreateFalse();
    o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "value", r->nfingerprint_json ? "json fields" : "whole");
    cJSON_AddItemToObject(o, "json",
                          string_array(r->fingerprint_json, r->nfingerprint_json));
    cJSON_AddItemToObject(o, "headers",
                          string_array(r->fingerprint_headers, r->nfingerprint_headers));
    return o;
}

/* Adds the fields of a table, with their values in base, to obj. */
static void render_fields(cJSON *obj, const field *fields, const void *base) {
    for (const field *f = fields; f->key; f++) {
        const char *at = (const char *)base + f->offset, *str;
        char buf[32];

        switch (f->type) {
        case F_KEY:
            cJSON_AddItemToObject(obj, f->key, render_key(base));
            break;
        case F_FINGERPRINT:
            cJSON_AddItemToObject(obj, f->key, render_fingerprint(base));
            break;
        case F_STRING:
        case F_TOPIC:
        case F_NAME:
        case F_BROKERS:
        case F_LISTEN:
            if ((str = *(char *const *)at))
                cJSON_AddStringToObject(obj, f->key,
                                        kd_config_is_secret(f->key) ? "(secret)" : str);
            else
                cJSON_AddNullToObject(obj, f->key);
            break;
        case F_BOOL:
            cJSON_AddBoolToObject(obj, f->key, *(const bool *)at);
            break;
        case F_INT:
            cJSON_AddNumberToObject(obj, f->key, (double)*(const int64_t *)at);
            break;
        case F_DURATION:
            snprintf(buf, sizeof(buf), "%llums",
                     (unsigned long long)*(const uint64_t *)at);
            cJSON_AddStringToObject(obj, f->key, buf);
            break;
        case F_ENUM:
            cJSON_AddStringToObject(obj, f->key, f->names[*(const int *)at]);
            break;
        case F_OBJECT:
            render_fields(cJSON_AddObjectToObject(obj, f->key), f->sub, base);
            break;
        default:
            break; /* props and arrays: not in a route */
        }
    }
}

char *kd_config_routes_json(const kd_config *cfg) {
    cJSON *arr = cJSON_CreateArray();
    char *text;

    for (size_t i = 0; arr && i < cfg->nroutes; i++) {
        cJSON *o = cJSON_CreateObject();

        if (!o || !cJSON_AddItemToArray(arr, o))
            break;
        render_fields(o, route_fields, &cfg->routes[i]);
    }
    text = arr ? cJSON_PrintUnformatted(arr) : NULL;
    cJSON_Delete(arr);
    return text;
}
