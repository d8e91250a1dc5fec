/*
 * bridge/peer.c — see peer.h. The address is parsed back with inet_pton() rather than compared as text, so every
 * spelling of a loopback address counts ("127.1.2.3", "::1", "::ffff:127.0.0.1", "0:0:0:0:0:0:0:1") and nothing else
 * does ("127.0.0.1.example", "::ffff:128.0.0.1").
 */
#include "bridge/peer.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdint.h>
#include <string.h>

/* Copies the host part of `peer` ("h:port" or "[h]:port", port in digits) into `host`; false when the shape is wrong. */
static bool host_of(const char *peer, char *host, size_t cap)
{
    const char *start = peer, *end, *port;
    if (peer[0] == '[') {
        start = peer + 1;
        end = strchr(start, ']');
        if (!end || end[1] != ':')
            return false;
        port = end + 2;
    } else {
        end = strrchr(peer, ':');
        if (!end || memchr(peer, ':', (size_t)(end - peer))) /* a bare IPv6 address has no port we can split off */
            return false;
        port = end + 1;
    }
    if (*port == '\0' || strspn(port, "0123456789") != strlen(port))
        return false;
    size_t n = (size_t)(end - start);
    if (n == 0 || n >= cap)
        return false;
    memcpy(host, start, n);
    host[n] = '\0';
    return true;
}

bool peer_is_loopback(const char *peer)
{
    char host[INET6_ADDRSTRLEN + 1];
    struct in_addr a4;
    struct in6_addr a6;
    static const uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    if (!peer || !host_of(peer, host, sizeof(host)))
        return false;
    if (inet_pton(AF_INET, host, &a4) == 1)
        return (ntohl(a4.s_addr) >> 24) == 127;
    if (inet_pton(AF_INET6, host, &a6) != 1)
        return false;
    if (IN6_IS_ADDR_LOOPBACK(&a6))
        return true;
    return memcmp(a6.s6_addr, mapped, sizeof(mapped)) == 0 && a6.s6_addr[12] == 127;
}

size_t peer_addr_key(const struct sockaddr *sa, uint8_t out[16])
{
    static const uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    if (sa->sa_family == AF_INET) {
        memcpy(out, &((const struct sockaddr_in *)sa)->sin_addr, 4);
        return 4;
    }
    if (sa->sa_family != AF_INET6)
        return 0;
    const uint8_t *a = ((const struct sockaddr_in6 *)sa)->sin6_addr.s6_addr;
    if (memcmp(a, mapped, sizeof(mapped)) == 0) {
        memcpy(out, a + 12, 4);
        return 4;
    }
    memcpy(out, a, 8);
    return 8;
}

size_t peer_client_key(const char *peer, uint8_t out[16])
{
    char host[INET6_ADDRSTRLEN + 1];
    struct sockaddr_in a4 = {.sin_family = AF_INET};
    struct sockaddr_in6 a6 = {.sin6_family = AF_INET6};
    if (!peer || !host_of(peer, host, sizeof(host)))
        return 0;
    if (inet_pton(AF_INET, host, &a4.sin_addr) == 1)
        return peer_addr_key((const struct sockaddr *)&a4, out);
    if (inet_pton(AF_INET6, host, &a6.sin6_addr) == 1)
        return peer_addr_key((const struct sockaddr *)&a6, out);
    return 0;
}
