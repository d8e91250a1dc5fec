/*
 * bridge/server.c — the listeners (plain and TLS) of one event loop and the list of its live connections.
 *
 * evconnlistener accepts; each socket becomes a `struct conn` (bridge/conn.h) that the server keeps on its list until the
 * transport frees it (conn_accept.gone), and the listener's `start` gives it its first front-end: HTTP on the WebSocket
 * ports (bridge/http.h), which hands an upgraded connection over to bridge/wsconn.h. The server never looks inside a
 * front-end: shutdown goes through each connection's ops (conn_shutdown()), and the front-end's state is freed by the
 * transport. The TLS listener wraps the socket in an SSL object from one SSL_CTX (TLS 1.2+, certificate and key from the
 * config, client certificates verified when tls_ca_file is set) and lets libevent_openssl run the handshake without
 * blocking the loop. Past max_connections a new socket gets the listener's refusal (HTTP 503) and is closed at once, so
 * an overload never costs more than the accept.
 *
 * The server keeps its current configuration as a reference-counted `struct conn_conf` (bridge/conn.h): each connection
 * takes a reference at accept, and server_conf_update() (a reload) swaps in a new one for the connections accepted
 * afterwards while the open ones keep theirs; max_connections is read from the current one at each accept.
 *
 * Everything is reached from `struct server` (no globals): one server per event loop is the shape for one loop per core.
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

#include "bridge/conn.h"
#include "bridge/http.h"
#include "bridge/list.h"
#include "bridge/log.h"
#include "conf/conf.h"

/*
 * One listening socket and what its connections start as. A plain STOMP-over-TCP port would be one more of these with
 * its own `start` (and a `reject` answering in STOMP).
 */
struct listener {
    struct server *srv;
    struct evconnlistener *evl;
    const char *scheme; /* "ws", "wss" (the log line) */
    bool tls;
    int (*start)(struct conn *c);                                       /* installs the first front-end */
    void (*reject)(evutil_socket_t fd, int status, const char *reason); /* past max_connections */
};

