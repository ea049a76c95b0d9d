/*
 * kdedup - exact recovery of orphaned claims (see recovery.h).
 *
 * A scan reads one downstream partition from the dead run's start offset to
 * its end with a consumer of its own (assigned, never in a group, never
 * committing) and remembers, for each record of the route's source topic
 * that carries the route's key header, the first 16 bytes of the key's
 * SHA-256, the record's offset, timestamp and forwarding time: a 48-byte
 * slot in a table kept at most half full, so a scan of 2,000,000 records
 * (the default dedup.scan_max_records, the most one scan holds) takes up to
 * 2^22 slots, 192 MiB, and half as much again while it grows. (Bounding the
 * scans together, and a smaller slot, are the memory issue's work.)
 *
 * A handover scan reads with the same consumer, and hands the records of
 * one source partition to the caller in batches, unremembered.
 */
#include "sidecar/recovery.h"
#include "sidecar/clock.h"
#include "sidecar/kafka.h"
#include "sidecar/log.h"
#include "sidecar/signing.h"

#include <openssl/sha.h>

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define DIGEST_LEN 16
#define SCAN_TIMEOUT_MS 60000
#define WATERMARK_TIMEOUT_MS 5000
#define RUN_MAGIC "kdedup-run v1\n"
#define HANDOVER_MAGIC "kdedup-handover v1"

typedef struct found {
    unsigned char digest[DIGEST_LEN];
    int64_t offset;
    int64_t timestamp;
    int64_t forwarded_at; /* KD_FORWARDED_AT_HEADER; -1 when the record has none */
    bool used;            /* false: an empty slot */
} found;

/* One scanned partition: an open-addressing table of key digests. */
typedef struct scan {
    uint64_t owner; /* the dead run; OWN_SCAN: this run's deliveries */
    size_t route;
    int32_t partition;
    int64_t from, end; /* OWN_SCAN: the range read */
    found *slots;
    size_t cap, n;
} scan;

#define OWN_SCAN 0          /* boot ids are never 0 */
#define CLOCK_SLACK_MS 1000 /* a claim and its forwarding: one clock, maybe stepped */
#define BROKER_RETRY_US 1000000

struct kd_recovery {
    const kd_config *cfg;
    kd_store *store;
    char *brokers;
    rd_kafka_t *scanner; /* created on first use */
    scan *scans;
    size_t nscans;
    kd_recovery_stats stats;
    void (*progress)(void *arg);
    void *progress_arg;
    uint64_t broker_retry_at; /* mono us: own scans fail fast until then */
    uint64_t boot_id;         /* this run's (kd_recovery_record_run) */
    kd_signer *signers[2];    /* dedup.signing_key, previous_signing_key; or NULL */
};

static void digest(const char *key, size_t len, unsigned char out[DIGEST_LEN]) {
    unsigned char full[SHA256_DIGEST_LENGTH];

    SHA256((const unsigned char *)(len ? key : ""), len, full);
    memcpy(out, full, DIGEST_LEN);
}

static size_t slot_of(const unsigned char *d, size_t cap) {
    uint64_t h;

    memcpy(&h, d, sizeof(h)); /* a digest: already uniform */
    return (size_t)(h & (cap - 1));
}

static bool scan_grow(scan *s) {
    size_t cap = s->cap ? s->cap * 2 : 1024;
    found *slots = calloc(cap, sizeof(*slots));

    if (!slots)
        return false;
    for (size_t i = 0; i < s->cap; i++) {
        size_t j;

        if (!s->slots[i].used)
            continue;
        for (j = slot_of(s->slots[i].digest, cap); slots[j].used; j = (j + 1) & (cap - 1))
            ;
        slots[j] = s->slots[i];
    }
    free(s->slots);
    s->slots = slots;
    s->cap = cap;
    return true;
}

/* Remembers a record of a key: the latest one. An earlier one may be the
 * delivery of an older claim of the key that has since expired; callers
 * tell by when it was forwarded. */
static bool scan_add(scan *s, const unsigned char *d, int64_t offset, int64_t ts,
                     int64_t at) {
    size_t j;

    if ((s->n + 1) * 2 > s->cap && !scan_grow(s))
        return false;
    for (j = slot_of(d, s->cap); s->slots[j].used; j = (j + 1) & (s->cap - 1))
        if (!memcmp(s->slots[j].digest, d, DIGEST_LEN)) {
            if (offset > s->slots[j].offset) {
                s->slots[j].offset = offset;
                s->slots[j].timestamp = ts;
                s->slots[j].forwarded_at = at;
            }
            return true;
        }
    memcpy(s->slots[j].digest, d, DIGEST_LEN);
    s->slots[j].offset = offset;
    s->slots[j].timestamp = ts;
    s->slots[j].forwarded_at = at;
    s->slots[j].used = true;
    s->n++;
    return true;
}

