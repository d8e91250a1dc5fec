'use strict';
// A WebSocket client on a bare TCP socket for attack tests (hostile-ws): the
// upgrade is written by hand, frames are built here (masked, any length
// announced, permessage-deflate payloads made with zlib and sent in pieces),
// and the server's frames are parsed here, so a test sees exact close codes
// and can stop reading (sock.pause()) to play a client that never reads.
// Also the /proc figures the attack tests report: RSS and CPU time of a pid.

const crypto = require('node:crypto');
const fs = require('node:fs');
const net = require('node:net');
const zlib = require('node:zlib');
const { AsyncQueue, withTimeout, WAIT_MS } = require('./util');
const { encodeFrame } = require('./raw');

/** One client frame: masked, minimal length encoding; rsv1 for a compressed first frame. */
function wsFrame(opcode, payload, { fin = true, rsv1 = false, announce } = {}) {
  const p = Buffer.isBuffer(payload) ? payload : Buffer.from(payload);
  const len = announce ?? p.length;
  const b0 = (fin ? 0x80 : 0) | (rsv1 ? 0x40 : 0) | opcode;
  let h;
  if (len < 126) h = Buffer.from([b0, 0x80 | len]);
  else if (len < 65536) {
    h = Buffer.from([b0, 0x80 | 126, 0, 0]);
    h.writeUInt16BE(len, 2);
  } else {
    h = Buffer.alloc(10);
    h[0] = b0;
    h[1] = 0x80 | 127;
    h.writeBigUInt64BE(BigInt(len), 2);
  }
  const key = crypto.randomBytes(4);
  const masked = Buffer.from(p);
  for (let i = 0; i < masked.length; i++) masked[i] ^= key[i & 3];
  return Buffer.concat([h, key, masked]);
}

/** RFC 7692 §7.2.1: a raw DEFLATE stream ended by a sync flush, without its 00 00 FF FF tail. */
function deflate(buf, level = 9) {
  const z = zlib.deflateRawSync(buf, { level, finishFlush: zlib.constants.Z_SYNC_FLUSH });
  return z.subarray(0, z.length - 4);
}

/** The payload length and offset of the server frame at the start of `b`, or null until the whole frame is there. */
function frameHeader(b) {
  if (b.length < 2) return null;
  let len = b[1] & 0x7f;
  let off = 2;
  if (len === 126) {
    if (b.length < 4) return null;
    len = b.readUInt16BE(2);
    off = 4;
  } else if (len === 127) {
    if (b.length < 10) return null;
    len = Number(b.readBigUInt64BE(2));
    off = 10;
  }
  return b.length < off + len ? null : { len, off };
}

class WsRaw {
  /** Opens and upgrades; opts.deflate offers permessage-deflate (each message is compressed on its own). */
  static open(port, { deflate: offer = false } = {}) {
    const sock = net.connect({ host: '127.0.0.1', port });
    const c = new WsRaw(sock);
    const lines = [
      'GET /ws HTTP/1.1',
      'Host: 127.0.0.1',
      'Upgrade: websocket',
      'Connection: Upgrade',
      `Sec-WebSocket-Key: ${crypto.randomBytes(16).toString('base64')}`,
      'Sec-WebSocket-Version: 13',
      'Sec-WebSocket-Protocol: v12.stomp',
    ];
    // No context takeover either way: each message is compressed and inflated on its own here.
    if (offer) lines.push('Sec-WebSocket-Extensions: permessage-deflate; client_no_context_takeover; server_no_context_takeover');
    sock.once('connect', () => sock.write(`${lines.join('\r\n')}\r\n\r\n`));
    return withTimeout(c.upgraded, WAIT_MS, 'HTTP 101');
  }

  constructor(sock) {
    this.sock = sock;
    this.buf = Buffer.alloc(0);
    this.head = null;
    this.frames = new AsyncQueue('WebSocket frame');
    this.pongs = [];
    this.pongWaiters = [];
    this.closeFrame = null;
    this.ended = new Promise((resolve) => sock.once('close', resolve));
    sock.on('error', () => {});
    sock.once('close', () => this.frames.fail(new Error('TCP connection closed')));
    this.upgraded = new Promise((resolve, reject) => {
      sock.on('data', (d) => {
        this.buf = Buffer.concat([this.buf, d]);
        if (!this.head) {
          const end = this.buf.indexOf('\r\n\r\n');
          if (end < 0) return;
          this.head = this.buf.subarray(0, end).toString('latin1');
          this.buf = this.buf.subarray(end + 4);
          if (!/^HTTP\/1\.1 101 /.test(this.head)) reject(new Error(`no 101: ${this.head.split('\r\n')[0]}`));
          else resolve(this);
        }
        this.parse();
      });
      sock.once('close', () => reject(new Error('closed before the 101')));
    });
  }

