/*
 * tests/unit/test-bridge-session.c — the STOMP session (bridge/session*.c) as a state machine, over a fake upstream and
 * a manual clock (session-rig.h): CONNECT and its failures, receipts only after confirms and in frame order, broker
 * nacks, transactions and their replay, ack ranges per mode, ack:auto settling and the client's send buffer, flow
 * pause on unconfirmed publishes and a blocked broker, heart-beats, login and idle timeouts, channel loss, failing
 * upstream calls, and deliveries racing UNSUBSCRIBE. Each test runs in milliseconds.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "bridge/clock.h"
#include "bridge/excl.h"
#include "bridge/fanout.h"
#include "bridge/session-int.h" /* what an idle session holds (test_idle_holds_little) */
#include "bridge/session-errors.h"
#include "bridge/throttle.h"
#include "harness.h"
#include "session-rig.h"

static const struct upstream_error nack_err = {.kind = UPSTREAM_ERR_NACK, .name = "nack", .text = "rejected"};

static void test_connect_ok(void)
{
    struct rig r;
    rig_init(&r);
    rig_start(&r);
    rig_feed(&r, "CONNECT\naccept-version:1.1,1.2\nlogin:alice\npasscode:pw\nhost:/v\n\n");
    CHECK_EQ_INT(r.n_out, 0); /* nothing before the broker opened the channel */
    CHECK(r.paused);          /* input held while connecting */
    long i = fake_find(r.up, FAKE_OPEN, 0);
    CHECK(i >= 0 && strcmp(r.up->cmds[i].a, "alice") == 0 && strcmp(r.up->cmds[i].b, "/v") == 0);
    fake_open(fake_last_chan(r.up), NULL);
    CHECK_EQ_INT(rig_count(&r, "CONNECTED"), 1);
    CHECK(frame_has(rig_last(&r), "version:1.2") && frame_has(rig_last(&r), "server:RabbitMQ/0.0.0 warren/test"));
    CHECK(strncmp(session_id(r.s), "session-", 8) == 0);
    CHECK(!r.paused && !r.closed);
    rig_deinit(&r);
    CHECK_EQ_INT(fake_timer_live(), 0);
}

static void test_connect_refused(void)
{
    struct rig r;
    rig_init(&r);
    rig_start(&r);
    rig_connect(&r, "1.2", "0,0");
    rig_deinit(&r);

    rig_init(&r);
    rig_start(&r);
    rig_feed(&r, "CONNECT\naccept-version:1.2\nlogin:bob\npasscode:x\n\n");
    struct upstream_error e = {.kind = UPSTREAM_ERR_ACCESS_REFUSED, .code = 403, .text = "ACCESS_REFUSED - Login was refused"};
    fake_open(fake_last_chan(r.up), &e);
    CHECK_EQ_INT(rig_count(&r, "ERROR"), 1);
    CHECK(frame_has(rig_last(&r), "message:Bad CONNECT"));
    CHECK(strstr(rig_last(&r), "\n\nAccess refused for user 'bob'\n") != NULL); /* RabbitMQ's body exactly */
    CHECK(!strstr(rig_last(&r), "ACCESS_REFUSED"));
    CHECK(r.closed);
    CHECK_EQ_INT(fake_count(r.up, FAKE_RELEASE), 1);
    rig_deinit(&r);

    rig_init(&r);
    rig_start(&r);
    rig_feed(&r, "CONNECT\naccept-version:1.2\nhost:nope\n\n");
    e = (struct upstream_error){.kind = UPSTREAM_ERR_ACCESS_REFUSED, .code = 530, .text = "NOT_ALLOWED - vhost nope not found"};
    fake_open(fake_last_chan(r.up), &e);
    CHECK(strstr(rig_last(&r), "\n\nVirtual host 'nope' access denied") != NULL && !strstr(rig_last(&r), "NOT_ALLOWED"));
    rig_deinit(&r);

    /* A cap on AMQP connections (issue 7): its own ERROR, whose body names the key. */
    rig_init(&r);
    rig_start(&r);
    rig_feed(&r, "CONNECT\naccept-version:1.2\nlogin:eve\npasscode:x\n\n");
    e = (struct upstream_error){.kind = UPSTREAM_ERR_LIMIT,
                                .name = "connection_limit",
                                .text = "warren has its most AMQP connections open (amqp_max_connections = 3); try again later"};
    fake_open(fake_last_chan(r.up), &e);
    CHECK_EQ_INT(rig_count(&r, "ERROR"), 1);
    CHECK(frame_has(rig_last(&r), "message:Too many broker connections"));
    CHECK(strstr(rig_last(&r), "amqp_max_connections = 3") != NULL);
    CHECK(r.closed);
    rig_deinit(&r);
}

static void test_before_connect_and_versions(void)
{
    struct rig r;
    rig_init(&r);
    rig_start(&r);
    rig_feed(&r, "SEND\ndestination:/topic/x\nreceipt:r0\n\nhi");
    CHECK(frame_has(rig_last(&r), "message:Illegal command") && frame_has(rig_last(&r), "receipt-id:r0"));
    CHECK(r.closed && fake_count(r.up, FAKE_OPEN) == 0);
    rig_deinit(&r);

    rig_init(&r);
    rig_start(&r);
    rig_feed(&r, "CONNECT\naccept-version:2.0\n\n");
    CHECK(frame_has(rig_last(&r), "message:Version mismatch") && frame_has(rig_last(&r), "version:1.0,1.1,1.2"));
    CHECK(r.closed);
    rig_deinit(&r);

    rig_init(&r);
    rig_start(&r);
    rig_connect(&r, "1.2", "0,0");
    rig_feed(&r, "CONNECT\naccept-version:1.2\n\n");
    CHECK(frame_has(rig_last(&r), "message:Bad CONNECT") && r.closed);
    rig_deinit(&r);
}

/* A RECEIPT follows the broker's confirm of its SEND and of everything before it, in frame order. */
static void test_receipts_in_order(void)
{
    struct rig r;
    rig_init(&r);
    rig_start(&r);
    rig_connect(&r, "1.2", "0,0");
    rig_clear(&r);
    rig_feed(&r, "SEND\ndestination:/topic/a\nreceipt:r1\n\none");
    rig_feed(&r, "SEND\ndestination:/topic/a\nreceipt:r2\n\ntwo");
    CHECK_EQ_INT(fake_count(r.up, FAKE_PUBLISH), 2);
    CHECK_EQ_INT(rig_count(&r, "RECEIPT"), 0);
    long p1 = fake_find(r.up, FAKE_PUBLISH, 0), p2 = fake_find(r.up, FAKE_PUBLISH, (size_t)p1 + 1);
    CHECK(strcmp(r.up->cmds[p1].a, "amq.topic") == 0 && strcmp(r.up->cmds[p1].b, "a") == 0);
    CHECK(strcmp(r.up->cmds[p1].c, "one") == 0 && strcmp(r.up->cmds[p2].c, "two") == 0);
    fake_done(r.up, (size_t)p2, NULL); /* the second confirm first: r2 must still wait for r1 */
    CHECK_EQ_INT(rig_count(&r, "RECEIPT"), 0);
    fake_done(r.up, (size_t)p1, NULL);
    CHECK_EQ_INT(rig_count(&r, "RECEIPT"), 2);
    CHECK(frame_has(rig_out(&r, 0), "receipt-id:r1") && frame_has(rig_out(&r, 1), "receipt-id:r2"));
    /* a frame with no upstream work gets its receipt at once when nothing is pending */
    rig_feed(&r, "BEGIN\ntransaction:t\nreceipt:r3\n\n");
    CHECK(frame_has(rig_last(&r), "receipt-id:r3"));
    CHECK(!r.closed);
    rig_deinit(&r);
}

static void test_nack_is_an_error(void)
{
    struct rig r;
    rig_init(&r);
    rig_start(&r);
    rig_connect(&r, "1.2", "0,0");
    rig_feed(&r, "SEND\ndestination:/topic/a\nreceipt:r1\n\nx");
    fake_done(r.up, (size_t)fake_find(r.up, FAKE_PUBLISH, 0), &nack_err);
    CHECK_EQ_INT(rig_count(&r, "RECEIPT"), 0);
    CHECK(frame_has(rig_last(&r), "message:nack") && frame_has(rig_last(&r), "receipt-id:r1"));
    CHECK(r.closed);
    rig_deinit(&r);
}

static void test_disconnect_waits(void)
{
    struct rig r;
    rig_init(&r);
    rig_start(&r);
    rig_connect(&r, "1.2", "0,0");
    rig_feed(&r, "SEND\ndestination:/topic/a\n\nx");
    rig_feed(&r, "DISCONNECT\nreceipt:bye\n\n");
    CHECK(!r.closed && rig_count(&r, "RECEIPT") == 0);
    rig_feed(&r, "SEND\ndestination:/topic/a\n\nignored after DISCONNECT");
    CHECK_EQ_INT(fake_count(r.up, FAKE_PUBLISH), 1);
    fake_done_all(r.up);
    CHECK(frame_has(rig_last(&r), "receipt-id:bye") && r.closed);
    CHECK(strcmp(r.close_reason, "client disconnected") == 0);
    rig_deinit(&r);
}

static void test_transactions(void)
{
    struct rig r;
    rig_init(&r);
    rig_start(&r);
    rig_connect(&r, "1.2", "0,0");
    rig_clear(&r);
    rig_feed(&r, "BEGIN\ntransaction:t1\n\n");
    rig_feed(&r, "SEND\ndestination:/topic/a\ntransaction:t1\nreceipt:s1\n\nfirst");
    rig_feed(&r, "SEND\ndestination:/topic/a\ntransaction:t1\n\nsecond");
    CHECK_EQ_INT(fake_count(r.up, FAKE_PUBLISH), 0); /* buffered */
    CHECK_EQ_INT(rig_count(&r, "RECEIPT"), 0);
    rig_feed(&r, "COMMIT\ntransaction:t1\nreceipt:c1\n\n");
    CHECK_EQ_INT(fake_count(r.up, FAKE_PUBLISH), 2);
    long p1 = fake_find(r.up, FAKE_PUBLISH, 0), p2 = fake_find(r.up, FAKE_PUBLISH, (size_t)p1 + 1);
    CHECK(strcmp(r.up->cmds[p1].c, "first") == 0 && strcmp(r.up->cmds[p2].c, "second") == 0);
    CHECK_EQ_INT(rig_count(&r, "RECEIPT"), 0);
    fake_done_all(r.up);
    CHECK(rig_count(&r, "RECEIPT") >= 1 && frame_has(rig_last(&r), "receipt-id:c1"));

    rig_feed(&r, "BEGIN\ntransaction:t2\n\n");
    rig_feed(&r, "SEND\ndestination:/topic/a\ntransaction:t2\n\ndropped");
    rig_feed(&r, "ABORT\ntransaction:t2\n\n");
    rig_feed(&r, "COMMIT\ntransaction:t2\n\n"); /* gone after ABORT */
    CHECK_EQ_INT(fake_count(r.up, FAKE_PUBLISH), 2);
    CHECK(frame_has(rig_last(&r), "message:Bad transaction") && r.closed);
    rig_deinit(&r);

    rig_init(&r);
    r.conf.max_transaction_frames = 2;
    rig_start(&r);
    rig_connect(&r, "1.2", "0,0");
    rig_feed(&r, "BEGIN\ntransaction:t\n\n");
    for (int i = 0; i < 3; i++)
        rig_feed(&r, "SEND\ndestination:/topic/a\ntransaction:t\n\nx");
    CHECK(frame_has(rig_last(&r), "message:Transaction too large") && r.closed);
    rig_deinit(&r);
}

/* SUBSCRIBE with a prefetch window, and the queue/bind/consume that it issues. Returns the consumer tag's command. */
static long subscribe(struct rig *r, const char *id, const char *ack)
{
    char f[256];
    snprintf(f, sizeof(f), "SUBSCRIBE\nid:%s\ndestination:/topic/t\nack:%s\n\n", id, ack);
    size_t before = r->up->n_cmds;
    rig_feed(r, f);
    fake_done_all(r->up);
    return fake_find(r->up, FAKE_CONSUME, before);
}

/* The `ack` header of the last MESSAGE. */
static void last_ack_id(const struct rig *r, char *out, size_t cap)
{
    const char *p = strstr(rig_last(r), "\nack:");
    out[0] = '\0';
    if (p)
        snprintf(out, cap, "%.*s", (int)strcspn(p + 5, "\n"), p + 5);
}

