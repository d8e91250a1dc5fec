/*
 * bridge/upstream.c — the loop side of the upstream (see bridge/upstream.h for the contract, bridge/upstream-int.h for
 * the layout): channels as sessions see them, the results that become their callbacks, and the sharing policy, all on
 * the client loop's thread. Nothing here calls rabbitmq-c or waits: each AMQP connection is a link of
 * bridge/upstream-link.c, reached through its inbox, which logs in on a thread and is then driven here, in rounds on the
 * loop ("The link on the loop"); the threads' results come back through the upstream's outbox, an eventfd watched by a
 * libevent event of the loop, the rounds' through a list of the loop's own. The callbacks run in the order of the
 * results, which is the broker's order for each channel.
 *
 * Channel handle lifetime, without a refcount: the loop owns the handle and frees it. The release command is the last
 * command that names a channel; the link answers it, once the channel is closed at the broker, with CHAN_DONE, the last
 * result that names the channel. The loop frees the handle when it reads CHAN_DONE, so neither side can see a freed
 * handle. Results for a channel released (or dead) on the loop side are dropped here (enum upstream_chan_state says which
 * callbacks a state still takes), which is what guarantees that no callback runs after upstream_chan_release() or
 * on_closed.
 *
 * A connection ends the same way: when it dies its link reports CONN_DOWN, fails every channel and reports CONN_EXIT; the
 * loop stops giving it channels, serves the releases still to come itself (upstream_link_run_dead()) and frees the
 * connection at the CHAN_DONE of its last channel.
 *
 * An idle connection ends through the same SHUTDOWN (amqp_idle_close_ms): when the loop reads the CHAN_DONE of a
 * connection's last channel it arms the connection's idle timer, and a channel opened on it meanwhile disarms it. The loop
 * alone decides, because the loop alone hands out channels: when the timer fires, it stops giving the connection channels
 * and sends SHUTDOWN in the same step, so no channel.open can follow the decision. The link, which then has no channel,
 * goes to a thread that closes the still-open connection (connection.close, close-ok) and reports CONN_EXIT.
 *
 * Channels per connection: the loop never sends a connection more channel opens than it can take. How many that is, only
 * the login tells (the broker's channel_max, RabbitMQ's `channel_max` setting, may be lower than amqp_channel_max), so
 * while a connection is not up yet, the channels given to it wait on the loop side, each holding its channel.open and the
 * operations queued behind it, in order. At CONN_UP the loop sends the first `channel_max` of them and gives the rest to
 * another connection of the credential (opening one if needed), where they wait or go at once. New connections start
 * with the channel_max of the last login, so they are rarely given too many. A waiting channel that is released is freed
 * there and then: the link never heard of it. If the connection never comes up, the waiting channels go to its link all
 * the same, which fails them with the connection's error like any open it gets once dead.
 */
#include "bridge/upstream.h"

#include "bridge/clock.h"
#include "bridge/log.h"
#include "bridge/upstream-int.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

/* ---------------------------------------------------------------------------------------------------------------------
 * Types
 */

/* A channel as its session sees it. */
struct upstream_chan {
    struct upstream *up;
    struct upstream_conn *conn;
    struct list link; /* in up->chans once sent to the link, in conn->waiting while WAITING */
    enum upstream_chan_state st;
    struct upstream_chan_cb cb;
    void *ud;
    struct upstream_link_chan *lch;  /* its thread-side half: ours while WAITING, the link's from the OPEN on */
    struct upstream_cmd open_cmd;    /* embedded, cannot fail to allocate */
    struct upstream_cmd release_cmd; /* embedded, the last command naming the channel */
    struct list held;                /* while WAITING: the operations queued behind open_cmd, in order */
    struct upstream_res *refused;    /* REFUSED: its CHAN_DONE, sent by the release (no link ever had it) */
};

/* A connection as the pool sees it. */
struct upstream_conn {
    struct upstream *up;
    struct list link; /* in up->conns, newest first */
    char *vhost, *user, *pass, *name;
    unsigned n_chans;                 /* channels given to this connection (waiting ones included) and not yet done */
    unsigned cap;                     /* most channels it takes: its channel_max once up, a guess until then */
    struct list waiting;              /* given to it before it was up, in order; nothing of them sent yet */
    bool live;                        /* CONN_UP came and CONN_DOWN did not */
    uint64_t auth_ms;                 /* when CONN_UP came: the broker authenticated the credential then */
    bool blocked;                     /* the broker blocks publishers on it (connection.blocked): it takes no new channel */
    bool retired;                     /* given no more channels; shutdown_cmd queued (once) */
    bool exited;                      /* its link is dead and ended (CONN_EXIT): the loop serves the link's releases itself */
    bool thread_live;                 /* `thread` (the login, or the close) runs or was not joined yet */
    bool on_loop;                     /* the loop drives the open link: from CONN_UP to its end (see "The link on the loop") */
    char broker[UPSTREAM_BROKER_MAX]; /* upstream_chan_broker() */
    struct event *idle_ev;            /* armed while n_chans == 0, if cfg.idle_close_ms */
    struct upstream_inbox inbox;      /* the mailbox to its link */
    struct upstream_cmd shutdown_cmd;
    struct upstream_link *tlink; /* the link: touched here only to make it, to drive it once adopted, and to free it */
    pthread_t thread;
    struct event *round_ev; /* a round of the link: activated by a command, added with no delay when frames are left */
    struct event *sock_ev;  /* its socket readable (persistent), from CONN_UP */
    struct event *out_ev;   /* its socket writable, while the link has bytes the socket had no room for */
    struct event *tick_ev;  /* heartbeats: every quarter of the negotiated interval */
};

