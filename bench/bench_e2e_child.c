/*
 * kdedup benchmarks - end to end: a child, one run of A or B, reporting
 * one line on stdout (file map: bench_e2e_int.h).
 */
#include "bench/bench_e2e_int.h"
#include "bench/passthrough.h"
#include "config/config.h"
#include "sidecar/clock.h"
#include "sidecar/log.h"
#include "sidecar/metrics.h"
#include "sidecar/pipeline.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#define RUN_TIMEOUT_S 900

static void sleep_ms(int ms) {
    nanosleep(&(struct timespec){ms / 1000, (long)(ms % 1000) * 1000000}, NULL);
}

static double cpu_seconds(void) {
    struct rusage ru;

    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
           (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

/* This process image's peak RSS (VmHWM). Not getrusage's ru_maxrss: that
 * keeps the high-water mark of the image before exec, here the driver's
 * (which pre-filled a store). */
static long peak_rss_kib(void) {
    FILE *fp = fopen("/proc/self/status", "r");
    char line[256];
    long kib = -1;

    while (fp && fgets(line, sizeof(line), fp))
        if (sscanf(line, "VmHWM: %ld kB", &kib) == 1)
            break;
    if (fp)
        fclose(fp);
    return kib;
}

static void *pipeline_thread(void *p) {
    kd_pipeline_run(p);
    return NULL;
}

static void report(const result *r) {
    printf("result %" PRIu64 " %" PRIu64 " %.6f %.6f %.9f %.9f %ld\n", r->consumed,
           r->forwarded, r->secs, r->cpu_s, r->p50_s, r->p99_s, r->rss_kib);
    fflush(stdout);
}

static int child_kdedup(const kd_config *cfg, uint64_t expect) {
    char err[1024];
    kd_store *store =
        kd_pipeline_open_store(cfg, KD_PIPELINE_STORE_OWNER, err, sizeof(err));
    kd_pipeline *p =
        store ? kd_pipeline_new(cfg, store, cfg->brokers, err, sizeof(err)) : NULL;
    uint64_t t0 = 0, deadline = kd_mono_us() + RUN_TIMEOUT_S * 1000000ull;
    double cpu0 = 0;
    kd_pipeline_stats st;
    result r = {0};
    pthread_t tid;

    if (!p) {
        fprintf(stderr, "bench_e2e: kdedup: %s\n", err);
        kd_store_destroy(store);
        return 1;
    }
    pthread_create(&tid, NULL, pipeline_thread, p);
    for (;;) {
        kd_pipeline_stats_get(p, &st);
        if (!t0 && st.consumed) {
            t0 = kd_mono_us();
            cpu0 = cpu_seconds();
        }
        if ((st.consumed >= expect && !st.inflight) || kd_mono_us() > deadline)
            break;
        sleep_ms(1);
    }
    r.secs = (double)(kd_mono_us() - t0) / 1e6;
    r.cpu_s = cpu_seconds() - cpu0;
    r.rss_kib = peak_rss_kib();
    r.consumed = st.consumed;
    r.forwarded = st.forwarded;
    r.p50_s =
        kd_histogram_quantile(kd_metrics_forward_latency(kd_pipeline_metrics(p)), 0.5);
    r.p99_s =
        kd_histogram_quantile(kd_metrics_forward_latency(kd_pipeline_metrics(p)), 0.99);
    {
        kd_histogram *w = kd_metrics_store_write(kd_pipeline_metrics(p));

        fprintf(
            stderr,
            "bench_e2e: kdedup: %" PRIu64 " store writes, %.3f s in them, p50 %.3f ms, "
            "p99 %.3f ms\n",
            atomic_load(&w->count), (double)atomic_load(&w->sum_us) / 1e6,
            kd_histogram_quantile(w, 0.5) * 1e3, kd_histogram_quantile(w, 0.99) * 1e3);
    }
    kd_pipeline_stop(p);
    pthread_join(tid, NULL);
    kd_pipeline_destroy(p);
    kd_store_destroy(store);
    report(&r);
    return 0;
}

/* The passthrough: the default delivery mode's client settings whatever
 * kdedup's mode (it has no transactions: a transactional.id would leave its
 * producer refusing every message). */
static int child_passthrough(const kd_config *kdedup_cfg, uint64_t expect) {
    kd_config plain = *kdedup_cfg; /* shallow: read only, never destroyed */
    const kd_config *cfg = &plain;
    char err[1024];
    kd_passthrough *pt;
    uint64_t deadline = kd_mono_us() + RUN_TIMEOUT_S * 1000000ull;
    double cpu0 = 0;
    kd_passthrough_stats st = {0};
    result r = {0};

    plain.delivery = KD_DELIVERY_IDEMPOTENT;
    if (!(pt = kd_passthrough_new(cfg, cfg->brokers, err, sizeof(err)))) {
        fprintf(stderr, "bench_e2e: passthrough: %s\n", err);
        return 1;
    }
    while (st.delivered + st.failed < expect && kd_mono_us() < deadline) {
        bool started = st.consumed > 0;

        kd_passthrough_turn(pt);
        kd_passthrough_stats_get(pt, &st);
        if (!started && st.consumed)
            cpu0 = cpu_seconds();
    }
    r.secs = (double)(st.last_ack_us - st.first_us) / 1e6;
    r.cpu_s = cpu_seconds() - cpu0;
    r.rss_kib = peak_rss_kib();
    r.consumed = st.consumed;
    r.forwarded = st.delivered;
    r.p50_s = kd_histogram_quantile(kd_passthrough_latency(pt), 0.5);
    r.p99_s = kd_histogram_quantile(kd_passthrough_latency(pt), 0.99);
    kd_passthrough_destroy(pt);
    report(&r);
    return 0;
}

int bench_e2e_child_main(const char *which, const char *config, uint64_t expect) {
    char err[1024];
    kd_config *cfg = kd_config_load(config, err, sizeof(err));
    int rc;

    if (!cfg) {
        fprintf(stderr, "bench_e2e: %s\n", err);
        return 1;
    }
    kd_log_set_level(cfg->log_level);
    rc = !strcmp(which, "A") ? child_kdedup(cfg, expect) : child_passthrough(cfg, expect);
    kd_config_destroy(cfg);
    return rc;
}
