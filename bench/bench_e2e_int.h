/*
 * kdedup benchmarks - end to end: bench_e2e's private header, the state its
 * parts share (what it measures: bench_e2e.c).
 *
 * File map, from the ground floor up (a file calls only files listed before
 * it):
 *   bench_e2e_child.c    a child: one run of A (kdedup) or B (the
 *                        passthrough), timed, reporting one line on stdout
 *   bench_e2e_cluster.c  the workload: the mock cluster (or --bootstrap's),
 *                        its topics, the input filled, the pre-filled store;
 *                        --pin
 *   bench_e2e_rounds.c   the measurement: the rounds of one store size, each
 *                        child run and checked, the rows and the medians
 *   bench_e2e.c          the options and main
 */
#ifndef KD_BENCH_E2E_INT_H
#define KD_BENCH_E2E_INT_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>

#define IN_TOPIC "bench.in"
#define KEY_HEADER "Idempotency-Key"
#define MAX_LEVELS 8
#define MAX_ROUNDS 32

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

/* One child's report. */
typedef struct result {
    uint64_t consumed, forwarded;
    double secs, cpu_s, p50_s, p99_s;
    long rss_kib;
} result;

/* The mock cluster process, driven by commands on its stdin; or, with
 * --bootstrap, the cluster there (pid 0, no pipes). */
typedef struct mock {
    pid_t pid;
    FILE *in, *out;
    char bootstrap[256];
} mock;

/* bench_e2e_child.c */

/* Runs child `which` (A or B) with the config at path `config` until
 * `expect` messages are settled, and reports its result on stdout; the
 * process's exit code. */
int bench_e2e_child_main(const char *which, const char *config, uint64_t expect);

/* bench_e2e_cluster.c */

/* --pin: puts the calling process (a forked child, before its exec) on cpu. */
void bench_e2e_pin_to(const options *o, int cpu);

/* Starts the mock cluster process with the input topic (or, with
 * --bootstrap, creates the input topic there); false when it cannot. */
bool bench_e2e_mock_start(mock *m, const options *o);

/* Creates topic `name` with `partitions` partitions on m's cluster; false
 * when it cannot. */
bool bench_e2e_mock_topic(mock *m, const char *name, int partitions);

/* Stops the mock cluster process (its input closed), and waits for it. */
void bench_e2e_mock_stop(mock *m);

/* Fills the input topic; returns the number of distinct keys, or -1. */
long bench_e2e_fill_input(const mock *m, const options *o);

/* A store at path holding n completed keys of another namespace; false
 * when it cannot be made. */
bool bench_e2e_prefill_store(const char *path, long n);

/* bench_e2e_rounds.c */

/* Runs the rounds of one store size (o->stored[level]), self being this
 * binary; prints per round and the medians. False when a run failed or did
 * not check out. */
bool bench_e2e_run_level(const char *self, mock *m, const options *o, long unique,
                         int level);

#endif /* KD_BENCH_E2E_INT_H */
