/*
 * kdedup - the entry codec: how one log entry of a dedup stream is laid out
 * in bytes.
 *
 * An entry is active (key, time, optional owner, optional receipt) or a
 * tombstone (key, time, and why it was written). Layout, big-endian:
 *
 *   0  'K' 'D'            magic
 *   2  u8  version        1 or 2 (below)
 *   3  u8  kind           1 active, 2 tombstone
 *   4  u8  flags          bit 0 receipt present, bit 1 owner present,
 *                         bit 2 fingerprint present,
 *                         bit 3 (version 2 only) a forget's tombstone
 *   5  u64 timestamp_ms   claim, completion, release or forget time
 *  13  u32 key_len, key bytes
 *      [u64 owner]                      if flags bit 1
 *      [32 bytes fingerprint]           if flags bit 2 (active only)
 *      [u32 receipt_len, receipt bytes] if flags bit 0 (active only)
 *
 * Bit 2 came later within version 1: entries written before it have the bit
 * clear and decode as they always did (no fingerprint).
 *
 * Version 2 is a tombstone that says why it was written: bit 3 set, an
 * operator's forget; clear, the release of a claim. It is the only entry
 * written as version 2 (an active entry of version 2 is rejected), so an
 * older kdedup still reads every active entry. A version 1 tombstone was
 * written before tombstones said why: its reason is unknown.
 *
 * Decoding checks every length against the buffer and rejects unknown
 * versions, kinds, flags and trailing bytes, so any input either decodes to
 * a valid entry or gives KD_ERR_SERIALIZATION.
 */
#ifndef KD_ENTRY_H
#define KD_ENTRY_H

#include "dedup/store.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define KD_ENTRY_VERSION 2          /* the newest; active entries are written as 1 */
#define KD_ENTRY_FINGERPRINT_LEN 32 /* SHA-256 of what a claim forwarded */

typedef enum kd_entry_kind { KD_ENTRY_ACTIVE = 1, KD_ENTRY_TOMBSTONE = 2 } kd_entry_kind;

/* Why a tombstone was written. */
typedef enum kd_tomb_reason {
    KD_TOMB_UNKNOWN = 0, /* active entries; tombstones of version 1 */
    KD_TOMB_RELEASE,     /* a claim released (its delivery failed, or handed back) */
    KD_TOMB_FORGET       /* an operator's forget (kd_dedup_forget) */
} kd_tomb_reason;

/* A decoded entry. Pointers borrow from the buffer it was decoded from (or
 * from the caller, when encoding). */
typedef struct kd_entry {
    kd_entry_kind kind;
    kd_tomb_reason reason; /* tombstone only; UNKNOWN is written as version 1 */
    uint64_t timestamp_ms;
    const char *key;
    size_t key_len;
    bool has_owner;
    uint64_t owner;                   /* boot id of the process that claimed the key */
    bool has_fingerprint;             /* active only: what the claim forwarded */
    const unsigned char *fingerprint; /* KD_ENTRY_FINGERPRINT_LEN bytes */
    bool has_receipt;                 /* active only: completed */
    const void *receipt;
    size_t receipt_len;
} kd_entry;

/* Bytes kd_entry_encode() writes for e (0 if a length does not fit). */
size_t kd_entry_encoded_size(const kd_entry *e);

/* Encodes e into buf, as version 2 for a tombstone with a reason, else as
 * version 1. Returns KD_OK and sets *out_len, or KD_ERR_SERIALIZATION if e
 * is invalid (tombstone with receipt or fingerprint, an active entry with a
 * reason, an unknown reason, a fingerprint without bytes, a length over 32
 * bits) or buf_size is too small. */
kd_err kd_entry_encode(const kd_entry *e, void *buf, size_t buf_size, size_t *out_len);

/* Encodes e into a malloc()ed buffer the caller frees. Returns KD_OK,
 * KD_ERR_SERIALIZATION, or KD_ERR_STORE when out of memory. */
kd_err kd_entry_encode_alloc(const kd_entry *e, void **out, size_t *out_len);

/* Decodes len bytes at buf into *out, whose pointers borrow from buf.
 * Returns KD_OK or KD_ERR_SERIALIZATION; never reads outside buf. */
kd_err kd_entry_decode(const void *buf, size_t len, kd_entry *out);

#endif /* KD_ENTRY_H */
