/*
 * bridge/client.h — one client connection: HTTP/1.1 request, WebSocket upgrade (ws/), WebSocket framing and
 * permessage-deflate, and the hand-over of message payloads to its STOMP session (bridge/session.h).
 *
 * Private to bridge/server.c, which accepts sockets and keeps the list of clients.
 */
#pragma once

#include <openssl/ssl.h>
#include <event2/util.h>

#include "bridge/session.h"
#include "conf/conf.h"

struct client;
struct server_ctx;

/*
 * One configuration and what is derived from it, shared by the clients accepted while it was current. The server holds
 * a reference to its current one and each client holds one from its accept to client_free(), so a reload (SIGHUP) never
 * changes an open connection; the last reference frees it. Loop thread only (no locking).
 */
struct client_conf {
    struct conf conf;
    unsigned refs;
    char server_header[64]; /* CONNECTED `server`: server_name/version */
    struct session_env env; /* env.conf == &conf */
};

/* What server.c shares with every client of one server. */
struct server_ctx {
    struct event_base *base;
    struct client_conf *conf; /* the current configuration: clients accepted from now on take a reference to it */
    struct client *clients;   /* doubly linked list of live clients */
    size_t n_clients;
    void (*on_empty)(void *arg); /* when set, called once the last client is freed (graceful shutdown) */
    void *on_empty_arg;
};

/*
 * A deep copy of `conf` with one reference (the caller's), for sessions on `base` using `up`. Returns 0 or -ENOMEM.
 */
int client_conf_new(const struct conf *conf, struct event_base *base, struct upstream *up, struct client_conf **out);

/* Drops one reference; the last one frees the configuration. NULL is a no-op. */
void client_conf_unref(struct client_conf *cc);

/*
 * Takes over the accepted socket `fd` (and `ssl`, when the listener is TLS: the handshake runs inside libevent_openssl).
 * `peer` is the printable peer address. The client uses ctx->conf as it is now (taking a reference) for its whole life. On failure
 * the socket (and ssl) are closed and freed and -ENOMEM is returned.
 */
int client_start(struct server_ctx *ctx, evutil_socket_t fd, SSL *ssl, const char *peer);

/* Frees a client at once (the reaper, and server shutdown): its session ends, the socket closes. */
void client_free(struct client *c);

/*
 * Starts closing every client of `ctx` because the server shuts down: an open WebSocket gets close 1001 (going away)
 * and the usual close handshake, a connection still sending its HTTP request is dropped, one already closing goes on.
 * Clients are freed later, from the loop (never inside this call).
 */
void client_shutdown_all(struct server_ctx *ctx);

/* Writes a minimal HTTP error reply on a raw socket and closes it (used when the connection limit is reached). */
void client_reject_fd(evutil_socket_t fd, int status, const char *reason);
