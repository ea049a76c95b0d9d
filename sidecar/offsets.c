/*
 * kdedup - offset tracking (see offsets.h): per partition, a ring of the
 * consumed offsets in order, each with a done flag; done entries leave from
 * the front.
 */
#include "sidecar/offsets.h"

#include <stdlib.h>
#include <string.h>

typedef struct part {
    bool assigned;
    uint64_t owner; /* this ownership's id; 0 when not assigned */
    int64_t *offs;  /* ring, increasing from head */
    bool *done;
    size_t head, count, cap;
    size_t undone;    /* entries not yet done (count includes done ones behind) */
    int64_t last;     /* highest offset tracked, -1 before any */
    int64_t reported; /* commit point last given to kd_offsets_each_moved() */
    bool flag;        /* the caller's (kd_offsets_set_flag) */
} part;

typedef struct topic {
    part **parts; /* by partition number */
    size_t nparts;
} topic;

struct kd_offsets {
    topic *topics;
    size_t ntopics;
    uint64_t last_owner; /* the latest ownership id given out */
};

kd_offsets *kd_offsets_new(size_t nroutes) {
    kd_offsets *o = calloc(1, sizeof(*o));

    if (!o || !(o->topics = calloc(nroutes ? nroutes : 1, sizeof(*o->topics)))) {
        free(o);
        return NULL;
    }
    o->ntopics = nroutes;
    return o;
}

static void part_free(part *p) {
    if (!p)
        return;
    free(p->offs);
    free(p->done);
    free(p);
}

void kd_offsets_destroy(kd_offsets *o) {
    if (!o)
        return;
    for (size_t t = 0; t < o->ntopics; t++) {
        for (size_t i = 0; i < o->topics[t].nparts; i++)
            part_free(o->topics[t].parts[i]);
        free(o->topics[t].parts);
    }
    free(o->topics);
    free(o);
}

static part *find(const kd_offsets *o, size_t route, int32_t partition) {
    const topic *t;

    if (route >= o->ntopics || partition < 0)
        return NULL;
    t = &o->topics[route];
    return (size_t)partition < t->nparts ? t->parts[partition] : NULL;
}

static part *find_assigned(const kd_offsets *o, size_t route, int32_t partition) {
    part *p = find(o, route, partition);

    return p && p->assigned ? p : NULL;
}

bool kd_offsets_assign(kd_offsets *o, size_t route, int32_t partition) {
    topic *t;
    part *p;

    if (route >= o->ntopics || partition < 0)
        return false;
    t = &o->topics[route];
    if ((size_t)partition >= t->nparts) {
        size_t n = (size_t)partition + 1;
        part **parts = realloc(t->parts, n * sizeof(*parts));

        if (!parts)
            return false;
        memset(parts + t->nparts, 0, (n - t->nparts) * sizeof(*parts));
        t->parts = parts;
        t->nparts = n;
    }
    if (!(p = t->parts[partition]) && !(p = t->parts[partition] = calloc(1, sizeof(*p))))
        return false;
    p->assigned = true;
    p->owner = ++o->last_owner;
    p->head = p->count = p->undone = 0;
    p->last = -1;
    p->reported = -1;
    p->flag = false;
    return true;
}

void kd_offsets_revoke(kd_offsets *o, size_t route, int32_t partition) {
    part *p = find(o, route, partition);

    if (p) {
        p->assigned = false;
        p->owner = 0;
        p->head = p->count = p->undone = 0;
        p->flag = false;
        if (p->cap > 1024) { /* a long ring goes with its ownership */
            free(p->offs);
            free(p->done);
            p->offs = NULL;
            p->done = NULL;
            p->cap = 0;
        }
    }
}

bool kd_offsets_assigned(const kd_offsets *o, size_t route, int32_t partition) {
    return find_assigned(o, route, partition) != NULL;
}

uint64_t kd_offsets_owner(const kd_offsets *o, size_t route, int32_t partition) {
    const part *p = find_assigned(o, route, partition);

    return p ? p->owner : 0;
}

static bool grow(part *p) {
    size_t cap = p->cap ? p->cap * 2 : 64;
    int64_t *offs = malloc(cap * sizeof(*offs));
    bool *done = malloc(cap * sizeof(*done));

    if (!offs || !done) {
        free(offs);
        free(done);
        return false;
    }
    for (size_t i = 0; i < p->count; i++) {
        offs[i] = p->offs[(p->head + i) % p->cap];
        done[i] = p->done[(p->head + i) % p->cap];
    }
    free(p->offs);
    free(p->done);
    p->offs = offs;
    p->done = done;
    p->head = 0;
    p->cap = cap;
    return true;
}

