/*
 * kdedup tests - signatures (sidecar/signing.c alone): a genuine record's
 * signature verifies, and every change to what it covers, or to the
 * signature itself, is refused. Table-driven: one row per field changed and
 * per malformed signature. The encoding is checked against an HMAC-SHA256
 * computed here from the layout signing.c documents, so a change to it
 * (which would leave every record already downstream untrusted) shows.
 */
#include "sidecar/signing.h"

#include <stdarg.h>
#include <setjmp.h>
#include <stddef.h>
#include <cmocka.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define KEY_ONE "key-one-0123456789"
#define KEY_TWO "key-two-0123456789"

/* What a signature covers, as the fields of a record. */
enum { F_FROM, F_TO, F_SOURCE, F_RUN, F_AT, F_KEY, NFIELDS };

typedef struct field {
    const char *p;
    size_t len;
} field;

/* The genuine record every row starts from. */
static const field genuine[NFIELDS] = {
    [F_FROM] = {"orders", 6},           [F_TO] = {"orders.deduped", 14},
    [F_SOURCE] = {"orders/3/1234", 13}, [F_RUN] = {"00000000deadbeef", 16},
    [F_AT] = {"1700000000000", 13},     [F_KEY] = {"order-42", 8},
};

static kd_signed signed_of(const field f[NFIELDS]) {
    return (kd_signed){.from = f[F_FROM].p,
                       .to = f[F_TO].p,
                       .source = f[F_SOURCE].p,
                       .source_len = f[F_SOURCE].len,
                       .run = f[F_RUN].p,
                       .run_len = f[F_RUN].len,
                       .at = f[F_AT].p,
                       .at_len = f[F_AT].len,
                       .key = f[F_KEY].p,
                       .key_len = f[F_KEY].len};
}

/* The signature of the genuine record under secret. */
static void sign_genuine(const char *secret, char sig[KD_SIGNATURE_LEN + 1]) {
    kd_signer *s = kd_signer_new(secret);
    kd_signed w = signed_of(genuine);

    assert_non_null(s);
    assert_true(kd_sign(s, &w, sig));
    kd_signer_destroy(s);
}

/* A field changed: one row per way. Two rows change two fields at once,
 * moving bytes across the boundary between them (each field is
 * length-prefixed, so that is a change too). */
static const struct {
    const char *what;
    int field, field2; /* field2: -1, or a second field changed */
    field value, value2;
} changes[] = {
    {"from: another topic", F_FROM, -1, {"orderz", 6}, {0}},
    {"from: longer", F_FROM, -1, {"orders2", 7}, {0}},
    {"from: empty", F_FROM, -1, {"", 0}, {0}},
    {"to: the dead-letter topic", F_TO, -1, {"orders.dlq", 10}, {0}},
    {"to: a prefix", F_TO, -1, {"orders", 6}, {0}},
    {"source: another offset", F_SOURCE, -1, {"orders/3/1235", 13}, {0}},
    {"source: another partition", F_SOURCE, -1, {"orders/4/1234", 13}, {0}},
    {"source: truncated", F_SOURCE, -1, {"orders/3/123", 12}, {0}},
    {"source: empty", F_SOURCE, -1, {"", 0}, {0}},
    {"run: another run", F_RUN, -1, {"00000000deadbeee", 16}, {0}},
    {"run: empty", F_RUN, -1, {"", 0}, {0}},
    {"at: a ms later", F_AT, -1, {"1700000000001", 13}, {0}},
    {"at: a digit more", F_AT, -1, {"17000000000000", 14}, {0}},
    {"key: another key", F_KEY, -1, {"order-43", 8}, {0}},
    {"key: a prefix", F_KEY, -1, {"order-4", 7}, {0}},
    {"key: a NUL more", F_KEY, -1, {"order-42\0", 9}, {0}},
    {"key: empty", F_KEY, -1, {"", 0}, {0}},
    {"from/to boundary moved", F_FROM, F_TO, {"ordersorders", 12}, {".deduped", 8}},
    {"source/run boundary moved",
     F_SOURCE,
     F_RUN,
     {"orders/3/12340", 14},
     {"0000000deadbeef", 15}},
};

