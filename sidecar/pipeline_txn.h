/*
 * kdedup - the pipeline's transactional delivery mode: its state, which
 * struct kd_pipeline embeds, and what the other parts call (file map:
 * pipeline_int.h). Private to the pipeline.
 */
#ifndef KD_PIPELINE_TXN_H
#define KD_PIPELINE_TXN_H

#include "sidecar/pipeline.h"
#include "sidecar/pipeline_msg.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* A source offset a transaction settles (pipeline_txn.c). */
typedef struct kd_pl_txn_off {
    size_t route;
    int32_t partition;
    uint64_t own;
    int64_t offset;
} kd_pl_txn_off;

/* Makes a producer like the pipeline's first (the caller owns it); NULL
 * with the reason in errstr. */
typedef rd_kafka_t *kd_pl_producer_new_fn(kd_pipeline *p, char *errstr,
                                          size_t errstr_size);

/* The transactional mode (pipeline_txn.c). The loop's thread only. At most
 * KD_PL_TXN_REPLACES producers replaced within KD_PL_TXN_REPLACE_WINDOW_MS:
 * past it, another process likely uses the same transactional.id, and the
 * pipeline stops. */
#define KD_PL_TXN_REPLACES 5
#define KD_PL_TXN_REPLACE_WINDOW_MS 60000
/* A message that finds the transactional producer not ready (its
 * initialisation waits for the broker) is tried again this much later. */
#define KD_PL_TXN_WAIT_MS 1000
typedef struct kd_pl_txn {
    bool on;      /* pipeline.delivery "transactional" */
    bool open;    /* begun, not yet committed or aborted */
    bool doomed;  /* a delivery of the open one failed: it is aborted */
    bool replace; /* the producer failed for good: replaced, its open
                   * transaction's outcome settled by its successor */
    uint64_t replaced_ms[KD_PL_TXN_REPLACES]; /* mono: the last replacements */
    size_t nreplaced;                         /* replacements so far */
    uint64_t seq;        /* the open (or last) transaction's number, from 1 */
    uint64_t began_ms;   /* mono: when the open one began */
    uint64_t offsets_ms; /* mono: when offsets were last committed */
    size_t outstanding;  /* deliveries of the open one not yet reported */
    /* mono: since when a replacing producer's initialisation has been
     * answered "try again" (0: initialised); nothing is sent meanwhile */
    uint64_t init_since;
    uint64_t init_tried_ms; /* mono: when it was last resumed */
    msg_list acked;         /* ...reported persisted */
    msg_list failed;        /* ...reported failed */
    kd_pl_txn_off *offs;    /* the source offsets it settles, noffs of cap */
    size_t noffs, cap;
    kd_pl_producer_new_fn *producer_new; /* kd_pl_txn_init's: makes a replacement */
} kd_pl_txn;

/* Sets the mode up; in the transactional mode initialises the producer's
 * transactions (fencing an earlier producer of the same transactional.id).
 * producer_new is kept to make a replacing producer. false with the reason
 * in errstr when it cannot. */
bool kd_pl_txn_init(kd_pipeline *p, kd_pl_producer_new_fn *producer_new, char *errstr,
                    size_t errstr_size);
/* Frees the mode's arrays. */
void kd_pl_txn_destroy(kd_pipeline *p);
/* Before a produce: in the transactional mode, a transaction is open (begun
 * if need be). false when it cannot be (the pipeline stops: fatal). */
bool kd_pl_txn_ready(kd_pipeline *p);
/* m was produced into the open transaction. */
void kd_pl_txn_sent(kd_pipeline *p, msg *m);
/* m's delivery report, when m was produced in a transaction: held for the
 * transaction's end (or settled, for an aborted one). false for m outside
 * any transaction: handled as in the default mode. */
bool kd_pl_txn_report(kd_pipeline *p, msg *m);
/* Ends the open transaction: commits it (commit, and every delivery of it
 * persisted) or aborts it; settles its messages. */
void kd_pl_txn_end(kd_pipeline *p, bool commit);
/* Each turn: commits the open transaction once it is
 * pipeline.transaction_max_age old (aborts a failed one), or commits
 * offsets that moved on their own. True when it aborted a transaction (or
 * a commit's outcome is unknown):
 * its messages that go again wait on p->q.retries, due at once, and the
 * caller sends them (kd_pl_retry_due) before anything consumed later. */
bool kd_pl_txn_turn(kd_pipeline *p);

#endif /* KD_PIPELINE_TXN_H */
