/*
 * kdedup - configuration: the one generic pass that applies a table
 * (config_fields.c) to a JSON object, and the scalars it checks.
 */
#include "config/config_int.h"

#include <cjson/cJSON.h>

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

bool kd_config_parse_duration(const char *s, uint64_t *ms) {
    static const struct {
        const char *unit;
        uint64_t ms;
    } units[] = {{"d", 86400000}, {"h", 3600000}, {"ms", 1}, {"m", 60000}, {"s", 1000}};
    static const int rank[] = {0, 1, 4, 2, 3}; /* d h m s ms: each after the larger */
    uint64_t total = 0;
    int last = -1;

    if (!s || !*s)
        return false;
    while (*s) {
        unsigned long long n;
        char *end;
        size_t i = 0;

        if (!isdigit((unsigned char)*s))
            return false;
        errno = 0;
        n = strtoull(s, &end, 10);
        if (errno)
            return false;
        while (i < sizeof(units) / sizeof(units[0]) &&
               strncmp(end, units[i].unit, strlen(units[i].unit)))
            i++;
        if (i == sizeof(units) / sizeof(units[0]) || rank[i] <= last ||
            n > (UINT64_MAX - total) / units[i].ms)
            return false;
        last = rank[i];
        total += n * units[i].ms;
        s = end + strlen(units[i].unit);
    }
    *ms = total;
    return true;
}

bool kd_config_valid_topic(const char *s) {
    size_t n = strlen(s);

    if (n == 0 || n > 249 || !strcmp(s, ".") || !strcmp(s, ".."))
        return false;
    for (size_t i = 0; i < n; i++)
        if (!isalnum((unsigned char)s[i]) && !strchr("._-", s[i]))
            return false;
    return true;
}

/* "host:port" with a port of min_port-65535 and a non-empty host. */
static bool valid_hostport(const char *s, size_t len, long min_port) {
    const char *colon = NULL;
    long port = 0;

    for (size_t i = 0; i < len; i++)
        if (s[i] == ':')
            colon = s + i;
    if (!colon || colon == s || colon + 1 == s + len)
        return false;
    for (const char *p = colon + 1; p < s + len; p++) {
        if (!isdigit((unsigned char)*p) || port > 65535)
            return false;
        port = port * 10 + (*p - '0');
    }
    for (const char *p = s; p < colon; p++)
        if (isspace((unsigned char)*p) || *p == ',' || *p == '/')
            return false;
    return port >= min_port && port <= 65535;
}

static bool valid_brokers(const char *s) {
    if (!strncmp(s, "mock:", 5))
        return strlen(s) == 6 && s[5] >= '1' && s[5] <= '9';
    for (const char *p = s;;) {
        const char *comma = strchr(p, ',');
        size_t len = comma ? (size_t)(comma - p) : strlen(p);

        if (!valid_hostport(p, len, 1))
            return false;
        if (!comma)
            return true;
        p = comma + 1;
    }
}

static bool parse_props(ctx *c, const cJSON *obj, kd_config_props *props,
                        const char *path) {
    size_t n = 0;

    if (!cJSON_IsObject(obj))
        return kd_cfg_fail_value(c, path, obj, "an object of librdkafka properties");
    for (const cJSON *e = obj->child; e; e = e->next)
        n++;
    props->v = calloc(n + 1, sizeof(*props->v)); /* + room for a half-made one */
    if (!props->v)
        return kd_cfg_fail(c, path, "out of memory");
    bool ok = true;

    for (const cJSON *e = obj->child; e; e = e->next) {
        kd_config_prop *p = &props->v[props->n];
        char epath[MAX_PATH];

        kd_cfg_path_fmt(epath, "%s[\"%s\"]", path, e->string);
        if (!*e->string) {
            ok = kd_cfg_fail(c, epath, "expected a property name");
            continue;
        }
        if (kd_config_prop_get(props, e->string)) {
            ok = kd_cfg_fail(c, epath, "duplicate key");
            continue;
        }
        if (!(p->value =
                  kd_cfg_scalar_text(c, epath, e, "a string, number or boolean"))) {
            ok = false; /* kd_cfg_fail() was called */
            continue;
        }
        p->name = strdup(e->string);
        p->path = strdup(epath);
        props->n++;
        if (!p->name || !p->path)
            return kd_cfg_fail(c, epath, "out of memory");
    }
    return ok;
}

const char *kd_config_prop_get(const kd_config_props *props, const char *name) {
    for (size_t i = 0; i < props->n; i++)
        if (!strcmp(props->v[i].name, name))
            return props->v[i].value;
    return NULL;
}