  get deflate() {
    return /sec-websocket-extensions: *permessage-deflate/i.test(this.head);
  }

  parse() {
    for (;;) {
      const b = this.buf;
      const h = frameHeader(b);
      if (!h) return;
      const { len, off } = h;
      const f = { opcode: b[0] & 0x0f, rsv1: (b[0] & 0x40) !== 0, payload: Buffer.from(b.subarray(off, off + len)) };
      this.buf = b.subarray(off + len);
      if (f.rsv1) f.payload = zlib.inflateRawSync(Buffer.concat([f.payload, Buffer.from([0, 0, 0xff, 0xff])]), { finishFlush: zlib.constants.Z_SYNC_FLUSH });
      if (f.opcode === 0xa) {
        this.pongs.push({ payload: f.payload, at: process.hrtime.bigint() });
        for (const w of this.pongWaiters.splice(0)) w();
        continue;
      }
      if (f.opcode === 0x8) {
        this.closeFrame = {
          code: f.payload.length >= 2 ? f.payload.readUInt16BE(0) : 1005,
          reason: f.payload.subarray(2).toString('utf8'),
        };
      }
      this.frames.push(f);
    }
  }

  write(buf) {
    return this.sock.write(buf);
  }

  /** Writes and resolves once the socket took it (drain), for floods that must not pile up in Node. */
  writeDrained(buf) {
    if (this.sock.write(buf)) return Promise.resolve();
    return new Promise((resolve) => {
      const done = () => {
        this.sock.off('drain', done);
        this.sock.off('close', done);
        resolve();
      };
      this.sock.on('drain', done);
      this.sock.on('close', done);
    });
  }

  /** One text message carrying `bytes`, compressed when permessage-deflate was agreed and opts.compress. */
  message(bytes, { compress = false, level } = {}) {
    if (compress) return wsFrame(0x1, deflate(bytes, level), { rsv1: true });
    return wsFrame(0x1, bytes);
  }

  sendStomp(command, headers = {}, body = '', opts = {}) {
    this.write(this.message(encodeFrame(command, headers, body), opts));
  }

  /** CONNECT as guest; resolves with the CONNECTED payload. */
  async login() {
    this.sendStomp('CONNECT', { 'accept-version': '1.2', host: '/', login: 'guest', passcode: 'guest', 'heart-beat': '0,0' });
    const f = await this.next('CONNECTED');
    const text = f.payload.toString();
    if (!text.startsWith('CONNECTED\n')) throw new Error(`expected CONNECTED, got ${text.slice(0, 200)}`);
    return text;
  }

  /** Next data or close frame (pongs are recorded apart). */
  next(what, ms = WAIT_MS) {
    return this.frames.next(ms, what);
  }

  /** Waits for the server's close frame; returns { code, reason }. */
  async expectClose(ms = WAIT_MS) {
    for (;;) {
      const f = await this.next('close frame', ms);
      if (f.opcode === 0x8) return this.closeFrame;
    }
  }

  /** Round trip of one ping in milliseconds (the loop's responsiveness as this client sees it). */
  async pingRtt(ms = WAIT_MS) {
    const n = this.pongs.length;
    const t0 = process.hrtime.bigint();
    this.write(wsFrame(0x9, crypto.randomBytes(8)));
    await withTimeout(
      new Promise((resolve) => {
        const check = () => (this.pongs.length > n ? resolve() : this.pongWaiters.push(check));
        check();
      }),
      ms,
      'pong',
    );
    return Number(this.pongs[n].at - t0) / 1e6;
  }

  waitEnd(ms = WAIT_MS) {
    return withTimeout(this.ended, ms, 'server to close TCP');
  }

  destroy() {
    this.sock.destroy();
  }
}

/** { rss, hwm } in KiB and threads of a process, from /proc/<pid>/status. */
function procStatus(pid) {
  const s = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = (k) => Number(new RegExp(`^${k}:\\s+(\\d+)`, 'm').exec(s)?.[1] ?? NaN);
  return { rss: kb('VmRSS'), hwm: kb('VmHWM'), threads: kb('Threads') };
}

/** CPU time (user + system) of a process in milliseconds, from /proc/<pid>/stat. */
function cpuMs(pid) {
  const s = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  const f = s.slice(s.lastIndexOf(')') + 2).split(' ');
  return ((Number(f[11]) + Number(f[12])) * 1000) / 100; // utime, stime in clock ticks (USER_HZ 100)
}

/** p50/p99/max of a list of numbers. */
function percentiles(xs) {
  const s = [...xs].sort((a, b) => a - b);
  const at = (q) => s[Math.min(s.length - 1, Math.floor(q * s.length))];
  return { n: s.length, p50: at(0.5), p99: at(0.99), max: s[s.length - 1] };
}

module.exports = { WsRaw, wsFrame, frameHeader, deflate, procStatus, cpuMs, percentiles };
