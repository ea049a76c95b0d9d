/*
 * kdedup - configuration: the entry points. Loads and parses a config (a
 * table of fields per JSON object, one generic pass that applies a table to
 * an object, and a second pass for the rules that span keys: see the file
 * map in config_int.h), and destroys it.
 */
#include "config/config_int.h"

#include <cjson/cJSON.h>

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_FILE_BYTES (1u << 20)

static void redact_in_place(const kd_config *cfg, char *text, size_t size) {
    char *copy = size ? malloc(size) : NULL;

    if (!copy)
        return;
    kd_config_redact(cfg, text, copy, size);
    memcpy(text, copy, size);
    free(copy);
}

/* line:column of the byte at off. */
static void where(const char *json, size_t off, int *line, int *col) {
    *line = 1;
    *col = 1;
    for (size_t i = 0; i < off; i++, (*col)++)
        if (json[i] == '\n') {
            (*line)++;
            *col = 0;
        }
}

/* Where cJSON stopped: a hint when it is a comment (README's config block
 * has them, for the page only). */
static const char *json_hint(const char *json, size_t len, size_t off) {
    for (size_t i = off > 0 ? off - 1 : 0; i < len && i <= off + 1; i++)
        if (json[i] == '/' && i + 1 < len && (json[i + 1] == '/' || json[i + 1] == '*'))
            return " (a comment? JSON has none: remove the // and /* */ parts)";
    return "";
}

kd_config *kd_config_parse(const char *json, size_t len, const char *name, char *errstr,
                           size_t errstr_size) {
    return kd_config_parse_opts(json, len, name, 0, errstr, errstr_size);
}

kd_config *kd_config_parse_opts(const char *json, size_t len, const char *name,
                                unsigned flags, char *errstr, size_t errstr_size) {
    ctx c = {name ? name : "config", errstr, errstr_size, NULL, flags, 0, 0, NULL};
    const char *end = NULL;
    kd_config *cfg;
    cJSON *root;
    int line, col;
    bool ok;

    if (len > MAX_FILE_BYTES) {
        kd_cfg_fail(&c, "", "larger than %u bytes; not a config file", MAX_FILE_BYTES);
        return NULL;
    }
    root = cJSON_ParseWithLengthOpts(json, len, &end, false);
    if (!root) {
        const char *at = cJSON_GetErrorPtr();
        size_t off = at && at >= json && at <= json + len ? (size_t)(at - json) : len;

        where(json, off, &line, &col);
        kd_cfg_fail(&c, "", "invalid JSON at line %d, column %d%s%s", line, col,
                    off + 1 >= len ? " (truncated?)" : "", json_hint(json, len, off));
        return NULL;
    }
    for (; end && end < json + len && isspace((unsigned char)*end); end++)
        ;
    if (end && end < json + len) {
        where(json, (size_t)(end - json), &line, &col);
        kd_cfg_fail(&c, "", "invalid JSON: trailing data at line %d, column %d", line,
                    col);
        cJSON_Delete(root);
        return NULL;
    }
    if (!(cfg = calloc(1, sizeof(*cfg))) || !(cfg->file = strdup(c.file)) ||
        !(cfg->env = calloc(1, sizeof(*cfg->env)))) {
        kd_config_destroy(cfg);
        cJSON_Delete(root);
        kd_cfg_fail(&c, "", "out of memory");
        return NULL;
    }
    c.env = cfg->env;
    if (!cJSON_IsObject(root)) {
        kd_cfg_fail_value(&c, "", root, "a JSON object at the top");
        goto fail;
    }
    ok = kd_cfg_parse_object(&c, root, kd_cfg_top_fields, cfg, "");
    if (!kd_cfg_validate(&c, cfg) || !ok)
        goto fail;
    if (!kd_cfg_keep_for_diff(cfg->env, root)) {
        kd_cfg_fail(&c, "", "out of memory");
        goto fail;
    }
    cJSON_Delete(root);
    free(c.route_bad);
    kd_cfg_sort_secrets(cfg->env);
    return cfg;
fail:
    kd_cfg_fail_done(&c);
    /* Messages show values as written; this catches what a rule printed
     * from an expanded value all the same. */
    kd_cfg_sort_secrets(cfg->env);
    redact_in_place(cfg, errstr, errstr_size);
    cJSON_Delete(root);
    free(c.route_bad);
    kd_config_destroy(cfg);
    return NULL;
}

