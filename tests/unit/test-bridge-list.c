/*
 * tests/unit/test-bridge-list.c — bridge/list.h: link at either end, unlink (twice, and a zeroed node), iteration that
 * unlinks, and bridge/clock.h's timeval conversion.
 */
#include "bridge/list.h"

#include "bridge/clock.h"
#include "harness.h"

struct item {
    int v;
    struct list link;
};

static int sum_order(struct list *head)
{
    int acc = 0;
    struct item *it;
    LIST_FOR_EACH_ENTRY (it, head, link)
        acc = acc * 10 + it->v;
    return acc;
}

static void test_link_unlink(void)
{
    struct list head = LIST_INIT(head);
    struct item a = {.v = 1}, b = {.v = 2}, c = {.v = 3};
    CHECK(list_is_empty(&head) && !list_is_linked(&a.link));
    CHECK(list_first_entry(&head, struct item, link) == NULL);
    list_link_tail(&head, &b.link);
    list_link_tail(&head, &c.link);
    list_link_front(&head, &a.link);
    CHECK_EQ_INT(sum_order(&head), 123);
    CHECK(list_first_entry(&head, struct item, link) == &a);
    list_unlink(&b.link);
    CHECK(!list_is_linked(&b.link));
    list_unlink(&b.link);
    CHECK_EQ_INT(sum_order(&head), 13);
    list_link_before(&c.link, &b.link);
    CHECK_EQ_INT(sum_order(&head), 123);
}

static void test_safe_iteration(void)
{
    struct list head;
    struct item v[5] = {{.v = 1}, {.v = 2}, {.v = 3}, {.v = 4}, {.v = 5}};
    list_init(&head);
    for (int i = 0; i < 5; i++)
        list_link_tail(&head, &v[i].link);
    struct item *it, *tmp;
    LIST_FOR_EACH_ENTRY_SAFE (it, tmp, &head, link)
        if (it->v % 2 == 0)
            list_unlink(&it->link);
    CHECK_EQ_INT(sum_order(&head), 135);
    LIST_FOR_EACH_ENTRY_SAFE (it, tmp, &head, link)
        list_unlink(&it->link);
    CHECK(list_is_empty(&head));
}

static void test_clock(void)
{
    struct timeval tv = clock_timeval(12345);
    CHECK(tv.tv_sec == 12 && tv.tv_usec == 345000);
    uint64_t a = clock_now_ms(), b = clock_now_ms();
    CHECK(b >= a);
}

int main(void)
{
    RUN(test_link_unlink);
    RUN(test_safe_iteration);
    RUN(test_clock);
    return harness_done();
}
