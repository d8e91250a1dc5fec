/*
 * bridge/acceptor.h — the listening sockets (listen_addr:listen_port, and tls_listen_port when set), on the main
 * thread's loop. Each accepted socket is counted against max_connections over the whole process (server_group; 0 is
 * derived from RLIMIT_NOFILE) and max_connections_per_ip for its address (and refused outright while the process is over
 * its memory budget, server_group.mem_over), and either refused at once (the port's
 * refusal, server_reject(): an overload never costs more than the accept) or handed to the worker the `dispatch`
 * callback picks (bridge/main.c: the least loaded). One acceptor rather than a listener per worker
 * (SO_REUSEPORT): the spread follows the workers' load instead of a hash of the peer's address, the limit is checked in
 * one place, and no other process can bind into warren's port (doc/architecture.md, "Workers").
 */
#pragma once

#include <sys/resource.h>

#include <event2/util.h>

#include "bridge/server.h"

struct acceptor;
struct conf;
struct event_base;

/*
 * Gets the accepted socket `s` (counted in the group, and its address in s->ip, already), to be copied: the callee hands
 * it to a worker, or closes it and gives both counts back.
 */
typedef void (*acceptor_dispatch_fn)(void *arg, const struct server_socket *s);

/* Binds the ports of `conf` on `base`. Returns 0, or a negative errno with a message logged (fatal at startup). */
int acceptor_new(struct event_base *base, const struct conf *conf, struct server_group *group, acceptor_dispatch_fn dispatch,
                 void *arg, struct acceptor **out);

/* A reload: max_connections and max_connections_per_ip as `conf` says from now on. */
void acceptor_conf_update(struct acceptor *a, const struct conf *conf);

/*
 * The max_connections that 0 stands for with a soft RLIMIT_NOFILE of `nofile` and `workers` workers: nofile minus a
 * reserve of 64 + 16 per worker + nofile/8 (half of nofile when that leaves less than the reserve; at least 1).
 */
int acceptor_max_connections_for(rlim_t nofile, unsigned workers);

/* Sockets refused because the process was over its memory budget since the last call (main thread). */
unsigned long acceptor_memory_refusals(struct acceptor *a);

/* Stops listening (shutdown): the ports close, nothing more is accepted. */
void acceptor_close(struct acceptor *a);

/* Closes and frees. NULL is a no-op. */
void acceptor_free(struct acceptor *a);
