/*
 * tests/unit/test-stomp-frame.c — the STOMP frame parser and serialiser (stomp/frame.h).
 *
 * Every parser input goes through run(), which plays bridge/: it appends the input to a pending buffer in chunks
 * (whole, one byte at a time, random splits), and after each chunk copies the pending bytes right before a PROT_NONE
 * page (so the buffer also moves between calls, as a growing buffer may) and feeds the parser until it needs more,
 * dropping consumed bytes. What the parser reported is rendered as a trace string, which must be identical for every
 * split: that is how "limits are checked before waiting" and "a re-fed buffer gives the same result" are tested.
 *
 * Trace syntax: a frame is `CMD|name=value|...|#body;`, heart-beat EOL bytes (merged) `HB<n>;`, an error
 * `E:<code>;` (and the run stops), leftover incomplete input `PARTIAL;`. Bytes outside 0x20..0x7e are shown as
 * \n \r \0 or \xNN, a backslash as \\.
 */
#include "harness.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "stomp/frame.h"

#define TRACE_CAP 8192

struct run_opts {
    struct stomp_limits limits;
    size_t headers_cap;         /* 0 → 32 */
    enum stomp_version version; /* set before the first frame */
    bool switch_after_connect;  /* set `after` once a CONNECT/STOMP/CONNECTED frame was parsed (what bridge does) */
    enum stomp_version after;
};

struct trace {
    char s[TRACE_CAP];
    size_t n;
};

static void tput(struct trace *t, const char *s, size_t n)
{
    for (size_t i = 0; i < n && t->n + 5 < TRACE_CAP; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '\\')
            t->n += (size_t)snprintf(t->s + t->n, TRACE_CAP - t->n, "\\\\");
        else if (c == '\n')
            t->n += (size_t)snprintf(t->s + t->n, TRACE_CAP - t->n, "\\n");
        else if (c == '\r')
            t->n += (size_t)snprintf(t->s + t->n, TRACE_CAP - t->n, "\\r");
        else if (c == 0)
            t->n += (size_t)snprintf(t->s + t->n, TRACE_CAP - t->n, "\\0");
        else if (c < 0x20 || c > 0x7e)
            t->n += (size_t)snprintf(t->s + t->n, TRACE_CAP - t->n, "\\x%02x", c);
        else
            t->s[t->n++] = (char)c;
    }
    t->s[t->n] = 0;
}

static void traw(struct trace *t, const char *s)
{
    size_t n = strlen(s);
    if (t->n + n < TRACE_CAP) {
        memcpy(t->s + t->n, s, n + 1);
        t->n += n;
    }
}

static void trace_frame(struct trace *t, const struct stomp_frame *f)
{
    traw(t, stomp_cmd_str(f->cmd));
    for (size_t i = 0; i < f->n_headers; i++) {
        traw(t, "|");
        tput(t, f->headers[i].name, f->headers[i].name_len);
        traw(t, "=");
        tput(t, f->headers[i].value, f->headers[i].value_len);
    }
    traw(t, "|#");
    tput(t, f->body, f->body_len);
    traw(t, ";");
}

static void flush_hb(struct trace *t, size_t *hb)
{
    char b[32];
    if (*hb) {
        snprintf(b, sizeof(b), "HB%zu;", *hb);
        traw(t, b);
        *hb = 0;
    }
}

/* Feeds `pending` until the parser needs more. Returns false once an error ended the run. */
static bool drain(struct stomp_parser *p, const struct run_opts *o, char *pending, size_t *plen, struct guard_slot *slot,
                  struct trace *t, size_t *hb, const char **last_reason)
{
    for (;;) {
        char *g = guard_copy(slot, pending, *plen);
        size_t used = 12345;
        struct stomp_frame f;
        const char *reason = NULL;
        int r = stomp_parser_feed(p, g, *plen, &used, &f, &reason);
        if (r == STOMP_NEED_MORE) {
            CHECK_EQ_INT(used, 0);
            return true;
        }
        if (r == STOMP_HEARTBEAT) {
            CHECK(used > 0 && used <= *plen);
            *hb += used;
        } else {
            flush_hb(t, hb);
        }
        if (r == 0) {
            CHECK(used > 0 && used <= *plen);
            CHECK(f.body + f.body_len < g + *plen && f.body[f.body_len] == '\0');
            trace_frame(t, &f);
            if (o->switch_after_connect && stomp_cmd_is_connect(f.cmd))
                stomp_parser_set_version(p, o->after);
        } else if (r != STOMP_HEARTBEAT) {
            char b[64];
            CHECK(reason != NULL);
            *last_reason = reason;
            snprintf(b, sizeof(b), "E:%s;", stomp_error_str(r));
            traw(t, b);
            return false;
        }
        memmove(pending, pending + used, *plen - used);
        *plen -= used;
    }
}

static void run(const char *in, size_t len, enum split_mode m, uint64_t seed, const struct run_opts *o, struct trace *t,
                const char **last_reason)
{
    struct stomp_header hdrs[128];
    struct stomp_parser p;
    struct guard_slot slot = {0};
    char *pending = malloc(len + 1);
    size_t plen = 0, off = 0, hb = 0;
    bool alive = true;

    t->n = 0;
    t->s[0] = 0;
    stomp_parser_init(&p, &o->limits, hdrs, o->headers_cap ? o->headers_cap : 32);
    stomp_parser_set_version(&p, o->version);
    while (alive && off < len) {
        size_t n = split_next(m, len - off, &seed);
        memcpy(pending + plen, in + off, n);
        plen += n;
        off += n;
        alive = drain(&p, o, pending, &plen, &slot, t, &hb, last_reason);
    }
    flush_hb(t, &hb);
    if (alive && plen > 0)
        traw(t, "PARTIAL;");
    stomp_parser_deinit(&p);
    guard_free(&slot);
    free(pending);
}

