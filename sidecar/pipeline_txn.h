/*
 * kdedup - the pipeline's transactional delivery mode: what the other parts
 * call (file map: pipeline_int.h; its state, kd_pl_txn, is in
 * pipeline_state.h). Private to the pipeline.
 */
#ifndef KD_PIPELINE_TXN_H
#define KD_PIPELINE_TXN_H

#include "sidecar/pipeline.h"
#include "sidecar/pipeline_state.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

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