static void test_ack_modes(void)
{
    struct rig r;
    rig_init(&r);
    rig_start(&r);
    rig_connect(&r, "1.2", "0,0");
    long c = subscribe(&r, "s1", "client");
    CHECK(c >= 0 && strcmp(r.up->cmds[c].b, "T_s1") == 0 && !r.up->cmds[c].no_ack);
    struct upstream_chan *ch = fake_last_chan(r.up);
    char ids[3][256];
    for (int i = 0; i < 3; i++) {
        fake_deliver(ch, "T_s1", "m", NULL);
        CHECK(frame_has(rig_last(&r), "subscription:s1"));
        last_ack_id(&r, ids[i], sizeof(ids[i]));
    }
    fake_timer_run();
    CHECK_EQ_INT(fake_count(r.up, FAKE_ACK), 0); /* client mode: nothing settled until the client says so */
    char f[512];
    snprintf(f, sizeof(f), "ACK\nid:%s\n\n", ids[1]);
    rig_feed(&r, f); /* cumulative: tags 1 and 2 with one multiple ack */
    long a = fake_find(r.up, FAKE_ACK, 0);
    CHECK(a >= 0 && r.up->cmds[a].dtag == 2 && r.up->cmds[a].multiple);
    snprintf(f, sizeof(f), "NACK\nid:%s\nrequeue:false\n\n", ids[2]);
    rig_feed(&r, f);
    long n = fake_find(r.up, FAKE_NACK, 0);
    CHECK(n >= 0 && r.up->cmds[n].dtag == 3 && !r.up->cmds[n].requeue);
    rig_feed(&r, f); /* already settled */
    CHECK(frame_has(rig_last(&r), "message:Message not found") && r.closed);
    rig_deinit(&r);

    rig_init(&r);
    rig_start(&r);
    rig_connect(&r, "1.2", "0,0");
    subscribe(&r, "s2", "client-individual");
    ch = fake_last_chan(r.up);
    for (int i = 0; i < 3; i++) {
        fake_deliver(ch, "T_s2", "m", NULL);
        last_ack_id(&r, ids[i], sizeof(ids[i]));
    }
    snprintf(f, sizeof(f), "ACK\nid:%s\n\n", ids[1]);
    rig_feed(&r, f); /* individual: only tag 2 */
    a = fake_find(r.up, FAKE_ACK, 0);
    CHECK(a >= 0 && r.up->cmds[a].dtag == 2 && !r.up->cmds[a].multiple);
    CHECK_EQ_INT(fake_count(r.up, FAKE_ACK), 1);
    /* UNSUBSCRIBE gives back what the client did not ack */
    rig_feed(&r, "UNSUBSCRIBE\nid:s2\n\n");
    CHECK_EQ_INT(fake_count(r.up, FAKE_CANCEL), 1);
    CHECK_EQ_INT(fake_count(r.up, FAKE_NACK), 2);
    CHECK(!r.closed);
    rig_deinit(&r);
}

/* ack:auto: one multiple ack per loop turn while the client has room; held past client_send_buffer_bytes. */
static void test_auto_settle_and_send_buffer(void)
{
    struct rig r;
    rig_init(&r);
    rig_start(&r);
    rig_connect(&r, "1.2", "0,0");
    subscribe(&r, "a", "auto");
    struct upstream_chan *ch = fake_last_chan(r.up);
    fake_deliver(ch, "T_a", "1", NULL);
    fake_deliver(ch, "T_a", "2", NULL);
    CHECK_EQ_INT(fake_count(r.up, FAKE_ACK), 0);
    fake_timer_run();
    long a = fake_find(r.up, FAKE_ACK, 0);
    CHECK(a >= 0 && r.up->cmds[a].dtag == 2 && r.up->cmds[a].multiple && fake_count(r.up, FAKE_ACK) == 1);
    r.pending = r.conf.client_send_buffer_bytes; /* the client stopped reading */
    fake_deliver(ch, "T_a", "3", NULL);
    fake_timer_run();
    CHECK_EQ_INT(fake_count(r.up, FAKE_ACK), 1); /* held: the broker's window closes */
    r.pending = 0;
    session_on_drain(r.s);
    a = fake_find(r.up, FAKE_ACK, (size_t)a + 1);
    CHECK(a >= 0 && r.up->cmds[a].dtag == 3);
    rig_deinit(&r);
}

static void test_unsubscribe_race(void)
{
    struct rig r;
    rig_init(&r);
    rig_start(&r);
    rig_connect(&r, "1.2", "0,0");
    subscribe(&r, "u", "auto");
    struct upstream_chan *ch = fake_last_chan(r.up);
    rig_feed(&r, "UNSUBSCRIBE\nid:u\n\n");
    size_t msgs = rig_count(&r, "MESSAGE");
    fake_deliver(ch, "T_u", "late", NULL); /* in flight before basic.cancel-ok */
    CHECK_EQ_INT(rig_count(&r, "MESSAGE"), msgs);
    long n = fake_find(r.up, FAKE_NACK, 0);
    CHECK(n >= 0 && r.up->cmds[n].requeue);
    rig_feed(&r, "UNSUBSCRIBE\nid:u\n\n");
    CHECK(frame_has(rig_last(&r), "message:No subscription found"));
    rig_deinit(&r);
}

static void test_flow_pause(void)
{
    struct rig r;
    rig_init(&r);
    r.conf.max_unconfirmed = 2;
    rig_start(&r);
    rig_connect(&r, "1.2", "0,0");
    rig_feed(&r, "SEND\ndestination:/topic/a\n\n1");
    CHECK(!r.paused);
    /* two frames in one message: the second waits once the window is full */
    static const char two[] = "SEND\ndestination:/topic/a\n\n2\0SEND\ndestination:/topic/a\n\n3";
    rig_feed_n(&r, two, sizeof(two));
    CHECK(r.paused);
    CHECK_EQ_INT(fake_count(r.up, FAKE_PUBLISH), 2);
    fake_done(r.up, (size_t)fake_find(r.up, FAKE_PUBLISH, 0), NULL);
    CHECK(!r.paused);
    fake_timer_run(); /* the held frame is processed on the loop */
    CHECK_EQ_INT(fake_count(r.up, FAKE_PUBLISH), 3);
    fake_done_all(r.up);
    fake_block(fake_last_chan(r.up), true);
    CHECK(r.paused);
    rig_feed(&r, "SEND\ndestination:/topic/a\n\n4");
    CHECK_EQ_INT(fake_count(r.up, FAKE_PUBLISH), 3);
    fake_block(fake_last_chan(r.up), false);
    fake_timer_run();
    CHECK(!r.paused && fake_count(r.up, FAKE_PUBLISH) == 4);
    rig_deinit(&r);
}

static void test_heartbeats(void)
{
    struct rig r;
    rig_init(&r); /* server minimums: 1000 both ways (the defaults) */
    rig_start(&r);
    rig_connect(&r, "1.2", "1000,2000"); /* client sends every 1000, wants ours every 2000 */
    CHECK(frame_has(rig_last(&r), "heart-beat:2000,1000"));
    rig_clear(&r);
    fake_timer_advance(2000);
    CHECK(r.n_out >= 1 && strcmp(rig_last(&r), "\n") == 0);
    rig_feed_n(&r, "\n", 1);
    fake_timer_advance(1000);
    CHECK(!r.closed);
    fake_timer_advance(10000); /* silence past the tolerance */
    CHECK(r.closed && strcmp(r.close_reason, "missed client heart-beats") == 0);
    CHECK_EQ_INT(fake_timer_armed(), 0);
    rig_deinit(&r);
}

static void test_timeouts(void)
{
    struct rig r;
    rig_init(&r);
    rig_start(&r);
    fake_timer_advance((uint64_t)r.conf.login_timeout_ms - 1);
    CHECK(!r.closed);
    fake_timer_advance(1);
    CHECK(r.closed && strcmp(r.close_reason, "login timeout") == 0);
    rig_deinit(&r);

    rig_init(&r); /* a CONNECT the broker never answers */
    rig_start(&r);
    rig_feed(&r, "CONNECT\naccept-version:1.2\n\n");
    fake_timer_advance((uint64_t)r.conf.login_timeout_ms);
    CHECK(r.closed && fake_count(r.up, FAKE_RELEASE) == 1);
    rig_deinit(&r);

    rig_init(&r);
    r.conf.idle_timeout_ms = 5000;
    rig_start(&r);
    rig_connect(&r, "1.2", "0,0");
    fake_timer_advance(4000);
    rig_feed(&r, "SEND\ndestination:/topic/a\n\nkeepalive");
    fake_timer_advance(4000);
    CHECK(!r.closed);
    fake_timer_advance(1000);
    CHECK(r.closed && strcmp(r.close_reason, "idle timeout") == 0);
    rig_deinit(&r);
}

/* The channel dies: one ERROR naming the broker, with the receipt of the oldest pending operation; no RECEIPT. */
static void test_channel_lost(void)
{
    struct rig r;
    rig_init(&r);
    rig_start(&r);
    rig_connect(&r, "1.2", "0,0");
    rig_feed(&r, "SEND\ndestination:/topic/a\nreceipt:lost\n\nx");
    rig_clear(&r);
    fake_close(fake_last_chan(r.up), UPSTREAM_ERR_CONNECTION, 320, "connection_forced", "CONNECTION_FORCED - shutdown");
    CHECK_EQ_INT(r.n_out, 1);
    CHECK(frame_has(rig_last(&r), "message:Broker connection lost") && frame_has(rig_last(&r), "receipt-id:lost"));
    CHECK(r.closed && fake_count(r.up, FAKE_RELEASE) == 1);
    rig_deinit(&r);

    rig_init(&r);
    rig_start(&r);
    rig_connect(&r, "1.2", "0,0");
    rig_feed(&r, "SEND\ndestination:/exchange/missing\n\nx");
    fake_close(fake_last_chan(r.up), UPSTREAM_ERR_CHANNEL, 404, "not_found", "NOT_FOUND - no exchange 'missing' in vhost '/'");
    /* The body is the reply text without "NOT_FOUND - ", as RabbitMQ's current plugin words it. */
    CHECK(frame_has(rig_last(&r), "message:not_found") && strstr(rig_last(&r), "\n\nno exchange 'missing' in vhost '/'") != NULL);
    rig_deinit(&r);

    rig_init(&r); /* the upstream ran out of memory for one op: no RECEIPT, one ERROR with its receipt-id (issue 7) */
    rig_start(&r);
    rig_connect(&r, "1.2", "0,0");
    rig_feed(&r, "SEND\ndestination:/topic/a\nreceipt:oom\n\nx");
    struct upstream_error oom = {.kind = UPSTREAM_ERR_NOMEM, .name = "internal_error", .text = "out of memory"};
    fake_done(r.up, (size_t)fake_find(r.up, FAKE_PUBLISH, 0), &oom);
    CHECK(rig_count(&r, "RECEIPT") == 0 && rig_count(&r, "ERROR") == 1 && r.closed);
    CHECK(frame_has(rig_last(&r), "message:Processing error") && frame_has(rig_last(&r), "receipt-id:oom"));
    fake_close(fake_last_chan(r.up), UPSTREAM_ERR_NOMEM, 0, "internal_error", "out of memory"); /* released: no callback */
    CHECK_EQ_INT(rig_count(&r, "ERROR"), 1);
    rig_deinit(&r);

    rig_init(&r);
    rig_start(&r);
    rig_connect(&r, "1.2", "0,0");
    subscribe(&r, "c", "auto");
    fake_cancel(fake_last_chan(r.up), "T_c");
    CHECK(frame_has(rig_last(&r), "message:Server cancelled subscription") && frame_has(rig_last(&r), "subscription:c"));
    CHECK(r.closed);
    rig_deinit(&r);
}

