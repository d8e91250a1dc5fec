/*
 * tests/unit/test-bridge-dest.c — bridge/dest.c: destination grammar, error texts, %2F, MESSAGE destination rebuild and
 * percent-encoding, subscription queue names, queue.declare and basic.consume arguments.
 */
#include "bridge/dest.h"

#include <string.h>

#include "harness.h"

static int parse(const char *s, struct dest *d)
{
    const char *reason = NULL;
    return dest_parse(s, strlen(s), d, &reason);
}

static void test_parse_ok(void)
{
    struct dest d;
    CHECK_EQ_INT(parse("/exchange/amq.direct", &d), 0);
    CHECK_EQ_INT(d.kind, DEST_EXCHANGE);
    CHECK(strcmp(d.name, "amq.direct") == 0 && !d.has_pattern && d.pattern[0] == '\0');
    CHECK_EQ_INT(parse("/exchange/x/a.*.b", &d), 0);
    CHECK(strcmp(d.name, "x") == 0 && d.has_pattern && strcmp(d.pattern, "a.*.b") == 0);
    CHECK_EQ_INT(parse("/exchange/x/", &d), 0);
    CHECK(d.has_pattern && d.pattern[0] == '\0');
    CHECK_EQ_INT(parse("/topic/a.b.#", &d), 0);
    CHECK(d.kind == DEST_TOPIC && strcmp(d.name, "a.b.#") == 0);
    CHECK_EQ_INT(parse("/queue/q1", &d), 0);
    CHECK(d.kind == DEST_QUEUE && strcmp(d.name, "q1") == 0);
    CHECK_EQ_INT(parse("/amq/queue/q2", &d), 0);
    CHECK(d.kind == DEST_AMQ_QUEUE && strcmp(d.name, "q2") == 0);
    CHECK_EQ_INT(parse("/temp-queue/t", &d), 0);
    CHECK(d.kind == DEST_TEMP_QUEUE && strcmp(d.name, "t") == 0);
    CHECK_EQ_INT(parse("/reply-queue/amq.gen-x/y", &d), 0);
    CHECK(d.kind == DEST_REPLY_QUEUE && strcmp(d.name, "amq.gen-x/y") == 0);
    CHECK_EQ_INT(parse("bare", &d), 0);
    CHECK(d.kind == DEST_QUEUE && strcmp(d.name, "bare") == 0);
}

static void test_parse_unescape(void)
{
    struct dest d;
    CHECK_EQ_INT(parse("/queue/a%2Fb%2fc", &d), 0);
    CHECK(strcmp(d.name, "a/b/c") == 0);
    CHECK_EQ_INT(parse("/topic/x%2F", &d), 0);
    CHECK(strcmp(d.name, "x/") == 0);
    CHECK_EQ_INT(parse("/exchange/e%2F1/k%2F2", &d), 0);
    CHECK(strcmp(d.name, "e/1") == 0 && strcmp(d.pattern, "k/2") == 0);
    CHECK_EQ_INT(parse("/queue/50%", &d), 0);
    CHECK(strcmp(d.name, "50%") == 0);
    CHECK_EQ_INT(parse("/queue/%2", &d), 0);
    CHECK(strcmp(d.name, "%2") == 0);
    CHECK_EQ_INT(parse("q%2Fr", &d), 0);
    CHECK(d.kind == DEST_QUEUE && strcmp(d.name, "q/r") == 0);
}

