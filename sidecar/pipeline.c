/*
 * kdedup - the pipeline (see pipeline.h and DESIGN.md §3).
 *
 * Every consumed message becomes a `msg` that lives until its fate is
 * durable: forwarded with a receipt, skipped as a duplicate, dropped or
 * dead-lettered by policy. Until then its offset is pending in kd_offsets,
 * and the consumed rd_kafka_message_t is kept, so the producer sends its
 * key, value and headers without copying them, and a retry needs nothing
 * from the broker.
 *
 * All work happens on the thread in kd_pipeline_run(): librdkafka calls the
 * delivery-report and rebalance callbacks from inside the polls made there.
 */
#include "sidecar/pipeline.h"
#include "dedup/dedup.h"
#include "sidecar/clock.h"
#include "sidecar/headers.h"
#include "sidecar/kafka.h"
#include "sidecar/log.h"
#include "sidecar/metrics.h"
#include "sidecar/offsets.h"
#include "sidecar/recovery.h"

#include <librdkafka/rdkafka.h>

#include <inttypes.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define SOURCE_HEADER "kdedup-source"
/* The producing run: tells a run's copies from another run's re-forwards. */
#define RUN_HEADER "kdedup-run"
#define MAX_BACKOFF_MS 60000
#define TAKEOVER_TRIES 3
#define RECOVERY_IDLE_MS 60000 /* scans are forgotten after this without orphans */
#define METADATA_TIMEOUT_MS 10000
#define STORE_BACKOFF_MIN_MS 100
#define STORE_BACKOFF_MAX_MS 5000
#define HANDOVER_BACKOFF_MIN_MS 1000
#define HANDOVER_BACKOFF_MAX_MS 30000
#define UNCERTAIN_TRIES 10 /* reads of downstream before resending anyway */

typedef enum msg_kind {
    MSG_DEDUP,      /* has a key: claimed before it is forwarded */
    MSG_PLAIN,      /* forwarded without dedup (missing key, or undeduplicable) */
    MSG_DEAD_LETTER /* to the route's dead-letter topic */
} msg_kind;

typedef struct msg {
    struct msg *next;        /* in at most one list */
    rd_kafka_message_t *rkm; /* the consumed message, kept until done */
    size_t route;
    msg_kind kind;
    const char *key; /* borrowed from rkm's headers */
    size_t key_len;
    bool claimed;         /* holds a claim in the store */
    bool uncertain;       /* possibly persisted: read downstream before resending */
    int reads;            /* uncertain: failed reads of downstream so far */
    int64_t scan_from;    /* downstream: it lands at or after this offset */
    int attempts;         /* failed deliveries so far */
    uint64_t consumed_us; /* monotonic: for the forward latency */
    uint64_t due_ms;      /* in the retry list: when (monotonic) */
    /* the delivery report */
    rd_kafka_resp_err_t err;
    rd_kafka_msg_status_t status;
    int32_t out_partition;
    int64_t out_offset;
    int64_t out_timestamp;
} msg;

typedef struct msg_list {
    msg *head, *tail;
    size_t n;
} msg_list;

/* A source partition assigned and paused until its history is read from
 * the downstream topic (see recovery.h, "handover"). */
typedef struct handover {
    size_t route;
    int32_t partition;
    uint64_t due_ms;     /* mono: the next attempt */
    uint64_t backoff_ms; /* after a failed attempt */
} handover;

typedef struct route_rt {
    const kd_route *cfg;
    kd_dedup *dedup; /* keys are scoped to their route: namespace ":" from */
    int out_partitions;
    int dlt_partitions;
    int64_t *acked; /* per downstream partition: past the last delivery acked */
} route_rt;

struct kd_pipeline {
    const kd_config *cfg;
    kd_store *store;
    rd_kafka_t *consumer;
    rd_kafka_t *producer;
    route_rt *routes;
    kd_offsets *offsets;
    kd_recovery *recovery;
    uint64_t last_orphan_ms; /* mono: the latest orphaned claim met */
    handover *handovers;     /* waiting, in assignment order */
    size_t nhandovers, handovers_cap;
    _Atomic uint64_t handovers_failing; /* waiting after a failed attempt */
    uint64_t boot_id;
    char boot_hex[17];
    _Atomic int stop;
    _Atomic int fatal;

    msg_list reported; /* delivery reports, filled by dr_cb */
    msg_list receipts; /* delivered; receipt not yet durable */
    msg_list retries;  /* waiting for due_ms */
    size_t awaiting;   /* produced, no report yet */

    /* Reused buffers: a poll batch (batch_max long) and its claims... */
    msg **batch_msgs;
    kd_claim *claims;
    size_t *claim_of; /* batch index -> claims index */
    /* ...and the receipts of one turn (grown as needed). A rebalance inside
     * a poll completes receipts while a batch is being collected, so the
     * two never share. */
    msg **receipt_msgs;
    kd_completion *completions;
    char *receipt_text;
    size_t receipt_cap;

    kd_metrics *metrics;
    _Atomic uint64_t tick_ms; /* last turn of the loop: /healthz */

    /* While store writes fail, consumption is paused and offsets are not
     * stored; failed claims and receipts are retried with backoff. */
    _Atomic uint64_t store_failing_since; /* mono ms; 0 when healthy */
    uint64_t store_retry_at;              /* mono ms: next receipt retry */
    uint64_t store_backoff_ms;
};

/* Counters: per route, and process-wide. */
#define RCOUNT(p, route, field)                                                          \
    atomic_fetch_add_explicit(&kd_metrics_route((p)->metrics, (route))->field, 1,        \
                              memory_order_relaxed)
#define GCOUNT(p, which, by)                                                             \
    atomic_fetch_add_explicit(kd_metrics_##which((p)->metrics), (by),                    \
                              memory_order_relaxed)

/*
 * Small helpers.
 */

/* Observes the seconds since t0_us (monotonic) in h. */
static void observe_since(kd_histogram *h, uint64_t t0_us) {
    kd_histogram_observe(h, (double)(kd_mono_us() - t0_us) / 1e6);
}

/* A random non-zero id for this run's claims. */
static uint64_t random_boot_id(void) {
    uint64_t id = 0;
    FILE *fp = fopen("/dev/urandom", "rb");

    if (fp) {
        if (fread(&id, sizeof(id), 1, fp) != 1)
            id = 0;
        fclose(fp);
    }
    if (!id) /* no urandom: time and address, good enough to tell runs apart */
        id = kd_wall_ms() ^ ((uint64_t)(uintptr_t)&id << 16) ^ (uint64_t)clock();
    return id ? id : 1;
}

static void list_push(msg_list *l, msg *m) {
    m->next = NULL;
    if (l->tail)
        l->tail->next = m;
    else
        l->head = m;
    l->tail = m;
    l->n++;
}

static msg_list list_take(msg_list *l) {
    msg_list all = *l;

    memset(l, 0, sizeof(*l));
    return all;
}

static const char *src_topic(const msg *m) {
    return rd_kafka_topic_name(m->rkm->rkt);
}

static size_t route_of(const kd_pipeline *p, const char *topic) {
    for (size_t i = 0; i < p->cfg->nroutes; i++)
        if (!strcmp(p->cfg->routes[i].from, topic))
            return i;
    return SIZE_MAX;
}

/* Log fields naming a message's source coordinates. */
#define MSG_FIELDS(m, part, off)                                                         \
    char part[16], off[24];                                                              \
    snprintf(part, sizeof(part), "%" PRId32, (m)->rkm->partition);                       \
    snprintf(off, sizeof(off), "%" PRId64, (m)->rkm->offset);                            \
    const char *fields[] = {                                                             \
        "topic",  src_topic(m), "partition", part,                                       \
        "offset", off,          "route",     p->cfg->routes[(m)->route].to,              \
        NULL}

