/*
 * kdedup - configuration (config.h; its parts: config_int.h), the ground
 * floor: errors. Every error of a config is found in one pass and listed as
 * "file: path: message", values shown shortened and secrets never shown.
 */
#include "config/config_int.h"

#include <cjson/cJSON.h>

#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#define SHOW_MAX 60 /* characters of a bad value shown in an error */
/* Errors listed at most; the rest are counted. */
#define MAX_ERRORS 20

/* Adds one error, a line of errstr ("file: path: message"); every error of
 * a config is found in one pass. Returns false. */
bool kd_cfg_fail(ctx *c, const char *path, const char *fmt, ...) {
    size_t at = c->errors ? strlen(c->errstr) : 0;
    char line[1024];
    int n = snprintf(line, sizeof(line), "%s: %s%s", c->file, path, *path ? ": " : "");
    va_list ap;

    if (n >= 0 && (size_t)n < sizeof(line)) {
        va_start(ap, fmt);
        vsnprintf(line + n, sizeof(line) - (size_t)n, fmt, ap);
        va_end(ap);
    }
    if (c->errors >= MAX_ERRORS || at + 1 + strlen(line) + 40 >= c->errstr_size) {
        c->dropped += c->errors > 0; /* the first one is always there, cut short */
        if (c->errors == 0) {
            snprintf(c->errstr, c->errstr_size, "%s", line);
            c->errors++;
        }
        return false;
    }
    snprintf(c->errstr + at, c->errstr_size - at, "%s%s", at ? "\n" : "", line);
    c->errors++;
    return false;
}

/* Closes the list of errors: how many more there were. */
void kd_cfg_fail_done(ctx *c) {
    size_t at = strlen(c->errstr);

    if (c->dropped)
        snprintf(c->errstr + at, c->errstr_size - at, "\n%s: (and %d more error%s)",
                 c->file, c->dropped, c->dropped == 1 ? "" : "s");
}

bool kd_config_is_secret(const char *name) {
    static const char *const words[] = {"password", "secret",  "jaas",        "token",
                                        "sasl.",    "ssl.",    "credential",  "apikey",
                                        "api_key",  "private", "signing_key", NULL};
    char lower[128];
    size_t i;

    for (i = 0; name[i] && i < sizeof(lower) - 1; i++)
        lower[i] = (char)tolower((unsigned char)name[i]);
    lower[i] = '\0';
    for (i = 0; words[i]; i++)
        if (strstr(lower, words[i]))
            return true;
    return false;
}

/* The value as it stands in the file, shortened; secrets are not shown. */
static const char *show(const cJSON *v, const char *path, char *buf, size_t size) {
    char *text;

    if (kd_config_is_secret(path))
        return "(a secret, not shown)";
    if (!v)
        return "nothing";
    text = cJSON_PrintUnformatted(v);
    if (!text)
        return "(unprintable)";
    if (strlen(text) > SHOW_MAX)
        snprintf(buf, size, "%.*s...", SHOW_MAX, text);
    else
        snprintf(buf, size, "%s", text);
    cJSON_free(text);
    return buf;
}

bool kd_cfg_fail_value(ctx *c, const char *path, const cJSON *v, const char *expected) {
    char buf[SHOW_MAX + 8];

    return kd_cfg_fail(c, path, "expected %s, got %s", expected,
                       show(v, path, buf, sizeof(buf)));
}

/* JSON paths: parent.key, parent[i], parent["name"]; cut short (with "...")
 * past MAX_PATH. */
void kd_cfg_path_fmt(char *out, const char *fmt, ...) {
    va_list ap;
    int n;

    va_start(ap, fmt);
    n = vsnprintf(out, MAX_PATH, fmt, ap);
    va_end(ap);
    if (n >= MAX_PATH)
        memcpy(out + MAX_PATH - 4, "...", 4);
}

void kd_cfg_path_key(char *out, const char *parent, const char *key) {
    kd_cfg_path_fmt(out, "%s%s%s", parent, *parent ? "." : "", key);
}
