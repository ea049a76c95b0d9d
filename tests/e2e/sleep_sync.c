/* A slow disk for tests/e2e/stall_test.py, as an LD_PRELOAD shim: while
 * the file named by KD_SLOW_SYNC holds a number of milliseconds, every
 * fdatasync() and fsync() of the process (RocksDB's synced writes) first
 * sleeps that long. The test compiles it:
 * cc -shared -fPIC -o sleep_sync.so tests/e2e/sleep_sync.c -ldl */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

/* Sleeps as long as the file named by KD_SLOW_SYNC says (no file: not). */
static void slow_down(void) {
    const char *path = getenv("KD_SLOW_SYNC");
    FILE *f = path ? fopen(path, "r") : NULL;
    long ms = 0;

    if (!f)
        return;
    if (fscanf(f, "%ld", &ms) != 1)
        ms = 0;
    fclose(f);
    if (ms > 0)
        nanosleep(&(struct timespec){ms / 1000, (ms % 1000) * 1000000L}, NULL);
}

/* fdatasync(2), slowed down. */
int fdatasync(int fd) {
    int (*real)(int) = (int (*)(int))dlsym(RTLD_NEXT, "fdatasync");

    slow_down();
    return real(fd);
}

/* fsync(2), slowed down. */
int fsync(int fd) {
    int (*real)(int) = (int (*)(int))dlsym(RTLD_NEXT, "fsync");

    slow_down();
    return real(fd);
}
