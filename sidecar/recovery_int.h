/*
 * kdedup - recovery's private header: the state its parts share, and what
 * each part offers the others. Public API: recovery.h.
 *
 * File map, from the ground floor up (a file calls only files listed before
 * it):
 *   recovery.c                 the turns' reading budget, progress, stats, and
 *                              kd_recovery_forwarded_since: calls no other part
 *   recovery_read.c            the scanning consumer: positions, budgeted reads
 *                              of a range, watermarks; the checks of a record
 *                              read (its key, its signature: headers.h)
 *   recovery_runs.c            run records (kd_recovery_record_run, _run_lookup)
 *   recovery_orphans.c         scans of dead runs' partitions, their key tables
 *                              and LRU memory budget (kd_recovery_find, _forget)
 *   recovery_history_read.c    handovers: the historian (its assignment, its
 *                              reads) and the batches of records it hands each
 *                              job
 *   recovery_history_window.c  handovers: marks, each one's window, its end
 *                              asked again for a transaction's markers, the
 *                              mark saved
 *   recovery_history.c         handovers (kd_recovery_history, _histories):
 *                              the jobs started, read together, settled
 *   recovery_since.c           deliveries of this run whose outcome is unknown
 *                              (kd_recovery_find_since, _find_since_many)
 *   recovery_new.c             kd_recovery_new and _destroy (frees every part's
 *                              state)
 *
 * All of it runs on the thread that calls recovery.h (the pipeline's loop).
 */
#ifndef KD_RECOVERY_INT_H
#define KD_RECOVERY_INT_H

#include "sidecar/recovery.h"

#define DIGEST_LEN 16
#define SCAN_IDLE_MS 15000 /* a scan fails when the broker hands it nothing this long */
#define WATERMARK_TIMEOUT_MS 5000
/* A handover waits for the transactions open before the end it read
 * (recovery_history_window.c, markers_awaited), asking for the partition's
 * end this often, for the producer's transaction.timeout.ms plus this at
 * most: Apache Kafka's default
 * transaction.abort.timed.out.transaction.cleanup.interval.ms, how late
 * the broker may abort a transaction that timed out. */
#define MARKERS_ASK_MS 50
#define TXN_ABORT_CHECK_MS 10000
#define CLOCK_SLACK_MS 1000 /* a claim and its forwarding: one clock, maybe stepped */
/* A handover batch's records kept alive: keys, values and headers (see
 * headers.h: an empty header takes some 90 bytes once parsed). */
#define HISTORY_BATCH_BYTES (4u << 20)

/* A scan of a dead run's partition (recovery_orphans.c). */
typedef struct scan scan;
/* A record of a key in a scan's table (recovery_orphans.c). */
typedef struct slot slot;
/* A downstream partition the historian reads (recovery_history_read.c). */
typedef struct hreader hreader;

struct kd_recovery {
    const kd_config *cfg;
    kd_store *store;
    char *brokers;
    rd_kafka_t *scanner; /* created on first use */
    /* where the scanner is assigned and positioned (a paused step goes on
     * from there); pos_topic NULL when unassigned */
    const char *pos_topic;
    int32_t pos_partition;
    int64_t pos_next;
    uint64_t pos_idle_left; /* us a scan may still wait for its next record */
    scan *scans;
    size_t nscans;
    rd_kafka_t *historian; /* the handovers' reads: created on first use */
    hreader *hreaders;     /* its assignment */
    size_t nhreaders;
    uint64_t hist_idle_left; /* us its reads may still wait for a record */
    rd_kafka_t *watcher;     /* high watermarks (kd_rc_high_watermark): made on
                              * first use */
    kd_recovery_stats stats;
    void (*progress)(void *arg);
    void *progress_arg;
    uint64_t turn_budget_us;  /* reading per turn; 0 = no budget */
    uint64_t turn_end_us;     /* mono: this turn's reading ends; 0 = not begun */
    uint64_t broker_retry_at; /* mono us: own lookups fail fast until then */
    uint64_t boot_id;         /* this run's (kd_recovery_record_run) */
    kd_signer *signers[2];    /* dedup.signing_key, previous_signing_key; or NULL */
};

/* Takes each record read (and its ownership); false stops the scan. */
typedef bool (*record_fn)(void *arg, rd_kafka_message_t *rkm);

typedef enum range_result {
    RANGE_DONE,   /* reached the end */
    RANGE_PAUSED, /* the turn's budget ran out: go on from *next */
    RANGE_FAILED, /* the broker, or each, failed */
} range_result;

/* A handover in a read of several together (kd_recovery_histories). */
typedef struct hjob {
    kd_history_job *job;
    const kd_route *route;
    size_t next_job; /* the next job reading the same partition, or SIZE_MAX */
    bool active;     /* started, its window not read to the end */
    bool failed;
} hjob;

/* One kd_recovery_histories() call: its jobs, and the batch of records
 * they hold (of every job, at most `batch` and HISTORY_BATCH_BYTES). */
