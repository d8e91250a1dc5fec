/*
 * bridge/excl.c — the exclusive-queue table (bridge/excl.h): a hash of chains keyed by "vhost\0user\0queue", each entry
 * also on its owner's list so that a session gives its claims back without walking the table. The hash is FNV-1a from
 * a random basis with a murmur3 finaliser, as bridge/acceptor.c's per-address table: a client chooses queue names, and
 * must not be able to choose names that all land in one chain.
 */
#include "bridge/excl.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "bridge/hash.h"

#define EXCL_BUCKETS 4096u

struct excl_entry {
    struct list chain;      /* in its bucket */
    struct list owner_link; /* in its owner's claims */
    struct excl_owner *owner;
    size_t len;
    char key[]; /* vhost \0 user \0 queue, not NUL-terminated at len */
};

struct excl {
    uint32_t seed;
    size_t n;
    struct list buckets[EXCL_BUCKETS];
};

int excl_new(struct excl **out)
{
    struct excl *x = calloc(1, sizeof(*x));
    if (!x)
        return -ENOMEM;
    x->seed = hash_seed_new();
    for (unsigned i = 0; i < EXCL_BUCKETS; i++)
        list_init(&x->buckets[i]);
    *out = x;
    return 0;
}

void excl_free(struct excl *x)
{
    if (!x)
        return;
    for (unsigned i = 0; i < EXCL_BUCKETS; i++) {
        struct excl_entry *e, *tmp;
        LIST_FOR_EACH_ENTRY_SAFE (e, tmp, &x->buckets[i], chain) {
            list_unlink(&e->owner_link);
            e->owner->n--;
            free(e);
        }
    }
    free(x);
}

size_t excl_count(const struct excl *x)
{
    return x ? x->n : 0;
}

void excl_owner_init(struct excl_owner *o, struct excl *table)
{
    o->table = table;
    o->n = 0;
    list_init(&o->claims);
}

void excl_owner_release(struct excl_owner *o)
{
    struct excl_entry *e, *tmp;
    if (!o->table)
        return;
    LIST_FOR_EACH_ENTRY_SAFE (e, tmp, &o->claims, owner_link) {
        list_unlink(&e->owner_link);
        list_unlink(&e->chain);
        o->table->n--;
        free(e);
    }
    o->n = 0;
}

/* The key "vhost\0user\0queue" in buf (cap bytes); its length, or 0 when it does not fit. */
static size_t make_key(char *buf, size_t cap, const char *vhost, const char *user, const char *queue)
{
    size_t lv = strlen(vhost), lu = strlen(user), lq = strlen(queue);
    if (lv + lu + lq + 2 > cap)
        return 0;
    memcpy(buf, vhost, lv + 1);
    memcpy(buf + lv + 1, user, lu + 1);
    memcpy(buf + lv + lu + 2, queue, lq);
    return lv + lu + lq + 2;
}

static struct excl_entry *find(const struct excl *x, unsigned b, const char *key, size_t len)
{
    struct excl_entry *e;
    LIST_FOR_EACH_ENTRY (e, &x->buckets[b], chain)
        if (e->len == len && memcmp(e->key, key, len) == 0)
            return e;
    return NULL;
}

/* vhost, user and queue are each at most a few hundred bytes (STOMP headers bounded by the session, names by AMQP's
 * 255-byte shortstr); a key that does not fit is refused as locked by nobody and claimed by nobody. */
#define EXCL_KEY_MAX 1024

bool excl_locked(const struct excl_owner *o, const char *vhost, const char *user, const char *queue)
{
    char key[EXCL_KEY_MAX];
    size_t len;
    if (!o->table || !(len = make_key(key, sizeof(key), vhost, user, queue)))
        return false;
    const struct excl_entry *e = find(o->table, hash_seeded(o->table->seed, key, len) % EXCL_BUCKETS, key, len);
    return e && e->owner != o;
}

int excl_claim(struct excl_owner *o, const char *vhost, const char *user, const char *queue)
{
    char key[EXCL_KEY_MAX];
    size_t len;
    if (!o->table || !(len = make_key(key, sizeof(key), vhost, user, queue)))
        return 0;
    unsigned b = hash_seeded(o->table->seed, key, len) % EXCL_BUCKETS;
    struct excl_entry *e = find(o->table, b, key, len);
    if (e)
        return e->owner == o ? 0 : EXCL_LOCKED;
    if (o->n >= EXCL_MAX_PER_OWNER)
        return EXCL_FULL;
    if (!(e = malloc(sizeof(*e) + len)))
        return -ENOMEM;
    e->owner = o;
    e->len = len;
    memcpy(e->key, key, len);
    list_link_front(&o->table->buckets[b], &e->chain);
    list_link_front(&o->claims, &e->owner_link);
    o->n++;
    o->table->n++;
    return 0;
}
