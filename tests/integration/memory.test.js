'use strict';
// The global memory budget (max_memory_bytes; bridge/memory.c, bridge/main.c,
// bridge/acceptor.c, the hold in bridge/conn.c), warren only.
//
// warren is started with a budget 24 MiB above its idle RSS (measured on a
// first warren with one session logged in, as the test's victim is). Flooders
// log in, then each sends most of a 4 MiB WebSocket message and never
// finishes it, so warren holds their bytes. Once RSS crosses the budget:
// a new connection gets HTTP 503, the victim's receipted SEND gets no RECEIPT
// (its socket is not read), and the flood stops growing warren (16 MiB more
// from each flooder: RSS a second later is what it was at the crossing). When the
// flooders disconnect, RSS falls, warren accepts again and the victim's
// RECEIPT arrives; each crossing is logged once. The flooders leave with a
// reset (a FIN would be queued behind the bytes warren holds unread); held
// connections are checked for a peer that left every 200 ms.
//
// Under AddressSanitizer freed memory sits in quarantine (RSS would not fall):
// this file's warren runs with quarantine_size_mb=0.

process.env.ASAN_OPTIONS = [process.env.ASAN_OPTIONS, 'quarantine_size_mb=0'].filter(Boolean).join(':');

const { describe, it, after } = require('node:test');
const assert = require('node:assert/strict');
const crypto = require('node:crypto');
const fs = require('node:fs');
const net = require('node:net');
const T = require('./lib/target');
const { RawStomp, encodeFrame } = require('./lib/raw');
const { withTimeout, waitFor, unique, WAIT_MS } = require('./lib/util');

const skip = T.suiteSkip() || T.warrenOnly('max_memory_bytes is a warren key');

const MIB = 1024 * 1024;
const MARGIN = 24 * MIB;
const FLOODERS = 12;
const MESSAGE = 4 * MIB; // well under max_message_bytes (32 MiB + 4 KiB)

const started = [];
async function start(opts) {
  const t = await T.startTarget(opts);
  started.push(t);
  return t;
}

after(async () => {
  for (const t of started) {
    const r = await t.stop();
    assert.deepEqual(r, { code: 0, sig: null }, `warren exit status\n${t.output()}`);
  }
});

