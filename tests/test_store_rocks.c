/*
 * kdedup tests - the RocksDB store: data kept across a close, clear errors
 * for unusable paths, locked and corrupt databases, garbage records and
 * foreign layouts; its durability is in test_store_rocks_durability.c.
 */
#define _GNU_SOURCE /* RTLD_NEXT */
#include "tests/store_rocks_fixture.h"

#include <rocksdb/c.h>

#include <dlfcn.h>
#include <fcntl.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* Every fdatasync() and fsync() of this process, RocksDB's included: a
 * function defined in the executable comes before libc's in the lookup of
 * librocksdb's calls. kill -9 keeps the page cache, so only these calls
 * tell a synced write from an unsynced one. */
atomic_ulong disk_syncs;

int fdatasync(int fd) {
    int (*real)(int) = (int (*)(int))dlsym(RTLD_NEXT, "fdatasync");

    atomic_fetch_add(&disk_syncs, 1);
    return real(fd);
}

int fsync(int fd) {
    int (*real)(int) = (int (*)(int))dlsym(RTLD_NEXT, "fsync");

    atomic_fetch_add(&disk_syncs, 1);
    return real(fd);
}

static int setup(void **state) {
    *state = fx_new(FX_ROCKS);
    return 0;
}

static int teardown(void **state) {
    fx_free(*state);
    return 0;
}

uint64_t wall_ms(void) {
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

void assert_state(kd_dedup *d, const char *key, bool want_found, kd_state want) {
    kd_decision dec;
    bool found;

    assert_int_equal(kd_dedup_lookup(d, K(key), &dec, &found), KD_OK);
    assert_int_equal(found, want_found);
    if (found)
        assert_int_equal(dec.state, want);
    kd_decision_clear(&dec);
}

/* The message of a failed kd_rocks_open, asserting that it failed. */
static const char *open_error(const char *path, char *err, size_t size) {
    kd_store *s = kd_rocks_open(path, true, err, size);

    if (s) {
        kd_store_destroy(s);
        fail_msg("kd_rocks_open(%s) succeeded", path);
    }
    return err;
}

int in_child(int (*fn)(void *), void *arg) {
    int fds[2];
    char result = 127;
    pid_t pid;

    assert_int_equal(pipe(fds), 0);
    pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        result = (char)fn(arg);
        if (write(fds[1], &result, 1) != 1)
            result = 126;
        raise(SIGKILL);
    }
    close(fds[1]);
    if (read(fds[0], &result, 1) != 1)
        result = 125;
    close(fds[0]);
    waitpid(pid, NULL, 0);
    return result;
}

static void test_reopen_keeps_data(void **state) {
    fx *f = *state;
    kd_decision dec;

    assert_int_equal(kd_dedup_claim_or_get(f->dedup, K("a"), 1, &dec), KD_OK);
    assert_int_equal(kd_dedup_claim_or_get(f->dedup, K("b"), 1, &dec), KD_OK);
    assert_int_equal(kd_dedup_complete_receipt(f->dedup, K("b"), K("rb")), KD_OK);
    assert_int_equal(kd_dedup_claim_or_get(f->dedup, K("c"), 1, &dec), KD_OK);
    assert_int_equal(kd_dedup_release_claim(f->dedup, K("c")), KD_OK);
    fx_reopen(f);
    assert_state(f->dedup, "a", true, KD_IN_FLIGHT);
    assert_state(f->dedup, "b", true, KD_COMPLETED);
    assert_state(f->dedup, "c", false, KD_CLAIMED);
    assert_int_equal(fx_stream_count(f, "b"), 2);
    assert_int_equal(fx_stream_count(f, "c"), 2);
}

static int open_is_locked(void *dir) {
    char err[512];
    kd_store *s = kd_rocks_open(dir, true, err, sizeof(err));

    return !s && strstr(err, dir) && strstr(err, "locked") ? 0 : 1;
}

static void test_second_open_is_locked(void **state) {
    fx *f = *state;

    assert_int_equal(open_is_locked(f->dir), 0);
    assert_int_equal(in_child(open_is_locked, f->dir), 0); /* another process */
}

