/*
 * kdedup tests - key sources and fingerprints (sidecar/keysrc.c): each
 * source, each malformed input (bad JSON, deep nesting, huge values,
 * pointers with ~0 / ~1, fields that are not strings or integers), the
 * composite's unambiguous join, the limits, and what the fingerprint covers.
 * Routes come from real config text, so the config's parsing is exercised
 * with them.
 */
#include "dedup/hex.h"
#include "config/config.h"
#include "sidecar/keysrc.h"

#include <stdarg.h>
#include <setjmp.h>
#include <stddef.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_KEY 255
#define MAX_JSON 16384

/* A message's headers: name/value pairs, value NULL for a null header. */
typedef struct hdr {
    const char *name;
    const char *value;
} hdr;

static bool find_header(void *arg, const char *name, bool last, const void **val,
                        size_t *len) {
    bool found = false;

    for (const hdr *h = arg; h && h->name && (last || !found); h++)
        if (!strcmp(h->name, name)) {
            *val = h->value;
            *len = h->value ? strlen(h->value) : 0;
            found = true;
        }
    return found;
}

static kd_keysrc_msg msg_of(const char *key, const char *value, const hdr *hdrs) {
    return (kd_keysrc_msg){.key = key,
                           .key_len = key ? strlen(key) : 0,
                           .value = value,
                           .value_len = value ? strlen(value) : 0,
                           .header = find_header,
                           .header_arg = (void *)hdrs};
}

/* A config with one route whose other fields are route_extra. */
static kd_config *config_with(const char *route_extra) {
    char json[2048], err[512];
    kd_config *cfg;

    snprintf(json, sizeof(json),
             "{\"kafka\": {\"brokers\": \"k:9092\", \"group_id\": \"g\"}, \"routes\": "
             "[{\"from\": \"a\", \"to\": \"b\", \"on_missing_key\": \"drop\", %s}]}",
             route_extra);
    if (!(cfg = kd_config_parse(json, strlen(json), "t.json", err, sizeof(err))))
        fail_msg("rejected: %s\n  %s", json, err);
    return cfg;
}

/* Extracts with route_extra's key; on KD_KEY_OK the key must be want. */
static void expect(const char *route_extra, kd_keysrc_msg m, kd_key_status want_st,
                   const char *want, size_t want_len) {
    kd_config *cfg = config_with(route_extra);
    kd_key key;
    kd_key_status st = kd_keysrc_extract(&cfg->routes[0], MAX_KEY, MAX_JSON, &m, &key);

    if (st != want_st)
        fail_msg("%s: got %s, want %s", route_extra, kd_key_status_name(st),
                 kd_key_status_name(want_st));
    if (st == KD_KEY_OK) {
        assert_int_equal(key.len, want_len);
        assert_memory_equal(key.bytes, want, want_len);
    } else {
        assert_null(key.bytes);
        assert_null(key.owned);
    }
    kd_key_clear(&key);
    kd_config_destroy(cfg);
}

#define JSON_KEY(ptr) "\"key\": {\"from\": \"json\", \"pointer\": \"" ptr "\"}"
#define S(s) s, sizeof(s) - 1

static void test_header(void **state) {
    const hdr hs[] = {{"Idempotency-Key", "k-1"}, {"X-Id", "x"}, {NULL, NULL}};
    const hdr empty[] = {{"Idempotency-Key", ""}, {NULL, NULL}};
    const hdr null[] = {{"Idempotency-Key", NULL}, {NULL, NULL}};
    const hdr other[] = {{"X-Id", "x"}, {NULL, NULL}};

    (void)state;
    /* The default, the shorthand and the object form are one source. */
    expect("\"fingerprint\": true", msg_of(NULL, "v", hs), KD_KEY_OK, S("k-1"));
    expect("\"key_header\": \"X-Id\"", msg_of(NULL, "v", other), KD_KEY_OK, S("x"));
    expect("\"key\": {\"from\": \"header\", \"name\": \"X-Id\"}",
           msg_of(NULL, "v", other), KD_KEY_OK, S("x"));
    expect("\"key_header\": \"X-Id\"", msg_of(NULL, "v", empty), KD_KEY_ABSENT, NULL, 0);
    expect("\"fingerprint\": true", msg_of(NULL, "v", empty), KD_KEY_EMPTY, NULL, 0);
    expect("\"fingerprint\": true", msg_of(NULL, "v", null), KD_KEY_ABSENT, NULL, 0);
    expect("\"fingerprint\": true", msg_of(NULL, "v", NULL), KD_KEY_ABSENT, NULL, 0);
}