static const found *scan_get(const scan *s, const unsigned char *d) {
    if (!s->cap)
        return NULL;
    for (size_t j = slot_of(d, s->cap); s->slots[j].used; j = (j + 1) & (s->cap - 1))
        if (!memcmp(s->slots[j].digest, d, DIGEST_LEN))
            return &s->slots[j];
    return NULL;
}

/* One of topic/partition's offsets through rk: `at` is a timestamp (ms),
 * RD_KAFKA_OFFSET_BEGINNING or RD_KAFKA_OFFSET_END. */
static rd_kafka_resp_err_t offset_at(rd_kafka_t *rk, const char *topic, int32_t partition,
                                     int64_t at, int64_t *out) {
    rd_kafka_topic_partition_list_t *list = rd_kafka_topic_partition_list_new(1);
    rd_kafka_resp_err_t err;

    rd_kafka_topic_partition_list_add(list, topic, partition)->offset = at;
    err = rd_kafka_offsets_for_times(rk, list, WATERMARK_TIMEOUT_MS);
    if (!err)
        err = list->elems[0].err;
    *out = list->elems[0].offset;
    rd_kafka_topic_partition_list_destroy(list);
    return err;
}

/* The first and end offsets of topic/partition. Not with
 * rd_kafka_query_watermark_offsets(): before librdkafka 2.3 it ignores its
 * timeout while the partition's leader is down (librdkafka #2588). */
static rd_kafka_resp_err_t watermarks(rd_kafka_t *rk, const char *topic,
                                      int32_t partition, int64_t *lo, int64_t *hi) {
    rd_kafka_resp_err_t err =
        offset_at(rk, topic, partition, RD_KAFKA_OFFSET_BEGINNING, lo);

    return err ? err : offset_at(rk, topic, partition, RD_KAFKA_OFFSET_END, hi);
}

/*
 * Run records.
 */

size_t kd_recovery_run_stream(uint64_t boot_id, char *buf, size_t size) {
    int n = snprintf(buf, size, "kdedup:run:%016" PRIx64, boot_id);

    return n < 0 ? 0 : (size_t)n;
}

bool kd_recovery_run_lookup(const void *payload, size_t len, const char *topic,
                            int32_t partition, int64_t *offset) {
    const char *p = payload, *end = p + len;
    size_t tlen = strlen(topic), mlen = strlen(RUN_MAGIC);

    if (len < mlen || memcmp(p, RUN_MAGIC, mlen) != 0)
        return false;
    for (p += mlen; p < end;) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        char line[320], name[256];
        long long part, off;
        size_t ll;

        if (!nl)
            return false;
        ll = (size_t)(nl - p);
        if (ll < sizeof(line)) {
            memcpy(line, p, ll);
            line[ll] = '\0';
            if (sscanf(line, "%lld %lld %255s", &part, &off, name) == 3 &&
                part == partition && strlen(name) == tlen && !strcmp(name, topic) &&
                off >= 0) {
                *offset = off;
                return true;
            }
        }
        p = nl + 1;
    }
    return false;
}

kd_err kd_recovery_record_run(kd_recovery *rc, rd_kafka_t *producer, uint64_t boot_id,
                              const int *out_partitions, int64_t *const *ends,
                              char *errstr, size_t errstr_size) {
    size_t cap = 4096, len = 0;
    char *text = malloc(cap), stream[32];
    kd_err err = KD_OK;

    if (!text) {
        snprintf(errstr, errstr_size, "out of memory");
        return KD_ERR_STORE;
    }
    len = (size_t)snprintf(text, cap, "%s", RUN_MAGIC);
    for (size_t r = 0; r < rc->cfg->nroutes && err == KD_OK; r++) {
        const char *topic = rc->cfg->routes[r].to;

        for (int32_t part = 0; part < out_partitions[r]; part++) {
            int64_t hi = 0;
            rd_kafka_resp_err_t e =
                offset_at(producer, topic, part, RD_KAFKA_OFFSET_END, &hi);
            char *grown;

            if (e) {
                snprintf(errstr, errstr_size, "end offset of %s/%" PRId32 ": %s", topic,
                         part, rd_kafka_err2str(e));
                err = KD_ERR_STORE;
                break;
            }
            if (cap - len < 300 && (grown = realloc(text, cap *= 2)))
                text = grown;
            else if (cap - len < 300) {
                snprintf(errstr, errstr_size, "out of memory");
                err = KD_ERR_STORE;
                break;
            }
            len += (size_t)snprintf(text + len, cap - len, "%" PRId32 " %" PRId64 " %s\n",
                                    part, hi, topic);
            if (ends)
                ends[r][part] = hi;
        }
    }
    rc->boot_id = boot_id;
    if (err == KD_OK) {
        size_t slen = kd_recovery_run_stream(boot_id, stream, sizeof(stream));

        err = kd_store_append(rc->store, stream, slen, 0, text, len);
        if (err != KD_OK) {
            char why[400];

            snprintf(errstr, errstr_size, "store: writing the run record failed: %s",
                     kd_store_last_error(rc->store, why, sizeof(why)));
        }
    }
    free(text);
    return err;
}

