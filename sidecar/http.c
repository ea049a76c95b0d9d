/*
 * kdedup - the HTTP endpoint (see http.h).
 */
#include "sidecar/http.h"
#include "sidecar/log.h"

#include <microhttpd.h>

#include <netdb.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#define CONNECTION_MEMORY (32 * 1024) /* bounds a request's line and headers */
#define REAP_INTERVAL_MS 250

/* An open connection, from libmicrohttpd's accept to its close. */
typedef struct conn {
    bool used;
    int fd; /* libmicrohttpd's; valid while used (closed after NOTIFY_CLOSED) */
    struct sockaddr_storage addr;
    uint64_t deadline_ms; /* the request in progress must be answered by then */
} conn;

struct kd_http {
    struct MHD_Daemon *daemon;
    kd_http_handlers h;
    int port;
    /* The connections, for the accept policy (libmicrohttpd's thread) and
     * the reaper (its own thread), which shuts down the sockets of requests
     * past their deadline: libmicrohttpd's own timeout is an idle timeout,
     * which a client sending a byte now and then never reaches. */
    pthread_mutex_t lock;
    pthread_cond_t wake;
    pthread_t reaper;
    bool reaping, stopping;
    conn conns[KD_HTTP_MAX_CONNECTIONS];
    size_t nconns;
};

static uint64_t now_ms(void) {
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static bool same_host(const struct sockaddr_storage *a, const struct sockaddr *b) {
    if (a->ss_family != b->sa_family)
        return false;
    if (b->sa_family == AF_INET)
        return ((const struct sockaddr_in *)a)->sin_addr.s_addr ==
               ((const struct sockaddr_in *)b)->sin_addr.s_addr;
    if (b->sa_family == AF_INET6)
        return !memcmp(&((const struct sockaddr_in6 *)a)->sin6_addr,
                       &((const struct sockaddr_in6 *)b)->sin6_addr,
                       sizeof(struct in6_addr));
    return false;
}

/* Called by libmicrohttpd after its own limits (KD_HTTP_MAX_CONNECTIONS,
 * KD_HTTP_PER_IP_CONNECTIONS) passed: the last KD_HTTP_PROBE_RESERVE slots
 * go only to an address with no connection open. */
static enum MHD_Result accept_policy(void *cls, const struct sockaddr *addr,
                                     socklen_t addrlen) {
    kd_http *s = cls;
    bool holds = false;

    (void)addrlen;
    pthread_mutex_lock(&s->lock);
    if (s->nconns >= KD_HTTP_MAX_CONNECTIONS - KD_HTTP_PROBE_RESERVE)
        for (size_t i = 0; i < KD_HTTP_MAX_CONNECTIONS && !holds; i++)
            holds = s->conns[i].used && same_host(&s->conns[i].addr, addr);
    pthread_mutex_unlock(&s->lock);
    return holds ? MHD_NO : MHD_YES;
}

static void conn_open(kd_http *s, struct MHD_Connection *c, void **socket_context) {
    const union MHD_ConnectionInfo *fd =
        MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
    const union MHD_ConnectionInfo *addr =
        MHD_get_connection_info(c, MHD_CONNECTION_INFO_CLIENT_ADDRESS);

    if (!fd || !addr || !addr->client_addr)
        return;
    pthread_mutex_lock(&s->lock);
    for (size_t i = 0; i < KD_HTTP_MAX_CONNECTIONS; i++) {
        conn *slot = &s->conns[i];

        if (slot->used)
            continue;
        memset(slot, 0, sizeof(*slot));
        slot->used = true;
        slot->fd = fd->connect_fd;
        memcpy(&slot->addr, addr->client_addr,
               addr->client_addr->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6)
                                                        : sizeof(struct sockaddr_in));
        slot->deadline_ms = now_ms() + KD_HTTP_REQUEST_TIMEOUT_MS;
        s->nconns++;
        *socket_context = slot;
        break;
    }
    pthread_mutex_unlock(&s->lock);
}

/* libmicrohttpd calls this before it closes the socket. */
static void on_connection(void *cls, struct MHD_Connection *c, void **socket_context,
                          enum MHD_ConnectionNotificationCode code) {
    kd_http *s = cls;
    conn *slot = *socket_context;

    if (code == MHD_CONNECTION_NOTIFY_STARTED) {
        conn_open(s, c, socket_context);
    } else if (slot) {
        pthread_mutex_lock(&s->lock);
        slot->used = false;
        s->nconns--;
        pthread_mutex_unlock(&s->lock);
        *socket_context = NULL;
    }
}

