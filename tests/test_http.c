/*
 * kdedup tests - the HTTP endpoint under slow clients (issue 19, item 3):
 * 600 connections that send a partial request and then one header line a
 * second, reconnecting whenever the server drops them, must leave /healthz
 * answering every probe within 1 s.
 *
 * The attackers connect from 127.0.0.2 and up, the probes from 127.0.0.1:
 * in a pod, the kubelet probes from the node's address and Prometheus from
 * its own, while whoever else reaches the port (when no NetworkPolicy
 * keeps them out) comes from other addresses. A client on the kubelet's
 * own address is out of reach of any per-address rule; the NetworkPolicy
 * is what keeps the rest out.
 *
 * Those addresses and 8 connections from the kubelet's own one together
 * can still crowd out a listener: the probes then answer on one of their
 * own (test_probes_apart).
 *
 * The server runs in a child process (as kdedup runs it, with its own file
 * descriptors); the attackers and probes run in this one.
 */
#include "sidecar/http.h"

#include <stdarg.h>
#include <setjmp.h>
#include <stddef.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#ifdef __linux__
#include <sys/prctl.h>
#endif
#include <time.h>
#include <unistd.h>

#define ATTACKERS 600
#define PROBE_BUDGET_MS 1000
#define PROBE_EVERY_MS 100
#define TRICKLE_EVERY_MS 1000

static uint64_t now_ms(void) {
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void sleep_ms(long ms) {
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};

    nanosleep(&ts, NULL);
}

/*
 * The server, in a child process.
 */

static volatile sig_atomic_t child_stop;

static void on_term(int sig) {
    (void)sig;
    child_stop = 1;
}

static bool always(void *arg, char *reason, size_t size) {
    (void)arg;
    (void)reason;
    (void)size;
    return true;
}

static char *metrics(void *arg, size_t *len) {
    (void)arg;
    *len = 4;
    return strdup("x 1\n");
}

typedef struct server {
    pid_t pid;
    int port;        /* /metrics and the probes */
    int probes_port; /* the probes alone (server_start_with(true)), else -1 */
} server;

static pid_t running = -1; /* the server a failed test left, for teardown */

/* Starts kd_http on 127.0.0.1 in a child, and with probes a second one
 * serving the probes alone, as kdedup does for http.probes_listen; SIGTERM
 * stops them with kd_http_stop() and exit 0. */
static server server_start_with(bool probes) {
    server sv = {-1, -1, -1};
    int fds[2];

    assert_int_equal(pipe(fds), 0);
    fflush(NULL); /* the child exits through exit(): no output twice */
    sv.pid = fork();
    assert_true(sv.pid >= 0);
    if (sv.pid == 0) {
        kd_http_handlers h = {
            .arg = NULL, .metrics = metrics, .healthy = always, .ready = always};
        struct sigaction sa = {.sa_handler = on_term};
        char err[256];
        kd_http_handlers hp = {
            .name = "http.probes_listen", .healthy = always, .ready = always};
        kd_http *http, *alone = NULL;
        int ports[2];

        sigaction(SIGTERM, &sa, NULL);
#ifdef __linux__
        prctl(PR_SET_PDEATHSIG, SIGKILL); /* a test killed by its timeout */
#endif
        close(fds[0]);
        http = kd_http_start("127.0.0.1:0", &h, err, sizeof(err));
        if (http && probes)
            alone = kd_http_start("127.0.0.1:0", &hp, err, sizeof(err));
        ports[0] = http ? kd_http_port(http) : -1;
        ports[1] = alone ? kd_http_port(alone) : -1;
        if (write(fds[1], ports, sizeof(ports)) != (ssize_t)sizeof(ports) || !http ||
            (probes && !alone))
            _exit(1);
        while (!child_stop)
            pause();
        kd_http_stop(alone);
        kd_http_stop(http);
        exit(0); /* with LeakSanitizer's check, in a sanitized build */
    }
    close(fds[1]);
    running = sv.pid;
    int ports[2];
    assert_int_equal(read(fds[0], ports, sizeof(ports)), (ssize_t)sizeof(ports));
    close(fds[0]);
    sv.port = ports[0];
    sv.probes_port = ports[1];
    assert_true(sv.port > 0);
    assert_true(!probes || sv.probes_port > 0);
    return sv;
}

