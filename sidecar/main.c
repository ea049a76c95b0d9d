/*
 * kdedup - the sidecar binary.
 *
 *   kdedup --config FILE         run the sidecar
 *   kdedup --check-config FILE   validate FILE: exit 0 if valid, 2 if not
 *   kdedup demo [...]            a self-contained demonstration (demo.c)
 *   kdedup mock [...]            a mock Kafka cluster for tests (mockd.c)
 *   kdedup lookup --config FILE  the store's state of keys on stdin (lookup.c)
 */
#include "config/config.h"
#include "dedup/store.h"
#include "sidecar/harden.h"
#include "sidecar/http.h"
#include "sidecar/kafka.h"
#include "sidecar/log.h"
#include "sidecar/metrics.h"
#include "sidecar/pipeline.h"
#include "sidecar/tools.h"
#include "sidecar/version.h"
#include "store_rocks/store_rocks.h"

#include <librdkafka/rdkafka.h>

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MOCK_PARTITIONS 4

static kd_pipeline *running;

static void on_signal(int sig) {
    (void)sig;
    if (running)
        kd_pipeline_stop(running);
}

static void usage(FILE *out) {
    fprintf(
        out,
        "usage: kdedup --config FILE        run the dedup sidecar\n"
        "       kdedup --check-config FILE  validate a config (exit 0 valid, 2 invalid)\n"
        "       kdedup demo [--messages N] [--duplicates PCT]\n"
        "                                   run a demonstration on an embedded cluster\n"
        "       kdedup mock [--brokers N] [--topic NAME:PARTITIONS]...\n"
        "                                   a mock Kafka cluster for tests\n"
        "       kdedup lookup --config FILE [--route FROM] < keys\n"
        "                                   the store's state and receipt of each key\n"
        "       kdedup --version | --help\n");
}

/* Loads and fully checks a config, librdkafka properties included. Errors
 * never show a value that came from the environment or a file. */
static kd_config *load(const char *path) {
    char err[1024], shown[1024];
    kd_config *cfg = kd_config_load(path, err, sizeof(err));

    if (cfg && !kd_kafka_check(cfg, err, sizeof(err))) {
        fprintf(stderr, "%s\n", kd_config_redact(cfg, err, shown, sizeof(shown)));
        kd_config_destroy(cfg);
        return NULL;
    }
    if (!cfg)
        fprintf(stderr, "%s\n", err);
    return cfg;
}

/* For "mock:N": starts the cluster with the routes' topics. */
static kd_mock *start_mock(const kd_config *cfg) {
    char err[512];
    kd_mock *m = kd_mock_start(cfg->brokers[5] - '0', err, sizeof(err));

    if (!m) {
        KD_ERROR("mock cluster: %s", err);
        return NULL;
    }
    for (size_t i = 0; i < cfg->nroutes; i++) {
        kd_mock_topic(m, cfg->routes[i].from, MOCK_PARTITIONS);
        kd_mock_topic(m, cfg->routes[i].to, MOCK_PARTITIONS);
        if (cfg->routes[i].dead_letter_topic)
            kd_mock_topic(m, cfg->routes[i].dead_letter_topic, MOCK_PARTITIONS);
    }
    KD_INFO("embedded mock cluster at %s", kd_mock_bootstraps(m));
    return m;
}

/* The HTTP endpoints, over the running pipeline. */
static char *http_metrics(void *arg, size_t *len) {
    return kd_metrics_render(kd_pipeline_metrics(arg), len);
}

static const kd_config *http_cfg;

static bool http_healthy(void *arg, char *reason, size_t size) {
    return kd_pipeline_healthy(arg, http_cfg->health_timeout_ms, reason, size);
}

static bool http_ready(void *arg, char *reason, size_t size) {
    return kd_pipeline_ready(arg, reason, size);
}

static int run(const char *path) {
    kd_config *cfg = load(path);
    kd_mock *mock = NULL;
    kd_store *store = NULL;
    kd_pipeline *p = NULL;
    kd_http *http = NULL;
    const char *brokers;
    char err[1024];
    int rc = 1;

    if (!cfg)
        return 2;
    kd_log_set_level(cfg->log_level);
    kd_log_set_redact(cfg);
    if (!strncmp(cfg->brokers, "mock:", 5) && !(mock = start_mock(cfg)))
        goto done;
    brokers = mock ? kd_mock_bootstraps(mock) : cfg->brokers;
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
    if (!(store = kd_pipeline_open_store(cfg, err, sizeof(err)))) {
        KD_ERROR("%s", err);
        goto done;
    }
    if (!(p = kd_pipeline_new(cfg, store, brokers, err, sizeof(err)))) {
        KD_ERROR("%s: %s", cfg->file, err);
        goto done;
    }
    http_cfg = cfg;
    kd_http_handlers h = {
        .arg = p, .metrics = http_metrics, .healthy = http_healthy, .ready = http_ready};
    if (!(http = kd_http_start(cfg->http_listen, &h, err, sizeof(err)))) {
        KD_ERROR("%s: %s", cfg->file, err);
        goto done;
    }
    KD_INFO("http on %s (port %d): /metrics /healthz /readyz", cfg->http_listen,
            kd_http_port(http));
    running = p;
    struct sigaction sa = {.sa_handler = on_signal};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    KD_INFO("kdedup %s started (librdkafka %s)", KD_VERSION, rd_kafka_version_str());
    rc = kd_pipeline_run(p) == 0 ? 0 : 1;
    KD_INFO("kdedup stopped");
    if (kd_pipeline_consumer_left(p)) {
        /* librdkafka's threads of the consumer left running may still log
         * (the logger reads cfg): close what holds data, then leave. */
        running = NULL;
        kd_http_stop(http);
        kd_pipeline_destroy(p);
        kd_store_destroy(store);
        kd_mock_stop(mock);
        fflush(stdout);
        fflush(stderr);
        _exit(rc);
    }
done:
    running = NULL;
    kd_http_stop(http);
    kd_pipeline_destroy(p);
    kd_store_destroy(store);
    kd_mock_stop(mock);
    kd_log_set_redact(NULL); /* no other thread is left to log */
    kd_config_destroy(cfg);
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
    if (argc == 3 && !strcmp(argv[1], "--check-config")) {
        kd_config *cfg = load(argv[2]);

        if (!cfg)
            return 2;
        printf("%s: valid (%zu route%s)\n", argv[2], cfg->nroutes,
               cfg->nroutes == 1 ? "" : "s");
        kd_config_destroy(cfg);
        return 0;
    }
    if (argc == 3 && !strcmp(argv[1], "--config"))
        return run(argv[2]);
    usage(stderr);
    return 2;
}