/* Runs `in` whole, byte by byte and with 4 random split seeds; every trace must equal `want`. Returns the last reason. */
static const char *expect_at(const char *file, int line, const char *in, size_t len, const struct run_opts *o, const char *want)
{
    static struct trace t;
    const char *reason = NULL;
    for (int mode = 0; mode < SPLIT_MODES; mode++) {
        int seeds = mode == SPLIT_RANDOM ? 4 : 1;
        for (int s = 0; s < seeds; s++) {
            run(in, len, (enum split_mode)mode, 0x1234567ull * (uint64_t)(s + 1), o, &t, &reason);
            harness_checks++;
            if (strcmp(t.s, want) != 0) {
                harness_failures++;
                fprintf(stderr, "%s:%d: [%s seed %d]\n  got:  %s\n  want: %s\n", file, line, split_mode_str((enum split_mode)mode),
                        s, t.s, want);
                return reason;
            }
        }
    }
    return reason;
}

/* String literal input (may contain NULs). */
#define EXPECT(o, lit, want)   expect_at(__FILE__, __LINE__, (lit), sizeof(lit) - 1, (o), (want))
#define EXPECTN(o, s, n, want) expect_at(__FILE__, __LINE__, (s), (n), (o), (want))
#define CHECK_STR(a, b)                                                                                                            \
    do {                                                                                                                           \
        const char *a_ = (a), *b_ = (b);                                                                                           \
        harness_checks++;                                                                                                          \
        if (!a_ || strcmp(a_, b_) != 0) {                                                                                          \
            harness_failures++;                                                                                                    \
            fprintf(stderr, "%s:%d: \"%s\" != \"%s\"\n", __FILE__, __LINE__, a_ ? a_ : "(null)", b_);                              \
        }                                                                                                                          \
    } while (0)

static const struct run_opts v10 = {.version = STOMP_V1_0};
static const struct run_opts v11 = {.version = STOMP_V1_1};
static const struct run_opts v12 = {.version = STOMP_V1_2};

/* ---- spec examples ------------------------------------------------------------------------------------------------ */

static void test_spec_examples(void)
{
    EXPECT(&v10, "CONNECT\naccept-version:1.2\nhost:stomp.github.org\n\n\0", "CONNECT|accept-version=1.2|host=stomp.github.org|#;");
    EXPECT(&v10, "STOMP\naccept-version:1.0,1.1,2.0\nhost:stomp.github.org\n\n\0",
           "STOMP|accept-version=1.0,1.1,2.0|host=stomp.github.org|#;");
    EXPECT(&v10, "CONNECTED\nversion:1.2\n\n\0", "CONNECTED|version=1.2|#;");
    EXPECT(&v12, "SEND\ndestination:/queue/a\ncontent-type:text/plain\n\nhello queue a\0",
           "SEND|destination=/queue/a|content-type=text/plain|#hello queue a;");
    EXPECT(&v12, "SEND\ndestination:/queue/a\nreceipt:message-12345\n\nhello queue a\0",
           "SEND|destination=/queue/a|receipt=message-12345|#hello queue a;");
    EXPECT(&v12, "SUBSCRIBE\nid:0\ndestination:/queue/foo\nack:client\n\n\0",
           "SUBSCRIBE|id=0|destination=/queue/foo|ack=client|#;");
    EXPECT(&v12, "UNSUBSCRIBE\nid:0\n\n\0", "UNSUBSCRIBE|id=0|#;");
    EXPECT(&v12, "ACK\nid:12345\ntransaction:tx1\n\n\0", "ACK|id=12345|transaction=tx1|#;");
    EXPECT(&v12, "NACK\nid:12345\ntransaction:tx1\n\n\0", "NACK|id=12345|transaction=tx1|#;");
    EXPECT(&v12, "BEGIN\ntransaction:tx1\n\n\0", "BEGIN|transaction=tx1|#;");
    EXPECT(&v12, "COMMIT\ntransaction:tx1\n\n\0", "COMMIT|transaction=tx1|#;");
    EXPECT(&v12, "ABORT\ntransaction:tx1\n\n\0", "ABORT|transaction=tx1|#;");
    EXPECT(&v12, "DISCONNECT\nreceipt:77\n\n\0", "DISCONNECT|receipt=77|#;");
    EXPECT(&v12, "RECEIPT\nreceipt-id:77\n\n\0", "RECEIPT|receipt-id=77|#;");
    EXPECT(&v12, "MESSAGE\nsubscription:0\nmessage-id:007\ndestination:/queue/a\ncontent-type:text/plain\n\nhello queue a\0",
           "MESSAGE|subscription=0|message-id=007|destination=/queue/a|content-type=text/plain|#hello queue a;");
    /* The spec's ERROR example, with the content-length computed rather than trusted. */
    const char *body = "The message:\n-----\nMESSAGE\ndestined:/queue/a\nreceipt:message-12345\n\nHello queue a!\n-----\n"
                       "Did not contain a destination header, which is REQUIRED\nfor message propagation.\n";
    char in[1024], want[TRACE_CAP + 256];
    struct trace t = {0};
    int n = snprintf(in, sizeof(in),
                     "ERROR\nreceipt-id:message-12345\ncontent-type:text/plain\ncontent-length:%zu\n"
                     "message:malformed frame received\n\n%s",
                     strlen(body), body);
    in[n] = '\0';
    tput(&t, body, strlen(body));
    snprintf(want, sizeof(want),
             "ERROR|receipt-id=message-12345|content-type=text/plain|content-length=%zu|message=malformed frame "
             "received|#%s;",
             strlen(body), t.s);
    EXPECTN(&v12, in, (size_t)n + 1, want);
}

static void test_every_command(void)
{
    char in[64], want[64];
    for (int c = 0; c < STOMP_CMD_COUNT; c++) {
        const char *name = stomp_cmd_str((enum stomp_cmd)c);
        int n = snprintf(in, sizeof(in), "%s\n\n", name);
        in[n] = '\0';
        snprintf(want, sizeof(want), "%s|#;", name);
        EXPECTN(&v12, in, (size_t)n + 1, want);
    }
    CHECK_STR(stomp_cmd_str((enum stomp_cmd)99), "?");
    CHECK(stomp_cmd_has_body(STOMP_CMD_SEND) && stomp_cmd_has_body(STOMP_CMD_MESSAGE) && stomp_cmd_has_body(STOMP_CMD_ERROR));
    CHECK(!stomp_cmd_has_body(STOMP_CMD_RECEIPT) && !stomp_cmd_has_body(STOMP_CMD_CONNECT));
    CHECK(stomp_cmd_is_connect(STOMP_CMD_STOMP) && !stomp_cmd_is_connect(STOMP_CMD_SEND));
    CHECK(stomp_cmd_is_server(STOMP_CMD_RECEIPT) && !stomp_cmd_is_server(STOMP_CMD_ACK));
    CHECK_STR(stomp_version_str(STOMP_V1_1), "1.1");
    CHECK_STR(stomp_version_str((enum stomp_version)7), "?");
}

