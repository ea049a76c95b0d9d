/*
 * kdedup - recovery's ground floor: the turns' reading budget, the progress
 * callback, the stats, and when a record forwarded can be a claim's
 * delivery (see recovery.h). It calls none of recovery's other parts, which
 * stand on it (recovery_int.h's file map).
 */
#include "sidecar/recovery_int.h"
#include "sidecar/clock.h"

/* True once this turn's reading budget is spent; the first call of a turn
 * starts its clock (the loop may have waited on its consumer since the
 * turn began). */
bool kd_rc_turn_over(kd_recovery *rc) {
    uint64_t now = kd_mono_us();

    if (!rc->turn_budget_us)
        return false;
    if (!rc->turn_end_us)
        rc->turn_end_us = now + rc->turn_budget_us;
    return now >= rc->turn_end_us;
}

bool kd_recovery_forwarded_since(int64_t at, uint64_t since_ms) {
    return at < 0 || (uint64_t)at + CLOCK_SLACK_MS >= since_ms;
}

void kd_recovery_set_progress(kd_recovery *rc, void (*fn)(void *arg), void *arg) {
    rc->progress = fn;
    rc->progress_arg = arg;
}

void kd_recovery_begin_turn(kd_recovery *rc, uint64_t budget_ms) {
    rc->turn_budget_us = budget_ms * 1000u;
    rc->turn_end_us = 0;
}

void kd_recovery_stats_get(const kd_recovery *rc, kd_recovery_stats *out) {
    *out = rc->stats;
}
