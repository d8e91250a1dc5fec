/*
 * conf/keys.c — the key table: every setting warren has, with its type, default, range, reload flag and one-line doc.
 *
 * This is the single source of truth (pgbouncer's `bouncer_params[]` with CF_ABS rows). conf.c parses, prints and
 * copies values by walking it; `warren --help-config` prints it; doc/config.md and the sample conf/warren.conf describe
 * exactly these rows, and tests/checks/check-config-docs.sh greps the names out of this file (one `K_*(name, ...)` row
 * per key, name first) to fail the build when a key is undocumented. Defaults are written in the canonical syntax that
 * conf_value_format() prints (plain byte counts, lower-case names), and tests/unit/test-conf.c checks that they parse.
 *
 * Each row macro checks at compile time that the field in struct conf has the C type its key type needs, so a table
 * row and a struct field can never disagree.
 */
#include "conf/conf.h"

#include <stdbool.h>
#include <stddef.h>

/* Compile-time check that `expr` is an expression of `type`: a negative array size when it is not. */
#define FIELD_IS(name, type) (0 * sizeof(char[_Generic(((struct conf *)0)->name, type : 1, default : -1)]))

#define RELOAD  CONF_F_RELOADABLE
#define RESTART 0u

#define K_STR(name_, flags_, def_, doc_)                                                                                           \
    {                                                                                                                              \
        .name = #name_, .type = CONF_T_STRING, .flags = flags_, .def = def_, .doc = doc_,                                          \
        .offset = offsetof(struct conf, name_) + FIELD_IS(name_, const char *)                                                     \
    }
#define K_INT(name_, flags_, def_, min_, max_, doc_)                                                                               \
    {                                                                                                                              \
        .name = #name_, .type = CONF_T_INT, .flags = flags_, .def = #def_, .min = min_, .max = max_, .doc = doc_,                  \
        .offset = offsetof(struct conf, name_) + FIELD_IS(name_, int)                                                              \
    }
#define K_SIZE(name_, flags_, def_, min_, max_, doc_)                                                                              \
    {                                                                                                                              \
        .name = #name_, .type = CONF_T_SIZE, .flags = flags_, .def = #def_, .min = min_, .max = max_, .doc = doc_,                 \
        .offset = offsetof(struct conf, name_) + FIELD_IS(name_, size_t)                                                           \
    }
#define K_BOOL(name_, flags_, def_, doc_)                                                                                          \
    {                                                                                                                              \
        .name = #name_, .type = CONF_T_BOOL, .flags = flags_, .def = #def_, .doc = doc_,                                           \
        .offset = offsetof(struct conf, name_) + FIELD_IS(name_, bool)                                                             \
    }
#define K_ENUM(name_, flags_, def_, names_, doc_)                                                                                  \
    {                                                                                                                              \
        .name = #name_, .type = CONF_T_ENUM, .flags = flags_, .def = def_, .enum_names = names_, .doc = doc_,                      \
        .offset = offsetof(struct conf, name_) + 0 * sizeof(char[sizeof(((struct conf *)0)->name_) == sizeof(int) ? 1 : -1])       \
    }
#define K_LIST(name_, flags_, def_, items_, n_, doc_)                                                                              \
    {                                                                                                                              \
        .name = #name_, .type = CONF_T_LIST, .flags = flags_, .def = def_, .def_items = items_, .def_n = n_, .doc = doc_,          \
        .offset = offsetof(struct conf, name_) + FIELD_IS(name_, struct conf_list)                                                 \
    }

#define KIB     1024LL
#define MIB     (1024LL * 1024)
#define GIB     (1024LL * 1024 * 1024)
#define MS_HOUR 3600000
#define MS_DAY  86400000

static const char *const ws_frame_names[] = {"text", "binary", NULL};
static const char *const topic_fanout_names[] = {"broker", "local", NULL};
static const char *const log_level_names[] = {"error", "warn", "info", "debug", NULL};
static const char *const brokers_default[] = {"127.0.0.1:5672"};
static const char *const loopback_users_default[] = {"guest"};

