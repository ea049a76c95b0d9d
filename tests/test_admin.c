/*
 * kdedup tests - the admin API and config reloads: the token check, the
 * path decoding, then the server itself on a port of its own over an
 * in-memory store, answering a plain socket client: 401s, lookups,
 * forgets (never of a claim this process holds), binary keys, bounds, and
 * reloads that apply, are refused or are invalid.
 */
#include "dedup/dedup.h"
#include "sidecar/admin.h"
#include "sidecar/http.h"
#include "sidecar/log.h"
#include "sidecar/reload.h"

#include <stdarg.h>
#include <setjmp.h>
#include <stddef.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define TOKEN "0123456789abcdef-test-token"
#define K(s) (s), strlen(s)

static void test_authorized(void **state) {
    (void)state;
    assert_true(kd_admin_authorized("Bearer " TOKEN, TOKEN));
    assert_true(kd_admin_authorized("bearer  " TOKEN, TOKEN));
    assert_false(kd_admin_authorized(NULL, TOKEN));
    assert_false(kd_admin_authorized("", TOKEN));
    assert_false(kd_admin_authorized(TOKEN, TOKEN));
    assert_false(kd_admin_authorized("Basic " TOKEN, TOKEN));
    assert_false(kd_admin_authorized("Bearer " TOKEN "x", TOKEN));
    assert_false(kd_admin_authorized("Bearer 0123456789abcdef-test-toke", TOKEN));
    assert_false(kd_admin_authorized("Bearer ", TOKEN));
    assert_false(kd_admin_authorized("Bearer " TOKEN, NULL));
}

static void test_key_path(void **state) {
    char *from, *key;
    size_t len;

    (void)state;
    assert_true(kd_admin_key_path("/v1/keys/orders/a%00b%2Fc%ff", &from, &key, &len));
    assert_string_equal(from, "orders");
    assert_int_equal(len, 6);
    assert_memory_equal(key, "a\0b/c\xff", 6);
    free(from);
    free(key);
    assert_true(kd_admin_key_path("/v1/keys/a%2Eb/x/y", &from, &key, &len));
    assert_string_equal(from, "a.b");
    assert_int_equal(len, 3);
    assert_memory_equal(key, "x/y", 3); /* a raw '/' in a key is taken as sent */
    free(from);
    free(key);
    assert_true(kd_admin_key_path("/v1/keys/t/", &from, &key, &len));
    assert_int_equal(len, 0);
    free(from);
    free(key);
    assert_false(kd_admin_key_path("/v1/keys/orders", &from, &key, &len));
    assert_false(kd_admin_key_path("/v1/keys//k", &from, &key, &len));
    assert_false(kd_admin_key_path("/v1/keys/a%00b/k", &from, &key, &len));
    assert_false(kd_admin_key_path("/v2/keys/a/k", &from, &key, &len));
    assert_null(from);
    assert_null(key);
    char s[] = "%41%zz%4";
    assert_int_equal(kd_admin_decode(s), 6);
    assert_memory_equal(s, "A%zz%4", 6);
}

/*
 * The server.
 */

typedef struct fx {
    char dir[64], path[128];
    kd_store *store;
    kd_dedup *d; /* the route "orders" */
    kd_reload *reload;
    kd_admin *admin;
    int port;
    /* forget records asked for (fake_record): how many, the last one */
    int records;
    bool refuse; /* answer as a broker that does not */
    kd_forget_record last;
    char last_key[32];
} fx;

/* The producer's SASL password comes from the file password in f->dir. */
static void write_config(const fx *f, const char *extra) {
    FILE *fp = fopen(f->path, "w");

    assert_non_null(fp);
    fprintf(fp,
            "{\"kafka\": {\"brokers\": \"k:9092\", \"group_id\": \"g\", \"producer\": "
            "{\"sasl.password\": \"${file:%s/password}\"}},"
            " \"routes\": [{\"from\": \"orders\", \"to\": \"out\", \"on_missing_key\": "
            "\"drop\"}], \"dedup\": {\"namespace\": \"ns\", \"max_key_bytes\": 16}%s}",
            f->dir, extra);
    fclose(fp);
}