static server server_start(void) {
    return server_start_with(false);
}

/* Stops the server; it must stop cleanly and within ms, attackers or not. */
static void server_stop_within(server sv, uint64_t ms) {
    uint64_t t0 = now_ms(), until = t0 + ms;
    int status = -1;

    running = -1;
    kill(sv.pid, SIGTERM);
    while (waitpid(sv.pid, &status, WNOHANG) == 0 && now_ms() < until)
        sleep_ms(20);
    if (now_ms() >= until) {
        kill(sv.pid, SIGKILL);
        waitpid(sv.pid, &status, 0);
        fail_msg("the server did not stop within %llu ms of SIGTERM",
                 (unsigned long long)ms);
    }
    printf("# the server stopped %llu ms after SIGTERM\n",
           (unsigned long long)(now_ms() - t0));
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
}

static void server_stop(server sv) {
    server_stop_within(sv, 10000);
}

/* Teardown: kills the server of a test that failed before stopping it. */
static int kill_server(void **state) {
    (void)state;
    if (running > 0) {
        kill(running, SIGKILL);
        waitpid(running, NULL, 0);
        running = -1;
    }
    return 0;
}

/*
 * Clients.
 */

/* A non-blocking TCP connection from 127.0.0.<host> to the server. */
static int connect_from(int host, int port) {
    struct sockaddr_in src = {.sin_family = AF_INET}, dst = {.sin_family = AF_INET};
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0), one = 1;

    assert_true(fd >= 0);
    src.sin_addr.s_addr = htonl(0x7f000000u | (uint32_t)host);
    dst.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    dst.sin_port = htons((uint16_t)port);
#ifdef IP_BIND_ADDRESS_NO_PORT
    setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof(one));
#endif
    (void)one;
    if (bind(fd, (struct sockaddr *)&src, sizeof(src)) != 0 ||
        (connect(fd, (struct sockaddr *)&dst, sizeof(dst)) != 0 && errno != EINPROGRESS))
        fail_msg("connect from 127.0.0.%d: %s", host, strerror(errno));
    return fd;
}

/* Waits for events on one socket until deadline; the revents, 0 on timeout. */
static short wait_for(int fd, short events, uint64_t deadline) {
    struct pollfd p = {fd, events, 0};
    uint64_t now = now_ms();

    if (now >= deadline || poll(&p, 1, (int)(deadline - now)) <= 0)
        return 0;
    return p.revents;
}

/* GET path from 127.0.0.1 on a new connection: the milliseconds until a
 * status line starting with want ("HTTP/1.1 200 "), or -1 when none came
 * within PROBE_BUDGET_MS. */
static int get(int port, const char *path, const char *want) {
    uint64_t t0 = now_ms(), deadline = t0 + PROBE_BUDGET_MS;
    int fd = connect_from(1, port);
    char req[128], buf[256];
    int len =
        snprintf(req, sizeof(req),
                 "GET %s HTTP/1.1\r\nHost: kdedup\r\nConnection: close\r\n\r\n", path);
    size_t got = 0;
    int ms = -1;

    if (!(wait_for(fd, POLLOUT, deadline) & POLLOUT) ||
        send(fd, req, (size_t)len, MSG_NOSIGNAL) != (ssize_t)len)
        goto done;
    while (got < sizeof(buf) - 1 && !memchr(buf, '\n', got)) {
        ssize_t n;

        if (!(wait_for(fd, POLLIN, deadline) & (POLLIN | POLLHUP | POLLERR)))
            goto done;
        if ((n = recv(fd, buf + got, sizeof(buf) - 1 - got, 0)) <= 0)
            goto done;
        got += (size_t)n;
    }
    buf[got] = '\0';
    if (!strncmp(buf, want, strlen(want)))
        ms = (int)(now_ms() - t0);
done:
    close(fd);
    return ms;
}

