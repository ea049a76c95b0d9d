/*
 * kdedup - `kdedup lookup`: what the store says about idempotency keys.
 *
 *   kdedup lookup --config FILE [--route FROM] < keys
 *
 * Reads one key per line on stdin and prints one JSON object per line:
 * {"key": ..., "state": "completed" | "in_flight" | "absent", "receipt": ...,
 * "fingerprint": ...} ("receipt" when completed; "fingerprint", the SHA-256
 * stored with the claim in hex, when there is one; "error" instead of
 * "state" when the entry cannot be read). For a route with a composite key,
 * a line holds the parts separated by tabs, in the order of key.parts. The route is
 * routes[0] unless --route names its source topic. Opens the store itself: run it while
 * no kdedup holds the store.
 */
#include "config/config.h"
#include "dedup/dedup.h"
#include "sidecar/keysrc.h"
#include "sidecar/tools.h"
#include "store_rocks/store_rocks.h"

#include <cjson/cJSON.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Prints one key's line; shown is the key as the line gave it. */
static void print_state(kd_dedup *d, const char *shown, const char *key, size_t len) {
    cJSON *o = cJSON_CreateObject();
    kd_decision dec = {0};
    bool found = false;
    kd_err err = kd_dedup_lookup(d, key, len, &dec, &found);
    char *line;

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
                                kd_keysrc_hex(dec.fingerprint, KD_FINGERPRINT_LEN, hex));
    }
    kd_decision_clear(&dec);
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
        print_state(d, line, line, len);
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
        printf("{\"key\": \"(line of %zu parts)\", \"error\": \"expected %zu "
               "tab-separated parts\"}\n",
               n, r->nkey_parts);
        return;
    }
    if ((st = kd_keysrc_compose(parts, lens, n, max_key, &key)) != KD_KEY_OK) {
        printf("{\"error\": \"key %s\"}\n", kd_key_status_name(st));
        return;
    }
    print_state(d, line, key.bytes, key.len);
    kd_key_clear(&key);
}

static int usage(void) {
    fprintf(stderr, "usage: kdedup lookup --config FILE [--route FROM] < keys\n");
    return 2;
}

int kd_lookup_main(int argc, char **argv) {
    const char *path = NULL, *from = NULL;
    char err[1024], ns[512], *line = NULL;
    size_t cap = 0, route = 0;
    ssize_t n;
    kd_config *cfg;
    kd_store *store;
    kd_dedup *d;

    for (int i = 1; i < argc; i += 2) {
        if (i + 1 == argc)
            return usage();
        if (!strcmp(argv[i], "--config"))
            path = argv[i + 1];
        else if (!strcmp(argv[i], "--route"))
            from = argv[i + 1];
        else
            return usage();
    }
    if (!path)
        return usage();
    if (!(cfg = kd_config_load(path, err, sizeof(err)))) {
        fprintf(stderr, "%s\n", err);
        return 2;
    }
    for (route = 0; from && route < cfg->nroutes; route++)
        if (!strcmp(cfg->routes[route].from, from))
            break;
    if (route == cfg->nroutes) {
        fprintf(stderr, "%s: no route from \"%s\"\n", path, from);
        kd_config_destroy(cfg);
        return 2;
    }
    if (!(store = kd_rocks_open(cfg->store_path, false, err, sizeof(err)))) {
        fprintf(stderr, "%s\n", err);
        kd_config_destroy(cfg);
        return 1;
    }
    snprintf(ns, sizeof(ns), "%s:%s", cfg->ns, cfg->routes[route].from);
    if ((d = kd_dedup_new(store, ns))) {
        kd_dedup_set_retention(d, cfg->ttl_ms, cfg->inflight_timeout_ms);
        while ((n = getline(&line, &cap, stdin)) > 0) {
            if (line[n - 1] == '\n')
                line[--n] = '\0';
            if (n > 0)
                lookup_line(d, &cfg->routes[route], (size_t)cfg->max_key_bytes, line,
                            (size_t)n);
        }
        free(line);
        kd_dedup_destroy(d);
    }
    kd_store_destroy(store);
    kd_config_destroy(cfg);
    return d ? 0 : 1;
}
