/*
 * bridge/acceptor.c — the listeners, the process-wide and per-address connection limits, and the back-off when the
 * process is out of descriptors (bridge/acceptor.h).
 *
 * Out of descriptors. When accept() fails for want of a descriptor or of kernel memory (EMFILE, ENFILE, ENOBUFS,
 * ENOMEM), the pending connection stays in the kernel's backlog and the listening socket stays readable: a listener
 * left enabled is called again at once, forever, at 100 % CPU (and one log line per call). So every listener is
 * disabled for ACCEPTOR_BACKOFF_MIN_MS, doubling up to ACCEPTOR_BACKOFF_MAX_MS while accept() goes on failing, and
 * re-enabled by a timer; a successful accept resets the delay. Failures are logged at most once per
 * ACCEPTOR_LOG_INTERVAL_MS, with the number left unlogged since the last line. max_connections = 0 is derived from
 * RLIMIT_NOFILE (effective_max()) so that the limit, not the descriptor table, normally refuses the peer first.
 *
 * Over the memory budget (server_group.mem_over, set by bridge/main.c from bridge/memory.h), every socket is refused
 * at once as at a connection limit, before anything is counted or allocated for it; the refusals are only counted
 * here, and bridge/main.c logs them once, when the process is back under the budget.
 *
 * Per address (max_connections_per_ip). Only this thread counts in (at accept), so the table (a hash of chains keyed by
 * the address bytes) is only ever changed here; a connection is counted out with server_ip_release() by the worker
 * that frees it, an atomic decrement of its entry. An entry whose count is 0 is no connection's any more: it is freed
 * when a lookup walks past it, or by a sweep when the table holds more entries than it can need.
 */
#include "bridge/acceptor.h"

#include <errno.h>
#include <netinet/in.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>

#include <event2/event.h>
#include <event2/listener.h>

#include "bridge/clock.h"
#include "bridge/hash.h"
#include "bridge/peer.h"
#include "bridge/log.h"
#include "bridge/worker.h"
#include "conf/conf.h"

#define ACCEPTOR_BACKOFF_MIN_MS  100
#define ACCEPTOR_BACKOFF_MAX_MS  1000
#define ACCEPTOR_LOG_INTERVAL_MS 1000
#define ACCEPTOR_IP_BUCKETS      4096u

/* The reserve kept out of RLIMIT_NOFILE for what is not a client socket (doc/config.md, max_connections). */
#define ACCEPTOR_RESERVE_BASE       64
#define ACCEPTOR_RESERVE_PER_WORKER 16
#define ACCEPTOR_RESERVE_DIVISOR    32

struct server_ip {
    atomic_uint n; /* open connections from this address */
    struct server_ip *next;
    uint8_t len; /* 4 or 16 */
    uint8_t addr[16];
};

struct listener {
    struct acceptor *acc;
    struct evconnlistener *evl;
    enum server_port port;
};

struct acceptor {
    struct event_base *base;
    struct server_group *group;
    acceptor_dispatch_fn dispatch;
    void *arg;
    int max_connections; /* the effective limit: configured, or derived from RLIMIT_NOFILE */
    int max_per_ip;      /* 0 = off */
    struct listener l[SERVER_PORT_COUNT];
    /* out of descriptors */
    struct event *backoff_ev;
    unsigned backoff_ms; /* the next pause; 0 while accepting works */
    uint64_t last_log_ms;
    unsigned long unlogged; /* failures not logged since the last line */
    bool closed;
    /* max_connections_per_ip */
    struct server_ip *ips[ACCEPTOR_IP_BUCKETS];
    size_t n_ips;
    uint32_t ip_seed; /* random: a peer cannot choose addresses that all land in one bucket */
    /* refusals (limits): logged once per interval, like accept failures */
    uint64_t last_refused_log_ms;
    unsigned long unlogged_refused;
    /* over the memory budget: refusals are counted, and logged once when it is over (acceptor_memory_refusals()) */
    unsigned long refused_memory;
};

void server_ip_release(struct server_ip *ip)
{
    if (ip)
        atomic_fetch_sub(&ip->n, 1);
}

