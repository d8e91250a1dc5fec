/*
 * bridge/excl.h — which session holds which exclusive queue (issue 7: exclusive means exclusive to the session).
 *
 * RabbitMQ ties an exclusive queue to the AMQP connection that declared it: only that connection may consume from it,
 * declare, bind or delete it, and the queue goes when the connection closes. warren's sessions of one credential share
 * that connection, so the broker would let any of them take another's `/temp-queue/` replies or `exclusive:true`
 * subscription queue. This table gives the queue back to the session: a session claims the names it declares exclusive
 * (warren's own `stomp.gen-…` names, and every `exclusive:true` declare), every operation that names a queue asks
 * whether another session holds it, and a session gives all its claims back when its channel is released.
 *
 * Scope: one table per worker (bridge/server.c), which is a superset of "per AMQP connection" (a worker's sessions share
 * its connections, never another worker's), keyed by (vhost, user, queue), since sessions of different vhosts or
 * logins never share a connection: a claim never refuses a session that the broker would not refuse too.
 *
 * A table is used by its worker's loop only: no lock. Bounded: a session holds at most EXCL_MAX_PER_OWNER claims.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>

#include "bridge/list.h"

#define EXCL_MAX_PER_OWNER 4096

struct excl;

/* One session's claims. `table` NULL: claims always succeed and nothing is ever locked (no table configured). */
struct excl_owner {
    struct excl *table;
    struct list claims;
    size_t n;
};

enum {
    EXCL_LOCKED = 1, /* another owner holds the queue */
    EXCL_FULL = 2,   /* the owner already holds EXCL_MAX_PER_OWNER queues */
};

/* A table (random hash seed). 0 or -ENOMEM. */
int excl_new(struct excl **out);
/* Frees the table and whatever claims are left (their owners must not be used with it afterwards). NULL is a no-op. */
void excl_free(struct excl *x);

void excl_owner_init(struct excl_owner *o, struct excl *table);
/* Gives back every claim of `o`. Idempotent. */
void excl_owner_release(struct excl_owner *o);

/* Claims `queue` of (vhost, user) for `o`: 0 (claimed now, or already o's), EXCL_LOCKED, EXCL_FULL, or -ENOMEM. */
int excl_claim(struct excl_owner *o, const char *vhost, const char *user, const char *queue);
/* true when an owner other than `o` holds `queue` of (vhost, user). */
bool excl_locked(const struct excl_owner *o, const char *vhost, const char *user, const char *queue);
/* Claims in the table (for tests and figures). */
size_t excl_count(const struct excl *x);
