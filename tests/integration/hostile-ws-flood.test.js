'use strict';
// Suite hostile (issue 7, "CPU"): one client must not hold a worker's loop. Each case floods warren (one worker) for a
// few seconds while a victim client on the same loop measures WebSocket ping round trips; warren's CPU time comes from
// /proc/<pid>/stat. Figures are printed as "# figure:" lines for the closing note of issue 7.
//
// - the attack: before login, 4 KiB compressed messages of 4 MiB of heart-beat newlines at ~680 KiB/s (the
//   attacker reconnects whenever it is closed): each is refused at max_frame_bytes_unauthenticated (close 1009);
// - the same flood after login with max_inflate_ratio = 0 (ratio check off): max_inflate_bytes_per_sec stops reading
//   the attacker, and the per-turn budgets bound each slice of its work;
// - one message of 190k BEGIN/ABORT frames: the session parses it SESSION_TURN_FRAMES at a time.
// The assertions use p50/p99: single round trips on a shared 2-core machine are noisy.
//
// WARREN_TEST_BASELINE=1 starts warren without the keys a warren before issue 7 lacks (for the before figures).

const { describe, it, after } = require('node:test');
const assert = require('node:assert/strict');
const T = require('./lib/target');
const { WsRaw, cpuMs, percentiles } = require('./lib/wsraw');
const { encodeFrame } = require('./lib/raw');

const skip = T.suiteSkip() || T.warrenOnly('warren process figures from /proc');
const BASELINE = !!process.env.WARREN_TEST_BASELINE;
const MiB = 1024 * 1024;
const NEWLINES = Buffer.alloc(4 * MiB, 0x0a);
const FLOOD_MS = 5000;

/** The victim pings in a loop until stop() and gets its round trips. */
function pinger(victim) {
  const rtts = [];
  let done = false;
  const running = (async () => {
    while (!done) rtts.push(await victim.pingRtt());
  })();
  return {
    async stop() {
      done = true;
      await running;
      return percentiles(rtts);
    },
  };
}

/** One masked, compressed WebSocket message of 4 MiB of newlines (~4 KiB), built once: Node must not stall mid-test. */
const NEWLINE_FRAME = WsRaw.prototype.message.call(null, NEWLINES, { compress: true });

/**
 * Floods for FLOOD_MS with `frame` (a compressed 4 MiB newline message) at `kibPerSec` on the wire: opens (and logs in
 * when `login`) an attacker, and opens a new one whenever warren closes it. Returns { messages, closes, reasons }.
 */
async function newlineFlood(target, { login, kibPerSec, frame }) {
  let c = null;
  let messages = 0;
  let closes = 0;
  const reasons = new Set();
  const open = async () => {
    c = await WsRaw.open(target.port, { deflate: true });
    if (login) await c.login();
  };
  await open();
  const perTick = Math.max(1, Math.round((kibPerSec * 1024) / 100 / frame.length)); // every 10 ms
  const end = Date.now() + FLOOD_MS;
  while (Date.now() < end) {
    if (c.closeFrame || c.sock.destroyed) {
      closes++;
      if (c.closeFrame) reasons.add(`${c.closeFrame.code} ${c.closeFrame.reason}`);
      c.destroy();
      await open();
    }
    for (let i = 0; i < perTick; i++) c.write(frame);
    messages += perTick;
    await new Promise((r) => setTimeout(r, 10)); // the attack's pace, not a synchronisation
  }
  c.destroy();
  return { messages, closes, wire: messages * frame.length, reasons: [...reasons] };
}

async function measure(target, what, attack) {
  const pid = target.child.pid;
  const victim = await WsRaw.open(target.port);
  await victim.login();
  const quiet = pinger(victim);
  await new Promise((r) => setTimeout(r, 500)); // a baseline sample of round trips, not a synchronisation
  const idle = await quiet.stop();
  const cpu0 = cpuMs(pid);
  const t0 = Date.now();
  const p = pinger(victim);
  const res = await attack();
  const busy = await p.stop();
  const cpu = ((cpuMs(pid) - cpu0) * 100) / (Date.now() - t0);
  const t =
    `${what}: ${JSON.stringify(res)}; warren CPU ${cpu.toFixed(0)} %; victim ping RTT idle p50 ${idle.p50.toFixed(2)} ms, ` +
    `during p50 ${busy.p50.toFixed(2)} ms p99 ${busy.p99.toFixed(2)} ms max ${busy.max.toFixed(2)} ms (${busy.n} pings)`;
  console.log(`# figure: ${t}`);
  victim.destroy();
  return { cpu, idle, busy, res, t };
}

describe('hostile floods against one loop', { skip }, () => {
  const targets = [];
  after(async () => {
    for (const t of targets) await t.stop();
  });
  const start = async (opts = {}) => {
    const t = await T.startTarget({ workers: BASELINE ? null : 1, ...opts });
    targets.push(t);
    return t;
  };

  it('unauthenticated newline inflation at 680 KiB/s: refused at once, the loop stays responsive', async () => {
    const target = await start();
    const m = await measure(target, 'newline inflation before login', () => newlineFlood(target, { login: false, kibPerSec: 680, frame: NEWLINE_FRAME }));
    assert.ok(m.busy.p50 < 5, m.t);
    assert.ok(m.res.reasons.some((r) => r.startsWith('1009')), m.t);
  });

  it('logged-in newline inflation with the ratio check off: the rate limit and the budgets keep the loop responsive', async () => {
    const target = await start(BASELINE ? {} : { max_inflate_ratio: 0 });
    const m = await measure(target, 'newline inflation after login, ratio check off', () =>
      newlineFlood(target, { login: true, kibPerSec: 680, frame: NEWLINE_FRAME }),
    );
    assert.ok(m.busy.p50 < 5, m.t);
    assert.ok(m.cpu < 60, m.t);
  });

  it('one message of 190k BEGIN/ABORT frames: no long stall for another client', async () => {
    const target = await start();
    const frames = [];
    const begin = encodeFrame('BEGIN', { transaction: 't' });
    const abort = encodeFrame('ABORT', { transaction: 't' });
    for (let i = 0; i < 94999; i++) frames.push(begin, abort);
    frames.push(begin, encodeFrame('ABORT', { transaction: 't', receipt: 'last' }));
    const frame = WsRaw.prototype.message.call(null, Buffer.concat(frames)); // masked before the clock starts
    const m = await measure(target, '190k BEGIN/ABORT in one message', async () => {
      const c = await WsRaw.open(target.port);
      await c.login();
      const t0 = Date.now();
      c.write(frame);
      await c.next('RECEIPT');
      const took = Date.now() - t0;
      c.destroy();
      return { took };
    });
    assert.ok(m.busy.p99 < 40, m.t);
  });
});
