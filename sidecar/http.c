/*
 * kdedup - the HTTP endpoint (see http.h).
 */
#include "sidecar/http.h"
#include "sidecar/log.h"

#include <microhttpd.h>

#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#define MAX_CONNECTIONS 512
#define CONNECTION_TIMEOUT_S 10
#define CONNECTION_MEMORY (32 * 1024) /* bounds a request's line and headers */

struct kd_http {
    struct MHD_Daemon *daemon;
    kd_http_handlers h;
    int port;
};

static enum MHD_Result reply(struct MHD_Connection *c, unsigned status, const char *type,
                             char *body, size_t len, enum MHD_ResponseMemoryMode mode) {
    struct MHD_Response *r = MHD_create_response_from_buffer(len, body, mode);
    enum MHD_Result ret;

    if (!r)
        return MHD_NO;
    MHD_add_response_header(r, "Content-Type", type);
    if (status == MHD_HTTP_METHOD_NOT_ALLOWED)
        MHD_add_response_header(r, "Allow", "GET, HEAD");
    ret = MHD_queue_response(c, status, r);
    MHD_destroy_response(r);
    return ret;
}

static enum MHD_Result text(struct MHD_Connection *c, unsigned status, const char *msg) {
    char body[512];
    int n = snprintf(body, sizeof(body), "%s\n", msg);

    return reply(c, status, "text/plain; charset=utf-8", body,
                 n < 0                      ? 0
                 : (size_t)n < sizeof(body) ? (size_t)n
                                            : sizeof(body) - 1,
                 MHD_RESPMEM_MUST_COPY);
}

static enum MHD_Result probe(struct MHD_Connection *c,
                             bool (*check)(void *, char *, size_t), void *arg) {
    char reason[400] = "";

    if (check(arg, reason, sizeof(reason)))
        return text(c, MHD_HTTP_OK, "ok");
    return text(c, MHD_HTTP_SERVICE_UNAVAILABLE, reason);
}

static enum MHD_Result handle(void *cls, struct MHD_Connection *c, const char *url,
                              const char *method, const char *version,
                              const char *upload_data, size_t *upload_data_size,
                              void **con_cls) {
    kd_http *s = cls;
    size_t len = 0;
    char *body;

    (void)version;
    (void)upload_data;
    (void)con_cls;
    if (strcmp(method, MHD_HTTP_METHOD_GET) && strcmp(method, MHD_HTTP_METHOD_HEAD))
        return text(c, MHD_HTTP_METHOD_NOT_ALLOWED, "method not allowed");
    if (*upload_data_size) { /* a GET with a body: the body is ignored */
        *upload_data_size = 0;
        return MHD_YES;
    }
    if (!strcmp(url, "/healthz"))
        return probe(c, s->h.healthy, s->h.arg);
    if (!strcmp(url, "/readyz"))
        return probe(c, s->h.ready, s->h.arg);
    if (strcmp(url, "/metrics"))
        return text(c, MHD_HTTP_NOT_FOUND, "not found");
    if (!(body = s->h.metrics(s->h.arg, &len)))
        return text(c, MHD_HTTP_INTERNAL_SERVER_ERROR, "out of memory");
    return reply(c, MHD_HTTP_OK, "text/plain; version=0.0.4; charset=utf-8", body, len,
                 MHD_RESPMEM_MUST_FREE);
}

static void mhd_log(void *cls, const char *fmt, va_list ap) {
    char msg[512];

    (void)cls;
    vsnprintf(msg, sizeof(msg), fmt, ap);
    msg[strcspn(msg, "\n")] = '\0';
    KD_DEBUG("http: %s", msg);
}

/* Splits "host:port" (the config checked its shape) and resolves it. */
static struct addrinfo *resolve(const char *listen, char *errstr, size_t errstr_size) {
    struct addrinfo hints = {
        .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE};
    const char *colon = strrchr(listen, ':');
    struct addrinfo *ai = NULL;
    char host[256];
    int rc;

    if (!colon || (size_t)(colon - listen) >= sizeof(host)) {
        snprintf(errstr, errstr_size, "http.listen \"%s\": expected host:port", listen);
        return NULL;
    }
    memcpy(host, listen, (size_t)(colon - listen));
    host[colon - listen] = '\0';
    if ((rc = getaddrinfo(host, colon + 1, &hints, &ai)) != 0) {
        snprintf(errstr, errstr_size, "http.listen \"%s\": %s", listen, gai_strerror(rc));
        return NULL;
    }
    return ai;
}

kd_http *kd_http_start(const char *listen, const kd_http_handlers *h, char *errstr,
                       size_t errstr_size) {
    struct addrinfo *ai = resolve(listen, errstr, errstr_size);
    const union MHD_DaemonInfo *info;
    kd_http *s;

    if (!ai)
        return NULL;
    if (!(s = calloc(1, sizeof(*s)))) {
        freeaddrinfo(ai);
        snprintf(errstr, errstr_size, "out of memory");
        return NULL;
    }
    s->h = *h;
    s->daemon =
        MHD_start_daemon(MHD_USE_AUTO_INTERNAL_THREAD | MHD_USE_ERROR_LOG |
                             (ai->ai_family == AF_INET6 ? MHD_USE_IPv6 : 0),
                         0, NULL, NULL, handle, s, MHD_OPTION_SOCK_ADDR, ai->ai_addr,
                         MHD_OPTION_CONNECTION_LIMIT, (unsigned)MAX_CONNECTIONS,
                         MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)CONNECTION_TIMEOUT_S,
                         MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)CONNECTION_MEMORY,
                         MHD_OPTION_EXTERNAL_LOGGER, mhd_log, NULL, MHD_OPTION_END);
    freeaddrinfo(ai);
    if (!s->daemon) {
        snprintf(errstr, errstr_size,
                 "http.listen \"%s\": cannot listen (address in use "
                 "or not available)",
                 listen);
        free(s);
        return NULL;
    }
    info = MHD_get_daemon_info(s->daemon, MHD_DAEMON_INFO_BIND_PORT);
    s->port = info ? info->port : -1;
    return s;
}

int kd_http_port(const kd_http *s) {
    return s->port;
}

void kd_http_stop(kd_http *s) {
    if (!s)
        return;
    MHD_stop_daemon(s->daemon);
    free(s);
}
