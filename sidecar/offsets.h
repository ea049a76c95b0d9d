/*
 * kdedup - offset tracking: per source partition, the consumed offsets whose
 * fate is not yet durable. The offset to commit is the lowest of them (or
 * the last consumed + 1 when none is left), so a commit never passes a
 * message that could still be lost.
 *
 * Partitions are named by route index (one source topic per route) and
 * partition number. Not thread-safe: the pipeline's thread owns it.
 */
#ifndef KD_OFFSETS_H
#define KD_OFFSETS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct kd_offsets kd_offsets;

typedef enum kd_track {
    KD_TRACKED,      /* now pending */
    KD_NOT_ASSIGNED, /* the partition is not assigned: drop the message */
    KD_NOT_NEWER,    /* at or below an offset already tracked: a re-delivery */
    KD_TRACK_NOMEM
} kd_track;

/* A tracker for nroutes source topics. NULL on allocation failure. */
kd_offsets *kd_offsets_new(size_t nroutes);
void kd_offsets_destroy(kd_offsets *o);

/* Starts tracking a partition afresh (on assignment), as a new ownership:
 * from this assignment to its revoke or loss. false when out of memory. */
bool kd_offsets_assign(kd_offsets *o, size_t route, int32_t partition);
/* Stops tracking a partition (on revoke or loss), forgetting what was pending. */
void kd_offsets_revoke(kd_offsets *o, size_t route, int32_t partition);
bool kd_offsets_assigned(const kd_offsets *o, size_t route, int32_t partition);

/* The id of the partition's current ownership (unique in this tracker, never
 * reused), or 0 when it is not assigned. A message remembers the ownership
 * that consumed it: work of an ended ownership never touches a later one. */
uint64_t kd_offsets_owner(const kd_offsets *o, size_t route, int32_t partition);

/* Records a consumed offset as pending. */
kd_track kd_offsets_track(kd_offsets *o, size_t route, int32_t partition, int64_t offset);

/* Marks a pending offset of ownership `owner` done; a no-op for offsets
 * not pending, and for any offset of an ownership that has ended (even when
 * the partition was assigned again and tracks the same offset anew). */
void kd_offsets_done(kd_offsets *o, size_t route, int32_t partition, uint64_t owner,
                     int64_t offset);

/* The offset to commit for a partition; false when it has tracked nothing. */
bool kd_offsets_commit_point(const kd_offsets *o, size_t route, int32_t partition,
                             int64_t *offset);

/* The offset to commit for a partition if the pending offsets extra[0..n)
 * (ascending) of ownership `owner` were done too (a transaction about to
 * commit them); false when it has tracked nothing. Changes nothing. */
bool kd_offsets_commit_point_with(const kd_offsets *o, size_t route, int32_t partition,
                                  uint64_t owner, const int64_t *extra, size_t n,
                                  int64_t *offset);

/* Pending offsets of one partition, or of all partitions. */
size_t kd_offsets_pending(const kd_offsets *o, size_t route, int32_t partition);
size_t kd_offsets_pending_total(const kd_offsets *o);

/* Entries the partition's tracker holds: its pending offsets and the done
 * ones behind the oldest pending (a message stuck at the front holds back
 * all that follow). Of one partition, or of all. */
size_t kd_offsets_span(const kd_offsets *o, size_t route, int32_t partition);
size_t kd_offsets_span_total(const kd_offsets *o);

/* Calls fn for every assigned partition. */
void kd_offsets_each_assigned(kd_offsets *o,
                              void (*fn)(void *arg, size_t route, int32_t partition),
                              void *arg);

/* A flag the caller keeps per assigned partition (the pipeline: "held
 * back"); cleared on assign and revoke, false for a partition not assigned. */
void kd_offsets_set_flag(kd_offsets *o, size_t route, int32_t partition, bool flag);
bool kd_offsets_flag(const kd_offsets *o, size_t route, int32_t partition);

/* Calls fn for every assigned partition whose commit point moved since the
 * last call, then remembers it as reported. */
void kd_offsets_each_moved(kd_offsets *o,
                           void (*fn)(void *arg, size_t route, int32_t partition,
                                      int64_t offset),
                           void *arg);

#endif /* KD_OFFSETS_H */
