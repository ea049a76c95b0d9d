/*
 * kdedup - the dedup contract: claim an idempotency key, record its receipt,
 * or release the claim, over a durable store (store.h).
 *
 * Each key maps to one stream, namespace ":" hex(SHA-256(key)). The newest
 * entry of the stream decides the key's state: none or a tombstone → absent;
 * active without receipt → in flight; active with receipt → completed. Every
 * entry stores the original key, so a hash collision is reported as
 * KD_ERR_DEDUP_COLLISION, never merged.
 *
 * A kd_dedup is thread-safe. It shares the store and never owns it: destroy
 * the dedup before the store.
 */
#ifndef KD_DEDUP_H
#define KD_DEDUP_H

#include "dedup/store.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum kd_state { KD_CLAIMED, KD_IN_FLIGHT, KD_COMPLETED } kd_state;

/* Bytes of a key's hash (SHA-256), as kd_claim.hash gives it. */
#define KD_KEY_HASH_LEN 32

/* Bytes of a claim's fingerprint (an addition: SHA-256 of what it forwarded). */
#define KD_FINGERPRINT_LEN 32

typedef struct kd_decision {
    kd_state state;
    uint64_t timestamp_ms; /* claim time (in flight) or completion time (completed) */
    void *receipt;         /* KD_COMPLETED only: malloc()ed copy of the receipt bytes */
    size_t receipt_len;
    /* An addition: KD_IN_FLIGHT and KD_COMPLETED: the fingerprint stored
     * with the claim, when it was made with one. */
    bool has_fingerprint;
    unsigned char fingerprint[KD_FINGERPRINT_LEN];
} kd_decision;

/* Frees d->receipt and clears it. NULL-safe. */
void kd_decision_clear(kd_decision *d);

typedef struct kd_dedup kd_dedup;

/* Creates a dedup cache over store, with stream keys prefixed by namespace_
 * (copied). The store is shared, not owned. Returns NULL if an argument is
 * NULL or on allocation failure. */
kd_dedup *kd_dedup_new(kd_store *store, const char *namespace_);

/* Destroys the cache (not its store). NULL-safe. */
void kd_dedup_destroy(kd_dedup *d);

/* Writes the stream key of an idempotency key into buf, snprintf-like: at
 * most buf_size - 1 characters and a NUL. Returns the key's full length. */
size_t kd_dedup_stream_key_for(const kd_dedup *d, const char *key, size_t key_len,
                               char *buf, size_t buf_size);

/* Looks up a key without writing anything. *found = false when absent
 * (or expired, with retention). On KD_OK with *found, out holds the state
 * (KD_IN_FLIGHT or KD_COMPLETED); clear it with kd_decision_clear().
 * Returns KD_ERR_DEDUP_COLLISION when the stream holds another key, or a
 * store or serialization error. */
kd_err kd_dedup_lookup(kd_dedup *d, const char *key, size_t key_len, kd_decision *out,
                       bool *found);

/* Claims a key at timestamp_ms, or returns its existing decision: KD_CLAIMED
 * (deliver the message), KD_IN_FLIGHT (another claim holds it) or
 * KD_COMPLETED (with the receipt). Among concurrent claimers of one key,
 * exactly one gets KD_CLAIMED. Clear out with kd_decision_clear(). */
kd_err kd_dedup_claim_or_get(kd_dedup *d, const char *key, size_t key_len,
                             uint64_t timestamp_ms, kd_decision *out);

/* Records the receipt of a claimed key, completing it. Idempotent for the
 * same receipt bytes; KD_ERR_DEDUP_COLLISION for a missing key or another
 * receipt; KD_ERR_CONFIG when the clock cannot be read or encoded. */
kd_err kd_dedup_complete_receipt(kd_dedup *d, const char *key, size_t key_len,
                                 const void *receipt, size_t receipt_len);

/* Releases an in-flight claim with a tombstone, so the key can be claimed
 * again. Absent or completed keys are left alone (KD_OK, nothing written).
 * Returns KD_ERR_SEQUENCE_CONFLICT if the key was re-claimed meanwhile. */
kd_err kd_dedup_release_claim(kd_dedup *d, const char *key, size_t key_len);

