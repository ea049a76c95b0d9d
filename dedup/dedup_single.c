/*
 * kdedup - one key, no batch form: lookup, forget and release (file map:
 * dedup_int.h).
 */
#include "dedup/dedup_int.h"

#include <stdlib.h>
#include <string.h>

/* Hashes key and reads its stream's head; *stream is malloc()ed. */
static kd_err single_read(kd_dedup *d, const char *key, size_t key_len, char **stream,
                          head *h) {
    unsigned char hash[HASH_LEN];

    if (!(*stream = malloc(kd_dedup_stream_len(d))))
        return KD_ERR_STORE;
    kd_dedup_stream_of(d, key, key_len, hash, *stream);
    return kd_dedup_head_read(d, *stream, kd_dedup_stream_len(d), key, key_len, h);
}

kd_err kd_dedup_inspect(kd_dedup *d, const char *key, size_t key_len, kd_decision *out,
                        uint64_t *owner, bool *found) {
    char *stream = NULL;
    head h = {0};
    uint64_t now;
    kd_err err;

    if (!d || !out || !found || (!key && key_len))
        return KD_ERR_CONFIG;
    memset(out, 0, sizeof(*out));
    *found = false;
    if (owner)
        *owner = 0;
    if (!kd_dedup_now_ms(&now))
        return KD_ERR_CONFIG;
    err = single_read(d, key, key_len, &stream, &h);
    if (err == KD_OK && kd_dedup_head_state_at(d, &h, now) != ST_ABSENT) {
        err = kd_dedup_decision_from_head(&h, out);
        *found = err == KD_OK;
        if (*found && owner && out->state == KD_IN_FLIGHT && h.e.has_owner)
            *owner = h.e.owner;
    }
    kd_dedup_head_clear(&h);
    free(stream);
    return err;
}

kd_err kd_dedup_lookup(kd_dedup *d, const char *key, size_t key_len, kd_decision *out,
                       bool *found) {
    return kd_dedup_inspect(d, key, key_len, out, NULL, found);
}

/* Appends a tombstone of key (at now, for reason) to stream as the entry
 * after h. */
static kd_err append_tombstone(kd_dedup *d, const char *stream, const head *h,
                               const char *key, size_t key_len, uint64_t now,
                               kd_tomb_reason reason) {
    kd_entry e = {.kind = KD_ENTRY_TOMBSTONE,
                  .reason = reason,
                  .timestamp_ms = now,
                  .key = key,
                  .key_len = key_len};
    void *payload;
    size_t payload_len;
    kd_err err;

    if ((err = kd_entry_encode_alloc(&e, &payload, &payload_len)) != KD_OK)
        return err;
    err = kd_store_append(d->store, stream, kd_dedup_stream_len(d), kd_dedup_next_seq(h),
                          payload, payload_len);
    free(payload);
    return err;
}

/* How a forget judges the key: an operator's (force, protect), or one made
 * elsewhere and replayed (covers, dated at). */
typedef struct forget_rule {
    bool force;
    bool (*protect)(void *arg, uint64_t owner);
    bool (*covers)(void *arg, const kd_decision *dec);
    void *arg;
    uint64_t at; /* the tombstone's time; 0: now */
} forget_rule;

/* A completed head: true in *yes when the rule forgets it. */
static kd_err forget_covers(const head *h, const forget_rule *rule, bool *yes) {
    kd_decision dec;
    kd_err err;

    *yes = true;
    if (!rule->covers)
        return KD_OK;
    if ((err = kd_dedup_decision_from_head(h, &dec)) != KD_OK)
        return err;
    *yes = rule->covers(rule->arg, &dec);
    kd_decision_clear(&dec);
    return KD_OK;
}

