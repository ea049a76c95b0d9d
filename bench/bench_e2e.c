/*
 * kdedup benchmarks - end to end: kdedup against a plain passthrough
 * (docs/architecture.md, BENCHMARKS.md).
 *
 *   bench_e2e [--messages N] [--size BYTES] [--duplicates PCT] [--partitions P]
 *             [--rounds R] [--stored N[,N...]] [--batch N] [--dir DIR]
 *             [--fingerprint on|off] [--pin] [--bootstrap HOST:PORT]
 *             [--wrap "CMD ARGS"] [--stats off] [--linger A_MS,B_MS]
 *             [--signing-key KEY] [--delivery idempotent|transactional]
 *
 * --wrap runs each child under a command (BENCH_SIDE=A or B in its
 * environment, so a profiler can name its output after it: valgrind's
 * --callgrind-out-file=cg.%q{BENCH_SIDE}); --stats off turns librdkafka's
 * statistics off in both; --linger sets each side's producer linger.ms;
 * --signing-key sets kdedup's dedup.signing_key. bench/instructions.py
 * uses them to count instructions per message under callgrind. --delivery
 * sets kdedup's pipeline.delivery (transactional: each turn's records and
 * offsets in one Kafka transaction; Apache Kafka only, --bootstrap).
 *
 * --pin puts the mock cluster on CPU 0 and each run (A or B, with all its
 * threads) on CPU 1: the cost of the pipeline itself, as on a pod whose
 * brokers run elsewhere (on a shared 2-core machine the broker otherwise
 * takes its share of the same cores).
 *
 * --bootstrap runs against that Kafka cluster (Apache Kafka: `make
 * bench-e2e-kafka` starts a fresh single node) instead of the mock, and
 * creates its topics there with the admin API (--pin then pins the runs
 * only).
 *
 * A mock cluster runs in its own process (`kdedup mock`); the input topic is
 * filled once: N messages of BYTES bytes with an Idempotency-Key header, PCT%
 * of them repeating an earlier key (on the same partition, keyed by it, with
 * the same value: ordinary duplicates, not key conflicts). --fingerprint off
 * runs kdedup with "fingerprint": false on its route (default on, as the
 * config's default), so two runs measure what fingerprints cost.
 * For each store size in --stored, a RocksDB store is pre-filled with that
 * many completed keys, then R rounds alternate A and B, each in a fresh
 * consumer group writing to a fresh downstream topic:
 *   A  the kdedup pipeline, RocksDB store (a fresh copy of the pre-filled
 *      one), synced claims;
 *   B  bench/passthrough.c, the same librdkafka configuration, no dedup.
 * Each run is a child process of its own (this binary, re-executed with
 * --child), so its peak RSS and CPU time are its own. It times from the
 * first message consumed to the last one settled, and checks what it did: A
 * must forward exactly the distinct keys, B every message.
 *
 * Exit 0 only if every run completed and checked out.
 */
#define _GNU_SOURCE /* sched_setaffinity, CPU_SET */
#include "bench/admin.h"
#include "bench/passthrough.h"
#include "config/config.h"
#include "dedup/dedup.h"
#include "sidecar/clock.h"
#include "sidecar/log.h"
#include "sidecar/metrics.h"
#include "sidecar/pipeline.h"
#include "store_rocks/store_rocks.h"

#include <librdkafka/rdkafka.h>

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <spawn.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define IN_TOPIC "bench.in"
#define KEY_HEADER "Idempotency-Key"
#define MAX_LEVELS 8
#define MAX_ROUNDS 32
#define RUN_TIMEOUT_S 900
#define PREFILL_BATCH 10000

extern char **environ;

