/*
 * tests/unit/test-ws-frame.c — the RFC 6455 frame decoder, encoder, masking and UTF-8 validator (ws/frame.h, ws/utf8.h).
 *
 * Every decoder input is fed three ways (whole, one byte at a time, random splits) with each chunk copied right before a
 * PROT_NONE page, and all three runs must give the same events and the same final result. Frames are built with
 * ws_frame_client_encode() or written out byte by byte where the RFC gives them (§5.7) or where they must be malformed.
 * permessage-deflate is exercised through fake inflate hooks so that the RSV1 and limit logic is tested without zlib.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "ws/deflate.h"
#include "ws/frame.h"
#include "ws/utf8.h"

static const uint8_t MASK[4] = {0x37, 0xfa, 0x21, 0x3d};

/* ---- building inputs ---- */

struct input {
    uint8_t b[140000];
    size_t len;
};

static void add(struct input *in, uint8_t op, bool fin, uint8_t rsv, const void *payload, size_t len)
{
    size_t n = ws_frame_client_encode(in->b + in->len, sizeof(in->b) - in->len, op, fin, rsv, MASK, payload, len);
    if (n == 0)
        abort();
    in->len += n;
}

static void add_str(struct input *in, uint8_t op, bool fin, const char *s)
{
    add(in, op, fin, 0, s, strlen(s));
}

static void add_raw(struct input *in, const void *p, size_t len)
{
    memcpy(in->b + in->len, p, len);
    in->len += len;
}

/* ---- running the decoder ---- */

#define MAX_EVENTS 16

struct rec {
    enum ws_event_type type;
    enum ws_opcode opcode;
    bool compressed;
    uint16_t code;
    uint8_t *data;
    size_t len;
};

struct run {
    struct rec ev[MAX_EVENTS];
    size_t n;
    int result; /* final: WS_NEED_MORE when everything was consumed without error */
    const char *reason;
};

static void run_free(struct run *r)
{
    for (size_t i = 0; i < r->n; i++)
        free(r->ev[i].data);
    memset(r, 0, sizeof(*r));
}

static void record(struct run *r, const struct ws_event *ev)
{
    if (r->n == MAX_EVENTS)
        abort();
    struct rec *x = &r->ev[r->n++];
    x->type = ev->type;
    x->opcode = ev->opcode;
    x->compressed = ev->compressed;
    x->code = ev->close_code;
    x->len = ev->len;
    x->data = malloc(ev->len + 1);
    CHECK(ev->data != NULL);
    if (ev->len)
        memcpy(x->data, ev->data, ev->len);
}

/* Feeds one chunk; returns false when the decoder failed (r->result set). */
static bool feed_chunk(struct ws_decoder *d, const uint8_t *p, size_t len, struct run *r)
{
    size_t off = 0;
    for (;;) {
        size_t consumed = 99999;
        struct ws_event ev;
        const char *reason = NULL;
        int rc = ws_decoder_feed(d, p + off, len - off, &consumed, &ev, &reason);
        CHECK(consumed <= len - off);
        off += consumed;
        if (rc == 0) {
            CHECK(ev.type != WS_EV_NONE);
            record(r, &ev);
            continue;
        }
        if (rc == WS_NEED_MORE) {
            CHECK_EQ_INT(off, len);
            return true;
        }
        CHECK(reason != NULL);
        r->result = rc;
        r->reason = reason;
        return false;
    }
}

static void run_mode(const uint8_t *in, size_t len, enum split_mode m, uint64_t max, ws_inflate_fn fn, struct run *r)
{
    struct guard_slot slot = {0};
    struct ws_decoder d;
    struct ws_limits lim = {.max_message_bytes = max};
    uint64_t seed = 0x1234 + len;
    struct ws_deflate *z = NULL;
    ws_decoder_init(&d, &lim);
    if (fn == ws_deflate_inflate) {
        /* the real permessage-deflate inflater, fresh per run, with context takeover */
        struct ws_deflate_config cfg;
        ws_deflate_config_init(&cfg);
        struct ws_deflate_params params = {.enabled = true, .server_max_window_bits = 15, .client_max_window_bits = 15};
        CHECK_EQ_INT(ws_deflate_new(&params, &cfg, &z), 0);
    }
    if (fn)
        ws_decoder_set_inflate(&d, fn, z);
    r->result = WS_NEED_MORE;
    size_t pos = 0;
    while (pos < len) {
        size_t n = split_next(m, len - pos, &seed);
        const uint8_t *chunk = guard_copy(&slot, in + pos, n);
        pos += n;
        if (!feed_chunk(&d, chunk, n, r))
            break;
    }
    if (r->result != WS_NEED_MORE) {
        /* sticky: the same error again */
        size_t c;
        struct ws_event ev;
        const char *reason = NULL;
        CHECK_EQ_INT(ws_decoder_feed(&d, (const uint8_t *)"\x81", 1, &c, &ev, &reason), r->result);
        CHECK(reason == r->reason);
        CHECK_EQ_INT(ws_decoder_get_state(&d), WS_DEC_FAILED);
    }
    guard_free(&slot);
    ws_decoder_deinit(&d);
    ws_decoder_deinit(&d); /* idempotent */
    ws_deflate_free(z);
}

/* Runs all three modes, checks they agree, and leaves the whole-input run in *out (caller frees). */
static void decode_all(const uint8_t *in, size_t len, uint64_t max, ws_inflate_fn fn, struct run *out)
{
    run_mode(in, len, SPLIT_WHOLE, max, fn, out);
    for (int m = SPLIT_BYTES; m < SPLIT_MODES; m++) {
        struct run r = {0};
        run_mode(in, len, (enum split_mode)m, max, fn, &r);
        CHECK_EQ_INT(r.result, out->result);
        CHECK_EQ_INT(r.n, out->n);
        for (size_t i = 0; i < r.n && i < out->n; i++) {
            CHECK_EQ_INT(r.ev[i].type, out->ev[i].type);
            CHECK_EQ_INT(r.ev[i].len, out->ev[i].len);
            CHECK_EQ_INT(r.ev[i].code, out->ev[i].code);
            CHECK(r.ev[i].len == out->ev[i].len && memcmp(r.ev[i].data, out->ev[i].data, r.ev[i].len) == 0);
        }
        if (r.result != out->result || r.n != out->n)
            fprintf(stderr, "  mode %s differs (%s)\n", split_mode_str((enum split_mode)m), r.reason ? r.reason : "");
        run_free(&r);
    }
}

