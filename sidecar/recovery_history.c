/*
 * kdedup - the handover: the history of a newly assigned partition (see
 * recovery.h).
 *
 * The handovers read with a consumer of their own (the historian): every
 * partition being handed over in one assignment, read together, so a
 * replica given 200 partitions waits for one read of them all, not for 200
 * reads one after another. Each handover's records (those of its source
 * partition) go to the caller in batches, unremembered; one batch holds at
 * most pipeline.batch_max records and HISTORY_BATCH_BYTES of all of them.
 */
#include "sidecar/recovery_int.h"
#include "sidecar/clock.h"
#include "sidecar/headers.h"
#include "sidecar/log.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define HANDOVER_MAGIC "kdedup-handover v1"
#define HISTORY_FAILURES_MAX 3 /* failed steps in a row before a handover starts over */
/* A handover batch's records kept alive: keys, values and headers (see
 * headers.h: an empty header takes some 90 bytes once parsed). */
#define HISTORY_BATCH_BYTES (4u << 20)

/* A downstream partition the handovers' consumer (the historian) reads. */
struct hreader {
    char *topic; /* owned */
    int32_t partition;
    int64_t pos; /* the next offset it hands; INT64_MAX: to be assigned again */
};

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
static int64_t forwarded_ms(const rd_kafka_message_t *rkm) {
    int64_t at = kd_headers_forwarded_at(kd_headers_of(rkm));

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
        rc->historian = kd_rc_reader_new(rc, "kdedup-handover");
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
void kd_rc_history_unassign(kd_recovery *rc) {
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
    if ((*forget = kd_headers_forget(kd_headers_of(m))))
        return kd_headers_forwarded_at(kd_headers_of(m)) >= 0 &&
               kd_headers_key(kd_headers_of(m), KD_KEY_HEADER,
                              (size_t)rc->cfg->max_key_bytes, key, key_len);
    return kd_rc_key_of(rc, m, route, key, key_len);
}

/* Holds m for job j when it is one of j's records: put downstream from j's
 * source partition within dedup.ttl, with a key, by kdedup (a delivery or
 * a forget record). */
static bool hist_take(histories *h, size_t j, rd_kafka_message_t *m) {
    const hjob *hj = &h->jobs[j];
    kd_history_rec *rec = &h->recs[h->nheld];
    int32_t part;
    const void *key;
    int64_t at = forwarded_ms(m);

    if (!kd_headers_source(kd_headers_of(m), hj->route->from, &part, &rec->src_offset) ||
        part != hj->job->src_partition || (h->since_ms && at >= 0 && at < h->since_ms) ||
        !history_key(h->rc, hj->route, m, &key, &rec->key_len, &rec->forget) ||
        !kd_rc_trusted(h->rc, m, hj->route, key, rec->key_len, rec->forget))
        return false;
    rec->key = key;
    rec->offset = m->offset;
    rec->timestamp = rd_kafka_message_timestamp(m, NULL);
    rec->forwarded_at = at;
    rec->stamped = kd_headers_forwarded_at(kd_headers_of(m)) >= 0;
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

    while (h->nactive && !kd_rc_turn_over(rc)) {
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
 * offset) below the partition's high watermark may stop short of a
 * transaction whose commit the broker has answered but whose markers it
 * has yet to write: the previous owner's last, committed in its revoke
 * callback just before the partition went, with the source offsets that
 * skip its messages. Its keys would not be learned, and a later copy of
 * one would be forwarded again. So the end is asked again, a turn at a
 * time, until it reaches the high watermark seen, for MARKERS_WAIT_MS at
 * most: a killed replica's transaction stays open until the broker aborts
 * it, a zombie's is aborted at its commit, and neither is waited for. True
 * while waiting (the end may have moved: more to read). */
static bool markers_awaited(histories *h, size_t j) {
    kd_recovery *rc = h->rc;
    kd_history_cursor *cur = h->jobs[j].job->cur;
    const char *to = h->jobs[j].route->to;
    int32_t part = h->jobs[j].job->out_partition;
    rd_kafka_topic_partition_list_t *one;
    uint64_t now = kd_mono_ms();
    int64_t lo, hi, end;

    if (rc->cfg->delivery != KD_DELIVERY_TRANSACTIONAL || !rc->historian)
        return false;
    if (!cur->markers_since) {
        /* the high watermark the historian's fetches last saw (none for an
         * empty window: nothing was fetched) */
        if (rd_kafka_get_watermark_offsets(rc->historian, to, part, &lo, &hi) ||
            hi <= cur->end)
            return false;
        cur->markers_hw = hi;
        cur->markers_since = now;
        KD_INFO("handover: %s/%" PRId32 " read to %" PRId64 ", below its high watermark "
                "%" PRId64 ": a transaction still open; its end is asked again for %d ms",
                to, part, cur->end, hi, MARKERS_WAIT_MS);
    }
    if (cur->end >= cur->markers_hw || now - cur->markers_since >= MARKERS_WAIT_MS)
        return false;
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
static void hist_finish(histories *h, size_t j) {
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
        kd_rc_history_unassign(rc); /* nothing left to read: it stops fetching */
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
