/*
 * kdedup - batches: every key hashed once, repeats grouped behind their
 * leader, the leaders' heads read with one store call, and the appends
 * planned into one pool (file map: dedup_int.h).
 */
#include "dedup/dedup_int.h"

#include <stdlib.h>
#include <string.h>

typedef struct hash_ref {
    uint64_t lead; /* the hash's first 8 bytes, big-endian: most compares end here */
    const unsigned char *hash;
    size_t idx;
} hash_ref;

static uint64_t lead_of(const unsigned char *hash) {
    uint64_t v = 0;

    for (int i = 0; i < 8; i++)
        v = v << 8 | hash[i];
    return v;
}

/* memcmp() order of the hashes, then array order. */
static int hash_ref_cmp(const void *a, const void *b) {
    const hash_ref *x = a, *y = b;
    int c;

    if (x->lead != y->lead)
        return x->lead < y->lead ? -1 : 1;
    if ((c = memcmp(x->hash + 8, y->hash + 8, HASH_LEN - 8)) != 0)
        return c;
    return x->idx < y->idx ? -1 : x->idx > y->idx;
}

/* Sets every slot's leader: the first item with the same hash. Keys that
 * share a hash but differ are a collision, reported on the later item by
 * setting its leader to SIZE_MAX. */
static kd_err batch_group(batch *b) {
    hash_ref *refs;

    for (size_t i = 0; i < b->n; i++)
        b->slots[i].leader = i;
    if (b->n < 2)
        return KD_OK;
    if (!(refs = malloc(b->n * sizeof(*refs))))
        return KD_ERR_STORE;
    for (size_t i = 0; i < b->n; i++)
        refs[i] = (hash_ref){lead_of(b->slots[i].hash), b->slots[i].hash, i};
    qsort(refs, b->n, sizeof(*refs), hash_ref_cmp);
    for (size_t i = 1; i < b->n; i++) {
        size_t lead = refs[i - 1].idx, me = refs[i].idx;

        if (memcmp(refs[i - 1].hash, refs[i].hash, HASH_LEN) != 0)
            continue;
        lead = b->slots[lead].leader == SIZE_MAX ? lead : b->slots[lead].leader;
        if (kd_dedup_same_bytes(b->slots[lead].key, b->slots[lead].key_len,
                                b->slots[me].key, b->slots[me].key_len)) {
            b->slots[me].leader = lead;
        } else {
            b->slots[me].leader = SIZE_MAX;
            refs[i].idx = lead; /* later equal hashes compare against the leader */
        }
    }
    free(refs);
    return KD_OK;
}

/* The most an entry of key_len bytes takes, encoded, with a receipt of
 * receipt_len bytes when has_receipt (0 when the lengths do not fit). */
size_t kd_dedup_entry_bound(size_t key_len, bool has_receipt, size_t receipt_len) {
    kd_entry e = {.key_len = key_len,
                  .has_owner = true,
                  .has_fingerprint = true,
                  .has_receipt = has_receipt,
                  .receipt_len = receipt_len};

    return kd_entry_encoded_size(&e);
}

/* Allocates room for n keys, and pool_bytes for the entries it will plan
 * (their bound: kd_dedup_entry_bound()); the caller then sets each slot's key. */
kd_err kd_dedup_batch_alloc(batch *b, kd_dedup *d, size_t n, size_t pool_bytes) {
    memset(b, 0, sizeof(*b));
    b->d = d;
    b->n = n;
    b->stream_len = kd_dedup_stream_len(d);
    b->slots = calloc(n ? n : 1, sizeof(*b->slots));
    b->arena = malloc(n ? n * b->stream_len : 1);
    /* each read and append is written whole before it is used (read_heads,
     * batch_plan): not zeroed here */
    b->appends = malloc((n ? n : 1) * sizeof(*b->appends));
    b->reads = malloc((n ? n : 1) * sizeof(*b->reads));
    b->pool = malloc(pool_bytes ? pool_bytes : 1);
    b->pool_cap = pool_bytes;
    return b->slots && b->arena && b->appends && b->reads && b->pool ? KD_OK
                                                                     : KD_ERR_STORE;
}

/* Reads the heads of all leaders with one store call, and decodes them. */
void kd_dedup_batch_read_heads(batch *b) {
    size_t nreads = 0;
    kd_err err;

    for (size_t i = 0; i < b->n; i++)
        if (b->slots[i].leader == i && !b->slots[i].hinted)
            b->reads[nreads++] =
                (kd_read){.stream = b->slots[i].stream, .stream_len = b->stream_len};
    err = kd_store_read_last_batch(b->d->store, b->reads, nreads);
    nreads = 0;
    for (size_t i = 0; i < b->n; i++) {
        slot *s = &b->slots[i];
        kd_read *r;

        if (s->leader != i || s->hinted)
            continue;
        r = &b->reads[nreads++];
        s->head = (head){.found = r->found,
                         .seq = r->seq,
                         .version = r->version,
                         .payload = r->payload,
                         .payload_len = r->payload_len};
        if (!r->found) {
            free(r->payload);
            s->head.payload = NULL;
        }
        s->read_err = err != KD_OK ? err : r->err;
        if (s->read_err == KD_OK)
            s->read_err = kd_dedup_head_decode(&s->head, s->key, s->key_len);
    }
}

/* Hashes each key once (or takes the hash its claim gave) and groups
 * repeats behind their leader. */
kd_err kd_dedup_batch_hash(batch *b) {
    for (size_t i = 0; i < b->n; i++) {
        slot *s = &b->slots[i];

        s->stream = b->arena + i * b->stream_len;
        if (s->given_hash) {
            memcpy(s->hash, s->given_hash, HASH_LEN);
            kd_dedup_stream_key(b->d, s->hash, s->stream);
        } else {
            kd_dedup_stream_of(b->d, s->key, s->key_len, s->hash, s->stream);
        }
    }
    return batch_group(b);
}

void kd_dedup_batch_free(batch *b) {
    for (size_t i = 0; b->slots && i < b->n; i++)
        kd_dedup_head_clear(&b->slots[i].head);
    free(b->slots);
    free(b->arena);
    free(b->appends);
    free(b->reads);
    free(b->pool);
}

/* Encodes e into the batch's pool and queues its append after the slot's
 * head. */
kd_err kd_dedup_batch_plan(batch *b, slot *s, const kd_entry *e) {
    kd_append *a = &b->appends[b->nappends];
    unsigned char *buf = b->pool + b->pool_used;
    size_t len;
    kd_err err;

    /* the pool holds every item's kd_dedup_entry_bound(): e fits, or does not encode */
    if ((err = kd_entry_encode(e, buf, b->pool_cap - b->pool_used, &len)) != KD_OK)
        return err;
    b->pool_used += len;
    *a = (kd_append){.stream = s->stream,
                     .stream_len = b->stream_len,
                     .expected_seq = kd_dedup_next_seq(&s->head),
                     .version = s->head.version,
                     .payload = buf,
                     .payload_len = len};
    s->append = a;
    b->nappends++;
    return KD_OK;
}