static kd_dedup *dedup_of(const kd_pipeline *p, const msg *m) {
    return p->routes[m->route].dedup;
}

static size_t handover_find(const kd_pipeline *p, size_t route, int32_t partition) {
    for (size_t i = 0; i < p->nhandovers; i++)
        if (p->handovers[i].route == route && p->handovers[i].partition == partition)
            return i;
    return SIZE_MAX;
}

/* Pauses every partition assigned, or resumes those not waiting for their
 * history. */
static void pause_assignment(kd_pipeline *p, bool pause) {
    rd_kafka_topic_partition_list_t *parts = NULL, *some;

    if (rd_kafka_assignment(p->consumer, &parts) || !parts)
        return;
    some = rd_kafka_topic_partition_list_new(parts->cnt ? parts->cnt : 1);
    for (int i = 0; i < parts->cnt; i++)
        if (pause || handover_find(p, route_of(p, parts->elems[i].topic),
                                   parts->elems[i].partition) == SIZE_MAX)
            rd_kafka_topic_partition_list_add(some, parts->elems[i].topic,
                                              parts->elems[i].partition);
    if (some->cnt)
        (pause ? rd_kafka_pause_partitions : rd_kafka_resume_partitions)(p->consumer,
                                                                         some);
    rd_kafka_topic_partition_list_destroy(some);
    rd_kafka_topic_partition_list_destroy(parts);
}

/* A store call failed: counted, logged with the backend's own description,
 * and, on the first failure, consumption paused until a write succeeds. */
static void store_failed(kd_pipeline *p, size_t route, const char *what) {
    char err[512];
    const char *fields[] = {"route", p->cfg->routes[route].to, NULL};
    uint64_t now = kd_mono_ms();

    GCOUNT(p, store_errors, 1);
    KD_LOG(KD_LOG_WARN, fields, "store: %s failed: %s (retrying)", what,
           kd_store_last_error(p->store, err, sizeof(err)));
    if (!atomic_load(&p->store_failing_since)) {
        KD_ERROR("store failing: consumption and offset commits paused until it "
                 "accepts writes again");
        atomic_store(&p->store_failing_since, now ? now : 1);
        p->store_backoff_ms = STORE_BACKOFF_MIN_MS;
        pause_assignment(p, true);
    } else if (p->store_backoff_ms < STORE_BACKOFF_MAX_MS) {
        p->store_backoff_ms *= 2;
    }
    p->store_retry_at = now + p->store_backoff_ms;
}

/* A store write succeeded: if it was failing, consumption resumes. */
static void store_ok(kd_pipeline *p) {
    uint64_t since = atomic_load(&p->store_failing_since);

    if (!since)
        return;
    KD_INFO("store accepts writes again after %llums: resuming consumption",
            (unsigned long long)(kd_mono_ms() - since));
    atomic_store(&p->store_failing_since, 0);
    p->store_backoff_ms = 0;
    pause_assignment(p, false);
}

static bool store_failing(const kd_pipeline *p) {
    return atomic_load(&p->store_failing_since) != 0;
}

/* The message's fate is durable: its offset may be committed past. */
static void msg_done(kd_pipeline *p, msg *m) {
    kd_offsets_done(p->offsets, m->route, m->rkm->partition, m->rkm->offset);
    rd_kafka_message_destroy(m->rkm);
    free(m);
    GCOUNT(p, inflight, (uint64_t)-1);
}

static void schedule_retry(kd_pipeline *p, msg *m, uint64_t delay_ms) {
    m->due_ms = kd_mono_ms() + delay_ms;
    list_push(&p->retries, m);
}

static uint64_t backoff_ms(const kd_pipeline *p, const msg *m) {
    uint64_t ms = p->routes[m->route].cfg->retry_backoff_ms;

    for (int i = 1; i < m->attempts && ms < MAX_BACKOFF_MS; i++)
        ms *= 2;
    return ms < MAX_BACKOFF_MS ? ms : MAX_BACKOFF_MS;
}

#define RECEIPT_MAX 600

static bool receipt_capacity(kd_pipeline *p, size_t n) {
    kd_completion *k;
    msg **b;
    char *t;

    if (n <= p->receipt_cap)
        return true;
    if ((k = realloc(p->completions, n * sizeof(*k))))
        p->completions = k;
    if ((b = realloc(p->receipt_msgs, n * sizeof(*b))))
        p->receipt_msgs = b;
    if ((t = realloc(p->receipt_text, n * RECEIPT_MAX)))
        p->receipt_text = t;
    if (!k || !b || !t)
        return false;
    p->receipt_cap = n;
    return true;
}

/*
 * Producing.
 */

static void on_failed(kd_pipeline *p, msg *m);
static void complete_timed(kd_pipeline *p, size_t route, kd_completion *c, size_t n);
static size_t format_receipt(const kd_pipeline *p, const msg *m, char *buf, size_t size);

/* Sends m to its downstream (or dead-letter) topic, on the partition with
 * the source partition's number, so one source partition keeps its order. */
static void produce(kd_pipeline *p, msg *m) {
    const route_rt *r = &p->routes[m->route];
    bool dlt = m->kind == MSG_DEAD_LETTER;
    const char *topic = dlt ? r->cfg->dead_letter_topic : r->cfg->to;
    int32_t partition = m->rkm->partition % (dlt ? r->dlt_partitions : r->out_partitions);
    rd_kafka_headers_t *src = NULL, *hdrs;
    rd_kafka_resp_err_t err;
    char source[320];

    hdrs = rd_kafka_message_headers(m->rkm, &src) == RD_KAFKA_RESP_ERR_NO_ERROR
               ? rd_kafka_headers_copy(src)
               : rd_kafka_headers_new(1);
    snprintf(source, sizeof(source), "%s/%" PRId32 "/%" PRId64, src_topic(m),
             m->rkm->partition, m->rkm->offset);
    rd_kafka_header_add(hdrs, SOURCE_HEADER, -1, source, -1);
    rd_kafka_header_add(hdrs, RUN_HEADER, -1, p->boot_hex, -1);
    if (!dlt)
        m->scan_from = r->acked[partition];
    for (;;) {
        err = rd_kafka_producev(
            p->producer, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_PARTITION(partition),
            RD_KAFKA_V_KEY(m->rkm->key, m->rkm->key_len),
            RD_KAFKA_V_VALUE(m->rkm->payload, m->rkm->len), RD_KAFKA_V_HEADERS(hdrs),
            RD_KAFKA_V_TIMESTAMP(rd_kafka_message_timestamp(m->rkm, NULL)),
            RD_KAFKA_V_OPAQUE(m), RD_KAFKA_V_END);
        if (err != RD_KAFKA_RESP_ERR__QUEUE_FULL)
            break;
        rd_kafka_poll(p->producer, 10); /* reports only queue up: no re-entry */
    }
    if (err) {
        rd_kafka_headers_destroy(hdrs);
        m->err = err;
        m->status = RD_KAFKA_MSG_STATUS_NOT_PERSISTED;
        on_failed(p, m);
        return;
    }
    p->awaiting++;
}

static void dr_cb(rd_kafka_t *rk, const rd_kafka_message_t *rkm, void *opaque) {
    kd_pipeline *p = opaque;
    msg *m = rkm->_private;

    (void)rk;
    m->err = rkm->err;
    m->status = rd_kafka_message_status(rkm);
    m->out_partition = rkm->partition;
    m->out_offset = rkm->offset;
    m->out_timestamp = rd_kafka_message_timestamp(rkm, NULL);
    if (!rkm->err && m->kind != MSG_DEAD_LETTER && rkm->offset >= 0) {
        int64_t *acked = &p->routes[m->route].acked[rkm->partition];

        if (rkm->offset + 1 > *acked)
            *acked = rkm->offset + 1;
    }
    p->awaiting--;
    list_push(&p->reported, m);
}