static void test_record_key(void **state) {
    const char *rk = "\"key\": {\"from\": \"record_key\"}";
    kd_keysrc_msg bin = msg_of(NULL, "v", NULL);

    (void)state;
    expect(rk, msg_of("order-7", "v", NULL), KD_KEY_OK, S("order-7"));
    expect(rk, msg_of(NULL, "v", NULL), KD_KEY_ABSENT, NULL, 0);
    expect(rk, msg_of("", "v", NULL), KD_KEY_EMPTY, NULL, 0);
    bin.key = "a\0b";
    bin.key_len = 3; /* binary-safe */
    expect(rk, bin, KD_KEY_OK, "a\0b", 3);
}

static void test_json_fields(void **state) {
    const char *doc = "{\"order\": {\"id\": \"o-1\", \"n\": 42, \"neg\": -7, \"f\": 1.5, "
                      "\"big\": 9007199254740993, \"t\": true, \"z\": null, "
                      "\"o\": {}, \"a\": [\"x\", \"y\"], \"e\": \"\"}}";

    (void)state;
    expect(JSON_KEY("/order/id"), msg_of(NULL, doc, NULL), KD_KEY_OK, S("o-1"));
    expect(JSON_KEY("/order/n"), msg_of(NULL, doc, NULL), KD_KEY_OK, S("42"));
    expect(JSON_KEY("/order/neg"), msg_of(NULL, doc, NULL), KD_KEY_OK, S("-7"));
    expect(JSON_KEY("/order/a/1"), msg_of(NULL, doc, NULL), KD_KEY_OK, S("y"));
    /* Not a string or an exact integer: no key. */
    expect(JSON_KEY("/order/f"), msg_of(NULL, doc, NULL), KD_KEY_NOT_SCALAR, NULL, 0);
    expect(JSON_KEY("/order/big"), msg_of(NULL, doc, NULL), KD_KEY_NOT_SCALAR, NULL, 0);
    expect(JSON_KEY("/order/t"), msg_of(NULL, doc, NULL), KD_KEY_NOT_SCALAR, NULL, 0);
    expect(JSON_KEY("/order/z"), msg_of(NULL, doc, NULL), KD_KEY_NOT_SCALAR, NULL, 0);
    expect(JSON_KEY("/order/o"), msg_of(NULL, doc, NULL), KD_KEY_NOT_SCALAR, NULL, 0);
    expect(JSON_KEY("/order/a"), msg_of(NULL, doc, NULL), KD_KEY_NOT_SCALAR, NULL, 0);
    expect(JSON_KEY("/order"), msg_of(NULL, doc, NULL), KD_KEY_NOT_SCALAR, NULL, 0);
    expect(JSON_KEY("/order/e"), msg_of(NULL, doc, NULL), KD_KEY_EMPTY, NULL, 0);
    /* Missing fields and indexes. */
    expect(JSON_KEY("/order/nope"), msg_of(NULL, doc, NULL), KD_KEY_ABSENT, NULL, 0);
    expect(JSON_KEY("/order/a/2"), msg_of(NULL, doc, NULL), KD_KEY_ABSENT, NULL, 0);
    expect(JSON_KEY("/order/a/01"), msg_of(NULL, doc, NULL), KD_KEY_ABSENT, NULL, 0);
    expect(JSON_KEY("/order/a/-"), msg_of(NULL, doc, NULL), KD_KEY_ABSENT, NULL, 0);
    expect(JSON_KEY("/order/id/x"), msg_of(NULL, doc, NULL), KD_KEY_ABSENT, NULL, 0);
    /* Case matters; "" is the whole value. */
    expect(JSON_KEY("/Order/id"), msg_of(NULL, doc, NULL), KD_KEY_ABSENT, NULL, 0);
    expect(JSON_KEY(""), msg_of(NULL, "\"whole\"", NULL), KD_KEY_OK, S("whole"));
    expect(JSON_KEY(""), msg_of(NULL, " 12 ", NULL), KD_KEY_OK, S("12"));
    expect(JSON_KEY(""), msg_of(NULL, "4.2e1", NULL), KD_KEY_OK, S("42")); /* by value */
    /* String escapes are decoded: the key is the field's text. */
    expect(JSON_KEY("/id"), msg_of(NULL, "{\"id\": \"caf\\u00e9\\n\"}", NULL), KD_KEY_OK,
           S("caf\xc3\xa9\n"));
}

