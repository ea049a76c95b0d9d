/*
 * kdedup - signatures on what kdedup writes downstream (see signing.h).
 */
#include "sidecar/signing.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/params.h>

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct kd_signer {
    EVP_MAC *mac;
    EVP_MAC_CTX *keyed; /* initialised with the secret: duplicated per use */
};

kd_signer *kd_signer_new(const char *secret) {
    kd_signer *s = calloc(1, sizeof(*s));
    OSSL_PARAM params[] = {OSSL_PARAM_construct_utf8_string("digest", "SHA256", 0),
                           OSSL_PARAM_construct_end()};

    if (!s || !(s->mac = EVP_MAC_fetch(NULL, "HMAC", NULL)) ||
        !(s->keyed = EVP_MAC_CTX_new(s->mac)) ||
        !EVP_MAC_init(s->keyed, (const unsigned char *)secret, strlen(secret), params)) {
        kd_signer_destroy(s);
        return NULL;
    }
    return s;
}

void kd_signer_destroy(kd_signer *s) {
    if (!s)
        return;
    EVP_MAC_CTX_free(s->keyed);
    EVP_MAC_free(s->mac);
    free(s);
}

/* Each field length-prefixed (8 bytes, big-endian), so no two different
 * field lists sign the same bytes. */
static bool mac_add(EVP_MAC_CTX *ctx, const void *p, size_t len) {
    unsigned char n[8];

    for (int i = 0; i < 8; i++)
        n[i] = (unsigned char)((uint64_t)len >> (56 - 8 * i));
    return EVP_MAC_update(ctx, n, sizeof(n)) &&
           (!len || EVP_MAC_update(ctx, (const unsigned char *)p, len));
}

static bool mac(kd_signer *s, const kd_signed *w, unsigned char out[32]) {
    EVP_MAC_CTX *ctx = EVP_MAC_CTX_dup(s->keyed);
    size_t n = 0;
    bool ok =
        ctx &&
        (w->forget ? mac_add(ctx, "kdedup-forget v1", 16)
                   : mac_add(ctx, "kdedup-signature v1", 19)) &&
        mac_add(ctx, w->from, strlen(w->from)) && mac_add(ctx, w->to, strlen(w->to)) &&
        mac_add(ctx, w->source, w->source_len) && mac_add(ctx, w->run, w->run_len) &&
        mac_add(ctx, w->at, w->at_len) && mac_add(ctx, w->key, w->key_len) &&
        EVP_MAC_final(ctx, out, &n, 32) && n == 32;

    EVP_MAC_CTX_free(ctx);
    return ok;
}

bool kd_sign(kd_signer *s, const kd_signed *what, char out[KD_SIGNATURE_LEN + 1]) {
    static const char hex[] = "0123456789abcdef";
    unsigned char d[32];

    out[0] = '\0';
    if (!mac(s, what, d))
        return false;
    memcpy(out, "v1:", 3);
    for (int i = 0; i < 32; i++) {
        out[3 + 2 * i] = hex[d[i] >> 4];
        out[4 + 2 * i] = hex[d[i] & 15];
    }
    out[KD_SIGNATURE_LEN] = '\0';
    return true;
}

bool kd_sign_verify(kd_signer *s, const kd_signed *what, const void *sig,
                    size_t sig_len) {
    char want[KD_SIGNATURE_LEN + 1];

    return sig && sig_len == KD_SIGNATURE_LEN && kd_sign(s, what, want) &&
           CRYPTO_memcmp(want, sig, KD_SIGNATURE_LEN) == 0;
}
