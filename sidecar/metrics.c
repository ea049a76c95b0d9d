/*
 * kdedup - metrics (see metrics.h): the handle, its counters and gauges,
 * histograms (file map: metrics_int.h).
 */
#include "sidecar/metrics_int.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

const double kd_metrics_bucket_le[KD_HIST_BUCKETS] = {
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30};

kd_metrics *kd_metrics_new(const kd_config *cfg) {
    kd_metrics *m = calloc(1, sizeof(*m));

    if (!m || !(m->routes = calloc(cfg->nroutes, sizeof(*m->routes))) ||
        !(m->view.lags = calloc(MAX_LAGS, sizeof(*m->view.lags)))) {
        if (m)
            free(m->routes);
        free(m);
        return NULL;
    }
    m->cfg = cfg;
    m->view.producer_queue = -1;
    m->view.cluster.group_steady = -1;
    pthread_mutex_init(&m->lock, NULL);
    return m;
}

void kd_metrics_destroy(kd_metrics *m) {
    if (!m)
        return;
    pthread_mutex_destroy(&m->lock);
    free(m->view.lags);
    free(m->routes);
    free(m);
}

/* Adds from's count to to's: one counter carried over. */
static void carry(_Atomic uint64_t *to, _Atomic uint64_t *from) {
    atomic_fetch_add_explicit(to, atomic_load_explicit(from, memory_order_relaxed),
                              memory_order_relaxed);
}

static void carry_histogram(kd_histogram *to, kd_histogram *from) {
    for (size_t i = 0; i < KD_HIST_BUCKETS; i++)
        carry(&to->buckets[i], &from->buckets[i]);
    for (size_t i = 0; i < KD_HIST_FINE; i++)
        carry(&to->fine[i], &from->fine[i]);
    carry(&to->sum_us, &from->sum_us);
    carry(&to->count, &from->count);
}

void kd_metrics_carry(kd_metrics *to, kd_metrics *from) {
    _Atomic uint64_t *const counters[][2] = {
        {&to->collisions, &from->collisions},
        {&to->store_errors, &from->store_errors},
        {&to->foreign, &from->foreign},
        {&to->recovery_records, &from->recovery_records},
        {&to->recovery_us, &from->recovery_us},
        {&to->recovery_scans, &from->recovery_scans},
        {&to->handover_records, &from->handover_records},
        {&to->handover_us, &from->handover_us},
        {&to->txn_begun, &from->txn_begun},
        {&to->txn_committed, &from->txn_committed},
        {&to->txn_aborted, &from->txn_aborted},
        {&to->txn_replaced, &from->txn_replaced},
    };

    for (size_t i = 0; i < sizeof(counters) / sizeof(counters[0]); i++)
        carry(counters[i][0], counters[i][1]);
    carry_histogram(&to->forward_latency, &from->forward_latency);
    carry_histogram(&to->store_write, &from->store_write);
    carry_histogram(&to->txn_commit, &from->txn_commit);
    for (size_t i = 0; i < to->cfg->nroutes; i++)
        for (size_t j = 0; j < from->cfg->nroutes; j++) {
            _Atomic uint64_t *t = (_Atomic uint64_t *)&to->routes[i];
            _Atomic uint64_t *f = (_Atomic uint64_t *)&from->routes[j];

            if (strcmp(to->cfg->routes[i].name, from->cfg->routes[j].name))
                continue;
            /* every field of kd_route_metrics is a counter */
            for (size_t k = 0; k < sizeof(kd_route_metrics) / sizeof(*t); k++)
                carry(&t[k], &f[k]);
        }
}

kd_route_metrics *kd_metrics_route(kd_metrics *m, size_t route) {
    return &m->routes[route];
}

_Atomic uint64_t *kd_metrics_collisions(kd_metrics *m) {
    return &m->collisions;
}

_Atomic uint64_t *kd_metrics_recovery_records(kd_metrics *m) {
    return &m->recovery_records;
}

_Atomic uint64_t *kd_metrics_recovery_us(kd_metrics *m) {
    return &m->recovery_us;
}

_Atomic uint64_t *kd_metrics_recovery_scans(kd_metrics *m) {
    return &m->recovery_scans;
}

_Atomic uint64_t *kd_metrics_handover_records(kd_metrics *m) {
    return &m->handover_records;
}

_Atomic uint64_t *kd_metrics_handover_us(kd_metrics *m) {
    return &m->handover_us;
}

