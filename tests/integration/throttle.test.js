'use strict';
// Failed logins slow down their client address (issue 7: a brute-force guard).
// After the broker refuses a login from an address, that address's next login
// waits 100 ms before it is tried, doubling up to login_failure_delay_max_ms
// (800 here); its attempts take turns, and one whose turn would be more than
// the cap away is refused at once, without the broker. Other addresses are not
// held, and nothing waits on a thread. Before, every guess went straight to the
// broker, as fast as the client could send them, each on an AMQP connection and
// a thread of its own.

const { describe, it } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const T = require('./lib/target');
const { useTarget } = require('./lib/fixture');
const { RawStomp } = require('./lib/raw');
const { outsideAddress, reachable } = require('./lib/util');

const skip = T.suiteSkip() || T.warrenOnly('login_failure_delay_max_ms is warren\'s');
const MAX = 800;


const threadsOf = (pid) => Number(/^Threads:\s+(\d+)/m.exec(fs.readFileSync(`/proc/${pid}/status`, 'latin1'))[1]);

/** One login over `url`: { frame, ms } from CONNECT to the reply (CONNECTED or ERROR), and when the reply came. */
async function login(url, passcode) {
  const c = await RawStomp.open(url);
  const t0 = Date.now();
  const frame = await c.handshake({ login: T.cfg.user, passcode });
  const at = Date.now();
  c.close();
  return { frame, ms: at - t0, at };
}

describe('failed logins are throttled per client address', { skip }, () => {
  let target;
  useTarget((t) => (target = t), { listen_addr: '0.0.0.0', login_failure_delay_max_ms: MAX });

  it('the delay doubles from 100 ms to the cap; other addresses are not held; no thread piles up', async () => {
    const threads0 = threadsOf(target.child.pid);
    // Sequential bad logins: each refusal holds the next login 100, 200, 400, 800, 800 ms (from the refusal).
    const bad = [];
    for (let i = 0; i < 6; i++) {
      const r = await login(target.url, 'wrong');
      assert.equal(r.frame.command, 'ERROR');
      assert.match(r.frame.text, /Access refused/);
      bad.push(r.at);
    }
    const gaps = bad.slice(1).map((at, i) => at - bad[i]);
    const want = [100, 200, 400, 800, 800];
    // (measured at the client, on a machine shared with the broker: a few tens of ms of noise either way)
    for (let i = 0; i < want.length; i++) assert.ok(gaps[i] >= want[i] - 60, `gap ${i}: ${gaps[i]} ms, want >= ${want[i]} (${gaps})`);
    const total = gaps.reduce((a, b) => a + b, 0);
    assert.ok(total >= 2300 - 100, `${total} ms for 5 refused logins after the first (${gaps})`);
    assert.ok(gaps[4] < MAX + 1000, `capped at ${MAX}: ${gaps}`);

    // Parallel guesses from the held address: one takes the next turn, the rest are refused at once, with no broker
    // login and no thread.
    const par = await Promise.all(Array.from({ length: 20 }, () => login(target.url, 'wrong')));
    const throttled = par.filter((r) => /Too many refused logins from this address/.test(r.frame.text ?? ''));
    assert.ok(throttled.length >= 18, `${throttled.length} of 20 refused by the throttle`);
    for (const r of throttled) assert.ok(r.ms < MAX - 100, `refused at once, not after a turn: ${r.ms} ms`);
    assert.ok(threadsOf(target.child.pid) <= threads0 + 2, `threads ${threads0} -> ${threadsOf(target.child.pid)}`);

    // A good login from another address of this machine is not held, while the failing one (loopback) still is.
    const addr = outsideAddress();
    if (addr && (await reachable(addr, target.port))) {
      const good = await login(target.url.replace('127.0.0.1', addr), T.cfg.pass);
      assert.equal(good.frame.command, 'CONNECTED', JSON.stringify(good.frame.headers));
      const heldLines = target.output().split('\n').filter((l) => l.includes(`${addr}:`) && l.includes(' held '));
      assert.deepEqual(heldLines, [], 'another address is not held');
    }
    const heldLines = () => (target.output().match(/\[127\.0\.0\.1:\d+\] login as '[^']*' held \d+ ms: recent refused logins/g) ?? []).length;
    const before = heldLines();
    const held = await login(target.url, T.cfg.pass);
    assert.equal(held.frame.command, 'CONNECTED');
    assert.equal(heldLines(), before + 1, 'the good login from the failing address waited its turn');
  });
});
