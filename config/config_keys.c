/*
 * kdedup - configuration: a route's key and fingerprint, shapes a table
 * cannot say.
 */
#include "config/config_int.h"

#include <cjson/cJSON.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define DEFAULT_KEY_HEADER "Idempotency-Key"
#define MAX_FINGERPRINT_HEADERS 32

bool kd_config_valid_pointer(const char *s) {
    if (*s && *s != '/')
        return false;
    for (; *s; s++)
        if (*s == '~' && s[1] != '0' && s[1] != '1')
            return false;
    return true;
}

const char *const kd_cfg_key_from_names[] = {"header", "record_key", "json", "composite",
                                             NULL};

/* Fails on any key of obj not in allowed (a NULL-terminated list). */
static bool only_keys(ctx *c, const cJSON *obj, const char *const *allowed,
                      const char *path, const char *why) {
    for (const cJSON *e = obj->child; e; e = e->next) {
        char epath[MAX_PATH];
        size_t i = 0;

        while (allowed[i] && strcmp(allowed[i], e->string))
            i++;
        kd_cfg_path_key(epath, path, e->string);
        if (!allowed[i])
            return kd_cfg_fail(c, epath, "unknown key (%s)", why);
        for (const cJSON *o = obj->child; o != e; o = o->next)
            if (!strcmp(o->string, e->string))
                return kd_cfg_fail(c, epath, "duplicate key");
    }
    return true;
}

/* A required string member of obj, interpolated; NULL with the error set. */
static char *member_text(ctx *c, const cJSON *obj, const char *name, const char *path,
                         const char *expected, bool allow_empty) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, name);
    char mpath[MAX_PATH], *text;

    kd_cfg_path_key(mpath, path, name);
    if (!v) {
        kd_cfg_fail(c, mpath, "missing (%s)", expected);
        return NULL;
    }
    if (!cJSON_IsString(v)) {
        kd_cfg_fail_value(c, mpath, v, expected);
        return NULL;
    }
    if (!(text = kd_cfg_scalar_text(c, mpath, v, expected)))
        return NULL;
    if (!*text && !allow_empty) {
        free(text);
        kd_cfg_fail_value(c, mpath, v, expected);
        return NULL;
    }
    return text;
}

/* One key source object into *part; composite only when top (the key
 * itself), with its parts appended to r. */