static void test_commands_strict(void)
{
    CHECK_STR(EXPECT(&v12, "send\n\n\0", "E:STOMP_E_COMMAND;"), "unknown command");
    EXPECT(&v12, "SENDX\n\n\0", "E:STOMP_E_COMMAND;");
    EXPECT(&v12, "SEND \n\n\0", "E:STOMP_E_COMMAND;");
    EXPECT(&v12, " SEND\n\n\0", "E:STOMP_E_COMMAND;");
    EXPECT(&v12, "CONNECTE\n\n\0", "E:STOMP_E_COMMAND;");
    /* Unknown command detected before the body arrives. */
    EXPECT(&v12, "FOO\nx:y\n\nbody bytes but no NUL yet", "E:STOMP_E_COMMAND;");
}

/* ---- line ends, heart-beats --------------------------------------------------------------------------------------- */

static void test_eol_and_heartbeats(void)
{
    EXPECT(&v12, "SEND\r\ndestination:/q\r\n\r\nhi\0", "SEND|destination=/q|#hi;");
    EXPECT(&v12, "SEND\ndestination:/q\r\n\nhi\0", "SEND|destination=/q|#hi;");
    EXPECT(&v12, "\n", "HB1;");
    EXPECT(&v12, "\r\n\n\r\n", "HB5;");
    EXPECT(&v12, "\r", "PARTIAL;");
    CHECK_STR(EXPECT(&v12, "\r\r\n", "E:STOMP_E_PROTOCOL;"), "bare CR (not followed by LF)");
    EXPECT(&v12, "\n\r:\n", "HB1;E:STOMP_E_PROTOCOL;"); /* the heart-beat is reported first, whatever the chunking */
    EXPECT(&v12, "\nSEND\n\nx\0\n\r\nDISCONNECT\nreceipt:1\n\n\0\n", "HB1;SEND|#x;HB3;DISCONNECT|receipt=1|#;HB1;");
    /* NULs between frames are noise, skipped with the EOLs (RabbitMQ's parser; clients write "\n\0" after a frame). */
    EXPECT(&v12, "\0SEND\n\nx\0\0\n\0DISCONNECT\n\n\0\n\0", "HB1;SEND|#x;HB3;DISCONNECT|#;HB2;");
    EXPECT(&v12, "SEND\n\na\0SEND\n\nb\0", "SEND|#a;SEND|#b;");
    /* Bare CR inside the command line, a header, or between header lines. */
    EXPECT(&v12, "SE\rND\n\n\0", "E:STOMP_E_PROTOCOL;");
    EXPECT(&v12, "SEND\na:b\rc\n\n\0", "E:STOMP_E_PROTOCOL;");
    EXPECT(&v12, "SEND\na:b\r\r\n\n\0", "E:STOMP_E_PROTOCOL;");
    /* A CR in the body is data. */
    EXPECT(&v12, "SEND\n\na\rb\0", "SEND|#a\\rb;");
    /* Incomplete frames. */
    EXPECT(&v12, "SEND\ndestination:/q\n", "PARTIAL;");
    EXPECT(&v12, "SEND\ndestination:/q\n\nhello", "PARTIAL;");
    EXPECT(&v12, "SEND\r", "PARTIAL;");
}

/* ---- headers ------------------------------------------------------------------------------------------------------ */

static void test_header_rules(void)
{
    CHECK_STR(EXPECT(&v12, "SEND\nnocolon\n\n\0", "E:STOMP_E_PROTOCOL;"), "header line without ':'");
    CHECK_STR(EXPECT(&v12, "SEND\n:value\n\n\0", "E:STOMP_E_PROTOCOL;"), "empty header name");
    EXPECT(&v10, "SEND\nnocolon\n\n\0", "E:STOMP_E_PROTOCOL;");
    EXPECT(&v12, "SEND\na:\n\n\0", "SEND|a=|#;");
    EXPECT(&v12, "SEND\na: b \n\n\0", "SEND|a= b |#;");
    EXPECT(&v10, "SEND\na: b \n\n\0", "SEND|a= b |#;");
    EXPECT(&v12, "SEND\na:b:c\n\n\0", "SEND|a=b:c|#;");
    EXPECT(&v10, "CONNECT\npasscode:x:y\n\n\0", "CONNECT|passcode=x:y|#;");
    EXPECT(&v12, "SEND\nfoo:1\nfoo:2\nFoo:3\n\n\0", "SEND|foo=1|foo=2|Foo=3|#;");
    CHECK_STR(EXPECT(&v12, "SEND\na:b\0c\n\n\0", "E:STOMP_E_PROTOCOL;"), "NUL byte in the command or header lines");
    EXPECT(&v12, "SEND\0\n\n\0", "E:STOMP_E_PROTOCOL;");
    /* UTF-8 and high bytes pass through untouched. */
    EXPECT(&v12, "SEND\nk\xc3\xa9:\xe2\x82\xac\n\n\0", "SEND|k\\xc3\\xa9=\\xe2\\x82\\xac|#;");
}

static void test_header_lookup(void)
{
    char buf[] = "SEND\nfoo:1\nbar:\nfoo:2\n\n";
    struct stomp_header hdrs[8];
    struct stomp_parser p;
    struct stomp_frame f;
    size_t used;
    stomp_parser_init(&p, NULL, hdrs, 8);
    CHECK_EQ_INT(stomp_parser_feed(&p, buf, sizeof(buf), &used, &f, NULL), 0);
    CHECK_EQ_INT(used, sizeof(buf));
    const struct stomp_header *h = stomp_frame_header(&f, "foo");
    CHECK(h && h->value_len == 1 && h->value[0] == '1');
    CHECK(stomp_header_value_is(h, "1"));
    CHECK(!stomp_header_value_is(h, "2"));
    CHECK(!stomp_header_value_is(h, "10"));
    CHECK(stomp_header_value_is(stomp_frame_header(&f, "bar"), ""));
    CHECK(stomp_frame_header(&f, "FOO") == NULL);
    CHECK(stomp_frame_header(&f, "fo") == NULL);
    CHECK(!stomp_header_value_is(NULL, ""));
}