/* Expects exactly an error `err` (after any events) and returns its close code. */
static uint16_t expect_error(const struct input *in, uint64_t max, ws_inflate_fn fn, int err)
{
    struct run r = {0};
    decode_all(in->b, in->len, max, fn, &r);
    CHECK_EQ_INT(r.result, err);
    if (r.result != err)
        fprintf(stderr, "  got %s (%s)\n", ws_error_str(r.result), r.reason ? r.reason : "");
    uint16_t code = ws_error_close_code(r.result);
    run_free(&r);
    return code;
}

static bool ev_is(const struct rec *e, enum ws_event_type t, const void *data, size_t len)
{
    return e->type == t && e->len == len && (len == 0 || memcmp(e->data, data, len) == 0);
}

/* Expects one event of type t with the given data, and no error. */
static void expect_one(const struct input *in, uint64_t max, ws_inflate_fn fn, enum ws_event_type t, const void *data, size_t len)
{
    struct run r = {0};
    decode_all(in->b, in->len, max, fn, &r);
    CHECK_EQ_INT(r.result, WS_NEED_MORE);
    CHECK_EQ_INT(r.n, 1);
    if (r.n == 1)
        CHECK(ev_is(&r.ev[0], t, data, len));
    if (r.result != WS_NEED_MORE)
        fprintf(stderr, "  error %s (%s)\n", ws_error_str(r.result), r.reason);
    run_free(&r);
}

#define BIG (1u << 20)

/* ---- RFC 6455 §5.7 examples ---- */

static void test_rfc_unmasked_rejected(void)
{
    static const uint8_t hello[] = {0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f};
    static const uint8_t frag[] = {0x01, 0x03, 0x48, 0x65, 0x6c, 0x80, 0x02, 0x6c, 0x6f};
    static const uint8_t ping[] = {0x89, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f};
    struct input in = {.len = 0};
    add_raw(&in, hello, sizeof(hello));
    CHECK_EQ_INT(expect_error(&in, BIG, NULL, WS_E_PROTOCOL), 1002);
    in.len = 0;
    add_raw(&in, frag, sizeof(frag));
    CHECK_EQ_INT(expect_error(&in, BIG, NULL, WS_E_PROTOCOL), 1002);
    in.len = 0;
    add_raw(&in, ping, sizeof(ping));
    CHECK_EQ_INT(expect_error(&in, BIG, NULL, WS_E_PROTOCOL), 1002);
}

static void test_rfc_masked_hello(void)
{
    static const uint8_t masked[] = {0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58};
    static const uint8_t pong[] = {0x8a, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58};
    struct input in = {.len = 0};
    add_raw(&in, masked, sizeof(masked));
    expect_one(&in, BIG, NULL, WS_EV_MESSAGE, "Hello", 5);
    /* our client encoder produces exactly the RFC bytes */
    struct input enc = {.len = 0};
    add_str(&enc, WS_OP_TEXT, true, "Hello");
    CHECK(enc.len == sizeof(masked) && memcmp(enc.b, masked, sizeof(masked)) == 0);
    in.len = 0;
    add_raw(&in, pong, sizeof(pong));
    expect_one(&in, BIG, NULL, WS_EV_PONG, "Hello", 5);
}

static void test_rfc_fragmented_and_ping(void)
{
    struct input in = {.len = 0};
    add_str(&in, WS_OP_TEXT, false, "Hel");
    add_str(&in, WS_OP_CONT, true, "lo");
    expect_one(&in, BIG, NULL, WS_EV_MESSAGE, "Hello", 5);
    in.len = 0;
    add_str(&in, WS_OP_PING, true, "Hello");
    expect_one(&in, BIG, NULL, WS_EV_PING, "Hello", 5);
}

static void test_rfc_lengths(void)
{
    static uint8_t payload[65536];
    for (size_t i = 0; i < sizeof(payload); i++)
        payload[i] = (uint8_t)(i * 7);
    struct input in = {.len = 0};
    add(&in, WS_OP_BINARY, true, 0, payload, 256);
    static const uint8_t h256[] = {0x82, 0xFE, 0x01, 0x00};
    CHECK(memcmp(in.b, h256, 4) == 0);
    expect_one(&in, BIG, NULL, WS_EV_MESSAGE, payload, 256);
    in.len = 0;
    add(&in, WS_OP_BINARY, true, 0, payload, 65536);
    static const uint8_t h64k[] = {0x82, 0xFF, 0, 0, 0, 0, 0, 1, 0, 0};
    CHECK(memcmp(in.b, h64k, 10) == 0);
    expect_one(&in, BIG, NULL, WS_EV_MESSAGE, payload, 65536);
    in.len = 0;
    add(&in, WS_OP_BINARY, true, 0, payload, 125);
    add(&in, WS_OP_BINARY, true, 0, payload, 126);
    add(&in, WS_OP_BINARY, true, 0, payload, 65535);
    add(&in, WS_OP_BINARY, true, 0, payload, 0);
    struct run r = {0};
    decode_all(in.b, in.len, BIG, NULL, &r);
    CHECK_EQ_INT(r.result, WS_NEED_MORE);
    CHECK_EQ_INT(r.n, 4);
    if (r.n == 4) {
        CHECK(ev_is(&r.ev[0], WS_EV_MESSAGE, payload, 125));
        CHECK(ev_is(&r.ev[1], WS_EV_MESSAGE, payload, 126));
        CHECK(ev_is(&r.ev[2], WS_EV_MESSAGE, payload, 65535));
        CHECK(ev_is(&r.ev[3], WS_EV_MESSAGE, "", 0));
        CHECK_EQ_INT(r.ev[0].opcode, WS_OP_BINARY);
    }
    run_free(&r);
}

