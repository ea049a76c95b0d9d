/*
 * kdedup - metrics (see metrics.h).
 */
#include "sidecar/metrics.h"
#include "sidecar/version.h"

#include <cjson/cJSON.h>

#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#define MAX_LAGS 4096
#define MAX_BROKERS 64

static const double bucket_le[KD_HIST_BUCKETS] = {
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30};

typedef struct lag {
    char topic[256];
    int32_t partition;
    int64_t lag;
} lag;

typedef struct broker_rtt {
    char name[128];
    double rtt_s;
} broker_rtt;

/* Gauges from librdkafka statistics, replaced as a whole under the lock. */
typedef struct stats_view {
    lag *lags;
    size_t nlags;
    broker_rtt rtts[MAX_BROKERS];
    size_t nrtts;
    int64_t producer_queue;
    kd_cluster_view cluster;
} stats_view;

struct kd_metrics {
    const kd_config *cfg;
    kd_route_metrics *routes;
    _Atomic uint64_t collisions, store_errors, inflight, assigned, held, left, foreign;
    _Atomic uint64_t txn_begun, txn_committed, txn_aborted, txn_replaced; /* txn mode */
    _Atomic uint64_t recovery_records, recovery_us;
    _Atomic uint64_t handover_records, handover_us, handover_pending;
    kd_histogram forward_latency, store_write, txn_commit;
    kd_flow_gauges flow;
    pthread_mutex_t lock; /* guards view */
    stats_view view;
};

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

    while (i < KD_HIST_BUCKETS && seconds > bucket_le[i])
        i++;
    if (i < KD_HIST_BUCKETS)
        atomic_fetch_add_explicit(&h->buckets[i], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&h->sum_us, (uint64_t)(seconds * 1e6),
                              memory_order_relaxed);
    atomic_fetch_add_explicit(&h->fine[fine_slot((uint64_t)(seconds * 1e6))], 1,
                              memory_order_relaxed);
    atomic_fetch_add_explicit(&h->count, 1, memory_order_relaxed);
}

/*
 * librdkafka statistics (STATISTICS.md): consumer lag per partition, broker
 * states and round-trip times, the producer's queue, the group's state.
 */

static double num(const cJSON *obj, const char *name, double def) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, name);

    return cJSON_IsNumber(v) ? v->valuedouble : def;
}

static const char *str(const cJSON *obj, const char *name) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, name);

    return cJSON_IsString(v) ? v->valuestring : "";
}

static void read_lags(const cJSON *root, stats_view *v) {
    const cJSON *topics = cJSON_GetObjectItemCaseSensitive(root, "topics"), *t, *p;

    v->nlags = 0;
    cJSON_ArrayForEach(t, topics) {
        cJSON_ArrayForEach(p, cJSON_GetObjectItemCaseSensitive(t, "partitions")) {
            int32_t part = (int32_t)num(p, "partition", -1);
            double l = num(p, "consumer_lag", -1);

            if (part < 0 || l < 0 || v->nlags == MAX_LAGS)
                continue; /* the internal UA partition, or unknown lag */
            snprintf(v->lags[v->nlags].topic, sizeof(v->lags[0].topic), "%s", t->string);
            v->lags[v->nlags].partition = part;
            v->lags[v->nlags++].lag = (int64_t)l;
        }
    }
}

static void read_brokers(const cJSON *root, stats_view *v, bool consumer) {
    const cJSON *b;

    if (consumer)
        v->cluster.brokers_up = v->cluster.brokers_known = 0;
    else
        v->nrtts = 0;
    cJSON_ArrayForEach(b, cJSON_GetObjectItemCaseSensitive(root, "brokers")) {
        if (num(b, "nodeid", -1) < 0)
            continue; /* bootstrap and internal entries */
        if (consumer) {
            v->cluster.brokers_known++;
            v->cluster.brokers_up += !strcmp(str(b, "state"), "UP");
        } else if (v->nrtts < MAX_BROKERS) {
            const cJSON *rtt = cJSON_GetObjectItemCaseSensitive(b, "rtt");

            snprintf(v->rtts[v->nrtts].name, sizeof(v->rtts[0].name), "%s", b->string);
            v->rtts[v->nrtts++].rtt_s = num(rtt, "avg", 0) / 1e6;
        }
    }
}

