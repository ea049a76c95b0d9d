/*
 * kdedup - the dedup contract over a kd_store (semantics in dedup.h and
 * docs/architecture.md).
 *
 * Single-key calls are batches of one, so there is one implementation of
 * each rule. A batch: hash every key once, group repeated keys behind their
 * first occurrence (the leader), read each leader's newest entry, plan the
 * appends, write them with one kd_store_append_batch(), then settle lost
 * races by re-reading, and give the followers their leader's outcome.
 *
 * A completion given its claim (kd_completion.claim_*) skips the read: its
 * append names the claim's seq and the store's version of that write, and
 * the store checks nothing was written since. When something was, the item
 * is decided again the ordinary way, in a second batch (complete_redo).
 */
#include "dedup/dedup.h"
#include "dedup/entry.h"
#include "dedup/hex.h"
#include "dedup/sha256.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define HASH_LEN KD_SHA256_LEN

_Static_assert(KD_FINGERPRINT_LEN == KD_ENTRY_FINGERPRINT_LEN,
               "a decision holds an entry's fingerprint");
_Static_assert(KD_KEY_HASH_LEN == HASH_LEN, "kd_claim.hash is a stream's hash");
#define HEX_LEN (2 * HASH_LEN)

struct kd_dedup {
    kd_store *store;
    char *ns;
    size_t ns_len;
    _Atomic uint64_t ttl_ms;
    _Atomic uint64_t inflight_ms;
    _Atomic uint64_t owner;
};

/* The newest entry of one stream; e borrows from payload. */
typedef struct head {
    bool found;
    uint64_t seq;
    uint64_t version; /* the store's stamp of this read (kd_read.version) */
    void *payload;
    size_t payload_len;
    kd_entry e;
} head;

typedef enum key_state { ST_ABSENT, ST_IN_FLIGHT, ST_COMPLETED } key_state;

/* Per-key working state of a batch. */
typedef struct slot {
    const char *key;
    size_t key_len;
    const unsigned char *given_hash; /* the key's hash, as its claim gave it, or NULL */
    unsigned char hash[HASH_LEN];
    char *stream;  /* into the batch's arena */
    size_t leader; /* index of the first item with this key */
    head head;
    kd_err read_err;   /* leaders: reading or decoding the head failed */
    kd_append *append; /* the planned append, or NULL (its payload: in b->pool) */
    bool hinted;       /* completions: its claim was given, not read */
} slot;

typedef struct batch {
    kd_dedup *d;
    size_t n;
    size_t stream_len;
    slot *slots;
    char *arena;
    kd_append *appends;
    size_t nappends;
    kd_read *reads;
    unsigned char *pool; /* the planned entries, encoded: one allocation a batch */
    size_t pool_cap, pool_used;
} batch;

void kd_decision_clear(kd_decision *d) {
    if (!d)
        return;
    free(d->receipt);
    d->receipt = NULL;
    d->receipt_len = 0;
}

kd_dedup *kd_dedup_new(kd_store *store, const char *namespace_) {
    kd_dedup *d;

    if (!store || !namespace_)
        return NULL;
    if (!(d = calloc(1, sizeof(*d))))
        return NULL;
    d->ns_len = strlen(namespace_);
    if (!(d->ns = malloc(d->ns_len + 1))) {
        free(d);
        return NULL;
    }
    memcpy(d->ns, namespace_, d->ns_len + 1);
    d->store = store;
    return d;
}

void kd_dedup_destroy(kd_dedup *d) {
    if (!d)
        return;
    free(d->ns);
    free(d);
}

void kd_dedup_set_retention(kd_dedup *d, uint64_t ttl_ms, uint64_t inflight_timeout_ms) {
    atomic_store(&d->ttl_ms, ttl_ms);
    atomic_store(&d->inflight_ms, inflight_timeout_ms);
    kd_store_set_retention(d->store, ttl_ms, inflight_timeout_ms);
}

void kd_dedup_set_owner(kd_dedup *d, uint64_t owner) {
    atomic_store(&d->owner, owner);
}

/* Writes ns ":" hex(hash) into out, which holds d->ns_len + 1 + HEX_LEN bytes
 * (kd_hex_put: no NUL). */