static void test_parse_errors(void)
{
    struct dest d;
    const char *reason = NULL;
    CHECK_EQ_INT(dest_parse("/foo/bar", 8, &d, &reason), DEST_E_UNKNOWN);
    CHECK(reason && strcmp(reason, "Unknown destination") == 0);
    CHECK_EQ_INT(parse("a/b", &d), DEST_E_UNKNOWN);
    CHECK_EQ_INT(parse("/queuex", &d), DEST_E_UNKNOWN);
    CHECK_EQ_INT(parse("/queue", &d), DEST_E_INVALID); /* a type without a name, as RabbitMQ splits it */
    CHECK_EQ_INT(d.kind, DEST_QUEUE);
    CHECK_EQ_INT(parse("/amq/queue", &d), DEST_E_INVALID);
    CHECK_EQ_INT(d.kind, DEST_AMQ_QUEUE);
    reason = NULL;
    CHECK_EQ_INT(dest_parse("/queue/", 7, &d, &reason), DEST_E_INVALID);
    CHECK(reason && strcmp(reason, "Invalid destination") == 0 && d.kind == DEST_QUEUE);
    CHECK_EQ_INT(parse("/queue/a/b", &d), DEST_E_INVALID);
    CHECK_EQ_INT(parse("/topic/a/b", &d), DEST_E_INVALID);
    CHECK_EQ_INT(d.kind, DEST_TOPIC);
    CHECK_EQ_INT(parse("/topic/", &d), DEST_E_INVALID);
    CHECK_EQ_INT(parse("/exchange/", &d), DEST_E_INVALID);
    CHECK_EQ_INT(parse("/exchange//k", &d), DEST_E_INVALID);
    CHECK_EQ_INT(parse("/exchange/x/k/z", &d), DEST_E_INVALID);
    CHECK_EQ_INT(parse("/amq/queue/", &d), DEST_E_INVALID);
    CHECK_EQ_INT(parse("/reply-queue/", &d), DEST_E_INVALID);
    CHECK_EQ_INT(parse("/temp-queue/a/b", &d), DEST_E_INVALID);
    CHECK_EQ_INT(parse("", &d), DEST_E_INVALID);
    char long_name[300];
    memset(long_name, 'a', sizeof(long_name));
    memcpy(long_name, "/queue/", 7);
    CHECK_EQ_INT(dest_parse(long_name, 7 + 255, &d, &reason), 0);
    CHECK_EQ_INT(strlen(d.name), 255);
    CHECK_EQ_INT(dest_parse(long_name, 7 + 256, &d, &reason), DEST_E_INVALID);
}

