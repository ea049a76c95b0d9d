/*
 * kdedup - the pipeline's message: what a consumed message carries through
 * the pipeline, the lists it waits in, and the table of its life (where it
 * waits, what marks it there, where it goes next). Private to the pipeline
 * (file map: pipeline_int.h).
 */
#ifndef KD_PIPELINE_MSG_H
#define KD_PIPELINE_MSG_H

#include "dedup/dedup.h"
#include "sidecar/recovery.h"

#include <librdkafka/rdkafka.h>

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

typedef enum msg_kind {
    MSG_DEDUP,      /* has a key: claimed before it is forwarded */
    MSG_PLAIN,      /* forwarded without dedup (missing key, or undeduplicable) */
    MSG_DEAD_LETTER /* to the route's dead-letter topic */
} msg_kind;

/*
 * The life of a message, in one place: where a msg waits (in at most one
 * list at a time, by `next`), what marks it there, and where it goes next.
 * Only the loop moves a msg; the store thread reads the keys of the batch
 * handed to it.
 *
 *   where                    mark           next
 *   p->batch.msgs            (consumed)     its claim written with the batch's
 *     (kd_pl_consume_collect)                       by the store thread (p->ahead.job),
 *                                           then acted on (kd_pl_claim_act);
 *                                           p->q.retries (early) while its
 *                                           partition's handover is pending
 *   acted on                 claimed        produced: in flight; or settled at
 *                                           once (a duplicate: done; a key
 *                                           conflict); or a claim of another
 *                                           run or ownership: kd_pl_claim_takeover
 *   in flight (producer)     claimed        p->q.reported, by the delivery report
 *   p->q.reported                           acknowledged: p->q.receipts (in the
 *                                           transactional mode, p->txn.acked
 *                                           until its transaction ends); failed:
 *                                           p->q.retries; its ownership ended:
 *                                           abandoned
 *   p->q.receipts                           receipt written: done, or
 *                                           p->q.unsynced when written lazily
 *   p->q.unsynced                           done with the store's next sync
 *   p->q.retries, until due  early          claimed when its handover is done
 *                            uncertain      downstream read for it, with the
 *                                           others due (kd_pl_resolve_uncertain):
 *                                           found: done; absent: produced again
 *                            left_read      downstream read for its key's note,
 *                                           with the others due
 *                                           (kd_pl_resolve_left): claimed again,
 *                                           which applies what the read told
 *                            parked_job     claimed again (own_claim)
 *                            (none)         claimed again if released, else
 *                                           produced again (backoff)
 *   a gate's waiting list    gate_takeover  taken over, or produced, in order,
 *                                           once the head passed (pipeline_gate.c)
 *   done (kd_pl_msg_done)                   its offset done in kd_offsets; freed
 *   abandoned                               its ownership ended: its claim
 *     (kd_pl_msg_abandon)                   released, or kept with a note
 *                                           (left_claim) when its delivery may
 *                                           be downstream; freed
 */