/* ---- framing rules ---- */

static void test_interleaved_control(void)
{
    struct input in = {.len = 0};
    add_str(&in, WS_OP_TEXT, false, "Hel");
    add_str(&in, WS_OP_PING, true, "p1");
    add_str(&in, WS_OP_CONT, false, "");
    add_str(&in, WS_OP_PONG, true, "");
    add_str(&in, WS_OP_CONT, true, "lo");
    add_str(&in, WS_OP_BINARY, true, "next");
    struct run r = {0};
    decode_all(in.b, in.len, BIG, NULL, &r);
    CHECK_EQ_INT(r.result, WS_NEED_MORE);
    CHECK_EQ_INT(r.n, 4);
    if (r.n == 4) {
        CHECK(ev_is(&r.ev[0], WS_EV_PING, "p1", 2));
        CHECK(ev_is(&r.ev[1], WS_EV_PONG, "", 0));
        CHECK(ev_is(&r.ev[2], WS_EV_MESSAGE, "Hello", 5));
        CHECK_EQ_INT(r.ev[2].opcode, WS_OP_TEXT);
        CHECK(ev_is(&r.ev[3], WS_EV_MESSAGE, "next", 4));
        CHECK_EQ_INT(r.ev[3].opcode, WS_OP_BINARY);
    }
    run_free(&r);
}

static void test_fragmentation_errors(void)
{
    struct input in = {.len = 0};
    add_str(&in, WS_OP_CONT, true, "x");
    CHECK_EQ_INT(expect_error(&in, BIG, NULL, WS_E_PROTOCOL), 1002);
    in.len = 0;
    add_str(&in, WS_OP_TEXT, false, "a");
    add_str(&in, WS_OP_TEXT, true, "b");
    CHECK_EQ_INT(expect_error(&in, BIG, NULL, WS_E_PROTOCOL), 1002);
    in.len = 0;
    add_str(&in, WS_OP_BINARY, false, "a");
    add_str(&in, WS_OP_BINARY, true, "b");
    CHECK_EQ_INT(expect_error(&in, BIG, NULL, WS_E_PROTOCOL), 1002);
    in.len = 0; /* a completed message then a stray continuation */
    add_str(&in, WS_OP_TEXT, true, "a");
    add_str(&in, WS_OP_CONT, true, "b");
    CHECK_EQ_INT(expect_error(&in, BIG, NULL, WS_E_PROTOCOL), 1002);
}

static void test_opcodes_and_rsv(void)
{
    static const uint8_t bad_ops[] = {3, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF};
    for (size_t i = 0; i < sizeof(bad_ops); i++) {
        struct input in = {.len = 0};
        add(&in, bad_ops[i], true, 0, "x", 1);
        CHECK_EQ_INT(expect_error(&in, BIG, NULL, WS_E_PROTOCOL), 1002);
    }
    for (uint8_t rsv = 1; rsv < 8; rsv++) {
        struct input in = {.len = 0};
        add(&in, WS_OP_TEXT, true, rsv, "x", 1);
        CHECK_EQ_INT(expect_error(&in, BIG, NULL, WS_E_PROTOCOL), 1002);
        in.len = 0;
        add(&in, WS_OP_PING, true, rsv, "x", 1);
        CHECK_EQ_INT(expect_error(&in, BIG, NULL, WS_E_PROTOCOL), 1002);
    }
}

static void test_control_rules(void)
{
    uint8_t p[126];
    memset(p, 'a', sizeof(p));
    struct input in = {.len = 0};
    add(&in, WS_OP_PING, true, 0, p, 125);
    expect_one(&in, BIG, NULL, WS_EV_PING, p, 125);
    in.len = 0;
    add(&in, WS_OP_PING, true, 0, p, 126);
    CHECK_EQ_INT(expect_error(&in, BIG, NULL, WS_E_PROTOCOL), 1002);
    in.len = 0;
    add(&in, WS_OP_PONG, false, 0, p, 1);
    CHECK_EQ_INT(expect_error(&in, BIG, NULL, WS_E_PROTOCOL), 1002);
    in.len = 0;
    add(&in, WS_OP_CLOSE, false, 0, "\x03\xe8", 2);
    CHECK_EQ_INT(expect_error(&in, BIG, NULL, WS_E_PROTOCOL), 1002);
    /* control frames are not counted against the message limit */
    in.len = 0;
    add(&in, WS_OP_PING, true, 0, p, 100);
    expect_one(&in, 1, NULL, WS_EV_PING, p, 100);
}

static void test_length_encoding(void)
{
    /* 5 encoded in 16 bits, 200 in 64 bits, MSB set */
    static const uint8_t nonmin16[] = {0x82, 0xFE, 0x00, 0x05, 1, 2, 3, 4};
    static const uint8_t nonmin64[] = {0x82, 0xFF, 0, 0, 0, 0, 0, 0, 0, 200, 1, 2, 3, 4};
    static const uint8_t nonmin64b[] = {0x82, 0xFF, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF, 1, 2, 3, 4};
    static const uint8_t msb[] = {0x82, 0xFF, 0x80, 0, 0, 0, 0, 0, 0, 1, 1, 2, 3, 4};
    const struct {
        const uint8_t *p;
        size_t n;
    } cases[] = {{nonmin16, sizeof(nonmin16)}, {nonmin64, sizeof(nonmin64)}, {nonmin64b, sizeof(nonmin64b)}, {msb, sizeof(msb)}};
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct input in = {.len = 0};
        add_raw(&in, cases[i].p, cases[i].n);
        CHECK_EQ_INT(expect_error(&in, UINT64_MAX, NULL, WS_E_PROTOCOL), 1002);
    }
}

