/*
 * kdedup tests - a store write slower than max.poll.interval.ms, for
 * tests/e2e/zombie_test.py: preloaded into one kdedup process
 * (LD_PRELOAD), fdatasync() and fsync() wait while the file that
 * KD_SLOW_SYNC_FLAG names exists (at most 120 s), then sync. The test
 * creates the file to stall the process's synced store writes, and the loop
 * with them, and removes it to let them go on.
 */
#define _GNU_SOURCE /* RTLD_NEXT */
#include <dlfcn.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

int fdatasync(int fd);
int fsync(int fd);

/* Waits while the flag file exists. */
static void stall(void) {
    const char *flag = getenv("KD_SLOW_SYNC_FLAG");
    struct timespec tick = {0, 50 * 1000000L};

    for (int i = 0; flag && i < 120 * 20 && access(flag, F_OK) == 0; i++)
        nanosleep(&tick, NULL);
}

/* fdatasync(2), after the stall. Returns what it returns. */
int fdatasync(int fd) {
    int (*real)(int) = (int (*)(int))dlsym(RTLD_NEXT, "fdatasync");

    stall();
    return real(fd);
}

/* fsync(2), after the stall. Returns what it returns. */
int fsync(int fd) {
    int (*real)(int) = (int (*)(int))dlsym(RTLD_NEXT, "fsync");

    stall();
    return real(fd);
}
