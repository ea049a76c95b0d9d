/*
 * kdedup - SHA-256 from libcrypto, with the algorithm fetched once.
 *
 * OpenSSL 3 looks the algorithm up in its provider tables on every
 * one-shot SHA256() call and every EVP_DigestInit_ex() with EVP_sha256():
 * on the pipeline's path, three hashes a message, that lookup cost more
 * than the hashing of short keys (BENCHMARKS.md, "Where the time goes").
 * A context made and freed per digest (EVP_Digest(), EVP_MD_CTX_new())
 * cost about as much again (../shared/PERF-PROFILE.md, item 7), so each
 * thread keeps its own, reused for every digest it makes.
 */
#ifndef KD_SHA256_H
#define KD_SHA256_H

#include <openssl/evp.h>

#include <stdbool.h>
#include <stddef.h>

#define KD_SHA256_LEN 32

/* libcrypto's SHA-256, fetched on the first call (thread-safe); lives
 * until the process exits. NULL when libcrypto has none. */
const EVP_MD *kd_sha256_md(void);

/* Writes the SHA-256 of data[0..len) into out, with the calling thread's
 * context. Returns false when libcrypto fails (out is then zeroed). */
bool kd_sha256(const void *data, size_t len, unsigned char out[KD_SHA256_LEN]);

/* The calling thread's context for a digest made in several steps
 * (EVP_DigestInit_ex or EVP_MD_CTX_copy_ex, updates, EVP_DigestFinal_ex),
 * made on its first use and freed when the thread exits; the thread owns
 * it. One digest at a time: finish it before the next use on the same
 * thread (kd_sha256() has a context of its own). NULL when out of memory. */
EVP_MD_CTX *kd_sha256_scratch(void);

#endif /* KD_SHA256_H */
