/*
 * kdedup tests - what test_store_rocks.c and its parts share: the count of
 * disk syncs, a case's store, a key's state asserted, a child process.
 */
#ifndef KD_TEST_STORE_ROCKS_FIXTURE_H
#define KD_TEST_STORE_ROCKS_FIXTURE_H

#include "dedup/dedup.h"
#include "store_rocks/store_rocks.h"
#include "tests/dedup_fixture.h"

#include <stdarg.h>
#include <setjmp.h>
#include <stddef.h>
#include <cmocka.h>

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#define K(s) (s), strlen(s)

/* Every fdatasync() and fsync() of this process, RocksDB's included
 * (test_store_rocks.c defines both). */
extern atomic_ulong disk_syncs;

/* The wall clock in ms. */
uint64_t wall_ms(void);
/* Asserts key's state in d: found or not, and when found, want. */
void assert_state(kd_dedup *d, const char *key, bool want_found, kd_state want);
/* Runs fn(arg) in a forked child and returns its result. The child reports
 * through a pipe and dies by SIGKILL, so that it never runs exit handlers
 * or leak checks on the state it inherited. */
int in_child(int (*fn)(void *), void *arg);

/* test_store_rocks_durability.c */
void test_retention_compaction(void **state);
void test_kill9_keeps_synced_appends(void **state);
void test_synced_appends_reach_the_disk(void **state);
void test_lazy_writes_made_durable(void **state);
void test_batch_append_per_item(void **state);
void test_batch_read_per_item(void **state);
void test_small_memory_bounds(void **state);

/* test_store_rocks_filter.c */
/* Waits, at most 30 s, until s's key filter answers. */
void wait_key_filter_ready(kd_store *s);
void test_key_filter_rebuilt_once_full(void **state);
void test_key_filter_renewal_after_a_drop(void **state);
void test_key_filter_built_at_open(void **state);
void test_key_filter_learns_writes(void **state);
void test_key_filter_full_stops_answering(void **state);
void test_key_filter_no_then_written(void **state);

#endif /* KD_TEST_STORE_ROCKS_FIXTURE_H */
