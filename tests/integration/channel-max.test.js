'use strict';
// A broker whose channel_max is lower than warren's amqp_channel_max (2047 by
// default): RabbitMQ's `channel_max` setting. warren puts one channel per
// session on the AMQP connection of the credential; the negotiated
// channel_max is only known once that connection's login completed, and
// sessions that arrive before that must not be given channels the broker
// would refuse. They wait for the login, then spread over as many
// connections as it takes.
//
// On RabbitMQ 3.10, channel_max = 4 allows 4 channels per connection
// (numbers 1-4; channel 0 is not counted): the 5th channel.open closes the
// whole connection with 530 NOT_ALLOWED "number of channels opened (4) has
// reached the negotiated channel_max (4)". So 10 sessions need exactly 3
// connections, at most 4 channels each, and the first one full.
//
// The file starts a private node of its own (scripts/rabbitmq start --conf
// 'channel_max = 4') in a temporary directory, and stops it at the end.
// warren only: Web-STOMP opens no AMQP connection of its own.

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { execFile } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const T = require('./lib/target');
const { RawStomp } = require('./lib/raw');
const { unique } = require('./lib/util');

const skip = T.suiteSkip() || T.warrenOnly('Web-STOMP opens no AMQP connection of its own');

const SCRIPT = path.join(__dirname, '..', '..', 'scripts', 'rabbitmq');
const CHANNEL_MAX = 4;
const SESSIONS = 10;

function run(file, args, timeout) {
  return new Promise((resolve, reject) => {
    execFile(file, args, { timeout, maxBuffer: 16 << 20 }, (err, stdout, stderr) => {
      if (err) reject(new Error(`${file} ${args.join(' ')}: ${err.message}\n${stderr}`));
      else resolve(stdout);
    });
  });
}

describe(`a broker with channel_max = ${CHANNEL_MAX}`, { skip }, () => {
  let tmp;
  let nodeDir;
  let node; // { amqpPort, ctl }
  let target;

  before(async () => {
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'warren-channel-max-'));
    nodeDir = path.join(tmp, 'rabbitmq');
    const out = await run(SCRIPT, ['start', nodeDir, '--conf', `channel_max = ${CHANNEL_MAX}`], 150000);
    const port = /WARREN_TEST_AMQP_PORT=(\d+)/.exec(out);
    assert.ok(port, `no AMQP port in the output of scripts/rabbitmq start:\n${out}`);
    node = { amqpPort: Number(port[1]), ctl: path.join(nodeDir, 'rabbitmqctl') };
    // amqp_channel_max left at its default (2047), far above the broker's.
    // One worker: channel spreading is a policy of one worker's upstream (workers.test.js covers several).
    target = await T.startTarget({ brokers: `127.0.0.1:${node.amqpPort}`, workers: 1 });
  });
  after(async () => {
    try {
      await target?.stop();
    } finally {
      if (nodeDir) await run(SCRIPT, ['stop', nodeDir], 60000).catch(() => {});
      if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
    }
  });

  it(`${SESSIONS} sessions of one user at once: all connected, over connections of at most ${CHANNEL_MAX} channels`, async () => {
    const clients = await Promise.all(Array.from({ length: SESSIONS }, () => RawStomp.open(target.url)));
    try {
      // Every CONNECT in the same tick: they reach warren before the login of the user's first AMQP connection completes.
      const replies = await Promise.all(clients.map((c) => c.handshake({ login: 'guest', passcode: 'guest' })));
      replies.forEach((f, i) => {
        assert.equal(f.command, 'CONNECTED', `session ${i}: ${f.command} ${f.headers.message || ''} ${f.text || ''}`);
      });

      const topic = `/topic/${unique('chanmax')}`;
      await Promise.all(clients.map((c, i) => c.withReceipt('SUBSCRIBE', { destination: topic, id: `s${i}` })));
      // Each session publishes one message (its RECEIPT comes after the broker's confirm) and gets all of them.
      clients.forEach((c, i) => c.sendFrame('SEND', { destination: topic, receipt: `send-${i}` }, `from-${i}`));
      const want = clients.map((_, i) => `from-${i}`).sort();
      for (const [i, c] of clients.entries()) {
        const got = [];
        let receipt = null;
        while (got.length < SESSIONS || !receipt) {
          const f = await c.next(undefined, `session ${i}: RECEIPT and ${SESSIONS} MESSAGEs`);
          if (f.command === 'MESSAGE') got.push(f.text);
          else if (f.command === 'RECEIPT') receipt = f.headers['receipt-id'];
          else assert.fail(`session ${i}: ${f.command} ${JSON.stringify(f.headers)} ${f.text}`);
        }
        assert.equal(receipt, `send-${i}`);
        assert.deepEqual(got.sort(), want, `messages of session ${i}`);
      }

      // Every session's channel is open (CONNECTED), so the broker's counts are final.
      const conns = JSON.parse(await run(node.ctl, ['list_connections', '--formatter', 'json', 'user', 'channels'], 60000));
      const channels = conns.filter((c) => c.user === 'guest').map((c) => c.channels);
      assert.equal(channels.length, Math.ceil(SESSIONS / CHANNEL_MAX), JSON.stringify(conns));
      assert.equal(channels.reduce((a, b) => a + b, 0), SESSIONS, JSON.stringify(conns));
      assert.ok(channels.every((n) => n <= CHANNEL_MAX), JSON.stringify(conns));
      assert.equal(Math.max(...channels), CHANNEL_MAX, JSON.stringify(conns));
    } finally {
      for (const c of clients) c.close();
    }
  });
});
