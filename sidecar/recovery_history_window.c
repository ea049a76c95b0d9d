/*
 * kdedup - the handover: where each one reads, and what it leaves: its
 * mark in the store, its window (from the mark or the first offset to the
 * end), the end asked again for a transaction's markers, the mark saved
 * (file map: recovery_int.h).
 */
#include "sidecar/recovery_int.h"
#include "sidecar/clock.h"
#include "sidecar/log.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define HANDOVER_MAGIC "kdedup-handover v1"
#define HISTORY_FAILURES_MAX 3 /* failed steps in a row before a handover starts over */

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
        moved = kd_rc_leader_moved(err);
        for (int i = 0; !err && i < list->cnt; i++)
            moved |= kd_rc_leader_moved(list->elems[i].err);
        if (!moved)
            return err; /* answered, or failed for a reason asking again does not cure */
        for (int i = 0; i < list->cnt; i++)
            if (!i || strcmp(list->elems[i].topic, list->elems[i - 1].topic))
                kd_rc_refresh_leaders(rk, list->elems[i].topic);
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
void kd_rc_hist_start(histories *h) {
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
        (!kd_rc_historian(rc) ||
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

/* What the handover's line says of records past a window's end: the
 * partition's high watermark, as the historian last fetched it, when above
 * the end (which, read read_committed, is the last stable offset): a
 * transaction still open when the window was taken (a killed replica's
 * stays open until the broker aborts it, transaction.timeout.ms later:
 * read_committed readers wait for it), or records written since. Empty
 * when none is known (the window was empty: nothing was fetched). */
static void past_end(kd_recovery *rc, const char *topic, int32_t partition,
                     const kd_history_cursor *cur, char *buf, size_t size) {
    int64_t lo, hi;

    buf[0] = '\0';
    if (cur->end > cur->from && rc->historian &&
        !rd_kafka_get_watermark_offsets(rc->historian, topic, partition, &lo, &hi) &&
        hi > cur->end)
        snprintf(buf, size,
                 "; its high watermark %" PRId64 ": past the end, a transaction "
                 "still open or records written since",
                 hi);
}

/* In the transactional mode, a window read to its end (the last stable
 * offset) below the partition's high watermark stops short of the
 * transactions still open, and of every record committed behind the first
 * of them:
 * - the previous owner's last transaction, committed in its revoke
 *   callback just before the partition went (with the source offsets that
 *   skip its messages), whose markers the broker writes after answering
 *   the commit;
 * - another replica's, held open: a killed replica's until the broker
 *   aborts it, with the records other replicas committed behind it.
 * Their keys would not be learned, and a later copy of one would be
 * forwarded again. So the end is asked again, a turn at a time, until it
 * reaches the high watermark seen, for as long as a replica's transaction
 * may stay open (the producer's transaction.timeout.ms, plus
 * TXN_ABORT_CHECK_MS) at most: longer is a transaction no kdedup replica
 * of this config holds. True while waiting (the end may have moved: more
 * to read). */
static bool markers_awaited(histories *h, size_t j) {
    kd_recovery *rc = h->rc;
    kd_history_cursor *cur = h->jobs[j].job->cur;
    const char *to = h->jobs[j].route->to;
    int32_t part = h->jobs[j].job->out_partition;
    rd_kafka_topic_partition_list_t *one;
    uint64_t now = kd_mono_ms();
    uint64_t wait_ms = kd_config_txn_timeout_ms(rc->cfg) + TXN_ABORT_CHECK_MS;
    int64_t lo, hi, end;

    if (rc->cfg->delivery != KD_DELIVERY_TRANSACTIONAL || !rc->historian)
        return false;
    if (!cur->markers_since) {
        /* the high watermark the historian's fetches last saw; none for an
         * empty window (nothing was fetched), or an old one: then asked
         * (outside hunt, 2026-12-07) */
        if ((rd_kafka_get_watermark_offsets(rc->historian, to, part, &lo, &hi) ||
             hi <= cur->end) &&
            (kd_rc_high_watermark(rc, to, part, &hi) != RD_KAFKA_RESP_ERR_NO_ERROR ||
             hi <= cur->end))
            return false;
        cur->markers_hw = hi;
        cur->markers_since = now;
        KD_INFO("handover: %s/%" PRId32 " read to %" PRId64 ", below its high watermark "
                "%" PRId64 ": a transaction still open; its end is asked again for %llu "
                "ms at most",
                to, part, cur->end, hi, (unsigned long long)wait_ms);
    }
    if (cur->end >= cur->markers_hw)
        return false;
    if (now - cur->markers_since >= wait_ms) {
        KD_WARN("handover: %s/%" PRId32 " read to %" PRId64 ", still below %" PRId64
                " after %llu ms: a transaction held open longer than a replica's can be; "
                "the records committed behind it are not learned",
                to, part, cur->end, cur->markers_hw, (unsigned long long)wait_ms);
        return false;
    }
    if (now - cur->markers_asked < MARKERS_ASK_MS)
        return true;
    cur->markers_asked = now;
    one = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(one, to, part);
    if (!offsets_at_many(rc->historian, one, RD_KAFKA_OFFSET_END) &&
        !offset_in(one, to, part, &end) && end > cur->end)
        cur->end = end;
    rd_kafka_topic_partition_list_destroy(one);
    return true;
}

/* Settles job j after the read: a failed one goes back to what its fn
 * took; one read to its end saves its mark. */
void kd_rc_hist_finish(histories *h, size_t j) {
    kd_recovery *rc = h->rc;
    kd_history_job *job = h->jobs[j].job;
    kd_history_cursor *cur = job->cur;
    const kd_route *r = h->jobs[j].route;
    char stream[600], text[64], past[160];

    if (h->jobs[j].failed) {
        if (cur->started) {
            cur->next = cur->taken; /* what fn did not take is read again */
            cur->failures++;
        }
        job->result = KD_HISTORY_FAILED;
        return;
    }
    cur->failures = 0;
    if (cur->next < cur->end || markers_awaited(h, j)) {
        job->result = KD_HISTORY_MORE;
        return;
    }
    past_end(rc, r->to, job->out_partition, cur, past, sizeof(past));
    KD_INFO("handover: %s/%" PRId32 " read [%" PRId64 ", %" PRId64 ") for %s/%" PRId32
            " in %.3fs%s",
            r->to, job->out_partition, cur->from, cur->end, r->from, job->src_partition,
            (double)(kd_mono_us() - cur->t0_us) / 1e6, past);
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