int kd_metrics_update_stats(kd_metrics *m, const char *json, size_t len) {
    cJSON *root = cJSON_ParseWithLength(json, len);
    const cJSON *cgrp;
    bool consumer;

    if (!root)
        return -1;
    consumer = !strcmp(str(root, "type"), "consumer");
    pthread_mutex_lock(&m->lock);
    read_brokers(root, &m->view, consumer);
    if (consumer) {
        read_lags(root, &m->view);
        cgrp = cJSON_GetObjectItemCaseSensitive(root, "cgrp");
        m->view.cluster.group_steady = !strcmp(str(cgrp, "state"), "up") &&
                                       !strcmp(str(cgrp, "join_state"), "steady");
        m->view.cluster.assignment = (int)num(cgrp, "assignment_size", 0);
    } else {
        m->view.producer_queue = (int64_t)num(root, "msg_cnt", -1);
    }
    pthread_mutex_unlock(&m->lock);
    cJSON_Delete(root);
    return 0;
}

void kd_metrics_cluster_view(kd_metrics *m, kd_cluster_view *out) {
    pthread_mutex_lock(&m->lock);
    *out = m->view.cluster;
    pthread_mutex_unlock(&m->lock);
}

/*
 * Rendering.
 */

typedef struct buf {
    char *p;
    size_t len, cap;
    bool oom;
} buf;