static void peer_str(const struct sockaddr *sa, char *out, size_t cap)
{
    char host[INET6_ADDRSTRLEN] = "?";
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
        evutil_inet_ntop(AF_INET, &in->sin_addr, host, sizeof(host));
        snprintf(out, cap, "%s:%d", host, ntohs(in->sin_port));
    } else if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
        evutil_inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof(host));
        snprintf(out, cap, "[%s]:%d", host, ntohs(in6->sin6_port));
    } else {
        snprintf(out, cap, "?");
    }
}

/* ------------------------------------------------------------------------------------------------------------------ */
/* max_connections_per_ip */

/* Frees the entries of bucket `b` that no connection holds any more. */
static void ip_bucket_sweep(struct acceptor *a, unsigned b)
{
    for (struct server_ip **pp = &a->ips[b]; *pp;) {
        struct server_ip *e = *pp;
        if (atomic_load(&e->n) == 0) {
            *pp = e->next;
            free(e);
            a->n_ips--;
        } else {
            pp = &e->next;
        }
    }
}

/*
 * Counts one more connection from `sa`: *out is its entry, or NULL when the limit is off or the address has no bytes.
 * Returns 0, 1 when the address is at max_connections_per_ip, or -ENOMEM.
 */
static int ip_take(struct acceptor *a, const struct sockaddr *sa, struct server_ip **out)
{
    uint8_t key[16];
    size_t len = peer_addr_key(sa, key); /* IPv6: its /64, which one client holds whole */
    *out = NULL;
    if (a->max_per_ip <= 0 || len == 0)
        return 0;
    if (a->n_ips > 2 * atomic_load(&a->group->conns) + ACCEPTOR_IP_BUCKETS) /* entries no connection holds */
        for (unsigned b = 0; b < ACCEPTOR_IP_BUCKETS; b++)
            ip_bucket_sweep(a, b);
    unsigned b = hash_seeded(a->ip_seed, key, len) % ACCEPTOR_IP_BUCKETS;
    struct server_ip *e = a->ips[b];
    while (e && !(e->len == len && memcmp(e->addr, key, len) == 0))
        e = e->next;
    if (!e) {
        ip_bucket_sweep(a, b); /* only now: an address that comes back keeps its entry instead of a free and a calloc */
        if (!(e = calloc(1, sizeof(*e))))
            return -ENOMEM;
        e->len = (uint8_t)len;
        memcpy(e->addr, key, len);
        e->next = a->ips[b];
        a->ips[b] = e;
        a->n_ips++;
    }
    if (atomic_load(&e->n) >= (unsigned)a->max_per_ip)
        return 1; /* only this thread counts in: the count cannot grow between the check and the add */
    atomic_fetch_add(&e->n, 1);
    *out = e;
    return 0;
}

/* ------------------------------------------------------------------------------------------------------------------ */
/* Accepting */

/* A refusal at a limit: one line per ACCEPTOR_LOG_INTERVAL_MS at most (the peer decides how many there are), with the
 * count of those not logged. */
static void log_refused(struct acceptor *a, const char *peer, const char *what, int limit)
{
    uint64_t now = clock_now_ms();
    if (a->last_refused_log_ms != 0 && now - a->last_refused_log_ms < ACCEPTOR_LOG_INTERVAL_MS) {
        a->unlogged_refused++;
        return;
    }
    log_msg(LOG_WARN, peer, "%s (%d) reached; refused (%lu more refusals since the last report)", what, limit, a->unlogged_refused);
    a->last_refused_log_ms = now;
    a->unlogged_refused = 0;
}

static void accept_cb(struct evconnlistener *evl, evutil_socket_t fd, struct sockaddr *sa, int salen, void *arg)
{
    struct listener *l = arg;
    struct acceptor *a = l->acc;
    struct server_socket s = {.fd = fd, .port = l->port};
    (void)evl;
    (void)salen;
    a->backoff_ms = 0;                      /* accepting works again */
    if (atomic_load(&a->group->mem_over)) { /* nothing allocated: a stack buffer, a send(), a close() */
        a->refused_memory++;
        server_reject(l->port, fd, "memory budget reached");
        return;
    }
    peer_str(sa, s.peer, sizeof(s.peer));
    size_t open = atomic_fetch_add(&a->group->conns, 1); /* counted in before the check: exact whatever the workers do */
    if (a->max_connections > 0 && open >= (size_t)a->max_connections) {
        atomic_fetch_sub(&a->group->conns, 1);
        log_refused(a, s.peer, "connection limit", a->max_connections);
        server_reject(l->port, fd, "connection limit reached");
        return;
    }
    int r = ip_take(a, sa, &s.ip);
    if (r != 0) {
        atomic_fetch_sub(&a->group->conns, 1);
        if (r > 0)
            log_refused(a, s.peer, "connection limit per address", a->max_per_ip);
        else
            log_msg(LOG_ERROR, s.peer, "out of memory counting a connection; refused");
        server_reject(l->port, fd, r > 0 ? "too many connections from this address" : "out of memory");
        return;
    }
    a->dispatch(a->arg, &s);
}

