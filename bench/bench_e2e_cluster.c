/*
 * kdedup benchmarks - end to end: the workload. The mock cluster (or
 * --bootstrap's), its topics, the input topic filled, the store pre-filled
 * (file map: bench_e2e_int.h).
 */
#define _GNU_SOURCE /* sched_setaffinity, CPU_SET */
#include "bench/admin.h"
#include "bench/bench_e2e_int.h"
#include "dedup/dedup.h"
#include "store_rocks/store_rocks.h"

#include <librdkafka/rdkafka.h>

#include <sched.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define PREFILL_BATCH 10000

/* --pin: puts the calling process (a forked child, before its exec) on cpu. */
void bench_e2e_pin_to(const options *o, int cpu) {
    cpu_set_t set;

    if (!o->pin)
        return;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    if (sched_setaffinity(0, sizeof(set), &set) != 0)
        perror("bench_e2e: sched_setaffinity");
}

bool bench_e2e_mock_start(mock *m, const options *o) {
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
        bench_e2e_pin_to(o, 0);
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

bool bench_e2e_mock_topic(mock *m, const char *name, int partitions) {
    char reply[64];

    if (!m->pid)
        return bench_admin_topic(m->bootstrap, name, partitions);
    fprintf(m->in, "topic %s %d\n", name, partitions);
    fflush(m->in);
    return fgets(reply, sizeof(reply), m->out) && !strncmp(reply, "ok", 2);
}

void bench_e2e_mock_stop(mock *m) {
    if (m->in)
        fclose(m->in); /* end of input: it exits */
    if (m->out)
        fclose(m->out);
    if (m->pid > 0)
        waitpid(m->pid, NULL, 0);
}

/* Fills the input topic; returns the number of distinct keys, or -1. */
long bench_e2e_fill_input(const mock *m, const options *o) {
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
bool bench_e2e_prefill_store(const char *path, long n) {
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
