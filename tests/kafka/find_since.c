/*
 * find_since: asks kdedup's recovery whether KEY was forwarded to downstream
 * partition PARTITION of the config's first route from offset FROM on, as a
 * read for a delivery of unknown outcome does (kd_recovery_find_since), and
 * asks again every 100 ms while the answer is "later", for SECONDS at most.
 * For tests/e2e/hanging_txn_test.py (phase "held reads").
 *
 *   find_since CONFIG BOOTSTRAP PARTITION KEY FROM SECONDS
 *
 * Prints each answer when it changes ("later", then "found OFFSET",
 * "absent" or "unknown"), and exits 0 once one is not "later"; 2 on bad
 * arguments, 1 when the time is up.
 */
#include "config/config.h"
#include "dedup/store.h"
#include "sidecar/recovery.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static const char *const names[] = {
    [KD_RECOVER_FOUND] = "found",
    [KD_RECOVER_ABSENT] = "absent",
    [KD_RECOVER_UNKNOWN] = "unknown",
    [KD_RECOVER_LATER] = "later",
};

int main(int argc, char **argv) {
    char err[512];
    kd_config *cfg;
    kd_store *store;
    kd_recovery *rc;
    int rv = 1;

    if (argc != 7) {
        fprintf(stderr,
                "usage: find_since CONFIG BOOTSTRAP PARTITION KEY FROM SECONDS\n");
        return 2;
    }
    if (!(cfg = kd_config_load(argv[1], err, sizeof(err)))) {
        fprintf(stderr, "find_since: %s\n", err);
        return 2;
    }
    store = kd_store_mem_new();
    if (!store || !(rc = kd_recovery_new(cfg, store, argv[2], err, sizeof(err)))) {
        fprintf(stderr, "find_since: %s\n", store ? err : "out of memory");
        kd_store_destroy(store);
        kd_config_destroy(cfg);
        return 2;
    }
    kd_recover_ask a = {
        .key = argv[4], .key_len = strlen(argv[4]), .from = atoll(argv[5])};
    time_t until = time(NULL) + atoi(argv[6]);
    int last = -1;

    for (;;) {
        kd_recover_found f;
        kd_recover_result res;

        kd_recovery_begin_turn(rc, 0); /* each read to its end */
        res = kd_recovery_find_since(rc, 0, (int32_t)atoi(argv[3]), &a, &f);
        if ((int)res != last || res == KD_RECOVER_FOUND) {
            if (res == KD_RECOVER_FOUND)
                printf("found %" PRId64 "\n", f.offset);
            else
                printf("%s\n", names[res]);
            fflush(stdout);
            last = (int)res;
        }
        if (res != KD_RECOVER_LATER) {
            rv = 0;
            break;
        }
        if (time(NULL) >= until)
            break;
        nanosleep(&(struct timespec){.tv_nsec = 100 * 1000000L}, NULL);
    }
    kd_recovery_destroy(rc);
    kd_store_destroy(store);
    kd_config_destroy(cfg);
    return rv;
}