static bool parse_key_part(ctx *c, const cJSON *v, kd_route *r, kd_key_part *part,
                           bool top, const char *path) {
    static const char *const header_keys[] = {"from", "name", NULL};
    static const char *const record_keys[] = {"from", NULL};
    static const char *const json_keys[] = {"from", "pointer", NULL};
    static const char *const composite_keys[] = {"from", "parts", NULL};
    static const char *const *const keys_of[] = {header_keys, record_keys, json_keys,
                                                 composite_keys};
    static const char *const why_of[] = {"a header key has \"from\" and \"name\"",
                                         "a record_key key has only \"from\"",
                                         "a json key has \"from\" and \"pointer\"",
                                         "a composite key has \"from\" and \"parts\""};
    const char *expected =
        top ? "one of \"header\", \"record_key\", \"json\", \"composite\""
            : "one of \"header\", \"record_key\", \"json\" (a part "
              "of a composite key cannot be composite)";
    const cJSON *from;
    char fpath[MAX_PATH];
    int kind = -1;

    if (!cJSON_IsObject(v))
        return kd_cfg_fail_value(
            c, path, v, "an object like {\"from\": \"header\", \"name\": \"...\"}");
    kd_cfg_path_key(fpath, path, "from");
    if (!(from = cJSON_GetObjectItemCaseSensitive(v, "from")))
        return kd_cfg_fail(c, fpath, "missing (%s)", expected);
    for (int i = 0; cJSON_IsString(from) && kd_cfg_key_from_names[i]; i++)
        if (!strcmp(from->valuestring, kd_cfg_key_from_names[i]))
            kind = i;
    if (kind < 0 || (!top && kind == KD_KEY_FROM_COMPOSITE))
        return kd_cfg_fail_value(c, fpath, from, expected);
    if (!only_keys(c, v, keys_of[kind], path, why_of[kind]))
        return false;
    part->from = (kd_key_from)kind;
    switch (kind) {
    case KD_KEY_FROM_HEADER:
        part->name = member_text(c, v, "name", path, "a header name", false);
        return part->name != NULL;
    case KD_KEY_FROM_JSON:
        kd_cfg_path_key(fpath, path, "pointer");
        part->pointer = member_text(c, v, "pointer", path,
                                    "an RFC 6901 JSON pointer like \"/order/id\"", true);
        if (!part->pointer)
            return false;
        if (!kd_config_valid_pointer(part->pointer))
            return kd_cfg_fail(
                c, fpath,
                "expected an RFC 6901 JSON pointer (\"\" or \"/a/b\", with "
                "\"~\" only as \"~0\" or \"~1\"), got \"%s\"",
                part->pointer);
        return true;
    case KD_KEY_FROM_COMPOSITE:
        break;
    default:
        return true;
    }
    const cJSON *parts = cJSON_GetObjectItemCaseSensitive(v, "parts");
    int n = cJSON_GetArraySize(parts);

    kd_cfg_path_key(fpath, path, "parts");
    if (!parts)
        return kd_cfg_fail(c, fpath, "missing (a non-empty array of key parts)");
    if (!cJSON_IsArray(parts) || n == 0 || n > KD_CONFIG_MAX_KEY_PARTS) {
        char expected_parts[80];

        snprintf(expected_parts, sizeof(expected_parts), "an array of 1 to %d key parts",
                 KD_CONFIG_MAX_KEY_PARTS);
        return kd_cfg_fail_value(c, fpath, parts, expected_parts);
    }
    free(r->key_parts); /* the placeholder of the composite itself */
    r->nkey_parts = 0;
    if (!(r->key_parts = calloc((size_t)n, sizeof(*r->key_parts))))
        return kd_cfg_fail(c, fpath, "out of memory");
    for (const cJSON *e = parts->child; e; e = e->next) {
        char epath[MAX_PATH];

        kd_cfg_path_fmt(epath, "%s[%zu]", fpath, r->nkey_parts);
        if (!parse_key_part(c, e, r, &r->key_parts[r->nkey_parts++], false, epath))
            return false;
    }
    r->key_from = KD_KEY_FROM_COMPOSITE;
    return true;
}

bool kd_cfg_parse_key(ctx *c, const cJSON *v, kd_route *r, const char *path) {
    if (!(r->key_parts = calloc(1, sizeof(*r->key_parts))))
        return kd_cfg_fail(c, path, "out of memory");
    r->nkey_parts = 1;
    if (!parse_key_part(c, v, r, &r->key_parts[0], true, path))
        return false;
    if (r->key_from != KD_KEY_FROM_COMPOSITE)
        r->key_from = r->key_parts[0].from;
    return true;
}

/* An optional array member of obj of at most MAX_FINGERPRINT_HEADERS
 * non-empty, distinct strings into *out / *n; pointers: each must be an
 * RFC 6901 JSON pointer. what names one element for messages. */
static bool parse_names(ctx *c, const cJSON *obj, const char *member, const char *path,
                        bool pointers, const char *what, const char *whats, char ***out,
                        size_t *n) {
    const cJSON *arr = cJSON_GetObjectItemCaseSensitive(obj, member);
    char apath[MAX_PATH];
    int count;

    kd_cfg_path_key(apath, path, member);
    if (!arr)
        return true;
    count = cJSON_GetArraySize(arr);
    if (!cJSON_IsArray(arr) || count > MAX_FINGERPRINT_HEADERS || (pointers && !count)) {
        char expected[120];

        snprintf(expected, sizeof(expected), "an array of %s%d %s",
                 pointers ? "1 to " : "at most ", MAX_FINGERPRINT_HEADERS, whats);
        return kd_cfg_fail_value(c, apath, arr, expected);
    }
    if (count && !(*out = calloc((size_t)count, sizeof(char *))))
        return kd_cfg_fail(c, apath, "out of memory");
    for (const cJSON *e = arr->child; e; e = e->next) {
        char epath[MAX_PATH], *text;

        kd_cfg_path_fmt(epath, "%s[%zu]", apath, *n);
        if (!cJSON_IsString(e) || (!pointers && !*e->valuestring))
            return kd_cfg_fail_value(c, epath, e, what);
        if (!(text = kd_cfg_scalar_text(c, epath, e, what)))
            return false;
        (*out)[(*n)++] = text;
        if (pointers && !kd_config_valid_pointer(text))
            return kd_cfg_fail(
                c, epath,
                "expected an RFC 6901 JSON pointer (\"\" or \"/a/b\", with "
                "\"~\" only as \"~0\" or \"~1\"), got \"%s\"",
                text);
        for (size_t j = 0; j + 1 < *n; j++)
            if (!strcmp((*out)[j], text))
                return kd_cfg_fail(c, epath, "\"%s\" is listed twice", text);
    }
    return true;
}