/* ---- escaping ----------------------------------------------------------------------------------------------------- */

static void test_escapes(void)
{
    const char in11[] = "SEND\na\\cb:x\\ny\\\\z\\c\n\n\0";
    EXPECT(&v10, in11, "SEND|a\\\\cb=x\\\\ny\\\\\\\\z\\\\c|#;");
    EXPECT(&v11, in11, "SEND|a:b=x\\ny\\\\z:|#;");
    EXPECT(&v12, in11, "SEND|a:b=x\\ny\\\\z:|#;");
    /* \r: 1.2 only. */
    EXPECT(&v12, "SEND\na:x\\ry\n\n\0", "SEND|a=x\\ry|#;");
    CHECK_STR(EXPECT(&v11, "SEND\na:x\\ry\n\n\0", "E:STOMP_E_PROTOCOL;"), "invalid header escape \\r (defined in STOMP 1.2 only)");
    EXPECT(&v10, "SEND\na:x\\ry\n\n\0", "SEND|a=x\\\\ry|#;");
    /* Undefined escapes are fatal, in names too, and detected before the body. */
    CHECK_STR(EXPECT(&v12, "SEND\na:x\\ty\n\nbody", "E:STOMP_E_PROTOCOL;"),
              "invalid header escape (STOMP 1.2 defines only \\r \\n \\c \\\\)");
    CHECK_STR(EXPECT(&v11, "SEND\na:x\\ty\n\n\0", "E:STOMP_E_PROTOCOL;"),
              "invalid header escape (STOMP 1.1 defines only \\n \\c \\\\)");
    EXPECT(&v12, "SEND\na\\t:x\n\n\0", "E:STOMP_E_PROTOCOL;");
    EXPECT(&v12, "SEND\na:x\\\n\n\0", "E:STOMP_E_PROTOCOL;");
    EXPECT(&v12, "SEND\na\\:x\n\n\0", "E:STOMP_E_PROTOCOL;");
    EXPECT(&v12, "SEND\na:\\\\\\\n\n\0", "E:STOMP_E_PROTOCOL;");
    EXPECT(&v12, "SEND\na:\\\\\\\\\n\n\0", "SEND|a=\\\\\\\\|#;");
    /* No unescaping on CONNECT/STOMP/CONNECTED, whatever the parser's version. */
    EXPECT(&v12, "CONNECT\npasscode:a\\cb\\t\n\n\0", "CONNECT|passcode=a\\\\cb\\\\t|#;");
    EXPECT(&v12, "STOMP\nlogin:a\\\n\n\0", "STOMP|login=a\\\\|#;");
    EXPECT(&v12, "CONNECTED\nserver:a\\cb\n\n\0", "CONNECTED|server=a\\\\cb|#;");
    /* Bridge's sequence: CONNECT in 1.0 rules, then the negotiated version. */
    struct run_opts sw = {.version = STOMP_V1_0, .switch_after_connect = true, .after = STOMP_V1_2};
    EXPECT(&sw, "CONNECT\nlogin:a\\c\n\n\0\nSEND\ndestination:/queue/a\\cb\n\n\0",
           "CONNECT|login=a\\\\c|#;HB1;SEND|destination=/queue/a:b|#;");
    sw.after = STOMP_V1_0;
    EXPECT(&sw, "CONNECT\n\n\0SEND\nd:a\\t\n\n\0", "CONNECT|#;SEND|d=a\\\\t|#;");
}

/* ---- bodies and content-length ------------------------------------------------------------------------------------ */

static void test_content_length(void)
{
    EXPECT(&v12, "SEND\ncontent-length:5\n\na\0b\0c\0", "SEND|content-length=5|#a\\0b\\0c;");
    EXPECT(&v12, "SEND\ncontent-length:0\n\n\0", "SEND|content-length=0|#;");
    EXPECT(&v12, "SEND\ncontent-length:007\n\n1234567\0", "SEND|content-length=007|#1234567;");
    EXPECT(&v12, "SEND\ncontent-length:3\n\n\0\0\0\0\n", "SEND|content-length=3|#\\0\\0\\0;HB1;");
    CHECK_STR(EXPECT(&v12, "SEND\ncontent-length:2\n\nabc\0", "E:STOMP_E_PROTOCOL;"), "missing NUL after content-length body");
    EXPECT(&v12, "SEND\ncontent-length:4\n\nabc\0", "PARTIAL;");
    /* First content-length wins; later ones are plain headers. */
    EXPECT(&v12, "SEND\ncontent-length:1\ncontent-length:junk\n\nx\0", "SEND|content-length=1|content-length=junk|#x;");
    /* Invalid values, detected before the body. */
    static const char *const bad[] = {"", "abc", "-1", "+1", " 5", "5 ", "1.0", "0x10", "1\\c"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char in[128];
        int n = snprintf(in, sizeof(in), "SEND\ncontent-length:%s\n\nbody", bad[i]);
        CHECK_STR(EXPECTN(&v12, in, (size_t)n, "E:STOMP_E_PROTOCOL;"), "invalid content-length header");
    }
    /* Honoured on every frame, including 1.0 and CONNECT (RabbitMQ only does on SEND). */
    EXPECT(&v10, "MESSAGE\ncontent-length:2\n\n\0\0\0", "MESSAGE|content-length=2|#\\0\\0;");
    EXPECT(&v10, "SUBSCRIBE\ncontent-length:0\n\n\0", "SUBSCRIBE|content-length=0|#;");
    EXPECT(&v12, "ERROR\ncontent-length:1\nmessage:x\n\n\n\0", "ERROR|content-length=1|message=x|#\\n;");
}

/* A body on a command that has none is read within the limits and dropped, as RabbitMQ does (raw-socket clients write
 * "CONNECT\n...\n\n\n\0"). */
