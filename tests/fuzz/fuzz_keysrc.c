/*
 * kdedup - libFuzzer target for key extraction with a JSON pointer: the
 * input names a pointer and a value; the value's key is extracted through
 * a json route and through a composite (header + json) route, and the
 * fingerprint is taken.
 *
 * Checked: extraction never crashes or leaks, whatever the value (bad
 * JSON, deep nesting, huge strings) or pointer; a key is returned only
 * within 1..max_key_bytes; the json route's key is the composite's second
 * part, length-prefixed after the header's; the same input gives the same
 * key and fingerprint twice.
 *
 * Input: byte 0 is max_key_bytes (0 → 1), byte 1 the pointer's length n,
 * then n bytes of pointer (an invalid one, as the config would refuse it,
 * is replaced by "/id"), then the value.
 */
#include "config/config.h"
#include "sidecar/keysrc.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define TENANT "acme"

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size);

static bool tenant_header(void *arg, const char *name, bool last, const void **val,
                          size_t *len) {
    (void)arg;
    (void)last;
    if (strcmp(name, "Tenant"))
        return false;
    *val = TENANT;
    *len = strlen(TENANT);
    return true;
}

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size) {
    char pointer[256];
    kd_key_part json_part = {.from = KD_KEY_FROM_JSON, .pointer = pointer};
    kd_key_part parts[2] = {{.from = KD_KEY_FROM_HEADER, .name = "Tenant"},
                            {.from = KD_KEY_FROM_JSON, .pointer = pointer}};
    kd_route json = {
        .key_from = KD_KEY_FROM_JSON, .key_parts = &json_part, .nkey_parts = 1};
    kd_route composite = {
        .key_from = KD_KEY_FROM_COMPOSITE, .key_parts = parts, .nkey_parts = 2};
    kd_keysrc_msg m = {.header = tenant_header};
    unsigned char fp1[KD_KEYSRC_FP_LEN], fp2[KD_KEYSRC_FP_LEN];
    size_t max_key, plen;
    kd_key a, b, c;
    kd_key_status sa, sb, sc;

    if (size < 2)
        return 0;
    max_key = data[0] ? data[0] : 1;
    plen = data[1];
    if (plen > size - 2)
        plen = size - 2;
    memcpy(pointer, data + 2, plen);
    pointer[plen] = '\0';
    if (strlen(pointer) != plen || !kd_config_valid_pointer(pointer))
        strcpy(pointer, "/id");
    m.value = data + 2 + plen;
    m.value_len = size - 2 - plen;

    sa = kd_keysrc_extract(&json, max_key, 1 << 20, &m, &a);
    sb = kd_keysrc_extract(&json, max_key, 1 << 20, &m, &b);
    if (sa != sb ||
        (sa == KD_KEY_OK && (a.len != b.len || memcmp(a.bytes, b.bytes, a.len))))
        abort(); /* not deterministic */
    if (sa == KD_KEY_OK && (a.len == 0 || a.len > max_key))
        abort();
    if (sa != KD_KEY_OK && (a.bytes || a.owned))
        abort();

    /* The composite: "acme" then the json key, each length-prefixed. */
    sc = kd_keysrc_extract(&composite, 1024, 1 << 20, &m, &c);
    if (sc == KD_KEY_OK) {
        const unsigned char *p = (const unsigned char *)c.bytes;
        size_t l0 = (size_t)p[0] << 24 | (size_t)p[1] << 16 | (size_t)p[2] << 8 | p[3],
               l1;

        if (l0 != 4 || memcmp(p + 4, TENANT, 4) || c.len < 12)
            abort();
        p += 8;
        l1 = (size_t)p[0] << 24 | (size_t)p[1] << 16 | (size_t)p[2] << 8 | p[3];
        if (l1 == 0 || 12 + l1 != c.len || c.len > 1024)
            abort();
        /* the same bytes as the json route's key, when that fit */
        if (sa == KD_KEY_OK && (l1 != a.len || memcmp(p + 4, a.bytes, l1)))
            abort();
    } else if (sa == KD_KEY_OK && max_key <= 1024 - 12) {
        abort(); /* the json part was there, so the composite must be too */
    }

    if (!kd_keysrc_fingerprint(&json, 1 << 20, &m, fp1) ||
        !kd_keysrc_fingerprint(&json, 1 << 20, &m, fp2) || memcmp(fp1, fp2, sizeof(fp1)))
        abort();
    kd_key_clear(&a);
    kd_key_clear(&b);
    kd_key_clear(&c);
    return 0;
}