/* An upstream call that fails (out of memory, a channel already dead) fails the session with a clear ERROR. */
static void test_upstream_call_fails(void)
{
    struct rig r;
    rig_init(&r);
    rig_start(&r);
    rig_connect(&r, "1.2", "0,0");
    r.up->fail_next = -ENOMEM;
    rig_feed(&r, "SEND\ndestination:/topic/a\nreceipt:m\n\nx");
    CHECK(frame_has(rig_last(&r), "message:Processing error") && r.closed);
    rig_deinit(&r);

    rig_init(&r);
    rig_start(&r);
    rig_connect(&r, "1.2", "0,0");
    r.up->fail_next = UPSTREAM_ERR_CLOSED;
    rig_feed(&r, "SUBSCRIBE\nid:1\ndestination:/queue/q\n\n");
    CHECK(frame_has(rig_last(&r), "message:Broker connection lost") && r.closed);
    rig_deinit(&r);

    rig_init(&r);
    rig_start(&r);
    r.up->fail_open = true;
    rig_feed(&r, "CONNECT\naccept-version:1.2\n\n");
    CHECK(frame_has(rig_last(&r), "message:Processing error") && r.closed);
    rig_deinit(&r);
}

/* Frames split anywhere, and several per message, give the same result. */
static void test_split_input(void)
{
    static const char in[] = "CONNECT\naccept-version:1.2\n\n\0";
    static const char rest[] = "SEND\ndestination:/topic/a\nreceipt:x\n\nbody\0SUBSCRIBE\nid:1\ndestination:/topic/b\n\n\0";
    for (int mode = 0; mode < SPLIT_MODES; mode++) {
        uint64_t seed = 42;
        struct rig r;
        rig_init(&r);
        rig_start(&r);
        for (size_t off = 0, n; off < sizeof(in) - 1; off += n) {
            n = split_next((enum split_mode)mode, sizeof(in) - 1 - off, &seed);
            rig_feed_n(&r, in + off, n);
        }
        fake_open(fake_last_chan(r.up), NULL);
        for (size_t off = 0, n; off < sizeof(rest) - 1; off += n) {
            n = split_next((enum split_mode)mode, sizeof(rest) - 1 - off, &seed);
            rig_feed_n(&r, rest + off, n);
        }
        CHECK_EQ_INT(fake_count(r.up, FAKE_PUBLISH), 1);
        CHECK_EQ_INT(fake_count(r.up, FAKE_CONSUME), 1);
        fake_done_all(r.up);
        CHECK(rig_count(&r, "RECEIPT") == 1 && !r.closed);
        rig_deinit(&r);
    }
}

/*
 * Issue 9: an idle subscribed session holds no input buffer (frames are parsed where the front-end has them, only a
 * frame cut short is copied and the copy is given back once complete), no header array or output buffer (the loop's,
 * lent per use) and no timer it does not use (made when first armed; the login timer goes at CONNECTED).
 */
static void test_idle_holds_little(void)
{
    struct rig r;
    rig_init(&r);
    rig_start(&r);
    CHECK_EQ_INT(fake_timer_live(), 1); /* the login timeout only */
    rig_connect(&r, "1.2", "0,0");
    CHECK_EQ_INT(fake_timer_live(), 0);
    CHECK(r.s->in.buf == NULL && r.s->in.cap == 0);
    static const char sub[] = "SUBSCRIBE\nid:0\ndestination:/topic/idle\nack:client\n\n";
    rig_feed_n(&r, sub, 20); /* cut in the middle of a header line: held */
    CHECK(r.s->in.len == 20 && r.s->in.buf != NULL);
    rig_feed_n(&r, sub + 20, sizeof(sub) - 20); /* the rest, its NUL included */
    CHECK(r.s->in.len == 0 && r.s->in.buf == NULL && r.s->in.cap == 0);
    fake_done_all(r.up);
    long i = fake_find(r.up, FAKE_BIND, 0);
    CHECK(i >= 0 && strcmp(r.up->cmds[i].c, "idle") == 0);
    CHECK_EQ_INT(fake_count(r.up, FAKE_CONSUME), 1);
    CHECK_EQ_INT(fake_timer_live(), 0); /* ack:client: no settle timer either */
    CHECK(!r.closed);
    rig_deinit(&r);
    CHECK_EQ_INT(fake_timer_live(), 0);
}

/* The header array is the thread's: a frame left half-parsed by one session is finished correctly after another
 * session of the same thread parsed frames with many headers in between (the parser keeps no header across feeds). */
static void test_shared_header_array(void)
{
    struct rig a, b;
    rig_init(&a);
    rig_init(&b);
    rig_start(&a);
    rig_start(&b);
    rig_connect(&a, "1.2", "0,0");
    rig_connect(&b, "1.2", "0,0");
    static const char fa[] = "SEND\ndestination:/queue/qa\nx-a:1\nx-b:2\n\nbody-a";
    static const char fb[] = "SEND\ndestination:/queue/qb\nh1:1\nh2:2\nh3:3\nh4:4\nh5:5\nh6:6\n\nbody-b";
    rig_feed_n(&a, fa, sizeof(fa) - 1); /* headers parsed, the body not finished */
    rig_feed_n(&b, fb, sizeof(fb));     /* a whole frame, more headers */
    rig_feed_n(&a, "\0", 1);
    long ia = fake_find(a.up, FAKE_PUBLISH, 0), ib = fake_find(b.up, FAKE_PUBLISH, 0);
    CHECK(ia >= 0 && strcmp(a.up->cmds[ia].b, "qa") == 0 && strcmp(a.up->cmds[ia].c, "body-a") == 0);
    CHECK(ib >= 0 && strcmp(b.up->cmds[ib].b, "qb") == 0 && strcmp(b.up->cmds[ib].c, "body-b") == 0);
    CHECK(!a.closed && !b.closed);
    rig_deinit(&a);
    rig_deinit(&b);
}

/* The ERROR table: every row has a message and a body; a template uses exactly the placeholders its n_args says, and
 * nothing else that looks like one (a printf-style '%' would be sent as is). */
static void test_error_table(void)
{
    for (int e = 0; e < SESSION_ERR_COUNT; e++) {
        const struct session_err_row *row = session_err_row((enum session_err)e);
        CHECK(row->name && row->message && row->message[0] && row->body && row->body[0]);
        unsigned seen = 0;
        const char *t[2] = {row->message, row->body};
        for (int k = 0; k < 2; k++)
            for (const char *p = t[k]; *p; p++) {
                if (*p != '%')
                    continue;
                CHECK(p[1] >= '1' && p[1] <= '4');
                if (p[1] >= '1' && p[1] <= '4')
                    seen |= 1u << (p[1] - '1');
            }
        CHECK_EQ_INT(seen, (1u << row->n_args) - 1);
        if (seen != (1u << row->n_args) - 1)
            fprintf(stderr, "row %s\n", row->name);
    }
    CHECK(session_err_row(SESSION_ERR_COUNT) == session_err_row(SESSION_ERR_INTERNAL));
}

/* What AMQP cannot carry is refused at the STOMP boundary, to this session only: a property over 255 bytes (a shortstr),
 * a header name over 255 bytes, headers that do not fit in one frame of amqp_frame_max_bytes. Nothing is published (the
 * connection thread would fail on it), the SEND gets no RECEIPT, the ERROR names the header. */
static void test_send_amqp_limits(void)
{
    static const char *const props[] = {"correlation-id", "type",       "reply-to",        "content-type",    "app-id",
                                        "user-id",        "expiration", "amqp-message-id", "content-encoding"};
    char f[8192], big[5000];
    for (size_t i = 0; i < sizeof(props) / sizeof(props[0]); i++) {
        struct rig r;
        rig_init(&r);
        rig_start(&r);
        rig_connect(&r, "1.2", "0,0");
        memset(big, 'v', 255);
        big[255] = '\0';
        snprintf(f, sizeof(f), "SEND\ndestination:/topic/a\n%s:%s\nreceipt:ok\n\nx", props[i], big); /* 255: fine */
        rig_feed(&r, f);
        CHECK(!r.closed && fake_count(r.up, FAKE_PUBLISH) == 1);
        snprintf(f, sizeof(f), "SEND\ndestination:/topic/a\n%s:%sv\nreceipt:r1\n\nx", props[i], big); /* 256 */
        rig_feed(&r, f);
        CHECK_EQ_INT(fake_count(r.up, FAKE_PUBLISH), 1);
        CHECK(frame_has(rig_last(&r), "message:Invalid header") && frame_has(rig_last(&r), "receipt-id:r1"));
        snprintf(big, sizeof(big), "Header '%s' is longer than AMQP can carry (255 bytes at most)", props[i]);
        CHECK(strstr(rig_last(&r), big) != NULL);
        CHECK(r.closed && rig_count(&r, "RECEIPT") == 0);
        rig_deinit(&r);
    }

    struct rig r;
    rig_init(&r);
    rig_start(&r);
    rig_connect(&r, "1.2", "0,0");
    memset(big, 'k', 256);
    big[256] = '\0';
    snprintf(f, sizeof(f), "SEND\ndestination:/topic/a\n%s:v\n\nx", big);
    rig_feed(&r, f);
    CHECK(frame_has(rig_last(&r), "message:Invalid header") && strstr(rig_last(&r), "Header 'kkkk") != NULL);
    CHECK(r.closed && fake_count(r.up, FAKE_PUBLISH) == 0);
    rig_deinit(&r);

    rig_init(&r);
    r.conf.amqp_frame_max_bytes = 4096;
    rig_start(&r);
    rig_connect(&r, "1.2", "0,0");
    memset(big, 'h', 4000);
    big[4000] = '\0';
    snprintf(f, sizeof(f), "SEND\ndestination:/topic/a\nh1:%s\n\nx", big); /* fits */
    rig_feed(&r, f);
    CHECK(!r.closed && fake_count(r.up, FAKE_PUBLISH) == 1);
    snprintf(f, sizeof(f), "SEND\ndestination:/topic/a\nh1:%s\nh2:%.100s\n\nx", big, big); /* does not */
    rig_feed(&r, f);
    CHECK(frame_has(rig_last(&r), "message:Invalid header") && strstr(rig_last(&r), "more than a frame carries (4088)"));
    CHECK(r.closed && fake_count(r.up, FAKE_PUBLISH) == 1);
    rig_deinit(&r);
}

/* UNSUBSCRIBE then SUBSCRIBE with the same id: the new consumer gets a tag of its own while the old one's basic.cancel is
 * unanswered, so the old consumer's in-flight deliveries are given back, not taken for the new subscription. */
static void test_resubscribe_new_tag(void)
{
    struct rig r;
    rig_init(&r);
    rig_start(&r);
    rig_connect(&r, "1.2", "0,0");
    struct upstream_chan *ch = fake_last_chan(r.up);
    long c1 = subscribe(&r, "x", "client-individual");
    CHECK(c1 >= 0 && strcmp(r.up->cmds[c1].b, "T_x") == 0); /* Web-STOMP's name for a first consumer */
    fake_deliver(ch, "T_x", "old-1", NULL);
    CHECK(strstr(rig_last(&r), "\nmessage-id:T_x@@session-") != NULL);
    rig_feed(&r, "UNSUBSCRIBE\nid:x\n\n"); /* its basic.cancel stays unanswered */
    size_t nacks = fake_count(r.up, FAKE_NACK);
    char f[256];
    snprintf(f, sizeof(f), "SUBSCRIBE\nid:x\ndestination:/queue/other\nack:client-individual\n\n");
    size_t before = r.up->n_cmds;
    rig_feed(&r, f);
    long c2 = fake_find(r.up, FAKE_CONSUME, before);
    CHECK(c2 >= 0 && strcmp(r.up->cmds[c2].b, "T_x") != 0);
    char ctag2[256];
    snprintf(ctag2, sizeof(ctag2), "%s", c2 >= 0 ? r.up->cmds[c2].b : "");
    size_t msgs = rig_count(&r, "MESSAGE");
    uint64_t late = fake_deliver(ch, "T_x", "old-2", NULL); /* the old consumer's, in flight before its cancel-ok */
    CHECK_EQ_INT(rig_count(&r, "MESSAGE"), msgs);
    long n = fake_find(r.up, FAKE_NACK, 0);
    while (n >= 0 && r.up->cmds[n].dtag != late)
        n = fake_find(r.up, FAKE_NACK, (size_t)n + 1);
    CHECK(n >= 0 && r.up->cmds[n].requeue && fake_count(r.up, FAKE_NACK) == nacks + 1);
    fake_deliver(ch, ctag2, "new-1", NULL);
    CHECK(frame_has(rig_last(&r), "subscription:x") && strstr(rig_last(&r), "new-1") != NULL);
    char id[256], ack[512];
    last_ack_id(&r, id, sizeof(id));
    CHECK(strncmp(id, ctag2, strlen(ctag2)) == 0 && strstr(id, "@@session-") != NULL);
    snprintf(ack, sizeof(ack), "ACK\nid:%s\n\n", id);
    rig_feed(&r, ack);
    CHECK(!r.closed && fake_count(r.up, FAKE_ACK) == 1);
    /* Once the old cancel is answered its tag is free again; the second one's is not. */
    fake_done_all(r.up);
    rig_feed(&r, "UNSUBSCRIBE\nid:x\n\n");
    before = r.up->n_cmds;
    rig_feed(&r, f);
    long c3 = fake_find(r.up, FAKE_CONSUME, before);
    CHECK(c3 >= 0 && strcmp(r.up->cmds[c3].b, "T_x") == 0 && strcmp(r.up->cmds[c3].b, ctag2) != 0);
    CHECK(!r.closed);
    rig_deinit(&r);
}

