/*
 * kdedup - completions: receipts recorded, and decided again when a given
 * claim was overtaken (file map: dedup_int.h).
 */
#include "dedup/dedup_int.h"

#include <stdlib.h>
#include <string.h>

/* Reads a leader's head and plans the receipt, or decides without writing. */
static void complete_leader(batch *b, size_t i, kd_completion *c, uint64_t now) {
    slot *s = &b->slots[i];
    kd_entry e;

    if (s->hinted) { /* this process's claim, as it was written: after it */
        uint64_t owner = atomic_load(&b->d->owner);

        e = (kd_entry){.kind = KD_ENTRY_ACTIVE,
                       .timestamp_ms = now,
                       .key = c->key,
                       .key_len = c->key_len,
                       .has_owner = owner != 0,
                       .owner = owner,
                       .has_fingerprint = c->fingerprint != NULL,
                       .fingerprint = c->fingerprint,
                       .has_receipt = true,
                       .receipt = c->receipt,
                       .receipt_len = c->receipt_len};
        s->head = (head){.found = true, .seq = c->claim_seq, .version = c->claim_version};
        c->err = kd_dedup_batch_plan(b, s, &e);
        return;
    }
    if ((c->err = s->read_err) != KD_OK)
        return;
    switch (kd_dedup_head_state(&s->head)) {
    case ST_ABSENT:
        c->err = KD_ERR_DEDUP_COLLISION;
        return;
    case ST_COMPLETED:
        c->err = kd_dedup_same_bytes(s->head.e.receipt, s->head.e.receipt_len, c->receipt,
                                     c->receipt_len)
                     ? KD_OK
                     : KD_ERR_DEDUP_COLLISION;
        return;
    case ST_IN_FLIGHT:
        break;
    }
    e = (kd_entry){.kind = KD_ENTRY_ACTIVE,
                   .timestamp_ms = now,
                   .key = c->key,
                   .key_len = c->key_len,
                   .has_owner = s->head.e.has_owner,
                   .owner = s->head.e.owner,
                   .has_fingerprint = s->head.e.has_fingerprint, /* kept */
                   .fingerprint = s->head.e.fingerprint,
                   .has_receipt = true,
                   .receipt = c->receipt,
                   .receipt_len = c->receipt_len};
    c->err = kd_dedup_batch_plan(b, s, &e);
}

/* Settles a planned receipt: a lost race counts only if the winner stored
 * the same receipt. */
static void complete_settle(batch *b, size_t i, kd_completion *c) {
    slot *s = &b->slots[i];

    c->err = s->append->result;
    if (c->err != KD_ERR_SEQUENCE_CONFLICT || s->hinted)
        return; /* hinted: overtaken, decided again (redo) */
    c->err =
        kd_dedup_head_read(b->d, s->stream, b->stream_len, c->key, c->key_len, &s->head);
    if (c->err != KD_OK)
        return;
    if (kd_dedup_head_state(&s->head) == ST_COMPLETED &&
        kd_dedup_same_bytes(s->head.e.receipt, s->head.e.receipt_len, c->receipt,
                            c->receipt_len))
        c->err = KD_OK;
    else
        c->err = KD_ERR_SEQUENCE_CONFLICT;
}

/* A repeated key: once its leader has completed it, it is completed with the
 * leader's receipt (or the stored one), so only the same bytes succeed. */
static void complete_follow(const kd_completion *lead, const slot *ls, kd_completion *c) {
    const void *r;
    size_t rlen;

    if (ls->append && lead->err == KD_OK) {
        r = lead->receipt;
        rlen = lead->receipt_len;
    } else if (kd_dedup_head_state(&ls->head) == ST_COMPLETED) {
        r = ls->head.e.receipt;
        rlen = ls->head.e.receipt_len;
    } else {
        c->err = lead->err;
        return;
    }
    c->err = kd_dedup_same_bytes(r, rlen, c->receipt, c->receipt_len)
                 ? KD_OK
                 : KD_ERR_DEDUP_COLLISION;
}

static kd_err complete_batch(kd_dedup *d, kd_completion *items, size_t n, bool lazy);

/* True when item i is to be decided again: its leader's given claim was
 * overtaken (something was written to the key since). */
static bool overtaken(const batch *b, const kd_completion *items, size_t i) {
    size_t lead = b->slots[i].leader;

    return lead != SIZE_MAX && b->slots[lead].hinted &&
           items[lead].err == KD_ERR_SEQUENCE_CONFLICT;
}