static bool parse_routes(ctx *c, const cJSON *arr, kd_config *cfg, const field *f,
                         const char *path) {
    size_t n = (size_t)cJSON_GetArraySize(arr);
    size_t i = 0;

    if (!cJSON_IsArray(arr) || n == 0)
        return kd_cfg_fail_value(c, path, arr, "a non-empty array of routes");
    bool ok = true;

    if (!(cfg->routes = calloc(n, sizeof(*cfg->routes))) ||
        !(c->route_bad = calloc(n, sizeof(*c->route_bad))))
        return kd_cfg_fail(c, path, "out of memory");
    for (const cJSON *e = arr->child; e; e = e->next, i++) {
        char epath[MAX_PATH];

        kd_cfg_path_fmt(epath, "%s[%zu]", path, i);
        cfg->nroutes = i + 1;
        c->route_bad[i] = !kd_cfg_parse_object(c, e, f->sub, &cfg->routes[i], epath) ||
                          !kd_cfg_finish_route(c, e, &cfg->routes[i], epath);
        ok = ok && !c->route_bad[i];
    }
    return ok;
}

/* What a field's value must be, for messages. */
static void expected_text(const field *f, char *buf, size_t size) {
    switch (f->type) {
    case F_STRING:
        snprintf(buf, size, "a non-empty string");
        break;
    case F_TOPIC:
        snprintf(buf, size, "a topic name (1-249 of a-z A-Z 0-9 . _ -)");
        break;
    case F_NAME:
        snprintf(buf, size, "a route name (1-249 of a-z A-Z 0-9 . _ -)");
        break;
    case F_BROKERS:
        snprintf(buf, size, "\"host:port,host:port...\" or \"mock:N\" (N 1-9)");
        break;
    case F_LISTEN:
        snprintf(buf, size, "\"host:port\"");
        break;
    case F_BOOL:
        snprintf(buf, size, "true or false");
        break;
    case F_INT:
        snprintf(buf, size, "an integer from %lld to %lld", (long long)f->min,
                 (long long)f->max);
        break;
    case F_DURATION:
        if (f->min == 0)
            snprintf(buf, size,
                     "a duration like \"250ms\", \"30s\", \"1h30m\" or \"7d\"%s",
                     f->names ? ", or \"off\"" : "");
        else
            snprintf(buf, size, "a duration from %lldms to %lldms", (long long)f->min,
                     (long long)f->max);
        break;
    case F_ENUM:
        snprintf(buf, size, "one of");
        for (int i = 0; f->names[i]; i++)
            snprintf(buf + strlen(buf), size - strlen(buf), "%s \"%s\"", i ? "," : "",
                     f->names[i]);
        break;
    default:
        snprintf(buf, size, "a value");
    }
}

/* Parses one scalar field from its text into base. */
static bool parse_scalar(ctx *c, const field *f, const cJSON *v, const char *text,
                         void *base, const char *path) {
    char *at = (char *)base + f->offset, expected[160], *end;
    long long n;
    uint64_t ms;
    bool ok;

    expected_text(f, expected, sizeof(expected));
    switch (f->type) {
    case F_BOOL:
        if (strcmp(text, "true") && strcmp(text, "false"))
            return kd_cfg_fail_value(c, path, v, expected);
        *(bool *)at = !strcmp(text, "true");
        return true;
    case F_INT:
        errno = 0;
        n = strtoll(text, &end, 10);
        if (errno || end == text || *end || n < f->min || n > f->max)
            return kd_cfg_fail_value(c, path, v, expected);
        *(int64_t *)at = n;
        return true;
    case F_DURATION:
        if (f->names && !strcmp(text, "off"))
            ms = 0; /* where 0 turns it off, it may say so */
        else if (!kd_config_parse_duration(text, &ms) || ms > (uint64_t)f->max ||
                 ms < (uint64_t)f->min)
            return kd_cfg_fail_value(c, path, v, expected);
        *(uint64_t *)at = ms;
        return true;
    case F_ENUM:
        for (int i = 0; f->names[i]; i++)
            if (!strcmp(text, f->names[i])) {
                *(int *)at = i;
                return true;
            }
        return kd_cfg_fail_value(c, path, v, expected);
    case F_STRING:
        ok = *text != '\0';
        break;
    case F_TOPIC:
    case F_NAME:
        ok = kd_config_valid_topic(text);
        break;
    case F_BROKERS:
        ok = valid_brokers(text);
        break;
    case F_LISTEN:
        ok = valid_hostport(text, strlen(text), 0); /* 0: any free port */
        break;
    default:
        return kd_cfg_fail(c, path, "internal error: not a scalar");
    }
    if (!ok)
        return kd_cfg_fail_value(c, path, v, expected);
    free(*(char **)at);
    if (!(*(char **)at = strdup(text)))
        return kd_cfg_fail(c, path, "out of memory");
    return true;
}

