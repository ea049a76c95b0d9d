/*
 * kdedup tests - a store that loses power: an in-memory store that keeps,
 * beside what reads see, what a power loss would leave of it, and drops the
 * rest at a simulated crash (the model of RocksDB's own crash test,
 * db_crashtest.py: unsynced writes are lost).
 *
 * The model follows store.h and store_rocks.h. A synced write (append,
 * append_batch) is durable when it returns, and so is every write before
 * it (one write-ahead log). A lazy write (append_batch_lazy) is pending:
 * reads see it at once, but it is durable only once a later synced write
 * that wrote something, or a sync(), covers it. Writes are serialized by
 * the wrapper, so "before" is the order the store saw them in.
 *
 * A crash is armed at the nth write of a kind (counted from the arming),
 * or made at once. What survives it is what RocksDB's write-ahead log
 * could hold after a power loss: every write a sync covered, then a prefix
 * of the writes no sync covered, whole writes only (a write is one
 * WriteBatch, one checksummed log record: all of it or none). A write the
 * crash falls in reached the log but not its sync: it is the last of the
 * uncovered writes, and the crash's `keep` says how many of those survive
 * (0: none, the usual power loss; SIZE_MAX: all, the crash came just
 * after the sync). From then on every call fails with KD_ERR_STORE (the
 * process is as good as dead: the test stops its pipeline), and a new
 * store made from this one starts with what survived. Not a crash: a
 * transient failure of one write, or of them all (a full disk), after
 * which the store works on.
 */
#ifndef KD_TEST_POWERLOSS_STORE_H
#define KD_TEST_POWERLOSS_STORE_H

#include "dedup/store.h"

#include <stdbool.h>
#include <stddef.h>

/* What a write holds, to aim a crash at (a write may be several kinds). */
typedef enum kd_powerloss_op {
    KD_POWERLOSS_CLAIM,     /* an active entry without a receipt: a claim */
    KD_POWERLOSS_RECEIPT,   /* an active entry with a receipt: a completion */
    KD_POWERLOSS_TOMBSTONE, /* a release, or an operator's forget */
    KD_POWERLOSS_OTHER,     /* a record that is no entry: a run record, a mark */
    KD_POWERLOSS_SYNC,      /* a sync() while lazy writes are pending */
} kd_powerloss_op;

/* A set of kinds, for kd_powerloss_refuse(). */
#define KD_POWERLOSS_BIT(op) (1u << (op))
#define KD_POWERLOSS_ALL 0x1fu

/* A new store. survivor NULL: empty. Else a power-loss store (borrowed)
 * whose durable writes the new one starts with: the restart after its
 * crash (or after a power loss now, when it did not crash). Returns NULL
 * when out of memory or when the survivor's writes do not replay (the
 * model is broken). */
kd_store *kd_powerloss_new(kd_store *survivor);

/* Arms a crash at the nth (1 = the next) write of kind op (for SYNC: a
 * sync with writes pending), keeping the first keep writes no sync covered
 * (the hit write last of them; a sync's keep >= pending: it synced, then
 * the power went). Replaces any armed crash or failure. Thread-safe. */
void kd_powerloss_crash_at(kd_store *s, kd_powerloss_op op, unsigned nth, size_t keep);

/* Arms one transient failure of the nth write of kind op: nothing of it
 * is applied, it returns KD_ERR_STORE, and the store works on. */
void kd_powerloss_fail_at(kd_store *s, kd_powerloss_op op, unsigned nth);

/* Crashes now (the power goes): pending writes are dropped. */
void kd_powerloss_crash(kd_store *s);

/* Waits until the store crashed, at most timeout_ms; true if it did. */
bool kd_powerloss_wait_crash(kd_store *s, int timeout_ms);

/* True once the store crashed. */
bool kd_powerloss_crashed(kd_store *s);

/* From now on, every write holding a kind in the set `kinds` (bits
 * KD_POWERLOSS_BIT(op); 0: none) fails with KD_ERR_STORE and "No space left
 * on device", nothing of it applied: a full disk (KD_POWERLOSS_ALL), or one
 * that refuses only some writes. A sync fails when SYNC is in the set and
 * writes are pending (with none it has nothing to do: KD_OK, as RocksDB's).
 * Thread-safe. */
void kd_powerloss_refuse(kd_store *s, unsigned kinds);

/* Items of kind op the store took so far (for SYNC: syncs made with
 * writes pending), refused ones not counted. An event a test can wait on. */
unsigned long kd_powerloss_count(kd_store *s, kd_powerloss_op op);

/* Lazy appends not yet durable. */
size_t kd_powerloss_pending(kd_store *s);

#endif /* KD_TEST_POWERLOSS_STORE_H */
