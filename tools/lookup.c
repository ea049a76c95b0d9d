/*
 * kdedup - `kdedup lookup`: what the store says about idempotency keys.
 *
 *   kdedup lookup --config FILE [--route NAME] < keys
 *
 * Reads one key per line on stdin and prints, for each route (the one
 * --route names, else every route of the config), one JSON object per line:
 * {"route": NAME, "key": ..., "state": "completed" | "in_flight" | "absent",
 * "receipt": ..., "fingerprint": ...} ("receipt" when completed;
 * "fingerprint", the SHA-256 stored with the claim in hex, when there is
 * one; "error" instead of "state" when the entry cannot be read). For a
 * route with a composite key, a line holds the parts separated by tabs, in
 * the order of key.parts. A route's name is its "name", else its "from".
 *
 * It runs beside a live kdedup: the store is opened as a RocksDB secondary
 * (read-only; it sees what the sidecar wrote up to the start). The config
 * is read offline: a ${VAR} that is not set is no error unless lookup needs
 * its value (dedup.namespace, store.path, a route's from or key).
 */
#include "dedup/hex.h"
#include "config/config.h"
#include "dedup/dedup.h"
#include "sidecar/keysrc.h"
#include "tools/tools.h"
#include "sidecar/pipeline.h"

#include <cjson/cJSON.h>

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Prints one key's line for route r; shown is the key as the line gave it. */
static void print_state(kd_dedup *d, const kd_route *r, const char *shown,
                        const char *key, size_t len) {
    cJSON *o = cJSON_CreateObject();
    kd_decision dec = {0};
    bool found = false;
    kd_err err = kd_dedup_lookup(d, key, len, &dec, &found);
    char *line;

    cJSON_AddStringToObject(o, "route", r->name);
    cJSON_AddStringToObject(o, "key", shown);
    if (err != KD_OK) {
        cJSON_AddStringToObject(o, "error", kd_err_name(err));
    } else if (!found) {
        cJSON_AddStringToObject(o, "state", "absent");
    } else if (dec.state == KD_COMPLETED) {
        char *receipt = malloc(dec.receipt_len + 1);

        cJSON_AddStringToObject(o, "state", "completed");
        if (receipt) {
            memcpy(receipt, dec.receipt, dec.receipt_len);
            receipt[dec.receipt_len] = '\0';
            cJSON_AddStringToObject(o, "receipt", receipt);
            free(receipt);
        }
    } else {
        cJSON_AddStringToObject(o, "state", "in_flight");
    }
    if (err == KD_OK && found && dec.has_fingerprint) {
        char hex[2 * KD_FINGERPRINT_LEN + 1];

        cJSON_AddStringToObject(o, "fingerprint",
                                kd_hex(dec.fingerprint, KD_FINGERPRINT_LEN, hex));
    }
    kd_decision_clear(&dec);
    if ((line = cJSON_PrintUnformatted(o)))
        printf("%s\n", line);
    free(line);
    cJSON_Delete(o);
}

/* Prints an error line for route r and the key as the line gave it. */
__attribute__((format(printf, 3, 4))) static void
print_error(const kd_route *r, const char *shown, const char *fmt, ...) {
    cJSON *o = cJSON_CreateObject();
    char msg[256], *line;
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    cJSON_AddStringToObject(o, "route", r->name);
    cJSON_AddStringToObject(o, "key", shown);
    cJSON_AddStringToObject(o, "error", msg);
    if ((line = cJSON_PrintUnformatted(o)))
        printf("%s\n", line);
    free(line);
    cJSON_Delete(o);
}

/* Looks up one line's key: the line itself, or for a composite key its
 * tab-separated parts joined as the pipeline joins them. */
static void lookup_line(kd_dedup *d, const kd_route *r, size_t max_key, char *line,
                        size_t len) {
    const char *parts[KD_CONFIG_MAX_KEY_PARTS];
    size_t lens[KD_CONFIG_MAX_KEY_PARTS], n = 0;
    kd_key key;
    kd_key_status st;
    char *at = line, *tab;

    if (r->key_from != KD_KEY_FROM_COMPOSITE) {
        print_state(d, r, line, line, len);
        return;
    }
    for (; n < KD_CONFIG_MAX_KEY_PARTS; n++, at = tab + 1) {
        tab = strchr(at, '\t');
        parts[n] = at;
        lens[n] = tab ? (size_t)(tab - at) : strlen(at);
        if (!tab) {
            n++;
            break;
        }
    }
    if (n != r->nkey_parts) {
        print_error(r, line, "expected %zu tab-separated parts, got %zu", r->nkey_parts,
                    n);
        return;
    }
    if ((st = kd_keysrc_compose(parts, lens, n, max_key, &key)) != KD_KEY_OK) {
        print_error(r, line, "key %s", kd_key_status_name(st));
        return;
    }
    print_state(d, r, line, key.bytes, key.len);
    kd_key_clear(&key);
}