/*
 * Claiming.
 */

/* Adds what the recovery scans read since `before` to the metrics. */
static void count_scans(kd_pipeline *p, const kd_recovery_stats *before) {
    kd_recovery_stats after;

    kd_recovery_stats_get(p->recovery, &after);
    GCOUNT(p, recovery_records, after.records - before->records);
    GCOUNT(p, recovery_us, after.micros - before->micros);
}

/* m's delivery was found downstream at out_part (a scan's *f): completes
 * its claim with a receipt naming that record and settles m (freed). False
 * when the store failed (m is then retried). */
static bool complete_found(kd_pipeline *p, msg *m, int32_t out_part,
                           const kd_recover_found *f) {
    char receipt[RECEIPT_MAX];
    kd_completion c = {.key = m->key, .key_len = m->key_len, .receipt = receipt};

    m->out_partition = out_part;
    m->out_offset = f->offset;
    m->out_timestamp = f->timestamp;
    c.receipt_len = format_receipt(p, m, receipt, sizeof(receipt));
    complete_timed(p, m->route, &c, 1);
    if (c.err == KD_ERR_STORE) {
        schedule_retry(p, m, p->store_backoff_ms);
        return false;
    }
    msg_done(p, m);
    return true;
}

/* m's key is claimed by run `owner`, which is gone. Reads the downstream
 * partition m would have gone to: if the dead run delivered it, completes
 * the claim with a receipt naming that record and settles m (true). Else
 * false, with *absent telling whether it is known not to be there. */
static bool resolve_orphan(kd_pipeline *p, msg *m, uint64_t owner, bool *absent) {
    int32_t part = m->rkm->partition % p->routes[m->route].out_partitions;
    kd_recovery_stats before;
    kd_recover_found f;
    kd_recover_result res;

    p->last_orphan_ms = kd_mono_ms();
    kd_recovery_stats_get(p->recovery, &before);
    res = kd_recovery_find(p->recovery, owner, m->route, part, m->key, m->key_len, &f);
    count_scans(p, &before);
    *absent = res == KD_RECOVER_ABSENT;
    if (res != KD_RECOVER_FOUND)
        return false;
    size_t route = m->route; /* m is freed once settled */
    if (complete_found(p, m, part, &f))
        RCOUNT(p, route, orphans_found);
    return true;
}

/* m's delivery may or may not have been written (POSSIBLY_PERSISTED).
 * Reads its downstream partition from where it would have landed: found,
 * its claim is completed with that record; absent, m is sent again under
 * the same claim. When the partition cannot be read, it is read again
 * later, and after UNCERTAIN_TRIES m is sent again all the same (at least
 * once). */
static void resolve_uncertain(kd_pipeline *p, msg *m) {
    int32_t part = m->rkm->partition % p->routes[m->route].out_partitions;
    kd_recovery_stats before;
    kd_recover_found f;
    kd_recover_result res;

    p->last_orphan_ms = kd_mono_ms();
    kd_recovery_stats_get(p->recovery, &before);
    res = kd_recovery_find_since(p->recovery, m->route, part, m->scan_from, m->key,
                                 m->key_len, &f);
    count_scans(p, &before);
    if (res == KD_RECOVER_FOUND) {
        size_t route = m->route; /* m is freed once settled */
        uint64_t consumed_us = m->consumed_us;

        if (complete_found(p, m, part, &f)) {
            RCOUNT(p, route, uncertain_found);
            RCOUNT(p, route, forwarded);
            observe_since(kd_metrics_forward_latency(p->metrics), consumed_us);
        }
        return;
    }
    if (res == KD_RECOVER_UNKNOWN && ++m->reads < UNCERTAIN_TRIES) {
        uint64_t delay = 250u << (m->reads < 6 ? m->reads : 6);

        schedule_retry(p, m, delay);
        return;
    }
    if (res == KD_RECOVER_ABSENT)
        RCOUNT(p, m->route, uncertain_absent);
    else
        RCOUNT(p, m->route, uncertain_unknown);
    m->uncertain = false;
    schedule_retry(p, m, 0); /* produced again, under the same claim */
}

/* Claims m's key alone, taking over a claim left by another run (a crash):
 * resolved from the downstream topic when it can be; else that claim is
 * released and made again under this run's id, and m forwarded. */
static void takeover(kd_pipeline *p, msg *m) {
    bool took_over = false, absent = false;

    for (int tries = 0; tries < TAKEOVER_TRIES; tries++) {
        kd_claim c = {.key = m->key, .key_len = m->key_len};
        kd_err err;

        kd_dedup_claim_batch(dedup_of(p, m), &c, 1, kd_wall_ms());
        if (c.err == KD_ERR_STORE) {
            store_failed(p, m->route, "claim");
            schedule_retry(p, m, p->store_backoff_ms);
            return;
        }
        store_ok(p);
        if (c.err != KD_OK) {
            MSG_FIELDS(m, part, off);
            KD_LOG(KD_LOG_WARN, fields, "key cannot be deduplicated (%s): forwarding it",
                   kd_err_name(c.err));
            GCOUNT(p, collisions, 1);
            m->kind = MSG_PLAIN;
            produce(p, m);
            return;
        }
        kd_decision_clear(&c.decision);
        if (c.decision.state == KD_CLAIMED) {
            m->claimed = true;
            if (took_over && absent)
                RCOUNT(p, m->route, orphans_absent);
            else if (took_over)
                RCOUNT(p, m->route, orphans_reforwarded);
            produce(p, m);
            return;
        }
        if (c.decision.state == KD_COMPLETED || c.owner == p->boot_id) {
            if (c.decision.state == KD_COMPLETED)
                RCOUNT(p, m->route, duplicates_completed);
            else
                RCOUNT(p, m->route, duplicates_in_flight);
            msg_done(p, m);
            return;
        }
        if (!took_over && resolve_orphan(p, m, c.owner, &absent))
            return;
        err = kd_dedup_release_claim(dedup_of(p, m), m->key, m->key_len);
        if (err != KD_OK && err != KD_ERR_SEQUENCE_CONFLICT) {
            store_failed(p, m->route, "release of an orphaned claim");
            schedule_retry(p, m, p->store_backoff_ms);
            return;
        }
        took_over = true;
    }
    schedule_retry(p, m, backoff_ms(p, m));
}

/* Acts on the claim decision for m. */
static void on_claim(kd_pipeline *p, msg *m, kd_claim *c) {
    if (c->err == KD_ERR_STORE) {
        schedule_retry(p, m, p->store_backoff_ms); /* store_failed: claim_timed */
    } else if (c->err != KD_OK) {
        MSG_FIELDS(m, part, off);
        KD_LOG(KD_LOG_WARN, fields, "key cannot be deduplicated (%s): forwarding it",
               kd_err_name(c->err));
        GCOUNT(p, collisions, 1);
        m->kind = MSG_PLAIN;
        produce(p, m);
    } else if (c->decision.state == KD_CLAIMED) {
        m->claimed = true;
        produce(p, m);
    } else if (c->decision.state == KD_COMPLETED) {
        RCOUNT(p, m->route, duplicates_completed);
        msg_done(p, m);
    } else if (c->owner == p->boot_id) {
        RCOUNT(p, m->route, duplicates_in_flight);
        msg_done(p, m);
    } else {
        takeover(p, m); /* claimed by a run that is gone */
    }
    kd_decision_clear(&c->decision);
}

/* One store write each: a route's claims, or its receipts; timed for
 * kdedup_store_write_seconds. */
