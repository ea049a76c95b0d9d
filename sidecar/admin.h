/*
 * kdedup - the admin API: a listener of its own (admin.listen, default
 * 127.0.0.1:9465), served by kd_http (same bounds on connections, request
 * size and time as the metrics listener), started only when admin.token is
 * set. Every request carries `Authorization: Bearer <admin.token>`
 * (compared in constant time); otherwise 401 with no detail.
 *
 *   GET    /v1/routes              the routes in force (JSON, no secrets)
 *   GET    /v1/keys/{route}/{key}  the key's state in the route named {route}
 *   DELETE /v1/keys/{route}/{key}  forget a completed key (?force=true also
 *                                  an in-flight claim of another run); a
 *                                  completed key's forget is first written
 *                                  downstream beside its delivery (a forget
 *                                  record, forgets.h), so that the next
 *                                  owner of its partition honours it too
 *   POST   /v1/reload              reload the config file (as SIGHUP)
 *
 * {route} (a route's name: its "name", else its "from") and {key} are
 * percent-encoded (a key may hold any bytes, NUL
 * too, up to dedup.max_key_bytes). Reads and forgets go through the dedup
 * contract (dedup.h) on the store the pipeline uses, from the HTTP thread,
 * while the pipeline runs: a forget appends a tombstone only as the entry
 * after the one it judged, so it never overwrites a claim or a receipt
 * that came between (409, ask again). Each request writes one audit log
 * line: action, route, key digest (SHA-256, as in the stream key), result,
 * client address; never the token or the key itself.
 */
#ifndef KD_ADMIN_H
#define KD_ADMIN_H

#include "dedup/store.h"
#include "sidecar/forgets.h"
#include "sidecar/reload.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct kd_admin kd_admin;

/* What the API works on: the store (borrowed), the reloads (borrowed; its
 * current config names the routes), whether an owner id is a claim of
 * this process (never forced), the live pipeline's owner id (its claims do
 * not expire for it, nor for the API: kd_dedup_set_owner; NULL or 0: none),
 * and how a forget record is written
 * downstream (kd_forgets_write(), with the brokers; NULL: forgets stay in
 * this store): true with the record's offset, or false with the reason. */
typedef struct kd_admin_env {
    kd_store *store;
    kd_reload *reload;
    bool (*ours)(void *arg, uint64_t owner);
    uint64_t (*live_owner)(void *arg);
    bool (*record)(void *arg, const kd_config *cfg, const kd_forget_record *f,
                   int64_t *offset, char *errstr, size_t errstr_size);
    void *arg;
} kd_admin_env;

/* Listens on listen ("host:port") with token (copied). env is copied.
 * Returns the server, or NULL with the reason in errstr. */
kd_admin *kd_admin_start(const char *listen, const char *token, const kd_admin_env *env,
                         char *errstr, size_t errstr_size);

/* The port it listens on. */
int kd_admin_port(const kd_admin *a);

/* Stops the server, wipes its token and frees it. NULL-safe. */
void kd_admin_stop(kd_admin *a);

/* True when the Authorization header value is "Bearer <token>" (the
 * scheme case-insensitive). Takes the same time for any header of a given
 * length: both sides are hashed and the digests compared in constant time.
 * header may be NULL (false). */
bool kd_admin_authorized(const char *header, const char *token);

/* Percent-decodes s in place (libmicrohttpd's decoder: %HH, anything else
 * kept as is). Returns the decoded length; the bytes may include NUL. */
size_t kd_admin_decode(char *s);

/* Splits a path "/v1/keys/{route}/{key}" (as sent) into its decoded parts,
 * malloc()ed (the caller frees both). False when the path is not of that
 * form or from is empty or holds a NUL. *key_len may be 0. */
bool kd_admin_key_path(const char *path, char **from, char **key, size_t *key_len);

#endif /* KD_ADMIN_H */
