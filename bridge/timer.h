/*
 * bridge/timer.h — one-shot timers and deferred calls for objects that must not know the event loop (the STOMP
 * session): a clock, a timer armed with a delay in milliseconds, and a delay of 0 meaning "on this loop turn, after the
 * current callback". bridge/timer.c implements it on libevent; the session unit tests link a fake with a manual clock
 * (tests/unit/fake-timer.c), which is how receipts, heart-beats and timeouts are tested without sleeping.
 *
 * Contract: callbacks run on the loop thread, never from inside a timer_* call. A timer fires at most once per arming;
 * timer_arm() on an armed timer re-arms it (the earlier deadline is forgotten); timer_disarm() and timer_free() cancel
 * it, so no callback runs afterwards. A callback may arm, disarm or free its own timer.
 */
#pragma once

#include <stdint.h>

struct event_base;
struct timer;

typedef void (*timer_fn)(void *arg);

/* Milliseconds of the loop's monotonic clock. */
uint64_t timer_now_ms(void);

/* A disarmed timer on `base` that calls fn(arg). NULL on allocation failure. */
struct timer *timer_new(struct event_base *base, timer_fn fn, void *arg);

/* Cancels and frees `t`. NULL is a no-op. */
void timer_free(struct timer *t);

/* Fires `delay_ms` from now; 0 = on this loop turn, once the current callback has returned. */
void timer_arm(struct timer *t, uint64_t delay_ms);

/*
 * Fires at the next loop turn, after the loop has polled every socket (a zero timeout, unlike timer_arm(t, 0), whose
 * call runs in this turn): how work over a per-turn budget yields to the other clients without a busy loop.
 */
void timer_yield(struct timer *t);

/* Cancels a pending firing. Harmless on a disarmed timer and on NULL. */
void timer_disarm(struct timer *t);
