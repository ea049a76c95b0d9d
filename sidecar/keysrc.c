/*
 * kdedup - the key and fingerprint of a message (see keysrc.h).
 */
#include "sidecar/keysrc.h"
#include "dedup/sha256.h"

#include <cjson/cJSON.h>
#include <openssl/evp.h>

#include <ctype.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define EXACT_LIMIT 9007199254740992.0 /* 2^53: integers below it are exact */
#define PREFIX_LEN 4                   /* a composite part's u32 length */

/* One part's bytes: borrowed from the message or from the parsed value. */
typedef struct piece {
    const char *bytes;
    size_t len;
} piece;

/* The message's JSON value, parsed on first need. */
typedef struct json_doc {
    bool tried;
    kd_key_status status; /* of the parse */
    cJSON *root;
    bool nul; /* the text escapes a NUL (\u0000): cJSON's strings end there */
} json_doc;

void kd_key_clear(kd_key *k) {
    if (!k)
        return;
    free(k->owned);
    memset(k, 0, sizeof(*k));
}

const char *kd_key_status_name(kd_key_status s) {
    static const char *const names[] = {"ok",
                                        "absent",
                                        "empty",
                                        "too_long",
                                        "not_json",
                                        "json_too_large",
                                        "not_a_string_or_integer",
                                        "ambiguous",
                                        "out_of_memory"};

    return (size_t)s < sizeof(names) / sizeof(names[0]) ? names[s] : "?";
}

/* Parses the value once: one JSON document, nothing but blanks after it. */
static kd_key_status json_parse(json_doc *doc, const kd_keysrc_msg *m, size_t max_json) {
    const char *end = NULL, *text = m->value;

    if (doc->tried)
        return doc->status;
    doc->tried = true;
    if (!m->value || m->value_len == 0)
        return doc->status = KD_KEY_NOT_JSON;
    if (m->value_len > max_json)
        return doc->status = KD_KEY_JSON_TOO_LARGE;
    doc->root = cJSON_ParseWithLengthOpts(text, m->value_len, &end, false);
    for (size_t i = 0; i + 6 <= m->value_len && !doc->nul; i++)
        doc->nul = !memcmp(text + i, "\\u0000", 6);
    if (!doc->root)
        return doc->status = KD_KEY_NOT_JSON;
    for (; end && end < text + m->value_len && isspace((unsigned char)*end); end++)
        ;
    if (!end || end != text + m->value_len) {
        cJSON_Delete(doc->root);
        doc->root = NULL;
        return doc->status = KD_KEY_NOT_JSON;
    }
    return doc->status = KD_KEY_OK;
}

/* True when member name equals the pointer token tok (len bytes, escaped). */
static bool token_eq(const char *name, const char *tok, size_t len) {
    size_t i = 0;

    for (; i < len; i++, name++) {
        char want = tok[i];

        if (want == '~') /* the config checked: "~0" or "~1" */
            want = tok[++i] == '1' ? '/' : '~';
        if (*name != want)
            return false;
    }
    return *name == '\0';
}

/* An array index token: "0", or digits without a leading zero. */
static bool token_index(const char *tok, size_t len, int size, int *out) {
    long long v = 0;

    if (len == 0 || (len > 1 && tok[0] == '0'))
        return false;
    for (size_t i = 0; i < len; i++) {
        if (tok[i] < '0' || tok[i] > '9')
            return false;
        v = v * 10 + (tok[i] - '0');
        if (v >= size)
            return false;
    }
    *out = (int)v;
    return true;
}

/* The item the RFC 6901 pointer names in root, or NULL; where an object
 * has a member twice, the first (the last, with last). */