static void stream_key(const kd_dedup *d, const unsigned char *hash, char *out) {
    char *digits = out + d->ns_len + 1;

    memcpy(out, d->ns, d->ns_len);
    out[d->ns_len] = ':';
    kd_hex_put(hash, HASH_LEN, digits);
}

/* Hashes key and writes its stream key into out (stream_len(d) bytes). */
static void stream_of(const kd_dedup *d, const char *key, size_t key_len,
                      unsigned char *hash, char *out) {
    kd_sha256(key, key_len,
              hash); /* a failure maps every key to one stream: collisions */
    stream_key(d, hash, out);
}

static size_t stream_len(const kd_dedup *d) {
    return d->ns_len + 1 + HEX_LEN;
}

size_t kd_dedup_stream_key_for(const kd_dedup *d, const char *key, size_t key_len,
                               char *buf, size_t buf_size) {
    size_t full = stream_len(d);
    unsigned char hash[HASH_LEN];
    char tmp[256];
    char *s = full <= sizeof(tmp) ? tmp : malloc(full);

    if (buf_size == 0)
        return full;
    buf[0] = '\0';
    if (!s)
        return full;
    stream_of(d, key, key_len, hash, s);
    memcpy(buf, s, full < buf_size ? full : buf_size - 1);
    buf[full < buf_size ? full : buf_size - 1] = '\0';
    if (s != tmp)
        free(s);
    return full;
}

/* The wall clock in ms since the epoch; false when it cannot be read or is
 * before the epoch (not encodable). */