/* A key header given twice: readers of the first (librdkafka, kdedup) and
 * of the last (Java's lastHeader()) would see two ids, so the key is
 * ambiguous, unless every reading agrees. Repeats of other headers do not
 * matter. */
static void test_header_repeated(void **state) {
    const hdr two[] = {
        {"Idempotency-Key", "k-1"}, {"Idempotency-Key", "k-2"}, {NULL, NULL}};
    const hdr same[] = {
        {"Idempotency-Key", "k-1"}, {"Idempotency-Key", "k-1"}, {NULL, NULL}};
    const hdr three[] = {{"Idempotency-Key", "k-1"},
                         {"Idempotency-Key", "k-2"},
                         {"Idempotency-Key", "k-1"},
                         {NULL, NULL}};
    const hdr null_first[] = {
        {"Idempotency-Key", NULL}, {"Idempotency-Key", "k-1"}, {NULL, NULL}};
    const hdr null_last[] = {
        {"Idempotency-Key", "k-1"}, {"Idempotency-Key", NULL}, {NULL, NULL}};
    const hdr nulls[] = {
        {"Idempotency-Key", NULL}, {"Idempotency-Key", NULL}, {NULL, NULL}};
    const hdr empty_last[] = {
        {"Idempotency-Key", "k-1"}, {"Idempotency-Key", ""}, {NULL, NULL}};
    const hdr prefix[] = {
        {"Idempotency-Key", "k-1"}, {"Idempotency-Key", "k-10"}, {NULL, NULL}};
    const hdr other_twice[] = {
        {"Idempotency-Key", "k-1"}, {"T", "a"}, {"T", "b"}, {NULL, NULL}};
    const hdr case_differs[] = {
        {"Idempotency-Key", "k-1"}, {"idempotency-key", "k-2"}, {NULL, NULL}};
    const char *rk = "\"fingerprint\": true";

    (void)state;
    expect(rk, msg_of(NULL, "v", two), KD_KEY_AMBIGUOUS, NULL, 0);
    expect(rk, msg_of(NULL, "v", prefix), KD_KEY_AMBIGUOUS, NULL, 0);
    expect(rk, msg_of(NULL, "v", null_first), KD_KEY_AMBIGUOUS, NULL, 0);
    expect(rk, msg_of(NULL, "v", null_last), KD_KEY_AMBIGUOUS, NULL, 0);
    expect(rk, msg_of(NULL, "v", empty_last), KD_KEY_AMBIGUOUS, NULL, 0);
    /* first and last agree (a middle one differs: no reader takes it) */
    expect(rk, msg_of(NULL, "v", same), KD_KEY_OK, S("k-1"));
    expect(rk, msg_of(NULL, "v", three), KD_KEY_OK, S("k-1"));
    expect(rk, msg_of(NULL, "v", nulls), KD_KEY_ABSENT, NULL, 0);
    expect(rk, msg_of(NULL, "v", other_twice), KD_KEY_OK, S("k-1"));
    /* names are case-sensitive in Kafka: another header */
    expect(rk, msg_of(NULL, "v", case_differs), KD_KEY_OK, S("k-1"));
    /* a composite with an ambiguous part is ambiguous */
    expect("\"key\": {\"from\": \"composite\", \"parts\": [{\"from\": \"header\", "
           "\"name\": \"Idempotency-Key\"}, {\"from\": \"record_key\"}]}",
           msg_of("rk", "v", two), KD_KEY_AMBIGUOUS, NULL, 0);
}