/* AMQP headers named like warren's own MESSAGE headers are dropped: warren's come first and are the only ones (STOMP 1.2:
 * the first occurrence counts, so a copy after them would still mislead a client that keeps the last). */
static void test_message_headers_not_shadowed(void)
{
    static const char *const own[] = {"subscription", "destination", "message-id", "redelivered", "ack", "content-type"};
    struct upstream_header h[] = {
        {"subscription", 12, "evil", 4}, {"destination", 11, "/queue/evil", 11},
        {"message-id", 10, "evil", 4},   {"redelivered", 11, "true", 4},
        {"ack", 3, "evil", 4},           {"content-type", 12, "evil/evil", 9},
        {"x-mine", 6, "kept", 4},
    };
    struct upstream_props p = {.content_type = "text/plain", .priority = -1, .headers = h, .n_headers = 7};
    const char *versions[] = {"1.2", "1.0"};
    for (int v = 0; v < 2; v++) {
        struct rig r;
        rig_init(&r);
        rig_start(&r);
        rig_connect(&r, versions[v], "0,0");
        subscribe(&r, "s", "client");
        fake_deliver(fake_last_chan(r.up), "T_s", "m", &p);
        const char *m = rig_last(&r);
        CHECK(strncmp(m, "MESSAGE\n", 8) == 0);
        for (size_t i = 0; i < sizeof(own) / sizeof(own[0]); i++) {
            char line[64];
            snprintf(line, sizeof(line), "\n%s:", own[i]);
            const char *first = strstr(m, line);
            if (strcmp(own[i], "ack") == 0 && v == 1) {
                CHECK(first == NULL); /* 1.0 has no ack header, and gets no publisher's either */
                continue;
            }
            CHECK(first != NULL && strstr(first + 1, line) == NULL);
            CHECK(first && strncmp(first + strlen(line), "evil", 4) != 0 && strncmp(first + strlen(line), "/queue/evil", 11) != 0);
        }
        CHECK(frame_has(m, "subscription:s") && frame_has(m, "redelivered:false") && frame_has(m, "destination:/queue/rk"));
        CHECK(frame_has(m, "content-type:text/plain") && frame_has(m, "x-mine:kept"));
        rig_deinit(&r);
    }
}

/* /temp-queue/ reply queues count against max_subscriptions: each is a queue and a consumer at the broker. */
static void test_temp_queues_bounded(void)
{
    struct rig r;
    rig_init(&r);
    r.conf.max_subscriptions = 3;
    rig_start(&r);
    rig_connect(&r, "1.2", "0,0");
    char f[128];
    for (int i = 0; i < 3; i++) {
        snprintf(f, sizeof(f), "SEND\ndestination:/queue/service\nreply-to:/temp-queue/r%d\n\nq", i);
        rig_feed(&r, f);
    }
    CHECK(!r.closed && fake_count(r.up, FAKE_CONSUME) == 3);
    rig_feed(&r, "SEND\ndestination:/queue/service\nreply-to:/temp-queue/r0\n\nagain"); /* a known one is fine */
    CHECK(!r.closed);
    rig_feed(&r, "SEND\ndestination:/queue/service\nreply-to:/temp-queue/r3\nreceipt:tq\n\nq");
    CHECK(frame_has(rig_last(&r), "message:Too many subscriptions") && frame_has(rig_last(&r), "receipt-id:tq") && r.closed);
    CHECK_EQ_INT(fake_count(r.up, FAKE_CONSUME), 3);
    rig_deinit(&r);
}

/* ERROR bodies quote what the client sent: a long destination whole (the body is bounded as a whole), a header value
 * cut where its row says. */
static void test_error_quotes(void)
{
    char f[1024], dest[300];
    memset(dest, 'd', sizeof(dest) - 1);
    dest[sizeof(dest) - 1] = '\0';
    struct rig r;
    rig_init(&r);
    rig_start(&r);
    rig_connect(&r, "1.2", "0,0");
    snprintf(f, sizeof(f), "SEND\ndestination:/foo/%s\n\nx", dest);
    rig_feed(&r, f);
    const char *body = strstr(rig_last(&r), "\n\n");
    CHECK(body && strstr(body, dest) != NULL && r.closed);
    rig_deinit(&r);

    rig_init(&r);
    rig_start(&r);
    rig_connect(&r, "1.2", "0,0");
    snprintf(f, sizeof(f), "SEND\ndestination:/topic/a\npriority:%s\n\nx", dest);
    rig_feed(&r, f);
    CHECK(frame_has(rig_last(&r), "message:Invalid header") && strstr(rig_last(&r), dest) == NULL);
    dest[64] = '\0';
    CHECK(strstr(rig_last(&r), dest) != NULL); /* the first 64 bytes of the value */
    rig_deinit(&r);
}

/* Own only what you created: the queue behind a subscription whose name this session made up is deleted with it; a
 * /queue/ or x-queue-name the client named may be anyone's, so the broker's auto-delete decides. */
static void test_owned_queues(void)
{
    struct rig r;
    rig_init(&r);
    rig_start(&r);
    rig_connect(&r, "1.2", "0,0");
    rig_feed(&r, "SEND\ndestination:/queue/room\ndurable:false\n\nx");
    long d = fake_find(r.up, FAKE_DECLARE, 0);
    CHECK(d >= 0 && (r.up->cmds[d].flags & UPSTREAM_Q_AUTO_DELETE) && !(r.up->cmds[d].flags & UPSTREAM_Q_OWNED));
    rig_feed(&r, "SUBSCRIBE\nid:t\ndestination:/topic/news\n\n");
    d = fake_find(r.up, FAKE_DECLARE, (size_t)d + 1);
    CHECK(d >= 0 && strncmp(r.up->cmds[d].a, "stomp-subscription-", 19) == 0 && (r.up->cmds[d].flags & UPSTREAM_Q_OWNED));
    rig_feed(&r, "SUBSCRIBE\nid:n\ndestination:/topic/news\nx-queue-name:named\n\n");
    d = fake_find(r.up, FAKE_DECLARE, (size_t)d + 1);
    CHECK(d >= 0 && strcmp(r.up->cmds[d].a, "named") == 0 && !(r.up->cmds[d].flags & UPSTREAM_Q_OWNED));
    /* Declared exclusive, a queue is exclusive to the connection the session shares (else the declare fails): the
     * session's, as if it had had its own connection, so it goes with the session (test_exclusive_per_session). */
    rig_feed(&r, "SUBSCRIBE\nid:e\ndestination:/queue/q\nexclusive:true\n\n");
    d = fake_find(r.up, FAKE_DECLARE, (size_t)d + 1);
    CHECK(d >= 0 && (r.up->cmds[d].flags & UPSTREAM_Q_OWNED) && (r.up->cmds[d].flags & UPSTREAM_Q_EXCLUSIVE));
    rig_deinit(&r);
}

/* "Bad command" is for a command line that is not a command (the parser's STOMP_E_COMMAND), never for other parse
 * errors whose text happens to contain the word: a body on a bodiless frame, a NUL in a header. */
static void test_parse_error_words(void)
{
    static const struct {
        const char *in;
        size_t len;
        const char *message;
    } cases[] = {
#define CASE(lit, message) {lit, sizeof(lit) - 1, message}
        CASE("FOO\n\n", "message:Bad command"),
        CASE("SUBSCRIBE\ndestination:/topic/a\nid:1\ncontent-length:x\n\n", "message:invalid content-length header"),
        CASE("SEND\ndestination:/topic/a\nx:a\0b\n\n", "message:NUL byte in the command or header lines"),
#undef CASE
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct rig r;
        rig_init(&r);
        rig_start(&r);
        rig_connect(&r, "1.2", "0,0");
        rig_feed_n(&r, cases[i].in, cases[i].len + 1); /* and the NUL */
        CHECK(r.closed && frame_has(rig_last(&r), cases[i].message));
        if (!frame_has(rig_last(&r), cases[i].message))
            fprintf(stderr, "case %zu: %s\n", i, rig_last(&r));
        rig_deinit(&r);
    }
}

/* As RabbitMQ: NACK works on 1.0 (with requeue); SUBSCRIBE without id works in every version, the destination naming
 * the subscription (consumer tag Q_<destination>, no `subscription` on MESSAGE, UNSUBSCRIBE by destination). */
static void test_nack_10_and_no_id(void)
{
    static const char *const versions[] = {"1.0", "1.2"};
    for (size_t v = 0; v < 2; v++) {
        struct rig r;
        rig_init(&r);
        rig_start(&r);
        rig_connect(&r, versions[v], "0,0");
        rig_feed(&r, "SUBSCRIBE\ndestination:/queue/q\nack:client-individual\n\n");
        fake_done_all(r.up);
        long c = fake_find(r.up, FAKE_CONSUME, 0);
        CHECK(!r.closed && c >= 0 && strcmp(r.up->cmds[c].b, "Q_/queue/q") == 0);
        fake_deliver(fake_last_chan(r.up), "Q_/queue/q", "m", NULL);
        CHECK(strncmp(rig_last(&r), "MESSAGE\n", 8) == 0 && !strstr(rig_last(&r), "subscription:"));
        const char *mid = strstr(rig_last(&r), "message-id:");
        char f[512];
        snprintf(f, sizeof(f), "NACK\n%s:%.*s\nrequeue:true\n\n", v == 0 ? "message-id" : "id",
                 mid ? (int)strcspn(mid + 11, "\n") : 0, mid ? mid + 11 : "");
        rig_feed(&r, f);
        long n = fake_find(r.up, FAKE_NACK, 0);
        CHECK(!r.closed && n >= 0 && r.up->cmds[n].requeue);
        rig_feed(&r, "UNSUBSCRIBE\ndestination:/queue/q\n\n");
        CHECK(!r.closed && fake_count(r.up, FAKE_CANCEL) == 1);
        rig_deinit(&r);
    }
}

/* A delivery whose MESSAGE alone is over client_send_limit_bytes: the session acks the ack:auto deliveries it already
 * queued, rejects that one at the broker (nack requeue=false, before the channel's release, so it is not requeued to
 * the next consumer), then fails with an ERROR naming it; the client's other unsettled deliveries go back by the release.
 * Before (issue 7), the transport closed the client as too slow with no ERROR and the broker requeued the message. */