/*
 * Scanning.
 */

kd_recovery *kd_recovery_new(const kd_config *cfg, kd_store *store, const char *brokers,
                             char *errstr, size_t errstr_size) {
    kd_recovery *rc = calloc(1, sizeof(*rc));

    if (!rc || !(rc->brokers = strdup(brokers))) {
        free(rc);
        snprintf(errstr, errstr_size, "out of memory");
        return NULL;
    }
    rc->cfg = cfg;
    rc->store = store;
    if ((cfg->signing_key && !(rc->signers[0] = kd_signer_new(cfg->signing_key))) ||
        (cfg->previous_signing_key &&
         !(rc->signers[1] = kd_signer_new(cfg->previous_signing_key)))) {
        snprintf(errstr, errstr_size, "libcrypto: no HMAC-SHA256 for the signing key");
        kd_recovery_destroy(rc);
        return NULL;
    }
    return rc;
}

static rd_kafka_t *scanner(kd_recovery *rc) {
    static const char *const overrides[][2] = {
        {"enable.auto.commit", "false"}, /* it reads; it never commits */
        {"enable.partition.eof", "true"},
        {"statistics.interval.ms", "0"},
        {"auto.offset.reset", "error"}, /* deleted records: say so */
    };
    char err[512];
    rd_kafka_conf_t *conf;

    if (rc->scanner)
        return rc->scanner;
    if (!(conf = kd_kafka_conf(rc->cfg, KD_CONSUMER, rc->brokers, err, sizeof(err)))) {
        KD_WARN("recovery: %s", err);
        return NULL;
    }
    for (size_t i = 0; i < sizeof(overrides) / sizeof(overrides[0]); i++)
        rd_kafka_conf_set(conf, overrides[i][0], overrides[i][1], NULL, 0);
    rd_kafka_conf_set(conf, "client.id", "kdedup-recovery", NULL, 0);
    if (!(rc->scanner = rd_kafka_new(RD_KAFKA_CONSUMER, conf, err, sizeof(err)))) {
        rd_kafka_conf_destroy(conf);
        KD_WARN("recovery: %s", err);
    }
    return rc->scanner;
}

/* rkm came from topic through kdedup: its source header is
 * "<topic>/<partition>/<offset>". Sets the source coordinates. */
static bool source_of(const rd_kafka_message_t *rkm, const char *topic, int32_t *part,
                      int64_t *offset) {
    rd_kafka_headers_t *h = NULL;
    const void *v;
    size_t len, tlen = strlen(topic);
    char rest[48], *end;
    long long pn, on;

    if (rd_kafka_message_headers(rkm, &h) != RD_KAFKA_RESP_ERR_NO_ERROR ||
        rd_kafka_header_get_last(h, KD_SOURCE_HEADER, &v, &len) !=
            RD_KAFKA_RESP_ERR_NO_ERROR ||
        !v || len <= tlen + 1 || memcmp(v, topic, tlen) != 0 ||
        ((const char *)v)[tlen] != '/' || len - tlen - 1 >= sizeof(rest))
        return false;
    memcpy(rest, (const char *)v + tlen + 1, len - tlen - 1);
    rest[len - tlen - 1] = '\0';
    pn = strtoll(rest, &end, 10);
    if (end == rest || *end != '/' || pn < 0 || pn > INT32_MAX)
        return false;
    on = strtoll(end + 1, &end, 10);
    if (*end || on < 0)
        return false;
    *part = (int32_t)pn;
    *offset = on;
    return true;
}