/* A JSON member duplicated on the pointer's path: cJSON (and kdedup) read
 * the first, Jackson, Python's json and JSON.parse the last. Ambiguous
 * when the two readings give different keys, or one gives none; duplicates
 * elsewhere in the document, or with equal values, do not matter. */
static void test_json_duplicates(void **state) {
    (void)state;
    expect(JSON_KEY("/id"), msg_of(NULL, "{\"id\": \"a\", \"id\": \"b\"}", NULL),
           KD_KEY_AMBIGUOUS, NULL, 0);
    expect(JSON_KEY("/id"), msg_of(NULL, "{\"id\": 7, \"id\": \"7x\"}", NULL),
           KD_KEY_AMBIGUOUS, NULL, 0);
    expect(JSON_KEY("/id"), msg_of(NULL, "{\"id\": \"a\", \"id\": null}", NULL),
           KD_KEY_AMBIGUOUS, NULL, 0);
    expect(JSON_KEY("/id"), msg_of(NULL, "{\"id\": [1], \"id\": \"a\"}", NULL),
           KD_KEY_AMBIGUOUS, NULL, 0);
    /* a parent duplicated: the last one has no id, or another */
    expect(JSON_KEY("/order/id"),
           msg_of(NULL, "{\"order\": {\"id\": \"o-1\"}, \"order\": {\"x\": 1}}", NULL),
           KD_KEY_AMBIGUOUS, NULL, 0);
    expect(JSON_KEY("/order/id"),
           msg_of(NULL, "{\"order\": {\"id\": 1}, \"order\": {\"id\": 2}}", NULL),
           KD_KEY_AMBIGUOUS, NULL, 0);
    expect(JSON_KEY("/items/0/id"),
           msg_of(NULL, "{\"items\": [{\"id\": 1, \"id\": 2}]}", NULL), KD_KEY_AMBIGUOUS,
           NULL, 0);
    /* the readings agree: the same value, or the same key by value */
    expect(JSON_KEY("/id"), msg_of(NULL, "{\"id\": \"a\", \"id\": \"a\"}", NULL),
           KD_KEY_OK, S("a"));
    expect(JSON_KEY("/id"), msg_of(NULL, "{\"id\": 42, \"id\": 42.0}", NULL), KD_KEY_OK,
           S("42"));
    expect(
        JSON_KEY("/order/id"),
        msg_of(NULL, "{\"order\": {\"id\": 1}, \"order\": {\"id\": 1, \"n\": 2}}", NULL),
        KD_KEY_OK, S("1"));
    expect(JSON_KEY("/id"), msg_of(NULL, "{\"id\": \"a\", \"x\": 1, \"x\": 2}", NULL),
           KD_KEY_OK, S("a"));
    expect(JSON_KEY("/id"), msg_of(NULL, "{\"x\": {\"id\": 1}, \"id\": \"a\"}", NULL),
           KD_KEY_OK, S("a"));
    /* neither reading has a key: missing, not ambiguous */
    expect(JSON_KEY("/id"), msg_of(NULL, "{\"id\": null, \"id\": true}", NULL),
           KD_KEY_NOT_SCALAR, NULL, 0);
    expect(JSON_KEY("/order/id"),
           msg_of(NULL, "{\"order\": {\"id\": null}, \"order\": {}}", NULL),
           KD_KEY_NOT_SCALAR, NULL, 0);
}

