/*
 * kdedup - exact recovery of orphaned claims (see recovery.h).
 *
 * A scan reads one downstream partition with a consumer of its own
 * (assigned, never in a group, never committing), in steps: each turn of the
 * pipeline's loop gives all scans together a time budget, and a scan that
 * has not reached its end says "later". A scan fails only when the broker
 * hands it nothing for SCAN_IDLE_MS, never because it is long.
 *
 * The scan of a dead run's partition remembers, for each record of the
 * route's source topic that carries the route's key header, the first 16
 * bytes of the key's SHA-256, the record's offset, timestamp and forwarding
 * time: a 40-byte slot in a table sized once, for the records to read, at
 * most 3/4 full. All tables together stay within dedup.scan_cache_bytes:
 * the least recently used go first, and a scan whose table alone would not
 * fit is not made (its orphans are forwarded again, at least once, and
 * counted). A failed scan is remembered and tried again with backoff.
 *
 * A delivery of this run whose outcome is unknown keeps nothing: the keys
 * asked about are looked for in one read from where the first of them would
 * have landed, and compared whole.
 *
 * The handovers read with a consumer of their own (the historian): every
 * partition being handed over in one assignment, read together, so a
 * replica given 200 partitions waits for one read of them all, not for 200
 * reads one after another. Each handover's records (those of its source
 * partition) go to the caller in batches, unremembered; one batch holds at
 * most pipeline.batch_max records and HISTORY_BATCH_BYTES of all of them.
 */
#include "sidecar/recovery.h"
#include "sidecar/clock.h"
#include "sidecar/forgets.h"
#include "sidecar/headers.h"
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
#define SCAN_IDLE_MS 15000 /* a scan fails when the broker hands it nothing this long */
#define WATERMARK_TIMEOUT_MS 5000
#define RUN_MAGIC "kdedup-run v1\n"
#define HANDOVER_MAGIC "kdedup-handover v1"
#define CLOCK_SLACK_MS 1000 /* a claim and its forwarding: one clock, maybe stepped */
#define BROKER_RETRY_US 1000000
#define SCANS_MAX 1024      /* scans of dead runs remembered (tables or failures) */
#define SCAN_FAILURES_MAX 5 /* failed steps in a row before a scan is given up */
#define SCAN_BACKOFF_MIN_MS 1000
#define SCAN_BACKOFF_MAX_MS 30000
#define HISTORY_FAILURES_MAX 3 /* failed steps in a row before a handover starts over */
/* A handover batch's records kept alive: keys, values and headers (see
 * headers.h: an empty header takes some 90 bytes once parsed). */
#define HISTORY_BATCH_BYTES (4u << 20)

/* A record of a key in a scan's table. */
typedef struct slot {
    unsigned char digest[DIGEST_LEN];
    int64_t pos; /* the record's offset + 1; 0: an empty slot */
    int64_t timestamp;
    int64_t forwarded_at; /* KD_FORWARDED_AT_HEADER; -1 when the record has none */
} slot;

/* A downstream partition the handovers' consumer (the historian) reads. */
typedef struct hreader {
    char *topic; /* owned */
    int32_t partition;
    int64_t pos; /* the next offset it hands; INT64_MAX: to be assigned again */
} hreader;

/* The scan of a dead run's downstream partition: an open-addressing table
 * of key digests, filled in steps. */
typedef struct scan {
    uint64_t owner; /* the dead run */
    size_t route;
    int32_t partition;
    int64_t from, next, end; /* reading [next, end) of [from, end) */
    slot *slots;
    size_t cap, n;
    uint64_t used_ms;     /* mono: the last lookup (the least recent goes first) */
    uint64_t retry_at_ms; /* mono: after a failed step, not before */
    int failures;         /* failed steps in a row */
    bool roomless;        /* waiting for room for its table (scan_room) */
    bool given_up;        /* cannot be made: every lookup is UNKNOWN */
} scan;

struct kd_recovery {
    const kd_config *cfg;
    kd_store *store;
    char *brokers;
    rd_kafka_t *scanner; /* created on first use */
    /* where the scanner is assigned and positioned (a paused step goes on
     * from there); pos_topic NULL when unassigned */
    const char *pos_topic;
    int32_t pos_partition;
    int64_t pos_next;
    uint64_t pos_idle_left; /* us a scan may still wait for its next record */
    scan *scans;
    size_t nscans;
    rd_kafka_t *historian; /* the handovers' reads: created on first use */
    hreader *hreaders;     /* its assignment */
    size_t nhreaders;
    uint64_t hist_idle_left; /* us its reads may still wait for a record */
    kd_recovery_stats stats;
    void (*progress)(void *arg);
    void *progress_arg;
    uint64_t turn_budget_us;  /* reading per turn; 0 = no budget */
    uint64_t turn_end_us;     /* mono: this turn's reading ends; 0 = not begun */
    uint64_t broker_retry_at; /* mono us: own lookups fail fast until then */
    uint64_t boot_id;         /* this run's (kd_recovery_record_run) */
    kd_signer *signers[2];    /* dedup.signing_key, previous_signing_key; or NULL */
};

static void digest(const void *key, size_t len, unsigned char out[DIGEST_LEN]) {
    unsigned char full[SHA256_DIGEST_LENGTH];

    SHA256((const unsigned char *)(len ? key : ""), len, full);
    memcpy(out, full, DIGEST_LEN);
}

static size_t slot_of(const unsigned char *d, size_t cap) {
    uint64_t h;

    memcpy(&h, d, sizeof(h)); /* a digest: already uniform */
    return (size_t)(h % cap);
}

/* Slots for a table of up to `records` keys, at most 3/4 full. */
static size_t table_cap(int64_t records) {
    return (size_t)(records < 1 ? 1 : records) / 3 * 4 + 4;
}

/* Remembers a record of a key: the latest one. An earlier one may be the
 * delivery of an older claim of the key that has since expired; callers
 * tell by when it was forwarded. False when the table is full (it is sized
 * for every record of the scan: it never is). */
static bool scan_add(scan *s, const unsigned char *d, int64_t offset, int64_t ts,
                     int64_t at) {
    size_t j;

    if (s->n + 1 >= s->cap)
        return false;
    for (j = slot_of(d, s->cap); s->slots[j].pos; j = j + 1 < s->cap ? j + 1 : 0)
        if (!memcmp(s->slots[j].digest, d, DIGEST_LEN)) {
            if (offset + 1 > s->slots[j].pos) {
                s->slots[j].pos = offset + 1;
                s->slots[j].timestamp = ts;
                s->slots[j].forwarded_at = at;
            }
            return true;
        }
    memcpy(s->slots[j].digest, d, DIGEST_LEN);
    s->slots[j].pos = offset + 1;
    s->slots[j].timestamp = ts;
    s->slots[j].forwarded_at = at;
    s->n++;
    return true;
}

static const slot *scan_get(const scan *s, const unsigned char *d) {
    if (!s->cap)
        return NULL;
    for (size_t j = slot_of(d, s->cap); s->slots[j].pos; j = j + 1 < s->cap ? j + 1 : 0)
        if (!memcmp(s->slots[j].digest, d, DIGEST_LEN))
            return &s->slots[j];
    return NULL;
}

/* Frees a scan's table. */
static void scan_free_table(kd_recovery *rc, scan *s) {
    rc->stats.cache_bytes -= s->cap * sizeof(slot);
    free(s->slots);
    s->slots = NULL;
    s->cap = s->n = 0;
}