static void write_file(const char *dir, const char *name, const char *text) {
    char path[160];
    FILE *fp;

    snprintf(path, sizeof(path), "%s/%s", dir, name);
    assert_non_null(fp = fopen(path, "w"));
    fprintf(fp, "%s\n", text);
    fclose(fp);
}

#define OLD_PASSWORD "Old-S3cret-Of-Start"
#define NEW_PASSWORD "New-S3cret-Rotated"

/* Owner 42 is this process's. */
static bool ours(void *arg, uint64_t owner) {
    (void)arg;
    return owner == 42;
}

/* The live pipeline is owner 42. */
static uint64_t live_owner(void *arg) {
    (void)arg;
    return 42;
}

/* Writes nothing downstream: remembers what it was asked, and answers
 * offset 41, or fails when f->refuse. */
static bool fake_record(void *arg, const kd_config *cfg, const kd_forget_record *rec,
                        int64_t *offset, char *errstr, size_t errstr_size) {
    fx *f = arg;

    assert_non_null(cfg);
    f->records++;
    f->last = *rec;
    assert_true(rec->key_len < sizeof(f->last_key));
    memcpy(f->last_key, rec->key, rec->key_len);
    f->last_key[rec->key_len] = '\0';
    f->last.key = f->last_key;
    if (f->refuse) {
        snprintf(errstr, errstr_size, "out/2: Broker: Not enough in-sync replicas");
        return false;
    }
    *offset = 41;
    return true;
}

static int setup(void **state) {
    fx *f = calloc(1, sizeof(*f));
    char hash[KD_RELOAD_HASH_SIZE], err[512];
    kd_admin_env env;
    kd_config *cfg;

    assert_non_null(f);
    snprintf(f->dir, sizeof(f->dir), "/tmp/kd-admin-XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    snprintf(f->path, sizeof(f->path), "%s/kdedup.json", f->dir);
    write_file(f->dir, "password", OLD_PASSWORD);
    write_config(f, "");
    cfg = kd_reload_load(f->path, 0, hash, err, sizeof(err));
    if (!cfg)
        fail_msg("%s", err);
    assert_non_null(f->reload = kd_reload_new(f->path, cfg, hash));
    assert_non_null(f->store = kd_store_mem_new());
    assert_non_null(f->d = kd_dedup_new(f->store, "ns:orders"));
    env = (kd_admin_env){.store = f->store,
                         .reload = f->reload,
                         .ours = ours,
                         .live_owner = live_owner,
                         .record = fake_record,
                         .arg = f};
    f->admin = kd_admin_start("127.0.0.1:0", TOKEN, &env, err, sizeof(err));
    if (!f->admin)
        fail_msg("%s", err);
    f->port = kd_admin_port(f->admin);
    *state = f;
    return 0;
}

static int teardown(void **state) {
    fx *f = *state;

    kd_admin_stop(f->admin);
    kd_dedup_destroy(f->d);
    kd_store_destroy(f->store);
    kd_reload_destroy(f->reload);
    unlink(f->path);
    snprintf(f->path, sizeof(f->path), "%s/password", f->dir);
    unlink(f->path);
    rmdir(f->dir);
    free(f);
    return 0;
}

/* Sends one request (auth: the Authorization value, or NULL); returns the
 * status and copies the body into body. */
static int request(const fx *f, const char *method, const char *path, const char *auth,
                   const char *body_out, char *body, size_t size) {
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)f->port)};
    static char buf[1 << 16];
    size_t len = 0;
    int s = socket(AF_INET, SOCK_STREAM, 0), status = 0;
    ssize_t n;

    inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
    assert_int_equal(connect(s, (struct sockaddr *)&sa, sizeof(sa)), 0);
    n = snprintf(buf, sizeof(buf),
                 "%s %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n%s%s%s"
                 "Content-Length: %zu\r\n\r\n%s",
                 method, path, auth ? "Authorization: " : "", auth ? auth : "",
                 auth ? "\r\n" : "", body_out ? strlen(body_out) : 0,
                 body_out ? body_out : "");
    assert_int_equal(send(s, buf, (size_t)n, 0), n);
    while (len < sizeof(buf) - 1 &&
           (n = recv(s, buf + len, sizeof(buf) - 1 - len, 0)) > 0)
        len += (size_t)n;
    buf[len] = '\0';
    close(s);
    sscanf(buf, "HTTP/1.1 %d", &status);
    if (body) {
        const char *b = strstr(buf, "\r\n\r\n");

        snprintf(body, size, "%s", b ? b + 4 : "");
    }
    return status;
}