/** VmRSS of `pid` in bytes. */
function rss(pid) {
  const m = /VmRSS:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/status`, 'latin1'));
  return Number(m[1]) * 1024;
}

function waitLog(target, re, what) {
  return waitFor(async () => (re.test(target.output()) ? true : null), WAIT_MS, what || `log line ${re}`);
}

function count(target, re) {
  return (target.output().match(new RegExp(re.source, 'g')) || []).length;
}

function upgradeRequest() {
  return (
    'GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Protocol: v12.stomp\r\n' +
    `Sec-WebSocket-Key: ${crypto.randomBytes(16).toString('base64')}\r\nSec-WebSocket-Version: 13\r\n\r\n`
  );
}

/** A client WebSocket frame header (FIN, `opcode`, masked with the key 0, so the payload goes as it is). */
function frameHeader(opcode, len) {
  if (len < 126) return Buffer.from([0x80 | opcode, 0x80 | len, 0, 0, 0, 0]);
  if (len < 65536) {
    const h = Buffer.from([0x80 | opcode, 0x80 | 126, 0, 0, 0, 0, 0, 0]);
    h.writeUInt16BE(len, 2);
    return h;
  }
  const h = Buffer.alloc(14);
  h[0] = 0x80 | opcode;
  h[1] = 0x80 | 127;
  h.writeBigUInt64BE(BigInt(len), 2);
  return h;
}

/** Sends `request` on a fresh TCP connection; resolves with everything received until the close. */
function rawExchange(port, request) {
  return withTimeout(
    new Promise((resolve) => {
      const sock = net.connect({ host: '127.0.0.1', port });
      const chunks = [];
      sock.on('data', (d) => chunks.push(d));
      sock.on('error', () => {});
      sock.once('connect', () => sock.write(request));
      sock.once('close', () => resolve(Buffer.concat(chunks).toString('latin1')));
    }),
    WAIT_MS,
    'the server to answer and close',
  );
}

/**
 * A flooder: upgrades, logs in, then writes most of one 4 MiB binary message and never finishes it. Returns { sock,
 * ready }: ready resolves with 'connected' once CONNECTED came back (the rest is written as warren reads it), 'refused'
 * on a 503, 'closed' when the connection ended first. A flooder that warren accepted just before it went over may
 * wait at any step (its reading held): the caller races `ready` with the crossing.
 */
function flooder(port) {
  const sock = net.connect({ host: '127.0.0.1', port });
  const ready = new Promise((resolve) => {
    let got = '';
    let upgraded = false;
    sock.on('error', () => {});
    sock.once('close', () => resolve('closed'));
    sock.once('connect', () => sock.write(upgradeRequest()));
    sock.on('data', (d) => {
      got += d.toString('latin1');
      if (!upgraded && got.includes('\r\n\r\n')) {
        if (!got.startsWith('HTTP/1.1 101')) return resolve(got.startsWith('HTTP/1.1 503') ? 'refused' : `upgrade: ${got.slice(0, 80)}`);
        upgraded = true;
        const connect = encodeFrame('CONNECT', { 'accept-version': '1.2', host: '/', login: 'guest', passcode: 'guest' });
        sock.write(Buffer.concat([frameHeader(0x1, connect.length), connect]));
      }
      if (upgraded && got.includes('CONNECTED')) {
        sock.removeAllListeners('data');
        sock.on('data', () => {});
        sock.write(frameHeader(0x2, MESSAGE));
        sock.write(Buffer.alloc(MESSAGE - 1024, 0x78)); // node buffers what warren does not read
        resolve('connected');
      }
    });
  });
  return { sock, ready };
}

describe('memory: max_memory_bytes', { skip }, () => {
  it('over the budget: 503 for new connections, reading paused; back under: accepting and reading again', async (tc) => {
    const workers = process.env.WARREN_TEST_WORKERS || '2';
    // Idle RSS with one session logged in, as in the run below.
    const probe = await start({ workers, max_memory_pct: '0' });
    const pv = await RawStomp.connect(probe.url);
    await pv.withReceipt('SEND', { destination: `/queue/${unique('mem-probe')}` }, 'x');
    const idle = rss(probe.child.pid);
    pv.close();
    await probe.stop();
    started.splice(started.indexOf(probe), 1);

    const budget = idle + MARGIN;
    const t = await start({ workers, max_memory_bytes: String(budget) });
    await waitLog(t, new RegExp(`max_memory_bytes: ${(budget / MIB).toFixed(1)} MiB`));
    const queue = `/queue/${unique('mem-victim')}`;
    const victim = await RawStomp.connect(t.url);
    await victim.withReceipt('SEND', { destination: queue }, 'before');

    const floods = [];
    try {
      const overLog = waitLog(t, /memory: RSS [\d.]+ MiB reached the budget/, 'warren to go over its budget');
      overLog.catch(() => {}); // awaited below
      let connected = 0;
      for (let i = 0; i < FLOODERS; i++) {
        const f = flooder(t.port);
        floods.push(f.sock);
        const r = await Promise.race([f.ready, overLog.then(() => 'over')]);
        if (r === 'over' || r === 'refused') break;
        assert.equal(r, 'connected', `flooder ${i}`);
        connected++;
      }
      await overLog;
      const over = rss(t.child.pid);

      // A new connection is refused with 503, before anything is read or allocated for it.
      const reply = await rawExchange(t.port, upgradeRequest());
      assert.match(reply, /^HTTP\/1\.1 503 /, reply);
      assert.match(reply, /memory budget reached/);

      // The victim's socket is not read: its SEND gets no RECEIPT while warren is over.
      const id = `r-${unique('held')}`;
      victim.sendFrame('SEND', { destination: queue, receipt: id }, 'held');
      // Meanwhile every flooder pushes 16 MiB more, more than the kernel's socket buffers take.
      const more = Buffer.alloc(16 * MIB, 0x78);
      for (const f of floods) f.write(more);
      await assert.rejects(victim.next(1000, 'RECEIPT while over the budget'), /timed out/);

      // The flood does not grow warren any more (what it had read when the hold came is all it holds).
      const peak = rss(t.child.pid);
      const unsent = floods.reduce((n, f) => n + f.writableLength, 0);
      tc.diagnostic(
        `idle ${(idle / MIB).toFixed(1)} MiB, budget ${(budget / MIB).toFixed(1)} MiB, ${connected} flooders of ` +
          `${MESSAGE / MIB} MiB, RSS at the crossing ${(over / MIB).toFixed(1)} MiB, a second later ${(peak / MIB).toFixed(1)} MiB ` +
          `with ${(unsent / MIB).toFixed(1)} MiB more waiting in the flooders`,
      );
      // What warren read between its last sample under the budget and the hold is the overshoot (loopback is fast);
      // after it nothing more is taken, though the flooders still have bytes to send.
      assert.ok(unsent > 0, 'the flooders had nothing left to send');
      assert.ok(peak <= over + MIB, `RSS grew from ${over} to ${peak} while over the budget`);

      // Pressure gone: back under the low-water mark, accepting and reading again. The flooders reset their
      // connections: a FIN would wait behind the bytes warren is not reading (doc/config.md, max_memory_bytes).
      for (const s of floods.splice(0)) s.resetAndDestroy();
      await waitLog(t, /memory: RSS [\d.]+ MiB, back under/, 'warren to come back under its budget');
      const f = await victim.expect('RECEIPT');
      assert.equal(f.headers['receipt-id'], id);
      const late = await RawStomp.connect(t.url);
      await late.withReceipt('SEND', { destination: queue }, 'after');
      late.close();
      assert.equal(count(t, /reached the budget/), 1, t.output());
      assert.equal(count(t, /back under/), 1, t.output());
      assert.match(t.output(), /back under [\d.]+ MiB \(90 % of the budget\): accepting and reading again; [1-9]\d* connections refused/);
    } finally {
      for (const s of floods) s.resetAndDestroy();
      victim.close();
    }
  });
});
