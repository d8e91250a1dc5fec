'use strict';
// Flow control towards the broker (DESIGN.md invariant 2): while the broker
// blocks publishers (connection.blocked) or while max_unconfirmed publishes
// of a session await their confirms, warren stops reading that client's
// socket instead of buffering its frames.
//
// "Not read" is observed with a WebSocket ping: warren answers it as soon as
// it reads it, without the broker, so a missing pong means the bytes stayed
// in the socket. A RECEIPT cannot show it on its own: warren sends receipts
// in frame order, so any RECEIPT after an unconfirmed SEND waits for that
// confirm whether or not the frame was read. The negative checks use a
// bounded window (NOT_READ_MS); everything else waits for events.
//
// connection.blocked: `set_vm_memory_high_watermark` raises the memory alarm;
// RabbitMQ 3.10 blocks a connection that advertises the capability (warren's
// does) when it next publishes and sends connection.blocked then, so the
// first SEND after the alarm is what triggers it; warren logs "broker blocks
// publishers" at debug level when it arrives.
// max_unconfirmed: confirms are held back without any connection.blocked by
// suspending the queue's process (`sys:suspend`), so the pause seen is
// max_unconfirmed's alone.
//
// The file starts a private node of its own (alarms are broker-wide) in a
// temporary directory and stops it at the end. warren only: Web-STOMP reads
// its clients through RabbitMQ's own flow control.

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { execFile } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const T = require('./lib/target');
const { RawStomp } = require('./lib/raw');
const { unique, withTimeout, waitFor, WAIT_MS } = require('./lib/util');

const skip = T.suiteSkip() || T.warrenOnly('Web-STOMP reads its clients under RabbitMQ flow control, not its own');

const SCRIPT = path.join(__dirname, '..', '..', 'scripts', 'rabbitmq');
const NOT_READ_MS = 500; // window of the negative checks only
const MAX_UNCONFIRMED = 3;

function run(file, args, timeout = 60000) {
  return new Promise((resolve, reject) => {
    execFile(file, args, { timeout, maxBuffer: 16 << 20 }, (err, stdout, stderr) => {
      if (err) reject(new Error(`${file} ${args.join(' ')}: ${err.message}\n${stderr}`));
      else resolve(stdout);
    });
  });
}

/** Resolves when warren's output (stdout or stderr) matches re. */
function waitLog(target, re, what) {
  return withTimeout(
    new Promise((resolve) => {
      const check = () => {
        if (!re.test(target.output())) return false;
        target.child.stdout.off('data', check);
        target.child.stderr.off('data', check);
        resolve();
        return true;
      };
      if (check()) return;
      // target.js collects the output in its own listeners, registered first.
      target.child.stdout.on('data', check);
      target.child.stderr.on('data', check);
    }),
    WAIT_MS,
    what,
  );
}

/** Sends a WebSocket ping; .pong() resolves when its pong arrives (within WAIT_MS of the call: a ping sent during a
 * block is answered after the lift, which rabbitmqctl may take seconds to make), .got tells whether it has. */
function ping(c) {
  const p = { got: false };
  const answered = new Promise((resolve) => {
    c.ws.once('pong', () => {
      p.got = true;
      resolve();
    });
  });
  p.pong = () => withTimeout(answered, WAIT_MS, 'pong');
  c.ws.ping();
  return p;
}

/** Waits NOT_READ_MS and checks that neither the pong nor any frame came. */
async function assertNotRead(c, p, why) {
  await new Promise((r) => setTimeout(r, NOT_READ_MS));
  assert.equal(p.got, false, `${why}: warren answered a ping, so it kept reading the socket`);
  assert.equal(c.frames.length, 0, `${why}: frames arrived: ${JSON.stringify(c.frames.items.map((f) => f.command))}`);
}

/** The next n frames: RECEIPTs (ids in order) and MESSAGEs (bodies), in any interleaving. */
async function collect(c, nReceipts, nMessages) {
  const receipts = [];
  const messages = [];
  while (receipts.length < nReceipts || messages.length < nMessages) {
    const f = await c.next(WAIT_MS, `${nReceipts} RECEIPTs and ${nMessages} MESSAGEs`);
    if (f.command === 'RECEIPT') receipts.push(f.headers['receipt-id']);
    else if (f.command === 'MESSAGE') messages.push(f.text);
    else assert.fail(`${f.command} ${JSON.stringify(f.headers)} ${f.text}`);
  }
  return { receipts, messages };
}

