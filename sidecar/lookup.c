/*
 * kdedup - `kdedup lookup`: what the store says about idempotency keys.
 *
 *   kdedup lookup --config FILE [--route FROM] < keys
 *
 * Reads one key per line on stdin and prints one JSON object per line:
 * {"key": ..., "state": "completed" | "in_flight" | "absent", "receipt": ...}
 * ("receipt" when completed; "error" instead of "state" when the entry
 * cannot be read). The route is routes[0] unless --route names its source
 * topic. Opens the store itself: run it while no kdedup holds the store.
 */
#include "config/config.h"
#include "dedup/dedup.h"
#include "sidecar/tools.h"
#include "store_rocks/store_rocks.h"

#include <cjson/cJSON.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Prints one key's line. */
static void print_state(kd_dedup *d, const char *key, size_t len) {
    cJSON *o = cJSON_CreateObject();
    kd_decision dec = {0};
    bool found = false;
    kd_err err = kd_dedup_lookup(d, key, len, &dec, &found);
    char *line;

    cJSON_AddStringToObject(o, "key", key);
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
    kd_decision_clear(&dec);
    if ((line = cJSON_PrintUnformatted(o)))
        printf("%s\n", line);
    free(line);
    cJSON_Delete(o);
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
                print_state(d, line, (size_t)n);
        }
        free(line);
        kd_dedup_destroy(d);
    }
    kd_store_destroy(store);
    kd_config_destroy(cfg);
    return d ? 0 : 1;
}
