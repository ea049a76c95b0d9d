/*
 * kdedup - the admin API (see admin.h).
 */
#include "dedup/hex.h"
#include "dedup/sha256.h"
#include "sidecar/admin.h"
#include "dedup/dedup.h"
#include "sidecar/clock.h"
#include "sidecar/http.h"
#include "sidecar/keysrc.h"
#include "sidecar/log.h"
#include "sidecar/receipt.h"

#include <cjson/cJSON.h>
#include <microhttpd.h>
#include <openssl/crypto.h>

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define KEYS_PREFIX "/v1/keys/"

struct kd_admin {
    kd_http *http;
    kd_admin_env env;
    char *token;
};

/*
 * Pieces a test can check alone.
 */

bool kd_admin_authorized(const char *header, const char *token) {
    unsigned char got[KD_SHA256_LEN], want[KD_SHA256_LEN];
    const char *sent;

    if (!header || !token || strncasecmp(header, "Bearer ", 7) != 0)
        return false;
    for (sent = header + 7; *sent == ' '; sent++)
        ;
    /* libcrypto failing (both digests zeroed) authorizes nothing */
    return kd_sha256(sent, strlen(sent), got) && kd_sha256(token, strlen(token), want) &&
           CRYPTO_memcmp(got, want, sizeof(got)) == 0;
}

size_t kd_admin_decode(char *s) {
    return MHD_http_unescape(s);
}

bool kd_admin_key_path(const char *path, char **from, char **key, size_t *key_len) {
    const char *slash;
    size_t from_len;

    *from = *key = NULL;
    *key_len = 0;
    if (strncmp(path, KEYS_PREFIX, strlen(KEYS_PREFIX)) != 0)
        return false;
    path += strlen(KEYS_PREFIX);
    if (!(slash = strchr(path, '/')) || slash == path)
        return false;
    *from = strndup(path, (size_t)(slash - path));
    *key = strdup(slash + 1); /* the rest: a raw '/' in a key is taken as sent */
    if (!*from || !*key)
        goto fail;
    from_len = kd_admin_decode(*from);
    if (from_len == 0 || strlen(*from) != from_len)
        goto fail;
    *key_len = kd_admin_decode(*key);
    return true;
fail:
    free(*from);
    free(*key);
    *from = *key = NULL;
    return false;
}

/*
 * Answers.
 */

static void reply_json(kd_http_reply *out, unsigned status, cJSON *o) {
    out->status = status;
    out->body = o ? cJSON_PrintUnformatted(o) : NULL;
    out->len = out->body ? strlen(out->body) : 0;
    cJSON_Delete(o);
}

static void reply_error(kd_http_reply *out, unsigned status, const char *msg) {
    cJSON *o = cJSON_CreateObject();

    if (o)
        cJSON_AddStringToObject(o, "error", msg);
    reply_json(out, status, o);
}

/* Denied requests come at whatever rate a client sends them: their audit
 * lines are rate-limited (every other request is always written). */
static kd_log_limit denied_log = KD_LOG_LIMIT_INIT;

/* One audit line: never the token, never the key (its digest). */
static void audit(const kd_http_request *req, const char *action, const char *route,
                  const char *key, size_t key_len, unsigned status, const char *result) {
    unsigned char digest[KD_SHA256_LEN];
    char hex[2 * KD_SHA256_LEN + 1] = "", code[8], left[24];
    uint64_t left_out = 0;
    const char *fields[] = {
        "audit",      "admin",     "action",   action, "route",  route ? route : "",
        "key_sha256", hex,         "status",   code,   "result", result,
        "client",     req->client, "left_out", left,   NULL};

    if (status == 401 && !kd_log_limit_pass(&denied_log, kd_mono_ms(), &left_out))
        return;
    if (!left_out)
        fields[14] = NULL;
    snprintf(left, sizeof(left), "%llu", (unsigned long long)left_out);
    if (key) {
        kd_sha256(key, key_len, digest);
        kd_hex(digest, sizeof(digest), hex);
    }
    snprintf(code, sizeof(code), "%u", status);
    /* Written whatever log.level says: an audit trail has no level. */
    kd_log_write(status < 400 ? KD_LOG_INFO : KD_LOG_WARN, fields, "admin: %s %s", action,
                 result);
}

/* The route named `from` (its name: "name", else its source topic) in the
 * config in force, or NULL. */
static const kd_route *find_route(const kd_config *cfg, const char *from) {
    for (size_t i = 0; i < cfg->nroutes; i++)
        if (!strcmp(cfg->routes[i].name, from))
            return &cfg->routes[i];
    return NULL;
}

