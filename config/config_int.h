/*
 * kdedup - configuration's private header: the types its parts share, and
 * what each part offers the others. Public API: config.h.
 *
 * File map, from the ground floor up (a file calls only files listed before
 * it):
 *   config_errors.c  errors: one line each, every error of a config found
 *                    in one pass; JSON paths
 *   config_env.c     interpolation (${VAR}, ${file:PATH}) and the secrets
 *                    it took: kd_config_redact, kd_config_template
 *   config_keys.c    a route's key and fingerprint, shapes a table cannot say
 *   config_rules.c   the rules that span keys, over what the tables parsed
 *
 * A config is parsed on the thread that calls kd_config_parse(); a parsed
 * one is read-only.
 */
#ifndef KD_CONFIG_INT_H
#define KD_CONFIG_INT_H

#include "config/config.h"

#include <cjson/cJSON.h>

#include <stdbool.h>
#include <stddef.h>

#define MAX_PATH 256 /* bytes of a JSON path in an error, with its NUL */

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
 * Errors (config_errors.c).
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
 * Rules that span keys (config_rules.c).
 */

/* Checks the rules that span keys, each over what parsed (a route whose own
 * keys failed is skipped); every error found. Returns whether all held. */
bool kd_cfg_validate(ctx *c, const kd_config *cfg);

#endif