static void test_too_big(void)
{
    struct input in = {.len = 0};
    add_str(&in, WS_OP_TEXT, true, "0123456789");
    expect_one(&in, 10, NULL, WS_EV_MESSAGE, "0123456789", 10);
    in.len = 0;
    add_str(&in, WS_OP_TEXT, true, "0123456789a");
    CHECK_EQ_INT(expect_error(&in, 10, NULL, WS_E_TOO_BIG), 1009);
    /* rejected from the header alone, before any payload arrives */
    in.len = 2;
    CHECK_EQ_INT(expect_error(&in, 10, NULL, WS_E_TOO_BIG), 1009);
    /* a declared 2^62 length with nothing behind it */
    static const uint8_t huge[] = {0x82, 0xFF, 0x40, 0, 0, 0, 0, 0, 0, 0};
    in.len = 0;
    add_raw(&in, huge, sizeof(huge));
    CHECK_EQ_INT(expect_error(&in, BIG, NULL, WS_E_TOO_BIG), 1009);
    /* reassembled size counts */
    in.len = 0;
    add_str(&in, WS_OP_BINARY, false, "012345");
    add_str(&in, WS_OP_CONT, true, "67890");
    CHECK_EQ_INT(expect_error(&in, 10, NULL, WS_E_TOO_BIG), 1009);
    in.len = 0;
    add_str(&in, WS_OP_BINARY, false, "01234");
    add_str(&in, WS_OP_CONT, true, "56789");
    add_str(&in, WS_OP_BINARY, true, "0123456789");
    struct run r = {0};
    decode_all(in.b, in.len, 10, NULL, &r);
    CHECK_EQ_INT(r.result, WS_NEED_MORE);
    CHECK_EQ_INT(r.n, 2);
    run_free(&r);
}

/* ---- UTF-8 in text messages ---- */

static void test_text_utf8(void)
{
    struct input in = {.len = 0};
    add_str(&in, WS_OP_TEXT, true, "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80");
    expect_one(&in, BIG, NULL, WS_EV_MESSAGE, "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80", 14);
    /* a character split across fragments */
    in.len = 0;
    add_str(&in, WS_OP_TEXT, false, "\xe2");
    add_str(&in, WS_OP_CONT, false, "\x82");
    add_str(&in, WS_OP_CONT, true, "\xac");
    expect_one(&in, BIG, NULL, WS_EV_MESSAGE, "\xe2\x82\xac", 3);
    /* incomplete at the end of the message */
    in.len = 0;
    add_str(&in, WS_OP_TEXT, true, "ab\xe2\x82");
    CHECK_EQ_INT(expect_error(&in, BIG, NULL, WS_E_UTF8), 1007);
    /* invalid bytes in binary messages are fine */
    in.len = 0;
    add_str(&in, WS_OP_BINARY, true, "\xff\xfe");
    expect_one(&in, BIG, NULL, WS_EV_MESSAGE, "\xff\xfe", 2);
    /* fail fast: the bad byte is in the first frame of an unfinished message, mid-frame */
    in.len = 0;
    char long_text[300];
    memset(long_text, 'a', sizeof(long_text));
    long_text[10] = (char)0xC0;
    add(&in, WS_OP_TEXT, false, 0, long_text, sizeof(long_text));
    in.len -= 200; /* the frame is not even complete */
    CHECK_EQ_INT(expect_error(&in, BIG, NULL, WS_E_UTF8), 1007);
    static const char *const bad[] = {"\xed\xa0\x80",         "\xc0\xaf", "\xe0\x80\xaf", "\xf4\x90\x80\x80",
                                      "\xf8\x88\x80\x80\x80", "\x80"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        in.len = 0;
        add_str(&in, WS_OP_TEXT, false, "ok");
        add_str(&in, WS_OP_CONT, true, bad[i]);
        CHECK_EQ_INT(expect_error(&in, BIG, NULL, WS_E_UTF8), 1007);
    }
}

/* ---- close frames ---- */

static void close_case(const void *payload, size_t len, int err, uint16_t code)
{
    struct input in = {.len = 0};
    add(&in, WS_OP_CLOSE, true, 0, payload, len);
    if (err) {
        CHECK_EQ_INT(expect_error(&in, BIG, NULL, err), ws_error_close_code(err));
        return;
    }
    struct run r = {0};
    decode_all(in.b, in.len, BIG, NULL, &r);
    CHECK_EQ_INT(r.result, WS_NEED_MORE);
    CHECK_EQ_INT(r.n, 1);
    if (r.n == 1) {
        CHECK_EQ_INT(r.ev[0].type, WS_EV_CLOSE);
        CHECK_EQ_INT(r.ev[0].code, code);
        CHECK_EQ_INT(r.ev[0].len, len > 2 ? len - 2 : 0);
    }
    run_free(&r);
}

static void test_close(void)
{
    close_case("", 0, 0, 1005);
    close_case("\x03", 1, WS_E_PROTOCOL, 0);
    close_case("\x03\xe8", 2, 0, 1000);
    close_case("\x03\xe8"
               "bye",
               5, 0, 1000);
    close_case("\x03\xe8"
               "\xce\xba\xe1\xbd\xb9",
               7, 0, 1000);
    close_case("\x03\xe8"
               "\xce",
               3, WS_E_UTF8, 0);
    close_case("\x03\xe8"
               "\xed\xa0\x80",
               5, WS_E_UTF8, 0);
    static const uint16_t valid[] = {1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010,
                                     1011, 1012, 1013, 1014, 3000, 3999, 4000, 4999};
    static const uint16_t invalid[] = {0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535};
    for (size_t i = 0; i < sizeof(valid) / sizeof(valid[0]); i++) {
        uint8_t p[2] = {(uint8_t)(valid[i] >> 8), (uint8_t)valid[i]};
        close_case(p, 2, 0, valid[i]);
        CHECK(ws_close_code_is_valid(valid[i]));
    }
    for (size_t i = 0; i < sizeof(invalid) / sizeof(invalid[0]); i++) {
        uint8_t p[2] = {(uint8_t)(invalid[i] >> 8), (uint8_t)invalid[i]};
        close_case(p, 2, WS_E_PROTOCOL, 0);
        CHECK(!ws_close_code_is_valid(invalid[i]));
    }
}

