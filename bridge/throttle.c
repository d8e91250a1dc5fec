/*
 * bridge/throttle.c — the per-address login throttle (bridge/throttle.h): a hash of chains keyed by the client's
 * address bytes, under one mutex. FNV-1a from a random basis with a murmur3 finaliser, as bridge/acceptor.c.
 */
#include "bridge/throttle.h"

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "bridge/hash.h"
#include "bridge/peer.h"

#define THROTTLE_BUCKETS 4096u

struct entry {
    struct entry *next;
    uint64_t last_fail_ms; /* the last refusal */
    uint64_t next_ms;      /* the earliest time the next attempt may go to the broker */
    unsigned fails;        /* refusals since the address was last forgotten (capped) */
    uint8_t len;
    uint8_t key[16];
};

struct throttle {
    pthread_mutex_t lock;
    uint32_t seed;
    size_t n;
    struct entry *buckets[THROTTLE_BUCKETS];
};

int throttle_new(struct throttle **out)
{
    struct throttle *t = calloc(1, sizeof(*t));
    if (!t)
        return -ENOMEM;
    if (pthread_mutex_init(&t->lock, NULL) != 0) {
        free(t);
        return -ENOMEM;
    }
    t->seed = hash_seed_new();
    *out = t;
    return 0;
}

void throttle_free(struct throttle *t)
{
    if (!t)
        return;
    for (unsigned b = 0; b < THROTTLE_BUCKETS; b++) {
        while (t->buckets[b]) {
            struct entry *e = t->buckets[b];
            t->buckets[b] = e->next;
            free(e);
        }
    }
    pthread_mutex_destroy(&t->lock);
    free(t);
}

size_t throttle_count(struct throttle *t)
{
    if (!t)
        return 0;
    pthread_mutex_lock(&t->lock);
    size_t n = t->n;
    pthread_mutex_unlock(&t->lock);
    return n;
}

/* The delay after `fails` refusals: THROTTLE_FIRST_MS doubling, at most max_ms. */
static uint64_t delay_of(unsigned fails, unsigned max_ms)
{
    uint64_t d = (uint64_t)THROTTLE_FIRST_MS << (fails > 1 ? (fails - 1 < 20 ? fails - 1 : 20) : 0);
    return d < max_ms ? d : max_ms;
}

static bool stale(const struct entry *e, uint64_t now_ms, unsigned max_ms)
{
    return now_ms - e->last_fail_ms > (uint64_t)max_ms * THROTTLE_FORGET_FACTOR;
}

/* Drops the stale entries of bucket b; returns the stalest one left (NULL when the bucket is empty). */
static struct entry *sweep(struct throttle *t, unsigned b, uint64_t now_ms, unsigned max_ms)
{
    struct entry *oldest = NULL;
    for (struct entry **pp = &t->buckets[b]; *pp;) {
        struct entry *e = *pp;
        if (stale(e, now_ms, max_ms)) {
            *pp = e->next;
            free(e);
            t->n--;
            continue;
        }
        if (!oldest || e->last_fail_ms < oldest->last_fail_ms)
            oldest = e;
        pp = &e->next;
    }
    return oldest;
}

static struct entry *find(struct throttle *t, unsigned b, const uint8_t *key, size_t len)
{
    for (struct entry *e = t->buckets[b]; e; e = e->next)
        if (e->len == len && memcmp(e->key, key, len) == 0)
            return e;
    return NULL;
}

uint64_t throttle_login_wait(struct throttle *t, const char *peer, uint64_t now_ms, unsigned max_ms)
{
    uint8_t key[16];
    size_t len;
    uint64_t wait = 0;
    if (!t || max_ms == 0 || !(len = peer_client_key(peer, key)))
        return 0;
    unsigned b = hash_seeded(t->seed, key, len) % THROTTLE_BUCKETS;
    pthread_mutex_lock(&t->lock);
    struct entry *e = find(t, b, key, len);
    if (e && stale(e, now_ms, max_ms)) {
        sweep(t, b, now_ms, max_ms);
        e = NULL;
    }
    if (e) {
        uint64_t turn = e->next_ms > now_ms ? e->next_ms : now_ms;
        wait = turn - now_ms;
        if (wait > max_ms) /* max_ms worth of attempts already queued: this one takes no turn */
            wait = THROTTLE_REFUSED;
        else
            e->next_ms = turn + delay_of(e->fails, max_ms);
    }
    pthread_mutex_unlock(&t->lock);
    return wait;
}

void throttle_login_failed(struct throttle *t, const char *peer, uint64_t now_ms, unsigned max_ms)
{
    uint8_t key[16];
    size_t len;
    if (!t || max_ms == 0 || !(len = peer_client_key(peer, key)))
        return;
    unsigned b = hash_seeded(t->seed, key, len) % THROTTLE_BUCKETS;
    pthread_mutex_lock(&t->lock);
    struct entry *e = find(t, b, key, len);
    if (e && stale(e, now_ms, max_ms)) {
        e->fails = 0;
        e->next_ms = 0;
    }
    if (!e && t->n >= THROTTLE_MAX_ENTRIES) {
        struct entry *old = sweep(t, b, now_ms, max_ms);
        if (t->n >= THROTTLE_MAX_ENTRIES && old) { /* reuse the stalest of this chain */
            e = old;
            e->fails = 0;
            e->next_ms = 0;
            e->len = (uint8_t)len;
            memcpy(e->key, key, len);
        }
    }
    if (!e && t->n < THROTTLE_MAX_ENTRIES && (e = calloc(1, sizeof(*e)))) {
        e->len = (uint8_t)len;
        memcpy(e->key, key, len);
        e->next = t->buckets[b];
        t->buckets[b] = e;
        t->n++;
    }
    if (e) {
        if (e->fails < 31)
            e->fails++;
        e->last_fail_ms = now_ms;
        uint64_t next = now_ms + delay_of(e->fails, max_ms);
        if (next > e->next_ms)
            e->next_ms = next;
    }
    pthread_mutex_unlock(&t->lock);
}