typedef struct options {
    long messages;
    int size;
    int dup_pct;
    int partitions;
    int rounds;
    long stored[MAX_LEVELS];
    int nlevels;
    int batch;
    bool fingerprint;
    bool pin;
    const char *bootstrap;   /* a cluster of its own (--bootstrap), or NULL: the mock */
    const char *wrap;        /* a command the children run under, or NULL */
    bool stats_off;          /* statistics.interval.ms 0 */
    int linger_a, linger_b;  /* producer linger.ms per side; -1: the default */
    const char *signing_key; /* kdedup's dedup.signing_key, or NULL */
    const char *delivery;    /* kdedup's pipeline.delivery */
    char dir[512];
} options;

/* --pin: puts the calling process (a forked child, before its exec) on cpu. */
static void pin_to(const options *o, int cpu) {
    cpu_set_t set;

    if (!o->pin)
        return;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    if (sched_setaffinity(0, sizeof(set), &set) != 0)
        perror("bench_e2e: sched_setaffinity");
}

/* One child's report. */
typedef struct result {
    uint64_t consumed, forwarded;
    double secs, cpu_s, p50_s, p99_s;
    long rss_kib;
} result;

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

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;

    return (x > y) - (x < y);
}

static double median(double *v, int n) {
    qsort(v, (size_t)n, sizeof(*v), cmp_double);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

/* Runs argv (NULL-terminated) and waits; true if it exited 0. */
static bool run_cmd(char *const argv[]) {
    pid_t pid;
    int status;

    if (posix_spawnp(&pid, argv[0], NULL, NULL, argv, environ) != 0)
        return false;
    return waitpid(pid, &status, 0) == pid && WIFEXITED(status) &&
           WEXITSTATUS(status) == 0;
}

/*
 * Children: one run of A or B, reporting one line on stdout.
 */

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

static int child_passthrough(const kd_config *cfg, uint64_t expect) {
    char err[1024];
    kd_passthrough *pt = kd_passthrough_new(cfg, cfg->brokers, err, sizeof(err));
    uint64_t deadline = kd_mono_us() + RUN_TIMEOUT_S * 1000000ull;
    double cpu0 = 0;
    kd_passthrough_stats st = {0};
    result r = {0};

    if (!pt) {
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

static int child_main(const char *which, const char *config, uint64_t expect) {
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

/*
 * The driver.
 */

/* The mock cluster process, driven by commands on its stdin; or, with
 * --bootstrap, the cluster there (pid 0, no pipes). */
typedef struct mock {
    pid_t pid;
    FILE *in, *out;
    char bootstrap[256];
} mock;

static bool mock_start(mock *m, const options *o) {
    const char *bin = getenv("KDEDUP") ? getenv("KDEDUP") : "build/kdedup";
    char topic[128];
    int in[2], out[2];

    if (o->bootstrap) {
        snprintf(m->bootstrap, sizeof(m->bootstrap), "%s", o->bootstrap);
        return bench_admin_topic(m->bootstrap, IN_TOPIC, o->partitions);
    }
    snprintf(topic, sizeof(topic), IN_TOPIC ":%d", o->partitions);
    if (pipe(in) || pipe(out))
        return false;
    if ((m->pid = fork()) == 0) {
        pin_to(o, 0);
        dup2(in[0], 0);
        dup2(out[1], 1);
        close(in[1]);
        close(out[0]);
        execl(bin, bin, "mock", "--topic", topic, (char *)NULL);
        _exit(127);
    }
    close(in[0]);
    close(out[1]);
    m->in = fdopen(in[1], "w");
    m->out = fdopen(out[0], "r");
    if (m->pid < 0 || !m->in || !m->out ||
        !fgets(m->bootstrap, sizeof(m->bootstrap), m->out))
        return false;
    m->bootstrap[strcspn(m->bootstrap, "\n")] = '\0';
    return true;
}

static bool mock_topic(mock *m, const char *name, int partitions) {
    char reply[64];

    if (!m->pid)
        return bench_admin_topic(m->bootstrap, name, partitions);
    fprintf(m->in, "topic %s %d\n", name, partitions);
    fflush(m->in);
    return fgets(reply, sizeof(reply), m->out) && !strncmp(reply, "ok", 2);
}

static void mock_stop(mock *m) {
    if (m->in)
        fclose(m->in); /* end of input: it exits */
    if (m->out)
        fclose(m->out);
    if (m->pid > 0)
        waitpid(m->pid, NULL, 0);
}

/* Fills the input topic; returns the number of distinct keys, or -1. */
static long fill_input(const mock *m, const options *o) {
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    char err[256], key[32], *value = malloc((size_t)o->size);
    unsigned seed = 7;
    long unique = 0;
    rd_kafka_t *rk;

    rd_kafka_conf_set(conf, "bootstrap.servers", m->bootstrap, NULL, 0);
    rd_kafka_conf_set(conf, "linger.ms", "20", NULL, 0);
    rd_kafka_conf_set(conf, "enable.idempotence", "true", NULL, 0);
    if (!value || !(rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof(err)))) {
        fprintf(stderr, "bench_e2e: producer: %s\n", value ? err : "out of memory");
        free(value);
        return -1;
    }
    for (long i = 0; i < o->messages; i++) {
        long id = unique > 0 && (long)(rand_r(&seed) % 100) < o->dup_pct
                      ? (long)(rand_r(&seed) % (unsigned)unique)
                      : unique++;
        int klen = snprintf(key, sizeof(key), "key-%010ld", id);
        rd_kafka_resp_err_t e;

        memset(value, 'a' + (int)(id % 26),
               (size_t)o->size); /* a copy's value is its key's */
        while ((e = rd_kafka_producev(rk, RD_KAFKA_V_TOPIC(IN_TOPIC),
                                      RD_KAFKA_V_KEY(key, (size_t)klen),
                                      RD_KAFKA_V_VALUE(value, (size_t)o->size),
                                      RD_KAFKA_V_HEADER(KEY_HEADER, key, klen),
                                      RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                                      RD_KAFKA_V_END)) == RD_KAFKA_RESP_ERR__QUEUE_FULL)
            rd_kafka_poll(rk, 10);
        if (e) {
            fprintf(stderr, "bench_e2e: produce: %s\n", rd_kafka_err2str(e));
            unique = -1;
            break;
        }
    }
    if (rd_kafka_flush(rk, 120000) != RD_KAFKA_RESP_ERR_NO_ERROR)
        unique = -1;
    rd_kafka_destroy(rk);
    free(value);
    return unique;
}

/* A store at path holding n completed keys of another namespace. */
static bool prefill_store(const char *path, long n) {
    char err[512];
    kd_store *s = kd_rocks_open(path, false, err, sizeof(err));
    kd_dedup *d = s ? kd_dedup_new(s, "bench-prefill") : NULL;
    kd_claim *claims = calloc(PREFILL_BATCH, sizeof(*claims));
    kd_completion *done = calloc(PREFILL_BATCH, sizeof(*done));
    char(*keys)[32] = calloc(PREFILL_BATCH, sizeof(*keys));
    bool ok = d && claims && done && keys;

    if (!s)
        fprintf(stderr, "bench_e2e: %s\n", err);
    for (long i = 0; ok && i < n; i += PREFILL_BATCH) {
        size_t b = (size_t)(n - i < PREFILL_BATCH ? n - i : PREFILL_BATCH);

        for (size_t j = 0; j < b; j++) {
            int len = snprintf(keys[j], sizeof(keys[j]), "prefill-%012ld", i + (long)j);

            claims[j] = (kd_claim){.key = keys[j], .key_len = (size_t)len};
            done[j] = (kd_completion){.key = keys[j],
                                      .key_len = (size_t)len,
                                      .receipt = "v1 to=bench.out/0@0 ts=0 from=x/0@0",
                                      .receipt_len = 34};
        }
        ok = kd_dedup_claim_batch(d, claims, b, (uint64_t)time(NULL) * 1000) == KD_OK &&
             kd_dedup_complete_batch(d, done, b) == KD_OK;
        for (size_t j = 0; j < b; j++)
            kd_decision_clear(&claims[j].decision);
    }
    ok = ok && kd_rocks_compact(s) == KD_OK;
    kd_dedup_destroy(d);
    kd_store_destroy(s);
    free(claims);
    free(done);
    free(keys);
    return ok;
}

/* Runs one child; fills r. */
static bool run_child(const options *o, const char *self, const char *which,
                      const char *config, uint64_t expect, result *r) {
    char expect_s[32], line[512];
    int out[2], status;
    FILE *fp;
    pid_t pid;
    bool got = false;

    snprintf(expect_s, sizeof(expect_s), "%" PRIu64, expect);
    if (pipe(out))
        return false;
    if ((pid = fork()) == 0) {
        char *argv[64], wrap[1024];
        int argc = 0;

        pin_to(o, 1);
        dup2(out[1], 1);
        close(out[0]);
        setenv("BENCH_SIDE", which, 1);
        snprintf(wrap, sizeof(wrap), "%s", o->wrap ? o->wrap : "");
        for (char *save = NULL, *t = strtok_r(wrap, " ", &save); t && argc < 56;
             t = strtok_r(NULL, " ", &save))
            argv[argc++] = t;
        argv[argc++] = (char *)self;
        argv[argc++] = "--child";
        argv[argc++] = (char *)which;
        argv[argc++] = (char *)config;
        argv[argc++] = expect_s;
        argv[argc] = NULL;
        execvp(argv[0], argv);
        _exit(127);
    }
    close(out[1]);
    if (pid < 0 || !(fp = fdopen(out[0], "r")))
        return false;
    while (fgets(line, sizeof(line), fp))
        if (sscanf(line, "result %" SCNu64 " %" SCNu64 " %lf %lf %lf %lf %ld",
                   &r->consumed, &r->forwarded, &r->secs, &r->cpu_s, &r->p50_s, &r->p99_s,
                   &r->rss_kib) == 7)
            got = true;
    fclose(fp);
    return waitpid(pid, &status, 0) == pid && WIFEXITED(status) &&
           WEXITSTATUS(status) == 0 && got;
}

static bool write_config(const char *path, const mock *m, const options *o, char side,
                         const char *group, const char *out_topic, const char *store) {
    FILE *fp = fopen(path, "w");
    int linger = side == 'A' ? o->linger_a : o->linger_b;
    char producer[128] = "", consumer[64] = "", signing[300] = "";

    if (!fp)
        return false;
    if (o->stats_off && linger >= 0)
        snprintf(
            producer, sizeof(producer),
            ", \"producer\": {\"statistics.interval.ms\": \"0\", \"linger.ms\": \"%d\"}",
            linger);
    else if (o->stats_off)
        snprintf(producer, sizeof(producer),
                 ", \"producer\": {\"statistics.interval.ms\": \"0\"}");
    else if (linger >= 0)
        snprintf(producer, sizeof(producer), ", \"producer\": {\"linger.ms\": \"%d\"}",
                 linger);
    if (o->stats_off)
        snprintf(consumer, sizeof(consumer),
                 ", \"consumer\": {\"statistics.interval.ms\": \"0\"}");
    if (o->signing_key)
        snprintf(signing, sizeof(signing), ", \"signing_key\": \"%s\"", o->signing_key);
    fprintf(fp,
            "{\"kafka\": {\"brokers\": \"%s\", \"group_id\": \"%s\"%s%s},\n"
            " \"routes\": [{\"from\": \"" IN_TOPIC "\", \"to\": \"%s\","
            " \"key_header\": \"" KEY_HEADER "\", \"on_missing_key\": \"forward\","
            " \"fingerprint\": %s}],\n"
            " \"dedup\": {\"namespace\": \"bench\"%s},\n"
            " \"store\": {\"path\": \"%s\", \"sync\": true},\n"
            " \"pipeline\": {\"batch_max\": %d, \"delivery\": \"%s\"},\n"
            " \"log\": {\"level\": \"warn\"}}\n",
            m->bootstrap, group, consumer, producer, out_topic,
            o->fingerprint ? "true" : "false", signing, store, o->batch, o->delivery);
    return fclose(fp) == 0;
}

static void print_row(long stored, int round, const char *which, const options *o,
                      const result *r) {
    printf("%9ld %5d %-11s %9.0f %8.2f %8.2f %8.1f %9.2f\n", stored, round, which,
           (double)r->consumed / r->secs, r->p50_s * 1e3, r->p99_s * 1e3,
           (double)r->rss_kib / 1024, r->cpu_s * 1e6 / (double)o->messages);
    fflush(stdout);
}

/* Runs the rounds of one store size; prints per round and the medians. */
static bool run_level(const char *self, mock *m, const options *o, long unique,
                      int level) {
    long stored = o->stored[level];
    char tmpl[700], store[700], config[700], group[64], topic[64];
    double a_rate[MAX_ROUNDS], b_rate[MAX_ROUNDS], ratio[MAX_ROUNDS], a_p50[MAX_ROUNDS],
        a_p99[MAX_ROUNDS], b_p50[MAX_ROUNDS], b_p99[MAX_ROUNDS], a_rss[MAX_ROUNDS],
        b_rss[MAX_ROUNDS], a_cpu[MAX_ROUNDS], b_cpu[MAX_ROUNDS];

    snprintf(tmpl, sizeof(tmpl), "%s/prefill-%ld", o->dir, stored);
    snprintf(store, sizeof(store), "%s/store", o->dir);
    snprintf(config, sizeof(config), "%s/config.json", o->dir);
    fprintf(stderr, "bench_e2e: pre-filling a store with %ld keys\n", stored);
    if (!prefill_store(tmpl, stored))
        return false;
    for (int round = 0; round < o->rounds; round++) {
        result a = {0}, b = {0};
        char *rm[] = {"rm", "-rf", store, NULL}, *cp[] = {"cp", "-r", tmpl, store, NULL};

        /* A: a fresh copy of the pre-filled store, so every round starts
         * with `stored` keys. */
        snprintf(group, sizeof(group), "bench-A-%d-%d", level, round);
        snprintf(topic, sizeof(topic), "bench.out.A.%d.%d", level, round);
        if (!run_cmd(rm) || !run_cmd(cp) || !mock_topic(m, topic, o->partitions) ||
            !write_config(config, m, o, 'A', group, topic, store) ||
            !run_child(o, self, "A", config, (uint64_t)o->messages, &a)) {
            fprintf(stderr, "bench_e2e: kdedup run failed\n");
            return false;
        }
        print_row(stored, round + 1, "kdedup", o, &a);
        if (a.consumed != (uint64_t)o->messages || a.forwarded != (uint64_t)unique) {
            fprintf(stderr,
                    "bench_e2e: kdedup consumed %" PRIu64 " (of %ld), forwarded %" PRIu64
                    " (distinct keys: %ld)\n",
                    a.consumed, o->messages, a.forwarded, unique);
            return false;
        }
        snprintf(group, sizeof(group), "bench-B-%d-%d", level, round);
        snprintf(topic, sizeof(topic), "bench.out.B.%d.%d", level, round);
        if (!mock_topic(m, topic, o->partitions) ||
            !write_config(config, m, o, 'B', group, topic, store) ||
            !run_child(o, self, "B", config, (uint64_t)o->messages, &b)) {
            fprintf(stderr, "bench_e2e: passthrough run failed\n");
            return false;
        }
        print_row(stored, round + 1, "passthrough", o, &b);
        if (b.forwarded != (uint64_t)o->messages) {
            fprintf(stderr, "bench_e2e: passthrough delivered %" PRIu64 " of %ld\n",
                    b.forwarded, o->messages);
            return false;
        }
        a_rate[round] = (double)a.consumed / a.secs;
        b_rate[round] = (double)b.consumed / b.secs;
        ratio[round] = a_rate[round] / b_rate[round];
        a_p50[round] = a.p50_s * 1e3;
        a_p99[round] = a.p99_s * 1e3;
        b_p50[round] = b.p50_s * 1e3;
        b_p99[round] = b.p99_s * 1e3;
        a_rss[round] = (double)a.rss_kib / 1024;
        b_rss[round] = (double)b.rss_kib / 1024;
        a_cpu[round] = a.cpu_s * 1e6 / (double)o->messages;
        b_cpu[round] = b.cpu_s * 1e6 / (double)o->messages;
    }
    run_cmd((char *[]){"rm", "-rf", store, tmpl, NULL});
    double b_best = 0;

    for (int i = 0; i < o->rounds; i++) /* a noisy machine slows it, never speeds it */
        b_best = b_rate[i] > b_best ? b_rate[i] : b_best;
    printf("# median of %d rounds, %ld keys stored: kdedup %.0f msgs/s, passthrough %.0f "
           "msgs/s, ratio %.3f (to the passthrough's fastest round: %.3f); p50 %.2f vs "
           "%.2f ms, p99 %.2f vs %.2f ms (ratio %.2f); "
           "peak RSS %.1f vs %.1f MiB; CPU %.2f vs %.2f s per 10^6 messages\n",
           o->rounds, stored, median(a_rate, o->rounds), median(b_rate, o->rounds),
           median(ratio, o->rounds), median(a_rate, o->rounds) / b_best,
           median(a_p50, o->rounds), median(b_p50, o->rounds), median(a_p99, o->rounds),
           median(b_p99, o->rounds), median(a_p99, o->rounds) / median(b_p99, o->rounds),
           median(a_rss, o->rounds), median(b_rss, o->rounds), median(a_cpu, o->rounds),
           median(b_cpu, o->rounds));
    fflush(stdout);
    return true;
}

static bool parse_levels(options *o, const char *s) {
    char *copy = strdup(s), *save = NULL;

    o->nlevels = 0;
    for (char *t = strtok_r(copy, ",", &save); t && o->nlevels < MAX_LEVELS;
         t = strtok_r(NULL, ",", &save))
        o->stored[o->nlevels++] = strtol(t, NULL, 10);
    free(copy);
    return o->nlevels > 0;
}

static int usage(void) {
    fprintf(
        stderr,
        "usage: bench_e2e [--messages N] [--size BYTES] [--duplicates PCT]\n"
        "                 [--partitions P] [--rounds R] [--stored N[,N...]]\n"
        "                 [--batch N] [--dir DIR] [--fingerprint on|off] [--pin]\n"
        "                 [--bootstrap HOST:PORT] [--wrap \"CMD ARGS\"] [--stats off]\n"
        "                 [--linger A_MS,B_MS] [--signing-key KEY]\n"
        "                 [--delivery idempotent|transactional]\n");
    return 2;
}

int main(int argc, char **argv) {
    options o = {.messages = 300000,
                 .size = 100,
                 .dup_pct = 10,
                 .partitions = 32,
                 .rounds = 3,
                 .stored = {10000},
                 .nlevels = 1,
                 .batch = 1000,
                 .fingerprint = true,
                 .linger_a = -1,
                 .linger_b = -1,
                 .delivery = "idempotent"};
    mock m = {0};
    long unique;
    bool ok = true;

    if (argc == 5 && !strcmp(argv[1], "--child"))
        return child_main(argv[2], argv[3], strtoull(argv[4], NULL, 10));
    snprintf(o.dir, sizeof(o.dir), "build/bench-e2e.tmp");
    for (int i = 1; i < argc; i++) {
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;

        if (!strcmp(argv[i], "--pin")) {
            o.pin = true;
            continue;
        }
        if (!v)
            return usage();
        if (!strcmp(argv[i], "--messages"))
            o.messages = strtol(v, NULL, 10);
        else if (!strcmp(argv[i], "--size"))
            o.size = atoi(v);
        else if (!strcmp(argv[i], "--duplicates"))
            o.dup_pct = atoi(v);
        else if (!strcmp(argv[i], "--partitions"))
            o.partitions = atoi(v);
        else if (!strcmp(argv[i], "--rounds"))
            o.rounds = atoi(v);
        else if (!strcmp(argv[i], "--batch"))
            o.batch = atoi(v);
        else if (!strcmp(argv[i], "--fingerprint") &&
                 (!strcmp(v, "on") || !strcmp(v, "off")))
            o.fingerprint = !strcmp(v, "on");
        else if (!strcmp(argv[i], "--dir"))
            snprintf(o.dir, sizeof(o.dir), "%s", v);
        else if (!strcmp(argv[i], "--bootstrap"))
            o.bootstrap = v;
        else if (!strcmp(argv[i], "--wrap"))
            o.wrap = v;
        else if (!strcmp(argv[i], "--stats") && !strcmp(v, "off"))
            o.stats_off = true;
        else if (!strcmp(argv[i], "--linger")) {
            if (sscanf(v, "%d,%d", &o.linger_a, &o.linger_b) != 2)
                return usage();
        } else if (!strcmp(argv[i], "--signing-key"))
            o.signing_key = v;
        else if (!strcmp(argv[i], "--delivery") &&
                 (!strcmp(v, "idempotent") || !strcmp(v, "transactional")))
            o.delivery = v;
        else if (!strcmp(argv[i], "--stored")) {
            if (!parse_levels(&o, v))
                return usage();
        } else {
            return usage();
        }
        i++;
    }
    if (o.messages <= 0 || o.size <= 0 || o.dup_pct < 0 || o.dup_pct > 100 ||
        o.partitions <= 0 || o.rounds <= 0 || o.rounds > MAX_ROUNDS || o.batch <= 0)
        return usage();
    /* The mock keeps at most 5 MiB a partition (docs/architecture.md). */
    if (!o.bootstrap &&
        (double)o.messages * (o.size + 80) / o.partitions > 4.5 * 1024 * 1024) {
        fprintf(stderr,
                "bench_e2e: %ld messages of %d bytes overflow %d mock partitions; "
                "use more --partitions\n",
                o.messages, o.size, o.partitions);
        return 2;
    }
    if (mkdir(o.dir, 0755) && errno != EEXIST) {
        fprintf(stderr, "bench_e2e: %s: %s\n", o.dir, strerror(errno));
        return 1;
    }
    signal(SIGPIPE, SIG_IGN);
    if (!mock_start(&m, &o)) {
        fprintf(stderr, "bench_e2e: cannot start the mock cluster (or create %s)\n",
                IN_TOPIC);
        mock_stop(&m);
        return 1;
    }
    if ((unique = fill_input(&m, &o)) < 0) {
        mock_stop(&m);
        return 1;
    }
    printf("# %ld messages of %d bytes, %ld distinct keys (%d%% duplicates), %d "
           "partitions, batch_max %d, fingerprint %s, %s%s\n",
           o.messages, o.size, unique, o.dup_pct, o.partitions, o.batch,
           o.fingerprint ? "on" : "off",
           o.bootstrap ? "Apache Kafka" : "the mock cluster",
           o.pin ? (o.bootstrap ? ", each run pinned to CPU 1"
                                : ", pinned (mock on CPU 0, each run on CPU 1)")
                 : "");
    printf("%9s %5s %-11s %9s %8s %8s %8s %9s\n", "stored", "round", "pipeline", "msgs/s",
           "p50_ms", "p99_ms", "rss_MiB", "cpu_s/1M");
    for (int level = 0; ok && level < o.nlevels; level++)
        ok = run_level(argv[0], &m, &o, unique, level);
    mock_stop(&m);
    return ok ? 0 : 1;
}
