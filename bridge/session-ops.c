/*
 * bridge/session-ops.c — the session's log of upstream operations, its receipts, and flow control towards the broker.
 *
 * Every upstream operation gets an increasing op tag and a record in `ops` until its on_done. A RECEIPT (and the close
 * after DISCONNECT) waits in `waiters` for every op issued before it to complete, so receipts follow the order of the
 * frames and a SEND's receipt means "confirmed by the broker" (DESIGN.md invariant 3). While too many publishes await
 * their confirms (max_unconfirmed), or the broker blocks publishers, or CONNECT waits for the broker, the session stops
 * reading from its client (invariant 2).
 */
#include "bridge/session-int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bridge/log.h"
#include "conf/conf.h"

void session_ops_init(struct session *s)
{
    list_init(&s->ops.ops);
    list_init(&s->ops.waiters);
}

static void op_free(struct session_op *op)
{
    if (op) {
        free(op->receipt);
        free(op);
    }
}

static void waiter_free(struct session_waiter *w)
{
    free(w->receipt);
    free(w);
}

void session_ops_deinit(struct session *s)
{
    struct session_op *op, *op_tmp;
    LIST_FOR_EACH_ENTRY_SAFE (op, op_tmp, &s->ops.ops, link) {
        list_unlink(&op->link);
        op_free(op);
    }
    struct session_waiter *w, *w_tmp;
    LIST_FOR_EACH_ENTRY_SAFE (w, w_tmp, &s->ops.waiters, link) {
        list_unlink(&w->link);
        waiter_free(w);
    }
}

uint64_t session_op_begin(struct session *s, enum session_op_kind kind, const struct stomp_header *receipt)
{
    struct session_op *op = calloc(1, sizeof(*op));
    if (!op || (receipt && !(op->receipt = session_strndup(receipt->value, receipt->value_len)))) {
        free(op);
        (void)SESSION_FATAL(s, "out of memory");
        return 0;
    }
    op->tag = ++s->ops.last_tag;
    op->kind = kind;
    list_link_tail(&s->ops.ops, &op->link);
    if (kind == SESSION_OP_PUBLISH) {
        s->ops.unconfirmed++;
        session_flow_update(s);
    }
    return op->tag;
}

/* Unlinks the op with `tag` (usually the first: the broker answers in order). */
static struct session_op *op_take(struct session *s, uint64_t tag)
{
    struct session_op *op;
    LIST_FOR_EACH_ENTRY (op, &s->ops.ops, link) {
        if (op->tag != tag)
            continue;
        list_unlink(&op->link);
        if (op->kind == SESSION_OP_PUBLISH)
            s->ops.unconfirmed--;
        return op;
    }
    return NULL;
}

enum session_rc session_op_check(struct session *s, uint64_t tag, int rc)
{
    if (rc == 0)
        return SESSION_OK;
    op_free(op_take(s, tag));
    if (rc == UPSTREAM_ERR_CLOSED)
        return SESSION_FAIL(s, NULL, BROKER_LOST, SARG("the AMQP channel is closed"));
    return SESSION_FATAL_RC(s, "cannot queue the AMQP operation", rc);
}

const char *session_ops_first_receipt(const struct session *s)
{
    const struct session_op *op = list_first_entry(&s->ops.ops, struct session_op, link);
    return op ? op->receipt : NULL;
}

/* Sends every RECEIPT whose earlier work is done; closes after DISCONNECT's. */
static void waiters_run(struct session *s)
{
    struct session_waiter *w;
    while (s->state != SESSION_ST_CLOSED && (w = list_first_entry(&s->ops.waiters, struct session_waiter, link))) {
        const struct session_op *oldest = list_first_entry(&s->ops.ops, struct session_op, link);
        if (oldest && oldest->tag <= w->tag)
            return;
        list_unlink(&w->link);
        if (w->receipt) {
            struct stomp_header h = session_hdr("receipt-id", w->receipt);
            (void)session_send_frame(s, STOMP_CMD_RECEIPT, &h, 1, "", 0);
        }
        if (w->close)
            session_close(s, "client disconnected");
        waiter_free(w);
    }
}

enum session_rc session_receipt_add(struct session *s, const struct stomp_header *receipt, bool close)
{
    struct session_waiter *w = calloc(1, sizeof(*w));
    if (!w || (receipt && !(w->receipt = session_strndup(receipt->value, receipt->value_len)))) {
        free(w);
        return SESSION_FATAL(s, "out of memory");
    }
    w->tag = s->ops.last_tag;
    w->close = close;
    list_link_tail(&s->ops.waiters, &w->link);
    waiters_run(s); /* may close the session: DISCONNECT's close, which is not a failure */
    return SESSION_OK;
}

void session_ops_done(struct session *s, uint64_t op_tag, const struct upstream_error *err)
{
    /* Any other failure means the channel died: on_closed follows and reports it (with this op's receipt); no RECEIPT
     * may go out for work that did not happen, so the op stays pending. */
    if (err && err->kind != UPSTREAM_ERR_NACK)
        return;
    struct session_op *op = op_take(s, op_tag);
    if (!op)
        return;
    if (err && s->state != SESSION_ST_CLOSED) {
        char detail[512] = "";
        if (err->text)
            snprintf(detail, sizeof(detail), ": %s", err->text);
        struct session_arg r = {op->receipt, op->receipt ? strlen(op->receipt) : 0};
        (void)session_error_frame(s, &r, SESSION_ERR_NACK, &SARG(detail), 1, NULL);
    }
    op_free(op);
    session_flow_update(s);
    waiters_run(s);
}

void session_ops_blocked(struct session *s, bool blocked)
{
    session_log(s, LOG_DEBUG, "broker %s publishers", blocked ? "blocks" : "unblocked");
    s->ops.blocked = blocked;
    session_flow_update(s);
}

void session_flow_update(struct session *s)
{
    bool want = s->state == SESSION_ST_CONNECTING || s->ops.blocked || s->ops.unconfirmed >= (unsigned)s->conf->max_unconfirmed;
    if (want == s->ops.read_paused || s->state == SESSION_ST_CLOSED)
        return;
    s->ops.read_paused = want;
    s->io.pause_reading(s->io_ud, want);
    if (!want)
        session_input_resume(s);
}