/* A dedup cache for the route, as the pipeline makes it: with its
 * retention, and the live pipeline's owner id, so that a claim of that
 * pipeline past inflight_timeout reads in flight here too, as it is. */
static kd_dedup *route_dedup(kd_admin *a, const kd_config *cfg, const kd_route *r) {
    size_t len = strlen(cfg->ns) + 1 + strlen(r->from) + 1;
    char *ns = malloc(len);
    kd_dedup *d;

    if (!ns)
        return NULL;
    snprintf(ns, len, "%s:%s", cfg->ns, r->from);
    if ((d = kd_dedup_new(a->env.store, ns))) {
        kd_dedup_set_retention(d, cfg->ttl_ms, cfg->inflight_timeout_ms);
        if (a->env.live_owner)
            kd_dedup_set_owner(d, a->env.live_owner(a->env.arg));
    }
    free(ns);
    return d;
}

static bool ours(kd_admin *a, uint64_t owner) {
    return owner && a->env.ours && a->env.ours(a->env.arg, owner);
}

static bool protect(void *arg, uint64_t owner) {
    return ours(arg, owner);
}

/* The key's state as JSON. */
static cJSON *state_json(kd_admin *a, const char *from, const kd_decision *dec,
                         bool found, uint64_t owner) {
    cJSON *o = cJSON_CreateObject();
    char hex[17], *receipt;

    if (!o)
        return NULL;
    cJSON_AddStringToObject(o, "route", from);
    cJSON_AddStringToObject(o, "state",
                            !found                       ? "absent"
                            : dec->state == KD_COMPLETED ? "completed"
                                                         : "in_flight");
    if (found && dec->state == KD_COMPLETED && (receipt = malloc(dec->receipt_len + 1))) {
        memcpy(receipt, dec->receipt, dec->receipt_len);
        receipt[dec->receipt_len] = '\0';
        cJSON_AddStringToObject(o, "receipt", receipt);
        cJSON_AddNumberToObject(o, "completed_at", (double)dec->timestamp_ms);
        free(receipt);
    } else {
        cJSON_AddNullToObject(o, "receipt");
    }
    if (found && dec->has_fingerprint) {
        char fp[2 * KD_FINGERPRINT_LEN + 1];

        cJSON_AddStringToObject(o, "fingerprint",
                                kd_hex(dec->fingerprint, KD_FINGERPRINT_LEN, fp));
    } else {
        cJSON_AddNullToObject(o, "fingerprint"); /* the route keeps none */
    }
    if (found && dec->state == KD_IN_FLIGHT) {
        cJSON_AddNumberToObject(o, "claimed_at", (double)dec->timestamp_ms);
        snprintf(hex, sizeof(hex), "%016" PRIx64, owner);
        if (owner)
            cJSON_AddStringToObject(o, "owner", hex);
        else
            cJSON_AddNullToObject(o, "owner");
        cJSON_AddBoolToObject(o, "owner_is_this_process", ours(a, owner));
    } else {
        cJSON_AddNullToObject(o, "claimed_at");
        cJSON_AddNullToObject(o, "owner");
    }
    return o;
}

static void get_key(kd_admin *a, kd_dedup *d, const kd_http_request *req,
                    const char *from, const char *key, size_t key_len,
                    kd_http_reply *out) {
    kd_decision dec = {0};
    uint64_t owner = 0;
    bool found = false;
    kd_err err = kd_dedup_inspect(d, key, key_len, &dec, &owner, &found);

    if (err != KD_OK) {
        reply_error(out, 500, kd_err_name(err));
        audit(req, "lookup", from, key, key_len, 500, kd_err_name(err));
        return;
    }
    reply_json(out, 200, state_json(a, from, &dec, found, owner));
    audit(req, "lookup", from, key, key_len, 200,
          !found                      ? "absent"
          : dec.state == KD_COMPLETED ? "completed"
                                      : "in_flight");
    kd_decision_clear(&dec);
}

/* The forget record of a completed key: beside its delivery, which its
 * receipt names. False when the receipt names no delivery of r's
 * downstream topic (the route's `to` changed since). */
static bool record_of(const kd_route *r, const char *key, size_t key_len,
                      const kd_decision *dec, kd_forget_record *f) {
    kd_receipt rc;

    if (!kd_receipt_parse(dec->receipt, dec->receipt_len, &rc) ||
        rc.to_len != strlen(r->to) || memcmp(rc.to, r->to, rc.to_len) != 0 ||
        rc.to_partition < 0)
        return false;
    *f = (kd_forget_record){.from = r->from,
                            .to = r->to,
                            .partition = rc.to_partition,
                            .src_partition = rc.from_partition,
                            .src_offset = rc.from_offset,
                            .key = key,
                            .key_len = key_len,
                            .at_ms = kd_wall_ms()};
    return true;
}