static void test_after_close_discarded(void)
{
    struct input in = {.len = 0};
    add_str(&in, WS_OP_TEXT, false, "partial");
    add(&in, WS_OP_CLOSE, true, 0, "\x03\xe9", 2);
    add_str(&in, WS_OP_TEXT, true, "ignored");
    add_raw(&in, "\xff\xff garbage", 10);
    struct run r = {0};
    decode_all(in.b, in.len, BIG, NULL, &r);
    CHECK_EQ_INT(r.result, WS_NEED_MORE);
    CHECK_EQ_INT(r.n, 1);
    if (r.n == 1) {
        CHECK_EQ_INT(r.ev[0].type, WS_EV_CLOSE);
        CHECK_EQ_INT(r.ev[0].code, 1001);
    }
    run_free(&r);
}

/* One event per call: consumed stops right after each frame. */
static void test_one_event_per_call(void)
{
    struct input in = {.len = 0};
    add_str(&in, WS_OP_TEXT, true, "a");
    size_t first = in.len;
    add_str(&in, WS_OP_PING, true, "b");
    struct ws_limits lim = {.max_message_bytes = 100};
    struct ws_decoder d;
    ws_decoder_init(&d, &lim);
    size_t c;
    struct ws_event ev;
    const char *reason = NULL;
    CHECK_EQ_INT(ws_decoder_feed(&d, in.b, in.len, &c, &ev, &reason), 0);
    CHECK_EQ_INT(c, first);
    CHECK_EQ_INT(ev.type, WS_EV_MESSAGE);
    CHECK_EQ_INT(ws_decoder_get_state(&d), WS_DEC_HEADER);
    CHECK_EQ_INT(ws_decoder_feed(&d, in.b + c, in.len - c, &c, &ev, &reason), 0);
    CHECK_EQ_INT(ev.type, WS_EV_PING);
    CHECK_EQ_INT(ws_decoder_feed(&d, in.b, 0, &c, &ev, &reason), WS_NEED_MORE);
    CHECK_EQ_INT(c, 0);
    CHECK_EQ_INT(ws_decoder_feed(&d, in.b, 1, &c, &ev, &reason), WS_NEED_MORE);
    CHECK_EQ_INT(ws_decoder_get_state(&d), WS_DEC_HEADER);
    CHECK_EQ_INT(ws_decoder_feed(&d, in.b + 1, 1, &c, &ev, &reason), WS_NEED_MORE);
    CHECK_EQ_INT(ws_decoder_get_state(&d), WS_DEC_MASKKEY);
    CHECK(strcmp(ws_decoder_state_str(WS_DEC_PAYLOAD), "PAYLOAD") == 0);
    CHECK(strcmp(ws_event_type_str(WS_EV_CLOSE), "CLOSE") == 0);
    ws_decoder_deinit(&d);
}

/* ---- deflate hook (fake inflaters) ---- */

/* Identity "inflater", which also checks the fin protocol: fin exactly once at the end, len 0. */
static int fake_identity(struct ws_deflate *z, const uint8_t *in, size_t len, bool fin, struct ws_buf *out, const char **reason)
{
    (void)z;
    if (fin)
        CHECK_EQ_INT(len, 0);
    if (len == 0)
        return 0;
    int r = ws_buf_reserve(out, len);
    if (r != 0) {
        *reason = "too big";
        return r;
    }
    memcpy(out->data + out->len, in, len);
    out->len += len;
    return 0;
}

/* Doubles every byte: the inflated size exceeds the wire size. */
static int fake_double(struct ws_deflate *z, const uint8_t *in, size_t len, bool fin, struct ws_buf *out, const char **reason)
{
    (void)z;
    (void)fin;
    for (size_t i = 0; i < len; i++) {
        int r = ws_buf_reserve(out, 2);
        if (r != 0) {
            *reason = "inflated message too big";
            return r;
        }
        out->data[out->len++] = in[i];
        out->data[out->len++] = in[i];
    }
    return 0;
}

static int fake_corrupt(struct ws_deflate *z, const uint8_t *in, size_t len, bool fin, struct ws_buf *out, const char **reason)
{
    (void)z, (void)in, (void)len, (void)fin, (void)out;
    *reason = "corrupt";
    return WS_E_PAYLOAD;
}