static void listeners_enable(struct acceptor *a, bool on)
{
    for (int i = 0; i < SERVER_PORT_COUNT; i++) {
        if (!a->l[i].evl)
            continue;
        if (on)
            evconnlistener_enable(a->l[i].evl);
        else
            evconnlistener_disable(a->l[i].evl);
    }
}

static void backoff_cb(evutil_socket_t fd, short what, void *arg)
{
    struct acceptor *a = arg;
    (void)fd;
    (void)what;
    if (!a->closed)
        listeners_enable(a, true); /* the next failure pauses again, for twice as long */
}

static bool out_of_resources(int err)
{
    return err == EMFILE || err == ENFILE || err == ENOBUFS || err == ENOMEM;
}

/* Logs an accept failure unless one was logged less than ACCEPTOR_LOG_INTERVAL_MS ago (then counts it). */
static void log_accept_error(struct acceptor *a, int err, unsigned pause_ms)
{
    uint64_t now = clock_now_ms();
    if (a->last_log_ms != 0 && now - a->last_log_ms < ACCEPTOR_LOG_INTERVAL_MS) {
        a->unlogged++;
        return;
    }
    char paused[64] = "";
    if (pause_ms)
        snprintf(paused, sizeof(paused), "; accepting paused for %u ms", pause_ms);
    char more[96] = "";
    if (a->unlogged)
        snprintf(more, sizeof(more), " (%lu more failures since the last report)", a->unlogged);
    log_msg(LOG_ERROR, NULL, "accept failed: %s%s%s", evutil_socket_error_to_string(err), paused, more);
    a->last_log_ms = now;
    a->unlogged = 0;
}

/* A failure other than "try again" (libevent handles those): see the file comment. */
static void accept_error_cb(struct evconnlistener *evl, void *arg)
{
    int err = EVUTIL_SOCKET_ERROR();
    struct listener *l = arg;
    struct acceptor *a = l->acc;
    (void)evl;
    if (!out_of_resources(err)) {
        log_accept_error(a, err, 0);
        return;
    }
    unsigned pause_ms = a->backoff_ms ? a->backoff_ms : ACCEPTOR_BACKOFF_MIN_MS;
    a->backoff_ms = pause_ms * 2 > ACCEPTOR_BACKOFF_MAX_MS ? ACCEPTOR_BACKOFF_MAX_MS : pause_ms * 2;
    log_accept_error(a, err, pause_ms);
    listeners_enable(a, false);
    struct timeval tv = clock_timeval(pause_ms);
    evtimer_add(a->backoff_ev, &tv);
}

/* ------------------------------------------------------------------------------------------------------------------ */
/* Limits */

int acceptor_max_connections_for(rlim_t nofile, unsigned workers)
{
    if (nofile == RLIM_INFINITY || nofile > 10000000)
        nofile = 10000000; /* the key's own maximum */
    long n = (long)nofile;
    long reserve = ACCEPTOR_RESERVE_BASE + ACCEPTOR_RESERVE_PER_WORKER * (long)workers + n / ACCEPTOR_RESERVE_DIVISOR;
    long max = n > 2 * reserve ? n - reserve : n / 2;
    return max > 0 ? (int)max : 1;
}

/* max_connections as configured, or derived from the soft RLIMIT_NOFILE when 0 (logged). */
static int effective_max(const struct conf *conf)
{
    struct rlimit rl;
    if (conf->max_connections > 0)
        return conf->max_connections;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0) {
        log_msg(LOG_WARN, NULL, "max_connections: cannot read RLIMIT_NOFILE (%s); no limit", strerror(errno));
        return 0;
    }
    int max = acceptor_max_connections_for(rl.rlim_cur, worker_count(conf));
    char lim[32] = "unlimited";
    if (rl.rlim_cur != RLIM_INFINITY)
        snprintf(lim, sizeof(lim), "%llu", (unsigned long long)rl.rlim_cur);
    log_msg(LOG_INFO, NULL, "max_connections: %d from RLIMIT_NOFILE %s (the rest is kept for AMQP sockets, eventfds, files)", max,
            lim);
    return max;
}