static void test_path_errors(void **state) {
    char dir[256], path[512], err[512];
    int fd;

    (void)state;
    fx_tmpdir(dir, sizeof(dir));
    snprintf(path, sizeof(path), "%s/file", dir);
    fd = open(path, O_CREAT | O_WRONLY, 0600);
    assert_true(fd >= 0);
    close(fd);

    snprintf(path, sizeof(path), "%s/file/store", dir);
    open_error(path, err, sizeof(err));
    assert_non_null(strstr(err, path));
    assert_non_null(strstr(err, "Not a directory"));

    open_error("", err, sizeof(err));
    assert_non_null(strstr(err, "no path"));

    /* Nested missing parents are created. */
    snprintf(path, sizeof(path), "%s/a/b/c", dir);
    kd_store *s = kd_rocks_open(path, false, err, sizeof(err));
    assert_non_null(s);
    kd_store_destroy(s);
    fx_rmtree(dir);
}

/* Opens <dir>/store as a user who may not enter dir: root ignores modes, so
 * root drops to nobody first. */
static int open_is_denied(void *dir) {
    char path[512], err[512];
    kd_store *s;

    if (geteuid() == 0) {
        if (setgid(65534) != 0 || setuid(65534) != 0)
            return 2;
    } else if (chmod(dir, 0) != 0) {
        return 3;
    }
    snprintf(path, sizeof(path), "%s/store", (char *)dir);
    s = kd_rocks_open(path, true, err, sizeof(err));
    return !s && strstr(err, path) && strstr(err, "Permission denied") ? 0 : 1;
}

static void test_permission_denied(void **state) {
    char dir[256];
    int result;

    (void)state;
    fx_tmpdir(dir, sizeof(dir));
    assert_int_equal(chmod(dir, 0700), 0);
    result = in_child(open_is_denied, dir);
    chmod(dir, 0700);
    fx_rmtree(dir);
    assert_int_equal(result, 0);
}

static void write_file(const char *dir, const char *name, const char *content) {
    char path[512];
    FILE *fp;

    snprintf(path, sizeof(path), "%s/%s", dir, name);
    fp = fopen(path, "w");
    assert_non_null(fp);
    fputs(content, fp);
    fclose(fp);
}

static void test_corrupt_files(void **state) {
    fx *f = *state;
    char err[512];

    fx_reopen(f); /* leaves a complete database behind */
    fx_close(f);
    write_file(f->dir, "CURRENT", "MANIFEST-999999\n");
    open_error(f->dir, err, sizeof(err));
    assert_non_null(strstr(err, f->dir));
    assert_non_null(strstr(err, "MANIFEST-999999"));

    write_file(f->dir, "CURRENT", "\x01\x02 not a manifest name");
    open_error(f->dir, err, sizeof(err));
    assert_non_null(strstr(err, f->dir));
    fx_rmtree(f->dir);
    assert_int_equal(mkdir(f->dir, 0700), 0);
    fx_reopen(f);
}

/* Writes raw bytes under a record key with RocksDB itself (store closed). */
static void raw_put(const char *dir, const char *key, size_t klen, const char *val,
                    size_t vlen) {
    rocksdb_options_t *o = rocksdb_options_create();
    rocksdb_writeoptions_t *w = rocksdb_writeoptions_create();
    char *err = NULL;
    rocksdb_t *db = rocksdb_open(o, dir, &err);

    assert_null(err);
    rocksdb_put(db, w, key, klen, val, vlen, &err);
    assert_null(err);
    rocksdb_close(db);
    rocksdb_writeoptions_destroy(w);
    rocksdb_options_destroy(o);
}

static void test_garbage_head_record(void **state) {
    fx *f = *state;
    char stream[128], key[160];
    size_t len = kd_rocks_record_key(
        stream, kd_dedup_stream_key_for(f->dedup, K("k"), stream, sizeof(stream)), key,
        sizeof(key));
    kd_decision dec;
    bool found;

    fx_close(f);
    assert_true(len > 0 && len <= sizeof(key));
    raw_put(f->dir, key, len, "abc", 3); /* shorter than a head */
    fx_reopen(f);
    assert_int_equal(kd_dedup_lookup(f->dedup, K("k"), &dec, &found),
                     KD_ERR_SERIALIZATION);
    assert_int_equal(kd_dedup_claim_or_get(f->dedup, K("k"), 1, &dec),
                     KD_ERR_SERIALIZATION);

    fx_close(f);
    raw_put(f->dir, key, len, "\0\0\0\0\0\0\0\0KD\x01\x09garbage", 20);
    fx_reopen(f);
    assert_int_equal(kd_dedup_claim_or_get(f->dedup, K("k"), 1, &dec),
                     KD_ERR_SERIALIZATION);
    assert_int_equal(kd_dedup_release_claim(f->dedup, K("k")), KD_ERR_SERIALIZATION);
    /* Other keys are unaffected. */
    assert_int_equal(kd_dedup_claim_or_get(f->dedup, K("other"), 1, &dec), KD_OK);
    assert_int_equal(dec.state, KD_CLAIMED);
}

