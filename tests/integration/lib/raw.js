'use strict';
// A raw STOMP-over-WebSocket client for the cases @stomp/stompjs would hide:
// exact bytes on the wire, several frames per WebSocket message or one frame
// split over several, heart-beat EOLs, whether a MESSAGE came as a text or a
// binary WebSocket message, ERROR followed by the close.
//
// Incoming frames are parsed with a small streaming STOMP 1.2 parser
// (content-length honoured, first header occurrence wins, escapes decoded
// except on CONNECTED). EOLs between frames are counted as heart-beats, except
// the EOLs that trail a frame's NUL inside the same WebSocket message
// (Web-STOMP appends "\n" to every frame).

const WebSocket = require('ws');
const { AsyncQueue, withTimeout, WAIT_MS } = require('./util');

const PROTOCOLS = ['v12.stomp', 'v11.stomp', 'v10.stomp'];

function unescapeHeader(s) {
  return s.replace(/\\(.)/g, (m, c) => ({ n: '\n', r: '\r', c: ':', '\\': '\\' })[c] ?? m);
}

function escapeHeader(s) {
  return String(s).replace(/\\/g, '\\\\').replace(/\n/g, '\\n').replace(/\r/g, '\\r').replace(/:/g, '\\c');
}

/**
 * Serialises a frame. headers: object or array of [k, v] pairs. body: string
 * or Buffer. opts.contentLength (default true when body is non-empty) adds
 * content-length; opts.escape (default: not for CONNECT/STOMP) escapes values.
 */
function encodeFrame(command, headers = {}, body = '', opts = {}) {
  const b = Buffer.isBuffer(body) ? body : Buffer.from(body, 'utf8');
  const pairs = Array.isArray(headers) ? headers.slice() : Object.entries(headers);
  const cl = opts.contentLength ?? b.length > 0;
  if (cl && !pairs.some(([k]) => k === 'content-length')) pairs.push(['content-length', String(b.length)]);
  const esc = opts.escape ?? !(command === 'CONNECT' || command === 'STOMP');
  const head = [command, ...pairs.map(([k, v]) => (esc ? `${escapeHeader(k)}:${escapeHeader(v)}` : `${k}:${v}`))];
  return Buffer.concat([Buffer.from(`${head.join('\n')}\n\n`, 'utf8'), b, Buffer.from([0])]);
}

/** Streaming parser for server frames. onFrame(frame), onBeat(). */
class FrameParser {
  constructor(onFrame, onBeat) {
    this.buf = Buffer.alloc(0);
    this.onFrame = onFrame;
    this.onBeat = onBeat;
  }

  /** Feeds one WebSocket message's bytes; binary = it was a binary message. */
  feed(chunk, binary) {
    this.buf = Buffer.concat([this.buf, chunk]);
    let trailing = false; // EOLs right after a NUL in this message are not beats
    for (;;) {
      while (this.buf.length && (this.buf[0] === 0x0a || (this.buf[0] === 0x0d && this.buf[1] === 0x0a))) {
        const n = this.buf[0] === 0x0d ? 2 : 1;
        this.buf = this.buf.subarray(n);
        if (!trailing) this.onBeat();
      }
      if (!this.buf.length) return;
      const f = this.parseOne(binary);
      if (!f) return;
      trailing = true;
      this.onFrame(f);
    }
  }

  parseOne(binary) {
    const end = this.buf.indexOf('\n\n');
    const endCr = this.buf.indexOf('\r\n\r\n');
    let headEnd;
    let sep;
    if (endCr >= 0 && (end < 0 || endCr < end)) [headEnd, sep] = [endCr, 4];
    else if (end >= 0) [headEnd, sep] = [end, 2];
    else return null;
    const lines = this.buf.subarray(0, headEnd).toString('utf8').split(/\r?\n/);
    const command = lines.shift();
    const headers = {};
    const rawHeaders = [];
    for (const line of lines) {
      const i = line.indexOf(':');
      const k = line.slice(0, i);
      const v = line.slice(i + 1);
      rawHeaders.push([k, v]);
      const kk = command === 'CONNECTED' ? k : unescapeHeader(k);
      if (!(kk in headers)) headers[kk] = command === 'CONNECTED' ? v : unescapeHeader(v);
    }
    const start = headEnd + sep;
    let bodyEnd;
    if (headers['content-length'] !== undefined) {
      bodyEnd = start + Number(headers['content-length']);
      if (this.buf.length < bodyEnd + 1) return null;
      if (this.buf[bodyEnd] !== 0) throw new Error(`server frame ${command}: no NUL after content-length body`);
    } else {
      bodyEnd = this.buf.indexOf(0, start);
      if (bodyEnd < 0) return null;
    }
    const body = Buffer.from(this.buf.subarray(start, bodyEnd));
    this.buf = this.buf.subarray(bodyEnd + 1);
    return { command, headers, rawHeaders, body, text: body.toString('utf8'), binary };
  }
}

/**
 * One raw connection. Fields: ws, frames (AsyncQueue of frames), beats
 * (count), closed (promise of {code, reason, at}), messages (log of
 * {binary, data} WebSocket messages received).
 */