static void test_body_ignored(void)
{
    static const char *const cmds[] = {"CONNECT", "STOMP", "SUBSCRIBE", "UNSUBSCRIBE", "BEGIN",     "COMMIT",
                                       "ABORT",   "ACK",   "NACK",      "DISCONNECT",  "CONNECTED", "RECEIPT"};
    for (size_t i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++) {
        char in[128];
        char want[128];
        int n = snprintf(in, sizeof(in), "%s\nid:1\n\n\n", cmds[i]); /* and snprintf's NUL */
        snprintf(want, sizeof(want), "%s|id=1|#;", cmds[i]);
        EXPECTN(&v12, in, (size_t)n + 1, want);
        n = snprintf(in, sizeof(in), "%s\nid:1\n\n\r\nanything", cmds[i]);
        EXPECTN(&v12, in, (size_t)n + 1, want);
        n = snprintf(in, sizeof(in), "%s\ncontent-length:2\n\nxx", cmds[i]);
        in[n - 1] = '\0'; /* "x\0" as the body, then the NUL */
        snprintf(want, sizeof(want), "%s|content-length=2|#;", cmds[i]);
        EXPECTN(&v12, in, (size_t)n + 1, want);
    }
}

/* ---- limits ------------------------------------------------------------------------------------------------------- */

static void test_limit_line(void)
{
    struct run_opts o = {.version = STOMP_V1_2, .limits = {.max_header_line_bytes = 10}};
    EXPECT(&o, "SEND\n123456789a\n\n\0", "E:STOMP_E_PROTOCOL;"); /* 10 bytes: within, but no ':' */
    EXPECT(&o, "SEND\n12345:789a\n\n\0", "SEND|12345=789a|#;");
    EXPECT(&o, "SEND\n12345:789a\r\n\r\n\0", "SEND|12345=789a|#;"); /* the CR is not counted */
    CHECK_STR(EXPECT(&o, "SEND\n12345:789ab", "E:STOMP_E_TOO_BIG;"), "header line too long");
    o.limits.max_header_line_bytes = 4;
    EXPECT(&o, "SEND\n\n\0", "SEND|#;");
    EXPECT(&o, "SEND\r\n\r\n\0", "SEND|#;");
    EXPECT(&o, "ABORT\n\n\0", "E:STOMP_E_TOO_BIG;");
    EXPECT(&o, "MESSAG", "E:STOMP_E_TOO_BIG;");
    /* Escapes count before decoding. */
    o.limits.max_header_line_bytes = 5;
    EXPECT(&o, "SEND\na:\\c\\c\n\n\0", "E:STOMP_E_TOO_BIG;");
    EXPECT(&o, "SEND\na:\\cb\n\n\0", "SEND|a=:b|#;");
}

static void test_limit_headers(void)
{
    struct run_opts o = {.version = STOMP_V1_2, .limits = {.max_headers = 3}};
    EXPECT(&o, "SEND\na:1\nb:2\nc:3\n\n\0", "SEND|a=1|b=2|c=3|#;");
    EXPECT(&o, "SEND\na:1\nb:2\nc:3\r\n\r\n\0", "SEND|a=1|b=2|c=3|#;");
    /* The fourth header fails at its first byte, without waiting for the blank line. */
    CHECK_STR(EXPECT(&o, "SEND\na:1\nb:2\nc:3\nd", "E:STOMP_E_TOO_BIG;"), "too many headers");
    /* The header array capacity is a bound too. */
    o.limits.max_headers = 100;
    o.headers_cap = 2;
    EXPECT(&o, "SEND\na:1\nb:2\n\n\0", "SEND|a=1|b=2|#;");
    EXPECT(&o, "SEND\na:1\nb:2\nc:3\n\n\0", "E:STOMP_E_TOO_BIG;");
    o.headers_cap = 1;
    o.limits.max_headers = 0; /* 0 → default 100, still capped by the array */
    EXPECT(&o, "SEND\na:1\n\n\0", "SEND|a=1|#;");
    EXPECT(&o, "SEND\na:1\nb:2\n\n\0", "E:STOMP_E_TOO_BIG;");
}

static void test_limit_body(void)
{
    struct run_opts o = {.version = STOMP_V1_2, .limits = {.max_body_bytes = 4}};
    EXPECT(&o, "SEND\n\n1234\0", "SEND|#1234;");
    CHECK_STR(EXPECT(&o, "SEND\n\n12345", "E:STOMP_E_TOO_BIG;"), "body too large");
    EXPECT(&o, "SEND\ncontent-length:4\n\n12\0\0\0", "SEND|content-length=4|#12\\0\\0;");
    CHECK_STR(EXPECT(&o, "SEND\ncontent-length:5\n\n", "E:STOMP_E_TOO_BIG;"), "content-length exceeds the body size limit");
    EXPECT(&o, "SEND\ncontent-length:99999999999999999999999999\n\n", "E:STOMP_E_TOO_BIG;");
}

static void test_limit_frame(void)
{
    /* "SEND\n\n" is 6 bytes, + body + NUL. */
    struct run_opts o = {.version = STOMP_V1_2, .limits = {.max_frame_bytes = 10}};
    EXPECT(&o, "SEND\n\n123\0", "SEND|#123;");
    CHECK_STR(EXPECT(&o, "SEND\n\n1234", "E:STOMP_E_TOO_BIG;"), "frame too large");
    EXPECT(&o, "SEND\n\n123\0\n\n\n\n\n", "SEND|#123;HB5;"); /* heart-beats are not part of a frame */
    /* content-length: rejected from the header alone. */
    o.limits.max_frame_bytes = 27; /* "SEND\ncontent-length:3\n\n" is 23 */
    EXPECT(&o, "SEND\ncontent-length:3\n\nabc\0", "SEND|content-length=3|#abc;");
    EXPECT(&o, "SEND\ncontent-length:4\n\n", "E:STOMP_E_TOO_BIG;");
    /* During the header section. */
    o.limits.max_frame_bytes = 8;
    EXPECT(&o, "SEND\na:12", "E:STOMP_E_TOO_BIG;");
    EXPECT(&o, "SEND\na:\n\n\0", "E:STOMP_E_TOO_BIG;"); /* 10 bytes */
    o.limits.max_frame_bytes = 10;
    EXPECT(&o, "SEND\na:\n\n\0", "SEND|a=|#;");
    /* A body that is dropped still counts towards the limits. */
    o.limits.max_frame_bytes = 16;
    EXPECT(&o, "BEGIN\nMESATh:9\n\n{\0", "E:STOMP_E_TOO_BIG;");
    o.limits.max_frame_bytes = 17;
    EXPECT(&o, "BEGIN\nMESATh:9\n\n{\0", "E:STOMP_E_TOO_BIG;");
    o.limits.max_frame_bytes = 18;
    EXPECT(&o, "BEGIN\nMESATh:9\n\n{\0", "BEGIN|MESATh=9|#;");
    o.limits.max_frame_bytes = 17;
    o.limits.max_body_bytes = 1;
    EXPECT(&o, "SEND\nab:9\n\n{\0", "SEND|ab=9|#{;");
    EXPECT(&o, "SEND\nab:9\n\n{}\0", "E:STOMP_E_TOO_BIG;");
}