struct upstream {
    struct event_base *base;
    struct upstream_config cfg; /* read by the links too: not written after upstream_new() */
    char **brokers;
    struct upstream_outbox outbox; /* the results of the links' threads */
    struct event *res_ev;
    struct list local;               /* the results of the links the loop drives, and of dead ones, in order */
    struct event *local_ev;          /* runs them: activated when `local` is not empty */
    struct upstream_backoff backoff; /* the links' */
    struct list conns;               /* newest first */
    struct list chans;               /* every channel sent to a link and not yet done */
    unsigned chan_cap;               /* channel_max of the last connection that came up, 0 = none yet */
    uint64_t published, delivered;
    unsigned channels;
    unsigned closing;
    struct event *watch_ev; /* the write watchdog, every write_timeout_ms / 4 */
    char limit_text[160];   /* the text of the last refusal by a cap (conn_within_caps()) */
};

/*
 * AMQP connections of the whole process, over every upstream (one per worker): a connection counts from its creation
 * to its CONN_EXIT, and a new one is refused at cfg.max_connections. This is the one process-wide
 * count of the upstream, so it is a global of this file, an atomic.
 */
static atomic_uint conns_total;

#define UPSTREAM_STOP_MS  1000 /* upstream_free(): how long links may take to close before their sockets are cut */
#define UPSTREAM_STUCK_MS 500  /* a connection stuck (conn_stuck_ms()) this long takes no new channel */

const char *upstream_chan_state_str(enum upstream_chan_state st)
{
    switch (st) {
    case UPSTREAM_CHAN_WAITING:
        return "waiting";
    case UPSTREAM_CHAN_OPENING:
        return "opening";
    case UPSTREAM_CHAN_OPEN:
        return "open";
    case UPSTREAM_CHAN_OPEN_FAILED:
        return "open_failed";
    case UPSTREAM_CHAN_CLOSED:
        return "closed";
    case UPSTREAM_CHAN_RELEASED:
        return "released";
    case UPSTREAM_CHAN_REFUSED:
        return "refused";
    }
    return "?";
}

enum upstream_chan_state upstream_chan_get_state(const struct upstream_chan *ch)
{
    return ch->st;
}

void upstream_test_fail_alloc(struct upstream *up, bool fail)
{
    atomic_store(&up->outbox.fail_allocs, fail);
}

/* ---------------------------------------------------------------------------------------------------------------------
 * Channels given to connections
 */

/* Frees a channel the link never saw, with the operations it held. */
static void chan_free_waiting(struct upstream_chan *ch)
{
    upstream_cmd_free_list(&ch->held);
    upstream_link_chan_free(ch->lch);
    free(ch);
}

/* The results of the links the loop drives run from an event of their own, never from inside the call that made them. */
static void local_kick(struct upstream *up)
{
    if (!list_is_empty(&up->local))
        event_active(up->local_ev, 0, 0);
}

/* After a push to `c`'s inbox: the loop runs its link's round (once per loop pass, however many pushes); a dead link
 * whose end was reported (`exited`) runs the commands here and now, which only makes results. A link on its login or
 * close thread takes them itself. */
static void conn_kick(struct upstream_conn *c)
{
    if (c->on_loop) {
        event_active(c->round_ev, 0, 0);
    } else if (c->exited) {
        upstream_link_run_dead(c->tlink);
        local_kick(c->up);
    }
}

/* Sends a waiting channel's channel.open, and the operations queued behind it, to its connection's link. */
static void chan_dispatch(struct upstream_chan *ch)
{
    ch->st = UPSTREAM_CHAN_OPENING;
    list_link_tail(&ch->up->chans, &ch->link);
    list_link_front(&ch->held, &ch->open_cmd.link);
    upstream_inbox_push_list(&ch->conn->inbox, &ch->held);
    conn_kick(ch->conn);
}

/* Gives `ch` to `c`: sent at once when `c` is up, else held in c->waiting until it is (see the top of the file). */
static void chan_attach(struct upstream_conn *c, struct upstream_chan *ch)
{
    ch->conn = c;
    c->n_chans++;
    if (c->idle_ev)
        evtimer_del(c->idle_ev); /* reused before its idle timer fired */
    if (c->live) {
        chan_dispatch(ch);
    } else {
        ch->st = UPSTREAM_CHAN_WAITING;
        list_link_tail(&c->waiting, &ch->link);
    }
}

/* Queues one command for `c`'s link (conn_kick()). */
static void conn_push(struct upstream_conn *c, struct upstream_cmd *cmd)
{
    upstream_inbox_push(&c->inbox, cmd);
    conn_kick(c);
}

/*
 * The loop gives `c` no more channels, and its link exits once every channel on it is done (closing the connection if it
 * is still open) and reports CONN_EXIT. For a connection that died (CONN_DOWN) or stayed idle too long; the SHUTDOWN
 * command is embedded, so it is queued once even when both happen.
 */
static void conn_retire(struct upstream_conn *c)
{
    bool was_retired = c->retired;

    c->retired = true;
    if (c->idle_ev)
        evtimer_del(c->idle_ev);
    if (!was_retired)
        conn_push(c, &c->shutdown_cmd);
}

/* The idle timer fired: no channel was opened on the connection since its last one closed (upstream_chan_open disarms it). */
static void on_conn_idle(evutil_socket_t fd, short what, void *arg)
{
    struct upstream_conn *c = arg;

    if (c->n_chans == 0 && !c->retired)
        conn_retire(c);
}

/*
 * true while new channels may join `c`: logging in now (the login being made is fresh), or logged in less than
 * auth_reuse_ms ago. A connection past it keeps its channels but takes no new one, so a password changed or a user
 * deleted at the broker stops working for new sessions within auth_reuse_ms (DESIGN.md invariant 5).
 */
static bool conn_fresh(const struct upstream_conn *c)
{
    return !c->live || clock_now_ms() - c->auth_ms < c->up->cfg.auth_reuse_ms;
}