#define BEARER "Bearer " TOKEN

static void test_unauthorized(void **state) {
    fx *f = *state;
    char body[512];

    assert_int_equal(request(f, "GET", "/v1/routes", NULL, NULL, body, sizeof(body)),
                     401);
    assert_string_equal(body, "{\"error\":\"unauthorized\"}");
    assert_int_equal(request(f, "GET", "/v1/routes", "Bearer nope", NULL, NULL, 0), 401);
    assert_int_equal(request(f, "DELETE", "/v1/keys/orders/k", "Bearer x", NULL, NULL, 0),
                     401);
    assert_int_equal(request(f, "POST", "/v1/reload", NULL, NULL, NULL, 0), 401);
    assert_int_equal(request(f, "GET", "/v1/routes", BEARER, NULL, body, sizeof(body)),
                     200);
    assert_non_null(strstr(body, "\"from\":\"orders\""));
    assert_int_equal(request(f, "GET", "/metrics", BEARER, NULL, NULL, 0), 404);
}

static void test_keys(void **state) {
    fx *f = *state;
    const char bin[] = "a\0/\xff";
    uint64_t now = (uint64_t)time(NULL) * 1000;
    kd_decision dec;
    char body[1024], want[160];
    bool found;

    /* completed: looked up with its receipt, forgotten, claimed again */
    assert_int_equal(kd_dedup_claim_or_get(f->d, K("k1"), 5, &dec), KD_OK);
    assert_int_equal(kd_dedup_complete_receipt(f->d, K("k1"), K("v1 to=out/0@7")), KD_OK);
    assert_int_equal(
        request(f, "GET", "/v1/keys/orders/k1", BEARER, NULL, body, sizeof(body)), 200);
    assert_non_null(
        strstr(body, "\"state\":\"completed\",\"receipt\":\"v1 to=out/0@7\""));
    assert_int_equal(request(f, "GET", "/v1/keys/other/k1", BEARER, NULL, NULL, 0), 404);
    assert_int_equal(request(f, "DELETE", "/v1/keys/other/k1", BEARER, NULL, NULL, 0),
                     404);
    assert_int_equal(request(f, "DELETE", "/v1/keys/orders/k1", BEARER, NULL, NULL, 0),
                     200);
    assert_int_equal(kd_dedup_lookup(f->d, K("k1"), &dec, &found), KD_OK);
    assert_false(found);
    assert_int_equal(request(f, "DELETE", "/v1/keys/orders/k1", BEARER, NULL, NULL, 0),
                     404);
    assert_int_equal(
        request(f, "GET", "/v1/keys/orders/k1", BEARER, NULL, body, sizeof(body)), 200);
    assert_non_null(strstr(body, "\"state\":\"absent\""));

    /* in flight: this process's claim is never forced; another's is */
    kd_dedup_set_owner(f->d, 42);
    /* now: an older claim is past dedup.inflight_timeout, so absent */
    assert_int_equal(kd_dedup_claim_or_get(f->d, K("mine"), now, &dec), KD_OK);
    kd_dedup_set_owner(f->d, 43);
    assert_int_equal(kd_dedup_claim_or_get(f->d, K("theirs"), now, &dec), KD_OK);
    assert_int_equal(
        request(f, "GET", "/v1/keys/orders/mine", BEARER, NULL, body, sizeof(body)), 200);
    snprintf(want, sizeof(want),
             "\"claimed_at\":%llu,\"owner\":\"000000000000002a\","
             "\"owner_is_this_process\":true",
             (unsigned long long)now);
    if (!strstr(body, want))
        fail_msg("%s", body);
    assert_int_equal(request(f, "DELETE", "/v1/keys/orders/mine", BEARER, NULL, NULL, 0),
                     409);
    assert_int_equal(
        request(f, "DELETE", "/v1/keys/orders/mine?force=true", BEARER, NULL, NULL, 0),
        409);
    assert_int_equal(
        request(f, "DELETE", "/v1/keys/orders/theirs", BEARER, NULL, NULL, 0), 409);
    assert_int_equal(
        request(f, "DELETE", "/v1/keys/orders/theirs?force=true", BEARER, NULL, NULL, 0),
        200);
    assert_int_equal(kd_dedup_lookup(f->d, K("mine"), &dec, &found), KD_OK);
    assert_true(found);
    assert_int_equal(kd_dedup_lookup(f->d, K("theirs"), &dec, &found), KD_OK);
    assert_false(found);

    /* binary keys, and the bounds of a key */
    assert_int_equal(kd_dedup_claim_or_get(f->d, bin, 4, now, &dec), KD_OK);
    assert_int_equal(kd_dedup_complete_receipt(f->d, bin, 4, K("r")), KD_OK);
    assert_int_equal(
        request(f, "GET", "/v1/keys/orders/a%00%2F%FF", BEARER, NULL, body, sizeof(body)),
        200);
    assert_non_null(strstr(body, "\"completed\""));
    assert_int_equal(
        request(f, "GET", "/v1/keys/orders/a", BEARER, NULL, body, sizeof(body)), 200);
    assert_non_null(strstr(body, "\"absent\"")); /* not cut at the NUL */
    assert_int_equal(
        request(f, "DELETE", "/v1/keys/orders/a%00%2F%FF", BEARER, NULL, NULL, 0), 200);
    assert_int_equal(kd_dedup_lookup(f->d, bin, 4, &dec, &found), KD_OK);
    assert_false(found);
    assert_int_equal(request(f, "GET", "/v1/keys/orders/", BEARER, NULL, NULL, 0), 400);
    assert_int_equal(request(f, "GET", "/v1/keys/orders/0123456789abcdefX", BEARER, NULL,
                             body, sizeof(body)),
                     400);
    assert_non_null(strstr(body, "max_key_bytes (16) bytes, got 17"));
    assert_int_equal(request(f, "PUT", "/v1/keys/orders/k", BEARER, NULL, NULL, 0), 405);
    assert_int_equal(request(f, "GET", "/v1/nothing", BEARER, NULL, NULL, 0), 404);
}

