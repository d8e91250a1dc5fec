/*
 * bridge/server.h — the live connections of one worker loop (bridge/worker.h), and the kinds of port they arrive on.
 *
 * The acceptor (bridge/acceptor.h) listens and hands every accepted socket to a worker, whose server adopts it as a
 * `struct conn` (bridge/conn.h) with the first front-end of its port (HTTP, bridge/http.h) and owns it until it closes.
 * server_shutdown() closes every connection gracefully (WebSocket close 1001, going away); server_free() frees whatever
 * is left at once, so a clean shutdown is leak-free under ASan. server_conf_update() applies a configuration reload to
 * the connections adopted afterwards.
 *
 * Threads: a server is used by its worker's loop only, except server_handed() and server_load(), which the acceptor
 * calls from the main thread (atomics).
 */
#pragma once

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>

#include <event2/util.h>

struct conf;
struct event_base;
struct upstream;
struct server;

/* The ports warren listens on, by what their connections start as. */
enum server_port {
    SERVER_PORT_WS = 0,  /* listen_port: HTTP, then WebSocket at ws_path */
    SERVER_PORT_WSS = 1, /* tls_listen_port: the same over TLS */
    SERVER_PORT_COUNT,
};

/* "ws", "wss". */
const char *server_port_scheme(enum server_port port);

/*
 * A peer address's count of open connections (max_connections_per_ip), owned by the acceptor (bridge/acceptor.c):
 * counted in on the main thread at accept, given back with server_ip_release() from whichever thread frees the
 * connection (an atomic: the acceptor frees an entry only once it has fallen to 0).
 */
struct server_ip;

/* Gives one connection of `ip` back. NULL (no per-address limit) is a no-op. Any thread. */
void server_ip_release(struct server_ip *ip);

/* One accepted socket on its way from the acceptor to a worker's server (copied by each hand-over). */
struct server_socket {
    evutil_socket_t fd;
    enum server_port port;
    struct server_ip *ip; /* its address's count, given back when the socket is closed; NULL when not counted */
    char peer[64];        /* "1.2.3.4:5678", "[::1]:5678" */
};

/*
 * What every server of the process shares: the number of connections open over all workers, which max_connections
 * bounds. The acceptor counts a socket in before handing it over; the server counts it out when it is freed. Outlives
 * its servers.
 */
struct server_group {
    atomic_size_t conns;
    /*
     * Over the memory budget (bridge/memory.h): set and cleared by the main thread, read by the acceptor (refuse) and by
     * every connection where it reads (hold); each worker is told of a change through worker_memory_changed().
     */
    atomic_bool mem_over;
    /*
     * The TLS session-ticket keys of every worker's SSL_CTX, drawn by the first server_new() (main thread, before any
     * worker runs), so that a session resumes on whichever worker the acceptor picks.
     */
    unsigned char tls_ticket_keys[80];
    bool tls_ticket_keys_set;
    struct throttle *login_throttle; /* failed logins per client address (bridge/throttle.h); NULL: none */
};

/*
 * A server for connections on `base` whose sessions use `up`; `conf` is copied (the caller keeps its own), and the TLS
 * context is loaded when tls_listen_port is set. Returns 0, or a negative errno with a message logged (fatal at startup).
 */
int server_new(struct event_base *base, const struct conf *conf, struct upstream *up, struct server_group *group,
               struct server **out);

/*
 * Takes over the accepted socket `s->fd`, counted in the group (and its address in `s->ip`) and by server_handed()
 * already: it becomes a connection with the port's first front-end, and its counts are given back when it is freed. On
 * failure the socket is closed and the counts given back. Loop thread.
 */
void server_adopt(struct server *srv, const struct server_socket *s);

/* A socket handed to this server will not be adopted after all (closed by the caller): its counts are given back. */
void server_dropped(struct server *srv, struct server_ip *ip);

/*
 * What a socket refused at a connection limit gets on `port`, then it is closed: HTTP 503 with `reason` on the plain
 * port; on the TLS port nothing (FIN, without a reply: a clear-text 503 inside the TLS handshake is garbage to the
 * client, and a handshake to send it over TLS would cost an overloaded server a full handshake per refusal). Any thread.
 */
void server_reject(enum server_port port, evutil_socket_t fd, const char *reason);

/*
 * The group's mem_over changed (worker_memory_changed()): every open connection's reading is held (over) or released
 * (under; the bytes they already hold are handed to their front-end again). Loop thread.
 */
void server_memory_changed(struct server *srv);

/* The acceptor hands this server one more socket (main thread), and reads how many it holds (any thread). */
void server_handed(struct server *srv);
size_t server_load(struct server *srv);

/*
 * Graceful shutdown: calls every open connection's front-end to say goodbye: a WebSocket gets a close frame 1001 (going
 * away), a connection still in its HTTP request is dropped, a closing one goes on closing. `done(arg)` is called from
 * the loop once the last connection is gone, or at once when there is none. The caller bounds the wait (clients that
 * never answer linger up to a few seconds).
 */
void server_shutdown(struct server *srv, void (*done)(void *arg), void *arg);

/* Frees every connection at once (no close handshake). NULL is a no-op. */
void server_free(struct server *srv);

/*
 * A reload: connections adopted from now on use a copy of `conf` (validated, and differing from the running one only in
 * reloadable keys: conf_reload_check()); open connections keep the configuration they started with, which is freed when
 * the last of them closes. Returns 0, or -ENOMEM with the current configuration unchanged.
 */
int server_conf_update(struct server *srv, const struct conf *conf);