class RawStomp {
  constructor(ws) {
    this.ws = ws;
    this.frames = new AsyncQueue('STOMP frame');
    this.beats = 0;
    this.beatTimes = [];
    this.beatWaiters = [];
    this.wsMessages = [];
    this.isClosed = false;
    this.parser = new FrameParser(
      (f) => this.frames.push(f),
      () => this.beat(),
    );
    this.closed = new Promise((resolve) => {
      ws.on('close', (code, reason) => {
        this.isClosed = true;
        const c = { code, reason: reason.toString(), at: Date.now() };
        this.frames.fail(new Error(`connection closed (${code} ${c.reason})`));
        for (const w of this.beatWaiters.splice(0)) w.reject(new Error('closed while waiting for heart-beats'));
        resolve(c);
      });
    });
    ws.on('error', (e) => {
      this.lastError = e;
    });
    ws.on('message', (data, isBinary) => {
      const b = Buffer.isBuffer(data) ? data : Buffer.from(data);
      this.wsMessages.push({ binary: isBinary, data: b });
      try {
        this.parser.feed(b, isBinary);
      } catch (e) {
        this.frames.fail(e);
      }
    });
  }

  /**
   * Opens a WebSocket. opts: protocols (default v12/v11/v10; [] for none),
   * perMessageDeflate (default false), headers.
   */
  static open(url, opts = {}) {
    const protocols = opts.protocols ?? PROTOCOLS;
    const ws = new WebSocket(url, protocols, {
      perMessageDeflate: opts.perMessageDeflate ?? false,
      headers: opts.headers,
      maxPayload: opts.maxPayload ?? 256 * 1024 * 1024,
    });
    const client = new RawStomp(ws);
    return withTimeout(
      new Promise((resolve, reject) => {
        ws.once('open', () => resolve(client));
        ws.once('unexpected-response', (req, res) => reject(new Error(`HTTP ${res.statusCode} on upgrade`)));
        ws.once('error', reject);
      }),
      WAIT_MS,
      `WebSocket open ${url}`,
    );
  }

  /** Opens and sends CONNECT; resolves with the RawStomp once CONNECTED. */
  static async connect(url, headers = {}, opts = {}) {
    const c = await RawStomp.open(url, opts);
    const f = await c.handshake(headers, opts.command);
    if (f.command !== 'CONNECTED') throw new Error(`expected CONNECTED, got ${f.command} ${JSON.stringify(f.headers)} ${f.text}`);
    c.connected = f;
    return c;
  }

  /** Sends CONNECT (or STOMP) with sensible defaults and returns the reply frame. */
  handshake(headers = {}, command = 'CONNECT') {
    const h = { 'accept-version': '1.2', host: '/', 'heart-beat': '0,0', login: 'guest', passcode: 'guest', ...headers };
    for (const k of Object.keys(h)) if (h[k] === null) delete h[k];
    this.sendFrame(command, h);
    return this.frames.next(WAIT_MS, 'reply to CONNECT');
  }

  beat() {
    this.beats += 1;
    this.beatTimes.push(Date.now());
    this.beatWaiters = this.beatWaiters.filter((w) => {
      if (this.beats >= w.n) w.resolve(this.beats);
      return this.beats < w.n;
    });
  }

  /** Resolves when the total heart-beat count reaches n. */
  waitBeats(n, ms = WAIT_MS) {
    if (this.beats >= n) return Promise.resolve(this.beats);
    if (this.isClosed) return Promise.reject(new Error('closed'));
    return withTimeout(new Promise((resolve, reject) => this.beatWaiters.push({ n, resolve, reject })), ms, `${n} heart-beats`);
  }

  /** Sends bytes as one WebSocket message (text unless binary:true). */
  sendRaw(data, { binary = false } = {}) {
    this.ws.send(data, { binary });
  }

  sendFrame(command, headers = {}, body = '', opts = {}) {
    this.sendRaw(encodeFrame(command, headers, body, opts), { binary: opts.binary ?? false });
  }

  next(ms = WAIT_MS, what) {
    return this.frames.next(ms, what);
  }

  /** Next frame, which must be `command`. */
  async expect(command, ms = WAIT_MS) {
    const f = await this.frames.next(ms, command);
    if (f.command !== command) {
      throw new Error(`expected ${command}, got ${f.command} ${JSON.stringify(f.headers)} ${f.text.slice(0, 300)}`);
    }
    return f;
  }

  /** Sends a frame with a receipt header and waits for that RECEIPT. */
  async withReceipt(command, headers = {}, body = '', opts = {}) {
    const id = `r-${Math.random().toString(36).slice(2)}`;
    this.sendFrame(command, { ...headers, receipt: id }, body, opts);
    const f = await this.expect('RECEIPT');
    if (f.headers['receipt-id'] !== id) throw new Error(`receipt-id ${f.headers['receipt-id']} != ${id}`);
    return f;
  }

  waitClose(ms = WAIT_MS) {
    return withTimeout(this.closed, ms, 'server to close the connection');
  }

  close() {
    if (!this.isClosed) this.ws.terminate();
  }
}

module.exports = { RawStomp, FrameParser, encodeFrame, escapeHeader, PROTOCOLS };
