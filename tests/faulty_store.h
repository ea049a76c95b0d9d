/*
 * kdedup tests - a store that fails on demand: wraps another store and,
 * while writes are switched off, answers every append with KD_ERR_STORE
 * and a "No space left on device" error, as a full disk would; or makes
 * batch appends slow, or holds them until the test lets them go; or lets
 * another writer win the race for a stream; or fails the reads of some
 * streams.
 */
#ifndef KD_TEST_FAULTY_STORE_H
#define KD_TEST_FAULTY_STORE_H

#include "dedup/store.h"

#include <stdbool.h>

/* Wraps inner, taking ownership of it (destroying the wrapper destroys it).
 * Returns NULL on allocation failure (inner is then destroyed). */
kd_store *kd_faulty_store_new(kd_store *inner);

/* Switches writes off (fail = true) or on again. Thread-safe. */
void kd_faulty_store_fail_writes(kd_store *faulty, bool fail);

/* Lets the next `ok` batch appends through, then switches writes off (as
 * kd_faulty_store_fail_writes(true)): a write that fails right after the
 * one before it succeeded. Thread-safe. */
void kd_faulty_store_fail_writes_after(kd_store *faulty, unsigned ok);

/* Makes every batch append wait ms first (0: none), as a slow disk would.
 * Thread-safe. */
void kd_faulty_store_delay_writes(kd_store *faulty, unsigned ms);

/* Batch appends made slow so far (counted once their wait is over). */
unsigned long kd_faulty_store_delayed(kd_store *faulty);

/* Holds every batch append (hold = true) until it is called again with
 * false: each waits, unwritten, until then, as a write to a disk that does
 * not answer would; the test chooses when it ends. Thread-safe. */
void kd_faulty_store_hold_writes(kd_store *faulty, bool hold);

/* Batch appends that came while held (counted as they begin to wait). */
unsigned long kd_faulty_store_held(kd_store *faulty);

/* Arms lost races: each of the next `times` appends to stream (alone or in
 * a batch) is preceded by payload, appended at the same sequence number as
 * if another writer had come first, so that append fails with
 * KD_ERR_SEQUENCE_CONFLICT. Copies stream and payload. Thread-safe. */
void kd_faulty_store_race(kd_store *faulty, const char *stream, size_t stream_len,
                          const void *payload, size_t payload_len, unsigned times);

/* Races armed with kd_faulty_store_race() that happened. */
unsigned long kd_faulty_store_raced(kd_store *faulty);

/* Fails every single-stream read (read_last) of a stream whose name begins
 * with prefix, with KD_ERR_STORE, until called again (NULL: none), as a
 * store whose block holding them cannot be read would: e.g. a handover's
 * mark ("kdedup:handover:in/"), so that the handovers of that source
 * topic fail and wait while everything else goes on. Copies prefix; false
 * when out of memory. Thread-safe. */
bool kd_faulty_store_fail_reads(kd_store *faulty, const char *prefix);

/* Reads refused by kd_faulty_store_fail_reads() so far. */
unsigned long kd_faulty_store_reads_refused(kd_store *faulty);

/* Appends refused so far. */
unsigned long kd_faulty_store_refused(kd_store *faulty);

#endif /* KD_TEST_FAULTY_STORE_H */