/* A store written with record layout 1 is refused, not read as empty. */
static void test_old_layout_refused(void **state) {
    fx *f = *state;
    char err[512];
    kd_store *s;
    char v1[128] = "h";
    size_t len = 1 + kd_dedup_stream_key_for(f->dedup, K("k"), v1 + 1, sizeof(v1) - 1);

    fx_close(f);
    raw_put(f->dir, v1, len, "\0\0\0\0\0\0\0\0KD", 10);
    s = kd_rocks_open(f->dir, true, err, sizeof(err));
    assert_null(s);
    assert_non_null(strstr(err, "older kdedup (record layout 1)"));
    assert_non_null(strstr(err, f->dir));
}

/* Keys shorter than the memtable's hash prefix (a foreign or damaged
 * database) neither crash the store nor hide its records. */
static void test_short_foreign_keys(void **state) {
    fx *f = *state;
    kd_decision dec;
    uint64_t records = 0;

    assert_int_equal(kd_dedup_claim_or_get(f->dedup, K("kept"), 1, &dec), KD_OK);
    kd_decision_clear(&dec);
    fx_close(f);
    raw_put(f->dir, "x", 1, "1", 1);
    raw_put(f->dir, "k12", 3, "2", 1); /* sorts before every head record */
    fx_reopen(f);
    wait_key_filter_ready(f->store); /* built past the short key */
    assert_int_equal(kd_dedup_claim_or_get(f->dedup, K("kept"), 1, &dec), KD_OK);
    assert_int_equal(dec.state, KD_IN_FLIGHT);
    kd_decision_clear(&dec);
    assert_int_equal(kd_rocks_count_records(f->store, &records), KD_OK);
    assert_int_equal(records, 3);
}

/* Claims and receipts past dedup.ttl are dropped by compaction; live ones
 * stay, and so do claims past inflight_timeout but within ttl: they count
 * as absent, but their owner must stay known to recovery. */
int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_reopen_keeps_data, setup, teardown),
        cmocka_unit_test_setup_teardown(test_second_open_is_locked, setup, teardown),
        cmocka_unit_test(test_path_errors),
        cmocka_unit_test(test_permission_denied),
        cmocka_unit_test_setup_teardown(test_corrupt_files, setup, teardown),
        cmocka_unit_test_setup_teardown(test_garbage_head_record, setup, teardown),
        cmocka_unit_test_setup_teardown(test_old_layout_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_short_foreign_keys, setup, teardown),
        cmocka_unit_test_setup_teardown(test_retention_compaction, setup, teardown),
        cmocka_unit_test_setup_teardown(test_kill9_keeps_synced_appends, setup, teardown),
        cmocka_unit_test_setup_teardown(test_batch_append_per_item, setup, teardown),
        cmocka_unit_test_setup_teardown(test_batch_read_per_item, setup, teardown),
        cmocka_unit_test(test_small_memory_bounds),
        cmocka_unit_test(test_synced_appends_reach_the_disk),
        cmocka_unit_test(test_lazy_writes_made_durable),
        cmocka_unit_test_setup_teardown(test_key_filter_built_at_open, setup, teardown),
        cmocka_unit_test_setup_teardown(test_key_filter_learns_writes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_key_filter_full_stops_answering, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_key_filter_no_then_written, setup, teardown),
        cmocka_unit_test_setup_teardown(test_key_filter_rebuilt_once_full, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_key_filter_renewal_after_a_drop, setup,
                                        teardown),
    };

    return cmocka_run_group_tests_name("store_rocks", tests, NULL, NULL);
}
