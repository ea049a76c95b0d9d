/*
 * kdedup - the in-memory store backend.
 *
 * A chained hash table of streams under one mutex; each stream keeps every
 * payload it was given, so it is the reference implementation of the log
 * semantics the RocksDB backend must match. Meant for tests and demos.
 */
#include "dedup/store.h"
#include "dedup/store_int.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

typedef struct mem_entry {
    void *payload;
    size_t len;
} mem_entry;

typedef struct mem_stream {
    struct mem_stream *next;
    uint64_t hash;
    char *name;
    size_t name_len;
    mem_entry *entries;
    size_t count;
    size_t cap;
} mem_stream;

typedef struct mem_store {
    pthread_mutex_t lock;
    mem_stream **buckets;
    size_t nbuckets; /* a power of two */
    size_t nstreams;
} mem_store;

static mem_stream *mem_find(mem_store *m, const char *name, size_t len, uint64_t h) {
    for (mem_stream *s = m->buckets[h & (m->nbuckets - 1)]; s; s = s->next)
        if (s->hash == h && s->name_len == len && memcmp(s->name, name, len) == 0)
            return s;
    return NULL;
}

/* Doubles the table once it holds more streams than buckets. Failing to grow
 * only makes chains longer, so it is not an error. */
static void mem_maybe_grow(mem_store *m) {
    size_t nb = m->nbuckets * 2;
    mem_stream **b;

    if (m->nstreams < m->nbuckets)
        return;
    b = calloc(nb, sizeof(*b));
    if (!b)
        return;
    for (size_t i = 0; i < m->nbuckets; i++) {
        mem_stream *s = m->buckets[i], *next;

        for (; s; s = next) {
            next = s->next;
            s->next = b[s->hash & (nb - 1)];
            b[s->hash & (nb - 1)] = s;
        }
    }
    free(m->buckets);
    m->buckets = b;
    m->nbuckets = nb;
}

static mem_stream *mem_create(mem_store *m, const char *name, size_t len, uint64_t h) {
    mem_stream *s = calloc(1, sizeof(*s));

    if (!s)
        return NULL;
    s->name = malloc(len ? len : 1);
    if (!s->name) {
        free(s);
        return NULL;
    }
    memcpy(s->name, name, len);
    s->name_len = len;
    s->hash = h;
    mem_maybe_grow(m);
    s->next = m->buckets[h & (m->nbuckets - 1)];
    m->buckets[h & (m->nbuckets - 1)] = s;
    m->nstreams++;
    return s;
}

static kd_err mem_read_last(void *impl, const char *stream, size_t stream_len,
                            uint64_t *seq, void **payload, size_t *payload_len,
                            bool *found) {
    mem_store *m = impl;
    kd_err err = KD_OK;
    mem_stream *s;

    *found = false;
    pthread_mutex_lock(&m->lock);
    s = mem_find(m, stream, stream_len, kd_store_stream_hash(stream, stream_len));
    if (s && s->count > 0) {
        const mem_entry *e = &s->entries[s->count - 1];

        *payload = malloc(e->len ? e->len : 1);
        if (*payload) {
            memcpy(*payload, e->payload, e->len);
            *payload_len = e->len;
            *seq = s->count - 1;
            *found = true;
        } else {
            err = KD_ERR_STORE;
        }
    }
    pthread_mutex_unlock(&m->lock);
    return err;
}

/* Appends under the lock. */
static kd_err mem_append_locked(mem_store *m, const char *stream, size_t stream_len,
                                uint64_t expected_seq, const void *payload,
                                size_t payload_len) {
    uint64_t h = kd_store_stream_hash(stream, stream_len);
    mem_stream *s = mem_find(m, stream, stream_len, h);
    mem_entry *e;

    if ((s ? s->count : 0) != expected_seq)
        return KD_ERR_SEQUENCE_CONFLICT;
    if (!s && !(s = mem_create(m, stream, stream_len, h)))
        return KD_ERR_STORE;
    if (s->count == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 2;
        mem_entry *entries = realloc(s->entries, cap * sizeof(*entries));

        if (!entries)
            return KD_ERR_STORE;
        s->entries = entries;
        s->cap = cap;
    }
    e = &s->entries[s->count];
    e->payload = malloc(payload_len ? payload_len : 1);
    if (!e->payload)
        return KD_ERR_STORE;
    memcpy(e->payload, payload, payload_len);
    e->len = payload_len;
    s->count++;
    return KD_OK;
}

static kd_err mem_append(void *impl, const char *stream, size_t stream_len,
                         uint64_t expected_seq, const void *payload, size_t payload_len) {
    mem_store *m = impl;
    kd_err err;

    pthread_mutex_lock(&m->lock);
    err = mem_append_locked(m, stream, stream_len, expected_seq, payload, payload_len);
    pthread_mutex_unlock(&m->lock);
    return err;
}

/* Memory cannot fail half-way for I/O reasons, so applying the items in order
 * under the one lock is as atomic as a single write. */
static kd_err mem_append_batch(void *impl, kd_append *items, size_t n) {
    mem_store *m = impl;
    kd_err err = KD_OK;

    pthread_mutex_lock(&m->lock);
    for (size_t i = 0; i < n; i++) {
        kd_append *a = &items[i];

        a->result = mem_append_locked(m, a->stream, a->stream_len, a->expected_seq,
                                      a->payload, a->payload_len);
        /* Every append checks its seq under the lock: any non-zero version
         * serves (a later append passing it is checked all the same). */
        a->written_version = a->result == KD_OK ? a->expected_seq + 1 : 0;
        if (a->result == KD_ERR_STORE)
            err = KD_ERR_STORE;
    }
    pthread_mutex_unlock(&m->lock);
    return err;
}

static void mem_destroy(void *impl) {
    mem_store *m = impl;

    if (!m)
        return;
    for (size_t i = 0; m->buckets && i < m->nbuckets; i++) {
        mem_stream *s = m->buckets[i], *next;

        for (; s; s = next) {
            next = s->next;
            for (size_t j = 0; j < s->count; j++)
                free(s->entries[j].payload);
            free(s->entries);
            free(s->name);
            free(s);
        }
    }
    free(m->buckets);
    pthread_mutex_destroy(&m->lock);
    free(m);
}

static const struct kd_store_ops kd_store_mem_ops = {
    .name = "memory",
    .read_last = mem_read_last,
    .append = mem_append,
    .destroy = mem_destroy,
    .append_batch = mem_append_batch,
};

kd_store *kd_store_mem_new(void) {
    mem_store *m = calloc(1, sizeof(*m));

    if (!m)
        return NULL;
    m->nbuckets = 64;
    m->buckets = calloc(m->nbuckets, sizeof(*m->buckets));
    if (!m->buckets || pthread_mutex_init(&m->lock, NULL) != 0) {
        free(m->buckets);
        free(m);
        return NULL;
    }
    return kd_store_new(&kd_store_mem_ops, m);
}