/* Decides the overtaken items again, reading their keys (a second write). */
static kd_err complete_redo(batch *b, kd_completion *items, bool lazy) {
    kd_completion *again;
    size_t *idx, k = 0;
    kd_err err = KD_OK;

    for (size_t i = 0; i < b->n; i++)
        k += overtaken(b, items, i);
    if (!k)
        return KD_OK;
    again = malloc(k * sizeof(*again));
    idx = malloc(k * sizeof(*idx));
    if (!again || !idx) { /* backwards: a leader comes before its followers */
        for (size_t i = b->n; i-- > 0;)
            if (overtaken(b, items, i))
                items[i].err = KD_ERR_STORE;
    } else {
        k = 0;
        for (size_t i = 0; i < b->n; i++)
            if (overtaken(b, items, i)) {
                idx[k] = i;
                again[k] = items[i];
                again[k].claim_seq = again[k].claim_version = 0;
                again[k].claim_hash = NULL;
                k++;
            }
        err = complete_batch(b->d, again, k, lazy);
        for (size_t j = 0; j < k; j++)
            items[idx[j]].err = err == KD_OK ? again[j].err : err;
    }
    free(again);
    free(idx);
    return KD_OK;
}

kd_err kd_dedup_complete_batch(kd_dedup *d, kd_completion *items, size_t n) {
    return complete_batch(d, items, n, false);
}

kd_err kd_dedup_complete_batch_lazy(kd_dedup *d, kd_completion *items, size_t n) {
    return complete_batch(d, items, n, true);
}

static kd_err complete_batch(kd_dedup *d, kd_completion *items, size_t n, bool lazy) {
    size_t pool = 0;
    batch b = {0};
    uint64_t now;
    kd_err err;

    if (!d || (!items && n))
        return KD_ERR_CONFIG;
    for (size_t i = 0; i < n; i++)
        if ((!items[i].key && items[i].key_len) ||
            (!items[i].receipt && items[i].receipt_len))
            return KD_ERR_CONFIG;
    for (size_t i = 0; i < n; i++) {
        items[i].err = KD_OK;
        pool += kd_dedup_entry_bound(items[i].key_len, true, items[i].receipt_len);
    }

    if (!kd_dedup_now_ms(&now))
        err = KD_ERR_CONFIG;
    else if ((err = kd_dedup_batch_alloc(&b, d, n, pool)) == KD_OK) {
        for (size_t i = 0; i < n; i++) {
            b.slots[i].key = items[i].key;
            b.slots[i].key_len = items[i].key_len;
            b.slots[i].given_hash = items[i].claim_version ? items[i].claim_hash : NULL;
        }
        err = kd_dedup_batch_hash(&b);
    }
    if (err != KD_OK) {
        for (size_t i = 0; i < n; i++)
            items[i].err = err;
        kd_dedup_batch_free(&b);
        return KD_OK;
    }

    for (size_t i = 0; i < n; i++)
        b.slots[i].hinted = b.slots[i].leader == i && items[i].claim_version != 0;
    kd_dedup_batch_read_heads(&b);
    for (size_t i = 0; i < n; i++) {
        if (b.slots[i].leader == SIZE_MAX)
            items[i].err = KD_ERR_DEDUP_COLLISION;
        else if (b.slots[i].leader == i)
            complete_leader(&b, i, &items[i], now);
    }
    if (lazy)
        kd_store_append_batch_lazy(d->store, b.appends, b.nappends);
    else
        kd_store_append_batch(d->store, b.appends, b.nappends);
    for (size_t i = 0; i < n; i++)
        if (b.slots[i].append && items[i].err == KD_OK)
            complete_settle(&b, i, &items[i]);
    for (size_t i = 0; i < n; i++) {
        size_t lead = b.slots[i].leader;

        if (lead != i && lead != SIZE_MAX)
            complete_follow(&items[lead], &b.slots[lead], &items[i]);
    }
    err = complete_redo(&b, items, lazy);
    kd_dedup_batch_free(&b);
    return err;
}

kd_err kd_dedup_complete_receipt(kd_dedup *d, const char *key, size_t key_len,
                                 const void *receipt, size_t receipt_len) {
    kd_completion c = {
        .key = key, .key_len = key_len, .receipt = receipt, .receipt_len = receipt_len};
    kd_err err = kd_dedup_complete_batch(d, &c, 1);

    return err != KD_OK ? err : c.err;
}