static kd_err forget_with(kd_dedup *d, const char *key, size_t key_len,
                          const forget_rule *rule, kd_forget_result *result) {
    char *stream = NULL;
    head h = {0};
    uint64_t now;
    bool yes;
    kd_err err;

    if (!d || !result || (!key && key_len))
        return KD_ERR_CONFIG;
    *result = KD_FORGET_ABSENT;
    if (!kd_dedup_now_ms(&now))
        return KD_ERR_CONFIG;
    if ((err = single_read(d, key, key_len, &stream, &h)) != KD_OK)
        goto done;
    switch (kd_dedup_head_state_at(d, &h, now)) {
    case ST_ABSENT:
        goto done;
    case ST_IN_FLIGHT:
        if (!rule->force) {
            *result = KD_FORGET_IN_FLIGHT;
            goto done;
        }
        if (rule->protect && rule->protect(rule->arg, h.e.has_owner ? h.e.owner : 0)) {
            *result = KD_FORGET_PROTECTED;
            goto done;
        }
        break;
    case ST_COMPLETED:
        if ((err = forget_covers(&h, rule, &yes)) != KD_OK)
            goto done;
        if (!yes) {
            *result = KD_FORGET_PROTECTED;
            goto done;
        }
        break;
    }
    /* Appended only as the entry after the one judged: a claim, receipt or
     * release that came between is never overwritten by a stale decision. */
    err = append_tombstone(d, stream, &h, key, key_len, rule->at ? rule->at : now,
                           KD_TOMB_FORGET);
    if (err == KD_OK)
        *result = KD_FORGET_DONE;
done:
    kd_dedup_head_clear(&h);
    free(stream);
    return err;
}

kd_err kd_dedup_forget(kd_dedup *d, const char *key, size_t key_len, bool force,
                       bool (*protect)(void *arg, uint64_t owner), void *arg,
                       kd_forget_result *result) {
    forget_rule rule = {.force = force, .protect = protect, .arg = arg};

    return forget_with(d, key, key_len, &rule, result);
}

kd_err kd_dedup_forget_replay(kd_dedup *d, const char *key, size_t key_len,
                              uint64_t at_ms,
                              bool (*covers)(void *arg, const kd_decision *dec),
                              void *arg, kd_forget_result *result) {
    forget_rule rule = {.covers = covers, .arg = arg, .at = at_ms};

    if (at_ms == 0)
        return KD_ERR_CONFIG;
    return forget_with(d, key, key_len, &rule, result);
}

/* Releases key's claim in flight with a tombstone of reason, dated at (0:
 * now). */
static kd_err release_with(kd_dedup *d, const char *key, size_t key_len,
                           kd_tomb_reason reason, uint64_t at) {
    char *stream = NULL;
    head h = {0};
    uint64_t now;
    kd_err err;

    if (!d || (!key && key_len))
        return KD_ERR_CONFIG;
    if (!kd_dedup_now_ms(&now))
        return KD_ERR_CONFIG;
    err = single_read(d, key, key_len, &stream, &h);
    if (err != KD_OK || kd_dedup_head_state(&h) != ST_IN_FLIGHT)
        goto done; /* absent or completed: nothing to release, never a receipt */

    err = append_tombstone(d, stream, &h, key, key_len, at ? at : now, reason);
    if (err != KD_ERR_SEQUENCE_CONFLICT)
        goto done;
    /* Lost a race: fine if the key is now completed or released; a fresh
     * re-claim must not be erased by this stale release. */
    if ((err = kd_dedup_head_read(d, stream, kd_dedup_stream_len(d), key, key_len, &h)) ==
        KD_OK)
        err = kd_dedup_head_state(&h) == ST_IN_FLIGHT ? KD_ERR_SEQUENCE_CONFLICT : KD_OK;
done:
    kd_dedup_head_clear(&h);
    free(stream);
    return err;
}

kd_err kd_dedup_release_claim(kd_dedup *d, const char *key, size_t key_len) {
    return release_with(d, key, key_len, KD_TOMB_RELEASE, 0);
}

kd_err kd_dedup_release_forgotten(kd_dedup *d, const char *key, size_t key_len,
                                  uint64_t forgotten_at) {
    if (forgotten_at == 0)
        return KD_ERR_CONFIG;
    return release_with(d, key, key_len, KD_TOMB_FORGET, forgotten_at);
}