/* RFC 6901: "~1" is '/', "~0" is '~', decoded in that order ("~01" is "~1"). */
static void test_pointer_escapes(void **state) {
    const char *doc = "{\"a/b\": \"slash\", \"m~n\": \"tilde\", \"~1\": \"literal\", "
                      "\"\": {\"\": \"empty names\"}}";

    (void)state;
    expect(JSON_KEY("/a~1b"), msg_of(NULL, doc, NULL), KD_KEY_OK, S("slash"));
    expect(JSON_KEY("/m~0n"), msg_of(NULL, doc, NULL), KD_KEY_OK, S("tilde"));
    expect(JSON_KEY("/~01"), msg_of(NULL, doc, NULL), KD_KEY_OK, S("literal"));
    expect(JSON_KEY("//"), msg_of(NULL, doc, NULL), KD_KEY_OK, S("empty names"));
    expect(JSON_KEY("/a/b"), msg_of(NULL, doc, NULL), KD_KEY_ABSENT, NULL, 0);
}

static void test_json_malformed(void **state) {
    char *deep, *huge;
    size_t depth = 5000;

    (void)state;
    expect(JSON_KEY("/id"), msg_of(NULL, "{\"id\": \"x\"", NULL), KD_KEY_NOT_JSON, NULL,
           0);
    expect(JSON_KEY("/id"), msg_of(NULL, "not json", NULL), KD_KEY_NOT_JSON, NULL, 0);
    expect(JSON_KEY("/id"), msg_of(NULL, "{\"id\": \"x\"} trailing", NULL),
           KD_KEY_NOT_JSON, NULL, 0);
    expect(JSON_KEY("/id"), msg_of(NULL, "{\"id\": \"x\"}{}", NULL), KD_KEY_NOT_JSON,
           NULL, 0);
    expect(JSON_KEY("/id"), msg_of(NULL, "", NULL), KD_KEY_NOT_JSON, NULL, 0);
    expect(JSON_KEY("/id"), msg_of(NULL, NULL, NULL), KD_KEY_NOT_JSON, NULL, 0);
    expect(JSON_KEY("/id"), msg_of(NULL, "[\"id\"]", NULL), KD_KEY_ABSENT, NULL, 0);

    /* Deeper than cJSON's nesting limit: refused, never a stack overflow. */
    deep = malloc(2 * depth + 1);
    assert_non_null(deep);
    memset(deep, '[', depth);
    memset(deep + depth, ']', depth);
    deep[2 * depth] = '\0';
    expect(JSON_KEY("/0"), msg_of(NULL, deep, NULL), KD_KEY_NOT_JSON, NULL, 0);
    free(deep);

    /* Over the size bound: not parsed at all, even though it is valid. */
    huge = malloc(MAX_JSON + 64);
    assert_non_null(huge);
    snprintf(huge, MAX_JSON + 64, "{\"id\": \"x\", \"pad\": \"%0*d\"}", MAX_JSON, 0);
    expect(JSON_KEY("/id"), msg_of(NULL, huge, NULL), KD_KEY_JSON_TOO_LARGE, NULL, 0);
    free(huge);

    /* A NUL inside the value ends nothing: the bytes after it are trailing. */
    kd_keysrc_msg nul = msg_of(NULL, NULL, NULL);
    nul.value = "{\"id\": \"x\"}\0{";
    nul.value_len = 13;
    expect(JSON_KEY("/id"), nul, KD_KEY_NOT_JSON, NULL, 0);

    /* An escaped NUL would cut the string (cJSON's end there): "order-1\0A"
     * and "order-1\0B" must never both be "order-1". No string key then. */
    expect(JSON_KEY("/id"), msg_of(NULL, "{\"id\": \"order-1\\u0000A\"}", NULL),
           KD_KEY_NOT_SCALAR, NULL, 0);
    expect(JSON_KEY("/n"), msg_of(NULL, "{\"n\": 7, \"x\": \"\\u0000\"}", NULL),
           KD_KEY_OK, "7", 1);
}

#define COMPOSITE(a, b) "\"key\": {\"from\": \"composite\", \"parts\": [" a ", " b "]}"
#define PART_HDR(n) "{\"from\": \"header\", \"name\": \"" n "\"}"
#define PART_JSON(p) "{\"from\": \"json\", \"pointer\": \"" p "\"}"

