/*
 * bridge/list.h — one intrusive doubly linked list for bridge/ (the c-list idea of dbus-broker): a `struct list` head,
 * a `struct list` node embedded in each element, O(1) link and unlink, no allocation.
 *
 * A head is initialised with list_init() (or LIST_INIT); a node needs no initialisation: a zeroed node (calloc) counts
 * as unlinked, and list_unlink() leaves it unlinked again, so unlinking twice is harmless. Iterate with
 * LIST_FOR_EACH_ENTRY, or LIST_FOR_EACH_ENTRY_SAFE when the body may unlink or free the current element.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>

struct list {
    struct list *prev, *next;
};

#define LIST_INIT(head)                                                                                                            \
    {                                                                                                                              \
        .prev = &(head), .next = &(head)                                                                                           \
    }

/* The element that embeds `node` as its `member`. */
#define list_entry(node, type, member) ((type *)(void *)((char *)(node)-offsetof(type, member)))

static inline void list_init(struct list *head)
{
    head->prev = head->next = head;
}

static inline bool list_is_empty(const struct list *head)
{
    return head->next == head;
}

/* true when `node` is on a list (a zeroed or unlinked node is not). */
static inline bool list_is_linked(const struct list *node)
{
    return node->next && node->next != node;
}

/* Links `node` (unlinked) just before `where`: before a head, that is at the tail. */
static inline void list_link_before(struct list *where, struct list *node)
{
    node->prev = where->prev;
    node->next = where;
    where->prev->next = node;
    where->prev = node;
}

static inline void list_link_tail(struct list *head, struct list *node)
{
    list_link_before(head, node);
}

static inline void list_link_front(struct list *head, struct list *node)
{
    list_link_before(head->next, node);
}

/* Unlinks `node` if it is linked; it is left unlinked (list_is_linked() false). */
static inline void list_unlink(struct list *node)
{
    if (list_is_linked(node)) {
        node->prev->next = node->next;
        node->next->prev = node->prev;
    }
    node->prev = node->next = node;
}

/* Moves every node of `from` to the tail of `to`, in order, in O(1); `from` is left empty. */
static inline void list_splice_tail(struct list *to, struct list *from)
{
    if (list_is_empty(from))
        return;
    from->next->prev = to->prev;
    to->prev->next = from->next;
    from->prev->next = to;
    to->prev = from->prev;
    list_init(from);
}

/* First element, or NULL when the list is empty. */
#define list_first_entry(head, type, member) (list_is_empty(head) ? NULL : list_entry((head)->next, type, member))

#define LIST_FOR_EACH_ENTRY(pos, head, member)                                                                                     \
    for ((pos) = list_entry((head)->next, __typeof__(*(pos)), member); &(pos)->member != (head);                                   \
         (pos) = list_entry((pos)->member.next, __typeof__(*(pos)), member))

#define LIST_FOR_EACH_ENTRY_SAFE(pos, tmp, head, member)                                                                           \
    for ((pos) = list_entry((head)->next, __typeof__(*(pos)), member),                                                             \
        (tmp) = list_entry((pos)->member.next, __typeof__(*(pos)), member);                                                        \
         &(pos)->member != (head); (pos) = (tmp), (tmp) = list_entry((tmp)->member.next, __typeof__(*(pos)), member))