static bool now_ms(uint64_t *out) {
    struct timespec ts;

    if (clock_gettime(CLOCK_REALTIME, &ts) != 0 || ts.tv_sec < 0)
        return false;
    *out = (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
    return true;
}

static void head_clear(head *h) {
    free(h->payload);
    memset(h, 0, sizeof(*h));
}

/* Decodes a head just read, and checks that it belongs to key. */
static kd_err head_decode(head *h, const char *key, size_t key_len) {
    kd_err err;

    if (!h->found)
        return KD_OK;
    if ((err = kd_entry_decode(h->payload, h->payload_len, &h->e)) != KD_OK)
        return err;
    if (h->e.key_len != key_len || (key_len && memcmp(h->e.key, key, key_len) != 0))
        return KD_ERR_DEDUP_COLLISION;
    return KD_OK;
}

/* Reads and decodes the newest entry of a stream, and checks that it belongs
 * to key. */
static kd_err head_read(kd_dedup *d, const char *stream, size_t stream_len,
                        const char *key, size_t key_len, head *h) {
    kd_err err;

    head_clear(h);
    err = kd_store_read_last(d->store, stream, stream_len, &h->seq, &h->payload,
                             &h->payload_len, &h->found);
    return err != KD_OK ? err : head_decode(h, key, key_len);
}

/* True when the entry has outlived the cache's retention at now. */
static bool expired(const kd_dedup *d, const kd_entry *e, uint64_t now) {
    uint64_t limit =
        e->has_receipt ? atomic_load(&d->ttl_ms) : atomic_load(&d->inflight_ms);

    return limit && now >= e->timestamp_ms && now - e->timestamp_ms >= limit;
}

static key_state head_state(const head *h) {
    if (!h->found || h->e.kind == KD_ENTRY_TOMBSTONE)
        return ST_ABSENT;
    return h->e.has_receipt ? ST_COMPLETED : ST_IN_FLIGHT;
}

/* head_state(), with retention applied at now. */
static key_state head_state_at(const kd_dedup *d, const head *h, uint64_t now) {
    key_state st = head_state(h);

    return st != ST_ABSENT && expired(d, &h->e, now) ? ST_ABSENT : st;
}

static uint64_t next_seq(const head *h) {
    return h->found ? h->seq + 1 : 0;
}

static bool same_bytes(const void *a, size_t alen, const void *b, size_t blen) {
    return alen == blen && (alen == 0 || memcmp(a, b, alen) == 0);
}

/* Fills out from a present head (in flight or completed). */
static kd_err decision_from_head(const head *h, kd_decision *out) {
    memset(out, 0, sizeof(*out));
    out->timestamp_ms = h->e.timestamp_ms;
    if (h->e.has_fingerprint) {
        out->has_fingerprint = true;
        memcpy(out->fingerprint, h->e.fingerprint, KD_FINGERPRINT_LEN);
    }
    if (!h->e.has_receipt) {
        out->state = KD_IN_FLIGHT;
        return KD_OK;
    }
    out->state = KD_COMPLETED;
    if (!(out->receipt = malloc(h->e.receipt_len ? h->e.receipt_len : 1)))
        return KD_ERR_STORE;
    memcpy(out->receipt, h->e.receipt, h->e.receipt_len);
    out->receipt_len = h->e.receipt_len;
    return KD_OK;
}

static kd_err decision_copy(const kd_decision *src, kd_decision *dst) {
    *dst = *src;
    dst->receipt = NULL;
    if (src->state != KD_COMPLETED)
        return KD_OK;
    if (!(dst->receipt = malloc(src->receipt_len ? src->receipt_len : 1)))
        return KD_ERR_STORE;
    memcpy(dst->receipt, src->receipt, src->receipt_len);
    return KD_OK;
}

/*
 * Batches.
 */

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
        if (same_bytes(b->slots[lead].key, b->slots[lead].key_len, b->slots[me].key,
                       b->slots[me].key_len)) {
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
static size_t entry_bound(size_t key_len, bool has_receipt, size_t receipt_len) {
    kd_entry e = {.key_len = key_len,
                  .has_owner = true,
                  .has_fingerprint = true,
                  .has_receipt = has_receipt,
                  .receipt_len = receipt_len};

    return kd_entry_encoded_size(&e);
}

/* Allocates room for n keys, and pool_bytes for the entries it will plan
 * (their bound: entry_bound()); the caller then sets each slot's key. */
static kd_err batch_alloc(batch *b, kd_dedup *d, size_t n, size_t pool_bytes) {
    memset(b, 0, sizeof(*b));
    b->d = d;
    b->n = n;
    b->stream_len = stream_len(d);
    b->slots = calloc(n ? n : 1, sizeof(*b->slots));
    b->arena = malloc(n ? n * b->stream_len : 1);
    b->appends = calloc(n ? n : 1, sizeof(*b->appends));
    b->reads = calloc(n ? n : 1, sizeof(*b->reads));
    b->pool = malloc(pool_bytes ? pool_bytes : 1);
    b->pool_cap = pool_bytes;
    return b->slots && b->arena && b->appends && b->reads && b->pool ? KD_OK
                                                                     : KD_ERR_STORE;
}

/* Reads the heads of all leaders with one store call, and decodes them. */
static void batch_read_heads(batch *b) {
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
            s->read_err = head_decode(&s->head, s->key, s->key_len);
    }
}

/* Hashes each key once (or takes the hash its claim gave) and groups
 * repeats behind their leader. */
static kd_err batch_hash(batch *b) {
    for (size_t i = 0; i < b->n; i++) {
        slot *s = &b->slots[i];

        s->stream = b->arena + i * b->stream_len;
        if (s->given_hash) {
            memcpy(s->hash, s->given_hash, HASH_LEN);
            stream_key(b->d, s->hash, s->stream);
        } else {
            stream_of(b->d, s->key, s->key_len, s->hash, s->stream);
        }
    }
    return batch_group(b);
}

static void batch_free(batch *b) {
    for (size_t i = 0; b->slots && i < b->n; i++)
        head_clear(&b->slots[i].head);
    free(b->slots);
    free(b->arena);
    free(b->appends);
    free(b->reads);
    free(b->pool);
}

/* Encodes e into the batch's pool and queues its append after the slot's
 * head. */
static kd_err batch_plan(batch *b, slot *s, const kd_entry *e) {
    kd_append *a = &b->appends[b->nappends];
    unsigned char *buf = b->pool + b->pool_used;
    size_t len;
    kd_err err;

    /* the pool holds every item's entry_bound(): e fits, or does not encode */
    if ((err = kd_entry_encode(e, buf, b->pool_cap - b->pool_used, &len)) != KD_OK)
        return err;
    b->pool_used += len;
    *a = (kd_append){.stream = s->stream,
                     .stream_len = b->stream_len,
                     .expected_seq = next_seq(&s->head),
                     .version = s->head.version,
                     .payload = buf,
                     .payload_len = len};
    s->append = a;
    b->nappends++;
    return KD_OK;
}

/*
 * Claims.
 */

/* The time a new claim of c is written with: its own, or the batch's ts. */
static uint64_t claim_time(const kd_claim *c, uint64_t ts) {
    return c->claimed_at ? c->claimed_at : ts;
}

/* Reads a leader's head and either plans its claim or sets its decision. */
static void claim_leader(batch *b, size_t i, kd_claim *c, uint64_t ts) {
    slot *s = &b->slots[i];
    kd_entry e;

    if ((c->err = s->read_err) != KD_OK)
        return;
    c->expired = false;
    c->expired_owner = 0;
    c->tombstoned_at = s->head.found && s->head.e.kind == KD_ENTRY_TOMBSTONE
                           ? s->head.e.timestamp_ms
                           : 0;
    c->forgotten_at = s->head.e.reason != KD_TOMB_RELEASE ? c->tombstoned_at : 0;
    if (head_state_at(b->d, &s->head, ts) != ST_ABSENT) {
        c->owner = s->head.e.has_owner ? s->head.e.owner : 0;
        c->err = decision_from_head(&s->head, &c->decision);
        return;
    }
    if (head_state(&s->head) == ST_IN_FLIGHT) { /* expired: say whose it was */
        c->expired = true;
        c->expired_owner = s->head.e.has_owner ? s->head.e.owner : 0;
        c->expired_at = s->head.e.timestamp_ms;
    }
    e = (kd_entry){.kind = KD_ENTRY_ACTIVE,
                   .timestamp_ms = claim_time(c, ts),
                   .key = c->key,
                   .key_len = c->key_len};
    e.owner = atomic_load(&b->d->owner);
    e.has_owner = e.owner != 0;
    e.has_fingerprint = c->fingerprint != NULL;
    e.fingerprint = c->fingerprint;
    c->err = batch_plan(b, s, &e);
}

/* Settles a planned claim after the write: claimed, or the race's winner. */
static void claim_settle(batch *b, size_t i, kd_claim *c, uint64_t ts) {
    slot *s = &b->slots[i];
    kd_err res = s->append->result;

    if (res == KD_OK) {
        c->decision =
            (kd_decision){.state = KD_CLAIMED, .timestamp_ms = claim_time(c, ts)};
        c->owner = atomic_load(&b->d->owner);
        c->seq = s->append->expected_seq;
        c->version = s->append->written_version;
        c->err = KD_OK;
        return;
    }
    c->err = res;
    c->expired = false; /* another claimer won, or nothing was written */
    if (res != KD_ERR_SEQUENCE_CONFLICT)
        return;
    c->err = head_read(b->d, s->stream, b->stream_len, c->key, c->key_len, &s->head);
    if (c->err != KD_OK)
        return;
    if (head_state(&s->head) == ST_ABSENT) {
        c->err = KD_ERR_SEQUENCE_CONFLICT;
        return;
    }
    c->owner = s->head.e.has_owner ? s->head.e.owner : 0;
    c->err = decision_from_head(&s->head, &c->decision);
}

/* A repeated key: in flight behind its leader's claim, or the same decision. */
static void claim_follow(const kd_claim *lead, kd_claim *c) {
    c->err = lead->err;
    c->owner = lead->owner;
    if (lead->err != KD_OK)
        return;
    if (lead->decision.state == KD_CLAIMED) {
        c->decision = (kd_decision){.state = KD_IN_FLIGHT,
                                    .timestamp_ms = lead->decision.timestamp_ms};
        if (lead->fingerprint) { /* what the leader's claim stored */
            c->decision.has_fingerprint = true;
            memcpy(c->decision.fingerprint, lead->fingerprint, KD_FINGERPRINT_LEN);
        }
        return;
    }
    c->err = decision_copy(&lead->decision, &c->decision);
}

static void claims_fail(kd_claim *claims, size_t n, kd_err err) {
    for (size_t i = 0; i < n; i++)
        claims[i].err = err;
}

kd_err kd_dedup_claim_batch(kd_dedup *d, kd_claim *claims, size_t n,
                            uint64_t timestamp_ms) {
    size_t pool = 0;
    batch b;
    kd_err err;

    if (!d || (!claims && n))
        return KD_ERR_CONFIG;
    for (size_t i = 0; i < n; i++)
        if (!claims[i].key && claims[i].key_len)
            return KD_ERR_CONFIG;
    for (size_t i = 0; i < n; i++) {
        claims[i] = (kd_claim){.key = claims[i].key,
                               .key_len = claims[i].key_len,
                               .fingerprint = claims[i].fingerprint,
                               .claimed_at = claims[i].claimed_at};
        pool += entry_bound(claims[i].key_len, false, 0);
    }

    if ((err = batch_alloc(&b, d, n, pool)) == KD_OK) {
        for (size_t i = 0; i < n; i++) {
            b.slots[i].key = claims[i].key;
            b.slots[i].key_len = claims[i].key_len;
        }
        err = batch_hash(&b);
    }
    if (err != KD_OK) {
        claims_fail(claims, n, err);
        batch_free(&b);
        return KD_OK;
    }

    for (size_t i = 0; i < n; i++)
        memcpy(claims[i].hash, b.slots[i].hash, HASH_LEN);
    batch_read_heads(&b);
    for (size_t i = 0; i < n; i++) {
        if (b.slots[i].leader == SIZE_MAX)
            claims[i].err = KD_ERR_DEDUP_COLLISION;
        else if (b.slots[i].leader == i)
            claim_leader(&b, i, &claims[i], timestamp_ms);
    }
    kd_store_append_batch(d->store, b.appends, b.nappends);
    for (size_t i = 0; i < n; i++)
        if (b.slots[i].append && claims[i].err == KD_OK)
            claim_settle(&b, i, &claims[i], timestamp_ms);
    for (size_t i = 0; i < n; i++) {
        size_t lead = b.slots[i].leader;

        if (lead != i && lead != SIZE_MAX)
            claim_follow(&claims[lead], &claims[i]);
    }
    batch_free(&b);
    return KD_OK;
}

kd_err kd_dedup_claim_or_get(kd_dedup *d, const char *key, size_t key_len,
                             uint64_t timestamp_ms, kd_decision *out) {
    kd_claim c = {.key = key, .key_len = key_len};
    kd_err err;

    if (!out)
        return KD_ERR_CONFIG;
    memset(out, 0, sizeof(*out));
    if ((err = kd_dedup_claim_batch(d, &c, 1, timestamp_ms)) != KD_OK)
        return err;
    if (c.err == KD_OK)
        *out = c.decision;
    return c.err;
}

/*
 * Completions.
 */

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
        c->err = batch_plan(b, s, &e);
        return;
    }
    if ((c->err = s->read_err) != KD_OK)
        return;
    switch (head_state(&s->head)) {
    case ST_ABSENT:
        c->err = KD_ERR_DEDUP_COLLISION;
        return;
    case ST_COMPLETED:
        c->err = same_bytes(s->head.e.receipt, s->head.e.receipt_len, c->receipt,
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
    c->err = batch_plan(b, s, &e);
}

/* Settles a planned receipt: a lost race counts only if the winner stored
 * the same receipt. */
static void complete_settle(batch *b, size_t i, kd_completion *c) {
    slot *s = &b->slots[i];

    c->err = s->append->result;
    if (c->err != KD_ERR_SEQUENCE_CONFLICT || s->hinted)
        return; /* hinted: overtaken, decided again (redo) */
    c->err = head_read(b->d, s->stream, b->stream_len, c->key, c->key_len, &s->head);
    if (c->err != KD_OK)
        return;
    if (head_state(&s->head) == ST_COMPLETED &&
        same_bytes(s->head.e.receipt, s->head.e.receipt_len, c->receipt, c->receipt_len))
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
    } else if (head_state(&ls->head) == ST_COMPLETED) {
        r = ls->head.e.receipt;
        rlen = ls->head.e.receipt_len;
    } else {
        c->err = lead->err;
        return;
    }
    c->err =
        same_bytes(r, rlen, c->receipt, c->receipt_len) ? KD_OK : KD_ERR_DEDUP_COLLISION;
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
        pool += entry_bound(items[i].key_len, true, items[i].receipt_len);
    }

    if (!now_ms(&now))
        err = KD_ERR_CONFIG;
    else if ((err = batch_alloc(&b, d, n, pool)) == KD_OK) {
        for (size_t i = 0; i < n; i++) {
            b.slots[i].key = items[i].key;
            b.slots[i].key_len = items[i].key_len;
            b.slots[i].given_hash = items[i].claim_version ? items[i].claim_hash : NULL;
        }
        err = batch_hash(&b);
    }
    if (err != KD_OK) {
        for (size_t i = 0; i < n; i++)
            items[i].err = err;
        batch_free(&b);
        return KD_OK;
    }

    for (size_t i = 0; i < n; i++)
        b.slots[i].hinted = b.slots[i].leader == i && items[i].claim_version != 0;
    batch_read_heads(&b);
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
    batch_free(&b);
    return err;
}

