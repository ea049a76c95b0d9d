/*
 * kdedup - the pipeline's life cycle (see pipeline.h, pipeline_int.h and
 * docs/architecture.md).
 */
#include "sidecar/kafka.h"
#include "sidecar/log.h"
#include "sidecar/pipeline_int.h"
#include "store_rocks/store_rocks.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

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
        if (p->txn.on && rd_kafka_type(rk) == RD_KAFKA_PRODUCER) {
            /* on the loop's thread (its poll); an old one's: replaced already */
            if (rk == p->producer) {
                KD_WARN("%s: fatal error: %s: the producer is replaced",
                        rd_kafka_name(rk), fatal);
                p->txn.replace = true;
            }
            return;
        }
        KD_ERROR("%s: fatal error: %s", rd_kafka_name(rk), fatal);
        atomic_store(&p->fatal, 1);
        return;
    }
    if (kd_kafka_logged(rk, reason))
        return; /* librdkafka's own line said it */
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
            (!(r->acked = calloc((size_t)r->out_partitions, sizeof(*r->acked))) ||
             !(r->sent = calloc((size_t)r->out_partitions, sizeof(*r->sent))) ||
             !(r->acked_sent =
                   calloc((size_t)r->out_partitions, sizeof(*r->acked_sent))))) {
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
    kd_recovery_set_progress(p->recovery, kd_pl_handover_progress, p);
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
        rd_kafka_conf_set_rebalance_cb(conf, kd_pl_rebalance_cb);
    else
        rd_kafka_conf_set_dr_msg_cb(conf, kd_pl_produce_dr_cb);
    rk = rd_kafka_new(which == KD_CONSUMER ? RD_KAFKA_CONSUMER : RD_KAFKA_PRODUCER, conf,
                      errstr, errstr_size);
    if (!rk)
        rd_kafka_conf_destroy(conf);
    return rk;
}

/* The consumer's max.poll.interval.ms (librdkafka's default when unreadable). */
static int max_poll_ms(rd_kafka_t *consumer) {
    char buf[32];
    size_t size = sizeof(buf);

    if (rd_kafka_conf_get(rd_kafka_conf(consumer), "max.poll.interval.ms", buf, &size) !=
        RD_KAFKA_CONF_OK)
        return 300000;
    return atoi(buf);
}

rd_kafka_t *kd_pl_producer_new(kd_pipeline *p, char *errstr, size_t errstr_size) {
    return client_new(p, KD_PRODUCER, p->brokers, errstr, errstr_size);
}

/* Subscribes the consumer to every route's source topic. */
static rd_kafka_resp_err_t subscribe(kd_pipeline *p) {
    rd_kafka_topic_partition_list_t *topics =
        rd_kafka_topic_partition_list_new((int)p->cfg->nroutes);
    rd_kafka_resp_err_t err;

    for (size_t i = 0; i < p->cfg->nroutes; i++)
        rd_kafka_topic_partition_list_add(topics, p->cfg->routes[i].from,
                                          RD_KAFKA_PARTITION_UA);
    err = rd_kafka_subscribe(p->consumer, topics);
    rd_kafka_topic_partition_list_destroy(topics);
    return err;
}

/* kd_pipeline_rejoin(), on the loop's thread: unsubscribes, and once every
 * partition was revoked, subscribes again. */
static void rejoin_step(kd_pipeline *p) {
    rd_kafka_topic_partition_list_t *parts = NULL;
    rd_kafka_resp_err_t err;
    int held;

    if (!p->rejoining) {
        if (!atomic_exchange(&p->rejoin, 0))
            return;
        KD_INFO("leaving the group to join it again");
        if ((err = rd_kafka_unsubscribe(p->consumer)))
            KD_WARN("unsubscribe: %s", rd_kafka_err2str(err));
        p->rejoining = true;
        return;
    }
    if (rd_kafka_assignment(p->consumer, &parts))
        return;
    held = parts->cnt;
    rd_kafka_topic_partition_list_destroy(parts);
    if (held)
        return; /* the revoke is still to come */
    p->rejoining = false;
    if ((err = subscribe(p))) {
        KD_ERROR("subscribe: %s", rd_kafka_err2str(err));
        atomic_store(&p->fatal, 1);
    }
}

