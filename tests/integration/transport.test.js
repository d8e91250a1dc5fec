'use strict';
// Transport: what bridge/conn.c, its front-ends bridge/http.c and
// bridge/wsconn.c, and bridge/server.c do below STOMP.
//
// - HTTP: the static files of http_root (GET, HEAD, 404s, path traversal),
//   and every refusal of the upgrade request with its exact status (404, 405,
//   400, 426 with Sec-WebSocket-Version: 13, 431);
// - WebSocket: subprotocol choice, the Origin allow list, permessage-deflate,
//   close codes 1009/1002/1007, ping/pong, the close handshake, text versus
//   binary messages out;
// - TLS: wss:// with a self-signed certificate made by the openssl CLI at test
//   time, and a plain-text peer on the TLS port that must not hurt the server;
// - limits: max_connections (HTTP 503), a slow consumer closed past
//   client_send_limit_bytes (close 1008) while another client keeps receiving, a STOMP frame
//   over max_frame_bytes (ERROR then close).
//
// Raw sockets (net/tls) are used wherever `ws` would hide the bytes: the HTTP
// replies, unmasked or malformed frames, and the server's close frames. Each
// describe() starts its own warren on free ports; nothing waits on a timer
// except as a failure guard.

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const crypto = require('node:crypto');
const fs = require('node:fs');
const net = require('node:net');
const os = require('node:os');
const path = require('node:path');
const tls = require('node:tls');
const { execFile } = require('node:child_process');
const WebSocket = require('ws');
const T = require('./lib/target');
const amqp = require('./lib/amqp');
const { RawStomp, encodeFrame, PROTOCOLS } = require('./lib/raw');
const { expectError } = require('./lib/check');
const { AsyncQueue, withTimeout, waitFor, unique, WAIT_MS } = require('./lib/util');
const { frameHeader } = require('./lib/wsraw');

const skip = T.suiteSkip() || T.warrenOnly('warren configuration keys (http_root, limits, TLS files)');

/* ------------------------------------------------------------------------------------------------------------ */
/* Helpers private to this file */

/**
 * Sends `request` (string or Buffer) on a fresh TCP (or TLS) connection and
 * collects everything until the server closes. Resolves with
 * { status, headers (lower-case names), body (Buffer), raw }. A reset after
 * some bytes arrived is tolerated (the server may close with our bytes unread).
 */
function httpRaw(port, request, { useTls = false } = {}) {
  return withTimeout(
    new Promise((resolve, reject) => {
      const sock = useTls
        ? tls.connect({ host: '127.0.0.1', port, rejectUnauthorized: false })
        : net.connect({ host: '127.0.0.1', port });
      const chunks = [];
      let done = false;
      const finish = (err) => {
        if (done) return;
        done = true;
        const raw = Buffer.concat(chunks);
        if (!raw.length) {
          reject(err || new Error('connection closed without a reply'));
          return;
        }
        resolve(parseHttp(raw));
      };
      sock.once(useTls ? 'secureConnect' : 'connect', () => sock.write(request));
      sock.on('data', (d) => chunks.push(d));
      sock.once('error', finish);
      sock.once('close', () => finish());
    }),
    WAIT_MS,
    'HTTP reply',
  );
}

function parseHttp(raw) {
  const end = raw.indexOf('\r\n\r\n');
  assert.ok(end > 0, `no end of HTTP head in ${JSON.stringify(raw.toString('latin1').slice(0, 200))}`);
  const lines = raw.subarray(0, end).toString('latin1').split('\r\n');
  const m = /^HTTP\/1\.1 (\d{3}) /.exec(lines[0]);
  assert.ok(m, `bad status line ${JSON.stringify(lines[0])}`);
  const headers = {};
  for (const l of lines.slice(1)) {
    const i = l.indexOf(':');
    headers[l.slice(0, i).trim().toLowerCase()] = l.slice(i + 1).trim();
  }
  return { status: Number(m[1]), headers, body: raw.subarray(end + 4), raw };
}

function upgradeRequest(pathName = '/ws', extra = {}) {
  const h = {
    Host: '127.0.0.1',
    Upgrade: 'websocket',
    Connection: 'Upgrade',
    'Sec-WebSocket-Key': crypto.randomBytes(16).toString('base64'),
    'Sec-WebSocket-Version': '13',
    ...extra,
  };
  const lines = [`GET ${pathName} HTTP/1.1`];
  for (const [k, v] of Object.entries(h)) if (v !== null) lines.push(`${k}: ${v}`);
  return `${lines.join('\r\n')}\r\n\r\n`;
}

