/*
 * bridge/session-ops.c — the session's log of upstream operations, its receipts, and flow control towards the broker.
 *
 * Every upstream operation gets an increasing op tag and a record in `ops` until its on_done. A RECEIPT (and the close
 * after DISCONNECT) waits in `waiters` for every op issued before it to complete, so receipts follow the order of the
 * frames and a SEND's receipt means "confirmed by the broker" (DESIGN.md invariant 3). While too many publishes await
 * their confirms (max_unconfirmed), or the broker blocks publishers, or CONNECT waits for the broker, the session stops
 * reading from its client (invariant 2).
 *
 * Budgets (invariant 4): the ops and receipts waiting for the broker are counted, and past max_pending_ops the session
 * stops reading too, until the broker has answered (a SUBSCRIBE/UNSUBSCRIBE flood costs at most that many records, and
 * a legitimate burst only waits). A publish is counted in bytes (session_frame_bytes(), what the upstream copies): a SEND
 * (or a COMMIT) that would take the unconfirmed bytes past max_unconfirmed_bytes is not handled (SESSION_DEFER) and waits
 * in the input while reading is paused, unless nothing awaits a confirm: so the bound holds before anything is copied, and
 * one frame larger than it still goes through alone. A failed op always completes: a broker nack or an upstream failure
 * that does not kill the channel (out of memory) ends the session with an ERROR carrying the op's receipt; one that does
 * (channel or connection error) is reported by on_closed, which follows.
 */
#include "bridge/session-int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bridge/log.h"
#include "conf/conf.h"

size_t session_frame_bytes(const struct stomp_frame *f)
{
    size_t n = f->body_len;
    for (size_t i = 0; i < f->n_headers; i++)
        n += f->headers[i].name_len + f->headers[i].value_len + 2;
    return n;
}

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

static uint64_t op_begin(struct session *s, enum session_op_kind kind, const struct stomp_header *receipt, size_t bytes)
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
    s->ops.n_ops++;
    if (kind == SESSION_OP_PUBLISH) {
        op->bytes = bytes;
        s->ops.unconfirmed++;
        s->ops.unconfirmed_bytes += bytes;
    }
    session_flow_update(s);
    return op->tag;
}

uint64_t session_op_begin(struct session *s, enum session_op_kind kind, const struct stomp_header *receipt)
{
    return op_begin(s, kind, receipt, 0);
}

uint64_t session_op_begin_publish(struct session *s, const struct stomp_header *receipt, size_t bytes)
{
    return op_begin(s, SESSION_OP_PUBLISH, receipt, bytes);
}

bool session_unconfirmed_room(struct session *s, size_t bytes)
{
    if (s->subs.fan_waiting > 0) {
        s->ops.fan_wait = true;
        session_flow_update(s);
        return false;
    }
    s->ops.fan_wait = false;
    if (s->ops.unconfirmed == 0 || s->ops.unconfirmed_bytes + bytes <= s->conf->max_unconfirmed_bytes) {
        s->ops.wait_bytes = 0;
        return true;
    }
    s->ops.wait_bytes = bytes ? bytes : 1;
    session_flow_update(s);
    return false;
}

/* Unlinks the op with `tag` (usually the first: the broker answers in order). */
static struct session_op *op_take(struct session *s, uint64_t tag)
{
    struct session_op *op;
    LIST_FOR_EACH_ENTRY (op, &s->ops.ops, link) {
        if (op->tag != tag)
            continue;
        list_unlink(&op->link);
        s->ops.n_ops--;
        if (op->kind == SESSION_OP_PUBLISH) {
            s->ops.unconfirmed--;
            s->ops.unconfirmed_bytes -= op->bytes;
        }
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
            break;
        list_unlink(&w->link);
        s->ops.n_waiters--;
        if (w->receipt) {
            struct stomp_header h = session_hdr("receipt-id", w->receipt);
            (void)session_send_frame(s, STOMP_CMD_RECEIPT, &h, 1, "", 0);
        }
        if (w->close)
            session_close(s, "client disconnected");
        waiter_free(w);
    }
    session_flow_update(s);
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
    s->ops.n_waiters++;
    waiters_run(s); /* may close the session: DISCONNECT's close, which is not a failure */
    return SESSION_OK;
}

/* The ERROR for op `op`, which failed with `err` (a nack, or an upstream failure the channel survived). */
static void op_error(struct session *s, const struct session_op *op, const struct upstream_error *err)
{
    char detail[512] = "";
    struct session_arg r = {op->receipt, op->receipt ? strlen(op->receipt) : 0};
    if (s->state == SESSION_ST_CLOSED)
        return;
    if (err->kind == UPSTREAM_ERR_NACK) {
        if (err->text)
            snprintf(detail, sizeof(detail), ": %s", err->text);
        (void)session_error_frame(s, &r, SESSION_ERR_NACK, &SARG(detail), 1, NULL);
        return;
    }
    snprintf(detail, sizeof(detail), "the broker operation failed: %s",
             err->text && err->text[0] ? err->text : upstream_err_str(err->kind));
    session_log(s, LOG_WARN, "operation %llu failed: %s (%s)", (unsigned long long)op->tag, detail, upstream_err_str(err->kind));
    (void)session_error_frame(s, &r, SESSION_ERR_INTERNAL, &SARG(detail), 1, NULL);
}

void session_ops_done(struct session *s, uint64_t op_tag, const struct upstream_error *err)
{
    /* A channel or connection error means the channel died: on_closed follows and reports it (with the oldest pending
     * op's receipt); no RECEIPT may go out for work that did not happen, so the op stays pending until then. Any other
     * failure (a nack, out of memory at the upstream) is this op's alone: it completes here, with its ERROR, or nothing
     * would ever answer its receipt or let DISCONNECT finish. */
    if (err && (err->kind == UPSTREAM_ERR_CHANNEL || err->kind == UPSTREAM_ERR_CONNECTION))
        return;
    struct session_op *op = op_take(s, op_tag);
    if (!op)
        return;
    if (err)
        op_error(s, op, err);
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

/* The budgets that stop reading: pending ops and receipts, unconfirmed publishes, a deferred frame's bytes. */
static bool over_budget(const struct session *s)
{
    const struct session_oplog *o = &s->ops;
    const struct conf *c = s->conf;
    return o->n_ops + o->n_waiters >= (size_t)c->max_pending_ops || o->unconfirmed >= (unsigned)c->max_unconfirmed ||
           (o->wait_bytes > 0 && o->unconfirmed > 0 && o->unconfirmed_bytes + o->wait_bytes > c->max_unconfirmed_bytes) ||
           (o->fan_wait && s->subs.fan_waiting > 0);
}

void session_flow_update(struct session *s)
{
    bool want = s->state == SESSION_ST_CONNECTING || s->ops.blocked || over_budget(s);
    if (want == s->ops.read_paused || s->state == SESSION_ST_CLOSED)
        return;
    s->ops.read_paused = want;
    s->io.pause_reading(s->io_ud, want);
    if (!want)
        session_input_resume(s);
}
