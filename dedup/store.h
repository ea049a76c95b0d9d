/*
 * kdedup - the store interface of the dedup contract.
 *
 * A store keeps append-only logs of opaque entries, one log ("stream") per
 * stream key. The dedup layer (dedup.h) needs exactly two things from it: the
 * newest entry of a stream, and an append that succeeds only at the expected
 * sequence number, atomically per stream. Backends implement struct
 * kd_store_ops; the in-memory backend is here, RocksDB is in store_rocks/.
 */
#ifndef KD_STORE_H
#define KD_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum kd_err {
    KD_OK = 0,
    KD_ERR_STORE,             /* backend read/append failed (I/O, corruption) */
    KD_ERR_SERIALIZATION,     /* an entry could not be encoded or decoded */
    KD_ERR_SEQUENCE_CONFLICT, /* append's expected_seq was not the stream's next seq */
    KD_ERR_DEDUP_COLLISION, /* stream holds another original key, or complete on a missing
                               key */
    KD_ERR_CONFIG           /* bad argument or configuration; time not encodable */
} kd_err;

/* The enum constant's name, e.g. "KD_ERR_STORE"; "KD_ERR_UNKNOWN" for values
 * outside the enum. The string is static. */
const char *kd_err_name(kd_err err);

typedef struct kd_store kd_store; /* opaque */

/* One read of a batch: the stream, and what read_last would return. */
typedef struct kd_read {
    const char *stream;
    size_t stream_len;
    kd_err err;         /* out */
    bool found;         /* out */
    uint64_t seq;       /* out, when found */
    void *payload;      /* out, when found: malloc()ed, the caller frees */
    size_t payload_len; /* out */
    uint64_t version;   /* out: backend stamp for kd_append.version; 0 = none */
} kd_read;

/* One append of a batch: the input fields, and the per-item result. */
typedef struct kd_append {
    const char *stream;
    size_t stream_len;
    uint64_t expected_seq;
    const void *payload;
    size_t payload_len;
    /* The version of the read expected_seq was derived from (kd_read.version),
     * or 0. It lets a backend skip re-reading a stream nothing wrote to since;
     * the check itself is the same either way. */
    uint64_t version;
    kd_err result; /* out: KD_OK, KD_ERR_SEQUENCE_CONFLICT or the batch's error */
    /* out, KD_OK: the stream's version right after this write (0 = the
     * backend keeps none): a later append may pass it as its version. */
    uint64_t written_version;
} kd_append;

/* A backend. The three first ops are required; the rest are optional and
 * NULL when absent. All ops may be called from several threads at once. */
struct kd_store_ops {
    const char *name;
    /* Newest entry of a stream. *found = false for an empty stream. On KD_OK with
     * *found, *seq is its sequence number (0-based) and *payload a malloc()ed copy
     * the caller frees. */
    kd_err (*read_last)(void *impl, const char *stream, size_t stream_len, uint64_t *seq,
                        void **payload, size_t *payload_len, bool *found);
    /* Appends as entry number expected_seq, which must equal the number of entries
     * in the stream; otherwise nothing is written and KD_ERR_SEQUENCE_CONFLICT. */
    kd_err (*append)(void *impl, const char *stream, size_t stream_len,
                     uint64_t expected_seq, const void *payload, size_t payload_len);
    void (*destroy)(void *impl);

    /* Optional. Appends every item whose expected_seq matches, in one durable
     * write; items of one stream apply in array order. Sets each item's result.
     * Returns KD_OK when the write succeeded (or there was nothing to write),
     * else the error, which is then also every item's result. */
    kd_err (*append_batch)(void *impl, kd_append *items, size_t n);
    /* Optional. Reads the newest entry of every item's stream, as read_last
     * does, setting each item's outputs. Returns KD_OK, or the error that
     * failed the whole batch (then also every item's err). */
    kd_err (*read_last_batch)(void *impl, kd_read *items, size_t n);
    /* Optional. Entries older than these (ms, 0 = keep) may be dropped by the
     * backend in the background. */
    void (*set_retention)(void *impl, uint64_t ttl_ms, uint64_t inflight_timeout_ms);
    /* Optional. Copies a description of the most recent error into buf. */
    void (*last_error)(void *impl, char *buf, size_t buf_size);
    /* Optional. append_batch whose write is durable only once a later
     * durable write or sync() is (a crash may lose it; what reads sees it
     * at once). NULL: append_batch is used. */
    kd_err (*append_batch_lazy)(void *impl, kd_append *items, size_t n);
    /* Optional. Makes every write made so far durable (nothing to do when
     * no lazy write came since the last durable one). */
    kd_err (*sync)(void *impl);
};

/* Wraps a backend. Takes ownership of impl: kd_store_destroy() calls
 * ops->destroy(impl). ops must outlive the store (normally a static const).
 * Returns NULL if ops lacks a required op or on allocation failure; impl is
 * then destroyed. */
kd_store *kd_store_new(const struct kd_store_ops *ops, void *impl);

/* The in-memory backend: a thread-safe hash table of streams. Returns NULL on
 * allocation failure. */
kd_store *kd_store_mem_new(void);

/* Destroys the store and its backend. NULL-safe. */
void kd_store_destroy(kd_store *store);

/* The backend's name ("memory", "rocksdb", ...). */
const char *kd_store_name(const kd_store *store);

/* Calls the backend's read_last; see struct kd_store_ops. */
kd_err kd_store_read_last(kd_store *store, const char *stream, size_t stream_len,
                          uint64_t *seq, void **payload, size_t *payload_len,
                          bool *found);

/* Calls the backend's append; see struct kd_store_ops. */
kd_err kd_store_append(kd_store *store, const char *stream, size_t stream_len,
                       uint64_t expected_seq, const void *payload, size_t payload_len);

/* Reads a batch: the backend's read_last_batch, or read_last per item.
 * Sets every item's outputs; returns KD_OK or the error that failed all. */
kd_err kd_store_read_last_batch(kd_store *store, kd_read *items, size_t n);

/* Appends a batch: one durable write when the backend has append_batch,
 * otherwise one append per item (then not atomic across items). Sets every
 * item's result; returns KD_OK or the first KD_ERR_STORE-class error. */
kd_err kd_store_append_batch(kd_store *store, kd_append *items, size_t n);

/* Appends a batch like kd_store_append_batch(), lazily where the backend
 * can: durable only once a later durable write or kd_store_sync() returns
 * KD_OK (a crash may lose it; reads see it at once). */
kd_err kd_store_append_batch_lazy(kd_store *store, kd_append *items, size_t n);

/* Makes every write made so far durable (the lazy ones too). KD_OK at once
 * when nothing lazy was written since the last durable write, or the
 * backend writes nothing lazily; else the backend's error. */
kd_err kd_store_sync(kd_store *store);

/* Tells the backend the retention it may apply; a no-op without the op. */
void kd_store_set_retention(kd_store *store, uint64_t ttl_ms,
                            uint64_t inflight_timeout_ms);

/* Writes the backend's most recent error into buf ("" when it has none or
 * cannot say). Returns buf. */
const char *kd_store_last_error(kd_store *store, char *buf, size_t buf_size);

#endif /* KD_STORE_H */