/* Arms the idle timer of a connection whose last channel is done, or retires it at once when no session may join it
 * any more (conn_fresh()). A failed evtimer_add keeps the connection open. */
static void conn_idle_arm(struct upstream_conn *c)
{
    unsigned ms = c->up->cfg.idle_close_ms;
    struct timeval tv = clock_timeval(ms);

    if (c->n_chans == 0 && !c->retired && !conn_fresh(c)) {
        conn_retire(c);
        return;
    }

    if (c->idle_ev && c->n_chans == 0 && !c->retired && evtimer_add(c->idle_ev, &tv) != 0) {
        /* nothing to do: the connection just stays, as with idle_close_ms = 0 */
    }
}

/* ---------------------------------------------------------------------------------------------------------------------
 * Connections
 */

/*
 * The link on the loop. A connection's thread only logs in, the one part of its life that blocks (rabbitmq-c's login);
 * its CONN_UP is its last act, and from there the loop drives the link itself (upstream_link_round()): a command pushed
 * activates the round (once per loop pass), the socket's readability and writability run it, a timer keeps the
 * heartbeats. So a message crosses no thread on its way to and from the broker: a publish is one send() from the loop,
 * a confirm or a delivery one recv(), and the results the round makes (in up->local, no lock) run from local_ev in the
 * same loop pass. Nothing in a round waits: the link writes its socket without blocking and reads at most a budget of
 * frames per round (UPSTREAM_LINK_MORE: the next round comes after the loop's other events, through a timer with no
 * delay). A connection that ends goes off the loop: a failed one at once (upstream_link_end(), no connection.close), one
 * closed on purpose (its idle timer, a dead broker's SHUTDOWN) on a thread again, since the close waits for the broker
 * (upstream_link_close_main(), bounded like every thread by the watchdog and upstream_free()).
 */
/* Joins the link's thread if one was started and not joined yet. */
static void conn_join_thread(struct upstream_conn *c)
{
    if (c->thread_live)
        pthread_join(c->thread, NULL);
    c->thread_live = false;
}

/* A thread for the link; the one before (the login, long done) is joined first. */
static int conn_start_thread(struct upstream_conn *c, void *(*fn)(void *))
{
    conn_join_thread(c);
    int r = -pthread_create(&c->thread, NULL, fn, c->tlink);

    c->thread_live = r == 0;
    return r;
}

/* Takes the link's events off the loop, before its socket is closed. */
static void conn_unloop(struct upstream_conn *c)
{
    c->on_loop = false;
    event_del(c->round_ev);
    event_del(c->sock_ev);
    event_del(c->out_ev);
    event_del(c->tick_ev);
}

/* A round of the link ended it: off the loop, closed on a thread (DONE) or here (failed, or no thread). */
static void conn_link_over(struct upstream_conn *c, unsigned want)
{
    conn_unloop(c);
    if ((want & UPSTREAM_LINK_FAILED) || conn_start_thread(c, upstream_link_close_main) != 0)
        upstream_link_end(c->tlink);
}

static void on_link_io(evutil_socket_t fd, short what, void *arg)
{
    struct upstream_conn *c = arg;
    struct upstream *up = c->up;
    unsigned want = upstream_link_round(c->tlink, (what & EV_READ) != 0, (what & EV_WRITE) != 0);

    (void)fd;
    if (want & (UPSTREAM_LINK_FAILED | UPSTREAM_LINK_DONE)) {
        conn_link_over(c, want);
    } else {
        if ((want & UPSTREAM_LINK_WANT_OUT) && event_add(c->out_ev, NULL) != 0)
            conn_link_over(c, UPSTREAM_LINK_FAILED);
        else if (want & UPSTREAM_LINK_MORE)
            event_add(c->round_ev, &(struct timeval){0, 0}); /* after the loop polled: the clients get their turn */
    }
    local_kick(up);
}

/* CONN_UP: the login thread is done with the link (it may still be returning: it is joined later, never waited for
 * here); the loop drives the link from now on, first for what was queued meanwhile. */
static void conn_adopt(struct upstream_conn *c)
{
    int fd = upstream_link_fd(c->tlink);
    unsigned tick = upstream_link_tick_ms(c->tlink);
    struct timeval tv = clock_timeval(tick);

    upstream_link_adopt(c->tlink, &c->up->local);
    c->on_loop = true;
    event_assign(c->sock_ev, c->up->base, fd, EV_READ | EV_PERSIST, on_link_io, c);
    event_assign(c->out_ev, c->up->base, fd, EV_WRITE, on_link_io, c);
    if (event_add(c->sock_ev, NULL) != 0 || (tick && event_add(c->tick_ev, &tv) != 0)) {
        conn_link_over(c, UPSTREAM_LINK_FAILED);
        local_kick(c->up);
        return;
    }
    event_active(c->round_ev, 0, 0);
}

/* Frees a connection whose thread has been joined (or never started); its waiting channels too (only upstream_free()
 * leaves some). */
static void conn_free(struct upstream_conn *c)
{
    struct upstream_chan *ch, *next;

    if (!c)
        return;
    if (c->tlink && !c->exited)
        atomic_fetch_sub(&conns_total, 1); /* its thread never started, or upstream_free() joined it */
    LIST_FOR_EACH_ENTRY_SAFE (ch, next, &c->waiting, link) {
        list_unlink(&ch->link);
        chan_free_waiting(ch);
    }
    upstream_link_free(c->tlink);
    upstream_inbox_deinit(&c->inbox);
    struct event *evs[] = {c->idle_ev, c->round_ev, c->sock_ev, c->out_ev, c->tick_ev};
    for (size_t i = 0; i < sizeof evs / sizeof evs[0]; i++)
        if (evs[i])
            event_free(evs[i]);
    free(c->vhost);
    free(c->user);
    free(c->pass);
    free(c->name);
    free(c);
}