/** Encodes one client frame; mask:false makes the (illegal) unmasked frame. */
function wsFrame(opcode, payload, { mask = true, fin = true } = {}) {
  const p = Buffer.isBuffer(payload) ? payload : Buffer.from(payload);
  const parts = [];
  const b0 = (fin ? 0x80 : 0) | opcode;
  const mbit = mask ? 0x80 : 0;
  if (p.length < 126) parts.push(Buffer.from([b0, mbit | p.length]));
  else if (p.length < 65536) {
    const h = Buffer.from([b0, mbit | 126, 0, 0]);
    h.writeUInt16BE(p.length, 2);
    parts.push(h);
  } else {
    const h = Buffer.alloc(10);
    h[0] = b0;
    h[1] = mbit | 127;
    h.writeBigUInt64BE(BigInt(p.length), 2);
    parts.push(h);
  }
  if (mask) {
    const key = crypto.randomBytes(4);
    const masked = Buffer.from(p);
    for (let i = 0; i < masked.length; i++) masked[i] ^= key[i & 3];
    parts.push(key, masked);
  } else {
    parts.push(p);
  }
  return Buffer.concat(parts);
}

/** Close frame payload: 2-byte code + reason. */
function closePayload(code, reason = '') {
  const b = Buffer.alloc(2);
  b.writeUInt16BE(code, 0);
  return Buffer.concat([b, Buffer.from(reason)]);
}

/**
 * A WebSocket client on a bare socket: the upgrade is written by hand and the
 * server's frames are parsed here, so that tests see exact close codes, can
 * send frames `ws` refuses to send, and see when the TCP connection ends.
 * Fields: sock, head (the 101 reply), frames (AsyncQueue of
 * {fin, opcode, payload}), ended (promise: the server closed TCP).
 */
class RawWs {
  static open(port, { pathName = '/ws', headers = {} } = {}) {
    const sock = net.connect({ host: '127.0.0.1', port });
    const c = new RawWs(sock);
    sock.once('connect', () => sock.write(upgradeRequest(pathName, headers)));
    return withTimeout(c.upgraded, WAIT_MS, 'HTTP 101');
  }

  constructor(sock) {
    this.sock = sock;
    this.buf = Buffer.alloc(0);
    this.head = null;
    this.frames = new AsyncQueue('WebSocket frame');
    this.ended = new Promise((resolve) => sock.once('close', resolve));
    sock.on('error', () => {});
    sock.once('close', () => this.frames.fail(new Error('TCP connection closed')));
    this.upgraded = new Promise((resolve, reject) => {
      sock.on('data', (d) => {
        this.buf = Buffer.concat([this.buf, d]);
        if (!this.head) {
          const end = this.buf.indexOf('\r\n\r\n');
          if (end < 0) return;
          this.head = parseHttp(this.buf.subarray(0, end + 4));
          this.buf = this.buf.subarray(end + 4);
          if (this.head.status !== 101) reject(new Error(`HTTP ${this.head.status} on upgrade`));
          else resolve(this);
        }
        this.parse();
      });
      sock.once('close', () => reject(new Error('closed before the 101')));
    });
  }

  parse() {
    for (;;) {
      const b = this.buf;
      if (b.length >= 2) assert.equal(b[1] & 0x80, 0, 'server frames are never masked');
      const h = frameHeader(b);
      if (!h) return;
      const { len, off } = h;
      this.frames.push({ fin: (b[0] & 0x80) !== 0, rsv: b[0] & 0x70, opcode: b[0] & 0x0f, payload: b.subarray(off, off + len) });
      this.buf = b.subarray(off + len);
    }
  }

  send(opcode, payload, opts) {
    this.sock.write(wsFrame(opcode, payload, opts));
  }

  sendStomp(command, headers = {}, body = '') {
    this.send(0x1, encodeFrame(command, headers, body));
  }

  /** Next frame that is not a ping/pong. */
  async next(what) {
    for (;;) {
      const f = await this.frames.next(WAIT_MS, what);
      if (f.opcode !== 0x9 && f.opcode !== 0xa) return f;
    }
  }

  /** Waits for the server's close frame; returns { code, reason }. */
  async expectClose() {
    for (;;) {
      const f = await this.next('close frame');
      if (f.opcode === 0x8) {
        return {
          code: f.payload.length >= 2 ? f.payload.readUInt16BE(0) : 1005,
          reason: f.payload.subarray(2).toString('utf8'),
        };
      }
    }
  }

  waitEnd() {
    return withTimeout(this.ended, WAIT_MS, 'server to close TCP');
  }

  destroy() {
    this.sock.destroy();
  }
}

/** Resolves when warren's log matches `re` (waits on its output, no polling). */
function waitLog(target, re, ms = WAIT_MS) {
  const streams = [target.child.stdout, target.child.stderr];
  let onData;
  return withTimeout(
    new Promise((resolve) => {
      onData = () => {
        if (re.test(target.output())) resolve();
      };
      for (const s of streams) s.on('data', onData);
      onData();
    }),
    ms,
    `log line ${re}`,
  ).finally(() => {
    for (const s of streams) s.off('data', onData);
  });
}

/**
 * Stops warren (SIGTERM) and checks it exited 0 with no sanitizer report: under
 * the ASan build a leak or UBSan error in any path the file exercised fails here.
 */
