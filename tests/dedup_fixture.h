/*
 * kdedup tests - store fixtures shared by the dedup and RocksDB tests: a
 * fresh store per test on either backend, and wrapper stores that count,
 * collide or interleave a competitor's writes.
 */
#ifndef KD_TEST_DEDUP_FIXTURE_H
#define KD_TEST_DEDUP_FIXTURE_H

#include "dedup/dedup.h"
#include "dedup/store.h"

#include <stdbool.h>
#include <stddef.h>

typedef enum fx_backend { FX_MEM, FX_ROCKS } fx_backend;

typedef struct fx {
    fx_backend backend;
    char dir[256];   /* FX_ROCKS: the temporary store directory */
    kd_store *store; /* the backend store */
    kd_dedup *dedup; /* namespace "test" over store */
} fx;

/* Creates a fresh fixture on backend; asserts on failure. */
fx *fx_new(fx_backend backend);
/* Destroys the fixture and removes its directory. */
void fx_free(fx *f);
/* Closes the fixture's dedup and store (NULL afterwards), keeping its
 * directory. */
void fx_close(fx *f);
/* (Re)opens a FX_ROCKS fixture's store in the same directory, closing it
 * first if it is open. */
void fx_reopen(fx *f);

/* A temporary directory (mkdtemp) under $TMPDIR or /tmp; asserts. */
void fx_tmpdir(char *buf, size_t size);
/* rm -rf path. */
void fx_rmtree(const char *path);

/* Wrapper stores. Each takes a borrowed inner store (not destroyed). */

/* Counts calls to the inner store's ops. */
typedef struct fx_counts {
    int read_last, append, append_batch, batch_items;
} fx_counts;
kd_store *fx_counting_store(kd_store *inner, fx_counts *counts);

/* Maps every stream key to one stream, so any two keys collide. */
kd_store *fx_colliding_store(kd_store *inner);

/* Runs hook(arg) once, just before the first append (single or batch)
 * reaches the inner store: a competitor winning the race. */
kd_store *fx_racing_store(kd_store *inner, void (*hook)(void *), void *arg);

/* Number of entries in key's stream of f->dedup (0 when empty). */
unsigned long long fx_stream_count(fx *f, const char *key);

#endif /* KD_TEST_DEDUP_FIXTURE_H */
