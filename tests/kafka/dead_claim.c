/*
 * dead_claim (outside hunt, 2026-12-07): leaves in the store of CONFIG what
 * a run OWNER (hex) killed after forwarding KEY leaves: its run record (every
 * downstream partition of the first route starting at 0) and KEY's claim,
 * in flight, made now (fresh: far from dedup.inflight_timeout).
 *
 *   dead_claim CONFIG OWNER KEY
 */
#include "config/config.h"
#include "dedup/dedup.h"
#include "dedup/store.h"
#include "sidecar/recovery.h"
#include "store_rocks/store_rocks.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

int main(int argc, char **argv) {
    char err[512], stream[32], ns[512], run[1024];
    kd_config *cfg;
    kd_store *store;
    kd_dedup *d;
    kd_decision dec;
    struct timeval tv;
    uint64_t owner;
    int n;

    if (argc != 4) {
        fprintf(stderr, "usage: dead_claim CONFIG OWNER KEY\n");
        return 2;
    }
    if (!(cfg = kd_config_load(argv[1], err, sizeof(err)))) {
        fprintf(stderr, "dead_claim: %s\n", err);
        return 2;
    }
    owner = strtoull(argv[2], NULL, 16);
    if (!(store = kd_rocks_open(cfg->store_path, true, err, sizeof(err)))) {
        fprintf(stderr, "dead_claim: %s\n", err);
        return 1;
    }
    n = snprintf(run, sizeof(run), "kdedup-run v1\n");
    for (int p = 0; p < 16; p++)
        n +=
            snprintf(run + n, sizeof(run) - (size_t)n, "%d 0 %s\n", p, cfg->routes[0].to);
    if (kd_store_append(store, stream,
                        kd_recovery_run_stream(owner, stream, sizeof(stream)), 0, run,
                        (size_t)n) != KD_OK) {
        fprintf(stderr, "dead_claim: run record not written\n");
        return 1;
    }
    snprintf(ns, sizeof(ns), "%s:%s", cfg->ns, cfg->routes[0].from);
    d = kd_dedup_new(store, ns);
    kd_dedup_set_owner(d, owner);
    gettimeofday(&tv, NULL);
    if (kd_dedup_claim_or_get(d, argv[3], strlen(argv[3]),
                              (uint64_t)tv.tv_sec * 1000 + (uint64_t)tv.tv_usec / 1000,
                              &dec) != KD_OK ||
        dec.state != KD_CLAIMED) {
        fprintf(stderr, "dead_claim: %s not claimed\n", argv[3]);
        return 1;
    }
    kd_decision_clear(&dec);
    kd_dedup_destroy(d);
    kd_store_destroy(store);
    kd_config_destroy(cfg);
    printf("claimed\n");
    return 0;
}
