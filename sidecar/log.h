/*
 * kdedup - logging: one JSON object per line on stderr, e.g.
 *   {"ts":"2026-11-27T20:55:39.123Z","level":"info","msg":"assigned","topic":"orders"}
 *
 * The level is checked before anything is formatted. Secrets the configs in
 * force took from the environment or a file are masked (kd_log_set_redact(),
 * kd_log_add_redact()). The fields named in KD_LOG_NUMERIC_FIELDS are
 * written as JSON numbers.
 *
 * An event that can repeat at the rate of messages or requests (a key
 * conflict, a denied admin request) is logged through a kd_log_limit: at
 * most KD_LOG_LIMIT_BURST lines a KD_LOG_LIMIT_WINDOW_MS window, and the
 * next line written says how many were left out before it ("left_out").
 */
#ifndef KD_LOG_H
#define KD_LOG_H

#include "config/config.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

/* Field names whose values (decimal integers) are written as JSON numbers;
 * a value that is not one is written as a string. */
#define KD_LOG_NUMERIC_FIELDS                                                            \
    { "partition", "offset", "left_out", NULL }

/* Lines of one kind of repeated event, at most, per window. */
#define KD_LOG_LIMIT_BURST 10
#define KD_LOG_LIMIT_WINDOW_MS 60000

/* The budget of one kind of repeated event. Thread-safe; initialise with
 * KD_LOG_LIMIT_INIT (a static, or a member of a struct that lives as long). */
typedef struct kd_log_limit {
    pthread_mutex_t lock;
    uint64_t window_start_ms; /* monotonic */
    uint32_t in_window;       /* lines written in this window */
    uint64_t left_out;        /* events not written since the last line */
} kd_log_limit;

#define KD_LOG_LIMIT_INIT                                                                \
    { PTHREAD_MUTEX_INITIALIZER, 0, 0, 0 }

/* Sets the lowest level written (default KD_LOG_INFO). Thread-safe. */
void kd_log_set_level(kd_log_level level);

/* At most this many configs mask log lines together (kd_log_add_redact). */
#define KD_LOG_REDACT_MAX 64

/* Masks, in every line written from now on, each secret cfg took from the
 * environment or a file (kd_config_redact()), and no other config's. NULL
 * stops masking; call it before the configs masking are destroyed, when no
 * other thread logs. cfg is borrowed. */
void kd_log_set_redact(const kd_config *cfg);

/* Masks cfg's secrets too from now on, besides those of the configs already
 * masking (a reload's config, whose rotated ${file:} values are new). Call
 * it from one thread at a time. false when KD_LOG_REDACT_MAX configs mask
 * already (cfg is then not added). cfg is borrowed, as above. */
bool kd_log_add_redact(const kd_config *cfg);

/* True when level is written. */
bool kd_log_enabled(kd_log_level level);

/* Writes one line: msg is printf-formatted from fmt; fields is NULL or a
 * NULL-terminated list of name, value string pairs, added as JSON strings.
 * Use the KD_LOG macro, which checks the level first. */
void kd_log_write(kd_log_level level, const char *const *fields, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* One event at now_ms (monotonic): true when its line is to be written,
 * with *left_out set to the events left out since the previous line (0 when
 * none; give it as the field "left_out"); false when it is left out
 * (counted). */
bool kd_log_limit_pass(kd_log_limit *l, uint64_t now_ms, uint64_t *left_out);

#define KD_LOG(level, fields, ...)                                                       \
    do {                                                                                 \
        if (kd_log_enabled(level))                                                       \
            kd_log_write(level, fields, __VA_ARGS__);                                    \
    } while (0)

#define KD_DEBUG(...) KD_LOG(KD_LOG_DEBUG, NULL, __VA_ARGS__)
#define KD_INFO(...) KD_LOG(KD_LOG_INFO, NULL, __VA_ARGS__)
#define KD_WARN(...) KD_LOG(KD_LOG_WARN, NULL, __VA_ARGS__)
#define KD_ERROR(...) KD_LOG(KD_LOG_ERROR, NULL, __VA_ARGS__)

#endif /* KD_LOG_H */
