/*
 * kdedup - the clocks the sidecar reads: monotonic for durations and
 * deadlines, the wall clock for timestamps that leave the process.
 */
#ifndef KD_CLOCK_H
#define KD_CLOCK_H

#include <stdint.h>
#include <time.h>

/* Monotonic microseconds (arbitrary origin). */
static inline uint64_t kd_mono_us(void) {
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

/* Monotonic milliseconds (arbitrary origin). */
static inline uint64_t kd_mono_ms(void) {
    return kd_mono_us() / 1000u;
}

/* Wall-clock milliseconds since the Unix epoch. */
static inline uint64_t kd_wall_ms(void) {
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

#endif /* KD_CLOCK_H */
