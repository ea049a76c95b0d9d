/*
 * kdedup - metrics: rendering, in the Prometheus text exposition format
 * 0.0.4 (file map: metrics_int.h).
 */
#include "sidecar/metrics_int.h"
#include "sidecar/version.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

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
        put(b, "%s_bucket{le=\"%g\"} %llu\n", name, kd_metrics_bucket_le[i],
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
    route_counter(b, m, "kdedup_handover_failures_total",
                  "Reads of a newly assigned partition's history that failed (the "
                  "partition waits, and is read again after a backoff of 1 s to 30 s).",
                  RF(handover_failures), "");
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
        {"kdedup_store_key_filter_bytes",
         "The store's key filter, which lets reads of new keys skip RocksDB "
         "(store.key_filter_bytes, rounded down to a power of two).",
         offsetof(kd_flow_gauges, store_key_filter)},
        {"kdedup_store_key_filter_ready",
         "1 while the key filter answers (else every read asks RocksDB): built from "
         "the store's records, at start and once full again, and not given up for a "
         "store holding more than half the keys it was sized for.",
         offsetof(kd_flow_gauges, store_key_filter_ready)},
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
    family(&b, "kdedup_recovery_scans_total", "counter",
           "Reads of a downstream partition to resolve claims (one key's, or several "
           "keys' together; each step of a read counted).");
    put(&b, "kdedup_recovery_scans_total %llu\n",
        (unsigned long long)load(&m->recovery_scans));
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