/* Closes the consumer (its revoke drains and commits, then it leaves the
 * group), serving its callbacks, until limit_ms (monotonic). Messages
 * fetched but not consumed arrive on the close's queue too: they are
 * dropped (their offsets were never stored). False when it had not
 * finished by then, or could not start. */
static bool close_consumer(kd_pipeline *p, uint64_t limit_ms) {
    rd_kafka_queue_t *q = rd_kafka_queue_new(p->consumer);
    rd_kafka_error_t *error = rd_kafka_consumer_close_queue(p->consumer, q);
    bool closed = false;

    if (error) {
        KD_WARN("closing the consumer: %s", rd_kafka_error_string(error));
        rd_kafka_error_destroy(error);
    } else {
        while (!(closed = rd_kafka_consumer_closed(p->consumer)) &&
               kd_mono_ms() < limit_ms) {
            rd_kafka_message_t *rkm = rd_kafka_consume_queue(q, 100);

            if (rkm)
                rd_kafka_message_destroy(rkm);
        }
    }
    rd_kafka_queue_destroy(q);
    return closed;
}

bool kd_pipeline_consumer_left(const kd_pipeline *p) {
    return p->consumer_left;
}

kd_store *kd_pipeline_open_store(const kd_config *cfg, kd_pipeline_store_mode mode,
                                 char *errstr, size_t errstr_size) {
    kd_rocks_options o = {
        .sync = cfg->store_sync,
        .block_cache_bytes = (size_t)cfg->store_block_cache_bytes,
        .write_buffer_bytes = (size_t)cfg->store_write_buffer_bytes,
        .max_write_buffers = (int)cfg->store_max_write_buffers,
        .key_filter_bytes = (size_t)cfg->store_key_filter_bytes,
    };

    if (mode == KD_PIPELINE_STORE_READER)
        return kd_rocks_open_secondary(cfg->store_path, errstr, errstr_size);
    return kd_rocks_open_with(cfg->store_path, &o, errstr, errstr_size);
}

kd_pipeline *kd_pipeline_new(const kd_config *cfg, kd_store *store, const char *brokers,
                             char *errstr, size_t errstr_size) {
    kd_pipeline *p = calloc(1, sizeof(*p));
    rd_kafka_resp_err_t err;

    if (!p) {
        snprintf(errstr, errstr_size, "out of memory");
        return NULL;
    }
    p->cfg = cfg;
    p->store = store;
    if (brokers && !(p->brokers = strdup(brokers))) {
        free(p);
        snprintf(errstr, errstr_size, "out of memory");
        return NULL;
    }
    p->barrier_wait_ms = BARRIER_WAIT_FACTOR * kd_config_message_timeout_ms(cfg);
    pthread_mutex_init(&p->offer.lock, NULL);
    p->boot_id = random_boot_id();
    snprintf(p->boot_hex, sizeof(p->boot_hex), "%016" PRIx64, p->boot_id);
    p->metrics = kd_metrics_new(cfg);
    if (cfg->signing_key && !(p->signer = kd_signer_new(cfg->signing_key))) {
        snprintf(errstr, errstr_size, "libcrypto: no HMAC-SHA256 for the signing key");
        goto fail;
    }
    if (!cfg->signing_key)
        KD_WARN("dedup.signing_key is not set: records in the downstream topics are "
                "trusted as kdedup's own when partitions are handed over and claims "
                "recovered; only kdedup may write to them (see README, Security)");
    p->batch.msgs = calloc((size_t)cfg->batch_max, sizeof(*p->batch.msgs));
    p->batch.claims = calloc((size_t)cfg->batch_max, sizeof(*p->batch.claims));
    p->batch.claim_of = calloc((size_t)cfg->batch_max, sizeof(*p->batch.claim_of));
    p->batch.claim_route = calloc((size_t)cfg->batch_max, sizeof(*p->batch.claim_route));
    p->keys.held = kd_held_new();
    p->keys.left = kd_held_new();
    if (!(p->offsets = kd_offsets_new(cfg->nroutes)) || !p->keys.held || !p->keys.left ||
        !p->batch.msgs || !p->batch.claims || !p->batch.claim_of ||
        !p->batch.claim_route || !p->metrics || !kd_pl_ahead_init(p)) {
        snprintf(errstr, errstr_size, "out of memory");
        goto fail;
    }
    if (!(p->producer = client_new(p, KD_PRODUCER, brokers, errstr, errstr_size)) ||
        !kd_pl_txn_init(p, kd_pl_producer_new, errstr, errstr_size) ||
        !routes_init(p, errstr, errstr_size) ||
        !record_run(p, brokers, errstr, errstr_size) ||
        !(p->consumer = client_new(p, KD_CONSUMER, brokers, errstr, errstr_size)))
        goto fail;
    rd_kafka_poll_set_consumer(p->consumer);
    p->max_poll_ms = max_poll_ms(p->consumer);
    if ((err = subscribe(p))) {
        snprintf(errstr, errstr_size, "subscribe: %s", rd_kafka_err2str(err));
        goto fail;
    }
    return p;
fail:
    kd_pipeline_destroy(p);
    return NULL;
}