/* kd_dedup_release_claim() of a claim made over a letting go that is to
 * stand (an operator's forget, kd_claim.forgotten_at; or an expired claim
 * taken over, kd_claim.expired_at, which says the key was absent then):
 * the tombstone is a forget's, dated forgotten_at (wall ms), so that a
 * later claim reports it in its forgotten_at. KD_ERR_CONFIG when
 * forgotten_at is 0. */
kd_err kd_dedup_release_forgotten(kd_dedup *d, const char *key, size_t key_len,
                                  uint64_t forgotten_at);

/*
 * Additions to the seed contract.
 */

/* Sets retention (0 = off, the default): completed entries older than ttl_ms
 * and in-flight claims older than inflight_timeout_ms count as absent for
 * claim and lookup, and the store may drop them. Also tells the store, which
 * keeps entries for the longest retention any cache asked for. */
void kd_dedup_set_retention(kd_dedup *d, uint64_t ttl_ms, uint64_t inflight_timeout_ms);

/* Sets the owner id stamped on new claims (e.g. the process's boot id), so a
 * later process can recognise claims orphaned by a crash. 0 = none. Claims
 * stamped with this owner do not expire for this cache (inflight_timeout
 * applies to other owners' claims): their process resolves them itself. */
void kd_dedup_set_owner(kd_dedup *d, uint64_t owner);

/* One key of a claim batch. */
typedef struct kd_claim {
    const char *key; /* in */
    size_t key_len;  /* in */
    /* in, optional: KD_FINGERPRINT_LEN bytes stored with a new claim (and
     * kept by its completion); a duplicate's decision carries the stored
     * one, so the caller can tell a key reused for another payload. */
    const unsigned char *fingerprint;
    /* in, optional: when a new claim of this key says it was made (wall
     * ms), instead of the batch's timestamp (0 = the batch's). A handover
     * claims a learned key at its record's forwarding time, so that reading
     * the record again judges that claim its delivery's, not a copy's. The
     * batch's timestamp still judges whether a held claim expired. */
    uint64_t claimed_at;
    kd_err err;           /* out: this key's result */
    kd_decision decision; /* out when err == KD_OK; clear with kd_decision_clear() */
    uint64_t owner;       /* out: KD_IN_FLIGHT: the holder's owner id (0 = none) */
    /* out, KD_CLAIMED: the key was held by an unfinished claim older than
     * inflight_timeout (absent by retention), whose owner was expired_owner
     * (0 = none recorded), made at expired_at (wall ms). Its delivery may
     * have happened: a caller that can look it up should, before
     * delivering again. */
    bool expired;
    uint64_t expired_owner;
    uint64_t expired_at;
    /* out, KD_CLAIMED: when (wall ms) the key was last released or forgotten
     * (its newest entry was a tombstone), or 0 */
    uint64_t tombstoned_at;
    /* out, KD_CLAIMED: tombstoned_at when that tombstone was an operator's
     * forget (kd_dedup_forget), or written before tombstones said why; 0
     * when it was a release (kd_dedup_release_claim), or there was none */
    uint64_t forgotten_at;
    /* out, KD_CLAIMED: the claim's place in its stream and the store's
     * stamp of the write (0 = none), for kd_completion.claim_* */
    uint64_t seq;
    uint64_t version;
    /* out: the key's hash (SHA-256), for kd_completion.claim_hash */
    unsigned char hash[KD_KEY_HASH_LEN];
} kd_claim;

/* Claims every key of the batch at timestamp_ms with one store write, with
 * the per-key semantics of kd_dedup_claim_or_get(): a key repeated in the
 * batch is claimed by its first occurrence and in flight for the rest.
 * Returns KD_OK when each item's err and decision are set, or KD_ERR_CONFIG
 * for bad arguments (items untouched). */
kd_err kd_dedup_claim_batch(kd_dedup *d, kd_claim *claims, size_t n,
                            uint64_t timestamp_ms);