typedef struct histories {
    kd_recovery *rc;
    hjob *jobs;
    size_t n, nactive;
    size_t *first_job; /* per reader (rc->hreaders): its first job, or SIZE_MAX */
    int64_t since_ms;  /* older records have expired: skipped */
    size_t batch;
    rd_kafka_message_t **held; /* the batch's records, alive while fn reads them */
    kd_history_rec *recs;
    size_t *owner;          /* held[i]'s job */
    kd_history_rec *sorted; /* the batch, job by job, in order */
    size_t *count;          /* per job, then where its records start in sorted */
    size_t nheld, bytes;
} histories;

/* recovery.c */

/* True once this turn's reading budget is spent; the first call of a turn
 * starts its clock (the loop may have waited on its consumer since the
 * turn began). */
bool kd_rc_turn_over(kd_recovery *rc);

/* recovery_read.c */

/* The first DIGEST_LEN bytes of key's SHA-256, into out. */
void kd_rc_digest(const void *key, size_t len, unsigned char out[DIGEST_LEN]);

/* The slot of digest d in an open-addressing table of cap slots. */
size_t kd_rc_slot_of(const unsigned char *d, size_t cap);

/* Where topic/partition's offset for time `at` (or RD_KAFKA_OFFSET_END,
 * _BEGINNING) is, into *out; the error, or 0. */
rd_kafka_resp_err_t kd_rc_offset_at(rd_kafka_t *rk, const char *topic, int32_t partition,
                                    int64_t at, int64_t *out);

/* Asks the cluster where topic's partitions are led now (a new leader). */
void kd_rc_refresh_leaders(rd_kafka_t *rk, const char *topic);

/* True when err says the partition is led elsewhere now. */
bool kd_rc_leader_moved(rd_kafka_resp_err_t err);

/* The first (*lo) and end (*hi) offsets of topic/partition, asked once
 * more after the leader moved; the error, or 0. */
rd_kafka_resp_err_t kd_rc_watermarks(rd_kafka_t *rk, const char *topic, int32_t partition,
                                     int64_t *lo, int64_t *hi);

/* A consumer that reads assigned partitions, never in a group, never
 * committing, with isolation.level `isolation` (the caller owns it); NULL,
 * logged, when it cannot be made. */
rd_kafka_t *kd_rc_reader_new(kd_recovery *rc, const char *client_id,
                             const char *isolation);

/* topic/partition's high watermark, in *hw: the end a read_uncommitted
 * reader sees, past the records of transactions still open, where a
 * read_committed read (the scanner's, the historian's) ends at the last
 * stable offset. Asked with a consumer of its own (rc owns it, made on
 * first use), once more after the leader moved. The error, or 0. */
rd_kafka_resp_err_t kd_rc_high_watermark(kd_recovery *rc, const char *topic,
                                         int32_t partition, int64_t *hw);

/* The scans' consumer, made on first use (rc owns it); NULL when it
 * cannot be made. */
rd_kafka_t *kd_rc_scanner(kd_recovery *rc);

/* The route's idempotency key of a record kdedup forwarded for a claim. */
bool kd_rc_key_of(const kd_recovery *rc, const rd_kafka_message_t *rkm,
                  const kd_route *route, const void **key, size_t *key_len);

/* True when kdedup wrote rkm, as far as its signature tells (counts the
 * records not trusted). */
bool kd_rc_trusted(kd_recovery *rc, const rd_kafka_message_t *rkm, const kd_route *route,
                   const void *key, size_t key_len, bool forget);

/* Reads [*next, to) of topic/partition with the scanner, handing every
 * record to each; counts them in *records and moves *next past what was
 * read; with `budgeted`, within the turn's budget. */
range_result kd_rc_scan_range(kd_recovery *rc, const char *topic, int32_t partition,
                              int64_t *next, int64_t to, bool budgeted, record_fn each,
                              void *arg, uint64_t *records);

/* recovery_history_read.c */

/* The handovers' consumer, made on first use (rc owns it); NULL when it
 * cannot be made. */
rd_kafka_t *kd_rc_historian(kd_recovery *rc);

/* Stops the historian reading and forgets its assignment. */
void kd_rc_history_unassign(kd_recovery *rc);

/* Assigns the historian every partition h's active jobs read (unless its
 * assignment covers them) and links each job to its reader; false when it
 * cannot. */
bool kd_rc_hist_assign(kd_recovery *rc, histories *h);

/* Job j of h has failed: it stops reading (kd_rc_hist_finish sets its
 * cursor back). */
void kd_rc_hist_fail(histories *h, size_t j);

/* Passes each job of h its records of the batch, in order, then drops them. */
void kd_rc_hist_flush(histories *h);

/* Reads h's active jobs' partitions together until each reached its end,
 * the turn's budget is spent, or nothing came for SCAN_IDLE_MS. */
void kd_rc_hist_read(histories *h);

/* recovery_history_window.c */

/* Starts h's jobs not started (or starting over): their marks, then their
 * partitions' first and end offsets; a job that cannot start fails. */
void kd_rc_hist_start(histories *h);

/* Settles job j of h after the read: a failed one goes back to what its fn
 * took, one read to its end saves its mark; sets the job's result. */
void kd_rc_hist_finish(histories *h, size_t j);

#endif /* KD_RECOVERY_INT_H */