/* A completed key's forget, written downstream before the store forgets
 * it (so that a copy forwarded after the forget lands after the record).
 * True when the store may forget it: recorded (where says where), or
 * there is nothing to record (where stays empty); false with the reason
 * in errstr when the record could not be written. */
static bool record_forget(kd_admin *a, const kd_config *cfg, const kd_route *r,
                          kd_dedup *d, const char *key, size_t key_len, char *where,
                          size_t where_size, char *errstr, size_t errstr_size) {
    kd_decision dec = {0};
    kd_forget_record f;
    int64_t offset = -1;
    bool found = false, ok = true;

    where[0] = '\0';
    if (!a->env.record || kd_dedup_lookup(d, key, key_len, &dec, &found) != KD_OK ||
        !found || dec.state != KD_COMPLETED || !record_of(r, key, key_len, &dec, &f))
        goto done; /* kd_dedup_forget() says what it is */
    if ((ok = a->env.record(a->env.arg, cfg, &f, &offset, errstr, errstr_size)))
        snprintf(where, where_size, "%s/%" PRId32 "@%" PRId64, f.to, f.partition, offset);
done:
    kd_decision_clear(&dec);
    return ok;
}

/* The answer to a forget done: where it was recorded, or that it was not. */
static cJSON *forgotten_json(const char *from, const char *where) {
    cJSON *o = cJSON_CreateObject();

    if (!o)
        return NULL;
    cJSON_AddStringToObject(o, "route", from);
    cJSON_AddStringToObject(o, "result", "forgotten");
    if (*where) {
        cJSON_AddStringToObject(o, "recorded", where);
        return o;
    }
    cJSON_AddNullToObject(o, "recorded");
    cJSON_AddStringToObject(
        o, "note",
        "forgotten in this replica's store only (no delivery of the route's "
        "downstream topic to record it beside): if the key's partition moves, or "
        "this pod restarts on an empty store, before the copy you send is "
        "forwarded, DELETE the key again on its new owner, after its handover");
    return o;
}

static void forget_key(kd_admin *a, const kd_config *cfg, const kd_route *r, kd_dedup *d,
                       const kd_http_request *req, const char *key, size_t key_len,
                       kd_http_reply *out) {
    const char *force_arg = kd_http_query(req, "force");
    bool force = force_arg && !strcmp(force_arg, "true");
    kd_forget_result res = KD_FORGET_ABSENT;
    char where[320], why[512], msg[700];
    const char *from = r->from, *result;
    unsigned status;
    kd_err err;

    if (!record_forget(a, cfg, r, d, key, key_len, where, sizeof(where), why,
                       sizeof(why))) {
        snprintf(msg, sizeof(msg),
                 "not forgotten: the forget could not be written downstream (%s); "
                 "ask again",
                 why);
        reply_error(out, 503, msg);
        audit(req, force ? "forget(force)" : "forget", from, key, key_len, 503,
              "not recorded downstream");
        return;
    }
    err = kd_dedup_forget(d, key, key_len, force, protect, a, &res);
    if (err == KD_ERR_SEQUENCE_CONFLICT) {
        status = 409, result = "the key changed meanwhile: ask again";
    } else if (err != KD_OK) {
        status = 500, result = kd_err_name(err);
    } else {
        switch (res) {
        case KD_FORGET_DONE:
            status = 200, result = "forgotten";
            break;
        case KD_FORGET_ABSENT:
            status = 404, result = "absent";
            break;
        case KD_FORGET_IN_FLIGHT:
            status = 409, result = "in flight (?force=true forgets a claim another run "
                                   "left)";
            break;
        default:
            status = 409, result = "in flight, claimed by this process: never forced";
        }
    }
    if (status == 200) {
        reply_json(out, 200, forgotten_json(from, where));
    } else {
        reply_error(out, status, result);
    }
    audit(req, force ? "forget(force)" : "forget", from, key, key_len, status, result);
}