static void test_large_body_incremental(void)
{
    /* 1 MiB body fed in 4 KiB pieces: checks the body is found (and quickly: the NUL scan resumes). */
    size_t body = 1 << 20, len = 6 + body + 1;
    char *in = malloc(len), *buf = malloc(len);
    struct stomp_header hdrs[4];
    struct stomp_parser p;
    struct stomp_frame f;
    size_t used = 0, have = 0;
    int r = STOMP_NEED_MORE;
    memcpy(in, "SEND\n\n", 6);
    memset(in + 6, 'x', body);
    in[len - 1] = '\0';
    stomp_parser_init(&p, NULL, hdrs, 4);
    while (have < len && r == STOMP_NEED_MORE) {
        size_t n = len - have < 4096 ? len - have : 4096;
        memcpy(buf + have, in + have, n);
        have += n;
        r = stomp_parser_feed(&p, buf, have, &used, &f, NULL);
    }
    CHECK_EQ_INT(r, 0);
    CHECK_EQ_INT(used, len);
    CHECK_EQ_INT(f.body_len, body);
    free(in);
    free(buf);
}

/* ---- parser state ------------------------------------------------------------------------------------------------- */

static void test_sticky_error_and_reset(void)
{
    char bad[] = "FOO\n\n";
    char good[] = "SEND\n\nx";
    struct stomp_header hdrs[4];
    struct stomp_parser p;
    struct stomp_frame f;
    size_t used = 7;
    const char *reason = NULL;
    stomp_parser_init(&p, NULL, hdrs, 4);
    CHECK_EQ_INT(stomp_parser_feed(&p, bad, sizeof(bad), &used, &f, &reason), STOMP_E_COMMAND);
    CHECK_EQ_INT(used, 0);
    reason = NULL;
    CHECK_EQ_INT(stomp_parser_feed(&p, good, sizeof(good), &used, &f, &reason), STOMP_E_COMMAND);
    CHECK_STR(reason, "unknown command");
    stomp_parser_reset(&p);
    CHECK_EQ_INT(stomp_parser_feed(&p, good, sizeof(good), &used, &f, &reason), 0);
    CHECK_EQ_INT(used, sizeof(good));
    /* A buffer shorter than last time restarts the scan. */
    char part[] = "SEND\na:b\n\nhello";
    CHECK_EQ_INT(stomp_parser_feed(&p, part, sizeof(part) - 1, &used, &f, NULL), STOMP_NEED_MORE);
    char other[] = "ACK\n\n";
    CHECK_EQ_INT(stomp_parser_feed(&p, other, sizeof(other), &used, &f, NULL), 0);
    CHECK_EQ_INT(f.cmd, STOMP_CMD_ACK);
    /* Empty input. */
    CHECK_EQ_INT(stomp_parser_feed(&p, NULL, 0, &used, &f, NULL), STOMP_NEED_MORE);
    stomp_parser_deinit(&p);
    stomp_parser_deinit(&p);
}

static void test_set_limits(void)
{
    struct stomp_limits small = {.max_frame_bytes = 8};
    struct stomp_header hdrs[4];
    struct stomp_parser p;
    struct stomp_frame f;
    size_t used;
    char in[] = "SEND\n\n12345";
    stomp_parser_init(&p, &small, hdrs, 4);
    CHECK_EQ_INT(stomp_parser_feed(&p, in, sizeof(in), &used, &f, NULL), STOMP_E_TOO_BIG);
    stomp_parser_set_limits(&p, NULL);
    stomp_parser_reset(&p);
    CHECK_EQ_INT(stomp_parser_feed(&p, in, sizeof(in), &used, &f, NULL), 0);
    CHECK_EQ_INT(f.body_len, 5);
}

/* ---- serialiser --------------------------------------------------------------------------------------------------- */

static int write_frame(const struct stomp_frame *f, enum stomp_version v, unsigned flags, char *out, size_t cap, size_t *len,
                       const char **reason)
{
    *len = 0;
    return stomp_frame_write(f, v, flags, out, cap, len, reason);
}

#define H(n, v)                                                                                                                    \
    {                                                                                                                              \
        n, sizeof(n) - 1, v, sizeof(v) - 1                                                                                         \
    }

static void check_bytes(int line, const char *got, size_t got_len, const char *want, size_t want_len)
{
    harness_checks++;
    if (got_len != want_len || memcmp(got, want, want_len) != 0) {
        struct trace a = {0}, b = {0};
        tput(&a, got, got_len);
        tput(&b, want, want_len);
        harness_failures++;
        fprintf(stderr, "%s:%d: written bytes differ\n  got:  %s\n  want: %s\n", __FILE__, line, a.s, b.s);
    }
}
#define CHECK_BYTES(got, got_len, lit) check_bytes(__LINE__, (got), (got_len), (lit), sizeof(lit) - 1)

