/*
 * kdedup - signatures on what kdedup writes downstream.
 *
 * The handover, orphan recovery and uncertain-delivery lookups believe what
 * they read in the downstream topic: a record there with a key and a
 * kdedup-source header completes the key. Anyone who can write to that topic
 * could suppress a real message with one forged record. So every record
 * kdedup forwards carries an HMAC-SHA256 (KD_SIGNATURE_HEADER) over what the
 * readers rely on: the route's source topic, the source coordinates, the
 * producing run, the forwarding time and the idempotency key, under a secret
 * (dedup.signing_key). Readers learn only from records whose signature
 * verifies under the current key or, during a rotation, the previous one.
 * The headers' names, and which of them a signature covers, are headers.h's;
 * this module is the MAC.
 */
#ifndef KD_SIGNING_H
#define KD_SIGNING_H

#include <stdbool.h>
#include <stddef.h>

/* "v1:" and 64 hex digits. */
#define KD_SIGNATURE_LEN 67

/* What a signature covers: header values and the key, as bytes. */
typedef struct kd_signed {
    const char *from; /* the route's source topic */
    const char *to;   /* the topic the record is written to */
    const void *source;
    size_t source_len; /* kdedup-source: "<topic>/<partition>/<offset>" */
    const void *run;
    size_t run_len; /* kdedup-run */
    const void *at;
    size_t at_len; /* kdedup-forwarded-at */
    const void *key;
    size_t key_len; /* the idempotency key */
    bool forget;    /* a forget record's (forgets.h): signed apart */
} kd_signed;

/* A key to sign with, set up once. */
typedef struct kd_signer kd_signer;

/* A signer for secret (copied; any bytes but NUL). NULL when libcrypto
 * fails. */
kd_signer *kd_signer_new(const char *secret);

/* Destroys it. NULL-safe. */
void kd_signer_destroy(kd_signer *s);

/* Writes the signature of what into out (KD_SIGNATURE_LEN + 1 bytes,
 * NUL-terminated). False when libcrypto fails (out is then empty). */
bool kd_sign(kd_signer *s, const kd_signed *what, char out[KD_SIGNATURE_LEN + 1]);

/* True when sig (sig_len bytes, from a record) is what's signature under
 * s's secret; compared in constant time. */
bool kd_sign_verify(kd_signer *s, const kd_signed *what, const void *sig, size_t sig_len);

#endif /* KD_SIGNING_H */
