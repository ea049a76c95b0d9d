/*
 * kdedup - configuration: the rules that span keys, a second pass over
 * what the tables parsed.
 */
#include "config/config_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Properties kdedup sets itself: taking them from the file would break it. */
static const char *const reserved_consumer[] = {"bootstrap.servers", "group.id",
                                                "enable.auto.offset.store",
                                                "metadata.broker.list", NULL};

static const char *const reserved_producer[] = {
    "bootstrap.servers", "metadata.broker.list",
    "transactional.id", /* pipeline.transactional_id */
    NULL};

static bool check_reserved(ctx *c, const kd_config_props *props,
                           const char *const *reserved, const char *why) {
    for (size_t i = 0; i < props->n; i++)
        for (size_t r = 0; reserved[r]; r++)
            if (!strcmp(props->v[i].name, reserved[r]))
                return kd_cfg_fail(c, props->v[i].path, "set by kdedup itself (%s)", why);
    return true;
}

/* A value for a message: as written in the file when ${...} took any of it
 * from the environment or a file, so such values are never shown. */
static const char *shown(const ctx *c, const char *path, const char *value) {
    const char *t = kd_cfg_env_template(c->env, path);

    return t ? t : value;
}

/* Whether routes[i] parsed: only then are its keys there to compare. */
static bool route_parsed(const ctx *c, size_t i) {
    return !c->route_bad || !c->route_bad[i];
}

static bool check_route(ctx *c, const kd_config *cfg, size_t i) {
    const kd_route *r = &cfg->routes[i];
    char path[MAX_PATH], from[MAX_PATH], to[MAX_PATH];

    kd_cfg_path_fmt(path, "routes[%zu]", i);
    kd_cfg_path_fmt(from, "routes[%zu].from", i);
    kd_cfg_path_fmt(to, "routes[%zu].to", i);
    if (!strcmp(r->from, r->to) && !strcmp(shown(c, from, r->from), shown(c, to, r->to)))
        return kd_cfg_fail(c, path,
                           "\"from\" and \"to\" are both \"%s\": a route may not "
                           "feed its own source",
                           shown(c, from, r->from));
    if (!strcmp(r->from, r->to))
        return kd_cfg_fail(
            c, path,
            "\"from\" (\"%s\") and \"to\" (\"%s\") are one topic: a route may "
            "not feed its own source",
            shown(c, from, r->from), shown(c, to, r->to));
    if (r->dead_letter_topic && !strcmp(r->dead_letter_topic, r->from))
        return kd_cfg_fail(c, path,
                           "\"dead_letter_topic\" is the route's own source \"%s\"",
                           shown(c, from, r->from));
    if (r->dead_letter_topic && !strcmp(r->dead_letter_topic, r->to))
        return kd_cfg_fail(
            c, path,
            "\"dead_letter_topic\" is the route's own \"to\" \"%s\": dead letters "
            "would be read back as forwarded records (give them a topic of "
            "their own)",
            shown(c, to, r->to));
    if (r->on_missing_key == KD_MISSING_DEAD_LETTER && !r->dead_letter_topic)
        return kd_cfg_fail(c, path,
                           "\"on_missing_key\": \"dead_letter\" needs a "
                           "\"dead_letter_topic\" (or set \"forward\" or \"drop\")");
    if (r->on_key_conflict == KD_CONFLICT_DEAD_LETTER && !r->dead_letter_topic)
        return kd_cfg_fail(c, path,
                           "\"on_key_conflict\": \"dead_letter\" needs a "
                           "\"dead_letter_topic\" (or set \"skip\" or \"forward\")");
    for (size_t j = 0; j < i; j++)
        if (route_parsed(c, j) && !strcmp(cfg->routes[j].from, r->from))
            return kd_cfg_fail(c, path,
                               "\"from\": \"%s\" is already the source of routes[%zu]",
                               shown(c, from, r->from), j);
    for (size_t j = 0; j < i; j++)
        if (route_parsed(c, j) && !strcmp(cfg->routes[j].name, r->name))
            return kd_cfg_fail(
                c, path,
                "the name \"%s\" is already routes[%zu]'s (a route's name is its "
                "\"name\", or else its \"from\")",
                r->name, j);
    return true;
}

static bool check_routes(ctx *c, const kd_config *cfg) {
    bool ok = true;

    for (size_t i = 0; i < cfg->nroutes; i++)
        if (route_parsed(c, i))
            ok = check_route(c, cfg, i) && ok;
    return ok;
}

/* dedup.inflight_timeout against one delivery timeout of the producer;
 * values from the environment or a file are shown as written. */