/* The route's idempotency key of a record kdedup forwarded, if it is one
 * kdedup would claim (not empty, at most max_key_bytes): its key header, or
 * for a key taken from elsewhere, the KD_KEY_HEADER kdedup wrote. */
static bool key_of(const kd_recovery *rc, const rd_kafka_message_t *rkm,
                   const kd_route *route, const void **key, size_t *key_len) {
    const char *name = route->key_header ? route->key_header : KD_KEY_HEADER;
    rd_kafka_headers_t *h = NULL;

    return rd_kafka_message_headers(rkm, &h) == RD_KAFKA_RESP_ERR_NO_ERROR &&
           rd_kafka_header_get(h, 0, name, key, key_len) == RD_KAFKA_RESP_ERR_NO_ERROR &&
           *key && *key_len && *key_len <= (size_t)rc->cfg->max_key_bytes;
}

/* The last value of header name in rkm, or false. */
static bool header(const rd_kafka_message_t *rkm, const char *name, const void **v,
                   size_t *len) {
    rd_kafka_headers_t *h = NULL;

    return rd_kafka_message_headers(rkm, &h) == RD_KAFKA_RESP_ERR_NO_ERROR &&
           rd_kafka_header_get_last(h, name, v, len) == RD_KAFKA_RESP_ERR_NO_ERROR && *v;
}

/* True when kdedup wrote rkm, as far as can be told: with a signing key,
 * its signature verifies under the current or the previous key (else it is
 * counted as foreign); without one, every record is trusted. */
static bool trusted(kd_recovery *rc, const rd_kafka_message_t *rkm, const kd_route *route,
                    const void *key, size_t key_len) {
    kd_signed w = {.from = route->from, .to = route->to, .key = key, .key_len = key_len};
    const void *sig;
    size_t sig_len;

    if (!rc->signers[0])
        return true;
    if (header(rkm, KD_SOURCE_HEADER, &w.source, &w.source_len) &&
        header(rkm, KD_RUN_HEADER, &w.run, &w.run_len) &&
        header(rkm, KD_FORWARDED_AT_HEADER, &w.at, &w.at_len) &&
        header(rkm, KD_SIGNATURE_HEADER, &sig, &sig_len))
        for (int i = 0; i < 2 && rc->signers[i]; i++)
            if (kd_sign_verify(rc->signers[i], &w, sig, sig_len))
                return true;
    rc->stats.foreign++;
    return false;
}

/* Takes each record read (and its ownership); false stops the scan. */
typedef bool (*record_fn)(void *arg, rd_kafka_message_t *rkm);

/* Reads [from, to) of topic/partition, handing every record to each;
 * counts them in *records. True when it reached `to`. */
static bool scan_range(kd_recovery *rc, const char *topic, int32_t partition,
                       int64_t from, int64_t to, record_fn each, void *arg,
                       uint64_t *records) {
    rd_kafka_t *rk = scanner(rc);
    rd_kafka_topic_partition_list_t *list;
    uint64_t deadline = kd_mono_us() + SCAN_TIMEOUT_MS * 1000ull;
    int64_t next = from;

    if (!rk)
        return false;
    list = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(list, topic, partition)->offset = from;
    if (rd_kafka_assign(rk, list)) {
        rd_kafka_topic_partition_list_destroy(list);
        return false;
    }
    rd_kafka_topic_partition_list_destroy(list);
    while (next < to && kd_mono_us() < deadline) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 100);

        if (rc->progress)
            rc->progress(rc->progress_arg);
        if (!m)
            continue;
        if (m->err) {
            bool eof = m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF;

            if (!eof)
                KD_WARN("scanning %s/%" PRId32 ": %s", topic, partition,
                        rd_kafka_message_errstr(m));
            if (eof && m->offset > next)
                next = m->offset; /* the end: past any control records */
            rd_kafka_message_destroy(m);
            if (!eof)
                break;
            continue;
        }
        next = m->offset + 1; /* gaps (markers, compaction) hold no records */
        (*records)++;
        if (m->offset >= to) {
            rd_kafka_message_destroy(m);
            continue;
        }
        if (!each(arg, m))
            break;
    }
    rd_kafka_assign(rk, NULL);
    return next >= to;
}

/* When kdedup forwarded rkm (its KD_FORWARDED_AT_HEADER, wall ms), or -1
 * for a record without one (forwarded by an older kdedup). */