static void test_deflate_hook(void)
{
    struct input in = {.len = 0};
    add(&in, WS_OP_TEXT, false, 4, "Hel", 3);
    add_str(&in, WS_OP_PING, true, "");
    add(&in, WS_OP_CONT, true, 0, "lo", 2);
    add(&in, WS_OP_BINARY, true, 0, "raw", 3);
    struct run r = {0};
    decode_all(in.b, in.len, BIG, fake_identity, &r);
    CHECK_EQ_INT(r.result, WS_NEED_MORE);
    CHECK_EQ_INT(r.n, 3);
    if (r.n == 3) {
        CHECK(ev_is(&r.ev[1], WS_EV_MESSAGE, "Hello", 5));
        CHECK(r.ev[1].compressed);
        CHECK(ev_is(&r.ev[2], WS_EV_MESSAGE, "raw", 3));
        CHECK(!r.ev[2].compressed);
    }
    run_free(&r);
    /* a large compressed message crosses the unmask scratch buffer */
    static uint8_t big[20000];
    for (size_t i = 0; i < sizeof(big); i++)
        big[i] = (uint8_t)('a' + i % 26);
    in.len = 0;
    add(&in, WS_OP_TEXT, true, 4, big, sizeof(big));
    expect_one(&in, BIG, fake_identity, WS_EV_MESSAGE, big, sizeof(big));
    /* RSV1 on a continuation or a control frame */
    in.len = 0;
    add(&in, WS_OP_TEXT, false, 4, "a", 1);
    add(&in, WS_OP_CONT, true, 4, "b", 1);
    CHECK_EQ_INT(expect_error(&in, BIG, fake_identity, WS_E_PROTOCOL), 1002);
    in.len = 0;
    add(&in, WS_OP_PING, true, 4, "", 0);
    CHECK_EQ_INT(expect_error(&in, BIG, fake_identity, WS_E_PROTOCOL), 1002);
    /* the limit applies to the inflated size */
    in.len = 0;
    add(&in, WS_OP_BINARY, true, 4, "012345", 6);
    CHECK_EQ_INT(expect_error(&in, 10, fake_double, WS_E_TOO_BIG), 1009);
    in.len = 0;
    add(&in, WS_OP_BINARY, true, 4, "01234", 5);
    expect_one(&in, 10, fake_double, WS_EV_MESSAGE, "0011223344", 10);
    /* UTF-8 checked on the inflated bytes, corrupt data → 1007 */
    in.len = 0;
    add(&in, WS_OP_TEXT, true, 4, "ok\xff", 3);
    CHECK_EQ_INT(expect_error(&in, BIG, fake_identity, WS_E_UTF8), 1007);
    in.len = 0;
    add(&in, WS_OP_BINARY, true, 4, "x", 1);
    CHECK_EQ_INT(expect_error(&in, BIG, fake_corrupt, WS_E_PAYLOAD), 1007);
}

/* Writes 1000 bytes of 'x' per input byte: a bomb's ratio. */
static int fake_bomb(struct ws_deflate *z, const uint8_t *in, size_t len, bool fin, struct ws_buf *out, const char **reason)
{
    (void)z, (void)in, (void)fin;
    int r = ws_buf_reserve(out, len * 1000);
    if (r != 0) {
        *reason = "inflated message too big";
        return r;
    }
    memset(out->data + out->len, 'x', len * 1000);
    out->len += len * 1000;
    return 0;
}

/* Feeds `in` whole to a decoder with `lim` and hook `fn`; returns the result, *events the events delivered. */
static int feed_with(struct ws_decoder *d, const struct input *in, size_t *events, const char **reason)
{
    size_t off = 0;
    *events = 0;
    for (;;) {
        size_t used = 0;
        struct ws_event ev;
        int r = ws_decoder_feed(d, in->b + off, in->len - off, &used, &ev, reason);
        off += used;
        if (r != 0)
            return r;
        (*events)++;
    }
}

/* ws_decoder_set_limits(): the bound before login, then the normal one (issue 7), and the inflation ratio. */
static void test_limits_change_and_ratio(void)
{
    struct input in = {.len = 0};
    struct ws_decoder d;
    struct ws_limits small = {.max_message_bytes = 16}, big = {.max_message_bytes = 64};
    size_t n;
    const char *reason = NULL;
    static const char s20[] = "0123456789abcdefghij", s40[] = "0123456789abcdefghij0123456789abcdefghij";
    /* refused at the small bound from the header alone */
    ws_decoder_init(&d, &small);
    add_str(&in, WS_OP_TEXT, true, s20);
    in.len = 2;
    CHECK_EQ_INT(feed_with(&d, &in, &n, &reason), WS_E_TOO_BIG);
    ws_decoder_deinit(&d);
    /* raised between messages: the next message may use it */
    ws_decoder_init(&d, &small);
    in.len = 0;
    add_str(&in, WS_OP_TEXT, true, "0123456789");
    CHECK_EQ_INT(feed_with(&d, &in, &n, &reason), WS_NEED_MORE);
    CHECK_EQ_INT(n, 1);
    ws_decoder_set_limits(&d, &big);
    in.len = 0;
    add_str(&in, WS_OP_TEXT, true, s40);
    CHECK_EQ_INT(feed_with(&d, &in, &n, &reason), WS_NEED_MORE);
    CHECK_EQ_INT(n, 1);
    in.len = 0;
    add_str(&in, WS_OP_TEXT, true, "0123456789abcdefghij0123456789abcdefghij0123456789abcdefghij01234");
    CHECK_EQ_INT(feed_with(&d, &in, &n, &reason), WS_E_TOO_BIG);
    ws_decoder_deinit(&d);

    /* ratio: 10 compressed bytes inflating to 10000 */
    struct {
        uint32_t ratio;
        uint64_t min;
        int want;
    } cases[] = {
        {100, 4096, WS_E_TOO_BIG},  /* 1000:1 over 4 KiB */
        {0, 4096, WS_NEED_MORE},    /* check off */
        {2000, 4096, WS_NEED_MORE}, /* ratio allowed */
        {100, 20000, WS_NEED_MORE}, /* not large enough to matter */
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct ws_limits lim = {
            .max_message_bytes = BIG, .max_inflate_ratio = cases[i].ratio, .inflate_ratio_min_bytes = cases[i].min};
        ws_decoder_init(&d, &lim);
        ws_decoder_set_inflate(&d, fake_bomb, NULL);
        in.len = 0;
        add(&in, WS_OP_BINARY, true, 4, "0123456789", 10);
        reason = NULL;
        CHECK_EQ_INT(feed_with(&d, &in, &n, &reason), cases[i].want);
        if (cases[i].want == WS_E_TOO_BIG) {
            CHECK(reason && strcmp(reason, "compression ratio too high") == 0);
            CHECK_EQ_INT(n, 0);
        } else {
            CHECK_EQ_INT(n, 1);
            CHECK_EQ_INT(ws_decoder_inflated_bytes(&d), 10000);
        }
        ws_decoder_deinit(&d);
    }
}