static void keys(kd_admin *a, const kd_http_request *req, kd_http_reply *out) {
    const kd_config *cfg = kd_reload_current(a->env.reload);
    bool del = !strcmp(req->method, "DELETE");
    char *from = NULL, *key = NULL, msg[160];
    const char *action = del ? "forget" : "lookup";
    const kd_route *r;
    size_t key_len;
    kd_dedup *d;

    if (!del && strcmp(req->method, "GET")) {
        reply_error(out, 405, "method not allowed (GET or DELETE)");
        audit(req, action, NULL, NULL, 0, 405, "method not allowed");
    } else if (!kd_admin_key_path(req->path, &from, &key, &key_len)) {
        reply_error(out, 404, "expected /v1/keys/{route}/{key}");
        audit(req, action, NULL, NULL, 0, 404, "bad path");
    } else if (!(r = find_route(cfg, from))) {
        reply_error(out, 404, "no route of this name");
        audit(req, action, from, key, key_len, 404, "no such route");
    } else if (key_len == 0 || key_len > (size_t)cfg->max_key_bytes) {
        snprintf(msg, sizeof(msg),
                 "expected a key of 1 to dedup.max_key_bytes (%lld) bytes, got %zu",
                 (long long)cfg->max_key_bytes, key_len);
        reply_error(out, 400, msg);
        audit(req, action, from, key, key_len, 400, "bad key length");
    } else if (!(d = route_dedup(a, cfg, r))) {
        reply_error(out, 500, "out of memory");
    } else {
        if (del)
            forget_key(a, cfg, r, d, req, key, key_len, out);
        else
            get_key(a, d, req, from, key, key_len, out);
        kd_dedup_destroy(d);
    }
    free(from);
    free(key);
}

static void routes(kd_admin *a, const kd_http_request *req, kd_http_reply *out) {
    if (strcmp(req->method, "GET")) {
        reply_error(out, 405, "method not allowed (GET)");
        audit(req, "routes", NULL, NULL, 0, 405, "method not allowed");
        return;
    }
    out->status = 200;
    out->body = kd_config_routes_json(kd_reload_current(a->env.reload));
    out->len = out->body ? strlen(out->body) : 0;
    audit(req, "routes", NULL, NULL, 0, 200, "ok");
}

static void reload(kd_admin *a, const kd_http_request *req, kd_http_reply *out) {
    char what[1024];
    kd_reload_result res;
    cJSON *o;

    if (strcmp(req->method, "POST")) {
        reply_error(out, 405, "method not allowed (POST)");
        audit(req, "reload", NULL, NULL, 0, 405, "method not allowed");
        return;
    }
    res = kd_reload_run(a->env.reload, "POST /v1/reload", what, sizeof(what));
    if ((o = cJSON_CreateObject())) {
        cJSON_AddStringToObject(o, "result", kd_reload_result_name(res));
        cJSON_AddStringToObject(o, res == KD_RELOAD_OK ? "changed" : "error", what);
    }
    reply_json(out, res == KD_RELOAD_OK ? 200 : res == KD_RELOAD_REFUSED ? 409 : 422, o);
    audit(req, "reload", NULL, NULL, 0, out->status, kd_reload_result_name(res));
}

static void serve(void *arg, const kd_http_request *req, kd_http_reply *out) {
    kd_admin *a = arg;

    if (!kd_admin_authorized(req->authorization, a->token)) {
        reply_error(out, 401, "unauthorized");
        audit(req, "denied", NULL, NULL, 0, 401, "unauthorized");
    } else if (!strncmp(req->path, KEYS_PREFIX, strlen(KEYS_PREFIX))) {
        keys(a, req, out);
    } else if (!strcmp(req->path, "/v1/routes")) {
        routes(a, req, out);
    } else if (!strcmp(req->path, "/v1/reload")) {
        reload(a, req, out);
    } else {
        reply_error(out, 404, "not found");
        audit(req, "unknown", NULL, NULL, 0, 404, "not found");
    }
}

kd_admin *kd_admin_start(const char *listen, const char *token, const kd_admin_env *env,
                         char *errstr, size_t errstr_size) {
    kd_admin *a = calloc(1, sizeof(*a));
    kd_http_handlers h = {.name = "admin.listen", .request = serve};

    if (!a || !(a->token = strdup(token))) {
        free(a);
        snprintf(errstr, errstr_size, "out of memory");
        return NULL;
    }
    a->env = *env;
    h.arg = a;
    if (!(a->http = kd_http_start(listen, &h, errstr, errstr_size))) {
        kd_admin_stop(a);
        return NULL;
    }
    return a;
}

int kd_admin_port(const kd_admin *a) {
    return kd_http_port(a->http);
}

void kd_admin_stop(kd_admin *a) {
    if (!a)
        return;
    kd_http_stop(a->http);
    if (a->token) {
        OPENSSL_cleanse(a->token, strlen(a->token));
        free(a->token);
    }
    free(a);
}
