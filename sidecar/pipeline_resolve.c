/*
 * kdedup - the pipeline's reads of downstream for messages the retries
 * hand on: uncertain deliveries (possibly persisted: found, the claim is
 * completed; absent, sent again) and copies that met an ended ownership's
 * note (what the read told is kept in the note). Each downstream partition
 * is read once for all the messages that ask it.
 */
#include "sidecar/pipeline_int.h"

#include <stdlib.h>

/* Adds what the recovery scans read since `before` to the metrics. */
void kd_pl_resolve_count_scans(kd_pipeline *p, const kd_recovery_stats *before) {
    kd_recovery_stats after;

    kd_recovery_stats_get(p->recovery, &after);
    GCOUNT(p, recovery_records, after.records - before->records);
    GCOUNT(p, recovery_us, after.micros - before->micros);
    GCOUNT(p, recovery_scans, after.scans - before->scans);
    GCOUNT(p, foreign, after.foreign - before->foreign);
}

/* m's delivery was found downstream at out_part (a scan's *f): completes
 * its claim with a receipt naming that record and settles m (freed). False
 * when the store failed: m then waits with the receipts, whose write is
 * retried (never sent again: it is downstream). */
bool kd_pl_resolve_complete_found(kd_pipeline *p, msg *m, int32_t out_part,
                                  const kd_recover_found *f) {
    char receipt[RECEIPT_MAX];
    kd_completion c = {.key = m->key, .key_len = m->key_len, .receipt = receipt};

    m->out_partition = out_part;
    m->out_offset = f->offset;
    m->out_timestamp = f->timestamp;
    c.receipt_len = kd_pl_receipts_format(p, m, receipt, sizeof(receipt));
    kd_pl_store_complete_timed(p, m->route, &c, 1, false);
    if (c.err == KD_ERR_STORE) {
        list_push(&p->q.receipts, m);
        return false;
    }
    kd_pl_msg_done(p, m);
    return true;
}

/* Applies what a read of downstream said about an uncertain delivery. */
static void uncertain_result(kd_pipeline *p, msg *m, int32_t part,
                             const kd_recover_ask *a) {
    if (a->result == KD_RECOVER_FOUND) {
        size_t route = m->route; /* m is freed once settled */
        uint64_t consumed_us = m->consumed_us;

        if (kd_pl_resolve_complete_found(p, m, part, &a->found)) {
            RCOUNT(p, route, uncertain_found);
            RCOUNT(p, route, forwarded);
            observe_since(kd_metrics_forward_latency(p->metrics), consumed_us);
        }
        return;
    }
    if (a->result == KD_RECOVER_LATER) { /* read on from there next turn */
        m->scan_from = a->from;
        m->scan_settle = a->settle_to;
        kd_pl_msg_retry(p, m, 0);
        return;
    }
    if (a->result == KD_RECOVER_UNKNOWN && ++m->reads < UNCERTAIN_TRIES) {
        uint64_t delay = 250u << (m->reads < 6 ? m->reads : 6);

        kd_pl_msg_retry(p, m, delay);
        return;
    }
    if (a->result == KD_RECOVER_ABSENT)
        RCOUNT(p, m->route, uncertain_absent);
    else
        RCOUNT(p, m->route, uncertain_unknown);
    m->uncertain = false;
    kd_pl_msg_retry(p, m, 0); /* produced again, under the same claim */
}

/* A read for messages due for one: ms[i] asks asks[i] of downstream
 * partition parts[i] (about notes[i], when it met one); told(p, ms[i],
 * notes[i], parts[i], answer) acts on each answer. */
typedef struct read_many {
    msg **ms;
    kd_recover_ask *asks;
    int32_t *parts;
    left_claim **notes;
    size_t n;
    void (*told)(kd_pipeline *p, msg *m, left_claim *l, int32_t part,
                 const kd_recover_ask *a);
} read_many;

/* Reads each downstream partition once for every message of r that asks
 * it (ms[i] NULL: none), and hands each answer to r->told. */
static void read_by_partition(kd_pipeline *p, const read_many *r) {
    kd_recover_ask *asks = malloc((r->n ? r->n : 1) * sizeof(*asks));
    size_t *of = malloc((r->n ? r->n : 1) * sizeof(*of));
    kd_recovery_stats before;

    if (!asks || !of) {
        for (size_t i = 0; i < r->n; i++)
            if (r->ms[i])
                kd_pl_msg_retry(p, r->ms[i], 250); /* out of memory: later */
        goto out;
    }
    p->keys.last_orphan_ms = kd_mono_ms();
    for (size_t i = 0; i < r->n; i++) {
        size_t route, k = 0;

        if (!r->ms[i])
            continue;
        route = r->ms[i]->route;
        for (size_t j = i; j < r->n; j++) /* every message of the same partition */
            if (r->ms[j] && r->ms[j]->route == route && r->parts[j] == r->parts[i]) {
                of[k] = j;
                asks[k++] = r->asks[j];
            }
        kd_recovery_stats_get(p->recovery, &before);
        kd_recovery_find_since_many(p->recovery, route, r->parts[i], asks, k);
        kd_pl_resolve_count_scans(p, &before);
        for (size_t j = 0; j < k; j++) {
            msg *m = r->ms[of[j]];

            r->ms[of[j]] = NULL;
            r->told(p, m, r->notes ? r->notes[of[j]] : NULL, r->parts[i], &asks[j]);
        }
    }
out:
    free(asks);
    free(of);
}

