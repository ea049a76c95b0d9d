/*
 * kdedup - reloading the config file while running (see reload.h).
 */
#include "dedup/hex.h"
#include "dedup/sha256.h"
#include "sidecar/reload.h"
#include "sidecar/kafka.h"
#include "sidecar/keysrc.h"
#include "sidecar/log.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define METRICS_MAX 1024

/* Every config kept masks the log (kd_log_add_redact never refuses one). */
_Static_assert(KD_RELOAD_KEPT_MAX <= KD_LOG_REDACT_MAX,
               "the log masks every config kept");

typedef struct kept {
    kd_config *cfg;
    char hash[KD_RELOAD_HASH_SIZE];
} kept;

struct kd_reload {
    char *path;
    pthread_mutex_t run_lock; /* one reload at a time (held across file I/O) */
    pthread_mutex_t lock;     /* the fields below; never held across I/O */
    kept *kept;               /* every config that was in force */
    size_t nkept;
    size_t current; /* index into kept */
    kd_reload_apply_fn apply;
    void *arg;
    _Atomic uint64_t count[3]; /* by kd_reload_result */
};

const char *kd_reload_result_name(kd_reload_result res) {
    static const char *const names[] = {"ok", "invalid", "refused"};

    return (unsigned)res < 3 ? names[res] : "?";
}

kd_config *kd_reload_load(const char *path, unsigned flags,
                          char hash[KD_RELOAD_HASH_SIZE], char *errstr,
                          size_t errstr_size) {
    unsigned char digest[KD_SHA256_LEN];
    char *buf, *shown;
    size_t len;
    kd_config *cfg =
        kd_config_load_bytes_opts(path, flags, &buf, &len, errstr, errstr_size);

    if (cfg && !kd_kafka_check(cfg, errstr, errstr_size)) {
        if ((shown = malloc(errstr_size))) {
            snprintf(errstr, errstr_size, "%s",
                     kd_config_redact(cfg, errstr, shown, errstr_size));
            free(shown);
        } else {
            snprintf(errstr, errstr_size, "%s: out of memory", path);
        }
        kd_config_destroy(cfg);
        cfg = NULL;
    }
    if (cfg) {
        kd_sha256(buf, len, digest);
        kd_hex(digest, (KD_RELOAD_HASH_SIZE - 1) / 2, hash);
    }
    free(buf);
    return cfg;
}

kd_reload *kd_reload_new(const char *path, kd_config *cfg, const char *hash) {
    kd_reload *r = calloc(1, sizeof(*r));

    if (!r || !(r->path = strdup(path)) || !(r->kept = calloc(1, sizeof(*r->kept)))) {
        if (r)
            free(r->path);
        free(r);
        kd_config_destroy(cfg);
        return NULL;
    }
    pthread_mutex_init(&r->run_lock, NULL);
    pthread_mutex_init(&r->lock, NULL);
    r->kept[0].cfg = cfg;
    snprintf(r->kept[0].hash, sizeof(r->kept[0].hash), "%s", hash);
    r->nkept = 1;
    kd_log_set_redact(cfg);
    return r;
}

void kd_reload_set_apply(kd_reload *r, kd_reload_apply_fn apply, void *arg) {
    pthread_mutex_lock(&r->lock);
    r->apply = apply;
    r->arg = arg;
    pthread_mutex_unlock(&r->lock);
}

void kd_reload_destroy(kd_reload *r) {
    if (!r)
        return;
    kd_log_set_redact(NULL); /* before the configs it reads go */
    for (size_t i = 0; i < r->nkept; i++)
        kd_config_destroy(r->kept[i].cfg);
    free(r->kept);
    free(r->path);
    pthread_mutex_destroy(&r->lock);
    pthread_mutex_destroy(&r->run_lock);
    free(r);
}

const kd_config *kd_reload_current(kd_reload *r) {
    const kd_config *cfg;

    pthread_mutex_lock(&r->lock);
    cfg = r->kept[r->current].cfg;
    pthread_mutex_unlock(&r->lock);
    return cfg;
}

/* Counts and logs the outcome; returns res. */
static kd_reload_result outcome(kd_reload *r, kd_reload_result res, const char *why,
                                const char *what) {
    const char *fields[] = {"trigger", why, "result", kd_reload_result_name(res), NULL};

    atomic_fetch_add(&r->count[res], 1);
    /* Written whatever log.level says (a reload may have just raised it):
     * an operator's action is always on record. */
    if (res == KD_RELOAD_OK)
        kd_log_write(KD_LOG_INFO, fields, "reload: %s", what);
    else
        kd_log_write(KD_LOG_ERROR, fields, "reload: %s; the config in force stays", what);
    return res;
}

/* The index of a kept config equal to cfg (same hash, nothing to change
 * between them), or SIZE_MAX. Called with the lock held. */
static size_t kept_equal(const kd_reload *r, const kd_config *cfg, const char *hash) {
    kd_config_diff d;

    for (size_t i = 0; i < r->nkept; i++) {
        if (strcmp(r->kept[i].hash, hash) != 0)
            continue;
        kd_config_diff_of(r->kept[i].cfg, cfg, &d);
        if (!d.refused && !d.routes && !d.log_level && !d.batch_max)
            return i;
    }
    return SIZE_MAX;
}

typedef enum publish_result { PUBLISHED, PUBLISH_NO_MEMORY, PUBLISH_FULL } publish_result;

/* Makes cfg (loaded, accepted; taken over) the config in force and hands
 * it over: a kept equal one instead of cfg when there is one. */