__attribute__((format(printf, 2, 3))) static void put(buf *b, const char *fmt, ...) {
    va_list ap;
    int n;

    for (;;) {
        va_start(ap, fmt);
        n = vsnprintf(b->p ? b->p + b->len : NULL, b->p ? b->cap - b->len : 0, fmt, ap);
        va_end(ap);
        if (n < 0 || b->oom)
            return;
        if (b->p && (size_t)n < b->cap - b->len) {
            b->len += (size_t)n;
            return;
        }
        size_t cap = (b->cap + (size_t)n + 1) * 2;
        char *p = realloc(b->p, cap);

        if (!p) {
            b->oom = true;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
}

/* A label value with \, " and newline escaped, as the format requires. */
static const char *esc(const char *s, char *out, size_t size) {
    size_t n = 0;

    for (; *s && n + 3 < size; s++) {
        if (*s == '\\' || *s == '"' || *s == '\n') {
            out[n++] = '\\';
            out[n++] = *s == '\n' ? 'n' : *s;
        } else {
            out[n++] = *s;
        }
    }
    out[n] = '\0';
    return out;
}

static void family(buf *b, const char *name, const char *type, const char *help) {
    put(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static uint64_t load(_Atomic uint64_t *v) {
    return atomic_load_explicit(v, memory_order_relaxed);
}

/* One counter family with a value per route, labelled route="<its name>". */
static void route_counter(buf *b, kd_metrics *m, const char *name, const char *help,
                          size_t field, const char *extra) {
    family(b, name, "counter", help);
    for (size_t i = 0; i < m->cfg->nroutes; i++) {
        char e[600];

        put(b, "%s{route=\"%s\"%s} %llu\n", name,
            esc(m->cfg->routes[i].name, e, sizeof(e)), extra,
            (unsigned long long)load(
                (_Atomic uint64_t *)((char *)&m->routes[i] + field)));
    }
}

static void histogram(buf *b, kd_histogram *h, const char *name, const char *help) {
    uint64_t cum = 0;

    family(b, name, "histogram", help);
    for (size_t i = 0; i < KD_HIST_BUCKETS; i++) {
        cum += load(&h->buckets[i]);
        put(b, "%s_bucket{le=\"%g\"} %llu\n", name, bucket_le[i],
            (unsigned long long)cum);
    }
    /* count last: +Inf never falls behind the buckets a racing observe bumped */
    uint64_t count = load(&h->count);
    put(b, "%s_bucket{le=\"+Inf\"} %llu\n", name,
        (unsigned long long)(count > cum ? count : cum));
    put(b, "%s_sum %.6f\n%s_count %llu\n", name, (double)load(&h->sum_us) / 1e6, name,
        (unsigned long long)(count > cum ? count : cum));
}

#define RF(f) offsetof(kd_route_metrics, f)

static void render_routes(buf *b, kd_metrics *m) {
    family(b, "kdedup_messages_consumed_total", "counter",
           "Messages read from a source topic.");
    for (size_t i = 0; i < m->cfg->nroutes; i++) {
        char e[600];

        put(b, "kdedup_messages_consumed_total{topic=\"%s\"} %llu\n",
            esc(m->cfg->routes[i].from, e, sizeof(e)),
            (unsigned long long)load(&m->routes[i].consumed));
    }
    route_counter(b, m, "kdedup_messages_forwarded_total",
                  "Claimed messages delivered downstream with a receipt.", RF(forwarded),
                  "");
    route_counter(b, m, "kdedup_claims_released_total",
                  "Claims released after a delivery definitely failed.", RF(released),
                  "");
    route_counter(b, m, "kdedup_retries_total", "Deliveries attempted again.",
                  RF(retries), "");
    route_counter(b, m, "kdedup_dead_lettered_total",
                  "Messages delivered to the route's dead-letter topic.",
                  RF(dead_lettered), "");
    route_counter(b, m, "kdedup_orphans_reforwarded_total",
                  "Claims left in flight by a dead run whose fate could not be read "
                  "downstream: forwarded again (at least once).",
                  RF(orphans_reforwarded), "");
    route_counter(b, m, "kdedup_orphans_found_total",
                  "Claims left in flight by a dead run, found downstream and completed.",
                  RF(orphans_found), "");
    route_counter(b, m, "kdedup_orphans_absent_total",
                  "Claims left in flight by a dead run, not downstream: forwarded once.",
                  RF(orphans_absent), "");
    route_counter(b, m, "kdedup_handover_keys_total",
                  "Keys of newly assigned partitions learned from the downstream topic.",
                  RF(handover_keys), "");
    route_counter(b, m, "kdedup_handover_forgets_total",
                  "Keys forgotten by a handover on reading a forget record another "
                  "store wrote downstream (DELETE /v1/keys).",
                  RF(handover_forgets), "");
    route_counter(b, m, "kdedup_handover_early_total",
                  "Messages the consumer handed over while their partition was paused "
                  "for its handover: held until the handover was done, then claimed "
                  "(or sent, without a key).",
                  RF(handover_early), "");
    route_counter(b, m, "kdedup_abandoned_total",
                  "Messages whose partition was revoked or lost before their fate was "
                  "durable: left to the partition's next owner, never retried here.",
                  RF(abandoned), "");
    route_counter(b, m, "kdedup_orphans_expired_total",
                  "Claims past dedup.inflight_timeout taken over: looked up downstream "
                  "before the message is forwarded again.",
                  RF(orphans_expired), "");
    route_counter(b, m, "kdedup_headers_stripped_total",
                  "Messages whose own kdedup-* headers were dropped before forwarding "
                  "(a source producer cannot plant kdedup's provenance).",
                  RF(headers_stripped), "");
    route_counter(b, m, "kdedup_parked_total",
                  "Messages held back because their key's claim belongs to a delivery "
                  "of an ended ownership whose outcome is not known yet.",
                  RF(parked), "");
}

/* Families with a second label beside route: one family, several fields. */
static void render_split(buf *b, kd_metrics *m, const char *name, const char *help,
                         const char *label, const char *const *values,
                         const size_t *fields, size_t n) {
    family(b, name, "counter", help);
    for (size_t v = 0; v < n; v++)
        for (size_t i = 0; i < m->cfg->nroutes; i++) {
            char e[600];

            put(b, "%s{route=\"%s\",%s=\"%s\"} %llu\n", name,
                esc(m->cfg->routes[i].name, e, sizeof(e)), label, values[v],
                (unsigned long long)load(
                    (_Atomic uint64_t *)((char *)&m->routes[i] + fields[v])));
        }
}

static void render_stats(buf *b, kd_metrics *m) {
    char e[600];

    pthread_mutex_lock(&m->lock);
    family(b, "kdedup_consumer_lag", "gauge",
           "Messages behind the partition's high watermark (librdkafka statistics).");
    for (size_t i = 0; i < m->view.nlags; i++)
        put(b, "kdedup_consumer_lag{topic=\"%s\",partition=\"%d\"} %lld\n",
            esc(m->view.lags[i].topic, e, sizeof(e)), (int)m->view.lags[i].partition,
            (long long)m->view.lags[i].lag);
    family(b, "kdedup_producer_queue_messages", "gauge",
           "Messages in the producer's queues, awaiting delivery.");
    if (m->view.producer_queue >= 0)
        put(b, "kdedup_producer_queue_messages %lld\n",
            (long long)m->view.producer_queue);
    family(b, "kdedup_broker_rtt_seconds", "gauge",
           "Average broker round-trip time seen by the producer.");
    for (size_t i = 0; i < m->view.nrtts; i++)
        put(b, "kdedup_broker_rtt_seconds{broker=\"%s\"} %.6f\n",
            esc(m->view.rtts[i].name, e, sizeof(e)), m->view.rtts[i].rtt_s);
    pthread_mutex_unlock(&m->lock);
}

/* The gauges of memory and flow control (README, "Memory"). */
static void render_flow(buf *b, kd_flow_gauges *f) {
    static const struct {
        const char *name, *help;
        size_t at;
    } gauges[] = {
        {"kdedup_inflight_bytes",
         "Keys, values and headers of the messages in flight (each header's name, "
         "value and 96 bytes, twice: parsed and produced).",
         offsetof(kd_flow_gauges, inflight_bytes)},
        {"kdedup_retrying_messages", "Messages waiting to be sent again.",
         offsetof(kd_flow_gauges, retrying)},
        {"kdedup_backpressure",
         "1 while consumption is paused because pipeline.max_inflight, "
         "max_inflight_bytes or max_retrying was passed.",
         offsetof(kd_flow_gauges, backpressure)},
        {"kdedup_partitions_held_back",
         "Partitions paused because a message at their front is not settled "
         "(failing deliveries) while pipeline.max_inflight of theirs wait behind it.",
         offsetof(kd_flow_gauges, held_back)},
        {"kdedup_offsets_tracked",
         "Consumed offsets tracked until their commit (pending ones, and those "
         "behind the oldest pending).",
         offsetof(kd_flow_gauges, offsets_tracked)},
        {"kdedup_scan_cache_bytes",
         "Key tables of crash-recovery scans held (at most dedup.scan_cache_bytes).",
         offsetof(kd_flow_gauges, scan_cache_bytes)},
        {"kdedup_store_block_cache_bytes",
         "RocksDB block cache in use: data, index and filter blocks "
         "(at most store.block_cache_bytes).",
         offsetof(kd_flow_gauges, store_block_cache)},
        {"kdedup_store_memtable_bytes", "RocksDB memtables, flushing ones included.",
         offsetof(kd_flow_gauges, store_memtables)},
        {"kdedup_store_table_reader_bytes",
         "RocksDB table readers outside the block cache (should stay near 0).",
         offsetof(kd_flow_gauges, store_table_readers)},
        {"kdedup_stuck_messages",
         "Messages their last destination refused more than the route's max_retries "
         "times (the dead-letter topic; the downstream topic on a route without one): "
         "retried, never committed past; /readyz is 503 while there are any.",
         offsetof(kd_flow_gauges, stuck)},
        {"kdedup_txn_producer_initialising",
         "1 while a replacing transactional producer's initialisation waits for the "
         "broker (which ends the old one's transaction): nothing is sent, and "
         "deliveries of a commit whose outcome is unknown wait to be read downstream.",
         offsetof(kd_flow_gauges, txn_initialising)},
    };

    for (size_t i = 0; i < sizeof(gauges) / sizeof(gauges[0]); i++) {
        _Atomic uint64_t *v = (_Atomic uint64_t *)((char *)f + gauges[i].at);

        family(b, gauges[i].name, "gauge", gauges[i].help);
        put(b, "%s %llu\n", gauges[i].name, (unsigned long long)load(v));
    }
}

char *kd_metrics_render(kd_metrics *m, size_t *len) {
    static const char *const dup_state[] = {"completed", "in_flight"};
    static const size_t dup_f[] = {RF(duplicates_completed), RF(duplicates_in_flight)};
    static const char *const missing[] = {"forward", "drop", "dead_letter"};
    static const size_t missing_f[] = {RF(missing_forwarded), RF(missing_dropped),
                                       RF(missing_dead_lettered)};
    static const char *const conflict[] = {"skip", "dead_letter", "forward"};
    static const size_t conflict_f[] = {RF(key_conflicts_skipped),
                                        RF(key_conflicts_dead_lettered),
                                        RF(key_conflicts_forwarded)};
    static const char *const rejected[] = {"too_many_headers", "headers_too_large",
                                           "ambiguous_key"};
    static const size_t rejected_f[] = {RF(rejected_too_many_headers),
                                        RF(rejected_headers_too_large),
                                        RF(rejected_ambiguous_key)};
    static const char *const status[] = {"not_persisted", "possibly_persisted"};
    static const size_t status_f[] = {RF(not_persisted), RF(possibly_persisted)};
    static const char *const uncertain[] = {"found", "absent", "unknown"};
    static const size_t uncertain_f[] = {RF(uncertain_found), RF(uncertain_absent),
                                         RF(uncertain_unknown)};
    buf b = {0};

    family(&b, "kdedup_build_info", "gauge", "kdedup's version.");
    put(&b, "kdedup_build_info{version=\"%s\"} 1\n", KD_VERSION);
    render_routes(&b, m);
    render_split(&b, m, "kdedup_duplicates_total",
                 "Messages skipped: their key was completed or in flight (key conflicts "
                 "skipped included).",
                 "state", dup_state, dup_f, 2);
    render_split(&b, m, "kdedup_missing_key_total",
                 "Messages without a usable idempotency key, by the action taken.",
                 "action", missing, missing_f, 3);
    render_split(&b, m, "kdedup_key_conflicts_total",
                 "Duplicate keys whose payload fingerprint differs from the one stored "
                 "with the claim, by the action taken (route's on_key_conflict).",
                 "action", conflict, conflict_f, 3);
    render_split(
        &b, m, "kdedup_rejected_total",
        "Messages kdedup cannot take as they are (over pipeline.max_headers or "
        "max_header_bytes, or a key given twice with different values): "
        "dead-lettered with the reason, or without a dead-letter topic forwarded "
        "without dedup or dropped per on_missing_key.",
        "reason", rejected, rejected_f, 3);
    render_split(&b, m, "kdedup_produce_errors_total",
                 "Failed or uncertain deliveries, by librdkafka's persistence status.",
                 "status", status, status_f, 2);
    render_split(
        &b, m, "kdedup_uncertain_deliveries_total",
        "Possibly persisted deliveries, by what reading downstream told: found "
        "(completed), absent (sent again) or unknown (sent again, at least once).",
        "outcome", uncertain, uncertain_f, 3);
    family(&b, "kdedup_dedup_collisions_total", "counter",
           "Messages forwarded without a working claim: the claim failed (an unreadable "
           "entry, a lost claim race, another key under the same hash) and the message "
           "went out unclaimed, or after its delivery the key was found completed by "
           "another delivery or no longer claimed (e.g. released, or learned by a "
           "handover meanwhile): a duplicate downstream is possible. Each is logged.");
    put(&b, "kdedup_dedup_collisions_total %llu\n",
        (unsigned long long)load(&m->collisions));
    family(&b, "kdedup_recovery_scanned_records_total", "counter",
           "Downstream records read to resolve claims left by dead runs.");
    put(&b, "kdedup_recovery_scanned_records_total %llu\n",
        (unsigned long long)load(&m->recovery_records));
    family(&b, "kdedup_recovery_scan_seconds_total", "counter",
           "Time spent reading downstream records to resolve claims left by dead runs.");
    put(&b, "kdedup_recovery_scan_seconds_total %.6f\n",
        (double)load(&m->recovery_us) / 1e6);
    family(&b, "kdedup_handover_scanned_records_total", "counter",
           "Downstream records read for the history of newly assigned partitions.");
    put(&b, "kdedup_handover_scanned_records_total %llu\n",
        (unsigned long long)load(&m->handover_records));
    family(&b, "kdedup_handover_scan_seconds_total", "counter",
           "Time spent reading the history of newly assigned partitions.");
    put(&b, "kdedup_handover_scan_seconds_total %.6f\n",
        (double)load(&m->handover_us) / 1e6);
    family(&b, "kdedup_handover_pending_partitions", "gauge",
           "Assigned partitions paused until their history, and that of every other "
           "newly assigned partition of their route, is read.");
    put(&b, "kdedup_handover_pending_partitions %llu\n",
        (unsigned long long)load(&m->handover_pending));
    family(&b, "kdedup_store_errors_total", "counter",
           "Store reads or writes that failed.");
    put(&b, "kdedup_store_errors_total %llu\n",
        (unsigned long long)load(&m->store_errors));
    family(&b, "kdedup_inflight_messages", "gauge",
           "Messages consumed whose fate is not yet durable.");
    put(&b, "kdedup_inflight_messages %llu\n", (unsigned long long)load(&m->inflight));
    family(&b, "kdedup_held_claims", "gauge",
           "Claims held by this run's messages in flight (bounded by them).");
    put(&b, "kdedup_held_claims %llu\n", (unsigned long long)load(&m->held));
    family(&b, "kdedup_foreign_records_total", "counter",
           "Downstream records read but not trusted (with dedup.signing_key: no valid "
           "signature), never learned from.");
    put(&b, "kdedup_foreign_records_total %llu\n", (unsigned long long)load(&m->foreign));
    family(&b, "kdedup_left_claims", "gauge",
           "Claims of possibly persisted deliveries whose partition left this "
           "ownership, remembered with where to read them (at most 65536).");
    put(&b, "kdedup_left_claims %llu\n", (unsigned long long)load(&m->left));
    family(&b, "kdedup_assigned_partitions", "gauge", "Source partitions assigned.");
    put(&b, "kdedup_assigned_partitions %llu\n", (unsigned long long)load(&m->assigned));
    render_flow(&b, &m->flow);
    render_stats(&b, m);
    histogram(&b, &m->forward_latency, "kdedup_forward_latency_seconds",
              "From consuming a message to its receipt being durable.");
    histogram(&b, &m->store_write, "kdedup_store_write_seconds",
              "One batch write to the store (claims or receipts).");
    if (m->cfg->delivery == KD_DELIVERY_TRANSACTIONAL) {
        family(
            &b, "kdedup_transactions_total", "counter",
            "Kafka transactions (pipeline.delivery transactional), by how they ended.");
        put(&b, "kdedup_transactions_total{result=\"begun\"} %llu\n",
            (unsigned long long)load(&m->txn_begun));
        put(&b, "kdedup_transactions_total{result=\"committed\"} %llu\n",
            (unsigned long long)load(&m->txn_committed));
        put(&b, "kdedup_transactions_total{result=\"aborted\"} %llu\n",
            (unsigned long long)load(&m->txn_aborted));
        family(&b, "kdedup_transactional_producers_replaced_total", "counter",
               "Transactional producers replaced after a fatal error.");
        put(&b, "kdedup_transactional_producers_replaced_total %llu\n",
            (unsigned long long)load(&m->txn_replaced));
        histogram(&b, &m->txn_commit, "kdedup_transaction_commit_seconds",
                  "One transaction's end: its deliveries flushed, offsets sent, "
                  "committed.");
    }
    if (b.oom) {
        free(b.p);
        return NULL;
    }
    *len = b.len;
    return b.p;
}