static void test_oversize_delivery(void)
{
    struct rig r;
    rig_init(&r);
    r.conf.client_send_limit_bytes = 4096;
    r.conf.client_send_buffer_bytes = 4096;
    rig_start(&r);
    rig_connect(&r, "1.2", "0,0");
    struct upstream_chan *ch = fake_last_chan(r.up);
    subscribe(&r, "a", "auto");
    subscribe(&r, "c", "client");
    uint64_t small = fake_deliver(ch, "T_a", "small", NULL);
    uint64_t held = fake_deliver(ch, "T_c", "held", NULL);
    CHECK_EQ_INT(rig_count(&r, "MESSAGE"), 2);
    char big[5000];
    memset(big, 'b', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    size_t acks = fake_count(r.up, FAKE_ACK);
    uint64_t tag = fake_deliver(ch, "T_c", big, NULL);
    CHECK_EQ_INT(rig_count(&r, "MESSAGE"), 2); /* never sent */
    const char *e = rig_last(&r);
    CHECK(strncmp(e, "ERROR\n", 6) == 0 && frame_has(e, "message:Message too large") && frame_has(e, "subscription:c"));
    char want[128];
    snprintf(want, sizeof(want), "Message 'T_c@@%s@@%llu' from '/queue/rk' takes ", session_id(r.s), (unsigned long long)tag);
    CHECK(strstr(e, want) != NULL && strstr(e, "client_send_limit_bytes 4096") != NULL);
    CHECK(r.closed);
    long nack = fake_find(r.up, FAKE_NACK, 0);
    long rel = fake_find(r.up, FAKE_RELEASE, 0);
    CHECK(nack >= 0 && r.up->cmds[nack].dtag == tag && !r.up->cmds[nack].requeue && !r.up->cmds[nack].multiple);
    CHECK(rel > nack);
    CHECK_EQ_INT(fake_count(r.up, FAKE_NACK), 1); /* `held` is the release's to requeue, not rejected */
    long ack = fake_find(r.up, FAKE_ACK, 0);
    CHECK(fake_count(r.up, FAKE_ACK) == acks + 1 && ack >= 0 && ack < nack && r.up->cmds[ack].dtag == small);
    CHECK(held != tag);
    rig_deinit(&r);
}

/* A session of `user` on vhost "/" in rig r, sharing the exclusive-queue table x. */
static void excl_rig(struct rig *r, struct excl *x, const char *user)
{
    char f[256];
    rig_init(r);
    r->excl = x;
    rig_start(r);
    snprintf(f, sizeof(f), "CONNECT\naccept-version:1.2\nheart-beat:0,0\nlogin:%s\npasscode:pw\nhost:/\n\n", user);
    rig_feed(r, f);
    fake_open(fake_last_chan(r->up), NULL);
    fake_timer_run();
}

/* What session b of the same login gets for frame `f` that names a queue session a holds exclusively: ERROR
 * resource_locked in the broker's words, nothing asked of the broker; true when so. */
static bool excl_refused(struct excl *x, const char *f, const char *queue)
{
    struct rig b;
    char want[512];
    excl_rig(&b, x, "app");
    rig_feed(&b, f);
    snprintf(want, sizeof(want), "cannot obtain exclusive access to locked queue '%s' in vhost '/'", queue);
    bool ok = b.closed && frame_has(rig_last(&b), "message:resource_locked") && strstr(rig_last(&b), want) != NULL &&
              fake_count(b.up, FAKE_CONSUME) == 0 && fake_count(b.up, FAKE_DECLARE) == 0 && fake_count(b.up, FAKE_BIND) == 0 &&
              fake_count(b.up, FAKE_DELETE) == 0;
    if (!ok)
        fprintf(stderr, "not refused: %s -> %s\n", f, rig_last(&b));
    rig_deinit(&b);
    return ok;
}

/* Exclusive means exclusive to the session (issue 7): sessions of one login share the AMQP connection, to which the
 * broker ties exclusive queues, so warren refuses another session any consume, declare, bind or delete of, or
 * x-queue-name naming, a /temp-queue/ reply queue or exclusive:true queue a session declared, until that session ends.
 * Publishing to it stays open (the broker allows it from any connection: that is how replies get there). */
static void test_exclusive_per_session(void)
{
    struct excl *x = NULL;
    CHECK(excl_new(&x) == 0);
    struct rig a;
    excl_rig(&a, x, "app");
    rig_feed(&a, "SEND\ndestination:/queue/service\nreply-to:/temp-queue/r\n\nreq");
    rig_feed(&a, "SUBSCRIBE\nid:e\ndestination:/topic/t\nexclusive:true\nx-queue-name:mine\n\n");
    long d = fake_find(a.up, FAKE_DECLARE, 0);
    while (d >= 0 && strncmp(a.up->cmds[d].a, "stomp.gen-", 10) != 0)
        d = fake_find(a.up, FAKE_DECLARE, (size_t)d + 1);
    CHECK(d >= 0 && !a.closed && excl_count(x) == 2);
    char tq[300], f[700];
    snprintf(tq, sizeof(tq), "%s", d >= 0 ? a.up->cmds[d].a : "?");
    static const char *const refused[][2] = {
        {"SUBSCRIBE\nid:s\ndestination:/amq/queue/", "\n\n"},
        {"SUBSCRIBE\nid:s\ndestination:/queue/", "\n\n"},
        {"SUBSCRIBE\nid:s\ndestination:/reply-queue/", "\n\n"},
        {"SUBSCRIBE\nid:s\ndestination:/topic/k\nx-queue-name:", "\n\n"},
        {"SUBSCRIBE\nid:s\ndestination:/exchange/amq.fanout\nexclusive:true\nx-queue-name:", "\n\n"},
        {"SEND\ndestination:/queue/", "\n\nx"},
    };
    for (size_t i = 0; i < sizeof(refused) / sizeof(refused[0]); i++) {
        snprintf(f, sizeof(f), "%s%s%s", refused[i][0], tq, refused[i][1]);
        CHECK(excl_refused(x, f, tq));
        snprintf(f, sizeof(f), "%s%s%s", refused[i][0], "mine", refused[i][1]);
        CHECK(excl_refused(x, f, "mine"));
    }
    /* Publishing is open to all; another login, or the same name in another vhost, is another connection's business. */
    struct rig b;
    excl_rig(&b, x, "app");
    snprintf(f, sizeof(f), "SEND\ndestination:/amq/queue/%s\n\nreply", tq);
    rig_feed(&b, f);
    snprintf(f, sizeof(f), "SEND\ndestination:/reply-queue/%s\n\nreply", tq);
    rig_feed(&b, f);
    CHECK(!b.closed && fake_count(b.up, FAKE_PUBLISH) == 2);
    rig_deinit(&b);
    excl_rig(&b, x, "other");
    snprintf(f, sizeof(f), "SUBSCRIBE\nid:s\ndestination:/amq/queue/%s\n\n", tq);
    rig_feed(&b, f);
    CHECK(!b.closed && fake_count(b.up, FAKE_CONSUME) == 1);
    rig_deinit(&b);
    /* The owner itself may, and once it has ended the names are free. */
    rig_feed(&a, "SUBSCRIBE\nid:again\ndestination:/amq/queue/mine\n\n");
    CHECK(!a.closed);
    rig_feed(&a, "DISCONNECT\n\n");
    fake_done_all(a.up);
    CHECK(a.closed && excl_count(x) == 0);
    excl_rig(&b, x, "app");
    snprintf(f, sizeof(f), "SUBSCRIBE\nid:s\ndestination:/amq/queue/%s\n\n", tq);
    rig_feed(&b, f);
    CHECK(!b.closed && fake_count(b.up, FAKE_CONSUME) == 1);
    rig_deinit(&b);
    rig_deinit(&a);
    excl_free(x);
}

/* A CONNECT as `login` from `peer` on a rig sharing throttle t; returns whether the channel was asked for at once. */
static bool throttled_connect(struct rig *r, struct throttle *t, const char *peer, const char *login)
{
    char f[256];
    rig_init(r);
    r->throttle = t;
    r->peer = peer;
    r->conf.login_failure_delay_max_ms = 800;
    rig_start(r);
    snprintf(f, sizeof(f), "CONNECT\naccept-version:1.2\nlogin:%s\npasscode:x\n\n", login);
    rig_feed(r, f);
    return fake_count(r->up, FAKE_OPEN) == 1;
}

/* Failed logins slow down their address (issue 7): 100 ms after the first refusal, doubling to the cap, before the next
 * login is even tried; parallel attempts take turns; other addresses and logins under the delay are not held; nothing
 * but a timer waits. */
static void test_login_throttle(void)
{
    struct throttle *t = NULL;
    CHECK(throttle_new(&t) == 0);
    struct upstream_error refused = {.kind = UPSTREAM_ERR_ACCESS_REFUSED, .code = 403, .text = "ACCESS_REFUSED"};
    uint64_t want[] = {0, 100, 200, 400, 800, 800};
    for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
        struct rig r;
        bool now = throttled_connect(&r, t, "10.0.0.1:4000", "bob");
        CHECK(now == (want[i] == 0) && !r.closed && r.paused);
        if (want[i] > 0) {
            fake_timer_advance(want[i] - 1);
            CHECK_EQ_INT(fake_count(r.up, FAKE_OPEN), 0);
            fake_timer_advance(1);
        }
        CHECK_EQ_INT(fake_count(r.up, FAKE_OPEN), 1);
        CHECK(strcmp(r.up->cmds[fake_find(r.up, FAKE_OPEN, 0)].a, "bob") == 0);
        fake_open(fake_last_chan(r.up), &refused);
        CHECK(r.closed && frame_has(rig_last(&r), "message:Bad CONNECT"));
        rig_deinit(&r);
    }
    /* Another address, and an IPv6 one in another /64, are not held; the same /64 is. */
    struct rig o;
    CHECK(throttled_connect(&o, t, "10.0.0.2:4000", "bob"));
    rig_deinit(&o);
    CHECK(throttled_connect(&o, t, "[2001:db8:0:2::1]:5", "bob"));
    fake_open(fake_last_chan(o.up), &refused);
    rig_deinit(&o);
    CHECK(!throttled_connect(&o, t, "[2001:db8:0:2::99]:5", "bob"));
    rig_deinit(&o);
    /* Parallel attempts of the held address take turns, one per delay (800 ms now): one waiting for its turn of 800 ms,
     * the next would wait past the cap, so it is refused at once, without the broker. */
    struct rig p[2];
    CHECK(!throttled_connect(&p[0], t, "10.0.0.1:5000", "bob"));
    CHECK(!throttled_connect(&p[1], t, "10.0.0.1:5001", "bob"));
    CHECK(p[1].closed && frame_has(rig_last(&p[1]), "message:Bad CONNECT") &&
          strstr(rig_last(&p[1]), "Too many refused logins from this address; try again in 800 ms") != NULL);
    fake_timer_advance(800);
    CHECK_EQ_INT(fake_count(p[0].up, FAKE_OPEN), 1);
    rig_deinit(&p[0]);
    rig_deinit(&p[1]);
    /* The next turn is 800 ms later; a session freed while it waits opens nothing. */
    CHECK(!throttled_connect(&o, t, "10.0.0.1:5002", "bob"));
    session_free(o.s);
    o.s = NULL;
    fake_timer_advance(1000);
    CHECK_EQ_INT(fake_count(o.up, FAKE_OPEN), 0);
    rig_deinit(&o);
    /* Forgotten after 10 x the cap without a refusal; off with 0. */
    fake_timer_advance(8001);
    CHECK(throttled_connect(&o, t, "10.0.0.1:5002", "bob"));
    rig_deinit(&o);
    CHECK_EQ_INT(throttle_login_wait(t, "10.0.0.9:1", 0, 0), 0);
    throttle_free(t);
}

/* ------------------------------------------------------------------------------------------------------------------ */
/* Session budgets (issue 7): transactions in bytes, frames checked on arrival, unconfirmed bytes, pending operations,
 * failed operations completed. */

/* Operations with a completion that the broker has not answered yet. */
static size_t pending_at_fake(const struct upstream *up)
{
    size_t n = 0;
    for (size_t i = 0; i < up->n_cmds; i++) {
        enum fake_cmd_kind k = up->cmds[i].kind;
        n += k >= FAKE_DECLARE && k <= FAKE_PUBLISH && !up->cmds[i].completed;
    }
    return n;
}

/* A SEND of a `len`-byte body ('x'), with extra header lines `hdrs` ("" or "name:value\n..."), NUL included. */
static size_t send_frame(char *out, size_t cap, const char *hdrs, size_t len)
{
    int n = snprintf(out, cap, "SEND\ndestination:/topic/a\n%s\n", hdrs);
    if (n < 0 || (size_t)n + len + 1 > cap)
        return 0;
    memset(out + n, 'x', len);
    out[n + len] = '\0';
    return (size_t)n + len + 1;
}

