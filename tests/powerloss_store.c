/*
 * kdedup tests - a store that loses power (see powerloss_store.h).
 *
 * What reads see lives in an in-memory store ("live"). Every append it
 * took is also kept as a record: in `durable` once a synced write or a
 * sync covered it, in `pending` until then. A crash keeps a prefix of
 * `pending`, whole writes (batches) only, and drops the rest; the next
 * store replays `durable` into a fresh live store.
 */
#include "tests/powerloss_store.h"
#include "dedup/entry.h"
#include "dedup/store_int.h"

#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define DISK_FULL "injected: IO error: No space left on device"
#define POWER_LOST "injected: the power went (simulated crash)"

/* One append the store took. */
typedef struct record {
    char *stream;
    size_t stream_len;
    uint64_t seq;
    void *payload;
    size_t len;
    bool ends_write; /* the last record of its write (one WAL record) */
} record;

typedef struct record_log {
    record *r;
    size_t n, cap;
} record_log;

/* What is armed: a crash or a failure at the `left`th write of kind op. */
typedef struct trigger {
    bool armed, crash;
    kd_powerloss_op op;
    unsigned left;
    size_t keep;
} trigger;

typedef struct powerloss {
    kd_store *live;
    pthread_mutex_t lock; /* serializes writes; guards all below */
    pthread_cond_t crashed_cond;
    record_log durable, pending;
    trigger trig;
    bool crashed;
    unsigned refused;                           /* kinds refused (a full disk) */
    unsigned long count[KD_POWERLOSS_SYNC + 1]; /* items taken, by kind */
} powerloss;

static void log_clear(record_log *l) {
    for (size_t i = 0; i < l->n; i++) {
        free(l->r[i].stream);
        free(l->r[i].payload);
    }
    l->n = 0;
}

static void log_free(record_log *l) {
    log_clear(l);
    free(l->r);
    memset(l, 0, sizeof(*l));
}

/* Appends a copy of one append; false when out of memory. */
static bool log_add(record_log *l, const char *stream, size_t stream_len, uint64_t seq,
                    const void *payload, size_t len) {
    record *r;

    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 64;
        record *grown = realloc(l->r, cap * sizeof(*grown));

        if (!grown)
            return false;
        l->r = grown;
        l->cap = cap;
    }
    r = &l->r[l->n];
    r->stream = malloc(stream_len ? stream_len : 1);
    r->payload = malloc(len ? len : 1);
    if (!r->stream || !r->payload) {
        free(r->stream);
        free(r->payload);
        return false;
    }
    memcpy(r->stream, stream, stream_len);
    memcpy(r->payload, payload, len);
    r->stream_len = stream_len;
    r->seq = seq;
    r->len = len;
    r->ends_write = false;
    l->n++;
    return true;
}

/* Makes the first `writes` pending writes durable, in order, and drops
 * the rest: a sync (SIZE_MAX), or what a crash leaves of the log. */
static bool keep_pending(powerloss *w, size_t writes) {
    bool ok = true;

    for (size_t i = 0; writes && i < w->pending.n; i++) {
        record *r = &w->pending.r[i];

        ok = ok &&
             log_add(&w->durable, r->stream, r->stream_len, r->seq, r->payload, r->len);
        if (ok)
            w->durable.r[w->durable.n - 1].ends_write = r->ends_write;
        writes -= r->ends_write;
    }
    log_clear(&w->pending);
    return ok;
}

/* What kind of write an appended payload is. */
static kd_powerloss_op kind_of(const void *payload, size_t len) {
    kd_entry e;

    if (kd_entry_decode(payload, len, &e) != KD_OK)
        return KD_POWERLOSS_OTHER;
    if (e.kind == KD_ENTRY_TOMBSTONE)
        return KD_POWERLOSS_TOMBSTONE;
    return e.has_receipt ? KD_POWERLOSS_RECEIPT : KD_POWERLOSS_CLAIM;
}

/* True when the armed trigger fires on a write of these kinds (it is then
 * disarmed). */
static bool trigger_hit(powerloss *w, unsigned kinds) {
    if (!w->trig.armed || !(kinds & (1u << w->trig.op)) || --w->trig.left > 0)
        return false;
    w->trig.armed = false;
    return true;
}

/* The power goes: the first keep pending writes survive. */
static void crash_locked(powerloss *w, size_t keep) {
    w->crashed = true;
    keep_pending(w, keep);
    pthread_cond_broadcast(&w->crashed_cond);
}

/* Records what items[0..n) appended (the KD_OK ones): pending when lazy,
 * else durable after everything pending (a synced write that wrote
 * nothing syncs nothing). False when out of memory. */
