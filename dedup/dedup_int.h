/*
 * kdedup - the dedup contract's private header: the state its parts share,
 * and what each part offers the others. Public API: dedup.h (semantics
 * there and in docs/architecture.md).
 *
 * Single-key calls are batches of one, so there is one implementation of
 * each rule. A batch: hash every key once, group repeated keys behind their
 * first occurrence (the leader), read each leader's newest entry, plan the
 * appends, write them with one kd_store_append_batch(), then settle lost
 * races by re-reading, and give the followers their leader's outcome.
 *
 * A completion given its claim (kd_completion.claim_*) skips the read: its
 * append names the claim's seq and the store's version of that write, and
 * the store checks nothing was written since. When something was, the item
 * is decided again the ordinary way, in a second batch (complete_redo).
 *
 * File map, from the ground floor up (a file calls only files listed before
 * it):
 *   dedup.c           the handle (new, destroy, retention, owner), stream
 *                     keys, the clock, heads (a stream's newest entry: read,
 *                     decoded, its state) and the decisions made from them
 *   dedup_batch.c     batches: hashing and grouping keys behind their leader,
 *                     reading the leaders' heads, planning appends
 *   dedup_claim.c     claims (kd_dedup_claim_batch, _claim_or_get)
 *   dedup_complete.c  completions: receipts, their redo when a given claim
 *                     was overtaken (kd_dedup_complete_batch, _lazy,
 *                     _complete_receipt)
 *   dedup_single.c    one key, no batch form: lookup (kd_dedup_inspect,
 *                     _lookup), forget (kd_dedup_forget, _forget_replay) and
 *                     release (kd_dedup_release_claim, _release_forgotten)
 *
 * A kd_dedup is thread-safe: its fields are set at creation or atomic; a
 * batch is the calling thread's own.
 */
#ifndef KD_DEDUP_INT_H
#define KD_DEDUP_INT_H

#include "dedup/dedup.h"
#include "dedup/entry.h"
#include "dedup/sha256.h"

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define HASH_LEN KD_SHA256_LEN

_Static_assert(KD_FINGERPRINT_LEN == KD_ENTRY_FINGERPRINT_LEN,
               "a decision holds an entry's fingerprint");
_Static_assert(KD_KEY_HASH_LEN == HASH_LEN, "kd_claim.hash is a stream's hash");
#define HEX_LEN (2 * HASH_LEN)

struct kd_dedup {
    kd_store *store;
    char *ns;
    size_t ns_len;
    _Atomic uint64_t ttl_ms;
    _Atomic uint64_t inflight_ms;
    _Atomic uint64_t owner;
};

/* The newest entry of one stream; e borrows from payload. */
typedef struct head {
    bool found;
    uint64_t seq;
    uint64_t version; /* the store's stamp of this read (kd_read.version) */
    void *payload;
    size_t payload_len;
    kd_entry e;
} head;

typedef enum key_state { ST_ABSENT, ST_IN_FLIGHT, ST_COMPLETED } key_state;

/* Per-key working state of a batch. */
typedef struct slot {
    const char *key;
    size_t key_len;
    const unsigned char *given_hash; /* the key's hash, as its claim gave it, or NULL */
    unsigned char hash[HASH_LEN];
    char *stream;  /* into the batch's arena */
    size_t leader; /* index of the first item with this key */
    head head;
    kd_err read_err;   /* leaders: reading or decoding the head failed */
    kd_append *append; /* the planned append, or NULL (its payload: in b->pool) */
    bool hinted;       /* completions: its claim was given, not read */
} slot;

typedef struct batch {
    kd_dedup *d;
    size_t n;
    size_t stream_len;
    slot *slots;
    char *arena;
    kd_append *appends;
    size_t nappends;
    kd_read *reads;
    unsigned char *pool; /* the planned entries, encoded: one allocation a batch */
    size_t pool_cap, pool_used;
} batch;

/* dedup.c */

/* Writes ns ":" hex(hash) into out, which holds d->ns_len + 1 + HEX_LEN bytes
 * (kd_hex_put: no NUL). */
void kd_dedup_stream_key(const kd_dedup *d, const unsigned char *hash, char *out);

/* Hashes key and writes its stream key into out (kd_dedup_stream_len(d)
 * bytes). */
void kd_dedup_stream_of(const kd_dedup *d, const char *key, size_t key_len,
                        unsigned char *hash, char *out);

/* The length of every stream key of d. */
size_t kd_dedup_stream_len(const kd_dedup *d);

/* The wall clock in ms since the epoch; false when it cannot be read or is
 * before the epoch (not encodable). */
bool kd_dedup_now_ms(uint64_t *out);

/* Frees h's payload and clears it. */
void kd_dedup_head_clear(head *h);

/* Decodes a head just read, and checks that it belongs to key. */
kd_err kd_dedup_head_decode(head *h, const char *key, size_t key_len);

/* Reads and decodes the newest entry of a stream, and checks that it belongs
 * to key. */
kd_err kd_dedup_head_read(kd_dedup *d, const char *stream, size_t stream_len,
                          const char *key, size_t key_len, head *h);

/* The state of a key whose newest entry is h. */
key_state kd_dedup_head_state(const head *h);

/* kd_dedup_head_state(), with retention applied at now. */
key_state kd_dedup_head_state_at(const kd_dedup *d, const head *h, uint64_t now);

/* The seq the entry after h is appended with. */
uint64_t kd_dedup_next_seq(const head *h);

/* True when the two byte strings are equal. */
bool kd_dedup_same_bytes(const void *a, size_t alen, const void *b, size_t blen);

/* Fills out from a present head (in flight or completed); out->receipt is
 * malloc()ed (the caller clears it). */
kd_err kd_dedup_decision_from_head(const head *h, kd_decision *out);

/* dedup_batch.c */

/* The most an entry of key_len bytes takes, encoded, with a receipt of
 * receipt_len bytes when has_receipt (0 when the lengths do not fit). */
size_t kd_dedup_entry_bound(size_t key_len, bool has_receipt, size_t receipt_len);

/* Allocates room for n keys, and pool_bytes for the entries it will plan
 * (their bound: kd_dedup_entry_bound()); the caller then sets each slot's
 * key, and frees b with kd_dedup_batch_free() whatever this returns. */
kd_err kd_dedup_batch_alloc(batch *b, kd_dedup *d, size_t n, size_t pool_bytes);

/* Hashes each key once (or takes the hash its claim gave) and groups
 * repeats behind their leader. */
kd_err kd_dedup_batch_hash(batch *b);

/* Reads the heads of all leaders with one store call, and decodes them. */
void kd_dedup_batch_read_heads(batch *b);

/* Encodes e into the batch's pool and queues its append after the slot's
 * head. */
kd_err kd_dedup_batch_plan(batch *b, slot *s, const kd_entry *e);

/* Frees what b holds (not b). */
void kd_dedup_batch_free(batch *b);

#endif /* KD_DEDUP_INT_H */