/* max_transaction_bytes bounds the copies of all of a session's open transactions together, before copying. */
static void test_tx_bytes_bounded(void)
{
    static char f[4096];
    struct rig r;
    rig_init(&r);
    r.conf.max_transaction_bytes = 4096;
    rig_start(&r);
    rig_connect(&r, "1.2", "0,0");
    rig_feed(&r, "BEGIN\ntransaction:t1\n\n");
    rig_feed(&r, "BEGIN\ntransaction:t2\n\n");
    size_t n = send_frame(f, sizeof(f), "transaction:t1\n", 1500);
    rig_feed_n(&r, f, n);
    rig_feed_n(&r, f, n);
    CHECK(!r.closed);
    n = send_frame(f, sizeof(f), "transaction:t2\nreceipt:big\n", 1500); /* another transaction: the same budget */
    rig_feed_n(&r, f, n);
    CHECK(r.closed && frame_has(rig_last(&r), "message:Transaction too large") && frame_has(rig_last(&r), "receipt-id:big"));
    CHECK(strstr(rig_last(&r), "at most 4096 bytes (max_transaction_bytes)") != NULL);
    CHECK_EQ_INT(fake_count(r.up, FAKE_PUBLISH), 0);
    rig_deinit(&r);

    rig_init(&r); /* COMMIT and ABORT give the bytes back */
    r.conf.max_transaction_bytes = 4096;
    rig_start(&r);
    rig_connect(&r, "1.2", "0,0");
    for (int i = 0; i < 4; i++) {
        rig_feed(&r, "BEGIN\ntransaction:t\n\n");
        n = send_frame(f, sizeof(f), "transaction:t\n", 1500);
        rig_feed_n(&r, f, n);
        rig_feed_n(&r, f, n);
        rig_feed(&r, i % 2 ? "COMMIT\ntransaction:t\n\n" : "ABORT\ntransaction:t\n\n");
        fake_done_all(r.up);
    }
    CHECK(!r.closed && fake_count(r.up, FAKE_PUBLISH) == 4);
    rig_deinit(&r);
}

/* The ERROR of the single frame `frame` fed to a fresh session after CONNECT (`pre`, if set, fed first). */
static void error_of(const char *pre, const char *frame, char *out, size_t cap)
{
    struct rig r;
    rig_init(&r);
    rig_start(&r);
    rig_connect(&r, "1.2", "0,0");
    if (pre)
        rig_feed(&r, pre);
    rig_feed(&r, frame);
    snprintf(out, cap, "%s", r.closed ? rig_last(&r) : "");
    rig_deinit(&r);
}

/* A transactional frame gets, when it arrives, the ERROR it would get outside a transaction; COMMIT is not half applied. */
static void test_tx_checked_on_arrival(void)
{
    static const struct {
        const char *head, *body; /* the frame is head, the receipt (and transaction) lines, a blank line, body */
    } bad[] = {
        {"SEND\ndestination:/bogus/x\n", "x"},
        {"SEND\ndestination:/topic/a\npriority:300\n", "x"},
        {"SEND\ndestination:/topic/a\nmessage-id:m\n", "x"},
        {"SEND\ndestination:/queue/q\nx-max-length:many\n", "x"},
        {"SEND\ndestination:/topic/a\ncorrelation-id:"
         "0123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789"
         "0123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789"
         "0123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789\n",
         "x"},
        {"ACK\nid:T_s@@session-nope@@1\n", ""},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char plain[1024], in_tx[1024], outside[2048], inside[2048];
        snprintf(plain, sizeof(plain), "%sreceipt:r\n\n%s", bad[i].head, bad[i].body);
        snprintf(in_tx, sizeof(in_tx), "%sreceipt:r\ntransaction:t\n\n%s", bad[i].head, bad[i].body);
        error_of(NULL, plain, outside, sizeof(outside));
        error_of("BEGIN\ntransaction:t\n\n", in_tx, inside, sizeof(inside)); /* no COMMIT: refused on arrival */
        CHECK(outside[0] != '\0' && strcmp(outside, inside) == 0);
        if (!outside[0] || strcmp(outside, inside) != 0)
            fprintf(stderr, "case %zu:\noutside: %s\ninside: %s\n", i, outside, inside);
    }

    /* An ACK valid on arrival whose message was settled since: COMMIT publishes nothing before its ERROR. */
    struct rig r;
    char id[256], f[512];
    rig_init(&r);
    rig_start(&r);
    rig_connect(&r, "1.2", "0,0");
    subscribe(&r, "s", "client-individual");
    fake_deliver(fake_last_chan(r.up), "T_s", "m", NULL);
    last_ack_id(&r, id, sizeof(id));
    rig_feed(&r, "BEGIN\ntransaction:t\n\n");
    rig_feed(&r, "SEND\ndestination:/topic/a\ntransaction:t\n\nfirst");
    snprintf(f, sizeof(f), "ACK\nid:%s\ntransaction:t\n\n", id);
    rig_feed(&r, f);
    CHECK(!r.closed);
    snprintf(f, sizeof(f), "ACK\nid:%s\n\n", id);
    rig_feed(&r, f);
    rig_feed(&r, "SEND\ndestination:/topic/a\ntransaction:t\n\nthird");
    rig_feed(&r, "COMMIT\ntransaction:t\nreceipt:c\n\n");
    CHECK(r.closed && frame_has(rig_last(&r), "message:Message not found"));
    CHECK_EQ_INT(fake_count(r.up, FAKE_PUBLISH), 0);
    rig_deinit(&r);
}

/* max_unconfirmed_bytes: a SEND that would pass it waits unread (no copy) until confirms make room; one frame larger
 * than the budget goes alone. */
static void test_unconfirmed_bytes(void)
{
    static char f[8192], two[8192];
    struct rig r;
    rig_init(&r);
    r.conf.max_unconfirmed_bytes = 2048;
    rig_start(&r);
    rig_connect(&r, "1.2", "0,0");
    size_t n = send_frame(f, sizeof(f), "receipt:a\n", 1500);
    memcpy(two, f, n);
    size_t m = send_frame(two + n, sizeof(two) - n, "receipt:b\n", 1500);
    rig_feed_n(&r, two, n + m);
    CHECK(r.paused && !r.closed);
    CHECK_EQ_INT(fake_count(r.up, FAKE_PUBLISH), 1); /* the second is not copied to the upstream */
    fake_done_all(r.up);
    CHECK(!r.paused && rig_count(&r, "RECEIPT") == 1);
    fake_timer_run(); /* the held frame is parsed again */
    CHECK_EQ_INT(fake_count(r.up, FAKE_PUBLISH), 2);
    fake_done_all(r.up);
    CHECK(rig_count(&r, "RECEIPT") == 2 && frame_has(rig_last(&r), "receipt-id:b"));
    n = send_frame(f, sizeof(f), "", 5000); /* larger than the budget, nothing unconfirmed: goes */
    rig_feed_n(&r, f, n);
    CHECK(fake_count(r.up, FAKE_PUBLISH) == 3 && !r.paused);

    /* a COMMIT waits the same way for its SENDs */
    rig_feed(&r, "BEGIN\ntransaction:t\n\n");
    n = send_frame(f, sizeof(f), "transaction:t\n", 1500);
    rig_feed_n(&r, f, n);
    rig_feed(&r, "COMMIT\ntransaction:t\nreceipt:c\n\n");
    CHECK(r.paused && fake_count(r.up, FAKE_PUBLISH) == 3);
    fake_done_all(r.up);
    fake_timer_run();
    CHECK(!r.paused && fake_count(r.up, FAKE_PUBLISH) == 4);
    fake_done_all(r.up);
    CHECK(frame_has(rig_last(&r), "receipt-id:c") && !r.closed);
    rig_deinit(&r);
}

/* max_pending_ops: a SUBSCRIBE/UNSUBSCRIBE flood (and a flood of receipts behind one unconfirmed publish) stops reading
 * at the bound instead of queueing records without end, and goes on as the broker answers. */
static void test_pending_ops_bounded(void)
{
    static char flood[64 * 1024];
    struct rig r;
    rig_init(&r);
    r.conf.max_pending_ops = 16;
    rig_start(&r);
    rig_connect(&r, "1.2", "0,0");
    size_t len = 0;
    for (int i = 0; i < 200; i++)
        len += (size_t)snprintf(flood + len, sizeof(flood) - len,
                                "SUBSCRIBE\nid:s%d\ndestination:/topic/t\n\n%cUNSUBSCRIBE\nid:s%d\n\n%c", i, 0, i, 0);
    rig_feed_n(&r, flood, len);
    CHECK(r.paused && !r.closed);
    CHECK(pending_at_fake(r.up) <= 16 + 3);
    size_t rounds = 0;
    while (r.paused && rounds++ < 1000) {
        CHECK(pending_at_fake(r.up) <= 16 + 3);
        fake_done_all(r.up);
        fake_timer_run();
    }
    CHECK(!r.closed && fake_count(r.up, FAKE_CANCEL) == 200 && rounds > 10);
    rig_deinit(&r);

    rig_init(&r);
    r.conf.max_pending_ops = 16;
    rig_start(&r);
    rig_connect(&r, "1.2", "0,0");
    rig_feed(&r, "SEND\ndestination:/topic/a\n\nunconfirmed");
    len = 0;
    for (int i = 0; i < 100; i++)
        len += (size_t)snprintf(flood + len, sizeof(flood) - len,
                                "BEGIN\ntransaction:t\nreceipt:r%d\n\n%cABORT\ntransaction:t\n\n%c", i, 0, 0);
    rig_feed_n(&r, flood, len);
    CHECK(r.paused && rig_count(&r, "RECEIPT") == 0);
    fake_done_all(r.up);
    CHECK(!r.paused);
    fake_timer_run();
    CHECK(!r.closed && rig_count(&r, "RECEIPT") == 100);
    rig_deinit(&r);
}

/* An upstream failure that does not kill the channel (out of memory) completes its operation: ERROR with its receipt,
 * and a DISCONNECT behind it does not wait for ever. */
static void test_failed_op_completes(void)
{
    struct upstream_error oom = {.kind = UPSTREAM_ERR_NOMEM, .name = "internal_error", .text = "out of memory"};
    struct rig r;
    rig_init(&r);
    rig_start(&r);
    rig_connect(&r, "1.2", "0,0");
    rig_feed(&r, "SEND\ndestination:/topic/a\nreceipt:s\n\nx");
    rig_feed(&r, "DISCONNECT\nreceipt:bye\n\n");
    fake_done(r.up, (size_t)fake_find(r.up, FAKE_PUBLISH, 0), &oom);
    CHECK(r.closed && rig_count(&r, "RECEIPT") == 0);
    CHECK(frame_has(rig_last(&r), "message:Processing error") && frame_has(rig_last(&r), "receipt-id:s"));
    CHECK(strstr(rig_last(&r), "out of memory") != NULL);
    rig_deinit(&r);

    rig_init(&r); /* a declare (SUBSCRIBE) */
    rig_start(&r);
    rig_connect(&r, "1.2", "0,0");
    rig_feed(&r, "SUBSCRIBE\nid:1\ndestination:/queue/q\n\n");
    rig_feed(&r, "DISCONNECT\nreceipt:bye\n\n");
    fake_done(r.up, (size_t)fake_find(r.up, FAKE_DECLARE, 0), &oom);
    CHECK(r.closed && frame_has(rig_last(&r), "message:Processing error"));
    rig_deinit(&r);

    rig_init(&r); /* a channel error still waits for on_closed, which names the broker's reason */
    rig_start(&r);
    rig_connect(&r, "1.2", "0,0");
    rig_feed(&r, "SEND\ndestination:/topic/a\nreceipt:s\n\nx");
    struct upstream_error chan = {.kind = UPSTREAM_ERR_CHANNEL, .code = 404, .name = "not_found", .text = "NOT_FOUND"};
    fake_done(r.up, (size_t)fake_find(r.up, FAKE_PUBLISH, 0), &chan);
    CHECK(!r.closed);
    fake_close(fake_last_chan(r.up), UPSTREAM_ERR_CHANNEL, 404, "not_found", "NOT_FOUND");
    CHECK(r.closed && frame_has(rig_last(&r), "message:not_found") && frame_has(rig_last(&r), "receipt-id:s"));
    rig_deinit(&r);
}

/*
 * Issue 7: one message of many frames is parsed SESSION_TURN_FRAMES (1024) at a time; the rest waits for the next loop
 * turn (timer_yield) with io->backlog(true) said, so the front-end feeds nothing more; all frames are handled, in order.
 */
