/*
 * tests/fuzz/fuzz-session.c — fuzz target for the STOMP session (bridge/session*.c) over the fake upstream and the
 * manual clock (tests/unit/session-rig.h).
 *
 * The input is a program: each step is one opcode byte and its operands. Steps feed raw bytes, or well-formed frames the
 * target builds itself (CONNECT, SEND with a receipt, SUBSCRIBE/UNSUBSCRIBE with each ack mode, ACK/NACK of a delivered
 * message, BEGIN/COMMIT/ABORT), and play the broker in any order: the channel opens or fails, operations complete,
 * are nacked or fail, deliveries arrive (on live or cancelled consumers), the channel dies, the broker blocks, the clock
 * moves, the client's send buffer fills and drains. Invariants (a violation traps):
 *  1. no RECEIPT before its confirm: when the RECEIPT of a frame the target built goes out, every operation with a
 *     completion that the fake recorded up to the end of that frame's feed has completed;
 *  2. no delivery after UNSUBSCRIBE: a delivery on a consumer tag whose basic.cancel was issued (and that no later
 *     SUBSCRIBE reused) produces no MESSAGE (it is given back: basic.nack with requeue);
 *  3. bounded memory: the operations pending at the fake stay under a bound derived from max_pending_ops and the
 *     transaction limits, and the upstream contract holds (the fake aborts on an operation after release or a double
 *     release);
 *  4. after io->close() nothing more is sent, and session_free() leaves no timer behind.
 * Tight limits (small windows, few subscriptions and transactions) make the limit paths reachable.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../unit/session-rig.h"

#define REQUIRE(c)                                                                                                                 \
    do {                                                                                                                           \
        if (!(c))                                                                                                                  \
            __builtin_trap();                                                                                                      \
    } while (0)

#define MAX_RECEIPTS 64

struct prog {
    const uint8_t *p;
    size_t n;
};

struct state {
    struct rig r;
    size_t receipt_cmds[MAX_RECEIPTS]; /* per receipt "rc-<k>": commands recorded when its frame had been fed */
    unsigned n_receipts;
    char msg_ids[8][160]; /* recent MESSAGE ack ids */
    unsigned n_msg_ids;
    size_t n_messages; /* MESSAGE frames sent */
};

static struct state *current;

static uint8_t next(struct prog *g)
{
    if (g->n == 0)
        return 0;
    g->n--;
    return *g->p++;
}

static bool has_completion(enum fake_cmd_kind k)
{
    return k >= FAKE_DECLARE && k <= FAKE_PUBLISH;
}

static size_t pending_ops(const struct upstream *up)
{
    size_t n = 0;
    for (size_t i = 0; i < up->n_cmds; i++)
        n += has_completion(up->cmds[i].kind) && !up->cmds[i].completed && !up->cmds[i].ch->released && !up->cmds[i].ch->dead;
    return n;
}

/* The value of header `name` in frame `f` into out (empty when absent). */
static void header_of(const char *f, size_t len, const char *name, char *out, size_t cap)
{
    char key[32];
    int kl = snprintf(key, sizeof(key), "\n%s:", name);
    out[0] = '\0';
    const char *end = memmem(f, len, "\n\n", 2);
    const char *p = memmem(f, end ? (size_t)(end - f) : len, key, (size_t)kl);
    if (p)
        snprintf(out, cap, "%.*s", (int)strcspn(p + kl, "\n"), p + kl);
}

static void on_send(struct rig *r, const char *bytes, size_t len)
{
    struct state *st = current;
    char v[160];
    REQUIRE(!r->closed); /* invariant 4 */
    if (len >= 8 && memcmp(bytes, "RECEIPT\n", 8) == 0) {
        header_of(bytes, len, "receipt-id", v, sizeof(v));
        unsigned k;
        char tail;
        if (sscanf(v, "rc-%u%c", &k, &tail) == 1 && k < st->n_receipts)
            for (size_t i = 0; i < st->receipt_cmds[k] && i < r->up->n_cmds; i++) /* invariant 1 */
                REQUIRE(!has_completion(r->up->cmds[i].kind) || r->up->cmds[i].completed);
    }
    if (len >= 8 && memcmp(bytes, "MESSAGE\n", 8) == 0) {
        header_of(bytes, len, "ack", v, sizeof(v));
        if (!v[0])
            header_of(bytes, len, "message-id", v, sizeof(v));
        st->n_messages++;
        snprintf(st->msg_ids[st->n_msg_ids++ % 8], sizeof(st->msg_ids[0]), "%s", v);
    }
}