/* One key of a completion batch. */
typedef struct kd_completion {
    const char *key;     /* in */
    size_t key_len;      /* in */
    const void *receipt; /* in */
    size_t receipt_len;  /* in */
    /* in, optional (claim_version 0 = none): the claim this receipt
     * completes, as kd_dedup_claim_batch() gave it to this process on the
     * same kd_dedup (its seq and version) with the fingerprint it stored
     * (or NULL). The key is then not read: the store checks that nothing
     * was written to it since, and the receipt is appended after the
     * claim; when something was, the key is read and decided as without
     * them. */
    uint64_t claim_seq;
    uint64_t claim_version;
    const unsigned char *fingerprint;
    /* in, optional, with claim_version: that claim's kd_claim.hash (NULL =
     * none): the key is then not hashed again. It must be the hash of this
     * very key, as the claim gave it. */
    const unsigned char *claim_hash;
    kd_err err; /* out: this key's result */
} kd_completion;

/* Completes every key of the batch with one store write, with the per-key
 * semantics of kd_dedup_complete_receipt() (items with claim_* that were
 * overtaken are decided in a second write). Returns KD_OK when each item's
 * err is set, or KD_ERR_CONFIG for bad arguments (items untouched). */
kd_err kd_dedup_complete_batch(kd_dedup *d, kd_completion *items, size_t n);

/* kd_dedup_complete_batch() with a lazy write (kd_store_append_batch_lazy):
 * the receipts are durable only once a later durable write of the store,
 * or kd_store_sync(), has returned KD_OK. Until then a crash may lose them
 * (their claims then stay in flight, for recovery), so nothing that relies
 * on them may be made durable elsewhere (an offset committed) before. */
kd_err kd_dedup_complete_batch_lazy(kd_dedup *d, kd_completion *items, size_t n);

/* Looks up a key like kd_dedup_lookup(), and also gives the owner id of an
 * in-flight claim in *owner (0 when none was recorded, or not in flight).
 * For operators' tools: it reads only. */
kd_err kd_dedup_inspect(kd_dedup *d, const char *key, size_t key_len, kd_decision *out,
                        uint64_t *owner, bool *found);

/* What kd_dedup_forget() did. */
typedef enum kd_forget_result {
    KD_FORGET_DONE,      /* a tombstone was appended: the next claim succeeds */
    KD_FORGET_ABSENT,    /* absent (or released, or expired): nothing written */
    KD_FORGET_IN_FLIGHT, /* in flight and not forced: nothing written */
    KD_FORGET_PROTECTED  /* in flight, held by a protected owner: nothing written */
} kd_forget_result;

/* Forgets a key on an operator's order, so the next copy of its message is
 * claimed and forwarded again: a completed key gets a tombstone (durable
 * when the store is). An in-flight claim is left alone unless force is set
 * and protect(arg, owner) returns false for the claim's owner id (protect
 * may be NULL: no owner is protected); a claim this process still works on
 * must be protected, or its message could be forwarded twice. The check and
 * the append are one step against the stream's sequence: if the key
 * changed meanwhile, nothing is written and KD_ERR_SEQUENCE_CONFLICT is
 * returned (ask again). On KD_OK, *result says what happened. */
kd_err kd_dedup_forget(kd_dedup *d, const char *key, size_t key_len, bool force,
                       bool (*protect)(void *arg, uint64_t owner), void *arg,
                       kd_forget_result *result);

/* Replays a forget made elsewhere at at_ms (wall, not 0), e.g. one read
 * back from the downstream topic: a completed key is forgotten when
 * covers(arg, dec) says the forget came after that completion (dec: its
 * KD_COMPLETED decision, receipt and completion time; covers NULL: any),
 * with a forget's tombstone dated at_ms, so that what was forwarded after
 * the forget can be learned again. An absent or in-flight key is left
 * alone. One step against the stream's sequence, as kd_dedup_forget()
 * (KD_ERR_SEQUENCE_CONFLICT: ask again). On KD_OK, *result: KD_FORGET_DONE;
 * KD_FORGET_ABSENT; KD_FORGET_IN_FLIGHT; KD_FORGET_PROTECTED when covers
 * said the completion came after the forget. */
kd_err kd_dedup_forget_replay(kd_dedup *d, const char *key, size_t key_len,
                              uint64_t at_ms,
                              bool (*covers)(void *arg, const kd_decision *dec),
                              void *arg, kd_forget_result *result);

#endif /* KD_DEDUP_H */