/* Every field the MAC covers, changed in a genuine record: refused (the
 * genuine one verifies). */
static void test_each_covered_field_changed_is_refused(void **state) {
    char sig[KD_SIGNATURE_LEN + 1];
    kd_signer *s = kd_signer_new(KEY_ONE);
    kd_signed w = signed_of(genuine);

    (void)state;
    assert_non_null(s);
    sign_genuine(KEY_ONE, sig);
    assert_true(kd_sign_verify(s, &w, sig, KD_SIGNATURE_LEN));
    for (size_t i = 0; i < sizeof(changes) / sizeof(changes[0]); i++) {
        field f[NFIELDS];
        char from[32], to[32];

        memcpy(f, genuine, sizeof(f));
        f[changes[i].field] = changes[i].value;
        if (changes[i].field2 >= 0)
            f[changes[i].field2] = changes[i].value2;
        /* from and to are C strings in kd_signed */
        snprintf(from, sizeof(from), "%.*s", (int)f[F_FROM].len, f[F_FROM].p);
        snprintf(to, sizeof(to), "%.*s", (int)f[F_TO].len, f[F_TO].p);
        f[F_FROM].p = from;
        f[F_TO].p = to;
        w = signed_of(f);
        if (kd_sign_verify(s, &w, sig, KD_SIGNATURE_LEN))
            fail_msg("%s: accepted", changes[i].what);
    }
    /* the same fields as a forget record's (forgets.h): signed apart */
    w = signed_of(genuine);
    w.forget = true;
    if (kd_sign_verify(s, &w, sig, KD_SIGNATURE_LEN))
        fail_msg("a delivery's signature accepted for a forget record");
    kd_signer_destroy(s);
}

/* A malformed signature: one row per way, built from the genuine one. */
typedef enum sig_edit {
    SIG_CUT,     /* the first n bytes */
    SIG_APPEND,  /* all of it, then the bytes of `text` */
    SIG_REPLACE, /* `text` over the bytes from `at` */
    SIG_TEXT,    /* `text` alone */
} sig_edit;

static const struct {
    const char *what;
    sig_edit edit;
    size_t n; /* SIG_CUT: length; SIG_REPLACE: where */
    const char *text;
    size_t text_len;
} sigs[] = {
    {"empty", SIG_CUT, 0, NULL, 0},
    {"the version alone", SIG_CUT, 3, NULL, 0},
    {"half of it", SIG_CUT, 35, NULL, 0},
    {"one hex digit short", SIG_CUT, KD_SIGNATURE_LEN - 1, NULL, 0},
    {"one digit more", SIG_APPEND, 0, "0", 1},
    {"a NUL more", SIG_APPEND, 0, "", 1},
    {"twice", SIG_APPEND, 0, NULL, KD_SIGNATURE_LEN},
    {"version v2", SIG_REPLACE, 0, "v2:", 3},
    {"version V1", SIG_REPLACE, 0, "V1:", 3},
    {"version v0", SIG_REPLACE, 0, "v0:", 3},
    {"no colon", SIG_REPLACE, 2, "-", 1},
    {"the first digit changed", SIG_REPLACE, 3, NULL, 1},
    {"the last digit changed", SIG_REPLACE, KD_SIGNATURE_LEN - 1, NULL, 1},
    {"upper-case hex", SIG_REPLACE, 3, NULL, 64},
    {"all zeros", SIG_TEXT, 0,
     "v1:0000000000000000000000000000000000000000000000000000000000000000",
     KD_SIGNATURE_LEN},
    {"the MAC without its version", SIG_REPLACE, 0, NULL, 0},
};

/* Builds row i's signature from the genuine one into out; returns its
 * length. */
