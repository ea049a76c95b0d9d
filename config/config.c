/*
 * kdedup - configuration: a table of fields per JSON object (type, default,
 * bounds, doc), one generic pass that applies a table to an object, and a
 * second pass for the rules that span keys.
 */
#include "config/config_int.h"

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
 * Tables.
 */

static bool parse_object(ctx *c, const cJSON *obj, const field *fields, void *base,
                         const char *path);

static bool parse_props(ctx *c, const cJSON *obj, kd_config_props *props,
                        const char *path) {
    size_t n = 0;

    if (!cJSON_IsObject(obj))
        return kd_cfg_fail_value(c, path, obj, "an object of librdkafka properties");
    for (const cJSON *e = obj->child; e; e = e->next)
        n++;
    props->v = calloc(n + 1, sizeof(*props->v)); /* + room for a half-made one */
    if (!props->v)
        return kd_cfg_fail(c, path, "out of memory");
    bool ok = true;

    for (const cJSON *e = obj->child; e; e = e->next) {
        kd_config_prop *p = &props->v[props->n];
        char epath[MAX_PATH];

        kd_cfg_path_fmt(epath, "%s[\"%s\"]", path, e->string);
        if (!*e->string) {
            ok = kd_cfg_fail(c, epath, "expected a property name");
            continue;
        }
        if (kd_config_prop_get(props, e->string)) {
            ok = kd_cfg_fail(c, epath, "duplicate key");
            continue;
        }
        if (!(p->value =
                  kd_cfg_scalar_text(c, epath, e, "a string, number or boolean"))) {
            ok = false; /* kd_cfg_fail() was called */
            continue;
        }
        p->name = strdup(e->string);
        p->path = strdup(epath);
        props->n++;
        if (!p->name || !p->path)
            return kd_cfg_fail(c, epath, "out of memory");
    }
    return ok;
}

static bool parse_routes(ctx *c, const cJSON *arr, kd_config *cfg, const field *f,
                         const char *path) {
    size_t n = (size_t)cJSON_GetArraySize(arr);
    size_t i = 0;

    if (!cJSON_IsArray(arr) || n == 0)
        return kd_cfg_fail_value(c, path, arr, "a non-empty array of routes");
    bool ok = true;

    if (!(cfg->routes = calloc(n, sizeof(*cfg->routes))) ||
        !(c->route_bad = calloc(n, sizeof(*c->route_bad))))
        return kd_cfg_fail(c, path, "out of memory");
    for (const cJSON *e = arr->child; e; e = e->next, i++) {
        char epath[MAX_PATH];

        kd_cfg_path_fmt(epath, "%s[%zu]", path, i);
        cfg->nroutes = i + 1;
        c->route_bad[i] = !parse_object(c, e, f->sub, &cfg->routes[i], epath) ||
                          !kd_cfg_finish_route(c, e, &cfg->routes[i], epath);
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
            return kd_cfg_fail_value(c, path, v, expected);
        *(bool *)at = !strcmp(text, "true");
        return true;
    case F_INT:
        errno = 0;
        n = strtoll(text, &end, 10);
        if (errno || end == text || *end || n < f->min || n > f->max)
            return kd_cfg_fail_value(c, path, v, expected);
        *(int64_t *)at = n;
        return true;
    case F_DURATION:
        if (f->names && !strcmp(text, "off"))
            ms = 0; /* where 0 turns it off, it may say so */
        else if (!kd_config_parse_duration(text, &ms) || ms > (uint64_t)f->max ||
                 ms < (uint64_t)f->min)
            return kd_cfg_fail_value(c, path, v, expected);
        *(uint64_t *)at = ms;
        return true;
    case F_ENUM:
        for (int i = 0; f->names[i]; i++)
            if (!strcmp(text, f->names[i])) {
                *(int *)at = i;
                return true;
            }
        return kd_cfg_fail_value(c, path, v, expected);
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
        return kd_cfg_fail(c, path, "internal error: not a scalar");
    }
    if (!ok)
        return kd_cfg_fail_value(c, path, v, expected);
    free(*(char **)at);
    if (!(*(char **)at = strdup(text)))
        return kd_cfg_fail(c, path, "out of memory");
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
        return (*at = strdup(text)) || kd_cfg_fail(c, path, "out of memory");
    default:
        if (!f->def)
            return true;
        if (!(def = cJSON_CreateString(f->def)))
            return kd_cfg_fail(c, path, "out of memory");
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
        return kd_cfg_fail(c, path, "out of memory");
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
        ok = kd_cfg_parse_key(c, v, base, path);
        break;
    case F_FINGERPRINT:
        ok = kd_cfg_parse_fingerprint(c, v, base, path);
        break;
    default:
        expected_text(f, expected, sizeof(expected));
        if (!cJSON_IsString(v) && !takes_non_string(f)) {
            ok = kd_cfg_fail_value(c, path, v, expected);
            break;
        }
        text = kd_cfg_scalar_text(c, path, v, expected);
        if (text && kd_cfg_env_is_unresolved(c->env, path))
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
        return kd_cfg_fail_value(c, path, obj, "an object");
    for (const cJSON *e = obj->child; e; e = e->next) {
        char known[256] = "", epath[MAX_PATH];
        const field *f = fields;

        for (; f->key && strcmp(f->key, e->string); f++)
            snprintf(known + strlen(known), sizeof(known) - strlen(known), "%s%s",
                     f == fields ? "" : ", ", f->key);
        kd_cfg_path_key(epath, path, e->string);
        if (!f->key) {
            ok = kd_cfg_fail(c, epath, "unknown key (expected one of: %s)", known);
            continue;
        }
        for (const cJSON *o = obj->child; o != e; o = o->next)
            if (!strcmp(o->string, e->string)) {
                ok = kd_cfg_fail(c, epath, "duplicate key");
                break;
            }
    }
    for (const field *f = fields; f->key; f++) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, f->key);
        char fpath[MAX_PATH];

        kd_cfg_path_key(fpath, path, f->key);
        if (!v && !f->def && f->type != F_OBJECT && f->type != F_PROPS) {
            if (!f->optional)
                ok = kd_cfg_fail(c, fpath, "missing (%s)", f->doc ? f->doc : "required");
            continue;
        }
        if (!parse_field(c, f, v, base, fpath))
            ok = false;
    }
    return ok;
}

