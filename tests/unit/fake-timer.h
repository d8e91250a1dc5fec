/*
 * tests/unit/fake-timer.h — a test implementation of bridge/timer.h: a manual clock, and timers that fire only when the
 * test advances it (fake_timer_advance) or runs what is due now (fake_timer_run). Deferred calls (delay 0) are due now.
 */
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "bridge/timer.h"

/* The clock (starts at 1,000,000 ms so that "now - x" never wraps in the code under test). */
extern uint64_t fake_now_ms;

/* Runs every timer due at or before the current time, earliest first, including those armed while running. Returns how
 * many fired. */
size_t fake_timer_run(void);

/* Moves the clock forward by `ms`, firing due timers at their own deadlines on the way. Returns how many fired. */
size_t fake_timer_advance(uint64_t ms);

/* Armed timers (tests check that a closed session leaves none behind). */
size_t fake_timer_armed(void);

/* Live timers (created and not freed). */
size_t fake_timer_live(void);