/* Drops scan i. */
static void scan_drop(kd_recovery *rc, size_t i) {
    scan_free_table(rc, &rc->scans[i]);
    rc->scans[i] = rc->scans[--rc->nscans];
    rc->stats.cache_scans = rc->nscans;
}

/* The least recently used scan other than `keep`, or SIZE_MAX. */
static size_t scan_lru(const kd_recovery *rc, const scan *keep, bool with_table) {
    size_t best = SIZE_MAX;

    for (size_t i = 0; i < rc->nscans; i++)
        if (&rc->scans[i] != keep &&
            (!with_table ||
             (rc->scans[i].slots && rc->scans[i].next >= rc->scans[i].end)) &&
            (best == SIZE_MAX || rc->scans[i].used_ms < rc->scans[best].used_ms))
            best = i;
    return best;
}

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

/* Asks the cluster where topic's partitions are led now. librdkafka 2.0.2's
 * rd_kafka_offsets_for_times() does not look for a new leader when the old
 * one answers NOT_LEADER_FOR_PARTITION: without this, a read after a
 * leader moved failed until the next periodic metadata refresh (5 min by
 * default; seen on Apache Kafka after a broker restart). */
static void refresh_leaders(rd_kafka_t *rk, const char *topic) {
    rd_kafka_topic_t *rkt = rd_kafka_topic_new(rk, topic, NULL);
    const struct rd_kafka_metadata *md = NULL;

    if (!rkt)
        return;
    if (rd_kafka_metadata(rk, 0, rkt, &md, WATERMARK_TIMEOUT_MS) ==
        RD_KAFKA_RESP_ERR_NO_ERROR)
        rd_kafka_metadata_destroy(md);
    rd_kafka_topic_destroy(rkt);
}

static rd_kafka_resp_err_t watermarks_once(rd_kafka_t *rk, const char *topic,
                                           int32_t partition, int64_t *lo, int64_t *hi) {
    rd_kafka_resp_err_t err =
        offset_at(rk, topic, partition, RD_KAFKA_OFFSET_BEGINNING, lo);

    return err ? err : offset_at(rk, topic, partition, RD_KAFKA_OFFSET_END, hi);
}

/* True when err says the partition is led elsewhere now: worth asking the
 * cluster where, and then once more. */
static bool leader_moved(rd_kafka_resp_err_t err) {
    return err == RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION ||
           err == RD_KAFKA_RESP_ERR_LEADER_NOT_AVAILABLE ||
           err == RD_KAFKA_RESP_ERR_FENCED_LEADER_EPOCH ||
           err == RD_KAFKA_RESP_ERR_UNKNOWN_LEADER_EPOCH ||
           err == RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART;
}

/* The first and end offsets of topic/partition; after a failure that says
 * the leader moved, once more with the partition's leader looked up afresh.
 * A broker that does not answer (a timeout) is not asked again here: the
 * loop waits for this call, at most WATERMARK_TIMEOUT_MS, and the caller
 * tries again on a later turn (a silent broker held the loop, and with it a
 * SIGTERM, for three timeouts in a row). Not with
 * rd_kafka_query_watermark_offsets(): before librdkafka 2.3 it ignores its
 * timeout while the partition's leader is down (librdkafka #2588). */
static rd_kafka_resp_err_t watermarks(rd_kafka_t *rk, const char *topic,
                                      int32_t partition, int64_t *lo, int64_t *hi) {
    rd_kafka_resp_err_t err = watermarks_once(rk, topic, partition, lo, hi);

    if (!err || !leader_moved(err))
        return err;
    refresh_leaders(rk, topic);
    return watermarks_once(rk, topic, partition, lo, hi);
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

/* A consumer that reads assigned partitions (never in a group, never
 * committing); NULL, logged, when it cannot be made. */
static rd_kafka_t *reader_new(kd_recovery *rc, const char *client_id) {
    static const char *const overrides[][2] = {
        {"enable.auto.commit", "false"}, /* it reads; it never commits */
        {"enable.partition.eof", "true"},
        {"statistics.interval.ms", "0"},
        {"auto.offset.reset", "error"},         /* deleted records: say so */
        {"isolation.level", "read_committed"},  /* no aborted transaction's record */
        {"queued.max.messages.kbytes", "4096"}, /* read ahead: at most 4 MiB... */
        {"fetch.max.bytes", "4194304"},         /* ...and 4 MiB a fetch, however many
                                                 * partitions it reads */
        /* A fetch at a partition's end waits this long for records, and a
         * ListOffsets request on the same connection waits behind it: at
         * the default 500 ms every handover and every read to the end cost
         * half a second (measured on the mock and on Apache Kafka). */
        {"fetch.wait.max.ms", "10"},
    };
    char err[512];
    rd_kafka_conf_t *conf;
    rd_kafka_t *rk;

    if (!(conf = kd_kafka_conf(rc->cfg, KD_CONSUMER, rc->brokers, err, sizeof(err)))) {
        KD_WARN("recovery: %s", err);
        return NULL;
    }
    for (size_t i = 0; i < sizeof(overrides) / sizeof(overrides[0]); i++)
        rd_kafka_conf_set(conf, overrides[i][0], overrides[i][1], NULL, 0);
    rd_kafka_conf_set(conf, "client.id", client_id, NULL, 0);
    if (!(rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, err, sizeof(err)))) {
        rd_kafka_conf_destroy(conf);
        KD_WARN("recovery: %s", err);
    }
    return rk;
}

