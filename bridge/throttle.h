/*
 * bridge/throttle.h — failed logins slow down their client address (issue 7: a brute-force guard, like an
 * authentication backend's).
 *
 * Each address (bridge/peer.h peer_client_key(): an IPv4 address, an IPv6 /64) with recent refused logins waits before
 * its next login is tried at the broker: THROTTLE_FIRST_MS after the first refusal, doubling with each further one up
 * to `max_ms` (conf login_failure_delay_max_ms). The attempts of an address take turns, one per current delay, however
 * many connections it opens at once: that is what bounds the guesses the broker sees, and nothing waits on a thread (the
 * session holds a timer). An attempt whose turn would come more than max_ms away is refused at once, so an address has
 * at most max_ms / delay attempts waiting and none waits longer than max_ms. The delay comes before the login, so it cannot be
 * skipped by giving up early on a slow answer; the price is that a good login from an address that just failed waits too, while a
 * login from any other address does not. An address is forgotten THROTTLE_FORGET_FACTOR × max_ms after its last refusal. Successful
 * logins change nothing.
 *
 * Process-wide (every worker's sessions share one, through struct server_group), so one mutex, held only for a lookup.
 * Bounded: THROTTLE_MAX_ENTRIES addresses; a full chain gives up its stalest entry for a new one. The hash is seeded at
 * random (clients choose IPv6 addresses).
 */
#pragma once

#include <stddef.h>
#include <stdint.h>

#define THROTTLE_FIRST_MS      100u
#define THROTTLE_FORGET_FACTOR 10u
#define THROTTLE_MAX_ENTRIES   65536u
#define THROTTLE_REFUSED       UINT64_MAX /* throttle_login_wait(): refuse the login now */

struct throttle;

/* 0 or -ENOMEM. */
int throttle_new(struct throttle **out);
/* NULL is a no-op. */
void throttle_free(struct throttle *t);

/*
 * A login from `peer` is about to be tried at `now_ms`: the milliseconds it must wait first (0 for an address with no
 * recent refusal, and always when `t` is NULL or max_ms is 0), and the attempt takes its turn: the next one from the
 * address waits a delay longer. THROTTLE_REFUSED: the address has max_ms of turns taken already; refuse the login
 * without asking the broker. Any thread.
 */
uint64_t throttle_login_wait(struct throttle *t, const char *peer, uint64_t now_ms, unsigned max_ms);
/* The broker refused a login from `peer` at `now_ms`. Any thread. */
void throttle_login_failed(struct throttle *t, const char *peer, uint64_t now_ms, unsigned max_ms);
/* Addresses in the table (tests, figures). */
size_t throttle_count(struct throttle *t);
