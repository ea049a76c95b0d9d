/*
 * kdedup - opening and closing the RocksDB store: its directory, a secondary
 * open's own, the layout check, and the store ops (file map:
 * store_rocks_int.h).
 */
#include "store_rocks/store_rocks_int.h"
#include "dedup/store_int.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Removes dir and the files in it (a secondary open's own: its LOG files).
 * NULL-safe. */
static void remove_dir(const char *dir) {
    DIR *d = dir ? opendir(dir) : NULL;
    struct dirent *e;
    char file[4096];

    if (!d)
        return;
    while ((e = readdir(d)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..") &&
            snprintf(file, sizeof(file), "%s/%s", dir, e->d_name) < (int)sizeof(file))
            unlink(file);
    closedir(d);
    rmdir(dir);
}

static void rocks_destroy(void *impl) {
    rocks_store *r = impl;

    if (!r)
        return;
    kd_rocks_filter_destroy(&r->filter_keys); /* its builder reads the database */
    if (r->cf)
        rocksdb_column_family_handle_destroy(r->cf);
    if (r->db)
        rocksdb_close(r->db);
    if (r->opts)
        rocksdb_options_destroy(r->opts);
    if (r->table)
        rocksdb_block_based_options_destroy(r->table);
    if (r->cache)
        rocksdb_cache_destroy(r->cache);
    if (r->filter)
        rocksdb_compactionfilter_destroy(r->filter);
    if (r->wopts)
        rocksdb_writeoptions_destroy(r->wopts);
    if (r->lazy_wopts)
        rocksdb_writeoptions_destroy(r->lazy_wopts);
    if (r->ropts)
        rocksdb_readoptions_destroy(r->ropts);
    if (r->scan_opts)
        rocksdb_readoptions_destroy(r->scan_opts);
    for (size_t i = 0; i < STRIPES; i++)
        pthread_mutex_destroy(&r->stripes[i]);
    pthread_mutex_destroy(&r->err_lock);
    remove_dir(r->secondary);
    free(r->secondary);
    free(r->path);
    free(r);
}

const struct kd_store_ops kd_rocks_ops = {
    .name = "rocksdb",
    .read_last = kd_rocks_read_last,
    .append = kd_rocks_append,
    .destroy = rocks_destroy,
    .append_batch = kd_rocks_append_batch,
    .read_last_batch = kd_rocks_read_last_batch,
    .set_retention = kd_rocks_set_retention,
    .last_error = kd_rocks_last_error,
    .append_batch_lazy = kd_rocks_append_batch_lazy,
    .sync = kd_rocks_sync,
};

/* mkdir -p; false with errno set. */
static bool mkdir_p(const char *path) {
    char *p = strdup(path);
    bool ok = p != NULL;

    for (char *s = p ? p + 1 : NULL; ok && s && *s; s++) {
        if (*s != '/')
            continue;
        *s = '\0';
        ok = mkdir(p, 0750) == 0 || errno == EEXIST;
        *s = '/';
    }
    ok = ok && (mkdir(path, 0750) == 0 || errno == EEXIST);
    free(p);
    return ok;
}

/* Names the cause of a failed rocksdb_open in words an operator acts on. */
static const char *open_cause(const char *msg) {
    if (strstr(msg, "lock"))
        return "the database is locked: another process (or another handle in this "
               "one) has it open";
    if (strstr(msg, "Corruption") || strstr(msg, "corrupt"))
        return "the database files are corrupt";
    if (strstr(msg, "Permission denied"))
        return "permission denied";
    if (strstr(msg, "No space"))
        return "no space left on the device";
    return "cannot open the database";
}

/* True if the database holds a record of the first layout. */
static bool has_layout_v1(rocks_store *r) {
    rocksdb_iterator_t *it = rocksdb_create_iterator(r->db, r->scan_opts);
    const char prefix = PREFIX_HEAD_V1;
    bool found = false;

    rocksdb_iter_seek(it, &prefix, 1);
    if (rocksdb_iter_valid(it)) {
        size_t klen;
        const char *key = rocksdb_iter_key(it, &klen);

        found = klen >= 1 && key[0] == PREFIX_HEAD_V1;
    }
    rocksdb_iter_destroy(it);
    return found;
}

kd_store *kd_rocks_open(const char *path, bool sync, char *errstr, size_t errstr_size) {
    kd_rocks_options o = KD_ROCKS_OPTIONS_DEFAULT;

    o.sync = sync;
    return kd_rocks_open_with(path, &o, errstr, errstr_size);
}

/* A directory of its own for a secondary open, under $TMPDIR (else /tmp):
 * malloc()ed, or NULL with errstr set. */
static char *secondary_dir(const char *path, char *errstr, size_t errstr_size) {
    const char *tmp = getenv("TMPDIR") && *getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
    size_t len = strlen(tmp) + sizeof("/kdedup-secondary-XXXXXX");
    char *dir = malloc(len);

    if (!dir) {
        snprintf(errstr, errstr_size, "store \"%s\": out of memory", path);
        return NULL;
    }
    snprintf(dir, len, "%s/kdedup-secondary-XXXXXX", tmp);
    if (!mkdtemp(dir)) {
        snprintf(errstr, errstr_size,
                 "store \"%s\": cannot create a directory in %s for a read-only open: %s "
                 "(set TMPDIR to a writable directory)",
                 path, tmp, strerror(errno));
        free(dir);
        return NULL;
    }
    return dir;
}

/* Opens the store; secondary: as a RocksDB secondary instance (read-only,
 * beside a live primary, not created when missing). */
static kd_store *rocks_open(const char *path, const kd_rocks_options *opts,
                            bool secondary, char *errstr, size_t errstr_size) {
    kd_rocks_options defaults = KD_ROCKS_OPTIONS_DEFAULT;
    rocks_store *r;
    char *err = NULL;

    if (!path || !*path) {
        snprintf(errstr, errstr_size, "store: no path given");
        return NULL;
    }
    if (secondary && access(path, R_OK | X_OK) != 0) {
        snprintf(errstr, errstr_size, "store \"%s\": cannot read the directory: %s", path,
                 strerror(errno));
        return NULL;
    }
    if (!secondary && !mkdir_p(path)) {
        snprintf(errstr, errstr_size, "store \"%s\": cannot create the directory: %s",
                 path, strerror(errno));
        return NULL;
    }
    if (!secondary && access(path, R_OK | W_OK | X_OK) != 0) {
        snprintf(errstr, errstr_size, "store \"%s\": cannot use the directory: %s", path,
                 strerror(errno));
        return NULL;
    }
    if (!(r = calloc(1, sizeof(*r)))) {
        snprintf(errstr, errstr_size, "store \"%s\": out of memory", path);
        return NULL;
    }
    pthread_mutex_init(&r->err_lock, NULL);
    for (size_t i = 0; i < STRIPES; i++)
        pthread_mutex_init(&r->stripes[i], NULL);
    for (size_t i = 0; i < VERSIONS; i++)
        atomic_init(&r->versions[i], 1);
    if (!opts)
        opts = &defaults;
    if (!(r->path = strdup(path)) || !kd_rocks_configure(r, opts) ||
        !kd_rocks_filter_init(&r->filter_keys, secondary ? 0 : opts->key_filter_bytes,
                              opts->key_filter_renew_records)) {
        snprintf(errstr, errstr_size, "store \"%s\": out of memory", path);
        goto fail;
    }
    const char *cf_names[] = {"default"};
    const rocksdb_options_t *cf_opts[] = {r->opts};

    if (secondary) {
        if (!(r->secondary = secondary_dir(path, errstr, errstr_size)))
            goto fail;
        /* A secondary keeps every table file open: the primary's
         * compactions may delete them while it reads. */
        rocksdb_options_set_max_open_files(r->opts, -1);
        rocksdb_options_set_create_if_missing(r->opts, 0);
        r->db = rocksdb_open_as_secondary_column_families(
            r->opts, path, r->secondary, 1, cf_names, cf_opts, &r->cf, &err);
    } else {
        r->db = rocksdb_open_column_families(r->opts, path, 1, cf_names, cf_opts, &r->cf,
                                             &err);
    }
    if (err) {
        r->cf = NULL;
        snprintf(errstr, errstr_size, "store \"%s\": %s (%s)", path, open_cause(err),
                 err);
        rocksdb_free(err);
        goto fail;
    }
    if (has_layout_v1(r)) {
        snprintf(errstr, errstr_size,
                 "store \"%s\": written by an older kdedup (record layout 1); this one "
                 "reads layout 2 and would miss every key in it: move the directory "
                 "aside (its keys are then forgotten) or run the older version",
                 path);
        goto fail;
    }
    kd_rocks_filter_start(r);
    return kd_store_new(&kd_rocks_ops, r);
fail:
    rocks_destroy(r);
    return NULL;
}

kd_store *kd_rocks_open_with(const char *path, const kd_rocks_options *opts, char *errstr,
                             size_t errstr_size) {
    return rocks_open(path, opts, false, errstr, errstr_size);
}

kd_store *kd_rocks_open_secondary(const char *path, char *errstr, size_t errstr_size) {
    kd_rocks_options o = KD_ROCKS_OPTIONS_DEFAULT;

    /* It reads a few keys: a small cache, one small memtable for the WAL. */
    o.block_cache_bytes = 8u << 20;
    o.write_buffer_bytes = 4u << 20;
    return rocks_open(path, &o, true, errstr, errstr_size);
}