static void test_frame_budget(void)
{
    struct rig r;
    rig_init(&r);
    rig_start(&r);
    rig_connect(&r, "1.2", "0,0");
    rig_clear(&r);
    /* 1500 BEGIN/ABORT pairs (3000 frames), a receipt on every 100th ABORT and the last, plus heart-beat EOLs */
    static char buf[3000 * 40];
    size_t n = 0;
    for (int i = 0; i < 1500; i++) {
        n += (size_t)snprintf(buf + n, sizeof(buf) - n, "BEGIN\ntransaction:t\n\n%c\n", 0);
        if (i % 100 == 0 || i == 1499)
            n += (size_t)snprintf(buf + n, sizeof(buf) - n, "ABORT\ntransaction:t\nreceipt:r%d\n\n%c", i, 0);
        else
            n += (size_t)snprintf(buf + n, sizeof(buf) - n, "ABORT\ntransaction:t\n\n%c", 0);
    }
    rig_feed_n(&r, buf, n);
    /* the first call stopped at the budget: fewer than all receipts, the front-end told to wait */
    CHECK(rig_count(&r, "RECEIPT") < 16);
    CHECK(r.backlog);
    CHECK(fake_timer_armed() > 0);
    fake_timer_run();
    CHECK(!r.backlog);
    CHECK_EQ_INT(r.backlog_calls, 2);
    CHECK_EQ_INT(rig_count(&r, "RECEIPT"), 16);
    CHECK(frame_has(rig_out(&r, 0), "receipt-id:r0"));
    CHECK(frame_has(rig_out(&r, 15), "receipt-id:r1499"));
    CHECK(!r.closed);
    /* a small message afterwards goes through at once, without a backlog */
    rig_feed(&r, "BEGIN\ntransaction:u\nreceipt:after\n\n");
    CHECK(frame_has(rig_last(&r), "receipt-id:after"));
    CHECK_EQ_INT(r.backlog_calls, 2);
    rig_deinit(&r);
}

/*
 * Issue 7: while CONNECT waits for the broker nothing is parsed; what a client sends meanwhile is held, at most two
 * max_frame_bytes_unauthenticated (it was max_frame_bytes + max_message_bytes, 8 MiB, per connection before login).
 */
static void test_input_held_before_connected(void)
{
    struct rig r;
    rig_init(&r);
    rig_start(&r);
    rig_feed(&r, "CONNECT\naccept-version:1.2\nlogin:bob\npasscode:x\n\n");
    CHECK(!r.closed);
    static char chunk[60000];
    memset(chunk, '\n', sizeof(chunk));
    rig_feed_n(&r, chunk, sizeof(chunk));
    rig_feed_n(&r, chunk, sizeof(chunk));
    CHECK(!r.closed); /* 120000 bytes held: under 2 x 65536 */
    rig_feed_n(&r, chunk, sizeof(chunk));
    CHECK(r.closed);
    CHECK(frame_has(rig_last(&r), "message:Too much input"));
    rig_deinit(&r);
}

/* ------------------------------------------------------------------------------------------------------------------ */
/* Local fan-out (topic_fanout = local, bridge/fanout.h)                                                               */

/* A session of `login` on the shared upstream and fan-out table, with topic_fanout = local and topic_fanout_from =
 * `from` (1: every subscription shares). */
static struct upstream_chan *fan_start_from(struct rig *r, struct upstream *up, struct fanout *fo, const char *login, int from)
{
    char f[256];
    rig_init(r);
    r->conf.topic_fanout = CONF_TOPIC_FANOUT_LOCAL;
    r->conf.topic_fanout_from = from;
    r->shared_up = up;
    r->fanout = fo;
    rig_start(r);
    snprintf(f, sizeof(f), "CONNECT\naccept-version:1.2\nheart-beat:0,0\nlogin:%s\npasscode:pw\nhost:/\n\n", login);
    rig_feed(r, f);
    struct upstream_chan *ch = fake_last_chan(up);
    fake_open(ch, NULL);
    fake_timer_run();
    CHECK(rig_count(r, "CONNECTED") == 1);
    rig_clear(r);
    return ch;
}

static struct upstream_chan *fan_start(struct rig *r, struct upstream *up, struct fanout *fo, const char *login)
{
    return fan_start_from(r, up, fo, login, 1);
}

/* The commands of `kind` on channel `ch`. */
static size_t chan_count(const struct upstream *up, const struct upstream_chan *ch, enum fake_cmd_kind kind)
{
    size_t n = 0;
    for (size_t i = 0; i < up->n_cmds; i++)
        n += up->cmds[i].ch == ch && up->cmds[i].kind == kind;
    return n;
}

/* Sessions of one login share one group; the RECEIPT of each SUBSCRIBE waits for the group's consume-ok; every member
 * gets each delivery once with its own subscription and message-id; one ack per turn; another login has its own group;
 * a non-shareable subscription (ack:client) consumes on its own channel. */
static void test_fanout_shared(void)
{
    struct upstream *up = fake_upstream_new();
    struct fanout *fo = NULL;
    struct rig a, b, c;
    CHECK(fanout_new(NULL, up, &fo) == 0);
    struct upstream_chan *ach = fan_start(&a, up, fo, "app");
    fan_start(&b, up, fo, "app");
    fan_start(&c, up, fo, "other");
    size_t opens = fake_count(up, FAKE_OPEN);
    rig_feed(&a, "SUBSCRIBE\nid:a1\ndestination:/topic/news\nreceipt:ra\n\n");
    CHECK_EQ_INT(fake_count(up, FAKE_OPEN), opens + 1); /* the group's own channel */
    struct upstream_chan *g = fake_last_chan(up);
    CHECK(chan_count(up, g, FAKE_DECLARE) == 1 && chan_count(up, g, FAKE_BIND) == 1 && chan_count(up, g, FAKE_CONSUME) == 1);
    long d = fake_find(up, FAKE_DECLARE, 0);
    CHECK(strncmp(up->cmds[d].a, "stomp-fanout-", 13) == 0 && (up->cmds[d].flags & UPSTREAM_Q_OWNED));
    rig_feed(&b, "SUBSCRIBE\nid:b1\ndestination:/exchange/amq.topic/news\nreceipt:rb\n\n"); /* the same binding */
    CHECK_EQ_INT(fake_count(up, FAKE_OPEN), opens + 1);
    CHECK_EQ_INT(fanout_groups(fo), 1);
    CHECK(rig_count(&a, "RECEIPT") == 0 && rig_count(&b, "RECEIPT") == 0); /* not before consume-ok */
    fake_open(g, NULL);
    fake_done_all(up);
    CHECK(rig_count(&a, "RECEIPT") == 1 && rig_count(&b, "RECEIPT") == 1);
    rig_feed(&b, "SUBSCRIBE\nid:b2\ndestination:/topic/news\nreceipt:rb2\n\n"); /* joins a live group: RECEIPT at once */
    CHECK(rig_count(&b, "RECEIPT") == 2);
    rig_feed(&c, "SUBSCRIBE\nid:c1\ndestination:/topic/news\n\n");
    CHECK_EQ_INT(fanout_groups(fo), 2); /* another login, another queue */
    rig_feed(&c, "SUBSCRIBE\nid:c2\ndestination:/topic/news\nprefetch-count:5\n\n");
    CHECK_EQ_INT(fanout_groups(fo), 3); /* another window, another queue, consuming with it */
    long pc = fake_find(up, FAKE_CONSUME, 0), last = -1;
    for (; pc >= 0; pc = fake_find(up, FAKE_CONSUME, (size_t)pc + 1))
        last = pc;
    CHECK(last >= 0 && up->cmds[last].flags == 5);
    rig_feed(&a, "SUBSCRIBE\nid:a2\ndestination:/topic/news\nack:client\n\n");
    CHECK(chan_count(up, ach, FAKE_CONSUME) == 1 && chan_count(up, ach, FAKE_DECLARE) == 1); /* its own queue and consumer */
    fake_done_all(up);
    rig_clear(&a);
    rig_clear(&b);
    uint64_t t1 = fake_deliver(g, "stomp-fanout", "hello", NULL);
    uint64_t t2 = fake_deliver(g, "stomp-fanout", "world", NULL);
    CHECK(rig_count(&a, "MESSAGE") == 2 && rig_count(&b, "MESSAGE") == 4 && rig_count(&c, "MESSAGE") == 0);
    CHECK(frame_has(rig_out(&a, 0), "subscription:a1") && strstr(rig_out(&a, 0), "\n\nhello") != NULL);
    char want[160];
    snprintf(want, sizeof(want), "message-id:T_b2@@%s@@%llu", session_id(b.s), (unsigned long long)t2);
    bool found = false;
    for (size_t i = 0; i < b.n_out; i++)
        found |= frame_has(rig_out(&b, i), want);
    CHECK(found);
    CHECK_EQ_INT(chan_count(up, g, FAKE_ACK), 0);
    fake_timer_run();
    CHECK_EQ_INT(chan_count(up, g, FAKE_ACK), 1); /* one basic.ack multiple for the turn */
    long ack = fake_find(up, FAKE_ACK, 0);
    while (ack >= 0 && up->cmds[ack].ch != g)
        ack = fake_find(up, FAKE_ACK, (size_t)ack + 1);
    CHECK(ack >= 0 && up->cmds[ack].dtag == t2 && up->cmds[ack].multiple && t1 < t2);
    rig_deinit(&a);
    rig_deinit(&b);
    rig_deinit(&c);
    CHECK_EQ_INT(fanout_groups(fo), 0);
    fanout_free(fo);
    fake_upstream_free(up);
}

/*
 * topic_fanout_from = 3: the first two subscriptions of a binding keep a queue and consumer of their own on their
 * session's channel (as with topic_fanout = broker) and are only counted; the third opens the group, the fourth joins
 * it. When the members are gone the group's channel is released while the solos go on, and the next subscription past
 * them opens a fresh group. A group older than amqp_auth_reuse_ms takes no new member: the next one starts a new group
 * of the key (its first subscriptions solos again).
 */
static void test_fanout_from(void)
{
    struct upstream *up = fake_upstream_new();
    struct fanout *fo = NULL;
    struct rig a, b, c, d;
    const char *sub = "SUBSCRIBE\nid:s\ndestination:/topic/t\n\n";
    CHECK(fanout_new(NULL, up, &fo) == 0);
    struct upstream_chan *ach = fan_start_from(&a, up, fo, "app", 3);
    struct upstream_chan *bch = fan_start_from(&b, up, fo, "app", 3);
    fan_start_from(&c, up, fo, "app", 3);
    fan_start_from(&d, up, fo, "app", 3);
    size_t opens = fake_count(up, FAKE_OPEN);
    rig_feed(&a, sub);
    rig_feed(&b, sub);
    CHECK_EQ_INT(fake_count(up, FAKE_OPEN), opens); /* no group channel yet */
    CHECK(chan_count(up, ach, FAKE_DECLARE) == 1 && chan_count(up, ach, FAKE_CONSUME) == 1);
    CHECK(chan_count(up, bch, FAKE_DECLARE) == 1 && chan_count(up, bch, FAKE_CONSUME) == 1);
    CHECK_EQ_INT(fanout_groups(fo), 1); /* the key, counting them */
    rig_feed(&c, sub);
    CHECK_EQ_INT(fake_count(up, FAKE_OPEN), opens + 1);
    struct upstream_chan *g = fake_last_chan(up);
    rig_feed(&d, sub);
    CHECK_EQ_INT(fake_count(up, FAKE_OPEN), opens + 1);
    fake_open(g, NULL);
    fake_done_all(up);
    fake_deliver(g, "stomp-fanout", "m", NULL);
    CHECK(rig_count(&c, "MESSAGE") == 1 && rig_count(&d, "MESSAGE") == 1 && rig_count(&a, "MESSAGE") == 0);
    rig_deinit(&c);
    rig_deinit(&d);
    CHECK(chan_count(up, g, FAKE_RELEASE) == 1 && fanout_groups(fo) == 1); /* the channel went, the solos stay counted */
    fan_start_from(&c, up, fo, "app", 3);
    opens = fake_count(up, FAKE_OPEN);
    rig_feed(&c, sub);
    CHECK_EQ_INT(fake_count(up, FAKE_OPEN), opens + 1);
    struct upstream_chan *g2 = fake_last_chan(up);
    CHECK(g2 != g && chan_count(up, g2, FAKE_CONSUME) == 1);
    /* Stale: d's subscription may not join a group opened more than 1 ms ago. */
    struct upstream_chan *dch = fan_start_from(&d, up, fo, "app", 3);
    d.conf.amqp_auth_reuse_ms = 1;
    for (uint64_t t0 = clock_now_ms(); clock_now_ms() - t0 < 2;) {
        /* the clock has to move past the group's 1 ms */
    }
    opens = fake_count(up, FAKE_OPEN);
    rig_feed(&d, sub);
    CHECK_EQ_INT(fake_count(up, FAKE_OPEN), opens); /* a solo of a new group of the key */
    CHECK(chan_count(up, dch, FAKE_CONSUME) == 1);
    CHECK_EQ_INT(fanout_groups(fo), 1); /* the new one: the old one left the table, it lives on for its members */
    /* amqp_auth_reuse_ms = 0: the broker checks every subscription, nothing is shared or counted. */
    struct rig e;
    struct upstream_chan *ech = fan_start_from(&e, up, fo, "app", 1);
    e.conf.amqp_auth_reuse_ms = 0;
    opens = fake_count(up, FAKE_OPEN);
    rig_feed(&e, sub);
    CHECK(fake_count(up, FAKE_OPEN) == opens && chan_count(up, ech, FAKE_CONSUME) == 1 && fanout_groups(fo) == 1);
    rig_deinit(&e);
    rig_deinit(&a);
    rig_deinit(&b);
    rig_deinit(&c);
    rig_deinit(&d);
    CHECK_EQ_INT(fanout_groups(fo), 0);
    fanout_free(fo);
    fake_upstream_free(up);
}

