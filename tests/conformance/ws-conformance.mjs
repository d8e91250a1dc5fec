// tests/conformance/ws-conformance.mjs — Autobahn-style RFC 6455 / RFC 7692 cases against tests/ws-echo, over raw
// sockets, with Node built-ins only (net, crypto, zlib).
//
// Usage: node ws-conformance.mjs PATH/TO/ws-echo [FILTER]
// Starts `ws-echo 0` (it picks a free port and prints it), runs every case on a fresh connection and checks the echo
// bytes or the exact close code, and that the server closes TCP after its close frame. Prints one "ok"/"not ok" line
// per case and a closing "N passed, N failed" line; exits 1 when a case failed. FILTER keeps the cases whose name
// contains it. Autobahn itself (its fuzzingclient) can be pointed at the same ws-echo binary when it is available.
import { spawn } from 'node:child_process';
import crypto from 'node:crypto';
import net from 'node:net';
import zlib from 'node:zlib';

const MAX_MESSAGE = 16 << 20; // ws-echo's default limit
const CASE_TIMEOUT_MS = 20000;
const TAIL = Buffer.from([0x00, 0x00, 0xff, 0xff]);
const OP = { CONT: 0, TEXT: 1, BINARY: 2, CLOSE: 8, PING: 9, PONG: 10 };

// ---------------------------------------------------------------------------------------------------------------------
// Frames

function mask(payload, key) {
  const out = Buffer.allocUnsafe(payload.length);
  for (let i = 0; i < payload.length; i++) out[i] = payload[i] ^ key[i & 3];
  return out;
}

// A client frame. opts: fin (default true), rsv (3-bit RSV1..3 field), masked (default true), len (declared length).
function frame(op, payload = Buffer.alloc(0), opts = {}) {
  const { fin = true, rsv = 0, masked = true } = opts;
  payload = Buffer.from(payload);
  const len = opts.len ?? payload.length;
  const head = [(fin ? 0x80 : 0) | (rsv << 4) | op];
  const m = masked ? 0x80 : 0;
  let ext = Buffer.alloc(0);
  if (len < 126) head.push(m | len);
  else if (len < 65536) {
    head.push(m | 126);
    ext = Buffer.alloc(2);
    ext.writeUInt16BE(len);
  } else {
    head.push(m | 127);
    ext = Buffer.alloc(8);
    ext.writeBigUInt64BE(BigInt(len));
  }
  if (!masked) return Buffer.concat([Buffer.from(head), ext, payload]);
  const key = crypto.randomBytes(4);
  return Buffer.concat([Buffer.from(head), ext, key, mask(payload, key)]);
}

function closePayload(code, reason = Buffer.alloc(0)) {
  const b = Buffer.alloc(2);
  b.writeUInt16BE(code);
  return Buffer.concat([b, Buffer.from(reason)]);
}

// ---------------------------------------------------------------------------------------------------------------------
// Connection: buffered reads with a deadline

class Conn {
  constructor(sock, deadline) {
    this.sock = sock;
    this.deadline = deadline;
    this.chunks = [];
    this.len = 0;
    this.ended = false;
    this.wake = null;
    sock.on('data', (d) => {
      this.chunks.push(d);
      this.len += d.length;
      this.notify();
    });
    sock.on('end', () => {
      this.ended = true;
      this.notify();
    });
    sock.on('error', (e) => {
      this.error = e;
      this.ended = true;
      this.notify();
    });
  }

  notify() {
    const w = this.wake;
    this.wake = null;
    if (w) w();
  }

  async waitData() {
    const left = this.deadline - Date.now();
    if (left <= 0) throw new Error('timeout');
    await new Promise((resolve, reject) => {
      const t = setTimeout(() => reject(new Error('timeout')), left);
      this.wake = () => {
        clearTimeout(t);
        resolve();
      };
    });
  }

