/*
 * kdedup - deliveries of this run whose outcome is unknown (see
 * recovery.h).
 *
 * Such a delivery keeps nothing: the keys asked about are looked for in one
 * read from where the first of them would have landed, and compared whole.
 */
#include "sidecar/recovery_int.h"
#include "sidecar/clock.h"
#include "sidecar/log.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#define BROKER_RETRY_US 1000000

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

    if (kd_headers_source(kd_headers_of(m), as->route->from, &part, &off) &&
        kd_rc_key_of(as->rc, m, as->route, &key, &key_len) &&
        kd_rc_trusted(as->rc, m, as->route, key, key_len, false)) {
        kd_rc_digest(key, key_len, d);
        at = kd_headers_forwarded_at(kd_headers_of(m));
        for (size_t j = kd_rc_slot_of(d, as->cap); as->table[j]; j = (j + 1) % as->cap) {
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

/* The transactional mode: each ask without one takes the partition's high
 * watermark, now, as the point its reads must reach (kd_recover_ask's
 * settle_to). False when the broker does not answer. */
static bool settle_points(kd_recovery *rc, const kd_route *r, int32_t part, int64_t end,
                          kd_recover_ask *asks, size_t n) {
    int64_t hw = -1;
    size_t held = 0;

    for (size_t i = 0; i < n; i++) {
        if (asks[i].settle_to)
            continue;
        if (hw < 0 &&
            kd_rc_high_watermark(rc, r->to, part, &hw) != RD_KAFKA_RESP_ERR_NO_ERROR)
            return false;
        asks[i].settle_to = hw;
        held += hw > end;
    }
    if (held)
        KD_INFO("recovery: %s/%" PRId32 " ends at its last stable offset %" PRId64
                ", below its high watermark %" PRId64 ": a transaction is still open; "
                "%zu deliveries are read for until it ends",
                r->to, part, end, hw, held);
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
    if (!kd_rc_scanner(rc) ||
        kd_rc_watermarks(rc->scanner, r->to, out_partition, &lo, &hi) !=
            RD_KAFKA_RESP_ERR_NO_ERROR ||
        (rc->cfg->delivery == KD_DELIVERY_TRANSACTIONAL &&
         !settle_points(rc, r, out_partition, hi, asks, n))) {
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
        kd_rc_digest(asks[i].key, asks[i].key_len, d);
        for (j = kd_rc_slot_of(d, as.cap); as.table[j]; j = (j + 1) % as.cap)
            ;
        as.table[j] = i + 1;
    }
    res = kd_rc_scan_range(rc, r->to, out_partition, &from, hi, true, ask_each, &as,
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
    for (size_t i = 0; i < n && res == RANGE_DONE; i++) {
        kd_recover_ask *a = &asks[i];

        /* read to the last stable offset: a transaction open before it
         * may hide the record past it */
        if (a->result == KD_RECOVER_ABSENT && a->settle_to > hi) {
            a->result = KD_RECOVER_LATER;
            if (a->from < hi)
                a->from = hi;
        }
    }
}

kd_recover_result kd_recovery_find_since(kd_recovery *rc, size_t route,
                                         int32_t out_partition, kd_recover_ask *a,
                                         kd_recover_found *out) {
    kd_recovery_find_since_many(rc, route, out_partition, a, 1);
    if (a->result == KD_RECOVER_FOUND)
        *out = a->found;
    return a->result;
}
