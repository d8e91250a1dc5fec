/*
 * bridge/timer.c — bridge/timer.h on libevent: a timer is an evtimer; a delay of 0 activates the event directly, so a
 * deferred call runs in the same loop iteration (after the callbacks already active) instead of a turn later.
 */
#include "bridge/timer.h"

#include <stdlib.h>

#include <event2/event.h>

#include "bridge/clock.h"

struct timer {
    struct event *ev;
    timer_fn fn;
    void *arg;
};

static void on_event(evutil_socket_t fd, short what, void *arg)
{
    struct timer *t = arg;
    t->fn(t->arg);
}

uint64_t timer_now_ms(void)
{
    return clock_now_ms();
}

struct timer *timer_new(struct event_base *base, timer_fn fn, void *arg)
{
    struct timer *t = calloc(1, sizeof(*t));
    if (!t)
        return NULL;
    t->fn = fn;
    t->arg = arg;
    t->ev = evtimer_new(base, on_event, t);
    if (!t->ev) {
        free(t);
        return NULL;
    }
    return t;
}

void timer_free(struct timer *t)
{
    if (!t)
        return;
    event_free(t->ev);
    free(t);
}

void timer_yield(struct timer *t)
{
    static const struct timeval zero = {0, 0};
    evtimer_add(t->ev, &zero);
}

void timer_arm(struct timer *t, uint64_t delay_ms)
{
    if (delay_ms == 0) {
        evtimer_del(t->ev);
        event_active(t->ev, EV_TIMEOUT, 0);
        return;
    }
    struct timeval tv = clock_timeval(delay_ms);
    evtimer_add(t->ev, &tv);
}

void timer_disarm(struct timer *t)
{
    if (t)
        evtimer_del(t->ev);
}
