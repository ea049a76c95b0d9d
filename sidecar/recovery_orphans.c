/*
 * kdedup - exact recovery of orphaned claims: scans of dead runs'
 * partitions (see recovery.h).
 *
 * The scan of a dead run's partition remembers, for each record of the
 * route's source topic that carries the route's key header, the first 16
 * bytes of the key's SHA-256, the record's offset, timestamp and forwarding
 * time: a 40-byte slot in a table sized once, for the records to read, at
 * most 3/4 full. All tables together stay within dedup.scan_cache_bytes:
 * the least recently used go first, and a scan whose table alone would not
 * fit is not made (its orphans are forwarded again, at least once, and
 * counted). A failed scan is remembered and tried again with backoff.
 */
#include "sidecar/recovery_int.h"
#include "sidecar/clock.h"
#include "sidecar/log.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#define SCANS_MAX 1024      /* scans of dead runs remembered (tables or failures) */
#define SCAN_FAILURES_MAX 5 /* failed steps in a row before a scan is given up */
#define SCAN_BACKOFF_MIN_MS 1000
#define SCAN_BACKOFF_MAX_MS 30000

/* A record of a key in a scan's table. */
struct slot {
    unsigned char digest[DIGEST_LEN];
    int64_t pos; /* the record's offset + 1; 0: an empty slot */
    int64_t timestamp;
    int64_t forwarded_at; /* KD_FORWARDED_AT_HEADER; -1 when the record has none */
};

/* The scan of a dead run's downstream partition: an open-addressing table
 * of key digests, filled in steps. */
struct scan {
    uint64_t owner; /* the dead run */
    size_t route;
    int32_t partition;
    int64_t from, next, end; /* reading [next, end) of [from, end) */
    int64_t settle;        /* transactional: the high watermark when it began (0: none) */
    uint64_t settle_since; /* mono: read to its end below settle since then */
    uint64_t settle_asked_ms; /* mono: its end last asked again while below settle */
    slot *slots;
    size_t cap, n;
    uint64_t used_ms;     /* mono: the last lookup (the least recent goes first) */
    uint64_t retry_at_ms; /* mono: after a failed step, not before */
    int failures;         /* failed steps in a row */
    bool roomless;        /* waiting for room for its table (scan_room) */
    bool given_up;        /* cannot be made: every lookup is UNKNOWN */
};

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
    for (j = kd_rc_slot_of(d, s->cap); s->slots[j].pos; j = j + 1 < s->cap ? j + 1 : 0)
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
    for (size_t j = kd_rc_slot_of(d, s->cap); s->slots[j].pos;
         j = j + 1 < s->cap ? j + 1 : 0)
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

/* True once s has read to its end, and that end reached the high
 * watermark it waits for (the transactional mode: scan_for). */
static bool scan_complete(const scan *s) {
    return s->next >= s->end && s->settle <= s->end;
}

/* The least recently used scan other than `keep`, or SIZE_MAX; with
 * with_table, among the complete scans that hold a table. */
static size_t scan_lru(const kd_recovery *rc, const scan *keep, bool with_table) {
    size_t best = SIZE_MAX;

    for (size_t i = 0; i < rc->nscans; i++)
        if (&rc->scans[i] != keep &&
            (!with_table || (rc->scans[i].slots && scan_complete(&rc->scans[i]))) &&
            (best == SIZE_MAX || rc->scans[i].used_ms < rc->scans[best].used_ms))
            best = i;
    return best;
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

    if (kd_headers_source(kd_headers_of(m), ds->route->from, &part, &off) &&
        kd_rc_key_of(ds->rc, m, ds->route, &key, &key_len) &&
        kd_rc_trusted(ds->rc, m, ds->route, key, key_len, false)) {
        kd_rc_digest(key, key_len, d);
        ok = scan_add(ds->s, d, m->offset, rd_kafka_message_timestamp(m, NULL),
                      kd_headers_forwarded_at(kd_headers_of(m)));
    }
    rd_kafka_message_destroy(m);
    return ok;
}

/* Makes s's table when it fits in dedup.scan_cache_bytes beside the others,
 * freeing complete tables (least recently used first; their orphans scan
 * again if they come), never one still being read: two scans that do not
 * fit together take turns instead of undoing each other. False while there
 * is no room (or memory). */