async function stopClean(target) {
  if (!target) return;
  const r = await target.stop();
  assert.deepEqual(r, { code: 0, sig: null }, `warren exit status\n${target.output()}`);
  assert.doesNotMatch(target.output(), /ERROR: (Leak|Address)Sanitizer|runtime error:/);
}

/** A `ws` client; resolves with it open, or rejects with the HTTP status. */
function wsOpen(url, protocols, opts = {}) {
  const ws = new WebSocket(url, protocols, { perMessageDeflate: false, ...opts });
  ws.on('error', () => {});
  return withTimeout(
    new Promise((resolve, reject) => {
      ws.once('open', () => resolve(ws));
      ws.once('unexpected-response', (req, res) => {
        const e = new Error(`HTTP ${res.statusCode} on upgrade`);
        e.status = res.statusCode;
        req.destroy();
        reject(e);
      });
      ws.once('error', reject);
    }),
    WAIT_MS,
    `WebSocket open ${url}`,
  );
}

/** Subscribes c to a fresh topic with a receipt; returns the destination. */
async function subscribeTopic(c, id = 's1', extra = {}) {
  const dest = `/topic/${unique('transport')}`;
  await c.withReceipt('SUBSCRIBE', { id, destination: dest, ...extra });
  return dest;
}

function tmpDir(tag) {
  return fs.mkdtempSync(path.join(os.tmpdir(), `warren-${tag}-`));
}

/* ------------------------------------------------------------------------------------------------------------ */

describe('transport: HTTP', { skip }, () => {
  let target;
  let root;
  const index = '<!doctype html><title>warren</title><h1>warren demo</h1>\n';

  before(async () => {
    root = tmpDir('http');
    fs.writeFileSync(path.join(root, 'index.html'), index);
    fs.writeFileSync(path.join(root, '.hidden'), 'secret\n');
    fs.mkdirSync(path.join(root, 'sub'));
    fs.writeFileSync(path.join(root, 'sub', 'app.js'), 'console.log(1);\n');
    target = await T.startTarget({ http_root: root });
  });
  after(async () => {
    await stopClean(target);
    fs.rmSync(root, { recursive: true, force: true });
  });

  it('GET / serves index.html with its type and length, then closes', async () => {
    const r = await httpRaw(target.port, 'GET / HTTP/1.1\r\nHost: x\r\n\r\n');
    assert.equal(r.status, 200);
    assert.equal(r.headers['content-type'], 'text/html; charset=utf-8');
    assert.equal(r.headers['content-length'], String(Buffer.byteLength(index)));
    assert.equal(r.body.toString(), index);
  });

  it('GET of a file in a subdirectory has its own content type', async () => {
    const r = await httpRaw(target.port, 'GET /sub/app.js?v=1 HTTP/1.1\r\nHost: x\r\n\r\n');
    assert.equal(r.status, 200);
    assert.equal(r.headers['content-type'], 'text/javascript; charset=utf-8');
    assert.equal(r.body.toString(), 'console.log(1);\n');
  });

  it('HEAD / has the headers of GET and no body', async () => {
    const r = await httpRaw(target.port, 'HEAD / HTTP/1.1\r\nHost: x\r\n\r\n');
    assert.equal(r.status, 200);
    assert.equal(r.headers['content-type'], 'text/html; charset=utf-8');
    assert.equal(r.headers['content-length'], String(Buffer.byteLength(index)));
    assert.equal(r.body.length, 0);
  });

  it('GET /missing → 404', async () => {
    const r = await httpRaw(target.port, 'GET /missing HTTP/1.1\r\nHost: x\r\n\r\n');
    assert.equal(r.status, 404);
  });

  for (const p of ['/../etc/passwd', '/%2e%2e/', '/%2e%2e/etc/passwd', '/.hidden', '/sub/../index.html', '/sub/%2e%2e/.hidden']) {
    it(`path traversal ${p} → 404`, async () => {
      const r = await httpRaw(target.port, `GET ${p} HTTP/1.1\r\nHost: x\r\n\r\n`);
      assert.equal(r.status, 404);
      assert.ok(!r.body.toString().includes('secret'), 'no file content leaks');
    });
  }

  it('GET on ws_path without an upgrade → 426', async () => {
    const r = await httpRaw(target.port, 'GET /ws HTTP/1.1\r\nHost: x\r\n\r\n');
    assert.equal(r.status, 426);
    assert.equal(r.headers['sec-websocket-version'], '13');
  });

  it('upgrade on another path → 404', async () => {
    const r = await httpRaw(target.port, upgradeRequest('/not-ws'));
    assert.equal(r.status, 404);
  });

  it('upgrade with Sec-WebSocket-Version: 8 → 426 with Sec-WebSocket-Version: 13', async () => {
    const r = await httpRaw(target.port, upgradeRequest('/ws', { 'Sec-WebSocket-Version': '8' }));
    assert.equal(r.status, 426);
    assert.equal(r.headers['sec-websocket-version'], '13');
    assert.equal(r.headers.upgrade, 'websocket');
  });

  it('upgrade without Sec-WebSocket-Key → 400', async () => {
    const r = await httpRaw(target.port, upgradeRequest('/ws', { 'Sec-WebSocket-Key': null }));
    assert.equal(r.status, 400);
  });

  it('upgrade with a malformed Sec-WebSocket-Key → 400', async () => {
    const r = await httpRaw(target.port, upgradeRequest('/ws', { 'Sec-WebSocket-Key': 'short' }));
    assert.equal(r.status, 400);
  });

  it('request head over max_handshake_bytes → 431', async () => {
    const big = upgradeRequest('/ws', { 'X-Padding': 'a'.repeat(9000) });
    const r = await httpRaw(target.port, big);
    assert.equal(r.status, 431);
  });

  it('a head that never ends is refused at max_handshake_bytes, not buffered', async () => {
    const r = await httpRaw(target.port, `GET / HTTP/1.1\r\nHost: x\r\nX-Padding: ${'b'.repeat(8300)}`);
    assert.equal(r.status, 431);
  });

  it('more header lines than max_http_headers → 431', async () => {
    const extra = {};
    for (let i = 0; i < 70; i++) extra[`X-H${i}`] = String(i);
    const r = await httpRaw(target.port, upgradeRequest('/ws', extra));
    assert.equal(r.status, 431);
  });

  it('upgrade without Host → 400', async () => {
    const r = await httpRaw(target.port, upgradeRequest('/ws', { Host: null }));
    assert.equal(r.status, 400);
  });

  it('POST → 405 with Allow: GET', async () => {
    const r = await httpRaw(target.port, 'POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n');
    assert.equal(r.status, 405);
    assert.equal(r.headers.allow, 'GET');
  });

  it('POST on ws_path with upgrade headers → 405', async () => {
    const r = await httpRaw(target.port, upgradeRequest('/ws').replace(/^GET /, 'POST '));
    assert.equal(r.status, 405);
  });

  it('the server still upgrades after all those refusals', async () => {
    const c = await RawStomp.connect(target.url);
    c.close();
  });
});