/* GET /healthz from 127.0.0.1: the milliseconds until a 200, or -1. */
static int probe(int port) {
    return get(port, "/healthz", "HTTP/1.1 200 ");
}

/* One attacker's connection: sends a request line and a header, then one
 * more header line per TRICKLE_EVERY_MS, never the blank line that ends
 * the headers; reconnects when the server drops it. */
typedef struct slow {
    int fd, host;
    bool sent_start;
    uint64_t since; /* connected at */
} slow;

static void slow_open(slow *a, int port) {
    a->fd = connect_from(a->host, port);
    a->sent_start = false;
    a->since = now_ms();
}

/* One trickle step; reopens a connection the server closed (or answered,
 * which it does only to close it). Returns true when it reopened. */
static bool slow_step(slow *a, int port) {
    static const char start[] = "GET /metrics HTTP/1.1\r\nHost: kdedup\r\n";
    static const char line[] = "X-Slow: 1\r\n";
    struct pollfd p = {a->fd, POLLIN | POLLOUT, 0};
    bool dead = poll(&p, 1, 0) < 0 || (p.revents & (POLLERR | POLLHUP | POLLIN));

    if (!dead && (p.revents & POLLOUT)) {
        const char *msg = a->sent_start ? line : start;
        size_t len = a->sent_start ? sizeof(line) - 1 : sizeof(start) - 1;

        dead = send(a->fd, msg, len, MSG_NOSIGNAL | MSG_DONTWAIT) != (ssize_t)len;
        a->sent_start = true;
    }
    if (dead) {
        close(a->fd);
        slow_open(a, port);
    }
    return dead;
}

typedef struct outcome {
    int probes, failed, worst_ms;
    int long_lived;  /* attacker connections open for 2 s or more at the end */
    int attacked_ms; /* a last probe of the port attacked, as probe() */
} outcome;

/* ATTACKERS slow connections to port: the first `node` from 127.0.0.1
 * (the probes' own address), the rest from `hosts` addresses (127.0.0.2
 * on), for seconds, probing /healthz on probe_port every PROBE_EVERY_MS
 * meanwhile. With stop, the server is stopped (within 2 s) before the
 * attackers let go. */
static outcome attack_on(int port, int probe_port, int node, int hosts, int seconds,
                         const server *stop) {
    slow *a = calloc(ATTACKERS, sizeof(*a));
    uint64_t end = now_ms() + (uint64_t)seconds * 1000, next_trickle = 0, now;
    outcome o = {0, 0, 0, 0, 0};

    assert_non_null(a);
    for (int i = 0; i < ATTACKERS; i++) {
        a[i].host = i < node ? 1 : 2 + (i - node) % hosts;
        slow_open(&a[i], port);
    }
    while ((now = now_ms()) < end) {
        int ms;

        if (now >= next_trickle) {
            for (int i = 0; i < ATTACKERS; i++)
                slow_step(&a[i], port);
            next_trickle = now + TRICKLE_EVERY_MS;
        }
        ms = probe(probe_port);
        o.probes++;
        if (ms < 0)
            o.failed++;
        else if (ms > o.worst_ms)
            o.worst_ms = ms;
        sleep_ms(PROBE_EVERY_MS);
    }
    for (int i = 0; i < ATTACKERS; i++) {
        slow_step(&a[i], port); /* notices what the server dropped */
        if (now_ms() - a[i].since >= 2000)
            o.long_lived++;
    }
    /* The port attacked, still crowded: a probe there gets nothing (and
     * the server, its last lines read, waits on idle connections). */
    o.attacked_ms = probe(port);
    if (stop) /* while the attackers still hold every slot */
        server_stop_within(*stop, 2000);
    for (int i = 0; i < ATTACKERS; i++)
        close(a[i].fd);
    free(a);
    return o;
}

static outcome attack(int port, int hosts, int seconds) {
    return attack_on(port, port, 0, hosts, seconds, NULL);
}