static const cJSON *json_resolve(const cJSON *root, const char *ptr, bool last) {
    const cJSON *at = root;

    while (at && *ptr == '/') {
        const char *tok = ptr + 1;
        size_t len = strcspn(tok, "/");
        const cJSON *next = NULL;
        int idx;

        if (cJSON_IsObject(at)) {
            for (const cJSON *e = at->child; e && (last || !next); e = e->next)
                if (e->string && token_eq(e->string, tok, len))
                    next = e;
        } else if (cJSON_IsArray(at) &&
                   token_index(tok, len, cJSON_GetArraySize(at), &idx)) {
            next = cJSON_GetArrayItem(at, idx);
        }
        at = next;
        ptr = tok + len;
    }
    return at;
}

/* True when two readings of a key agree: both absent (NULL), or the same
 * bytes. */
static bool same_bytes(const void *a, size_t alen, const void *b, size_t blen) {
    return (!a && !b) || (a && b && alen == blen && !memcmp(a, b, alen));
}

/* The key bytes of item v (NULL: absent); a number's text is written
 * into num. */
static kd_key_status json_scalar(const json_doc *doc, const cJSON *v, char *num,
                                 size_t num_size, piece *out) {
    double d;

    if (!v)
        return KD_KEY_ABSENT;
    if (cJSON_IsString(v)) {
        /* A string cut at an escaped NUL would merge distinct keys: in a
         * document that escapes one, strings are no keys (counted missing). */
        if (doc->nul)
            return KD_KEY_NOT_SCALAR;
        out->bytes = v->valuestring;
        out->len = strlen(v->valuestring);
        return KD_KEY_OK;
    }
    if (!cJSON_IsNumber(v))
        return KD_KEY_NOT_SCALAR;
    d = v->valuedouble;
    if (!(d > -EXACT_LIMIT && d < EXACT_LIMIT) || d != (double)(long long)d)
        return KD_KEY_NOT_SCALAR;
    snprintf(num, num_size, "%lld", (long long)d);
    out->bytes = num;
    out->len = strlen(num);
    return KD_KEY_OK;
}

/* A JSON part's bytes; a number's text is written into num. Ambiguous when
 * the pointer read through the last of duplicated members gives another
 * key than read through the first, or a key where the other gives none. */
static kd_key_status json_piece(json_doc *doc, const kd_keysrc_msg *m,
                                const kd_key_part *part, size_t max_json, char *num,
                                size_t num_size, piece *out) {
    kd_key_status st = json_parse(doc, m, max_json), st_last;
    const cJSON *first, *last;
    char num_last[32];
    piece other = {0};

    if (st != KD_KEY_OK)
        return st;
    first = json_resolve(doc->root, part->pointer, false);
    last = json_resolve(doc->root, part->pointer, true);
    st = json_scalar(doc, first, num, num_size, out);
    if (first == last)
        return st;
    st_last = json_scalar(doc, last, num_last, sizeof(num_last), &other);
    if (st != KD_KEY_OK && st_last != KD_KEY_OK)
        return st; /* neither reading has a key: missing */
    if (st != st_last || !same_bytes(out->bytes, out->len, other.bytes, other.len))
        return KD_KEY_AMBIGUOUS;
    return st;
}

/* A header part's bytes: the first header called name, when the last one
 * says the same (both null, or the same bytes). */
static kd_key_status header_piece(const kd_keysrc_msg *m, const char *name, piece *out) {
    const void *first = NULL, *last = NULL;
    size_t first_len = 0, last_len = 0;

    if (!m->header || !m->header(m->header_arg, name, false, &first, &first_len))
        return KD_KEY_ABSENT;
    if (m->header(m->header_arg, name, true, &last, &last_len) &&
        !same_bytes(first, first_len, last, last_len))
        return KD_KEY_AMBIGUOUS;
    if (!first)
        return KD_KEY_ABSENT;
    out->bytes = first;
    out->len = first_len;
    return KD_KEY_OK;
}

