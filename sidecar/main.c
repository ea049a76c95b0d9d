/*
 * kdedup - the sidecar binary.
 *
 *   kdedup --config FILE         run the sidecar
 *   kdedup --check-config [--offline] FILE   validate FILE: exit 0 if valid, 2 if not
 *   kdedup demo [...]            a self-contained demonstration (tools/demo.c)
 *   kdedup mock [...]            a mock Kafka cluster for tests (tools/mockd.c)
 *   kdedup lookup --config FILE  the store's state of keys on stdin (tools/lookup.c)
 */
#include "config/config.h"
#include "dedup/store.h"
#include "sidecar/admin.h"
#include "sidecar/harden.h"
#include "sidecar/http.h"
#include "sidecar/kafka.h"
#include "sidecar/log.h"
#include "sidecar/metrics.h"
#include "sidecar/pipeline.h"
#include "sidecar/reload.h"
#include "tools/tools.h"
#include "sidecar/version.h"
#include "store_rocks/store_rocks.h"

#include <librdkafka/rdkafka.h>

#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define MOCK_PARTITIONS 4

static kd_pipeline *running;
static _Atomic int hup;      /* SIGHUP: reload the config file */
static _Atomic int stop_all; /* SIGTERM, SIGINT: also for a pipeline starting */

static void on_signal(int sig) {
    if (sig == SIGHUP) {
        atomic_store(&hup, 1);
        return;
    }
    atomic_store(&stop_all, 1);
    if (running)
        kd_pipeline_stop(running);
}

static void usage(FILE *out) {
    fprintf(
        out,
        "usage: kdedup --config FILE        run the dedup sidecar\n"
        "       kdedup --check-config [--offline] FILE\n"
        "                                   validate a config (exit 0 valid, 2 invalid;\n"
        "                                   every error; --offline: a ${VAR} not set "
        "here\n"
        "                                   is no error, its value is not checked)\n"
        "       kdedup demo [--messages N] [--duplicates PCT] [--conflicts N]\n"
        "                                   run a demonstration on an embedded cluster\n"
        "       kdedup mock [--brokers N] [--topic NAME:PARTITIONS]... | --help\n"
        "                                   a mock Kafka cluster for tests\n"
        "       kdedup lookup --config FILE [--route FROM] < keys\n"
        "                                   the store's state and receipt of each key\n"
        "       kdedup --version | --help\n");
}

/* Loads and fully checks a config, librdkafka properties included; flags
 * as kd_config_load_opts() takes them. Prints every error found; errors
 * never show a value that came from the environment or a file. */
static kd_config *load(const char *path, unsigned flags, char hash[KD_RELOAD_HASH_SIZE]) {
    char err[16384];
    kd_config *cfg = kd_reload_load(path, flags, hash, err, sizeof(err));

    if (!cfg)
        fprintf(stderr, "%s\n", err);
    return cfg;
}

/* --check-config [--offline] FILE: exit 0 valid, 2 invalid. */
static int check_config(const char *path, bool offline) {
    char hash[KD_RELOAD_HASH_SIZE];
    kd_config *cfg = load(path, offline ? KD_CONFIG_OFFLINE : 0, hash);
    const char *unresolved;

    if (!cfg)
        return 2;
    printf("%s: valid (%zu route%s)", path, cfg->nroutes, cfg->nroutes == 1 ? "" : "s");
    if ((unresolved = kd_config_unresolved(cfg, "")))
        printf("; offline: values with a ${...} not set here were not checked, e.g. %s",
               unresolved);
    printf("\n");
    kd_config_destroy(cfg);
    return 0;
}

/* For "mock:N": starts the cluster. */
static kd_mock *start_mock(const kd_config *cfg) {
    char err[512];
    kd_mock *m = kd_mock_start(cfg->brokers[5] - '0', err, sizeof(err));

    if (!m) {
        KD_ERROR("mock cluster: %s", err);
        return NULL;
    }
    KD_INFO("embedded mock cluster at %s", kd_mock_bootstraps(m));
    return m;
}