static void test_composite(void **state) {
    const hdr ab[] = {{"A", "ab"}, {"B", "c"}, {NULL, NULL}};
    const hdr a_bc[] = {{"A", "a"}, {"B", "bc"}, {NULL, NULL}};
    const hdr only_a[] = {{"A", "t1"}, {NULL, NULL}};
    const hdr empty_b[] = {{"A", "t1"}, {"B", ""}, {NULL, NULL}};
    const hdr tenant[] = {{"Tenant", "acme"}, {NULL, NULL}};

    (void)state;
    /* ("ab", "c") and ("a", "bc") never meet. */
    expect(COMPOSITE(PART_HDR("A"), PART_HDR("B")), msg_of(NULL, "v", ab), KD_KEY_OK,
           S("\0\0\0\2ab\0\0\0\1c"));
    expect(COMPOSITE(PART_HDR("A"), PART_HDR("B")), msg_of(NULL, "v", a_bc), KD_KEY_OK,
           S("\0\0\0\1a\0\0\0\2bc"));
    /* A header with a JSON field, and with the record key. */
    expect(COMPOSITE(PART_HDR("Tenant"), PART_JSON("/id")),
           msg_of(NULL, "{\"id\": 17}", tenant), KD_KEY_OK,
           S("\0\0\0\4acme\0\0\0\00217"));
    expect(COMPOSITE(PART_HDR("Tenant"), "{\"from\": \"record_key\"}"),
           msg_of("rk", "v", tenant), KD_KEY_OK, S("\0\0\0\4acme\0\0\0\2rk"));
    /* Every part must be there and non-empty. */
    expect(COMPOSITE(PART_HDR("A"), PART_HDR("B")), msg_of(NULL, "v", only_a),
           KD_KEY_ABSENT, NULL, 0);
    expect(COMPOSITE(PART_HDR("A"), PART_HDR("B")), msg_of(NULL, "v", empty_b),
           KD_KEY_EMPTY, NULL, 0);
    expect(COMPOSITE(PART_HDR("Tenant"), PART_JSON("/id")),
           msg_of(NULL, "{\"id\": [1]}", tenant), KD_KEY_NOT_SCALAR, NULL, 0);
    expect(COMPOSITE(PART_HDR("Tenant"), PART_JSON("/id")), msg_of(NULL, "{", tenant),
           KD_KEY_NOT_JSON, NULL, 0);
}

/* max_key_bytes holds for the final key: a composite counts its prefixes. */
static void test_limits(void **state) {
    kd_config *cfg = config_with(COMPOSITE(PART_HDR("A"), PART_HDR("B")));
    kd_config *hcfg = config_with("\"key_header\": \"A\"");
    kd_config *jcfg = config_with(JSON_KEY("/id"));
    const hdr hs[] = {{"A", "12345"}, {"B", "123"}, {NULL, NULL}};
    kd_keysrc_msg m = msg_of(NULL, "{\"id\": \"1234567\"}", hs);
    kd_key key;

    (void)state;
    /* 4 + 5 + 4 + 3 = 16 bytes */
    assert_int_equal(kd_keysrc_extract(&cfg->routes[0], 16, MAX_JSON, &m, &key),
                     KD_KEY_OK);
    assert_int_equal(key.len, 16);
    kd_key_clear(&key);
    assert_int_equal(kd_keysrc_extract(&cfg->routes[0], 15, MAX_JSON, &m, &key),
                     KD_KEY_TOO_LONG);
    assert_null(key.owned);
    assert_int_equal(kd_keysrc_extract(&hcfg->routes[0], 5, MAX_JSON, &m, &key),
                     KD_KEY_OK);
    assert_int_equal(kd_keysrc_extract(&hcfg->routes[0], 4, MAX_JSON, &m, &key),
                     KD_KEY_TOO_LONG);
    assert_int_equal(kd_keysrc_extract(&jcfg->routes[0], 7, MAX_JSON, &m, &key),
                     KD_KEY_OK);
    assert_memory_equal(key.bytes, "1234567", 7);
    assert_non_null(key.owned); /* copied out of the parsed value */
    kd_key_clear(&key);
    assert_int_equal(kd_keysrc_extract(&jcfg->routes[0], 6, MAX_JSON, &m, &key),
                     KD_KEY_TOO_LONG);
    /* The JSON bound is the value's size: exactly at it is parsed. */
    assert_int_equal(kd_keysrc_extract(&jcfg->routes[0], 7, m.value_len, &m, &key),
                     KD_KEY_OK);
    kd_key_clear(&key);
    assert_int_equal(kd_keysrc_extract(&jcfg->routes[0], 7, m.value_len - 1, &m, &key),
                     KD_KEY_JSON_TOO_LARGE);
    kd_config_destroy(cfg);
    kd_config_destroy(hcfg);
    kd_config_destroy(jcfg);
}

