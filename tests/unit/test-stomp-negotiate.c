/*
 * tests/unit/test-stomp-negotiate.c — version and heart-beat negotiation and the heart-beat tracker
 * (stomp/negotiate.h). Time is simulated: every call gets its `now`, nothing sleeps.
 */
#include "harness.h"

#include <string.h>

#include "stomp/negotiate.h"

#define CHECK_STR(a, b)                                                                                                            \
    do {                                                                                                                           \
        const char *a_ = (a), *b_ = (b);                                                                                           \
        harness_checks++;                                                                                                          \
        if (!a_ || strcmp(a_, b_) != 0) {                                                                                          \
            harness_failures++;                                                                                                    \
            fprintf(stderr, "%s:%d: \"%s\" != \"%s\"\n", __FILE__, __LINE__, a_ ? a_ : "(null)", b_);                              \
        }                                                                                                                          \
    } while (0)

/* Negotiates `value` (NULL = header absent) against `mask` with the value placed before a guard page. */
static int negotiate(const char *value, unsigned mask, enum stomp_version *v, const char **reason)
{
    struct guard_slot slot = {0};
    const char *g = value ? guard_copy(&slot, value, strlen(value)) : NULL;
    *v = (enum stomp_version)99;
    int r = stomp_version_negotiate(g, value ? strlen(value) : 0, mask, v, reason);
    guard_free(&slot);
    return r;
}

static void test_version(void)
{
    enum stomp_version v;
    const char *reason = NULL;
    static const struct {
        const char *value;
        unsigned mask;
        int want;
        enum stomp_version v;
    } cases[] = {
        {NULL, STOMP_VERSIONS_ALL, 0, STOMP_V1_0},
        {"1.0", STOMP_VERSIONS_ALL, 0, STOMP_V1_0},
        {"1.1", STOMP_VERSIONS_ALL, 0, STOMP_V1_1},
        {"1.2", STOMP_VERSIONS_ALL, 0, STOMP_V1_2},
        {"1.0,1.1,1.2", STOMP_VERSIONS_ALL, 0, STOMP_V1_2},
        {"1.2,1.1,1.0", STOMP_VERSIONS_ALL, 0, STOMP_V1_2}, /* @stomp/stompjs order */
        {"1.0,1.1,2.0", STOMP_VERSIONS_ALL, 0, STOMP_V1_1}, /* the spec's example */
        {"1.0, 1.1", STOMP_VERSIONS_ALL, 0, STOMP_V1_1},
        {"1.1,", STOMP_VERSIONS_ALL, 0, STOMP_V1_1},
        {",,1.0", STOMP_VERSIONS_ALL, 0, STOMP_V1_0},
        {"1.0,1.1,1.2", STOMP_VERSION_BIT(STOMP_V1_0) | STOMP_VERSION_BIT(STOMP_V1_1), 0, STOMP_V1_1},
        {NULL, STOMP_VERSION_BIT(STOMP_V1_2), STOMP_E_VERSION, 0},
        {"", STOMP_VERSIONS_ALL, STOMP_E_VERSION, 0},
        {"2.0", STOMP_VERSIONS_ALL, STOMP_E_VERSION, 0},
        {"1.3,1.20,11,1.", STOMP_VERSIONS_ALL, STOMP_E_VERSION, 0},
        {"1.2", STOMP_VERSION_BIT(STOMP_V1_0) | STOMP_VERSION_BIT(STOMP_V1_1), STOMP_E_VERSION, 0},
        {"1.2", 0, STOMP_E_VERSION, 0},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        reason = NULL;
        int r = negotiate(cases[i].value, cases[i].mask, &v, &reason);
        CHECK_EQ_INT(r, cases[i].want);
        if (r == 0)
            CHECK_EQ_INT(v, cases[i].v);
        else
            CHECK(reason != NULL);
    }
    CHECK_EQ_INT(negotiate("9.9", STOMP_VERSIONS_ALL, &v, &reason), STOMP_E_VERSION);
    CHECK_STR(reason, "Supported protocol versions are 1.0,1.1,1.2");
    CHECK_EQ_INT(negotiate("9.9", STOMP_VERSION_BIT(STOMP_V1_2), &v, &reason), STOMP_E_VERSION);
    CHECK_STR(reason, "Supported protocol versions are 1.2");
    CHECK_STR(stomp_version_list_str(STOMP_VERSIONS_ALL), "1.0,1.1,1.2");
    CHECK_STR(stomp_version_list_str(STOMP_VERSION_BIT(STOMP_V1_1) | STOMP_VERSION_BIT(STOMP_V1_2)), "1.1,1.2");
    CHECK_STR(stomp_version_list_str(0), "");
}