void kd_pipeline_offer(kd_pipeline *p, const kd_config *cfg, bool restart) {
    pthread_mutex_lock(&p->offer.lock);
    p->offer.restart = (p->offer.cfg && p->offer.restart) || restart;
    p->offer.cfg = cfg;
    atomic_store(&p->offer.offered, 1);
    pthread_mutex_unlock(&p->offer.lock);
}

uint64_t kd_pipeline_boot_id(const kd_pipeline *p) {
    return p->boot_id;
}

const kd_config *kd_pipeline_restart_config(const kd_pipeline *p) {
    return p->restart_cfg;
}

/* Grows the poll batch's buffers to n messages; false when out of memory
 * (they stay as they were). */
static bool batch_grow(kd_pipeline *p, size_t n) {
    msg **msgs = realloc(p->batch.msgs, n * sizeof(*msgs));
    kd_claim *claims;
    size_t *claim_of, *claim_route;

    if (msgs)
        p->batch.msgs = msgs;
    claims = msgs ? realloc(p->batch.claims, n * sizeof(*claims)) : NULL;
    if (claims)
        p->batch.claims = claims;
    claim_of = claims ? realloc(p->batch.claim_of, n * sizeof(*claim_of)) : NULL;
    if (claim_of)
        p->batch.claim_of = claim_of;
    claim_route =
        claim_of ? realloc(p->batch.claim_route, n * sizeof(*claim_route)) : NULL;
    if (claim_route)
        p->batch.claim_route = claim_route;
    return claim_route != NULL && kd_pl_ahead_grow(p, n);
}

/* Takes a config offered by kd_pipeline_offer(), between turns: in place
 * (its routes are the running ones, in the same order), or by ending the
 * loop to restart. A restart waits for the first assignment: before it the
 * consumer cannot be closed (see kd_pipeline_run). */
static void take_offer(kd_pipeline *p) {
    const kd_config *cfg;
    bool restart;

    if (!atomic_load_explicit(&p->offer.offered, memory_order_relaxed))
        return;
    pthread_mutex_lock(&p->offer.lock);
    cfg = p->offer.cfg;
    restart = p->offer.restart;
    /* A larger batch grows the store thread's arrays, which waits for its
     * write: taken once that is done, at a turn's start, never waited for. */
    p->offer.deferred =
        !restart && cfg->batch_max > p->cfg->batch_max && !kd_pl_ahead_wait(p, 0);
    if (p->offer.deferred) {
        pthread_mutex_unlock(&p->offer.lock);
        return;
    }
    if (!restart || p->assigned_once) {
        p->offer.cfg = NULL;
        p->offer.restart = false;
        atomic_store(&p->offer.offered, 0);
    }
    pthread_mutex_unlock(&p->offer.lock);
    if (restart && !p->assigned_once) {
        if (!p->offer.waiting)
            KD_INFO("reload: the routes change once the group assigns partitions");
        p->offer.waiting = true;
        return;
    }
    if (restart) {
        KD_INFO("reload: restarting the pipeline with %zu route(s)", cfg->nroutes);
        p->restart_cfg = cfg;
        return;
    }
    if (cfg->batch_max > p->cfg->batch_max && !batch_grow(p, (size_t)cfg->batch_max)) {
        KD_ERROR("reload: out of memory for pipeline.batch_max %lld; kept %lld",
                 (long long)cfg->batch_max, (long long)p->cfg->batch_max);
        return;
    }
    p->cfg = cfg;
    for (size_t i = 0; i < cfg->nroutes; i++)
        p->routes[i].cfg = &cfg->routes[i];
    KD_INFO("reload: in force (pipeline.batch_max %lld)", (long long)cfg->batch_max);
}