static bool record_appends(powerloss *w, const kd_append *items, size_t n, bool lazy) {
    bool wrote = false, ok = true;
    record_log *to;

    for (size_t i = 0; i < n; i++)
        wrote = wrote || items[i].result == KD_OK;
    if (!wrote)
        return true;
    if (!lazy)
        ok = keep_pending(w, SIZE_MAX);
    to = lazy ? &w->pending : &w->durable;
    for (size_t i = 0; i < n; i++)
        if (items[i].result == KD_OK)
            ok = ok &&
                 log_add(to, items[i].stream, items[i].stream_len, items[i].expected_seq,
                         items[i].payload, items[i].payload_len);
    if (ok)
        to->r[to->n - 1].ends_write = true;
    return ok;
}

static kd_err fail_all(kd_append *items, size_t n) {
    for (size_t i = 0; i < n; i++)
        items[i].result = KD_ERR_STORE;
    return KD_ERR_STORE;
}

/* Counts the items of items[0..n) the store took, by kind. */
static void count_taken(powerloss *w, const kd_append *items, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (items[i].result == KD_OK)
            w->count[kind_of(items[i].payload, items[i].payload_len)]++;
}

/* Every write goes through here, serialized: the live store takes it, and
 * the records say what of it survives a crash. A crash's write reaches the
 * log, not its sync (pending, the last write a crash may keep); a
 * failure's writes nothing. */
static kd_err write_batch(powerloss *w, kd_append *items, size_t n, bool lazy) {
    unsigned kinds = 0;
    bool hit, crash;
    kd_err err;

    pthread_mutex_lock(&w->lock);
    for (size_t i = 0; i < n; i++)
        kinds |= 1u << kind_of(items[i].payload, items[i].payload_len);
    if (w->crashed || (kinds & w->refused)) {
        pthread_mutex_unlock(&w->lock);
        return fail_all(items, n);
    }
    hit = trigger_hit(w, kinds);
    crash = hit && w->trig.crash;
    if (hit && !crash) {
        pthread_mutex_unlock(&w->lock);
        return fail_all(items, n);
    }
    err = kd_store_append_batch(w->live, items, n);
    if (err == KD_OK && !record_appends(w, items, n, lazy || crash))
        err = KD_ERR_STORE; /* out of memory: the test fails on it */
    count_taken(w, items, n);
    if (crash)
        crash_locked(w, w->trig.keep);
    pthread_mutex_unlock(&w->lock);
    return crash ? fail_all(items, n) : err;
}

static kd_err p_append_batch(void *impl, kd_append *items, size_t n) {
    return write_batch(impl, items, n, false);
}

static kd_err p_append_batch_lazy(void *impl, kd_append *items, size_t n) {
    return write_batch(impl, items, n, true);
}

static kd_err p_append(void *impl, const char *stream, size_t stream_len,
                       uint64_t expected_seq, const void *payload, size_t payload_len) {
    kd_append a = {.stream = stream,
                   .stream_len = stream_len,
                   .expected_seq = expected_seq,
                   .payload = payload,
                   .payload_len = payload_len};

    write_batch(impl, &a, 1, false);
    return a.result;
}

static kd_err p_sync(void *impl) {
    powerloss *w = impl;
    const unsigned sync = 1u << KD_POWERLOSS_SYNC;
    kd_err err = KD_ERR_STORE;

    pthread_mutex_lock(&w->lock);
    if (w->crashed || !w->pending.n) {
        err = w->crashed ? KD_ERR_STORE : KD_OK; /* nothing to sync: nothing done */
    } else if (w->refused & sync) {
        /* the disk refuses it: the writes stay pending */
    } else if (trigger_hit(w, sync)) {
        if (w->trig.crash) /* keep >= pending: it synced, then the power went */
            crash_locked(w, w->trig.keep);
    } else if (keep_pending(w, SIZE_MAX)) {
        w->count[KD_POWERLOSS_SYNC]++;
        err = KD_OK;
    }
    pthread_mutex_unlock(&w->lock);
    return err;
}

static bool dead(powerloss *w) {
    bool crashed;

    pthread_mutex_lock(&w->lock);
    crashed = w->crashed;
    pthread_mutex_unlock(&w->lock);
    return crashed;
}

static kd_err p_read_last(void *impl, const char *stream, size_t stream_len,
                          uint64_t *seq, void **payload, size_t *payload_len,
                          bool *found) {
    powerloss *w = impl;

    *found = false;
    if (dead(w))
        return KD_ERR_STORE;
    return kd_store_read_last(w->live, stream, stream_len, seq, payload, payload_len,
                              found);
}

static kd_err p_read_last_batch(void *impl, kd_read *items, size_t n) {
    powerloss *w = impl;

    if (dead(w)) {
        for (size_t i = 0; i < n; i++)
            items[i] = (kd_read){.stream = items[i].stream,
                                 .stream_len = items[i].stream_len,
                                 .err = KD_ERR_STORE};
        return KD_ERR_STORE;
    }
    return kd_store_read_last_batch(w->live, items, n);
}

static void p_set_retention(void *impl, uint64_t ttl_ms, uint64_t inflight_ms) {
    powerloss *w = impl;

    kd_store_set_retention(w->live, ttl_ms, inflight_ms);
}