/* The connection's credential (the loop's copy, to match sessions against) and its idle timer. */
static int conn_init_loop_side(struct upstream_conn *c, const struct upstream_login *login)
{
    c->vhost = strdup(login->vhost ? login->vhost : "/");
    c->user = strdup(login->user ? login->user : "");
    c->pass = strdup(login->pass ? login->pass : "");
    c->name = login->conn_name ? strdup(login->conn_name) : NULL;
    if (!c->vhost || !c->user || !c->pass || (login->conn_name && !c->name))
        return -ENOMEM;
    if (c->up->cfg.idle_close_ms && !(c->idle_ev = evtimer_new(c->up->base, on_conn_idle, c)))
        return -ENOMEM;
    /* The socket's events get their descriptor at CONN_UP (event_assign()): made now, so that nothing can fail then. */
    c->round_ev = event_new(c->up->base, -1, 0, on_link_io, c);
    c->sock_ev = event_new(c->up->base, -1, 0, on_link_io, c);
    c->out_ev = event_new(c->up->base, -1, 0, on_link_io, c);
    c->tick_ev = event_new(c->up->base, -1, EV_PERSIST, on_link_io, c);
    return c->round_ev && c->sock_ev && c->out_ev && c->tick_ev ? 0 : -ENOMEM;
}

static int conn_new(struct upstream *up, const struct upstream_login *login, struct upstream_conn **out)
{
    struct upstream_conn *c = calloc(1, sizeof *c);
    struct upstream_link_params params = {.cfg = &up->cfg, .backoff = &up->backoff, .outbox = &up->outbox, .login = login};
    int r;

    if (!c)
        return -ENOMEM;
    r = upstream_inbox_init(&c->inbox);
    c->up = up;
    list_init(&c->waiting);
    c->shutdown_cmd = (struct upstream_cmd){.kind = UPSTREAM_CMD_SHUTDOWN, .embedded = true};
    c->cap = up->cfg.channel_max ? up->cfg.channel_max : 65535;
    if (up->chan_cap && up->chan_cap < c->cap)
        c->cap = up->chan_cap; /* the broker's channel_max as of the last login */
    if (r < 0 || (r = conn_init_loop_side(c, login)) < 0)
        goto fail;
    params.inbox = &c->inbox;
    params.owner = c;
    r = upstream_link_new(&params, &c->tlink);
    if (r < 0)
        goto fail;
    /* Given back at CONN_EXIT, or by conn_free(). The add is the check: workers' upstreams open connections at once, and
     * conn_within_caps()'s look at the count is only a shortcut. */
    if (atomic_fetch_add(&conns_total, 1) >= up->cfg.max_connections && up->cfg.max_connections) {
        r = -EAGAIN;
        goto fail;
    }
    r = conn_start_thread(c, upstream_link_main);
    if (r < 0)
        goto fail;
    list_link_front(&up->conns, &c->link);
    *out = c;
    return 0;
fail:
    conn_free(c);
    return r;
}

static bool conn_matches(const struct upstream_conn *c, const struct upstream_login *login)
{
    return strcmp(c->vhost, login->vhost ? login->vhost : "/") == 0 && strcmp(c->user, login->user ? login->user : "") == 0 &&
           strcmp(c->pass, login->pass ? login->pass : "") == 0;
}

/* How long `c`'s close thread has been in rabbitmq-c's connection.close, or its link waiting for room in a socket the
 * broker does not read; 0 when neither. */
static uint64_t conn_stuck_ms(struct upstream_conn *c, uint64_t now)
{
    uint64_t busy = c->exited ? 0 : atomic_load(&c->inbox.busy_since_ms);
    uint64_t full = c->exited ? 0 : atomic_load(&c->inbox.full_since_ms);
    uint64_t since = busy && (!full || busy < full) ? busy : full;

    return since && now > since ? now - since : 0;
}

/*
 * Whether a new connection for `login` stays within the caps (invariant 4: an unauthenticated peer chooses the
 * credentials, and each costs a connection, and a thread while it logs in). Connections count until their CONN_EXIT: a
 * dead one (`exited`) no longer does, nor does a failed login once its sessions heard of it. Fills *why when not.
 */
static void total_limit_error(struct upstream *up, struct upstream_error *why)
{
    snprintf(up->limit_text, sizeof up->limit_text,
             "warren has its most AMQP connections open (amqp_max_connections = %u); try again later", up->cfg.max_connections);
    *why = (struct upstream_error){UPSTREAM_ERR_LIMIT, 0, "connection_limit", up->limit_text};
}

static bool conn_within_caps(struct upstream *up, const struct upstream_login *login, struct upstream_error *why)
{
    const struct upstream_config *cfg = &up->cfg;
    char *text = up->limit_text;
    const struct upstream_conn *c;
    unsigned n = 0;

    if (cfg->max_connections && atomic_load(&conns_total) >= cfg->max_connections) {
        total_limit_error(up, why);
        return false;
    }
    if (!cfg->max_connections_per_credential)
        return true;
    LIST_FOR_EACH_ENTRY (c, &up->conns, link) {
        n += !c->exited && conn_matches(c, login);
    }
    if (n < cfg->max_connections_per_credential)
        return true;
    snprintf(text, sizeof up->limit_text,
             "this credential has its most AMQP connections open (amqp_max_connections_per_credential = %u); try again later",
             cfg->max_connections_per_credential);
    *why = (struct upstream_error){UPSTREAM_ERR_LIMIT, 0, "credential_connection_limit", text};
    return false;
}

/* A live connection of this credential with a free channel, or a new one. 0, -errno, or UPSTREAM_ERR_LIMIT (*why says
 * which cap; its text is valid until the next call). */
static int conn_pick(struct upstream *up, const struct upstream_login *login, struct upstream_conn **out,
                     struct upstream_error *why)
{
    struct upstream_conn *c;