/* A turn while the store thread's write outlasts STALL_SLICE_MS: the
 * producer served; once the write outlasts its bound, consumption paused
 * and the consumer polled all the same, so that the group keeps this
 * member (max.poll.interval.ms) and serves its rebalances. A message a
 * poll still returns waits for the next batch. */
static void stall_turn(kd_pipeline *p) {
    bool paused = kd_pl_ahead_stall(p);

    kd_pl_deliver_serve(p, 0);
    if (paused)
        p->batch.n = kd_pl_consume_collect(p, p->batch.n, 0);
}

/* The retries due: produced again (by the retry stage), claimed again, or
 * read downstream for, in that order. */
static void retry_turn(kd_pipeline *p) {
    kd_pl_due due = {0};

    kd_pl_retry_due(p, &due);
    kd_pl_claim_list(p, &due.reclaim);
    kd_pl_resolve_lists(p, &due.uncertain, &due.left);
}

int kd_pipeline_run(kd_pipeline *p) {
    uint64_t deadline;

    KD_INFO("pipeline running: %zu route(s), boot id %016" PRIx64, p->cfg->nroutes,
            p->boot_id);
    atomic_store(&p->tick_ms, kd_mono_ms());
    while (!atomic_load(&p->stop) && !atomic_load(&p->fatal) && !p->restart_cfg) {
        atomic_store(&p->tick_ms, kd_mono_ms());
        /* The store thread claimed the last batch meanwhile: the loop waits
         * for it a slice at a time, never longer. */
        if (!kd_pl_ahead_wait(p, STALL_SLICE_MS)) {
            stall_turn(p);
            continue;
        }
        if (p->offer.deferred) /* the write is done: the batch arrays may grow */
            take_offer(p);
        kd_recovery_begin_turn(p->recovery, p->cfg->scan_step_ms);
        size_t n =
            kd_pl_consume_collect(p, p->batch.n,
                                  p->ahead.pending ? 0
                                  : p->q.awaiting || p->q.retries.n || p->handover.n ||
                                          p->gate.n || p->q.unsynced.n
                                      ? 5
                                      : 100);

        p->batch.n = 0;
        kd_pl_ahead_turn(p, n);
        kd_pl_receipts_settle(p); /* any a job could not make durable */
        kd_pl_deliver_serve(p, 0);
        /* Before the retries: their reads downstream share the turn's
         * reading budget, and a handover that found it spent every turn
         * would keep its partition paused as long as they come. */
        kd_pl_handover_turn(p);
        retry_turn(p);
        if (kd_pl_txn_turn(p)) /* an abort's messages go again at once */
            retry_turn(p);
        kd_pl_gate_turn(p);
        kd_pl_rebalance_store_offsets(p);
        kd_pl_flow_turn(p);
        rejoin_step(p);
        take_offer(p);
        if (p->keys.last_orphan_ms &&
            kd_mono_ms() - p->keys.last_orphan_ms > RECOVERY_IDLE_MS) {
            kd_recovery_forget(p->recovery);
            p->keys.last_orphan_ms = 0;
        }
    }
    /* The last batch handed over, however long its write takes (the consumer
     * is not polled any more: should the group give its partitions to
     * another member meanwhile, its messages are dropped, not produced). */
    kd_pl_ahead_finish(p, UINT64_MAX);
    for (size_t i = 0; i < p->batch.n; i++) /* polled in a stall: the next owner's */
        kd_pl_msg_free(p, p->batch.msgs[i]);
    p->batch.n = 0;

    /* Stop consuming; let what is in flight land, then commit. */
    /* One grace period for all of the stop: begun by a drain that saw the
     * stop first, if one did; the close's revoke drains within it too. */
    if (!p->stop_deadline)
        p->stop_deadline = kd_mono_ms() + p->cfg->shutdown_grace_ms;
    deadline = p->stop_deadline;
    KD_INFO("stopping: draining %zu in-flight deliveries", p->q.awaiting);
    kd_pl_rebalance_drain(p, deadline);
    kd_pl_msg_abandon_retries(p, true);
    kd_pl_rebalance_store_offsets(p);
    if (!p->assigned_once) {
        /* Nothing was consumed, so nothing is to commit. librdkafka 2.0.2
         * aborts when a cooperative-sticky consumer that joined but has no
         * assignment yet is closed or destroyed (upstream issue 4312, fixed
         * in 2.3): it is left running for the process's exit instead. The
         * group notices after session.timeout.ms, as it would for a crash. */
        KD_WARN("stopping before the first partition assignment: the consumer is "
                "not closed; the group notices it gone after session.timeout.ms");
        p->consumer_left = true;
    } else {
        if (!p->txn.on) /* else committed with the last transaction */
            rd_kafka_commit(p->consumer, NULL, 1); /* the close waits for it */
        if (!close_consumer(p, deadline + CLOSE_SLACK_MS)) {
            KD_WARN("the consumer did not close within shutdown_grace + %ds (the "
                    "brokers do not answer): offsets not committed are consumed "
                    "again by the next owner, whose claims suppress them",
                    CLOSE_SLACK_MS / 1000);
            p->consumer_left = true;
        }
    }
    if (p->q.awaiting)
        KD_WARN("%zu deliveries still in flight after the grace period: their claims "
                "stay, and the next run forwards them again",
                p->q.awaiting);
    return atomic_load(&p->fatal) ? -1 : 0;
}

