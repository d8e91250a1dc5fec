/*
 * bridge/session-tx.c — STOMP transactions: BEGIN, COMMIT, ABORT.
 *
 * As in Web-STOMP, a transaction is a client-side buffer, not an AMQP tx: SEND/ACK/NACK frames carrying `transaction`
 * are copied out of the input buffer and replayed in order at COMMIT through the normal handlers; ABORT (and the end of
 * the session) drops them. Receipts of the buffered frames and of the COMMIT follow the replayed work (the COMMIT's
 * RECEIPT waits for the broker to confirm its publishes).
 *
 * Unlike Web-STOMP, a frame is checked when it arrives, with the ERROR it would get outside a transaction
 * (session_send_check(): destination, headers, what AMQP can carry; session_ack_check(): the id names a message this
 * session holds unacknowledged), and COMMIT checks every frame again before it replays any, so that a COMMIT is not
 * half applied for anything the session can see. What only the broker can refuse (a missing exchange, a nack) still
 * fails the session part-way. Bounded before anything is copied: max_transactions, max_transaction_frames per
 * transaction, and max_transaction_bytes for the copies of all of a session's open transactions together (a client
 * cannot multiply the byte bound by opening more transactions). COMMIT waits (SESSION_DEFER) while its SENDs would take
 * the unconfirmed bytes past max_unconfirmed_bytes.
 */
#include "bridge/session-int.h"

#include <stdlib.h>
#include <string.h>

#include "conf/conf.h"

/* The size of frame_copy(f)'s allocation. */
static size_t frame_copy_size(const struct stomp_frame *f)
{
    return sizeof(struct session_frame_copy) + f->n_headers * sizeof(struct stomp_header) + session_frame_bytes(f) + 1;
}

static struct session_frame_copy *frame_copy(const struct stomp_frame *f)
{
    struct session_frame_copy *c = malloc(frame_copy_size(f));
    if (!c)
        return NULL;
    struct stomp_header *h = (struct stomp_header *)(c + 1);
    char *p = (char *)(h + f->n_headers);
    c->link = (struct list){0};
    c->f = (struct stomp_frame){.cmd = f->cmd, .headers = h, .n_headers = f->n_headers, .body_len = f->body_len};
    for (size_t i = 0; i < f->n_headers; i++) {
        const struct stomp_header *src = &f->headers[i];
        h[i] = (struct stomp_header){.name = p, .name_len = src->name_len};
        memcpy(p, src->name, src->name_len);
        p[src->name_len] = '\0';
        p += src->name_len + 1;
        h[i].value = p;
        h[i].value_len = src->value_len;
        memcpy(p, src->value, src->value_len);
        p[src->value_len] = '\0';
        p += src->value_len + 1;
    }
    memcpy(p, f->body, f->body_len);
    p[f->body_len] = '\0';
    c->f.body = p;
    return c;
}

static void tx_free(struct session *s, struct session_tx *tx)
{
    struct session_frame_copy *c, *tmp;
    LIST_FOR_EACH_ENTRY_SAFE (c, tmp, &tx->frames, link)
        free(c);
    s->txs.bytes -= tx->bytes;
    free(tx->id);
    free(tx);
}

/* The checks a transactional frame gets when it arrives and again at COMMIT: what it would fail with if run now. */
static enum session_rc tx_check(struct session *s, const struct stomp_frame *f)
{
    return f->cmd == STOMP_CMD_SEND ? session_send_check(s, f) : session_ack_check(s, f);
}

static struct session_tx *tx_find(struct session *s, const struct stomp_header *h)
{
    struct session_tx *tx;
    LIST_FOR_EACH_ENTRY (tx, &s->txs.all, link)
        if (strlen(tx->id) == h->value_len && memcmp(tx->id, h->value, h->value_len) == 0)
            return tx;
    return NULL;
}

/* The transaction named in f's `transaction` header; fails the session when it is missing or unknown. */
static struct session_tx *tx_named(struct session *s, const struct stomp_frame *f)
{
    const struct stomp_header *h = stomp_frame_header(f, "transaction");
    if (!h) {
        (void)SESSION_FAIL(s, f, TX_MISSING, SARG(stomp_cmd_str(f->cmd)));
        return NULL;
    }
    struct session_tx *tx = tx_find(s, h);
    if (!tx)
        (void)SESSION_FAIL(s, f, TX_UNKNOWN, SARG_HDR(h));
    return tx;
}