describe('transport: http_root unset', { skip }, () => {
  let target;
  before(async () => {
    target = await T.startTarget();
  });
  after(async () => {
    await stopClean(target);
  });

  it('GET / → 404 when no http_root is configured', async () => {
    const r = await httpRaw(target.port, 'GET / HTTP/1.1\r\nHost: x\r\n\r\n');
    assert.equal(r.status, 404);
  });
});

describe('transport: WebSocket', { skip }, () => {
  let target;
  const MAX_MESSAGE = 512 * 1024;
  const MAX_FRAME = 256 * 1024;

  before(async () => {
    target = await T.startTarget({
      max_message_bytes: String(MAX_MESSAGE),
      max_frame_bytes: String(MAX_FRAME),
      max_body_bytes: String(MAX_FRAME),
    });
  });
  after(async () => {
    await amqp.closeAll();
    await stopClean(target);
  });

  it('offer v10.stomp,v12.stomp → v12.stomp', async () => {
    const ws = await wsOpen(target.url, ['v10.stomp', 'v12.stomp']);
    assert.equal(ws.protocol, 'v12.stomp');
    ws.terminate();
  });

  it('offer v10.stomp only → v10.stomp', async () => {
    const ws = await wsOpen(target.url, ['v10.stomp']);
    assert.equal(ws.protocol, 'v10.stomp');
    ws.terminate();
  });

  it('no subprotocol offered → no Sec-WebSocket-Protocol in the reply', async () => {
    const c = await RawWs.open(target.port);
    assert.equal(c.head.headers['sec-websocket-protocol'], undefined);
    c.destroy();
  });

  it('only unknown subprotocols → no Sec-WebSocket-Protocol, and STOMP still works', async () => {
    const c = await RawWs.open(target.port, { headers: { 'Sec-WebSocket-Protocol': 'mqtt, chat' } });
    assert.equal(c.head.status, 101);
    assert.equal(c.head.headers['sec-websocket-protocol'], undefined);
    c.sendStomp('CONNECT', { 'accept-version': '1.2', host: '/', login: 'guest', passcode: 'guest' });
    const f = await c.next('CONNECTED');
    assert.equal(f.opcode, 0x1);
    assert.match(f.payload.toString(), /^CONNECTED\n/);
    c.destroy();
  });

  it('the 101 reply carries the RFC 6455 accept key', async () => {
    const key = crypto.randomBytes(16).toString('base64');
    const c = await RawWs.open(target.port, { headers: { 'Sec-WebSocket-Key': key } });
    const expected = crypto
      .createHash('sha1')
      .update(`${key}258EAFA5-E914-47DA-95CA-C5AB0DC85B11`)
      .digest('base64');
    assert.equal(c.head.headers['sec-websocket-accept'], expected);
    c.destroy();
  });

  it('permessage-deflate is negotiated and a large compressible message round-trips compressed', async () => {
    const c = await RawStomp.connect(target.url, {}, { perMessageDeflate: true });
    assert.match(c.ws.extensions, /permessage-deflate/);
    const dest = await subscribeTopic(c);
    const row = JSON.stringify({ symbol: 'WRN', price: 42.5, note: 'the same text again and again' });
    const body = `[${Array(2500).fill(row).join(',')}]`;
    assert.ok(body.length > 150000 && body.length < MAX_FRAME - 1024);
    const before = c.ws._socket.bytesRead;
    c.sendFrame('SEND', { destination: dest }, body);
    const m = await c.expect('MESSAGE');
    assert.equal(m.text, body);
    const onWire = c.ws._socket.bytesRead - before;
    assert.ok(onWire < body.length / 10, `MESSAGE took ${onWire} bytes on the wire for a ${body.length}-byte body`);
    c.close();
  });

  it('the 101 reply names permessage-deflate when offered', async () => {
    const c = await RawWs.open(target.port, { headers: { 'Sec-WebSocket-Extensions': 'permessage-deflate; client_max_window_bits' } });
    assert.match(c.head.headers['sec-websocket-extensions'] ?? '', /^permessage-deflate/);
    c.destroy();
  });

  it('a message over max_message_bytes → close 1009', async () => {
    const c = await RawWs.open(target.port);
    // The header announces the length; warren must refuse before waiting for the payload.
    const hdr = Buffer.alloc(14);
    hdr[0] = 0x81;
    hdr[1] = 0x80 | 127;
    hdr.writeBigUInt64BE(BigInt(MAX_MESSAGE + 1), 2);
    crypto.randomBytes(4).copy(hdr, 10);
    c.sock.write(hdr);
    const cl = await c.expectClose();
    assert.equal(cl.code, 1009);
    await c.waitEnd();
  });

  it('fragments that add up to more than max_message_bytes → close 1009', async () => {
    const c = await RawWs.open(target.port);
    const part = Buffer.alloc(MAX_MESSAGE / 2 + 1, 0x61);
    c.send(0x1, part, { fin: false });
    c.send(0x0, part, { fin: true });
    const cl = await c.expectClose();
    assert.equal(cl.code, 1009);
    await c.waitEnd();
  });

  it('an unmasked client frame → close 1002', async () => {
    const c = await RawWs.open(target.port);
    c.send(0x1, 'CONNECT\naccept-version:1.2\n\n\0', { mask: false });
    const cl = await c.expectClose();
    assert.equal(cl.code, 1002);
    await c.waitEnd();
  });

  it('invalid UTF-8 in a text message → close 1007', async () => {
    const c = await RawWs.open(target.port);
    c.send(0x1, Buffer.from([0x43, 0x4f, 0xc3, 0x28, 0x0a]));
    const cl = await c.expectClose();
    assert.equal(cl.code, 1007);
    await c.waitEnd();
  });

  it('invalid UTF-8 split across text fragments → close 1007', async () => {
    const c = await RawWs.open(target.port);
    c.send(0x1, Buffer.from([0x41, 0xe2, 0x82]), { fin: false });
    c.send(0x0, Buffer.from([0x41]), { fin: true });
    const cl = await c.expectClose();
    assert.equal(cl.code, 1007);
    await c.waitEnd();
  });

  it('frames sent right behind the upgrade request (same write) are not lost', async () => {
    const sock = net.connect({ host: '127.0.0.1', port: target.port });
    const c = new RawWs(sock);
    const connect = wsFrame(0x1, encodeFrame('CONNECT', { 'accept-version': '1.2', host: '/', login: 'guest', passcode: 'guest' }));
    sock.once('connect', () => sock.write(Buffer.concat([Buffer.from(upgradeRequest('/ws')), connect])));
    await withTimeout(c.upgraded, WAIT_MS, 'HTTP 101');
    assert.match((await c.next('CONNECTED')).payload.toString(), /^CONNECTED\n/);
    c.destroy();
  });

  it('a binary client message carrying STOMP is accepted like text', async () => {
    const c = await RawStomp.connect(target.url);
    const dest = await subscribeTopic(c);
    c.sendFrame('SEND', { destination: dest }, 'sent in a binary message', { binary: true });
    assert.equal((await c.expect('MESSAGE')).text, 'sent in a binary message');
    c.close();
  });

  it('a compressed message that inflates past max_message_bytes → close 1009', async () => {
    const c = await RawStomp.open(target.url, { perMessageDeflate: true });
    assert.match(c.ws.extensions, /permessage-deflate/);
    c.sendRaw(Buffer.alloc(MAX_MESSAGE + 4096, 0x20)); // a few hundred bytes on the wire
    const cl = await c.waitClose();
    assert.equal(cl.code, 1009);
  });

  for (const [what, opcode, payload, opts, code] of [
    ['a ping over 125 bytes', 0x9, Buffer.alloc(126, 1), {}, 1002],
    ['a fragmented ping', 0x9, Buffer.from('x'), { fin: false }, 1002],
    ['a reserved opcode', 0x3, Buffer.from('x'), {}, 1002],
    ['a continuation with nothing to continue', 0x0, Buffer.from('x'), {}, 1002],
    ['a close with code 999', 0x8, closePayload(999), {}, 1002],
    ['a close with code 1005 on the wire', 0x8, closePayload(1005), {}, 1002],
    ['a close with a 1-byte payload', 0x8, Buffer.from([3]), {}, 1002],
    ['a close whose reason is not UTF-8', 0x8, Buffer.concat([closePayload(1000), Buffer.from([0xc0, 0xaf])]), {}, 1007],
  ]) {
    it(`${what} → close ${code}`, async () => {
      const c = await RawWs.open(target.port);
      c.send(opcode, payload, opts);
      const cl = await c.expectClose();
      assert.equal(cl.code, code);
      await c.waitEnd();
    });
  }

  it('a frame with RSV1 set but no permessage-deflate → close 1002', async () => {
    const c = await RawWs.open(target.port);
    const f = wsFrame(0x1, 'hello');
    f[0] |= 0x40;
    c.sock.write(f);
    const cl = await c.expectClose();
    assert.equal(cl.code, 1002);
    await c.waitEnd();
  });

  it('client close 1001 → the server echoes 1001', async () => {
    const c = await RawWs.open(target.port);
    c.send(0x8, closePayload(1001, 'tab closed'));
    assert.equal((await c.expectClose()).code, 1001);
    await c.waitEnd();
  });

  it('ping → pong with the same payload', async () => {
    const c = await RawWs.open(target.port);
    const payload = Buffer.from('ping-payload-\u00e9-123');
    c.send(0x9, payload);
    const f = await c.frames.next(WAIT_MS, 'pong');
    assert.equal(f.opcode, 0xa);
    assert.deepEqual(f.payload, payload);
    c.destroy();
  });

  it('ping from `ws` during a STOMP session → pong with the same payload', async () => {
    const c = await RawStomp.connect(target.url);
    const payload = crypto.randomBytes(125);
    const pong = new Promise((resolve) => c.ws.once('pong', resolve));
    c.ws.ping(payload);
    assert.deepEqual(await withTimeout(pong, WAIT_MS, 'pong'), payload);
    c.close();
  });

  it('client close 1000 → the server echoes close 1000 and closes TCP', async () => {
    const c = await RawWs.open(target.port, { headers: { 'Sec-WebSocket-Protocol': 'v12.stomp' } });
    c.sendStomp('CONNECT', { 'accept-version': '1.2', host: '/', login: 'guest', passcode: 'guest' });
    assert.match((await c.next('CONNECTED')).payload.toString(), /^CONNECTED/);
    c.send(0x8, closePayload(1000, 'bye'));
    const cl = await c.expectClose();
    assert.equal(cl.code, 1000);
    await c.waitEnd();
  });

  it('an empty client close → an empty close back', async () => {
    const c = await RawWs.open(target.port);
    c.send(0x8, Buffer.alloc(0));
    const cl = await c.expectClose();
    assert.equal(cl.code, 1005, 'no status code in the echo');
    await c.waitEnd();
  });

  it('`ws` close(1000) completes the closing handshake', async () => {
    const c = await RawStomp.connect(target.url);
    c.ws.close(1000, 'done');
    const cl = await c.waitClose();
    assert.equal(cl.code, 1000);
  });

  it('text out by default; a body that is not UTF-8 arrives as a binary message', async () => {
    const c = await RawStomp.connect(target.url);
    const dest = await subscribeTopic(c);
    c.sendFrame('SEND', { destination: dest }, 'plain text');
    const m1 = await c.expect('MESSAGE');
    assert.equal(m1.binary, false);
    const bin = Buffer.from([0xff, 0xfe, 0x00, 0x41, 0xc3]);
    c.sendFrame('SEND', { destination: dest, 'content-type': 'application/octet-stream' }, bin, { binary: true });
    const m2 = await c.expect('MESSAGE');
    assert.equal(m2.binary, true);
    assert.deepEqual(m2.body, bin);
    assert.equal(c.wsMessages[0].binary, false, 'CONNECTED is text');
    c.close();
  });

  it('a STOMP frame over max_frame_bytes → ERROR, then close', async () => {
    const c = await RawStomp.connect(target.url);
    c.sendFrame('SEND', { destination: '/topic/transport-too-big' }, Buffer.alloc(MAX_FRAME + 10, 0x62));
    const f = await expectError(c, /too large|limit/i);
    assert.match(f.text + (f.headers.message ?? ''), /max_frame_bytes|too large/);
  });
});