static void test_error_body(void)
{
    char buf[512];
    dest_error_body(DEST_E_UNKNOWN, DEST_QUEUE, "/foo", 4, buf, sizeof(buf));
    CHECK(strcmp(buf, "'/foo' is not a valid destination.\nValid destination types are: /temp-queue, /exchange, /topic, "
                      "/queue, /amq/queue, /reply-queue/.\n") == 0);
    /* RabbitMQ's words, byte for byte (3.10 and its plugin's own tests): the part after the type is quoted. */
    static const struct {
        const char *dest, *kind, *body;
    } cases[] = {
        {"/topic/a/b", "topic", "'/a/b' is not a valid topic destination\n"},
        {"/queue/bah/baz", "queue", "'/bah/baz' is not a valid queue destination\n"},
        {"/queue/", "queue", "'/' is not a valid queue destination\n"},
        {"/queue", "queue", "'' is not a valid queue destination\n"},
        {"/exchange//foo", "exchange", "'//foo' is not a valid exchange destination\n"},
        {"/exchange/bah/baz/boo", "exchange", "'/bah/baz/boo' is not a valid exchange destination\n"},
        {"/amq/queue/a/b", "amqqueue", "'/a/b' is not a valid amqqueue destination\n"},
        {"/temp-queue/a/b", "temp_queue", "'/a/b' is not a valid temp_queue destination\n"},
        {"/reply-queue/", "reply_queue", "'/' is not a valid reply_queue destination\n"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct dest d;
        int r = parse(cases[i].dest, &d);
        CHECK_EQ_INT(r, DEST_E_INVALID);
        CHECK(strcmp(dest_kind_str(d.kind), cases[i].kind) == 0);
        dest_error_body(r, d.kind, cases[i].dest, strlen(cases[i].dest), buf, sizeof(buf));
        CHECK(strcmp(buf, cases[i].body) == 0);
        if (strcmp(buf, cases[i].body) != 0)
            fprintf(stderr, "%s: %s", cases[i].dest, buf);
    }
    dest_error_body(DEST_E_INVALID, DEST_QUEUE, "", 0, buf, sizeof(buf));
    CHECK(strcmp(buf, "Destination cannot be blank") == 0);
    dest_error_body(DEST_E_UNKNOWN, DEST_QUEUE, "/foo", 4, buf, 5);
    CHECK(strlen(buf) == 4);
}

static void test_known_prefix(void)
{
    CHECK(dest_has_known_prefix("/queue/x", 8));
    CHECK(dest_has_known_prefix("/reply-queue/x", 14));
    CHECK(dest_has_known_prefix("/temp-queue/", 12));
    CHECK(!dest_has_known_prefix("amq.gen-1", 9));
    CHECK(!dest_has_known_prefix("/queue", 6));
}

static void test_format(void)
{
    char out[DEST_FORMAT_MAX];
    CHECK_EQ_INT(dest_format("", "q1", "amq.topic", out, sizeof(out)), 9);
    CHECK(strcmp(out, "/queue/q1") == 0);
    dest_format("amq.topic", "a.b", "amq.topic", out, sizeof(out));
    CHECK(strcmp(out, "/topic/a.b") == 0);
    dest_format("my.topic", "a.b", "my.topic", out, sizeof(out));
    CHECK(strcmp(out, "/topic/a.b") == 0);
    dest_format("amq.topic", "a.b", "my.topic", out, sizeof(out));
    CHECK(strcmp(out, "/exchange/amq.topic/a.b") == 0);
    dest_format("ex", "", "amq.topic", out, sizeof(out));
    CHECK(strcmp(out, "/exchange/ex") == 0);
    dest_format("e/x", "k/%\x01\xc3\xa9", "amq.topic", out, sizeof(out));
    CHECK(strcmp(out, "/exchange/e%2Fx/k%2F%25%01%C3%A9") == 0);
    /* truncation: returns the full length, writes a terminated prefix */
    size_t need = dest_format("", "abcdef", NULL, out, 5);
    CHECK_EQ_INT(need, 13);
    CHECK(strcmp(out, "/que") == 0);
    /* round trip of an escaped '/' */
    struct dest d;
    dest_format("", "a/b", NULL, out, sizeof(out));
    CHECK_EQ_INT(parse(out, &d), 0);
    CHECK(strcmp(d.name, "a/b") == 0);
}

static void test_base64url(void)
{
    char out[32];
    CHECK_EQ_INT(dest_base64url((const uint8_t *)"", 0, out), 0);
    dest_base64url((const uint8_t *)"f", 1, out);
    CHECK(strcmp(out, "Zg") == 0);
    dest_base64url((const uint8_t *)"fo", 2, out);
    CHECK(strcmp(out, "Zm8") == 0);
    dest_base64url((const uint8_t *)"foobar", 6, out);
    CHECK(strcmp(out, "Zm9vYmFy") == 0);
    const uint8_t x[] = {0xfb, 0xff, 0xfe};
    dest_base64url(x, 3, out);
    CHECK(strcmp(out, "-__-") == 0);
}

static void test_queue_names(void)
{
    struct dest d;
    char a[DEST_NAME_MAX + 1], b[DEST_NAME_MAX + 1];
    CHECK_EQ_INT(parse("/topic/news", &d), 0);
    CHECK_EQ_INT(dest_sub_queue_name_durable(&d, "sub-1", 5, a), 0);
    CHECK(strncmp(a, "stomp-subscription-", 19) == 0 && strlen(a) == 19 + 22);
    CHECK_EQ_INT(dest_sub_queue_name_durable(&d, "sub-1", 5, b), 0);
    CHECK(strcmp(a, b) == 0);
    CHECK_EQ_INT(dest_sub_queue_name_durable(&d, "sub-2", 5, b), 0);
    CHECK(strcmp(a, b) != 0);
    /* the same key on /exchange/amq.topic/news hashes the same (the exchange is not part of the name) */
    CHECK_EQ_INT(parse("/exchange/amq.topic/news", &d), 0);
    CHECK_EQ_INT(dest_sub_queue_name_durable(&d, "sub-1", 5, b), 0);
    CHECK(strcmp(a, b) == 0);
    CHECK_EQ_INT(parse("/exchange/amq.topic", &d), 0);
    CHECK_EQ_INT(dest_sub_queue_name_durable(&d, "sub-1", 5, b), 0);
    CHECK(strcmp(a, b) != 0);
    CHECK_EQ_INT(dest_sub_queue_name_durable(&d, "", 0, b), 0);
    CHECK(strlen(b) == 41);
    uint8_t rnd[16] = {0};
    dest_sub_queue_name_random(rnd, a);
    CHECK(strcmp(a, "stomp-subscription-AAAAAAAAAAAAAAAAAAAAAA") == 0);
}

static struct stomp_header hdr(const char *n, const char *v)
{
    return (struct stomp_header){.name = n, .name_len = strlen(n), .value = v, .value_len = strlen(v)};
}

static const struct upstream_arg *find_arg(const struct dest_args *a, const char *key)
{
    for (size_t i = 0; i < a->n; i++)
        if (strcmp(a->v[i].key, key) == 0)
            return &a->v[i];
    return NULL;
}

static void test_bool_headers(void)
{
    struct stomp_header h[] = {hdr("a", "true"), hdr("b", "False"), hdr("c", "yes"), hdr("a", "false")};
    CHECK(dest_header_bool(h, 4, "a", false));
    CHECK(!dest_header_bool(h, 4, "b", true));
    CHECK(dest_header_bool(h, 4, "c", true) && !dest_header_bool(h, 4, "c", false));
    CHECK(dest_header_bool(h, 4, "missing", true));
    struct stomp_header p[] = {hdr("persistent", "true")};
    CHECK(dest_header_durable(p, 1));
    CHECK(!dest_header_durable(h, 4));
}

static void test_queue_opts_defaults(void)
{
    struct dest_queue_opts o;
    const char *reason, *bad;
    CHECK_EQ_INT(dest_queue_opts_parse(DEST_QUEUE, NULL, 0, &o, &reason, &bad), 0);
    CHECK_EQ_INT(o.flags, UPSTREAM_Q_DURABLE);
    CHECK_EQ_INT(o.args.n, 0);
    struct stomp_header nd[] = {hdr("durable", "false")};
    CHECK_EQ_INT(dest_queue_opts_parse(DEST_QUEUE, nd, 1, &o, &reason, &bad), 0);
    CHECK_EQ_INT(o.flags, UPSTREAM_Q_AUTO_DELETE);
    CHECK_EQ_INT(dest_queue_opts_parse(DEST_TOPIC, NULL, 0, &o, &reason, &bad), 0);
    CHECK_EQ_INT(o.flags, UPSTREAM_Q_AUTO_DELETE);
    struct stomp_header tex[] = {hdr("exclusive", "true")};
    CHECK_EQ_INT(dest_queue_opts_parse(DEST_TOPIC, tex, 1, &o, &reason, &bad), 0);
    CHECK_EQ_INT(o.flags, UPSTREAM_Q_EXCLUSIVE | UPSTREAM_Q_AUTO_DELETE);
    struct stomp_header du[] = {hdr("durable", "true")};
    CHECK_EQ_INT(dest_queue_opts_parse(DEST_EXCHANGE, du, 1, &o, &reason, &bad), 0);
    CHECK_EQ_INT(o.flags, UPSTREAM_Q_DURABLE | UPSTREAM_Q_AUTO_DELETE);
    struct stomp_header dk[] = {hdr("persistent", "true"), hdr("auto-delete", "false")};
    CHECK_EQ_INT(dest_queue_opts_parse(DEST_TOPIC, dk, 2, &o, &reason, &bad), 0);
    CHECK_EQ_INT(o.flags, UPSTREAM_Q_DURABLE);
    struct stomp_header ex[] = {hdr("exclusive", "true")};
    CHECK_EQ_INT(dest_queue_opts_parse(DEST_QUEUE, ex, 1, &o, &reason, &bad), 0);
    CHECK_EQ_INT(o.flags, UPSTREAM_Q_DURABLE | UPSTREAM_Q_EXCLUSIVE);
    struct stomp_header qq[] = {hdr("x-queue-type", "quorum"), hdr("durable", "false"), hdr("exclusive", "true")};
    CHECK_EQ_INT(dest_queue_opts_parse(DEST_QUEUE, qq, 3, &o, &reason, &bad), 0);
    CHECK_EQ_INT(o.flags, UPSTREAM_Q_DURABLE);
    const struct upstream_arg *a = find_arg(&o.args, "x-queue-type");
    CHECK(a && a->type == UPSTREAM_ARG_STR && strcmp(a->str, "quorum") == 0);
}

static void test_queue_opts_args(void)
{
    struct dest_queue_opts o;
    const char *reason = NULL, *bad = NULL;
    struct stomp_header h[] = {hdr("x-message-ttl", "60000"),        hdr("x-max-length", "-1"),
                               hdr("x-dead-letter-exchange", "dlx"), hdr("x-max-age", "7D"),
                               hdr("x-overflow", "reject-publish"),  hdr("x-max-priority", "10")};
    CHECK_EQ_INT(dest_queue_opts_parse(DEST_QUEUE, h, 6, &o, &reason, &bad), 0);
    CHECK_EQ_INT(o.args.n, 5);
    const struct upstream_arg *a = find_arg(&o.args, "x-message-ttl");
    CHECK(a && a->type == UPSTREAM_ARG_INT && a->num == 60000);
    a = find_arg(&o.args, "x-max-length");
    CHECK(a && a->num == -1);
    a = find_arg(&o.args, "x-dead-letter-exchange");
    CHECK(a && a->type == UPSTREAM_ARG_STR && strcmp(a->str, "dlx") == 0);
    a = find_arg(&o.args, "x-max-age");
    CHECK(a && strcmp(a->str, "7D") == 0);
    CHECK(find_arg(&o.args, "x-overflow") == NULL);
    struct stomp_header e[] = {hdr("x-expires", "10s")};
    CHECK_EQ_INT(dest_queue_opts_parse(DEST_QUEUE, e, 1, &o, &reason, &bad), DEST_E_HEADER);
    CHECK(strcmp(reason, "Invalid header") == 0 && strcmp(bad, "x-expires") == 0);
    struct stomp_header e2[] = {hdr("x-max-length-bytes", "")};
    CHECK_EQ_INT(dest_queue_opts_parse(DEST_QUEUE, e2, 1, &o, &reason, &bad), DEST_E_HEADER);
    char big[300];
    memset(big, 'x', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    struct stomp_header e3[] = {hdr("x-dead-letter-routing-key", big)};
    CHECK_EQ_INT(dest_queue_opts_parse(DEST_QUEUE, e3, 1, &o, &reason, &bad), DEST_E_HEADER);
    CHECK(strcmp(bad, "x-dead-letter-routing-key") == 0);
}

static void test_consume_args(void)
{
    struct dest_args a;
    const char *reason = NULL, *bad = NULL;
    struct stomp_header h[] = {hdr("x-priority", "5"), hdr("x-stream-offset", "offset=42"), hdr("x-stream-filter", "a,b"),
                               hdr("x-stream-match-unfiltered", "true")};
    CHECK_EQ_INT(dest_consume_args_parse(h, 4, &a, &reason, &bad), 0);
    CHECK_EQ_INT(a.n, 4);
    const struct upstream_arg *x = find_arg(&a, "x-priority");
    CHECK(x && x->type == UPSTREAM_ARG_INT && x->num == 5);
    x = find_arg(&a, "x-stream-offset");
    CHECK(x && x->type == UPSTREAM_ARG_INT && x->num == 42);
    x = find_arg(&a, "x-stream-match-unfiltered");
    CHECK(x && x->type == UPSTREAM_ARG_BOOL && x->num == 1);
    struct stomp_header f[] = {hdr("x-stream-offset", "first")};
    CHECK_EQ_INT(dest_consume_args_parse(f, 1, &a, &reason, &bad), 0);
    CHECK(a.n == 1 && a.v[0].type == UPSTREAM_ARG_STR && strcmp(a.v[0].str, "first") == 0);
    struct stomp_header t[] = {hdr("x-stream-offset", "timestamp=1700000000")};
    CHECK_EQ_INT(dest_consume_args_parse(t, 1, &a, &reason, &bad), 0);
    CHECK(a.n == 1 && a.v[0].type == UPSTREAM_ARG_TIMESTAMP && a.v[0].num == 1700000000); /* a time, not offset T */
    struct stomp_header tn[] = {hdr("x-stream-offset", "timestamp=-1")};
    CHECK_EQ_INT(dest_consume_args_parse(tn, 1, &a, &reason, &bad), DEST_E_HEADER);
    struct stomp_header b1[] = {hdr("x-stream-offset", "middle")};
    CHECK_EQ_INT(dest_consume_args_parse(b1, 1, &a, &reason, &bad), DEST_E_HEADER);
    CHECK(strcmp(bad, "x-stream-offset") == 0);
    struct stomp_header b2[] = {hdr("x-priority", "high")};
    CHECK_EQ_INT(dest_consume_args_parse(b2, 1, &a, &reason, &bad), DEST_E_HEADER);
    CHECK_EQ_INT(dest_consume_args_parse(NULL, 0, &a, &reason, &bad), 0);
    CHECK_EQ_INT(a.n, 0);
}

static void test_parse_int(void)
{
    int64_t v;
    CHECK(dest_parse_int("0", 1, &v) == 0 && v == 0);
    CHECK(dest_parse_int("-12", 3, &v) == 0 && v == -12);
    CHECK(dest_parse_int("9223372036854775807", 19, &v) == 0 && v == INT64_MAX);
    CHECK(dest_parse_int("9223372036854775808", 19, &v) != 0);
    CHECK(dest_parse_int("", 0, &v) != 0);
    CHECK(dest_parse_int("-", 1, &v) != 0);
    CHECK(dest_parse_int("+1", 2, &v) != 0);
    CHECK(dest_parse_int("1 ", 2, &v) != 0);
}

int main(void)
{
    RUN(test_parse_ok);
    RUN(test_parse_unescape);
    RUN(test_parse_errors);
    RUN(test_error_body);
    RUN(test_known_prefix);
    RUN(test_format);
    RUN(test_base64url);
    RUN(test_queue_names);
    RUN(test_bool_headers);
    RUN(test_queue_opts_defaults);
    RUN(test_queue_opts_args);
    RUN(test_consume_args);
    RUN(test_parse_int);
    return harness_done();
}