static void tx_unlink(struct session *s, struct session_tx *tx)
{
    list_unlink(&tx->link);
    s->txs.n--;
}

enum session_rc session_cmd_begin(struct session *s, const struct stomp_frame *f, bool replay)
{
    char num[24];
    const struct stomp_header *h = stomp_frame_header(f, "transaction");
    if (!h)
        return SESSION_FAIL(s, f, TX_MISSING, SARG("BEGIN"));
    if (tx_find(s, h))
        return SESSION_FAIL(s, f, TX_OPEN, SARG_HDR(h));
    if (s->txs.n >= (size_t)s->conf->max_transactions)
        return SESSION_FAIL(s, f, TX_TOO_MANY, session_arg_int(num, sizeof(num), s->conf->max_transactions));
    struct session_tx *tx = calloc(1, sizeof(*tx));
    if (!tx || !(tx->id = session_strndup(h->value, h->value_len))) {
        free(tx);
        return SESSION_FATAL(s, "out of memory");
    }
    list_init(&tx->frames);
    list_link_front(&s->txs.all, &tx->link);
    s->txs.n++;
    return SESSION_OK;
}

enum session_rc session_cmd_commit(struct session *s, const struct stomp_frame *f, bool replay)
{
    struct session_tx *tx = tx_named(s, f);
    struct session_frame_copy *c;
    if (!tx)
        return SESSION_CLOSED;
    if (!session_unconfirmed_room(s, tx->send_bytes))
        return SESSION_DEFER;
    LIST_FOR_EACH_ENTRY (c, &tx->frames, link) /* all or nothing for what the session can check (the state may have moved) */
        if (tx_check(s, &c->f) != SESSION_OK)
            return SESSION_CLOSED;
    tx_unlink(s, tx);
    LIST_FOR_EACH_ENTRY (c, &tx->frames, link) {
        if (s->state != SESSION_ST_OPEN)
            break;
        (void)session_dispatch(s, &c->f, true);
    }
    tx_free(s, tx);
    return s->state == SESSION_ST_OPEN ? SESSION_OK : SESSION_CLOSED;
}

enum session_rc session_cmd_abort(struct session *s, const struct stomp_frame *f, bool replay)
{
    struct session_tx *tx = tx_named(s, f);
    if (!tx)
        return SESSION_CLOSED;
    tx_unlink(s, tx);
    tx_free(s, tx);
    return SESSION_OK;
}

enum session_rc session_tx_capture(struct session *s, const struct stomp_frame *f, bool replay)
{
    char num[24];
    const struct stomp_header *h = stomp_frame_header(f, "transaction");
    if (replay || !h)
        return SESSION_OK;
    struct session_tx *tx = tx_find(s, h);
    if (!tx)
        return SESSION_FAIL(s, f, TX_UNKNOWN, SARG_HDR(h));
    if (tx->n >= (size_t)s->conf->max_transaction_frames)
        return SESSION_FAIL(s, f, TX_TOO_LARGE, session_arg_int(num, sizeof(num), s->conf->max_transaction_frames));
    if (tx_check(s, f) != SESSION_OK)
        return SESSION_CLOSED;
    size_t need = frame_copy_size(f);
    if (s->txs.bytes > s->conf->max_transaction_bytes || need > s->conf->max_transaction_bytes - s->txs.bytes)
        return SESSION_FAIL(s, f, TX_TOO_MANY_BYTES, session_arg_int(num, sizeof(num), (long long)s->conf->max_transaction_bytes));
    struct session_frame_copy *c = frame_copy(f);
    if (!c)
        return SESSION_FATAL(s, "out of memory");
    list_link_tail(&tx->frames, &c->link);
    tx->n++;
    tx->bytes += need;
    s->txs.bytes += need;
    if (f->cmd == STOMP_CMD_SEND)
        tx->send_bytes += session_frame_bytes(f);
    return SESSION_HELD;
}

void session_txs_init(struct session *s)
{
    list_init(&s->txs.all);
}

void session_txs_deinit(struct session *s)
{
    struct session_tx *tx, *tmp;
    LIST_FOR_EACH_ENTRY_SAFE (tx, tmp, &s->txs.all, link) {
        list_unlink(&tx->link);
        tx_free(s, tx);
    }
    s->txs.n = 0;
}