  async need(n) {
    while (this.len < n) {
      if (this.ended) throw new Error(`connection closed (${this.error ? this.error.code : 'EOF'}) while waiting`);
      await this.waitData();
    }
    if (this.chunks.length > 1) this.chunks = [Buffer.concat(this.chunks)];
  }

  take(n) {
    const b = this.chunks[0];
    const out = b.subarray(0, n);
    this.chunks = n < b.length ? [b.subarray(n)] : [];
    this.len -= n;
    return out;
  }

  write(buf) {
    if (!this.sock.destroyed) this.sock.write(buf, () => {});
  }

  async readHttp() {
    for (;;) {
      if (this.len > 0) {
        await this.need(this.len);
        const i = this.chunks[0].indexOf('\r\n\r\n');
        if (i >= 0) return this.take(i + 4).toString('latin1');
      }
      if (this.ended) throw new Error('connection closed during handshake');
      await this.waitData();
    }
  }

  async readFrame() {
    await this.need(2);
    const h = this.chunks[0];
    const b0 = h[0];
    const b1 = h[1];
    let len = b1 & 0x7f;
    let off = 2;
    if (len === 126) {
      await this.need(4);
      len = this.chunks[0].readUInt16BE(2);
      off = 4;
    } else if (len === 127) {
      await this.need(10);
      len = Number(this.chunks[0].readBigUInt64BE(2));
      off = 10;
    }
    if (b1 & 0x80) throw new Error('server frame is masked');
    await this.need(off + len);
    const payload = Buffer.from(this.take(off + len).subarray(off));
    return { fin: !!(b0 & 0x80), rsv: (b0 >> 4) & 7, op: b0 & 0x0f, payload };
  }

  async expectEnd() {
    while (!this.ended) await this.waitData();
    if (this.len > 0) throw new Error(`${this.len} unexpected bytes after the close frame`);
  }
}

const openSockets = new Set(); // destroyed after each case

function connect(port, deadline) {
  return new Promise((resolve, reject) => {
    const sock = net.connect(port, '127.0.0.1');
    openSockets.add(sock);
    sock.setNoDelay(true);
    sock.once('connect', () => resolve(new Conn(sock, deadline)));
    sock.once('error', reject);
  });
}

function header(head, name) {
  const m = head.match(new RegExp(`^${name}:[ \\t]*(.*?)[ \\t]*$`, 'im'));
  return m ? m[1] : null;
}