static int64_t header_forwarded_at(const rd_kafka_message_t *rkm) {
    rd_kafka_headers_t *h = NULL;
    const void *v;
    size_t len;
    char text[24], *end;
    long long at;

    if (rd_kafka_message_headers(rkm, &h) != RD_KAFKA_RESP_ERR_NO_ERROR ||
        rd_kafka_header_get_last(h, KD_FORWARDED_AT_HEADER, &v, &len) !=
            RD_KAFKA_RESP_ERR_NO_ERROR ||
        !v || len == 0 || len >= sizeof(text))
        return -1;
    memcpy(text, v, len);
    text[len] = '\0';
    at = strtoll(text, &end, 10);
    return !*end && at >= 0 ? at : -1;
}

/* A recovery scan: remembers the digest of each of the route's keys. */
typedef struct digest_scan {
    kd_recovery *rc;
    scan *s;
    const kd_route *route;
    bool nomem;
} digest_scan;

static bool digest_each(void *arg, rd_kafka_message_t *m) {
    digest_scan *ds = arg;
    int32_t part;
    int64_t off;
    const void *key;
    size_t key_len;
    unsigned char d[DIGEST_LEN];

    if (source_of(m, ds->route->from, &part, &off) &&
        key_of(ds->rc, m, ds->route, &key, &key_len) &&
        trusted(ds->rc, m, ds->route, key, key_len)) {
        digest(key, key_len, d);
        ds->nomem = !scan_add(ds->s, d, m->offset, rd_kafka_message_timestamp(m, NULL),
                              header_forwarded_at(m));
    }
    rd_kafka_message_destroy(m);
    return !ds->nomem;
}

/* True when a record forwarded at `at` (-1: unknown, an older kdedup's)
 * can be the delivery of something claimed or sent at since_ms. */
static bool forwarded_since(int64_t at, uint64_t since_ms) {
    return at < 0 || (uint64_t)at + CLOCK_SLACK_MS >= since_ms;
}

/* Reads what was added to a cached scan's partition since it was read: a
 * scan of this run's own claims, whose deliveries go on landing. */
static bool scan_extend(kd_recovery *rc, scan *s) {
    const kd_route *r = &rc->cfg->routes[s->route];
    int64_t lo = 0, hi = 0;
    uint64_t t0 = kd_mono_us();
    bool ok;

    if (!scanner(rc) || watermarks(rc->scanner, r->to, s->partition, &lo, &hi) !=
                            RD_KAFKA_RESP_ERR_NO_ERROR)
        return false;
    if (hi <= s->end)
        return true;
    if (s->end < lo || hi - s->from > rc->cfg->scan_max_records)
        return false; /* a scan never holds more than the bound */
    ok = scan_range(rc, r->to, s->partition, s->end, hi, digest_each,
                    &(digest_scan){rc, s, r, false}, &rc->stats.records);
    rc->stats.scans++;
    rc->stats.micros += kd_mono_us() - t0;
    if (ok)
        s->end = hi;
    return ok;
}

/* The scan of (owner, route, partition), made now if not yet (brought up
 * to date when owner is this run); NULL when it cannot be made or
 * completed. */
static scan *scan_for(kd_recovery *rc, uint64_t owner, size_t route, int32_t partition) {
    const kd_route *r = &rc->cfg->routes[route];
    char stream[32];
    void *payload = NULL;
    size_t plen = 0;
    uint64_t seq, t0;
    bool have = false, ok;
    int64_t start, lo = 0, hi = 0;
    scan s = {.owner = owner, .route = route, .partition = partition}, *grown;

    if (owner == OWN_SCAN)
        return NULL; /* no run has id 0: a claim without an owner has no record */
    for (size_t i = 0; i < rc->nscans; i++)
        if (rc->scans[i].owner == owner && rc->scans[i].route == route &&
            rc->scans[i].partition == partition)
            return owner != rc->boot_id || scan_extend(rc, &rc->scans[i]) ? &rc->scans[i]
                                                                          : NULL;
    if (kd_store_read_last(rc->store, stream,
                           kd_recovery_run_stream(owner, stream, sizeof(stream)), &seq,
                           &payload, &plen, &have) != KD_OK ||
        !have) {
        KD_WARN("recovery: no run record for run %016" PRIx64 ": its claims are "
                "forwarded again",
                owner);
        free(payload);
        return NULL;
    }
    ok = kd_recovery_run_lookup(payload, plen, r->to, partition, &start);
    free(payload);
    if (!ok || !scanner(rc) ||
        watermarks(rc->scanner, r->to, partition, &lo, &hi) !=
            RD_KAFKA_RESP_ERR_NO_ERROR) {
        KD_WARN("recovery: no start offset or end offset for %s/%" PRId32, r->to,
                partition);
        return NULL;
    }
    if (start < lo || hi - start > rc->cfg->scan_max_records) {
        KD_WARN("recovery: %s/%" PRId32 " from %" PRId64 " to %" PRId64 " (first %" PRId64
                ") cannot be scanned: %s",
                r->to, partition, start, hi, lo,
                start < lo ? "records were deleted" : "longer than the scan bound");
        return NULL;
    }
    t0 = kd_mono_us();
    ok = scan_range(rc, r->to, partition, start, hi, digest_each,
                    &(digest_scan){rc, &s, r, false}, &rc->stats.records);
    rc->stats.scans++;
    rc->stats.micros += kd_mono_us() - t0;
    if (!ok || !(grown = realloc(rc->scans, (rc->nscans + 1) * sizeof(*grown)))) {
        free(s.slots);
        return NULL;
    }
    KD_INFO("recovery: scanned %s/%" PRId32 " [%" PRId64 ", %" PRId64
            ") in %.3fs: %zu keys",
            r->to, partition, start, hi, (double)(kd_mono_us() - t0) / 1e6, s.n);
    s.from = start;
    s.end = hi;
    rc->scans = grown;
    rc->scans[rc->nscans] = s;
    return &rc->scans[rc->nscans++];
}

