/*
 * bridge/server.c — listeners (plain and TLS) and the list of live clients.
 *
 * evconnlistener accepts; each socket becomes a `struct client` (bridge/client.c). The TLS listener wraps the socket in
 * an SSL object from one SSL_CTX (TLS 1.2+, certificate and key from the config, client certificates verified when
 * tls_ca_file is set) and lets libevent_openssl run the handshake without blocking the loop. Past max_connections a
 * new socket gets an HTTP 503 and is closed at once, so an overload never costs more than the accept.
 *
 * The server keeps its current configuration as a reference-counted `struct client_conf` (bridge/client.h): each client
 * takes a reference at accept, and server_conf_update() (a reload) swaps in a new one for the connections accepted
 * afterwards while the open ones keep theirs; max_connections is read from the current one at each accept.
 */
#include "bridge/server.h"

#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <event2/event.h>
#include <event2/listener.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

#include "bridge/client.h"
#include "bridge/log.h"
#include "conf/conf.h"

struct server {
    struct server_ctx ctx;
    struct evconnlistener *plain;
    struct evconnlistener *tls;
    SSL_CTX *ssl_ctx;
    struct upstream *up;
};

static void peer_str(const struct sockaddr *sa, char *out, size_t cap)
{
    char host[INET6_ADDRSTRLEN] = "?";
    int port = 0;
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
        evutil_inet_ntop(AF_INET, &in->sin_addr, host, sizeof(host));
        port = ntohs(in->sin_port);
        snprintf(out, cap, "%s:%d", host, port);
    } else if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
        evutil_inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof(host));
        port = ntohs(in6->sin6_port);
        snprintf(out, cap, "[%s]:%d", host, port);
    } else {
        snprintf(out, cap, "?");
    }
}

static void accept_common(struct server *srv, evutil_socket_t fd, struct sockaddr *sa, bool tls)
{
    const struct conf *conf = &srv->ctx.conf->conf;
    char peer[64];
    peer_str(sa, peer, sizeof(peer));
    if (conf->max_connections > 0 && srv->ctx.n_clients >= (size_t)conf->max_connections) {
        log_msg(LOG_WARN, peer, "connection limit (%d) reached; refused", conf->max_connections);
        client_reject_fd(fd, 503, "connection limit reached");
        return;
    }
    SSL *ssl = NULL;
    if (tls) {
        ssl = SSL_new(srv->ssl_ctx);
        if (!ssl) {
            evutil_closesocket(fd);
            return;
        }
    }
    if (client_start(&srv->ctx, fd, ssl, peer) != 0)
        log_msg(LOG_ERROR, peer, "out of memory accepting a connection");
}

static void accept_plain_cb(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa, int salen, void *arg)
{
    accept_common(arg, fd, sa, false);
}

static void accept_tls_cb(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa, int salen, void *arg)
{
    accept_common(arg, fd, sa, true);
}

static void accept_error_cb(struct evconnlistener *l, void *arg)
{
    int err = EVUTIL_SOCKET_ERROR();
    /* EMFILE and friends: keep the listener, log, and let existing connections go on. */
    log_msg(LOG_ERROR, NULL, "accept failed: %s", evutil_socket_error_to_string(err));
}

static int listen_on(struct server *srv, int port, evconnlistener_cb cb, struct evconnlistener **out)
{
    const struct conf *conf = &srv->ctx.conf->conf;
    struct sockaddr_storage ss;
    int sslen = sizeof(ss);
    char spec[300];
    snprintf(spec, sizeof(spec), strchr(conf->listen_addr, ':') ? "[%s]:%d" : "%s:%d", conf->listen_addr, port);
    if (evutil_parse_sockaddr_port(spec, (struct sockaddr *)&ss, &sslen) != 0) {
        log_msg(LOG_ERROR, NULL, "listen_addr: cannot parse '%s'", conf->listen_addr);
        return -EINVAL;
    }
    *out = evconnlistener_new_bind(srv->ctx.base, cb, srv, LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE | LEV_OPT_CLOSE_ON_EXEC, 1024,
                                   (struct sockaddr *)&ss, sslen);
    if (!*out) {
        int err = errno;
        log_msg(LOG_ERROR, NULL, "cannot listen on %s: %s", spec, strerror(err));
        return err ? -err : -EADDRINUSE;
    }
    evconnlistener_set_error_cb(*out, accept_error_cb);
    log_msg(LOG_INFO, NULL, "listening on %s (%s)", spec, cb == accept_tls_cb ? "wss" : "ws");
    return 0;
}

