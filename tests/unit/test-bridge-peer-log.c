/*
 * tests/unit/test-bridge-peer-log.c — bridge/peer.h: which client addresses are loopback (the loopback_users check), in
 * every form bridge/acceptor.c writes them and some it never does; bridge/log.h: log_escape() and a whole log line, read
 * back from stderr, when the prefix and the message carry a peer's control bytes.
 */
#include "bridge/log.h"
#include "bridge/peer.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"

static void test_loopback(void)
{
    static const char *const yes[] = {"127.0.0.1:5678",       "127.255.1.2:1",           "[::1]:5678",
                                      "[0:0:0:0:0:0:0:1]:80", "[::ffff:127.0.0.1]:5678", "[::ffff:127.9.9.9]:1"};
    static const char *const no[] = {"192.0.2.2:5678",
                                     "10.0.0.1:1",
                                     "128.0.0.1:1",
                                     "[::2]:5678",
                                     "[::ffff:10.0.0.1]:1",
                                     "[fe80::1]:1",
                                     "[::127.0.0.1]:1",
                                     "?",
                                     "",
                                     "127.0.0.1",
                                     "::1",
                                     "[::1]",
                                     "[::1]x",
                                     "127.0.0.1x:1",
                                     "localhost:1",
                                     "[127.0.0.1]:1x"};
    for (size_t i = 0; i < sizeof(yes) / sizeof(yes[0]); i++) {
        CHECK(peer_is_loopback(yes[i]));
        if (!peer_is_loopback(yes[i]))
            fprintf(stderr, "  not loopback: %s\n", yes[i]);
    }
    for (size_t i = 0; i < sizeof(no) / sizeof(no[0]); i++) {
        CHECK(!peer_is_loopback(no[i]));
        if (peer_is_loopback(no[i]))
            fprintf(stderr, "  loopback: %s\n", no[i]);
    }
    CHECK(!peer_is_loopback(NULL));
}

static void test_escape(void)
{
    char out[64];
    size_t used = 0;
    const char in[] = "a\nb\r\\c\td\x01\x7f\xc3\xa9";
    size_t n = log_escape(out, sizeof(out), in, sizeof(in) - 1, &used);
    CHECK(strcmp(out, "a\\nb\\r\\\\c\\td\\x01\\x7f\\xc3\\xa9") == 0);
    CHECK_EQ_INT(n, strlen(out));
    CHECK_EQ_INT(used, sizeof(in) - 1);
    /* An escape that does not fit is left out whole. */
    n = log_escape(out, 4, "ab\ncd", 5, &used);
    CHECK(strcmp(out, "ab") == 0 && n == 2 && used == 2);
    CHECK_EQ_INT(log_escape(out, 0, "x", 1, NULL), 0);
    CHECK_EQ_INT(log_escape(out, 1, "x", 1, NULL), 0);
    CHECK(out[0] == '\0');
}

/* Runs one log_msg() with stderr on a temporary file and returns what was written. */
static size_t logged(char *buf, size_t cap, const char *prefix, const char *value)
{
    FILE *tmp = tmpfile();
    int saved = dup(STDERR_FILENO);
    if (!tmp || saved < 0)
        return 0;
    fflush(stderr);
    dup2(fileno(tmp), STDERR_FILENO);
    log_msg(LOG_WARN, prefix, "SUBSCRIBE to '%s' refused", value);
    dup2(saved, STDERR_FILENO);
    close(saved);
    rewind(tmp);
    size_t n = fread(buf, 1, cap - 1, tmp);
    buf[n] = '\0';
    fclose(tmp);
    return n;
}

static void test_log_line(void)
{
    char buf[8192];
    /* A destination whose STOMP-escaped \n arrives as a real newline, with a forged line after it. */
    size_t n = logged(buf, sizeof(buf), "1.2.3.4:5\n6", "/queue/a\n2026-01-01T00:00:00.000Z ERROR forged\x1b[2J");
    CHECK(n > 0 && buf[n - 1] == '\n');
    CHECK(memchr(buf, '\n', n - 1) == NULL); /* one line, whatever the input */
    CHECK(strstr(buf, "[1.2.3.4:5\\n6] SUBSCRIBE to '/queue/a\\n2026-01-01T00:00:00.000Z ERROR forged\\x1b[2J' refused\n"));
    /* Long input is cut with "...", still one line, and not in the middle of an escape. */
    char big[4000];
    memset(big, '\n', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    n = logged(buf, sizeof(buf), NULL, big);
    CHECK(n > 0 && n <= 2048 && buf[n - 1] == '\n');
    CHECK(memchr(buf, '\n', n - 1) == NULL);
    CHECK(n > 5 && memcmp(buf + n - 6, "\\n...\n", 6) == 0);
}

/* One client, one key: an IPv4 address (or an IPv4-mapped one), an IPv6 /64, from the peer string or the socket address
 * alike (max_connections_per_ip and the login throttle count the same clients). */
static void test_client_key(void)
{
    uint8_t a[16], b[16];
    CHECK_EQ_INT(peer_client_key("10.1.2.3:5000", a), 4);
    CHECK(memcmp(a, "\x0a\x01\x02\x03", 4) == 0);
    CHECK_EQ_INT(peer_client_key("[::ffff:10.1.2.3]:1", b), 4);
    CHECK(memcmp(a, b, 4) == 0);
    CHECK_EQ_INT(peer_client_key("[2001:db8:1:2::1]:1", a), 8);
    CHECK_EQ_INT(peer_client_key("[2001:db8:1:2:ffff::9]:2", b), 8); /* same /64: same client */
    CHECK(memcmp(a, b, 8) == 0);
    CHECK_EQ_INT(peer_client_key("[2001:db8:1:3::1]:1", b), 8);
    CHECK(memcmp(a, b, 8) != 0);
    CHECK_EQ_INT(peer_client_key("nonsense", a), 0);
    struct sockaddr_in6 s6 = {.sin6_family = AF_INET6};
    inet_pton(AF_INET6, "2001:db8:1:2:abcd::7", &s6.sin6_addr);
    CHECK_EQ_INT(peer_addr_key((const struct sockaddr *)&s6, b), 8);
    CHECK_EQ_INT(peer_client_key("[2001:db8:1:2::1]:1", a), 8);
    CHECK(memcmp(a, b, 8) == 0);
    struct sockaddr_in s4 = {.sin_family = AF_INET};
    inet_pton(AF_INET, "10.1.2.3", &s4.sin_addr);
    CHECK_EQ_INT(peer_addr_key((const struct sockaddr *)&s4, b), 4);
    CHECK(memcmp(b, "\x0a\x01\x02\x03", 4) == 0);
}

int main(void)
{
    RUN(test_loopback);
    RUN(test_escape);
    RUN(test_log_line);
    RUN(test_client_key);
    return harness_done();
}