static rd_kafka_t *scanner(kd_recovery *rc) {
    if (!rc->scanner)
        rc->scanner = reader_new(rc, "kdedup-recovery");
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

/* The key in rkm's header name, if it is one kdedup would claim (not
 * empty, at most max_key_bytes). */
static bool key_in(const kd_recovery *rc, const rd_kafka_message_t *rkm, const char *name,
                   const void **key, size_t *key_len) {
    rd_kafka_headers_t *h = NULL;

    return rd_kafka_message_headers(rkm, &h) == RD_KAFKA_RESP_ERR_NO_ERROR &&
           rd_kafka_header_get(h, 0, name, key, key_len) == RD_KAFKA_RESP_ERR_NO_ERROR &&
           *key && *key_len && *key_len <= (size_t)rc->cfg->max_key_bytes;
}

/* The route's idempotency key of a record kdedup forwarded: its key
 * header, or for a key taken from elsewhere, the KD_KEY_HEADER kdedup
 * wrote. Never for a record forwarded without a claim
 * (KD_UNCLAIMED_HEADER) or a forget record (KD_FORGET_HEADER): neither is a
 * claim's delivery. */
static bool key_of(const kd_recovery *rc, const rd_kafka_message_t *rkm,
                   const kd_route *route, const void **key, size_t *key_len) {
    rd_kafka_headers_t *h = NULL;
    const void *v;
    size_t len;

    return rd_kafka_message_headers(rkm, &h) == RD_KAFKA_RESP_ERR_NO_ERROR &&
           rd_kafka_header_get_last(h, KD_UNCLAIMED_HEADER, &v, &len) ==
               RD_KAFKA_RESP_ERR__NOENT &&
           !kd_forgets_is(rkm) &&
           key_in(rc, rkm, route->key_header ? route->key_header : KD_KEY_HEADER, key,
                  key_len);
}

/* The last value of header name in rkm, or false. */
static bool header(const rd_kafka_message_t *rkm, const char *name, const void **v,
                   size_t *len) {
    rd_kafka_headers_t *h = NULL;

    return rd_kafka_message_headers(rkm, &h) == RD_KAFKA_RESP_ERR_NO_ERROR &&
           rd_kafka_header_get_last(h, name, v, len) == RD_KAFKA_RESP_ERR_NO_ERROR && *v;
}

/* True when kdedup wrote rkm, as far as can be told: with a signing key,
 * its signature (a forget record's when `forget`) verifies under the
 * current or the previous key (else it is counted as foreign); without
 * one, every record is trusted. */
static bool trusted(kd_recovery *rc, const rd_kafka_message_t *rkm, const kd_route *route,
                    const void *key, size_t key_len, bool forget) {
    kd_signed w = {.from = route->from,
                   .to = route->to,
                   .key = key,
                   .key_len = key_len,
                   .forget = forget};
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

/* Takes each record read (and its ownership); false stops the scan. */
typedef bool (*record_fn)(void *arg, rd_kafka_message_t *rkm);

typedef enum range_result {
    RANGE_DONE,   /* reached the end */
    RANGE_PAUSED, /* the turn's budget ran out: go on from *next */
    RANGE_FAILED, /* the broker, or each, failed */
} range_result;

/* True once this turn's reading budget is spent; the first call of a turn
 * starts its clock (the loop may have waited on its consumer since the
 * turn began). */
static bool turn_over(kd_recovery *rc) {
    uint64_t now = kd_mono_us();

    if (!rc->turn_budget_us)
        return false;
    if (!rc->turn_end_us)
        rc->turn_end_us = now + rc->turn_budget_us;
    return now >= rc->turn_end_us;
}

/* Points the scanner at topic/partition from offset `from`, unless a paused
 * step left it there. */
static bool position(kd_recovery *rc, rd_kafka_t *rk, const char *topic,
                     int32_t partition, int64_t from) {
    rd_kafka_topic_partition_list_t *list;
    bool ok;

    if (rc->pos_topic == topic && rc->pos_partition == partition && rc->pos_next == from)
        return true; /* a paused step goes on, its idle clock too */
    rc->pos_idle_left = SCAN_IDLE_MS * 1000ull;
    list = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(list, topic, partition)->offset = from;
    ok = !rd_kafka_assign(rk, list);
    rd_kafka_topic_partition_list_destroy(list);
    rc->pos_topic = ok ? topic : NULL;
    rc->pos_partition = partition;
    rc->pos_next = from;
    return ok;
}

static void unposition(kd_recovery *rc, rd_kafka_t *rk) {
    if (rc->pos_topic)
        rd_kafka_assign(rk, NULL);
    rc->pos_topic = NULL;
}

/* Reads [*next, to) of topic (a string of cfg: compared by address) /
 * partition, handing every record to each; counts them in *records and
 * moves *next past what was read. With `budgeted`, stops when the turn's
 * budget is spent (at once if it already is). */
static range_result scan_range(kd_recovery *rc, const char *topic, int32_t partition,
                               int64_t *next, int64_t to, bool budgeted, record_fn each,
                               void *arg, uint64_t *records) {
    rd_kafka_t *rk = scanner(rc);
    uint64_t idle_until;
    range_result res = RANGE_FAILED;

    if (!rk)
        return RANGE_FAILED;
    if (*next >= to)
        return RANGE_DONE;
    if (budgeted && turn_over(rc))
        return RANGE_PAUSED;
    if (!position(rc, rk, topic, partition, *next))
        return RANGE_FAILED;
    idle_until = kd_mono_us() + rc->pos_idle_left;
    for (;;) {
        rd_kafka_message_t *m;

        if (*next >= to) {
            res = RANGE_DONE;
            break;
        }
        if (budgeted && turn_over(rc)) {
            res = RANGE_PAUSED;
            break;
        }
        if (kd_mono_us() >= idle_until) {
            KD_WARN("scanning %s/%" PRId32 ": nothing read for %ds at offset %" PRId64,
                    topic, partition, SCAN_IDLE_MS / 1000, *next);
            break;
        }
        m = rd_kafka_consumer_poll(rk, 100);
        if (rc->progress)
            rc->progress(rc->progress_arg);
        if (!m)
            continue;
        if (m->err) {
            bool eof = m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF;

            if (!eof)
                KD_WARN("scanning %s/%" PRId32 ": %s", topic, partition,
                        rd_kafka_message_errstr(m));
            if (eof && m->offset > *next) {
                *next = m->offset; /* the end: past any control records */
                idle_until = kd_mono_us() + SCAN_IDLE_MS * 1000ull;
            }
            rd_kafka_message_destroy(m);
            if (!eof)
                break;
            continue;
        }
        if (m->offset < *next) { /* read ahead before a reposition */
            rd_kafka_message_destroy(m);
            continue;
        }
        *next = m->offset + 1; /* gaps (markers, compaction) hold no records */
        idle_until = kd_mono_us() + SCAN_IDLE_MS * 1000ull;
        (*records)++;
        if (m->offset >= to) {
            rd_kafka_message_destroy(m);
            continue;
        }
        if (!each(arg, m))
            break;
    }
    if (res == RANGE_PAUSED) {
        rc->pos_next = *next;
        uint64_t now = kd_mono_us();

        rc->pos_idle_left = idle_until > now ? idle_until - now : 0;
    } else
        unposition(rc, rk);
    return res;
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

/* A scan of a dead run's partition: remembers the digest of each of the
 * route's keys. */
typedef struct digest_scan {
    kd_recovery *rc;
    scan *s;
    const kd_route *route;
} digest_scan;

static bool digest_each(void *arg, rd_kafka_message_t *m) {
    digest_scan *ds = arg;
    int32_t part;
    int64_t off;
    const void *key;
    size_t key_len;
    unsigned char d[DIGEST_LEN];
    bool ok = true;

    if (source_of(m, ds->route->from, &part, &off) &&
        key_of(ds->rc, m, ds->route, &key, &key_len) &&
        trusted(ds->rc, m, ds->route, key, key_len, false)) {
        digest(key, key_len, d);
        ok = scan_add(ds->s, d, m->offset, rd_kafka_message_timestamp(m, NULL),
                      header_forwarded_at(m));
    }
    rd_kafka_message_destroy(m);
    return ok;
}

bool kd_recovery_forwarded_since(int64_t at, uint64_t since_ms) {
    return at < 0 || (uint64_t)at + CLOCK_SLACK_MS >= since_ms;
}

/* Makes s's table when it fits in dedup.scan_cache_bytes beside the others,
 * freeing complete tables (least recently used first; their orphans scan
 * again if they come), never one still being read: two scans that do not
 * fit together take turns instead of undoing each other. False while there
 * is no room (or memory). */
static bool scan_room(kd_recovery *rc, scan *s) {
    size_t cap = table_cap(s->end - s->from), bytes = cap * sizeof(slot), i;

    if (!s->roomless)
        return true;
    while (rc->stats.cache_bytes + bytes > (size_t)rc->cfg->scan_cache_bytes &&
           (i = scan_lru(rc, s, true)) != SIZE_MAX)
        scan_free_table(rc, &rc->scans[i]);
    if (rc->stats.cache_bytes + bytes > (size_t)rc->cfg->scan_cache_bytes ||
        !(s->slots = calloc(cap, sizeof(slot))))
        return false;
    s->cap = cap;
    s->roomless = false;
    rc->stats.cache_bytes += bytes;
    return true;
}

/* A new scan of (owner, route, partition), its table allocated; given up
 * (no table) when it cannot be made. NULL when out of memory. */
static scan *scan_start(kd_recovery *rc, uint64_t owner, size_t route,
                        int32_t partition) {
    const kd_route *r = &rc->cfg->routes[route];
    char stream[32];
    void *payload = NULL;
    size_t plen = 0, bytes;
    uint64_t seq;
    bool have = false, ok;
    int64_t start = 0, lo = 0, hi = 0;
    scan *s, *grown;

    while (rc->nscans >= SCANS_MAX)
        scan_drop(rc, scan_lru(rc, NULL, false));
    if (!(grown = realloc(rc->scans, (rc->nscans + 1) * sizeof(*grown))))
        return NULL;
    rc->scans = grown;
    s = &rc->scans[rc->nscans++];
    rc->stats.cache_scans = rc->nscans;
    *s = (scan){.owner = owner,
                .route = route,
                .partition = partition,
                .used_ms = kd_mono_ms(),
                .given_up = true};
    if (owner == 0)
        return s; /* no run has id 0: a claim without an owner has no record */
    if (kd_store_read_last(rc->store, stream,
                           kd_recovery_run_stream(owner, stream, sizeof(stream)), &seq,
                           &payload, &plen, &have) != KD_OK ||
        !have) {
        KD_WARN("recovery: no run record for run %016" PRIx64 ": its claims are "
                "forwarded again",
                owner);
        free(payload);
        return s;
    }
    ok = kd_recovery_run_lookup(payload, plen, r->to, partition, &start);
    free(payload);
    if (!ok) {
        KD_WARN("recovery: run %016" PRIx64 " recorded no start offset for %s/%" PRId32
                ": its claims there are forwarded again",
                owner, r->to, partition);
        return s;
    }
    if (!scanner(rc) || watermarks(rc->scanner, r->to, partition, &lo, &hi) !=
                            RD_KAFKA_RESP_ERR_NO_ERROR) {
        s->given_up = false; /* the broker: tried again with backoff */
        s->failures = 1;
        s->from = s->next = s->end = -1;
        s->retry_at_ms = kd_mono_ms() + SCAN_BACKOFF_MIN_MS;
        return s;
    }
    bytes = table_cap(hi - start) * sizeof(slot);
    if (start < lo || hi - start > rc->cfg->scan_max_records ||
        bytes > (size_t)rc->cfg->scan_cache_bytes) {
        KD_WARN("recovery: %s/%" PRId32 " from %" PRId64 " to %" PRId64 " (first %" PRId64
                ") cannot be scanned: %s; the orphans there are forwarded again",
                r->to, partition, start, hi, lo,
                start < lo ? "records were deleted"
                : hi - start > rc->cfg->scan_max_records
                    ? "more than dedup.scan_max_records"
                    : "its key table would not fit "
                      "in dedup.scan_cache_bytes");
        return s;
    }
    s->given_up = false;
    s->from = s->next = start;
    s->end = hi;
    s->roomless = true; /* its table is made when there is room (scan_room) */
    scan_room(rc, s);
    return s;
}

/* The scan of (owner, route, partition), read a step further; *res says
 * when it is not complete (LATER) or cannot be (UNKNOWN). */
static scan *scan_for(kd_recovery *rc, uint64_t owner, size_t route, int32_t partition,
                      kd_recover_result *res) {
    const kd_route *r = &rc->cfg->routes[route];
    uint64_t now = kd_mono_ms(), t0;
    scan *s = NULL;
    range_result step;

    for (size_t i = 0; i < rc->nscans && !s; i++)
        if (rc->scans[i].owner == owner && rc->scans[i].route == route &&
            rc->scans[i].partition == partition)
            s = &rc->scans[i];
    if (s && !s->given_up && !s->slots && !s->roomless && s->from >= 0) {
        /* its table went to a more recent scan: made again */
        scan_drop(rc, (size_t)(s - rc->scans));
        s = NULL;
    }
    if (!s && !(s = scan_start(rc, owner, route, partition))) {
        *res = KD_RECOVER_UNKNOWN;
        return NULL;
    }
    s->used_ms = now;
    *res = KD_RECOVER_UNKNOWN;
    if (s->given_up)
        return NULL;
    *res = KD_RECOVER_LATER;
    if (now < s->retry_at_ms)
        return NULL;
    if (owner == rc->boot_id && s->from >= 0 && s->next >= s->end) {
        /* this run's own deliveries go on landing: read what was added */
        int64_t lo = 0, hi = 0;

        if (watermarks(rc->scanner, r->to, partition, &lo, &hi) !=
            RD_KAFKA_RESP_ERR_NO_ERROR) {
            s->failures++;
            goto failed;
        }
        if (hi > s->end && table_cap(hi - s->from) > s->cap) {
            scan_drop(rc, (size_t)(s - rc->scans)); /* outgrew its table: made anew */
            if (!(s = scan_start(rc, owner, route, partition)) || s->given_up) {
                *res = KD_RECOVER_UNKNOWN;
                return NULL;
            }
        } else if (hi > s->end) {
            s->end = hi;
        }
    }
    if (s->from < 0) { /* the broker did not answer when it was made */
        size_t i = (size_t)(s - rc->scans);
        int failures = s->failures;

        scan_drop(rc, i);
        if (!(s = scan_start(rc, owner, route, partition)))
            return NULL;
        if (s->from < 0) {
            s->failures = failures + 1;
            goto failed;
        }
    }
    if (s->next >= s->end) {
        *res = KD_RECOVER_FOUND; /* complete: the caller looks the key up */
        return s;
    }
    if (!scan_room(rc, s))
        return NULL; /* LATER: another scan is being read */
    t0 = kd_mono_us();
    step = scan_range(rc, r->to, partition, &s->next, s->end, true, digest_each,
                      &(digest_scan){rc, s, r}, &rc->stats.records);
    rc->stats.scans++;
    rc->stats.micros += kd_mono_us() - t0;
    if (step == RANGE_PAUSED)
        return NULL;
    if (step == RANGE_DONE) {
        KD_INFO("recovery: scanned %s/%" PRId32 " [%" PRId64 ", %" PRId64 "): %zu keys",
                r->to, partition, s->from, s->end, s->n);
        s->failures = 0;
        *res = KD_RECOVER_FOUND;
        return s;
    }
    s->failures++;
failed:
    if (s->failures >= SCAN_FAILURES_MAX) {
        KD_WARN("recovery: the scan of %s/%" PRId32 " failed %d times in a row: its "
                "orphans are forwarded again",
                r->to, partition, s->failures);
        scan_free_table(rc, s);
        s->given_up = true;
        *res = KD_RECOVER_UNKNOWN;
        return NULL;
    }
    uint64_t backoff = SCAN_BACKOFF_MIN_MS << (s->failures - 1);
    s->retry_at_ms =
        kd_mono_ms() + (backoff < SCAN_BACKOFF_MAX_MS ? backoff : SCAN_BACKOFF_MAX_MS);
    KD_WARN("recovery: the scan of %s/%" PRId32 " failed at offset %" PRId64
            "; again in %llums",
            r->to, partition, s->next,
            (unsigned long long)(s->retry_at_ms - kd_mono_ms()));
    return NULL;
}

kd_recover_result kd_recovery_find(kd_recovery *rc, uint64_t owner, size_t route,
                                   int32_t out_partition, const char *key, size_t key_len,
                                   uint64_t claimed_at_ms, kd_recover_found *out) {
    kd_recover_result res;
    scan *s = scan_for(rc, owner, route, out_partition, &res);
    unsigned char d[DIGEST_LEN];
    const slot *f;

    if (!s)
        return res;
    digest(key, key_len, d);
    if (!(f = scan_get(s, d)))
        return KD_RECOVER_ABSENT;
    /* Forwarded before the claim: the delivery of an older, expired claim
     * of the key, not of this one (records without the header: trusted). */
    if (!kd_recovery_forwarded_since(f->forwarded_at, claimed_at_ms))
        return KD_RECOVER_ABSENT;
    out->offset = f->pos - 1;
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

/* When kdedup forwarded rkm, or the record's timestamp for records
 * forwarded before the header existed. */
static int64_t forwarded_at(const rd_kafka_message_t *rkm) {
    int64_t at = header_forwarded_at(rkm);

    return at >= 0 ? at : rd_kafka_message_timestamp(rkm, NULL);
}

/* A handover in a read of several together (kd_recovery_histories). */
typedef struct hjob {
    kd_history_job *job;
    const kd_route *route;
    size_t next_job; /* the next job reading the same partition, or SIZE_MAX */
    bool active;     /* started, its window not read to the end */
    bool failed;
} hjob;

/* One kd_recovery_histories() call: its jobs, and the batch of records
 * they hold (of every job, at most `batch` and HISTORY_BATCH_BYTES). */
typedef struct histories {
    kd_recovery *rc;
    hjob *jobs;
    size_t n, nactive;
    size_t *first_job; /* per reader (rc->hreaders): its first job, or SIZE_MAX */
    int64_t since_ms;  /* older records have expired: skipped */
    size_t batch;
    rd_kafka_message_t **held; /* the batch's records, alive while fn reads them */
    kd_history_rec *recs;
    size_t *owner;          /* held[i]'s job */
    kd_history_rec *sorted; /* the batch, job by job, in order */
    size_t *count;          /* per job, then where its records start in sorted */
    size_t nheld, bytes;
} histories;

/* The handovers' consumer: reads every partition being handed over at
 * once (one assignment), apart from the scanner's dead-run scans. */
static rd_kafka_t *historian(kd_recovery *rc) {
    if (!rc->historian)
        rc->historian = reader_new(rc, "kdedup-handover");
    return rc->historian;
}

static void hreaders_free(hreader *rs, size_t n) {
    for (size_t i = 0; i < n; i++)
        free(rs[i].topic);
    free(rs);
}

static size_t hreader_find(const hreader *rs, size_t n, const char *topic,
                           int32_t partition) {
    for (size_t i = 0; i < n; i++)
        if (rs[i].partition == partition && !strcmp(rs[i].topic, topic))
            return i;
    return SIZE_MAX;
}

/* Stops the historian reading (nothing is being handed over). */
static void historian_unassign(kd_recovery *rc) {
    if (rc->historian && rc->nhreaders)
        rd_kafka_assign(rc->historian, NULL);
    hreaders_free(rc->hreaders, rc->nhreaders);
    rc->hreaders = NULL;
    rc->nhreaders = 0;
}

/* The partitions the active jobs read, each from the first offset one of
 * them still needs (malloc()ed, *n long); NULL when out of memory. */
static hreader *hist_needed(const histories *h, size_t *n) {
    hreader *need = calloc(h->n ? h->n : 1, sizeof(*need));

    *n = 0;
    for (size_t j = 0; need && j < h->n; j++) {
        const hjob *hj = &h->jobs[j];
        size_t r;

        if (!hj->active)
            continue;
        r = hreader_find(need, *n, hj->route->to, hj->job->out_partition);
        if (r == SIZE_MAX) {
            if (!(need[*n].topic = strdup(hj->route->to))) {
                hreaders_free(need, *n);
                return NULL;
            }
            need[*n].partition = hj->job->out_partition;
            need[(*n)++].pos = hj->job->cur->next;
        } else if (hj->job->cur->next < need[r].pos) {
            need[r].pos = hj->job->cur->next;
        }
    }
    return need;
}

/* Assigns the historian every partition the active jobs read, unless its
 * assignment covers them already (then what it read ahead is kept), and
 * links each job to its partition's reader. False when it cannot. */
static bool hist_assign(kd_recovery *rc, histories *h) {
    size_t nneed, r;
    hreader *need = hist_needed(h, &nneed);
    bool covered = true;

    if (!need)
        return false;
    for (size_t i = 0; i < nneed && covered; i++) {
        r = hreader_find(rc->hreaders, rc->nhreaders, need[i].topic, need[i].partition);
        covered = r != SIZE_MAX && rc->hreaders[r].pos <= need[i].pos;
    }
    if (covered) {
        hreaders_free(need, nneed);
    } else {
        rd_kafka_topic_partition_list_t *list =
            rd_kafka_topic_partition_list_new((int)(nneed ? nneed : 1));

        for (size_t i = 0; i < nneed; i++)
            rd_kafka_topic_partition_list_add(list, need[i].topic, need[i].partition)
                ->offset = need[i].pos;
        rd_kafka_resp_err_t err = rd_kafka_assign(rc->historian, list);
        rd_kafka_topic_partition_list_destroy(list);
        hreaders_free(rc->hreaders, rc->nhreaders); /* the assignment replaced */
        rc->hreaders = NULL;
        rc->nhreaders = 0;
        if (err) {
            KD_WARN("handover: assigning %zu partition(s): %s", nneed,
                    rd_kafka_err2str(err));
            hreaders_free(need, nneed);
            return false;
        }
        rc->hreaders = need;
        rc->nhreaders = nneed;
        rc->hist_idle_left = SCAN_IDLE_MS * 1000ull;
    }
    if (!(h->first_job = malloc((rc->nhreaders ? rc->nhreaders : 1) * sizeof(size_t))))
        return false;
    for (size_t i = 0; i < rc->nhreaders; i++)
        h->first_job[i] = SIZE_MAX;
    for (size_t j = h->n; j-- > 0;) {
        hjob *hj = &h->jobs[j];

        if (!hj->active)
            continue;
        r = hreader_find(rc->hreaders, rc->nhreaders, hj->route->to,
                         hj->job->out_partition);
        hj->next_job = h->first_job[r];
        h->first_job[r] = j;
    }
    return true;
}

/* Job j has failed: it stops reading; its cursor goes back (hist_finish). */
static void hist_fail(histories *h, size_t j) {
    if (h->jobs[j].active)
        h->nactive--;
    h->jobs[j].active = false;
    h->jobs[j].failed = true;
}

/* Passes each job its records of the batch, in their order, then drops
 * them; once a job's fn took them, every record it was handed is taken. */
static void hist_flush(histories *h) {
    size_t at = 0;

    for (size_t j = 0; j < h->n; j++)
        h->count[j] = 0;
    for (size_t i = 0; i < h->nheld; i++)
        h->count[h->owner[i]]++;
    for (size_t j = 0; j < h->n; j++) {
        size_t c = h->count[j];

        h->count[j] = at;
        at += c;
    }
    for (size_t i = 0; i < h->nheld; i++)
        h->sorted[h->count[h->owner[i]]++] = h->recs[i];
    for (size_t j = 0, from = 0; j < h->n; from = h->count[j++]) {
        kd_history_job *job = h->jobs[j].job;

        if (h->count[j] > from && !h->jobs[j].failed &&
            !job->fn(job->arg, h->sorted + from, h->count[j] - from))
            hist_fail(h, j);
    }
    for (size_t i = 0; i < h->nheld; i++)
        rd_kafka_message_destroy(h->held[i]);
    h->nheld = 0;
    h->bytes = 0;
    for (size_t j = 0; j < h->n; j++)
        if (!h->jobs[j].failed && h->jobs[j].job->cur->started)
            h->jobs[j].job->cur->taken = h->jobs[j].job->cur->next;
}

/* The key of a record of the history: a delivery's (key_of), or a forget
 * record's (which must say when it was made); *forget says which. */
static bool history_key(kd_recovery *rc, const kd_route *route,
                        const rd_kafka_message_t *m, const void **key, size_t *key_len,
                        bool *forget) {
    if ((*forget = kd_forgets_is(m)))
        return header_forwarded_at(m) >= 0 && key_in(rc, m, KD_KEY_HEADER, key, key_len);
    return key_of(rc, m, route, key, key_len);
}

/* Holds m for job j when it is one of j's records: put downstream from j's
 * source partition within dedup.ttl, with a key, by kdedup (a delivery or
 * a forget record). */
static bool hist_take(histories *h, size_t j, rd_kafka_message_t *m) {
    const hjob *hj = &h->jobs[j];
    kd_history_rec *rec = &h->recs[h->nheld];
    int32_t part;
    const void *key;
    int64_t at = forwarded_at(m);

    if (!source_of(m, hj->route->from, &part, &rec->src_offset) ||
        part != hj->job->src_partition || (h->since_ms && at >= 0 && at < h->since_ms) ||
        !history_key(h->rc, hj->route, m, &key, &rec->key_len, &rec->forget) ||
        !trusted(h->rc, m, hj->route, key, rec->key_len, rec->forget))
        return false;
    rec->key = key;
    rec->offset = m->offset;
    rec->timestamp = rd_kafka_message_timestamp(m, NULL);
    rec->forwarded_at = at;
    rec->stamped = header_forwarded_at(m) >= 0;
    h->held[h->nheld] = m;
    h->owner[h->nheld++] = j;
    h->bytes += kd_headers_record_memory(m);
    return true;
}

/* Moves job j past offset `past` (exclusive); it is done at its end. */
static void hist_advance(histories *h, size_t j, int64_t past) {
    kd_history_cursor *cur = h->jobs[j].job->cur;

    if (past > cur->next)
        cur->next = past;
    if (h->jobs[j].active && cur->next >= cur->end) {
        h->jobs[j].active = false;
        h->nactive--;
    }
}

/* Hands record m of reader r to the jobs reading r. */
static void hist_record(histories *h, size_t r, rd_kafka_message_t *m) {
    bool held = false;

    h->rc->hreaders[r].pos = m->offset + 1;
    for (size_t j = h->first_job[r], counted = 0; j != SIZE_MAX;
         j = h->jobs[j].next_job) {
        if (!h->jobs[j].active || m->offset < h->jobs[j].job->cur->next)
            continue; /* read ahead before a reposition, or taken already */
        if (m->offset < h->jobs[j].job->cur->end && !counted++)
            h->rc->stats.handover_records++; /* in a window being read */
        if (!held && m->offset < h->jobs[j].job->cur->end)
            held = hist_take(h, j, m);
        hist_advance(h, j, m->offset + 1);
    }
    if (!held)
        rd_kafka_message_destroy(m);
    else if (h->nheld >= h->batch || h->bytes >= HISTORY_BATCH_BYTES)
        hist_flush(h);
}

/* Reader r's partition cannot be read now: its jobs fail, and it is
 * assigned afresh when read again. */
static void hist_reader_failed(histories *h, size_t r) {
    h->rc->hreaders[r].pos = INT64_MAX;
    for (size_t j = h->first_job[r]; j != SIZE_MAX; j = h->jobs[j].next_job)
        if (h->jobs[j].active)
            hist_fail(h, j);
}

/* Takes an error event of reader r: the end of its partition moves its
 * jobs there; any other error fails them. */
static void hist_event(histories *h, size_t r, const rd_kafka_message_t *m) {
    if (m->err != RD_KAFKA_RESP_ERR__PARTITION_EOF) {
        KD_WARN("handover: reading %s/%" PRId32 ": %s", h->rc->hreaders[r].topic,
                h->rc->hreaders[r].partition, rd_kafka_message_errstr(m));
        hist_reader_failed(h, r);
        return;
    }
    if (m->offset > h->rc->hreaders[r].pos)
        h->rc->hreaders[r].pos = m->offset; /* the end: past any control records */
    for (size_t j = h->first_job[r]; j != SIZE_MAX; j = h->jobs[j].next_job)
        if (h->jobs[j].active)
            hist_advance(h, j, m->offset);
}

/* Reads the active jobs' partitions together until every one reached its
 * end, the turn's budget is spent, or the broker hands nothing for
 * SCAN_IDLE_MS (the jobs still reading then fail). */
static void hist_read(histories *h) {
    kd_recovery *rc = h->rc;
    uint64_t idle_until = kd_mono_us() + rc->hist_idle_left;
    size_t last = 0;

    while (h->nactive && !turn_over(rc)) {
        rd_kafka_message_t *m;

        if (kd_mono_us() >= idle_until) {
            KD_WARN("handover: nothing read for %ds from %zu partition(s)",
                    SCAN_IDLE_MS / 1000, h->nactive);
            for (size_t r = 0; r < rc->nhreaders; r++)
                hist_reader_failed(h, r);
            break;
        }
        m = rd_kafka_consumer_poll(rc->historian, 100);
        if (rc->progress)
            rc->progress(rc->progress_arg);
        if (!m)
            continue;
        if (!m->rkt || last >= rc->nhreaders ||
            rc->hreaders[last].partition != m->partition ||
            strcmp(rc->hreaders[last].topic, rd_kafka_topic_name(m->rkt)))
            last = m->rkt ? hreader_find(rc->hreaders, rc->nhreaders,
                                         rd_kafka_topic_name(m->rkt), m->partition)
                          : SIZE_MAX;
        if (last == SIZE_MAX) { /* an error of the client, or of a partition
                                 * no longer read (its end, from before a new
                                 * assignment, says nothing) */
            if (m->err && m->err != RD_KAFKA_RESP_ERR__PARTITION_EOF)
                KD_WARN("handover: %s", rd_kafka_message_errstr(m));
            rd_kafka_message_destroy(m);
            last = 0;
            continue;
        }
        idle_until = kd_mono_us() + SCAN_IDLE_MS * 1000ull;
        if (m->err) {
            hist_event(h, last, m);
            rd_kafka_message_destroy(m);
        } else {
            hist_record(h, last, m);
        }
    }
    uint64_t now = kd_mono_us();

    rc->hist_idle_left = idle_until > now ? idle_until - now : 0;
}

/* Where the handover of (r, src, out) begins and ends, given the mark and
 * the partition's first (lo) and end (hi) offsets. */
static void hist_window(kd_recovery *rc, const kd_route *r, int32_t out_partition,
                        int64_t lo, int64_t hi, kd_history_cursor *cur) {
    cur->from = cur->have_mark && cur->mark > lo ? cur->mark : lo;
    cur->bounded = hi - cur->from > rc->cfg->scan_max_records;
    if (cur->bounded) {
        KD_WARN("handover: %s/%" PRId32 " holds %" PRId64
                " records past the mark; reading "
                "the newest %" PRId64 " (dedup.scan_max_records)",
                r->to, out_partition, hi - cur->from, rc->cfg->scan_max_records);
        cur->from = hi - rc->cfg->scan_max_records;
    }
    cur->next = cur->taken = cur->from;
    cur->end = hi;
    cur->started = true;
}

/* Asks for the offsets at `at` (RD_KAFKA_OFFSET_BEGINNING or _END) of every
 * partition in list, in one request; once more, with the partitions'
 * leaders looked up afresh, only when a leader moved: a broker that does
 * not answer is not asked twice (the loop, and a SIGTERM, wait on it). */
static rd_kafka_resp_err_t
offsets_at_many(rd_kafka_t *rk, rd_kafka_topic_partition_list_t *list, int64_t at) {
    rd_kafka_resp_err_t err = RD_KAFKA_RESP_ERR_NO_ERROR;

    for (int attempt = 0; attempt < 2; attempt++) {
        bool moved;

        for (int i = 0; i < list->cnt; i++)
            list->elems[i].offset = at;
        err = rd_kafka_offsets_for_times(rk, list, WATERMARK_TIMEOUT_MS);
        moved = leader_moved(err);
        for (int i = 0; !err && i < list->cnt; i++)
            moved |= leader_moved(list->elems[i].err);
        if (!moved)
            return err; /* answered, or failed for a reason asking again does not cure */
        for (int i = 0; i < list->cnt; i++)
            if (!i || strcmp(list->elems[i].topic, list->elems[i - 1].topic))
                refresh_leaders(rk, list->elems[i].topic);
    }
    return err;
}

/* The offset of topic/partition in list, or its error. */
static rd_kafka_resp_err_t offset_in(rd_kafka_topic_partition_list_t *list,
                                     const char *topic, int32_t partition, int64_t *out) {
    rd_kafka_topic_partition_t *e =
        rd_kafka_topic_partition_list_find(list, topic, partition);

    if (!e)
        return RD_KAFKA_RESP_ERR__UNKNOWN_PARTITION;
    *out = e->offset;
    return e->err;
}

/* Starts the jobs not started (or starting over): reads their marks, then
 * the first and end offsets of all their partitions in two requests. A
 * job that cannot start fails. */
static void hist_start(histories *h) {
    kd_recovery *rc = h->rc;
    rd_kafka_topic_partition_list_t *lo = rd_kafka_topic_partition_list_new(1),
                                    *hi = rd_kafka_topic_partition_list_new(1);
    rd_kafka_resp_err_t err = RD_KAFKA_RESP_ERR_NO_ERROR;
    char stream[600];

    for (size_t j = 0; j < h->n; j++) {
        kd_history_job *job = h->jobs[j].job;
        kd_history_cursor *cur = job->cur;

        if (cur->started && cur->failures >= HISTORY_FAILURES_MAX)
            cur->started = false; /* e.g. records deleted under it: from the mark again */
        if (cur->started)
            continue;
        size_t slen = mark_stream(h->jobs[j].route, job->src_partition,
                                  job->out_partition, stream, sizeof(stream));
        *cur = (kd_history_cursor){.t0_us = kd_mono_us()};
        if (mark_read(rc, stream, slen, &cur->mark_seq, &cur->mark, &cur->have_mark) !=
            KD_OK) {
            char why[400];

            KD_WARN("handover: reading the mark of %s/%" PRId32 ": %s",
                    h->jobs[j].route->to, job->out_partition,
                    kd_store_last_error(rc->store, why, sizeof(why)));
            h->jobs[j].failed = true;
            continue;
        }
        if (!rd_kafka_topic_partition_list_find(lo, h->jobs[j].route->to,
                                                job->out_partition)) {
            rd_kafka_topic_partition_list_add(lo, h->jobs[j].route->to,
                                              job->out_partition);
            rd_kafka_topic_partition_list_add(hi, h->jobs[j].route->to,
                                              job->out_partition);
        }
    }
    if (lo->cnt &&
        (!historian(rc) ||
         (err = offsets_at_many(rc->historian, lo, RD_KAFKA_OFFSET_BEGINNING)) ||
         (err = offsets_at_many(rc->historian, hi, RD_KAFKA_OFFSET_END))))
        KD_WARN("handover: the first and end offsets of %d partition(s): %s", lo->cnt,
                rd_kafka_err2str(err ? err : RD_KAFKA_RESP_ERR__FAIL));
    for (size_t j = 0; j < h->n; j++) {
        kd_history_job *job = h->jobs[j].job;
        const char *to = h->jobs[j].route->to;
        int64_t first = 0, end = 0;
        rd_kafka_resp_err_t e = err;

        if (job->cur->started || h->jobs[j].failed)
            continue;
        if (!e && !rc->historian)
            e = RD_KAFKA_RESP_ERR__FAIL;
        if (!e && !(e = offset_in(lo, to, job->out_partition, &first)))
            e = offset_in(hi, to, job->out_partition, &end);
        if (e) {
            if (!err)
                KD_WARN("handover: the first and end offsets of %s/%" PRId32 ": %s", to,
                        job->out_partition, rd_kafka_err2str(e));
            h->jobs[j].failed = true;
            continue;
        }
        hist_window(rc, h->jobs[j].route, job->out_partition, first, end, job->cur);
    }
    rd_kafka_topic_partition_list_destroy(lo);
    rd_kafka_topic_partition_list_destroy(hi);
}

/* Settles job j after the read: a failed one goes back to what its fn
 * took; one read to its end saves its mark. */
static void hist_finish(histories *h, size_t j) {
    kd_recovery *rc = h->rc;
    kd_history_job *job = h->jobs[j].job;
    kd_history_cursor *cur = job->cur;
    const kd_route *r = h->jobs[j].route;
    char stream[600], text[64];

    if (h->jobs[j].failed) {
        if (cur->started) {
            cur->next = cur->taken; /* what fn did not take is read again */
            cur->failures++;
        }
        job->result = KD_HISTORY_FAILED;
        return;
    }
    cur->failures = 0;
    if (cur->next < cur->end) {
        job->result = KD_HISTORY_MORE;
        return;
    }
    KD_INFO("handover: %s/%" PRId32 " read [%" PRId64 ", %" PRId64 ") for %s/%" PRId32
            " in %.3fs",
            r->to, job->out_partition, cur->from, cur->end, r->from, job->src_partition,
            (double)(kd_mono_us() - cur->t0_us) / 1e6);
    if (!cur->have_mark || cur->mark != cur->end) {
        size_t slen = mark_stream(r, job->src_partition, job->out_partition, stream,
                                  sizeof(stream));
        int n = snprintf(text, sizeof(text), HANDOVER_MAGIC " %" PRId64 "\n", cur->end);

        if (kd_store_append(rc->store, stream, slen, cur->mark_seq, text, (size_t)n) !=
            KD_OK)
            KD_WARN("handover: the mark of %s/%" PRId32 " was not saved: the next "
                    "handover reads from further back",
                    r->to, job->out_partition);
    }
    job->result = cur->bounded ? KD_HISTORY_BOUNDED : KD_HISTORY_DONE;
}

/* Allocates h's arrays for n jobs and batches of `batch`; false when out
 * of memory. */
static bool hist_alloc(histories *h, kd_history_job *jobs, size_t n) {
    h->jobs = calloc(n, sizeof(*h->jobs));
    h->count = calloc(n, sizeof(*h->count));
    h->held = malloc(h->batch * sizeof(*h->held));
    h->recs = malloc(h->batch * sizeof(*h->recs));
    h->sorted = malloc(h->batch * sizeof(*h->sorted));
    h->owner = malloc(h->batch * sizeof(*h->owner));
    if (!h->jobs || !h->count || !h->held || !h->recs || !h->sorted || !h->owner)
        return false;
    for (size_t j = 0; j < n; j++)
        h->jobs[j] = (hjob){.job = &jobs[j], .route = &h->rc->cfg->routes[jobs[j].route]};
    return true;
}

static void hist_free(histories *h) {
    free(h->jobs);
    free(h->count);
    free(h->held);
    free(h->recs);
    free(h->sorted);
    free(h->owner);
    free(h->first_job);
}

void kd_recovery_histories(kd_recovery *rc, kd_history_job *jobs, size_t n,
                           size_t batch) {
    histories h = {.rc = rc, .n = n, .batch = batch ? batch : 1};
    uint64_t t0 = kd_mono_us();

    if (!n)
        return;
    if (rc->cfg->ttl_ms)
        h.since_ms = (int64_t)kd_wall_ms() - (int64_t)rc->cfg->ttl_ms;
    if (!hist_alloc(&h, jobs, n)) {
        KD_WARN("handover: out of memory");
        for (size_t j = 0; j < n; j++)
            jobs[j].result = KD_HISTORY_FAILED;
        hist_free(&h);
        return;
    }
    hist_start(&h);
    for (size_t j = 0; j < n; j++)
        if (!h.jobs[j].failed && jobs[j].cur->next < jobs[j].cur->end) {
            h.jobs[j].active = true;
            h.nactive++;
        }
    if (h.nactive && !hist_assign(rc, &h)) {
        for (size_t j = 0; j < n; j++)
            if (h.jobs[j].active)
                hist_fail(&h, j);
    }
    if (h.nactive)
        hist_read(&h);
    hist_flush(&h);
    for (size_t j = 0; j < n; j++)
        hist_finish(&h, j);
    if (!h.nactive)
        historian_unassign(rc); /* nothing left to read: it stops fetching */
    hist_free(&h);
    rc->stats.handovers += n;
    rc->stats.handover_micros += kd_mono_us() - t0;
}

kd_history_result kd_recovery_history(kd_recovery *rc, size_t route,
                                      int32_t src_partition, int32_t out_partition,
                                      size_t batch, kd_history_fn fn, void *arg,
                                      kd_history_cursor *cur) {
    kd_history_job job = {.route = route,
                          .src_partition = src_partition,
                          .out_partition = out_partition,
                          .fn = fn,
                          .arg = arg,
                          .cur = cur};

    kd_recovery_histories(rc, &job, 1, batch);
    return job.result;
}

void kd_recovery_set_progress(kd_recovery *rc, void (*fn)(void *arg), void *arg) {
    rc->progress = fn;
    rc->progress_arg = arg;
}

void kd_recovery_begin_turn(kd_recovery *rc, uint64_t budget_ms) {
    rc->turn_budget_us = budget_ms * 1000u;
    rc->turn_end_us = 0;
}

/*
 * Deliveries of this run whose outcome is unknown.
 */

/* A read for asked keys: an open-addressing table of indexes into asks. */
typedef struct ask_scan {
    kd_recovery *rc;
    const kd_route *route;
    kd_recover_ask *asks;
    size_t n;
    size_t *table; /* ask index + 1; 0 empty */
    size_t cap;
} ask_scan;

static bool ask_each(void *arg, rd_kafka_message_t *m) {
    ask_scan *as = arg;
    int32_t part;
    int64_t off, at;
    const void *key;
    size_t key_len;
    unsigned char d[DIGEST_LEN];

    if (source_of(m, as->route->from, &part, &off) &&
        key_of(as->rc, m, as->route, &key, &key_len) &&
        trusted(as->rc, m, as->route, key, key_len, false)) {
        digest(key, key_len, d);
        at = header_forwarded_at(m);
        for (size_t j = slot_of(d, as->cap); as->table[j]; j = (j + 1) % as->cap) {
            kd_recover_ask *a = &as->asks[as->table[j] - 1];

            /* the first record of the key past where it could land, sent
             * since: that delivery (the key compared whole) */
            if (a->result != KD_RECOVER_FOUND && a->key_len == key_len &&
                !memcmp(a->key, key, key_len) && m->offset >= a->from &&
                kd_recovery_forwarded_since(at, a->sent_at_ms)) {
                a->result = KD_RECOVER_FOUND;
                a->found.offset = m->offset;
                a->found.timestamp = rd_kafka_message_timestamp(m, NULL);
            }
        }
    }
    rd_kafka_message_destroy(m);
    return true;
}

void kd_recovery_find_since_many(kd_recovery *rc, size_t route, int32_t out_partition,
                                 kd_recover_ask *asks, size_t n) {
    const kd_route *r = &rc->cfg->routes[route];
    int64_t lo = 0, hi = 0, from = INT64_MAX;
    uint64_t t0 = kd_mono_us();
    ask_scan as = {.rc = rc, .route = r, .asks = asks, .n = n, .cap = n * 2 + 1};
    range_result res;

    for (size_t i = 0; i < n; i++) {
        asks[i].result = KD_RECOVER_UNKNOWN;
        if (asks[i].from < from)
            from = asks[i].from;
    }
    if (!n || t0 < rc->broker_retry_at)
        return;
    if (!scanner(rc) || watermarks(rc->scanner, r->to, out_partition, &lo, &hi) !=
                            RD_KAFKA_RESP_ERR_NO_ERROR) {
        rc->broker_retry_at = kd_mono_us() + BROKER_RETRY_US;
        return;
    }
    if (from < lo || hi - from > rc->cfg->scan_max_records) {
        KD_WARN(
            "recovery: %s/%" PRId32 " from %" PRId64 " to %" PRId64 " cannot be read: %s",
            r->to, out_partition, from, hi,
            from < lo ? "records were deleted" : "longer than dedup.scan_max_records");
        return;
    }
    if (!(as.table = calloc(as.cap, sizeof(*as.table))))
        return;
    for (size_t i = 0; i < n; i++) {
        unsigned char d[DIGEST_LEN];
        size_t j;

        asks[i].result = KD_RECOVER_ABSENT; /* unless read and found */
        digest(asks[i].key, asks[i].key_len, d);
        for (j = slot_of(d, as.cap); as.table[j]; j = (j + 1) % as.cap)
            ;
        as.table[j] = i + 1;
    }
    res = scan_range(rc, r->to, out_partition, &from, hi, true, ask_each, &as,
                     &rc->stats.records);
    rc->stats.scans++;
    rc->stats.micros += kd_mono_us() - t0;
    free(as.table);
    if (res == RANGE_FAILED)
        rc->broker_retry_at = kd_mono_us() + BROKER_RETRY_US; /* a second's rest */
    for (size_t i = 0; i < n && res != RANGE_DONE; i++) {
        kd_recover_ask *a = &asks[i];

        if (a->result == KD_RECOVER_FOUND)
            continue;
        if (res == RANGE_FAILED) {
            a->result = KD_RECOVER_UNKNOWN;
            continue;
        }
        a->result = KD_RECOVER_LATER; /* what was read did not hold it */
        if (a->from < from)
            a->from = from;
    }
}

kd_recover_result kd_recovery_find_since(kd_recovery *rc, size_t route,
                                         int32_t out_partition, int64_t *from,
                                         uint64_t sent_at_ms, const char *key,
                                         size_t key_len, kd_recover_found *out) {
    kd_recover_ask a = {
        .key = key, .key_len = key_len, .from = *from, .sent_at_ms = sent_at_ms};

    kd_recovery_find_since_many(rc, route, out_partition, &a, 1);
    if (a.result == KD_RECOVER_FOUND)
        *out = a.found;
    *from = a.from;
    return a.result;
}

void kd_recovery_forget(kd_recovery *rc) {
    while (rc->nscans)
        scan_drop(rc, rc->nscans - 1);
    free(rc->scans);
    rc->scans = NULL;
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
    historian_unassign(rc);
    if (rc->historian) {
        rd_kafka_consumer_close(rc->historian);
        rd_kafka_destroy(rc->historian);
    }
    kd_signer_destroy(rc->signers[0]);
    kd_signer_destroy(rc->signers[1]);
    free(rc->brokers);
    free(rc);
}