describe('transport: WebSocket options', { skip }, () => {
  const started = [];
  async function start(opts) {
    const t = await T.startTarget(opts);
    started.push(t);
    return t;
  }
  after(async () => {
    for (const t of started) await stopClean(t);
  });

  it('allow_origins: another Origin → 403, the listed Origin and no Origin connect', async () => {
    const t = await start({ allow_origins: 'https://a.example' });
    const r = await httpRaw(t.port, upgradeRequest('/ws', { Origin: 'https://b.example' }));
    assert.equal(r.status, 403);
    await assert.rejects(wsOpen(t.url, PROTOCOLS, { origin: 'https://b.example' }), /HTTP 403/);
    await assert.rejects(wsOpen(t.url, PROTOCOLS, { origin: 'https://a.example:8443' }), /HTTP 403/);
    const listed = await RawStomp.connect(t.url, {}, { headers: { Origin: 'https://a.example' } });
    listed.close();
    const none = await RawStomp.connect(t.url);
    none.close();
  });

  it('compression=false → no Sec-WebSocket-Extensions in the reply', async () => {
    const t = await start({ compression: 'false' });
    const c = await RawWs.open(t.port, { headers: { 'Sec-WebSocket-Extensions': 'permessage-deflate; client_max_window_bits' } });
    assert.equal(c.head.headers['sec-websocket-extensions'], undefined);
    c.destroy();
    const s = await RawStomp.connect(t.url, {}, { perMessageDeflate: true });
    assert.equal(s.ws.extensions, '');
    s.close();
  });

  it('ws_frame=binary → every frame goes out as a binary message', async () => {
    const t = await start({ ws_frame: 'binary' });
    const c = await RawStomp.connect(t.url);
    const dest = await subscribeTopic(c);
    c.sendFrame('SEND', { destination: dest }, 'hello text');
    const m = await c.expect('MESSAGE');
    assert.equal(m.text, 'hello text');
    assert.ok(c.wsMessages.length >= 3);
    for (const w of c.wsMessages) assert.equal(w.binary, true, `${w.data.toString().split('\n')[0]} is binary`);
    c.close();
  });
});