/* On the embedded mock cluster: the routes' topics (those that exist stay). */
static void mock_topics(kd_mock *m, const kd_config *cfg) {
    for (size_t i = 0; m && i < cfg->nroutes; i++) {
        kd_mock_topic(m, cfg->routes[i].from, MOCK_PARTITIONS);
        kd_mock_topic(m, cfg->routes[i].to, MOCK_PARTITIONS);
        if (cfg->routes[i].dead_letter_topic)
            kd_mock_topic(m, cfg->routes[i].dead_letter_topic, MOCK_PARTITIONS);
    }
}

/*
 * The running process: its config (reloads), the pipeline in force (a new
 * one after a reload changed the routes), and what the HTTP threads see.
 */
#define OWNERS_MAX 256

typedef struct proc {
    kd_reload *reloads;
    pthread_rwlock_t lock; /* guards live: the HTTP threads read it */
    kd_pipeline *live;
    pthread_mutex_t owners_lock;
    /* Boot ids of this process's pipelines, the newest OWNERS_MAX (a ring:
     * a reload that changes the routes starts one more). */
    uint64_t owners[OWNERS_MAX];
    size_t nowners;
    kd_mock *mock; /* "mock:N": the embedded cluster, or NULL */
    _Atomic int done;
} proc;

static char *http_metrics(void *arg, size_t *len) {
    proc *pr = arg;
    size_t mlen = 0, rlen = 0;
    char *m = NULL, *r = kd_reload_metrics(pr->reloads, &rlen), *all;

    pthread_rwlock_rdlock(&pr->lock);
    if (pr->live)
        m = kd_metrics_render(kd_pipeline_metrics(pr->live), &mlen);
    pthread_rwlock_unlock(&pr->lock);
    if (!r || !(all = realloc(m, mlen + rlen + 1))) {
        free(m);
        free(r);
        return NULL;
    }
    memcpy(all + mlen, r, rlen + 1);
    free(r);
    *len = mlen + rlen;
    return all;
}

static bool http_healthy(void *arg, char *reason, size_t size) {
    proc *pr = arg;
    /* Read before taking pr->lock: apply() takes the two the other way. */
    const kd_config *cfg = kd_reload_current(pr->reloads);
    uint64_t stale_ms = cfg->health_timeout_ms, write_ms = cfg->health_write_timeout_ms;
    bool ok = true;

    pthread_rwlock_rdlock(&pr->lock);
    if (pr->live)
        ok = kd_pipeline_healthy(pr->live, stale_ms, write_ms, reason, size);
    pthread_rwlock_unlock(&pr->lock);
    return ok; /* between two pipelines: the process works */
}

static bool http_ready(void *arg, char *reason, size_t size) {
    proc *pr = arg;
    bool ok = false;

    pthread_rwlock_rdlock(&pr->lock);
    if (pr->live)
        ok = kd_pipeline_ready(pr->live, reason, size);
    else
        snprintf(reason, size, "restarting the pipeline for a reloaded config");
    pthread_rwlock_unlock(&pr->lock);
    return ok;
}

/* kd_reload's apply: the live pipeline takes cfg between two turns; a
 * pipeline starting meanwhile starts over the config in force. */
static void apply(void *arg, const kd_config *cfg, const kd_config_diff *diff) {
    proc *pr = arg;

    pthread_rwlock_rdlock(&pr->lock);
    if (pr->live)
        kd_pipeline_offer(pr->live, cfg, diff->routes);
    pthread_rwlock_unlock(&pr->lock);
}

/* The admin API's test: is owner one of this process's pipelines? */
static bool ours(void *arg, uint64_t owner) {
    proc *pr = arg;
    bool found = false;

    pthread_mutex_lock(&pr->owners_lock);
    for (size_t i = 0; i < pr->nowners && i < OWNERS_MAX && !found; i++)
        found = pr->owners[i] == owner;
    pthread_mutex_unlock(&pr->owners_lock);
    return found;
}