static void p_last_error(void *impl, char *buf, size_t size) {
    powerloss *w = impl;

    pthread_mutex_lock(&w->lock);
    snprintf(buf, size, "%s", w->crashed ? POWER_LOST : w->refused ? DISK_FULL : "");
    pthread_mutex_unlock(&w->lock);
}

static void p_destroy(void *impl) {
    powerloss *w = impl;

    if (!w)
        return;
    kd_store_destroy(w->live);
    log_free(&w->durable);
    log_free(&w->pending);
    pthread_cond_destroy(&w->crashed_cond);
    pthread_mutex_destroy(&w->lock);
    free(w);
}

static const struct kd_store_ops powerloss_ops = {
    .name = "powerloss",
    .read_last = p_read_last,
    .append = p_append,
    .destroy = p_destroy,
    .append_batch = p_append_batch,
    .read_last_batch = p_read_last_batch,
    .set_retention = p_set_retention,
    .last_error = p_last_error,
    .append_batch_lazy = p_append_batch_lazy,
    .sync = p_sync,
};

static powerloss *impl_of(kd_store *s) {
    return kd_store_backend(s, &powerloss_ops);
}

/* Replays the durable records of `from` into w, live and durable. */
static bool replay(powerloss *w, powerloss *from) {
    bool ok = true;

    pthread_mutex_lock(&from->lock);
    for (size_t i = 0; ok && i < from->durable.n; i++) {
        const record *r = &from->durable.r[i];

        ok = kd_store_append(w->live, r->stream, r->stream_len, r->seq, r->payload,
                             r->len) == KD_OK &&
             log_add(&w->durable, r->stream, r->stream_len, r->seq, r->payload, r->len);
    }
    pthread_mutex_unlock(&from->lock);
    return ok;
}

kd_store *kd_powerloss_new(kd_store *survivor) {
    powerloss *w = calloc(1, sizeof(*w)), *from = survivor ? impl_of(survivor) : NULL;

    if (!w)
        return NULL;
    pthread_mutex_init(&w->lock, NULL);
    pthread_cond_init(&w->crashed_cond, NULL);
    if (!(w->live = kd_store_mem_new()) || (survivor && (!from || !replay(w, from)))) {
        p_destroy(w);
        return NULL;
    }
    return kd_store_new(&powerloss_ops, w);
}

static void arm(kd_store *s, kd_powerloss_op op, unsigned nth, size_t keep, bool crash) {
    powerloss *w = impl_of(s);

    pthread_mutex_lock(&w->lock);
    w->trig =
        (trigger){.armed = nth > 0, .crash = crash, .op = op, .left = nth, .keep = keep};
    pthread_mutex_unlock(&w->lock);
}

void kd_powerloss_crash_at(kd_store *s, kd_powerloss_op op, unsigned nth, size_t keep) {
    arm(s, op, nth, keep, true);
}

void kd_powerloss_fail_at(kd_store *s, kd_powerloss_op op, unsigned nth) {
    arm(s, op, nth, 0, false);
}

void kd_powerloss_crash(kd_store *s) {
    powerloss *w = impl_of(s);

    pthread_mutex_lock(&w->lock);
    crash_locked(w, 0);
    pthread_mutex_unlock(&w->lock);
}

bool kd_powerloss_wait_crash(kd_store *s, int timeout_ms) {
    powerloss *w = impl_of(s);
    struct timespec until;
    int rc = 0;
    bool crashed;

    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += timeout_ms / 1000;
    until.tv_nsec += (long)(timeout_ms % 1000) * 1000000;
    if (until.tv_nsec >= 1000000000) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000;
    }
    pthread_mutex_lock(&w->lock);
    while (!w->crashed && rc != ETIMEDOUT)
        rc = pthread_cond_timedwait(&w->crashed_cond, &w->lock, &until);
    crashed = w->crashed;
    pthread_mutex_unlock(&w->lock);
    return crashed;
}

bool kd_powerloss_crashed(kd_store *s) {
    return dead(impl_of(s));
}

void kd_powerloss_refuse(kd_store *s, unsigned kinds) {
    powerloss *w = impl_of(s);

    pthread_mutex_lock(&w->lock);
    w->refused = kinds;
    pthread_mutex_unlock(&w->lock);
}

unsigned long kd_powerloss_count(kd_store *s, kd_powerloss_op op) {
    powerloss *w = impl_of(s);
    unsigned long n;

    pthread_mutex_lock(&w->lock);
    n = w->count[op];
    pthread_mutex_unlock(&w->lock);
    return n;
}

size_t kd_powerloss_pending(kd_store *s) {
    powerloss *w = impl_of(s);
    size_t n;

    pthread_mutex_lock(&w->lock);
    n = w->pending.n;
    pthread_mutex_unlock(&w->lock);
    return n;
}
