/*
 * kdedup - the pipeline's key conflicts: a key met again with another
 * payload (its fingerprint differs from the claim's), judged per the
 * route's on_key_conflict (file map: pipeline_int.h).
 */
#include "dedup/hex.h"
#include "dedup/sha256.h"
#include "sidecar/log.h"
#include "sidecar/pipeline_int.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* What a conflict's dead letter says of the original: its receipt, or the
 * claim in flight; malloc()ed, or NULL when out of memory. */
static char *original_of(const kd_decision *d) {
    char text[64];
    char *s;

    if (d->state == KD_COMPLETED) {
        if ((s = malloc(d->receipt_len + 1))) {
            memcpy(s, d->receipt, d->receipt_len);
            s[d->receipt_len] = '\0';
        }
        return s;
    }
    snprintf(text, sizeof(text), "in-flight claimed-at=%" PRIu64, d->timestamp_ms);
    return strdup(text);
}

/* Key conflicts come at the rate of messages (a producer that puts a retry
 * timestamp in the payload): their lines are rate-limited, process-wide. */
static kd_log_limit conflict_log = KD_LOG_LIMIT_INIT;

/* Logs a key conflict: the key by a digest prefix (keys may be personal
 * data), the route, and both fingerprints' prefixes; within the budget of
 * conflict_log. */
static void log_conflict(kd_pipeline *p, const msg *m, const kd_decision *d,
                         const char *action) {
    unsigned char digest[KD_SHA256_LEN];
    char part[16], off[24], key[17], mine[17], theirs[17], left[24];
    uint64_t left_out;

    if (!kd_log_enabled(KD_LOG_WARN) ||
        !kd_log_limit_pass(&conflict_log, kd_mono_ms(), &left_out))
        return;
    kd_sha256(m->key, m->key_len, digest);
    snprintf(part, sizeof(part), "%" PRId32, m->rkm->partition);
    snprintf(off, sizeof(off), "%" PRId64, m->rkm->offset);
    snprintf(left, sizeof(left), "%" PRIu64, left_out);
    const char *fields[] = {"topic",
                            src_topic(m),
                            "partition",
                            part,
                            "offset",
                            off,
                            "route",
                            p->cfg->routes[m->route].name,
                            "key_sha256",
                            kd_hex(digest, 8, key),
                            "fingerprint",
                            kd_hex(m->fp, 8, mine),
                            "original_fingerprint",
                            kd_hex(d->fingerprint, 8, theirs),
                            "original",
                            d->state == KD_COMPLETED ? "completed" : "in_flight",
                            "action",
                            action,
                            left_out ? "left_out" : NULL,
                            left,
                            NULL};

    kd_log_write(KD_LOG_WARN, fields,
                 "key conflict: the key was claimed for another payload%s",
                 left_out ? " (left_out: conflicts not logged before this one, at most "
                            "10 lines a minute; kdedup_key_conflicts_total counts all)"
                          : "");
}

bool kd_pl_conflict_judge(kd_pipeline *p, msg *m, const kd_decision *d, uint64_t owner) {
    const kd_route *r = p->routes[m->route].cfg;

    if (!m->has_fp || !d->has_fingerprint ||
        !memcmp(m->fp, d->fingerprint, KD_FINGERPRINT_LEN))
        return false;
    /* In flight, only a claim a live message of this run holds is judged.
     * Any other (a dead run's, an ended ownership's) is resolved first as
     * before (takeover, parking, reading downstream): it may be this very
     * message's, fingerprinted under another config, and its delivery may
     * yet fail. Once resolved, the key is claimed anew or completed. */
    if (d->state == KD_IN_FLIGHT) {
        msg *holder = owner == p->boot_id
                          ? kd_held_find(p->keys.held, m->route, m->key, m->key_len)
                          : NULL;

        if (!holder || !msg_live(p, holder))
            return false;
    }
    switch (r->on_key_conflict) {
    case KD_CONFLICT_SKIP: /* skipped like any duplicate, and counted as one too */
        log_conflict(p, m, d, "skip");
        RCOUNT(p, m->route, key_conflicts_skipped);
        if (d->state == KD_COMPLETED)
            RCOUNT(p, m->route, duplicates_completed);
        else
            RCOUNT(p, m->route, duplicates_in_flight);
        kd_pl_msg_done(p, m);
        break;
    case KD_CONFLICT_DEAD_LETTER:
        log_conflict(p, m, d, "dead_letter");
        RCOUNT(p, m->route, key_conflicts_dead_lettered);
        m->kind = MSG_DEAD_LETTER;
        m->dl_reason = KD_REASON_KEY_CONFLICT;
        m->conflict_original = original_of(d);
        m->orig_has_fp = true;
        memcpy(m->orig_fp, d->fingerprint, KD_FINGERPRINT_LEN);
        kd_pl_produce(p, m);
        break;
    case KD_CONFLICT_FORWARD:
        log_conflict(p, m, d, "forward");
        RCOUNT(p, m->route, key_conflicts_forwarded);
        m->kind = MSG_PLAIN;
        /* Sent as a message without a key: never signed or keyed for the
         * handover, which must not take it for the original's delivery. */
        m->key = NULL;
        m->key_len = 0;
        kd_pl_produce(p, m);
        break;
    }
    return true;
}
