/*
 * kdedup - recovery's object: made, destroyed, its turns' reading budget
 * and its stats (see recovery.h). Its parts, behind recovery_int.h:
 * recovery_read.c (the scanning consumer and the records it reads),
 * recovery_runs.c (run records), recovery_orphans.c (scans of dead runs'
 * partitions and their memory budget), recovery_history.c (handovers) and
 * recovery_since.c (deliveries of this run whose outcome is unknown).
 */
#include "sidecar/recovery_int.h"
#include "sidecar/clock.h"

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

/* True once this turn's reading budget is spent; the first call of a turn
 * starts its clock (the loop may have waited on its consumer since the
 * turn began). */
bool kd_rc_turn_over(kd_recovery *rc) {
    uint64_t now = kd_mono_us();

    if (!rc->turn_budget_us)
        return false;
    if (!rc->turn_end_us)
        rc->turn_end_us = now + rc->turn_budget_us;
    return now >= rc->turn_end_us;
}

bool kd_recovery_forwarded_since(int64_t at, uint64_t since_ms) {
    return at < 0 || (uint64_t)at + CLOCK_SLACK_MS >= since_ms;
}

void kd_recovery_set_progress(kd_recovery *rc, void (*fn)(void *arg), void *arg) {
    rc->progress = fn;
    rc->progress_arg = arg;
}

void kd_recovery_begin_turn(kd_recovery *rc, uint64_t budget_ms) {
    rc->turn_budget_us = budget_ms * 1000u;
    rc->turn_end_us = 0;
}

void kd_recovery_stats_get(const kd_recovery *rc, kd_recovery_stats *out) {
    *out = rc->stats;
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
    kd_signer_destroy(rc->signers[0]);
    kd_signer_destroy(rc->signers[1]);
    free(rc->brokers);
    free(rc);
}