void kd_pipeline_rejoin(kd_pipeline *p) {
    atomic_store(&p->rejoin, 1);
}

void kd_pipeline_stop(kd_pipeline *p) {
    atomic_store(&p->stop, 1);
}

/* Consumers left running: stopped before their first assignment, or whose
 * close the brokers did not answer in time (see kd_pipeline_run). */
static rd_kafka_t *left_consumers[16];
static size_t nleft_consumers;

static void free_list(msg_list *l) {
    for (msg *m = l->head, *next; m; m = next) {
        next = m->next;
        rd_kafka_message_destroy(m->rkm);
        free(m->key_owned);
        free(m->conflict_original);
        free(m);
    }
    memset(l, 0, sizeof(*l));
}

void kd_pipeline_destroy(kd_pipeline *p) {
    if (!p)
        return;
    kd_pl_ahead_destroy(p); /* kd_pipeline_run acted on its last batch */
    kd_pl_txn_destroy(p);
    if (p->producer) {
        /* Whatever is still queued comes back as purged reports. */
        rd_kafka_purge(p->producer, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
        for (int i = 0; i < 100 && p->q.awaiting; i++)
            rd_kafka_poll(p->producer, 10);
    }
    free_list(&p->q.reported);
    free_list(&p->q.receipts);
    free_list(&p->q.unsynced);
    free_list(&p->q.retries);
    for (size_t i = 0; i < p->gate.n; i++)
        free_list(&p->gate.v[i].waiting);
    free(p->gate.v);
    if (p->consumer_left)
        left_consumers[nleft_consumers++ % 16] = p->consumer; /* reachable, by intent */
    else if (p->consumer)
        rd_kafka_destroy(p->consumer);
    if (p->producer)
        rd_kafka_destroy(p->producer);
    kd_offsets_destroy(p->offsets);
    kd_signer_destroy(p->signer);
    kd_held_destroy(p->keys.held);
    while (p->keys.left_oldest)
        kd_pl_msg_left_drop(p, p->keys.left_oldest);
    kd_held_destroy(p->keys.left);
    kd_recovery_destroy(p->recovery);
    free(p->handover.v);
    for (size_t i = 0; p->routes && i < p->cfg->nroutes; i++) {
        kd_dedup_destroy(p->routes[i].dedup);
        free(p->routes[i].acked);
        free(p->routes[i].sent);
        free(p->routes[i].acked_sent);
    }
    free(p->routes);
    free(p->batch.msgs);
    free(p->batch.claims);
    free(p->batch.claim_of);
    free(p->batch.claim_route);
    kd_pl_receipts_free(&p->receipts_now);
    kd_metrics_destroy(p->metrics);
    pthread_mutex_destroy(&p->offer.lock);
    free(p->brokers);
    free(p);
}