/* The admin API's view of the live pipeline: its owner id, or 0. */
static uint64_t live_owner(void *arg) {
    proc *pr = arg;
    uint64_t owner = 0;

    pthread_rwlock_rdlock(&pr->lock);
    if (pr->live)
        owner = kd_pipeline_boot_id(pr->live);
    pthread_rwlock_unlock(&pr->lock);
    return owner;
}

/* The admin API's forget record, written through the config's brokers. */
static bool record_forget(void *arg, const kd_config *cfg, const kd_forget_record *f,
                          int64_t *offset, char *errstr, size_t errstr_size) {
    proc *pr = arg;

    return kd_forgets_write(cfg, pr->mock ? kd_mock_bootstraps(pr->mock) : cfg->brokers,
                            f, offset, errstr, errstr_size);
}

/* Reloads on SIGHUP (the handler only sets a flag). */
static void *reloader(void *arg) {
    proc *pr = arg;
    struct timespec tick = {0, 100 * 1000000L};
    char what[1024];

    while (!atomic_load(&pr->done)) {
        if (atomic_exchange(&hup, 0))
            kd_reload_run(pr->reloads, "SIGHUP", what, sizeof(what));
        nanosleep(&tick, NULL);
    }
    return NULL;
}

/* A pipeline over cfg, made live (in place of prev, when a reload restarts
 * it: prev's counters are carried over first, so none goes back); NULL
 * (logged) when it cannot start. */
static kd_pipeline *pipeline_start(proc *pr, const kd_config *cfg, kd_store *store,
                                   kd_mock *mock, kd_pipeline *prev) {
    char err[1024];
    kd_pipeline *p;

    mock_topics(mock, cfg);
    p = kd_pipeline_new(cfg, store, mock ? kd_mock_bootstraps(mock) : cfg->brokers, err,
                        sizeof(err));
    if (!p) {
        KD_ERROR("%s: %s", cfg->file, err);
        return NULL;
    }
    if (prev)
        kd_metrics_carry(kd_pipeline_metrics(p), kd_pipeline_metrics(prev));
    pthread_mutex_lock(&pr->owners_lock);
    pr->owners[pr->nowners++ % OWNERS_MAX] = kd_pipeline_boot_id(p);
    pthread_mutex_unlock(&pr->owners_lock);
    pthread_rwlock_wrlock(&pr->lock);
    pr->live = p;
    pthread_rwlock_unlock(&pr->lock);
    running = p;
    if (atomic_load(&stop_all)) /* a SIGTERM while it started */
        kd_pipeline_stop(p);
    return p;
}

/* Takes the live pipeline down (after its run returned). */
static void pipeline_end(proc *pr, kd_pipeline *p) {
    if (running == p)
        running = NULL;
    pthread_rwlock_wrlock(&pr->lock);
    if (pr->live == p)
        pr->live = NULL;
    pthread_rwlock_unlock(&pr->lock);
    kd_pipeline_destroy(p);
}

/* Runs pipelines until one stops for good: after a reload that changed the
 * routes, a new one over the config in force (cfg: the one *p runs with),
 * or the previous config again if that one cannot start. Returns the exit
 * code; *p is the last pipeline (NULL if none could start). */
static int run_pipelines(proc *pr, kd_store *store, kd_mock *mock, kd_pipeline **p,
                         const kd_config *cfg) {
    for (;;) {
        int rc = kd_pipeline_run(*p) == 0 ? 0 : 1;
        kd_pipeline *old = *p;
        const kd_config *next;

        if (!kd_pipeline_restart_config(*p) || kd_pipeline_consumer_left(*p) ||
            atomic_load(&stop_all))
            return rc;
        next = kd_reload_current(pr->reloads);
        running = NULL;
        /* The old one stays live (its counters shown) until the new one,
         * which carries them on, replaces it. */
        if ((*p = pipeline_start(pr, next, store, mock, old))) {
            const kd_config *cur = kd_reload_current(pr->reloads);

            pipeline_end(pr, old);
            if (cur != next) { /* reloaded again while it started: offered now */
                kd_config_diff d;

                kd_config_diff_of(next, cur, &d);
                kd_pipeline_offer(*p, cur, d.routes);
            }
            cfg = next;
            continue;
        }
        KD_ERROR("reload: the pipeline cannot start over the reloaded config; the "
                 "previous one is back in force");
        kd_reload_revert(pr->reloads, cfg);
        *p = pipeline_start(pr, cfg, store, mock, old);
        pipeline_end(pr, old);
        if (!*p)
            return 1;
    }
}