static int usage(void) {
    fprintf(stderr, "usage: kdedup lookup --config FILE [--route NAME] < keys\n");
    return 2;
}

/* The values lookup reads that an offline config left unresolved: NULL, or
 * the first such path. */
static const char *needs_env(const kd_config *cfg, long route) {
    static const char *const global[] = {
        "dedup.namespace",     "dedup.ttl",  "dedup.inflight_timeout",
        "dedup.max_key_bytes", "store.path", NULL};
    static char path[64];
    const char *hit;

    for (size_t i = 0; global[i]; i++)
        if ((hit = kd_config_unresolved(cfg, global[i])))
            return hit;
    for (size_t i = 0; i < cfg->nroutes; i++) {
        if (route >= 0 && (size_t)route != i)
            continue;
        snprintf(path, sizeof(path), "routes[%zu].", i);
        if ((hit = kd_config_unresolved(cfg, path)) &&
            (strstr(hit, ".from") || strstr(hit, ".key") || strstr(hit, ".name")))
            return hit;
    }
    return NULL;
}

/* The dedup caches of the routes asked for (all when route < 0), as the
 * pipeline makes them; NULL when out of memory. */
static kd_dedup **dedups_new(const kd_config *cfg, kd_store *store, long route) {
    kd_dedup **d = calloc(cfg->nroutes, sizeof(*d));
    char ns[512];

    for (size_t i = 0; d && i < cfg->nroutes; i++) {
        if (route >= 0 && (size_t)route != i)
            continue;
        snprintf(ns, sizeof(ns), "%s:%s", cfg->ns, cfg->routes[i].from);
        if (!(d[i] = kd_dedup_new(store, ns))) {
            while (i-- > 0)
                kd_dedup_destroy(d[i]);
            free(d);
            return NULL;
        }
        kd_dedup_set_retention(d[i], cfg->ttl_ms, cfg->inflight_timeout_ms);
    }
    return d;
}

int kd_lookup_main(int argc, char **argv) {
    const char *path = NULL, *name = NULL, *env;
    char err[16384], *line = NULL;
    size_t cap = 0;
    long route = -1;
    ssize_t n;
    kd_config *cfg;
    kd_store *store;
    kd_dedup **d;
    int rc = 1;

    for (int i = 1; i < argc; i += 2) {
        if (i + 1 == argc)
            return usage();
        if (!strcmp(argv[i], "--config"))
            path = argv[i + 1];
        else if (!strcmp(argv[i], "--route"))
            name = argv[i + 1];
        else
            return usage();
    }
    if (!path)
        return usage();
    if (!(cfg = kd_config_load_opts(path, KD_CONFIG_OFFLINE, err, sizeof(err)))) {
        fprintf(stderr, "%s\n", err);
        return 2;
    }
    for (size_t i = 0; name && i < cfg->nroutes && route < 0; i++)
        if (!strcmp(cfg->routes[i].name, name))
            route = (long)i;
    if (name && route < 0) {
        fprintf(stderr, "%s: no route named \"%s\" (the routes:", path, name);
        for (size_t i = 0; i < cfg->nroutes; i++)
            fprintf(stderr, "%s \"%s\"", i ? "," : "", cfg->routes[i].name);
        fprintf(stderr, ")\n");
        kd_config_destroy(cfg);
        return 2;
    }
    if ((env = needs_env(cfg, route))) {
        fprintf(stderr,
                "%s: %s holds a ${...} that is not set here; lookup needs its value\n",
                path, env);
        kd_config_destroy(cfg);
        return 2;
    }
    store = kd_pipeline_open_store(cfg, KD_PIPELINE_STORE_READER, err, sizeof(err));
    if (!store) {
        fprintf(stderr, "%s\n", err);
        kd_config_destroy(cfg);
        return 1;
    }
    if ((d = dedups_new(cfg, store, route))) {
        rc = 0;
        while ((n = getline(&line, &cap, stdin)) > 0) {
            if (line[n - 1] == '\n')
                line[--n] = '\0';
            for (size_t i = 0; n > 0 && i < cfg->nroutes; i++)
                if (d[i])
                    lookup_line(d[i], &cfg->routes[i], (size_t)cfg->max_key_bytes, line,
                                (size_t)n);
        }
        free(line);
        for (size_t i = 0; i < cfg->nroutes; i++)
            kd_dedup_destroy(d[i]);
        free(d);
    }
    kd_store_destroy(store);
    kd_config_destroy(cfg);
    return rc;
}
