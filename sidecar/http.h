/*
 * kdedup - the HTTP endpoint (libmicrohttpd, on its own thread):
 *   GET /metrics  Prometheus text format 0.0.4
 *   GET /healthz  200 while the process loop turns, else 503 with the reason
 *   GET /readyz   200 when ready to work, else 503 with the reason
 * Other paths 404, other methods 405. Requests are bounded in size, time
 * and number of connections, so no client can stall the pipeline.
 */
#ifndef KD_HTTP_H
#define KD_HTTP_H

#include <stdbool.h>
#include <stddef.h>

/* What the endpoints serve; each is called on the HTTP thread. */
typedef struct kd_http_handlers {
    void *arg;
    /* The exposition text, malloc()ed (the server frees it), or NULL. */
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