/* One part's bytes, not yet checked for emptiness or length. */
static kd_key_status get_piece(json_doc *doc, const kd_keysrc_msg *m,
                               const kd_key_part *part, size_t max_json, char *num,
                               size_t num_size, piece *out) {
    switch (part->from) {
    case KD_KEY_FROM_HEADER:
        return header_piece(m, part->name, out);
    case KD_KEY_FROM_RECORD_KEY:
        if (!m->key)
            return KD_KEY_ABSENT;
        out->bytes = m->key;
        out->len = m->key_len;
        return KD_KEY_OK;
    case KD_KEY_FROM_JSON:
        return json_piece(doc, m, part, max_json, num, num_size, out);
    default:
        return KD_KEY_ABSENT;
    }
}

/* Joins the pieces, each after its u32 big-endian length, into out. */
static kd_key_status join(const piece *pieces, size_t n, size_t max_key, kd_key *out) {
    size_t total = 0;
    char *p;

    for (size_t i = 0; i < n; i++) {
        if (pieces[i].len > max_key || total + PREFIX_LEN + pieces[i].len > max_key)
            return KD_KEY_TOO_LONG;
        total += PREFIX_LEN + pieces[i].len;
    }
    if (!(out->owned = malloc(total)))
        return KD_KEY_NOMEM;
    p = out->owned;
    for (size_t i = 0; i < n; i++) {
        uint32_t len = (uint32_t)pieces[i].len;

        p[0] = (char)(len >> 24);
        p[1] = (char)(len >> 16);
        p[2] = (char)(len >> 8);
        p[3] = (char)len;
        memcpy(p + PREFIX_LEN, pieces[i].bytes, pieces[i].len);
        p += PREFIX_LEN + pieces[i].len;
    }
    out->bytes = out->owned;
    out->len = total;
    return KD_KEY_OK;
}

kd_key_status kd_keysrc_compose(const char *const *parts, const size_t *lens, size_t n,
                                size_t max_key_bytes, kd_key *out) {
    piece pieces[KD_CONFIG_MAX_KEY_PARTS];

    memset(out, 0, sizeof(*out));
    if (n == 0 || n > KD_CONFIG_MAX_KEY_PARTS)
        return KD_KEY_ABSENT;
    for (size_t i = 0; i < n; i++) {
        if (lens[i] == 0)
            return KD_KEY_EMPTY;
        pieces[i] = (piece){parts[i], lens[i]};
    }
    return join(pieces, n, max_key_bytes, out);
}

/* A single part's key: borrowed from the message, or copied from the
 * parsed value (freed before returning). */
static kd_key_status single(const piece *pc, bool copy, kd_key *out) {
    if (!copy) {
        out->bytes = pc->bytes;
        out->len = pc->len;
        return KD_KEY_OK;
    }
    if (!(out->owned = malloc(pc->len)))
        return KD_KEY_NOMEM;
    memcpy(out->owned, pc->bytes, pc->len);
    out->bytes = out->owned;
    out->len = pc->len;
    return KD_KEY_OK;
}

kd_key_status kd_keysrc_extract(const kd_route *r, size_t max_key_bytes,
                                size_t max_json_bytes, const kd_keysrc_msg *m,
                                kd_key *out) {
    char nums[KD_CONFIG_MAX_KEY_PARTS][32];
    piece pieces[KD_CONFIG_MAX_KEY_PARTS];
    json_doc doc = {0};
    kd_key_status st = KD_KEY_OK;
    size_t n = r->nkey_parts;

    memset(out, 0, sizeof(*out));
    if (n == 0 || n > KD_CONFIG_MAX_KEY_PARTS)
        return KD_KEY_ABSENT;
    for (size_t i = 0; i < n && st == KD_KEY_OK; i++) {
        st = get_piece(&doc, m, &r->key_parts[i], max_json_bytes, nums[i],
                       sizeof(nums[i]), &pieces[i]);
        if (st == KD_KEY_OK && pieces[i].len == 0)
            st = KD_KEY_EMPTY;
    }
    if (st == KD_KEY_OK && r->key_from == KD_KEY_FROM_COMPOSITE)
        st = join(pieces, n, max_key_bytes, out);
    else if (st == KD_KEY_OK && pieces[0].len > max_key_bytes)
        st = KD_KEY_TOO_LONG;
    else if (st == KD_KEY_OK)
        st = single(&pieces[0], r->key_parts[0].from == KD_KEY_FROM_JSON, out);
    cJSON_Delete(doc.root);
    if (st != KD_KEY_OK)
        kd_key_clear(out);
    return st;
}