kd_err kd_dedup_complete_receipt(kd_dedup *d, const char *key, size_t key_len,
                                 const void *receipt, size_t receipt_len) {
    kd_completion c = {
        .key = key, .key_len = key_len, .receipt = receipt, .receipt_len = receipt_len};
    kd_err err = kd_dedup_complete_batch(d, &c, 1);

    return err != KD_OK ? err : c.err;
}

/*
 * Lookup and release: one key, no batch form.
 */

/* Hashes key and reads its stream's head; *stream is malloc()ed. */
static kd_err single_read(kd_dedup *d, const char *key, size_t key_len, char **stream,
                          head *h) {
    unsigned char hash[HASH_LEN];

    if (!(*stream = malloc(stream_len(d))))
        return KD_ERR_STORE;
    stream_of(d, key, key_len, hash, *stream);
    return head_read(d, *stream, stream_len(d), key, key_len, h);
}

kd_err kd_dedup_inspect(kd_dedup *d, const char *key, size_t key_len, kd_decision *out,
                        uint64_t *owner, bool *found) {
    char *stream = NULL;
    head h = {0};
    uint64_t now;
    kd_err err;

    if (!d || !out || !found || (!key && key_len))
        return KD_ERR_CONFIG;
    memset(out, 0, sizeof(*out));
    *found = false;
    if (owner)
        *owner = 0;
    if (!now_ms(&now))
        return KD_ERR_CONFIG;
    err = single_read(d, key, key_len, &stream, &h);
    if (err == KD_OK && head_state_at(d, &h, now) != ST_ABSENT) {
        err = decision_from_head(&h, out);
        *found = err == KD_OK;
        if (*found && owner && out->state == KD_IN_FLIGHT && h.e.has_owner)
            *owner = h.e.owner;
    }
    head_clear(&h);
    free(stream);
    return err;
}