_Atomic uint64_t *kd_metrics_handover_pending(kd_metrics *m) {
    return &m->handover_pending;
}

_Atomic uint64_t *kd_metrics_store_errors(kd_metrics *m) {
    return &m->store_errors;
}

_Atomic uint64_t *kd_metrics_inflight(kd_metrics *m) {
    return &m->inflight;
}

kd_flow_gauges *kd_metrics_flow(kd_metrics *m) {
    return &m->flow;
}

_Atomic uint64_t *kd_metrics_held(kd_metrics *m) {
    return &m->held;
}

_Atomic uint64_t *kd_metrics_foreign(kd_metrics *m) {
    return &m->foreign;
}

_Atomic uint64_t *kd_metrics_left(kd_metrics *m) {
    return &m->left;
}

_Atomic uint64_t *kd_metrics_assigned(kd_metrics *m) {
    return &m->assigned;
}

kd_histogram *kd_metrics_forward_latency(kd_metrics *m) {
    return &m->forward_latency;
}

kd_histogram *kd_metrics_store_write(kd_metrics *m) {
    return &m->store_write;
}

_Atomic uint64_t *kd_metrics_txn_begun(kd_metrics *m) {
    return &m->txn_begun;
}

_Atomic uint64_t *kd_metrics_txn_committed(kd_metrics *m) {
    return &m->txn_committed;
}

_Atomic uint64_t *kd_metrics_txn_aborted(kd_metrics *m) {
    return &m->txn_aborted;
}

_Atomic uint64_t *kd_metrics_txn_replaced(kd_metrics *m) {
    return &m->txn_replaced;
}

kd_histogram *kd_metrics_txn_commit(kd_metrics *m) {
    return &m->txn_commit;
}

/* The log-scale slot of us: slots below 8 hold one value each, then each
 * power of two splits in KD_HIST_FINE_SUB by its next three bits. */
static size_t fine_slot(uint64_t us) {
    unsigned e;
    size_t slot;

    if (us < KD_HIST_FINE_SUB)
        return (size_t)us;
    e = 63u - (unsigned)__builtin_clzll(us); /* e >= 3 */
    slot = (size_t)(e - 2) * KD_HIST_FINE_SUB + (size_t)((us >> (e - 3)) & 7u);
    return slot < KD_HIST_FINE ? slot : KD_HIST_FINE - 1;
}

/* The middle of slot's range, in microseconds. */
static double fine_mid(size_t slot) {
    unsigned e;
    double lo, width;

    if (slot < KD_HIST_FINE_SUB)
        return (double)slot;
    e = (unsigned)(slot / KD_HIST_FINE_SUB) + 2;
    width = (double)(1ull << (e - 3));
    lo = (double)(1ull << e) + (double)(slot % KD_HIST_FINE_SUB) * width;
    return lo + width / 2;
}

double kd_histogram_quantile(const kd_histogram *h, double q) {
    uint64_t total = 0, seen = 0, rank;

    for (size_t i = 0; i < KD_HIST_FINE; i++)
        total += atomic_load_explicit(&h->fine[i], memory_order_relaxed);
    if (!total)
        return 0;
    rank = (uint64_t)(q * (double)total);
    if (rank >= total)
        rank = total - 1;
    for (size_t i = 0; i < KD_HIST_FINE; i++) {
        seen += atomic_load_explicit(&h->fine[i], memory_order_relaxed);
        if (seen > rank)
            return fine_mid(i) / 1e6;
    }
    return fine_mid(KD_HIST_FINE - 1) / 1e6;
}

void kd_histogram_observe(kd_histogram *h, double seconds) {
    size_t i = 0;

    if (!(seconds > 0)) /* a clock step back, or NaN */
        seconds = 0;
    if (seconds > 1e12)
        seconds = 1e12;

    while (i < KD_HIST_BUCKETS && seconds > kd_metrics_bucket_le[i])
        i++;
    if (i < KD_HIST_BUCKETS)
        atomic_fetch_add_explicit(&h->buckets[i], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&h->sum_us, (uint64_t)(seconds * 1e6),
                              memory_order_relaxed);
    atomic_fetch_add_explicit(&h->fine[fine_slot((uint64_t)(seconds * 1e6))], 1,
                              memory_order_relaxed);
    atomic_fetch_add_explicit(&h->count, 1, memory_order_relaxed);
}
