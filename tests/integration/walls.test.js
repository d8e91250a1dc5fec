'use strict';
// Walls inside a shared AMQP connection (issue 7): sessions of one login share
// an AMQP connection (one worker here, so they surely do), and what one of them
// sends or is sent must never reach the others.
//
// - A SEND that AMQP cannot carry (a property over 255 bytes, a header name
//   over 255 bytes, headers over frame_max) is refused with ERROR `Invalid
//   header` to that session only; another session of the login keeps
//   publishing and receiving. The same when only the broker's smaller
//   frame_max refuses it: the connection thread fails that channel alone.
// - UNSUBSCRIBE then SUBSCRIBE with the same id: the old consumer's in-flight
//   deliveries are not taken for the new subscription (they go back to their
//   queue).
// - AMQP headers named like the headers warren puts on MESSAGE (subscription,
//   ack, message-id, destination, redelivered) never shadow warren's own.

const { describe, it } = require('node:test');
const assert = require('node:assert/strict');
const T = require('./lib/target');
const { useTarget } = require('./lib/fixture');
const amqp = require('./lib/amqp');
const { RawStomp, encodeFrame } = require('./lib/raw');
const { expectError } = require('./lib/check');
const { unique, withTimeout } = require('./lib/util');

const skip = T.suiteSkip() || T.warrenOnly('sessions of one login share an AMQP connection only in warren');

/** b subscribes to /topic/k (with a receipt). */
async function watch(b, k) {
  await b.withReceipt('SUBSCRIBE', { id: 'w', destination: `/topic/${k}` });
}

/** b publishes `body` to /topic/k with a receipt and gets both the RECEIPT and the MESSAGE (in either order). */
async function stillWorks(b, k, body) {
  b.sendFrame('SEND', { destination: `/topic/${k}`, receipt: `r-${body}` }, body);
  const got = [await b.next(undefined, 'RECEIPT or MESSAGE'), await b.next(undefined, 'RECEIPT or MESSAGE')];
  const r = got.find((f) => f.command === 'RECEIPT');
  const m = got.find((f) => f.command === 'MESSAGE');
  assert.ok(r && m, `bystander got ${got.map((f) => `${f.command} ${f.headers.message ?? ''}`).join(', ')}`);
  assert.equal(r.headers['receipt-id'], `r-${body}`);
  assert.equal(m.text, body);
}

const PROPS = ['correlation-id', 'type', 'reply-to', 'content-type', 'app-id', 'user-id', 'expiration', 'amqp-message-id', 'content-encoding'];

describe('walls: a SEND AMQP cannot carry fails its session only', { skip }, () => {
  let target;
  useTarget((t) => (target = t), { workers: 1 });

  it('properties over 255 bytes, a header name over 255 bytes, headers over frame_max', async () => {
    const k = unique('wall');
    const b = await RawStomp.connect(target.url);
    await watch(b, k);
    await stillWorks(b, k, 'before');
    const bad = [
      ...PROPS.map((h) => [{ [h]: 'v'.repeat(300) }, h]),
      [{ ['n'.repeat(300)]: 'v' }, 'nnnn'],
      [{ h1: 'x'.repeat(50000), h2: 'y'.repeat(50000), h3: 'z'.repeat(50000) }, 'bytes as AMQP properties'],
    ];
    for (const [headers, named] of bad) {
      const a = await RawStomp.connect(target.url);
      a.sendFrame('SEND', { destination: `/topic/${k}`, receipt: 'bad', ...headers }, 'bad');
      const e = await expectError(a, 'Invalid header', { receiptId: 'bad' });
      assert.ok(e.text.includes(named), `ERROR body names ${named}: ${e.text}`);
      await stillWorks(b, k, `after-${named.slice(0, 20)}`);
    }
    assert.equal(b.isClosed, false);
    b.close();
  });
});