async function handshake(port, deadline, extensions) {
  const c = await connect(port, deadline);
  const key = crypto.randomBytes(16).toString('base64');
  let req = `GET /ws HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
    `Sec-WebSocket-Key: ${key}\r\nSec-WebSocket-Version: 13\r\n`;
  if (extensions) req += `Sec-WebSocket-Extensions: ${extensions}\r\n`;
  c.write(Buffer.from(req + '\r\n', 'latin1'));
  const head = await c.readHttp();
  if (!/^HTTP\/1\.1 101 /.test(head)) throw new Error(`handshake failed: ${head.split('\r\n')[0]}`);
  const accept = crypto.createHash('sha1').update(key + '258EAFA5-E914-47DA-95CA-C5AB0DC85B11').digest('base64');
  if (header(head, 'Sec-WebSocket-Accept') !== accept) throw new Error('bad Sec-WebSocket-Accept');
  c.extensions = header(head, 'Sec-WebSocket-Extensions');
  return c;
}

// ---------------------------------------------------------------------------------------------------------------------
// Expectations

function fail(msg) {
  throw new Error(msg);
}

async function expectFrame(c, op, payload) {
  const f = await c.readFrame();
  if (f.op !== op) fail(`expected opcode ${op}, got ${f.op}${f.op === OP.CLOSE ? ` (close ${describeClose(f.payload)})` : ''}`);
  if (!f.fin || f.rsv) fail(`unexpected fin/rsv ${f.fin}/${f.rsv}`);
  if (payload !== undefined && !f.payload.equals(Buffer.from(payload)))
    fail(`payload differs (${f.payload.length} bytes, expected ${Buffer.from(payload).length})`);
  return f;
}

function describeClose(p) {
  return p.length >= 2 ? `${p.readUInt16BE(0)} "${p.subarray(2).toString()}"` : '(no code)';
}

// Next frame must be a close with `code` (null: an empty close frame), then the server must close TCP.
async function expectClose(c, code) {
  const f = await c.readFrame();
  if (f.op !== OP.CLOSE) fail(`expected close ${code}, got opcode ${f.op}`);
  const got = f.payload.length >= 2 ? f.payload.readUInt16BE(0) : null;
  if (got !== code) fail(`expected close ${code}, got ${describeClose(f.payload)}`);
  await c.expectEnd();
}

// Client-initiated normal close: the server echoes 1000 and closes TCP.
async function closeNormally(c) {
  c.write(frame(OP.CLOSE, closePayload(1000)));
  await expectClose(c, 1000);
}

// ---------------------------------------------------------------------------------------------------------------------
// permessage-deflate helpers (streams with Z_SYNC_FLUSH, as browsers and the `ws` package do)

function zflush(stream, input) {
  return new Promise((resolve, reject) => {
    const out = [];
    const onData = (d) => out.push(d);
    const onError = (e) => reject(e);
    stream.on('data', onData);
    stream.once('error', onError);
    stream.write(input);
    stream.flush(zlib.constants.Z_SYNC_FLUSH, () => {
      stream.off('data', onData);
      stream.off('error', onError);
      resolve(Buffer.concat(out));
    });
  });
}

class Compressor {
  constructor(windowBits = 15, contextTakeover = true) {
    this.opts = { windowBits: Math.max(windowBits, 9) };
    this.takeover = contextTakeover;
    this.z = null;
  }

  async compress(data) {
    if (!this.z || !this.takeover) this.z = zlib.createDeflateRaw(this.opts);
    const out = await zflush(this.z, Buffer.from(data));
    if (!out.subarray(-4).equals(TAIL)) fail('client deflate did not end with a sync flush');
    return out.subarray(0, out.length - 4);
  }
}

class Decompressor {
  constructor(windowBits = 15, contextTakeover = true) {
    this.opts = { windowBits };
    this.takeover = contextTakeover;
    this.z = null;
  }

  async inflate(payload) {
    if (!this.z || !this.takeover) this.z = zlib.createInflateRaw(this.opts);
    return zflush(this.z, Buffer.concat([payload, TAIL]));
  }
}

// Sends `msgs` compressed, expects each echoed compressed (RSV1) and identical after inflating.
async function deflateEcho(c, msgs, comp, decomp, op = OP.BINARY) {
  for (const m of msgs) {
    const z = await comp.compress(m);
    c.write(frame(op, z, { rsv: 4 }));
    const f = await c.readFrame();
    if (f.op !== op || !f.fin) fail(`expected a compressed echo, got opcode ${f.op} ${describeClose(f.payload)}`);
    if (f.rsv !== 4) fail(`echo without RSV1 (rsv=${f.rsv})`);
    const back = await decomp.inflate(f.payload);
    if (!back.equals(Buffer.from(m))) fail(`inflated echo differs (${back.length} vs ${m.length} bytes)`);
  }
}

// Data that compresses and has back-references at ~20 KiB distance (only usable with a window of 15 bits).
function farRepeats(n) {
  const block = crypto.randomBytes(20000);
  const parts = [];
  for (let len = 0; len < n; len += block.length) parts.push(block);
  return Buffer.concat(parts).subarray(0, n);
}

// ---------------------------------------------------------------------------------------------------------------------
// Cases: [name, async (port, deadline) => void]

const cases = [];
const add = (name, fn) => cases.push([name, fn]);
const text = (n) => Buffer.from('Hello, wörld! '.repeat(Math.ceil(n / 15) + 1)).subarray(0, n);
const binary = (n) => crypto.randomBytes(n);

// 1-2. Echo at the length-encoding boundaries.
for (const n of [0, 125, 126, 65535, 65536, 1 << 20]) {
  add(`echo-text-${n}`, async (port, dl) => {
    const c = await handshake(port, dl);
    const msg = Buffer.alloc(n, 'a');
    c.write(frame(OP.TEXT, msg));
    await expectFrame(c, OP.TEXT, msg);
    await closeNormally(c);
  });
  add(`echo-binary-${n}`, async (port, dl) => {
    const c = await handshake(port, dl);
    const msg = binary(n);
    c.write(frame(OP.BINARY, msg));
    await expectFrame(c, OP.BINARY, msg);
    await closeNormally(c);
  });
}

add('echo-many-in-one-write', async (port, dl) => {
  const c = await handshake(port, dl);
  const msgs = [text(1), text(200), binary(70000), text(0)];
  c.write(Buffer.concat(msgs.map((m, i) => frame(i === 2 ? OP.BINARY : OP.TEXT, m))));
  for (let i = 0; i < msgs.length; i++) await expectFrame(c, i === 2 ? OP.BINARY : OP.TEXT, msgs[i]);
  await closeNormally(c);
});

add('echo-byte-by-byte', async (port, dl) => {
  const c = await handshake(port, dl);
  const f = frame(OP.TEXT, text(300));
  for (let i = 0; i < f.length; i++) c.write(f.subarray(i, i + 1));
  await expectFrame(c, OP.TEXT, text(300));
  await closeNormally(c);
});

// 2. Pings and pongs.
add('ping-125', async (port, dl) => {
  const c = await handshake(port, dl);
  const p = binary(125);
  c.write(frame(OP.PING, p));
  await expectFrame(c, OP.PONG, p);
  await closeNormally(c);
});
add('ping-empty', async (port, dl) => {
  const c = await handshake(port, dl);
  c.write(frame(OP.PING));
  await expectFrame(c, OP.PONG, Buffer.alloc(0));
  await closeNormally(c);
});
add('unsolicited-pong-ignored', async (port, dl) => {
  const c = await handshake(port, dl);
  c.write(Buffer.concat([frame(OP.PONG, 'x'), frame(OP.TEXT, 'after pong')]));
  await expectFrame(c, OP.TEXT, 'after pong');
  await closeNormally(c);
});
add('ping-126-too-long', async (port, dl) => {
  const c = await handshake(port, dl);
  c.write(frame(OP.PING, binary(126)));
  await expectClose(c, 1002);
});
add('ping-fragmented', async (port, dl) => {
  const c = await handshake(port, dl);
  c.write(frame(OP.PING, 'a', { fin: false }));
  await expectClose(c, 1002);
});
add('close-fragmented', async (port, dl) => {
  const c = await handshake(port, dl);
  c.write(frame(OP.CLOSE, closePayload(1000), { fin: false }));
  await expectClose(c, 1002);
});

// 5. Fragmentation.
add('fragmented-text-with-pings', async (port, dl) => {
  const c = await handshake(port, dl);
  c.write(frame(OP.TEXT, 'frag', { fin: false }));
  c.write(frame(OP.PING, 'p1'));
  c.write(frame(OP.CONT, 'ment', { fin: false }));
  c.write(frame(OP.PING, 'p2'));
  c.write(frame(OP.CONT, 'ed'));
  await expectFrame(c, OP.PONG, 'p1');
  await expectFrame(c, OP.PONG, 'p2');
  await expectFrame(c, OP.TEXT, 'fragmented');
  await closeNormally(c);
});
add('fragmented-binary-empty-fragments', async (port, dl) => {
  const c = await handshake(port, dl);
  const b = binary(1000);
  c.write(Buffer.concat([frame(OP.BINARY, '', { fin: false }), frame(OP.CONT, b.subarray(0, 500), { fin: false }),
    frame(OP.CONT, '', { fin: false }), frame(OP.CONT, b.subarray(500))]));
  await expectFrame(c, OP.BINARY, b);
  await closeNormally(c);
});
add('fragmented-utf8-split-codepoint', async (port, dl) => {
  const c = await handshake(port, dl);
  const s = Buffer.from('κόσμε 𝄞');
  for (let i = 0; i < s.length; i++) c.write(frame(i ? OP.CONT : OP.TEXT, s.subarray(i, i + 1), { fin: i === s.length - 1 }));
  await expectFrame(c, OP.TEXT, s);
  await closeNormally(c);
});
add('continuation-without-start', async (port, dl) => {
  const c = await handshake(port, dl);
  c.write(frame(OP.CONT, 'x'));
  await expectClose(c, 1002);
});
add('new-message-inside-fragmented', async (port, dl) => {
  const c = await handshake(port, dl);
  c.write(Buffer.concat([frame(OP.TEXT, 'a', { fin: false }), frame(OP.TEXT, 'b')]));
  await expectClose(c, 1002);
});

// 6. UTF-8.
const BAD_UTF8 = Buffer.from([0xce, 0xba, 0xe1, 0xbd, 0xb9, 0xcf, 0x83, 0xce, 0xbc, 0xce, 0xb5, 0xed, 0xa0, 0x80, 0x65, 0x64]);
add('invalid-utf8-whole', async (port, dl) => {
  const c = await handshake(port, dl);
  c.write(frame(OP.TEXT, BAD_UTF8));
  await expectClose(c, 1007);
});
add('invalid-utf8-fragments', async (port, dl) => {
  const c = await handshake(port, dl);
  c.write(Buffer.concat([frame(OP.TEXT, BAD_UTF8.subarray(0, 12), { fin: false }), frame(OP.CONT, BAD_UTF8.subarray(12))]));
  await expectClose(c, 1007);
});
add('invalid-utf8-fail-fast-mid-frame', async (port, dl) => {
  const c = await handshake(port, dl);
  // Header announces 1000 bytes; only the first 20 (with a bad byte) are sent: the server must not wait for the rest.
  const f = frame(OP.TEXT, Buffer.concat([Buffer.from('valid start '), Buffer.from([0xff]), Buffer.alloc(987, 'a')]));
  c.write(f.subarray(0, 2 + 2 + 4 + 20));
  await expectClose(c, 1007);
});
add('invalid-utf8-truncated-at-end', async (port, dl) => {
  const c = await handshake(port, dl);
  c.write(frame(OP.TEXT, Buffer.from([0x61, 0xe2, 0x82])));
  await expectClose(c, 1007);
});
add('binary-not-utf8-checked', async (port, dl) => {
  const c = await handshake(port, dl);
  c.write(frame(OP.BINARY, BAD_UTF8));
  await expectFrame(c, OP.BINARY, BAD_UTF8);
  await closeNormally(c);
});

// 3-4. Reserved bits and opcodes, masking.
for (const rsv of [1, 2, 4]) {
  add(`reserved-bits-${rsv}`, async (port, dl) => {
    const c = await handshake(port, dl);
    c.write(frame(OP.TEXT, 'rsv', { rsv }));
    await expectClose(c, 1002);
  });
}
for (const op of [3, 4, 5, 6, 7, 0xb, 0xc, 0xd, 0xe, 0xf]) {
  add(`reserved-opcode-${op}`, async (port, dl) => {
    const c = await handshake(port, dl);
    c.write(frame(op, 'x'));
    await expectClose(c, 1002);
  });
}
add('unmasked-frame', async (port, dl) => {
  const c = await handshake(port, dl);
  c.write(frame(OP.TEXT, 'plain', { masked: false }));
  await expectClose(c, 1002);
});

// 7. Close handshake.
for (const code of [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 3000, 3999, 4000, 4999]) {
  add(`close-code-${code}`, async (port, dl) => {
    const c = await handshake(port, dl);
    c.write(frame(OP.CLOSE, closePayload(code, 'bye')));
    await expectClose(c, code);
  });
}
for (const code of [0, 999, 1004, 1005, 1006, 1016, 1100, 2000, 2999, 5000, 65535]) {
  add(`close-code-invalid-${code}`, async (port, dl) => {
    const c = await handshake(port, dl);
    c.write(frame(OP.CLOSE, closePayload(code)));
    await expectClose(c, 1002);
  });
}
add('close-empty', async (port, dl) => {
  const c = await handshake(port, dl);
  c.write(frame(OP.CLOSE));
  await expectClose(c, null);
});
add('close-one-byte-payload', async (port, dl) => {
  const c = await handshake(port, dl);
  c.write(frame(OP.CLOSE, Buffer.from([0x03])));
  await expectClose(c, 1002);
});
add('close-reason-123-bytes', async (port, dl) => {
  const c = await handshake(port, dl);
  c.write(frame(OP.CLOSE, closePayload(1000, Buffer.alloc(123, 'r'))));
  await expectClose(c, 1000);
});
add('close-reason-invalid-utf8', async (port, dl) => {
  const c = await handshake(port, dl);
  c.write(frame(OP.CLOSE, closePayload(1000, BAD_UTF8)));
  await expectClose(c, 1007);
});
add('data-after-close-ignored', async (port, dl) => {
  const c = await handshake(port, dl);
  c.write(Buffer.concat([frame(OP.CLOSE, closePayload(1000)), frame(OP.TEXT, 'ignored'), frame(OP.PING, 'x')]));
  await expectClose(c, 1000);
});

// 9. Limits.
add('too-big-frame-1009', async (port, dl) => {
  const c = await handshake(port, dl);
  // Only the header: the declared length alone must trigger 1009.
  c.write(frame(OP.BINARY, Buffer.alloc(0), { len: MAX_MESSAGE + 1 }).subarray(0, 14));
  await expectClose(c, 1009);
});
add('too-big-fragmented-1009', async (port, dl) => {
  const c = await handshake(port, dl);
  const half = Buffer.alloc(MAX_MESSAGE / 2 + 1, 'x');
  c.write(frame(OP.TEXT, half, { fin: false }));
  c.write(frame(OP.CONT, half));
  await expectClose(c, 1009);
});
add('max-size-message-echoed', async (port, dl) => {
  const c = await handshake(port, dl);
  const msg = binary(MAX_MESSAGE);
  c.write(frame(OP.BINARY, msg));
  await expectFrame(c, OP.BINARY, msg);
  await closeNormally(c);
});

// Handshake.
add('handshake-plain-get-426', async (port, dl) => {
  const c = await connect(port, dl);
  c.write(Buffer.from('GET / HTTP/1.1\r\nHost: x\r\n\r\n'));
  const head = await c.readHttp();
  if (!/^HTTP\/1\.1 426 /.test(head)) fail(`expected 426, got ${head.split('\r\n')[0]}`);
});
add('handshake-bad-key-400', async (port, dl) => {
  const c = await connect(port, dl);
  c.write(Buffer.from('GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n' +
    'Sec-WebSocket-Key: short\r\nSec-WebSocket-Version: 13\r\n\r\n'));
  const head = await c.readHttp();
  if (!/^HTTP\/1\.1 400 /.test(head)) fail(`expected 400, got ${head.split('\r\n')[0]}`);
});
add('handshake-no-deflate-when-not-offered', async (port, dl) => {
  const c = await handshake(port, dl, 'x-webkit-deflate-frame');
  if (c.extensions !== null) fail(`unexpected extensions: ${c.extensions}`);
  await closeNormally(c);
});

// 12-13. permessage-deflate.
add('deflate-context-takeover', async (port, dl) => {
  const c = await handshake(port, dl, 'permessage-deflate; client_max_window_bits');
  if (c.extensions !== 'permessage-deflate; client_max_window_bits=15') fail(`response: ${c.extensions}`);
  const msgs = [text(100), text(100), binary(3000), text(0), farRepeats(100000), text(5000)];
  await deflateEcho(c, msgs, new Compressor(), new Decompressor(), OP.BINARY);
  await closeNormally(c);
});
add('deflate-text-1MiB', async (port, dl) => {
  const c = await handshake(port, dl, 'permessage-deflate');
  await deflateEcho(c, [text(1 << 20), text(1 << 20)], new Compressor(), new Decompressor(), OP.TEXT);
  await closeNormally(c);
});
add('deflate-no-context-takeover', async (port, dl) => {
  const c = await handshake(port, dl, 'permessage-deflate; server_no_context_takeover; client_no_context_takeover');
  const want = 'permessage-deflate; server_no_context_takeover; client_no_context_takeover';
  if (c.extensions !== want) fail(`response: ${c.extensions}`);
  // A fresh inflater per message proves the server resets; a fresh compressor per message is what we promised.
  await deflateEcho(c, [text(500), text(500), text(500)], new Compressor(15, false), new Decompressor(15, false));
  await closeNormally(c);
});
for (let bits = 8; bits <= 15; bits++) {
  add(`deflate-window-bits-${bits}`, async (port, dl) => {
    const offer = `permessage-deflate; server_max_window_bits=${bits}; client_max_window_bits=${bits}`;
    const c = await handshake(port, dl, offer);
    if (c.extensions !== offer) fail(`response: ${c.extensions}`);
    // The server's output must inflate with a window of exactly `bits`; data with 20 KiB back-references tempts it.
    await deflateEcho(c, [farRepeats(60000), farRepeats(60000), text(300)], new Compressor(bits), new Decompressor(bits));
    await closeNormally(c);
  });
}
add('deflate-second-offer-accepted', async (port, dl) => {
  const c = await handshake(port, dl, 'permessage-deflate; server_max_window_bits=7, permessage-deflate; client_max_window_bits=10');
  if (c.extensions !== 'permessage-deflate; client_max_window_bits=10') fail(`response: ${c.extensions}`);
  await deflateEcho(c, [text(1000)], new Compressor(10), new Decompressor());
  await closeNormally(c);
});
add('deflate-invalid-offer-declined', async (port, dl) => {
  const c = await handshake(port, dl, 'permessage-deflate; server_max_window_bits=16');
  if (c.extensions !== null) fail(`unexpected extensions: ${c.extensions}`);
  c.write(frame(OP.TEXT, 'x', { rsv: 4 }));
  await expectClose(c, 1002);
});
add('deflate-fragmented-with-ping', async (port, dl) => {
  const c = await handshake(port, dl, 'permessage-deflate');
  const z = await new Compressor().compress(text(2000));
  const cut = Math.floor(z.length / 2);
  c.write(frame(OP.TEXT, z.subarray(0, cut), { fin: false, rsv: 4 }));
  c.write(frame(OP.PING, 'mid'));
  c.write(frame(OP.CONT, z.subarray(cut)));
  await expectFrame(c, OP.PONG, 'mid');
  const f = await c.readFrame();
  if (f.op !== OP.TEXT || f.rsv !== 4) fail(`expected compressed text, got op ${f.op} rsv ${f.rsv}`);
  if (!(await new Decompressor().inflate(f.payload)).equals(text(2000))) fail('echo differs');
  await closeNormally(c);
});
add('deflate-uncompressed-message-allowed', async (port, dl) => {
  const c = await handshake(port, dl, 'permessage-deflate');
  c.write(frame(OP.TEXT, 'not compressed'));
  const f = await c.readFrame();
  if (f.op !== OP.TEXT || !(await new Decompressor().inflate(f.payload)).equals(Buffer.from('not compressed')))
    fail('echo differs');
  await closeNormally(c);
});
add('deflate-rsv1-on-continuation', async (port, dl) => {
  const c = await handshake(port, dl, 'permessage-deflate');
  const z = await new Compressor().compress(text(100));
  c.write(Buffer.concat([frame(OP.TEXT, z.subarray(0, 4), { fin: false, rsv: 4 }), frame(OP.CONT, z.subarray(4), { rsv: 4 })]));
  await expectClose(c, 1002);
});
add('deflate-rsv1-on-ping', async (port, dl) => {
  const c = await handshake(port, dl, 'permessage-deflate');
  c.write(frame(OP.PING, 'x', { rsv: 4 }));
  await expectClose(c, 1002);
});
add('deflate-corrupt-1007', async (port, dl) => {
  const c = await handshake(port, dl, 'permessage-deflate');
  c.write(frame(OP.BINARY, Buffer.from([0xff, 0xff, 0xff, 0xff, 0x00]), { rsv: 4 }));
  await expectClose(c, 1007);
});
add('deflate-invalid-utf8-1007', async (port, dl) => {
  const c = await handshake(port, dl, 'permessage-deflate');
  c.write(frame(OP.TEXT, await new Compressor().compress(BAD_UTF8), { rsv: 4 }));
  await expectClose(c, 1007);
});
add('deflate-bomb-1009', async (port, dl) => {
  const c = await handshake(port, dl, 'permessage-deflate');
  const z = await new Compressor().compress(Buffer.alloc(MAX_MESSAGE + 1024 * 1024));
  if (z.length > 100000) fail(`bomb not small: ${z.length}`);
  c.write(frame(OP.BINARY, z, { rsv: 4 }));
  await expectClose(c, 1009);
});
add('deflate-rfc7692-hello-examples', async (port, dl) => {
  const c = await handshake(port, dl, 'permessage-deflate');
  // §7.2.3.1 "Hello", §7.2.3.2 the same with context takeover, §7.2.3.3 stored block, §7.2.3.4 BFINAL.
  const payloads = ['f248cdc9c90700', 'f200110000', '000500faff48656c6c6f00', 'f348cdc9c9070000'];
  const d = new Decompressor();
  for (const hex of payloads) {
    c.write(frame(OP.TEXT, Buffer.from(hex, 'hex'), { rsv: 4 }));
    const f = await c.readFrame();
    if (f.op !== OP.TEXT || f.rsv !== 4) fail(`expected compressed text for ${hex}`);
    if ((await d.inflate(f.payload)).toString() !== 'Hello') fail(`echo of ${hex} differs`);
  }
  await closeNormally(c);
});

// ---------------------------------------------------------------------------------------------------------------------
// Runner

function startServer(path) {
  return new Promise((resolve, reject) => {
    const child = spawn(path, ['0'], { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    child.once('error', reject);
    child.once('exit', (code) => reject(new Error(`ws-echo exited early (${code})`)));
    child.stdout.on('data', (d) => {
      out += d;
      const m = out.match(/listening on (\d+)/);
      if (m) resolve({ child, port: Number(m[1]) });
    });
  });
}

async function main() {
  const [path, filter] = process.argv.slice(2);
  if (!path) {
    console.error('usage: node ws-conformance.mjs PATH/TO/ws-echo [FILTER]');
    process.exit(2);
  }
  const { child, port } = await startServer(path);
  child.removeAllListeners('exit');
  let passed = 0;
  let failed = 0;
  const selected = cases.filter(([name]) => !filter || name.includes(filter));
  console.log(`1..${selected.length}`);
  for (const [name, fn] of selected) {
    const t0 = Date.now();
    try {
      await fn(port, t0 + CASE_TIMEOUT_MS);
      passed++;
      console.log(`ok ${passed + failed} - ${name} (${Date.now() - t0} ms)`);
    } catch (e) {
      failed++;
      console.log(`not ok ${passed + failed} - ${name}: ${e.message}`);
    }
    for (const s of openSockets) s.destroy();
    openSockets.clear();
  }
  child.kill('SIGTERM');
  console.log(`${passed} passed, ${failed} failed`);
  process.exit(failed ? 1 : 0);
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
