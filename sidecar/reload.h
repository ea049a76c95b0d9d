/*
 * kdedup - reloading the config file while running (SIGHUP, POST /v1/reload).
 *
 * A reload reads the file again and checks it fully, as --check-config
 * does. An invalid file changes nothing (the message names the file, the
 * JSON path and the value, as at start). Then the new config is compared
 * with the one in force (kd_config_diff_of): routes, log.level and
 * pipeline.batch_max may change; a change to anything else is refused,
 * naming the keys, and nothing changes. An accepted config is handed to
 * what runs (the apply function: the pipeline takes it between two turns
 * of its loop) and becomes the one in force.
 *
 * Configs that were in force are kept until kd_reload_destroy(): modules
 * that borrowed one (metrics, recovery, the logger) never see it freed.
 * The log masks the secrets of every config kept (kd_log_add_redact), so a
 * reload that puts rotated ${file:} values in force masks them from then
 * on, and the values they replaced stay masked.
 * A config equal to one kept (the same file hash, nothing to change
 * between them) is put back in force, not kept again, so toggling a
 * setting keeps two; at most KD_RELOAD_KEPT_MAX distinct configs are kept
 * (6-14 KB each for the example configs), and a reload to one more is
 * refused until a restart.
 */
#ifndef KD_RELOAD_H
#define KD_RELOAD_H

#include "config/config.h"

#include <stddef.h>

typedef enum kd_reload_result {
    KD_RELOAD_OK,      /* in force (or nothing to change) */
    KD_RELOAD_INVALID, /* the file does not load or validate */
    KD_RELOAD_REFUSED  /* it changes what only a restart may change */
} kd_reload_result;

/* "ok", "invalid", "refused" (the metric's label). */
const char *kd_reload_result_name(kd_reload_result res);

/* Hex digits of a config's hash (the first 8 bytes of the SHA-256 of its
 * file), plus the NUL. */
#define KD_RELOAD_HASH_SIZE 17

/* The most distinct configs one process puts in force (see above). */
#define KD_RELOAD_KEPT_MAX 64

/* Reads the file at path and checks it fully: JSON, every rule, every
 * librdkafka property; flags as kd_config_load_opts() takes them
 * (KD_CONFIG_OFFLINE). Returns the config (the caller owns it) and its
 * hash, or NULL with every error found in errstr, one a line (values from
 * the environment or files never shown). */
kd_config *kd_reload_load(const char *path, unsigned flags,
                          char hash[KD_RELOAD_HASH_SIZE], char *errstr,
                          size_t errstr_size);

typedef struct kd_reload kd_reload;

/* Hands an accepted config (borrowed, lives until kd_reload_destroy) to
 * what runs; called with the reload's lock held: it must not block. */
typedef void (*kd_reload_apply_fn)(void *arg, const kd_config *cfg,
                                   const kd_config_diff *diff);

/* Starts with cfg in force (taken over) loaded from path, with its hash,
 * and the log masking its secrets (kd_log_set_redact). apply may be set
 * later (kd_reload_set_apply). NULL when out of memory (cfg is then
 * destroyed). */
kd_reload *kd_reload_new(const char *path, kd_config *cfg, const char *hash);

/* Sets the function that takes accepted configs. Thread-safe. */
void kd_reload_set_apply(kd_reload *r, kd_reload_apply_fn apply, void *arg);

/* Stops the log's masking, then destroys it and every config it kept: call
 * it when no other thread logs. NULL-safe. */
void kd_reload_destroy(kd_reload *r);

/* The config in force (lives until kd_reload_destroy). Thread-safe. */
const kd_config *kd_reload_current(kd_reload *r);

/* Reloads the file; `why` ("SIGHUP", "POST /v1/reload") goes in the log.
 * what gets one line: what changed, or why nothing did. Logged and
 * counted. Thread-safe; reloads run one at a time. */
kd_reload_result kd_reload_run(kd_reload *r, const char *why, char *what, size_t size);

/* Puts cfg (one that was in force) back in force: what runs could not
 * start over the newer one. Thread-safe. */
void kd_reload_revert(kd_reload *r, const kd_config *cfg);

/* How many configs are kept (the kdedup_config_kept gauge). Thread-safe. */
size_t kd_reload_kept(kd_reload *r);

/* kdedup_config_reloads_total{result}, kdedup_config_info{hash} and
 * kdedup_config_kept in the
 * Prometheus text format: malloc()ed (the caller frees), *len its length;
 * NULL when out of memory. */
char *kd_reload_metrics(kd_reload *r, size_t *len);

#endif /* KD_RELOAD_H */