kd_err kd_dedup_lookup(kd_dedup *d, const char *key, size_t key_len, kd_decision *out,
                       bool *found) {
    return kd_dedup_inspect(d, key, key_len, out, NULL, found);
}

/* Appends a tombstone of key (at now, for reason) to stream as the entry
 * after h. */
static kd_err append_tombstone(kd_dedup *d, const char *stream, const head *h,
                               const char *key, size_t key_len, uint64_t now,
                               kd_tomb_reason reason) {
    kd_entry e = {.kind = KD_ENTRY_TOMBSTONE,
                  .reason = reason,
                  .timestamp_ms = now,
                  .key = key,
                  .key_len = key_len};
    void *payload;
    size_t payload_len;
    kd_err err;

    if ((err = kd_entry_encode_alloc(&e, &payload, &payload_len)) != KD_OK)
        return err;
    err = kd_store_append(d->store, stream, stream_len(d), next_seq(h), payload,
                          payload_len);
    free(payload);
    return err;
}

/* How a forget judges the key: an operator's (force, protect), or one made
 * elsewhere and replayed (covers, dated at). */
typedef struct forget_rule {
    bool force;
    bool (*protect)(void *arg, uint64_t owner);
    bool (*covers)(void *arg, const kd_decision *dec);
    void *arg;
    uint64_t at; /* the tombstone's time; 0: now */
} forget_rule;

