/*
 * kdedup - the dedup handle, stream keys, and heads: a stream's newest
 * entry, read and decoded, its state, and the decisions made from it (file
 * map: dedup_int.h).
 */
#include "dedup/dedup_int.h"
#include "dedup/hex.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

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
void kd_dedup_stream_key(const kd_dedup *d, const unsigned char *hash, char *out) {
    char *digits = out + d->ns_len + 1;

    memcpy(out, d->ns, d->ns_len);
    out[d->ns_len] = ':';
    kd_hex_put(hash, HASH_LEN, digits);
}

/* Hashes key and writes its stream key into out (kd_dedup_stream_len(d) bytes). */
void kd_dedup_stream_of(const kd_dedup *d, const char *key, size_t key_len,
                        unsigned char *hash, char *out) {
    kd_sha256(key, key_len,
              hash); /* a failure maps every key to one stream: collisions */
    kd_dedup_stream_key(d, hash, out);
}

size_t kd_dedup_stream_len(const kd_dedup *d) {
    return d->ns_len + 1 + HEX_LEN;
}

size_t kd_dedup_stream_key_for(const kd_dedup *d, const char *key, size_t key_len,
                               char *buf, size_t buf_size) {
    size_t full = kd_dedup_stream_len(d);
    unsigned char hash[HASH_LEN];
    char tmp[256];
    char *s = full <= sizeof(tmp) ? tmp : malloc(full);

    if (buf_size == 0)
        return full;
    buf[0] = '\0';
    if (!s)
        return full;
    kd_dedup_stream_of(d, key, key_len, hash, s);
    memcpy(buf, s, full < buf_size ? full : buf_size - 1);
    buf[full < buf_size ? full : buf_size - 1] = '\0';
    if (s != tmp)
        free(s);
    return full;
}

/* The wall clock in ms since the epoch; false when it cannot be read or is
 * before the epoch (not encodable). */
bool kd_dedup_now_ms(uint64_t *out) {
    struct timespec ts;

    if (clock_gettime(CLOCK_REALTIME, &ts) != 0 || ts.tv_sec < 0)
        return false;
    *out = (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
    return true;
}

void kd_dedup_head_clear(head *h) {
    free(h->payload);
    memset(h, 0, sizeof(*h));
}

/* Decodes a head just read, and checks that it belongs to key. */
kd_err kd_dedup_head_decode(head *h, const char *key, size_t key_len) {
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
kd_err kd_dedup_head_read(kd_dedup *d, const char *stream, size_t stream_len,
                          const char *key, size_t key_len, head *h) {
    kd_err err;

    kd_dedup_head_clear(h);
    err = kd_store_read_last(d->store, stream, stream_len, &h->seq, &h->payload,
                             &h->payload_len, &h->found);
    return err != KD_OK ? err : kd_dedup_head_decode(h, key, key_len);
}

/* True when the entry has outlived the cache's retention at now. An
 * unfinished claim stamped with this cache's owner never does: the process
 * that made it still knows it (it holds its message, or its note of an
 * ended ownership's delivery) and resolves it itself. Taken over, the claim
 * would be rewritten with a new time, and the old one, which says where its
 * delivery may be downstream, lost to the next run if this one stopped
 * before resolving it (found by review: a copy's read retried, then a
 * stop, and the next run forwarded the key again). */
static bool expired(const kd_dedup *d, const kd_entry *e, uint64_t now) {
    uint64_t owner = atomic_load(&d->owner);
    uint64_t limit =
        e->has_receipt ? atomic_load(&d->ttl_ms) : atomic_load(&d->inflight_ms);

    if (!e->has_receipt && owner && e->has_owner && e->owner == owner)
        return false;
    return limit && now >= e->timestamp_ms && now - e->timestamp_ms >= limit;
}

key_state kd_dedup_head_state(const head *h) {
    if (!h->found || h->e.kind == KD_ENTRY_TOMBSTONE)
        return ST_ABSENT;
    return h->e.has_receipt ? ST_COMPLETED : ST_IN_FLIGHT;
}

/* kd_dedup_head_state(), with retention applied at now. */
key_state kd_dedup_head_state_at(const kd_dedup *d, const head *h, uint64_t now) {
    key_state st = kd_dedup_head_state(h);

    return st != ST_ABSENT && expired(d, &h->e, now) ? ST_ABSENT : st;
}

uint64_t kd_dedup_next_seq(const head *h) {
    return h->found ? h->seq + 1 : 0;
}

bool kd_dedup_same_bytes(const void *a, size_t alen, const void *b, size_t blen) {
    return alen == blen && (alen == 0 || memcmp(a, b, alen) == 0);
}

/* Fills out from a present head (in flight or completed). */
kd_err kd_dedup_decision_from_head(const head *h, kd_decision *out) {
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
