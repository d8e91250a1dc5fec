/*
 * bridge/fanout.h — local fan-out (topic_fanout = local): one AMQP queue and consumer per binding, credential and
 * worker, whose deliveries warren copies to every session subscribed to that binding.
 *
 * A group is keyed by everything that decides what the broker would deliver to a subscription's own queue: the
 * credential (vhost, user, password: the same triple bridge/upstream.c keys its connections by, so the broker checked
 * the group's permissions for exactly that login), the exchange and routing key of the binding, and the queue's
 * declare flags and x-arguments. The caller (bridge/session-sub.c) builds that key as one byte string; only identical
 * keys share. A key is only built for what may be shared at all: ack:auto, no durable name, no x-queue-name, not
 * exclusive, no consume arguments.
 *
 * Who shares: the first `from - 1` subscriptions of a key (topic_fanout_from) keep a queue and consumer of their own, as
 * with topic_fanout = broker, and are only counted here ("solos", fanout_attach() answers FANOUT_SOLO); from the
 * `from`-th on they share. So a binding with few subscribers on a worker behaves exactly as without local fan-out, and
 * only one with many pays the differences (doc/compatibility.md) for one broker delivery per message instead of one per
 * subscriber.
 *
 * Lifecycle: the first member to share opens the group's channel: a channel of its own on the credential's
 * connections (upstream_chan_open(), so it outlives the session that made it), then queue.declare of a queue named
 * "stomp-fanout-<random>" (owned: deleted when the channel is released), queue.bind, basic.qos + basic.consume. A
 * member attached meanwhile waits: its ready() runs at the consume-ok. Every later subscription of the key shares while
 * the channel is open; the last member to detach releases it (consumer cancelled, queue deleted, channel closed), and
 * the next subscription past the solos opens a new one. A broker-side failure (the open refused, a channel error, the
 * connection lost, the consumer cancelled by the broker) reaches every member through failed() or cancelled(), and the
 * group's channel goes at once, so the next member opens a fresh one. A channel opened more than `fresh_ms` ago
 * (amqp_auth_reuse_ms) takes no new member: the broker checked its permissions then, so the next subscription starts a
 * new group of the key, counting afresh (its first `from - 1` are solos again), and the old one lives on out of the
 * table for its members and solos.
 *
 * Deliveries: each goes to every member in turn (deliver()); a member that cannot take it (its client is gone or was
 * closed as too slow past client_send_limit_bytes) does not hold up the others. The deliveries of one loop turn are
 * settled together (basic.ack multiple) at its end, while at least one member's client is below
 * client_send_buffer_bytes (has_room()); when every member is above it, the acks wait for a member's drain
 * (fanout_kick()), so the prefetch window stops the broker only when no member can keep up. A message every member
 * refused as too big for its client is rejected (basic.nack requeue=false) instead.
 *
 * Bounds: a group exists only while a member or a solo is attached, so there are never more groups than subscriptions,
 * each session's bounded by max_subscriptions; an idle one (solos only) holds no channel and no timer.
 *
 * Threading: one table per worker, used on its loop only (no lock). Callbacks never run from inside a fanout_* call;
 * a member's callback may detach that member or any other (its session closing), and may not free the table.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "bridge/list.h"
#include "bridge/upstream.h"

struct event_base;
struct fanout;
struct fanout_group;
struct fanout_member;

struct fanout_member_ops {
    /* The group's consumer is live (consume-ok). Runs once, for members that attached before it. */
    void (*ready)(struct fanout_member *m);
    /* One delivery for this member: 0 when it was queued to the client, -EMSGSIZE when it can never be (bigger than the
     * client's send limit), another non-zero value when it was not (the client is gone). */
    int (*deliver)(struct fanout_member *m, const struct upstream_delivery *d);
    /* The group failed at the broker (`err` as a session's own channel would get it); the member is already detached. */
    void (*failed)(struct fanout_member *m, const struct upstream_error *err);
    /* The broker cancelled the group's consumer (its queue was deleted); the member is already detached. */
    void (*cancelled)(struct fanout_member *m);
    /* true while the member's client is below client_send_buffer_bytes. */
    bool (*has_room)(struct fanout_member *m);
};

/* A member: embedded in its subscription, linked to a group from fanout_attach() to fanout_detach() (or a failure). */
struct fanout_member {
    struct list link;
    struct fanout_group *g;       /* the group it shares, or NULL */
    struct fanout_group *counted; /* a solo: the group of its key, which only counts it; or NULL */
    const struct fanout_member_ops *ops;
    void *ud;
};

/* What a group is made with: `key` (key_len bytes, compared as bytes) and what it is built from. Strings are copied. */
struct fanout_spec {
    const void *key;
    size_t key_len;
    struct upstream_login login; /* conn_name may be NULL */
    const char *exchange;
    const char *routing_key;
    unsigned flags; /* UPSTREAM_Q_*; UPSTREAM_Q_OWNED is added */
    const struct upstream_arg *args;
    size_t n_args;
    unsigned prefetch;
    unsigned from;     /* the subscriptions of the key share from the from-th on (1: all of them) */
    unsigned fresh_ms; /* a group's channel takes new members this long after it was opened; 0 = forever */
};

/* How fanout_attach() attached a member. */
enum fanout_joined {
    FANOUT_SOLO = 0,    /* only counted: the subscription gets a queue and consumer of its own */
    FANOUT_WAITING = 1, /* shares; its ready() runs at the group's consume-ok */
    FANOUT_READY = 2,   /* shares; the group's consumer is live already: no ready() comes */
};

/* A table for the groups of one worker: their channels come from `up`, their timers run on `base`. 0 or -ENOMEM. */
int fanout_new(struct event_base *base, struct upstream *up, struct fanout **out);
/* Releases every group left (their members must not be used with it afterwards). NULL is a no-op. */
void fanout_free(struct fanout *fo);

/*
 * Attaches `m` (ops and ud set by the caller) to the group of spec->key, creating it when there is none, and says how
 * in *how. A group whose channel cannot be set up (a connection cap, out of memory) leaves `m` a solo: sharing is only
 * a saving, and the subscription's own queue says what the broker thinks of it. Returns 0, or -ENOMEM (`m` is then not
 * attached). fanout_detach() undoes it.
 */
int fanout_attach(struct fanout *fo, const struct fanout_spec *spec, struct fanout_member *m, enum fanout_joined *how);

/* Detaches `m` (a member or a solo); the last member out releases the group's channel (consumer cancelled, queue
 * deleted), the last of all the group. Not attached: a no-op. */
void fanout_detach(struct fanout_member *m);

/* `m`'s client drained below client_send_buffer_bytes: the group's held acks may go. */
void fanout_kick(struct fanout_member *m);

/* Figures for tests and logs. */
size_t fanout_groups(const struct fanout *fo);
size_t fanout_members(const struct fanout_member *m);