/* Adds a length-prefixed field to the digest: a u8 presence, then (when
 * present) a u64 big-endian length and the bytes. */
static bool digest_field(EVP_MD_CTX *ctx, bool present, const void *p, size_t len) {
    unsigned char hdr[9] = {present ? 1 : 0};

    if (!present)
        return EVP_DigestUpdate(ctx, hdr, 1) == 1;
    for (int i = 0; i < 8; i++)
        hdr[1 + i] = (unsigned char)((uint64_t)len >> (56 - 8 * i));
    return EVP_DigestUpdate(ctx, hdr, sizeof(hdr)) == 1 &&
           (len == 0 || EVP_DigestUpdate(ctx, p, len) == 1);
}

/* The payload's part of a fingerprint: the whole value, or, for a route
 * with fingerprint.json and a value that is JSON, each named field as
 * cJSON prints it (absent told apart), after its pointer. */
static bool digest_payload(EVP_MD_CTX *ctx, const kd_route *r, const kd_keysrc_msg *m,
                           size_t max_json_bytes) {
    static const char whole[] = "kdedup-fp-v1", fields[] = "kdedup-fp-json-v1";
    json_doc doc = {0};
    bool ok;

    if (!r->nfingerprint_json || json_parse(&doc, m, max_json_bytes) != KD_KEY_OK ||
        doc.nul) {
        cJSON_Delete(doc.root);
        return EVP_DigestUpdate(ctx, whole, sizeof(whole)) == 1 &&
               digest_field(ctx, m->value != NULL, m->value, m->value_len);
    }
    ok = EVP_DigestUpdate(ctx, fields, sizeof(fields)) == 1;
    for (size_t i = 0; ok && i < r->nfingerprint_json; i++) {
        const cJSON *v = json_resolve(doc.root, r->fingerprint_json[i], false);
        char *text = v ? cJSON_PrintUnformatted(v) : NULL;

        ok = (!v || text) &&
             digest_field(ctx, true, r->fingerprint_json[i],
                          strlen(r->fingerprint_json[i])) &&
             digest_field(ctx, v != NULL, text, text ? strlen(text) : 0);
        cJSON_free(text);
    }
    cJSON_Delete(doc.root);
    return ok;
}

bool kd_keysrc_fingerprint(const kd_route *r, size_t max_json_bytes,
                           const kd_keysrc_msg *m, unsigned char out[KD_KEYSRC_FP_LEN]) {
    EVP_MD_CTX *ctx = kd_sha256_scratch(); /* the thread's: not freed here */
    unsigned int len = 0;
    bool ok;

    if (!ctx)
        return false;
    ok = EVP_DigestInit_ex(ctx, kd_sha256_md(), NULL) == 1 &&
         digest_payload(ctx, r, m, max_json_bytes);
    for (size_t i = 0; ok && i < r->nfingerprint_headers; i++) {
        const char *name = r->fingerprint_headers[i];
        const void *val = NULL;
        size_t vlen = 0;
        bool present =
            m->header && m->header(m->header_arg, name, false, &val, &vlen) && val;

        ok = digest_field(ctx, true, name, strlen(name)) &&
             digest_field(ctx, present, val, vlen);
    }
    return ok && EVP_DigestFinal_ex(ctx, out, &len) == 1 && len == KD_KEYSRC_FP_LEN;
}