kd_recover_result kd_recovery_find(kd_recovery *rc, uint64_t owner, size_t route,
                                   int32_t out_partition, const char *key, size_t key_len,
                                   uint64_t claimed_at_ms, kd_recover_found *out) {
    scan *s = scan_for(rc, owner, route, out_partition);
    unsigned char d[DIGEST_LEN];
    const found *f;

    if (!s)
        return KD_RECOVER_UNKNOWN;
    digest(key, key_len, d);
    if (!(f = scan_get(s, d)))
        return KD_RECOVER_ABSENT;
    /* Forwarded before the claim: the delivery of an older, expired claim
     * of the key, not of this one (records without the header: trusted). */
    if (!forwarded_since(f->forwarded_at, claimed_at_ms))
        return KD_RECOVER_ABSENT;
    out->offset = f->offset;
    out->timestamp = f->timestamp;
    return KD_RECOVER_FOUND;
}

/*
 * Handover: the history of a newly assigned partition.
 */

/* The store stream of the handover mark of a (source, downstream)
 * partition pair: where the last complete history scan ended. */
static size_t mark_stream(const kd_route *r, int32_t src, int32_t out, char *buf,
                          size_t size) {
    int n = snprintf(buf, size, "kdedup:handover:%s/%" PRId32 ":%s/%" PRId32, r->from,
                     src, r->to, out);

    return n < 0 ? 0 : (size_t)n < size ? (size_t)n : size - 1;
}

/* Reads the mark: *have false when there is none (or it is unreadable);
 * *next_seq is where the next mark is appended. */
static kd_err mark_read(kd_recovery *rc, const char *stream, size_t len,
                        uint64_t *next_seq, int64_t *offset, bool *have) {
    void *payload = NULL;
    size_t plen = 0;
    char text[64];
    long long off;
    uint64_t seq = 0;
    kd_err err = kd_store_read_last(rc->store, stream, len, &seq, &payload, &plen, have);

    *next_seq = err == KD_OK && *have ? seq + 1 : 0;
    if (err == KD_OK && *have) {
        size_t n = plen < sizeof(text) - 1 ? plen : sizeof(text) - 1;

        memcpy(text, payload, n);
        text[n] = '\0';
        if (sscanf(text, HANDOVER_MAGIC " %lld", &off) == 1 && off >= 0) {
            *offset = off;
        } else {
            KD_WARN("handover: unreadable mark %.*s: scanning the whole window", (int)len,
                    stream);
            *have = false;
        }
    }
    free(payload);
    return err;
}

/* A handover scan: passes the route's records of one source partition to
 * the caller in batches. */
typedef struct history {
    kd_recovery *rc;
    const kd_route *route;
    int32_t src_partition;
    int64_t since_ms; /* older records have expired: skipped */
    kd_history_fn fn;
    void *arg;
    rd_kafka_message_t **held; /* the batch's records, alive while fn reads them */
    kd_history_rec *recs;
    size_t n, batch;
    bool stopped; /* fn said no */
} history;

