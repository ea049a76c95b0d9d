/*
 * kdedup - signatures on what kdedup writes downstream (see signing.h).
 */
#include "sidecar/signing.h"

#include "dedup/hex.h"
#include "dedup/sha256.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BLOCK 64 /* SHA-256's block: HMAC pads its key to it */

/* HMAC-SHA256 (RFC 2104) from two digest states keyed once: a signature
 * copies them into the thread's scratch context (kd_sha256_scratch())
 * instead of duplicating and freeing an EVP_MAC context per message, and
 * feeds its fields through a small buffer, not one update per field
 * (../shared/PERF-PROFILE.md, section 3.2). Read-only after
 * kd_signer_new(), so threads may share a signer. */
struct kd_signer {
    EVP_MD_CTX *inner; /* SHA-256 after the block key ^ 0x36 */
    EVP_MD_CTX *outer; /* SHA-256 after the block key ^ 0x5c */
};

/* A digest state that has absorbed the padded key XORed with pad. */
static EVP_MD_CTX *keyed_state(const unsigned char key[BLOCK], unsigned char pad) {
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    unsigned char block[BLOCK];
    bool ok;

    for (int i = 0; i < BLOCK; i++)
        block[i] = key[i] ^ pad;
    ok = ctx && EVP_DigestInit_ex(ctx, kd_sha256_md(), NULL) == 1 &&
         EVP_DigestUpdate(ctx, block, sizeof(block)) == 1;
    OPENSSL_cleanse(block, sizeof(block));
    if (!ok) {
        EVP_MD_CTX_free(ctx);
        return NULL;
    }
    return ctx;
}

kd_signer *kd_signer_new(const char *secret) {
    kd_signer *s = calloc(1, sizeof(*s));
    unsigned char key[BLOCK] = {0};
    size_t len = secret ? strlen(secret) : 0;
    bool ok = s && secret;

    if (ok && len > BLOCK) /* a longer key is hashed first (RFC 2104) */
        ok = kd_sha256(secret, len, key);
    else if (ok)
        memcpy(key, secret, len);
    ok = ok && (s->inner = keyed_state(key, 0x36)) && (s->outer = keyed_state(key, 0x5c));
    OPENSSL_cleanse(key, sizeof(key));
    if (!ok) {
        kd_signer_destroy(s);
        return NULL;
    }
    return s;
}

void kd_signer_destroy(kd_signer *s) {
    if (!s)
        return;
    EVP_MD_CTX_free(s->inner);
    EVP_MD_CTX_free(s->outer);
    free(s);
}

/* What is being signed, gathered before it goes to the digest. */
typedef struct mac_buf {
    EVP_MD_CTX *ctx;
    unsigned char b[256];
    size_t n;
    bool ok;
} mac_buf;

static void buf_flush(mac_buf *m) {
    m->ok = m->ok && (!m->n || EVP_DigestUpdate(m->ctx, m->b, m->n) == 1);
    m->n = 0;
}

static void buf_put(mac_buf *m, const void *p, size_t len) {
    if (m->n + len > sizeof(m->b))
        buf_flush(m);
    if (len > sizeof(m->b)) {
        m->ok = m->ok && EVP_DigestUpdate(m->ctx, p, len) == 1;
        return;
    }
    if (len)
        memcpy(m->b + m->n, p, len);
    m->n += len;
}

/* Each field length-prefixed (8 bytes, big-endian), so no two different
 * field lists sign the same bytes. */
static void mac_add(mac_buf *m, const void *p, size_t len) {
    unsigned char n[8];

    for (int i = 0; i < 8; i++)
        n[i] = (unsigned char)((uint64_t)len >> (56 - 8 * i));
    buf_put(m, n, sizeof(n));
    buf_put(m, p, len);
}

static bool mac(kd_signer *s, const kd_signed *w, unsigned char out[32]) {
    mac_buf m = {.ctx = kd_sha256_scratch()};
    unsigned char inner[32];
    unsigned int n = 0;

    m.ok = m.ctx && EVP_MD_CTX_copy_ex(m.ctx, s->inner) == 1;
    if (w->forget)
        mac_add(&m, "kdedup-forget v1", 16);
    else
        mac_add(&m, "kdedup-signature v1", 19);
    mac_add(&m, w->from, strlen(w->from));
    mac_add(&m, w->to, strlen(w->to));
    mac_add(&m, w->source, w->source_len);
    mac_add(&m, w->run, w->run_len);
    mac_add(&m, w->at, w->at_len);
    mac_add(&m, w->key, w->key_len);
    buf_flush(&m);
    return m.ok && EVP_DigestFinal_ex(m.ctx, inner, &n) == 1 && n == 32 &&
           EVP_MD_CTX_copy_ex(m.ctx, s->outer) == 1 &&
           EVP_DigestUpdate(m.ctx, inner, sizeof(inner)) == 1 &&
           EVP_DigestFinal_ex(m.ctx, out, &n) == 1 && n == 32;
}

bool kd_sign(kd_signer *s, const kd_signed *what, char out[KD_SIGNATURE_LEN + 1]) {
    unsigned char d[32];

    out[0] = '\0';
    if (!mac(s, what, d))
        return false;
    memcpy(out, "v1:", 3);
    kd_hex(d, sizeof(d), out + 3);
    return true;
}

bool kd_sign_verify(kd_signer *s, const kd_signed *what, const void *sig,
                    size_t sig_len) {
    char want[KD_SIGNATURE_LEN + 1];

    return sig && sig_len == KD_SIGNATURE_LEN && kd_sign(s, what, want) &&
           CRYPTO_memcmp(want, sig, KD_SIGNATURE_LEN) == 0;
}
