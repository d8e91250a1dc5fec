'use strict';
// @stomp/stompjs (what browsers use) over the `ws` package, with a promise
// API for tests: connect, subscribe into an AsyncQueue, publish with or
// without waiting for the RECEIPT, and queues for ERROR frames, unhandled
// MESSAGEs (temp-queue replies) and the close.

const WebSocket = require('ws');
const { Client, Versions } = require('@stomp/stompjs');
const { AsyncQueue, withTimeout, WAIT_MS } = require('./util');
const { PROTOCOLS } = require('./raw');

let receiptCounter = 0;
function receiptId() {
  receiptCounter += 1;
  return `rcpt-${process.pid}-${receiptCounter}`;
}

class Subscription {
  constructor(session, destination, headers) {
    this.session = session;
    this.destination = destination;
    this.messages = new AsyncQueue(`MESSAGE on ${destination}`);
    this.handle = session.client.subscribe(destination, (m) => this.messages.push(m), headers);
    this.id = this.handle.id;
  }

  next(ms, what) {
    return this.messages.next(ms, what);
  }

  take(n, ms, what) {
    return this.messages.take(n, ms, what);
  }

  unsubscribe(headers = {}) {
    this.handle.unsubscribe(headers);
  }

  /** UNSUBSCRIBE with a receipt; resolves on the RECEIPT. */
  unsubscribeReceipt(headers = {}) {
    return this.session.receipt((receipt) => this.handle.unsubscribe({ ...headers, receipt }));
  }
}

class StompSession {
  constructor(client) {
    this.client = client;
    this.errors = new AsyncQueue('ERROR frame');
    this.unhandled = new AsyncQueue('unhandled MESSAGE');
    this.receipts = new AsyncQueue('unwatched RECEIPT');
    this.isClosed = false;
    this.closed = new Promise((resolve) => {
      this.resolveClosed = resolve;
    });
  }

  /**
   * Connects with stompjs. opts: login, passcode, host (vhost), headers
   * (extra CONNECT headers), versions (e.g. ['1.1']), heartbeat [out, in]
   * (ms, default 0,0), protocols, perMessageDeflate, forceBinary.
   * Rejects with the ERROR frame (err.frame) if the server refuses.
   */
  static connect(url, opts = {}) {
    const connectHeaders = { ...(opts.headers || {}) };
    if (opts.login !== null) connectHeaders.login = opts.login ?? 'guest';
    if (opts.passcode !== null) connectHeaders.passcode = opts.passcode ?? 'guest';
    if (opts.host !== undefined && opts.host !== null) connectHeaders.host = opts.host;
    const [out, inc] = opts.heartbeat || [0, 0];
    let session;
    const client = new Client({
      webSocketFactory: () =>
        new WebSocket(url, opts.protocols ?? PROTOCOLS, {
          perMessageDeflate: opts.perMessageDeflate ?? false,
          maxPayload: 256 * 1024 * 1024,
        }),
      connectHeaders,
      heartbeatOutgoing: out,
      heartbeatIncoming: inc,
      reconnectDelay: 0,
      forceBinaryWSFrames: opts.forceBinary ?? false,
      debug: process.env.WARREN_TEST_DEBUG ? (s) => console.error(s) : () => {},
    });
    if (opts.versions) client.stompVersions = new Versions(opts.versions);
    session = new StompSession(client);
    const ready = new Promise((resolve, reject) => {
      client.onConnect = (frame) => {
        session.connected = frame;
        resolve(session);
      };
      client.onStompError = (frame) => {
        session.errors.push(frame);
        const e = new Error(`STOMP ERROR: ${frame.headers.message} ${frame.body}`);
        e.frame = frame;
        reject(e);
      };
      client.onUnhandledMessage = (m) => session.unhandled.push(m);
      client.onUnhandledReceipt = (f) => session.receipts.push(f);
      client.onWebSocketClose = (evt) => {
        session.isClosed = true;
        const c = { code: evt.code, reason: evt.reason, at: Date.now() };
        session.errors.fail(new Error(`connection closed (${evt.code})`));
        session.resolveClosed(c);
        reject(new Error(`connection closed before CONNECTED (${evt.code} ${evt.reason})`));
      };
    });
    client.activate();
    return withTimeout(ready, WAIT_MS, `CONNECTED from ${url}`).catch((e) => {
      client.deactivate({ force: true }).catch(() => {});
      throw e;
    });
  }

  subscribe(destination, headers = {}) {
    return new Subscription(this, destination, headers);
  }

  /** SUBSCRIBE with a receipt: resolves with the Subscription after the RECEIPT. */
  async subscribeReceipt(destination, headers = {}) {
    let sub;
    await this.receipt((receipt) => {
      sub = this.subscribe(destination, { ...headers, receipt });
    });
    return sub;
  }

  /** Calls send(receiptId) and resolves with the RECEIPT frame for it. */
  receipt(send, ms = WAIT_MS) {
    const id = receiptId();
    const p = new Promise((resolve) => this.client.watchForReceipt(id, resolve));
    send(id);
    return withTimeout(p, ms, `RECEIPT ${id}`);
  }

  /** SEND. body: string or Uint8Array/Buffer (sent as binaryBody). */
  publish(destination, body = '', headers = {}, extra = {}) {
    const params = { destination, headers, ...extra };
    if (typeof body === 'string') params.body = body;
    else params.binaryBody = body;
    this.client.publish(params);
  }

  /** SEND with a receipt; resolves when the RECEIPT arrives. */
  publishReceipt(destination, body = '', headers = {}, extra = {}) {
    return this.receipt((receipt) => this.publish(destination, body, { ...headers, receipt }, extra));
  }

  waitClose(ms = WAIT_MS) {
    return withTimeout(this.closed, ms, 'connection close');
  }

  /** Next ERROR frame. */
  nextError(ms = WAIT_MS) {
    return this.errors.next(ms);
  }

  /** Graceful DISCONNECT (stompjs waits for its receipt), then close. */
  async disconnect() {
    if (this.isClosed) return;
    await withTimeout(this.client.deactivate(), WAIT_MS, 'stompjs deactivate');
  }

  /** Drops the TCP connection without DISCONNECT. */
  async kill() {
    if (this.isClosed) return;
    this.client.webSocket?.terminate?.();
    await this.waitClose();
    await this.client.deactivate({ force: true }).catch(() => {});
  }
}

module.exports = { StompSession, Subscription };