/* RFC 7692 §7.2.3.1-2 examples through the real inflater: one frame, fragmented, and context takeover. */
static void test_rfc7692_examples(void)
{
    static const uint8_t hello[] = {0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00};
    static const uint8_t hello2[] = {0xf2, 0x00, 0x11, 0x00, 0x00};
    struct input in = {.len = 0};
    add(&in, WS_OP_TEXT, true, 4, hello, sizeof(hello));
    expect_one(&in, BIG, ws_deflate_inflate, WS_EV_MESSAGE, "Hello", 5);
    in.len = 0;
    add(&in, WS_OP_TEXT, false, 4, hello, 3);
    add(&in, WS_OP_PING, true, 0, "", 0);
    add(&in, WS_OP_CONT, true, 0, hello + 3, sizeof(hello) - 3);
    add(&in, WS_OP_TEXT, true, 4, hello2, sizeof(hello2));
    struct run r = {0};
    decode_all(in.b, in.len, BIG, ws_deflate_inflate, &r);
    CHECK_EQ_INT(r.result, WS_NEED_MORE);
    CHECK_EQ_INT(r.n, 3);
    if (r.n == 3) {
        CHECK(ev_is(&r.ev[1], WS_EV_MESSAGE, "Hello", 5) && r.ev[1].compressed);
        CHECK(ev_is(&r.ev[2], WS_EV_MESSAGE, "Hello", 5) && r.ev[2].compressed);
    }
    run_free(&r);
    /* the inflated size is what counts against the limit */
    struct ws_deflate_config cfg;
    ws_deflate_config_init(&cfg);
    struct ws_deflate_params params = {.enabled = true, .server_max_window_bits = 15, .client_max_window_bits = 15};
    struct ws_deflate *z = NULL;
    struct ws_buf out;
    static uint8_t zeros[10000];
    const char *reason = NULL;
    ws_buf_init(&out, sizeof(zeros));
    CHECK_EQ_INT(ws_deflate_new(&params, &cfg, &z), 0);
    CHECK_EQ_INT(ws_deflate_compress(z, zeros, sizeof(zeros), &out, &reason), 0);
    CHECK(out.len < 100);
    in.len = 0;
    add(&in, WS_OP_BINARY, true, 4, out.data, out.len);
    CHECK_EQ_INT(expect_error(&in, 9999, ws_deflate_inflate, WS_E_TOO_BIG), 1009);
    expect_one(&in, 10000, ws_deflate_inflate, WS_EV_MESSAGE, zeros, sizeof(zeros));
    ws_buf_deinit(&out);
    ws_deflate_free(z);
}

/* ---- encoder ---- */

static void test_header_encode(void)
{
    uint8_t h[WS_FRAME_HEADER_MAX];
    CHECK_EQ_INT(ws_frame_header_encode(h, WS_OP_TEXT, true, false, 5), 2);
    CHECK(h[0] == 0x81 && h[1] == 0x05);
    CHECK_EQ_INT(ws_frame_header_encode(h, WS_OP_BINARY, true, false, 125), 2);
    CHECK(h[1] == 125);
    CHECK_EQ_INT(ws_frame_header_encode(h, WS_OP_BINARY, true, true, 126), 4);
    CHECK(h[0] == 0xC2 && h[1] == 126 && h[2] == 0 && h[3] == 126);
    CHECK_EQ_INT(ws_frame_header_encode(h, WS_OP_BINARY, false, false, 65535), 4);
    CHECK(h[0] == 0x02 && h[2] == 0xFF && h[3] == 0xFF);
    CHECK_EQ_INT(ws_frame_header_encode(h, WS_OP_CONT, true, false, 65536), 10);
    static const uint8_t e[] = {0x80, 127, 0, 0, 0, 0, 0, 1, 0, 0};
    CHECK(memcmp(h, e, 10) == 0);
}

static void test_control_encode(void)
{
    uint8_t f[WS_CONTROL_FRAME_MAX];
    size_t n = ws_frame_close_encode(f, 1000, "bye", 3);
    CHECK_EQ_INT(n, 7);
    CHECK(memcmp(f,
                 "\x88\x05\x03\xe8"
                 "bye",
                 7) == 0);
    CHECK_EQ_INT(ws_frame_close_encode(f, 0, "ignored", 7), 2);
    CHECK(f[0] == 0x88 && f[1] == 0);
    /* 100 × "é" (200 bytes) is cut to 61 characters (122 bytes), never mid-character */
    char reason[200];
    for (int i = 0; i < 100; i++)
        memcpy(reason + 2 * i, "\xc3\xa9", 2);
    n = ws_frame_close_encode(f, 1011, reason, sizeof(reason));
    CHECK_EQ_INT(n, 2 + 2 + 122);
    CHECK(ws_utf8_valid(f + 4, n - 4));
    /* invalid UTF-8 in the reason is cut at the bad byte */
    n = ws_frame_close_encode(f, 1002,
                              "ab\xff"
                              "cd",
                              5);
    CHECK_EQ_INT(n, 6);
    uint8_t p[200];
    memset(p, 'x', sizeof(p));
    n = ws_frame_ping_encode(f, p, sizeof(p));
    CHECK_EQ_INT(n, 127);
    CHECK(f[0] == 0x89 && f[1] == 125);
    n = ws_frame_pong_encode(f, (const uint8_t *)"Hello", 5);
    CHECK(n == 7 && memcmp(f, "\x8a\x05Hello", 7) == 0);
    CHECK_EQ_INT(ws_frame_client_encode(f, 10, WS_OP_TEXT, true, 0, MASK, (const uint8_t *)"Hello", 5), 0);
}