/* The HTTP listeners: /metrics and the probes on http.listen, and the
 * probes alone on http.probes_listen when it is set. false (logged) when
 * one cannot listen; what started is in *http and *probes. */
static bool http_start(proc *pr, const kd_config *cfg, kd_http **http, kd_http **probes) {
    kd_http_handlers h = {
        .arg = pr, .metrics = http_metrics, .healthy = http_healthy, .ready = http_ready};
    char err[1024];

    if (!(*http = kd_http_start(cfg->http_listen, &h, err, sizeof(err)))) {
        KD_ERROR("%s: %s", cfg->file, err);
        return false;
    }
    KD_INFO("http on %s (port %d): /metrics /healthz /readyz", cfg->http_listen,
            kd_http_port(*http));
    if (!cfg->http_probes_listen)
        return true;
    h.name = "http.probes_listen";
    h.metrics = NULL; /* slots and a thread of their own: no scraper takes them */
    if (!(*probes = kd_http_start(cfg->http_probes_listen, &h, err, sizeof(err)))) {
        KD_ERROR("%s: %s", cfg->file, err);
        return false;
    }
    KD_INFO("probes on %s (port %d): /healthz /readyz", cfg->http_probes_listen,
            kd_http_port(*probes));
    return true;
}

/* The admin API, when admin.token is set. */
static kd_admin *admin_start(proc *pr, const kd_config *cfg, kd_store *store,
                             bool *failed) {
    kd_admin_env env = {.store = store,
                        .reload = pr->reloads,
                        .ours = ours,
                        .live_owner = live_owner,
                        .record = record_forget,
                        .arg = pr};
    char err[1024];
    kd_admin *a;

    *failed = false;
    if (!cfg->admin_token) {
        KD_INFO("admin API off: admin.token is not set");
        return NULL;
    }
    if (!(a = kd_admin_start(cfg->admin_listen, cfg->admin_token, &env, err,
                             sizeof(err)))) {
        KD_ERROR("%s: %s", cfg->file, err);
        *failed = true;
        return NULL;
    }
    KD_INFO("admin API on %s (port %d): /v1/routes /v1/keys /v1/reload",
            cfg->admin_listen, kd_admin_port(a));
    return a;
}

