/*
 * kdedup - configuration: reloads, what differs between two configs and
 * whether a running kdedup may take it; and the routes rendered as JSON
 * (GET /v1/routes).
 */
#include "config/config_int.h"

#include <cjson/cJSON.h>

#include <stdint.h>
#include <stdio.h>
#include <string.h>

/* Keeps what kd_config_diff() compares: root's routes, and the rest of root
 * less the keys a reload may change (log.level, pipeline.batch_max). */
bool kd_cfg_keep_for_diff(kd_config_env *env, const cJSON *root) {
    cJSON *sub;

    if (!(env->fixed = cJSON_Duplicate(root, true)))
        return false;
    env->routes = cJSON_DetachItemFromObjectCaseSensitive(env->fixed, "routes");
    if ((sub = cJSON_GetObjectItemCaseSensitive(env->fixed, "log")))
        cJSON_DeleteItemFromObjectCaseSensitive(sub, "level");
    if ((sub = cJSON_GetObjectItemCaseSensitive(env->fixed, "pipeline")))
        cJSON_DeleteItemFromObjectCaseSensitive(sub, "batch_max");
    return env->routes != NULL;
}

/* Appends the paths under path where a and b differ to out; n counts them. */
static void diff_paths(const cJSON *a, const cJSON *b, const char *path, char *out,
                       size_t size, int *n) {
    char sub[MAX_PATH];

    /* Objects compare key by key; a missing object is an empty one (every
     * key of it has its default), so the keys written are named. */
    if ((cJSON_IsObject(a) || !a) && (cJSON_IsObject(b) || !b) && (a || b)) {
        for (const cJSON *e = a ? a->child : NULL; e; e = e->next) {
            kd_cfg_path_key(sub, path, e->string);
            diff_paths(e, cJSON_GetObjectItemCaseSensitive(b, e->string), sub, out, size,
                       n);
        }
        for (const cJSON *e = b ? b->child : NULL; e; e = e->next)
            if (!a || !cJSON_GetObjectItemCaseSensitive(a, e->string)) {
                kd_cfg_path_key(sub, path, e->string);
                diff_paths(NULL, e, sub, out, size, n);
            }
        return;
    }
    if (a && b && cJSON_Compare(a, b, true))
        return;
    snprintf(out + strlen(out), size - strlen(out), "%s%s", (*n)++ ? ", " : "", path);
}

/* The index of the route from `from` in cfg, or SIZE_MAX. */
static size_t route_index(const kd_config *cfg, const char *from) {
    for (size_t i = 0; i < cfg->nroutes; i++)
        if (!strcmp(cfg->routes[i].from, from))
            return i;
    return SIZE_MAX;
}

/* Appends "label: a, b" for the routes of `in` that pick() selects. */
static void list_routes(char *out, size_t size, const char *label, const kd_config *in,
                        const kd_config *other, int which) {
    int n = 0;

    for (size_t i = 0; i < in->nroutes; i++) {
        size_t j = route_index(other, in->routes[i].from);
        bool pick;

        if (which == 0) /* absent from other */
            pick = j == SIZE_MAX;
        else /* in both, written differently */
            pick = j != SIZE_MAX &&
                   !cJSON_Compare(cJSON_GetArrayItem(in->env->routes, (int)i),
                                  cJSON_GetArrayItem(other->env->routes, (int)j), true);
        if (!pick)
            continue;
        snprintf(out + strlen(out), size - strlen(out), "%s%s%s",
                 n      ? ", "
                 : *out ? "; "
                        : "",
                 n ? "" : label, in->routes[i].name);
        n++;
    }
}

void kd_config_diff_of(const kd_config *old, const kd_config *cur, kd_config_diff *out) {
    char paths[768] = "";
    int n = 0;

    memset(out, 0, sizeof(*out));
    diff_paths(old->env->fixed, cur->env->fixed, "", paths, sizeof(paths), &n);
    if (n) {
        out->refused = true;
        snprintf(out->what, sizeof(out->what),
                 "%s: cannot change while kdedup runs (restart it to apply %s); "
                 "nothing changed",
                 paths, n == 1 ? "this" : "these");
        return;
    }
    list_routes(out->what, sizeof(out->what), "routes added: ", cur, old, 0);
    list_routes(out->what, sizeof(out->what), "routes removed: ", old, cur, 0);
    list_routes(out->what, sizeof(out->what), "routes changed: ", cur, old, 1);
    out->routes = *out->what != '\0';
    for (size_t i = 0; !out->routes && i < cur->nroutes; i++)
        if (route_index(old, cur->routes[i].from) != i) {
            out->routes = true;
            snprintf(out->what, sizeof(out->what), "routes reordered");
        }
    if (old->log_level != cur->log_level) {
        out->log_level = true;
        snprintf(out->what + strlen(out->what), sizeof(out->what) - strlen(out->what),
                 "%slog.level: %s -> %s", *out->what ? "; " : "",
                 kd_config_log_level_name(old->log_level),
                 kd_config_log_level_name(cur->log_level));
    }
    if (old->batch_max != cur->batch_max) {
        out->batch_max = true;
        snprintf(out->what + strlen(out->what), sizeof(out->what) - strlen(out->what),
                 "%spipeline.batch_max: %lld -> %lld", *out->what ? "; " : "",
                 (long long)old->batch_max, (long long)cur->batch_max);
    }
    if (!*out->what)
        snprintf(out->what, sizeof(out->what), "nothing to change");
}

