/*
 * kdedup - the transactional delivery mode (pipeline.delivery
 * "transactional").
 *
 * The records a turn forwards and the source offsets they settle are
 * committed in one Kafka transaction, with the consumer group's metadata
 * (KIP-447): a replica that left the group (its session expired while it
 * stalled, or it was stopped) cannot commit any more, and what it sent is
 * aborted, invisible to every reader with isolation.level=read_committed
 * (kdedup's own handover and recovery read so). This closes what the
 * default mode leaves open: a zombie owner's late deliveries, and
 * deliveries possibly persisted, which here abort their transaction and
 * are sent again in the next.
 *
 * The claim rules are the default mode's: a key is claimed (a synced store
 * write) before its message is produced. A transaction begins with the
 * first message produced after the last one ended, and ends each turn once
 * it is pipeline.transaction_max_age old (or at a revoke, a stop):
 *   - every delivery of it reported persisted: the source offsets it
 *     settles (with what was done before) are sent to it and it is
 *     committed; its messages are then done (their offsets committed with
 *     it), and their receipts are written afterwards, lazily, for the
 *     store to know (a crash before them leaves claims that recovery
 *     completes from the committed records);
 *   - a delivery failed, or the commit did: it is aborted; its messages
 *     keep their claims and are sent again in the next one, except the one
 *     whose delivery failed, which the route's policy retries or
 *     dead-letters as in the default mode, and those whose partition left
 *     this ownership, whose claims are released (nothing of them is
 *     visible).
 * Offsets move only through transactions: the consumer commits nothing.
 * Between transactions, offsets that moved (duplicates skipped, say) are
 * committed by a transaction of their own.
 *
 * All of it runs on the loop's thread.
 */
#include "sidecar/kafka.h"
#include "sidecar/log.h"
#include "sidecar/pipeline_int.h"

#include <stdlib.h>

#define TXN_TIMEOUT_MS 30000 /* init, send_offsets and commit calls */
/* An abort; past it, the producer is replaced. Also the first try of the
 * new producer's initialisation, later resumed turn by turn. */
#define ABORT_TIMEOUT_MS 5000
/* One try of send_offsets or commit; a call times out and is made again
 * (librdkafka: "on timeout the application may call the function again"). */
#define TXN_TRY_MS 1000
/* How long a replacing producer's initialisation may wait for the broker
 * to end its predecessor's transaction before the pipeline stops. */
#define TXN_INIT_WAIT_MS (5 * 60 * 1000)
#define TXN_RESUME_MS 100 /* one resumption of that initialisation */

/* What an error of the transactional API calls for: TXN_FATAL, that the
 * producer be replaced. */
typedef enum txn_next { TXN_OK, TXN_RETRY, TXN_ABORT, TXN_FATAL } txn_next;

/* Classifies (and frees) err; logs it once with what. A fatal error asks for
 * the producer's replacement. */
static txn_next classify(kd_pipeline *p, rd_kafka_error_t *err, const char *what) {
    txn_next next;

    if (!err)
        return TXN_OK;
    next = rd_kafka_error_is_fatal(err)             ? TXN_FATAL
           : rd_kafka_error_txn_requires_abort(err) ? TXN_ABORT
           : rd_kafka_error_is_retriable(err)       ? TXN_RETRY
                                                    : TXN_FATAL;
    KD_LOG(next == TXN_FATAL ? KD_LOG_ERROR : KD_LOG_WARN, NULL, "transaction: %s: %s%s",
           what, rd_kafka_error_string(err),
           next == TXN_FATAL   ? " (fatal: the producer is replaced)"
           : next == TXN_ABORT ? " (aborted)"
                               : " (tried again)");
    rd_kafka_error_destroy(err);
    if (next == TXN_FATAL)
        p->txn.replace = true;
    return next;
}

/* The timeout of the next try of a call that gives up at *end: at most
 * TXN_TRY_MS, so that between tries the loop's health is ticked and a stop
 * heard (it brings *end forward to its deadline). At least 1 ms. */
static int try_ms(kd_pipeline *p, uint64_t *end) {
    uint64_t now = kd_mono_ms(), stop = kd_pl_stop_deadline(p), left;

    atomic_store(&p->tick_ms, now);
    if (stop && stop < *end)
        *end = stop;
    left = *end > now ? *end - now : 1;
    return left < TXN_TRY_MS ? (int)left : TXN_TRY_MS;
}