typedef struct msg {
    struct msg *next;        /* in at most one list */
    rd_kafka_message_t *rkm; /* the consumed message, kept until done */
    size_t route;
    msg_kind kind;
    const char *key; /* borrowed from rkm, or key_owned (see keysrc.h) */
    size_t key_len;
    char *key_owned; /* a JSON or composite key's bytes, or NULL */
    bool has_fp;     /* fp holds the fingerprint stored with its claim */
    unsigned char fp[KD_FINGERPRINT_LEN];
    const char *dl_reason;   /* dead-lettered: why (the kdedup-reason header) */
    char *conflict_original; /* a key conflict: the original's receipt, or where it
                              * stands (owned) */
    bool orig_has_fp;        /* a key conflict: the original's fingerprint */
    unsigned char orig_fp[KD_FINGERPRINT_LEN];
    uint64_t own;       /* the ownership of its partition that consumed it */
    bool claimed;       /* holds a claim in the store (and an entry in p->keys.held) */
    uint64_t claim_seq; /* claimed by this run: kd_claim.seq and .version, for */
    uint64_t claim_version; /* its receipt (kd_completion.claim_*; 0 = none) */
    unsigned char claim_hash[KD_KEY_HASH_LEN]; /* and the key's hash (kd_claim.hash) */
    bool uncertain;         /* possibly persisted: read downstream before resending */
    bool early;             /* consumed while its partition's handover was pending:
                             * claimed once that handover is done */
    bool left_read;         /* met its ended ownership's note: the downstream
                             * partition is read for it with the others due
                             * (kd_pl_resolve_left) */
    uint64_t parked_job;    /* the store thread's job it waits for (own_claim) */
    uint64_t out_seq;       /* its number among its route's deliveries to its
                             * downstream partition (route_rt.sent) */
    uint64_t barrier;       /* uncertain: read downstream only once a delivery
                             * numbered past this one was acknowledged... */
    uint64_t barrier_until; /* ...or from this moment on (mono ms) */
    uint64_t txn;           /* the transaction it was produced in (0: none) */
    bool maybe_out;         /* a delivery may be downstream: the claim is never
                             * released, only completed or left to recovery */
    int reads;              /* uncertain: failed reads of downstream so far */
    int64_t scan_from;      /* downstream: it lands at or after this offset */
    int64_t scan_settle;    /* its reads' kd_recover_ask.settle_to (0: none yet) */
    uint64_t sent_at_ms;    /* wall: when that first copy was sent */
    int attempts;           /* failed deliveries so far (to its current topic) */
    bool stuck;             /* refused past max_retries where it cannot go further:
                             * counted in kdedup_stuck_messages until it settles */
    uint64_t consumed_us;   /* monotonic: for the forward latency */
    size_t bytes;           /* its key, value and headers: in p->flow.inflight_bytes */
    bool gate_takeover;     /* waiting in a gate: to be taken over (else produced) */
    uint64_t due_ms;        /* in the retry list: when (monotonic) */
    /* the delivery report */
    rd_kafka_resp_err_t err;
    rd_kafka_msg_status_t status;
    int32_t out_partition;
    int64_t out_offset;
    int64_t out_timestamp;
} msg;

/* A claim whose message was dropped with its ownership while a delivery of
 * it may be downstream: where to read to tell, for the copy that meets it
 * (a bounded FIFO, indexed by p->keys.left). */
typedef struct left_claim {
    struct left_claim *older, *newer;
    size_t route;
    char *key; /* owned */
    size_t key_len;
    int32_t out_partition;
    int64_t scan_from;
    int64_t scan_settle; /* its reads' kd_recover_ask.settle_to (0: none yet) */
    uint64_t sent_at_ms;
    uint64_t barrier, barrier_until; /* the delivery's (see msg.barrier) */
    kd_recover_result result;        /* LATER until a read told (kd_pl_resolve_left) */
    kd_recover_found found;          /* FOUND: the delivery's record */
} left_claim;

typedef struct msg_list {
    msg *head, *tail;
    size_t n;
} msg_list;

static inline void list_push(msg_list *l, msg *m) {
    m->next = NULL;
    if (l->tail)
        l->tail->next = m;
    else
        l->head = m;
    l->tail = m;
    l->n++;
}

/* Puts front (taken from l) back before whatever l holds now. */
static inline void list_prepend(msg_list *l, msg_list *front) {
    if (!front->n)
        return;
    front->tail->next = l->head;
    if (!l->tail)
        l->tail = front->tail;
    l->head = front->head;
    l->n += front->n;
}

static inline msg_list list_take(msg_list *l) {
    msg_list all = *l;

    memset(l, 0, sizeof(*l));
    return all;
}

static inline const char *src_topic(const msg *m) {
    return rd_kafka_topic_name(m->rkm->rkt);
}

#endif
