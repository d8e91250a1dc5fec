/*
 * tests/unit/test-bench.c — the load generator's measuring parts (bench/stats.h) and its client side of RFC 6455
 * (bench/wsclient.h): percentiles within the histogram's precision, loss/duplicate bookkeeping, the 101 check, and
 * server frames read whole or only once complete, masked ones refused.
 */
#include <string.h>

#include "bench/stats.h"
#include "bench/wsclient.h"
#include "tests/unit/harness.h"
#include "ws/frame.h"
#include "ws/handshake.h"

static bool near(uint64_t got, uint64_t want)
{
    double d = (double)got - (double)want;
    return d < 0 ? -d <= want * 0.02 : d <= want * 0.02;
}

static void test_hist_quantiles(void)
{
    static struct bench_hist h, h2;
    bench_hist_reset(&h);
    CHECK_EQ_INT(bench_hist_quantile(&h, 0.5), 0);
    for (uint64_t us = 1; us <= 1000; us++)
        bench_hist_add(&h, us * 1000);
    CHECK_EQ_INT(h.count, 1000);
    CHECK_EQ_INT(h.max, 1000000);
    CHECK(near(bench_hist_quantile(&h, 0.5), 500000));
    CHECK(near(bench_hist_quantile(&h, 0.99), 990000));
    CHECK_EQ_INT(bench_hist_quantile(&h, 1.0), 1000000);
    /* small values are exact, huge ones land in the last bucket */
    bench_hist_reset(&h2);
    bench_hist_add(&h2, 7);
    CHECK_EQ_INT(bench_hist_quantile(&h2, 0.5), 7);
    bench_hist_add(&h2, UINT64_MAX / 2);
    bench_hist_merge(&h, &h2);
    CHECK_EQ_INT(h.count, 1002);
    CHECK_EQ_INT(h.max, UINT64_MAX / 2);
}

static void test_seen(void)
{
    struct bench_seen s = {0};
    for (uint64_t i = 0; i < 10000; i++)
        CHECK_EQ_INT(bench_seen_add(&s, i), 1);
    CHECK_EQ_INT(bench_seen_add(&s, 5), 0);
    CHECK_EQ_INT(bench_seen_add(&s, 1000000), 1);
    CHECK_EQ_INT(s.unique, 10001);
    CHECK_EQ_INT(s.dup, 1);
    bench_seen_deinit(&s);
    CHECK(s.bits == NULL);
}

static void test_handshake(void)
{
    uint64_t rnd[2] = {0x0123456789abcdefull, 0xfedcba9876543210ull};
    char key[BENCH_WS_KEY_LEN + 1];
    bench_ws_key(key, rnd);
    CHECK_EQ_INT(strlen(key), 24);
    CHECK(key[22] == '=' && key[23] == '=');
    char req[512];
    size_t n = bench_ws_request(req, sizeof(req), "h:1", "/ws", key, "v12.stomp", true);
    CHECK(n > 0 && strstr(req, "Sec-WebSocket-Protocol: v12.stomp\r\n") && strstr(req, "permessage-deflate"));
    CHECK(memcmp(req + n - 4, "\r\n\r\n", 4) == 0);
    CHECK_EQ_INT(bench_ws_request(req, 40, "h:1", "/ws", key, "v12.stomp", false), 0);

    char accept[WS_ACCEPT_KEY_LEN + 1], reply[512];
    CHECK_EQ_INT(ws_handshake_accept_key(key, strlen(key), accept), 0);
    int len = snprintf(reply, sizeof(reply),
                       "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                       "sec-websocket-accept: %s\r\nSec-WebSocket-Protocol: v12.stomp\r\n\r\n\x81\x01x",
                       accept);
    size_t used = 0;
    bool deflate = true;
    const char *reason = NULL;
    CHECK_EQ_INT(bench_ws_response(reply, (size_t)len - 10, key, &used, &deflate, &reason), 1);
    CHECK_EQ_INT(bench_ws_response(reply, (size_t)len, key, &used, &deflate, &reason), 0);
    CHECK_EQ_INT(used, (size_t)len - 3); /* the frame after the reply is not part of it */
    CHECK(!deflate);
    reply[strlen("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nsec-websocket-accept: ")] ^= 1;
    CHECK_EQ_INT(bench_ws_response(reply, (size_t)len, key, &used, &deflate, &reason), -1);
    const char *refused = "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n";
    CHECK_EQ_INT(bench_ws_response(refused, strlen(refused), key, &used, &deflate, &reason), -1);
}

static void test_frames(void)
{
    static uint8_t buf[70000];
    static const size_t sizes[] = {0, 5, 125, 126, 300, 65535, 65536};
    for (size_t k = 0; k < sizeof(sizes) / sizeof(sizes[0]); k++) {
        size_t hl = ws_frame_header_encode(buf, WS_OP_TEXT, true, false, sizes[k]);
        memset(buf + hl, 'x', sizes[k]);
        size_t total = hl + sizes[k], used = 0;
        struct bench_ws_frame f;
        const char *reason = NULL;
        /* every prefix is incomplete; the whole frame is read exactly */
        for (size_t cut = 0; cut < total; cut += 1 + cut / 3)
            CHECK_EQ_INT(bench_ws_frame_read(buf, cut, 1u << 20, &used, &f, &reason), 1);
        CHECK_EQ_INT(bench_ws_frame_read(buf, total, 1u << 20, &used, &f, &reason), 0);
        CHECK_EQ_INT(used, total);
        CHECK_EQ_INT(f.len, sizes[k]);
        CHECK(f.fin && !f.rsv1 && f.opcode == WS_OP_TEXT && f.payload == buf + hl);
        CHECK_EQ_INT(bench_ws_frame_read(buf, total, sizes[k] ? sizes[k] - 1 : 0, &used, &f, &reason), sizes[k] ? -1 : 0);
    }
    const uint8_t mask[4] = {1, 2, 3, 4};
    size_t n = ws_frame_client_encode(buf, sizeof(buf), WS_OP_TEXT, true, 0, mask, (const uint8_t *)"hi", 2);
    size_t used = 0;
    struct bench_ws_frame f;
    const char *reason = NULL;
    CHECK_EQ_INT(bench_ws_frame_read(buf, n, 1u << 20, &used, &f, &reason), -1);
    CHECK(reason != NULL);
}

int main(void)
{
    RUN(test_hist_quantiles);
    RUN(test_seen);
    RUN(test_handshake);
    RUN(test_frames);
    return harness_done();
}