/* True when a try that asked to be tried again may be: time is left, and
 * the producer did not fail for good. */
static bool try_again(const kd_pipeline *p, txn_next next, uint64_t end) {
    return next == TXN_RETRY && kd_mono_ms() < end && !atomic_load(&p->fatal);
}

/* Initialises the producer's transactions, fencing an earlier producer of
 * the same transactional.id and settling what it left open: tried until
 * `end` (mono ms) while the broker answers with a retriable error (it does,
 * CONCURRENT_TRANSACTIONS, until the transaction it is ending has ended).
 * Returns TXN_OK, TXN_RETRY (out of time, retriable) or TXN_FATAL, with the
 * error in errstr. */
static txn_next init_producer(kd_pipeline *p, uint64_t end, char *errstr,
                              size_t errstr_size) {
    rd_kafka_error_t *err;

    while ((err = rd_kafka_init_transactions(p->producer, try_ms(p, &end)))) {
        bool retriable = rd_kafka_error_is_retriable(err);

        snprintf(errstr, errstr_size, "the transactional producer: %s",
                 rd_kafka_error_string(err));
        rd_kafka_error_destroy(err);
        if (!retriable)
            return TXN_FATAL;
        if (kd_mono_ms() >= end)
            return TXN_RETRY;
    }
    return TXN_OK;
}

/* Resumes, at most once a TXN_TRY_MS and for TXN_RESUME_MS, the
 * initialisation of a replacing producer that the broker kept answering
 * "try again" (librdkafka goes on with it in the background). True once it
 * is initialised; past TXN_INIT_WAIT_MS, or on a fatal error, the pipeline
 * stops. */
static bool init_pending(kd_pipeline *p) {
    kd_pl_txn *t = &p->txn;
    uint64_t now = kd_mono_ms();
    char err[512];
    txn_next next;

    if (now - t->init_tried_ms < TXN_TRY_MS)
        return false;
    t->init_tried_ms = now;
    next = init_producer(p, now + TXN_RESUME_MS, err, sizeof(err));

    if (next == TXN_OK) {
        KD_WARN("transaction: the new producer is initialised after %" PRIu64 " ms",
                kd_mono_ms() - t->init_since);
        t->init_since = 0;
        atomic_store(&kd_metrics_flow(p->metrics)->txn_initialising, 0);
        return true;
    }
    if (next == TXN_FATAL || kd_mono_ms() - t->init_since >= TXN_INIT_WAIT_MS) {
        KD_ERROR("transaction: the new producer cannot be initialised: %s; the pipeline "
                 "stops",
                 err);
        atomic_store(&p->fatal, 1);
    }
    return false;
}

bool kd_pl_txn_init(kd_pipeline *p, kd_pl_producer_new_fn *producer_new, char *errstr,
                    size_t errstr_size) {
    p->txn.producer_new = producer_new;
    p->txn.on = p->cfg->delivery == KD_DELIVERY_TRANSACTIONAL;
    p->txn.offsets_ms = kd_mono_ms();
    return !p->txn.on ||
           init_producer(p, kd_mono_ms() + TXN_TIMEOUT_MS, errstr, errstr_size) == TXN_OK;
}

/* Serves the producer for up to timeout_ms and takes the reports of the
 * transactions' messages (kd_pl_txn_report). Others (none are sent while
 * the mode is on) stay on p->q.reported, for the loop's
 * kd_pl_deliver_serve. */
static void serve(kd_pipeline *p, int timeout_ms) {
    msg_list all, others = {0};

    atomic_store(&p->tick_ms, kd_mono_ms());
    rd_kafka_poll(p->producer, timeout_ms);
    all = list_take(&p->q.reported);
    for (msg *m = all.head, *next; m; m = next) {
        next = m->next;
        if (!m->txn) {
            list_push(&others, m);
            continue;
        }
        kd_pl_msg_reported(p, m);
        kd_pl_txn_report(p, m);
    }
    list_prepend(&p->q.reported, &others); /* ahead of any that came meanwhile */
}

/* Replaces the producer after a fatal error (librdkafka 2.0.2 fails for
 * good, for one, when an abort after a delivery timeout finds the
 * transaction already ended: librdkafka #4849). Its deliveries are purged
 * and reported; the new producer's initialisation ends whatever the old one
 * left open (a commit under way completes, anything else is aborted) before
 * it sends anything. The pipeline stops instead past KD_PL_TXN_REPLACES
 * replacements in KD_PL_TXN_REPLACE_WINDOW_MS, or when no producer can be
 * made. */
