/*
 * kdedup - store micro-benchmark: claim+complete keys/s against the RocksDB
 * store (sync=true), beside RocksDB's own synced WriteBatch rate measured in
 * the same run, for several batch sizes and numbers of keys already stored.
 *
 *   bench_store [--prefill 10000,100000,1000000] [--batch 1,100,1000]
 *               [--seconds 1] [--rounds 3] [--dir /tmp]
 *
 * For each prefill level a fresh store is filled (unsynced, completed keys),
 * reopened with sync=true, then each batch size is measured in alternating
 * rounds: raw, kdedup, raw, kdedup, ... and the medians are reported.
 */
#define _XOPEN_SOURCE 700 /* nftw */
#include "dedup/dedup.h"
#include "store_rocks/store_rocks.h"

#include <rocksdb/c.h>

#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#define MAX_LEVELS 8
#define MAX_ROUNDS 15
#define KEY_FMT "idem-%012llu" /* 17 bytes, like a short UUID-ish key */
#define RECEIPT_BYTES 48       /* topic/partition/offset/timestamp sized */

typedef struct opts {
    unsigned long long prefill[MAX_LEVELS];
    int nprefill;
    unsigned long long batch[MAX_LEVELS];
    int nbatch;
    double seconds;
    int rounds;
    const char *dir;
} opts;

