/*
 * kdedup - recovery's reads of downstream partitions (see recovery_int.h).
 *
 * A scan reads one downstream partition with a consumer of its own
 * (assigned, never in a group, never committing), in steps: each turn of the
 * pipeline's loop gives all scans together a time budget, and a scan that
 * has not reached its end says "later". A scan fails only when the broker
 * hands it nothing for SCAN_IDLE_MS, never because it is long.
 */
#include "sidecar/recovery_int.h"
#include "dedup/sha256.h"
#include "sidecar/clock.h"
#include "sidecar/kafka.h"
#include "sidecar/log.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

void kd_rc_digest(const void *key, size_t len, unsigned char out[DIGEST_LEN]) {
    unsigned char full[KD_SHA256_LEN];

    kd_sha256(key, len, full);
    memcpy(out, full, DIGEST_LEN);
}

size_t kd_rc_slot_of(const unsigned char *d, size_t cap) {
    uint64_t h;

    memcpy(&h, d, sizeof(h)); /* a digest: already uniform */
    return (size_t)(h % cap);
}

rd_kafka_resp_err_t kd_rc_offset_at(rd_kafka_t *rk, const char *topic, int32_t partition,
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
void kd_rc_refresh_leaders(rd_kafka_t *rk, const char *topic) {
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
        kd_rc_offset_at(rk, topic, partition, RD_KAFKA_OFFSET_BEGINNING, lo);

    return err ? err : kd_rc_offset_at(rk, topic, partition, RD_KAFKA_OFFSET_END, hi);
}

/* True when err says the partition is led elsewhere now: worth asking the
 * cluster where, and then once more. */
bool kd_rc_leader_moved(rd_kafka_resp_err_t err) {
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
rd_kafka_resp_err_t kd_rc_watermarks(rd_kafka_t *rk, const char *topic, int32_t partition,
                                     int64_t *lo, int64_t *hi) {
    rd_kafka_resp_err_t err = watermarks_once(rk, topic, partition, lo, hi);

    if (!err || !kd_rc_leader_moved(err))
        return err;
    kd_rc_refresh_leaders(rk, topic);
    return watermarks_once(rk, topic, partition, lo, hi);
}

/* A consumer that reads assigned partitions (never in a group, never
 * committing); NULL, logged, when it cannot be made. */
rd_kafka_t *kd_rc_reader_new(kd_recovery *rc, const char *client_id,
                             const char *isolation) {
    static const char *const overrides[][2] = {
        {"enable.auto.commit", "false"}, /* it reads; it never commits */
        {"enable.partition.eof", "true"},
        {"statistics.interval.ms", "0"},
        {"auto.offset.reset", "error"},         /* deleted records: say so */
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
    rd_kafka_conf_set(conf, "isolation.level", isolation, NULL, 0);
    rd_kafka_conf_set(conf, "client.id", client_id, NULL, 0);
    if (!(rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, err, sizeof(err)))) {
        rd_kafka_conf_destroy(conf);
        KD_WARN("recovery: %s", err);
    }
    return rk;
}

rd_kafka_t *kd_rc_scanner(kd_recovery *rc) {
    if (!rc->scanner)
        rc->scanner = kd_rc_reader_new(rc, "kdedup-recovery", "read_committed");
    return rc->scanner;
}

rd_kafka_resp_err_t kd_rc_high_watermark(kd_recovery *rc, const char *topic,
                                         int32_t partition, int64_t *hw) {
    rd_kafka_resp_err_t err;

    /* read_uncommitted: its end is the high watermark, past the records of
     * transactions still open; it never reads */
    if (!rc->watcher &&
        !(rc->watcher = kd_rc_reader_new(rc, "kdedup-watermarks", "read_uncommitted")))
        return RD_KAFKA_RESP_ERR__FAIL;
    err = kd_rc_offset_at(rc->watcher, topic, partition, RD_KAFKA_OFFSET_END, hw);
    if (err && kd_rc_leader_moved(err)) {
        kd_rc_refresh_leaders(rc->watcher, topic);
        err = kd_rc_offset_at(rc->watcher, topic, partition, RD_KAFKA_OFFSET_END, hw);
    }
    return err;
}

/* The route's idempotency key of a record kdedup forwarded: its key
 * header, or for a key taken from elsewhere, the KD_KEY_HEADER kdedup
 * wrote. Never for a record forwarded without a claim
 * (KD_UNCLAIMED_HEADER) or a forget record (KD_FORGET_HEADER): neither is a
 * claim's delivery. */
bool kd_rc_key_of(const kd_recovery *rc, const rd_kafka_message_t *rkm,
                  const kd_route *route, const void **key, size_t *key_len) {
    const rd_kafka_headers_t *h = kd_headers_of(rkm);

    return !kd_headers_unclaimed(h) && !kd_headers_forget(h) &&
           kd_headers_key(h, route->key_header ? route->key_header : KD_KEY_HEADER,
                          (size_t)rc->cfg->max_key_bytes, key, key_len);
}

/* True when kdedup wrote rkm, as far as can be told: with a signing key,
 * its signature (a forget record's when `forget`) verifies under the
 * current or the previous key (else it is counted as foreign); without
 * one, every record is trusted. */
bool kd_rc_trusted(kd_recovery *rc, const rd_kafka_message_t *rkm, const kd_route *route,
                   const void *key, size_t key_len, bool forget) {
    if (!rc->signers[0])
        return true;
    if (kd_headers_verify(kd_headers_of(rkm), rc->signers, 2, route->from, route->to, key,
                          key_len, forget))
        return true;
    rc->stats.foreign++;
    return false;
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
range_result kd_rc_scan_range(kd_recovery *rc, const char *topic, int32_t partition,
                              int64_t *next, int64_t to, bool budgeted, record_fn each,
                              void *arg, uint64_t *records) {
    rd_kafka_t *rk = kd_rc_scanner(rc);
    uint64_t idle_until;
    range_result res = RANGE_FAILED;

    if (!rk)
        return RANGE_FAILED;
    if (*next >= to)
        return RANGE_DONE;
    if (budgeted && kd_rc_turn_over(rc))
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
        if (budgeted && kd_rc_turn_over(rc)) {
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