/* A completed key's forget is written downstream first, beside the
 * delivery its receipt names, and the answer says where; when that write
 * fails, nothing is forgotten (503, ask again). A key whose receipt names
 * no delivery of the route's downstream topic, and a forced claim in
 * flight, are forgotten here only, and the answer says what to do. */
static void test_forget_recorded_downstream(void **state) {
    fx *f = *state;
    const char *receipt = "v1 to=out/2@7 ts=5 from=orders/2@11 fp=00";
    uint64_t now = (uint64_t)time(NULL) * 1000;
    kd_decision dec;
    char body[1024];
    bool found;

    assert_int_equal(kd_dedup_claim_or_get(f->d, K("k2"), now, &dec), KD_OK);
    assert_int_equal(kd_dedup_complete_receipt(f->d, K("k2"), K(receipt)), KD_OK);
    f->refuse = true;
    assert_int_equal(
        request(f, "DELETE", "/v1/keys/orders/k2", BEARER, NULL, body, sizeof(body)),
        503);
    assert_non_null(strstr(body, "not forgotten: the forget could not be written "
                                 "downstream (out/2: Broker: Not enough in-sync "
                                 "replicas); ask again"));
    assert_int_equal(kd_dedup_lookup(f->d, K("k2"), &dec, &found), KD_OK);
    assert_true(found); /* still completed */
    kd_decision_clear(&dec);

    f->refuse = false;
    assert_int_equal(
        request(f, "DELETE", "/v1/keys/orders/k2", BEARER, NULL, body, sizeof(body)),
        200);
    assert_string_equal(body, "{\"route\":\"orders\",\"result\":\"forgotten\","
                              "\"recorded\":\"out/2@41\"}");
    assert_int_equal(f->records, 2);
    assert_string_equal(f->last.from, "orders");
    assert_string_equal(f->last.to, "out");
    assert_int_equal(f->last.partition, 2);
    assert_int_equal(f->last.src_partition, 2);
    assert_int_equal(f->last.src_offset, 11);
    assert_string_equal(f->last_key, "k2");
    assert_true(f->last.at_ms >= now);
    assert_int_equal(kd_dedup_lookup(f->d, K("k2"), &dec, &found), KD_OK);
    assert_false(found);

    /* another topic's receipt (the route's `to` changed): here only */
    assert_int_equal(kd_dedup_claim_or_get(f->d, K("k3"), now, &dec), KD_OK);
    assert_int_equal(
        kd_dedup_complete_receipt(f->d, K("k3"), K("v1 to=old/0@7 ts=5 from=orders/0@1")),
        KD_OK);
    assert_int_equal(
        request(f, "DELETE", "/v1/keys/orders/k3", BEARER, NULL, body, sizeof(body)),
        200);
    assert_non_null(strstr(body, "\"recorded\":null,\"note\":\"forgotten in this "
                                 "replica's store only"));
    assert_non_null(strstr(body, "DELETE the key again on its new owner"));

    /* a forced claim of another run: no delivery to record it beside */
    kd_dedup_set_owner(f->d, 43);
    assert_int_equal(kd_dedup_claim_or_get(f->d, K("k4"), now, &dec), KD_OK);
    assert_int_equal(request(f, "DELETE", "/v1/keys/orders/k4?force=true", BEARER, NULL,
                             body, sizeof(body)),
                     200);
    assert_non_null(strstr(body, "\"recorded\":null"));
    assert_int_equal(f->records, 2);
}

