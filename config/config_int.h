/*
 * kdedup - configuration's private header: the types its parts share, and
 * what each part offers the others. Public API: config.h.
 *
 * File map, from the ground floor up (a file calls only files listed before
 * it):
 *   config.c         errors: one line each, every error of a config found
 *                    in one pass; JSON paths
 *   config_env.c     interpolation (${VAR}, ${file:PATH}) and the secrets
 *                    it took: kd_config_redact, kd_config_template
 *   config_fields.c  the tables: one row per key (type, default, bounds, doc)
 *   config_keys.c    a route's key and fingerprint, shapes a table cannot say
 *   config_tables.c  the one generic pass that applies a table to an object,
 *                    and the scalars it checks
 *   config_rules.c   the rules that span keys, over what the tables parsed
 *   config_reload.c  reloads: what differs between two configs
 *                    (kd_config_diff_of); the routes as JSON
 *   config_load.c    the entry points: kd_config_load, _parse, _destroy
 */
#ifndef KD_CONFIG_INT_H
#define KD_CONFIG_INT_H

#include "config/config.h"

#include <cjson/cJSON.h>

#include <stdbool.h>
#include <stddef.h>

#define MAX_PATH 256 /* bytes of a JSON path (parent.key[i]), with its NUL */

/* Every secret the environment or a file gave (ref is "${NAME}" or
 * "${file:PATH}"), longest first once parsed, and the JSON paths whose
 * values hold anything from there, with their text as written in the file. */
typedef struct secret {
    char *ref;
    char *value;
} secret;

typedef struct origin {
    char *path;
    char *text;
} origin;

struct kd_config_env {
    secret *secrets;
    size_t nsecrets;
    origin *origins;
    size_t norigins;
    size_t expanded; /* bytes the environment and files added, in total */
    /* KD_CONFIG_OFFLINE: the paths whose ${...} was not there (unset, or
     * an unreadable file), kept as written and not checked. */
    char **unresolved;
    size_t nunresolved;
    /* For kd_config_diff(): the file's JSON as written, split into the
     * routes and the rest less what a reload may change. */
    cJSON *routes;
    cJSON *fixed;
};

/* The type of a table's field: how its value is parsed and checked. */
typedef enum ftype {
    F_STRING, /* non-empty string */
    F_TOPIC,  /* Kafka topic name */
    F_NAME,   /* a route's name: as a topic name is spelt */
    F_BOOL,
    F_INT,         /* integer within [min, max] */
    F_DURATION,    /* "250ms" | "30s" | "5m" | "24h", within [min, max] ms */
    F_ENUM,        /* one of names[], stored as int */
    F_BROKERS,     /* "host:port,..." or "mock:N" */
    F_LISTEN,      /* "host:port" */
    F_PROPS,       /* object of librdkafka properties */
    F_OBJECT,      /* nested object filling the same struct */
    F_KEY,         /* a route's "key": {"from": ...} (kd_route) */
    F_FINGERPRINT, /* a route's "fingerprint": true, false or {"headers": [...]} */
    F_ROUTES       /* the array of routes */
} ftype;

/* One row of a table: a key of a JSON object, and where its value goes. */
typedef struct field {
    const char *key;
    ftype type;
    size_t offset;            /* into the struct this table fills */
    const char *def;          /* default as text; NULL: required unless optional */
    bool optional;            /* may be absent, no default (NULL / untouched) */
    int64_t min, max;         /* F_INT, F_DURATION (ms) */
    const char *const *names; /* F_ENUM; F_DURATION: off_names when "off" is 0 */
    const struct field *sub;  /* F_OBJECT, F_ROUTES: the fields of the element */
    const char *doc;
} field;