/* kdedup lookup joins parts as the pipeline does. */
static void test_compose_matches_extract(void **state) {
    kd_config *cfg = config_with(COMPOSITE(PART_HDR("A"), PART_JSON("/id")));
    const hdr hs[] = {{"A", "t"}, {NULL, NULL}};
    kd_keysrc_msg m = msg_of(NULL, "{\"id\": \"o-9\"}", hs);
    const char *parts[] = {"t", "o-9"};
    const size_t lens[] = {1, 3};
    kd_key a, b;

    (void)state;
    assert_int_equal(kd_keysrc_extract(&cfg->routes[0], MAX_KEY, MAX_JSON, &m, &a),
                     KD_KEY_OK);
    assert_int_equal(kd_keysrc_compose(parts, lens, 2, MAX_KEY, &b), KD_KEY_OK);
    assert_int_equal(a.len, b.len);
    assert_memory_equal(a.bytes, b.bytes, a.len);
    kd_key_clear(&a);
    kd_key_clear(&b);
    assert_int_equal(kd_keysrc_compose(parts, (const size_t[]){1, 0}, 2, MAX_KEY, &b),
                     KD_KEY_EMPTY);
    kd_config_destroy(cfg);
}

static void fp_of(const kd_route *r, kd_keysrc_msg m, unsigned char *out) {
    assert_true(kd_keysrc_fingerprint(r, 1 << 20, &m, out));
}

/* The value decides; headers only when listed; absent, null and empty
 * differ; a different record key does not matter. */
static void test_fingerprint(void **state) {
    kd_config *plain = config_with("\"fingerprint\": true");
    kd_config *with = config_with("\"fingerprint\": {\"headers\": [\"Tenant\"]}");
    const hdr t1[] = {{"Tenant", "a"}, {"Ts", "1"}, {NULL, NULL}};
    const hdr t2[] = {{"Tenant", "b"}, {"Ts", "2"}, {NULL, NULL}};
    const hdr t1ts[] = {{"Tenant", "a"}, {"Ts", "3"}, {NULL, NULL}};
    const hdr tnull[] = {{"Tenant", NULL}, {NULL, NULL}};
    const hdr tempty[] = {{"Tenant", ""}, {NULL, NULL}};
    unsigned char a[KD_KEYSRC_FP_LEN], b[KD_KEYSRC_FP_LEN], c[KD_KEYSRC_FP_LEN];
    const kd_route *rp = &plain->routes[0], *rw = &with->routes[0];
    kd_keysrc_msg empty_value = msg_of(NULL, "", NULL);

    (void)state;
    assert_true(plain->routes[0].fingerprint);
    assert_int_equal(with->routes[0].nfingerprint_headers, 1);
    fp_of(rp, msg_of("k1", "payload", t1), a);
    fp_of(rp, msg_of("k2", "payload", t2), b);
    assert_memory_equal(a, b, sizeof(a)); /* headers not listed: ignored */
    fp_of(rp, msg_of("k1", "payload!", t1), c);
    assert_memory_not_equal(a, c, sizeof(a));

    fp_of(rw, msg_of(NULL, "payload", t1), a);
    fp_of(rw, msg_of(NULL, "payload", t1ts), b);
    assert_memory_equal(a, b, sizeof(a)); /* Ts not listed: a retry still matches */
    fp_of(rw, msg_of(NULL, "payload", t2), c);
    assert_memory_not_equal(a, c, sizeof(a));
    fp_of(rw, msg_of(NULL, "payload", NULL), a);
    fp_of(rw, msg_of(NULL, "payload", tnull), b);
    fp_of(rw, msg_of(NULL, "payload", tempty), c);
    assert_memory_equal(a, b, sizeof(a)); /* absent and null: both "no value" */
    assert_memory_not_equal(a, c, sizeof(a));

    fp_of(rp, msg_of(NULL, NULL, NULL), a);
    fp_of(rp, empty_value, b);
    assert_memory_not_equal(a, b, sizeof(a)); /* a tombstone is not an empty value */
    kd_config_destroy(plain);
    kd_config_destroy(with);
}