static void test_write_exact(void)
{
    char out[512];
    size_t len;
    const char *reason = NULL;
    struct stomp_header ch[] = {H("version", "1.2"), H("heart-beat", "10000,10000"), H("server", "warren/0.1:x"),
                                H("session", "s-1")};
    struct stomp_frame f = {.cmd = STOMP_CMD_CONNECTED, .headers = ch, .n_headers = 4};
    CHECK_EQ_INT(write_frame(&f, STOMP_V1_2, 0, out, sizeof(out), &len, &reason), 0);
    CHECK_BYTES(out, len, "CONNECTED\nversion:1.2\nheart-beat:10000,10000\nserver:warren/0.1:x\nsession:s-1\n\n\0");

    struct stomp_header mh[] = {H("subscription", "0"), H("message-id", "m:1"), H("destination", "/queue/a"),
                                H("content-length", "999"), H("x", "a\nb\\c\rd")};
    struct stomp_frame m = {.cmd = STOMP_CMD_MESSAGE, .headers = mh, .n_headers = 5, .body = "hi\0!", .body_len = 4};
    CHECK_EQ_INT(write_frame(&m, STOMP_V1_2, 0, out, sizeof(out), &len, &reason), 0);
    CHECK_BYTES(out, len,
                "MESSAGE\nsubscription:0\nmessage-id:m\\c1\ndestination:/queue/a\nx:a\\nb\\\\c\\rd\ncontent-length:4\n\nhi\0!\0");
    /* 1.1 cannot carry CR. */
    CHECK_EQ_INT(write_frame(&m, STOMP_V1_1, 0, out, sizeof(out), &len, &reason), STOMP_E_PROTOCOL);
    CHECK_STR(reason, "CR in a header cannot be encoded before STOMP 1.2");
    m.n_headers = 4;
    CHECK_EQ_INT(write_frame(&m, STOMP_V1_1, 0, out, sizeof(out), &len, &reason), 0);
    CHECK_BYTES(out, len, "MESSAGE\nsubscription:0\nmessage-id:m\\c1\ndestination:/queue/a\ncontent-length:4\n\nhi\0!\0");
    /* 1.0: no escaping; ':' in a value is fine. */
    CHECK_EQ_INT(write_frame(&m, STOMP_V1_0, STOMP_WRITE_TRAILING_LF, out, sizeof(out), &len, &reason), 0);
    CHECK_BYTES(out, len, "MESSAGE\nsubscription:0\nmessage-id:m:1\ndestination:/queue/a\ncontent-length:4\n\nhi\0!\0\n");

    struct stomp_header rh[] = {H("receipt-id", "77")};
    struct stomp_frame r = {.cmd = STOMP_CMD_RECEIPT, .headers = rh, .n_headers = 1};
    CHECK_EQ_INT(write_frame(&r, STOMP_V1_2, 0, out, sizeof(out), &len, &reason), 0);
    CHECK_BYTES(out, len, "RECEIPT\nreceipt-id:77\n\n\0");
    CHECK_EQ_INT(write_frame(&r, STOMP_V1_2, STOMP_WRITE_TRAILING_LF, out, sizeof(out), &len, &reason), 0);
    CHECK_BYTES(out, len, "RECEIPT\nreceipt-id:77\n\n\0\n");

    struct stomp_header eh[] = {H("message", "Version mismatch"), H("version", "1.0,1.1,1.2"), H("content-type", "text/plain")};
    struct stomp_frame e = {.cmd = STOMP_CMD_ERROR, .headers = eh, .n_headers = 3, .body = "no", .body_len = 2};
    CHECK_EQ_INT(write_frame(&e, STOMP_V1_0, 0, out, sizeof(out), &len, &reason), 0);
    CHECK_BYTES(out, len,
                "ERROR\nmessage:Version mismatch\nversion:1.0,1.1,1.2\ncontent-type:text/plain\ncontent-length:2\n\nno\0");
    /* Empty body: no content-length; no headers at all. */
    struct stomp_frame bare = {.cmd = STOMP_CMD_ERROR};
    CHECK_EQ_INT(write_frame(&bare, STOMP_V1_2, 0, out, sizeof(out), &len, &reason), 0);
    CHECK_BYTES(out, len, "ERROR\n\n\0");
}

static void test_write_space_and_errors(void)
{
    char out[64];
    size_t len, need;
    const char *reason = NULL;
    struct stomp_header rh[] = {H("receipt-id", "77")};
    struct stomp_frame r = {.cmd = STOMP_CMD_RECEIPT, .headers = rh, .n_headers = 1};
    CHECK_EQ_INT(write_frame(&r, STOMP_V1_2, 0, NULL, 0, &need, &reason), STOMP_E_NOSPACE);
    CHECK_EQ_INT(need, sizeof("RECEIPT\nreceipt-id:77\n\n"));
    CHECK_EQ_INT(write_frame(&r, STOMP_V1_2, 0, out, need - 1, &len, &reason), STOMP_E_NOSPACE);
    CHECK_EQ_INT(len, need);
    struct guard_slot slot = {0};
    char *exact = guard_copy(&slot, out, need);
    CHECK_EQ_INT(write_frame(&r, STOMP_V1_2, 0, exact, need, &len, &reason), 0);
    CHECK_EQ_INT(len, need);
    guard_free(&slot);

    /* Body on a command that cannot carry one. */
    struct stomp_frame rb = {.cmd = STOMP_CMD_RECEIPT, .body = "x", .body_len = 1};
    CHECK_EQ_INT(write_frame(&rb, STOMP_V1_2, 0, out, sizeof(out), &len, &reason), STOMP_E_PROTOCOL);
    CHECK_STR(reason, "this command must not have a body");
    struct stomp_frame bad_cmd = {.cmd = (enum stomp_cmd)42};
    CHECK_EQ_INT(write_frame(&bad_cmd, STOMP_V1_2, 0, out, sizeof(out), &len, &reason), STOMP_E_PROTOCOL);

    struct {
        enum stomp_cmd cmd;
        enum stomp_version v;
        struct stomp_header h;
        int want;
    } cases[] = {
        {STOMP_CMD_MESSAGE, STOMP_V1_2, H("", "x"), STOMP_E_PROTOCOL},
        {STOMP_CMD_MESSAGE, STOMP_V1_2, {"a", 1, "x\0y", 3}, STOMP_E_PROTOCOL},
        {STOMP_CMD_MESSAGE, STOMP_V1_2, {"a\0", 2, "x", 1}, STOMP_E_PROTOCOL},
        {STOMP_CMD_MESSAGE, STOMP_V1_2, H("a:b", "x\ny\r"), 0},
        {STOMP_CMD_MESSAGE, STOMP_V1_1, H("a:b", "x\ny"), 0},
        {STOMP_CMD_MESSAGE, STOMP_V1_1, H("a\rb", "x"), STOMP_E_PROTOCOL},
        {STOMP_CMD_MESSAGE, STOMP_V1_0, H("a", "x:y"), 0},
        {STOMP_CMD_MESSAGE, STOMP_V1_0, H("a:b", "x"), STOMP_E_PROTOCOL},
        {STOMP_CMD_MESSAGE, STOMP_V1_0, H("a", "x\ny"), STOMP_E_PROTOCOL},
        {STOMP_CMD_MESSAGE, STOMP_V1_0, H("a", "x\ry"), STOMP_E_PROTOCOL},
        {STOMP_CMD_CONNECTED, STOMP_V1_2, H("a", "x\ny"), STOMP_E_PROTOCOL},
        {STOMP_CMD_CONNECTED, STOMP_V1_2, H("a:b", "x"), STOMP_E_PROTOCOL},
        {STOMP_CMD_CONNECTED, STOMP_V1_2, H("a", "x:y\\"), 0},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        reason = NULL;
        int rc = stomp_header_check(&cases[i].h, cases[i].cmd, cases[i].v, &reason);
        CHECK_EQ_INT(rc, cases[i].want);
        CHECK(rc == 0 || reason != NULL);
        struct stomp_frame f = {.cmd = cases[i].cmd, .headers = &cases[i].h, .n_headers = 1};
        CHECK_EQ_INT(write_frame(&f, cases[i].v, 0, out, sizeof(out), &len, &reason), cases[i].want);
    }
}