/* Drops the batch's records. */
static void history_drop(history *h) {
    for (size_t i = 0; i < h->n; i++)
        rd_kafka_message_destroy(h->held[i]);
    h->n = 0;
}

/* Passes the batch to fn, then drops it. */
static bool history_flush(history *h) {
    bool ok = !h->n || h->fn(h->arg, h->recs, h->n);

    history_drop(h);
    h->stopped |= !ok;
    return ok;
}

/* When kdedup forwarded rkm, or the record's timestamp for records
 * forwarded before the header existed. */
static int64_t forwarded_at(const rd_kafka_message_t *rkm) {
    int64_t at = header_forwarded_at(rkm);

    return at >= 0 ? at : rd_kafka_message_timestamp(rkm, NULL);
}

static bool history_each(void *arg, rd_kafka_message_t *m) {
    history *h = arg;
    kd_history_rec *rec = &h->recs[h->n];
    int32_t part;
    const void *key;
    int64_t ts = rd_kafka_message_timestamp(m, NULL), at = forwarded_at(m);

    if (!source_of(m, h->route->from, &part, &rec->src_offset) ||
        part != h->src_partition || (h->since_ms && at >= 0 && at < h->since_ms) ||
        !key_of(h->rc, m, h->route, &key, &rec->key_len) ||
        !trusted(h->rc, m, h->route, key, rec->key_len)) {
        rd_kafka_message_destroy(m);
        return true;
    }
    rec->key = key;
    rec->offset = m->offset;
    rec->timestamp = ts;
    h->held[h->n++] = m;
    return h->n < h->batch || history_flush(h);
}

kd_history_result kd_recovery_history(kd_recovery *rc, size_t route,
                                      int32_t src_partition, int32_t out_partition,
                                      size_t batch, kd_history_fn fn, void *arg) {
    const kd_route *r = &rc->cfg->routes[route];
    history h = {.rc = rc,
                 .route = r,
                 .src_partition = src_partition,
                 .fn = fn,
                 .arg = arg,
                 .batch = batch ? batch : 1};
    char stream[600], text[64];
    uint64_t seq = 0, t0 = kd_mono_us();
    int64_t lo = 0, hi = 0, from, mark = 0;
    bool have_mark = false, ok;

    if (rc->cfg->ttl_ms)
        h.since_ms = (int64_t)kd_wall_ms() - (int64_t)rc->cfg->ttl_ms;
    size_t slen = mark_stream(r, src_partition, out_partition, stream, sizeof(stream));
    if (mark_read(rc, stream, slen, &seq, &mark, &have_mark) != KD_OK) {
        char why[400];

        KD_WARN("handover: reading the mark of %s/%" PRId32 ": %s", r->to, out_partition,
                kd_store_last_error(rc->store, why, sizeof(why)));
        return KD_HISTORY_FAILED;
    }
    if (!scanner(rc) || watermarks(rc->scanner, r->to, out_partition, &lo, &hi) !=
                            RD_KAFKA_RESP_ERR_NO_ERROR)
        return KD_HISTORY_FAILED;
    from = have_mark && mark > lo ? mark : lo;
    bool bounded = hi - from > rc->cfg->scan_max_records;
    if (bounded) {
        KD_WARN("handover: %s/%" PRId32 " holds %" PRId64
                " records past the mark; reading "
                "the newest %" PRId64 " (dedup.scan_max_records)",
                r->to, out_partition, hi - from, rc->cfg->scan_max_records);
        from = hi - rc->cfg->scan_max_records;
    }
    h.held = malloc(h.batch * sizeof(*h.held));
    h.recs = malloc(h.batch * sizeof(*h.recs));
    ok = h.held && h.recs;
    if (ok && from < hi)
        ok = scan_range(rc, r->to, out_partition, from, hi, history_each, &h,
                        &rc->stats.handover_records) &&
             history_flush(&h);
    else if (!ok)
        KD_WARN("handover: out of memory");
    history_drop(&h); /* what a failed scan left */
    free(h.held);
    free(h.recs);
    rc->stats.handovers++;
    rc->stats.handover_micros += kd_mono_us() - t0;
    if (!ok || h.stopped)
        return KD_HISTORY_FAILED;
    KD_INFO("handover: %s/%" PRId32 " read [%" PRId64 ", %" PRId64 ") for %s/%" PRId32
            " in %.3fs",
            r->to, out_partition, from, hi, r->from, src_partition,
            (double)(kd_mono_us() - t0) / 1e6);
    if (!have_mark || mark != hi) {
        int n = snprintf(text, sizeof(text), HANDOVER_MAGIC " %" PRId64 "\n", hi);

        if (kd_store_append(rc->store, stream, slen, seq, text, (size_t)n) != KD_OK)
            KD_WARN("handover: the mark of %s/%" PRId32 " was not saved: the next "
                    "handover reads from further back",
                    r->to, out_partition);
    }
    return bounded ? KD_HISTORY_BOUNDED : KD_HISTORY_DONE;
}

