/*
 * kdedup - the pipeline's messages: a msg's life (its claim held and let
 * go, done, freed, abandoned), the notes an ended ownership leaves for a
 * claim its delivery may be behind, the barrier an uncertain delivery
 * waits for, and the lists a msg waits in: the retries and its
 * partition's gate (what lets a gate's messages go is pipeline_gate.c).
 * It calls no other part of the pipeline: every stage may call it.
 */
#include "sidecar/log.h"
#include "sidecar/pipeline_int.h"

#include <stdlib.h>
#include <string.h>

/* The message's fate is durable: its offset may be committed past (when
 * its ownership lasts; an ended one's offsets are not ours). */
void kd_pl_msg_done(kd_pipeline *p, msg *m) {
    kd_offsets_done(p->offsets, m->route, m->rkm->partition, m->own, m->rkm->offset);
    kd_pl_msg_free(p, m);
}

void kd_pl_msg_reported(kd_pipeline *p, const msg *m) {
    if (!m->err && m->stuck) {
        MSG_FIELDS(m, part, off);

        KD_LOG(KD_LOG_INFO, fields, "the stuck message is delivered at last");
    }
}

bool kd_pl_msg_hold(kd_pipeline *p, msg *m) {
    m->claimed = true;
    if (kd_held_add(p->keys.held, m->route, m->key, m->key_len, m)) {
        atomic_store(kd_metrics_held(p->metrics), kd_held_count(p->keys.held));
        return true;
    }
    KD_ERROR("out of memory recording a claim: stopping");
    atomic_store(&p->fatal, 1);
    return false;
}

void kd_pl_msg_unhold(kd_pipeline *p, msg *m) {
    if (m->claimed) {
        kd_held_remove(p->keys.held, m->route, m->key, m->key_len, m);
        atomic_store(kd_metrics_held(p->metrics), kd_held_count(p->keys.held));
    }
    m->claimed = false;
    m->claim_version = 0; /* released or left: no claim to complete after */
}

void kd_pl_msg_free(kd_pipeline *p, msg *m) {
    if (m->stuck)
        atomic_fetch_sub(&kd_metrics_flow(p->metrics)->stuck, 1);
    kd_pl_msg_unhold(p, m);
    p->flow.inflight_bytes -= m->bytes;
    free(m->key_owned);
    free(m->conflict_original);
    rd_kafka_message_destroy(m->rkm);
    free(m);
    GCOUNT(p, inflight, (uint64_t)-1);
}

void kd_pl_msg_left_drop(kd_pipeline *p, left_claim *l) {
    kd_held_remove(p->keys.left, l->route, l->key, l->key_len, l);
    *(l->older ? &l->older->newer : &p->keys.left_oldest) = l->newer;
    *(l->newer ? &l->newer->older : &p->keys.left_newest) = l->older;
    p->keys.nleft--;
    atomic_store(kd_metrics_left(p->metrics), p->keys.nleft);
    free(l->key);
    free(l);
}

void kd_pl_msg_left_add(kd_pipeline *p, const msg *m) {
    left_claim *l = kd_pl_msg_left_find(p, m->route, m->key, m->key_len);

    if (l)
        kd_pl_msg_left_drop(p, l); /* an older note of the key: this one is newer */
    if (p->keys.nleft >= LEFT_MAX)
        kd_pl_msg_left_drop(p,
                            p->keys.left_oldest); /* its claim is resolved the slow way */
    if (!(l = calloc(1, sizeof(*l))) || !(l->key = malloc(m->key_len ? m->key_len : 1))) {
        free(l);
        return; /* the claim is still resolved, by a scan from the run's start */
    }
    memcpy(l->key, m->key, m->key_len);
    *l = (left_claim){.older = p->keys.left_newest,
                      .route = m->route,
                      .key = l->key,
                      .key_len = m->key_len,
                      .out_partition =
                          m->rkm->partition % p->routes[m->route].out_partitions,
                      .scan_from = m->scan_from,
                      .sent_at_ms = m->sent_at_ms,
                      .barrier = m->barrier,
                      .barrier_until = m->barrier_until,
                      .result = KD_RECOVER_LATER};
    if (!kd_held_add(p->keys.left, l->route, l->key, l->key_len, l)) {
        free(l->key);
        free(l);
        return;
    }
    *(p->keys.left_newest ? &p->keys.left_newest->newer : &p->keys.left_oldest) = l;
    p->keys.left_newest = l;
    p->keys.nleft++;
    atomic_store(kd_metrics_left(p->metrics), p->keys.nleft);
}

left_claim *kd_pl_msg_left_find(kd_pipeline *p, size_t route, const char *key,
                                size_t key_len) {
    return kd_held_find(p->keys.left, route, key, key_len);
}

void kd_pl_msg_abandon(kd_pipeline *p, msg *m) {
    if (m->claimed && m->maybe_out && m->kind == MSG_DEDUP)
        kd_pl_msg_left_add(p, m);
    else if (m->claimed &&
             kd_dedup_release_claim(dedup_of(p, m), m->key, m->key_len) == KD_OK)
        RCOUNT(p, m->route, released);
    /* A claim not released stays in flight: whoever consumes the message
     * next resolves it from the downstream topic (see kd_pl_claim_takeover). */
    RCOUNT(p, m->route, abandoned);
    kd_pl_msg_free(p, m);
}

