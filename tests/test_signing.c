/*
 * kdedup tests - signatures: HMAC-SHA256 over the length-prefixed fields,
 * the same bytes whatever the key's length or the fields' size, so records
 * signed by an older run still verify.
 */
#include "sidecar/signing.h"

#include <stdarg.h>
#include <setjmp.h>
#include <stddef.h>
#include <cmocka.h>

#include <openssl/evp.h>

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static kd_signed sample(const char *key, bool forget) {
    return (kd_signed){.from = "orders",
                       .to = "orders.deduped",
                       .source = "orders/3/42",
                       .source_len = 11,
                       .run = "0000000000000001",
                       .run_len = 16,
                       .at = "1764979200000",
                       .at_len = 13,
                       .key = key,
                       .key_len = strlen(key),
                       .forget = forget};
}

/* Appends len as 8 bytes big-endian, then the bytes. */
static size_t put(unsigned char *out, size_t at, const void *p, size_t len) {
    for (int i = 0; i < 8; i++)
        out[at + (size_t)i] = (unsigned char)((uint64_t)len >> (56 - 8 * i));
    memcpy(out + at + 8, p, len);
    return at + 8 + len;
}

/* The signature of w under secret, by libcrypto's own HMAC. */
static void reference(const char *secret, const kd_signed *w, char out[68]) {
    static const char hex[] = "0123456789abcdef";
    const char *tag = w->forget ? "kdedup-forget v1" : "kdedup-signature v1";
    size_t cap = 200 + strlen(w->from) + strlen(w->to) + w->source_len + w->run_len +
                 w->at_len + w->key_len,
           n = 0;
    unsigned char *msg = malloc(cap), mac[32];
    size_t maclen = 0;

    assert_non_null(msg);
    n = put(msg, n, tag, strlen(tag));
    n = put(msg, n, w->from, strlen(w->from));
    n = put(msg, n, w->to, strlen(w->to));
    n = put(msg, n, w->source, w->source_len);
    n = put(msg, n, w->run, w->run_len);
    n = put(msg, n, w->at, w->at_len);
    n = put(msg, n, w->key, w->key_len);
    assert_non_null(EVP_Q_mac(NULL, "HMAC", NULL, "SHA256", NULL, secret, strlen(secret),
                              msg, n, mac, sizeof(mac), &maclen));
    assert_int_equal(maclen, 32);
    memcpy(out, "v1:", 3);
    for (int i = 0; i < 32; i++) {
        out[3 + 2 * i] = hex[mac[i] >> 4];
        out[4 + 2 * i] = hex[mac[i] & 15];
    }
    out[67] = '\0';
    free(msg);
}

/* A signature made before the signer kept keyed digest states: pinned. */
static void test_known_answer(void **state) {
    kd_signer *s = kd_signer_new("key-one-0123456789");
    kd_signed w = sample("order-1", false);
    char sig[KD_SIGNATURE_LEN + 1];

    (void)state;
    assert_non_null(s);
    assert_true(kd_sign(s, &w, sig));
    assert_string_equal(
        sig, "v1:07499fb389822a3aafe0137c0a01425394f690c60c08e465dd81739271c768d7");
    assert_true(kd_sign_verify(s, &w, sig, strlen(sig)));
    sig[10] ^= 1;
    assert_false(kd_sign_verify(s, &w, sig, strlen(sig)));
    kd_signer_destroy(s);
}

/* Keys shorter than, as long as and longer than a SHA-256 block (hashed
 * first), fields that overflow the signer's buffer, forgets apart. */
static void test_matches_hmac(void **state) {
    static const size_t key_lens[] = {1, 63, 64, 65, 200};
    static const size_t field_lens[] = {1, 230, 255, 256, 1000};
    char secret[201], *field = malloc(1001), got[KD_SIGNATURE_LEN + 1], want[68];

    (void)state;
    assert_non_null(field);
    for (size_t k = 0; k < sizeof(key_lens) / sizeof(key_lens[0]); k++) {
        for (size_t i = 0; i < key_lens[k]; i++)
            secret[i] = (char)('a' + (i * 7 + k) % 26);
        secret[key_lens[k]] = '\0';
        kd_signer *s = kd_signer_new(secret);

        assert_non_null(s);
        for (size_t f = 0; f < sizeof(field_lens) / sizeof(field_lens[0]); f++) {
            memset(field, 'k', field_lens[f]);
            field[field_lens[f]] = '\0';
            for (int forget = 0; forget < 2; forget++) {
                kd_signed w = sample(field, forget);

                assert_true(kd_sign(s, &w, got));
                reference(secret, &w, want);
                assert_string_equal(got, want);
            }
        }
        kd_signer_destroy(s);
    }
    free(field);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_known_answer),
        cmocka_unit_test(test_matches_hmac),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
