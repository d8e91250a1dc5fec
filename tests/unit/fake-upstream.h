/*
 * tests/unit/fake-upstream.h — a test implementation of bridge/upstream.h for driving a session without a broker.
 *
 * Every upstream_chan_* call is recorded as a `struct fake_cmd` (arguments copied) and returns at once; nothing reaches
 * the session until the test says so, in any order it likes: fake_open(), fake_done(), fake_deliver(), fake_close(),
 * fake_block(), fake_cancel(). fake_fail_next makes the next upstream_chan_* call fail with that code (-ENOMEM,
 * UPSTREAM_ERR_CLOSED), the way the real upstream fails. The fake enforces the upstream contract on the session's side:
 * no operation on a released channel, no double release (a violation aborts, so the fuzzer sees it), and it never
 * runs a callback for a released channel.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "bridge/upstream.h"

enum fake_cmd_kind {
    FAKE_OPEN = 0,
    FAKE_DECLARE = 1,
    FAKE_BIND = 2,
    FAKE_DELETE = 3,
    FAKE_CONSUME = 4,
    FAKE_CANCEL = 5,
    FAKE_PUBLISH = 6,
    FAKE_ACK = 7,
    FAKE_NACK = 8,
    FAKE_RELEASE = 9,
};
const char *fake_cmd_kind_str(enum fake_cmd_kind k);

struct fake_cmd {
    enum fake_cmd_kind kind;
    struct upstream_chan *ch;
    uint64_t op_tag;
    bool completed; /* fake_done() ran for it */
    char *a;        /* OPEN: user; DECLARE/DELETE/CONSUME: queue; BIND: queue; CANCEL: consumer tag; PUBLISH: exchange */
    char *b;        /* OPEN: vhost; BIND: exchange; CONSUME: consumer tag; PUBLISH: routing key */
    char *c;        /* BIND: routing key; PUBLISH: body (NUL-terminated copy) */
    size_t body_len;
    unsigned flags;   /* DECLARE: UPSTREAM_Q_*; CONSUME: prefetch */
    bool no_ack;      /* CONSUME */
    uint64_t dtag;    /* ACK/NACK: delivery tag */
    bool multiple;    /* ACK/NACK */
    bool requeue;     /* NACK */
    size_t n_args;    /* DECLARE/CONSUME: x-arguments */
    size_t n_headers; /* PUBLISH: AMQP headers */
    char *reply_to;   /* PUBLISH */
};

struct upstream {
    struct fake_cmd *cmds;
    size_t n_cmds, cap_cmds;
    struct upstream_chan *chans; /* every channel ever opened, freed by fake_upstream_free() */
    int fail_next;               /* when non-zero, the next upstream_chan_* call returns it (and clears it) */
    bool fail_open;              /* upstream_chan_open() returns -ENOMEM */
    uint64_t next_dtag;
    size_t max_cmds; /* when non-zero, older commands are forgotten (fuzzing: bounded memory) */
};

struct upstream_chan {
    struct upstream_chan *next_all;
    struct upstream *up;
    struct upstream_chan_cb cb;
    void *ud;
    bool released;
    bool dead; /* on_closed ran or the open failed: operations return UPSTREAM_ERR_CLOSED */
    bool open; /* on_open(NULL) ran */
    uint64_t next_dtag;
    char *vhost, *user, *pass; /* upstream_chan_login() */
};

struct upstream *fake_upstream_new(void);
void fake_upstream_free(struct upstream *up);

/* Index of the first command of `kind` at or after `from` (any channel), or -1. */
long fake_find(const struct upstream *up, enum fake_cmd_kind kind, size_t from);
/* Number of commands of `kind`. */
size_t fake_count(const struct upstream *up, enum fake_cmd_kind kind);
/* The channel of the last FAKE_OPEN, or NULL. */
struct upstream_chan *fake_last_chan(const struct upstream *up);

/* Results, delivered now (the test plays the loop). No-ops on a released channel. */
void fake_open(struct upstream_chan *ch, const struct upstream_error *err);
/* on_done for command `i` (queue: for DECLARE, the given name or "amq.gen-<i>" when it was server-named). */
void fake_done(struct upstream *up, size_t i, const struct upstream_error *err);
/* on_done for every command with a completion that has none yet, in order. Returns how many. */
size_t fake_done_all(struct upstream *up);
/* A delivery on consumer `ctag`; returns its delivery tag. */
uint64_t fake_deliver(struct upstream_chan *ch, const char *ctag, const char *body, const struct upstream_props *props);
void fake_close(struct upstream_chan *ch, enum upstream_err kind, int code, const char *name, const char *text);
void fake_block(struct upstream_chan *ch, bool blocked);
void fake_cancel(struct upstream_chan *ch, const char *ctag);