static void claim_timed(kd_pipeline *p, size_t route, kd_claim *c, size_t n,
                        uint64_t now) {
    uint64_t t0 = kd_mono_us();

    if (kd_dedup_claim_batch(p->routes[route].dedup, c, n, now) != KD_OK)
        for (size_t i = 0; i < n; i++)
            c[i].err = KD_ERR_STORE;
    observe_since(kd_metrics_store_write(p->metrics), t0);
    for (size_t i = 0; i < n; i++)
        if (c[i].err == KD_ERR_STORE) {
            store_failed(p, route, "claim batch");
            return;
        }
    store_ok(p);
}

static void complete_timed(kd_pipeline *p, size_t route, kd_completion *c, size_t n) {
    uint64_t t0 = kd_mono_us();

    if (kd_dedup_complete_batch(p->routes[route].dedup, c, n) != KD_OK)
        for (size_t i = 0; i < n; i++)
            c[i].err = KD_ERR_STORE;
    observe_since(kd_metrics_store_write(p->metrics), t0);
    for (size_t i = 0; i < n; i++)
        if (c[i].err == KD_ERR_STORE) {
            store_failed(p, route, "receipt batch");
            return;
        }
    store_ok(p);
}

/* Claims the keyed messages of a batch with one store write per route
 * (usually one), then acts on every message in consumption order. */
static void dispatch(kd_pipeline *p, msg **batch, size_t n) {
    uint64_t now = kd_wall_ms();
    size_t nclaims = 0;

    for (size_t r = 0; r < p->cfg->nroutes; r++) {
        size_t first = nclaims;

        for (size_t i = 0; i < n; i++)
            if (batch[i]->kind == MSG_DEDUP && batch[i]->route == r) {
                p->claim_of[i] = nclaims;
                p->claims[nclaims++] =
                    (kd_claim){.key = batch[i]->key, .key_len = batch[i]->key_len};
            }
        if (nclaims > first)
            claim_timed(p, r, p->claims + first, nclaims - first, now);
    }
    for (size_t i = 0; i < n; i++) {
        if (batch[i]->kind == MSG_DEDUP)
            on_claim(p, batch[i], &p->claims[p->claim_of[i]]);
        else
            produce(p, batch[i]);
    }
}

/*
 * Consuming.
 */

/* Turns a consumed message into a msg, or settles it at once. Returns the
 * msg to dispatch, or NULL. */
static msg *classify(kd_pipeline *p, rd_kafka_message_t *rkm) {
    const rd_kafka_headers_t *hdrs = NULL;
    const kd_route *r;
    size_t route = route_of(p, rd_kafka_topic_name(rkm->rkt));
    msg *m;

    if (route == SIZE_MAX) {
        rd_kafka_message_destroy(rkm);
        return NULL;
    }
    switch (kd_offsets_track(p->offsets, route, rkm->partition, rkm->offset)) {
    case KD_TRACKED:
        break;
    case KD_TRACK_NOMEM:
        KD_ERROR("out of memory tracking offsets");
        atomic_store(&p->fatal, 1);
        /* fall through */
    default: /* not assigned any more, or a re-delivery: not ours to handle */
        rd_kafka_message_destroy(rkm);
        return NULL;
    }
    RCOUNT(p, route, consumed);
    GCOUNT(p, inflight, 1);
    if (!(m = calloc(1, sizeof(*m)))) {
        KD_ERROR("out of memory");
        atomic_store(&p->fatal, 1); /* the offset stays pending: nothing lost */
        rd_kafka_message_destroy(rkm);
        return NULL;
    }
    m->rkm = rkm;
    m->route = route;
    m->consumed_us = kd_mono_us();
    r = p->routes[route].cfg;
    rd_kafka_message_headers(rkm, (rd_kafka_headers_t **)&hdrs);
    if (kd_headers_key(hdrs, r->key_header, (size_t)p->cfg->max_key_bytes, &m->key,
                       &m->key_len))
        return m;
    switch (r->on_missing_key) {
    case KD_MISSING_FORWARD:
        RCOUNT(p, m->route, missing_forwarded);
        m->kind = MSG_PLAIN;
        return m;
    case KD_MISSING_DEAD_LETTER:
        RCOUNT(p, m->route, missing_dead_lettered);
        m->kind = MSG_DEAD_LETTER;
        return m;
    case KD_MISSING_DROP:
        break;
    }
    RCOUNT(p, m->route, missing_dropped);
    msg_done(p, m);
    return NULL;
}

/* Reads up to batch_max messages: waits up to timeout_ms for the first. */
static size_t collect(kd_pipeline *p, int timeout_ms) {
    size_t n = 0;

    while (n < (size_t)p->cfg->batch_max && !atomic_load(&p->fatal)) {
        rd_kafka_message_t *rkm = rd_kafka_consumer_poll(p->consumer, n ? 0 : timeout_ms);
        msg *m;

        if (!rkm)
            break;
        if (rkm->err) {
            if (rkm->err != RD_KAFKA_RESP_ERR__PARTITION_EOF)
                KD_WARN("consumer: %s", rd_kafka_message_errstr(rkm));
            rd_kafka_message_destroy(rkm);
            continue;
        }
        if ((m = classify(p, rkm)))
            p->batch_msgs[n++] = m;
    }
    /* A rebalance inside the polls may have revoked some of these: they are
     * the next owner's now. The rest keep their order. */
    size_t kept = 0;
    for (size_t i = 0; i < n; i++) {
        msg *m = p->batch_msgs[i];

        if (kd_offsets_assigned(p->offsets, m->route, m->rkm->partition)) {
            p->batch_msgs[kept++] = m;
            continue;
        }
        rd_kafka_message_destroy(m->rkm);
        free(m);
        GCOUNT(p, inflight, (uint64_t)-1);
    }
    return kept;
}

/*
 * Delivery reports and receipts.
 */

/* A delivery that failed, or may have. */
static void on_failed(kd_pipeline *p, msg *m) {
    const kd_route *r = p->routes[m->route].cfg;
    MSG_FIELDS(m, part, off);

    if (m->status == RD_KAFKA_MSG_STATUS_POSSIBLY_PERSISTED) {
        /* It may be in the log: releasing could let a duplicate through, so
         * the claim is kept, and the downstream partition read to tell. A
         * message without a claim is sent again (at least once). */
        RCOUNT(p, m->route, possibly_persisted);
        if (m->kind == MSG_DEDUP && m->claimed) {
            KD_LOG(KD_LOG_WARN, fields,
                   "delivery possibly persisted (%s): reading downstream to tell",
                   rd_kafka_err2str(m->err));
            m->uncertain = true;
            m->reads = 0;
            resolve_uncertain(p, m);
            return;
        }
        KD_LOG(KD_LOG_WARN, fields, "delivery possibly persisted (%s): producing again",
               rd_kafka_err2str(m->err));
        schedule_retry(p, m, 0);
        return;
    }
    RCOUNT(p, m->route, not_persisted);
    if (m->claimed) {
        kd_err err = kd_dedup_release_claim(dedup_of(p, m), m->key, m->key_len);

        if (err == KD_OK) {
            m->claimed = false;
            RCOUNT(p, m->route, released);
        } else {
            store_failed(p, m->route, "release"); /* keep the claim; the retry re-sends */
        }
    }
    m->attempts++;
    if (r->max_retries >= 0 && m->attempts > r->max_retries &&
        m->kind != MSG_DEAD_LETTER) {
        if (r->dead_letter_topic) {
            KD_LOG(KD_LOG_WARN, fields, "delivery failed %d times (%s): dead-lettering",
                   m->attempts, rd_kafka_err2str(m->err));
            if (m->claimed &&
                kd_dedup_release_claim(dedup_of(p, m), m->key, m->key_len) == KD_OK)
                m->claimed = false;
            m->kind = MSG_DEAD_LETTER;
            schedule_retry(p, m, 0);
            return;
        }
        if (m->attempts == r->max_retries + 1)
            KD_LOG(KD_LOG_ERROR, fields,
                   "delivery failed %d times (%s) and the route has "
                   "no dead_letter_topic: retrying until it succeeds",
                   m->attempts, rd_kafka_err2str(m->err));
    } else {
        KD_LOG(KD_LOG_WARN, fields, "delivery failed (%s): retrying",
               rd_kafka_err2str(m->err));
    }
    schedule_retry(p, m, backoff_ms(p, m));
}

