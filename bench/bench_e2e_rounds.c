/*
 * kdedup benchmarks - end to end: the measurement. The rounds of one store
 * size, each child run, checked and reported, and their medians (file map:
 * bench_e2e_int.h).
 */
#include "bench/bench_e2e_int.h"

#include <inttypes.h>
#include <spawn.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

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

        bench_e2e_pin_to(o, 1);
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
bool bench_e2e_run_level(const char *self, mock *m, const options *o, long unique,
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
    if (!bench_e2e_prefill_store(tmpl, stored))
        return false;
    for (int round = 0; round < o->rounds; round++) {
        result a = {0}, b = {0};
        char *rm[] = {"rm", "-rf", store, NULL}, *cp[] = {"cp", "-r", tmpl, store, NULL};

        /* A: a fresh copy of the pre-filled store, so every round starts
         * with `stored` keys. */
        snprintf(group, sizeof(group), "bench-A-%d-%d", level, round);
        snprintf(topic, sizeof(topic), "bench.out.A.%d.%d", level, round);
        if (!run_cmd(rm) || !run_cmd(cp) ||
            !bench_e2e_mock_topic(m, topic, o->partitions) ||
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
        if (!bench_e2e_mock_topic(m, topic, o->partitions) ||
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
