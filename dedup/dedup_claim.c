/*
 * kdedup - claims: a batch of keys claimed, or their decisions returned
 * (file map: dedup_int.h).
 */
#include "dedup/dedup_int.h"

#include <stdlib.h>
#include <string.h>

static kd_err decision_copy(const kd_decision *src, kd_decision *dst) {
    *dst = *src;
    dst->receipt = NULL;
    if (src->state != KD_COMPLETED)
        return KD_OK;
    if (!(dst->receipt = malloc(src->receipt_len ? src->receipt_len : 1)))
        return KD_ERR_STORE;
    memcpy(dst->receipt, src->receipt, src->receipt_len);
    return KD_OK;
}

/* The time a new claim of c is written with: its own, or the batch's ts. */
static uint64_t claim_time(const kd_claim *c, uint64_t ts) {
    return c->claimed_at ? c->claimed_at : ts;
}

/* Reads a leader's head and either plans its claim or sets its decision. */
static void claim_leader(batch *b, size_t i, kd_claim *c, uint64_t ts) {
    slot *s = &b->slots[i];
    kd_entry e;

    if ((c->err = s->read_err) != KD_OK)
        return;
    c->expired = false;
    c->expired_owner = 0;
    c->tombstoned_at = s->head.found && s->head.e.kind == KD_ENTRY_TOMBSTONE
                           ? s->head.e.timestamp_ms
                           : 0;
    c->forgotten_at = s->head.e.reason != KD_TOMB_RELEASE ? c->tombstoned_at : 0;
    if (kd_dedup_head_state_at(b->d, &s->head, ts) != ST_ABSENT) {
        c->owner = s->head.e.has_owner ? s->head.e.owner : 0;
        c->err = kd_dedup_decision_from_head(&s->head, &c->decision);
        return;
    }
    if (kd_dedup_head_state(&s->head) == ST_IN_FLIGHT) { /* expired: say whose it was */
        c->expired = true;
        c->expired_owner = s->head.e.has_owner ? s->head.e.owner : 0;
        c->expired_at = s->head.e.timestamp_ms;
    }
    e = (kd_entry){.kind = KD_ENTRY_ACTIVE,
                   .timestamp_ms = claim_time(c, ts),
                   .key = c->key,
                   .key_len = c->key_len};
    e.owner = atomic_load(&b->d->owner);
    e.has_owner = e.owner != 0;
    e.has_fingerprint = c->fingerprint != NULL;
    e.fingerprint = c->fingerprint;
    c->err = kd_dedup_batch_plan(b, s, &e);
}

/* Settles a planned claim after the write: claimed, or the race's winner. */
static void claim_settle(batch *b, size_t i, kd_claim *c, uint64_t ts) {
    slot *s = &b->slots[i];
    kd_err res = s->append->result;

    if (res == KD_OK) {
        c->decision =
            (kd_decision){.state = KD_CLAIMED, .timestamp_ms = claim_time(c, ts)};
        c->owner = atomic_load(&b->d->owner);
        c->seq = s->append->expected_seq;
        c->version = s->append->written_version;
        c->err = KD_OK;
        return;
    }
    c->err = res;
    c->expired = false; /* another claimer won, or nothing was written */
    if (res != KD_ERR_SEQUENCE_CONFLICT)
        return;
    c->err =
        kd_dedup_head_read(b->d, s->stream, b->stream_len, c->key, c->key_len, &s->head);
    if (c->err != KD_OK)
        return;
    if (kd_dedup_head_state(&s->head) == ST_ABSENT) {
        c->err = KD_ERR_SEQUENCE_CONFLICT;
        return;
    }
    c->owner = s->head.e.has_owner ? s->head.e.owner : 0;
    c->err = kd_dedup_decision_from_head(&s->head, &c->decision);
}

/* A repeated key: in flight behind its leader's claim, or the same decision. */
static void claim_follow(const kd_claim *lead, kd_claim *c) {
    c->err = lead->err;
    c->owner = lead->owner;
    if (lead->err != KD_OK)
        return;
    if (lead->decision.state == KD_CLAIMED) {
        c->decision = (kd_decision){.state = KD_IN_FLIGHT,
                                    .timestamp_ms = lead->decision.timestamp_ms};
        if (lead->fingerprint) { /* what the leader's claim stored */
            c->decision.has_fingerprint = true;
            memcpy(c->decision.fingerprint, lead->fingerprint, KD_FINGERPRINT_LEN);
        }
        return;
    }
    c->err = decision_copy(&lead->decision, &c->decision);
}

static void claims_fail(kd_claim *claims, size_t n, kd_err err) {
    for (size_t i = 0; i < n; i++)
        claims[i].err = err;
}

kd_err kd_dedup_claim_batch(kd_dedup *d, kd_claim *claims, size_t n,
                            uint64_t timestamp_ms) {
    size_t pool = 0;
    batch b;
    kd_err err;

    if (!d || (!claims && n))
        return KD_ERR_CONFIG;
    for (size_t i = 0; i < n; i++)
        if (!claims[i].key && claims[i].key_len)
            return KD_ERR_CONFIG;
    for (size_t i = 0; i < n; i++) {
        claims[i] = (kd_claim){.key = claims[i].key,
                               .key_len = claims[i].key_len,
                               .fingerprint = claims[i].fingerprint,
                               .claimed_at = claims[i].claimed_at};
        pool += kd_dedup_entry_bound(claims[i].key_len, false, 0);
    }

    if ((err = kd_dedup_batch_alloc(&b, d, n, pool)) == KD_OK) {
        for (size_t i = 0; i < n; i++) {
            b.slots[i].key = claims[i].key;
            b.slots[i].key_len = claims[i].key_len;
        }
        err = kd_dedup_batch_hash(&b);
    }
    if (err != KD_OK) {
        claims_fail(claims, n, err);
        kd_dedup_batch_free(&b);
        return KD_OK;
    }

    for (size_t i = 0; i < n; i++)
        memcpy(claims[i].hash, b.slots[i].hash, HASH_LEN);
    kd_dedup_batch_read_heads(&b);
    for (size_t i = 0; i < n; i++) {
        if (b.slots[i].leader == SIZE_MAX)
            claims[i].err = KD_ERR_DEDUP_COLLISION;
        else if (b.slots[i].leader == i)
            claim_leader(&b, i, &claims[i], timestamp_ms);
    }
    kd_store_append_batch(d->store, b.appends, b.nappends);
    for (size_t i = 0; i < n; i++)
        if (b.slots[i].append && claims[i].err == KD_OK)
            claim_settle(&b, i, &claims[i], timestamp_ms);
    for (size_t i = 0; i < n; i++) {
        size_t lead = b.slots[i].leader;

        if (lead != i && lead != SIZE_MAX)
            claim_follow(&claims[lead], &claims[i]);
    }
    kd_dedup_batch_free(&b);
    return KD_OK;
}

kd_err kd_dedup_claim_or_get(kd_dedup *d, const char *key, size_t key_len,
                             uint64_t timestamp_ms, kd_decision *out) {
    kd_claim c = {.key = key, .key_len = key_len};
    kd_err err;

    if (!out)
        return KD_ERR_CONFIG;
    memset(out, 0, sizeof(*out));
    if ((err = kd_dedup_claim_batch(d, &c, 1, timestamp_ms)) != KD_OK)
        return err;
    if (c.err == KD_OK)
        *out = c.decision;
    return c.err;
}