/* A completed head: true in *yes when the rule forgets it. */
static kd_err forget_covers(const head *h, const forget_rule *rule, bool *yes) {
    kd_decision dec;
    kd_err err;

    *yes = true;
    if (!rule->covers)
        return KD_OK;
    if ((err = decision_from_head(h, &dec)) != KD_OK)
        return err;
    *yes = rule->covers(rule->arg, &dec);
    kd_decision_clear(&dec);
    return KD_OK;
}

static kd_err forget_with(kd_dedup *d, const char *key, size_t key_len,
                          const forget_rule *rule, kd_forget_result *result) {
    char *stream = NULL;
    head h = {0};
    uint64_t now;
    bool yes;
    kd_err err;

    if (!d || !result || (!key && key_len))
        return KD_ERR_CONFIG;
    *result = KD_FORGET_ABSENT;
    if (!now_ms(&now))
        return KD_ERR_CONFIG;
    if ((err = single_read(d, key, key_len, &stream, &h)) != KD_OK)
        goto done;
    switch (head_state_at(d, &h, now)) {
    case ST_ABSENT:
        goto done;
    case ST_IN_FLIGHT:
        if (!rule->force) {
            *result = KD_FORGET_IN_FLIGHT;
            goto done;
        }
        if (rule->protect && rule->protect(rule->arg, h.e.has_owner ? h.e.owner : 0)) {
            *result = KD_FORGET_PROTECTED;
            goto done;
        }
        break;
    case ST_COMPLETED:
        if ((err = forget_covers(&h, rule, &yes)) != KD_OK)
            goto done;
        if (!yes) {
            *result = KD_FORGET_PROTECTED;
            goto done;
        }
        break;
    }
    /* Appended only as the entry after the one judged: a claim, receipt or
     * release that came between is never overwritten by a stale decision. */
    err = append_tombstone(d, stream, &h, key, key_len, rule->at ? rule->at : now,
                           KD_TOMB_FORGET);
    if (err == KD_OK)
        *result = KD_FORGET_DONE;
done:
    head_clear(&h);
    free(stream);
    return err;
}

