/*
 * bridge/server.c — the live connections of one worker loop, and the kinds of port they arrive on.
 *
 * The acceptor (bridge/acceptor.c, on the main thread) accepts and hands each socket to a worker, whose server makes it
 * a `struct conn` (bridge/conn.h), keeps it on its list until the transport frees it (conn_accept.gone), and gives it
 * the first front-end of its port: HTTP on the WebSocket ports (bridge/http.h), which hands an upgraded connection over
 * to bridge/wsconn.h. The server never looks inside a front-end: shutdown goes through each connection's ops
 * (conn_shutdown()), and the front-end's state is freed by the transport. A TLS port wraps the socket in an SSL object
 * from the server's SSL_CTX (TLS 1.2+, certificate and key from the config, client certificates verified when
 * tls_ca_file is set) and lets libevent_openssl run the handshake without blocking the loop.
 *
 * The server keeps its current configuration as a reference-counted `struct conn_conf` (bridge/conn.h): each connection
 * takes a reference at adoption, and server_conf_update() (a reload) swaps in a new one for the connections adopted
 * afterwards while the open ones keep theirs.
 *
 * Everything is reached from `struct server` (no globals), one per worker; only `load` is read from another thread.
 */
#include "bridge/server.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <event2/event.h>
#include <openssl/err.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>

#include "bridge/clock.h"
#include "bridge/excl.h"
#include "bridge/fanout.h"
#include "bridge/conn.h"
#include "bridge/http.h"
#include "bridge/list.h"
#include "bridge/log.h"
#include "conf/conf.h"

/*
 * What a port's connections start as, and what a socket refused at the limit gets. A plain STOMP-over-TCP port would be
 * one more row, with its own `start` (and a `reject` answering in STOMP).
 */
struct port_kind {
    const char *scheme; /* "ws", "wss" (logs) */
    bool tls;
    int (*start)(struct conn *c);                                       /* installs the first front-end */
    void (*reject)(evutil_socket_t fd, int status, const char *reason); /* past max_connections */
};

static void tls_reject_fd(evutil_socket_t fd, int status, const char *reason);
static void held_check_cb(evutil_socket_t fd, short what, void *arg);

static const struct port_kind ports[SERVER_PORT_COUNT] = {
    [SERVER_PORT_WS] = {.scheme = "ws", .start = http_conn_start, .reject = http_reject_fd},
    [SERVER_PORT_WSS] = {.scheme = "wss", .tls = true, .start = http_conn_start, .reject = tls_reject_fd},
};

struct server {
    struct event_base *base;
    struct upstream *up;
    struct server_group *group;
    struct conn_conf *cc; /* the current configuration: connections adopted from now on take a reference to it */
    struct list conns;    /* struct conn, by conn_node() */
    size_t n_conns;
    atomic_size_t load;          /* sockets handed to this server and not freed yet (the acceptor reads it) */
    void (*on_empty)(void *arg); /* when set, called once the last connection is freed (graceful shutdown) */
    void *on_empty_arg;
    SSL_CTX *ssl_ctx;
    struct event *held_ev; /* while over the memory budget: held connections whose peer left are closed */
    struct excl *excl;     /* the exclusive queues of this worker's sessions (bridge/excl.h) */
    struct fanout *fanout; /* the local fan-out groups of this worker's sessions (bridge/fanout.h) */
};

/* How often the connections held over the memory budget are checked for a peer that left (conn_held_check()). */
#define SERVER_HELD_CHECK_MS 200

/* conn_accept.gone: the transport frees `c`. */
static void conn_gone(void *owner, struct conn *c)
{
    struct server *srv = owner;
    list_unlink(conn_node(c));
    srv->n_conns--;
    server_dropped(srv, conn_owner_tag(c));
    if (srv->n_conns == 0 && srv->on_empty)
        srv->on_empty(srv->on_empty_arg);
}

void server_dropped(struct server *srv, struct server_ip *ip)
{
    atomic_fetch_sub(&srv->load, 1);
    atomic_fetch_sub(&srv->group->conns, 1);
    server_ip_release(ip);
}

void server_adopt(struct server *srv, const struct server_socket *s)
{
    const struct port_kind *k = &ports[s->port];
    SSL *ssl = k->tls ? SSL_new(srv->ssl_ctx) : NULL;
    struct conn_accept a = {.base = srv->base,
                            .cc = srv->cc,
                            .fd = s->fd,
                            .ssl = ssl,
                            .peer = s->peer,
                            .gone = conn_gone,
                            .owner = srv,
                            .owner_tag = s->ip,
                            .hold = &srv->group->mem_over};
    struct conn *c = NULL;
    if (k->tls && !ssl) {
        evutil_closesocket(s->fd);
        server_dropped(srv, s->ip);
        return;
    }
    if (conn_new(&a, &c) != 0) {
        server_dropped(srv, s->ip);
        log_msg(LOG_ERROR, s->peer, "out of memory accepting a connection");
        return;
    }
    list_link_tail(&srv->conns, conn_node(c));
    srv->n_conns++;
    if (k->start(c) != 0)
        conn_kill(c);
}

/*
 * port_kind.reject of the TLS port: no reply (see server_reject()), but a FIN rather than a RST: what the client sent
 * already (its ClientHello) is read first, since close() with unread input resets the connection.
 */
