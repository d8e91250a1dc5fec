/*
 * bridge/server.h — the listeners and the set of live client connections.
 *
 * A server binds the plain listener (listen_addr:listen_port) and, when configured, the TLS listener
 * (listen_addr:tls_listen_port, OpenSSL through libevent_openssl), accepts connections on its event_base, and owns every
 * `struct client` (bridge/client.c) until it closes. server_free() closes what is left (WebSocket close 1001, going away)
 * and frees it, so a clean shutdown is leak-free under ASan.
 */
#pragma once

#include <stddef.h>

struct conf;
struct event_base;
struct upstream;
struct server;

/* Binds the listeners. Returns 0, or a negative errno with a message logged (startup errors are fatal for the caller). */
int server_new(struct event_base *base, const struct conf *conf, struct upstream *up, struct server **out);

/* Stops listening, closes and frees every client. NULL is a no-op. */
void server_free(struct server *srv);

/* Live client connections (for logs and metrics). */
size_t server_client_count(const struct server *srv);