static size_t malformed(size_t i, const char *genuine_sig, char *out) {
    size_t len = KD_SIGNATURE_LEN;

    memcpy(out, genuine_sig, KD_SIGNATURE_LEN);
    switch (sigs[i].edit) {
    case SIG_CUT:
        return sigs[i].n;
    case SIG_APPEND:
        memcpy(out + len, sigs[i].text ? sigs[i].text : genuine_sig, sigs[i].text_len);
        return len + sigs[i].text_len;
    case SIG_TEXT:
        memcpy(out, sigs[i].text, sigs[i].text_len);
        return sigs[i].text_len;
    case SIG_REPLACE:
        break;
    }
    if (sigs[i].text) {
        memcpy(out + sigs[i].n, sigs[i].text, sigs[i].text_len);
    } else if (!sigs[i].text_len) { /* the hex alone */
        memmove(out, out + 3, KD_SIGNATURE_LEN - 3);
        return KD_SIGNATURE_LEN - 3;
    } else {
        for (size_t j = sigs[i].n; j < sigs[i].n + sigs[i].text_len; j++)
            if (sigs[i].text_len == 1) /* another hex digit */
                out[j] = out[j] == '0' ? '1' : '0';
            else if (out[j] >= 'a' && out[j] <= 'f')
                out[j] = (char)(out[j] - 'a' + 'A');
    }
    return len;
}

/* Truncated, extended, empty, wrong-version and altered signatures of a
 * genuine record: refused. */
static void test_malformed_signatures_are_refused(void **state) {
    char sig[KD_SIGNATURE_LEN + 1], bad[2 * KD_SIGNATURE_LEN + 8];
    kd_signer *s = kd_signer_new(KEY_ONE);
    kd_signed w = signed_of(genuine);

    (void)state;
    assert_non_null(s);
    sign_genuine(KEY_ONE, sig);
    assert_int_equal(strlen(sig), KD_SIGNATURE_LEN);
    assert_memory_equal(sig, "v1:", 3);
    assert_false(kd_sign_verify(s, &w, NULL, 0));
    assert_false(kd_sign_verify(s, &w, NULL, KD_SIGNATURE_LEN));
    for (size_t i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++) {
        size_t len = malformed(i, sig, bad);

        if (len == KD_SIGNATURE_LEN && !memcmp(bad, sig, len))
            fail_msg("%s: the row left the signature as it was", sigs[i].what);
        if (kd_sign_verify(s, &w, bad, len))
            fail_msg("%s: accepted", sigs[i].what);
    }
    kd_signer_destroy(s);
}

/* The key: what one key signed, another does not verify (a secret one byte
 * shorter, or longer, included); the same secret in another signer does.
 * With a rotation, the reader holds both keys (recovery_read.c, tested in
 * test_recovery): each verifies its own records only. */
static void test_only_the_same_key_verifies(void **state) {
    static const char *const others[] = {KEY_TWO, "key-one-012345678",
                                         "key-one-01234567890", "Key-one-0123456789"};
    char sig[KD_SIGNATURE_LEN + 1], sig2[KD_SIGNATURE_LEN + 1];
    kd_signer *again = kd_signer_new(KEY_ONE);
    kd_signed w = signed_of(genuine);

    (void)state;
    sign_genuine(KEY_ONE, sig);
    assert_true(kd_sign_verify(again, &w, sig, KD_SIGNATURE_LEN));
    for (size_t i = 0; i < sizeof(others) / sizeof(others[0]); i++) {
        kd_signer *s = kd_signer_new(others[i]);

        assert_non_null(s);
        if (kd_sign_verify(s, &w, sig, KD_SIGNATURE_LEN))
            fail_msg("signed with %s, verified with %s", KEY_ONE, others[i]);
        sign_genuine(others[i], sig2);
        assert_true(kd_sign_verify(s, &w, sig2, KD_SIGNATURE_LEN));
        assert_false(kd_sign_verify(again, &w, sig2, KD_SIGNATURE_LEN));
        kd_signer_destroy(s);
    }
    kd_signer_destroy(again);
}