/* The group's channel cannot be set up (here its declare fails as on a channel a cap refused): the subscription goes
 * the usual way, a queue and consumer of its own on its session's channel, and no ERROR; the next one tries again. */
static void test_fanout_setup_fails_solo(void)
{
    struct upstream *up = fake_upstream_new();
    struct fanout *fo = NULL;
    struct rig a, b;
    CHECK(fanout_new(NULL, up, &fo) == 0);
    struct upstream_chan *ach = fan_start(&a, up, fo, "app");
    fan_start(&b, up, fo, "app");
    size_t opens = fake_count(up, FAKE_OPEN);
    up->fail_next = UPSTREAM_ERR_CLOSED; /* the group's queue.declare */
    rig_feed(&a, "SUBSCRIBE\nid:s\ndestination:/topic/t\nreceipt:r\n\n");
    CHECK(!a.closed && rig_count(&a, "ERROR") == 0);
    struct upstream_chan *g = fake_last_chan(up);
    CHECK_EQ_INT(fake_count(up, FAKE_OPEN), opens + 1);
    CHECK(chan_count(up, g, FAKE_RELEASE) == 1);                                             /* released at once */
    CHECK(chan_count(up, ach, FAKE_DECLARE) == 1 && chan_count(up, ach, FAKE_CONSUME) == 1); /* its own */
    fake_done_all(up);
    CHECK(rig_count(&a, "RECEIPT") == 1);
    rig_feed(&b, "SUBSCRIBE\nid:s\ndestination:/topic/t\n\n");
    CHECK_EQ_INT(fake_count(up, FAKE_OPEN), opens + 2); /* the next one opens a group */
    rig_deinit(&a);
    rig_deinit(&b);
    CHECK_EQ_INT(fanout_groups(fo), 0);
    fanout_free(fo);
    fake_upstream_free(up);
}

/* Members leave by UNSUBSCRIBE, DISCONNECT or connection loss; the last one out releases the group's channel (which
 * cancels its consumer and deletes its owned queue). A member that leaves before consume-ok does not hold a RECEIPT. */
static void test_fanout_last_leaves(void)
{
    struct upstream *up = fake_upstream_new();
    struct fanout *fo = NULL;
    struct rig a, b;
    CHECK(fanout_new(NULL, up, &fo) == 0);
    fan_start(&a, up, fo, "app");
    fan_start(&b, up, fo, "app");
    rig_feed(&a, "SUBSCRIBE\nid:x\ndestination:/topic/t\n\n");
    struct upstream_chan *g = fake_last_chan(up);
    rig_feed(&b, "SUBSCRIBE\nid:y\ndestination:/topic/t\n\n");
    rig_feed(&a, "UNSUBSCRIBE\nid:x\nreceipt:u\n\n"); /* before consume-ok */
    CHECK(rig_count(&a, "RECEIPT") == 1);
    CHECK(chan_count(up, g, FAKE_RELEASE) == 0 && fanout_groups(fo) == 1);
    fake_open(g, NULL);
    fake_done_all(up);
    fake_deliver(g, "stomp-fanout", "m", NULL);
    CHECK(rig_count(&a, "MESSAGE") == 0 && rig_count(&b, "MESSAGE") == 1);
    rig_feed(&b, "DISCONNECT\nreceipt:bye\n\n");
    fake_timer_run();
    CHECK(b.closed);
    CHECK(chan_count(up, g, FAKE_RELEASE) == 1 && fanout_groups(fo) == 0);
    /* The delivery b got was settled before the release. */
    CHECK(chan_count(up, g, FAKE_ACK) == 1);
    /* A new subscriber makes a fresh group. */
    rig_feed(&a, "SUBSCRIBE\nid:z\ndestination:/topic/t\n\n");
    CHECK(fake_last_chan(up) != g && fanout_groups(fo) == 1);
    rig_deinit(&a); /* connection loss: the session is freed without UNSUBSCRIBE */
    CHECK_EQ_INT(fanout_groups(fo), 0);
    rig_deinit(&b);
    fanout_free(fo);
    fake_upstream_free(up);
}

/* A broker-side failure of the group reaches every member with the ERROR its own consumer would have given. */
static void test_fanout_failure_reaches_all(void)
{
    static const struct {
        int how; /* 0 connection lost, 1 channel error, 2 consumer cancelled, 3 open refused (connection cap) */
        const char *message;
    } cases[] = {
        {0, "message:Broker connection lost"},
        {1, "message:not_found"},
        {2, "message:Server cancelled subscription"},
        {3, "message:Too many broker connections"},
    };
    for (size_t k = 0; k < sizeof(cases) / sizeof(cases[0]); k++) {
        struct upstream *up = fake_upstream_new();
        struct fanout *fo = NULL;
        struct rig m[3];
        CHECK(fanout_new(NULL, up, &fo) == 0);
        for (int i = 0; i < 3; i++)
            fan_start(&m[i], up, fo, "app");
        struct upstream_chan *g = NULL;
        for (int i = 0; i < 3; i++) {
            rig_feed(&m[i], "SUBSCRIBE\nid:s\ndestination:/topic/t\nreceipt:r\n\n");
            if (i == 0)
                g = fake_last_chan(up);
        }
        struct upstream_error lim = {.kind = UPSTREAM_ERR_LIMIT, .name = "connection_limit", .text = "amqp_max_connections"};
        if (cases[k].how == 3) {
            fake_open(g, &lim);
        } else {
            fake_open(g, NULL);
            fake_done_all(up);
        }
        if (cases[k].how == 0)
            fake_close(g, UPSTREAM_ERR_CONNECTION, 320, "connection_forced", "CONNECTION_FORCED - shutdown");
        else if (cases[k].how == 1)
            fake_close(g, UPSTREAM_ERR_CHANNEL, 404, "not_found", "NOT_FOUND - no exchange 'x' in vhost '/'");
        else if (cases[k].how == 2)
            fake_cancel(g, "stomp-fanout");
        for (int i = 0; i < 3; i++) {
            CHECK(m[i].closed && rig_count(&m[i], "ERROR") == 1);
            CHECK(frame_has(rig_last(&m[i]), cases[k].message));
            if (cases[k].how == 2)
                CHECK(frame_has(rig_last(&m[i]), "subscription:s"));
        }
        CHECK_EQ_INT(fanout_groups(fo), 0);
        CHECK_EQ_INT(chan_count(up, g, FAKE_RELEASE), 1);
        for (int i = 0; i < 3; i++)
            rig_deinit(&m[i]);
        fanout_free(fo);
        fake_upstream_free(up);
    }
}

/* A SEND behind a SUBSCRIBE that joins a group still being set up waits for its consume-ok: on its own channel the bind
 * would have been ahead of the publish, and the message would reach the subscription. */
static void test_fanout_send_waits(void)
{
    struct upstream *up = fake_upstream_new();
    struct fanout *fo = NULL;
    struct rig a;
    CHECK(fanout_new(NULL, up, &fo) == 0);
    fan_start(&a, up, fo, "app");
    static const char both[] = "SUBSCRIBE\nid:s\ndestination:/topic/t\nreceipt:a\n\n\0SEND\ndestination:/topic/t\nreceipt:b\n\nx\0";
    rig_feed_n(&a, both, sizeof(both) - 1);
    struct upstream_chan *g = fake_last_chan(up);
    CHECK_EQ_INT(fake_count(up, FAKE_PUBLISH), 0);
    CHECK(a.paused);
    fake_open(g, NULL);
    fake_done_all(up); /* declare, bind, consume-ok */
    fake_timer_run();
    CHECK_EQ_INT(fake_count(up, FAKE_PUBLISH), 1);
    CHECK(rig_count(&a, "RECEIPT") == 1 && !a.paused);
    fake_done_all(up); /* the confirm */
    CHECK(rig_count(&a, "RECEIPT") == 2 && !a.closed);
    rig_deinit(&a);
    fanout_free(fo);
    fake_upstream_free(up);
}

/* Flow: the group's acks go while one member has room, whatever the others; when none has, they wait for a drain. A
 * member whose client is gone does not stop the others getting the delivery. */
static void test_fanout_slow_member(void)
{
    struct upstream *up = fake_upstream_new();
    struct fanout *fo = NULL;
    struct rig a, b;
    CHECK(fanout_new(NULL, up, &fo) == 0);
    fan_start(&a, up, fo, "app");
    fan_start(&b, up, fo, "app");
    rig_feed(&a, "SUBSCRIBE\nid:s\ndestination:/topic/t\n\n");
    struct upstream_chan *g = fake_last_chan(up);
    rig_feed(&b, "SUBSCRIBE\nid:s\ndestination:/topic/t\n\n");
    fake_open(g, NULL);
    fake_done_all(up);
    a.pending = a.conf.client_send_buffer_bytes + 1; /* a is slow */
    fake_deliver(g, "stomp-fanout", "1", NULL);
    fake_timer_run();
    CHECK_EQ_INT(chan_count(up, g, FAKE_ACK), 1); /* b has room */
    b.pending = b.conf.client_send_buffer_bytes + 1;
    fake_deliver(g, "stomp-fanout", "2", NULL);
    fake_timer_run();
    CHECK_EQ_INT(chan_count(up, g, FAKE_ACK), 1); /* nobody has: held, the prefetch window stops the broker */
    b.pending = 0;
    session_on_drain(b.s);
    fake_timer_run();
    CHECK_EQ_INT(chan_count(up, g, FAKE_ACK), 2);
    a.send_fails = true; /* a's client is gone (closed as too slow) */
    fake_deliver(g, "stomp-fanout", "3", NULL);
    CHECK(rig_count(&b, "MESSAGE") == 3 && rig_count(&a, "MESSAGE") == 2);
    rig_deinit(&a);
    rig_deinit(&b);
    fanout_free(fo);
    fake_upstream_free(up);
}

int main(void)
{
    RUN(test_frame_budget);
    RUN(test_input_held_before_connected);
    RUN(test_error_table);
    RUN(test_idle_holds_little);
    RUN(test_shared_header_array);
    RUN(test_connect_ok);
    RUN(test_connect_refused);
    RUN(test_before_connect_and_versions);
    RUN(test_receipts_in_order);
    RUN(test_nack_is_an_error);
    RUN(test_disconnect_waits);
    RUN(test_transactions);
    RUN(test_ack_modes);
    RUN(test_auto_settle_and_send_buffer);
    RUN(test_unsubscribe_race);
    RUN(test_flow_pause);
    RUN(test_heartbeats);
    RUN(test_timeouts);
    RUN(test_channel_lost);
    RUN(test_upstream_call_fails);
    RUN(test_split_input);
    RUN(test_temp_queues_bounded);
    RUN(test_error_quotes);
    RUN(test_owned_queues);
    RUN(test_send_amqp_limits);
    RUN(test_resubscribe_new_tag);
    RUN(test_message_headers_not_shadowed);
    RUN(test_tx_bytes_bounded);
    RUN(test_tx_checked_on_arrival);
    RUN(test_unconfirmed_bytes);
    RUN(test_pending_ops_bounded);
    RUN(test_failed_op_completes);
    RUN(test_parse_error_words);
    RUN(test_nack_10_and_no_id);
    RUN(test_oversize_delivery);
    RUN(test_exclusive_per_session);
    RUN(test_login_throttle);
    RUN(test_fanout_shared);
    RUN(test_fanout_from);
    RUN(test_fanout_setup_fails_solo);
    RUN(test_fanout_last_leaves);
    RUN(test_fanout_failure_reaches_all);
    RUN(test_fanout_send_waits);
    RUN(test_fanout_slow_member);
    CHECK_EQ_INT(fake_timer_live(), 0);
    return harness_done();
}
