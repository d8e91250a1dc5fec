'use strict';
// Several workers (the `workers` key, bridge/worker.c): the acceptor hands each
// connection to the least loaded worker, each worker has its own AMQP
// connections, and what is process-wide stays so: max_connections counts over
// every worker, sessions on different workers reach each other through the
// broker, `workers = 0` means one per CPU. (Every other file runs with two
// workers by default too; sharing, channel-max and broker pin one, since they
// count one upstream's connections.)
//
// Each test logs in as its own throw-away user so that counting that user's
// connections with rabbitmqctl is not disturbed by other test files.

const { describe, it } = require('node:test');
const assert = require('node:assert/strict');
const os = require('node:os');
const WebSocket = require('ws');
const T = require('./lib/target');
const { usePerTestTargets } = require('./lib/fixture');
const ctl = require('./lib/rabbitmqctl');
const { RawStomp } = require('./lib/raw');
const { StompSession } = require('./lib/stomp');
const { unique, waitFor, withTimeout, WAIT_MS } = require('./lib/util');

const skip = T.suiteSkip() || ctl.ctlSkip() || (!T.isWarren && 'warren-only: workers');

describe('workers', { skip }, () => {
  const { start, newUser, connectionsOf } = usePerTestTargets({}, 'wk');

  it('sessions alternate over 2 workers, one AMQP connection per worker, and reach each other through the broker', async () => {
    const t = await start({ workers: 2 });
    const u = await newUser();
    const k = unique('wk');
    const sessions = [];
    const subs = [];
    for (let i = 0; i < 4; i++) {
      const s = await StompSession.connect(t.url, { login: u, passcode: 'pw' });
      sessions.push(s);
      subs.push(await s.subscribeReceipt(`/topic/${k}`, { id: 'all' }));
    }
    // Least loaded first: the 4 sessions sit 2 and 2 on the workers, and each worker shares one connection.
    const cs = await waitFor(async () => {
      const c = await connectionsOf(u);
      return c.length === 2 && c;
    }, undefined, `2 AMQP connections of ${u}`);
    assert.equal(cs.length, 2);
    await sessions[0].publishReceipt(`/topic/${k}`, 'from worker 0');
    await sessions[1].publishReceipt(`/topic/${k}`, 'from worker 1');
    for (const sub of subs) {
      assert.equal((await sub.next()).body, 'from worker 0');
      assert.equal((await sub.next()).body, 'from worker 1');
    }
    for (const s of sessions) await s.disconnect();
  });

  it('max_connections counts over every worker: the fourth connection of 3 gets HTTP 503', async () => {
    const t = await start({ workers: 2, max_connections: 3 });
    const open = [];
    for (let i = 0; i < 3; i++) open.push(await RawStomp.connect(t.url));
    const status = await withTimeout(
      new Promise((resolve, reject) => {
        const ws = new WebSocket(t.url, ['v12.stomp']);
        ws.on('unexpected-response', (req, res) => resolve(res.statusCode));
        ws.on('open', () => reject(new Error('a fourth connection was accepted')));
        ws.on('error', () => {});
      }),
      WAIT_MS,
      'the refused upgrade',
    );
    assert.equal(status, 503);
    open[0].close();
    await open[0].waitClose();
    const again = await waitFor(() => RawStomp.connect(t.url).catch(() => false), WAIT_MS, 'a free slot after one left');
    again.close();
    for (const c of open.slice(1)) c.close();
  });

  it('workers = 0 starts one worker per CPU this process may use', async () => {
    const t = await start({ workers: 0 });
    const n = os.availableParallelism();
    await waitFor(() => new RegExp(`ready; ${n} workers?;`).test(t.output()), WAIT_MS, `"ready; ${n} worker(s)"`);
  });
});
