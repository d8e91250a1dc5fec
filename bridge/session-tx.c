/*
 * bridge/session-tx.c — STOMP transactions: BEGIN, COMMIT, ABORT.
 *
 * As in Web-STOMP, a transaction is a client-side buffer, not an AMQP tx: SEND/ACK/NACK frames carrying `transaction`
 * are copied out of the input buffer and replayed in order at COMMIT through the normal handlers; ABORT (and the end of
 * the session) drops them. Bounded by max_transactions and max_transaction_frames. Receipts of the buffered frames and
 * of the COMMIT follow the replayed work (the COMMIT's RECEIPT waits for the broker to confirm its publishes).
 */
#include "bridge/session-int.h"

#include <stdlib.h>
#include <string.h>

#include "conf/conf.h"

static struct session_frame_copy *frame_copy(const struct stomp_frame *f)
{
    size_t need = sizeof(struct session_frame_copy) + f->n_headers * sizeof(struct stomp_header) + f->body_len + 1;
    for (size_t i = 0; i < f->n_headers; i++)
        need += f->headers[i].name_len + f->headers[i].value_len + 2;
    struct session_frame_copy *c = malloc(need);
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

static void tx_free(struct session_tx *tx)
{
    struct session_frame_copy *c, *tmp;
    LIST_FOR_EACH_ENTRY_SAFE (c, tmp, &tx->frames, link)
        free(c);
    free(tx->id);
    free(tx);
}

static struct session_tx *tx_find(struct session *s, const struct stomp_header *h)
{
    struct session_tx *tx;
    LIST_FOR_EACH_ENTRY (tx, &s->txs.all, link)
        if (strlen(tx->id) == h->value_len && memcmp(tx->id, h->value, h->value_len) == 0)
            return tx;
    return NULL;
}

/* Unlinks the transaction named in f's `transaction` header; fails the session when it is missing or unknown. */
static struct session_tx *tx_take(struct session *s, const struct stomp_frame *f)
{
    const struct stomp_header *h = stomp_frame_header(f, "transaction");
    if (!h) {
        (void)SESSION_FAIL(s, f, TX_MISSING, SARG(stomp_cmd_str(f->cmd)));
        return NULL;
    }
    struct session_tx *tx = tx_find(s, h);
    if (tx) {
        list_unlink(&tx->link);
        s->txs.n--;
        return tx;
    }
    (void)SESSION_FAIL(s, f, TX_UNKNOWN, SARG_HDR(h));
    return NULL;
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
    struct session_tx *tx = tx_take(s, f);
    if (!tx)
        return SESSION_CLOSED;
    struct session_frame_copy *c;
    LIST_FOR_EACH_ENTRY (c, &tx->frames, link) {
        if (s->state != SESSION_ST_OPEN)
            break;
        (void)session_dispatch(s, &c->f, true);
    }
    tx_free(tx);
    return s->state == SESSION_ST_OPEN ? SESSION_OK : SESSION_CLOSED;
}

enum session_rc session_cmd_abort(struct session *s, const struct stomp_frame *f, bool replay)
{
    struct session_tx *tx = tx_take(s, f);
    if (!tx)
        return SESSION_CLOSED;
    tx_free(tx);
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
    struct session_frame_copy *c = frame_copy(f);
    if (!c)
        return SESSION_FATAL(s, "out of memory");
    list_link_tail(&tx->frames, &c->link);
    tx->n++;
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
        tx_free(tx);
    }
    s->txs.n = 0;
}
