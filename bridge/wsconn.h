/*
 * bridge/wsconn.h — the WebSocket front-end of a connection (bridge/conn.h): RFC 6455 frames through ws/frame.h,
 * permessage-deflate (RFC 7692) through ws/deflate.h, control frames, the close handshake, and a STOMP session
 * (bridge/session.h) fed with the payload of every message, its frames sent back one message each through
 * `struct session_io`.
 *
 * Close codes: 1000 when the session closes (with its reason), the peer's own code echoed when it closes first (an empty
 * close frame when it sent none), 1001 when the server shuts down ("server shutting down"), 1002/1007/1009 for a
 * protocol error, bad UTF-8 or an oversize message (ws_error_close_code(), the decoder's reason). After our close frame
 * the connection keeps reading until the peer's close frame (or FIN, or CONN_CLOSE_LINGER_MS) and ignores any message
 * in between.
 */
#pragma once

struct conn;
struct ws_request;

/*
 * Completes the upgrade of `req`, a request for ws_path that passed ws_handshake_validate() and the Origin check:
 * selects the subprotocol (v12.stomp, v11.stomp, v10.stomp), negotiates permessage-deflate from the conn's
 * configuration, queues the 101 reply and installs the WebSocket front-end with a new session (its login timer
 * starts; the connection's deadline is cancelled). Bytes after req->consumed are the first WebSocket frames.
 *
 * Returns 0, or the HTTP status the caller answers with, `*reason` a static text: 500 (the 101 reply or the deflate
 * negotiation failed), 503 (out of memory). On failure nothing was written and the front-end is unchanged.
 */
int wsconn_accept(struct conn *c, const struct ws_request *req, const char **reason);
