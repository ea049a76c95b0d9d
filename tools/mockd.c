/*
 * kdedup - `kdedup mock`: librdkafka's mock cluster in a process of its own,
 * so that tests can kill and restart kdedup while the cluster (and what it
 * holds) lives on. Binds loopback only.
 *
 *   kdedup mock [--brokers N] [--topic NAME:PARTITIONS]...
 *
 * Prints the bootstrap servers on the first line of stdout. Then:
 *
 * - stdin a pipe (a test or script driving it): reads one command per line
 *   and answers "ok" or "error: ..." on stdout, until "quit" or the end of
 *   input (the driver is gone, so a test that dies takes its cluster along);
 * - anything else (a terminal, /dev/null under nohup, a file): reads
 *   nothing and serves until SIGTERM or SIGINT.
 *
 * The commands:
 *
 *   topic NAME PARTITIONS        create a topic
 *   produce-errors COUNT CODE    fail the next COUNT Produce requests with CODE
 *   clear-produce-errors         drop those not used yet
 *   broker-produce-errors ID COUNT CODE   the same, on broker ID only
 *   commit-errors COUNT CODE     fail the next COUNT OffsetCommit requests
 *   heartbeat-errors COUNT CODE  fail the next COUNT Heartbeat requests (whichever
 *                                member sends them)
 *   endtxn-errors COUNT CODE     fail the next COUNT EndTxn requests (a
 *                                transaction's commit or abort)
 *   initpid-errors COUNT CODE    fail the next COUNT InitProducerId requests
 *   leader TOPIC PARTITION ID    move a partition's leadership to broker ID
 *   coordinator GROUP ID         move a consumer group's coordinator to broker ID
 *   broker-down ID | broker-up ID
 *   rtt ID MS                    delay every response of broker ID
 *   quit                         (or end of input) stop
 *
 * SIGTERM and SIGINT stop it in either mode (exit 0).
 */
#include "sidecar/kafka.h"
#include "tools/tools.h"

#include <librdkafka/rdkafka_mock.h>

#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define API_PRODUCE 0
#define API_OFFSET_COMMIT 8
#define API_HEARTBEAT 12
#define API_INIT_PRODUCER_ID 22
#define API_END_TXN 26

/* The commands that fail the next requests of one API (any broker). */
static const struct {
    const char *word;
    int16_t api;
} request_errors[] = {
    {"produce-errors", API_PRODUCE},          {"commit-errors", API_OFFSET_COMMIT},
    {"heartbeat-errors", API_HEARTBEAT},      {"endtxn-errors", API_END_TXN},
    {"initpid-errors", API_INIT_PRODUCER_ID},
};

/* The API whose requests `word` fails, or -1. */
static int request_api(const char *word) {
    for (size_t i = 0; i < sizeof(request_errors) / sizeof(request_errors[0]); i++)
        if (!strcmp(word, request_errors[i].word))
            return request_errors[i].api;
    return -1;
}

static int topic_arg(kd_mock *m, const char *arg) {
    char name[256];
    int parts;

    if (sscanf(arg, "%255[^:]:%d", name, &parts) != 2 || parts < 1)
        return -1;
    return kd_mock_topic(m, name, parts) ? -1 : 0;
}

/* Runs one command line; returns false for quit. */
static bool command(kd_mock *m, const char *line) {
    rd_kafka_mock_cluster_t *c = kd_mock_cluster(m);
    char word[32], name[256];
    long a = 0, b = 0, e = 0;
    int n = sscanf(line, "%31s", word), api;
    bool ok = true;

    if (n != 1 || !strcmp(word, "quit"))
        return n != 1 ? true : false;
    if (!strcmp(word, "topic") && sscanf(line, "%*s %255s %ld", name, &a) == 2 && a > 0)
        ok = kd_mock_topic(m, name, (int)a) == 0;
    else if ((api = request_api(word)) >= 0 && sscanf(line, "%*s %ld %ld", &a, &b) == 2)
        for (long i = 0; i < a; i++)
            rd_kafka_mock_push_request_errors(c, (int16_t)api, 1, (rd_kafka_resp_err_t)b);
    else if (!strcmp(word, "clear-produce-errors"))
        rd_kafka_mock_clear_request_errors(c, API_PRODUCE);
    else if (!strcmp(word, "broker-produce-errors") &&
             sscanf(line, "%*s %ld %ld %ld", &a, &b, &e) == 3)
        for (long i = 0; i < b; i++)
            ok = ok && !rd_kafka_mock_broker_push_request_error_rtts(
                           c, (int32_t)a, API_PRODUCE, 1, (rd_kafka_resp_err_t)e, 0);
    else if (!strcmp(word, "leader") &&
             sscanf(line, "%*s %255s %ld %ld", name, &a, &b) == 3)
        ok = rd_kafka_mock_partition_set_leader(c, name, (int32_t)a, (int32_t)b) == 0;
    else if (!strcmp(word, "coordinator") &&
             sscanf(line, "%*s %255s %ld", name, &a) == 2) /* group's */
        ok = rd_kafka_mock_coordinator_set(c, "group", name, (int32_t)a) == 0;
    else if (!strcmp(word, "broker-down") && sscanf(line, "%*s %ld", &a) == 1)
        ok = rd_kafka_mock_broker_set_down(c, (int32_t)a) == 0;
    else if (!strcmp(word, "broker-up") && sscanf(line, "%*s %ld", &a) == 1)
        ok = rd_kafka_mock_broker_set_up(c, (int32_t)a) == 0;
    else if (!strcmp(word, "rtt") && sscanf(line, "%*s %ld %ld", &a, &b) == 2)
        ok = rd_kafka_mock_broker_set_rtt(c, (int32_t)a, (int)b) == 0;
    else {
        printf("error: unknown command: %s", line);
        fflush(stdout);
        return true;
    }
    printf(ok ? "ok\n" : "error: %s failed\n", word);
    fflush(stdout);
    return true;
}