/* Serialise, then parse back with the same version: every header and the body must survive. */
static void roundtrip(const struct stomp_frame *f, enum stomp_version v, unsigned flags)
{
    static char out[4096];
    size_t len = 0, used = 0;
    const char *reason = NULL;
    int r = stomp_frame_write(f, v, flags, out, sizeof(out), &len, &reason);
    CHECK_EQ_INT(r, 0);
    if (r)
        return;
    struct stomp_header hdrs[40];
    struct stomp_parser p;
    struct stomp_frame g;
    struct guard_slot slot = {0};
    char *buf = guard_copy(&slot, out, len);
    stomp_parser_init(&p, NULL, hdrs, 40);
    stomp_parser_set_version(&p, v);
    CHECK_EQ_INT(stomp_parser_feed(&p, buf, len, &used, &g, &reason), 0);
    CHECK_EQ_INT(used, len - ((flags & STOMP_WRITE_TRAILING_LF) ? 1 : 0));
    CHECK_EQ_INT(g.cmd, f->cmd);
    size_t k = 0;
    for (size_t i = 0; i < f->n_headers; i++) {
        const struct stomp_header *h = &f->headers[i];
        if (h->name_len == 14 && memcmp(h->name, "content-length", 14) == 0)
            continue;
        CHECK(k < g.n_headers && g.headers[k].name_len == h->name_len && g.headers[k].value_len == h->value_len &&
              memcmp(g.headers[k].name, h->name, h->name_len) == 0 && memcmp(g.headers[k].value, h->value, h->value_len) == 0);
        k++;
    }
    CHECK_EQ_INT(g.n_headers, k + (f->body_len > 0));
    CHECK(g.body_len == f->body_len && (f->body_len == 0 || memcmp(g.body, f->body, f->body_len) == 0));
    guard_free(&slot);
}

/* Random bytes from `alphabet` into s[0..n). */
static void fill(char *s, size_t n, const char *alphabet, uint64_t *seed)
{
    size_t k = strlen(alphabet);
    for (size_t j = 0; j < n; j++)
        s[j] = alphabet[split_next(SPLIT_RANDOM, k, seed) - 1];
}

static void test_roundtrip_escapes(void)
{
    uint64_t seed = 42;
    for (int iter = 0; iter < 300; iter++) {
        char names[8][8], values[8][16], body[32];
        struct stomp_header h[8];
        enum stomp_version v = (enum stomp_version)(iter % 3);
        enum stomp_cmd cmd = iter % 5 == 0 ? STOMP_CMD_CONNECTED : STOMP_CMD_MESSAGE;
        bool raw = v == STOMP_V1_0 || cmd == STOMP_CMD_CONNECTED;
        /* What each mode can represent (stomp_header_check()). */
        const char *name_chars = raw ? "ab\\\xff" : v == STOMP_V1_1 ? "\n:\\ab\xff" : "\n\r:\\ab\xff";
        const char *value_chars = raw ? "ab:\\\xff" : name_chars;
        size_t n = split_next(SPLIT_RANDOM, 8, &seed) - 1;
        for (size_t i = 0; i < n; i++) {
            size_t nl = split_next(SPLIT_RANDOM, 7, &seed), vl = split_next(SPLIT_RANDOM, 16, &seed) - 1;
            fill(names[i], nl, name_chars, &seed);
            fill(values[i], vl, value_chars, &seed);
            h[i] = (struct stomp_header){names[i], nl, values[i], vl};
        }
        size_t bl = cmd == STOMP_CMD_MESSAGE ? split_next(SPLIT_RANDOM, 33, &seed) - 1 : 0;
        for (size_t j = 0; j < bl; j++)
            body[j] = (char)(split_next(SPLIT_RANDOM, 256, &seed) - 1);
        struct stomp_frame f = {.cmd = cmd, .headers = h, .n_headers = n, .body = body, .body_len = bl};
        roundtrip(&f, v, iter & 1 ? STOMP_WRITE_TRAILING_LF : 0);
    }
}

int main(void)
{
    RUN(test_spec_examples);
    RUN(test_every_command);
    RUN(test_commands_strict);
    RUN(test_eol_and_heartbeats);
    RUN(test_header_rules);
    RUN(test_header_lookup);
    RUN(test_escapes);
    RUN(test_content_length);
    RUN(test_body_ignored);
    RUN(test_limit_line);
    RUN(test_limit_headers);
    RUN(test_limit_body);
    RUN(test_limit_frame);
    RUN(test_large_body_incremental);
    RUN(test_sticky_error_and_reset);
    RUN(test_set_limits);
    RUN(test_write_exact);
    RUN(test_write_space_and_errors);
    RUN(test_roundtrip_escapes);
    return harness_done();
}