/*
 * A delivery possibly persisted may still be written after the producer
 * gave up on it: a broker that held the request (paused, or slow) appends
 * it when it goes on, after a read of the partition found nothing there.
 * Sent again, it would then be downstream twice (seen on Apache Kafka with
 * a broker stopped past message.timeout.ms). librdkafka's idempotent
 * producer bumps its epoch after such a timeout, and the broker refuses a
 * batch of an older epoch once one of the newer epoch is in the partition.
 * So the read waits until a delivery to the same partition sent after the
 * failure was reported is acknowledged: the old request can no longer be
 * written, or it already was, before that one, where the read finds it. A
 * partition without such a delivery is read after BARRIER_WAIT_FACTOR times
 * message.timeout.ms all the same (RELIABILITY.md, "late writes").
 */
void kd_pl_msg_barrier_set(kd_pipeline *p, msg *m) {
    m->barrier = p->routes[m->route].sent[m->out_partition];
    m->barrier_until = kd_mono_ms() + p->barrier_wait_ms;
}

bool kd_pl_msg_barrier_passed(const kd_pipeline *p, size_t route, int32_t out_partition,
                              uint64_t barrier, uint64_t until) {
    return p->routes[route].acked_sent[out_partition] > barrier || kd_mono_ms() >= until;
}

void kd_pl_msg_retry(kd_pipeline *p, msg *m, uint64_t delay_ms) {
    m->due_ms = kd_mono_ms() + delay_ms;
    if (p->gate.passing == m) { /* a gate's head: the rest keep waiting behind it */
        kd_pl_msg_gate_wait(p, m);
        return;
    }
    list_push(&p->q.retries, m);
}

uint64_t kd_pl_backoff_ms(const kd_pipeline *p, const msg *m) {
    uint64_t ms = p->routes[m->route].cfg->retry_backoff_ms;

    for (int i = 1; i < m->attempts && ms < MAX_BACKOFF_MS; i++)
        ms *= 2;
    return ms < MAX_BACKOFF_MS ? ms : MAX_BACKOFF_MS;
}

/* Drops the retries of ended ownerships (all, with all_parts). */
void kd_pl_msg_abandon_retries(kd_pipeline *p, bool all_parts) {
    msg_list all = list_take(&p->q.retries);

    kd_pl_msg_gates_abandon(p, all_parts);
    for (msg *m = all.head, *next; m; m = next) {
        next = m->next;
        if (!all_parts && msg_live(p, m))
            list_push(&p->q.retries, m);
        else
            kd_pl_msg_abandon(p, m);
    }
}

static gate *gate_find(kd_pipeline *p, size_t route, int32_t partition) {
    for (size_t i = 0; i < p->gate.n; i++)
        if (p->gate.v[i].route == route && p->gate.v[i].partition == partition)
            return &p->gate.v[i];
    return NULL;
}

static gate *gate_open(kd_pipeline *p, size_t route, int32_t partition) {
    gate *g;

    if (p->gate.n == p->gate.cap) {
        size_t cap = p->gate.cap ? p->gate.cap * 2 : 8;

        if (!(g = realloc(p->gate.v, cap * sizeof(*g))))
            return NULL;
        p->gate.v = g;
        p->gate.cap = cap;
    }
    g = &p->gate.v[p->gate.n++];
    *g = (gate){.route = route, .partition = partition};
    return g;
}

void kd_pl_msg_gate_close(kd_pipeline *p, gate *g) {
    *g = p->gate.v[--p->gate.n];
}

bool kd_pl_msg_gate_waiting(kd_pipeline *p, size_t route, int32_t partition) {
    return p->gate.n && gate_find(p, route, partition);
}

bool kd_pl_msg_gated(kd_pipeline *p, msg *m, bool takeover) {
    gate *g;

    if (!p->gate.n || p->gate.passing == m ||
        !(g = gate_find(p, m->route, m->rkm->partition)))
        return false;
    m->gate_takeover = takeover;
    list_push(&g->waiting, m);
    return true;
}

void kd_pl_msg_gate_wait(kd_pipeline *p, msg *m) {
    gate *g = gate_find(p, m->route, m->rkm->partition);

    if (!g && !(g = gate_open(p, m->route, m->rkm->partition))) {
        list_push(&p->q.retries, m); /* out of memory: unordered */
        return;
    }
    m->gate_takeover = m->kind == MSG_DEDUP && !m->claimed;
    if (p->gate.passing == m) { /* back at the head it just left */
        m->next = g->waiting.head;
        g->waiting.head = m;
        if (!g->waiting.tail)
            g->waiting.tail = m;
        g->waiting.n++;
    } else {
        list_push(&g->waiting, m);
    }
}

void kd_pl_msg_gates_abandon(kd_pipeline *p, bool all_parts) {
    for (size_t i = p->gate.n; i-- > 0;) {
        gate *g = &p->gate.v[i];
        msg *first = g->waiting.head;

        if (!all_parts && first && msg_live(p, first))
            continue; /* one ownership per gate: its head tells */
        msg_list all = list_take(&g->waiting);
        kd_pl_msg_gate_close(p, g);
        for (msg *m = all.head, *next; m; m = next) {
            next = m->next;
            kd_pl_msg_abandon(p, m);
        }
    }
}