static int hb_parse(const char *value, uint32_t *cx, uint32_t *cy)
{
    struct guard_slot slot = {0};
    const char *g = value ? guard_copy(&slot, value, strlen(value)) : NULL;
    const char *reason = NULL;
    *cx = *cy = 77;
    int r = stomp_heartbeat_parse(g, value ? strlen(value) : 0, cx, cy, &reason);
    CHECK(r == 0 || reason != NULL);
    guard_free(&slot);
    return r;
}

static void test_heartbeat_parse(void)
{
    uint32_t cx, cy;
    CHECK_EQ_INT(hb_parse(NULL, &cx, &cy), 0);
    CHECK(cx == 0 && cy == 0);
    CHECK_EQ_INT(hb_parse("0,0", &cx, &cy), 0);
    CHECK(cx == 0 && cy == 0);
    CHECK_EQ_INT(hb_parse("10000,10000", &cx, &cy), 0);
    CHECK(cx == 10000 && cy == 10000);
    CHECK_EQ_INT(hb_parse("0,5000", &cx, &cy), 0);
    CHECK(cx == 0 && cy == 5000);
    CHECK_EQ_INT(hb_parse("4294967295,007", &cx, &cy), 0);
    CHECK(cx == 4294967295u && cy == 7);
    static const char *const bad[] = {"",
                                      ",",
                                      "1,",
                                      ",1",
                                      "1",
                                      "1,2,3",
                                      " 1,2",
                                      "1 ,2",
                                      "1, 2",
                                      "1,2 ",
                                      "-1,0",
                                      "+1,0",
                                      "1.5,0",
                                      "a,b",
                                      "1;2",
                                      "4294967296,0",
                                      "0,99999999999999999999"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        CHECK_EQ_INT(hb_parse(bad[i], &cx, &cy), STOMP_E_PROTOCOL);
        CHECK(cx == 77 && cy == 77);
    }
}

static void test_heartbeat_negotiate(void)
{
    uint32_t s, r;
    /* Spec: each side's interval is the max of what one can do and the other wants; 0 on either side disables. */
    stomp_heartbeat_negotiate(10000, 10000, 5000, 5000, 0, &s, &r);
    CHECK(s == 10000 && r == 10000);
    stomp_heartbeat_negotiate(4000, 6000, 5000, 3000, 0, &s, &r);
    CHECK(s == 6000 && r == 4000);
    stomp_heartbeat_negotiate(0, 6000, 5000, 3000, 0, &s, &r);
    CHECK(s == 6000 && r == 0);
    stomp_heartbeat_negotiate(4000, 0, 5000, 3000, 0, &s, &r);
    CHECK(s == 0 && r == 4000);
    stomp_heartbeat_negotiate(4000, 6000, 0, 0, 1000, &s, &r);
    CHECK(s == 0 && r == 0);
    stomp_heartbeat_negotiate(0, 0, 5000, 5000, 1000, &s, &r);
    CHECK(s == 0 && r == 0);
    /* The server floor: a client asking for 10 ms does not get 10 ms. */
    stomp_heartbeat_negotiate(10, 10, 1, 1, 1000, &s, &r);
    CHECK(s == 1000 && r == 1000);
    stomp_heartbeat_negotiate(1000, 999, 1, 1, 1000, &s, &r);
    CHECK(s == 1000 && r == 1000);
    stomp_heartbeat_negotiate(UINT32_MAX, UINT32_MAX, 1, 1, 1000, &s, &r);
    CHECK(s == UINT32_MAX && r == UINT32_MAX);
}

