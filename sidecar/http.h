/*
 * kdedup - the HTTP endpoint (libmicrohttpd, on its own thread):
 *   GET /metrics  Prometheus text format 0.0.4
 *   GET /healthz  200 while the process loop turns, else 503 with the reason
 *   GET /readyz   200 when ready to work, else 503 with the reason
 * Other paths 404, other methods 405. Requests are bounded in size, time
 * and number of connections, so no client can stall the pipeline, and slow
 * or many clients cannot take the probes' place:
 *   - one client address holds at most KD_HTTP_PER_IP_CONNECTIONS;
 *   - the last KD_HTTP_PROBE_RESERVE of KD_HTTP_MAX_CONNECTIONS go only to
 *     addresses that hold none (the kubelet's, when a few others hold the
 *     rest);
 *   - a request must be answered within KD_HTTP_REQUEST_TIMEOUT_MS of its
 *     connection's accept (or of the previous answer on it), however slowly
 *     it trickles in, and an idle connection closes after
 *     KD_HTTP_IDLE_TIMEOUT_S.
 * All connections share one thread (epoll): a slow client costs a slot,
 * never the thread. Many addresses together can still fill every slot for
 * up to KD_HTTP_REQUEST_TIMEOUT_MS at a time, and so can 8 connections from
 * the kubelet's own address (the node's, which a hostNetwork pod shares):
 * hence a listener of the probes alone (no metrics handler; kdedup's
 * http.probes_listen), its own slots and thread, which no scraper or client
 * of /metrics reaches.
 */
#ifndef KD_HTTP_H
#define KD_HTTP_H

#include <stdbool.h>
#include <stddef.h>

#define KD_HTTP_MAX_CONNECTIONS 512
/* A kubelet probes with 3 at once (startup, liveness, readiness);
 * Prometheus scrapes with 1. */
#define KD_HTTP_PER_IP_CONNECTIONS 8
#define KD_HTTP_PROBE_RESERVE 64
#define KD_HTTP_REQUEST_TIMEOUT_MS 10000
#define KD_HTTP_IDLE_TIMEOUT_S 10

/* A request for a generic handler (kd_http_handlers.request). Strings
 * borrow from the server and last for the call. */
typedef struct kd_http_request {
    const char *method;        /* "GET", "POST", ... */
    const char *path;          /* as sent, not percent-decoded; no query */
    const char *authorization; /* the Authorization header, or NULL */
    const char *client;        /* the client's address, numeric */
    void *conn;                /* for kd_http_query() */
} kd_http_request;

/* The answer to a request: body malloc()ed (the server frees it) or NULL. */
typedef struct kd_http_reply {
    unsigned status;
    const char *type; /* Content-Type; NULL: application/json */
    char *body;
    size_t len;
} kd_http_reply;

/* The query argument `name` of req ("?force=true"), as sent, or NULL. */
const char *kd_http_query(const kd_http_request *req, const char *name);

/* Largest request body a generic handler accepts (413 past it). */
#define KD_HTTP_MAX_BODY 4096

/* What the endpoints serve; each is called on the HTTP thread. */
typedef struct kd_http_handlers {
    /* The config key of the listener, for messages: "http.listen" (the
     * default when NULL), "http.probes_listen" or "admin.listen". */
    const char *name;
    /* When set, every request goes to it (any method, any path) and the
     * endpoints below are not served. */
    void (*request)(void *arg, const kd_http_request *req, kd_http_reply *out);
    void *arg;
    /* The exposition text, malloc()ed (the server frees it), or NULL.
     * Unset: no /metrics (404), a listener of the probes alone. */
    char *(*metrics)(void *arg, size_t *len);
    /* true, or false with a one-line reason in reason. */
    bool (*healthy)(void *arg, char *reason, size_t size);
    bool (*ready)(void *arg, char *reason, size_t size);
} kd_http_handlers;

typedef struct kd_http kd_http;

/* Listens on "host:port" (port 0: any free port). h is copied. Returns the
 * server, or NULL with the reason in errstr. */
kd_http *kd_http_start(const char *listen, const kd_http_handlers *h, char *errstr,
                       size_t errstr_size);

/* The port it listens on. */
int kd_http_port(const kd_http *s);

/* Stops the server and frees it. NULL-safe. */
void kd_http_stop(kd_http *s);

#endif /* KD_HTTP_H */
