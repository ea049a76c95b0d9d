/*
 * kdedup - recovery made and destroyed (see recovery.h): the one part that
 * calls the others', to free what each holds.
 */
#include "sidecar/recovery_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

kd_recovery *kd_recovery_new(const kd_config *cfg, kd_store *store, const char *brokers,
                             char *errstr, size_t errstr_size) {
    kd_recovery *rc = calloc(1, sizeof(*rc));

    if (!rc || !(rc->brokers = strdup(brokers))) {
        free(rc);
        snprintf(errstr, errstr_size, "out of memory");
        return NULL;
    }
    rc->cfg = cfg;
    rc->store = store;
    if ((cfg->signing_key && !(rc->signers[0] = kd_signer_new(cfg->signing_key))) ||
        (cfg->previous_signing_key &&
         !(rc->signers[1] = kd_signer_new(cfg->previous_signing_key)))) {
        snprintf(errstr, errstr_size, "libcrypto: no HMAC-SHA256 for the signing key");
        kd_recovery_destroy(rc);
        return NULL;
    }
    return rc;
}

void kd_recovery_destroy(kd_recovery *rc) {
    if (!rc)
        return;
    kd_recovery_forget(rc);
    if (rc->scanner) {
        rd_kafka_consumer_close(rc->scanner);
        rd_kafka_destroy(rc->scanner);
    }
    kd_rc_history_unassign(rc);
    if (rc->historian) {
        rd_kafka_consumer_close(rc->historian);
        rd_kafka_destroy(rc->historian);
    }
    if (rc->watcher)
        rd_kafka_destroy(rc->watcher); /* never assigned, never subscribed */
    kd_signer_destroy(rc->signers[0]);
    kd_signer_destroy(rc->signers[1]);
    free(rc->brokers);
    free(rc);
}