static void test_reload(void **state) {
    fx *f = *state;
    char body[1024], big[KD_HTTP_MAX_BODY + 2];

    memset(big, 'x', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    assert_int_equal(request(f, "POST", "/v1/reload", BEARER, big, NULL, 0), 413);
    assert_int_equal(request(f, "GET", "/v1/reload", BEARER, NULL, NULL, 0), 405);
    assert_int_equal(request(f, "POST", "/v1/reload", BEARER, NULL, body, sizeof(body)),
                     200);
    assert_string_equal(body, "{\"result\":\"ok\",\"changed\":\"nothing to change\"}");

    write_config(f, ", \"log\": {\"level\": \"warn\"}");
    assert_int_equal(request(f, "POST", "/v1/reload", BEARER, "{}", body, sizeof(body)),
                     200);
    assert_string_equal(body,
                        "{\"result\":\"ok\",\"changed\":\"log.level: info -> warn\"}");
    assert_int_equal(kd_reload_current(f->reload)->log_level, KD_LOG_WARN);
    assert_false(kd_log_enabled(KD_LOG_INFO));
    kd_log_set_level(KD_LOG_INFO);

    write_config(f, ", \"store\": {\"path\": \"/x\"}");
    assert_int_equal(request(f, "POST", "/v1/reload", BEARER, NULL, body, sizeof(body)),
                     409);
    assert_non_null(strstr(body, "\"refused\",\"error\":\"store.path: cannot change"));
    assert_int_equal(kd_reload_current(f->reload)->log_level, KD_LOG_WARN);

    write_config(f, ", \"dedup\": 7");
    assert_int_equal(request(f, "POST", "/v1/reload", BEARER, NULL, body, sizeof(body)),
                     422);
    assert_non_null(
        strstr(body, "\"invalid\",\"error\":\"kdedup.json: dedup: duplicate key"));

    size_t len;
    char *m = kd_reload_metrics(f->reload, &len);
    assert_non_null(m);
    assert_non_null(strstr(m, "kdedup_config_reloads_total{result=\"ok\"} 2\n"));
    assert_non_null(strstr(m, "kdedup_config_reloads_total{result=\"invalid\"} 1\n"));
    assert_non_null(strstr(m, "kdedup_config_reloads_total{result=\"refused\"} 1\n"));
    assert_non_null(strstr(m, "kdedup_config_info{hash=\""));
    assert_non_null(strstr(m, "kdedup_config_kept 2\n"));
    free(m);
}

/* Configs kept for what borrowed them stay bounded: toggling a setting
 * keeps each config once, and past KD_RELOAD_KEPT_MAX distinct ones a
 * reload is refused (the one in force stays). */
static void test_reload_keeps_a_bounded_number(void **state) {
    fx *f = *state;
    char what[512], extra[128];
    const kd_config *warn = NULL;

    for (int i = 0; i < 3 * KD_RELOAD_KEPT_MAX; i++) {
        write_config(f, i % 2 ? ", \"log\": {\"level\": \"info\"}"
                              : ", \"log\": {\"level\": \"warn\"}");
        assert_int_equal(kd_reload_run(f->reload, "test", what, sizeof(what)),
                         KD_RELOAD_OK);
        if (i == 0)
            warn = kd_reload_current(f->reload);
        else if (i % 2 == 0)
            assert_ptr_equal(kd_reload_current(f->reload), warn); /* put back */
    }
    kd_log_set_level(KD_LOG_INFO);
    assert_int_equal(kd_reload_kept(f->reload), 3); /* the first, warn, info */
    for (int i = 0; (size_t)i + 3 < KD_RELOAD_KEPT_MAX; i++) {
        snprintf(extra, sizeof(extra), ", \"pipeline\": {\"batch_max\": %d}", 100 + i);
        write_config(f, extra);
        assert_int_equal(kd_reload_run(f->reload, "test", what, sizeof(what)),
                         KD_RELOAD_OK);
    }
    assert_int_equal(kd_reload_kept(f->reload), KD_RELOAD_KEPT_MAX);
    write_config(f, ", \"pipeline\": {\"batch_max\": 7}");
    assert_int_equal(kd_reload_run(f->reload, "test", what, sizeof(what)),
                     KD_RELOAD_REFUSED);
    assert_non_null(strstr(what, "restart it to change more"));
    assert_int_equal(kd_reload_current(f->reload)->batch_max,
                     100 + KD_RELOAD_KEPT_MAX - 4);
    assert_int_equal(kd_reload_kept(f->reload), KD_RELOAD_KEPT_MAX);
    write_config(f, ", \"pipeline\": {\"batch_max\": 100}"); /* kept: allowed */
    assert_int_equal(kd_reload_run(f->reload, "test", what, sizeof(what)), KD_RELOAD_OK);
    assert_int_equal(kd_reload_current(f->reload)->batch_max, 100);
}

/* What kd_log writes to stderr between capture_start() and capture_end(). */
static int capture_start(void) {
    FILE *tmp = tmpfile();
    int saved;

    assert_non_null(tmp);
    fflush(stderr);
    saved = dup(STDERR_FILENO);
    assert_true(saved >= 0);
    assert_true(dup2(fileno(tmp), STDERR_FILENO) >= 0);
    return saved; /* tmp stays open as fd 2 until capture_end() */
}

static void capture_end(int saved, char *out, size_t size) {
    ssize_t n;

    fflush(stderr);
    assert_int_equal(lseek(STDERR_FILENO, 0, SEEK_SET), 0);
    n = read(STDERR_FILENO, out, size - 1);
    out[n > 0 ? n : 0] = '\0';
    assert_true(dup2(saved, STDERR_FILENO) >= 0);
    close(saved);
    fputs(out, stderr); /* still shown with the test's output */
}

/* A reload puts a rotated ${file:} value in force (the pipeline restarts
 * with it): log lines mask it from then on, as they mask the value it
 * replaced, and no admin answer shows either. */
static void test_reload_masks_rotated_secrets(void **state) {
    fx *f = *state;
    char body[2048], log[8192];
    const char *pw;
    int saved;

    write_file(f->dir, "password", NEW_PASSWORD);
    write_config(f, ", \"pipeline\": {\"batch_max\": 7}");
    saved = capture_start();
    assert_int_equal(request(f, "POST", "/v1/reload", BEARER, NULL, body, sizeof(body)),
                     200);
    pw = kd_config_prop_get(&kd_reload_current(f->reload)->producer, "sasl.password");
    assert_non_null(pw);
    assert_string_equal(pw, NEW_PASSWORD); /* the rotated value is in force */
    KD_ERROR("librdkafka: SASL authentication with \"%s\" failed (was \"%s\")",
             NEW_PASSWORD, OLD_PASSWORD);
    assert_int_equal(request(f, "GET", "/v1/routes", BEARER, NULL, body + strlen(body),
                             sizeof(body) - strlen(body)),
                     200);
    capture_end(saved, log, sizeof(log));
    if (strstr(log, NEW_PASSWORD) || strstr(log, OLD_PASSWORD))
        fail_msg("a password in a log line: %s", log);
    if (!strstr(log, "SASL authentication with \\\"${file:"))
        fail_msg("the line is not there to tell: %s", log);
    if (strstr(body, NEW_PASSWORD) || strstr(body, OLD_PASSWORD))
        fail_msg("a password in an answer: %s", body);
}

/* A claim of the live pipeline past inflight_timeout does not expire for
 * it (kd_dedup_set_owner): the API says it is in flight too, and refuses a
 * forced forget, as for any claim of this process (found by review: the
 * API's own cache, without the owner, said absent). Another run's claim as
 * old reads absent. */
static void test_live_pipelines_old_claim_in_flight(void **state) {
    fx *f = *state;
    uint64_t old = (uint64_t)time(NULL) * 1000 - 11 * 60 * 1000;
    kd_decision dec;
    char body[1024];

    kd_dedup_set_owner(f->d, 42);
    assert_int_equal(kd_dedup_claim_or_get(f->d, K("mine"), old, &dec), KD_OK);
    kd_dedup_set_owner(f->d, 7);
    assert_int_equal(kd_dedup_claim_or_get(f->d, K("theirs"), old, &dec), KD_OK);
    assert_int_equal(
        request(f, "GET", "/v1/keys/orders/mine", BEARER, NULL, body, sizeof(body)), 200);
    assert_non_null(strstr(body, "\"state\":\"in_flight\""));
    assert_non_null(strstr(body, "\"owner_is_this_process\":true"));
    assert_int_equal(request(f, "DELETE", "/v1/keys/orders/mine?force=true", BEARER, NULL,
                             body, sizeof(body)),
                     409);
    assert_int_equal(
        request(f, "GET", "/v1/keys/orders/theirs", BEARER, NULL, body, sizeof(body)),
        200);
    assert_non_null(strstr(body, "\"state\":\"absent\""));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_authorized),
        cmocka_unit_test(test_key_path),
        cmocka_unit_test_setup_teardown(test_unauthorized, setup, teardown),
        cmocka_unit_test_setup_teardown(test_keys, setup, teardown),
        cmocka_unit_test_setup_teardown(test_live_pipelines_old_claim_in_flight, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_forget_recorded_downstream, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reload, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reload_keeps_a_bounded_number, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_reload_masks_rotated_secrets, setup,
                                        teardown),
    };

    return cmocka_run_group_tests_name("admin API and reloads", tests, NULL, NULL);
}