    uint64_t now = clock_now_ms();

    /* Not a connection the broker does not read (blocked, or its socket full for a while): a channel.open sent there
     * would wait with it. */
    LIST_FOR_EACH_ENTRY (c, &up->conns, link) {
        bool stuck = up->cfg.write_timeout_ms && conn_stuck_ms(c, now) >= UPSTREAM_STUCK_MS; /* no watchdog: never "stuck" */
        if (!c->retired && !c->blocked && !stuck && c->n_chans < c->cap && conn_fresh(c) && conn_matches(c, login)) {
            *out = c;
            return 0;
        }
    }
    if (!conn_within_caps(up, login, why))
        return UPSTREAM_ERR_LIMIT;
    int r = conn_new(up, login, out);
    if (r == -EAGAIN) { /* another worker took the last one meanwhile */
        total_limit_error(up, why);
        return UPSTREAM_ERR_LIMIT;
    }
    return r;
}

/*
 * CONN_UP: `cap` is the connection's channel_max (the broker's, capped by the config). The first `cap` waiting channels go
 * to the link, the others to another connection of the credential. If none can be opened (out of memory or threads), a
 * channel goes to this link anyway, which fails it as it finds no free channel number: on_open(err). The channels moved
 * away never come back to c->waiting (c is live now), so the walk over it is safe.
 */
static void conn_on_up(struct upstream *up, struct upstream_conn *c, unsigned cap)
{
    struct upstream_login login = {c->vhost, c->user, c->pass, c->name};
    struct upstream_error why;
    struct upstream_chan *ch, *next;
    unsigned sent = 0;

    c->live = true;
    c->auth_ms = clock_now_ms();
    c->cap = cap;
    up->chan_cap = cap;
    LIST_FOR_EACH_ENTRY_SAFE (ch, next, &c->waiting, link) {
        struct upstream_conn *to;
        list_unlink(&ch->link);
        if (sent < cap) {
            chan_dispatch(ch);
            sent++;
            continue;
        }
        c->n_chans--;
        if (conn_pick(up, &login, &to, &why) != 0)
            to = c; /* which fails it for want of a channel number */
        chan_attach(to, ch);
    }
}

/* CONN_DOWN: the connection is dead. Its waiting channels (if it never came up) go to its link, which fails them with
 * the connection's error, before the SHUTDOWN that conn_retire() queues after them. */
static void conn_on_down(struct upstream_conn *c)
{
    struct upstream_chan *ch, *next;

    c->live = false;
    LIST_FOR_EACH_ENTRY_SAFE (ch, next, &c->waiting, link) {
        list_unlink(&ch->link);
        chan_dispatch(ch);
    }
    conn_retire(c);
}

/* ---------------------------------------------------------------------------------------------------------------------
 * Results
 */

static void on_conn_result(struct upstream *up, struct upstream_res *r)
{
    struct upstream_conn *c = r->conn;
    struct upstream_chan *ch;

    switch (r->kind) {
    case UPSTREAM_RES_CONN_UP:
        memcpy(c->broker, r->u.up.broker, sizeof(c->broker));
        conn_adopt(c);
        conn_on_up(up, c, r->u.up.chan_max);
        break;
    case UPSTREAM_RES_CONN_DOWN:
        conn_on_down(c);
        break;
    case UPSTREAM_RES_CONN_EXIT:
        /* The connection is gone and counts no more (its thread, if it ended on one, joined). A dead link leaves before
         * its channels are released (a refused login must not keep a thread for a session that does not go away): the
         * loop serves what is queued for it and what comes later (conn_push()), and frees the connection at the
         * CHAN_DONE of its last channel. */
        conn_join_thread(c);
        upstream_link_adopt(c->tlink, &up->local);
        atomic_fetch_sub(&conns_total, 1);
        c->exited = true;
        if (c->n_chans == 0) {
            list_unlink(&c->link);
            conn_free(c);
        } else {
            conn_kick(c);
        }
        break;
    case UPSTREAM_RES_BLOCKED:
        /* A blocked connection's socket is not read by the broker: a channel.open sent there would wait with it. */
        c->blocked = r->u.blocked;
        LIST_FOR_EACH_ENTRY (ch, &up->chans, link) {
            if (ch->conn == c && ch->st == UPSTREAM_CHAN_OPEN && ch->cb.on_blocked)
                ch->cb.on_blocked(ch->ud, r->u.blocked);
        }
        break;
    default:
        break;
    }
}

/* CHAN_DONE: the link is finished with the channel; so is the loop. */
static void chan_on_done(struct upstream *up, struct upstream_chan *ch)
{
    struct upstream_conn *c = ch->conn;

    up->closing--;
    list_unlink(&ch->link);
    free(ch);
    if (!c) /* refused: it never had a connection */
        return;
    c->n_chans--;
    if (c->exited && c->n_chans == 0) {
        list_unlink(&c->link);
        conn_free(c);
        return;
    }
    conn_idle_arm(c);
}

/* Whether a result of this kind still becomes a callback in the channel's state. */
static bool chan_takes(const struct upstream_chan *ch, enum upstream_res_kind kind)
{
    switch (ch->st) {
    case UPSTREAM_CHAN_OPEN_FAILED:
        return kind == UPSTREAM_RES_DONE; /* the failures of the operations queued behind the open */
    case UPSTREAM_CHAN_CLOSED:
    case UPSTREAM_CHAN_RELEASED:
        return false;
    case UPSTREAM_CHAN_REFUSED:
        return kind == UPSTREAM_RES_OPEN;
    default:
        return true;
    }
}