describe('walls: what only the broker frame_max refuses fails that channel only', { skip }, () => {
  let target;
  // warren asks for 1 MiB frames, RabbitMQ grants 128 KiB: the session lets 150 KB of headers through, the connection
  // thread cannot encode them and must fail that channel, not the connection.
  useTarget((t) => (target = t), { workers: 1, amqp_frame_max_bytes: 1048576 });

  it('a channel-level ERROR for the sender; the other sessions of the login carry on', async () => {
    const k = unique('wall');
    const b = await RawStomp.connect(target.url);
    await watch(b, k);
    await stillWorks(b, k, 'before');
    const a = await RawStomp.connect(target.url);
    a.sendFrame('SEND', { destination: `/topic/${k}`, receipt: 'big', h1: 'x'.repeat(50000), h2: 'y'.repeat(50000), h3: 'z'.repeat(50000) }, 'big');
    const e = await expectError(a, 'frame_error');
    assert.match(e.text, /AMQP cannot carry this message/);
    await stillWorks(b, k, 'after');
    // The aborted channel's number is given back at the broker's close-ok: new sessions keep coming.
    for (let i = 0; i < 3; i++) {
      const c = await RawStomp.connect(target.url);
      await c.withReceipt('SEND', { destination: `/topic/${k}` }, `from-c${i}`);
      assert.equal((await b.expect('MESSAGE')).text, `from-c${i}`);
      c.close();
    }
    assert.equal(b.isClosed, false);
    b.close();
  });
});

describe('walls: consumers and the headers of MESSAGE', { skip: T.suiteSkip() }, () => {
  let target;
  const { queueName } = useTarget((t) => (target = t), { workers: 1 });

  it(
    'UNSUBSCRIBE then SUBSCRIBE with the same id: the old consumer’s in-flight deliveries go back to their queue',
    { skip: T.warrenOnly('Web-STOMP reuses T_<id> too') },
    async () => {
      const q = queueName('old');
      const q2 = queueName('new');
      await amqp.declareQueue(q, { durable: false });
      await amqp.declareQueue(q2, { durable: false });
      for (let i = 0; i < 20; i++) await amqp.publish('', q, `old-${i}`);
      const c = await RawStomp.connect(target.url);
      // One WebSocket message: the session handles all three before any delivery of the first consumer reaches it,
      // and the broker sends its prefetch window right after basic.consume-ok, before it sees the basic.cancel.
      c.sendRaw(
        Buffer.concat([
          encodeFrame('SUBSCRIBE', { id: 'x', destination: `/amq/queue/${q}`, ack: 'client', 'prefetch-count': '20' }),
          encodeFrame('UNSUBSCRIBE', { id: 'x' }),
          encodeFrame('SUBSCRIBE', { id: 'x', destination: `/amq/queue/${q2}`, ack: 'client', receipt: 'sub2' }),
        ]),
      );
      const frames = [];
      const marker = (async () => {
        await amqp.publish('', q2, 'marker');
      })();
      for (;;) {
        const f = await c.next(undefined, 'MESSAGE marker');
        frames.push(f);
        if (f.command === 'MESSAGE' && f.text === 'marker') break;
        if (f.command === 'ERROR') break;
      }
      await marker;
      const stolen = frames.filter((f) => f.command === 'MESSAGE' && f.text.startsWith('old-'));
      assert.equal(stolen.length, 0, `the new subscription x got ${stolen.length} of the old consumer's messages`);
      assert.ok(frames.some((f) => f.command === 'RECEIPT' && f.headers['receipt-id'] === 'sub2'));
      // They were given back (basic.nack requeue), not lost or held.
      await amqp.waitQueueCount(q, 20);
      c.close();
    },
  );

  it('AMQP headers named subscription, ack, message-id, destination, redelivered do not shadow warren’s', async () => {
    const q = queueName('shadow');
    await amqp.declareQueue(q, { durable: false });
    await amqp.publish('', q, 'hello', {
      headers: { subscription: 'evil', ack: 'evil', 'message-id': 'evil', destination: '/queue/evil', redelivered: 'true', mine: 'kept' },
    });
    const c = await RawStomp.connect(target.url);
    c.sendFrame('SUBSCRIBE', { id: 's', destination: `/amq/queue/${q}`, ack: 'client' });
    const m = await c.expect('MESSAGE');
    const count = (name) => m.rawHeaders.filter(([k]) => k === name).length;
    for (const name of ['subscription', 'ack', 'message-id', 'destination', 'redelivered']) {
      assert.equal(count(name), 1, `${name} once in ${JSON.stringify(m.rawHeaders)}`);
    }
    assert.equal(m.headers.subscription, 's');
    assert.equal(m.headers.redelivered, 'false');
    assert.equal(m.headers.destination, `/queue/${q}`);
    assert.notEqual(m.headers['message-id'], 'evil');
    assert.equal(m.headers.ack, m.headers['message-id']);
    assert.equal(m.headers.mine, 'kept');
    await c.withReceipt('ACK', { id: m.headers.ack });
    c.close();
  });
});
