'use strict';
// Session budgets under a flood (issue 7; suite hostile): the memory figures
// of the attacks, RSS read from /proc/<pid>/status. The default limits only,
// so that the same file runs against an older warren for the "before" figure
// (WARREN_BIN=/path/to/old/warren node --test tests/integration/budgets-flood.test.js).
//
// - Transactions: 16 transactions filled with 4 MiB SENDs of one repeated
//   byte over permessage-deflate (each ~4 KiB on the wire). Before, every
//   frame was copied (16 × 1024 × 4 MiB allowed: ~380 KiB sent → ~+390 MiB);
//   now max_transaction_bytes (8 MiB for the session) ends it with ERROR
//   `Transaction too large`.
// - Pending operations: 50,000 SUBSCRIBE/UNSUBSCRIBE pairs sent as fast as
//   the socket takes them. Before, every frame was parsed at once and its
//   operations queued (+30 MiB still pending after 15 s); now reading stops at
//   max_pending_ops and the session goes at the broker's pace.
//
// warren only (Web-STOMP's memory is the broker's).

const { describe, it } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const T = require('./lib/target');
const { useTarget } = require('./lib/fixture');
const { RawStomp, encodeFrame } = require('./lib/raw');
const { unique } = require('./lib/util');

const skip = T.suiteSkip() || T.warrenOnly('measures the warren process');

const MIB = 1024 * 1024;

/** VmRSS and VmHWM of `pid` in bytes. */
function memOf(pid) {
  const s = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = (k) => Number(new RegExp(`^${k}:\\s+(\\d+) kB`, 'm').exec(s)[1]) * 1024;
  return { rss: kb('VmRSS'), hwm: kb('VmHWM') };
}

const fmt = (b) => `${(b / MIB).toFixed(1)} MiB`;

describe('budgets under a flood: memory stays bounded', { skip }, () => {
  let target;
  // workers: null leaves the key out, so an older warren without it starts too (its own default then). The WebSocket
  // layer's own wall against these ~1000:1 messages (max_inflate_ratio, hostile-ws.test.js) is turned off here: this
  // file tries the session's budgets behind it (WARREN_TEST_BASELINE=1 for a warren that predates the key).
  useTarget((t) => (target = t), { workers: null, max_inflate_ratio: process.env.WARREN_TEST_BASELINE ? null : 0 });

  it('transactions of 4 MiB compressed SENDs: RSS grows by at most max_transaction_bytes and a little', async (t) => {
    const pid = target.child.pid;
    const c = await RawStomp.connect(target.url, {}, { perMessageDeflate: true });
    const before = memOf(pid);
    let wire = 0;
    const k = unique('txflood');
    const body = Buffer.alloc(4 * MIB - 512, 'a');
    const frames = 96;
    for (let i = 0; i < 16; i++) c.sendFrame('BEGIN', { transaction: `t${i}` });
    for (let i = 0; i < frames; i++) c.sendFrame('SEND', { destination: `/topic/${k}`, transaction: `t${i % 16}` }, body);
    c.sendFrame('SUBSCRIBE', { id: 'sync', destination: `/topic/${k}`, receipt: 'sync' }); // after every frame before it
    let reply;
    try {
      reply = await c.next(120000, 'RECEIPT or ERROR');
    } catch (e) {
      reply = { command: 'closed', headers: {} };
    }
    const after = memOf(pid);
    wire = c.ws._socket ? c.ws._socket.bytesWritten : 0;
    const growth = after.hwm - before.rss;
    t.diagnostic(
      `${frames} SENDs of ${fmt(body.length)} in 16 transactions, ${(wire / 1024).toFixed(0)} KiB on the wire: ` +
        `RSS ${fmt(before.rss)} → ${fmt(after.rss)} (peak ${fmt(after.hwm)}, +${fmt(growth)}); reply ${reply.command} ${reply.headers.message ?? ''}`,
    );
    c.close();
    assert.equal(reply.command, 'ERROR');
    assert.equal(reply.headers.message, 'Transaction too large');
    assert.ok(growth < 48 * MIB, `RSS grew by ${fmt(growth)}`);
  });

  it('50,000 SUBSCRIBE/UNSUBSCRIBE pairs: RSS 15 s later within a few MiB', async (t) => {
    const pid = target.child.pid;
    const c = await RawStomp.connect(target.url);
    const before = memOf(pid);
    const k = unique('subflood');
    const pairs = 50000;
    const perMessage = 500;
    for (let m = 0; m < pairs / perMessage; m++) {
      const frames = [];
      for (let i = m * perMessage; i < (m + 1) * perMessage; i++) {
        frames.push(encodeFrame('SUBSCRIBE', { id: `s${i}`, destination: `/topic/${k}.${i}` }));
        frames.push(encodeFrame('UNSUBSCRIBE', { id: `s${i}` }));
      }
      c.sendRaw(Buffer.concat(frames));
    }
    const started = Date.now();
    let peak = before.rss;
    while (Date.now() - started < 15000) {
      await new Promise((r) => setTimeout(r, 500)); // sampling the RSS, not synchronisation
      peak = Math.max(peak, memOf(pid).rss);
    }
    const after = memOf(pid);
    const growth = after.rss - before.rss;
    t.diagnostic(
      `${pairs} pairs sent: RSS ${fmt(before.rss)} → ${fmt(after.rss)} after 15 s (+${fmt(growth)}, peak +${fmt(peak - before.rss)}); ` +
        `connection ${c.isClosed ? 'closed' : 'open'}, ${c.frames.length} frames received`,
    );
    assert.equal(c.isClosed, false, 'backpressure, not an ERROR');
    c.close();
    assert.ok(peak - before.rss < 16 * MIB, `RSS grew by ${fmt(peak - before.rss)}`);
  });
});