static void on_chan_result(struct upstream *up, struct upstream_res *r)
{
    struct upstream_chan *ch = r->ch;
    const struct upstream_error *err = r->has_err ? &r->err : NULL;

    if (r->kind == UPSTREAM_RES_CHAN_DONE) {
        chan_on_done(up, ch);
        return;
    }
    if (!chan_takes(ch, r->kind))
        return;
    switch (r->kind) {
    case UPSTREAM_RES_OPEN:
        ch->st = err ? UPSTREAM_CHAN_OPEN_FAILED : UPSTREAM_CHAN_OPEN;
        up->channels += !err;
        if (ch->cb.on_open)
            ch->cb.on_open(ch->ud, err);
        break;
    case UPSTREAM_RES_DONE:
        if (ch->cb.on_done)
            ch->cb.on_done(ch->ud, r->u.done.op_tag, err, r->u.done.queue);
        break;
    case UPSTREAM_RES_DELIVERY:
        up->delivered++;
        if (ch->cb.on_delivery)
            ch->cb.on_delivery(ch->ud, &r->u.delivery);
        break;
    case UPSTREAM_RES_CANCEL:
        if (ch->cb.on_cancel)
            ch->cb.on_cancel(ch->ud, r->u.consumer_tag);
        break;
    case UPSTREAM_RES_CLOSED:
        ch->st = UPSTREAM_CHAN_CLOSED;
        up->channels--;
        if (ch->cb.on_closed)
            ch->cb.on_closed(ch->ud, err);
        break;
    default:
        break;
    }
}

/* Runs a batch of results, in order (the batch is the caller's: results made meanwhile go to the outbox or up->local). */
static void results_run(struct upstream *up, struct list *batch)
{
    struct upstream_res *r;

    while ((r = list_first_entry(batch, struct upstream_res, link))) {
        list_unlink(&r->link);
        if (r->ch)
            on_chan_result(up, r);
        else
            on_conn_result(up, r);
        free(r);
    }
}

static void on_results(evutil_socket_t fd, short what, void *arg)
{
    struct upstream *up = arg;
    struct list batch = LIST_INIT(batch);

    (void)fd;
    (void)what;
    upstream_outbox_take(&up->outbox, &batch);
    results_run(up, &batch);
}

static void on_local(evutil_socket_t fd, short what, void *arg)
{
    struct upstream *up = arg;
    struct list batch = LIST_INIT(batch);

    (void)fd;
    (void)what;
    list_splice_tail(&batch, &up->local);
    results_run(up, &batch);
}

/* ---------------------------------------------------------------------------------------------------------------------
 * The upstream
 */

/* Copies what the config points to: the brokers, product and version. */
static int config_copy(struct upstream *up, const struct upstream_config *cfg)
{
    up->cfg = *cfg;
    up->cfg.brokers = NULL;
    up->cfg.product = NULL;
    up->cfg.version = NULL;
    up->brokers = calloc(cfg->n_brokers, sizeof *up->brokers);
    if (!up->brokers)
        return -ENOMEM;
    for (size_t i = 0; i < cfg->n_brokers; i++)
        if (!(up->brokers[i] = strdup(cfg->brokers[i])))
            return -ENOMEM;
    up->cfg.brokers = (const char *const *)up->brokers;
    up->cfg.product = cfg->product ? strdup(cfg->product) : NULL;
    up->cfg.version = cfg->version ? strdup(cfg->version) : NULL;
    if ((cfg->product && !up->cfg.product) || (cfg->version && !up->cfg.version))
        return -ENOMEM;
    return 0;
}

/*
 * The write watchdog. rabbitmq-c waits without a deadline for room in a full socket (amqp_try_send() polls with an infinite
 * one), and a broker may stop reading: RabbitMQ does when it blocks publishers, a host may vanish without a reset. Links
 * hold their publishes while blocked and, once logged in, write their socket themselves without waiting (upstream-link.c,
 * "The wire"), but the close on the way out is rabbitmq-c's, and a socket the broker does not read at all leaves the link
 * waiting for room forever. So the loop watches every connection: a close thread busy in its call, or a link waiting for
 * room, for longer than write_timeout_ms has its socket shut down, which makes the stuck call fail (or the link's next
 * round see the socket gone), and that connection alone is lost (its sessions get ERROR `Broker connection lost`,
 * warren reconnects for new ones).
 */
static void on_watch(evutil_socket_t fd, short what, void *arg)
{
    struct upstream *up = arg;
    uint64_t now = clock_now_ms();
    struct upstream_conn *c;

    LIST_FOR_EACH_ENTRY (c, &up->conns, link) {
        if (conn_stuck_ms(c, now) > up->cfg.write_timeout_ms && upstream_inbox_cut(&c->inbox))
            log_msg(LOG_WARN, NULL, "AMQP connection of '%s' on vhost '%s': the broker read nothing of it for over %u ms; cut",
                    c->user, c->vhost, up->cfg.write_timeout_ms);
    }
}

static int watch_start(struct upstream *up)
{
    struct timeval tv = clock_timeval(up->cfg.write_timeout_ms / 4 ? up->cfg.write_timeout_ms / 4 : 1);

    if (!up->cfg.write_timeout_ms)
        return 0;
    up->watch_ev = event_new(up->base, -1, EV_PERSIST, on_watch, up);
    return up->watch_ev && event_add(up->watch_ev, &tv) == 0 ? 0 : -ENOMEM;
}

int upstream_new(struct event_base *base, const struct upstream_config *cfg, struct upstream **out)
{
    struct upstream *up;
    int r;

    if (cfg->n_brokers == 0)
        return -EINVAL;
    up = calloc(1, sizeof *up);
    if (!up)
        return -ENOMEM;
    up->base = base;
    list_init(&up->conns);
    list_init(&up->chans);
    list_init(&up->local);
    upstream_backoff_init(&up->backoff);
    r = upstream_outbox_init(&up->outbox);
    if (r < 0 || (r = config_copy(up, cfg)) < 0)
        goto fail;
    r = -ENOMEM;
    up->res_ev = event_new(base, up->outbox.fd, EV_READ | EV_PERSIST, on_results, up);
    up->local_ev = event_new(base, -1, 0, on_local, up);
    if (!up->res_ev || !up->local_ev || event_add(up->res_ev, NULL) != 0 || watch_start(up) != 0)
        goto fail;
    *out = up;
    return 0;
fail:
    upstream_free(up);
    return r;
}