/* One key source as the config writes it: {"from": "header", "name": ...}. */
static cJSON *render_key_part(const kd_key_part *k) {
    cJSON *o = cJSON_CreateObject();

    cJSON_AddStringToObject(o, "from", kd_cfg_key_from_names[k->from]);
    if (k->from == KD_KEY_FROM_HEADER)
        cJSON_AddStringToObject(o, "name", k->name);
    else if (k->from == KD_KEY_FROM_JSON)
        cJSON_AddStringToObject(o, "pointer", k->pointer);
    return o;
}

/* A route's key, every form written out: {"from": ..., ...} or a composite
 * with its parts. */
static cJSON *render_key(const kd_route *r) {
    cJSON *o, *parts;

    if (r->key_from != KD_KEY_FROM_COMPOSITE)
        return render_key_part(&r->key_parts[0]);
    o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "from", "composite");
    parts = cJSON_AddArrayToObject(o, "parts");
    for (size_t i = 0; i < r->nkey_parts; i++)
        cJSON_AddItemToArray(parts, render_key_part(&r->key_parts[i]));
    return o;
}

static cJSON *string_array(char *const *v, size_t n) {
    cJSON *a = cJSON_CreateArray();

    for (size_t i = 0; a && i < n; i++)
        cJSON_AddItemToArray(a, cJSON_CreateString(v[i]));
    return a;
}

/* A route's fingerprint: false, or what it covers: "value" (the whole
 * value, or the json fields), and the headers. */
static cJSON *render_fingerprint(const kd_route *r) {
    cJSON *o;

    if (!r->fingerprint)
        return cJSON_CreateFalse();
    o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "value", r->nfingerprint_json ? "json fields" : "whole");
    cJSON_AddItemToObject(o, "json",
                          string_array(r->fingerprint_json, r->nfingerprint_json));
    cJSON_AddItemToObject(o, "headers",
                          string_array(r->fingerprint_headers, r->nfingerprint_headers));
    return o;
}

/* Adds the fields of a table, with their values in base, to obj. */
static void render_fields(cJSON *obj, const field *fields, const void *base) {
    for (const field *f = fields; f->key; f++) {
        const char *at = (const char *)base + f->offset, *str;
        char buf[32];

        switch (f->type) {
        case F_KEY:
            cJSON_AddItemToObject(obj, f->key, render_key(base));
            break;
        case F_FINGERPRINT:
            cJSON_AddItemToObject(obj, f->key, render_fingerprint(base));
            break;
        case F_STRING:
        case F_TOPIC:
        case F_NAME:
        case F_BROKERS:
        case F_LISTEN:
            if ((str = *(char *const *)at))
                cJSON_AddStringToObject(obj, f->key,
                                        kd_config_is_secret(f->key) ? "(secret)" : str);
            else
                cJSON_AddNullToObject(obj, f->key);
            break;
        case F_BOOL:
            cJSON_AddBoolToObject(obj, f->key, *(const bool *)at);
            break;
        case F_INT:
            cJSON_AddNumberToObject(obj, f->key, (double)*(const int64_t *)at);
            break;
        case F_DURATION:
            snprintf(buf, sizeof(buf), "%llums",
                     (unsigned long long)*(const uint64_t *)at);
            cJSON_AddStringToObject(obj, f->key, buf);
            break;
        case F_ENUM:
            cJSON_AddStringToObject(obj, f->key, f->names[*(const int *)at]);
            break;
        case F_OBJECT:
            render_fields(cJSON_AddObjectToObject(obj, f->key), f->sub, base);
            break;
        default:
            break; /* props and arrays: not in a route */
        }
    }
}

char *kd_config_routes_json(const kd_config *cfg) {
    cJSON *arr = cJSON_CreateArray();
    char *text;

    for (size_t i = 0; arr && i < cfg->nroutes; i++) {
        cJSON *o = cJSON_CreateObject();

        if (!o || !cJSON_AddItemToArray(arr, o))
            break;
        render_fields(o, kd_cfg_route_fields, &cfg->routes[i]);
    }
    text = arr ? cJSON_PrintUnformatted(arr) : NULL;
    cJSON_Delete(arr);
    return text;
}
