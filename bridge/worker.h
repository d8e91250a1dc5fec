/*
 * bridge/worker.h — one worker: an event loop on a thread of its own, with its own server (bridge/server.h: the
 * connections the acceptor handed it), its own AMQP upstream (bridge/upstream.h) and so its own AMQP connections. Nothing is shared
 * between workers but the immutable startup configuration, the server_group counters and the broker itself; a connection never
 * leaves the worker that accepted it, so nothing inside a worker needs a lock (DESIGN.md: one worker per core).
 *
 * The main thread creates the workers (loading what can fail, such as the TLS certificate, before any thread starts),
 * starts them, and talks to them only through worker_adopt(), worker_stop(), worker_reload() and
 * worker_memory_changed(), which are safe from
 * any thread: each posts a command that the worker's loop runs. A worker that has stopped calls `exited(arg)` from its thread,
 * last.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>

#include <event2/util.h>

#include "bridge/server.h"

struct conf;
struct worker;

/*
 * Creates worker `id` for `conf` (copied): its event_base, its upstream and its server. The thread
 * is not started. `exited` is called from the worker's thread when its loop has ended. Returns 0, or a negative errno
 * with a message logged.
 */
int worker_new(unsigned id, const struct conf *conf, struct server_group *group, void (*exited)(void *arg), void *arg,
               struct worker **out);

/* Starts the worker's thread. Returns 0 or a negative errno. */
int worker_start(struct worker *w);

/*
 * Asks the worker to stop (any thread): gracefully (every WebSocket gets close 1001, the loop ends once
 * they are gone or after `grace_ms`), or at once when `now`. Repeatable: a second, `now`, call cuts a graceful stop.
 */
void worker_stop(struct worker *w, bool now, unsigned grace_ms);

/*
 * Hands a reloaded configuration to the worker (any thread), which takes `conf` over (heap-allocated, filled by
 * conf_copy()): connections it adopts from then on use it (server_conf_update(); if that runs out of memory the worker
 * logs it and keeps its configuration).
 */
void worker_reload(struct worker *w, struct conf *conf);

/*
 * The server_group's mem_over changed (main thread): the worker's loop holds (over) or releases (under) the reading of
 * every connection it serves (server_memory_changed()). Any thread.
 */
void worker_memory_changed(struct worker *w);

/*
 * Hands the worker an accepted socket, copied (any thread; the acceptor's): its loop adopts it (server_adopt()). Returns 0, or
 * -ENOMEM with nothing taken (the caller closes the socket and gives its count back).
 */
int worker_adopt(struct worker *w, const struct server_socket *s);

/* Sockets handed to the worker and not freed yet (any thread): how the acceptor picks the least loaded worker. */
size_t worker_load(struct worker *w);

/*
 * Joins the thread if it was started (after `exited`, or the caller's own stop), then frees the server (what is left of
 * its connections, at once), the upstream (its AMQP connections are closed, their threads joined) and the loop. NULL is
 * a no-op.
 */
void worker_free(struct worker *w);

/* How many workers `conf` asks for: its `workers` key, or the number of CPUs this process may use when 0. */
unsigned worker_count(const struct conf *conf);