static int run(const char *path) {
    char hash[KD_RELOAD_HASH_SIZE], err[1024];
    kd_config *loaded = load(path, 0, hash);
    proc pr = {.lock = PTHREAD_RWLOCK_INITIALIZER,
               .owners_lock = PTHREAD_MUTEX_INITIALIZER};
    const kd_config *cfg;
    kd_mock *mock = NULL;
    kd_store *store = NULL;
    kd_pipeline *p = NULL;
    kd_http *http = NULL, *probes = NULL;
    kd_admin *admin = NULL;
    bool reloading = false, failed;
    pthread_t reload_thread;
    int rc = 1;

    if (!loaded)
        return 2;
    /* First: a SIGHUP while starting is a reload to do, never the end. */
    struct sigaction sa = {.sa_handler = on_signal};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
    if (!(pr.reloads = kd_reload_new(path, loaded, hash))) {
        fprintf(stderr, "kdedup: out of memory\n");
        return 1;
    }
    cfg = kd_reload_current(pr.reloads);
    kd_log_set_level(cfg->log_level); /* masking: set by kd_reload_new() */
    if (!strncmp(cfg->brokers, "mock:", 5) && !(mock = start_mock(cfg)))
        goto done;
    pr.mock = mock;
    switch (kd_harden_store_dir(cfg->store_path, err, sizeof(err))) {
    case KD_HARDEN_FAIL:
        KD_ERROR("%s: %s", cfg->file, err);
        goto done;
    case KD_HARDEN_WARN:
        KD_WARN("%s: %s", cfg->file, err);
        break;
    case KD_HARDEN_OK:
        break;
    }
    if (!(store =
              kd_pipeline_open_store(cfg, KD_PIPELINE_STORE_OWNER, err, sizeof(err)))) {
        KD_ERROR("%s", err);
        goto done;
    }
    if (!(p = pipeline_start(&pr, cfg, store, mock, NULL)))
        goto done;
    if (!http_start(&pr, cfg, &http, &probes))
        goto done;
    admin = admin_start(&pr, cfg, store, &failed);
    if (failed)
        goto done;
    kd_reload_set_apply(pr.reloads, apply, &pr);
    if (pthread_create(&reload_thread, NULL, reloader, &pr) != 0) {
        KD_ERROR("cannot start a thread");
        goto done;
    }
    reloading = true;
    if (atomic_load(&stop_all))
        kd_pipeline_stop(p);
    KD_INFO("kdedup %s started (librdkafka %s)", KD_VERSION, rd_kafka_version_str());
    rc = run_pipelines(&pr, store, mock, &p, cfg);
    KD_INFO("kdedup stopped");
    atomic_store(&pr.done, 1);
    if (p && kd_pipeline_consumer_left(p)) {
        /* librdkafka's threads of the consumer left running may still log
         * (the logger reads cfg): close what holds data, then leave. */
        running = NULL;
        pthread_join(reload_thread, NULL);
        kd_admin_stop(admin);
        kd_http_stop(http);
        kd_http_stop(probes);
        pipeline_end(&pr, p);
        kd_store_destroy(store);
        kd_mock_stop(mock);
        fflush(stdout);
        fflush(stderr);
        _exit(rc);
    }
done:
    running = NULL;
    atomic_store(&pr.done, 1);
    if (reloading)
        pthread_join(reload_thread, NULL);
    kd_admin_stop(admin); /* before the store its requests read */
    kd_http_stop(http);
    kd_http_stop(probes);
    if (p)
        pipeline_end(&pr, p);
    kd_store_destroy(store);
    kd_mock_stop(mock);
    kd_reload_destroy(pr.reloads); /* no other thread is left to log */
    return rc;
}

int main(int argc, char **argv) {
    char err[256];

    /* Before anything reads a secret or opens a file. */
    if (kd_harden_process(err, sizeof(err)) != KD_HARDEN_OK) {
        fprintf(stderr, "kdedup: %s\n", err);
        return 1;
    }
    if (argc >= 2 && !strcmp(argv[1], "demo"))
        return kd_demo_main(argc - 1, argv + 1);
    if (argc >= 2 && !strcmp(argv[1], "mock"))
        return kd_mockd_main(argc - 1, argv + 1);
    if (argc >= 2 && !strcmp(argv[1], "lookup"))
        return kd_lookup_main(argc - 1, argv + 1);
    if (argc == 2 && !strcmp(argv[1], "--version")) {
        printf("kdedup %s (librdkafka %s)\n", KD_VERSION, rd_kafka_version_str());
        return 0;
    }
    if (argc == 2 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) {
        usage(stdout);
        return 0;
    }
    if (argc == 3 && !strcmp(argv[1], "--check-config"))
        return check_config(argv[2], false);
    if (argc == 4 && !strcmp(argv[1], "--check-config") && !strcmp(argv[2], "--offline"))
        return check_config(argv[3], true);
    if (argc == 3 && !strcmp(argv[1], "--config"))
        return run(argv[2]);
    usage(stderr);
    return 2;
}