/* A request answered (or given up): the next one on the connection gets
 * the whole timeout. */
static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls,
                         enum MHD_RequestTerminationCode toe) {
    const union MHD_ConnectionInfo *info =
        MHD_get_connection_info(c, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    kd_http *s = cls;
    conn *slot = info ? info->socket_context : NULL;

    (void)con_cls;
    (void)toe;
    if (!slot)
        return;
    pthread_mutex_lock(&s->lock);
    slot->deadline_ms = now_ms() + KD_HTTP_REQUEST_TIMEOUT_MS;
    pthread_mutex_unlock(&s->lock);
}

/* Shuts down the sockets of requests past their deadline; libmicrohttpd
 * then sees the connection end and closes it. */
static void *reaper(void *arg) {
    kd_http *s = arg;

    pthread_mutex_lock(&s->lock);
    while (!s->stopping) {
        uint64_t now = now_ms();
        struct timespec until;
        size_t reaped = 0;

        for (size_t i = 0; i < KD_HTTP_MAX_CONNECTIONS; i++) {
            conn *slot = &s->conns[i];

            if (!slot->used || slot->deadline_ms > now)
                continue;
            shutdown(slot->fd, SHUT_RDWR);
            slot->deadline_ms = UINT64_MAX; /* once */
            reaped++;
        }
        if (reaped)
            KD_DEBUG("http: closed %zu connections past the %dms request timeout", reaped,
                     KD_HTTP_REQUEST_TIMEOUT_MS);
        clock_gettime(CLOCK_MONOTONIC, &until);
        until.tv_nsec += REAP_INTERVAL_MS * 1000000L;
        until.tv_sec += until.tv_nsec / 1000000000L;
        until.tv_nsec %= 1000000000L;
        pthread_cond_timedwait(&s->wake, &s->lock, &until);
    }
    pthread_mutex_unlock(&s->lock);
    return NULL;
}

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

const char *kd_http_query(const kd_http_request *req, const char *name) {
    return MHD_lookup_connection_value(req->conn, MHD_GET_ARGUMENT_KIND, name);
}

/* The generic handler: the body (at most KD_HTTP_MAX_BODY, discarded) is
 * read first, then the request answered. *con_cls counts its bytes + 1. */
static enum MHD_Result handle_request(kd_http *s, struct MHD_Connection *c,
                                      const char *url, const char *method,
                                      size_t *upload_data_size, void **con_cls) {
    uintptr_t seen = (uintptr_t)*con_cls;
    const union MHD_ConnectionInfo *addr =
        MHD_get_connection_info(c, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    char client[64] = "?"; /* INET6_ADDRSTRLEN fits */
    kd_http_reply out = {0};
    kd_http_request req;
    enum MHD_Result ret;

    if (!seen || *upload_data_size) {
        seen = (seen ? seen : 1) + *upload_data_size;
        *con_cls = (void *)(seen > KD_HTTP_MAX_BODY + 1 ? KD_HTTP_MAX_BODY + 2 : seen);
        *upload_data_size = 0;
        return MHD_YES;
    }
    if (seen > KD_HTTP_MAX_BODY + 1)
        return text(c, MHD_HTTP_CONTENT_TOO_LARGE, "request body too large");
    if (addr && addr->client_addr)
        getnameinfo(addr->client_addr,
                    addr->client_addr->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6)
                                                             : sizeof(struct sockaddr_in),
                    client, sizeof(client), NULL, 0, NI_NUMERICHOST);
    req = (kd_http_request){.method = method,
                            .path = url,
                            .authorization = MHD_lookup_connection_value(
                                c, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION),
                            .client = client,
                            .conn = c};
    s->h.request(s->h.arg, &req, &out);
    if (!out.body)
        return text(c, out.status ? out.status : MHD_HTTP_INTERNAL_SERVER_ERROR,
                    out.status ? "" : "out of memory");
    ret = reply(c, out.status, out.type ? out.type : "application/json", out.body,
                out.len, MHD_RESPMEM_MUST_FREE);
    return ret;
}

/* Keeps the path as sent: a generic handler decodes it segment by segment
 * (a %2F or %00 inside a segment is data, not a separator or an end). */
static size_t keep_escaped(void *cls, struct MHD_Connection *c, char *s) {
    (void)cls;
    (void)c;
    return strlen(s);
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
    if (s->h.request)
        return handle_request(s, c, url, method, upload_data_size, con_cls);
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
    if (strcmp(url, "/metrics") || !s->h.metrics) /* a listener of the probes alone */
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
static struct addrinfo *resolve(const char *name, const char *listen, char *errstr,
                                size_t errstr_size) {
    struct addrinfo hints = {
        .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE};
    const char *colon = strrchr(listen, ':');
    struct addrinfo *ai = NULL;
    char host[256];
    int rc;

    if (!colon || (size_t)(colon - listen) >= sizeof(host)) {
        snprintf(errstr, errstr_size, "%s \"%s\": expected host:port", name, listen);
        return NULL;
    }
    memcpy(host, listen, (size_t)(colon - listen));
    host[colon - listen] = '\0';
    if ((rc = getaddrinfo(host, colon + 1, &hints, &ai)) != 0) {
        snprintf(errstr, errstr_size, "%s \"%s\": %s", name, listen, gai_strerror(rc));
        return NULL;
    }
    return ai;
}

kd_http *kd_http_start(const char *listen, const kd_http_handlers *h, char *errstr,
                       size_t errstr_size) {
    const char *name = h->name ? h->name : "http.listen";
    struct addrinfo *ai = resolve(name, listen, errstr, errstr_size);
    const union MHD_DaemonInfo *info;
    pthread_condattr_t attr;
    kd_http *s;

    if (!ai)
        return NULL;
    if (!(s = calloc(1, sizeof(*s)))) {
        freeaddrinfo(ai);
        snprintf(errstr, errstr_size, "out of memory");
        return NULL;
    }
    s->h = *h;
    pthread_mutex_init(&s->lock, NULL);
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&s->wake, &attr);
    pthread_condattr_destroy(&attr);
    /* MHD_USE_ITC: a stop wakes the thread through a channel of its own.
     * Without it, it wakes it through the listening socket, which a full
     * listener no longer watches: the stop then waited for the next
     * connection timeout, up to KD_HTTP_IDLE_TIMEOUT_S. */
    s->daemon = MHD_start_daemon(
        MHD_USE_AUTO_INTERNAL_THREAD | MHD_USE_ITC | MHD_USE_ERROR_LOG |
            (ai->ai_family == AF_INET6 ? MHD_USE_IPv6 : 0),
        0, accept_policy, s, handle, s, MHD_OPTION_SOCK_ADDR, ai->ai_addr,
        MHD_OPTION_CONNECTION_LIMIT, (unsigned)KD_HTTP_MAX_CONNECTIONS,
        MHD_OPTION_PER_IP_CONNECTION_LIMIT, (unsigned)KD_HTTP_PER_IP_CONNECTIONS,
        MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)KD_HTTP_IDLE_TIMEOUT_S,
        MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)CONNECTION_MEMORY,
        MHD_OPTION_NOTIFY_CONNECTION, on_connection, s, MHD_OPTION_NOTIFY_COMPLETED,
        on_completed, s, MHD_OPTION_EXTERNAL_LOGGER, mhd_log, NULL,
        h->request ? MHD_OPTION_UNESCAPE_CALLBACK : MHD_OPTION_END, keep_escaped, NULL,
        MHD_OPTION_END);
    freeaddrinfo(ai);
    if (!s->daemon) {
        snprintf(errstr, errstr_size,
                 "%s \"%s\": cannot listen (address in use "
                 "or not available)",
                 name, listen);
        kd_http_stop(s);
        return NULL;
    }
    if (pthread_create(&s->reaper, NULL, reaper, s) != 0) {
        snprintf(errstr, errstr_size, "%s: cannot start a thread", name);
        kd_http_stop(s);
        return NULL;
    }
    s->reaping = true;
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
    if (s->reaping) {
        pthread_mutex_lock(&s->lock);
        s->stopping = true;
        pthread_cond_signal(&s->wake);
        pthread_mutex_unlock(&s->lock);
        pthread_join(s->reaper, NULL);
    }
    if (s->daemon)
        MHD_stop_daemon(s->daemon); /* its last callbacks still take the lock */
    pthread_cond_destroy(&s->wake);
    pthread_mutex_destroy(&s->lock);
    free(s);
}
