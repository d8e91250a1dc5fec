/*
 * bridge/http.h — the HTTP/1.1 front-end of a connection (bridge/conn.h): reads one request head (ws/handshake.h,
 * bounded by max_handshake_bytes and max_http_headers, within login_timeout_ms) and answers it from a route table in
 * bridge/http.c: the WebSocket upgrade at ws_path (handed over to bridge/wsconn.h after the 101 reply) and the static
 * files of http_root. Every other answer is one reply, then a graceful close (no keep-alive).
 *
 * Statuses: 101 (upgrade), 200 (a file), 400/405/431/505 (a request ws/handshake.c rejects), 400/405/426 (an upgrade
 * RFC 6455 §4.2.1 rejects), 403 (Origin not in allow_origins), 404 (no such file, or an upgrade elsewhere than ws_path),
 * 426 (a plain GET of ws_path), 500 (the 101 reply could not be built), 503 (out of memory, connection limit).
 */
#pragma once

#include <event2/util.h>

struct conn;

/*
 * Makes the HTTP front-end the front-end of a freshly accepted connection: the request head must be complete within
 * login_timeout_ms. Returns 0.
 */
int http_conn_start(struct conn *c);

/*
 * Writes a minimal HTTP error reply on a raw socket that never became a connection and closes it (the connection limit:
 * 503). Never blocks: what the socket does not take at once is lost.
 */
void http_reject_fd(evutil_socket_t fd, int status, const char *reason);