kd_track kd_offsets_track(kd_offsets *o, size_t route, int32_t partition,
                          int64_t offset) {
    part *p = find_assigned(o, route, partition);
    size_t at;

    if (!p)
        return KD_NOT_ASSIGNED;
    if (offset <= p->last)
        return KD_NOT_NEWER;
    if (p->count == p->cap && !grow(p))
        return KD_TRACK_NOMEM;
    at = (p->head + p->count) % p->cap;
    p->offs[at] = offset;
    p->done[at] = false;
    p->count++;
    p->undone++;
    p->last = offset;
    return KD_TRACKED;
}

void kd_offsets_done(kd_offsets *o, size_t route, int32_t partition, uint64_t owner,
                     int64_t offset) {
    part *p = find_assigned(o, route, partition);
    size_t lo = 0, hi;

    if (!p || p->owner != owner)
        return; /* an ended ownership's message: the offset is not ours */
    hi = p->count;
    while (lo < hi) { /* first index whose offset is >= offset */
        size_t mid = lo + (hi - lo) / 2;

        if (p->offs[(p->head + mid) % p->cap] < offset)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (lo == p->count || p->offs[(p->head + lo) % p->cap] != offset ||
        p->done[(p->head + lo) % p->cap])
        return;
    p->done[(p->head + lo) % p->cap] = true;
    p->undone--;
    while (p->count && p->done[p->head]) {
        p->head = (p->head + 1) % p->cap;
        p->count--;
    }
}

bool kd_offsets_commit_point(const kd_offsets *o, size_t route, int32_t partition,
                             int64_t *offset) {
    const part *p = find_assigned(o, route, partition);

    if (!p || p->last < 0)
        return false;
    *offset = p->count ? p->offs[p->head] : p->last + 1;
    return true;
}

bool kd_offsets_commit_point_with(const kd_offsets *o, size_t route, int32_t partition,
                                  uint64_t owner, const int64_t *extra, size_t n,
                                  int64_t *offset) {
    const part *p = find_assigned(o, route, partition);
    size_t i = 0, j = 0;

    if (!p || p->last < 0)
        return false;
    if (p->owner != owner)
        n = 0; /* an ended ownership's offsets are not ours */
    for (; i < p->count; i++) {
        size_t at = (p->head + i) % p->cap;

        if (p->done[at])
            continue;
        while (j < n && extra[j] < p->offs[at])
            j++;
        if (j == n || extra[j] != p->offs[at])
            break;
    }
    *offset = i < p->count ? p->offs[(p->head + i) % p->cap] : p->last + 1;
    return true;
}

size_t kd_offsets_pending(const kd_offsets *o, size_t route, int32_t partition) {
    const part *p = find_assigned(o, route, partition);

    return p ? p->undone : 0;
}

size_t kd_offsets_pending_total(const kd_offsets *o) {
    size_t n = 0;

    for (size_t t = 0; t < o->ntopics; t++)
        for (size_t i = 0; i < o->topics[t].nparts; i++)
            if (o->topics[t].parts[i] && o->topics[t].parts[i]->assigned)
                n += o->topics[t].parts[i]->undone;
    return n;
}

void kd_offsets_each_moved(kd_offsets *o,
                           void (*fn)(void *arg, size_t route, int32_t partition,
                                      int64_t offset),
                           void *arg) {
    for (size_t t = 0; t < o->ntopics; t++)
        for (size_t i = 0; i < o->topics[t].nparts; i++) {
            part *p = o->topics[t].parts[i];
            int64_t at;

            if (!p || !kd_offsets_commit_point(o, t, (int32_t)i, &at) ||
                at == p->reported)
                continue;
            p->reported = at;
            fn(arg, t, (int32_t)i, at);
        }
}

size_t kd_offsets_span(const kd_offsets *o, size_t route, int32_t partition) {
    const part *p = find_assigned(o, route, partition);

    return p ? p->count : 0;
}

size_t kd_offsets_span_total(const kd_offsets *o) {
    size_t n = 0;

    for (size_t t = 0; t < o->ntopics; t++)
        for (size_t i = 0; i < o->topics[t].nparts; i++)
            if (o->topics[t].parts[i] && o->topics[t].parts[i]->assigned)
                n += o->topics[t].parts[i]->count;
    return n;
}

void kd_offsets_each_assigned(kd_offsets *o,
                              void (*fn)(void *arg, size_t route, int32_t partition),
                              void *arg) {
    for (size_t t = 0; t < o->ntopics; t++)
        for (size_t i = 0; i < o->topics[t].nparts; i++)
            if (o->topics[t].parts[i] && o->topics[t].parts[i]->assigned)
                fn(arg, t, (int32_t)i);
}

void kd_offsets_set_flag(kd_offsets *o, size_t route, int32_t partition, bool flag) {
    part *p = find_assigned(o, route, partition);

    if (p)
        p->flag = flag;
}

bool kd_offsets_flag(const kd_offsets *o, size_t route, int32_t partition) {
    const part *p = find_assigned(o, route, partition);

    return p && p->flag;
}