static void test_mask_apply(void)
{
    uint8_t buf[100], ref[100];
    for (unsigned pos = 0; pos < 4; pos++) {
        for (size_t len = 0; len <= 40; len++) {
            for (size_t off = 0; off < 3; off++) {
                for (size_t i = 0; i < sizeof(buf); i++)
                    buf[i] = ref[i] = (uint8_t)(i * 31 + 7);
                for (size_t i = 0; i < len; i++)
                    ref[off + i] ^= MASK[(pos + i) & 3];
                unsigned next = ws_mask_apply(buf + off, len, MASK, pos);
                CHECK_EQ_INT(next, (pos + len) & 3);
                CHECK(memcmp(buf, ref, sizeof(buf)) == 0);
            }
        }
    }
}

/* ---- UTF-8 validator ---- */

static void utf8_case(const char *s, size_t len, bool valid)
{
    CHECK(ws_utf8_valid((const uint8_t *)s, len) == valid);
    /* every two-way split agrees with the one-shot answer */
    for (size_t cut = 0; cut <= len; cut++) {
        struct ws_utf8 u;
        ws_utf8_init(&u);
        bool ok = ws_utf8_feed(&u, (const uint8_t *)s, cut, NULL) == 0 &&
                  ws_utf8_feed(&u, (const uint8_t *)s + cut, len - cut, NULL) == 0 && ws_utf8_complete(&u);
        CHECK(ok == valid);
    }
}

static void test_utf8(void)
{
    utf8_case("", 0, true);
    utf8_case("plain ascii, longer than eight bytes", 36, true);
    utf8_case("\x7f", 1, true);
    utf8_case("\xc2\x80\xdf\xbf", 4, true);
    utf8_case("\xe0\xa0\x80\xef\xbf\xbf", 6, true);
    utf8_case("\xed\x9f\xbf\xee\x80\x80", 6, true); /* U+D7FF, U+E000 */
    utf8_case("\xf0\x90\x80\x80\xf4\x8f\xbf\xbf", 8, true);
    utf8_case("\xc0\x80", 2, false);
    utf8_case("\xc1\xbf", 2, false);
    utf8_case("\xe0\x9f\xbf", 3, false);
    utf8_case("\xed\xa0\x80", 3, false);
    utf8_case("\xed\xbf\xbf", 3, false);
    utf8_case("\xf0\x8f\xbf\xbf", 4, false);
    utf8_case("\xf4\x90\x80\x80", 4, false);
    utf8_case("\xf5\x80\x80\x80", 4, false);
    utf8_case("\xff", 1, false);
    utf8_case("\x80", 1, false);
    utf8_case("abcdefgh\xe2\x82", 10, false);
    utf8_case("\xe2\x28\xa1", 3, false);
    size_t bad = 99;
    struct ws_utf8 u = WS_UTF8_INIT;
    CHECK_EQ_INT(ws_utf8_feed(&u, (const uint8_t *)"0123456789\xff", 11, &bad), WS_E_UTF8);
    CHECK_EQ_INT(bad, 10);
    CHECK_EQ_INT(ws_utf8_feed(&u, (const uint8_t *)"a", 1, &bad), WS_E_UTF8);
    CHECK(!ws_utf8_complete(&u));
    CHECK_EQ_INT(ws_utf8_prefix((const uint8_t *)"ab\xe2\x82\xac", 5, 4), 2);
    CHECK_EQ_INT(ws_utf8_prefix((const uint8_t *)"ab\xe2\x82\xac", 5, 5), 5);
    CHECK_EQ_INT(ws_utf8_prefix((const uint8_t *)"ab\xff", 3, 10), 2);
}

static void test_error_codes(void)
{
    CHECK_EQ_INT(ws_error_close_code(WS_E_PROTOCOL), 1002);
    CHECK_EQ_INT(ws_error_close_code(WS_E_UTF8), 1007);
    CHECK_EQ_INT(ws_error_close_code(WS_E_PAYLOAD), 1007);
    CHECK_EQ_INT(ws_error_close_code(WS_E_TOO_BIG), 1009);
    CHECK_EQ_INT(ws_error_close_code(-ENOMEM), 1011);
    CHECK_EQ_INT(ws_error_close_code(0), 1000);
    CHECK(strcmp(ws_error_str(WS_E_TOO_BIG), "WS_E_TOO_BIG") == 0);
}

static void test_buf(void)
{
    struct ws_buf b;
    ws_buf_init(&b, 1000);
    CHECK_EQ_INT(ws_buf_reserve(&b, 1001), WS_E_TOO_BIG);
    CHECK_EQ_INT(ws_buf_reserve(&b, SIZE_MAX), WS_E_TOO_BIG);
    CHECK_EQ_INT(ws_buf_reserve(&b, 600), 0);
    CHECK(b.cap >= 600 && b.cap <= 1000);
    b.len = 600;
    CHECK_EQ_INT(ws_buf_reserve(&b, 400), 0);
    CHECK_EQ_INT(b.cap, 1000);
    CHECK_EQ_INT(ws_buf_reserve(&b, 401), WS_E_TOO_BIG);
    ws_buf_deinit(&b);
    ws_buf_deinit(&b);
    CHECK(b.data == NULL && b.len == 0);
}

int main(void)
{
    RUN(test_rfc_unmasked_rejected);
    RUN(test_rfc_masked_hello);
    RUN(test_rfc_fragmented_and_ping);
    RUN(test_rfc_lengths);
    RUN(test_interleaved_control);
    RUN(test_fragmentation_errors);
    RUN(test_opcodes_and_rsv);
    RUN(test_control_rules);
    RUN(test_length_encoding);
    RUN(test_too_big);
    RUN(test_text_utf8);
    RUN(test_close);
    RUN(test_after_close_discarded);
    RUN(test_one_event_per_call);
    RUN(test_deflate_hook);
    RUN(test_limits_change_and_ratio);
    RUN(test_rfc7692_examples);
    RUN(test_header_encode);
    RUN(test_control_encode);
    RUN(test_mask_apply);
    RUN(test_utf8);
    RUN(test_error_codes);
    RUN(test_buf);
    return harness_done();
}