static double now_s(void) {
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static int parse_list(const char *s, unsigned long long *out) {
    int n = 0;

    for (char *end; *s && n < MAX_LEVELS; s = *end ? end + 1 : end) {
        out[n++] = strtoull(s, &end, 10);
        if (end == s)
            return -1;
    }
    return n;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;

    return x < y ? -1 : x > y;
}

static double median(double *v, int n) {
    qsort(v, (size_t)n, sizeof(*v), cmp_double);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

/* Keys of one run: numbered from *next, formatted into one buffer. */
typedef struct keyset {
    char (*keys)[24];
    kd_claim *claims;
    kd_completion *done;
    size_t n;
} keyset;

static void keyset_fill(keyset *ks, unsigned long long first, const char *receipt) {
    for (size_t i = 0; i < ks->n; i++) {
        int len = snprintf(ks->keys[i], sizeof(ks->keys[i]), KEY_FMT, first + i);

        ks->claims[i] = (kd_claim){.key = ks->keys[i], .key_len = (size_t)len};
        ks->done[i] = (kd_completion){.key = ks->keys[i],
                                      .key_len = (size_t)len,
                                      .receipt = receipt,
                                      .receipt_len = RECEIPT_BYTES};
    }
}

/* Claims and completes one batch of new keys; returns 0 when all succeeded. */
static int claim_complete(kd_dedup *d, keyset *ks, const char *receipt,
                          unsigned long long *next) {
    int bad = 0;

    keyset_fill(ks, *next, receipt);
    *next += ks->n;
    if (kd_dedup_claim_batch(d, ks->claims, ks->n, 1) != KD_OK)
        return -1;
    for (size_t i = 0; i < ks->n; i++)
        bad |= ks->claims[i].err != KD_OK || ks->claims[i].decision.state != KD_CLAIMED;
    if (kd_dedup_complete_batch(d, ks->done, ks->n) != KD_OK)
        return -1;
    for (size_t i = 0; i < ks->n; i++)
        bad |= ks->done[i].err != KD_OK;
    return bad ? -1 : 0;
}

/* kdedup: claim+complete keys/s over batches of ks->n for `seconds`. */
static double run_kdedup(kd_dedup *d, keyset *ks, double seconds,
                         unsigned long long *next) {
    char receipt[RECEIPT_BYTES];
    double t0 = now_s(), t;
    unsigned long long keys = 0;

    memset(receipt, 'r', sizeof(receipt));
    do {
        if (claim_complete(d, ks, receipt, next) != 0) {
            fprintf(stderr, "bench: claim/complete failed\n");
            exit(1);
        }
        keys += ks->n;
        t = now_s() - t0;
    } while (t < seconds);
    return (double)keys / t;
}

/* splitmix64: spreads a counter over the key space, as SHA-256 spreads
 * idempotency keys, so the raw run inserts in the same random order. */
static uint64_t mix64(uint64_t x) {
    x += 0x9e3779b97f4a7c15ULL;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}

/* RocksDB alone: synced WriteBatches of n puts with keys and values sized
 * and spread like kdedup's (a 71-byte head key, a 60-byte value), puts/s
 * over `seconds`. */
static double run_raw(rocksdb_t *db, size_t n, double seconds, unsigned long long *next) {
    rocksdb_writeoptions_t *wo = rocksdb_writeoptions_create();
    char key[96], val[96];
    double t0 = now_s(), t;
    unsigned long long puts = 0;

    rocksdb_writeoptions_set_sync(wo, 1);
    memset(val, 'v', sizeof(val));
    do {
        rocksdb_writebatch_t *wb = rocksdb_writebatch_create();
        char *err = NULL;

        for (size_t i = 0; i < n; i++) {
            uint64_t x = mix64((*next)++);
            int len = snprintf(key, sizeof(key), "hbench:%016llx%016llx%016llx%016llx",
                               (unsigned long long)x, (unsigned long long)mix64(x + 1),
                               (unsigned long long)mix64(x + 2),
                               (unsigned long long)mix64(x + 3));

            rocksdb_writebatch_put(wb, key, (size_t)len, val, 60);
        }
        rocksdb_write(db, wo, wb, &err);
        rocksdb_writebatch_destroy(wb);
        if (err) {
            fprintf(stderr, "bench: raw write: %s\n", err);
            exit(1);
        }
        puts += n;
        t = now_s() - t0;
    } while (t < seconds);
    rocksdb_writeoptions_destroy(wo);
    return (double)puts / t;
}

static kd_store *open_store(const char *path, int sync) {
    char err[512];
    kd_store *s = kd_rocks_open(path, sync, err, sizeof(err));

    if (!s) {
        fprintf(stderr, "bench: %s\n", err);
        exit(1);
    }
    return s;
}

static void keyset_init(keyset *ks, size_t n) {
    ks->n = n;
    ks->keys = calloc(n, sizeof(*ks->keys));
    ks->claims = calloc(n, sizeof(*ks->claims));
    ks->done = calloc(n, sizeof(*ks->done));
    if (!ks->keys || !ks->claims || !ks->done) {
        fprintf(stderr, "bench: out of memory\n");
        exit(1);
    }
}

static void keyset_free(keyset *ks) {
    free(ks->keys);
    free(ks->claims);
    free(ks->done);
}

/* Fills a fresh store with `count` completed keys, unsynced, in 1000s. */
static void prefill(const char *path, unsigned long long count,
                    unsigned long long *next) {
    kd_store *s = open_store(path, 0);
    kd_dedup *d = kd_dedup_new(s, "bench");
    char receipt[RECEIPT_BYTES];
    keyset ks;

    memset(receipt, 'p', sizeof(receipt));
    keyset_init(&ks, 1000);
    for (unsigned long long done = 0; done < count; done += ks.n) {
        ks.n = count - done < 1000 ? (size_t)(count - done) : 1000;
        if (claim_complete(d, &ks, receipt, next) != 0) {
            fprintf(stderr, "bench: prefill failed\n");
            exit(1);
        }
    }
    keyset_free(&ks);
    kd_dedup_destroy(d);
    kd_store_destroy(s);
}

static void bench_level(const opts *o, unsigned long long level) {
    char path[512], rawpath[512], *err = NULL;
    unsigned long long next = 0, rawnext = 0;
    double t0 = now_s();
    rocksdb_options_t *ro = rocksdb_options_create();
    rocksdb_t *raw;
    kd_store *s;
    kd_dedup *d;

    snprintf(path, sizeof(path), "%s/kdedup-bench-%d-store", o->dir, (int)getpid());
    snprintf(rawpath, sizeof(rawpath), "%s/kdedup-bench-%d-raw", o->dir, (int)getpid());
    prefill(path, level, &next);
    printf("# prefilled %llu keys in %.1fs\n", level, now_s() - t0);
    s = open_store(path, 1);
    d = kd_dedup_new(s, "bench");
    rocksdb_options_set_create_if_missing(ro, 1);
    raw = rocksdb_open(ro, rawpath, &err);
    if (err) {
        fprintf(stderr, "bench: %s\n", err);
        exit(1);
    }
    for (int b = 0; b < o->nbatch; b++) {
        double kd[MAX_ROUNDS], rw[MAX_ROUNDS], ratio[MAX_ROUNDS];
        keyset ks;

        keyset_init(&ks, (size_t)o->batch[b]);
        for (int r = 0; r < o->rounds; r++) {
            rw[r] = run_raw(raw, ks.n, o->seconds, &rawnext);
            kd[r] = run_kdedup(d, &ks, o->seconds, &next);
            ratio[r] = kd[r] / rw[r];
        }
        printf("%10llu %6llu %12.0f %12.0f %7.3f\n", level, o->batch[b],
               median(kd, o->rounds), median(rw, o->rounds), median(ratio, o->rounds));
        fflush(stdout);
        keyset_free(&ks);
    }
    rocksdb_close(raw);
    rocksdb_options_destroy(ro);
    kd_dedup_destroy(d);
    kd_store_destroy(s);
    nftw(path, rm_one, 16, FTW_DEPTH | FTW_PHYS);
    nftw(rawpath, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

int main(int argc, char **argv) {
    opts o = {.prefill = {10000, 100000, 1000000},
              .nprefill = 3,
              .batch = {1, 100, 1000},
              .nbatch = 3,
              .seconds = 1.0,
              .rounds = 3,
              .dir = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp"};
    struct rusage ru;

    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--prefill"))
            o.nprefill = parse_list(argv[i + 1], o.prefill);
        else if (!strcmp(argv[i], "--batch"))
            o.nbatch = parse_list(argv[i + 1], o.batch);
        else if (!strcmp(argv[i], "--seconds"))
            o.seconds = atof(argv[i + 1]);
        else if (!strcmp(argv[i], "--rounds"))
            o.rounds = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--dir"))
            o.dir = argv[i + 1];
        else
            break;
    }
    if (argc % 2 == 0 || o.nprefill <= 0 || o.nbatch <= 0 || o.seconds <= 0 ||
        o.rounds < 1 || o.rounds > MAX_ROUNDS) {
        fprintf(stderr,
                "usage: %s [--prefill N,N..] [--batch N,N..] [--seconds S] "
                "[--rounds R] [--dir D]\n",
                argv[0]);
        return 2;
    }
    for (int b = 0; b < o.nbatch; b++)
        if (o.batch[b] == 0) {
            fprintf(stderr, "bench: batch sizes must be positive\n");
            return 2;
        }
    printf(
        "# claim+complete keys/s (kdedup, RocksDB store, sync=true) vs synced\n"
        "# WriteBatch puts/s (raw RocksDB), medians of %d alternating rounds of %.1fs\n",
        o.rounds, o.seconds);
    printf("%10s %6s %12s %12s %7s\n", "stored", "batch", "kdedup_k/s", "raw_puts/s",
           "ratio");
    for (int l = 0; l < o.nprefill; l++)
        bench_level(&o, o.prefill[l]);
    getrusage(RUSAGE_SELF, &ru);
    printf("# peak RSS %ld MiB\n", ru.ru_maxrss / 1024);
    return 0;
}