static void feed_frame(struct state *st, const char *f)
{
    rig_feed(&st->r, f);
}

static void op_build(struct state *st, struct prog *g)
{
    static const char *const acks[] = {"auto", "client", "client-individual"};
    static const char *const dests[] = {"/topic/t", "/queue/q", "/exchange/amq.direct/k", "/amq/queue/q", "/temp-queue/x"};
    char f[512];
    uint8_t a = next(g), b = next(g);
    switch (a % 10) {
    case 0:
        snprintf(f, sizeof(f), "CONNECT\naccept-version:1.%u\nheart-beat:%u,%u\nlogin:u\npasscode:p\n\n", b % 3, (b & 3) * 500u,
                 ((b >> 2) & 3) * 500u);
        feed_frame(st, f);
        return;
    case 1:
    case 2: {
        unsigned k = st->n_receipts < MAX_RECEIPTS ? st->n_receipts++ : MAX_RECEIPTS;
        snprintf(f, sizeof(f), "SEND\ndestination:%s\nreceipt:rc-%u\n%s\nbody", dests[b % 5], k,
                 (b & 0x80)   ? "transaction:tx\n"
                 : (b & 0x40) ? "reply-to:/temp-queue/r\n"
                              : "");
        feed_frame(st, f);
        if (k < MAX_RECEIPTS)
            st->receipt_cmds[k] = st->r.up->n_cmds;
        return;
    }
    case 3:
        snprintf(f, sizeof(f), "SUBSCRIBE\nid:s%u\ndestination:%s\nack:%s\n\n", b & 3, dests[(b >> 2) % 4], acks[(b >> 4) % 3]);
        break;
    case 4:
        snprintf(f, sizeof(f), "UNSUBSCRIBE\nid:s%u\n\n", b & 3);
        break;
    case 5:
    case 6:
        snprintf(f, sizeof(f), "%s\nid:%s\nmessage-id:%s\n\n", (a % 10) == 5 ? "ACK" : "NACK", st->msg_ids[b % 8],
                 st->msg_ids[b % 8]);
        break;
    case 7:
        snprintf(f, sizeof(f), "BEGIN\ntransaction:tx\n\n");
        break;
    case 8:
        snprintf(f, sizeof(f), "%s\ntransaction:tx\nreceipt:x\n\n", (b & 1) ? "COMMIT" : "ABORT");
        break;
    default:
        snprintf(f, sizeof(f), "DISCONNECT\nreceipt:bye\n\n");
        break;
    }
    feed_frame(st, f);
}

/* A consumer tag the session asked for (cancelled ones included, to race UNSUBSCRIBE), or NULL. */
static const struct fake_cmd *pick_consume(const struct upstream *up, uint8_t b)
{
    size_t n = fake_count(up, FAKE_CONSUME);
    if (n == 0)
        return NULL;
    size_t want = b % n;
    for (long i = fake_find(up, FAKE_CONSUME, 0); i >= 0; i = fake_find(up, FAKE_CONSUME, (size_t)i + 1))
        if (want-- == 0)
            return &up->cmds[i];
    return NULL;
}

/* true when the consumer tag of `consume` was cancelled afterwards and not consumed again since (a new SUBSCRIBE may reuse
 * the id, hence the tag). */
static bool cancelled(const struct upstream *up, const struct fake_cmd *consume)
{
    bool gone = false;
    for (size_t i = (size_t)(consume - up->cmds) + 1; i < up->n_cmds; i++) {
        const struct fake_cmd *c = &up->cmds[i];
        if (c->ch != consume->ch)
            continue;
        if (c->kind == FAKE_CANCEL && strcmp(c->a, consume->b) == 0)
            gone = true;
        else if (c->kind == FAKE_CONSUME && strcmp(c->b, consume->b) == 0)
            gone = false;
    }
    return gone;
}

static void op_deliver(struct state *st, uint8_t b)
{
    const struct fake_cmd *c = pick_consume(st->r.up, b);
    if (!c || c->ch->released)
        return;
    bool gone = cancelled(st->r.up, c);
    char ctag[160];
    snprintf(ctag, sizeof(ctag), "%s", c->b);
    size_t before = st->n_messages;
    fake_deliver(c->ch, ctag, "payload", NULL);
    if (gone) /* invariant 2 */
        REQUIRE(st->n_messages == before);
}