describe('transport: TLS', { skip }, () => {
  let target;
  let dir;
  let tlsPort;
  let wssUrl;

  before(async () => {
    dir = tmpDir('tls');
    const cert = path.join(dir, 'cert.pem');
    const key = path.join(dir, 'key.pem');
    await withTimeout(
      new Promise((resolve, reject) =>
        execFile(
          'openssl',
          ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', key, '-out', cert,
            '-days', '1', '-subj', '/CN=localhost', '-addext', 'subjectAltName=IP:127.0.0.1,DNS:localhost'],
          (err, stdout, stderr) => (err ? reject(new Error(`openssl: ${err.message}\n${stderr}`)) : resolve()),
        ),
      ),
      WAIT_MS,
      'openssl req',
    );
    tlsPort = await T.freePort();
    target = await T.startTarget({ tls_listen_port: String(tlsPort), tls_cert_file: cert, tls_key_file: key });
    await waitLog(target, new RegExp(`listening on 127\\.0\\.0\\.1:${tlsPort} \\(wss\\)`));
    wssUrl = `wss://127.0.0.1:${tlsPort}/ws`;
  });
  after(async () => {
    await stopClean(target);
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  function wssConnect() {
    const ws = new WebSocket(wssUrl, PROTOCOLS, { rejectUnauthorized: false, perMessageDeflate: false });
    const c = new RawStomp(ws);
    return withTimeout(
      new Promise((resolve, reject) => {
        ws.once('open', () => resolve(c));
        ws.once('error', reject);
      }),
      WAIT_MS,
      'wss open',
    );
  }

  it('wss://: CONNECT → CONNECTED and a SEND/MESSAGE round trip', async () => {
    const c = await wssConnect();
    assert.equal(c.ws.protocol, 'v12.stomp');
    const f = await c.handshake();
    assert.equal(f.command, 'CONNECTED');
    assert.equal(f.headers.version, '1.2');
    const dest = await subscribeTopic(c);
    const body = `over TLS ${'x'.repeat(70000)}`;
    c.sendFrame('SEND', { destination: dest }, body);
    const m = await c.expect('MESSAGE');
    assert.equal(m.text, body);
    c.ws.close(1000);
    assert.equal((await c.waitClose()).code, 1000);
  });

  it('the TLS listener serves the HTTP errors too (426 on ws_path without upgrade)', async () => {
    const r = await httpRaw(tlsPort, 'GET /ws HTTP/1.1\r\nHost: x\r\n\r\n', { useTls: true });
    assert.equal(r.status, 426);
  });

  it('a plain-text client on the TLS port fails without hurting the server', async () => {
    const sock = net.connect({ host: '127.0.0.1', port: tlsPort });
    sock.on('error', () => {});
    sock.once('connect', () => sock.write(upgradeRequest('/ws')));
    let got = Buffer.alloc(0);
    sock.on('data', (d) => {
      got = Buffer.concat([got, d]);
    });
    await withTimeout(new Promise((resolve) => sock.once('close', resolve)), WAIT_MS, 'the TLS port to close a plain client');
    assert.ok(!got.toString('latin1').startsWith('HTTP/1.1 101'), 'no upgrade in clear text');
    assert.equal(target.child.exitCode, null, 'warren still runs');
    const c = await wssConnect();
    assert.equal((await c.handshake()).command, 'CONNECTED');
    c.close();
    const plain = await RawStomp.connect(target.url);
    plain.close();
  });

  it('a TLS client that stops after the ClientHello does not block others', async () => {
    const sock = net.connect({ host: '127.0.0.1', port: tlsPort });
    sock.on('error', () => {});
    await withTimeout(new Promise((resolve) => sock.once('connect', resolve)), WAIT_MS, 'TCP connect');
    sock.write(Buffer.from([0x16, 0x03, 0x01, 0x00, 0x40])); // a record header, then silence
    const c = await wssConnect();
    assert.equal((await c.handshake()).command, 'CONNECTED');
    c.close();
    sock.destroy();
  });
});

describe('transport: limits', { skip }, () => {
  const started = [];
  async function start(opts) {
    const t = await T.startTarget(opts);
    started.push(t);
    return t;
  }
  after(async () => {
    await amqp.closeAll();
    for (const t of started) await stopClean(t);
  });

  it('login_timeout_ms bounds the HTTP request, the TLS-less silence and the upgrade-to-CONNECTED time', async () => {
    const t = await start({ login_timeout_ms: '300' });
    const closed = (sock) => withTimeout(new Promise((r) => sock.once('close', r)), WAIT_MS, 'the server to drop the connection');
    const silent = net.connect({ host: '127.0.0.1', port: t.port });
    silent.on('error', () => {});
    const partial = net.connect({ host: '127.0.0.1', port: t.port });
    partial.on('error', () => {});
    partial.once('connect', () => partial.write('GET /ws HTTP/1.1\r\nHost: x\r\n'));
    const upgraded = await RawStomp.open(t.url); // never sends CONNECT
    await Promise.all([closed(silent), closed(partial), upgraded.waitClose()]);
    assert.equal(t.child.exitCode, null);
  });

  it('max_connections=2: the third connection gets HTTP 503, the first two keep working', async () => {
    const t = await start({ max_connections: '2' });
    const a = await RawStomp.connect(t.url);
    const b = await RawStomp.connect(t.url);
    const r = await httpRaw(t.port, upgradeRequest('/ws'));
    assert.equal(r.status, 503);
    const da = await subscribeTopic(a);
    const db = await subscribeTopic(b);
    a.sendFrame('SEND', { destination: db }, 'a to b');
    b.sendFrame('SEND', { destination: da }, 'b to a');
    assert.equal((await b.expect('MESSAGE')).text, 'a to b');
    assert.equal((await a.expect('MESSAGE')).text, 'b to a');
    // Once one leaves, its slot is free again (the server frees it asynchronously: poll by connecting).
    a.ws.close(1000);
    await a.waitClose();
    const c = await waitFor(() => RawStomp.connect(t.url), WAIT_MS, 'a free slot after one client left');
    c.close();
    b.close();
  });

  it('a slow consumer is closed past client_send_limit_bytes (close 1008 after what was queued) while another client keeps receiving', async () => {
    const t = await start({ client_send_buffer_bytes: '64k', client_send_limit_bytes: '256k' });
    const key = unique('slow');
    const N = 160;
    const size = 128 * 1024;
    const fast = await RawStomp.connect(t.url);
    const slow = await RawStomp.connect(t.url);
    // prefetch 1 keeps the fast client's queue under the limit even though this process reads it late
    await fast.withReceipt('SUBSCRIBE', { id: 'f', destination: `/topic/${key}`, 'prefetch-count': '1' });
    await slow.withReceipt('SUBSCRIBE', { id: 's', destination: `/topic/${key}`, 'prefetch-count': '1000' });
    slow.ws._socket.pause(); // stop reading: the kernel buffers fill, then warren's queue grows
    const ch = await amqp.channel();
    const payload = Buffer.alloc(size, 0x7a);
    for (let i = 0; i < N; i++) {
      if (!ch.publish('amq.topic', key, payload, { headers: { n: i } })) await new Promise((r) => ch.once('drain', r));
    }
    await ch.waitForConfirms();
    await ch.close();
    await waitLog(t, /client too slow/);
    for (let i = 0; i < N; i++) {
      const m = await fast.expect('MESSAGE');
      assert.equal(m.body.length, size, `message ${i}`);
    }
    slow.ws._socket.resume();
    // What was queued within the limit, then a close frame saying why (no bare TCP close: a browser would see 1006).
    const closed = await slow.waitClose();
    assert.equal(closed.code, 1008, `close ${closed.code} ${closed.reason}`);
    assert.equal(closed.reason, 'client too slow');
    // The fast client is still connected and served.
    const d = await subscribeTopic(fast, 'f2');
    fast.sendFrame('SEND', { destination: d }, 'still here');
    assert.equal((await fast.expect('MESSAGE')).text, 'still here');
    fast.close();
  });
});