static void assert_probes_answered(const char *what, outcome o) {
    printf("# %s: %d probes, %d unanswered within %d ms, slowest %d ms; %d attacker "
           "connections held 2 s or more\n",
           what, o.probes, o.failed, PROBE_BUDGET_MS, o.worst_ms, o.long_lived);
    if (o.failed)
        fail_msg("%s: %d of %d /healthz probes got no 200 within %d ms", what, o.failed,
                 o.probes, PROBE_BUDGET_MS);
    assert_true(o.probes >= 10);
}

/* One attacker address: the per-address limit holds it to a few slots. */
static void test_slow_clients_one_address(void **state) {
    server sv = server_start();
    outcome o;

    (void)state;
    assert_true(probe(sv.port) >= 0);
    o = attack(sv.port, 1, 5);
    assert_probes_answered("600 slow connections from one address", o);
    assert_true(o.long_lived <= KD_HTTP_PER_IP_CONNECTIONS);
    server_stop(sv);
}

/* 100 attacker addresses, 6 connections each (under the per-address
 * limit): the reserve keeps slots for an address that holds none. */
static void test_slow_clients_many_addresses(void **state) {
    server sv = server_start();
    outcome o;

    (void)state;
    o = attack(sv.port, 100, 5);
    assert_probes_answered("600 slow connections from 100 addresses", o);
    assert_true(o.long_lived <= KD_HTTP_MAX_CONNECTIONS - KD_HTTP_PROBE_RESERVE);
    server_stop(sv);
}

/* A request trickling in forever is cut at the request timeout, though it
 * never stays idle long enough for libmicrohttpd's idle timeout. */
static void test_request_timeout(void **state) {
    server sv = server_start();
    slow a = {.host = 3};
    uint64_t t0, limit;
    bool closed = false;

    (void)state;
    slow_open(&a, sv.port);
    t0 = a.since;
    limit = t0 + KD_HTTP_REQUEST_TIMEOUT_MS + 2000;
    while (!closed && now_ms() < limit) {
        closed = slow_step(&a, sv.port);
        if (!closed)
            sleep_ms(500);
    }
    printf("# a trickling request was closed after %llu ms\n",
           (unsigned long long)(now_ms() - t0));
    assert_true(closed);
    assert_true(now_ms() - t0 >= KD_HTTP_REQUEST_TIMEOUT_MS - 500);
    close(a.fd);
    server_stop(sv);
}

/* The probes on a listener of their own (http.probes_listen; issue 26,
 * item 11): the listener of /metrics crowded out both ways at once, by 8
 * slow connections from the probes' own address (the node's, which a
 * hostNetwork pod shares with the kubelet) and by one from each of 592
 * others (the pod's own loopback has 2^24 addresses), so that a probe there
 * gets nothing; the probes' listener answers every probe within 1 s, and
 * serves no /metrics. */
static void test_probes_apart(void **state) {
    server sv = server_start_with(true);
    outcome o;

    (void)state;
    assert_true(get(sv.probes_port, "/readyz", "HTTP/1.1 200 ") >= 0);
    assert_true(get(sv.probes_port, "/metrics", "HTTP/1.1 404 ") >= 0);
    /* Stopped still crowded: a full listener stops at once (MHD_USE_ITC;
     * it used to wait for its next connection timeout, up to
     * KD_HTTP_IDLE_TIMEOUT_S). */
    o = attack_on(sv.port, sv.probes_port, KD_HTTP_PER_IP_CONNECTIONS,
                  ATTACKERS - KD_HTTP_PER_IP_CONNECTIONS, 5, &sv);
    printf("# the listener of /metrics under attack: a probe there %s\n",
           o.attacked_ms < 0 ? "got nothing within 1 s" : "was answered");
    if (o.attacked_ms >= 0)
        fail_msg("the attack did not crowd out the listener of /metrics: the test "
                 "proves nothing");
    assert_probes_answered("the probes' own listener, the other crowded out", o);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_slow_clients_one_address, kill_server),
        cmocka_unit_test_teardown(test_slow_clients_many_addresses, kill_server),
        cmocka_unit_test_teardown(test_request_timeout, kill_server),
        cmocka_unit_test_teardown(test_probes_apart, kill_server),
    };

    signal(SIGPIPE, SIG_IGN);
    return cmocka_run_group_tests(tests, NULL, NULL);
}