/* "fingerprint": true | false | {"headers": ["Name", ...], "json": ["/ptr", ...]}. */
bool kd_cfg_parse_fingerprint(ctx *c, const cJSON *v, kd_route *r, const char *path) {
    static const char *const fp_keys[] = {"headers", "json", NULL};

    if (cJSON_IsBool(v)) {
        r->fingerprint = cJSON_IsTrue(v);
        return true;
    }
    if (!cJSON_IsObject(v))
        return kd_cfg_fail_value(
            c, path, v,
            "true, false or {\"headers\": [\"Name\", ...], \"json\": "
            "[\"/pointer\", ...]}");
    if (!only_keys(c, v, fp_keys, path, "expected \"headers\" or \"json\""))
        return false;
    r->fingerprint = true;
    return parse_names(c, v, "headers", path, false, "a header name", "header names",
                       &r->fingerprint_headers, &r->nfingerprint_headers) &&
           parse_names(c, v, "json", path, true, "a JSON pointer", "JSON pointers",
                       &r->fingerprint_json, &r->nfingerprint_json);
}

/* After a route's table: the key's default and shorthand, the
 * fingerprint's default. */
bool kd_cfg_finish_route(ctx *c, const cJSON *obj, kd_route *r, const char *path) {
    char kpath[MAX_PATH];

    if (!r->name && !(r->name = strdup(r->from)))
        return kd_cfg_fail(c, path, "out of memory");
    kd_cfg_path_key(kpath, path, "key_header");
    if (r->key_header && r->key_parts)
        return kd_cfg_fail(
            c, kpath, "give either \"key_header\" (a shorthand) or \"key\", not both");
    if (!cJSON_GetObjectItemCaseSensitive(obj, "fingerprint"))
        r->fingerprint = true;
    for (size_t i = 0; i < r->nkey_parts; i++)
        if (r->key_parts[i].name && !strncasecmp(r->key_parts[i].name, "kdedup-", 7))
            return kd_cfg_fail(
                c, path,
                "key header \"%s\": headers named kdedup-* are kdedup's own "
                "(stripped from what it forwards)",
                r->key_parts[i].name);
    if (r->key_header && !strncasecmp(r->key_header, "kdedup-", 7))
        return kd_cfg_fail(
            c, kpath,
            "\"%s\": headers named kdedup-* are kdedup's own (stripped from "
            "what it forwards)",
            r->key_header);
    if (r->key_parts) {
        if (r->key_from == KD_KEY_FROM_HEADER &&
            !(r->key_header = strdup(r->key_parts[0].name)))
            return kd_cfg_fail(c, path, "out of memory");
        return true;
    }
    if (!r->key_header && !(r->key_header = strdup(DEFAULT_KEY_HEADER)))
        return kd_cfg_fail(c, path, "out of memory");
    if (!(r->key_parts = calloc(1, sizeof(*r->key_parts))) ||
        !(r->key_parts[0].name = strdup(r->key_header)))
        return kd_cfg_fail(c, path, "out of memory");
    r->nkey_parts = 1;
    r->key_from = KD_KEY_FROM_HEADER;
    return true;
}