static bool timeout_ok(ctx *c, const kd_config *cfg, const char *name,
                       long long timeout) {
    char path[MAX_PATH], have[64], got[64];
    const char *vt, *it = kd_cfg_env_template(c->env, "dedup.inflight_timeout");

    if (timeout != 0 && (long long)cfg->inflight_timeout_ms > timeout)
        return true;
    kd_cfg_path_fmt(path, "kafka.producer[\"%s\"]", name);
    vt = kd_cfg_env_template(c->env, path);
    snprintf(have, sizeof(have), "%lldms%s", timeout, timeout == 0 ? ", i.e. never" : "");
    snprintf(got, sizeof(got), "%llums", (unsigned long long)cfg->inflight_timeout_ms);
    return kd_cfg_fail(c, "dedup.inflight_timeout",
                       "expected a duration longer than the producer's %s (%s), got %s",
                       name, vt ? vt : have, it ? it : got);
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

/* A signing key must resist guessing: at least 16 bytes. */
static bool check_signing(ctx *c, const kd_config *cfg) {
    if (cfg->signing_key && strlen(cfg->signing_key) < 16)
        return kd_cfg_fail(c, "dedup.signing_key",
                           "expected at least 16 bytes (a random secret), got %zu",
                           strlen(cfg->signing_key));
    if (cfg->previous_signing_key && strlen(cfg->previous_signing_key) < 16)
        return kd_cfg_fail(c, "dedup.previous_signing_key",
                           "expected at least 16 bytes (a random secret), got %zu",
                           strlen(cfg->previous_signing_key));
    if (cfg->previous_signing_key && !cfg->signing_key)
        return kd_cfg_fail(c, "dedup.previous_signing_key",
                           "needs dedup.signing_key (the key that replaced it)");
    return true;
}

/* The admin token guards forgetting keys: it must resist guessing too. */
static bool check_admin(ctx *c, const kd_config *cfg) {
    if (cfg->admin_token && strlen(cfg->admin_token) < 16)
        return kd_cfg_fail(c, "admin.token",
                           "expected at least 16 bytes (a random secret), got %zu",
                           strlen(cfg->admin_token));
    return true;
}

/* The probes' listener is one of their own: not an address another has
 * (those that did not parse, NULL, are already errors of their own). */
static bool check_listeners(ctx *c, const kd_config *cfg) {
    const char *p = cfg->http_probes_listen;

    if (p && cfg->http_listen && !strcmp(p, cfg->http_listen))
        return kd_cfg_fail(
            c, "http.probes_listen",
            "\"%s\" is http.listen too: give the probes an address of their own",
            shown(c, "http.probes_listen", p));
    if (p && cfg->admin_listen && !strcmp(p, cfg->admin_listen))
        return kd_cfg_fail(
            c, "http.probes_listen",
            "\"%s\" is admin.listen too: give the probes an address of their own",
            shown(c, "http.probes_listen", p));
    return true;
}

/* In the transactional mode a transaction is committed at
 * pipeline.transaction_max_age: that must be below the producer's
 * transaction.timeout.ms, past which the broker aborts the transaction and
 * fences the producer (every transaction would be, and nothing ever
 * committed: seen on Apache Kafka with 60 s against the default 15 s). */
static bool check_txn_age(ctx *c, const kd_config *cfg) {
    uint64_t timeout = kd_config_txn_timeout_ms(cfg);

    if (cfg->delivery != KD_DELIVERY_TRANSACTIONAL || !timeout)
        return true; /* librdkafka reports a bad value itself */
    if (cfg->txn_max_age_ms < timeout)
        return true;
    return kd_cfg_fail(
        c, "pipeline.transaction_max_age",
        "expected a duration below the producer's transaction.timeout.ms (%llums: "
        "the broker aborts an older transaction), got %llums",
        (unsigned long long)timeout, (unsigned long long)cfg->txn_max_age_ms);
}

uint64_t kd_config_txn_timeout_ms(const kd_config *cfg) {
    const char *v = kd_config_prop_get(&cfg->producer, "transaction.timeout.ms");
    long long timeout;
    char *end;

    if (!v || !*v)
        v = KD_CONFIG_DEFAULT_TXN_TIMEOUT_MS;
    timeout = strtoll(v, &end, 10);
    return end == v || *end || timeout <= 0 ? 0 : (uint64_t)timeout;
}

/* The rules that span keys, each over what parsed: every error found. */
bool kd_cfg_validate(ctx *c, const kd_config *cfg) {
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