/* ------------------------------------------------------------------------------------------------------------------ */
/* Lifecycle */

/* Binds `l` on listen_addr:port. Returns 0, or a negative errno with a message logged. */
static int listen_on(struct acceptor *a, const struct conf *conf, struct listener *l, int port)
{
    struct sockaddr_storage ss;
    int sslen = sizeof(ss);
    char spec[300];
    snprintf(spec, sizeof(spec), strchr(conf->listen_addr, ':') ? "[%s]:%d" : "%s:%d", conf->listen_addr, port);
    if (evutil_parse_sockaddr_port(spec, (struct sockaddr *)&ss, &sslen) != 0) {
        log_msg(LOG_ERROR, NULL, "listen_addr: cannot parse '%s'", conf->listen_addr);
        return -EINVAL;
    }
    l->acc = a;
    l->evl = evconnlistener_new_bind(a->base, accept_cb, l, LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE | LEV_OPT_CLOSE_ON_EXEC, 1024,
                                     (struct sockaddr *)&ss, sslen);
    if (!l->evl) {
        int err = errno;
        log_msg(LOG_ERROR, NULL, "cannot listen on %s: %s", spec, strerror(err));
        return err ? -err : -EADDRINUSE;
    }
    evconnlistener_set_error_cb(l->evl, accept_error_cb);
    log_msg(LOG_INFO, NULL, "listening on %s (%s)", spec, server_port_scheme(l->port));
    return 0;
}

int acceptor_new(struct event_base *base, const struct conf *conf, struct server_group *group, acceptor_dispatch_fn dispatch,
                 void *arg, struct acceptor **out)
{
    struct acceptor *a = calloc(1, sizeof(*a));
    if (!a)
        return -ENOMEM;
    a->base = base;
    a->group = group;
    a->dispatch = dispatch;
    a->arg = arg;
    a->max_connections = effective_max(conf);
    a->max_per_ip = conf->max_connections_per_ip;
    a->ip_seed = hash_seed_new();
    a->backoff_ev = evtimer_new(base, backoff_cb, a);
    if (!a->backoff_ev) {
        free(a);
        return -ENOMEM;
    }
    const int port[SERVER_PORT_COUNT] = {[SERVER_PORT_WS] = conf->listen_port, [SERVER_PORT_WSS] = conf->tls_listen_port};
    int r = 0;
    for (int i = 0; i < SERVER_PORT_COUNT && r == 0; i++) {
        a->l[i].port = (enum server_port)i;
        if (port[i] > 0)
            r = listen_on(a, conf, &a->l[i], port[i]);
    }
    if (r != 0) {
        acceptor_free(a);
        return r;
    }
    *out = a;
    return 0;
}

void acceptor_conf_update(struct acceptor *a, const struct conf *conf)
{
    a->max_connections = effective_max(conf);
    a->max_per_ip = conf->max_connections_per_ip; /* lowered: addresses above it keep theirs, and get no more */
}

unsigned long acceptor_memory_refusals(struct acceptor *a)
{
    unsigned long n = a->refused_memory;
    a->refused_memory = 0;
    return n;
}

void acceptor_close(struct acceptor *a)
{
    a->closed = true;
    evtimer_del(a->backoff_ev);
    for (int i = 0; i < SERVER_PORT_COUNT; i++) {
        if (a->l[i].evl)
            evconnlistener_free(a->l[i].evl);
        a->l[i].evl = NULL;
    }
}

void acceptor_free(struct acceptor *a)
{
    if (!a)
        return;
    acceptor_close(a);
    event_free(a->backoff_ev);
    for (unsigned b = 0; b < ACCEPTOR_IP_BUCKETS; b++) {
        while (a->ips[b]) { /* every connection is freed by now (bridge/main.c frees the workers first) */
            struct server_ip *e = a->ips[b];
            a->ips[b] = e->next;
            free(e);
        }
    }
    free(a);
}