/*
 * upstream_free(): a link told to stop closes its connection (connection.close, bounded by its rpc timeout) and exits. One
 * whose broker does not read, or that sits in a write, does not: at `deadline` its socket is cut, so the join returns
 * whatever the broker does.
 */
static void conn_join(struct upstream_conn *c, const struct timespec *deadline)
{
    if (!c->thread_live)
        return;
    if (pthread_timedjoin_np(c->thread, NULL, deadline) != 0) {
        upstream_inbox_cut(&c->inbox);
        pthread_join(c->thread, NULL);
    }
    c->thread_live = false;
}

void upstream_free(struct upstream *up)
{
    struct upstream_conn *c, *cnext;
    struct upstream_chan *ch, *chnext;
    struct timespec deadline;

    if (!up)
        return;
    clock_gettime(CLOCK_REALTIME, &deadline); /* pthread_timedjoin_np() measures on CLOCK_REALTIME */
    deadline.tv_sec += UPSTREAM_STOP_MS / 1000;
    deadline.tv_nsec += (long)(UPSTREAM_STOP_MS % 1000) * 1000000L;
    if (deadline.tv_nsec >= 1000000000L) {
        deadline.tv_sec++;
        deadline.tv_nsec -= 1000000000L;
    }
    LIST_FOR_EACH_ENTRY (c, &up->conns, link) {
        upstream_inbox_stop(&c->inbox);
        if (c->on_loop) /* closed on a thread like the others, or here without connection.close */
            conn_link_over(c, UPSTREAM_LINK_DONE);
    }
    LIST_FOR_EACH_ENTRY_SAFE (c, cnext, &up->conns, link) {
        list_unlink(&c->link);
        conn_join(c, &deadline);
        conn_free(c);
    }
    if (up->watch_ev)
        event_free(up->watch_ev);
    if (up->res_ev)
        event_free(up->res_ev);
    if (up->local_ev)
        event_free(up->local_ev);
    upstream_outbox_deinit(&up->outbox);
    upstream_res_free_list(&up->local);
    LIST_FOR_EACH_ENTRY_SAFE (ch, chnext, &up->chans, link) {
        list_unlink(&ch->link);
        free(ch->refused);
        free(ch);
    }
    for (size_t i = 0; up->brokers && i < up->cfg.n_brokers; i++)
        free(up->brokers[i]);
    free(up->brokers);
    free((char *)up->cfg.product);
    free((char *)up->cfg.version);
    upstream_backoff_deinit(&up->backoff);
    free(up);
}

void upstream_get_stats(const struct upstream *up, struct upstream_stats *out)
{
    const struct upstream_conn *c;

    memset(out, 0, sizeof *out);
    LIST_FOR_EACH_ENTRY (c, &up->conns, link) {
        out->connections += c->live;
        out->threads += !c->exited;
    }
    out->channels = up->channels;
    out->closing = up->closing;
    out->published = up->published;
    out->delivered = up->delivered;
}

/* ---------------------------------------------------------------------------------------------------------------------
 * Channels, as sessions use them
 */

/*
 * A channel that no connection may take (a cap, conn_within_caps()): its on_open(err) comes through the outbox like any
 * result, so it runs later, from the loop; its CHAN_DONE is sent by the release. Both are allocated now. 0 or -ENOMEM.
 */
static int chan_refuse(struct upstream_chan *ch, const struct upstream_error *why)
{
    struct upstream_res *open = upstream_res_prealloc(UPSTREAM_RES_OPEN, true);

    ch->refused = upstream_res_prealloc(UPSTREAM_RES_CHAN_DONE, false);
    if (!open || !ch->refused) {
        free(open);
        free(ch->refused);
        return -ENOMEM;
    }
    upstream_link_chan_free(ch->lch);
    ch->lch = NULL;
    ch->st = UPSTREAM_CHAN_REFUSED;
    list_link_tail(&ch->up->chans, &ch->link);
    upstream_res_set_err(open, why);
    open->ch = ch;
    upstream_outbox_push(&ch->up->outbox, open);
    return 0;
}

const char *upstream_chan_broker(const struct upstream_chan *ch)
{
    return ch && ch->conn ? ch->conn->broker : "";
}

bool upstream_chan_login(const struct upstream_chan *ch, struct upstream_login *out)
{
    const struct upstream_conn *c = ch ? ch->conn : NULL;

    if (!c)
        return false;
    *out = (struct upstream_login){.vhost = c->vhost, .user = c->user, .pass = c->pass, .conn_name = c->name};
    return true;
}

int upstream_chan_open(struct upstream *up, const struct upstream_login *login, const struct upstream_chan_cb *cb, void *ud,
                       struct upstream_chan **out)
{
    struct upstream_chan *ch = calloc(1, sizeof *ch);
    struct upstream_conn *c = NULL;
    int r = -ENOMEM;

    struct upstream_error why;

    if (!ch || (r = upstream_link_chan_new(ch, &ch->lch)) < 0 || (r = conn_pick(up, login, &c, &why)) < 0)
        goto fail;
    ch->up = up;
    ch->cb = *cb;
    ch->ud = ud;
    list_init(&ch->held);
    if (r == UPSTREAM_ERR_LIMIT) {
        r = chan_refuse(ch, &why);
        if (r < 0)
            goto fail;
        *out = ch;
        return 0;
    }
    ch->open_cmd = (struct upstream_cmd){.kind = UPSTREAM_CMD_OPEN, .embedded = true, .ch = ch->lch};
    ch->release_cmd = (struct upstream_cmd){.kind = UPSTREAM_CMD_RELEASE, .embedded = true, .ch = ch->lch};
    chan_attach(c, ch);
    *out = ch;
    return 0;
fail:
    if (ch)
        upstream_link_chan_free(ch->lch);
    free(ch);
    return r;
}

