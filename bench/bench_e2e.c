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
 * Exit 0 only if every run completed and checked out. Its parts: the file
 * map in bench_e2e_int.h.
 */
#include "bench/bench_e2e_int.h"

#include <errno.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

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
        return bench_e2e_child_main(argv[2], argv[3], strtoull(argv[4], NULL, 10));
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
    if (!bench_e2e_mock_start(&m, &o)) {
        fprintf(stderr, "bench_e2e: cannot start the mock cluster (or create %s)\n",
                IN_TOPIC);
        bench_e2e_mock_stop(&m);
        return 1;
    }
    if ((unique = bench_e2e_fill_input(&m, &o)) < 0) {
        bench_e2e_mock_stop(&m);
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
        ok = bench_e2e_run_level(argv[0], &m, &o, unique, level);
    bench_e2e_mock_stop(&m);
    return ok ? 0 : 1;
}