/* clang-format off */
static const struct conf_key keys[] = {
    /* Listeners. */
    K_STR(listen_addr, RESTART, "0.0.0.0",
          "IP address the WebSocket listeners bind to (0.0.0.0 = every IPv4 address, :: = every address)"),
    K_INT(listen_port, RESTART, 15674, 0, 65535,
          "TCP port for plain WebSocket (ws://) connections; 0 = no plain listener"),
    K_STR(ws_path, RELOAD, "/ws",
          "HTTP path where the WebSocket upgrade is accepted (Web-STOMP's default is /ws)"),
    K_STR(http_root, RELOAD, "",
          "directory of static files served over HTTP at /; empty = serve none"),
    K_LIST(allow_origins, RELOAD, "", NULL, 0,
           "comma-separated Origin values allowed to upgrade; empty = any; a non-matching Origin gets 403, none is allowed"),
    K_INT(tls_listen_port, RESTART, 0, 0, 65535,
          "TCP port for WebSocket over TLS (wss://) connections; 0 = no TLS listener"),
    K_STR(tls_cert_file, RESTART, "",
          "PEM certificate chain for the TLS listener"),
    K_STR(tls_key_file, RESTART, "",
          "PEM private key for tls_cert_file"),
    K_STR(tls_ca_file, RESTART, "",
          "PEM CA bundle; when set, TLS clients must present a certificate it verifies"),
    K_INT(max_connections, RELOAD, 0, 0, 10000000,
          "most client connections open at once, over all listeners; further ones are refused; 0 = derived from RLIMIT_NOFILE"),
    K_INT(max_connections_per_ip, RELOAD, 0, 0, 10000000,
          "most client connections open at once from one IP address, over all listeners; 0 = no per-address limit"),
    K_SIZE(max_memory_bytes, RELOAD, 0, 0, 1125899906842624LL,
           "memory budget (RSS): above it new connections get 503 and clients are not read; 0 = max_memory_pct of the machine"),
    K_INT(max_memory_pct, RELOAD, 50, 0, 100,
          "the budget when max_memory_bytes is 0: this % of MemTotal or of the cgroup memory limit if lower; 0 = no budget"),
    K_INT(workers, RESTART, 0, 0, 256,
          "event loops (threads) serving clients, each with its own AMQP connections; 0 = one per core"),

    /* The AMQP side. */
    K_LIST(brokers, RESTART, "127.0.0.1:5672", brokers_default, 1,
           "comma-separated AMQP brokers as host:port ([v6addr]:port), tried in order on connect and reconnect"),
    K_STR(default_user, RESTART, "guest",
          "AMQP user for STOMP clients that send no login header"),
    K_STR(default_pass, RESTART, "guest",
          "AMQP password for STOMP clients that send neither login nor passcode (a login without passcode gets none)"),
    K_LIST(loopback_users, RELOAD, "guest", loopback_users_default, 1,
           "comma-separated AMQP users who may log in only from a loopback client address; empty = no restriction"),
    K_STR(default_vhost, RESTART, "/",
          "AMQP virtual host for STOMP clients that send no host header"),
    K_INT(amqp_heartbeat_s, RESTART, 60, 0, 65535,
          "AMQP heartbeat interval asked of the broker, in seconds; 0 = off"),
    K_INT(amqp_channel_max, RESTART, 2047, 1, 65535,
          "channels per AMQP connection, capped by what the broker negotiates"),
    K_INT(amqp_connect_timeout_ms, RESTART, 5000, 1, MS_HOUR,
          "how long one attempt to connect and log in to a broker may take"),
    K_INT(amqp_reconnect_min_ms, RESTART, 500, 1, MS_HOUR,
          "first delay before reconnecting to the brokers after a failure; doubles per failure"),
    K_INT(amqp_reconnect_max_ms, RESTART, 30000, 1, MS_HOUR,
          "longest delay between reconnection attempts"),
    K_SIZE(amqp_frame_max_bytes, RESTART, 131072, 4096, 2147483647LL,
           "largest AMQP frame proposed to the broker (the broker may lower it)"),
    K_INT(amqp_idle_close_ms, RESTART, 30000, 0, MS_DAY,
          "close an AMQP connection this long after its last channel closed, unless a session reuses it; 0 = never"),
    K_INT(amqp_auth_reuse_ms, RESTART, 15000, 0, MS_DAY,
          "a new session reuses an AMQP connection of its credential only this long after the broker authenticated it"),
    K_INT(amqp_max_connections, RESTART, 1024, 1, 1000000,
          "most AMQP connections warren keeps open, over all workers; a session needing one more gets ERROR"),
    K_INT(amqp_max_connections_per_credential, RESTART, 256, 0, 1000000,
          "most AMQP connections of one credential (vhost, login, passcode) per worker; 0 = only amqp_max_connections"),
    K_INT(amqp_write_timeout_ms, RESTART, 30000, 100, MS_HOUR,
          "an AMQP connection whose thread is stuck this long writing to a broker that does not read is cut"),

    /* STOMP heart-beats and timeouts. */
    K_INT(heartbeat_send_min_ms, RELOAD, 1000, 0, MS_HOUR,
          "least interval warren sends heart-beats at when the client asks for them (the server's sx); 0 = never send"),
    K_INT(heartbeat_recv_min_ms, RELOAD, 1000, 0, MS_HOUR,
          "least interval warren accepts client heart-beats at (the server's sy); 0 = expect none"),
    K_INT(heartbeat_timeout_pct, RELOAD, 250, 100, 1000,
          "a silent peer is dead after the agreed receive interval times this percentage"),
    K_INT(login_timeout_ms, RELOAD, 10000, 100, MS_HOUR,
          "time from TCP accept to a completed STOMP CONNECT/CONNECTED; then the connection is closed"),
    K_INT(login_failure_delay_max_ms, RELOAD, 5000, 0, 60000,
          "cap of the delay before a login from an address whose logins were refused (100 ms doubling); 0 = off"),
    K_INT(idle_timeout_ms, RELOAD, 0, 0, MS_DAY,
          "close a session that sent no frame for this long (heart-beats do not count); 0 = off"),

    /* Input limits. */
    K_SIZE(max_handshake_bytes, RELOAD, 8192, 1024, 1 * MIB,
           "largest HTTP upgrade request (request line and headers)"),
    K_INT(max_http_headers, RELOAD, 64, 8, 256,
          "most header lines in the HTTP upgrade request"),
    K_SIZE(max_message_bytes, RELOAD, 33558528, 1 * KIB, 1 * GIB,
           "largest WebSocket message, all fragments together and after decompression"),
    K_SIZE(max_frame_bytes, RELOAD, 33554432, 1 * KIB, 1 * GIB,
           "largest STOMP frame (command, headers and body)"),
    K_SIZE(max_frame_bytes_unauthenticated, RELOAD, 65536, 1 * KIB, 1 * GIB,
           "largest STOMP frame accepted before CONNECTED was sent"),
    K_INT(max_headers, RELOAD, 100, 1, 10000,
          "most headers in one STOMP frame"),
    K_SIZE(max_header_line_bytes, RELOAD, 65536, 64, 1 * GIB,
           "longest STOMP header line (name, colon and value, before unescaping)"),
    K_SIZE(max_body_bytes, RELOAD, 33554432, 0, 1 * GIB,
           "largest STOMP frame body"),

    /* WebSocket output and permessage-deflate. */
    K_ENUM(ws_frame, RELOAD, "text", ws_frame_names,
           "WebSocket message type for outgoing frames (text or binary); frames that are not UTF-8 always go binary"),
    K_BOOL(compression, RELOAD, true,
           "accept permessage-deflate (RFC 7692) when the client offers it"),
    K_SIZE(deflate_threshold_bytes, RELOAD, 128, 0, 1 * GIB,
           "outgoing messages smaller than this are sent uncompressed"),
    K_INT(deflate_level, RELOAD, 6, 1, 9,
          "zlib compression level for outgoing messages (1 = fastest, 9 = smallest)"),
    K_INT(deflate_mem_level, RELOAD, 6, 1, 9,
          "zlib memLevel for outgoing messages: memory per connection against ratio"),
    K_INT(deflate_server_max_window_bits, RELOAD, 13, 9, 15,
          "largest compression window warren uses (server_max_window_bits); lower saves memory per connection"),
    K_BOOL(deflate_server_no_context_takeover, RELOAD, false,
           "reset the compressor after every message (server_no_context_takeover): less memory, worse ratio"),
    K_INT(max_inflate_ratio, RELOAD, 256, 0, 1000000,
          "a compressed message inflating past 1 MiB at more than this ratio is refused (close 1009); 0 = no check"),
    K_SIZE(max_inflate_bytes_per_sec, RELOAD, 33554432, 0, 1 * GIB,
           "inflated bytes per second one connection may make warren produce; past it its socket is not read for a while"),

    /* Flow control and per-session bounds. */
    K_INT(default_prefetch_count, RELOAD, 100, 1, 65535,
          "AMQP prefetch per subscription when the client gives no prefetch-count (manual acks keep memory bounded)"),
    K_INT(max_prefetch_count, RELOAD, 65535, 1, 65535,
          "largest prefetch-count a client may ask for"),
    K_SIZE(client_send_buffer_bytes, RELOAD, 1048576, 4 * KIB, 1 * GIB,
           "outbound bytes queued for one client above which warren stops taking deliveries for it"),
    K_SIZE(client_send_limit_bytes, RELOAD, 67108864, 4 * KIB, 4 * GIB,
           "outbound bytes queued for one client above which it is closed as too slow"),
    K_ENUM(topic_fanout, RELOAD, "local", topic_fanout_names,
           "broker: one AMQP queue per /topic/ or /exchange/ subscription; local: many ack:auto subscriptions of one login "
           "to one binding share one per worker (from topic_fanout_from on)"),
    K_INT(topic_fanout_from, RELOAD, 16, 1, 65535,
          "with topic_fanout = local: the first N-1 such subscriptions on a worker keep their own queue, the N-th on share"),
    K_INT(max_subscriptions, RELOAD, 1024, 1, 65535,
          "most subscriptions one session may hold, /temp-queue/ reply queues included"),
    K_INT(max_transactions, RELOAD, 16, 0, 1024,
          "most transactions one session may have open; 0 = BEGIN is refused"),
    K_INT(max_transaction_frames, RELOAD, 1024, 1, 1000000,
          "most SEND/ACK/NACK frames buffered in one transaction"),
    K_SIZE(max_transaction_bytes, RELOAD, 8388608, 1 * KIB, 1 * GIB,
           "bytes one session's open transactions may buffer together (frames as copied); past it ERROR"),
    K_INT(max_unconfirmed, RELOAD, 1024, 1, 65535,
          "publishes awaiting broker confirm per session before warren stops reading from it"),
    K_SIZE(max_unconfirmed_bytes, RELOAD, 16777216, 1 * KIB, 4 * GIB,
           "bytes of publishes awaiting broker confirm per session before warren stops reading from it"),
    K_INT(max_pending_ops, RELOAD, 4096, 16, 1000000,
          "broker operations and receipts awaiting the broker per session before warren stops reading from it"),
    K_BOOL(default_nack_requeue, RELOAD, true,
           "whether a NACK requeues the message when the client sends no requeue header"),
    K_STR(default_topic_exchange, RELOAD, "amq.topic",
          "exchange that /topic/ destinations publish to and bind on"),
    K_BOOL(trailing_lf, RELOAD, false,
           "append a LF after each outgoing frame's NUL, as Web-STOMP does"),

    /* Identity and logging. */
    K_STR(server_name, RELOAD, "warren",
          "product name in the CONNECTED server header, sent as name/version after the broker's own (RabbitMQ/3.10.8 "
          "warren/0.1.0)"),
    K_BOOL(hide_server_info, RELOAD, false,
           "send no server header in CONNECTED and no version in HTTP replies"),
    K_ENUM(log_level, RELOAD, "info", log_level_names,
           "most verbose messages logged: error, warn, info or debug"),
};
/* clang-format on */

const struct conf_key *conf_keys(size_t *n)
{
    *n = sizeof(keys) / sizeof(keys[0]);
    return keys;
}
