/*
 * kdedup tests - store fixtures (see dedup_fixture.h).
 */
#define _XOPEN_SOURCE 700 /* nftw */
#include "tests/dedup_fixture.h"
#include "store_rocks/store_rocks.h"

#include <stdarg.h>
#include <setjmp.h>
#include <stddef.h>
#include <cmocka.h>

#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

void fx_tmpdir(char *buf, size_t size) {
    const char *tmp = getenv("TMPDIR");

    snprintf(buf, size, "%s/kdedup-test-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    assert_non_null(mkdtemp(buf));
}

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

void fx_rmtree(const char *path) {
    nftw(path, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

static void fx_open(fx *f) {
    char err[512];

    if (f->backend == FX_MEM) {
        f->store = kd_store_mem_new();
    } else {
        f->store = kd_rocks_open(f->dir, true, err, sizeof(err));
        if (!f->store)
            fail_msg("kd_rocks_open: %s", err);
    }
    assert_non_null(f->store);
    f->dedup = kd_dedup_new(f->store, "test");
    assert_non_null(f->dedup);
}

fx *fx_new(fx_backend backend) {
    fx *f = calloc(1, sizeof(*f));

    assert_non_null(f);
    f->backend = backend;
    if (backend == FX_ROCKS)
        fx_tmpdir(f->dir, sizeof(f->dir));
    fx_open(f);
    return f;
}

void fx_close(fx *f) {
    kd_dedup_destroy(f->dedup);
    kd_store_destroy(f->store);
    f->dedup = NULL;
    f->store = NULL;
}

void fx_reopen(fx *f) {
    assert_int_equal(f->backend, FX_ROCKS);
    fx_close(f);
    fx_open(f);
}

void fx_free(fx *f) {
    if (!f)
        return;
    fx_close(f);
    if (f->backend == FX_ROCKS)
        fx_rmtree(f->dir);
    free(f);
}

unsigned long long fx_stream_count(fx *f, const char *key) {
    char stream[256];
    size_t len =
        kd_dedup_stream_key_for(f->dedup, key, strlen(key), stream, sizeof(stream));
    uint64_t seq = 0;
    void *payload = NULL;
    size_t plen;
    bool found;

    assert_true(len < sizeof(stream));
    assert_int_equal(
        kd_store_read_last(f->store, stream, len, &seq, &payload, &plen, &found), KD_OK);
    free(payload);
    return found ? seq + 1 : 0;
}

/*
 * Wrapper stores: one struct, three behaviours.
 */

typedef struct wrap {
    kd_store *inner;
    fx_counts *counts;
    bool collide;
    void (*hook)(void *);
    void *hook_arg;
} wrap;

#define COLLIDE_STREAM "test:every-key-lands-here"

static void wrap_stream(const wrap *w, const char **stream, size_t *len) {
    if (w->collide) {
        *stream = COLLIDE_STREAM;
        *len = strlen(COLLIDE_STREAM);
    }
}

static void wrap_before_append(wrap *w) {
    void (*hook)(void *) = w->hook;

    w->hook = NULL;
    if (hook)
        hook(w->hook_arg);
}

static kd_err wrap_read_last(void *impl, const char *stream, size_t len, uint64_t *seq,
                             void **payload, size_t *plen, bool *found) {
    wrap *w = impl;

    if (w->counts)
        w->counts->read_last++;
    wrap_stream(w, &stream, &len);
    return kd_store_read_last(w->inner, stream, len, seq, payload, plen, found);
}

static kd_err wrap_append(void *impl, const char *stream, size_t len, uint64_t seq,
                          const void *payload, size_t plen) {
    wrap *w = impl;

    if (w->counts)
        w->counts->append++;
    wrap_before_append(w);
    wrap_stream(w, &stream, &len);
    return kd_store_append(w->inner, stream, len, seq, payload, plen);
}

static kd_err wrap_append_batch(void *impl, kd_append *items, size_t n) {
    wrap *w = impl;

    if (w->counts) {
        w->counts->append_batch++;
        w->counts->batch_items += (int)n;
    }
    wrap_before_append(w);
    for (size_t i = 0; i < n; i++)
        wrap_stream(w, &items[i].stream, &items[i].stream_len);
    return kd_store_append_batch(w->inner, items, n);
}

static void wrap_destroy(void *impl) {
    free(impl);
}

static const struct kd_store_ops wrap_ops = {
    .name = "test-wrapper",
    .read_last = wrap_read_last,
    .append = wrap_append,
    .destroy = wrap_destroy,
    .append_batch = wrap_append_batch,
};

static kd_store *wrap_new(wrap w) {
    wrap *p = malloc(sizeof(*p));
    kd_store *s;

    assert_non_null(p);
    *p = w;
    s = kd_store_new(&wrap_ops, p);
    assert_non_null(s);
    return s;
}

kd_store *fx_counting_store(kd_store *inner, fx_counts *counts) {
    memset(counts, 0, sizeof(*counts));
    return wrap_new((wrap){.inner = inner, .counts = counts});
}

kd_store *fx_colliding_store(kd_store *inner) {
    return wrap_new((wrap){.inner = inner, .collide = true});
}

kd_store *fx_racing_store(kd_store *inner, void (*hook)(void *), void *arg) {
    return wrap_new((wrap){.inner = inner, .hook = hook, .hook_arg = arg});
}