kd_config *kd_config_load(const char *path, char *errstr, size_t errstr_size) {
    return kd_config_load_opts(path, 0, errstr, errstr_size);
}

kd_config *kd_config_load_opts(const char *path, unsigned flags, char *errstr,
                               size_t errstr_size) {
    char *bytes;
    size_t len;
    kd_config *cfg =
        kd_config_load_bytes_opts(path, flags, &bytes, &len, errstr, errstr_size);

    free(bytes);
    return cfg;
}

kd_config *kd_config_load_bytes(const char *path, char **bytes, size_t *bytes_len,
                                char *errstr, size_t errstr_size) {
    return kd_config_load_bytes_opts(path, 0, bytes, bytes_len, errstr, errstr_size);
}

kd_config *kd_config_load_bytes_opts(const char *path, unsigned flags, char **bytes,
                                     size_t *bytes_len, char *errstr,
                                     size_t errstr_size) {
    const char *base = strrchr(path, '/') ? strrchr(path, '/') + 1 : path;
    FILE *fp = fopen(path, "rb");
    char *buf = NULL;
    size_t len = 0;
    kd_config *cfg = NULL;

    *bytes = NULL;
    *bytes_len = 0;
    if (!fp) {
        snprintf(errstr, errstr_size, "%s: cannot open: %s", path, strerror(errno));
        return NULL;
    }
    if (!(buf = malloc(MAX_FILE_BYTES + 1))) {
        snprintf(errstr, errstr_size, "%s: out of memory", path);
        fclose(fp);
        return NULL;
    }
    len = fread(buf, 1, MAX_FILE_BYTES + 1, fp);
    if (ferror(fp))
        snprintf(errstr, errstr_size, "%s: cannot read: %s", path, strerror(errno));
    else
        cfg = kd_config_parse_opts(buf, len, base, flags, errstr, errstr_size);
    fclose(fp);
    if (!cfg) {
        free(buf);
        return NULL;
    }
    *bytes = buf;
    *bytes_len = len;
    return cfg;
}

static void free_props(kd_config_props *p) {
    for (size_t i = 0; i < p->n; i++) {
        free(p->v[i].name);
        free(p->v[i].value);
        free(p->v[i].path);
    }
    /* A failed parse leaves its half-made prop after n. */
    if (p->v) {
        free(p->v[p->n].name);
        free(p->v[p->n].path);
    }
    free(p->v);
}

void kd_config_destroy(kd_config *cfg) {
    if (!cfg)
        return;
    kd_cfg_env_destroy(cfg->env);
    free(cfg->file);
    free(cfg->brokers);
    free(cfg->group_id);
    free_props(&cfg->consumer);
    free_props(&cfg->producer);
    for (size_t i = 0; i < cfg->nroutes; i++) {
        free(cfg->routes[i].name);
        free(cfg->routes[i].from);
        free(cfg->routes[i].to);
        free(cfg->routes[i].key_header);
        free(cfg->routes[i].dead_letter_topic);
        for (size_t j = 0; cfg->routes[i].key_parts && j < cfg->routes[i].nkey_parts;
             j++) {
            free(cfg->routes[i].key_parts[j].name);
            free(cfg->routes[i].key_parts[j].pointer);
        }
        free(cfg->routes[i].key_parts);
        for (size_t j = 0; j < cfg->routes[i].nfingerprint_headers; j++)
            free(cfg->routes[i].fingerprint_headers[j]);
        free(cfg->routes[i].fingerprint_headers);
        for (size_t j = 0; j < cfg->routes[i].nfingerprint_json; j++)
            free(cfg->routes[i].fingerprint_json[j]);
        free(cfg->routes[i].fingerprint_json);
    }
    free(cfg->routes);
    free(cfg->ns);
    free(cfg->signing_key);
    free(cfg->previous_signing_key);
    free(cfg->store_path);
    free(cfg->http_listen);
    free(cfg->http_probes_listen);
    free(cfg->admin_listen);
    free(cfg->admin_token);
    free(cfg->transactional_id);
    free(cfg);
}
