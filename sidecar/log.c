/*
 * kdedup - JSON-lines logging (see log.h).
 */
#include "dedup/hex.h"
#include "sidecar/log.h"

#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#define LINE_MAX_BYTES 8192

static _Atomic int min_level = KD_LOG_INFO;
/* The configs whose secrets are masked: the first nredact. A writer sets a
 * slot before it counts it, so a line sees only slots already set. */
static const kd_config *_Atomic redact_cfgs[KD_LOG_REDACT_MAX];
static _Atomic size_t nredact;

void kd_log_set_redact(const kd_config *cfg) {
    atomic_store(&nredact, 0);
    if (cfg)
        kd_log_add_redact(cfg);
}

bool kd_log_add_redact(const kd_config *cfg) {
    size_t n = atomic_load(&nredact);

    if (n >= KD_LOG_REDACT_MAX)
        return false;
    atomic_store(&redact_cfgs[n], cfg);
    atomic_store(&nredact, n + 1);
    return true;
}

void kd_log_set_level(kd_log_level level) {
    atomic_store(&min_level, (int)level);
}

bool kd_log_enabled(kd_log_level level) {
    return (int)level >= atomic_load(&min_level);
}

/* Appends s to buf[*len..] as the inside of a JSON string, masked first. */
static void put_escaped(char *buf, size_t *len, size_t cap, const char *text) {
    const kd_config *cfgs[KD_LOG_REDACT_MAX];
    size_t n = atomic_load(&nredact);
    char masked[LINE_MAX_BYTES / 2];
    const char *s = text;

    for (size_t i = 0; i < n; i++)
        cfgs[i] = atomic_load(&redact_cfgs[i]);
    if (n)
        s = kd_config_redact_any(cfgs, n, text, masked, sizeof(masked));

    for (; *s && *len + 7 < cap; s++) {
        unsigned char ch = (unsigned char)*s;

        if (ch == '"' || ch == '\\') {
            buf[(*len)++] = '\\';
            buf[(*len)++] = (char)ch;
        } else if (ch == '\n') {
            buf[(*len)++] = '\\';
            buf[(*len)++] = 'n';
        } else if (ch < 0x20 || ch == 0x7f) {
            memcpy(buf + *len, "\\u00", 4);
            kd_hex_put(&ch, 1, buf + *len + 4);
            *len += 6;
        } else {
            buf[(*len)++] = (char)ch;
        }
    }
}

static void put_raw(char *buf, size_t *len, size_t cap, const char *s) {
    size_t n = strlen(s);

    if (*len + n + 2 >= cap)
        n = cap - *len - 2;
    memcpy(buf + *len, s, n);
    *len += n;
}

bool kd_log_limit_pass(kd_log_limit *l, uint64_t now_ms, uint64_t *left_out) {
    bool pass;

    pthread_mutex_lock(&l->lock);
    if (!l->in_window || now_ms - l->window_start_ms >= KD_LOG_LIMIT_WINDOW_MS) {
        l->window_start_ms = now_ms;
        l->in_window = 0;
    }
    pass = l->in_window < KD_LOG_LIMIT_BURST;
    if (pass) {
        l->in_window++;
        *left_out = l->left_out;
        l->left_out = 0;
    } else {
        l->left_out++;
    }
    pthread_mutex_unlock(&l->lock);
    return pass;
}

/* True when the field name's value is written as a number and is one: a
 * decimal integer without leading zeros, that masking leaves as it is. */
static bool numeric(const char *name, const char *value) {
    static const char *const names[] = KD_LOG_NUMERIC_FIELDS;
    const kd_config *cfgs[KD_LOG_REDACT_MAX];
    size_t n = atomic_load(&nredact);
    const char *d = value + (*value == '-');
    char masked[32];
    size_t i = 0;

    while (names[i] && strcmp(names[i], name))
        i++;
    if (!names[i] || !*d || (d[0] == '0' && d[1]) || strlen(d) > 19)
        return false;
    for (; *d; d++)
        if (*d < '0' || *d > '9')
            return false;
    for (size_t c = 0; c < n; c++)
        cfgs[c] = atomic_load(&redact_cfgs[c]);
    return !n ||
           !strcmp(kd_config_redact_any(cfgs, n, value, masked, sizeof(masked)), value);
}

void kd_log_write(kd_log_level level, const char *const *fields, const char *fmt, ...) {
    char line[LINE_MAX_BYTES], msg[LINE_MAX_BYTES / 2], ts[40];
    struct timespec now;
    struct tm tm;
    size_t len = 0;
    va_list ap;

    clock_gettime(CLOCK_REALTIME, &now);
    gmtime_r(&now.tv_sec, &tm);
    strftime(ts, 24, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(ts + strlen(ts), sizeof(ts) - strlen(ts), ".%03ldZ", now.tv_nsec / 1000000);
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);

    put_raw(line, &len, sizeof(line), "{\"ts\":\"");
    put_raw(line, &len, sizeof(line), ts);
    put_raw(line, &len, sizeof(line), "\",\"level\":\"");
    put_raw(line, &len, sizeof(line), kd_config_log_level_name(level));
    put_raw(line, &len, sizeof(line), "\",\"msg\":\"");
    put_escaped(line, &len, sizeof(line), msg);
    put_raw(line, &len, sizeof(line), "\"");
    for (size_t i = 0; fields && fields[i] && fields[i + 1]; i += 2) {
        bool number = numeric(fields[i], fields[i + 1]);

        put_raw(line, &len, sizeof(line), ",\"");
        put_escaped(line, &len, sizeof(line), fields[i]);
        if (number) {
            put_raw(line, &len, sizeof(line), "\":");
            put_raw(line, &len, sizeof(line), fields[i + 1]);
        } else {
            put_raw(line, &len, sizeof(line), "\":\"");
            put_escaped(line, &len, sizeof(line), fields[i + 1]);
            put_raw(line, &len, sizeof(line), "\"");
        }
    }
    put_raw(line, &len, sizeof(line), "}");
    line[len++] = '\n';
    fwrite(line, 1, len, stderr); /* one write per line: lines never interleave */
}