/* A receipt: where a message went (downstream partition, offset and
 * timestamp) and where it came from (source partition and offset). */
static size_t receipt_text(const kd_pipeline *p, size_t route, int32_t out_part,
                           int64_t out_off, int64_t ts, int32_t src_part, int64_t src_off,
                           char *buf, size_t size) {
    const kd_route *r = p->routes[route].cfg;
    int n = snprintf(buf, size,
                     "v1 to=%s/%" PRId32 "@%" PRId64 " ts=%" PRId64 " from=%s/%" PRId32
                     "@%" PRId64,
                     r->to, out_part, out_off, ts, r->from, src_part, src_off);

    return n < 0 ? 0 : (size_t)n < size ? (size_t)n : size - 1;
}

static size_t format_receipt(const kd_pipeline *p, const msg *m, char *buf, size_t size) {
    return receipt_text(p, m->route, m->out_partition, m->out_offset, m->out_timestamp,
                        m->rkm->partition, m->rkm->offset, buf, size);
}

/* Completes the receipts of every delivered claim with one store write. */
static void complete_receipts(kd_pipeline *p) {
    msg_list todo = list_take(&p->receipts);
    size_t n = 0;

    if (!todo.n)
        return;
    if ((store_failing(p) && kd_mono_ms() < p->store_retry_at) ||
        !receipt_capacity(p, todo.n)) {
        p->receipts = todo; /* try again next turn */
        return;
    }
    for (size_t route = 0; route < p->cfg->nroutes; route++) { /* one write a route */
        size_t first = n;

        for (msg *m = todo.head; m; m = m->next) {
            char *r = p->receipt_text + n * RECEIPT_MAX;

            if (m->route != route)
                continue;
            p->receipt_msgs[n] = m;
            p->completions[n++] =
                (kd_completion){.key = m->key,
                                .key_len = m->key_len,
                                .receipt = r,
                                .receipt_len = format_receipt(p, m, r, RECEIPT_MAX)};
        }
        if (n > first)
            complete_timed(p, route, p->completions + first, n - first);
    }
    for (size_t i = 0; i < n; i++) {
        msg *m = p->receipt_msgs[i];
        kd_err err = p->completions[i].err;

        if (err == KD_OK || err == KD_ERR_DEDUP_COLLISION) {
            if (err != KD_OK) { /* delivered all the same: the claim had gone */
                MSG_FIELDS(m, part, off);
                KD_LOG(KD_LOG_WARN, fields, "receipt not recorded: the claim was gone");
                GCOUNT(p, collisions, 1);
            }
            RCOUNT(p, m->route, forwarded);
            observe_since(kd_metrics_forward_latency(p->metrics), m->consumed_us);
            msg_done(p, m);
        } else {
            list_push(&p->receipts, m); /* store_failed: complete_timed */
        }
    }
}

static void handle_reports(kd_pipeline *p) {
    msg_list all = list_take(&p->reported);

    for (msg *m = all.head, *next; m; m = next) {
        next = m->next;
        if (m->err) {
            on_failed(p, m);
        } else if (m->kind == MSG_DEDUP && m->claimed) {
            list_push(&p->receipts, m);
        } else {
            if (m->kind == MSG_DEAD_LETTER)
                RCOUNT(p, m->route, dead_lettered);
            msg_done(p, m);
        }
    }
    complete_receipts(p);
}

/* Serves the producer for up to timeout_ms and settles what it reported. */
static void service(kd_pipeline *p, int timeout_ms) {
    atomic_store(&p->tick_ms, kd_mono_ms());
    rd_kafka_poll(p->producer, timeout_ms);
    handle_reports(p);
}

static void retry_due(kd_pipeline *p) {
    msg_list all = list_take(&p->retries);
    uint64_t now = kd_mono_ms();

    for (msg *m = all.head, *next; m; m = next) {
        next = m->next;
        if (m->due_ms > now) {
            list_push(&p->retries, m);
            continue;
        }
        RCOUNT(p, m->route, retries);
        if (m->uncertain)
            resolve_uncertain(p, m);
        else if (m->kind == MSG_DEDUP && !m->claimed)
            takeover(p, m); /* released: claim again first */
        else
            produce(p, m);
    }
}

/* Drops retries of partitions no longer assigned (all, with all_parts).
 * Claims they hold are released: the next owner consumes them again and
 * must be able to claim them. */
static void abandon_retries(kd_pipeline *p, bool all_parts) {
    msg_list all = list_take(&p->retries);

    for (msg *m = all.head, *next; m; m = next) {
        next = m->next;
        if (!all_parts && kd_offsets_assigned(p->offsets, m->route, m->rkm->partition)) {
            list_push(&p->retries, m);
            continue;
        }
        if (m->claimed)
            kd_dedup_release_claim(dedup_of(p, m), m->key, m->key_len);
        rd_kafka_message_destroy(m->rkm);
        free(m);
        GCOUNT(p, inflight, (uint64_t)-1);
    }
}

/*
 * Handover: the history of a newly assigned partition (see recovery.h).
 */

typedef struct learning {
    kd_pipeline *p;
    size_t route;
    int32_t src_partition, out_partition;
} learning;

/* Records the keys of a batch of downstream records as completed: claimed
 * and completed when the store did not know them; completed when a claim
 * holds them (their delivery is downstream). False when the store failed. */
static bool learn(void *arg, const kd_history_rec *recs, size_t n) {
    learning *l = arg;
    kd_pipeline *p = l->p;
    size_t ndone = 0, nlearned = 0;

    if (!receipt_capacity(p, n))
        return false;
    for (size_t i = 0; i < n; i++)
        p->claims[i] = (kd_claim){.key = recs[i].key, .key_len = recs[i].key_len};
    claim_timed(p, l->route, p->claims, n, kd_wall_ms());
    for (size_t i = 0; i < n; i++)
        if (p->claims[i].err == KD_ERR_STORE) { /* store_failed: claim_timed */
            for (size_t j = 0; j < n; j++)
                kd_decision_clear(&p->claims[j].decision);
            return false;
        }
    for (size_t i = 0; i < n; i++) {
        kd_claim *c = &p->claims[i];
        char *text = p->receipt_text + ndone * RECEIPT_MAX;

        if (c->err == KD_OK && c->decision.state != KD_COMPLETED) {
            if (c->decision.state == KD_CLAIMED)
                nlearned++;
            else if (c->owner != p->boot_id)
                RCOUNT(p, l->route, orphans_found);
            p->completions[ndone++] = (kd_completion){
                .key = c->key,
                .key_len = c->key_len,
                .receipt = text,
                .receipt_len = receipt_text(p, l->route, l->out_partition, recs[i].offset,
                                            recs[i].timestamp, l->src_partition,
                                            recs[i].src_offset, text, RECEIPT_MAX)};
        }
        kd_decision_clear(&c->decision);
    }
    if (ndone)
        complete_timed(p, l->route, p->completions, ndone);
    for (size_t i = 0; i < ndone; i++)
        if (p->completions[i].err == KD_ERR_STORE)
            return false;
    atomic_fetch_add(&kd_metrics_route(p->metrics, l->route)->handover_keys, nlearned);
    return true;
}