void kd_recovery_set_progress(kd_recovery *rc, void (*fn)(void *arg), void *arg) {
    rc->progress = fn;
    rc->progress_arg = arg;
}

kd_recover_result kd_recovery_find_since(kd_recovery *rc, size_t route,
                                         int32_t out_partition, int64_t from,
                                         uint64_t sent_at_ms, const char *key,
                                         size_t key_len, kd_recover_found *out) {
    const kd_route *r = &rc->cfg->routes[route];
    int64_t lo = 0, hi = 0;
    uint64_t t0 = kd_mono_us();
    unsigned char d[DIGEST_LEN];
    const found *f;
    scan *s = NULL, *grown;

    if (t0 < rc->broker_retry_at)
        return KD_RECOVER_UNKNOWN;
    if (!scanner(rc) || watermarks(rc->scanner, r->to, out_partition, &lo, &hi) !=
                            RD_KAFKA_RESP_ERR_NO_ERROR) {
        rc->broker_retry_at = kd_mono_us() + BROKER_RETRY_US;
        return KD_RECOVER_UNKNOWN;
    }
    for (size_t i = 0; i < rc->nscans && !s; i++)
        if (rc->scans[i].owner == OWN_SCAN && rc->scans[i].route == route &&
            rc->scans[i].partition == out_partition)
            s = &rc->scans[i];
    if (!s) {
        if (!(grown = realloc(rc->scans, (rc->nscans + 1) * sizeof(*grown))))
            return KD_RECOVER_UNKNOWN;
        rc->scans = grown;
        s = &rc->scans[rc->nscans++];
        *s = (scan){.owner = OWN_SCAN,
                    .route = route,
                    .partition = out_partition,
                    .from = from,
                    .end = from};
    } else if (s->from > from || hi - s->from > rc->cfg->scan_max_records) {
        /* starts later than asked, or would outgrow the bound: read again */
        free(s->slots);
        *s = (scan){.owner = OWN_SCAN,
                    .route = route,
                    .partition = out_partition,
                    .from = from,
                    .end = from};
    }
    if (s->end < lo || hi - s->end > rc->cfg->scan_max_records) {
        KD_WARN(
            "recovery: %s/%" PRId32 " from %" PRId64 " to %" PRId64 " cannot be read: %s",
            r->to, out_partition, s->end, hi,
            s->end < lo ? "records were deleted" : "longer than dedup.scan_max_records");
        return KD_RECOVER_UNKNOWN;
    }
    if (s->end < hi) { /* read what was added since (a record may be read twice) */
        bool ok = scan_range(rc, r->to, out_partition, s->end, hi, digest_each,
                             &(digest_scan){rc, s, r, false}, &rc->stats.records);

        rc->stats.scans++;
        rc->stats.micros += kd_mono_us() - t0;
        if (!ok)
            return KD_RECOVER_UNKNOWN;
        s->end = hi;
    }
    digest(key, key_len, d);
    if (!(f = scan_get(s, d)) || f->offset < from || /* before: another claim's */
        !forwarded_since(f->forwarded_at, sent_at_ms))
        return KD_RECOVER_ABSENT;
    out->offset = f->offset;
    out->timestamp = f->timestamp;
    return KD_RECOVER_FOUND;
}

void kd_recovery_forget(kd_recovery *rc) {
    for (size_t i = 0; i < rc->nscans; i++)
        free(rc->scans[i].slots);
    free(rc->scans);
    rc->scans = NULL;
    rc->nscans = 0;
}

void kd_recovery_stats_get(const kd_recovery *rc, kd_recovery_stats *out) {
    *out = rc->stats;
}

void kd_recovery_destroy(kd_recovery *rc) {
    if (!rc)
        return;
    kd_recovery_forget(rc);
    if (rc->scanner) {
        rd_kafka_consumer_close(rc->scanner);
        rd_kafka_destroy(rc->scanner);
    }
    kd_signer_destroy(rc->signers[0]);
    kd_signer_destroy(rc->signers[1]);
    free(rc->brokers);
    free(rc);
}