static publish_result publish(kd_reload *r, kd_config *cfg, const char *hash,
                              const kd_config_diff *diff) {
    size_t same;
    kept *grown;

    pthread_mutex_lock(&r->lock);
    if ((same = kept_equal(r, cfg, hash)) != SIZE_MAX) {
        kd_config_destroy(cfg);
        cfg = r->kept[same].cfg;
        r->current = same;
    } else if (r->nkept >= KD_RELOAD_KEPT_MAX) {
        pthread_mutex_unlock(&r->lock);
        kd_config_destroy(cfg);
        return PUBLISH_FULL;
    } else if (!(grown = realloc(r->kept, (r->nkept + 1) * sizeof(*grown)))) {
        pthread_mutex_unlock(&r->lock);
        kd_config_destroy(cfg);
        return PUBLISH_NO_MEMORY;
    } else {
        r->kept = grown;
        /* Before anything runs with it: its ${file:} values may be new. */
        kd_log_add_redact(cfg);
        grown[r->nkept].cfg = cfg;
        snprintf(grown[r->nkept].hash, sizeof(grown[r->nkept].hash), "%s", hash);
        r->current = r->nkept++;
    }
    if (diff->log_level) /* first: what the pipeline logs on taking cfg obeys it */
        kd_log_set_level(cfg->log_level);
    if (r->apply)
        r->apply(r->arg, cfg, diff);
    pthread_mutex_unlock(&r->lock);
    return PUBLISHED;
}

kd_reload_result kd_reload_run(kd_reload *r, const char *why, char *what, size_t size) {
    char hash[KD_RELOAD_HASH_SIZE];
    kd_reload_result res;
    kd_config_diff diff;
    kd_config *cfg;

    pthread_mutex_lock(&r->run_lock);
    if (!(cfg = kd_reload_load(r->path, 0, hash, what, size))) {
        res = outcome(r, KD_RELOAD_INVALID, why, what);
        goto done;
    }
    kd_config_diff_of(kd_reload_current(r), cfg, &diff);
    snprintf(what, size, "%s", diff.what);
    if (diff.refused) {
        kd_config_destroy(cfg);
        res = outcome(r, KD_RELOAD_REFUSED, why, what);
    } else if (!diff.routes && !diff.log_level && !diff.batch_max) {
        kd_config_destroy(cfg); /* the same: the one in force stays */
        res = outcome(r, KD_RELOAD_OK, why, what);
    } else {
        switch (publish(r, cfg, hash, &diff)) {
        case PUBLISHED:
            res = outcome(r, KD_RELOAD_OK, why, what);
            break;
        case PUBLISH_FULL:
            snprintf(what, size,
                     "%d different configs were put in force since kdedup started, "
                     "the most one process keeps: restart it to change more",
                     KD_RELOAD_KEPT_MAX);
            res = outcome(r, KD_RELOAD_REFUSED, why, what);
            break;
        default:
            snprintf(what, size, "out of memory");
            res = outcome(r, KD_RELOAD_INVALID, why, what);
        }
    }
done:
    pthread_mutex_unlock(&r->run_lock);
    return res;
}

void kd_reload_revert(kd_reload *r, const kd_config *cfg) {
    pthread_mutex_lock(&r->lock);
    for (size_t i = 0; i < r->nkept; i++)
        if (r->kept[i].cfg == cfg)
            r->current = i;
    pthread_mutex_unlock(&r->lock);
}

size_t kd_reload_kept(kd_reload *r) {
    size_t n;

    pthread_mutex_lock(&r->lock);
    n = r->nkept;
    pthread_mutex_unlock(&r->lock);
    return n;
}

char *kd_reload_metrics(kd_reload *r, size_t *len) {
    char hash[KD_RELOAD_HASH_SIZE], *out = malloc(METRICS_MAX);
    size_t nkept;
    int n;

    if (!out)
        return NULL;
    pthread_mutex_lock(&r->lock);
    memcpy(hash, r->kept[r->current].hash, sizeof(hash));
    nkept = r->nkept;
    pthread_mutex_unlock(&r->lock);
    n = snprintf(out, METRICS_MAX,
                 "# HELP kdedup_config_reloads_total Config reloads (SIGHUP, POST "
                 "/v1/reload), by result.\n"
                 "# TYPE kdedup_config_reloads_total counter\n"
                 "kdedup_config_reloads_total{result=\"ok\"} %llu\n"
                 "kdedup_config_reloads_total{result=\"invalid\"} %llu\n"
                 "kdedup_config_reloads_total{result=\"refused\"} %llu\n"
                 "# HELP kdedup_config_info The config in force: a hash of its file.\n"
                 "# TYPE kdedup_config_info gauge\n"
                 "kdedup_config_info{hash=\"%s\"} 1\n"
                 "# HELP kdedup_config_kept Configs kept since start (at most %d).\n"
                 "# TYPE kdedup_config_kept gauge\n"
                 "kdedup_config_kept %zu\n",
                 (unsigned long long)atomic_load(&r->count[KD_RELOAD_OK]),
                 (unsigned long long)atomic_load(&r->count[KD_RELOAD_INVALID]),
                 (unsigned long long)atomic_load(&r->count[KD_RELOAD_REFUSED]), hash,
                 KD_RELOAD_KEPT_MAX, nkept);
    if (n < 0 || n >= METRICS_MAX) {
        free(out);
        return NULL;
    }
    *len = (size_t)n;
    return out;
}
