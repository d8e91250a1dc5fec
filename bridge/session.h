/*
 * bridge/session.h — one STOMP session: the STOMP layer of one client connection.
 *
 * The front-end that carries it (bridge/wsconn.c for STOMP over WebSocket; a raw TCP front-end would do the same) hands
 * the session the bytes it receives: the payload of each WebSocket message, or whatever a raw stream delivered. The
 * session runs the STOMP parser over them (frames may be split across feeds or several may share one), enforces the
 * protocol (CONNECT first, required headers, limits), maps frames onto its AMQP channel (bridge/upstream.h) through
 * bridge/dest.h, and writes STOMP frames back through `struct session_io`, one complete frame (or one heart-beat EOL)
 * per call. It knows neither the event loop (timers go through bridge/timer.h) nor the wire.
 *
 * Errors: any protocol error or AMQP channel error produces one ERROR frame (`message` header, `content-type:text/plain`,
 * a useful body, `receipt-id` when the offending frame carried `receipt`), then io->close(): the transport flushes what was
 * sent and closes. After io->close() the session sends nothing more and ignores further input.
 *
 * Flow control (DESIGN.md invariant 2): the session asks io->pending() how many bytes are still queued towards the client.
 * Above conf->client_send_buffer_bytes it stops settling deliveries (AMQP manual acks inside the prefetch window, even for
 * STOMP ack:auto), so the broker stops sending; session_on_drain() resumes. The transport closes a client whose queue
 * passes conf->client_send_limit_bytes. While too many publishes await broker confirms (conf->max_unconfirmed) or the
 * broker blocks publishers, the session calls io->pause_reading(true); the transport then stops reading that socket.
 *
 * Ownership: the transport owns the session; session_free() may not be called from inside a session_io callback — the
 * transport defers it (it marks itself closing in io->close and frees from the loop).
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>

struct conf;
struct event_base;
struct excl;
struct fanout;
struct throttle;
struct session;
struct upstream;

/* What every session of a listener shares. All pointers outlive the sessions. */
struct session_env {
    struct event_base *base;
    struct upstream *up;
    const struct conf *conf;
    const char *server_header; /* value of CONNECTED `server` ("warren/0.1.0"), NULL to omit */
    struct excl *excl;         /* the worker's exclusive queues (bridge/excl.h); NULL: not enforced */
    struct throttle *throttle; /* the process's failed logins per address (bridge/throttle.h); NULL: none */
    struct fanout *fanout;     /* the worker's local fan-out groups (bridge/fanout.h); NULL: topic_fanout is not possible */
};

/*
 * What a session needs from the front-end that carries it, whatever the wire: bridge/wsconn.c (STOMP over WebSocket)
 * today, a plain STOMP-over-TCP front-end would implement the same four calls. The session deals in complete STOMP
 * frames only; how they are framed on the wire is the front-end's business. `ud` is the front-end's own object.
 */
struct session_io {
    /*
     * Queue one complete STOMP frame (or "\n" for a heart-beat) towards the client, framed as the wire needs it (one
     * WebSocket message; the bytes as they are on a raw stream). Returns 0, or -1 when the client is gone or was closed
     * for being too slow (its output passed client_send_limit_bytes).
     */
    int (*send)(void *ud, const char *bytes, size_t len);
    /* Bytes queued towards the client and not yet written to the socket, wire framing included. */
    size_t (*pending)(void *ud);
    /* Stop (true) or resume (false) reading from the client: no further session_feed() until resumed. */
    void (*pause_reading)(void *ud, bool paused);
    /*
     * Flush what was sent, then close the connection. `reason` is a short text for the peer where the wire has a place for
     * one (WebSocket: close 1000 with at most 123 bytes of it) and is dropped where it has none (a raw stream).
     */
    void (*close)(void *ud, const char *reason);
    /*
     * Optional (may be NULL). true: the session stopped parsing what it was fed at its per-turn frame budget and goes
     * on by itself at a later loop turn; feed it nothing more until false (said once the held frames are parsed or
     * the session stopped for another reason). The front-end stops reading meanwhile, so the peer waits in TCP.
     */
    void (*backlog)(void *ud, bool pending);
};

/*
 * Creates a session for a freshly upgraded connection. `peer` ("1.2.3.4:5678") is used in logs. Starts the login timer
 * (conf->login_timeout_ms). Returns NULL on allocation failure.
 */
struct session *session_new(const struct session_env *env, const struct session_io *io, void *io_ud, const char *peer);

/* Ends the session: aborts open transactions, releases the AMQP channel (its owned queues are deleted). NULL is a no-op. */
void session_free(struct session *s);

/*
 * Feeds received bytes (a WebSocket message's payload, text or binary, or a chunk of a raw stream). Any bytes count as
 * inbound activity for the heart-beat check. Returns 0; protocol errors are handled inside (ERROR + io->close()).
 * data[0..len) stays the caller's but is written to: frames are parsed in place (header escapes are decoded over them)
 * and only what cannot be handled now (a frame cut short, frames held by flow control) is copied; nothing points into
 * it after the call.
 */
int session_feed(struct session *s, char *data, size_t len);

/* The transport's queue towards the client went below the high-water mark again. */
void session_on_drain(struct session *s);

/* true once CONNECTED was sent: the front-end lifts its limits before login (max_frame_bytes_unauthenticated). */
bool session_is_connected(const struct session *s);

/* Session id as sent in CONNECTED `session` (for logs), or "" before CONNECTED. */
const char *session_id(const struct session *s);