/* The layout signing.c documents: "kdedup-signature v1", then from, to,
 * source, run, at and key, each after its length (8 bytes, big-endian). */
static size_t put_field(unsigned char *out, const void *p, size_t len) {
    for (int i = 0; i < 8; i++)
        out[i] = (unsigned char)((uint64_t)len >> (56 - 8 * i));
    memcpy(out + 8, p, len);
    return 8 + len;
}

/* The signature is "v1:" and the hex of HMAC-SHA256(secret, that layout):
 * records signed by an earlier build keep verifying. */
static void test_encoding_is_the_documented_one(void **state) {
    unsigned char msg[512], mac[EVP_MAX_MD_SIZE];
    char sig[KD_SIGNATURE_LEN + 1], want[KD_SIGNATURE_LEN + 1] = "v1:";
    unsigned int mac_len = 0;
    size_t n = put_field(msg, "kdedup-signature v1", 19);

    (void)state;
    for (int i = 0; i < NFIELDS; i++)
        n += put_field(msg + n, genuine[i].p, genuine[i].len);
    assert_non_null(
        HMAC(EVP_sha256(), KEY_ONE, (int)strlen(KEY_ONE), msg, n, mac, &mac_len));
    assert_int_equal(mac_len, 32);
    for (unsigned i = 0; i < 32; i++)
        snprintf(want + 3 + 2 * i, 3, "%02x", mac[i]);
    sign_genuine(KEY_ONE, sig);
    assert_string_equal(sig, want);
}

/* The HMAC itself, as libcrypto computes it: signatures of older runs
 * (before the signer kept keyed digest states) still verify. */
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
static size_t put_at(unsigned char *out, size_t at, const void *p, size_t len) {
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
    n = put_at(msg, n, tag, strlen(tag));
    n = put_at(msg, n, w->from, strlen(w->from));
    n = put_at(msg, n, w->to, strlen(w->to));
    n = put_at(msg, n, w->source, w->source_len);
    n = put_at(msg, n, w->run, w->run_len);
    n = put_at(msg, n, w->at, w->at_len);
    n = put_at(msg, n, w->key, w->key_len);
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
    char secret[201], *value = malloc(1001), got[KD_SIGNATURE_LEN + 1], want[68];

    (void)state;
    assert_non_null(value);
    for (size_t k = 0; k < sizeof(key_lens) / sizeof(key_lens[0]); k++) {
        for (size_t i = 0; i < key_lens[k]; i++)
            secret[i] = (char)('a' + (i * 7 + k) % 26);
        secret[key_lens[k]] = '\0';
        kd_signer *s = kd_signer_new(secret);

        assert_non_null(s);
        for (size_t f = 0; f < sizeof(field_lens) / sizeof(field_lens[0]); f++) {
            memset(value, 'k', field_lens[f]);
            value[field_lens[f]] = '\0';
            for (int forget = 0; forget < 2; forget++) {
                kd_signed w = sample(value, forget);

                assert_true(kd_sign(s, &w, got));
                reference(secret, &w, want);
                assert_string_equal(got, want);
            }
        }
        kd_signer_destroy(s);
    }
    free(value);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_each_covered_field_changed_is_refused),
        cmocka_unit_test(test_malformed_signatures_are_refused),
        cmocka_unit_test(test_only_the_same_key_verifies),
        cmocka_unit_test(test_encoding_is_the_documented_one),
        cmocka_unit_test(test_known_answer),
        cmocka_unit_test(test_matches_hmac),
    };

    if (getenv("KD_TEST_FILTER"))
        cmocka_set_test_filter(getenv("KD_TEST_FILTER"));
    return cmocka_run_group_tests_name("signing", tests, NULL, NULL);
}
