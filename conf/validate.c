/*
 * conf/validate.c — checks that involve more than one key, or the inside of a value (broker addresses, paths).
 *
 * Single values were already range-checked when parsed; what is left are combinations that would make the server
 * misbehave rather than fail to start: a body limit above the frame limit can never be reached, a certificate without
 * its key cannot serve TLS, a reconnect backoff whose floor is above its ceiling never backs off. They run once, after
 * the file and every `-o` were applied, because `-o` may fix what the file alone got wrong.
 */
#include "conf/conf.h"
#include "conf/internal.h"

#include <string.h>

/* "host:port" or "[v6addr]:port", port 1..65535 in decimal. */
static bool broker_ok(const char *s)
{
    const char *colon = strrchr(s, ':');
    unsigned long port = 0;
    size_t host_len;

    if (!colon || colon[1] == '\0' || strlen(colon + 1) > 5)
        return false;
    for (const char *p = colon + 1; *p; p++) {
        if (*p < '0' || *p > '9')
            return false;
        port = port * 10 + (unsigned long)(*p - '0');
    }
    if (port == 0 || port > 65535)
        return false;
    host_len = (size_t)(colon - s);
    if (host_len == 0)
        return false;
    if (s[0] == '[')
        return host_len > 2 && s[host_len - 1] == ']' && memchr(s + 1, ']', host_len - 1) == s + host_len - 1;
    return memchr(s, ':', host_len) == NULL && memchr(s, '[', host_len) == NULL && memchr(s, ']', host_len) == NULL;
}

static int check_limits(const struct conf *c, char *err, size_t errlen)
{
    if (c->max_body_bytes > c->max_frame_bytes) {
        conf_errf(err, errlen, "max_body_bytes: %zu is above max_frame_bytes (%zu)", c->max_body_bytes, c->max_frame_bytes);
        return CONF_E_INVALID;
    }
    if (c->max_frame_bytes_unauthenticated > c->max_frame_bytes) {
        conf_errf(err, errlen, "max_frame_bytes_unauthenticated: %zu is above max_frame_bytes (%zu)",
                  c->max_frame_bytes_unauthenticated, c->max_frame_bytes);
        return CONF_E_INVALID;
    }
    if (c->max_header_line_bytes > c->max_frame_bytes) {
        conf_errf(err, errlen, "max_header_line_bytes: %zu is above max_frame_bytes (%zu)", c->max_header_line_bytes,
                  c->max_frame_bytes);
        return CONF_E_INVALID;
    }
    if (c->client_send_buffer_bytes > c->client_send_limit_bytes) {
        conf_errf(err, errlen, "client_send_buffer_bytes: %zu is above client_send_limit_bytes (%zu)", c->client_send_buffer_bytes,
                  c->client_send_limit_bytes);
        return CONF_E_INVALID;
    }
    if (c->default_prefetch_count > c->max_prefetch_count) {
        conf_errf(err, errlen, "default_prefetch_count: %d is above max_prefetch_count (%d)", c->default_prefetch_count,
                  c->max_prefetch_count);
        return CONF_E_INVALID;
    }
    return 0;
}

static int check_listeners(const struct conf *c, char *err, size_t errlen)
{
    bool cert = c->tls_cert_file[0] != '\0', key = c->tls_key_file[0] != '\0';
    if (c->listen_port == 0 && c->tls_listen_port == 0) {
        conf_errf(err, errlen, "listen_port: no listener: listen_port and tls_listen_port are both 0");
        return CONF_E_INVALID;
    }
    if (c->listen_port != 0 && c->listen_port == c->tls_listen_port) {
        conf_errf(err, errlen, "tls_listen_port: %d is also listen_port", c->tls_listen_port);
        return CONF_E_INVALID;
    }
    if (cert != key) {
        conf_errf(err, errlen, "%s: set without %s", cert ? "tls_cert_file" : "tls_key_file",
                  cert ? "tls_key_file" : "tls_cert_file");
        return CONF_E_INVALID;
    }
    if (c->tls_listen_port != 0 && !cert) {
        conf_errf(err, errlen, "tls_listen_port: needs tls_cert_file and tls_key_file");
        return CONF_E_INVALID;
    }
    if (c->ws_path[0] != '/') {
        conf_errf(err, errlen, "ws_path: must start with '/'");
        return CONF_E_INVALID;
    }
    return 0;
}

static int check_amqp(const struct conf *c, char *err, size_t errlen)
{
    if (c->brokers.n == 0) {
        conf_errf(err, errlen, "brokers: no broker given");
        return CONF_E_INVALID;
    }
    for (size_t i = 0; i < c->brokers.n; i++) {
        if (!broker_ok(c->brokers.items[i])) {
            conf_errf(err, errlen, "brokers: '%s' is not host:port", c->brokers.items[i]);
            return CONF_E_INVALID;
        }
    }
    if (c->amqp_reconnect_min_ms > c->amqp_reconnect_max_ms) {
        conf_errf(err, errlen, "amqp_reconnect_min_ms: %d is above amqp_reconnect_max_ms (%d)", c->amqp_reconnect_min_ms,
                  c->amqp_reconnect_max_ms);
        return CONF_E_INVALID;
    }
    return 0;
}

int conf_validate(const struct conf *c, char *err, size_t errlen)
{
    int r = check_limits(c, err, errlen);
    if (r == 0)
        r = check_listeners(c, err, errlen);
    if (r == 0)
        r = check_amqp(c, err, errlen);
    return r;
}
