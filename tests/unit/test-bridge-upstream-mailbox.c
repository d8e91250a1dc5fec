/*
 * tests/unit/test-bridge-upstream-mailbox.c — the inbox's coalesced wake-up (bridge/upstream-mailbox.c): the loop writes
 * a link's eventfd only when the link sleeps in its poll() and no other push woke it yet, and no wake-up is lost when
 * pushes race the link going to sleep. Needs no broker; also in suite 'tsan' (the race case is the point there).
 */
#include "bridge/upstream-int.h"

#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <stdlib.h>
#include <unistd.h>

#include "tests/unit/harness.h"

/* Whether the inbox's eventfd is readable now, and its counter (drained) when it is. */
static uint64_t wake_count(struct upstream_inbox *ib)
{
    struct pollfd p = {ib->wake_fd, POLLIN, 0};
    uint64_t n = 0;

    if (poll(&p, 1, 0) == 1 && read(ib->wake_fd, &n, sizeof n) != sizeof n)
        n = 0;
    return n;
}

static void take_all(struct upstream_inbox *ib, int *n)
{
    struct list got = LIST_INIT(got);
    struct upstream_cmd *c;

    upstream_inbox_take(ib, &got);
    while ((c = list_first_entry(&got, struct upstream_cmd, link))) {
        list_unlink(&c->link);
        (*n)++;
    }
}

/* A running link costs the loop no eventfd write; a sleeping one costs one however many commands come. (Before: one
 * write per push.) */
static void test_wake_coalesced(void)
{
    struct upstream_inbox ib;
    struct upstream_cmd cmds[4];
    struct list two = LIST_INIT(two);
    int n = 0;

    CHECK_EQ_INT(upstream_inbox_init(&ib), 0);
    for (int i = 0; i < 4; i++)
        cmds[i] = (struct upstream_cmd){.kind = UPSTREAM_CMD_ACK, .embedded = true};
    upstream_inbox_push(&ib, &cmds[0]); /* the link runs: it takes the inbox before it sleeps */
    CHECK_EQ_INT(wake_count(&ib), 0);
    CHECK(!upstream_inbox_sleep(&ib)); /* something is queued: it does not sleep */
    take_all(&ib, &n);
    CHECK_EQ_INT(n, 1);
    CHECK(upstream_inbox_sleep(&ib));
    upstream_inbox_push(&ib, &cmds[1]);
    list_link_tail(&two, &cmds[2].link);
    list_link_tail(&two, &cmds[3].link);
    upstream_inbox_push_list(&ib, &two);
    CHECK_EQ_INT(wake_count(&ib), 1); /* three commands, one write */
    upstream_inbox_awake(&ib, false);
    take_all(&ib, &n);
    CHECK_EQ_INT(n, 4);
    CHECK(upstream_inbox_sleep(&ib));
    upstream_inbox_stop(&ib); /* stop always writes */
    CHECK(wake_count(&ib) >= 1);
    upstream_inbox_awake(&ib, false);
    CHECK(!upstream_inbox_sleep(&ib)); /* stopping: it does not sleep */
    upstream_inbox_deinit(&ib);
}

#define PUSHERS    2
#define PER_PUSHER 20000

struct race {
    struct upstream_inbox ib;
    struct upstream_cmd cmds[PUSHERS][PER_PUSHER];
    int pusher;
    pthread_mutex_t lock;
    int taken;
    int lost;  /* a sleep that no push ended while commands were queued */
    int wakes; /* sleeps ended by the eventfd */
};

static void *pusher_main(void *arg)
{
    struct race *r = arg;
    int me;

    pthread_mutex_lock(&r->lock);
    me = r->pusher++;
    pthread_mutex_unlock(&r->lock);
    for (int i = 0; i < PER_PUSHER; i++) {
        upstream_inbox_push(&r->ib, &r->cmds[me][i]);
        if (i % 64 == 0)
            sched_yield();
    }
    return NULL;
}

/* The link's loop as upstream-link.c runs it: take, then sleep unless something is queued, poll, awake. A lost wake-up
 * shows as a poll() that times out with commands still to come. */
static void *link_main(void *arg)
{
    struct race *r = arg;
    int n = 0;

    while (n < PUSHERS * PER_PUSHER) {
        take_all(&r->ib, &n);
        if (n == PUSHERS * PER_PUSHER)
            break;
        struct pollfd p = {r->ib.wake_fd, POLLIN, 0};
        bool sleep = upstream_inbox_sleep(&r->ib);
        int got = poll(&p, 1, sleep ? 5000 : 0);
        if (sleep && got == 0) {
            r->lost++;
            break;
        }
        r->wakes += (p.revents & POLLIN) != 0;
        upstream_inbox_awake(&r->ib, (p.revents & POLLIN) != 0);
    }
    r->taken = n;
    return NULL;
}

/* Two threads push while the link takes and sleeps: every command arrives, no sleep waits for a wake-up that was not
 * written, and the link was woken far fewer times than commands were pushed. */
static void test_no_lost_wakeup(void)
{
    struct race *r = calloc(1, sizeof *r);
    pthread_t link, pushers[PUSHERS];

    if (!r)
        return;
    CHECK_EQ_INT(upstream_inbox_init(&r->ib), 0);
    pthread_mutex_init(&r->lock, NULL);
    for (int p = 0; p < PUSHERS; p++)
        for (int i = 0; i < PER_PUSHER; i++)
            r->cmds[p][i] = (struct upstream_cmd){.kind = UPSTREAM_CMD_ACK, .embedded = true};
    CHECK_EQ_INT(pthread_create(&link, NULL, link_main, r), 0);
    for (int p = 0; p < PUSHERS; p++)
        CHECK_EQ_INT(pthread_create(&pushers[p], NULL, pusher_main, r), 0);
    for (int p = 0; p < PUSHERS; p++)
        pthread_join(pushers[p], NULL);
    pthread_join(link, NULL);
    CHECK_EQ_INT(r->lost, 0);
    CHECK_EQ_INT(r->taken, PUSHERS * PER_PUSHER);
    CHECK(r->wakes < PUSHERS * PER_PUSHER);
    printf("# %d commands, %d wake-ups\n", PUSHERS * PER_PUSHER, r->wakes);
    upstream_inbox_deinit(&r->ib);
    pthread_mutex_destroy(&r->lock);
    free(r);
}

int main(void)
{
    RUN(test_wake_coalesced);
    RUN(test_no_lost_wakeup);
    return harness_done();
}