void upstream_chan_release(struct upstream_chan *ch)
{
    struct upstream_conn *c;

    if (!ch || ch->st == UPSTREAM_CHAN_RELEASED)
        return;
    c = ch->conn;
    if (!c) { /* refused: no link ever had it */
        struct upstream_res *done = ch->refused;
        ch->refused = NULL;
        ch->st = UPSTREAM_CHAN_RELEASED;
        ch->up->closing++;
        done->ch = ch;
        upstream_outbox_push(&ch->up->outbox, done);
        return;
    }
    if (ch->st == UPSTREAM_CHAN_WAITING) {
        list_unlink(&ch->link);
        chan_free_waiting(ch);
        c->n_chans--;
        conn_idle_arm(c);
        return;
    }
    if (ch->st == UPSTREAM_CHAN_OPEN)
        ch->up->channels--;
    ch->st = UPSTREAM_CHAN_RELEASED;
    ch->up->closing++;
    conn_push(c, &ch->release_cmd);
}

/* Copies an operation and queues it; see the header for the return values. */
static int chan_queue(struct upstream_chan *ch, const struct upstream_cmd *tmpl)
{
    struct upstream_cmd *cmd;

    if (!ch)
        return UPSTREAM_ERR_CLOSED;
    switch (ch->st) {
    case UPSTREAM_CHAN_OPEN_FAILED:
    case UPSTREAM_CHAN_CLOSED:
    case UPSTREAM_CHAN_RELEASED:
    case UPSTREAM_CHAN_REFUSED:
        return UPSTREAM_ERR_CLOSED;
    default:
        break;
    }
    cmd = upstream_cmd_dup(tmpl);
    if (!cmd)
        return -ENOMEM;
    cmd->ch = ch->lch;
    if (ch->st == UPSTREAM_CHAN_WAITING)
        list_link_tail(&ch->held, &cmd->link);
    else
        conn_push(ch->conn, cmd);
    return 0;
}

int upstream_chan_declare_queue(struct upstream_chan *ch, uint64_t op_tag, const char *name, unsigned flags,
                                const struct upstream_arg *args, size_t n_args)
{
    struct upstream_cmd t = {.kind = UPSTREAM_CMD_DECLARE,
                             .op_tag = op_tag,
                             .u.declare = {.queue = name ? name : "", .flags = flags, .args = args, .n_args = n_args}};
    return chan_queue(ch, &t);
}

int upstream_chan_bind(struct upstream_chan *ch, uint64_t op_tag, const char *queue, const char *exchange, const char *routing_key)
{
    struct upstream_cmd t = {
        .kind = UPSTREAM_CMD_BIND, .op_tag = op_tag, .u.bind = {.queue = queue, .exchange = exchange, .routing_key = routing_key}};
    return chan_queue(ch, &t);
}

int upstream_chan_delete_queue(struct upstream_chan *ch, uint64_t op_tag, const char *queue)
{
    struct upstream_cmd t = {.kind = UPSTREAM_CMD_DELETE, .op_tag = op_tag, .u.del = {.queue = queue}};
    return chan_queue(ch, &t);
}

int upstream_chan_consume(struct upstream_chan *ch, uint64_t op_tag, const char *queue, const char *consumer_tag, unsigned prefetch,
                          bool no_ack, bool exclusive, const struct upstream_arg *args, size_t n_args)
{
    struct upstream_cmd t = {.kind = UPSTREAM_CMD_CONSUME,
                             .op_tag = op_tag,
                             .u.consume = {.queue = queue,
                                           .consumer_tag = consumer_tag,
                                           .prefetch = prefetch,
                                           .no_ack = no_ack,
                                           .exclusive = exclusive,
                                           .args = args,
                                           .n_args = n_args}};
    return chan_queue(ch, &t);
}

int upstream_chan_cancel(struct upstream_chan *ch, uint64_t op_tag, const char *consumer_tag)
{
    struct upstream_cmd t = {.kind = UPSTREAM_CMD_CANCEL, .op_tag = op_tag, .u.cancel = {.consumer_tag = consumer_tag}};
    return chan_queue(ch, &t);
}

int upstream_chan_publish(struct upstream_chan *ch, uint64_t op_tag, const char *exchange, const char *routing_key,
                          const struct upstream_props *props, const uint8_t *body, size_t body_len)
{
    struct upstream_cmd t = {.kind = UPSTREAM_CMD_PUBLISH,
                             .op_tag = op_tag,
                             .u.publish = {.exchange = exchange ? exchange : "",
                                           .routing_key = routing_key ? routing_key : "",
                                           .body = body,
                                           .body_len = body_len}};
    int r;

    if (props)
        t.u.publish.props = *props;
    else
        t.u.publish.props.priority = -1;
    r = chan_queue(ch, &t);
    if (r == 0)
        ch->up->published++;
    return r;
}

int upstream_chan_ack(struct upstream_chan *ch, uint64_t delivery_tag, bool multiple)
{
    struct upstream_cmd t = {.kind = UPSTREAM_CMD_ACK, .u.ack = {.delivery_tag = delivery_tag, .multiple = multiple}};
    return chan_queue(ch, &t);
}

int upstream_chan_nack(struct upstream_chan *ch, uint64_t delivery_tag, bool multiple, bool requeue)
{
    struct upstream_cmd t = {.kind = UPSTREAM_CMD_NACK,
                             .u.ack = {.delivery_tag = delivery_tag, .multiple = multiple, .requeue = requeue}};
    return chan_queue(ch, &t);
}