static void tls_reject_fd(evutil_socket_t fd, int status, const char *reason)
{
    (void)status;
    (void)reason;
    char buf[2048];
    shutdown(fd, SHUT_WR);
    for (int i = 0; i < 8 && recv(fd, buf, sizeof(buf), MSG_DONTWAIT) > 0; i++)
        ;
    evutil_closesocket(fd);
}

void server_reject(enum server_port port, evutil_socket_t fd, const char *reason)
{
    ports[port].reject(fd, 503, reason);
}

const char *server_port_scheme(enum server_port port)
{
    return ports[port].scheme;
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
    /*
     * The context a session may be resumed in. Without it OpenSSL refuses to resume any session once peers are verified
     * (tls_ca_file: SSL_R_SESSION_ID_CONTEXT_UNINITIALIZED), failing the handshake of every client that offers one.
     */
    static const unsigned char sid_ctx[] = "warren";
    SSL_CTX_set_session_id_context(ctx, sid_ctx, sizeof(sid_ctx) - 1);
    struct server_group *g = srv->group;
    if (!g->tls_ticket_keys_set && RAND_bytes(g->tls_ticket_keys, sizeof(g->tls_ticket_keys)) != 1) {
        log_msg(LOG_ERROR, NULL, "tls: cannot draw session-ticket keys");
        return -EIO;
    }
    g->tls_ticket_keys_set = true;
    if (SSL_CTX_set_tlsext_ticket_keys(ctx, g->tls_ticket_keys, sizeof(g->tls_ticket_keys)) != 1) {
        log_msg(LOG_ERROR, NULL, "tls: cannot set session-ticket keys");
        return -EINVAL;
    }
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

/* A configuration for the connections adopted from now on; their sessions share the server's exclusive-queue table. */
static int cc_new(struct server *srv, const struct conf *conf, struct conn_conf **out)
{
    int r = conn_conf_new(conf, srv->base, srv->up, out);
    if (r == 0) {
        (*out)->env.excl = srv->excl;
        (*out)->env.fanout = srv->fanout;
        (*out)->env.throttle = srv->group->login_throttle;
    }
    return r;
}

int server_new(struct event_base *base, const struct conf *conf, struct upstream *up, struct server_group *group,
               struct server **out)
{
    struct server *srv = calloc(1, sizeof(*srv));
    if (!srv)
        return -ENOMEM;
    srv->base = base;
    srv->up = up;
    srv->group = group;
    list_init(&srv->conns);
    if (!(srv->held_ev = event_new(base, -1, EV_PERSIST, held_check_cb, srv))) {
        free(srv);
        return -ENOMEM;
    }
    int r = excl_new(&srv->excl);
    if (r == 0 && (r = fanout_new(base, up, &srv->fanout)) != 0)
        excl_free(srv->excl);
    if (r == 0 && (r = cc_new(srv, conf, &srv->cc)) != 0) {
        fanout_free(srv->fanout);
        excl_free(srv->excl);
    }
    if (r != 0) {
        event_free(srv->held_ev);
        free(srv);
        return r;
    }
    if (conf->tls_listen_port > 0 && (r = tls_setup(srv)) != 0) {
        server_free(srv);
        return r;
    }
    *out = srv;
    return 0;
}

void server_shutdown(struct server *srv, void (*done)(void *arg), void *arg)
{
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
    srv->on_empty = NULL;
    while (!list_is_empty(&srv->conns))
        conn_free(conn_of_node(srv->conns.next));
    SSL_CTX_free(srv->ssl_ctx);
    conn_conf_unref(srv->cc);
    event_free(srv->held_ev);
    fanout_free(srv->fanout); /* after the connections: their sessions left their groups, which went with the last */
    excl_free(srv->excl);     /* after the connections: their sessions gave their claims back */
    free(srv);
}

int server_conf_update(struct server *srv, const struct conf *conf)
{
    struct conn_conf *cc = NULL;
    int r = cc_new(srv, conf, &cc);
    if (r != 0)
        return r;
    conn_conf_unref(srv->cc); /* freed now, or with the last connection that still uses it */
    srv->cc = cc;
    return 0;
}

static void held_check_cb(evutil_socket_t fd, short what, void *arg)
{
    struct server *srv = arg;
    (void)fd;
    (void)what;
    for (struct list *node = srv->conns.next; node != &srv->conns; node = node->next)
        conn_held_check(conn_of_node(node)); /* a kill only schedules the free: the list stays as it is */
}

void server_memory_changed(struct server *srv)
{
    bool over = atomic_load(&srv->group->mem_over);
    for (struct list *node = srv->conns.next; node != &srv->conns; node = node->next)
        conn_hold_reading(conn_of_node(node), over); /* never frees, never calls a front-end from here */
    if (over) {
        struct timeval tv = clock_timeval(SERVER_HELD_CHECK_MS);
        event_add(srv->held_ev, &tv);
    } else {
        event_del(srv->held_ev);
    }
}

void server_handed(struct server *srv)
{
    atomic_fetch_add(&srv->load, 1);
}

size_t server_load(struct server *srv)
{
    return atomic_load(&srv->load);
}