static void replace_producer(kd_pipeline *p) {
    kd_pl_txn *t = &p->txn;
    uint64_t now = kd_mono_ms(), deadline = now + TXN_TIMEOUT_MS;
    size_t slot = t->nreplaced % KD_PL_TXN_REPLACES;
    char err[512];
    rd_kafka_t *old = p->producer;
    txn_next next;

    if (t->nreplaced >= KD_PL_TXN_REPLACES &&
        now - t->replaced_ms[slot] < KD_PL_TXN_REPLACE_WINDOW_MS) {
        KD_ERROR("transaction: %d producers failed within %ds: another process may use "
                 "transactional.id; the pipeline stops",
                 KD_PL_TXN_REPLACES, KD_PL_TXN_REPLACE_WINDOW_MS / 1000);
        atomic_store(&p->fatal, 1);
        return;
    }
    t->replaced_ms[slot] = now;
    t->nreplaced++;
    GCOUNT(p, txn_replaced, 1);
    rd_kafka_purge(old, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
    while (p->q.awaiting && kd_mono_ms() < deadline)
        serve(p, 10); /* every delivery reported, as failed */
    if (!(p->producer = p->txn.producer_new(p, err, sizeof(err)))) {
        KD_ERROR("transaction: the producer cannot be replaced: %s; the pipeline stops",
                 err);
        p->producer = old; /* for kd_pipeline_destroy */
        atomic_store(&p->fatal, 1);
        return;
    }
    rd_kafka_destroy(old);
    t->replace = false; /* whatever the old one reported while it was purged */
    next = init_producer(p, kd_mono_ms() + ABORT_TIMEOUT_MS, err, sizeof(err));
    if (next == TXN_RETRY) {
        /* The broker is still ending the old one's transaction (seen for
         * more than 40 s on Apache Kafka after a broker was paused): the
         * new producer is initialised in later turns, nothing is sent
         * meanwhile. */
        KD_WARN("transaction: the new producer's initialisation waits for the broker "
                "(%s); messages wait",
                err);
        t->init_since = t->init_tried_ms = kd_mono_ms();
        atomic_store(&kd_metrics_flow(p->metrics)->txn_initialising, 1);
        return;
    }
    if (next == TXN_FATAL) {
        KD_ERROR("transaction: the producer cannot be replaced: %s; the pipeline stops",
                 err);
        atomic_store(&p->fatal, 1);
        return;
    }
    KD_WARN("transaction: the producer was replaced");
}

void kd_pl_txn_destroy(kd_pipeline *p) {
    free(p->txn.offs);
    p->txn.offs = NULL;
    p->txn.noffs = p->txn.cap = 0;
}

bool kd_pl_txn_ready(kd_pipeline *p) {
    txn_next next;

    if (!p->txn.on || p->txn.open)
        return true;
    for (int tries = 0;; tries++) { /* once more with a new producer */
        if (p->txn.replace && !atomic_load(&p->fatal))
            replace_producer(p);
        if (atomic_load(&p->fatal) || (p->txn.init_since && !init_pending(p)))
            return false;
        do
            next = classify(p, rd_kafka_begin_transaction(p->producer), "begin");
        while (next == TXN_RETRY);
        if (next == TXN_OK)
            break;
        if (next != TXN_FATAL || tries)
            return false;
    }
    p->txn.open = true;
    p->txn.doomed = false;
    p->txn.seq++;
    p->txn.began_ms = kd_mono_ms();
    GCOUNT(p, txn_begun, 1);
    return true;
}

void kd_pl_txn_sent(kd_pipeline *p, msg *m) {
    kd_pl_txn *t = &p->txn;

    m->txn = t->seq;
    t->outstanding++;
    if (t->noffs == t->cap) {
        size_t cap = t->cap ? t->cap * 2 : 256;
        kd_pl_txn_off *grown = realloc(t->offs, cap * sizeof(*grown));

        if (!grown) { /* its offset cannot be committed with it: it fails */
            t->doomed = true;
            return;
        }
        t->offs = grown;
        t->cap = cap;
    }
    t->offs[t->noffs++] = (kd_pl_txn_off){.route = m->route,
                                          .partition = m->rkm->partition,
                                          .own = m->own,
                                          .offset = m->rkm->offset};
}

/* A message of an ended (aborted) transaction: nothing of it is visible. */
static void settle_aborted(kd_pipeline *p, msg *m) {
    bool failed = m->err && m->err != RD_KAFKA_RESP_ERR__PURGE_QUEUE &&
                  m->err != RD_KAFKA_RESP_ERR__PURGE_INFLIGHT;

    m->txn = 0;
    m->maybe_out = false; /* aborted: never read for downstream */
    if (!msg_live(p, m) || p->stop_deadline) {
        kd_pl_msg_abandon(p, m); /* its claim released: the next owner claims it */
        return;
    }
    if (failed) { /* its own failure: the route's policy */
        m->status = RD_KAFKA_MSG_STATUS_NOT_PERSISTED;
        kd_pl_failure_settle(p, m);
        return;
    }
    m->err = RD_KAFKA_RESP_ERR_NO_ERROR;
    kd_pl_msg_retry(p, m, 0); /* under the same claim, in the next one */
}

bool kd_pl_txn_report(kd_pipeline *p, msg *m) {
    kd_pl_txn *t = &p->txn;

    if (!m->txn)
        return false;
    if (!t->open || m->txn != t->seq) { /* a straggler of an aborted one */
        settle_aborted(p, m);
        return true;
    }
    t->outstanding--;
    if (m->err) {
        t->doomed = true;
        list_push(&t->failed, m);
    } else {
        list_push(&t->acked, m);
    }
    return true;
}

/* The sorting of a transaction's offsets: by route, partition, offset. */
static int off_cmp(const void *a, const void *b) {
    const kd_pl_txn_off *x = a, *y = b;

    if (x->route != y->route)
        return x->route < y->route ? -1 : 1;
    if (x->partition != y->partition)
        return x->partition < y->partition ? -1 : 1;
    return (x->offset > y->offset) - (x->offset < y->offset);
}

typedef struct offsets_arg {
    kd_pipeline *p;
    rd_kafka_topic_partition_list_t *list;
    int64_t *extra; /* scratch, noffs long */
} offsets_arg;

/* Adds a partition's commit point, counting the transaction's offsets as
 * done, to the list sent to the transaction. */
static void add_point(void *arg, size_t route, int32_t partition) {
    offsets_arg *a = arg;
    kd_pl_txn *t = &a->p->txn;
    uint64_t own = kd_offsets_owner(a->p->offsets, route, partition);
    size_t n = 0;
    int64_t at;

    for (size_t i = 0; i < t->noffs; i++) /* sorted: a run of this partition's */
        if (t->offs[i].route == route && t->offs[i].partition == partition &&
            t->offs[i].own == own)
            a->extra[n++] = t->offs[i].offset;
    if (kd_offsets_commit_point_with(a->p->offsets, route, partition, own, a->extra, n,
                                     &at))
        rd_kafka_topic_partition_list_add(a->list, a->p->cfg->routes[route].from,
                                          partition)
            ->offset = at;
}

/* True while the consumer is a member of the group. The broker fences a
 * transaction's offsets by the group generation they carry, except offsets
 * sent with no member id and no generation, which it takes from anyone
 * (KIP-447 keeps them for older clients): librdkafka resets both once the
 * group has dropped the consumer (an illegal generation, then a leave),
 * before the assignment-lost callback reaches the loop. */
static bool is_member(kd_pipeline *p) {
    char *member = rd_kafka_memberid(p->consumer);
    bool is = member && *member;

    if (!is)
        KD_WARN("transaction: the consumer is no member of the group: aborted");
    rd_kafka_mem_free(p->consumer, member);
    return is;
}

/* Sends the source offsets the open transaction settles; the next step. */
static txn_next send_offsets(kd_pipeline *p) {
    kd_pl_txn *t = &p->txn;
    offsets_arg a = {p, rd_kafka_topic_partition_list_new(16),
                     malloc((t->noffs ? t->noffs : 1) * sizeof(int64_t))};
    rd_kafka_consumer_group_metadata_t *group;
    txn_next next = TXN_ABORT;
    uint64_t end;

    if (!a.extra)
        goto out;
    if (t->noffs) /* t->offs may be NULL then: qsort() wants an array */
        qsort(t->offs, t->noffs, sizeof(*t->offs), off_cmp);
    kd_offsets_each_assigned(p->offsets, add_point, &a);
    if (!a.list->cnt) { /* records of no partition of ours: unfenced, no commit */
        next = t->noffs ? TXN_ABORT : TXN_OK;
        goto out;
    }
    /* NULL once the consumer's group handler has ended */
    group = rd_kafka_consumer_group_metadata(p->consumer);
    if (!group || !is_member(p)) { /* unfenced: it must not commit */
        if (group)
            rd_kafka_consumer_group_metadata_destroy(group);
        goto out;
    }
    end = kd_mono_ms() + TXN_TIMEOUT_MS; /* try_ms: sooner at a stop */
    do
        next = classify(p,
                        rd_kafka_send_offsets_to_transaction(p->producer, a.list, group,
                                                             try_ms(p, &end)),
                        "send_offsets");
    while (try_again(p, next, end));
    if (next == TXN_RETRY) /* out of time: not committed */
        next = TXN_ABORT;
    rd_kafka_consumer_group_metadata_destroy(group);
out:
    free(a.extra);
    rd_kafka_topic_partition_list_destroy(a.list);
    return next;
}

/* Serves the producer until every delivery of the open transaction is
 * reported, or deadline (mono ms). */
static void await_reports(kd_pipeline *p, uint64_t deadline) {
    while (p->txn.outstanding && kd_mono_ms() < deadline)
        serve(p, 10);
}

static int msg_cmp(const void *a, const void *b) {
    const msg *x = *(msg *const *)a, *y = *(msg *const *)b;

    if (x->route != y->route)
        return x->route < y->route ? -1 : 1;
    if (x->rkm->partition != y->rkm->partition)
        return x->rkm->partition < y->rkm->partition ? -1 : 1;
    return (x->rkm->offset > y->rkm->offset) - (x->rkm->offset < y->rkm->offset);
}

/* A message of a transaction whose commit failed for good: committed or
 * aborted, nobody can say until the next producer's initialisation ended
 * it. Possibly persisted: its claim is kept and downstream is read (with
 * read_committed) to tell, as for a delivery timeout in the default mode. */
static void settle_unknown(kd_pipeline *p, msg *m) {
    m->txn = 0;
    m->err = RD_KAFKA_RESP_ERR__FATAL;
    m->status = RD_KAFKA_MSG_STATUS_POSSIBLY_PERSISTED;
    kd_pl_failure_settle(p, m);
}

/* settle_unknown() for a delivered message of a commit that failed for
 * good (unknown), else settle_aborted(). */
static void settle(kd_pipeline *p, msg *m, bool unknown) {
    if (unknown && !m->err)
        settle_unknown(p, m);
    else
        settle_aborted(p, m);
}

/* Marks the open transaction ended. Its deliveries not yet reported (an
 * abort that waited past its bound, a producer replaced) are reported
 * later as stragglers, to an ended transaction (kd_pl_txn_report), never
 * counted against the next one. */
static void ended(kd_pl_txn *t) {
    t->open = false;
    t->noffs = 0;
    t->outstanding = 0;
}

/* Aborts the open transaction (or, when the producer failed for good,
 * replaces it) and settles its messages, in consumption order; unknown: the
 * commit of those delivered failed for good (settle_unknown()). Those that
 * go again wait on p->q.retries, due at once. */
static void abort_open(kd_pipeline *p, bool unknown) {
    kd_pl_txn *t = &p->txn;
    msg_list acked, failed;
    txn_next next;
    msg **ms;
    size_t n = 0;

    /* An abort that does not end within ABORT_TIMEOUT_MS (seen for minutes
     * while a broker is down: librdkafka waits for its deliveries) is left
     * to the next producer's initialisation, which ends it. */
    if (!t->replace &&
        (next = classify(p, rd_kafka_abort_transaction(p->producer, ABORT_TIMEOUT_MS),
                         "abort")) == TXN_RETRY)
        t->replace = true;
    if (t->replace)
        replace_producer(p);
    else /* the purged deliveries are reported as failed */
        await_reports(p, kd_mono_ms() + TXN_TIMEOUT_MS);
    ended(t);
    acked = list_take(&t->acked);
    failed = list_take(&t->failed);
    GCOUNT(p, txn_aborted, 1);
    list_prepend(&acked, &failed);
    if ((ms = malloc((acked.n ? acked.n : 1) * sizeof(*ms)))) {
        for (msg *m = acked.head; m; m = m->next)
            ms[n++] = m;
        qsort(ms, n, sizeof(*ms), msg_cmp);
        for (size_t i = 0; i < n; i++)
            settle(p, ms[i], unknown);
        free(ms);
    } else { /* out of memory: as reported */
        for (msg *m = acked.head, *next_m; m; m = next_m) {
            next_m = m->next;
            settle(p, m, unknown);
        }
    }
}

/* The open transaction committed: its messages are done. */
static void settle_committed(kd_pipeline *p) {
    kd_pl_txn *t = &p->txn;
    msg_list acked = list_take(&t->acked);

    ended(t);
    GCOUNT(p, txn_committed, 1);
    for (msg *m = acked.head, *next; m; m = next) {
        next = m->next;
        m->txn = 0;
        /* its offset was committed with it */
        kd_offsets_done(p->offsets, m->route, m->rkm->partition, m->own, m->rkm->offset);
        if (m->kind == MSG_DEDUP && m->claimed) {
            list_push(&p->q.receipts, m); /* for the store to know, lazily */
        } else {
            if (m->kind == MSG_DEAD_LETTER)
                RCOUNT(p, m->route, dead_lettered);
            kd_pl_msg_done(p, m);
        }
    }
}

static void moved_one(void *arg, size_t route, int32_t partition, int64_t offset) {
    (void)route, (void)partition, (void)offset;
    *(bool *)arg = true;
}

/* True when some partition's commit point moved since the last call. */
static bool offsets_moved(kd_pipeline *p) {
    bool moved = false;

    kd_offsets_each_moved(p->offsets, moved_one, &moved);
    return moved;
}

/* kd_pl_txn_end(). True when the transaction was aborted: its messages that
 * go again wait on p->q.retries, due at once. */
static bool end(kd_pipeline *p, bool commit) {
    kd_pl_txn *t = &p->txn;
    uint64_t t0 = kd_mono_us(), end;
    txn_next next = TXN_OK;

    if (!t->on || !t->open)
        return false;
    if (commit) {
        /* every delivery reported: delivered, or failed by message.timeout.ms */
        rd_kafka_flush(p->producer, (int)kd_config_message_timeout_ms(p->cfg));
        await_reports(p, kd_mono_ms() + TXN_TIMEOUT_MS);
    }
    if (!commit || t->doomed || t->outstanding || (next = send_offsets(p)) != TXN_OK) {
        abort_open(p, false);
        return true;
    }
    end = kd_mono_ms() + TXN_TIMEOUT_MS; /* try_ms: sooner at a stop */
    do
        next = classify(p, rd_kafka_commit_transaction(p->producer, try_ms(p, &end)),
                        "commit");
    while (try_again(p, next, end));
    if (next == TXN_RETRY) { /* out of time, the commit perhaps under way */
        KD_WARN("transaction: the commit did not end in time: its outcome is unknown, "
                "the producer is replaced");
        t->replace = true;
        next = TXN_FATAL;
    }
    if (next == TXN_OK) {
        settle_committed(p);
        offsets_moved(p); /* what moved is committed now */
        p->txn.offsets_ms = kd_mono_ms();
        observe_since(kd_metrics_txn_commit(p->metrics), t0);
    } else { /* an abortable error: not committed; a fatal one: unknown */
        abort_open(p, next == TXN_FATAL);
    }
    return next != TXN_OK;
}

void kd_pl_txn_end(kd_pipeline *p, bool commit) {
    end(p, commit);
}

bool kd_pl_txn_turn(kd_pipeline *p) {
    kd_pl_txn *t = &p->txn;
    uint64_t now = kd_mono_ms();

    if (!t->on || atomic_load(&p->fatal))
        return false;
    if (t->replace && !t->open) {
        replace_producer(p);
        return false;
    }
    if (t->init_since) {
        init_pending(p);
        return false;
    }
    if (t->open && t->replace)
        return end(p, false);
    if (t->open) {
        if (t->doomed || now - t->began_ms >= p->cfg->txn_max_age_ms)
            return end(p, !t->doomed);
        return false;
    }
    /* offsets alone (duplicates skipped, messages dropped): a transaction
     * of their own, at most once per transaction_max_age */
    if (now - t->offsets_ms >= p->cfg->txn_max_age_ms && offsets_moved(p) &&
        kd_pl_txn_ready(p))
        return end(p, true);
    return false;
}