struct server {
    struct event_base *base;
    struct upstream *up;
    struct conn_conf *cc; /* the current configuration: connections accepted from now on take a reference to it */
    struct list conns;    /* struct conn, by conn_node() */
    size_t n_conns;
    void (*on_empty)(void *arg); /* when set, called once the last connection is freed (graceful shutdown) */
    void *on_empty_arg;
    struct listener plain;
    struct listener tls;
    SSL_CTX *ssl_ctx;
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

/* conn_accept.gone: the transport frees `c`. */
static void conn_gone(void *owner, struct conn *c)
{
    struct server *srv = owner;
    list_unlink(conn_node(c));
    srv->n_conns--;
    if (srv->n_conns == 0 && srv->on_empty)
        srv->on_empty(srv->on_empty_arg);
}

static void accept_cb(struct evconnlistener *evl, evutil_socket_t fd, struct sockaddr *sa, int salen, void *arg)
{
    struct listener *l = arg;
    struct server *srv = l->srv;
    const struct conf *conf = &srv->cc->conf;
    char peer[64];
    peer_str(sa, peer, sizeof(peer));
    if (conf->max_connections > 0 && srv->n_conns >= (size_t)conf->max_connections) {
        log_msg(LOG_WARN, peer, "connection limit (%d) reached; refused", conf->max_connections);
        l->reject(fd, 503, "connection limit reached");
        return;
    }
    SSL *ssl = l->tls ? SSL_new(srv->ssl_ctx) : NULL;
    if (l->tls && !ssl) {
        evutil_closesocket(fd);
        return;
    }
    struct conn_accept a = {.base = srv->base, .cc = srv->cc, .fd = fd, .ssl = ssl, .peer = peer, .gone = conn_gone, .owner = srv};
    struct conn *c = NULL;
    if (conn_new(&a, &c) != 0) {
        log_msg(LOG_ERROR, peer, "out of memory accepting a connection");
        return;
    }
    list_link_tail(&srv->conns, conn_node(c));
    srv->n_conns++;
    if (l->start(c) != 0)
        conn_kill(c);
}

static void accept_error_cb(struct evconnlistener *l, void *arg)
{
    int err = EVUTIL_SOCKET_ERROR();
    /* EMFILE and friends: keep the listener, log, and let existing connections go on. */
    log_msg(LOG_ERROR, NULL, "accept failed: %s", evutil_socket_error_to_string(err));
}

/* Binds `l` on listen_addr:port. Returns 0, or a negative errno with a message logged. */
static int listen_on(struct server *srv, struct listener *l, int port)
{
    const struct conf *conf = &srv->cc->conf;
    struct sockaddr_storage ss;
    int sslen = sizeof(ss);
    char spec[300];
    snprintf(spec, sizeof(spec), strchr(conf->listen_addr, ':') ? "[%s]:%d" : "%s:%d", conf->listen_addr, port);
    if (evutil_parse_sockaddr_port(spec, (struct sockaddr *)&ss, &sslen) != 0) {
        log_msg(LOG_ERROR, NULL, "listen_addr: cannot parse '%s'", conf->listen_addr);
        return -EINVAL;
    }
    l->srv = srv;
    l->evl = evconnlistener_new_bind(srv->base, accept_cb, l, LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE | LEV_OPT_CLOSE_ON_EXEC,
                                     1024, (struct sockaddr *)&ss, sslen);
    if (!l->evl) {
        int err = errno;
        log_msg(LOG_ERROR, NULL, "cannot listen on %s: %s", spec, strerror(err));
        return err ? -err : -EADDRINUSE;
    }
    evconnlistener_set_error_cb(l->evl, accept_error_cb);
    log_msg(LOG_INFO, NULL, "listening on %s (%s)", spec, l->scheme);
    return 0;
}

static int tls_setup(struct server *srv)
{
    const struct conf *conf = &srv->cc->conf;
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

/* The WebSocket listeners: HTTP first, the upgrade to WebSocket at ws_path (bridge/http.c). */
static const struct listener ws_listener = {.scheme = "ws", .start = http_conn_start, .reject = http_reject_fd};
static const struct listener wss_listener = {.scheme = "wss", .tls = true, .start = http_conn_start, .reject = http_reject_fd};

static int listeners_open(struct server *srv)
{
    const struct conf *conf = &srv->cc->conf;
    int r = 0;
    srv->plain = ws_listener;
    srv->tls = wss_listener;
    if (conf->listen_port > 0)
        r = listen_on(srv, &srv->plain, conf->listen_port);
    if (r == 0 && conf->tls_listen_port > 0) {
        r = tls_setup(srv);
        if (r == 0)
            r = listen_on(srv, &srv->tls, conf->tls_listen_port);
    }
    return r;
}

int server_new(struct event_base *base, const struct conf *conf, struct upstream *up, struct server **out)
{
    struct server *srv = calloc(1, sizeof(*srv));
    if (!srv)
        return -ENOMEM;
    srv->base = base;
    srv->up = up;
    list_init(&srv->conns);
    int r = conn_conf_new(conf, base, up, &srv->cc);
    if (r != 0) {
        free(srv);
        return r;
    }
    r = listeners_open(srv);
    if (r != 0) {
        server_free(srv);
        return r;
    }
    *out = srv;
    return 0;
}

static void listeners_close(struct server *srv)
{
    if (srv->plain.evl)
        evconnlistener_free(srv->plain.evl);
    if (srv->tls.evl)
        evconnlistener_free(srv->tls.evl);
    srv->plain.evl = NULL;
    srv->tls.evl = NULL;
}

void server_shutdown(struct server *srv, void (*done)(void *arg), void *arg)
{
    listeners_close(srv);
    if (srv->n_conns == 0) {
        done(arg);
        return;
    }
    srv->on_empty = done;
    srv->on_empty_arg = arg;
    struct list *node, *next;
    for (node = srv->conns.next; node != &srv->conns; node = next) {
        next = node->next;
        conn_shutdown(conn_of_node(node)); /* never frees: a connection dropped now is freed from the loop */
    }
}

void server_free(struct server *srv)
{
    if (!srv)
        return;
    listeners_close(srv);
    srv->on_empty = NULL;
    while (!list_is_empty(&srv->conns))
        conn_free(conn_of_node(srv->conns.next));
    SSL_CTX_free(srv->ssl_ctx);
    conn_conf_unref(srv->cc);
    free(srv);
}

int server_conf_update(struct server *srv, const struct conf *conf)
{
    struct conn_conf *cc = NULL;
    int r = conn_conf_new(conf, srv->base, srv->up, &cc);
    if (r != 0)
        return r;
    conn_conf_unref(srv->cc); /* freed now, or with the last connection that still uses it */
    srv->cc = cc;
    return 0;
}

size_t server_client_count(const struct server *srv)
{
    return srv->n_conns;
}