static void test_tracker(void)
{
    struct stomp_heartbeat hb;
    bool beat = true;
    uint64_t t0 = 1000000;
    stomp_heartbeat_init(&hb, 5000, 4000, 200, t0);
    CHECK_EQ_INT(stomp_heartbeat_next_deadline(&hb), t0 + 5000);
    CHECK_EQ_INT(stomp_heartbeat_tick(&hb, t0 + 4999, &beat), 0);
    CHECK(!beat);
    CHECK_EQ_INT(stomp_heartbeat_tick(&hb, t0 + 5000, &beat), 0);
    CHECK(beat);
    stomp_heartbeat_sent(&hb, t0 + 5000);
    /* Receive side: 4000 ms x 200% = 8000 ms of silence allowed. */
    CHECK_EQ_INT(stomp_heartbeat_next_deadline(&hb), t0 + 8000);
    CHECK_EQ_INT(stomp_heartbeat_tick(&hb, t0 + 7999, &beat), 0);
    CHECK(!beat);
    stomp_heartbeat_received(&hb, t0 + 7999);
    CHECK_EQ_INT(stomp_heartbeat_next_deadline(&hb), t0 + 10000);
    CHECK_EQ_INT(stomp_heartbeat_tick(&hb, t0 + 10000, &beat), 0);
    CHECK(beat);
    stomp_heartbeat_sent(&hb, t0 + 10000);
    CHECK_EQ_INT(stomp_heartbeat_next_deadline(&hb), t0 + 15000);
    CHECK_EQ_INT(stomp_heartbeat_tick(&hb, t0 + 15998, &beat), 0);
    CHECK_EQ_INT(stomp_heartbeat_tick(&hb, t0 + 15999, &beat), STOMP_E_HEARTBEAT_TIMEOUT);
    CHECK(beat);
    /* Time going backwards is no elapsed time; an older "sent" does not move the clock back. */
    stomp_heartbeat_init(&hb, 1000, 1000, 100, t0);
    stomp_heartbeat_sent(&hb, t0 - 500);
    stomp_heartbeat_received(&hb, t0 - 500);
    CHECK_EQ_INT(stomp_heartbeat_tick(&hb, t0 - 10000, &beat), 0);
    CHECK(!beat);
    CHECK_EQ_INT(stomp_heartbeat_next_deadline(&hb), t0 + 1000);
    CHECK_EQ_INT(stomp_heartbeat_tick(&hb, t0 + 1000, &beat), STOMP_E_HEARTBEAT_TIMEOUT);
    /* Tolerance below 100% is raised to 100%. */
    stomp_heartbeat_init(&hb, 0, 1000, 10, 0);
    CHECK_EQ_INT(stomp_heartbeat_tick(&hb, 999, &beat), 0);
    CHECK_EQ_INT(stomp_heartbeat_tick(&hb, 1000, &beat), STOMP_E_HEARTBEAT_TIMEOUT);
    CHECK(!beat);
    /* Both off. */
    stomp_heartbeat_init(&hb, 0, 0, 200, 5);
    CHECK(stomp_heartbeat_next_deadline(&hb) == UINT64_MAX);
    CHECK_EQ_INT(stomp_heartbeat_tick(&hb, UINT64_MAX - 1, &beat), 0);
    CHECK(!beat);
    /* Send only: the deadline follows what was last sent. */
    stomp_heartbeat_init(&hb, 3000, 0, 200, 0);
    stomp_heartbeat_sent(&hb, 2000);
    CHECK_EQ_INT(stomp_heartbeat_next_deadline(&hb), 5000);
}

/* The whole exchange as bridge/ runs it, with a simulated clock. */
static void test_session_flow(void)
{
    enum stomp_version v;
    uint32_t cx, cy, send_ms, recv_ms;
    const char *reason = NULL;
    CHECK_EQ_INT(stomp_version_negotiate("1.2,1.1,1.0", 11, STOMP_VERSIONS_ALL, &v, &reason), 0);
    CHECK_EQ_INT(v, STOMP_V1_2);
    CHECK_EQ_INT(stomp_heartbeat_parse("10000,10000", 11, &cx, &cy, &reason), 0);
    stomp_heartbeat_negotiate(cx, cy, 5000, 5000, 1000, &send_ms, &recv_ms);
    CHECK(send_ms == 10000 && recv_ms == 10000);
    struct stomp_heartbeat hb;
    bool beat;
    uint64_t now = 0;
    int beats = 0, r = 0;
    stomp_heartbeat_init(&hb, send_ms, recv_ms, 200, now);
    /* The client beats every 10 s for a minute, we follow the deadlines. */
    while (now < 60000) {
        uint64_t next = stomp_heartbeat_next_deadline(&hb);
        uint64_t client = (now / 10000 + 1) * 10000;
        now = next < client ? next : client;
        if (now == client)
            stomp_heartbeat_received(&hb, now);
        r = stomp_heartbeat_tick(&hb, now, &beat);
        CHECK_EQ_INT(r, 0);
        if (beat) {
            beats++;
            stomp_heartbeat_sent(&hb, now);
        }
    }
    CHECK_EQ_INT(beats, 6);
    /* Then it goes silent: the timeout fires at 60 s + 20 s. */
    while (r == 0) {
        now = stomp_heartbeat_next_deadline(&hb);
        r = stomp_heartbeat_tick(&hb, now, &beat);
        if (beat)
            stomp_heartbeat_sent(&hb, now);
    }
    CHECK_EQ_INT(r, STOMP_E_HEARTBEAT_TIMEOUT);
    CHECK_EQ_INT(now, 80000);
}

static void test_error_str(void)
{
    CHECK_STR(stomp_error_str(STOMP_E_HEARTBEAT_TIMEOUT), "STOMP_E_HEARTBEAT_TIMEOUT");
    CHECK_STR(stomp_error_str(0), "STOMP_OK");
    CHECK_STR(stomp_error_str(STOMP_NEED_MORE), "STOMP_NEED_MORE");
    CHECK_STR(stomp_error_str(999), "STOMP_E_?");
}

int main(void)
{
    RUN(test_version);
    RUN(test_heartbeat_parse);
    RUN(test_heartbeat_negotiate);
    RUN(test_tracker);
    RUN(test_session_flow);
    RUN(test_error_str);
    return harness_done();
}
