/*
 * bridge/acceptor.c — the listeners and the process-wide connection limit (bridge/acceptor.h).
 */
#include "bridge/acceptor.h"

#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <event2/event.h>
#include <event2/listener.h>

#include "bridge/log.h"
#include "conf/conf.h"

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
    int max_connections; /* 0 = unlimited */
    struct listener l[SERVER_PORT_COUNT];
};

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

static void accept_cb(struct evconnlistener *evl, evutil_socket_t fd, struct sockaddr *sa, int salen, void *arg)
{
    struct listener *l = arg;
    struct acceptor *a = l->acc;
    char peer[64];
    peer_str(sa, peer, sizeof(peer));
    size_t open = atomic_fetch_add(&a->group->conns, 1); /* counted in before the check: exact whatever the workers do */
    if (a->max_connections > 0 && open >= (size_t)a->max_connections) {
        atomic_fetch_sub(&a->group->conns, 1);
        log_msg(LOG_WARN, peer, "connection limit (%d) reached; refused", a->max_connections);
        server_reject(l->port, fd);
        return;
    }
    a->dispatch(a->arg, fd, peer, l->port);
}

static void accept_error_cb(struct evconnlistener *l, void *arg)
{
    int err = EVUTIL_SOCKET_ERROR();
    /* EMFILE and friends: keep the listener, log, and let existing connections go on. */
    log_msg(LOG_ERROR, NULL, "accept failed: %s", evutil_socket_error_to_string(err));
}

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
    *a =
        (struct acceptor){.base = base, .group = group, .dispatch = dispatch, .arg = arg, .max_connections = conf->max_connections};
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
    a->max_connections = conf->max_connections;
}

void acceptor_close(struct acceptor *a)
{
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
    free(a);
}