static bool scan_room(kd_recovery *rc, scan *s) {
    size_t cap = table_cap((s->settle > s->end ? s->settle : s->end) - s->from),
           bytes = cap * sizeof(slot), i;

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
    if (!kd_rc_scanner(rc) || kd_rc_watermarks(rc->scanner, r->to, partition, &lo, &hi) !=
                                  RD_KAFKA_RESP_ERR_NO_ERROR) {
        s->given_up = false; /* the broker: tried again with backoff */
        s->failures = 1;
        s->from = s->next = s->end = -1;
        s->retry_at_ms = kd_mono_ms() + SCAN_BACKOFF_MIN_MS;
        return s;
    }
    /* transactional: hi is the last stable offset; the dead run's records
     * may lie behind a transaction still open (outside hunt, 2026-12-07) */
    if (rc->cfg->delivery == KD_DELIVERY_TRANSACTIONAL &&
        kd_rc_high_watermark(rc, r->to, partition, &s->settle) !=
            RD_KAFKA_RESP_ERR_NO_ERROR)
        s->settle = 0;
    bytes = table_cap((s->settle > hi ? s->settle : hi) - start) * sizeof(slot);
    if (start < lo ||
        (s->settle > hi ? s->settle : hi) - start > rc->cfg->scan_max_records ||
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
    if (s->settle > hi)
        KD_INFO("recovery: %s/%" PRId32 " ends at its last stable offset %" PRId64
                ", below its high watermark %" PRId64 ": the scan waits for it",
                r->to, partition, hi, s->settle);
    s->roomless = true; /* its table is made when there is room (scan_room) */
    scan_room(rc, s);
    return s;
}

/* The scan of (owner, route, partition), read a step further. Returned
 * when what it read can be looked up: complete (*res FOUND), or, in the
 * transactional mode, read to the last stable offset while that has yet
 * to reach the high watermark the scan began at (*res LATER: a key not
 * read yet may lie behind a transaction still open). Else NULL, *res
 * saying LATER (under way) or UNKNOWN (it cannot be). */
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
    if (owner == rc->boot_id && s->from >= 0 && scan_complete(s)) {
        /* this run's own deliveries go on landing: read what was added */
        int64_t lo = 0, hi = 0;

        if (kd_rc_watermarks(rc->scanner, r->to, partition, &lo, &hi) !=
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
            /* the scan it replaces waited for the transactions open when it
             * began; this run's own, always open under steady traffic, would
             * keep a new one waiting at each growth */
            s->settle = 0;
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
    if (s->next >= s->end && s->settle > s->end) {
        /* a transaction open before the settle point: the end asked again,
         * every MARKERS_ASK_MS at most, for as long as a replica's
         * transaction may stay open (as a handover waits) */
        uint64_t wait_ms = kd_config_txn_timeout_ms(rc->cfg) + TXN_ABORT_CHECK_MS;
        int64_t lo = 0, hi = 0;

        if (!s->settle_since)
            s->settle_since = now;
        if (now - s->settle_since >= wait_ms) {
            KD_WARN("recovery: %s/%" PRId32 " read to %" PRId64 ", still below %" PRId64
                    " after %llu ms: a transaction held open longer than a replica's can "
                    "be; the records committed behind it are not scanned",
                    r->to, partition, s->end, s->settle, (unsigned long long)wait_ms);
            s->settle = 0;
        } else if (now - s->settle_asked_ms < MARKERS_ASK_MS) {
            return s; /* LATER, what was read looked up */
        } else {
            s->settle_asked_ms = now;
            if (kd_rc_watermarks(rc->scanner, r->to, partition, &lo, &hi) !=
                RD_KAFKA_RESP_ERR_NO_ERROR) {
                s->failures++;
                goto failed;
            }
            s->failures = 0;
            if (hi > s->end)
                s->end = hi < s->settle ? hi : s->settle; /* the table holds up to it */
            if (s->next >= s->end && s->settle > s->end)
                return s; /* LATER, what was read looked up */
        }
    }
    if (s->next >= s->end) {
        *res = KD_RECOVER_FOUND; /* complete: the caller looks the key up */
        return s;
    }
    if (!scan_room(rc, s))
        return NULL; /* LATER: another scan is being read */
    t0 = kd_mono_us();
    step = kd_rc_scan_range(rc, r->to, partition, &s->next, s->end, true, digest_each,
                            &(digest_scan){rc, s, r}, &rc->stats.records);
    rc->stats.scans++;
    rc->stats.micros += kd_mono_us() - t0;
    if (step == RANGE_PAUSED)
        return NULL;
    if (step == RANGE_DONE && s->settle > s->end) {
        s->failures = 0;
        return s; /* LATER, what was read looked up: read on once the end moves */
    }
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
    kd_recover_result res, absent;
    scan *s = scan_for(rc, owner, route, out_partition, &res);
    unsigned char d[DIGEST_LEN];
    const slot *f;

    if (!s)
        return res;
    /* res LATER with s: read to the last stable offset, which has yet to
     * reach the high watermark the scan began at (transactions open before
     * it): what was read can tell FOUND, not ABSENT */
    absent = res == KD_RECOVER_LATER ? KD_RECOVER_LATER : KD_RECOVER_ABSENT;
    kd_rc_digest(key, key_len, d);
    if (!(f = scan_get(s, d)))
        return absent;
    /* Forwarded before the claim: the delivery of an older, expired claim
     * of the key, not of this one (records without the header: trusted). */
    if (!kd_recovery_forwarded_since(f->forwarded_at, claimed_at_ms))
        return absent;
    out->offset = f->pos - 1;
    out->timestamp = f->timestamp;
    return KD_RECOVER_FOUND;
}

void kd_recovery_forget(kd_recovery *rc) {
    while (rc->nscans)
        scan_drop(rc, rc->nscans - 1);
    free(rc->scans);
    rc->scans = NULL;
}