/* Offline, a value holding a ${...} that is not there: a string keeps its
 * text as written, anything else its default (or zero). */
static bool parse_unchecked(ctx *c, const field *f, const char *text, void *base,
                            const char *path) {
    char **at = (char **)((char *)base + f->offset);
    cJSON *def;
    bool ok;

    switch (f->type) {
    case F_STRING:
    case F_TOPIC:
    case F_NAME:
    case F_BROKERS:
    case F_LISTEN:
        free(*at);
        return (*at = strdup(text)) || kd_cfg_fail(c, path, "out of memory");
    default:
        if (!f->def)
            return true;
        if (!(def = cJSON_CreateString(f->def)))
            return kd_cfg_fail(c, path, "out of memory");
        ok = parse_scalar(c, f, def, f->def, base, path);
        cJSON_Delete(def);
        return ok;
    }
}

/* Strings, topics, addresses and names come as JSON strings; booleans and
 * integers may also come as strings (for ${VAR} interpolation). */
static bool takes_non_string(const field *f) {
    return f->type == F_BOOL || f->type == F_INT;
}

/* Parses field f from v (the file's value, or its default when NULL). */
static bool parse_field(ctx *c, const field *f, const cJSON *v, void *base,
                        const char *path) {
    cJSON *def = NULL;
    char *text, expected[160];
    bool ok;

    if (!v && (f->type == F_OBJECT || f->type == F_PROPS)) {
        def = cJSON_CreateObject();
        v = def;
    } else if (!v) {
        def = cJSON_CreateString(f->def);
        v = def;
    }
    if (!v)
        return kd_cfg_fail(c, path, "out of memory");
    switch (f->type) {
    case F_OBJECT:
        ok = kd_cfg_parse_object(c, v, f->sub, base, path);
        break;
    case F_PROPS:
        ok = parse_props(c, v, (kd_config_props *)((char *)base + f->offset), path);
        break;
    case F_ROUTES:
        ok = parse_routes(c, v, base, f, path);
        break;
    case F_KEY:
        ok = kd_cfg_parse_key(c, v, base, path);
        break;
    case F_FINGERPRINT:
        ok = kd_cfg_parse_fingerprint(c, v, base, path);
        break;
    default:
        expected_text(f, expected, sizeof(expected));
        if (!cJSON_IsString(v) && !takes_non_string(f)) {
            ok = kd_cfg_fail_value(c, path, v, expected);
            break;
        }
        text = kd_cfg_scalar_text(c, path, v, expected);
        if (text && kd_cfg_env_is_unresolved(c->env, path))
            ok = parse_unchecked(c, f, text, base, path);
        else
            ok = text && parse_scalar(c, f, v, text, base, path);
        free(text);
    }
    cJSON_Delete(def);
    return ok;
}

/* Applies fields to obj; every error is recorded, and the keys after it
 * are parsed all the same. */
bool kd_cfg_parse_object(ctx *c, const cJSON *obj, const field *fields, void *base,
                         const char *path) {
    bool ok = true;

    if (!cJSON_IsObject(obj))
        return kd_cfg_fail_value(c, path, obj, "an object");
    for (const cJSON *e = obj->child; e; e = e->next) {
        char known[256] = "", epath[MAX_PATH];
        const field *f = fields;

        for (; f->key && strcmp(f->key, e->string); f++)
            snprintf(known + strlen(known), sizeof(known) - strlen(known), "%s%s",
                     f == fields ? "" : ", ", f->key);
        kd_cfg_path_key(epath, path, e->string);
        if (!f->key) {
            ok = kd_cfg_fail(c, epath, "unknown key (expected one of: %s)", known);
            continue;
        }
        for (const cJSON *o = obj->child; o != e; o = o->next)
            if (!strcmp(o->string, e->string)) {
                ok = kd_cfg_fail(c, epath, "duplicate key");
                break;
            }
    }
    for (const field *f = fields; f->key; f++) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, f->key);
        char fpath[MAX_PATH];

        kd_cfg_path_key(fpath, path, f->key);
        if (!v && !f->def && f->type != F_OBJECT && f->type != F_PROPS) {
            if (!f->optional)
                ok = kd_cfg_fail(c, fpath, "missing (%s)", f->doc ? f->doc : "required");
            continue;
        }
        if (!parse_field(c, f, v, base, fpath))
            ok = false;
    }
    return ok;
}