/* fingerprint.json: only the named fields decide (a retry that renews a
 * timestamp in the body still matches); a missing field differs from any
 * value; a value that is not JSON is taken whole. */
static void test_fingerprint_json(void **state) {
    kd_config *cfg =
        config_with("\"fingerprint\": {\"json\": [\"/order\", \"/amount\"]}");
    kd_config *plain = config_with("\"fingerprint\": true");
    unsigned char a[KD_KEYSRC_FP_LEN], b[KD_KEYSRC_FP_LEN], c[KD_KEYSRC_FP_LEN];
    const kd_route *r = &cfg->routes[0];

    (void)state;
    fp_of(r, msg_of(NULL, "{\"order\":\"o-1\",\"amount\":5,\"sent_at\":1}", NULL), a);
    fp_of(r, msg_of(NULL, "{\"sent_at\":2, \"amount\":5, \"order\":\"o-1\"}", NULL), b);
    assert_memory_equal(a, b, sizeof(a));
    fp_of(r, msg_of(NULL, "{\"order\":\"o-1\",\"amount\":6,\"sent_at\":1}", NULL), c);
    assert_memory_not_equal(a, c, sizeof(a));
    fp_of(r, msg_of(NULL, "{\"order\":\"o-1\",\"sent_at\":1}", NULL), b);
    fp_of(r, msg_of(NULL, "{\"order\":\"o-1\",\"amount\":null}", NULL), c);
    assert_memory_not_equal(a, b, sizeof(a));
    assert_memory_not_equal(b, c, sizeof(b)); /* missing is not null */
    /* Not JSON: the whole value, as a route without fingerprint.json. */
    fp_of(r, msg_of(NULL, "not json", NULL), a);
    fp_of(&plain->routes[0], msg_of(NULL, "not json", NULL), b);
    assert_memory_equal(a, b, sizeof(a));
    fp_of(r, msg_of(NULL, "{\"order\":\"o-1\"} trailing", NULL), c);
    fp_of(&plain->routes[0], msg_of(NULL, "{\"order\":\"o-1\"} trailing", NULL), a);
    assert_memory_equal(a, c, sizeof(a));
    kd_config_destroy(cfg);
    kd_config_destroy(plain);
}

static void test_fingerprint_off(void **state) {
    kd_config *cfg = config_with("\"fingerprint\": false");

    (void)state;
    assert_false(cfg->routes[0].fingerprint);
    kd_config_destroy(cfg);
}

static void test_hex(void **state) {
    const unsigned char b[] = {0x00, 0xab, 0xff};
    char out[7];

    (void)state;
    assert_string_equal(kd_hex(b, 3, out), "00abff");
    assert_string_equal(kd_key_status_name(KD_KEY_NOT_JSON), "not_json");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_header),
        cmocka_unit_test(test_record_key),
        cmocka_unit_test(test_json_fields),
        cmocka_unit_test(test_pointer_escapes),
        cmocka_unit_test(test_json_malformed),
        cmocka_unit_test(test_composite),
        cmocka_unit_test(test_header_repeated),
        cmocka_unit_test(test_json_duplicates),
        cmocka_unit_test(test_limits),
        cmocka_unit_test(test_compose_matches_extract),
        cmocka_unit_test(test_fingerprint),
        cmocka_unit_test(test_fingerprint_json),
        cmocka_unit_test(test_fingerprint_off),
        cmocka_unit_test(test_hex),
    };

    return cmocka_run_group_tests_name("key sources and fingerprints", tests, NULL, NULL);
}
