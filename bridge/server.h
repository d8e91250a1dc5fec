/*
 * bridge/server.h — the listeners of one event loop and the set of its live connections.
 *
 * A server binds the plain listener (listen_addr:listen_port) and, when configured, the TLS listener
 * (listen_addr:tls_listen_port, OpenSSL through libevent_openssl), accepts connections on its event_base, and owns every
 * `struct conn` (bridge/conn.h) until it closes; each starts with the HTTP front-end (bridge/http.h). server_shutdown()
 * stops accepting and closes every connection gracefully (WebSocket close 1001, going away); server_free() frees
 * whatever is left at once, so a clean shutdown is leak-free under ASan. server_conf_update() applies a configuration
 * reload to the connections accepted afterwards.
 */
#pragma once

#include <stddef.h>

struct conf;
struct event_base;
struct upstream;
struct server;

/*
 * Binds the listeners. `conf` is copied (the caller keeps its own). Returns 0, or a negative errno with a message logged
 * (startup errors are fatal for the caller).
 */
int server_new(struct event_base *base, const struct conf *conf, struct upstream *up, struct server **out);

/*
 * Graceful shutdown: closes the listeners and calls every open connection's front-end to say goodbye: a WebSocket gets a
 * close frame 1001 (going away), a connection still in its HTTP request is dropped, a closing one goes on closing.
 * `done(arg)` is called from the loop once the last connection is gone, or at once when there is none. The caller
 * bounds the wait (clients that never answer linger up to a few seconds).
 */
void server_shutdown(struct server *srv, void (*done)(void *arg), void *arg);

/* Stops listening, frees every connection at once (no close handshake). NULL is a no-op. */
void server_free(struct server *srv);

/*
 * A reload: connections accepted from now on use a copy of `conf` (validated, and differing from the running one only in
 * reloadable keys: conf_reload_check()); open connections keep the configuration they started with, which is freed when
 * the last of them closes. Returns 0, or -ENOMEM with the current configuration unchanged.
 */
int server_conf_update(struct server *srv, const struct conf *conf);

/* Live connections, whatever their front-end (for logs and metrics). */
size_t server_client_count(const struct server *srv);