static void usage(FILE *out) {
    fprintf(out, "usage: kdedup mock [--brokers 1-9] [--topic NAME:PARTITIONS]...\n"
                 "  Starts librdkafka's mock Kafka cluster on loopback and prints its\n"
                 "  bootstrap servers on the first line of stdout. With stdin a pipe it\n"
                 "  reads commands (topic, produce-errors, broker-down, rtt, quit, ...:\n"
                 "  see tools/mockd.c) until quit or the end of input; otherwise it\n"
                 "  serves until SIGTERM or SIGINT. Its data lives in memory only.\n");
}

/* True when stdin is a pipe or a socket: a driver sends commands. */
static bool driven(void) {
    struct stat st;

    return fstat(0, &st) == 0 && (S_ISFIFO(st.st_mode) || S_ISSOCK(st.st_mode));
}

/* Reads the arguments into *brokers (topics are created later). Returns 0,
 * 1 for --help (printed), or 2 (the error printed). */
static int parse_args(int argc, char **argv, int *brokers) {
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            usage(stdout);
            return 1;
        }
        if ((!strcmp(argv[i], "--brokers") || !strcmp(argv[i], "--topic")) &&
            i + 1 < argc) {
            if (!strcmp(argv[i], "--brokers"))
                *brokers = atoi(argv[i + 1]);
            i++;
            continue;
        }
        fprintf(stderr, "kdedup mock: unexpected argument \"%s\"\n", argv[i]);
        usage(stderr);
        return 2;
    }
    if (*brokers < 1 || *brokers > 9) {
        fprintf(stderr, "kdedup mock: --brokers takes 1 to 9\n");
        return 2;
    }
    return 0;
}

int kd_mockd_main(int argc, char **argv) {
    char err[512], line[1024];
    int brokers = 1, rc, sig;
    bool commands = driven();
    sigset_t stop;
    kd_mock *m;

    if ((rc = parse_args(argc, argv, &brokers)) != 0)
        return rc == 1 ? 0 : rc;
    /* Blocked before the cluster's threads start, so that they inherit it
     * and sigwait() below takes the signal. */
    sigemptyset(&stop);
    sigaddset(&stop, SIGTERM);
    sigaddset(&stop, SIGINT);
    if (!commands)
        pthread_sigmask(SIG_BLOCK, &stop, NULL);
    if (!(m = kd_mock_start(brokers, err, sizeof(err)))) {
        fprintf(stderr, "kdedup mock: %s\n", err);
        return 1;
    }
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "--topic") && i + 1 < argc && topic_arg(m, argv[++i]) != 0) {
            fprintf(stderr, "kdedup mock: --topic takes NAME:PARTITIONS, got %s\n",
                    argv[i]);
            kd_mock_stop(m);
            return 2;
        }
    printf("%s\n", kd_mock_bootstraps(m));
    fflush(stdout);
    if (commands) {
        while (fgets(line, sizeof(line), stdin) && command(m, line))
            ;
    } else {
        fprintf(stderr,
                "kdedup mock: %d broker%s at %s; stop it with SIGTERM or Ctrl-C\n",
                brokers, brokers == 1 ? "" : "s", kd_mock_bootstraps(m));
        while (sigwait(&stop, &sig) != 0)
            ;
    }
    kd_mock_stop(m);
    return 0;
}