/*
 * Entry points.
 */

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
        kd_cfg_fail(&c, "", "larger than %u bytes; not a config file", MAX_FILE_BYTES);
        return NULL;
    }
    root = cJSON_ParseWithLengthOpts(json, len, &end, false);
    if (!root) {
        const char *at = cJSON_GetErrorPtr();
        size_t off = at && at >= json && at <= json + len ? (size_t)(at - json) : len;

        where(json, off, &line, &col);
        kd_cfg_fail(&c, "", "invalid JSON at line %d, column %d%s%s", line, col,
                    off + 1 >= len ? " (truncated?)" : "", json_hint(json, len, off));
        return NULL;
    }
    for (; end && end < json + len && isspace((unsigned char)*end); end++)
        ;
    if (end && end < json + len) {
        where(json, (size_t)(end - json), &line, &col);
        kd_cfg_fail(&c, "", "invalid JSON: trailing data at line %d, column %d", line,
                    col);
        cJSON_Delete(root);
        return NULL;
    }
    if (!(cfg = calloc(1, sizeof(*cfg))) || !(cfg->file = strdup(c.file)) ||
        !(cfg->env = calloc(1, sizeof(*cfg->env)))) {
        kd_config_destroy(cfg);
        cJSON_Delete(root);
        kd_cfg_fail(&c, "", "out of memory");
        return NULL;
    }
    c.env = cfg->env;
    if (!cJSON_IsObject(root)) {
        kd_cfg_fail_value(&c, "", root, "a JSON object at the top");
        goto fail;
    }
    ok = parse_object(&c, root, top_fields, cfg, "");
    if (!kd_cfg_validate(&c, cfg) || !ok)
        goto fail;
    if (!keep_for_diff(cfg->env, root)) {
        kd_cfg_fail(&c, "", "out of memory");
        goto fail;
    }
    cJSON_Delete(root);
    free(c.route_bad);
    kd_cfg_sort_secrets(cfg->env);
    return cfg;
fail:
    kd_cfg_fail_done(&c);
    /* Messages show values as written; this catches what a rule printed
     * from an expanded value all the same. */
    kd_cfg_sort_secrets(cfg->env);
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
    kd_cfg_env_destroy(cfg->env);
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
            kd_cfg_path_key(sub, path, e->string);
            diff_paths(e, cJSON_GetObjectItemCaseSensitive(b, e->string), sub, out, size,
                       n);
        }
        for (const cJSON *e = b ? b->child : NULL; e; e = e->next)
            if (!a || !cJSON_GetObjectItemCaseSensitive(a, e->string)) {
                kd_cfg_path_key(sub, path, e->string);
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

    cJSON_AddStringToObject(o, "from", kd_cfg_key_from_names[k->from]);
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
