/*
 * kdedup - the pipeline's receipts: written lazily, made durable by the
 * next synced write.
 *
 * A delivered message's receipt is the second store write of its key. The
 * receipts of delivery reports are written together, lazily (not synced:
 * kd_dedup_complete_batch_lazy), by the store thread just before the next
 * batch's claims (pipeline_ahead.c); only once a synced write or a sync has
 * covered them are their messages done and their offsets free to move:
 * at once when the job's own sync succeeded, else they wait on p->q.unsynced
 * for kd_pl_receipts_settle (as do those written while draining). A crash
 * in between loses the receipts, not the messages: their claims stay in
 * flight, their offsets were not committed, and recovery finds the
 * deliveries downstream. One disk sync a turn instead of two.
 */
#include "dedup/fmt.h"
#include "sidecar/log.h"
#include "sidecar/pipeline_int.h"
#include "sidecar/receipt.h"

#include <stdlib.h>
#include <string.h>

void kd_pl_receipts_gather(kd_pipeline *p, kd_pl_receipts *r, size_t max) {
    msg_list todo = list_take(&p->q.receipts);

    r->n = 0;
    if (!todo.n)
        return;
    if (max && todo.n > max) { /* the oldest max; the rest wait, in order */
        msg *last = todo.head;

        for (size_t i = 1; i < max; i++)
            last = last->next;
        p->q.receipts =
            (msg_list){.head = last->next, .tail = todo.tail, .n = todo.n - max};
        last->next = NULL;
        todo.tail = last;
        todo.n = max;
    }
    if ((kd_pl_store_failing(p) && kd_mono_ms() < p->health.retry_at) ||
        !kd_pl_receipts_reserve(r, todo.n)) {
        list_prepend(&p->q.receipts, &todo); /* try again next turn */
        return;
    }
    for (size_t route = 0; route < p->cfg->nroutes; route++) /* one write a route */
        for (msg *m = todo.head; m; m = m->next) {
            char *text = r->text + r->n * RECEIPT_MAX;

            if (m->route != route)
                continue;
            r->msgs[r->n] = m;
            r->c[r->n++] = (kd_completion){
                .key = m->key,
                .key_len = m->key_len,
                .receipt = text,
                .receipt_len = kd_pl_receipts_format(p, m, text, RECEIPT_MAX),
                .claim_seq = m->claim_seq, /* claimed by this run: not read again */
                .claim_version = m->claim_version,
                .claim_hash = m->claim_hash,
                .fingerprint = m->has_fp ? m->fp : NULL};
        }
}

size_t kd_pl_receipts_run(const kd_pl_receipts *r, size_t first) {
    size_t end = first + 1;

    while (end < r->n && r->msgs[end]->route == r->msgs[first]->route)
        end++;
    return end;
}

/* m's receipt is durable: m is done. */
static void receipt_done(kd_pipeline *p, msg *m) {
    RCOUNT(p, m->route, forwarded);
    observe_since(kd_metrics_forward_latency(p->metrics), m->consumed_us);
    kd_pl_msg_done(p, m);
}

void kd_pl_receipts_apply(kd_pipeline *p, kd_pl_receipts *r, bool durable) {
    for (size_t i = 0; i < r->n; i++) {
        msg *m = r->msgs[i];
        kd_err err = r->c[i].err;

        if (err == KD_OK || err == KD_ERR_DEDUP_COLLISION) {
            if (err != KD_OK) { /* delivered all the same: the claim had gone */
                MSG_FIELDS(m, part, off);
                KD_LOG(
                    KD_LOG_WARN, fields,
                    "receipt not recorded: the key was completed by another delivery "
                    "(e.g. one a handover learned meanwhile) or its claim was released; "
                    "this message went downstream all the same, so the key may be there "
                    "twice (kdedup_dedup_collisions_total)");
                GCOUNT(p, collisions, 1);
            }
            if (durable)
                receipt_done(p, m);
            else
                list_push(&p->q.unsynced, m); /* done once the receipt is durable */
        } else {
            list_push(&p->q.receipts,
                      m); /* kd_pl_store_failed: kd_pl_store_complete_health */
        }
    }
    r->n = 0;
}

void kd_pl_receipts_write(kd_pipeline *p) {
    kd_pl_receipts *r = &p->receipts_now;

    kd_pl_receipts_gather(p, r, 0);
    for (size_t first = 0, end; first < r->n; first = end) {
        end = kd_pl_receipts_run(r, first);
        kd_pl_store_complete_timed(p, r->msgs[first]->route, r->c + first, end - first,
                                   true);
    }
    kd_pl_receipts_apply(p, r, false);
}

void kd_pl_receipts_settle(kd_pipeline *p) {
    msg_list all;

    if (!p->q.unsynced.n || (kd_pl_store_failing(p) && kd_mono_ms() < p->health.retry_at))
        return;
    if (kd_store_sync(p->store) != KD_OK) {
        kd_pl_store_failed(p, p->q.unsynced.head->route, "receipt sync");
        return;
    }
    kd_pl_store_ok(p);
    all = list_take(&p->q.unsynced);
    for (msg *m = all.head, *next; m; m = next) {
        next = m->next;
        receipt_done(p, m);
    }
}

/* A receipt: where a message went (downstream partition, offset and
 * timestamp) and where it came from (source partition and offset). */
size_t kd_pl_receipts_text(const kd_pipeline *p, size_t route, int32_t out_part,
                           int64_t out_off, int64_t ts, int32_t src_part, int64_t src_off,
                           char *buf, size_t size) {
    const kd_route *r = p->routes[route].cfg;
    kd_receipt rec = {.to = r->to,
                      .to_len = strlen(r->to),
                      .to_partition = out_part,
                      .to_offset = out_off,
                      .timestamp = ts,
                      .from = r->from,
                      .from_len = strlen(r->from),
                      .from_partition = src_part,
                      .from_offset = src_off};

    return kd_receipt_format(&rec, buf, size);
}

size_t kd_pl_receipts_format(const kd_pipeline *p, const msg *m, char *buf, size_t size) {
    size_t n = kd_pl_receipts_text(p, m->route, m->out_partition, m->out_offset,
                                   m->out_timestamp, m->rkm->partition, m->rkm->offset,
                                   buf, size);
    kd_fmt f;

    if (!m->has_fp || n + 1 >= size)
        return n;
    f = kd_fmt_on(buf + n, size - n);
    kd_fmt_mem(&f, " fp=", 4);
    kd_fmt_hex(&f, m->fp, KD_FINGERPRINT_LEN);
    return n + kd_fmt_len(&f);
}

bool kd_pl_receipts_reserve(kd_pl_receipts *r, size_t n) {
    kd_completion *c;
    msg **msgs;
    char *text;

    if (n <= r->cap)
        return true;
    if ((c = realloc(r->c, n * sizeof(*c))))
        r->c = c;
    if ((msgs = realloc(r->msgs, n * sizeof(*msgs))))
        r->msgs = msgs;
    if ((text = realloc(r->text, n * RECEIPT_MAX)))
        r->text = text;
    if (!c || !msgs || !text)
        return false;
    r->cap = n;
    return true;
}

void kd_pl_receipts_free(kd_pl_receipts *r) {
    free(r->c);
    free(r->msgs);
    free(r->text);
    memset(r, 0, sizeof(*r));
}