static void op_broker(struct state *st, struct prog *g)
{
    static const struct upstream_error errs[] = {
        {.kind = UPSTREAM_ERR_NACK, .name = "nack", .text = "no"},
        {.kind = UPSTREAM_ERR_CHANNEL, .code = 404, .name = "not_found", .text = "NOT_FOUND - no queue"},
        {.kind = UPSTREAM_ERR_ACCESS_REFUSED, .code = 403, .name = "access_refused", .text = "ACCESS_REFUSED"},
        {.kind = UPSTREAM_ERR_CONNECTION, .code = 320, .name = "connection_forced", .text = "CONNECTION_FORCED"},
        {.kind = UPSTREAM_ERR_NOMEM, .name = "out_of_memory", .text = "out of memory"},
    };
    struct upstream *up = st->r.up;
    struct upstream_chan *ch = fake_last_chan(up);
    uint8_t a = next(g), b = next(g);
    switch (a % 8) {
    case 0:
        if (ch)
            fake_open(ch, (b & 3) == 3 ? &errs[b % 4] : NULL);
        break;
    case 1:
        if (up->n_cmds)
            fake_done(up, b % up->n_cmds, (b & 7) == 7 ? &errs[(b >> 3) % 2 ? 4 : 0] : NULL);
        break;
    case 2:
        fake_done_all(up);
        break;
    case 3:
        op_deliver(st, b);
        break;
    case 4:
        if (ch)
            fake_close(ch, errs[b % 5].kind, errs[b % 5].code, errs[b % 5].name, errs[b % 5].text);
        break;
    case 5:
        if (ch)
            fake_block(ch, b & 1);
        break;
    case 6:
        if (b & 1)
            up->fail_next = (b & 2) ? -12 : UPSTREAM_ERR_CLOSED;
        else {
            const struct fake_cmd *c = pick_consume(up, b);
            if (c && !c->ch->released)
                fake_cancel(c->ch, c->b);
        }
        break;
    default:
        st->r.pending = (b & 1) ? st->r.conf.client_send_buffer_bytes : 0;
        if (!(b & 1) && st->r.s)
            session_on_drain(st->r.s);
        break;
    }
}

static void step(struct state *st, struct prog *g)
{
    uint8_t op = next(g);
    switch (op % 5) {
    case 0: {
        size_t n = next(g);
        if (n > g->n)
            n = g->n;
        rig_feed_n(&st->r, (const char *)g->p, n);
        g->p += n;
        g->n -= n;
        break;
    }
    case 1:
    case 2:
        op_build(st, g);
        break;
    case 3:
        op_broker(st, g);
        break;
    default:
        fake_timer_advance((uint64_t)next(g) * 50);
        break;
    }
    fake_timer_run();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct state st;
    memset(&st, 0, sizeof(st));
    current = &st;
    rig_init(&st.r);
    st.r.conf.max_unconfirmed = 4;
    st.r.conf.max_subscriptions = 3;
    st.r.conf.max_transactions = 2;
    st.r.conf.max_transaction_frames = 4;
    st.r.conf.max_transaction_bytes = 2048;
    st.r.conf.max_unconfirmed_bytes = 1024;
    st.r.conf.max_pending_ops = 16;
    st.r.conf.client_send_buffer_bytes = 4096;
    st.r.on_send = on_send;
    rig_start(&st.r);
    st.r.up->max_cmds = 4096;
    struct prog g = {data, size};
    /* Reading stops at max_pending_ops; the frame being handled adds its own: a COMMIT replays at most
     * max_transaction_frames SENDs of at most 4 operations each (queue declare, reply queue declare and consume, publish). */
    size_t bound = (size_t)st.r.conf.max_pending_ops + 4 * ((size_t)st.r.conf.max_transaction_frames + 1);
    while (g.n > 0 && !st.r.closed) {
        step(&st, &g);
        REQUIRE(pending_ops(st.r.up) <= bound); /* invariant 3 */
    }
    rig_deinit(&st.r);
    REQUIRE(fake_timer_live() == 0); /* invariant 4 */
    return 0;
}