/* Arrays for a read_many of n messages; false when out of memory (then
 * each message is retried later). */
static bool read_many_init(kd_pipeline *p, read_many *r, msg **ms, size_t n, bool notes) {
    *r = (read_many){.ms = ms, .n = n};
    r->asks = malloc((n ? n : 1) * sizeof(*r->asks));
    r->parts = malloc((n ? n : 1) * sizeof(*r->parts));
    if (notes)
        r->notes = malloc((n ? n : 1) * sizeof(*r->notes));
    if (r->asks && r->parts && (!notes || r->notes))
        return true;
    for (size_t i = 0; i < n; i++)
        kd_pl_msg_retry(p, ms[i], 250); /* out of memory: later */
    return false;
}

static void read_many_free(read_many *r) {
    free(r->asks);
    free(r->parts);
    free(r->notes);
}

static void uncertain_told(kd_pipeline *p, msg *m, left_claim *l, int32_t part,
                           const kd_recover_ask *a) {
    (void)l;
    uncertain_result(p, m, part, a);
}

/* ms[0..n) are deliveries possibly persisted (POSSIBLY_PERSISTED). Reads
 * each downstream partition once, from where the first of them would have
 * landed: found, a claim is completed with that record; absent, the message
 * is sent again under the same claim. When the partition cannot be read,
 * it is read again later, and after UNCERTAIN_TRIES the message is sent
 * again all the same (at least once). */
void kd_pl_resolve_uncertain(kd_pipeline *p, msg **ms, size_t n) {
    read_many r;

    if (read_many_init(p, &r, ms, n, false)) {
        r.told = uncertain_told;
        for (size_t i = 0; i < n; i++) {
            msg *m = ms[i];

            r.parts[i] = m->rkm->partition % p->routes[m->route].out_partitions;
            r.asks[i] = (kd_recover_ask){.key = m->key,
                                         .key_len = m->key_len,
                                         .from = m->scan_from,
                                         .settle_to = m->scan_settle,
                                         .sent_at_ms = m->sent_at_ms};
        }
        read_by_partition(p, &r);
    }
    read_many_free(&r);
}

/* What a read told of the note l that m met: recorded in the note, to be
 * applied when m meets its claim again (kd_pl_claim_takeover, which checks the
 * claim first); m is retried: at once when told, later when not. */
static void left_told(kd_pipeline *p, msg *m, left_claim *l, int32_t part,
                      const kd_recover_ask *a) {
    (void)part;
    if (a->result == KD_RECOVER_LATER) { /* read on from there next turn */
        if (a->from > l->scan_from)
            l->scan_from = a->from;
        if (!l->scan_settle)
            l->scan_settle = a->settle_to;
        kd_pl_msg_retry(p, m, 0);
        return;
    }
    if (a->result == KD_RECOVER_UNKNOWN && ++m->reads < UNCERTAIN_TRIES) {
        kd_pl_msg_retry(p, m, 250u << (m->reads < 6 ? m->reads : 6));
        return;
    }
    if (l->result == KD_RECOVER_LATER) { /* unless a copy read beside m told it first */
        l->result = a->result;
        l->found = a->found;
    }
    m->left_read = false;
    kd_pl_msg_retry(p, m, 0);
}

void kd_pl_resolve_left(kd_pipeline *p, msg **ms, size_t n) {
    read_many r;

    if (read_many_init(p, &r, ms, n, true)) {
        r.told = left_told;
        for (size_t i = 0; i < n; i++) {
            msg *m = ms[i];
            left_claim *l = kd_pl_msg_left_find(p, m->route, m->key, m->key_len);

            if (!l || l->result != KD_RECOVER_LATER) { /* gone or told: meets its claim */
                m->left_read = false;
                kd_pl_msg_retry(p, m, 0);
                ms[i] = NULL;
                continue;
            }
            r.parts[i] = l->out_partition;
            r.notes[i] = l;
            r.asks[i] = (kd_recover_ask){.key = m->key,
                                         .key_len = m->key_len,
                                         .from = l->scan_from,
                                         .settle_to = l->scan_settle,
                                         .sent_at_ms = l->sent_at_ms};
        }
        read_by_partition(p, &r);
    }
    read_many_free(&r);
}

/* Takes the messages of l, due for a read of downstream, and hands them
 * to read (which reads once per downstream partition) as an array. */
static void read_list(kd_pipeline *p, msg_list *l,
                      void (*read)(kd_pipeline *, msg **, size_t)) {
    msg_list all = list_take(l);
    msg **ms;
    size_t n = 0;

    if (!all.n)
        return;
    if (!(ms = malloc(all.n * sizeof(*ms)))) { /* out of memory: later */
        for (msg *m = all.head, *next; m; m = next) {
            next = m->next;
            kd_pl_msg_retry(p, m, 250);
        }
        return;
    }
    for (msg *m = all.head; m; m = m->next)
        ms[n++] = m;
    read(p, ms, n);
    free(ms);
}

void kd_pl_resolve_lists(kd_pipeline *p, msg_list *uncertain, msg_list *left) {
    read_list(p, uncertain, kd_pl_resolve_uncertain);
    read_list(p, left, kd_pl_resolve_left);
}