static void set_paused(kd_pipeline *p, size_t route, int32_t partition, bool pause) {
    rd_kafka_topic_partition_list_t *one = rd_kafka_topic_partition_list_new(1);

    rd_kafka_topic_partition_list_add(one, p->cfg->routes[route].from, partition);
    (pause ? rd_kafka_pause_partitions : rd_kafka_resume_partitions)(p->consumer, one);
    rd_kafka_topic_partition_list_destroy(one);
}

static bool handover_add(kd_pipeline *p, size_t route, int32_t partition) {
    handover *grown;

    if (handover_find(p, route, partition) != SIZE_MAX)
        return true;
    if (p->nhandovers == p->handovers_cap) {
        size_t cap = p->handovers_cap ? p->handovers_cap * 2 : 16;

        if (!(grown = realloc(p->handovers, cap * sizeof(*grown))))
            return false;
        p->handovers = grown;
        p->handovers_cap = cap;
    }
    p->handovers[p->nhandovers++] = (handover){route, partition, 0, 0};
    GCOUNT(p, handover_pending, 1);
    return true;
}

static void handover_remove(kd_pipeline *p, size_t i) {
    if (p->handovers[i].backoff_ms)
        atomic_fetch_sub(&p->handovers_failing, 1);
    memmove(&p->handovers[i], &p->handovers[i + 1],
            (p->nhandovers - i - 1) * sizeof(*p->handovers));
    p->nhandovers--;
    GCOUNT(p, handover_pending, (uint64_t)-1);
}

/* Reads the history of the first partition due, records it, and resumes
 * the partition; one a turn, so the loop keeps serving the others. */
static void hand_over(kd_pipeline *p) {
    uint64_t now = kd_mono_ms();
    kd_recovery_stats before, after;

    if (store_failing(p) && now < p->store_retry_at)
        return;
    for (size_t i = 0; i < p->nhandovers; i++) {
        handover *h = &p->handovers[i];
        const route_rt *r = &p->routes[h->route];
        learning l = {p, h->route, h->partition, h->partition % r->out_partitions};
        kd_history_result res;

        if (h->due_ms > now)
            continue;
        kd_recovery_stats_get(p->recovery, &before);
        res = kd_recovery_history(p->recovery, h->route, h->partition, l.out_partition,
                                  (size_t)p->cfg->batch_max, learn, &l);
        kd_recovery_stats_get(p->recovery, &after);
        GCOUNT(p, handover_records, after.handover_records - before.handover_records);
        GCOUNT(p, handover_us, after.handover_micros - before.handover_micros);
        if (res == KD_HISTORY_FAILED) {
            if (!h->backoff_ms)
                atomic_fetch_add(&p->handovers_failing, 1);
            h->backoff_ms = h->backoff_ms ? h->backoff_ms * 2 : HANDOVER_BACKOFF_MIN_MS;
            if (h->backoff_ms > HANDOVER_BACKOFF_MAX_MS)
                h->backoff_ms = HANDOVER_BACKOFF_MAX_MS;
            h->due_ms = kd_mono_ms() + h->backoff_ms;
            KD_WARN("handover of %s/%" PRId32 " failed: its consumption waits; again in "
                    "%llums",
                    r->cfg->from, h->partition, (unsigned long long)h->backoff_ms);
            return;
        }
        size_t route = h->route;
        int32_t partition = h->partition;
        handover_remove(p, i);
        if (!store_failing(p))
            set_paused(p, route, partition, false);
        return;
    }
}

/* Called while a scan runs: the loop is busy, not stuck. */
static void scan_progress(void *arg) {
    kd_pipeline *p = arg;

    atomic_store(&p->tick_ms, kd_mono_ms());
}

/*
 * Offsets and rebalances.
 */

typedef struct offset_list {
    kd_pipeline *p;
    rd_kafka_topic_partition_list_t *list;
} offset_list;

static void add_offset(void *arg, size_t route, int32_t partition, int64_t offset) {
    offset_list *ol = arg;

    rd_kafka_topic_partition_list_add(ol->list, ol->p->cfg->routes[route].from, partition)
        ->offset = offset;
}

/* Stores the commit points that moved; the consumer commits them. */
static void store_offsets(kd_pipeline *p) {
    offset_list ol;
    rd_kafka_resp_err_t err;

    if (store_failing(p))
        return; /* paused: nothing moves until the store is back */
    ol = (offset_list){p, rd_kafka_topic_partition_list_new(8)};
    kd_offsets_each_moved(p->offsets, add_offset, &ol);
    if (ol.list->cnt && (err = rd_kafka_offsets_store(p->consumer, ol.list)))
        KD_DEBUG("offsets_store: %s", rd_kafka_err2str(err));
    rd_kafka_topic_partition_list_destroy(ol.list);
}

/* Waits (serving the producer) until nothing is in flight or deadline. */
static void drain(kd_pipeline *p, uint64_t deadline_ms) {
    while ((p->awaiting || p->receipts.n || p->reported.n) && kd_mono_ms() < deadline_ms)
        service(p, 20);
}

/* Commits the commit points of parts now (synchronously). */
static void commit_parts(kd_pipeline *p, const rd_kafka_topic_partition_list_t *parts) {
    rd_kafka_topic_partition_list_t *list = rd_kafka_topic_partition_list_new(parts->cnt);
    rd_kafka_resp_err_t err;

    for (int i = 0; i < parts->cnt; i++) {
        size_t route = route_of(p, parts->elems[i].topic);
        int64_t at;

        if (route != SIZE_MAX &&
            kd_offsets_commit_point(p->offsets, route, parts->elems[i].partition, &at))
            rd_kafka_topic_partition_list_add(list, parts->elems[i].topic,
                                              parts->elems[i].partition)
                ->offset = at;
    }
    if (list->cnt && (err = rd_kafka_commit(p->consumer, list, 0)))
        KD_WARN("commit on revoke: %s", rd_kafka_err2str(err));
    rd_kafka_topic_partition_list_destroy(list);
}

static void on_assign(kd_pipeline *p, rd_kafka_t *rk,
                      rd_kafka_topic_partition_list_t *parts, bool cooperative) {
    rd_kafka_error_t *error = NULL;

    for (int i = 0; i < parts->cnt; i++) {
        size_t route = route_of(p, parts->elems[i].topic);

        if (route != SIZE_MAX &&
            (!kd_offsets_assign(p->offsets, route, parts->elems[i].partition) ||
             (p->cfg->handover && !handover_add(p, route, parts->elems[i].partition))))
            atomic_store(&p->fatal, 1);
    }
    if (cooperative)
        error = rd_kafka_incremental_assign(rk, parts);
    else
        rd_kafka_assign(rk, parts);
    if (error) {
        KD_ERROR("assign: %s", rd_kafka_error_string(error));
        rd_kafka_error_destroy(error);
    }
    /* Nothing is consumed before the partitions' history is read (and the
     * store takes writes): fetched messages are discarded by the pause and
     * fetched again on resume. */
    if (store_failing(p) || p->cfg->handover)
        rd_kafka_pause_partitions(rk, parts);
    GCOUNT(p, assigned, (uint64_t)parts->cnt);
    KD_INFO("assigned %d partition(s)", parts->cnt);
}

