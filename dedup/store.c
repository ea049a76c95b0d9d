/*
 * kdedup - the store handle: a backend's ops plus its state, and the calls
 * that dispatch to it (with fallbacks for optional ops).
 */
#include "dedup/store.h"
#include "dedup/store_int.h"

#include <stdio.h>
#include <stdlib.h>

struct kd_store {
    const struct kd_store_ops *ops;
    void *impl;
};

const char *kd_err_name(kd_err err) {
    switch (err) {
    case KD_OK:
        return "KD_OK";
    case KD_ERR_STORE:
        return "KD_ERR_STORE";
    case KD_ERR_SERIALIZATION:
        return "KD_ERR_SERIALIZATION";
    case KD_ERR_SEQUENCE_CONFLICT:
        return "KD_ERR_SEQUENCE_CONFLICT";
    case KD_ERR_DEDUP_COLLISION:
        return "KD_ERR_DEDUP_COLLISION";
    case KD_ERR_CONFIG:
        return "KD_ERR_CONFIG";
    }
    return "KD_ERR_UNKNOWN";
}

kd_store *kd_store_new(const struct kd_store_ops *ops, void *impl) {
    kd_store *store;

    if (!ops || !ops->read_last || !ops->append || !ops->destroy) {
        if (ops && ops->destroy)
            ops->destroy(impl);
        return NULL;
    }
    store = malloc(sizeof(*store));
    if (!store) {
        ops->destroy(impl);
        return NULL;
    }
    store->ops = ops;
    store->impl = impl;
    return store;
}

void kd_store_destroy(kd_store *store) {
    if (!store)
        return;
    store->ops->destroy(store->impl);
    free(store);
}

const char *kd_store_name(const kd_store *store) {
    return store->ops->name ? store->ops->name : "unnamed";
}

kd_err kd_store_read_last(kd_store *store, const char *stream, size_t stream_len,
                          uint64_t *seq, void **payload, size_t *payload_len,
                          bool *found) {
    return store->ops->read_last(store->impl, stream, stream_len, seq, payload,
                                 payload_len, found);
}

kd_err kd_store_append(kd_store *store, const char *stream, size_t stream_len,
                       uint64_t expected_seq, const void *payload, size_t payload_len) {
    return store->ops->append(store->impl, stream, stream_len, expected_seq, payload,
                              payload_len);
}

kd_err kd_store_read_last_batch(kd_store *store, kd_read *items, size_t n) {
    if (n == 0)
        return KD_OK;
    if (store->ops->read_last_batch)
        return store->ops->read_last_batch(store->impl, items, n);
    for (size_t i = 0; i < n; i++) {
        kd_read *r = &items[i];

        r->payload = NULL;
        r->version = 0;
        r->err = store->ops->read_last(store->impl, r->stream, r->stream_len, &r->seq,
                                       &r->payload, &r->payload_len, &r->found);
    }
    return KD_OK;
}

kd_err kd_store_append_batch(kd_store *store, kd_append *items, size_t n) {
    kd_err first = KD_OK;

    if (n == 0)
        return KD_OK;
    if (store->ops->append_batch)
        return store->ops->append_batch(store->impl, items, n);

    for (size_t i = 0; i < n; i++) {
        kd_append *a = &items[i];

        a->result = store->ops->append(store->impl, a->stream, a->stream_len,
                                       a->expected_seq, a->payload, a->payload_len);
        if (first == KD_OK && a->result != KD_OK && a->result != KD_ERR_SEQUENCE_CONFLICT)
            first = a->result;
    }
    return first;
}

kd_err kd_store_append_batch_lazy(kd_store *store, kd_append *items, size_t n) {
    if (n == 0 || !store->ops->append_batch_lazy)
        return kd_store_append_batch(store, items, n);
    return store->ops->append_batch_lazy(store->impl, items, n);
}

kd_err kd_store_sync(kd_store *store) {
    return store->ops->sync ? store->ops->sync(store->impl) : KD_OK;
}

void kd_store_set_retention(kd_store *store, uint64_t ttl_ms,
                            uint64_t inflight_timeout_ms) {
    if (store->ops->set_retention)
        store->ops->set_retention(store->impl, ttl_ms, inflight_timeout_ms);
}

const char *kd_store_last_error(kd_store *store, char *buf, size_t buf_size) {
    if (buf_size == 0)
        return buf;
    buf[0] = '\0';
    if (store->ops->last_error)
        store->ops->last_error(store->impl, buf, buf_size);
    return buf;
}

void *kd_store_backend(kd_store *store, const struct kd_store_ops *ops) {
    return store && store->ops == ops ? store->impl : NULL;
}