kd_err kd_dedup_forget(kd_dedup *d, const char *key, size_t key_len, bool force,
                       bool (*protect)(void *arg, uint64_t owner), void *arg,
                       kd_forget_result *result) {
    forget_rule rule = {.force = force, .protect = protect, .arg = arg};

    return forget_with(d, key, key_len, &rule, result);
}

kd_err kd_dedup_forget_replay(kd_dedup *d, const char *key, size_t key_len,
                              uint64_t at_ms,
                              bool (*covers)(void *arg, const kd_decision *dec),
                              void *arg, kd_forget_result *result) {
    forget_rule rule = {.covers = covers, .arg = arg, .at = at_ms};

    if (at_ms == 0)
        return KD_ERR_CONFIG;
    return forget_with(d, key, key_len, &rule, result);
}

/* Releases key's claim in flight with a tombstone of reason, dated at (0:
 * now). */
static kd_err release_with(kd_dedup *d, const char *key, size_t key_len,
                           kd_tomb_reason reason, uint64_t at) {
    char *stream = NULL;
    head h = {0};
    uint64_t now;
    kd_err err;

    if (!d || (!key && key_len))
        return KD_ERR_CONFIG;
    if (!now_ms(&now))
        return KD_ERR_CONFIG;
    err = single_read(d, key, key_len, &stream, &h);
    if (err != KD_OK || head_state(&h) != ST_IN_FLIGHT)
        goto done; /* absent or completed: nothing to release, never a receipt */

    err = append_tombstone(d, stream, &h, key, key_len, at ? at : now, reason);
    if (err != KD_ERR_SEQUENCE_CONFLICT)
        goto done;
    /* Lost a race: fine if the key is now completed or released; a fresh
     * re-claim must not be erased by this stale release. */
    if ((err = head_read(d, stream, stream_len(d), key, key_len, &h)) == KD_OK)
        err = head_state(&h) == ST_IN_FLIGHT ? KD_ERR_SEQUENCE_CONFLICT : KD_OK;
done:
    head_clear(&h);
    free(stream);
    return err;
}

kd_err kd_dedup_release_claim(kd_dedup *d, const char *key, size_t key_len) {
    return release_with(d, key, key_len, KD_TOMB_RELEASE, 0);
}

kd_err kd_dedup_release_forgotten(kd_dedup *d, const char *key, size_t key_len,
                                  uint64_t forgotten_at) {
    if (forgotten_at == 0)
        return KD_ERR_CONFIG;
    return release_with(d, key, key_len, KD_TOMB_FORGET, forgotten_at);
}