static int tls_setup(struct server *srv)
{
    const struct conf *conf = &srv->ctx.conf->conf;
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (!ctx)
        return -ENOMEM;
    srv->ssl_ctx = ctx;
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE);
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
    if (SSL_CTX_use_certificate_chain_file(ctx, conf->tls_cert_file) != 1 ||
        SSL_CTX_use_PrivateKey_file(ctx, conf->tls_key_file, SSL_FILETYPE_PEM) != 1 || SSL_CTX_check_private_key(ctx) != 1) {
        log_msg(LOG_ERROR, NULL, "tls: cannot load %s / %s: %s", conf->tls_cert_file, conf->tls_key_file,
                ERR_reason_error_string(ERR_get_error()));
        return -EINVAL;
    }
    if (conf->tls_ca_file[0]) {
        if (SSL_CTX_load_verify_locations(ctx, conf->tls_ca_file, NULL) != 1) {
            log_msg(LOG_ERROR, NULL, "tls: cannot load CA file %s", conf->tls_ca_file);
            return -EINVAL;
        }
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);
    }
    return 0;
}

int server_new(struct event_base *base, const struct conf *conf, struct upstream *up, struct server **out)
{
    struct server *srv = calloc(1, sizeof(*srv));
    if (!srv)
        return -ENOMEM;
    srv->ctx.base = base;
    srv->up = up;
    int r = client_conf_new(conf, base, up, &srv->ctx.conf);
    if (r != 0) {
        free(srv);
        return r;
    }
    conf = &srv->ctx.conf->conf;
    if (conf->listen_port > 0)
        r = listen_on(srv, conf->listen_port, accept_plain_cb, &srv->plain);
    if (r == 0 && conf->tls_listen_port > 0) {
        r = tls_setup(srv);
        if (r == 0)
            r = listen_on(srv, conf->tls_listen_port, accept_tls_cb, &srv->tls);
    }
    if (r != 0) {
        server_free(srv);
        return r;
    }
    *out = srv;
    return 0;
}

static void listeners_close(struct server *srv)
{
    if (srv->plain)
        evconnlistener_free(srv->plain);
    if (srv->tls)
        evconnlistener_free(srv->tls);
    srv->plain = NULL;
    srv->tls = NULL;
}

void server_shutdown(struct server *srv, void (*done)(void *arg), void *arg)
{
    listeners_close(srv);
    if (srv->ctx.n_clients == 0) {
        done(arg);
        return;
    }
    srv->ctx.on_empty = done;
    srv->ctx.on_empty_arg = arg;
    client_shutdown_all(&srv->ctx);
}

void server_free(struct server *srv)
{
    if (!srv)
        return;
    listeners_close(srv);
    srv->ctx.on_empty = NULL;
    while (srv->ctx.clients)
        client_free(srv->ctx.clients);
    SSL_CTX_free(srv->ssl_ctx);
    client_conf_unref(srv->ctx.conf);
    free(srv);
}

int server_conf_update(struct server *srv, const struct conf *conf)
{
    struct client_conf *cc = NULL;
    int r = client_conf_new(conf, srv->ctx.base, srv->up, &cc);
    if (r != 0)
        return r;
    client_conf_unref(srv->ctx.conf); /* freed now, or with the last client that still uses it */
    srv->ctx.conf = cc;
    return 0;
}

size_t server_client_count(const struct server *srv)
{
    return srv->ctx.n_clients;
}