/* One parse: where its errors go, and what it found so far. */
typedef struct ctx {
    const char *file;
    char *errstr;
    size_t errstr_size;
    kd_config_env *env; /* what ${...} took so far */
    unsigned flags;     /* KD_CONFIG_OFFLINE, ... */
    int errors;         /* found so far: one line each in errstr */
    int dropped;        /* errors past MAX_ERRORS, or that did not fit */
    bool *route_bad;    /* routes whose own keys failed: no cross-key rules */
} ctx;

/*
 * Errors (config.c).
 */

/* Adds one error, a line of c's errstr ("file: path: message"); every error
 * of a config is found in one pass. Returns false. */
__attribute__((format(printf, 3, 4))) bool kd_cfg_fail(ctx *c, const char *path,
                                                       const char *fmt, ...);
/* Closes the list of errors: how many more there were. */
void kd_cfg_fail_done(ctx *c);
/* Fails with "expected <expected>, got <v as written>" (a secret not shown). */
bool kd_cfg_fail_value(ctx *c, const char *path, const cJSON *v, const char *expected);
/* Formats a JSON path into out (MAX_PATH bytes), cut short with "..." past it. */
__attribute__((format(printf, 2, 3))) void kd_cfg_path_fmt(char *out, const char *fmt,
                                                           ...);
/* out = parent.key (or key at the top), as kd_cfg_path_fmt. */
void kd_cfg_path_key(char *out, const char *parent, const char *key);

/*
 * Interpolation and secrets (config_env.c).
 */

/* Frees env and all it holds; NULL is fine. */
void kd_cfg_env_destroy(kd_config_env *env);
/* Whether path's value held a ${...} that was not there (offline only). */
bool kd_cfg_env_is_unresolved(const kd_config_env *env, const char *path);
/* path's value as written in the file when ${...} took any of it, else NULL. */
const char *kd_cfg_env_template(const kd_config_env *env, const char *path);
/* The text of a string value, interpolated, or of a number or bool;
 * malloc()ed, NULL with the error set (kind names what was expected). */
char *kd_cfg_scalar_text(ctx *c, const char *path, const cJSON *v, const char *kind);
/* Orders env's secrets longest first, for kd_config_redact(). */
void kd_cfg_sort_secrets(kd_config_env *env);

/*
 * The tables (config_fields.c).
 */

/* The keys of the config's top object; routes' rows are in kd_cfg_route_fields. */
extern const field kd_cfg_top_fields[];
/* The keys of a route. */
extern const field kd_cfg_route_fields[];

/*
 * A route's key and fingerprint (config_keys.c).
 */

/* The names of kd_key_from, as the config writes them; NULL-terminated. */
extern const char *const kd_cfg_key_from_names[];
/* Parses a route's "key" (v) into r's key_from and key_parts. */
bool kd_cfg_parse_key(ctx *c, const cJSON *v, kd_route *r, const char *path);
/* Parses a route's "fingerprint" (v): true, false or {"headers", "json"}. */
bool kd_cfg_parse_fingerprint(ctx *c, const cJSON *v, kd_route *r, const char *path);
/* After a route's table (obj as written): the key's default and shorthand,
 * the fingerprint's default. */
bool kd_cfg_finish_route(ctx *c, const cJSON *obj, kd_route *r, const char *path);

/*
 * The generic pass (config_tables.c).
 */

/* Applies fields to obj, filling base; every error is recorded, and the keys
 * after it are parsed all the same. Returns whether all parsed. */
bool kd_cfg_parse_object(ctx *c, const cJSON *obj, const field *fields, void *base,
                         const char *path);

/*
 * Rules that span keys (config_rules.c).
 */

/* Checks the rules that span keys, each over what parsed (a route whose own
 * keys failed is skipped); every error found. Returns whether all held. */
bool kd_cfg_validate(ctx *c, const kd_config *cfg);

/*
 * Reloads (config_reload.c).
 */

/* Keeps in env what kd_config_diff_of() compares: root's routes, and the
 * rest of root less the keys a reload may change. False when out of memory. */
bool kd_cfg_keep_for_diff(kd_config_env *env, const cJSON *root);

#endif