static void on_revoke(kd_pipeline *p, rd_kafka_t *rk,
                      rd_kafka_topic_partition_list_t *parts, bool cooperative) {
    bool lost = rd_kafka_assignment_lost(rk);
    rd_kafka_error_t *error = NULL;

    if (!lost) {
        /* Let in-flight deliveries finish so their offsets can be committed. */
        drain(p, kd_mono_ms() + p->cfg->shutdown_grace_ms);
        store_offsets(p);
        commit_parts(p, parts);
    }
    for (int i = 0; i < parts->cnt; i++) {
        size_t route = route_of(p, parts->elems[i].topic);

        size_t h = route == SIZE_MAX ? SIZE_MAX
                                     : handover_find(p, route, parts->elems[i].partition);

        if (route != SIZE_MAX)
            kd_offsets_revoke(p->offsets, route, parts->elems[i].partition);
        if (h != SIZE_MAX)
            handover_remove(p, h);
    }
    abandon_retries(p, false);
    if (cooperative)
        error = rd_kafka_incremental_unassign(rk, parts);
    else
        rd_kafka_assign(rk, NULL);
    if (error) {
        KD_ERROR("unassign: %s", rd_kafka_error_string(error));
        rd_kafka_error_destroy(error);
    }
    GCOUNT(p, assigned, (uint64_t)-parts->cnt);
    KD_INFO("%s %d partition(s)", lost ? "lost" : "revoked", parts->cnt);
}

static void rebalance_cb(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                         rd_kafka_topic_partition_list_t *parts, void *opaque) {
    bool cooperative = !strcmp(rd_kafka_rebalance_protocol(rk), "COOPERATIVE");

    if (err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS) {
        on_assign(opaque, rk, parts, cooperative);
    } else if (err == RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS) {
        on_revoke(opaque, rk, parts, cooperative);
    } else {
        KD_ERROR("rebalance: %s", rd_kafka_err2str(err));
        rd_kafka_assign(rk, NULL);
    }
}

static int stats_cb(rd_kafka_t *rk, char *json, size_t len, void *opaque) {
    kd_pipeline *p = opaque;

    (void)rk;
    if (kd_metrics_update_stats(p->metrics, json, len) != 0)
        KD_DEBUG("statistics: not JSON");
    return 0; /* librdkafka frees json */
}

static void error_cb(rd_kafka_t *rk, int err, const char *reason, void *opaque) {
    kd_pipeline *p = opaque;
    char fatal[512];

    if (err == RD_KAFKA_RESP_ERR__FATAL) {
        rd_kafka_fatal_error(rk, fatal, sizeof(fatal));
        KD_ERROR("%s: fatal error: %s", rd_kafka_name(rk), fatal);
        atomic_store(&p->fatal, 1);
        return;
    }
    KD_WARN("%s: %s", rd_kafka_name(rk), reason);
}

/*
 * Life cycle.
 */

static bool routes_init(kd_pipeline *p, char *errstr, size_t errstr_size) {
    char ns[512];

    if (!(p->routes = calloc(p->cfg->nroutes, sizeof(*p->routes))))
        return false;
    for (size_t i = 0; i < p->cfg->nroutes; i++) {
        route_rt *r = &p->routes[i];

        r->cfg = &p->cfg->routes[i];
        snprintf(ns, sizeof(ns), "%s:%s", p->cfg->ns, r->cfg->from);
        if (!(r->dedup = kd_dedup_new(p->store, ns))) {
            snprintf(errstr, errstr_size, "out of memory");
            return false;
        }
        kd_dedup_set_retention(r->dedup, p->cfg->ttl_ms, p->cfg->inflight_timeout_ms);
        kd_dedup_set_owner(r->dedup, p->boot_id);
        r->out_partitions =
            kd_kafka_partition_count(p->producer, r->cfg->to, METADATA_TIMEOUT_MS);
        r->dlt_partitions =
            r->cfg->dead_letter_topic
                ? kd_kafka_partition_count(p->producer, r->cfg->dead_letter_topic,
                                           METADATA_TIMEOUT_MS)
                : 1;
        if (r->out_partitions > 0 &&
            !(r->acked = calloc((size_t)r->out_partitions, sizeof(*r->acked)))) {
            snprintf(errstr, errstr_size, "out of memory");
            return false;
        }
        if (r->out_partitions <= 0 || r->dlt_partitions <= 0) {
            snprintf(errstr, errstr_size,
                     "routes[%zu]: topic \"%s\" not found on the "
                     "cluster (create it before starting kdedup)",
                     i, r->out_partitions <= 0 ? r->cfg->to : r->cfg->dead_letter_topic);
            return false;
        }
    }
    return true;
}

/* Durably records where the downstream partitions end before this run
 * claims anything: the start of any recovery scan for its claims. */
static bool record_run(kd_pipeline *p, const char *brokers, char *errstr,
                       size_t errstr_size) {
    int *parts = calloc(p->cfg->nroutes, sizeof(*parts));
    int64_t **ends = calloc(p->cfg->nroutes, sizeof(*ends));
    bool ok;

    if (!parts || !ends ||
        !(p->recovery =
              kd_recovery_new(p->cfg, p->store, brokers, errstr, errstr_size))) {
        free(parts);
        free(ends);
        snprintf(errstr, errstr_size, "out of memory");
        return false;
    }
    for (size_t i = 0; i < p->cfg->nroutes; i++) {
        parts[i] = p->routes[i].out_partitions;
        ends[i] = p->routes[i].acked; /* deliveries of this run land past these */
    }
    kd_recovery_set_progress(p->recovery, scan_progress, p);
    ok = kd_recovery_record_run(p->recovery, p->producer, p->boot_id, parts, ends, errstr,
                                errstr_size) == KD_OK;
    free(parts);
    free(ends);
    return ok;
}

static rd_kafka_t *client_new(kd_pipeline *p, kd_client which, const char *brokers,
                              char *errstr, size_t errstr_size) {
    rd_kafka_conf_t *conf = kd_kafka_conf(p->cfg, which, brokers, errstr, errstr_size);
    rd_kafka_t *rk;

    if (!conf)
        return NULL;
    rd_kafka_conf_set_opaque(conf, p);
    rd_kafka_conf_set_error_cb(conf, error_cb);
    rd_kafka_conf_set_stats_cb(conf, stats_cb);
    if (which == KD_CONSUMER)
        rd_kafka_conf_set_rebalance_cb(conf, rebalance_cb);
    else
        rd_kafka_conf_set_dr_msg_cb(conf, dr_cb);
    rk = rd_kafka_new(which == KD_CONSUMER ? RD_KAFKA_CONSUMER : RD_KAFKA_PRODUCER, conf,
                      errstr, errstr_size);
    if (!rk)
        rd_kafka_conf_destroy(conf);
    return rk;
}

kd_pipeline *kd_pipeline_new(const kd_config *cfg, kd_store *store, const char *brokers,
                             char *errstr, size_t errstr_size) {
    kd_pipeline *p = calloc(1, sizeof(*p));
    rd_kafka_topic_partition_list_t *topics;
    rd_kafka_resp_err_t err;

    if (!p) {
        snprintf(errstr, errstr_size, "out of memory");
        return NULL;
    }
    p->cfg = cfg;
    p->store = store;
    p->boot_id = random_boot_id();
    snprintf(p->boot_hex, sizeof(p->boot_hex), "%016" PRIx64, p->boot_id);
    p->metrics = kd_metrics_new(cfg);
    p->batch_msgs = calloc((size_t)cfg->batch_max, sizeof(*p->batch_msgs));
    p->claims = calloc((size_t)cfg->batch_max, sizeof(*p->claims));
    p->claim_of = calloc((size_t)cfg->batch_max, sizeof(*p->claim_of));
    if (!(p->offsets = kd_offsets_new(cfg->nroutes)) || !p->batch_msgs || !p->claims ||
        !p->claim_of || !p->metrics) {
        snprintf(errstr, errstr_size, "out of memory");
        goto fail;
    }
    if (!(p->producer = client_new(p, KD_PRODUCER, brokers, errstr, errstr_size)) ||
        !routes_init(p, errstr, errstr_size) ||
        !record_run(p, brokers, errstr, errstr_size) ||
        !(p->consumer = client_new(p, KD_CONSUMER, brokers, errstr, errstr_size)))
        goto fail;
    rd_kafka_poll_set_consumer(p->consumer);
    topics = rd_kafka_topic_partition_list_new((int)cfg->nroutes);
    for (size_t i = 0; i < cfg->nroutes; i++)
        rd_kafka_topic_partition_list_add(topics, cfg->routes[i].from,
                                          RD_KAFKA_PARTITION_UA);
    err = rd_kafka_subscribe(p->consumer, topics);
    rd_kafka_topic_partition_list_destroy(topics);
    if (err) {
        snprintf(errstr, errstr_size, "subscribe: %s", rd_kafka_err2str(err));
        goto fail;
    }
    return p;
fail:
    kd_pipeline_destroy(p);
    return NULL;
}

