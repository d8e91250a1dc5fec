/*
 * bridge/clock.h — the monotonic clock bridge/ runs on, in milliseconds, and its conversion to struct timeval for
 * libevent timeouts. One definition, so every timer in bridge/ measures time the same way.
 */
#pragma once

#include <stdint.h>
#include <sys/time.h>

/* Milliseconds of CLOCK_MONOTONIC (never goes back, unaffected by wall-clock changes). */
uint64_t clock_now_ms(void);

/* `ms` as a struct timeval (for evtimer_add() and friends). */
struct timeval clock_timeval(uint64_t ms);
