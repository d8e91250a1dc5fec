/*
 * tests/unit/fake-timer.c — bridge/timer.h with a manual clock (tests/unit/fake-timer.h). Timers live on one list;
 * firing scans it for the earliest due one, which is plenty for a handful of timers per test.
 */
#include "fake-timer.h"

#include <stdbool.h>
#include <stdlib.h>

#include "bridge/list.h"

struct timer {
    struct list link;
    timer_fn fn;
    void *arg;
    bool armed;
    uint64_t due;
    uint64_t seq; /* arming order: timers due at the same time fire in the order they were armed */
};

uint64_t fake_now_ms = 1000000;
static struct list timers = LIST_INIT(timers);
static uint64_t arm_seq;

uint64_t timer_now_ms(void)
{
    return fake_now_ms;
}

struct timer *timer_new(struct event_base *base, timer_fn fn, void *arg)
{
    struct timer *t = calloc(1, sizeof(*t));
    if (!t)
        return NULL;
    t->fn = fn;
    t->arg = arg;
    list_link_tail(&timers, &t->link);
    return t;
}

void timer_free(struct timer *t)
{
    if (!t)
        return;
    list_unlink(&t->link);
    free(t);
}

void timer_arm(struct timer *t, uint64_t delay_ms)
{
    t->armed = true;
    t->due = fake_now_ms + delay_ms;
    t->seq = ++arm_seq;
}

void timer_yield(struct timer *t)
{
    timer_arm(t, 0);
}

void timer_disarm(struct timer *t)
{
    if (t)
        t->armed = false;
}

/* The armed timer with the earliest (due, seq) at or before `limit`, or NULL. */
static struct timer *next_due(uint64_t limit)
{
    struct timer *best = NULL, *t;
    LIST_FOR_EACH_ENTRY (t, &timers, link)
        if (t->armed && t->due <= limit && (!best || t->due < best->due || (t->due == best->due && t->seq < best->seq)))
            best = t;
    return best;
}

static size_t run_until(uint64_t limit)
{
    size_t n = 0;
    struct timer *t;
    while ((t = next_due(limit))) {
        if (t->due > fake_now_ms)
            fake_now_ms = t->due;
        t->armed = false;
        t->fn(t->arg);
        n++;
    }
    return n;
}

size_t fake_timer_run(void)
{
    return run_until(fake_now_ms);
}

size_t fake_timer_advance(uint64_t ms)
{
    uint64_t end = fake_now_ms + ms;
    size_t n = run_until(end);
    fake_now_ms = end;
    return n;
}

size_t fake_timer_armed(void)
{
    size_t n = 0;
    struct timer *t;
    LIST_FOR_EACH_ENTRY (t, &timers, link)
        n += t->armed;
    return n;
}

size_t fake_timer_live(void)
{
    size_t n = 0;
    struct timer *t;
    LIST_FOR_EACH_ENTRY (t, &timers, link)
        n++;
    return n;
}