int kd_pipeline_run(kd_pipeline *p) {
    uint64_t deadline;

    KD_INFO("pipeline running: %zu route(s), boot id %016" PRIx64, p->cfg->nroutes,
            p->boot_id);
    atomic_store(&p->tick_ms, kd_mono_ms());
    while (!atomic_load(&p->stop) && !atomic_load(&p->fatal)) {
        atomic_store(&p->tick_ms, kd_mono_ms());
        size_t n = collect(p, p->awaiting || p->retries.n || p->nhandovers ? 5 : 100);

        dispatch(p, p->batch_msgs, n);
        service(p, 0);
        retry_due(p);
        hand_over(p);
        store_offsets(p);
        if (p->last_orphan_ms && kd_mono_ms() - p->last_orphan_ms > RECOVERY_IDLE_MS) {
            kd_recovery_forget(p->recovery);
            p->last_orphan_ms = 0;
        }
    }

    /* Stop consuming; let what is in flight land, then commit. */
    deadline = kd_mono_ms() + p->cfg->shutdown_grace_ms;
    KD_INFO("stopping: draining %zu in-flight deliveries", p->awaiting);
    drain(p, deadline);
    abandon_retries(p, true);
    store_offsets(p);
    rd_kafka_commit(p->consumer, NULL, 0);
    rd_kafka_consumer_close(p->consumer);
    if (p->awaiting)
        KD_WARN("%zu deliveries still in flight after the grace period: their claims "
                "stay, and the next run forwards them again",
                p->awaiting);
    return atomic_load(&p->fatal) ? -1 : 0;
}

void kd_pipeline_stop(kd_pipeline *p) {
    atomic_store(&p->stop, 1);
}

void kd_pipeline_stats_get(const kd_pipeline *p, kd_pipeline_stats *out) {
    memset(out, 0, sizeof(*out));
    for (size_t i = 0; i < p->cfg->nroutes; i++) {
        kd_route_metrics *r = kd_metrics_route(p->metrics, i);

        out->consumed += atomic_load(&r->consumed);
        out->forwarded += atomic_load(&r->forwarded);
        out->duplicates_completed += atomic_load(&r->duplicates_completed);
        out->duplicates_in_flight += atomic_load(&r->duplicates_in_flight);
        out->released += atomic_load(&r->released);
        out->retries += atomic_load(&r->retries);
        out->dead_lettered += atomic_load(&r->dead_lettered);
        out->missing_forwarded += atomic_load(&r->missing_forwarded);
        out->missing_dropped += atomic_load(&r->missing_dropped);
        out->possibly_persisted += atomic_load(&r->possibly_persisted);
        out->produce_errors +=
            atomic_load(&r->not_persisted) + atomic_load(&r->possibly_persisted);
        out->orphans_reforwarded += atomic_load(&r->orphans_reforwarded);
        out->orphans_found += atomic_load(&r->orphans_found);
        out->orphans_absent += atomic_load(&r->orphans_absent);
        out->handover_keys += atomic_load(&r->handover_keys);
        out->uncertain_found += atomic_load(&r->uncertain_found);
        out->uncertain_absent += atomic_load(&r->uncertain_absent);
        out->uncertain_unknown += atomic_load(&r->uncertain_unknown);
    }
    out->handover_records = atomic_load(kd_metrics_handover_records(p->metrics));
    out->collisions = atomic_load(kd_metrics_collisions(p->metrics));
    out->store_errors = atomic_load(kd_metrics_store_errors(p->metrics));
    out->assigned_partitions = atomic_load(kd_metrics_assigned(p->metrics));
    out->inflight = atomic_load(kd_metrics_inflight(p->metrics));
}

kd_metrics *kd_pipeline_metrics(kd_pipeline *p) {
    return p->metrics;
}

bool kd_pipeline_healthy(const kd_pipeline *p, uint64_t stale_ms, char *reason,
                         size_t size) {
    uint64_t idle = kd_mono_ms() - atomic_load(&p->tick_ms);

    if (idle < stale_ms)
        return true;
    snprintf(reason, size, "the main loop has not turned for %llums",
             (unsigned long long)idle);
    return false;
}

bool kd_pipeline_ready(kd_pipeline *p, char *reason, size_t size) {
    uint64_t assigned = atomic_load(kd_metrics_assigned(p->metrics));
    kd_cluster_view v;

    kd_metrics_cluster_view(p->metrics, &v);
    uint64_t failing = atomic_load(&p->store_failing_since), unread;
    char err[400];

    if (atomic_load(&p->stop) || atomic_load(&p->fatal))
        snprintf(reason, size, "stopping");
    else if (failing)
        snprintf(reason, size, "store failing for %llums, consumption paused: %s",
                 (unsigned long long)(kd_mono_ms() - failing),
                 kd_store_last_error(p->store, err, sizeof(err)));
    else if ((unread = atomic_load(&p->handovers_failing)))
        snprintf(reason, size,
                 "reading the history of %llu assigned partition(s) from the downstream "
                 "topic failed; they are not consumed until it succeeds (see the log)",
                 (unsigned long long)unread);
    else if (v.brokers_known > 0 && v.brokers_up == 0)
        snprintf(reason, size, "no broker reachable (0 of %d up)", v.brokers_known);
    else if (assigned == 0 && v.group_steady != 1)
        snprintf(reason, size, "consumer group not joined yet (no partition assignment)");
    else
        return true; /* joined: with partitions, or legitimately idle without */
    return false;
}

static void free_list(msg_list *l) {
    for (msg *m = l->head, *next; m; m = next) {
        next = m->next;
        rd_kafka_message_destroy(m->rkm);
        free(m);
    }
    memset(l, 0, sizeof(*l));
}

void kd_pipeline_destroy(kd_pipeline *p) {
    if (!p)
        return;
    if (p->producer) {
        /* Whatever is still queued comes back as purged reports. */
        rd_kafka_purge(p->producer, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
        for (int i = 0; i < 100 && p->awaiting; i++)
            rd_kafka_poll(p->producer, 10);
    }
    free_list(&p->reported);
    free_list(&p->receipts);
    free_list(&p->retries);
    if (p->consumer)
        rd_kafka_destroy(p->consumer);
    if (p->producer)
        rd_kafka_destroy(p->producer);
    kd_offsets_destroy(p->offsets);
    kd_recovery_destroy(p->recovery);
    free(p->handovers);
    for (size_t i = 0; p->routes && i < p->cfg->nroutes; i++) {
        kd_dedup_destroy(p->routes[i].dedup);
        free(p->routes[i].acked);
    }
    free(p->routes);
    free(p->batch_msgs);
    free(p->claims);
    free(p->claim_of);
    free(p->receipt_msgs);
    free(p->completions);
    free(p->receipt_text);
    kd_metrics_destroy(p->metrics);
    free(p);
}
