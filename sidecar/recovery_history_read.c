/*
 * kdedup - the handover: the historian, the consumer that reads the
 * partitions being handed over (its assignment, its reads), and the
 * records it hands each job, in batches (file map: recovery_int.h).
 */
#include "sidecar/recovery_int.h"
#include "sidecar/clock.h"
#include "sidecar/headers.h"
#include "sidecar/log.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

/* A downstream partition the handovers' consumer (the historian) reads. */
struct hreader {
    char *topic; /* owned */
    int32_t partition;
    int64_t pos; /* the next offset it hands; INT64_MAX: to be assigned again */
};

/* When kdedup forwarded rkm, or the record's timestamp for records
 * forwarded before the header existed. */
static int64_t forwarded_ms(const rd_kafka_message_t *rkm) {
    int64_t at = kd_headers_forwarded_at(kd_headers_of(rkm));

    return at >= 0 ? at : rd_kafka_message_timestamp(rkm, NULL);
}

/* The handovers' consumer: reads every partition being handed over at
 * once (one assignment), apart from the scanner's dead-run scans. */
rd_kafka_t *kd_rc_historian(kd_recovery *rc) {
    if (!rc->historian)
        rc->historian = kd_rc_reader_new(rc, "kdedup-handover", "read_committed");
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
bool kd_rc_hist_assign(kd_recovery *rc, histories *h) {
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

/* Job j has failed: it stops reading; its cursor goes back (kd_rc_hist_finish). */
void kd_rc_hist_fail(histories *h, size_t j) {
    if (h->jobs[j].active)
        h->nactive--;
    h->jobs[j].active = false;
    h->jobs[j].failed = true;
}

/* Passes each job its records of the batch, in their order, then drops
 * them; once a job's fn took them, every record it was handed is taken. */
void kd_rc_hist_flush(histories *h) {
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
            kd_rc_hist_fail(h, j);
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
        kd_rc_hist_flush(h);
}

/* Reader r's partition cannot be read now: its jobs fail, and it is
 * assigned afresh when read again. */
static void hist_reader_failed(histories *h, size_t r) {
    h->rc->hreaders[r].pos = INT64_MAX;
    for (size_t j = h->first_job[r]; j != SIZE_MAX; j = h->jobs[j].next_job)
        if (h->jobs[j].active)
            kd_rc_hist_fail(h, j);
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
void kd_rc_hist_read(histories *h) {
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
