/*
 * tests/unit/session-rig.h — a session under test: the real bridge/session*.c over fake-upstream.c and fake-timer.c,
 * with a recording transport. Shared by test-bridge-session.c and tests/fuzz/fuzz-session.c.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>

#include "bridge/session.h"
#include "conf/conf.h"
#include "fake-timer.h"
#include "fake-upstream.h"

#define RIG_MAX_OUT 256

struct rig {
    struct conf conf;
    struct upstream *up;
    struct session *s;
    char *out[RIG_MAX_OUT]; /* frames sent, in order (a heart-beat is "\n"); the oldest are dropped past RIG_MAX_OUT */
    size_t n_out;
    size_t total_out; /* frames ever sent */
    size_t pending;   /* what io->pending() answers */
    bool paused;      /* last io->pause_reading() */
    bool closed;      /* io->close() ran */
    bool backlog;     /* last io->backlog() */
    size_t backlog_calls;
    char close_reason[128];
    struct excl *excl;                                                     /* env.excl (bridge/excl.h), NULL unless set */
    struct throttle *throttle;                                             /* env.throttle (bridge/throttle.h), NULL unless set */
    const char *peer; /* the client's address, "127.0.0.1:1" unless set */ /* env.excl (bridge/excl.h), NULL unless set */
    struct upstream *shared_up; /* when set before rig_start(): the session's upstream (several rigs share it), not freed */
    struct fanout *fanout;      /* env.fanout (bridge/fanout.h), NULL unless set */
    bool send_fails;            /* io->send() answers -1 */
    void (*on_send)(struct rig *r, const char *bytes, size_t len); /* optional observer (the fuzzer's invariants) */
};

/* conf defaults (conf_init) unless the caller changed r->conf before rig_start(). */
void rig_init(struct rig *r);
/* Creates the session. */
void rig_start(struct rig *r);
/* session_free, fake_upstream_free, frees the recorded output. */
void rig_deinit(struct rig *r);

void rig_feed(struct rig *r, const char *bytes);
void rig_feed_n(struct rig *r, const char *bytes, size_t len);

/* Last frame sent, or "" when none. */
const char *rig_last(const struct rig *r);
/* Frame i (0 = first recorded), or "". */
const char *rig_out(const struct rig *r, size_t i);
/* Number of recorded frames starting with `cmd` + "\n". */
size_t rig_count(const struct rig *r, const char *cmd);
/* true when frame `f` has the header line "name:value". */
bool frame_has(const char *f, const char *line);
/* Forget the recorded output. */
void rig_clear(struct rig *r);

/* CONNECT as `accept-version` with `heart-beat`, the channel opened by the fake, CONNECTED checked. */
void rig_connect(struct rig *r, const char *version, const char *heartbeat);