describe('flow control towards the broker', { skip }, () => {
  let tmp;
  let nodeDir;
  let ctl;
  let watermark;

  const eval_ = (expr) => run(ctl, ['eval', expr]);
  const queueRef = (q) => `rabbit_misc:r(<<"/">>, queue, <<"${q}">>)`;
  const declare = (q) => eval_(`rabbit_amqqueue:declare(${queueRef(q)}, false, false, [], none, <<"flow-test">>).`);
  const queueSys = (q, fn) => eval_(`{ok, Q} = rabbit_amqqueue:lookup(${queueRef(q)}), sys:${fn}(amqqueue:get_pid(Q)).`);
  const setWatermark = (w) => run(ctl, ['set_vm_memory_high_watermark', String(w)]);

  before(async () => {
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'warren-flow-'));
    nodeDir = path.join(tmp, 'rabbitmq');
    const out = await run(SCRIPT, ['start', nodeDir], 150000);
    assert.match(out, /WARREN_TEST_AMQP_PORT=\d+/, `no AMQP port in the output of scripts/rabbitmq start:\n${out}`);
    ctl = path.join(nodeDir, 'rabbitmqctl');
    watermark = (await eval_('vm_memory_monitor:get_vm_memory_high_watermark().')).trim();
    assert.match(watermark, /^[0-9.]+$/, `watermark: ${watermark}`);
  });
  after(async () => {
    if (nodeDir) await run(SCRIPT, ['stop', nodeDir]).catch(() => {});
    if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
  });

  const brokerOpts = () => ({ brokers: `127.0.0.1:${/WARREN_TEST_AMQP_PORT=(\d+)/.exec(fs.readFileSync(path.join(nodeDir, 'env'), 'utf8'))[1]}` });

  it('connection.blocked: no frame is read until the broker unblocks, then every RECEIPT comes and the messages are queued', async (t) => {
    // One worker: the new session below must meet the blocked connection's upstream.
    const target = await T.startTarget({ ...brokerOpts(), log_level: 'debug', workers: 1 });
    let c;
    let lifted = false;
    try {
      const q = unique('flow-blocked');
      await declare(q);
      c = await RawStomp.connect(target.url);
      await ping(c).pong(); // reading works before the alarm

      await setWatermark('0.0000001');
      // RabbitMQ blocks the connection on its next publish: SEND until warren learns it. A SEND that gets its
      // RECEIPT went out before the alarm reached the connection; the next one tries again.
      const blocked = waitLog(target, /broker blocks publishers/, 'the "broker blocks publishers" debug line');
      let isBlocked = false;
      blocked.then(() => (isBlocked = true)).catch(() => {});
      const sent = [];
      const confirmed = []; // SENDs confirmed before the block reached the connection
      const takeReceipts = () => {
        while (c.frames.length) {
          const f = c.frames.items.shift();
          assert.equal(f.command, 'RECEIPT', `${f.command} ${JSON.stringify(f.headers)} ${f.text}`);
          assert.ok(sent.includes(f.headers['receipt-id']), `RECEIPT ${f.headers['receipt-id']} while blocked`);
          confirmed.push(f.headers['receipt-id']);
        }
      };
      while (!isBlocked) {
        const id = `send-${sent.length}`;
        const message = new Promise((r) => c.ws.once('message', r)); // RawStomp has queued its frames by then
        c.sendFrame('SEND', { destination: `/amq/queue/${q}`, receipt: id }, `m-${sent.length}`);
        sent.push(id);
        await withTimeout(Promise.race([blocked, message]), WAIT_MS, `RECEIPT of ${id} or the block`);
        takeReceipts();
      }

      // Blocked: a ping and a receipted SUBSCRIBE stay unread in the socket. RECEIPTs of SENDs confirmed just
      // before the block may still come.
      const p = ping(c);
      c.sendFrame('SUBSCRIBE', { destination: `/amq/queue/${q}`, id: 'sub-0', receipt: 'sub' });
      await new Promise((r) => setTimeout(r, NOT_READ_MS));
      assert.equal(p.got, false, 'warren answered a ping while the broker blocks publishers');
      takeReceipts();
      assert.ok(confirmed.length < sent.length, 'the SEND that met the block awaits its confirm');
      // A new session of the same login is not given the blocked connection, whose socket the broker does not read:
      // it logs in on a new one and gets CONNECTED while the block lasts.
      const fresh = await RawStomp.connect(target.url);
      fresh.close();
      t.diagnostic(`SENDs until connection.blocked: ${sent.length}, confirmed before it: ${confirmed.length}`);

      await setWatermark(watermark);
      lifted = true;
      await p.pong();
      const pending = sent.filter((id) => !confirmed.includes(id));
      const got = await collect(c, pending.length + 1, sent.length);
      assert.deepEqual(got.receipts, [...pending, 'sub'], 'RECEIPTs in frame order');
      assert.deepEqual(got.messages.sort(), sent.map((_, i) => `m-${i}`).sort(), 'every published message was queued');
      await waitLog(target, /broker unblocked publishers/, 'the "broker unblocked publishers" debug line');
    } finally {
      if (!lifted) await setWatermark(watermark).catch(() => {});
      c?.close();
      await target.stop();
    }
  });

  it('a blocked broker blocks nothing else: another session of the login is served, SIGTERM exits within the grace', async (t) => {
    // One worker: the second session meets the upstream whose connection the broker blocks.
    const target = await T.startTarget({ ...brokerOpts(), log_level: 'debug', workers: 1 });
    let a;
    let b;
    const q = unique('flow-stuck');
    const q2 = unique('flow-waiting');
    try {
      await declare(q);
      await declare(q2);
      a = await RawStomp.connect(target.url);
      // A message already queued before the alarm, for the second session to receive during it.
      a.sendFrame('SEND', { destination: `/amq/queue/${q2}`, receipt: 'queued' }, 'waiting for b');
      assert.equal((await a.next(WAIT_MS, 'RECEIPT of the queued message')).command, 'RECEIPT');

      await setWatermark('0.0000001');
      // Large SENDs in one go: warren reads them before connection.blocked comes back, and the broker stops reading the
      // socket at the first publish, so more than its socket holds is on its way (before: the connection thread then
      // sat in send() for as long as the block lasted, and SIGTERM hung in pthread_join).
      const blocked = waitLog(target, /broker blocks publishers/, 'the "broker blocks publishers" debug line');
      const body = 'x'.repeat(2 << 20);
      const tb = Date.now();
      for (let i = 0; i < 16; i++) a.sendFrame('SEND', { destination: `/amq/queue/${q}` }, body);
      await blocked;
      t.diagnostic(`16 SENDs of 2 MiB to connection.blocked: ${Date.now() - tb} ms`);

      // Another session of the same login: CONNECTED, SUBSCRIBE, and the queued message, while the block lasts.
      const t0 = Date.now();
      b = await RawStomp.connect(target.url);
      b.sendFrame('SUBSCRIBE', { destination: `/amq/queue/${q2}`, id: 'b', receipt: 'sub' });
      const got = await collect(b, 1, 1);
      assert.deepEqual(got.messages, ['waiting for b']);
      t.diagnostic(`second session: CONNECTED to MESSAGE in ${Date.now() - t0} ms during the block`);

      // SIGTERM while the block lasts: the process exits within its grace (2 s for the sessions, then 1 s for the AMQP
      // connections, whose sockets are cut if the broker does not read their connection.close).
      const t1 = Date.now();
      await target.stop();
      const took = Date.now() - t1;
      t.diagnostic(`SIGTERM to exit during the block: ${took} ms`);
      assert.ok(took < 6000, `warren took ${took} ms to exit while the broker blocked it`);
    } finally {
      await setWatermark(watermark).catch(() => {});
      a?.close();
      b?.close();
      await target.stop().catch(() => {});
      // What the flood left in the queue goes, and the next case starts once the alarm is gone.
      await eval_(`{ok, Q} = rabbit_amqqueue:lookup(${queueRef(q)}), rabbit_amqqueue:delete(Q, false, false, <<"flow-test">>).`).catch(() => {});
      await waitFor(async () => (await eval_('rabbit_alarm:get_alarms().')).trim() === '[]', undefined, 'the memory alarm to clear');
    }
  });

  it(`max_unconfirmed=${MAX_UNCONFIRMED}: after ${MAX_UNCONFIRMED} unconfirmed SENDs the next frame is not read until confirms come`, async () => {
    const target = await T.startTarget({ ...brokerOpts(), log_level: 'debug', max_unconfirmed: String(MAX_UNCONFIRMED) });
    const q = unique('flow-unconfirmed');
    let c;
    let resumed = false;
    try {
      await declare(q);
      c = await RawStomp.connect(target.url);
      await queueSys(q, 'suspend'); // publishes to q are not confirmed from now on

      const dest = `/amq/queue/${q}`;
      for (let i = 0; i < MAX_UNCONFIRMED - 1; i++) c.sendFrame('SEND', { destination: dest, receipt: `send-${i}` }, `m-${i}`);
      // Below the limit warren keeps reading: the ping behind those SENDs is answered, and no confirm came.
      await ping(c).pong();
      assert.equal(c.frames.length, 0, 'no RECEIPT before the confirms');

      const last = MAX_UNCONFIRMED - 1;
      c.sendFrame('SEND', { destination: dest, receipt: `send-${last}` }, `m-${last}`);
      c.sendFrame('SUBSCRIBE', { destination: dest, id: 'sub-0', receipt: 'sub' });
      const p = ping(c);
      await assertNotRead(c, p, `with ${MAX_UNCONFIRMED} SENDs unconfirmed`);
      assert.doesNotMatch(target.output(), /broker blocks publishers/, 'the pause is max_unconfirmed, not connection.blocked');

      await queueSys(q, 'resume');
      resumed = true;
      await p.pong();
      const ids = Array.from({ length: MAX_UNCONFIRMED }, (_, i) => `send-${i}`);
      const got = await collect(c, MAX_UNCONFIRMED + 1, MAX_UNCONFIRMED);
      assert.deepEqual(got.receipts, [...ids, 'sub'], 'RECEIPTs in frame order');
      assert.deepEqual(
        got.messages.sort(),
        ids.map((_, i) => `m-${i}`),
        'every published message was queued',
      );
    } finally {
      if (!resumed) await queueSys(q, 'resume').catch(() => {});
      c?.close();
      await target.stop();
    }
  });
});
