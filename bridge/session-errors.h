/*
 * bridge/session-errors.h — every ERROR frame a session sends, in one table: id, `message` header, body template, the
 * number of arguments the templates take, and the most bytes of each argument that are quoted (0: all of it; a client's
 * header value is cut so that the body stays readable). `%1` to `%4` in a template are replaced by the arguments;
 * nothing else in a template is special, and the whole body is bounded (1 KiB). Every ERROR is followed by closing the
 * connection (DESIGN.md: the spec, not Web-STOMP), so the table has no "closes" column. session_error*() in
 * bridge/session-error.c builds the frame from a row: `message`, `content-type:text/plain`, `version` (the versions warren
 * speaks, as Web-STOMP sends on every ERROR), `receipt-id` when the offending frame had `receipt`.
 *
 * The wording follows RabbitMQ's STOMP plugin where it has one (see doc/compatibility.md); a test walks the table
 * (tests/unit/test-bridge-session.c). Destination errors take their words from bridge/dest.c (dest_error_body()) and the
 * broker's own from its reply text, through the pass-through rows.
 */
#pragma once

/* X(id, message, body, n_args, arg_max) */
#define SESSION_ERRORS(X)                                                                                                          \
    /* internal failures (the error_origin of the failure is logged) */                                                            \
    X(INTERNAL, "Processing error", "%1", 1, 0)                                                                                    \
    /* CONNECT */                                                                                                                  \
    X(VERSION_MISMATCH, "Version mismatch", "Supported versions are %1\n", 1, 0)                                                   \
    X(BAD_HEARTBEAT, "Bad CONNECT", "%1", 1, 0)                                                                                    \
    X(ALREADY_CONNECTED, "Bad CONNECT", "Already connected", 0, 0)                                                                 \
    X(ACCESS_REFUSED, "Bad CONNECT", "Access refused for user '%1'\n", 1, 0)                                                       \
    X(VHOST_DENIED, "Bad CONNECT", "Virtual host '%1' access denied", 1, 0)                                                        \
    X(NOT_LOOPBACK, "Bad CONNECT", "non-loopback access denied", 0, 0)                                                             \
    X(LOGIN_THROTTLED, "Bad CONNECT", "Too many refused logins from this address; try again in %1 ms", 1, 0)                       \
    X(NOT_LOGGED_IN, "Illegal command", "You must log in using CONNECT first", 0, 0)                                               \
    /* framing */                                                                                                                  \
    X(BAD_COMMAND, "Bad command", "Could not interpret command \"%1\"\n", 1, 0)                                                    \
    X(FRAME_TOO_BIG, "%1", "The frame is over a limit (%1; max_frame_bytes %2)", 2, 0)                                             \
    X(FRAME_INVALID, "%1", "Could not parse the frame: %1", 1, 0)                                                                  \
    X(TOO_MUCH_INPUT, "Too much input", "The client sent more than %1 bytes that could not be processed yet", 1, 0)                \
    /* headers and destinations */                                                                                                 \
    X(DEST, "%1", "%2", 2, 0)                                                                                                      \
    X(DEST_FOR, "Invalid destination", "'%1' is not a valid destination for '%2'\n", 2, 0)                                         \
    X(HEADER_VALUE, "%1", "Invalid value for header '%2'", 2, 0)                                                                   \
    X(INVALID_HEADER, "Invalid header", "Invalid value for header '%1'", 1, 0)                                                     \
    X(BAD_PRIORITY, "Invalid header", "'priority' must be an integer from 0 to 255, not '%1'", 1, 64)                              \
    X(BAD_TIMESTAMP, "Invalid header", "'timestamp' must be a non-negative integer (seconds), not '%1'", 1, 64)                    \
    X(SEND_NO_DEST, "Missing destination", "\"SEND\" must include a 'destination' header\n", 0, 0)                                 \
    X(SEND_MESSAGE_ID, "Invalid header", "'message-id' is not allowed on 'SEND'.\n", 0, 0)                                         \
    X(HEADER_TOO_LONG, "Invalid header", "Header '%1' is longer than AMQP can carry (%2 bytes at most)", 2, 64)                    \
    X(HEADERS_TOO_BIG, "Invalid header", "The headers take %1 bytes as AMQP properties, more than a frame carries (%2)", 2, 0)     \
    /* subscriptions and acks */                                                                                                   \
    X(SUB_NO_DEST, "Missing destination", "\"SUBSCRIBE\" must include a 'destination' header\n", 0, 0)                             \
    X(SUB_DUPLICATE, "Duplicated subscription identifier", "A subscription identified by '%1' already exists.", 1, 200)            \
    X(SUB_TOO_MANY, "Too many subscriptions", "At most %1 subscriptions per session", 1, 0)                                        \
    X(SUB_DURABLE_NO_ID, "Missing Header", "Header 'id' is required for durable subscriptions", 0, 0)                              \
    X(UNSUB_NO_ID, "Missing destination or id", "UNSUBSCRIBE must include a 'destination' or 'id' header", 0, 0)                   \
    X(UNSUB_NOT_FOUND, "No subscription found",                                                                                    \
      "UNSUBSCRIBE must refer to an existing subscription.\nSubscription to \"%1='%2'\" not found.\n", 2, 200)                     \
    X(UNSUB_TEMP, "Invalid id", "UNSUBSCRIBE 'id' may not start with /temp-queue/\n", 0, 0)                                        \
    X(MESSAGE_TOO_BIG, "Message too large",                                                                                        \
      "Message '%1' from '%2' takes %3 bytes as a STOMP MESSAGE, more than this client may be sent "                               \
      "(client_send_limit_bytes %4). The broker was told to reject it (requeue=false: a dead-letter exchange gets it).",           \
      4, 0)                                                                                                                        \
    X(RESOURCE_LOCKED, "resource_locked",                                                                                          \
      "cannot obtain exclusive access to locked queue '%1' in vhost '%2'. It could be originally declared "                        \
      "on another connection or the exclusive property value does not match that of the original declaration.",                    \
      2, 0)                                                                                                                        \
    X(EXCL_TOO_MANY, "Too many exclusive queues", "At most %1 exclusive queues per session", 1, 0)                                 \
    X(SUB_CANCELLED, "Server cancelled subscription", "The server has cancelled a subscription (queue deleted or node down).", 0,  \
      0)                                                                                                                           \
    X(ACK_NO_ID, "Missing header", "\"%1\" must include the \"%2\" header\n", 2, 0)                                                \
    X(ACK_INVALID, "Invalid header", "\"%1\" must include a valid \"%2\" header\n", 2, 0)                                          \
    X(ACK_NOT_FOUND, "Message not found", "unknown delivery tag %1\n", 1, 0)                                                       \
    /* transactions */                                                                                                             \
    X(TX_MISSING, "Missing transaction", "\"%1\" must include a 'transaction' header\n", 1, 0)                                     \
    X(TX_UNKNOWN, "Bad transaction", "Invalid transaction identifier: \"%1\"\n", 1, 200)                                           \
    X(TX_OPEN, "Bad transaction", "Transaction '%1' is already open", 1, 200)                                                      \
    X(TX_TOO_MANY, "Transaction limit exceeded", "Too many concurrent transactions (limit %1)", 1, 0)                              \
    X(TX_TOO_LARGE, "Transaction too large", "Too many actions in transaction (limit %1)", 1, 0)                                   \
    X(TX_TOO_MANY_BYTES, "Transaction too large", "The open transactions may buffer at most %1 bytes (max_transaction_bytes)", 1,  \
      0)                                                                                                                           \
    /* the broker */                                                                                                               \
    X(BROKER_LOST, "Broker connection lost", "%1", 1, 0)                                                                           \
    X(CONN_LIMIT, "Too many broker connections", "%1", 1, 0)                                                                       \
    X(BROKER, "%1", "%2", 2, 0)                                                                                                    \
    X(NACK, "nack", "The broker refused the message (basic.nack)%1", 1, 0)

enum session_err {
#define SESSION_ERR_ENUM(id, message, body, n, max) SESSION_ERR_##id,
    SESSION_ERRORS(SESSION_ERR_ENUM)
#undef SESSION_ERR_ENUM
        SESSION_ERR_COUNT,
};

struct session_err_row {
    const char *name; /* the id, for logs and tests */
    const char *message;
    const char *body;
    unsigned n_args;
    unsigned arg_max; /* bytes of an argument quoted at most; 0 = all */
};

/* The row of `e` (the table is indexed by enum session_err). */
const struct session_err_row *session_err_row(enum session_err e);
